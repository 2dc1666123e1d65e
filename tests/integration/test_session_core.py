"""
test_session_core.py - defects of the session core and the control plane, each found by a
review and each with a test that failed before its fix:

  1. a Postgres session closed while it is moving (SIGTERM's deadline kicks it) must not
     PQfinish the connection the move job is still querying on a thread-pool thread;
  3. RELOAD must not race the thread-pool jobs that read the configuration (a switch's
     moves dial with connect_timeout while RELOAD publishes a new configuration): run
     under ThreadSanitizer too, where a race report fails the test;
  4. notifications that arrive on the old upstream while a session moves are all handed to
     the client, however many: before, whatever did not fit the pipe's free space was
     silently dropped.

The Redis cases follow the Postgres ones: a client that leaves, a new target that dies,
and SIGTERM's deadline, each while its session's move job waits for the new target. The
last failed before its fix: the kick passed over a moving Redis session, so its client got
no answer, only the close when the process exited.

The moves are made slow on purpose, without sleeping: the session's upstream backend is
stopped with SIGSTOP while the move job queries it, and continued with SIGCONT once SHOW
CLIENTS says the session is moving.
"""

import os
import signal
import threading
import time

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss


def _backend_pid(sess):
    return int(sess.one("SELECT pg_backend_pid()"))


def _wait_state(con, client_id, state, timeout=20.0):
    """Wait until SHOW CLIENTS shows client_id in `state`."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        for row in con.rows("SHOW CLIENTS"):
            if row["id"] == client_id:
                seen = row["state"]
                if seen == state:
                    return row
        time.sleep(0.02)
    fail("client %s never showed state %r in SHOW CLIENTS (last %r)" % (client_id, state, seen))


def _only_client(con):
    rows = [r for r in con.rows("SHOW CLIENTS") if r["route"] == "pg"]
    check(len(rows) == 1, "want one client on route pg, SHOW CLIENTS has %r" % rows)
    return rows[0]["id"]


def _wait_log(sy, needle, timeout=20.0):
    deadline = time.monotonic() + timeout
    while needle not in sy.log_text():
        if time.monotonic() > deadline:
            fail("switchyard never logged %r" % needle)
        time.sleep(0.02)


def _accept_queue(port):
    """Connections waiting in the accept queue of the listening socket on 127.0.0.1:port
    (/proc/net/tcp's rx_queue of a socket in state LISTEN)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, st, queues = fields[1], fields[3], fields[4]
            if st == "0A" and int(local.split(":")[1], 16) == port:
                return int(queues.split(":")[1], 16)
    return 0


def _moving_session(ctx):
    """One session on route pg whose move to external is under way and stuck: its backend
    is stopped (SIGSTOP) while the move job queries it, and SHOW CLIENTS says "moving".
    Returns (sy, con, session, backend pid, client id, SwitchThread); the caller sends
    SIGCONT to the pid when it is done (also done here if the wait fails)."""
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    s = ss.Session(sy.port)
    pid = _backend_pid(s)
    cid = _only_client(con)
    os.kill(pid, signal.SIGSTOP)
    try:
        sw = ss.SwitchThread(sy, "pg", "external")
        _wait_state(con, cid, "moving")
    except BaseException:
        os.kill(pid, signal.SIGCONT)
        raise
    return sy, con, s, pid, cid, sw


def test_shutdown_kicks_a_moving_session(ctx):
    """Defect 1: SIGTERM's deadline kicks a session while its move job is inside the state
    query on the old upstream (its backend is stopped). The kick used to PQfinish that
    PGconn under the job; now the job owns the upstream while the session moves and
    finishes it itself. The client gets the shutdown error, the process exits cleanly once
    the backend answers, and no sanitizer report appears.

    This does not fail reliably on the old code: there the job's thread sat in poll() on
    the freed connection's closed fd until the exit, so the use-after-free was not reached
    in this order. It guards the ownership rule the fix introduced."""
    sy, con, s, pid, cid, sw = _moving_session(ctx)
    try:
        con.close()
        sy.proc.send_signal(signal.SIGTERM)
        _wait_log(sy, "event=shutdown_deadline", timeout=ss.DRAIN_TIMEOUT + 10)
        err, _secs = s.close_error(timeout=10)
        check(err is not None and err.get("C") == "57P01" and "shutting down" in err.get("M", ""),
              "the moving session's client got %r, want 57P01 shutting down" % (err,))
    finally:
        os.kill(pid, signal.SIGCONT)
    sy.proc.wait(timeout=20)
    sw.join(10)
    problems = sy.exited_problems()
    check(not problems, "switchyard's exit: %r" % problems)


def test_notifications_during_move_all_arrive(ctx):
    """Defect 4: 24 notifications of 7,000 bytes (168 KB, more than a pipe holds) arrive on
    the old upstream while the move job runs its state query there. Every one of them must
    reach the client, in order, after the move."""
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    s = ss.Session(sy.port)
    s.query("LISTEN core_chan")
    pid = _backend_pid(s)
    cid = _only_client(con)
    n, size = 24, 7000
    payloads = ["%02d:" % i + chr(ord("a") + i % 26) * (size - 3) for i in range(n)]
    os.kill(pid, signal.SIGSTOP)
    try:
        # queued for the stopped backend: it sends them when it runs again, which is while
        # the move job's state query waits for its answer
        for p in payloads:
            ctx.builtin.sql("SELECT pg_notify('core_chan', '%s')" % p, db="sourcegraph")
        sw = ss.SwitchThread(sy, "pg", "external")
        _wait_state(con, cid, "moving")
    finally:
        os.kill(pid, signal.SIGCONT)
    row, _t0, _t1 = sw.join_result(timeout=30)
    check(row["moved"] == "1", "SWITCH under one listening session: %r" % row)
    check(ss.where(s) == ("external", ctx.external.port), "the session did not move: %r" % (ss.where(s),))
    got = [x[2] for x in s.notifications if x[1] == "core_chan"]   # read by the queries above
    s.notifications = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        x = s.wait_notification(timeout=max(0.1, deadline - time.monotonic()))   # pops it
        if x is not None and x[1] == "core_chan":
            got.append(x[2])
    check(len(got) == n, "the client got %d of %d notifications sent before the move" % (len(got), n))
    check(got == payloads[:len(got)], "notifications out of order or changed: first %r"
          % [g[:6] for g in got[:5]])
    # and the session still listens on the new target
    ctx.external.sql("NOTIFY core_chan, 'after'", db="sourcegraph")
    x = s.wait_notification(timeout=10)
    check(x is not None and x[1:] == ("core_chan", "after"), "NOTIFY after the move: %r" % (x,))
    s.close()
    con.switch("pg", "builtin")
    con.close()
    sy.stop()


def test_reload_during_switches(ctx):
    """Defect 3: RELOAD publishes a new configuration while a switch's moves dial their new
    upstreams on the thread pool, reading connect_timeout. Clients keep working, and under
    ThreadSanitizer no race is reported (the harness fails the test on a report)."""
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external)
    con = ss.Console(sy)
    clients = [rs.Resp(sy.redis_port, timeout=15) for _ in range(20)]
    for i, c in enumerate(clients):
        check(c.cmd("PING") == "PONG", "client %d PING before the switches" % i)
    stop = threading.Event()
    errors = []

    def reloader():
        rc = ss.Console(sy)
        try:
            while not stop.is_set():
                rc.command("RELOAD")
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            rc.close()

    t = threading.Thread(target=reloader, daemon=True)
    t.start()
    try:
        for k in range(6):
            row, _t0, _t1 = con.switch("redis-store", "external" if k % 2 == 0 else "builtin")
            check(row["moved"] == "20" and row["closed"] == "0", "switch %d under RELOADs: %r" % (k, row))
            for i, c in enumerate(clients):
                check(c.cmd("PING") == "PONG", "client %d PING after switch %d" % (i, k))
    finally:
        stop.set()
        t.join(30)
    check(not errors, "RELOAD failed while switching: %r" % errors[:1])
    for c in clients:
        c.close()
    con.close()
    sy.stop()
    builtin.stop()
    external.stop()


def test_scrape_and_show_clients_under_load(ctx):
    """The control plane stops nobody: while redis-benchmark -c 50 runs through switchyard,
    /metrics and SHOW CLIENTS are each asked 50 times a second. Every scrape and every
    SHOW CLIENTS must answer (SHOW CLIENTS lists the benchmark's 50 clients at its peak),
    and the benchmark must finish with every command executed upstream. The cost of the
    scraper is measured by bench/scrape_bench.sh, not here."""
    import test_metrics as tm
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    mport = harness.free_port()
    sy = ss.start_redis(ctx, builtin, external, globals_extra="metrics_listen = 127.0.0.1:%d\n" % mport)
    builtin.cli("CONFIG", "RESETSTAT")
    n = 100000
    bench = harness.Proc(["/usr/bin/redis-benchmark", "-h", "127.0.0.1", "-p", str(sy.redis_port), "-c", "50",
                          "-n", str(n), "-t", "set", "--csv"], env=harness.clean_env(),
                         log=os.path.join(harness.tmpdir("bench"), "bench.log"))
    con = ss.Console(sy)
    scrapes = shows = peak = 0
    failures = []
    t_end = time.monotonic() + 60
    while bench.poll() is None and time.monotonic() < t_end:
        t0 = time.monotonic()
        r = tm.http(mport, "/metrics")
        if r.status == 200 and b"switchyard_worker_clients" in r.body:
            scrapes += 1
        else:
            failures.append("metrics: %r" % (r.status,))
        rows = [x for x in con.rows("SHOW CLIENTS") if x["route"] == "redis-store"]
        shows += 1
        peak = max(peak, len(rows))
        time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))   # pacing: 50 a second each
    rc = bench.wait(timeout=60)
    check(rc == 0, "redis-benchmark exited %s" % rc)
    check(not failures, "scrapes failed during the load: %r" % failures[:3])
    check(scrapes >= 10 and shows >= 10, "only %d scrapes and %d SHOW CLIENTS ran during the load" % (scrapes, shows))
    check(peak == 50, "SHOW CLIENTS saw at most %d of the benchmark's 50 clients" % peak)
    stats = rs.commandstats(builtin)
    check(stats.get("set") == n, "upstream executed SET %s times, want %d" % (stats.get("set"), n))
    con.close()
    sy.stop()
    builtin.stop()
    external.stop()


def test_client_leaves_while_moving(ctx):
    """A client that goes away while its session's move job waits on the old upstream: the
    switch still finishes with the session accounted for (moved or closed), the session
    leaves SHOW CLIENTS, and nothing leaks or crashes (sy.stop fails on a sanitizer report)."""
    sy, con, s, pid, cid, sw = _moving_session(ctx)
    try:
        s.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    row, _t0, _t1 = sw.join_result(timeout=30)
    check(int(row["moved"]) + int(row["closed"]) == 1, "SWITCH with its client gone mid-move: %r" % row)
    harness.wait_until(lambda: not any(r["id"] == cid for r in con.rows("SHOW CLIENTS")), 20,
                       "client %s to leave SHOW CLIENTS" % cid)
    s2 = ss.Session(sy.port)
    check(ss.where(s2) == ("external", ctx.external.port), "new session after the switch: %r" % (ss.where(s2),))
    s2.close()
    con.switch("pg", "builtin")
    con.close()
    sy.stop()


def test_upstream_dies_while_moving(ctx):
    """The old upstream's backend is terminated (pg_terminate_backend, queued while it is
    stopped) while the move job queries it: the move fails,
    the client gets 57P01 naming the switch (never a ReadyForQuery that could look like
    success), the switch counts it closed, and the daemon carries on."""
    sy, con, s, pid, cid, sw = _moving_session(ctx)
    try:
        ctx.builtin.sql("SELECT pg_terminate_backend(%d)" % pid, db="postgres")
    finally:
        os.kill(pid, signal.SIGCONT)   # it runs again only to die under the move
    row, _t0, _t1 = sw.join_result(timeout=60)
    check(row["moved"] == "0" and row["closed"] == "1", "SWITCH with the old backend killed mid-move: %r" % row)
    err, _secs = s.close_error(timeout=20)
    check(err is not None and err.get("C") == "57P01" and "switched" in err.get("M", ""),
          "the client of a failed move got %r, want 57P01 'switched; reconnect'" % (err,))
    s2 = ss.Session(sy.port)
    check(ss.where(s2) == ("external", ctx.external.port), "new session after the switch: %r" % (ss.where(s2),))
    s2.close()
    con.switch("pg", "builtin")
    con.close()
    sy.stop()


def test_cancel_in_flight_while_session_moves(ctx):
    """Defect 2: a CancelRequest for a session is being sent (PQcancel on a thread-pool
    thread, blocked because the old cluster's postmaster is stopped and never answers the
    cancel connection) when the session's move completes. move_done used to PQfreeCancel
    the session's PGcancel under that job; the cancel now has a PGcancel of its own. The
    switch must finish, the session work on its new target, and no sanitizer report appear.

    This does not fail on the old code: PQcancel reads the PGcancel before it blocks, inside
    libpq, which no sanitizer instruments, so the free that follows is not seen. It guards
    the path under ASan and TSan on the new code."""
    sy = ss.start_pg(ctx)
    con = ss.Console(sy)
    s = ss.Session(sy.port)
    cid = _only_client(con)
    postmaster = ctx.builtin.proc.pid
    t = None
    os.kill(postmaster, signal.SIGSTOP)
    try:
        t = threading.Thread(target=harness.cancel_request, args=(sy.port, s.pid, s.secret), daemon=True)
        t.start()
        # the cancel job has read the PGcancel and connected: its connection waits in the
        # stopped postmaster's accept queue
        harness.wait_until(lambda: _accept_queue(ctx.builtin.port) > 0, 10,
                           "the cancel's connection to reach the stopped postmaster")
        row, _t0, _t1 = con.switch("pg", "external")
        check(row["moved"] == "1", "SWITCH with a cancel in flight: %r" % row)
    finally:
        os.kill(postmaster, signal.SIGCONT)
    if t is not None:
        t.join(10)
    check(ss.where(s) == ("external", ctx.external.port), "the session did not move: %r" % (ss.where(s),))
    check(cid in [r["id"] for r in con.rows("SHOW CLIENTS")], "the moved session left SHOW CLIENTS")
    s.close()
    con.switch("pg", "builtin")
    con.close()
    sy.stop()


def _redis_moving_session(ctx, **kw):
    """A Redis client with state to replay (SELECT 3) whose move to external is under way
    and stuck, with no sleep: the client waits in BLPOP on builtin when the switch begins,
    so the switch checks external and dials the client's new upstream ahead, then waits for
    the client's boundary. external is stopped (SIGSTOP) once that dial is done, and an
    RPUSH ends the BLPOP: the move job's replay of the SELECT then waits for the stopped
    server (connect_timeout = 5 bounds it), and SHOW CLIENTS says "moving". Returns
    (builtin, external, sy, con, client, client id, SwitchThread, {server: its
    connected_clients before the client came}); the caller continues external."""
    builtin, external = harness.RedisServer(), harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external, **kw)
    con = ss.Console(sy)
    base = {x: int(rs.info(x, "clients")["connected_clients"]) for x in (builtin, external)}
    c = rs.Resp(sy.redis_port)
    check(c.cmd("SELECT", "3") == "OK" and c.cmd("SET", "mv:k", "before") == "OK", "SELECT 3 / SET before the switch")
    rows = [r for r in con.rows("SHOW CLIENTS") if r["route"] == "redis-store"]
    check(len(rows) == 1, "want one client on route redis-store, SHOW CLIENTS has %r" % rows)
    cid = rows[0]["id"]
    c.send_cmds([("BLPOP", "mv:list", "0")])
    harness.wait_until(lambda: int(rs.info(builtin, "clients")["blocked_clients"]) == 1, 10,
                       "the client's BLPOP to block on builtin")
    mark = sy.log_size()
    sw = ss.SwitchThread(sy, "redis-store", "external")
    ss.wait_prepared(sy, "redis-store", since=mark)
    os.kill(external.proc.pid, signal.SIGSTOP)
    try:
        check(builtin.cli("RPUSH", "mv:list", "x", db=3).stdout.strip() == "1", "RPUSH to end the BLPOP")
        check(c.read(timeout=10) == [b"mv:list", b"x"], "the BLPOP's reply")
        _wait_state(con, cid, "moving")
    except BaseException:
        os.kill(external.proc.pid, signal.SIGCONT)
        raise
    return builtin, external, sy, con, c, cid, sw, base


def _redis_settles(con, cid, servers):
    """The client cid has left SHOW CLIENTS, and each (server, want) has exactly `want`
    connected clients: no upstream of the session's is left open on either target."""
    harness.wait_until(lambda: not any(r["id"] == cid for r in con.rows("SHOW CLIENTS")), 20,
                       "client %s to leave SHOW CLIENTS" % cid)
    for server, want, name in servers:
        harness.wait_until(lambda: int(rs.info(server, "clients")["connected_clients"]) == want, 20,
                           lambda: "%s to have %d connected clients again (has %s)"
                           % (name, want, rs.info(server, "clients")["connected_clients"]))


def test_redis_client_leaves_while_moving(ctx):
    """A Redis client that goes away while its move job replays its state on the new target
    (the target is stopped): the switch finishes with the session accounted for (moved or
    closed), the session leaves SHOW CLIENTS, neither target keeps a connection of it, and a
    new client lands on the new target. sy.stop fails on a sanitizer report."""
    builtin, external, sy, con, c, cid, sw, base = _redis_moving_session(ctx)
    try:
        c.close()
    finally:
        os.kill(external.proc.pid, signal.SIGCONT)
    row, _t0, _t1 = sw.join_result(timeout=30)
    check(int(row["moved"]) + int(row["closed"]) == 1, "SWITCH with its client gone mid-move: %r" % row)
    _redis_settles(con, cid, [(external, base[external], "external"), (builtin, base[builtin], "builtin")])
    again = rs.Resp(sy.redis_port)
    check(again.cmd("SET", "mv:k", "after") == "OK" and external.cli("GET", "mv:k").stdout.strip() == "after",
          "a new client after the switch did not reach external")
    again.close()
    con.close()
    sy.stop()


def test_redis_new_target_dies_while_moving(ctx):
    """The new target dies (SIGKILL while stopped) while the move job waits for its answer to
    the replayed SELECT: the move fails, the client gets -ERR naming the switch and the
    cause, then the close (never a reply that could look like its command ran), the switch
    counts it closed, nothing of the session stays open on the old target, and once the
    new target is back a new client reaches it."""
    builtin, external, sy, con, c, cid, sw, base = _redis_moving_session(ctx)
    try:
        external.kill()
    finally:
        if external.proc.poll() is None:
            os.kill(external.proc.pid, signal.SIGCONT)
    row, _t0, _t1 = sw.join_result(timeout=30)
    check(row["moved"] == "0" and row["closed"] == "1", "SWITCH with the new target killed mid-move: %r" % row)
    c.send(b"*2\r\n$3\r\nGET\r\n$4\r\nmv:k\r\n")
    got = c.expect_close(10)
    check(got.startswith(b"-ERR") and b"switched to external; reconnect" in got,
          "the client of a failed move got %r, want -ERR 'switched to external; reconnect (...)', then the close" % got)
    _redis_settles(con, cid, [(builtin, base[builtin], "builtin")])
    external.start()
    again = rs.Resp(sy.redis_port)
    check(again.cmd("SET", "mv:k", "after") == "OK" and external.cli("GET", "mv:k").stdout.strip() == "after",
          "a new client after the switch did not reach external once it was back")
    for x in (c, again):
        x.close()
    con.close()
    sy.stop()


def test_redis_shutdown_kicks_a_moving_session(ctx):
    """SIGTERM's deadline comes while a Redis session's move job waits for the new target
    (stopped; connect_timeout = 20 here, so the move outlasts the deadline). The kick used to
    pass over a moving session, and mark it kicked: its client got no answer, only the
    close when the process exited. Now it is closed like any other: its next command gets
    -ERR naming the shutdown, then the close; the move job's socket is dropped when the job
    returns, and the process exits with no sanitizer report."""
    builtin, external, sy, con, c, cid, sw, base = _redis_moving_session(
        ctx, args=["switchyard.connect_timeout=20"])
    try:
        con.close()
        sy.proc.send_signal(signal.SIGTERM)
        _wait_log(sy, "event=shutdown_deadline", timeout=ss.DRAIN_TIMEOUT + 10)
        c.send(b"*2\r\n$3\r\nGET\r\n$4\r\nmv:k\r\n")
        got = c.expect_close(10)
        check(got.startswith(b"-ERR") and b"shutting down" in got,
              "the moving session's client got %r, want -ERR 'shutting down', then the close" % got)
    finally:
        os.kill(external.proc.pid, signal.SIGCONT)
    sy.proc.wait(timeout=20)
    sw.join(10)
    c.close()
    problems = sy.exited_problems()
    check(not problems, "switchyard's exit: %r" % problems)
