/*
 * pg_result.h - builders for simple-query result sets, as the admin console returns them:
 * RowDescription (all columns text), DataRow, CommandComplete, EmptyQueryResponse; and
 * NotificationResponse, which a switchover hands on from the old upstream session.
 * Each appends one message to a caller-owned growable buffer. Pure: no I/O.
 */
#ifndef SY_PG_RESULT_H
#define SY_PG_RESULT_H

#include <stddef.h>
#include <stdint.h>

typedef struct pgr_buf_s {
    uint8_t *data;
    size_t   len, cap;
    int      oom;          /* sticky: an allocation failed; the content is incomplete */
} pgr_buf_t;

void pgr_buf_free(pgr_buf_t *b);
/* Append raw bytes. */
void pgr_append(pgr_buf_t *b, const void *bytes, size_t len);

/* RowDescription with n text columns. */
void pgr_row_description(pgr_buf_t *b, size_t n, const char *const *names);
/* DataRow; a NULL value is sent as SQL NULL. */
void pgr_data_row(pgr_buf_t *b, size_t n, const char *const *values);
/* CommandComplete with a tag such as "SHOW" or "SWITCH". */
void pgr_command_complete(pgr_buf_t *b, const char *tag);
void pgr_empty_query(pgr_buf_t *b);
/* NotificationResponse (pgw_build_notification). A message too large for its length
 * field sets oom, as a failed allocation does: either way the caller sees it there. */
void pgr_notification(pgr_buf_t *b, uint32_t pid, const char *channel, const char *payload);

/* ParameterStatus of any size the protocol allows (sets oom past that: never a cut
 * message). */
void pgr_parameter_status(pgr_buf_t *b, const char *name, const char *value);

#endif
