"""
test_redis_load.py - issue 3, cases 2 and 3: redis-benchmark through switchyard, a pipeline
of 100k commands with every reply checked in order, a 100 MB value written and read back,
and the hiredis checker tool (tests/tools/redis_check.c).

What the upstream executed is read back from INFO commandstats, so a lost or repeated
command fails the test even when the client did not notice.
"""

import hashlib
import os
import random
import re
import socket
import threading
import time

import harness
from harness import check, fail
import redis_support as rs
from redis_support import Resp, encode, Err

BENCH_N = 20000
BENCH = "/usr/bin/redis-benchmark"


def _pair(**kw):
    server = harness.RedisServer()
    sy = rs.start_proxy(server, **kw)
    return server, sy


# ---- case 2: redis-benchmark -----------------------------------------------------------

def _bench(server, sy, pipeline):
    r = server.cli("CONFIG", "RESETSTAT")
    check(r.returncode == 0, "CONFIG RESETSTAT: %s" % r.stderr)
    server.cli("DEL", "mylist")
    argv = [BENCH, "-h", "127.0.0.1", "-p", str(sy.port), "-c", "50", "-n", str(BENCH_N),
            "-t", "get,set,lpush,mset", "--csv"]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    res = harness.run(argv, env=harness.clean_env(), timeout=100)
    out = res.stdout + res.stderr
    what = "redis-benchmark -c 50 -n %d%s" % (BENCH_N, " -P %d" % pipeline if pipeline > 1 else "")
    check(res.returncode == 0, "%s exited %d:\n%s" % (what, res.returncode, out[-2000:]))
    check("rror" not in out, "%s reported errors:\n%s" % (what, out[-2000:]))
    for t in ("SET", "GET", "LPUSH", "MSET"):
        check(re.search(r'^"%s[^"]*","[0-9.]+"' % t, res.stdout, re.M),
              "%s: no result line for %s:\n%s" % (what, t, out[-2000:]))
    stats = rs.commandstats(server)
    for cmd in ("set", "get", "lpush", "mset"):
        check(stats.get(cmd) == BENCH_N, "%s: upstream executed %s %s times, expected %d (%r)"
              % (what, cmd.upper(), stats.get(cmd), BENCH_N, stats))
    llen = server.cli("LLEN", "mylist").stdout.strip()
    check(llen == str(BENCH_N), "%s: LLEN mylist = %s, expected %d" % (what, llen, BENCH_N))
    errs = rs.info(server, "stats").get("total_error_replies")
    check(errs == "0", "%s: upstream counted %s error replies" % (what, errs))
    return res.stdout


def test_benchmark_no_pipeline(ctx):
    server, sy = _pair()
    _bench(server, sy, 1)
    rs.still_serving(sy.port)
    sy.stop()


def test_benchmark_pipeline_16(ctx):
    server, sy = _pair()
    _bench(server, sy, 16)
    rs.still_serving(sy.port)
    sy.stop()


# ---- case 3: a 100k pipeline, replies in order -----------------------------------------

def _pipeline_cmds(n):
    """n commands and the reply each must get, of several types and sizes."""
    cmds, want = [], []
    ctr = 0
    for i in range(n):
        k = i % 5
        if k == 0:
            ctr += 1
            cmds.append(encode("INCR", "pl:ctr"))
            want.append(ctr)
        elif k == 1:
            v = ("v%d-" % i) + "x" * (i % 300)
            cmds.append(encode("ECHO", v))
            want.append(v.encode())
        elif k == 2:
            cmds.append(encode("SET", "pl:%d" % (i % 100), str(i)))
            want.append("OK")
        elif k == 3:
            cmds.append(encode("GET", "pl:%d" % ((i - 1) % 100)))
            want.append(str(i - 1).encode())
        else:
            cmds.append(b"PING\r\n" if i % 2 else encode("PING"))   # inline and multibulk
            want.append("PONG")
    return cmds, want


def test_pipeline_100k_in_order(ctx):
    server, sy = _pair()
    server.cli("CONFIG", "RESETSTAT")
    n = 100000
    cmds, want = _pipeline_cmds(n)
    payload = b"".join(cmds)
    rnd = random.Random(1234)
    r = Resp(sy.port, timeout=60)
    errors = []

    def sender():
        try:
            pos = 0
            while pos < len(payload):   # odd chunk sizes: commands split at every kind of offset
                step = rnd.choice((1, 7, 100, 4096, 65536, 300000))
                r.sock.sendall(payload[pos:pos + step])
                pos += step
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t0 = time.monotonic()
    t.start()
    for i in range(n):
        v = r.read(timeout=60)
        if v != want[i]:
            fail("reply %d of %d is %r, expected %r" % (i, n, r.last_raw[:100], want[i]))
    t.join(timeout=10)
    check(not errors, "sending the pipeline failed: %s" % errors)
    check(r.nothing_for(0.3), "extra bytes after %d replies: %r" % (n, bytes(r.buf[r.pos:r.pos + 100])))
    secs = time.monotonic() - t0
    r.close()
    stats = rs.commandstats(server)
    # (switchyard's own health probes PING the upstream every few seconds: at least n/5 PINGs)
    check(stats.get("incr") == n // 5 and stats.get("echo") == n // 5 and stats.get("ping", 0) >= n // 5
          and stats.get("set") == n // 5 and stats.get("get") == n // 5, "upstream command counts: %r" % stats)
    print("    100k pipeline: %.1fs" % secs)
    sy.stop()


def test_redis_cli_pipe(ctx):
    server, sy = _pair()
    n = 100000
    data = b"".join(encode("SET", "pipe:%d" % i, "v%d" % i) for i in range(n))
    res = harness.run([harness.REDIS_CLI, "-h", "127.0.0.1", "-p", str(sy.port), "--pipe"],
                      env=harness.clean_env(), input=data, timeout=100)
    out = (res.stdout or b"").decode("utf-8", "replace") + (res.stderr or b"").decode("utf-8", "replace")
    check(res.returncode == 0 and "errors: 0, replies: %d" % n in out, "redis-cli --pipe: %s" % out[-1000:])
    check(server.cli("DBSIZE").stdout.strip() == str(n), "DBSIZE after --pipe: %r" % server.cli("DBSIZE").stdout)
    check(server.cli("GET", "pipe:%d" % (n - 1)).stdout.strip() == "v%d" % (n - 1), "last key of --pipe")
    sy.stop()


# ---- case 3: a 100 MB value -------------------------------------------------------------

BIG = 100 * 1024 * 1024
CHUNK = 1 << 20


def _chunks(seed, size):
    rnd = random.Random(seed)
    for _ in range(size // CHUNK):
        yield rnd.randbytes(CHUNK)


def _value_roundtrip(sy, server, size, key="big"):
    """SET key to `size` random bytes streamed through switchyard, GET it back streaming,
    compare length and sha256; the upstream's STRLEN agrees; switchyard's RSS stays flat."""
    r = Resp(sy.port, timeout=120)
    r.cmd("PING")
    rss0 = sy.rss_kb()

    h = hashlib.sha256()
    r.send(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key.encode(), size))
    for c in _chunks(42, size):
        h.update(c)
        r.sock.sendall(c)
    r.send(b"\r\n")
    want = h.hexdigest()
    v = r.read(timeout=120)
    check(v == "OK", "SET of %d bytes answered %r" % (size, r.last_raw[:200]))
    got_len = server.cli("STRLEN", key, tls=bool(server.tls_port)).stdout.strip()
    check(got_len == str(size), "STRLEN %s on the upstream is %s, not %d" % (key, got_len, size))

    # read it back, streaming: header, then exactly `size` bytes, then CRLF
    r.send(encode("GET", key))
    sock = r.sock
    sock.settimeout(120)
    head = b""
    while b"\r\n" not in head:
        d = sock.recv(64)
        check(d, "connection closed while reading the GET header")
        head += d
    line, rest = head.split(b"\r\n", 1)
    check(line == b"$%d" % size, "GET %s header %r" % (key, line[:100]))
    h2 = hashlib.sha256()
    got = 0
    buf = bytearray(rest)
    while True:
        take = min(len(buf), size - got)
        h2.update(buf[:take])
        got += take
        tail = buf[take:]
        if got == size:
            while len(tail) < 2:
                d = sock.recv(2)
                check(d, "connection closed before the final CRLF")
                tail += d
            check(bytes(tail[:2]) == b"\r\n", "bulk not terminated by CRLF: %r" % bytes(tail[:10]))
            check(len(tail) == 2, "extra bytes after the bulk: %r" % bytes(tail[:50]))
            break
        d = sock.recv(1 << 20)
        check(d, "connection closed after %d of %d bytes" % (got, size))
        buf = bytearray(d)
    check(h2.hexdigest() == want, "%d-byte value read back differs (sha256 %s != %s)" % (size, h2.hexdigest(), want))
    rss1 = sy.rss_kb()
    # the connection still works
    r.buf = bytearray()
    r.pos = 0
    check(r.cmd("PING") == "PONG", "PING after the %d-byte round trip: %r" % (size, r.last_raw))
    r.close()
    check(rss1 - rss0 < 32 * 1024, "switchyard's RSS grew by %d kB while relaying %d bytes each way "
                                   "(%d -> %d kB): it buffers instead of streaming" % (rss1 - rss0, size, rss0, rss1))


def test_100mb_value_roundtrip(ctx):
    server, sy = _pair()
    _value_roundtrip(sy, server, BIG)
    sy.stop()


test_100mb_value_roundtrip.timeout = 180


# ---- the hiredis checker ---------------------------------------------------------------

def test_redis_check_tool(ctx):
    server, sy = _pair()
    server.cli("CONFIG", "RESETSTAT")
    tool = rs.redis_tool("redis_check")
    res = harness.run([tool, "127.0.0.1", str(sy.port), "8", "3"], env=harness.clean_env(), timeout=60)
    out = res.stdout + res.stderr
    check(res.returncode == 0, "redis_check through switchyard exited %d:\n%s" % (res.returncode, out[-2000:]))
    m = re.search(r"rounds=(\d+) commands=(\d+) errors=(\d+)", res.stdout)
    check(m and int(m.group(1)) > 100 and m.group(3) == "0", "redis_check output: %s" % out[-1000:])
    rounds = int(m.group(1))
    incrs = rs.commandstats(server).get("incr")
    check(incrs == rounds, "upstream saw %s INCR, redis_check counted %d rounds" % (incrs, rounds))
    # the checker can fail: towards a closed port it must exit 1
    res = harness.run([tool, "127.0.0.1", str(harness.closed_port()), "2", "1"], env=harness.clean_env(), timeout=30)
    check(res.returncode == 1, "redis_check towards a closed port exited %d: %s" % (res.returncode, res.stderr[-500:]))
    sy.stop()


def test_tls_upstream_under_load(ctx):
    """The same through a rediss:// upstream: TLS records split and partial TLS writes on
    a non-blocking socket, with 8 checking clients, a 100k pipeline and a 32 MB value."""
    server = harness.RedisServer(tls=ctx.tls)
    sy = rs.start_proxy("127.0.0.1:1", env={"REDIS_ENDPOINT": "rediss://localhost:%d" % server.tls_port},
                        extra="external_tls_ca_file = %s" % ctx.tls.ca_a)
    ci = rs.client_info_fields(rs.cli_ok(sy.port, "CLIENT", "INFO"))
    check(ci.get("laddr") == "127.0.0.1:%d" % server.tls_port, "not on the TLS port: %r" % ci)
    tool = rs.redis_tool("redis_check")
    res = harness.run([tool, "127.0.0.1", str(sy.port), "8", "3"], env=harness.clean_env(), timeout=60)
    check(res.returncode == 0, "redis_check over TLS exited %d:\n%s" % (res.returncode, (res.stdout + res.stderr)[-2000:]))
    n = 100000
    cmds, want = _pipeline_cmds(n)
    r = Resp(sy.port, timeout=60)
    t = threading.Thread(target=lambda: r.sock.sendall(b"".join(cmds)), daemon=True)
    t.start()
    for i in range(n):
        v = r.read(timeout=60)
        if v != want[i]:
            fail("over TLS, reply %d of %d is %r, expected %r" % (i, n, r.last_raw[:100], want[i]))
    t.join(timeout=10)
    r.close()
    _value_roundtrip(sy, server, 32 * 1024 * 1024, key="tlsbig")
    sy.stop()


test_tls_upstream_under_load.timeout = 180
