/*
 * console_tok.h - the admin console's command tokenizer: the text of one simple Query
 * ("SWITCH pg TO external GRADUAL;", "show clients") into its words, for
 * proxy/control/admin.c to match against its commands.
 *
 * Pure: (state, bytes, len) -> word count | error. The caller owns the state, a fixed
 * struct with room for CONSOLE_TOK_MAX words of CONSOLE_TOK_WORD_MAX bytes each; nothing
 * is allocated and nothing of the input is kept. The input is a byte range, not a C
 * string: a NUL byte inside it is an error, never the end.
 *
 * The rules, the same the console has always had:
 *   - words are separated by runs of space, tab, CR, LF and ';' (so a trailing ";", a
 *     ";;" and "SHOW;CLIENTS" all just separate words);
 *   - quotes are not special: "pg" is a word of four bytes, with its quotes (route names
 *     are letters, digits, '_' and '-', which need none);
 *   - case is kept: commands and keywords are matched case-insensitively by the caller,
 *     route names case-sensitively;
 *   - input with no word at all (empty, only separators) gives 0: an empty query.
 * Every length is checked: more than CONSOLE_TOK_MAX words, or one word longer than
 * CONSOLE_TOK_WORD_MAX bytes, is an error, never a truncation.
 */
#ifndef SY_CONSOLE_TOK_H
#define SY_CONSOLE_TOK_H

#include <stddef.h>

#define CONSOLE_TOK_MAX       12    /* words in one command (SWITCH r TO t AFTER CATCHUP
                                     * TIMEOUT s PROMOTE FORCE: 10) */
#define CONSOLE_TOK_WORD_MAX  127   /* bytes in one word, without its NUL */

#define CONSOLE_TOK_ERR       (-1)

typedef struct console_tok_s {
    int         n;                                          /* words found */
    char        word[CONSOLE_TOK_MAX][CONSOLE_TOK_WORD_MAX + 1];    /* NUL-terminated */
    const char *err;        /* static message after CONSOLE_TOK_ERR, else NULL */
} console_tok_t;

/*
 * Split text[0..len) into t->word[0..n). Returns n (0..CONSOLE_TOK_MAX), or
 * CONSOLE_TOK_ERR with t->err one of "too many words", "word too long", "NUL byte in
 * command"; after an error t->n is 0. text may be NULL when len is 0.
 */
int console_tok_split(console_tok_t *t, const char *text, size_t len);

#endif /* SY_CONSOLE_TOK_H */
