/*
 * redis_server.c - a Redis server connection (rs_server_t): names resolved off the loop, a
 * non-blocking connect per address, TLS, the AUTH/SELECT setup before the relay starts, and
 * its one close path.
 *
 *   rs_server_open     the first server of a client: routed with it (sy_session_route),
 *                      attached, then rs_server_connect dials it on the loop
 *   rs_server_new      one more, for a move (dialed on the thread pool, rs_server_take
 *                      hands it the socket): on the CONNECTING list, not attached
 *   rs_server_close    off the lists, detached, socket closed (or its close(2) deferred),
 *                      freed with its last reference; logged with the reason
 *
 * While connecting, the setup replies are read through the client's s2c pipe and reply
 * scanner (the client is waiting, and nothing of it has been sent yet); what the server
 * says there is never the client's to see.
 */
#include "proxy/redis/redis_internal.h"

static void rs_connect_next(rs_server_t *sv);

static redis_session_t *rs_client(const rs_server_t *sv)
{
    return (redis_session_t *)sv->link.client;
}

/* A callback of sv's runs: neither sv nor its client may be freed under it. */
static redis_session_t *rs_enter(rs_server_t *sv)
{
    redis_session_t *s = rs_client(sv);
    sv->refs++;
    if (s != NULL)
        s->refs++;
    return s;
}

static void rs_leave(rs_server_t *sv, redis_session_t *s)
{
    if (s != NULL)
        rs_unref(s);
    rs_server_unref(sv);
}

/* ---- the object ---------------------------------------------------------------------- */

static void rs_server_describe(const sy_server_link_t *l, char cols[][128])
{
    const rs_server_t *sv = (const rs_server_t *)l;
    const redis_session_t *s = (const redis_session_t *)l->client;
    if (s != NULL)
        snprintf(cols[0], 128, "%llu", (unsigned long long)s->id);
    snprintf(cols[1], 128, "redis");
    snprintf(cols[2], 128, "%s", l->target ? l->target->hostport : "");
    /* The one a client relays to shows where the client stands; any other its own state. */
    snprintf(cols[3], 128, "%s", s != NULL && s->srv == sv ? rs_names[s->state] : sy_server_state_names[l->state]);
}

static rs_server_t *rs_server_alloc(redis_session_t *s)
{
    rs_server_t *sv = calloc(1, sizeof(*sv));
    if (sv == NULL)
        return NULL;
    sv->id = s->id;
    sv->refs = 1;
    sy_conn_init(&sv->conn, s->link.loop, -1, sv);
    return sv;
}

rs_server_t *rs_server_open(redis_session_t *s)
{
    rs_server_t *sv = rs_server_alloc(s);
    if (sv == NULL)
        return NULL;
    sy_session_route(&s->link, s->link.route, &sv->link, rs_server_describe);
    rs_attach(s, sv);
    return sv;
}

rs_server_t *rs_server_new(redis_session_t *s, conf_which_t which, const conf_target_t *t)
{
    rs_server_t *sv = rs_server_alloc(s);
    if (sv == NULL)
        return NULL;
    /* whose it is; s->srv stays until the move attaches it */
    sy_server_open(&sv->link, &s->link, which, t, rs_server_describe);
    return sv;
}

void rs_server_unref(rs_server_t *sv)
{
    if (--sv->refs > 0)
        return;
    if (sv->addrs)
        uv_freeaddrinfo(sv->addrs);
    free(sv);
}

static void rs_server_timer_closed(uv_handle_t *h)
{
    rs_server_unref(h->data);
}

/* The connect timeout is over (connected, failed or closed): its handle goes. */
static void rs_server_timer_end(rs_server_t *sv)
{
    if (!sv->timer_on)
        return;
    sv->timer_on = 0;
    uv_timer_stop(&sv->timer);
    uv_close((uv_handle_t *)&sv->timer, rs_server_timer_closed);
}

/* Close the socket now; the route's gauge forgets it. */
static void rs_server_drop_socket(rs_server_t *sv, int later)
{
    if (sv->counted)
        SY_STAT_SUB(sv->link.route->upstreams, 1);
    sv->counted = 0;
    if (later)
        sy_conn_close_later(&sv->conn);
    else
        sy_conn_close(&sv->conn);
}

void rs_server_close(rs_server_t *sv, const char *reason, int later)
{
    if (sv->closed)
        return;
    sv->closed = 1;
    sy_debug("event=server_close conn=%llu route=%s upstream=%s reason=%s", (unsigned long long)sv->id,
             sv->link.route ? sv->link.route->conf->name : "-", sv->link.target ? sv->link.target->hostport : "-",
             reason);
    redis_session_t *s = rs_client(sv);
    if (s != NULL && s->srv == sv)
        rs_attach(s, NULL);
    if (s != NULL && s->pre == sv)
        s->pre = NULL;
    sv->link.client = NULL;
    sy_server_unlink(&sv->link);
    rs_server_drop_socket(sv, later);
    rs_server_timer_end(sv);
    rs_server_unref(sv);
}

/* Give sv a socket dialed (blocking) on the thread pool; poll, when made ahead, is its
 * handle and has made it non-blocking already. */
int rs_server_take(rs_server_t *sv, int fd, SSL *ssl, uv_poll_t *poll, char *err, size_t errlen)
{
    return rs_conn_take(&sv->conn, sv->link.loop, sv, fd, ssl, poll, err, errlen);
}

int rs_conn_take(sy_conn_t *c, uv_loop_t *loop, void *data, int fd, SSL *ssl, uv_poll_t *poll, char *err,
                 size_t errlen)
{
    int one = 1;
    /* A blocking socket would stall the whole loop at its first read. */
    if (poll == NULL && ioctl(fd, FIONBIO, &one) != 0) {
        snprintf(err, errlen, "cannot make the socket non-blocking: %s", strerror(errno));
        return -1;
    }
    sy_conn_init(c, loop, fd, data);
    sy_sock_keepalive(fd);
    if (poll != NULL)
        sy_conn_adopt_poll(c, poll);
    if (ssl != NULL) {
        c->ssl = ssl;
        c->ssl_owned = 1;
        c->tp = &sy_tls_transport;
        SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
    return 0;
}

/* The reverse, for a replay on the thread pool: the socket is the caller's, blocking. */
void rs_server_lend(rs_server_t *sv, int *fd, SSL **ssl)
{
    int zero = 0;
    sy_conn_unwatch(&sv->conn);
    *fd = sv->conn.fd;
    *ssl = sv->conn.ssl;
    if (*fd >= 0)
        ioctl(*fd, FIONBIO, &zero);
    sv->conn.fd = -1;
    sv->conn.ssl = NULL;
    sv->conn.tp = &sy_plain_transport;
}

/* ---- connect ------------------------------------------------------------------------- */

/* sv, its client's server, cannot connect: the client answers its first command with why.
 * ours: the cause is this process's (memory, a poll handle), not the target's; waiting out
 * reconnect_window for it would leave the client with no answer, so it gets one at once. */
static void rs_connect_end(rs_server_t *sv, const char *cause, int ours)
{
    redis_session_t *s = rs_client(sv);
    if (sv->closed || s == NULL || s->srv != sv || s->state != RS_CONNECTING)
        return;
    if (!ours && rs_reconnect_connect_failed(s, sv, cause))
        return;   /* reconnect_window: it waits for the target */
    rs_set_errmsg(s, "route %s: cannot connect to %s: %s", s->link.route->conf->name, sv->link.target->hostport,
                  cause);
    char q[700];
    sy_info("event=upstream_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->link.route->conf->name,
            sy_logq(q, sizeof(q), rs_errmsg(s)));
    SY_STAT_ADD(s->link.route->nerrors, 1);
    SY_STAT_ADD(s->link.route->err_connect, 1);
    /* Whatever the server said during setup is not the client's to see. */
    s->s2c.start = s->s2c.fwd = s->s2c.scanned = s->s2c.end = 0;
    resp_reply_init(&s->rp, 0);
    rs_server_close(sv, "connect_failed", 0);
    rs_enter_failed(s);
}

static void rs_connect_failed(rs_server_t *sv, const char *cause)
{
    rs_connect_end(sv, cause, 0);
}

/* FAILED: the client's next command gets s->errmsg, then the close (rs_c2s_scan); a client
 * that never sends is not kept. One place for a connect that failed and for a reconnect
 * that gave up. */
void rs_enter_failed(redis_session_t *s)
{
    rs_set_state(s, RS_FAILED);
    rs_timer_start(s, rs_closing_timeout_cb, 10000);
    s->c2s.reading = 1;
    /* A command may already be buffered or waiting in the socket. */
    if (rs_c2s_scan(s, &s->c2s) != 0)
        return;
    rs_failed_read(s);
}

static void rs_connect_timeout_cb(uv_timer_t *t)
{
    rs_server_t *sv = t->data;
    redis_session_t *s = rs_enter(sv);
    rs_connect_failed(sv, "timeout expired");
    rs_leave(sv, s);
}

static void rs_relay_start(rs_server_t *sv)
{
    redis_session_t *s = rs_client(sv);
    rs_server_timer_end(sv);
    rs_set_state(s, RS_RELAY);
    s->c2s.reading = 1;
    s->s2c.reading = 1;
    sy_info("event=session_ready conn=%llu route=%s target=%s upstream=%s tls=%s", (unsigned long long)s->id,
            s->link.route->conf->name, sv->link.which == CONF_EXTERNAL ? "external" : "builtin",
            sv->link.target->hostport, sv->conn.ssl ? "on" : "off");
    if (s->c2s.scanned < s->c2s.end) {
        /* Pinned: the command that pinned it (and what followed) waits in c2s. */
        int r = sy_pipe_resume(s, &s->c2s);
        if (r == SY_PUMP_DST_ERR)
            rs_upstream_lost(s, s->c2s.err);
        if (r != SY_PUMP_OK || s->state != RS_RELAY)
            return;
    }
    rs_relay_drive(s, &sv->conn, 0);
    if (s->state == RS_RELAY)
        rs_relay_drive(s, &s->client, 0);
}

/* Swallow the replies to our AUTH / SELECT. */
static void rs_setup_read(rs_server_t *sv)
{
    redis_session_t *s = rs_client(sv);
    sy_pipe_t *p = &s->s2c;
    if (sy_pipe_ensure(p) != 0) {
        rs_connect_end(sv, "out of memory", 1);
        return;
    }
    for (;;) {
        while (p->scanned < p->end && sv->setup_left > 0) {
            int done = 0;
            ssize_t n = resp_reply_scan(&s->rp, p->buf + p->scanned, p->end - p->scanned, &done);
            if (n < 0) {
                rs_connect_failed(sv, s->rp.err);
                return;
            }
            p->scanned += (uint32_t)n;
            if (!done)
                continue;
            if (s->rp.type == '-' || s->rp.type == '!') {
                char cause[300];
                snprintf(cause, sizeof(cause), "%s", s->rp.first);
                rs_connect_failed(sv, cause);
                return;
            }
            sv->setup_left--;
        }
        /* Setup replies are not the client's. */
        memmove(p->buf, p->buf + p->scanned, p->end - p->scanned);
        p->end -= p->scanned;
        p->start = p->fwd = p->scanned = 0;
        if (sv->setup_left == 0) {
            rs_relay_start(sv);
            return;
        }
        ssize_t n = sv->conn.tp->read(&sv->conn, p->buf + p->end, p->cap - p->end);
        if (n == SY_EAGAIN)
            break;
        if (n <= 0) {
            rs_connect_failed(sv, sv->conn.tls_err ? sv->conn.tls_err : n == 0 ? "server closed the connection"
                                                                             : strerror((int)-n));
            return;
        }
        p->end += (uint32_t)n;
    }
    rs_watch(s, &sv->conn, sv->conn.rd_wait, rs_server_cb);
}

size_t rs_setup_cmds(const sy_endpoint_t *ep, uint8_t *out, size_t cap, int *replies)
{
    size_t o = 0;
    char dbs[16];
    resp_arg_t a[3];
    *replies = 0;
    if (ep->has_password) {
        int n = 0;
        a[n++] = (resp_arg_t){ "AUTH", 4 };
        if (ep->has_user)
            a[n++] = (resp_arg_t){ ep->user, strlen(ep->user) };
        a[n++] = (resp_arg_t){ ep->password, strlen(ep->password) };
        o += resp_cmd_build(out + o, cap - o, n, a);
        (*replies)++;
    }
    if (ep->db != 0) {
        snprintf(dbs, sizeof(dbs), "%d", ep->db);
        a[0] = (resp_arg_t){ "SELECT", 6 };
        a[1] = (resp_arg_t){ dbs, strlen(dbs) };
        o += resp_cmd_build(out + o, cap - o, 2, a);
        (*replies)++;
    }
    return o;
}

static void rs_send_setup(rs_server_t *sv)
{
    uint8_t out[1200];
    size_t o = rs_setup_cmds(&sv->link.target->redis, out, sizeof(out), &sv->setup_left);
    if (o > 0) {
        ssize_t n = sv->conn.tp->write(&sv->conn, out, o);
        memset(out, 0, sizeof(out));
        if (n != (ssize_t)o) {
            rs_connect_failed(sv, "cannot send AUTH/SELECT");
            return;
        }
    }
    rs_setup_read(sv);
}

static void rs_tls_step(rs_server_t *sv)
{
    int r = sy_tls_handshake(&sv->conn);
    if (r < 0) {
        char cause[300];
        snprintf(cause, sizeof(cause), "TLS handshake failed: %s", sv->conn.tls_err ? sv->conn.tls_err : "");
        rs_connect_failed(sv, cause);
        return;
    }
    if (r == 0) {
        rs_watch(rs_client(sv), &sv->conn, sv->conn.rd_wait, rs_server_cb);
        return;
    }
    sv->conn.rd_wait = UV_READABLE;
    sv->conn.wr_wait = UV_WRITABLE;
    sv->setup_left = -1;
    rs_send_setup(sv);
}

/* The route's client context for this target on this worker, built by the first server
 * of the worker that needs it. One per worker: handshakes on two threads never share an
 * SSL_CTX's certificate store and session cache, so only this worker touches it. */
static SSL_CTX *rs_tls_ctx(rs_server_t *sv, char *err, size_t errlen)
{
    int k = sv->link.which == CONF_EXTERNAL;
    int w = sy_loop_index(sv->link.loop);
    SSL_CTX **slot = &sv->link.route->tls_ctx[w < SY_MAX_WORKERS ? w : 0][k];
    if (*slot == NULL) {
        const conf_target_t *t = sv->link.target;
        *slot = sy_tls_client_ctx(t->tls_ca_file, t->tls_cert, t->tls_key, t->tls_insecure_skip_verify, err, errlen);
    }
    return *slot;
}

static void rs_connected(rs_server_t *sv)
{
    int one = 1;
    setsockopt(sv->conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sy_sock_keepalive(sv->conn.fd);
    if (sv->link.target->redis.tls) {
        char err[300];
        SSL_CTX *ctx = rs_tls_ctx(sv, err, sizeof(err));
        if (ctx == NULL || sy_tls_attach(&sv->conn, ctx, 0, sv->link.target->redis.host) != 0) {
            rs_connect_failed(sv, ctx == NULL ? err : "cannot start TLS");
            return;
        }
        sv->setup_left = -2;   /* handshaking */
        rs_tls_step(sv);
        return;
    }
    rs_send_setup(sv);
}

static void rs_server_connecting(rs_server_t *sv)
{
    if (sv->setup_left == -3) {
        /* non-blocking connect finished */
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(sv->conn.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            snprintf(sv->errmsg, sizeof(sv->errmsg), "%s", strerror(err));
            rs_server_drop_socket(sv, 0);
            rs_connect_next(sv);
            return;
        }
        rs_connected(sv);
    } else if (sv->setup_left == -2) {
        rs_tls_step(sv);
    } else {
        rs_setup_read(sv);
    }
}

void rs_server_cb(sy_conn_t *c, int status, int events)
{
    rs_server_t *sv = c->data;
    redis_session_t *s = rs_enter(sv);
    if (s != NULL && !sv->closed && s->srv == sv) {
        if (s->state == RS_RELAY)
            rs_relay_drive(s, c, events);
        else if (s->state == RS_CONNECTING)
            rs_server_connecting(sv);
    }
    rs_leave(sv, s);
}

static void rs_connect_next(rs_server_t *sv)
{
    char cause[600];
    while (sv->next_addr != NULL) {
        struct addrinfo *a = sv->next_addr;
        sv->next_addr = a->ai_next;
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(sv->errmsg, sizeof(sv->errmsg), "%s", strerror(errno));
            continue;
        }
        ((struct sockaddr_in *)a->ai_addr)->sin_port = htons(sv->link.target->redis.port);
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno != EINPROGRESS) {
            snprintf(sv->errmsg, sizeof(sv->errmsg), "%s", strerror(errno));
            close(fd);
            continue;
        }
        sy_conn_init(&sv->conn, sv->link.loop, fd, sv);
        SY_STAT_ADD(sv->link.route->upstreams, 1);
        sv->counted = 1;
        sv->setup_left = -3;
        int rc = sy_conn_watch(&sv->conn, UV_WRITABLE, rs_server_cb);
        if (rc != 0) {
            snprintf(cause, sizeof(cause), "cannot watch the socket: %s", uv_strerror(rc));
            rs_connect_end(sv, cause, 1);
        }
        return;
    }
    snprintf(cause, sizeof(cause), "%s", sv->errmsg[0] ? sv->errmsg : "no address");
    sv->errmsg[0] = '\0';
    rs_connect_failed(sv, cause);
}

static void rs_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rs_server_t *sv = req->data;
    redis_session_t *s = rs_enter(sv);
    if (sv->closed || s == NULL || s->state != RS_CONNECTING) {
        uv_freeaddrinfo(res);
    } else if (status != 0) {
        char cause[300];
        snprintf(cause, sizeof(cause), "cannot resolve %s: %s", sv->link.target->redis.host, uv_strerror(status));
        rs_connect_failed(sv, cause);
    } else {
        sv->addrs = res;
        sv->next_addr = res;
        rs_connect_next(sv);
    }
    sv->refs--;            /* the resolve's reference: the callback's own still holds sv */
    rs_leave(sv, s);
}

/* Dial sv, its client's server, on the loop: resolve (off the loop unless numeric),
 * connect, TLS, setup; the relay starts when it is done, FAILED when it cannot be. */
void rs_server_connect(rs_server_t *sv)
{
    uv_timer_init(sv->link.loop, &sv->timer);
    sv->timer.data = sv;
    sv->refs++;
    sv->timer_on = 1;
    uv_timer_start(&sv->timer, rs_connect_timeout_cb, (uint64_t)sy_conf()->connect_timeout * 1000, 0);
    const char *host = sv->link.target->redis.host;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    unsigned char tmp[16];
    if (inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1)
        hints.ai_flags = AI_NUMERICHOST;
    sv->gai.data = sv;
    sv->refs++;
    if (hints.ai_flags & AI_NUMERICHOST) {
        struct addrinfo *res = NULL;
        int r = getaddrinfo(host, NULL, &hints, &res);   /* numeric: no lookup, no blocking */
        rs_gai_cb(&sv->gai, r == 0 ? 0 : UV_EINVAL, r == 0 ? res : NULL);
        return;
    }
    if (uv_getaddrinfo(sv->link.loop, &sv->gai, rs_gai_cb, host, NULL, &hints) != 0) {
        sv->refs--;
        rs_connect_failed(sv, "cannot resolve");
    }
}
