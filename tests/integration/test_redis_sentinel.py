"""
test_redis_sentinel.py - issue 10 part 3: a Redis target given as redis-sentinel://.

The test makes its own replication: a master, a replica of it, and one sentinel
(`redis-server CONF --sentinel`, the binary Debian's redis-sentinel package links to) that
monitors the master as "mymaster". switchyard's route redis-store has
builtin = redis-sentinel://:<password>@127.0.0.1:<dead port>,127.0.0.1:<sentinel>/mymaster:
the first sentinel of the list answers nothing, so switchyard must go on to the next one,
which has a password (requirepass): it answers NOAUTH, and switchyard AUTHs with the URL's.

  - (a third time with two sentinels, the watched one stopped mid-run: the watcher goes on
    to the next of the list, and the failover is asked of that one)
  - No sentinel answers at startup: commands get "no sentinel answered" until one does.
  - At startup switchyard asks the sentinel for the master (event=sentinel_watch names it),
    and --check / the log show the endpoint with the password masked.
  - (twice: multiplex = on and off) 20 clients (tests/tools/switch_redis_check: SET a new key, GET it back, per round) run
    through switchyard while `SENTINEL FAILOVER mymaster` promotes the replica. switchyard
    pauses the route at +try-failover, and at +switch-master moves the sessions to the new
    master with an atomic switch (event=sentinel_switch_done), then resumes. Afterwards:
      * 0 errors (a paused command waits; none was in flight on the old master when the
        replica was promoted);
      * every acknowledged SET is on the new master with its value: no acknowledged write
        was lost;
      * rounds went on after the switch, on the new master (the old one is a read-only
        replica by then, so a write that reached it would have been an error), and once
        the old master is a replica no client connection is left on it, while the new
        master has switchyard's.
"""

import os
import random
import signal
import time

import harness
from harness import check, fail
import redis_support as rs

CLIENTS = 20
SECONDS = 8
MASTER = "mymaster"
PASSWORD = "s3nt1nel-pw"


class Sentinel:
    """redis-server --sentinel on a free port, monitoring 127.0.0.1:master_port as MASTER."""

    def __init__(self, master_port, password, port=None, extra=""):
        self.dir = harness.tmpdir("sentinel")
        self.password = password
        self.port = port or harness.free_port()
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n" % (self.port, self.dir))
            f.write("sentinel monitor %s 127.0.0.1 %d 1\n" % (MASTER, master_port))
            if password:
                f.write("sentinel auth-pass %s %s\n" % (MASTER, password))
            if password:
                f.write("requirepass %s\n" % password)     # switchyard gets NOAUTH, then AUTHs
            f.write(extra)
            f.write("sentinel down-after-milliseconds %s 5000\n" % MASTER)
            f.write("sentinel failover-timeout %s 20000\n" % MASTER)
        self.proc = harness.Proc([harness.REDIS_SERVER, self.conf, "--sentinel"], env=harness.clean_env(home=self.dir),
                                 log=os.path.join(self.dir, "sentinel.log"), name="redis-sentinel")
        harness.wait_port(self.port, proc=self.proc.popen, what="redis-sentinel")

    def cli(self, *args):
        return harness.run([harness.REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)]
                           + (["-a", self.password, "--no-auth-warning"] if self.password else []) + [str(a) for a in args],
                           env=harness.clean_env(), timeout=30)

    def log(self):
        return harness.log_tail(os.path.join(self.dir, "sentinel.log"), 40)


def _value(client, rnd):
    """The value switch_redis_check writes in (client, round): see its header."""
    lens = (1, 7, 100, 1000, 1, 7, 100, 300, 1, 7, 100, 300, 1, 7, 100, 4097)
    ln = lens[(rnd + client) % len(lens)]
    head = "%d:%d:" % (client, rnd)
    return (head + "".join(chr(ord("a") + (i * 7 + rnd) % 26) for i in range(len(head), ln))).encode()


def _role(server):
    r = server.cli("ROLE")
    return r.stdout.split("\n")[0].strip() if r.returncode == 0 else "?"


def _ts(line):
    """Seconds of a log line's ts=...Z field."""
    import datetime
    v = line.split("ts=", 1)[1].split()[0].rstrip("Z")
    return datetime.datetime.fromisoformat(v).timestamp()


def _clients(server):
    """Normal client connections on server, the sentinel's and this redis-cli's own left out."""
    r = server.cli("CLIENT", "LIST", "TYPE", "normal")
    check(r.returncode == 0, "CLIENT LIST: %s" % r.stderr)
    return [l for l in r.stdout.splitlines() if l.strip() and "cmd=client" not in l and " name=sentinel-" not in l]


def _dump(server, prefix):
    """{key: value} of every key under prefix on server (redis-cli --scan, then MGET in slices)."""
    r = harness.run([harness.REDIS_CLI, "-h", "127.0.0.1", "-p", str(server.port), "-a", PASSWORD, "--no-auth-warning",
                     "--scan", "--pattern", prefix + ":*"], env=harness.clean_env(), timeout=120)
    check(r.returncode == 0, "redis-cli --scan failed: %s" % r.stderr)
    keys = sorted(set(r.stdout.split()))
    out = {}
    import redis
    c = redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
    for i in range(0, len(keys), 500):
        part = keys[i:i + 500]
        for k, v in zip(part, c.mget(part)):
            out[k] = v
    c.close()
    return out


def _failover(multiplex, lose_sentinel=False):
    master = harness.RedisServer(password=PASSWORD, extra_args=("--masterauth", PASSWORD))
    replica = harness.RedisServer(password=PASSWORD, extra_args=("--masterauth", PASSWORD, "--replicaof", "127.0.0.1",
                                                                 str(master.port)))
    harness.wait_until(lambda: "master_link_status:up" in replica.cli("INFO", "replication").stdout, timeout=20,
                       what="the replica in sync with the master")
    sen = Sentinel(master.port, PASSWORD)

    def sentinel_knows_replica(sen):
        r = sen.cli("SENTINEL", "REPLICAS", MASTER)
        return r.returncode == 0 and str(replica.port) in r.stdout and "master-link-status\nok" in r.stdout
    harness.wait_until(lambda: sentinel_knows_replica(sen), timeout=30, what="the sentinel to see the replica")
    sen2 = None
    if lose_sentinel:
        sen2 = Sentinel(master.port, PASSWORD)
        harness.wait_until(lambda: sentinel_knows_replica(sen2), timeout=30, what="the second sentinel to see the replica")

    dead = harness.free_port()
    url = "redis-sentinel://:%s@127.0.0.1:%d,127.0.0.1:%d/%s" % (PASSWORD, dead, sen.port, MASTER)
    if sen2 is not None:
        url = url.replace("/" + MASTER, ",127.0.0.1:%d/%s" % (sen2.port, MASTER))
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, url, None, "multiplex = %s" % multiplex)],
                         globals_extra="switch_hold_max = 5")

    # --check masks the password and says how the master is found
    d = harness.tmpdir("conf")
    path = os.path.join(d, "switchyard.conf")
    with open(path, "w") as f:
        f.write(conf)
    r = harness.run([harness.switchyard_bin(), "--config", path, "--check"], env=harness.clean_env(), timeout=30)
    check(r.returncode == 0, "--check failed: %s %s" % (r.stdout, r.stderr))
    check(PASSWORD not in r.stdout + r.stderr, "--check shows the password:\n%s" % r.stdout)
    check(url.replace(PASSWORD, "****") in r.stdout,
          "--check does not show the masked sentinel endpoint:\n%s" % r.stdout)

    sy = harness.Switchyard(conf)
    sy.wait_log(r"event=sentinel_watch route=redis-store master_name=%s sentinel=127.0.0.1:%d master=127.0.0.1:%d"
                % (MASTER, sen.port, master.port), timeout=20, what="the watcher on the second sentinel")
    v = rs.cli(port, "SET", "probe", "1")
    check(v.returncode == 0 and "OK" in v.stdout, "SET through switchyard: %r %r" % (v.stdout, v.stderr))
    check(master.cli("GET", "probe").stdout.strip() == "1", "the first SET did not land on the master")

    out_dir = harness.tmpdir("src")
    prefix = "sn%d" % random.randrange(1 << 30)
    acks_file = os.path.join(out_dir, "acks.txt")
    with open(os.path.join(out_dir, "out.txt"), "wb") as out:
        load = harness.Proc([harness.tool("switch_redis_check"), "127.0.0.1", str(port), str(CLIENTS), str(SECONDS),
                             prefix, acks_file], env=harness.clean_env(), stdout=out,
                            log=os.path.join(out_dir, "err.txt"), name="switch_redis_check")
        # wait until every client has written, then fail over
        harness.wait_until(lambda: len(_dump(master, prefix)) >= CLIENTS * 3, timeout=20,
                           what="the checker clients writing")
        if sen2 is not None:
            # the watched sentinel goes away: the watcher goes on to the next one in the list
            since = sy.log_size()
            sen.proc.stop()
            sy.wait_log(r"event=sentinel_lost route=redis-store sentinel=127.0.0.1:%d" % sen.port, since=since,
                        timeout=20, what="the watcher noticing its sentinel is gone")
            sy.wait_log(r"event=sentinel_watch route=redis-store master_name=%s sentinel=127.0.0.1:%d" % (MASTER, sen2.port),
                        since=since, timeout=20, what="the watcher on the next sentinel")
            sen = sen2
        since = sy.log_size()
        f = sen.cli("SENTINEL", "FAILOVER", MASTER)
        check(f.returncode == 0 and "OK" in f.stdout, "SENTINEL FAILOVER: %r %r\n%s" % (f.stdout, f.stderr, sen.log()))
        t_failover = time.time()
        paused = sy.wait_log(r"event=pause route=redis-store", since=since, timeout=10,
                             what="the pause at +try-failover")
        sy.wait_log(r"event=sentinel_master route=redis-store side=builtin master=127.0.0.1:%d was=127.0.0.1:%d "
                    r"via=\+switch-master" % (replica.port, master.port), since=since, timeout=20,
                    what="the new master from +switch-master")
        done = sy.wait_log(r"event=sentinel_switch_done route=redis-store", since=since, timeout=20,
                           what="the sessions moved to the new master")
        t_switched = time.time()
        resumed = sy.wait_log(r"event=resume route=redis-store reason=sentinel_switch_done", since=since, timeout=5)
        rc = load.wait(timeout=SECONDS + 60)
    text = open(os.path.join(out_dir, "out.txt"), "rb").read().decode("utf-8", "replace")
    text += harness.log_tail(os.path.join(out_dir, "err.txt"), 20)
    check(rc == 0, "the checker clients saw errors across the failover (rc %s):\n%s\n%s" % (rc, text[-3000:],
                                                                                         sy.log_text()[-3000:]))
    check(" closed=0 " in done[0], "the failover switch closed sessions: %s" % done[0])
    check(_role(replica) == "master", "the replica was not promoted: %s" % _role(replica))

    # every acknowledged SET is on the new master, with its value
    harness.wait_until(lambda: _role(master) == "slave", timeout=30, what="the old master to become a replica")
    acks = []
    for line in open(acks_file):
        c, rnd, sent, acked, _nil = line.split()
        acks.append((int(c), int(rnd), float(sent), float(acked)))
    check(len(acks) > CLIENTS * 10, "too few acknowledged writes: %d" % len(acks))
    have = _dump(replica, prefix)
    lost = [(c, n) for c, n, _s, _a in acks if have.get("%s:%d:%d" % (prefix, c, n)) != _value(c, n)]
    check(not lost, "%d acknowledged writes are not on the new master (first: %r; %d keys there, %r; old: %s)"
          % (len(lost), lost[:5], len(have), list(have.items())[:2], master.cli("DBSIZE").stdout))
    check(not _clients(master), "clients left on the old master: %r" % _clients(master))
    c = rs.Resp(port, timeout=10)
    c.send_cmds([("SET", "after", "failover")])
    v = c.read(timeout=10, what="SET after the failover")
    check(v == "OK", "SET after the failover answered %r" % (v,))
    check(replica.cli("GET", "after").stdout.strip() == "failover", "the SET after the failover is not on the new master")
    check(_clients(replica), "no switchyard connection on the new master")
    c.close()
    after = [a for a in acks if a[2] > t_switched]
    check(len(after) >= CLIENTS, "only %d writes after the failover switch" % len(after))
    held = _ts(resumed[0]) - _ts(paused[0])
    print("sentinel failover (multiplex = %s): %d acknowledged writes, %d after the switch; route paused %.3f s "
          "(+try-failover to the sessions on the new master); SENTINEL FAILOVER to switch done %.2f s; %s"
          % (multiplex, len(acks), len(after), held, t_switched - t_failover, text.strip().splitlines()[-1]))
    # a RELOAD (SIGHUP) keeps the master the sentinel named: nothing is retargeted
    since = sy.log_size()
    sy.proc.send_signal(signal.SIGHUP)
    sy.wait_log(r"event=reload_done retargeted=0", since=since, timeout=10, what="the reload")
    check("reload_retarget" not in sy.log_text()[since:], "the reload retargeted:\n%s" % sy.log_text()[since:])
    check(PASSWORD not in sy.log_text(), "the log shows the password")


def test_sentinel_failover_keeps_every_write(ctx):
    """Shared upstreams (multiplex = on, the default): the clients re-attach to the new
    master's shared upstream."""
    _failover("on")


def test_sentinel_failover_own_upstreams(ctx):
    """multiplex = off: each client's own upstream is opened on the new master ahead of the
    hold, then swapped in."""
    _failover("off")


def test_reload_moves_shared_clients_to_a_new_address(ctx):
    """What the sentinel path builds on, without a sentinel: a RELOAD that gives the active
    target another address (REDIS_STORE_ENDPOINT in the env file) moves multiplexed clients
    to a shared upstream on the new address. (A shared upstream used to be found by route
    and side alone: the switch re-attached its clients to the old one, for ever.)"""
    a = harness.RedisServer()
    b = harness.RedisServer()
    d = harness.tmpdir("envf")
    env_path = os.path.join(d, "env")
    with open(env_path, "w") as f:
        f.write("REDIS_STORE_ENDPOINT=redis://127.0.0.1:%d\n" % a.port)
    port = harness.free_port()
    conf = rs.redis_conf([rs.Route("redis-store", port, "127.0.0.1:1", "REDIS_STORE_ENDPOINT", "multiplex = on")])
    sy = harness.Switchyard(conf, env_file=env_path)
    clients = [rs.Resp(port, timeout=10) for _ in range(4)]
    for i, c in enumerate(clients):
        c.send_cmds([("SET", "before:%d" % i, "a")])
        check(c.read(timeout=10, what="SET before") == "OK", "SET before the reload")
    check(a.cli("DBSIZE").stdout.strip() == "4", "the SETs before the reload are not on the first address")
    with open(env_path, "w") as f:
        f.write("REDIS_STORE_ENDPOINT=redis://127.0.0.1:%d\n" % b.port)
    since = sy.log_size()
    sy.proc.send_signal(signal.SIGHUP)
    sy.wait_log(r"event=reload_done retargeted=1", since=since, timeout=10, what="the reload")
    done = sy.wait_log(r"event=switch_done route=redis-store", since=since, timeout=10,
                       what="the switch to the new address")
    check("moved=4 closed=0" in done[0], "the switch did not move the 4 clients: %s" % done[0])
    for i, c in enumerate(clients):
        c.send_cmds([("SET", "after:%d" % i, "b")])
        check(c.read(timeout=10, what="SET after") == "OK", "SET after the reload")
    check(b.cli("DBSIZE").stdout.strip() == "4", "the SETs after the reload are not on the new address")
    check(a.cli("DBSIZE").stdout.strip() == "4", "a SET after the reload reached the old address")
    for c in clients:
        c.close()


def test_sentinel_lost_then_failover_through_the_next(ctx):
    """Two sentinels; the one switchyard listens to is stopped mid-run, switchyard goes on to
    the next one of the list, and the failover is asked of that one."""
    _failover("on", lose_sentinel=True)


def test_no_sentinel_at_startup(ctx):
    """No sentinel answers at startup: switchyard starts, a command gets a clear error (and
    no password), and once a sentinel is up on the listed address the watcher learns the
    master and commands reach it."""
    master = harness.RedisServer(password=PASSWORD)
    sport = harness.free_port()
    port = harness.free_port()
    url = "redis-sentinel://:%s@127.0.0.1:%d/%s" % (PASSWORD, sport, MASTER)
    # reconnect_window = 2: the first SET waits that long for a master, then gets the error
    sy = harness.Switchyard(rs.redis_conf([rs.Route("redis-store", port, url)], globals_extra="reconnect_window = 2"))
    sy.wait_log(r"event=sentinel_unreachable route=redis-store sentinel=127.0.0.1:%d" % sport, timeout=10)
    r = rs.cli(port, "SET", "k", "v")
    check("ERR switchyard: route redis-store: cannot connect to sentinel master %s: no sentinel answered" % MASTER
          in r.stdout + r.stderr, "SET with no sentinel answered %r %r" % (r.stdout, r.stderr))
    since = sy.log_size()
    Sentinel(master.port, PASSWORD, port=sport)
    sy.wait_log(r"event=sentinel_master route=redis-store side=builtin master=127.0.0.1:%d was=unknown "
                r"via=get-master-addr-by-name" % master.port, since=since, timeout=20)
    harness.wait_until(lambda: "OK" in rs.cli(port, "SET", "k", "v").stdout, timeout=10,
                       what="a SET through switchyard once the sentinel named the master")
    check(master.cli("GET", "k").stdout.strip() == "v", "the SET is not on the master")
    check(PASSWORD not in sy.log_text(), "the log shows the password")


def test_rediss_sentinel_speaks_tls_to_the_master(ctx):
    """rediss-sentinel://: the sentinel is asked in plain text and names the master's TLS
    port (it monitors the master over TLS itself: tls-replication yes); switchyard's upstream
    to that port is TLS, verified against builtin_tls_ca_file. The plain redis-sentinel://
    form to the same sentinel cannot talk to that port."""
    tls = ctx.tls
    master = harness.RedisServer(tls=tls)
    sen = Sentinel(master.tls_port, None, extra="tls-replication yes\ntls-cert-file %s\ntls-key-file %s\n"
                   "tls-ca-cert-file %s\ntls-auth-clients no\n" % (tls.server_crt, tls.server_key, tls.ca_a))
    ports = {n: harness.free_port() for n in ("tls", "plain", "plain-off")}
    routes = [rs.Route("tls", ports["tls"], "rediss-sentinel://127.0.0.1:%d/%s" % (sen.port, MASTER), None,
                       "builtin_tls_ca_file = %s" % tls.ca_a),
              # a shared upstream the server resets at once, and one of the client's own: both
              # answer with switchyard's error (the shared one hung before the reset's poll
              # error was handled in mux_cb)
              rs.Route("plain", ports["plain"], "redis-sentinel://127.0.0.1:%d/%s" % (sen.port, MASTER), None),
              rs.Route("plain-off", ports["plain-off"], "redis-sentinel://127.0.0.1:%d/%s" % (sen.port, MASTER),
                       None, "multiplex = off")]
    sy = harness.Switchyard(rs.redis_conf(routes))
    sy.wait_log(r"event=sentinel_watch route=tls master_name=%s sentinel=127.0.0.1:%d master=127.0.0.1:%d"
                % (MASTER, sen.port, master.tls_port), timeout=20)
    r = rs.cli(ports["tls"], "SET", "k", "over-tls")
    check(r.returncode == 0 and "OK" in r.stdout, "SET through rediss-sentinel://: %r %r" % (r.stdout, r.stderr))
    check(master.cli("GET", "k").stdout.strip() == "over-tls", "the SET is not on the master")
    for name in ("plain", "plain-off"):
        r = rs.cli(ports[name], "SET", "k", "plain", timeout=20)
        check("OK" not in r.stdout and "ERR switchyard" in r.stdout + r.stderr,
              "%s redis-sentinel:// to a TLS port answered %r %r" % (name, r.stdout, r.stderr))
