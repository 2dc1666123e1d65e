/*
 * resp_sync.c - frames what a Redis master sends after SYNC / PSYNC (resp_sync.h): the
 * keepalive newlines, the "+FULLRESYNC" / "+CONTINUE" / error line, the payload header and
 * the RDB payload in either of its two forms, up to where the command stream begins.
 *
 * Lines end at "\n" with an optional "\r", as the replica's own reader (connSyncReadLine)
 * takes them; an empty line is a keepalive. The diskless payload ends at its 40-byte mark,
 * which may arrive split across reads: the last 39 bytes seen are kept to find it.
 */
#include "protocol/resp_sync.h"

#include <string.h>

void resp_sync_init(resp_sync_t *s, int psync)
{
    memset(s, 0, sizeof(*s));
    s->psync = psync != 0;
    s->state = RESP_SYNC_REPLY;
}

int resp_sync_at_boundary(const resp_sync_t *s)
{
    return s->state == RESP_SYNC_STREAM || s->state == RESP_SYNC_REFUSED ||
           (s->state == RESP_SYNC_REPLY && !s->in_line);
}

static ssize_t fail(resp_sync_t *s, const char *msg)
{
    s->err = msg;
    return -1;
}

/* A payload length: digits only, at most 18 of them (no overflow). */
static int parse_len(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

/* A complete line (content without its "\r\n") in s->line, len content bytes in all. */
static int line_done(resp_sync_t *s, size_t len, int *ev)
{
    const char *l = s->line;
    if (len == 0)
        return 0;   /* a keepalive */
    if (len > RESP_SYNC_LINE_CAP && l[0] != '-')
        return -1;
    if (l[0] == '+' && !s->replied && strncmp(l, "+FULLRESYNC", 11) == 0) {
        s->replied = 1;
        *ev = RESP_SYNC_EV_REPLY;
        return 0;
    }
    if (l[0] == '+' && !s->replied && strncmp(l, "+CONTINUE", 9) == 0) {
        s->replied = 1;
        s->state = RESP_SYNC_STREAM;
        *ev = RESP_SYNC_EV_REPLY;
        return 0;
    }
    if (l[0] == '-' && !s->replied) {
        s->replied = 1;
        s->state = RESP_SYNC_REFUSED;
        *ev = RESP_SYNC_EV_REPLY;
        return 0;
    }
    if (l[0] != '$' || (s->psync && !s->replied))
        return -1;
    *ev = s->replied ? RESP_SYNC_EV_HEADER : RESP_SYNC_EV_REPLY;
    s->replied = 1;
    if (len >= 5 && strncmp(l, "$EOF:", 5) == 0) {
        if (len < 5 + RESP_SYNC_MARK)
            return -2;
        memcpy(s->mark, l + 5, RESP_SYNC_MARK);
        s->state = RESP_SYNC_EOF;
        s->tail_len = 0;
        return 0;
    }
    if (parse_len(l + 1, len - 1, &s->bulk_left) != 0)
        return -2;
    s->state = s->bulk_left > 0 ? RESP_SYNC_BULK : RESP_SYNC_STREAM;
    return 0;
}

/* RESP_SYNC_EOF: the end of the mark in buf[0..len), counting a start in the tail; or -1
 * when it is not there (the tail then holds the last bytes seen). */
static ssize_t find_mark(resp_sync_t *s, const uint8_t *buf, size_t len)
{
    if (s->tail_len > 0) {
        uint8_t tmp[2 * RESP_SYNC_MARK];
        size_t k = len < RESP_SYNC_MARK - 1 ? len : RESP_SYNC_MARK - 1;
        memcpy(tmp, s->tail, s->tail_len);
        memcpy(tmp + s->tail_len, buf, k);
        const uint8_t *m = memmem(tmp, s->tail_len + k, s->mark, RESP_SYNC_MARK);
        if (m != NULL)
            return (ssize_t)((size_t)(m - tmp) + RESP_SYNC_MARK - s->tail_len);
    }
    const uint8_t *m = memmem(buf, len, s->mark, RESP_SYNC_MARK);
    if (m != NULL)
        return (ssize_t)((size_t)(m - buf) + RESP_SYNC_MARK);
    /* keep the last MARK-1 bytes of tail + buf */
    size_t keep = RESP_SYNC_MARK - 1;
    if (len >= keep) {
        memcpy(s->tail, buf + len - keep, keep);
        s->tail_len = (uint32_t)keep;
    } else {
        size_t old = s->tail_len + len > keep ? keep - len : s->tail_len;
        memmove(s->tail, s->tail + s->tail_len - old, old);
        memcpy(s->tail + old, buf, len);
        s->tail_len = (uint32_t)(old + len);
    }
    return -1;
}

ssize_t resp_sync_scan(resp_sync_t *s, const uint8_t *buf, size_t len, int *ev)
{
    size_t i = 0;
    *ev = RESP_SYNC_EV_NONE;
    while (i < len) {
        if (s->state == RESP_SYNC_STREAM || s->state == RESP_SYNC_REFUSED)
            return (ssize_t)i;
        if (s->state == RESP_SYNC_BULK) {
            uint64_t n = len - i < s->bulk_left ? len - i : s->bulk_left;
            i += (size_t)n;
            s->bulk_left -= n;
            s->payload += n;
            if (s->bulk_left == 0) {
                s->state = RESP_SYNC_STREAM;
                *ev = RESP_SYNC_EV_DONE;
                return (ssize_t)i;
            }
            continue;
        }
        if (s->state == RESP_SYNC_EOF) {
            ssize_t end = find_mark(s, buf + i, len - i);
            if (end < 0) {
                s->payload += len - i;
                return (ssize_t)len;
            }
            i += (size_t)end;
            s->payload += (uint64_t)end;
            s->state = RESP_SYNC_STREAM;
            *ev = RESP_SYNC_EV_DONE;
            return (ssize_t)i;
        }
        uint8_t c = buf[i++];
        if (c == '\n') {
            size_t n = s->line_len - (s->line_cr ? 1 : 0);
            if (n < s->line_len && n < RESP_SYNC_LINE_CAP)
                s->line[n] = '\0';   /* drop the '\r' */
            s->in_line = 0;
            s->line_len = 0;
            s->line_cr = 0;
            int r = line_done(s, n, ev);
            if (r == -1)
                return fail(s, s->psync ? "unexpected reply to PSYNC" : "unexpected reply to SYNC");
            if (r == -2)
                return fail(s, "invalid replication payload header");
            if (*ev != RESP_SYNC_EV_NONE)
                return (ssize_t)i;
            continue;
        }
        if (s->line_len >= RESP_SYNC_LINE_MAX)
            return fail(s, "replication reply line too long");
        if (s->line_len < RESP_SYNC_LINE_CAP) {
            s->line[s->line_len] = (char)c;
            s->line[s->line_len + 1] = '\0';
        }
        s->in_line = 1;
        s->line_len++;
        s->line_cr = c == '\r';
    }
    return (ssize_t)i;
}
