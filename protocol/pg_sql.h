/*
 * pg_sql.h - the little SQL lexing switchover needs: finding one PREPARE statement in a
 * query string that may hold several.
 *
 * pg_prepared_statements.statement holds the whole query string that created a prepared
 * statement ("INSERT ...; PREPARE a AS SELECT 1; PREPARE b AS ..."). Re-running that string
 * on a new server would repeat the other statements, so the replay picks out the one
 * PREPARE. Statements are split at semicolons outside quotes ('...', E'...', "..."),
 * dollar quotes ($tag$...$tag$) and comments (-- and nested block comments).
 * Pure: no allocation, no I/O.
 */
#ifndef SY_PG_SQL_H
#define SY_PG_SQL_H

#include <stddef.h>

/*
 * Find the statement "PREPARE <name> ..." in sql[0..len) for the prepared statement called
 * `name` as the server reports it (unquoted identifiers folded to lower case). On success
 * sets *start and *stmt_len to the statement (leading blanks and comments skipped, no
 * trailing ';') and returns 0; returns -1 when there is no such statement.
 */
int pg_sql_find_prepare(const char *sql, size_t len, const char *name, size_t *start, size_t *stmt_len);

/*
 * What may change a session's state (SET values, prepared statements, LISTEN, temporary
 * tables, cursors, advisory locks), for the reconnect's "read the state again" (proxy/pg/
 * pg_reconnect.c). Both err on the side of "may".
 *
 * pg_sql_tag_keeps_state: a CommandComplete tag (its body, tag[0..len), NUL or not) of a
 * command that changes no session state: SELECT, INSERT, UPDATE, DELETE, MERGE, BEGIN,
 * START, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, COPY, FETCH, MOVE, SHOW, EXPLAIN, TRUNCATE,
 * NOTIFY, VACUUM, ANALYZE, LOCK. 1 for those, 0 for anything else (SET, PREPARE, LISTEN,
 * DISCARD, DECLARE CURSOR, CREATE ..., an empty tag).
 *
 * pg_sql_query_effects: what the query text sql[0..len) may do to the session, in one
 * pass (the proxy calls it on every query), as bits:
 *   PG_SQL_STATE_FN  its tag says nothing, but it may take a session-level advisory lock
 *                    (pg_advisory_lock, pg_try_advisory_lock..._shared) or call
 *                    set_config: either name anywhere, case-insensitively, but for a
 *                    set_config(name, value, true) call, which changes the setting for the
 *                    current transaction only (the literal true: not a $n parameter);
 *                    or it may make a temporary table that its tag does not name
 *                    (CREATE TEMP TABLE ... AS and SELECT ... INTO TEMP answer "SELECT n"):
 *                    TEMP, TEMPORARY or pg_temp as a word, in any case;
 *   PG_SQL_CUSTOM    it may set a custom setting at session level, one no module need
 *                    define and that Postgres then leaves out of pg_settings (so a move, a
 *                    reconnect or a release cannot see it): SET [SESSION] of a name with a
 *                    dot in it, or a set_config that lasts past the transaction whose name
 *                    is a literal with a dot in it or anything but a literal;
 *   PG_SQL_TXN_SET   it is one statement (a trailing ';' allowed) SET LOCAL, SET
 *                    TRANSACTION or SET CONSTRAINTS, whose "SET" tag changes nothing past
 *                    the transaction.
 */
int pg_sql_tag_keeps_state(const char *tag, size_t len);

#define PG_SQL_STATE_FN 1u
#define PG_SQL_CUSTOM   2u
#define PG_SQL_TXN_SET  4u
unsigned pg_sql_query_effects(const char *sql, size_t len);

#endif
