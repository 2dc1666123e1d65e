/*
 * pg_result.c - see pg_result.h. Message lengths are computed before writing and
 * checked against INT32_MAX; the buffer grows geometrically.
 */
#include <stdlib.h>
#include <string.h>
#include "protocol/pg_result.h"
#include "protocol/pg_wire.h"

void pgr_buf_free(pgr_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

static int reserve(pgr_buf_t *b, size_t more)
{
    if (b->oom)
        return -1;
    if (more > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    if (b->len + more <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + more)
        ncap *= 2;
    uint8_t *d = realloc(b->data, ncap);
    if (d == NULL) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = ncap;
    return 0;
}

void pgr_append(pgr_buf_t *b, const void *bytes, size_t len)
{
    if (len == 0)
        return;
    if (reserve(b, len) != 0)
        return;
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

static void put32(pgr_buf_t *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    pgr_append(b, x, 4);
}

static void put16(pgr_buf_t *b, uint16_t v)
{
    uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
    pgr_append(b, x, 2);
}

static void header(pgr_buf_t *b, char type, size_t body)
{
    if (body > INT32_MAX - 4) {
        b->oom = 1;
        return;
    }
    pgr_append(b, &type, 1);
    put32(b, (uint32_t)(body + 4));
}

void pgr_row_description(pgr_buf_t *b, size_t n, const char *const *names)
{
    size_t body = 2;
    for (size_t i = 0; i < n; i++)
        body += strlen(names[i]) + 1 + 18;
    header(b, 'T', body);
    put16(b, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        pgr_append(b, names[i], strlen(names[i]) + 1);
        put32(b, 0);            /* table oid */
        put16(b, 0);            /* column number */
        put32(b, 25);           /* type oid: text */
        put16(b, 0xFFFF);       /* typlen -1 */
        put32(b, 0xFFFFFFFF);   /* typmod -1 */
        put16(b, 0);            /* text format */
    }
}

void pgr_data_row(pgr_buf_t *b, size_t n, const char *const *values)
{
    size_t body = 2;
    for (size_t i = 0; i < n; i++)
        body += 4 + (values[i] ? strlen(values[i]) : 0);
    header(b, 'D', body);
    put16(b, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            put32(b, 0xFFFFFFFF);
        } else {
            size_t l = strlen(values[i]);
            put32(b, (uint32_t)l);
            pgr_append(b, values[i], l);
        }
    }
}

void pgr_command_complete(pgr_buf_t *b, const char *tag)
{
    header(b, 'C', strlen(tag) + 1);
    pgr_append(b, tag, strlen(tag) + 1);
}

void pgr_empty_query(pgr_buf_t *b)
{
    header(b, 'I', 0);
}

void pgr_notification(pgr_buf_t *b, uint32_t pid, const char *channel, const char *payload)
{
    size_t n = pgw_notification_size(channel, payload);

    if (n == 0) {
        b->oom = 1;
        return;
    }
    if (reserve(b, n) != 0)
        return;
    b->len += pgw_build_notification(b->data + b->len, b->cap - b->len, pid, channel, payload);
}

void pgr_parameter_status(pgr_buf_t *b, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (nl > INT32_MAX / 2 || vl > INT32_MAX / 2) {
        b->oom = 1;   /* no message is that long: never cut one */
        return;
    }
    size_t n = 5 + nl + 1 + vl + 1;
    if (reserve(b, n) != 0)
        return;
    b->len += pgw_build_parameter_status(b->data + b->len, b->cap - b->len, name, value);
}
