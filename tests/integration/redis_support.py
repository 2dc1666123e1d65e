"""
redis_support.py - what the Redis integration tests share, on top of harness.py.

    redis_conf(routes, globals_extra="")    a switchyard config with one redis listener and
                                            route per entry of `routes` (see Route)
    start_proxy(builtin, env=..., ...)      switchyard with one route "redis-store" whose
                                            built-in is the RedisServer `builtin`
    Resp(port)                              a raw-socket RESP2/RESP3 client: send bytes or
                                            commands, read replies parsed or as raw bytes,
                                            see a close
    cli(port, *args)                        redis-cli towards switchyard
    commandstats(server), info(server, section)   what the upstream saw

Replies are parsed into Python values: simple strings -> Simple (a str), errors -> Err (a
str), integers -> int, bulk strings -> bytes, null -> None, arrays -> list, maps -> Map (a
list of (key, value) pairs), sets -> Set, pushes -> Push, doubles -> float, big numbers ->
BigNum, booleans -> bool, verbatim strings -> Verbatim (bytes), attributes -> Attr(attrs,
value). Resp.read() also keeps the raw bytes of the reply in Resp.last_raw.
"""

import hashlib
import os
import socket
import select
import threading
import time

import harness
from harness import check, fail


# --------------------------------------------------------------------------------------------
# config

class Route:
    """One redis listener + route: name, listen port, built-in endpoint, and extra lines for
    the route section (external_tls_ca_file = ..., client_password = ...)."""

    def __init__(self, name, port, builtin, external_env=None, extra=""):
        self.name = name
        self.port = port
        self.builtin = builtin
        self.external_env = external_env
        self.extra = extra


def redis_conf(routes, globals_extra=""):
    out = ["[switchyard]", "metrics_listen = off", "drain_timeout = 2", globals_extra, ""]
    for r in routes:
        out += ["[listener %s]" % r.name, "protocol = redis", "listen = 127.0.0.1:%d" % r.port, ""]
        out += ["[route %s]" % r.name, "listener = %s" % r.name, "builtin = %s" % r.builtin]
        if r.external_env:
            out.append("external_env = %s" % r.external_env)
        if r.extra:
            out.append(r.extra)
        out.append("")
    return "\n".join(out) + "\n"


def endpoint(server, tls=False):
    """host:port of a RedisServer (the TLS port with tls)."""
    return "127.0.0.1:%d" % (server.tls_port if tls else server.port)


def start_proxy(builtin, env=None, extra="", globals_extra="", name="redis-store",
                external_env="REDIS_STORE_ENDPOINT,REDIS_ENDPOINT", **kw):
    """switchyard with one redis route `name` on a free port; `builtin` is a RedisServer or
    an endpoint string. env: REDIS_ENDPOINT and friends."""
    port = harness.free_port()
    b = builtin if isinstance(builtin, str) else endpoint(builtin)
    conf = redis_conf([Route(name, port, b, external_env, extra)], globals_extra)
    return harness.Switchyard(conf, env=env, **kw)


def cli(port, *args, input=None, timeout=60, extra=()):
    """redis-cli -h 127.0.0.1 -p port [extra] args... (text; CompletedProcess)."""
    argv = [harness.REDIS_CLI, "-h", "127.0.0.1", "-p", str(port)] + list(extra) + [str(a) for a in args]
    return harness.run(argv, env=harness.clean_env(), timeout=timeout, input=input)


def cli_ok(port, *args, **kw):
    r = cli(port, *args, **kw)
    check(r.returncode == 0, "redis-cli %s exited %d: %s %s" % (" ".join(map(str, args)), r.returncode,
                                                             r.stdout[-500:], r.stderr[-500:]))
    out = r.stdout.strip()
    check(not out.startswith("(error)") and not out.startswith("ERR"),
          "redis-cli %s: %s" % (" ".join(map(str, args)), out[:500]))
    return out


def info(server, section, **kw):
    """INFO <section> of a RedisServer (direct) as a dict."""
    r = server.cli("INFO", section, **kw)
    check(r.returncode == 0, "INFO %s on the upstream failed: %s" % (section, r.stderr))
    d = {}
    for line in r.stdout.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            d[k] = v
    return d


def commandstats(server, **kw):
    """{command: calls} from INFO commandstats (names lowercase, subcommands as a|b)."""
    out = {}
    for k, v in info(server, "commandstats", **kw).items():
        if k.startswith("cmdstat_"):
            fields = dict(f.split("=", 1) for f in v.split(","))
            out[k[len("cmdstat_"):]] = int(fields["calls"])
    return out


def client_info_fields(line):
    """'id=5 addr=... db=2 ...' -> dict."""
    if isinstance(line, bytes):
        line = line.decode()
    d = {}
    for tok in line.strip().split(" "):
        if "=" in tok:
            k, v = tok.split("=", 1)
            d[k] = v
    return d


# --------------------------------------------------------------------------------------------
# RESP values

class Simple(str):
    pass


class Err(str):
    pass


class Map(list):
    pass


class Set(list):
    pass


class Push(list):
    pass


class BigNum(int):
    pass


class Verbatim(bytes):
    pass


class Attr:
    def __init__(self, attrs, value):
        self.attrs = attrs
        self.value = value

    def __repr__(self):
        return "Attr(%r, %r)" % (self.attrs, self.value)


class Incomplete(Exception):
    pass


class ProtocolError(Exception):
    pass


def encode(*args):
    """A RESP multibulk command."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


def _line(buf, pos):
    i = buf.find(b"\r\n", pos)
    if i < 0:
        raise Incomplete()
    return bytes(buf[pos:i]), i + 2


def parse(buf, pos=0, depth=0):
    """One reply from buf[pos:] -> (value, end). Raises Incomplete or ProtocolError."""
    if pos >= len(buf):
        raise Incomplete()
    t = buf[pos:pos + 1]
    line, p = _line(buf, pos + 1)
    if t == b"+":
        return Simple(line.decode("utf-8", "replace")), p
    if t == b"-":
        return Err(line.decode("utf-8", "replace")), p
    if t == b":":
        return int(line), p
    if t == b",":
        return float(line.replace(b"inf", b"inf")), p
    if t == b"(":
        return BigNum(int(line)), p
    if t == b"#":
        return line == b"t", p
    if t == b"_":
        return None, p
    if t in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            return None, p
        if len(buf) < p + n + 2:
            raise Incomplete()
        data = bytes(buf[p:p + n])
        if buf[p + n:p + n + 2] != b"\r\n":
            raise ProtocolError("bulk not followed by CRLF at %d" % (p + n))
        if t == b"=":
            return Verbatim(data), p + n + 2
        if t == b"!":
            return Err(data.decode("utf-8", "replace")), p + n + 2
        return data, p + n + 2
    if t in (b"*", b"~", b">", b"%", b"|"):
        n = int(line)
        if n < 0:
            return None, p
        count = n * 2 if t in (b"%", b"|") else n
        items = []
        for _ in range(count):
            v, p = parse(buf, p, depth + 1)
            items.append(v)
        if t == b"*":
            return items, p
        if t == b"~":
            return Set(items), p
        if t == b">":
            return Push(items), p
        pairs = Map(list(zip(items[0::2], items[1::2])))
        if t == b"%":
            return pairs, p
        v, p = parse(buf, p, depth + 1)
        return Attr(pairs, v), p
    raise ProtocolError("unknown RESP type %r at %d: %r" % (t, pos, bytes(buf[pos:pos + 40])))


# --------------------------------------------------------------------------------------------
# a raw-socket client

class Closed(Exception):
    pass


class Resp:
    """
    A RESP client on a raw socket (no library between the test and the bytes).

        r = Resp(port); r.cmd("SET", "a", "b") -> Simple("OK")
        r.send(b"raw bytes") / r.send_cmds([("GET", "a"), ...]); r.read(timeout) -> value
        r.read_raw(n) -> the raw bytes of the next n replies
        r.expect_close(timeout) -> bytes received before the close (fails if none comes)
    """

    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.last_raw = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_cmds(self, cmds):
        self.sock.sendall(b"".join(encode(*c) for c in cmds))

    def _fill(self, deadline):
        if self.eof:
            raise Closed("connection closed by peer")
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no reply within the deadline")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(1 << 20)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            raise Closed("connection closed by peer")
        if self.pos > (1 << 20) and self.pos > len(self.buf) // 2:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += d

    def read(self, timeout=None, what=None):
        """The next reply; raises Closed on EOF, fails on a timeout (naming `what`)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            try:
                v, end = parse(self.buf, self.pos)
                self.last_raw = bytes(self.buf[self.pos:end])
                self.pos = end
                return v
            except Incomplete:
                pass
            try:
                self._fill(deadline)
            except socket.timeout:
                fail("%sno complete reply from port %d within %.1fs (have %r)"
                     % (what + ": " if what else "", self.port, timeout if timeout is not None else self.timeout,
                        bytes(self.buf[self.pos:self.pos + 200])))

    def read_raw(self, n=1, timeout=None):
        out = []
        for _ in range(n):
            self.read(timeout)
            out.append(self.last_raw)
        return b"".join(out)

    def cmd(self, *args, timeout=None):
        self.send(encode(*args))
        return self.read(timeout)

    def ok(self, *args, timeout=None):
        v = self.cmd(*args, timeout=timeout)
        check(not isinstance(v, Err), "%s -> %s" % (" ".join(map(str, args))[:200], v))
        return v

    def nothing_for(self, secs):
        """True when no byte arrives (and no close) for `secs`."""
        if self.pos < len(self.buf):
            return False
        r, _, _ = select.select([self.sock], [], [], secs)
        return not r

    def expect_close(self, timeout=10.0):
        """Read until EOF; returns the bytes seen. Fails if the peer keeps the connection open."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except Closed:
                break
            except socket.timeout:
                fail("connection to port %d not closed within %.0fs (received %r)"
                     % (self.port, timeout, bytes(self.buf[self.pos:self.pos + 300])))
        data = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return data

    def read_all_replies(self, data):
        """Parse every reply in `data` (bytes already read)."""
        out, p = [], 0
        while p < len(data):
            v, p = parse(data, p)
            out.append(v)
        return out


def is_closed(sock_or_resp, timeout=5.0):
    """Wait up to timeout for EOF on a Resp; True if closed."""
    r = sock_or_resp
    try:
        r.expect_close(timeout)
        return True
    except harness.TestFailure:
        return False


# --------------------------------------------------------------------------------------------
# misc

def wait_for(pred, timeout=10.0, what="condition", interval=0.05):
    """harness.wait_until, under the name the Redis tests use."""
    return harness.wait_until(pred, timeout, what, interval)


def wait_blocked(server, n=1, timeout=10):
    """Wait until n clients are blocked (BLPOP and friends) on a RedisServer."""
    wait_for(lambda: info(server, "clients").get("blocked_clients") == str(n), timeout=timeout,
             what="%d blocked client(s) on port %d" % (n, server.port))


def still_serving(port, tag="alive"):
    """A fresh client through switchyard can SET and GET."""
    with Resp(port, timeout=10) as r:
        k = "still-serving:%s:%f" % (tag, time.time())
        v = r.cmd("SET", k, tag)
        check(v == "OK", "SET through switchyard on a fresh connection answered %r" % (v,))
        v = r.cmd("GET", k)
        check(v == tag.encode(), "GET through switchyard on a fresh connection answered %r" % (v,))


class Monitor:
    """MONITOR on a RedisServer directly, collecting lines in a thread. .stop() returns the
    lines of every command the server executed before it was called."""

    def __init__(self, server):
        self.server = server
        self.lines = []
        self.r = Resp(server.port, timeout=10)
        if server.password:
            check(self.r.cmd("AUTH", server.password) == "OK", "AUTH on the upstream for MONITOR")
        check(self.r.cmd("MONITOR") == "OK", "MONITOR on the upstream")
        self.stopped = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopped:
            try:
                v = self.r.read(timeout=0.3)
            except harness.TestFailure:
                continue
            except (Closed, OSError):
                return
            self.lines.append(str(v))

    def stop(self):
        # Redis feeds MONITOR in execution order: once a marker command sent now shows up,
        # every line before it has arrived. The marker connection's own lines (an AUTH when
        # the server has a password, the ECHO) are left out of the result.
        marker = "monitor-marker-%d-%f" % (os.getpid(), time.time())
        with Resp(self.server.port, timeout=10) as m:
            me = " 127.0.0.1:%d]" % m.sock.getsockname()[1]
            if self.server.password:
                check(m.cmd("AUTH", self.server.password) == "OK", "AUTH on the upstream for the MONITOR marker")
            check(m.cmd("ECHO", marker) == marker.encode(), "ECHO of the MONITOR marker")
            wait_for(lambda: any(marker in l for l in list(self.lines)), 10,
                     "MONITOR on port %d to show the marker ECHO" % self.server.port)
        self.stopped = True
        self.t.join(timeout=3)
        self.r.close()
        return [l for l in self.lines if me not in l]


def sha256_stream(chunks):
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return n, h.hexdigest()


def redis_tool(name):
    return harness.tool(name)


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def getenv_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
