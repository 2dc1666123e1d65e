/*
 * catchup.c - SWITCH ... AFTER CATCHUP: how far the new target is behind the old one, and
 * the wait until it is not. switchover.c runs this once every session of the route is
 * held at a boundary (the old target is quiet: nothing more is written to it through
 * switchyard), and moves the sessions only when it succeeded.
 *
 * One job on libuv's thread pool per switch, over control connections of its own (never a
 * client's upstream), so no worker loop and not the main loop waits for a database:
 *
 *   1. connect to both targets (libpq as SWITCH's precheck does; Redis: sy_redis_dial);
 *   2. read the old target's position: Postgres pg_current_wal_lsn(), Redis INFO
 *      replication master_repl_offset;
 *   3. find how the new target follows the old, and poll every 10 ms until it has applied
 *      that position:
 *        standby       pg_is_in_recovery() on the new: pg_last_wal_replay_lsn() there
 *        subscription  else a subscription in the new's database whose slot is on the old:
 *                      that slot's confirmed_flush_lsn, on the old (what the subscriber has
 *                      applied and flushed; the furthest behind when there are several)
 *        replica       Redis: INFO replication on the new: role slave, master_link_status
 *                      up and slave_repl_offset
 *   4. PROMOTE: pg_promote() and wait until pg_is_in_recovery() is false; Redis REPLICAOF
 *      NO ONE and wait for role:master. A subscriber has nothing to promote (reported).
 *
 * The job stops at its deadline (the switch's TIMEOUT) with how far behind the new target
 * was; switchover.c keeps a timer of its own a little longer, and abandons the job if a
 * control connection hangs past it (the job then frees itself when it returns).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <libpq-fe.h>
#include <hiredis/hiredis.h>
#include "proxy/control/catchup.h"
#include "proxy/control/admin.h"
#include "proxy/redis/redis_dial.h"
#include "protocol/resp_cmd.h"

#define CU_POLL_US 10000

struct sy_catchup_job_s {
    uv_work_t           req;
    const conf_route_t *rc;          /* the snapshot when queued: RELOAD keeps it alive */
    conf_which_t        from, to;
    sy_catchup_opts_t   o;
    uint64_t            started_ns, deadline_ns;   /* uv_hrtime() */
    int                 abandoned;   /* atomic: the switch no longer waits for the answer */
    sy_catchup_result_t res;
    sy_catchup_job_cb   cb;
    void               *arg;
};

static const char *cu_name(conf_which_t w)
{
    return w == CONF_EXTERNAL ? "external" : "builtin";
}

static const conf_target_t *cu_target(const sy_catchup_job_t *j, conf_which_t w)
{
    return w == CONF_EXTERNAL ? &j->rc->external : &j->rc->builtin;
}

/* Time is up for the job: its deadline passed or the switch gave up. */
static int cu_expired(const sy_catchup_job_t *j)
{
    return uv_hrtime() >= j->deadline_ns || __atomic_load_n(&j->abandoned, __ATOMIC_ACQUIRE);
}

static int cu_secs_left(const sy_catchup_job_t *j)
{
    uint64_t now = uv_hrtime();
    return now >= j->deadline_ns ? 1 : (int)((j->deadline_ns - now) / 1000000000u) + 1;
}

static void cu_timed_out(sy_catchup_job_t *j, const char *unit)
{
    char behind[64];
    if (j->res.behind >= 0)
        snprintf(behind, sizeof(behind), "%lld %s behind", (long long)j->res.behind, unit);
    else
        snprintf(behind, sizeof(behind), "how far behind is unknown");
    snprintf(j->res.err, sizeof(j->res.err), "%s (%s) did not catch up within %d s: %s %s's position %s",
             cu_name(j->to), j->res.how, j->o.timeout_s, behind, cu_name(j->from), j->res.position);
}

/* ---- Postgres ----------------------------------------------------------------------- */

static PGconn *cu_pg_open(sy_catchup_job_t *j, conf_which_t which)
{
    const conf_target_t *t = cu_target(j, which);
    PGconn *c = sy_target_pg_connect(j->rc, t, j->o.user);
    if (PQstatus(c) == CONNECTION_OK)
        return c;
    snprintf(j->res.err, sizeof(j->res.err), "cannot connect to %s (%s): %s", cu_name(which), t->hostport,
             PQerrorMessage(c));
    sy_one_line(j->res.err);
    PQfinish(c);
    return NULL;
}

/* The first value of a one-row query into out (*isnull set). Returns 0, or -1 with err. */
static int cu_pg_value(sy_catchup_job_t *j, PGconn *c, const char *sql, int np, const char *const *p,
                       char *out, size_t outlen, int *isnull)
{
    PGresult *r = PQexecParams(c, sql, np, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) >= 1;
    if (ok) {
        *isnull = PQgetisnull(r, 0, 0);
        snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    } else {
        snprintf(j->res.err, sizeof(j->res.err), "control query failed (%.60s): %s", sql,
                 PQresultStatus(r) == PGRES_TUPLES_OK ? "no row" : PQerrorMessage(c));
        sy_one_line(j->res.err);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* Poll sql (one bigint: bytes still missing, NULL unknown) on c until it is <= 0. */
static int cu_pg_wait(sy_catchup_job_t *j, PGconn *c, const char *sql, int np, const char *const *p)
{
    char v[32];
    int isnull;
    for (;;) {
        if (cu_pg_value(j, c, sql, np, p, v, sizeof(v), &isnull) != 0)
            return -1;
        j->res.behind = isnull ? -1 : strtoll(v, NULL, 10);
        if (!isnull && j->res.behind <= 0) {
            j->res.behind = 0;
            return 0;
        }
        if (cu_expired(j)) {
            cu_timed_out(j, "bytes of WAL");
            return -1;
        }
        usleep(CU_POLL_US);
    }
}

static int cu_pg_promote(sy_catchup_job_t *j, PGconn *c)
{
    char v[8], secs[16];
    int isnull;
    snprintf(secs, sizeof(secs), "%d", cu_secs_left(j));
    const char *p[1] = { secs };
    if (cu_pg_value(j, c, "SELECT pg_catalog.pg_promote(true, $1::int)", 1, p, v, sizeof(v), &isnull) != 0)
        return -1;
    for (;;) {
        if (cu_pg_value(j, c, "SELECT pg_catalog.pg_is_in_recovery()", 0, NULL, v, sizeof(v), &isnull) != 0)
            return -1;
        if (strcmp(v, "f") == 0) {
            snprintf(j->res.promoted, sizeof(j->res.promoted), "yes");
            return 0;
        }
        if (cu_expired(j)) {
            snprintf(j->res.err, sizeof(j->res.err), "%s caught up, but was still in recovery %d s after "
                     "pg_promote()", cu_name(j->to), j->o.timeout_s);
            return -1;
        }
        usleep(CU_POLL_US);
    }
}

/* The new target follows the old through logical replication: the slots on the old of
 * the subscriptions in the new's database. Returns 0 with their names as a text[] literal
 * in slots, or -1 with err. */
static int cu_pg_find_slots(sy_catchup_job_t *j, PGconn *old, PGconn *nw, char *slots, size_t len)
{
    char n[24];
    int isnull;
    if (cu_pg_value(j, nw, "SELECT pg_catalog.array_agg(subslotname::text)::text FROM pg_catalog.pg_subscription"
                    " WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname ="
                    " pg_catalog.current_database()) AND subslotname IS NOT NULL", 0, NULL, slots, len, &isnull) != 0)
        return -1;
    if (isnull) {
        snprintf(j->res.err, sizeof(j->res.err), "cannot tell how far %s is behind: it is not a standby"
                 " (pg_is_in_recovery() is false) and has no subscription in its database", cu_name(j->to));
        return -1;
    }
    const char *p[1] = { slots };
    if (cu_pg_value(j, old, "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name ="
                    " ANY($1::text[])", 1, p, n, sizeof(n), &isnull) != 0)
        return -1;
    if (strcmp(n, "0") == 0) {
        snprintf(j->res.err, sizeof(j->res.err), "cannot tell how far %s is behind: none of its subscriptions'"
                 " slots %.300s is on %s", cu_name(j->to), slots, cu_name(j->from));
        return -1;
    }
    return 0;
}

static int cu_pg_follow(sy_catchup_job_t *j, PGconn *old, PGconn *nw)
{
    char rec[8], slots[1024];
    int isnull;
    const char *p[2] = { j->res.position, slots };
    if (cu_pg_value(j, nw, "SELECT pg_catalog.pg_is_in_recovery()", 0, NULL, rec, sizeof(rec), &isnull) != 0)
        return -1;
    if (strcmp(rec, "t") == 0) {
        snprintf(j->res.how, sizeof(j->res.how), "standby");
        return cu_pg_wait(j, nw, "SELECT pg_catalog.pg_wal_lsn_diff($1::pg_lsn,"
                          " pg_catalog.pg_last_wal_replay_lsn())::bigint", 1, p);
    }
    snprintf(j->res.how, sizeof(j->res.how), "subscription");
    if (cu_pg_find_slots(j, old, nw, slots, sizeof(slots)) != 0)
        return -1;
    return cu_pg_wait(j, old, "SELECT max(pg_catalog.pg_wal_lsn_diff($1::pg_lsn, confirmed_flush_lsn))::bigint"
                      " FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($2::text[])", 2, p);
}

static void cu_pg(sy_catchup_job_t *j)
{
    int isnull;
    PGconn *old = cu_pg_open(j, j->from);
    PGconn *nw = old ? cu_pg_open(j, j->to) : NULL;
    if (nw == NULL)
        goto out;
    if (cu_pg_value(j, old, "SELECT pg_catalog.pg_current_wal_insert_lsn()::text", 0, NULL, j->res.position,
                    sizeof(j->res.position), &isnull) != 0)
        goto out;
    if (cu_pg_follow(j, old, nw) != 0)
        goto out;
    if (!j->o.promote)
        snprintf(j->res.promoted, sizeof(j->res.promoted), "no");
    else if (strcmp(j->res.how, "standby") != 0)
        snprintf(j->res.promoted, sizeof(j->res.promoted), "no (a subscriber: nothing to promote)");
    else if (cu_pg_promote(j, nw) != 0)
        goto out;
    j->res.ok = 1;
out:
    PQfinish(old);
    PQfinish(nw);
}

/* ---- Redis -------------------------------------------------------------------------- */

typedef struct cu_rd_s {
    int          fd;
    SSL         *ssl;
    redisReader *rd;
} cu_rd_t;

static int cu_rd_open(sy_catchup_job_t *j, conf_which_t which, cu_rd_t *c)
{
    char err[400] = "";
    c->rd = NULL;
    if (sy_redis_dial(cu_target(j, which), &c->fd, &c->ssl, err, sizeof(err)) != 0) {
        snprintf(j->res.err, sizeof(j->res.err), "cannot connect to %s (%s): %s", cu_name(which),
                 cu_target(j, which)->hostport, err);
        c->fd = -1;
        return -1;
    }
    c->rd = redisReaderCreate();
    if (c->rd == NULL) {
        snprintf(j->res.err, sizeof(j->res.err), "out of memory");
        return -1;
    }
    return 0;
}

static void cu_rd_close(cu_rd_t *c)
{
    if (c->rd != NULL)
        redisReaderFree(c->rd);
    if (c->fd >= 0)
        sy_redis_hangup(c->fd, c->ssl);
}

/* Send one command and read its reply (hiredis frames it). Returns the reply, or NULL with
 * err; an error reply is an error. The caller frees it (freeReplyObject). */
static redisReply *cu_rd_cmd(sy_catchup_job_t *j, cu_rd_t *c, int argc, const char *const *argv)
{
    resp_arg_t a[4];
    uint8_t req[256];
    for (int i = 0; i < argc && i < 4; i++)
        a[i] = (resp_arg_t){ argv[i], strlen(argv[i]) };
    size_t len = resp_cmd_build(req, sizeof(req), argc, a);
    for (size_t off = 0; off < len;) {
        ssize_t k = c->ssl ? SSL_write(c->ssl, req + off, (int)(len - off)) : send(c->fd, req + off, len - off, MSG_NOSIGNAL);
        if (k <= 0)
            goto lost;
        off += (size_t)k;
    }
    void *reply = NULL;
    while (reply == NULL) {
        char buf[4096];
        if (redisReaderGetReply(c->rd, &reply) != REDIS_OK) {
            snprintf(j->res.err, sizeof(j->res.err), "%s: bad reply: %s", argv[0], c->rd->errstr);
            return NULL;
        }
        if (reply != NULL)
            break;
        ssize_t k = c->ssl ? SSL_read(c->ssl, buf, sizeof(buf)) : recv(c->fd, buf, sizeof(buf), 0);
        if (k <= 0 || redisReaderFeed(c->rd, buf, (size_t)k) != REDIS_OK)
            goto lost;
    }
    redisReply *r = reply;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(j->res.err, sizeof(j->res.err), "%s failed: %.300s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
lost:
    snprintf(j->res.err, sizeof(j->res.err), "%s: connection closed or timed out", argv[0]);
    return NULL;
}

/* One field of an INFO text ("name:value\r\n") into out; 0, or -1 when absent. */
static int info_field(const char *info, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *l = info; l != NULL && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, name, n) == 0 && l[n] == ':') {
            size_t k = strcspn(l + n + 1, "\r\n");
            snprintf(out, len, "%.*s", (int)k, l + n + 1);
            return 0;
        }
    }
    return -1;
}

/* INFO replication of c: the fields asked for (name, out, name, out, ..., NULL). */
static int cu_rd_info(sy_catchup_job_t *j, cu_rd_t *c, const char *first, ...)
{
    static const char *const argv[] = { "INFO", "replication" };
    redisReply *r = cu_rd_cmd(j, c, 2, argv);
    if (r == NULL)
        return -1;
    int rc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name != NULL && rc == 0; name = va_arg(ap, const char *)) {
        char *out = va_arg(ap, char *);
        if (r->type != REDIS_REPLY_STRING) {
            snprintf(j->res.err, sizeof(j->res.err), "INFO replication: not a text reply");
            rc = -1;
        } else if (info_field(r->str, name, out, 64) != 0) {
            out[0] = '\0';
        }
    }
    va_end(ap);
    freeReplyObject(r);
    return rc;
}

static int cu_rd_wait(sy_catchup_job_t *j, cu_rd_t *nw, long long want)
{
    char role[64], link[64], off[64];
    for (;;) {
        if (cu_rd_info(j, nw, "role", role, "master_link_status", link, "slave_repl_offset", off, NULL) != 0)
            return -1;
        if (strcmp(role, "slave") != 0) {
            snprintf(j->res.err, sizeof(j->res.err), "cannot tell how far %s is behind: it is not a replica"
                     " (role:%s)", cu_name(j->to), role);
            return -1;
        }
        long long got = off[0] ? strtoll(off, NULL, 10) : -1;
        j->res.behind = got >= 0 ? (want - got > 0 ? want - got : 0) : -1;
        if (strcmp(link, "up") == 0 && got >= want)
            return 0;
        if (cu_expired(j)) {
            cu_timed_out(j, strcmp(link, "up") == 0 ? "bytes of replication offset" :
                            "bytes of replication offset, master_link_status down,");
            return -1;
        }
        usleep(CU_POLL_US);
    }
}

static int cu_rd_promote(sy_catchup_job_t *j, cu_rd_t *nw)
{
    static const char *const argv[] = { "REPLICAOF", "NO", "ONE" };
    char role[64];
    redisReply *r = cu_rd_cmd(j, nw, 3, argv);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    for (;;) {
        if (cu_rd_info(j, nw, "role", role, NULL) != 0)
            return -1;
        if (strcmp(role, "master") == 0) {
            snprintf(j->res.promoted, sizeof(j->res.promoted), "yes");
            return 0;
        }
        if (cu_expired(j)) {
            snprintf(j->res.err, sizeof(j->res.err), "%s caught up, but was still role:%s after REPLICAOF NO ONE",
                     cu_name(j->to), role);
            return -1;
        }
        usleep(CU_POLL_US);
    }
}

static void cu_redis(sy_catchup_job_t *j)
{
    cu_rd_t old = { -1, NULL, NULL }, nw = { -1, NULL, NULL };
    char pos[64];
    snprintf(j->res.how, sizeof(j->res.how), "replica");
    if (cu_rd_open(j, j->from, &old) != 0 || cu_rd_open(j, j->to, &nw) != 0)
        goto out;
    if (cu_rd_info(j, &old, "master_repl_offset", pos, NULL) != 0)
        goto out;
    if (pos[0] == '\0') {
        snprintf(j->res.err, sizeof(j->res.err), "%s reports no master_repl_offset", cu_name(j->from));
        goto out;
    }
    snprintf(j->res.position, sizeof(j->res.position), "%s", pos);
    if (cu_rd_wait(j, &nw, strtoll(pos, NULL, 10)) != 0)
        goto out;
    if (!j->o.promote)
        snprintf(j->res.promoted, sizeof(j->res.promoted), "no");
    else if (cu_rd_promote(j, &nw) != 0)
        goto out;
    j->res.ok = 1;
out:
    cu_rd_close(&old);
    cu_rd_close(&nw);
}

/* ---- the job ------------------------------------------------------------------------- */

static void cu_work(uv_work_t *req)
{
    sy_catchup_job_t *j = req->data;
    if (j->rc->proto == CONF_PROTO_PG)
        cu_pg(j);
    else
        cu_redis(j);
    j->res.wait_ms = (double)(uv_hrtime() - j->started_ns) / 1e6;
}

static void cu_after(uv_work_t *req, int status)
{
    sy_catchup_job_t *j = req->data;
    if (status != 0 && !j->res.err[0])
        snprintf(j->res.err, sizeof(j->res.err), "the catch-up wait was cancelled");
    if (!__atomic_load_n(&j->abandoned, __ATOMIC_ACQUIRE))
        j->cb(j->arg, &j->res);
    free(j);
}

sy_catchup_job_t *sy_catchup_start(const conf_route_t *rc, conf_which_t from, conf_which_t to,
                                   const sy_catchup_opts_t *o, sy_catchup_job_cb cb, void *arg)
{
    sy_catchup_job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->req.data = j;
    j->rc = rc;
    j->from = from;
    j->to = to;
    j->o = *o;
    j->cb = cb;
    j->arg = arg;
    j->res.behind = -1;
    j->started_ns = uv_hrtime();
    j->deadline_ns = j->started_ns + (uint64_t)o->timeout_s * 1000000000u;
    if (uv_queue_work(sy_server.loop, &j->req, cu_work, cu_after) != 0) {
        free(j);
        return NULL;
    }
    return j;
}

void sy_catchup_abandon(sy_catchup_job_t *j)
{
    if (j != NULL)
        __atomic_store_n(&j->abandoned, 1, __ATOMIC_RELEASE);
}
