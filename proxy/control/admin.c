/*
 * admin.c - the admin console: `psql -h 127.0.0.1 -p 5432 switchyard`.
 *
 * A Postgres session whose client asks for database "switchyard" (from loopback, the
 * unix socket, or with the admin password) is served here instead of upstream. It speaks
 * the simple query protocol: each Query is one console command, answered with a result
 * set (RowDescription, DataRow*, CommandComplete) or an ErrorResponse, built into a
 * growable buffer that the session then writes.
 *
 *   SHOW HELP | ROUTES | CLIENTS | SERVERS | STATS
 *   SWITCH <route> TO builtin|external [GRADUAL] [FORCE]
 *   SWITCH <route> TO builtin|external AFTER CATCHUP [TIMEOUT <s>] [PROMOTE] [FORCE]
 *   PAUSE <route> | RESUME <route> | RELOAD
 *
 * SWITCH first opens a full session to the new target on the thread pool (TLS, auth,
 * SELECT 1 / PING) and refuses with the cause if that fails, unless FORCE is given. It
 * then hands the route to switchover.c, which points new connections at the new target
 * and moves the open sessions; the console answers when the switch has completed, with
 * how many sessions moved, how many were closed, and how long it took. AFTER CATCHUP holds
 * the sessions until the new target has applied the old one's last write (catchup.h), and
 * adds the position waited for and the wait to the result; or refuses, nothing moved.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <libpq-fe.h>
#include "proxy/core/sy.h"
#include "proxy/control/admin.h"
#include "proxy/control/catchup.h"
#include "proxy/redis/redis_dial.h"
#include "protocol/console_tok.h"
#include "protocol/pg_wire.h"
#include "protocol/resp.h"
#include "protocol/resp_cmd.h"

/* ---- helpers ---------------------------------------------------------------------- */

static void result_error(pgr_buf_t *out, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result_error(pgr_buf_t *out, const char *sqlstate, const char *fmt, ...)
{
    char msg[1024];
    uint8_t m[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t n = pgw_build_error(m, sizeof(m), "ERROR", sqlstate, msg, NULL);
    pgr_append(out, m, n);
}

static const char *which_name(conf_which_t w)
{
    return w == CONF_EXTERNAL ? "external" : "builtin";
}

static const conf_target_t *route_target(const sy_route_t *r, conf_which_t w)
{
    return w == CONF_EXTERNAL ? &r->conf->external : &r->conf->builtin;
}

/* ---- SHOW ------------------------------------------------------------------------- */

static void show_help(pgr_buf_t *out)
{
    static const char *const lines[] = {
        "SHOW HELP                                  this list",
        "SHOW ROUTES                                routes, active target, sessions",
        "SHOW CLIENTS                               one row per client session",
        "SHOW STATS                                 per-route counters",
        "SHOW SERVERS                               one row per upstream session",
        "SHOW POOLS                                 per route: idle servers kept for reuse, reuses, resets",
        "SWITCH <route> TO builtin|external [GRADUAL] [FORCE]",
        "                                           move a route and its sessions to the other target",
        "SWITCH <route> TO builtin|external AFTER CATCHUP [TIMEOUT <s>] [PROMOTE]",
        "                                           ...once the new target has replicated every write",
        "PAUSE <route>                              hold each session at its next transaction/command",
        "RESUME <route>                             release held sessions",
        "RELOAD                                     re-read the config and env files",
        NULL
    };
    const char *col = "command";
    pgr_row_description(out, 1, &col);
    for (const char *const *l = lines; *l; l++)
        pgr_data_row(out, 1, l);
    pgr_command_complete(out, "SHOW");
}

static void show_routes(pgr_buf_t *out)
{
    static const char *const cols[] = { "route", "listener", "protocol", "active", "builtin", "external",
                                        "health", "clients", "upstreams", "pinned", "closed_at_deadline" };
    pgr_row_description(out, 11, cols);
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        const sy_route_t *r = &sy_server.routes[i];
        char clients[24], ups[24], pinned[24], health[300], deadline[24];
        uint64_t npinned = SY_LOAD(r->pinned);
        snprintf(clients, sizeof(clients), "%llu", (unsigned long long)SY_LOAD(r->clients));
        snprintf(ups, sizeof(ups), "%llu", (unsigned long long)SY_LOAD(r->upstreams));
        snprintf(pinned, sizeof(pinned), "%llu", (unsigned long long)npinned);
        snprintf(deadline, sizeof(deadline), "%llu", (unsigned long long)SY_LOAD(r->closed_at_deadline));
        snprintf(health, sizeof(health), "%s%s%s", r->healthy ? "ok" : "down",
                 !r->healthy && r->health_err[0] ? ": " : "", r->healthy ? "" : r->health_err);
        const char *v[11] = {
            r->conf->name, r->conf->listener, r->conf->proto == CONF_PROTO_PG ? "postgres" : "redis",
            r->sw ? (sy_route_active(r) == CONF_EXTERNAL ? "external (switching)" : "builtin (switching)")
                  : SY_LOAD(r->paused) ? (sy_route_active(r) == CONF_EXTERNAL ? "external (paused)" : "builtin (paused)")
                              : which_name(sy_route_active(r)),
            r->conf->builtin.defined ? r->conf->builtin.display : NULL,
            r->conf->external.defined ? r->conf->external.display : NULL,
            health, clients, ups, pinned, deadline
        };
        pgr_data_row(out, 11, v);
    }
    pgr_command_complete(out, "SHOW");
}

static void show_stats(pgr_buf_t *out)
{
    static const char *const cols[] = { "route", "clients", "upstreams", "transactions", "bytes_in", "bytes_out",
                                        "errors", "switches", "last_switch_ms", "last_hold_ms", "moved",
                                        "closed_at_deadline" };
    pgr_row_description(out, 12, cols);
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        const sy_route_t *r = &sy_server.routes[i];
        char f[12][32];
        snprintf(f[0], 32, "%llu", (unsigned long long)SY_LOAD(r->clients));
        snprintf(f[1], 32, "%llu", (unsigned long long)SY_LOAD(r->upstreams));
        snprintf(f[2], 32, "%llu", (unsigned long long)sy_route_transactions(r));
        snprintf(f[3], 32, "%llu", (unsigned long long)SY_LOAD(r->bytes_in));
        snprintf(f[4], 32, "%llu", (unsigned long long)SY_LOAD(r->bytes_out));
        snprintf(f[5], 32, "%llu", (unsigned long long)SY_LOAD(r->nerrors));
        snprintf(f[6], 32, "%llu", (unsigned long long)SY_LOAD(r->switches));
        snprintf(f[7], 32, "%.1f", r->last_switch_ms);
        snprintf(f[8], 32, "%.1f", r->last_hold_ms);
        snprintf(f[9], 32, "%llu", (unsigned long long)SY_LOAD(r->moved));
        snprintf(f[10], 32, "%llu", (unsigned long long)SY_LOAD(r->closed_at_deadline));
        const char *v[12] = { r->conf->name, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10] };
        pgr_data_row(out, 12, v);
    }
    pgr_command_complete(out, "SHOW");
}

/* SHOW POOLS: per route, its server connections by state (the workers' list lengths)
 * and what the pool did (pg_pool.c). */
static void show_pools(pgr_buf_t *out)
{
    static const char *const cols[] = { "route", "pool", "target", "sv_idle", "sv_active", "sv_connecting",
                                        "sv_closing", "pool_size", "reuses", "resets", "releases", "retakes",
                                        "pins" };
    pgr_row_description(out, 13, cols);
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        const sy_route_t *r = &sy_server.routes[i];
        char f[10][24];
        uint64_t n[SY_SERVER_NSTATES] = { 0 };
        for (int w = 0; w < sy_nworkers(); w++)
            for (int st = 0; st < SY_SERVER_NSTATES; st++)
                n[st] += sy_worker_servers_in(w, r, (sy_server_state_t)st);
        snprintf(f[0], 24, "%llu", (unsigned long long)n[SY_SERVER_IDLE]);
        snprintf(f[1], 24, "%llu", (unsigned long long)n[SY_SERVER_ACTIVE]);
        snprintf(f[2], 24, "%llu", (unsigned long long)n[SY_SERVER_CONNECTING]);
        snprintf(f[3], 24, "%llu", (unsigned long long)n[SY_SERVER_CLOSING]);
        snprintf(f[4], 24, "%d", sy_conf()->pool_size);
        snprintf(f[5], 24, "%llu", (unsigned long long)SY_LOAD(r->pool_reuses));
        snprintf(f[6], 24, "%llu", (unsigned long long)SY_LOAD(r->pool_resets));
        snprintf(f[7], 24, "%llu", (unsigned long long)SY_LOAD(r->pool_releases));
        snprintf(f[8], 24, "%llu", (unsigned long long)SY_LOAD(r->pool_retakes));
        snprintf(f[9], 24, "%llu", (unsigned long long)SY_LOAD(r->pool_pins));
        int on = r->conf->proto == CONF_PROTO_PG && r->conf->pool;
        const char *v[13] = { r->conf->name, on ? "on" : "off", which_name(sy_route_active(r)), f[0], f[1], f[2],
                              f[3], f[4], f[5], f[6], f[7], f[8], f[9] };
        pgr_data_row(out, 13, v);
    }
    pgr_command_complete(out, "SHOW");
}

/*
 * SHOW CLIENTS and SHOW SERVERS ask every worker for the rows of its own sessions
 * (sy_run_on_all); each worker writes into a buffer of its own, and the main loop puts
 * the result together when all have answered. Nobody stops.
 */
typedef struct show_s {
    int           servers;   /* SHOW SERVERS: one row per upstream session */
    pgr_buf_t    *out;
    admin_done_cb cb;
    void         *ctx;
    pgr_buf_t     rows[];    /* per worker */
} show_t;

static void show_clients(pgr_buf_t *rows, sy_session_link_t *head)
{
    for (sy_session_link_t *l = head->next; l != head; l = l->next) {
        char c[6][128];
        memset(c, 0, sizeof(c));
        l->describe(l, c);
        const char *v[7] = { c[0], c[1], c[2], c[3], c[4], l->state == SY_CLIENT_HELD ? "yes" : "no", c[5] };
        pgr_data_row(rows, 7, v);
    }
}

static void show_servers(pgr_buf_t *rows, const sy_route_t *r, sy_server_link_t *head)
{
    for (sy_server_link_t *s = head->next; s != head; s = s->next) {
        char c[4][128];
        memset(c, 0, sizeof(c));
        s->describe(s, c);
        const char *v[6] = { c[0], c[1], r->conf->name, which_name(s->which), c[2], c[3] };
        pgr_data_row(rows, 6, v);
    }
}

static void show_each(void *ctx, int worker)
{
    show_t *sh = ctx;
    pgr_buf_t *rows = &sh->rows[worker];
    for (size_t i = 0; i <= sy_server.nroutes; i++) {
        const sy_route_t *r = i == 0 ? NULL : &sy_server.routes[i - 1];
        if (sh->servers && r != NULL)
            for (int st = 0; st < SY_SERVER_NSTATES; st++)
                show_servers(rows, r, sy_worker_servers_of(worker, r, (sy_server_state_t)st));
        else if (!sh->servers)
            for (int st = 0; st < SY_CLIENT_NSTATES; st++)
                show_clients(rows, sy_worker_sessions_of(worker, r, (sy_client_state_t)st));
    }
}

static void show_all(void *ctx)
{
    show_t *sh = ctx;
    static const char *const ccols[] = { "id", "protocol", "route", "target", "state", "held", "detail" };
    static const char *const scols[] = { "client_id", "protocol", "route", "target", "upstream", "state" };
    if (sh->servers)
        pgr_row_description(sh->out, 6, scols);
    else
        pgr_row_description(sh->out, 7, ccols);
    for (int w = 0; w < sy_nworkers(); w++) {
        pgr_append(sh->out, sh->rows[w].data, sh->rows[w].len);
        pgr_buf_free(&sh->rows[w]);
    }
    pgr_command_complete(sh->out, "SHOW");
    sh->cb(sh->ctx, sh->out);
    free(sh);
}

/* Returns 0: cb follows once every worker has answered (or 1 with an error in out). */
static int show_sessions(int servers, pgr_buf_t *out, admin_done_cb cb, void *ctx)
{
    show_t *sh = calloc(1, sizeof(*sh) + (size_t)sy_nworkers() * sizeof(pgr_buf_t));
    if (sh == NULL) {
        result_error(out, "53200", "out of memory");
        return 1;
    }
    sh->servers = servers;
    sh->out = out;
    sh->cb = cb;
    sh->ctx = ctx;
    if (sy_run_on_all(show_each, show_all, sh) != 0) {
        free(sh);
        result_error(out, "53200", "out of memory");
        return 1;
    }
    return 0;
}

/* ---- SWITCH ----------------------------------------------------------------------- */

typedef struct precheck_s {
    uv_work_t     req;
    sy_route_t   *route;
    const conf_route_t *rconf;   /* the route's configuration when queued: RELOAD may replace
                                  * route->conf meanwhile, the snapshot stays */
    conf_which_t  to;
    int           force;
    int           gradual;
    int           catchup;       /* AFTER CATCHUP, with catchup_opts */
    sy_catchup_opts_t catchup_opts;
    conf_which_t  from;
    char          user[128];
    int           ok;
    char          err[600];
    uint64_t      started_ms;
    admin_done_cb cb;
    void         *ctx;
    pgr_buf_t    *out;
} precheck_t;

PGconn *sy_target_pg_connect(const conf_route_t *rc, const conf_target_t *t, const char *user)
{
    const conf_kv_t *kv = &t->pg;
    const char *keys[80], *vals[80];
    size_t n = 0;
    int has_user = 0, has_db = 0, has_ct = 0;
    char ct[16];
    for (size_t i = 0; i < kv->n && n < 70; i++) {
        keys[n] = kv->keys[i];
        vals[n++] = kv->vals[i];
        has_user |= strcmp(kv->keys[i], "user") == 0;
        has_db |= strcmp(kv->keys[i], "dbname") == 0;
        has_ct |= strcmp(kv->keys[i], "connect_timeout") == 0;
    }
    /* Like a client session: unset user/dbname mean the client's (here: the caller's). */
    if (!has_user)
        keys[n] = "user", vals[n++] = user;
    if (!has_db)
        keys[n] = "dbname", vals[n++] = rc->databases && rc->databases[0] ? rc->databases[0] : user;
    if (!has_ct) {
        snprintf(ct, sizeof(ct), "%d", sy_conf()->connect_timeout);
        keys[n] = "connect_timeout", vals[n++] = ct;
    }
    keys[n] = vals[n] = NULL;
    return PQconnectdbParams(keys, vals, 0);
}

void sy_one_line(char *err)
{
    size_t len = strlen(err);
    while (len > 0 && (err[len - 1] == '\n' || err[len - 1] == ' '))
        err[--len] = '\0';
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

static int probe_pg(const conf_route_t *rc, const conf_target_t *t, const char *user, char *err, size_t errlen)
{
    int ok = 0;
    PGconn *c = sy_target_pg_connect(rc, t, user);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
    } else {
        PGresult *res = PQexec(c, "SELECT 1");
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            ok = 1;
        else
            snprintf(err, errlen, "SELECT 1 failed: %s", PQerrorMessage(c));
        PQclear(res);
    }
    PQfinish(c);
    sy_one_line(err);
    return ok ? 0 : -1;
}

static int probe_redis(const conf_target_t *t, char *err, size_t errlen)
{
    int fd = -1;
    SSL *ssl = NULL;
    static const uint8_t ping[] = "*1\r\n$4\r\nPING\r\n";
    if (sy_redis_dial(t, &fd, &ssl, err, errlen) != 0)
        return -1;
    int r = sy_redis_roundtrip(fd, ssl, ping, sizeof(ping) - 1, 1, err, errlen);
    sy_redis_hangup(fd, ssl);
    return r;
}

int sy_target_probe(const conf_route_t *rc, conf_which_t which, const char *user, char *err, size_t errlen)
{
    const conf_target_t *t = which == CONF_EXTERNAL ? &rc->external : &rc->builtin;
    err[0] = '\0';
    if (!t->defined) {
        snprintf(err, errlen, "no %s target configured", which_name(which));
        return -1;
    }
    if (rc->proto == CONF_PROTO_PG)
        return probe_pg(rc, t, user, err, errlen);
    return probe_redis(t, err, errlen);
}

static void precheck_work(uv_work_t *req)
{
    precheck_t *w = req->data;
    w->ok = sy_target_probe(w->rconf, w->to, w->user, w->err, sizeof(w->err)) == 0;
}

static void precheck_free(precheck_t *w)
{
    free(w);
}

static void switch_done(void *ctx, uint64_t moved, uint64_t closed, double ms)
{
    precheck_t *w = ctx;
    static const char *const cols[] = { "route", "from", "to", "precheck", "moved", "closed", "duration_ms",
                                        "hold_ms" };
    char a[24], b[24], c[24], d[24];
    snprintf(a, sizeof(a), "%llu", (unsigned long long)moved);
    snprintf(b, sizeof(b), "%llu", (unsigned long long)closed);
    snprintf(c, sizeof(c), "%.0f", ms);
    snprintf(d, sizeof(d), "%.0f", w->route->last_hold_ms);
    const char *v[8] = { w->route->conf->name, which_name(w->from), which_name(w->to),
                         w->ok ? "ok" : "failed (FORCE)", a, b, c, d };
    pgr_row_description(w->out, 8, cols);
    pgr_data_row(w->out, 8, v);
    pgr_command_complete(w->out, "SWITCH");
    w->cb(w->ctx, w->out);
    precheck_free(w);
}

static void catchup_done(void *ctx, const sy_catchup_result_t *res)
{
    precheck_t *w = ctx;
    static const char *const cols[] = { "route", "from", "to", "precheck", "moved", "closed", "duration_ms",
                                        "hold_ms", "caught_up", "position", "catchup_ms", "promoted" };
    char f[5][24];
    if (!res->ok) {
        result_error(w->out, "55000", "switchyard: SWITCH refused: route %s: %s; nothing moved, the sessions"
                     " carry on on %s", w->route->conf->name, res->err, which_name(w->from));
    } else {
        snprintf(f[0], sizeof(f[0]), "%llu", (unsigned long long)res->moved);
        snprintf(f[1], sizeof(f[1]), "%llu", (unsigned long long)res->closed);
        snprintf(f[2], sizeof(f[2]), "%.0f", res->ms);
        snprintf(f[3], sizeof(f[3]), "%.0f", res->hold_ms);
        snprintf(f[4], sizeof(f[4]), "%.0f", res->wait_ms);
        const char *v[12] = { w->route->conf->name, which_name(w->from), which_name(w->to),
                              w->ok ? "ok" : "failed (FORCE)", f[0], f[1], f[2], f[3], res->how, res->position,
                              f[4], res->promoted };
        pgr_row_description(w->out, 12, cols);
        pgr_data_row(w->out, 12, v);
        pgr_command_complete(w->out, "SWITCH");
    }
    w->cb(w->ctx, w->out);
    precheck_free(w);
}

static int start_switch(precheck_t *w)
{
    if (w->catchup)
        return sy_switch_start_after_catchup(w->route, w->to, &w->catchup_opts, catchup_done, w);
    return sy_switch_start(w->route, w->to, w->gradual, switch_done, w);
}

static void precheck_done(uv_work_t *req, int status)
{
    precheck_t *w = req->data;
    sy_route_t *r = w->route;
    const conf_target_t *t = route_target(r, w->to);
    char q[700];

    if (!w->ok && !w->force) {
        sy_warn("event=switch_refused route=%s to=%s error=%s", r->conf->name, which_name(w->to),
                sy_logq(q, sizeof(q), w->err));
        result_error(w->out, "08001", "switchyard: SWITCH refused: route %s: cannot connect to %s: %s",
                     r->conf->name, t->hostport, w->err);
    } else if (r->sw != NULL) {
        result_error(w->out, "55006", "switchyard: a switch of route %s is already running", r->conf->name);
    } else if (w->catchup && sy_route_active(r) == w->to) {
        result_error(w->out, "55000", "switchyard: SWITCH refused: route %s is on %s already: nothing to catch up with",
                     r->conf->name, which_name(w->to));
    } else {
        if (!w->ok)
            sy_warn("event=switch_forced route=%s to=%s error=%s", r->conf->name, which_name(w->to),
                    sy_logq(q, sizeof(q), w->err));
        w->from = r->active;
        if (start_switch(w) == 0)
            return;   /* switch_done or catchup_done answers */
        result_error(w->out, "53000", "switchyard: cannot start the switch of route %s", r->conf->name);
    }
    w->cb(w->ctx, w->out);
    precheck_free(w);
}

/* TIMEOUT's seconds: digits only, 1..86400. */
static int parse_timeout(const char *s, int *out)
{
    long v = 0;
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 86400)
        return -1;
    *out = (int)v;
    return 0;
}

static int do_switch(char w[][CONSOLE_TOK_WORD_MAX + 1], int n, const char *user, pgr_buf_t *out, admin_done_cb cb, void *ctx)
{
    if (n < 4 || strcasecmp(w[2], "TO") != 0) {
        result_error(out, "42601", "usage: SWITCH <route> TO builtin|external [GRADUAL] [FORCE]"
                     " | AFTER CATCHUP [TIMEOUT <s>] [PROMOTE]");
        return 1;
    }
    sy_route_t *r = sy_route_find(w[1]);
    if (r == NULL) {
        result_error(out, "42704", "switchyard: no route named \"%s\"", w[1]);
        return 1;
    }
    conf_which_t to;
    if (strcasecmp(w[3], "builtin") == 0)
        to = CONF_BUILTIN;
    else if (strcasecmp(w[3], "external") == 0)
        to = CONF_EXTERNAL;
    else {
        result_error(out, "42601", "switchyard: target must be builtin or external, not \"%s\"", w[3]);
        return 1;
    }
    int force = 0, gradual = 0;
    sy_catchup_opts_t cu = { .timeout_s = 0 };
    int catchup = 0;
    for (int i = 4; i < n; i++) {
        if (strcasecmp(w[i], "FORCE") == 0)
            force = 1;
        else if (strcasecmp(w[i], "GRADUAL") == 0)
            gradual = 1;
        else if (strcasecmp(w[i], "AFTER") == 0 && i + 1 < n && strcasecmp(w[i + 1], "CATCHUP") == 0)
            catchup = 1, i++;
        else if (strcasecmp(w[i], "TIMEOUT") == 0 && i + 1 < n) {
            if (parse_timeout(w[++i], &cu.timeout_s) != 0) {
                result_error(out, "22023", "switchyard: TIMEOUT must be 1..86400 seconds, not \"%s\"", w[i]);
                return 1;
            }
        } else if (strcasecmp(w[i], "PROMOTE") == 0)
            cu.promote = 1;
        else {
            result_error(out, "42601", "switchyard: unknown SWITCH option \"%s\"", w[i]);
            return 1;
        }
    }
    if (!catchup && (cu.timeout_s || cu.promote)) {
        result_error(out, "42601", "switchyard: TIMEOUT and PROMOTE belong to AFTER CATCHUP");
        return 1;
    }
    if (catchup && gradual) {
        result_error(out, "42601", "switchyard: AFTER CATCHUP is an atomic switch: it cannot be GRADUAL");
        return 1;
    }
    if (cu.timeout_s == 0)
        cu.timeout_s = SY_CATCHUP_TIMEOUT_DEFAULT;
    const conf_target_t *t = route_target(r, to);
    if (!t->defined) {
        result_error(out, "55000", "switchyard: route %s has no %s target configured", r->conf->name,
                     which_name(to));
        return 1;
    }
    precheck_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        result_error(out, "53200", "out of memory");
        return 1;
    }
    p->req.data = p;
    p->route = r;
    p->rconf = r->conf;
    p->to = to;
    p->force = force;
    p->gradual = gradual;
    p->catchup = catchup;
    p->catchup_opts = cu;
    p->cb = cb;
    p->ctx = ctx;
    p->out = out;
    p->started_ms = uv_now(sy_server.loop);
    snprintf(p->user, sizeof(p->user), "%s", user ? user : "postgres");
    snprintf(p->catchup_opts.user, sizeof(p->catchup_opts.user), "%s", p->user);
    if (uv_queue_work(sy_server.loop, &p->req, precheck_work, precheck_done) != 0) {
        precheck_free(p);
        result_error(out, "53000", "switchyard: cannot start the precheck");
        return 1;
    }
    return 0;
}

int admin_execute(const char *sql, const char *user, pgr_buf_t *out, admin_done_cb cb, void *ctx)
{
    console_tok_t tok;
    int n = console_tok_split(&tok, sql, strlen(sql));
    char (*w)[CONSOLE_TOK_WORD_MAX + 1] = tok.word;
    if (n == 0) {
        pgr_empty_query(out);
        return 1;
    }
    if (n < 0) {
        result_error(out, "42601", "switchyard: unknown command: %s (SHOW HELP lists them)",
                     tok.err);
        return 1;
    }
    if (strcasecmp(w[0], "SHOW") == 0 && n == 2) {
        if (strcasecmp(w[1], "HELP") == 0)
            show_help(out);
        else if (strcasecmp(w[1], "ROUTES") == 0)
            show_routes(out);
        else if (strcasecmp(w[1], "CLIENTS") == 0)
            return show_sessions(0, out, cb, ctx);
        else if (strcasecmp(w[1], "STATS") == 0)
            show_stats(out);
        else if (strcasecmp(w[1], "SERVERS") == 0)
            return show_sessions(1, out, cb, ctx);
        else if (strcasecmp(w[1], "POOLS") == 0)
            show_pools(out);
        else
            result_error(out, "42601", "switchyard: unknown SHOW item \"%s\" (SHOW HELP lists them)", w[1]);
        return 1;
    }
    if (strcasecmp(w[0], "SWITCH") == 0)
        return do_switch(w, n, user, out, cb, ctx);
    if (strcasecmp(w[0], "RELOAD") == 0 && n == 1) {
        char msg[1100];
        if (sy_reload(msg, sizeof(msg)) != 0) {
            result_error(out, "F0000", "switchyard: %s", msg);
        } else {
            const char *col = "result", *v = msg;
            pgr_row_description(out, 1, &col);
            pgr_data_row(out, 1, &v);
            pgr_command_complete(out, "RELOAD");
        }
        return 1;
    }
    if ((strcasecmp(w[0], "PAUSE") == 0 || strcasecmp(w[0], "RESUME") == 0) && n == 2) {
        sy_route_t *r = sy_route_find(w[1]);
        if (r == NULL) {
            result_error(out, "42704", "switchyard: no route named \"%s\"", w[1]);
            return 1;
        }
        if (strcasecmp(w[0], "PAUSE") == 0) {
            sy_route_pause(r);
            pgr_command_complete(out, "PAUSE");
        } else {
            sy_route_resume(r, "console");
            pgr_command_complete(out, "RESUME");
        }
        return 1;
    }
    result_error(out, "42601", "switchyard: unknown command \"%s\" (SHOW HELP lists them)", w[0]);
    return 1;
}
