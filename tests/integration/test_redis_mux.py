"""
test_redis_mux.py - issue 9 item 2: Redis multiplexing (`multiplex = on` on a route).

Clients whose commands carry no connection state share one upstream connection per worker
and route; a client is pinned to an upstream of its own before anything stateful (SELECT of
another db, MULTI, SUBSCRIBE, ...) is sent. Every test counts the connections on the real
redis-server (CLIENT LIST), and reads SHOW CLIENTS for mux=shared / mux=pinned.
"""

import os
import socket

import harness
from harness import check
import redis_support as rs
from redis_support import Resp, Err
import switch_support as ss

WORKERS = 2


def _upstreams(server):
    """Connections on the server other than the one asking (CLIENT LIST)."""
    with Resp(server.port) as r:
        me = r.cmd("CLIENT", "ID")
        rows = r.cmd("CLIENT", "LIST").decode().splitlines()
    out = []
    for line in rows:
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if int(f["id"]) != me:
            out.append(f)
    return out


def _start(ctx, server, workers=WORKERS, extra=""):
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, rs.endpoint(server), None,
                                   extra="multiplex = on\n" + extra)],
                         globals_extra="workers = %d" % workers)
    conf += ("\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % harness.free_port()
             + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo()))
    sy = harness.Switchyard(conf)
    sy.redis_port = port
    return sy


def _show_clients(sy):
    con = ss.Console(sy)
    try:
        return [c for c in con.rows("SHOW CLIENTS") if c["route"] == "redis-store"]
    finally:
        con.close()


def _mux_of(rows):
    return sorted(c["detail"].split("mux=")[1].split()[0] for c in rows)


def test_fifty_clients_share_few_upstreams(ctx):
    """50 clients doing SET/GET share at most one upstream per worker; each gets its own
    replies; SHOW CLIENTS says shared."""
    server = harness.RedisServer()
    sy = _start(ctx, server)
    clients = [Resp(sy.redis_port) for _ in range(50)]
    try:
        for i, c in enumerate(clients):
            c.send_cmds([("SET", "k%d" % i, "v%d" % i), ("GET", "k%d" % i)])
        for i, c in enumerate(clients):
            got = [c.read(), c.read()]
            check(got == ["OK", b"v%d" % i], "client %d: %r" % (i, got))
        for round_ in range(3):
            for i, c in enumerate(clients):
                c.send_cmds([("INCR", "n%d" % i)])
            for i, c in enumerate(clients):
                check(c.read() == round_ + 1, "INCR n%d round %d" % (i, round_))
        ups = _upstreams(server)
        check(1 <= len(ups) <= WORKERS, "50 clients on at most %d upstreams: %d" % (WORKERS, len(ups)))
        rows = _show_clients(sy)
        check(len(rows) == 50 and _mux_of(rows) == ["shared"] * 50, "SHOW CLIENTS: %r" % rows[:3])
    finally:
        for c in clients:
            c.close()
        sy.stop()


def test_stateful_clients_get_pinned(ctx):
    """SELECT of another db, MULTI, SUBSCRIBE, BLPOP, CLIENT SETNAME: each pins its client to
    an upstream of its own, transparently (commands sent before it, in the same write, are
    answered first); SELECT of the shared db does not."""
    server = harness.RedisServer()
    sy = _start(ctx, server, workers=1)
    shared, sel, multi, sub, name, same = (Resp(sy.redis_port) for _ in range(6))
    try:
        check(shared.cmd("SET", "a", "1") == "OK", "shared SET")
        # pipelined: a shared command, the SELECT that pins, then commands on the new db
        sel.send_cmds([("SET", "x", "db0"), ("SELECT", "3"), ("SET", "x", "db3"), ("GET", "x")])
        got = [sel.read() for _ in range(4)]
        check(got == ["OK", "OK", "OK", b"db3"], "SELECT 3 pipelined: %r" % got)
        check(server.cli("GET", "x").stdout.strip() == "db0" and
              server.cli("GET", "x", db=3).stdout.strip() == "db3", "x lands in db 0, then in db 3")
        check(multi.cmd("MULTI") == "OK" and multi.cmd("INCR", "c") == "QUEUED" and
              multi.cmd("INCR", "c") == "QUEUED" and multi.cmd("EXEC") == [1, 2], "MULTI/EXEC")
        check(sub.cmd("SUBSCRIBE", "ch") == [b"subscribe", b"ch", 1], "SUBSCRIBE")
        check(shared.cmd("PUBLISH", "ch", "hello") == 1, "PUBLISH from a shared client")
        check(sub.read() == [b"message", b"ch", b"hello"], "the message reaches the pinned subscriber")
        check(name.cmd("CLIENT", "SETNAME", "me") == "OK" and name.cmd("CLIENT", "GETNAME") == b"me", "SETNAME")
        check(same.cmd("SELECT", "0") == "OK" and same.cmd("GET", "a") == b"1", "SELECT of the shared db")
        # QUIT of a shared client is answered by switchyard after its replies: no upstream opened
        with Resp(sy.redis_port) as q:
            q.send_cmds([("SET", "qk", "1"), ("QUIT",), ("GET", "qk")])
            check(q.expect_close(10) == b"+OK\r\n+OK\r\n", "SET, QUIT: +OK +OK, then the close")
        check("quit" not in rs.commandstats(server), "QUIT reached the server: %r" % rs.commandstats(server))
        rows = {c["id"]: c for c in _show_clients(sy)}
        check(_mux_of(rows.values()) == ["pinned"] * 4 + ["shared"] * 2, "SHOW CLIENTS: %r" % rows)
        ups = _upstreams(server)
        check(len(ups) == 5, "one shared upstream and four pinned: %r" % [u.get("name") for u in ups])
        # a blocked pop on its own upstream does not stall the shared one
        blk = Resp(sy.redis_port)
        blk.send_cmds([("BLPOP", "q", "0")])
        rs.wait_blocked(server, 1)
        check(shared.cmd("GET", "a") == b"1", "the shared upstream serves while a client blocks")
        check(shared.cmd("RPUSH", "q", "item") == 1, "RPUSH")
        check(blk.read() == [b"q", b"item"], "BLPOP answered")
        blk.close()
    finally:
        for c in (shared, sel, multi, sub, name, same):
            c.close()
        sy.stop()


def test_errors_reach_only_their_client(ctx):
    """WRONGTYPE (and an unknown-argument error) go to the client that caused them; the
    others sharing the upstream see their own replies, in order."""
    server = harness.RedisServer()
    sy = _start(ctx, server, workers=1)
    clients = [Resp(sy.redis_port) for _ in range(20)]
    try:
        check(clients[0].cmd("SET", "str", "v") == "OK", "SET str")
        for rnd in range(5):
            for i, c in enumerate(clients):
                if i % 2:
                    c.send_cmds([("LPUSH", "str", "x"), ("GET", "str"), ("INCRBY", "n", "notanumber")])
                else:
                    c.send_cmds([("GET", "str"), ("INCR", "ok%d" % i)])
            for i, c in enumerate(clients):
                if i % 2:
                    e1, v, e2 = c.read(), c.read(), c.read()
                    check(isinstance(e1, Err) and e1.startswith("WRONGTYPE"), "client %d: %r" % (i, e1))
                    check(v == b"v" and isinstance(e2, Err) and "not an integer" in e2, "client %d: %r %r" % (i, v, e2))
                else:
                    v, n = c.read(), c.read()
                    check(v == b"v" and n == rnd + 1, "client %d round %d: %r %r" % (i, rnd, v, n))
        check(len(_upstreams(server)) == 1, "one shared upstream")
    finally:
        for c in clients:
            c.close()
        sy.stop()


def test_killed_shared_upstream_fails_only_commands_in_flight(ctx):
    """CLIENT KILL of the shared upstream while writes wait in it (CLIENT PAUSE WRITE): the
    clients with a command in flight get -ERR for it and go on; an idle client does not
    notice; the next command opens a new shared upstream."""
    server = harness.RedisServer()
    sy = _start(ctx, server, workers=1)
    busy = [Resp(sy.redis_port) for _ in range(3)]
    idle = Resp(sy.redis_port)
    try:
        for c in busy + [idle]:
            check(c.cmd("PING") == "PONG", "PING")
        ups = _upstreams(server)
        check(len(ups) == 1, "one shared upstream: %r" % ups)
        with Resp(server.port) as ctl:
            check(ctl.cmd("CLIENT", "PAUSE", "20000", "WRITE") == "OK", "CLIENT PAUSE")
            for i, c in enumerate(busy):
                c.send_cmds([("SET", "p%d" % i, "1"), ("SET", "q%d" % i, "1")])
            rs.wait_for(lambda: any(int(u.get("qbuf", "0")) > 0 or u.get("cmd") == "set" for u in _upstreams(server)),
                        what="the writes to wait in the shared upstream")
            check(ctl.cmd("CLIENT", "KILL", "ID", ups[0]["id"]) == 1, "CLIENT KILL the shared upstream")
            for c in busy:
                got = [c.read(timeout=10), c.read(timeout=10)]
                check(all(isinstance(g, Err) and "switchyard" in g for g in got), "in-flight commands fail: %r" % got)
            check(ctl.cmd("CLIENT", "UNPAUSE") == "OK", "CLIENT UNPAUSE")
        for i, c in enumerate(busy):
            check(c.cmd("SET", "r%d" % i, "2") == "OK", "client %d goes on after the kill" % i)
        check(idle.cmd("GET", "r0") == b"2", "the idle client did not notice")
        check(server.cli("EXISTS", "p0").stdout.strip() == "0", "the killed writes never ran")
        ups2 = _upstreams(server)
        check(len(ups2) == 1 and ups2[0]["id"] != ups[0]["id"], "a new shared upstream: %r" % ups2)
    finally:
        for c in busy + [idle]:
            c.close()
        sy.stop()


def test_pipelined_clients_get_replies_in_order(ctx):
    """Ten clients each write 300 commands at once (SET, GET, INCR, a 20 kB value): every
    client gets its own replies, in order."""
    server = harness.RedisServer()
    sy = _start(ctx, server, workers=1)
    clients = [Resp(sy.redis_port) for _ in range(10)]
    big = "z" * 20000
    try:
        for i, c in enumerate(clients):
            cmds = []
            for j in range(100):
                cmds += [("SET", "c%d:%d" % (i, j), big if j % 10 == 0 else str(j)), ("GET", "c%d:%d" % (i, j)),
                         ("INCR", "cnt%d" % i)]
            c.send_cmds(cmds)
        for i, c in enumerate(clients):
            for j in range(100):
                got = [c.read(timeout=20), c.read(timeout=20), c.read(timeout=20)]
                want = ["OK", (big if j % 10 == 0 else str(j)).encode(), j + 1]
                check(got == want, "client %d command %d: %r" % (i, j, [repr(g)[:40] for g in got]))
        check(len(_upstreams(server)) == 1, "one shared upstream")
    finally:
        for c in clients:
            c.close()
        sy.stop()


def test_client_leaving_with_replies_pending(ctx):
    """A client that writes many commands and leaves at once: its replies are read and
    dropped; the others keep their replies and the shared upstream stays."""
    server = harness.RedisServer()
    sy = _start(ctx, server, workers=1)
    check(server.cli("SET", "big", "y" * 50000).stdout.strip() == "OK", "SET big")
    stay = Resp(sy.redis_port)
    try:
        check(stay.cmd("PING") == "PONG", "PING")
        ups = _upstreams(server)
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", sy.redis_port))
            s.sendall(b"".join(rs.encode("GET", "big") for _ in range(200)))
            s.close()
            for k in range(20):
                check(stay.cmd("INCR", "stay") == _ * 20 + k + 1, "the staying client's own replies")
        ups2 = _upstreams(server)
        check([u["id"] for u in ups2] == [u["id"] for u in ups], "the shared upstream stayed: %r %r" % (ups, ups2))
        rs.wait_for(lambda: len(_show_clients(sy)) == 1, what="the leavers to be gone")
    finally:
        stay.close()
        sy.stop()


def test_client_that_stops_reading_is_closed(ctx):
    """A client that stops reading in the middle of its replies holds up the shared upstream
    (head of line); after RS_MUX_STALL_MS (5 s) it is closed, and the client queued behind it
    gets its reply."""
    server = harness.RedisServer()
    sy = _start(ctx, server, workers=1)
    check(server.cli("SET", "big", "y" * 100000).stdout.strip() == "OK", "SET big")
    other = Resp(sy.redis_port)
    stuck = socket.create_connection(("127.0.0.1", sy.redis_port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        check(other.cmd("PING") == "PONG", "PING")
        mark = sy.log_size()
        stuck.sendall(b"".join(rs.encode("GET", "big") for _ in range(400)))   # 40 MB, never read
        rs.wait_for(lambda: any("pending=" in c["detail"] and not c["detail"].startswith("pending=0")
                                for c in _show_clients(sy)), what="the stuck client's replies to be owed")
        other.send_cmds([("INCR", "n")])
        check(other.read(timeout=20) == 1, "the client behind the stuck one is answered")
        lines = sy.wait_log(r"event=client_stalled", since=mark, count=1)
        check(len(lines) == 1, "the stuck client was closed as stalled: %r" % lines)
        check(other.cmd("GET", "big", timeout=10) == b"y" * 100000, "the shared upstream goes on")
    finally:
        stuck.close()
        other.close()
        sy.stop()


def test_switch_moves_shared_clients(ctx):
    """SWITCH with shared and pinned clients: the shared ones move at once to the new target's
    shared upstream, the pinned ones by their own move; none is left on the old store."""
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, rs.endpoint(builtin), "REDIS_STORE_ENDPOINT",
                                   extra="active = builtin\nmultiplex = on")],
                         globals_extra=ss.GLOBALS + "workers = 2\n")
    conf = conf.replace("drain_timeout = 2\n", "", 1)
    conf += ("\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n" % harness.free_port()
             + harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=ctx.builtin.conninfo()))
    sy = harness.Switchyard(conf, env={"REDIS_STORE_ENDPOINT": "redis://127.0.0.1:%d" % external.port})
    sy.redis_port = port
    clients = [Resp(port) for _ in range(10)]
    pinned = Resp(port)
    con = ss.Console(sy)
    try:
        for i, c in enumerate(clients):
            check(c.cmd("SET", "before%d" % i, "1") == "OK", "SET before")
        check(pinned.cmd("SELECT", "2") == "OK", "SELECT 2")
        row, _t0, _t1 = con.switch("redis-store", "external")
        check(row["moved"] == "11" and row["closed"] == "0", "SWITCH: %r" % row)
        check(_upstreams(builtin) == [], "nothing left on the old store: %r" % _upstreams(builtin))
        for i, c in enumerate(clients):
            check(c.cmd("SET", "after%d" % i, "1") == "OK", "SET after")
        check(pinned.cmd("SET", "p", "1") == "OK", "pinned SET after")
        check(external.cli("DBSIZE").stdout.strip() == "10" and external.cli("GET", "p", db=2).stdout.strip() == "1",
              "the moved clients write to external")
        check(1 <= len(_upstreams(external)) <= 3, "shared (one per worker) + one pinned: %r" % _upstreams(external))
    finally:
        for c in clients + [pinned]:
            c.close()
        con.close()
        sy.stop()


def test_multiplex_setting_is_checked(ctx):
    """multiplex takes on/off; anything else stops startup with a message naming the key."""
    conf = os.path.join(harness.tmpdir("bad"), "sy.conf")
    with open(conf, "w") as f:
        f.write(rs.redis_conf([rs.Route("redis-store", harness.free_port(), "127.0.0.1:1", None,
                                        extra="multiplex = sometimes")]))
    env = harness.clean_env({"ASAN_OPTIONS": "detect_leaks=0"})
    r = harness.run([harness.switchyard_bin(), "--config", conf], env=env, timeout=10)
    out = r.stdout + r.stderr
    check(r.returncode != 0 and "multiplex" in out, "multiplex = sometimes: %s" % out[-1000:])
