"""
test_pg_basic.py - issue 2, case 3: real clients through switchyard.

Unless a test says otherwise the route `pg` (database sourcegraph) points at the shared
external cluster over TLS (verify-full against CA A) as scram_user, the way an operator would
set PG*; clients connect as "postgres" with no password and are mapped.
"""

import ctypes
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import time

import harness
from harness import PgError, PgWire, check, fail, psql, psql_ok


def _sy(ctx, **kw):
    return harness.start_default(ctx, env=harness.external_env(ctx), **kw)


def test_check_masks_password(ctx):
    """--check prints the effective routes and exits 0, never showing the password."""
    port = harness.free_port()
    conf_path = os.path.join(harness.tmpdir("chk"), "sy.conf")
    with open(conf_path, "w") as f:
        f.write(harness.default_pg_conf(port, ctx.builtin))
    env = harness.clean_env(harness.external_env(ctx))
    env["PGPASSWORD"] = "very-secret-passw0rd"
    r = harness.run([harness.switchyard_bin(), "--config", conf_path, "--check"], env=env, timeout=30)
    out = r.stdout + r.stderr
    check(r.returncode == 0, "--check exited %d: %s" % (r.returncode, out[-3000:]))
    check("very-secret-passw0rd" not in out, "--check printed the password:\n" + out)
    for name in ("pg", "pg-codeintel", "pg-codeinsights"):
        check(name in out, "--check output does not mention route %s:\n%s" % (name, out))
    check("localhost" in out and str(ctx.external.port) in out,
          "--check does not show the external target:\n" + out)


def test_check_bad_config(ctx):
    """Bad configuration: non-zero exit, a message naming the file, the key and the problem."""
    d = harness.tmpdir("badconf")
    good = harness.default_pg_conf(6543, ctx.builtin)
    bad_cases = [
        ("listen port", good.replace("listen = 127.0.0.1:6543", "listen = 127.0.0.1:99999"), "listen"),
        ("route without listener", good.replace("listener = pg\ndatabases = sourcegraph-codeintel",
                                                "listener = nope\ndatabases = sourcegraph-codeintel"), "listener"),
        ("two defaults", good.replace("databases = sourcegraph-codeinsights",
                                      "databases = sourcegraph-codeinsights\ndefault = true"), "default"),
        ("unknown key", good.replace("[switchyard]", "[switchyard]\nno_such_key = 1"), "no_such_key"),
    ]
    problems = []
    for name, text, key in bad_cases:
        check(text != good, "test bug: %s did not change the config" % name)
        path = os.path.join(d, "bad.conf")
        with open(path, "w") as f:
            f.write(text)
        r = harness.run([harness.switchyard_bin(), "--config", path, "--check"],
                        env=harness.clean_env({"ASAN_OPTIONS": harness.ASAN_OPTIONS}), timeout=30)
        out = r.stdout + r.stderr
        if r.returncode == 0:
            problems.append("%s: --check exited 0" % name)
        if "bad.conf" not in out or key not in out:
            problems.append("%s: message does not name the file and %r: %r" % (name, key, out.strip()[:300]))
        for m in harness.SANITIZER_MARKERS:
            if m in out:
                problems.append("%s: sanitizer report:\n%s" % (name, out[out.index(m) - 100:][:1500]))
    check(not problems, "\n".join(problems))


def test_psql_c(ctx):
    sy = _sy(ctx)
    out = psql_ok(sy.port, "SELECT current_user, current_database(), current_setting('sy.cluster'), "
                           "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")
    check(out == "scram_user|sourcegraph|external|t", "unexpected upstream identity: %r" % out)
    # a client asking for TLS (sslmode=require) is refused by default: no certificate is
    # configured on the listener, so SSLRequest is answered N
    r = psql(sy.port, "SELECT 1", env={"PGSSLMODE": "require"})
    check(r.returncode != 0 and "server does not support SSL" in r.stderr,
          "sslmode=require towards switchyard without a listener certificate: %r %r" % (r.stdout, r.stderr))
    sy.stop()


def _proxy_socket(pid, local_port, remote_port):
    """A duplicate, in this process, of the TCP socket that process pid holds for the
    connection local_port <-> remote_port (pidfd_getfd), as a socket object."""
    inode = None
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                col = line.split()
                if int(col[1].rsplit(":", 1)[1], 16) == local_port and int(col[2].rsplit(":", 1)[1], 16) == remote_port:
                    inode = col[9]
    check(inode is not None, "no socket %d <-> %d in switchyard's tcp tables" % (local_port, remote_port))
    fd = None
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, n)) == "socket:[%s]" % inode:
                fd = int(n)
        except OSError:
            pass
    check(fd is not None, "switchyard holds no fd for socket inode %s" % inode)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(438, pidfd, fd, 0)   # SYS_pidfd_getfd
    finally:
        os.close(pidfd)
    check(dup >= 0, "pidfd_getfd of switchyard's fd %d: %s" % (fd, os.strerror(ctypes.get_errno())))
    return socket.socket(fileno=dup)


def test_client_sockets_have_nodelay(ctx):
    """Every accepted client socket has TCP_NODELAY: small replies must not wait for the
    client's delayed ACK (Nagle). switchyard sets it on the listening socket, which the
    kernel passes on, and per socket only where it does not; look at the sockets
    themselves, for several clients once they are ready."""
    sy = _sy(ctx)
    conns = []
    try:
        for _ in range(3):
            w = PgWire(sy.port)
            conns.append(w)
            w.startup(user="postgres")
        for w in conns:
            s = _proxy_socket(sy.pid, sy.port, w.sock.getsockname()[1])
            try:
                on = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            finally:
                s.close()
            check(on != 0, "switchyard's socket for client port %d has TCP_NODELAY off" % w.sock.getsockname()[1])
    finally:
        for w in conns:
            w.close()
    sy.stop()


def test_startup_sequence_and_backend_pid(ctx):
    """AuthenticationOk, ParameterStatus..., BackendKeyData with the upstream's real pid,
    ReadyForQuery."""
    sy = _sy(ctx)
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        check(w.order[0] == "R", "first message is %r, not AuthenticationOk" % w.order[0])
        check(w.order[-1] == "Z" and w.order[-2] == "K",
              "BackendKeyData/ReadyForQuery not last: %s" % "".join(w.order))
        check(set(w.order[1:-2]) <= {"S"}, "unexpected messages between auth and key: %s" % "".join(w.order))
        with PgWire(ctx.external.port) as d:   # what the upstream reports to a direct client
            d.startup(user="postgres", database="sourcegraph")
        check(set(w.params) == set(d.params),
              "ParameterStatus names differ from a direct session's: missing %s, extra %s"
              % (sorted(set(d.params) - set(w.params)), sorted(set(w.params) - set(d.params))))
        for k, v in d.params.items():
            if k not in ("is_superuser", "session_authorization", "application_name"):
                check(w.params.get(k) == v, "ParameterStatus %s = %r, direct %r" % (k, w.params.get(k), v))
        check(w.params.get("session_authorization") == "scram_user",
              "session_authorization %r: not the mapped user" % w.params.get("session_authorization"))
        pid = int(w.query("SELECT pg_backend_pid()")[0][0])
        check(pid == w.pid, "BackendKeyData pid %s != pg_backend_pid() %s" % (w.pid, pid))
        check(pid in ctx.external.backend_pids(), "pid %d is not a backend of the external cluster" % pid)
        check(w.status == "I", "status %r after a query" % w.status)
        w.terminate()
    sy.stop()


def test_error_in_transaction_then_rollback(ctx):
    sy = _sy(ctx)
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        w.query("BEGIN")
        check(w.status == "T", "status after BEGIN: %r" % w.status)
        try:
            w.query("SELECT 1/0")
            fail("division by zero did not fail")
        except PgError as e:
            check(e.sqlstate == "22012", "sqlstate %s" % e.sqlstate)
        check(w.status == "E", "status after error in transaction: %r" % w.status)
        try:
            w.query("SELECT 1")
            fail("query in a failed transaction did not fail")
        except PgError as e:
            check(e.sqlstate == "25P02", "sqlstate %s" % e.sqlstate)
        w.query("ROLLBACK")
        check(w.status == "I", "status after ROLLBACK: %r" % w.status)
        check(w.query("SELECT 41 + 1") == [("42",)], "query after ROLLBACK")
    r = psql(sy.port, None, args=["-f", "-"],
             input="BEGIN;\nSELECT 1/0;\nSELECT 2;\nROLLBACK;\nSELECT 'after-rollback';\n")
    check("division by zero" in r.stderr, "psql did not report the error: %r" % r.stderr)
    check("current transaction is aborted" in r.stderr, "psql: no aborted-transaction error: %r" % r.stderr)
    check("after-rollback" in r.stdout, "psql: no result after ROLLBACK: %r %r" % (r.stdout, r.stderr))
    sy.stop()


def test_listen_notify(ctx):
    sy = _sy(ctx)
    with PgWire(sy.port) as a, PgWire(sy.port) as b:
        a.startup(database="sourcegraph")
        b.startup(database="sourcegraph")
        a.query("LISTEN sy_chan")
        b.query("NOTIFY sy_chan, 'hello from b'")
        n = a.wait_notification(timeout=10)
        check(n is not None, "notification not delivered within 10 s")
        check(n[1] == "sy_chan" and n[2] == "hello from b", "wrong notification %r" % (n,))
        check(n[0] == b.pid, "notification pid %d != sender's BackendKeyData pid %d" % (n[0], b.pid))
        # and from a psql client on another connection
        psql_ok(sy.port, "NOTIFY sy_chan, 'from psql'")
        n = a.wait_notification(timeout=10)
        check(n is not None and n[2] == "from psql", "second notification: %r" % (n,))
    sy.stop()


def test_pgbench(ctx):
    """pgbench -i, then -c 8 in simple, extended and prepared modes: no failures."""
    sy = _sy(ctx)
    base = [harness.PGBENCH, "-h", "127.0.0.1", "-p", str(sy.port), "-U", "postgres"]
    env = harness.clean_env()
    r = harness.run(base + ["-i", "-s", "2", "-q", "sourcegraph"], env=env, timeout=180)
    check(r.returncode == 0, "pgbench -i failed: %s" % (r.stderr[-2000:]))
    n = ctx.external.sql("SELECT count(*) FROM pgbench_accounts", db="sourcegraph")
    check(n == "200000", "pgbench_accounts has %s rows upstream" % n)
    for mode in ("simple", "extended", "prepared"):
        r = harness.run(base + ["-c", "8", "-j", "2", "-T", "4", "-M", mode, "-n", "sourcegraph"],
                        env=env, timeout=120)
        out = r.stdout + r.stderr
        check(r.returncode == 0, "pgbench -M %s exited %d: %s" % (mode, r.returncode, out[-2000:]))
        check("aborted" not in out, "pgbench -M %s: clients aborted: %s" % (mode, out[-2000:]))
        m = re.search(r"number of transactions actually processed: (\d+)", out)
        check(m and int(m.group(1)) > 0, "pgbench -M %s processed nothing: %s" % (mode, out[-1000:]))
        m = re.search(r"number of failed transactions: (\d+)", out)
        check(m is None or m.group(1) == "0", "pgbench -M %s had failures: %s" % (mode, out[-1000:]))
    # libpq pipeline mode (many extended-protocol queries in flight before one Sync)
    script = os.path.join(harness.tmpdir("pgbench"), "pipeline.sql")
    with open(script, "w") as f:
        f.write("\\set aid random(1, 200000)\n\\startpipeline\n"
                + "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n" * 10
                + "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
                + "\\endpipeline\n")
    r = harness.run(base + ["-c", "4", "-j", "2", "-T", "3", "-M", "extended", "-n", "-f", script, "sourcegraph"],
                    env=env, timeout=120)
    out = r.stdout + r.stderr
    check(r.returncode == 0 and "aborted" not in out, "pgbench pipeline mode: %s" % out[-2000:])
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    check(m and int(m.group(1)) > 0, "pgbench pipeline mode processed nothing: %s" % out[-1000:])
    sy.check_alive()
    sy.stop()


test_pgbench.timeout = 240


def test_copy_in_out_100mb(ctx):
    sy = _sy(ctx)
    d = harness.tmpdir("copy")
    src = os.path.join(d, "in.txt")
    nrows, width = 110_000, 1000
    h = hashlib.md5()
    with open(src, "wb") as f:
        pad = b"x" * (width - 9)
        for i in range(nrows):
            line = b"%08d%s\n" % (i, pad)
            h.update(line)
            f.write(line)
    size = os.path.getsize(src)
    check(size >= 100 * 1000 * 1000, "generated only %d bytes" % size)
    psql_ok(sy.port, "DROP TABLE IF EXISTS sy_copy; CREATE TABLE sy_copy (v text)")
    with open(src, "rb") as f:
        r = psql(sy.port, "COPY sy_copy FROM STDIN", input=f, timeout=300)
    check(r.returncode == 0 and "COPY %d" % nrows in r.stdout,
          "COPY FROM STDIN through switchyard: rc %d %r %r" % (r.returncode, r.stdout[-300:], r.stderr[-1000:]))
    got = ctx.external.sql("SELECT count(*), sum(length(v) + 1) FROM sy_copy", db="sourcegraph")
    check(got == "%d|%d" % (nrows, size), "upstream has %s, want %d rows/%d bytes" % (got, nrows, size))
    dst = os.path.join(d, "out.txt")
    r = psql(sy.port, "COPY (SELECT v FROM sy_copy ORDER BY v) TO STDOUT", stdout_file=dst, timeout=300)
    check(r.returncode == 0, "COPY TO STDOUT through switchyard failed: %s" % r.stderr[-1000:])
    h2 = hashlib.md5()
    with open(dst, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h2.update(chunk)
    check(os.path.getsize(dst) == size, "COPY out gave %d bytes, want %d" % (os.path.getsize(dst), size))
    check(h2.hexdigest() == h.hexdigest(), "COPY out differs from what went in")
    psql_ok(sy.port, "DROP TABLE sy_copy")
    sy.stop()


test_copy_in_out_100mb.timeout = 300


def test_bytea_50mb_row(ctx):
    """A 50 MB bytea value written through switchyard (a ~100 MB Query message) and read back
    (a ~100 MB DataRow)."""
    sy = _sy(ctx)
    d = harness.tmpdir("bytea")
    blob = os.urandom(50 * 1024 * 1024)
    md5 = hashlib.md5(blob).hexdigest()
    sqlf = os.path.join(d, "insert.sql")
    with open(sqlf, "wb") as f:
        f.write(b"DROP TABLE IF EXISTS sy_bytea;\nCREATE TABLE sy_bytea (id int, b bytea);\n")
        f.write(b"INSERT INTO sy_bytea VALUES (1, '\\x" + blob.hex().encode() + b"');\n")
    r = psql(sy.port, None, args=["-v", "ON_ERROR_STOP=1", "-f", sqlf], timeout=240)
    check(r.returncode == 0, "insert of a 50 MB row failed: %s" % r.stderr[-1000:])
    got = ctx.external.sql("SELECT length(b), md5(b) FROM sy_bytea WHERE id = 1", db="sourcegraph")
    check(got == "%d|%s" % (len(blob), md5), "upstream row: %s" % got)
    out = os.path.join(d, "out.txt")
    r = psql(sy.port, "SELECT b FROM sy_bytea WHERE id = 1", stdout_file=out, timeout=240)
    check(r.returncode == 0, "select of a 50 MB row failed: %s" % r.stderr[-1000:])
    with open(out, "rb") as f:
        text = f.read().strip()
    check(text.startswith(b"\\x"), "unexpected output start %r" % text[:20])
    check(len(text) == 2 + 2 * len(blob), "row came back with %d chars, want %d" % (len(text), 2 + 2 * len(blob)))
    check(hashlib.md5(bytes.fromhex(text[2:].decode())).hexdigest() == md5, "row came back different")
    psql_ok(sy.port, "DROP TABLE sy_bytea")
    sy.stop()


test_bytea_50mb_row.timeout = 300


def test_100_concurrent_clients(ctx):
    """100 psql clients at once: each blocks upstream on an advisory lock a direct session
    holds, so all 100 must be connected and waiting together before any finishes."""
    sy = _sy(ctx)
    ext = ctx.external
    app = "sy-conc-%d" % os.getpid()
    holder = PgWire(ext.port)
    holder.startup(database="sourcegraph")
    holder.query("SELECT pg_advisory_lock(4242)")
    procs = []
    try:
        for i in range(100):
            procs.append(subprocess.Popen(
                [harness.PSQL, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(sy.port), "-U", "postgres",
                 "-d", "sourcegraph", "-c", "SELECT %d FROM (SELECT pg_advisory_lock_shared(4242)) s" % i],
                env=harness.clean_env({"PGAPPNAME": app}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, start_new_session=True))
        waiting = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = int(ext.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                                  "AND wait_event_type = 'Lock'" % app))
            if waiting >= 100 or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
        print("# %d clients waiting upstream after %.1fs" % (waiting, 60 - (deadline - time.monotonic())), flush=True)
        holder.query("SELECT pg_advisory_unlock(4242)")
        bad = []
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=60)
            if p.returncode != 0 or out.strip() != "%d" % i:
                bad.append("client %d: rc %d %r %r" % (i, p.returncode, out.strip(), err.strip()[:200]))
        check(not bad, "%d of 100 clients failed:\n%s" % (len(bad), "\n".join(bad[:10])))
        check(waiting >= 100, "only %d of 100 clients were waiting upstream at once" % waiting)
    finally:
        holder.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
    sy.check_alive()
    sy.stop()


test_100_concurrent_clients.timeout = 150


def _active(cluster, pid):
    return cluster.sql("SELECT state FROM pg_stat_activity WHERE pid = %d" % pid) == "active"


def test_cancel(ctx):
    """CancelRequest with switchyard's key stops the right query within 2 s; a wrong key is
    ignored; psql's Ctrl-C (SIGINT) works."""
    sy = _sy(ctx)
    ext = ctx.external
    with PgWire(sy.port) as x, PgWire(sy.port) as y:
        x.startup(database="sourcegraph")
        y.startup(database="sourcegraph")
        check(x.pid != y.pid, "two sessions share a backend pid")
        x.send_query("SELECT pg_sleep(30)")
        y.send_query("SELECT pg_sleep(30)")
        deadline = time.monotonic() + 10
        while not (_active(ext, x.pid) and _active(ext, y.pid)):
            check(time.monotonic() < deadline, "queries did not start upstream")
            time.sleep(0.1)
        # wrong secret, and a pid switchyard never issued: both ignored
        mark = sy.log_size()
        harness.cancel_request(sy.port, x.pid, x.secret ^ 0x5A5A)
        harness.cancel_request(sy.port, 1, x.secret)
        sy.wait_log(r"event=cancel_ignored ", since=mark, count=2,
                    what="switchyard to have decided on both bad cancel requests (2 event=cancel_ignored)")
        check(_active(ext, x.pid), "a cancel with a wrong key stopped the query")
        t0 = time.monotonic()
        harness.cancel_request(sy.port, x.pid, x.secret)
        try:
            x.read_result()
            fail("cancelled query returned normally")
        except PgError as e:
            check(e.sqlstate == "57014", "cancelled query: %s" % e)
        dt = time.monotonic() - t0
        check(dt < 2.0, "cancel took %.2fs" % dt)
        check(_active(ext, y.pid), "cancelling x also stopped y's query")
        check(x.query("SELECT 'x-alive'") == [("x-alive",)], "session x after its cancel")
        harness.cancel_request(sy.port, y.pid, y.secret)
        try:
            y.read_result()
            fail("cancelled query y returned normally")
        except PgError as e:
            check(e.sqlstate == "57014", "cancelled query y: %s" % e)
    # psql's Ctrl-C
    p = subprocess.Popen([harness.PSQL, "-X", "-h", "127.0.0.1", "-p", str(sy.port), "-U", "postgres",
                          "-d", "sourcegraph", "-c", "SELECT pg_sleep(30)"],
                         env=harness.clean_env({"PGAPPNAME": "sy-cancel-psql"}), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while ext.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sy-cancel-psql' "
                      "AND state = 'active'") != "1":
            check(time.monotonic() < deadline, "psql's query did not start upstream")
            if p.poll() is not None:
                fail("psql exited early: %s" % (p.communicate()[1],))
            time.sleep(0.1)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        try:
            _out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            fail("psql did not return within 5 s of SIGINT")
        dt = time.monotonic() - t0
        check("canceling statement due to user request" in err, "psql after SIGINT: %r" % err)
        check(dt < 2.0, "psql cancel took %.2fs" % dt)
    finally:
        if p.poll() is None:
            p.kill()
    sy.stop()


def test_terminate_closes_upstream(ctx):
    """Terminate from the client ends the upstream session (no leaked backends). With pooling
    on (the default) the backend is kept for the next client instead, so that side is checked
    with pool = off, and with pooling the kept backend is closed just as cleanly when its idle
    timeout ends it."""
    for args in (["route.pg.pool=off"], ["switchyard.server_idle_timeout=1"]):
        _terminate_closes_upstream(ctx, args)


def _terminate_closes_upstream(ctx, args):
    sy = _sy(ctx, args=args)
    logsize = os.path.getsize(ctx.external.logfile)
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    pid = w.pid
    check(pid in ctx.external.backend_pids(), "upstream backend not found")
    w.terminate()
    deadline = time.monotonic() + 5
    while pid in ctx.external.backend_pids():
        check(time.monotonic() < deadline, "upstream backend %d still there 5 s after Terminate (%s)" % (pid, args))
        time.sleep(0.1)
    # cleanly: the server saw a Terminate (and a TLS close), not a dropped connection
    with open(ctx.external.logfile, "rb") as f:
        f.seek(logsize)
        new = [l for l in f.read().decode("utf-8", "replace").splitlines() if "[%d]" % pid in l]
    check(not new, "the upstream logged the session's end as unclean (%s):\n" % args + "\n".join(new))
    # and an abrupt client close too
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    pid = w.pid
    w.close()
    deadline = time.monotonic() + 5
    while pid in ctx.external.backend_pids():
        check(time.monotonic() < deadline, "upstream backend %d still there 5 s after client close (%s)" % (pid, args))
        time.sleep(0.1)
    sy.stop()


def test_show_servers_follows_the_session(ctx):
    """SHOW SERVERS has a row for the session's server connection, naming its client, its
    upstream and the state it relays in; the row goes when the client does (the server
    connection is its own object, closed on its own path when its session ends). With pooling
    on (the default) the server stays, idle and linked to nobody; with pool = off it goes."""
    for pool in ("off", "on"):
        _show_servers_follows_the_session(ctx, pool)


def _show_servers_follows_the_session(ctx, pool):
    sy = _sy(ctx, args=["route.pg.pool=%s" % pool])
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    con = harness.Console(sy.port)
    clients = [r for r in con.rows("SHOW CLIENTS") if r["route"] == "pg"]
    check(len(clients) == 1, "SHOW CLIENTS: %r, want one pg session" % clients)
    rows = [r for r in con.rows("SHOW SERVERS") if r["route"] == "pg"]
    check(len(rows) == 1 and rows[0]["client_id"] == clients[0]["id"] and rows[0]["state"] == "relay"
          and rows[0]["upstream"] == clients[0]["target"],
          "SHOW SERVERS: %r, want one row for client %r relaying to %r" % (rows, clients[0]["id"], clients[0]["target"]))
    w.terminate()
    deadline = time.monotonic() + 5
    want = [] if pool == "off" else [{"client_id": "", "state": "idle", "upstream": clients[0]["target"]}]
    while True:
        rows = [{k: r[k] for k in ("client_id", "state", "upstream")}
                for r in con.rows("SHOW SERVERS") if r["route"] == "pg"]
        if rows == want:
            break
        check(time.monotonic() < deadline, "pool = %s: SHOW SERVERS has %r 5 s after the client left, want %r"
              % (pool, rows, want))
        time.sleep(0.1)
    con.close()
    sy.stop()

def _msg(typ, body=b""):
    return typ + struct.pack("!I", len(body) + 4) + body


def test_extended_protocol_error_then_sync(ctx):
    """Parse/Bind/Execute/Sync with an error in the middle: the server skips to Sync, the
    session recovers; an unnamed and a named statement both work afterwards."""
    sy = _sy(ctx)
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")

        def run(param, stmt=b""):
            out = _msg(b"P", stmt + b"\0SELECT 10 / $1::int\0\0\0")
            out += _msg(b"B", b"\0" + stmt + b"\0" + struct.pack("!HH", 0, 1)
                        + struct.pack("!I", len(param)) + param + struct.pack("!H", 0))
            out += _msg(b"E", b"\0" + struct.pack("!I", 0)) + _msg(b"S")
            w.send(out)
            seen, rows, err = [], [], None
            while True:
                typ, body = w.read_msg()
                seen.append(typ)
                if typ == "D":
                    rows.append(body[6:].decode())
                elif typ == "E":
                    err = harness.parse_error_fields(body)
                elif typ == "Z":
                    return "".join(seen), rows, err, chr(body[0])

        seen, rows, err, st = run(b"0")
        check(err and err.get("C") == "22012", "division by zero in extended protocol: %s %s" % (seen, err))
        check(seen.endswith("EZ") and st == "I", "after the error: %s status %s" % (seen, st))
        seen, rows, err, st = run(b"5")
        check(err is None and rows == ["2"], "after recovery: %s %s %s" % (seen, rows, err))
        seen, rows, err, st = run(b"2", b"named_stmt")
        check(err is None and rows == ["5"], "named statement: %s %s %s" % (seen, rows, err))
        # a pipeline of three syncs, the middle one failing
        w.send(b"".join(_msg(b"Q", q.encode() + b"\0") for q in ("SELECT 1", "SELECT 1/0", "SELECT 3")))
        results = []
        for _ in range(3):
            try:
                results.append(w.read_result())
            except PgError as e:
                results.append(e.sqlstate)
        check(results == [[("1",)], "22012", [("3",)]], "pipelined simple queries: %r" % results)
    sy.stop()


def test_copy_fail_and_copy_errors(ctx):
    """CopyFail from the client, and a COPY the server rejects mid-stream: both end in an
    error and ReadyForQuery, and the session goes on."""
    sy = _sy(ctx)
    psql_ok(sy.port, "DROP TABLE IF EXISTS sy_copyfail; CREATE TABLE sy_copyfail (n int)")
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        w.send_query("COPY sy_copyfail FROM STDIN")
        typ, _b = w.read_msg()
        check(typ == "G", "no CopyInResponse: %r" % typ)
        w.send(_msg(b"d", b"1\n2\n") + _msg(b"f", b"client gave up\0"))
        try:
            w.read_result()
            fail("CopyFail did not fail the COPY")
        except PgError as e:
            check(e.sqlstate == "57014" and "client gave up" in e.message, "CopyFail: %s" % e)
        check(w.status == "I", "status after CopyFail: %r" % w.status)
        w.send_query("COPY sy_copyfail FROM STDIN")
        typ, _b = w.read_msg()
        check(typ == "G", "no CopyInResponse: %r" % typ)
        w.send(_msg(b"d", b"1\nnot-a-number\n3\n") + _msg(b"c"))
        try:
            w.read_result()
            fail("bad COPY data did not fail")
        except PgError as e:
            check(e.sqlstate == "22P02", "bad COPY data: %s" % e)
        check(w.query("SELECT count(*) FROM sy_copyfail") == [("0",)], "rows after failed COPYs")
        w.send_query("COPY (SELECT generate_series(1, 3)) TO STDOUT")
        seen = []
        while True:
            typ, body = w.read_msg()
            seen.append(typ)
            if typ == "Z":
                break
        check("".join(seen) == "HdddcCZ", "COPY TO STDOUT messages: %s" % "".join(seen))
    psql_ok(sy.port, "DROP TABLE sy_copyfail")
    sy.stop()


def test_query_pipelined_behind_startup(ctx):
    """A client may send its first Query right behind the StartupMessage, before
    AuthenticationOk (a server reads it from its buffer): switchyard must hold it until the
    upstream is ready, then run it."""
    sy = _sy(ctx)
    with PgWire(sy.port) as w:
        w.send(harness.startup_packet({"user": "postgres", "database": "sourcegraph"})
               + _msg(b"Q", b"SELECT 40 + 2\0") + _msg(b"Q", b"SELECT current_user\0"))
        w.read_startup()
        check(w.read_result() == [("42",)], "first pipelined query")
        check(w.read_result() == [("scram_user",)], "second pipelined query")
    sy.stop()


def test_notices_and_parameter_changes_relayed(ctx):
    """Asynchronous and in-band messages the upstream sends besides results: 20000
    NoticeResponses from one statement, ParameterStatus after SET."""
    sy = _sy(ctx)
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        w.query("DO $$ BEGIN FOR i IN 1..20000 LOOP RAISE NOTICE 'sy-notice %', i; END LOOP; END $$")
        got = [n.get("M") for n in w.notices if n.get("M", "").startswith("sy-notice")]
        check(len(got) == 20000 and got[0] == "sy-notice 1" and got[-1] == "sy-notice 20000",
              "notices: %d relayed, first %r last %r" % (len(got), got[:1], got[-1:]))
        w.query("SET application_name = 'changed-mid-session'")
        check(w.params.get("application_name") == "changed-mid-session",
              "ParameterStatus after SET application_name: %r" % w.params.get("application_name"))
        w.query("SET TimeZone = 'Pacific/Auckland'")
        check(w.params.get("TimeZone") == "Pacific/Auckland", "ParameterStatus after SET TimeZone")
    sy.stop()


def test_cancel_many_sessions_exact(ctx):
    """20 sessions in a query, half of them cancelled concurrently in random order: exactly
    those stop, the others are still running."""
    import concurrent.futures
    import random as _random
    sy = _sy(ctx)
    ext = ctx.external
    ws = []
    try:
        for _ in range(20):
            w = PgWire(sy.port)
            w.startup(database="sourcegraph")
            w.send_query("SELECT pg_sleep(20)")
            ws.append(w)
        deadline = time.monotonic() + 15
        while not all(_active(ext, w.pid) for w in ws):
            check(time.monotonic() < deadline, "the 20 queries did not all start upstream")
            time.sleep(0.1)
        victims = _random.sample(range(20), 10)
        mark = sy.log_size()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda i: harness.cancel_request(sy.port, ws[i].pid, ws[i].secret), victims))
        for i in victims:
            try:
                ws[i].read_result()
                fail("session %d was not cancelled" % i)
            except PgError as e:
                check(e.sqlstate == "57014", "session %d: %s" % (i, e))
        sy.wait_log(r"event=cancel_sent ", since=mark, count=10,
                    what="switchyard to have sent all 10 cancels (10 event=cancel_sent)")
        for i in set(range(20)) - set(victims):
            check(_active(ext, ws[i].pid), "session %d was stopped by a cancel meant for another" % i)
    finally:
        for w in ws:
            w.close()
    sy.stop()


def test_client_vanishing_commits_nothing(ctx):
    """A client that disconnects in the middle of a COPY FROM STDIN or of an open
    transaction: nothing it sent is committed upstream."""
    sy = _sy(ctx)
    ext = ctx.external
    psql_ok(sy.port, "DROP TABLE IF EXISTS sy_vanish; CREATE TABLE sy_vanish (n int)")
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    w.send_query("COPY sy_vanish FROM STDIN")
    typ, _b = w.read_msg()
    check(typ == "G", "no CopyInResponse: %r" % typ)
    w.send(_msg(b"d", b"".join(b"%d\n" % i for i in range(1000))))
    pid1 = w.pid
    harness.wait_until(lambda: ext.sql("SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = %d"
                                       % pid1) == "1000",
                       10, "the 1000 COPY rows to reach the upstream backend (pg_stat_progress_copy)")
    w.close()
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    w.query("BEGIN")
    w.query("INSERT INTO sy_vanish SELECT generate_series(1, 1000)")
    pid2 = w.pid
    w.close()
    deadline = time.monotonic() + 10
    while set(ext.backend_pids()) & {pid1, pid2}:
        check(time.monotonic() < deadline, "upstream sessions of vanished clients still there")
        time.sleep(0.1)
    n = ext.sql("SELECT count(*) FROM sy_vanish", db="sourcegraph")
    check(n == "0", "%s rows committed from clients that vanished mid-COPY / mid-transaction" % n)
    psql_ok(sy.port, "DROP TABLE sy_vanish")
    sy.stop()
