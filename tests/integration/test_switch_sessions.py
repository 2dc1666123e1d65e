"""
test_switch_sessions.py - issue 4, "What SWITCH does", checked session by session beyond the
numbered tests of the issue (those are in test_switch_pg.py, test_switch_pgbench.py and
test_switch_redis.py):

  - atomic hold: a transaction that ends before the deadline delays the switch until its
    COMMIT, holds the other sessions' next transactions meanwhile, then everybody moves and
    nobody is closed;
  - new connections go to the new target from the moment the switch is accepted, while old
    sessions are still held; a second SWITCH of the same route meanwhile is refused (55006);
  - GRADUAL: idle sessions move at once while another session's transaction is still open;
  - a cancel request with the BackendKeyData the client got at startup still cancels its
    query after the session moved to another server;
  - a session holding an advisory lock cannot move and gets FATAL 57P01;
  - Redis: the client's SELECT and CLIENT SETNAME are replayed on the new store, PSUBSCRIBE
    is re-issued, a MULTI open when the switch starts completes on the old store before the
    client moves, and PAUSE/RESUME hold and release a Redis client.
"""

import time

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss

DRAIN = ss.DRAIN_TIMEOUT


def _where_is(sess, ctx, name, what):
    c = ss.cluster_of(ctx, name)
    got = ss.where(sess)
    check(got == (name, c.port), "%s runs on %r, want (%r, %d)" % (what, got, name, c.port))


def test_switch_waits_for_a_short_transaction(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    txn = ss.Session(sy.port)
    other = ss.Session(sy.port)
    txn.query("BEGIN")
    txn.query("CREATE TABLE IF NOT EXISTS sw_short (x int)")
    t0 = time.monotonic()
    sw = ss.SwitchThread(sy, "pg", "external")
    ss.wait_switching(con, "pg")

    # new connections go to the new target at once, while the old sessions are held
    fresh = ss.Session(sy.port)
    _where_is(fresh, ctx, "external", "a session opened during the switch")
    e = con.switch_error("pg", "builtin")
    check(e.sqlstate == "55006", "a second SWITCH during a switch: %s %s, want 55006" % (e.sqlstate, e.message))

    time.sleep(1.0)   # new upstreams are opened before anyone is held
    other.send_query("SELECT current_setting('sy.cluster')")
    check(not other.reply_within(1.0), "another session's transaction ran while the switch was holding")
    txn.query("INSERT INTO sw_short VALUES (1)")   # the open transaction carries on
    txn.query("COMMIT")
    t_commit = time.monotonic()
    row, _a, _b = sw.join_result(timeout=DRAIN + 20)
    t_done = time.monotonic()
    check(row["moved"] == "2" and row["closed"] == "0", "SWITCH across a short transaction: %r" % row)
    check(t_done - t0 < DRAIN - 0.5, "the switch took %.1fs: it ran into the deadline" % (t_done - t0))
    check(t_done - t_commit < 3, "the switch completed %.1fs after the COMMIT" % (t_done - t_commit))
    check(other.read_result() == [("external",)], "the held transaction did not run on external")
    _where_is(txn, ctx, "external", "the session whose transaction delayed the switch")
    check(txn.one("SELECT to_regclass('sw_short') IS NULL") == "t",
          "a table created on builtin is visible on external: the session did not move")
    check(ctx.builtin.sql("SELECT count(*) FROM sw_short", db="sourcegraph") == "1",
          "the committed transaction is not on builtin")
    ctx.builtin.sql("DROP TABLE sw_short", db="sourcegraph")
    for s in (txn, other, fresh):
        s.terminate()
    con.close()
    sy.stop()


def test_switch_gradual_moves_idle_sessions_first(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    txn = ss.Session(sy.port)
    idle = ss.Session(sy.port)
    txn.query("BEGIN; SELECT 1")
    sw = ss.SwitchThread(sy, "pg", "external", "GRADUAL")
    ss.wait_switching(con, "pg")
    time.sleep(1.0)
    t0 = time.monotonic()
    _where_is(idle, ctx, "external", "an idle session during a GRADUAL switch")
    check(time.monotonic() - t0 < 2, "the idle session's query waited %.1fs in a GRADUAL switch"
          % (time.monotonic() - t0))
    check(sw.is_alive(), "the GRADUAL switch completed while a transaction was still open")
    check(txn.one("SELECT current_setting('sy.cluster')") == "builtin",
          "the open transaction left builtin before its end")
    txn.query("COMMIT")
    row, _a, _b = sw.join_result(timeout=DRAIN + 20)
    check(row["moved"] == "2" and row["closed"] == "0", "GRADUAL SWITCH: %r" % row)
    _where_is(txn, ctx, "external", "the session after its COMMIT")
    for s in (txn, idle):
        s.terminate()
    con.close()
    sy.stop()


def test_switch_cancel_after_move(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    s = ss.Session(sy.port)
    pid, secret = s.pid, s.secret
    check(pid is not None, "no BackendKeyData")
    row, _a, _b = con.switch("pg", "external")
    check(row["moved"] == "1", "SWITCH: %r" % row)
    _where_is(s, ctx, "external", "the session after the switch")
    s.send_query("SELECT pg_sleep(20)")
    time.sleep(0.5)
    t0 = time.monotonic()
    harness.cancel_request(sy.port, pid, secret)
    try:
        s.read_result()
        fail("pg_sleep(20) was not cancelled")
    except harness.PgError as e:
        check(e.sqlstate == "57014", "cancel after a move: %s %s, want 57014" % (e.sqlstate, e.message))
    check(time.monotonic() - t0 < 5, "the cancel took %.1fs" % (time.monotonic() - t0))
    check(s.one("SELECT 1") == "1", "the session after the cancel")
    s.terminate()
    con.close()
    sy.stop()


def test_switch_advisory_lock_session_closed(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    locker = ss.Session(sy.port)
    locker.query("SELECT pg_advisory_lock(4242)")
    idle = ss.Session(sy.port)
    t0 = time.monotonic()
    sw = ss.SwitchThread(sy, "pg", "external")
    fields, _secs = locker.close_error(timeout=DRAIN + 15)
    secs = time.monotonic() - t0
    check(fields is not None and fields.get("C") == "57P01" and fields.get("S") == "FATAL",
          "the advisory-lock session got %r, want FATAL 57P01" % (fields,))
    # The issue says such sessions are closed "at the deadline"; switchyard closes them as
    # soon as the move is tried (at once when every session is quiet). Both are accepted
    # here; the time is printed.
    check(secs <= DRAIN + 4, "the advisory-lock session was closed %.1fs after the switch began" % secs)
    print("    advisory-lock session closed %.1fs after the switch began (drain_timeout %ds)" % (secs, DRAIN),
          flush=True)
    row, _a, _b = sw.join_result(timeout=DRAIN + 20)
    check(row["moved"] == "1" and row["closed"] == "1", "SWITCH with an advisory lock held: %r" % row)
    _where_is(idle, ctx, "external", "the idle session")
    check(ctx.builtin.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242") == "0",
          "the advisory lock is still held on builtin: the old upstream session was not ended")
    idle.terminate()
    con.close()
    sy.stop()


def test_switch_redis_session_state_and_multi(ctx):
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external)
    con = ss.Console(sy)
    r = rs.Resp(sy.redis_port)
    check(r.cmd("SELECT", "3") == "OK" and r.cmd("CLIENT", "SETNAME", "sw-name") == "OK", "SELECT / SETNAME")
    check(r.cmd("SET", "sw:k1", "v1") == "OK", "SET")
    check(builtin.cli("GET", "sw:k1", db=3).stdout.strip() == "v1", "SET did not land in db 3 of builtin")
    p = rs.Resp(sy.redis_port)
    p.send_cmds([("PSUBSCRIBE", "sw:*")])
    check(p.read(timeout=10) == [b"psubscribe", b"sw:*", 1], "PSUBSCRIBE")
    m = rs.Resp(sy.redis_port)
    check(m.cmd("MULTI") == "OK" and m.cmd("SET", "sw:multi", "1") == "QUEUED", "MULTI / SET")

    sw = ss.SwitchThread(sy, "redis-store", "external")
    ss.wait_switching(con, "redis-store")
    time.sleep(1.0)
    v = m.cmd("EXEC", timeout=10)
    check(v == ["OK"], "EXEC of a MULTI open when the switch began: %r" % (v,))
    row, _a, _b = sw.join_result(timeout=DRAIN + 20)
    check(row["moved"] == "3" and row["closed"] == "0", "SWITCH redis-store: %r" % row)
    check(builtin.cli("GET", "sw:multi").stdout.strip() == "1", "the MULTI did not complete on the old store")
    check(external.cli("EXISTS", "sw:multi").stdout.strip() == "0", "the MULTI reached the new store")

    check(r.cmd("CLIENT", "GETNAME") == b"sw-name", "CLIENT SETNAME not replayed on the new store")
    check(r.cmd("SET", "sw:k2", "v2") == "OK", "SET after the move")
    check(external.cli("GET", "sw:k2", db=3).stdout.strip() == "v2", "SELECT 3 not replayed on the new store")
    check(r.cmd("GET", "sw:k1") is None, "the moved client still reads builtin")
    n = external.cli("PUBLISH", "sw:chan", "hello").stdout.strip()
    check(n == "1", "PUBLISH on external counted %s pattern subscribers" % n)
    check(p.read(timeout=10) == [b"pmessage", b"sw:*", b"sw:chan", b"hello"], "PSUBSCRIBE after the move")

    # PAUSE / RESUME for a Redis route
    con.command("PAUSE redis-store")
    r.send_cmds([("GET", "sw:k2")])
    check(r.nothing_for(1.0), "a Redis command was answered while its route was paused")
    con.command("RESUME redis-store")
    check(r.read(timeout=5) == b"v2", "the held GET after RESUME")
    for x in (r, p, m):
        x.close()
    con.close()
    sy.stop()
