/*
 * test_pg_sql.c - finding one PREPARE statement in a multi-statement query string.
 * Each input sits at the end of an exact-size heap buffer (no terminator is read).
 */
#include <stdlib.h>
#include "protocol/pg_sql.h"
#include "tests/unit/unit.h"

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
    return unit_done("pg_sql");
}
