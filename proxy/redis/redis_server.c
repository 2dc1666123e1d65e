/*
 * redis_server.c - the upstream connection of a Redis session: names resolved off the loop,
 * a non-blocking connect per address, TLS, and the AUTH/SELECT setup before the relay
 * starts.
 */
#include "proxy/redis/redis_internal.h"

static void rs_connect_next(redis_session_t *s);

/* ---- upstream connect ---------------------------------------------------------------- */

void rs_connect_failed(redis_session_t *s, const char *cause)
{
    if (s->state != RS_CONNECTING)
        return;
    snprintf(s->errmsg, sizeof(s->errmsg), "route %s: cannot connect to %s: %s", s->link.route->conf->name,
             s->slink.target->hostport, cause);
    char q[700];
    sy_info("event=upstream_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->link.route->conf->name,
            sy_logq(q, sizeof(q), s->errmsg));
    SY_STAT_ADD(s->link.route->nerrors, 1);
    SY_STAT_ADD(s->link.route->err_connect, 1);
    /* Whatever the server said during setup is not the client's to see. */
    s->s2c.start = s->s2c.fwd = s->s2c.scanned = s->s2c.end = 0;
    resp_reply_init(&s->rp, 0);
    if (s->server.fd >= 0)
        SY_STAT_SUB(s->link.route->upstreams, 1);
    sy_conn_close(&s->server);
    if (s->timer_on)
        uv_timer_stop(&s->timer);
    rs_set_state(s, RS_FAILED);
    rs_timer_start(s, rs_closing_timeout_cb, 10000);   /* a client that never sends is not kept */
    s->c2s.reading = 1;
    /* A command may already be buffered or waiting in the socket. */
    if (rs_c2s_scan(s, &s->c2s) != 0)
        return;
    rs_failed_read(s);
}

void rs_connect_timeout_cb(uv_timer_t *t)
{
    redis_session_t *s = t->data;
    if (s->state == RS_CONNECTING)
        rs_connect_failed(s, "timeout expired");
}

static void rs_relay_start(redis_session_t *s)
{
    if (s->timer_on)
        uv_timer_stop(&s->timer);
    rs_set_state(s, RS_RELAY);
    s->c2s.reading = 1;
    s->s2c.reading = 1;
    sy_info("event=session_ready conn=%llu route=%s target=%s upstream=%s tls=%s", (unsigned long long)s->id,
            s->link.route->conf->name, s->slink.which == CONF_EXTERNAL ? "external" : "builtin", s->slink.target->hostport,
            s->server.ssl ? "on" : "off");
    rs_relay_drive(s, &s->server, 0);
    if (s->state == RS_RELAY)
        rs_relay_drive(s, &s->client, 0);
}

/* Swallow the replies to our AUTH / SELECT. */
static void rs_setup_read(redis_session_t *s)
{
    sy_pipe_t *p = &s->s2c;
    for (;;) {
        while (p->scanned < p->end && s->setup_left > 0) {
            int done = 0;
            ssize_t n = resp_reply_scan(&s->rp, p->buf + p->scanned, p->end - p->scanned, &done);
            if (n < 0) {
                rs_connect_failed(s, s->rp.err);
                return;
            }
            p->scanned += (uint32_t)n;
            if (!done)
                continue;
            if (s->rp.type == '-' || s->rp.type == '!') {
                char cause[300];
                snprintf(cause, sizeof(cause), "%s", s->rp.first);
                rs_connect_failed(s, cause);
                return;
            }
            s->setup_left--;
        }
        /* Setup replies are not the client's. */
        memmove(p->buf, p->buf + p->scanned, p->end - p->scanned);
        p->end -= p->scanned;
        p->start = p->fwd = p->scanned = 0;
        if (s->setup_left == 0) {
            rs_relay_start(s);
            return;
        }
        ssize_t n = s->server.tp->read(&s->server, p->buf + p->end, p->cap - p->end);
        if (n == SY_EAGAIN)
            break;
        if (n <= 0) {
            rs_connect_failed(s, s->server.tls_err ? s->server.tls_err : n == 0 ? "server closed the connection"
                                                                            : strerror((int)-n));
            return;
        }
        p->end += (uint32_t)n;
    }
    rs_watch(s, &s->server, s->server.rd_wait, rs_server_cb);
}

static void rs_send_setup(redis_session_t *s)
{
    const sy_endpoint_t *ep = &s->slink.target->redis;
    uint8_t out[1200];
    size_t o = 0;
    char dbs[16];
    resp_arg_t a[3];
    s->setup_left = 0;
    if (ep->has_password) {
        int n = 0;
        a[n++] = (resp_arg_t){ "AUTH", 4 };
        if (ep->has_user)
            a[n++] = (resp_arg_t){ ep->user, strlen(ep->user) };
        a[n++] = (resp_arg_t){ ep->password, strlen(ep->password) };
        o += resp_cmd_build(out + o, sizeof(out) - o, n, a);
        s->setup_left++;
    }
    if (ep->db != 0) {
        snprintf(dbs, sizeof(dbs), "%d", ep->db);
        a[0] = (resp_arg_t){ "SELECT", 6 };
        a[1] = (resp_arg_t){ dbs, strlen(dbs) };
        o += resp_cmd_build(out + o, sizeof(out) - o, 2, a);
        s->setup_left++;
    }
    if (o > 0) {
        ssize_t n = s->server.tp->write(&s->server, out, o);
        memset(out, 0, sizeof(out));
        if (n != (ssize_t)o) {
            rs_connect_failed(s, "cannot send AUTH/SELECT");
            return;
        }
    }
    rs_setup_read(s);
}

static void rs_tls_step(redis_session_t *s)
{
    int r = sy_tls_handshake(&s->server);
    if (r < 0) {
        char cause[300];
        snprintf(cause, sizeof(cause), "TLS handshake failed: %s", s->server.tls_err ? s->server.tls_err : "");
        rs_connect_failed(s, cause);
        return;
    }
    if (r == 0) {
        rs_watch(s, &s->server, s->server.rd_wait, rs_server_cb);
        return;
    }
    s->server.rd_wait = UV_READABLE;
    s->server.wr_wait = UV_WRITABLE;
    s->setup_left = -1;
    rs_send_setup(s);
}

/* The route's client context for this target on this worker, built by the first session
 * of the worker that needs it. One per worker: handshakes on two threads never share an
 * SSL_CTX's certificate store and session cache, so only this worker touches it. */
static SSL_CTX *rs_tls_ctx(redis_session_t *s, char *err, size_t errlen)
{
    int k = s->slink.which == CONF_EXTERNAL;
    int w = sy_loop_index(s->link.loop);
    SSL_CTX **slot = &s->link.route->tls_ctx[w < SY_MAX_WORKERS ? w : 0][k];
    if (*slot == NULL) {
        const conf_target_t *t = s->slink.target;
        *slot = sy_tls_client_ctx(t->tls_ca_file, t->tls_cert, t->tls_key, t->tls_insecure_skip_verify, err, errlen);
    }
    return *slot;
}

static void rs_connected(redis_session_t *s)
{
    int one = 1;
    setsockopt(s->server.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (s->slink.target->redis.tls) {
        char err[300];
        SSL_CTX *ctx = rs_tls_ctx(s, err, sizeof(err));
        if (ctx == NULL || sy_tls_attach(&s->server, ctx, 0, s->slink.target->redis.host) != 0) {
            rs_connect_failed(s, ctx == NULL ? err : "cannot start TLS");
            return;
        }
        s->setup_left = -2;   /* handshaking */
        rs_tls_step(s);
        return;
    }
    rs_send_setup(s);
}

static void rs_server_connecting(redis_session_t *s, sy_conn_t *c);

void rs_server_cb(sy_conn_t *c, int status, int events)
{
    redis_session_t *s = c->data;
    s->refs++;
    if (s->state == RS_RELAY)
        rs_relay_drive(s, c, events);
    else if (s->state == RS_CONNECTING)
        rs_server_connecting(s, c);
    rs_unref(s);
}

static void rs_server_connecting(redis_session_t *s, sy_conn_t *c)
{
    if (s->setup_left == -3) {
        /* non-blocking connect finished */
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            snprintf(s->errmsg, sizeof(s->errmsg), "%s", strerror(err));
            sy_conn_close(&s->server);
            SY_STAT_SUB(s->link.route->upstreams, 1);
            rs_connect_next(s);
            return;
        }
        rs_connected(s);
    } else if (s->setup_left == -2) {
        rs_tls_step(s);
    } else {
        rs_setup_read(s);
    }
}

static void rs_connect_next(redis_session_t *s)
{
    while (s->next_addr != NULL) {
        struct addrinfo *a = s->next_addr;
        s->next_addr = a->ai_next;
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(s->errmsg, sizeof(s->errmsg), "%s", strerror(errno));
            continue;
        }
        ((struct sockaddr_in *)a->ai_addr)->sin_port = htons(s->slink.target->redis.port);
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno != EINPROGRESS) {
            snprintf(s->errmsg, sizeof(s->errmsg), "%s", strerror(errno));
            close(fd);
            continue;
        }
        sy_conn_init(&s->server, s->link.loop, fd, s);
        SY_STAT_ADD(s->link.route->upstreams, 1);
        s->setup_left = -3;
        if (sy_conn_watch(&s->server, UV_WRITABLE, rs_server_cb) != 0) {
            rs_connect_failed(s, "cannot watch the socket");
            return;
        }
        return;
    }
    char cause[600];
    snprintf(cause, sizeof(cause), "%s", s->errmsg[0] ? s->errmsg : "no address");
    s->errmsg[0] = '\0';
    rs_connect_failed(s, cause);
}

void rs_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    redis_session_t *s = req->data;
    if (s->state != RS_CONNECTING) {
        uv_freeaddrinfo(res);
        rs_unref(s);
        return;
    }
    if (status != 0) {
        char cause[300];
        snprintf(cause, sizeof(cause), "cannot resolve %s: %s", s->slink.target->redis.host, uv_strerror(status));
        rs_connect_failed(s, cause);
    } else {
        s->addrs = res;
        s->next_addr = res;
        rs_connect_next(s);
    }
    rs_unref(s);
}

