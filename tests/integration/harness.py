"""
harness.py - real servers and real clients for switchyard's integration tests.

Standard library only; run with /usr/bin/python3 (Debian's 3.11).

What lives here, and how a test uses it:

    ctx.builtin / ctx.external      two shared Postgres clusters, started lazily once per run
    ctx.tls                         test TLS material (CA A, CA B, server and client certs)
    PgCluster(...)                  a dedicated cluster when a test needs to stop or kill one
    RedisServer(...)                a throwaway redis-server (optionally requirepass, ACL, TLS)
    Switchyard(conf_text, env=...)  the daemon under test, with a clean environment; .stop()
                                    fails the test when a sanitizer reported anything
    psql(...), PgWire(...)          real clients: psql/pgbench binaries, and a small protocol-3
                                    client on a raw socket for SQLSTATEs, startup parameters,
                                    BackendKeyData, cancel requests and malformed input
    Console(port)                   the admin console (database "switchyard") on a raw socket:
                                    .rows("SHOW CLIENTS") -> list of dicts
    wait_until(pred, timeout, what) how a test waits: poll what the daemon shows (SHOW CLIENTS
    sy.wait_log(pattern, ...)       through wait_clients, SHOW ROUTES, /metrics, an event in
    wait_clients(console, pred)     its log) and fail naming `what` when it does not come;
                                    never a bare sleep standing in for "long enough"

Every process and temporary directory is registered: processes a test starts are stopped when
the test ends (the runner pops a "scope"), everything else at exit (atexit and SIGTERM/SIGINT).
Everything listens on 127.0.0.1 free ports or unix sockets in temporary directories.

Postgres refuses to run as root, so when euid is 0 initdb and postgres run as the `postgres`
user through setpriv (which execs, so the pid we hold is the postmaster's own).
"""

import atexit
import hashlib
import os
import pwd
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

PGBIN = "/usr/lib/postgresql/15/bin"
PSQL = PGBIN + "/psql"
PGBENCH = PGBIN + "/pgbench"
REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
OPENSSL = "/usr/bin/openssl"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# ASan/UBSan settings for every switchyard we start (see Switchyard).
ASAN_OPTIONS = "detect_leaks=1:abort_on_error=1"
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"
TSAN_OPTIONS = "halt_on_error=0:second_deadlock_stack=1"
TEST_WORKERS = os.environ.get("SY_TEST_WORKERS", "2")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "WARNING: ThreadSanitizer")


class TestFailure(AssertionError):
    """A test failed; the message is what the runner prints."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def require_file(path, what):
    """A missing prerequisite is a failure, never a skip."""
    if not path or not os.path.exists(path):
        fail("prerequisite missing: %s (%s)" % (what, path))
    return path


# --------------------------------------------------------------------------------------------
# Registry: temporary directories and processes, cleaned up per test scope and at exit.

_lock = threading.RLock()
_scopes = [[]]          # stack of lists of objects with .cleanup() -> list of error strings
_tmp_base = None
_cleaned = False


def _register(obj):
    with _lock:
        _scopes[-1].append(obj)


def _unregister(obj):
    with _lock:
        for scope in _scopes:
            if obj in scope:
                scope.remove(obj)


def push_scope():
    with _lock:
        _scopes.append([])


def pop_scope():
    """Clean up everything registered since the matching push_scope; return error strings
    (e.g. sanitizer reports from a switchyard the test left running)."""
    with _lock:
        objs = _scopes.pop() if len(_scopes) > 1 else []
    errors = []
    for obj in reversed(objs):
        try:
            errors.extend(obj.cleanup() or [])
        except Exception as e:  # cleanup must go on
            errors.append("%s cleanup: %s" % (type(obj).__name__, e))
    return errors


class global_scope:
    """Objects created inside `with global_scope():` live until exit (shared clusters)."""

    def __enter__(self):
        _lock.acquire()
        self.saved = _scopes[1:]
        del _scopes[1:]
        return self

    def __exit__(self, *exc):
        _scopes.extend(self.saved)
        _lock.release()
        return False


def _cleanup_all():
    global _cleaned
    if _cleaned:
        return
    _cleaned = True
    while len(_scopes) > 1:
        pop_scope()
    objs = list(_scopes[0])
    del _scopes[0][:]
    for obj in reversed(objs):
        try:
            obj.cleanup()
        except Exception:
            pass
    if _tmp_base and os.path.isdir(_tmp_base) and not os.environ.get("SY_KEEP_TMP"):
        shutil.rmtree(_tmp_base, ignore_errors=True)


def _on_signal(signum, frame):
    _cleanup_all()
    os._exit(128 + signum)


atexit.register(_cleanup_all)
if threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _on_signal)
    # SIGINT stays KeyboardInterrupt (so a test is interrupted cleanly); atexit still runs.


def tmp_base():
    global _tmp_base
    with _lock:
        if _tmp_base is None:
            _tmp_base = tempfile.mkdtemp(prefix="sy-test-")
            os.chmod(_tmp_base, 0o755)   # the postgres user must traverse it
        return _tmp_base


def tmpdir(prefix="d", owner=None, mode=0o755):
    """A fresh directory under the run's temporary base, removed at exit. owner: a user name."""
    d = tempfile.mkdtemp(prefix=prefix + "-", dir=tmp_base())
    os.chmod(d, mode)
    if owner and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def empty_home():
    """An empty HOME: no ~/.postgresql/root.crt, no ~/.pgpass, no ~/.psqlrc."""
    return tmpdir("home")


_ports_given = set()


def free_port():
    """A free TCP port on 127.0.0.1, never handed out twice in this run."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        with _lock:
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    fail("no free port found")


def wait_port(port, timeout=20.0, proc=None, host="127.0.0.1", what="server"):
    """Wait until host:port accepts TCP. Fails early if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            fail("%s exited with status %s before accepting on %s:%d" % (what, proc.returncode, host, port))
        if time.monotonic() > deadline:
            fail("%s did not accept on %s:%d within %.0f s" % (what, host, port, timeout))
        time.sleep(0.05)


def wait_until(pred, timeout=10.0, what="condition", interval=0.02):
    """Poll pred() until it returns something true, and return that value. When `timeout`
    seconds pass first, fail the test with "timed out after Ns waiting for <what>"; `what`
    may be a callable, called then, so the message can show the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("timed out after %.1fs waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(interval)


def clean_env(extra=None, home=None):
    """A clean environment for a client or server: PATH, HOME, LANG=C and `extra` only."""
    env = {"PATH": BASE_PATH, "HOME": home or empty_home(), "LANG": "C", "LC_ALL": "C"}
    if extra:
        env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def _as_postgres(argv):
    if os.geteuid() != 0:
        return list(argv)
    return ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] + list(argv)


class Proc:
    """A registered child process in its own session (so its whole group can be killed)."""

    def __init__(self, argv, env=None, log=None, stdin=subprocess.DEVNULL, stdout=None,
                 cwd=None, term_signal=signal.SIGTERM, name=None):
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.log = log
        self.term_signal = term_signal
        self._logf = open(log, "ab") if log else None
        out = stdout if stdout is not None else (self._logf or subprocess.DEVNULL)
        err = self._logf or subprocess.DEVNULL
        self.popen = subprocess.Popen(self.argv, env=env, stdin=stdin, stdout=out, stderr=err,
                                      cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid
        _register(self)

    def poll(self):
        return self.popen.poll()

    @property
    def returncode(self):
        return self.popen.returncode

    def send_signal(self, sig):
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout=None):
        return self.popen.wait(timeout=timeout)

    def kill_group(self, sig=signal.SIGKILL):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout=10.0):
        """term_signal, wait, then SIGKILL the group. Returns the exit status."""
        if self.popen.poll() is None:
            self.send_signal(self.term_signal)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group(signal.SIGKILL)
                self.popen.wait(timeout=10)
        self.kill_group(signal.SIGKILL)   # stragglers in the group
        self._close()
        _unregister(self)
        return self.popen.returncode

    def _close(self):
        if self._logf:
            self._logf.close()
            self._logf = None

    def cleanup(self):
        self.stop(timeout=5.0)
        return []


def log_tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


def run(argv, env=None, timeout=60, input=None, check_rc=False, **kw):
    """subprocess.run with text output and a timeout that fails the test instead of hanging."""
    if input is None and "stdin" not in kw:
        kw["stdin"] = subprocess.DEVNULL   # CI runs without a usable standard input
    try:
        r = subprocess.run(argv, env=env, input=input, capture_output=True, timeout=timeout,
                           text=isinstance(input, str) or input is None, **kw)
    except subprocess.TimeoutExpired:
        fail("timed out after %ss: %s" % (timeout, " ".join(map(str, argv))[:300]))
    if check_rc and r.returncode != 0:
        fail("%s exited %d: %s" % (os.path.basename(argv[0]), r.returncode,
                                   (r.stderr or "").strip()[-2000:]))
    return r


# --------------------------------------------------------------------------------------------
# TLS material, generated with the openssl CLI at test time.

class Tls:
    """
    ca_a / ca_a_key   CA A: signs the server and client certificates
    ca_b              CA B: a second CA nothing uses (the "wrong CA" case)
    server_crt/key    signed by A, CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    pg_server_key     a copy of the server key the postgres user can read (0600, postgres)
    client_crt/key    signed by A, CN=cert_user (0600, owned by us: libpq checks that)
    client_b_crt/key  signed by B, CN=cert_user
    crl_empty         a CRL from CA A revoking nothing
    crl_revoked       a CRL from CA A revoking the server certificate
    """

    CLIENT_CN = "cert_user"

    def __init__(self):
        self.dir = tmpdir("tls")
        self.ca_a, self.ca_a_key = self._ca("A")
        self.ca_b, self.ca_b_key = self._ca("B")
        self.server_crt, self.server_key = self._leaf(
            "server", "localhost", self.ca_a, self.ca_a_key,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        self.client_crt, self.client_key = self._leaf(
            "client", self.CLIENT_CN, self.ca_a, self.ca_a_key,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n")
        self.client_b_crt, self.client_b_key = self._leaf(
            "client-b", self.CLIENT_CN, self.ca_b, self.ca_b_key,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        self.crl_empty, self.crl_revoked = self._crls()
        # Postgres wants its key 0600 and owned by the server's user.
        pgdir = tmpdir("tls-pg", owner="postgres", mode=0o700)
        self.pg_server_crt = os.path.join(pgdir, "server.crt")
        self.pg_server_key = os.path.join(pgdir, "server.key")
        self.pg_ca = os.path.join(pgdir, "ca.crt")
        shutil.copy(self.server_crt, self.pg_server_crt)
        shutil.copy(self.server_key, self.pg_server_key)
        shutil.copy(self.ca_a, self.pg_ca)
        os.chmod(self.pg_server_key, 0o600)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.pg_server_crt, self.pg_server_key, self.pg_ca):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        for p in (self.ca_a, self.ca_b, self.server_crt, self.client_crt, self.client_b_crt):
            os.chmod(p, 0o644)
        for p in (self.server_key, self.client_key, self.client_b_key):
            os.chmod(p, 0o600)

    def _crls(self):
        """Two CRLs from CA A: one empty, one revoking the server certificate."""
        d = os.path.join(self.dir, "ca-a-db")
        os.mkdir(d)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "crlnumber"), "w") as f:
            f.write("01\n")
        cnf = os.path.join(d, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = %s/index.txt\n"
                    "crlnumber = %s/crlnumber\ndefault_md = sha256\ndefault_crl_days = 3650\n" % (d, d))
        empty = os.path.join(self.dir, "crl-empty.pem")
        revoked = os.path.join(self.dir, "crl-server-revoked.pem")
        ca = ["-config", cnf, "-keyfile", self.ca_a_key, "-cert", self.ca_a]
        self._openssl("ca", "-gencrl", *ca, "-out", empty)
        self._openssl("ca", "-revoke", self.server_crt, *ca)
        self._openssl("ca", "-gencrl", *ca, "-out", revoked)
        return empty, revoked

    def _openssl(self, *args):
        r = run([OPENSSL] + list(args), env=clean_env(home=self.dir), timeout=60)
        if r.returncode != 0:
            fail("openssl %s failed: %s" % (args[0], r.stderr.strip()))

    def _ca(self, name):
        crt = os.path.join(self.dir, "ca-%s.crt" % name.lower())
        key = os.path.join(self.dir, "ca-%s.key" % name.lower())
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", key, "-out", crt, "-days", "3650",
                      "-subj", "/CN=switchyard test CA %s" % name)
        return crt, key

    def _leaf(self, name, cn, ca, ca_key, ext):
        crt = os.path.join(self.dir, name + ".crt")
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        extf = os.path.join(self.dir, name + ".ext")
        with open(extf, "w") as f:
            f.write(ext)
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        self._openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                      "-set_serial", str(random.randrange(1, 2 ** 62)), "-days", "3650",
                      "-out", crt, "-extfile", extf)
        return crt, key

    def cleanup(self):
        return []


# --------------------------------------------------------------------------------------------
# Postgres

SUPERUSER = "postgres"
USERS = {  # name: (password, hba method on the external cluster, password_encryption)
    "pw_user": ("pw-secret-1", "password", "scram-sha-256"),
    "md5_user": ("md5-secret-2", "md5", "md5"),
    "scram_user": ("scram-secret-3", "scram-sha-256", "scram-sha-256"),
    "tls_user": ("tls-secret-4", "scram-sha-256", "scram-sha-256"),  # hostssl only
}
CERT_USER = Tls.CLIENT_CN
DATABASES = ("sourcegraph", "sourcegraph-codeintel", "sourcegraph-codeinsights")
DB_OWNER = "scram_user"


def _q(ident):
    return '"' + ident.replace('"', '""') + '"'


def _lit(s):
    return "'" + s.replace("'", "''") + "'"


def child_pids(ppid):
    """Direct children of ppid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == ppid:
            out.append(int(d))
    return out


class PgCluster:
    """
    A throwaway Postgres 15 cluster on 127.0.0.1:<free port>, socket in a temp directory.

    hba: "trust" (every local and 127.0.0.1 line trust) or "external" (per-user methods, see
    EXTERNAL_HBA) or a full pg_hba.conf text. ssl: serve TLS with tls (a Tls) material.
    setup: create the USERS, the cert user and the three sourcegraph databases.
    """

    EXTERNAL_HBA = """\
local   all  all                          trust
hostssl all  cert_user     127.0.0.1/32   cert
hostnossl all cert_user    127.0.0.1/32   reject
hostssl all  tls_user      127.0.0.1/32   scram-sha-256
hostnossl all tls_user     127.0.0.1/32   reject
host    all  pw_user       127.0.0.1/32   password
host    all  md5_user      127.0.0.1/32   md5
host    all  scram_user    127.0.0.1/32   scram-sha-256
hostssl all  all           127.0.0.1/32   trust
host    all  all           127.0.0.1/32   trust
"""
    TRUST_HBA = """\
local   all  all                          trust
host    all  all           127.0.0.1/32   trust
"""

    def __init__(self, name, ssl=False, tls=None, hba="trust", setup=True, max_connections=200,
                 extra_conf=""):
        self.name = name
        self.ssl = ssl
        self.tls = tls
        if ssl and tls is None:
            fail("PgCluster(ssl=True) needs tls material")
        self.dir = tmpdir("pg-" + name, owner="postgres")
        self.data = os.path.join(self.dir, "data")
        self.sockdir = self.dir
        self.port = free_port()
        self.logfile = os.path.join(tmp_base(), "pg-%s-%d.log" % (name, self.port))
        self.proc = None
        self.host = "127.0.0.1"
        _register(self)
        r = run(_as_postgres([PGBIN + "/initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"]),
                env=clean_env(home=self.dir), timeout=120)
        if r.returncode != 0:
            fail("initdb for %s failed: %s %s" % (name, r.stdout[-1000:], r.stderr[-1000:]))
        conf = [
            "listen_addresses = '127.0.0.1'",
            "port = %d" % self.port,
            "unix_socket_directories = '%s'" % self.sockdir,
            "max_connections = %d" % max_connections,
            "shared_buffers = 32MB",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "logging_collector = off",
            "log_min_messages = warning",
            "password_encryption = 'scram-sha-256'",
        ]
        if ssl:
            conf += ["ssl = on",
                     "ssl_cert_file = '%s'" % tls.pg_server_crt,
                     "ssl_key_file = '%s'" % tls.pg_server_key,
                     "ssl_ca_file = '%s'" % tls.pg_ca]
        conf.append(extra_conf)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# switchyard test harness\n" + "\n".join(conf) + "\n")
        hba_text = {"trust": self.TRUST_HBA, "external": self.EXTERNAL_HBA}.get(hba, hba)
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write(hba_text)
        self.start()
        if setup:
            self._setup()

    # -- lifecycle

    def start(self, timeout=60):
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = Proc(_as_postgres([PGBIN + "/postgres", "-D", self.data]),
                         env=clean_env(home=self.dir), log=self.logfile,
                         term_signal=signal.SIGINT, name="postgres-" + self.name)
        _unregister(self.proc)   # owned by this cluster, cleaned up through it
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run([PGBIN + "/pg_isready", "-q", "-h", self.sockdir, "-p", str(self.port),
                                "-U", SUPERUSER, "-d", "postgres"], env=clean_env(home=self.dir))
            if r.returncode == 0:
                break
            if self.proc.poll() is not None:
                fail("postgres %s exited (%s):\n%s" % (self.name, self.proc.returncode,
                                                       log_tail(self.logfile)))
            if time.monotonic() > deadline:
                fail("postgres %s not ready in %ds:\n%s" % (self.name, timeout, log_tail(self.logfile)))
            time.sleep(0.1)
        wait_port(self.port, timeout=10, proc=self.proc.popen, what="postgres " + self.name)

    def stop(self):
        """Fast shutdown (SIGINT), as pg_ctl stop -m fast."""
        if self.proc is not None:
            self.proc.stop(timeout=30)

    def kill(self):
        """Immediate shutdown (SIGQUIT), as pg_ctl stop -m immediate: backends send their
        clients a FATAL and exit at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            self.proc.stop(timeout=1)

    def kill9(self):
        """SIGKILL the postmaster and every backend at once (the machine dies): clients see
        their TCP connection close with no message."""
        if self.proc is not None:
            # backends call setsid(), so they are not in the postmaster's group: find them.
            # Stop the postmaster first so it cannot react (crash recovery) meanwhile.
            self.proc.send_signal(signal.SIGSTOP)
            for pid in child_pids(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill_group(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc.stop(timeout=1)
            # shared memory of a SIGKILLed postmaster: a restart cleans it up itself.

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc.stop(timeout=1)
        return []

    # -- SQL as superuser over the unix socket

    def sql(self, query, db="postgres", user=SUPERUSER, timeout=120, check_rc=True):
        """Run query with psql as `user` over the unix socket; return stdout (unaligned,
        tuples only, '|' separated), stripped. Fails the test on error when check_rc."""
        r = run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                 "-p", str(self.port), "-U", user, "-d", db, "-c", query],
                env=clean_env(home=self.dir), timeout=timeout)
        if check_rc and r.returncode != 0:
            fail("sql on %s/%s failed: %s\n  query: %s" % (self.name, db, r.stderr.strip(), query[:300]))
        return r.stdout.strip()

    def _setup(self):
        stmts = []
        for user, (pw, _method, enc) in USERS.items():
            stmts.append("SET password_encryption = %s; CREATE ROLE %s LOGIN PASSWORD %s;"
                         % (_lit(enc), user, _lit(pw)))
        stmts.append("CREATE ROLE %s LOGIN;" % CERT_USER)
        self.sql("\n".join(stmts))
        for db in DATABASES:
            self.sql("CREATE DATABASE %s OWNER %s" % (_q(db), DB_OWNER))
            self.sql("ALTER DATABASE %s SET sy.cluster = %s" % (_q(db), _lit(self.name)))
        self.sql("ALTER DATABASE postgres SET sy.cluster = %s" % _lit(self.name))
        self.sql("GRANT ALL ON SCHEMA public TO PUBLIC")
        for db in DATABASES:
            self.sql("GRANT ALL ON SCHEMA public TO PUBLIC", db=db)

    def env(self, user=SUPERUSER, db="postgres", sslmode=None, **extra):
        """libpq environment to reach this cluster over TCP as `user` (password included)."""
        e = {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": user, "PGDATABASE": db}
        if user in USERS:
            e["PGPASSWORD"] = USERS[user][0]
        if sslmode:
            e["PGSSLMODE"] = sslmode
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def conninfo(self, sslmode="disable", **kw):
        parts = ["host=127.0.0.1", "port=%d" % self.port, "sslmode=%s" % sslmode]
        parts += ["%s=%s" % (k, v) for k, v in kw.items()]
        return " ".join(parts)

    def backend_pids(self, where="true"):
        out = self.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND (%s)" % where)
        return [int(x) for x in out.split()] if out else []


# --------------------------------------------------------------------------------------------
# Clients: psql/pgbench

def psql(port, sql=None, db="sourcegraph", user=SUPERUSER, host="127.0.0.1", env=None,
         timeout=60, args=(), input=None, stdout_file=None, home=None):
    """Run psql against host:port (switchyard, or a server directly) with a clean environment
    plus `env`. Returns CompletedProcess (text). -X: no psqlrc; -A -t: bare values."""
    argv = [PSQL, "-X", "-A", "-t", "-h", host, "-p", str(port), "-U", user, "-d", db] + list(args)
    if sql is not None:
        argv += ["-c", sql]
    e = clean_env(env, home=home)
    if stdout_file is not None:
        try:
            with open(stdout_file, "wb") as out:
                r = subprocess.run(argv, env=e, stdin=subprocess.DEVNULL if input is None else input,
                                   stdout=out, stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("psql timed out after %ss: %s" % (timeout, (sql or "")[:200]))
        r.stderr = r.stderr.decode("utf-8", "replace")
        return r
    if input is not None and not isinstance(input, str):
        try:
            r = subprocess.run(argv, env=e, stdin=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("psql timed out after %ss: %s" % (timeout, (sql or "")[:200]))
        r.stdout = r.stdout.decode("utf-8", "replace")
        r.stderr = r.stderr.decode("utf-8", "replace")
        return r
    return run(argv, env=e, timeout=timeout, input=input)


def psql_ok(port, sql, **kw):
    """psql that must succeed; returns stripped stdout."""
    r = psql(port, sql, **kw)
    if r.returncode != 0:
        fail("psql -p %s -d %s failed (%d): %s\n  sql: %s" % (port, kw.get("db", "sourcegraph"),
                                                             r.returncode, r.stderr.strip()[-1500:], sql[:200]))
    return r.stdout.strip()


_CAUSE_RE = re.compile(r'connection to server (?:at|on) .*?failed: (.*)$')


def libpq_cause(stderr):
    """The libpq cause in a psql connection error: the text after the last
    'connection to server at "...", port N failed: ', first line, with 'FATAL:  ' kept.
    Falls back to the last non-empty line."""
    lines = [l for l in (stderr or "").splitlines() if l.strip()]
    cause = None
    for i, l in enumerate(lines):
        m = _CAUSE_RE.search(l)
        if m:
            cause = m.group(1).strip()
            if not cause and i + 1 < len(lines):
                cause = lines[i + 1].strip()
    if cause is None and lines:
        cause = lines[-1].strip()
        if cause.startswith("psql: error: "):
            cause = cause[len("psql: error: "):]
    return cause or ""


# --------------------------------------------------------------------------------------------
# PgWire: a small protocol-3 client on a raw socket.

PROTO_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__("%s %s: %s" % (fields.get("S", "?"), fields.get("C", "?"), fields.get("M", "?")))

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


class ConnectionClosed(Exception):
    pass


def startup_packet(params, proto=PROTO_3_0):
    body = struct.pack("!I", proto)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def data_row(body):
    """A DataRow body as a tuple of str (None for NULL)."""
    n = struct.unpack("!H", body[:2])[0]
    off, row = 2, []
    for _ in range(n):
        ln = struct.unpack("!i", body[off:off + 4])[0]
        off += 4
        if ln < 0:
            row.append(None)
        else:
            row.append(body[off:off + ln].decode("utf-8", "replace"))
            off += ln
    return tuple(row)


def parse_error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


class PgWire:
    """
    A minimal frontend: startup (no client password: switchyard trusts loopback clients;
    cleartext/md5 if a server asks), simple query, async notifications, cancel.

        w = PgWire(port); w.startup(user="postgres", database="sourcegraph", TimeZone="UTC")
        w.params (ParameterStatus), w.pid, w.secret (BackendKeyData), w.order (message types)
        rows = w.query("SELECT 1")           # list of tuples of str/None; raises PgError
        w.status                              # 'I', 'T' or 'E' from the last ReadyForQuery
    """

    def __init__(self, port, host="127.0.0.1", timeout=30.0, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.port = port
        self.host = host
        self.buf = b""
        self.params = {}
        self.pid = None
        self.secret = None
        self.status = None
        self.notices = []
        self.notifications = []
        self.order = []
        self.negotiate = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _recv_exact(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except ConnectionResetError:
                raise ConnectionClosed("connection reset by peer (%d bytes pending)" % len(self.buf))
            if not chunk:
                raise ConnectionClosed("connection closed by peer (%d bytes pending)" % len(self.buf))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_byte(self):
        return self._recv_exact(1)

    def read_msg(self):
        """Next backend message as (type char, body bytes)."""
        hdr = self._recv_exact(5)
        typ = chr(hdr[0])
        ln = struct.unpack("!I", hdr[1:5])[0]
        if ln < 4 or ln > (1 << 30):
            raise ConnectionClosed("bad message length %d for %r" % (ln, typ))
        return typ, self._recv_exact(ln - 4)

    def ssl_request(self):
        self.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
        return self.read_byte()

    def startup(self, user=SUPERUSER, database="sourcegraph", password=None, proto=PROTO_3_0,
                **params):
        p = {"user": user, "database": database}
        p.update(params)
        self.send(startup_packet(p, proto))
        return self.read_startup(password=password, user=user)

    def read_startup(self, password=None, user=None):
        while True:
            typ, body = self.read_msg()
            self.order.append(typ)
            if typ == "R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 0:
                    continue
                if code == 3 and password is not None:
                    self._send_msg(b"p", password.encode() + b"\0")
                    continue
                if code == 5 and password is not None:
                    salt = body[4:8]
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest().encode()
                    self._send_msg(b"p", b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0")
                    continue
                if code in (10, 11, 12) and password is not None:
                    self._scram_step(code, body[4:], password)
                    continue
                raise PgError({"S": "CLIENT", "C": "XXCLI", "M": "authentication request %d not supported by PgWire" % code})
            elif typ == "S":
                k, v = body.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif typ == "K":
                self.pid, self.secret = struct.unpack("!Ii", body[:8])
            elif typ == "Z":
                self.status = chr(body[0])
                return self
            elif typ == "E":
                raise PgError(parse_error_fields(body))
            elif typ == "N":
                self.notices.append(parse_error_fields(body))
            elif typ == "v":
                self.negotiate = body  # NegotiateProtocolVersion
            else:
                raise ConnectionClosed("unexpected message %r during startup" % typ)

    def _scram_step(self, code, data, password):
        """SCRAM-SHA-256 as libpq does it (no channel binding): 10 AuthenticationSASL,
        11 SASLContinue, 12 SASLFinal (the server's signature is checked)."""
        import base64
        import hmac
        if code == 10:
            mechs = data.split(b"\0")
            if b"SCRAM-SHA-256" not in mechs:
                raise PgError({"S": "CLIENT", "C": "XXCLI", "M": "no SCRAM-SHA-256 in %r" % mechs})
            self._scram_nonce = base64.b64encode(os.urandom(18)).decode()
            self._scram_first_bare = "n=,r=" + self._scram_nonce
            first = ("n,," + self._scram_first_bare).encode()
            self._send_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        elif code == 11:
            server_first = data.decode()
            attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
            if not attrs["r"].startswith(self._scram_nonce):
                raise PgError({"S": "CLIENT", "C": "XXCLI", "M": "SCRAM nonce mismatch"})
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            stored = hashlib.sha256(client_key).digest()
            without_proof = "c=biws,r=" + attrs["r"]
            auth = ("%s,%s,%s" % (self._scram_first_bare, server_first, without_proof)).encode()
            sig = hmac.new(stored, auth, "sha256").digest()
            proof = bytes(a ^ b for a, b in zip(client_key, sig))
            server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            self._scram_server_sig = base64.b64encode(hmac.new(server_key, auth, "sha256").digest()).decode()
            self._send_msg(b"p", (without_proof + ",p=" + base64.b64encode(proof).decode()).encode())
        else:
            if data.decode() != "v=" + self._scram_server_sig:
                raise PgError({"S": "CLIENT", "C": "XXCLI", "M": "SCRAM server signature mismatch: %r" % data})

    def _send_msg(self, typ, body):
        self.send(typ + struct.pack("!I", len(body) + 4) + body)

    def send_query(self, sql):
        self._send_msg(b"Q", sql.encode() + b"\0")

    def query(self, sql):
        """Simple query; returns the rows of the last result. Raises PgError after reading up
        to ReadyForQuery."""
        self.send_query(sql)
        return self.read_result()

    def read_result(self):
        rows, err = [], None
        while True:
            try:
                typ, body = self.read_msg()
            except ConnectionClosed:
                # A FATAL error followed by the close is how a server (or switchyard) ends
                # a session: libpq reports the error, so do we.
                if err is not None:
                    raise err
                raise
            if typ == "T":
                rows = []
            elif typ == "D":
                rows.append(data_row(body))
            elif typ == "E":
                err = PgError(parse_error_fields(body))
            elif typ == "N":
                self.notices.append(parse_error_fields(body))
            elif typ == "A":
                self._notification(body)
            elif typ == "S":
                k, v = body.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif typ == "Z":
                self.status = chr(body[0])
                if err:
                    raise err
                return rows
            elif typ in ("C", "I", "1", "2", "n", "t", "s"):
                pass
            elif typ in ("G", "H"):  # COPY IN/OUT: not used through PgWire
                raise ConnectionClosed("COPY not supported by PgWire")
            else:
                pass

    def _notification(self, body):
        pid = struct.unpack("!I", body[:4])[0]
        parts = body[4:].split(b"\0")
        self.notifications.append((pid, parts[0].decode(), parts[1].decode()))

    def wait_notification(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while not self.notifications:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
                try:
                    typ, body = self.read_msg()
                except socket.timeout:
                    return None
                if typ == "A":
                    self._notification(body)
                elif typ == "E":
                    raise PgError(parse_error_fields(body))
            return self.notifications.pop(0)
        finally:
            self.sock.settimeout(old)

    def read_until_close(self, timeout=10.0):
        """Read everything until the peer closes; returns (bytes, closed: bool)."""
        data = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return data, False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return data, False
            except ConnectionResetError:
                return data, True
            if not chunk:
                return data, True
            data += chunk

    def terminate(self):
        try:
            self._send_msg(b"X", b"")
        except OSError:
            pass
        self.close()


def cancel_request(port, pid, secret, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(struct.pack("!IIIi", 16, CANCEL_REQUEST_CODE, pid, secret))
        s.settimeout(5)
        try:
            s.recv(1)
        except OSError:
            pass


def error_messages(data):
    """Parse raw backend bytes into a list of ErrorResponse field dicts (best effort; a
    leading single 'N'/'S' byte answer to SSLRequest is skipped)."""
    errs = []
    i = 0
    if data[:1] in (b"N", b"S") and (len(data) == 1 or data[1:2] in (b"E", b"")):
        i = 1
    while i + 5 <= len(data):
        typ = data[i:i + 1]
        ln = struct.unpack("!I", data[i + 1:i + 5])[0]
        if ln < 4 or i + 1 + ln > len(data):
            break
        if typ == b"E":
            errs.append(parse_error_fields(data[i + 5:i + 1 + ln]))
        i += 1 + ln
    return errs


def connect_error(port, db="sourcegraph", user=SUPERUSER, timeout=30.0, **params):
    """Start up through switchyard expecting failure; returns (PgError, seconds).
    Fails the test when the startup succeeds or the connection closes silently."""
    t0 = time.monotonic()
    w = PgWire(port, timeout=timeout)
    try:
        w.startup(user=user, database=db, **params)
    except PgError as e:
        return e, time.monotonic() - t0
    except ConnectionClosed as e:
        fail("connection to db %s closed without an ErrorResponse after %.1fs: %s"
             % (db, time.monotonic() - t0, e))
    except socket.timeout:
        fail("no answer from switchyard for db %s within %.0fs" % (db, timeout))
    finally:
        w.close()
    fail("startup to db %s succeeded; expected an error" % db)


class Console:
    """The admin console (database "switchyard" on a postgres listener of switchyard) over a
    raw protocol-3 socket, so that result sets and ErrorResponses are seen exactly as sent.
    One connection for the console's whole life: a test that counts descriptors sees the
    same one before and after."""

    def __init__(self, port, timeout=60.0):
        self.w = PgWire(port, timeout=timeout)
        self.w.startup(user=SUPERUSER, database="switchyard")

    def close(self):
        self.w.terminate()

    def result(self, sql):
        """(column names, rows as tuples) of one command; raises PgError."""
        w = self.w
        w.send_query(sql)
        cols, rows, err = [], [], None
        while True:
            typ, body = w.read_msg()
            if typ == "T":
                n = struct.unpack("!H", body[:2])[0]
                off, cols, rows = 2, [], []
                for _ in range(n):
                    end = body.index(b"\0", off)
                    cols.append(body[off:end].decode())
                    off = end + 1 + 18
            elif typ == "D":
                rows.append(data_row(body))
            elif typ == "E":
                err = PgError(parse_error_fields(body))
            elif typ == "Z":
                w.status = chr(body[0])
                if err:
                    raise err
                return cols, rows

    def rows(self, sql):
        cols, rows = self.result(sql)
        return [dict(zip(cols, r)) for r in rows]


def wait_clients(console, pred, what, timeout=10.0, route=None):
    """Poll the console's SHOW CLIENTS (rows as dicts: id, protocol, route, target, state,
    held, detail; only those of `route` when given) until pred(rows) is true; returns the
    rows. Fails naming `what`, with the last rows seen."""
    last = []

    def look():
        last[:] = [r for r in console.rows("SHOW CLIENTS") if route is None or r["route"] == route]
        return list(last) if pred(last) else None

    return wait_until(look, timeout, lambda: "%s; SHOW CLIENTS: %r" % (what, last))


# --------------------------------------------------------------------------------------------
# switchyard

_bin_copy = None


def switchyard_bin():
    """$SWITCHYARD_BIN, copied once per run into the temporary base, so that a rebuild while
    the suite runs cannot change the binary under test halfway."""
    global _bin_copy
    b = os.environ.get("SWITCHYARD_BIN")
    if not b:
        fail("SWITCHYARD_BIN is not set (run through `make integration` or tests/run_all.py)")
    require_file(b, "switchyard binary")
    with _lock:
        if _bin_copy is None:
            dst = os.path.join(tmpdir("bin"), "switchyard")
            shutil.copy2(b, dst)
            os.chmod(dst, 0o755)
            _bin_copy = dst
    return _bin_copy


def tool(name):
    d = os.environ.get("SWITCHYARD_TOOLS")
    if not d:
        fail("SWITCHYARD_TOOLS is not set")
    return require_file(os.path.join(d, name), "test tool " + name)


def listen_ports(conf_text, args=()):
    """{listener name: TCP port} from a config text and its -o listener.NAME.listen=... overrides,
    in the order the listeners appear."""
    out, section = {}, None
    for line in conf_text.splitlines():
        line = line.split("#")[0].split(";")[0].strip()
        m = re.match(r"^\[\s*listener\s+(\S+)\s*\]$", line)
        if m:
            section = m.group(1)
            continue
        if line.startswith("["):
            section = None
            continue
        m = re.match(r"^listen\s*=\s*(\S+):(\d+)$", line)
        if section and m:
            out[section] = int(m.group(2))
    for a in args:
        m = re.match(r"^listener\.([^.]+)\.listen=(\S+):(\d+)$", a)
        if m:
            out[m.group(1)] = int(m.group(3))
    return out


class Switchyard:
    """
    The daemon under test.

        sy = Switchyard(conf_text, env={"PGHOST": ...}, env_file=None, args=[...])
        sy.port (first listen port found in conf_text), sy.log_text(), sy.rss_kb()
        sy.stop()  SIGTERM, wait, and fail if it did not exit 0 or a sanitizer spoke

    The environment is clean: PATH, HOME (an empty directory unless env has HOME), the
    sanitizer options and `env`. Waits until every `listen = host:port` in the config (and
    in -o ...listen=... overrides) accepts connections.
    """

    def __init__(self, conf_text, env=None, env_file=None, args=(), wait=True, asan_extra="",
                 timeout=30.0, stop_timeout=20.0):
        self.bin = switchyard_bin()
        self.dir = tmpdir("sy")
        self.conf_path = os.path.join(self.dir, "switchyard.conf")
        with open(self.conf_path, "w") as f:
            f.write(conf_text)
        self.logfile = os.path.join(self.dir, "switchyard.log")
        argv = [self.bin, "--config", self.conf_path]
        if env_file is not None:
            if "\n" in env_file or "=" in env_file and not os.path.exists(env_file):
                p = os.path.join(self.dir, "env")
                with open(p, "w") as f:
                    f.write(env_file)
                env_file = p
            argv += ["--env-file", env_file]
        for a in args:
            argv += ["-o", a] if "=" in a and not a.startswith("-") else [a]
        if not re.search(r"(?m)^\s*workers\s*=", conf_text) and not any("workers=" in a for a in args):
            # Sessions on more than one worker loop on any machine, so every test crosses
            # loops the way a multi-core host does (the default, auto, follows the CPUs).
            argv += ["-o", "switchyard.workers=%s" % TEST_WORKERS]
        self.argv = argv
        e = {"PATH": BASE_PATH, "HOME": empty_home(),
             "ASAN_OPTIONS": ASAN_OPTIONS + (":" + asan_extra if asan_extra else ""),
             "UBSAN_OPTIONS": UBSAN_OPTIONS, "TSAN_OPTIONS": TSAN_OPTIONS}
        if env:
            e.update({k: str(v) for k, v in env.items() if v is not None})
        self.env = e
        self.stop_timeout = stop_timeout
        self.stopped = False
        self.listeners = listen_ports(conf_text, args)
        self.ports = list(self.listeners.values())
        self.port = self.ports[0] if self.ports else None
        try:
            self.proc = Proc(argv, env=e, log=self.logfile, name="switchyard")
        except OSError as ex:
            fail("cannot start switchyard %s: %s" % (self.bin, ex))
        _unregister(self.proc)
        _register(self)
        self.pid = self.proc.pid
        if wait:
            for p in self.ports:
                try:
                    wait_port(p, timeout=timeout, proc=self.proc.popen, what="switchyard")
                except TestFailure as e:
                    fail("%s; log:\n%s" % (e, log_tail(self.logfile, 30)))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            self.cleanup()
        return False

    def log_text(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        """The log's length in bytes now: wait_log(since=sy.log_size()) taken before an action
        waits for an event that the action caused, not an older one."""
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def wait_log(self, pattern, timeout=10.0, since=0, count=1, what=None):
        """Wait until `count` lines of the log after byte offset `since` match the regular
        expression `pattern` (re.search); returns the matching lines. Fails naming `what` (or
        the pattern), with the log's tail, when timeout passes or switchyard exits first."""
        rx = re.compile(pattern)
        desc = what or "%s in switchyard's log" % (pattern if count == 1 else "%d lines matching %s" % (count, pattern))
        found = []

        def seen():
            if not self.alive():
                fail("switchyard exited (status %s) while waiting for %s:\n%s"
                     % (self.proc.returncode, desc, log_tail(self.logfile, 30)))
            with open(self.logfile, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
            found[:] = [l for l in text.splitlines() if rx.search(l)]
            return found[:count] if len(found) >= count else None

        return wait_until(seen, timeout, lambda: "%s (%d seen); log tail:\n%s"
                          % (desc, len(found), log_tail(self.logfile, 30)))

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            fail("switchyard died (status %s):\n%s" % (self.proc.returncode, log_tail(self.logfile, 40)))

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        fail("no VmRSS for switchyard")

    def sanitizer_report(self):
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.index(m)
                return text[max(0, i - 200):i + 3000]
        return None

    def _stop(self, signalled=False):
        """SIGTERM and wait; returns a list of problems (empty when clean). signalled: the
        test sent SIGTERM itself, so an exit before this call is expected (status must be 0)."""
        if self.stopped:
            return []
        self.stopped = True
        problems = []
        rc = self.proc.poll()
        if rc is not None and signalled:
            if rc != 0:
                problems.append("switchyard exited with status %s after SIGTERM" % rc)
        elif rc is not None:
            problems.append("switchyard had already exited with status %s before stop" % rc)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
                problems.append("switchyard did not exit within %.0fs of SIGTERM" % self.stop_timeout)
                rc = None
            if rc not in (0, None):
                problems.append("switchyard exited with status %s after SIGTERM" % rc)
        self.proc.stop(timeout=1)
        _unregister(self)
        rep = self.sanitizer_report()
        if rep:
            problems.append("sanitizer report in switchyard log:\n" + rep)
        if problems and not rep:
            problems.append("log tail:\n" + log_tail(self.logfile, 25))
        return problems

    def stop(self):
        problems = self._stop()
        if problems:
            fail("; ".join(problems))

    def cleanup(self):
        return self._stop()

    def exited_problems(self):
        """After the test sent SIGTERM and the process exited: problems with how it ended
        (exit status, sanitizer reports), as a list."""
        return self._stop(signalled=True)


def pg_route(name, databases=None, listener="pg", default=False, env_prefix=None, builtin=None,
             extra=""):
    lines = ["[route %s]" % name, "listener = %s" % listener]
    if databases:
        lines.append("databases = %s" % (databases if isinstance(databases, str) else ",".join(databases)))
    if default:
        lines.append("default = true")
    if env_prefix is not None:
        lines.append("env_prefix = %s" % (env_prefix or '""'))
    if builtin:
        lines.append("builtin = %s" % builtin)
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def pg_conf(port, routes, listener="pg", globals_extra="", listener_extra=""):
    """A switchyard config with one postgres listener on 127.0.0.1:port and the given route
    sections (strings from pg_route)."""
    head = ("[switchyard]\nmetrics_listen = off\ndrain_timeout = 2\n%s\n"
            "[listener %s]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n%s\n"
            % (globals_extra, listener, port, listener_extra))
    return head + "\n".join(routes)


def default_pg_conf(port, builtin, codeintel_builtin=None, codeinsights_builtin=None, **kw):
    """The container's three routes, every built-in on the given cluster(s)."""
    return pg_conf(port, [
        pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=builtin.conninfo()),
        pg_route("pg-codeintel", "sourcegraph-codeintel", env_prefix="CODEINTEL_",
                 builtin=(codeintel_builtin or builtin).conninfo()),
        pg_route("pg-codeinsights", "sourcegraph-codeinsights", env_prefix="CODEINSIGHTS_",
                 builtin=(codeinsights_builtin or builtin).conninfo()),
    ], **kw)


def prefixed(prefix, env):
    return {prefix + k: v for k, v in env.items()}


# --------------------------------------------------------------------------------------------
# Redis

class RedisServer:
    """
    redis-server on 127.0.0.1:<free port> (dir in tmp, --save '' --appendonly no).

        RedisServer(password="pw", acl=["user alice on >apw ~* &* +@all"], tls=ctx.tls,
                    tls_auth_clients="no")
        .port, .tls_port (None without tls), .cli(*args, tls=False, user=None, password=None,
        db=None, input=None) -> CompletedProcess, .stop(), .kill(), .start()
    """

    def __init__(self, password=None, acl=None, tls=None, tls_auth_clients="no", extra_args=()):
        self.password = password
        self.acl = list(acl or [])
        self.tls = tls
        self.dir = tmpdir("redis")
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.logfile = os.path.join(self.dir, "redis.log")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", self.logfile,
                "--unixsocket", os.path.join(self.dir, "redis.sock")]
        if password:
            args += ["--requirepass", password]
        for line in self.acl:
            args += ["--user"] + line.split()[1:] if line.startswith("user ") else ["--user"] + line.split()
        if tls:
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", tls.server_crt,
                     "--tls-key-file", tls.server_key, "--tls-ca-cert-file", tls.ca_a,
                     "--tls-auth-clients", tls_auth_clients]
        args += list(extra_args)
        self.args = args
        self.proc = None
        _register(self)
        self.start()

    def start(self, timeout=20):
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = Proc(self.args, env=clean_env(home=self.dir), log=os.path.join(self.dir, "stdout.log"),
                         name="redis-server")
        _unregister(self.proc)
        wait_port(self.port, timeout=timeout, proc=self.proc.popen, what="redis-server")
        if self.tls_port:
            wait_port(self.tls_port, timeout=timeout, proc=self.proc.popen, what="redis-server tls")
        deadline = time.monotonic() + timeout
        while True:
            r = self.cli("PING")
            if r.returncode == 0 and "PONG" in r.stdout:
                return
            if time.monotonic() > deadline:
                fail("redis-server not answering PING: %s %s\n%s" % (r.stdout, r.stderr, log_tail(self.logfile)))
            time.sleep(0.05)

    def cli(self, *args, tls=False, user=None, password=None, db=None, input=None, port=None,
            timeout=60, raw=False):
        """redis-cli against this server (password defaults to requirepass)."""
        argv = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port or (self.tls_port if tls else self.port))]
        if tls:
            argv += ["--tls", "--cacert", self.tls.ca_a]
        if user:
            argv += ["--user", user]
        pw = password if password is not None else (self.password if not user else None)
        if pw:
            argv += ["-a", pw, "--no-auth-warning"]
        if db is not None:
            argv += ["-n", str(db)]
        if raw:
            argv.append("--raw")
        argv += [str(a) for a in args]
        return run(argv, env=clean_env(), timeout=timeout, input=input)

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=10)

    def kill(self):
        if self.proc is not None:
            self.proc.kill_group(signal.SIGKILL)
            self.proc.stop(timeout=5)

    def cleanup(self):
        self.kill()
        return []


# --------------------------------------------------------------------------------------------
# Odds and ends for tests

class SilentListener:
    """A loopback TCP listener that accepts and never answers (for connect_timeout tests)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.received = []
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        _register(self)

    def _loop(self):
        while not self.closed:
            r, _, _ = select.select([self.sock] + self.conns, [], [], 0.2)
            for s in r:
                if s is self.sock:
                    try:
                        c, _ = self.sock.accept()
                        self.conns.append(c)
                    except OSError:
                        return
                else:
                    try:
                        d = s.recv(65536)
                    except OSError:
                        d = b""
                    if d:
                        self.received.append(d)
                    else:
                        self.conns.remove(s)
                        s.close()

    def cleanup(self):
        self.closed = True
        self.thread.join(timeout=2)
        for c in self.conns:
            c.close()
        self.sock.close()
        return []


def closed_port():
    """A loopback port with nothing listening on it."""
    return free_port()


class Context:
    """Shared state handed to every test: the clusters are started on first use."""

    def __init__(self):
        self._tls = None
        self._builtin = None
        self._external = None

    @property
    def tls(self):
        if self._tls is None:
            with global_scope():
                self._tls = Tls()
        return self._tls

    @property
    def builtin(self):
        if self._builtin is None:
            with global_scope():
                self._builtin = PgCluster("builtin", ssl=False, hba="trust")
        return self._builtin

    @property
    def external(self):
        if self._external is None:
            tls = self.tls
            with global_scope():
                self._external = PgCluster("external", ssl=True, tls=tls, hba="external")
        return self._external

    def alive_check(self):
        """Shared clusters must survive every test."""
        for c in (self._builtin, self._external):
            if c is not None and c.proc is not None and c.proc.poll() is not None:
                c.start()


def external_env(ctx, user="scram_user", db="sourcegraph", sslmode="verify-full", host="localhost",
                 prefix="", **extra):
    """The libpq variables that point a route (by prefix) at the shared external cluster:
    TLS verified against CA A, password from USERS."""
    e = {"PGHOST": host, "PGPORT": str(ctx.external.port), "PGUSER": user, "PGDATABASE": db,
         "PGSSLMODE": sslmode, "PGSSLROOTCERT": ctx.tls.ca_a, "PGCONNECT_TIMEOUT": "10"}
    if user in USERS:
        e["PGPASSWORD"] = USERS[user][0]
    e.update({k: str(v) for k, v in extra.items()})
    return prefixed(prefix, e)


def start_default(ctx, env=None, **kw):
    """switchyard with the container's three routes (built-ins on ctx.builtin) and `env`."""
    port = free_port()
    return Switchyard(default_pg_conf(port, ctx.builtin), env=env, **kw)
