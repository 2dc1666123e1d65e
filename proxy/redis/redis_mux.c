/*
 * redis_mux.c - multiplexing: the clients of a route on one worker whose commands carry no
 * connection state share one upstream connection (rs_mux_t), as twemproxy's do, but
 * transparently: a client is pinned to an upstream of its own before it sends anything
 * stateful (resp_cmd_pins says what).
 *
 *   client c2s ──whole commands──▶ muxconn (rs_mux_transport.write) ──▶ out queue
 *        ▲                            pushes (client, replies) on the FIFO      │ one write
 *        │                                                                      ▼ per loop turn
 *   client s2c ◀── bytes of the FIFO head's replies ◀── reply scan ◀── in buffer ◀── upstream
 *
 * The write side: a client's c2s pipe writes to muxconn, whose transport appends the bytes
 * (always whole commands: in mux mode the request scan never lets a partial command
 * through) to the shared queue and records on the FIFO how many replies they owe. An idle
 * handle writes the queue once per loop turn, so commands of clients that were read in the
 * same turn go out in one write. A full queue answers EAGAIN; the client waits on the
 * mux's waiter list and is flushed when the queue drains.
 *
 * The read side: replies are framed with the mux's own reply scanner and handed, in order,
 * to the client at the FIFO head: its bytes land in that client's s2c pipe, whose own scan
 * does the client's bookkeeping (pending, effects) as for a dedicated upstream. A client
 * whose s2c is full stalls the mux until it drains. A client that left is NULL in its
 * entries: its replies are read and dropped.
 *
 * Pinning (rs_mux_pin): the command that pins stays at c2s.fwd, unscanned (the request
 * scanner restarts there), the client stops reading, and once every reply of its own from
 * the shared upstream has reached it, it opens a server of its own (rs_server_new, the
 * usual connect and AUTH/SELECT setup) and the command goes there. A pinned client stays
 * pinned.
 *
 * The shared upstream is dialed on the thread pool (sy_redis_dial: connect, TLS, AUTH,
 * SELECT), so nothing of the setup passes through a client. When it dies, every client
 * with replies in flight gets one -ERR per command in flight (a client in the middle of a
 * reply is closed: its stream cannot be mended), and the next command dials again. With
 * reconnect_window (redis_reconnect.c) it dials again at once, and while dials fail it
 * retries with back-off (its timer, rc_on): commands queue meanwhile, and only when the
 * window from the loss has run out do its clients get the error and the close. It
 * closes when its last client has left and its last reply is in.
 *
 * Switchover: the clients of a mux hold nothing on it, so a move is a detach and an attach
 * to the active target's mux, on the loop.
 */
#include "proxy/redis/redis_internal.h"

#define MUX_OUT_CAP (256 * 1024)   /* the queue; a client's c2s write is at most SY_PIPE_BUF */
#define MUX_IN_CAP  (64 * 1024)

typedef enum { MUX_DOWN = 0, MUX_DIALING, MUX_UP } mux_state_t;

typedef struct mux_entry_s {
    redis_session_t *s;            /* NULL: the client left; its replies are dropped */
    uint64_t         n;            /* replies still owed to it */
} mux_entry_t;

struct rs_mux_s {
    sy_server_link_t link;         /* first: the route's server lists, SHOW SERVERS */
    int              refs;         /* 1 while open, + a dial job, + the idle handle's close, + callbacks */
    int              closed;
    mux_state_t      st;
    int              counted;      /* in the route's upstreams gauge */
    int              slot;         /* index in this worker's table */
    sy_conn_t        conn;
    uv_idle_t        idle;         /* the once-a-turn service: write the queue, deliver */
    int              idle_on;
    uint32_t         users;        /* clients with mux == this */
    uint8_t         *out;          /* the queue: [ostart..oend) to write */
    uint32_t         ostart, oend;
    uint8_t         *in;           /* [istart..iscan) scanned, for the FIFO head; [iscan..iend) new */
    uint32_t         istart, iscan, iend;
    uint64_t         done_n;       /* replies scanned whole in [istart..iscan) */
    resp_reply_t     rp;
    mux_entry_t     *q;            /* the FIFO, a ring */
    uint32_t         qhead, qlen, qcap;
    redis_session_t **waiters;     /* clients whose c2s waits for queue space */
    uint32_t         nwait, capwait;
    uint64_t         served;       /* replies delivered (SHOW SERVERS) */
    uv_timer_t       rc_timer;     /* reconnect_window: the next dial after a failed one */
    int              rc_on;        /* ...is waited for: no dial before it */
    rs_backoff_t     rc;           /* lost_at 0: not reconnecting */
};

/* Each worker's muxes, by route and target: [route index * 2 + which]; only that worker
 * touches its own row. */
static rs_mux_t **mux_slots[SY_MAX_WORKERS];

static void mux_service(rs_mux_t *m);
static void mux_lost(rs_mux_t *m, const char *why, int fatal);

/* ---- the object ------------------------------------------------------------------------ */

static void mux_unref(rs_mux_t *m)
{
    if (--m->refs > 0)
        return;
    free(m->out);
    free(m->in);
    free(m->q);
    free(m->waiters);
    free(m);
}

static void mux_idle_closed(uv_handle_t *h)
{
    mux_unref(h->data);
}

static void mux_describe(const sy_server_link_t *l, char cols[][128])
{
    const rs_mux_t *m = (const rs_mux_t *)l;
    snprintf(cols[0], 128, "shared:%u", m->users);
    snprintf(cols[1], 128, "redis");
    snprintf(cols[2], 128, "%s", l->target ? l->target->hostport : "");
    snprintf(cols[3], 128, "%s", sy_server_state_names[l->state]);
}

static void mux_drop_socket(rs_mux_t *m, int later)
{
    if (m->counted)
        SY_STAT_SUB(m->link.route->upstreams, 1);
    m->counted = 0;
    if (later)
        sy_conn_close_later(&m->conn);
    else
        sy_conn_close(&m->conn);
    m->st = MUX_DOWN;
}

/* The one close path: off the lists and the worker's table, socket closed (its close(2)
 * deferred when a switch moved the clients away), freed with its last reference. */
static void mux_close(rs_mux_t *m, const char *reason, int later)
{
    if (m->closed)
        return;
    m->closed = 1;
    sy_debug("event=server_close conn=shared route=%s upstream=%s reason=%s served=%llu", m->link.route->conf->name,
             m->link.target->hostport, reason, (unsigned long long)m->served);
    rs_mux_t **row = mux_slots[sy_loop_index(m->link.loop)];
    if (row != NULL && row[m->slot] == m)
        row[m->slot] = NULL;
    sy_server_unlink(&m->link);
    mux_drop_socket(m, later);
    if (m->idle_on)
        uv_idle_stop(&m->idle);
    uv_close((uv_handle_t *)&m->idle, mux_idle_closed);
    uv_timer_stop(&m->rc_timer);
    uv_close((uv_handle_t *)&m->rc_timer, mux_idle_closed);
    mux_unref(m);
}

/* Nobody uses it and nothing is owed: it goes. */
static void mux_maybe_close(rs_mux_t *m, int later)
{
    if (!m->closed && m->users == 0 && m->qlen == 0)
        mux_close(m, "no_clients", later);
}

static rs_mux_t *mux_new(uv_loop_t *loop, sy_route_t *r, conf_which_t which, int slot)
{
    rs_mux_t *m = calloc(1, sizeof(*m));
    if (m == NULL || (m->out = malloc(MUX_OUT_CAP)) == NULL || (m->in = malloc(MUX_IN_CAP)) == NULL) {
        if (m != NULL)
            free(m->out);
        free(m);
        return NULL;
    }
    m->refs = 3;   /* open, and the idle and timer handles until their close callbacks */
    m->slot = slot;
    uv_idle_init(loop, &m->idle);
    m->idle.data = m;
    uv_timer_init(loop, &m->rc_timer);
    m->rc_timer.data = m;
    sy_conn_init(&m->conn, loop, -1, m);
    resp_reply_init(&m->rp, 0);
    m->link.loop = loop;
    m->link.route = r;
    m->link.which = which;
    m->link.target = sy_route_target(r, which);
    m->link.state = SY_SERVER_CONNECTING;
    m->link.describe = mux_describe;
    sy_server_link(&m->link);
    return m;
}

/* The worker's mux for (route, which), made when there is none. */
static rs_mux_t *mux_get(uv_loop_t *loop, sy_route_t *r, conf_which_t which)
{
    int w = sy_loop_index(loop);
    if (w < 0 || w >= SY_MAX_WORKERS)
        return NULL;
    if (mux_slots[w] == NULL && (mux_slots[w] = calloc((size_t)sy_server.nroutes * 2, sizeof(rs_mux_t *))) == NULL)
        return NULL;
    int slot = (int)(r - sy_server.routes) * 2 + (which == CONF_EXTERNAL);
    const rs_mux_t *old = mux_slots[w][slot];
    const conf_target_t *t = sy_route_target(r, which);
    if (old != NULL && old->link.target != t && !sy_target_equal(old->link.target, t))
        mux_slots[w][slot] = NULL;   /* a RELOAD or a failover moved this side: the old mux
                                      * serves its users until the last leaves (mux_close) */
    if (mux_slots[w][slot] == NULL)
        mux_slots[w][slot] = mux_new(loop, r, which, slot);
    return mux_slots[w][slot];
}

/* Run the service at the end of this loop turn. */
static void mux_idle_cb(uv_idle_t *h)
{
    rs_mux_t *m = h->data;
    uv_idle_stop(h);
    m->idle_on = 0;
    mux_service(m);
}

static void mux_kick(rs_mux_t *m)
{
    if (!m->idle_on && !m->closed) {
        uv_idle_start(&m->idle, mux_idle_cb);
        m->idle_on = 1;
    }
}

/* ---- the dial ---------------------------------------------------------------------------- */

typedef struct mux_dial_s {
    uv_work_t            req;
    rs_mux_t            *m;
    const conf_target_t *target;
    int                  fd;
    SSL                 *ssl;
    int                  ping;         /* a redial: the server must answer (not dying, not loading) */
    char                 err[512];
} mux_dial_t;

static void mux_dial_work(uv_work_t *req)
{
    mux_dial_t *d = req->data;
    int one = 1;
    if (sy_redis_dial(d->target, &d->fd, &d->ssl, d->err, sizeof(d->err)) != 0)
        d->fd = -1;
    else if (d->ping && rs_ping(d->fd, d->ssl, d->err, sizeof(d->err)) != 0) {
        sy_redis_hangup(d->fd, d->ssl);
        d->fd = -1;
        d->ssl = NULL;
    } else
        setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void mux_watch(rs_mux_t *m);
static void mux_dial(rs_mux_t *m);

static void mux_rc_timer_cb(uv_timer_t *t)
{
    rs_mux_t *m = t->data;
    m->rc_on = 0;
    mux_dial(m);
}

/* A dial failed (why; the server's or the socket's cause): for a transient cause within
 * reconnect_window, wait and dial again (1), the commands queued meanwhile waiting too;
 * else 0, and they fail. */
static int mux_retry(rs_mux_t *m, char *why, size_t whylen, const char *cause)
{
    char q[700];
    if (sy_conf()->reconnect_window <= 0 || !rs_transient(cause)) {
        memset(&m->rc, 0, sizeof(m->rc));   /* fails as it did without a window */
        return 0;
    }
    int d = rs_backoff_next(&m->rc, uv_now(m->link.loop));
    sy_info("event=%s conn=shared route=%s upstream=%s attempt=%u next_ms=%d queued=%u error=%s",
            d < 0 ? "reconnect_gave_up" : "reconnect_failed", m->link.route->conf->name, m->link.target->hostport,
            m->rc.attempts, d, m->qlen, sy_logq(q, sizeof(q), why));
    if (d < 0) {
        size_t n = strlen(why);
        snprintf(why + n, whylen - n, " (for reconnect_window, %d s)", sy_conf()->reconnect_window);
        memset(&m->rc, 0, sizeof(m->rc));   /* a later command waits a window of its own */
        return 0;
    }
    m->rc_on = 1;
    uv_timer_start(&m->rc_timer, mux_rc_timer_cb, (uint64_t)d, 0);
    return 1;
}

static void mux_dial_done(uv_work_t *req, int status)
{
    mux_dial_t *d = req->data;
    rs_mux_t *m = d->m;
    if (m->closed) {
        sy_redis_hangup(d->fd, d->ssl);
    } else if (d->fd < 0) {
        char why[600];
        snprintf(why, sizeof(why), "cannot connect to %s: %s", m->link.target->hostport, d->err);
        SY_STAT_ADD(m->link.route->err_connect, 1);
        m->st = MUX_DOWN;
        if (!mux_retry(m, why, sizeof(why), d->err))
            mux_lost(m, why, 1);
    } else if (rs_conn_take(&m->conn, m->link.loop, m, d->fd, d->ssl, NULL, d->err, sizeof(d->err)) != 0) {
        char why[600];
        snprintf(why, sizeof(why), "cannot connect to %s: %s", m->link.target->hostport, d->err);
        sy_redis_hangup(d->fd, d->ssl);
        m->st = MUX_DOWN;
        mux_lost(m, why, 1);   /* ours, not the target's: no reconnect_window for it */
    } else {
        m->st = MUX_UP;
        m->counted = 1;
        SY_STAT_ADD(m->link.route->upstreams, 1);
        sy_server_set_state(&m->link, SY_SERVER_ACTIVE);
        sy_debug("event=shared_ready route=%s upstream=%s users=%u", m->link.route->conf->name,
                 m->link.target->hostport, m->users);
        if (m->rc.lost_at != 0) {
            SY_STAT_ADD(m->link.route->reconnects, 1);
            sy_info("event=reconnected conn=shared route=%s upstream=%s attempts=%u ms=%llu queued=%u",
                    m->link.route->conf->name, m->link.target->hostport, m->rc.attempts,
                    (unsigned long long)(uv_now(m->link.loop) - m->rc.lost_at), m->qlen);
            memset(&m->rc, 0, sizeof(m->rc));
        }
        mux_service(m);
    }
    free(d);
    mux_unref(m);
}

static void mux_dial(rs_mux_t *m)
{
    if (m->st != MUX_DOWN || m->closed || m->rc_on)
        return;
    mux_dial_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        mux_lost(m, "out of memory", 1);
        return;
    }
    d->req.data = d;
    d->m = m;
    d->fd = -1;
    d->target = m->link.target;
    d->ping = m->rc.lost_at != 0;
    m->st = MUX_DIALING;
    m->refs++;
    if (m->rc.lost_at != 0)
        sy_info("event=reconnect_attempt conn=shared route=%s upstream=%s attempt=%u queued=%u",
                m->link.route->conf->name, m->link.target->hostport, ++m->rc.attempts, m->qlen);
    sy_server_set_state(&m->link, SY_SERVER_CONNECTING);
    if (uv_queue_work(m->link.loop, &d->req, mux_dial_work, mux_dial_done) != 0) {
        m->refs--;
        free(d);
        m->st = MUX_DOWN;
        mux_lost(m, "no thread pool", 1);
    }
}

/* ---- the FIFO -------------------------------------------------------------------------- */

static mux_entry_t *mux_head(rs_mux_t *m)
{
    return m->qlen ? &m->q[m->qhead] : NULL;
}

/* n more replies owed to s, after everything queued so far. */
static int mux_push(rs_mux_t *m, redis_session_t *s, uint64_t n)
{
    if (m->qlen > 0) {
        mux_entry_t *tail = &m->q[(m->qhead + m->qlen - 1) % m->qcap];
        if (tail->s == s) {
            tail->n += n;
            return 0;
        }
    }
    if (m->qlen == m->qcap) {
        uint32_t ncap = m->qcap ? m->qcap * 2 : 64;
        mux_entry_t *nq = malloc(sizeof(*nq) * ncap);
        if (nq == NULL)
            return -1;
        for (uint32_t i = 0; i < m->qlen; i++)
            nq[i] = m->q[(m->qhead + i) % m->qcap];
        free(m->q);
        m->q = nq;
        m->qcap = ncap;
        m->qhead = 0;
    }
    m->q[(m->qhead + m->qlen) % m->qcap] = (mux_entry_t){ s, n };
    m->qlen++;
    return 0;
}

static void mux_pop(rs_mux_t *m)
{
    m->qhead = (m->qhead + 1) % m->qcap;
    m->qlen--;
}

/* ---- the write side ------------------------------------------------------------------- */

static void mux_wait_add(rs_mux_t *m, redis_session_t *s)
{
    if (s->mux_waiting)
        return;
    if (m->nwait == m->capwait) {
        uint32_t ncap = m->capwait ? m->capwait * 2 : 16;
        redis_session_t **nw = realloc(m->waiters, sizeof(*nw) * ncap);
        if (nw == NULL)
            return;   /* it is woken by its next read or reply instead */
        m->waiters = nw;
        m->capwait = ncap;
    }
    m->waiters[m->nwait++] = s;
    s->mux_waiting = 1;
}

static void mux_wait_del(rs_mux_t *m, redis_session_t *s)
{
    for (uint32_t i = 0; i < m->nwait; i++)
        if (m->waiters[i] == s) {
            m->waiters[i] = m->waiters[--m->nwait];
            break;
        }
    s->mux_waiting = 0;
}

/* c2s of a multiplexed client writes here: whole commands, appended to the queue with the
 * replies they owe; EAGAIN while the queue cannot take them all. */
static ssize_t mux_write(sy_conn_t *c, const void *buf, size_t len)
{
    redis_session_t *s = c->data;
    rs_mux_t *m = s->mux;
    if (m == NULL || m->closed)
        return -EPIPE;
    if (m->oend + len > MUX_OUT_CAP && m->ostart > 0) {
        memmove(m->out, m->out + m->ostart, m->oend - m->ostart);
        m->oend -= m->ostart;
        m->ostart = 0;
    }
    if (m->oend + len > MUX_OUT_CAP) {
        mux_wait_add(m, s);
        return SY_EAGAIN;
    }
    if (s->mux_unsent > 0 && mux_push(m, s, s->mux_unsent) != 0) {
        mux_wait_add(m, s);
        return SY_EAGAIN;
    }
    memcpy(m->out + m->oend, buf, len);
    m->oend += (uint32_t)len;
    s->mux_inflight += s->mux_unsent;
    s->mux_unsent = 0;
    if (m->st == MUX_DOWN)
        mux_dial(m);
    mux_kick(m);
    return (ssize_t)len;
}

static ssize_t mux_no_read(sy_conn_t *c, void *buf, size_t len)
{
    (void)c, (void)buf, (void)len;
    return SY_EAGAIN;
}

static const sy_transport_t rs_mux_transport = { mux_no_read, mux_write, "mux", NULL };

static void mux_flush(rs_mux_t *m)
{
    while (m->st == MUX_UP && m->ostart < m->oend) {
        ssize_t n = m->conn.tp->write(&m->conn, m->out + m->ostart, m->oend - m->ostart);
        if (n == SY_EAGAIN)
            return;
        if (n < 0) {
            char why[300];
            snprintf(why, sizeof(why), "connection to %s lost: %s", m->link.target->hostport,
                     m->conn.tls_err ? m->conn.tls_err : strerror((int)-n));
            mux_lost(m, why, 0);
            return;
        }
        m->ostart += (uint32_t)n;
    }
    if (m->ostart == m->oend)
        m->ostart = m->oend = 0;
}

/* Clients that waited for queue space write again. */
static void mux_wake(rs_mux_t *m)
{
    while (m->nwait > 0 && !m->closed && m->oend - m->ostart < MUX_OUT_CAP / 2) {
        redis_session_t *s = m->waiters[--m->nwait];
        s->mux_waiting = 0;
        s->refs++;
        if (s->state == RS_RELAY && sy_pipe_flush(&s->c2s) == 0 && s->state == RS_RELAY)
            rs_relay_drive(s, &s->client, 0);
        rs_unref(s);
    }
}

/* ---- the read side -------------------------------------------------------------------- */

/* Hand bytes of s's replies to s: into its s2c, through its own scan, out to it. Returns
 * how many it took (fewer when its s2c is full). */
static uint32_t mux_deliver(redis_session_t *s, const uint8_t *bytes, uint32_t n)
{
    sy_pipe_t *p = &s->s2c;
    if (s->state != RS_RELAY)
        return n;
    uint32_t take = sy_pipe_space(p);
    if (take > n)
        take = n;
    if (take == n)
        s->mux_stalled_at = 0;
    else if (take > 0 || s->mux_stalled_at == 0)
        s->mux_stalled_at = uv_now(s->link.loop);   /* it holds up the shared upstream since */
    if (take == 0)
        return 0;
    memcpy(p->buf + p->end, bytes, take);
    p->end += take;
    s->refs++;
    if (p->scan(s, p) == 0) {
        if (sy_pipe_flush(p) < 0)
            rs_close(s, NULL);
        else
            rs_update_polls(s);
    }
    rs_unref(s);
    return take;
}

/* The replies scanned whole for the FIFO head reached it. */
static void mux_completed(rs_mux_t *m)
{
    mux_entry_t *e = mux_head(m);
    uint64_t n = m->done_n;
    m->done_n = 0;
    m->served += n;
    e->n -= n;
    redis_session_t *s = e->s;
    if (e->n == 0)
        mux_pop(m);
    if (s != NULL) {
        s->mux_inflight -= n;
        if (s->pin_wait && s->mux_inflight == 0) {
            s->refs++;
            rs_mux_pin_try(s);
            rs_unref(s);
        }
    }
}

/* Frame what arrived and give each reply to the client it belongs to, in order. */
static void mux_dispatch(rs_mux_t *m)
{
    while (!m->closed) {
        if (m->istart < m->iscan) {
            mux_entry_t *e = mux_head(m);
            uint32_t want = m->iscan - m->istart;
            uint32_t took = e->s != NULL ? mux_deliver(e->s, m->in + m->istart, want) : want;
            m->istart += took;
            if (took < want || m->closed)
                return;   /* its s2c is full: the mux waits for it (rs_relay_drive kicks) */
        }
        if (m->done_n > 0)
            mux_completed(m);
        if (m->iscan == m->iend) {
            m->istart = m->iscan = m->iend = 0;
            return;
        }
        mux_entry_t *e = mux_head(m);
        if (e == NULL) {
            mux_lost(m, "a reply nobody asked for", 0);
            return;
        }
        while (m->iscan < m->iend && m->done_n < e->n) {
            int done = 0;
            ssize_t n = resp_reply_scan(&m->rp, m->in + m->iscan, m->iend - m->iscan, &done);
            if (n < 0) {
                char why[300];
                snprintf(why, sizeof(why), "protocol error from %s: %s", m->link.target->hostport, m->rp.err);
                SY_STAT_ADD(m->link.route->err_protocol, 1);
                mux_lost(m, why, 0);
                return;
            }
            m->iscan += (uint32_t)n;
            m->done_n += (uint64_t)done;
        }
    }
}

static void mux_read(rs_mux_t *m)
{
    for (int budget = SY_PIPE_READ_BUDGET; budget > 0 && m->st == MUX_UP && !m->closed; budget--) {
        if (m->istart > 0 && m->iend == MUX_IN_CAP) {
            memmove(m->in, m->in + m->istart, m->iend - m->istart);
            m->iscan -= m->istart;
            m->iend -= m->istart;
            m->istart = 0;
        }
        if (m->iend == MUX_IN_CAP)
            return;   /* a stalled client holds the buffer */
        uint32_t space = MUX_IN_CAP - m->iend;
        ssize_t n = m->conn.tp->read(&m->conn, m->in + m->iend, space);
        if (n == SY_EAGAIN)
            return;
        if (n <= 0) {
            char why[300];
            snprintf(why, sizeof(why), "connection to %s lost: %s", m->link.target->hostport,
                     m->conn.tls_err ? m->conn.tls_err : n == 0 ? "server closed the connection" : strerror((int)-n));
            mux_lost(m, why, 0);
            return;
        }
        m->iend += (uint32_t)n;
        mux_dispatch(m);
        if (m->istart < m->iscan)
            return;   /* stalled */
        if ((uint32_t)n < space && m->conn.ssl == NULL)
            return;   /* a short plain read: the socket is drained */
    }
    mux_kick(m);   /* out of budget: TLS may hold records no poll event announces */
}

static void mux_cb(sy_conn_t *c, int status, int events)
{
    rs_mux_t *m = c->data;
    m->refs++;
    if (status < 0) {
        /* POLLERR (a reset: SIGKILL of the server under load): libuv stopped the poll and
         * says no events. Read and write to learn why; the poll starts again if need be. */
        m->conn.events = 0;
        events = m->conn.rd_wait | m->conn.wr_wait;
    }
    if (m->st == MUX_UP && (events & m->conn.wr_wait))
        mux_flush(m);
    if (m->st == MUX_UP && (events & m->conn.rd_wait))
        mux_read(m);
    mux_service(m);
    mux_unref(m);
}

static void mux_watch(rs_mux_t *m)
{
    if (m->st != MUX_UP || m->closed)
        return;
    int ev = (m->iend < MUX_IN_CAP || m->istart > 0 ? m->conn.rd_wait : 0) | (m->ostart < m->oend ? m->conn.wr_wait : 0);
    if (sy_conn_watch(&m->conn, ev, mux_cb) != 0)
        mux_lost(m, "cannot watch the connection", 0);
}

static void mux_service(rs_mux_t *m)
{
    m->refs++;
    mux_flush(m);
    if (!m->closed)
        mux_dispatch(m);
    if (!m->closed)
        mux_wake(m);
    if (!m->closed)
        mux_watch(m);
    if (!m->closed)
        mux_maybe_close(m, 0);
    mux_unref(m);
}

/* ---- death ----------------------------------------------------------------------------- */

/* Answer n commands of s with "-ERR switchyard: msg", as its shared upstream will not. */
static void mux_fail_client(redis_session_t *s, uint64_t n, const char *msg)
{
    char line[1000];
    snprintf(line, sizeof(line), "ERR switchyard: %s", msg);
    uint8_t out[1024];
    uint32_t len = (uint32_t)resp_build_error(out, sizeof(out), line);
    s->refs++;
    s->mux_inflight -= n;
    SY_STAT_ADD(s->link.route->nerrors, n);
    if (!resp_reply_at_boundary(&s->rp)) {
        rs_close(s, NULL);   /* in the middle of a reply: the stream cannot be mended */
        n = 0;
    }
    for (uint64_t i = 0; i < n && s->state == RS_RELAY; i++) {
        if (sy_pipe_space(&s->s2c) < len) {
            rs_close(s, "%s", msg);   /* each reply still owed gets it as the client reads */
            break;
        }
        mux_deliver(s, out, len);
    }
    if (s->state == RS_RELAY && s->pin_wait && s->mux_inflight == 0)
        rs_mux_pin_try(s);
    rs_unref(s);
}

/* The shared upstream died, could not be dialed (fatal), or spoke nonsense: every command
 * in flight on it fails, for its own client only; the next command dials again. A client
 * whose upstream could not be reached is closed after its errors, as one with an upstream
 * of its own is (the FAILED state); one whose upstream died goes on. */
static void mux_lost(rs_mux_t *m, const char *why, int fatal)
{
    char msg[900], lq[1000];
    snprintf(msg, sizeof(msg), "route %s: %s", m->link.route->conf->name, why);
    sy_info("event=%s conn=shared route=%s upstream=%s in_flight=%u message=%s",
            fatal ? "upstream_failed" : "upstream_lost", m->link.route->conf->name, m->link.target->hostport, m->qlen,
            sy_logq(lq, sizeof(lq), msg));
    m->refs++;
    int was_up = m->st == MUX_UP;
    if (was_up) {
        SY_STAT_ADD(m->link.route->err_lost, 1);
        mux_drop_socket(m, 0);
        if (sy_conf()->reconnect_window > 0)
            rs_backoff_start(&m->rc, uv_now(m->link.loop));
    }
    if (m->st != MUX_DIALING)
        sy_server_set_state(&m->link, SY_SERVER_CONNECTING);
    m->ostart = m->oend = 0;
    m->istart = m->iscan = m->iend = 0;
    m->done_n = 0;
    resp_reply_init(&m->rp, 0);
    /* Take the FIFO whole first: failing a client may make it write again. */
    mux_entry_t *q = m->q;
    uint32_t head = m->qhead, len = m->qlen, cap = m->qcap;
    m->q = NULL;
    m->qhead = m->qlen = m->qcap = 0;
    /* A client may be in several entries and close while the first is failed: each holds
     * a reference until all are done. */
    for (uint32_t i = 0; i < len; i++)
        if (q[(head + i) % cap].s != NULL)
            q[(head + i) % cap].s->refs++;
    for (uint32_t i = 0; i < len; i++) {
        mux_entry_t *e = &q[(head + i) % cap];
        if (e->s == NULL || e->s->mux != m || e->s->state != RS_RELAY)
            continue;
        if (fatal) {
            e->s->pending = 0;   /* as FAILED: one error, then the close */
            rs_close(e->s, "%s", msg);
        } else {
            mux_fail_client(e->s, e->n, msg);
        }
    }
    for (uint32_t i = 0; i < len; i++)
        if (q[(head + i) % cap].s != NULL)
            rs_unref(q[(head + i) % cap].s);
    free(q);
    if (!m->closed)
        mux_wake(m);
    if (!m->closed && (m->oend > m->ostart || (was_up && m->rc.lost_at != 0)))
        mux_dial(m);   /* with reconnect_window, at once: idle clients find it back */
    if (!m->closed)
        mux_maybe_close(m, 0);
    mux_unref(m);
}

/* ---- clients --------------------------------------------------------------------------- */

static int mux_attach(redis_session_t *s, rs_mux_t *m)
{
    if (m == NULL)
        return -1;
    s->mux = m;
    s->mux_route = 1;
    m->users++;
    sy_conn_init(&s->muxconn, s->link.loop, -1, s);
    s->muxconn.tp = &rs_mux_transport;
    s->c2s.dst = &s->muxconn;
    /* The client's server is the shared one (a switch reads its target); it is linked once
     * the client relays, so the shared one's state stays its own. */
    s->link.server = s->state == RS_RELAY ? &m->link : NULL;
    if (m->st == MUX_DOWN)
        mux_dial(m);   /* ahead of the first command */
    return 0;
}

int rs_mux_route(redis_session_t *s)
{
    sy_route_t *r = s->link.route;
    sy_session_set_route(&s->link, r);
    return mux_attach(s, mux_get(s->link.loop, r, sy_route_active(r)));
}

void rs_mux_start(redis_session_t *s)
{
    rs_set_state(s, RS_RELAY);
    s->link.server = &s->mux->link;
    s->c2s.reading = 1;
    sy_debug("event=session_ready conn=%llu route=%s upstream=%s mux=shared", (unsigned long long)s->id,
             s->link.route->conf->name, s->mux->link.target->hostport);
    s->refs++;
    rs_relay_drive(s, &s->client, 0);
    rs_unref(s);
}

void rs_mux_detach(redis_session_t *s, int later)
{
    rs_mux_t *m = s->mux;
    if (m == NULL)
        return;
    if (s->mux_waiting)
        mux_wait_del(m, s);
    for (uint32_t i = 0; i < m->qlen; i++) {
        mux_entry_t *e = &m->q[(m->qhead + i) % m->qcap];
        if (e->s == s)
            e->s = NULL;   /* replies still owed to it are read and dropped */
    }
    s->mux = NULL;
    s->mux_inflight = s->mux_unsent = 0;
    s->c2s.dst = &s->noserver;
    if (s->link.server == &m->link)
        s->link.server = NULL;
    m->users--;
    if (m->istart < m->iscan)
        mux_kick(m);   /* it may have stalled on this client: its replies are dropped now */
    mux_maybe_close(m, later);
}

int rs_mux_move(redis_session_t *s)
{
    rs_mux_detach(s, 1);
    return rs_mux_route(s);
}

const sy_server_link_t *rs_mux_link(const rs_mux_t *m)
{
    return &m->link;
}

void rs_mux_poke(redis_session_t *s)
{
    if (s->mux != NULL && s->mux->istart < s->mux->iscan)
        mux_kick(s->mux);
}

int rs_mux_shared_db(const redis_session_t *s)
{
    return s->mux != NULL ? s->mux->link.target->redis.db : 0;
}

void rs_mux_pin(redis_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    p->scanned = p->fwd;
    resp_req_init(&s->rq, sy_conf()->redis_max_bulk);   /* the command is scanned again there */
    p->reading = 0;
    s->pin_wait = 1;
}

void rs_mux_pin_try(redis_session_t *s)
{
    if (!s->pin_wait || s->mux == NULL || s->state != RS_RELAY || s->mux_inflight > 0 || s->mux_unsent > 0 ||
        s->pending > 0 || s->c2s.start != s->c2s.fwd || s->s2c.start != s->s2c.end || s->held != LOCAL_NONE)
        return;
    sy_route_t *r = s->link.route;
    conf_which_t which = s->mux->link.which;
    rs_server_t *sv = rs_server_new(s, which, sy_route_target(r, which));
    if (sv == NULL) {
        rs_close(s, "route %s: out of memory", r->conf->name);
        return;
    }
    s->pin_wait = 0;
    rs_mux_detach(s, 0);
    rs_set_state(s, RS_CONNECTING);
    rs_attach(s, sv);
    s->s2c.start = s->s2c.fwd = s->s2c.scanned = s->s2c.end = 0;
    resp_reply_init(&s->rp, 0);
    sy_debug("event=pinned conn=%llu route=%s upstream=%s", (unsigned long long)s->id, r->conf->name,
             sv->link.target->hostport);
    rs_watch(s, &s->client, 0, rs_client_cb);
    rs_server_connect(sv);
}
