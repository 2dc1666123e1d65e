/*
 * http_req.h - an HTTP/1.x request-head parser: the request line and the header fields,
 * nothing else. It serves the metrics endpoint (proxy/control/metrics.c), which only needs the
 * method and the target of small GET requests, answers, and closes.
 *
 * Pure: (state, bytes, len) -> consumed | error. The caller owns the state, feeds bytes as
 * they arrive (whole, in pieces, one at a time: the result is the same) and keeps nothing
 * of them: what the caller needs (method, target, version, Host present) is copied into
 * the state, so no buffer of the request head is ever kept.
 *
 * Strict where RFC 9112 says a server MUST reject (whitespace between a field name and its
 * colon, obsolete line folding, a missing or repeated Host in HTTP/1.1, control bytes),
 * lenient where it allows (bare LF as line end, empty lines before the request line).
 * Every length is capped: the whole head (max_head bytes, 8 KiB by default), the method
 * and the target; a longer one is an error, never an allocation.
 *
 * http_req_split_target then takes the captured target apart into path and query, for
 * the caller's routing (/metrics, /healthz).
 */
#ifndef SY_HTTP_REQ_H
#define SY_HTTP_REQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_REQ_ERR         (-1)
#define HTTP_REQ_HEAD_MAX    (8 * 1024)   /* default cap on the whole request head */
#define HTTP_REQ_METHOD_MAX  16
#define HTTP_REQ_TARGET_MAX  1024
#define HTTP_REQ_NAME_CAP    32           /* field-name bytes captured (lower-cased) */

typedef struct http_req_s {
    /* configuration */
    size_t   max_head;          /* cap on the head, request line and final empty line included */

    /* result, valid once done is set */
    int      done;              /* 1: the head is complete (the empty line was consumed) */
    char     method[HTTP_REQ_METHOD_MAX + 1];   /* NUL-terminated, as sent (case matters) */
    char     target[HTTP_REQ_TARGET_MAX + 1];   /* NUL-terminated request-target */
    int      version_minor;     /* HTTP/1.<minor> */
    uint32_t nheaders;          /* header fields seen */
    uint32_t nhost;             /* Host fields seen */
    size_t   head_bytes;        /* bytes of the head consumed so far */

    /* private state */
    int      state;
    int      after_lf;          /* state to enter after the LF that follows a CR */
    uint32_t mlen, tlen, vlen, nlen;
    char     name[HTTP_REQ_NAME_CAP + 1];

    const char *err;            /* static message after HTTP_REQ_ERR (sticky) */
} http_req_t;

/* Reset for a new request. max_head 0 means HTTP_REQ_HEAD_MAX. */
void http_req_init(http_req_t *r, size_t max_head);

/*
 * Consume request bytes from buf[0..len). Returns the bytes consumed: all of them while
 * the head is incomplete, or up to and including the final empty line, when r->done is
 * set (what follows is a body or the next request; this parser does not look at it).
 * Returns HTTP_REQ_ERR with r->err set on a malformed or oversized head, and again on
 * every later call. Messages: "bad method", "method too long", "bad byte in request
 * target", "request target too long", "bad HTTP version", "bad request line end",
 * "bad header name", "whitespace before colon", "obsolete line folding", "bad byte in
 * header value", "bare CR", "missing Host header", "more than one Host header",
 * "request head too large".
 */
ssize_t http_req_parse(http_req_t *r, const uint8_t *buf, size_t len);

/*
 * The path and query of a request target (RFC 9112 section 3.2), as pointers into the
 * target string: nothing is copied, decoded or NUL-terminated. The path is compared as
 * sent: no percent-decoding, no dot segments, "/metrics/" is not "/metrics".
 */
typedef struct http_req_uri_s {
    const char *path;           /* starts with '/' */
    size_t      path_len;
    const char *query;          /* after the '?', NULL when there is no '?' */
    size_t      query_len;      /* up to a '#' or the end */
} http_req_uri_t;

/*
 * Split target (NUL-terminated, as in http_req_t) into u. origin-form "/p?q" and
 * absolute-form "http://host/p?q" (scheme http or https, any case; an absolute-form with
 * no path has path "/") return 0. Other forms return -1 with u cleared: asterisk-form
 * "*", authority-form "host:port", an empty target, anything else.
 */
int http_req_split_target(const char *target, http_req_uri_t *u);

/* 1 when u's path is exactly path (case matters), else 0. */
int http_req_path_is(const http_req_uri_t *u, const char *path);

#endif /* SY_HTTP_REQ_H */
