"""
test_client_stall.py - issue 8, limits: a client that leaves a message (Postgres) or a command
(Redis) half sent and then sends nothing is closed after client_stall_timeout with a clear
error, and its server session is freed. A slow client whose bytes keep coming is not a stall.
Slowloris on each listener: the metrics listener is covered in test_metrics, the Postgres
startup in test_pg_limits (client_login_timeout).
"""

import struct
import time

import harness
import redis_support as rs
from harness import PgError, PgWire, check
from redis_support import Resp

STALL = 2


def _backend_gone(cluster, pid):
    return cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % pid) == "0"


def test_pg_client_stalled_mid_message(ctx):
    """Half a Query message, then silence: FATAL 08P01 after client_stall_timeout, the close,
    and the backend ends. A client trickling a query a byte at a time, slower than nothing but
    never silent for the timeout, gets its answer."""
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin,
                                                    globals_extra="client_stall_timeout = %d" % STALL))
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    pid = int(w.query("SELECT pg_backend_pid()")[0][0])
    sql = b"SELECT 'slow'\0"
    msg = b"Q" + struct.pack("!I", len(sql) + 4) + sql
    w.send(msg[:7])
    t0 = time.monotonic()
    try:
        w.read_result()
        err = None
    except PgError as e:
        err = e
    except harness.ConnectionClosed:
        err = "closed without an error"
    secs = time.monotonic() - t0
    problems = []
    if not isinstance(err, PgError) or err.sqlstate != "08P01" or "stalled" not in err.message:
        problems.append("stalled client got %r, want FATAL 08P01 '... stalled ...'" % (err,))
    if not STALL - 0.5 <= secs <= STALL + 3:
        problems.append("error after %.1f s, want about %d s" % (secs, STALL))
    data, closed = w.read_until_close(timeout=5)
    if not closed:
        problems.append("not closed after the error")
    try:
        harness.wait_until(lambda: _backend_gone(ctx.builtin, pid), timeout=5, what="backend to end")
    except harness.TestFailure as e:
        problems.append(str(e))
    sy.wait_log(r"event=client_stalled conn=\d+ route=pg", what="event=client_stalled")

    slow = PgWire(sy.port)
    slow.startup(database="sourcegraph")
    for i in range(len(msg)):          # about 3.5 s in all, never 2 s silent
        slow.send(msg[i:i + 1])
        time.sleep(0.25)
    try:
        if slow.read_result() != [("slow",)]:
            problems.append("trickling client: wrong answer")
    except Exception as e:
        problems.append("trickling client was cut: %r" % e)
    slow.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_redis_client_stalled_mid_command(ctx):
    """Half a command, then silence: -ERR naming the stall after client_stall_timeout, then
    the close; an idle client at a command boundary is not touched."""
    server = harness.RedisServer()
    sy = rs.start_proxy(server, globals_extra="client_stall_timeout = %d" % STALL)
    idle = Resp(sy.port)
    check(idle.cmd("PING") == "PONG", "PING")
    c = Resp(sy.port)
    check(c.cmd("SET", "k", "v") == "OK", "SET")
    c.send(b"*2\r\n$3\r\nGET\r\n$1")
    t0 = time.monotonic()
    got = c.expect_close(STALL + 5)
    secs = time.monotonic() - t0
    problems = []
    if b"stalled" not in got or not got.startswith(b"-ERR"):
        problems.append("stalled client got %r, want -ERR ... stalled ... then the close" % got)
    if not STALL - 0.5 <= secs <= STALL + 3:
        problems.append("closed after %.1f s, want about %d s" % (secs, STALL))
    if idle.cmd("PING") != "PONG":
        problems.append("an idle client at a boundary was touched")
    sy.wait_log(r"event=client_stalled conn=\d+ route=redis-store", what="event=client_stalled")
    idle.close()
    c.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))
