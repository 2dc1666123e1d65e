/*
 * test_resp.c - the RESP request and reply scanners on byte vectors.
 *
 * Every vector is fed three ways - whole, one byte at a time, and split in two at every
 * offset - and each way must yield the same completed commands/replies (printed as a
 * summary line each) and, for malformed input, the same exact error. Each chunk is
 * copied to the end of an exact-size malloc'd buffer, so ASan catches any read past it.
 * Wire sizes are checked in every run: a completed value's size must equal the bytes
 * consumed since the previous one (requests: unless the vector has skipped commands).
 */
#include "protocol/resp.h"
#include "tests/unit/unit.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- growing text buffer for summaries ---------------------------------------------- */

typedef struct {
    char  *s;
    size_t len, cap;
} sbuf_t;

static void sb_putc(sbuf_t *b, char c)
{
    if (b->len + 2 > b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->s = realloc(b->s, b->cap);
        if (!b->s)
            abort();
    }
    b->s[b->len++] = c;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s)
{
    while (*s)
        sb_putc(b, *s++);
}

static void sb_printf(sbuf_t *b, const char *fmt, long long v)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, fmt, v);
    sb_puts(b, tmp);
}

/* "bytes" with anything unprintable, '"' and '\' as \xHH. */
static void sb_quoted(sbuf_t *b, const char *s, size_t n)
{
    sb_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            sb_putc(b, (char)c);
        } else {
            char tmp[8];
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            sb_puts(b, tmp);
        }
    }
    sb_putc(b, '"');
}

static const char *sb_str(const sbuf_t *b)
{
    return b->s ? b->s : "";
}

/* ---- feeding ------------------------------------------------------------------------ */

enum { FEED_WHOLE, FEED_BYTES, FEED_SPLIT };

/* Length of the next chunk at pos for a feeding mode. */
static size_t chunk_len(int mode, size_t split, size_t pos, size_t n)
{
    switch (mode) {
    case FEED_BYTES:
        return 1;
    case FEED_SPLIT:
        return pos < split ? split - pos : n - pos;
    default:
        return n - pos;
    }
}

/* An exact-size copy: the chunk's last byte is the allocation's last byte. */
static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (!c)
        abort();
    if (n)
        memcpy(c, p, n);
    return c;
}

/* ---- requests ----------------------------------------------------------------------- */

static void req_summary(sbuf_t *b, const resp_req_t *r)
{
    if (r->inline_cmd)
        sb_putc(b, 'i');
    sb_printf(b, "%lld", (long long)r->argc);
    for (uint32_t i = 0; i < r->ncap; i++) {
        uint32_t n = r->arg_len[i] < RESP_CAP_LEN ? r->arg_len[i] : RESP_CAP_LEN;
        sb_putc(b, ' ');
        sb_quoted(b, r->arg[i], n);
        if (r->arg_trunc[i])
            sb_printf(b, "~%lld", (long long)r->arg_len[i]);
    }
    sb_putc(b, '\n');
}

typedef struct {
    sbuf_t      out;            /* summaries of completed commands */
    const char *err;            /* error string, or NULL */
    size_t      ncmd;
    int         boundary;       /* at a boundary after the last byte */
    int         bad_bytes;      /* a cmd_bytes that did not match the bytes consumed */
    int         stalled;        /* a call that consumed nothing */
} req_result_t;

static void req_run(const uint8_t *data, size_t n, uint64_t max_bulk, int mode, size_t split,
                    int has_skips, req_result_t *res)
{
    resp_req_t r;
    size_t pos = 0;
    uint64_t since = 0;

    memset(res, 0, sizeof *res);
    resp_req_init(&r, max_bulk);
    while (pos < n) {
        size_t clen = chunk_len(mode, split, pos, n), off = 0;
        uint8_t *chunk = exact_copy(data + pos, clen);
        while (off < clen) {
            int done = 0;
            ssize_t rc = resp_req_scan(&r, chunk + off, clen - off, &done);
            if (rc == RESP_ERR) {
                res->err = r.err;
                free(chunk);
                /* the error is sticky */
                if (resp_req_scan(&r, (const uint8_t *)"x", 1, &done) != RESP_ERR)
                    res->stalled = 1;
                return;
            }
            if (rc <= 0 || (size_t)rc > clen - off) {
                res->stalled = 1;
                free(chunk);
                return;
            }
            off += (size_t)rc;
            since += (uint64_t)rc;
            if (done) {
                res->ncmd++;
                req_summary(&res->out, &r);
                if (has_skips ? r.cmd_bytes > since : r.cmd_bytes != since)
                    res->bad_bytes = 1;
                since = 0;
            } else if (off != clen) {
                res->stalled = 1;       /* stopped early without completing anything */
            }
        }
        free(chunk);
        pos += clen;
    }
    res->boundary = resp_req_at_boundary(&r);
}

typedef struct {
    const char *name;
    const char *data;
    size_t      len;            /* 0: strlen(data) */
    uint64_t    max_bulk;
    int         has_skips;      /* contains empty commands (skipped, not reported) */
    const char *want;           /* summaries of the completed commands */
    const char *err;            /* expected error, NULL if none */
} req_case_t;

#define V(s) s, sizeof(s) - 1

static const req_case_t req_cases[] = {
    /* multibulk */
    { "ping", V("*1\r\n$4\r\nPING\r\n"), 0, 0, "1 \"PING\"\n", NULL },
    { "set", V("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"), 0, 0,
      "3 \"SET\" \"key\" \"value\"\n", NULL },
    { "pipeline", V("*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nEXEC\r\n"),
      0, 0, "1 \"MULTI\"\n2 \"GET\" \"a\"\n1 \"EXEC\"\n", NULL },
    { "empty bulk", V("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"), 0, 0, "2 \"ECHO\" \"\"\n", NULL },
    { "binary bulk", V("*2\r\n$4\r\nECHO\r\n$5\r\na\0b\r\n\r\n"), 0, 0,
      "2 \"ECHO\" \"a\\x00b\\x0d\\x0a\"\n", NULL },
    { "more than captured", V("*6\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n$1\r\nf\r\n"),
      0, 0, "6 \"a\" \"b\" \"c\" \"d\"\n", NULL },
    { "max bulk exact", V("*1\r\n$10\r\n0123456789\r\n"), 10, 0, "1 \"0123456789\"\n", NULL },
    /* Redis skips the byte after '\r' and the two after a body without looking */
    { "redis framing quirks", V("*1\rX$4\rYPING!!*1\r\n$4\r\nPING\r\n"), 0, 0,
      "1 \"PING\"\n1 \"PING\"\n", NULL },
    { "max count", V("*1048576\r\n"), 0, 0, "", NULL },
    /* whole commands take a one-pass path; any line it does not expect goes byte-wise */
    { "bulk line cr then x", V("*2\r\n$3\r\nGET\r\n$1\rXk\r\n"), 0, 0, "2 \"GET\" \"k\"\n", NULL },
    { "count cr then x", V("*1\rX$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"), 0, 0,
      "1 \"PING\"\n1 \"PING\"\n", NULL },
    /* empty commands: consumed, not reported */
    { "skipped", V("*0\r\n*-1\r\n*-10\r\n\r\n\n   \r\n\t\r\n*1\r\n$4\r\nPING\r\n"), 0, 1,
      "1 \"PING\"\n", NULL },
    { "skipped llong min", V("*-9223372036854775808\r\nPING\r\n"), 0, 1, "i1 \"PING\"\n", NULL },
    /* inline */
    { "inline ping", V("PING\r\n"), 0, 0, "i1 \"PING\"\n", NULL },
    { "inline lf only", V("PING\nGET k\n"), 0, 0, "i1 \"PING\"\ni2 \"GET\" \"k\"\n", NULL },
    { "inline spaces", V("  SET   k \t v  \r\n"), 0, 0, "i3 \"SET\" \"k\" \"v\"\n", NULL },
    { "inline quotes", V("SET \"hello world\" 'it\\'s'\r\n"), 0, 0,
      "i3 \"SET\" \"hello world\" \"it's\"\n", NULL },
    { "inline escapes", V("ECHO \"a\\x41\\x4g\\n\\r\\t\\b\\a\\q\\\"\"\r\n"), 0, 0,
      "i2 \"ECHO\" \"aAx4g\\x0a\\x0d\\x09\\x08\\x07q\\x22\"\n", NULL },
    { "inline bare x", V("ECHO \"\\x\" \"\\x4\"\r\n"), 0, 0, "i3 \"ECHO\" \"x\" \"x4\"\n", NULL },
    { "inline hex at end", V("ECHO \"\\x4A\"\r\n"), 0, 0, "i2 \"ECHO\" \"J\"\n", NULL },
    { "inline sq backslash", V("ECHO 'a\\b' 'it\\'s'\r\n"), 0, 0,
      "i3 \"ECHO\" \"a\\x5cb\" \"it's\"\n", NULL },
    { "inline empty args", V("ECHO \"\" ''\r\n"), 0, 0, "i3 \"ECHO\" \"\" \"\"\n", NULL },
    { "inline quote mid word", V("ECHO ab\"c d\"\r\n"), 0, 0, "i2 \"ECHO\" \"abc d\"\n", NULL },
    { "inline quote then tab", V("ECHO \"a\"\tb\r\n"), 0, 0, "i3 \"ECHO\" \"a\" \"b\"\n", NULL },
    { "inline bare cr", V("GET a\rb\r\n"), 0, 0, "i3 \"GET\" \"a\" \"b\"\n", NULL },
    { "inline cr in quotes", V("ECHO \"a\rb\"\r\n"), 0, 0, "i2 \"ECHO\" \"a\\x0db\"\n", NULL },
    { "inline cr cr lf", V("PING\r\r\n"), 0, 0, "i1 \"PING\"\n", NULL },
    { "inline vt in word", V("\v\fa\vb c\r\n"), 0, 0, "i2 \"a\\x0bb\" \"c\"\n", NULL },
    { "inline then multibulk", V("PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nQUIT\r\n"), 0, 0,
      "i1 \"PING\"\n2 \"ECHO\" \"hi\"\ni1 \"QUIT\"\n", NULL },
    /* a NUL hides the line end from Redis's strchr(): the line has not ended */
    { "inline nul", V("PI\0NG\r\nPING\r\n"), 0, 0, "", NULL },

    /* malformed */
    { "count not a number", V("*abc\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count empty", V("*\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count minus zero", V("*-0\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count leading zero", V("*01\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count plus", V("*+1\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count too many", V("*1048577\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count int max", V("*3000000000\r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "count overflow", V("*99999999999999999999\r\n"), 0, 0, "",
      "Protocol error: invalid multibulk length" },
    { "count space", V("*1 \r\n"), 0, 0, "", "Protocol error: invalid multibulk length" },
    { "bulk negative", V("*1\r\n$-1\r\n"), 0, 0, "", "Protocol error: invalid bulk length" },
    { "bulk empty", V("*1\r\n$\r\n"), 0, 0, "", "Protocol error: invalid bulk length" },
    { "bulk leading zero", V("*1\r\n$01\r\n"), 0, 0, "", "Protocol error: invalid bulk length" },
    { "bulk above 512MB", V("*1\r\n$536870913\r\n"), 0, 0, "", "Protocol error: invalid bulk length" },
    { "bulk above max", V("*1\r\n$11\r\n"), 10, 0, "", "Protocol error: invalid bulk length" },
    { "expected dollar", V("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"), 0, 0, "",
      "Protocol error: expected '$', got 'f'" },
    { "expected dollar cr", V("*1\r\n\r\n"), 0, 0, "", "Protocol error: expected '$', got ' '" },
    { "expected dollar lf", V("*1\r\n\n\r\n"), 0, 0, "", "Protocol error: expected '$', got ' '" },
    { "expected dollar after cmd", V("PING\r\n*1\r\n:1\r\n"), 0, 0, "i1 \"PING\"\n",
      "Protocol error: expected '$', got ':'" },
    { "unbalanced dq", V("\"unbalanced\r\n"), 0, 0, "", "Protocol error: unbalanced quotes in request" },
    { "unbalanced sq", V("ECHO 'x\r\n"), 0, 0, "", "Protocol error: unbalanced quotes in request" },
    { "quote then letter", V("ECHO \"a\"b\r\n"), 0, 0, "",
      "Protocol error: unbalanced quotes in request" },
    { "sq then letter", V("ECHO 'a'b c\r\n"), 0, 0, "", "Protocol error: unbalanced quotes in request" },
    { "backslash at end", V("ECHO \"a\\\r\n"), 0, 0, "", "Protocol error: unbalanced quotes in request" },
    { "hex at end", V("ECHO \"\\x4\r\n"), 0, 0, "", "Protocol error: unbalanced quotes in request" },
    /* '\\' is not an escaped backslash in single quotes: the quote stays open */
    { "sq double backslash", V("ECHO '\\\\'\r\n"), 0, 0, "",
      "Protocol error: unbalanced quotes in request" },
    { "sq escape at end", V("ECHO 'a\\'\r\n"), 0, 0, "", "Protocol error: unbalanced quotes in request" },
    { "error after good cmds", V("*1\r\n$4\r\nPING\r\nPING\r\n\"x\r\n"), 0, 0,
      "1 \"PING\"\ni1 \"PING\"\n", "Protocol error: unbalanced quotes in request" },
};

static void check_req_case(const req_case_t *c)
{
    size_t n = c->len;
    req_result_t ref, res;

    req_run((const uint8_t *)c->data, n, c->max_bulk, FEED_WHOLE, 0, c->has_skips, &ref);
    CHECK_MSG(strcmp(sb_str(&ref.out), c->want) == 0, "%s: got [%s] want [%s]", c->name,
              sb_str(&ref.out), c->want);
    CHECK_MSG((ref.err == NULL && c->err == NULL) ||
              (ref.err && c->err && strcmp(ref.err, c->err) == 0),
              "%s: error [%s] want [%s]", c->name, ref.err ? ref.err : "(none)",
              c->err ? c->err : "(none)");
    CHECK_MSG(!ref.stalled && !ref.bad_bytes, "%s: stalled %d bad_bytes %d", c->name,
              ref.stalled, ref.bad_bytes);

    for (size_t k = 0; k <= n + 1; k++) {
        int mode = k == n + 1 ? FEED_BYTES : FEED_SPLIT;
        req_run((const uint8_t *)c->data, n, c->max_bulk, mode, k, c->has_skips, &res);
        CHECK_MSG(strcmp(sb_str(&res.out), sb_str(&ref.out)) == 0 &&
                  ((res.err == NULL && ref.err == NULL) ||
                   (res.err && ref.err && strcmp(res.err, ref.err) == 0)) &&
                  res.boundary == ref.boundary && !res.stalled && !res.bad_bytes,
                  "%s: %s %zu: got [%s] err [%s]", c->name, mode == FEED_BYTES ? "bytes" : "split",
                  k, sb_str(&res.out), res.err ? res.err : "(none)");
        free(res.out.s);
    }
    free(ref.out.s);
}

/* Big inputs: whole, byte by byte, and split at a few offsets. */
static void req_big(const char *name, const uint8_t *data, size_t n, const char *want,
                    const char *err)
{
    size_t splits[] = { 1, 2, n / 3, n / 2, n - 2, n - 1 };
    req_result_t res;

    for (size_t k = 0; k < sizeof splits / sizeof splits[0] + 2; k++) {
        int mode = k == 0 ? FEED_WHOLE : k == 1 ? FEED_BYTES : FEED_SPLIT;
        req_run(data, n, 0, mode, k >= 2 ? splits[k - 2] : 0, 0, &res);
        CHECK_MSG((want == NULL || strcmp(sb_str(&res.out), want) == 0) &&
                  ((res.err == NULL && err == NULL) ||
                   (res.err && err && strcmp(res.err, err) == 0)) &&
                  !res.stalled && !res.bad_bytes,
                  "%s mode %zu: got [%.200s] err [%s]", name, k, sb_str(&res.out),
                  res.err ? res.err : "(none)");
        free(res.out.s);
    }
}

/*
 * Redis's inline limit (processInlineBuffer): when a read ends and the line's '\n' has not
 * come, more than RESP_INLINE_MAX bytes of it buffered is "too big inline request". So the
 * verdict depends on where the reads end: feed data (a line of 'a's and its ending) as
 * chunks ending at each cut, and expect the error exactly when a cut falls after byte
 * RESP_INLINE_MAX and before the '\n'.
 */
static void req_inline_cuts(const uint8_t *data, size_t n, const size_t *cuts, size_t ncuts, const char *how)
{
    const uint8_t *nl = memchr(data, '\n', n);
    size_t nl_end = nl ? (size_t)(nl - data) + 1 : n + 1;   /* bytes up to the '\n', included */
    int want_err = 0;
    resp_req_t r;
    size_t pos = 0, ncmd = 0;
    const char *err = NULL;

    for (size_t k = 0; k < ncuts; k++)
        if (cuts[k] > RESP_INLINE_MAX && cuts[k] < nl_end)
            want_err = 1;
    resp_req_init(&r, 0);
    for (size_t k = 0; k < ncuts && err == NULL; k++) {
        uint8_t *chunk = exact_copy(data + pos, cuts[k] - pos);
        size_t off = 0, clen = cuts[k] - pos;
        while (off < clen) {
            int done = 0;
            ssize_t rc = resp_req_scan(&r, chunk + off, clen - off, &done);
            if (rc == RESP_ERR) {
                err = r.err;
                break;
            }
            off += (size_t)rc;
            ncmd += done;
        }
        free(chunk);
        pos = cuts[k];
    }
    CHECK_MSG(want_err ? err != NULL && strcmp(err, "Protocol error: too big inline request") == 0
                       : err == NULL && ncmd == (nl != NULL),
              "inline %zu bytes (%s): err [%s] commands %zu", n, how, err ? err : "(none)", ncmd);
}

static void req_inline_limit(const uint8_t *data, size_t n)
{
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    size_t near[] = { 1, RESP_INLINE_MAX / 2, RESP_INLINE_MAX - 1, RESP_INLINE_MAX,
                      RESP_INLINE_MAX + 1, RESP_INLINE_MAX + 2, n - 1 };

    cuts[0] = n;
    req_inline_cuts(data, n, cuts, 1, "whole");
    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    req_inline_cuts(data, n, cuts, n, "byte at a time");
    for (size_t k = 0; k < sizeof near / sizeof near[0]; k++) {
        if (near[k] == 0 || near[k] >= n)
            continue;
        cuts[0] = near[k];
        cuts[1] = n;
        char how[64];
        snprintf(how, sizeof how, "split at %zu", near[k]);
        req_inline_cuts(data, n, cuts, 2, how);
    }
    free(cuts);
}

static void test_req_limits(void)
{
    size_t n = RESP_INLINE_MAX + 16;
    uint8_t *b = malloc(n + 64);
    char want[512];

    /* Inline lines around the limit, fed whole, byte by byte and split at offsets near
     * the boundaries; test_req_inline_limit checks each against Redis's rule. */
    static const struct { size_t line; const char *tail; } lines[] = {
        { RESP_INLINE_MAX - 1, "\r\n" }, { RESP_INLINE_MAX, "\r\n" }, { RESP_INLINE_MAX, "\n" },
        { RESP_INLINE_MAX + 1, "\r\n" }, { RESP_INLINE_MAX + 1, "\n" }, { RESP_INLINE_MAX - 1, "" },
        { RESP_INLINE_MAX, "" }, { RESP_INLINE_MAX + 1, "" }, { RESP_INLINE_MAX, "\r" },
    };
    for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++) {
        memset(b, 'a', lines[k].line);
        memcpy(b + lines[k].line, lines[k].tail, strlen(lines[k].tail));
        req_inline_limit(b, lines[k].line + strlen(lines[k].tail));
    }
    (void)want;

    /* a NUL hides the newline: only the limit ends the line */
    memset(b, 'a', RESP_INLINE_MAX + 1);
    b[1] = '\0';
    memcpy(b + 10, "\r\n", 2);
    req_big("inline nul over limit", b, RESP_INLINE_MAX + 1, "",
            "Protocol error: too big inline request");

    /* "*" + digits with no '\r' */
    b[0] = '*';
    memset(b + 1, '1', RESP_INLINE_MAX);
    req_big("mbulk count over limit", b, RESP_INLINE_MAX + 1, "",
            "Protocol error: too big mbulk count string");
    req_big("mbulk count at limit", b, RESP_INLINE_MAX, "", NULL);

    /* "$" + digits with no '\r' */
    memcpy(b, "*1\r\n$", 5);
    memset(b + 5, '1', RESP_INLINE_MAX);
    req_big("bulk count over limit", b, RESP_INLINE_MAX + 5, "",
            "Protocol error: too big bulk count string");
    free(b);
}

/* One big bulk argument: skipped in one call, first bytes captured. */
static void test_req_big_bulk(void)
{
    const size_t body = 10 * 1000 * 1000;
    const char *head = "*2\r\n$3\r\nSET\r\n$10000000\r\n";
    size_t hl = strlen(head), n = hl + body + 2;
    uint8_t *b = malloc(n);
    resp_req_t r;
    int done = 0;
    ssize_t rc;

    memcpy(b, head, hl);
    for (size_t i = 0; i < body; i++)
        b[hl + i] = (uint8_t)('a' + i % 26);
    memcpy(b + hl + body, "\r\n", 2);

    resp_req_init(&r, 0);
    rc = resp_req_scan(&r, b, n, &done);
    CHECK(rc == (ssize_t)n && done == 1);
    CHECK(r.argc == 2 && r.ncap == 2);
    CHECK(r.arg_len[1] == body && r.arg_trunc[1] == 1);
    CHECK(strlen(r.arg[1]) == RESP_CAP_LEN && memcmp(r.arg[1], "abcdefghijklmnopqrstuvwxyzabc", 29) == 0);
    CHECK(r.cmd_bytes == n);

    /* in three calls: header, most of the body, the rest */
    resp_req_init(&r, 0);
    rc = resp_req_scan(&r, b, hl, &done);
    CHECK(rc == (ssize_t)hl && !done);
    rc = resp_req_scan(&r, b + hl, body - 5, &done);
    CHECK(rc == (ssize_t)(body - 5) && !done);
    CHECK(!resp_req_at_boundary(&r));
    rc = resp_req_scan(&r, b + hl + body - 5, 7, &done);
    CHECK(rc == 7 && done && r.cmd_bytes == n && r.arg_len[1] == body);
    CHECK(resp_req_at_boundary(&r));
    free(b);
}

/* Many commands in one buffer, mixing both forms. */
static void test_req_pipeline(void)
{
    sbuf_t in = { 0 }, want = { 0 };
    char tmp[128];

    for (int i = 0; i < 5000; i++) {
        if (i % 3 == 0) {
            snprintf(tmp, sizeof tmp, "SET key:%d %d\r\n", i, i);
            sb_puts(&in, tmp);
            snprintf(tmp, sizeof tmp, "i3 \"SET\" \"key:%d\" \"%d\"\n", i, i);
        } else {
            char key[32];
            int kl = snprintf(key, sizeof key, "key:%d", i);
            snprintf(tmp, sizeof tmp, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, key);
            sb_puts(&in, tmp);
            snprintf(tmp, sizeof tmp, "2 \"GET\" \"%s\"\n", key);
        }
        sb_puts(&want, tmp);
    }
    req_big("pipeline", (const uint8_t *)in.s, in.len, want.s, NULL);
    free(in.s);
    free(want.s);
}

static void test_req_api(void)
{
    resp_req_t r;
    int done = 0;
    const char *cmd = "*3\r\n$6\r\nclient\r\n$5\r\nREPLY\r\n$3\r\noff\r\n*1\r\n$4\r\nPING\r\n";
    size_t n = strlen(cmd);
    ssize_t rc;

    resp_req_init(&r, 0);
    CHECK(r.max_bulk == 512ull * 1024 * 1024);
    CHECK(resp_req_at_boundary(&r));
    rc = resp_req_scan(&r, (const uint8_t *)cmd, n, &done);
    CHECK(done && rc == 36);            /* stops right after the first command */
    CHECK(r.cmd_bytes == 36);
    CHECK(resp_req_at_boundary(&r));
    CHECK(resp_req_arg_is(&r, 0, "CLIENT"));
    CHECK(resp_req_arg_is(&r, 1, "reply"));
    CHECK(resp_req_arg_is(&r, 2, "OFF"));
    CHECK(!resp_req_arg_is(&r, 2, "of"));
    CHECK(!resp_req_arg_is(&r, 3, "x"));
    CHECK(!r.inline_cmd && r.argc == 3 && r.ncap == 3);
    rc = resp_req_scan(&r, (const uint8_t *)cmd + 36, 3, &done);
    CHECK(rc == 3 && !done && !resp_req_at_boundary(&r));
    rc = resp_req_scan(&r, (const uint8_t *)cmd + 39, n - 39, &done);
    CHECK(rc == (ssize_t)(n - 39) && done && r.argc == 1 && resp_req_arg_is(&r, 0, "ping"));
    CHECK(r.arg[1][0] == '\0' && r.arg_len[1] == 0);   /* old arguments cleared */
    rc = resp_req_scan(&r, (const uint8_t *)"", 0, &done);
    CHECK(rc == 0 && !done);

    /* a truncated capture is never "equal" to a word */
    {
        sbuf_t in = { 0 };
        char hdr[32];
        resp_req_init(&r, 0);
        sb_puts(&in, "*2\r\n$4\r\nECHO\r\n");
        snprintf(hdr, sizeof hdr, "$%d\r\n", 200);
        sb_puts(&in, hdr);
        for (int i = 0; i < 200; i++)
            sb_putc(&in, 'z');
        sb_puts(&in, "\r\n");
        rc = resp_req_scan(&r, (const uint8_t *)in.s, in.len, &done);
        CHECK(done && r.arg_len[1] == 200 && r.arg_trunc[1] && strlen(r.arg[1]) == RESP_CAP_LEN);
        free(in.s);
    }

    /* mid-command, the arguments already complete can be asked about */
    resp_req_init(&r, 0);
    rc = resp_req_scan(&r, (const uint8_t *)"*3\r\n$4\r\nAUTH\r\n$4\r\nus", 20, &done);
    CHECK(rc == 20 && !done && r.ncap == 1 && r.argc == 3);
    CHECK(resp_req_arg_is(&r, 0, "auth") && !resp_req_arg_is(&r, 1, "us"));
    rc = resp_req_scan(&r, (const uint8_t *)"er\r\n$2\r\npw\r\n", 12, &done);
    CHECK(rc == 12 && done && r.ncap == 3 && resp_req_arg_is(&r, 1, "user"));
    resp_req_init(&r, 0);
    rc = resp_req_scan(&r, (const uint8_t *)"SET key", 7, &done);
    CHECK(rc == 7 && !done && r.ncap == 1 && resp_req_arg_is(&r, 0, "set"));
    rc = resp_req_scan(&r, (const uint8_t *)" v\r\n", 4, &done);
    CHECK(rc == 4 && done && r.ncap == 3 && r.argc == 3 && resp_req_arg_is(&r, 1, "key"));

    /* the quote error waits for the line end, as in Redis */
    resp_req_init(&r, 0);
    rc = resp_req_scan(&r, (const uint8_t *)"ECHO \"a\"b", 9, &done);
    CHECK(rc == 9 && !done);
    rc = resp_req_scan(&r, (const uint8_t *)"\r\n", 2, &done);
    CHECK(rc == RESP_ERR && strcmp(r.err, "Protocol error: unbalanced quotes in request") == 0);
}

/* ---- replies ------------------------------------------------------------------------ */

static void reply_summary(sbuf_t *b, const resp_reply_t *p)
{
    sb_putc(b, p->type);
    if (p->is_null)
        sb_puts(b, " null");
    if (strchr("*%~>", p->type))
        sb_printf(b, " n=%lld", (long long)p->nelem);
    if (p->type == ':' || p->type == '#')
        sb_printf(b, " i=%lld", (long long)p->integer);
    if (p->first_len) {
        sb_puts(b, " f=");
        sb_quoted(b, p->first, p->first_len);
    }
    if (p->has_third_int)
        sb_printf(b, " t=%lld", (long long)p->third_int);
    sb_putc(b, '\n');
}

typedef struct {
    sbuf_t      out;
    const char *err;
    size_t      nreply;
    int         boundary;
    int         bad_bytes;
    int         stalled;
    size_t      calls;
} reply_result_t;

static void reply_run(const uint8_t *data, size_t n, uint64_t max_bulk, int mode, size_t split,
                      reply_result_t *res)
{
    resp_reply_t p;
    size_t pos = 0;
    uint64_t since = 0;

    memset(res, 0, sizeof *res);
    resp_reply_init(&p, max_bulk);
    while (pos < n) {
        size_t clen = chunk_len(mode, split, pos, n), off = 0;
        uint8_t *chunk = exact_copy(data + pos, clen);
        while (off < clen) {
            int done = 0;
            ssize_t rc = resp_reply_scan(&p, chunk + off, clen - off, &done);
            res->calls++;
            if (rc == RESP_ERR) {
                res->err = p.err;
                free(chunk);
                if (resp_reply_scan(&p, (const uint8_t *)"+", 1, &done) != RESP_ERR)
                    res->stalled = 1;
                return;
            }
            if (rc <= 0 || (size_t)rc > clen - off) {
                res->stalled = 1;
                free(chunk);
                return;
            }
            off += (size_t)rc;
            since += (uint64_t)rc;
            if (done) {
                res->nreply++;
                reply_summary(&res->out, &p);
                if (p.reply_bytes != since)
                    res->bad_bytes = 1;
                since = 0;
            } else if (off != clen) {
                res->stalled = 1;
            }
        }
        free(chunk);
        pos += clen;
    }
    res->boundary = resp_reply_at_boundary(&p);
}

typedef struct {
    const char *name;
    const char *data;
    size_t      len;
    uint64_t    max_bulk;
    const char *want;
    const char *err;
} reply_case_t;

#define HELLO3 \
    "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n" \
    "$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n" \
    "$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"

static const reply_case_t reply_cases[] = {
    { "status", V("+OK\r\n"), 0, "+ f=\"OK\"\n", NULL },
    { "error", V("-ERR unknown command 'x'\r\n"), 0, "- f=\"ERR unknown command 'x'\"\n", NULL },
    { "integer", V(":1000\r\n"), 0, ": i=1000 f=\"1000\"\n", NULL },
    { "integer min", V(":-9223372036854775808\r\n"), 0,
      ": i=-9223372036854775808 f=\"-9223372036854775808\"\n", NULL },
    { "integer zero", V(":0\r\n"), 0, ": i=0 f=\"0\"\n", NULL },
    { "bulk", V("$5\r\nhello\r\n"), 0, "$ f=\"hello\"\n", NULL },
    { "bulk with crlf", V("$4\r\n\r\n\r\n\r\n"), 0, "$ f=\"\\x0d\\x0a\\x0d\\x0a\"\n", NULL },
    { "bulk empty", V("$0\r\n\r\n"), 0, "$\n", NULL },
    { "bulk null", V("$-1\r\n"), 0, "$ null\n", NULL },
    { "bulk max", V("$3\r\nabc\r\n"), 3, "$ f=\"abc\"\n", NULL },
    { "array null", V("*-1\r\n"), 0, "* null n=-1\n", NULL },
    { "array empty", V("*0\r\n"), 0, "* n=0\n", NULL },
    { "unsubscribe", V("*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"), 0,
      "* n=3 f=\"unsubscribe\" t=0\n", NULL },
    { "unsubscribe none", V("*3\r\n$11\r\nunsubscribe\r\n*-1\r\n:0\r\n"), 0,
      "* n=3 f=\"unsubscribe\" t=0\n", NULL },
    { "unsubscribe none resp3", V(">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"), 0,
      "> n=3 f=\"unsubscribe\" t=0\n", NULL },
    { "push subscribe", V(">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"), 0,
      "> n=3 f=\"subscribe\" t=1\n", NULL },
    { "push message", V(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"), 0,
      "> n=3 f=\"message\"\n", NULL },
    { "push pmessage", V(">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$1\r\nx\r\n"), 0,
      "> n=4 f=\"pmessage\"\n", NULL },
    { "push then reply", V(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n+PONG\r\n"), 0,
      "> n=3 f=\"message\"\n+ f=\"PONG\"\n", NULL },
    { "hello map", V(HELLO3), 0, "% n=7 f=\"server\"\n", NULL },
    { "null", V("_\r\n"), 0, "_ null\n", NULL },
    { "double", V(",3.14\r\n"), 0, ", f=\"3.14\"\n", NULL },
    { "double inf", V(",-inf\r\n"), 0, ", f=\"-inf\"\n", NULL },
    { "bool true", V("#t\r\n"), 0, "# i=1 f=\"t\"\n", NULL },
    { "bool false", V("#f\r\n"), 0, "# i=0 f=\"f\"\n", NULL },
    { "big number", V("(3492890328409238509324850943850943825024385\r\n"), 0,
      "( f=\"3492890328409238509324850943850943825024385\"\n", NULL },
    { "verbatim", V("=15\r\ntxt:Some string\r\n"), 0, "= f=\"txt:Some string\"\n", NULL },
    { "blob error", V("!21\r\nSYNTAX invalid syntax\r\n"), 0, "! f=\"SYNTAX invalid syntax\"\n", NULL },
    { "set", V("~3\r\n:1\r\n:2\r\n:3\r\n"), 0, "~ n=3 f=\"1\" t=3\n", NULL },
    { "map third is a key", V("%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n"), 0, "% n=2 f=\"a\"\n", NULL },
    { "map of maps", V("%1\r\n%1\r\n+a\r\n+b\r\n%0\r\n"), 0, "% n=1\n", NULL },
    { "attribute at top", V("|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n"
                            ",0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"), 0,
      "* n=2 f=\"2039123\"\n", NULL },
    { "attribute before child", V("*3\r\n|1\r\n+a\r\n+b\r\n$3\r\nfoo\r\n$3\r\nbar\r\n"
                                  "|1\r\n+k\r\n+v\r\n:7\r\n"), 0, "* n=3 f=\"foo\" t=7\n", NULL },
    { "attribute on scalar", V("|1\r\n+ttl\r\n:3600\r\n+OK\r\n"), 0, "+ f=\"OK\"\n", NULL },
    { "attribute empty", V("|0\r\n:5\r\n"), 0, ": i=5 f=\"5\"\n", NULL },
    { "attribute in attribute", V("|1\r\n|1\r\n+a\r\n+b\r\n+k\r\n+v\r\n:1\r\n"), 0,
      ": i=1 f=\"1\"\n", NULL },
    { "attribute nested deep", V("*2\r\n*1\r\n|1\r\n+a\r\n*1\r\n:9\r\n:8\r\n:3\r\n"), 0,
      "* n=2\n", NULL },
    { "nested first", V("*3\r\n*2\r\n:1\r\n:2\r\n$1\r\nx\r\n:5\r\n"), 0, "* n=3 t=5\n", NULL },
    { "nested int not third", V("*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n:9\r\n"), 0, "* n=2\n", NULL },
    { "nested third", V("*3\r\n+a\r\n*3\r\n:1\r\n:2\r\n:3\r\n:4\r\n"), 0,
      "* n=3 f=\"a\" t=4\n", NULL },
    { "nulls inside", V("*4\r\n$-1\r\n*-1\r\n_\r\n:2\r\n"), 0, "* n=4\n", NULL },
    { "null first is empty", V("*3\r\n_\r\n+x\r\n:1\r\n"), 0, "* n=3 t=1\n", NULL },
    { "empties inside", V("*3\r\n*0\r\n%0\r\n:6\r\n"), 0, "* n=3 t=6\n", NULL },
    { "exec results", V("*2\r\n-ERR x\r\n+OK\r\n"), 0, "* n=2 f=\"ERR x\"\n", NULL },
    { "bare cr in line", V("+a\rb\r\n"), 0, "+ f=\"a\\x0db\"\n", NULL },
    { "cr cr lf in line", V("-\r\r\n+\r\n"), 0, "- f=\"\\x0d\"\n+\n", NULL },
    { "integer then bulk", V(":-7\r\n$2\r\nab\r\n$-1\r\n"), 0, ": i=-7 f=\"-7\"\n$ f=\"ab\"\n$ null\n", NULL },
    { "several", V("+OK\r\n:1\r\n$-1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n_\r\n"), 0,
      "+ f=\"OK\"\n: i=1 f=\"1\"\n$ null\n* n=2 f=\"a\"\n_ null\n", NULL },
    { "partial", V("*2\r\n:1\r\n"), 0, "", NULL },

    /* malformed */
    { "streamed aggregate", V("*?\r\n"), 0, "", "Protocol error: streamed RESP3 values are not supported" },
    { "streamed map nested", V("*2\r\n:1\r\n%?\r\n"), 0, "",
      "Protocol error: streamed RESP3 values are not supported" },
    { "streamed string", V("$?\r\n;4\r\nabcd\r\n;0\r\n"), 0, "",
      "Protocol error: streamed RESP3 values are not supported" },
    { "question type", V("?x\r\n"), 0, "", "Protocol error: invalid reply type '?'" },
    { "unknown type", V("@x\r\n"), 0, "", "Protocol error: invalid reply type '@'" },
    { "chunk type", V(";4\r\nabcd\r\n"), 0, "", "Protocol error: invalid reply type ';'" },
    { "control type", V("\x01\r\n"), 0, "", "Protocol error: invalid reply type 0x01" },
    { "after good reply", V("+OK\r\n.\r\n"), 0, "+ f=\"OK\"\n", "Protocol error: invalid reply type '.'" },
    { "integer letters", V(":abc\r\n"), 0, "", "Protocol error: invalid integer" },
    { "integer empty", V(":\r\n"), 0, "", "Protocol error: invalid integer" },
    { "integer leading zero", V(":01\r\n"), 0, "", "Protocol error: invalid integer" },
    { "integer overflow", V(":9223372036854775808\r\n"), 0, "", "Protocol error: invalid integer" },
    { "integer lone cr", V(":1\r2\r\n"), 0, "", "Protocol error: invalid integer" },
    { "bulk -2", V("$-2\r\n"), 0, "", "Protocol error: invalid bulk length" },
    { "bulk above max", V("$4\r\nabcd\r\n"), 3, "", "Protocol error: invalid bulk length" },
    { "bulk above 512MB", V("$536870913\r\n"), 0, "", "Protocol error: invalid bulk length" },
    { "bulk no crlf", V("$5\r\nhelloXX"), 0, "", "Protocol error: bulk not terminated by CRLF" },
    { "bulk no lf", V("$1\r\na\rX"), 0, "", "Protocol error: bulk not terminated by CRLF" },
    { "array -2", V("*-2\r\n"), 0, "", "Protocol error: invalid multibulk length" },
    { "array letters", V("*x\r\n"), 0, "", "Protocol error: invalid multibulk length" },
    { "attribute -1", V("|-1\r\n"), 0, "", "Protocol error: invalid multibulk length" },
    { "array count overflow", V("*9223372036854775807\r\n*9223372036854775807\r\n"
                                "*9223372036854775807\r\n"), 0, "",
      "Protocol error: invalid multibulk length" },
    { "map count overflow", V("%9223372036854775807\r\n%2\r\n"), 0, "",
      "Protocol error: invalid multibulk length" },
    { "null with text", V("_x\r\n"), 0, "", "Protocol error: invalid null" },
    { "bool x", V("#x\r\n"), 0, "", "Protocol error: invalid boolean" },
    { "bool tt", V("#tt\r\n"), 0, "", "Protocol error: invalid boolean" },
    { "bool empty", V("#\r\n"), 0, "", "Protocol error: invalid boolean" },
};

static void check_reply_case(const reply_case_t *c)
{
    size_t n = c->len;
    reply_result_t ref, res;

    reply_run((const uint8_t *)c->data, n, c->max_bulk, FEED_WHOLE, 0, &ref);
    CHECK_MSG(strcmp(sb_str(&ref.out), c->want) == 0, "%s: got [%s] want [%s]", c->name,
              sb_str(&ref.out), c->want);
    CHECK_MSG((ref.err == NULL && c->err == NULL) ||
              (ref.err && c->err && strcmp(ref.err, c->err) == 0),
              "%s: error [%s] want [%s]", c->name, ref.err ? ref.err : "(none)",
              c->err ? c->err : "(none)");
    CHECK_MSG(!ref.stalled && !ref.bad_bytes, "%s: stalled %d bad_bytes %d", c->name,
              ref.stalled, ref.bad_bytes);

    for (size_t k = 0; k <= n + 1; k++) {
        int mode = k == n + 1 ? FEED_BYTES : FEED_SPLIT;
        reply_run((const uint8_t *)c->data, n, c->max_bulk, mode, k, &res);
        CHECK_MSG(strcmp(sb_str(&res.out), sb_str(&ref.out)) == 0 &&
                  ((res.err == NULL && ref.err == NULL) ||
                   (res.err && ref.err && strcmp(res.err, ref.err) == 0)) &&
                  res.boundary == ref.boundary && !res.stalled && !res.bad_bytes,
                  "%s: %s %zu: got [%s] err [%s]", c->name, mode == FEED_BYTES ? "bytes" : "split",
                  k, sb_str(&res.out), res.err ? res.err : "(none)");
        free(res.out.s);
    }
    free(ref.out.s);
}

static void reply_big(const char *name, const uint8_t *data, size_t n, const char *want,
                      const char *err)
{
    size_t splits[] = { 1, 3, n / 3, n / 2, n - 3, n - 1 };
    reply_result_t res;

    for (size_t k = 0; k < sizeof splits / sizeof splits[0] + 2; k++) {
        int mode = k == 0 ? FEED_WHOLE : k == 1 ? FEED_BYTES : FEED_SPLIT;
        reply_run(data, n, 0, mode, k >= 2 ? splits[k - 2] : 0, &res);
        CHECK_MSG((want == NULL || strcmp(sb_str(&res.out), want) == 0) &&
                  ((res.err == NULL && err == NULL) ||
                   (res.err && err && strcmp(res.err, err) == 0)) &&
                  !res.stalled && !res.bad_bytes && (err || res.boundary),
                  "%s mode %zu: got [%.200s] err [%s]", name, k, sb_str(&res.out),
                  res.err ? res.err : "(none)");
        if (k == 0 && !err)
            CHECK_MSG(res.calls == res.nreply, "%s: %zu calls for %zu replies", name,
                      res.calls, res.nreply);
        free(res.out.s);
    }
}

/* "*1\r\n" x 100000 then ":1\r\n": one reply, no stack. */
static void test_reply_deep(void)
{
    const size_t depth = 100000;
    size_t n = depth * 4 + 4;
    uint8_t *b = malloc(n);
    resp_reply_t p;
    int done = 0;

    for (size_t i = 0; i < depth; i++)
        memcpy(b + i * 4, "*1\r\n", 4);
    memcpy(b + depth * 4, ":1\r\n", 4);
    reply_big("deep array", b, n, "* n=1\n", NULL);

    resp_reply_init(&p, 0);
    CHECK(resp_reply_scan(&p, b, n, &done) == (ssize_t)n && done);
    CHECK(p.reply_bytes == n && p.type == '*' && p.nelem == 1 && !p.has_third_int);

    /* the same depth of maps and attributes */
    for (size_t i = 0; i < depth; i++)
        memcpy(b + i * 4, (i % 2) ? "%1\r\n" : "|0\r\n", 4);
    memcpy(b + depth * 4, ":1\r\n", 4);
    resp_reply_init(&p, 0);
    CHECK(resp_reply_scan(&p, b, n, &done) == (ssize_t)n && !done);  /* maps owe values */
    free(b);

    /* a wide array: 100000 elements */
    {
        sbuf_t in = { 0 };
        sb_puts(&in, "*100000\r\n");
        for (size_t i = 0; i < depth; i++)
            sb_puts(&in, i == 2 ? ":42\r\n" : "+x\r\n");
        reply_big("wide array", (const uint8_t *)in.s, in.len, "* n=100000 f=\"x\" t=42\n", NULL);
        free(in.s);
    }
}

static void test_reply_big_bulk(void)
{
    const size_t body = 10 * 1000 * 1000;
    const char *head = "$10000000\r\n";
    size_t hl = strlen(head), n = hl + body + 2;
    uint8_t *b = malloc(n);
    resp_reply_t p;
    int done = 0;
    ssize_t rc;

    memcpy(b, head, hl);
    memset(b + hl, 'q', body);
    memcpy(b + hl + body, "\r\n", 2);
    resp_reply_init(&p, 0);
    rc = resp_reply_scan(&p, b, n, &done);
    CHECK(rc == (ssize_t)n && done && p.type == '$' && p.first_len == RESP_CAP_LEN);
    CHECK(p.reply_bytes == n);

    resp_reply_init(&p, 0);
    CHECK(resp_reply_scan(&p, b, hl + 10, &done) == (ssize_t)(hl + 10) && !done);
    CHECK(!resp_reply_at_boundary(&p));
    CHECK(resp_reply_scan(&p, b + hl + 10, body - 10, &done) == (ssize_t)(body - 10) && !done);
    CHECK(resp_reply_scan(&p, b + hl + body, 2, &done) == 2 && done);
    CHECK(resp_reply_at_boundary(&p));

    resp_reply_init(&p, 1000);
    CHECK(resp_reply_scan(&p, b, n, &done) == RESP_ERR &&
          strcmp(p.err, "Protocol error: invalid bulk length") == 0);
    free(b);
}

static void test_reply_api(void)
{
    resp_reply_t p;
    int done = 0;
    const char *s = "+OK\r\n:5\r\n";
    ssize_t rc;

    resp_reply_init(&p, 0);
    CHECK(p.max_bulk == 512ull * 1024 * 1024);
    CHECK(resp_reply_at_boundary(&p));
    rc = resp_reply_scan(&p, (const uint8_t *)s, strlen(s), &done);
    CHECK(rc == 5 && done && p.type == '+' && p.reply_bytes == 5);
    CHECK(strcmp(p.first, "OK") == 0 && p.first_len == 2);
    rc = resp_reply_scan(&p, (const uint8_t *)s + 5, 2, &done);
    CHECK(rc == 2 && !done && !resp_reply_at_boundary(&p));
    rc = resp_reply_scan(&p, (const uint8_t *)s + 7, 2, &done);
    CHECK(rc == 2 && done && p.type == ':' && p.integer == 5 && p.first_len == 1);
    CHECK(resp_reply_scan(&p, (const uint8_t *)"", 0, &done) == 0 && !done);

    /* a long error is captured up to RESP_CAP_LEN */
    {
        sbuf_t in = { 0 };
        sb_puts(&in, "-ERR ");
        for (int i = 0; i < 300; i++)
            sb_putc(&in, 'e');
        sb_puts(&in, "\r\n");
        resp_reply_init(&p, 0);
        rc = resp_reply_scan(&p, (const uint8_t *)in.s, in.len, &done);
        CHECK(rc == (ssize_t)in.len && done && p.first_len == RESP_CAP_LEN &&
              strlen(p.first) == RESP_CAP_LEN && memcmp(p.first, "ERR eee", 7) == 0);
        free(in.s);
    }
    /* a count line longer than RESP_LINE_MAX */
    {
        sbuf_t in = { 0 };
        sb_putc(&in, ':');
        for (int i = 0; i < RESP_LINE_MAX + 1; i++)
            sb_putc(&in, '1');
        resp_reply_init(&p, 0);
        rc = resp_reply_scan(&p, (const uint8_t *)in.s, in.len, &done);
        CHECK(rc == RESP_ERR && strcmp(p.err, "Protocol error: too long count line") == 0);
        free(in.s);
    }
}

int main(void)
{
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++)
        check_req_case(&req_cases[i]);
    test_req_limits();
    test_req_big_bulk();
    test_req_pipeline();
    test_req_api();

    for (size_t i = 0; i < sizeof reply_cases / sizeof reply_cases[0]; i++)
        check_reply_case(&reply_cases[i]);
    test_reply_deep();
    test_reply_big_bulk();
    test_reply_api();
    return unit_done("resp");
}
