/*
 * resp_mask.c - see resp_mask.h. One recursive walk over the reply, copying as it goes:
 *
 *     value := '|' pairs value            (an attribute comes before its value)
 *            | '$' '=' '!' len body       (bulk, verbatim, blob error; len -1 is null)
 *            | '*' '%' '~' '>' n values   (a map has 2n)
 *            | any other type: one line
 *
 * In an array ('*') or a map ('%') at depth >= min_depth, element 2i+1 is replaced when
 * element 2i is one of the names.
 */
#include "protocol/resp_mask.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const uint8_t     *in;
    size_t             len, pos;
    uint8_t           *out;
    size_t             cap, o;
    int                min_depth, masked, full;
    const char *const *names;
    const char        *mask;
} mk_t;

/* The line at pos: its text is in[pos..*end), "\r\n" follows. 0 or -1. */
static int mk_line(const mk_t *m, size_t *end)
{
    const uint8_t *cr = memchr(m->in + m->pos, '\r', m->len - m->pos);
    if (cr == NULL || (size_t)(cr - m->in) + 1 >= m->len || cr[1] != '\n')
        return -1;
    *end = (size_t)(cr - m->in);
    return 0;
}

static int mk_emit(mk_t *m, const void *p, size_t n)
{
    if (n > m->cap - m->o) {
        m->full = 1;
        return -1;
    }
    memcpy(m->out + m->o, p, n);
    m->o += n;
    return 0;
}

/* A length or count line's number: -1 or more, at most what can follow. 0 or -1. */
static int mk_num(const mk_t *m, size_t from, size_t end, long long *v)
{
    size_t i = from;
    int neg = 0;
    long long n = 0;
    if (i < end && m->in[i] == '-') {
        neg = 1;
        i++;
    }
    if (i == end || end - i > 18)
        return -1;
    for (; i < end; i++) {
        if (m->in[i] < '0' || m->in[i] > '9')
            return -1;
        n = n * 10 + (m->in[i] - '0');
    }
    if (neg && n != 1)
        return -1;
    *v = neg ? -1 : n;
    return 0;
}

static int mk_is_name(const mk_t *m, const uint8_t *s, size_t n)
{
    for (const char *const *p = m->names; *p; p++)
        if (strlen(*p) == n && strncasecmp(*p, (const char *)s, n) == 0)
            return 1;
    return 0;
}

/* One value at pos, copied (or, with hide, replaced by the mask when it is a non-empty
 * string). *key: it is a string equal to one of the names. 0 or -1. */
static int mk_value(mk_t *m, int depth, int hide, int *key)
{
    size_t end;
    long long n;
    *key = 0;
    if (depth > RESP_MASK_DEPTH || m->pos >= m->len || mk_line(m, &end) != 0)
        return -1;
    int t = m->in[m->pos];
    size_t head = m->pos;
    switch (t) {
    case '$': case '=': case '!': {
        if (mk_num(m, head + 1, end, &n) != 0)
            return -1;
        size_t body = end + 2;
        if (n == -1) {
            m->pos = body;
            return mk_emit(m, m->in + head, body - head);
        }
        if ((size_t)n > m->len - body || m->len - body - (size_t)n < 2 ||
            m->in[body + n] != '\r' || m->in[body + n + 1] != '\n')
            return -1;
        m->pos = body + (size_t)n + 2;
        if (t == '$')
            *key = mk_is_name(m, m->in + body, (size_t)n);
        if (hide && t == '$' && n > 0) {
            char h[32];
            int hl = snprintf(h, sizeof(h), "$%zu\r\n", strlen(m->mask));
            m->masked++;
            return mk_emit(m, h, (size_t)hl) || mk_emit(m, m->mask, strlen(m->mask)) || mk_emit(m, "\r\n", 2);
        }
        return mk_emit(m, m->in + head, m->pos - head);
    }
    case '*': case '%': case '~': case '>': case '|': {
        if (mk_num(m, head + 1, end, &n) != 0)
            return -1;
        m->pos = end + 2;
        if (mk_emit(m, m->in + head, m->pos - head) != 0)
            return -1;
        if (n == -1)
            return t == '*' ? 0 : -1;
        unsigned long long total = (unsigned long long)n * (t == '%' || t == '|' ? 2 : 1);
        if (total > m->len - m->pos)   /* each element takes 3 bytes at least */
            return -1;
        int pairs = (t == '*' || t == '%') && depth >= m->min_depth;
        int prev_key = 0;
        for (unsigned long long i = 0; i < total; i++) {
            int k;
            if (mk_value(m, depth + 1, pairs && (i & 1) && prev_key, &k) != 0)
                return -1;
            prev_key = (i & 1) == 0 && k;
        }
        if (t == '|')   /* the attribute's value follows, at the same place */
            return mk_value(m, depth, hide, key);
        return 0;
    }
    case '+':
        m->pos = end + 2;
        *key = mk_is_name(m, m->in + head + 1, end - head - 1);
        if (hide && end > head + 1) {
            m->masked++;
            return mk_emit(m, "+", 1) || mk_emit(m, m->mask, strlen(m->mask)) || mk_emit(m, "\r\n", 2);
        }
        return mk_emit(m, m->in + head, m->pos - head);
    case '-': case ':': case ',': case '(': case '#': case '_':
        m->pos = end + 2;
        return mk_emit(m, m->in + head, m->pos - head);
    default:
        return -1;
    }
}

ssize_t resp_mask_pairs(const uint8_t *in, size_t len, int min_depth, const char *const *names,
                        const char *mask, uint8_t *out, size_t cap, int *masked)
{
    mk_t m = { .in = in, .len = len, .out = out, .cap = cap, .min_depth = min_depth,
               .names = names, .mask = mask };
    int key;
    *masked = 0;
    int rc = mk_value(&m, 0, 0, &key);
    if (rc != 0)
        return m.full ? 0 : -1;
    if (m.pos != len)
        return -1;
    *masked = m.masked;
    return (ssize_t)m.o;
}
