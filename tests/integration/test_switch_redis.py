"""
test_switch_redis.py - issue 4, test 4: Redis sessions across switches.

Route redis-store: builtin and external are two plain redis-servers, starting on builtin;
drain_timeout = 5 s (switch_support). The console is reached on a postgres listener of the
same switchyard.

  - 50 hiredis clients (tests/tools/switch_redis_check.c) SET and GET keys of their own for
    15 s while the route is switched 8 times (the issue says 10; fewer keep the suite short
    under ASan). 0 errors; every SWITCH moves every session and closes none; and every
    acknowledged SET is on exactly one store, the one active at the time:
      * no key on a store while that store was certainly inactive (from the end of the switch
        away from it to the start of the switch back to it);
      * for each switch, every SET on the old store was sent before any SET on the new store
        was acknowledged (nothing reaches the old store after anything reached the new one);
      * each client crosses over exactly once per switch;
      * no key is on a store that the clients were not told about (nothing written twice or
        unacknowledged), and a sample of values is byte-exact.
    A subscriber on the same route receives, after each switch, a message published on the
    newly active store directly (and PUBLISH there counts it as a receiver).
  - A BLPOP 0 waiting across a switch is released by a push on its (old) store, after which
    the switch completes before the deadline and the client is on the new store; a BLPOP
    nobody pushes to is answered -ERR and closed at the deadline.
"""

import os
import random
import subprocess
import time

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss

CLIENTS = 50
SECONDS = 15
SWITCHES = 8
ROUTE = "redis-store"


def _value(client, rnd):
    """The value switch_redis_check writes in (client, round)."""
    lens = (1, 7, 100, 1000, 1, 7, 100, 300, 1, 7, 100, 300, 1, 7, 100, 4097)   # as src_value
    ln = lens[(rnd + client) % len(lens)]
    head = "%d:%d:" % (client, rnd)
    return (head + "".join(chr(ord("a") + (i * 7 + rnd) % 26) for i in range(len(head), ln))).encode()


def _keys(server, prefix):
    r = harness.run([harness.REDIS_CLI, "-h", "127.0.0.1", "-p", str(server.port), "--scan", "--pattern",
                     prefix + ":*"], env=harness.clean_env(), timeout=120)
    check(r.returncode == 0, "redis-cli --scan failed: %s" % r.stderr)
    return set(r.stdout.split())


def _read_message(sub, what):
    v = sub.read(timeout=10, what=what)
    return v


def test_switch_redis_checkers_and_subscriber(ctx):
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external)
    stores = {"builtin": builtin, "external": external}
    con = ss.Console(sy)
    check(con.active(ROUTE) == "builtin", "redis-store does not start on builtin: %r" % con.route(ROUTE))

    sub = rs.Resp(sy.redis_port, timeout=15)
    sub.send_cmds([("SUBSCRIBE", "sw:news")])
    v = sub.read(timeout=10, what="SUBSCRIBE")
    check(v == [b"subscribe", b"sw:news", 1], "SUBSCRIBE answered %r" % (v,))

    d = harness.tmpdir("src")
    prefix = "sw%d" % random.randrange(1 << 30)
    acks_file = os.path.join(d, "acks.txt")
    outfile = os.path.join(d, "out.txt")
    with open(outfile, "wb") as out:
        load = harness.Proc([harness.tool("switch_redis_check"), "127.0.0.1", str(sy.redis_port), str(CLIENTS),
                             str(SECONDS), prefix, acks_file], env=harness.clean_env(), stdout=out,
                            log=os.path.join(d, "err.txt"), name="switch_redis_check")
    deadline = time.monotonic() + 30
    while int(con.route(ROUTE)["clients"]) < CLIENTS + 1:
        if load.poll() is not None or time.monotonic() > deadline:
            fail("the %d checker clients did not connect (route %r; checker rc %s): %s"
                 % (CLIENTS, con.route(ROUTE), load.poll(), harness.log_tail(os.path.join(d, "err.txt"))))
        time.sleep(0.05)
    t_connected = time.monotonic()

    switches = []   # (from, to, t_start, t_end, row)
    spacing = (SECONDS - 3.0) / SWITCHES
    to = "external"
    for i in range(SWITCHES):
        at = t_connected + 1.0 + i * spacing
        time.sleep(max(0.0, at - time.monotonic()))   # switches spread over the load: the test's schedule
        if load.poll() is not None:
            fail("the checker ended (rc %s) before switch %d: %s"
                 % (load.poll(), i + 1, harness.log_tail(os.path.join(d, "err.txt"))))
        frm = "builtin" if to == "external" else "external"
        row, t0, t1 = con.switch(ROUTE, to)
        check(row["from"] == frm and row["closed"] == "0" and row["moved"] == str(CLIENTS + 1),
              "switch %d to %s with %d checkers and a subscriber: %r" % (i + 1, to, CLIENTS, row))
        switches.append((frm, to, t0, t1, row))
        # the subscriber is on the new store now, and only there
        n = stores[to].cli("PUBLISH", "sw:news", "after-%d" % (i + 1))
        check(n.stdout.strip() == "1", "PUBLISH on %s after switch %d counted %r receivers"
              % (to, i + 1, n.stdout.strip()))
        n = stores[frm].cli("PUBLISH", "sw:news", "stale-%d" % (i + 1))
        check(n.stdout.strip() == "0", "PUBLISH on the old store %s after switch %d still counted %r receivers"
              % (frm, i + 1, n.stdout.strip()))
        v = sub.read(timeout=10, what="subscriber after switch %d" % (i + 1))
        check(v == [b"message", b"sw:news", b"after-%d" % (i + 1)],
              "subscriber after switch %d received %r" % (i + 1, v))
        to = frm
    try:
        rc = load.wait(timeout=SECONDS + 60)
    except subprocess.TimeoutExpired:
        fail("switch_redis_check did not finish")
    with open(outfile, "rb") as f:
        summary = f.read().decode("utf-8", "replace").strip()
    errtext = harness.log_tail(os.path.join(d, "err.txt"))
    check(rc == 0 and "errors=0" in summary, "switch_redis_check rc %s: %s\n%s" % (rc, summary, errtext))
    print("    %s; switch duration_ms %s" % (summary, ",".join(r["duration_ms"] for (_a, _b, _c, _d, r) in switches)),
          flush=True)
    check(sub.nothing_for(0.3), "the subscriber received something unexpected")
    sub.close()
    check(con.active(ROUTE) == "builtin", "route not back on builtin: %r" % con.route(ROUTE))

    # every acknowledged SET, on the right store
    acks = {}   # (client, round) -> (sent, acked)
    crossed = []   # (client, round) whose GET found nil: it must have run on the other store
    with open(acks_file) as f:
        for line in f:
            c, r, s, a, nil = line.split()
            acks[(int(c), int(r))] = (float(s), float(a))
            if nil == "1":
                crossed.append((int(c), int(r)))
    check(acks, "the checker acknowledged no SET")
    on = {}
    for name, srv in stores.items():
        for k in _keys(srv, prefix):
            _p, c, r = k.split(":")
            key = (int(c), int(r))
            check(key not in on, "key %s is on both stores" % k)
            on[key] = name
    missing = [k for k in acks if k not in on]
    check(not missing, "%d acknowledged SETs are on neither store, e.g. %s:%d:%d"
          % (len(missing), prefix, missing[0][0], missing[0][1]) if missing else "")
    extra = [k for k in on if k not in acks]
    check(not extra, "%d keys on the stores were never acknowledged, e.g. %r" % (len(extra), extra[:3]))

    inactive = {"builtin": [], "external": [(float("-inf"), switches[0][2])]}
    for i, (frm, _to, _t0, t1, _r) in enumerate(switches):
        nxt = switches[i + 1][2] if i + 1 < len(switches) else float("inf")
        inactive[frm].append((t1, nxt))
    for key, (sent, acked) in acks.items():
        for lo, hi in inactive[on[key]]:
            check(not (lo < sent and acked < hi),
                  "SET %s:%d:%d (sent %.6f, acked %.6f) is on %s, inactive from %.6f to %.6f"
                  % (prefix, key[0], key[1], sent, acked, on[key], lo, hi))
    for i, (frm, to_, t0, t1, _r) in enumerate(switches):
        prev = switches[i - 1][2] if i > 0 else float("-inf")
        nxt = switches[i + 1][2] if i + 1 < len(switches) else float("inf")
        old = [s for k, (s, a) in acks.items() if on[k] == frm and prev <= s <= t1]
        new = [a for k, (s, a) in acks.items() if on[k] == to_ and t0 <= a <= nxt]
        check(old and new, "switch %d: SETs on the old store %d, on the new store %d" % (i + 1, len(old), len(new)))
        check(max(old) < min(new), "switch %d (%s -> %s): a SET sent to the old store at %.6f, after one on the "
              "new store was acknowledged at %.6f" % (i + 1, frm, to_, max(old), min(new)))
    for c in range(CLIENTS):
        rounds = sorted(r for (cc, r) in acks if cc == c)
        check(rounds == list(range(1, len(rounds) + 1)), "client %d: rounds are not 1..%d" % (c, len(rounds)))
        seq = [on[(c, r)] for r in rounds]
        changes = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
        check(seq[0] == "builtin" and changes == len(switches),
              "client %d started on %s and changed store %d times over %d switches"
              % (c, seq[0], changes, len(switches)))
    for c, r in crossed:
        check((c, r + 1) in acks and on[(c, r)] != on[(c, r + 1)],
              "client %d round %d: GET found nil, but the client did not cross to the other store there" % (c, r))
    for key in random.sample(sorted(acks), min(200, len(acks))):
        v = rs.Resp(stores[on[key]].port)
        got = v.cmd("GET", "%s:%d:%d" % (prefix, key[0], key[1]))
        v.close()
        check(got == _value(*key), "value of %s:%d:%d on %s differs" % (prefix, key[0], key[1], on[key]))
    con.close()
    sy.stop()


test_switch_redis_checkers_and_subscriber.timeout = 150


def test_switch_redis_blpop_across_switch(ctx):
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external)
    con = ss.Console(sy)
    other = rs.Resp(sy.redis_port)
    check(other.cmd("SET", "sw:other", "1") == "OK", "SET")

    # released by a push on its own (old) store while the switch waits for it
    a = rs.Resp(sy.redis_port, timeout=30)
    a.send_cmds([("BLPOP", "sw:qa", "0")])
    rs.wait_blocked(builtin)
    t0 = time.monotonic()
    mark = sy.log_size()
    sw = ss.SwitchThread(sy, ROUTE, "external")
    ss.wait_switching(con, ROUTE)
    ss.wait_prepared(sy, ROUTE, since=mark)   # the switch now waits for the BLPOP alone
    check(a.nothing_for(0.1), "the BLPOP was answered before anything was pushed")
    check(builtin.cli("RPUSH", "sw:qa", "pushed").stdout.strip() == "1", "RPUSH on builtin")
    v = a.read(timeout=10, what="BLPOP released by a push on its store")
    check(v == [b"sw:qa", b"pushed"], "BLPOP answered %r" % (v,))
    row, _s, _e = sw.join_result(timeout=ss.DRAIN_TIMEOUT + 20)
    secs = time.monotonic() - t0
    check(row["moved"] == "2" and row["closed"] == "0", "SWITCH across a released BLPOP: %r" % row)
    check(float(row["duration_ms"]) < (ss.DRAIN_TIMEOUT - 0.3) * 1000,
          "the switch took %s ms (%.1fs here): it ran into the deadline" % (row["duration_ms"], secs))
    check(a.cmd("SET", "sw:a-after", "x") == "OK", "SET after the move")
    check(external.cli("GET", "sw:a-after").stdout.strip() == "x", "the BLPOP client's SET is not on external")
    check(builtin.cli("EXISTS", "sw:a-after").stdout.strip() == "0", "the BLPOP client's SET reached builtin")
    check(other.cmd("GET", "sw:other") is None, "the idle client is not on external")

    # nobody pushes: -ERR and a close at the deadline
    b = rs.Resp(sy.redis_port, timeout=30)
    b.send_cmds([("BLPOP", "sw:qb", "0")])
    rs.wait_blocked(external)
    t0 = time.monotonic()
    sw = ss.SwitchThread(sy, ROUTE, "builtin")
    v = b.read(timeout=ss.DRAIN_TIMEOUT + 15, what="BLPOP at the switch deadline")
    secs = time.monotonic() - t0
    check(isinstance(v, rs.Err) and v.startswith("ERR switchyard"), "BLPOP at the deadline answered %r" % (v,))
    check(ss.DRAIN_TIMEOUT - 0.5 <= secs <= ss.DRAIN_TIMEOUT + 4,
          "the blocked client was answered %.1fs after the switch began, want ~%ds" % (secs, ss.DRAIN_TIMEOUT))
    b.expect_close(timeout=5)
    row, _s, _e = sw.join_result(timeout=20)
    check(row["moved"] == "2" and row["closed"] == "1", "SWITCH across an unreleased BLPOP: %r" % row)
    check(other.cmd("GET", "sw:other") == b"1", "the idle client is not back on builtin")
    check(a.cmd("GET", "sw:a-after") is None, "the first BLPOP client is not back on builtin")
    for x in (a, other):
        x.close()
    con.close()
    sy.stop()


def test_switch_hold_max_frees_the_route_from_a_stalled_client(ctx):
    """One client sends half a command and stops. An atomic switch holds the route's other
    sessions only for switch_hold_max (1 s here, drain_timeout 5 s): then the stalled one
    gets -ERR ... reconnect, and everyone else moves and carries on."""
    builtin = harness.RedisServer()
    external = harness.RedisServer()
    sy = ss.start_redis(ctx, builtin, external, globals_extra="switch_hold_max = 1\n")
    con = ss.Console(sy)
    others = [rs.Resp(sy.redis_port) for _ in range(10)]
    for i, o in enumerate(others):
        check(o.cmd("SET", "hm:%d" % i, "b") == "OK", "SET before the switch")
    stalled = rs.Resp(sy.redis_port, timeout=30)
    stalled.sock.sendall(b"*3\r\n$3\r\nSET\r\n$5\r\nhm:st")      # and nothing more
    mark = sy.log_size()
    sw = ss.SwitchThread(sy, ROUTE, "external")
    ss.wait_switching(con, ROUTE)
    ss.wait_prepared(sy, ROUTE, since=mark)
    held = others[0]
    held.send_cmds([("GET", "hm:0")])                          # held until the switch ends
    sy.wait_log(r"event=switch_deadline route=%s .*reason=switch_hold_max" % ROUTE, since=mark, timeout=10,
                what="the hold budget running out")
    v = stalled.read(timeout=10, what="the stalled client's error")
    check(isinstance(v, rs.Err) and "reconnect" in v, "the stalled client got %r" % (v,))
    stalled.expect_close(timeout=5)
    row, _s, _e = sw.join_result(timeout=ss.DRAIN_TIMEOUT + 10)
    check(row["moved"] == "10" and row["closed"] == "1", "SWITCH past a stalled client: %r" % row)
    check(float(row["duration_ms"]) < (ss.DRAIN_TIMEOUT - 1) * 1000,
          "the switch took %s ms: it waited for drain_timeout, not switch_hold_max" % row["duration_ms"])
    check(held.read(timeout=10, what="the held GET") is None, "the held GET ran on external (no hm:0 there)")
    for i, o in enumerate(others):
        check(o.cmd("SET", "hm:%d" % i, "e") == "OK", "SET after the switch")
        check(external.cli("GET", "hm:%d" % i).stdout.strip() == "e", "client %d's SET is not on external" % i)
        o.close()
    con.close()
    sy.stop()
