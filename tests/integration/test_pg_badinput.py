"""
test_pg_badinput.py - issue 2, case 5 and the client-leg rules: malformed input on a raw socket
gets an error or a close (never a hang, never a crash); the proxy keeps serving others and its
memory does not grow. Also: bytes after SSLRequest before the answer (CVE-2021-23222),
GSSENCRequest answered N, NegotiateProtocolVersion for newer minor versions and _pq_ options.
"""

import random
import socket
import json
import os
import struct

import harness
from harness import PgWire, check, psql_ok, startup_packet

GOOD = {"user": "postgres", "database": "sourcegraph"}


def _random_garbage(seed, n=65536):
    rnd = random.Random(seed)
    data = bytearray(rnd.randbytes(n))
    data[0] = data[0] or 1   # a first length byte of 0 could be a plausible startup length
    return bytes(data)


def _bad_inputs():
    """(name, bytes to send, allowed SQLSTATEs if an ErrorResponse comes). Names starting with
    "after startup" begin with a good StartupMessage, so AuthenticationOk is expected there."""
    body = struct.pack("!I", harness.PROTO_3_0) + b"user\0postgres\0database\0sourcegraph\0"
    ok_startup = startup_packet(GOOD)
    return [
        ("random bytes", _random_garbage(1), None),
        ("random bytes 2", _random_garbage(2, 1 << 20), None),
        ("startup length 0", b"\0\0\0\0" + b"\0" * 12, ("08P01",)),
        ("startup length 3", b"\0\0\0\x03" + struct.pack("!I", harness.PROTO_3_0), ("08P01",)),
        ("startup length 2^31", struct.pack("!I", 1 << 31) + struct.pack("!I", harness.PROTO_3_0) + b"user\0x\0",
         ("08P01",)),
        ("startup length 2^32-1", b"\xff\xff\xff\xff" + struct.pack("!I", harness.PROTO_3_0), ("08P01",)),
        ("startup no terminator", struct.pack("!I", len(body) + 4) + body, ("08P01",)),
        ("startup unterminated value", struct.pack("!I", 4 + 4 + 13) + struct.pack("!I", harness.PROTO_3_0)
         + b"user\0postgres", ("08P01",)),
        ("protocol 2.0", startup_packet(GOOD, proto=0x00020000), ("08P01", "0A000")),
        ("protocol 4.0", startup_packet(GOOD, proto=0x00040000), ("08P01", "0A000")),
        ("unknown request code", struct.pack("!II", 8, 1234 << 16 | 1234), ("08P01", "0A000")),
        ("cancel request of wrong length", struct.pack("!III", 12, harness.CANCEL_REQUEST_CODE, 1), ("08P01",)),
        ("after startup: 1 GB message", ok_startup + b"Q" + struct.pack("!I", 1 << 30) + b"SELECT " * 100000,
         ("08P01", "54000")),
        ("after startup: message length 3", ok_startup + b"Q" + struct.pack("!I", 3) + b"abcdef", ("08P01",)),
        ("after startup: message length 2^32-1", ok_startup + b"P" + b"\xff\xff\xff\xff" + b"x" * 100, ("08P01",)),
    ]


def _send_bad(port, data, timeout=10.0):
    """Send data; return (received bytes, closed?). The peer must answer with an error or close
    within timeout, while we keep our side open (a half-closed client would hide a hang)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass   # closed on us while we were still sending: that is a close
        w = PgWire(port, sock=s)
        return w.read_until_close(timeout=timeout)
    finally:
        s.close()


def _judge(name, data, closed, allowed):
    """Error or close; an ErrorResponse, if any, carries an allowed SQLSTATE and no startup
    ever completes."""
    errs = harness.error_messages(data)
    problems = []
    if not closed:
        problems.append("%s: not closed within the timeout (got %r)" % (name, data[:200]))
    if b"R\0\0\0\x08\0\0\0\0" in data and not name.startswith("after startup"):
        problems.append("%s: got AuthenticationOk" % name)
    if errs and allowed:
        codes = [e.get("C") for e in errs]
        if not any(c in allowed for c in codes):
            problems.append("%s: SQLSTATE %s, want one of %s (%s)" % (name, codes, allowed, errs[0].get("M")))
    return problems


def test_bad_input(ctx):
    # ASan keeps freed memory in a quarantine (256 MB by default) that would look like growth;
    # a small one makes RSS reflect what the proxy holds.
    sy = harness.start_default(ctx, asan_extra="quarantine_size_mb=1")
    cases = _bad_inputs()
    problems = []

    def round_():
        for name, data, allowed in cases:
            got, closed = _send_bad(sy.port, data)
            problems.extend(_judge(name, got, closed, allowed))
            sy.check_alive()
        out = psql_ok(sy.port, "SELECT 'still serving'")
        if out != "still serving":
            problems.append("psql after bad input: %r" % out)

    round_()  # warm up: the first rounds allocate what the process keeps anyway
    check(not problems, "bad input:\n" + "\n".join(problems))
    # Pipe buffers (64 KiB) are taken only while bytes flow; under ASan they come from its
    # size-class allocator, which keeps what it once held and fills over a few rounds
    # (release builds map and unmap them: test_idle_memory checks RSS comes back there).
    for _ in range(5):
        round_()
    rss0 = sy.rss_kb()
    for _ in range(15):
        round_()
    rss1 = sy.rss_kb()
    check(not problems, "bad input (later rounds):\n" + "\n".join(problems[:20]))
    check(rss1 - rss0 < 4 * 1024, "RSS grew from %d kB to %d kB over 15 rounds of bad input" % (rss0, rss1))
    # a well-behaved session opened before the garbage is untouched by it
    with PgWire(sy.port) as w:
        w.startup(database="sourcegraph")
        for name, data, _a in cases[:4]:
            _send_bad(sy.port, data)
        check(w.query("SELECT 'untouched'") == [("untouched",)], "session next to bad input")
    sy.stop()


test_bad_input.timeout = 240


def test_bytes_after_sslrequest(ctx):
    """SSLRequest with a StartupMessage right behind it, before our answer: closed with an
    error (a buffered plaintext startup must not be processed, cf. CVE-2021-23222)."""
    sy = harness.start_default(ctx)
    ssl_req = struct.pack("!II", 8, harness.SSL_REQUEST_CODE)
    for extra in (startup_packet(GOOD), b"x", startup_packet(GOOD) + b"Q\0\0\0\x0dSELECT 1\0"):
        data, closed = _send_bad(sy.port, ssl_req + extra)
        check(closed, "not closed after bytes behind SSLRequest: %r" % data[:100])
        check(b"R\0\0\0\x08\0\0\0\0" not in data, "startup after SSLRequest+bytes went through: %r" % data[:200])
        errs = harness.error_messages(data)
        check(errs, "closed without an ErrorResponse: %r" % data[:100])
        check(errs[0].get("C") == "08P01", "SQLSTATE %s: %s" % (errs[0].get("C"), errs[0].get("M")))
    check(psql_ok(sy.port, "SELECT 1") == "1", "psql afterwards")
    sy.stop()


def test_sslrequest_and_gssencrequest_answered_n(ctx):
    sy = harness.start_default(ctx)
    with PgWire(sy.port) as w:
        check(w.ssl_request() == b"N", "SSLRequest not answered N")
        w.startup(database="sourcegraph")
        check(w.query("SELECT 1") == [("1",)], "after SSLRequest N")
    with PgWire(sy.port) as w:
        w.send(struct.pack("!II", 8, harness.GSSENC_REQUEST_CODE))
        check(w.read_byte() == b"N", "GSSENCRequest not answered N")
        check(w.ssl_request() == b"N", "SSLRequest after GSSENCRequest not answered N")
        w.startup(database="sourcegraph")
        check(w.query("SELECT 2") == [("2",)], "after GSSENCRequest N")
    # psql with gssencmode=prefer (libpq's default when built with GSS) also works
    check(psql_ok(sy.port, "SELECT 3", env={"PGGSSENCMODE": "prefer"}) == "3", "psql gssencmode=prefer")
    sy.stop()


def test_negotiate_protocol_version(ctx):
    """Protocol 3.x with x > 0 and unknown _pq_. options get NegotiateProtocolVersion and the
    session goes on with 3.0."""
    sy = harness.start_default(ctx)
    with PgWire(sy.port) as w:
        params = dict(GOOD)
        params["_pq_.sy_unknown"] = "1"
        w.send(startup_packet(params, proto=0x00030002))
        w.read_startup()
        check("v" in w.order, "no NegotiateProtocolVersion (messages: %s)" % "".join(w.order))
        nv = w.negotiate
        minor, n = struct.unpack("!II", nv[:8])
        check(minor == harness.PROTO_3_0 and n == 1 and nv[8:] == b"_pq_.sy_unknown\0",
              "NegotiateProtocolVersion body %r" % nv)
        check(w.query("SELECT 'negotiated'") == [("negotiated",)], "after negotiation")
    sy.stop()


def _answer(port, data, half_close):
    """What a server says to `data` sent before any startup: "silent" (closed without a
    byte) or the SQLSTATEs of its ErrorResponses."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if data:
            s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        got, closed = PgWire(port, sock=s).read_until_close(timeout=10)
    finally:
        s.close()
    check(closed, "port %d did not close after %r" % (port, data[:40]))
    if got == b"":
        return "silent"
    return ",".join(e.get("C", "?") for e in harness.error_messages(got)) or repr(got[:40])


def test_pre_startup_answers_as_postgres(ctx):
    """Before the startup message, answer exactly where Postgres answers and close silently
    where it does (issue 12 C: node-postgres crashed on an ErrorResponse that Postgres never
    sends to a client that ends at once)."""
    sy = harness.start_default(ctx)
    cases = [
        ("connect and close", b"", True),
        ("Terminate before the startup message", b"X\0\0\0\x04", True),
        ("three bytes, then EOF", b"\0\0\0", True),
        ("half a startup packet, then EOF", startup_packet(GOOD)[:12], True),
        ("startup length 0", b"\0\0\0\0" + b"\0" * 12, False),
        ("startup length 3", b"\0\0\0\x03" + struct.pack("!I", harness.PROTO_3_0), False),
        ("startup length 2^31", struct.pack("!I", 1 << 31) + struct.pack("!I", harness.PROTO_3_0), False),
        ("protocol 4.0", startup_packet(GOOD, proto=0x00040000), False),
        ("startup no terminator", struct.pack("!I", 4 + 4 + 14) + struct.pack("!I", harness.PROTO_3_0)
         + b"user\0postgres\0", False),
    ]
    diffs = []
    for name, data, half in cases:
        direct = _answer(ctx.builtin.port, data, half)
        via = _answer(sy.port, data, half)
        if direct != via:
            diffs.append("%s: Postgres %s, switchyard %s" % (name, direct, via))
    check(not diffs, "pre-startup answers differ from Postgres:\n" + "\n".join(diffs))
    sy.stop()


def _node_early_end(port):
    node_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node")
    script = harness.require_file(os.path.join(node_dir, "early_end.js"), "node script")
    harness.require_file(os.path.join(node_dir, "node_modules", "pg"), "node-postgres (scripts/install-deps.sh)")
    r = harness.run(["node", script, str(port)], timeout=30)
    check(r.returncode == 0, "node exited %s: %s" % (r.returncode, r.stderr[-800:]))
    return json.loads(r.stdout.strip().splitlines()[-1])["events"]


def test_node_postgres_ends_at_once(ctx):
    """issue 12 C with the client it broke: node-postgres ending before its startup sends
    Terminate first; direct, Postgres closes silently and the application sees nothing,
    through switchyard the same (an 08P01 of switchyard's own used to reject connect())."""
    sy = harness.start_default(ctx)
    for _ in range(3):
        direct, via = _node_early_end(ctx.builtin.port), _node_early_end(sy.port)
        check(direct == via and not any(e.startswith(("error", "connect:")) for e in via),
              "node-postgres ending at once: direct %s, switchyard %s" % (direct, via))
    sy.check_alive()
    sy.stop()
