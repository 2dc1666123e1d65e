/*
 * test_resp_cmd.c - the helpers for commands switchyard reads itself: resp_cmd_split on
 * whole commands and resp_cmd_split_head on every prefix of one (as a command still
 * arriving is seen), with malformed starts expecting -1. Inputs are exact-size copies so
 * ASan catches a read past the end.
 */
#include "protocol/resp_cmd.h"
#include "tests/unit/unit.h"

#include <stdlib.h>

static uint8_t *exact_copy(const char *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (!c)
        abort();
    memcpy(c, p, n);
    return c;
}

/* Every prefix of a well-formed command: the arguments complete in it, the next one's
 * declared length once its header is in, the count once "*n\r\n" is in. */
static void head_every_prefix(const char *name, const char *cmd, int nargs, const size_t *lens)
{
    size_t n = strlen(cmd);
    resp_arg_t argv[16];
    for (size_t k = 0; k <= n; k++) {
        /* the reference, from the layout: header "*N\r\n", then "$L\r\n" body "\r\n" each */
        size_t pos = 0;
        while (cmd[pos] != '\n')
            pos++;
        pos++;
        long long want_argc = k >= pos ? nargs : -1, want_next = -1;
        int want_n = 0;
        for (int i = 0; i < nargs && k >= pos; i++) {
            size_t h = pos;
            while (cmd[h] != '\n')
                h++;
            h++;
            if (k < h)
                break;
            if (k < h + lens[i] + 2) {
                want_next = (long long)lens[i];
                break;
            }
            want_n++;
            pos = h + lens[i] + 2;
        }
        uint8_t *b = exact_copy(cmd, k);
        long long argc = -2, next = -2;
        int got = resp_cmd_split_head(b, k, argv, 16, &argc, &next);
        int ok = got == want_n && argc == want_argc && next == want_next;
        for (int i = 0; ok && i < got; i++)
            ok = argv[i].len == lens[i] && argv[i].ptr >= (const char *)b && argv[i].ptr + argv[i].len <= (const char *)b + k;
        CHECK_MSG(ok, "%s prefix %zu: got %d argc %lld next %lld, want %d %lld %lld", name, k, got, argc, next,
                  want_n, want_argc, want_next);
        free(b);
    }
}

static void test_split_head(void)
{
    static const size_t hello[] = { 5, 1, 4, 4, 6 };
    head_every_prefix("hello auth", "*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$6\r\nsecret\r\n", 5,
                      hello);
    static const size_t big[] = { 4, 12 };
    head_every_prefix("auth 12", "*2\r\n$4\r\nAUTH\r\n$12\r\n0123456789ab\r\n", 2, big);
    static const size_t empty[] = { 4, 0 };
    head_every_prefix("empty arg", "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", 2, empty);

    /* the arguments of a command still arriving: name and user whole, the password not */
    const char *part = "*5\r\n$5\r\nhello\r\n$1\r\n3\r\n$4\r\nauth\r\n$1\r\nu\r\n$100000\r\nxxxx";
    resp_arg_t argv[8];
    long long argc, next;
    uint8_t *b = exact_copy(part, strlen(part));
    CHECK(resp_cmd_split_head(b, strlen(part), argv, 8, &argc, &next) == 4 && argc == 5 && next == 100000);
    CHECK(argv[3].len == 1 && argv[3].ptr[0] == 'u');
    free(b);
    /* max bounds what is returned */
    b = exact_copy(part, strlen(part));
    CHECK(resp_cmd_split_head(b, strlen(part), argv, 2, &argc, &next) == 2 && next == -1);
    free(b);

    /* malformed starts */
    static const char *const bad[] = {
        "PING\r\n", "*x\r\n", "*2\rx", "*2\r\n#4\r\n", "*2\r\n$x\r\n", "*2\r\n$4\r\nECHOxx",
        "*2\r\n$4x", "*1234567890123456789\r\n", "*2\r\n$-1\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b = exact_copy(bad[i], strlen(bad[i]));
        CHECK_MSG(resp_cmd_split_head(b, strlen(bad[i]), argv, 8, &argc, &next) == -1, "bad %zu", i);
        free(b);
    }
    CHECK(resp_cmd_split_head((const uint8_t *)"", 0, argv, 8, &argc, &next) == 0 && argc == -1 && next == -1);
}

static void test_split_whole(void)
{
    const char *cmd = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
    resp_arg_t argv[4];
    uint8_t *b = exact_copy(cmd, strlen(cmd));
    CHECK(resp_cmd_split(b, strlen(cmd), argv, 4) == 3 && argv[2].len == 0);
    CHECK(resp_cmd_split(b, strlen(cmd) - 1, argv, 4) == -1);
    CHECK(resp_cmd_split(b, strlen(cmd), argv, 2) == -1);
    free(b);
}

int main(void)
{
    test_split_head();
    test_split_whole();
    return unit_done("resp_cmd");
}
