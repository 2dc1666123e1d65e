"""
test_watch_failure.py - issue 13, defect 4: a poll handle that cannot be had (memory or fds
run out) must end in an answer, never a session waiting for an event that cannot come.

tests/preload/fault_inject.so makes libuv's uv_poll_init fail (its ioctl(FIONBIO) gets
ENOMEM) while a file exists. Then:
  - a client already accepted, whose upstream connection cannot be watched, gets a FATAL
    naming the cause (08001: it cannot connect), and the close;
  - a client accepted while it lasts is answered as at the server's limit (53300), not left
    hanging; a Redis client likewise (-ERR);
  - sessions already running are untouched, and once the fault clears new ones work.
"""

import os
import socket
import time

import harness
import redis_support as rs
from harness import PgError, PgWire, check
from redis_support import Resp


def _fault_env(trigger):
    so = harness.require_file(harness.tool("fault_inject.so"), "the fault injection library (make asan builds it)")
    return {"LD_PRELOAD": so, "SY_FAULT_POLL_FILE": trigger}


def test_pg_failed_watch_answers(ctx):
    trigger = os.path.join(harness.tmpdir("fault"), "armed")
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin), env=_fault_env(trigger),
                            asan_extra="verify_asan_link_order=0")
    console = harness.Console(port)
    running = PgWire(port)
    running.startup(database="sourcegraph")
    waiting = PgWire(port)     # accepted, its startup not sent yet
    harness.wait_until(lambda: any(r["state"] == "startup" for r in console.rows("SHOW CLIENTS")), timeout=10,
                       what="the waiting client in SHOW CLIENTS")
    open(trigger, "w").close()
    problems = []
    t0 = time.monotonic()
    try:
        waiting.startup(database="sourcegraph")
        problems.append("startup succeeded with no poll handle to be had")
    except PgError as e:
        if e.sqlstate not in ("53200", "08001") or "memory" not in e.message:
            problems.append("waiting client: %s %s, want 08001/53200 naming the cause" % (e.sqlstate, e.message))
    except (socket.timeout, harness.ConnectionClosed) as e:
        problems.append("waiting client: %r after %.1f s, want FATAL 53200" % (e, time.monotonic() - t0))
    try:
        err, secs = harness.connect_error(port, db="sourcegraph", timeout=10)
        if err.sqlstate != "53300":
            problems.append("new client during the fault: %s %s, want 53300" % (err.sqlstate, err.message))
    except harness.TestFailure as e:
        problems.append("new client during the fault: %s" % e)
    if running.query("SELECT 'still'") != [("still",)]:
        problems.append("a running session was disturbed")
    os.unlink(trigger)
    again = PgWire(port)
    again.startup(database="sourcegraph")
    if again.query("SELECT 'again'") != [("again",)]:
        problems.append("after the fault: wrong answer")
    sy.wait_log(r"event=watch_failed conn=\d+ error=", what="event=watch_failed")
    for w in (running, waiting, again):
        w.close()
    console.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))


def _redis_failed_watch(extra):
    """A Redis client accepted while no poll handle can be had: -ERR and the close, at once
    (the fault is this process's, so reconnect_window does not wait it out); the running
    session and later clients are untouched."""
    server = harness.RedisServer()
    trigger = os.path.join(harness.tmpdir("fault"), "armed")
    sy = rs.start_proxy(server, env=_fault_env(trigger), asan_extra="verify_asan_link_order=0", extra=extra)
    running = Resp(sy.port)
    check(running.cmd("SET", "k", "v") == "OK", "SET before the fault")
    open(trigger, "w").close()
    c = Resp(sy.port, timeout=10)
    c.send(b"*1\r\n$4\r\nPING\r\n")
    got = c.expect_close(10)
    problems = []
    if not got.startswith(b"-ERR"):
        problems.append("new client during the fault got %r, want -ERR then the close" % got)
    if "event=reconnect_failed" in sy.log_text():
        problems.append("a failure of the proxy's own was retried as the target's:\n%s" % harness.log_tail(sy.logfile, 10))
    try:
        got = running.cmd("GET", "k")
        if got != b"v":
            problems.append("a running session was disturbed: %r" % (got,))
    except Exception as e:
        problems.append("a running session was disturbed: %r\n%s" % (e, harness.log_tail(sy.logfile, 10)))
    os.unlink(trigger)
    again = Resp(sy.port)
    if again.cmd("PING") != "PONG":
        problems.append("after the fault: no PONG")
    for x in (running, c, again):
        x.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_redis_failed_watch_answers(ctx):
    """Multiplexed (the default): the client shares the route's upstream."""
    _redis_failed_watch("")


def test_redis_failed_watch_answers_dedicated(ctx):
    """multiplex = off: the client's own upstream is dialed, and cannot be watched. Its
    retry's socket once stayed blocking, so the worker stalled on its first read and the
    client waited until shutdown."""
    _redis_failed_watch("multiplex = off")


def test_redis_switch_without_poll_handles(ctx):
    """A switch of a multiplex = off route while no poll handle can be had: the move's new
    socket (dialed on the thread pool) cannot be made non-blocking. The moving client gets
    -ERR naming the cause and the close, the switch completes, and once the fault clears a
    new client reaches the new target: the worker was never left on a blocking socket."""
    import switch_support as ss
    builtin, external = harness.RedisServer(), harness.RedisServer()
    trigger = os.path.join(harness.tmpdir("fault"), "armed")
    sy = ss.start_redis(ctx, builtin, external, route_extra="multiplex = off\n", env=_fault_env(trigger),
                        asan_extra="verify_asan_link_order=0")
    con = ss.Console(sy)
    moving = Resp(sy.redis_port)
    check(moving.cmd("SET", "k", "before") == "OK", "SET before the fault")
    open(trigger, "w").close()
    row, _t0, _t1 = con.switch("redis-store", "external")
    problems = []
    if row["moved"] != "0" or row["closed"] != "1":
        problems.append("SWITCH with no poll handle to be had: %r, want moved 0, closed 1" % row)
    moving.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    got = moving.expect_close(10)
    if not got.startswith(b"-ERR") or b"non-blocking" not in got:
        problems.append("the moving client got %r, want -ERR naming the socket, then the close" % got)
    os.unlink(trigger)
    again = Resp(sy.redis_port)
    if again.cmd("SET", "k", "after") != "OK" or external.cli("GET", "k").stdout.strip() != "after":
        problems.append("after the fault: a new client did not reach the new target")
    for x in (moving, again):
        x.close()
    con.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems) + "\n" + harness.log_tail(sy.logfile, 15))


def _idle_session_times_out(port):
    """A session idle outside a transaction gets FATAL 57P05 from the sweep (client_idle_timeout = 2)."""
    idle = PgWire(port).startup(database="sourcegraph")
    check(idle.query("SELECT 1") == [("1",)], "a session before its idle timeout")
    data, closed = idle.read_until_close(timeout=20)
    fields = harness.parse_error_fields(data[5:]) if data[:1] == b"E" else {}
    check(closed and fields.get("C") == "57P05", "an idle session: %r closed=%s, want FATAL 57P05" % (data[:200], closed))


def test_sweep_without_timerfd(ctx):
    """The workers' once-a-second sweep (timeouts, idle servers) runs on a timerfd the loop
    polls; when none can be had (fds run out) it falls back to a uv timer, says so, and the
    timeouts still fire. With a timerfd, no such line."""
    so = harness.require_file(harness.tool("fault_inject.so"), "the fault injection library (make asan builds it)")
    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin, globals_extra="client_idle_timeout = 2\n"),
                            env={"LD_PRELOAD": so, "SY_FAULT_TIMERFD": "1"}, asan_extra="verify_asan_link_order=0")
    sy.wait_log(r'event=sweep_timerfd_unavailable worker=0 error="Too many open files"',
                what="the fallback's warning")
    _idle_session_times_out(port)
    sy.check_alive()
    sy.stop()

    port = harness.free_port()
    sy = harness.Switchyard(harness.default_pg_conf(port, ctx.builtin, globals_extra="client_idle_timeout = 2\n"))
    _idle_session_times_out(port)
    check("sweep_timerfd_unavailable" not in sy.log_text(), "a timerfd could be had: no fallback wanted")
    sy.stop()


def test_redis_shared_upstream_redial_without_poll_handles(ctx):
    """The shared upstream (multiplex, the default) is lost while its client stays: the
    server restarts while no poll handle can be had, so the redial's socket cannot be made
    non-blocking. The client's command gets -ERR naming that cause, then the close, as for
    any upstream that cannot be had; at once (the fault is the proxy's: reconnect_window
    waits out only the target's refusals), never a worker stalled on a blocking socket.
    Once the fault clears, a new client is served."""
    server = harness.RedisServer()
    trigger = os.path.join(harness.tmpdir("fault"), "armed")
    sy = rs.start_proxy(server, env=_fault_env(trigger), asan_extra="verify_asan_link_order=0")
    c = Resp(sy.port, timeout=10)
    check(c.cmd("SET", "k", "v") == "OK", "SET before the fault")
    open(trigger, "w").close()
    server.kill()
    server.start()
    problems = []
    t0 = time.monotonic()
    c.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    got = c.expect_close(10)
    secs = time.monotonic() - t0
    if not got.startswith(b"-ERR") or b"cannot make the socket non-blocking" not in got:
        problems.append("GET while the redial cannot be watched: %r, want -ERR naming the socket, then the close" % got)
    elif secs > 5:
        problems.append("the -ERR took %.1f s: the proxy's own failure was waited out" % secs)
    os.unlink(trigger)
    again = Resp(sy.port)
    if again.cmd("SET", "k", "after") != "OK" or server.cli("GET", "k").stdout.strip() != "after":
        problems.append("after the fault: a new client was not served\n%s" % harness.log_tail(sy.logfile, 10))
    for x in (c, again):
        x.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))
