"""
test_pg_release.py - issue 9, item 3: an idle Postgres client gives its server connection back
(server_release_delay), as RDS Proxy multiplexes, and is pinned to it when its session holds
state on the server.

A client idle outside a transaction for server_release_delay (1 s here) whose server says it
holds no session state is RELEASED: its server is reset and kept IDLE in the pool, and the
client stays connected with none. Its next message takes a server again (the pool's, else a
new connection) before anything is relayed: no second greeting, the same cancel key. SET,
set_config, PREPARE, a protocol-level named statement, LISTEN, a temporary table, an advisory
lock, a WITH HOLD cursor and SET ROLE each pin the client to its server, with the state intact.
The tests run one worker (the pool is per worker) and wait on SHOW CLIENTS / SHOW POOLS.
"""

import os
import re
import signal
import struct
import time

import psycopg2

import harness
from harness import PgError, PgWire, check
import switch_support as ss
from test_pg_reconnect import _msg, _until_ready


def _start(ctx, delay=1, globals_extra="", builtin=None, env=None):
    port = harness.free_port()
    conf = harness.pg_conf(port, [
        harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                         builtin=builtin or ctx.builtin.conninfo(), extra="pool = on"),
    ], globals_extra="workers = 1\nlog_level = debug\nserver_release_delay = %d\n" % delay + globals_extra)
    return harness.Switchyard(conf, env=env)


def _pools(con):
    return [r for r in con.rows("SHOW POOLS") if r["route"] == "pg"][0]


def _wait_pools(con, pred, what, timeout=15.0):
    last = {}

    def look():
        last.update(_pools(con))
        return pred(last)

    harness.wait_until(look, timeout, lambda: "%s; SHOW POOLS: %r" % (what, last))


def _client(con, pid_or_port):
    for r in con.rows("SHOW CLIENTS"):
        if r["route"] == "pg" and r["id"] == str(pid_or_port):
            return r
    return None


def _wait_state(con, n, state, timeout=15.0):
    return harness.wait_clients(con, lambda rows: sum(1 for r in rows if r["state"] == state) >= n,
                                "%d clients %s" % (n, state), timeout=timeout, route="pg")


def test_idle_client_releases_and_retakes(ctx):
    """A clean idle client is released (no server in SHOW CLIENTS, its backend IDLE in the
    pool); a second client gets that backend; the first one's next query takes a new server,
    without a second greeting, and gets correct results; SHOW POOLS counts it all."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        pid = int(a.one("SELECT pg_backend_pid()"))
        rows = _wait_state(con, 1, "released")
        mine = [r for r in rows if r["state"] == "released"][0]
        check(mine["target"] == "", "a released client shows a target: %r" % mine)
        _wait_pools(con, lambda p: p["sv_idle"] == "1" and p["releases"] == "1", "the server pooled")
        servers = [r for r in con.rows("SHOW SERVERS") if r["route"] == "pg"]
        check(len(servers) == 1 and servers[0]["client_id"] == "" and servers[0]["state"] == "idle",
              "SHOW SERVERS after the release: %r" % servers)
        check(pid in ctx.builtin.backend_pids(), "the released backend was closed")
        # a second client gets the pooled backend
        b = ss.Session(sy.port)
        check(int(b.one("SELECT pg_backend_pid()")) == pid, "the second client did not get the pooled backend")
        # the first client's next query: a server again (a new one: b has the pooled one)
        order = len(a.order)
        rows = a.query("SELECT pg_backend_pid(), 6 * 7, current_user, current_database()")
        check(list(rows[0][1:]) == ["42", "postgres", "sourcegraph"], "after the re-take: %r" % rows)
        check(int(rows[0][0]) != pid, "a and b share backend %d" % pid)
        check(len(a.order) == order, "a second greeting: %r" % a.order[order:])
        check(a.status == "I", "status after the re-take: %r" % a.status)
        p = _pools(con)
        check(p["retakes"] == "1" and p["pins"] == "0", "SHOW POOLS after the re-take: %r" % p)
        # released again, and again taken from the pool this time (b's is busy; a's went back)
        _wait_pools(con, lambda p: int(p["releases"]) >= 3, "both released")
        for _ in range(3):
            check(a.one("SELECT 1") == "1" and b.one("SELECT 2") == "2", "queries after the releases")
        _wait_pools(con, lambda p: int(p["retakes"]) >= 3 and int(p["reuses"]) >= 2, "re-takes from the pool")
        a.terminate()
        b.terminate()
        con.close()
        sy.check_alive()


def test_state_pins_client(ctx):
    """Each kind of session state pins its client to its server: the state is intact after the
    delay, on the same backend, and SHOW CLIENTS says pin=...; a transaction left open is
    never released; a clean client beside them is."""
    ctx.builtin.sql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'release_role') "
                    "THEN CREATE ROLE release_role; END IF; END$$")
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        setups = {
            "set": ["SET work_mem = '7MB'"],
            "set_config": ["SELECT set_config('statement_timeout', '77s', false)"],
            "prepare": ["PREPARE q(int) AS SELECT $1 + 1"],
            "listen": ["LISTEN release_chan"],
            "temp": ["CREATE TEMP TABLE t_rel(x int)", "INSERT INTO t_rel VALUES (5)"],
            "advisory": ["SELECT pg_advisory_lock(4242)"],
            "hold": ["BEGIN", "DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)", "COMMIT"],
            "role": ["SET ROLE release_role"],
            "txn": ["BEGIN", "SELECT 1"],
        }
        sess, pids = {}, {}
        for k, sqls in setups.items():
            s = ss.Session(sy.port)
            pids[k] = int(s.one("SELECT pg_backend_pid()"))
            for q in sqls:
                s.query(q)
            sess[k] = s
        # a protocol-level named statement (Parse, no SQL PREPARE)
        w = ss.Session(sy.port)
        pids["parse"] = int(w.one("SELECT pg_backend_pid()"))
        w.send(_msg("P", b"st1\0SELECT $1::int * 3\0" + struct.pack("!H", 0)) + _msg("S", b""))
        _until_ready(w)
        sess["parse"] = w
        clean = ss.Session(sy.port)
        clean.one("SELECT 1")
        pinned = [k for k in sess if k != "txn"]
        _wait_pools(con, lambda p: int(p["pins"]) >= len(pinned) and int(p["releases"]) >= 1,
                    "%d pins and the clean client released" % len(pinned))
        rows = con.rows("SHOW CLIENTS")
        p = _pools(con)
        check(p["pins"] == str(len(pinned)) and p["releases"] == "1", "SHOW POOLS: %r" % p)
        shown = [r for r in rows if r["route"] == "pg" and "pin=" in r["detail"]]
        check(len(shown) == len(pinned) and all(r["state"] == "relay" and r["target"] for r in shown),
              "SHOW CLIENTS of the pinned: %r" % rows)
        # one more sweep for the transaction's client (it went idle in a transaction first)
        _wait_pools(con, lambda p: int(p["releases"]) >= 1, "a sweep")
        txn = [r for r in rows if r["route"] == "pg" and "txn=T" in r["detail"]]
        check(len(txn) == 1 and txn[0]["state"] == "relay" and "pin=" not in txn[0]["detail"],
              "the open transaction: %r" % txn)
        for k, s in sess.items():
            if k == "parse":
                continue
            check(int(s.one("SELECT pg_backend_pid()")) == pids[k], "%s: another backend" % k)
        s = sess
        check(s["set"].one("SHOW work_mem") == "7MB", "SET lost")
        check(s["set_config"].one("SHOW statement_timeout") == "77s", "set_config lost")
        check(s["prepare"].one("EXECUTE q(41)") == "42", "PREPARE lost")
        ctx.builtin.sql("NOTIFY release_chan, 'hi'", db="sourcegraph")
        n = s["listen"].wait_notification()
        check(n[1:] == ("release_chan", "hi"), "LISTEN lost: %r" % (n,))
        check(s["temp"].one("SELECT x FROM t_rel") == "5", "temp table lost")
        check(s["advisory"].one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND pid = pg_backend_pid()") == "1", "advisory lock lost")
        check(s["hold"].one("FETCH 1 FROM c") == "1", "WITH HOLD cursor lost")
        check(s["role"].one("SELECT current_user") == "release_role", "SET ROLE lost")
        check(s["txn"].status == "T" and s["txn"].one("SELECT 1") == "1", "the transaction")
        s["txn"].query("COMMIT")
        bind = b"\0st1\0" + struct.pack("!H", 0) + struct.pack("!H", 1) + struct.pack("!i", 2) + b"14" + \
            struct.pack("!H", 0)
        w.send(_msg("B", bind) + _msg("E", b"\0" + struct.pack("!I", 0)) + _msg("S", b""))
        check([list(r) for r in _until_ready(w)] == [["42"]], "named statement lost")
        check(int(w.one("SELECT pg_backend_pid()")) == pids["parse"], "parse: another backend")
        for x in list(sess.values()) + [clean]:
            x.terminate()
        con.close()
        sy.check_alive()


def test_custom_setting_pins_client(ctx):
    """A custom setting (SET app.tenant, set_config('app.region', ..., false)) is not in
    pg_settings, so the release check cannot see it: the client is pinned for having set
    it, and keeps it on the same backend; one that set it with SET LOCAL is released."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        tenant = ss.Session(sy.port)
        tenant.query("SET app.tenant = '42'")
        region = ss.Session(sy.port)
        region.query("SELECT set_config('app.region', 'eu', false)")
        local = ss.Session(sy.port)
        local.query("BEGIN")
        local.query("SET LOCAL app.tenant = '7'")
        local.query("COMMIT")
        pids = [int(x.one("SELECT pg_backend_pid()")) for x in (tenant, region)]
        _wait_pools(con, lambda p: int(p["pins"]) >= 2 and int(p["releases"]) >= 1,
                    "two pins and the SET LOCAL client released")
        rows = [r for r in con.rows("SHOW CLIENTS") if r["route"] == "pg"]
        pinned = [r for r in rows if "pin=custom_setting" in r["detail"]]
        check(len(pinned) == 2, "SHOW CLIENTS: %r" % rows)
        check(tenant.one("SELECT current_setting('app.tenant', true)") == "42", "SET app.tenant lost")
        check(region.one("SELECT current_setting('app.region', true)") == "eu", "set_config of app.region lost")
        check([int(x.one("SELECT pg_backend_pid()")) for x in (tenant, region)] == pids, "another backend")
        check(local.one("SELECT coalesce(current_setting('app.tenant', true), '')") == "",
              "a SET LOCAL outlived its transaction")
        for x in (tenant, region, local):
            x.terminate()
        con.close()
        sy.check_alive()


def test_cancel_after_retake(ctx):
    """A CancelRequest with a released client's key, after it took another backend, cancels
    that client's query and not the one now running on its first backend; released with no
    query, the key cancels nothing."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        first = int(a.one("SELECT pg_backend_pid()"))
        _wait_state(con, 1, "released")
        harness.cancel_request(sy.port, a.pid, a.secret)   # nothing to cancel
        b = ss.Session(sy.port)
        check(int(b.one("SELECT pg_backend_pid()")) == first, "b did not get a's first backend")
        b.send_query("SELECT pg_sleep(3), 'b done'")
        a.send_query("SELECT pg_sleep(30)")
        harness.wait_until(lambda: len(ctx.builtin.backend_pids("query = 'SELECT pg_sleep(30)'")) == 1, 15,
                           "a's query running")
        t0 = time.monotonic()
        harness.cancel_request(sy.port, a.pid, a.secret)
        try:
            a.read_result()
            check(False, "a's query was not cancelled")
        except PgError as e:
            check(e.sqlstate == "57014", "a: %s" % e)
        check(time.monotonic() - t0 < 5, "the cancel took %.1f s" % (time.monotonic() - t0))
        check([list(r) for r in b.read_result()] == [["", "b done"]], "b's query on a's first backend was hit")
        check(a.one("SELECT 1") == "1", "a after the cancel")
        a.terminate()
        b.terminate()
        con.close()


def test_send_while_checking(ctx):
    """A client that sends while its server is being asked whether it holds state gets its
    answer, on the same backend: it is not released then."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        pid = int(a.one("SELECT pg_backend_pid()"))
        os.kill(pid, signal.SIGSTOP)   # the check's query will wait for the backend
        try:
            harness.wait_until(lambda: any(r["state"] == "release_check" for r in con.rows("SHOW SERVERS")
                                           if r["route"] == "pg"), 15, "the release check running")
            a.send_query("SELECT pg_backend_pid(), 'mine'")
            time.sleep(0.2)   # let the bytes reach switchyard's socket buffer (nothing to sync on)
        finally:
            os.kill(pid, signal.SIGCONT)
        rows = a.read_result()
        check([list(r) for r in rows] == [[str(pid), "mine"]], "the answer: %r (backend %d)" % (rows, pid))
        p = _pools(con)
        check(p["releases"] == "0" and p["pins"] == "0", "SHOW POOLS: %r" % p)
        a.terminate()
        con.close()


def test_target_down_at_retake(ctx):
    """The target is down when a released client sends: the query waits within reconnect_window
    and is answered when the server is back; past the window it gets the 08006 a reconnect
    gets."""
    pg = harness.PgCluster("release-down", hba="trust", setup=False)
    pg.sql("CREATE DATABASE sourcegraph")
    conninfo = "host=127.0.0.1 port=%d user=postgres dbname=sourcegraph sslmode=disable" % pg.port

    def released(window):
        sy = _start(ctx, builtin=conninfo, globals_extra="reconnect_window = %d\n" % window)
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        a.one("SELECT 1")
        _wait_state(con, 1, "released")
        pg.stop()
        return sy, con, a

    sy, con, a = released(30)
    try:
        since = sy.log_size()
        a.send_query("SELECT 'back'")
        _wait_state(con, 1, "reconnecting")
        sy.wait_log(r"event=reconnect_attempt .*ok=0", since=since, what="a failed attempt")
        pg.start()
        check([list(r) for r in a.read_result()] == [["back"]], "the query after the server came back")
        a.terminate()
        con.close()
        sy.check_alive()
    finally:
        sy.stop()
    sy, con, a = released(2)
    try:
        t0 = time.monotonic()
        a.send_query("SELECT 1")
        err, secs = a.close_error(15)
        check(err is not None and err.get("C") == "08006" and "reconnect_window" in err.get("M", ""),
              "past the window: %r" % err)
        check(1.5 <= time.monotonic() - t0 <= 6, "answered after %.1f s, want about 2" % (time.monotonic() - t0))
        con.close()
        sy.check_alive()
    finally:
        sy.stop()
        pg.cleanup()


def test_release_off(ctx):
    """server_release_delay = 0: a client keeps its server, as before."""
    with _start(ctx, delay=0) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        pid = int(a.one("SELECT pg_backend_pid()"))
        b = ss.Session(sy.port)
        b.one("SELECT 1")
        time.sleep(2.5)   # two sweeps: nothing to sync on when nothing is to happen
        p = _pools(con)
        check(p["releases"] == "0" and p["sv_idle"] == "0", "SHOW POOLS: %r" % p)
        check(int(a.one("SELECT pg_backend_pid()")) == pid, "a lost its backend")
        a.terminate()
        b.terminate()
        con.close()


# --------------------------------------------------------------------------------------------
# released and checking clients under a switch, a RELOAD, a shutdown, a server's death and a
# client's hang-up

class _CatalogLock:
    """ACCESS EXCLUSIVE on pg_catalog.pg_class in database sourcegraph of `cluster`, held in an
    open transaction: the release check's query (it reads pg_class) waits for it, so its
    client stays SAVING until .release()."""

    def __init__(self, cluster):
        self.c = psycopg2.connect(cluster.conninfo(user=harness.SUPERUSER, dbname="sourcegraph"))
        self.pid = self.c.get_backend_pid()
        self.c.cursor().execute("LOCK TABLE pg_catalog.pg_class IN ACCESS EXCLUSIVE MODE")

    def release(self):
        if self.c is not None:
            try:
                self.c.rollback()
                self.c.close()
            except psycopg2.Error:
                pass   # its backend went with a restart
            self.c = None


def _checking(con, timeout=15.0):
    """Wait for a release check to be running (its server in SHOW SERVERS as release_check,
    its client SAVING); returns the SHOW CLIENTS rows of the SAVING clients (the lock holds
    every client's check that begins meanwhile)."""
    harness.wait_until(lambda: any(r["state"] == "release_check" for r in con.rows("SHOW SERVERS")
                                   if r["route"] == "pg"), timeout, "a release check running")
    rows = [r for r in con.rows("SHOW CLIENTS") if r["route"] == "pg" and r["state"] == "saving"]
    check(len(rows) >= 1, "a client SAVING during the check: %r" % rows)
    return rows


def _saving_client(con, port, cluster):
    """A client whose release check waits (a catalog lock): (session, its backend pid, lock)."""
    c = ss.Session(port)
    pid = int(c.one("SELECT pg_backend_pid()"))
    lock = _CatalogLock(cluster)   # within the 1 s delay: c has not been looked at yet
    _checking(con)
    return c, pid, lock


def _switch_start(ctx, globals_extra="", builtin=None):
    """ss.start_pg's switchyard (route pg: builtin, and external through PG*) with the pool,
    one worker and server_release_delay = 1; builtin: another built-in target."""
    sy_globals = "workers = 1\nserver_release_delay = 1\n" + globals_extra
    if builtin is None:
        return ss.start_pg(ctx, route_extra="pool = on", globals_extra=sy_globals)
    port = harness.free_port()
    conf = ("[switchyard]\nmetrics_listen = off\n%s%s\n[listener pg]\nprotocol = postgres\n"
            "listen = 127.0.0.1:%d\n\n" % (ss.GLOBALS, sy_globals, port))
    conf += harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=builtin,
                             extra="active = builtin\npool = on")
    return harness.Switchyard(conf, env=harness.external_env(ctx, user="scram_user", db="sourcegraph"))


def _pg_clients(con):
    return [r for r in con.rows("SHOW CLIENTS") if r["route"] == "pg"]


def _wait_nclients(con, n, what):
    last = []

    def look():
        last[:] = _pg_clients(con)
        return len(last) == n

    harness.wait_until(look, 15, lambda: "%s; SHOW CLIENTS: %r" % (what, last))


def test_switch_with_released_and_checking_clients(ctx):
    """A SWITCH while two clients are released and a third is SAVING (its release check
    waits on a catalog lock): the switch completes, nothing is closed, and each client's next
    query runs on the new target; the old target's pooled servers are not re-taken."""
    with _switch_start(ctx) as sy:
        con = ss.Console(sy)
        a, b = ss.Session(sy.port), ss.Session(sy.port)
        check(ss.where(a)[0] == "builtin" and ss.where(b)[0] == "builtin", "a and b start on builtin")
        _wait_state(con, 2, "released")
        _wait_pools(con, lambda p: p["sv_idle"] == "2", "a's and b's servers pooled")
        c, cpid, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            since = sy.log_size()
            t = ss.SwitchThread(sy, "pg", "external")
            ss.wait_prepared(sy, "pg", since=since)
        finally:
            lock.release()
        row, _, _ = t.join_result(20)
        check(row["closed"] == "0", "SWITCH with released and checking clients: %r" % row)
        for name, s in (("c", c), ("a", a), ("b", b)):
            t0 = time.monotonic()
            check(ss.where(s)[0] == "external", "%s's next query is not on the new target" % name)
            check(time.monotonic() - t0 < 3, "%s's next query took %.1f s" % (name, time.monotonic() - t0))
        builtin_servers = [r for r in con.rows("SHOW SERVERS") if r["route"] == "pg" and
                           r["target"].endswith(":%d" % ctx.builtin.port)]
        check(builtin_servers == [], "servers of the old target after the switch: %r" % builtin_servers)
        check(cpid not in ctx.builtin.backend_pids(), "c's old backend %d stayed open" % cpid)
        # released again on the new target, and re-taken there
        _wait_pools(con, lambda p: int(p["releases"]) >= 5, "released on the new target")
        for s in (a, b, c):
            check(ss.where(s)[0] == "external", "a re-take after the switch is not on the new target")
        check(all(r["state"] in ("relay", "released", "saving") for r in _pg_clients(con)),
              "SHOW CLIENTS: %r" % _pg_clients(con))   # saving: an idle one's check, by now
        _wait_state(con, 3, "released")
        _wait_pools(con, lambda p: p["sv_idle"] == "3" and p["sv_active"] == "0" and p["sv_connecting"] == "0",
                    "three released clients: three pooled servers, none other")
        for s in (a, b, c):
            s.terminate()
        con.close()
        sy.check_alive()


def test_switch_while_retake_connects(ctx):
    """A released client sends while the pool has nothing for it, so its re-take connects,
    and a SWITCH begins and ends meanwhile (it has no server to move): its query is answered
    on the new target, not on the old one the connect began for."""
    pg = harness.PgCluster("release-switch", hba="trust", setup=False)
    try:
        pg.sql("CREATE DATABASE sourcegraph")
        pg.sql("ALTER DATABASE sourcegraph SET sy.cluster = 'private'")
        conninfo = "host=127.0.0.1 port=%d user=postgres dbname=sourcegraph sslmode=disable" % pg.port
        with _switch_start(ctx, builtin=conninfo) as sy:
            con = ss.Console(sy)
            a = ss.Session(sy.port)
            apid = int(a.one("SELECT pg_backend_pid()"))
            _wait_state(con, 1, "released")
            _wait_pools(con, lambda p: p["sv_idle"] == "1", "a's server pooled")
            pg.sql("SELECT pg_terminate_backend(%d)" % apid)
            _wait_pools(con, lambda p: p["sv_idle"] == "0", "the pool empty")
            os.kill(pg.proc.pid, signal.SIGSTOP)   # a connect to the old target waits
            try:
                a.send_query("SELECT current_setting('sy.cluster'), inet_server_port()")
                _wait_state(con, 1, "reconnecting")
                row, _, _ = con.switch("pg", "external")
                check(row["closed"] == "0", "SWITCH: %r" % row)
            finally:
                os.kill(pg.proc.pid, signal.SIGCONT)
            rows = a.read_result()
            check(rows[0][0] == "external", "a released client's query during a switch ran on %r" % (rows,))
            check(ss.where(a)[0] == "external", "after the switch")
            servers = [r for r in con.rows("SHOW SERVERS") if r["route"] == "pg" and r["target"].endswith(":%d" % pg.port)]
            check(servers == [], "servers of the old target: %r" % servers)
            a.terminate()
            con.close()
            sy.check_alive()
    finally:
        pg.cleanup()


def _rewrite_conf(sy, old, new):
    with open(sy.conf_path) as f:
        text = f.read()
    check(old in text, "%r not in the configuration" % old)
    with open(sy.conf_path, "w") as f:
        f.write(text.replace(old, new, 1))


def test_reload_with_released_and_checking_clients(ctx):
    """RELOAD (console) retargets route pg's builtin (the same cluster, with another
    work_mem in its options) while a client is released and one is SAVING: both next
    queries run on the new target; then SIGHUP turns server_release_delay off while a client
    is SAVING: it is answered on its server, is not released again, and a released one
    re-takes a server on its next query."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        check(a.one("SHOW work_mem") == "4MB", "the default work_mem")
        _wait_state(con, 1, "released")
        c, cpid, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            old = "builtin = " + ctx.builtin.conninfo()
            _rewrite_conf(sy, old, old + " options='-c work_mem=5MB'")
            since = sy.log_size()
            con.rows("RELOAD")
            sy.wait_log(r"event=reload_retarget route=pg", since=since, what="the RELOAD's retarget")
        finally:
            lock.release()
        done = sy.wait_log(r"event=switch_done route=pg", since=since, what="the RELOAD's switch done")
        check("closed=0" in done[0], "the RELOAD's switch closed a client: %s" % done[0])
        check(a.one("SHOW work_mem") == "5MB", "a released client after the RELOAD is on the old target")
        check(c.one("SHOW work_mem") == "5MB", "the checked client after the RELOAD is on the old target")
        # SIGHUP: server_release_delay 1 -> 0 while c's check waits
        _wait_state(con, 2, "released")
        d, dpid, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            _rewrite_conf(sy, "server_release_delay = 1", "server_release_delay = 0")
            since = sy.log_size()
            os.kill(sy.pid, signal.SIGHUP)
            sy.wait_log(r"event=reload_done", since=since, what="the SIGHUP reload")
        finally:
            lock.release()
        check(int(d.one("SELECT pg_backend_pid()")) == dpid, "d lost its backend")
        p = _pools(con)
        releases, retakes = p["releases"], int(p["retakes"])
        check(a.one("SELECT 2") == "2" and c.one("SELECT 3") == "3", "released clients after the SIGHUP")
        _wait_pools(con, lambda p: int(p["retakes"]) == retakes + 2, "a's and c's re-takes")
        pids = {int(s.one("SELECT pg_backend_pid()")) for s in (a, c, d)}
        time.sleep(2.5)   # two sweeps: nothing to sync on when nothing is to happen
        check(len(pids) == 3 and _pools(con)["releases"] == releases, "released with server_release_delay = 0")
        check(all(r["state"] == "relay" for r in _pg_clients(con)), "SHOW CLIENTS: %r" % _pg_clients(con))
        for s in (a, c, d):
            s.terminate()
        con.close()
        sy.check_alive()


def test_sigterm_with_released_and_checking_clients(ctx):
    """SIGTERM with a client released, one SAVING and one pinned (connected, idle): at the
    drain deadline each gets the same FATAL 57P01 "shutting down", and switchyard exits in
    time, cleanly."""
    with _start(ctx) as sy:   # drain_timeout = 2 (harness.pg_conf)
        con = harness.Console(sy.port)
        p = ss.Session(sy.port)
        p.query("SET work_mem = '6MB'")
        a = ss.Session(sy.port)
        a.one("SELECT 1")
        _wait_state(con, 1, "released")
        _wait_pools(con, lambda x: x["pins"] == "1", "p pinned")
        c, _, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            t0 = time.monotonic()
            os.kill(sy.pid, signal.SIGTERM)
            errs = {}
            for name, s in (("pinned", p), ("released", a), ("saving", c)):
                err, _ = s.close_error(10)
                errs[name] = err
            sy.proc.wait(timeout=10)
            secs = time.monotonic() - t0
        finally:
            lock.release()
        for name, err in errs.items():
            check(err is not None and err.get("S") == "FATAL" and err.get("C") == "57P01" and
                  "shutting down" in err.get("M", ""), "the %s client at shutdown: %r" % (name, err))
        check(secs < 6, "exit %.1f s after SIGTERM (drain_timeout 2)" % secs)
        problems = sy.exited_problems()
        check(not problems, "; ".join(problems))


def test_server_dies_while_checking_or_pooled(ctx):
    """The backend of a SAVING client is terminated while its release check waits: the
    client's next query is answered on a fresh server. A released client's backend, idle in
    the pool, is terminated: the pool drops it and the client's next query takes a fresh
    server. Nothing is closed, nothing hangs."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a = ss.Session(sy.port)
        apid = int(a.one("SELECT pg_backend_pid()"))
        _wait_state(con, 1, "released")
        _wait_pools(con, lambda p: p["sv_idle"] == "1", "a's server pooled")
        ctx.builtin.sql("SELECT pg_terminate_backend(%d)" % apid)
        _wait_pools(con, lambda p: p["sv_idle"] == "0", "the dead pooled server dropped")
        check(int(a.one("SELECT pg_backend_pid()")) != apid, "a re-took its dead backend")
        check(a.one("SELECT 1") == "1", "a after its pooled backend died")
        # the same, with the client's query sent the moment the backend is gone, before the
        # loop may have seen the death (the hand-out looks at the socket first). A query
        # sent while the backend is still exiting can reach it and be lost with it (08006,
        # as through PgBouncer): that race is not what this checks.
        _wait_state(con, 1, "released")
        _wait_pools(con, lambda p: p["sv_idle"] == "1", "a's server pooled again")
        apid = int(ctx.builtin.backend_pids("datname = 'sourcegraph' AND state = 'idle'")[0])
        ctx.builtin.sql("SELECT pg_terminate_backend(%d)" % apid)
        harness.wait_until(lambda: apid not in ctx.builtin.backend_pids(), 10, "a's backend gone")
        check(a.one("SELECT 3") == "3", "a right after its pooled backend died")
        # the backend of a SAVING client dies
        c, cpid, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            lock.c.cursor().execute("SELECT pg_terminate_backend(%d)" % cpid)
            harness.wait_until(lambda: cpid not in ctx.builtin.backend_pids(), 10, "c's backend gone")
        finally:
            lock.release()
        pid = int(c.one("SELECT pg_backend_pid()"))
        check(pid != cpid, "c answered by its dead backend?")
        check(c.one("SELECT 6 * 7") == "42", "c after its backend died")
        # a, idle for the 1 s delay, may be in its own check (saving) by now: nothing may be
        # left reconnecting or closing
        check(all(r["state"] in ("relay", "released", "saving") for r in _pg_clients(con)),
              "SHOW CLIENTS: %r" % _pg_clients(con))
        for s in (a, c):
            s.terminate()
        con.close()
        sy.check_alive()


def test_postgres_restart_while_checking_and_released(ctx):
    """The whole Postgres restarts while a client is SAVING and another released (its
    server pooled): both next queries are answered on fresh servers."""
    pg = harness.PgCluster("release-restart", hba="trust", setup=False)
    try:
        pg.sql("CREATE DATABASE sourcegraph")
        conninfo = "host=127.0.0.1 port=%d user=postgres dbname=sourcegraph sslmode=disable" % pg.port
        with _start(ctx, builtin=conninfo) as sy:
            con = harness.Console(sy.port)
            a = ss.Session(sy.port)
            apid = int(a.one("SELECT pg_backend_pid()"))
            _wait_state(con, 1, "released")
            c, cpid, lock = _saving_client(con, sy.port, pg)
            try:
                pg.restart()
            finally:
                lock.release()
            check(c.one("SELECT 1") == "1", "c (SAVING) after the restart")
            check(a.one("SELECT 2") == "2", "a (released) after the restart")
            pids = {int(s.one("SELECT pg_backend_pid()")) for s in (a, c)}
            check(not pids & {apid, cpid}, "a backend from before the restart: %r" % pids)
            for s in (a, c):
                s.terminate()
            con.close()
            sy.check_alive()
    finally:
        pg.cleanup()


def test_client_hangs_up_while_checking_or_released(ctx):
    """A client that hangs up while SAVING, one that hangs up while released, and one that
    sends Terminate while released: each is gone from SHOW CLIENTS, no server stays active
    for them, the clean servers stay pooled, and the Terminate takes no server (a released
    client's goodbye used to re-take one, or connect, only to close it)."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        a, b = ss.Session(sy.port), ss.Session(sy.port)
        a.one("SELECT 1")
        b.one("SELECT 1")
        _wait_state(con, 2, "released")
        c, cpid, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            c.sock.close()   # no Terminate: a hang-up
        finally:
            lock.release()
        _wait_nclients(con, 2, "c gone")
        a.sock.close()
        _wait_nclients(con, 1, "a gone")
        retakes = _pools(con)["retakes"]
        b.terminate()
        _wait_nclients(con, 0, "b gone")
        p = _pools(con)
        check(p["retakes"] == retakes, "a Terminate of a released client took a server: %r" % p)
        # two servers in all: c was handed the one a had released
        _wait_pools(con, lambda p: p["sv_active"] == "0" and p["sv_connecting"] == "0" and p["sv_idle"] == "2",
                    "the two servers pooled, none active")
        check(cpid in ctx.builtin.backend_pids(), "c's clean server was not kept")
        con.close()
        sy.check_alive()


def test_slow_check_cancelled_not_its_client(ctx):
    """A release check that outlives connect_timeout (1 s here; a catalog lock holds it) is
    cancelled, and its client keeps its connection and its backend: the server was slow, not
    gone. It is not pinned, and once the lock is gone its next check releases it. Before,
    the timeout closed the client with 08006 ("no answer to the release check")."""
    with _start(ctx, globals_extra="connect_timeout = 1\n") as sy:
        con = harness.Console(sy.port)
        since = sy.log_size()
        c, pid, lock = _saving_client(con, sy.port, ctx.builtin)
        try:
            sy.wait_log(r"event=release_check_slow .*action=cancel", since=since, what="the check cancelled")
            sy.wait_log(r"event=release_check_cancelled conn=", since=since, what="the relay going on")
        finally:
            lock.release()
        check(int(c.one("SELECT pg_backend_pid()")) == pid, "c lost its backend %d" % pid)
        p = _pools(con)
        check(p["pins"] == "0", "a cancelled check pinned its client: %r" % p)
        check("no answer to the release check" not in sy.log_text(), "the check's timeout closed c")
        _wait_state(con, 1, "released")   # checked again after another delay, lock gone
        check(c.one("SELECT 6 * 7") == "42", "c after its release")
        c.terminate()
        con.close()
        sy.check_alive()


def test_checks_at_most_eight_at_once(ctx):
    """Twelve clients due for their release check at once (a catalog lock holds every check
    that starts): at most eight checks run on a worker at a time, the rest wait in a queue,
    and once the lock is gone each check that ends starts the next: all twelve are released. Before, a burst of idle clients sent
    every check together (5,000 at once in bench/idle_bench.sh, which took Postgres past
    connect_timeout)."""
    with _start(ctx) as sy:
        con = harness.Console(sy.port)
        clients = [ss.Session(sy.port) for _ in range(12)]
        for i, c in enumerate(clients):
            check(c.one("SELECT %d" % i) == str(i), "client %d" % i)
        lock = _CatalogLock(ctx.builtin)   # within the 1 s delay, as in _saving_client
        try:
            _wait_state(con, 8, "saving")
            saving = []

            def more():
                saving[:] = [r for r in _pg_clients(con) if r["state"] == "saving"]
                return len(saving) > 8
            # every client is past its 1 s delay on each of these ticks: none may start a ninth
            try:
                harness.wait_until(more, 3.0, "more than eight checks")
                too_many = True
            except harness.TestFailure:
                too_many = False
            check(not too_many, "%d release checks at once: %r" % (len(saving), saving))
        finally:
            lock.release()
        _wait_pools(con, lambda p: p["releases"] == "12", "all twelve released")
        # the four that waited were started by the checks that ended, not a tick later
        turns = len(re.findall(r"event=release_check_turn ", sy.log_text()))
        check(turns >= 4, "%d clients started by a check's end, not 4 or more" % turns)
        for i, c in enumerate(clients):
            check(c.one("SELECT %d" % (i + 100)) == str(i + 100), "client %d after its release" % i)
            c.terminate()
        con.close()
        sy.check_alive()
