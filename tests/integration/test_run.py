"""
test_run.py - issue 11: `switchyard run [options] -- COMMAND` (proxy/cli/run.c), the entry
point that wraps the application, `switchyard --wait-ready`, `make install` and the man page.

The "application" is a shell script that uses psql, pgbench and redis-cli with nothing but
the environment `switchyard run` gives it. The real targets are real servers: the shared
external Postgres cluster (TLS verify-full against CA A, SCRAM) and a RedisServer with
requirepass. The wrapper's environment carries them the way an operator's `docker run -e`
would (PGHOST, PGPASSWORD, PGSSLROOTCERT, ..., REDIS_ENDPOINT=redis://:pw@host:port).

Routes (one switchyard, started by `switchyard run`):
    pg           database sourcegraph (default); builtin ctx.builtin, external = PG*
    pg-codeintel database sourcegraph-codeintel; builtin ctx.builtin, external = CODEINTEL_PG*
    redis-store  builtin RedisServer, external = REDIS_STORE_ENDPOINT / REDIS_ENDPOINT
"""

import os
import re
import signal
import subprocess
import time

import harness
from harness import check, fail
import switch_support as ss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REDIS_PW = "redis-secret-7731"


class Wrapped:
    """`switchyard run` with the routes above, in a directory of its own: .conf_path,
    .listeners {name: port}, .metrics, .dir (the app writes its findings there)."""

    def __init__(self, ctx, builtin_redis, external_redis, pg_extra="", active_builtin=False):
        self.dir = harness.tmpdir("run")
        self.pg = harness.free_port()
        self.redis = harness.free_port()
        self.metrics = harness.free_port()
        self.listeners = {"pg": self.pg, "redis-store": self.redis}
        act = "active = builtin\n" if active_builtin else ""
        conf = ("[switchyard]\nmetrics_listen = 127.0.0.1:%d\ndrain_timeout = 5\nconnect_timeout = 5\n"
                "workers = %s\n\n"
                "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
                "[route pg]\nlistener = pg\ndatabases = sourcegraph\ndefault = true\nenv_prefix = \"\"\n"
                "builtin = %s\n%s%s\n"
                "[route pg-codeintel]\nlistener = pg\ndatabases = sourcegraph-codeintel\n"
                "env_prefix = CODEINTEL_\nbuiltin = %s\n\n"
                "[listener redis-store]\nprotocol = redis\nlisten = 127.0.0.1:%d\n\n"
                "[route redis-store]\nlistener = redis-store\nbuiltin = 127.0.0.1:%d\n"
                "external_env = REDIS_STORE_ENDPOINT,REDIS_ENDPOINT\n%s"
                % (self.metrics, harness.TEST_WORKERS, self.pg, ctx.builtin.conninfo(), act, pg_extra,
                   ctx.builtin.conninfo(), self.redis, builtin_redis.port, act))
        self.conf_path = os.path.join(self.dir, "switchyard.conf")
        with open(self.conf_path, "w") as f:
            f.write(conf)
        self.secret = harness.USERS["scram_user"][0]
        env = harness.external_env(ctx, user="scram_user", db="sourcegraph")
        env.update(harness.external_env(ctx, user="scram_user", db="sourcegraph-codeintel", prefix="CODEINTEL_"))
        env["REDIS_ENDPOINT"] = "redis://:%s@127.0.0.1:%d" % (REDIS_PW, external_redis.port)
        env["OUT"] = self.dir
        self.env = harness.clean_env(dict(env, ASAN_OPTIONS=harness.ASAN_OPTIONS,
                                          UBSAN_OPTIONS=harness.UBSAN_OPTIONS))
        self.proc = None
        self.logfile = os.path.join(self.dir, "run.log")

    def argv(self, *extra):
        return [harness.switchyard_bin(), "run", "--config", self.conf_path] + list(extra)

    def start(self, script):
        """switchyard run -- sh SCRIPT (text written to app.sh) in the background."""
        path = os.path.join(self.dir, "app.sh")
        with open(path, "w") as f:
            f.write(script)
        self.proc = harness.Proc(self.argv("--", "/bin/sh", path), env=self.env, log=self.logfile,
                                 name="switchyard-run")
        return self.proc

    def wait_file(self, name, timeout=60.0):
        p = os.path.join(self.dir, name)
        deadline = time.monotonic() + timeout
        while not os.path.exists(p):
            if self.proc.poll() is not None:
                fail("switchyard run exited (%s) before the app wrote %s; log:\n%s"
                     % (self.proc.returncode, name, harness.log_tail(self.logfile, 40)))
            if time.monotonic() > deadline:
                fail("the app wrote no %s within %.0fs; log:\n%s" % (name, timeout, harness.log_tail(self.logfile, 40)))
            time.sleep(0.05)
        time.sleep(0.05)
        with open(p) as f:
            return f.read()

    def wait_exit(self, timeout=60.0):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("switchyard run did not exit within %.0fs; log:\n%s" % (timeout, harness.log_tail(self.logfile, 40)))
        log = harness.log_tail(self.logfile, 400)
        for m in harness.SANITIZER_MARKERS:
            check(m not in log, "sanitizer report from switchyard run:\n%s" % log[-3000:])
        return rc


def _env_file(text):
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


APP = r"""
set -u
env > "$OUT/env.txt"
cat /proc/$PPID/environ | tr '\0' '\n' > "$OUT/parent_env.txt"
psql -X -A -t -c "SELECT current_setting('sy.cluster') || ' ' || current_user || ' ' || current_database()" \
    > "$OUT/pg.txt" 2>&1
psql -X -A -t -d "$CODEINTEL_PGDATABASE" -h "$CODEINTEL_PGHOST" -p "$CODEINTEL_PGPORT" \
    -c "SELECT current_setting('sy.cluster') || ' ' || current_database()" > "$OUT/codeintel.txt" 2>&1
h=${REDIS_ENDPOINT%:*}; p=${REDIS_ENDPOINT##*:}
redis-cli -h "$h" -p "$p" SET run-key from-app > "$OUT/redis.txt" 2>&1
redis-cli -h "$h" -p "$p" GET run-key >> "$OUT/redis.txt" 2>&1
trap 'echo "got TERM" > "$OUT/term.txt"; exit 42' TERM
echo up > "$OUT/ready.txt"
while :; do sleep 0.05; done
"""


def test_run_wraps_app(ctx):
    """The wrapped app reaches the real external servers with only its own environment,
    which holds no credential (nor does the wrapper's /proc/PID/environ); its SIGTERM is
    delivered and its exit status comes back out."""
    b, x = harness.RedisServer(), harness.RedisServer(password=REDIS_PW)
    w = Wrapped(ctx, b, x)
    w.start(APP)
    w.wait_file("ready.txt")
    env = _env_file(w.wait_file("env.txt"))
    for k in ("PGHOST", "CODEINTEL_PGHOST"):
        check(env.get(k) == "127.0.0.1", "%s=%r in the app's environment" % (k, env.get(k)))
    check(env.get("PGPORT") == str(w.pg) and env.get("CODEINTEL_PGPORT") == str(w.pg),
          "PGPORT %r / CODEINTEL_PGPORT %r, want %d" % (env.get("PGPORT"), env.get("CODEINTEL_PGPORT"), w.pg))
    check(env.get("PGSSLMODE") == "disable", "PGSSLMODE=%r" % env.get("PGSSLMODE"))
    check(env.get("PGUSER") == "scram_user", "PGUSER changed: %r" % env.get("PGUSER"))
    check(env.get("CODEINTEL_PGDATABASE") == "sourcegraph-codeintel", "CODEINTEL_PGDATABASE=%r"
          % env.get("CODEINTEL_PGDATABASE"))
    check(env.get("REDIS_ENDPOINT") == "127.0.0.1:%d" % w.redis, "REDIS_ENDPOINT=%r" % env.get("REDIS_ENDPOINT"))
    check(env.get("REDIS_STORE_ENDPOINT") == "127.0.0.1:%d" % w.redis, "REDIS_STORE_ENDPOINT=%r"
          % env.get("REDIS_STORE_ENDPOINT"))
    for k in env:
        check(not re.match(r"^(CODEINTEL_)?PG(PASSWORD|PASSFILE|SSLROOTCERT|SSLCERT|SSLKEY|SSLCRL)", k),
              "the app's environment still has %s" % k)
    text = open(os.path.join(w.dir, "env.txt")).read()
    for s in (w.secret, REDIS_PW, str(ctx.external.port), str(x.port)):
        check(s not in text, "the app's environment names %r (an external credential or server):\n%s" % (s, text))
    parent = open(os.path.join(w.dir, "parent_env.txt")).read()
    check("PGHOST=" in parent, "parent_env.txt is not the wrapper's environment: %r" % parent[:300])
    for s in (w.secret, REDIS_PW):
        check(s not in parent, "the wrapper's /proc/PID/environ still holds %r" % s)

    pg = open(os.path.join(w.dir, "pg.txt")).read().strip()
    check(pg == "external scram_user sourcegraph", "psql in the app: %r" % pg)
    ci = open(os.path.join(w.dir, "codeintel.txt")).read().strip()
    check(ci == "external sourcegraph-codeintel", "codeintel psql in the app: %r" % ci)
    rd = open(os.path.join(w.dir, "redis.txt")).read().split()
    check(rd == ["OK", "from-app"], "redis-cli in the app: %r" % rd)
    r = x.cli("GET", "run-key", password=REDIS_PW)
    check(r.stdout.strip() == "from-app", "the key is not on the external Redis: %r" % r.stdout)
    check(b.cli("GET", "run-key").stdout.strip() == "", "the key reached the built-in Redis")

    # --wait-ready against this running instance.
    r = harness.run([harness.switchyard_bin(), "--wait-ready", "--timeout", "20", "-c", w.conf_path], env=w.env)
    check(r.returncode == 0, "--wait-ready: %d %s" % (r.returncode, r.stderr))

    w.proc.send_signal(signal.SIGTERM)
    rc = w.wait_exit()
    term = w.wait_file("term.txt")
    check(term.strip() == "got TERM", "the app's TERM trap: %r" % term)
    check(rc == 42, "switchyard run exited %s, the app 42; log:\n%s" % (rc, harness.log_tail(w.logfile, 30)))
    log = open(w.logfile).read()
    check("event=ready" in log and "event=exit" in log, "the daemon's log lacks ready/exit:\n%s" % log[-2000:])
    check(w.secret not in log and REDIS_PW not in log, "a password in the log")


def test_run_exit_status_and_failures(ctx):
    """Exit codes: the command's own; 128+N when it dies of signal N; 127 not found;
    125 when switchyard cannot start (its listener port is taken), and the command never runs."""
    b, x = harness.RedisServer(), harness.RedisServer(password=REDIS_PW)
    w = Wrapped(ctx, b, x)
    r = harness.run(w.argv("--", "/bin/sh", "-c", "exit 7"), env=w.env, timeout=60)
    check(r.returncode == 7, "exit 7 came back as %d: %s" % (r.returncode, r.stderr[-1500:]))
    r = harness.run(w.argv("--", "/bin/sh", "-c", "kill -KILL $$"), env=w.env, timeout=60)
    check(r.returncode == 128 + 9, "a SIGKILLed command came back as %d" % r.returncode)
    r = harness.run(w.argv("--", "/nonexistent/app"), env=w.env, timeout=60)
    check(r.returncode == 127, "a missing command came back as %d: %s" % (r.returncode, r.stderr[-500:]))
    r = harness.run(w.argv("--timeout", "x", "--", "true"), env=w.env, timeout=60)
    check(r.returncode == 2, "bad --timeout: %d" % r.returncode)

    # Port taken: switchyard fails, the command does not run.
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", w.pg))
    s.listen(5)
    try:
        marker = os.path.join(w.dir, "ran")
        r = harness.run(w.argv("--", "/bin/sh", "-c", "touch %s" % marker), env=w.env, timeout=60)
    finally:
        s.close()
    check(r.returncode == 125, "switchyard could not listen, run exited %d: %s" % (r.returncode, r.stderr[-1500:]))
    check(not os.path.exists(marker), "the command ran although switchyard never became ready")
    check("before it was ready" in r.stderr, "no reason on stderr: %r" % r.stderr[-1500:])


def test_run_daemon_dies_stops_app(ctx):
    """When the daemon dies under a running app, the app gets SIGTERM and run exits 125."""
    b, x = harness.RedisServer(), harness.RedisServer(password=REDIS_PW)
    w = Wrapped(ctx, b, x)
    w.start("trap 'echo term > \"$OUT/term.txt\"; exit 0' TERM\necho up > \"$OUT/ready.txt\"\n"
            "while :; do sleep 0.05; done\n")
    w.wait_file("ready.txt")
    kids = harness.child_pids(w.proc.pid)
    daemon = None
    for k in kids:
        try:
            with open("/proc/%d/cmdline" % k, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == b"switchyard":
            daemon = k
    check(daemon is not None, "no daemon among run's children %r" % kids)
    os.kill(daemon, signal.SIGKILL)
    rc = w.wait_exit(timeout=30)
    check(rc == 125, "run exited %s after its daemon died" % rc)
    check(w.wait_file("term.txt").strip() == "term", "the app was not sent SIGTERM")
    check("stopping COMMAND" in open(w.logfile).read(), "no message about stopping the app")


def test_run_dry_run(ctx):
    """--dry-run prints every change, with passwords masked, and starts nothing."""
    b, x = harness.RedisServer(), harness.RedisServer(password=REDIS_PW)
    w = Wrapped(ctx, b, x)
    r = harness.run(w.argv("--dry-run", "--", "/usr/bin/app", "--flag"), env=w.env, timeout=30)
    check(r.returncode == 0, "--dry-run exited %d: %s" % (r.returncode, r.stderr))
    out = r.stdout
    lines = [l.strip() for l in out.splitlines()]
    want = [
        "set   PGHOST=127.0.0.1 (was localhost)",
        "set   PGPORT=%d (was %d)" % (w.pg, ctx.external.port),
        "set   PGSSLMODE=disable (was verify-full)",
        "set   PGDATABASE=sourcegraph (was sourcegraph)",
        "unset PGPASSWORD (was ****)",
        "unset PGSSLROOTCERT (was %s)" % ctx.tls.ca_a,
        "set   CODEINTEL_PGDATABASE=sourcegraph-codeintel (was sourcegraph-codeintel)",
        "unset CODEINTEL_PGPASSWORD (was ****)",
        "set   REDIS_STORE_ENDPOINT=127.0.0.1:%d (was unset)" % w.redis,
        "set   REDIS_ENDPOINT=127.0.0.1:%d (was redis://:****@127.0.0.1:%d)" % (w.redis, x.port),
        "then runs: /usr/bin/app --flag",
    ]
    for l in want:
        check(l.strip() in lines, "--dry-run lacks %r:\n%s" % (l, out))
    check(not any("PGUSER" in l for l in lines), "PGUSER should pass unchanged:\n%s" % out)
    check(w.secret not in out and REDIS_PW not in out, "a password in --dry-run output:\n%s" % out)
    check(harness.free_port and _port_free(w.pg), "--dry-run started a listener")


def _port_free(port):
    import socket
    s = socket.socket()
    try:
        return s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        s.close()


def test_run_switch_under_pgbench(ctx):
    """The wrapped app runs pgbench (through its rewritten environment) while the console
    switches pg from builtin to external: pgbench finishes with 0 failed transactions."""
    ss.pgbench_init(ctx)
    b, x = harness.RedisServer(), harness.RedisServer(password=REDIS_PW)
    w = Wrapped(ctx, b, x, active_builtin=True)
    w.start(r"""
set -u
echo up > "$OUT/ready.txt"
%s -n -c 4 -j 2 -T 8 > "$OUT/pgbench.txt" 2>&1
rc=$?
echo $rc > "$OUT/pgbench.rc"
exit $rc
""" % harness.PGBENCH)
    w.wait_file("ready.txt")
    con = ss.Console(w)
    check(con.active("pg") == "builtin", "route pg does not start on builtin: %r" % con.route("pg"))
    time.sleep(2.5)
    row, _, _ = con.switch("pg", "external")
    check(con.active("pg") == "external", "not on external after SWITCH: %r" % con.route("pg"))
    con.close()
    rc = w.wait_exit(timeout=90)
    out = open(os.path.join(w.dir, "pgbench.txt")).read()
    check(rc == 0, "run (pgbench) exited %s:\n%s\n%s" % (rc, out[-2000:], harness.log_tail(w.logfile, 30)))
    m = re.search(r"number of failed transactions: (\d+)", out)
    check(m and m.group(1) == "0", "pgbench failures:\n%s" % out[-2000:])
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    check(m and int(m.group(1)) > 0, "pgbench processed nothing:\n%s" % out[-2000:])


test_run_switch_under_pgbench.timeout = 240


def test_wait_ready_not_ready(ctx):
    """--wait-ready exits 1 with the reason when a route's target is dead, 2 with
    metrics off."""
    closed = harness.closed_port()
    mport = harness.free_port()
    conf = ("[switchyard]\nmetrics_listen = 127.0.0.1:%d\ndrain_timeout = 2\n\n"
            "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
            "[route pg]\nlistener = pg\ndatabases = sourcegraph\ndefault = true\n"
            "builtin = host=127.0.0.1 port=%d sslmode=disable\n" % (mport, harness.free_port(), closed))
    sy = harness.Switchyard(conf)
    env = harness.clean_env({"ASAN_OPTIONS": harness.ASAN_OPTIONS})
    r = harness.run([harness.switchyard_bin(), "--wait-ready", "--timeout", "3", "-c", sy.conf_path], env=env)
    check(r.returncode == 1, "--wait-ready with a dead target: %d %s" % (r.returncode, r.stderr))
    check("route pg: 127.0.0.1:%d" % closed in r.stderr or "not probed yet" in r.stderr,
          "no reason: %r" % r.stderr)
    r = harness.run([harness.switchyard_bin(), "--wait-ready", "--timeout", "1", "-c", sy.conf_path,
                     "-o", "switchyard.metrics_listen=off"], env=env)
    check(r.returncode == 2, "--wait-ready with metrics off: %d %s" % (r.returncode, r.stderr))
    sy.stop()
    r = harness.run([harness.switchyard_bin(), "--wait-ready", "--timeout", "1", "-c", sy.conf_path], env=env)
    check(r.returncode == 1 and "cannot connect" in r.stderr, "--wait-ready, nothing running: %d %s"
          % (r.returncode, r.stderr))


# --------------------------------------------------------------------------------------------
# make install, the man page

def _make(*args, timeout=300):
    """make in the checkout, installing the binary under test as it is (never rebuilt here)."""
    binary = os.path.abspath(os.environ.get("SWITCHYARD_BIN", os.path.join(ROOT, "build-asan", "switchyard")))
    return harness.run(["make", "-C", ROOT, "--no-print-directory", "INSTALL_BIN=" + binary] + list(args),
                       env=dict(os.environ), timeout=timeout)


def test_make_install_destdir(ctx):
    dest = harness.tmpdir("destdir")
    r = _make("install", "DESTDIR=" + dest, "PREFIX=/usr")
    check(r.returncode == 0, "make install: %s %s" % (r.stdout[-2000:], r.stderr[-2000:]))
    want = ["usr/bin/switchyard", "etc/switchyard/switchyard.conf", "usr/share/man/man1/switchyard.1.gz",
            "lib/systemd/system/switchyard.service", "usr/share/doc/switchyard/deployment.md",
            "usr/share/doc/switchyard/README.md", "usr/share/doc/switchyard/switchyard.conf.example",
            "usr/share/doc/switchyard/examples/supervisord.conf",
            "usr/share/doc/switchyard/examples/Dockerfile",
            "usr/share/doc/switchyard/examples/docker-entrypoint.sh"]
    for p in want:
        check(os.path.isfile(os.path.join(dest, p)), "make install did not lay out %s; tree:\n%s"
              % (p, "\n".join(sorted(os.path.relpath(os.path.join(d, f), dest)
                                     for d, _, fs in os.walk(dest) for f in fs))))
    check(os.access(os.path.join(dest, "usr/bin/switchyard"), os.X_OK), "the binary is not executable")
    r = harness.run([os.path.join(dest, "usr/bin/switchyard"), "--version"], env=harness.clean_env())
    check(r.returncode == 0 and r.stdout.startswith("switchyard "), "installed --version: %r" % r.stdout)
    conf = os.path.join(dest, "etc/switchyard/switchyard.conf")
    with open(conf, "a") as f:
        f.write("; edited by the operator\n")
    r = _make("install", "DESTDIR=" + dest, "PREFIX=/usr")
    check(r.returncode == 0, "second make install: %s" % r.stderr[-2000:])
    check("; edited by the operator" in open(conf).read(), "make install overwrote an existing switchyard.conf")
    # PREFIX moves the binary, and the unit names it there.
    dest2 = harness.tmpdir("destdir")
    r = _make("install", "DESTDIR=" + dest2, "PREFIX=/opt/sy")
    check(r.returncode == 0 and os.path.isfile(os.path.join(dest2, "opt/sy/bin/switchyard")),
          "PREFIX=/opt/sy: %s" % r.stderr[-2000:])
    unit = open(os.path.join(dest2, "lib/systemd/system/switchyard.service")).read()
    check("ExecStart=/opt/sy/bin/switchyard" in unit, "the unit does not run the PREFIX binary:\n%s" % unit)


def test_man_page_renders(ctx):
    page = os.path.join(ROOT, "contrib", "switchyard.1")
    harness.require_file(page, "man page")
    r = harness.run(["groff", "-ww", "-man", "-Tutf8", page], env=harness.clean_env())
    check(r.returncode == 0 and r.stderr == "", "groff -ww: rc %d\n%s" % (r.returncode, r.stderr))
    r = harness.run(["man", "-l", page], env=harness.clean_env({"MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}))
    check(r.returncode == 0, "man -l: %d %s" % (r.returncode, r.stderr))
    check(r.stderr.strip() == "", "man -l printed warnings: %s" % r.stderr)
    text = re.sub(r".\x08", "", r.stdout)
    for s in ("SWITCHYARD", "switchyard run", "--wait-ready", "/readyz", "PGPASSWORD", "EXIT STATUS", "SIGHUP"):
        check(s in text, "the rendered page lacks %r" % s)


def test_daemon_sd_notify(ctx):
    """The daemon sends READY=1 and MAINPID to $NOTIFY_SOCKET (a path, as systemd gives it)
    once it listens, with no libsystemd; `switchyard run` also tells its own NOTIFY_SOCKET."""
    import socket
    d = harness.tmpdir("notify")
    path = os.path.join(d, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    try:
        port = harness.free_port()
        sy = harness.Switchyard(harness.pg_conf(port, [harness.pg_route("pg", "sourcegraph", default=True,
                                                                       builtin=ctx.builtin.conninfo())]),
                                env={"NOTIFY_SOCKET": path})
        msg = s.recv(512).decode()
        check("READY=1" in msg.split("\n") and "MAINPID=%d" % sy.pid in msg.split("\n"),
              "the daemon's notification: %r" % msg)
        sy.stop()
        # switchyard run: READY=1 with the wrapper's pid, before COMMAND starts.
        b, x = harness.RedisServer(), harness.RedisServer(password=REDIS_PW)
        w = Wrapped(ctx, b, x)
        w.env["NOTIFY_SOCKET"] = path
        w.start('env > "$OUT/env.txt"\necho up > "$OUT/ready.txt"\n')
        msg = s.recv(512).decode()
        check("READY=1" in msg.split("\n") and "MAINPID=%d" % w.proc.pid in msg.split("\n"),
              "switchyard run's notification: %r" % msg)
        check(w.wait_exit() == 0, "run exited non-zero")
        check("NOTIFY_SOCKET" not in _env_file(w.wait_file("env.txt")), "the app inherited NOTIFY_SOCKET")
    finally:
        s.close()
