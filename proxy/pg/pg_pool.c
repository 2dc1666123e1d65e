/*
 * pg_pool.c - session pooling, as PgBouncer's pool_mode = session: a Postgres server
 * connection outlives its client, reset, and serves the next client with the same key.
 *
 *   client leaves (pg_close, no error) with its server clean: ReadyForQuery 'I', nothing
 *   in flight, no COPY, not moving, no cancel running, the route's current target
 *        └─▶ pg_pool_keep: detached; DISCARD ALL through libpq (PQsendQuery, non-blocking,
 *            its replies dropped; libpq records the ParameterStatus values it reports)
 *        └─▶ IDLE on its worker's list for the route, watched for a hang-up
 *   next client, same key, same worker (pg_upstream_begin)
 *        └─▶ pg_pool_take: the newest IDLE server with the key; idle past
 *            server_check_delay: an empty query first (a dead one is closed and the next
 *            tried, then a fresh connect)
 *        └─▶ pg_relay_begin: the greeting from that server's ParameterStatus (as they are
 *            after the reset) and its real backend pid; a new cancel key maps to it
 *
 * The key is the target (which and its settings), the user, the database and every
 * startup parameter the client sent (application_name, client_encoding, options, ...), in
 * the client's order. A server was opened with exactly those, and RESET ALL (inside
 * DISCARD ALL) goes back to them, so the next client gets a session that equals a fresh
 * one, ParameterStatus included. Nothing is SET on reuse: a client with another
 * application_name gets another server.
 *
 * Why libpq for the reset: the relay never lets libpq read (it relays raw bytes), so the
 * PGconn is idle exactly as libpq left it, and libpq can run a query on it; it also keeps
 * PQparameterStatus current with what the reset reports, which is what the next greeting
 * is built from.
 *
 * Bounds: pool_size idle servers per worker and key, server_idle_timeout,
 * server_lifetime (checked on release and once a second, sy_sweep), and the route's
 * target: a switch or a RELOAD that retargets closes the idle servers of the old target
 * (sy_servers_check_idle), and one found stale on reuse is closed. A server that dies
 * while IDLE is closed; no client sees it: one whose death the loop has not seen yet is
 * looked at (a poll without waiting) before it is handed out.
 *
 * A client that stays connected can give its server back too (server_release_delay,
 * pg_release.c): the server is asked whether the session holds state (PG_POOL_PIN, a
 * query through libpq as the reset is), and if not it is put here as a leaving client's
 * is (pg_pool_put). Its next message takes one again through pg_pool_take, with the
 * session RECONNECTING (s->retake): the hand-out then ends in pg_reconnect_taken (the
 * ParameterStatus differences, no greeting) instead of pg_relay_begin.
 */
#include <poll.h>
#include "proxy/pg/pg_internal.h"

static void pool_io(pg_server_t *sv, int sent);
static void pool_hand(pg_session_t *s, pg_server_t *sv, int check);

/* Per worker, the servers being reset: a client that finds no idle server waits for one
 * of these rather than connecting (a reset is one round trip, a connect many). */
static pg_server_t *resetting[SY_MAX_WORKERS];

/* Per worker, release checks in flight. server_release_delay after a burst of clients
 * connected, every one of them is due at once: 5,000 catalog queries sent together took a
 * 2-CPU Postgres with 5,000 backends past connect_timeout (bench/idle_bench.sh, 2026-12-03),
 * and a check that times out used to close its client. The rest wait their turn in
 * pg_release.c's queue. */
#define PIN_CHECKS_MAX 8
static unsigned pin_checks[SY_MAX_WORKERS];

/* 1 when another release check may start on loop's worker. */
int pg_pool_pin_room(uv_loop_t *loop)
{
    return pin_checks[sy_loop_index(loop)] < PIN_CHECKS_MAX;
}

/* sv's own query is over (answered, failed or its server closing). */
static void op_end(pg_server_t *sv)
{
    if (sv->pool_op == PG_POOL_PIN)
        pin_checks[sy_loop_index(sv->link.loop)]--;
    sv->pool_op = 0;
}

static void resetting_add(pg_server_t *sv)
{
    pg_server_t **head = &resetting[sy_loop_index(sv->link.loop)];
    sv->rs_prev = NULL;
    sv->rs_next = *head;
    if (*head != NULL)
        (*head)->rs_prev = sv;
    *head = sv;
}

static void resetting_remove(pg_server_t *sv)
{
    pg_server_t **head = &resetting[sy_loop_index(sv->link.loop)];
    if (sv->rs_prev == NULL && *head != sv)
        return;   /* not on it */
    if (sv->rs_prev != NULL)
        sv->rs_prev->rs_next = sv->rs_next;
    else
        *head = sv->rs_next;
    if (sv->rs_next != NULL)
        sv->rs_next->rs_prev = sv->rs_prev;
    sv->rs_prev = sv->rs_next = NULL;
}

/* The server's reset is over (or it closes): off the list, and its waiter, if any, is
 * returned to the caller. */
static pg_session_t *reset_over(pg_server_t *sv)
{
    pg_session_t *w = sv->waiter;
    resetting_remove(sv);
    sv->waiter = NULL;
    if (w != NULL)
        w->pool_wait = NULL;
    return w;
}

/* A client waited for a server that did not come: it connects. */
static void waiter_connect(pg_session_t *w)
{
    if (w != NULL && w->state == PGS_RESOLVING)
        pg_upstream_connect(w);
    else if (w != NULL && w->state == PGS_RECONNECTING && w->retake)
        pg_reconnect_attempt(w);
}

/* s has the server it was handed (s->srv, checked if it had to be): on to the greeting,
 * or, for a released session, to the relay it left. */
static void hand_over(pg_session_t *s)
{
    if (s->retake) {
        pg_reconnect_taken(s);
        return;
    }
    pg_set_state(s, PGS_CONNECTING);
    pg_relay_begin(s);
}

static const char *op_name(int op)
{
    return op == PG_POOL_RESET ? "reset" : op == PG_POOL_CHECK ? "check" : "pin_check";
}

void pg_pool_unwait(pg_session_t *s)
{
    if (s->pool_wait != NULL) {
        s->pool_wait->waiter = NULL;
        s->pool_wait = NULL;
    }
}

/* sv closes (pg_server_close): a reset it was in is over. */
void pg_pool_forget(pg_server_t *sv)
{
    int op = sv->pool_op;
    op_end(sv);
    if (op == PG_POOL_RESET)
        waiter_connect(reset_over(sv));
}

static void no_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Append "a\0b\0" to the key being built (no startup string holds a NUL, so no two
 * parameter lists give the same key). Returns 0 or -1 (out of memory). */
static int key_add(char **k, size_t *n, size_t *cap, const char *a, const char *b)
{
    size_t need = strlen(a) + strlen(b) + 2;
    if (*n + need > *cap) {
        size_t ncap = (*n + need) * 2;
        char *nk = realloc(*k, ncap);
        if (nk == NULL)
            return -1;
        *k = nk;
        *cap = ncap;
    }
    size_t la = strlen(a) + 1, lb = strlen(b) + 1;
    memcpy(*k + *n, a, la);
    memcpy(*k + *n + la, b, lb);
    *n += la + lb;
    return 0;
}

/* The key of the client's session: user, database, then its startup parameters. */
static char *pool_key(const pg_session_t *s, size_t *len)
{
    size_t cap = 0, n = 0, off = 0;
    char *k = NULL;
    const char *name, *value;
    int bad = key_add(&k, &n, &cap, "user", s->user ? s->user : "") ||
              key_add(&k, &n, &cap, "database", s->database ? s->database : "");
    while (!bad && pgw_startup_next(&s->st, &off, &name, &value))
        if (strcmp(name, "user") != 0 && strcmp(name, "database") != 0)
            bad = key_add(&k, &n, &cap, name, value);
    if (bad) {
        free(k);
        return NULL;
    }
    *len = n;
    return k;
}

/* Why sv may not be (or stay) a pooled server now, or NULL. */
static const char *pool_unfit(const pg_server_t *sv, uint64_t now)
{
    const sy_route_t *r = sv->link.route;
    const conf_t *c = sy_conf();
    if (!r->conf->pool || SY_LOAD(sy_server.stopping))
        return "pool off";
    if (sv->link.which != sy_route_active(r) || sv->link.target != sy_route_target(r, sv->link.which))
        return "retargeted";
    if (sv->pg == NULL || PQstatus(sv->pg) != CONNECTION_OK)
        return "broken";
    if (c->server_lifetime > 0 && now - sv->born_at >= (uint64_t)c->server_lifetime * 1000)
        return "server_lifetime";
    if (sv->link.state == SY_SERVER_IDLE && c->server_idle_timeout > 0 &&
        now - sv->idle_since >= (uint64_t)c->server_idle_timeout * 1000)
        return "server_idle_timeout";
    return NULL;
}

/* Idle servers of sv's route on its worker with sv's key. */
static int pool_count(const pg_server_t *sv)
{
    int n = 0;
    sy_server_link_t *head = sy_worker_servers_of(sy_loop_index(sv->link.loop), sv->link.route, SY_SERVER_IDLE);
    for (sy_server_link_t *l = head->next; l != head; l = l->next) {
        const pg_server_t *o = (const pg_server_t *)l;
        n += o->keylen == sv->keylen && memcmp(o->key, sv->key, sv->keylen) == 0;
    }
    return n;
}

/*
 * A release check that outlives the timeout is cancelled, as a client's query would be:
 * the server is there, only slow (a lock on a catalog, a server swamped), and its client
 * must not pay for a check of ours with its connection. Its answer (the cancel's error, or
 * the result that crossed the cancel) is taken only once the cancel was delivered: a
 * cancel still on its way after the relay went on would land on the client's next query.
 * The backend ignores one that comes while it is idle.
 */
static void pin_cancel_done(void *arg, int ok, const char *err)
{
    pg_server_t *sv = arg;
    if (!ok)
        sy_info("event=release_check_cancel_failed backend_pid=%u error=\"%s\"", sv->be_pid, err);
    sv->pin_cancel = PG_PIN_CANCEL_DONE;
    if (sv->pin_answered) {
        sv->pin_answered = 0;
        pg_release_checked(sv);   /* nothing if sv closed or left its client meanwhile */
    }
    pg_server_unref(sv);
}

/* 0 when the cancel of sv's release check is on its way. */
static int pin_cancel_start(pg_server_t *sv)
{
    PGcancel *pc = PQgetCancel(sv->pg);
    if (pc == NULL || pg_cancel_run(sv->link.loop, pc, pin_cancel_done, sv) != 0)
        return -1;
    sv->refs++;   /* pin_cancel_done's */
    sv->pin_cancel = PG_PIN_CANCEL_RUNNING;
    return 0;
}

/* A reset or check that does not answer within the connect timeout has failed; a release
 * check is cancelled first, and fails only if it does not answer the cancel either. */
static void pool_timeout_cb(uv_timer_t *t)
{
    pg_server_t *sv = t->data;
    if (sv->pool_op == 0)
        return;
    if (sv->pool_op == PG_POOL_PIN && sv->pin_cancel == PG_PIN_CANCEL_NONE && pin_cancel_start(sv) == 0) {
        sy_info("event=release_check_slow upstream=%s backend_pid=%u ms=%llu action=cancel",
                sv->link.target->hostport, sv->be_pid, (unsigned long long)sv->timeout_ms);
        uv_timer_start(&sv->timer, pool_timeout_cb, sv->timeout_ms, 0);
        return;
    }
    sy_info("event=server_pool_timeout upstream=%s backend_pid=%u op=%s", sv->link.target->hostport, sv->be_pid,
            op_name(sv->pool_op));
    sv->pool_failed = 1;
    pool_io(sv, 0);
}

/* Start one of our own queries on sv (its replies go to libpq, not to a client), bounded
 * by the connect timeout (its connect timer, stopped once it had connected). */
static int pool_send(pg_server_t *sv, int op, const char *sql)
{
    sv->pool_op = op;
    sv->pool_failed = 0;
    sv->pin_found = 0;
    sv->pin_cancel = PG_PIN_CANCEL_NONE;
    sv->pin_answered = 0;
    if (!PQsendQuery(sv->pg, sql))
        return -1;
    if (op == PG_POOL_PIN)
        pin_checks[sy_loop_index(sv->link.loop)]++;   /* op_end takes it off */
    if (!sv->timer_on) {   /* opened by a move, on the thread pool: no connect timer yet */
        uv_timer_init(sv->link.loop, &sv->timer);
        sv->timer.data = sv;
        sv->refs++;   /* dropped in its close callback (pg_server_close) */
        sv->timer_on = 1;
    }
    if (sv->timeout_ms == 0)
        sv->timeout_ms = (uint64_t)sy_conf()->connect_timeout * 1000;
    uv_timer_start(&sv->timer, pool_timeout_cb, sv->timeout_ms, 0);
    pool_io(sv, 1);
    return 0;
}

/* s's server is clean and may go to the pool: idle, nothing of the client's waiting, no
 * move, job or cancel, not opened with the client's own password, fit (pool_unfit). */
static int pool_fit(const pg_session_t *s)
{
    const pg_server_t *sv = s->srv;
    return s->state == PGS_RELAY && sv != NULL && s->pre == NULL && !sv->job && !sv->closed && !sv->gone &&
           sv->pool_op == 0 && s->client_password == NULL && s->cancels == 0 && pg_idle(s) &&
           !sy_pipe_pending(&s->c2s) && s->c2s.end == s->c2s.fwd && sy_conf()->pool_size > 0 &&
           pool_unfit(sv, uv_now(s->link.loop)) == NULL;
}

/* The client's session is over and its server clean: keep the server (reset first).
 * Returns 1 when s->srv was taken off s for the pool, 0 when s closes it as before. */
int pg_pool_keep(pg_session_t *s)
{
    return pool_fit(s) && pg_pool_put(s);
}

/* Ask s's idle server, through libpq, the one-row query `sql` (pg_release.c): each column
 * 0 when the session holds no state of that kind. Returns 1 when it runs (the session
 * SAVING meanwhile; pg_release_checked follows), 0 when the server is not fit for the
 * pool now. The caller saw a check's turn free (pg_pool_pin_room). */
int pg_pool_pin_check(pg_session_t *s, const char *sql)
{
    pg_server_t *sv = s->srv;
    if (!pool_fit(s) || (sv->conn.ssl != NULL && sy_tls_pending(&sv->conn) > 0))
        return 0;
    PQsetNoticeProcessor(sv->pg, no_notice, NULL);
    pg_set_state(s, PGS_SAVING);
    s->c2s.reading = 0;   /* the client's next message waits for the answer */
    pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
    if (s->state == PGS_SAVING && pool_send(sv, PG_POOL_PIN, sql) != 0) {
        sv->pool_failed = 1;
        sv->pool_op = 0;
        pg_release_checked(sv);
    }
    return 1;
}

/* Put s's server in the pool: detached from s, reset, then IDLE. Returns 1, or 0 when it
 * cannot be kept (the pool for its key is full): s still has it. */
int pg_pool_put(pg_session_t *s)
{
    pg_server_t *sv = s->srv;
    if (sv->key == NULL && (sv->key = pool_key(s, &sv->keylen)) == NULL)
        return 0;
    if (pool_count(sv) >= sy_conf()->pool_size)
        return 0;
    pg_server_attach(s, NULL);   /* sv has no client now; it stays ACTIVE while it resets */
    PQsetNoticeProcessor(sv->pg, no_notice, NULL);
    resetting_add(sv);
    if (pool_send(sv, PG_POOL_RESET, "DISCARD ALL") != 0)
        pg_server_close(sv, "reset failed");
    return 1;
}

static void pool_cb(sy_conn_t *c, int status, int events)
{
    (void)status;
    (void)events;
    pool_io(c->data, 0);
}

static void notifies_drop(pg_server_t *sv)
{
    PGnotify *n;
    while ((n = PQnotifies(sv->pg)) != NULL)
        PQfreemem(n);
}

/* Read and drop what an idle server said (a notice, a notification, its FATAL before it
 * goes), including what its TLS session already holds decrypted. 0, or -1 when it is gone. */
static int idle_drain(pg_server_t *sv)
{
    do {
        if (!PQconsumeInput(sv->pg))
            return -1;
        while (!PQisBusy(sv->pg)) {
            PGresult *r = PQgetResult(sv->pg);
            if (r == NULL)
                break;
            PQclear(r);
        }
        notifies_drop(sv);
        if (PQstatus(sv->pg) != CONNECTION_OK)
            return -1;
    } while (sv->conn.ssl != NULL && sy_tls_pending(&sv->conn) > 0);
    return 0;
}

/* A server died or said something while IDLE. */
static void idle_cb(sy_conn_t *c, int status, int events)
{
    pg_server_t *sv = c->data;
    (void)events;
    if (status < 0 || idle_drain(sv) != 0)
        pg_server_close(sv, "closed while idle");
}

static void reset_done(pg_server_t *sv)
{
    uint64_t now = uv_now(sv->link.loop);
    pg_session_t *w = reset_over(sv);
    const char *why = sv->pool_failed || PQtransactionStatus(sv->pg) != PQTRANS_IDLE ? "reset failed"
                                                                                      : pool_unfit(sv, now);
    notifies_drop(sv);
    if (why == NULL && sv->conn.ssl != NULL && sy_tls_pending(&sv->conn) > 0 && idle_drain(sv) != 0)
        why = "closed after the reset";   /* nothing may be left for the next client to read */
    if (why == NULL && w == NULL && pool_count(sv) >= sy_conf()->pool_size)
        why = "pool full";
    if (why != NULL) {
        pg_server_close(sv, why);
        waiter_connect(w);
        return;
    }
    SY_STAT_ADD(sv->link.route->pool_resets, 1);
    sv->idle_since = now;
    if (w != NULL) {   /* straight to the client that waited for it */
        w->refs++;
        pool_hand(w, sv, 0);
        pg_session_unref(w);
        return;
    }
    sy_server_set_state(&sv->link, SY_SERVER_IDLE);
    if (sy_conn_watch(&sv->conn, UV_READABLE, idle_cb) != 0)
        pg_server_close(sv, "cannot watch");
    else
        sy_debug("event=server_idle upstream=%s backend_pid=%u", sv->link.target->hostport, sv->be_pid);
}

static void check_done(pg_server_t *sv)
{
    pg_session_t *s = (pg_session_t *)sv->link.client;
    notifies_drop(sv);
    if (sv->pool_failed || PQtransactionStatus(sv->pg) != PQTRANS_IDLE) {
        sy_info("event=server_check_failed conn=%llu upstream=%s backend_pid=%u", (unsigned long long)s->id,
                sv->link.target->hostport, sv->be_pid);
        pg_server_close(sv, "check failed");
        if (s->retake) {   /* another idle server, or a connect as a reconnect makes */
            if (!pg_pool_take(s))
                pg_reconnect_attempt(s);
            return;
        }
        pg_server_t *fresh = pg_server_new(s, sy_route_active(s->link.route));
        if (fresh == NULL) {
            pg_close(s, "53200", "route %s: out of memory", s->link.route->conf->name);
            return;
        }
        pg_server_attach(s, fresh);
        pg_upstream_begin(s);   /* another idle server, or a fresh connect */
        return;
    }
    hand_over(s);
}

/* One step of our own query: flush, read, take every result; done at the last. Just
 * after the query is sent (sent) the answer cannot be there yet: no read, which would
 * be a recv that finds nothing, per client that leaves. */
static void pool_io(pg_server_t *sv, int sent)
{
    int flushed = 0;
    if (sv->pool_failed)
        goto done;   /* timed out: nothing more to wait for */
    flushed = PQflush(sv->pg);
    if (flushed < 0 || (!sent && !PQconsumeInput(sv->pg))) {
        sv->pool_failed = 1;
        goto done;
    }
    while (!PQisBusy(sv->pg)) {
        PGresult *r = PQgetResult(sv->pg);
        if (r == NULL)
            goto done;
        ExecStatusType st = PQresultStatus(r);
        ExecStatusType want = sv->pool_op == PG_POOL_RESET   ? PGRES_COMMAND_OK
                              : sv->pool_op == PG_POOL_CHECK ? PGRES_EMPTY_QUERY
                                                             : PGRES_TUPLES_OK;
        if (st != want || (sv->pool_op == PG_POOL_PIN && PQntuples(r) != 1))
            sv->pool_failed = 1;
        else if (sv->pool_op == PG_POOL_PIN)
            for (int i = 0; i < PQnfields(r) && sv->pin_found == 0; i++)
                if (strcmp(PQgetvalue(r, 0, i), "0") != 0)
                    sv->pin_found = i + 1;
        PQclear(r);
    }
    if (sy_conn_watch(&sv->conn, UV_READABLE | (flushed ? UV_WRITABLE : 0), pool_cb) == 0)
        return;
    sv->pool_failed = 1;
done:;
    int op = sv->pool_op;
    op_end(sv);
    if (sv->timer_on)
        uv_timer_stop(&sv->timer);
    if (op == PG_POOL_RESET)
        reset_done(sv);
    else if (op == PG_POOL_CHECK)
        check_done(sv);
    else if (sv->pin_cancel == PG_PIN_CANCEL_RUNNING)
        sv->pin_answered = 1;   /* taken once the cancel was delivered: pin_cancel_done */
    else
        pg_release_checked(sv);
}

/* An IDLE server about to be handed out died, or said something (its FATAL), and the
 * loop has not seen it yet: look now, without waiting. 1 when it is no use. */
static int idle_dead(pg_server_t *sv)
{
    struct pollfd pfd = { .fd = sv->conn.fd, .events = POLLIN };
    int tls = sv->conn.ssl != NULL && sy_tls_pending(&sv->conn) > 0;
    if (!tls && poll(&pfd, 1, 0) <= 0)
        return 0;
    if (!PQconsumeInput(sv->pg))
        return 1;
    int bad = 0;
    PGresult *r;
    while (!PQisBusy(sv->pg) && (r = PQgetResult(sv->pg)) != NULL) {
        bad |= PQresultStatus(r) == PGRES_FATAL_ERROR;   /* an error while idle: its FATAL */
        PQclear(r);
    }
    notifies_drop(sv);
    return bad || PQstatus(sv->pg) != CONNECTION_OK;
}

/* The newest IDLE server of s's route on this worker with the key, fit for use. */
static pg_server_t *pool_find(pg_session_t *s, const char *key, size_t keylen)
{
    uint64_t now = uv_now(s->link.loop);
    sy_server_link_t *head = sy_worker_servers_of(sy_loop_index(s->link.loop), s->link.route, SY_SERVER_IDLE);
    for (sy_server_link_t *l = head->prev, *prev; l != head; l = prev) {
        pg_server_t *sv = (pg_server_t *)l;
        prev = l->prev;
        if (sv->keylen != keylen || memcmp(sv->key, key, keylen) != 0)
            continue;
        const char *why = pool_unfit(sv, now);
        if (why == NULL && idle_dead(sv))
            why = "closed while idle";
        if (why == NULL)
            return sv;
        pg_server_close(sv, why);
    }
    return NULL;
}

/* A server of s's route on this worker with the key that is being reset and that no
 * other client waits for. */
static pg_server_t *pool_find_resetting(pg_session_t *s, const char *key, size_t keylen)
{
    for (pg_server_t *sv = resetting[sy_loop_index(s->link.loop)]; sv != NULL; sv = sv->rs_next)
        if (sv->waiter == NULL && sv->link.route == s->link.route && sv->keylen == keylen &&
            memcmp(sv->key, key, keylen) == 0 && pool_unfit(sv, uv_now(s->link.loop)) == NULL)
            return sv;
    return NULL;
}

/* s takes sv (IDLE, or just reset for it) instead of its unopened server; with check, an
 * empty query runs first. */
static void pool_hand(pg_session_t *s, pg_server_t *sv, int check)
{
    uint64_t now = uv_now(s->link.loop);
    pg_server_close(s->srv, "pooled server reused");   /* the unopened one */
    pg_server_attach(s, sv);
    sy_server_set_state(&sv->link, SY_SERVER_CONNECTING);
    SY_STAT_ADD(s->link.route->pool_reuses, 1);
    sy_debug("event=server_reuse conn=%llu upstream=%s backend_pid=%u idle_ms=%llu", (unsigned long long)s->id,
             sv->link.target->hostport, sv->be_pid, (unsigned long long)(now - sv->idle_since));
    if (!s->retake)
        pg_set_state(s, PGS_RESOLVING);
    s->c2s.reading = 0;
    if (check) {
        if (pool_send(sv, PG_POOL_CHECK, "") != 0) {
            sv->pool_failed = 1;
            sv->pool_op = 0;
            check_done(sv);
        }
        return;
    }
    hand_over(s);
}

/* Give s an idle server instead of connecting, or one being reset to wait for. Returns 1
 * when one was taken (the session goes on to its greeting, at once, after a check or
 * after the reset), 0 when s must connect. */
int pg_pool_take(pg_session_t *s)
{
    size_t keylen;
    char *key;
    if (!s->link.route->conf->pool || (key = pool_key(s, &keylen)) == NULL)
        return 0;
    pg_server_t *sv = pool_find(s, key, keylen);
    pg_server_t *rs = sv == NULL ? pool_find_resetting(s, key, keylen) : NULL;
    free(key);
    if (sv != NULL) {
        uint64_t idle = uv_now(s->link.loop) - sv->idle_since;
        pool_hand(s, sv, idle >= (uint64_t)sy_conf()->server_check_delay * 1000);
        return 1;
    }
    if (rs == NULL)
        return 0;
    rs->waiter = s;
    s->pool_wait = rs;
    if (!s->retake)
        pg_set_state(s, PGS_RESOLVING);
    s->c2s.reading = 0;
    sy_debug("event=server_wait conn=%llu backend_pid=%u", (unsigned long long)s->id, rs->be_pid);
    return 1;
}

/* The sweep's and a switch's look at an IDLE server (sy_server_link_t.idle_check). */
void pg_pool_idle_check(sy_server_link_t *l, uint64_t now)
{
    pg_server_t *sv = (pg_server_t *)l;
    const char *why = pool_unfit(sv, now);
    if (why != NULL)
        pg_server_close(sv, why);
}
