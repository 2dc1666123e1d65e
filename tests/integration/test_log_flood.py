"""
test_log_flood.py - issue 8, log flood control: a client that makes switchyard log on
purpose gets a bounded number of lines, and the count of the rest.

A bogus CancelRequest (an unknown key) logs `event=cancel_ignored`, one line each; before
the rate limit one client wrote about 3,100 lines a second. proxy/core/log.c now writes
at most 50 lines per event name per second and then one
`event=log_suppressed event_name=cancel_ignored suppressed=N` line, so the lines written
plus the suppressed counts add up to exactly the requests sent.
"""

import re
import socket
import struct
import threading
import time

import harness
from harness import check, fail

RATE = 50                   # lines per event name per second (LOG_RATE in log.c)


def _conf(port):
    # No upstream is needed: an unknown cancel key is answered without one.
    return harness.pg_conf(port, [harness.pg_route(
        "pg", "sourcegraph", default=True, env_prefix="",
        builtin="host=127.0.0.1 port=1 dbname=none user=none")])


def _bogus_cancels(port, n, out, idx):
    sent = 0
    for i in range(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(struct.pack("!IIII", 16, harness.CANCEL_REQUEST_CODE, 7 + i, 0xdead0000 + i))
                s.settimeout(5)
                s.recv(1)           # switchyard closes without an answer, as a server does
            sent += 1
        except OSError:
            pass
    out[idx] = sent


def _counts(text):
    lines = len(re.findall(r"event=cancel_ignored ", text))
    suppressed = sum(int(m) for m in re.findall(
        r"event=log_suppressed event_name=cancel_ignored suppressed=(\d+)", text))
    return lines, suppressed


def test_bogus_cancel_flood_is_rate_limited(ctx):
    """Thousands of bogus CancelRequests in ~2 s: at most RATE lines per second of flood,
    then a log_suppressed line whose count makes up the difference exactly."""
    port = harness.free_port()
    sy = harness.Switchyard(_conf(port))
    threads, per, out = 4, 800, [0] * 4
    t0 = time.monotonic()
    ts = [threading.Thread(target=_bogus_cancels, args=(port, per, out, i)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - t0
    sent = sum(out)
    check(sent >= threads * per * 0.9, "only %d of %d cancel requests went through" % (sent, threads * per))
    time.sleep(0.3)                             # let the workers finish logging
    lines, _ = _counts(sy.log_text())
    bound = RATE * (int(secs) + 2)
    check(lines <= bound, "%d cancel_ignored lines for %d requests in %.1fs (bound %d): "
          "the log is not rate-limited" % (lines, sent, secs, bound))
    check(lines >= RATE, "only %d cancel_ignored lines: the first %d of each second must be "
          "written" % (lines, RATE))

    # The next window: one more request reports what the flood's last window dropped.
    time.sleep(1.2)
    _bogus_cancels(port, 1, out, 0)
    sent += out[0]
    deadline = time.monotonic() + 5
    while True:
        text = sy.log_text()
        lines, suppressed = _counts(text)
        if lines + suppressed == sent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    check(suppressed > 0, "no event=log_suppressed line for cancel_ignored:\n%s" % text[-2000:])
    check(lines + suppressed == sent,
          "%d lines + %d suppressed != %d requests sent" % (lines, suppressed, sent))
    total = len(text.splitlines())
    check(total <= bound + 40, "%d log lines in all for a flood bounded at %d" % (total, bound))
    sy.stop()
