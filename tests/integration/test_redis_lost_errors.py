"""
test_redis_lost_errors.py - issue 12, Redis 5: errors lost to a reset.

A client pipelines 200,000 INCRs; after the first replies the upstream is stopped (SIGSTOP) until the session has
stopped reading the client (its owed replies reach redis_max_pipeline, SHOW CLIENTS shows
them), then killed (SIGKILL). Every command switchyard took must be answered, by Redis
(the INCR values 1..R, in order, relayed before the stop) or by switchyard's -ERR, and the
client must then see an orderly end (EOF): no reset before the last reply, though it was
still sending when the errors were written. With a dedicated upstream (multiplex = off)
the -ERRs are exactly the replies SHOW CLIENTS said were owed; multiplexed, those owed get
theirs too, and the commands taken after the kill go to the shared upstream's redial, which
fails: like any client whose upstream cannot be reached they get one error and the close
(test_redis_failures.test_unreachable_endpoint).
"""

import os
import signal
import socket
import threading
import time

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss

N = 200000


def _start(ctx, server, multiplex):
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, rs.endpoint(server), None,
                                   extra="multiplex = %s\n" % multiplex)],
                         # the commands taken after the kill wait this long for the server
                         # (issue 10), then get their error: short, to stay well inside
                         # the client's socket timeout
                         globals_extra="reconnect_window = 2")
    conf += ("\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % harness.free_port()
             + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo()))
    sy = harness.Switchyard(conf)
    sy.redis_port = port
    return sy


def _pending(rows):
    for c in rows:
        if c["protocol"] == "redis":
            return int(c["detail"].split("pending=")[1].split()[0])
    return -1


def _run(ctx, multiplex):
    server = harness.RedisServer()
    sy = _start(ctx, server, multiplex)
    con = ss.Console(sy)
    s = socket.create_connection(("127.0.0.1", sy.redis_port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cmd = rs.encode("INCR", "counter")
    sent = []

    def writer():
        try:
            for i in range(0, N, 2000):
                s.sendall(cmd * 2000)
                sent.append(i + 2000)
        except OSError as e:
            sent.append(e)

    replies = bytearray()
    reset = [None]
    eof = [False]

    def reader():
        try:
            while True:
                d = s.recv(1 << 20)
                if not d:
                    eof[0] = True
                    return
                replies.extend(d)
        except OSError as e:
            reset[0] = e

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    wt = threading.Thread(target=writer, daemon=True)
    wt.start()
    harness.wait_until(lambda: len(replies) > 50000, 30, "the first replies")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        rows = harness.wait_clients(con, lambda rows: _pending(rows) >= 1024, "the client's owed replies at "
                                    "redis_max_pipeline (it stopped being read)", timeout=30)
        owed = _pending(rows)
        time.sleep(0.2)   # nothing changes while the session does not read; check that it does not
        owed2 = _pending(harness.wait_clients(con, lambda rows: True, "SHOW CLIENTS"))
        check(owed2 == owed, "owed replies changed while the client was not read: %d -> %d" % (owed, owed2))
        os.kill(server.proc.pid, signal.SIGKILL)
        os.kill(server.proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    rt.join(timeout=30)
    wt.join(timeout=30)
    if rt.is_alive() or reset[0] is not None:
        print(sy.log_text()[-3000:]); print(con.rows("SHOW CLIENTS"))
    check(not rt.is_alive(), "the client never saw the end of the connection")
    check(reset[0] is None, "the client saw %r after %d bytes of replies: the errors were lost to a reset"
          % (reset[0], len(replies)))
    check(eof[0], "no EOF")
    vals, pos = [], 0
    while pos < len(replies):
        try:
            v, pos = rs.parse(replies, pos)
        except rs.Incomplete:
            fail("a truncated reply at the end: %r" % bytes(replies[pos:pos + 100]))
        vals.append(v)
    real = [v for v in vals if not isinstance(v, rs.Err)]
    errs = [v for v in vals if isinstance(v, rs.Err)]
    check(real == list(range(1, len(real) + 1)), "the real replies are not INCR's 1..R in order")
    check(vals[len(real):] == errs, "a real reply after an error")
    check(all(e.startswith("ERR switchyard: route redis-store: ") and "lost" in e or "cannot connect" in e
              for e in errs), "unexpected errors: %r" % sorted(set(errs))[:3])
    if multiplex == "off":
        check(len(errs) == owed, "%d replies were owed when the upstream was killed, the client got %d -ERRs"
              % (owed, len(errs)))
    else:
        check(len(errs) >= owed, "%d replies were owed when the upstream was killed, the client got %d -ERRs"
              % (owed, len(errs)))
    print("    multiplex = %s: %d real replies, %d owed, %d -ERRs, then EOF" % (multiplex, len(real), owed, len(errs)))
    s.close()
    con.close()
    sy.stop()


def test_owed_errors_survive_upstream_kill(ctx):
    _run(ctx, "off")


test_owed_errors_survive_upstream_kill.timeout = 120


def test_owed_errors_survive_upstream_kill_multiplexed(ctx):
    _run(ctx, "on")


test_owed_errors_survive_upstream_kill_multiplexed.timeout = 120
