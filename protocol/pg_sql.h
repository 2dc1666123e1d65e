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

#endif
