/*
 * pg_release.c - server_release_delay: an idle Postgres client gives its server connection
 * back to the pool and stays connected with none, as RDS Proxy's multiplexing does; one
 * whose session holds state on its server is pinned to it for life ("pinning").
 *
 *   RELAY, idle (ReadyForQuery 'I', nothing in flight, no COPY, no move, job or cancel)
 *   for server_release_delay, found by the once-a-second tick (pg_tick)
 *     └─▶ a reported parameter differs from what libpq recorded at the connect: pinned
 *     └─▶ SAVING: PIN_SQL on the idle PGconn through libpq (pg_pool_pin_check, the way
 *         the pool's reset runs); the client is not read meanwhile
 *           ├─ a column not 0: pinned (logged once, counted, SHOW CLIENTS pin=...)
 *           ├─ the client sent something (or left) meanwhile, a switch opened its next
 *           │  server meanwhile (s->pre: the switch moves it), or a RELOAD set
 *           │  server_release_delay to 0: RELAY on the same server
 *           ├─ the server went (its FATAL, then its close): lost, as under the relay
 *           │  (pg_upstream_lost: reconnected when its state is saved)
 *           └─ else: RELEASED; the server goes to the pool (pg_pool_put: reset, IDLE), or
 *              is closed when the pool for its key is full
 *   RELEASED, the client's next message (or its hang-up)
 *     └─▶ a hang-up, or a Terminate (plain sockets): closed, no server taken for it
 *     └─▶ RECONNECTING (pg_reconnect_retake): an idle server of the pool, else a connect
 *         within reconnect_window, to the route's target as it is at each attempt (a
 *         switch has no server of a released session to move, so none is left on the old
 *         target); then the relay goes on where it stopped: no greeting,
 *         the same BackendKeyData key (a cancel reaches whatever server the session has),
 *         ParameterStatus for the values that differ
 *
 * What the check cannot see stays the client's to mind, as with PgBouncer's transaction
 * pooling: lastval()/currval(), the unnamed prepared statement, LOAD, session-level
 * plan caches; and pg_backend_pid() is the pid of whichever server serves it.
 */
#include "proxy/pg/pg_internal.h"

/* One row; each column 0 when the session holds none of it. The names below follow. */
static const char PIN_SQL[] =
    "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_settings WHERE source = 'session'),"
    " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements),"
    " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors),"
    " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()),"
    " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_catalog.pg_backend_pid()),"
    " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema())"
    " + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema()),"
    " (current_user <> session_user)::pg_catalog.int4";
static const char *const pin_names[] = { "settings", "prepared", "cursors", "listen", "advisory_lock",
                                         "temp", "role" };

static void pin(pg_session_t *s, const char *why)
{
    s->pin_why = why;
    SY_STAT_ADD(s->link.route->pool_pins, 1);
    sy_info("event=client_pinned conn=%llu route=%s upstream=%s backend_pid=%u reason=%s", (unsigned long long)s->id,
            s->link.route->conf->name, s->srv->link.target->hostport, s->srv->be_pid, why);
}

/* A reported parameter (SET of one, SET SESSION AUTHORIZATION, SET ROLE's is_superuser)
 * whose value the client last saw differs from what the server said at the connect or
 * the last reset, which is what the next server would say. */
static int params_changed(const pg_session_t *s)
{
    for (const char *const *p = pg_reported_params; *p; p++) {
        const char *v = PQparameterStatus(s->srv->pg, *p), *seen = pg_param_get(s, *p);
        if (v != NULL && seen != NULL && strcmp(v, seen) != 0)
            return 1;
    }
    return 0;
}

/*
 * Per worker, the clients due for their check while PIN_CHECKS_MAX checks ran
 * (pg_pool.c), in the order they came due. A check that ends starts the next one
 * (pg_release_checked), so a burst of clients is asked as fast as the server answers, not
 * eight a tick. A client taken off the queue is looked at afresh: it may have sent
 * something meanwhile.
 */
static pg_due_t due[SY_MAX_WORKERS];   /* circular, through the sessions' own nodes */
static int due_running[SY_MAX_WORKERS];

static pg_due_t *due_of(uv_loop_t *loop)
{
    pg_due_t *q = &due[sy_loop_index(loop)];
    if (q->next == NULL)
        q->prev = q->next = q;
    return q;
}

static void due_add(pg_session_t *s)
{
    pg_due_t *q = due_of(s->link.loop);
    if (s->due.next != NULL)
        return;
    s->due.prev = q->prev;
    s->due.next = q;
    q->prev->next = &s->due;
    q->prev = &s->due;
}

/* Off the queue: its turn came, or it closes (pg_destroy). */
void pg_release_forget(pg_session_t *s)
{
    if (s->due.next == NULL)
        return;
    s->due.prev->next = s->due.next;
    s->due.next->prev = s->due.prev;
    s->due.prev = s->due.next = NULL;
}

/* A check's turn is free on loop's worker: the clients waiting for one. Not re-entered
 * (a check that fails at once ends in pg_release_checked again). */
static void due_run(uv_loop_t *loop)
{
    int w = sy_loop_index(loop);
    if (due_running[w])
        return;
    due_running[w] = 1;
    uint64_t now = uv_now(loop);
    pg_due_t *q = due_of(loop);
    while (q->next != q && pg_pool_pin_room(loop)) {
        pg_session_t *s = (pg_session_t *)((char *)q->next - offsetof(pg_session_t, due));
        pg_release_forget(s);
        sy_debug("event=release_check_turn conn=%llu", (unsigned long long)s->id);
        pg_release_maybe(s, now);
    }
    due_running[w] = 0;
}

/* From the tick: start the release of an idle client's server. */
void pg_release_maybe(pg_session_t *s, uint64_t now)
{
    uint64_t delay = (uint64_t)sy_conf()->server_release_delay * 1000;
    if (delay == 0 || s->pin_why != NULL || s->admin || s->link.route == NULL || !s->link.route->conf->pool ||
        s->terminating || s->fatal_dropped || s->server_fatal || s->srv == NULL ||
        now - sy_activity_at(&s->activity, now) < delay ||
        s->c2s.end != s->c2s.start || s->s2c.end != s->s2c.start || s->s2c_extra.len > 0 ||
        s->link.state != SY_CLIENT_ACTIVE || sy_route_should_hold(&s->link))
        return;
    if (!pg_idle(s))
        return;
    if (params_changed(s)) {
        pin(s, "parameter");
        return;
    }
    if (s->custom_set) {
        pin(s, "custom_setting");   /* PG_CUSTOM_WHY: the check below cannot see it */
        return;
    }
    if (!pg_pool_pin_room(s->link.loop)) {
        due_add(s);
        return;
    }
    pg_release_forget(s);   /* the tick may get to it before its turn in the queue comes */
    pg_pool_pin_check(s, PIN_SQL);
}

/* Look at the client without reading: 1 it sent something, 0 it hung up (or its socket
 * failed), -1 nothing yet. With terminate set, *terminate says whether what it sent is a
 * whole Terminate, which needs no server; a plain socket only: a TLS record cannot be
 * peeked into, and such a client takes a server for it. */
static const uint8_t terminate_msg[5] = { 'X', 0, 0, 0, 4 };

static int client_peek(pg_session_t *s, int *terminate)
{
    uint8_t b[sizeof(terminate_msg)];
    if (terminate != NULL)
        *terminate = 0;
    if (s->client.ssl != NULL && sy_tls_pending(&s->client) > 0)
        return 1;
    ssize_t n = recv(s->client.fd, b, terminate != NULL && s->client.ssl == NULL ? sizeof(b) : 1,
                     MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        if (terminate != NULL && n == (ssize_t)sizeof(b) && memcmp(b, terminate_msg, sizeof(b)) == 0)
            *terminate = 1;
        return 1;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -1 : 0;
}

static void checked(pg_server_t *sv);

/* The check's answer is in (pg_pool.c's pool_io): release, pin, or go on; then the next
 * client due gets its turn. */
void pg_release_checked(pg_server_t *sv)
{
    uv_loop_t *loop = sv->link.loop;
    checked(sv);
    due_run(loop);
}

static void checked(pg_server_t *sv)
{
    pg_session_t *s = (pg_session_t *)sv->link.client;
    if (s == NULL || s->state != PGS_SAVING)
        return;
    pg_set_state(s, PGS_RELAY);
    int cancelled = sv->pin_cancel != PG_PIN_CANCEL_NONE;
    sv->pin_cancel = PG_PIN_CANCEL_NONE;
    if (sv->pool_failed) {
        /* A server that goes (a restart, pg_terminate_backend) answers the check with its
         * FATAL, and the check ends there, with the close that follows still unread: read
         * it now (no wait), so that it counts as the loss it is. */
        if (PQstatus(sv->pg) == CONNECTION_OK && PQisBusy(sv->pg))
            (void)PQconsumeInput(sv->pg);
        if (PQstatus(sv->pg) != CONNECTION_OK) {
            pg_upstream_lost(s, 0);   /* it closed meanwhile: as if under the relay */
            return;
        }
        if (PQisBusy(sv->pg) || PQtransactionStatus(sv->pg) != PQTRANS_IDLE) {
            /* No answer: what the server will still send is libpq's, not the client's. */
            sv->gone = 1;
            pg_close(s, "08006", "route %s: connection to %s lost: no answer to the release check",
                     s->link.route->conf->name, sv->link.target->hostport);
            return;
        }
        if (cancelled) {
            /* We cancelled it (pool_timeout_cb): the server is slow, not the session
             * stateful. The relay goes on; it is asked again after another delay. */
            sy_activity_mark(&s->activity);
            sy_info("event=release_check_cancelled conn=%llu route=%s backend_pid=%u", (unsigned long long)s->id,
                    s->link.route->conf->name, sv->be_pid);
            pg_release(s);
            return;
        }
        pin(s, "check_failed");
    } else if (sv->pin_found > 0) {
        int i = sv->pin_found - 1;
        pin(s, i < (int)(sizeof(pin_names) / sizeof(pin_names[0])) ? pin_names[i] : "state");
    } else if (s->pre == NULL && sy_conf()->server_release_delay > 0 && client_peek(s, NULL) < 0) {
        /* Nothing waiting, it is still there, no switch opened a server for it while it
         * was checked (one that did moves it as any idle session: it is released on the
         * new target later), and no RELOAD turned release off meanwhile. */
        uint32_t pid = sv->be_pid;
        pg_saved_free(s);   /* nothing to replay: the server said so */
        s->dirty = 0;
        s->unsaved = NULL;
        s->ro_suspect = 0;
        SY_STAT_ADD(s->link.route->pool_releases, 1);
        if (!pg_pool_put(s))
            pg_server_close(sv, "pool full");
        pg_set_state(s, PGS_RELEASED);
        sy_debug("event=server_released conn=%llu route=%s backend_pid=%u", (unsigned long long)s->id,
                 s->link.route->conf->name, pid);
        pg_watch(s, &s->client, UV_READABLE, pg_client_cb);   /* on to pg_release_wake */
        return;
    }
    pg_release(s);   /* the relay goes on, with the client's message if it sent one */
}

/* A released client sent something or hung up, or a hold on it is over: take a server. */
void pg_release_wake(pg_session_t *s)
{
    if (s->state != PGS_RELEASED)
        return;
    if (s->link.state == SY_CLIENT_HELD)
        return;   /* the hold's release comes back here */
    int terminate;
    int n = client_peek(s, &terminate);
    if (n == 0 || terminate) {
        uint8_t b[sizeof(terminate_msg)];
        if (terminate)   /* read, so that the close is not a reset */
            (void)!recv(s->client.fd, b, sizeof(b), MSG_DONTWAIT);
        pg_close(s, NULL, NULL);   /* it left: it had nothing on any server */
        return;
    }
    if (n < 0)
        return;   /* a spurious wake-up */
    if (sy_route_should_hold(&s->link)) {
        sy_session_set_state(&s->link, SY_CLIENT_HELD);   /* RESUME or the switch releases it */
        pg_watch(s, &s->client, 0, pg_client_cb);
        sy_switch_poke(s->link.route);
        return;
    }
    pg_reconnect_retake(s);
}
