/*
 * test_pg_errclass.c - SQLSTATEs for libpq connection failure texts.
 *
 * Every text below is PQerrorMessage() exactly as libpq 15.18 returned it against a
 * PostgreSQL 15 server on this machine (hba rules for scram-sha-256, md5, password, peer
 * and reject; max_connections=4 with one slot reserved), or as the proxy reports its own
 * failures. Each is also checked with its newlines folded the way connect_failed() puts it
 * on one line, and inside an exact-size heap buffer so ASan sees any over-read.
 */
#include <stdlib.h>
#include "protocol/pg_errclass.h"
#include "tests/unit/unit.h"

typedef struct {
    const char *name;
    const char *text;
    const char *sqlstate;
} class_vec_t;

#define AT "connection to server at \"127.0.0.1\", port 55439 failed: "

static const class_vec_t class_vecs[] = {
    { "scram wrong password", AT "FATAL:  password authentication failed for user \"scramu\"\n", "28P01" },
    { "md5 wrong password", AT "FATAL:  password authentication failed for user \"md5u\"\n", "28P01" },
    { "no password supplied", AT "fe_sendauth: no password supplied\n", "28P01" },
    { "pg_hba reject", AT "FATAL:  pg_hba.conf rejects connection for host \"127.0.0.1\", user \"rejectu\","
      " database \"postgres\", no encryption\n", "28P01" },
    { "no pg_hba entry", AT "FATAL:  no pg_hba.conf entry for host \"127.0.0.1\", user \"nobody\","
      " database \"postgres\", no encryption\n", "28P01" },
    { "peer", "connection to server on socket \"/tmp/pgmsg/.s.PGSQL.55439\" failed: FATAL:  Peer "
      "authentication failed for user \"peeru\"\n", "28P01" },
    { "too many clients", AT "FATAL:  sorry, too many clients already\n", "53300" },
    { "reserved slots", AT "FATAL:  remaining connection slots are reserved for non-replication "
      "superuser connections\n", "53300" },
    { "refused", "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n"
      "\tIs the server running on that host and accepting TCP/IP connections?\n", "08001" },
    { "refused, then wrong password", "connection to server at \"127.0.0.1\", port 1 failed: Connection "
      "refused\n\tIs the server running on that host and accepting TCP/IP connections?\n"
      AT "FATAL:  password authentication failed for user \"scramu\"\n", "28P01" },
    { "too many on one host, password on the next", AT "FATAL:  sorry, too many clients already\n"
      "connection to server at \"127.0.0.2\", port 5432 failed: FATAL:  password authentication failed"
      " for user \"u\"\n", "28P01" },
    { "unknown host", "could not translate host name \"nonexistent.invalid\" to address: Name or service"
      " not known\n", "08001" },
    { "no such database", AT "FATAL:  database \"nosuchdb\" does not exist\n", "08001" },
    { "ssl required", AT "server does not support SSL, but SSL was required\n", "08001" },
    { "channel binding", AT "channel binding required, but SSL not in use\n", "08001" },
    { "timeout (the proxy's own text)", "connection to server at \"db\" (10.0.0.5), port 5432 failed: "
      "timeout expired", "08001" },
    { "empty", "", "08001" },
    /* phrases are matched as written: case matters, a translated server falls through */
    { "upper case", AT "FATAL:  PASSWORD AUTHENTICATION FAILED FOR USER \"u\"\n", "08001" },
    { "german", AT "FATAL:  Passwort-Authentifizierung für Benutzer \xc2\xbbu\xc2\xab fehlgeschlagen\n",
      "08001" },
    { "phrase cut short", AT "FATAL:  password authentication faile", "08001" },
};

/* connect_failed's folding: "\n" between lines becomes "; ", a tab a space. */
static char *fold(const char *t)
{
    size_t n = strlen(t), o = 0;
    char *out = malloc(2 * n + 1);

    if (out == NULL)
        exit(2);
    for (const char *p = t; *p; p++) {
        if (*p == '\n') {
            if (p[1] != '\0') {
                out[o++] = ';';
                out[o++] = ' ';
            }
        } else {
            out[o++] = *p == '\t' ? ' ' : *p;
        }
    }
    out[o] = '\0';
    return out;
}

static const char *classify_exact(const char *t)
{
    size_t n = strlen(t) + 1;
    char *b = malloc(n);
    const char *r;

    if (b == NULL)
        exit(2);
    memcpy(b, t, n);
    r = pgw_errclass_connect(b);
    free(b);
    return r;
}

int main(void)
{
    for (size_t i = 0; i < sizeof class_vecs / sizeof class_vecs[0]; i++) {
        const class_vec_t *v = &class_vecs[i];
        char *folded = fold(v->text);
        const char *raw = classify_exact(v->text), *one = classify_exact(folded);

        CHECK_MSG(strcmp(raw, v->sqlstate) == 0, "%s: got %s want %s", v->name, raw, v->sqlstate);
        CHECK_MSG(strcmp(one, v->sqlstate) == 0, "%s (one line): got %s want %s", v->name, one, v->sqlstate);
        free(folded);
    }
    CHECK_STREQ(pgw_errclass_connect(NULL), "08001");

    /* Worth trying again later: the server is away for now. */
    static const struct { const char *text; int transient; } tr[] = {
        { "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused\n"
          "\tIs the server running on that host and accepting TCP/IP connections?\n", 1 },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is starting up\n", 1 },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is shutting down\n", 1 },
        { "connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: No such file or directory\n", 1 },
        { "timeout expired", 1 },
        { "connection to server at \"127.0.0.1\", port 5432 failed: server closed the connection unexpectedly\n", 1 },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  database \"nope\" does not exist\n", 0 },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  role \"x\" does not exist\n", 0 },
        /* a credentials failure on one host outranks a refusal on another */
        { "connection to server at \"a\", port 1 failed: Connection refused\n"
          "connection to server at \"b\", port 2 failed: FATAL:  password authentication failed for user \"u\"\n", 0 },
        { "connection to server at \"a\", port 1 failed: FATAL:  sorry, too many clients already\n", 0 },
        { "", 0 },
    };
    for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++)
        CHECK(pgw_errclass_transient(tr[i].text) == tr[i].transient);
    CHECK(pgw_errclass_transient(NULL) == 0);
    return unit_done("pg_errclass");
}
