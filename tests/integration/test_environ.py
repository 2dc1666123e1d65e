"""
test_environ.py - issue 8, local users and secrets: /proc/PID/environ.

argv has long been scrubbed of -o passwords, but /proc/PID/environ shows the environment
block the process was started with, whatever unsetenv does afterwards: PGPASSWORD and the
password in REDIS_ENDPOINT stayed readable there for the life of the process. main.c now
blanks those values in place once the snapshot holds them. The clients reaching both
external targets prove the values were read first.
"""

import socket

import harness
from harness import check, fail

PG_SECRET = "secret-xyz"
REDIS_SECRET = "secret-abc"
# Only scram over TCP: a wrong or missing PGPASSWORD cannot log in.
SCRAM_HBA = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"


def _conf(pg_port, redis_port):
    return (harness.pg_conf(pg_port, [harness.pg_route(
        "pg", "sourcegraph", default=True, env_prefix="",
        builtin="host=127.0.0.1 port=1 dbname=none user=none")])
        + "\n[listener rd]\nprotocol = redis\nlisten = 127.0.0.1:%d\n\n"
          "[route rd]\nlistener = rd\nbuiltin = 127.0.0.1:1\nexternal_env = REDIS_ENDPOINT\n"
        % redis_port)


def _redis_set(port, key, value):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        cmd = [b"SET", key.encode(), value.encode()]
        s.sendall(b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in cmd))
        reply = s.recv(100)
    check(reply == b"+OK\r\n", "SET through switchyard answered %r" % reply)


def test_environ_holds_no_secrets(ctx):
    """PGPASSWORD and REDIS_ENDPOINT's password are gone from /proc/PID/environ, and both
    external targets, which need them, are reached."""
    pg = harness.PgCluster("environ", hba=SCRAM_HBA)
    pg.sql("CREATE ROLE env_user LOGIN PASSWORD '%s'" % PG_SECRET)
    rs = harness.RedisServer(password=REDIS_SECRET)
    pg_port, redis_port = harness.free_port(), harness.free_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "env_user",
           "PGDATABASE": "sourcegraph", "PGSSLMODE": "disable", "PGPASSWORD": PG_SECRET,
           "REDIS_ENDPOINT": "redis://:%s@127.0.0.1:%d" % (REDIS_SECRET, rs.port)}
    sy = harness.Switchyard(_conf(pg_port, redis_port), env=env)

    with open("/proc/%d/environ" % sy.pid, "rb") as f:
        block = f.read()
    check(b"PATH=" in block, "test bug: /proc/%d/environ has no PATH: %r" % (sy.pid, block[:200]))
    for secret in (PG_SECRET, REDIS_SECRET):
        if secret.encode() in block:
            i = block.index(secret.encode())
            fail("/proc/%d/environ still holds %s: ...%r..." % (sy.pid, secret, block[max(0, i - 40):i + 20]))

    out = harness.psql_ok(pg_port, "SELECT current_user, current_setting('port')")
    check(out == "env_user|%d" % pg.port, "the pg client did not reach the external target: %r" % out)
    _redis_set(redis_port, "environ-test", "reached")
    got = rs.cli("GET", "environ-test").stdout.strip()
    check(got == "reached", "the redis client did not reach the external target: GET gave %r" % got)
    with open("/proc/%d/environ" % sy.pid, "rb") as f:
        block = f.read()
    check(PG_SECRET.encode() not in block and REDIS_SECRET.encode() not in block,
          "a secret came back into /proc/%d/environ after the first sessions" % sy.pid)
    sy.stop()
