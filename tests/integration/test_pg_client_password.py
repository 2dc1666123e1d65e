"""
test_pg_client_password.py - issue 12 D: the client's own password where the target needs
one. The built-in target's conninfo has no password (the container's database trusts local
clients); when its server demands one for the client's user, switchyard asks the client as
the server would (AuthenticationCleartextPassword, on loopback), connects again with it,
and keeps it for moves. A wrong one gets 28P01 as direct; a client that has none fails as
direct (libpq: "fe_sendauth: no password supplied"). The password is never logged, and a
server opened with it is never pooled for another client.
"""

import harness
import switch_support as ss
from harness import PgError, PgWire, check

USER, PW = "pw_user2", "client-own-secret-9"


def _cluster():
    hba = ("local all all trust\nhost all %s 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n" % USER)
    c = harness.PgCluster("needs-pw", hba=hba, setup=False)
    c.sql("CREATE DATABASE sourcegraph")
    c.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, PW))
    return c


def _start(c):
    port = harness.free_port()
    conf = ("[switchyard]\nmetrics_listen = off\n%s\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
            % (ss.GLOBALS, port))
    conf += harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                             builtin="host=127.0.0.1 port=%d sslmode=disable" % c.port, extra="active = builtin")
    # the external is the same server, also without a password: a move needs the client's
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(c.port), "PGSSLMODE": "disable"}
    return harness.Switchyard(conf, env=env)


def _outcome(port, password, user=USER):
    w = PgWire(port)
    try:
        w.startup(user=user, database="sourcegraph", password=password)
        got = ("ok", w.query("SELECT current_user")[0][0])
    except PgError as e:
        got = ("error", e.sqlstate)
    w.close()
    return got


def test_client_password_asked_where_the_target_needs_one(ctx):
    c = _cluster()
    sy = _start(c)
    problems = []
    for pw, want in ((PW, ("ok", USER)), ("wrong-one", ("error", "28P01"))):
        direct, via = _outcome(c.port, pw), _outcome(sy.port, pw)
        if direct != want or via != want:
            problems.append("password %r: direct %s, switchyard %s, want %s" % (pw, direct, via, want))
    # no password at all: libpq fails itself, the same way both ways
    for where, port in (("direct", c.port), ("switchyard", sy.port)):
        r = harness.run([harness.PSQL, "-X", "-w", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", "sourcegraph",
                         "-c", "SELECT 1"], env=harness.clean_env(home=harness.empty_home()))
        if r.returncode == 0 or "no password supplied" not in r.stderr:
            problems.append("%s without a password: rc %d %r" % (where, r.returncode, r.stderr.strip()))
    # psql with PGPASSWORD, as an application would
    r = harness.run([harness.PSQL, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(sy.port), "-U", USER, "-d", "sourcegraph",
                     "-c", "SELECT current_user"], env=harness.clean_env({"PGPASSWORD": PW}, home=harness.empty_home()))
    if r.returncode != 0 or r.stdout.strip() != USER:
        problems.append("psql with PGPASSWORD: %r %r" % (r.stdout, r.stderr))
    # the session keeps the password for a move to a target that also has none
    w = PgWire(sy.port)
    w.startup(user=USER, database="sourcegraph", password=PW)
    w.query("SET application_name = 'kept'")
    console = ss.Console(sy)
    row, _, _ = console.switch("pg", "external")
    if row.get("moved") != "1":
        problems.append("the session did not move: %r" % row)
    if w.query("SELECT current_user, current_setting('application_name')") != [(USER, "kept")]:
        problems.append("after the move: wrong session")
    w.close()
    # its server is not handed to a client that never gave the password
    harness.wait_until(lambda: not any(r["state"] == "relay" for r in console.rows("SHOW CLIENTS")
                                       if r["protocol"] == "postgres"), timeout=10, what="the session to end")
    nopw = PgWire(sy.port)
    try:
        nopw.startup(user=USER, database="sourcegraph")
        problems.append("a client without the password got a session")
    except PgError as e:
        if "authentication request 3" not in e.message:
            problems.append("a client without the password: %s %s, want to be asked" % (e.sqlstate, e.message))
    nopw.close()
    console.close()
    text = sy.log_text()
    if PW in text or "wrong-one" in text:
        problems.append("a password reached the log")
    if "event=password_asked" not in text:
        problems.append("no event=password_asked in the log")
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))
