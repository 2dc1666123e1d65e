/*
 * console_tok.c - the admin console's command tokenizer (rules in console_tok.h).
 *
 * One pass over the bytes, left to right; the first problem met is the one reported:
 *
 *     separator* ( word separator+ )* word? separator*
 *     separator = ' ' | '\t' | '\r' | '\n' | ';'        NUL anywhere: error
 *
 * Words are copied into the caller's struct as they are read, each checked against
 * CONSOLE_TOK_WORD_MAX before its byte is stored, and the count against CONSOLE_TOK_MAX
 * before a word is started.
 */
#include "protocol/console_tok.h"

static int is_sep(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';';
}

static int fail(console_tok_t *t, const char *msg)
{
    t->n = 0;
    t->err = msg;
    return CONSOLE_TOK_ERR;
}

int console_tok_split(console_tok_t *t, const char *text, size_t len)
{
    size_t i = 0;

    t->n = 0;
    t->err = NULL;
    for (;;) {
        while (i < len && is_sep(text[i]))
            i++;
        if (i == len)
            return t->n;
        if (t->n == CONSOLE_TOK_MAX)
            return fail(t, "too many words");
        char *w = t->word[t->n];
        size_t k = 0;
        for (; i < len && !is_sep(text[i]); i++) {
            if (text[i] == '\0')
                return fail(t, "NUL byte in command");
            if (k == CONSOLE_TOK_WORD_MAX)
                return fail(t, "word too long");
            w[k++] = text[i];
        }
        w[k] = '\0';
        t->n++;
    }
}
