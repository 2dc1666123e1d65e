/*
 * redis_acl.c - the client's own ACL user.
 *
 * When switchyard checks no password of its own for the session (no client_password on
 * the route, no auth_password on the listener), the two-argument AUTH <user> <pw> and
 * HELLO ... AUTH <user> <pw> go to the upstream, and the server's answer is the client's
 * (WRONGPASS included). The one-argument AUTH <pw> and a configured password keep their
 * local meaning (redis_client.c). Such a client is pinned first (its upstream then has an
 * identity of its own).
 *
 * The credentials are kept for a move: each forwarded AUTH waits here with the sequence
 * number of its reply, and becomes the session's identity when that reply is not an
 * error. A move replays AUTH <user> <pw> on the new target before anything else
 * (redis_move.c); a replay the new target refuses closes the session with -ERR saying so.
 * RESET forgets the identity, as Redis returns to the default user; where the endpoint
 * has a password or a db, its own AUTH/SELECT follow the RESET upstream and their replies
 * are cut out, so the client is back where a new connection starts. The passwords are
 * wiped when replaced or freed, and never logged.
 */
#include "proxy/redis/redis_internal.h"

#define RS_ACL_PEND 4      /* forwarded AUTHs awaiting their replies; more: unsure */

typedef struct acl_cred_s {
    uint64_t seq;          /* the reply that confirms it */
    char    *user, *pw;
    size_t   ulen, pwlen;
} acl_cred_t;

struct rs_acl_s {
    acl_cred_t cur;        /* the identity a move replays; user NULL: none */
    acl_cred_t pend[RS_ACL_PEND];
    int        npend;
    int        unsure;     /* an AUTH that could not be recorded: the session cannot move */
    /* after a RESET: the endpoint's own AUTH/SELECT, whose replies the client must not see
     * (n of them right after reply number seq) */
    struct { uint64_t seq; int n; } hide[RS_ACL_PEND];
    int        nhide;
};

static void cred_wipe(acl_cred_t *c)
{
    if (c->user != NULL) {
        explicit_bzero(c->user, c->ulen);
        free(c->user);
    }
    if (c->pw != NULL) {
        explicit_bzero(c->pw, c->pwlen);
        free(c->pw);
    }
    memset(c, 0, sizeof(*c));
}

static char *dup_bytes(const char *p, size_t n)
{
    char *c = malloc(n + 1);
    if (c != NULL) {
        memcpy(c, p, n);
        c[n] = '\0';
    }
    return c;
}

int rs_acl_forwards(const redis_session_t *s)
{
    return s->password == NULL;
}

static rs_acl_t *acl_of(redis_session_t *s)
{
    if (s->acl == NULL)
        s->acl = calloc(1, sizeof(*s->acl));
    return s->acl;
}

void rs_acl_sent(redis_session_t *s, uint64_t seq, const char *user, size_t ulen, const char *pw, size_t pwlen)
{
    rs_acl_t *a = acl_of(s);
    if (a == NULL) {
        s->subs_untracked = 1;   /* out of memory: the session cannot move */
        return;
    }
    acl_cred_t c = { seq, dup_bytes(user, ulen), dup_bytes(pw, pwlen), ulen, pwlen };
    if (c.user == NULL || c.pw == NULL || (seq != 0 && a->npend == RS_ACL_PEND)) {
        cred_wipe(&c);
        a->unsure = 1;
        return;
    }
    if (seq == 0) {   /* no reply to wait for (CLIENT REPLY OFF/SKIP): taken as it is */
        cred_wipe(&a->cur);
        a->cur = c;
        return;
    }
    a->pend[a->npend++] = c;
}

void rs_acl_sent_cmd(redis_session_t *s, uint64_t seq, const uint8_t *cmd, size_t len)
{
    const resp_req_t *r = &s->rq;
    if (r->inline_cmd) {
        if (r->ncap < 3 || r->arg_trunc[1] || r->arg_trunc[2]) {
            if (acl_of(s) != NULL)
                s->acl->unsure = 1;
            return;
        }
        rs_acl_sent(s, seq, r->arg[1], r->arg_len[1], r->arg[2], r->arg_len[2]);
        return;
    }
    resp_arg_t argv[3];
    if (resp_cmd_split(cmd, len, argv, 3) != 3) {
        if (acl_of(s) != NULL)
            s->acl->unsure = 1;
        return;
    }
    rs_acl_sent(s, seq, argv[1].ptr, argv[1].len, argv[2].ptr, argv[2].len);
}

void rs_acl_seen(redis_session_t *s, int ok)
{
    rs_acl_t *a = s->acl;
    if (a == NULL)
        return;
    while (a->npend > 0 && a->pend[0].seq <= s->seen_seq) {
        if (a->pend[0].seq == s->seen_seq && ok) {
            cred_wipe(&a->cur);
            a->cur = a->pend[0];
        } else {
            cred_wipe(&a->pend[0]);
        }
        a->npend--;
        memmove(&a->pend[0], &a->pend[1], (size_t)a->npend * sizeof(a->pend[0]));
        memset(&a->pend[a->npend], 0, sizeof(a->pend[0]));
    }
}

void rs_acl_reset(redis_session_t *s)
{
    rs_acl_t *a = s->acl;
    if (a == NULL)
        return;
    cred_wipe(&a->cur);
    for (int i = 0; i < a->npend; i++)
        cred_wipe(&a->pend[i]);
    a->npend = 0;
    a->unsure = 0;
}

/*
 * RESET went upstream (p->fwd is just past it): Redis made the connection the default
 * user, unauthenticated where that user has a password, in db 0. The endpoint's own
 * AUTH and SELECT follow it, as on a new connection, and their replies are cut out of
 * what the client reads (rs_acl_hidden_scan). Returns 0, or -1 when the session closed.
 */
int rs_acl_after_reset(redis_session_t *s, sy_pipe_t *p)
{
    uint8_t cmds[1200];
    int n;
    if (s->srv == NULL)
        return 0;
    size_t len = rs_setup_cmds(&s->srv->link.target->redis, cmds, sizeof(cmds), &n);
    if (len == 0)
        return 0;
    rs_acl_t *a = acl_of(s);
    if (a == NULL || a->nhide == RS_ACL_PEND || sy_pipe_space(p) < len) {
        explicit_bzero(cmds, sizeof(cmds));
        rs_close(s, "route %s: RESET: too many commands pipelined behind it", s->link.route->conf->name);
        return -1;
    }
    memmove(p->buf + p->fwd + len, p->buf + p->fwd, p->end - p->fwd);
    memcpy(p->buf + p->fwd, cmds, len);
    explicit_bzero(cmds, sizeof(cmds));
    p->fwd += (uint32_t)len;
    p->scanned += (uint32_t)len;
    p->end += (uint32_t)len;
    a->hide[a->nhide].seq = s->owed_seq;   /* RESET's own reply */
    a->hide[a->nhide].n = n;
    a->nhide++;
    return 0;
}

int rs_acl_busy(const redis_session_t *s)
{
    return s->acl != NULL && s->acl->nhide > 0;
}

int rs_acl_hides(const redis_session_t *s)
{
    return s->acl != NULL && s->acl->nhide > 0 && s->acl->hide[0].seq == s->seen_seq;
}

/* The reply at p->scanned answers the endpoint's AUTH/SELECT after a RESET: scan it and
 * cut it out of the pipe. Returns 0, or -1 when the session closed (the server refused). */
int rs_acl_hidden_scan(redis_session_t *s, sy_pipe_t *p)
{
    rs_acl_t *a = s->acl;
    int done = 0;
    ssize_t n = resp_reply_scan(&s->rp, p->buf + p->scanned, p->end - p->scanned, &done);
    if (n < 0) {
        rs_close(s, "route %s: protocol error from %s: %s", s->link.route->conf->name, rs_upstream_name(s), s->rp.err);
        return -1;
    }
    memmove(p->buf + p->scanned, p->buf + p->scanned + n, p->end - p->scanned - (uint32_t)n);
    p->end -= (uint32_t)n;
    if (!done)
        return 0;
    if (s->rp.type == '-' || s->rp.type == '!') {
        char q[RESP_CAP_LEN + 1];
        snprintf(q, sizeof(q), "%s", s->rp.first);
        rs_close(s, "route %s: %s refused switchyard's AUTH/SELECT after RESET: %s", s->link.route->conf->name,
                 rs_upstream_name(s), q);
        return -1;
    }
    if (--a->hide[0].n == 0) {
        a->nhide--;
        memmove(&a->hide[0], &a->hide[1], (size_t)a->nhide * sizeof(a->hide[0]));
    }
    return 0;
}

void rs_acl_free(redis_session_t *s)
{
    rs_acl_t *a = s->acl;
    if (a == NULL)
        return;
    cred_wipe(&a->cur);
    for (int i = 0; i < a->npend; i++)
        cred_wipe(&a->pend[i]);
    free(a);
    s->acl = NULL;
}

int rs_acl_unsure(const redis_session_t *s)
{
    return s->acl != NULL && s->acl->unsure;
}

const char *rs_acl_user(const redis_session_t *s)
{
    return s->acl != NULL ? s->acl->cur.user : NULL;
}

uint8_t *rs_acl_auth_cmd(const redis_session_t *s, size_t *len)
{
    const acl_cred_t *c = s->acl != NULL ? &s->acl->cur : NULL;
    *len = 0;
    if (c == NULL || c->user == NULL)
        return NULL;
    size_t cap = c->ulen + c->pwlen + 64;
    uint8_t *out = malloc(cap);
    if (out == NULL)
        return NULL;
    resp_arg_t a[3] = { { "AUTH", 4 }, { c->user, c->ulen }, { c->pw, c->pwlen } };
    *len = resp_cmd_build(out, cap, 3, a);
    return out;
}

void rs_acl_wipe_buf(uint8_t *buf, size_t len)
{
    if (buf != NULL) {
        explicit_bzero(buf, len);
        free(buf);
    }
}
