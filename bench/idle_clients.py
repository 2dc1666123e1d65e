#!/usr/bin/python3
"""bench/idle_clients.py - N idle Redis (or Postgres) clients, driven line by line from stdin.

    idle_clients.py HOST PORT COUNT [redis | pg[:DBNAME[:USER]]]

Used by bench/switch_bench.sh (BENCH_MODE=idle) and bench/idle_bench.sh as a coprocess. At
start it opens COUNT connections to HOST:PORT, in batches (so a listen backlog never
overflows), makes each one answer once, then leaves them idle and prints one line:

    ready open=N failed=F ms=T

Redis clients send PING and expect +PONG. Postgres clients (pg: trust authentication, as
a bench's switchyard and cluster use) send a StartupMessage (database DBNAME, default
sourcegraph; user USER, default postgres) and read until ReadyForQuery; their "ping" is a
Sync, answered by ReadyForQuery. An ErrorResponse is a failure.

Then, for every line read on stdin:

    ping   every connection sends its ping at once (one selector loop, no threads) and must
           answer within the timeout; a connection that closed, answered anything else (an
           unsolicited "-ERR switched" counts) or stayed silent is a failure. Each failed
           connection is closed and opened again, so the next check sees COUNT sessions
           again. Prints:  ping ok=N failed=F reopen_failed=R ms=T
    open N opens N more connections (COUNT grows by N). Prints:  open open=N failed=F ms=T
    quit   (or end of input) closes everything and exits.

Only the standard library: sockets and selectors.
"""
import resource
import selectors
import socket
import struct
import sys
import time

PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"
PG_SYNC = b"S\x00\x00\x00\x04"
BATCH = 256          # connections opened before their first PING round
TIMEOUT = 10.0       # seconds a PING round may take
MAX_REPLY = 65536    # more than this without the expected answer is a failure


class Redis:
    first = PING
    ping = PING

    @staticmethod
    def answer(buf):
        """True: the expected reply; False: anything else; None: need more bytes."""
        if len(buf) < len(PONG):
            return None if PONG.startswith(buf) else False
        return buf == PONG


class Postgres:
    ping = PG_SYNC

    def __init__(self, db, user):
        body = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
        self.first = struct.pack("!ii", 8 + len(body), 196608) + body

    @staticmethod
    def answer(buf):
        """Walk whole messages: ReadyForQuery ends the answer, ErrorResponse fails it."""
        off = 0
        while len(buf) - off >= 5:
            typ = buf[off:off + 1]
            (mlen,) = struct.unpack("!i", buf[off + 1:off + 5])
            if mlen < 4 or typ == b"E":
                return False
            if len(buf) - off < 1 + mlen:
                break
            off += 1 + mlen
            if typ == b"Z":
                return off == len(buf)
        return None if len(buf) < MAX_REPLY else False


PROTO = Redis


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def ping_round(socks, req=None):
    """Send req (default: the protocol's ping) on every socket in socks at once and wait
    for the answer; return the list of those that failed."""
    req = PROTO.ping if req is None else req
    sel = selectors.DefaultSelector()
    got = {}
    failed = []
    for s in socks:
        try:
            s.sendall(req)       # a few bytes into an idle socket's buffer never block
        except OSError:
            failed.append(s)
            continue
        got[s] = b""
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + TIMEOUT
    while got:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(left):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            buf = got[s] + data
            verdict = PROTO.answer(buf) if data else False
            if verdict is None:
                got[s] = buf
                continue
            sel.unregister(s)
            del got[s]
            if not verdict:
                failed.append(s)
    for s in got:
        sel.unregister(s)
        failed.append(s)
    sel.close()
    return failed


def open_batch(host, port, n):
    """Open n connections and make each answer once; return (good sockets, number failed)."""
    socks = []
    bad = 0
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=TIMEOUT)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            bad += 1
    failed = ping_round(socks, PROTO.first)
    for s in failed:
        s.close()
    dead = set(failed)
    good = [s for s in socks if s not in dead]
    return good, bad + len(failed)


def open_many(host, port, n):
    socks = []
    bad = 0
    while n > 0:
        k = min(BATCH, n)
        good, b = open_batch(host, port, k)
        socks += good
        bad += b
        n -= k
    return socks, bad


def main():
    global PROTO
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kind = sys.argv[4] if len(sys.argv) > 4 else "redis"
    if kind.startswith("pg"):
        parts = kind.split(":") + ["", ""]
        PROTO = Postgres(parts[1] or "sourcegraph", parts[2] or "postgres")
    elif kind != "redis":
        sys.exit("idle_clients.py: kind must be redis or pg[:DBNAME[:USER]], not %r" % kind)
    raise_fd_limit(65536)
    t0 = time.monotonic()
    socks, bad = open_many(host, port, count)
    print("ready open=%d failed=%d ms=%.0f" % (len(socks), bad, (time.monotonic() - t0) * 1000), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd.startswith("open "):
            t0 = time.monotonic()
            fresh, bad = open_many(host, port, int(cmd[5:]))
            socks += fresh
            count += int(cmd[5:])
            print("open open=%d failed=%d ms=%.0f" % (len(fresh), bad, (time.monotonic() - t0) * 1000), flush=True)
            continue
        if cmd != "ping":
            print("error unknown command %r" % cmd, flush=True)
            continue
        t0 = time.monotonic()
        failed = ping_round(socks)
        ms = (time.monotonic() - t0) * 1000
        ok = len(socks) - len(failed)     # sockets a failed reopen left out count as failed
        dead = set(failed)
        for s in failed:
            s.close()
        socks = [s for s in socks if s not in dead]
        fresh, reopen_bad = open_many(host, port, count - len(socks))
        socks += fresh
        print("ping ok=%d failed=%d reopen_failed=%d ms=%.0f" % (ok, count - ok, reopen_bad, ms), flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
