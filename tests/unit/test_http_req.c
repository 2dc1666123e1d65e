/*
 * test_http_req.c - the HTTP request-head parser on byte vectors.
 *
 * Every vector is fed three ways - whole, one byte at a time, and split in two at every
 * offset - and each way must give the same result: the same method, target, version,
 * header count and consumed length (bytes after the head are left alone), or the same
 * exact error. Each chunk is copied to the end of an exact-size malloc'd buffer, so ASan
 * catches any read past it.
 *
 * Then http_req_split_target on a table of targets: path and query of the origin and
 * absolute forms, and the forms it refuses.
 */
#include "protocol/http_req.h"
#include "tests/unit/unit.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const char *name;
    const char *in;
    size_t      len;            /* 0: strlen(in) */
    const char *err;            /* expected error, or NULL */
    const char *method, *target;
    int         minor;
    uint32_t    nheaders;
    size_t      head;           /* bytes of the head; 0: the whole input */
} vec_t;

enum { FEED_WHOLE, FEED_BYTES, FEED_SPLIT };

typedef struct {
    int         done;
    const char *err;
    size_t      consumed;
    char        method[HTTP_REQ_METHOD_MAX + 1];
    char        target[HTTP_REQ_TARGET_MAX + 1];
    int         minor;
    uint32_t    nheaders;
} result_t;

static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (!c)
        abort();
    if (n)
        memcpy(c, p, n);
    return c;
}

static void feed(const uint8_t *in, size_t n, int mode, size_t split, size_t max_head, result_t *res)
{
    http_req_t r;
    http_req_init(&r, max_head);
    memset(res, 0, sizeof(*res));
    size_t pos = 0;
    while (pos < n && !r.done) {
        size_t k = mode == FEED_BYTES ? 1 : mode == FEED_SPLIT && pos < split ? split - pos : n - pos;
        uint8_t *chunk = exact_copy(in + pos, k);
        ssize_t c = http_req_parse(&r, chunk, k);
        free(chunk);
        if (c == HTTP_REQ_ERR) {
            res->err = r.err;
            /* sticky */
            uint8_t one = 'x';
            CHECK(http_req_parse(&r, &one, 1) == HTTP_REQ_ERR && r.err == res->err);
            return;
        }
        CHECK(c >= 0 && (size_t)c <= k);
        CHECK((size_t)c == k || r.done);
        pos += (size_t)c;
    }
    res->done = r.done;
    res->consumed = pos;
    if (r.done) {
        snprintf(res->method, sizeof(res->method), "%s", r.method);
        snprintf(res->target, sizeof(res->target), "%s", r.target);
        res->minor = r.version_minor;
        res->nheaders = r.nheaders;
        CHECK(r.head_bytes == pos);
        CHECK(http_req_parse(&r, (const uint8_t *)"GET", 3) == 0);   /* done: takes nothing more */
    }
}

static void check_result(const vec_t *v, const result_t *res, const char *how)
{
    size_t n = v->len ? v->len : strlen(v->in);
    if (v->err) {
        CHECK_MSG(res->err != NULL && strcmp(res->err, v->err) == 0, "%s (%s): error \"%s\", want \"%s\"",
                  v->name, how, res->err ? res->err : "(none)", v->err);
        return;
    }
    if (v->method == NULL) {   /* incomplete: everything consumed, no error, not done */
        CHECK_MSG(!res->err && !res->done && res->consumed == n, "%s (%s): err=%s done=%d consumed=%zu",
                  v->name, how, res->err ? res->err : "-", res->done, res->consumed);
        return;
    }
    CHECK_MSG(res->err == NULL && res->done, "%s (%s): not done, err %s", v->name, how,
              res->err ? res->err : "(none)");
    if (res->err || !res->done)
        return;
    CHECK_MSG(strcmp(res->method, v->method) == 0, "%s (%s): method %s", v->name, how, res->method);
    CHECK_MSG(strcmp(res->target, v->target) == 0, "%s (%s): target %s", v->name, how, res->target);
    CHECK_MSG(res->minor == v->minor, "%s (%s): minor %d", v->name, how, res->minor);
    CHECK_MSG(res->nheaders == v->nheaders, "%s (%s): nheaders %u", v->name, how, res->nheaders);
    CHECK_MSG(res->consumed == (v->head ? v->head : n), "%s (%s): consumed %zu", v->name, how, res->consumed);
}

static void run_vec(const vec_t *v, size_t max_head)
{
    size_t n = v->len ? v->len : strlen(v->in);
    const uint8_t *in = (const uint8_t *)v->in;
    result_t res;
    feed(in, n, FEED_WHOLE, 0, max_head, &res);
    check_result(v, &res, "whole");
    feed(in, n, FEED_BYTES, 0, max_head, &res);
    check_result(v, &res, "bytes");
    for (size_t s = 1; s < n; s++) {
        char how[32];
        snprintf(how, sizeof(how), "split at %zu", s);
        feed(in, n, FEED_SPLIT, s, max_head, &res);
        check_result(v, &res, how);
    }
}

#define H "Host: 127.0.0.1:9187\r\n"

static const vec_t vecs[] = {
    { "simple", "GET /metrics HTTP/1.1\r\n" H "\r\n", 0, NULL, "GET", "/metrics", 1, 1, 0 },
    { "curl", "GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
      0, NULL, "GET", "/healthz", 1, 3, 0 },
    { "http/1.0 no host", "GET / HTTP/1.0\r\n\r\n", 0, NULL, "GET", "/", 0, 0, 0 },
    { "bare LF", "GET /metrics HTTP/1.1\nhost: x\n\n", 0, NULL, "GET", "/metrics", 1, 1, 0 },
    { "leading empty lines", "\r\n\nGET /x HTTP/1.1\r\n" H "\r\n", 0, NULL, "GET", "/x", 1, 1, 0 },
    { "body left alone", "POST /metrics HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\nhello", 0, NULL,
      "POST", "/metrics", 1, 2, sizeof("POST /metrics HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\n") - 1 },
    { "pipelined", "GET /a HTTP/1.1\r\n" H "\r\nGET /b HTTP/1.1\r\n" H "\r\n", 0, NULL, "GET", "/a", 1, 1,
      sizeof("GET /a HTTP/1.1\r\n" H "\r\n") - 1 },
    { "query and absolute form", "GET http://h/metrics?x=1 HTTP/1.1\r\nHOST: h\r\n\r\n", 0, NULL, "GET",
      "http://h/metrics?x=1", 1, 1, 0 },
    { "empty value, odd spacing", "GET / HTTP/1.1\r\n" H "X-Empty:\r\nX-Tab:\t a \t\r\n\r\n", 0, NULL,
      "GET", "/", 1, 3, 0 },
    { "obs-text in value", "GET / HTTP/1.1\r\n" H "X: caf\xc3\xa9\r\n\r\n", 0, NULL, "GET", "/", 1, 2, 0 },
    { "HTTP/1.9 is 1.x", "GET / HTTP/1.9\r\n" H "\r\n", 0, NULL, "GET", "/", 9, 1, 0 },
    { "long header name", "GET / HTTP/1.1\r\n" H "X-A-Very-Long-Header-Name-Longer-Than-32: v\r\n\r\n",
      0, NULL, "GET", "/", 1, 2, 0 },
    { "host-ish names are not Host", "GET / HTTP/1.1\r\nHostname: a\r\nX-Host: b\r\n" H "\r\n", 0, NULL,
      "GET", "/", 1, 3, 0 },

    /* incomplete */
    { "incomplete request line", "GET /metrics HTT", 0, NULL, NULL, NULL, 0, 0, 0 },
    { "incomplete headers", "GET /metrics HTTP/1.1\r\n" H, 0, NULL, NULL, NULL, 0, 0, 0 },
    { "incomplete after CR", "GET /metrics HTTP/1.1\r\n" H "\r", 0, NULL, NULL, NULL, 0, 0, 0 },
    { "empty", "", 0, NULL, NULL, NULL, 0, 0, 0 },

    /* malformed */
    { "garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11, "bad method", NULL, NULL, 0, 0, 0 },
    { "leading space", " GET / HTTP/1.1\r\n\r\n", 0, "bad method", NULL, NULL, 0, 0, 0 },
    { "method too long", "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n", 0, "method too long", NULL, NULL, 0, 0, 0 },
    { "two spaces", "GET  / HTTP/1.1\r\n\r\n", 0, "bad byte in request target", NULL, NULL, 0, 0, 0 },
    { "NUL in target", "GET /a\0b HTTP/1.1\r\n\r\n", sizeof("GET /a\0b HTTP/1.1\r\n\r\n") - 1, "bad byte in request target", NULL, NULL, 0, 0, 0 },
    { "HTTP/0.9", "GET /\r\n\r\n", 0, "bad byte in request target", NULL, NULL, 0, 0, 0 },
    { "HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 0, "bad HTTP version", NULL, NULL, 0, 0, 0 },
    { "lower-case version", "GET / http/1.1\r\n\r\n", 0, "bad HTTP version", NULL, NULL, 0, 0, 0 },
    { "HTTP/1.10", "GET / HTTP/1.10\r\n\r\n", 0, "bad HTTP version", NULL, NULL, 0, 0, 0 },
    { "trailing junk", "GET / HTTP/1.1x\r\n\r\n", 0, "bad request line end", NULL, NULL, 0, 0, 0 },
    { "bare CR in request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 0, "bare CR", NULL, NULL, 0, 0, 0 },
    { "bare CR in value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 0, "bare CR", NULL, NULL, 0, 0, 0 },
    { "space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, "whitespace before colon",
      NULL, NULL, 0, 0, 0 },
    { "obs-fold", "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 0, "obsolete line folding", NULL, NULL, 0, 0, 0 },
    { "empty header name", "GET / HTTP/1.1\r\n: a\r\n\r\n", 0, "bad header name", NULL, NULL, 0, 0, 0 },
    { "bad header name", "GET / HTTP/1.1\r\nA(b): c\r\n\r\n", 0, "bad header name", NULL, NULL, 0, 0, 0 },
    { "no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", 0, "bad header name", NULL, NULL, 0, 0, 0 },
    { "control in value", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 0, "bad byte in header value",
      NULL, NULL, 0, 0, 0 },
    { "missing Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 0, "missing Host header", NULL, NULL, 0, 0, 0 },
    { "two Hosts", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 0, "more than one Host header",
      NULL, NULL, 0, 0, 0 },
};

/* A request head of exactly n bytes: padding in one header. */
static char *head_of(size_t n)
{
    static const char pre[] = "GET /metrics HTTP/1.1\r\nHost: h\r\nX-Pad: ";
    static const char post[] = "\r\n\r\n";
    size_t fixed = sizeof(pre) - 1 + sizeof(post) - 1;
    char *s = malloc(n + 1);
    if (!s || n < fixed)
        abort();
    memcpy(s, pre, sizeof(pre) - 1);
    memset(s + sizeof(pre) - 1, 'a', n - fixed);
    memcpy(s + n - (sizeof(post) - 1), post, sizeof(post));
    return s;
}

static void test_limits(void)
{
    /* The cap counts the whole head: exactly max_head bytes parse, one more does not. */
    char *ok = head_of(HTTP_REQ_HEAD_MAX);
    vec_t v = { "head at the cap", ok, 0, NULL, "GET", "/metrics", 1, 2, 0 };
    run_vec(&v, 0);
    free(ok);
    char *big = head_of(HTTP_REQ_HEAD_MAX + 1);
    vec_t w = { "head over the cap", big, 0, "request head too large", NULL, NULL, 0, 0, 0 };
    run_vec(&w, 0);
    free(big);

    /* A small cap, and endless empty lines or headers are stopped by it too. */
    vec_t x = { "small cap", "GET / HTTP/1.1\r\n" H "\r\n", 0, "request head too large", NULL, NULL, 0, 0, 0 };
    run_vec(&x, 20);
    char lines[300];
    memset(lines, '\n', sizeof(lines) - 1);
    lines[sizeof(lines) - 1] = '\0';
    vec_t y = { "only empty lines", lines, 0, "request head too large", NULL, NULL, 0, 0, 0 };
    run_vec(&y, 200);

    /* Target at its cap and one over. */
    char t[HTTP_REQ_TARGET_MAX + 64];
    size_t n = 0;
    n += (size_t)snprintf(t, sizeof(t), "GET /");
    memset(t + n, 'b', HTTP_REQ_TARGET_MAX - 1);
    n += HTTP_REQ_TARGET_MAX - 1;
    snprintf(t + n, sizeof(t) - n, " HTTP/1.0\r\n\r\n");
    http_req_t r;
    http_req_init(&r, 0);
    CHECK(http_req_parse(&r, (const uint8_t *)t, strlen(t)) == (ssize_t)strlen(t) && r.done);
    CHECK(strlen(r.target) == HTTP_REQ_TARGET_MAX);
    snprintf(t + n, sizeof(t) - n, "b HTTP/1.0\r\n\r\n");
    http_req_init(&r, 0);
    CHECK(http_req_parse(&r, (const uint8_t *)t, strlen(t)) == HTTP_REQ_ERR);
    CHECK_STREQ(r.err, "request target too long");

    /* Method at its cap. */
    http_req_init(&r, 0);
    const char *m = "ABCDEFGHIJKLMNOP / HTTP/1.0\r\n\r\n";
    CHECK(http_req_parse(&r, (const uint8_t *)m, strlen(m)) == (ssize_t)strlen(m) && r.done);
    CHECK_STREQ(r.method, "ABCDEFGHIJKLMNOP");
}

/* Path and query of a target: each vector also goes through the parser first, so the
 * target is exactly what the metrics endpoint would see. */
typedef struct {
    const char *target;
    int         rc;
    const char *path;           /* expected path, or NULL when rc is -1 */
    const char *query;          /* expected query, or NULL for none */
} uri_vec_t;

static const uri_vec_t uri_vecs[] = {
    { "/metrics", 0, "/metrics", NULL },
    { "/healthz?verbose=1", 0, "/healthz", "verbose=1" },
    { "/metrics?", 0, "/metrics", "" },
    { "/metrics#frag", 0, "/metrics", NULL },
    { "/metrics?a=1#frag", 0, "/metrics", "a=1" },
    { "/metrics?a=/b?c", 0, "/metrics", "a=/b?c" },
    { "/", 0, "/", NULL },
    { "//metrics", 0, "//metrics", NULL },              /* as sent: not normalised */
    { "/metrics/", 0, "/metrics/", NULL },
    { "/%6detrics", 0, "/%6detrics", NULL },            /* no percent-decoding */
    { "http://h/metrics?x=1", 0, "/metrics", "x=1" },
    { "HTTPS://h:9187/healthz", 0, "/healthz", NULL },
    { "http://h", 0, "/", NULL },
    { "http://h?x=/metrics", 0, "/", "x=/metrics" },    /* the authority ends at '?' */
    { "http://h#/metrics", 0, "/", NULL },
    { "http://", 0, "/", NULL },
    { "*", -1, NULL, NULL },
    { "127.0.0.1:9187", -1, NULL, NULL },                /* authority-form (CONNECT) */
    { "metrics", -1, NULL, NULL },
    { "ftp://h/metrics", -1, NULL, NULL },
    { "http:/h/metrics", -1, NULL, NULL },
};

static int span_is(const char *p, size_t n, const char *want)
{
    return p && want && n == strlen(want) && memcmp(p, want, n) == 0;
}

static void test_split_target(void)
{
    for (size_t i = 0; i < sizeof(uri_vecs) / sizeof(uri_vecs[0]); i++) {
        const uri_vec_t *v = &uri_vecs[i];
        char head[256];
        snprintf(head, sizeof(head), "GET %s HTTP/1.0\r\n\r\n", v->target);
        http_req_t r;
        http_req_init(&r, 0);
        CHECK_MSG(http_req_parse(&r, (const uint8_t *)head, strlen(head)) == (ssize_t)strlen(head)
                  && r.done && strcmp(r.target, v->target) == 0, "%s: not parsed", v->target);

        http_req_uri_t u;
        memset(&u, 0x55, sizeof(u));
        int rc = http_req_split_target(r.target, &u);
        CHECK_MSG(rc == v->rc, "%s: rc %d", v->target, rc);
        if (v->rc != 0) {
            CHECK_MSG(u.path == NULL && u.query == NULL && !http_req_path_is(&u, "/"),
                      "%s: not cleared", v->target);
            continue;
        }
        CHECK_MSG(span_is(u.path, u.path_len, v->path), "%s: path \"%.*s\"", v->target,
                  (int)u.path_len, u.path);
        if (v->query)
            CHECK_MSG(span_is(u.query, u.query_len, v->query), "%s: query \"%.*s\"", v->target,
                      u.query ? (int)u.query_len : 6, u.query ? u.query : "(none)");
        else
            CHECK_MSG(u.query == NULL, "%s: unexpected query", v->target);
        CHECK_MSG(http_req_path_is(&u, v->path), "%s: path_is", v->target);
    }
    http_req_uri_t u;
    CHECK(http_req_split_target("/metricsx", &u) == 0 && !http_req_path_is(&u, "/metrics"));
    CHECK(http_req_split_target("/metric", &u) == 0 && !http_req_path_is(&u, "/metrics"));
    CHECK(http_req_split_target("/METRICS", &u) == 0 && !http_req_path_is(&u, "/metrics"));
    CHECK(http_req_split_target("", &u) == -1);
}

int main(void)
{
    for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++)
        run_vec(&vecs[i], 0);
    test_limits();
    test_split_target();
    return unit_done("test_http_req");
}
