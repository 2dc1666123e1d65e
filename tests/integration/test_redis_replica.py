"""
test_redis_replica.py - issue 12, Redis item 1: replication over a client connection.

After SYNC or PSYNC a Redis master sends keepalive newlines, "+FULLRESYNC" (PSYNC only),
the RDB as "$<len>\\r\\n<bytes>" with no CRLF after it (or the diskless "$EOF:<mark>" form),
then the command stream. Through switchyard, with real servers and clients:

  - `redis-cli --rdb` gives a file that redis-check-rdb accepts, whose keys and values
    (DUMP of every key, once loaded into a fresh server) are those of a direct --rdb, in
    both payload forms (diskless and disk), with a value larger than a relay buffer;
  - a real `redis-server --replicaof 127.0.0.1 <switchyard port>` reaches
    master_link_status:up and replicates writes made on the upstream, with and without a
    client_password on the route (masterauth);
  - `redis-cli --replica` prints the stream (the SET made on the upstream);
  - at a SWITCH the replica is pinned (SHOW ROUTES), shows as state replica in SHOW CLIENTS,
    is not moved, and at the deadline gets "-ERR switchyard: ... a replication stream
    cannot move" between two stream commands and is closed, while an ordinary client moves
    to the new target; the real replica then reconnects and follows the new target;
  - a SYNC the server refuses (-NOPERM) is an ordinary reply, byte for byte as direct, and
    the client goes on; REPLCONF ACK/GETACK owe no reply, so the client stays movable;
  - client_idle_timeout spares a replica whose stream is quiet (it fails with the
    exemption removed).
"""

import os
import shutil
import socket
import subprocess
import threading
import time

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss

ROUTE = "redis-store"
FAST = ("--repl-diskless-sync-delay", "0")


def _fill(server):
    """A few keys of each kind, and one value larger than a relay buffer (64 KiB)."""
    with rs.Resp(server.port, timeout=30) as r:
        if server.password:
            check(r.cmd("AUTH", server.password) == "OK", "AUTH on the upstream")
        check(r.cmd("SET", "s:1", "one") == "OK", "SET")
        check(r.cmd("RPUSH", "l:1", "a", "b", "c") == 3, "RPUSH")
        check(r.cmd("HSET", "h:1", "f", "v", "g", "w") == 2, "HSET")
        check(r.cmd("ZADD", "z:1", "1", "m", "2", "n") == 2, "ZADD")
        check(r.cmd("SET", "big", b"x" * 300000) == "OK", "SET big")
        for i in range(200):
            r.send_cmds([("SET", "k:%d" % i, "v%d" % i)])
        for i in range(200):
            check(r.read(timeout=10) == "OK", "SET k:%d" % i)


def _dumps(port, password=None):
    """{key: DUMP bytes} of a server."""
    out = {}
    with rs.Resp(port, timeout=30) as r:
        if password:
            check(r.cmd("AUTH", password) == "OK", "AUTH")
        cursor = b"0"
        keys = []
        while True:
            cursor, batch = r.cmd("SCAN", cursor, "COUNT", "1000")
            keys += batch
            if cursor == b"0":
                break
        for k in keys:
            out[k] = r.cmd("DUMP", k)
    return out


def _loaded(path):
    """A fresh redis-server that loaded the RDB at path (its port)."""
    d = harness.tmpdir("rdbload")
    shutil.copy(path, os.path.join(d, "dump.rdb"))
    return harness.RedisServer(extra_args=("--dir", d, "--dbfilename", "dump.rdb"))


def _rdb(port, path):
    r = rs.cli(port, "--rdb", path, timeout=60)
    check(r.returncode == 0, "redis-cli --rdb via port %d exited %d: %s %s" % (port, r.returncode, r.stdout[-300:],
                                                                                r.stderr[-300:]))
    c = harness.run(["redis-check-rdb", path], timeout=60)
    check(c.returncode == 0 and "RDB looks OK" in c.stdout + c.stderr,
          "redis-check-rdb refused %s: %s %s" % (path, c.stdout[-500:], c.stderr[-500:]))
    return r


def test_redis_cli_rdb_through_switchyard(ctx):
    """--rdb through switchyard, diskless and from disk, equals a direct --rdb key for key."""
    builtin = harness.RedisServer(extra_args=FAST)
    external = harness.RedisServer()
    _fill(builtin)
    sy = ss.start_redis(ctx, builtin, external)
    want = _dumps(builtin.port)
    check(len(want) == 205, "the upstream holds %d keys" % len(want))
    d = harness.tmpdir("rdb")
    for mode in ("yes", "no"):   # $EOF:<mark> (diskless) and $<len> (disk) payloads
        check(builtin.cli("CONFIG", "SET", "repl-diskless-sync", mode).stdout.strip() == "OK", "CONFIG SET")
        mark = sy.log_size()
        direct = os.path.join(d, "direct-%s.rdb" % mode)
        via = os.path.join(d, "via-%s.rdb" % mode)
        _rdb(builtin.port, direct)
        out = _rdb(sy.redis_port, via)
        check("EOF marker" in out.stdout + out.stderr if mode == "yes" else "EOF marker" not in out.stdout + out.stderr,
              "repl-diskless-sync %s: redis-cli said %r" % (mode, (out.stdout + out.stderr)[-300:]))
        sy.wait_log(r"event=replica_stream conn=\d+ route=%s .*payload_bytes=\d+" % ROUTE, since=mark,
                    what="the payload passing through switchyard")
        for path in (direct, via):
            srv = _loaded(path)
            got = _dumps(srv.port)
            check(set(got) == set(want), "%s: keys %d, want %d" % (path, len(got), len(want)))
            bad = [k for k in want if got[k] != want[k]]
            check(not bad, "%s: values differ for %r" % (path, bad[:5]))
            srv.stop()
    sy.stop()


def _wait_link_up(replica, timeout=30):
    harness.wait_until(lambda: rs.info(replica, "replication").get("master_link_status") == "up", timeout,
                       "the replica's master_link_status:up")


def _wait_key(replica, key, value, timeout=20):
    harness.wait_until(lambda: replica.cli("GET", key).stdout.strip() == value, timeout,
                       "key %s=%s on the replica" % (key, value))


def _replica_rows(con):
    return [r for r in con.rows("SHOW CLIENTS") if r["route"] == ROUTE and r["state"] == "replica"]


def test_real_replica_follows_switchyard(ctx):
    """redis-server --replicaof switchyard's port: link up, writes on the upstream arrive;
    with client_password = pw on the route, masterauth pw does it (AUTH answered locally)."""
    for password in (None, "repl-pw"):
        builtin = harness.RedisServer(extra_args=FAST)
        external = harness.RedisServer()
        _fill(builtin)
        sy = ss.start_redis(ctx, builtin, external,
                            route_extra="client_password = %s\n" % password if password else "")
        args = ("--replicaof", "127.0.0.1", str(sy.redis_port)) + (("--masterauth", password) if password else ())
        replica = harness.RedisServer(extra_args=args)
        _wait_link_up(replica)
        _wait_key(replica, "s:1", "one")
        check(replica.cli("STRLEN", "big").stdout.strip() == "300000", "the big value on the replica")
        for i in range(20):
            check(builtin.cli("SET", "after:%d" % i, "w%d" % i).stdout.strip() == "OK", "SET on the upstream")
        check(builtin.cli("INCRBY", "ctr", "41").stdout.strip() == "41", "INCRBY")
        _wait_key(replica, "after:19", "w19")
        _wait_key(replica, "ctr", "41")
        con = ss.Console(sy)
        rows = _replica_rows(con)
        check(len(rows) == 1 and "replica=stream" in rows[0]["detail"], "SHOW CLIENTS: %r" % rows)
        check(con.route(ROUTE)["pinned"] == "1", "SHOW ROUTES pinned: %r" % con.route(ROUTE))
        con.close()
        m = rs.info(builtin, "replication")
        check(m.get("connected_slaves") == "1" and "state=online" in m.get("slave0", ""),
              "the upstream does not see an online replica: %r" % m)
        replica.stop()
        sy.stop()


def test_redis_cli_replica_shows_the_stream(ctx):
    builtin = harness.RedisServer(extra_args=FAST)
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external)
    p = subprocess.Popen([harness.REDIS_CLI, "-h", "127.0.0.1", "-p", str(sy.redis_port), "--replica"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=harness.clean_env())
    lines = []

    def reader():
        for line in p.stdout:
            lines.append(line.decode("utf-8", "replace"))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        harness.wait_until(lambda: any("Logging commands from master" in x for x in lines), 20,
                           lambda: "redis-cli --replica to finish its sync: %r" % lines)
        check(builtin.cli("SET", "seen:by", "cli").stdout.strip() == "OK", "SET")
        harness.wait_until(lambda: any('"set","seen:by","cli"' in x.lower() for x in lines), 20,
                           lambda: "the SET in redis-cli --replica's output: %r" % lines)
    finally:
        p.kill()
        p.wait()
    sy.stop()


def _read_sync(sock, timeout=20):
    """Read a SYNC's answer (keepalives, $<len> header, payload) from a raw socket; returns
    the bytes after the payload."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        while buf.startswith(b"\n"):
            buf = buf[1:]
        if b"\r\n" in buf:
            head, rest = buf.split(b"\r\n", 1)
            check(head.startswith(b"$"), "SYNC answered %r" % head[:100])
            n = int(head[1:])
            while len(rest) < n:
                chunk = sock.recv(65536)
                check(chunk, "closed in the payload")
                rest += chunk
            return rest[n:]
        chunk = sock.recv(65536)
        check(chunk, "closed before the payload")
        buf += chunk


def test_replica_at_a_switch_is_pinned_and_closed_at_the_deadline(ctx):
    builtin = harness.RedisServer(extra_args=FAST)
    external = harness.RedisServer(extra_args=FAST)
    check(builtin.cli("CONFIG", "SET", "repl-diskless-sync", "no").stdout.strip() == "OK", "CONFIG SET")
    sy = ss.start_redis(ctx, builtin, external)
    con = ss.Console(sy)
    replica = harness.RedisServer(extra_args=("--replicaof", "127.0.0.1", str(sy.redis_port)))
    _wait_link_up(replica)
    # a hand-made replica: SYNC on a raw socket (no capa eof: the $<len> form)
    raw = socket.create_connection(("127.0.0.1", sy.redis_port))
    raw.sendall(b"SYNC\r\n")
    stream = _read_sync(raw)
    other = rs.Resp(sy.redis_port)
    check(other.cmd("SET", "sw:other", "1") == "OK", "SET")
    check(builtin.cli("SET", "sw:before", "b").stdout.strip() == "OK", "SET on builtin")
    _wait_key(replica, "sw:before", "b")
    rows = harness.wait_clients(con, lambda rows: len([r for r in rows if r["state"] == "replica"]) == 2,
                                "both replicas in SHOW CLIENTS", route=ROUTE)
    check(con.route(ROUTE)["pinned"] == "2", "SHOW ROUTES pinned: %r" % con.route(ROUTE))

    t0 = time.monotonic()
    row, _t0, _t1 = con.switch(ROUTE, "external")
    secs = time.monotonic() - t0
    check(row["closed"] == "2" and row["moved"] == "1", "SWITCH with two replicas: %r" % row)
    check(ss.DRAIN_TIMEOUT - 0.5 <= secs <= ss.DRAIN_TIMEOUT + 4,
          "the replicas were closed %.1fs after the switch began, want the deadline (%ds)" % (secs, ss.DRAIN_TIMEOUT))
    # the raw replica: whole stream commands, then our -ERR, then the close
    raw.settimeout(10)
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            break
        stream += chunk
    tail = stream.rsplit(b"\r\n-ERR", 1)
    check(len(tail) == 2 and tail[1].startswith(b" switchyard: route %s switched to external; reconnect "
                                                b"(a replication stream cannot move)" % ROUTE.encode()),
          "the raw replica's stream ended with %r" % stream[-300:])
    check(b"sw:before" in stream, "the raw replica missed the stream before the switch: %r" % stream[-300:])
    raw.close()
    # the ordinary client moved
    check(other.cmd("GET", "sw:other") is None, "the ordinary client is not on external")
    check(other.cmd("SET", "sw:after", "e") == "OK", "SET after the switch")
    check(external.cli("GET", "sw:after").stdout.strip() == "e", "the SET is not on external")
    # the real replica reconnects through switchyard, now to external, and follows it
    check(external.cli("SET", "sw:ext", "x").stdout.strip() == "OK", "SET on external")
    _wait_key(replica, "sw:ext", "x", timeout=30)
    _wait_link_up(replica)
    check(replica.cli("EXISTS", "sw:before").stdout.strip() == "0", "the replica kept builtin's data after its resync")
    other.close()
    con.close()
    replica.stop()
    sy.stop()


def test_refused_sync_and_replconf_ack_keep_the_client_ordinary(ctx):
    """A SYNC the server refuses (an ACL user without the right) is an ordinary error reply,
    and the client's next commands are answered as direct; REPLCONF ACK, which Redis never
    answers, owes nothing (the session is idle after it, so a switch can move it)."""
    builtin = harness.RedisServer(acl=["noreplica on >pw ~* &* +@all -sync -psync"])
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external)
    steps = rs.encode("AUTH", "noreplica", "pw") + b"SYNC\r\n" + rs.encode("PSYNC", "?", "-1") + b"PING\r\n"
    out = []
    for port in (builtin.port, sy.redis_port):
        with rs.Resp(port) as r:
            r.send(steps)
            out.append([r.read(timeout=10) and r.last_raw for _ in range(4)])
            check(r.nothing_for(0.2), "more replies than commands on port %d" % port)
    check(out[0] == out[1], "refused SYNC: switchyard %r, direct %r" % (out[1], out[0]))
    check(out[0][1].startswith(b"-NOPERM"), "direct SYNC answered %r" % out[0][1])
    with rs.Resp(sy.redis_port) as r:
        r.send(rs.encode("REPLCONF", "ACK", "0") + rs.encode("REPLCONF", "GETACK", "*") + b"PING\r\n")
        check(r.read(timeout=10) == "PONG" and r.nothing_for(0.2), "REPLCONF ACK/GETACK were answered")
        con = ss.Console(sy)
        harness.wait_clients(con, lambda rows: len(rows) == 1 and "pending=0" in rows[0]["detail"]
                             and rows[0]["state"] == "relay", "the client idle after REPLCONF ACK", route=ROUTE)
        row, _t0, _t1 = con.switch(ROUTE, "external")
        check(row["moved"] == "1" and row["closed"] == "0", "SWITCH after REPLCONF ACK: %r" % row)
        check(r.cmd("PING") == "PONG", "PING after the move")
        con.close()
    sy.stop()


def test_client_idle_timeout_spares_a_replica(ctx):
    """client_idle_timeout closes an idle client, as Redis's timeout does, but not a replica
    whose stream is quiet (Redis spares replicas too). The replica is a raw SYNC, which
    sends no REPLCONF ACK, and the master PINGs it only once a minute."""
    builtin = harness.RedisServer(extra_args=FAST + ("--repl-ping-replica-period", "60",
                                                     "--repl-diskless-sync", "no"))
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external, globals_extra="client_idle_timeout = 1\n")
    raw = socket.create_connection(("127.0.0.1", sy.redis_port))
    raw.sendall(b"SYNC\r\n")
    _read_sync(raw)
    con = ss.Console(sy)
    rid = _replica_rows(con)[0]["id"]
    mark = sy.log_size()
    for _ in range(3):   # three sweeps that closed an idle client passed the replica by
        idle = rs.Resp(sy.redis_port)
        check(idle.cmd("PING") == "PONG", "PING")
        sy.wait_log(r"event=idle_timeout conn=\d+ ", since=sy.log_size(), timeout=10, what="an idle client closed")
        idle.close()
    check(not [l for l in sy.log_text()[mark:].splitlines() if "event=idle_timeout conn=%s " % rid in l],
          "the replica was closed for being idle")
    check([r["id"] for r in _replica_rows(con)] == [rid], "the replica is gone: %r" % con.rows("SHOW CLIENTS"))
    check(builtin.cli("SET", "late", "1").stdout.strip() == "OK", "SET")
    raw.settimeout(10)
    got = b""
    while b"late" not in got:
        chunk = raw.recv(65536)
        check(chunk, "the replica's stream closed")
        got += chunk
    raw.close()
    con.close()
    sy.stop()
