"""
test_workers.py - sessions on several worker loops (proxy/core/worker.c):

  - accepted connections are handed to the workers in turn, Postgres and Redis alike; the
    per-worker gauge in /metrics and the console's SHOW CLIENTS see every loop's sessions,
    and the counts go back to zero when the clients leave;
  - one worker and four workers both carry redis-benchmark and pgbench with exact counts
    (so the loop count changes nothing a client can see);
  - `workers` is validated, shown by --check, and a RELOAD that changes it is refused.

The other integration tests run with two workers (harness.TEST_WORKERS) whatever the CPU
count, so switchover, console, cancel and shutdown all cross loops there too.
"""

import re
import time

import os

import harness
from harness import check, fail
import redis_support as rs
import switch_support as ss
from test_metrics import scrape, series

REDIS_BENCHMARK = "/usr/bin/redis-benchmark"


def _check_config(text):
    """switchyard --check on a config text; CompletedProcess."""
    d = harness.tmpdir("wk")
    path = os.path.join(d, "switchyard.conf")
    with open(path, "w") as f:
        f.write(text)
    return harness.run([harness.switchyard_bin(), "--config", path, "--check"], env=harness.clean_env(), timeout=30)


def _conf(workers, metrics, pg_port, pg_builtin, redis_port, redis_builtin):
    return ("[switchyard]\nworkers = %s\nmetrics_listen = 127.0.0.1:%d\ndrain_timeout = 2\n\n"
            "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
            "[route pg]\nlistener = pg\ndatabases = sourcegraph\ndefault = true\nbuiltin = %s\n\n"
            "[listener redis-store]\nprotocol = redis\nlisten = 127.0.0.1:%d\n\n"
            "[route redis-store]\nlistener = redis-store\nbuiltin = %s\n"
            # SHOW SERVERS is counted one row per client: each its own upstream
            "multiplex = off\n"
            % (workers, metrics, pg_port, pg_builtin, redis_port, redis_builtin))


class Setup:
    def __init__(self, ctx, workers):
        self.redis = harness.RedisServer()
        self.metrics = harness.free_port()
        self.pg = harness.free_port()
        self.rport = harness.free_port()
        self.sy = harness.Switchyard(_conf(workers, self.metrics, self.pg, ctx.builtin.conninfo(),
                                           self.rport, rs.endpoint(self.redis)))
        harness.wait_port(self.metrics, proc=self.sy.proc.popen, what="metrics endpoint")

    def per_worker(self):
        samples, types, _ = scrape(self.metrics)
        check(types.get("switchyard_worker_clients") == "gauge", "no switchyard_worker_clients gauge")
        out = {}
        for (name, labels), v in samples.items():
            if name == "switchyard_worker_clients":
                out[int(dict(labels)["worker"])] = int(v)
        return out

    def wait_idle(self):
        deadline = time.monotonic() + 10
        while True:
            per = self.per_worker()
            if sum(per.values()) == 0:
                return per
            check(time.monotonic() < deadline, "sessions still counted after the clients left: %s" % per)
            time.sleep(0.1)


def test_sessions_spread_over_workers(ctx):
    st = Setup(ctx, 3)
    # the port listens a moment before the ready line
    st.sy.wait_log(r"event=ready .*workers=3", timeout=10, what="a ready line that says workers=3")
    check(st.wait_idle() == {0: 0, 1: 0, 2: 0}, "three workers, none busy, at start")

    # 9 Redis and 3 Postgres sessions, each proven working; handed out in turn: 4 per worker.
    rconns, pconns = [], []
    try:
        for i in range(9):
            r = rs.Resp(st.rport)
            check(r.cmd("SET", "w%d" % i, str(i)) == "OK", "SET through redis session %d" % i)
            rconns.append(r)
        for i in range(3):
            w = harness.PgWire(st.pg).startup(database="sourcegraph")
            check(w.query("SELECT %d" % i) == [(str(i),)], "query through pg session %d" % i)
            pconns.append(w)
        per = st.per_worker()
        check(per == {0: 4, 1: 4, 2: 4}, "12 sessions over 3 workers: %s, want 4 each" % per)
        check(series(scrape(st.metrics)[0], "switchyard_clients") == 12, "switchyard_clients with 12 sessions")

        # The console (a 13th session, on some worker) lists the sessions of every loop.
        con = ss.Console(st.sy)
        rows = con.rows("SHOW CLIENTS")
        routes = sorted(r["route"] for r in rows)
        check(routes.count("redis-store") == 9 and routes.count("pg") == 3,
              "SHOW CLIENTS sees %s, want 9 redis-store and 3 pg" % routes)
        check(all(r["held"] == "no" and r["state"] == "relay" for r in rows if r["route"] != ""),
              "every routed session relays, none held: %r" % rows)
        # SHOW SERVERS lists the server connections of every loop, one per routed session,
        # each naming its client, its upstream address and the state it is in.
        srows = con.rows("SHOW SERVERS")
        ids = {r["id"]: r for r in rows}
        check(sorted(r["route"] for r in srows) == ["pg"] * 3 + ["redis-store"] * 9,
              "SHOW SERVERS: %r, want 3 pg and 9 redis-store rows" % srows)
        for r in srows:
            c = ids.get(r["client_id"])
            check(c is not None and c["route"] == r["route"], "server row %r names a client of its route" % r)
            check(r["target"] == "builtin" and r["state"] == "relay" and r["upstream"] == c["target"],
                  "server row %r: builtin, relay, the client's upstream %r" % (r, c["target"]))
        con.close()

        # Every session still works after the console walked them all.
        for i, r in enumerate(rconns):
            check(r.cmd("GET", "w%d" % i) == str(i).encode(), "GET through redis session %d" % i)
        for i, w in enumerate(pconns):
            check(w.query("SELECT 'again'") == [("again",)], "pg session %d after SHOW CLIENTS" % i)
    finally:
        for r in rconns:
            r.close()
        for w in pconns:
            w.terminate()
    check(st.wait_idle() == {0: 0, 1: 0, 2: 0}, "per-worker counts after everyone left")
    st.sy.stop()


def test_one_and_four_workers_carry_load(ctx):
    for workers in (1, 4):
        st = Setup(ctx, workers)
        # redis-benchmark: exact upstream counts, no errors.
        before = rs.commandstats(st.redis)
        r = harness.run([REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(st.rport), "-c", "20",
                         "-n", "4000", "-t", "set,get", "--csv"], env=harness.clean_env(), timeout=120)
        check(r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(),
              "redis-benchmark with %d workers: rc %s %s" % (workers, r.returncode, r.stderr[-300:]))
        after = rs.commandstats(st.redis)
        for cmd in ("set", "get"):
            got = after.get(cmd, 0) - before.get(cmd, 0)
            check(got == 4000, "%d workers: redis-server saw %d %s calls, want 4000" % (workers, got, cmd))
        # pgbench select-only with 8 clients: every transaction through, none failed.
        p = harness.run([harness.PGBENCH, "-h", "127.0.0.1", "-p", str(st.pg), "-U", "postgres", "-n",
                         "-c", "8", "-t", "200", "-f", "/dev/stdin", "sourcegraph"],
                        env=harness.clean_env(), input="SELECT 1;\n", timeout=120)
        check(p.returncode == 0, "pgbench with %d workers: %s" % (workers, p.stderr[-400:]))
        m = re.search(r"number of transactions actually processed: (\d+)", p.stdout)
        check(m is not None and int(m.group(1)) == 1600,
              "pgbench with %d workers processed %s, want 1600" % (workers, m.group(1) if m else p.stdout[-300:]))
        check("number of failed transactions: 0" in p.stdout or "failed" not in p.stdout,
              "pgbench with %d workers reported failures: %s" % (workers, p.stdout[-300:]))
        per = st.wait_idle()
        check(sorted(per) == list(range(workers)), "%d workers in metrics: %s" % (workers, per))
        st.sy.stop()


def test_workers_setting(ctx):
    base = _conf("%s", 0, harness.free_port(), ctx.builtin.conninfo(), harness.free_port(), "127.0.0.1:6379")
    base = base.replace("metrics_listen = 127.0.0.1:0", "metrics_listen = off")
    for bad in ("0", "65", "abc", "-1"):
        r = _check_config(base % bad)
        check(r.returncode == 2, "workers = %s accepted (rc %s)" % (bad, r.returncode))
        check("workers" in r.stderr and "auto or 1..64" in r.stderr,
              "workers = %s: error does not say what is allowed: %r" % (bad, r.stderr))
    r = _check_config(base % "auto")
    check(r.returncode == 0 and re.search(r"workers\s*= auto", r.stdout), "--check with auto: %r" % r.stdout[-400:])
    r = _check_config(base % "5")
    check(r.returncode == 0 and re.search(r"workers\s*= 5\b", r.stdout), "--check with 5: %r" % r.stdout[-400:])

    # RELOAD cannot change the number of loops: refused, saying restart.
    st = Setup(ctx, 2)
    text = open(st.sy.conf_path).read()
    with open(st.sy.conf_path, "w") as f:
        f.write(text.replace("workers = 2", "workers = 3"))
    con = ss.Console(st.sy)
    try:
        con.command("RELOAD")
        fail("RELOAD that changes workers was accepted")
    except harness.PgError as e:
        check("workers" in e.message and "restart" in e.message, "RELOAD refusal: %s" % e.message)
    con.close()
    check(st.per_worker().keys() == {0, 1}, "still two workers after the refused reload")
    st.sy.stop()
