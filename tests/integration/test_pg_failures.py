"""
test_pg_failures.py - issue 2, case 6: a target that is down, slow or dies gives the client
the documented error in time, and other sessions are untouched. Only loopback addresses.
These pin the contract with reconnect_window = 0 (08001 at once, an idle session closed with
its server); the reconnect itself is test_pg_reconnect's.
"""

import os
import re
import socket
import threading
import time

import harness
from harness import PgError, PgWire, check, psql, psql_ok


NO_RECONNECT = ["switchyard.reconnect_window=0"]


def _names(err, route, hostport):
    msg = err.message + " " + err.fields.get("D", "")
    problems = []
    if not re.search(r"\b%s\b" % re.escape(route), msg):
        problems.append("message does not name route %s: %r" % (route, msg))
    if hostport not in msg:
        problems.append("message does not name %s: %r" % (hostport, msg))
    return problems


def test_closed_port_08001_fast(ctx):
    port = harness.closed_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres", "PGSSLMODE": "disable"}
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    err, secs = harness.connect_error(sy.port, db="sourcegraph")
    problems = []
    if err.sqlstate != "08001":
        problems.append("SQLSTATE %s, want 08001" % err.sqlstate)
    if secs > 2:
        problems.append("took %.2fs" % secs)
    problems += _names(err, "pg", "127.0.0.1:%d" % port)
    if "Connection refused" not in err.message + err.fields.get("D", ""):
        problems.append("libpq's cause (Connection refused) missing: %r" % err.message)
    r = psql(sy.port, "SELECT 1")
    if r.returncode == 0 or "Connection refused" not in r.stderr:
        problems.append("psql: %r" % r.stderr)
    # the other routes are fine
    if psql_ok(sy.port, "SELECT current_setting('sy.cluster')", db="sourcegraph-codeintel") != "builtin":
        problems.append("codeintel route broken")
    sy.stop()
    check(not problems, "\n".join(problems))


def test_silent_target_connect_timeout(ctx):
    """A loopback listener that accepts and never answers, PGCONNECT_TIMEOUT=2: an error
    within 3 s."""
    silent = harness.SilentListener()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(silent.port), "PGUSER": "postgres", "PGCONNECT_TIMEOUT": "2"}
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    problems = []
    err, secs = harness.connect_error(sy.port, db="sourcegraph", timeout=15)
    if err.sqlstate not in ("08001", "08006"):
        problems.append("SQLSTATE %s, want 08001 or 08006" % err.sqlstate)
    if secs > 3.0:
        problems.append("error after %.2fs, want within 3 s" % secs)
    if secs < 1.5:
        problems.append("error after %.2fs: earlier than PGCONNECT_TIMEOUT, so not the timeout" % secs)
    problems += _names(err, "pg", "127.0.0.1:%d" % silent.port)
    check(silent.received, "the silent listener never got a byte: was it reached at all?")
    # the loop is not blocked meanwhile: a concurrent session on the built-in route works
    mark = sy.log_size()
    t = threading.Thread(target=lambda: harness.connect_error(sy.port, db="sourcegraph", timeout=15))
    t.start()
    sy.wait_log(r"event=connect conn=\d+ route=pg ", since=mark,
                what="the second session's connect to the silent target to begin (event=connect route=pg)")
    t0 = time.monotonic()
    out = psql_ok(sy.port, "SELECT 'other'", db="sourcegraph-codeintel")
    if out != "other" or time.monotonic() - t0 > 1.5:
        problems.append("builtin route while another connect waits: %r in %.2fs" % (out, time.monotonic() - t0))
    t.join()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_default_connect_timeout(ctx):
    """Without PGCONNECT_TIMEOUT the error still comes, within 10 s + 1 s."""
    silent = harness.SilentListener()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(silent.port), "PGUSER": "postgres"}
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    err, secs = harness.connect_error(sy.port, db="sourcegraph", timeout=30)
    sy.stop()
    check(err.sqlstate in ("08001", "08006"), "SQLSTATE %s" % err.sqlstate)
    check(secs <= 11.0, "error after %.1fs, want within 11 s" % secs)


test_default_connect_timeout.timeout = 60


def _upstream_dies(ctx, how):
    doomed = harness.PgCluster("doomed-" + how, hba="trust", setup=False)
    doomed.sql('CREATE DATABASE sourcegraph')
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(doomed.port), "PGUSER": "postgres", "PGSSLMODE": "disable"}
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    hostport = "127.0.0.1:%d" % doomed.port
    victim = PgWire(sy.port)
    victim.startup(database="sourcegraph")
    idle = PgWire(sy.port)
    idle.startup(database="sourcegraph")
    bystander = PgWire(sy.port)
    bystander.startup(database="sourcegraph-codeintel")
    victim.send_query("SELECT pg_sleep(30)")
    deadline = time.monotonic() + 10
    while doomed.sql("SELECT state FROM pg_stat_activity WHERE pid = %d" % victim.pid) != "active":
        check(time.monotonic() < deadline, "query did not start upstream")
        time.sleep(0.1)
    t0 = time.monotonic()
    if how == "immediate":
        doomed.kill()
    else:
        doomed.kill9()
    results = {}
    for name, w in (("victim", victim), ("idle", idle)):
        try:
            if name == "victim":
                w.read_result()
            else:
                # whatever comes unprompted: notices, then an error, then the close
                while True:
                    typ, body = w.read_msg()
                    if typ == "E":
                        raise PgError(harness.parse_error_fields(body))
            results[name] = ("no error", None)
        except PgError as e:
            data, closed = w.read_until_close(timeout=5)
            results[name] = (e, closed)
        except harness.ConnectionClosed as e:
            notes = [(n.get("C"), n.get("M")) for n in w.notices]
            results[name] = ("closed without an ErrorResponse (%s; notices before: %s)" % (e, notes), True)
        except socket.timeout:
            results[name] = ("no answer within 30 s", False)
    secs = time.monotonic() - t0
    problems = []
    # The victim was owed a reply: only switchyard can say the server is gone (a 57P01 from
    # the server itself is accepted too).
    e, closed = results["victim"]
    allowed = ("08006",) if how == "kill9" else ("08006", "57P01")
    if not isinstance(e, PgError):
        problems.append("victim: %s" % e)
    else:
        if e.sqlstate not in allowed:
            problems.append("victim: SQLSTATE %s, want %s (%s)" % (e.sqlstate, allowed, e.message))
        if e.sqlstate == "08006":
            problems += ["victim: %s" % p for p in _names(e, "pg", hostport)]
        if not closed:
            problems.append("victim: connection not closed after the error")
    # The idle session was owed nothing: it is closed as a direct connection is, without an
    # error of switchyard's (issue 12 A: it would be read as the answer to the next query).
    e, closed = results["idle"]
    if isinstance(e, PgError):
        problems.append("idle: an ErrorResponse %s (%s), want a close without one" % (e.sqlstate, e.message))
    elif not closed:
        problems.append("idle: %s" % e)
    if secs > 10:
        problems.append("errors took %.1fs" % secs)
    # other sessions are untouched
    try:
        if bystander.query("SELECT current_setting('sy.cluster')") != [("builtin",)]:
            problems.append("bystander session: wrong answer")
    except Exception as e:
        problems.append("bystander session on another route broke: %s" % e)
    if psql_ok(sy.port, "SELECT 'new'", db="sourcegraph-codeinsights") != "new":
        problems.append("new session on another route")
    err, secs = harness.connect_error(sy.port, db="sourcegraph")
    if err.sqlstate != "08001" or secs > 2:
        problems.append("new session to the dead target: %s in %.1fs" % (err, secs))
    sy.check_alive()
    for w in (victim, idle, bystander):
        w.close()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_upstream_immediate_shutdown_mid_query(ctx):
    """pg_ctl stop -m immediate on the target: Postgres 15 only sends its clients a WARNING
    notice (57P01) before the backend exits, so the client needs switchyard's 08006 (a 57P01
    error is accepted too), and the connection closes."""
    _upstream_dies(ctx, "immediate")


test_upstream_immediate_shutdown_mid_query.timeout = 90


def test_upstream_killed_mid_query(ctx):
    """SIGKILL of the postmaster and every backend: the TCP connection just closes, so only
    switchyard can tell the client: 08006 naming the route and target."""
    _upstream_dies(ctx, "kill9")


test_upstream_killed_mid_query.timeout = 90


def test_upstream_too_many_connections(ctx):
    """The target refuses with "sorry, too many clients already": the client gets 53300 with
    the route named, and the sessions already open keep working."""
    small = harness.PgCluster("small", hba="trust", setup=False,
                              extra_conf="max_connections = 4\nsuperuser_reserved_connections = 0\n")
    small.sql("CREATE ROLE app LOGIN")
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(small.port), "PGUSER": "app", "PGDATABASE": "postgres",
           "PGSSLMODE": "disable"}
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    opened, err = [], None
    try:
        for _ in range(12):
            w = PgWire(sy.port)
            try:
                w.startup(database="sourcegraph")
                opened.append(w)
            except PgError as e:
                err = e
                w.close()
                break
        check(err is not None, "12 sessions opened on a target with max_connections = 4")
        check(err.sqlstate == "53300", "SQLSTATE %s, want 53300: %s" % (err.sqlstate, err.message))
        check("too many clients" in err.message + err.fields.get("D", ""), "cause missing: %s" % err.message)
        check(not _names(err, "pg", "127.0.0.1:%d" % small.port), "; ".join(_names(err, "pg", "127.0.0.1:%d" % small.port)))
        check(opened, "not a single session opened")
        for w in opened:
            check(w.query("SELECT 1") == [("1",)], "an open session broke when another was refused")
    finally:
        for w in opened:
            w.close()
    sy.stop()


def test_sigterm_exits_promptly(ctx):
    """SIGTERM with an idle session, a session in a query and a connect stuck on a silent
    target: exit 0 within drain_timeout (2 s in test configs) plus a little, every client told
    with an ErrorResponse rather than dropped. A container runtime kills what lingers."""
    silent = harness.SilentListener()
    env = harness.prefixed("CODEINSIGHTS_", {"PGHOST": "127.0.0.1", "PGPORT": str(silent.port),
                                             "PGUSER": "postgres", "PGCONNECT_TIMEOUT": "30"})
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    idle = PgWire(sy.port)
    idle.startup(database="sourcegraph")
    busy = PgWire(sy.port)
    busy.startup(database="sourcegraph-codeintel")
    busy.send_query("SELECT pg_sleep(30)")
    stuck = PgWire(sy.port)
    stuck.send(harness.startup_packet({"user": "postgres", "database": "sourcegraph-codeinsights"}))

    def in_place(rows):
        by = {r["route"]: r for r in rows}
        return (by.get("pg", {}).get("state") == "relay"
                and "inflight=1" in by.get("pg-codeintel", {}).get("detail", "")
                and by.get("pg-codeinsights", {}).get("state") == "connecting")

    con = harness.Console(sy.port)
    harness.wait_clients(con, in_place, "an idle session, one in a query and one connecting to the silent target")
    con.close()
    t0 = time.monotonic()
    sy.proc.send_signal(15)
    try:
        rc = sy.proc.wait(timeout=15)
    except Exception:
        rc = None
    secs = time.monotonic() - t0
    problems = []
    if rc is None:
        problems.append("still running 15 s after SIGTERM")
    elif secs > 4.0:
        problems.append("exited %.1fs after SIGTERM (drain_timeout = 2)" % secs)
    for name, w in (("idle", idle), ("busy", busy), ("connecting", stuck)):
        data, closed = w.read_until_close(timeout=2)
        if not closed:
            problems.append("%s client not closed" % name)
        if not harness.error_messages(data):
            problems.append("%s client closed without an ErrorResponse: %r" % (name, data[-200:]))
        w.close()
    problems += sy.exited_problems()   # exit status, sanitizer report
    check(not problems, "\n".join(problems))


test_sigterm_exits_promptly.timeout = 60


def test_client_leaves_while_connecting(ctx):
    """Clients that give up while switchyard is still connecting upstream (a silent target):
    the upstream attempts are dropped and nothing is left open."""
    silent = harness.SilentListener()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(silent.port), "PGUSER": "postgres", "PGCONNECT_TIMEOUT": "3"}
    sy = harness.start_default(ctx, env=env, args=NO_RECONNECT)
    # settled after its start: the first health probes of the built-in routes are over
    for route in ("pg-codeintel", "pg-codeinsights"):
        sy.wait_log(r"event=health route=%s target=builtin healthy=1" % route)
    fd0 = len(os.listdir("/proc/%d/fd" % sy.pid))
    for _ in range(20):
        mark = sy.log_size()
        w = PgWire(sy.port)
        w.send(harness.startup_packet({"user": "postgres", "database": "sourcegraph"}))
        sy.wait_log(r"event=connect conn=\d+ route=pg ", since=mark,
                    what="switchyard to begin connecting upstream for the client about to leave")
        w.close()
    deadline = time.monotonic() + 8   # the attempts end at the latest with PGCONNECT_TIMEOUT
    while True:
        fd1 = len(os.listdir("/proc/%d/fd" % sy.pid))
        if fd1 <= fd0 + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(fd1 <= fd0 + 1, "switchyard holds %d descriptors, %d before the abandoned connects" % (fd1, fd0))
    check(psql_ok(sy.port, "SELECT 'ok'", db="sourcegraph-codeintel") == "ok", "serving afterwards")
    sy.check_alive()
    sy.stop()
