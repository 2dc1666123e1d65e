/*
 * test_console_tok.c - the admin console's tokenizer on a table of inputs.
 *
 * Each input is copied to the end of an exact-size malloc'd buffer with no NUL after it,
 * so ASan catches any read past len, and the tokenizer must not rely on a terminator.
 * Each vector gives the exact words expected, or the exact error.
 */
#include "protocol/console_tok.h"
#include "tests/unit/unit.h"

#include <stdlib.h>

typedef struct {
    const char *name;
    const char *in;
    size_t      len;                    /* 0: strlen(in) */
    const char *err;                    /* expected error, or NULL */
    int         n;
    const char *w[CONSOLE_TOK_MAX];
} vec_t;

#define W127 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const vec_t vecs[] = {
    { "show clients", "SHOW CLIENTS", 0, NULL, 2, { "SHOW", "CLIENTS" } },
    { "case kept", "show Clients", 0, NULL, 2, { "show", "Clients" } },
    { "switch", "SWITCH pg TO external AFTER 5", 0, NULL, 6,
      { "SWITCH", "pg", "TO", "external", "AFTER", "5" } },
    { "trailing semicolon", "RELOAD;", 0, NULL, 1, { "RELOAD" } },
    { "semicolons everywhere", ";;SHOW ; ROUTES;;", 0, NULL, 2, { "SHOW", "ROUTES" } },
    { "semicolon separates", "SHOW;STATS", 0, NULL, 2, { "SHOW", "STATS" } },
    { "all whitespace kinds", " \t\r\nPAUSE\t\tpg-codeintel\r\n", 0, NULL, 2,
      { "PAUSE", "pg-codeintel" } },
    { "double quotes are bytes", "SWITCH \"pg\" TO builtin", 0, NULL, 4,
      { "SWITCH", "\"pg\"", "TO", "builtin" } },
    { "quotes do not join words", "SWITCH 'a b' TO x", 0, NULL, 5,
      { "SWITCH", "'a", "b'", "TO", "x" } },
    { "quoted semicolon still separates", "PAUSE \"a;b\"", 0, NULL, 3,
      { "PAUSE", "\"a", "b\"" } },
    { "other bytes are word bytes", "SHOW\vx\x80\xff", 0, NULL, 1, { "SHOW\vx\x80\xff" } },
    { "empty", "", 0, NULL, 0, { NULL } },
    { "only separators", " ;\t;\r\n ", 0, NULL, 0, { NULL } },
    { "twelve words", "a b c d e f g h i j k l", 0, NULL, 12,
      { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l" } },
    { "twelve words, trailing separators", "a b c d e f g h i j k l ;; ", 0, NULL, 12,
      { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l" } },
    { "thirteen words", "a b c d e f g h i j k l m", 0, "too many words", 0, { NULL } },
    { "longest word", W127, 0, NULL, 1, { W127 } },
    { "longest word, then more", "x " W127 ";", 0, NULL, 2, { "x", W127 } },
    { "word too long", "SHOW " W127 "a", 0, "word too long", 0, { NULL } },
    { "NUL inside a word", "SHOW CL\0IENTS", 13, "NUL byte in command", 0, { NULL } },
    { "NUL alone", "SHOW \0", 6, "NUL byte in command", 0, { NULL } },
    { "NUL first", "\0", 1, "NUL byte in command", 0, { NULL } },
    { "len stops early", "SHOW CLIENTS", 7, NULL, 2, { "SHOW", "CL" } },
};

static void run_vec(const vec_t *v)
{
    size_t len = v->len ? v->len : strlen(v->in);
    char *buf = malloc(len ? len : 1);
    char *in = buf + (len ? 0 : 1);          /* empty: a pointer one past the buffer */
    memcpy(buf, v->in, len);
    console_tok_t t;
    memset(&t, 0x55, sizeof t);
    int rc = console_tok_split(&t, in, len);
    if (v->err) {
        CHECK_MSG(rc == CONSOLE_TOK_ERR && t.err && strcmp(t.err, v->err) == 0 && t.n == 0,
                  "%s: rc %d err %s", v->name, rc, rc < 0 ? t.err : "(none)");
    } else {
        CHECK_MSG(rc == v->n && t.n == v->n && t.err == NULL, "%s: rc %d, want %d", v->name,
                  rc, v->n);
        for (int i = 0; rc == v->n && i < v->n; i++)
            CHECK_MSG(strcmp(t.word[i], v->w[i]) == 0, "%s: word %d is \"%s\", want \"%s\"",
                      v->name, i, t.word[i], v->w[i]);
    }
    free(buf);
}

/* The state is reset by every call: an error, then a good command, then an error. */
static void test_reuse(void)
{
    console_tok_t t;
    CHECK(console_tok_split(&t, "a b c d e f g h i j k l m", 25) == CONSOLE_TOK_ERR);
    CHECK(console_tok_split(&t, "SHOW HELP", 9) == 2 && t.err == NULL);
    CHECK(strcmp(t.word[1], "HELP") == 0);
    CHECK(console_tok_split(&t, NULL, 0) == 0 && t.n == 0 && t.err == NULL);
}

int main(void)
{
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++)
        run_vec(&vecs[i]);
    test_reuse();
    return unit_done("console_tok");
}
