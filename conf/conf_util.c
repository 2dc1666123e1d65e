/*
 * conf_util.c - the bottom layer of conf/: error formatting, memory and string helpers,
 * and the parsers of typed values (numbers with size suffixes, booleans, host:port).
 *
 * May include: libc and conf/conf_util.h only. Nothing here knows conf_t, libpq, the raw
 * INI model or the environment; the layers above (see conf_util.h) build on it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf_util.h"

/* ---- errors ---------------------------------------------------------------------------- */

int conf__err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}


int conf__vkey_err(char *err, size_t errlen, const char *origin, const char *section,
                   const char *key, const char *fmt, va_list ap)
{
    char msg[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (key)
        return conf__err(err, errlen, "%s: %s %s: %s", origin, section, key, msg);
    return conf__err(err, errlen, "%s: %s: %s", origin, section, msg);
}

int conf__key_err(char *err, size_t errlen, const char *origin, const char *section,
                  const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = conf__vkey_err(err, errlen, origin, section, key, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- memory and strings ---------------------------------------------------------------- */

void *conf__xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("switchyard: out of memory reading the configuration\n", stderr);
        abort();
    }
    return q;
}

char *conf__strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    return memcpy(conf__xrealloc(NULL, n), s, n);
}

char *conf__asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = conf__xrealloc(NULL, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *conf__nonempty_dup(const char *v)
{
    return v && *v ? conf__strdup(v) : NULL;
}

char *conf__parse_value(const char *s, const char *comment_chars, const char **problem)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    char *out = conf__xrealloc(NULL, n + 1), *o = out;
    const char *p = s;

    if (*p == '"' || *p == '\'') {
        char q = *p++;
        for (;;) {
            if (*p == '\0') {
                free(out);
                *problem = q == '"' ? "unterminated double quote" : "unterminated single quote";
                return NULL;
            }
            if (*p == q)
                break;
            if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            *o++ = *p++;
        }
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && !strchr(comment_chars, *p)) {
            free(out);
            *problem = "text after the closing quote";
            return NULL;
        }
        *o = '\0';
        return out;
    }
    for (; *p; p++) {
        if ((*p == ' ' || *p == '\t') && strchr(comment_chars, p[1]) && p[1])
            break;
        *o++ = *p;
    }
    while (o > out && (o[-1] == ' ' || o[-1] == '\t'))
        o--;
    *o = '\0';
    return out;
}

/* ---- value parsers: return NULL or a static problem ------------------------------------ */

/* A decimal number; with sizes, an optional binary k/M/G suffix (256M, 256MiB, 256MB). */
const char *conf__parse_uint(const char *v, int sizes, uint64_t *out)
{
    uint64_t n = 0;
    const char *p = v;
    if (!isdigit((unsigned char)*p))
        return sizes ? "must be a number, optionally with a k, M or G suffix"
                     : "must be a number";
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (UINT64_MAX - 9) / 10)
            return "is too large";
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (sizes && *p) {
        unsigned shift = 0;
        switch (*p) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return "has an unknown suffix (use k, M or G)";
        }
        p++;
        if (*p == 'i')
            p++;
        if (*p == 'B' || *p == 'b')
            p++;
        if (n > (UINT64_MAX >> shift))
            return "is too large";
        n <<= shift;
    }
    if (*p)
        return sizes ? "must be a number, optionally with a k, M or G suffix"
                     : "must be a number";
    *out = n;
    return NULL;
}

const char *conf__parse_bool(const char *v, int *out)
{
    static const char *const t[] = { "true", "yes", "on", "1", NULL };
    static const char *const f[] = { "false", "no", "off", "0", NULL };
    for (size_t i = 0; t[i]; i++) {
        if (strcasecmp(v, t[i]) == 0) { *out = 1; return NULL; }
        if (strcasecmp(v, f[i]) == 0) { *out = 0; return NULL; }
    }
    return "must be true or false";
}

int conf__is_loopback(const char *h)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(h, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

/* "host:port" or "[v6]:port" into *host (malloc'd, no brackets) and *port. */
const char *conf__parse_hostport(const char *v, char **host, int *port)
{
    const char *hs, *he, *ps;
    if (*v == '[') {
        hs = v + 1;
        he = strchr(hs, ']');
        if (!he)
            return "unterminated IPv6 address (expected [ADDR]:PORT)";
        if (he[1] != ':')
            return "expected [ADDR]:PORT";
        ps = he + 2;
    } else {
        hs = v;
        he = strrchr(v, ':');
        if (!he)
            return "expected HOST:PORT";
        if (memchr(hs, ':', (size_t)(he - hs)))
            return "an IPv6 address must be in brackets: [ADDR]:PORT";
        ps = he + 1;
    }
    if (he == hs)
        return "missing host (use 0.0.0.0 or [::] for all addresses)";
    for (const char *c = hs; c < he; c++)
        if (isspace((unsigned char)*c) || *c == '/' || *c == '[' || *c == ']')
            return "bad host";
    long p = 0;
    const char *c = ps;
    for (; isdigit((unsigned char)*c) && p <= 65535; c++)
        p = p * 10 + (*c - '0');
    if (c == ps || *c || p < 1 || p > 65535)
        return "port must be 1..65535";
    char *h = strndup(hs, (size_t)(he - hs));
    if (!h)
        abort();
    if (*v == '[') {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, h, &a6) != 1) {
            free(h);
            return "bad IPv6 address";
        }
    }
    *host = h;
    *port = (int)p;
    return NULL;
}

int conf__env_name_ok(const char *s, size_t n, int allow_empty, int allow_digit_first)
{
    if (n == 0)
        return allow_empty;
    if (!allow_digit_first && isdigit((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

