"""
test_upstream_restart.py - issue 8, the fault matrix: the upstream restarts (Postgres fast
shutdown and start, as `pg_ctl restart -m fast`; redis-server stopped and started). Each
client sees what a direct client sees, and only that: Postgres's own FATAL 57P01 for an
idle session and one mid-query, a silent close for an idle Redis client, -ERR for a Redis
command in flight. While the server is down a new session gets 08001 / -ERR at once;
after it is back new sessions work, and no write a client saw acknowledged is lost.
Both with reconnect_window = 0, the contract they keep when the window is off: issue 10
keeps idle sessions across a restart and lets new ones wait (test_pg_reconnect,
test_redis_reconnect).
"""

import socket
import time

import harness
import redis_support as rs
from harness import PgError, PgWire, check
from redis_support import Resp


def _errors_until_close(w, timeout=15):
    data, closed = w.read_until_close(timeout=timeout)
    return [e.get("C") for e in harness.error_messages(data)], closed


def test_postgres_restart(ctx):
    pg = harness.PgCluster("restart", hba="trust", setup=False, extra_conf="fsync = on\nsynchronous_commit = on")
    pg.sql("CREATE DATABASE sourcegraph")
    pg.sql("CREATE TABLE acked (id int PRIMARY KEY)", db="sourcegraph")
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres", "PGSSLMODE": "disable"}
    sy = harness.start_default(ctx, env=env, args=["switchyard.reconnect_window=0"])
    writer = PgWire(sy.port)
    writer.startup(database="sourcegraph")
    for i in range(20):
        writer.query("INSERT INTO acked VALUES (%d)" % i)
    idle = PgWire(sy.port)
    idle.startup(database="sourcegraph")
    busy = PgWire(sy.port)
    busy.startup(database="sourcegraph")
    bpid = int(busy.query("SELECT pg_backend_pid()")[0][0])
    busy.send_query("SELECT pg_sleep(30)")
    harness.wait_until(lambda: pg.sql("SELECT state FROM pg_stat_activity WHERE pid = %d" % bpid) == "active",
                       timeout=10, what="the query to start")
    pg.stop()
    problems = []
    for name, w in (("idle", idle), ("mid-query", busy), ("writer", writer)):
        errs, closed = _errors_until_close(w)
        if errs != ["57P01"] or not closed:
            problems.append("%s: errors %s closed=%s, want the server's own ['57P01'] and the close" % (name, errs, closed))
    err, secs = harness.connect_error(sy.port, db="sourcegraph")
    if err.sqlstate != "08001" or secs > 2:
        problems.append("while down: %s after %.1f s, want 08001 at once" % (err, secs))
    pg.start()
    again = PgWire(sy.port)
    again.startup(database="sourcegraph")
    n = again.query("SELECT count(*) FROM acked")
    if n != [("20",)]:
        problems.append("acknowledged writes after the restart: %s of 20" % n)
    again.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_redis_restart(ctx):
    server = harness.RedisServer()
    # each client's own upstream; reconnect_window = 0: today's contract (with a window the
    # sessions outlive the restart: test_redis_reconnect)
    sy = rs.start_proxy(server, extra="multiplex = off", globals_extra="reconnect_window = 0")
    idle = Resp(sy.port)
    check(idle.cmd("SET", "k", "v") == "OK", "SET")
    blocked = Resp(sy.port)
    blocked.send(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nqueue\r\n$2\r\n30\r\n")
    harness.wait_until(lambda: "blpop" in server.cli("CLIENT", "LIST").stdout, timeout=10, what="BLPOP upstream")
    server.stop()
    problems = []
    got = idle.expect_close(15)
    if got != b"":
        problems.append("idle client got %r before the close, want nothing (as direct)" % got)
    got = blocked.expect_close(15)
    if not got.startswith(b"-ERR"):
        problems.append("BLPOP in flight got %r, want -ERR then the close" % got)
    c = Resp(sy.port, timeout=10)
    try:
        r = c.cmd("PING")
        if not isinstance(r, rs.Err) or "cannot connect" not in r:
            problems.append("PING while down answered %r, want -ERR ... cannot connect" % (r,))
    except (rs.Closed, socket.timeout) as e:
        problems.append("PING while down: %r, want -ERR" % e)
    c.close()
    server.start()
    again = Resp(sy.port)
    if again.cmd("PING") != "PONG":
        problems.append("after the restart: no PONG")
    again.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_redis_restart_multiplexed(ctx):
    """With multiplexing, an idle client owes nothing when the shared upstream goes away: a
    restart of redis-server does not close it, and its next command after the restart is
    answered over a new shared upstream."""
    server = harness.RedisServer()
    sy = rs.start_proxy(server, extra="multiplex = on")
    idle = Resp(sy.port)
    check(idle.cmd("SET", "k", "v") == "OK", "SET")
    mark = sy.log_size()
    server.stop()
    sy.wait_log(r"event=upstream_lost conn=shared route=redis-store", since=mark, timeout=10,
                what="switchyard to see the server go")
    server.start()
    got = idle.cmd("PING")
    check(got == "PONG", "the idle client after the restart: %r" % (got,))
    idle.close()
    sy.check_alive()
    sy.stop()
