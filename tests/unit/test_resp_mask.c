/*
 * test_resp_mask.c - masking CONFIG GET's secrets in replies: RESP2 arrays and RESP3 maps
 * of pairs, EXEC replies (one level down), attributes, the values that stay (empty, null,
 * other keys), and malformed input: every strict prefix of a good reply and a few broken
 * ones are refused, never copied. Inputs are exact-size copies so ASan sees an over-read.
 */
#include "protocol/resp_mask.h"
#include "tests/unit/unit.h"

#include <stdlib.h>

static const char *const names[] = { "requirepass", "masterauth", NULL };
#define MASK "(hidden)"

static uint8_t *exact_copy(const char *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (!c)
        abort();
    memcpy(c, p, n);
    return c;
}

typedef struct {
    const char *name;
    const char *in;
    int         min_depth;
    const char *want;       /* NULL: refused (-1) */
    int         masked;
} mask_case_t;

static const mask_case_t cases[] = {
    { "resp2 requirepass", "*2\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n", 0,
      "*2\r\n$11\r\nrequirepass\r\n$8\r\n" MASK "\r\n", 1 },
    { "resp3 map", "%1\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n", 0,
      "%1\r\n$11\r\nrequirepass\r\n$8\r\n" MASK "\r\n", 1 },
    { "any case, *pass*", "*4\r\n$10\r\nMASTERAUTH\r\n$1\r\nm\r\n$11\r\nRequirePass\r\n$2\r\npw\r\n", 0,
      "*4\r\n$10\r\nMASTERAUTH\r\n$8\r\n" MASK "\r\n$11\r\nRequirePass\r\n$8\r\n" MASK "\r\n", 2 },
    { "empty stays empty", "*4\r\n$10\r\nmasterauth\r\n$0\r\n\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 0,
      "*4\r\n$10\r\nmasterauth\r\n$0\r\n\r\n$11\r\nrequirepass\r\n$8\r\n" MASK "\r\n", 1 },
    { "other keys stay", "*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$4\r\nport\r\n$4\r\n6379\r\n", 0, NULL, 0 },
    { "a key as a value stays", "*2\r\n$4\r\nname\r\n$11\r\nrequirepass\r\n", 0,
      "*2\r\n$4\r\nname\r\n$11\r\nrequirepass\r\n", 0 },
    { "null value", "*2\r\n$11\r\nrequirepass\r\n$-1\r\n", 0, "*2\r\n$11\r\nrequirepass\r\n$-1\r\n", 0 },
    { "simple strings", "*2\r\n+requirepass\r\n+pw\r\n", 0, "*2\r\n+requirepass\r\n+" MASK "\r\n", 1 },
    { "exec: one level down", "*2\r\n+OK\r\n*2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 1,
      "*2\r\n+OK\r\n*2\r\n$11\r\nrequirepass\r\n$8\r\n" MASK "\r\n", 1 },
    { "exec: its own array is not pairs", "*2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 1,
      "*2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 0 },
    { "attribute first", "|1\r\n+a\r\n:1\r\n*2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 0,
      "|1\r\n+a\r\n:1\r\n*2\r\n$11\r\nrequirepass\r\n$8\r\n" MASK "\r\n", 1 },
    { "set is not pairs", "~2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 0, "~2\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n", 0 },
    { "error reply", "-ERR unknown subcommand\r\n", 0, "-ERR unknown subcommand\r\n", 0 },
    { "empty array", "*0\r\n", 0, "*0\r\n", 0 },
    { "null array", "*-1\r\n", 0, "*-1\r\n", 0 },
    /* refused */
    { "trailing bytes", "*0\r\n+x\r\n", 0, NULL, -1 },
    { "short body", "*2\r\n$11\r\nrequirepass\r\n$9\r\npw\r\n", 0, NULL, -1 },
    { "no crlf after body", "$2\r\npwxx", 0, NULL, -1 },
    { "bad length", "$x\r\n", 0, NULL, -1 },
    { "negative count", "*-2\r\n", 0, NULL, -1 },
    { "huge count", "*99999999\r\n", 0, NULL, -1 },
    { "bad type", "?1\r\n", 0, NULL, -1 },
    { "empty", "", 0, NULL, -1 },
};

static void test_cases(void)
{
    uint8_t out[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const mask_case_t *c = &cases[i];
        size_t n = strlen(c->in);
        uint8_t *in = exact_copy(c->in, n);
        int masked = -7;
        ssize_t got = resp_mask_pairs(in, n, c->min_depth, names, MASK, out, sizeof out, &masked);
        if (c->masked < 0) {
            CHECK_MSG(got == -1, "%s: got %zd, want refused", c->name, got);
        } else {
            const char *want = c->want ? c->want : c->in;
            CHECK_MSG(got == (ssize_t)strlen(want) && memcmp(out, want, strlen(want)) == 0 && masked == c->masked,
                      "%s: got %zd [%.*s] masked %d", c->name, got, got > 0 ? (int)got : 0, (const char *)out, masked);
            /* every strict prefix is refused: a reply is masked whole or not passed */
            for (size_t k = 0; k < n; k++) {
                uint8_t *p = exact_copy(c->in, k);
                ssize_t r = resp_mask_pairs(p, k, c->min_depth, names, MASK, out, sizeof out, &masked);
                CHECK_MSG(r == -1, "%s: prefix %zu accepted (%zd)", c->name, k, r);
                free(p);
            }
            /* too small an output is 0, at every size short of the answer */
            for (size_t cap = 0; cap < strlen(want); cap++) {
                ssize_t r = resp_mask_pairs(in, n, c->min_depth, names, MASK, out, cap, &masked);
                CHECK_MSG(r == 0, "%s: cap %zu gave %zd", c->name, cap, r);
            }
        }
        free(in);
    }
}

static void test_deep(void)
{
    char buf[4096];
    size_t n = 0;
    for (int i = 0; i < RESP_MASK_DEPTH + 2; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "*1\r\n");
    n += (size_t)snprintf(buf + n, sizeof buf - n, ":1\r\n");
    uint8_t out[4096];
    int masked;
    CHECK(resp_mask_pairs((const uint8_t *)buf, n, 0, names, MASK, out, sizeof out, &masked) == -1);
}

int main(void)
{
    test_cases();
    test_deep();
    return unit_done("resp_mask");
}
