"""
test_cli.py - issue 4: `switchyard switch|status|pause|resume|reload`, the command-line front
end to the admin console (proxy/cli/cli.c), run as a real process against a running switchyard.

The contract under test is the exit code: 0 the command completed, 1 the console refused or
failed it, 2 bad usage or configuration, 3 the console cannot be reached (or refuses the login).

Routes used (one switchyard, postgres listener on loopback TCP and a unix socket):
    pg       database sourcegraph (default); builtin = ctx.builtin, external = ctx.external
             (PG*: TLS verify-full, scram_user); starts on builtin (active = builtin)
    pg-dead  database deaddb; builtin = ctx.builtin, external = DEAD_PG* -> a closed port
"""

import os
import re

import harness
from harness import check, fail, psql

WHERE = "SELECT current_setting('sy.cluster'), inet_server_port()"

# The leak main.c has before it hands over to sy_cli_main (its `overrides` array is allocated
# first): not the CLI's, tolerated by name so that any leak of cli.c still fails the test.
_KNOWN_LEAK_FRAME = re.compile(r"#\d+ 0x[0-9a-f]+ in main proxy/main\.c:\d+")


def _sanitizer_problems(stderr):
    """Sanitizer reports in a CLI run's stderr, except the known main.c leak."""
    if "ERROR: AddressSanitizer" in stderr or "runtime error:" in stderr:
        return stderr
    if "LeakSanitizer" not in stderr:
        return None
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of )", stderr)
    for b in blocks[1:]:
        frames = [l.strip() for l in b.splitlines() if re.match(r"\s*#\d+ ", l)]
        own = [f for f in frames if "libsanitizer" not in f and "asan_" not in f]
        if not own or not _KNOWN_LEAK_FRAME.match(own[0]):
            return stderr
    return None


def cli(*args, env=None, timeout=60):
    """Run `switchyard ARGS...` with a clean environment (USER=postgres: the name SWITCH's
    precheck uses where a target names no user). Returns CompletedProcess (text)."""
    e = harness.clean_env({"USER": "postgres",
                           "ASAN_OPTIONS": harness.ASAN_OPTIONS,
                           "UBSAN_OPTIONS": harness.UBSAN_OPTIONS,
                           # leaks are reported, not turned into exit status 1: the exit
                           # code is what is under test (reports are checked below)
                           "LSAN_OPTIONS": "exitcode=0"})
    if env:
        e.update({k: str(v) for k, v in env.items() if v is not None})
    r = harness.run([harness.switchyard_bin()] + [str(a) for a in args], env=e, timeout=timeout)
    rep = _sanitizer_problems(r.stderr)
    if rep:
        fail("sanitizer report from switchyard %s:\n%s" % (" ".join(map(str, args)), rep[-3000:]))
    return r


def expect(r, rc, what, stderr_has=(), stdout_has=()):
    if r.returncode != rc:
        fail("%s: exit %d, want %d\n  stdout: %r\n  stderr: %r" % (what, r.returncode, rc, r.stdout[-1500:],
                                                                   r.stderr[-1500:]))
    for s in stderr_has:
        check(s in r.stderr, "%s: stderr lacks %r: %r" % (what, s, r.stderr[-1500:]))
    for s in stdout_has:
        check(s in r.stdout, "%s: stdout lacks %r: %r" % (what, s, r.stdout[-1500:]))
    return r


def tsv_rows(out):
    """--tsv output as a list of dicts keyed by the header."""
    lines = out.rstrip("\n").split("\n")
    head = lines[0].split("\t")
    rows = []
    for l in lines[1:]:
        vals = l.split("\t")
        check(len(vals) == len(head), "tsv row %r has %d fields, header %d" % (l, len(vals), len(head)))
        rows.append(dict(zip(head, vals)))
    return rows


def aligned_rows(out):
    """The aligned table as a list of dicts: every column starts where its header does."""
    lines = out.rstrip("\n").split("\n")
    head = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    names = head.split()
    rows = []
    for l in lines[1:]:
        row = {}
        for i, name in enumerate(names):
            end = starts[i + 1] if i + 1 < len(starts) else len(l)
            if i > 0:
                check(l[starts[i] - 1:starts[i]] == " ",
                      "column %s does not start at its header's offset %d in %r" % (name, starts[i], l))
            row[name] = l[starts[i]:end].strip()
        rows.append(row)
    return rows


def start(ctx, listener_extra="", globals_extra="", extra_env=None, listen_host="127.0.0.1"):
    """switchyard with routes pg and pg-dead (see the module docstring), both on builtin."""
    port = harness.free_port()
    sock = harness.tmpdir("sy-sock")
    dead = harness.closed_port()
    conf = (
        "[switchyard]\nmetrics_listen = off\ndrain_timeout = 2\nconnect_timeout = 3\n%s\n"
        "[listener pg]\nprotocol = postgres\nlisten = %s:%d\nunix_socket = %s\n%s\n"
        % (globals_extra, listen_host, port, sock, listener_extra)
        + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo(),
                           extra="active = builtin")
        + harness.pg_route("pg-dead", "deaddb", env_prefix="DEAD_", builtin=ctx.builtin.conninfo(dbname="postgres"),
                           extra="active = builtin"))
    env = harness.external_env(ctx, user="scram_user", db="sourcegraph")
    env.update({"DEAD_PGHOST": "127.0.0.1", "DEAD_PGPORT": str(dead), "DEAD_PGUSER": "postgres",
                "DEAD_PGSSLMODE": "disable", "DEAD_PGCONNECT_TIMEOUT": "3"})
    env.update(extra_env or {})
    sy = harness.Switchyard(conf, env=env, wait=False)
    harness.wait_port(port, host=listen_host, proc=sy.proc.popen, what="switchyard")
    sy.sock = sock
    sy.dead_port = dead
    return sy


def active_of(sy, route):
    r = expect(cli("status", route, "--tsv", "--host", "127.0.0.1", "--port", sy.port), 0, "status " + route)
    rows = tsv_rows(r.stdout)
    check(len(rows) == 1 and rows[0]["route"] == route, "status %s: rows %r" % (route, rows))
    return rows[0]["active"]


def lands_on(sy, cluster, db="sourcegraph"):
    r = psql(sy.port, WHERE, db=db)
    check(r.returncode == 0, "psql through switchyard failed: %s" % r.stderr.strip())
    want = "%s|%d" % (cluster.name, cluster.port)
    check(r.stdout.strip() == want, "a new connection landed on %r, want %r" % (r.stdout.strip(), want))


def test_cli_status_and_switch_both_ways(ctx):
    sy = start(ctx)
    conf = ["--config", sy.conf_path]

    # status through the config file (unix socket first), aligned table
    r = expect(cli(*conf, "status"), 0, "status", stdout_has=("route", "active"))
    rows = aligned_rows(r.stdout)
    check([x["route"] for x in rows] == ["pg", "pg-dead"], "status routes: %r" % rows)
    check(all(x["active"] == "builtin" for x in rows), "status active: %r" % rows)
    check(rows[0]["listener"] == "pg" and rows[0]["protocol"] == "postgres", "status row: %r" % rows[0])
    # the same through TCP, options after the subcommand, one route, tab-separated
    r = expect(cli("status", "pg", "--host", "127.0.0.1", "--port", sy.port, "--tsv"), 0, "status pg --tsv")
    rows = tsv_rows(r.stdout)
    check(len(rows) == 1 and rows[0]["route"] == "pg" and rows[0]["active"] == "builtin", "status pg: %r" % rows)
    check("****" in rows[0]["external"] and harness.USERS["scram_user"][0] not in r.stdout,
          "external target shown unmasked: %r" % rows[0]["external"])
    # the unix socket alone, named with --host
    expect(cli("--host", sy.sock, "--port", sy.port, "status", "pg"), 0, "status over the unix socket")
    lands_on(sy, ctx.builtin)

    # builtin -> external: exit 0, status says external, a new connection lands there
    expect(cli(*conf, "switch", "pg", "external"), 0, "switch pg external", stdout_has=("external",))
    check(active_of(sy, "pg") == "external", "status after switch: not external")
    check(active_of(sy, "pg-dead") == "builtin", "pg-dead moved with pg")
    lands_on(sy, ctx.external)

    # and back, with --gradual, options first
    expect(cli("--port", sy.port, "switch", "pg", "builtin", "--gradual"), 0, "switch pg builtin --gradual")
    check(active_of(sy, "pg") == "builtin", "status after switching back: not builtin")
    lands_on(sy, ctx.builtin)

    # switching to the target already active completes too
    expect(cli(*conf, "switch", "pg", "builtin"), 0, "switch pg builtin (already)")
    sy.stop()


def test_cli_switch_refused_and_forced(ctx):
    sy = start(ctx, globals_extra="reconnect_window = 2\n")   # a forced route's new client: 08001 after 2 s
    conf = ["--config", sy.conf_path]

    # no such route: the console refuses, exit 1, message on stderr
    r = expect(cli(*conf, "switch", "nosuch", "external"), 1, "switch nosuch", stderr_has=("nosuch",))
    check(r.stdout == "", "output on stdout for a refused switch: %r" % r.stdout)
    expect(cli(*conf, "status", "nosuch"), 1, "status nosuch", stderr_has=("nosuch",))

    # unreachable target: refused with the cause, nothing moves
    hostport = "127.0.0.1:%d" % sy.dead_port
    r = expect(cli(*conf, "switch", "pg-dead", "external"), 1, "switch pg-dead external",
               stderr_has=("refused", hostport))
    check("Connection refused" in r.stderr, "the cause is missing: %r" % r.stderr)
    check(active_of(sy, "pg-dead") == "builtin", "a refused switch moved the route")
    lands_on(sy, ctx.builtin, db="deaddb")

    # FORCE: switches anyway, and a new client gets the documented connect error
    expect(cli(*conf, "switch", "pg-dead", "external", "--force"), 0, "switch pg-dead external --force")
    check(active_of(sy, "pg-dead") == "external", "forced switch did not move the route")
    r = psql(sy.port, "SELECT 1", db="deaddb")
    check(r.returncode != 0 and hostport in r.stderr,
          "a client of a route forced onto a dead target: rc %d %r" % (r.returncode, r.stderr))
    # the other route is untouched
    check(active_of(sy, "pg") == "builtin", "route pg moved")
    sy.stop()


def test_cli_console_unreachable(ctx):
    port = harness.closed_port()
    r = expect(cli("status", "--host", "127.0.0.1", "--port", port), 3, "status on a closed port",
               stderr_has=("127.0.0.1:%d" % port, "Connection refused"))
    check(r.stdout == "", "stdout: %r" % r.stdout)
    expect(cli("switch", "pg", "external", "-o", "listener.pg.listen=127.0.0.1:%d" % port), 3,
           "switch with the listener moved to a closed port", stderr_has=("127.0.0.1:%d" % port,))
    # a config whose listener is a unix socket nobody serves
    d = harness.tmpdir("nosock")
    conf = os.path.join(d, "sy.conf")
    with open(conf, "w") as f:
        f.write("[listener pg]\nprotocol = postgres\nlisten =\nunix_socket = %s\n"
                "[route pg]\nlistener = pg\ndefault = true\nbuiltin = \"host=127.0.0.1 port=%d\"\n" % (d, port))
    expect(cli("--config", conf, "reload"), 3, "reload over a dead unix socket", stderr_has=(d + ":5432",))


def test_cli_bad_usage(ctx):
    for args, msg in [
        (("switch", "pg"), "usage"),
        (("switch", "pg", "sideways"), "builtin or external"),
        (("switch", "pg", "external", "extra"), "usage"),
        (("switch", "p;g", "external"), "not a route name"),
        (("status", "a", "b"), "usage"),
        (("pause",), "usage"),
        (("resume", "a", "b"), "usage"),
        (("reload", "now"), "usage"),
        (("status", "--force"), "--force"),
        (("--bogus", "status"), "--bogus"),
        (("status", "--port"), "--port"),
        (("status", "--port", "0"), "--port"),
        (("status", "--port", "99999"), "--port"),
        (("status", "--password=s3cret"), "never accepted"),
        (("status", "--password-file", "/nonexistent/pw"), "/nonexistent/pw"),
        (("--config", "/nonexistent/sy.conf", "status"), "/nonexistent/sy.conf"),
        (("status", "-o", "listener.pg.listen=127.0.0.1:0"), "listener"),
    ]:
        r = expect(cli(*args), 2, "switchyard %s" % " ".join(args), stderr_has=(msg,))
        check("s3cret" not in r.stderr + r.stdout, "a password argument was echoed")
    # help is not an error: usage on stdout, exit 0
    for args in (("help",), ("switch", "--help"), ("--help", "status")):
        expect(cli(*args), 0, "switchyard %s" % " ".join(args),
               stdout_has=("switchyard switch ROUTE builtin|external", "Exit status"))
    # the daemon's own options still work and are not taken for a subcommand
    r = cli("--check", "-o", "listener.pg.listen=127.0.0.1:%d" % harness.free_port())
    expect(r, 0, "switchyard --check", stdout_has=("listener pg (postgres)", "route pg"))


def test_cli_admin_password(ctx):
    """A console outside loopback needs the admin password: from --password-file,
    SWITCHYARD_ADMIN_PASSWORD or the configuration, never from an argument."""
    addr = _non_loopback_address()
    pw = "adm-Secret-9"
    sy = start(ctx, listen_host=addr, globals_extra='admin_password = "%s"' % pw,
               listener_extra='auth_password = "client-pw"')
    target = ("--host", addr, "--port", sy.port)
    hp = "%s:%d" % (addr, sy.port)
    # no password: the console refuses the login -> exit 3, naming where
    expect(cli(*target, "status"), 3, "status without a password", stderr_has=(hp,))
    d = harness.tmpdir("pw", mode=0o700)
    good, bad = os.path.join(d, "good"), os.path.join(d, "bad")
    with open(good, "w") as f:
        f.write(pw + "\n")
    with open(bad, "w") as f:
        f.write("wrong\n")
    r = expect(cli(*target, "status", "--password-file", bad), 3, "status with a wrong password",
               stderr_has=(hp, "password"))
    expect(cli(*target, "status", "--password-file", good), 0, "status --password-file", stdout_has=("pg-dead",))
    expect(cli(*target, "status", env={"SWITCHYARD_ADMIN_PASSWORD": pw}), 0, "status with SWITCHYARD_ADMIN_PASSWORD")
    # the configuration's admin_password (the config names the listener; no unix socket
    # here would be trusted, so override it away)
    expect(cli("--config", sy.conf_path, "-o", "listener.pg.unix_socket=", "status"), 0,
           "status with the config's admin_password")
    # PGPASSWORD (in the container: the external database's password) is never offered
    expect(cli(*target, "status", env={"PGPASSWORD": pw}), 3, "status with only PGPASSWORD set")
    # trusted over the unix socket without any password
    expect(cli("--host", sy.sock, "--port", sy.port, "status"), 0, "status over the unix socket")
    sy.stop()


def test_cli_pause_resume_reload(ctx):
    """pause/resume send PAUSE <route> / RESUME <route>, and status shows the hold; reload sends
    RELOAD, and a configuration that does not validate comes back as exit 1."""
    sy = start(ctx)
    conf = ["--config", sy.conf_path]
    expect(cli(*conf, "pause", "pg"), 0, "pause pg")
    check(active_of(sy, "pg") == "builtin (paused)", "status after pause: %r" % active_of(sy, "pg"))
    check(active_of(sy, "pg-dead") == "builtin", "pause pg held pg-dead too")
    expect(cli(*conf, "resume", "pg"), 0, "resume pg")
    check(active_of(sy, "pg") == "builtin", "status after resume: %r" % active_of(sy, "pg"))
    lands_on(sy, ctx.builtin)
    expect(cli(*conf, "pause", "nosuch"), 1, "pause nosuch", stderr_has=("nosuch",))
    expect(cli(*conf, "resume", "nosuch"), 1, "resume nosuch", stderr_has=("nosuch",))
    expect(cli(*conf, "reload"), 0, "reload")
    check(active_of(sy, "pg") == "builtin", "reload of an unchanged configuration moved route pg")
    # a configuration that no longer validates: RELOAD refuses, exit 1, nothing changes
    with open(sy.conf_path, "a") as f:
        f.write("\n[route broken]\nlistener = nosuchlistener\n")
    expect(cli("--port", sy.port, "reload"), 1, "reload of a broken configuration", stderr_has=("broken",))
    check(active_of(sy, "pg") == "builtin", "a refused reload moved route pg")
    sy.stop()


def _non_loopback_address():
    """An IPv4 address of this machine outside 127.0.0.0/8 (the console trusts loopback)."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))     # no packet is sent: this only picks a source address
        addr = s.getsockname()[0]
    except OSError:
        addr = ""
    finally:
        s.close()
    if not addr or addr.startswith("127."):
        fail("prerequisite missing: a non-loopback IPv4 address on this machine (for the console's "
             "password check)")
    return addr
