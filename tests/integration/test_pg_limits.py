"""
test_pg_limits.py - the listener options and the relay's bounds (issue 2, "The client leg" and
"The relay"): client-side TLS, the unix socket, the refusal of a non-loopback listener without
client auth, max_message_size in both directions, and back-pressure from a slow reader on
either side (memory stays bounded while 200 MB wait to move).
"""

import errno
import grp
import os
import stat
import subprocess
import socket
import struct
import threading
import time

import harness
import redis_support as rs
from harness import PgError, PgWire, check, fail, psql, psql_ok


def test_client_tls_listener(ctx):
    tls = ctx.tls
    port = harness.free_port()
    conf = harness.default_pg_conf(port, ctx.builtin,
                                   listener_extra="tls_cert = %s\ntls_key = %s\n" % (tls.server_crt, tls.server_key))
    sy = harness.Switchyard(conf)
    with PgWire(sy.port) as w:
        check(w.ssl_request() == b"S", "SSLRequest not answered S with a listener certificate")
    for host in ("localhost", "127.0.0.1"):
        r = psql(sy.port, "\\conninfo", host=host,
                 env={"PGSSLMODE": "verify-full", "PGSSLROOTCERT": tls.ca_a})
        check(r.returncode == 0 and "SSL connection" in r.stdout,
              "psql verify-full to the TLS listener via %s: %r %r" % (host, r.stdout, r.stderr))
    out = psql_ok(sy.port, "SELECT current_setting('sy.cluster')", env={"PGSSLMODE": "require"})
    check(out == "builtin", "query over client TLS: %r" % out)
    r = psql(sy.port, "SELECT 1", env={"PGSSLMODE": "verify-ca", "PGSSLROOTCERT": tls.ca_b})
    check(r.returncode != 0 and "certificate verify failed" in r.stderr,
          "a client trusting CA B accepted the listener: %r" % r.stderr)
    out = psql_ok(sy.port, "SELECT 'plain still works'", env={"PGSSLMODE": "disable"})
    check(out == "plain still works", "plaintext client next to TLS: %r" % out)
    # plaintext bytes behind the SSLRequest (CVE-2021-23222): never used, connection closed
    s = socket.create_connection(("127.0.0.1", sy.port), timeout=10)
    s.sendall(struct.pack("!II", 8, harness.SSL_REQUEST_CODE)
              + harness.startup_packet({"user": "postgres", "database": "sourcegraph"}))
    data, closed = PgWire(sy.port, sock=s).read_until_close(timeout=10)
    s.close()
    check(closed, "TLS listener: not closed after plaintext behind SSLRequest: %r" % data[:100])
    check(b"R\0\0\0\x08\0\0\0\0" not in data, "TLS listener: the plaintext startup was used: %r" % data[:100])
    check(psql_ok(sy.port, "SELECT 1", env={"PGSSLMODE": "require"}) == "1", "TLS listener afterwards")
    sy.stop()


def test_unix_socket_listener(ctx):
    sockdir = harness.tmpdir("sysock")
    port = harness.free_port()
    conf = harness.default_pg_conf(port, ctx.builtin, listener_extra="unix_socket = %s\n" % sockdir)
    sy = harness.Switchyard(conf)
    path = os.path.join(sockdir, ".s.PGSQL.%d" % port)
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        check(time.monotonic() < deadline, "no socket %s after 10 s" % path)
        time.sleep(0.05)
    out = psql_ok(port, "SELECT current_setting('sy.cluster'), current_database()", host=sockdir,
                  db="sourcegraph-codeintel")
    check(out == "builtin|sourcegraph-codeintel", "via the unix socket: %r" % out)

    # The socket is not open to every local user: mode 0770 by default (it used to be
    # 0777, and user nobody could reach the console through it).
    mode = stat.S_IMODE(os.stat(path).st_mode)
    check(mode == 0o770, "socket mode %04o, want 0770" % mode)
    os.chmod(sockdir, 0o755)
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1]); print('connected')\n"
             "except OSError as e:\n print(e.errno)\n")

    def as_nobody():
        r = subprocess.run(["/usr/bin/python3", "-c", probe, path], user="nobody", group="nogroup",
                           extra_groups=[], capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    got = as_nobody()
    check(got == str(errno.EACCES), "user nobody on a 0770 socket: %r, want EACCES" % got)
    os.chmod(path, 0o777)     # the same path with the old mode: nobody gets in, so the
    got = as_nobody()         # refusal above was the mode's doing
    check(got == "connected", "user nobody on a 0777 socket: %r" % got)
    sy.stop()

    # unix_socket_mode and unix_socket_group are the listener's to set.
    port = harness.free_port()
    conf = harness.default_pg_conf(port, ctx.builtin, listener_extra="unix_socket = %s\nunix_socket_mode = 0660\n"
                                   "unix_socket_group = nogroup\n" % sockdir)
    sy = harness.Switchyard(conf)
    path = os.path.join(sockdir, ".s.PGSQL.%d" % port)
    harness.wait_until(lambda: os.path.exists(path), 10, "socket %s" % path)
    st = os.stat(path)
    check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam("nogroup").gr_gid,
          "socket mode %04o gid %d, want 0660 and nogroup" % (stat.S_IMODE(st.st_mode), st.st_gid))
    out = psql_ok(port, "SELECT 1", host=sockdir, db="sourcegraph-codeintel")
    check(out == "1", "via the 0660 socket: %r" % out)
    sy.stop()


def test_non_loopback_listener_needs_auth(ctx):
    """Checked with --check only: the test never binds anything but loopback."""
    d = harness.tmpdir("nonlo")
    path = os.path.join(d, "sy.conf")
    with open(path, "w") as f:
        f.write(harness.default_pg_conf(5432, ctx.builtin).replace("listen = 127.0.0.1:5432",
                                                                   "listen = 0.0.0.0:5432"))
    r = harness.run([harness.switchyard_bin(), "--config", path, "--check"],
                    env=harness.clean_env({"ASAN_OPTIONS": harness.ASAN_OPTIONS}), timeout=30)
    out = r.stdout + r.stderr
    check(r.returncode != 0, "--check accepted a non-loopback listener without auth_password:\n" + out)
    check("listen" in out and "sy.conf" in out, "the error does not name the file and key: %r" % out)


def test_max_message_size_both_ways(ctx):
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin),
                            args=["switchyard.max_message_size=1M"])
    # client -> server: a 2 MB Query
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        try:
            w.query("SELECT length('" + "x" * (2 << 20) + "')")
            fail("a 2 MB query passed a 1 MB max_message_size")
        except PgError as e:
            check(e.sqlstate in ("08P01", "54000"), "oversized query: %s" % e)
        except harness.ConnectionClosed:
            # Closed while the rest of our 2 MB was unread on its side: the kernel answers
            # with a reset, which can discard the ErrorResponse before we read it. A close
            # is acceptable here; hanging or reading the whole message is not.
            pass
        else:
            _data, closed = w.read_until_close(timeout=5)
            check(closed, "connection not closed after an oversized message")
    # server -> client: a 2 MB DataRow
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        check(w.query("SELECT length(repeat('x', 900000))") == [("900000",)], "a 0.9 MB row")
        try:
            w.query("SELECT repeat('x', 2 * 1024 * 1024)")
            fail("a 2 MB row passed a 1 MB max_message_size")
        except PgError as e:
            check(e.sqlstate in ("08P01", "54000", "08006"), "oversized row: %s" % e)
        except harness.ConnectionClosed:
            fail("oversized row: closed without an error")
    check(psql_ok(sy.port, "SELECT 'alive'") == "alive", "switchyard after oversized messages")
    sy.stop()


def _drain_rows(w):
    """Read a big simple-query result without keeping it: (rows, bytes)."""
    rows = nbytes = 0
    while True:
        typ, body = w.read_msg()
        if typ == "D":
            rows += 1
            nbytes += len(body)
        elif typ == "E":
            raise PgError(harness.parse_error_fields(body))
        elif typ == "Z":
            return rows, nbytes


def test_backpressure_slow_client(ctx):
    """200 MB of result rows for a client that does not read for a while: switchyard stops
    reading the upstream instead of buffering."""
    sy = harness.start_default(ctx, asan_extra="quarantine_size_mb=1")
    with PgWire(sy.port, timeout=120) as w:
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        w.startup(database="sourcegraph")
        rss0 = sy.rss_kb()
        w.send_query("SELECT repeat('x', 1000) FROM generate_series(1, 200000)")
        time.sleep(4)   # the client not reading for a while is the case under test
        rss1 = sy.rss_kb()
        rows, nbytes = _drain_rows(w)
        check(rows == 200000, "got %d rows" % rows)
    check(rss1 - rss0 < 48 * 1024, "RSS grew by %d kB while the client did not read" % (rss1 - rss0))
    sy.stop()


test_backpressure_slow_client.timeout = 180


def test_backpressure_slow_upstream(ctx):
    """200 MB of COPY data towards an upstream backend that is not reading (waiting for a
    table lock): switchyard stops reading the client instead of buffering; once the lock goes
    the COPY completes."""
    sy = harness.start_default(ctx, asan_extra="quarantine_size_mb=1")
    bi = ctx.builtin
    bi.sql("DROP TABLE IF EXISTS sy_bp; CREATE TABLE sy_bp (v text)", db="sourcegraph")
    locker = PgWire(bi.port)
    locker.startup(database="sourcegraph")
    locker.query("BEGIN; LOCK TABLE sy_bp IN ACCESS EXCLUSIVE MODE")
    w = PgWire(sy.port, timeout=120)
    w.startup(database="sourcegraph")   # route pg, on its built-in target here
    rss0 = sy.rss_kb()
    line = b"y" * 999 + b"\n"
    chunk = b"".join(b"d" + struct.pack("!I", 4 + len(line) * 64) + line * 64 for _ in range(16))
    nrows = 200 * 1024 * 1024 // len(line) // 1024 * 1024
    sent = {"rows": 0, "err": None}

    def sender():
        try:
            w.send_query("COPY sy_bp FROM STDIN")
            while sent["rows"] < nrows:
                w.send(chunk)
                sent["rows"] += 64 * 16
            w.send(b"c\0\0\0\x04")
        except OSError as e:
            sent["err"] = e

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    time.sleep(4)   # the upstream not reading for a while is the case under test
    rss1 = sy.rss_kb()
    stalled_at = sent["rows"]
    locker.query("COMMIT")
    t.join(timeout=120)
    check(not t.is_alive(), "sending COPY data did not finish after the lock was released")
    check(sent["err"] is None, "sending COPY data: %s" % sent["err"])
    # CopyInResponse, then CommandComplete
    tag = None
    while True:
        typ, body = w.read_msg()
        if typ == "C":
            tag = body.rstrip(b"\0").decode()
        elif typ == "E":
            fail("COPY failed: %s" % harness.parse_error_fields(body))
        elif typ == "Z":
            break
    w.close()
    locker.close()
    check(tag == "COPY %d" % nrows, "COPY tag %r, want COPY %d" % (tag, nrows))
    check(stalled_at < nrows, "all %d rows were accepted while upstream was not reading" % nrows)
    check(rss1 - rss0 < 48 * 1024, "RSS grew by %d kB while the upstream did not read" % (rss1 - rss0))
    bi.sql("DROP TABLE sy_bp", db="sourcegraph")
    sy.stop()


test_backpressure_slow_upstream.timeout = 180


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_churn_no_fd_or_memory_leak(ctx):
    """Hundreds of sessions that end every way a session can end (Terminate, abrupt close,
    close mid-query, close during startup, a target that refuses, a cancel) leave the proxy
    with the descriptors and memory it started with."""
    closed = harness.closed_port()
    env = harness.prefixed("CODEINSIGHTS_", {"PGHOST": "127.0.0.1", "PGPORT": str(closed), "PGUSER": "postgres"})
    env.update(harness.external_env(ctx))
    # No quarantine: with one, ASan's recycling of OpenSSL-sized chunks looks like growth.
    # Pooling stays on (the default), so the churn goes through its release, reset and reuse
    # paths too; its idle servers are upstream sessions that outlive their clients by design,
    # so a 1 s server_idle_timeout closes them before each count below. A 1 s
    # reconnect_window: the refused connects go through their retries before the 08001.
    sy = harness.start_default(ctx, env=env, asan_extra="quarantine_size_mb=0:thread_local_quarantine_size_kb=0",
                               args=["switchyard.server_idle_timeout=1", "switchyard.reconnect_window=1"])

    def one(i):
        kind = i % 6
        if kind == 0:
            with PgWire(sy.port) as w:
                w.startup(database="sourcegraph")
                w.query("SELECT 1")
                w.terminate()
        elif kind == 1:
            w = PgWire(sy.port)
            w.startup(database="sourcegraph-codeintel")
            w.close()
        elif kind == 2:
            w = PgWire(sy.port)
            w.startup(database="sourcegraph")
            w.send_query("SELECT pg_sleep(0.2), repeat('z', 100000) FROM generate_series(1, 5)")
            w.close()
        elif kind == 3:
            s = socket.create_connection(("127.0.0.1", sy.port))
            s.sendall(harness.startup_packet({"user": "postgres", "database": "sourcegraph"})[:7])
            s.close()
        elif kind == 4:
            harness.connect_error(sy.port, db="sourcegraph-codeinsights")
        else:
            with PgWire(sy.port) as w:
                w.startup(database="sourcegraph-codeintel")
                w.send_query("SELECT pg_sleep(5)")
                harness.cancel_request(sy.port, w.pid, w.secret)
                try:
                    w.read_result()
                except PgError:
                    pass

    def rounds(n):
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            list(pool.map(one, range(n)))

    def settle(_what):
        # sessions end asynchronously: wait until upstream sessions are gone
        deadline = time.monotonic() + 15
        while True:
            busy = [p for p in ctx.builtin.backend_pids("datname = 'sourcegraph-codeintel'")]
            busy += [p for p in ctx.external.backend_pids("usename = 'scram_user' AND datname = 'sourcegraph'")]
            if not busy or time.monotonic() > deadline:
                return busy
            time.sleep(0.2)

    def gone(what):
        # and switchyard's own view: no session left but the console asking
        harness.wait_clients(con, lambda rows: all(r["protocol"] == "console" for r in rows),
                             "every session of the %s to be gone from switchyard" % what, timeout=15)

    # one console for the whole test, so that both counts include its descriptor
    con = harness.Console(sy.port)
    rounds(600)   # warm-up: allocator pools, OpenSSL and libpq caches
    settle("warm-up")
    gone("warm-up")
    fd0, rss0 = _fds(sy.pid), sy.rss_kb()
    rounds(900)
    left = settle("churn")
    if not left:   # else the check below says which upstream sessions stayed
        gone("churn")
    fd1, rss1 = _fds(sy.pid), sy.rss_kb()
    con.close()
    print("# churn: fds %d -> %d, rss %d -> %d kB" % (fd0, fd1, rss0, rss1), flush=True)
    check(not left, "upstream sessions still open after their clients left: %s" % left)
    check(fd1 <= fd0 + 2, "switchyard holds %d descriptors after the churn, %d before" % (fd1, fd0))
    # ~9 kB per session: a session's libpq+TLS state is bigger than that, so keeping any
    # of it shows; allocator noise over 900 sessions stays well below
    check(rss1 - rss0 < 8 * 1024, "RSS grew from %d kB to %d kB over 900 sessions" % (rss0, rss1))
    sy.check_alive()
    sy.stop()


test_churn_no_fd_or_memory_leak.timeout = 240


def test_client_tls_data_path(ctx):
    """TLS on both legs (client -> switchyard with the listener's certificate, switchyard ->
    external with verify-full): pgbench in extended mode and 60 MB each way by COPY."""
    import hashlib
    import re
    tls = ctx.tls
    port = harness.free_port()
    conf = harness.default_pg_conf(port, ctx.builtin,
                                   listener_extra="tls_cert = %s\ntls_key = %s\n" % (tls.server_crt, tls.server_key))
    sy = harness.Switchyard(conf, env=harness.external_env(ctx))
    cenv = {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": tls.ca_a}
    psql_ok(sy.port, "DROP TABLE IF EXISTS sy_tls2; CREATE TABLE sy_tls2 (v text)", host="localhost", env=cenv)
    d = harness.tmpdir("tls2")
    src = os.path.join(d, "in.txt")
    h = hashlib.md5()
    with open(src, "wb") as f:
        for i in range(60000):
            line = b"%08d" % i + b"t" * 991 + b"\n"
            h.update(line)
            f.write(line)
    with open(src, "rb") as f:
        r = psql(sy.port, "COPY sy_tls2 FROM STDIN", host="localhost", env=cenv, input=f, timeout=180)
    check(r.returncode == 0 and "COPY 60000" in r.stdout, "COPY in over TLS both ways: %r %r" % (r.stdout, r.stderr[-500:]))
    dst = os.path.join(d, "out.txt")
    r = psql(sy.port, "COPY (SELECT v FROM sy_tls2 ORDER BY v) TO STDOUT", host="localhost", env=cenv,
             stdout_file=dst, timeout=180)
    check(r.returncode == 0, "COPY out over TLS both ways: %r" % r.stderr[-500:])
    with open(dst, "rb") as f:
        check(hashlib.md5(f.read()).hexdigest() == h.hexdigest(), "COPY out over TLS differs from what went in")
    psql_ok(sy.port, "DROP TABLE sy_tls2", host="localhost", env=cenv)
    base = [harness.PGBENCH, "-h", "localhost", "-p", str(sy.port), "-U", "postgres"]
    penv = harness.clean_env(cenv)
    r = harness.run(base + ["-i", "-s", "1", "-q", "sourcegraph-codeintel"], env=penv, timeout=120)
    check(r.returncode == 0, "pgbench -i over client TLS: %s" % r.stderr[-1000:])
    r = harness.run(base + ["-c", "4", "-j", "2", "-T", "3", "-M", "extended", "-n", "sourcegraph-codeintel"],
                    env=penv, timeout=120)
    out = r.stdout + r.stderr
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    check(r.returncode == 0 and "aborted" not in out and m and int(m.group(1)) > 0,
          "pgbench over client TLS: %s" % out[-1500:])
    sy.stop()


test_client_tls_data_path.timeout = 240


def _redis_proxy(globals_extra="", listener_extra=""):
    """A redis-server and switchyard with one Redis listener `r` in front of it."""
    redis = harness.RedisServer()
    rport = harness.free_port()
    sy = harness.Switchyard("[switchyard]\nmetrics_listen = off\ndrain_timeout = 2\n%s\n"
                            "[listener r]\nprotocol = redis\nlisten = 127.0.0.1:%d\n%s\n"
                            "[route r]\nlistener = r\nbuiltin = %s\n"
                            % (globals_extra, rport, listener_extra, rs.endpoint(redis)))
    return redis, rport, sy


def test_max_clients_per_listener(ctx):
    """max_clients: the client over the listener's limit gets the servers' own refusal at
    once (53300 / -ERR max number of clients reached) and opens nothing upstream; one that
    comes after a client left gets in."""
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin, listener_extra="max_clients = 3\n"))
    held = [PgWire(port).startup(database="sourcegraph") for _ in range(3)]
    for w in held:
        check(w.query("SELECT 1") == [("1",)], "a session under max_clients works")
    r = psql(port, "SELECT 1")
    check(r.returncode != 0 and "sorry, too many clients already" in r.stderr,
          "the 4th client of max_clients = 3: rc %s %r" % (r.returncode, r.stderr))
    sy.wait_log(r"event=max_clients listener=pg max_clients=3 refused=1", timeout=10, what="a max_clients line")
    held.pop().terminate()
    # the session leaves on its worker; a new client gets in once it has
    harness.wait_until(lambda: psql(port, "SELECT 2").returncode == 0, 10, "a client after one left")
    for w in held:
        check(w.query("SELECT 3") == [("3",)], "the sessions under the limit still work")
        w.terminate()
    sy.stop()

    redis, rport, sy = _redis_proxy(listener_extra="max_clients = 2\n")
    conns = [rs.Resp(rport) for _ in range(2)]
    for c in conns:
        check(c.cmd("PING") == "PONG", "a redis session under max_clients")
    before = int(rs.info(redis, "clients")["connected_clients"])
    s = socket.create_connection(("127.0.0.1", rport), timeout=10)
    s.sendall(b"PING\r\n")
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    check(got == b"-ERR max number of clients reached\r\n", "the 3rd redis client: %r" % got)
    check(s.recv(4096) == b"", "closed after the refusal")
    s.close()
    check(int(rs.info(redis, "clients")["connected_clients"]) == before, "the refused client opened nothing upstream")
    for c in conns:
        check(c.cmd("PING") == "PONG", "redis sessions under the limit still work")
        c.close()
    sy.stop()
    redis.stop()


def _console_as(user, port, host, password=None):
    """psql to the console as local `user` ("root" or "nobody"); CompletedProcess."""
    env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    home = harness.tmpdir("home", mode=0o755)
    argv = [harness.PSQL, "-X", "-A", "-t", "-w", "-h", host, "-p", str(port), "-U", "postgres", "-d", "switchyard",
            "-c", "SHOW ROUTES"]
    kw = {} if user == "root" else {"user": user, "group": "nogroup", "extra_groups": []}
    return subprocess.run(argv, env=harness.clean_env(env, home=home), capture_output=True, text=True,
                          timeout=60, **kw)


def test_console_local_users(ctx):
    """The console is not every local user's: without admin_password only switchyard's own
    user and root get in (by SO_PEERCRED on the unix socket, by the owner of the client's
    socket over loopback TCP); with it, everyone but them on the unix socket must give it.
    Before, user nobody got the console on loopback and could SWITCH."""
    sockdir = harness.tmpdir("consock", mode=0o755)
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin, listener_extra=(
        "unix_socket = %s\nunix_socket_mode = 0777\n" % sockdir)))
    harness.wait_until(lambda: os.path.exists(os.path.join(sockdir, ".s.PGSQL.%d" % port)), 10, "the socket")
    for host in ("127.0.0.1", sockdir):
        r = _console_as("root", port, host)
        check(r.returncode == 0 and "pg" in r.stdout, "root's console on %s: %r" % (host, r.stderr))
        r = _console_as("nobody", port, host)
        check(r.returncode != 0 and "switchyard's own user and root" in r.stderr,
              "user nobody's console on %s: rc %s %r" % (host, r.returncode, r.stdout + r.stderr))
    sy.stop()

    pw = "console-Secret-4"
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin, globals_extra='admin_password = "%s"' % pw,
                                                    listener_extra="unix_socket = %s\nunix_socket_mode = 0777\n"
                                                    % sockdir))
    harness.wait_until(lambda: os.path.exists(os.path.join(sockdir, ".s.PGSQL.%d" % port)), 10, "the socket")
    r = _console_as("root", port, sockdir)
    check(r.returncode == 0, "root on the unix socket needs no password: %r" % r.stderr)
    for user, host in (("root", "127.0.0.1"), ("nobody", "127.0.0.1"), ("nobody", sockdir)):
        r = _console_as(user, port, host)
        check(r.returncode != 0 and "password" in r.stderr, "%s on %s without the password: %r" % (user, host, r.stderr))
        r = _console_as(user, port, host, password="wrong")
        check(r.returncode != 0 and "password authentication failed" in r.stderr,
              "%s on %s with a wrong password: %r" % (user, host, r.stderr))
        r = _console_as(user, port, host, password=pw)
        check(r.returncode == 0 and "pg" in r.stdout, "%s on %s with the password: %r" % (user, host, r.stderr))
    sy.stop()


def test_login_and_idle_timeouts(ctx):
    """client_login_timeout: a client that says nothing is closed without a word (as the
    postmaster does), one stuck in authentication gets 57014; client_idle_timeout: a
    session idle outside a transaction gets 57P05 (idle_session_timeout), one idle inside
    a transaction is left alone."""
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(
        port, ctx.builtin, globals_extra='client_login_timeout = 1\nclient_idle_timeout = 2\n'
                                         'admin_password = "adm-pw-7"'))
    silent = PgWire(port)
    asking = PgWire(port)          # the console over loopback TCP: asked for the password (SASL)
    asking.send(harness.startup_packet({"user": "postgres", "database": "switchyard"}))
    typ, body = asking.read_msg()
    check(typ == "R" and struct.unpack("!I", body[:4])[0] == 10 and b"SCRAM-SHA-256" in body,
          "the console asks for a password (SCRAM): %r %r" % (typ, body))
    txn = PgWire(port).startup(database="sourcegraph")
    txn.query("BEGIN")
    idle = PgWire(port).startup(database="sourcegraph")
    check(idle.query("SELECT 1") == [("1",)], "a session before its idle timeout")

    data, closed = silent.read_until_close(timeout=15)
    check(closed and data == b"", "a client that sent nothing: %r closed=%s, want a silent close" % (data, closed))
    data, closed = asking.read_until_close(timeout=15)
    fields = harness.parse_error_fields(data[5:]) if data[:1] == b"E" else {}
    check(closed and fields.get("C") == "57014" and "authentication" in fields.get("M", ""),
          "stuck in authentication: %r closed=%s" % (data[:200], closed))
    data, closed = idle.read_until_close(timeout=20)
    fields = harness.parse_error_fields(data[5:]) if data[:1] == b"E" else {}
    check(closed and fields.get("C") == "57P05" and fields.get("S") == "FATAL",
          "an idle session: %r closed=%s, want FATAL 57P05" % (data[:200], closed))
    sy.wait_log(r"event=idle_timeout conn=\d+ route=pg", timeout=10, what="the idle_timeout line")
    # the transaction has been idle as long, and the same sweep passed over it
    check(txn.query("SELECT 2") == [("2",)] and txn.status == "T", "the session in a transaction was closed")
    txn.query("COMMIT")
    txn.terminate()
    sy.stop()

    # Redis: idle clients closed without a reply, as Redis's `timeout`; subscribers not.
    redis, rport, sy = _redis_proxy(globals_extra="client_idle_timeout = 2\n")
    sub = rs.Resp(rport, timeout=30)
    sub.send_cmds([("SUBSCRIBE", "idle-ch")])
    check(sub.read(timeout=10)[0] == b"subscribe", "SUBSCRIBE through switchyard")
    c = rs.Resp(rport, timeout=30)
    check(c.cmd("PING") == "PONG", "a redis client before its idle timeout")
    c.expect_close(timeout=20)
    check(redis.cli("PUBLISH", "idle-ch", "still").stdout.strip() == "1", "the subscriber is still subscribed")
    check(sub.read(timeout=10) == [b"message", b"idle-ch", b"still"], "the subscriber after the idle client left")
    sub.close()
    sy.stop()
    redis.stop()
