/*
 * pg_conninfo.h - building libpq connection parameter values.
 *
 * A client's startup parameters other than user, database, application_name and
 * client_encoding reach the upstream server through libpq's `options` keyword as
 * "-c name=value" words. The server splits that string into words at unescaped white
 * space, a backslash making the next byte literal (pg_split_opts in postinit.c), so every
 * white-space byte and backslash in a name or value is escaped with a backslash.
 * Pure: no allocation, no I/O.
 */
#ifndef SY_PG_CONNINFO_H
#define SY_PG_CONNINFO_H

#include <stddef.h>

/*
 * Append "-c name=value" to the NUL-terminated string in out[0..cap), after a space when
 * out is not empty. Returns 0, or -1 leaving out unchanged when the result would not fit
 * (with its terminator) in cap bytes, when out holds no terminator within cap, or when
 * name is empty or contains '=' (the server would split it at the '=' and set another
 * parameter).
 */
int pgw_options_add(char *out, size_t cap, const char *name, const char *value);

#endif
