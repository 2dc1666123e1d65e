"""
test_switch_catchup.py - issue 10, part 1: SWITCH ... AFTER CATCHUP.

Each test makes its own servers and the replication between them:

  - migration (pgbench simple and -M prepared): the built-in (wal_level = logical) publishes
    the pgbench tables, the external subscribes. pgbench -c 8 writes through switchyard;
    mid-run SWITCH pg TO external AFTER CATCHUP. The test disables the subscription as soon
    as SWITCH answers, so from then on nothing reaches the external but through switchyard.
    Then: pgbench reports 0 failed transactions; every transaction it counted has its
    pgbench_history row on the external; the built-in's rows are all on the external too,
    and none of them started after a row that only the external has (nothing written after
    the switch is on the built-in); on the external sum(abalance) = sum(delta) (the issue's
    symptom of a switch that did not wait: older updates replayed over newer ones).
  - timeout: with the subscription disabled and a write the external does not have, AFTER
    CATCHUP TIMEOUT 2 (switch_hold_max = 1, so the wait outlasts the hold budget) is refused
    after about 2 s with how many bytes of WAL the external was behind, and nothing moved: the
    route is on builtin, a query held during the wait is answered by the built-in, a session
    that connected during the wait (on the external, held) is on the built-in, no session
    was closed. With the subscription enabled again the same SWITCH succeeds.
  - standby: a physical standby made with pg_basebackup -R; pgbench -c 8 through switchyard;
    AFTER CATCHUP PROMOTE: the standby is promoted, writes go there, nothing is lost.
  - redis: a replica (--replicaof) of the built-in redis; 20 redis-py checker clients INCR
    keys of their own; AFTER CATCHUP PROMOTE: REPLICAOF NO ONE on the replica; every
    acknowledged INCR is on the new store, and the old store has only those acknowledged
    before the switch answered.
"""

import os
import re
import threading
import time

import harness
from harness import check, fail
import switch_support as ss
import test_cli as tc

CLIENTS = 8
SECONDS = 8
SWITCH_AT = 2.5
REPL_HBA = """\
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
"""


# --------------------------------------------------------------------------------------------
# servers

def _pgbench_init(cluster, steps=None):
    argv = [harness.PGBENCH, "-i", "-s", "1", "-q", "-h", cluster.sockdir, "-p", str(cluster.port),
            "-U", harness.SUPERUSER]
    if steps:
        argv += ["-I", steps]
    r = harness.run(argv + ["sourcegraph"], env=harness.clean_env(home=cluster.dir), timeout=180)
    check(r.returncode == 0, "pgbench -i on %s failed: %s" % (cluster.name, r.stderr[-2000:]))


def _logical_pair(enable=True):
    """(publisher, subscriber): the built-in publishes the pgbench tables, the external
    subscribes (initial copy done)."""
    pub = harness.PgCluster("cu-pub", extra_conf="wal_level = logical\nmax_replication_slots = 10\n"
                                                 "max_wal_senders = 10")
    sub = harness.PgCluster("cu-sub")
    _pgbench_init(pub)
    _pgbench_init(sub, steps="dtp")   # the tables and their keys, no rows: replication copies them
    pub.sql("CREATE PUBLICATION sy_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, "
            "pgbench_history", db="sourcegraph")
    sub.sql("CREATE SUBSCRIPTION sy_sub CONNECTION '%s dbname=sourcegraph user=postgres' PUBLICATION sy_pub"
            % pub.conninfo(), db="sourcegraph")
    harness.wait_until(lambda: sub.sql("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'",
                                       db="sourcegraph") == "0", 60, "the subscription's initial copy")
    harness.wait_until(lambda: sub.sql("SELECT count(*) FROM pgbench_accounts", db="sourcegraph") == "100000", 30,
                       "pgbench_accounts copied to the subscriber")
    return pub, sub


class _Standby(harness.PgCluster):
    """A physical standby of primary, made with pg_basebackup -R, on a port of its own."""

    def __init__(self, primary, name="cu-standby"):   # noqa: super().__init__ would initdb
        self.name = name
        self.ssl = False
        self.tls = None
        self.dir = harness.tmpdir("pg-" + name, owner="postgres")
        self.data = os.path.join(self.dir, "data")
        self.sockdir = self.dir
        self.port = harness.free_port()
        self.logfile = os.path.join(harness.tmp_base(), "pg-%s-%d.log" % (name, self.port))
        self.proc = None
        self.host = "127.0.0.1"
        harness._register(self)
        r = harness.run(harness._as_postgres([harness.PGBIN + "/pg_basebackup", "-D", self.data, "-R", "-X",
                                              "stream", "-c", "fast", "-h", primary.sockdir, "-p",
                                              str(primary.port), "-U", harness.SUPERUSER]),
                        env=harness.clean_env(home=self.dir), timeout=120)
        if r.returncode != 0:
            fail("pg_basebackup failed: %s %s" % (r.stdout[-1000:], r.stderr[-1000:]))
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# the standby\nport = %d\nunix_socket_directories = '%s'\nhot_standby = on\n"
                    % (self.port, self.sockdir))
        self.start()


def _start(builtin, external, globals_extra=""):
    """switchyard with route pg: builtin = `builtin`, external = `external` (plain, as the
    superuser), starting on builtin."""
    port = harness.free_port()
    head = ("[switchyard]\nmetrics_listen = off\n%s%s\n"
            "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % (ss.GLOBALS, globals_extra, port))
    conf = head + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                                   builtin=builtin.conninfo(), extra="active = builtin")
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(external.port), "PGUSER": "postgres",
           "PGDATABASE": "sourcegraph", "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "5"}
    return harness.Switchyard(conf, env=env)


# --------------------------------------------------------------------------------------------
# pgbench through switchyard

def _history(cluster):
    """pgbench_history rows as sorted (mtime, tid, bid, aid, delta) tuples (mtime as text,
    microseconds: they sort as time)."""
    out = cluster.sql("SELECT to_char(mtime, 'YYYY-MM-DD HH24:MI:SS.US'), tid, bid, aid, delta "
                      "FROM pgbench_history ORDER BY 1, 2, 3, 4, 5", db="sourcegraph")
    return [tuple(l.split("|")) for l in out.splitlines()] if out else []


def _balanced(cluster):
    out = cluster.sql("SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT coalesce(sum(delta), 0) "
                      "FROM pgbench_history)", db="sourcegraph")
    a, d = out.split("|")
    return int(a or 0) == int(d), out


def _pgbench(sy, mode, logdir):
    outfile = os.path.join(logdir, "out.txt")
    argv = [harness.PGBENCH, "-h", "127.0.0.1", "-p", str(sy.port), "-U", "postgres", "-n",
            "-c", str(CLIENTS), "-j", "2", "-T", str(SECONDS), "-M", mode, "sourcegraph"]
    with open(outfile, "wb") as out:
        bench = harness.Proc(argv, env=harness.clean_env(), stdout=out, cwd=logdir, name="pgbench")
    bench.outfile = outfile
    return bench


def _pgbench_connected(con, bench):
    deadline = time.monotonic() + 30
    while int(con.route("pg")["clients"]) < CLIENTS:
        if bench.poll() is not None or time.monotonic() > deadline:
            fail("pgbench did not connect %d clients (route %r; rc %s):\n%s"
                 % (CLIENTS, con.route("pg"), bench.poll(), harness.log_tail(bench.outfile)))
        time.sleep(0.05)


def _pgbench_verdict(bench, what):
    """pgbench's transactions processed; fails unless it exited 0 with 0 failed."""
    try:
        rc = bench.wait(timeout=SECONDS + 60)
    except Exception:
        fail("%s: pgbench did not finish:\n%s" % (what, harness.log_tail(bench.outfile)))
    with open(bench.outfile, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    check(rc == 0 and "aborted" not in out, "%s: pgbench exited %d:\n%s" % (what, rc, out[-3000:]))
    m = re.search(r"number of failed transactions: (\d+)", out)
    check(m is not None and m.group(1) == "0", "%s: failed transactions:\n%s" % (what, out[-3000:]))
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    check(m is not None and int(m.group(1)) > 0, "%s: pgbench processed nothing:\n%s" % (what, out[-2000:]))
    return int(m.group(1))


def _switch_under_pgbench(sy, con, mode, opts, after_switch=None):
    """pgbench -c 8 through sy, SWITCH pg TO external <opts> mid-run; returns (row, processed)."""
    bench = _pgbench(sy, mode, harness.tmpdir("pgbench"))
    _pgbench_connected(con, bench)
    time.sleep(SWITCH_AT)   # the test's schedule: pgbench writes for a while before the switch
    check(bench.poll() is None, "pgbench ended before the switch:\n%s" % harness.log_tail(bench.outfile))
    row, t0, t1 = con.switch("pg", "external", opts)
    if after_switch:
        after_switch()
    print("    -M %s SWITCH %s: %s" % (mode, opts, row), flush=True)
    check(row["moved"] == str(CLIENTS) and row["closed"] == "0", "SWITCH %s under pgbench: %r" % (opts, row))
    return row, _pgbench_verdict(bench, "-M %s" % mode)


def _check_stores(old, new, processed, what):
    """Every counted transaction on new; old's rows all on new, none started after a row
    only new has; new balanced."""
    o, n = _history(old), _history(new)
    check(len(n) == processed, "%s: pgbench counted %d transactions, the new store has %d history rows "
          "(the old %d)" % (what, processed, len(n), len(o)))
    rest = list(n)
    for r in o:
        try:
            rest.remove(r)
        except ValueError:
            fail("%s: a row on the old store is not on the new one: %r" % (what, r))
    check(o and rest, "%s: rows on the old store %d, only on the new %d: the switch did not happen mid-run"
          % (what, len(o), len(rest)))
    check(max(o)[0] < min(rest)[0], "%s: a transaction on the old store started at %s, after the first one "
          "only the new store has (%s)" % (what, max(o)[0], min(rest)[0]))
    ok, sums = _balanced(new)
    check(ok, "%s: on the new store sum(abalance) | sum(delta) = %s" % (what, sums))


# --------------------------------------------------------------------------------------------
# the tests

def _migration(mode):
    pub, sub = _logical_pair()
    sy = _start(pub, sub)
    con = ss.Console(sy)
    stop_replication = lambda: sub.sql("ALTER SUBSCRIPTION sy_sub DISABLE", db="sourcegraph")  # noqa: E731
    row, processed = _switch_under_pgbench(sy, con, mode, "AFTER CATCHUP", stop_replication)
    check(row["caught_up"] == "subscription" and re.match(r"^[0-9A-F]+/[0-9A-F]+$", row["position"]),
          "-M %s: result row %r" % (mode, row))
    check(float(row["catchup_ms"]) <= float(row["hold_ms"]) <= float(row["duration_ms"]),
          "-M %s: the wait, the hold and the switch do not nest: %r" % (mode, row))
    check(con.active("pg") == "external", "route pg not on external: %r" % con.route("pg"))
    _check_stores(pub, sub, processed, "-M %s" % mode)
    con.close()
    sy.stop()


def test_catchup_migration_simple(ctx):
    _migration("simple")


def test_catchup_migration_prepared(ctx):
    _migration("prepared")


class _Background(threading.Thread):
    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.value, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn()
        except BaseException as e:   # reported by get
            self.error = e

    def get(self, timeout):
        self.join(timeout)
        check(not self.is_alive(), "background step did not finish within %.0fs" % timeout)
        if self.error is not None:
            raise self.error
        return self.value


def test_catchup_usage(ctx):
    """Bad AFTER CATCHUP options are refused before anything starts, on the console and in
    the CLI."""
    sy = _start(ctx.builtin, ctx.builtin)
    con = ss.Console(sy)
    for opts, state, text in [
        ("TIMEOUT 2", "42601", "belong to AFTER CATCHUP"),
        ("PROMOTE", "42601", "belong to AFTER CATCHUP"),
        ("AFTER CATCHUP TIMEOUT 0", "22023", "1..86400"),
        ("AFTER CATCHUP TIMEOUT 2x", "22023", "1..86400"),
        ("AFTER CATCHUP TIMEOUT 86401", "22023", "1..86400"),
        ("AFTER CATCHUP GRADUAL", "42601", "cannot be GRADUAL"),
        ("AFTER", "42601", "unknown SWITCH option"),
    ]:
        e = con.switch_error("pg", "external", opts)
        check(e.sqlstate == state and text in e.message, "SWITCH pg TO external %s: %s %s"
              % (opts, e.sqlstate, e.message))
    e = con.switch_error("pg", "builtin", "AFTER CATCHUP")
    check(e.sqlstate == "55000" and "already" in e.message, "AFTER CATCHUP to the active target: %s" % e.message)
    check(con.active("pg") == "builtin", "a refused SWITCH moved the route: %r" % con.route("pg"))
    for args, msg in [
        (("switch", "pg", "external", "--promote"), "need --after-catchup"),
        (("switch", "pg", "external", "--timeout", "3"), "need --after-catchup"),
        (("switch", "pg", "external", "--after-catchup", "--timeout", "0"), "--timeout"),
        (("switch", "pg", "external", "--after-catchup", "--gradual"), "--gradual"),
        (("status", "--after-catchup"), "belong to switch"),
    ]:
        r = tc.cli("--port", sy.port, *args)
        check(r.returncode == 2 and msg in r.stderr, "switchyard %s: rc %d %s" % (" ".join(args), r.returncode,
                                                                                 r.stderr))
    con.close()
    sy.stop()


def test_catchup_timeout(ctx):
    pub, sub = _logical_pair()
    sub.sql("ALTER SUBSCRIPTION sy_sub DISABLE", db="sourcegraph")
    sy = _start(pub, sub, globals_extra="switch_hold_max = 1\n")
    con = ss.Console(sy)
    s1 = ss.Session(sy.port)
    s1.query("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 7, now())")
    check(ss.where(s1)[1] == pub.port, "s1 not on the built-in")

    since = sy.log_size()
    t0 = time.monotonic()
    refused = _Background(lambda: ss.Console(sy).switch_error("pg", "external", "AFTER CATCHUP TIMEOUT 2"))
    sy.wait_log(r"event=switch_catchup route=pg ", since=since, what="the catch-up wait to begin")
    s1.send_query("SELECT inet_server_port()")
    check(not s1.reply_within(0.3), "a query during the catch-up wait was not held")
    s2 = ss.Session(sy.port)   # routed to the external meanwhile, held at its first query
    s2.send_query("SELECT inet_server_port()")
    err = refused.get(20)
    secs = time.monotonic() - t0
    print("    refused after %.2f s: %s %s" % (secs, err.sqlstate, err.message), flush=True)
    check(2.0 <= secs < 6.0, "AFTER CATCHUP TIMEOUT 2 answered after %.2f s" % secs)
    m = re.search(r"(\d+) bytes of WAL behind", err.message)
    check(err.sqlstate == "55000" and m and int(m.group(1)) > 0 and "nothing moved" in err.message,
          "the refusal does not say how far behind: %s %s" % (err.sqlstate, err.message))
    check(con.active("pg") == "builtin", "route pg moved: %r" % con.route("pg"))
    r1, r2 = s1.read_result(), s2.read_result()
    check(r1 == [(str(pub.port),)], "the held query of s1 was answered %r, not by the built-in (%d)" % (r1, pub.port))
    check(r2 == [(str(pub.port),)], "the session opened during the wait answered %r, not on the built-in (%d)"
          % (r2, pub.port))
    check(con.route("pg")["closed_at_deadline"] == "0", "sessions closed: %r" % con.route("pg"))
    # Nothing moved: the connections opened ahead on the external for the move are closed.
    ext = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'sourcegraph' AND backend_type = 'client backend'" \
          " AND pid <> pg_backend_pid()"
    harness.wait_until(lambda: sub.sql(ext) == "0", timeout=5,
                       what=lambda: "the external's backends after the refusal: %s" % sub.sql(ext))

    # replication back on: the same switch, from the CLI, goes through, and the row written
    # before is there
    sub.sql("ALTER SUBSCRIPTION sy_sub ENABLE", db="sourcegraph")
    r = tc.cli("--port", sy.port, "--tsv", "switch", "pg", "external", "--after-catchup", "--timeout", "20")
    check(r.returncode == 0, "switchyard switch --after-catchup exited %d: %s" % (r.returncode, r.stderr))
    lines = r.stdout.splitlines()
    row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
    print("    CLI: %s" % row, flush=True)
    check(row.get("moved") == "2" and row.get("closed") == "0" and row.get("caught_up") == "subscription"
          and re.match(r"^[0-9A-F]+/[0-9A-F]+$", row.get("position", "")) and row.get("catchup_ms", "").isdigit(),
          "the second switch: %r" % row)
    check(ss.where(s1)[1] == sub.port and ss.where(s2)[1] == sub.port, "sessions not on the external")
    check(s1.one("SELECT count(*) FROM pgbench_history WHERE delta = 7") == "1",
          "the row written before the switch is not on the external")
    for s in (s1, s2):
        s.close()
    con.close()
    sy.stop()


def test_catchup_standby_promote(ctx):
    primary = harness.PgCluster("cu-primary", hba=REPL_HBA)
    _pgbench_init(primary)
    standby = _Standby(primary)
    check(standby.sql("SELECT pg_is_in_recovery()") == "t", "the standby is not in recovery")
    sy = _start(primary, standby)
    con = ss.Console(sy)
    row, processed = _switch_under_pgbench(sy, con, "prepared", "AFTER CATCHUP PROMOTE")
    check(row["caught_up"] == "standby" and row["promoted"] == "yes", "result row %r" % row)
    check(standby.sql("SELECT pg_is_in_recovery()") == "f", "the standby was not promoted")
    _check_stores(primary, standby, processed, "standby")
    con.close()
    sy.stop()


def test_catchup_redis_replica_promote(ctx):
    import redis
    old = harness.RedisServer()
    new = harness.RedisServer(extra_args=("--replicaof", "127.0.0.1", str(old.port)))
    harness.wait_until(lambda: "master_link_status:up" in new.cli("INFO", "replication").stdout, 20,
                       "the replica to be in sync")
    sy = ss.start_redis(ctx, old, new)
    con = ss.Console(sy)
    route = "redis-store"
    n = 20
    acks = [0] * n
    errors = []
    stop = threading.Event()

    def checker(i):
        r = redis.Redis(host="127.0.0.1", port=sy.redis_port, socket_timeout=20)
        try:
            while not stop.is_set():
                if r.incr("cu:%d" % i) != acks[i] + 1:
                    errors.append("client %d: INCR answered out of step" % i)
                    return
                acks[i] += 1
        except Exception as e:   # counted, reported below
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=checker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    harness.wait_until(lambda: int(con.route(route)["clients"]) >= n and min(acks) > 0, 20, "checkers connected")
    time.sleep(1.0)   # the test's schedule: the checkers write for a while before the switch
    before = list(acks)
    row, _, _ = con.switch(route, "external", "AFTER CATCHUP PROMOTE")
    after = list(acks)
    time.sleep(1.0)   # ...and after it
    stop.set()
    for t in threads:
        t.join(30)
    print("    %s; %d INCRs" % (row, sum(acks)), flush=True)
    check(not errors, "checker errors: %s" % errors[:5])
    check(row["caught_up"] == "replica" and row["promoted"] == "yes" and row["moved"] == str(n)
          and row["closed"] == "0", "result row %r" % row)
    check("role:master" in new.cli("INFO", "replication").stdout, "the replica was not promoted")
    for i in range(n):
        v_new = int(new.cli("GET", "cu:%d" % i).stdout.strip() or 0)
        v_old = int(old.cli("GET", "cu:%d" % i).stdout.strip() or 0)
        check(v_new == acks[i], "client %d: %d INCRs acknowledged, the new store has %d" % (i, acks[i], v_new))
        # A reply the old store sent before the hold can still be on its way into the
        # checker's count when SWITCH answers (after is read then): one INCR more. A write
        # that reached the old store after the promotion is caught above (it never reached
        # the new store).
        check(before[i] <= v_old <= after[i] + 1, "client %d: the old store has %d, acknowledged before the switch "
              "%d..%d" % (i, v_old, before[i], after[i]))
    check(after != acks, "no INCR after the switch")
    con.close()
    sy.stop()


test_catchup_migration_simple.timeout = 150
test_catchup_migration_prepared.timeout = 150
test_catchup_timeout.timeout = 120
test_catchup_standby_promote.timeout = 150
test_catchup_redis_replica_promote.timeout = 120
