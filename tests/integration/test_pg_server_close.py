"""
test_pg_server_close.py - issue 12 A: when the server ends a session, the client sees what the
server said and nothing more. After Postgres's own FATAL (pg_terminate_backend: 57P01) and
close, switchyard closes the client too and adds no error of its own; 08006 is only for a
server that vanished while the client was owed a reply (test_pg_failures covers that).
With reconnect_window = 0: with the window on, an idle session whose backend was terminated
is reconnected instead (57P01 at the wire is an admin shutdown as much as
pg_terminate_backend), which test_pg_reconnect covers.
"""

import json
import os
import subprocess
import time

import harness
from harness import PgError, PgWire, check

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node")


def _wait_state(cluster, pid, state, what):
    harness.wait_until(lambda: cluster.sql("SELECT state FROM pg_stat_activity WHERE pid = %d" % pid) == state,
                       timeout=10, what=what)


def _terminated(cluster, port, how):
    """Open a session on port, put it in state `how`, terminate its backend on the server and
    return the SQLSTATEs of every ErrorResponse the client got until the close, and whether
    it closed."""
    w = PgWire(port)
    w.startup(database="sourcegraph")
    pid = int(w.query("SELECT pg_backend_pid()")[0][0])
    if how == "in transaction":
        w.query("BEGIN")
        _wait_state(cluster, pid, "idle in transaction", "BEGIN upstream")
    elif how == "mid-query":
        w.send_query("SELECT pg_sleep(60)")
        _wait_state(cluster, pid, "active", "query started upstream")
    cluster.sql("SELECT pg_terminate_backend(%d)" % pid)
    data, closed = w.read_until_close(timeout=10)
    w.close()
    return [e.get("C", "?") for e in harness.error_messages(data)], closed


def test_terminated_backend_one_error_as_direct(ctx):
    """pg_terminate_backend of an idle session, one idle in a transaction and one mid-query:
    the client gets exactly the errors a direct client gets (FATAL 57P01), then the close."""
    sy = harness.start_default(ctx, args=["switchyard.reconnect_window=0"])
    diffs = []
    for how in ("idle", "in transaction", "mid-query"):
        direct = _terminated(ctx.builtin, ctx.builtin.port, how)
        via = _terminated(ctx.builtin, sy.port, how)
        if direct != via:
            diffs.append("%s: direct %s, switchyard %s" % (how, direct, via))
        if via != (["57P01"], True):
            diffs.append("%s: switchyard gave %s (errors, closed), want (['57P01'], True)" % (how, via))
    sy.wait_log(r"event=upstream_lost .*owed=0 after=fatal", count=3, what="three upstream_lost lines")
    sy.check_alive()
    sy.stop()
    check(not diffs, "\n".join(diffs))


def _node(port, mode, cluster):
    script = harness.require_file(os.path.join(NODE_DIR, "server_fatal.js"), "node script")
    harness.require_file(os.path.join(NODE_DIR, "node_modules", "pg"), "node-postgres (scripts/install-deps.sh)")
    p = subprocess.Popen(["node", script, str(port), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        first = json.loads(p.stdout.readline() or "{}")
        check("pid" in first, "node client did not connect: %r %s" % (first, p.stderr.read() if p.poll() else ""))
        if mode == "query":
            _wait_state(cluster, first["pid"], "active", "node query started upstream")
        cluster.sql("SELECT pg_terminate_backend(%d)" % first["pid"])
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check(p.returncode == 0, "node exited %s: %s" % (p.returncode, err[-800:]))
    return json.loads(out.strip().splitlines()[-1])


def test_node_postgres_terminated_backend(ctx):
    """node-postgres emitted 'error' twice for one terminated backend (the server's 57P01,
    then switchyard's 08006); the second is unhandled in most applications and kills the
    process. Through switchyard it must see what it sees direct."""
    sy = harness.start_default(ctx, args=["switchyard.reconnect_window=0"])
    diffs = []
    for mode in ("idle", "query"):
        direct = _node(ctx.builtin.port, mode, ctx.builtin)
        via = _node(sy.port, mode, ctx.builtin)
        if direct != via:
            diffs.append("%s: direct %s, switchyard %s" % (mode, direct, via))
    sy.check_alive()
    sy.stop()
    check(not diffs, "\n".join(diffs))
