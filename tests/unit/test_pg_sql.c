/*
 * test_pg_sql.c - finding one PREPARE statement in a multi-statement query string.
 * Each input sits at the end of an exact-size heap buffer (no terminator is read).
 */
#include <stdlib.h>
#include "protocol/pg_sql.h"
#include "tests/unit/unit.h"

/* One text case: the answer want of a scanner. */
typedef struct { const char *sql; int want; } sql_case_t;

/* Each case's text at the end of an exact-size heap buffer: is bit of pg_sql_query_effects
 * set as want says? */
static void check_cases(const char *what, unsigned bit, const sql_case_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(c[i].sql);
        char *b = malloc(len ? len : 1);
        memcpy(b, c[i].sql, len);
        CHECK_MSG(((pg_sql_query_effects(b, len) & bit) != 0) == c[i].want, "%s: sql %s", what, c[i].sql);
        free(b);
    }
}

static const char *find(const char *sql, const char *name)
{
    static char out[512];
    size_t len = strlen(sql), start, n;
    char *buf = malloc(len ? len : 1);
    memcpy(buf, sql, len);
    int r = pg_sql_find_prepare(buf, len, name, &start, &n);
    if (r == 0)
        snprintf(out, sizeof(out), "%.*s", (int)n, buf + start);
    free(buf);
    return r == 0 ? out : NULL;
}

int main(void)
{
    CHECK_STREQ(find("PREPARE a AS SELECT 1", "a"), "PREPARE a AS SELECT 1");
    CHECK_STREQ(find("PREPARE a AS SELECT 1;", "a"), "PREPARE a AS SELECT 1");
    CHECK_STREQ(find("INSERT INTO t VALUES (1); PREPARE a AS SELECT 1; PREPARE b(int) AS SELECT $1+1", "b"),
                "PREPARE b(int) AS SELECT $1+1");
    CHECK_STREQ(find("insert into t values (1);prepare A as select 1", "a"), "prepare A as select 1");
    CHECK_STREQ(find("PREPARE \"Mixed\" AS SELECT 1; PREPARE mixed AS SELECT 2", "Mixed"), "PREPARE \"Mixed\" AS SELECT 1");
    CHECK_STREQ(find("PREPARE \"Mixed\" AS SELECT 1; PREPARE mixed AS SELECT 2", "mixed"), "PREPARE mixed AS SELECT 2");
    CHECK_STREQ(find("SELECT ';PREPARE x AS SELECT 1'; PREPARE x AS SELECT 2", "x"), "PREPARE x AS SELECT 2");
    CHECK_STREQ(find("SELECT 'it''s;'; PREPARE x AS SELECT 3", "x"), "PREPARE x AS SELECT 3");
    CHECK_STREQ(find("SELECT E'a\\';b'; PREPARE x AS SELECT 4", "x"), "PREPARE x AS SELECT 4");
    CHECK_STREQ(find("SELECT $$;PREPARE x AS SELECT 0$$; PREPARE x AS SELECT 5", "x"), "PREPARE x AS SELECT 5");
    CHECK_STREQ(find("SELECT $t$;$$;$t$; PREPARE x AS SELECT 6", "x"), "PREPARE x AS SELECT 6");
    CHECK_STREQ(find("-- PREPARE x AS SELECT 0;\nPREPARE x AS SELECT 7", "x"), "PREPARE x AS SELECT 7");
    CHECK_STREQ(find("/* a /* nested; */ comment; */ PREPARE x AS SELECT 8", "x"), "PREPARE x AS SELECT 8");
    CHECK_STREQ(find("PREPARE x AS SELECT ';' || $1; SELECT 1", "x"), "PREPARE x AS SELECT ';' || $1");
    CHECK_STREQ(find("SELECT \"a;b\" FROM t; PREPARE x AS SELECT 9", "x"), "PREPARE x AS SELECT 9");
    CHECK_STREQ(find("  \n PREPARE x (integer, text) AS SELECT $1, $2  ", "x"), "PREPARE x (integer, text) AS SELECT $1, $2");
    CHECK(find("PREPARE xy AS SELECT 1", "x") == NULL);
    CHECK(find("PREPARED x AS SELECT 1", "x") == NULL);
    CHECK(find("SELECT 1", "x") == NULL);
    CHECK(find("", "x") == NULL);
    CHECK(find("SELECT 'unterminated; PREPARE x AS SELECT 1", "x") == NULL);
    CHECK(find("SELECT $$ unterminated; PREPARE x AS SELECT 1", "x") == NULL);
    CHECK(find("/* unterminated; PREPARE x AS SELECT 1", "x") == NULL);
    CHECK(find("PREPARE", "x") == NULL);
    CHECK(find("PREPARE \"x", "x") == NULL);

    /* CommandComplete tags: which change no session state. Each at the end of an exact-size
     * buffer, without its NUL, and with it. */
    static const struct { const char *tag; int keeps; } tags[] = {
        { "SELECT 1", 1 }, { "INSERT 0 1", 1 }, { "UPDATE 3", 1 }, { "DELETE 0", 1 }, { "MERGE 2", 1 },
        { "BEGIN", 1 }, { "COMMIT", 1 }, { "ROLLBACK", 1 }, { "COPY 10", 1 }, { "FETCH 5", 1 },
        { "SHOW", 1 }, { "SAVEPOINT", 1 }, { "RELEASE", 1 }, { "TRUNCATE TABLE", 1 }, { "LOCK TABLE", 1 },
        { "SET", 0 }, { "RESET", 0 }, { "PREPARE", 0 }, { "DEALLOCATE", 0 }, { "DEALLOCATE ALL", 0 },
        { "LISTEN", 0 }, { "UNLISTEN", 0 }, { "DISCARD ALL", 0 }, { "DECLARE CURSOR", 0 },
        { "CREATE TABLE", 0 }, { "CLOSE CURSOR", 0 }, { "", 0 }, { "SELECTS 1", 0 }, { "SELEC", 0 },
        { "select 1", 0 },   /* tags are upper case; anything else is not one we know */
        { "START TRANSACTION", 1 }, { "ANALYZE", 1 }, { "NOTIFY", 1 }, { "VACUUM", 1 }, { "EXPLAIN", 1 },
        { "MOVE 1", 1 }, { "SAVEPOINTS", 0 }, { "SAVEPOINT x", 1 }, { "TRUNCATED", 0 }, { "S", 0 },
        { "CREATE EXTENSION", 0 }, { "ALTER SYSTEM", 0 }, { "REFRESH MATERIALIZED VIEW", 0 },
        { "SELECTSELECTSELECT", 0 }, { " SELECT", 0 },
    };
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        size_t n = strlen(tags[i].tag);
        for (int nul = 0; nul <= 1; nul++) {
            char *b = malloc(n + (size_t)nul + 1);
            memcpy(b, tags[i].tag, n + (size_t)nul);
            CHECK_MSG(pg_sql_tag_keeps_state(b, n + (size_t)nul) == tags[i].keeps, "tag %s", tags[i].tag);
            free(b);
        }
    }
    static const sql_case_t fns[] = {
        { "SELECT pg_advisory_lock(1)", 1 }, { "select PG_TRY_ADVISORY_LOCK(1, 2)", 1 },
        { "SELECT pg_advisory_lock_shared(7)", 1 }, { "SELECT set_config('a.b', 'c', false)", 1 },
        { "SELECT pg_advisory_xact_lock(1)", 0 }, { "SELECT 1", 0 }, { "", 0 }, { "advisory_loc", 0 },
        { "SELECT 1; SELECT Set_Config('x.y', '1', false)", 1 },
        /* found around each underscore: at the buffer's very start and end, next to other
         * underscores, cut short on either side */
        { "advisory_lock", 1 }, { "set_config", 1 }, { "xset_configx", 1 }, { "__set_config__", 1 },
        { "advisory__lock", 0 }, { "set__config", 0 }, { "_", 0 }, { "___", 0 }, { "t_config", 0 },
        { "set_confi", 0 }, { "dvisory_lock", 0 }, { "advisory_loc", 0 }, { "et_config", 0 },
        { "SELECT abalance FROM pgbench_accounts WHERE aid = 1;", 0 }, { "SELECT 1", 0 },
        { "SELECT a_b, c_d, set_e, f_config FROM advisory_x_lock", 0 },
        { "SELECT pg_catalog.PG_ADVISORY_LOCK_SHARED(1)", 1 }, { "select SET_CONFIG", 1 },
        /* set_config(..., true) lasts until the transaction's end: no change to the session */
        { "SELECT set_config('request.jwt.claims', '{\"sub\":\"u1\"}', true)", 0 },
        { "select set_config('search_path', $1, true), set_config('role', $2, true)", 0 },
        { "SELECT pg_catalog.set_config('a.b', 'c', TRUE)", 0 },
        { "SELECT set_config ( 'a.b' , 'c' , /* local */ true ) ", 0 },
        { "SELECT set_config('a', 'x,y)', true)", 0 }, { "SELECT set_config('a', 'it''s, (ok', true)", 0 },
        { "SELECT set_config('a', $$x, y)$$, true)", 0 }, { "SELECT set_config('a', f(1, 2), true)", 0 },
        { "SELECT set_config('a', (ARRAY['x', 'y'])[1], true)", 0 }, { "SELECT set_config(\"n\"(1, 2), 'b', true)", 0 },
        { "SELECT set_config('a', 'b', 'on')", 0 }, { "SELECT set_config('a', 'b', 't')", 0 },
        { "SELECT set_config('a', E'x\\', y', true)", 0 },
        /* ...and everything else still counts as one */
        { "SELECT set_config('a', 'b', $3)", 1 }, { "SELECT set_config('a', 'b', truex)", 1 },
        { "SELECT set_config('a', 'b', not true)", 1 }, { "SELECT set_config('a', 'b', true, 1)", 1 },
        { "SELECT set_config('a', 'b', true", 1 }, { "SELECT set_config('a', 'b')", 1 },
        { "SELECT set_config('a', 'b', true), set_config('c', 'd', false)", 1 },
        { "SELECT set_config('a', 'b', true), pg_advisory_lock(1)", 1 },
        { "SELECT set_config('a', 'b', 'true; x')", 1 }, { "SELECT set_config('a', ')', false)", 1 },
        { "SELECT set_config('a', 'b', true -- )\n)", 0 }, { "SELECT set_config('a', 'b', (true))", 1 },
        { "SELECT set_config", 1 }, { "SELECT set_config('a', 'b', 'false')", 1 }, { "set_config(", 1 },
        { "SELECT set_config('a', 'b'; true)", 1 },
        /* a temporary table whose tag says "SELECT n" (CREATE TABLE AS, SELECT INTO) or "EXPLAIN" */
        { "CREATE TEMP TABLE t AS SELECT 1", 1 }, { "create temporary table t as select 1", 1 },
        { "SELECT 2 INTO TEMP t2", 1 }, { "select 2 into Temporary t2", 1 }, { "SELECT 1 INTO pg_temp.x", 1 },
        { "CREATE TABLE pg_temp.t AS SELECT 1", 1 }, { "create table PG_TEMP_3.t as select 1", 1 },
        { "EXPLAIN ANALYZE CREATE TEMP TABLE t4 AS SELECT 1", 1 }, { "CREATE tEmP TABLE t AS SELECT 1", 1 },
        { "temp", 1 }, { "TEMP", 1 }, { "(temp)", 1 }, { "x temporary", 1 }, { "pg_temp", 1 }, { "\"pg_temp\".t", 1 },
        { "SELECT temperature FROM readings", 0 }, { "SELECT attempt, tempo FROM x", 0 }, { "INSERT INTO t VALUES ('contemporary')", 0 },
        { "SELECT temp_c FROM x", 0 }, { "SELECT xpg_temp FROM x", 0 }, { "temporaryx", 0 }, { "tem", 0 }, { "emp", 0 },
        { "m", 0 }, { "Mm", 0 }, { "SELECT 1 FROM items", 0 }, { "SELECT $temp", 0 }, { "SELECT temp$", 0 },
        /* found by fuzz_pg_sql: an unclosed quote after SET LOCAL does not hide what follows */
        { "SET LOCAL x = '\n; SELECT pg_advisory_lock(1)", 1 },
    };
    check_cases("PG_SQL_STATE_FN", PG_SQL_STATE_FN, fns, sizeof fns / sizeof fns[0]);
    static const sql_case_t sets[] = {
        { "SET LOCAL app.tenant = '42'", 1 }, { "set local statement_timeout to 5", 1 },
        { "  SET /* c */ LOCAL role x;", 1 }, { "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 1 },
        { "SET CONSTRAINTS ALL DEFERRED ; ", 1 }, { "SET LOCAL x = 'a;b'", 1 }, { "-- c\nSET LOCAL x = 1", 1 },
        { "SET x = 1", 0 }, { "SET SESSION x = 1", 0 }, { "SET localx = 1", 0 }, { "SET local_x = 1", 0 },
        { "SET LOCAL x = 1; SET y = 2", 0 }, { "SET LOCAL x = 1; SELECT 1", 0 }, { "SELECT 1", 0 },
        { "SET", 0 }, { "SET LOCAL", 1 }, { "", 0 }, { "SETLOCAL x = 1", 0 }, { "RESET x", 0 },
        { "SET TRANSACTION_x = 1", 0 },
    };
    check_cases("PG_SQL_TXN_SET", PG_SQL_TXN_SET, sets, sizeof sets / sizeof sets[0]);
    static const sql_case_t customs[] = {
        { "SET app.tenant = '42'", 1 }, { "set SESSION app.tenant TO 42", 1 }, { "SET \"app\".\"tenant\" = 1", 1 },
        { "  /* x */ SET a.b.c = 1;", 1 }, { "SELECT 1; SET app.t = 1", 1 }, { "SELECT ';'; SET app.t = 1", 1 },
        { "SELECT set_config('app.tenant', '42', false)", 1 }, { "SELECT set_config($1, $2, false)", 1 },
        { "SELECT set_config('app.' || 'x', '1', false)", 1 }, { "SELECT set_config('App.T', $2, $3)", 1 },
        { "SELECT set_config('a.b', 'c'", 1 }, { "SELECT pg_catalog.set_config('x.y', 'z', false)", 1 },
        { "SET search_path = a.b", 0 }, { "SET search_path TO public", 0 }, { "SET LOCAL app.tenant = 1", 0 },
        { "SET SESSION AUTHORIZATION bob", 0 }, { "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", 0 },
        { "SELECT set_config('app.tenant', '42', true)", 0 }, { "SELECT set_config('statement_timeout', '5', false)", 0 },
        { "SELECT set_config('search_path', 'a.b', false)", 0 }, { "SELECT 'SET app.t = 1'", 0 },
        { "SELECT a.b FROM t", 0 }, { "", 0 }, { "SET", 0 }, { "SET app", 0 }, { "SET .x = 1", 0 },
        { "UPDATE t SET a.b = 1", 0 }, { "SELECT 1; SELECT 2;", 0 }, { "RESET app.tenant", 0 },
        { "SET app.", 1 }, { "SET \"app.tenant\" = 1", 1 },
    };
    check_cases("PG_SQL_CUSTOM", PG_SQL_CUSTOM, customs, sizeof customs / sizeof customs[0]);
    return unit_done("pg_sql");
}
