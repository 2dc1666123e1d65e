/*
 * test_conf_util.c - the bottom layer of conf/ (conf/conf_util.c) on tables of values:
 * strict unsigned numbers with and without size suffixes (overflow is an error, never a
 * wrapped value), booleans, host:port, quoted values, environment names, and the one
 * message shape for a bad key.
 */
#include <stdint.h>
#include <stdlib.h>

#include "conf/conf_util.h"
#include "tests/unit/unit.h"

static void test_parse_uint(void)
{
    static const struct {
        const char *in;
        int         sizes;
        const char *err;        /* NULL: accepted with value want */
        uint64_t    want;
    } v[] = {
        { "0", 0, NULL, 0 },
        { "1024", 0, NULL, 1024 },
        { "007", 0, NULL, 7 },
        { "9223372036854775807", 0, NULL, INT64_MAX },
        { "1844674407370955160", 0, NULL, 1844674407370955160ull },
        /* 64-bit overflow: the check is conservative, one digit before wrapping */
        { "18446744073709551616", 0, "is too large", 0 },
        { "99999999999999999999999", 0, "is too large", 0 },
        { "", 0, "must be a number", 0 },
        { "-1", 0, "must be a number", 0 },
        { "+1", 0, "must be a number", 0 },
        { " 1", 0, "must be a number", 0 },
        { "1 ", 0, "must be a number", 0 },
        { "0x10", 0, "must be a number", 0 },
        { "1k", 0, "must be a number", 0 },
        { "1k", 1, NULL, 1024 },
        { "256M", 1, NULL, 256ull << 20 },
        { "256MiB", 1, NULL, 256ull << 20 },
        { "256mb", 1, NULL, 256ull << 20 },
        { "2G", 1, NULL, 2ull << 30 },
        { "1T", 1, "has an unknown suffix (use k, M or G)", 0 },
        { "1MiBx", 1, "must be a number, optionally with a k, M or G suffix", 0 },
        { "M", 1, "must be a number, optionally with a k, M or G suffix", 0 },
        /* the suffix shift must not overflow either */
        { "17179869184G", 1, "is too large", 0 },
        { "17179869183G", 1, NULL, 17179869183ull << 30 },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint64_t out = 12345;
        const char *err = conf__parse_uint(v[i].in, v[i].sizes, &out);
        if (v[i].err) {
            CHECK_MSG(err && strcmp(err, v[i].err) == 0, "\"%s\": got \"%s\"", v[i].in,
                      err ? err : "(accepted)");
            CHECK_MSG(out == 12345, "\"%s\": out written on error", v[i].in);
        } else {
            CHECK_MSG(err == NULL && out == v[i].want, "\"%s\": got %s / %llu", v[i].in,
                      err ? err : "ok", (unsigned long long)out);
        }
    }
}

static void test_parse_bool(void)
{
    static const struct { const char *in; int ok, want; } v[] = {
        { "true", 1, 1 }, { "YES", 1, 1 }, { "On", 1, 1 }, { "1", 1, 1 },
        { "false", 1, 0 }, { "no", 1, 0 }, { "OFF", 1, 0 }, { "0", 1, 0 },
        { "", 0, 0 }, { "2", 0, 0 }, { "truex", 0, 0 }, { " true", 0, 0 },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int out = -1;
        const char *err = conf__parse_bool(v[i].in, &out);
        if (v[i].ok)
            CHECK_MSG(err == NULL && out == v[i].want, "\"%s\"", v[i].in);
        else
            CHECK_MSG(err && strcmp(err, "must be true or false") == 0 && out == -1, "\"%s\"",
                      v[i].in);
    }
}

static void test_parse_hostport(void)
{
    static const struct { const char *in, *err, *host; int port; } v[] = {
        { "127.0.0.1:5432", NULL, "127.0.0.1", 5432 },
        { "[::1]:9187", NULL, "::1", 9187 },
        { "localhost:1", NULL, "localhost", 1 },
        { "h:65535", NULL, "h", 65535 },
        { "h:65536", "port must be 1..65535", NULL, 0 },
        { "h:0", "port must be 1..65535", NULL, 0 },
        { "h:", "port must be 1..65535", NULL, 0 },
        { "h:99999999999999999999", "port must be 1..65535", NULL, 0 },
        { "h:12a", "port must be 1..65535", NULL, 0 },
        { "h", "expected HOST:PORT", NULL, 0 },
        { ":5432", "missing host (use 0.0.0.0 or [::] for all addresses)", NULL, 0 },
        { "::1:5432", "an IPv6 address must be in brackets: [ADDR]:PORT", NULL, 0 },
        { "[::1:5432", "unterminated IPv6 address (expected [ADDR]:PORT)", NULL, 0 },
        { "[::1]5432", "expected [ADDR]:PORT", NULL, 0 },
        { "[nothex]:1", "bad IPv6 address", NULL, 0 },
        { "a b:1", "bad host", NULL, 0 },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *host = NULL;
        int port = -1;
        const char *err = conf__parse_hostport(v[i].in, &host, &port);
        if (v[i].err) {
            CHECK_MSG(err && strcmp(err, v[i].err) == 0 && !host && port == -1,
                      "\"%s\": got \"%s\"", v[i].in, err ? err : "(accepted)");
        } else {
            CHECK_MSG(err == NULL, "\"%s\": %s", v[i].in, err);
            CHECK_STREQ(host, v[i].host);
            CHECK(port == v[i].port);
        }
        free(host);
    }
    CHECK(conf__is_loopback("127.1.2.3"));
    CHECK(conf__is_loopback("::1"));
    CHECK(conf__is_loopback("::ffff:127.0.0.1"));
    CHECK(conf__is_loopback("LOCALHOST"));
    CHECK(!conf__is_loopback("10.0.0.1"));
    CHECK(!conf__is_loopback("0.0.0.0"));
    CHECK(!conf__is_loopback("localhost.example.org"));
}

static void test_parse_value(void)
{
    static const struct { const char *in, *comments, *want, *err; } v[] = {
        { "  plain  ", "#", "plain", NULL },
        { "a b # c", "#", "a b", NULL },
        { "a#b", "#", "a#b", NULL },                    /* # only after whitespace */
        { "\"a \\\" \\\\ b\" # c", "#", "a \" \\ b", NULL },
        { "'a \\n'", "#", "a \\n", NULL },
        { "''", "#", "", NULL },
        { "x ; y", ";#", "x", NULL },
        { "\"open", "#", NULL, "unterminated double quote" },
        { "'open", "#", NULL, "unterminated single quote" },
        { "'a' b", "#", NULL, "text after the closing quote" },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *problem = NULL;
        char *out = conf__parse_value(v[i].in, v[i].comments, &problem);
        if (v[i].err)
            CHECK_MSG(!out && problem && strcmp(problem, v[i].err) == 0, "[%s]", v[i].in);
        else
            CHECK_STREQ(out, v[i].want);
        free(out);
    }
}

static void test_names_and_errors(void)
{
    CHECK(conf__env_name_ok("CODEINTEL_", 10, 0, 0));
    CHECK(conf__env_name_ok("", 0, 1, 0));
    CHECK(!conf__env_name_ok("", 0, 0, 0));
    CHECK(!conf__env_name_ok("1PG", 3, 0, 0));
    CHECK(conf__env_name_ok("1PG", 3, 0, 1));
    CHECK(!conf__env_name_ok("PG-HOST", 7, 0, 0));
    CHECK(conf__env_name_ok("PG-HOST", 2, 0, 0));      /* only n bytes are looked at */

    CHECK(conf__nonempty_dup(NULL) == NULL);
    CHECK(conf__nonempty_dup("") == NULL);
    char *d = conf__nonempty_dup("x");
    CHECK_STREQ(d, "x");
    free(d);

    char err[64];
    CHECK(conf__key_err(err, sizeof err, "f.conf:3", "[route pg]", "listener", "no [listener %s]",
                        "pgx") == -1);
    CHECK(strcmp(err, "f.conf:3: [route pg] listener: no [listener pgx]") == 0);
    CHECK(conf__key_err(err, sizeof err, "f.conf:3", "[route pg]", NULL, "no target") == -1);
    CHECK(strcmp(err, "f.conf:3: [route pg]: no target") == 0);
    /* truncated, still terminated */
    char small[8];
    conf__key_err(small, sizeof small, "f.conf:3", "[route pg]", "k", "long message");
    CHECK(strcmp(small, "f.conf:") == 0);
    CHECK(conf__err(NULL, 0, "ignored %d", 1) == -1);
}

int main(void)
{
    test_parse_uint();
    test_parse_bool();
    test_parse_hostport();
    test_parse_value();
    test_names_and_errors();
    return unit_done("conf_util");
}
