"""
test_redis_routes.py - issue 3, case 1: redis-cli through each route, and each kind of
endpoint lands where it should.

One switchyard serves six routes, each on its own listener, so one start covers every form
of endpoint (host:port, redis:// with a percent-encoded password, an ACL user, rediss://
verified against CA A, /2) and the precedence of REDIS_STORE_ENDPOINT over REDIS_ENDPOINT.
Where a route landed is checked on the upstream itself: the key written through switchyard
is read directly from the server (in the right db), and CLIENT INFO, ACL WHOAMI and
INFO keyspace tell who and where switchyard is there.

Also (issue 13) the server connections behind those clients: SHOW SERVERS across a switch,
with the ones dialed ahead of a move and the ones a move closed.
"""

import os
import urllib.parse

import harness
from harness import check, fail
import redis_support as rs
from redis_support import cli, cli_ok

PW = "pa:ss@w/rd%"          # needs percent-encoding in a URL
ALICE_PW = "alice-Secret-9"


def _servers(ctx):
    builtin = harness.RedisServer()
    pw = harness.RedisServer(password=PW)
    acl = harness.RedisServer(acl=["user alice on >%s ~* &* +@all" % ALICE_PW])
    tls = harness.RedisServer(tls=ctx.tls)
    return builtin, pw, acl, tls


def _setup(ctx):
    builtin, pw, acl, tls = _servers(ctx)
    ports = {n: harness.free_port() for n in ("redis-store", "redis-cache", "plain", "tls", "db2", "ip-tls")}
    routes = [
        rs.Route("redis-store", ports["redis-store"], rs.endpoint(builtin), "REDIS_STORE_ENDPOINT,REDIS_ENDPOINT"),
        rs.Route("redis-cache", ports["redis-cache"], rs.endpoint(builtin), "REDIS_CACHE_ENDPOINT,REDIS_ENDPOINT"),
        rs.Route("plain", ports["plain"], rs.endpoint(builtin), "PLAIN_ENDPOINT"),
        rs.Route("tls", ports["tls"], rs.endpoint(builtin), "TLS_ENDPOINT",
                 "external_tls_ca_file = %s" % ctx.tls.ca_a),
        rs.Route("ip-tls", ports["ip-tls"], rs.endpoint(builtin), "IPTLS_ENDPOINT",
                 "external_tls_ca_file = %s" % ctx.tls.ca_a),
        rs.Route("db2", ports["db2"], rs.endpoint(builtin), "DB2_ENDPOINT"),
    ]
    env = {
        # store: its own variable wins over REDIS_ENDPOINT -> the requirepass server
        "REDIS_STORE_ENDPOINT": "redis://:%s@127.0.0.1:%d" % (urllib.parse.quote(PW, safe=""), pw.port),
        # cache: falls back to REDIS_ENDPOINT -> the ACL server as alice
        "REDIS_ENDPOINT": "redis://alice:%s@127.0.0.1:%d" % (ALICE_PW, acl.port),
        # no variable set for "plain": it stays on its built-in (host:port form)
        "TLS_ENDPOINT": "rediss://localhost:%d" % tls.tls_port,
        "IPTLS_ENDPOINT": "rediss://127.0.0.1:%d/3" % tls.tls_port,
        "DB2_ENDPOINT": "redis://127.0.0.1:%d/2" % builtin.port,
    }
    sy = harness.Switchyard(rs.redis_conf(routes), env=env)
    return sy, ports, builtin, pw, acl, tls, env


def _client_info(port):
    out = cli_ok(port, "CLIENT", "INFO")
    return rs.client_info_fields(out)


def test_each_route_lands_where_it_should(ctx):
    sy, ports, builtin, pw, acl, tls, env = _setup(ctx)

    # every route answers redis-cli, and the key it writes is where the route points
    for name, port in ports.items():
        out = cli_ok(port, "SET", "route-key", "via-" + name)
        check(out == "OK", "SET through route %s answered %r" % (name, out))
        out = cli_ok(port, "GET", "route-key")
        check(out == "via-" + name, "GET through route %s answered %r" % (name, out))

    def direct_get(server, db=None, tls_=False, user=None, password=None):
        r = server.cli("GET", "route-key", db=db, tls=tls_, user=user, password=password)
        check(r.returncode == 0, "direct GET failed: %s" % r.stderr)
        return r.stdout.strip()

    # redis-store: REDIS_STORE_ENDPOINT (requirepass, percent-encoded password) beats REDIS_ENDPOINT
    got = direct_get(pw)
    check(got == "via-redis-store", "requirepass server has route-key=%r, expected via-redis-store" % got)
    ci = _client_info(ports["redis-store"])
    check(ci.get("laddr") == "127.0.0.1:%d" % pw.port and ci.get("user") == "default" and ci.get("db") == "0",
          "redis-store upstream CLIENT INFO: %r" % ci)

    # redis-cache: REDIS_ENDPOINT, ACL user alice
    got = direct_get(acl)
    check(got == "via-redis-cache", "ACL server has route-key=%r, expected via-redis-cache" % got)
    out = cli_ok(ports["redis-cache"], "ACL", "WHOAMI")
    check(out == "alice", "ACL WHOAMI through redis-cache: %r" % out)
    ci = _client_info(ports["redis-cache"])
    check(ci.get("user") == "alice" and ci.get("laddr") == "127.0.0.1:%d" % acl.port,
          "redis-cache upstream CLIENT INFO: %r" % ci)

    # plain: no variable set -> built-in (host:port form), db 0
    got = direct_get(builtin, db=0)
    check(got == "via-plain", "built-in db 0 has route-key=%r, expected via-plain" % got)
    ci = _client_info(ports["plain"])
    check(ci.get("laddr") == "127.0.0.1:%d" % builtin.port and ci.get("db") == "0",
          "plain upstream CLIENT INFO: %r" % ci)

    # tls: rediss://localhost to the TLS port, verified against CA A (name and SNI localhost)
    ci = _client_info(ports["tls"])
    check(ci.get("laddr") == "127.0.0.1:%d" % tls.tls_port,
          "tls route's upstream connection is not on the TLS port %d: %r" % (tls.tls_port, ci))
    got = direct_get(tls, db=0)
    check(got == "via-tls", "TLS server db 0 has route-key=%r, expected via-tls" % got)
    # ip-tls: rediss://127.0.0.1 (IP SAN) with /3
    ci = _client_info(ports["ip-tls"])
    check(ci.get("laddr") == "127.0.0.1:%d" % tls.tls_port and ci.get("db") == "3",
          "ip-tls upstream CLIENT INFO: %r" % ci)
    got = direct_get(tls, db=3)
    check(got == "via-ip-tls", "TLS server db 3 has route-key=%r, expected via-ip-tls" % got)

    # db2: /2 selects db 2 upstream; db 0 of the same server is untouched by it
    ci = _client_info(ports["db2"])
    check(ci.get("db") == "2" and ci.get("laddr") == "127.0.0.1:%d" % builtin.port,
          "db2 upstream CLIENT INFO: %r" % ci)
    got = direct_get(builtin, db=2)
    check(got == "via-db2", "built-in db 2 has route-key=%r, expected via-db2" % got)
    ks = rs.info(builtin, "keyspace")
    check(ks.get("db2", "").startswith("keys=1,"), "INFO keyspace on the built-in: %r" % ks)
    # a client SELECT inside the db2 route is the client's own business
    r = cli(ports["db2"], "-n", "5", "SET", "k5", "v")  # redis-cli sends SELECT 5 first
    check(r.returncode == 0 and r.stdout.strip() == "OK", "SELECT 5 + SET through db2: %r %r" % (r.stdout, r.stderr))
    check(direct_get(builtin, db=2) == "via-db2", "db 2 changed after a client SELECT")
    r = builtin.cli("GET", "k5", db=5)
    check(r.stdout.strip() == "v", "client SELECT 5 did not reach the upstream: %r" % r.stdout)

    # the setup replies (AUTH, SELECT) never reach the client: a raw exchange answers exactly
    with rs.Resp(ports["db2"]) as r:
        r.send(b"PING\r\n")
        check(r.read() == "PONG", "first reply on the db2 route is %r, not PONG" % r.last_raw)
        check(r.nothing_for(0.3), "extra bytes after PONG on the db2 route: %r" % bytes(r.buf[r.pos:]))
    with rs.Resp(ports["redis-cache"]) as r:
        r.send(b"PING\r\n")
        check(r.read() == "PONG", "first reply on the ACL route is %r, not PONG" % r.last_raw)
        check(r.nothing_for(0.3), "extra bytes after PONG on the ACL route: %r" % bytes(r.buf[r.pos:]))

    log = sy.log_text()
    for secret in (PW, ALICE_PW, urllib.parse.quote(PW, safe="")):
        check(secret not in log, "a password appears in switchyard's log")
    sy.stop()


def test_check_masks_redis_password(ctx):
    """--check shows the endpoint with the password masked (issue 3, Endpoints)."""
    port = harness.free_port()
    d = harness.tmpdir("chk")
    conf = os.path.join(d, "sy.conf")
    with open(conf, "w") as f:
        f.write(rs.redis_conf([rs.Route("redis-store", port, "127.0.0.1:1", "REDIS_STORE_ENDPOINT,REDIS_ENDPOINT")]))
    env = harness.clean_env({"REDIS_ENDPOINT": "redis://alice:%s@db.example.org:6390/2" % ALICE_PW,
                             "ASAN_OPTIONS": harness.ASAN_OPTIONS, "UBSAN_OPTIONS": harness.UBSAN_OPTIONS})
    r = harness.run([harness.switchyard_bin(), "--config", conf, "--check"], env=env, timeout=30)
    out = r.stdout + r.stderr
    check(r.returncode == 0, "--check exited %d:\n%s" % (r.returncode, out[-3000:]))
    check(ALICE_PW not in out, "--check printed the password:\n" + out)
    check("db.example.org:6390" in out, "--check does not show the external endpoint:\n" + out)


def test_malformed_endpoint_stops_startup(ctx):
    """A malformed endpoint stops startup with a message naming the variable."""
    port = harness.free_port()
    d = harness.tmpdir("bad")
    conf = os.path.join(d, "sy.conf")
    with open(conf, "w") as f:
        f.write(rs.redis_conf([rs.Route("redis-store", port, "127.0.0.1:1", "REDIS_STORE_ENDPOINT,REDIS_ENDPOINT")]))
    for bad in ("redis://:pw@:6379", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:abc", "redis://127.0.0.1:6379/x"):
        env = harness.clean_env({"REDIS_ENDPOINT": bad, "ASAN_OPTIONS": "detect_leaks=0"})
        r = harness.run([harness.switchyard_bin(), "--config", conf], env=env, timeout=10)
        out = r.stdout + r.stderr
        check(r.returncode != 0, "switchyard started with REDIS_ENDPOINT=%s:\n%s" % (bad, out[-1000:]))
        check("REDIS_ENDPOINT" in out, "startup error for %s does not name REDIS_ENDPOINT:\n%s" % (bad, out[-1000:]))


def test_server_connections_across_a_switch(ctx):
    """issue 13: a Redis server connection is an object of its own. While a switch waits for a
    MULTI, a held client shows two server rows in SHOW SERVERS: the one it relays to (builtin,
    relay) and the one dialed ahead of its move (external, connecting). After the switch each
    client has one, on external, relaying; the old ones are closed through the server's close
    path (event=server_close reason=moved), one per client moved, and none is left listed."""
    import switch_support as ss
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    # one server object per client is the subject: without multiplexing (test_redis_mux
    # covers the shared upstream across a switch)
    sy = ss.start_redis(ctx, builtin, external, route_extra="multiplex = off")
    con = ss.Console(sy)
    idle, sel, m = rs.Resp(sy.redis_port), rs.Resp(sy.redis_port), rs.Resp(sy.redis_port)
    try:
        check(idle.cmd("PING") == "PONG", "PING")                      # moves by a swap
        check(sel.cmd("SELECT", "2") == "OK", "SELECT 2")              # moves with a replay
        check(m.cmd("MULTI") == "OK" and m.cmd("SET", "k", "1") == "QUEUED", "MULTI / SET")
        clients = [c for c in con.rows("SHOW CLIENTS") if c["route"] == "redis-store"]
        ids = sorted(c["id"] for c in clients)
        check(len(ids) == 3, "three redis-store clients: %r" % clients)
        up_b, up_e = clients[0]["target"], "127.0.0.1:%d" % external.port
        check(up_b == "127.0.0.1:%d" % builtin.port, "clients on builtin: %r" % clients)

        mark = sy.log_size()
        sw = ss.SwitchThread(sy, "redis-store", "external")
        ss.wait_switching(con, "redis-store")
        ss.wait_prepared(sy, "redis-store", since=mark)   # held now, until the MULTI ends
        rows = [r for r in con.rows("SHOW SERVERS") if r["route"] == "redis-store"]
        relaying = sorted(r["client_id"] for r in rows
                          if (r["target"], r["upstream"], r["state"]) == ("builtin", up_b, "relay"))
        ahead = sorted(r["client_id"] for r in rows
                       if (r["target"], r["upstream"], r["state"]) == ("external", up_e, "connecting"))
        check(relaying == ids, "during the switch each client relays to builtin: %r" % rows)
        held = sorted(c["id"] for c in clients if "multi=0" in c["detail"])
        check(len(held) == 2 and set(held) <= set(ahead), "a server dialed ahead for each held client: %r" % rows)
        check(len(rows) == len(relaying) + len(ahead), "no other server rows during the switch: %r" % rows)

        check(m.cmd("EXEC", timeout=10) == ["OK"], "EXEC")
        row, _a, _b = sw.join_result(timeout=ss.DRAIN_TIMEOUT + 20)
        check(row["moved"] == "3" and row["closed"] == "0", "SWITCH redis-store: %r" % row)
        rows = [r for r in con.rows("SHOW SERVERS") if r["route"] == "redis-store"]
        check(sorted(r["client_id"] for r in rows) == ids and
              all((r["target"], r["upstream"], r["state"]) == ("external", up_e, "relay") for r in rows),
              "after the switch one server per client, on external, relaying: %r" % rows)
        closed = sy.wait_log(r"event=server_close .*reason=moved", since=mark, count=3)
        check(all("upstream=%s" % up_b in l for l in closed), "the moved-from servers closed: %r" % closed)
        check(idle.cmd("SET", "a", "1") == "OK" and sel.cmd("SET", "b", "2") == "OK", "SET after the move")
        check(external.cli("GET", "a").stdout.strip() == "1" and
              external.cli("GET", "b", db=2).stdout.strip() == "2", "the moved clients write to external")
    finally:
        for c in (idle, sel, m):
            c.close()
        con.close()
        sy.stop()
