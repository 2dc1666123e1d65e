/*
 * fuzz_pg_errclass.c - libFuzzer target for the text parsers switchyard applies to what
 * libpq hands back (build: make -C fuzz): protocol/pg_errclass.c and protocol/pg_array.c.
 *
 * The input, in an exact-size heap buffer, is fed to
 *   1. pgw_parse_oid_array, storing and counting; both must agree, and an accepted array
 *      printed back as "{a,b,...}" must parse to the same values (and equal the input
 *      when it has no leading zeros); every proper prefix of an accepted array is refused;
 *   2. pgw_errclass_connect on the input cut at its first NUL: the answer is one of the
 *      three SQLSTATEs, and putting text in front of or behind the input never turns a
 *      28P01 into something else (the rules look anywhere in the text).
 * Any inconsistency aborts, so the fuzzer reports it like a crash.
 */
#include "protocol/pg_array.h"
#include "protocol/pg_errclass.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)
#define MAX_OIDS 64

static void fuzz_oid_array(const char *t, size_t n)
{
    uint32_t oids[MAX_OIDS], again[MAX_OIDS];
    const char *err, *cerr, *err2;
    ssize_t r = pgw_parse_oid_array(t, n, oids, MAX_OIDS, &err);
    ssize_t c = pgw_parse_oid_array(t, n, NULL, MAX_OIDS, &cerr);
    char text[MAX_OIDS * 11 + 3];
    size_t o = 0;
    int zeros = 0;

    REQUIRE(r == c && err == cerr);
    if (r == PGW_ERR) {
        REQUIRE(err != NULL);
        return;
    }
    REQUIRE(err == NULL && r >= 0 && r <= MAX_OIDS && n >= 2);
    for (size_t k = 0; k < n; k++)
        REQUIRE(pgw_parse_oid_array(t, k, NULL, MAX_OIDS, &err2) == PGW_ERR && err2 != NULL);

    text[o++] = '{';
    for (ssize_t i = 0; i < r; i++)
        o += (size_t)snprintf(text + o, sizeof text - o, "%s%u", i ? "," : "", (unsigned)oids[i]);
    text[o++] = '}';
    REQUIRE(pgw_parse_oid_array(text, o, again, MAX_OIDS, &err2) == r);
    REQUIRE(r == 0 || memcmp(oids, again, (size_t)r * sizeof oids[0]) == 0);
    for (size_t k = 1; k + 1 < n; k++)
        if (t[k] == '0' && (t[k - 1] == '{' || t[k - 1] == ',') && t[k + 1] >= '0' && t[k + 1] <= '9')
            zeros = 1;
    if (!zeros)
        REQUIRE(o == n && memcmp(text, t, n) == 0);
}

static int known_state(const char *s)
{
    return strcmp(s, "08001") == 0 || strcmp(s, "28P01") == 0 || strcmp(s, "53300") == 0;
}

static void fuzz_errclass(const uint8_t *data, size_t size)
{
    size_t n = strnlen((const char *)data, size);
    char *t = malloc(n + 1), *wrapped = malloc(n + 64);
    const char *st, *st2;

    REQUIRE(t != NULL && wrapped != NULL);
    memcpy(t, data, n);
    t[n] = '\0';
    st = pgw_errclass_connect(t);
    REQUIRE(st != NULL && known_state(st));
    snprintf(wrapped, n + 64, "connection to server failed: %s\nmore", t);
    st2 = pgw_errclass_connect(wrapped);
    REQUIRE(known_state(st2));
    if (strcmp(st, "28P01") == 0)
        REQUIRE(strcmp(st2, "28P01") == 0);
    free(t);
    free(wrapped);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *b = malloc(size ? size : 1);

    REQUIRE(b != NULL);
    memcpy(b, data, size);
    fuzz_oid_array(b, size);
    free(b);
    fuzz_errclass(data, size);
    return 0;
}
