/*
 * log.c - one line per event on stderr: logfmt by default, JSON with log_format = json.
 *
 * Callers format logfmt pairs ("event=connect conn=7 route=pg"); values with spaces are
 * quoted with sy_logq. The JSON form is derived from the same pairs, so both formats
 * always carry the same fields. Secrets are never passed in: targets are logged by
 * their masked display or host:port only.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include "proxy/core/sy.h"

int sy_log_level = SY_LOG_INFO;
int sy_log_json = 0;

static const char *level_name[] = { "error", "warn", "info", "debug" };

const char *sy_logq(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    int need = (s == NULL || s[0] == '\0');
    for (const char *p = s; p && *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20)
            need = 1;
    if (!need) {
        snprintf(out, cap, "%s", s);
        return out;
    }
    if (cap < 3) {
        if (cap) out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (const char *p = s; p && *p && o + 3 < cap; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* Convert "k=v k2=\"a b\"" pairs to JSON members. */
static void pairs_to_json(const char *in, FILE *f)
{
    const char *p = in;
    int first = 1;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        fprintf(f, "%s\"%.*s\":\"", first ? "" : ",", (int)(p - k), k);
        first = 0;
        if (*p == '=') {
            p++;
            if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1]) {
                        fputc('\\', f);
                        fputc(p[1], f);
                        p += 2;
                        continue;
                    }
                    fputc(*p++, f);
                }
                if (*p == '"')
                    p++;
            } else {
                while (*p && *p != ' ')
                    fputc(*p++, f);
            }
        }
        fputc('"', f);
    }
}

void sy_log(int level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    if (level < 0 || level > 3)
        level = SY_LOG_INFO;
    if (sy_log_json) {
        flockfile(stderr);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",", ts, level_name[level]);
        pairs_to_json(msg, stderr);
        fputs("}\n", stderr);
        funlockfile(stderr);
    } else {
        fprintf(stderr, "ts=%s level=%s %s\n", ts, level_name[level], msg);   /* one call: one line */
    }
}
