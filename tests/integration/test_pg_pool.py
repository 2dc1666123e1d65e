"""
test_pg_pool.py - issue 9, item 1: Postgres server-connection reuse (session pooling).

When a client leaves an idle session its server connection is reset (DISCARD ALL) and kept
IDLE; the next client with the same user, database and startup parameters on the same
worker gets it. The tests run one worker (reuse is per worker) against the built-in cluster
(trusted, superuser) unless they say otherwise, and wait on SHOW POOLS, never on sleeps.
"""

import os
import signal
import subprocess
import threading
import time

import harness
from harness import check, fail
import switch_support as ss

import psycopg2
import psycopg2.extensions


def _conf(ctx, port, route_extra="", globals_extra="", builtin=None):
    # pool = on is the default; said here so that a build with it off still tests pooling.
    if "pool =" not in route_extra:
        route_extra = ("pool = on\n" + route_extra).strip()
    return harness.pg_conf(port, [
        harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                         builtin=builtin or ctx.builtin.conninfo(), extra=route_extra),
    ], globals_extra="workers = 1\nlog_level = debug\n" + globals_extra)


def _start(ctx, route_extra="", globals_extra="", env=None):
    port = harness.free_port()
    conf = _conf(ctx, port, route_extra, globals_extra)
    if "metrics_listen = 127" in globals_extra:
        conf = conf.replace("metrics_listen = off\n", "", 1)
    return harness.Switchyard(conf, env=env)


def _pools(con, route="pg"):
    for r in con.rows("SHOW POOLS"):
        if r["route"] == route:
            return r
    fail("SHOW POOLS has no route %s" % route)


def _wait_idle(con, n, route="pg", timeout=10.0):
    """Wait until SHOW POOLS shows exactly n idle servers on route."""
    last = {}

    def look():
        last.update(_pools(con, route))
        return int(last["sv_idle"]) == n

    harness.wait_until(look, timeout, lambda: "sv_idle=%d on %s; SHOW POOLS: %r" % (n, route, last))


def _connect(port, **kw):
    c = psycopg2.connect(host="127.0.0.1", port=port, dbname="sourcegraph", user="postgres", **kw)
    c.autocommit = True
    return c


def _one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def _leave_one(sy, con):
    """One client that runs a query and leaves; returns its backend pid once it is pooled."""
    s = ss.Session(sy.port)
    pid = int(s.one("SELECT pg_backend_pid()"))
    s.terminate()
    _wait_idle(con, 1)
    return pid


def _pid_alive(cluster, pid):
    return pid in cluster.backend_pids()


def test_second_client_reuses_backend(ctx):
    """A second client gets the first one's backend (same pg_backend_pid), with a BackendKeyData
    that names it; SHOW POOLS and the metrics count the reuse and the reset."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        pid = int(a.one("SELECT pg_backend_pid()"))
        check(a.pid == pid, "BackendKeyData pid %d, backend %d" % (a.pid, pid))
        a_params = dict(a.params)
        a.terminate()
        _wait_idle(con, 1)
        b = ss.Session(sy.port)
        check(int(b.one("SELECT pg_backend_pid()")) == pid, "the second client got another backend")
        check(b.pid == pid, "reused: BackendKeyData pid %d, backend %d" % (b.pid, pid))
        check(b.params == a_params, "greeting differs from a fresh one:\n%r\n%r" % (a_params, b.params))
        p = _pools(con)
        check(p["pool"] == "on" and p["reuses"] == "1" and p["resets"] == "1" and p["sv_idle"] == "0",
              "SHOW POOLS after one reuse: %r" % p)
        b.terminate()
        _wait_idle(con, 1)
        # psql and psycopg2 (another application_name: another key) work the same way
        out = harness.psql_ok(sy.port, "SELECT pg_backend_pid()")
        out2 = harness.psql_ok(sy.port, "SELECT pg_backend_pid()")
        check(out == out2 and int(out) != pid, "psql: %r then %r (first backend %d)" % (out, out2, pid))
        con.close()


def test_metrics_count_pool(ctx):
    """switchyard_route_pool_* follow SHOW POOLS."""
    mport = harness.free_port()
    with _start(ctx, globals_extra="metrics_listen = 127.0.0.1:%d\n" % mport) as sy:
        con = harness.Console(sy.port)
        for _ in range(2):
            s = ss.Session(sy.port)
            s.one("SELECT 1")
            s.terminate()
            _wait_idle(con, 1)
        import urllib.request
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
        for want in ('switchyard_route_pool_idle_servers{route="pg",protocol="postgres"} 1',
                     'switchyard_route_pool_reuses_total{route="pg",protocol="postgres"} 1',
                     'switchyard_route_pool_resets_total{route="pg",protocol="postgres"} 2'):
            check(want in text, "metrics lack %r:\n%s" % (want, [l for l in text.splitlines() if "pool" in l]))
        con.close()


def test_nothing_leaks_to_next_client(ctx):
    """After a client that used SET, PREPARE, LISTEN, a temporary table, an advisory lock, SET ROLE
    and search_path leaves, the next client on the same backend sees a fresh session."""
    ctx.builtin.sql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pool_role') "
                    "THEN CREATE ROLE pool_role; END IF; END$$")
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = _connect(sy.port)
        pid = a.get_backend_pid()
        fresh = {k: a.get_parameter_status(k) for k in ("application_name", "is_superuser",
                                                         "session_authorization", "DateStyle", "TimeZone")}
        defaults = {g: _one(a, "SELECT current_setting(%s)", (g,))
                    for g in ("search_path", "statement_timeout", "work_mem")}
        with a.cursor() as cur:
            cur.execute("SET statement_timeout = '4321s'")
            cur.execute("SET work_mem = '7MB'")
            cur.execute("SET search_path = leak_schema, public")
            cur.execute("SET application_name = 'leaky'")
            cur.execute("SET DateStyle = 'SQL, DMY'")
            cur.execute("SET TimeZone = 'Asia/Tokyo'")
            cur.execute("PREPARE leak_stmt AS SELECT 42")
            cur.execute("LISTEN leak_chan")
            cur.execute("CREATE TEMP TABLE leak_tmp (x int)")
            cur.execute("SELECT pg_advisory_lock(4242)")
            cur.execute("SET ROLE pool_role")
            check(_one(a, "SELECT current_user") == "pool_role", "SET ROLE did not take")
        a.close()
        _wait_idle(con, 1)
        b = _connect(sy.port)
        check(b.get_backend_pid() == pid, "not reused: %d, first %d" % (b.get_backend_pid(), pid))
        problems = []
        seen = {k: b.get_parameter_status(k) for k in fresh}
        if seen != fresh:
            problems.append("ParameterStatus %r, fresh %r" % (seen, fresh))
        for g, v in defaults.items():
            got = _one(b, "SELECT current_setting(%s)", (g,))
            if got != v:
                problems.append("%s = %r, fresh %r" % (g, got, v))
        queries = {
            "prepared statements": "SELECT count(*) FROM pg_prepared_statements",
            "listening channels": "SELECT count(*) FROM pg_listening_channels()",
            "temporary tables": "SELECT count(*) FROM pg_class WHERE relname = 'leak_tmp'",
            "advisory locks": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        }
        for what, q in queries.items():
            n = _one(b, q)
            if n != 0:
                problems.append("%s: %d left" % (what, n))
        for q in ("SELECT current_user", "SELECT session_user"):
            if _one(b, q) != "postgres":
                problems.append("%s is %r" % (q, _one(b, q)))
        if _one(b, "SELECT current_setting('application_name')") != fresh["application_name"]:
            problems.append("application_name kept")
        # the lock is free for others, and a notification on the old channel never arrives
        other = psycopg2.connect(ctx.builtin.conninfo(dbname="sourcegraph", user="postgres"))
        other.autocommit = True
        if not _one(other, "SELECT pg_try_advisory_lock(4242)"):
            problems.append("advisory lock 4242 still held")
        with other.cursor() as cur:
            cur.execute("NOTIFY leak_chan, 'x'")
        _one(b, "SELECT 1")
        b.poll()
        if b.notifies:
            problems.append("notification delivered: %r" % b.notifies)
        other.close()
        check(not problems, "state leaked into the reused session:\n" + "\n".join(problems))
        b.close()
        con.close()


def test_cancel_on_reused_server(ctx):
    """A CancelRequest from a client on a reused server cancels its query on that backend."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = _connect(sy.port)
        pid = a.get_backend_pid()
        a.close()
        _wait_idle(con, 1)
        b = _connect(sy.port)
        check(b.get_backend_pid() == pid, "not reused")
        t = threading.Timer(0.5, b.cancel)
        t.start()
        t0 = time.monotonic()
        try:
            _one(b, "SELECT pg_sleep(30)")
            fail("pg_sleep was not cancelled")
        except psycopg2.extensions.QueryCanceledError:
            pass
        t.join()
        check(time.monotonic() - t0 < 10, "cancel took %.1fs" % (time.monotonic() - t0))
        check(_one(b, "SELECT 1") == 1, "session unusable after the cancel")
        b.close()
        con.close()


def test_pool_off_never_reuses(ctx):
    """pool = off: every client gets its own backend, as before pooling."""
    with _start(ctx, route_extra="pool = off") as sy:
        con = harness.Console(sy.port)
        pids = []
        for _ in range(3):
            s = ss.Session(sy.port)
            pids.append(int(s.one("SELECT pg_backend_pid()")))
            s.terminate()
            harness.wait_until(lambda: not _pid_alive(ctx.builtin, pids[-1]), 10, "backend %d gone" % pids[-1])
        check(len(set(pids)) == 3, "pool = off reused a backend: %r" % pids)
        p = _pools(con)
        check(p["pool"] == "off" and p["sv_idle"] == "0" and p["reuses"] == "0", "SHOW POOLS: %r" % p)
        con.close()


def test_idle_timeout_closes(ctx):
    """server_idle_timeout closes an idle server: its backend goes away."""
    with _start(ctx, globals_extra="server_idle_timeout = 1\n") as sy:
        con = harness.Console(sy.port)
        pid = _leave_one(sy, con)
        _wait_idle(con, 0, timeout=10)
        harness.wait_until(lambda: not _pid_alive(ctx.builtin, pid), 10, "backend %d gone" % pid)
        sy.wait_log("reason=server_idle_timeout")
        con.close()


def test_lifetime_and_pool_size(ctx):
    """pool_size bounds the idle servers per key; server_lifetime retires an old server."""
    with _start(ctx, globals_extra="pool_size = 1\nserver_lifetime = 2\n") as sy:
        con = harness.Console(sy.port)
        a, b = ss.Session(sy.port), ss.Session(sy.port)
        pa, pb = int(a.one("SELECT pg_backend_pid()")), int(b.one("SELECT pg_backend_pid()"))
        a.terminate()
        _wait_idle(con, 1)
        b.terminate()
        harness.wait_until(lambda: not _pid_alive(ctx.builtin, pb), 10, "second backend closed (pool full)")
        _wait_idle(con, 1)
        check(_pid_alive(ctx.builtin, pa), "the kept backend is gone")
        harness.wait_until(lambda: not _pid_alive(ctx.builtin, pa), 10, "kept backend retired (lifetime)")
        _wait_idle(con, 0)
        sy.wait_log("reason=server_lifetime")
        con.close()


def test_switch_drains_pool(ctx):
    """A switch closes the old target's idle servers: SHOW POOLS shows 0 when SWITCH answers, and
    their backends go away; the next client is served by the new target."""
    sy = ss.start_pg(ctx, route_extra="pool = on")
    con = ss.Console(sy)
    pids = []
    for _ in range(4):   # two workers: a server kept on each
        s = ss.Session(sy.port)
        pids.append(int(s.one("SELECT pg_backend_pid()")))
        s.terminate()
        harness.wait_until(lambda: int(_pools(con)["resets"]) >= len(pids) or len(set(pids)) < len(pids),
                           10, "reset %d" % len(pids))
    check(int(_pools(con)["sv_idle"]) >= 1, "nothing pooled: %r" % _pools(con))
    con.switch("pg", "external")
    p = _pools(con)
    check(p["sv_idle"] == "0" and p["target"] == "external", "after SWITCH: %r" % p)
    for pid in set(pids):
        harness.wait_until(lambda: not _pid_alive(ctx.builtin, pid), 10, "old backend %d gone" % pid)
    s = ss.Session(sy.port)
    check(ss.where(s)[0] == "external", "new client not on external")
    s.terminate()
    con.close()
    sy.stop()


def test_reload_retarget_drains_pool(ctx):
    """A RELOAD that changes the active target's settings closes its idle servers."""
    port = harness.free_port()
    sy = harness.Switchyard(_conf(ctx, port))
    con = harness.Console(sy.port)
    pid = _leave_one(sy, con)
    with open(sy.conf_path, "w") as f:
        f.write(_conf(ctx, port, builtin=ctx.builtin.conninfo(application_name="retargeted")))
    con.rows("RELOAD")
    _wait_idle(con, 0)
    harness.wait_until(lambda: not _pid_alive(ctx.builtin, pid), 10, "old backend %d gone" % pid)
    s = ss.Session(sy.port)
    check(int(s.one("SELECT pg_backend_pid()")) != pid, "stale server reused after RELOAD")
    s.terminate()
    con.close()
    sy.stop()


def test_killed_idle_server_not_handed_out(ctx):
    """A server whose backend is terminated while IDLE is dropped; the next client works."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        pid = _leave_one(sy, con)
        ctx.builtin.sql("SELECT pg_terminate_backend(%d)" % pid)
        _wait_idle(con, 0)
        s = ss.Session(sy.port)
        check(int(s.one("SELECT pg_backend_pid()")) != pid, "got the dead backend")
        s.terminate()
        sy.wait_log("reason=closed while idle")
        con.close()


def test_check_on_reuse_skips_hung_server(ctx):
    """server_check_delay = 0: every reuse is checked first; a backend that does not answer the
    check (stopped) is closed after the connect timeout and the client gets a fresh one."""
    with _start(ctx, globals_extra="server_check_delay = 0\nconnect_timeout = 4\n") as sy:
        con = harness.Console(sy.port)
        pid = _leave_one(sy, con)
        check(_leave_one(sy, con) == pid, "checked reuse did not reuse")
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            s = ss.Session(sy.port)
            got = int(s.one("SELECT pg_backend_pid()"))
            check(got != pid, "the stopped backend was handed out")
            # the check's 4 s, then a fresh connect (its own 4 s at most)
            check(time.monotonic() - t0 < 9, "the check took %.1fs" % (time.monotonic() - t0))
            s.terminate()
            sy.wait_log("event=server_check_failed")
        finally:
            os.kill(pid, signal.SIGCONT)
        con.close()


def test_pgbench_connect_per_transaction(ctx):
    """pgbench -C (a new connection per transaction) through switchyard: every transaction
    succeeds, and the connections reuse pooled servers."""
    ss.pgbench_init(ctx)
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        r = harness.run([harness.PGBENCH, "-n", "-S", "-C", "-c", "4", "-t", "50", "-h", "127.0.0.1",
                         "-p", str(sy.port), "-U", "postgres", "sourcegraph"],
                        env=harness.clean_env(), timeout=120)
        check(r.returncode == 0, "pgbench failed: %s" % (r.stderr[-2000:]))
        check("number of transactions actually processed: 200" in r.stdout, r.stdout[-2000:])
        p = _pools(con)
        # a client that connects while the server it would reuse still resets gets a new one
        check(int(p["reuses"]) >= 150, "few reuses under pgbench -C: %r" % p)
        con.close()


def test_client_waits_for_resetting_server(ctx):
    """A client that arrives while the only server of its key is still being reset waits for
    it instead of connecting (a reset is one round trip); a reset that does not finish within
    the connect timeout is given up, and the waiting client connects."""
    with _start(ctx, globals_extra="connect_timeout = 4\n") as sy:
        con = harness.Console(sy.port)
        for resume in (True, False):
            a = ss.Session(sy.port)
            pid = int(a.one("SELECT pg_backend_pid()"))
            os.kill(pid, signal.SIGSTOP)   # the DISCARD ALL will wait
            try:
                since = sy.log_size()
                a.terminate()
                result = {}

                def second():
                    b = ss.Session(sy.port)
                    result["pid"] = int(b.one("SELECT pg_backend_pid()"))
                    b.terminate()

                t = threading.Thread(target=second)
                t.start()
                sy.wait_log("event=server_wait", since=since)
                if resume:
                    os.kill(pid, signal.SIGCONT)
                t.join(20)
                check(not t.is_alive(), "the waiting client never got a session")
            finally:
                os.kill(pid, signal.SIGCONT)
            if resume:
                check(result.get("pid") == pid, "waited, but got backend %r, not %d" % (result.get("pid"), pid))
            else:
                check(result.get("pid") not in (None, pid), "got %r after the reset timed out" % result.get("pid"))
                sy.wait_log("op=reset", since=since)
            _wait_idle(con, 1)
            # the first round's backend stays pooled; the next round starts from it
        con.close()


def test_reuse_over_tls_and_scram(ctx):
    """The external target (TLS verify-full, SCRAM as scram_user): the reset and the reuse run
    over libpq's TLS session, and the reused session is still the TLS one, settings fresh."""
    with _start(ctx, env=harness.external_env(ctx)) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        pid = int(a.one("SELECT pg_backend_pid()"))
        a.query("SET work_mem = '9MB'")
        a.query("SET application_name = 'tls-leak'")
        a.terminate()
        _wait_idle(con, 1)
        b = ss.Session(sy.port)
        rows = b.query("SELECT pg_backend_pid(), current_user, current_setting('work_mem'), "
                       "current_setting('application_name'), "
                       "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")
        check([tuple(r) for r in rows] == [(str(pid), "scram_user", "4MB", "", "t")], "reused TLS session: %r (first pid %d)" % (rows, pid))
        check(b.params.get("application_name") == "", "greeting application_name %r" % b.params.get("application_name"))
        b.terminate()
        _wait_idle(con, 1)
        con.close()
