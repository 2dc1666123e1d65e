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
 * RESET forgets the identity, as Redis returns to the default user. The passwords are
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
    rs_acl_free(s);
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
