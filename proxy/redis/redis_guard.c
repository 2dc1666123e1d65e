/*
 * redis_guard.c - the target's secrets stay switchyard's (redis_guard_config, on by default).
 *
 *   CONFIG GET ... ──▶ its reply (or, queued in MULTI, EXEC's) is marked by its number;
 *                      the reply is held at s2c.fwd until complete, then the values of
 *                      requirepass and masterauth are masked (protocol/resp_mask.h) -
 *                      when the target the session is on has a password: otherwise there
 *                      is nothing of switchyard's to hide, and the reply passes as sent
 *   CONFIG SET requirepass|masterauth ..., ACL SETUSER / ACL DELUSER of the user switchyard
 *   logs in as (the endpoint's user, `default` when it names none)
 *                  ──▶ answered here with -ERR switchyard: ..., never sent (a command too
 *                      big to check whole is refused too)
 *
 * A masked reply bigger than half the pipe cannot be held whole: the session closes rather
 * than relay it unmasked.
 */
#include "proxy/redis/redis_internal.h"

static const char *const secret_names[] = { "requirepass", "masterauth", NULL };
#define GUARD_MASK "(hidden by switchyard)"

static int guard_on(const redis_session_t *s)
{
    return s->link.route != NULL && s->link.route->conf->guard_config;
}

static const conf_target_t *guard_target(const redis_session_t *s)
{
    return s->link.server != NULL ? s->link.server->target : NULL;
}

/* The user switchyard logs in to the session's target as. */
static const char *guard_user(const redis_session_t *s)
{
    const conf_target_t *t = guard_target(s);
    return t != NULL && t->redis.has_user && t->redis.user[0] ? t->redis.user : "default";
}

static int guarded_sub(const resp_cmd_t *cmd)
{
    return cmd->sub == RESP_SUBCMD_CONFIG_SET || cmd->sub == RESP_SUBCMD_ACL_SETUSER ||
           cmd->sub == RESP_SUBCMD_ACL_DELUSER;
}

int rs_guard_partial(const redis_session_t *s, const resp_cmd_t *cmd)
{
    return guard_on(s) && guarded_sub(cmd);
}

/* Is argument i (of argv) what the guarded command must not touch? */
static int guard_hit(const redis_session_t *s, const resp_cmd_t *cmd, const resp_arg_t *a, int i)
{
    if (cmd->sub == RESP_SUBCMD_CONFIG_SET) {
        if (i < 2 || (i % 2) != 0)
            return 0;
        for (const char *const *n = secret_names; *n; n++)
            if (a->len == strlen(*n) && strncasecmp(a->ptr, *n, a->len) == 0)
                return 1;
        return 0;
    }
    if (cmd->sub == RESP_SUBCMD_ACL_SETUSER && i != 2)
        return 0;
    const char *u = guard_user(s);   /* ACL user names are case-sensitive */
    return i >= 2 && a->len == strlen(u) && memcmp(a->ptr, u, a->len) == 0;
}

/* Why the complete command buf[0..len) (classified cmd) is refused, or NULL. */
static const char *guard_why(redis_session_t *s, const resp_cmd_t *cmd, const uint8_t *buf, size_t len)
{
    const char *what = NULL;
    if (!guard_on(s) || !guarded_sub(cmd))
        return NULL;
    if (s->swallow) {
        what = "is too long to check";
    } else {
        resp_arg_t stack[64], *argv = stack;
        int argc = -1;
        const resp_req_t *r = &s->rq;
        if (r->inline_cmd) {
            if (r->argc <= r->ncap) {
                argc = (int)r->ncap;
                for (int i = 0; i < argc; i++) {
                    if (r->arg_trunc[i])
                        argc = -1;
                    if (argc > 0)
                        stack[i] = (resp_arg_t){ r->arg[i], r->arg_len[i] };
                }
            }
        } else {
            if (r->argc > 64 && (argv = malloc(sizeof(resp_arg_t) * r->argc)) == NULL)
                argv = stack;
            else
                argc = resp_cmd_split(buf, len, argv, argv == stack ? 64 : (int)r->argc);
        }
        if (argc < 0) {
            what = "is too long to check";
        } else {
            for (int i = 2; i < argc && what == NULL; i++)
                if (guard_hit(s, cmd, &argv[i], i))
                    what = cmd->sub == RESP_SUBCMD_CONFIG_SET ? "would change the password switchyard needs"
                                                              : "would change the user switchyard logs in as";
        }
        if (argv != stack)
            free(argv);
    }
    return what;
}

int rs_guard_refuses(redis_session_t *s, const resp_cmd_t *cmd, const uint8_t *buf, size_t len)
{
    return guard_why(s, cmd, buf, len) != NULL;
}

size_t rs_guard_answer(redis_session_t *s, const resp_cmd_t *cmd, const uint8_t *buf, size_t len,
                       uint8_t *out, size_t cap)
{
    char msg[600];
    const char *what = guard_why(s, cmd, buf, len);
    if (what == NULL)
        return 0;
    snprintf(msg, sizeof(msg), "ERR switchyard: %s %s %s; route %s guards its target (redis_guard_config = on)",
             resp_cmd_name(resp_subcmd_parent(cmd->sub)), resp_subcmd_name(cmd->sub), what,
             s->link.route->conf->name);
    sy_info("event=guard_refused conn=%llu route=%s command=\"%s %s\"", (unsigned long long)s->id,
            s->link.route->conf->name, resp_cmd_name(resp_subcmd_parent(cmd->sub)), resp_subcmd_name(cmd->sub));
    return resp_build_error(out, cap, msg);
}

/* ---- masking ------------------------------------------------------------------------- */

static void guard_mark(redis_session_t *s, uint64_t seq, int depth)
{
    if (s->nmasks == RS_MAX_MASKS ||
        (s->masks == NULL && (s->masks = malloc(RS_MAX_MASKS * sizeof(*s->masks))) == NULL)) {
        s->mask_all_until = seq;   /* full (or out of memory): every reply up to it is looked at */
        return;
    }
    s->masks[s->nmasks].seq = seq;
    s->masks[s->nmasks].depth = depth;
    s->nmasks++;
}

void rs_guard_track(redis_session_t *s, const resp_cmd_t *cmd, uint64_t seq_before)
{
    if (cmd->id == RESP_CMD_DISCARD || cmd->id == RESP_CMD_RESET) {
        s->mask_exec = 0;
        return;
    }
    if (cmd->id == RESP_CMD_EXEC) {
        if (s->mask_exec && s->owed_seq > seq_before)
            guard_mark(s, s->owed_seq, 1);   /* the CONFIG GET's reply is one level down */
        s->mask_exec = 0;
        return;
    }
    if (cmd->sub != RESP_SUBCMD_CONFIG_GET || !guard_on(s))
        return;
    const conf_target_t *t = guard_target(s);
    if (t == NULL || !t->redis.has_password || !t->redis.password[0])
        return;   /* no secret of switchyard's on this target */
    if (s->in_multi)
        s->mask_exec = 1;
    else if (s->owed_seq > seq_before)
        guard_mark(s, s->owed_seq, 0);
}

/* The mark of reply number seq, removed; -1 when it is not to be masked. */
static int guard_take(redis_session_t *s, uint64_t seq)
{
    int depth = -1;
    while (s->nmasks > 0 && s->masks[0].seq <= seq) {
        if (s->masks[0].seq == seq)
            depth = s->masks[0].depth;
        s->nmasks--;
        memmove(&s->masks[0], &s->masks[1], (size_t)s->nmasks * sizeof(s->masks[0]));
        if (s->nmasks == 0) {   /* allocated with the first, freed with the last */
            free(s->masks);
            s->masks = NULL;
        }
    }
    if (depth < 0 && seq <= s->mask_all_until)
        depth = 0;
    return depth;
}

static int guard_next_masked(const redis_session_t *s)
{
    uint64_t next = s->seen_seq + 1;
    return (s->nmasks > 0 && s->masks[0].seq == next) || next <= s->mask_all_until;
}

int rs_guard_reply(redis_session_t *s, sy_pipe_t *p)
{
    int depth = guard_take(s, s->seen_seq + 1);
    if (depth < 0)
        return 0;
    uint32_t len = (uint32_t)s->rp.reply_bytes, at = p->scanned - len;
    size_t cap = (size_t)len * 2 + 256;
    uint8_t *tmp = malloc(cap);
    int masked = 0;
    ssize_t n = tmp != NULL ? resp_mask_pairs(p->buf + at, len, depth, secret_names, GUARD_MASK, tmp, cap, &masked) : 0;
    if (n < 0 || (n == 0 && len > 0) || (masked > 0 && p->end - len + (size_t)n > p->cap)) {
        free(tmp);
        rs_close(s, "route %s: a CONFIG GET reply could not be masked", s->link.route->conf->name);
        return -1;
    }
    if (masked > 0) {
        memmove(p->buf + at + n, p->buf + at + len, p->end - p->scanned);
        memcpy(p->buf + at, tmp, (size_t)n);
        p->end = p->end - len + (uint32_t)n;
        p->scanned = at + (uint32_t)n;
    }
    free(tmp);
    return 0;
}

int rs_guard_hold(redis_session_t *s, sy_pipe_t *p)
{
    if (resp_reply_at_boundary(&s->rp) || !guard_next_masked(s))
        return 0;
    if (s->rp.bytes_in_reply >= p->cap / 2) {
        rs_close(s, "route %s: a CONFIG GET reply too big to mask", s->link.route->conf->name);
        return -1;
    }
    p->fwd = p->scanned - (uint32_t)s->rp.bytes_in_reply;   /* held until it is whole */
    return 0;
}
