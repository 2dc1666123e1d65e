"""
test_redis_guard.py - issue 12, Redis 4: the external password does not reach the app.

Against a real redis-server with requirepass (and masterauth, and an ACL user), through
switchyard with multiplexing on and off: CONFIG GET requirepass / masterauth / *pass* / *
show the secrets masked (RESP2 arrays, RESP3 maps, inside EXEC) and everything else exactly
as Redis sent it; the password is in no reply and not in the log. The writes that would lock
switchyard out (CONFIG SET requirepass|masterauth, ACL SETUSER / DELUSER of the user it logs
in as) get -ERR switchyard: ... and do not reach the server; the same commands for anything
else pass. A route with redis_guard_config = off passes everything as sent; a target with
no password has nothing to mask, but is still not locked.
"""

import harness
from harness import check, fail
import redis_support as rs
from redis_support import Resp, Err, encode

PW = "guard-Pw-1"
MA = "master-Secret-2"
APP_PW = "app-Pw-3"
MASK = b"(hidden by switchyard)"


def _server():
    server = harness.RedisServer(password=PW, acl=["user app on >%s ~* &* +@all" % APP_PW],
                                 extra_args=["--masterauth", MA])
    return server


def _proxy(server, multiplex="on", user="", extra=""):
    cred = "%s:%s" % (user, APP_PW if user else PW)
    return rs.start_proxy("127.0.0.1:1", env={"REDIS_ENDPOINT": "redis://%s@127.0.0.1:%d" % (cred, server.port)},
                          extra="multiplex = %s\n%s" % (multiplex, extra))


def _direct(server):
    r = Resp(server.port)
    r.ok("AUTH", PW)
    return r


def _pairs(v):
    items = list(v) if not isinstance(v, rs.Map) else [x for kv in v for x in kv]
    return dict(zip(items[0::2], items[1::2]))


def _masked(d):
    return {k: (MASK if k in (b"requirepass", b"masterauth") and v else v) for k, v in d.items()}


def _check_config_gets(sy, server):
    d = _direct(server)
    with Resp(sy.port) as r:
        for pattern in ("requirepass", "masterauth", "*pass*", "*", "maxmemory"):
            want = _masked(_pairs(d.cmd("CONFIG", "GET", pattern)))
            r.send(encode("CONFIG", "GET", pattern))
            got = r.read()
            raw = r.last_raw
            check(_pairs(got) == want, "CONFIG GET %s: %r, want %r" % (pattern, _pairs(got), want))
            check(PW.encode() not in raw and MA.encode() not in raw, "CONFIG GET %s shows a secret" % pattern)
        # a reply with nothing to mask is Redis's own bytes
        d.send(encode("CONFIG", "GET", "maxmemory"))
        d.read()
        r.send(encode("CONFIG", "GET", "maxmemory"))
        r.read()
        check(r.last_raw == d.last_raw, "CONFIG GET maxmemory: %r, direct %r" % (r.last_raw, d.last_raw))
        # inside MULTI: EXEC's reply holds it
        r.ok("MULTI")
        r.cmd("CONFIG", "GET", "requirepass")
        r.cmd("PING")
        v = r.cmd("EXEC")
        check(isinstance(v, list) and len(v) == 2 and _pairs(v[0]) == {b"requirepass": MASK} and v[1] == "PONG",
              "EXEC with CONFIG GET requirepass: %r" % (v,))
        check(PW.encode() not in r.last_raw, "EXEC shows the password")
        # pipelined, mixed with other replies
        r.send(encode("GET", "nokey") + encode("CONFIG", "GET", "requirepass") + encode("ECHO", "requirepass")
               + encode("CONFIG", "GET", "masterauth"))
        got = [r.read() for _ in range(4)]
        check(got[0] is None and _pairs(got[1]) == {b"requirepass": MASK} and got[2] == b"requirepass"
              and _pairs(got[3]) == {b"masterauth": MASK}, "pipelined CONFIG GETs: %r" % (got,))
    # RESP3: a map
    with Resp(sy.port) as r:
        r.cmd("HELLO", "3")
        v = r.cmd("CONFIG", "GET", "requirepass")
        check(isinstance(v, rs.Map) and _pairs(v) == {b"requirepass": MASK}, "RESP3 CONFIG GET requirepass: %r" % (v,))
        check(PW.encode() not in r.last_raw, "RESP3 CONFIG GET shows the password")
    d.close()


def _check_refusals(sy, server, user="default"):
    with Resp(sy.port) as r:
        for args in (("CONFIG", "SET", "requirepass", "other"),
                     ("CONFIG", "SET", "masterauth", "other"),
                     ("CONFIG", "SET", "maxmemory", "0", "REQUIREPASS", "other"),
                     ("ACL", "SETUSER", user, "resetpass", "nopass"),
                     ("ACL", "DELUSER", "nobody", user)):
            v = r.cmd(*args)
            check(isinstance(v, Err) and v.startswith("ERR switchyard: %s %s would change" % (args[0], args[1].upper()))
                  and "redis_guard_config" in v, "%s: %r" % (" ".join(args), v))
        # the others pass
        check(r.cmd("CONFIG", "SET", "maxmemory", "0") == "OK", "CONFIG SET maxmemory")
        check(r.cmd("ACL", "SETUSER", "other-user", "on", ">x", "~*", "+@all") == "OK", "ACL SETUSER other-user")
        check(r.cmd("ACL", "DELUSER", "other-user") == 1, "ACL DELUSER other-user")
        check(r.cmd("PING") == "PONG", "PING after the refusals")
    # nothing reached the server: its password and users are as they were
    check(server.cli("CONFIG", "GET", "requirepass").stdout.split() == ["requirepass", PW], "requirepass changed")
    check(server.cli("CONFIG", "GET", "masterauth").stdout.split() == ["masterauth", MA], "masterauth changed")
    check(user in server.cli("ACL", "USERS").stdout.split(), "the user %s is gone" % user)
    # a new client still gets in
    with Resp(sy.port) as r:
        check(r.cmd("PING") == "PONG", "a new client after the refusals")


def _run(multiplex):
    server = _server()
    sy = _proxy(server, multiplex)
    _check_config_gets(sy, server)
    _check_refusals(sy, server)
    log = sy.log_text()
    check(PW not in log and MA not in log, "a secret is in switchyard's log")
    check("event=guard_refused" in log, "no guard_refused event logged")
    sy.stop()
    server.stop()


def test_config_secrets_masked_and_lockouts_refused(ctx):
    _run("on")


def test_config_secrets_masked_and_lockouts_refused_pinned(ctx):
    _run("off")


def test_guard_follows_the_endpoint_user(ctx):
    """Logging in as ACL user app, it is app that must not be changed; default may be."""
    server = _server()
    sy = _proxy(server, "on", user="app")
    _check_refusals(sy, server, user="app")
    with Resp(sy.port) as r:
        check(r.cmd("ACL", "SETUSER", "default", "on") == "OK", "ACL SETUSER default when logged in as app")
        check(r.cmd("ACL", "WHOAMI") == b"app", "not logged in as app")
    sy.stop()
    server.stop()


def test_guard_off_passes_everything(ctx):
    server = _server()
    sy = _proxy(server, "on", extra="redis_guard_config = off\n")
    with Resp(sy.port) as r:
        check(_pairs(r.cmd("CONFIG", "GET", "requirepass")) == {b"requirepass": PW.encode()},
              "guard off: CONFIG GET requirepass should pass as sent")
        check(r.cmd("ACL", "SETUSER", "default", "on") == "OK", "guard off: ACL SETUSER default")
        check(r.cmd("CONFIG", "SET", "masterauth", MA) == "OK", "guard off: CONFIG SET masterauth")
    sy.stop()
    server.stop()


def test_no_password_nothing_to_mask_still_guarded(ctx):
    server = harness.RedisServer()
    server.cli("CONFIG", "SET", "masterauth", MA)
    sy = rs.start_proxy(server)
    d = Resp(server.port)
    with Resp(sy.port) as r:
        for pattern in ("requirepass", "masterauth"):
            d.send(encode("CONFIG", "GET", pattern))
            d.read()
            r.send(encode("CONFIG", "GET", pattern))
            r.read()
            check(r.last_raw == d.last_raw, "no password on the target: CONFIG GET %s %r, direct %r"
                  % (pattern, r.last_raw, d.last_raw))
        v = r.cmd("CONFIG", "SET", "requirepass", "x")
        check(isinstance(v, Err) and v.startswith("ERR switchyard:"), "CONFIG SET requirepass on a target without "
              "one: %r" % (v,))
    check(server.cli("CONFIG", "GET", "requirepass").stdout.split() == ["requirepass"], "requirepass got set")
    d.close()
    sy.stop()
    server.stop()
