"""
test_partition.py - issue 8, the fault matrix: a network partition, made with `ip netns` and
veth links between namespaces the test makes itself, to the upstream and from a client. A
peer cut off by the network sends neither FIN nor RST; without keepalive and
TCP_USER_TIMEOUT a client owed a reply would wait out the kernel's retransmissions (about
15 minutes), and a vanished client would hold its server session (and its locks) as long.

Layout: switchyard and its clients in namespace A; the partitioned Postgres in B
(10.77.0.2), or the partitioned client in C (10.78.0.2). The bystander route's server is the
shared built-in cluster, reached over its unix socket, which no partition touches.
"""

import socket
import time

import harness
import netns
from harness import PgError, PgWire, check

# reconnect_window = 0: the keepalive bounds and the old contract (an idle session closed
# with its server, 08001 at once); the reconnect is test_pg_reconnect's.
TCP = "tcp_keepidle = 1\ntcp_keepintvl = 1\ntcp_keepcnt = 2\ntcp_user_timeout = 3\nconnect_timeout = 2\n" \
    "reconnect_window = 0\n"
# the documented bound with those settings: keepidle + keepcnt x keepintvl = 3 s; allow slack
BOUND = 8.0


def _unix_conninfo(cluster):
    return "host=%s port=%d sslmode=disable" % (cluster.sockdir, cluster.port)


def _builtin_conninfo(ctx):
    """ctx.builtin starts on first use and serves every later test on 127.0.0.1: first used
    inside a namespace, it would listen there, and each later test would get a refused
    connection (seen running test_partition before test_pg_release alone, 2026-12-03)."""
    return _unix_conninfo(ctx.builtin)


def _remote_cluster(ns, addr):
    hba = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all %s/24 trust\n" % addr
    with ns.entered():
        c = harness.PgCluster("remote", hba=hba, setup=False,
                              extra_conf="listen_addresses = '127.0.0.1,%s'" % addr)
    c.sql("CREATE DATABASE sourcegraph")
    return c


def _state(cluster, pid):
    return cluster.sql("SELECT coalesce((SELECT state FROM pg_stat_activity WHERE pid = %d), 'gone')" % pid)


def _behind_partition(builtin, names, net, tcp):
    """switchyard in namespace A (names[0]) in front of a Postgres in B (names[1]), over a
    veth on net (10.X.0.1 / 10.X.0.2): route pg to it, pg-codeintel to builtin (untouched
    by a cut). Returns (a, b, remote, sy)."""
    a, b = netns.Netns(names[0]), netns.Netns(names[1])
    netns.veth(a, net % 1, b, net % 2)
    remote = _remote_cluster(b, net % 2)
    with a.entered():
        port = harness.free_port()
        conf = harness.pg_conf(port, [
            harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                             builtin="host=%s port=%d sslmode=disable" % (net % 2, remote.port)),
            harness.pg_route("pg-codeintel", "sourcegraph-codeintel", env_prefix="CODEINTEL_",
                             builtin=builtin),
        ], globals_extra=tcp)
        sy = harness.Switchyard(conf)
    return a, b, remote, sy


def test_partition_to_upstream(ctx):
    """Mid-query, the upstream's link goes down. The client owed a reply gets 08006 naming the
    route and target within the keepalive bound; an idle session is closed without a word, as
    a direct one; a new session gets 08001 within connect_timeout; the bystander route is
    untouched; after the link heals, new sessions work."""
    builtin = _builtin_conninfo(ctx)   # before any namespace is entered
    a, b, remote, sy = _behind_partition(builtin, ("sy-pa", "sy-pb"), "10.77.0.%d", TCP)
    with a.entered():
        victim = PgWire(sy.port)
        victim.startup(database="sourcegraph")
        vpid = int(victim.query("SELECT pg_backend_pid()")[0][0])
        idle = PgWire(sy.port)
        idle.startup(database="sourcegraph")
        bystander = PgWire(sy.port)
        bystander.startup(database="sourcegraph-codeintel")
    victim.send_query("SELECT pg_sleep(30)")
    harness.wait_until(lambda: _state(remote, vpid) == "active", timeout=10, what="query running upstream")
    b.cut()
    t0 = time.monotonic()
    problems = []
    try:
        victim.read_result()
        problems.append("victim: the query returned across a partition")
    except PgError as e:
        secs = time.monotonic() - t0
        if e.sqlstate != "08006":
            problems.append("victim: SQLSTATE %s (%s), want 08006" % (e.sqlstate, e.message))
        if "route pg" not in e.message or "10.77.0.2:%d" % remote.port not in e.message:
            problems.append("victim: message does not name the route and target: %r" % e.message)
        if secs > BOUND:
            problems.append("victim: error after %.1f s, want within %.0f s" % (secs, BOUND))
    except (socket.timeout, harness.ConnectionClosed) as e:
        problems.append("victim: no error (%r) after %.1f s" % (e, time.monotonic() - t0))
    data, closed = idle.read_until_close(timeout=BOUND)
    if not closed or harness.error_messages(data):
        problems.append("idle: closed=%s errors=%s, want a close without an error" %
                        (closed, [e.get("C") for e in harness.error_messages(data)]))
    if bystander.query("SELECT 1") != [("1",)]:
        problems.append("bystander: wrong answer")
    with a.entered():
        err, secs = harness.connect_error(sy.port, db="sourcegraph")
    if err.sqlstate != "08001" or secs > 4:
        problems.append("new session across the partition: %s after %.1f s, want 08001 within 4 s" % (err, secs))
    b.heal()
    with a.entered():
        again = PgWire(sy.port)
        again.startup(database="sourcegraph")
    if again.query("SELECT 'healed'") != [("healed",)]:
        problems.append("after heal: wrong answer")
    sy.check_alive()
    for w in (victim, idle, bystander, again):
        w.close()
    sy.stop()
    check(not problems, "\n".join(problems))


test_partition_to_upstream.timeout = 120


def test_partition_from_client(ctx):
    """A client in its own namespace opens a transaction that holds a lock, then its link goes
    down. switchyard finds the dead client within the keepalive bound and ends its server
    session, so the lock is released; a local client is untouched."""
    builtin = _builtin_conninfo(ctx)   # before any namespace is entered
    a, c = netns.Netns("sy-ca"), netns.Netns("sy-cc")
    netns.veth(a, "10.78.0.1", c, "10.78.0.2")
    secret = "partition-secret"
    with a.entered():
        port, local_port = harness.free_port(), harness.free_port()
        conf = ("[switchyard]\nmetrics_listen = off\ndrain_timeout = 2\n%s\n"
                "[listener pg]\nprotocol = postgres\nlisten = 10.78.0.1:%d\nauth_password = %s\n\n"
                "[listener local]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
                % (TCP, port, secret, local_port))
        conf += harness.pg_route("pg", "sourcegraph", default=True, env_prefix="",
                                 builtin=builtin)
        conf += harness.pg_route("pg-local", "sourcegraph", listener="local", env_prefix="LOCAL_",
                                 builtin=builtin, default=True)
        sy = harness.Switchyard(conf, wait=False)
        harness.wait_port(port, timeout=30, proc=sy.proc.popen, host="10.78.0.1", what="switchyard")
        harness.wait_port(local_port, timeout=30, proc=sy.proc.popen, what="switchyard")
        local = PgWire(local_port)
        local.startup(database="sourcegraph")
    with c.entered():
        remote = PgWire(port, host="10.78.0.1")
        remote.startup(database="sourcegraph", password=secret)
    rpid = int(remote.query("SELECT pg_backend_pid()")[0][0])
    remote.query("BEGIN")
    remote.query("SELECT pg_advisory_xact_lock(4242)")
    c.cut()
    t0 = time.monotonic()
    problems = []
    try:
        harness.wait_until(lambda: _state(ctx.builtin, rpid) == "gone", timeout=BOUND,
                           what="the dead client's backend to end")
    except harness.TestFailure:
        problems.append("the partitioned client's backend is still %r after %.0f s" %
                        (_state(ctx.builtin, rpid), BOUND))
    secs = time.monotonic() - t0
    got = local.query("SELECT pg_try_advisory_lock(4242)")
    if got != [("t",)]:
        problems.append("the lock the dead client held is not free: %r" % got)
    local.query("SELECT pg_advisory_unlock(4242)")
    if not problems and secs > BOUND:
        problems.append("backend ended after %.1f s" % secs)
    sy.check_alive()
    local.close()
    remote.close()
    sy.stop()
    check(not problems, "\n".join(problems))


test_partition_from_client.timeout = 120


def test_cancel_across_partition_gives_up(ctx):
    """A client cancels its query while the upstream's link is down. The cancel is a new
    connection to the postmaster (PQcancel, on a thread of the pool), whose SYNs go
    unanswered: it gives up after tcp_user_timeout, as a connection does, instead of
    holding that thread through the kernel's SYN retries (about two minutes)."""
    builtin = _builtin_conninfo(ctx)   # before any namespace is entered
    # keepalive slow (the session must outlive the cut while the cancel runs), user timeout short
    tcp = "tcp_keepidle = 60\ntcp_user_timeout = 2\nconnect_timeout = 2\nreconnect_window = 0\n"
    a, b, remote, sy = _behind_partition(builtin, ("sy-ka", "sy-kb"), "10.79.0.%d", tcp)
    with a.entered():
        victim = PgWire(sy.port)
        victim.startup(database="sourcegraph")
    vpid = int(victim.query("SELECT pg_backend_pid()")[0][0])
    victim.send_query("SELECT pg_sleep(60)")
    harness.wait_until(lambda: _state(remote, vpid) == "active", timeout=10, what="query running upstream")
    b.cut(silent=True)
    mark = sy.log_size()
    t0 = time.monotonic()
    with a.entered():
        harness.cancel_request(sy.port, victim.pid, victim.secret)
    sy.wait_log(r'event=cancel_failed conn=\d+ error="PQcancel\(\) -- connect\(\) failed', since=mark, timeout=15,
                what="the cancel giving up on the cut-off server")
    secs = time.monotonic() - t0
    check(secs < 10, "the cancel gave up after %.1f s, want about tcp_user_timeout (2 s)" % secs)
    b.heal()
    victim.close()
    sy.check_alive()
    sy.stop()
    remote.stop()


test_cancel_across_partition_gives_up.timeout = 120
