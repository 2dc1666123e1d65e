/*
 * pg_errclass.c - see pg_errclass.h. One table, in priority order; each phrase is the
 * part of a server or libpq message (PostgreSQL 15) that does not vary:
 *
 *   server, auth.c          "password authentication failed for user \"%s\"" and the
 *                           other "<method> authentication failed for user" texts,
 *                           "pg_hba.conf rejects connection ...", "no pg_hba.conf entry ..."
 *   libpq, fe-auth.c        "fe_sendauth: no password supplied"
 *   server, postmaster.c    "sorry, too many clients already",
 *                           "remaining connection slots are reserved for ..."
 *
 * The texts are the server's untranslated ones: libpq shows what the server sent, so a
 * server with lc_messages in another language falls through to 08001.
 */
#include "protocol/pg_errclass.h"

#include <string.h>

typedef struct errclass_rule_s {
    const char *phrase;
    const char *sqlstate;
} errclass_rule_t;

static const errclass_rule_t errclass_rules[] = {
    { "password authentication failed", PGW_SQLSTATE_INVALID_PASSWORD },
    { "authentication failed for user", PGW_SQLSTATE_INVALID_PASSWORD },
    { "no password supplied",           PGW_SQLSTATE_INVALID_PASSWORD },
    { "SCRAM authentication",           PGW_SQLSTATE_INVALID_PASSWORD },
    { "pg_hba.conf rejects",            PGW_SQLSTATE_INVALID_PASSWORD },
    { "no pg_hba.conf entry",           PGW_SQLSTATE_INVALID_PASSWORD },
    { "too many clients",               PGW_SQLSTATE_TOO_MANY_CONNECTIONS },
    { "connection slots are reserved",  PGW_SQLSTATE_TOO_MANY_CONNECTIONS },
};

const char *pgw_errclass_connect(const char *libpq_text)
{
    if (libpq_text == NULL)
        return PGW_SQLSTATE_CANNOT_CONNECT;
    for (size_t i = 0; i < sizeof errclass_rules / sizeof errclass_rules[0]; i++)
        if (strstr(libpq_text, errclass_rules[i].phrase) != NULL)
            return errclass_rules[i].sqlstate;
    return PGW_SQLSTATE_CANNOT_CONNECT;
}

/* Phrases of libpq (fe-connect.c) and the postmaster (ProcessStartupPacket) that mean the
 * server is away for now. */
static const char *const transient_phrases[] = {
    "Connection refused",
    "Connection reset",
    "No such file or directory",      /* the unix socket is gone while the server is down */
    "timeout expired",
    "No route to host",
    "Network is unreachable",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "server closed the connection unexpectedly",
};

int pgw_errclass_transient(const char *libpq_text)
{
    if (libpq_text == NULL || strcmp(pgw_errclass_connect(libpq_text), PGW_SQLSTATE_CANNOT_CONNECT) != 0)
        return 0;
    for (size_t i = 0; i < sizeof transient_phrases / sizeof transient_phrases[0]; i++)
        if (strstr(libpq_text, transient_phrases[i]) != NULL)
            return 1;
    return 0;
}
