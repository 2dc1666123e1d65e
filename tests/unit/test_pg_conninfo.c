/*
 * test_pg_conninfo.c - "-c name=value" words for libpq's options (protocol/pg_conninfo.c).
 *
 * Expected strings are checked two ways: byte for byte, and by splitting them back the way
 * the server does (a copy of pg_split_opts from PostgreSQL 15 postinit.c, with isspace in
 * the C locale), which must give back "-c" and "name=value" unchanged. Overflow is tried at
 * every capacity around the exact fit, in exact-size buffers, and must leave the string as
 * it was.
 */
#include <ctype.h>
#include <stdlib.h>
#include "protocol/pg_conninfo.h"
#include "tests/unit/unit.h"

typedef struct {
    const char *name, *value;
    const char *want;           /* the word as appended to an empty string; NULL: refused */
} opt_vec_t;

static const opt_vec_t opt_vecs[] = {
    { "search_path", "public", "-c search_path=public" },
    { "search_path", "\"$user\", public", "-c search_path=\"$user\",\\ public" },
    { "DateStyle", "ISO, MDY", "-c DateStyle=ISO,\\ MDY" },
    { "x.path", "C:\\dir\\sub", "-c x.path=C:\\\\dir\\\\sub" },
    { "x.tab", "a\tb", "-c x.tab=a\\\tb" },
    { "x.ws", "a\nb\rc\vd\fe", "-c x.ws=a\\\nb\\\rc\\\vd\\\fe" },
    { "x.trailing", "ends with \\", "-c x.trailing=ends\\ with\\ \\\\" },
    { "x.empty", "", "-c x.empty=" },
    { "x.eq", "a=b", "-c x.eq=a=b" },
    { "x.utf8", "gr\xc3\xbc\xc3\x9f dich", "-c x.utf8=gr\xc3\xbc\xc3\x9f\\ dich" },
    { "x.quote", "it's", "-c x.quote=it's" },
    { "odd name", "v", "-c odd\\ name=v" },
    { "", "v", NULL },
    { "a=b", "v", NULL },
};

/* pg_split_opts, PostgreSQL 15 src/backend/utils/init/postinit.c, into words[]. */
static int split_opts(const char *optstr, char words[][256], int max)
{
    int n = 0;

    while (*optstr) {
        int last_was_escape = 0;
        size_t o = 0;

        while (isspace((unsigned char)*optstr))
            optstr++;
        if (*optstr == '\0')
            break;
        while (*optstr) {
            if (isspace((unsigned char)*optstr) && !last_was_escape)
                break;
            if (!last_was_escape && *optstr == '\\') {
                last_was_escape = 1;
            } else {
                last_was_escape = 0;
                if (o < 255)
                    words[n][o++] = *optstr;
            }
            optstr++;
        }
        words[n][o] = '\0';
        if (++n == max)
            break;
    }
    return n;
}

static void test_vectors(void)
{
    char prev[512] = "-c a=1";

    for (size_t i = 0; i < sizeof opt_vecs / sizeof opt_vecs[0]; i++) {
        const opt_vec_t *v = &opt_vecs[i];
        char out[512] = "", words[8][256], pair[256];
        const char *got = out;
        int r = pgw_options_add(out, sizeof out, v->name, v->value);

        if (v->want == NULL) {
            CHECK_MSG(r == -1 && out[0] == '\0', "%s: accepted", v->name);
            continue;
        }
        CHECK_MSG(r == 0, "%s: refused", v->name);
        CHECK_STREQ(got, v->want);
        snprintf(pair, sizeof pair, "%s=%s", v->name, v->value);
        CHECK_MSG(split_opts(out, words, 8) == 2 && strcmp(words[0], "-c") == 0 &&
                  strcmp(words[1], pair) == 0, "%s: server splits it differently", v->name);

        /* appended after every word so far, with one space; all still split right */
        size_t had = strlen(prev);
        CHECK(pgw_options_add(prev, sizeof prev, v->name, v->value) == 0);
        CHECK(prev[had] == ' ' && strcmp(prev + had + 1, v->want) == 0);
    }
    {
        char words[40][256];
        int n = split_opts(prev, words, 40), ok = n % 2 == 0;
        for (int i = 0; i < n && ok; i += 2)
            ok = strcmp(words[i], "-c") == 0 && strchr(words[i + 1], '=') != NULL;
        CHECK_MSG(ok && n == 2 * 13, "all words split back: %d words", n);
    }
}

/* Every capacity from 0 to the exact fit + 1, with and without a word already there. */
static void test_overflow(void)
{
    static const char *const starts[] = { "", "-c a=1" };

    for (size_t si = 0; si < 2; si++) {
        const char *start = starts[si];
        char ref[256];
        size_t full, sl = strlen(start);
        int ok = 1;

        snprintf(ref, sizeof ref, "%s", start);
        CHECK(pgw_options_add(ref, sizeof ref, "search_path", "a b\\c") == 0);
        full = strlen(ref) + 1;
        for (size_t cap = sl + 1; cap <= full + 1; cap++) {
            char *b = malloc(cap);
            if (b == NULL)
                exit(2);
            memcpy(b, start, sl + 1);
            int r = pgw_options_add(b, cap, "search_path", "a b\\c");
            if (cap >= full)
                ok &= r == 0 && strcmp(b, ref) == 0;
            else
                ok &= r == -1 && strcmp(b, start) == 0;
            free(b);
        }
        CHECK_MSG(ok, "capacities around %zu after \"%s\"", full, start);
    }
    /* no terminator within cap: refused, nothing written */
    {
        char *b = malloc(4);
        if (b == NULL)
            exit(2);
        memcpy(b, "abcd", 4);
        CHECK(pgw_options_add(b, 4, "a", "b") == -1 && memcmp(b, "abcd", 4) == 0);
        free(b);
    }
    /* cap 0 */
    {
        char c = 'x';
        CHECK(pgw_options_add(&c, 0, "a", "b") == -1 && c == 'x');
    }
}

int main(void)
{
    test_vectors();
    test_overflow();
    return unit_done("pg_conninfo");
}
