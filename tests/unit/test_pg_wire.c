/*
 * test_pg_wire.c - byte-vector tests for protocol/pg_wire.c.
 *
 * Every input is copied to the END of a malloc'd buffer of exactly its size, so ASan
 * reports any read past the bytes the codec was given. Startup vectors are also fed as
 * every prefix; scanner streams are fed whole, one byte at a time, split at every offset
 * and in pseudo-random chunks, and must produce the same events at the same offsets.
 */
#include "protocol/pg_wire.h"
#include "protocol/pg_result.h"
#include "tests/unit/unit.h"

#include <stdint.h>
#include <stdlib.h>

/* An exact-size heap copy of p[0..n). */
static uint8_t *dup_exact(const void *p, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    if (b == NULL) {
        perror("malloc");
        exit(2);
    }
    if (n)
        memcpy(b, p, n);
    return b;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ==== startup phase ================================================================= */

#define P(s) s, sizeof(s) - 1          /* string literal with embedded NULs + its size */
#define LEN_OK UINT32_MAX               /* length field = real size */

typedef struct {
    const char *name;
    /* raw bytes, used as-is when raw != NULL */
    const char *raw;
    size_t      raw_len;
    /* else the packet is: int32 len | int32 code | params */
    uint32_t    code;
    const char *params;
    size_t      params_len;
    uint32_t    len_field;              /* LEN_OK: the real size */
    /* expectations */
    ssize_t     want;                   /* 0: complete at its full size; PGW_ERR */
    pgw_startup_kind_t kind;
    const char *err;
    size_t      err_at;                 /* shortest prefix that is already an error (0: full) */
} startup_vec_t;

static const startup_vec_t startup_vecs[] = {
    { "3.0 with params", NULL, 0, PGW_PROTO_3_0,
      P("user\0alice\0database\0sourcegraph\0application_name\0psql\0\0"), LEN_OK,
      0, PGW_STARTUP_MESSAGE, NULL, 0 },
    { "3.2 minor", NULL, 0, (3u << 16) | 2,
      P("user\0bob\0_pq_.foo\0bar\0\0"), LEN_OK, 0, PGW_STARTUP_MESSAGE, NULL, 0 },
    { "repeated name, empty value", NULL, 0, PGW_PROTO_3_0,
      P("database\0a\0user\0u\0database\0b\0options\0\0\0"), LEN_OK,
      0, PGW_STARTUP_MESSAGE, NULL, 0 },
    { "SSLRequest", NULL, 0, PGW_SSL_REQUEST_CODE, P(""), LEN_OK, 0, PGW_STARTUP_SSL, NULL, 0 },
    { "GSSENCRequest", NULL, 0, PGW_GSSENC_REQUEST_CODE, P(""), LEN_OK, 0, PGW_STARTUP_GSSENC, NULL, 0 },
    { "CancelRequest", NULL, 0, PGW_CANCEL_REQUEST_CODE, P("\x00\x00\x30\x39\xde\xad\xbe\xef"),
      LEN_OK, 0, PGW_STARTUP_CANCEL, NULL, 0 },

    /* malformed */
    { "length 0", P("\0\0\0\0"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 4 },
    { "length 3", P("\0\0\0\3"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 4 },
    { "length 7", P("\0\0\0\7\0\3\0"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 4 },
    { "length 2^31", P("\x80\0\0\0\0\3\0\0user\0x\0\0"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 1 },
    { "length 65536", P("\0\1\0\0\0\3\0\0"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 2 },
    { "length 10240", P("\0\0\x28\0\0\3\0\0"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 3 },
    { "length 10001", P("\0\0\x27\x11\0\3\0\0"), 0, NULL, 0, 0,
      PGW_ERR, 0, "invalid length of startup packet", 4 },
    { "no final terminator", NULL, 0, PGW_PROTO_3_0, P("user\0alice\0"), LEN_OK,
      PGW_ERR, 0, "invalid startup packet layout: missing terminator", 0 },
    { "no parameters at all", NULL, 0, PGW_PROTO_3_0, P(""), LEN_OK,
      PGW_ERR, 0, "invalid startup packet layout: missing terminator", 0 },
    { "unterminated name", NULL, 0, PGW_PROTO_3_0, P("user\0alice\0database"), LEN_OK,
      PGW_ERR, 0, "unterminated parameter name in startup packet", 0 },
    { "unterminated value", NULL, 0, PGW_PROTO_3_0, P("user\0alice"), LEN_OK,
      PGW_ERR, 0, "unterminated parameter value in startup packet", 0 },
    { "bytes after terminator", NULL, 0, PGW_PROTO_3_0, P("user\0alice\0\0x"), LEN_OK,
      PGW_ERR, 0, "invalid startup packet layout: expected terminator as last byte", 0 },
    { "unknown code 1234.5681", NULL, 0, (1234u << 16) | 5681, P("\0\0\0\0"), LEN_OK,
      PGW_ERR, 0, "unsupported frontend request code", 8 },
    { "major 2", NULL, 0, 2u << 16, P("user\0alice\0\0"), LEN_OK,
      PGW_ERR, 0, "unsupported frontend protocol: only 3.x is supported", 8 },
    { "major 4", NULL, 0, 4u << 16, P("user\0alice\0\0"), LEN_OK,
      PGW_ERR, 0, "unsupported frontend protocol: only 3.x is supported", 8 },
    { "missing user", NULL, 0, PGW_PROTO_3_0, P("database\0sourcegraph\0\0"), LEN_OK,
      PGW_ERR, 0, "no PostgreSQL user name specified in startup packet", 0 },
    { "empty user", NULL, 0, PGW_PROTO_3_0, P("user\0\0\0"), LEN_OK,
      PGW_ERR, 0, "no PostgreSQL user name specified in startup packet", 0 },
    { "user emptied by repeat", NULL, 0, PGW_PROTO_3_0, P("user\0a\0user\0\0\0"), LEN_OK,
      PGW_ERR, 0, "no PostgreSQL user name specified in startup packet", 0 },
    { "cancel length 20", NULL, 0, PGW_CANCEL_REQUEST_CODE, P("\0\0\0\1\0\0\0\2\0\0\0\3"), LEN_OK,
      PGW_ERR, 0, "invalid length of cancel request", 8 },
    { "cancel length 12", NULL, 0, PGW_CANCEL_REQUEST_CODE, P("\0\0\0\1"), LEN_OK,
      PGW_ERR, 0, "invalid length of cancel request", 8 },
    { "SSLRequest length 12", NULL, 0, PGW_SSL_REQUEST_CODE, P("\0\0\0\0"), LEN_OK,
      PGW_ERR, 0, "invalid length of SSL request", 8 },
    { "GSSENCRequest length 9", NULL, 0, PGW_GSSENC_REQUEST_CODE, P("\0"), LEN_OK,
      PGW_ERR, 0, "invalid length of GSSENC request", 8 },
    { "length field shorter than params", NULL, 0, PGW_PROTO_3_0, P("user\0alice\0\0"), 14,
      PGW_ERR, 0, "unterminated parameter value in startup packet", 14 },
};

/* Materialise a vector into buf (big enough); returns its size. */
static size_t startup_bytes(const startup_vec_t *v, uint8_t *buf)
{
    size_t n;

    if (v->raw) {
        memcpy(buf, v->raw, v->raw_len);
        return v->raw_len;
    }
    n = 8 + v->params_len;
    put32(buf, v->len_field == LEN_OK ? (uint32_t)n : v->len_field);
    put32(buf + 4, v->code);
    memcpy(buf + 8, v->params, v->params_len);
    return n;
}

static ssize_t startup_exact(const uint8_t *p, size_t n, pgw_startup_t *st)
{
    uint8_t *b = dup_exact(p, n);
    ssize_t r = pgw_startup_parse(b, n, st);
    /* st->params points into b: the caller only looks at scalar results */
    free(b);
    return r;
}

static void test_startup_vectors(void)
{
    for (size_t i = 0; i < sizeof startup_vecs / sizeof startup_vecs[0]; i++) {
        const startup_vec_t *v = &startup_vecs[i];
        uint8_t buf[256];
        size_t n = startup_bytes(v, buf);
        size_t err_at = v->err_at ? v->err_at : n;
        int prefixes_ok = 1;
        pgw_startup_t st;
        ssize_t r;

        /* every prefix: NEED_MORE until complete (valid) or until err_at (malformed) */
        for (size_t k = 0; k < n; k++) {
            r = startup_exact(buf, k, &st);
            if (v->want == PGW_ERR && k >= err_at) {
                if (r != PGW_ERR || st.err == NULL || strcmp(st.err, v->err) != 0) {
                    fprintf(stderr, "  %s: prefix %zu gave %zd (%s)\n", v->name, k, r,
                            st.err ? st.err : "no err");
                    prefixes_ok = 0;
                }
            } else if (r != PGW_NEED_MORE) {
                fprintf(stderr, "  %s: prefix %zu gave %zd (%s)\n", v->name, k, r,
                        st.err ? st.err : "no err");
                prefixes_ok = 0;
            }
        }
        CHECK_MSG(prefixes_ok, "%s: prefixes", v->name);

        r = startup_exact(buf, n, &st);
        if (v->want == PGW_ERR) {
            CHECK_MSG(r == PGW_ERR, "%s: got %zd", v->name, r);
            CHECK_STREQ(st.err, v->err);
            continue;
        }
        CHECK_MSG(r == (ssize_t)n, "%s: got %zd want %zu (%s)", v->name, r, n, st.err ? st.err : "");
        CHECK_MSG(st.kind == v->kind, "%s: kind %d", v->name, (int)st.kind);
        CHECK(st.err == NULL);

        /* trailing bytes (the next packet, pipelined) are not consumed */
        {
            uint8_t more[300];
            memcpy(more, buf, n);
            memset(more + n, 'x', 7);
            r = startup_exact(more, n + 7, &st);
            CHECK_MSG(r == (ssize_t)n, "%s: with trailing bytes got %zd", v->name, r);
        }
    }
}

/* Semantic checks on the parsed fields of the valid packets. */
static void test_startup_fields(void)
{
    uint8_t buf[256];
    pgw_startup_t st;
    const char *name, *value;
    size_t off = 0, n;
    uint8_t *b;
    int count = 0;

    /* 3.0 with params: iterate in order */
    n = startup_bytes(&startup_vecs[0], buf);
    b = dup_exact(buf, n);
    CHECK(pgw_startup_parse(b, n, &st) == (ssize_t)n);
    CHECK(st.major == 3 && st.minor == 0 && st.code == PGW_PROTO_3_0);
    CHECK(st.params == (const char *)b + 8);
    CHECK(st.params_len == n - 9);
    while (pgw_startup_next(&st, &off, &name, &value)) {
        static const char *const want[][2] = {
            { "user", "alice" }, { "database", "sourcegraph" }, { "application_name", "psql" },
        };
        if (count < 3) {
            CHECK_STREQ(name, want[count][0]);
            CHECK_STREQ(value, want[count][1]);
        }
        count++;
    }
    CHECK(count == 3);
    CHECK(pgw_startup_next(&st, &off, &name, &value) == 0);
    CHECK_STREQ(pgw_startup_get(&st, "user"), "alice");
    CHECK_STREQ(pgw_startup_get(&st, "database"), "sourcegraph");
    CHECK(pgw_startup_get(&st, "nope") == NULL);
    CHECK(pgw_startup_get(&st, "use") == NULL);
    free(b);

    /* 3.2: minor accepted and reported */
    n = startup_bytes(&startup_vecs[1], buf);
    b = dup_exact(buf, n);
    CHECK(pgw_startup_parse(b, n, &st) == (ssize_t)n);
    CHECK(st.kind == PGW_STARTUP_MESSAGE && st.major == 3 && st.minor == 2);
    CHECK_STREQ(pgw_startup_get(&st, "_pq_.foo"), "bar");
    free(b);

    /* repeated name: last wins, like the server; empty value is a value */
    n = startup_bytes(&startup_vecs[2], buf);
    b = dup_exact(buf, n);
    CHECK(pgw_startup_parse(b, n, &st) == (ssize_t)n);
    CHECK_STREQ(pgw_startup_get(&st, "database"), "b");
    CHECK_STREQ(pgw_startup_get(&st, "options"), "");
    free(b);

    /* CancelRequest */
    n = startup_bytes(&startup_vecs[5], buf);
    b = dup_exact(buf, n);
    CHECK(pgw_startup_parse(b, n, &st) == 16);
    CHECK(st.kind == PGW_STARTUP_CANCEL && st.cancel_pid == 12345 && st.cancel_key == 0xdeadbeefu);
    CHECK(st.code == PGW_CANCEL_REQUEST_CODE);
    CHECK(pgw_startup_next(&st, &off, &name, &value) == 0);   /* no params on a cancel */
    free(b);

    /* SSLRequest */
    n = startup_bytes(&startup_vecs[3], buf);
    b = dup_exact(buf, n);
    CHECK(pgw_startup_parse(b, n, &st) == 8 && st.code == PGW_SSL_REQUEST_CODE);
    free(b);

    /* empty input */
    CHECK(pgw_startup_parse(NULL, 0, &st) == PGW_NEED_MORE);
}

/* ==== normal-phase scanner ========================================================== */

typedef struct {
    pgw_event_t ev;
    uint8_t     type;
    uint32_t    len;
    uint8_t     status;     /* 'Z' only */
    size_t      off;        /* stream offset right after the event */
    int         cap_ok;     /* CAPTURED: cap holds exactly the body, in the chunk that
                               held all of it, else gathered outside it */
} rec_t;

#define MAX_REC 64

typedef struct {
    rec_t       r[MAX_REC];
    size_t      n;
    const char *err;        /* scanner error, if any */
    int         bad;        /* driver-level problem (no progress, not sticky, overflow) */
    int         boundary;   /* at_boundary at the end */
} run_t;

typedef struct {
    uint8_t  buf[16384];
    size_t   n;
    rec_t    exp[MAX_REC];
    size_t   nexp;
} stream_t;

/* Append one message and the events the scanner must report for it. */
static void add_msg(stream_t *st, uint8_t type, const void *body, size_t blen, int captured)
{
    rec_t *e;

    if (st->n + 5 + blen > sizeof st->buf || st->nexp + 2 > MAX_REC) {
        fprintf(stderr, "test stream too big\n");
        exit(2);
    }
    st->buf[st->n] = type;
    put32(st->buf + st->n + 1, (uint32_t)(blen + 4));
    memcpy(st->buf + st->n + 5, body, blen);

    e = &st->exp[st->nexp++];
    memset(e, 0, sizeof *e);
    e->ev = PGW_EV_HEADER;
    e->type = type;
    e->len = (uint32_t)(blen + 4);
    e->off = st->n + 5;
    if (type == 'Z') {
        e->status = ((const uint8_t *)body)[0];
        e->off++;
    }
    st->n += 5 + blen;
    if (captured) {
        e = &st->exp[st->nexp++];
        *e = st->exp[st->nexp - 2];
        e->ev = PGW_EV_CAPTURED;
        e->off = st->n;
        e->cap_ok = 1;
    }
}

static void add_raw(stream_t *st, const void *p, size_t n)
{
    memcpy(st->buf + st->n, p, n);
    st->n += n;
}

/* Types whose capture the driver turns off at their HEADER (pgw_scan_skip_body). */
static const char *scan_skip = "";

/* The current chunk: stream[chunk_start..) lives at chunk[0..chunk_len). */
static const uint8_t *chunk;
static size_t chunk_start, chunk_len;

static void record(run_t *out, const pgw_scan_t *s, pgw_event_t ev, size_t off, const uint8_t *stream)
{
    rec_t *e;

    if (out->n == MAX_REC) {
        out->bad = 1;
        return;
    }
    e = &out->r[out->n++];
    memset(e, 0, sizeof *e);
    e->ev = ev;
    e->type = s->type;
    e->len = s->len;
    e->status = s->type == 'Z' ? s->status : 0;
    e->off = off;
    if (ev == PGW_EV_CAPTURED) {
        e->cap_ok = s->cap_len == s->len - 4 && s->cap_len <= off &&
                    memcmp(s->cap, stream + off - s->cap_len, s->cap_len) == 0;
        /* A body (not 'Z''s status, not an empty one) is seen where it lies when this
         * chunk holds all of it, and gathered when it came in pieces. */
        if (e->cap_ok && s->type != 'Z' && s->cap_len > 0) {
            int whole = off - s->cap_len >= chunk_start;
            int inside = s->cap >= chunk && s->cap + s->cap_len <= chunk + chunk_len;
            e->cap_ok = whole == inside && (whole || s->cap == s->copy);
        }
    }
}

/*
 * Feed stream[0..n) to a fresh scanner in chunks ending at cuts[] (sorted, inside (0,n)),
 * each chunk in an exact-size heap buffer, the way the proxy's read loop does.
 */
static void run_chunks(const uint8_t *stream, size_t n, const size_t *cuts, size_t ncuts,
                       uint32_t max_len, const char *capture, run_t *out)
{
    pgw_scan_t s;
    size_t start = 0;

    memset(out, 0, sizeof *out);
    pgw_scan_init(&s, max_len);
    for (const char *c = capture; *c; c++)
        pgw_scan_capture(&s, (uint8_t)*c);

    for (size_t ci = 0; ci <= ncuts; ci++) {
        size_t end = ci < ncuts ? cuts[ci] : n;
        size_t clen = end - start, off = 0;
        uint8_t *b = dup_exact(stream + start, clen);

        chunk = b;
        chunk_start = start;
        chunk_len = clen;
        for (;;) {
            pgw_event_t ev = PGW_EV_CAPTURED;
            ssize_t r = pgw_scan(&s, b + off, clen - off, &ev);

            if (r == PGW_ERR) {
                const char *e = s.err;
                out->err = e;
                /* sticky: the same error again, even with no input */
                if (e == NULL || pgw_scan(&s, b, clen, &ev) != PGW_ERR || s.err != e ||
                    pgw_scan(&s, NULL, 0, &ev) != PGW_ERR || pgw_scan_at_boundary(&s))
                    out->bad = 1;
                free(b);
                pgw_scan_release(&s);
                return;
            }
            if (r < 0 || (size_t)r > clen - off) {
                out->bad = 1;
                break;
            }
            off += (size_t)r;
            if (s.cap_len > PGW_CAPTURE_MAX)
                out->bad = 1;
            if (ev == PGW_EV_HEADER && s.type != 0 && strchr(scan_skip, s.type) != NULL)
                pgw_scan_skip_body(&s);
            if (ev != PGW_EV_NONE)
                record(out, &s, ev, start + off, stream);
            else if (off == clen)
                break;
            else if (r == 0) {
                out->bad = 1;       /* no progress, no event */
                break;
            }
        }
        free(b);
        start = end;
    }
    out->boundary = pgw_scan_at_boundary(&s);
    if (s.copy != NULL)
        out->bad = 1;       /* a gathered body outlived the call after its event */
    pgw_scan_release(&s);
}

static int rec_eq(const rec_t *a, const rec_t *b)
{
    return a->ev == b->ev && a->type == b->type && a->len == b->len && a->status == b->status &&
           a->off == b->off && a->cap_ok == b->cap_ok;
}

/* Does the run match the expected events (and error)? Prints the first difference. */
static int run_matches(const run_t *r, const rec_t *exp, size_t nexp, const char *err, const char *how)
{
    if (r->bad) {
        fprintf(stderr, "  %s: driver problem\n", how);
        return 0;
    }
    if ((err == NULL) != (r->err == NULL) || (err && strcmp(err, r->err) != 0)) {
        fprintf(stderr, "  %s: err \"%s\", want \"%s\"\n", how, r->err ? r->err : "", err ? err : "");
        return 0;
    }
    if (r->n != nexp) {
        fprintf(stderr, "  %s: %zu events, want %zu\n", how, r->n, nexp);
        return 0;
    }
    for (size_t i = 0; i < nexp; i++) {
        if (!rec_eq(&r->r[i], &exp[i])) {
            fprintf(stderr, "  %s: event %zu: ev %d type %c len %u status %d off %zu cap_ok %d;"
                    " want ev %d type %c len %u status %d off %zu cap_ok %d\n", how, i,
                    (int)r->r[i].ev, r->r[i].type, r->r[i].len, r->r[i].status, r->r[i].off,
                    r->r[i].cap_ok, (int)exp[i].ev, exp[i].type, exp[i].len, exp[i].status,
                    exp[i].off, exp[i].cap_ok);
            return 0;
        }
    }
    if (err == NULL && !r->boundary) {
        fprintf(stderr, "  %s: not at a boundary at the end\n", how);
        return 0;
    }
    return 1;
}

/* Whole, byte at a time, split at every offset, random chunks: all must match. */
static void check_all_feeds(const char *name, const stream_t *st, uint32_t max_len,
                            const char *capture, const char *err)
{
    static size_t cuts[sizeof ((stream_t *)0)->buf];
    run_t r;
    char how[128];
    int ok;
    uint32_t seed = 12345;

    run_chunks(st->buf, st->n, NULL, 0, max_len, capture, &r);
    snprintf(how, sizeof how, "%s, whole", name);
    CHECK_MSG(run_matches(&r, st->exp, st->nexp, err, how), "%s", how);

    for (size_t i = 1; i < st->n; i++)
        cuts[i - 1] = i;
    run_chunks(st->buf, st->n, cuts, st->n ? st->n - 1 : 0, max_len, capture, &r);
    snprintf(how, sizeof how, "%s, byte at a time", name);
    CHECK_MSG(run_matches(&r, st->exp, st->nexp, err, how), "%s", how);

    ok = 1;
    for (size_t k = 1; k < st->n && ok; k++) {
        run_chunks(st->buf, st->n, &k, 1, max_len, capture, &r);
        snprintf(how, sizeof how, "%s, split at %zu", name, k);
        ok = run_matches(&r, st->exp, st->nexp, err, how);
    }
    CHECK_MSG(ok, "%s, split at every offset", name);

    ok = 1;
    for (int round = 0; round < 200 && ok; round++) {
        size_t nc = 0;
        for (size_t at = 0;;) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 700;
            if (at >= st->n)
                break;
            cuts[nc++] = at;
        }
        run_chunks(st->buf, st->n, cuts, nc, max_len, capture, &r);
        snprintf(how, sizeof how, "%s, random chunks round %d", name, round);
        ok = run_matches(&r, st->exp, st->nexp, err, how);
    }
    CHECK_MSG(ok, "%s, random chunks", name);
}

static void test_scan_stream(void)
{
    static stream_t st;
    static uint8_t big[5000];
    uint8_t key[8];

    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    put32(key, 4242);
    put32(key + 4, 0x01020304);

    add_msg(&st, 'R', "\0\0\0\0", 4, 0);                               /* AuthenticationOk */
    add_msg(&st, 'S', P("server_version\0" "16.1\0"), 1);
    add_msg(&st, 'S', P("client_encoding\0UTF8\0"), 1);
    add_msg(&st, 'K', key, 8, 0);
    add_msg(&st, 'Z', "I", 1, 0);
    add_msg(&st, 'T', P("\0\1?column?\0\0\0\0\0\0\0\0\0\0\x17\0\4\xff\xff\xff\xff\0\0"), 0);
    add_msg(&st, 'D', big, sizeof big, 0);                              /* large, skipped */
    add_msg(&st, 'S', big, 2000, 0);                                    /* captured type, too big */
    add_msg(&st, 'S', big, PGW_CAPTURE_MAX, 1);                         /* exactly the limit */
    add_msg(&st, 'S', big, PGW_CAPTURE_MAX + 1, 0);                     /* one over */
    add_msg(&st, 'C', P("SELECT 1\0"), 0);
    add_msg(&st, 'Z', "T", 1, 0);
    add_msg(&st, 'E', P("SERROR\0VERROR\0C42601\0Msyntax error\0\0"), 1);
    add_msg(&st, 'E', "", 0, 1);                                        /* empty captured body */
    add_msg(&st, '1', "", 0, 0);                                        /* empty skipped body */
    add_msg(&st, 'Z', "E", 1, 0);
    add_msg(&st, 'N', P("SNOTICE\0Mhi\0\0"), 0);
    add_msg(&st, 'Z', "I", 1, 0);

    check_all_feeds("stream", &st, 0, "SE", NULL);
}

/* 'Z' captured too: HEADER after the status byte, then CAPTURED with the status as body. */
static void test_scan_capture_z(void)
{
    static stream_t st;

    memset(&st, 0, sizeof st);
    add_msg(&st, 'Z', "I", 1, 1);
    add_msg(&st, 'S', P("a\0b\0"), 1);
    add_msg(&st, 'Z', "T", 1, 1);
    add_msg(&st, 'Z', "E", 1, 1);
    check_all_feeds("capture Z", &st, 0, "ZS", NULL);
}

/* pgw_scan_skip_body right after a HEADER: that message is not captured (no CAPTURED
 * event, its body skipped), an empty one leaves the scanner between messages at once, and
 * the other captured types are not affected. No body is kept in the scanner itself: it
 * stays small (idle sessions hold two). */
static void test_scan_skip_capture(void)
{
    static stream_t st;

    memset(&st, 0, sizeof st);
    add_msg(&st, 'C', P("SELECT 1\0"), 0);
    add_msg(&st, 'E', P("SERROR\0C42601\0Mx\0\0"), 1);
    add_msg(&st, 'C', "", 0, 0);                                        /* empty, skipped */
    add_msg(&st, 'Z', "I", 1, 0);                                       /* captured 'Z', skipped */
    add_msg(&st, 'S', P("a\0b\0"), 1);
    add_msg(&st, 'C', P("SET\0"), 0);
    scan_skip = "CZ";
    check_all_feeds("skip capture", &st, 0, "CEZS", NULL);
    scan_skip = "";
    CHECK(sizeof(pgw_scan_t) <= 96);
}

typedef struct {
    const char *name;
    const char *bytes;      /* after a valid '1' ParseComplete and 'Z' I */
    size_t      n;
    uint32_t    max_len;
    const char *err;
} scan_bad_t;

static const scan_bad_t scan_bad[] = {
    { "length 3", P("D\0\0\0\3xxxx"), 0, "invalid message length" },
    { "length 0", P("D\0\0\0\0"), 0, "invalid message length" },
    { "length > max", P("D\0\0\x20\x01xxxxxxxx"), 8192, "message length exceeds the configured maximum" },
    { "length > 1 GiB default", P("D\x40\0\0\x05xx"), 0, "message length exceeds the configured maximum" },
    { "length 2^32-1", P("D\xff\xff\xff\xff"), UINT32_MAX - 1, "message length exceeds the configured maximum" },
    { "Z length 6", P("Z\0\0\0\6II"), 0, "invalid ReadyForQuery message length" },
    { "Z length 4", P("Z\0\0\0\4"), 0, "invalid ReadyForQuery message length" },
    { "Z status X", P("Z\0\0\0\5X"), 0, "invalid transaction status in ReadyForQuery" },
    { "Z status NUL", P("Z\0\0\0\5\0"), 0, "invalid transaction status in ReadyForQuery" },
};

static void test_scan_malformed(void)
{
    static stream_t st;

    for (size_t i = 0; i < sizeof scan_bad / sizeof scan_bad[0]; i++) {
        const scan_bad_t *v = &scan_bad[i];

        memset(&st, 0, sizeof st);
        add_msg(&st, '1', "", 0, 0);
        add_msg(&st, 'Z', "I", 1, 0);
        add_raw(&st, v->bytes, v->n);
        check_all_feeds(v->name, &st, v->max_len, "", v->err);
    }

    /* limits are inclusive: length == max_len is accepted */
    {
        pgw_scan_t s;
        pgw_event_t ev;
        uint8_t *b = dup_exact("D\0\0\x20\0", 5);

        pgw_scan_init(&s, 8192);
        CHECK(pgw_scan(&s, b, 5, &ev) == 5 && ev == PGW_EV_HEADER && s.len == 8192);
        CHECK(!pgw_scan_at_boundary(&s));
        free(b);
    }
}

/* Body skipping is O(1): one call swallows the whole remaining body of any size. */
static void test_scan_skip(void)
{
    pgw_scan_t s;
    pgw_event_t ev;
    size_t n = 1u << 20;
    uint8_t *b = malloc(n);

    if (b == NULL)
        exit(2);
    memset(b, 'x', n);
    b[0] = 'd';
    put32(b + 1, 0x3fffffffu);          /* a ~1 GiB CopyData */
    pgw_scan_init(&s, 0);
    CHECK(pgw_scan(&s, b, n, &ev) == 5 && ev == PGW_EV_HEADER && s.type == 'd');
    CHECK(pgw_scan(&s, b + 5, n - 5, &ev) == (ssize_t)(n - 5) && ev == PGW_EV_NONE);
    CHECK(s.body_left == 0x3fffffffu - 4 - (n - 5));
    CHECK(!pgw_scan_at_boundary(&s));
    free(b);

    /* the pending CAPTURED of an empty body: delivered with 0 bytes, boundary only after */
    {
        uint8_t *e = dup_exact("E\0\0\0\4", 5);
        pgw_scan_init(&s, 0);
        pgw_scan_capture(&s, 'E');
        CHECK(pgw_scan(&s, e, 5, &ev) == 5 && ev == PGW_EV_HEADER);
        CHECK(!pgw_scan_at_boundary(&s));
        CHECK(pgw_scan(&s, NULL, 0, &ev) == 0 && ev == PGW_EV_CAPTURED && s.cap_len == 0);
        CHECK(pgw_scan_at_boundary(&s));
        CHECK(pgw_scan(&s, NULL, 0, &ev) == 0 && ev == PGW_EV_NONE);
        free(e);
    }
}

/* ==== builders ====================================================================== */

static void check_bytes(const char *name, const uint8_t *got, size_t got_len, const char *want, size_t want_len)
{
    CHECK_MSG(got_len == want_len && memcmp(got, want, want_len) == 0, "%s: built %zu bytes, want %zu",
              name, got_len, want_len);
}

static void test_build_exact(void)
{
    uint8_t b[256];
    size_t n;
    static const char *const opts[] = { "_pq_.a", "_pq_.bb" };

    n = pgw_build_auth_ok(b, sizeof b);
    check_bytes("auth_ok", b, n, P("R\0\0\0\x08\0\0\0\0"));
    n = pgw_build_parameter_status(b, sizeof b, "TimeZone", "UTC");
    check_bytes("parameter_status", b, n, P("S\0\0\0\x11TimeZone\0UTC\0"));
    n = pgw_build_backend_key(b, sizeof b, 0x01020304u, 0xa0b0c0d0u);
    check_bytes("backend_key", b, n, P("K\0\0\0\x0c\x01\x02\x03\x04\xa0\xb0\xc0\xd0"));
    n = pgw_build_ready(b, sizeof b, 'T');
    check_bytes("ready", b, n, P("Z\0\0\0\5T"));
    CHECK(pgw_build_ready(b, sizeof b, 'X') == 0);
    n = pgw_build_error(b, sizeof b, "FATAL", "08006", "gone", NULL);
    check_bytes("error", b, n, P("E\0\0\0\x20SFATAL\0VFATAL\0" "C08006\0Mgone\0\0"));
    n = pgw_build_error(b, sizeof b, "ERROR", "57P01", "switched", "by operator");
    check_bytes("error+detail", b, n,
                P("E\0\0\0\x31SERROR\0VERROR\0" "C57P01\0Mswitched\0" "Dby operator\0\0"));
    n = pgw_build_negotiate(b, sizeof b, 0, opts, 2);
    check_bytes("negotiate", b, n, P("v\0\0\0\x1b\0\0\0\0\0\0\0\2_pq_.a\0_pq_.bb\0"));
    n = pgw_build_negotiate(b, sizeof b, 2, NULL, 0);
    check_bytes("negotiate, no options", b, n, P("v\0\0\0\x0c\0\0\0\2\0\0\0\0"));
    n = pgw_build_query(b, sizeof b, "SELECT 1");
    check_bytes("query", b, n, P("Q\0\0\0\x0dSELECT 1\0"));
    n = pgw_build_terminate(b, sizeof b);
    check_bytes("terminate", b, n, P("X\0\0\0\4"));
    n = pgw_build_cancel(b, sizeof b, 12345, 0xdeadbeefu);
    check_bytes("cancel", b, n, P("\0\0\0\x10\x04\xd2\x16\x2e\0\0\x30\x39\xde\xad\xbe\xef"));
    n = pgw_build_auth_cleartext(b, sizeof b);
    check_bytes("auth_cleartext", b, n, P("R\0\0\0\x08\0\0\0\x03"));
    n = pgw_build_notification(b, sizeof b, 0x01020304u, "jobs", "id=7");
    check_bytes("notification", b, n, P("A\0\0\0\x12\x01\x02\x03\x04jobs\0id=7\0"));
    CHECK(pgw_notification_size("jobs", "id=7") == 19);
    n = pgw_build_notification(b, sizeof b, 0, "", "");
    check_bytes("notification, empty texts", b, n, P("A\0\0\0\x0a\0\0\0\0\0\0"));
}

/* Builder number `which` into out[0..cap). */
static size_t build_one(int which, uint8_t *out, size_t cap)
{
    static const char *const opts[] = { "_pq_.x" };

    switch (which) {
    case 0: return pgw_build_auth_ok(out, cap);
    case 1: return pgw_build_parameter_status(out, cap, "is_superuser", "off");
    case 2: return pgw_build_backend_key(out, cap, 1, 2);
    case 3: return pgw_build_ready(out, cap, 'I');
    case 4: return pgw_build_error(out, cap, "FATAL", "53300", "too many", "d");
    case 5: return pgw_build_negotiate(out, cap, 0, opts, 1);
    case 6: return pgw_build_query(out, cap, "BEGIN");
    case 7: return pgw_build_terminate(out, cap);
    case 8: return pgw_build_cancel(out, cap, 3, 4);
    case 9: return pgw_build_auth_cleartext(out, cap);
    case 10: return pgw_build_notification(out, cap, 42, "chan", "payload text");
    default: return 0;
    }
}

/* Each builder into an exact-size buffer of every capacity: 0 when it does not fit, and
 * never a byte written past cap (ASan). The error builder truncates instead. */
static void test_build_caps(void)
{
    for (int which = 0; which <= 10; which++) {
        uint8_t ref[128];
        size_t full = build_one(which, ref, sizeof ref);
        int ok = full > 0;

        for (size_t cap = 0; cap <= full; cap++) {
            uint8_t *b = malloc(cap ? cap : 1);
            size_t n;

            if (b == NULL)
                exit(2);
            n = build_one(which, b, cap);
            if (cap == full)
                ok &= n == full && memcmp(b, ref, n) == 0;
            else if (which == 4)
                ok &= n <= cap;
            else
                ok &= n == 0;
            free(b);
        }
        CHECK_MSG(ok, "builder %d at every capacity up to %zu", which, full);
    }
}

/* A multi-byte UTF-8 message truncated to every capacity still parses, as a prefix of
 * the original that ends on a character boundary. */
static void test_build_error_truncation(void)
{
    const char *msg = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\x98 end";
    const char *det = "d\xc3\xa9tail \xe2\x9c\x93\xe2\x9c\x93";
    size_t full, ml = strlen(msg), dl = strlen(det);
    int ok = 1, truncated = 0;
    uint8_t ref[256];

    full = pgw_build_error(ref, sizeof ref, "FATAL", "08001", msg, det);
    CHECK(full == 5 + 14 + 7 + 2 + ml + 2 + dl + 1);

    for (size_t cap = 0; cap <= full + 3; cap++) {
        uint8_t *b = malloc(cap ? cap : 1);
        size_t n = pgw_build_error(b, cap, "FATAL", "08001", msg, det);
        pgw_error_fields_t f;

        if (n == 0) {
            ok &= cap < 5 + 14 + 7 + 2 + 2 + 1;
            free(b);
            continue;
        }
        ok &= n <= cap && b[0] == 'E' && get32(b + 1) == n - 1;
        ok &= pgw_parse_error(b + 5, n - 5, &f) == 0;
        if (f.message && f.detail && f.severity && f.sqlstate) {
            size_t fm = strlen(f.message), fd = strlen(f.detail);
            ok &= strcmp(f.severity, "FATAL") == 0 && strcmp(f.sqlstate, "08001") == 0;
            ok &= fm <= ml && memcmp(f.message, msg, fm) == 0 && (msg[fm] & 0xC0) != 0x80;
            ok &= fd <= dl && memcmp(f.detail, det, fd) == 0 && (det[fd] & 0xC0) != 0x80;
            ok &= fd == 0 || fm == ml;                  /* the message is kept first */
            if (cap < full) {
                ok &= n + 4 > cap;                      /* at most a partial character lost */
                truncated++;
            } else {
                ok &= n == full && fm == ml && fd == dl;
            }
        } else {
            ok = 0;
        }
        free(b);
    }
    CHECK_MSG(ok, "error truncation at every capacity");
    CHECK(truncated > 0);
}

/* ==== readers ======================================================================= */

typedef struct {
    const char *name;
    const char *body;
    size_t      n;
    int         want;
    const char *severity, *sqlstate, *message, *detail;
} err_vec_t;

static const err_vec_t err_vecs[] = {
    { "full", P("SERROR\0VERROR\0C42P01\0Mno such table\0Dsome detail\0\0"), 0,
      "ERROR", "42P01", "no such table", "some detail" },
    { "V preferred over localized S", P("SFEHLER\0VERROR\0C42P01\0Mx\0\0"), 0, "ERROR", "42P01", "x", NULL },
    { "V before S", P("VERROR\0SFEHLER\0Mx\0\0"), 0, "ERROR", NULL, "x", NULL },
    { "S only, unknown fields", P("SFATAL\0Hhint\0Ffile.c\0L12\0Mm\0\0"), 0, "FATAL", NULL, "m", NULL },
    { "only terminator", P("\0"), 0, NULL, NULL, NULL, NULL },
    { "empty", P(""), PGW_ERR, NULL, NULL, NULL, NULL },
    { "no NUL at all", P("SERROR"), PGW_ERR, NULL, NULL, NULL, NULL },
    { "no terminator", P("SERROR\0Mboom\0"), PGW_ERR, NULL, NULL, NULL, NULL },
    { "field cut", P("SERROR\0Mbo"), PGW_ERR, NULL, NULL, NULL, NULL },
    { "code without value", P("SERROR\0M"), PGW_ERR, NULL, NULL, NULL, NULL },
    { "bytes after terminator", P("SERROR\0\0S"), PGW_ERR, NULL, NULL, NULL, NULL },
};

static int opt_streq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void test_parse_error(void)
{
    for (size_t i = 0; i < sizeof err_vecs / sizeof err_vecs[0]; i++) {
        const err_vec_t *v = &err_vecs[i];
        uint8_t *b = dup_exact(v->body, v->n);
        pgw_error_fields_t f;
        int r = pgw_parse_error(b, v->n, &f);

        CHECK_MSG(r == v->want, "%s: got %d", v->name, r);
        if (r == 0 && v->want == 0)
            CHECK_MSG(opt_streq(f.severity, v->severity) && opt_streq(f.sqlstate, v->sqlstate) &&
                      opt_streq(f.message, v->message) && opt_streq(f.detail, v->detail),
                      "%s: fields", v->name);
        free(b);
    }
}

typedef struct {
    const char *name;
    const char *body;
    size_t      n;
    int         want;
    const char *pname, *pvalue;
} ps_vec_t;

static const ps_vec_t ps_vecs[] = {
    { "ok", P("TimeZone\0UTC\0"), 0, "TimeZone", "UTC" },
    { "empty value", P("application_name\0\0"), 0, "application_name", "" },
    { "empty", P(""), PGW_ERR, NULL, NULL },
    { "no NUL", P("TimeZone"), PGW_ERR, NULL, NULL },
    { "value not terminated", P("TimeZone\0UTC"), PGW_ERR, NULL, NULL },
    { "no value", P("TimeZone\0"), PGW_ERR, NULL, NULL },
    { "trailing bytes", P("a\0b\0c"), PGW_ERR, NULL, NULL },
    { "three strings", P("a\0b\0c\0"), PGW_ERR, NULL, NULL },
};

static void test_parse_parameter_status(void)
{
    for (size_t i = 0; i < sizeof ps_vecs / sizeof ps_vecs[0]; i++) {
        const ps_vec_t *v = &ps_vecs[i];
        uint8_t *b = dup_exact(v->body, v->n);
        const char *name = NULL, *value = NULL;
        int r = pgw_parse_parameter_status(b, v->n, &name, &value);

        CHECK_MSG(r == v->want, "%s: got %d", v->name, r);
        if (r == 0 && v->want == 0) {
            CHECK_STREQ(name, v->pname);
            CHECK_STREQ(value, v->pvalue);
        }
        free(b);
    }
}

/* The growable variant appends exactly what the fixed-buffer builder writes, message after
 * message, across buffer growth. */
static void test_pgr_notification(void)
{
    pgr_buf_t b = { 0 };
    uint8_t one[64];
    size_t n = pgw_build_notification(one, sizeof one, 7, "c", "p");
    int ok = 1;

    for (int i = 0; i < 200; i++)
        pgr_notification(&b, 7, "c", "p");
    CHECK(!b.oom && b.len == 200 * n);
    for (size_t off = 0; off + n <= b.len; off += n)
        ok &= memcmp(b.data + off, one, n) == 0;
    CHECK_MSG(ok, "pgr_notification content");
    pgr_buf_free(&b);
}

/* ==== PasswordMessage =============================================================== */

typedef struct {
    const char *name;
    const char *bytes;
    size_t      n;
    uint32_t    max_len;
    ssize_t     want;           /* 0: complete at its full size; PGW_ERR */
    const char *password;       /* on success; NULL: a bad body */
    const char *err;            /* PGW_ERR, or the bad body's message */
    size_t      err_at;         /* shortest prefix that is already an error (0: full) */
} pw_vec_t;

static const pw_vec_t pw_vecs[] = {
    { "password", P("p\0\0\0\x0bsecret\0"), PGW_PASSWORD_MAX, 0, "secret", NULL, 0 },
    { "empty password", P("p\0\0\0\x05\0"), PGW_PASSWORD_MAX, 0, "", NULL, 0 },
    { "UTF-8 and spaces", P("p\0\0\0\x0ep\xc3\xa4ss w d\0"), PGW_PASSWORD_MAX, 0, "p\xc3\xa4ss w d", NULL, 0 },
    { "length == max", P("p\0\0\0\x08" "ab\0\0"), 8, 0, NULL, "invalid password packet size", 0 },
    { "no terminator", P("p\0\0\0\x0asecret"), PGW_PASSWORD_MAX, 0, NULL, "invalid password packet size", 0 },
    { "embedded NUL", P("p\0\0\0\x0bsec\0et\0"), PGW_PASSWORD_MAX, 0, NULL, "invalid password packet size", 0 },
    { "two strings", P("p\0\0\0\x08" "a\0b\0"), PGW_PASSWORD_MAX, 0, NULL, "invalid password packet size", 0 },

    /* malformed framing */
    { "type Q", P("Q\0\0\0\x0bsecret\0"), PGW_PASSWORD_MAX, PGW_ERR, NULL, "expected a password message", 1 },
    { "type NUL", P("\0\0\0\0\x05\0"), PGW_PASSWORD_MAX, PGW_ERR, NULL, "expected a password message", 1 },
    { "an SSLRequest again", P("\0\0\0\x08\x04\xd2\x16\x2f"), PGW_PASSWORD_MAX, PGW_ERR, NULL,
      "expected a password message", 1 },
    { "length 4", P("p\0\0\0\x04"), PGW_PASSWORD_MAX, PGW_ERR, NULL, "invalid password message length", 5 },
    { "length 0", P("p\0\0\0\0"), PGW_PASSWORD_MAX, PGW_ERR, NULL, "invalid password message length", 5 },
    { "length max + 1", P("p\0\0\0\x09" "abcd\0"), 8, PGW_ERR, NULL, "invalid password message length", 5 },
    { "length 2^31", P("p\x80\0\0\0xx"), UINT32_MAX, PGW_ERR, NULL, "invalid password message length", 2 },
    { "length 2^24", P("p\x01\0\0\0xx"), PGW_PASSWORD_MAX, PGW_ERR, NULL, "invalid password message length", 2 },
    { "length 1025, max 1024", P("p\0\0\x04\x01"), 1024, PGW_ERR, NULL, "invalid password message length", 5 },
};

static void test_password_vectors(void)
{
    for (size_t i = 0; i < sizeof pw_vecs / sizeof pw_vecs[0]; i++) {
        const pw_vec_t *v = &pw_vecs[i];
        size_t err_at = v->err_at ? v->err_at : v->n;
        int prefixes_ok = 1;
        pgw_password_t pw;
        ssize_t r;
        uint8_t *b;

        /* every prefix, each in an exact-size buffer: NEED_MORE until complete or err_at */
        for (size_t k = 0; k < v->n; k++) {
            b = dup_exact(v->bytes, k);
            r = pgw_password_parse(b, k, v->max_len, &pw);
            free(b);
            if (v->want == PGW_ERR && k >= err_at)
                prefixes_ok &= r == PGW_ERR && pw.err != NULL && strcmp(pw.err, v->err) == 0;
            else
                prefixes_ok &= r == PGW_NEED_MORE && pw.err == NULL && pw.password == NULL;
            if (!prefixes_ok) {
                fprintf(stderr, "  %s: prefix %zu gave %zd (%s)\n", v->name, k, r, pw.err ? pw.err : "");
                break;
            }
        }
        CHECK_MSG(prefixes_ok, "%s: prefixes", v->name);

        /* whole, then with the next message pipelined behind it (not consumed) */
        for (size_t extra = 0; extra <= 6; extra += 6) {
            uint8_t more[64];
            memcpy(more, v->bytes, v->n);
            memcpy(more + v->n, "Q\0\0\0\x04x", extra);
            b = dup_exact(more, v->n + extra);
            r = pgw_password_parse(b, v->n + extra, v->max_len, &pw);
            if (v->want == PGW_ERR) {
                CHECK_MSG(r == PGW_ERR, "%s: got %zd", v->name, r);
                CHECK_STREQ(pw.err, v->err);
            } else {
                CHECK_MSG(r == (ssize_t)v->n, "%s (+%zu): got %zd want %zu", v->name, extra, r, v->n);
                if (v->password != NULL) {
                    CHECK_MSG(pw.err == NULL && pw.password == (const char *)b + 5, "%s: slice", v->name);
                    CHECK_STREQ(pw.password, v->password);
                    CHECK(pw.len == strlen(v->password));
                } else {
                    CHECK_MSG(pw.password == NULL && pw.len == 0, "%s: no password", v->name);
                    CHECK_STREQ(pw.err, v->err);
                }
            }
            free(b);
        }
    }
}

/* ==== round trip: builders -> scanner -> readers ==================================== */

static void test_round_trip(void)
{
    static uint8_t stream[4096];
    static const char *const opts[] = { "_pq_.compression" };
    size_t n = 0, off = 0;
    uint8_t *b;
    pgw_scan_t s;
    int seen = 0;

    n += pgw_build_auth_ok(stream + n, sizeof stream - n);
    n += pgw_build_parameter_status(stream + n, sizeof stream - n, "server_version", "15.5");
    n += pgw_build_parameter_status(stream + n, sizeof stream - n, "integer_datetimes", "on");
    n += pgw_build_backend_key(stream + n, sizeof stream - n, 777, 0xfeedf00du);
    n += pgw_build_negotiate(stream + n, sizeof stream - n, 0, opts, 1);
    n += pgw_build_ready(stream + n, sizeof stream - n, 'I');
    n += pgw_build_query(stream + n, sizeof stream - n, "SELECT 'x'");
    n += pgw_build_error(stream + n, sizeof stream - n, "FATAL", "57P01",
                         "route pg switched to external", "db.example:5432");
    n += pgw_build_ready(stream + n, sizeof stream - n, 'E');
    n += pgw_build_terminate(stream + n, sizeof stream - n);

    b = dup_exact(stream, n);
    pgw_scan_init(&s, 0);
    pgw_scan_capture(&s, 'S');
    pgw_scan_capture(&s, 'E');
    pgw_scan_capture(&s, 'K');
    pgw_scan_capture(&s, 'R');
    pgw_scan_capture(&s, 'v');
    pgw_scan_capture(&s, 'Q');
    for (;;) {
        pgw_event_t ev;
        ssize_t r = pgw_scan(&s, b + off, n - off, &ev);

        CHECK(r >= 0);
        if (r < 0)
            break;
        off += (size_t)r;
        if (ev == PGW_EV_NONE) {
            if (off == n)
                break;
            continue;
        }
        if (ev == PGW_EV_HEADER) {
            if (s.type == 'Z')
                CHECK(s.status == (seen < 6 ? 'I' : 'E'));
            continue;
        }
        seen++;
        switch (s.type) {
        case 'R':
            CHECK(s.cap_len == 4 && get32(s.cap) == 0);
            break;
        case 'S': {
            const char *name, *value;
            CHECK(pgw_parse_parameter_status(s.cap, s.cap_len, &name, &value) == 0);
            CHECK(strcmp(name, "server_version") == 0 ? strcmp(value, "15.5") == 0
                                                      : strcmp(value, "on") == 0);
            break;
        }
        case 'K':
            CHECK(s.cap_len == 8 && get32(s.cap) == 777 && get32(s.cap + 4) == 0xfeedf00du);
            break;
        case 'v':
            CHECK(s.cap_len == 8 + sizeof "_pq_.compression" && get32(s.cap + 4) == 1 &&
                  strcmp((const char *)s.cap + 8, "_pq_.compression") == 0);
            break;
        case 'Q':
            CHECK(s.cap_len == sizeof "SELECT 'x'" && strcmp((const char *)s.cap, "SELECT 'x'") == 0);
            break;
        case 'E': {
            pgw_error_fields_t f;
            CHECK(pgw_parse_error(s.cap, s.cap_len, &f) == 0);
            CHECK_STREQ(f.severity, "FATAL");
            CHECK_STREQ(f.sqlstate, "57P01");
            CHECK_STREQ(f.message, "route pg switched to external");
            CHECK_STREQ(f.detail, "db.example:5432");
            break;
        }
        default:
            CHECK_MSG(0, "unexpected capture of '%c'", s.type);
        }
    }
    CHECK(off == n && pgw_scan_at_boundary(&s));
    CHECK(seen == 7);
    free(b);

    /* CancelRequest builder -> startup parser */
    {
        uint8_t c[16];
        pgw_startup_t st;
        CHECK(pgw_build_cancel(c, sizeof c, 99, 0x12345678u) == 16);
        b = dup_exact(c, 16);
        CHECK(pgw_startup_parse(b, 16, &st) == 16 && st.kind == PGW_STARTUP_CANCEL &&
              st.cancel_pid == 99 && st.cancel_key == 0x12345678u);
        free(b);
    }
}

int main(void)
{
    test_startup_vectors();
    test_startup_fields();
    test_scan_stream();
    test_scan_capture_z();
    test_scan_skip_capture();
    test_scan_malformed();
    test_scan_skip();
    test_build_exact();
    test_build_caps();
    test_build_error_truncation();
    test_parse_error();
    test_parse_parameter_status();
    test_pgr_notification();
    test_password_vectors();
    test_round_trip();
    return unit_done("pg_wire");
}
