"""
test_pg_routing.py - issue 2, case 4: each of the three default databases reaches its own
target; the client's startup parameters are visible upstream; configuration sources (env,
env file, -o) and the isolation of the PG*, CODEINTEL_PG*, CODEINSIGHTS_PG* families.
"""

import harness
from harness import PgWire, check, psql, psql_ok

WHO = ("SELECT current_database(), inet_server_port(), current_user, current_setting('sy.cluster'), "
       "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")


def test_three_routes_three_targets(ctx):
    ext, bi = ctx.external, ctx.builtin
    env = {}
    env.update(harness.external_env(ctx, user="scram_user", db="sourcegraph"))
    env.update(harness.external_env(ctx, user="md5_user", db="sourcegraph-codeintel", sslmode="disable",
                                    host="127.0.0.1", prefix="CODEINTEL_"))
    # codeinsights: nothing set, so its built-in target
    sy = harness.start_default(ctx, env=env)
    want = {
        "sourcegraph": "sourcegraph|%d|scram_user|external|t" % ext.port,
        "sourcegraph-codeintel": "sourcegraph-codeintel|%d|md5_user|external|f" % ext.port,
        "sourcegraph-codeinsights": "sourcegraph-codeinsights|%d|postgres|builtin|f" % bi.port,
    }
    bad = []
    for db, w in want.items():
        r = psql(sy.port, WHO, db=db)
        if r.returncode != 0 or r.stdout.strip() != w:
            bad.append("%s: want %s, got rc %d %r %r" % (db, w, r.returncode, r.stdout.strip(), r.stderr.strip()))
    # a database no route names goes to the default route (pg, external)
    r = psql(sy.port, "SELECT current_setting('sy.cluster'), inet_server_port()", db="postgres")
    if r.returncode != 0 or r.stdout.strip() != "external|%d" % ext.port:
        bad.append("unnamed database via the default route: rc %d %r %r" % (r.returncode, r.stdout, r.stderr))
    sy.stop()
    check(not bad, "\n".join(bad))


def test_no_default_route_unknown_database(ctx):
    port = harness.free_port()
    conf = harness.pg_conf(port, [harness.pg_route("only", "sourcegraph", builtin=ctx.builtin.conninfo())])
    sy = harness.Switchyard(conf)
    err, secs = harness.connect_error(sy.port, db="no-such-db")
    check(secs < 5, "error took %.1fs" % secs)
    check(err.sqlstate and err.sqlstate != "00000", "no SQLSTATE in %s" % err.fields)
    check(psql_ok(sy.port, "SELECT current_setting('sy.cluster')") == "builtin", "named route")
    sy.stop()


def test_prefix_families_are_isolated(ctx):
    """Variables of one family never leak into another route or into a built-in target: PG*
    without PGHOST leaves route pg on its built-in, whose conninfo is the config's alone."""
    env = {
        # no PGHOST: these must not reach the built-in connection of route pg
        "PGUSER": "no_such_user", "PGDATABASE": "no_such_db", "PGSSLMODE": "require",
        "PGSSLROOTCERT": ctx.tls.ca_b, "PGPASSWORD": "x",
    }
    # codeintel: external with prefer and no root cert of its own; if PGSSLROOTCERT (CA B)
    # leaked into it, libpq would verify, fail and fall back to plaintext (ssl = f)
    env.update(harness.prefixed("CODEINTEL_", {
        "PGHOST": "localhost", "PGPORT": str(ctx.external.port), "PGUSER": "scram_user",
        "PGPASSWORD": harness.USERS["scram_user"][0], "PGDATABASE": "sourcegraph-codeintel",
        "PGSSLMODE": "prefer"}))
    sy = harness.start_default(ctx, env=env)
    out = psql_ok(sy.port, WHO, db="sourcegraph")
    check(out == "sourcegraph|%d|postgres|builtin|f" % ctx.builtin.port, "route pg: %r" % out)
    out = psql_ok(sy.port, WHO, db="sourcegraph-codeintel")
    check(out == "sourcegraph-codeintel|%d|scram_user|external|t" % ctx.external.port, "route codeintel: %r" % out)
    out = psql_ok(sy.port, WHO, db="sourcegraph-codeinsights")
    check(out == "sourcegraph-codeinsights|%d|postgres|builtin|f" % ctx.builtin.port, "route codeinsights: %r" % out)
    sy.stop()


def test_env_file_and_overrides(ctx):
    """The env file overrides the process environment; -o moves the listener."""
    port2 = harness.free_port()
    env = harness.external_env(ctx, user="scram_user", db="sourcegraph-codeinsights", prefix="CODEINSIGHTS_")
    env["CODEINSIGHTS_PGPORT"] = "1"   # wrong in the process environment ...
    env_file = "# an env file in the style of /etc/sourcegraph/env\nCODEINSIGHTS_PGPORT=%d\n" % ctx.external.port
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin), env=env, env_file=env_file,
                            args=["listener.pg.listen=127.0.0.1:%d" % port2])
    check(sy.port == port2, "harness did not pick up the -o listen")
    out = psql_ok(port2, WHO, db="sourcegraph-codeinsights")
    check(out == "sourcegraph-codeinsights|%d|scram_user|external|t" % ctx.external.port,
          "env file did not override the environment: %r" % out)
    r = psql(port, "SELECT 1")
    check(r.returncode != 0, "the config file's listen address still accepts after -o moved it")
    sy.stop()


STARTUP = {
    "application_name": "sy-app-test",
    "client_encoding": "LATIN1",
    "DateStyle": "SQL, DMY",
    "TimeZone": "Asia/Tokyo",
    "search_path": "sy_schema, public",
    "extra_float_digits": "3",
    "options": "-c statement_timeout=12345 -c work_mem=7777kB",
}
SHOW = [("application_name", "sy-app-test"), ("client_encoding", "LATIN1"), ("DateStyle", "SQL, DMY"),
        ("TimeZone", "Asia/Tokyo"), ("search_path", "sy_schema, public"), ("extra_float_digits", "3"),
        ("statement_timeout", "12345ms"), ("work_mem", "7777kB")]


def _show_all(w):
    got = {}
    for name, _v in SHOW:
        got[name] = w.query("SHOW %s" % name)[0][0]
    return got


def test_startup_parameters_visible_upstream(ctx):
    env = harness.external_env(ctx, user="scram_user")
    sy = harness.start_default(ctx, env=env)
    bad = []
    for db, cluster in (("sourcegraph", ctx.external), ("sourcegraph-codeinsights", ctx.builtin)):
        with PgWire(sy.port) as w:
            w.startup(database=db, **STARTUP)
            got = _show_all(w)
            for name, want in SHOW:
                if got[name] != want:
                    bad.append("%s: SHOW %s = %r, want %r" % (db, name, got[name], want))
            for name in ("application_name", "client_encoding", "DateStyle", "TimeZone"):
                if w.params.get(name) != STARTUP[name]:
                    bad.append("%s: ParameterStatus %s = %r, want %r" % (db, name, w.params.get(name), STARTUP[name]))
            app = cluster.sql("SELECT application_name FROM pg_stat_activity WHERE pid = %d" % w.pid)
            if app != STARTUP["application_name"]:
                bad.append("%s: pg_stat_activity shows application_name %r" % (db, app))
        # pgx sends "timezone" in lower case
        with PgWire(sy.port) as w:
            w.startup(database=db, timezone="America/Sao_Paulo")
            tz = w.query("SHOW TimeZone")[0][0]
            if tz != "America/Sao_Paulo":
                bad.append("%s: lower-case timezone parameter gave %r" % (db, tz))
    # the same through psql's own variables
    r = psql(sy.port, "SELECT current_setting('application_name'), current_setting('DateStyle'), "
                      "current_setting('TimeZone'), current_setting('search_path')",
             env={"PGAPPNAME": "psql-app", "PGDATESTYLE": "German, DMY", "PGTZ": "Europe/Paris",
                  "PGOPTIONS": "-c search_path=psql_schema"})
    want = "psql-app|German, DMY|Europe/Paris|psql_schema"
    if r.returncode != 0 or r.stdout.strip() != want:
        bad.append("psql PGAPPNAME/PGDATESTYLE/PGTZ/PGOPTIONS: want %r got %r %r" % (want, r.stdout.strip(), r.stderr))
    sy.stop()
    check(not bad, "\n".join(bad))


def test_bad_startup_parameter_reaches_client(ctx):
    """An invalid parameter value is the upstream's error, relayed (not a hang or a close)."""
    sy = harness.start_default(ctx)
    err, _s = harness.connect_error(sy.port, db="sourcegraph", DateStyle="NotAStyle")
    check(err.sqlstate in ("22023", "08001"), "invalid DateStyle gave %s" % err)
    check('invalid value for parameter "DateStyle"' in err.message + err.fields.get("D", ""),
          "the upstream's reason is missing: %s" % err.fields)
    check(psql_ok(sy.port, "SELECT 1") == "1", "session after a rejected startup")
    sy.stop()


def test_builtin_on_unix_socket_and_active_override(ctx):
    """A built-in target on a unix socket directory; `active = builtin` keeps a route on its
    built-in although its external variables are set."""
    bi = ctx.builtin
    port = harness.free_port()
    conf = harness.pg_conf(port, [
        harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                         builtin="host=%s port=%d" % (bi.sockdir, bi.port)),
        harness.pg_route("pg-codeintel", "sourcegraph-codeintel", env_prefix="CODEINTEL_",
                         builtin=bi.conninfo(), extra="active = builtin"),
    ])
    env = harness.external_env(ctx, prefix="CODEINTEL_", db="sourcegraph-codeintel")
    sy = harness.Switchyard(conf, env=env)
    out = psql_ok(sy.port, "SELECT current_setting('sy.cluster'), inet_server_port() IS NULL")
    check(out == "builtin|t", "built-in over the unix socket: %r" % out)
    out = psql_ok(sy.port, "SELECT current_setting('sy.cluster')", db="sourcegraph-codeintel")
    check(out == "builtin", "active = builtin with CODEINTEL_PGHOST set: %r" % out)
    sy.stop()
