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
