"""
test_metrics.py - the metrics endpoint: /metrics in Prometheus text format, /healthz
(liveness: 200 while the process serves), /readyz (readiness: every route's active target
answered its probe) and the health probes behind it, and the HTTP server's handling of bad and slow clients.

Debian 12's promtool comes only in the `prometheus` package (~96 MB installed), so the
exposition is checked by parse_exposition below, which is stricter than Prometheus itself:
every line is a HELP/TYPE comment or a sample, every sample's family has exactly one HELP
and one TYPE before its first sample, families are contiguous, counters end in _total and
never go negative, no series repeats, no timestamps, no empty lines.
"""

import math
import re
import socket
import time

import harness
from harness import check, fail
import redis_support


# --------------------------------------------------------------------------------------------
# strict Prometheus text format 0.0.4 parser

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
FLOAT_RE = re.compile(r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _label_value(s, i, lineno):
    """Parse a quoted label value starting at s[i] == '"'; returns (value, index after)."""
    if i >= len(s) or s[i] != '"':
        fail("line %d: label value must start with a double quote: %r" % (lineno, s))
    out = []
    i += 1
    while True:
        if i >= len(s):
            fail("line %d: unterminated label value: %r" % (lineno, s))
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in '\\"n':
                fail("line %d: bad escape in label value: %r" % (lineno, s))
            out.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
            i += 2
            continue
        if c == "\n":
            fail("line %d: raw newline in label value" % lineno)
        out.append(c)
        i += 1


def parse_exposition(text):
    """Returns {(name, ((label, value), ...sorted)): float} and {family: type}; fails the test
    on anything not strictly valid."""
    check(text.endswith("\n"), "exposition does not end with a newline")
    helps, types, samples = {}, {}, {}
    finished = set()      # families whose samples are done (a later sample would be a split)
    current = None
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        check(line != "", "line %d: empty line" % lineno)
        check(line == line.strip(" \t"), "line %d: leading or trailing whitespace: %r" % (lineno, line))
        if line.startswith("#"):
            m = re.match(r"# (HELP|TYPE) (\S+) (.*)\Z", line)
            check(m is not None, "line %d: a comment that is not '# HELP name text' or '# TYPE name type': %r"
                  % (lineno, line))
            kind, name, rest = m.groups()
            check(METRIC_RE.match(name), "line %d: bad metric name %r" % (lineno, name))
            if kind == "HELP":
                check(name not in helps, "line %d: second HELP for %s" % (lineno, name))
                check(rest.strip() != "", "line %d: empty HELP for %s" % (lineno, name))
                check(re.search(r"\\[^\\n]", rest) is None, "line %d: bad escape in HELP: %r" % (lineno, rest))
                helps[name] = rest
            else:
                check(name not in types, "line %d: second TYPE for %s" % (lineno, name))
                check(rest in TYPES, "line %d: bad type %r for %s" % (lineno, rest, name))
                check(name not in finished and name != current and
                      not any(k[0] == name for k in samples),
                      "line %d: TYPE for %s after its samples" % (lineno, name))
                types[name] = rest
            continue
        # a sample: name[{labels}] value
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        check(m is not None, "line %d: not a sample: %r" % (lineno, line))
        name = m.group(1)
        i = m.end()
        labels = []
        if i < len(line) and line[i] == "{":
            i += 1
            while True:
                m2 = re.compile(r"([^=]*)=").match(line, i)
                check(m2 is not None, "line %d: bad label list: %r" % (lineno, line))
                lname = m2.group(1)
                check(LABEL_RE.match(lname) and not lname.startswith("__"),
                      "line %d: bad label name %r" % (lineno, lname))
                value, i = _label_value(line, m2.end(), lineno)
                check(lname not in [l for l, _ in labels], "line %d: label %s twice" % (lineno, lname))
                labels.append((lname, value))
                check(i < len(line), "line %d: unterminated label list" % lineno)
                if line[i] == ",":
                    i += 1
                    check(i < len(line) and line[i] != "}", "line %d: trailing comma in labels" % lineno)
                    continue
                check(line[i] == "}", "line %d: expected , or } in %r" % (lineno, line))
                i += 1
                break
        check(i < len(line) and line[i] == " " and line[i + 1:i + 2] != " ",
              "line %d: expected one space before the value: %r" % (lineno, line))
        value_s = line[i + 1:]
        check(" " not in value_s, "line %d: timestamps or trailing fields are not expected: %r" % (lineno, line))
        check(FLOAT_RE.match(value_s), "line %d: bad value %r" % (lineno, value_s))
        value = float(value_s)
        # The family is the metric itself for counters and gauges (all we expose).
        check(name in helps, "line %d: sample of %s without HELP before it" % (lineno, name))
        check(name in types, "line %d: sample of %s without TYPE before it" % (lineno, name))
        if current != name:
            check(name not in finished, "line %d: samples of %s are not contiguous" % (lineno, name))
            if current is not None:
                finished.add(current)
            current = name
        if types[name] == "counter":
            check(name.endswith("_total"), "line %d: counter %s does not end in _total" % (lineno, name))
            check(value >= 0 and not math.isnan(value), "line %d: negative counter %s" % (lineno, line))
        else:
            check(not name.endswith("_total"), "line %d: %s %s ends in _total" % (lineno, types[name], name))
        key = (name, tuple(sorted(labels)))
        check(key not in samples, "line %d: duplicate series %s" % (lineno, line))
        samples[key] = value
    for name in set(helps) | set(types):
        check(name in helps and name in types, "%s has HELP or TYPE but not both" % name)
    return samples, types


def series(samples, name, **labels):
    """The value of one series; fails when it is missing."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        have = [k for k in samples if k[0] == name]
        fail("no series %s%s; have %s" % (name, labels, have[:10]))
    return samples[key]


# --------------------------------------------------------------------------------------------
# a raw HTTP client

class Response:
    def __init__(self, raw):
        self.raw = raw
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        check(sep, "no complete response head in %r" % raw[:300])
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) [^\r\n]+\Z", lines[0])
        check(m is not None, "bad status line %r" % lines[0])
        self.status = int(m.group(1))
        self.headers = {}
        for l in lines[1:]:
            k, sep2, v = l.partition(":")
            check(sep2 and k == k.strip(), "bad response header %r" % l)
            self.headers[k.lower()] = v.strip()
        self.text = self.body.decode("utf-8")


def http_raw(port, data, timeout=10.0, chunks=None, pause=0.0):
    """Send data (or the list `chunks` with `pause` seconds between them), read until the
    server closes; returns (bytes, seconds until close)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for i, c in enumerate(chunks if chunks is not None else [data]):
            if i and pause:
                time.sleep(pause)   # a slow client, chunk by chunk: what the caller tests
            s.sendall(c)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                fail("the metrics server did not close within %.0fs (got %r)" % (timeout, out[:200]))
            if not d:
                break
            out += d
    return out, time.monotonic() - t0


def http(port, path, method="GET", headers="Host: 127.0.0.1\r\n", **kw):
    raw, _ = http_raw(port, ("%s %s HTTP/1.1\r\n%s\r\n" % (method, path, headers)).encode(), **kw)
    r = Response(raw)
    check(r.headers.get("connection") == "close", "no Connection: close in %r" % r.headers)
    if method != "HEAD":
        check(int(r.headers.get("content-length", -1)) == len(r.body),
              "Content-Length %s but %d body bytes" % (r.headers.get("content-length"), len(r.body)))
    return r


def scrape(port):
    r = http(port, "/metrics")
    check(r.status == 200, "GET /metrics: %d %s" % (r.status, r.text[:300]))
    check(r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
          "Content-Type %r" % r.headers.get("content-type"))
    samples, types = parse_exposition(r.text)
    return samples, types, r.text


def wait_readyz(port, status, timeout=7.0, want=None):
    """Poll /readyz until it answers `status` from a finished probe (and with the text
    `want` in it, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        r = http(port, "/readyz")
        if r.status == status and "not probed yet" not in r.text and (want is None or want in r.text):
            return r
        if time.monotonic() > deadline:
            fail("/readyz still %d %r after %.0fs, want %d" % (r.status, r.text, timeout, status))
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# switchyard with a Postgres route and a Redis route

def conf(metrics_port, pg_port, pg_builtin, redis_port, redis_builtin, pg_extra=""):
    # reconnect_window = 2: a client of a dead target waits that long, then gets its 08001
    return ("[switchyard]\nmetrics_listen = 127.0.0.1:%d\ndrain_timeout = 2\nreconnect_window = 2\n\n"
            "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
            "[route pg]\nlistener = pg\ndatabases = sourcegraph\ndefault = true\nbuiltin = %s\n%s\n"
            "[listener redis-store]\nprotocol = redis\nlisten = 127.0.0.1:%d\n\n"
            "[route redis-store]\nlistener = redis-store\nbuiltin = %s\n"
            % (metrics_port, pg_port, pg_builtin, pg_extra, redis_port, redis_builtin))


class Setup:
    def __init__(self, ctx, pg_builtin=None, redis=None, env=None, pg_extra=""):
        self.redis = redis if redis is not None else harness.RedisServer()
        self.metrics = harness.free_port()
        self.pg = harness.free_port()
        self.rport = harness.free_port()
        text = conf(self.metrics, self.pg, pg_builtin or ctx.builtin.conninfo(), self.rport,
                    redis_support.endpoint(self.redis), pg_extra)
        self.sy = harness.Switchyard(text, env=env)
        harness.wait_port(self.metrics, proc=self.sy.proc.popen, what="metrics endpoint")


ROUTE_FAMILIES = {
    "switchyard_route_active_target": "gauge",
    "switchyard_route_clients": "gauge",
    "switchyard_route_upstream_sessions": "gauge",
    "switchyard_route_transactions_total": "counter",
    "switchyard_route_bytes_total": "counter",
    "switchyard_route_errors_total": "counter",
    "switchyard_route_switches_total": "counter",
    "switchyard_route_last_switch_duration_seconds": "gauge",
    "switchyard_route_sessions_closed_at_deadline_total": "counter",
    "switchyard_route_sessions_moved_total": "counter",
    "switchyard_route_paused": "gauge",
    "switchyard_route_healthy": "gauge",
}


def test_metrics_exposition(ctx):
    st = Setup(ctx, pg_extra="pool = on\n")   # said, not assumed: a build may default it off
    pg = dict(route="pg", protocol="postgres")
    rd = dict(route="redis-store", protocol="redis")

    samples, types, text = scrape(st.metrics)
    for fam, typ in ROUTE_FAMILIES.items():
        check(types.get(fam) == typ, "family %s: type %s, want %s" % (fam, types.get(fam), typ))
    check(types.get("switchyard_clients") == "gauge" and types.get("switchyard_build_info") == "gauge",
          "global families missing: %s" % sorted(types))
    check(series(samples, "switchyard_build_info", version=re.search(r'version="([^"]+)"', text).group(1)) == 1,
          "build_info is not 1")
    for lab in (pg, rd):
        check(series(samples, "switchyard_route_active_target", target="builtin", **lab) == 1, "builtin not active")
        check(series(samples, "switchyard_route_active_target", target="external", **lab) == 0, "external active")
        for d in ("in", "out"):
            series(samples, "switchyard_route_bytes_total", direction=d, **lab)
        for k in ("connect", "lost", "protocol", "other"):
            series(samples, "switchyard_route_errors_total", kind=k, **lab)
        for fam in ROUTE_FAMILIES:
            if fam not in ("switchyard_route_active_target", "switchyard_route_bytes_total",
                           "switchyard_route_errors_total"):
                series(samples, fam, **lab)
        check(series(samples, "switchyard_route_switches_total", **lab) == 0, "switches before any switch")
    # The harness's readiness probe (a connect and close) may still be on its way out on
    # its worker loop; it must be gone shortly.
    deadline = time.monotonic() + 5
    while series(samples, "switchyard_clients") != 0:
        check(time.monotonic() < deadline, "clients before any client: %s" % series(samples, "switchyard_clients"))
        time.sleep(0.05)
        samples = scrape(st.metrics)[0]

    # Traffic, with one session of each kind held open while we scrape.
    for i in range(3):
        harness.psql_ok(st.pg, "SELECT %d" % i)
    check(redis_support.cli(st.rport, "SET", "k", "v").stdout.strip() == "OK", "redis SET through switchyard")
    # Pooling keeps the psql sessions' servers, reset, idle: wait until no
    # reset is running, and count them in what follows.
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(st.metrics)[0]
        busy = sum(series(samples, "switchyard_route_server_states", state=x, **pg) for x in ("active", "connecting"))
        if busy == 0:
            break
        check(time.monotonic() < deadline, "pg servers still resetting 5 s after psql left")
        time.sleep(0.05)
    idle0 = series(samples, "switchyard_route_server_states", state="idle", **pg)
    check(idle0 >= 1 and series(samples, "switchyard_route_pool_idle_servers", **pg) == idle0,
          "psql's servers not pooled: idle %s, pool_idle_servers %s"
          % (idle0, series(samples, "switchyard_route_pool_idle_servers", **pg)))
    w = harness.PgWire(st.pg).startup(database="sourcegraph")
    w.query("BEGIN")
    w.query("SELECT 1")
    w.query("COMMIT")
    r = redis_support.Resp(st.rport)
    check(r.cmd("GET", "k") == b"v", "redis GET through switchyard")
    samples, _, _ = scrape(st.metrics)
    check(series(samples, "switchyard_clients") == 2, "switchyard_clients %s with two sessions open"
          % series(samples, "switchyard_clients"))
    check(series(samples, "switchyard_route_clients", **pg) == 1, "pg route clients")
    check(series(samples, "switchyard_route_clients", **rd) == 1, "redis route clients")
    # PgWire sends no application_name: another pool key than psql's, so a server of its own
    check(series(samples, "switchyard_route_upstream_sessions", **pg) == 1 + idle0, "pg upstream sessions")
    check(series(samples, "switchyard_route_upstream_sessions", **rd) == 1, "redis upstream sessions")
    # ...and by state: each session's client relays (active) on an active server connection.
    for lab in (pg, rd):
        for state, want in (("active", 1), ("held", 0), ("moving", 0), ("closing", 0)):
            got = series(samples, "switchyard_route_client_states", state=state, **lab)
            check(got == want, "%s clients %s: %s, want %d" % (lab["route"], state, got, want))
        idle = idle0 if lab is pg else 0
        for state, want in (("connecting", 0), ("active", 1), ("idle", idle), ("closing", 0)):
            got = series(samples, "switchyard_route_server_states", state=state, **lab)
            check(got == want, "%s servers %s: %s, want %d" % (lab["route"], state, got, want))
    # psql ran 3 queries, PgWire 3 more: a ReadyForQuery relayed each.
    check(series(samples, "switchyard_route_transactions_total", **pg) >= 6,
          "pg transactions_total %s" % series(samples, "switchyard_route_transactions_total", **pg))
    # (Redis commands and bytes are counted by the sessions; their exact values are the
    # sessions' tests' business. Here: present, valid, never negative - checked above.)
    w.terminate()
    r.close()
    deadline = time.monotonic() + 5
    while series(scrape(st.metrics)[0], "switchyard_clients") != 0:
        check(time.monotonic() < deadline, "switchyard_clients not back to 0 after the sessions closed")
        time.sleep(0.1)

    # HEAD: the headers of GET, no body.
    h = http(st.metrics, "/metrics", method="HEAD")
    check(h.status == 200 and h.body == b"" and int(h.headers["content-length"]) > 100, "HEAD /metrics: %r" % h.raw)

    # The probes find both targets reachable.
    hz = wait_readyz(st.metrics, 200)
    check(hz.text == "ok\n", "/readyz body %r" % hz.text)
    lz = http(st.metrics, "/healthz")
    check(lz.status == 200 and lz.text == "ok\n", "/healthz (liveness): %d %r" % (lz.status, lz.text))
    samples, _, _ = scrape(st.metrics)
    check(series(samples, "switchyard_route_healthy", **pg) == 1, "pg route not healthy in metrics")
    check(series(samples, "switchyard_route_healthy", **rd) == 1, "redis route not healthy in metrics")
    st.sy.stop()


def test_readyz_unhealthy_route(ctx):
    """A dead active target makes /readyz 503 with the reason; /healthz (liveness) stays 200:
    the process serves, restarting it would not bring the target back."""
    closed = harness.closed_port()
    secret = "never-print-this-9"
    st = Setup(ctx, pg_builtin="host=127.0.0.1 port=%d sslmode=disable password=%s" % (closed, secret))
    hz = wait_readyz(st.metrics, 503)
    lines = hz.text.splitlines()
    check(len(lines) == 1, "/readyz should name the one bad route: %r" % hz.text)
    check(lines[0].startswith("route pg: 127.0.0.1:%d: " % closed), "/readyz line %r" % lines[0])
    lz = http(st.metrics, "/healthz")
    check(lz.status == 200 and lz.text == "ok\n", "/healthz with a dead target: %d %r (liveness must stay 200)"
          % (lz.status, lz.text))
    check(http(st.metrics, "/readyz", method="HEAD").status == 503, "HEAD /readyz with a dead target")
    check(len(lines[0]) > len("route pg: 127.0.0.1:%d: " % closed) + 5, "no cause in %r" % lines[0])
    # A client of the dead route gets its error, and the error counters see it.
    e, _ = harness.connect_error(st.pg)
    check(e.sqlstate == "08001", "client of a dead target: %s" % e)
    samples, _, text = scrape(st.metrics)
    pg = dict(route="pg", protocol="postgres")
    check(series(samples, "switchyard_route_healthy", **pg) == 0, "pg route healthy in metrics")
    check(series(samples, "switchyard_route_healthy", route="redis-store", protocol="redis") == 1,
          "redis route not healthy in metrics")
    errs = sum(series(samples, "switchyard_route_errors_total", kind=k, **pg)
               for k in ("connect", "lost", "protocol", "other"))
    check(errs >= 1, "errors_total of the pg route is %s after a refused client" % errs)
    check(secret not in text and secret not in hz.text, "a password in the metrics output")
    check(secret not in st.sy.log_text(), "a password in the log")
    st.sy.stop()


def test_switch_seen_in_metrics_and_readyz(ctx):
    """A route on external switched (FORCE) to a dead built-in: active_target and
    switches_total follow at once, and /readyz names the new target within a probe tick,
    not the old target's next 5 s round."""
    closed = harness.closed_port()
    st = Setup(ctx, pg_builtin="host=127.0.0.1 port=%d sslmode=disable" % closed,
               env=harness.external_env(ctx), pg_extra="env_prefix = \n")
    pg = dict(route="pg", protocol="postgres")
    wait_readyz(st.metrics, 200, timeout=15)
    samples, _, _ = scrape(st.metrics)
    check(series(samples, "switchyard_route_active_target", target="external", **pg) == 1, "not on external")
    check(series(samples, "switchyard_route_active_target", target="builtin", **pg) == 0, "builtin active")
    harness.psql_ok(st.pg, "SWITCH pg TO builtin FORCE", db="switchyard")
    samples, _, _ = scrape(st.metrics)
    check(series(samples, "switchyard_route_active_target", target="builtin", **pg) == 1, "builtin not active")
    check(series(samples, "switchyard_route_active_target", target="external", **pg) == 0, "external active")
    check(series(samples, "switchyard_route_switches_total", **pg) == 1, "switches_total after one SWITCH")
    check(series(samples, "switchyard_route_last_switch_duration_seconds", **pg) >= 0, "switch duration")
    hz = wait_readyz(st.metrics, 503, timeout=4, want="route pg: 127.0.0.1:%d: " % closed)
    check(len(hz.text.splitlines()) == 1, "/readyz names more than the pg route: %r" % hz.text)
    samples, _, _ = scrape(st.metrics)
    check(series(samples, "switchyard_route_healthy", **pg) == 0, "dead built-in reported healthy")
    st.sy.stop()


def test_http_errors_and_slow_clients(ctx):
    st = Setup(ctx)
    port = st.metrics
    r = http(port, "/nope")
    check(r.status == 404, "GET /nope: %d" % r.status)
    r = http(port, "/metrics", method="POST", headers="Host: x\r\nContent-Length: 3\r\n\r\nabc")
    check(r.status == 405 and "GET" in r.headers.get("allow", ""), "POST /metrics: %d %r" % (r.status, r.headers))
    r = http(port, "/healthz", method="DELETE")
    check(r.status == 405, "DELETE /healthz: %d" % r.status)
    r = http(port, "/readyz", method="DELETE")
    check(r.status == 405, "DELETE /readyz: %d" % r.status)
    r = http(port, "/readyzz")
    check(r.status == 404, "GET /readyzz: %d" % r.status)
    r = http(port, "/metrics", headers="")           # HTTP/1.1 without Host
    check(r.status == 400, "no Host: %d" % r.status)
    r = http(port, "/metrics?x=1")                   # a query string does not change the path
    check(r.status == 200, "GET /metrics?x=1: %d" % r.status)

    # Malformed and oversized heads: 400, then close.
    for bad in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)),
                b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
                b"GET /metrics\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
                b"GET /" + b"m" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        raw, _ = http_raw(port, bad)
        resp = Response(raw)
        check(resp.status == 400, "%r...: %d" % (bad[:40], resp.status))
    # Endless headers: cut off at 8 KiB, not read forever.
    raw, _ = http_raw(port, None, chunks=[b"GET /metrics HTTP/1.1\r\nHost: x\r\n"] + [b"X-A: b\r\n" * 200] * 10)
    check(Response(raw).status == 400, "endless headers")

    # A request sent one byte at a time is fine.
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    raw, _ = http_raw(port, None, chunks=[req[i:i + 1] for i in range(len(req))], pause=0.005)
    check(Response(raw).status in (200, 503), "byte-at-a-time request: %r" % raw[:100])

    # A slow client: a partial head gets 408 and a close after 2 s; an idle one just a close.
    raw, secs = http_raw(port, b"GET /metrics HTTP/1.1\r\nHo", timeout=15)
    check(1.5 <= secs <= 5.0, "partial head closed after %.1fs" % secs)
    check(Response(raw).status == 408, "partial head: %r" % raw[:100])
    raw, secs = http_raw(port, b"", timeout=15)
    check(1.5 <= secs <= 5.0 and raw == b"", "idle connection: %r after %.1fs" % (raw[:100], secs))

    # Garbage of every size from many clients at once; the proxy and the endpoint live on.
    socks = []
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(bytes((i * 7 + j) % 256 for j in range(i * 97)))
        socks.append(s)
    for s in socks:
        s.close()
    st.sy.check_alive()
    samples, _, _ = scrape(port)
    check(series(samples, "switchyard_clients") == 0, "metrics after garbage")
    harness.psql_ok(st.pg, "SELECT 1")

    # An idle HTTP connection does not hold up shutdown.
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    st.sy.stop()
    check(time.monotonic() - t0 < 3, "shutdown took %.1fs with an idle metrics connection" % (time.monotonic() - t0))
    idle.close()


test_http_errors_and_slow_clients.timeout = 90


def test_probes_answered_under_slowloris(ctx):
    """Waves of half-sent requests, more than the endpoint keeps open (512), must not make
    a liveness probe fail: the oldest incomplete request makes room for each newcomer.
    (Before, 64 half-sent requests made every probe fail until they timed out.)"""
    st = Setup(ctx)
    port = st.metrics
    for wave in range(3):
        socks = []
        try:
            for i in range(600):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Wave: %d" % wave)
                socks.append(s)
            for probe in ("/healthz", "/readyz", "/metrics"):
                r = http(port, probe)
                check(r.status == 200 or (probe == "/readyz" and r.status == 503),
                      "wave %d: GET %s answered %d while 600 requests hang half-sent" % (wave, probe, r.status))
        finally:
            for s in socks:
                s.close()
    samples, _, _ = scrape(port)
    evicted = series(samples, "switchyard_http_evicted_total")
    check(evicted is not None and evicted >= 3, "switchyard_http_evicted_total %r after three waves of 600" % evicted)
    st.sy.check_alive()
    harness.psql_ok(st.pg, "SELECT 1")
    st.sy.stop()


test_probes_answered_under_slowloris.timeout = 120


def test_metrics_listen_in_use(ctx):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        text = conf(port, harness.free_port(), ctx.builtin.conninfo(), harness.free_port(), "127.0.0.1:1")
        sy = harness.Switchyard(text, wait=False)
        try:
            rc = sy.proc.wait(timeout=20)
        except Exception:
            fail("switchyard kept running with its metrics port taken")
        log = sy.log_text()
        sy.cleanup()
        check(rc == 1, "exit status %s with the metrics port taken" % rc)
        want = "cannot listen on 127.0.0.1:%d for metrics: address already in use" % port
        check(want in log, "no %r in the log:\n%s" % (want, log[-1500:]))
    finally:
        busy.close()
