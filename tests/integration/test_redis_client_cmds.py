"""
test_redis_client_cmds.py - issue 12, Redis item 6: the commands that describe or change the
connection (CLIENT ..., HELLO, ECHO, PING, SELECT, RESET, QUIT, AUTH) through switchyard,
against a real redis-server, each with `multiplex = on` (the default: a stateless client
shares an upstream until a command pins it) and `multiplex = off`.

  - every reply that must be Redis's own is compared byte for byte with the same command's
    reply on a direct connection. Where two connections legitimately differ (CLIENT ID,
    HELLO's id, CLIENT INFO's id=/addr=/fd=/age=/memory columns), only those values are
    taken out before comparing; the fields the client's own commands set (name=, db=,
    resp=, user=, flags=, multi=, sub=, cmd=) must be equal;
  - consistency: GETNAME after SETNAME, CLIENT INFO's name=/db=/resp=/user= after SETNAME,
    SELECT, HELLO 3, AUTH user, and back to the defaults after RESET; CLIENT ID is one
    number within a session (CLIENT INFO, HELLO and CLIENT LIST name it too) and it is the
    client's own upstream: a multiplexed client is pinned by CLIENT ID / INFO / LIST before
    they run, so they never describe the shared upstream;
  - after a SWITCH the name, db, protocol and user are replayed on the new target, and
    CLIENT ID is the new connection's (documented in README / docs/configuration.md);
  - the documented differences (one-argument AUTH with no password set; CLIENT KILL ADDR of
    the client's own address) are asserted as documented, so the docs stay true.

The upstream is redis-server 7.0 (Debian): CLIENT NO-TOUCH and CLIENT SETINFO are 7.2's and
that server answers them with its unknown-subcommand error; the test compares that too.
"""

import harness
from harness import check
import redis_support as rs
from redis_support import Resp, Err
import switch_support as ss

ROUTE = "redis-store"
MODES = ("on", "off")
USERS = ["alice on >apw ~* &* +@all"]

# CLIENT INFO / LIST fields that belong to the connection, not to what the client did
CONN_FIELDS = {"id", "addr", "laddr", "fd", "age", "idle", "qbuf", "qbuf-free", "argv-mem", "multi-mem",
               "obl", "oll", "omem", "tot-mem", "events", "rbs", "rbp", "io-thread"}


def _start(ctx, mux, workers=2):
    builtin = harness.RedisServer(acl=USERS)
    external = harness.RedisServer(acl=USERS)
    sy = ss.start_redis(ctx, builtin, external, globals_extra="workers = %d\n" % workers,
                        route_extra="multiplex = %s\n" % mux)
    return sy, builtin, external


def _fields(v):
    """CLIENT INFO's line as a dict (RESP3 sends it as a verbatim string, txt:...)."""
    if isinstance(v, bytes) and v.startswith(b"txt:"):
        v = v[4:]
    return rs.client_info_fields(v)


def _info(v):
    """A CLIENT INFO line (or one CLIENT LIST row) without the connection's own columns."""
    f = _fields(v)
    return {k: x for k, x in f.items() if k not in CONN_FIELDS}


def _hello(v):
    """HELLO's reply (RESP2 array or RESP3 map) with its id value taken out."""
    items = [x for kv in v for x in kv] if isinstance(v, rs.Map) else list(v)
    i = items.index(b"id")
    return items[:i + 1] + items[i + 2:], items[i + 1]


def _norm(step, v, raw):
    """What is compared of one reply: the raw bytes, but for the replies naming the
    connection (an id, an address)."""
    name = tuple(str(a).upper() for a in step[:2])
    if isinstance(v, Err):
        return raw
    if name == ("CLIENT", "ID"):
        return "an integer" if isinstance(v, int) else raw
    if name == ("CLIENT", "INFO"):
        return _info(v)
    if name[0] == "HELLO":
        return _hello(v)[0]
    return raw


def _compare(sy, server, steps):
    """Run steps (tuples) on a direct connection and through switchyard, one at a time;
    every reply must be equal after _norm. Returns the two lists of parsed replies."""
    got = {}
    for who, port in (("direct", server.port), ("switchyard", sy.redis_port)):
        out = []
        with Resp(port) as r:
            for step in steps:
                r.send_cmds([step])
                v = r.read(timeout=10, what="%s %s" % (who, " ".join(map(str, step))))
                out.append((v, _norm(step, v, r.last_raw)))
        got[who] = out
    for step, (dv, dn), (pv, pn) in zip(steps, got["direct"], got["switchyard"]):
        check(dn == pn, "%s: direct %r, switchyard %r" % (" ".join(map(str, step)), dn, pn))
    return [v for v, _ in got["direct"]], [v for v, _ in got["switchyard"]]


# --------------------------------------------------------------------------------------------
# replies equal to Redis's own

SIMPLE_STEPS = [
    ("PING",), ("PING", "hi"), ("ECHO", "hello"), ("ECHO", b"\x00\r\nbin"),
    ("CLIENT", "HELP"),
    ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "bad name"), ("CLIENT", "SETNAME", "app-1"),
    ("CLIENT", "GETNAME"), ("CLIENT", "INFO"), ("CLIENT", "ID"),
    ("CLIENT", "NO-EVICT", "on"), ("CLIENT", "INFO"), ("CLIENT", "NO-EVICT", "off"), ("CLIENT", "NO-EVICT", "x"),
    ("CLIENT", "NO-TOUCH", "on"), ("CLIENT", "SETINFO", "lib-name", "mylib"),
    ("CLIENT", "SETINFO", "lib-ver", "1.2"),
    ("CLIENT", "TRACKINGINFO"), ("CLIENT", "GETREDIR"), ("CLIENT", "CACHING", "yes"),
    ("CLIENT", "UNBLOCK", "999999"), ("CLIENT", "UNBLOCK", "x"),
    ("CLIENT", "KILL", "ID", "999999"), ("CLIENT", "KILL", "127.0.0.1:1"), ("CLIENT", "KILL", "USER", "nosuch"),
    ("CLIENT", "PAUSE", "10", "WRITE"), ("CLIENT", "UNPAUSE"), ("CLIENT", "PAUSE", "x"),
    ("CLIENT", "REPLY", "ON"), ("CLIENT", "NOSUCH"), ("CLIENT",),
    ("SELECT", "3"), ("CLIENT", "INFO"), ("SELECT", "99"), ("SELECT", "x"), ("CLIENT", "INFO"),
    ("HELLO",), ("HELLO", "3"), ("CLIENT", "INFO"), ("PING",), ("HELLO", "4"), ("HELLO", "2", "SETNAME", "h"),
    ("CLIENT", "INFO"),
    ("AUTH", "a", "b", "c"), ("AUTH", "default", "anything"), ("AUTH", "alice", "wrong"),
    ("RESET",), ("CLIENT", "INFO"), ("CLIENT", "GETNAME"),
]


def test_connection_commands_match_direct(ctx):
    """Every CLIENT subcommand of Redis 7 and the connection group (HELLO, ECHO, PING,
    SELECT, RESET, AUTH): switchyard's reply is the server's, byte for byte (ids and the
    connection's own CLIENT INFO columns aside), with multiplexing on and off."""
    for mux in MODES:
        sy, builtin, _ = _start(ctx, mux)
        try:
            _compare(sy, builtin, SIMPLE_STEPS)
            # QUIT: +OK, then the close, as direct (answered by switchyard when shared)
            for port in (builtin.port, sy.redis_port):
                with Resp(port) as r:
                    r.send_cmds([("PING",), ("QUIT",)])
                    check(r.expect_close(10) == b"+PONG\r\n+OK\r\n", "mux=%s port %d: PING QUIT" % (mux, port))
        finally:
            sy.stop()


def test_client_reply_off_skip(ctx):
    """CLIENT REPLY OFF / SKIP / ON: exactly the replies the server sends, no more, no less."""
    for mux in MODES:
        sy, builtin, _ = _start(ctx, mux)
        try:
            cmds = [("CLIENT", "REPLY", "SKIP"), ("SET", "k", "1"), ("INCR", "k"),
                    ("CLIENT", "REPLY", "OFF"), ("INCR", "k"), ("PING",), ("CLIENT", "REPLY", "SKIP"), ("PING",),
                    ("CLIENT", "REPLY", "ON"), ("GET", "k"), ("ECHO", "end")]
            raws = []
            for port in (builtin.port, sy.redis_port):
                with Resp(port) as r:
                    r.send_cmds(cmds)
                    raws.append(r.read_raw(4, timeout=10))
                    check(r.nothing_for(0.3), "mux=%s: a reply more than the server's" % mux)
            check(raws[0] == raws[1] == b":2\r\n+OK\r\n$1\r\n3\r\n$3\r\nend\r\n",
                  "mux=%s: direct %r, switchyard %r" % (mux, raws[0], raws[1]))
        finally:
            sy.stop()


# --------------------------------------------------------------------------------------------
# what the connection says about itself

def _row_of(server, cid):
    """CLIENT LIST ID cid on the server, direct, as a dict (None when there is none)."""
    with Resp(server.port) as r:
        v = r.cmd("CLIENT", "LIST", "ID", str(cid))
    return rs.client_info_fields(v) if v else None


def test_client_state_is_what_the_client_did(ctx):
    """CLIENT ID is one number within a session and is the client's own upstream (a shared
    client is pinned before CLIENT ID/INFO/LIST run); CLIENT INFO's name=/db=/resp=/user=
    follow SETNAME, SELECT, HELLO 3 and AUTH alice, and RESET puts them back."""
    for mux in MODES:
        sy, builtin, _ = _start(ctx, mux)
        other = Resp(sy.redis_port)
        try:
            check(other.cmd("SET", "shared", "1") == "OK", "a stateless client on the route")
            with Resp(sy.redis_port) as c:
                check(c.cmd("SET", "x", "1") == "OK", "SET")
                cid = c.cmd("CLIENT", "ID")
                check(isinstance(cid, int), "CLIENT ID: %r" % cid)
                # a stateless client's command now must not land on c's upstream
                check(other.cmd("INCR", "shared") == 2, "INCR from the other client")
                row = _row_of(builtin, cid)
                check(row is not None and row["cmd"] == "client|id",
                      "mux=%s: CLIENT ID %d names an upstream that runs other clients' commands: %r" % (mux, cid, row))
                f = _fields(c.cmd("CLIENT", "INFO"))
                check(int(f["id"]) == cid and f["name"] == "" and f["db"] == "0" and f["resp"] == "2"
                      and f["user"] == "default", "mux=%s: CLIENT INFO %r" % (mux, f))
                mine = [rs.client_info_fields(l) for l in c.cmd("CLIENT", "LIST").decode().splitlines()]
                check([m["cmd"] for m in mine if int(m["id"]) == cid] == ["client|list"],
                      "mux=%s: CLIENT LIST has no row for CLIENT ID %d that runs it: %r" % (mux, cid, mine))
                check(c.cmd("CLIENT", "SETNAME", "worker-7") == "OK" and c.cmd("SELECT", "5") == "OK", "SETNAME, SELECT")
                h = c.cmd("HELLO", "3")
                check(_hello(h)[1] == cid, "mux=%s: HELLO 3 names id %r, CLIENT ID said %d" % (mux, _hello(h)[1], cid))
                check(c.cmd("AUTH", "alice", "apw") == "OK", "AUTH alice")
                f = _fields(c.cmd("CLIENT", "INFO"))
                check((int(f["id"]), f["name"], f["db"], f["resp"], f["user"]) == (cid, "worker-7", "5", "3", "alice"),
                      "mux=%s: CLIENT INFO after SETNAME/SELECT/HELLO 3/AUTH: %r" % (mux, f))
                check(c.cmd("CLIENT", "GETNAME") == b"worker-7" and c.cmd("ACL", "WHOAMI") == b"alice", "GETNAME, WHOAMI")
                check(c.cmd("CLIENT", "ID") == cid, "mux=%s: CLIENT ID changed within the session" % mux)
                check(c.cmd("RESET") == "RESET", "RESET")
                f = _fields(c.cmd("CLIENT", "INFO"))
                check((int(f["id"]), f["name"], f["db"], f["resp"], f["user"]) == (cid, "", "0", "2", "default"),
                      "mux=%s: CLIENT INFO after RESET: %r" % (mux, f))
        finally:
            other.close()
            sy.stop()


def test_client_kill_and_unblock(ctx):
    """CLIENT UNBLOCK of a client blocked through switchyard (by the id its CLIENT ID gave)
    releases it with the server's reply; CLIENT KILL ID <own id> SKIPME no answers :1 and
    closes, as direct; CLIENT KILL ADDR of the client's own address is not found through
    switchyard (the server sees switchyard's address: documented)."""
    for mux in MODES:
        sy, builtin, _ = _start(ctx, mux)
        try:
            got = {}
            for who, port in (("direct", builtin.port), ("switchyard", sy.redis_port)):
                with Resp(port) as blk, Resp(port) as ctl:
                    bid = blk.cmd("CLIENT", "ID")
                    blk.send_cmds([("BLPOP", "nothing", "0")])
                    rs.wait_blocked(builtin, 1)
                    ctl.cmd("CLIENT", "UNBLOCK", str(bid))
                    b = blk.read(timeout=10)
                    got[who] = (ctl.last_raw, blk.last_raw, b)
                    me = ctl.cmd("CLIENT", "ID")
                    ctl.send_cmds([("CLIENT", "KILL", "ID", str(me), "SKIPME", "no")])
                    got[who] += (ctl.expect_close(10),)
                    # a command pipelined after the self-kill: the server drops it unanswered;
                    # switchyard owes it a reply and sends its own -ERR (documented)
                    with Resp(port) as k:
                        me = k.cmd("CLIENT", "ID")
                        k.send_cmds([("CLIENT", "KILL", "ID", str(me), "SKIPME", "no"), ("PING",)])
                        got[who] += (k.expect_close(10),)
            check(got["direct"][0] == got["switchyard"][0] == b":1\r\n" and got["direct"][1] == got["switchyard"][1],
                  "mux=%s: UNBLOCK: direct %r, switchyard %r" % (mux, got["direct"], got["switchyard"]))
            check(got["direct"][3] == got["switchyard"][3] == b":1\r\n",
                  "mux=%s: CLIENT KILL ID <own>: direct %r, switchyard %r" % (mux, got["direct"][3], got["switchyard"][3]))
            check(got["direct"][4] == b":1\r\n" and got["switchyard"][4].startswith(
                  b":1\r\n-ERR switchyard: route redis-store: connection to ") and
                  got["switchyard"][4].endswith(b" lost: server closed the connection\r\n"),
                  "mux=%s: CLIENT KILL ID <own>, PING: direct %r, switchyard %r" % (mux, got["direct"][4],
                                                                                 got["switchyard"][4]))
            # the client's own address, as the client sees it
            for port, want in ((builtin.port, b":1\r\n"), (sy.redis_port, b":0\r\n")):
                with Resp(port) as c:
                    c.cmd("CLIENT", "ID")
                    addr = "%s:%d" % c.sock.getsockname()
                    c.send_cmds([("CLIENT", "KILL", "ADDR", addr, "SKIPME", "no")])
                    data = c.expect_close(10) if port == builtin.port else c.read_raw(1, timeout=10)
                    check(data == want, "mux=%s port %d: CLIENT KILL ADDR own: %r" % (mux, port, data))
        finally:
            sy.stop()


def test_tracking_redirect(ctx):
    """CLIENT TRACKING ... REDIRECT <id of another client through switchyard>: the
    redirected invalidation arrives, GETREDIR and TRACKINGINFO name that id, as direct."""
    for mux in MODES:
        sy, builtin, _ = _start(ctx, mux)
        try:
            got = {}
            for who, port in (("direct", builtin.port), ("switchyard", sy.redis_port)):
                with Resp(port) as sub, Resp(port) as t, Resp(port) as w:
                    rid = sub.cmd("CLIENT", "ID")
                    check(sub.cmd("SUBSCRIBE", "__redis__:invalidate") == [b"subscribe", b"__redis__:invalidate", 1],
                          "SUBSCRIBE")
                    out = [t.cmd("CLIENT", "TRACKING", "on", "REDIRECT", str(rid)), t.cmd("CLIENT", "GETREDIR") == rid]
                    ti = t.cmd("CLIENT", "TRACKINGINFO")
                    out.append([x if x != rid else "rid" for x in ti])
                    w.cmd("DEL", "tk")
                    out += [t.cmd("GET", "tk"), w.cmd("SET", "tk", "v"), sub.read(timeout=10)]
                    out += [t.cmd("CLIENT", "TRACKING", "off"), t.cmd("CLIENT", "GETREDIR")]
                    got[who] = out
            check(got["direct"] == got["switchyard"], "mux=%s: direct %r, switchyard %r" % (mux, got["direct"],
                                                                                         got["switchyard"]))
        finally:
            sy.stop()


# --------------------------------------------------------------------------------------------
# after a move

def test_client_state_after_switch(ctx):
    """A SWITCH moves a client with a name, a db, NO-EVICT, RESP3 and an ACL user: on the new
    target GETNAME, CLIENT INFO's name=/db=/resp=/user=/flags and ACL WHOAMI are what the
    client set (NO-EVICT was lost before: flags=N);
    CLIENT ID is the new target's connection id (documented: it changes at a move)."""
    for mux in MODES:
        sy, builtin, external = _start(ctx, mux)
        con = ss.Console(sy)
        try:
            with Resp(sy.redis_port) as c, Resp(sy.redis_port) as plain, Resp(sy.redis_port) as long, \
                    Resp(sy.redis_port) as longer:
                check(plain.cmd("SET", "p", "1") == "OK", "a stateless client")
                check(long.cmd("CLIENT", "SETNAME", "n" * 128) == "OK", "SETNAME of 128 bytes")
                check(longer.cmd("CLIENT", "SETNAME", "n" * 129) == "OK" and longer.cmd("CLIENT", "GETNAME") == b"n" * 129,
                      "SETNAME of 129 bytes")
                old = c.cmd("CLIENT", "ID")
                for step in (("CLIENT", "SETNAME", "mover"), ("SELECT", "4"), ("CLIENT", "NO-EVICT", "on"),
                             ("AUTH", "alice", "apw")):
                    check(c.cmd(*step) == "OK", " ".join(step))
                check(isinstance(c.cmd("HELLO", "3"), rs.Map), "HELLO 3")
                con.switch(ROUTE, "external")
                check(plain.cmd("GET", "p") is None and plain.cmd("SET", "p", "2") == "OK",
                      "the stateless client is on the new (empty) target")
                new = c.cmd("CLIENT", "ID")
                f = _fields(c.cmd("CLIENT", "INFO"))
                check(c.cmd("CLIENT", "GETNAME") == b"mover", "mux=%s: GETNAME after the switch" % mux)
                check((f["name"], f["db"], f["resp"], f["user"], "e" in f["flags"]) == ("mover", "4", "3", "alice", True),
                      "mux=%s: CLIENT INFO after the switch (flags e: NO-EVICT): %r" % (mux, f))
                check(int(f["id"]) == new and _row_of(external, new) is not None and _row_of(builtin, old) is None,
                      "mux=%s: CLIENT ID after the switch is the new target's connection (%d, was %d)" % (mux, new, old))
                check(c.cmd("ACL", "WHOAMI") == b"alice", "WHOAMI after the switch")
                check(long.cmd("CLIENT", "GETNAME") == b"n" * 128, "mux=%s: a name of 128 bytes is replayed" % mux)
                e = longer.read(timeout=10)
                check(isinstance(e, Err) and e.endswith("(a subscription or client name could not be recorded)"),
                      "mux=%s: a client name over 128 bytes cannot be replayed: %r" % (mux, e))
                check(longer.expect_close(10) == b"", "closed after the error")
        finally:
            con.close()
            sy.stop()


# --------------------------------------------------------------------------------------------
# documented differences

def test_documented_differences(ctx):
    """What README's limitations list: the one-argument AUTH with no password configured is
    +OK through switchyard (the server's error direct); and the server's CLIENT LIST shows
    switchyard's connections (laddr is the server, addr is switchyard's, not the client's
    address), one shared upstream for every multiplexed stateless client."""
    sy, builtin, _ = _start(ctx, "on", workers=1)
    try:
        with Resp(builtin.port) as d, Resp(sy.redis_port) as p:
            dv, pv = d.cmd("AUTH", "pw"), p.cmd("AUTH", "pw")
            check(isinstance(dv, Err) and dv.startswith("ERR AUTH <password> called without any password"),
                  "direct AUTH pw: %r" % dv)
            check(pv == "OK", "switchyard AUTH pw: %r (documented +OK)" % pv)
        clients = [Resp(sy.redis_port) for _ in range(5)]
        try:
            for i, c in enumerate(clients):
                check(c.cmd("SET", "m%d" % i, "v") == "OK", "SET")
            with Resp(builtin.port) as d:
                rows = [rs.client_info_fields(l) for l in d.cmd("CLIENT", "LIST").decode().splitlines()]
            ups = [r for r in rows if r["cmd"] != "client|list"]
            check(len(ups) == 1, "five stateless clients on one shared upstream: %r" % ups)
        finally:
            for c in clients:
                c.close()
    finally:
        sy.stop()
