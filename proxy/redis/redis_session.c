/*
 * redis_session.c - one Redis client and the upstream connection serving it.
 *
 *   accept ──▶ resolve (uv_getaddrinfo unless numeric) ──▶ non-blocking connect
 *          ──▶ TLS handshake (rediss://) ──▶ AUTH / SELECT, replies swallowed
 *          ──▶ relay: c2s framed by the request scanner, s2c by the reply scanner
 *
 * One upstream connection per client, so everything Redis offers keeps working. The
 * session always knows where the protocol stands: replies owed (`pending`), MULTI,
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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include "proxy/core/sy.h"
#include "protocol/resp.h"
#include "protocol/resp_cmd.h"
#include "protocol/resp_cmdtab.h"
#include "proxy/redis/redis_dial.h"

typedef enum { RS_CONNECTING = 0, RS_FAILED, RS_RELAY, RS_MOVING, RS_CLOSING, RS_CLOSED } rs_state_t;
static const char *const rs_names[] = { "connecting", "failed", "relay", "moving", "closing", "closed" };

/* Subscriptions, kept so a switchover can subscribe again on the new server. */
enum { SUB_CHANNEL = 0, SUB_PATTERN, SUB_SHARD };
typedef struct sub_set_s {
    char  **names;
    size_t  n, cap;
} sub_set_t;

typedef enum {
    LOCAL_NONE = 0,
    LOCAL_AUTH,        /* AUTH [user] password */
    LOCAL_HELLO,       /* HELLO with AUTH: check, strip, forward the rest */
    LOCAL_NOAUTH,      /* a command before a required AUTH */
    LOCAL_PROTO_ERR    /* malformed request: answer like Redis and close */
} local_t;

typedef enum { SETUP_NONE = 0, SETUP_AUTH, SETUP_SELECT } setup_t;

typedef struct redis_session_s {
    sy_session_link_t link;         /* on sy_sessions; first member */
    uint64_t       id;
    int            refs;
    rs_state_t     state;
    sy_listener_t *listener;
    sy_route_t    *route;
    const conf_target_t *target;
    conf_which_t   which;
    int            authed;          /* client may send commands */
    const char    *password;        /* what clients must AUTH with, NULL if nothing */

    sy_conn_t      client, server;
    sy_pipe_t      c2s, s2c;
    resp_req_t     rq;
    resp_reply_t   rp;

    /* connect */
    uv_getaddrinfo_t gai;
    struct addrinfo *addrs, *next_addr;
    uv_timer_t     timer;
    int            timer_on;
    int            setup_left;      /* setup replies still to swallow */
    char           errmsg[600];     /* connect error for FAILED */

    /* protocol state */
    uint64_t       pending;         /* replies the server still owes the client */
    uint64_t       sub_count;       /* channels + patterns + shard channels subscribed */
    int            in_multi, watching, monitoring, blocking, quitting;
    int            reply_off, reply_skip;
    int            resp3;
    int            client_db;       /* the client's own SELECT, -1 if none */
    /* SELECT / CLIENT SETNAME take effect only when the server says OK: each waits here
     * for the reply with its sequence number */
    struct {
        uint64_t   seq;
        int        db;              /* >= 0: a SELECT; -1: a SETNAME */
        char       name[RESP_CAP_LEN + 1];
    } effects[8];
    int            neffects;
    uint64_t       owed_seq, seen_seq;  /* replies owed / seen since the start */
    char           client_name[RESP_CAP_LEN + 1];
    int            tracking;        /* CLIENT TRACKING ON: cannot move */
    int            subs_untracked;  /* a subscription we could not record: cannot move */
    sub_set_t      subs[3];
    /* switchover */
    int            pre_fd;
    SSL           *pre_ssl;
    const conf_target_t *pre_target;
    local_t        held;            /* a complete command awaiting its local answer */
    const char    *proto_err;

    uint8_t        bufs[2 * SY_PIPE_BUF];
} redis_session_t;

static void rs_close(redis_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rs_client_cb(sy_conn_t *c, int status, int events);
static void rs_watch(redis_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb);
static void rs_server_cb(sy_conn_t *c, int status, int events);
static void rs_connect_next(redis_session_t *s);
static int  rs_c2s_scan(void *arg, sy_pipe_t *p);
static void rs_update_polls(redis_session_t *s);
static void rs_upstream_lost(redis_session_t *s, int err);
static void rs_relay_drive(redis_session_t *s, sy_conn_t *c, int events);

static void sub_clear(sub_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->names[i]);
    free(set->names);
    memset(set, 0, sizeof(*set));
}

static void rs_unref(redis_session_t *s)
{
    if (--s->refs == 0) {
        if (s->addrs)
            uv_freeaddrinfo(s->addrs);
        for (int i = 0; i < 3; i++)
            sub_clear(&s->subs[i]);
        if (s->pre_fd >= 0 || s->pre_ssl)
            sy_redis_hangup(s->pre_fd, s->pre_ssl);
        free(s);
    }
}

static int sub_add(sub_set_t *set, const char *name, size_t len)
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

static void sub_del(sub_set_t *set, const char *name, size_t len)
{
    for (size_t i = 0; i < set->n; i++)
        if (strlen(set->names[i]) == len && memcmp(set->names[i], name, len) == 0) {
            free(set->names[i]);
            set->names[i] = set->names[--set->n];
            return;
        }
}

static void rs_set_state(redis_session_t *s, rs_state_t to)
{
    static const unsigned allowed[] = {
        [RS_CONNECTING] = 1u << RS_FAILED | 1u << RS_RELAY | 1u << RS_CLOSING,
        [RS_FAILED]     = 1u << RS_CLOSING,
        [RS_RELAY]      = 1u << RS_CLOSING | 1u << RS_MOVING,
        [RS_MOVING]     = 1u << RS_RELAY | 1u << RS_CLOSING,
        [RS_CLOSING]    = 1u << RS_CLOSED,
        [RS_CLOSED]     = 0,
    };
    if (!(allowed[s->state] & (1u << to))) {
        sy_err("event=bug conn=%llu from=%s to=%s", (unsigned long long)s->id, rs_names[s->state], rs_names[to]);
        abort();
    }
    s->state = to;
}

/* ---- teardown ------------------------------------------------------------------ */

static void rs_timer_close_cb(uv_handle_t *h)
{
    rs_unref(h->data);
}

static void rs_destroy(redis_session_t *s)
{
    if (s->state == RS_CLOSED)
        return;
    rs_set_state(s, RS_CLOSED);
    sy_session_unlink(&s->link);
    if (s->server.fd >= 0 && s->route)
        SY_STAT_SUB(s->route->upstreams, 1);
    sy_conn_close(&s->server);
    sy_conn_close(&s->client);
    if (s->route) {
        SY_STAT_SUB(s->route->clients, 1);
        SY_STAT_ADD(s->route->bytes_in, s->c2s.bytes);
        SY_STAT_ADD(s->route->bytes_out, s->s2c.bytes);
    }
    SY_STAT_SUB(sy_server.nclients, 1);
    if (s->timer_on) {
        uv_timer_stop(&s->timer);
        s->timer_on = 0;
        uv_close((uv_handle_t *)&s->timer, rs_timer_close_cb);
    }
    rs_unref(s);
    sy_server_client_gone();
}

static void rs_timer_start(redis_session_t *s, uv_timer_cb cb, uint64_t ms)
{
    if (!s->timer_on) {
        uv_timer_init(s->link.loop, &s->timer);
        s->timer.data = s;
        s->refs++;
        s->timer_on = 1;
    }
    uv_timer_start(&s->timer, cb, ms, 0);
}

static void closing_timeout_cb(uv_timer_t *t)
{
    rs_destroy(t->data);
}

static void rs_closing_drive(redis_session_t *s)
{
    int r = sy_pipe_flush(&s->s2c);
    if (r < 0 || !sy_pipe_pending(&s->s2c)) {
        rs_destroy(s);
        return;
    }
    rs_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), rs_client_cb);
}

/* Append one error reply to the client stream (only at a reply boundary). */
/* Watch c for events; a watch that fails would leave the session waiting for an event that
 * never comes: close it instead (the client gets -ERR where one is owed). */
static void rs_watch(redis_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb)
{
    int rc = sy_conn_watch_logged(c, events, cb, s->id);
    if (rc == 0 || s->state == RS_CLOSED)
        return;
    if (s->state == RS_CLOSING)
        rs_destroy(s);
    else
        rs_close(s, "cannot watch the connection: %s", uv_strerror(rc));
}

static int rs_reply_error(redis_session_t *s, const char *msg)
{
    uint8_t out[1024];
    size_t n = resp_build_error(out, sizeof(out), msg);
    return sy_pipe_inject(&s->s2c, out, n);
}

static int s2c_at_boundary(redis_session_t *s)
{
    return resp_reply_at_boundary(&s->rp) && s->s2c.scanned == s->s2c.end;
}

/* Close the session; with fmt, each owed reply (at least one) first gets
 * "-ERR switchyard: <message>". */
static void rs_close(redis_session_t *s, const char *fmt, ...)
{
    if (s->state == RS_CLOSING || s->state == RS_CLOSED)
        return;
    int boundary = s2c_at_boundary(s);
    rs_set_state(s, RS_CLOSING);
    if (s->server.fd >= 0 && s->route)
        SY_STAT_SUB(s->route->upstreams, 1);
    sy_conn_close(&s->server);
    s->c2s.reading = 0;
    if (fmt != NULL) {
        char msg[900], line[1000], q[1100];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(line, sizeof(line), "ERR switchyard: %s", msg);
        sy_info("event=client_error conn=%llu route=%s pending=%llu message=%s", (unsigned long long)s->id,
                s->route ? s->route->conf->name : "-", (unsigned long long)s->pending,
                sy_logq(q, sizeof(q), line));
        if (s->route)
            SY_STAT_ADD(s->route->nerrors, 1);
        if (boundary) {
            uint64_t n = s->pending ? s->pending : 1;
            for (uint64_t i = 0; i < n && i < 100000; i++)
                if (rs_reply_error(s, line) != 0) {
                    sy_pipe_flush(&s->s2c);
                    if (rs_reply_error(s, line) != 0)
                        break;
                }
        }
    }
    if (!sy_pipe_pending(&s->s2c)) {
        rs_destroy(s);
        return;
    }
    rs_timer_start(s, closing_timeout_cb, 5000);
    rs_closing_drive(s);
}

/* ---- client commands --------------------------------------------------------------- */

/* Which of the session's subscription sets a (P|S)(UN)SUBSCRIBE works on. */
static int sub_kind(uint32_t flags)
{
    return (flags & RESP_CF_PATTERN) ? SUB_PATTERN : (flags & RESP_CF_SHARD) ? SUB_SHARD : SUB_CHANNEL;
}

/* Does this command need a local answer? cmd classifies s->rq. */
static local_t classify_local(redis_session_t *s, const resp_cmd_t *cmd)
{
    const resp_req_t *r = &s->rq;
    if (cmd->id == RESP_CMD_AUTH)
        return LOCAL_AUTH;
    if (cmd->id == RESP_CMD_HELLO) {
        for (uint32_t i = 1; i < r->ncap; i++)
            if (resp_req_arg_is(r, i, "AUTH"))
                return LOCAL_HELLO;
        if (r->argc > RESP_CAP_ARGS)
            return LOCAL_HELLO;   /* AUTH may hide beyond the captured arguments */
    }
    if (!s->authed && cmd->id != RESP_CMD_QUIT)
        return s->password ? LOCAL_NOAUTH : LOCAL_NONE;
    return LOCAL_NONE;
}

/* Account for a command going upstream: how many replies it owes and what it changes. */
static void rs_effect(redis_session_t *s, int has_reply, int db, const char *name);

static void rs_owe(redis_session_t *s, uint64_t replies)
{
    s->pending += replies;
    s->owed_seq += replies;
}

static void track_command(redis_session_t *s, const resp_cmd_t *cmd)
{
    const resp_req_t *r = &s->rq;
    uint64_t replies = 1;
    int effect_db = -1;           /* a SELECT to apply when its reply says OK */
    const char *effect = NULL;    /* a SETNAME to apply likewise */
    if (cmd->flags & RESP_CF_SUBSCRIBE) {
        replies = r->argc > 1 ? r->argc - 1 : 1;
    } else if (cmd->flags & RESP_CF_UNSUBSCRIBE) {
        /* Without arguments Redis answers once per subscription of that kind, or once. */
        int kind = sub_kind(cmd->flags);
        replies = r->argc > 1 ? r->argc - 1 : (s->subs[kind].n ? s->subs[kind].n : 1);
    } else if (cmd->id == RESP_CMD_MULTI) {
        s->in_multi = 1;
    } else if (cmd->id == RESP_CMD_EXEC || cmd->id == RESP_CMD_DISCARD) {
        s->in_multi = 0;
        s->watching = 0;
    } else if (cmd->id == RESP_CMD_WATCH) {
        s->watching = 1;
    } else if (cmd->id == RESP_CMD_UNWATCH) {
        s->watching = 0;
    } else if (cmd->id == RESP_CMD_MONITOR) {
        s->monitoring = 1;
    } else if (cmd->id == RESP_CMD_QUIT) {
        s->quitting = 1;
    } else if (cmd->id == RESP_CMD_RESET) {
        s->in_multi = s->watching = s->monitoring = 0;
        s->reply_off = s->reply_skip = 0;
        s->sub_count = 0;
        s->resp3 = 0;
        s->client_db = -1;
        s->client_name[0] = '\0';
        s->neffects = 0;
        s->tracking = 0;
        for (int i = 0; i < 3; i++)
            sub_clear(&s->subs[i]);
    } else if (cmd->id == RESP_CMD_HELLO && r->ncap > 1) {
        s->resp3 = strcmp(r->arg[1], "3") == 0;
        for (uint32_t i = 2; i + 1 < r->ncap; i++)
            if (resp_req_arg_is(r, i, "SETNAME"))
                effect = r->arg_trunc[i + 1] ? (s->subs_untracked = 1, NULL) : r->arg[i + 1];
        if (r->argc > r->ncap)
            s->subs_untracked = 1;   /* a SETNAME may hide beyond what we captured */
    } else if (cmd->id == RESP_CMD_SELECT && r->argc == 2 && r->ncap == 2 && !r->arg_trunc[1]) {
        effect_db = atoi(r->arg[1]);
    } else if (cmd->sub == RESP_SUBCMD_CLIENT_SETNAME && r->argc == 3) {
        if (r->ncap == 3 && !r->arg_trunc[2])
            effect = r->arg[2];
        else
            s->subs_untracked = 1;   /* a name we cannot replay */
    } else if (cmd->sub == RESP_SUBCMD_CLIENT_TRACKING) {
        s->tracking = resp_req_arg_is(r, 2, "ON");
        sy_session_set_pinned(&s->link, s->tracking || s->subs_untracked);
    } else if (cmd->sub == RESP_SUBCMD_CLIENT_REPLY) {
        if (resp_req_arg_is(r, 2, "OFF")) {
            s->reply_off = 1;
            replies = 0;
        } else if (resp_req_arg_is(r, 2, "SKIP")) {
            replies = 0;
            s->reply_skip = s->reply_off ? 0 : 1;   /* no reply to it, nor to the next */
        } else if (resp_req_arg_is(r, 2, "ON")) {
            s->reply_off = 0;
            s->reply_skip = 0;
            replies = 1;
        }
        rs_owe(s, replies);
        return;
    }
    if (cmd->flags & RESP_CF_BLOCKING)
        s->blocking = 1;
    if (s->reply_off) {
        replies = 0;
    } else if (s->reply_skip) {
        replies = 0;          /* the one command after CLIENT REPLY SKIP */
        s->reply_skip = 0;
    }
    rs_owe(s, replies);
    if (effect_db >= 0 || effect != NULL)
        rs_effect(s, replies == 1, effect_db, effect);
}

/* A SELECT / SETNAME (effect_db < 0) whose reply is the last one owed. Without a reply
 * to wait for (CLIENT REPLY OFF/SKIP) it counts at once. */
static void rs_effect(redis_session_t *s, int has_reply, int db, const char *name)
{
    if (!has_reply || s->neffects == 8) {
        if (db >= 0)
            s->client_db = db;
        else
            snprintf(s->client_name, sizeof(s->client_name), "%s", name);
        return;
    }
    int i = s->neffects++;
    s->effects[i].seq = s->owed_seq;
    s->effects[i].db = db;
    snprintf(s->effects[i].name, sizeof(s->effects[i].name), "%s", name ? name : "");
}

/* Reply number seen_seq arrived; ok is 0 for an error reply. */
static void rs_reply_seen(redis_session_t *s, int ok)
{
    s->seen_seq++;
    while (s->neffects > 0 && s->effects[0].seq <= s->seen_seq) {
        if (s->effects[0].seq == s->seen_seq && ok) {
            if (s->effects[0].db >= 0)
                s->client_db = s->effects[0].db;
            else
                snprintf(s->client_name, sizeof(s->client_name), "%s", s->effects[0].name);
        }
        s->neffects--;
        memmove(&s->effects[0], &s->effects[1], (size_t)s->neffects * sizeof(s->effects[0]));
    }
}

static int check_password(redis_session_t *s, const char *pw, size_t len)
{
    if (s->password == NULL)
        return 1;
    return strlen(s->password) == len && memcmp(s->password, pw, len) == 0;
}

/* Answer the held command locally; the command's bytes are [fwd..scanned) of c2s and
 * are removed (or, for HELLO, rewritten without AUTH and forwarded). Returns 0 or -1. */
static int run_local(redis_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    local_t what = s->held;
    uint8_t *cmd = p->buf + p->fwd;
    size_t clen = p->scanned - p->fwd;
    uint8_t out[1024];
    size_t olen = 0;
    resp_arg_t argv[16];
    int argc = -1;

    s->held = LOCAL_NONE;
    if (what == LOCAL_PROTO_ERR) {
        char msg[300];
        snprintf(msg, sizeof(msg), "ERR %s", s->proto_err ? s->proto_err : "Protocol error");
        if (s->route) {
            SY_STAT_ADD(s->route->nerrors, 1);
            SY_STAT_ADD(s->route->err_protocol, 1);
        }
        rs_reply_error(s, msg);
        rs_close(s, NULL);
        return -1;
    }
    if (what == LOCAL_NOAUTH) {
        olen = resp_build_error(out, sizeof(out), resp_cmd_classify(&s->rq).id == RESP_CMD_HELLO
            ? "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
              "<proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP "
              "protocol version at the same time"
            : "NOAUTH Authentication required.");
    } else if (what == LOCAL_AUTH) {
        const char *pw = NULL;
        size_t pwlen = 0;
        if (!s->rq.inline_cmd)
            argc = resp_cmd_split(cmd, clen, argv, 16);
        if (s->rq.inline_cmd && s->rq.ncap >= 2 && s->rq.argc <= 3) {
            argc = (int)s->rq.argc;
            pw = s->rq.arg[argc - 1];
            pwlen = s->rq.arg_len[argc - 1];
            if (s->rq.arg_trunc[argc - 1])
                pw = NULL;
        } else if (argc == 2 || argc == 3) {
            pw = argv[argc - 1].ptr;
            pwlen = argv[argc - 1].len;
        }
        if (pw == NULL && (argc < 2 || argc > 3)) {
            olen = resp_build_error(out, sizeof(out), "ERR wrong number of arguments for 'auth' command");
        } else if (pw != NULL && check_password(s, pw, pwlen) && s->in_multi) {
            /* Inside MULTI Redis queues AUTH and answers +OK from EXEC. UNWATCH stands in
             * for it upstream: queued, +OK, and nothing it could change (EXEC unwatches). */
            static const char unwatch[] = "*1\r\n$7\r\nUNWATCH\r\n";
            size_t ulen = sizeof(unwatch) - 1;
            s->authed = 1;
            if (clen >= ulen) {
                memset(cmd, 0, clen);
                memcpy(cmd, unwatch, ulen);
                memmove(cmd + ulen, cmd + clen, p->end - p->scanned);
                p->end -= (uint32_t)(clen - ulen);
                p->scanned = p->fwd + (uint32_t)ulen;
                rs_owe(s, 1);
                p->fwd = p->scanned;
                return 0;
            }
            memcpy(out, "+QUEUED\r\n", 9);
            olen = 9;
        } else if (pw != NULL && check_password(s, pw, pwlen)) {
            s->authed = 1;
            memcpy(out, "+OK\r\n", 5);
            olen = 5;
        } else {
            olen = resp_build_error(out, sizeof(out),
                                    "WRONGPASS invalid username-password pair or user is disabled.");
        }
    } else if (what == LOCAL_HELLO) {
        argc = s->rq.inline_cmd ? -1 : resp_cmd_split(cmd, clen, argv, 16);
        if (argc < 0) {
            olen = resp_build_error(out, sizeof(out), "ERR switchyard: HELLO with AUTH must be a RESP command");
        } else {
            resp_arg_t keep[16];
            int nkeep = 0, ok = 1;
            for (int i = 0; i < argc; i++) {
                if (i > 0 && argv[i].len == 4 && strncasecmp(argv[i].ptr, "AUTH", 4) == 0) {
                    if (i + 2 >= argc) {
                        ok = -1;
                        break;
                    }
                    if (!check_password(s, argv[i + 2].ptr, argv[i + 2].len))
                        ok = 0;
                    i += 2;
                    continue;
                }
                keep[nkeep++] = argv[i];
            }
            if (ok == -1) {
                olen = resp_build_error(out, sizeof(out), "ERR Syntax error in HELLO option 'auth'");
            } else if (ok == 0) {
                olen = resp_build_error(out, sizeof(out),
                                        "WRONGPASS invalid username-password pair or user is disabled.");
            } else {
                /* Forward HELLO without its AUTH part; the server's reply is the answer. */
                uint8_t rewritten[2048];
                size_t rlen = resp_cmd_build(rewritten, sizeof(rewritten), nkeep, keep);
                if (rlen == 0 || rlen > clen) {
                    olen = resp_build_error(out, sizeof(out), "ERR switchyard: HELLO too long");
                } else {
                    s->authed = 1;
                    memcpy(cmd, rewritten, rlen);
                    memmove(cmd + rlen, cmd + clen, p->end - p->scanned);
                    p->end -= (uint32_t)(clen - rlen);
                    p->scanned = p->fwd + (uint32_t)rlen;
                    s->resp3 = nkeep > 1 && keep[1].len == 1 && keep[1].ptr[0] == '3';
                    rs_owe(s, 1);
                    for (int k = 2; k + 1 < nkeep; k++)
                        if (keep[k].len == 7 && strncasecmp(keep[k].ptr, "SETNAME", 7) == 0) {
                            char nm[RESP_CAP_LEN + 1];
                            snprintf(nm, sizeof(nm), "%.*s", (int)keep[k + 1].len, keep[k + 1].ptr);
                            if (keep[k + 1].len > RESP_CAP_LEN)
                                s->subs_untracked = 1;
                            rs_effect(s, 1, -1, nm);
                        }
                    p->fwd = p->scanned;
                    return 0;
                }
            }
        }
    }
    /* Drop the command's bytes; the local answer joins the reply stream, unless the
     * client asked for no reply (CLIENT REPLY OFF, or SKIP for this one command). */
    memset(cmd, 0, clen);   /* passwords do not linger in the buffer */
    memmove(cmd, cmd + clen, p->end - p->scanned);
    p->end -= (uint32_t)clen;
    p->scanned = p->fwd;
    if (s->reply_skip && !s->reply_off) {
        /* Upstream saw CLIENT REPLY SKIP too and will skip the next command it gets: give
         * it a PING to skip, so the command after this one is answered on both sides. */
        static const char ping[] = "PING\r\n";   /* inline: never longer than the AUTH it replaces */
        size_t plen = sizeof(ping) - 1;
        s->reply_skip = 0;
        memmove(cmd + plen, cmd, p->end - p->scanned);
        memcpy(cmd, ping, plen);
        p->end += (uint32_t)plen;
        p->scanned = p->fwd + (uint32_t)plen;
        p->fwd = p->scanned;
        return 0;
    }
    if (!s->reply_off && sy_pipe_inject(&s->s2c, out, olen) != 0) {
        rs_close(s, NULL);
        return -1;
    }
    return 0;
}

static int c2s_try_local(redis_session_t *s)
{
    if (s->held == LOCAL_NONE)
        return 0;
    if (s->pending > 0 || !s2c_at_boundary(s))
        return 1;   /* still held */
    if (run_local(s) != 0)
        return -1;
    return 0;
}

/* client -> server framing. fwd stays at the start of a command until its name shows it
 * is not one we answer ourselves; large values then stream through. */
static int is_sub_cmd(const resp_cmd_t *c)
{
    return (c->flags & (RESP_CF_SUBSCRIBE | RESP_CF_UNSUBSCRIBE)) != 0;
}

/* Keep the subscription sets in step with a (P|S)(UN)SUBSCRIBE held whole in cmd; flags
 * are its classification's. */
static void record_subscriptions(redis_session_t *s, uint32_t flags, const uint8_t *cmd, size_t len)
{
    const resp_req_t *r = &s->rq;
    int kind = sub_kind(flags), unsub = (flags & RESP_CF_UNSUBSCRIBE) != 0;
    if (unsub && r->argc == 1) {
        sub_clear(&s->subs[kind]);
        return;
    }
    resp_arg_t stack[64], *argv = stack;
    int max = 64, argc;
    if (r->inline_cmd) {
        if (r->argc > r->ncap) {
            s->subs_untracked = 1;
            return;
        }
        for (uint32_t i = 0; i < r->ncap; i++) {
            if (r->arg_trunc[i]) {
                s->subs_untracked = 1;
                return;
            }
            stack[i] = (resp_arg_t){ r->arg[i], r->arg_len[i] };
        }
        argc = (int)r->ncap;
    } else {
        if (r->argc > 64) {
            max = (int)r->argc;
            argv = malloc(sizeof(resp_arg_t) * (size_t)max);
            if (argv == NULL) {
                s->subs_untracked = 1;
                return;
            }
        }
        argc = resp_cmd_split(cmd, len, argv, max);
    }
    if (argc < 0) {
        s->subs_untracked = 1;
    } else {
        for (int i = 1; i < argc; i++) {
            if (unsub)
                sub_del(&s->subs[kind], argv[i].ptr, argv[i].len);
            else if (sub_add(&s->subs[kind], argv[i].ptr, argv[i].len) != 0)
                s->subs_untracked = 1;
        }
    }
    if (argv != stack)
        free(argv);
}

/* No reply owed and nothing half-done: the next command can go to another server. */
static int rs_idle(const redis_session_t *s)
{
    return s->state == RS_RELAY && s->pending == 0 && !s->in_multi && !s->watching && !s->blocking &&
           !s->monitoring && s->held == LOCAL_NONE && resp_req_at_boundary(&s->rq) &&
           resp_reply_at_boundary(&s->rp) && s->s2c.scanned == s->s2c.end;
}

static int rs_c2s_scan(void *arg, sy_pipe_t *p)
{
    redis_session_t *s = arg;
    if (s->state != RS_RELAY && s->state != RS_FAILED)
        return 0;
    for (;;) {
        int h = c2s_try_local(s);
        if (h < 0)
            return -1;
        if (h > 0) {
            p->reading = 0;   /* resume when owed replies have passed */
            return 0;
        }
        if (p->scanned >= p->end)
            break;
        if (rs_idle(s) && sy_route_should_hold(&s->link)) {
            /* A pause or a switch: the next command waits here. */
            s->link.held = 1;
            p->reading = 0;
            p->fwd = p->scanned;
            sy_switch_poke(s->route);
            return 0;
        }
        int done = 0;
        ssize_t n = resp_req_scan(&s->rq, p->buf + p->scanned, p->end - p->scanned, &done);
        if (n < 0) {
            /* Like Redis: answer what came before, then the protocol error, then close. */
            p->end = p->scanned = p->fwd;
            s->proto_err = s->rq.err;
            s->held = LOCAL_PROTO_ERR;
            p->reading = 0;
            continue;
        }
        p->scanned += (uint32_t)n;
        resp_cmd_t cmd = resp_cmd_classify(&s->rq);   /* once per command, or per partial read */
        if (!done) {
            /* Partial command: stream it only if its name is known and not ours. */
            if (s->rq.ncap >= 1 && !(cmd.flags & RESP_CF_LOCAL) && !is_sub_cmd(&cmd) && s->authed &&
                s->state == RS_RELAY)
                p->fwd = p->scanned;
            continue;
        }
        if (s->state == RS_FAILED) {
            /* The first command gets the connect error; nothing goes upstream. */
            if (s->rq.argc == 0)
                continue;
            rs_close(s, "%s", s->errmsg);
            return -1;
        }
        if (s->rq.argc == 0) {
            p->fwd = p->scanned;
            continue;
        }
        local_t l = classify_local(s, &cmd);
        if (l != LOCAL_NONE) {
            s->held = l;
            continue;
        }
        track_command(s, &cmd);
        if (is_sub_cmd(&cmd))
            record_subscriptions(s, cmd.flags, p->buf + p->fwd, p->scanned - p->fwd);
        sy_session_set_pinned(&s->link, s->tracking || s->subs_untracked);
        p->fwd = p->scanned;
        if (s->pending >= sy_conf()->redis_max_pipeline)
            p->reading = 0;   /* back-pressure: resume as replies drain */
    }
    return 0;
}

/* server -> client framing: count replies, recognise pushes. */
static int rs_s2c_scan(void *arg, sy_pipe_t *p)
{
    redis_session_t *s = arg;
    uint64_t replies = 0;   /* added to the route's shared counter once per read */
    while (p->scanned < p->end) {
        int done = 0;
        ssize_t n = resp_reply_scan(&s->rp, p->buf + p->scanned, p->end - p->scanned, &done);
        if (n < 0) {
            p->fwd = p->scanned;
            SY_STAT_ADD(s->route->transactions, replies);
            SY_STAT_ADD(s->route->err_protocol, 1);
            rs_close(s, "route %s: protocol error from %s: %s", s->route->conf->name, s->target->hostport,
                     s->rp.err);
            return -1;
        }
        p->scanned += (uint32_t)n;
        if (!done)
            continue;
        const resp_reply_t *r = &s->rp;
        int push = 0;
        if (r->type == '>') {
            push = 1;
        } else if (s->monitoring && r->type == '+' && s->pending == 0) {
            push = 1;
        } else if (r->type == '*' && (s->sub_count > 0 || s->subs[0].n + s->subs[1].n + s->subs[2].n > 0) &&
                   r->first_len > 0 &&
                   (strcasecmp(r->first, "message") == 0 || strcasecmp(r->first, "pmessage") == 0 ||
                    strcasecmp(r->first, "smessage") == 0)) {
            push = 1;
        }
        if ((r->type == '*' || r->type == '>') && r->has_third_int &&
            (strcasecmp(r->first, "subscribe") == 0 || strcasecmp(r->first, "psubscribe") == 0 ||
             strcasecmp(r->first, "ssubscribe") == 0 || strcasecmp(r->first, "unsubscribe") == 0 ||
             strcasecmp(r->first, "punsubscribe") == 0 || strcasecmp(r->first, "sunsubscribe") == 0)) {
            s->sub_count = r->third_int > 0 ? (uint64_t)r->third_int : 0;
            push = 0;
            if (s->pending > 0) {
                s->pending--;   /* RESP3 confirmations come as pushes but answer a command */
                rs_reply_seen(s, 1);
            }
            continue;
        }
        if (!push && s->pending > 0) {
            replies++;
            s->pending--;
            rs_reply_seen(s, r->type != '-' && r->type != '!');
            if (s->pending == 0)
                s->blocking = 0;
        }
    }
    p->fwd = p->scanned;
    if (replies > 0)
        SY_STAT_ADD(s->route->transactions, replies);
    /* Owed replies have passed: a held command can be answered now. */
    if (s->held != LOCAL_NONE && s->pending == 0 && s->state == RS_RELAY) {
        if (rs_c2s_scan(s, &s->c2s) != 0)
            return -1;
        if (s->held == LOCAL_NONE && !s->link.held) {
            s->c2s.reading = 1;
            if (sy_pipe_flush(&s->c2s) < 0) {
                rs_close(s, "route %s: connection to %s lost", s->route->conf->name, s->target->hostport);
                return -1;
            }
        }
    }
    if (!s->c2s.reading && s->held == LOCAL_NONE && s->pending < sy_conf()->redis_max_pipeline &&
        s->state == RS_RELAY && !s->link.held)
        s->c2s.reading = 1;
    if (s->route && rs_idle(s))
        sy_switch_poke(s->route);
    return 0;
}

/* ---- switchover: moving a session to another target ------------------------------ */

/*
 * At a command boundary (no reply owed, not in MULTI/WATCH, not blocked, not
 * monitoring) the upstream holds no state of the client's beyond what we recorded: its
 * SELECT, CLIENT SETNAME, HELLO version and subscriptions. The new upstream is dialed
 * ahead of the hold (prepare), the state replayed on the thread pool (move), and the
 * socket adopted. Clients using CLIENT TRACKING cannot be moved.
 */
typedef struct rs_move_s {
    uv_work_t        req;
    redis_session_t *s;
    const conf_target_t *target;
    conf_which_t     which;
    int              fd;
    SSL             *ssl;
    int              ok;
    char             err[512];
    uint8_t         *replay;   /* the commands to replay, and how many replies they owe */
    size_t           replay_len;
    int              replay_replies;
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
    if (s->client_name[0]) {
        a[0] = (resp_arg_t){ "CLIENT", 6 };
        a[1] = (resp_arg_t){ "SETNAME", 7 };
        a[2] = (resp_arg_t){ s->client_name, strlen(s->client_name) };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, 3, a);
        m->replay_replies++;
    }
    static const char *const subcmd[3] = { "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE" };
    for (int k = 0; k < 3; k++) {
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
    if (s->reply_off) {
        /* Last, and it has no reply of its own. */
        a[0] = (resp_arg_t){ "CLIENT", 6 };
        a[1] = (resp_arg_t){ "REPLY", 5 };
        a[2] = (resp_arg_t){ "OFF", 3 };
        rs_append_cmd(&m->replay, &m->replay_len, &cap, 3, a);
    }
    return 0;
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
    if (m->replay_len > 0 &&
        sy_redis_roundtrip(m->fd, m->ssl, m->replay, m->replay_len, m->replay_replies, m->err, sizeof(m->err)) != 0)
        return;
    m->ok = 1;
}

static void rs_release(redis_session_t *s)
{
    if (s->state != RS_RELAY)
        return;
    s->link.held = 0;
    s->refs++;
    int r = sy_pipe_resume(s, &s->c2s);
    if (r == SY_PUMP_DST_ERR)
        rs_upstream_lost(s, s->c2s.err);
    else if (r == SY_PUMP_OK && s->state == RS_RELAY)
        rs_relay_drive(s, &s->client, 0);
    rs_unref(s);
}

/* Swap upstreams to the one m opened; the old one's close waits until this worker's part
 * of the switch is done. */
static void rs_adopt_upstream(redis_session_t *s, rs_move_t *m)
{
    int one = 1;
    sy_conn_close_later(&s->server);
    ioctl(m->fd, FIONBIO, &one);
    sy_conn_init(&s->server, s->link.loop, m->fd, s);
    if (m->ssl != NULL) {
        s->server.ssl = m->ssl;
        s->server.ssl_owned = 1;
        s->server.tp = &sy_tls_transport;
        SSL_set_mode(m->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
    m->fd = -1;
    m->ssl = NULL;
    s->target = m->target;
    s->which = m->which;
    s->link.target = m->target;
    s->link.which = m->which;
    resp_reply_init(&s->rp, 0);   /* redis_max_bulk limits what clients send, not replies */
}

static void rs_move_done(uv_work_t *req, int status)
{
    rs_move_t *m = req->data;
    redis_session_t *s = m->s;
    char q[600];
    if (s->state != RS_MOVING) {
        sy_redis_hangup(m->fd, m->ssl);
        goto out;
    }
    if (!m->ok) {
        sy_redis_hangup(m->fd, m->ssl);
        sy_warn("event=move_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->route->conf->name,
                sy_logq(q, sizeof(q), m->err));
        rs_set_state(s, RS_RELAY);
        rs_close(s, "route %s switched to %s; reconnect (%s)", s->route->conf->name,
                 m->which == CONF_EXTERNAL ? "external" : "builtin", m->err);
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    rs_adopt_upstream(s, m);
    rs_set_state(s, RS_RELAY);
    sy_debug("event=moved conn=%llu route=%s target=%s upstream=%s ms=%llu", (unsigned long long)s->id,
            s->route->conf->name, s->which == CONF_EXTERNAL ? "external" : "builtin", s->target->hostport,
            (unsigned long long)(uv_now(s->link.loop) - m->started));
    s->refs++;
    s->s2c.reading = 1;
    if (!sy_route_should_hold(&s->link)) {
        rs_release(s);
    } else {
        s->link.held = 1;   /* paused meanwhile: RESUME releases it */
        rs_update_polls(s);
    }
    sy_switch_moved(&s->link, 1);
    rs_unref(s);
out:
    free(m->replay);
    free(m);
    rs_unref(s);
}

static int rs_link_quiet(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    return rs_idle(s) && s->c2s.start == s->c2s.fwd;
}

static void rs_link_move(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    sy_route_t *r = s->route;
    if (s->tracking || s->subs_untracked) {
        rs_close(s, "route %s switched to %s; reconnect (%s)", r->conf->name,
                 sy_route_active(r) == CONF_EXTERNAL ? "external" : "builtin",
                 s->tracking ? "CLIENT TRACKING sessions cannot move" : "subscriptions could not be recorded");
        sy_switch_moved(l, 0);
        return;
    }
    rs_move_t *m = calloc(1, sizeof(*m));
    if (m == NULL || rs_build_replay(s, m) != 0) {
        if (m)
            free(m->replay);
        free(m);
        rs_close(s, "route %s switched; reconnect", r->conf->name);
        sy_switch_moved(l, 0);
        return;
    }
    m->req.data = m;
    m->s = s;
    m->which = sy_route_active(r);
    m->target = sy_route_target(r, sy_route_active(r));
    m->fd = -1;
    m->started = uv_now(s->link.loop);
    if (s->pre_fd >= 0 && s->pre_target == m->target) {
        m->fd = s->pre_fd;   /* dialed while the session was still working */
        m->ssl = s->pre_ssl;
    } else if (s->pre_fd >= 0) {
        sy_redis_hangup(s->pre_fd, s->pre_ssl);
    }
    s->pre_fd = -1;
    s->pre_ssl = NULL;
    if (m->fd >= 0 && m->replay_len == 0) {
        /* Opened ahead and nothing to replay: the move is a swap, done here on the loop with
         * no thread-pool round trip and no change to the client's watch, so a worker moves
         * its idle sessions in one pass. */
        rs_adopt_upstream(s, m);
        free(m->replay);
        free(m);
        sy_debug("event=moved conn=%llu route=%s target=%s upstream=%s ms=0", (unsigned long long)s->id,
                 r->conf->name, s->which == CONF_EXTERNAL ? "external" : "builtin", s->target->hostport);
        s->refs++;
        s->s2c.reading = 1;
        if (s->link.held && !sy_route_should_hold(&s->link))
            rs_release(s);         /* held at a boundary: its buffered command goes on */
        else
            rs_update_polls(s);    /* the new upstream is watched; the client's watch stays */
        sy_switch_moved(l, 1);
        rs_unref(s);
        return;
    }
    rs_set_state(s, RS_MOVING);
    s->c2s.reading = 0;
    s->s2c.reading = 0;
    rs_watch(s, &s->server, 0, rs_server_cb);
    rs_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), rs_client_cb);
    s->refs++;
    if (uv_queue_work(s->link.loop, &m->req, rs_move_work, rs_move_done) != 0) {
        s->refs--;
        sy_redis_hangup(m->fd, m->ssl);
        free(m->replay);
        free(m);
        rs_set_state(s, RS_RELAY);
        rs_close(s, "route %s switched; reconnect", r->conf->name);
        sy_switch_moved(l, 0);
    }
}

typedef struct rs_prep_s {
    uv_work_t        req;
    redis_session_t *s;
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
    if (w->fd < 0 || s->state == RS_CLOSING || s->state == RS_CLOSED) {
        if (w->fd < 0 && s->route) {
            char q[600];
            sy_warn("event=preconnect_failed conn=%llu route=%s error=%s", (unsigned long long)s->id,
                    s->route->conf->name, sy_logq(q, sizeof(q), w->err));
        }
        sy_redis_hangup(w->fd, w->ssl);
    } else {
        if (s->pre_fd >= 0)
            sy_redis_hangup(s->pre_fd, s->pre_ssl);
        s->pre_fd = w->fd;
        s->pre_ssl = w->ssl;
        s->pre_target = w->target;
    }
    sy_switch_prepared(&s->link);
    free(w);
    rs_unref(s);
}

static void rs_link_prepare(sy_session_link_t *l)
{
    redis_session_t *s = (redis_session_t *)l;
    sy_route_t *r = s->route;
    rs_prep_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        sy_switch_prepared(l);
        return;
    }
    w->req.data = w;
    w->s = s;
    w->fd = -1;
    w->target = sy_route_target(r, sy_route_active(r));
    s->refs++;
    if (uv_queue_work(s->link.loop, &w->req, rs_prep_work, rs_prep_done) != 0) {
        s->refs--;
        free(w);
        sy_switch_prepared(l);
    }
}

static void rs_link_kick(sy_session_link_t *l, const char *why)
{
    redis_session_t *s = (redis_session_t *)l;
    if (s->state == RS_MOVING)
        return;
    rs_close(s, "%s", why);
}

static void rs_link_release(sy_session_link_t *l)
{
    rs_release((redis_session_t *)l);
}

/* ---- relay --------------------------------------------------------------------- */

static void rs_update_polls(redis_session_t *s)
{
    if (s->state != RS_RELAY)
        return;
    rs_watch(s, &s->client, sy_pipe_src_events(&s->c2s) | sy_pipe_dst_events(&s->s2c), rs_client_cb);
    rs_watch(s, &s->server, sy_pipe_src_events(&s->s2c) | sy_pipe_dst_events(&s->c2s), rs_server_cb);
}

static void rs_upstream_lost(redis_session_t *s, int err)
{
    if (s->quitting) {
        rs_close(s, NULL);
        return;
    }
    const char *why = s->server.tls_err ? s->server.tls_err : err ? strerror(-err) : "server closed the connection";
    SY_STAT_ADD(s->route->err_lost, 1);
    rs_close(s, "route %s: connection to %s lost: %s", s->route->conf->name, s->target->hostport, why);
}

static void rs_relay_drive(redis_session_t *s, sy_conn_t *c, int events)
{
    int err;
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
}

static void rs_server_cb(sy_conn_t *c, int status, int events);

/* ---- client side outside the relay ----------------------------------------------- */

static void rs_failed_read(redis_session_t *s)
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

static void rs_client_cb(sy_conn_t *c, int status, int events)
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

/* ---- upstream connect ---------------------------------------------------------------- */

static void rs_connect_failed(redis_session_t *s, const char *cause)
{
    if (s->state != RS_CONNECTING)
        return;
    snprintf(s->errmsg, sizeof(s->errmsg), "route %s: cannot connect to %s: %s", s->route->conf->name,
             s->target->hostport, cause);
    char q[700];
    sy_info("event=upstream_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->route->conf->name,
            sy_logq(q, sizeof(q), s->errmsg));
    SY_STAT_ADD(s->route->nerrors, 1);
    SY_STAT_ADD(s->route->err_connect, 1);
    /* Whatever the server said during setup is not the client's to see. */
    s->s2c.start = s->s2c.fwd = s->s2c.scanned = s->s2c.end = 0;
    resp_reply_init(&s->rp, 0);
    if (s->server.fd >= 0)
        SY_STAT_SUB(s->route->upstreams, 1);
    sy_conn_close(&s->server);
    if (s->timer_on)
        uv_timer_stop(&s->timer);
    rs_set_state(s, RS_FAILED);
    rs_timer_start(s, closing_timeout_cb, 10000);   /* a client that never sends is not kept */
    s->c2s.reading = 1;
    /* A command may already be buffered or waiting in the socket. */
    if (rs_c2s_scan(s, &s->c2s) != 0)
        return;
    rs_failed_read(s);
}

static void rs_connect_timeout_cb(uv_timer_t *t)
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
            s->route->conf->name, s->which == CONF_EXTERNAL ? "external" : "builtin", s->target->hostport,
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
    const sy_endpoint_t *ep = &s->target->redis;
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

/* The route's client context for this target, built by the first session that needs it
 * (loops share it; sy_shared_mu keeps two from building it at once). */
static SSL_CTX *rs_tls_ctx(redis_session_t *s, char *err, size_t errlen)
{
    int w = s->which == CONF_EXTERNAL;
    pthread_mutex_lock(&sy_shared_mu);
    if (s->route->tls_ctx[w] == NULL) {
        const conf_target_t *t = s->target;
        s->route->tls_ctx[w] = sy_tls_client_ctx(t->tls_ca_file, t->tls_cert, t->tls_key,
                                                 t->tls_insecure_skip_verify, err, errlen);
    }
    SSL_CTX *ctx = s->route->tls_ctx[w];
    pthread_mutex_unlock(&sy_shared_mu);
    return ctx;
}

static void rs_connected(redis_session_t *s)
{
    int one = 1;
    setsockopt(s->server.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (s->target->redis.tls) {
        char err[300];
        SSL_CTX *ctx = rs_tls_ctx(s, err, sizeof(err));
        if (ctx == NULL || sy_tls_attach(&s->server, ctx, 0, s->target->redis.host) != 0) {
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

static void rs_server_cb(sy_conn_t *c, int status, int events)
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
            SY_STAT_SUB(s->route->upstreams, 1);
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
        ((struct sockaddr_in *)a->ai_addr)->sin_port = htons(s->target->redis.port);
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno != EINPROGRESS) {
            snprintf(s->errmsg, sizeof(s->errmsg), "%s", strerror(errno));
            close(fd);
            continue;
        }
        sy_conn_init(&s->server, s->link.loop, fd, s);
        SY_STAT_ADD(s->route->upstreams, 1);
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

static void rs_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    redis_session_t *s = req->data;
    if (s->state != RS_CONNECTING) {
        uv_freeaddrinfo(res);
        rs_unref(s);
        return;
    }
    if (status != 0) {
        char cause[300];
        snprintf(cause, sizeof(cause), "cannot resolve %s: %s", s->target->redis.host, uv_strerror(status));
        rs_connect_failed(s, cause);
    } else {
        s->addrs = res;
        s->next_addr = res;
        rs_connect_next(s);
    }
    rs_unref(s);
}

static void rs_describe(const sy_session_link_t *l, char cols[][128])
{
    const redis_session_t *s = (const redis_session_t *)l;
    snprintf(cols[0], 128, "%llu", (unsigned long long)s->id);
    snprintf(cols[1], 128, "redis");
    snprintf(cols[2], 128, "%s", s->route ? s->route->conf->name : "");
    snprintf(cols[3], 128, "%s", s->target ? s->target->hostport : "");
    snprintf(cols[4], 128, "%s", rs_names[s->state]);
    snprintf(cols[5], 128, "pending=%llu multi=%d watch=%d subs=%llu blocked=%d monitor=%d resp3=%d",
             (unsigned long long)s->pending, s->in_multi, s->watching, (unsigned long long)s->sub_count,
             s->blocking, s->monitoring, s->resp3);
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
    s->state = RS_CONNECTING;
    s->client_db = -1;
    s->pre_fd = -1;
    s->link.describe = rs_describe;
    s->link.quiet = rs_link_quiet;
    s->link.prepare = rs_link_prepare;
    s->link.move = rs_link_move;
    s->link.kick = rs_link_kick;
    s->link.release = rs_link_release;
    sy_session_link(&s->link);
    SY_STAT_ADD(sy_server.nclients, 1);
    sy_conn_init(&s->client, s->link.loop, fd, s);
    sy_conn_init(&s->server, s->link.loop, -1, s);
    s->c2s = (sy_pipe_t){ .buf = s->bufs, .cap = SY_PIPE_BUF, .src = &s->client, .dst = &s->server,
                          .scan = rs_c2s_scan, .reading = 0 };
    s->s2c = (sy_pipe_t){ .buf = s->bufs + SY_PIPE_BUF, .cap = SY_PIPE_BUF, .src = &s->server,
                          .dst = &s->client, .scan = rs_s2c_scan, .reading = 0 };
    resp_req_init(&s->rq, sy_conf()->redis_max_bulk);
    resp_reply_init(&s->rp, 0);   /* redis_max_bulk limits what clients send, not replies */

    s->route = sy_route_for_listener(l);
    if (s->route == NULL) {   /* validation prevents this; close rather than guess */
        rs_set_state(s, RS_CLOSING);
        rs_destroy(s);
        return;
    }
    SY_STAT_ADD(s->route->clients, 1);
    s->which = sy_route_active(s->route);
    sy_session_set_route(&s->link, s->route);
    s->link.which = s->which;
    s->target = s->which == CONF_EXTERNAL ? &s->route->conf->external : &s->route->conf->builtin;
    s->link.target = s->target;
    s->password = s->route->conf->client_password ? s->route->conf->client_password : l->conf->auth_password;
    s->authed = s->password == NULL;
    if (!trusted && s->password == NULL) {
        rs_set_state(s, RS_FAILED);
        snprintf(s->errmsg, sizeof(s->errmsg), "connections from non-loopback addresses need a password");
        s->c2s.reading = 1;
        rs_failed_read(s);
        return;
    }
    rs_watch(s, &s->client, UV_READABLE, rs_client_cb);
    sy_debug("event=connect conn=%llu route=%s target=%s", (unsigned long long)s->id, s->route->conf->name,
             s->which == CONF_EXTERNAL ? "external" : "builtin");

    rs_timer_start(s, rs_connect_timeout_cb, (uint64_t)sy_conf()->connect_timeout * 1000);
    const char *host = s->target->redis.host;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    unsigned char tmp[16];
    if (inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1)
        hints.ai_flags = AI_NUMERICHOST;
    if (hints.ai_flags & AI_NUMERICHOST) {
        struct addrinfo *res = NULL;
        int r = getaddrinfo(host, NULL, &hints, &res);   /* numeric: no lookup, no blocking */
        s->gai.data = s;
        s->refs++;
        rs_gai_cb(&s->gai, r == 0 ? 0 : UV_EINVAL, r == 0 ? res : NULL);
        return;
    }
    s->gai.data = s;
    s->refs++;
    if (uv_getaddrinfo(s->link.loop, &s->gai, rs_gai_cb, host, NULL, &hints) != 0) {
        s->refs--;
        rs_connect_failed(s, "cannot resolve");
    }
}

const sy_proto_t redis_proto = { "redis", redis_session_start };
