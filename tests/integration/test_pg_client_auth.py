"""
test_pg_client_auth.py - issue 8, client password checks: a client proves admin_password (or
a listener's auth_password) with SCRAM-SHA-256, as a Postgres server with
password_encryption = scram-sha-256 asks, so the secret never crosses the wire; a wrong
proof gets 28P01 after a back-off that grows with each failure; malformed SCRAM gets 08P01.
"""

import struct
import time

import harness
from harness import PgError, PgWire, check

PW = "adm-pw-scram"


def _start(ctx):
    port = harness.free_port()
    return harness.Switchyard(harness.default_pg_conf(port, ctx.builtin, globals_extra='admin_password = "%s"' % PW))


def _console(port, password):
    w = PgWire(port)
    t0 = time.monotonic()
    try:
        w.startup(database="switchyard", password=password)
        return None, time.monotonic() - t0, w
    except PgError as e:
        return e, time.monotonic() - t0, w


def test_console_password_is_scram(ctx):
    """The console over loopback asks with AuthenticationSASL offering SCRAM-SHA-256 only (no
    -PLUS: there is no channel to bind without TLS); the right password logs in and the
    server's signature checks out (PgWire verifies it); psql and the CLI log in too."""
    sy = _start(ctx)
    w = PgWire(sy.port)
    w.send(harness.startup_packet({"user": "postgres", "database": "switchyard"}))
    typ, body = w.read_msg()
    check(typ == "R" and struct.unpack("!I", body[:4])[0] == 10, "not asked with SASL: %r %r" % (typ, body))
    check(body[4:] == b"SCRAM-SHA-256\0\0", "mechanisms offered: %r" % body[4:])
    w.close()
    err, _, w = _console(sy.port, PW)
    check(err is None, "the right password was refused: %s" % err)
    check(w.query("SHOW ROUTES") != [], "SHOW ROUTES after SCRAM login")
    w.close()
    r = harness.psql(sy.port, "SHOW ROUTES", db="switchyard", env={"PGPASSWORD": PW})
    check(r.returncode == 0 and "pg" in r.stdout, "psql with the password: %r" % r.stderr)
    r = harness.psql(sy.port, "SHOW ROUTES", db="switchyard", env={"PGPASSWORD": PW, "PGCHANNELBINDING": "require"})
    check(r.returncode != 0 and "channel binding" in r.stderr,
          "channel_binding=require without TLS must fail as with Postgres: %r" % r.stderr)
    sy.stop()


def test_wrong_password_backs_off(ctx):
    """Each wrong password within a minute of the last waits twice as long before 28P01
    (250 ms, 500 ms, 1 s ...); the right password right after is not delayed."""
    sy = _start(ctx)
    waits = []
    for _ in range(3):
        err, secs, w = _console(sy.port, "guess-7fz")
        w.close()
        check(isinstance(err, PgError) and err.sqlstate == "28P01" and "password authentication failed" in err.message,
              "wrong password: %r" % (err,))
        waits.append(secs)
    check(waits[0] >= 0.2 and waits[1] >= 0.45 and waits[2] >= 0.95,
          "back-off did not grow: %s" % ["%.2f" % x for x in waits])
    err, secs, w = _console(sy.port, PW)
    w.close()
    check(err is None and secs < 1.5, "the right password after failures: %r in %.2f s" % (err, secs))
    sy.wait_log(r"event=auth_failed conn=\d+ listener=pg user=postgres console=1 delay_ms=1000",
                what="the third failure's log line")
    check(PW not in sy.log_text() and "guess-7fz" not in sy.log_text(),
          "a password reached the log")
    sy.stop()


def _msg(typ, body):
    return typ + struct.pack("!I", len(body) + 4) + body


def test_malformed_scram(ctx):
    """A mechanism we did not offer, channel binding we did not offer, an authzid, a body cut
    short, a proof for another nonce: FATAL 08P01 each, as Postgres, and nobody is in."""
    sy = _start(ctx)
    first = b"n,,n=,r=abcdefghijkl"
    cases = [
        ("SCRAM-SHA-1", _msg(b"p", b"SCRAM-SHA-1\0" + struct.pack("!I", len(first)) + first)),
        ("PLUS", _msg(b"p", b"SCRAM-SHA-256-PLUS\0" + struct.pack("!I", 30) + b"p=tls-server-end-point,,n=,r=ab")),
        ("channel binding", _msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", 30) + b"p=tls-server-end-point,,n=,r=ab")),
        ("authzid", _msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", 16) + b"n,a=x,n=,r=abcd")),
        ("length field", _msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", 999) + first)),
        ("not a password message", _msg(b"Q", b"SELECT 1\0")),
    ]
    problems = []
    for name, data in cases:
        w = PgWire(sy.port)
        w.send(harness.startup_packet({"user": "postgres", "database": "switchyard"}))
        w.read_msg()
        w.send(data)
        got, closed = w.read_until_close(timeout=10)
        errs = [e.get("C") for e in harness.error_messages(got)]
        if errs != ["08P01"] or not closed:
            problems.append("%s: errors %s closed=%s" % (name, errs, closed))
        w.close()
    # a client-final for another nonce
    w = PgWire(sy.port)
    w.send(harness.startup_packet({"user": "postgres", "database": "switchyard"}))
    w.read_msg()
    w.send(_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
    typ, body = w.read_msg()
    if typ != "R" or struct.unpack("!I", body[:4])[0] != 11:
        problems.append("no SASLContinue: %r" % typ)
    w.send(_msg(b"p", b"c=biws,r=abcdefghijklXXXX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
    got, closed = w.read_until_close(timeout=10)
    errs = [e.get("C") for e in harness.error_messages(got)]
    if errs != ["08P01"]:
        problems.append("nonce mismatch: errors %s" % errs)
    w.close()
    sy.check_alive()
    sy.stop()
    check(not problems, "\n".join(problems))
