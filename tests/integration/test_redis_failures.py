"""
test_redis_failures.py - issue 3, case 11 and client AUTH: the errors a Redis client sees.

    unreachable endpoint      -ERR switchyard: route <r>: cannot connect to <host:port>: <cause>
    wrong password / ACL      the same, with Redis's WRONGPASS as the cause
    TLS with the wrong CA     the same, mentioning certificate verify failed
    upstream SIGKILLed        every pending command gets -ERR and the connection goes on,
                              waiting for the upstream (reconnect_window); when the window
                              runs out the next command gets -ERR and the close; sessions of
                              other routes go on
    client_password           -NOAUTH before AUTH, WRONGPASS for a wrong one, +OK for the right
                              one, and the upstream never sees the client's AUTH

The error reaches the client's first command and the connection then closes: never a silent
close. The connect errors are those of reconnect_window = 0 (at once; with a window, a new
client waits for an unreachable target first: test_redis_reconnect). Passwords appear in no message and no log line.
"""

import re
import signal
import socket

import harness
from harness import check, fail
import redis_support as rs
from redis_support import Resp, encode, Err


def _connect_error(port, route="redis-store"):
    """Send one command; the reply must be the switchyard connect error, then a close.
    Returns the error text (without the leading '-')."""
    with Resp(port, timeout=30) as r:
        r.send(encode("PING"))
        data = r.expect_close(30)
    check(data.startswith(b"-ERR switchyard: route %s: cannot connect to " % route.encode()) and data.endswith(b"\r\n")
          and data.count(b"\r\n") == 1,
          "expected exactly one '-ERR switchyard: route %s: cannot connect to ...' then a close, got %r" % (route, data))
    return data[1:-2].decode()


def test_unreachable_endpoint(ctx):
    port = harness.closed_port()
    sy = rs.start_proxy("127.0.0.1:1", env={"REDIS_ENDPOINT": "127.0.0.1:%d" % port},
                        globals_extra="reconnect_window = 0")   # the error at once
    msg = _connect_error(sy.port)
    want = "ERR switchyard: route redis-store: cannot connect to 127.0.0.1:%d: Connection refused" % port
    check(msg == want, "unreachable endpoint: %r, expected %r" % (msg, want))
    # redis-cli shows it too, and pipelined commands behind the first get the same single
    # error and a close (nothing goes anywhere)
    r = rs.cli(sy.port, "SET", "a", "b")
    check(want in r.stdout + r.stderr, "redis-cli through an unreachable endpoint: %r %r" % (r.stdout, r.stderr))
    with Resp(sy.port) as c:
        c.send(encode("SET", "a", "b") + encode("GET", "a") + b"PING\r\n")
        data = c.expect_close(30)
    check(data == ("-" + want + "\r\n").encode(), "pipelined commands to an unreachable endpoint got %r" % data)
    # a client that connects and sends nothing is not kept forever, and switchyard lives on
    sy.check_alive()
    sy.stop()


def test_wrong_password(ctx):
    server = harness.RedisServer(password="right-Pw-1", acl=["user bob on >bob-Pw-2 ~* +@all"])
    port_pw, port_acl = harness.free_port(), harness.free_port()
    conf = rs.redis_conf([
        rs.Route("redis-store", port_pw, "127.0.0.1:1", "REDIS_STORE_ENDPOINT"),
        rs.Route("redis-cache", port_acl, "127.0.0.1:1", "REDIS_CACHE_ENDPOINT"),
    ])
    env = {"REDIS_STORE_ENDPOINT": "redis://:wrong-Pw-3@127.0.0.1:%d" % server.port,
           "REDIS_CACHE_ENDPOINT": "redis://bob:wrong-Pw-4@127.0.0.1:%d/1" % server.port}
    sy = harness.Switchyard(conf, env=env)
    for route, port in (("redis-store", port_pw), ("redis-cache", port_acl)):
        msg = _connect_error(port, route)
        check(msg.startswith("ERR switchyard: route %s: cannot connect to 127.0.0.1:%d: WRONGPASS" % (route, server.port)),
              "wrong password on %s: %r" % (route, msg))
        check("wrong-Pw" not in msg and "right-Pw" not in msg, "the password is in the error: %r" % msg)
    log = sy.log_text()
    check("wrong-Pw" not in log, "a password appears in switchyard's log")
    # Redis logged the failed ACL attempts as bob and default: the right server was asked
    r = server.cli("ACL", "LOG")
    check("bob" in r.stdout and "default" in r.stdout, "upstream ACL LOG has no failed AUTH for bob/default: %r" % r.stdout)
    sy.stop()


def test_tls_wrong_ca(ctx):
    server = harness.RedisServer(tls=ctx.tls)     # certificate signed by CA A
    port_b, port_plain = harness.free_port(), harness.free_port()
    conf = rs.redis_conf([
        rs.Route("redis-store", port_b, "127.0.0.1:1", "REDIS_STORE_ENDPOINT",
                 "external_tls_ca_file = %s" % ctx.tls.ca_b),
        rs.Route("redis-cache", port_plain, "127.0.0.1:1", "REDIS_CACHE_ENDPOINT",
                 "external_tls_ca_file = %s" % ctx.tls.ca_a),
    ], globals_extra="connect_timeout = 2")
    env = {"REDIS_STORE_ENDPOINT": "rediss://localhost:%d" % server.tls_port,
           # TLS towards the plain port: the handshake cannot succeed (Redis waits for the
           # end of an "inline command", so this ends in the connect timeout)
           "REDIS_CACHE_ENDPOINT": "rediss://localhost:%d" % server.port}
    sy = harness.Switchyard(conf, env=env)
    msg = _connect_error(port_b)
    check(msg.startswith("ERR switchyard: route redis-store: cannot connect to localhost:%d: " % server.tls_port)
          and "certificate verify failed" in msg, "TLS with a server certificate from another CA: %r" % msg)
    msg = _connect_error(port_plain, "redis-cache")
    check(msg.startswith("ERR switchyard: route redis-cache: cannot connect to localhost:%d: " % server.port)
          and ("TLS" in msg or "timeout expired" in msg), "TLS towards a plain port: %r" % msg)
    sy.stop()


def test_upstream_killed_mid_pipeline(ctx):
    victim = harness.RedisServer()
    other = harness.RedisServer()
    port_v, port_o = harness.free_port(), harness.free_port()
    sy = harness.Switchyard(rs.redis_conf([
        rs.Route("redis-store", port_v, rs.endpoint(victim)),
        rs.Route("redis-cache", port_o, rs.endpoint(other)),
    ], globals_extra="reconnect_window = 2"))
    bystander = Resp(port_o)
    bystander.ok("SET", "b", "1")
    r = Resp(port_v)
    r.send_cmds([("SET", "a", "1"), ("GET", "a")])
    check([r.read(), r.read()] == ["OK", b"1"], "replies before the kill")
    # a blocked command, and commands queued behind it that Redis will never answer
    npend = 6
    r.send_cmds([("BLPOP", "never", "0")] + [("PING",)] * (npend - 1))
    check(r.nothing_for(0.5), "something answered while BLPOP blocked: %r" % bytes(r.buf[r.pos:]))
    victim.proc.kill_group(signal.SIGKILL)
    # each command in flight gets -ERR (issue 10: the connection goes on, waiting for the
    # upstream within reconnect_window)
    replies = [r.read(timeout=15) for _ in range(npend)]
    pat = re.compile(r"^ERR switchyard: route redis-store: connection to 127\.0\.0\.1:%d lost" % victim.port)
    check(all(isinstance(x, Err) and pat.match(x) for x in replies),
          "after SIGKILL of the upstream, %d pending commands got %r" % (npend, replies))
    check(r.nothing_for(0.3), "more than one reply per pending command: %r" % bytes(r.buf[r.pos:]))
    # the server stays dead: the next command gets the error when the window has run out
    r.send_cmds([("PING",)])
    data = r.expect_close(15)
    check(data.startswith(b"-ERR switchyard: route redis-store: connection to 127.0.0.1:%d lost and not back within "
                          b"reconnect_window" % victim.port) and data.count(b"\r\n") == 1,
          "the command after the kill, once the window ran out, got %r" % data)
    r.close()
    # other sessions are untouched; the dead route answers new clients with the connect error
    check(bystander.cmd("GET", "b") == b"1", "a session of another route was disturbed")
    rs.still_serving(port_o)
    msg = _connect_error(port_v)
    check("Connection refused" in msg, "new client of the dead route: %r" % msg)
    bystander.close()
    sy.stop()


def test_upstream_killed_during_big_reply(ctx):
    """The upstream dies in the middle of a reply: the client must not take the partial
    bytes for a complete reply, and the connection closes."""
    victim = harness.RedisServer()
    sy = rs.start_proxy(victim)
    victim.cli("SETRANGE", "big", str(50 * 1024 * 1024), "x")
    s = Resp(sy.port)
    s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.send(encode("GET", "big") + encode("PING"))
    # Redis is writing (the reply waits in its output buffer); we are not reading, so it
    # cannot finish
    rs.wait_for(lambda: any(int(rs.client_info_fields(l).get("omem", "0")) > 0
                            for l in victim.cli("CLIENT", "LIST").stdout.splitlines()), 10,
                "the upstream to be writing the 50 MB reply (a client with omem > 0 in CLIENT LIST)")
    victim.proc.kill_group(signal.SIGKILL)
    data = s.expect_close(20)
    check(not data.endswith(b"+PONG\r\n"), "PING answered after a truncated reply")
    if data:
        check(data.startswith(b"$%d\r\n" % (50 * 1024 * 1024 + 1)), "reply to GET big starts %r" % data[:50])
        body = len(data) - data.index(b"\r\n") - 2
        check(body < 50 * 1024 * 1024 + 1, "the whole value arrived although the upstream was killed")
    sy.stop()


def test_client_auth(ctx):
    server = harness.RedisServer()
    sy = rs.start_proxy(server, extra="client_password = app-Secret-7")
    mon = rs.Monitor(server)
    with Resp(sy.port) as r:
        v = r.cmd("PING")
        check(isinstance(v, Err) and v.startswith("NOAUTH"), "PING before AUTH: %r" % r.last_raw)
        v = r.cmd("GET", "x")
        check(isinstance(v, Err) and v.startswith("NOAUTH"), "GET before AUTH: %r" % r.last_raw)
        v = r.cmd("AUTH", "nope")
        check(isinstance(v, Err) and v.startswith("WRONGPASS"), "wrong AUTH: %r" % r.last_raw)
        v = r.cmd("PING")
        check(isinstance(v, Err) and v.startswith("NOAUTH"), "PING after a wrong AUTH: %r" % r.last_raw)
        check(r.cmd("AUTH", "app-Secret-7") == "OK", "right AUTH: %r" % r.last_raw)
        check(r.cmd("SET", "authed", "yes") == "OK", "SET after AUTH: %r" % r.last_raw)
        check(r.cmd("AUTH", "default", "app-Secret-7") == "OK", "AUTH default <right>: %r" % r.last_raw)
    with Resp(sy.port) as r:
        # pipelined: before, the AUTH, after
        r.send(encode("PING") + encode("AUTH", "app-Secret-7") + encode("GET", "authed") + b"AUTH nope\r\n")
        got = [r.read() for _ in range(4)]
        check(isinstance(got[0], Err) and got[0].startswith("NOAUTH") and got[1:3] == ["OK", b"yes"]
              and isinstance(got[3], Err) and got[3].startswith("WRONGPASS"), "pipelined AUTH sequence: %r" % got)
    with Resp(sy.port) as r:
        v = r.cmd("HELLO", "3", "AUTH", "default", "nope")
        check(isinstance(v, Err) and v.startswith("WRONGPASS"), "HELLO 3 AUTH with a wrong password: %r" % r.last_raw)
        v = r.cmd("HELLO", "3", "AUTH", "default", "app-Secret-7", "SETNAME", "hello-client")
        check(r.last_raw[:1] == b"%" and dict(v).get(b"proto") == 3, "HELLO 3 AUTH right: %r" % r.last_raw[:100])
        check(r.cmd("GET", "authed") == b"yes", "GET after HELLO AUTH: %r" % r.last_raw)
        check(r.cmd("CLIENT", "GETNAME") == b"hello-client", "SETNAME in HELLO did not reach the upstream: %r" % r.last_raw)
    out = rs.cli_ok(sy.port, "GET", "authed", extra=["-a", "app-Secret-7", "--no-auth-warning"])
    check(out == "yes", "redis-cli -a through switchyard: %r" % out)
    r = rs.cli(sy.port, "GET", "authed")
    check("NOAUTH" in r.stdout + r.stderr, "redis-cli without -a: %r" % r.stdout)
    lines = mon.stop()
    stats = rs.commandstats(server)
    check("auth" not in stats, "the upstream executed AUTH %s times: %r" % (stats.get("auth"), stats))
    check(stats.get("hello", 0) >= 1, "HELLO did not reach the upstream: %r" % stats)
    text = "\n".join(lines)
    check("app-Secret-7" not in text and "nope" not in text and '"auth"' not in text.lower(),
          "the upstream saw the client's AUTH:\n%s" % text[-2000:])
    check('"set" "authed" "yes"' in text.lower(), "MONITOR did not see the client's commands:\n%s" % text[-2000:])
    check("app-Secret-7" not in sy.log_text(), "the client password appears in switchyard's log")
    sy.stop()


def test_client_auth_hello_needs_auth(ctx):
    """With client_password set, HELLO without AUTH is a command before AUTH: -NOAUTH, as
    Redis answers it, and nothing about the upstream (version, id) reaches the client."""
    server = harness.RedisServer()
    sy = rs.start_proxy(server, extra="client_password = app-Secret-7")
    with Resp(sy.port) as r:
        v = r.cmd("HELLO", "3")
        check(isinstance(v, Err) and v.startswith("NOAUTH"),
              "HELLO 3 before AUTH answered %r, expected -NOAUTH" % r.last_raw[:120])
        v = r.cmd("PING")
        check(isinstance(v, Err) and v.startswith("NOAUTH"), "PING after HELLO 3 without AUTH: %r" % r.last_raw)
    sy.stop()


def test_auth_inside_multi(ctx):
    """AUTH inside MULTI is queued like any command: +QUEUED, and EXEC's array has its +OK.
    Answering +OK at once shifts every reply of the transaction for the client."""
    server = harness.RedisServer()
    sy = rs.start_proxy(server, extra="client_password = app-Secret-7")
    with Resp(sy.port) as r:
        check(r.cmd("AUTH", "app-Secret-7") == "OK", "AUTH")
        r.send_cmds([("MULTI",), ("SET", "m", "1"), ("AUTH", "app-Secret-7"), ("INCR", "m"), ("EXEC",)])
        got = [r.read(timeout=5) for _ in range(5)]
        check(got == ["OK", "QUEUED", "QUEUED", "QUEUED", ["OK", "OK", 2]],
              "MULTI / SET / AUTH / INCR / EXEC answered %r, expected +OK +QUEUED x3 and [OK, OK, 2]" % got)
    sy.stop()


def test_server_closes_idle_client_silently(ctx):
    """CLIENT KILL of an idle client's server connection: Redis itself closes without a
    word, and so must switchyard (an -ERR would be taken as the reply to the client's next
    command: redis-py raised ResponseError instead of ConnectionError)."""
    import redis as redispy
    server = harness.RedisServer()
    # the client's own upstream is killed; reconnect_window = 0 closes it as Redis does
    # (with a window it is reconnected instead: test_redis_reconnect)
    sy = rs.start_proxy(server, extra="multiplex = off", globals_extra="reconnect_window = 0")

    def kill_others(keep_names):
        for line in server.cli("CLIENT", "LIST").stdout.splitlines():
            f = rs.client_info_fields(line)
            if f.get("cmd") != "client|list" and f.get("name") not in keep_names:
                server.cli("CLIENT", "KILL", "ID", f["id"])

    seen = {}
    for via, port in (("direct", server.port), ("switchyard", sy.port)):
        c = Resp(port)
        check(c.cmd("SET", "k", via) == "OK", "SET %s" % via)
        kill_others(())
        seen[via] = c.expect_close(15)
        c.close()
    check(seen["switchyard"] == seen["direct"] == b"",
          "an idle client whose server connection was killed got %r (direct: %r)" % (seen["switchyard"], seen["direct"]))

    # redis-py: the next command fails as a lost connection, or reconnects; never an error reply
    r = redispy.Redis(host="127.0.0.1", port=sy.port, socket_timeout=10, client_name="py")
    check(r.set("k2", "v") is True, "redis-py SET through switchyard")
    mark = sy.log_size()
    kill_others(())
    sy.wait_log(r"event=upstream_lost .*owed=0", since=mark, timeout=10, what="the idle session's quiet close")
    try:
        got = r.get("k2")
        check(got == b"v", "redis-py GET after reconnecting: %r" % got)
    except redispy.exceptions.ConnectionError:
        pass
    except redispy.exceptions.ResponseError as e:
        fail("redis-py took switchyard's error for a reply: %s" % e)
    r.close()
    sy.stop()


def test_shared_upstream_killed_idle_clients_carry_on(ctx):
    """With multiplexing, CLIENT KILL of the shared upstream owes the idle clients behind it
    nothing: they stay connected, and their next command goes over a new shared upstream."""
    server = harness.RedisServer()
    sy = rs.start_proxy(server, extra="multiplex = on")
    clients = [Resp(sy.port) for _ in range(5)]
    for i, c in enumerate(clients):
        check(c.cmd("SET", "k%d" % i, "v%d" % i) == "OK", "SET through the shared upstream")
    mark = sy.log_size()
    for line in server.cli("CLIENT", "LIST").stdout.splitlines():
        f = rs.client_info_fields(line)
        if f.get("cmd") != "client|list":
            server.cli("CLIENT", "KILL", "ID", f["id"])
    sy.wait_log(r"event=upstream_lost conn=shared route=redis-store", since=mark, timeout=10,
                what="switchyard to see the kill")
    for i, c in enumerate(clients):
        got = c.cmd("GET", "k%d" % i)
        check(got == ("v%d" % i).encode(), "client %d after the kill: %r" % (i, got))
        c.close()
    sy.check_alive()
    sy.stop()
