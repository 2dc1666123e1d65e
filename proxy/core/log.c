/*
 * log.c - one line per event on stderr: logfmt by default, JSON with log_format = json.
 *
 * Callers format logfmt pairs ("event=connect conn=7 route=pg"); values with spaces are
 * quoted with sy_logq. The JSON form is derived from the same pairs, so both formats
 * always carry the same fields. Secrets are never passed in: targets are logged by
 * their masked display or host:port only.
 *
 * Flood control: each event name (the value of "event=", "" for a line without one) may
 * write at most LOG_RATE lines per one-second window; later lines of that window are only
 * counted. The first line of that name in a later window (or any line once that window
 * is over) first writes
 *
 *     event=log_suppressed event_name=cancel_ignored suppressed=3051 seconds=1
 *
 * so a client that makes switchyard log on purpose (bogus CancelRequests, clients at the
 * fd limit) costs a few lines a second, and the count still says how much it tried.
 * The table of names is small and fixed (LOG_SLOTS; names past it share one slot) and
 * guarded by one mutex: workers log concurrently, and a line takes far longer to write
 * than the lookup does.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include "proxy/core/sy.h"

#define LOG_RATE      50        /* lines per event name per window */
#define LOG_SLOTS     128       /* distinct event names tracked (49 exist today) */
#define LOG_NAME_MAX  48

typedef struct log_kind_s {
    char     name[LOG_NAME_MAX];
    int64_t  window;            /* the second the counts belong to */
    int64_t  first_dropped;     /* window of the first suppressed line */
    unsigned lines;             /* written in window */
    unsigned suppressed;        /* dropped since the last log_suppressed line */
} log_kind_t;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static log_kind_t log_kinds[LOG_SLOTS];
static size_t log_nkinds;

/* A pending "suppressed" report, taken out of the table under the mutex. */
typedef struct log_report_s {
    char     name[LOG_NAME_MAX];
    unsigned suppressed;
    int64_t  seconds;
} log_report_t;

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

/* The event name of msg ("event=NAME ..."), cut to fit, into out. */
static void event_name(const char *msg, char *out)
{
    const char *e = strstr(msg, "event=");
    size_t n = 0;
    if (e && (e == msg || e[-1] == ' ')) {
        e += 6;
        while (e[n] && e[n] != ' ' && n + 1 < LOG_NAME_MAX)
            n++;
        memcpy(out, e, n);
    }
    out[n] = '\0';
}

static log_kind_t *kind_slot(const char *name)
{
    for (size_t i = 0; i < log_nkinds; i++)
        if (strcmp(log_kinds[i].name, name) == 0)
            return &log_kinds[i];
    if (log_nkinds == LOG_SLOTS)
        return &log_kinds[LOG_SLOTS - 1];          /* overflow: share the last slot */
    log_kind_t *k = &log_kinds[log_nkinds++];
    snprintf(k->name, sizeof k->name, "%s", name);
    k->window = -1;
    return k;
}

/*
 * Account one line of msg at second now. Returns whether to write it; fills rep[] with
 * the suppressed counts whose windows are over (the line's own kind first) and sets *nrep.
 */
static int log_admit(const char *msg, int64_t now, log_report_t *rep, size_t cap, size_t *nrep)
{
    char name[LOG_NAME_MAX];
    int write;

    event_name(msg, name);
    *nrep = 0;
    pthread_mutex_lock(&log_mu);
    log_kind_t *k = kind_slot(name);
    if (k->window != now) {
        k->window = now;
        k->lines = 0;
    }
    write = k->lines < LOG_RATE;
    if (write)
        k->lines++;
    else if (k->suppressed++ == 0)
        k->first_dropped = now;
    /* report every count whose window is over; this line's kind first */
    for (size_t pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < log_nkinds && *nrep < cap; i++) {
            log_kind_t *q = &log_kinds[i];
            if ((pass == 0) != (q == k) || q->suppressed == 0 || q->first_dropped == now)
                continue;
            size_t nl = strnlen(q->name, sizeof rep[*nrep].name - 1);
            memcpy(rep[*nrep].name, q->name, nl);
            rep[*nrep].name[nl] = '\0';
            rep[*nrep].suppressed = q->suppressed;
            rep[*nrep].seconds = now - q->first_dropped;
            (*nrep)++;
            q->suppressed = 0;
        }
    pthread_mutex_unlock(&log_mu);
    return write;
}

static void log_write(int level, const char *msg);

void sy_log(int level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec now;
    log_report_t rep[4];
    size_t nrep;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    int write = log_admit(msg, (int64_t)now.tv_sec, rep, 4, &nrep);
    for (size_t i = 0; i < nrep; i++) {
        char line[320];
        snprintf(line, sizeof line, "event=log_suppressed event_name=%.64s suppressed=%u seconds=%lld",
                 rep[i].name[0] ? rep[i].name : "-", rep[i].suppressed,
                 (long long)(rep[i].seconds > 0 ? rep[i].seconds : 1));
        log_write(SY_LOG_WARN, line);
    }
    if (write)
        log_write(level, msg);
}

/* One line, as it is: timestamp, level, then msg's pairs (or their JSON). */
static void log_write(int level, const char *msg)
{
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
