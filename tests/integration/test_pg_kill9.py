"""
test_pg_kill9.py - issue 8, the fault matrix: the upstream is killed with SIGKILL (the
machine dies, no message) mid-COPY in each direction and mid-pipeline. The client owed a
reply gets 08006 naming the route and target within a few seconds and its connection
closes (when the server's stream ended inside a message, the close alone: nothing can be
framed after half a message); a session on another route is untouched; no write the client saw acknowledged is
lost (checked on the restarted server).
"""

import socket
import struct
import time

import harness
from harness import PgError, PgWire, check

BOUND = 5.0


def _msg(typ, body):
    return typ + struct.pack("!I", len(body) + 4) + body


def _setup():
    # the harness's clusters run with fsync and synchronous_commit off; a write acknowledged
    # must survive SIGKILL here, so this one runs as a production server would
    doomed = harness.PgCluster("kill9", hba="trust", setup=False,
                               extra_conf="fsync = on\nsynchronous_commit = on")
    doomed.sql("CREATE DATABASE sourcegraph")
    doomed.sql("CREATE TABLE acked (id int PRIMARY KEY); CREATE TABLE bulk (v text);"
               "INSERT INTO bulk SELECT repeat('x', 100) FROM generate_series(1, 200000)", db="sourcegraph")
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(doomed.port), "PGUSER": "postgres", "PGSSLMODE": "disable"}
    return doomed, env


def _acked_writes(w, n):
    for i in range(n):
        w.query("INSERT INTO acked VALUES (%d)" % i)


def _expect_08006(w, t0, what, hostport, send=None):
    """Read (sending `send` chunks meanwhile if given) until an ErrorResponse and the close."""
    problems = []
    w.sock.settimeout(0.2)
    errs, closed, data = [], False, w.buf
    w.buf = b""
    while time.monotonic() - t0 < BOUND + 5:
        if send is not None:
            try:
                w.sock.send(send)
            except OSError:
                send = None
        try:
            chunk = w.sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    secs = time.monotonic() - t0
    errs = [e for e in harness.error_messages(_tail_messages(data))]
    states = [e.get("C") for e in errs]
    whole = _tail_messages(data) == data
    if "08006" not in states and not whole:
        # the server's stream ended inside a message: an ErrorResponse cannot be framed for
        # the client any more, and the close is what it gets (libpq: "server closed the
        # connection unexpectedly"), as direct
        pass
    elif "08006" not in states:
        problems.append("%s: errors %s, want 08006" % (what, states))
    else:
        m = [e for e in errs if e.get("C") == "08006"][0].get("M", "")
        if "route pg" not in m or hostport not in m:
            problems.append("%s: 08006 does not name the route and target: %r" % (what, m))
    if not closed:
        problems.append("%s: not closed" % what)
    elif secs > BOUND:
        problems.append("%s: closed after %.1f s, want within %.0f s" % (what, secs, BOUND))
    return problems


def _tail_messages(data):
    """The complete messages in data, from the first message boundary we can follow: COPY
    data and rows came before the error."""
    i = 0
    while i + 5 <= len(data):
        ln = struct.unpack("!I", data[i + 1:i + 5])[0]
        if ln < 4 or i + 1 + ln > len(data):
            break
        i += 1 + ln
    return data[:i]


def _case(ctx, what, start):
    doomed, env = _setup()
    sy = harness.start_default(ctx, env=env)
    hostport = "127.0.0.1:%d" % doomed.port
    w = PgWire(sy.port)
    w.startup(database="sourcegraph")
    _acked_writes(w, 50)
    bystander = PgWire(sy.port)
    bystander.startup(database="sourcegraph-codeintel")
    send = start(w)
    doomed.kill9()
    t0 = time.monotonic()
    problems = _expect_08006(w, t0, what, hostport, send)
    if bystander.query("SELECT current_setting('sy.cluster')") != [("builtin",)]:
        problems.append("bystander on another route: wrong answer")
    sy.check_alive()
    doomed.start()
    n = doomed.sql("SELECT count(*) FROM acked", db="sourcegraph")
    if n != "50":
        problems.append("acknowledged writes on the restarted server: %s of 50" % n)
    w.close()
    bystander.close()
    sy.stop()
    check(not problems, "\n".join(problems))


def test_kill9_mid_copy_in(ctx):
    """The client is streaming COPY FROM STDIN when the server dies."""
    def start(w):
        w.send_query("COPY bulk FROM STDIN")
        typ, _ = w.read_msg()
        check(typ == "G", "no CopyInResponse: %r" % typ)
        row = _msg(b"d", b"y" * 100 + b"\n")
        w.send(row * 100)
        return row * 50
    _case(ctx, "mid COPY FROM STDIN", start)


def test_kill9_mid_copy_out(ctx):
    """The server is streaming COPY TO STDOUT, and the client reads slowly, when it dies."""
    def start(w):
        w.send_query("COPY (SELECT v FROM bulk, generate_series(1, 20)) TO STDOUT")
        typ, _ = w.read_msg()
        check(typ == "H", "no CopyOutResponse: %r" % typ)
        w.read_msg()
        return None
    _case(ctx, "mid COPY TO STDOUT", start)


def test_kill9_mid_pipeline(ctx):
    """Extended-protocol pipeline: ten Parse/Bind/Execute with one Sync at the end, the last
    one slow, no reply read yet."""
    def start(w):
        out = b""
        for i in range(10):
            sql = ("SELECT pg_sleep(30)" if i == 9 else "INSERT INTO acked VALUES (%d)" % (1000 + i)).encode()
            out += _msg(b"P", b"\0" + sql + b"\0" + b"\0\0")
            out += _msg(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
            out += _msg(b"E", b"\0" + b"\0\0\0\0")
        out += _msg(b"S", b"")
        w.send(out)
        time.sleep(0.3)   # the pipeline reaches the server; what it did is rolled back by the kill
        return None
    _case(ctx, "mid pipeline", start)
