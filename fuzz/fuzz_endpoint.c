/*
 * fuzz_endpoint.c - libFuzzer target for protocol/endpoint.c (build: make -C fuzz).
 *
 * The input, cut at its first NUL and copied into an exact-size heap buffer, is one
 * endpoint string (REDIS_ENDPOINT, a route's builtin = ...). Checked:
 *   1. a refusal has a message and leaves no credential behind (user and password all
 *      zero bytes, no flags set): a half-parsed secret must not outlive the call;
 *   2. an accepted endpoint respects the field bounds (host non-empty and short enough,
 *      port 1..65535, db >= 0, a user always comes with a password; a sentinel form has
 *      1..EP_SENTINELS_MAX sentinels, a master name, and no master address yet);
 *   3. printed back as a full URL (user and password percent-encoded, IPv6 in brackets)
 *      it parses to the same fields;
 *   4. the masked form is the same at every capacity (snprintf semantics: same length,
 *      a prefix of the whole), hides the password as "****" and parses back to the same
 *      fields with that password; sy_endpoint_hostport is the host part of it.
 * Any inconsistency aborts, so the fuzzer reports it like a crash.
 */
#include "protocol/endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)
#define URL_MAX 4096

static void put_encoded(char *out, size_t *len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned c = (unsigned char)*s;
        out[(*len)++] = '%';
        out[(*len)++] = hex[c >> 4];
        out[(*len)++] = hex[c & 15];
    }
}

/* The full URL for ep, every credential byte percent-encoded. */
static void build_url(const sy_endpoint_t *ep, char *out)
{
    size_t len = 0;
    int n = snprintf(out, URL_MAX, "%s%s://", ep->tls ? "rediss" : "redis",
                     ep->sentinel ? "-sentinel" : "");
    len = (size_t)n;
    if (ep->has_user)
        put_encoded(out, &len, ep->user);
    if (ep->has_password) {
        out[len++] = ':';
        put_encoded(out, &len, ep->password);
    }
    if (ep->has_user || ep->has_password)
        out[len++] = '@';
    out[len] = '\0';
    if (ep->sentinel) {
        for (int i = 0; i < ep->nsentinels; i++) {
            const char *h = ep->sentinels[i].host;
            int v6 = strchr(h, ':') != NULL;
            len += (size_t)snprintf(out + len, URL_MAX - len, "%s%s%s%s:%u", i ? "," : "", v6 ? "[" : "",
                                    h, v6 ? "]" : "", (unsigned)ep->sentinels[i].port);
        }
        len += (size_t)snprintf(out + len, URL_MAX - len, "/%s", ep->master);
    } else {
        len += (size_t)sy_endpoint_hostport(ep, out + len, (int)(URL_MAX - len));
    }
    if (ep->has_db)
        snprintf(out + len, URL_MAX - len, "/%d", ep->db);
}

static void same_fields(const sy_endpoint_t *a, const sy_endpoint_t *b, int with_password)
{
    REQUIRE(strcmp(a->host, b->host) == 0 && a->port == b->port && a->tls == b->tls);
    REQUIRE(a->has_user == b->has_user && strcmp(a->user, b->user) == 0);
    REQUIRE(a->has_password == b->has_password);
    REQUIRE(!with_password || strcmp(a->password, b->password) == 0);
    REQUIRE(a->has_db == b->has_db && a->db == b->db);
    REQUIRE(a->sentinel == b->sentinel && a->nsentinels == b->nsentinels);
    REQUIRE(strcmp(a->master, b->master) == 0);
    for (int i = 0; i < a->nsentinels; i++)
        REQUIRE(strcmp(a->sentinels[i].host, b->sentinels[i].host) == 0 &&
                a->sentinels[i].port == b->sentinels[i].port);
}

static int no_credentials(const sy_endpoint_t *ep)
{
    for (size_t i = 0; i < EP_CRED_MAX; i++)
        if (ep->user[i] || ep->password[i])
            return 0;
    return !ep->has_user && !ep->has_password && !ep->has_db && !ep->tls && !ep->sentinel;
}

static void check_masked(const sy_endpoint_t *ep)
{
    static char full[URL_MAX], part[URL_MAX], hp[URL_MAX];
    int n = sy_endpoint_format_masked(ep, full, sizeof full);
    sy_endpoint_t back;
    const char *err;

    REQUIRE(n > 0 && n < URL_MAX && (size_t)n == strlen(full));
    for (int cap = 0; cap <= n + 1; cap += 1 + cap / 4) {
        memset(part, 'x', (size_t)cap + 1);
        REQUIRE(sy_endpoint_format_masked(ep, part, cap) == n);
        if (cap > 0) {
            size_t got = strlen(part);
            REQUIRE(got == (size_t)(cap - 1 < n ? cap - 1 : n));
            REQUIRE(memcmp(part, full, got) == 0);
        }
        REQUIRE(part[cap] == 'x');      /* nothing written past cap */
    }
    REQUIRE(sy_endpoint_parse(full, &back, &err) == 0);
    same_fields(ep, &back, 0);
    REQUIRE(!ep->has_password || strcmp(back.password, "****") == 0);

    int h = sy_endpoint_hostport(ep, hp, sizeof hp);
    REQUIRE(h > 0 && (size_t)h == strlen(hp));
    REQUIRE(ep->sentinel || (h <= n && strstr(full, hp) != NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t n = nul ? (size_t)(nul - data) : size;
    char *s = malloc(n + 1);
    static char url[URL_MAX];
    sy_endpoint_t ep, again;
    const char *err = "unset";

    REQUIRE(s != NULL);
    memcpy(s, data, n);
    s[n] = '\0';
    if (sy_endpoint_parse(s, &ep, &err) != 0) {
        REQUIRE(err != NULL && *err != '\0');
        REQUIRE(no_credentials(&ep));
        free(s);
        return 0;
    }
    REQUIRE(err == NULL);
    REQUIRE(strlen(ep.user) < EP_CRED_MAX && strlen(ep.password) < EP_CRED_MAX);
    REQUIRE(ep.db >= 0 && (ep.has_db || ep.db == 0));
    if (ep.sentinel) {
        REQUIRE(ep.host[0] == '\0' && ep.port == 0 && ep.master[0] != '\0');
        REQUIRE(ep.nsentinels >= 1 && ep.nsentinels <= EP_SENTINELS_MAX);
        for (int i = 0; i < ep.nsentinels; i++)
            REQUIRE(ep.sentinels[i].host[0] != '\0' && ep.sentinels[i].port >= 1);
    } else {
        REQUIRE(ep.host[0] != '\0' && strlen(ep.host) < EP_HOST_MAX && ep.port >= 1);
        REQUIRE(ep.nsentinels == 0 && ep.master[0] == '\0');
    }
    REQUIRE(!ep.has_user || ep.has_password);
    REQUIRE(ep.has_user == (ep.user[0] != '\0'));
    REQUIRE(ep.tls == 0 || ep.tls == 1);

    build_url(&ep, url);
    REQUIRE(sy_endpoint_parse(url, &again, &err) == 0);
    same_fields(&ep, &again, 1);
    check_masked(&ep);
    free(s);
    return 0;
}
