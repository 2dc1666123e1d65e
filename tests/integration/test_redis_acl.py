"""
test_redis_acl.py - issue 12, Redis item 2: ACL users keep their identity.

With no client_password on the route, the two-argument AUTH <user> <pw> and HELLO <ver>
AUTH <user> <pw> go upstream and the server's answer is relayed; the client is pinned (its
upstream has a user of its own). Against real redis-servers with ACL users, each reply's
bytes through switchyard are compared with the same commands' on a direct connection:

  - AUTH user1 then ACL WHOAMI gives user1; WRONGPASS is the server's own; a restricted
    user gets the server's NOPERM; HELLO ... AUTH too; RESET returns to default;
  - the one-argument AUTH <pw> keeps its local meaning (+OK, and nothing changes);
  - a SWITCH moves such a session and ACL WHOAMI is still user1 on the new target (the
    user exists on both); where the new target lacks user1, the move closes the session
    with -ERR saying why, and an ordinary client moves.
"""

import harness
from harness import check
import redis_support as rs
from redis_support import Resp, Err
import switch_support as ss

ROUTE = "redis-store"
USERS = ["user1 on >pw1 ~* &* +@all",
         "ro on >pw2 ~ro:* resetchannels -@all +get +acl|whoami +ping"]


def _transcript(port, steps, resp3_ids=False):
    """The raw bytes of each reply to steps (tuples of arguments), one at a time."""
    out = []
    with Resp(port) as r:
        for step in steps:
            r.send_cmds([step])
            v = r.read(timeout=10, what=" ".join(map(str, step)))
            raw = r.last_raw
            if step[0] == "HELLO" and not isinstance(v, Err):
                # the reply names the connection's id, which differs: compare the rest
                items = list(v) if not isinstance(v, rs.Map) else [x for kv in v for x in kv]
                i = items.index(b"id")
                raw = repr(items[:i + 1] + items[i + 2:]).encode()
            out.append(raw)
    return out


def _start(ctx, builtin, external, extra=""):
    return ss.start_redis(ctx, builtin, external, route_extra=extra)


def test_acl_user_identity_through_switchyard(ctx):
    builtin = harness.RedisServer(acl=USERS)
    external = harness.RedisServer(acl=USERS)
    sy = _start(ctx, builtin, external, extra="multiplex = on")   # it looks at shared and pinned
    steps = [
        ("ACL", "WHOAMI"),
        ("AUTH", "user1", "pw1"),
        ("ACL", "WHOAMI"),
        ("SET", "ro:x", "1"),
        ("AUTH", "user1", "wrong"),
        ("ACL", "WHOAMI"),
        ("AUTH", "nosuch", "pw1"),
        ("AUTH", "user1", "pw1", "extra"),
        ("AUTH",),
        ("AUTH", "ro", "pw2"),
        ("ACL", "WHOAMI"),
        ("GET", "ro:x"),
        ("SET", "ro:x", "2"),
        ("GET", "other"),
        ("HELLO", "3", "AUTH", "user1", "pw1"),
        ("ACL", "WHOAMI"),
        ("HELLO", "2", "AUTH", "ro", "wrong"),
        ("ACL", "WHOAMI"),
        ("HELLO", "2", "AUTH", "ro", "pw2", "SETNAME", "restricted"),
        ("CLIENT", "GETNAME"),
        ("SET", "ro:x", "3"),
        ("RESET",),
        ("ACL", "WHOAMI"),
        ("SET", "ro:x", "4"),
        ("GET", "ro:x"),
    ]
    direct = _transcript(builtin.port, steps)
    builtin.cli("SET", "ro:x", "1")
    via = _transcript(sy.redis_port, steps)
    for step, d, v in zip(steps, direct, via):
        check(d == v, "%s: switchyard answered %r, the server directly %r" % (" ".join(step), v, d))
    check(direct[2] == b"$5\r\nuser1\r\n" and direct[12].startswith(b"-NOPERM"), "direct transcript %r" % direct)

    # the client with a user of its own is pinned; the one-argument AUTH stays local
    con = ss.Console(sy)
    with Resp(sy.redis_port) as r:
        check(r.cmd("AUTH", "anything") == "OK", "one-argument AUTH answered locally")
        check(r.cmd("ACL", "WHOAMI") == b"default", "one-argument AUTH changed the user")
    with Resp(sy.redis_port) as shared, Resp(sy.redis_port) as mine:
        check(shared.cmd("GET", "x") is None, "GET")
        check(mine.cmd("AUTH", "user1", "pw1") == "OK", "AUTH user1")
        rows = harness.wait_clients(con, lambda rows: len(rows) == 2, "two clients", route=ROUTE)
        muxes = sorted(r["detail"].split("mux=")[1].split()[0] for r in rows)
        check(muxes == ["pinned", "shared"], "SHOW CLIENTS mux: %r" % rows)
        users = [rs.client_info_fields(l).get("user") for l in
                 builtin.cli("CLIENT", "LIST").stdout.splitlines()]
        check("user1" in users, "no upstream connection runs as user1: %r" % users)
    con.close()
    sy.stop()


def test_acl_user_moves_with_its_session(ctx):
    builtin = harness.RedisServer(acl=USERS)
    external = harness.RedisServer(acl=USERS)
    sy = _start(ctx, builtin, external)
    con = ss.Console(sy)
    a = Resp(sy.redis_port)
    a.send(b"AUTH user1 pw1\r\n")   # inline: recorded from the captured arguments
    check(a.read(timeout=10) == "OK", "inline AUTH user1")
    b = Resp(sy.redis_port)
    v = b.cmd("HELLO", "3", "AUTH", "ro", "pw2", "SETNAME", "rb")
    check(isinstance(v, rs.Map) and (b"server", b"redis") in v, "HELLO 3 AUTH ro: %r" % (v,))
    plain = Resp(sy.redis_port)
    check(plain.cmd("SET", "sw:plain", "b") == "OK", "SET")
    row, _t0, _t1 = con.switch(ROUTE, "external")
    check(row["moved"] == "3" and row["closed"] == "0", "SWITCH: %r %s" % (row, harness.log_tail(sy.logfile, 25)))
    check(a.cmd("ACL", "WHOAMI") == b"user1", "after the move the session is not user1")
    check(a.cmd("SET", "sw:a", "1") == "OK", "SET after the move")
    check(external.cli("GET", "sw:a").stdout.strip() == "1", "user1's SET is not on external")
    check(b.cmd("ACL", "WHOAMI") == b"ro", "after the move the restricted session is not ro")
    v = b.cmd("SET", "ro:y", "1")
    check(isinstance(v, Err) and v.startswith("NOPERM"), "the restricted user is not restricted after the move: %r" % v)
    conns = [rs.client_info_fields(l) for l in external.cli("CLIENT", "LIST").stdout.splitlines()]
    users = [c.get("user") for c in conns]
    check("user1" in users and "ro" in users, "external's connections run as %r" % users)
    check([c.get("name") for c in conns if c.get("user") == "ro"] == ["rb"], "the name did not move: %r" % conns)
    check(plain.cmd("GET", "sw:plain") is None, "the plain client is not on external")
    for x in (a, b, plain):
        x.close()
    con.close()
    sy.stop()


def test_acl_move_closes_a_session_the_new_target_refuses(ctx):
    builtin = harness.RedisServer(acl=USERS)
    external = harness.RedisServer()   # no user1 there
    sy = _start(ctx, builtin, external)
    con = ss.Console(sy)
    a = Resp(sy.redis_port)
    check(a.cmd("AUTH", "user1", "pw1") == "OK", "AUTH user1")
    plain = Resp(sy.redis_port)
    check(plain.cmd("SET", "sw:plain", "b") == "OK", "SET")
    mark = sy.log_size()
    row, _t0, _t1 = con.switch(ROUTE, "external")
    check(row["moved"] == "1" and row["closed"] == "1", "SWITCH: %r" % row)
    v = a.read(timeout=10, what="the refused session's error")
    check(isinstance(v, Err) and v.startswith("ERR switchyard: route %s switched to external; reconnect "
                                              "(AUTH as user1 on the new target failed: WRONGPASS" % ROUTE),
          "the session the new target refuses got %r" % (v,))
    a.expect_close(timeout=5)
    sy.wait_log(r"event=move_failed .*AUTH as user1 on the new target failed", since=mark, what="the failed move")
    check("pw1" not in sy.log_text(), "the password reached the log")
    check(plain.cmd("GET", "sw:plain") is None, "the plain client is not on external")
    plain.close()
    con.close()
    sy.stop()


def test_reset_returns_to_the_endpoint_user(ctx):
    """The endpoint authenticates as its own user in db 3. A client that became user1 and
    sends RESET is back where a new connection starts: the endpoint's user, db 3; and the
    replies to switchyard's own AUTH/SELECT after RESET never reach the client."""
    server = harness.RedisServer(password="default-pw",
                                 acl=USERS + ["epuser on >ep-pw ~* &* +@all"])
    sy = rs.start_proxy(server, env={"REDIS_STORE_ENDPOINT": "redis://epuser:ep-pw@127.0.0.1:%d/3" % server.port})
    port = sy.listeners["redis-store"]
    with Resp(port) as r:
        check(r.cmd("SET", "rk", "in-3") == "OK", "SET")
        check(r.cmd("ACL", "WHOAMI") == b"epuser", "a new connection is not the endpoint's user")
        check(r.cmd("AUTH", "user1", "pw1") == "OK", "AUTH user1")
        check(r.cmd("ACL", "WHOAMI") == b"user1", "not user1 after AUTH")
        check(r.cmd("SELECT", "5") == "OK", "SELECT 5")
        r.send_cmds([("RESET",), ("ACL", "WHOAMI"), ("GET", "rk"), ("PING",)])
        got = [r.read(timeout=10) for _ in range(4)]
        check(got == ["RESET", b"epuser", b"in-3", "PONG"], "after RESET: %r" % (got,))
        check(r.nothing_for(0.3), "a reply of switchyard's own AUTH/SELECT reached the client")
    check(server.cli("GET", "rk", db=3).stdout.strip() == "in-3", "the SET is not in db 3")
    check("ep-pw" not in sy.log_text() and "pw1" not in sy.log_text(), "a password reached the log")
    sy.stop()
