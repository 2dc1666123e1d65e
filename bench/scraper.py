#!/usr/bin/python3
"""bench/scraper.py - a monitoring client that polls switchyard's /metrics and console.

    scraper.py METRICS_HOST:PORT CONSOLE_HOST:PORT [RATE]

Used by bench/scrape_bench.sh. Two threads, each RATE times a second (default 50):

    metrics   a new TCP connection per fetch (the endpoint answers Connection: close),
              GET /metrics, read to EOF; counts as ok when the status is 200 and the body
              has the switchyard_clients family.
    console   one Postgres connection to the admin console (dbname=switchyard, user
              postgres, trusted on loopback), kept open; SHOW CLIENTS per tick, ok when the
              answer has a RowDescription, a CommandComplete and no ErrorResponse. After a
              failure the next tick connects again.

Each request times out after 2 s. A thread that falls more than a second behind its
schedule skips ahead (so it never bursts). On SIGTERM or SIGINT both threads stop and one
line is printed:

    scraper seconds=S metrics_ok=N metrics_failed=F metrics_max_ms=M console_ok=N
            console_failed=F console_max_ms=M first_error=...

The Postgres wire client here is the minimum the console needs (startup without TLS or a
password, simple Query); only the standard library is used.
"""
import signal
import socket
import struct
import sys
import threading
import time

TIMEOUT = 2.0


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


class Counter:
    def __init__(self):
        self.ok = 0
        self.failed = 0
        self.max_ms = 0.0
        self.first_error = ""

    def fail(self, why):
        self.failed += 1
        if not self.first_error:
            self.first_error = why


def fetch_metrics(addr):
    with socket.create_connection(addr, timeout=TIMEOUT) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    resp = b"".join(chunks)
    if not resp.startswith(b"HTTP/1.1 200") and not resp.startswith(b"HTTP/1.0 200"):
        raise RuntimeError("metrics: %r" % resp[:60])
    if b"\nswitchyard_clients " not in resp:
        raise RuntimeError("metrics: no switchyard_clients in %d bytes" % len(resp))


class Console:
    """One Postgres connection to the console; messages are type byte + int32 length."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.buf = b""
        params = b"user\0postgres\0database\0switchyard\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        for typ, body in self.messages():
            if typ == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise RuntimeError("console asks for authentication %d" % struct.unpack("!i", body[:4])[0])

    def message(self):
        while True:
            if len(self.buf) >= 5:
                n = struct.unpack("!i", self.buf[1:5])[0]
                if n < 4 or n > 64 << 20:
                    raise RuntimeError("console: bad message length %d" % n)
                if len(self.buf) >= 1 + n:
                    typ, body = self.buf[:1], self.buf[5:1 + n]
                    self.buf = self.buf[1 + n:]
                    return typ, body
            b = self.sock.recv(65536)
            if not b:
                raise RuntimeError("console closed the connection")
            self.buf += b

    def messages(self):
        """Messages up to and including ReadyForQuery; an ErrorResponse raises."""
        while True:
            typ, body = self.message()
            if typ == b"E":
                raise RuntimeError("console error: %s" % body.replace(b"\0", b" ").decode(errors="replace")[:200])
            yield typ, body
            if typ == b"Z":
                return

    def query(self, sql):
        q = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
        seen = set(t for t, _ in self.messages())
        if b"T" not in seen or b"C" not in seen:
            raise RuntimeError("console: %s answered without rows or completion" % sql)

    def close(self):
        self.sock.close()


def make_console_task(addr):
    state = {"c": None}

    def task():
        try:
            if state["c"] is None:
                state["c"] = Console(addr)
            state["c"].query("SHOW CLIENTS")
        except Exception:
            if state["c"] is not None:
                state["c"].close()
            state["c"] = None
            raise
    return task


def loop(task, rate, counter, stop):
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            task()
            counter.ok += 1
        except Exception as e:  # every failure is counted, whatever its kind
            counter.fail("%s: %s" % (type(e).__name__, e))
        counter.max_ms = max(counter.max_ms, (time.monotonic() - t0) * 1000)
        nxt += period
        now = time.monotonic()
        if now - nxt > 1.0:
            nxt = now
        stop.wait(max(0.0, nxt - now))


def main():
    maddr, caddr = hostport(sys.argv[1]), hostport(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 50.0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    m, c = Counter(), Counter()
    threads = [threading.Thread(target=loop, args=(lambda: fetch_metrics(maddr), rate, m, stop)),
               threading.Thread(target=loop, args=(make_console_task(caddr), rate, c, stop))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.2)      # the main thread must wake up for the signal handler to run
    for t in threads:
        t.join()
    err = (m.first_error or c.first_error).replace(" ", "_")[:160]
    print("scraper seconds=%.1f metrics_ok=%d metrics_failed=%d metrics_max_ms=%.0f "
          "console_ok=%d console_failed=%d console_max_ms=%.0f first_error=%s"
          % (time.monotonic() - t0, m.ok, m.failed, m.max_ms, c.ok, c.failed, c.max_ms, err or "none"),
          flush=True)


if __name__ == "__main__":
    main()
