/*
 * pg_session.c - one Postgres client and the upstream session serving it.
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
 *   CLOSING     flushing a last ErrorResponse to the client, then closing
 *
 * The upstream fd and TLS session belong to libpq: we adopt them after PQconnectPoll
 * says OK, and give them back through PQfinish when the session ends.
 *
 * Lifetime: a session is reference counted. The session holds one reference until it
 * closes; each thread-pool request and the timer's close callback hold one. Memory is
 * freed when the last reference goes, never inside a callback that still uses it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <libpq-fe.h>
#include "proxy/core/sy.h"
#include "proxy/pg/pg_session.h"
#include "protocol/pg_wire.h"
#include "protocol/pg_result.h"
#include "protocol/pg_sql.h"
#include "protocol/pg_array.h"
#include "protocol/pg_conninfo.h"
#include "protocol/pg_errclass.h"
#include "proxy/control/admin.h"

typedef enum {
    PGS_STARTUP = 0,
    PGS_CLIENT_TLS,
    PGS_AUTH,
    PGS_RESOLVING,
    PGS_CONNECTING,
    PGS_RELAY,
    PGS_MOVING,
    PGS_ADMIN,
    PGS_CLOSING,
    PGS_CLOSED
} pg_state_t;

static const char *const state_names[] = {
    "startup", "client_tls", "auth", "resolving", "connecting", "relay", "moving", "admin", "closing", "closed"
};

/* Parameters the server reports with ParameterStatus (GUC_REPORT) in 15..17. libpq has
 * no call to enumerate what it received, so we ask for each by name. */
static const char *const reported_params[] = {
    "application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
    "in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser",
    "scram_iterations", "search_path", "server_encoding", "server_version",
    "session_authorization", "standard_conforming_strings", "TimeZone", NULL
};

#define PG_MAX_HOSTS 64

struct pg_session_s {
    sy_session_link_t link;           /* on sy_sessions; first member */
    uint64_t       id;
    int            refs;
    pg_state_t     state;
    sy_listener_t *listener;
    sy_route_t    *route;
    const conf_target_t *target;
    conf_which_t   which;
    int            trusted;
    int            ssl_answered;      /* SSLRequest seen */
    int            gss_answered;      /* GSSENCRequest seen (libpq may follow it with SSLRequest) */
    int            s2c_cut;           /* the server stream was cut at a message boundary */
    int            terminating;       /* client sent Terminate */
    int            linger;            /* after our last error: read and drop until the client closes */

    sy_conn_t      client;
    sy_conn_t      server;
    sy_pipe_t      c2s, s2c;
    pgw_scan_t     cscan, sscan;

    /* startup */
    uint8_t       *startup;           /* copy of the client's StartupMessage */
    pgw_startup_t  st;
    const char    *user, *database;

    /* upstream connect */
    PGconn        *pg;
    PGconn        *pre_conn;          /* switchover: the new upstream, opened ahead of the move */
    const conf_target_t *pre_target;
    uint32_t       key;
    uint32_t       be_pid;            /* the upstream backend we are connected to now */
    uint32_t       client_pid;        /* the process id the client was given */
    uv_timer_t     timer;
    int            timer_on;
    uv_getaddrinfo_t gai;
    char          *hosts[PG_MAX_HOSTS];   /* host list being resolved */
    char          *addrs[PG_MAX_HOSTS];   /* comma-joined addresses per host, "" = as is */
    int            nhosts, ihost;
    char          *resolve_err;
    /* connection attempts: one per host address, each with its own connect_timeout, as
     * libpq's blocking connect does (PQconnectPoll alone never moves on by itself) */
    struct pg_params_s *pp;
    char          *att_host[PG_MAX_HOSTS], *att_addr[PG_MAX_HOSTS], *att_port[PG_MAX_HOSTS];
    char          *att_buf;
    int            natt, iatt;
    uint64_t       timeout_ms;
    char          *att_errs;           /* what each failed attempt said */

    /* protocol state (the part switchover builds on) */
    uint8_t        txn;               /* 'I', 'T', 'E' from the last ReadyForQuery */
    uint32_t       inflight;          /* Query/Sync sent, ReadyForQuery not yet seen */
    int            unsynced;          /* extended-protocol messages sent since the last Sync */
    int            copy_in, copy_out;
    /* ParameterStatus values the client has seen, to tell it what a move changes */
    char           pnames[16][40];
    char           pvals[16][80];
    int            nparams;

    /* Messages of our own for the client that must precede anything more from the
     * server (what a move learned: ParameterStatus changes, notifications that arrived on
     * the old upstream). Fed into s2c as it drains; the server is not read meanwhile. */
    pgr_buf_t      s2c_extra;
    size_t         s2c_extra_sent;
    struct pg_move_s *move;           /* the move job that owns the upstream, while MOVING */

    /* admin console */
    pgr_buf_t      admin_out;
    size_t         admin_sent;
    int            admin_busy;        /* an asynchronous command is running */
    int            admin;             /* this is a console session */

    uint8_t        bufs[2 * SY_PIPE_BUF];
};

static void pg_close(pg_session_t *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pg_connect_step(pg_session_t *s);
static void pg_watch(pg_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb);
static void pg_relay_begin(pg_session_t *s);
static void client_cb(sy_conn_t *c, int status, int events);
static void server_cb(sy_conn_t *c, int status, int events);

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
    for (int i = 0; i < s->nhosts; i++) {
        free(s->hosts[i]);
        free(s->addrs[i]);
    }
    free(s->resolve_err);
    free(s->pp);
    free(s->att_buf);
    free(s->att_errs);
    free(s->startup);
    pgr_buf_free(&s->admin_out);
    pgr_buf_free(&s->s2c_extra);
    if (s->pre_conn)
        PQfinish(s->pre_conn);
    free(s);
}

void pg_session_unref(pg_session_t *s)
{
    if (--s->refs == 0)
        pg_free(s);
}

PGcancel *pg_session_cancel_handle(pg_session_t *s, uint32_t pid)
{
    if (s->state != PGS_RELAY || s->pg == NULL || s->client_pid != pid)
        return NULL;
    return PQgetCancel(s->pg);
}

static void pg_set_state(pg_session_t *s, pg_state_t to)
{
    /* The only legal moves; anything else is a bug. */
    static const unsigned allowed[] = {
        [PGS_STARTUP]    = 1u << PGS_CLIENT_TLS | 1u << PGS_AUTH | 1u << PGS_RESOLVING | 1u << PGS_CLOSING |
                           1u << PGS_STARTUP | 1u << PGS_ADMIN,
        [PGS_CLIENT_TLS] = 1u << PGS_STARTUP | 1u << PGS_CLOSING,
        [PGS_AUTH]       = 1u << PGS_RESOLVING | 1u << PGS_CLOSING | 1u << PGS_ADMIN,
        [PGS_RESOLVING]  = 1u << PGS_CONNECTING | 1u << PGS_CLOSING,
        [PGS_CONNECTING] = 1u << PGS_RELAY | 1u << PGS_CLOSING,
        [PGS_RELAY]      = 1u << PGS_CLOSING | 1u << PGS_MOVING,
        [PGS_MOVING]     = 1u << PGS_RELAY | 1u << PGS_CLOSING,
        [PGS_ADMIN]      = 1u << PGS_CLOSING,
        [PGS_CLOSING]    = 1u << PGS_CLOSED,
        [PGS_CLOSED]     = 0,
    };
    if (!(allowed[s->state] & (1u << to))) {
        sy_err("event=bug conn=%llu from=%s to=%s", (unsigned long long)s->id,
               state_names[s->state], state_names[to]);
        abort();
    }
    s->state = to;
}

/* ---- teardown ------------------------------------------------------------------ */

static void timer_close_cb(uv_handle_t *h)
{
    pg_session_unref(h->data);
}

static void pg_timer_stop(pg_session_t *s)
{
    if (s->timer_on)
        uv_timer_stop(&s->timer);
}

static void move_orphan(struct pg_move_s *m);

static void pg_finish_upstream(pg_session_t *s)
{
    sy_conn_unwatch(&s->server);
    if (s->move != NULL && s->pg != NULL) {
        /* A move job is querying this connection on a pool thread: it is the job's to
         * finish (move_done), never ours under its feet. */
        move_orphan(s->move);
        s->pg = NULL;
        if (s->route)
            SY_STAT_SUB(s->route->upstreams, 1);
    }
    if (s->pg != NULL) {
        PQfinish(s->pg);   /* sends Terminate, frees libpq's SSL, closes its socket */
        s->pg = NULL;
        if (s->route)
            SY_STAT_SUB(s->route->upstreams, 1);
    }
    s->server.fd = -1;
    s->server.ssl = NULL;
}

static void pg_destroy(pg_session_t *s)
{
    if (s->state == PGS_CLOSED)
        return;
    pg_set_state(s, PGS_CLOSED);
    sy_session_unlink(&s->link);
    pg_cancel_unregister(s->key);
    s->key = 0;
    pg_finish_upstream(s);
    sy_conn_close(&s->client);
    if (s->route) {
        SY_STAT_SUB(s->route->clients, 1);
        SY_STAT_ADD(s->route->bytes_in, s->c2s.bytes);
        SY_STAT_ADD(s->route->bytes_out, s->s2c.bytes);
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
static void pg_closing_drive(pg_session_t *s)
{
    int r = sy_pipe_flush(&s->s2c);
    if (r < 0 || (!sy_pipe_pending(&s->s2c) && !s->linger)) {
        pg_destroy(s);
        return;
    }
    if (sy_pipe_pending(&s->s2c)) {
        pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), client_cb);
        return;
    }
    if (s->linger == 1) {
        shutdown(s->client.fd, SHUT_WR);
        s->linger = 2;
    }
    for (;;) {
        ssize_t n = recv(s->client.fd, s->c2s.buf, s->c2s.cap, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        pg_destroy(s);   /* the client closed (or failed): done */
        return;
    }
    pg_watch(s, &s->client, UV_READABLE, client_cb);
}

/* End the session. With a sqlstate, the client first gets a FATAL ErrorResponse whose
 * message is "switchyard: " + fmt; it is written only at a message boundary of the
 * server->client stream (otherwise the client would misparse it) and the session waits
 * at most 5 s for it to drain. */
static void pg_close(pg_session_t *s, const char *sqlstate, const char *fmt, ...)
{
    if (s->state == PGS_CLOSING || s->state == PGS_CLOSED)
        return;
    char msg[1024];
    int boundary = (pgw_scan_at_boundary(&s->sscan) || s->s2c_cut) && s->s2c.fwd == s->s2c.end;
    pg_set_state(s, PGS_CLOSING);
    /* Linger only where the client may still be sending: a protocol violation. */
    s->linger = sqlstate != NULL && strcmp(sqlstate, "08P01") == 0 && s->client.fd >= 0 && !SY_LOAD(sy_server.stopping);
    pg_finish_upstream(s);
    pg_timer_stop(s);
    s->c2s.reading = 0;
    if (sqlstate != NULL) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(msg, sizeof(msg), "switchyard: ");
        vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
        va_end(ap);
        char q[1100];
        sy_info("event=client_error conn=%llu route=%s sqlstate=%s message=%s", (unsigned long long)s->id,
                s->route ? s->route->conf->name : "-", sqlstate, sy_logq(q, sizeof(q), msg));
        if (s->route) {
            SY_STAT_ADD(s->route->nerrors, 1);
            if (strcmp(sqlstate, "08001") == 0 || strcmp(sqlstate, "28P01") == 0 || strcmp(sqlstate, "53300") == 0)
                SY_STAT_ADD(s->route->err_connect, 1);
            else if (strcmp(sqlstate, "08006") == 0)
                SY_STAT_ADD(s->route->err_lost, 1);
            else if (strcmp(sqlstate, "08P01") == 0)
                SY_STAT_ADD(s->route->err_protocol, 1);
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
    if (!s->timer_on) {
        uv_timer_init(s->link.loop, &s->timer);
        s->timer.data = s;
        s->refs++;
        s->timer_on = 1;
    }
    uv_timer_start(&s->timer, closing_timeout_cb, 5000, 0);
    pg_closing_drive(s);
}

/* Watch c for events. A watch that fails (libuv could not allocate or start the poll
 * handle) would leave the session waiting for an event that never comes: close it instead,
 * with an error while the client can still be told. */
static void pg_watch(pg_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb)
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
static int pg_idle(const pg_session_t *s)
{
    return s->txn == 'I' && s->inflight == 0 && !s->unsynced && !s->copy_in && !s->copy_out &&
           pgw_scan_at_boundary(&s->cscan) && pgw_scan_at_boundary(&s->sscan);
}

static int c2s_scan(void *arg, sy_pipe_t *p)
{
    pg_session_t *s = arg;
    while (p->scanned < p->end) {
        pgw_event_t ev;
        if (s->state == PGS_RELAY && pg_idle(s) && sy_route_should_hold(&s->link)) {
            /* A pause or a switch: the client's next transaction waits here. */
            if (!s->link.held) {
                s->link.held = 1;
                sy_debug("event=hold conn=%llu route=%s", (unsigned long long)s->id, s->route->conf->name);
            }
            p->reading = 0;
            p->fwd = p->scanned;
            sy_switch_poke(s->route);
            return 0;
        }
        ssize_t n = pgw_scan(&s->cscan, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            pg_close(s, "08P01", "route %s: protocol violation from the client: %s",
                     s->route->conf->name, s->cscan.err);
            return -1;
        }
        p->scanned += (uint32_t)n;
        if (ev != PGW_EV_HEADER)
            continue;
        switch (s->cscan.type) {
        case 'Q':
            s->inflight++;
            break;
        case 'S':
            s->inflight++;
            s->unsynced = 0;
            break;
        case 'P':
        case 'B':
        case 'D':
        case 'E':
        case 'C':
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

/* Remember a ParameterStatus the client has been sent. */
static void pg_param_seen(pg_session_t *s, const char *name, const char *value)
{
    int i;
    for (i = 0; i < s->nparams; i++)
        if (strcmp(s->pnames[i], name) == 0)
            break;
    if (i == s->nparams) {
        if (s->nparams == 16 || strlen(name) >= sizeof(s->pnames[0]))
            return;
        s->nparams++;
        snprintf(s->pnames[i], sizeof(s->pnames[i]), "%s", name);
    }
    snprintf(s->pvals[i], sizeof(s->pvals[i]), "%s", value);
}

static const char *pg_param_get(const pg_session_t *s, const char *name)
{
    for (int i = 0; i < s->nparams; i++)
        if (strcmp(s->pnames[i], name) == 0)
            return s->pvals[i];
    return NULL;
}

/* server -> client: transaction status, in-flight count, COPY. */
static int s2c_scan(void *arg, sy_pipe_t *p)
{
    pg_session_t *s = arg;
    while (p->scanned < p->end) {
        pgw_event_t ev;
        ssize_t n = pgw_scan(&s->sscan, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            /* Drop the bad header: what came before is whole messages, so the client can
             * still be told why. */
            p->fwd = p->end = p->scanned;
            s->s2c_cut = 1;
            pg_close(s, "08P01", "route %s: protocol violation from %s: %s", s->route->conf->name,
                     s->target->hostport, s->sscan.err);
            return -1;
        }
        p->scanned += (uint32_t)n;
        if (ev == PGW_EV_CAPTURED && s->sscan.type == 'S') {
            const char *name, *value;
            if (pgw_parse_parameter_status(s->sscan.cap, s->sscan.cap_len, &name, &value) == 0)
                pg_param_seen(s, name, value);
            continue;
        }
        if (ev != PGW_EV_HEADER)
            continue;
        switch (s->sscan.type) {
        case 'Z':
            s->txn = s->sscan.status;
            if (s->inflight > 0)
                s->inflight--;
            s->copy_in = s->copy_out = 0;
            if (s->route)
                SY_STAT_ADD(s->route->transactions, 1);
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
    p->fwd = p->scanned;
    if (s->route && pg_idle(s))
        sy_switch_poke(s->route);
    return 0;
}

static void pg_update_polls(pg_session_t *s)
{
    if (s->state != PGS_RELAY)
        return;
    pg_watch(s, &s->client, sy_pipe_src_events(&s->c2s) | sy_pipe_dst_events(&s->s2c), client_cb);
    pg_watch(s, &s->server, sy_pipe_src_events(&s->s2c) | sy_pipe_dst_events(&s->c2s), server_cb);
}

static void upstream_lost(pg_session_t *s, int err)
{
    const char *why = s->server.tls_err ? s->server.tls_err : err ? strerror(-err) : "server closed the connection";
    pg_close(s, "08006", "route %s: connection to %s lost: %s", s->route->conf->name,
             s->target->hostport, why);
}

/* Feed what we queued for the client (s2c_extra) into s2c; the server is not read until
 * all of it is out, so nothing overtakes it. Returns 0, or -1 when the client is gone. */
static int pg_extra_drain(pg_session_t *s)
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
static void pg_relay_drive(pg_session_t *s, sy_conn_t *c, int events)
{
    int err;
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
        upstream_lost(s, err);
        return;
    }
    if (s->terminating && !sy_pipe_pending(&s->c2s)) {
        pg_close(s, NULL, NULL);
        return;
    }
    pg_update_polls(s);
}

static void client_cb(sy_conn_t *c, int status, int events);
static void server_cb(sy_conn_t *c, int status, int events)
{
    pg_session_t *s = c->data;
    s->refs++;
    if (s->state == PGS_RELAY)
        pg_relay_drive(s, c, events);
    pg_session_unref(s);
}

/* ---- greeting and hand-over ------------------------------------------------------ */

static void pg_relay_begin(pg_session_t *s)
{
    uint8_t out[4096];
    size_t off = 0;

    PQsetnonblocking(s->pg, 1);   /* PQfinish must never block the loop */
    s->be_pid = (uint32_t)PQbackendPID(s->pg);
    s->key = pg_cancel_register(s);
    if (PQsslInUse(s->pg)) {
        SSL *ssl = PQsslStruct(s->pg, "OpenSSL");
        if (ssl == NULL) {
            pg_close(s, "08001", "route %s: cannot take over the TLS session to %s", s->route->conf->name,
                     s->target->hostport);
            return;
        }
        sy_tls_adopt(&s->server, ssl);
    }
    s->server.own_fd = 0;

    off += pgw_build_auth_ok(out + off, sizeof(out) - off);
    for (const char *const *p = reported_params; *p; p++) {
        const char *v = PQparameterStatus(s->pg, *p);
        if (v != NULL) {
            size_t n = pgw_build_parameter_status(out + off, sizeof(out) - off, *p, v);
            off += n;
            pg_param_seen(s, *p, v);
        }
    }
    s->client_pid = s->be_pid;
    off += pgw_build_backend_key(out + off, sizeof(out) - off, s->client_pid, s->key);
    off += pgw_build_ready(out + off, sizeof(out) - off, 'I');
    s->txn = 'I';

    pg_set_state(s, PGS_RELAY);
    pg_timer_stop(s);
    /* The client's startup bytes are consumed; anything it pipelined after the
     * StartupMessage stays in c2s and goes upstream now. */
    s->c2s.reading = 1;
    s->s2c.reading = 1;
    sy_pipe_inject(&s->s2c, out, off);
    sy_info("event=session_ready conn=%llu route=%s target=%s upstream=%s backend_pid=%u tls=%s",
            (unsigned long long)s->id, s->route->conf->name,
            s->which == CONF_EXTERNAL ? "external" : "builtin", s->target->hostport, s->be_pid,
            PQsslInUse(s->pg) ? "on" : "off");
    if (c2s_scan(s, &s->c2s) != 0)
        return;
    /* Start both directions: TLS may already hold decrypted bytes. */
    int r = sy_pipe_flush(&s->s2c);
    if (r < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    pg_relay_drive(s, &s->server, 0);
    if (s->state == PGS_RELAY)
        pg_relay_drive(s, &s->client, 0);
}

/* ---- upstream connect ------------------------------------------------------------- */

static void connect_failed(pg_session_t *s, const char *why)
{
    char cause[900];
    size_t o = 0;
    /* libpq's message may span lines (one per host tried); keep it on one line. */
    for (const char *p = why; *p && o + 3 < sizeof(cause); p++) {
        if (*p == '\n') {
            if (p[1] != '\0') {
                cause[o++] = ';';
                cause[o++] = ' ';
            }
        } else if (*p == '\t') {
            cause[o++] = ' ';
        } else if (*p != '\r') {
            cause[o++] = *p;
        }
    }
    cause[o] = '\0';
    /* The SQLSTATE the server would have given, where libpq's text tells it. */
    const char *state = pgw_errclass_connect(cause);
    pg_close(s, state, "route %s: cannot connect to %s: %s", s->route->conf->name, s->target->hostport, cause);
}

static void attempt_failed(pg_session_t *s, const char *why);

static void connect_timeout_cb(uv_timer_t *t)
{
    pg_session_t *s = t->data;
    if (s->state == PGS_CONNECTING && s->natt > 0) {
        char msg[600];
        int i = s->iatt;
        snprintf(msg, sizeof(msg), "connection to server at \"%s\" (%s), port %s failed: timeout expired",
                 s->att_host[i], s->att_addr[i], s->att_port[i][0] ? s->att_port[i] : "5432");
        attempt_failed(s, msg);
    } else if (s->state == PGS_CONNECTING || s->state == PGS_RESOLVING) {
        connect_failed(s, "timeout expired");
    }
}

static void connect_poll_cb(sy_conn_t *c, int status, int events)
{
    pg_session_t *s = c->data;
    if (s->state != PGS_CONNECTING)
        return;
    pg_connect_step(s);
}

/* One PQconnectPoll step. The poll handle is stopped before libpq runs (it may close
 * the socket), and replaced when libpq's socket changes. */
static void pg_connect_step(pg_session_t *s)
{
    pg_watch(s, &s->server, 0, connect_poll_cb);
    PostgresPollingStatusType st = PQconnectPoll(s->pg);
    if (st == PGRES_POLLING_FAILED) {
        attempt_failed(s, PQerrorMessage(s->pg));
        return;
    }
    int fd = PQsocket(s->pg);
    if (fd != s->server.fd) {
        sy_conn_unwatch(&s->server);
        s->server.fd = fd;
    }
    if (st == PGRES_POLLING_OK) {
        pg_relay_begin(s);
        return;
    }
    if (fd < 0) {
        connect_failed(s, "libpq returned no socket");
        return;
    }
    int r = sy_conn_watch(&s->server, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE,
                          connect_poll_cb);
    if (r != 0)
        connect_failed(s, uv_strerror(r));
}

/* Everything PQconnectStartParams / PQconnectdbParams needs for one upstream session,
 * with the storage its strings point into. */
typedef struct pg_params_s {
    const char *keys[64];
    const char *vals[64];
    char options[2048];
    char alloptions[4096];
    char hostlist[4096], addrlist[4096], portlist[1024];
    char portbuf[1024];
} pg_params_t;

/*
 * Build the upstream parameters for target t: its own keywords, then the client's
 * startup parameters (user/database only when the target leaves them unset; options,
 * application_name, client_encoding and every other parameter as "-c name=value").
 * With `resolved`, host/hostaddr/port come from our off-loop resolution: each host
 * becomes one entry per address, so libpq tries them in order and still verifies
 * against the name. Returns 0, or -1 with the cause in *why.
 */
static int pg_build_params(pg_session_t *s, const conf_target_t *t, int resolved, pg_params_t *pp,
                           const char **why)
{
    const conf_kv_t *kv = &t->pg;
    const char **keys = pp->keys, **vals = pp->vals;
    size_t n = 0;
    char *options = pp->options, *hostlist = pp->hostlist, *addrlist = pp->addrlist, *portlist = pp->portlist;
    const char *client_appname = NULL, *client_encoding = NULL;
    int have_user = 0, have_db = 0;

    options[0] = hostlist[0] = addrlist[0] = portlist[0] = '\0';
    /* Client parameters: user/database are mapped; the rest go upstream. */
    size_t off = 0;
    const char *name, *value;
    while (pgw_startup_next(&s->st, &off, &name, &value)) {
        if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0 || strncmp(name, "_pq_.", 5) == 0)
            continue;
        if (strcmp(name, "application_name") == 0)
            client_appname = value;
        else if (strcmp(name, "client_encoding") == 0)
            client_encoding = value;
        else if (strcmp(name, "options") == 0)
            ;   /* appended below, after the target's own */
        else if (pgw_options_add(options, sizeof(pp->options), name, value) != 0) {
            *why = "the startup parameters do not fit libpq's options";
            return -1;
        }
    }
    const char *target_opts = conf_kv_get(kv, "options");
    const char *client_opts = pgw_startup_get(&s->st, "options");
    snprintf(pp->alloptions, sizeof(pp->alloptions), "%s%s%s%s%s", target_opts ? target_opts : "",
             target_opts && (client_opts || options[0]) ? " " : "", client_opts ? client_opts : "",
             client_opts && options[0] ? " " : "", options);

    /* Expanded host lists, when we resolved names. */
    const char *ports = conf_kv_get(kv, "port");
    int nports = 0;
    const char *portv[PG_MAX_HOSTS];
    int use_lists = resolved && s->nhosts > 0 && conf_kv_get(kv, "hostaddr") == NULL;
    if (use_lists) {
        snprintf(pp->portbuf, sizeof(pp->portbuf), "%s", ports ? ports : "");
        for (char *save = NULL, *tk = ports ? strtok_r(pp->portbuf, ",", &save) : NULL; tk && nports < PG_MAX_HOSTS;
             tk = strtok_r(NULL, ",", &save))
            portv[nports++] = tk;
        for (int i = 0; i < s->nhosts; i++) {
            const char *port = nports == 0 ? "" : nports == 1 ? portv[0] : i < nports ? portv[i] : "";
            const char *a = s->addrs[i];
            if (a == NULL)
                continue;   /* resolution failed: libpq would skip it too */
            const char *p = a;
            do {
                const char *comma = strchr(p, ',');
                size_t alen = comma ? (size_t)(comma - p) : strlen(p);
                size_t hl = strlen(hostlist), al = strlen(addrlist), pl = strlen(portlist);
                const char *sep = hl || al || pl ? "," : "";
                snprintf(hostlist + hl, sizeof(pp->hostlist) - hl, "%s%s", sep, s->hosts[i]);
                snprintf(addrlist + al, sizeof(pp->addrlist) - al, "%s%.*s", sep, (int)alen, p);
                snprintf(portlist + pl, sizeof(pp->portlist) - pl, "%s%s", sep, port);
                p = comma ? comma + 1 : NULL;
            } while (p);
        }
        if (hostlist[0] == '\0' && addrlist[0] == '\0') {
            *why = s->resolve_err ? s->resolve_err : "could not resolve any host";
            return -1;
        }
    }

    for (size_t i = 0; i < kv->n && n < 50; i++) {
        const char *k = kv->keys[i];
        if (strcmp(k, "options") == 0 || strcmp(k, "application_name") == 0 ||
            strcmp(k, "client_encoding") == 0)
            continue;
        if (use_lists && (strcmp(k, "host") == 0 || strcmp(k, "port") == 0))
            continue;
        if (strcmp(k, "user") == 0)
            have_user = 1;
        if (strcmp(k, "dbname") == 0)
            have_db = 1;
        keys[n] = k;
        vals[n] = kv->vals[i];
        n++;
    }
    if (use_lists) {
        keys[n] = "host", vals[n++] = hostlist;
        keys[n] = "hostaddr", vals[n++] = addrlist;
        if (nports > 0)
            keys[n] = "port", vals[n++] = portlist;
    }
    /* user/dbname the target leaves unset are the client's; with a service, libpq takes
     * them from the service file (then its own defaults), exactly as psql would. */
    int service = conf_kv_get(kv, "service") != NULL;
    if (!have_user && !service)
        keys[n] = "user", vals[n++] = s->user;
    if (!have_db && !service)
        keys[n] = "dbname", vals[n++] = s->database;
    if (pp->alloptions[0])
        keys[n] = "options", vals[n++] = pp->alloptions;
    const char *appname = client_appname ? client_appname : conf_kv_get(kv, "application_name");
    if (appname)
        keys[n] = "application_name", vals[n++] = appname;
    const char *enc = client_encoding ? client_encoding : conf_kv_get(kv, "client_encoding");
    if (enc)
        keys[n] = "client_encoding", vals[n++] = enc;
    keys[n] = NULL;
    vals[n] = NULL;
    return 0;
}

/* Start connection attempt s->iatt (or the only one, when libpq handles the list). */
static void pg_attempt_start(pg_session_t *s)
{
    const char *keys[64], *vals[64];
    size_t n = 0;
    for (; s->pp->keys[n] != NULL && n < 63; n++) {
        keys[n] = s->pp->keys[n];
        vals[n] = s->pp->vals[n];
        if (s->natt > 0) {
            if (strcmp(keys[n], "host") == 0)
                vals[n] = s->att_host[s->iatt];
            else if (strcmp(keys[n], "hostaddr") == 0)
                vals[n] = s->att_addr[s->iatt];
            else if (strcmp(keys[n], "port") == 0)
                vals[n] = s->att_port[s->iatt];
        }
    }
    keys[n] = vals[n] = NULL;
    uv_timer_start(&s->timer, connect_timeout_cb, s->timeout_ms, 0);
    s->pg = PQconnectStartParams(keys, vals, 0);
    if (s->pg == NULL) {
        connect_failed(s, "out of memory");
        return;
    }
    SY_STAT_ADD(s->route->upstreams, 1);
    if (PQstatus(s->pg) == CONNECTION_BAD) {
        attempt_failed(s, PQerrorMessage(s->pg));
        return;
    }
    s->server.fd = PQsocket(s->pg);
    s->server.own_fd = 0;
    s->server.data = s;
    if (s->server.fd < 0) {
        attempt_failed(s, PQerrorMessage(s->pg));
        return;
    }
    /* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    int r = sy_conn_watch(&s->server, UV_WRITABLE, connect_poll_cb);
    if (r != 0)
        attempt_failed(s, uv_strerror(r));
}

/* An attempt failed: remember why, and try the next host, or give up with every cause. */
static void attempt_failed(pg_session_t *s, const char *why)
{
    size_t have = s->att_errs ? strlen(s->att_errs) : 0, add = strlen(why);
    char *e = realloc(s->att_errs, have + add + 2);
    if (e != NULL) {
        memcpy(e + have, why, add + 1);
        if (add == 0 || why[add - 1] != '\n')
            strcat(e, "\n");
        s->att_errs = e;
    }
    sy_conn_unwatch(&s->server);
    if (s->pg != NULL) {
        PQfinish(s->pg);
        s->pg = NULL;
        SY_STAT_SUB(s->route->upstreams, 1);
    }
    s->server.fd = -1;
    if (s->natt > 0 && ++s->iatt < s->natt) {
        pg_attempt_start(s);
        return;
    }
    connect_failed(s, s->att_errs ? s->att_errs : why);
}

static void pg_connect_start(pg_session_t *s)
{
    const char *why = "out of memory";
    s->pp = malloc(sizeof(*s->pp));
    if (s->pp == NULL || pg_build_params(s, s->target, 1, s->pp, &why) != 0) {
        connect_failed(s, why);
        return;
    }
    /* With several resolved host addresses, make one attempt per address. */
    const char *hl = NULL, *al = NULL, *pl = NULL;
    for (size_t i = 0; s->pp->keys[i]; i++) {
        if (s->pp->vals[i] == s->pp->hostlist)
            hl = s->pp->hostlist;
        else if (s->pp->vals[i] == s->pp->addrlist)
            al = s->pp->addrlist;
        else if (s->pp->vals[i] == s->pp->portlist)
            pl = s->pp->portlist;
    }
    if (hl != NULL && al != NULL && strchr(al, ',') != NULL) {
        size_t hlen = strlen(hl) + 1, alen = strlen(al) + 1, plen = pl ? strlen(pl) + 1 : 1;
        s->att_buf = malloc(hlen + alen + plen);
        if (s->att_buf == NULL) {
            connect_failed(s, why);
            return;
        }
        char *h = s->att_buf, *a = h + hlen, *p = a + alen;
        memcpy(h, hl, hlen);
        memcpy(a, al, alen);
        memcpy(p, pl ? pl : "", plen);
        int nh = 0, na = 0, np = 0;
        for (char *x = h; x && nh < PG_MAX_HOSTS; nh++) {
            s->att_host[nh] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        for (char *x = a; x && na < PG_MAX_HOSTS; na++) {
            s->att_addr[na] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        for (char *x = p; x && np < PG_MAX_HOSTS; np++) {
            s->att_port[np] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        s->natt = nh < na ? nh : na;
        for (int i = 0; i < s->natt; i++)
            if (i >= np)
                s->att_port[i] = np == 1 ? s->att_port[0] : (char *)"";
    }
    pg_set_state(s, PGS_CONNECTING);
    s->iatt = 0;
    pg_attempt_start(s);
}

/* ---- switchover: moving a session to another target ------------------------------ */

/*
 * With the session quiet (ReadyForQuery 'I', nothing in flight), the old upstream is
 * idle exactly as libpq left it when we adopted it, so libpq can use it again. On the
 * thread pool:
 *   1. ask the old session what cannot move (temporary tables, advisory locks, WITH HOLD
 *      cursors) and what must (SET values, prepared statements, LISTEN channels);
 *   2. connect to the new target with the client's original startup parameters;
 *   3. replay the settings, the prepared statements (same names: a driver's statement
 *      cache keeps working) and the LISTENs.
 * Back on the loop the new upstream is adopted, the old one finished, and the client is
 * told about ParameterStatus values that changed, and given any notification that
 * arrived on the old session meanwhile. None of this traffic reaches the client.
 */
typedef struct pg_move_s {
    uv_work_t     req;
    pg_session_t *s;
    PGconn       *old, *conn;
    pg_params_t   pp;
    const conf_target_t *target;
    conf_which_t  which;
    int           ok;
    char          err[512];
    pgr_buf_t     notifies;   /* NotificationResponse messages for the client */
    uint64_t      started;
    int           orphaned;   /* the session closed meanwhile: old is ours to finish */
} pg_move_t;

static void move_orphan(pg_move_t *m)
{
    m->orphaned = 1;
}

static void no_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void move_collect_notifies(pg_move_t *m)
{
    PGnotify *n;
    while ((n = PQnotifies(m->old)) != NULL) {
        pgr_notification(&m->notifies, (uint32_t)n->be_pid, n->relname, n->extra);
        PQfreemem(n);
    }
}

/* Replay settings, prepared statements and LISTENs on the new session in one round trip
 * (libpq pipeline mode). Returns 0, or -1 with the first failure in m->err. */
static int move_replay(pg_move_t *m, PGresult *settings, PGresult *prepared, PGresult *listens)
{
    PGconn *c = m->conn;
    int sent = 0, ok = 1;
    char what[160] = "";
    if (PQntuples(settings) + PQntuples(prepared) + PQntuples(listens) == 0)
        return 0;
    if (!PQenterPipelineMode(c)) {
        snprintf(m->err, sizeof(m->err), "cannot enter pipeline mode: %s", PQerrorMessage(c));
        return -1;
    }
    for (int i = 0; i < PQntuples(settings); i++) {
        const char *params[2] = { PQgetvalue(settings, i, 0), PQgetvalue(settings, i, 1) };
        sent += PQsendQueryParams(c, "SELECT pg_catalog.set_config($1, $2, false)", 2, NULL, params, NULL, NULL, 0);
    }
    for (int i = 0; i < PQntuples(prepared); i++) {
        const char *name = PQgetvalue(prepared, i, 0), *stmt = PQgetvalue(prepared, i, 1);
        if (strcmp(PQgetvalue(prepared, i, 2), "t") == 0) {
            /* The PREPARE statement as the client wrote it, picked out of the query string
             * it came in (which may hold other statements that must not run again). */
            size_t at, n;
            if (pg_sql_find_prepare(stmt, strlen(stmt), name, &at, &n) != 0) {
                snprintf(m->err, sizeof(m->err), "cannot find the PREPARE of %s in its query", name);
                PQexitPipelineMode(c);
                return -1;
            }
            char *one = strndup(stmt + at, n);
            sent += one ? PQsendQueryParams(c, one, 0, NULL, NULL, NULL, NULL, 0) : 0;
            free(one);
        } else {
            const char *p = PQgetvalue(prepared, i, 3), *perr;   /* "{23,25}" */
            size_t plen = strlen(p);
            ssize_t nt = pgw_parse_oid_array(p, plen, NULL, PGW_OID_ARRAY_MAX, &perr);
            Oid *types = nt > 0 ? malloc((size_t)nt * sizeof(*types)) : NULL;
            if (nt > 0 && types != NULL)
                nt = pgw_parse_oid_array(p, plen, types, (size_t)nt, &perr);
            if (nt < 0 || (nt > 0 && types == NULL)) {
                snprintf(m->err, sizeof(m->err), "cannot read the parameter types of %s: %s", name,
                         nt < 0 ? perr : "out of memory");
                free(types);
                PQexitPipelineMode(c);
                return -1;
            }
            sent += PQsendPrepare(c, name, stmt, (int)nt, types);
            free(types);
        }
    }
    for (int i = 0; i < PQntuples(listens); i++) {
        const char *ch = PQgetvalue(listens, i, 0);
        char *id = PQescapeIdentifier(c, ch, strlen(ch));
        char sql[600];
        snprintf(sql, sizeof(sql), "LISTEN %s", id ? id : "\"\"");
        PQfreemem(id);
        sent += PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    }
    if (!PQpipelineSync(c)) {
        snprintf(m->err, sizeof(m->err), "cannot send the replay: %s", PQerrorMessage(c));
        return -1;
    }
    for (int i = 0; i < sent; i++) {
        PGresult *r = PQgetResult(c);
        ExecStatusType st = PQresultStatus(r);
        if (ok && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            ok = 0;
            int ns = PQntuples(settings), np = PQntuples(prepared);
            if (i < ns)
                snprintf(what, sizeof(what), "setting %s", PQgetvalue(settings, i, 0));
            else if (i < ns + np)
                snprintf(what, sizeof(what), "prepared statement %s", PQgetvalue(prepared, i - ns, 0));
            else
                snprintf(what, sizeof(what), "LISTEN %s", PQgetvalue(listens, i - ns - np, 0));
            snprintf(m->err, sizeof(m->err), "cannot restore %s: %s", what,
                     r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        }
        PQclear(r);
        PQclear(PQgetResult(c));   /* the NULL that ends each command's results */
    }
    PGresult *sync = PQgetResult(c);
    if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC && ok) {
        ok = 0;
        snprintf(m->err, sizeof(m->err), "replay did not end with a sync: %s", PQerrorMessage(c));
    }
    PQclear(sync);
    PQexitPipelineMode(c);
    return ok ? 0 : -1;
}

static void move_work(uv_work_t *req)
{
    pg_move_t *m = req->data;
    PGresult *r = NULL, *settings = NULL, *prepared = NULL, *listens = NULL;
    PQsetnonblocking(m->old, 0);
    PQsetNoticeProcessor(m->old, no_notice, NULL);

    /* One round trip: what cannot move, then what must. */
    if (!PQsendQuery(m->old,
                     "SELECT (SELECT count(*) FROM pg_catalog.pg_class WHERE relpersistence = 't'"
                     " AND relnamespace = pg_catalog.pg_my_temp_schema()),"
                     " (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"
                     " AND pid = pg_catalog.pg_backend_pid()),"
                     " (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable);"
                     "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session';"
                     "SELECT name, statement, from_sql, parameter_types::pg_catalog.oid[]::text"
                     " FROM pg_catalog.pg_prepared_statements ORDER BY prepare_time;"
                     "SELECT pg_catalog.pg_listening_channels()")) {
        snprintf(m->err, sizeof(m->err), "%s", PQerrorMessage(m->old));
        goto out;
    }
    PGresult **slots[4] = { &r, &settings, &prepared, &listens };
    int nres = 0, bad = 0;
    PGresult *res;
    while ((res = PQgetResult(m->old)) != NULL) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK || nres >= 4) {
            if (!bad)
                snprintf(m->err, sizeof(m->err), "%s", PQresultErrorMessage(res));
            bad = 1;
            PQclear(res);
            continue;
        }
        *slots[nres++] = res;
    }
    if (bad || nres != 4) {
        if (!bad)
            snprintf(m->err, sizeof(m->err), "unexpected answer to the state query");
        goto out;
    }
    if (atoi(PQgetvalue(r, 0, 0)) > 0) {
        snprintf(m->err, sizeof(m->err), "the session holds temporary tables");
        goto out;
    }
    if (atoi(PQgetvalue(r, 0, 1)) > 0) {
        snprintf(m->err, sizeof(m->err), "the session holds advisory locks");
        goto out;
    }
    if (atoi(PQgetvalue(r, 0, 2)) > 0) {
        snprintf(m->err, sizeof(m->err), "the session has WITH HOLD cursors");
        goto out;
    }
    move_collect_notifies(m);

    if (m->conn == NULL)
        m->conn = PQconnectdbParams(m->pp.keys, m->pp.vals, 0);
    if (PQstatus(m->conn) != CONNECTION_OK) {
        snprintf(m->err, sizeof(m->err), "cannot connect: %s", PQerrorMessage(m->conn));
        goto out;
    }
    PQsetNoticeProcessor(m->conn, no_notice, NULL);
    if (move_replay(m, settings, prepared, listens) != 0)
        goto out;
    move_collect_notifies(m);
    if (PQtransactionStatus(m->conn) != PQTRANS_IDLE) {
        snprintf(m->err, sizeof(m->err), "the new session is not idle");
        goto out;
    }
    m->ok = 1;
out:
    PQclear(r);
    PQclear(settings);
    PQclear(prepared);
    PQclear(listens);
    for (char *p = m->err; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    size_t el = strlen(m->err);
    while (el > 0 && m->err[el - 1] == ' ')
        m->err[--el] = '\0';
}

static void pg_release(pg_session_t *s)
{
    if (s->state != PGS_RELAY)
        return;
    s->link.held = 0;
    s->refs++;
    int r = sy_pipe_resume(s, &s->c2s);
    if (r == SY_PUMP_DST_ERR)
        upstream_lost(s, s->c2s.err);
    else if (r == SY_PUMP_OK && s->state == PGS_RELAY)
        pg_relay_drive(s, &s->client, 0);
    pg_session_unref(s);
}

static void move_done(uv_work_t *req, int status)
{
    pg_move_t *m = req->data;
    pg_session_t *s = m->s;
    char q[600];

    s->move = NULL;
    if (s->state != PGS_MOVING) {
        /* The session was closed while we worked (a shutdown's kick): the old upstream was
         * left to us. */
        if (m->orphaned) {
            PQsetnonblocking(m->old, 1);
            PQfinish(m->old);
        }
        if (m->conn)
            PQfinish(m->conn);
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    if (!m->ok) {
        if (m->conn)
            PQfinish(m->conn);
        sy_warn("event=move_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->route->conf->name,
                sy_logq(q, sizeof(q), m->err));
        pg_close(s, "57P01", "route %s switched to %s; reconnect (%s)", s->route->conf->name,
                 m->which == CONF_EXTERNAL ? "external" : "builtin", m->err);
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    /* Swap upstreams: finish the old one, adopt the new socket and TLS session. */
    PQsetnonblocking(m->old, 1);
    PQfinish(m->old);
    s->pg = m->conn;
    PQsetnonblocking(s->pg, 1);
    s->server.fd = PQsocket(s->pg);
    s->server.ssl = NULL;
    s->server.tp = &sy_plain_transport;
    s->server.rd_wait = UV_READABLE;
    s->server.wr_wait = UV_WRITABLE;
    s->server.tls_err = NULL;
    if (PQsslInUse(s->pg))
        sy_tls_adopt(&s->server, PQsslStruct(s->pg, "OpenSSL"));
    s->be_pid = (uint32_t)PQbackendPID(s->pg);
    s->target = m->target;
    s->which = m->which;
    s->link.target = m->target;
    s->link.which = m->which;
    pgw_scan_init(&s->sscan, sy_conf()->max_message_size);
    pgw_scan_capture(&s->sscan, 'S');

    /* Tell the client what changed, and hand over notifications that arrived, before
     * anything more from the new server: queued whole, however large, and fed to the
     * client as it reads (pg_extra_drain). */
    for (const char *const *p = reported_params; *p; p++) {
        const char *v = PQparameterStatus(s->pg, *p);
        const char *seen = pg_param_get(s, *p);
        if (v != NULL && (seen == NULL || strcmp(seen, v) != 0)) {
            pgr_parameter_status(&s->s2c_extra, *p, v);
            pg_param_seen(s, *p, v);
        }
    }
    pgr_append(&s->s2c_extra, m->notifies.data, m->notifies.len);
    pg_set_state(s, PGS_RELAY);
    if (s->s2c_extra.oom) {
        pg_close(s, "53200", "route %s: out of memory after a move", s->route->conf->name);
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    if (pg_extra_drain(s) < 0) {
        pg_close(s, NULL, NULL);   /* the client is gone */
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    sy_info("event=moved conn=%llu route=%s target=%s upstream=%s backend_pid=%u ms=%llu", (unsigned long long)s->id,
            s->route->conf->name, s->which == CONF_EXTERNAL ? "external" : "builtin", s->target->hostport, s->be_pid,
            (unsigned long long)(uv_now(s->link.loop) - m->started));
    s->refs++;
    if (!sy_route_should_hold(&s->link)) {
        pg_release(s);
    } else {
        s->link.held = 1;   /* paused meanwhile: RESUME releases it */
        pg_update_polls(s);
    }
    if (s->state == PGS_RELAY || s->state == PGS_CLOSING)
        sy_switch_moved(&s->link, 1);
    pg_session_unref(s);
out:
    pgr_buf_free(&m->notifies);
    free(m);
    pg_session_unref(s);
}

static int pg_link_quiet(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    return s->state == PGS_RELAY && pg_idle(s) && s->c2s.start == s->c2s.fwd;
}

static void pg_link_move(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    sy_route_t *r = s->route;
    pg_move_t *m = calloc(1, sizeof(*m));
    const char *why = "out of memory";
    if (m == NULL || pg_build_params(s, sy_route_target(r, sy_route_active(r)), 0,
                                     &m->pp, &why) != 0) {
        free(m);
        pg_close(s, "57P01", "route %s switched; reconnect (%s)", r->conf->name, why);
        sy_switch_moved(l, 0);
        return;
    }
    m->req.data = m;
    m->s = s;
    m->old = s->pg;
    m->which = sy_route_active(r);
    m->target = sy_route_target(r, sy_route_active(r));
    m->started = uv_now(s->link.loop);
    if (s->pre_conn != NULL && s->pre_target == m->target && PQstatus(s->pre_conn) == CONNECTION_OK) {
        m->conn = s->pre_conn;   /* opened while the session was still working */
        s->pre_conn = NULL;
    } else if (s->pre_conn != NULL) {
        PQfinish(s->pre_conn);
        s->pre_conn = NULL;
    }
    pg_set_state(s, PGS_MOVING);
    s->move = m;
    s->c2s.reading = 0;
    sy_conn_unwatch(&s->server);   /* libpq owns the socket until we take the new one */
    pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), client_cb);
    s->refs++;
    if (uv_queue_work(s->link.loop, &m->req, move_work, move_done) != 0) {
        s->refs--;
        s->move = NULL;
        free(m);
        pg_set_state(s, PGS_RELAY);
        pg_close(s, "57P01", "route %s switched; reconnect", r->conf->name);
        sy_switch_moved(l, 0);
    }
}

typedef struct pg_prep_s {
    uv_work_t     req;
    pg_session_t *s;
    pg_params_t   pp;
    const conf_target_t *target;
    PGconn       *conn;
} pg_prep_t;

static void prep_work(uv_work_t *req)
{
    pg_prep_t *w = req->data;
    w->conn = PQconnectdbParams(w->pp.keys, w->pp.vals, 0);
}

static void prep_done(uv_work_t *req, int status)
{
    pg_prep_t *w = req->data;
    pg_session_t *s = w->s;
    if (s->state == PGS_CLOSING || s->state == PGS_CLOSED || PQstatus(w->conn) != CONNECTION_OK) {
        if (PQstatus(w->conn) != CONNECTION_OK && s->route) {
            char q[600];
            sy_warn("event=preconnect_failed conn=%llu route=%s error=%s", (unsigned long long)s->id,
                    s->route->conf->name, sy_logq(q, sizeof(q), PQerrorMessage(w->conn)));
        }
        PQfinish(w->conn);
    } else {
        if (s->pre_conn)
            PQfinish(s->pre_conn);
        s->pre_conn = w->conn;
        s->pre_target = w->target;
    }
    sy_switch_prepared(&s->link);
    free(w);
    pg_session_unref(s);
}

static void pg_link_prepare(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    sy_route_t *r = s->route;
    const conf_target_t *t = sy_route_target(r, sy_route_active(r));
    const char *why;
    pg_prep_t *w = calloc(1, sizeof(*w));
    if (w == NULL || pg_build_params(s, t, 0, &w->pp, &why) != 0) {
        free(w);
        sy_switch_prepared(l);   /* the move will connect itself */
        return;
    }
    w->req.data = w;
    w->s = s;
    w->target = t;
    s->refs++;
    if (uv_queue_work(s->link.loop, &w->req, prep_work, prep_done) != 0) {
        s->refs--;
        free(w);
        sy_switch_prepared(l);
    }
}

static void pg_link_kick(sy_session_link_t *l, const char *why)
{
    pg_session_t *s = (pg_session_t *)l;
    pg_close(s, "57P01", "%s", why);
}

static void pg_link_release(sy_session_link_t *l)
{
    pg_release((pg_session_t *)l);
}

static void resolve_next(pg_session_t *s);

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_session_t *s = req->data;
    if (s->state != PGS_RESOLVING) {
        uv_freeaddrinfo(res);
        pg_session_unref(s);
        return;
    }
    int i = s->ihost;
    if (status != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "could not translate host name \"%s\" to address: %s", s->hosts[i],
                 uv_strerror(status));
        free(s->resolve_err);
        s->resolve_err = strdup(msg);
    } else {
        char list[2048] = "";
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            char ip[INET6_ADDRSTRLEN];
            if (a->ai_family == AF_INET)
                uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof(ip));
            else if (a->ai_family == AF_INET6)
                uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof(ip));
            else
                continue;
            if (strstr(list, ip) != NULL)
                continue;
            size_t l = strlen(list);
            snprintf(list + l, sizeof(list) - l, "%s%s", l ? "," : "", ip);
        }
        s->addrs[i] = strdup(list);
    }
    uv_freeaddrinfo(res);
    s->ihost++;
    resolve_next(s);
    pg_session_unref(s);
}

static void resolve_next(pg_session_t *s)
{
    while (s->ihost < s->nhosts) {
        const char *h = s->hosts[s->ihost];
        unsigned char tmp[16];
        if (h[0] == '\0' || h[0] == '/' || h[0] == '@') {
            s->addrs[s->ihost] = strdup("");       /* unix socket: nothing to resolve */
        } else if (inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1) {
            s->addrs[s->ihost] = strdup(h);
        } else {
            struct addrinfo hints;
            memset(&hints, 0, sizeof(hints));
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            s->gai.data = s;
            s->refs++;
            int r = uv_getaddrinfo(s->link.loop, &s->gai, gai_cb, h, NULL, &hints);
            if (r == 0)
                return;
            s->refs--;
            s->addrs[s->ihost] = NULL;
        }
        s->ihost++;
    }
    pg_connect_start(s);
}

/* Resolve the target's host names on the thread pool (libpq's own getaddrinfo would
 * block the loop), then connect. Targets with hostaddr need no resolution. */
static void pg_upstream_begin(pg_session_t *s)
{
    const conf_kv_t *kv = &s->target->pg;
    const char *host = conf_kv_get(kv, "host");
    int timeout = s->route ? sy_conf()->connect_timeout : 10;
    const char *ct = conf_kv_get(kv, "connect_timeout");
    if (ct != NULL && atoi(ct) > 0)
        timeout = atoi(ct) < 2 ? 2 : atoi(ct);   /* libpq treats 1 as 2 */

    pg_set_state(s, PGS_RESOLVING);
    uv_timer_init(s->link.loop, &s->timer);
    s->timer.data = s;
    s->refs++;
    s->timer_on = 1;
    s->timeout_ms = (uint64_t)timeout * 1000;
    uv_timer_start(&s->timer, connect_timeout_cb, s->timeout_ms, 0);

    s->c2s.reading = 0;   /* hold anything the client pipelines until upstream is ready */
    if (host != NULL && conf_kv_get(kv, "hostaddr") == NULL) {
        char *copy = strdup(host);
        char *save = NULL;
        /* keep empty entries: "a,,b" means a default host in libpq */
        char *p = copy;
        while (p != NULL && s->nhosts < PG_MAX_HOSTS) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            s->hosts[s->nhosts++] = strdup(p);
            p = comma ? comma + 1 : NULL;
        }
        (void)save;
        free(copy);
    }
    s->ihost = 0;
    resolve_next(s);
}

/* ---- client startup ------------------------------------------------------------------ */

static int write_small(pg_session_t *s, const void *bytes, size_t len)
{
    /* Used only for the one-byte SSL answers on a fresh socket. */
    ssize_t n = s->client.tp->write(&s->client, bytes, len);
    return n == (ssize_t)len ? 0 : -1;
}

static void pg_route_and_connect(pg_session_t *s);

static void handle_startup(pg_session_t *s, size_t plen)
{
    sy_pipe_t *p = &s->c2s;
    switch (s->st.kind) {
    case PGW_STARTUP_SSL:
    case PGW_STARTUP_GSSENC: {
        int *seen = s->st.kind == PGW_STARTUP_SSL ? &s->ssl_answered : &s->gss_answered;
        if (*seen || s->client.ssl != NULL) {
            pg_close(s, "08P01", "unexpected %s after the encryption negotiation",
                     s->st.kind == PGW_STARTUP_SSL ? "SSLRequest" : "GSSENCRequest");
            return;
        }
        if (p->end > plen) {
            /* CVE-2021-23222: bytes sent before our answer could be injected by a
             * man in the middle; the server refuses them, and so do we. */
            pg_close(s, "08P01", "received unencrypted data after SSL request");
            return;
        }
        *seen = 1;
        p->start = p->fwd = p->scanned = p->end = 0;
        int tls = s->st.kind == PGW_STARTUP_SSL && s->listener->tls_ctx != NULL;
        if (write_small(s, tls ? "S" : "N", 1) != 0) {
            pg_close(s, NULL, NULL);
            return;
        }
        if (tls) {
            if (sy_tls_attach(&s->client, s->listener->tls_ctx, 1, NULL) != 0) {
                pg_close(s, NULL, NULL);
                return;
            }
            pg_set_state(s, PGS_CLIENT_TLS);
        }
        return;
    }
    case PGW_STARTUP_CANCEL:
        pg_cancel_request(s->st.cancel_pid, s->st.cancel_key);
        pg_close(s, NULL, NULL);
        return;
    case PGW_STARTUP_MESSAGE:
        break;
    }

    /* Keep our own copy: the pipe buffer is reused by the relay. */
    s->startup = malloc(plen);
    if (s->startup == NULL) {
        pg_close(s, "53200", "out of memory");
        return;
    }
    memcpy(s->startup, p->buf, plen);
    pgw_startup_t st;
    pgw_startup_parse(s->startup, plen, &st);
    s->st = st;
    memmove(p->buf, p->buf + plen, p->end - plen);
    p->end -= (uint32_t)plen;
    p->start = p->fwd = p->scanned = 0;

    s->user = pgw_startup_get(&s->st, "user");
    s->database = pgw_startup_get(&s->st, "database");
    if (s->database == NULL || s->database[0] == '\0')
        s->database = s->user;

    /* Newer minor versions and _pq_. options: tell the client what we speak. */
    const char *unknown[32];
    size_t nunknown = 0, off = 0;
    const char *name, *value;
    while (pgw_startup_next(&s->st, &off, &name, &value))
        if (strncmp(name, "_pq_.", 5) == 0 && nunknown < 32)
            unknown[nunknown++] = name;
    if (s->st.minor > 0 || nunknown > 0) {
        uint8_t out[2048];
        /* The server sends its newest full version here (PG_PROTOCOL_LATEST), and so do we. */
        size_t len = pgw_build_negotiate(out, sizeof(out), PGW_PROTO_3_0, unknown, nunknown);
        if (len == 0 || sy_pipe_inject(&s->s2c, out, len) != 0 || sy_pipe_flush(&s->s2c) < 0) {
            pg_close(s, NULL, NULL);
            return;
        }
    }
    if (pgw_startup_get(&s->st, "replication") != NULL) {
        pg_close(s, "08P01", "replication connections are not supported");
        return;
    }
    pg_route_and_connect(s);
}

/* ---- admin console ------------------------------------------------------------------ */

static void admin_drive(pg_session_t *s);

/* Move console output into the client pipe as space allows, then write it. */
static int admin_flush(pg_session_t *s)
{
    sy_pipe_t *p = &s->s2c;
    if (sy_pipe_feed(p, s->admin_out.data, s->admin_out.len, &s->admin_sent) < 0)
        return -1;
    if (s->admin_sent == s->admin_out.len && !sy_pipe_pending(p)) {
        s->admin_out.len = 0;
        s->admin_sent = 0;
    }
    return 0;
}

static void admin_ready(pg_session_t *s)
{
    uint8_t z[8];
    pgr_append(&s->admin_out, z, pgw_build_ready(z, sizeof(z), 'I'));
}

static void admin_done(pg_session_t *s)
{
    s->admin_busy = 0;
    if (s->state == PGS_ADMIN) {
        admin_ready(s);
        admin_drive(s);
    }
    pg_session_unref(s);
}

/*
 * A console command runs on the main loop (it reads routes and drives switches there);
 * the session stays on its worker. The command carries what the main loop needs (its
 * text, the user) and gets its own output buffer; the result comes back by message to
 * the session's worker, which alone touches the session.
 */
typedef struct admin_cmd_s {
    sy_ctl_t      ctl;        /* first: runs on the main loop */
    sy_msg_t      back;       /* the result, on the session's worker */
    pg_session_t *s;          /* referenced until back runs */
    int           worker;
    char          user[256];
    pgr_buf_t     out;        /* written on the main loop */
    char          sql[];
} admin_cmd_t;

static void admin_cmd_back(sy_msg_t *m)
{
    admin_cmd_t *cmd = (admin_cmd_t *)((char *)m - offsetof(admin_cmd_t, back));
    pg_session_t *s = cmd->s;
    pgr_append(&s->admin_out, cmd->out.data, cmd->out.len);
    if (cmd->out.oom || s->admin_out.oom) {
        pgr_buf_free(&cmd->out);
        free(cmd);
        s->admin_busy = 0;
        pg_close(s, "53200", "switchyard: out of memory");
        pg_session_unref(s);
        return;
    }
    pgr_buf_free(&cmd->out);
    free(cmd);
    admin_done(s);
}

static void admin_cmd_done(void *ctx, pgr_buf_t *out)
{
    admin_cmd_t *cmd = ctx;
    sy_post(cmd->worker, &cmd->back);
}

static void admin_cmd_main(sy_ctl_t *c)
{
    admin_cmd_t *cmd = (admin_cmd_t *)c;
    if (admin_execute(cmd->sql, cmd->user, &cmd->out, admin_cmd_done, cmd))
        admin_cmd_done(cmd, &cmd->out);
}

/* Read and run console commands; one at a time, in order. */
static void admin_drive(pg_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    if (admin_flush(s) < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    while (!s->admin_busy && s->admin_out.len == 0) {
        /* Scan what is buffered; a pending CAPTURED event may come with 0 bytes. */
        pgw_event_t ev = PGW_EV_NONE;
        ssize_t n = pgw_scan(&s->cscan, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            pg_close(s, "08P01", "protocol violation on the console: %s", s->cscan.err);
            return;
        }
        p->scanned += (uint32_t)n;
        if (ev == PGW_EV_HEADER) {
            uint8_t t = s->cscan.type;
            if (t == 'X') {
                pg_close(s, NULL, NULL);
                return;
            }
            if (t != 'Q' || s->cscan.len - 4 > PGW_CAPTURE_MAX) {
                uint8_t e[512];
                pgr_append(&s->admin_out, e, pgw_build_error(e, sizeof(e), "ERROR", "0A000",
                           t == 'Q' ? "switchyard: console command too long"
                                    : "switchyard: the console speaks the simple query protocol only", NULL));
                if (t == 'Q' || t == 'S')
                    admin_ready(s);
            }
            continue;
        }
        if (ev == PGW_EV_CAPTURED) {
            char sql[PGW_CAPTURE_MAX + 1];
            size_t len = s->cscan.cap_len;
            memcpy(sql, s->cscan.cap, len);
            sql[len] = '\0';
            /* The query text ends at its NUL (also an embedded one), as the server reads it. */
            char q[300];
            sy_info("event=console conn=%llu command=%s", (unsigned long long)s->id, sy_logq(q, sizeof(q), sql));
            admin_cmd_t *cmd = calloc(1, sizeof(*cmd) + len + 1);
            if (cmd == NULL) {
                pg_close(s, "53200", "switchyard: out of memory");
                return;
            }
            memcpy(cmd->sql, sql, len + 1);
            snprintf(cmd->user, sizeof(cmd->user), "%s", s->user ? s->user : "");
            cmd->ctl.fn = admin_cmd_main;
            cmd->back.fn = admin_cmd_back;
            cmd->s = s;
            cmd->worker = sy_loop_index(s->link.loop);
            s->refs++;
            s->admin_busy = 1;
            sy_ctl_post(&cmd->ctl);
            continue;
        }
        /* Nothing to report: need more bytes. */
        if (p->scanned == p->end) {
            p->start = p->fwd = p->scanned = p->end = 0;
            ssize_t r = s->client.tp->read(&s->client, p->buf, p->cap);
            if (r == SY_EAGAIN)
                break;
            if (r <= 0) {
                pg_close(s, NULL, NULL);
                return;
            }
            p->end = (uint32_t)r;
        }
    }
    if (admin_flush(s) < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    int ev = sy_pipe_dst_events(&s->s2c);
    if (!s->admin_busy && s->admin_out.len == 0)
        ev |= s->client.rd_wait;
    else if (s->admin_sent < s->admin_out.len)
        ev |= s->client.wr_wait;
    pg_watch(s, &s->client, ev, client_cb);
}

static void pg_admin_begin(pg_session_t *s)
{
    s->link.console = 1;
    static const char *const params[][2] = {
        { "server_version", "15.0 (switchyard " SY_VERSION ")" }, { "server_encoding", "UTF8" },
        { "client_encoding", "UTF8" }, { "DateStyle", "ISO, MDY" }, { "integer_datetimes", "on" },
        { "standard_conforming_strings", "on" }, { "application_name", "switchyard" },
    };
    uint8_t out[1024];
    size_t off = pgw_build_auth_ok(out, sizeof(out));
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        off += pgw_build_parameter_status(out + off, sizeof(out) - off, params[i][0], params[i][1]);
    off += pgw_build_backend_key(out + off, sizeof(out) - off, 0, 0);
    off += pgw_build_ready(out + off, sizeof(out) - off, 'I');
    pg_set_state(s, PGS_ADMIN);
    pgw_scan_capture(&s->cscan, 'Q');
    pgr_append(&s->admin_out, out, off);
    sy_info("event=console_open conn=%llu", (unsigned long long)s->id);
    admin_drive(s);
}

/* Ask the client for its password (AuthenticationCleartextPassword: 'R', len 8, code 3);
 * handle_password checks the answer. */
static void pg_ask_password(pg_session_t *s)
{
    uint8_t ask[16];
    size_t asklen = pgw_build_auth_cleartext(ask, sizeof(ask));
    pg_set_state(s, PGS_AUTH);
    sy_pipe_inject(&s->s2c, ask, asklen);
    sy_pipe_flush(&s->s2c);
    pg_watch(s, &s->client, UV_READABLE | sy_pipe_dst_events(&s->s2c), client_cb);
}

static void pg_route_and_connect(pg_session_t *s)
{
    if (strcmp(s->database, SY_ADMIN_DATABASE) == 0) {
        s->admin = 1;
        if (!s->trusted && sy_conf()->admin_password == NULL) {
            pg_close(s, "28000", "the console is open to loopback and unix-socket clients only");
            return;
        }
        if (!s->trusted) {
            pg_ask_password(s);
            return;
        }
        pg_admin_begin(s);
        return;
    }
    s->route = sy_route_for_database(s->listener, s->database);
    if (s->route == NULL) {
        pg_close(s, "3D000", "no route for database \"%s\" on listener %s", s->database,
                 s->listener->conf->name);
        return;
    }
    SY_STAT_ADD(s->route->clients, 1);
    s->which = sy_route_active(s->route);
    s->target = s->which == CONF_EXTERNAL ? &s->route->conf->external : &s->route->conf->builtin;
    sy_session_set_route(&s->link, s->route);
    s->link.which = s->which;
    s->link.target = s->target;
    if (!s->target->defined) {
        pg_close(s, "08001", "route %s: the %s target is not configured", s->route->conf->name,
                 s->which == CONF_EXTERNAL ? "external" : "builtin");
        return;
    }
    if (!s->trusted && s->listener->conf->auth_password != NULL) {
        pg_ask_password(s);
        return;
    }
    if (!s->trusted) {
        pg_close(s, "28000", "connections from non-loopback addresses need auth_password on listener %s",
                 s->listener->conf->name);
        return;
    }
    char q1[256], q2[256];
    sy_info("event=connect conn=%llu route=%s database=%s user=%s target=%s", (unsigned long long)s->id,
            s->route->conf->name, sy_logq(q1, sizeof(q1), s->database), sy_logq(q2, sizeof(q2), s->user),
            s->which == CONF_EXTERNAL ? "external" : "builtin");
    pg_upstream_begin(s);
}

/* The client's PasswordMessage, for listeners with auth_password. */
static void handle_password(pg_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    pgw_password_t pw;
    ssize_t r = pgw_password_parse(p->buf, p->end, PGW_PASSWORD_MAX, &pw);
    if (r == PGW_ERR) {
        pg_close(s, "08P01", "expected a password message");
        return;
    }
    if (r == PGW_NEED_MORE)
        return;
    /* A body that is not one string (pw.password NULL) is a wrong password, as before. */
    const char *want = s->admin ? sy_conf()->admin_password : s->listener->conf->auth_password;
    int ok = pw.password != NULL && strlen(want) == pw.len && memcmp(pw.password, want, pw.len) == 0;
    uint32_t len = (uint32_t)r;
    memset(p->buf, 0, len);
    memmove(p->buf, p->buf + len, p->end - len);
    p->end -= len;
    if (!ok) {
        pg_close(s, "28P01", "password authentication failed for user \"%s\"", s->user);
        return;
    }
    if (s->admin)
        pg_admin_begin(s);
    else
        pg_upstream_begin(s);
}

static void client_startup_read(pg_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    for (;;) {
        if (s->state == PGS_STARTUP && p->end > 0) {
            pgw_startup_t st;
            ssize_t r = pgw_startup_parse(p->buf, p->end, &st);
            if (r < 0) {
                pg_close(s, "08P01", "invalid startup packet: %s", st.err ? st.err : "malformed");
                return;
            }
            if (r > 0) {
                s->st = st;
                handle_startup(s, (size_t)r);
                if (s->state == PGS_STARTUP && p->end > 0)
                    continue;   /* e.g. nothing, but keep parsing what is buffered */
                if (s->state != PGS_STARTUP)
                    break;
            }
        }
        if (s->state == PGS_AUTH) {
            handle_password(s);
            if (s->state != PGS_AUTH)
                break;
        }
        if (s->state != PGS_STARTUP && s->state != PGS_AUTH)
            break;
        uint32_t space = sy_pipe_space(p);
        if (space == 0) {
            pg_close(s, "08P01", "startup packet too long");
            return;
        }
        ssize_t n = s->client.tp->read(&s->client, p->buf + p->end, space);
        if (n == SY_EAGAIN)
            break;
        if (n <= 0) {
            pg_close(s, NULL, NULL);   /* client left during startup */
            return;
        }
        p->end += (uint32_t)n;
    }
    if (s->state == PGS_STARTUP || s->state == PGS_AUTH)
        pg_watch(s, &s->client, s->client.rd_wait, client_cb);
    else if (s->state == PGS_CLIENT_TLS)
        pg_watch(s, &s->client, UV_READABLE, client_cb);
}

static void client_tls_step(pg_session_t *s)
{
    int r = sy_tls_handshake(&s->client);
    if (r < 0) {
        sy_info("event=client_tls_failed conn=%llu error=\"%s\"", (unsigned long long)s->id,
                s->client.tls_err ? s->client.tls_err : "");
        pg_close(s, NULL, NULL);
        return;
    }
    if (r == 0) {
        pg_watch(s, &s->client, s->client.rd_wait, client_cb);
        return;
    }
    pg_set_state(s, PGS_STARTUP);
    s->client.rd_wait = UV_READABLE;
    client_startup_read(s);
}

static void client_cb(sy_conn_t *c, int status, int events)
{
    pg_session_t *s = c->data;
    s->refs++;   /* the session may close inside; free it only after we return */
    switch (s->state) {
    case PGS_STARTUP:
    case PGS_AUTH:
        client_startup_read(s);
        break;
    case PGS_CLIENT_TLS:
        client_tls_step(s);
        break;
    case PGS_RELAY:
        pg_relay_drive(s, c, events);
        break;
    case PGS_ADMIN:
        admin_drive(s);
        break;
    case PGS_CLOSING:
        pg_closing_drive(s);
        break;
    case PGS_RESOLVING:
    case PGS_CONNECTING: {
        /* Not reading while we connect; a hang-up shows as an event we must not spin on. */
        pg_watch(s, &s->client, 0, client_cb);
        break;
    }
    case PGS_MOVING:
        if (sy_pipe_flush(&s->s2c) < 0)
            pg_close(s, NULL, NULL);   /* the move finishes and finds the session closing */
        else
            pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), client_cb);
        break;
    default:
        break;
    }
    pg_session_unref(s);
}

static void pg_describe(const sy_session_link_t *l, char cols[][128])
{
    const pg_session_t *s = (const pg_session_t *)l;
    snprintf(cols[0], 128, "%llu", (unsigned long long)s->id);
    snprintf(cols[1], 128, "%s", s->admin ? "console" : "postgres");
    snprintf(cols[2], 128, "%s", s->route ? s->route->conf->name : "");
    snprintf(cols[3], 128, "%s", s->target ? s->target->hostport : "");
    snprintf(cols[4], 128, "%s", state_names[s->state]);
    snprintf(cols[5], 128, "txn=%c inflight=%u copy=%s db=%.40s user=%.40s", s->txn ? s->txn : '-', s->inflight,
             s->copy_in || s->copy_out ? "yes" : "no", s->database ? s->database : "",
             s->user ? s->user : "");
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
    s->trusted = trusted;
    s->state = PGS_STARTUP;
    s->link.describe = pg_describe;
    s->link.quiet = pg_link_quiet;
    s->link.prepare = pg_link_prepare;
    s->link.move = pg_link_move;
    s->link.kick = pg_link_kick;
    s->link.release = pg_link_release;
    sy_session_link(&s->link);
    SY_STAT_ADD(sy_server.nclients, 1);
    sy_conn_init(&s->client, s->link.loop, fd, s);
    sy_conn_init(&s->server, s->link.loop, -1, s);
    s->server.own_fd = 0;
    s->c2s = (sy_pipe_t){ .buf = s->bufs, .cap = SY_PIPE_BUF, .src = &s->client, .dst = &s->server,
                          .scan = c2s_scan, .reading = 1 };
    s->s2c = (sy_pipe_t){ .buf = s->bufs + SY_PIPE_BUF, .cap = SY_PIPE_BUF, .src = &s->server,
                          .dst = &s->client, .scan = s2c_scan, .reading = 1 };
    pgw_scan_init(&s->cscan, sy_conf()->max_message_size);
    pgw_scan_init(&s->sscan, sy_conf()->max_message_size);
    pgw_scan_capture(&s->sscan, 'S');   /* ParameterStatus: what the client knows */
    if (sy_conn_watch(&s->client, UV_READABLE, client_cb) != 0) {
        sy_conn_close(&s->client);
        sy_session_unlink(&s->link);
        SY_STAT_SUB(sy_server.nclients, 1);
        free(s);
        return;
    }
    sy_debug("event=accept conn=%llu listener=%s", (unsigned long long)s->id, l->conf->name);
}

const sy_proto_t pg_proto = { "postgres", pg_session_start };
