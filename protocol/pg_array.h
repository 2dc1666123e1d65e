/*
 * pg_array.h - reading an array value that libpq returns in text format.
 *
 * A switchover replays each protocol-level prepared statement with the parameter types it
 * was prepared with, read from pg_prepared_statements as `parameter_types::oid[]::text`:
 * "{}" or "{23,25,1043}". The parser is strict, because a type skipped or misread changes
 * what the statement means on the new server: every element is a decimal number that fits
 * an OID (32 bits, checked before it can wrap), the count is bounded, and anything else is
 * an error with an exact message, never quietly dropped. Pure: no allocation, no I/O.
 */
#ifndef SY_PG_ARRAY_H
#define SY_PG_ARRAY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol/pg_wire.h"   /* PGW_ERR */

/* The most parameters a statement can have (the protocol's int16 count, as libpq's
 * PQ_QUERY_PARAM_MAX_LIMIT). */
#define PGW_OID_ARRAY_MAX 65535u

/*
 * Parse the text form of a one-dimensional oid[] in text[0..len) (no terminator is read).
 * Stores up to max elements in out; with out NULL only counts them, so a caller can size
 * its array first. Returns the number of elements, or PGW_ERR with *err one of:
 * "expected '{'", "expected a digit", "OID out of range", "too many elements",
 * "expected ',' or '}'", "bytes after '}'".
 */
ssize_t pgw_parse_oid_array(const char *text, size_t len, uint32_t *out, size_t max, const char **err);

#endif
