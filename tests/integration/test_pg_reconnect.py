"""
test_pg_reconnect.py - issue 10 part 2: Postgres sessions outlive an upstream restart
(reconnect_window). An idle session whose server restarts (`pg_ctl restart -m fast`, the
harness's fast stop and start) is reconnected to the same target with its state replayed:
SET values, SQL and protocol-level prepared statements, LISTEN channels; the server's FATAL
never reaches it. A session in a transaction or with a query in flight gets an error and
never a successful COMMIT. Under load only what was in flight fails, each with an error,
and every acknowledged write is there. When the server stays away past the window the idle
client's next query gets 08006, and a new connection 08001, each after the window.
"""

import os
import select
import shutil
import struct
import subprocess
import threading
import time

import psycopg2

import harness
from harness import PgError, PgWire, check

PGBIN = harness.PGBIN


def _cluster(name):
    pg = harness.PgCluster(name, hba="trust", setup=False, extra_conf="fsync = on\nsynchronous_commit = on")
    pg.sql("CREATE DATABASE sourcegraph")
    return pg


def _start(ctx, pg, window=None, args_extra=(), **kw):
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres", "PGSSLMODE": "disable"}
    args = ["switchyard.reconnect_window=%d" % window] if window is not None else []
    args += list(args_extra)
    return harness.start_default(ctx, env=env, args=args, **kw)


def _connect(sy, autocommit=True):
    c = psycopg2.connect(host="127.0.0.1", port=sy.port, dbname="sourcegraph", user="postgres",
                         connect_timeout=30)
    c.autocommit = autocommit
    return c


def _one(c, sql, args=None):
    with c.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0] if cur.description else None


def _saved(console, n):
    """Wait until n Postgres sessions have their state saved for a replay (a build without
    reconnect_window shows no replay= at all: nothing to wait for there)."""
    harness.wait_clients(console, lambda rows: sum(1 for r in rows if "replay=saved" in r["detail"]) >= n or
                         not any("replay=" in r["detail"] for r in rows),
                         "%d sessions with their state saved" % n, route="pg")


def _after_restart(sy, console, since, n):
    """Wait until the n sessions were reconnected, or are gone (a build that closes them)."""
    harness.wait_until(lambda: sy.log_text()[since:].count("event=reconnected ") >= n or
                       len([r for r in console.rows("SHOW CLIENTS") if r["route"] == "pg"]) < n,
                       timeout=30, what="%d sessions reconnected (or closed)" % n)


def _finish(sy, pg, console, problems):
    """Close the console, check switchyard lived and stop it, drop the cluster, then fail
    with every problem found."""
    console.close()
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(not problems, "\n".join(problems))


# ---- protocol-level prepared statements on a raw socket -----------------------------------

def _msg(typ, body):
    return typ.encode() + struct.pack("!I", len(body) + 4) + body


def _parse(w, name, sql):
    w.send(_msg("P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0)) + _msg("S", b""))
    _until_ready(w)


def _execute(w, name, value):
    """Bind the named statement with one text parameter, execute it, return the first column."""
    v = value.encode()
    bind = b"\0" + name.encode() + b"\0" + struct.pack("!H", 0) + struct.pack("!H", 1) + \
        struct.pack("!i", len(v)) + v + struct.pack("!H", 0)
    w.send(_msg("B", bind) + _msg("E", b"\0" + struct.pack("!I", 0)) + _msg("S", b""))
    return _until_ready(w)


def _until_ready(w):
    rows, err = [], None
    while True:
        typ, body = w.read_msg()
        if typ == "D":
            rows.append(harness.data_row(body))
        elif typ == "E":
            err = PgError(harness.parse_error_fields(body))
        elif typ == "Z":
            if err:
                raise err
            return rows


def test_restart_keeps_idle_sessions(ctx):
    """8 idle sessions holding SET, PREPARE (SQL and protocol level) and LISTEN carry on
    across a fast restart of their server, and a NOTIFY sent after it reaches each."""
    pg = _cluster("reconnect")
    sy = _start(ctx, pg)
    console = harness.Console(sy.port)
    conns = []
    for i in range(7):
        c = _connect(sy)
        with c.cursor() as cur:
            cur.execute("SET work_mem = '%dMB'" % (i + 1))
            cur.execute("SET application_name = 'app%d'" % i)
            cur.execute("PREPARE q%d(int) AS SELECT $1 * 100 + %d" % (i, i))
            cur.execute("LISTEN ch%d" % i)
        conns.append(c)
    raw = PgWire(sy.port)
    raw.startup(database="sourcegraph")
    raw.query("SET work_mem = '77MB'")
    _parse(raw, "byproto", "SELECT $1::int + 1000")
    raw.query("LISTEN chraw")
    check(_execute(raw, "byproto", "5") == [("1005",)], "the protocol-level statement before the restart")
    _saved(console, 8)
    pids_before = set(pg.backend_pids("datname = 'sourcegraph'"))

    since = len(sy.log_text())
    pg.restart()
    _after_restart(sy, console, since, 8)

    problems = []
    for i, c in enumerate(conns):
        try:
            if _one(c, "SHOW work_mem") != "%dMB" % (i + 1):
                problems.append("session %d: work_mem %s" % (i, _one(c, "SHOW work_mem")))
            if _one(c, "SHOW application_name") != "app%d" % i:
                problems.append("session %d: application_name lost" % i)
            if _one(c, "EXECUTE q%d(7)" % i) != 700 + i:
                problems.append("session %d: EXECUTE q%d gave the wrong answer" % (i, i))
        except psycopg2.Error as e:
            problems.append("session %d: %s: %s" % (i, type(e).__name__, str(e).strip()))
    try:
        if raw.query("SHOW work_mem") != [("77MB",)]:
            problems.append("raw session: work_mem lost")
        if _execute(raw, "byproto", "6") != [("1006",)]:
            problems.append("raw session: the protocol-level statement gave the wrong answer")
    except (PgError, OSError) as e:
        problems.append("raw session: %s" % e)
    pids_after = set(pg.backend_pids("datname = 'sourcegraph'"))
    if pids_after & pids_before:
        problems.append("backends survived the restart? %s" % (pids_after & pids_before))

    # A NOTIFY after the restart reaches every listener.
    for i in range(7):
        pg.sql("NOTIFY ch%d, 'after%d'" % (i, i), db="sourcegraph")
    pg.sql("NOTIFY chraw, 'afterraw'", db="sourcegraph")
    for i, c in enumerate(conns):
        deadline = time.monotonic() + 10
        got = []
        while time.monotonic() < deadline and not got:
            try:
                select.select([c], [], [], 0.5)
                c.poll()
            except (psycopg2.Error, ValueError) as e:
                got = ["error: %s" % e]
                break
            got = [n.payload for n in c.notifies if n.channel == "ch%d" % i]
        if got != ["after%d" % i]:
            problems.append("session %d: notifications after the restart %s" % (i, got))
    try:
        pid, ch, payload = raw.wait_notification(timeout=10)
        if (ch, payload) != ("chraw", "afterraw"):
            problems.append("raw session: notification %s %s" % (ch, payload))
    except Exception as e:   # noqa: BLE001 - reported as a problem
        problems.append("raw session: no notification: %s" % e)

    log = sy.log_text()
    if "57P01" in "".join(l for l in log.splitlines() if "client_error" in l):
        problems.append("a client was sent the server's 57P01")
    for c in conns:
        c.close()
    raw.close()
    _finish(sy, pg, console, problems)


def test_restart_in_transaction_never_commits(ctx):
    """A session inside BEGIN at the restart gets an error, and its COMMIT never succeeds;
    one with a query in flight gets an error too. Neither write is there afterwards, and an
    idle session beside them carries on."""
    pg = _cluster("reconnect-txn")
    pg.sql("CREATE TABLE t (id int PRIMARY KEY)", db="sourcegraph")
    sy = _start(ctx, pg)
    console = harness.Console(sy.port)
    idle = _connect(sy)
    _one(idle, "SET work_mem = '9MB'")
    intx = _connect(sy, autocommit=False)
    _one(intx, "INSERT INTO t VALUES (1)")
    busy = _connect(sy)
    bpid = _one(busy, "SELECT pg_backend_pid()")
    result = {}

    def run_busy():
        try:
            _one(busy, "INSERT INTO t SELECT 2 FROM pg_sleep(30)")
            result["busy"] = "ok"
        except psycopg2.Error as e:
            result["busy"] = e
    th = threading.Thread(target=run_busy)
    th.start()
    harness.wait_until(lambda: pg.sql("SELECT state FROM pg_stat_activity WHERE pid = %d" % bpid) == "active",
                       timeout=10, what="the query to start")
    _saved(console, 1)
    since = len(sy.log_text())
    pg.restart()
    th.join(30)
    _after_restart(sy, console, since, 1)
    committed = None
    try:
        intx.commit()
        committed = True
    except psycopg2.Error as e:
        committed = e
    problems = []
    if committed is True:
        problems.append("the COMMIT of the transaction open at the restart succeeded")
    if result.get("busy") == "ok" or "busy" not in result:
        problems.append("the query in flight at the restart: %s, want an error" % result.get("busy"))
    n = pg.sql("SELECT count(*) FROM t", db="sourcegraph")
    if n != "0":
        problems.append("rows of the failed transactions: %s" % n)
    # switchyard's 08006 (or the server's own 57P01) for each, nothing silent
    lines = [l for l in sy.log_text().splitlines() if "event=client_error" in l or "owed=0 after=fatal" in l]
    if len(lines) < 1:
        problems.append("no error logged for the sessions that could not be kept")
    try:
        if _one(idle, "SHOW work_mem") != "9MB":
            problems.append("the idle session lost its setting")
    except psycopg2.Error as e:
        problems.append("the idle session beside them: %s" % str(e).strip())
    again = _connect(sy)
    if _one(again, "SELECT 1") != 1:
        problems.append("a new session after the restart failed")
    again.close()
    console.close()
    for c in (intx, busy, idle):
        c.close()
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(not problems, "\n".join(problems))


def test_restart_under_load_acked_writes_survive(ctx):
    """8 writers (a short think time between single-row INSERTs) and a fast restart in the
    middle: every error is one of the statements in flight at the restart (at most one per
    writer), every INSERT that was acknowledged is there, and idle writers were reconnected."""
    pg = _cluster("reconnect-load")
    pg.sql("CREATE TABLE acked (writer int, n int, PRIMARY KEY (writer, n))", db="sourcegraph")
    sy = _start(ctx, pg)
    stop = threading.Event()
    acked = {w: [] for w in range(8)}
    errors = {w: [] for w in range(8)}

    def writer(w):
        c = None
        n = 0
        while not stop.is_set():
            try:
                if c is None:
                    c = _connect(sy)
                n += 1
                _one(c, "INSERT INTO acked VALUES (%s, %s)", (w, n))
                acked[w].append(n)
            except psycopg2.Error as e:
                errors[w].append((n, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
                try:
                    c.close()
                except Exception:   # noqa: BLE001
                    pass
                c = None
            time.sleep(0.02)
        if c is not None:
            c.close()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    harness.wait_until(lambda: all(len(a) >= 20 for a in acked.values()), timeout=20, what="writers running")
    since = sy.log_size()
    pg.restart()
    harness.wait_until(lambda: all(len(a) >= 20 + 50 for a in acked.values()) or
                       sum(len(e) for e in errors.values()) > 16, timeout=60, what="writers after the restart")
    stop.set()
    for t in threads:
        t.join(30)
    rows = pg.sql("SELECT writer || ':' || n FROM acked", db="sourcegraph").split()
    present = set(rows)
    problems = []
    for w in range(8):
        missing = [n for n in acked[w] if "%d:%d" % (w, n) not in present]
        if missing:
            problems.append("writer %d: acknowledged writes missing: %s" % (w, missing[:10]))
        if len(errors[w]) > 1:
            problems.append("writer %d: %d errors, want at most the one in flight: %s" % (w, len(errors[w]), errors[w]))
    nerr = sum(len(e) for e in errors.values())
    reconnected = len([l for l in sy.log_text()[since:].splitlines() if "event=reconnected " in l])
    if reconnected == 0:
        problems.append("no writer was reconnected (errors: %s)" % errors)
    print("restart under 8 writers: %d errors, %d reconnected, %d acknowledged"
          % (nerr, reconnected, sum(len(a) for a in acked.values())))
    print("errors: %s" % errors)
    print("\n".join(l for l in sy.log_text()[since:].splitlines() if "upstream_lost" in l or "client_error" in l))
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(not problems, "\n".join(problems))


test_restart_under_load_acked_writes_survive.timeout = 180


def test_restart_under_pgbench(ctx):
    """pgbench -c 8 -M prepared -R 80 -b simple-update through switchyard (a rate, and no
    single hot row, so that a client is mostly idle between transactions, as an application
    is), a fast restart in the middle:
    pgbench finishes; only clients with a transaction in flight fail (pgbench 15 has no
    retry for a lost connection and aborts the client), each with an error; the others
    carry on, their prepared statements replayed; every transaction pgbench counted has its
    pgbench_history row."""
    pgbench = shutil.which("pgbench") or os.path.join(PGBIN, "pgbench")
    pg = _cluster("reconnect-bench")
    env = harness.clean_env()
    r = subprocess.run([pgbench, "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                        "sourcegraph"], env=env, capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "pgbench -i: %s" % r.stderr[-500:])
    sy = _start(ctx, pg)
    bench = subprocess.Popen([pgbench, "-c", "8", "-j", "2", "-T", "8", "-R", "80", "-b", "simple-update",
                              "-M", "prepared", "-n",
                              "-h", "127.0.0.1",
                              "-p", str(sy.port), "-U", "postgres", "sourcegraph"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)   # pgbench has no progress we can wait on; its run is time-bound anyway
    pg.restart()
    out, err = bench.communicate(timeout=60)
    processed = [l for l in out.splitlines() if "number of transactions actually processed" in l]
    check(processed, "pgbench printed no summary: %s %s" % (out[-800:], err[-800:]))
    n = int(processed[0].split(":")[1].split("/")[0])
    hist = int(pg.sql("SELECT count(*) FROM pgbench_history", db="sourcegraph"))
    aborted = [l for l in err.splitlines() if "aborted" in l]
    print("pgbench across a restart: %d transactions, %d history rows, %d aborted-client lines, rc %d"
          % (n, hist, len(aborted), bench.returncode))
    problems = []
    if hist < n:
        problems.append("pgbench counted %d transactions but %d history rows are there" % (n, hist))
    for l in aborted:
        if "client" in l and "aborted" in l and not any(k in l for k in ("FATAL", "server closed", "connection",
                                                                           "terminating", "08006", "57P01", "backend died")):
            problems.append("a client aborted without a connection error: %s" % l)
    naborted = len([l for l in err.splitlines() if "aborted in command" in l])
    if naborted > 4:
        problems.append("%d of 8 clients aborted; at a rate of 80/s most were idle at the restart:\n%s"
                        % (naborted, "\n".join(aborted)))
    if "event=reconnected " not in sy.log_text():
        problems.append("no pgbench client was reconnected")
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(not problems, "\n".join(problems))


test_restart_under_pgbench.timeout = 180


def test_window_expiry(ctx):
    """reconnect_window = 2 and a server that stays down: the idle client's next query waits,
    then gets FATAL 08006 naming route and target after about 2 s; a new connection waits as
    long and gets 08001."""
    pg = _cluster("reconnect-expiry")
    sy = _start(ctx, pg, window=2)
    idle = PgWire(sy.port)
    idle.startup(database="sourcegraph")
    since = sy.log_size()
    pg.stop()
    sy.wait_log(r"event=upstream_lost .*reconnecting=1", since=since, what="the idle session reconnecting")
    console = harness.Console(sy.port)
    rows = harness.wait_clients(console, lambda rows: any(r["state"] == "reconnecting" for r in rows),
                                "SHOW CLIENTS to show the session reconnecting", route="pg")
    console.close()
    shown = [r for r in rows if r["state"] == "reconnecting"]
    t0 = time.monotonic()
    idle.send_query("SELECT 1")
    data, closed = idle.read_until_close(timeout=15)
    waited = time.monotonic() - t0
    errs = harness.error_messages(data)
    problems = []
    if [e.get("C") for e in errs] != ["08006"] or not closed:
        problems.append("idle client: errors %s closed=%s, want ['08006'] and the close" % (errs, closed))
    elif "route pg" not in errs[0].get("M", "") or str(pg.port) not in errs[0].get("M", ""):
        problems.append("idle client: the message names no route and target: %s" % errs[0].get("M"))
    if not shown or shown[0]["target"] != "127.0.0.1:%d" % pg.port:
        problems.append("SHOW CLIENTS while reconnecting: %s" % shown)
    if not 0.5 <= waited <= 5:
        problems.append("idle client: answered after %.1f s, want about the 2 s window" % waited)
    err, secs = harness.connect_error(sy.port, db="sourcegraph")
    if err.sqlstate != "08001" or not 1.5 <= secs <= 6:
        problems.append("new connection while down: %s after %.1f s, want 08001 after about 2 s" % (err, secs))
    sy.wait_log(r"event=reconnect_gave_up ", since=since, count=2, what="two give-ups")
    pg.start()
    again = PgWire(sy.port)
    again.startup(database="sourcegraph")
    again.query("SELECT 1")
    again.close()
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(not problems, "\n".join(problems))


def test_new_connection_waits_for_restart(ctx):
    """A client that connects while its server restarts waits and is served once it is back,
    instead of failing at once."""
    pg = _cluster("reconnect-new")
    sy = _start(ctx, pg)
    pg.stop()
    result = {}

    def connect():
        t0 = time.monotonic()
        try:
            c = _connect(sy)
            result["value"] = _one(c, "SELECT 41 + 1")
            c.close()
        except psycopg2.Error as e:
            result["value"] = e
        result["secs"] = time.monotonic() - t0
    since = len(sy.log_text())
    th = threading.Thread(target=connect)
    th.start()
    harness.wait_until(lambda: "value" in result or "new=1" in sy.log_text()[since:], timeout=10,
                       what="the new session retrying (or failing)")
    pg.start()
    th.join(40)
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(result.get("value") == 42, "a new session during the restart: %s" % result)


def test_local_set_config_is_not_a_change(ctx):
    """set_config(name, value, true) or SET LOCAL in every transaction (PostgREST's claims
    and role, row security's request settings) lasts until the transaction's end, so it
    does not change the session: no state save after each transaction (a round trip on the thread pool
    while the client waits). A set_config(..., false) does, is saved, and is there after a
    restart of the server; the transaction-local value is not."""
    pg = _cluster("reconnect-local")
    sy = _start(ctx, pg, args_extra=("switchyard.log_level=debug",))
    console = harness.Console(sy.port)
    c = _connect(sy, autocommit=False)
    since = len(sy.log_text())
    seen = []
    for i in range(20):
        with c.cursor() as cur:
            if i % 2:
                cur.execute("SELECT set_config('request.jwt.claims', %s, true)", ('{"sub":"u%d"}' % i,))
            else:
                cur.execute("SET LOCAL request.jwt.claims = %s", ('{"sub":"u%d"}' % i,))
            cur.execute("SELECT current_setting('request.jwt.claims')")
            seen.append(cur.fetchone()[0])
        c.commit()
    c.autocommit = True
    _one(c, "SELECT set_config('statement_timeout', '4321', false)")
    sy.wait_log(r"event=session_saved ", since=since, what="the session-level set_config saved")
    saves = [l for l in sy.log_text()[since:].splitlines() if "event=session_saved " in l]
    _saved(console, 1)

    restart_since = len(sy.log_text())
    pg.restart()
    _after_restart(sy, console, restart_since, 1)
    mode = _one(c, "SHOW statement_timeout")
    claims = _one(c, "SELECT current_setting('request.jwt.claims', true)")
    c.close()
    console.close()
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(seen == ['{"sub":"u%d"}' % i for i in range(20)], "the local setting inside each transaction: %s" % seen)
    check(len(saves) == 1, "state saves: %d, expected only the session-level set_config's:\n%s"
          % (len(saves), "\n".join(saves[:5])))
    check(mode == "4321ms", "the session-level setting after the restart: %r" % mode)
    check(claims in ("", None), "a transaction-local setting outlived its transaction: %r" % claims)


def test_custom_setting_not_reconnected(ctx):
    """A session that set a custom setting (SET app.tenant), which Postgres leaves out of
    pg_settings and so out of what a reconnect replays, is not reconnected without it: it
    is closed as it would be without the window (the server's FATAL, then the close), and
    SHOW CLIENTS said beforehand that its state cannot be replayed."""
    pg = _cluster("reconnect-custom")
    sy = _start(ctx, pg)
    console = harness.Console(sy.port)
    c = _connect(sy)
    _one(c, "SET app.tenant = '42'")
    check(_one(c, "SELECT current_setting('app.tenant')") == "42", "the setting before the restart")
    harness.wait_clients(console, lambda rows: any("replay=no" in r["detail"] for r in rows),
                         "the session marked as not replayable", route="pg")
    pg.restart()
    err = None
    try:
        got = _one(c, "SELECT coalesce(current_setting('app.tenant', true), '<none>')")
    except psycopg2.Error as e:
        err, got = e, None
    c.close()
    console.close()
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(isinstance(err, psycopg2.OperationalError),
          "after the restart the session went on with app.tenant = %r (error %r); want it closed" % (got, err))


def test_temp_table_without_its_tag_not_reconnected(ctx):
    """A temporary table made by a statement whose tag does not say so: CREATE TEMP TABLE
    ... AS and SELECT ... INTO TEMP answer "SELECT n", EXPLAIN ANALYZE of one "EXPLAIN". Each
    shadows a permanent table of the same name; so does one made by a plain CREATE TABLE
    AS while the session's search_path puts pg_temp first, which only the state read
    when the session is idle can tell. A reconnect cannot bring a temporary table
    back, so each session must be closed at the restart, never carried on, where its next
    query would read the permanent table instead. Before, each was reconnected as clean and
    its SELECT answered 'permanent'."""
    pg = _cluster("reconnect-temp")
    pg.sql("CREATE TABLE shadow (v text); INSERT INTO shadow VALUES ('permanent'); GRANT ALL ON shadow TO PUBLIC",
           db="sourcegraph")
    sy = _start(ctx, pg)
    console = harness.Console(sy.port)
    ways = [# the path first, and its state read once the session is idle (no longer
            # "pending"), then a table whose text names no temp schema: it lands in pg_temp
            ("SET search_path = pg_temp, public", "CREATE TABLE shadow AS SELECT 'scratch'::text AS v"),
            ("CREATE TEMP TABLE shadow AS SELECT 'scratch'::text AS v",),
            ("SELECT 'scratch'::text AS v INTO TEMP shadow",),
            ("EXPLAIN ANALYZE CREATE TEMPORARY TABLE shadow AS SELECT 'scratch'::text AS v",)]
    cs = []
    for sqls in ways:
        c = _connect(sy)
        for sql in sqls:
            if sql is not sqls[0]:
                harness.wait_clients(console, lambda rows: rows and not any("replay=pending" in r["detail"] for r in rows),
                                     "the session's state read after %r" % sqls[0], route="pg")
            with c.cursor() as cur:
                cur.execute(sql)
        check(_one(c, "SELECT v FROM shadow") == "scratch", "the temporary table after %r" % (sqls,))
        cs.append(c)
    harness.wait_clients(console, lambda rows: sum(1 for r in rows if "replay=no" in r["detail"]) >= len(ways),
                         "the %d sessions marked as not replayable" % len(ways), route="pg")
    pg.restart()
    problems = []
    for sql, c in zip(ways, cs):
        try:
            got = _one(c, "SELECT v FROM shadow")
            problems.append("after %r the session was carried on past the restart and read %r" % (sql, got))
        except psycopg2.OperationalError:
            pass
        except psycopg2.Error as e:
            problems.append("after %r: %r, want the session closed" % (sql, e))
        c.close()
    _finish(sy, pg, console, problems)


def test_window_off_closes_as_before(ctx):
    """reconnect_window = 0: the old contract - the idle session gets the server's 57P01 and
    the close, and a new connection 08001 at once."""
    pg = _cluster("reconnect-off")
    sy = _start(ctx, pg, window=0)
    idle = PgWire(sy.port)
    idle.startup(database="sourcegraph")
    pg.stop()
    data, closed = idle.read_until_close(timeout=15)
    errs = [e.get("C") for e in harness.error_messages(data)]
    err, secs = harness.connect_error(sy.port, db="sourcegraph")
    pg.start()
    sy.check_alive()
    sy.stop()
    pg.cleanup()
    check(errs == ["57P01"] and closed, "idle client with the window off: %s closed=%s" % (errs, closed))
    check(err.sqlstate == "08001" and secs < 2, "new connection with the window off: %s after %.1f s" % (err, secs))


def test_crash_keeps_idle_session(ctx):
    """The server is SIGKILLed (no FATAL, the connection just closes) and started again
    (crash recovery): an idle session with a SET and a prepared statement carries on, and
    the reconnect is counted in switchyard_route_reconnects_total."""
    import urllib.request
    pg = _cluster("reconnect-crash")
    mport = harness.free_port()
    sy = _start(ctx, pg, args_extra=["switchyard.metrics_listen=127.0.0.1:%d" % mport])
    console = harness.Console(sy.port)
    c = _connect(sy)
    _one(c, "SET work_mem = '11MB'")
    _one(c, "PREPARE crash(int) AS SELECT $1 + 1")
    _saved(console, 1)
    since = len(sy.log_text())
    pg.kill9()
    pg.start()
    _after_restart(sy, console, since, 1)
    problems = []
    try:
        if _one(c, "SHOW work_mem") != "11MB" or _one(c, "EXECUTE crash(1)") != 2:
            problems.append("the session's state was not replayed")
    except psycopg2.Error as e:
        problems.append("the idle session after the crash: %s" % str(e).strip())
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
    except OSError as e:
        text = ""
        problems.append("metrics: %s" % e)
    line = [l for l in text.splitlines() if l.startswith("switchyard_route_reconnects_total") and 'route="pg"' in l]
    if not line or not line[0].rstrip().endswith(" 1"):
        problems.append("switchyard_route_reconnects_total for pg: %s" % line)
    c.close()
    _finish(sy, pg, console, problems)


def test_idle_stream_not_held(ctx):
    """While a session is idle its server's messages are forwarded whole (a FATAL could be
    dropped): notifications small and large (a 7900-byte payload, past what could be a
    FATAL to drop) still arrive at once, one by one and in a burst."""
    sy = harness.start_default(ctx)
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    w.query("LISTEN big")
    problems = []
    for size in (1, 900, 1100, 7900):
        ctx.builtin.sql("NOTIFY big, '%s'" % ("x" * size), db="sourcegraph")
        try:
            _, ch, payload = w.wait_notification(timeout=5)
            if len(payload) != size:
                problems.append("payload of %d bytes arrived as %d" % (size, len(payload)))
        except Exception as e:   # noqa: BLE001 - reported
            problems.append("a %d-byte notification did not arrive: %s" % (size, e))
    ctx.builtin.sql("SELECT pg_notify('big', repeat('y', n)) FROM generate_series(1, 30) AS n", db="sourcegraph")
    for n in range(1, 31):
        try:
            _, ch, payload = w.wait_notification(timeout=5)
            if payload != "y" * n:
                problems.append("burst: notification %d has %d bytes" % (n, len(payload)))
                break
        except Exception as e:   # noqa: BLE001
            problems.append("burst: notification %d did not arrive: %s" % (n, e))
            break
    w.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))
