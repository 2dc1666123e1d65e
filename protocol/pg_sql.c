/*
 * pg_sql.c - see pg_sql.h.
 */
#include <ctype.h>
#include <strings.h>
#include <string.h>
#include "protocol/pg_sql.h"

/* What the server's scanner takes for blanks (isspace in the C locale, without a call). */
static inline int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* A byte of an unquoted name: a letter, a digit, '_', '$', or any byte of a multi-byte
 * character. */
static inline int is_ident(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 0x80 || isalnum(u) || c == '_' || c == '$';
}

/* Does a comment ("--" or a slash-star) open at s[i]? */
static inline int comment_at(const char *s, size_t len, size_t i)
{
    return i + 1 < len && ((s[i] == '-' && s[i + 1] == '-') || (s[i] == '/' && s[i + 1] == '*'));
}

/* Skip blanks and comments from i; returns the new index. */
static size_t skip_space(const char *s, size_t len, size_t i)
{
    for (;;) {
        while (i < len && is_blank(s[i]))
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
        if (comment_at(s, len, i)) {
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
    if (end - i < 8 || strncasecmp(s + i, "prepare", 7) != 0 || !is_blank(s[i + 7]))
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
    while (i < end && is_ident(s[i])) {
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
            while (e > i && is_blank(sql[e - 1]))
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
    /* "SELECT <n>", the tag of nearly every transaction, before anything else */
    if (len >= 7 && memcmp(tag, "SELECT ", 7) == 0)
        return 1;
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

/* Can the text start with SET (at most blanks or a comment before it)? A byte test, for
 * the texts of every query, nearly none of which do. */
static int may_start_with_set(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    char c = s[0];
    if (c == '-' || c == '/' || is_blank(c))
        return 1;
    return len >= 3 && (c | 0x20) == 's' && (s[1] | 0x20) == 'e' && (s[2] | 0x20) == 't';
}

/* Does s[i..len) start with the keyword kw (lower case), not followed by more of a name? */
static int keyword_at(const char *s, size_t len, size_t i, const char *kw)
{
    size_t n = 0;
    for (; kw[n] != '\0'; n++)   /* kw is letters: c | 0x20 is a lower-case letter only for that letter */
        if (i + n >= len || (s[i + n] | 0x20) != kw[n])
            return 0;
    return i + n == len || !(isalnum((unsigned char)s[i + n]) || s[i + n] == '_' || s[i + n] == '$');
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

/* A call set_config(name, value, is_local) whose function name ends at s[i]: 1 when its
 * third argument is the literal true, so that it changes the setting for the current
 * transaction only and leaves the session as it was (PostgREST's per-request claims and
 * role, row security's request settings); 0 for any other call of three arguments, a $n
 * parameter or an expression among them; -1 when this is no call of three arguments that
 * can be read. [*name_a, *name_b) is the first argument's text. */
static int set_config_call(const char *s, size_t len, size_t i, size_t *name_a, size_t *name_b)
{
    i = skip_space(s, len, i);
    if (i >= len || s[i] != '(')
        return -1;
    *name_a = i + 1;
    *name_b = len;
    size_t commas = 0, third = 0;
    int depth = 0;
    for (i++; i < len; i++) {
        size_t past = skip_literal(s, len, i);
        if (past > i) {
            i = past - 1;
            continue;
        }
        if (comment_at(s, len, i)) {
            i = skip_space(s, len, i) - 1;
            continue;
        }
        if (s[i] == '(' || s[i] == '[') {
            depth++;
        } else if ((s[i] == ')' || s[i] == ']') && depth > 0) {
            depth--;
        } else if (s[i] == ')') {
            return commas == 2 ? is_true_literal(s, third, i) : -1;
        } else if (s[i] == ',' && depth == 0) {
            if (++commas == 1)
                *name_b = i;
            if (commas == 2)
                third = i + 1;
        } else if (s[i] == ';') {
            return -1;
        }
    }
    return -1;
}

/* SET LOCAL, SET TRANSACTION, SET CONSTRAINTS: at s[i], the word after SET, one of those
 * that last until the transaction's end? */
static int transaction_scope_at(const char *s, size_t len, size_t i)
{
    return keyword_at(s, len, i, "local") || keyword_at(s, len, i, "transaction") || keyword_at(s, len, i, "constraints");
}

/* Is the statement at s[i..end) SET [SESSION] of a name with a dot in it (a custom
 * setting: app.tenant, "app"."tenant")? */
static int sets_dotted_name(const char *s, size_t end, size_t i)
{
    if (!keyword_at(s, end, i, "set"))
        return 0;
    i = skip_space(s, end, i + 3);
    if (keyword_at(s, end, i, "session")) {
        size_t j = skip_space(s, end, i + 7);
        if (keyword_at(s, end, j, "characteristics") || keyword_at(s, end, j, "authorization"))
            return 0;
        i = j;
    }
    if (transaction_scope_at(s, end, i))
        return 0;
    int parts = 0;
    for (; i < end; parts++) {
        size_t past = s[i] == '"' ? skip_literal(s, end, i) : i;
        if (past > i && memchr(s + i, '.', past - i) != NULL)
            return 1;   /* "app.tenant": one quoted name, with its dot */
        while (past < end && is_ident(s[past]))
            past++;
        if (past == i || past >= end || s[past] != '.')
            return parts > 0;
        i = past + 1;
    }
    return parts > 0;   /* a dot with nothing after it ("SET app.", a syntax error): say may */
}

/* Is the statement at s[i] (its SET keyword) SET LOCAL, TRANSACTION or CONSTRAINTS, and
 * the only one of the text (a trailing ';' allowed)? */
static int transaction_set_at(const char *s, size_t len, size_t i)
{
    i = skip_space(s, len, i + 3);
    if (!transaction_scope_at(s, len, i))
        return 0;
    size_t end = statement_end(s, len, i);
    return end == len || skip_space(s, len, end + 1) == len;
}

/* What the set_config call whose function name ends at sql[at] does past its transaction:
 * nothing (is_local the literal true), or it changes a setting, perhaps a custom one (named
 * by a literal with a dot in it, or by anything but a literal: a parameter cannot be told). */
static unsigned set_config_effects(const char *sql, size_t len, size_t at)
{
    size_t a, b;
    int local = set_config_call(sql, len, at, &a, &b);
    if (local == 1)
        return 0;
    if (local < 0)
        return PG_SQL_STATE_FN | PG_SQL_CUSTOM;
    a = skip_space(sql, b, a);
    size_t lit = a < b && sql[a] == '\'' ? skip_literal(sql, b, a) : a;
    if (lit == a || skip_space(sql, b, lit) != b || memchr(sql + a, '.', lit - a) != NULL)
        return PG_SQL_STATE_FN | PG_SQL_CUSTOM;
    return PG_SQL_STATE_FN;
}

/* Does the text name a temporary table's keyword or schema: TEMP, TEMPORARY or pg_temp
 * (pg_temp_3 too), as a word in any case? A table made so has a tag that says nothing:
 * CREATE TEMP TABLE ... AS and SELECT ... INTO TEMP answer "SELECT n", an EXPLAIN ANALYZE
 * of one "EXPLAIN". Looked for around each 'm' (memchr), so a query costs a few compares
 * ("temperature" and "attempt" are not words of it). */
static int names_temp(const char *s, size_t len)
{
    const char *end = s + len;
    for (int k = 0; k < 2; k++) {
        for (const char *p = s; (p = memchr(p, k ? 'M' : 'm', (size_t)(end - p))) != NULL; p++) {
            size_t w = (size_t)(p - s) - 2;   /* where "temp" would begin */
            if (p - s < 2 || end - p < 2 || (s[w] | 0x20) != 't' || (s[w + 1] | 0x20) != 'e' || (p[1] | 0x20) != 'p')
                continue;   /* "temp" in any case: the letters' 0x20 bit, and no other byte has them so */
            size_t q = w + 4;   /* past "temp" */
            if (w >= 3 && strncasecmp(s + w - 3, "pg_", 3) == 0 && (w == 3 || !is_ident(s[w - 4]))) {
                if (q == len || !is_ident(s[q]) || s[q] == '_')
                    return 1;   /* pg_temp, pg_temp_3 */
                continue;
            }
            if ((w == 0 || !is_ident(s[w - 1])) &&
                (q == len || !is_ident(s[q]) ||
                 (len - q >= 5 && strncasecmp(s + q, "orary", 5) == 0 && (q + 5 == len || !is_ident(s[q + 5])))))
                return 1;
        }
    }
    return 0;
}

/*
 * One pass for every query while its session is watched: a byte test for a leading SET
 * (nearly no query has one), a memchr for a second statement, and memchr over the
 * underscores, of which only those followed by the 'l' of advisory_lock or the 'c' of
 * set_config are compared (a table name such as pgbench_accounts costs a byte test).
 */
unsigned pg_sql_query_effects(const char *sql, size_t len)
{
    unsigned fx = 0;
    /* SET statements: the first one (its name ends before any ';', so the text's end bounds
     * it), and the others when there is a ';' with more than blanks after it */
    int first = may_start_with_set(sql, len);
    size_t i = first ? skip_space(sql, len, 0) : 0;
    if (first && keyword_at(sql, len, i, "set")) {
        if (sets_dotted_name(sql, len, i))
            fx |= PG_SQL_CUSTOM;
        else if (transaction_set_at(sql, len, i))
            fx |= PG_SQL_TXN_SET;
    }
    const char *semi = memchr(sql, ';', len);
    if (semi != NULL && semi + 1 < sql + len && !(fx & PG_SQL_CUSTOM) &&
        skip_space(sql, len, (size_t)(semi - sql) + 1) < len) {
        while (i < len) {
            size_t end = statement_end(sql, len, i);
            if (sets_dotted_name(sql, end, i)) {
                fx |= PG_SQL_CUSTOM;
                break;
            }
            i = skip_space(sql, len, end + 1);
        }
    }
    const char *p = sql, *end = sql + len;
    while (len > 0 && (fx & (PG_SQL_STATE_FN | PG_SQL_CUSTOM)) != (PG_SQL_STATE_FN | PG_SQL_CUSTOM) &&
           (p = memchr(p, '_', (size_t)(end - p))) != NULL) {
        size_t before = (size_t)(p - sql), after = (size_t)(end - p);
        int next = after >= 2 ? p[1] | 0x20 : 0;   /* lower case, for letters */
        if (next == 'l' && before >= 8 && after >= 5 && strncasecmp(p - 8, "advisory_lock", 13) == 0)
            fx |= PG_SQL_STATE_FN;
        else if (next == 'c' && before >= 3 && after >= 7 && strncasecmp(p - 3, "set_config", 10) == 0)
            fx |= set_config_effects(sql, len, before + 7);
        p++;
    }
    if (!(fx & PG_SQL_STATE_FN) && names_temp(sql, len))
        fx |= PG_SQL_STATE_FN;
    return fx;
}
