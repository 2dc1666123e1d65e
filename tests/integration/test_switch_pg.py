"""
test_switch_pg.py - issue 4, Postgres sessions across a switch (tests 2, 3, 5 and 7 of the
issue; test 1 is test_switch_pgbench.py):

  2. a psql session with SET search_path, a PREPAREd statement and LISTEN survives a switch
     in both directions: the setting is still there, EXECUTE works, and a NOTIFY sent
     directly on the new target's server arrives;
  3. a session holding a temporary table and one holding an open transaction past the
     deadline get FATAL 57P01 at the deadline while every other session moves;
  5. SWITCH to an unreachable target is refused and nothing moves; FORCE switches anyway and
     a new client gets the documented connect error (08001 naming the route and host:port);
  7. PAUSE holds a client's next transaction and RESUME releases it; a PAUSE past pause_max
     resumes by itself.

Route pg (database sourcegraph): builtin = ctx.builtin (plain, trust), external =
ctx.external (TLS verify-full, SCRAM as scram_user), starting on builtin; drain_timeout and
pause_max come from switch_support (5 s and 3 s).
"""

import select
import time

import harness
from harness import check, fail
import switch_support as ss

DRAIN = ss.DRAIN_TIMEOUT


def _expect_where(sess, ctx, name, what):
    c = ss.cluster_of(ctx, name)
    got = ss.where(sess)
    check(got == (name, c.port), "%s runs on %r, want (%r, %d)" % (what, got, name, c.port))


# --------------------------------------------------------------------------------------------
# 2. session state survives a switch

def _psql_state_after_switch(ctx, p, con, to, round_no):
    """Switch route pg to `to` under an idle psql session p and check its state moved."""
    before = p.run("SELECT pg_backend_pid();")
    row, _t0, _t1 = con.switch("pg", to)
    check(row["moved"] == "1" and row["closed"] == "0",
          "SWITCH pg TO %s under one psql session: %r" % (to, row))
    out = p.run("SHOW search_path;\nSHOW work_mem;\nEXECUTE sw_q(21);\n"
                "SELECT current_setting('sy.cluster'), inet_server_port();\nSELECT pg_backend_pid();")
    c = ss.cluster_of(ctx, to)
    want = ['"$user", sw_schema, public', "7MB", "42|%s" % to, "%s|%d" % (to, c.port)]
    check(out[:4] == want, "psql after SWITCH pg TO %s printed %r, want %r then a pid" % (to, out, want))
    check(len(out) == 5 and out[4] != before[0],
          "psql after SWITCH pg TO %s: backend pid %r (before %r): not a new upstream session" % (to, out[4:], before))
    # NOTIFY sent on the new target's own server, by another session there
    payload = "from-%s-%d" % (to, round_no)
    c.sql("NOTIFY sw_chan, '%s'" % payload, db="sourcegraph")
    want_line = 'Asynchronous notification "sw_chan" with payload "%s" received' % payload
    seen = []
    deadline = time.monotonic() + 10
    while not any(want_line in l for l in seen):
        if time.monotonic() > deadline:
            fail("the NOTIFY sent on %s never reached the psql session moved there; psql printed %r"
                 % (to, seen))
        seen += p.run("SELECT 1;")
        time.sleep(0.1)


def test_switch_psql_session_state_moves(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    p = ss.PsqlPipe(sy.port)
    out = p.run("SET search_path TO \"$user\", sw_schema, public;\nSET work_mem = '7MB';\n"
                "PREPARE sw_q(int) AS SELECT $1 * 2 || '|' || current_setting('sy.cluster');\n"
                "LISTEN sw_chan;\nSELECT current_setting('sy.cluster'), inet_server_port();")
    check(out == ["SET", "SET", "PREPARE", "LISTEN", "builtin|%d" % ctx.builtin.port],
          "psql setup printed %r" % out)
    _psql_state_after_switch(ctx, p, con, "external", 1)
    _psql_state_after_switch(ctx, p, con, "builtin", 2)
    # a NOTIFY on the store the session left must not reach it any more
    ctx.external.sql("NOTIFY sw_chan, 'stale'", db="sourcegraph")
    time.sleep(0.3)   # the window in which a stale notification would arrive: what is checked
    out = p.run("SELECT 'after-stale';")
    check(out == ["after-stale"], "a NOTIFY on the old target reached the moved session: %r" % out)
    rc = p.quit()
    check(rc == 0, "psql exited %s; output:\n%s" % (rc, "\n".join(p.all[-20:])))
    con.close()
    sy.stop()


# --------------------------------------------------------------------------------------------
# 3. sessions that cannot move are closed at the deadline, the others move

def _wait_closes(sessions, t_start, timeout):
    """Wait until every session in `sessions` (name -> Session) is closed by the server;
    returns name -> (ErrorResponse fields or None, seconds since t_start at the close)."""
    left = dict(sessions)
    data = {n: s.buf for n, s in left.items()}
    for s in left.values():
        s.buf = b""
    out = {}
    deadline = time.monotonic() + timeout
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0:
            fail("sessions %s not closed within %.0fs of the switch (received %r)"
                 % (sorted(left), timeout, {n: data[n][:200] for n in left}))
        r, _, _ = select.select([s.sock for s in left.values()], [], [], wait)
        for name, s in list(left.items()):
            if s.sock not in r:
                continue
            try:
                chunk = s.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                data[name] += chunk
                continue
            errs = harness.error_messages(data[name])
            out[name] = (errs[-1] if errs else None, time.monotonic() - t_start)
            del left[name]
    return out


def test_switch_deadline_closes_unmovable_sessions(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    temp = ss.Session(sy.port)
    temp.query("CREATE TEMP TABLE sw_tmp (x int); INSERT INTO sw_tmp VALUES (1)")
    txn = ss.Session(sy.port)
    txn.query("BEGIN; SELECT 1")
    check(txn.status == "T", "BEGIN left the session in status %r" % txn.status)
    idle = ss.Session(sy.port)
    idle.query("SET application_name = 'sw-idle'")
    _expect_where(idle, ctx, "builtin", "the idle session before the switch")
    busy = ss.Session(sy.port)   # sends its next query while the switch holds everyone
    _expect_where(busy, ctx, "builtin", "the busy session before the switch")

    t0 = time.monotonic()
    mark = sy.log_size()
    sw = ss.SwitchThread(sy, "pg", "external")
    ss.wait_switching(con, "pg")
    # new upstreams are opened before anyone is held (switchover.c): wait for that, so the
    # query below is the one the hold stops
    ss.wait_prepared(sy, "pg", since=mark)
    busy.send_query("SELECT current_setting('sy.cluster'), inet_server_port()")
    closes = _wait_closes({"temp table": temp, "open transaction": txn}, t0, DRAIN + 15)
    for name, (fields, secs) in sorted(closes.items()):
        check(fields is not None, "the %s session was closed without an ErrorResponse" % name)
        check(fields.get("C") == "57P01" and fields.get("S") == "FATAL",
              "the %s session got %s %s: %s, want FATAL 57P01" % (name, fields.get("S"), fields.get("C"),
                                                                    fields.get("M")))
        check("pg" in fields.get("M", "") and "external" in fields.get("M", ""),
              "the %s session's message does not name the route and target: %r" % (name, fields.get("M")))
        check(DRAIN - 0.5 <= secs <= DRAIN + 4,
              "the %s session was closed %.1fs after the switch began, want ~%ds (drain_timeout)"
              % (name, secs, DRAIN))
    row, _a, _b = sw.join_result(timeout=DRAIN + 20)
    check(row["moved"] == "2" and row["closed"] == "2",
          "SWITCH with 2 movable and 2 unmovable sessions answered %r" % row)
    # the held query ran on the new target, once the hold ended at the deadline
    rows = busy.read_result()
    t_busy = time.monotonic() - t0
    check(rows == [("external", str(ctx.external.port))], "the query held across the switch ran on %r" % rows)
    check(t_busy >= DRAIN - 0.5, "the query sent during the hold answered after %.1fs, before the deadline" % t_busy)
    # the idle session moved, kept its setting and runs on the new target
    _expect_where(idle, ctx, "external", "the idle session after the switch")
    check(idle.one("SHOW application_name") == "sw-idle", "application_name lost in the move")
    check(con.active("pg") == "external", "SHOW ROUTES after the switch: %r" % con.route("pg"))
    for s in (idle, busy):
        s.terminate()
    con.close()
    sy.stop()


# --------------------------------------------------------------------------------------------
# 5. an unreachable target: refused, unless FORCE

def test_switch_unreachable_refused_then_forced(ctx):
    # reconnect_window = 2: a new client of a target that refuses waits that long for it
    # (issue 10), then gets the 08001 this test reads
    sy = ss.start_pg(ctx, dead_route=True, globals_extra="reconnect_window = 2\n")
    con = ss.Console(sy)
    hostport = "127.0.0.1:%d" % sy.dead_port
    d = ss.Session(sy.port, db="deaddb")
    pid = d.one("SELECT pg_backend_pid()")
    _expect_where(d, ctx, "builtin", "the pg-dead session")
    p = ss.Session(sy.port)

    e = con.switch_error("pg-dead", "external")
    check(e.sqlstate == "08001", "refused SWITCH: SQLSTATE %s (%s), want 08001" % (e.sqlstate, e.message))
    check(hostport in e.message and "refused" in e.message.lower(),
          "refused SWITCH does not give the target and cause: %r" % e.message)
    check(con.active("pg-dead") == "builtin", "SHOW ROUTES after a refused switch: %r" % con.route("pg-dead"))
    check(d.one("SELECT pg_backend_pid()") == pid, "the pg-dead session changed upstream on a refused switch")
    _expect_where(d, ctx, "builtin", "the pg-dead session after the refused switch")
    _expect_where(ss.Session(sy.port, db="deaddb"), ctx, "builtin", "a new pg-dead session after the refusal")
    st = con.rows("SHOW STATS")
    check([r["switches"] for r in st if r["route"] == "pg-dead"] == ["0"], "a refused switch was counted: %r" % st)

    # FORCE: the route switches; the session that cannot reach the new target is closed with
    # an error, never silently, and a new client gets the connect error
    row, _t0, _t1 = con.switch("pg-dead", "external", "FORCE")
    check(row["precheck"] != "ok" and "FORCE" in row["precheck"], "forced SWITCH precheck column: %r" % row)
    check(row["moved"] == "0" and row["closed"] == "1", "forced SWITCH onto a dead target: %r" % row)
    check(con.active("pg-dead") == "external", "SHOW ROUTES after FORCE: %r" % con.route("pg-dead"))
    fields, _secs = d.close_error(timeout=10)
    check(fields is not None, "the pg-dead session was closed without an ErrorResponse")
    check(fields.get("C") in ("57P01", "08001", "08006"),
          "the pg-dead session got %s: %s" % (fields.get("C"), fields.get("M")))
    err, _ = harness.connect_error(sy.port, db="deaddb")
    check(err.sqlstate == "08001", "a new client of the forced route got %s: %s, want 08001" % (err.sqlstate, err.message))
    check("pg-dead" in err.message and hostport in err.message,
          "the connect error does not name route and target: %r" % err.message)
    # route pg is untouched
    check(con.active("pg") == "builtin", "route pg moved: %r" % con.route("pg"))
    _expect_where(p, ctx, "builtin", "the pg session")
    # and back: the built-in is reachable again
    row, _t0, _t1 = con.switch("pg-dead", "builtin")
    check(row["precheck"] == "ok", "switch back: %r" % row)
    _expect_where(ss.Session(sy.port, db="deaddb"), ctx, "builtin", "a new pg-dead session after switching back")
    p.terminate()
    con.close()
    sy.stop()


# --------------------------------------------------------------------------------------------
# 7. PAUSE / RESUME and pause expiry

def test_switch_pause_resume_and_expiry(ctx):
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    s = ss.Session(sy.port)
    inside = ss.Session(sy.port)
    check(s.one("SELECT 1") == "1", "SELECT 1")
    inside.query("BEGIN; SELECT 1")

    con.command("PAUSE pg")
    check(con.active("pg") == "builtin (paused)", "SHOW ROUTES while paused: %r" % con.route("pg"))
    # a transaction already open carries on to its end; the next one waits
    check(inside.query("SELECT 2") == [("2",)], "SELECT inside a transaction open when PAUSE came")
    inside.query("COMMIT")
    check(inside.status == "I", "status after COMMIT: %r" % inside.status)
    inside.send_query("SELECT 'inside-next'")
    s.send_query("SELECT inet_server_port()")
    check(not s.reply_within(1.5), "a query was answered while its route was paused")
    check(not inside.reply_within(0.1), "the next transaction after COMMIT was answered while paused")
    t0 = time.monotonic()
    con.command("RESUME pg")
    rows = s.read_result()
    check(rows == [(str(ctx.builtin.port),)], "the held query answered %r" % rows)
    check(inside.read_result() == [("inside-next",)], "the held transaction after COMMIT")
    check(time.monotonic() - t0 < 3, "RESUME took %.1fs to release the held query" % (time.monotonic() - t0))
    check(con.active("pg") == "builtin", "SHOW ROUTES after RESUME: %r" % con.route("pg"))
    check(s.one("SELECT 3") == "3", "a query after RESUME")

    # pause_max: a PAUSE nobody resumes ends by itself
    con.command("PAUSE pg")
    t0 = time.monotonic()
    s.send_query("SELECT 'expired'")
    check(not s.reply_within(ss.PAUSE_MAX - 1.0), "a query was answered while its route was paused")
    rows = s.read_result()
    secs = time.monotonic() - t0
    check(rows == [("expired",)], "the held query answered %r" % rows)
    check(ss.PAUSE_MAX - 0.5 <= secs <= ss.PAUSE_MAX + 3,
          "a PAUSE with pause_max = %d s released after %.1fs" % (ss.PAUSE_MAX, secs))
    check(con.active("pg") == "builtin", "SHOW ROUTES after the pause expired: %r" % con.route("pg"))
    check("pause_expired" in sy.log_text(), "no warning logged when the pause expired")
    # and a new PAUSE still works after an expiry
    con.command("PAUSE pg")
    s.send_query("SELECT 'again'")
    check(not s.reply_within(1.0), "second PAUSE did not hold")
    con.command("RESUME pg")
    check(s.read_result() == [("again",)], "after the second RESUME")
    for x in (s, inside):
        x.terminate()
    con.close()
    sy.stop()
