"""
switch_support.py - what the switchover tests (test_switch_*.py, issue 4) share, on top of
harness.py and redis_support.py.

    DRAIN_TIMEOUT, PAUSE_MAX               what every switchyard started here is configured with
    start_pg(ctx, dead_route=False)        switchyard with route "pg" (database sourcegraph):
                                           builtin = ctx.builtin, external = ctx.external through
                                           PG* (TLS verify-full + SCRAM), starting on builtin; and
                                           optionally route "pg-dead" (database deaddb) whose
                                           external is a closed port
    start_redis(builtin, external)         switchyard with route "redis-store": builtin and
                                           external RedisServers, starting on builtin
    Console(sy)                            harness.Console on listener pg:
                                           .rows("SHOW ROUTES") -> list of dicts,
                                           .switch(route, to, ...) -> (row dict, t_start, t_end)
                                           (wall-clock times around the command),
                                           .command(sql) for PAUSE / RESUME
    Session(port, ...)                     a raw protocol-3 client session (harness.PgWire) with
                                           .sqlstate_of_close() for sessions closed by a switch
    pgbench_init(ctx)                      the pgbench schema on both clusters, once per run
    where(session)                         (sy.cluster, inet_server_port()) of a session
    wait_switching(con, route)             SHOW ROUTES shows the route switching
    wait_prepared(sy, route, since)        the switch opened every new upstream: sessions on
                                           the old target are held from now on

The switch times are taken with time.time() (CLOCK_REALTIME), the clock Postgres uses for
CURRENT_TIMESTAMP on this same machine, so they can be compared with pgbench_history.mtime.
"""

import re
import select
import threading
import time

import harness
from harness import check, fail

DRAIN_TIMEOUT = 5
PAUSE_MAX = 3

# log_level = debug: the tests wait for event=switch_prepared (see wait_prepared)
GLOBALS = ("drain_timeout = %d\npause_max = %d\nconnect_timeout = 5\nlog_level = debug\n"
           % (DRAIN_TIMEOUT, PAUSE_MAX))


# --------------------------------------------------------------------------------------------
# switchyard configurations

def start_pg(ctx, dead_route=False, extra_env=None, route_extra="", globals_extra=""):
    """switchyard with route pg (see the module docstring) on a free port; .dead_port is the
    closed port of pg-dead's external when dead_route."""
    port = harness.free_port()
    head = ("[switchyard]\nmetrics_listen = off\n%s%s\n"
            "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % (GLOBALS, globals_extra, port))
    conf = head + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                                   builtin=ctx.builtin.conninfo(),
                                   extra="active = builtin" + ("\n" + route_extra if route_extra else ""))
    env = harness.external_env(ctx, user="scram_user", db="sourcegraph")
    dead = None
    if dead_route:
        dead = harness.closed_port()
        conf += harness.pg_route("pg-dead", "deaddb", env_prefix="DEAD_",
                                 builtin=ctx.builtin.conninfo(dbname="postgres"), extra="active = builtin")
        env.update({"DEAD_PGHOST": "127.0.0.1", "DEAD_PGPORT": str(dead), "DEAD_PGUSER": "postgres",
                    "DEAD_PGSSLMODE": "disable", "DEAD_PGCONNECT_TIMEOUT": "3"})
    env.update(extra_env or {})
    sy = harness.Switchyard(conf, env=env)
    sy.dead_port = dead
    return sy


def start_redis(ctx, builtin, external, globals_extra="", route_extra="", env=None, **kw):
    """switchyard with route redis-store (builtin and external RedisServers, plain, starting on
    builtin) and a postgres listener for the console (route pg on ctx.builtin). sy.redis_port
    is the redis listener. env adds to the daemon's environment; kw goes to Switchyard."""
    import redis_support as rs
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, rs.endpoint(builtin), "REDIS_STORE_ENDPOINT",
                                   extra="active = builtin\n" + route_extra)],
                         globals_extra=GLOBALS + globals_extra)
    # redis_conf writes drain_timeout = 2 itself; ours must be the only one
    conf = conf.replace("drain_timeout = 2\n", "", 1)
    if "metrics_listen" in globals_extra:
        conf = conf.replace("metrics_listen = off\n", "", 1)
    conf += ("\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % harness.free_port()
             + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo()))
    sy = harness.Switchyard(conf, env=dict(env or {}, REDIS_STORE_ENDPOINT="redis://127.0.0.1:%d" % external.port),
                            **kw)
    sy.redis_port = port
    return sy


# --------------------------------------------------------------------------------------------
# the console

class Console(harness.Console):
    """harness.Console on switchyard's listener "pg", with the switchover commands."""

    def __init__(self, sy, timeout=60.0):
        self.sy = sy
        super().__init__(sy.listeners["pg"], timeout=timeout)

    def command(self, sql):
        return self.result(sql)

    def route(self, name):
        for r in self.rows("SHOW ROUTES"):
            if r["route"] == name:
                return r
        fail("SHOW ROUTES has no route %s" % name)

    def active(self, name):
        return self.route(name)["active"]

    def switch(self, route, to, opts=""):
        """SWITCH route TO to [opts]; returns (the result row as a dict, t_start, t_end) with
        wall-clock times taken just before sending and just after the answer. Fails the test
        on an error."""
        sql = ("SWITCH %s TO %s %s" % (route, to, opts)).strip()
        t0 = time.time()
        try:
            cols, rows = self.result(sql)
        except harness.PgError as e:
            fail("%s refused: %s %s" % (sql, e.sqlstate, e.message))
        t1 = time.time()
        check(len(rows) == 1, "%s answered %d rows: %r" % (sql, len(rows), rows))
        row = dict(zip(cols, rows[0]))
        check(row.get("route") == route and row.get("to") == to,
              "%s answered %r" % (sql, row))
        return row, t0, t1

    def switch_error(self, route, to, opts=""):
        """SWITCH that must be refused: returns the PgError."""
        sql = ("SWITCH %s TO %s %s" % (route, to, opts)).strip()
        try:
            cols, rows = self.result(sql)
        except harness.PgError as e:
            return e
        fail("%s was not refused: %r %r" % (sql, cols, rows))


class SwitchThread(threading.Thread):
    """Console.switch in a thread (SWITCH answers only when the switch has completed), for
    tests that must act while a switch runs. .join_result(timeout) -> (row, t0, t1)."""

    def __init__(self, sy, route, to, opts=""):
        super().__init__(daemon=True)
        self.console = Console(sy)
        self.args = (route, to, opts)
        self.result = None
        self.error = None
        self.started_at = None
        self.start()

    def run(self):
        self.started_at = time.monotonic()
        try:
            self.result = self.console.switch(*self.args)
        except BaseException as e:  # reported by join_result
            self.error = e
        finally:
            self.ended_at = time.monotonic()

    def join_result(self, timeout=30.0):
        self.join(timeout)
        if self.is_alive():
            fail("SWITCH %s TO %s did not complete within %.0fs" % (self.args[0], self.args[1], timeout))
        self.console.close()
        if self.error is not None:
            if isinstance(self.error, harness.TestFailure):
                raise self.error
            fail("SWITCH %s TO %s: %s: %s" % (self.args[0], self.args[1], type(self.error).__name__, self.error))
        return self.result


def wait_switching(console, route, timeout=10.0):
    """Wait until SHOW ROUTES says the route is switching."""
    last = []

    def switching():
        last[:] = [console.active(route)]
        return last[0] if "switching" in last[0] else None

    return harness.wait_until(switching, timeout, lambda: "route %s to show as switching (active=%r)"
                              % (route, last[0] if last else None))


def wait_prepared(sy, route, since=0, timeout=DRAIN_TIMEOUT + 10):
    """Wait for the switch of `route` begun after log offset `since` to have opened every
    session's new upstream (event=switch_prepared, a debug line: GLOBALS turn debug on).
    From then on a session on the old target is held at its next boundary; before, it is
    not held at all (switchover.c)."""
    return sy.wait_log(r"event=switch_prepared route=%s " % re.escape(route), timeout=timeout, since=since,
                       what="the switch of route %s to open the new upstreams (event=switch_prepared)" % route)


# --------------------------------------------------------------------------------------------
# client sessions

class Session(harness.PgWire):
    """A protocol-3 client session through switchyard (trusted loopback, user postgres)."""

    def __init__(self, port, db="sourcegraph", timeout=30.0, **params):
        super().__init__(port, timeout=timeout)
        self.startup(user="postgres", database=db, **params)

    def one(self, sql):
        rows = self.query(sql)
        check(len(rows) == 1 and len(rows[0]) == 1, "%s: rows %r" % (sql, rows))
        return rows[0][0]

    def reply_within(self, secs):
        """True when at least one byte (or a close) arrives within secs."""
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], secs)
        return bool(r)

    def close_error(self, timeout):
        """Wait for the server to close the session; returns (ErrorResponse fields or None,
        seconds waited). Fails when the session stays open."""
        t0 = time.monotonic()
        data, closed = self.read_until_close(timeout=timeout)
        secs = time.monotonic() - t0
        check(closed, "session not closed within %.0fs (received %r)" % (timeout, data[:300]))
        errs = harness.error_messages(data)
        return (errs[-1] if errs else None), secs


def where(sess):
    """(sy.cluster, inet_server_port) of a session: which cluster serves it."""
    rows = sess.query("SELECT current_setting('sy.cluster'), inet_server_port()")
    check(len(rows) == 1, "where: %r" % rows)
    return rows[0][0], int(rows[0][1])


def cluster_of(ctx, name):
    return ctx.builtin if name == "builtin" else ctx.external


# --------------------------------------------------------------------------------------------
# pgbench

_pgbench_ready = set()


def pgbench_init(ctx):
    """The pgbench schema (scale 1) in database sourcegraph on both clusters, owned by the
    database owner (scram_user, the external target's user; the built-in is reached as the
    superuser). pgbench_history.mtime becomes timestamptz, so that the instant a row's
    transaction started (pgbench inserts CURRENT_TIMESTAMP) compares with the wall clock
    whatever a session's TimeZone. Done once per run; the caller empties pgbench_history."""
    for c in (ctx.builtin, ctx.external):
        if c.name in _pgbench_ready:
            continue
        r = harness.run([harness.PGBENCH, "-i", "-s", "1", "-q", "-h", c.sockdir, "-p", str(c.port),
                         "-U", harness.DB_OWNER, "sourcegraph"], env=harness.clean_env(home=c.dir), timeout=180)
        check(r.returncode == 0, "pgbench -i on %s failed: %s" % (c.name, r.stderr[-2000:]))
        c.sql("ALTER TABLE pgbench_history ALTER COLUMN mtime TYPE timestamptz", db="sourcegraph")
        _pgbench_ready.add(c.name)


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


# --------------------------------------------------------------------------------------------
# a psql process driven through a pipe

class PsqlPipe:
    """A long-lived psql (-X -A -t, no pager, ON_ERROR_STOP off) fed SQL through stdin, as an
    interactive user would type it. .run(sql) sends the text followed by an \\echo marker and
    returns the output lines (stdout and stderr merged, in order) printed before the marker;
    psql prints asynchronous notifications after the query that received them."""

    def __init__(self, port, db="sourcegraph", user="postgres", env=None):
        import subprocess
        import queue
        self.q = queue.Queue()
        self.n = 0
        self.all = []
        argv = [harness.PSQL, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db,
                "-v", "ON_ERROR_STOP=0"]
        # stderr merged into stdout (Proc has no stderr option): sh execs psql with 2>&1
        argv = ["/bin/sh", "-c", 'exec "$0" "$@" 2>&1'] + argv
        self.proc = harness.Proc(argv, env=harness.clean_env(dict(env or {}, PAGER="cat")),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, name="psql")
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()

    def _reader(self):
        for raw in self.proc.popen.stdout:
            self.q.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.q.put(None)

    def run(self, sql, timeout=30.0):
        import queue
        self.n += 1
        mark = "__sy_mark_%d__" % self.n
        try:
            self.proc.popen.stdin.write((sql.rstrip() + "\n\\echo " + mark + "\n").encode())
            self.proc.popen.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            fail("psql is gone (%s); output so far:\n%s" % (e, "\n".join(self.all[-30:])))
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("psql gave no answer to %r within %.0fs; output so far:\n%s"
                     % (sql[:200], timeout, "\n".join(self.all[-30:])))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                fail("psql exited (rc %s) during %r; output:\n%s"
                     % (self.proc.poll(), sql[:200], "\n".join(self.all[-30:])))
            self.all.append(line)
            if line == mark:
                return out
            out.append(line)

    def quit(self, timeout=20.0):
        """\\q and wait; returns psql's exit status."""
        try:
            self.proc.popen.stdin.write(b"\\q\n")
            self.proc.popen.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc.stop(timeout=2)
