"""
test_fd_limit.py - issue 8, defect 1: at the fd limit the accept loop spun.

With `ulimit -n 1024` and 1,500 clients switchyard ran at ~95% CPU, wrote ~247,000
`event=accept_failed` lines a second and left new clients hanging with no answer: accept4
failed with EMFILE, the client stayed in the backlog, and the level-triggered poll fired
again at once. Now (proxy/core/listener.c) a reserve fd lets the listener accept such a
client and answer it as a server at its limit does, then close it; the listener pauses for
100 ms, and one accept_failed line per second carries the counts. At start switchyard
also raises its soft RLIMIT_NOFILE to the hard limit (proxy/control/main.c).

The test starts switchyard with a soft limit below the hard one (the raise is checked),
then lowers both to FD_LIMIT with prlimit so the raise cannot help, and fills the table
with idle clients on the Postgres listener.
"""

import os
import re
import resource
import selectors
import socket
import struct
import threading
import time

import harness
import redis_support
from harness import check, fail

FD_LIMIT = 256
PG_REFUSAL_FIELDS = b"SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0"
PG_REFUSAL = b"E" + struct.pack("!I", len(PG_REFUSAL_FIELDS) + 4) + PG_REFUSAL_FIELDS
REDIS_REFUSAL = b"-ERR max number of clients reached\r\n"


def _conf(pg_port, redis_port, ctx, rs):
    return (harness.pg_conf(pg_port, [harness.pg_route(
        "pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo())])
        + "\n[listener rd]\nprotocol = redis\nlisten = 127.0.0.1:%d\n\n"
          "[route rd]\nlistener = rd\nbuiltin = %s\n"
          # the count of fds at the limit assumes an upstream per Redis client
          "multiplex = off\n" % (redis_port, redis_support.endpoint(rs)))


def _limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    fail("no 'Max open files' in /proc/%d/limits" % pid)


def _cpu_seconds(pid):
    """utime + stime of pid (fields 14 and 15 of /proc/PID/stat), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def _open_clients(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        socks.append(s)
    return socks


def _classify(socks, wait=3.0):
    """Read every socket for `wait` seconds: {sock: (bytes, closed)}."""
    got = {s: [b"", False] for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and sel.get_map():
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                b = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                b = b""
            if b:
                got[s][0] += b
            else:
                got[s][1] = True
                sel.unregister(s)
    sel.close()
    return got


def _refused(got, refusal, what):
    """The sockets that got exactly `refusal` and a close; fails on anything else."""
    refused, held = [], []
    for s, (data, closed) in got.items():
        if closed and data == refusal:
            refused.append(s)
        elif not closed and data == b"":
            held.append(s)
        else:
            fail("%s client got %r (closed=%s); expected %r and a close, or nothing"
                 % (what, data[:200], closed, refusal))
    return refused, held


def _served_again(pg_port):
    """Once the clients left, psql through switchyard works again within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        r = harness.psql(pg_port, "SELECT 7")
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(r.returncode == 0 and r.stdout.strip() == "7",
          "after the clients left, psql through switchyard failed: %s" % r.stderr.strip()[-500:])


def _hammer(ports, stop, counts):
    """Keep new clients coming while switchyard is at its limit."""
    while not stop.is_set():
        for port, refusal in ports:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.settimeout(5)
                    data = b""
                    while True:
                        b = s.recv(4096)
                        if not b:
                            break
                        data += b
                counts["refused" if data == refusal else "other"] += 1
            except OSError:
                counts["error"] += 1
        time.sleep(0.005)


def test_fd_limit_refuses_without_spinning(ctx):
    """At the fd limit: extra Postgres and Redis clients get the protocol's own error and a
    close, the process stays nearly idle, the log gets about one line a second, and once
    clients leave new ones are served again."""
    rs = harness.RedisServer()
    pg_port, redis_port = harness.free_port(), harness.free_port()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard > 1024, "test needs a hard fd limit above 1024 (have %d)" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        sy = harness.Switchyard(_conf(pg_port, redis_port, ctx, rs))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    s_soft, s_hard = _limits(sy.pid)
    check(s_soft == s_hard == hard, "switchyard started with soft 1024 / hard %d kept "
          "soft %d / hard %d: the soft limit was not raised" % (hard, s_soft, s_hard))
    resource.prlimit(sy.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    check(_limits(sy.pid) == (FD_LIMIT, FD_LIMIT), "prlimit did not lower switchyard's limit")

    t_start = time.monotonic()
    pg = _open_clients(pg_port, FD_LIMIT + 60)
    refused, held = _refused(_classify(pg), PG_REFUSAL, "postgres")
    check(len(refused) >= 60, "only %d of %d postgres clients past the limit were refused"
          % (len(refused), len(pg)))
    check(len(held) >= FD_LIMIT // 2, "only %d postgres clients held below a limit of %d"
          % (len(held), FD_LIMIT))
    for s in refused:
        s.close()

    rd = _open_clients(redis_port, 20)
    r_refused, r_held = _refused(_classify(rd), REDIS_REFUSAL, "redis")
    check(len(r_refused) == 20, "%d of 20 redis clients at the limit were refused (%d hang)"
          % (len(r_refused), len(r_held)))
    for s in rd:
        s.close()

    # New clients keep trying for a while; switchyard must stay nearly idle meanwhile.
    stop, counts = threading.Event(), {"refused": 0, "other": 0, "error": 0}
    th = threading.Thread(target=_hammer, args=([(pg_port, PG_REFUSAL), (redis_port, REDIS_REFUSAL)],
                                                stop, counts))
    th.start()
    try:
        time.sleep(0.5)
        c0, t0 = _cpu_seconds(sy.pid), time.monotonic()
        time.sleep(1.5)
        cpu = (_cpu_seconds(sy.pid) - c0) / (time.monotonic() - t0)
    finally:
        stop.set()
        th.join()
    sy.check_alive()
    check(counts["refused"] >= 10 and counts["other"] == 0,
          "clients at the limit while it lasted: %s" % counts)
    print("fd limit: cpu %.1f%%, hammer %s, postgres refused %d held %d" % (
        cpu * 100, counts, len(refused), len(held)))
    check(cpu < 0.35, "switchyard used %.0f%% of a CPU at the fd limit (spinning?)" % (cpu * 100))

    time.sleep(1.2)                     # the last interval's count is written by then
    elapsed = time.monotonic() - t_start
    text = sy.log_text()
    lines = re.findall(r"event=accept_failed listener=(\S+) .*", text)
    for name in ("pg", "rd"):
        n = lines.count(name)
        check(1 <= n <= int(elapsed) + 2, "%d accept_failed lines for listener %s in %.1fs"
              % (n, name, elapsed))
    logged = sum(int(x) for x in re.findall(r"event=accept_failed .*refused=(\d+)", text))
    seen = len(refused) + len(r_refused) + counts["refused"]
    check(logged >= seen, "accept_failed lines count %d refused clients; the clients saw %d"
          % (logged, seen))
    check(re.search(r"event=accept_failed listener=pg error=\"Too many open files\" refused=\d+ "
                    r"suppressed=\d+", text), "no accept_failed line with its counts:\n%s" % text[-2000:])

    # Clients leave: new ones are served again, on both listeners.
    for s in held:
        s.close()
    _served_again(pg_port)
    out = redis_support.cli(redis_port, "PING").stdout.strip()
    check(out == "PONG", "after the clients left, PING through switchyard gave %r" % out)
    sy.stop()


test_fd_limit_refuses_without_spinning.timeout = 90


def _connect_wave(port, n):
    """n non-blocking connects at once; returns the sockets (connecting or connected)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def test_fd_limit_10000_clients(ctx):
    """The fault matrix's 10,000 connections against a lowered fd limit (1024): in waves of
    1,000, every Postgres client is either held or answered with 53300 and closed, none is
    left waiting; switchyard stays up and serves psql afterwards."""
    limit, total, wave = 1024, 10000, 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard >= total + 2000, "test needs a hard fd limit of at least %d (have %d)" % (total + 2000, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rs = harness.RedisServer()
    pg_port, redis_port = harness.free_port(), harness.free_port()
    sy = harness.Switchyard(_conf(pg_port, redis_port, ctx, rs))
    resource.prlimit(sy.pid, resource.RLIMIT_NOFILE, (limit, limit))
    held, refused, other = [], 0, []
    t0 = time.monotonic()
    try:
        for _ in range(total // wave):
            socks = _connect_wave(pg_port, wave)
            got = _classify(socks, wait=6.0)
            for s, (data, closed) in got.items():
                if closed and data == PG_REFUSAL:
                    refused += 1
                    s.close()
                elif not closed and data == b"":
                    held.append(s)
                else:
                    other.append((data[:80], closed))
                    s.close()
        secs = time.monotonic() - t0
        sy.check_alive()
        check(not other, "%d clients got neither the refusal nor a held connection: %s" % (len(other), other[:5]))
        check(refused + len(held) == total, "%d refused + %d held of %d" % (refused, len(held), total))
        check(refused >= total - limit, "only %d refused at a limit of %d" % (refused, limit))
        # the held ones are real sessions: they may start up (the first of them, at least)
        print("10,000 clients at fd limit %d: %d held, %d refused in %.1f s" % (limit, len(held), refused, secs))
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    _served_again(pg_port)
    sy.stop()


test_fd_limit_10000_clients.timeout = 180
