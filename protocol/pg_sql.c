/*
 * pg_sql.c - see pg_sql.h.
 */
#include <ctype.h>
#include <strings.h>
#include <string.h>
#include "protocol/pg_sql.h"

/* Skip blanks and comments from i; returns the new index. */
static size_t skip_space(const char *s, size_t len, size_t i)
{
    for (;;) {
        while (i < len && isspace((unsigned char)s[i]))
            i++;
        if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
            continue;
        }
        if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
            int depth = 0;
            while (i < len) {
                if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (i + 1 < len && s[i] == '*' && s[i + 1] == '/') {
                    i += 2;
                    if (--depth == 0)
                        break;
                } else {
                    i++;
                }
            }
            continue;
        }
        return i;
    }
}

/* If s[i] opens a literal or a quoted name ('...', E'...', "...", $tag$...$tag$), the
 * index just past it (len when it is not closed); otherwise i itself. */
static size_t skip_literal(const char *s, size_t len, size_t i)
{
    char c = s[i];
    if (c == '\'') {
        /* E'...' allows backslash escapes; '' is a quote in both kinds. */
        int esc = i > 0 && (s[i - 1] == 'E' || s[i - 1] == 'e') &&
                  (i < 2 || !(isalnum((unsigned char)s[i - 2]) || s[i - 2] == '_'));
        for (i++; i < len; i++) {
            if (esc && s[i] == '\\' && i + 1 < len) {
                i++;
            } else if (s[i] == '\'') {
                if (i + 1 < len && s[i + 1] == '\'')
                    i++;
                else
                    break;
            }
        }
        return i < len ? i + 1 : len;
    }
    if (c == '"') {
        for (i++; i < len; i++) {
            if (s[i] == '"') {
                if (i + 1 < len && s[i + 1] == '"')
                    i++;
                else
                    break;
            }
        }
        return i < len ? i + 1 : len;
    }
    if (c == '$' && (i == 0 || !(isalnum((unsigned char)s[i - 1]) || s[i - 1] == '_'))) {
        /* $tag$ ... $tag$ (tag may be empty; a $1 parameter is not a dollar quote) */
        size_t t = i + 1;
        while (t < len && (isalpha((unsigned char)s[t]) || s[t] == '_' || (t > i + 1 && isdigit((unsigned char)s[t]))))
            t++;
        if (t < len && s[t] == '$') {
            size_t taglen = t - i + 1;
            size_t j = t + 1;
            while (j + taglen <= len && memcmp(s + j, s + i, taglen) != 0)
                j++;
            return j + taglen <= len ? j + taglen : len;
        }
    }
    return i;
}

/* Index just past the statement starting at i (at its ';' or at len). */
static size_t statement_end(const char *s, size_t len, size_t i)
{
    while (i < len) {
        char c = s[i];
        if (c == ';')
            return i;
        if ((c == '-' && i + 1 < len && s[i + 1] == '-') || (c == '/' && i + 1 < len && s[i + 1] == '*')) {
            i = skip_space(s, len, i);
            continue;
        }
        size_t past = skip_literal(s, len, i);
        i = past > i ? past : i + 1;
    }
    return len;
}

/* Does the statement at s[i..end) read PREPARE <name>? */
static int is_prepare_of(const char *s, size_t i, size_t end, const char *name)
{
    if (end - i < 8 || strncasecmp(s + i, "prepare", 7) != 0 || !isspace((unsigned char)s[i + 7]))
        return 0;
    i = skip_space(s, end, i + 7);
    size_t nlen = strlen(name), k = 0;
    if (i < end && s[i] == '"') {
        for (i++; i < end; i++) {
            if (s[i] == '"') {
                if (i + 1 < end && s[i + 1] == '"')
                    i++;
                else
                    break;
            }
            if (k >= nlen || name[k++] != s[i])
                return 0;
        }
        return i < end && k == nlen;
    }
    while (i < end && (isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '$' || (unsigned char)s[i] >= 0x80)) {
        char c = (char)tolower((unsigned char)s[i]);
        if (k >= nlen || name[k++] != c)
            return 0;
        i++;
    }
    return k == nlen && k > 0;
}

int pg_sql_find_prepare(const char *sql, size_t len, const char *name, size_t *start, size_t *stmt_len)
{
    size_t i = 0;
    while (i < len) {
        i = skip_space(sql, len, i);
        if (i >= len)
            break;
        size_t end = statement_end(sql, len, i);
        if (is_prepare_of(sql, i, end, name)) {
            size_t e = end;
            while (e > i && isspace((unsigned char)sql[e - 1]))
                e--;
            *start = i;
            *stmt_len = e - i;
            return 0;
        }
        i = end + 1;
    }
    return -1;
}

int pg_sql_tag_keeps_state(const char *tag, size_t len)
{
    /* By length, then by name: a tag costs a few byte compares. */
#define W(x) { x, sizeof x - 1 }
    static const struct { const char *w; size_t n; } clean[] = {
        W("SELECT"), W("INSERT"), W("UPDATE"), W("DELETE"), W("COMMIT"), W("BEGIN"), W("MERGE"),
        W("START"), W("ROLLBACK"), W("SAVEPOINT"), W("RELEASE"), W("COPY"), W("FETCH"), W("MOVE"),
        W("SHOW"), W("EXPLAIN"), W("TRUNCATE"), W("NOTIFY"), W("VACUUM"), W("ANALYZE"), W("LOCK"),
    };
#undef W
    size_t wl = 0;
    while (wl < len && wl < 10 && tag[wl] != ' ' && tag[wl] != '\0')
        wl++;
    /* The tags of nearly every transaction, compared inline (a constant-length memcmp is
     * a load or two, not a call): this runs on every CommandComplete while reconnect_window
     * is on. */
    if (wl == 6 && (memcmp(tag, "SELECT", 6) == 0 || memcmp(tag, "INSERT", 6) == 0 ||
                    memcmp(tag, "UPDATE", 6) == 0 || memcmp(tag, "DELETE", 6) == 0 || memcmp(tag, "COMMIT", 6) == 0))
        return 1;
    for (size_t i = 0; i < sizeof clean / sizeof clean[0]; i++)
        if (clean[i].n == wl && memcmp(clean[i].w, tag, wl) == 0)
            return 1;
    return 0;
}

/* Is [a, b) (blanks and comments around it allowed) the literal true: true, or 'true',
 * 't', 'on', 'yes', '1' (how Postgres reads a boolean), in any case? */
static int is_true_literal(const char *s, size_t a, size_t b)
{
    static const char *const words[] = { "true", "'true'", "'t'", "'on'", "'yes'", "'1'" };
    a = skip_space(s, b, a);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (n <= b - a && strncasecmp(s + a, words[i], n) == 0 && skip_space(s, b, a + n) == b)
            return 1;
    }
    return 0;
}

/* A call set_config(name, value, is_local) whose name ends at s[i]: 1 when its third
 * argument is the literal true, so that it changes the setting for the current transaction
 * only and leaves the session as it was (PostgREST's per-request claims and role, row
 * security's request settings). Anything else, a $n parameter or an expression among them,
 * counts as a change. */
static int set_config_is_local(const char *s, size_t len, size_t i)
{
    i = skip_space(s, len, i);
    if (i >= len || s[i] != '(')
        return 0;
    size_t commas = 0, third = 0;
    int depth = 0;
    for (i++; i < len; i++) {
        size_t past = skip_literal(s, len, i);
        if (past > i) {
            i = past - 1;
            continue;
        }
        if ((s[i] == '-' && i + 1 < len && s[i + 1] == '-') || (s[i] == '/' && i + 1 < len && s[i + 1] == '*')) {
            i = skip_space(s, len, i) - 1;
            continue;
        }
        if (s[i] == '(' || s[i] == '[') {
            depth++;
        } else if ((s[i] == ')' || s[i] == ']') && depth > 0) {
            depth--;
        } else if (s[i] == ')') {
            return commas == 2 && is_true_literal(s, third, i);
        } else if (s[i] == ',' && depth == 0 && ++commas == 2) {
            third = i + 1;
        } else if (s[i] == ';') {
            return 0;
        }
    }
    return 0;
}

/* Only the underscores of the text are candidates, found with memchr, and only those
 * followed by the 'l' of advisory_lock or the 'c' of set_config are compared: a query
 * without one costs one memchr, and a table name such as pgbench_accounts a byte test
 * (this runs on every simple query while reconnect_window is on). */
int pg_sql_calls_state_functions(const char *sql, size_t len)
{
    const char *p = sql, *end = sql + len;
    if (len == 0)
        return 0;
    while ((p = memchr(p, '_', (size_t)(end - p))) != NULL) {
        size_t before = (size_t)(p - sql), after = (size_t)(end - p);
        int next = after >= 2 ? p[1] | 0x20 : 0;   /* lower case, for letters */
        if ((next == 'l' && before >= 8 && after >= 5 && strncasecmp(p - 8, "advisory_lock", 13) == 0) ||
            (next == 'c' && before >= 3 && after >= 7 && strncasecmp(p - 3, "set_config", 10) == 0 &&
             !set_config_is_local(sql, len, before + 7)))
            return 1;
        p++;
    }
    return 0;
}
