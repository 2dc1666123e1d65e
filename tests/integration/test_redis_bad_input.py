"""
test_redis_bad_input.py - issue 3, case 10: malformed and hostile client input.

Each input (`*-5`, `$999999999999`, an array nested 100k deep, 10 MB of random bytes, a bulk
longer than `redis_max_bulk = 1M`) must get an error reply or a close, never a hang or a
crash; a client connected all along keeps being served, new clients are served, and
switchyard's RSS stays flat over repeated rounds. Protocol errors are compared byte for byte
with what Redis itself answers to the same bytes. A client that never reads its replies is
held by back-pressure instead of being buffered.
"""

import random
import select
import socket
import threading
import time

import harness
from harness import check, fail
import redis_support as rs
from redis_support import Resp, encode, Err

MAX_BULK = 1024 * 1024     # redis_max_bulk = 1M
RANDOM_SEED = 20261127


def _setup():
    server = harness.RedisServer()
    sy = rs.start_proxy(server, globals_extra="redis_max_bulk = 1M")
    return server, sy


def _send_and_collect(port, payload, timeout=20.0):
    """Send payload (from a thread: the peer may stop reading or close), read until the
    connection closes. Returns (received bytes, closed?)."""
    r = Resp(port, timeout=timeout)
    errors = []

    def sender():
        try:
            for i in range(0, len(payload), 1 << 16):
                r.sock.sendall(payload[i:i + (1 << 16)])
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    data = bytearray()
    closed = False
    deadline = time.monotonic() + timeout
    r.sock.settimeout(0.5)
    idle_since = None
    while time.monotonic() < deadline:
        try:
            d = r.sock.recv(1 << 16)
        except socket.timeout:
            if not t.is_alive():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 2.0:
                    break        # everything sent, nothing more comes, still open
            continue
        except ConnectionResetError:
            closed = True
            break
        if not d:
            closed = True
            break
        idle_since = None
        data += d
    t.join(timeout=5)
    r.close()
    return bytes(data), closed


def _all_errors(data):
    out, p = [], 0
    while p < len(data):
        try:
            v, p = rs.parse(data, p)
        except rs.Incomplete:
            fail("truncated reply at the end of %r" % data[-200:])
        out.append(v)
    return out


def _case_negative_multibulk(port):
    # Redis takes *-5 as an empty command (no reply) and goes on: that or an error + close
    data, closed = _send_and_collect(port, b"*-5\r\nPING\r\n", timeout=5)
    check(data == b"+PONG\r\n" or (data.startswith(b"-") and closed),
          "*-5 then PING: got %r (closed=%s)" % (data[:200], closed))


def _case_huge_bulk_length(port):
    data, closed = _send_and_collect(port, b"*2\r\n$3\r\nGET\r\n$999999999999\r\n", timeout=10)
    check(closed and data.startswith(b"-"), "$999999999999: got %r (closed=%s)" % (data[:200], closed))


def _case_deep_nesting(port):
    data, closed = _send_and_collect(port, b"*1\r\n" * 100000, timeout=10)
    check(closed and data.startswith(b"-"), "array nested 100k deep: got %r (closed=%s)" % (data[:200], closed))


def _case_random_bytes(port, seed):
    payload = random.Random(seed).randbytes(10 * 1024 * 1024)
    data, closed = _send_and_collect(port, payload, timeout=30)
    replies = _all_errors(data)
    check(all(isinstance(v, Err) for v in replies),
          "10 MB of random bytes (seed %d) got a non-error reply: %r" % (seed, [v for v in replies if not isinstance(v, Err)][:3]))
    check(closed or replies, "10 MB of random bytes (seed %d): neither an error nor a close" % seed)


def _case_bulk_over_max(port, server):
    body = b"x" * (MAX_BULK + 1)
    payload = b"*3\r\n$3\r\nSET\r\n$4\r\novermax\r\n$%d\r\n" % len(body) + body + b"\r\n"
    data, closed = _send_and_collect(port, payload, timeout=10)
    replies = _all_errors(data) if data else []
    check((closed or replies) and all(isinstance(v, Err) for v in replies),
          "bulk of %d bytes over redis_max_bulk=%d: got %r (closed=%s)" % (len(body), MAX_BULK, data[:200], closed))
    check(server.cli("EXISTS", "overmax").stdout.strip() == "0", "the over-max value reached the upstream")


def _round(port, server, keeper, seed):
    _case_negative_multibulk(port)
    check(keeper.cmd("PING") == "PONG", "the connected client stopped being served after *-5")
    _case_huge_bulk_length(port)
    check(keeper.cmd("PING") == "PONG", "the connected client stopped being served after $999999999999")
    _case_deep_nesting(port)
    check(keeper.cmd("PING") == "PONG", "the connected client stopped being served after deep nesting")
    _case_random_bytes(port, seed)
    check(keeper.cmd("PING") == "PONG", "the connected client stopped being served after random bytes")
    _case_bulk_over_max(port, server)
    check(keeper.cmd("PING") == "PONG", "the connected client stopped being served after an over-max bulk")
    rs.still_serving(port, "after-bad-input")


def test_bad_input_error_or_close_memory_flat(ctx):
    server, sy = _setup()
    keeper = Resp(sy.port)
    keeper.ok("SET", "keeper", "1")
    _round(sy.port, server, keeper, RANDOM_SEED)           # warm-up: allocator, quarantine
    rss0 = sy.rss_kb()
    for i in range(3):
        _round(sy.port, server, keeper, RANDOM_SEED + 1 + i)
    rss1 = sy.rss_kb()
    sy.check_alive()
    check(keeper.cmd("GET", "keeper") == b"1", "the connected client lost its data")
    keeper.close()
    print("    RSS over three rounds of bad input: %d -> %d kB" % (rss0, rss1))
    check(rss1 - rss0 < 6 * 1024, "switchyard's RSS grew by %d kB over three rounds of bad input (%d -> %d kB)"
          % (rss1 - rss0, rss0, rss1))
    sy.stop()


test_bad_input_error_or_close_memory_flat.timeout = 180


def test_bulk_at_max_accepted(ctx):
    """A bulk of exactly redis_max_bulk passes; one byte more does not."""
    server, sy = _setup()
    with Resp(sy.port) as r:
        v = r.cmd("SET", "atmax", b"y" * MAX_BULK, timeout=30)
        check(v == "OK", "SET of exactly redis_max_bulk (%d) bytes answered %r" % (MAX_BULK, r.last_raw[:200]))
        check(r.cmd("STRLEN", "atmax") == MAX_BULK, "STRLEN atmax: %r" % r.last_raw)
        # a reply bigger than the max (GETRANGE of a bigger value set directly) still passes:
        # the limit is on what clients send
    server.cli("SETRANGE", "bigger", str(2 * MAX_BULK), "z")
    with Resp(sy.port) as r:
        r.send(encode("GET", "bigger"))
        try:
            v = r.read(timeout=30)
        except rs.Closed:
            fail("GET of a %d-byte value with redis_max_bulk = 1M: the connection closed with %r; the "
                 "limit is on bulks clients send (conf docs), not on replies" % (2 * MAX_BULK + 1, bytes(r.buf)))
        check(isinstance(v, bytes) and len(v) == 2 * MAX_BULK + 1, "GET of a %d-byte value: %r" % (2 * MAX_BULK + 1, r.last_raw[:100]))
    _case_bulk_over_max(sy.port, server)
    sy.stop()


_PROTO_ERRORS = [
    b"*1\r\n$999999999999\r\n",
    b"*2\r\n$3\r\nGET\r\n$-7\r\n",
    b"*99999999999\r\n",
    b"*1\r\n*1\r\n",
    b"*1\r\nfoo\r\n",
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$x\r\n",
    b"SET \"a b\r\n",
    b"PING\r\n*1\r\n$abc\r\n",                  # the good command before is answered first
    b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPINGxx",   # bulk not followed by CRLF
]


def test_protocol_errors_like_redis(ctx):
    """The same malformed bytes get the same answer through switchyard as from Redis
    directly (the error reply, then a close; for a bulk not followed by CRLF Redis skips
    two bytes and goes on)."""
    server, sy = _setup()
    diffs = []
    for payload in _PROTO_ERRORS:
        direct = _send_and_collect(server.port, payload, timeout=5)
        via = _send_and_collect(sy.port, payload, timeout=5)
        if via != direct:
            diffs.append("%r:\n   direct %r\n   via    %r" % (payload, direct, via))
    check(not diffs, "%d of %d malformed inputs answered differently:\n%s"
          % (len(diffs), len(_PROTO_ERRORS), "\n".join(diffs)))
    rs.still_serving(sy.port)
    sy.stop()


def test_unread_replies_back_pressure(ctx):
    """A client that writes without reading is held by back-pressure: what it manages to
    send stays bounded, switchyard's memory does not grow, and every reply arrives in order
    once it reads."""
    server, sy = _setup()
    rss0 = sy.rss_kb()
    s = socket.create_connection(("127.0.0.1", sy.port))
    s.setblocking(False)
    value = b"v" * 4000
    cmd = encode("ECHO", value)
    reply = b"$%d\r\n%s\r\n" % (len(value), value)
    cap = 200 * 1024 * 1024
    sent = 0
    pending = b""
    while sent < cap:
        if not pending:
            pending = cmd * 64
        try:
            n = s.send(pending)
            sent += n
            pending = pending[n:]
        except BlockingIOError:
            _, w, _ = select.select([], [s], [], 1.5)
            if not w:
                break
    check(sent < cap, "switchyard accepted %d MB from a client that reads nothing: no back-pressure" % (sent >> 20))
    rss1 = sy.rss_kb()
    check(rss1 - rss0 < 8 * 1024, "switchyard's RSS grew by %d kB while the client did not read (%d -> %d kB)"
          % (rss1 - rss0, rss0, rss1))
    # now read: finish the last partial command and send END while reading every reply
    # (the rest cannot go in before replies drain: that is the back-pressure)
    total = sent + len(pending)
    check(total % len(cmd) == 0, "internal: partial command")
    n = total // len(cmd)
    rest = pending + b"ECHO END\r\n"
    want = reply * n + b"$3\r\nEND\r\n"
    got = bytearray()
    deadline = time.monotonic() + 60
    while len(got) < len(want):
        check(time.monotonic() < deadline, "only %d of %d reply bytes within 60 s" % (len(got), len(want)))
        rl, wl, _ = select.select([s], [s] if rest else [], [], 1.0)
        if wl:
            try:
                k = s.send(rest)
                rest = rest[k:]
            except BlockingIOError:
                pass
        if rl:
            d = s.recv(1 << 20)
            check(d, "connection closed after %d of %d reply bytes" % (len(got), len(want)))
            got += d
    s.close()
    if bytes(got) != want:
        i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        fail("replies after back-pressure differ from byte %d of %d: %r" % (i, len(want), bytes(got[i:i + 80])))
    print("    back-pressure held the client at %.1f MB (%d commands)" % (sent / 1048576.0, n))
    sy.stop()


test_unread_replies_back_pressure.timeout = 120


def test_slow_subscriber_bounded(ctx):
    """A subscriber that never reads while 200 MB is published: switchyard holds at most its
    buffers (back-pressure towards Redis, which applies its own pubsub output limit), its RSS
    stays flat, and publishers and other clients are served throughout."""
    server, sy = _setup()
    sub = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sub.connect(("127.0.0.1", sy.port))
    sub.sendall(encode("SUBSCRIBE", "flood"))
    rs.wait_for(lambda: server.cli("PUBSUB", "NUMSUB", "flood").stdout.split()[1:] == ["1"], 10,
                "the subscriber's SUBSCRIBE to reach the upstream (PUBSUB NUMSUB flood)")
    rss0 = sy.rss_kb()
    msg = b"m" * (100 * 1024)
    with Resp(sy.port, timeout=30) as pub:
        for i in range(2000):
            v = pub.cmd("PUBLISH", "flood", msg)
            check(isinstance(v, int), "PUBLISH %d answered %r" % (i, pub.last_raw[:200]))
    rss1 = sy.rss_kb()
    rs.still_serving(sy.port, "during-flood")
    check(rss1 - rss0 < 8 * 1024, "switchyard's RSS grew by %d kB with a subscriber that does not read (%d -> %d kB)"
          % (rss1 - rss0, rss0, rss1))
    sub.close()
    sy.check_alive()
    sy.stop()


test_slow_subscriber_bounded.timeout = 120
