/*
 * endpoint.c - parse and print Redis endpoint strings (forms: see endpoint.h).
 *
 *     "redis://user:pa%40ss@[::1]:6380/2"
 *      scheme   userinfo     host  port db
 *
 * The string is cut from the outside in: the scheme up to "://", the userinfo up to the
 * LAST '@' (so an unencoded '@', '/' or ':' in a password still parses; the db path and
 * the host cannot contain '@'), then host[:port] up to the first '/', then the db. A
 * string without "://" is the plain "host[:port]" form ("redis:6379" is host "redis").
 * Every piece is checked and copied into the caller's fixed-size fields; the first
 * problem found is returned as a static message that never quotes the input, so a
 * password cannot leak into a log through an error.
 */
#include "protocol/endpoint.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int ep_fail(const char **err, const char *msg)
{
    if (err)
        *err = msg;
    return -1;
}

static int ep_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int ep_is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int ep_is_alnum(int c)
{
    return ep_is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Case-insensitive equality of s[0..n) and a lowercase word. */
static int ep_word_is(const char *s, size_t n, const char *word)
{
    if (strlen(word) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != word[i])
            return 0;
    }
    return 1;
}

/* Percent-decode s[0..n) into out[cap]. 0, -1 bad encoding (or %00), -2 too long. */
static int ep_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;              /* '%' needs two more bytes */
            if (ep_hex((unsigned char)s[i + 1]) < 0 || ep_hex((unsigned char)s[i + 2]) < 0)
                return -1;
            c = ep_hex((unsigned char)s[i + 1]) * 16 + ep_hex((unsigned char)s[i + 2]);
            if (c == 0)
                return -1;              /* would cut the C string short */
            i += 2;
        }
        if (o + 1 >= cap)
            return -2;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* "1".."65535", digits only. */
static int ep_port(const char *s, size_t n, uint16_t *port)
{
    unsigned long v = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!ep_is_digit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
        if (v > 65535)
            return -1;
    }
    if (v == 0)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* host[:port] in s[0..n) into hostbuf[EP_HOST_MAX] and *port (left as it is when absent). */
static int ep_hostport(const char *s, size_t n, char *hostbuf, uint16_t *port, const char **err)
{
    const char *host, *rest;
    size_t hlen, rlen;

    if (n == 0)
        return ep_fail(err, "missing host");

    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        int colon = 0;
        if (!close)
            return ep_fail(err, "unterminated IPv6 address");
        host = s + 1;
        hlen = (size_t)(close - host);
        if (hlen == 0)
            return ep_fail(err, "missing host");
        for (size_t i = 0; i < hlen; i++) {
            int c = (unsigned char)host[i];
            if (c == ':')
                colon = 1;
            else if (ep_hex(c) < 0 && c != '.')
                return ep_fail(err, "invalid IPv6 address");
        }
        if (!colon)
            return ep_fail(err, "invalid IPv6 address");
        rest = close + 1;
        rlen = n - (size_t)(rest - s);
        if (rlen > 0 && rest[0] != ':')
            return ep_fail(err, "unexpected text after IPv6 address");
    } else {
        const char *colon = memchr(s, ':', n);
        host = s;
        hlen = colon ? (size_t)(colon - s) : n;
        rest = colon ? colon : s + n;
        rlen = n - hlen;
        if (colon && memchr(colon + 1, ':', n - hlen - 1))
            return ep_fail(err, "IPv6 address must be in brackets");
        if (hlen == 0)
            return ep_fail(err, "missing host");
        for (size_t i = 0; i < hlen; i++) {
            int c = (unsigned char)host[i];
            if (c == '?' || c == '#')
                return ep_fail(err, "query parameters are not supported");
            if (!ep_is_alnum(c) && c != '-' && c != '.' && c != '_')
                return ep_fail(err, "invalid character in host");
        }
    }
    if (hlen >= EP_HOST_MAX)
        return ep_fail(err, "host too long");
    memcpy(hostbuf, host, hlen);
    hostbuf[hlen] = '\0';

    if (rlen > 0) {                     /* rest = ":port" */
        if (memchr(rest, '?', rlen) || memchr(rest, '#', rlen))
            return ep_fail(err, "query parameters are not supported");
        if (ep_port(rest + 1, rlen - 1, port) != 0)
            return ep_fail(err, "port must be 1..65535");
    }
    return 0;
}

/* The db path after '/', s[0..n): empty (no db) or 0..2147483647. */
static int ep_db(const char *s, size_t n, sy_endpoint_t *ep, const char **err)
{
    long long v = 0;

    if (n == 0)
        return 0;
    if (memchr(s, '?', n) || memchr(s, '#', n))
        return ep_fail(err, "query parameters are not supported");
    for (size_t i = 0; i < n; i++) {
        if (!ep_is_digit((unsigned char)s[i]))
            return ep_fail(err, "db must be a number 0..2147483647");
        v = v * 10 + (s[i] - '0');
        if (v > 2147483647LL)
            return ep_fail(err, "db must be a number 0..2147483647");
    }
    ep->db = (int)v;
    ep->has_db = 1;
    return 0;
}

/* The sentinel list "h1[:p1],h2[:p2]" in s[0..n). */
static int ep_sentinels(const char *s, size_t n, sy_endpoint_t *ep, const char **err)
{
    const char *end = s + n;

    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        sy_ep_addr_t *a;

        if (ep->nsentinels == EP_SENTINELS_MAX)
            return ep_fail(err, "too many sentinels (at most 8)");
        a = &ep->sentinels[ep->nsentinels++];
        a->port = EP_SENTINEL_PORT;
        if (ep_hostport(s, (size_t)(stop - s), a->host, &a->port, err) != 0)
            return -1;
        if (!comma)
            return 0;
        s = comma + 1;
    }
}

/* After the sentinel list: "master-name[/db]" in s[0..n). */
static int ep_master(const char *s, size_t n, sy_endpoint_t *ep, const char **err)
{
    const char *slash = memchr(s, '/', n);
    size_t len = slash ? (size_t)(slash - s) : n;

    if (len == 0)
        return ep_fail(err, "missing master name");
    if (len >= EP_NAME_MAX)
        return ep_fail(err, "master name too long");
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '?' || c == '#')
            return ep_fail(err, "query parameters are not supported");
        if (!ep_is_alnum(c) && c != '-' && c != '.' && c != '_')
            return ep_fail(err, "invalid character in master name");
    }
    memcpy(ep->master, s, len);
    ep->master[len] = '\0';
    return slash ? ep_db(slash + 1, n - len - 1, ep, err) : 0;
}

/* user[:password] in s[0..n), percent-decoded. */
static int ep_userinfo(const char *s, size_t n, sy_endpoint_t *ep, const char **err)
{
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    int rc;

    rc = ep_decode(s, ulen, ep->user, sizeof ep->user);
    if (rc == -1)
        return ep_fail(err, "bad percent-encoding in user");
    if (rc == -2)
        return ep_fail(err, "user too long");
    ep->has_user = ep->user[0] != '\0';
    if (!colon) {
        if (ep->has_user)
            return ep_fail(err, "user without password (use redis://user:password@host)");
        return 0;                       /* "redis://@host": no credentials */
    }
    rc = ep_decode(colon + 1, n - ulen - 1, ep->password, sizeof ep->password);
    if (rc == -1)
        return ep_fail(err, "bad percent-encoding in password");
    if (rc == -2)
        return ep_fail(err, "password too long");
    /* "u:" is AUTH u "" (an ACL user with nopass); ":" alone is no credentials */
    ep->has_password = ep->has_user || ep->password[0] != '\0';
    return 0;
}

int sy_endpoint_parse(const char *s, sy_endpoint_t *ep, const char **err)
{
    const char *sep, *auth, *at, *slash, *end;
    int rc;

    memset(ep, 0, sizeof *ep);
    ep->port = 6379;
    if (err)
        *err = NULL;
    if (!s || !*s)
        return ep_fail(err, "missing host");
    end = s + strlen(s);

    sep = strstr(s, "://");
    if (!sep) {
        if (strchr(s, '@') || strchr(s, '/'))
            return ep_fail(err, "credentials and db need a redis:// or rediss:// URL");
        rc = ep_hostport(s, (size_t)(end - s), ep->host, &ep->port, err);
        goto out;
    }

    if (ep_word_is(s, (size_t)(sep - s), "redis"))
        ep->tls = 0;
    else if (ep_word_is(s, (size_t)(sep - s), "rediss"))
        ep->tls = 1;
    else if (ep_word_is(s, (size_t)(sep - s), "redis-sentinel"))
        ep->sentinel = 1;
    else if (ep_word_is(s, (size_t)(sep - s), "rediss-sentinel"))
        ep->sentinel = ep->tls = 1;
    else
        return ep_fail(err, "unknown scheme (expected redis://, rediss://, redis-sentinel:// or "
                            "rediss-sentinel://)");

    auth = sep + 3;
    at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    if (at) {
        rc = ep_userinfo(auth, (size_t)(at - auth), ep, err);
        if (rc != 0)
            goto out;
        auth = at + 1;
    }
    slash = strchr(auth, '/');
    if (ep->sentinel) {
        ep->port = 0;                   /* the master's address is not known yet */
        rc = ep_sentinels(auth, (size_t)((slash ? slash : end) - auth), ep, err);
        if (rc == 0)
            rc = slash ? ep_master(slash + 1, (size_t)(end - slash - 1), ep, err)
                       : ep_fail(err, "missing master name");
        goto out;
    }
    rc = ep_hostport(auth, (size_t)((slash ? slash : end) - auth), ep->host, &ep->port, err);
    if (rc == 0 && slash)
        rc = ep_db(slash + 1, (size_t)(end - slash - 1), ep, err);

out:
    if (rc != 0) {                      /* leave nothing half-parsed, secrets included */
        const char *why = err ? *err : NULL;
        memset(ep, 0, sizeof *ep);
        if (err)
            *err = why;
    }
    return rc;
}

/* ---- printing ----------------------------------------------------------------------- */

/* snprintf-style appender: counts everything, writes what fits, keeps out NUL-terminated. */
typedef struct ep_out_s {
    char  *buf;
    size_t cap;
    size_t len;
} ep_out_t;

static void ep_put(ep_out_t *o, const char *s, size_t n)
{
    if (o->cap > 0 && o->len < o->cap - 1) {
        size_t room = o->cap - 1 - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
    if (o->cap > 0)
        o->buf[o->len < o->cap - 1 ? o->len : o->cap - 1] = '\0';
}

static void ep_puts(ep_out_t *o, const char *s)
{
    ep_put(o, s, strlen(s));
}

/* The user, percent-encoded where it would not parse back. */
static void ep_put_encoded(ep_out_t *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        int c = (unsigned char)*s;
        if (ep_is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            ep_put(o, s, 1);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            ep_put(o, e, 3);
        }
    }
}

static void ep_put_addr(ep_out_t *o, const char *host, uint16_t port)
{
    char pbuf[8];
    int bracket = strchr(host, ':') != NULL;

    if (bracket)
        ep_puts(o, "[");
    ep_puts(o, host);
    if (bracket)
        ep_puts(o, "]");
    snprintf(pbuf, sizeof pbuf, ":%u", (unsigned)port);
    ep_puts(o, pbuf);
}

static void ep_put_hostport(ep_out_t *o, const sy_endpoint_t *ep)
{
    if (ep->sentinel && ep->host[0] == '\0') {
        ep_puts(o, "sentinel master ");
        ep_puts(o, ep->master);
        return;
    }
    ep_put_addr(o, ep->host, ep->port);
}

static int ep_done(const ep_out_t *o)
{
    return o->len > 0x7fffffff ? 0x7fffffff : (int)o->len;
}

int sy_endpoint_format_masked(const sy_endpoint_t *ep, char *out, int cap)
{
    ep_out_t o = { out, cap > 0 ? (size_t)cap : 0, 0 };

    if (o.cap > 0)
        out[0] = '\0';
    if (ep->sentinel || ep->tls || ep->has_user || ep->has_password || ep->has_db) {
        if (ep->sentinel)
            ep_puts(&o, ep->tls ? "rediss-sentinel://" : "redis-sentinel://");
        else
            ep_puts(&o, ep->tls ? "rediss://" : "redis://");
        if (ep->has_user)
            ep_put_encoded(&o, ep->user);
        if (ep->has_password)
            ep_puts(&o, ":****");
        if (ep->has_user || ep->has_password)
            ep_puts(&o, "@");
    }
    if (ep->sentinel) {
        for (int i = 0; i < ep->nsentinels; i++) {
            if (i > 0)
                ep_puts(&o, ",");
            ep_put_addr(&o, ep->sentinels[i].host, ep->sentinels[i].port);
        }
        ep_puts(&o, "/");
        ep_puts(&o, ep->master);
    } else {
        ep_put_hostport(&o, ep);
    }
    if (ep->has_db) {
        char db[16];
        snprintf(db, sizeof db, "/%d", ep->db);
        ep_puts(&o, db);
    }
    return ep_done(&o);
}

int sy_endpoint_hostport(const sy_endpoint_t *ep, char *out, int cap)
{
    ep_out_t o = { out, cap > 0 ? (size_t)cap : 0, 0 };

    if (o.cap > 0)
        out[0] = '\0';
    ep_put_hostport(&o, ep);
    return ep_done(&o);
}
