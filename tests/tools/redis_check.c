/*
 * redis_check.c - a Redis correctness load: N clients each SET and GET their own keys in a
 * loop for a number of seconds and check every reply.
 *
 *   redis_check HOST PORT CLIENTS SECONDS [PASSWORD]
 *
 * Each client is a thread with its own blocking hiredis connection (hiredis 0.14: RESP2
 * only, which is all this needs). Per round a client:
 *   SET  rc:<run>:<client>:<slot> <value of the round>   -> +OK
 *   GET  the same key                                   -> exactly that value
 *   INCR rc:<run>:<client>:n                            -> exactly the round number
 * so a lost, repeated, reordered or crossed reply shows up at once. Values vary in length
 * (1 byte to 16 kB) so that replies straddle buffer boundaries.
 *
 * Prints one line "redis_check: clients=N seconds=S rounds=R commands=C errors=E" and exits
 * 0 when every reply was right, 1 on any error (the first few are printed on stderr with
 * the client and round), 2 on bad usage. Used by the Redis integration and switchover tests.
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
#include <unistd.h>
#include <hiredis.h>

#define RC_SLOTS        16
#define RC_MAX_VALUE    (16 * 1024)
#define RC_MAX_REPORTS  10
#define RC_TIMEOUT_SEC  15

typedef struct rc_client_s {
    pthread_t  thread;
    int        index;
    uint64_t   rounds;
    uint64_t   commands;
    uint64_t   errors;
} rc_client_t;

static const char *rc_host;
static int         rc_port;
static const char *rc_password;
static double      rc_deadline;
static char        rc_run[64];
static pthread_mutex_t rc_report_lock = PTHREAD_MUTEX_INITIALIZER;
static int         rc_reports;

static double rc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void rc_report(rc_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Count an error on client c and print the first RC_MAX_REPORTS of the whole run. */
static void rc_report(rc_client_t *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    c->errors++;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&rc_report_lock);
    if (rc_reports++ < RC_MAX_REPORTS)
        fprintf(stderr, "redis_check: client %d round %llu: %s\n", c->index, (unsigned long long)c->rounds, msg);
    pthread_mutex_unlock(&rc_report_lock);
}

/* The value of a round: its length and bytes follow from (client, round) alone. */
static size_t rc_value(char *buf, int client, uint64_t round)
{
    static const size_t lens[] = { 1, 7, 100, 1000, 4095, 4096, 4097, 16384 };
    size_t len = lens[(round + (uint64_t)client) % (sizeof(lens) / sizeof(lens[0]))];
    int n = snprintf(buf, RC_MAX_VALUE, "%d:%llu:", client, (unsigned long long)round);
    for (size_t i = (size_t)n; i < len; i++)
        buf[i] = (char)('a' + (i * 7 + round) % 26);
    return len < (size_t)n ? (size_t)n : len;
}

static const char *rc_reply_desc(const redisReply *r, char *buf, size_t len)
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

/* One command; returns its reply or NULL after reporting a connection error. */
static redisReply *rc_command(rc_client_t *c, redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
    c->commands++;
    if (r == NULL)
        rc_report(c, "%s: connection error: %s", argv[0], ctx->errstr[0] ? ctx->errstr : strerror(errno));
    return r;
}

static void *rc_client_main(void *arg)
{
    rc_client_t *c = arg;
    char *value = malloc(RC_MAX_VALUE + 64);
    char key[160], counter[160], desc[300];
    struct timeval tv = { RC_TIMEOUT_SEC, 0 };
    redisContext *ctx = redisConnectWithTimeout(rc_host, rc_port, tv);

    if (value == NULL) {
        rc_report(c, "out of memory");
        goto out;
    }
    if (ctx == NULL || ctx->err) {
        rc_report(c, "connect to %s:%d: %s", rc_host, rc_port, ctx ? ctx->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(ctx, tv);
    if (rc_password != NULL) {
        const char *av[] = { "AUTH", rc_password };
        size_t al[] = { 4, strlen(rc_password) };
        redisReply *r = rc_command(c, ctx, 2, av, al);
        if (r == NULL)
            goto out;
        if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0)
            rc_report(c, "AUTH: %s", rc_reply_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);
        if (c->errors)
            goto out;
    }
    snprintf(counter, sizeof(counter), "rc:%s:%d:n", rc_run, c->index);
    {
        const char *av[] = { "DEL", counter };
        size_t al[] = { 3, strlen(counter) };
        redisReply *r = rc_command(c, ctx, 2, av, al);
        if (r == NULL)
            goto out;
        if (r->type != REDIS_REPLY_INTEGER)
            rc_report(c, "DEL: %s", rc_reply_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);
    }
    while (c->errors == 0 && rc_now() < rc_deadline) {
        uint64_t round = c->rounds + 1;
        size_t vlen = rc_value(value, c->index, round);
        snprintf(key, sizeof(key), "rc:%s:%d:%llu", rc_run, c->index, (unsigned long long)(round % RC_SLOTS));

        const char *sv[] = { "SET", key, value };
        size_t sl[] = { 3, strlen(key), vlen };
        redisReply *r = rc_command(c, ctx, 3, sv, sl);
        if (r == NULL)
            break;
        if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0)
            rc_report(c, "SET %s: %s", key, rc_reply_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);

        const char *gv[] = { "GET", key };
        size_t gl[] = { 3, strlen(key) };
        r = rc_command(c, ctx, 2, gv, gl);
        if (r == NULL)
            break;
        if (r->type != REDIS_REPLY_STRING || r->len != vlen || memcmp(r->str, value, vlen) != 0)
            rc_report(c, "GET %s: expected %zu bytes '%.20s...', got %s", key, vlen, value,
                      rc_reply_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);

        const char *iv[] = { "INCR", counter };
        size_t il[] = { 4, strlen(counter) };
        r = rc_command(c, ctx, 2, iv, il);
        if (r == NULL)
            break;
        if (r->type != REDIS_REPLY_INTEGER || r->integer != (long long)round)
            rc_report(c, "INCR %s: expected %llu, got %s", counter, (unsigned long long)round,
                      rc_reply_desc(r, desc, sizeof(desc)));
        freeReplyObject(r);
        c->rounds = round;
    }
out:
    if (ctx)
        redisFree(ctx);
    free(value);
    return NULL;
}

static long rc_parse_long(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "redis_check: bad %s '%s' (%ld..%ld)\n", what, s, min, max);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: redis_check HOST PORT CLIENTS SECONDS [PASSWORD]\n");
        return 2;
    }
    rc_host = argv[1];
    rc_port = (int)rc_parse_long(argv[2], 1, 65535, "port");
    int nclients = (int)rc_parse_long(argv[3], 1, 1000, "clients");
    double seconds = (double)rc_parse_long(argv[4], 0, 86400, "seconds");
    rc_password = argc == 6 ? argv[5] : NULL;

    struct timeval now;
    gettimeofday(&now, NULL);
    snprintf(rc_run, sizeof(rc_run), "%d.%ld.%06ld", (int)getpid(), (long)now.tv_sec, (long)now.tv_usec);
    rc_deadline = rc_now() + seconds;

    rc_client_t *clients = calloc((size_t)nclients, sizeof(*clients));
    if (clients == NULL) {
        fprintf(stderr, "redis_check: out of memory\n");
        return 1;
    }
    int started = 0;
    uint64_t errors = 0;
    for (int i = 0; i < nclients; i++) {
        clients[i].index = i;
        if (pthread_create(&clients[i].thread, NULL, rc_client_main, &clients[i]) != 0) {
            fprintf(stderr, "redis_check: cannot start client %d\n", i);
            errors++;
            break;
        }
        started++;
    }
    uint64_t rounds = 0, commands = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(clients[i].thread, NULL);
        rounds += clients[i].rounds;
        commands += clients[i].commands;
        errors += clients[i].errors;
    }
    printf("redis_check: clients=%d seconds=%.0f rounds=%llu commands=%llu errors=%llu\n", nclients, seconds,
           (unsigned long long)rounds, (unsigned long long)commands, (unsigned long long)errors);
    fflush(stdout);
    free(clients);
    return errors ? 1 : 0;
}
