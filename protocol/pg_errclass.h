/*
 * pg_errclass.h - which SQLSTATE a failed upstream connect gets, from libpq's text.
 *
 * libpq reports a failed connection as text only (PQerrorMessage: "connection to server
 * at \"h\", port 5432 failed: FATAL:  password authentication failed for user \"u\"\n",
 * one such paragraph per host tried); the SQLSTATE the server sent is not exposed while
 * connecting. switchyard answers its client with the SQLSTATE the server would have
 * given where the text tells it (DESIGN.md, "Errors a client sees"):
 *
 *   28P01  the upstream rejected the credentials (password, SCRAM, pg_hba.conf, peer...)
 *   53300  too many connections (including slots reserved for superusers)
 *   08001  anything else: switchyard could not connect
 *
 * The rules are a table in pg_errclass.c, tried in order over the whole text: the first
 * rule whose phrase occurs anywhere wins, so a credentials failure on any host outranks
 * "too many clients" on another. Pure: no allocation, no I/O.
 */
#ifndef SY_PG_ERRCLASS_H
#define SY_PG_ERRCLASS_H

#include <stddef.h>

#define PGW_SQLSTATE_CANNOT_CONNECT       "08001"
#define PGW_SQLSTATE_INVALID_PASSWORD     "28P01"
#define PGW_SQLSTATE_TOO_MANY_CONNECTIONS "53300"

/* The SQLSTATE (a static 5-character string) for libpq's connection failure text, which
 * must be NUL-terminated; never NULL (08001 when no rule matches, and for NULL text). */
const char *pgw_errclass_connect(const char *libpq_text);

/* 1 when libpq's connection failure text says the server is not there for now (refused,
 * reset, timed out, unreachable, no socket file, starting up, shutting down or in
 * recovery, closed during the handshake), so that trying again later may succeed; 0 for
 * everything else (credentials, too many clients, a missing database or role...) and for
 * NULL. Same rules as above: a phrase anywhere in the text. */
int pgw_errclass_transient(const char *libpq_text);

#endif
