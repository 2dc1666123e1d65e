/*
 * switch_redis_check.c - a Redis load for switchover tests: N clients each SET and GET keys
 * of their own in a loop, check every reply, and record when each SET was acknowledged, so
 * that the test can tell afterwards which store every acknowledged write must be on.
 *
 *   switch_redis_check HOST PORT CLIENTS SECONDS PREFIX OUTFILE
 *
 * redis_check (the general load) cannot be used across a switch between two independent
 * stores: its INCR counter restarts on the other store. Here every round writes a new key,
 *   SET  PREFIX:<client>:<round> <value of (client, round)>   -> +OK
 *   GET  the same key                                         -> exactly that value, or nil
 * so nothing depends on what the other store held before. The GET may legitimately find
 * nothing: when the switch moves the session between the SET's reply and the GET, the GET
 * runs on the other store, which was never told about the key (the two test stores do not
 * replicate). Such a round is marked in OUTFILE and the test checks that it really is a
 * crossing (the next round's key is on the other store); any other reply is an error. A value's length is
 * lens[(round + client) % 16] (the table in src_value); its bytes are
 * "<client>:<round>:" followed by 'a' + (i * 7 + round) % 26 for each later offset i, so a
 * test can recompute any value.
 *
 * Each client is a thread with its own blocking hiredis connection (hiredis 0.14, RESP2).
 * A client stops at its first error. OUTFILE gets one line per acknowledged SET:
 *   <client> <round> <sent> <acked> <get-found-nil>
 * with wall-clock (CLOCK_REALTIME) seconds, microsecond precision, taken just before the
 * SET was written and just after its +OK was read, then a flag: 1 when the GET that followed
 * found nothing (see above), else 0.
 *
 * Prints "switch_redis_check: clients=N seconds=S rounds=R commands=C crossed=X errors=E" (X: GETs
 * that found nil) and exits 0 when every
 * reply was right, 1 on any error (the first few are printed on stderr), 2 on bad usage.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <hiredis.h>

#define SRC_MAX_VALUE   4097
#define SRC_MAX_REPORTS 10
#define SRC_TIMEOUT_SEC 30

typedef struct src_ack_s {
    double sent, acked;
    int    get_nil;   /* the GET after this SET ran on the other store: nil */
} src_ack_t;

typedef struct src_client_s {
    pthread_t  thread;
    int        index;
    uint64_t   rounds;      /* acknowledged SETs; acks[i] is round i + 1 */
    uint64_t   commands;
    uint64_t   errors;
    src_ack_t *acks;
    size_t     cap;
} src_client_t;

static const char *src_host;
static int         src_port;
static const char *src_prefix;
static double      src_deadline;
static pthread_mutex_t src_report_lock = PTHREAD_MUTEX_INITIALIZER;
static int         src_reports;

static double src_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double src_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void src_report(src_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Count an error on client c and print the first SRC_MAX_REPORTS of the run. */
static void src_report(src_client_t *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    c->errors++;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&src_report_lock);
    if (src_reports++ < SRC_MAX_REPORTS)
        fprintf(stderr, "switch_redis_check: client %d round %llu: %s\n", c->index,
                (unsigned long long)c->rounds + 1, msg);
    pthread_mutex_unlock(&src_report_lock);
}

/* The value of (client, round); see the file comment. */
static size_t src_value(char *buf, int client, uint64_t round)
{
    /* mostly short, so that 50 fast clients do not fill the stores; 4097 straddles buffers */
    static const size_t lens[] = { 1, 7, 100, 1000, 1, 7, 100, 300, 1, 7, 100, 300, 1, 7, 100, 4097 };
    size_t len = lens[(round + (uint64_t)client) % (sizeof(lens) / sizeof(lens[0]))];
    int n = snprintf(buf, SRC_MAX_VALUE + 1, "%d:%llu:", client, (unsigned long long)round);
    for (size_t i = (size_t)n; i < len; i++)
        buf[i] = (char)('a' + (i * 7 + round) % 26);
    return len < (size_t)n ? (size_t)n : len;
}

static const char *src_desc(const redisReply *r, char *buf, size_t len)
{
    if (r == NULL)
        return "no reply";
    switch (r->type) {
    case REDIS_REPLY_STRING:
        snprintf(buf, len, "bulk(%zu) '%.40s'", r->len, r->str);
        break;
    case REDIS_REPLY_STATUS:
        snprintf(buf, len, "status '%.80s'", r->str);
        break;
    case REDIS_REPLY_ERROR:
        snprintf(buf, len, "error '%.200s'", r->str);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(buf, len, "integer %lld", r->integer);
        break;
    case REDIS_REPLY_NIL:
        snprintf(buf, len, "nil");
        break;
    case REDIS_REPLY_ARRAY:
        snprintf(buf, len, "array(%zu)", r->elements);
        break;
    default:
        snprintf(buf, len, "type %d", r->type);
    }
    return buf;
}

static redisReply *src_command(src_client_t *c, redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
    c->commands++;
    if (r == NULL)
        src_report(c, "%s: connection error: %s", argv[0], ctx->errstr[0] ? ctx->errstr : strerror(errno));
    return r;
}

static void *src_client_main(void *arg)
{
    src_client_t *c = arg;
    char value[SRC_MAX_VALUE + 64], key[200], desc[300];
    struct timeval tv = { SRC_TIMEOUT_SEC, 0 };
    redisContext *ctx = redisConnectWithTimeout(src_host, src_port, tv);

    if (ctx == NULL || ctx->err) {
        src_report(c, "connect to %s:%d: %s", src_host, src_port, ctx ? ctx->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(ctx, tv);
    while (c->errors == 0 && src_mono() < src_deadline) {
        uint64_t round = c->rounds + 1;
        size_t vlen = src_value(value, c->index, round);
        snprintf(key, sizeof(key), "%s:%d:%llu", src_prefix, c->index, (unsigned long long)round);
        if (c->rounds == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 1024;
            src_ack_t *a = realloc(c->acks, cap * sizeof(*a));
            if (a == NULL) {
                src_report(c, "out of memory");
                break;
            }
            c->acks = a;
            c->cap = cap;
        }

        const char *sv[] = { "SET", key, value };
        size_t sl[] = { 3, strlen(key), vlen };
        double sent = src_wall();
        redisReply *r = src_command(c, ctx, 3, sv, sl);
        double acked = src_wall();
        if (r == NULL)
            break;
        int ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
        if (!ok)
            src_report(c, "SET %s: %s", key, src_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);
        if (!ok)
            break;
        c->acks[c->rounds] = (src_ack_t){ sent, acked, 0 };

        const char *gv[] = { "GET", key };
        size_t gl[] = { 3, strlen(key) };
        r = src_command(c, ctx, 2, gv, gl);
        c->rounds = round;   /* the SET was acknowledged whatever GET says */
        if (r == NULL)
            break;
        if (r->type == REDIS_REPLY_NIL)
            c->acks[round - 1].get_nil = 1;
        else if (r->type != REDIS_REPLY_STRING || r->len != vlen || memcmp(r->str, value, vlen) != 0)
            src_report(c, "GET %s: expected %zu bytes '%.20s...', got %s", key, vlen, value,
                       src_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);
    }
out:
    if (ctx)
        redisFree(ctx);
    return NULL;
}

static long src_parse_long(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "switch_redis_check: bad %s '%s' (%ld..%ld)\n", what, s, min, max);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: switch_redis_check HOST PORT CLIENTS SECONDS PREFIX OUTFILE\n");
        return 2;
    }
    src_host = argv[1];
    src_port = (int)src_parse_long(argv[2], 1, 65535, "port");
    int nclients = (int)src_parse_long(argv[3], 1, 1000, "clients");
    double seconds = (double)src_parse_long(argv[4], 0, 86400, "seconds");
    src_prefix = argv[5];
    FILE *out = fopen(argv[6], "w");
    if (out == NULL) {
        fprintf(stderr, "switch_redis_check: %s: %s\n", argv[6], strerror(errno));
        return 2;
    }
    src_deadline = src_mono() + seconds;

    src_client_t *clients = calloc((size_t)nclients, sizeof(*clients));
    if (clients == NULL) {
        fprintf(stderr, "switch_redis_check: out of memory\n");
        fclose(out);
        return 1;
    }
    int started = 0;
    uint64_t errors = 0, rounds = 0, commands = 0, crossed = 0;
    for (int i = 0; i < nclients; i++) {
        clients[i].index = i;
        if (pthread_create(&clients[i].thread, NULL, src_client_main, &clients[i]) != 0) {
            fprintf(stderr, "switch_redis_check: cannot start client %d\n", i);
            errors++;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        src_client_t *c = &clients[i];
        pthread_join(c->thread, NULL);
        rounds += c->rounds;
        commands += c->commands;
        errors += c->errors;
        for (uint64_t k = 0; k < c->rounds; k++) {
            crossed += (uint64_t)c->acks[k].get_nil;
            fprintf(out, "%d %llu %.6f %.6f %d\n", c->index, (unsigned long long)k + 1, c->acks[k].sent,
                    c->acks[k].acked, c->acks[k].get_nil);
        }
        free(c->acks);
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "switch_redis_check: writing %s: %s\n", argv[6], strerror(errno));
        errors++;
    }
    printf("switch_redis_check: clients=%d seconds=%.0f rounds=%llu commands=%llu crossed=%llu errors=%llu\n",
           nclients, seconds, (unsigned long long)rounds, (unsigned long long)commands, (unsigned long long)crossed,
           (unsigned long long)errors);
    fflush(stdout);
    free(clients);
    return errors ? 1 : 0;
}
