"""
test_redis_large.py - issue 12, Redis 3: commands and arguments around and beyond 64 KiB.

Every size Redis accepts gets Redis's own answer through switchyard, every size it refuses
gets its own error and a close, and a session always sees its client leave. Each payload
(an inline request of 64 KiB - 1, 64 KiB and 64 KiB + 1 bytes and of 1 MiB; AUTH, AUTH
user, HELLO ... AUTH, SUBSCRIBE, SET, SELECT and a command name with an argument of those
sizes) is fed whole and byte by byte (one byte per send around the start, the 32 KiB and
64 KiB marks and the end, chunks between), to Redis directly and through switchyard, with
multiplexing on and off, and the reply bytes and whether the connection closed must match.
Then 200 clients send the 65,537-byte inline request at once: each gets the error and is
closed, and no session, descriptor or upstream connection is left behind.
"""

import os
import select
import socket
import threading
import time

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss
from redis_support import encode

K = 64 * 1024
SIZES = (K - 1, K, K + 1, 1 << 20)
PW = "large-Pw-1"


def _start(ctx, server, multiplex):
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, "127.0.0.1:1", "REDIS_STORE_ENDPOINT",
                                   extra="client_password = %s\nmultiplex = %s\n" % (PW, multiplex))])
    conf += ("\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % harness.free_port()
             + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo()))
    sy = harness.Switchyard(conf, env={"REDIS_STORE_ENDPOINT": "redis://:%s@127.0.0.1:%d" % (PW, server.port)})
    sy.redis_port = port
    return sy


def _feeds(n):
    """Chunk boundaries: 1-byte sends for 1 KiB around the start, 32 KiB, 64 KiB and the
    end, 8 KiB chunks between."""
    marks = [0, K // 2, K, n]
    slow = set()
    for m in marks:
        slow.update(range(max(0, m - 512), min(n, m + 512)))
    cuts, pos = [], 0
    while pos < n:
        step = 1 if pos in slow else min(8192, n - pos)
        if step > 1:
            nxt = min((s for s in slow if s > pos), default=n)
            step = min(step, nxt - pos)
        pos += step
        cuts.append(pos)
    return cuts


def _exchange(port, payload, bytewise, auth=True, quiet=0.5, timeout=30.0):
    """AUTH first (when auth), then payload, fed whole or byte by byte from a thread (the
    peer may close halfway); returns (reply bytes after AUTH's +OK, closed?)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if auth:
        s.sendall(encode("AUTH", PW))
        got = b""
        while not got.endswith(b"\r\n"):
            got += s.recv(100)
        check(got == b"+OK\r\n", "AUTH on port %d: %r" % (port, got))

    def sender():
        try:
            if not bytewise:
                s.sendall(payload)
                return
            pos = 0
            for cut in _feeds(len(payload)):
                s.sendall(payload[pos:cut])
                pos = cut
        except OSError:
            pass

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    data, closed = bytearray(), False
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    s.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            if not t.is_alive() and time.monotonic() - last > quiet:
                break
            continue
        except ConnectionResetError:   # Redis closes with unread input: a reset
            closed = True
            break
        if not d:
            closed = True
            break
        data += d
        last = time.monotonic()
    t.join(timeout=10)
    s.close()
    return bytes(data), closed


def _payloads():
    out = []
    for n in SIZES:
        big = b"x" * n
        out += [
            ("inline ECHO request of %d bytes" % n, b"ECHO " + b"x" * (n - 7) + b"\r\n"),
            ("inline command name request of %d bytes" % n, b"a" * (n - 2) + b"\r\n"),
            ("inline AUTH request of %d bytes" % n, b"AUTH " + b"x" * (n - 7) + b"\r\n"),
            ("SET of a %d-byte value, then STRLEN" % n, encode("SET", "large", big) + encode("STRLEN", "large")),
            ("AUTH with a %d-byte password" % n, encode("AUTH", big)),
            ("AUTH default with a %d-byte password" % n, encode("AUTH", "default", big)),
            ("HELLO 3 AUTH default with a %d-byte password" % n, encode("HELLO", "3", "AUTH", "default", big)),
            ("SUBSCRIBE to a %d-byte channel" % n, encode("SUBSCRIBE", big)),
            ("SELECT of a %d-byte index" % n, encode("SELECT", b"1" * n) + encode("PING")),
            ("a %d-byte command name" % n, encode(big, "arg")),
        ]
    # inline lines with no newline: Redis waits for 64 KiB, refuses one byte more
    out += [("%d inline bytes without a newline" % n, b"a" * n) for n in (K, K + 1, 1 << 20)]
    return out


def _compare(ctx, multiplex):
    server = harness.RedisServer(password=PW)
    sy = _start(ctx, server, multiplex)
    diffs = []
    for name, payload in _payloads():
        for bytewise in (False, True):
            quiet = 1.0 if b"without" in name.encode() else 0.3
            direct = _exchange(server.port, payload, bytewise, quiet=quiet)
            via = _exchange(sy.redis_port, payload, bytewise, quiet=quiet)
            how = "byte at a time" if bytewise else "whole"
            if direct != via:
                diffs.append("%s (%s): direct %r (closed=%s), switchyard %r (closed=%s)"
                             % (name, how, direct[0][:120], direct[1], via[0][:120], via[1]))
            elif not direct[0] and not name.startswith("%d inline bytes" % K):
                diffs.append("%s (%s): no reply at all, direct or through switchyard" % (name, how))
    sy.check_alive()
    check(not diffs, "multiplex = %s: %d differences from Redis:\n  %s" % (multiplex, len(diffs), "\n  ".join(diffs)))
    # still serving, and nothing of it left behind
    with rs.Resp(sy.redis_port) as r:
        r.ok("AUTH", PW)
        check(r.cmd("PING") == "PONG", "PING after the large commands")
    sy.stop()
    server.stop()


def test_large_commands_like_redis(ctx):
    _compare(ctx, "off")


test_large_commands_like_redis.timeout = 600


def test_large_commands_like_redis_multiplexed(ctx):
    _compare(ctx, "on")


test_large_commands_like_redis_multiplexed.timeout = 600


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def _upstreams(server):
    out = server.cli("CLIENT", "LIST").stdout
    return sum(1 for line in out.splitlines() if line.strip() and "cmd=client" not in line)


def test_too_big_inline_many_clients_no_leak(ctx):
    """200 clients send 65,537 bytes with no newline: each gets Redis's error and a close
    (a FIN, no hang), and afterwards switchyard holds no session, no more descriptors than
    before, and no upstream connection more than before."""
    for multiplex in ("off", "on"):
        server = harness.RedisServer(password=PW)
        sy = _start(ctx, server, multiplex)
        con = ss.Console(sy)
        with rs.Resp(sy.redis_port) as r:        # warm up: workers' first upstreams
            r.ok("AUTH", PW)
            r.ok("PING")
        harness.wait_clients(con, lambda rows: not [c for c in rows if c["protocol"] == "redis"], "no redis clients")
        fd0, up0 = _fds(sy.pid), _upstreams(server)
        want = b"-ERR Protocol error: too big inline request\r\n"
        socks = []
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", sy.redis_port), timeout=30)
            socks.append(s)
        for s in socks:
            s.sendall(b"a" * (K + 1))
        got = {i: b"" for i in range(len(socks))}
        open_ = set(got)
        deadline = time.monotonic() + 20
        while open_ and time.monotonic() < deadline:
            ready, _, _ = select.select([socks[i] for i in open_], [], [], 0.5)
            for s in ready:
                i = socks.index(s)
                try:
                    d = s.recv(4096)
                except OSError as e:
                    d, got[i] = b"", got[i] + b"<%s>" % type(e).__name__.encode()
                got[i] += d
                if not d:
                    open_.discard(i)
        bad = [(i, got[i][:100] + (b"<still open>" if i in open_ else b"")) for i in got
               if got[i] != want or i in open_]
        for s in socks:
            s.close()
        check(not bad, "multiplex = %s: %d of 200 clients did not get exactly %r then EOF: %r"
              % (multiplex, len(bad), want, bad[:5]))
        harness.wait_clients(con, lambda rows: not [c for c in rows if c["protocol"] == "redis"],
                             "every redis session gone (multiplex = %s)" % multiplex)
        harness.wait_until(lambda: _fds(sy.pid) <= fd0, 10, lambda: "switchyard's fds back to %d (now %d)"
                           % (fd0, _fds(sy.pid)))
        harness.wait_until(lambda: _upstreams(server) <= up0, 10, lambda: "upstream connections back to %d (now %d)"
                           % (up0, _upstreams(server)))
        print("    multiplex = %s: fds %d -> %d, upstreams %d -> %d" % (multiplex, fd0, _fds(sy.pid), up0,
                                                                          _upstreams(server)))
        con.close()
        sy.stop()
        server.stop()


test_too_big_inline_many_clients_no_leak.timeout = 300


def test_client_leaving_while_held_is_seen(ctx):
    """A client blocked in BLPOP with an AUTH queued behind it (so the session stops
    reading it) closes: the session sees it leave at once, as Redis frees such a client."""
    server = harness.RedisServer(password=PW)
    sy = _start(ctx, server, "off")
    con = ss.Console(sy)
    s = socket.create_connection(("127.0.0.1", sy.redis_port), timeout=10)
    s.sendall(encode("AUTH", PW) + encode("BLPOP", "nothing-here", "0") + encode("AUTH", PW))
    check(s.recv(100) == b"+OK\r\n", "AUTH")
    harness.wait_clients(con, lambda rows: any("blocked=1" in c["detail"] for c in rows), "the client blocked")
    s.close()
    harness.wait_clients(con, lambda rows: not [c for c in rows if c["protocol"] == "redis"],
                         "the blocked client's session gone after it closed", timeout=5)
    con.close()
    sy.stop()
    server.stop()
