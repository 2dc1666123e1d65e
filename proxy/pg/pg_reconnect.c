/*
 * pg_reconnect.c - reconnect_window: a Postgres session outlives its upstream's restart.
 *
 * When the upstream of an idle session closes (a restart, a crash, an admin shutdown:
 * ReadyForQuery 'I' was the last thing, nothing in flight, no COPY), the client is owed
 * nothing: its server's FATAL is not relayed (s2c_scan drops it), and the session is
 * reconnected to the same target with the replay a move uses (pg_move.c). But a move reads
 * what to replay from the old server, and a dead server says nothing; so that state is
 * read ahead, while the server is alive:
 *
 *   relay ──a command that may change session state (SET, PREPARE, LISTEN, a named Parse,
 *           DDL ...: pg_dirty_tag / pg_dirty_query)──▶ dirty
 *         ──idle again, and nothing from the client waiting──▶ SAVING: the move's state
 *           query on the thread pool (pg_state_read), kept in s->saved ──▶ relay
 *
 *   relay ──upstream closed while idle and saved (pg_reconnect_begin)──▶ RECONNECTING
 *         ──attempt: connect + replay s->saved on the thread pool──▶ relay (the client's
 *           next query, held in the kernel meanwhile, goes on: pg_swap_in, pg_release)
 *         ──failed: again after 100 ms, doubling to 1 s, while the window lasts; then
 *           FATAL 08006 naming route and target, and close
 *
 * A session in a transaction, with a reply owed, or whose state could not be saved
 * (temporary tables, advisory locks, WITH HOLD cursors, or lost before it was read) is
 * closed as before (pg_upstream_lost): its outcome or its state is unknown.
 *
 * New sessions whose target cannot be reached for a transient cause (refused, starting
 * up, shutting down...: pgw_errclass_transient) try again on the same back-off within the
 * window (pg_connect_retry), then get the 08001 they would have got at once. The queue is
 * the sessions themselves, bounded as every client is (the listener's limits).
 *
 * A server that turns read-only under its sessions (a failover's old primary fenced with
 * default_transaction_read_only, a standby): when the target asks for a read-write
 * session (target_session_attrs = read-write or primary), a session that saw a hint of it
 * (SQLSTATE 25006, or in_hot_standby / default_transaction_read_only reported on) has the
 * server asked at its next idle moment, with its state read in the same job; if the
 * server is read-only for every session (in recovery, or the setting is not the
 * session's own), the session reconnects as above, and libpq picks the primary.
 *
 * Each attempt, success and give-up is logged (event=reconnect_attempt|reconnected|
 * reconnect_gave_up), and a success counts in switchyard_route_reconnects_total.
 *
 * A released session (pg_release.c: idle, no state, its server given back to the pool)
 * takes a server the same way when its next message comes (pg_reconnect_retake, s->retake):
 * RECONNECTING, an idle server of the pool first (pg_pool_take, which ends in
 * pg_reconnect_taken), else these attempts (nothing to replay) within the same window,
 * and the same give-up.
 *
 * A RECONNECTING session has no server, so a switch or a retargeting RELOAD has nothing
 * of it to move: each attempt goes to the route's target as it is then, and a connection
 * that comes up on a target the route left meanwhile is closed and the attempt made again.
 */
#include "proxy/pg/pg_internal.h"

static void rc_attempt(pg_session_t *s);

static int window_ms(void)
{
    return sy_conf()->reconnect_window * 1000;
}

void pg_saved_free(pg_session_t *s)
{
    for (int i = 0; i < 3; i++) {
        PQclear(s->saved[i]);
        s->saved[i] = NULL;
    }
}

/* ---- a server turned read-only ------------------------------------------------------ */

/* The target asks libpq for a read-write server: only then can a reconnect find another. */
static int wants_read_write(const pg_session_t *s)
{
    const conf_target_t *t = s->srv != NULL ? s->srv->link.target : NULL;
    const char *tsa = t != NULL ? conf_kv_get(&t->pg, "target_session_attrs") : NULL;
    return tsa != NULL && (strcmp(tsa, "read-write") == 0 || strcmp(tsa, "primary") == 0);
}

void pg_ro_seen_param(pg_session_t *s, const char *name, const char *value)
{
    if ((strcmp(name, "in_hot_standby") == 0 || strcmp(name, "default_transaction_read_only") == 0) &&
        strcmp(value, "on") == 0)
        s->ro_suspect = 1;
}

void pg_ro_seen_error(pg_session_t *s, const char *sqlstate)
{
    if (sqlstate != NULL && strcmp(sqlstate, "25006") == 0)   /* read_only_sql_transaction */
        s->ro_suspect = 1;
}

/* Blocking, on the thread pool: read-only for every session, not by the session's own
 * choice (its SET, its role's or database's setting, its startup options). */
static int server_read_only(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT pg_catalog.pg_is_in_recovery() OR EXISTS (SELECT 1 FROM pg_catalog.pg_settings"
                            " WHERE name = 'default_transaction_read_only' AND setting = 'on'"
                            " AND source NOT IN ('session', 'user', 'database', 'database user', 'client'))");
    int ro = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return ro;
}

/* ---- saving the state ahead -------------------------------------------------------- */

typedef struct pg_save_s {
    uv_work_t     req;
    pg_session_t *s;
    pg_server_t  *sv;
    PGconn       *pg;
    PGresult     *st[3];
    int           ok, alive;
    int           ro_check, readonly;   /* ask whether the server is read-only; it is */
    char          err[256];
    pgr_buf_t     notifies;
} pg_save_t;

static void oneline(char *e)
{
    for (char *p = e; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    size_t el = strlen(e);
    while (el > 0 && e[el - 1] == ' ')
        e[--el] = '\0';
}

/* A search_path of the session's own that names pg_temp: an unqualified CREATE TABLE AS
 * or SELECT INTO then may make a temporary table, whose tag ("SELECT n") and text say
 * nothing of it (pg_sql_query_effects sees only the word). */
#define PG_TEMP_PATH_WHY "its search_path names pg_temp, so a table it creates may be temporary"
static int saved_path_names_temp(const PGresult *settings)
{
    for (int i = 0; settings != NULL && i < PQntuples(settings); i++)
        if (strcmp(PQgetvalue(settings, i, 0), "search_path") == 0 && strcasestr(PQgetvalue(settings, i, 1), "pg_temp"))
            return 1;
    return 0;
}

static void save_work(uv_work_t *req)
{
    pg_save_t *w = req->data;
    PQsetnonblocking(w->pg, 0);
    if (w->ro_check)
        w->readonly = server_read_only(w->pg);
    w->ok = pg_state_read(w->pg, w->st, w->err, sizeof(w->err)) == 0;
    pg_notifies_take(w->pg, &w->notifies);
    w->alive = PQstatus(w->pg) == CONNECTION_OK;
    oneline(w->err);
}

static void save_done(uv_work_t *req, int status)
{
    pg_save_t *w = req->data;
    pg_session_t *s = w->s;
    (void)status;
    if (pg_server_job_done(w->sv) || s->state != PGS_SAVING) {
        for (int i = 0; i < 3; i++)
            PQclear(w->st[i]);
        goto out;
    }
    PQsetnonblocking(w->sv->pg, 1);   /* the relay's again: never block the loop */
    if (w->ok) {
        pg_saved_free(s);
        memcpy(s->saved, w->st, sizeof(s->saved));
        s->unsaved = s->custom_set                        ? PG_CUSTOM_WHY   /* not in what was read */
                     : saved_path_names_temp(s->saved[0]) ? PG_TEMP_PATH_WHY
                                                          : NULL;
        s->dirty = 0;
    } else {
        pg_saved_free(s);
        pg_rc_why_set(s, "%s", w->alive ? w->err : "the server closed while its state was read");
        s->unsaved = pg_rc_why(s);
        s->dirty = !w->alive;   /* known (and not movable), or unknown */
    }
    sy_debug("event=session_saved conn=%llu ok=%d settings=%d prepared=%d listens=%d%s%s",
             (unsigned long long)s->id, w->ok, w->ok ? PQntuples(s->saved[0]) : 0,
             w->ok ? PQntuples(s->saved[1]) : 0, w->ok ? PQntuples(s->saved[2]) : 0,
             s->unsaved ? " why=" : "", s->unsaved ? s->unsaved : "");
    pg_set_state(s, PGS_RELAY);
    pgr_append(&s->s2c_extra, w->notifies.data, w->notifies.len);
    if (s->s2c_extra.oom) {
        pg_close(s, "53200", "route %s: out of memory", s->link.route->conf->name);
        goto out;
    }
    if (pg_extra_drain(s) < 0) {
        pg_close(s, NULL, NULL);
        goto out;
    }
    if (w->readonly && w->ok && s->s2c_extra.len == 0) {
        sy_info("event=server_read_only conn=%llu route=%s upstream=%s backend_pid=%u reconnecting=1",
                (unsigned long long)s->id, s->link.route->conf->name, s->srv->link.target->hostport, s->srv->be_pid);
        if (pg_reconnect_begin(s, "the server is read-only"))
            goto out;
    } else if (w->readonly && w->ok) {
        s->ro_suspect = 1;   /* not now (notifications still owed to the client): later */
    } else if (w->readonly) {
        sy_info("event=server_read_only conn=%llu route=%s upstream=%s reconnecting=0 why=\"%s\"",
                (unsigned long long)s->id, s->link.route->conf->name, s->srv->link.target->hostport,
                s->unsaved ? s->unsaved : "");
    }
    pg_release(s);   /* the client's next query, waiting in the kernel, goes on */
    if (s->state == PGS_RELAY && pg_idle(s))
        sy_switch_poke(s->link.route);
out:
    pgr_buf_free(&w->notifies);
    free(w);
    pg_session_unref(s);
}

/*
 * After a relay step: a dirty session that is idle, with nothing of the client's
 * waiting and nothing held for it, has its state read now, on the thread pool, while the
 * client is not read (its next query waits one round trip at most).
 */
void pg_save_maybe(pg_session_t *s)
{
    if (s->ro_suspect && !wants_read_write(s))
        s->ro_suspect = 0;   /* a reconnect would find the same kind of server */
    if (!(s->dirty || s->ro_suspect) || s->state != PGS_RELAY || sy_conf()->reconnect_window == 0 || s->admin || s->terminating ||
        !pg_idle(s) || s->c2s.end != s->c2s.start || s->s2c_extra.len > 0 || s->srv == NULL || s->srv->job ||
        s->pre != NULL || s->link.state != SY_CLIENT_ACTIVE || sy_route_should_hold(&s->link))
        return;
    pg_save_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return;   /* tried again after the next relay step */
    w->req.data = w;
    w->s = s;
    w->sv = s->srv;
    w->pg = s->srv->pg;
    w->ro_check = s->ro_suspect;
    s->ro_suspect = 0;
    pg_set_state(s, PGS_SAVING);
    s->c2s.reading = 0;
    sy_conn_unwatch(&s->srv->conn);   /* libpq reads the socket until the job is done */
    pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
    w->sv->job = 1;
    s->refs++;
    if (uv_queue_work(s->link.loop, &w->req, save_work, save_done) != 0) {
        s->refs--;
        free(w);
        if (!pg_server_job_done(s->srv) && s->state == PGS_SAVING) {
            pg_set_state(s, PGS_RELAY);
            s->c2s.reading = 1;
            pg_update_polls(s);
        }
    }
}

/* ---- reconnecting an idle session ------------------------------------------------- */

typedef struct pg_rc_s {
    uv_work_t     req;
    pg_session_t *s;
    pg_server_t  *sv;
    pg_params_t   pp;
    PGconn       *conn;
    PGresult     *st[3];      /* the session's saved state (read only meanwhile) */
    int           ok;
    char          err[256];
    pgr_buf_t     notifies;
} pg_rc_t;

static const char *rc_hostport(const pg_session_t *s)
{
    const conf_target_t *t = sy_route_target(s->link.route, s->rc_which);
    return t ? t->hostport : "";
}

static void rc_give_up(pg_session_t *s)
{
    uint64_t ms = uv_now(s->link.loop) - s->rc_since;
    sy_warn("event=reconnect_gave_up conn=%llu route=%s upstream=%s attempts=%d ms=%llu", (unsigned long long)s->id,
            s->link.route->conf->name, rc_hostport(s), s->rc_attempts, (unsigned long long)ms);
    pg_close(s, "08006", "route %s: connection to %s lost, and not back within reconnect_window (%d s): %s",
             s->link.route->conf->name, rc_hostport(s), sy_conf()->reconnect_window, pg_rc_why(s));
}

static void rc_timer_cb(uv_timer_t *t)
{
    pg_session_t *s = t->data;
    if (s->state != PGS_RECONNECTING)
        return;
    /* A client that left meanwhile is not waited for (its bytes, if any, stay unread). */
    uint8_t b;
    ssize_t n = recv(s->client.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        pg_close(s, NULL, NULL);
        return;
    }
    rc_attempt(s);
}

/* An attempt failed: again after the back-off, or give up when the window is out. */
static void rc_failed(pg_session_t *s)
{
    uint64_t spent = uv_now(s->link.loop) - s->rc_since;
    sy_info("event=reconnect_attempt conn=%llu route=%s upstream=%s attempt=%d ok=0 error=\"%s\"",
            (unsigned long long)s->id, s->link.route->conf->name, rc_hostport(s), s->rc_attempts, pg_rc_why(s));
    if (spent + s->rc_delay > (uint64_t)window_ms()) {
        if (spent >= (uint64_t)window_ms()) {
            rc_give_up(s);
            return;
        }
        s->rc_delay = (uint64_t)window_ms() - spent;   /* one last attempt at the window's end */
    }
    pg_timer_start(s, rc_timer_cb, s->rc_delay);
    s->rc_delay = s->rc_delay * 2 > 1000 ? 1000 : s->rc_delay * 2;
}

static void rc_work(uv_work_t *req)
{
    pg_rc_t *w = req->data;
    w->conn = PQconnectdbParams(w->pp.keys, w->pp.vals, 0);
    if (PQstatus(w->conn) != CONNECTION_OK)
        snprintf(w->err, sizeof(w->err), "%s", PQerrorMessage(w->conn));
    else if (pg_state_replay(w->conn, w->st, w->err, sizeof(w->err)) == 0)
        w->ok = 1;
    if (w->ok)
        pg_notifies_take(w->conn, &w->notifies);
    oneline(w->err);
}

/* sv (connected, its state replayed) takes the place of the one s lost or gave back. */
static void rc_swap(pg_session_t *s, pg_server_t *sv, const pgr_buf_t *notifies)
{
    int sw = pg_swap_in(s, sv, notifies, "lost");
    if (sw == -1) {
        pg_rc_why_set(s, "cannot take over the TLS session");
        pg_server_close(sv, "reconnect failed");
        rc_failed(s);
        return;
    }
    if (sw != 0)
        return;
    SY_STAT_ADD(*(s->retake ? &s->link.route->pool_retakes : &s->link.route->reconnects), 1);
    if (s->retake)
        sy_debug("event=server_retaken conn=%llu route=%s upstream=%s backend_pid=%u attempts=%d ms=%llu",
                 (unsigned long long)s->id, s->link.route->conf->name, sv->link.target->hostport, sv->be_pid,
                 s->rc_attempts, (unsigned long long)(uv_now(s->link.loop) - s->rc_since));
    else
        sy_info("event=reconnected conn=%llu route=%s upstream=%s backend_pid=%u attempts=%d ms=%llu",
                (unsigned long long)s->id, s->link.route->conf->name, sv->link.target->hostport, sv->be_pid,
                s->rc_attempts, (unsigned long long)(uv_now(s->link.loop) - s->rc_since));
    s->rc_since = 0;
    s->retake = 0;
    if (!sy_route_should_hold(&s->link)) {
        pg_release(s);
    } else {
        sy_session_set_state(&s->link, SY_CLIENT_HELD);   /* paused meanwhile: RESUME releases it */
        pg_update_polls(s);
        sy_switch_poke(s->link.route);
    }
}

static void rc_done(uv_work_t *req, int status)
{
    pg_rc_t *w = req->data;
    pg_session_t *s = w->s;
    pg_server_t *sv = w->sv;
    (void)status;
    sv->pg = w->conn;
    if (pg_server_job_done(sv) || s->state != PGS_RECONNECTING)
        goto out;   /* the session closed meanwhile: sv went with it */
    if (sv->link.target != sy_route_target(s->link.route, sy_route_active(s->link.route))) {
        /* A switch or a RELOAD retargeted the route meanwhile, and passed this session by
         * (it had no server to move): not the old target's, the new one's. */
        pg_server_close(sv, "retargeted");
        rc_attempt(s);
        goto out;
    }
    if (!w->ok) {
        pg_rc_why_set(s, "%s", w->err);
        pg_server_close(sv, "reconnect failed");
        rc_failed(s);
        goto out;
    }
    rc_swap(s, sv, &w->notifies);
out:
    pgr_buf_free(&w->notifies);
    free(w);
    pg_session_unref(s);
}

/* Each attempt goes to the route's target as it is now: a session without a server is
 * not moved by a switch (there is nothing to move), so it goes where the switch went. */
static void rc_attempt(pg_session_t *s)
{
    const char *why = "out of memory";
    s->rc_which = sy_route_active(s->link.route);
    pg_rc_t *w = calloc(1, sizeof(*w));
    pg_server_t *sv = w ? pg_server_new(s, s->rc_which) : NULL;
    s->rc_attempts++;
    if (sv == NULL || pg_build_params(s, NULL, sv->link.target, &w->pp, &why) != 0) {
        pg_server_close(sv, "cannot reconnect");
        free(w);
        pg_rc_why_set(s, "%s", why);
        rc_failed(s);
        return;
    }
    s->pre = sv;   /* closed with the session, as a move's next server */
    w->req.data = w;
    w->s = s;
    w->sv = sv;
    memcpy(w->st, s->saved, sizeof(w->st));
    sv->job = 1;
    s->refs++;
    if (uv_queue_work(s->link.loop, &w->req, rc_work, rc_done) != 0) {
        s->refs--;
        sv->job = 0;
        pg_server_close(sv, "cannot reconnect");
        free(w);
        pg_rc_why_set(s, "cannot queue the attempt");
        rc_failed(s);
    }
}

/* Would s be reconnected if its upstream closed now: reconnect_window on, relaying, idle
 * (ReadyForQuery 'I' the last thing, nothing in flight or unsynced, no COPY), its state
 * saved and replayable. */
int pg_reconnectable(const pg_session_t *s)
{
    return sy_conf()->reconnect_window > 0 && s->state == PGS_RELAY && !s->admin && !s->terminating &&
           s->txn == 'I' && s->inflight == 0 && !s->unsynced && !s->copy_in && !s->copy_out && !s->dirty &&
           s->unsaved == NULL && s->pre == NULL && s->link.state != SY_CLIENT_CLOSING;
}

/*
 * The upstream of s closed; `why` says how. Returns 1 when s is idle with its state saved
 * and reconnect_window is on: s is RECONNECTING (its server closed, its client not read
 * until it is back). Returns 0 when the caller closes s as before.
 */
/* RECONNECTING to target `which`, the back-off from its start, the client not read.
 * Returns 1, or 0 when the session closed (its client could not be watched). */
static int rc_start(pg_session_t *s, conf_which_t which, const char *why)
{
    s->rc_which = which;
    s->rc_since = uv_now(s->link.loop);
    s->rc_delay = 100;
    s->rc_attempts = 0;
    pg_rc_why_set(s, "%s", why);
    pg_set_state(s, PGS_RECONNECTING);
    s->c2s.reading = 0;   /* the client's next query waits in the kernel */
    pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
    return s->state == PGS_RECONNECTING;
}

int pg_reconnect_begin(pg_session_t *s, const char *why)
{
    if (!pg_reconnectable(s) || s->server_fatal || !pgw_scan_at_boundary(&s->sscan) ||
        !pgw_scan_at_boundary(&s->cscan))
        return 0;
    sy_info("event=upstream_lost conn=%llu route=%s upstream=%s reason=\"%s\" owed=0 after=idle reconnecting=1",
            (unsigned long long)s->id, s->link.route->conf->name, s->srv->link.target->hostport, why);
    SY_STAT_ADD(s->link.route->err_lost, 1);
    conf_which_t which = s->srv->link.which;
    pg_server_close(s->srv, "lost");
    s->s2c.src_eof = 0;   /* that was the old server's end; the next one reads afresh */
    s->s2c.err = s->c2s.err = 0;
    s->fatal_dropped = 0;   /* the client's next query, held since, goes to the next server */
    if (rc_start(s, which, why))
        rc_attempt(s);
    return 1;
}

/* A released session's next message waits for a server (pg_release.c). */
void pg_reconnect_retake(pg_session_t *s)
{
    s->retake = 1;
    if (rc_start(s, sy_route_active(s->link.route), "no server was free") && !pg_pool_take(s))
        rc_attempt(s);
}

/* The pool handed a released session its server (s->srv, adopted, checked). */
void pg_reconnect_taken(pg_session_t *s)
{
    pg_server_t *sv = s->srv;
    static const pgr_buf_t none;
    pg_server_attach(s, NULL);   /* swapped in as a reconnect's new server is */
    rc_swap(s, sv, &none);
}

/* A released session found no server in the pool after all: connect. */
void pg_reconnect_attempt(pg_session_t *s)
{
    rc_attempt(s);
}

/* ---- new sessions while the target is down ------------------------------------------- */

static void retry_cb(uv_timer_t *t)
{
    pg_session_t *s = t->data;
    if (s->state == PGS_RESOLVING && s->srv != NULL && s->srv->pg == NULL && !s->srv->timer_on)
        pg_upstream_connect(s);
}

/*
 * A new session's connect failed with `state` (the SQLSTATE it would get) for `cause`.
 * Returns 1 when it tries again later, within reconnect_window from its first failure
 * (a fresh server attached, the session RESOLVING meanwhile); 0 when the caller reports
 * the failure now.
 */
int pg_connect_retry(pg_session_t *s, const char *state, const char *cause)
{
    uint64_t now = uv_now(s->link.loop);
    if (sy_conf()->reconnect_window == 0 || s->link.route == NULL || strcmp(state, "08001") != 0 ||
        !pgw_errclass_transient(cause))
        return 0;
    if (s->rc_since == 0) {
        s->rc_since = now;
        s->rc_delay = 100;
        s->rc_attempts = 0;
    }
    s->rc_attempts++;
    uint64_t spent = now - s->rc_since;
    if (spent >= (uint64_t)window_ms()) {
        sy_warn("event=reconnect_gave_up conn=%llu route=%s upstream=%s attempts=%d ms=%llu new=1",
                (unsigned long long)s->id, s->link.route->conf->name, s->srv->link.target->hostport, s->rc_attempts,
                (unsigned long long)spent);
        return 0;
    }
    uint64_t delay = spent + s->rc_delay > (uint64_t)window_ms() ? (uint64_t)window_ms() - spent : s->rc_delay;
    s->rc_delay = s->rc_delay * 2 > 1000 ? 1000 : s->rc_delay * 2;
    sy_info("event=reconnect_attempt conn=%llu route=%s upstream=%s attempt=%d ok=0 new=1 retry_ms=%llu",
            (unsigned long long)s->id, s->link.route->conf->name, s->srv->link.target->hostport, s->rc_attempts,
            (unsigned long long)delay);
    pg_server_t *fresh = pg_server_new(s, sy_route_active(s->link.route));
    if (fresh == NULL)
        return 0;
    pg_server_close(s->srv, "connect failed");
    pg_server_attach(s, fresh);
    if (s->state != PGS_RESOLVING)
        pg_set_state(s, PGS_RESOLVING);
    pg_timer_start(s, retry_cb, delay);
    return 1;
}
