/*
 * redis_client.c - a Redis client's side of a session: the request scan (what each command
 * owes, what switchyard answers itself, what a move must replay, subscriptions) and the
 * reply scan that counts what was answered. Commands are looked up once in the command
 * table (protocol/resp_cmdtab.h).
 */
#include "proxy/redis/redis_internal.h"

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
    if (cmd->id == RESP_CMD_QUIT && s->mux != NULL)
        return LOCAL_QUIT;
    if (cmd->id == RESP_CMD_AUTH)
        return r->argc != 2 && rs_acl_forwards(s) ? LOCAL_NONE : LOCAL_AUTH;   /* but AUTH <pw>: upstream */
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
    if (s->mux != NULL)
        s->mux_unsent += replies;
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
        size_t n = s->subs != NULL ? s->subs[kind].n : 0;
        replies = r->argc > 1 ? r->argc - 1 : (n ? n : 1);
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
    } else if (cmd->id == RESP_CMD_REPLCONF && r->argc % 2 == 1 && !s->in_multi &&
               (resp_req_arg_is(r, 1, "ACK") || resp_req_arg_is(r, 1, "GETACK"))) {
        replies = 0;   /* Redis never answers these (a replica's offset, a master's ask) */
    } else if (cmd->id == RESP_CMD_RESET) {
        s->in_multi = s->watching = s->monitoring = 0;
        s->reply_off = s->reply_skip = 0;
        s->sub_count = 0;
        s->resp3 = 0;
        s->client_db = -1;
        rs_set_client_name(s, NULL);
        s->neffects = 0;
        free(s->effects);
        s->effects = NULL;
        s->tracking = 0;
        rs_acl_reset(s);
        if (s->subs != NULL)
            for (int i = 0; i < 3; i++)
                rs_sub_clear(&s->subs[i]);
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
    } else if (cmd->sub == RESP_SUBCMD_CLIENT_NO_EVICT && r->argc == 3) {
        if (resp_req_arg_is(r, 2, "ON"))
            s->no_evict = 1;
        else if (resp_req_arg_is(r, 2, "OFF"))
            s->no_evict = 0;   /* anything else is the server's syntax error, and no change */
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
static void rs_effect_now(redis_session_t *s, int db, const char *name)
{
    if (db >= 0)
        s->client_db = db;
    else if (rs_set_client_name(s, name) != 0)
        s->subs_untracked = 1;   /* out of memory: a name it cannot replay */
}

/* The effects wait in an array allocated with the first one and freed with the last. */
static void rs_effect(redis_session_t *s, int has_reply, int db, const char *name)
{
    if (!has_reply || s->neffects == RS_MAX_EFFECTS) {
        rs_effect_now(s, db, name);
        return;
    }
    if (s->effects == NULL && (s->effects = malloc(RS_MAX_EFFECTS * sizeof(*s->effects))) == NULL) {
        s->subs_untracked = 1;   /* out of memory: cannot follow it, so cannot move */
        return;
    }
    int i = s->neffects++;
    s->effects[i].seq = s->owed_seq;
    s->effects[i].db = db;
    snprintf(s->effects[i].name, sizeof(s->effects[i].name), "%s", name ? name : "");
}

/* Reply number seen_seq arrived; ok is 0 for an error reply. */
void rs_reply_seen(redis_session_t *s, int ok)
{
    s->seen_seq++;
    rs_acl_seen(s, ok);
    while (s->neffects > 0 && s->effects[0].seq <= s->seen_seq) {
        if (s->effects[0].seq == s->seen_seq && ok)
            rs_effect_now(s, s->effects[0].db, s->effects[0].name);
        rs_effects_drop_first(s);
    }
}

void rs_effects_drop_first(redis_session_t *s)
{
    s->neffects--;
    memmove(&s->effects[0], &s->effects[1], (size_t)s->neffects * sizeof(s->effects[0]));
    if (s->neffects == 0) {
        free(s->effects);
        s->effects = NULL;
    }
}

static int check_password(redis_session_t *s, const char *pw, size_t len)
{
    if (s->password == NULL)
        return 1;
    return sy_secret_equal(s->password, pw, len);
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
    if (what == LOCAL_QUIT) {
        if (!s->reply_off)
            sy_pipe_inject(&s->s2c, "+OK\r\n", 5);
        rs_close(s, NULL);
        return -1;
    }
    if (what == LOCAL_PROTO_ERR) {
        char msg[300];
        snprintf(msg, sizeof(msg), "ERR %s", s->proto_err ? s->proto_err : "Protocol error");
        if (s->link.route) {
            SY_STAT_ADD(s->link.route->nerrors, 1);
            SY_STAT_ADD(s->link.route->err_protocol, 1);
        }
        rs_reply_error(s, msg);
        s->linger = 1;   /* the rest of what it sends is read and dropped, not reset */
        rs_close(s, NULL);
        return -1;
    }
    if (what == LOCAL_GUARD) {
        resp_cmd_t c = resp_cmd_classify(&s->rq);
        olen = rs_guard_answer(s, &c, cmd, clen, out, sizeof(out));
    } else if (s->swallow && (what == LOCAL_AUTH || what == LOCAL_HELLO)) {
        olen = rs_large_answer(s, what, out, sizeof(out));
    }
    s->swallow = 0;
    if (olen > 0) {
        /* a swallowed command's answer: nothing of it is left to rewrite */
    } else if (what == LOCAL_NOAUTH) {
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
            int nkeep = 0, ok = 1, auth_at = -1;
            for (int i = 0; i < argc; i++) {
                if (i > 0 && argv[i].len == 4 && strncasecmp(argv[i].ptr, "AUTH", 4) == 0) {
                    if (i + 2 >= argc) {
                        ok = -1;
                        break;
                    }
                    if (rs_acl_forwards(s)) {   /* the server checks it: AUTH stays */
                        auth_at = nkeep + 1;
                        keep[nkeep++] = argv[i];
                        keep[nkeep++] = argv[i + 1];
                        keep[nkeep++] = argv[i + 2];
                        i += 2;
                        continue;
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
                    if (auth_at > 0)   /* before cmd is rewritten: keep[] points into it */
                        rs_acl_sent(s, s->owed_seq + 1, keep[auth_at].ptr, keep[auth_at].len, keep[auth_at + 1].ptr,
                                    keep[auth_at + 1].len);
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

/* A command still arriving fills half the buffer: 1 when switchyard answers it whatever
 * its bytes (the connect error of a FAILED session, AUTH, HELLO ... AUTH, a command before
 * a required AUTH), so they can be dropped as they come; 0 when it goes upstream. */
static int large_swallowed(redis_session_t *s, const resp_cmd_t *cmd)
{
    if (s->state == RS_FAILED)
        return 1;
    return s->state == RS_RELAY && (classify_local(s, cmd) != LOCAL_NONE || rs_guard_partial(s, cmd));
}

static int c2s_try_local(redis_session_t *s)
{
    if (s->held == LOCAL_NONE)
        return 0;
    if (s->pending > 0 || !rs_s2c_at_boundary(s))
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
    sub_set_t *subs = rs_subs(s);
    if (subs == NULL) {
        s->subs_untracked = 1;   /* out of memory */
        return;
    }
    if (unsub && r->argc == 1) {
        rs_sub_clear(&subs[kind]);
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
                rs_sub_del(&subs[kind], argv[i].ptr, argv[i].len);
            else if (rs_sub_add(&subs[kind], argv[i].ptr, argv[i].len) != 0)
                s->subs_untracked = 1;
        }
    }
    if (argv != stack)
        free(argv);
}

/* No reply owed and nothing half-done: the next command can go to another server. */
int rs_idle(const redis_session_t *s)
{
    return s->state == RS_RELAY && s->pending == 0 && !s->in_multi && !s->watching && !s->blocking &&
           !s->monitoring && s->held == LOCAL_NONE && resp_req_at_boundary(&s->rq) &&
           resp_reply_at_boundary(&s->rp) && s->s2c.scanned == s->s2c.end &&
           s->repl == NULL && !rs_acl_busy(s);   /* a replica never is; nor is a RESET's setup in flight */
}

int rs_c2s_scan(void *arg, sy_pipe_t *p)
{
    redis_session_t *s = arg;
    if (s->state != RS_RELAY && s->state != RS_FAILED)
        return 0;
    if (s->repl != NULL)
        return rs_repl_c2s_scan(s, p);
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
            sy_session_set_state(&s->link, SY_CLIENT_HELD);
            p->reading = 0;
            p->fwd = p->scanned;
            sy_switch_poke(s->link.route);
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
            /* Too big to wait for whole at fwd: answered here, or streamed (redis_large.c). */
            int large = p->end - p->fwd >= p->cap / 2;
            if (s->swallow || (large && large_swallowed(s, &cmd))) {
                rs_large_drop(s, p);
                continue;
            }
            /* Multiplexed: only whole commands go to the shared upstream; one too big to
             * wait for whole in the pipe gets an upstream of its own to stream to. */
            if (s->mux != NULL) {
                if (p->end - p->fwd >= p->cap / 2 && s->state == RS_RELAY) {
                    rs_mux_pin(s);
                    return 0;
                }
                continue;
            }
            /* Partial command: stream it only if its name is known and not ours. */
            if (s->rq.ncap >= 1 && !(cmd.flags & RESP_CF_LOCAL) && !is_sub_cmd(&cmd) && s->authed &&
                s->state == RS_RELAY)
                p->fwd = p->scanned;
            else if (large && s->state == RS_RELAY)
                rs_large_stream(s, p, &cmd);
            continue;
        }
        if (s->state == RS_FAILED) {
            /* The first command gets the connect error; nothing goes upstream. */
            if (s->rq.argc == 0)
                continue;
            rs_close(s, "%s", rs_errmsg(s));
            return -1;
        }
        if (s->rq.argc == 0) {
            p->fwd = p->scanned;
            continue;
        }
        /* Streamed upstream already (fwd passed its start): it is the server's to answer. */
        int streamed = !s->swallow && p->scanned - p->fwd < s->rq.cmd_bytes;
        local_t l = streamed ? LOCAL_NONE : classify_local(s, &cmd);
        if (l == LOCAL_NONE && !streamed && rs_guard_refuses(s, &cmd, p->buf + p->fwd, p->scanned - p->fwd))
            l = LOCAL_GUARD;
        if (s->swallow && l == LOCAL_NONE)
            l = LOCAL_NOAUTH;   /* swallowed as one, still one (nothing reclassifies it) */
        if (s->mux != NULL && !s->swallow && (l == LOCAL_NONE || l == LOCAL_HELLO) &&
            (resp_cmd_pins(&cmd, &s->rq, rs_mux_shared_db(s)) || cmd.id == RESP_CMD_AUTH)) {
            rs_mux_pin(s);   /* it waits here for its own upstream */
            return 0;
        }
        if (l != LOCAL_NONE) {
            s->held = l;
            continue;
        }
        if ((cmd.id == RESP_CMD_SYNC || cmd.id == RESP_CMD_PSYNC) && s->mux == NULL && !s->in_multi) {
            p->fwd = p->scanned;
            return rs_repl_begin(s, cmd.id == RESP_CMD_PSYNC);
        }
        uint64_t seq_before = s->owed_seq;
        track_command(s, &cmd);
        rs_guard_track(s, &cmd, seq_before);
        if (cmd.sub == RESP_SUBCMD_CLIENT_KILL && s->owed_seq > seq_before)
            s->kill_seq = s->owed_seq;   /* a close right after it may be the client's own doing */
        if (cmd.id == RESP_CMD_AUTH && s->rq.argc == 3)   /* forwarded: an ACL user, once the server says OK;
                                                          * one streamed is not whole here: not recorded */
            rs_acl_sent_cmd(s, s->owed_seq > seq_before ? s->owed_seq : 0, p->buf + p->fwd,
                            streamed ? 0 : p->scanned - p->fwd);
        if (is_sub_cmd(&cmd))
            record_subscriptions(s, cmd.flags, p->buf + p->fwd, p->scanned - p->fwd);
        sy_session_set_pinned(&s->link, s->tracking || s->subs_untracked);
        p->fwd = p->scanned;
        if (cmd.id == RESP_CMD_RESET && rs_acl_after_reset(s, p) != 0)
            return -1;
        if (s->pending >= sy_conf()->redis_max_pipeline)
            p->reading = 0;   /* back-pressure: resume as replies drain */
    }
    return 0;
}

/* server -> client framing: count replies, recognise pushes. */
int rs_s2c_scan(void *arg, sy_pipe_t *p)
{
    redis_session_t *s = arg;
    uint64_t replies = 0;   /* added to the route's shared counter once per read */
    while (p->scanned < p->end) {
        if (s->repl != NULL && rs_repl_owns_s2c(s)) {
            if (rs_repl_s2c_scan(s, p) != 0)
                return -1;
            continue;
        }
        if (s->acl != NULL && rs_acl_hides(s)) {   /* the endpoint's AUTH/SELECT after a RESET */
            if (rs_acl_hidden_scan(s, p) != 0)
                return -1;
            continue;
        }
        int done = 0;
        ssize_t n = resp_reply_scan(&s->rp, p->buf + p->scanned, p->end - p->scanned, &done);
        if (n < 0) {
            p->fwd = p->scanned;
            sy_route_count_transactions(s->link.route, replies);
            SY_STAT_ADD(s->link.route->err_protocol, 1);
            rs_close(s, "route %s: protocol error from %s: %s", s->link.route->conf->name,
                     rs_upstream_name(s), s->rp.err);
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
        } else if (r->type == '*' && (s->sub_count > 0 || rs_subs_total(s) > 0) &&
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
            if (rs_guard_reply(s, p) != 0)
                return -1;
            replies++;
            s->pending--;
            rs_reply_seen(s, r->type != '-' && r->type != '!');
            if (s->pending == 0)
                s->blocking = 0;
        }
    }
    p->fwd = p->scanned;
    if (replies > 0)
        sy_route_count_transactions(s->link.route, replies);
    if (rs_guard_hold(s, p) != 0)
        return -1;
    /* Owed replies have passed: a held command can be answered now. */
    if (s->held != LOCAL_NONE && s->pending == 0 && s->state == RS_RELAY) {
        if (rs_c2s_scan(s, &s->c2s) != 0)
            return -1;
        if (s->held == LOCAL_NONE && s->link.state != SY_CLIENT_HELD) {
            s->c2s.reading = 1;
            if (sy_pipe_flush(&s->c2s) < 0) {
                rs_close(s, "route %s: connection to %s lost", s->link.route->conf->name,
                         rs_upstream_name(s));
                return -1;
            }
        }
    }
    if (!s->c2s.reading && s->held == LOCAL_NONE && s->pending < sy_conf()->redis_max_pipeline &&
        s->state == RS_RELAY && s->link.state != SY_CLIENT_HELD && !s->pin_wait)
        s->c2s.reading = 1;
    if (s->link.route && rs_idle(s))
        sy_switch_poke(s->link.route);
    return 0;
}

