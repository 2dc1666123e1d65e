/*
 * fuzz_console_tok.c - libFuzzer target for protocol/console_tok.c (build: make -C fuzz).
 *
 * The input, in an exact-size heap buffer with no terminator, is one console command.
 * The result must be an error with a message and no words, or 0..CONSOLE_TOK_MAX words,
 * each non-empty, within CONSOLE_TOK_WORD_MAX, free of separators and NUL, and found in
 * the input in order. Splitting the words joined by single spaces gives them back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "protocol/console_tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    memcpy(in, data, size);
    static console_tok_t t, again;
    int n = console_tok_split(&t, in, size);
    if (n == CONSOLE_TOK_ERR) {
        REQUIRE(t.err != NULL && t.n == 0);
        free(in);
        return 0;
    }
    REQUIRE(n >= 0 && n <= CONSOLE_TOK_MAX && t.n == n && t.err == NULL);

    static char joined[CONSOLE_TOK_MAX * (CONSOLE_TOK_WORD_MAX + 1)];
    size_t jl = 0, from = 0;
    for (int i = 0; i < n; i++) {
        size_t wl = strlen(t.word[i]);
        REQUIRE(wl >= 1 && wl <= CONSOLE_TOK_WORD_MAX);
        REQUIRE(strcspn(t.word[i], " \t\r\n;") == wl);
        const char *at = memmem(in + from, size - from, t.word[i], wl);
        REQUIRE(at != NULL);
        from = (size_t)(at - in) + wl;
        if (i)
            joined[jl++] = ' ';
        memcpy(joined + jl, t.word[i], wl);
        jl += wl;
    }
    REQUIRE(console_tok_split(&again, joined, jl) == n);
    for (int i = 0; i < n; i++)
        REQUIRE(strcmp(again.word[i], t.word[i]) == 0);
    free(in);
    return 0;
}
