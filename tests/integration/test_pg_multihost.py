"""
test_pg_multihost.py - issue 10 part 3: a Postgres target with several hosts follows its
primary.

A primary and a physical standby of it made by the test (pg_basebackup -R). Route pg's
external target comes from PGHOST=127.0.0.1,127.0.0.1 PGPORT=<primary>,<standby>
PGTARGETSESSIONATTRS=read-write, the primary first.

  - --check and SHOW ROUTES show both hosts and target_session_attrs, and no password.
  - New sessions through switchyard land on the primary (pg_is_in_recovery() = f, the
    primary's port), with pooling on (the default), whoever comes first.
  - The standby listed FIRST (PGPORT=<standby>,<primary>) changes nothing: libpq skips the
    read-only server, so sessions still land on the primary.
  - The primary is killed (immediate shutdown) and the standby promoted (pg_promote): the
    first new session that succeeds after the promotion has returned is on the promoted
    server, and it comes within 2 s.
  - Idle sessions open across that failover (with SET and PREPARE) carry on on the promoted
    server: their next query is answered within 2 s of the promotion, their state replayed
    (reconnect_window, pg_reconnect.c).
  - Two writable servers, the first one fenced under its sessions (ALTER SYSTEM SET
    default_transaction_read_only = on, reload), as a planned failover's old primary is:
    its sessions are moved to the other at their next idle moment, state replayed; a write
    refused there (25006) is the client's error as direct, and the next one lands on the
    writable server. A session that made itself read-only (its own SET) is not moved.
"""

import os
import time

import psycopg2

import harness
from harness import check, fail
import test_switch_catchup as tcu

PASSWORD = "mh-Secret-9"


def _start(primary, standby, order):
    port = harness.free_port()
    head = ("[switchyard]\nmetrics_listen = off\ndrain_timeout = 2\n\n"
            "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % port)
    conf = head + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                                   builtin="host=127.0.0.1 port=1 dbname=postgres")
    first, second = (primary, standby) if order == "primary-first" else (standby, primary)
    env = {"PGHOST": "127.0.0.1,127.0.0.1", "PGPORT": "%d,%d" % (first.port, second.port),
           "PGTARGETSESSIONATTRS": "read-write", "PGUSER": "postgres", "PGPASSWORD": PASSWORD,
           "PGDATABASE": "sourcegraph", "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "3"}
    return harness.Switchyard(conf, env=env), conf, env, first, second


def _where(port):
    """(in recovery, server port) of a new session through switchyard, or None when it failed."""
    r = harness.psql(port, "SELECT pg_is_in_recovery(), inet_server_port()", env=None)
    if r.returncode != 0:
        return None
    out = r.stdout.strip().split("|")
    return (out[0], int(out[1])) if len(out) == 2 else None


def _check_display(sy, conf, env, first, second):
    d = harness.tmpdir("conf")
    path = os.path.join(d, "switchyard.conf")
    with open(path, "w") as f:
        f.write(conf)
    r = harness.run([harness.switchyard_bin(), "--config", path, "--check"], env=harness.clean_env(env), timeout=30)
    check(r.returncode == 0, "--check failed: %s %s" % (r.stdout, r.stderr))
    check(PASSWORD not in r.stdout + r.stderr, "--check shows the password:\n%s" % r.stdout)
    want = "host=127.0.0.1,127.0.0.1 port=%d,%d" % (first.port, second.port)
    check(want in r.stdout and "target_session_attrs=read-write" in r.stdout,
          "--check does not show the host list (%s) and target_session_attrs:\n%s" % (want, r.stdout))
    con = harness.Console(sy.listeners["pg"])
    row = [x for x in con.rows("SHOW ROUTES") if x["route"] == "pg"][0]
    con.close()
    check(want in row["external"] and "target_session_attrs=read-write" in row["external"]
          and PASSWORD not in str(row), "SHOW ROUTES: %r" % row)


def _primary_pair():
    primary = harness.PgCluster("mh-primary", hba=tcu.REPL_HBA)
    standby = tcu._Standby(primary, name="mh-standby")
    harness.wait_until(lambda: primary.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                       == "1", timeout=30, what="the standby streaming")
    check(standby.sql("SELECT pg_is_in_recovery()") == "t", "the standby is not in recovery")
    return primary, standby


def test_multihost_lands_on_primary_and_follows_promotion(ctx):
    primary, standby = _primary_pair()
    sy, conf, env, first, second = _start(primary, standby, "primary-first")
    _check_display(sy, conf, env, first, second)
    for i in range(5):
        w = _where(sy.port)
        check(w == ("f", primary.port), "session %d landed on %r, not on the primary (port %d)" % (i, w, primary.port))

    primary.kill()                      # pg_ctl stop -m immediate
    check(standby.sql("SELECT pg_promote(true, 30)") == "t", "pg_promote failed")
    promoted = time.monotonic()
    deadline = promoted + 10
    tries = 0
    while True:
        tries += 1
        w = _where(sy.port)
        if w is not None:
            break
        if time.monotonic() > deadline:
            fail("no session succeeded within 10 s of the promotion (%d tries):\n%s" % (tries, sy.log_text()[-2000:]))
        time.sleep(0.05)
    took = time.monotonic() - promoted
    check(w == ("f", standby.port), "the first session after the promotion landed on %r" % (w,))
    check(took <= 2.0, "the first session on the promoted server came %.2f s after the promotion" % took)
    for i in range(3):
        w = _where(sy.port)
        check(w == ("f", standby.port), "session %d after the promotion landed on %r" % (i, w))
    print("multi-host failover: first session on the promoted standby %.3f s after pg_promote returned (%d tries)"
          % (took, tries))


def test_multihost_standby_listed_first(ctx):
    primary, standby = _primary_pair()
    sy, conf, env, first, second = _start(primary, standby, "standby-first")
    for i in range(5):
        w = _where(sy.port)
        check(w == ("f", primary.port), "session %d landed on %r, not on the primary (port %d)" % (i, w, primary.port))


def _session(port):
    c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="sourcegraph", connect_timeout=10)
    c.autocommit = True
    return c


def _one(c, q):
    with c.cursor() as cur:
        cur.execute(q)
        return cur.fetchone() if cur.description else None


def _wait_saved(sy, n):
    con = harness.Console(sy.listeners["pg"])
    harness.wait_clients(con, lambda rows: sum(1 for r in rows if "replay=saved" in r["detail"]) >= n,
                         "%d sessions with their state saved" % n, route="pg")
    con.close()


def test_idle_sessions_follow_promotion(ctx):
    primary, standby = _primary_pair()
    sy, conf, env, first, second = _start(primary, standby, "primary-first")
    sessions = []
    for i in range(3):
        c = _session(sy.port)
        _one(c, "SET search_path = mh_%d, public" % i)
        _one(c, "PREPARE q%d AS SELECT %d + $1" % (i, i))
        check(_one(c, "SELECT inet_server_port()")[0] == primary.port, "session %d not on the primary" % i)
        sessions.append(c)
    _wait_saved(sy, 3)
    primary.kill()
    check(standby.sql("SELECT pg_promote(true, 30)") == "t", "pg_promote failed")
    promoted = time.monotonic()
    for i, c in enumerate(sessions):
        row = _one(c, "SELECT inet_server_port(), current_setting('search_path')")
        got = _one(c, "EXECUTE q%d(40)" % i)[0]
        check(row == (standby.port, "mh_%d, public" % i) and got == 40 + i,
              "session %d after the promotion: %r, EXECUTE %r" % (i, row, got))
    took = time.monotonic() - promoted
    check(took <= 2.0, "the idle sessions were answered %.2f s after the promotion" % took)
    print("idle sessions across a failover: all 3 answered on the promoted server %.3f s after pg_promote" % took)
    for c in sessions:
        c.close()


def test_fenced_server_sessions_move(ctx):
    a = harness.PgCluster("mh-a")
    b = harness.PgCluster("mh-b")
    for c in (a, b):
        c.sql("CREATE TABLE fence_t (x int)", db="sourcegraph")
    sy, conf, env, first, second = _start(a, b, "primary-first")
    mover = _session(sy.port)
    _one(mover, "SET search_path = fenced, public")
    _one(mover, "PREPARE q AS SELECT 7 * $1")
    writer = _session(sy.port)
    own = _session(sy.port)   # read-only by its own choice: must stay
    _one(own, "SET default_transaction_read_only = on")
    try:
        _one(own, "INSERT INTO fence_t VALUES (0)")
        fail("a read-only session's INSERT succeeded")
    except psycopg2.Error as e:
        check(e.pgcode == "25006", "the session's own read-only INSERT: %s %s" % (e.pgcode, e))
    for c in (mover, writer, own):
        check(_one(c, "SELECT inet_server_port()")[0] == a.port, "a session is not on the first server")
    since = len(sy.log_text())
    _wait_saved(sy, 3)

    a.sql("ALTER SYSTEM SET default_transaction_read_only = on")
    a.sql("SELECT pg_reload_conf()")
    # The backend reads its new configuration after the next command: one more query each
    # brings the ParameterStatus (or a write's 25006), then the move at the idle moment.
    _one(mover, "SELECT 1")
    _one(mover, "SELECT 1")
    deadline = time.monotonic() + 10
    while _one(mover, "SELECT inet_server_port()")[0] != b.port:
        check(time.monotonic() < deadline, "the session on the fenced server was not moved:\n%s"
              % sy.log_text()[since:][-3000:])
        time.sleep(0.05)
    check(_one(mover, "SELECT current_setting('search_path')")[0] == "fenced, public"
          and _one(mover, "EXECUTE q(6)")[0] == 42, "the moved session lost its state")

    refused = 0
    for i in range(20):
        try:
            _one(writer, "INSERT INTO fence_t VALUES (%d)" % (i + 1))
            if _one(writer, "SELECT inet_server_port()")[0] == b.port:
                break
        except psycopg2.Error as e:
            check(e.pgcode == "25006", "the write on the fenced server: %s %s" % (e.pgcode, e))
            refused += 1
        time.sleep(0.05)
    check(_one(writer, "SELECT inet_server_port()")[0] == b.port, "the writer was not moved to the writable server")
    check(int(b.sql("SELECT count(*) FROM fence_t", db="sourcegraph")) >= 1, "no write on the writable server")

    for _ in range(3):
        _one(own, "SELECT 1")
    check(_one(own, "SELECT inet_server_port()")[0] == a.port, "the session read-only by its own SET was moved")
    sy.wait_log(r"event=server_read_only .* reconnecting=1", since=since, count=2)
    print("fenced server: the idle session and the writer moved (%d writes refused with 25006 before)" % refused)
    for c in (mover, writer, own):
        c.close()
