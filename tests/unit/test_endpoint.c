/*
 * test_endpoint.c - Redis endpoint strings: every accepted form with the fields it must
 * produce and how it prints (masked and host:port), every malformed form with its exact
 * message. Inputs are copied into exact-size malloc'd buffers so ASan catches a read
 * past the terminating NUL.
 */
#include "protocol/endpoint.h"
#include "tests/unit/unit.h"

#include <stdlib.h>

static char *exact_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (!c)
        abort();
    memcpy(c, s, n);
    return c;
}

typedef struct {
    const char *in;
    const char *host;
    unsigned    port;
    int         tls;
    const char *user;       /* NULL: has_user == 0 */
    const char *password;   /* NULL: has_password == 0 */
    int         db;         /* -1: has_db == 0 */
    const char *masked;
    const char *hostport;
} ok_case_t;

static const ok_case_t ok_cases[] = {
    { "localhost:6379", "localhost", 6379, 0, NULL, NULL, -1, "localhost:6379", "localhost:6379" },
    { "127.0.0.1:6380", "127.0.0.1", 6380, 0, NULL, NULL, -1, "127.0.0.1:6380", "127.0.0.1:6380" },
    { "cache", "cache", 6379, 0, NULL, NULL, -1, "cache:6379", "cache:6379" },
    { "redis:6379", "redis", 6379, 0, NULL, NULL, -1, "redis:6379", "redis:6379" },
    { "h_1.example-2.com:1", "h_1.example-2.com", 1, 0, NULL, NULL, -1, "h_1.example-2.com:1",
      "h_1.example-2.com:1" },
    { "h:65535", "h", 65535, 0, NULL, NULL, -1, "h:65535", "h:65535" },
    { "h:06379", "h", 6379, 0, NULL, NULL, -1, "h:6379", "h:6379" },
    { "[::1]:6379", "::1", 6379, 0, NULL, NULL, -1, "[::1]:6379", "[::1]:6379" },
    { "[::1]", "::1", 6379, 0, NULL, NULL, -1, "[::1]:6379", "[::1]:6379" },
    { "[::ffff:127.0.0.1]:7000", "::ffff:127.0.0.1", 7000, 0, NULL, NULL, -1,
      "[::ffff:127.0.0.1]:7000", "[::ffff:127.0.0.1]:7000" },
    { "redis://localhost", "localhost", 6379, 0, NULL, NULL, -1, "localhost:6379", "localhost:6379" },
    { "REDIS://Host", "Host", 6379, 0, NULL, NULL, -1, "Host:6379", "Host:6379" },
    { "redis://h:6380/2", "h", 6380, 0, NULL, NULL, 2, "redis://h:6380/2", "h:6380" },
    { "redis://h/", "h", 6379, 0, NULL, NULL, -1, "h:6379", "h:6379" },
    { "redis://h:6379/0", "h", 6379, 0, NULL, NULL, 0, "redis://h:6379/0", "h:6379" },
    { "redis://h/2147483647", "h", 6379, 0, NULL, NULL, 2147483647, "redis://h:6379/2147483647",
      "h:6379" },
    { "redis://[::1]:6380/2", "::1", 6380, 0, NULL, NULL, 2, "redis://[::1]:6380/2", "[::1]:6380" },
    { "redis://[::1]/3", "::1", 6379, 0, NULL, NULL, 3, "redis://[::1]:6379/3", "[::1]:6379" },
    { "rediss://h", "h", 6379, 1, NULL, NULL, -1, "rediss://h:6379", "h:6379" },
    { "rediss://u:p%40ss@h:6380/2", "h", 6380, 1, "u", "p@ss", 2, "rediss://u:****@h:6380/2",
      "h:6380" },
    { "redis://:s3cr3t@h", "h", 6379, 0, NULL, "s3cr3t", -1, "redis://:****@h:6379", "h:6379" },
    { "redis://default:p:w@h", "h", 6379, 0, "default", "p:w", -1, "redis://default:****@h:6379",
      "h:6379" },
    { "redis://u:p@ss@h", "h", 6379, 0, "u", "p@ss", -1, "redis://u:****@h:6379", "h:6379" },
    { "redis://u:a/b@h/3", "h", 6379, 0, "u", "a/b", 3, "redis://u:****@h:6379/3", "h:6379" },
    { "redis://u:a?b#c@h", "h", 6379, 0, "u", "a?b#c", -1, "redis://u:****@h:6379", "h:6379" },
    { "redis://%75ser:pw%2F%2f@h", "h", 6379, 0, "user", "pw//", -1, "redis://user:****@h:6379",
      "h:6379" },
    { "redis://a%20b:pw@h", "h", 6379, 0, "a b", "pw", -1, "redis://a%20b:****@h:6379", "h:6379" },
    { "redis://u:@h", "h", 6379, 0, "u", "", -1, "redis://u:****@h:6379", "h:6379" },
    { "redis://:@h", "h", 6379, 0, NULL, NULL, -1, "h:6379", "h:6379" },
    { "redis://@h", "h", 6379, 0, NULL, NULL, -1, "h:6379", "h:6379" },
    { "rediss://:pw@[::1]:6390/1", "::1", 6390, 1, NULL, "pw", 1, "rediss://:****@[::1]:6390/1",
      "[::1]:6390" },
};

typedef struct {
    const char *in;
    const char *err;
} bad_case_t;

#define SCHEME_ERR \
    "unknown scheme (expected redis://, rediss://, redis-sentinel:// or rediss-sentinel://)"

static const bad_case_t bad_cases[] = {
    { "", "missing host" },
    { ":6379", "missing host" },
    { "redis://", "missing host" },
    { "redis://:pw@", "missing host" },
    { "redis:///2", "missing host" },
    { "redis://:6379", "missing host" },
    { "[]:6379", "missing host" },
    { "h:0", "port must be 1..65535" },
    { "redis://h:0", "port must be 1..65535" },
    { "h:65536", "port must be 1..65535" },
    { "h:abc", "port must be 1..65535" },
    { "h:", "port must be 1..65535" },
    { "h:-1", "port must be 1..65535" },
    { "h:+1", "port must be 1..65535" },
    { "h:99999999999999999999999", "port must be 1..65535" },
    { "redis://h:/1", "port must be 1..65535" },
    { "redis://h:6379 ", "port must be 1..65535" },
    { "[::1]:", "port must be 1..65535" },
    { "redis://h/x", "db must be a number 0..2147483647" },
    { "redis://h/-1", "db must be a number 0..2147483647" },
    { "redis://h/99999999999", "db must be a number 0..2147483647" },
    { "redis://h/2147483648", "db must be a number 0..2147483647" },
    { "redis://h/1/2", "db must be a number 0..2147483647" },
    { "redis://h/ 1", "db must be a number 0..2147483647" },
    { "redis://h/+1", "db must be a number 0..2147483647" },
    { "http://h", SCHEME_ERR },
    { "://h", SCHEME_ERR },
    { "redis+tls://h", SCHEME_ERR },
    { "unix:///tmp/redis.sock", SCHEME_ERR },
    { "redis://u:p%4@h", "bad percent-encoding in password" },
    { "redis://u:p%zz@h", "bad percent-encoding in password" },
    { "redis://u:%@h", "bad percent-encoding in password" },
    { "redis://u:p%00@h", "bad percent-encoding in password" },
    { "redis://u%2:p@h", "bad percent-encoding in user" },
    { "redis://%g0:p@h", "bad percent-encoding in user" },
    { "[::1", "unterminated IPv6 address" },
    { "redis://[::1:6379/0", "unterminated IPv6 address" },
    { "redis://u@h", "user without password (use redis://user:password@host)" },
    { "redis://u@h:6379/1", "user without password (use redis://user:password@host)" },
    { "::1:6379", "IPv6 address must be in brackets" },
    { "redis://::1", "IPv6 address must be in brackets" },
    { "[::1]x", "unexpected text after IPv6 address" },
    { "[::1]6379", "unexpected text after IPv6 address" },
    { "[zz::1]", "invalid IPv6 address" },
    { "[1.2.3.4]", "invalid IPv6 address" },
    { "u:p@h:6379", "credentials and db need a redis:// or rediss:// URL" },
    { "h:6379/0", "credentials and db need a redis:// or rediss:// URL" },
    { "redis://h?db=1", "query parameters are not supported" },
    { "redis://h:6379?x=1", "query parameters are not supported" },
    { "redis://h/1?x=1", "query parameters are not supported" },
    { "ho st", "invalid character in host" },
    { "h%41:1", "invalid character in host" },
    { "redis://h\n", "invalid character in host" },
    /* the sentinel forms */
    { "redis-sentinel://h:26379", "missing master name" },
    { "redis-sentinel://h:26379/", "missing master name" },
    { "redis-sentinel://h//2", "missing master name" },
    { "redis-sentinel:///m", "missing host" },
    { "redis-sentinel://,h/m", "missing host" },
    { "redis-sentinel://h,/m", "missing host" },
    { "redis-sentinel://h,,h2/m", "missing host" },
    { "redis-sentinel://:pw@/m", "missing host" },
    { "redis-sentinel://h:0/m", "port must be 1..65535" },
    { "redis-sentinel://h:1,h:65536/m", "port must be 1..65535" },
    { "redis-sentinel://h/m/x", "db must be a number 0..2147483647" },
    { "redis-sentinel://h/m/1/2", "db must be a number 0..2147483647" },
    { "redis-sentinel://h/m/2147483648", "db must be a number 0..2147483647" },
    { "redis-sentinel://h/m y", "invalid character in master name" },
    { "redis-sentinel://h/m%20y", "invalid character in master name" },
    { "redis-sentinel://h/m\n", "invalid character in master name" },
    { "redis-sentinel://h/m?x=1", "query parameters are not supported" },
    { "redis-sentinel://h/m#f", "query parameters are not supported" },
    { "redis-sentinel://u@h/m", "user without password (use redis://user:password@host)" },
    { "redis-sentinel://u:p%zz@h/m", "bad percent-encoding in password" },
    { "redis-sentinel://::1/m", "IPv6 address must be in brackets" },
    { "redis-sentinel://[::1/m", "unterminated IPv6 address" },
    { "redis-sentinel://a,b,c,d,e,f,g,h,i/m", "too many sentinels (at most 8)" },
    { "redis-sentinels://h/m", SCHEME_ERR },
    { "sentinel://h/m", SCHEME_ERR },
};

/* The sentinel forms: the sentinel list as host:port joined by ',', the master's name. */
typedef struct {
    const char *in;
    const char *sentinels;
    const char *master;
    int         tls;
    const char *user;
    const char *password;
    int         db;
    const char *masked;
} sentinel_case_t;

static const sentinel_case_t sentinel_cases[] = {
    { "redis-sentinel://127.0.0.1:26379/mymaster", "127.0.0.1:26379", "mymaster", 0, NULL, NULL, -1,
      "redis-sentinel://127.0.0.1:26379/mymaster" },
    { "redis-sentinel://s1/m", "s1:26379", "m", 0, NULL, NULL, -1, "redis-sentinel://s1:26379/m" },
    { "REDIS-SENTINEL://s1:1,s2,[::1]:3/my-master.1_x/4", "s1:1,s2:26379,[::1]:3", "my-master.1_x", 0,
      NULL, NULL, 4, "redis-sentinel://s1:1,s2:26379,[::1]:3/my-master.1_x/4" },
    { "redis-sentinel://:pw@s1:5000,s2:5001/m/0", "s1:5000,s2:5001", "m", 0, NULL, "pw", 0,
      "redis-sentinel://:****@s1:5000,s2:5001/m/0" },
    { "rediss-sentinel://u:p%40ss@s1/m", "s1:26379", "m", 1, "u", "p@ss", -1,
      "rediss-sentinel://u:****@s1:26379/m" },
    { "redis-sentinel://u:a/b,c@s1,s2/m", "s1:26379,s2:26379", "m", 0, "u", "a/b,c", -1,
      "redis-sentinel://u:****@s1:26379,s2:26379/m" },
    { "redis-sentinel://a,b,c,d,e,f,g,h/m", "a:26379,b:26379,c:26379,d:26379,e:26379,f:26379,g:26379,"
      "h:26379", "m", 0, NULL, NULL, -1,
      "redis-sentinel://a:26379,b:26379,c:26379,d:26379,e:26379,f:26379,g:26379,h:26379/m" },
};

static void check_sentinel(const sentinel_case_t *c)
{
    char *in = exact_dup(c->in);
    sy_endpoint_t ep;
    const char *err = "unset";
    char out[2048];
    int rc = sy_endpoint_parse(in, &ep, &err);

    CHECK_MSG(rc == 0 && err == NULL, "%s: rc %d err %s", c->in, rc, err ? err : "(null)");
    if (rc == 0) {
        size_t o = 0;
        out[0] = '\0';
        for (int i = 0; i < ep.nsentinels; i++)
            o += (size_t)snprintf(out + o, sizeof out - o, "%s%s%s%s:%u", i ? "," : "",
                                  strchr(ep.sentinels[i].host, ':') ? "[" : "", ep.sentinels[i].host,
                                  strchr(ep.sentinels[i].host, ':') ? "]" : "",
                                  (unsigned)ep.sentinels[i].port);
        CHECK_MSG(ep.sentinel == 1 && strcmp(out, c->sentinels) == 0, "%s: sentinels [%s]", c->in, out);
        CHECK_MSG(strcmp(ep.master, c->master) == 0, "%s: master [%s]", c->in, ep.master);
        CHECK_MSG(ep.host[0] == '\0' && ep.port == 0, "%s: a master address before any sentinel said",
                  c->in);
        CHECK_MSG(ep.tls == c->tls, "%s: tls %d", c->in, ep.tls);
        CHECK_MSG(c->user ? ep.has_user && strcmp(ep.user, c->user) == 0 : !ep.has_user, "%s: user",
                  c->in);
        CHECK_MSG(c->password ? ep.has_password && strcmp(ep.password, c->password) == 0
                              : !ep.has_password, "%s: password", c->in);
        CHECK_MSG(c->db < 0 ? !ep.has_db : ep.has_db && ep.db == c->db, "%s: db", c->in);
        rc = sy_endpoint_format_masked(&ep, out, (int)sizeof out);
        CHECK_MSG(strcmp(out, c->masked) == 0 && rc == (int)strlen(out), "%s: masked [%s]", c->in, out);
        if (ep.has_password && ep.password[0])
            CHECK_MSG(strstr(out, ep.password) == NULL, "%s: password in [%s]", c->in, out);
        rc = sy_endpoint_hostport(&ep, out, (int)sizeof out);
        CHECK_MSG(strncmp(out, "sentinel master ", 16) == 0 && strcmp(out + 16, c->master) == 0,
                  "%s: hostport [%s]", c->in, out);
        /* once the daemon knows the master, messages name its address */
        snprintf(ep.host, sizeof ep.host, "10.1.2.3");
        ep.port = 6380;
        sy_endpoint_hostport(&ep, out, (int)sizeof out);
        CHECK_MSG(strcmp(out, "10.1.2.3:6380") == 0, "%s: hostport [%s]", c->in, out);
    }
    free(in);
}

static void check_ok(const ok_case_t *c)
{
    char *in = exact_dup(c->in);
    sy_endpoint_t ep;
    const char *err = "unset";
    char out[1024];
    int rc = sy_endpoint_parse(in, &ep, &err);

    CHECK_MSG(rc == 0 && err == NULL, "%s: rc %d err %s", c->in, rc, err ? err : "(null)");
    if (rc == 0) {
        CHECK_MSG(strcmp(ep.host, c->host) == 0, "%s: host [%s]", c->in, ep.host);
        CHECK_MSG(ep.port == c->port, "%s: port %u", c->in, (unsigned)ep.port);
        CHECK_MSG(ep.tls == c->tls, "%s: tls %d", c->in, ep.tls);
        CHECK_MSG(c->user ? ep.has_user && strcmp(ep.user, c->user) == 0 : !ep.has_user,
                  "%s: user %d [%s]", c->in, ep.has_user, ep.user);
        CHECK_MSG(c->password ? ep.has_password && strcmp(ep.password, c->password) == 0
                              : !ep.has_password,
                  "%s: password %d", c->in, ep.has_password);
        CHECK_MSG(c->db < 0 ? !ep.has_db && ep.db == 0 : ep.has_db && ep.db == c->db,
                  "%s: db %d %d", c->in, ep.has_db, ep.db);
        rc = sy_endpoint_format_masked(&ep, out, (int)sizeof out);
        CHECK_MSG(strcmp(out, c->masked) == 0 && rc == (int)strlen(out), "%s: masked [%s] %d",
                  c->in, out, rc);
        if (ep.has_password && ep.password[0])
            CHECK_MSG(strstr(out, ep.password) == NULL, "%s: password in [%s]", c->in, out);
        rc = sy_endpoint_hostport(&ep, out, (int)sizeof out);
        CHECK_MSG(strcmp(out, c->hostport) == 0 && rc == (int)strlen(out), "%s: hostport [%s]",
                  c->in, out);
    }
    free(in);
}

static void check_bad(const bad_case_t *c)
{
    char *in = exact_dup(c->in);
    sy_endpoint_t ep;
    const char *err = NULL;
    int rc;

    memset(&ep, 0x5a, sizeof ep);
    rc = sy_endpoint_parse(in, &ep, &err);
    CHECK_MSG(rc == -1, "%s: accepted", c->in);
    CHECK_MSG(err && strcmp(err, c->err) == 0, "%s: err [%s] want [%s]", c->in,
              err ? err : "(null)", c->err);
    CHECK_MSG(ep.password[0] == '\0' && ep.user[0] == '\0' && !ep.has_password,
              "%s: fields left after an error", c->in);
    free(in);
}

/* Length limits: exactly at the field size minus the NUL is fine, one more is not. */
static void test_limits(void)
{
    char s[2048], field[1024];
    sy_endpoint_t ep;
    const char *err;

    memset(field, 'h', EP_HOST_MAX - 1);
    field[EP_HOST_MAX - 1] = '\0';
    snprintf(s, sizeof s, "redis://%s:1", field);
    CHECK(sy_endpoint_parse(s, &ep, &err) == 0 && strlen(ep.host) == EP_HOST_MAX - 1);
    snprintf(s, sizeof s, "redis://%sh:1", field);
    CHECK(sy_endpoint_parse(s, &ep, &err) == -1 && strcmp(err, "host too long") == 0);
    snprintf(s, sizeof s, "[%s::1]:1", "1111111111111111111111111111111111111111111111111111111111"
             "1111111111111111111111111111111111111111111111111111111111111111111111111111111111"
             "1111111111111111111111111111111111111111111111111111111111111111111111111111111111"
             "111111111111111111111111111111111111111111111");
    CHECK(sy_endpoint_parse(s, &ep, &err) == -1 && strcmp(err, "host too long") == 0);

    memset(field, 'u', EP_CRED_MAX - 1);
    field[EP_CRED_MAX - 1] = '\0';
    snprintf(s, sizeof s, "redis://%s:pw@h", field);
    CHECK(sy_endpoint_parse(s, &ep, &err) == 0 && strlen(ep.user) == EP_CRED_MAX - 1);
    snprintf(s, sizeof s, "redis://%su:pw@h", field);
    CHECK(sy_endpoint_parse(s, &ep, &err) == -1 && strcmp(err, "user too long") == 0);

    snprintf(s, sizeof s, "redis://:%s@h", field);
    CHECK(sy_endpoint_parse(s, &ep, &err) == 0 && strlen(ep.password) == EP_CRED_MAX - 1);
    snprintf(s, sizeof s, "redis://:%sp@h", field);
    CHECK(sy_endpoint_parse(s, &ep, &err) == -1 && strcmp(err, "password too long") == 0);
    CHECK(ep.password[0] == '\0');

    /* the limit applies to the decoded length: 255 x "%41" is 255 bytes */
    {
        size_t o = 0;
        o += (size_t)snprintf(s + o, sizeof s - o, "redis://:");
        for (int i = 0; i < EP_CRED_MAX - 1; i++)
            o += (size_t)snprintf(s + o, sizeof s - o, "%%41");
        snprintf(s + o, sizeof s - o, "@h");
        CHECK(sy_endpoint_parse(s, &ep, &err) == 0 && strlen(ep.password) == EP_CRED_MAX - 1 &&
              ep.password[0] == 'A');
    }
}

static void test_format(void)
{
    sy_endpoint_t ep;
    const char *err;
    char small[8];
    int rc;

    CHECK(sy_endpoint_parse(NULL, &ep, &err) == -1 && strcmp(err, "missing host") == 0);
    CHECK(sy_endpoint_parse("h", &ep, NULL) == 0);       /* err may be NULL */
    CHECK(sy_endpoint_parse("u:p@h", &ep, NULL) == -1);

    CHECK(sy_endpoint_parse("rediss://user:secret@example.com:6380/5", &ep, &err) == 0);
    /* snprintf semantics: the full length, a truncated NUL-terminated copy */
    rc = sy_endpoint_format_masked(&ep, small, (int)sizeof small);
    CHECK(rc == (int)strlen("rediss://user:****@example.com:6380/5"));
    CHECK(strcmp(small, "rediss:") == 0);
    CHECK(sy_endpoint_format_masked(&ep, NULL, 0) == rc);
    rc = sy_endpoint_hostport(&ep, small, (int)sizeof small);
    CHECK(rc == (int)strlen("example.com:6380") && strcmp(small, "example") == 0);
    CHECK(sy_endpoint_hostport(&ep, NULL, 0) == rc);
    small[0] = 'x';
    CHECK(sy_endpoint_hostport(&ep, small, 1) == rc && small[0] == '\0');

    /* a user that would not parse back is percent-encoded for display */
    CHECK(sy_endpoint_parse("redis://a%3Ab%40c:pw@h", &ep, &err) == 0);
    CHECK(strcmp(ep.user, "a:b@c") == 0);
    {
        char out[128];
        const char *shown = out;
        sy_endpoint_format_masked(&ep, out, (int)sizeof out);
        CHECK_STREQ(shown, "redis://a%3Ab%40c:****@h:6379");
        CHECK(sy_endpoint_parse(out, &ep, &err) == 0 && strcmp(ep.user, "a:b@c") == 0 &&
              strcmp(ep.password, "****") == 0);
    }
}

int main(void)
{
    for (size_t i = 0; i < sizeof ok_cases / sizeof ok_cases[0]; i++)
        check_ok(&ok_cases[i]);
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        check_bad(&bad_cases[i]);
    for (size_t i = 0; i < sizeof sentinel_cases / sizeof sentinel_cases[0]; i++)
        check_sentinel(&sentinel_cases[i]);
    test_limits();
    test_format();
    return unit_done("endpoint");
}
