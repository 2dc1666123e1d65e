"""
test_switch_types.py - issue 10: a protocol-level prepared statement whose parameter has a
user-defined type (an enum here) survives a move to a server where that type has another
OID, as on a copy made by pg_dump or logical replication. The replay resolves the type by
its qualified name on the new server instead of reusing the old server's OID.
"""

import struct

import harness
import switch_support as ss
from harness import PgError, PgWire, check


def _msg(typ, body):
    return typ + struct.pack("!I", len(body) + 4) + body


def _bind_execute(w, value):
    """Bind s1 with one text parameter, Execute, Sync; returns the first column or raises."""
    v = value.encode()
    body = b"\0" + b"s1\0" + struct.pack("!H", 0) + struct.pack("!H", 1) + struct.pack("!I", len(v)) + v + struct.pack("!H", 0)
    w.send(_msg(b"B", body) + _msg(b"E", b"\0" + struct.pack("!I", 0)) + _msg(b"S", b""))
    return w.read_result()


def test_prepared_statement_with_user_type_moves(ctx):
    a = harness.PgCluster("types-a", hba="trust", setup=False)
    b = harness.PgCluster("types-b", hba="trust", setup=False)
    for c, pad in ((a, False), (b, True)):
        c.sql("CREATE DATABASE sourcegraph")
        if pad:   # shift B's OIDs so the same type gets another number there
            c.sql("CREATE TYPE pad1 AS ENUM ('x'); CREATE TYPE pad2 AS ENUM ('y')", db="sourcegraph")
        c.sql("CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('happy', 'sad')", db="sourcegraph")
    oid_a = int(a.sql("SELECT 'app.mood'::regtype::oid", db="sourcegraph"))
    oid_b = int(b.sql("SELECT 'app.mood'::regtype::oid", db="sourcegraph"))
    check(oid_a != oid_b, "the test needs different OIDs for app.mood (both %d)" % oid_a)
    port = harness.free_port()
    conf = ("[switchyard]\nmetrics_listen = off\n%s\n[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%d\n\n"
            % (ss.GLOBALS, port))
    conf += harness.pg_route("pg", "sourcegraph", default=True, env_prefix="", builtin=a.conninfo(),
                             extra="active = builtin")
    sy = harness.Switchyard(conf, env={"PGHOST": "127.0.0.1", "PGPORT": str(b.port), "PGUSER": "postgres",
                                       "PGSSLMODE": "disable"})
    w = PgWire(port)
    w.startup(database="sourcegraph")
    sql = b"SELECT $1::text || ' on ' || pg_typeof($1)::text || ' ' || current_setting('port')"
    w.send(_msg(b"P", b"s1\0" + sql + b"\0" + struct.pack("!HI", 1, oid_a)) + _msg(b"S", b""))
    w.read_result()
    check(_bind_execute(w, "happy") == [("happy on app.mood %d" % a.port,)], "before the switch")
    console = ss.Console(sy)
    row, _, _ = console.switch("pg", "external")
    check(row.get("moved") == "1", "the session did not move: %r" % row)
    try:
        got = _bind_execute(w, "sad")
    except PgError as e:
        got = "error %s: %s" % (e.sqlstate, e.message)
    check(got == [("sad on app.mood %d" % b.port,)],
          "the prepared statement after the move (app.mood is OID %d on the old server, %d on the new): %r"
          % (oid_a, oid_b, got))
    w.close()
    console.close()
    sy.stop()
