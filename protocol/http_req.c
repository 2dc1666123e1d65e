/*
 * http_req.c - HTTP/1.x request-head parser (see http_req.h).
 *
 * One byte at a time through a small state machine, so a head split anywhere parses the
 * same as a whole one and nothing is buffered:
 *
 *   START ─(empty lines skipped)─▶ METHOD ─SP─▶ TARGET ─SP─▶ VERSION ─▶ LINE_END
 *        ─▶ HDR_START ─▶ HDR_NAME ─':'─▶ HDR_VALUE ─EOL─▶ HDR_START ... ─EOL─▶ done
 *
 * A CR goes through LF (which accepts only '\n') and then to r->after_lf, so every line
 * end is CRLF or a bare LF, never a bare CR (request smuggling hides there).
 *
 * http_req_split_target, at the end, works on the finished target string only:
 *
 *   "/" path ["?" query] ["#" ...]                           origin-form
 *   "http" ["s"] "://" authority [path] ["?" query] ...      absolute-form; the authority
 *                                                            ends at the first / ? or #
 */
#include <string.h>
#include <strings.h>
#include "protocol/http_req.h"

enum {
    HS_START = 0,   /* before the request line: empty lines are skipped */
    HS_METHOD,      /* token up to SP */
    HS_TARGET,      /* visible ASCII up to SP */
    HS_VERSION,     /* "HTTP/1." DIGIT */
    HS_LINE_END,    /* after the version: CR LF or LF */
    HS_LF,          /* after a CR: only LF, then after_lf */
    HS_HDR_START,   /* start of a header line, or the empty line ending the head */
    HS_HDR_NAME,    /* token up to ':' */
    HS_HDR_VALUE,   /* field value up to the line end */
    HS_DONE,        /* the head is complete */
    HS_ERROR        /* sticky: r->err says why */
};

static const char version_prefix[] = "HTTP/1.";

/* RFC 9110 tchar. */
static int is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

void http_req_init(http_req_t *r, size_t max_head)
{
    memset(r, 0, sizeof(*r));
    r->max_head = max_head ? max_head : HTTP_REQ_HEAD_MAX;
    r->state = HS_START;
}

static ssize_t fail(http_req_t *r, const char *msg)
{
    r->state = HS_ERROR;
    r->err = msg;
    return HTTP_REQ_ERR;
}

static void header_done(http_req_t *r)
{
    r->nheaders++;
    if (r->nlen == 4 && memcmp(r->name, "host", 4) == 0)
        r->nhost++;
    r->nlen = 0;
}

/* The empty line was read: check what needs the whole head. 0 or HTTP_REQ_ERR. */
static int head_done(http_req_t *r)
{
    if (r->nhost > 1)
        return (int)fail(r, "more than one Host header");
    if (r->version_minor >= 1 && r->nhost == 0)
        return (int)fail(r, "missing Host header");
    r->state = HS_DONE;
    r->done = 1;
    return 0;
}

ssize_t http_req_parse(http_req_t *r, const uint8_t *buf, size_t len)
{
    size_t i;
    if (r->state == HS_ERROR)
        return HTTP_REQ_ERR;
    for (i = 0; i < len && r->state != HS_DONE; i++) {
        uint8_t c = buf[i];
        if (r->head_bytes >= r->max_head)
            return fail(r, "request head too large");
        r->head_bytes++;
        switch (r->state) {
        case HS_START:
            if (c == '\r') {
                r->after_lf = HS_START;
                r->state = HS_LF;
                break;
            }
            if (c == '\n')
                break;
            r->state = HS_METHOD;
            /* fall through */
        case HS_METHOD:
            if (c == ' ') {
                if (r->mlen == 0)
                    return fail(r, "bad method");
                r->method[r->mlen] = '\0';
                r->state = HS_TARGET;
            } else if (!is_tchar(c)) {
                return fail(r, "bad method");
            } else if (r->mlen == HTTP_REQ_METHOD_MAX) {
                return fail(r, "method too long");
            } else {
                r->method[r->mlen++] = (char)c;
            }
            break;
        case HS_TARGET:
            if (c == ' ' && r->tlen > 0) {
                r->target[r->tlen] = '\0';
                r->state = HS_VERSION;
            } else if (c <= 0x20 || c >= 0x7f) {
                return fail(r, "bad byte in request target");
            } else if (r->tlen == HTTP_REQ_TARGET_MAX) {
                return fail(r, "request target too long");
            } else {
                r->target[r->tlen++] = (char)c;
            }
            break;
        case HS_VERSION:
            if (r->vlen < sizeof(version_prefix) - 1) {
                if (c != (uint8_t)version_prefix[r->vlen])
                    return fail(r, "bad HTTP version");
                r->vlen++;
            } else {
                if (c < '0' || c > '9')
                    return fail(r, "bad HTTP version");
                r->version_minor = c - '0';
                r->state = HS_LINE_END;
            }
            break;
        case HS_LINE_END:
            if (c == '\r') {
                r->after_lf = HS_HDR_START;
                r->state = HS_LF;
            } else if (c == '\n') {
                r->state = HS_HDR_START;
            } else {
                return fail(r, c == ' ' || (c >= '0' && c <= '9') ? "bad HTTP version" : "bad request line end");
            }
            break;
        case HS_LF:
            if (c != '\n')
                return fail(r, "bare CR");
            if (r->after_lf == HS_DONE) {
                if (head_done(r) != 0)
                    return HTTP_REQ_ERR;
            } else {
                r->state = r->after_lf;
            }
            break;
        case HS_HDR_START:
            if (c == '\r') {
                r->after_lf = HS_DONE;
                r->state = HS_LF;
            } else if (c == '\n') {
                if (head_done(r) != 0)
                    return HTTP_REQ_ERR;
            } else if (c == ' ' || c == '\t') {
                return fail(r, "obsolete line folding");
            } else if (!is_tchar(c)) {
                return fail(r, "bad header name");
            } else {
                r->nlen = 0;
                r->state = HS_HDR_NAME;
                goto name_byte;
            }
            break;
        case HS_HDR_NAME:
            if (c == ':') {
                r->name[r->nlen < HTTP_REQ_NAME_CAP ? r->nlen : HTTP_REQ_NAME_CAP] = '\0';
                r->state = HS_HDR_VALUE;
                break;
            }
            if (c == ' ' || c == '\t')
                return fail(r, "whitespace before colon");
            if (!is_tchar(c))
                return fail(r, "bad header name");
        name_byte:
            /* Only short names matter to us (Host); longer ones count but are not kept. */
            if (r->nlen < HTTP_REQ_NAME_CAP)
                r->name[r->nlen] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
            if (r->nlen < UINT32_MAX)
                r->nlen++;
            break;
        case HS_HDR_VALUE:
            if (c == '\r') {
                header_done(r);
                r->after_lf = HS_HDR_START;
                r->state = HS_LF;
            } else if (c == '\n') {
                header_done(r);
                r->state = HS_HDR_START;
            } else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
                return fail(r, "bad byte in header value");
            }
            break;
        default:
            return fail(r, "internal parser state");
        }
    }
    return (ssize_t)i;
}

/* ---- request target -------------------------------------------------------------------- */

static size_t scheme_len(const char *t)
{
    if (strncasecmp(t, "http://", 7) == 0)
        return 7;
    if (strncasecmp(t, "https://", 8) == 0)
        return 8;
    return 0;
}

int http_req_split_target(const char *target, http_req_uri_t *u)
{
    static const char root[] = "/";
    const char *p = target;
    size_t s = scheme_len(target);

    memset(u, 0, sizeof(*u));
    if (s)
        p = target + s + strcspn(target + s, "/?#");    /* past the authority */
    else if (*target != '/')
        return -1;
    if (*p == '/') {
        u->path = p;
        u->path_len = strcspn(p, "?#");
        p += u->path_len;
    } else {                                            /* "http://h" or "http://h?q" */
        u->path = root;
        u->path_len = 1;
    }
    if (*p == '?') {
        u->query = p + 1;
        u->query_len = strcspn(u->query, "#");
    }
    return 0;
}

int http_req_path_is(const http_req_uri_t *u, const char *path)
{
    size_t n = strlen(path);
    return u->path && u->path_len == n && memcmp(u->path, path, n) == 0;
}
