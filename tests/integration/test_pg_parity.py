"""
test_pg_parity.py - issue 2, case 1: with the same environment, switchyard reaches the
external server exactly when psql does, and when both fail the client's error carries the
same cause.

The matrix: every PGSSLMODE x server TLS on/off x PGSSLROOTCERT {CA A, absent, CA B} x host
{localhost, 127.0.0.1, a name not in the certificate (PGHOST=notincert.example with
PGHOSTADDR=127.0.0.1)} = 126 cases, plus
12 as a user admitted over TLS only. "TLS on" is the shared external cluster (hostssl and host
lines, scram-sha-256 for scram_user); "TLS off" is the shared built-in cluster (no TLS, trust).

One switchyard serves the whole matrix: case i is route m<i> on database m<i>, whose external
target comes from the M<i>_PG* family. Its HOME and psql's are the same empty directory, so
~/.postgresql/root.crt is absent in both (and we check the passwd home has none either, since
libpq 15 may look there).

For each case both sides run
    SELECT ssl, current_setting('sy.cluster') FROM pg_stat_ssl WHERE pid = pg_backend_pid()
so a success also has to agree on whether the upstream leg is encrypted and which server it
reached.
"""

import concurrent.futures
import os
import pwd
import re

import harness
from harness import PSQL, check, fail

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full", None)  # None: unset
SERVERS = ("tls", "plain")
ROOTS = ("ca_a", "absent", "ca_b")
HOSTS = ("localhost", "127.0.0.1", "notincert")
QUERY = "SELECT ssl, current_setting('sy.cluster') FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
USER = "scram_user"


def _cases(ctx):
    """The full matrix as scram_user (host lines: plaintext and TLS both allowed), plus every
    mode as tls_user, whom the external cluster only admits over TLS (hostnossl reject), so
    that `allow` has to retry with TLS after a rejection."""
    out = []
    combos = [(m, s, r, h, USER) for m in SSLMODES for s in SERVERS for r in ROOTS for h in HOSTS]
    combos += [(m, "tls", r, "localhost", "tls_user") for m in SSLMODES for r in ("ca_a", "absent")]
    for sslmode, server, root, host, user in combos:
        cluster = ctx.external if server == "tls" else ctx.builtin
        env = {"PGPORT": str(cluster.port), "PGUSER": user,
               "PGPASSWORD": harness.USERS[user][0], "PGDATABASE": "postgres",
               "PGCONNECT_TIMEOUT": "5"}
        if sslmode:
            env["PGSSLMODE"] = sslmode
        if host == "notincert":
            env["PGHOST"] = "notincert.example"
            env["PGHOSTADDR"] = "127.0.0.1"
        else:
            env["PGHOST"] = host
        if root == "ca_a":
            env["PGSSLROOTCERT"] = ctx.tls.ca_a
        elif root == "ca_b":
            env["PGSSLROOTCERT"] = ctx.tls.ca_b
        out.append(("%s/%s/%s/%s/%s" % (sslmode or "unset", server, root, host, user), env))
    return out


def _normalize_cause(c):
    c = c.strip()
    for p in ("FATAL:  ", "ERROR:  "):
        if c.startswith(p):
            c = c[len(p):]
    return c


def _outcome(r):
    if r.returncode == 0:
        return ("ok", r.stdout.strip())
    return ("fail", _normalize_cause(harness.libpq_cause(r.stderr)), r.stderr.strip())


def _check_home(home):
    pw_home = pwd.getpwuid(os.geteuid()).pw_dir
    for h in (home, pw_home):
        p = os.path.join(h, ".postgresql", "root.crt")
        if os.path.exists(p):
            fail("prerequisite: %s exists, so the 'absent root cert' cases cannot be absent" % p)


def test_parity_matrix(ctx):
    cases = _cases(ctx)
    home = harness.empty_home()
    _check_home(home)

    def direct(env):
        return _outcome(harness.run([PSQL, "-X", "-A", "-t", "-c", QUERY],
                                    env=harness.clean_env(env, home=home), timeout=30))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        direct_results = list(pool.map(lambda c: direct(c[1]), cases))

    # Sanity: the matrix must contain both outcomes and the causes we expect, or the
    # environment is not what this test assumes (and a proxy could "agree" by accident).
    causes = " | ".join(d[1] for d in direct_results if d[0] == "fail")
    oks = sum(1 for d in direct_results if d[0] == "ok")
    for want in ("server does not support SSL, but SSL was required", "certificate verify failed",
                 "does not match host name", "root certificate file"):
        check(want in causes, "direct psql never failed with %r; environment is off: %s" % (want, causes[:500]))
    check(oks >= 30, "direct psql succeeded in only %d cases" % oks)
    check("no encryption" in causes, "tls_user was admitted without TLS: the hostnossl reject is missing")

    routes = []
    env = {"HOME": home}
    for i, (_name, cenv) in enumerate(cases):
        routes.append(harness.pg_route("m%d" % i, "m%d" % i, env_prefix="M%d_" % i))
        env.update(harness.prefixed("M%d_" % i, cenv))
    port = harness.free_port()
    # reconnect_window = 2: "all down" waits that long for a host (issue 10), then fails as
    # direct; with the default 30 s it would meet psql's own connect_timeout
    sy = harness.Switchyard(harness.pg_conf(port, routes, globals_extra="reconnect_window = 2\n"), env=env)

    def proxied(i):
        return _outcome(harness.run([PSQL, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "postgres", "-d", "m%d" % i, "-c", QUERY],
                                    env=harness.clean_env({"PGCONNECT_TIMEOUT": "20"}, home=home),
                                    timeout=60))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        proxy_results = list(pool.map(proxied, range(len(cases))))

    mismatches = []
    for i, ((name, _env), d, p) in enumerate(zip(cases, direct_results, proxy_results)):
        if d[0] != p[0]:
            mismatches.append("%s: psql %s (%s), switchyard %s (%s)" % (name, d[0], d[1][:120], p[0], p[1][:200]))
        elif d[0] == "ok" and d[1] != p[1]:
            mismatches.append("%s: psql got %r, switchyard got %r (ssl, server)" % (name, d[1], p[1]))
        elif d[0] == "fail":
            want = d[1].splitlines()[0] if d[1] else ""
            if not want or want not in p[2]:
                mismatches.append("%s: cause differs: psql %r; switchyard %r" % (name, want, p[2][:300]))
            elif not re.search(r"\bm%d\b" % i, p[2]):
                mismatches.append("%s: switchyard's error does not name the route: %r" % (name, p[2][:300]))
    # the failures carry a connection SQLSTATE (psql does not show it; a raw client does)
    failing = [i for i, d in enumerate(direct_results) if d[0] == "fail"]

    def sqlstate(i):
        try:
            err, secs = harness.connect_error(port, db="m%d" % i, timeout=30)
            return err.sqlstate, secs
        except harness.TestFailure as e:
            return str(e), 0

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        states = list(pool.map(sqlstate, failing))
    for i, (st, secs) in zip(failing, states):
        if st not in ("08001", "08006", "28P01", "28000"):
            mismatches.append("%s: SQLSTATE %s, want 08001/08006/28P01/28000" % (cases[i][0], st))
    sy.check_alive()
    sy.stop()
    if mismatches:
        fail("%d mismatches in %d cases:\n%s" % (len(mismatches), len(cases), "\n".join(mismatches)))


test_parity_matrix.timeout = 240


VQUERY = ("SELECT current_user, inet_server_port(), current_setting('search_path'), "
          "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")


def test_libpq_variables_parity(ctx):
    """More of what libpq reads, compared the same way: host and hostaddr lists (libpq closes
    and reopens its socket between hosts), PGCONNECT_TIMEOUT moving on to the next host,
    PGTARGETSESSIONATTRS, PGSERVICE/PGSERVICEFILE, PGOPTIONS, PGSSLCRL, client certificates
    from the right and the wrong CA."""
    ext, tls = ctx.external, ctx.tls
    home = harness.empty_home()
    svc = os.path.join(harness.tmpdir("svc"), "pg_service.conf")
    closed = harness.closed_port()
    silent = harness.SilentListener()
    with open(svc, "w") as f:
        f.write("[extsvc]\nhost=localhost\nport=%d\nuser=scram_user\npassword=%s\ndbname=postgres\n"
                "sslmode=verify-full\nsslrootcert=%s\n" % (ext.port, harness.USERS["scram_user"][0], tls.ca_a))
    base = {"PGUSER": "scram_user", "PGPASSWORD": harness.USERS["scram_user"][0], "PGDATABASE": "postgres"}

    def case(**kw):
        e = dict(base)
        e.update({k: str(v) for k, v in kw.items()})
        return e

    cases = [
        ("host list", case(PGHOST="127.0.0.1,localhost", PGPORT="%d,%d" % (closed, ext.port), PGSSLMODE="prefer")),
        ("hostaddr list", case(PGHOST="a.example,b.example", PGHOSTADDR="127.0.0.1,127.0.0.1",
                               PGPORT="%d,%d" % (closed, ext.port), PGSSLMODE="verify-ca", PGSSLROOTCERT=tls.ca_a)),
        ("host list, all down", case(PGHOST="127.0.0.1,localhost", PGPORT="%d,%d" % (closed, closed))),
        ("connect_timeout moves on", case(PGHOST="127.0.0.1,127.0.0.1", PGPORT="%d,%d" % (silent.port, ext.port),
                                          PGCONNECT_TIMEOUT="2", PGSSLMODE="require")),
        ("target_session_attrs=standby", case(PGHOST="localhost", PGPORT=ext.port, PGTARGETSESSIONATTRS="standby")),
        ("target_session_attrs=read-write", case(PGHOST="127.0.0.1,localhost", PGPORT="%d,%d" % (ext.port, ext.port),
                                                 PGTARGETSESSIONATTRS="read-write")),
        ("service file", {"PGSERVICE": "extsvc"}),   # PGSERVICEFILE: process-wide, below
        ("options", case(PGHOST="localhost", PGPORT=ext.port, PGOPTIONS="-c search_path=sy_from_env")),
        ("CRL revoking the server", case(PGHOST="localhost", PGPORT=ext.port, PGSSLMODE="verify-full",
                                         PGSSLROOTCERT=tls.ca_a, PGSSLCRL=tls.crl_revoked)),
        ("CRL revoking nothing", case(PGHOST="localhost", PGPORT=ext.port, PGSSLMODE="verify-full",
                                      PGSSLROOTCERT=tls.ca_a, PGSSLCRL=tls.crl_empty)),
        ("unix socket host", case(PGHOST=ext.sockdir, PGPORT=ext.port)),
        ("client cert from CA B", {"PGHOST": "localhost", "PGPORT": str(ext.port), "PGUSER": "cert_user",
                                   "PGDATABASE": "postgres", "PGSSLMODE": "verify-full", "PGSSLROOTCERT": tls.ca_a,
                                   "PGSSLCERT": tls.client_b_crt, "PGSSLKEY": tls.client_b_key}),
        ("client cert from CA A", {"PGHOST": "localhost", "PGPORT": str(ext.port), "PGUSER": "cert_user",
                                   "PGDATABASE": "postgres", "PGSSLMODE": "verify-full", "PGSSLROOTCERT": tls.ca_a,
                                   "PGSSLCERT": tls.client_crt, "PGSSLKEY": tls.client_key}),
    ]

    def direct(env):
        # libpq 15 has no keyword for the service file, only the variable; switchyard takes it
        # from its own environment for every route, so both sides get it the same way
        return _outcome(harness.run([PSQL, "-X", "-A", "-t", "-c", VQUERY],
                                    env=harness.clean_env(dict(env, PGSERVICEFILE=svc), home=home), timeout=60))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        direct_results = list(pool.map(lambda c: direct(c[1]), cases))
    expect = {"host list": "ok", "hostaddr list": "ok", "host list, all down": "fail",
              "connect_timeout moves on": "ok", "target_session_attrs=standby": "fail",
              "target_session_attrs=read-write": "ok", "service file": "ok", "options": "ok",
              "client cert from CA B": "fail", "client cert from CA A": "ok",
              "CRL revoking the server": "fail", "CRL revoking nothing": "ok", "unix socket host": "ok"}
    for (name, _e), d in zip(cases, direct_results):
        check(d[0] == expect[name], "direct psql, %s: %s %s" % (name, d[0], d[1][:300]))

    routes, env = [], {"HOME": home, "PGSERVICEFILE": svc}
    for i, (_name, cenv) in enumerate(cases):
        routes.append(harness.pg_route("v%d" % i, "v%d" % i, env_prefix="V%d_" % i))
        env.update(harness.prefixed("V%d_" % i, cenv))
    port = harness.free_port()
    # reconnect_window = 2, as in the matrix above: with the default 30 s, "all down" waits
    # as long as psql's own PGCONNECT_TIMEOUT below, and which one fires first is a race
    sy = harness.Switchyard(harness.pg_conf(port, routes, globals_extra="reconnect_window = 2\n"), env=env)

    def proxied(i):
        return _outcome(harness.run([PSQL, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "postgres", "-d", "v%d" % i, "-c", VQUERY],
                                    env=harness.clean_env({"PGCONNECT_TIMEOUT": "30"}, home=home), timeout=60))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        proxy_results = list(pool.map(proxied, range(len(cases))))
    mismatches = []
    for i, ((name, _env), d, p) in enumerate(zip(cases, direct_results, proxy_results)):
        if d[0] != p[0]:
            mismatches.append("%s: psql %s (%s), switchyard %s (%s)" % (name, d[0], d[1][:200], p[0], p[1][:300]))
        elif d[0] == "ok" and d[1] != p[1]:
            mismatches.append("%s: psql got %r, switchyard got %r" % (name, d[1], p[1]))
        elif d[0] == "fail":
            want = d[1].splitlines()[0] if d[1] else ""
            if not want or want not in p[2]:
                mismatches.append("%s: cause differs: psql %r; switchyard %r" % (name, want, p[2][:400]))
    sy.check_alive()
    sy.stop()
    if mismatches:
        fail("%d of %d cases differ:\n%s" % (len(mismatches), len(cases), "\n".join(mismatches)))


test_libpq_variables_parity.timeout = 180
