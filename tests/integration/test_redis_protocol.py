"""
test_redis_protocol.py - issue 3, cases 4 to 9: what a Redis client does besides GET and SET,
through switchyard on raw sockets (pub/sub, MULTI/WATCH, blocking pops, RESP3, inline
commands, MONITOR, CLIENT REPLY).

Where Redis's own answer is the reference, the same exchange is made directly to the
upstream and through switchyard, and the raw reply bytes are compared.
"""

import threading
import time

import harness
from harness import check, fail
import redis_support as rs
from redis_support import Resp, encode, Err, Push, Map


def _pair(**server_kw):
    server = harness.RedisServer(extra_args=["--enable-debug-command", "yes"], **server_kw)
    sy = rs.start_proxy(server)
    return server, sy


def _exchange(port, cmds, nreplies, prelude=(), timeout=10):
    """Send `prelude` (reading one reply each, discarded), then `cmds` pipelined; return the
    raw bytes of the next nreplies replies."""
    with Resp(port) as r:
        for c in prelude:
            r.cmd(*c)
        r.send_cmds(cmds)
        return r.read_raw(nreplies, timeout=timeout)


# ---- case 4: pub/sub -------------------------------------------------------------------

def test_pubsub_subscribe_psubscribe_ssubscribe(ctx):
    server, sy = _pair()
    sub = Resp(sy.port)
    sub.send_cmds([("SUBSCRIBE", "ch1", "ch2"), ("PSUBSCRIBE", "news.*"), ("SSUBSCRIBE", "shard1")])
    got = [sub.read() for _ in range(4)]
    want = [[b"subscribe", b"ch1", 1], [b"subscribe", b"ch2", 2], [b"psubscribe", b"news.*", 3],
            [b"ssubscribe", b"shard1", 1]]
    check(got == want, "subscription confirmations: %r" % got)

    with Resp(sy.port) as pub:   # the publisher goes through switchyard too
        check(pub.cmd("PUBLISH", "ch1", "m1") == 1, "PUBLISH ch1 did not reach one subscriber")
        check(pub.cmd("PUBLISH", "news.tech", "m2") == 1, "PUBLISH news.tech did not reach the pattern")
        check(pub.cmd("SPUBLISH", "shard1", "m3") == 1, "SPUBLISH shard1 did not reach one subscriber")
        check(pub.cmd("PUBLISH", "ch2", "x" * 100000) == 1, "PUBLISH ch2 (100 kB) did not reach one subscriber")
    # and one published directly on the upstream
    r = server.cli("PUBLISH", "ch2", "m5")
    check(r.stdout.strip() == "1", "direct PUBLISH: %r" % r.stdout)
    got = [sub.read() for _ in range(5)]
    want = [[b"message", b"ch1", b"m1"], [b"pmessage", b"news.*", b"news.tech", b"m2"],
            [b"smessage", b"shard1", b"m3"], [b"message", b"ch2", b"x" * 100000], [b"message", b"ch2", b"m5"]]
    check(got == want, "messages received: %r" % [repr(g)[:120] for g in got])

    # PING in subscribed mode, then leave every kind of subscription (no arguments)
    check(sub.cmd("PING") == [b"pong", b""], "PING while subscribed: %r" % sub.last_raw)
    sub.send_cmds([("UNSUBSCRIBE",), ("PUNSUBSCRIBE",), ("SUNSUBSCRIBE",)])
    got = sorted(tuple(sub.read()[:2]) for _ in range(4))
    check(got == sorted([(b"unsubscribe", b"ch1"), (b"unsubscribe", b"ch2"), (b"punsubscribe", b"news.*"),
                         (b"sunsubscribe", b"shard1")]), "unsubscribe confirmations: %r" % got)
    # back in normal mode: commands (including one switchyard answers itself) stay in order
    sub.send_cmds([("SET", "after-sub", "1"), ("AUTH", "anything"), ("GET", "after-sub"), ("PING",)])
    got = [sub.read(timeout=5) for _ in range(4)]
    check(got == ["OK", "OK", b"1", "PONG"], "replies after unsubscribing: %r" % got)
    sub.close()
    sy.stop()


def test_pubsub_unsubscribe_counts(ctx):
    """SUNSUBSCRIBE with no shard subscription answers once whatever else is subscribed;
    the session must not wait for more replies (a command switchyard answers itself, AUTH,
    comes back in order and in time), in RESP2 and in RESP3."""
    server, sy = _pair()
    problems = []
    for proto in (2, 3):
        try:
            with Resp(sy.port) as c:
                if proto == 3:
                    c.ok("HELLO", "3")
                c.send_cmds([("SUBSCRIBE", "c1"), ("PSUBSCRIBE", "p1", "p2", "p3")])
                c.read_raw(4)
                c.send_cmds([("SUNSUBSCRIBE",)])
                v = c.read()
                check(list(v)[:1] == [b"sunsubscribe"], "RESP%d SUNSUBSCRIBE reply: %r" % (proto, c.last_raw))
                c.send_cmds([("AUTH", "anything"), ("PING",)])
                a = c.read(timeout=5, what="RESP%d: AUTH after SUBSCRIBE c1, PSUBSCRIBE p1 p2 p3, SUNSUBSCRIBE" % proto)
                check(not isinstance(a, list), "RESP%d: reply to AUTH is %r" % (proto, c.last_raw))
                p = c.read(timeout=5)
                check(p in ("PONG", [b"pong", b""]), "RESP%d: reply to PING after AUTH is %r" % (proto, c.last_raw))
                # still subscribed to c1 and p1..p3: a message still arrives
                with Resp(sy.port) as pub:
                    check(pub.cmd("PUBLISH", "c1", "hello") == 1, "PUBLISH c1 after SUNSUBSCRIBE")
                m = c.read(timeout=5)
                check(list(m) == [b"message", b"c1", b"hello"],
                      "RESP%d message after SUNSUBSCRIBE: %r" % (proto, c.last_raw))
        except harness.TestFailure as e:
            problems.append(str(e))
    check(not problems, "\n".join(problems))
    sy.stop()


def test_pubsub_resp3_pushes_between_replies(ctx):
    """RESP3: messages are pushes, and regular commands keep working while subscribed."""
    server, sy = _pair()
    with Resp(sy.port) as sub, Resp(sy.port) as pub:
        sub.cmd("HELLO", "3")
        check(sub.last_raw[:1] == b"%", "HELLO 3: %r" % sub.last_raw[:40])
        v = sub.cmd("SUBSCRIBE", "r3")
        check(isinstance(v, Push) and list(v) == [b"subscribe", b"r3", 1], "RESP3 SUBSCRIBE: %r" % sub.last_raw)
        sub.ok("SET", "k3", "v3")
        for i in range(50):
            pub.cmd("PUBLISH", "r3", "m%d" % i)
            sub.send(encode("GET", "k3"))
        got_msgs, got_vals = [], []
        while len(got_vals) < 50 or len(got_msgs) < 50:
            v = sub.read(timeout=5)
            if isinstance(v, Push):
                got_msgs.append(v[2])
            else:
                got_vals.append(v)
        check(got_msgs == [b"m%d" % i for i in range(50)], "pushed messages: %r" % got_msgs[:10])
        check(got_vals == [b"v3"] * 50, "GET replies between pushes: %r" % got_vals[:10])
    sy.stop()


# ---- case 5: MULTI / EXEC / WATCH -----------------------------------------------------

def test_multi_exec_and_watch_conflict(ctx):
    server, sy = _pair()
    with Resp(sy.port) as a, Resp(sy.port) as b:
        a.send_cmds([("MULTI",), ("SET", "mk", "1"), ("INCR", "mk"), ("LPUSH", "mk", "x"), ("EXEC",)])
        got = [a.read() for _ in range(5)]
        check(got[:4] == ["OK", "QUEUED", "QUEUED", "QUEUED"], "MULTI replies: %r" % got)
        check(isinstance(got[4], list) and got[4][:2] == ["OK", 2] and isinstance(got[4][2], Err)
              and "WRONGTYPE" in got[4][2], "EXEC reply: %r" % (got[4],))
        # DISCARD
        a.send_cmds([("MULTI",), ("SET", "mk", "discarded"), ("DISCARD",), ("GET", "mk")])
        got = [a.read() for _ in range(4)]
        check(got == ["OK", "QUEUED", "OK", b"2"], "MULTI/DISCARD replies: %r" % got)
        # WATCH, a conflicting write from another client, EXEC -> nil
        check(a.cmd("WATCH", "wk") == "OK", "WATCH")
        check(a.cmd("GET", "wk") is None, "GET wk before")
        check(b.cmd("SET", "wk", "from-b") == "OK", "conflicting SET from client b")
        a.send_cmds([("MULTI",), ("SET", "wk", "from-a"), ("EXEC",)])
        got = [a.read(), a.read(), a.read()]
        check(got[:2] == ["OK", "QUEUED"] and got[2] is None and a.last_raw == b"*-1\r\n",
              "EXEC after a conflicting write answered %r (raw %r), expected nil" % (got, a.last_raw))
        check(b.cmd("GET", "wk") == b"from-b", "wk was overwritten by the aborted transaction")
        # WATCH without conflict commits
        a.send_cmds([("WATCH", "wk"), ("MULTI",), ("SET", "wk", "from-a"), ("EXEC",)])
        got = [a.read() for _ in range(4)]
        check(got == ["OK", "OK", "QUEUED", ["OK"]], "WATCH without conflict: %r" % got)
        # EXECABORT after a queuing error
        a.send_cmds([("MULTI",), ("SET", "only-one-arg"), ("EXEC",), ("PING",)])
        got = [a.read() for _ in range(4)]
        check(got[0] == "OK" and isinstance(got[1], Err) and isinstance(got[2], Err) and "EXECABORT" in got[2]
              and got[3] == "PONG", "MULTI with a bad command: %r" % got)
    sy.stop()


# ---- case 6: BLPOP ---------------------------------------------------------------------

def test_blpop_unblocked_by_other_client(ctx):
    server, sy = _pair()
    with Resp(sy.port) as a, Resp(sy.port) as b:
        a.send(encode("BLPOP", "bq", "0"))
        check(a.nothing_for(0.7), "BLPOP bq 0 answered before anything was pushed: %r" % bytes(a.buf[a.pos:]))
        check(b.cmd("LPUSH", "bq", "hello") == 1, "LPUSH from the other client")
        v = a.read(timeout=5)
        check(v == [b"bq", b"hello"], "BLPOP reply: %r" % a.last_raw)
        # a blocking pop with a timeout returns nil, and commands queued behind a block wait for it
        t0 = time.monotonic()
        a.send_cmds([("BLPOP", "empty", "0.5"), ("PING",)])
        v = a.read(timeout=5)
        check(v is None and time.monotonic() - t0 >= 0.4, "BLPOP with timeout 0.5: %r" % a.last_raw)
        check(a.read() == "PONG", "PING after a timed-out BLPOP: %r" % a.last_raw)
        # a held local answer (AUTH) waits for the blocked reply before it
        a.send_cmds([("BLPOP", "bq2", "0"), ("AUTH", "x"), ("PING",)])
        check(a.nothing_for(0.5), "something answered while BLPOP blocked: %r" % bytes(a.buf[a.pos:]))
        b.cmd("RPUSH", "bq2", "w")
        got = [a.read(timeout=5) for _ in range(3)]
        check(got == [[b"bq2", b"w"], "OK", "PONG"], "BLPOP + AUTH + PING replies: %r" % got)
    sy.stop()


# ---- case 7: RESP3 ---------------------------------------------------------------------

def test_hello3_map(ctx):
    server, sy = _pair()
    with Resp(sy.port) as r:
        v = r.cmd("HELLO", "3")
        check(r.last_raw[:1] == b"%", "HELLO 3 reply is not a RESP3 map: %r" % r.last_raw[:60])
        d = {k: val for k, val in v}
        check(d.get(b"proto") == 3 and d.get(b"server") == b"redis", "HELLO 3 map: %r" % d)
        # RESP3 types pass through
        r.ok("HSET", "h", "f", "v")
        check(r.cmd("HGETALL", "h") == Map([(b"f", b"v")]) and r.last_raw[:1] == b"%",
              "HGETALL in RESP3: %r" % r.last_raw)
        check(r.cmd("GET", "missing") is None and r.last_raw == b"_\r\n", "RESP3 null: %r" % r.last_raw)
        # and back to RESP2
        v = r.cmd("HELLO", "2")
        check(r.last_raw[:1] == b"*", "HELLO 2 reply: %r" % r.last_raw[:60])
        check(r.cmd("GET", "missing") is None and r.last_raw == b"$-1\r\n", "RESP2 null: %r" % r.last_raw)
    sy.stop()


_DEBUG_TYPES = ["string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "push",
                "verbatim", "true", "false"]


def test_resp3_every_type_intact(ctx):
    """DEBUG PROTOCOL emits every RESP3 type, attributes and a push frame included: the bytes
    through switchyard equal the bytes from Redis directly."""
    server, sy = _pair()
    cmds = [("DEBUG", "PROTOCOL", t) for t in _DEBUG_TYPES] + [("PING",)]
    n = len(_DEBUG_TYPES) + 2   # attrib is one reply with its attribute; push adds one frame
    direct = _exchange(server.port, cmds, n, prelude=[("HELLO", "3")])
    via = _exchange(sy.port, cmds, n, prelude=[("HELLO", "3")])
    check(b"|1\r\n" in direct and b">2\r\n" in direct and direct.endswith(b"+PONG\r\n"),
          "direct exchange lacks an attribute or a push: %r" % direct)
    check(via == direct, "RESP3 bytes differ:\n direct %r\n via    %r" % (direct, via))
    sy.stop()


def test_resp3_tracking_invalidation_push(ctx):
    """CLIENT TRACKING ON in RESP3: the invalidation push after another client's write is
    relayed byte for byte, and a push arriving while a reply is owed is not taken for it
    (BLPOP, then a push, then the BLPOP reply)."""
    server, sy = _pair()

    def run(port):
        with Resp(port) as a, Resp(port) as b:
            a.cmd("HELLO", "3")
            a.send_cmds([("CLIENT", "TRACKING", "ON"), ("SET", "tk", "1"), ("GET", "tk")])
            out = a.read_raw(3)
            b.ok("SET", "tk", "2")
            out += a.read_raw(1, timeout=5)         # the invalidation push
            a.send_cmds([("GET", "tk"), ("PING",)])
            out += a.read_raw(2)
            # a push while BLPOP is owed, then AUTH (answered by switchyard when proxied)
            a.send_cmds([("BLPOP", "tq", "0"), ("PING",)])
            rs.wait_blocked(server)
            b.ok("SET", "tk", "3")
            rs.wait_for(lambda: not a.nothing_for(0), 5, "the invalidation push after SET tk 3 to reach the client")
            b.ok("LPUSH", "tq", "x")
            out += a.read_raw(3, timeout=5)
            return out

    direct = run(server.port)
    via = run(sy.port)
    check(direct.count(b">2\r\n$10\r\ninvalidate\r\n") == 2, "direct exchange has no invalidation pushes: %r" % direct)
    check(via == direct, "tracking exchange differs:\n direct %r\n via    %r" % (direct, via))
    # through switchyard only: AUTH (answered locally) waits behind an owed BLPOP reply even
    # when a push arrives first
    with Resp(sy.port) as a, Resp(sy.port) as b:
        a.cmd("HELLO", "3")
        a.send_cmds([("CLIENT", "TRACKING", "ON"), ("GET", "tk")])
        a.read_raw(2)
        a.send_cmds([("BLPOP", "tq2", "0"), ("AUTH", "x"), ("PING",)])
        rs.wait_blocked(server)
        b.ok("SET", "tk", "4")
        check(isinstance(a.read(timeout=5), Push), "expected the invalidation push first: %r" % a.last_raw)
        check(a.nothing_for(0.3), "AUTH answered while BLPOP was still owed: %r" % bytes(a.buf[a.pos:]))
        b.ok("LPUSH", "tq2", "y")
        got = [a.read(timeout=5) for _ in range(3)]
        check(got == [[b"tq2", b"y"], "OK", "PONG"], "BLPOP/AUTH/PING after a push: %r" % got)
    sy.stop()


# ---- case 8: inline commands ----------------------------------------------------------

def test_inline_commands(ctx):
    server, sy = _pair()
    with Resp(sy.port) as r:
        r.send(b"PING\r\n")
        check(r.read() == "PONG", "inline PING: %r" % r.last_raw)
        r.send(b"SET a b\r\n")
        check(r.read() == "OK", "inline SET a b: %r" % r.last_raw)
        r.send(b"GET a\r\n")
        check(r.read() == b"b", "inline GET a: %r" % r.last_raw)
        # LF only, quoting, a command split across writes, inline and multibulk mixed
        r.send(b"PING\n")
        check(r.read() == "PONG", "inline PING with LF only: %r" % r.last_raw)
        r.send(b"SET \"sp ace\" 'q\"v'\r\n")
        check(r.read() == "OK", "inline SET with quotes: %r" % r.last_raw)
        r.send(b"GE")
        time.sleep(0.1)   # the rest in a later read: a command split across writes is the case
        r.send(b"T \"sp ace\"\r\n" + encode("GET", "a") + b"ECHO \"\\x41\\n\"\r\n")
        got = [r.read(), r.read(), r.read()]
        check(got == [b"q\"v", b"b", b"A\n"], "split/mixed inline replies: %r" % got)
        # inline AUTH is answered by switchyard
        r.send(b"AUTH whatever\r\nPING\r\n")
        got = [r.read(), r.read()]
        check(got == ["OK", "PONG"], "inline AUTH + PING: %r" % got)
        # an unbalanced quote is a protocol error, and the connection closes (the exact
        # bytes are compared with Redis's in test_redis_bad_input)
        r.send(b"SET \"a b\r\n")
        data = r.expect_close(5)
        check(data.startswith(b"-") and b"Protocol error" in data, "unbalanced quotes answered %r" % data)
    check(server.cli("GET", "sp ace").stdout.strip() == 'q"v', "inline SET did not reach the upstream")
    rs.still_serving(sy.port)
    sy.stop()


# ---- case 9: MONITOR, CLIENT REPLY ----------------------------------------------------

def test_monitor_streams(ctx):
    server, sy = _pair()
    with Resp(sy.port) as mon, Resp(sy.port) as other:
        check(mon.cmd("MONITOR") == "OK", "MONITOR: %r" % mon.last_raw)
        other.ok("SET", "monkey", "banana")
        server.cli("GET", "monkey")    # a direct client shows up too
        other.ok("INCR", "moncount")
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            v = mon.read(timeout=5)
            check(isinstance(v, str), "MONITOR line is not a simple string: %r" % mon.last_raw)
            seen.append(v)
            if '"INCR" "moncount"' in v:
                break
        text = "\n".join(seen)
        for want in ('"SET" "monkey" "banana"', '"GET" "monkey"', '"INCR" "moncount"'):
            check(want in text, "MONITOR output lacks %s:\n%s" % (want, text))
    rs.still_serving(sy.port)
    sy.stop()


_REPLY_CMDS = [
    ("SET", "rk", "0"),
    ("CLIENT", "REPLY", "OFF"),
    ("INCR", "rk"), ("INCR", "rk"), ("GET", "rk"), ("CLIENT", "REPLY", "SKIP"), ("GET", "nope"),
    ("CLIENT", "REPLY", "ON"),
    ("GET", "rk"),
    ("CLIENT", "REPLY", "SKIP"), ("INCR", "rk"), ("GET", "rk"),
    ("CLIENT", "REPLY", "SKIP"), ("CLIENT", "REPLY", "SKIP"), ("INCR", "rk"), ("GET", "rk"),
    ("ECHO", "END"),
]


def _reply_exchange(port, cmds, pipelined):
    with Resp(port) as r:
        if pipelined:
            r.send_cmds(cmds)
        else:
            for c in cmds:
                r.send_cmds([c])
                time.sleep(0.01)   # one command per write, unpipelined: the case under test
        out = b""
        while True:
            v = r.read(timeout=5, what="waiting for ECHO END after %r (so far %r)" % (cmds, out))
            out += r.last_raw
            if v == b"END":
                break
        check(r.nothing_for(0.3), "bytes after the END marker: %r" % bytes(r.buf[r.pos:]))
        return out


def test_client_reply_off_on_aligned(ctx):
    server, sy = _pair()
    for pipelined in (True, False):
        direct = _reply_exchange(server.port, _REPLY_CMDS, pipelined)
        via = _reply_exchange(sy.port, _REPLY_CMDS, pipelined)
        check(via == direct, "CLIENT REPLY exchange (pipelined=%s) differs:\n direct %r\n via    %r"
              % (pipelined, direct, via))
    sy.stop()


def test_client_reply_off_covers_local_auth(ctx):
    """AUTH answered by switchyard obeys CLIENT REPLY OFF/SKIP like any reply would."""
    server, sy = _pair()
    cmds = [("CLIENT", "REPLY", "OFF"), ("AUTH", "x"), ("CLIENT", "REPLY", "ON"), ("PING",),
            ("CLIENT", "REPLY", "SKIP"), ("AUTH", "x"), ("ECHO", "END")]
    via = _reply_exchange(sy.port, cmds, True)
    check(via == b"+OK\r\n+PONG\r\n$3\r\nEND\r\n",
          "replies with AUTH under CLIENT REPLY OFF/SKIP: %r (expected +OK +PONG END)" % via)
    sy.stop()
