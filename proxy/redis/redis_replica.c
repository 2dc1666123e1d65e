/*
 * redis_replica.c - a client that replicates: SYNC or PSYNC over a client connection
 * (a real redis-server following switchyard's port, `redis-cli --rdb`, `redis-cli
 * --replica`).
 *
 * The client is on an upstream of its own (SYNC/PSYNC pin a multiplexed client first:
 * resp_cmd_pins), and the command is forwarded as any other. From then on:
 *
 *   c2s  held after SYNC until the master has answered it: a refusal (-ERR, -NOPERM, ...)
 *        makes the client an ordinary one again, whose next commands are scanned as usual;
 *        once the master accepted, the replica's bytes (REPLCONF ACK, which get no reply)
 *        go upstream raw
 *   s2c  the replies still owed before SYNC pass as usual; then what answers SYNC is
 *        framed by resp_sync_scan (keepalive newlines, +FULLRESYNC / +CONTINUE, the RDB
 *        payload in either form, which has no CRLF after it), and after it the command
 *        stream goes to the client raw, framed by a request scanner only to know where one
 *        command ends: an -ERR of switchyard's own is written only between two
 *
 * Such a session is pinned (SHOW ROUTES counts it), shows as "replica" in SHOW CLIENTS,
 * is never quiet, so a switch never moves it: its deadline closes it with -ERR saying
 * why (redis_move.c), and a real replica then reconnects and resyncs from the new target.
 * client_idle_timeout spares it, as Redis's own timeout spares replicas.
 */
#include "proxy/redis/redis_internal.h"
#include "protocol/resp_sync.h"

struct rs_repl_s {
    resp_sync_t sync;
    resp_req_t  stream;    /* the master's commands after the payload: where each ends */
    int         blind;     /* the stream could not be framed: no boundary is known */
    uint64_t    cmds;      /* stream commands relayed */
};

static int in_stream(const rs_repl_t *r)
{
    return r->sync.state == RESP_SYNC_STREAM;
}

int rs_repl_begin(redis_session_t *s, int psync)
{
    rs_repl_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        rs_close(s, "route %s: out of memory", s->link.route->conf->name);
        return -1;
    }
    resp_sync_init(&r->sync, psync);
    resp_req_init(&r->stream, 0);   /* the master's values: as large as Redis allows */
    s->repl = r;
    /* The master answers SYNC even under CLIENT REPLY OFF: it writes the payload itself. */
    s->reply_skip = 0;
    s->pending++;
    s->owed_seq++;
    s->c2s.reading = 0;
    sy_session_set_pinned(&s->link, 1);
    sy_info("event=replica_sync conn=%llu route=%s upstream=%s command=%s", (unsigned long long)s->id,
            s->link.route->conf->name, rs_upstream_name(s), psync ? "PSYNC" : "SYNC");
    return 0;
}

void rs_repl_free(redis_session_t *s)
{
    free(s->repl);
    s->repl = NULL;
}

int rs_repl_c2s_scan(redis_session_t *s, sy_pipe_t *p)
{
    if (!in_stream(s->repl)) {
        p->reading = 0;   /* until the master has answered SYNC */
        return 0;
    }
    p->scanned = p->fwd = p->end;   /* REPLCONF ACK and the like: no replies, raw */
    return 0;
}

int rs_repl_owns_s2c(const redis_session_t *s)
{
    return s->repl != NULL && (in_stream(s->repl) || s->pending <= 1) && resp_reply_at_boundary(&s->rp);
}

int rs_repl_at_boundary(const redis_session_t *s)
{
    const rs_repl_t *r = s->repl;
    if (in_stream(r))
        return !r->blind && resp_req_at_boundary(&r->stream);
    return r->sync.state == RESP_SYNC_REPLY && resp_sync_at_boundary(&r->sync);
}

const char *rs_repl_phase(const redis_session_t *s)
{
    const rs_repl_t *r = s->repl;
    if (r == NULL)
        return NULL;
    return in_stream(r) ? "stream" : r->sync.state == RESP_SYNC_REPLY ? "sync" : "rdb";
}

/* The client's bytes held after SYNC may go now (raw, or scanned again as commands). */
static int c2s_go(redis_session_t *s)
{
    s->c2s.reading = 1;
    if (rs_c2s_scan(s, &s->c2s) != 0)
        return -1;
    if (sy_pipe_flush(&s->c2s) < 0) {
        rs_close(s, "route %s: connection to %s lost", s->link.route->conf->name, rs_upstream_name(s));
        return -1;
    }
    return 0;
}

int rs_repl_s2c_scan(redis_session_t *s, sy_pipe_t *p)
{
    rs_repl_t *r = s->repl;
    const char *route = s->link.route->conf->name;
    while (!in_stream(r) && p->scanned < p->end) {
        int ev;
        ssize_t n = resp_sync_scan(&r->sync, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            p->fwd = p->scanned;
            SY_STAT_ADD(s->link.route->err_protocol, 1);
            rs_close(s, "route %s: protocol error from %s after SYNC: %s", route, rs_upstream_name(s), r->sync.err);
            return -1;
        }
        p->scanned += (uint32_t)n;
        p->fwd = p->scanned;
        if (ev == RESP_SYNC_EV_REPLY && s->pending > 0) {
            s->pending--;
            rs_reply_seen(s, r->sync.state != RESP_SYNC_REFUSED);
            sy_route_count_transactions(s->link.route, 1);
        }
        if (r->sync.state == RESP_SYNC_REFUSED) {
            /* An ordinary error reply: the client is an ordinary client again. */
            sy_info("event=replica_refused conn=%llu route=%s upstream=%s", (unsigned long long)s->id, route,
                    rs_upstream_name(s));
            rs_repl_free(s);
            sy_session_set_pinned(&s->link, s->tracking || s->subs_untracked);
            return c2s_go(s);
        }
        if (in_stream(r)) {
            sy_info("event=replica_stream conn=%llu route=%s upstream=%s payload_bytes=%llu",
                    (unsigned long long)s->id, route, rs_upstream_name(s), (unsigned long long)r->sync.payload);
            if (c2s_go(s) != 0)
                return -1;
        }
    }
    while (in_stream(r) && !r->blind && p->scanned < p->end) {
        int done = 0;
        ssize_t n = resp_req_scan(&r->stream, p->buf + p->scanned, p->end - p->scanned, &done);
        if (n < 0) {
            r->blind = 1;   /* still relayed, raw; only our own -ERR has nowhere to go */
            break;
        }
        p->scanned += (uint32_t)n;
        r->cmds += (uint64_t)done;
    }
    if (in_stream(r))
        p->scanned = p->end;
    p->fwd = p->scanned;
    return 0;
}
