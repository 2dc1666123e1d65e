/*
 * pg_session.c - one Postgres client connection (pg_session_t) relaying to its server
 * connection (pg_server_t, pg_server.c): the client's lifecycle (references, the state,
 * the one close path), the relay and its scans, the greeting. The other parts of a
 * session are in pg_startup.c, pg_server.c, pg_move.c and pg_console.c (pg_internal.h
 * lists them).
 *
 *   client ──SSLRequest?──▶ 'N' (or 'S' + TLS) ──StartupMessage──▶ route by database
 *          ──▶ resolve upstream names off the loop (uv_getaddrinfo)
 *          ──▶ libpq connects non-blocking (PQconnectStartParams / PQconnectPoll)
 *          ──▶ greeting to the client: AuthenticationOk, ParameterStatus*,
 *              BackendKeyData(upstream pid, our key), ReadyForQuery
 *          ──▶ relay: two pipes, each framed by pgw_scan so the session knows the
 *              transaction status, what is in flight and whether COPY is running
 *
 * States (one enum, moved only by pg_set_state):
 *
 *   STARTUP     reading the client's startup packets
 *   CLIENT_TLS  TLS handshake with the client after answering 'S'
 *   AUTH        waiting for the client's password (listeners with auth_password)
 *   RESOLVING   resolving upstream host names on the thread pool
 *   CONNECTING  libpq is connecting; its socket may change between polls
 *   RELAY       relaying both ways
 *   MOVING      switchover: the session is being moved to the route's new target
 *   ADMIN       serving the admin console (database "switchyard", admin.c)
 *   SAVING      idle, its state being read for a reconnect's replay (pg_reconnect.c)
 *   RECONNECTING its upstream closed while idle, or a released session sent its next
 *               message: a server is being opened (or taken from the pool), the
 *               client's next query waits (pg_reconnect.c)
 *   RELEASED    idle with no server: it went back to the pool (pg_release.c)
 *   CLOSING     flushing a last ErrorResponse to the client, then closing
 *
 * The upstream fd and TLS session belong to libpq: we adopt them after PQconnectPoll
 * says OK, and give them back through PQfinish when the session ends.
 *
 * Lifetime: a session is reference counted. The session holds one reference until it
 * closes; each thread-pool request and the timer's close callback hold one. Memory is
 * freed when the last reference goes, never inside a callback that still uses it.
 */
#include "proxy/pg/pg_internal.h"

static void server_cb(sy_conn_t *c, int status, int events);

const char *const pg_state_names[] = {
    "startup", "client_tls", "auth", "resolving", "connecting", "relay", "moving", "admin", "saving",
    "reconnecting", "released", "closing", "closed"
};

/* Parameters the server reports with ParameterStatus (GUC_REPORT) in 15..17. libpq has
 * no call to enumerate what it received, so we ask for each by name. */
const char *const pg_reported_params[] = {
    "application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
    "in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser",
    "scram_iterations", "search_path", "server_encoding", "server_version",
    "session_authorization", "standard_conforming_strings", "TimeZone", NULL
};

uint64_t pg_session_id(const pg_session_t *s)
{
    return s->id;
}

uv_loop_t *pg_session_loop(const pg_session_t *s)
{
    return s->link.loop;
}

void pg_session_ref(pg_session_t *s)
{
    s->refs++;
}

static void pg_free(pg_session_t *s)
{
    free(s->startup);
    free(s->scram);
    pg_saved_free(s);
    free(s->params);
    free(s->rc_why);
    if (s->client_password != NULL) {
        OPENSSL_cleanse(s->client_password, strlen(s->client_password));
        free(s->client_password);
    }
    pgr_buf_free(&s->admin_out);
    pgr_buf_free(&s->s2c_extra);
    pgw_scan_release(&s->cscan);
    pgw_scan_release(&s->sscan);
    sy_pipe_release(&s->c2s);
    sy_pipe_release(&s->s2c);
    free(s);
}

void pg_session_unref(pg_session_t *s)
{
    if (--s->refs == 0)
        pg_free(s);
}

PGcancel *pg_session_cancel_handle(pg_session_t *s, uint32_t pid)
{
    if (s->state != PGS_RELAY || s->srv == NULL || s->srv->pg == NULL || s->client_pid != pid)
        return NULL;
    PGcancel *pc = PQgetCancel(s->srv->pg);
    s->cancels += pc != NULL;
    return pc;
}

void pg_session_cancel_done(pg_session_t *s)
{
    s->cancels--;
}

void pg_set_state(pg_session_t *s, pg_state_t to)
{
    /* The only legal moves; anything else is a bug. */
    static const unsigned allowed[] = {
        [PGS_STARTUP]    = 1u << PGS_CLIENT_TLS | 1u << PGS_AUTH | 1u << PGS_RESOLVING | 1u << PGS_CLOSING |
                           1u << PGS_STARTUP | 1u << PGS_ADMIN,
        [PGS_CLIENT_TLS] = 1u << PGS_STARTUP | 1u << PGS_CLOSING,
        [PGS_AUTH]       = 1u << PGS_RESOLVING | 1u << PGS_CLOSING | 1u << PGS_ADMIN,
        [PGS_RESOLVING]  = 1u << PGS_CONNECTING | 1u << PGS_CLOSING |
                           1u << PGS_RESOLVING,   /* a pooled server failed its check: another */
        [PGS_CONNECTING] = 1u << PGS_RELAY | 1u << PGS_CLOSING |
                           1u << PGS_AUTH |   /* the server wants the client's own password */
                           1u << PGS_RESOLVING,   /* reconnect_window: try again later */
        [PGS_RELAY]      = 1u << PGS_CLOSING | 1u << PGS_MOVING | 1u << PGS_SAVING | 1u << PGS_RECONNECTING |
                           1u << PGS_RELEASED,
        [PGS_MOVING]     = 1u << PGS_RELAY | 1u << PGS_CLOSING,
        [PGS_ADMIN]      = 1u << PGS_CLOSING,
        [PGS_SAVING]     = 1u << PGS_RELAY | 1u << PGS_CLOSING,
        [PGS_RECONNECTING] = 1u << PGS_RELAY | 1u << PGS_CLOSING,
        [PGS_RELEASED]   = 1u << PGS_RECONNECTING | 1u << PGS_CLOSING,
        [PGS_CLOSING]    = 1u << PGS_CLOSED,
        [PGS_CLOSED]     = 0,
    };
    if (!(allowed[s->state] & (1u << to))) {
        sy_err("event=bug conn=%llu from=%s to=%s", (unsigned long long)s->id,
               pg_state_names[s->state], pg_state_names[to]);
        abort();
    }
    s->state = to;
    if (to == PGS_RELAY)
        sy_session_relaying(&s->link);
    else if (to == PGS_CLOSING)
        sy_session_closing(&s->link);
}

/* ---- teardown ------------------------------------------------------------------ */

static void timer_close_cb(uv_handle_t *h)
{
    pg_session_unref(h->data);
}

/* The session is done with its server connections (a move job still using one keeps it
 * until it is done: pg_server_close hands it over). */
static void pg_servers_close(pg_session_t *s, const char *reason)
{
    pg_server_close(s->srv, reason);
    pg_server_close(s->pre, reason);
}

static void pg_destroy(pg_session_t *s)
{
    if (s->state == PGS_CLOSED)
        return;
    pg_set_state(s, PGS_CLOSED);
    sy_session_unlink(&s->link);
    pg_cancel_unregister(s->key);
    s->key = 0;
    pg_release_forget(s);
    pg_servers_close(s, "client closed");
    sy_conn_close(&s->client);
    if (s->link.route) {
        SY_STAT_SUB(s->link.route->clients, 1);
        SY_STAT_ADD(s->link.route->bytes_in, s->c2s.bytes);
        SY_STAT_ADD(s->link.route->bytes_out, s->s2c.bytes);
    }
    SY_STAT_SUB(sy_server.nclients, 1);
    sy_debug("event=disconnect conn=%llu", (unsigned long long)s->id);
    if (s->timer_on) {
        uv_timer_stop(&s->timer);
        s->timer_on = 0;
        uv_close((uv_handle_t *)&s->timer, timer_close_cb);   /* its ref goes in the callback */
    }
    pg_session_unref(s);
    sy_server_client_gone();
}

static void closing_timeout_cb(uv_timer_t *t)
{
    pg_destroy(t->data);
}

/*
 * CLOSING: write what is left for the client. After an error, close the way a server
 * should (a lingering close): half-close, then read and drop whatever the client still
 * sends until it closes or the closing timer fires. Closing with unread input would make
 * the kernel send a reset, and the client could lose the ErrorResponse that explains why.
 */
void pg_closing_drive(pg_session_t *s)
{
    int r = sy_pipe_flush(&s->s2c);
    if (r < 0 || (!sy_pipe_pending(&s->s2c) && !s->linger)) {
        pg_destroy(s);
        return;
    }
    if (sy_pipe_pending(&s->s2c)) {
        pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
        return;
    }
    if (s->linger == 1) {
        shutdown(s->client.fd, SHUT_WR);
        s->linger = 2;
    }
    for (;;) {
        uint8_t junk[4096];
        ssize_t n = recv(s->client.fd, junk, sizeof(junk), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        pg_destroy(s);   /* the client closed (or failed): done */
        return;
    }
    pg_watch(s, &s->client, UV_READABLE, pg_client_cb);
}

/* End the session. With a sqlstate, the client first gets a FATAL ErrorResponse whose
 * message is "switchyard: " + fmt; it is written only at a message boundary of the
 * server->client stream (otherwise the client would misparse it) and the session waits
 * at most 5 s for it to drain. */
void pg_close(pg_session_t *s, const char *sqlstate, const char *fmt, ...)
{
    if (s->state == PGS_CLOSING || s->state == PGS_CLOSED)
        return;
    pg_pool_unwait(s);
    if (sqlstate == NULL)
        pg_pool_keep(s);   /* a clean server stays for the next client */
    char msg[1024];
    int boundary = (pgw_scan_at_boundary(&s->sscan) || s->s2c_cut) && s->s2c.fwd == s->s2c.end;
    pg_set_state(s, PGS_CLOSING);
    /* Linger only where the client may still be sending: a protocol violation. */
    s->linger = sqlstate != NULL && strcmp(sqlstate, "08P01") == 0 && s->client.fd >= 0 && !SY_LOAD(sy_server.stopping);
    pg_servers_close(s, sqlstate ? sqlstate : "client closed");
    s->c2s.reading = 0;
    if (sqlstate != NULL) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(msg, sizeof(msg), "switchyard: ");
        vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
        va_end(ap);
        char q[1100];
        sy_info("event=client_error conn=%llu route=%s sqlstate=%s message=%s", (unsigned long long)s->id,
                s->link.route ? s->link.route->conf->name : "-", sqlstate, sy_logq(q, sizeof(q), msg));
        if (s->link.route) {
            SY_STAT_ADD(s->link.route->nerrors, 1);
            if (strcmp(sqlstate, "08001") == 0 || strcmp(sqlstate, "28P01") == 0 || strcmp(sqlstate, "53300") == 0)
                SY_STAT_ADD(s->link.route->err_connect, 1);
            else if (strcmp(sqlstate, "08006") == 0)
                SY_STAT_ADD(s->link.route->err_lost, 1);
            else if (strcmp(sqlstate, "08P01") == 0)
                SY_STAT_ADD(s->link.route->err_protocol, 1);
        }
        if (boundary) {
            uint8_t out[1400];
            size_t len = pgw_build_error(out, sizeof(out), "FATAL", sqlstate, msg, NULL);
            if (len > 0)
                sy_pipe_inject(&s->s2c, out, len);
        }
    }
    if (!sy_pipe_pending(&s->s2c) && !s->linger) {
        pg_destroy(s);
        return;
    }
    pg_timer_start(s, closing_timeout_cb, 5000);
    pg_closing_drive(s);
}

/* (Re)start the session's one timer; it holds a reference while it exists. */
void pg_timer_start(pg_session_t *s, uv_timer_cb cb, uint64_t ms)
{
    if (!s->timer_on) {
        uv_timer_init(s->link.loop, &s->timer);
        s->timer.data = s;
        s->refs++;
        s->timer_on = 1;
    }
    uv_timer_start(&s->timer, cb, ms, 0);
}

/* Watch c for events. A watch that fails (libuv could not allocate or start the poll
 * handle) would leave the session waiting for an event that never comes: close it instead,
 * with an error while the client can still be told. */
void pg_watch(pg_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb)
{
    int rc = sy_conn_watch_logged(c, events, cb, s->id);
    if (rc == 0 || s->state == PGS_CLOSED)
        return;
    if (s->state == PGS_CLOSING)
        pg_destroy(s);
    else
        pg_close(s, "53200", "cannot watch the connection: %s", uv_strerror(rc));
}

/* ---- relay --------------------------------------------------------------------- */

/* client -> server: count what expects a ReadyForQuery, watch COPY and Terminate. */
/* Nothing in flight and no transaction open: the next message starts a transaction. */
int pg_idle(const pg_session_t *s)
{
    return s->txn == 'I' && s->inflight == 0 && !s->unsynced && !s->copy_in && !s->copy_out &&
           pgw_scan_at_boundary(&s->cscan) && pgw_scan_at_boundary(&s->sscan);
}

static int c2s_scan(void *arg, sy_pipe_t *p)
{
    pg_session_t *s = arg;
    while (p->scanned < p->end) {
        pgw_event_t ev;
        if (s->fatal_dropped) {
            /* The server is going (its FATAL was not relayed): the next query is for the
             * server the session reconnects to, and waits unscanned. */
            p->reading = 0;
            p->fwd = p->scanned;
            return 0;
        }
        if (s->state == PGS_RELAY && pg_idle(s) && sy_route_should_hold(&s->link)) {
            /* A pause or a switch: the client's next transaction waits here. */
            if (s->link.state != SY_CLIENT_HELD) {
                sy_session_set_state(&s->link, SY_CLIENT_HELD);
                sy_debug("event=hold conn=%llu route=%s", (unsigned long long)s->id, s->link.route->conf->name);
            }
            p->reading = 0;
            p->fwd = p->scanned;
            sy_switch_poke(s->link.route);
            return 0;
        }
        ssize_t n = pgw_scan(&s->cscan, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            pg_close(s, "08P01", "route %s: protocol violation from the client: %s",
                     s->link.route->conf->name, s->cscan.err);
            return -1;
        }
        p->scanned += (uint32_t)n;
        if (ev == PGW_EV_CAPTURED)
            pg_dirty_query(s, s->cscan.cap, s->cscan.cap_len, s->cscan.type == 'P');
        if (ev != PGW_EV_HEADER)
            continue;
        switch (s->cscan.type) {
        case 'Q':
            s->inflight++;
            s->set_local = 0;   /* another query may be in flight now (pg_dirty_query) */
            pg_dirty_header(s, &s->cscan);
            break;
        case 'S':
            s->inflight++;
            s->unsynced = 0;
            break;
        case 'C':
            s->dirty = 1;   /* Close of a prepared statement (or a portal) */
            s->unsynced = 1;
            break;
        case 'P':
            s->unsynced = 1;
            pg_dirty_header(s, &s->cscan);
            break;
        case 'B':
        case 'D':
        case 'E':
        case 'H':
            s->unsynced = 1;
            break;
        case 'c':
        case 'f':
            s->copy_in = 0;
            break;
        case 'X':
            /* Keep the Terminate: PQfinish sends its own and closes cleanly. */
            s->terminating = 1;
            p->fwd = p->scanned - 5;
            p->end = p->scanned = p->fwd;
            return 0;
        default:
            break;
        }
    }
    p->fwd = p->scanned;
    return 0;
}

/* Write name and value as one pair of s->params ("name\0value\0", the value cut to
 * PG_PARAM_VAL_MAX - 1 bytes); returns its length. */
static size_t param_pair(char *o, const char *name, size_t nl, const char *value)
{
    size_t vl = strnlen(value, PG_PARAM_VAL_MAX - 1);
    memcpy(o, name, nl + 1);
    memcpy(o + nl + 1, value, vl);
    o[nl + 1 + vl] = '\0';
    return nl + vl + 2;
}

/* Remember a ParameterStatus the client has been sent. The pairs are rebuilt in a new
 * block on a change: a few times per session (a SET of a reported setting, a move; the
 * greeting's pairs are made at once, pg_relay_begin), never per message. Out of memory
 * the old values stay: a move then tells the client a value it may already have, which
 * is harmless. */
void pg_param_seen(pg_session_t *s, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strnlen(value, PG_PARAM_VAL_MAX - 1);
    if (nl >= PG_PARAM_NAME_MAX)
        return;
    const char *old = pg_param_get(s, name);
    if (old != NULL && strlen(old) == vl && memcmp(old, value, vl) == 0)
        return;
    int n = 0;
    for (uint32_t at = 0; at < s->params_len; n++)
        at += (uint32_t)strlen(s->params + at) + 1, at += (uint32_t)strlen(s->params + at) + 1;
    if (old == NULL && n == PG_PARAMS_MAX)
        return;
    size_t cap = s->params_len + nl + vl + 2;
    char *nb = malloc(cap), *o = nb;
    if (nb == NULL)
        return;
    for (uint32_t at = 0; at < s->params_len;) {   /* every pair but name's */
        size_t a = strlen(s->params + at) + 1, b = strlen(s->params + at + a) + 1;
        if (strcmp(s->params + at, name) != 0) {
            memcpy(o, s->params + at, a + b);
            o += a + b;
        }
        at += (uint32_t)(a + b);
    }
    o += param_pair(o, name, nl, value);
    free(s->params);
    s->params = nb;
    s->params_len = (uint32_t)(o - nb);
}

const char *pg_param_get(const pg_session_t *s, const char *name)
{
    for (uint32_t at = 0; at < s->params_len;) {
        const char *n = s->params + at, *v = n + strlen(n) + 1;
        if (strcmp(n, name) == 0)
            return v;
        at = (uint32_t)(v + strlen(v) + 1 - s->params);
    }
    return NULL;
}

void pg_rc_why_set(pg_session_t *s, const char *fmt, ...)
{
    char msg[PG_RC_WHY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);   /* an argument may be s->rc_why itself */
    va_end(ap);
    if (s->rc_why == NULL && (s->rc_why = malloc(PG_RC_WHY)) == NULL)
        return;
    memcpy(s->rc_why, msg, sizeof(msg));
}

const char *pg_rc_why(const pg_session_t *s)
{
    return s->rc_why != NULL ? s->rc_why : "out of memory";
}

/* server -> client: transaction status, in-flight count, COPY. */
static int s2c_scan(void *arg, sy_pipe_t *p)
{
    pg_session_t *s = arg;
    /* While a reconnect is possible, the client's idle stream moves on whole messages
     * only (bnd: where the message being scanned began), so that a FATAL, which comes
     * before the close, can be dropped whole. */
    uint32_t bnd = p->fwd;
    while (p->scanned < p->end) {
        pgw_event_t ev;
        if (pgw_scan_at_boundary(&s->sscan))
            bnd = p->scanned;
        ssize_t n = pgw_scan(&s->sscan, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            /* Drop the bad header: what came before is whole messages, so the client can
             * still be told why. */
            p->fwd = p->end = p->scanned;
            s->s2c_cut = 1;
            pg_close(s, "08P01", "route %s: protocol violation from %s: %s", s->link.route->conf->name,
                     s->srv->link.target->hostport, s->sscan.err);
            return -1;
        }
        p->scanned += (uint32_t)n;
        if (ev == PGW_EV_CAPTURED && s->sscan.type == 'S') {
            const char *name, *value;
            if (pgw_parse_parameter_status(s->sscan.cap, s->sscan.cap_len, &name, &value) == 0) {
                pg_param_seen(s, name, value);
                pg_ro_seen_param(s, name, value);
            }
            continue;
        }
        if (ev == PGW_EV_CAPTURED && s->sscan.type == 'E') {
            pgw_error_fields_t f;
            int parsed = pgw_parse_error(s->sscan.cap, s->sscan.cap_len, &f) == 0;
            if (parsed)
                pg_ro_seen_error(s, f.sqlstate);
            if (parsed && f.severity != NULL &&
                (strcmp(f.severity, "FATAL") == 0 || strcmp(f.severity, "PANIC") == 0)) {
                if (pg_reconnectable(s) && p->scanned - bnd == 1 + s->sscan.len) {
                    /* The client is owed nothing and will not be told: the session
                     * reconnects when the server closes (pg_reconnect.c). */
                    sy_debug("event=server_fatal_dropped conn=%llu sqlstate=%s", (unsigned long long)s->id,
                             f.sqlstate ? f.sqlstate : "");   /* before the bytes it points at go */
                    memmove(p->buf + bnd, p->buf + p->scanned, p->end - p->scanned);
                    p->end -= p->scanned - bnd;
                    p->scanned = bnd;
                    s->fatal_dropped = 1;
                    s->c2s.reading = 0;
                    continue;
                }
                s->server_fatal = 1;
            }
            continue;
        }
        if (ev == PGW_EV_CAPTURED && s->sscan.type == 'C') {
            pg_dirty_tag(s, s->sscan.cap, s->sscan.cap_len);
            continue;
        }
        if (ev != PGW_EV_HEADER)
            continue;
        switch (s->sscan.type) {
        case 'C':
            pg_dirty_header(s, &s->sscan);
            break;
        case 'Z':
            s->txn = s->sscan.status;
            s->set_local = 0;
            if (s->inflight > 0)
                s->inflight--;
            s->copy_in = s->copy_out = 0;
            if (s->link.route)
                sy_route_count_transactions(s->link.route, 1);
            break;
        case 'G':
            s->copy_in = 1;
            break;
        case 'H':
            s->copy_out = 1;
            break;
        case 'W':
            s->copy_in = s->copy_out = 1;
            break;
        case 'c':
            s->copy_out = 0;
            break;
        default:
            break;
        }
    }
    if (pgw_scan_at_boundary(&s->sscan))
        bnd = p->scanned;
    /* Held only as long as it could be a FATAL to drop (a captured body): a longer one
     * goes on, or a large notice would fill the pipe and stall the session. */
    p->fwd = p->scanned != bnd && p->scanned - bnd <= 5 + PGW_CAPTURE_MAX && pg_reconnectable(s) ? bnd : p->scanned;
    if (s->link.route && pg_idle(s))
        sy_switch_poke(s->link.route);
    return 0;
}

void pg_update_polls(pg_session_t *s)
{
    if (s->state != PGS_RELAY)
        return;
    pg_watch(s, &s->client, sy_pipe_src_events(&s->c2s) | sy_pipe_dst_events(&s->s2c), pg_client_cb);
    pg_watch(s, &s->srv->conn, sy_pipe_src_events(&s->s2c) | sy_pipe_dst_events(&s->c2s), server_cb);
}

/* The server -> client scanner, from the server's first byte: ParameterStatus is what the
 * client knows; an ErrorResponse is read for its severity, since after a FATAL the server's
 * close is expected and the client was already told. */
void pg_sscan_reset(pg_session_t *s)
{
    pgw_scan_release(&s->sscan);
    pgw_scan_init(&s->sscan, sy_conf()->max_message_size);
    pgw_scan_capture(&s->sscan, 'S');
    pgw_scan_capture(&s->sscan, 'E');
    pgw_scan_capture(&s->sscan, 'C');   /* CommandComplete: did session state change? */
    s->server_fatal = 0;
}

/* The client waits for something from the server: a reply, the rest of a COPY, or the
 * answer to extended-protocol messages not yet synced. */
static int pg_owed_reply(const pg_session_t *s)
{
    return s->inflight > 0 || s->unsynced || s->copy_in || s->copy_out || !pgw_scan_at_boundary(&s->sscan);
}

/* The server closed or failed. Say only what the server did not: after its own FATAL, or
 * with nothing owed to the client (idle, or idle in a transaction), close as a direct
 * connection would close, without a word; 08006 only when a reply is owed. */
void pg_upstream_lost(pg_session_t *s, int err)
{
    const char *why = s->srv->conn.tls_err ? s->srv->conn.tls_err : err ? strerror(-err) : "server closed the connection";
    s->srv->gone = 1;
    if (pg_reconnect_begin(s, why))
        return;   /* idle, its state saved: reconnecting */
    if (!s->server_fatal && sy_conf()->reconnect_window > 0 && (s->txn != 'I' || s->dirty || s->unsaved)) {
        /* reconnect_window is on, and this session cannot have it: say why. In a
         * transaction the outcome is unknown; the client must never see its COMMIT
         * succeed. */
        pg_close(s, "08006", "route %s: connection to %s lost: %s; %s", s->link.route->conf->name,
                 s->srv->link.target->hostport, why,
                 s->txn != 'I' || pg_owed_reply(s) ? "the transaction's outcome is unknown"
                 : s->unsaved ? s->unsaved : "the session's state was not saved yet");
        return;
    }
    if (s->server_fatal || !pg_owed_reply(s)) {
        sy_info("event=upstream_lost conn=%llu route=%s upstream=%s reason=\"%s\" owed=0 after=%s",
                (unsigned long long)s->id, s->link.route->conf->name, s->srv->link.target->hostport, why,
                s->server_fatal ? "fatal" : "idle");
        SY_STAT_ADD(s->link.route->err_lost, 1);
        pg_close(s, NULL, NULL);
        return;
    }
    pg_close(s, "08006", "route %s: connection to %s lost: %s", s->link.route->conf->name,
             s->srv->link.target->hostport, why);
}

/* Feed what we queued for the client (s2c_extra) into s2c; the server is not read until
 * all of it is out, so nothing overtakes it. Returns 0, or -1 when the client is gone. */
int pg_extra_drain(pg_session_t *s)
{
    if (s->s2c_extra.len == 0)
        return 0;
    if (sy_pipe_feed(&s->s2c, s->s2c_extra.data, s->s2c_extra.len, &s->s2c_extra_sent) < 0)
        return -1;
    if (s->s2c_extra_sent < s->s2c_extra.len) {
        s->s2c.reading = 0;
        return 0;
    }
    pgr_buf_free(&s->s2c_extra);
    s->s2c_extra_sent = 0;
    s->s2c.reading = 1;
    return 0;
}

/* One relay step; handles the end of either side. */
void pg_relay_drive(pg_session_t *s, sy_conn_t *c, int events)
{
    int err;
    sy_activity_mark(&s->activity);
    if (s->s2c_extra.len > 0 && pg_extra_drain(s) < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    switch (sy_relay_step(s, &s->c2s, &s->s2c, c, events, &err)) {
    case SY_RELAY_OK:
        break;
    case SY_RELAY_CLOSING:
        return;
    case SY_RELAY_CLIENT_GONE:
        pg_close(s, NULL, NULL);   /* nobody left to tell */
        return;
    case SY_RELAY_UPSTREAM_GONE:
        pg_upstream_lost(s, err);
        return;
    }
    if (s->terminating && !sy_pipe_pending(&s->c2s)) {
        pg_close(s, NULL, NULL);
        return;
    }
    pg_update_polls(s);
    if ((s->dirty || s->ro_suspect) && sy_conf()->reconnect_window > 0)
        pg_save_maybe(s);   /* nothing to save otherwise: not even a call */
}

static void server_cb(sy_conn_t *c, int status, int events)
{
    pg_server_t *sv = c->data;
    pg_session_t *s = (pg_session_t *)sv->link.client;
    if (s == NULL)
        return;
    s->refs++;
    if (s->state == PGS_RELAY)
        pg_relay_drive(s, c, events);
    pg_session_unref(s);
}

/* ---- greeting and hand-over ------------------------------------------------------ */

void pg_relay_begin(pg_session_t *s)
{
    uint8_t out[4096];
    const size_t tail = 13 + 6;   /* BackendKeyData and ReadyForQuery, always sent */
    size_t off = 0;

    pg_server_t *sv = s->srv;
    s->key = pg_cancel_register(s);
    if (pg_server_adopt(sv) != 0) {
        pg_close(s, "08001", "route %s: cannot take over the TLS session to %s", s->link.route->conf->name,
                 sv->link.target->hostport);
        return;
    }

    /* What the client is told is what it has seen: a new session's pairs are kept in one
     * block made at once (pg_param_seen per pair would allocate and copy once per pair,
     * which was 5% of switchyard's CPU per pgbench -C connection, 2026-12-03). Each pair
     * is shorter than its ParameterStatus, so the block fits where the messages did. */
    char pairs[sizeof(out)];
    size_t plen = 0;
    int fresh = s->params == NULL;
    off += pgw_build_auth_ok(out + off, sizeof(out) - off);
    for (const char *const *p = pg_reported_params; *p; p++) {
        const char *v = PQparameterStatus(sv->pg, *p);
        if (v != NULL) {
            size_t n = pgw_build_parameter_status(out + off, sizeof(out) - tail - off, *p, v);
            if (n == 0) {
                pg_close(s, "53200", "route %s: the server's parameters do not fit the greeting (%s)",
                         s->link.route->conf->name, *p);
                return;
            }
            off += n;
            if (fresh)
                plen += param_pair(pairs + plen, *p, strlen(*p), v);
            else
                pg_param_seen(s, *p, v);
        }
    }
    if (fresh && plen > 0 && (s->params = malloc(plen)) != NULL) {   /* out of memory: none kept */
        memcpy(s->params, pairs, plen);
        s->params_len = (uint32_t)plen;
    }
    s->client_pid = sv->be_pid;
    off += pgw_build_backend_key(out + off, sizeof(out) - off, s->client_pid, s->key);
    off += pgw_build_ready(out + off, sizeof(out) - off, 'I');
    s->txn = 'I';

    pg_set_state(s, PGS_RELAY);
    /* The client's startup bytes are consumed; anything it pipelined after the
     * StartupMessage stays in c2s and goes upstream now. */
    s->c2s.reading = 1;
    s->s2c.reading = 1;
    sy_pipe_inject(&s->s2c, out, off);
    sy_info("event=session_ready conn=%llu route=%s target=%s upstream=%s backend_pid=%u tls=%s",
            (unsigned long long)s->id, s->link.route->conf->name,
            sv->link.which == CONF_EXTERNAL ? "external" : "builtin", sv->link.target->hostport, sv->be_pid,
            PQsslInUse(sv->pg) ? "on" : "off");
    if (c2s_scan(s, &s->c2s) != 0)
        return;
    /* Start both directions: TLS may already hold decrypted bytes, and what the client
     * pipelined after its startup goes upstream. A plain socket needs no look (a recv
     * that finds nothing, per client): its poll reports what is there. The client has
     * its greeting only now, so it has sent nothing since its startup unless it
     * pipelined. */
    int r = sy_pipe_flush(&s->s2c);
    if (r < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    int pipelined = sy_pipe_pending(&s->c2s);
    if (sv->conn.ssl != NULL || pipelined)
        pg_relay_drive(s, &sv->conn, 0);
    if (s->state != PGS_RELAY)
        return;
    if (s->client.ssl != NULL || pipelined)
        pg_relay_drive(s, &s->client, 0);
    else
        pg_update_polls(s);
}

static void pg_describe(const sy_session_link_t *l, char cols[][128])
{
    const pg_session_t *s = (const pg_session_t *)l;
    snprintf(cols[0], 128, "%llu", (unsigned long long)s->id);
    snprintf(cols[1], 128, "%s", s->admin ? "console" : "postgres");
    snprintf(cols[2], 128, "%s", s->link.route ? s->link.route->conf->name : "");
    const conf_target_t *rt = s->state == PGS_RECONNECTING ? sy_route_target(s->link.route, s->rc_which) : NULL;
    snprintf(cols[3], 128, "%s", s->srv ? s->srv->link.target->hostport : rt ? rt->hostport : "");
    snprintf(cols[4], 128, "%s", pg_state_names[s->state]);
    snprintf(cols[5], 128, "txn=%c inflight=%u copy=%s db=%.40s user=%.40s replay=%s", s->txn ? s->txn : '-',
             s->inflight, s->copy_in || s->copy_out ? "yes" : "no", s->database ? s->database : "",
             s->user ? s->user : "", s->unsaved ? "no" : s->dirty ? "pending" : "saved");
    if (s->pin_why != NULL) {
        size_t n = strlen(cols[5]);
        snprintf(cols[5] + n, 128 - n, " pin=%s", s->pin_why);
    }
}

/*
 * The session's timeouts, checked once a second (sy_sweep), as Postgres words them:
 *   client_login_timeout  from accept to relaying (authentication_timeout): before the
 *                         startup packet a silent close (the postmaster's startup packet
 *                         timeout), after it FATAL 57014 "canceling authentication due to
 *                         timeout"
 *   client_idle_timeout   idle outside a transaction (idle_session_timeout): FATAL 57P05
 *   client_stall_timeout  a message half received and nothing more while we could read:
 *                         FATAL 08P01 (Postgres would wait for ever, its backend with it)
 */
static void pg_tick(sy_session_link_t *l, uint64_t now)
{
    pg_session_t *s = (pg_session_t *)l;
    uint64_t login = (uint64_t)sy_conf()->client_login_timeout * 1000;
    uint64_t idle = (uint64_t)sy_conf()->client_idle_timeout * 1000;
    uint64_t active_at = sy_activity_at(&s->activity, now);
    switch (s->state) {
    case PGS_STARTUP:
    case PGS_CLIENT_TLS:
    case PGS_AUTH:
    case PGS_RESOLVING:
    case PGS_CONNECTING:
        if (now - s->born_at < login)
            return;
        sy_info("event=login_timeout conn=%llu state=%s ms=%llu", (unsigned long long)s->id,
                pg_state_names[s->state], (unsigned long long)(now - s->born_at));
        if (s->startup == NULL)
            pg_close(s, NULL, NULL);
        else
            pg_close(s, "57014", "canceling authentication due to timeout");
        return;
    case PGS_RELAY:
        if (sy_client_stalled(&s->c2s, !pgw_scan_at_boundary(&s->cscan), active_at, now)) {
            sy_info("event=client_stalled conn=%llu route=%s idle_ms=%llu", (unsigned long long)s->id,
                    s->link.route ? s->link.route->conf->name : "-", (unsigned long long)(now - active_at));
            pg_close(s, "08P01", "client stalled mid-message for %d s", sy_conf()->client_stall_timeout);
            return;
        }
        /* fall through */
    case PGS_RELEASED:
        if (idle == 0 || !pg_idle(s) || s->txn != 'I' || now - active_at < idle) {
            if (s->state == PGS_RELAY)
                pg_release_maybe(s, now);
            return;
        }
        sy_info("event=idle_timeout conn=%llu route=%s idle_ms=%llu", (unsigned long long)s->id,
                s->link.route ? s->link.route->conf->name : "-", (unsigned long long)(now - active_at));
        pg_close(s, "57P05", "terminating connection due to idle-session timeout");
        return;
    default:
        return;
    }
}

static void pg_session_start(sy_listener_t *l, int fd, int trusted, uv_loop_t *loop)
{
    pg_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return;
    }
    s->id = SY_STAT_ADD(sy_server.next_conn_id, 1) + 1;
    s->refs = 1;
    s->link.loop = loop;
    s->listener = l;
    s->link.listener = l;
    s->trusted = trusted;
    s->state = PGS_STARTUP;
    s->link.describe = pg_describe;
    s->link.quiet = pg_link_quiet;
    s->link.prepare = pg_link_prepare;
    s->link.unprepare = pg_link_unprepare;
    s->link.move = pg_link_move;
    s->link.kick = pg_link_kick;
    s->link.release = pg_link_release;
    s->link.tick = pg_tick;
    s->born_at = s->activity.at = uv_now(loop);
    sy_session_link(&s->link);
    SY_STAT_ADD(sy_server.nclients, 1);
    sy_conn_init_accepted(&s->client, s->link.loop, fd, s);
    /* The pipes' server side is set when a server is attached (pg_server_attach). */
    sy_pipe_setup(&s->c2s, &s->client, NULL, c2s_scan, 1);
    sy_pipe_setup(&s->s2c, NULL, &s->client, s2c_scan, 1);
    pgw_scan_init(&s->cscan, sy_conf()->max_message_size);
    pgw_scan_capture(&s->cscan, 'Q');   /* what may change session state (pg_reconnect.c) */
    pgw_scan_capture(&s->cscan, 'P');
    pg_sscan_reset(s);
    int rc = sy_conn_watch_logged(&s->client, UV_READABLE, pg_client_cb, s->id);
    if (rc != 0) {
        /* Nothing can wait for this client's bytes: tell it, as the server tells a client
         * it has no room for, rather than leave it hanging. */
        s->client.own_fd = 0;
        sy_conn_close(&s->client);
        sy_listener_refuse(l, fd);
        sy_session_unlink(&s->link);
        SY_STAT_SUB(sy_server.nclients, 1);
        free(s);
        return;
    }
    sy_debug("event=accept conn=%llu listener=%s", (unsigned long long)s->id, l->conf->name);
    /* The client speaks first, at once: its SSLRequest or StartupMessage is usually here
     * by the time its connection is taken from the backlog. Read it now rather than after
     * a turn of the loop (a recv that finds nothing costs what that turn's epoll_wait would). */
    pg_client_cb(&s->client, 0, UV_READABLE);
}

const sy_proto_t pg_proto = { "postgres", pg_session_start };

