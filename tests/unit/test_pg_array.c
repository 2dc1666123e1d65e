/*
 * test_pg_array.c - the strict oid[] text parser (protocol/pg_array.c).
 *
 * Each input sits in an exact-size heap buffer with no terminator, so ASan sees any read
 * past len. The parser takes a complete value (libpq hands over whole fields), so instead
 * of splits: every proper prefix of a valid array must be an error, and counting mode
 * (out NULL) must agree with storing mode.
 */
#include <stdlib.h>
#include "protocol/pg_array.h"
#include "tests/unit/unit.h"

#define P(s) s, sizeof(s) - 1

typedef struct {
    const char *name;
    const char *text;
    size_t      n;
    size_t      max;
    ssize_t     want;           /* element count, or PGW_ERR */
    uint32_t    oids[4];
    const char *err;
} oid_vec_t;

static const oid_vec_t oid_vecs[] = {
    { "empty", P("{}"), 16, 0, { 0 }, NULL },
    { "one", P("{23}"), 16, 1, { 23 }, NULL },
    { "two", P("{23,25}"), 16, 2, { 23, 25 }, NULL },
    { "OID limits", P("{0,4294967295,1043}"), 16, 3, { 0, 4294967295u, 1043 }, NULL },
    { "leading zeros", P("{0023}"), 16, 1, { 23 }, NULL },
    { "exactly max", P("{1,2,3}"), 3, 3, { 1, 2, 3 }, NULL },
    { "max 0, empty", P("{}"), 0, 0, { 0 }, NULL },

    { "no input", P(""), 16, PGW_ERR, { 0 }, "expected '{'" },
    { "no brace", P("23,25"), 16, PGW_ERR, { 0 }, "expected '{'" },
    { "dimension decoration", P("[0:1]={23,25}"), 16, PGW_ERR, { 0 }, "expected '{'" },
    { "leading space", P(" {23}"), 16, PGW_ERR, { 0 }, "expected '{'" },
    { "unterminated", P("{23,25"), 16, PGW_ERR, { 0 }, "expected ',' or '}'" },
    { "open only", P("{"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "empty element", P("{23,,25}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "trailing comma", P("{23,}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "leading comma", P("{,23}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "negative", P("{-1}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "plus sign", P("{+1}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "NULL element", P("{NULL}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "type names", P("{integer,text}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "space after comma", P("{23, 25}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "space before comma", P("{23 ,25}"), 16, PGW_ERR, { 0 }, "expected ',' or '}'" },
    { "letter in number", P("{2x3}"), 16, PGW_ERR, { 0 }, "expected ',' or '}'" },
    { "nested", P("{{23}}"), 16, PGW_ERR, { 0 }, "expected a digit" },
    { "2^32", P("{4294967296}"), 16, PGW_ERR, { 0 }, "OID out of range" },
    { "2^32 + 9", P("{4294967305}"), 16, PGW_ERR, { 0 }, "OID out of range" },
    { "2^64 + 1", P("{18446744073709551617}"), 16, PGW_ERR, { 0 }, "OID out of range" },
    { "long run of zeros", P("{0000000000000000000000000000000000000007}"), 16, 1, { 7 }, NULL },
    { "over max", P("{1,2,3,4}"), 3, PGW_ERR, { 0 }, "too many elements" },
    { "max 0", P("{1}"), 0, PGW_ERR, { 0 }, "too many elements" },
    { "bytes after", P("{23}x"), 16, PGW_ERR, { 0 }, "bytes after '}'" },
    { "two arrays", P("{}{}"), 16, PGW_ERR, { 0 }, "bytes after '}'" },
    { "terminator counted", "{23}", 5, 16, PGW_ERR, { 0 }, "bytes after '}'" },
};

static ssize_t parse_exact(const char *t, size_t n, uint32_t *out, size_t max, const char **err)
{
    char *b = malloc(n ? n : 1);
    ssize_t r;

    if (b == NULL)
        exit(2);
    memcpy(b, t, n);
    r = pgw_parse_oid_array(b, n, out, max, err);
    free(b);
    return r;
}

static void test_vectors(void)
{
    for (size_t i = 0; i < sizeof oid_vecs / sizeof oid_vecs[0]; i++) {
        const oid_vec_t *v = &oid_vecs[i];
        uint32_t oids[16];
        const char *err = "unset", *cerr = "unset";
        ssize_t r, counted;

        memset(oids, 0xAB, sizeof oids);
        r = parse_exact(v->text, v->n, oids, v->max, &err);
        counted = parse_exact(v->text, v->n, NULL, v->max, &cerr);
        CHECK_MSG(r == v->want, "%s: got %zd want %zd (%s)", v->name, r, v->want, err ? err : "");
        CHECK_MSG(counted == r, "%s: counting gave %zd", v->name, counted);
        if (v->want == PGW_ERR) {
            CHECK_STREQ(err, v->err);
            CHECK_STREQ(cerr, v->err);
            continue;
        }
        CHECK_MSG(err == NULL && cerr == NULL, "%s: err set on success", v->name);
        if (r > 0)
            CHECK_MSG(memcmp(oids, v->oids, (size_t)r * sizeof oids[0]) == 0, "%s: values", v->name);
        /* nothing written past the elements */
        CHECK_MSG(oids[r] == 0xABABABABu, "%s: wrote past the last element", v->name);

        /* no proper prefix of a valid array is valid */
        int prefixes_ok = 1;
        for (size_t k = 0; k < v->n; k++)
            prefixes_ok &= parse_exact(v->text, k, oids, v->max, &err) == PGW_ERR && err != NULL;
        CHECK_MSG(prefixes_ok, "%s: a prefix parsed", v->name);
    }
}

/* The bound is the protocol's: 65535 elements parse, one more does not. */
static void test_max_count(void)
{
    size_t cap = 2 + 2 * (PGW_OID_ARRAY_MAX + 1), n = 0;
    char *t = malloc(cap);
    const char *err;

    if (t == NULL)
        exit(2);
    t[n++] = '{';
    for (size_t i = 0; i < PGW_OID_ARRAY_MAX; i++) {
        t[n++] = (char)('0' + i % 10);
        t[n++] = ',';
    }
    t[n - 1] = '}';
    CHECK(pgw_parse_oid_array(t, n, NULL, PGW_OID_ARRAY_MAX, &err) == (ssize_t)PGW_OID_ARRAY_MAX);
    t[n - 1] = ',';
    t[n++] = '7';
    t[n++] = '}';
    CHECK(pgw_parse_oid_array(t, n, NULL, PGW_OID_ARRAY_MAX, &err) == PGW_ERR);
    CHECK_STREQ(err, "too many elements");
    free(t);
}

int main(void)
{
    test_vectors();
    test_max_count();
    return unit_done("pg_array");
}
