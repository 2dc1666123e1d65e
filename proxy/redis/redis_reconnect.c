/*
 * redis_reconnect.c - reconnect_window for Redis: a session outlives its upstream's restart.
 *
 * A pinned client, or any client with `multiplex = off`, has an upstream of its own. When
 * it closes (a restart, a crash, CLIENT KILL) and the session's state is one a move can
 * rebuild (rs_reconnect_begin says which), the session is not closed:
 *
 *   relay ──upstream gone──▶ each command in flight gets "-ERR switchyard: route R:
 *           connection to T lost: ..." (its outcome is unknown), the bytes of those
 *           commands not yet written are dropped ──▶ CONNECTING (client bytes wait in the
 *           kernel; SHOW CLIENTS says connecting)
 *         ──attempt: dial the same target and replay what a move replays (HELLO 3, SELECT,
 *           CLIENT SETNAME, subscriptions, CLIENT REPLY OFF: rs_replay_build) on the thread
 *           pool──▶ relay, the waiting commands go on
 *         ──failed: again after 100 ms, doubling to 1 s, while the window from the loss
 *           lasts; then FAILED: the next command gets "-ERR switchyard: route R: connection
 *           to T lost and not back within reconnect_window ..." and the close; an attempt
 *           refused for a cause waiting does not mend (NOAUTH, WRONGPASS, a certificate)
 *           ends it at once, "... lost, and reconnecting failed: ..."
 *
 * Not rebuilt, so closed as before (rs_upstream_lost; -ERR for each command in flight):
 * MULTI (the queued commands are gone: carrying on would run the rest of the transaction
 * outside it), WATCH (EXEC would run unguarded), MONITOR, CLIENT TRACKING, a reply or a
 * command cut in half, a local answer waiting (AUTH pipelined behind owed replies), and a
 * subscriber with replies owed.
 *
 * A new session (or one being pinned) whose target cannot be reached for a transient cause
 * (refused, reset, timed out, LOADING: rs_transient) waits the same way
 * (rs_reconnect_connect_failed), then gets "cannot connect to T: ... (for reconnect_window,
 * N s)", the words a multiplexed client gets;
 * a wrong password or certificate, at the first attempt or a later one, fails at once
 * with "cannot connect to T: ...", as without a window.
 * So does a failure of this process's own (memory, a poll handle, a socket that cannot be
 * made non-blocking): waiting for the target would not mend it, and the client would be
 * left with no answer.
 *
 * The shared upstream of multiplexed clients (redis_mux.c) uses the back-off below: after
 * it dies it dials again at once; while dials fail its clients' commands wait in its queue
 * (bounded: MUX_OUT_CAP, then their reads stop) until it is back or the window has run out.
 *
 * Each attempt, failure, success and give-up is logged (event=reconnect_attempt|
 * reconnect_failed|reconnected|reconnect_gave_up), and a success counts in the route's
 * reconnects counter.
 */
#include "proxy/redis/redis_internal.h"

#define RC_FIRST_MS 100
#define RC_MAX_MS   1000

void rs_backoff_start(rs_backoff_t *b, uint64_t now)
{
    b->lost_at = now ? now : 1;
    b->delay_ms = 0;
    b->attempts = 0;
}

int rs_backoff_next(rs_backoff_t *b, uint64_t now)
{
    uint64_t window = (uint64_t)sy_conf()->reconnect_window * 1000;
    if (window == 0)
        return -1;
    if (b->lost_at == 0)
        rs_backoff_start(b, now);
    uint64_t spent = now - b->lost_at;
    if (spent >= window)
        return -1;
    uint32_t d = b->delay_ms ? b->delay_ms * 2 : RC_FIRST_MS;
    if (d > RC_MAX_MS)
        d = RC_MAX_MS;
    b->delay_ms = d;
    if (spent + d > window)
        d = (uint32_t)(window - spent);   /* the last attempt at the window's end */
    return (int)d;
}

int rs_transient(const char *cause)
{
    static const char *const again[] = { "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", NULL };
    if (strncmp(cause, "TLS", 3) == 0 || strncmp(cause, "cannot start TLS", 16) == 0)
        return 0;   /* certificates do not mend themselves */
    size_t n = 0;
    while (cause[n] >= 'A' && cause[n] <= 'Z')
        n++;
    if (n < 2 || (cause[n] != ' ' && cause[n] != '\0'))
        return 1;   /* not a server's error reply: refused, reset, timed out, closed ... */
    for (const char *const *a = again; *a; a++)
        if (strlen(*a) == n && strncmp(cause, *a, n) == 0)
            return 1;
    return 0;       /* WRONGPASS, NOAUTH, ERR ...: the configuration's, not the moment's */
}

int rs_ping(int fd, SSL *ssl, char *err, size_t errlen)
{
    static const uint8_t ping[] = "*1\r\n$4\r\nPING\r\n";
    return sy_redis_roundtrip(fd, ssl, ping, sizeof(ping) - 1, 1, err, errlen);
}

/* ---- a session's own upstream ----------------------------------------------------- */

typedef struct rc_job_s {
    uv_work_t            req;
    redis_session_t     *s;
    rs_server_t         *sv;        /* on the CONNECTING list, not attached */
    const conf_target_t *target;
    int                  fd;
    SSL                 *ssl;
    int                  ok;
    char                 err[512];
    uint8_t             *replay;
    size_t               replay_len;
    int                  replay_replies;
} rc_job_t;

static void rc_attempt(redis_session_t *s);

static void rc_work(uv_work_t *req)
{
    rc_job_t *j = req->data;
    int one = 1;
    if (sy_redis_dial(j->target, &j->fd, &j->ssl, j->err, sizeof(j->err)) != 0) {
        j->fd = -1;
        return;
    }
    setsockopt(j->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (rs_ping(j->fd, j->ssl, j->err, sizeof(j->err)) != 0)
        return;   /* a dying server that still accepted, or one loading its data */
    if (j->replay_len > 0 &&
        sy_redis_roundtrip(j->fd, j->ssl, j->replay, j->replay_len, j->replay_replies, j->err, sizeof(j->err)) != 0)
        return;
    j->ok = 1;
}

/* The window ran out (window_out), or an attempt failed for a cause that waiting does not
 * mend (a password, a certificate): the next command (buffered or still in the kernel)
 * gets the error, then the close, as a client whose upstream cannot be reached at all
 * (FAILED). Only the first names the window: the second came before its end. */
static void rc_give_up(redis_session_t *s, const char *cause, int window_out)
{
    char q[700];
    const char *route = s->link.route->conf->name, *hp = s->rc_target->hostport;
    int w = sy_conf()->reconnect_window;
    if (s->rc_new && window_out)   /* as a shared upstream's clients are told (redis_mux.c) */
        rs_set_errmsg(s, "route %s: cannot connect to %s: %s (for reconnect_window, %d s)", route, hp, cause, w);
    else if (s->rc_new)
        rs_set_errmsg(s, "route %s: cannot connect to %s: %s", route, hp, cause);
    else if (window_out)
        rs_set_errmsg(s, "route %s: connection to %s lost and not back within reconnect_window (%d s): %s",
                      route, hp, w, cause);
    else
        rs_set_errmsg(s, "route %s: connection to %s lost, and reconnecting failed: %s", route, hp, cause);
    sy_info("event=reconnect_gave_up conn=%llu route=%s upstream=%s attempts=%u ms=%llu error=%s",
            (unsigned long long)s->id, route, hp, s->rc.attempts,
            (unsigned long long)(uv_now(s->link.loop) - s->rc.lost_at), sy_logq(q, sizeof(q), cause));
    SY_STAT_ADD(s->link.route->err_connect, 1);
    rs_enter_failed(s);
}

static void rc_timer_cb(uv_timer_t *t)
{
    redis_session_t *s = t->data;
    if (s->state == RS_CONNECTING && s->srv == NULL && s->rc.lost_at != 0)
        rc_attempt(s);
}

/* Back, its state replayed: relay again; what the client sent meanwhile goes on. */
static void rc_resume(redis_session_t *s, rs_server_t *sv, rc_job_t *j)
{
    rs_set_state(s, RS_RELAY);
    rs_attach(s, sv);
    sv->counted = 1;
    SY_STAT_ADD(s->link.route->upstreams, 1);
    SY_STAT_ADD(s->link.route->reconnects, 1);
    resp_reply_init(&s->rp, 0);
    sy_info("event=reconnected conn=%llu route=%s upstream=%s attempts=%u ms=%llu", (unsigned long long)s->id,
            s->link.route->conf->name, sv->link.target->hostport, s->rc.attempts,
            (unsigned long long)(uv_now(s->link.loop) - s->rc.lost_at));
    memset(&s->rc, 0, sizeof(s->rc));
    s->rc_new = 0;
    s->c2s.reading = 1;
    s->s2c.reading = 1;
    s->s2c.src_eof = 0;   /* that was the old upstream's */
    s->s2c.err = s->c2s.err = 0;
    if (s->link.state == SY_CLIENT_HELD) {
        s->c2s.reading = 0;   /* paused (PAUSE, a switch): the release sends what waits */
        rs_update_polls(s);
        return;
    }
    if (s->c2s.scanned < s->c2s.end) {
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

static void rc_done(uv_work_t *req, int status)
{
    rc_job_t *j = req->data;
    redis_session_t *s = j->s;
    rs_server_t *sv = j->sv;
    (void)status;
    if (s->state != RS_CONNECTING || s->srv != NULL || sv->closed) {
        sy_redis_hangup(j->fd, j->ssl);
        rs_server_close(sv, "client_gone", 0);
    } else if (!j->ok || rs_server_take(sv, j->fd, j->ssl, NULL, j->err, sizeof(j->err)) != 0) {
        char q[700];
        /* with j->ok it was the take that failed: ours, not the target's, and waiting
         * would not mend it */
        int transient = !j->ok && rs_transient(j->err);
        sy_redis_hangup(j->fd, j->ssl);
        rs_server_close(sv, "reconnect_failed", 0);
        int d = transient ? rs_backoff_next(&s->rc, uv_now(s->link.loop)) : -1;
        sy_info("event=reconnect_failed conn=%llu route=%s upstream=%s attempt=%u next_ms=%d error=%s",
                (unsigned long long)s->id, s->link.route->conf->name, s->rc_target->hostport, s->rc.attempts, d,
                sy_logq(q, sizeof(q), j->err));
        if (d < 0)
            rc_give_up(s, j->err, transient);
        else
            rs_timer_start(s, rc_timer_cb, (uint64_t)d);
    } else {
        rc_resume(s, sv, j);
    }
    rs_server_unref(sv);
    rs_acl_wipe_buf(j->replay, j->replay_len);   /* may hold the client's AUTH */
    free(j);
    rs_unref(s);
}

static void rc_attempt(redis_session_t *s)
{
    rc_job_t *j = calloc(1, sizeof(*j));
    rs_server_t *sv = j != NULL ? rs_server_new(s, s->rc_which, s->rc_target) : NULL;
    if (sv == NULL || rs_replay_build(s, &j->replay, &j->replay_len, &j->replay_replies) != 0) {
        if (sv != NULL)
            rs_server_close(sv, "no_memory", 0);
        if (j != NULL)
            rs_acl_wipe_buf(j->replay, j->replay_len);   /* may hold the client's AUTH */
        free(j);
        rc_give_up(s, "out of memory", 0);
        return;
    }
    s->rc.attempts++;
    sy_info("event=reconnect_attempt conn=%llu route=%s upstream=%s attempt=%u", (unsigned long long)s->id,
            s->link.route->conf->name, s->rc_target->hostport, s->rc.attempts);
    j->req.data = j;
    j->s = s;
    j->sv = sv;
    j->target = s->rc_target;
    j->fd = -1;
    s->refs++;
    sv->refs++;
    if (uv_queue_work(s->link.loop, &j->req, rc_work, rc_done) != 0) {
        s->refs--;
        rs_server_unref(sv);
        rs_server_close(sv, "no_thread_pool", 0);
        rs_acl_wipe_buf(j->replay, j->replay_len);   /* may hold the client's AUTH */
        free(j);
        rc_give_up(s, "no thread pool", 0);
    }
}

/* What a move can rebuild on a new upstream, and a stream that can be mended. */
/* Not after the client's own CLIENT KILL, answered last or still in flight: the close that
 * follows may be what it asked for (its own connection killed), and Redis leaves it closed. */
static int rc_recoverable(redis_session_t *s)
{
    return (s->kill_seq == 0 || s->kill_seq < s->seen_seq) && s->state == RS_RELAY && s->srv != NULL && s->mux == NULL && !s->in_multi && !s->watching &&
           !s->monitoring && !s->tracking && !s->subs_untracked && s->held == LOCAL_NONE && !s->reply_skip &&
           (s->sub_count == 0 || s->pending == 0) && rs_s2c_at_boundary(s) && resp_req_at_boundary(&s->rq) &&
           s->c2s.fwd == s->c2s.scanned;
}

int rs_reconnect_begin(redis_session_t *s, const char *why)
{
    if (sy_conf()->reconnect_window <= 0 || !rc_recoverable(s))
        return 0;
    rs_server_t *old = s->srv;
    s->rc_which = old->link.which;
    s->rc_target = old->link.target;
    uint64_t owed = s->pending;
    char line[1000], q[1100];
    snprintf(line, sizeof(line), "ERR switchyard: route %s: connection to %s lost: %s", s->link.route->conf->name,
             s->rc_target->hostport, why);
    sy_info("event=upstream_lost conn=%llu route=%s upstream=%s reason=%s owed=%llu reconnect=on",
            (unsigned long long)s->id, s->link.route->conf->name, s->rc_target->hostport, sy_logq(q, sizeof(q), why),
            (unsigned long long)owed);
    /* Each command in flight: its outcome is unknown, it gets an error; what the server
     * would have done with its reply (SELECT, SETNAME) does not happen. */
    for (uint64_t i = 0; i < owed; i++)
        if (rs_reply_error(s, line) != 0 && (sy_pipe_flush(&s->s2c) < 0 || rs_reply_error(s, line) != 0)) {
            rs_close(s, NULL);
            return 1;
        }
    SY_STAT_ADD(s->link.route->nerrors, owed);
    s->seen_seq += owed;
    s->pending = 0;
    s->blocking = 0;
    while (s->neffects > 0 && s->effects[0].seq <= s->seen_seq)
        rs_effects_drop_first(s);
    s->c2s.start = s->c2s.fwd;   /* the unwritten rest of those commands never goes */
    rs_server_close(old, "upstream_lost", 0);
    rs_set_state(s, RS_CONNECTING);
    s->c2s.reading = 0;
    s->s2c.reading = 0;
    if (sy_pipe_flush(&s->s2c) < 0) {
        rs_close(s, NULL);
        return 1;
    }
    rs_watch(s, &s->client, 0, rs_client_cb);
    rs_backoff_start(&s->rc, uv_now(s->link.loop));
    rc_attempt(s);
    return 1;
}

int rs_reconnect_connect_failed(redis_session_t *s, rs_server_t *sv, const char *cause)
{
    if (sy_conf()->reconnect_window <= 0 || !rs_transient(cause))
        return 0;
    char q[700];
    s->rc_which = sv->link.which;
    s->rc_target = sv->link.target;
    s->rc_new = 1;
    /* Whatever the server said during setup is not the client's to see. */
    s->s2c.start = s->s2c.fwd = s->s2c.scanned = s->s2c.end = 0;
    s->s2c.src_eof = 0;
    resp_reply_init(&s->rp, 0);
    rs_server_close(sv, "connect_failed", 0);
    rs_backoff_start(&s->rc, uv_now(s->link.loop));
    s->rc.attempts = 1;
    int d = rs_backoff_next(&s->rc, uv_now(s->link.loop));
    sy_info("event=reconnect_failed conn=%llu route=%s upstream=%s attempt=1 next_ms=%d error=%s",
            (unsigned long long)s->id, s->link.route->conf->name, s->rc_target->hostport, d,
            sy_logq(q, sizeof(q), cause));
    rs_watch(s, &s->client, 0, rs_client_cb);
    if (s->state == RS_CONNECTING)
        rs_timer_start(s, rc_timer_cb, (uint64_t)d);
    return 1;
}
