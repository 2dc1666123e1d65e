/*
 * redis_session.c - one Redis client connection (the session): the lifecycle (references,
 * the state, the one close path), attaching the server connection it relays to, and the
 * relay. The other parts are in redis_client.c, redis_server.c (the server connection, an
 * object of its own) and redis_move.c (redis_internal.h lists them).
 *
 *   accept ──▶ resolve (uv_getaddrinfo unless numeric) ──▶ non-blocking connect
 *          ──▶ TLS handshake (rediss://) ──▶ AUTH / SELECT, replies swallowed
 *          ──▶ relay: c2s framed by the request scanner, s2c by the reply scanner
 *
 * One upstream connection per client, so everything Redis offers keeps working; with
 * `multiplex = on`, a client shares its worker's upstream until it does anything stateful
 * (redis_mux.c). The session always knows where the protocol stands: replies owed (`pending`), MULTI,
 * WATCH, subscriptions, blocking commands, MONITOR and CLIENT REPLY modes.
 *
 * Commands switchyard answers itself (AUTH, the AUTH part of HELLO, anything sent before
 * a required AUTH) must be answered in order. When one completes while replies are
 * still owed, the client stream is held at that command until the owed replies have
 * passed, then the answer is appended and the stream resumes. Nothing is queued per
 * command: the state is a few counters.
 *
 * States: CONNECTING (client bytes wait in the kernel), FAILED (answer the first
 * command with the connect error, then close), RELAY, MOVING (switchover: a new upstream
 * is being set up on the thread pool), CLOSING, CLOSED.
 *
 * For switchover the session also remembers what a new upstream must be told to look
 * the same: the client's SELECT, CLIENT SETNAME, HELLO version and subscriptions.
 */
#include "proxy/redis/redis_internal.h"


void rs_sub_clear(sub_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->names[i]);
    free(set->names);
    memset(set, 0, sizeof(*set));
}

sub_set_t *rs_subs(redis_session_t *s)
{
    if (s->subs == NULL)
        s->subs = calloc(3, sizeof(*s->subs));
    return s->subs;
}

size_t rs_subs_total(const redis_session_t *s)
{
    return s->subs == NULL ? 0 : s->subs[0].n + s->subs[1].n + s->subs[2].n;
}

void rs_set_errmsg(redis_session_t *s, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);   /* fmt's arguments may be s->errmsg itself */
    va_end(ap);
    free(s->errmsg);
    s->errmsg = strdup(msg);
}

const char *rs_errmsg(const redis_session_t *s)
{
    return s->errmsg != NULL ? s->errmsg : "switchyard: out of memory";
}

int rs_set_client_name(redis_session_t *s, const char *name)
{
    free(s->client_name);
    s->client_name = NULL;
    if (name == NULL || name[0] == '\0')
        return 0;
    s->client_name = strdup(name);
    return s->client_name != NULL ? 0 : -1;
}

void rs_unref(redis_session_t *s)
{
    if (--s->refs == 0) {
        if (s->subs != NULL)
            for (int i = 0; i < 3; i++)
                rs_sub_clear(&s->subs[i]);
        free(s->subs);
        free(s->errmsg);
        free(s->effects);
        free(s->masks);
        free(s->client_name);
        rs_repl_free(s);
        rs_acl_free(s);
        sy_pipe_release(&s->c2s);
        sy_pipe_release(&s->s2c);
        free(s);
    }
}

int rs_sub_add(sub_set_t *set, const char *name, size_t len)
{
    for (size_t i = 0; i < set->n; i++)
        if (strlen(set->names[i]) == len && memcmp(set->names[i], name, len) == 0)
            return 0;
    if (set->n == set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 8;
        char **nn = realloc(set->names, ncap * sizeof(char *));
        if (nn == NULL)
            return -1;
        set->names = nn;
        set->cap = ncap;
    }
    char *c = malloc(len + 1);
    if (c == NULL)
        return -1;
    memcpy(c, name, len);
    c[len] = '\0';
    set->names[set->n++] = c;
    return 0;
}

void rs_sub_del(sub_set_t *set, const char *name, size_t len)
{
    for (size_t i = 0; i < set->n; i++)
        if (strlen(set->names[i]) == len && memcmp(set->names[i], name, len) == 0) {
            free(set->names[i]);
            set->names[i] = set->names[--set->n];
            return;
        }
}

void rs_set_state(redis_session_t *s, rs_state_t to)
{
    static const unsigned allowed[] = {
        [RS_CONNECTING] = 1u << RS_FAILED | 1u << RS_RELAY | 1u << RS_CLOSING,
        [RS_FAILED]     = 1u << RS_CLOSING,
        [RS_RELAY]      = 1u << RS_CLOSING | 1u << RS_MOVING | 1u << RS_CONNECTING,   /* pinned */
        [RS_MOVING]     = 1u << RS_RELAY | 1u << RS_CLOSING,
        [RS_CLOSING]    = 1u << RS_CLOSED,
        [RS_CLOSED]     = 0,
    };
    if (!(allowed[s->state] & (1u << to))) {
        sy_err("event=bug conn=%llu from=%s to=%s", (unsigned long long)s->id, rs_names[s->state], rs_names[to]);
        abort();
    }
    if (to == RS_CLOSING)
        rs_mux_detach(s, 0);   /* before the client's server is marked closing: it is shared */
    s->state = to;
    if (to == RS_RELAY)
        sy_session_relaying(&s->link);
    else if (to == RS_CLOSING)
        sy_session_closing(&s->link);
}

/* ---- teardown ------------------------------------------------------------------ */

static void rs_timer_close_cb(uv_handle_t *h)
{
    redis_session_t *s = h->data;
    free(h);
    rs_unref(s);
}

/* Close the servers the client has: it needs them no more. */
static void rs_drop_servers(redis_session_t *s, const char *reason)
{
    rs_mux_detach(s, 0);
    if (s->srv != NULL)
        rs_server_close(s->srv, reason, 0);
    if (s->pre != NULL)
        rs_server_close(s->pre, reason, 0);
}

/* Make sv the server s relays to: the pipes read and write its conn, the client's link
 * names it, and it is ACTIVE while the client relays. NULL detaches: the pipes then point
 * at a closed conn. The one that was attached is detached and returned. */
rs_server_t *rs_attach(redis_session_t *s, rs_server_t *sv)
{
    rs_server_t *old = s->srv;
    if (old != NULL && old != sv && old->link.client == &s->link)
        old->link.client = NULL;
    s->srv = sv;
    sy_conn_t *c = sv != NULL ? &sv->conn : &s->noserver;
    s->c2s.dst = c;
    s->s2c.src = c;
    s->link.server = sv != NULL ? &sv->link : NULL;
    if (sv != NULL) {
        sv->link.client = &s->link;
        if (s->state == RS_RELAY)
            sy_server_set_state(&sv->link, SY_SERVER_ACTIVE);
    }
    return old == sv ? NULL : old;
}

static void rs_destroy(redis_session_t *s)
{
    if (s->state == RS_CLOSED)
        return;
    rs_set_state(s, RS_CLOSED);
    sy_session_unlink(&s->link);
    rs_drop_servers(s, "client_closed");
    sy_conn_close(&s->client);
    if (s->link.route) {
        SY_STAT_SUB(s->link.route->clients, 1);
        SY_STAT_ADD(s->link.route->bytes_in, s->c2s.bytes);
        SY_STAT_ADD(s->link.route->bytes_out, s->s2c.bytes);
    }
    SY_STAT_SUB(sy_server.nclients, 1);
    if (s->timer != NULL) {
        uv_timer_stop(s->timer);
        uv_close((uv_handle_t *)s->timer, rs_timer_close_cb);
        s->timer = NULL;
    }
    rs_unref(s);
    sy_server_client_gone();
}

/* The timer is allocated the first time it is needed (an idle client has none). Out of
 * memory the session goes on without the bound (it still ends when the client leaves). */
void rs_timer_start(redis_session_t *s, uv_timer_cb cb, uint64_t ms)
{
    if (s->timer == NULL) {
        if ((s->timer = malloc(sizeof(*s->timer))) == NULL) {
            sy_warn("event=out_of_memory conn=%llu what=timer", (unsigned long long)s->id);
            return;
        }
        uv_timer_init(s->link.loop, s->timer);
        s->timer->data = s;
        s->refs++;
    }
    uv_timer_start(s->timer, cb, ms, 0);
}

void rs_closing_timeout_cb(uv_timer_t *t)
{
    rs_destroy(t->data);
}

/* CLOSING: write what is left and the errors still owed, as fast as the client takes
 * them; then, when it may still be sending, the lingering close; then the end. The
 * closing timer bounds it all. */
static void rs_closing_drive(redis_session_t *s)
{
    for (;;) {
        while (s->errs_owed > 0 && rs_reply_error(s, s->errmsg != NULL ? s->errmsg : "ERR switchyard: out of memory") == 0)
            s->errs_owed--;
        if (sy_pipe_flush(&s->s2c) < 0) {
            rs_destroy(s);
            return;
        }
        if (sy_pipe_pending(&s->s2c)) {
            rs_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), rs_client_cb);
            return;
        }
        if (s->errs_owed == 0)
            break;
    }
    if (s->linger == 0 || sy_conn_linger(&s->client, &s->linger_left, s->linger == 1)) {
        rs_destroy(s);
        return;
    }
    s->linger = 2;
    rs_watch(s, &s->client, UV_READABLE, rs_client_cb);
}

/* Watch c for events; a watch that fails would leave the session waiting for an event that
 * never comes: close it instead (the client gets -ERR where one is owed). */
void rs_watch(redis_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb)
{
    int rc = sy_conn_watch_logged(c, events, cb, s->id);
    if (rc == 0 || s->state == RS_CLOSED)
        return;
    if (s->state == RS_CLOSING)
        rs_destroy(s);
    else
        rs_close(s, "cannot watch the connection: %s", uv_strerror(rc));
}

int rs_reply_error(redis_session_t *s, const char *msg)
{
    uint8_t out[1024];
    size_t n = resp_build_error(out, sizeof(out), msg);
    return sy_pipe_inject(&s->s2c, out, n);
}

int rs_s2c_at_boundary(redis_session_t *s)
{
    return resp_reply_at_boundary(&s->rp) && s->s2c.scanned == s->s2c.end &&
           (s->repl == NULL || rs_repl_at_boundary(s));
}

/* Close the session; with fmt, each owed reply (at least one) first gets
 * "-ERR switchyard: <message>". */
void rs_close(redis_session_t *s, const char *fmt, ...)
{
    if (s->state == RS_CLOSING || s->state == RS_CLOSED)
        return;
    int boundary = rs_s2c_at_boundary(s);
    rs_set_state(s, RS_CLOSING);
    rs_drop_servers(s, "client_closing");
    s->c2s.reading = 0;
    if (fmt != NULL) {
        char msg[900], line[1000], q[1100];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(line, sizeof(line), "ERR switchyard: %s", msg);
        sy_info("event=client_error conn=%llu route=%s pending=%llu message=%s", (unsigned long long)s->id,
                s->link.route ? s->link.route->conf->name : "-", (unsigned long long)s->pending,
                sy_logq(q, sizeof(q), line));
        if (s->link.route)
            SY_STAT_ADD(s->link.route->nerrors, 1);
        if (boundary) {
            s->errs_owed = s->pending ? s->pending : 1;
            rs_set_errmsg(s, "%s", line);
        }
        s->linger = 1;   /* the client may still be sending: let every error reach it */
    }
    if (s->linger && (s->client.fd < 0 || s->c2s.src_eof || SY_LOAD(sy_server.stopping)))
        s->linger = 0;
    s->linger_left = SY_LINGER_BYTES;
    if (!sy_pipe_pending(&s->s2c) && s->errs_owed == 0 && s->linger == 0) {
        rs_destroy(s);
        return;
    }
    rs_timer_start(s, rs_closing_timeout_cb, 5000);
    rs_closing_drive(s);
}

/* ---- relay --------------------------------------------------------------------- */

void rs_update_polls(redis_session_t *s)
{
    if (s->state != RS_RELAY)
        return;
    int ev = sy_pipe_src_events(&s->c2s);
    if (ev == 0 && !s->client_fin && !s->c2s.src_eof)
        ev = UV_DISCONNECT;   /* not reading it: still see it leave (rs_large_client_left) */
    rs_watch(s, &s->client, ev | sy_pipe_dst_events(&s->s2c), rs_client_cb);
    if (s->mux != NULL || s->state != RS_RELAY)
        return;   /* the shared upstream watches its own socket */
    rs_watch(s, &s->srv->conn, sy_pipe_src_events(&s->s2c) | sy_pipe_dst_events(&s->c2s), rs_server_cb);
}

void rs_upstream_lost(redis_session_t *s, int err)
{
    if (s->quitting) {
        rs_close(s, NULL);
        return;
    }
    const char *why = s->srv->conn.tls_err ? s->srv->conn.tls_err : err ? strerror(-err)
                                                                      : "server closed the connection";
    SY_STAT_ADD(s->link.route->err_lost, 1);
    if (rs_reconnect_begin(s, why))
        return;   /* reconnect_window: it waits for the upstream to come back */
    if (s->pending == 0 && s->held == LOCAL_NONE && s->c2s.end == s->c2s.start) {
        /* Nothing owed and nothing waiting to be sent: close as Redis itself would (CLIENT
         * KILL, a restart), without a word. An -ERR here would be read as the reply to the
         * client's next command (redis-py raises ResponseError instead of ConnectionError,
         * and its pub/sub reconnection breaks). */
        sy_info("event=upstream_lost conn=%llu route=%s upstream=%s reason=\"%s\" owed=0", (unsigned long long)s->id,
                s->link.route->conf->name, s->srv->link.target->hostport, why);
        rs_close(s, NULL);
        return;
    }
    rs_close(s, "route %s: connection to %s lost: %s", s->link.route->conf->name, s->srv->link.target->hostport, why);
}

void rs_relay_drive(redis_session_t *s, sy_conn_t *c, int events)
{
    int err;
    if ((events & UV_DISCONNECT) && c == &s->client && rs_large_client_left(s))
        return;
    sy_activity_mark(&s->activity);
    switch (sy_relay_step(s, &s->c2s, &s->s2c, c, events, &err)) {
    case SY_RELAY_OK:
        rs_update_polls(s);
        break;
    case SY_RELAY_CLOSING:
        break;
    case SY_RELAY_CLIENT_GONE:
        rs_close(s, NULL);
        break;
    case SY_RELAY_UPSTREAM_GONE:
        rs_upstream_lost(s, err);
        break;
    }
    if (s->mux != NULL && s->state == RS_RELAY) {
        rs_mux_poke(s);
        rs_mux_pin_try(s);
    }
}

const char *rs_upstream_name(const redis_session_t *s)
{
    const sy_server_link_t *l = s->srv != NULL ? &s->srv->link : s->mux != NULL ? rs_mux_link(s->mux) : NULL;
    return l != NULL && l->target != NULL ? l->target->hostport : "-";
}


/* ---- client side outside the relay ----------------------------------------------- */

void rs_failed_read(redis_session_t *s)
{
    int r = sy_pipe_pump(s, &s->c2s);
    if (s->state != RS_FAILED)
        return;
    if (r != SY_PUMP_OK) {
        rs_close(s, NULL);
        return;
    }
    rs_watch(s, &s->client, s->client.rd_wait, rs_client_cb);
}

void rs_client_cb(sy_conn_t *c, int status, int events)
{
    redis_session_t *s = c->data;
    s->refs++;   /* the session may close inside; free it only after we return */
    switch (s->state) {
    case RS_RELAY:
        rs_relay_drive(s, c, events);
        break;
    case RS_FAILED:
        rs_failed_read(s);
        break;
    case RS_CLOSING:
        rs_closing_drive(s);
        break;
    case RS_CONNECTING:
        rs_watch(s, &s->client, 0, rs_client_cb);   /* bytes wait until we are ready */
        break;
    case RS_MOVING:
        if (sy_pipe_flush(&s->s2c) < 0)
            rs_close(s, NULL);
        else
            rs_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), rs_client_cb);
        break;
    default:
        break;
    }
    rs_unref(s);
}

static void rs_describe(const sy_session_link_t *l, char cols[][128])
{
    const redis_session_t *s = (const redis_session_t *)l;
    snprintf(cols[0], 128, "%llu", (unsigned long long)s->id);
    snprintf(cols[1], 128, "redis");
    snprintf(cols[2], 128, "%s", s->link.route ? s->link.route->conf->name : "");
    snprintf(cols[3], 128, "%s", s->srv != NULL || s->mux != NULL ? rs_upstream_name(s) : "");
    const char *repl = rs_repl_phase(s);
    snprintf(cols[4], 128, "%s", repl != NULL && s->state == RS_RELAY ? "replica" : rs_names[s->state]);
    snprintf(cols[5], 128, "pending=%llu multi=%d watch=%d subs=%llu blocked=%d monitor=%d resp3=%d mux=%s%s%s",
             (unsigned long long)s->pending, s->in_multi, s->watching, (unsigned long long)s->sub_count,
             s->blocking, s->monitoring, s->resp3, s->mux ? "shared" : s->mux_route ? "pinned" : "off",
             repl != NULL ? " replica=" : "", repl != NULL ? repl : "");
}

/* client_idle_timeout, as Redis's own `timeout`: a client idle that long is closed without
 * a word, unless it is subscribed, blocked or monitoring (Redis exempts those too).
 * client_stall_timeout: a command half received and nothing more while we could read gets
 * -ERR and the close. */
static void rs_tick(sy_session_link_t *l, uint64_t now)
{
    redis_session_t *s = (redis_session_t *)l;
    uint64_t idle = (uint64_t)sy_conf()->client_idle_timeout * 1000;
    uint64_t active_at = sy_activity_at(&s->activity, now);
    if (s->state == RS_RELAY && sy_client_stalled(&s->c2s, !resp_req_at_boundary(&s->rq), active_at, now)) {
        sy_info("event=client_stalled conn=%llu route=%s idle_ms=%llu", (unsigned long long)s->id,
                s->link.route ? s->link.route->conf->name : "-", (unsigned long long)(now - active_at));
        rs_close(s, "client stalled mid-command for %d s", sy_conf()->client_stall_timeout);
        return;
    }
    if (s->mux != NULL && s->mux_stalled_at != 0 && now - s->mux_stalled_at >= RS_MUX_STALL_MS) {
        sy_info("event=client_stalled conn=%llu route=%s stalled_ms=%llu", (unsigned long long)s->id,
                s->link.route->conf->name, (unsigned long long)(now - s->mux_stalled_at));
        rs_close(s, NULL);   /* its replies unread: the shared upstream goes on without it */
        return;
    }
    if (idle == 0 || s->state != RS_RELAY || s->blocking || s->sub_count > 0 || s->monitoring || s->repl != NULL ||
        now - active_at < idle)
        return;
    sy_info("event=idle_timeout conn=%llu route=%s idle_ms=%llu", (unsigned long long)s->id,
            s->link.route ? s->link.route->conf->name : "-", (unsigned long long)(now - active_at));
    rs_close(s, NULL);
}

static void redis_session_start(sy_listener_t *l, int fd, int trusted, uv_loop_t *loop)
{
    redis_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return;
    }
    s->id = SY_STAT_ADD(sy_server.next_conn_id, 1) + 1;
    s->refs = 1;
    s->link.loop = loop;
    s->listener = l;
    s->link.listener = l;
    s->state = RS_CONNECTING;
    s->client_db = -1;
    s->link.describe = rs_describe;
    s->link.quiet = rs_link_quiet;
    s->link.prepare = rs_link_prepare;
    s->link.unprepare = rs_link_unprepare;
    s->link.move = rs_link_move;
    s->link.kick = rs_link_kick;
    s->link.release = rs_link_release;
    s->link.tick = rs_tick;
    s->activity.at = uv_now(loop);
    sy_session_link(&s->link);
    SY_STAT_ADD(sy_server.nclients, 1);
    sy_conn_init_accepted(&s->client, s->link.loop, fd, s);
    sy_conn_init(&s->noserver, s->link.loop, -1, s);
    sy_pipe_setup(&s->c2s, &s->client, &s->noserver, rs_c2s_scan, 0);
    sy_pipe_setup(&s->s2c, &s->noserver, &s->client, rs_s2c_scan, 0);
    resp_req_init(&s->rq, sy_conf()->redis_max_bulk);
    resp_reply_init(&s->rp, 0);   /* redis_max_bulk limits what clients send, not replies */

    s->link.route = sy_route_for_listener(l);
    if (s->link.route == NULL) {   /* validation prevents this; close rather than guess */
        rs_set_state(s, RS_CLOSING);
        rs_destroy(s);
        return;
    }
    SY_STAT_ADD(s->link.route->clients, 1);
    if (s->link.route->conf->multiplex ? rs_mux_route(s) != 0 : rs_server_open(s) == NULL) {
        rs_set_state(s, RS_CLOSING);
        rs_destroy(s);
        return;
    }
    s->password = s->link.route->conf->client_password ? s->link.route->conf->client_password : l->conf->auth_password;
    s->authed = s->password == NULL;
    if (!trusted && s->password == NULL) {
        rs_set_state(s, RS_FAILED);
        rs_set_errmsg(s, "connections from non-loopback addresses need a password");
        s->c2s.reading = 1;
        rs_failed_read(s);
        return;
    }
    rs_watch(s, &s->client, UV_READABLE, rs_client_cb);
    if (s->state != RS_CONNECTING)
        return;   /* the watch failed: the client was told and the session is closing */
    if (s->mux != NULL) {
        rs_mux_start(s);
        return;
    }
    sy_debug("event=connect conn=%llu route=%s target=%s", (unsigned long long)s->id, s->link.route->conf->name,
             s->srv->link.which == CONF_EXTERNAL ? "external" : "builtin");
    rs_server_connect(s->srv);
}

const sy_proto_t redis_proto = { "redis", redis_session_start };

