/*
 * pg_conninfo.c - see pg_conninfo.h. The escaped size is computed first, so the string
 * is either extended whole or left as it was: a word cut short would reach the server as
 * a different setting.
 */
#include "protocol/pg_conninfo.h"

#include <string.h>

/* The bytes pg_split_opts treats as word separators (isspace in the C locale), and the
 * escape itself. */
static int needs_escape(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' || c == '\\';
}

/* Escaped length of s. */
static size_t escaped_len(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += needs_escape(*s) ? 2 : 1;
    return n;
}

static char *put_escaped(char *p, const char *s)
{
    for (; *s; s++) {
        if (needs_escape(*s))
            *p++ = '\\';
        *p++ = *s;
    }
    return p;
}

int pgw_options_add(char *out, size_t cap, const char *name, const char *value)
{
    size_t have = strnlen(out, cap), sep, nl, vl, room;
    char *p;

    if (have == cap || name[0] == '\0' || strchr(name, '=') != NULL)
        return -1;
    sep = have ? 1 : 0;
    nl = escaped_len(name);
    vl = escaped_len(value);
    room = cap - have - 1;                  /* bytes left before the terminator */
    /* sep + "-c " + name + "=" + value, each step checked so no sum can wrap */
    if (room < sep + 4 || nl > room - sep - 4 || vl > room - sep - 4 - nl)
        return -1;
    p = out + have;
    if (sep)
        *p++ = ' ';
    memcpy(p, "-c ", 3);
    p = put_escaped(p + 3, name);
    *p++ = '=';
    p = put_escaped(p, value);
    *p = '\0';
    return 0;
}
