/*
 * redis_move.c - switchover for a Redis session: a new server dialed ahead (prepare: the
 * session's pre, on the CONNECTING list), the move (a swap on the loop when there is
 * nothing to replay, else dial and replay on the thread pool), and the hooks switchover.c
 * drives. A move ends by attaching the new server and closing the old one (its close(2)
 * deferred until the worker's part of the switch is done).
 */
#include "proxy/redis/redis_internal.h"

/* ---- switchover: moving a session to another target ------------------------------ */

/*
 * At a command boundary (no reply owed, not in MULTI/WATCH, not blocked, not
 * monitoring) the upstream holds no state of the client's beyond what we recorded: its
 * SELECT, CLIENT SETNAME, CLIENT NO-EVICT, HELLO version and subscriptions. The new
 * upstream is dialed ahead of the hold (prepare), the state replayed on the thread pool
 * (move), and the socket adopted. Clients using CLIENT TRACKING cannot be moved.
 */
typedef struct rs_move_s {
    uv_work_t        req;
    redis_session_t *s;
    rs_server_t     *sv;       /* the server it moves to: not yet attached */
    const conf_target_t *target;
    conf_which_t     which;
    int              fd;       /* sv's socket while the job has it, -1 to dial */
    SSL             *ssl;
    int              ok;
    char             err[512];
    uint8_t         *replay;   /* the commands to replay, and how many replies they owe */
    size_t           replay_len;
    int              replay_replies;
    uint8_t         *auth;     /* AUTH <user> <pw> of the client's ACL user, after the replay (redis_acl.c) */
    size_t           auth_len;
    char             user[128];   /* ...its user, for the error when the new target refuses */
    int              reply_off;   /* CLIENT REPLY OFF, after everything else */
    uint64_t         started;
} rs_move_t;

static void rs_append_cmd(uint8_t **buf, size_t *len, size_t *cap, int argc, const resp_arg_t *argv)
{
    size_t need = 32;
    for (int i = 0; i < argc; i++)
        need += argv[i].len + 24;
    if (*len + need > *cap) {
        size_t ncap = (*cap ? *cap * 2 : 1024) + need;
        uint8_t *nb = realloc(*buf, ncap);
        if (nb == NULL)
            return;
        *buf = nb;
        *cap = ncap;
    }
    *len += resp_cmd_build(*buf + *len, *cap - *len, argc, argv);
}

/* Commands that make a new upstream look like the old one to this client. */
static int rs_build_replay(redis_session_t *s, rs_move_t *m)
{
    size_t cap = 0;
    resp_arg_t a[3];
    char db[16];
    if (rs_acl_user(s) != NULL) {
        snprintf(m->user, sizeof(m->user), "%s", rs_acl_user(s));
        if ((m->auth = rs_acl_auth_cmd(s, &m->auth_len)) == NULL)
            return -1;
    }
    if (s->resp3) {
        a[0] = (resp_arg_t){ "HELLO", 5 };
        a[1] = (resp_arg_t){ "3", 1 };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, 2, a);
        m->replay_replies++;
    }
    if (s->client_db >= 0) {
        snprintf(db, sizeof(db), "%d", s->client_db);
        a[0] = (resp_arg_t){ "SELECT", 6 };
        a[1] = (resp_arg_t){ db, strlen(db) };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, 2, a);
        m->replay_replies++;
    }
    if (s->client_name != NULL) {
        a[0] = (resp_arg_t){ "CLIENT", 6 };
        a[1] = (resp_arg_t){ "SETNAME", 7 };
        a[2] = (resp_arg_t){ s->client_name, strlen(s->client_name) };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, 3, a);
        m->replay_replies++;
    }
    if (s->no_evict) {
        a[0] = (resp_arg_t){ "CLIENT", 6 };
        a[1] = (resp_arg_t){ "NO-EVICT", 8 };
        a[2] = (resp_arg_t){ "on", 2 };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, 3, a);
        m->replay_replies++;
    }
    static const char *const subcmd[3] = { "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE" };
    for (int k = 0; k < 3 && s->subs != NULL; k++) {
        const sub_set_t *set = &s->subs[k];
        if (set->n == 0)
            continue;
        resp_arg_t *argv = malloc(sizeof(resp_arg_t) * (set->n + 1));
        if (argv == NULL)
            return -1;
        argv[0] = (resp_arg_t){ subcmd[k], strlen(subcmd[k]) };
        for (size_t i = 0; i < set->n; i++)
            argv[i + 1] = (resp_arg_t){ set->names[i], strlen(set->names[i]) };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, (int)set->n + 1, argv);
        free(argv);
        m->replay_replies += (int)set->n;
    }
    m->reply_off = s->reply_off;   /* last of all (rs_move_work): it has no reply of its own */
    return 0;
}

int rs_replay_build(redis_session_t *s, uint8_t **buf, size_t *len, int *replies)
{
    static const uint8_t off[] = "*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n";
    rs_move_t m;
    memset(&m, 0, sizeof(m));
    int r = rs_build_replay(s, &m);
    /* One stream, in a move's order: the state as the endpoint's user, the client's own
     * AUTH (one reply), CLIENT REPLY OFF last (none). The caller wipes it (a password). */
    size_t n = m.replay_len + m.auth_len + (m.reply_off ? sizeof(off) - 1 : 0);
    uint8_t *b = r == 0 && n > 0 ? malloc(n) : NULL;
    if (b != NULL) {
        if (m.replay_len > 0)
            memcpy(b, m.replay, m.replay_len);
        if (m.auth_len > 0)
            memcpy(b + m.replay_len, m.auth, m.auth_len);
        if (m.reply_off)
            memcpy(b + m.replay_len + m.auth_len, off, sizeof(off) - 1);
    } else if (n > 0) {
        r = -1;
    }
    free(m.replay);
    rs_acl_wipe_buf(m.auth, m.auth_len);
    *buf = b;
    *len = b != NULL ? n : 0;
    *replies = m.replay_replies + (m.auth_len > 0);
    return r;
}

/* On the thread pool, after a dial: what the relay wants of the socket that costs nothing
 * to set here instead of on the loop. */
static void rs_dialed(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void rs_move_work(uv_work_t *req)
{
    rs_move_t *m = req->data;
    if (m->fd < 0) {
        if (sy_redis_dial(m->target, &m->fd, &m->ssl, m->err, sizeof(m->err)) != 0)
            return;
        rs_dialed(m->fd);
    }
    /* The state as the endpoint's user (it may do more than the client's), then the
     * client's own user, then CLIENT REPLY OFF, whose AUTH would get no reply. */
    if (m->replay_len > 0 &&
        sy_redis_roundtrip(m->fd, m->ssl, m->replay, m->replay_len, m->replay_replies, m->err, sizeof(m->err)) != 0)
        return;
    if (m->auth_len > 0 && sy_redis_roundtrip(m->fd, m->ssl, m->auth, m->auth_len, 1, m->err, sizeof(m->err)) != 0) {
        char why[sizeof(m->err)];
        snprintf(why, sizeof(why), "%s", m->err);
        snprintf(m->err, sizeof(m->err), "AUTH as %.100s on the new target failed: %.300s", m->user, why);
        return;
    }
    static const uint8_t off[] = "*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n";
    if (m->reply_off && sy_redis_roundtrip(m->fd, m->ssl, off, sizeof(off) - 1, 0, m->err, sizeof(m->err)) != 0)
        return;
    m->ok = 1;
}

static void rs_release(redis_session_t *s)
{
    if (s->state != RS_RELAY)
        return;
    sy_session_set_state(&s->link, SY_CLIENT_ACTIVE);
    s->refs++;
    int r = sy_pipe_resume(s, &s->c2s);
    if (r == SY_PUMP_DST_ERR)
        rs_upstream_lost(s, s->c2s.err);
    else if (r == SY_PUMP_OK && s->state == RS_RELAY)
        rs_relay_drive(s, &s->client, 0);
    rs_unref(s);
}

/* Nothing to replay: rs_build_replay would build no command (keep the two in step), so the
 * move needs no job. */
static int rs_replay_empty(const redis_session_t *s)
{
    return !s->resp3 && s->client_db < 0 && s->client_name == NULL && !s->no_evict && !s->reply_off && rs_acl_user(s) == NULL &&
           rs_subs_total(s) == 0;
}

/* Attach sv, ready, in place of the server the session relays to; the old one's close
 * waits until this worker's part of the switch is done. */
static void rs_swap(redis_session_t *s, rs_server_t *sv)
{
    rs_server_t *old = rs_attach(s, sv);
    sv->counted = 1;   /* the route's upstream gauge: one per client, it moves with it */
    if (old != NULL) {
        old->counted = 0;
        rs_server_close(old, "moved", 1);
    }
    resp_reply_init(&s->rp, 0);   /* redis_max_bulk limits what clients send, not replies */
}

static void rs_move_done(uv_work_t *req, int status)
{
    rs_move_t *m = req->data;
    redis_session_t *s = m->s;
    char q[600];
    if (s->state != RS_MOVING) {
        sy_redis_hangup(m->fd, m->ssl);
        rs_server_close(m->sv, "client_gone", 0);
        sy_switch_moved(&s->link, 0);   /* closed while it moved */
        goto out;
    }
    if (m->ok && rs_server_take(m->sv, m->fd, m->ssl, NULL, m->err, sizeof(m->err)) != 0)
        m->ok = 0;
    if (!m->ok) {
        sy_redis_hangup(m->fd, m->ssl);
        rs_server_close(m->sv, "move_failed", 0);
        sy_warn("event=move_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->link.route->conf->name,
                sy_logq(q, sizeof(q), m->err));
        rs_set_state(s, RS_RELAY);
        rs_close(s, "route %s switched to %s; reconnect (%s)", s->link.route->conf->name,
                 m->which == CONF_EXTERNAL ? "external" : "builtin", m->err);
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    rs_swap(s, m->sv);
    rs_set_state(s, RS_RELAY);
    sy_debug("event=moved conn=%llu route=%s target=%s upstream=%s ms=%llu", (unsigned long long)s->id,
             s->link.route->conf->name, m->which == CONF_EXTERNAL ? "external" : "builtin",
             s->srv->link.target->hostport, (unsigned long long)(uv_now(s->link.loop) - m->started));
    s->refs++;
    s->s2c.reading = 1;
    if (!sy_route_should_hold(&s->link)) {
        rs_release(s);
    } else {
        sy_session_set_state(&s->link, SY_CLIENT_HELD);   /* paused meanwhile: RESUME releases it */
        rs_update_polls(s);
    }
    sy_switch_moved(&s->link, 1);
    rs_unref(s);
out:
    free(m->replay);
    rs_acl_wipe_buf(m->auth, m->auth_len);
    free(m);
    rs_unref(s);
}

int rs_link_quiet(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    return rs_idle(s) && s->c2s.start == s->c2s.fwd;
}

/* A multiplexed client holds nothing on its shared upstream: it moves to the active
 * target's shared upstream on the loop, with nothing to replay. */
static void rs_mux_link_move(redis_session_t *s)
{
    sy_route_t *r = s->link.route;
    if (rs_mux_move(s) != 0) {
        rs_close(s, "route %s switched; reconnect", r->conf->name);
        sy_switch_moved(&s->link, 0);
        return;
    }
    sy_debug("event=moved conn=%llu route=%s upstream=%s mux=shared ms=0", (unsigned long long)s->id, r->conf->name,
             rs_upstream_name(s));
    s->refs++;
    int held = s->link.moved_from == SY_CLIENT_HELD;
    if (held && !sy_route_should_hold(&s->link)) {
        rs_release(s);
    } else {
        sy_session_set_state(&s->link, held ? SY_CLIENT_HELD : SY_CLIENT_ACTIVE);
        rs_update_polls(s);
        rs_mux_pin_try(s);   /* a command that pins may have waited for the move */
    }
    sy_switch_moved(&s->link, 1);
    rs_unref(s);
}

void rs_link_move(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    sy_route_t *r = s->link.route;
    if (s->mux != NULL) {
        rs_mux_link_move(s);
        return;
    }
    if (s->tracking || s->subs_untracked || rs_acl_unsure(s)) {
        rs_close(s, "route %s switched to %s; reconnect (%s)", r->conf->name,
                 sy_route_active(r) == CONF_EXTERNAL ? "external" : "builtin",
                 s->tracking        ? "CLIENT TRACKING sessions cannot move"
                 : rs_acl_unsure(s) ? "an AUTH user could not be recorded"
                                    : "a subscription or client name could not be recorded");
        sy_switch_moved(l, 0);
        return;
    }
    conf_which_t which = sy_route_active(r);
    const conf_target_t *t = sy_route_target(r, which);
    rs_server_t *pre = s->pre;
    if (pre != NULL && (pre->conn.fd < 0 || pre->link.target != t)) {
        rs_server_close(pre, pre->conn.fd < 0 ? "not_ready" : "stale_target", 0);
        pre = NULL;
    }
    s->pre = NULL;
    if (pre != NULL && rs_replay_empty(s)) {
        /* Opened ahead and nothing to replay: the move is a swap, done here on the loop with
         * no thread-pool round trip and no change to the client's watch, so a worker moves
         * its idle sessions in one pass. */
        rs_swap(s, pre);
        sy_debug("event=moved conn=%llu route=%s target=%s upstream=%s ms=0", (unsigned long long)s->id,
                 r->conf->name, which == CONF_EXTERNAL ? "external" : "builtin", t->hostport);
        s->refs++;
        s->s2c.reading = 1;
        int held = s->link.moved_from == SY_CLIENT_HELD;
        if (held && !sy_route_should_hold(&s->link)) {
            rs_release(s);         /* held at a boundary: its buffered command goes on */
        } else {
            /* the new upstream is watched; the client's watch stays, and a held command
             * waits for the switch's release */
            sy_session_set_state(&s->link, held ? SY_CLIENT_HELD : SY_CLIENT_ACTIVE);
            rs_update_polls(s);
        }
        sy_switch_moved(l, 1);
        rs_unref(s);
        return;
    }
    rs_move_t *m = calloc(1, sizeof(*m));
    if (m == NULL || rs_build_replay(s, m) != 0 || (pre == NULL && (pre = rs_server_new(s, which, t)) == NULL)) {
        if (m) {
            free(m->replay);
            rs_acl_wipe_buf(m->auth, m->auth_len);
        }
        free(m);
        if (pre != NULL)
            rs_server_close(pre, "no_memory", 0);
        rs_close(s, "route %s switched; reconnect", r->conf->name);
        sy_switch_moved(l, 0);
        return;
    }
    m->req.data = m;
    m->s = s;
    m->sv = pre;
    m->which = which;
    m->target = t;
    m->started = uv_now(s->link.loop);
    /* The job has the socket (dialed while the session was still working, or -1: the job
     * dials); the replay runs blocking on the pool. */
    rs_server_lend(pre, &m->fd, &m->ssl);
    rs_set_state(s, RS_MOVING);
    s->c2s.reading = 0;
    s->s2c.reading = 0;
    rs_watch(s, &s->srv->conn, 0, rs_server_cb);
    rs_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), rs_client_cb);
    s->refs++;
    if (uv_queue_work(s->link.loop, &m->req, rs_move_work, rs_move_done) != 0) {
        s->refs--;
        sy_redis_hangup(m->fd, m->ssl);
        rs_server_close(m->sv, "no_thread_pool", 0);
        free(m->replay);
        rs_acl_wipe_buf(m->auth, m->auth_len);
        free(m);
        rs_set_state(s, RS_RELAY);
        rs_close(s, "route %s switched; reconnect", r->conf->name);
        sy_switch_moved(l, 0);
    }
}

typedef struct rs_prep_s {
    uv_work_t        req;
    redis_session_t *s;
    rs_server_t     *sv;       /* the session's pre it dials for */
    const conf_target_t *target;
    int              fd;
    SSL             *ssl;
    char             err[512];
} rs_prep_t;

static void rs_prep_work(uv_work_t *req)
{
    rs_prep_t *w = req->data;
    if (sy_redis_dial(w->target, &w->fd, &w->ssl, w->err, sizeof(w->err)) != 0)
        w->fd = -1;
    else
        rs_dialed(w->fd);
}

static void rs_prep_done(uv_work_t *req, int status)
{
    rs_prep_t *w = req->data;
    redis_session_t *s = w->s;
    rs_server_t *sv = w->sv;
    int wanted = !sv->closed && s->pre == sv && s->state != RS_CLOSING && s->state != RS_CLOSED;
    /* The poll handle is made now, outside any hold (it also makes the socket non-blocking;
     * without one, the take does that by hand). */
    int failed = w->fd < 0 || (wanted && rs_server_take(sv, w->fd, w->ssl, sy_poll_new(s->link.loop, w->fd), w->err,
                                                        sizeof(w->err)) != 0);
    if (failed || !wanted) {
        if (failed && s->link.route) {
            char q[600];
            sy_warn("event=preconnect_failed conn=%llu route=%s error=%s", (unsigned long long)s->id,
                    s->link.route->conf->name, sy_logq(q, sizeof(q), w->err));
        }
        sy_redis_hangup(w->fd, w->ssl);
        rs_server_close(sv, "preconnect_failed", 0);
    }
    rs_server_unref(sv);
    sy_switch_prepared(&s->link);
    free(w);
    rs_unref(s);
}

void rs_link_unprepare(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    sy_route_t *r = s->link.route;
    if (s->pre != NULL && s->state == RS_RELAY && s->pre->link.target != sy_route_target(r, sy_route_active(r)))
        rs_server_close(s->pre, "the switch did not move it", 0);
}

void rs_link_prepare(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    sy_route_t *r = s->link.route;
    conf_which_t which = sy_route_active(r);
    if (s->mux != NULL || s->repl != NULL) {
        sy_switch_prepared(l);   /* its move opens nothing of its own; a replica never moves */
        return;
    }
    rs_prep_t *w = calloc(1, sizeof(*w));
    if (s->pre != NULL)
        rs_server_close(s->pre, "replaced", 0);
    if (w == NULL || (s->pre = rs_server_new(s, which, sy_route_target(r, which))) == NULL) {
        free(w);
        sy_switch_prepared(l);
        return;
    }
    w->req.data = w;
    w->s = s;
    w->sv = s->pre;
    w->fd = -1;
    w->target = s->pre->link.target;
    s->refs++;
    s->pre->refs++;
    if (uv_queue_work(s->link.loop, &w->req, rs_prep_work, rs_prep_done) != 0) {
        s->refs--;
        rs_server_unref(w->sv);
        rs_server_close(w->sv, "no_thread_pool", 0);
        free(w);
        sy_switch_prepared(l);
    }
}
/* A session that is moving is closed too (SIGTERM's deadline): its move job keeps the new
 * socket, and rs_move_done drops it when the job returns. A switch's own deadline never
 * kicks one (must_move passes over it). */
void rs_link_kick(sy_session_link_t *l, const char *why)
{
    redis_session_t *s = (redis_session_t *)l;
    int switching = SY_LOAD(s->link.route->sw_phase) != 0;   /* a switch's deadline, not a shutdown */
    rs_close(s, "%s%s", why, s->repl != NULL && switching ? " (a replication stream cannot move)" : "");
}

void rs_link_release(sy_session_link_t *l)
{
    rs_release((redis_session_t *)l);
}

