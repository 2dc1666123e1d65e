#!/usr/bin/python3
"""bench/idle_clients.py - N idle Redis clients, driven line by line from stdin.

    idle_clients.py HOST PORT COUNT

Used by bench/switch_bench.sh (BENCH_MODE=idle) as a coprocess. At start it opens COUNT
connections to HOST:PORT, in batches (so a listen backlog never overflows), sends each one
PING and waits for +PONG, then leaves them idle and prints one line:

    ready open=N failed=F ms=T

Then, for every line read on stdin:

    ping   every connection sends PING at once (one selector loop, no threads) and must
           answer +PONG within the timeout; a connection that closed, answered anything
           else (an unsolicited "-ERR switched" counts) or stayed silent is a failure. Each
           failed connection is closed and opened again, so the next check sees COUNT
           sessions again. Prints:  ping ok=N failed=F reopen_failed=R ms=T
    quit   (or end of input) closes everything and exits.

Only the standard library: sockets and selectors.
"""
import resource
import selectors
import socket
import sys
import time

PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"
BATCH = 256          # connections opened before their first PING round
TIMEOUT = 10.0       # seconds a PING round may take


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def ping_round(socks):
    """PING every socket in socks at once; return the list of those that failed."""
    sel = selectors.DefaultSelector()
    got = {}
    failed = []
    for s in socks:
        try:
            s.sendall(PING)      # 14 bytes into an idle socket's buffer never blocks
        except OSError:
            failed.append(s)
            continue
        got[s] = b""
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + TIMEOUT
    while got:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(left):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            buf = got[s] + data
            if data and PONG.startswith(buf[:len(PONG)]) and len(buf) < len(PONG):
                got[s] = buf
                continue
            sel.unregister(s)
            del got[s]
            if buf != PONG:
                failed.append(s)
    for s in got:
        sel.unregister(s)
        failed.append(s)
    sel.close()
    return failed


def open_batch(host, port, n):
    """Open n connections and PING each once; return (good sockets, number failed)."""
    socks = []
    bad = 0
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=TIMEOUT)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            bad += 1
    failed = ping_round(socks)
    for s in failed:
        s.close()
    dead = set(failed)
    good = [s for s in socks if s not in dead]
    return good, bad + len(failed)


def open_many(host, port, n):
    socks = []
    bad = 0
    while n > 0:
        k = min(BATCH, n)
        good, b = open_batch(host, port, k)
        socks += good
        bad += b
        n -= k
    return socks, bad


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    raise_fd_limit(count + 64)
    t0 = time.monotonic()
    socks, bad = open_many(host, port, count)
    print("ready open=%d failed=%d ms=%.0f" % (len(socks), bad, (time.monotonic() - t0) * 1000), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd != "ping":
            print("error unknown command %r" % cmd, flush=True)
            continue
        t0 = time.monotonic()
        failed = ping_round(socks)
        ms = (time.monotonic() - t0) * 1000
        ok = len(socks) - len(failed)     # sockets a failed reopen left out count as failed
        dead = set(failed)
        for s in failed:
            s.close()
        socks = [s for s in socks if s not in dead]
        fresh, reopen_bad = open_many(host, port, count - len(socks))
        socks += fresh
        print("ping ok=%d failed=%d reopen_failed=%d ms=%.0f" % (ok, count - ok, reopen_bad, ms), flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
