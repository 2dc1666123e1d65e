/*
 * redis_large.c - commands bigger than the client pipe's buffer, and a client that leaves
 * while the session is not reading it.
 *
 * The request scan keeps a command at c2s.fwd until its name says where it goes. One that
 * fills half the buffer while still arriving cannot wait there whole, so it is decided
 * then (rs_c2s_scan calls rs_large_drop or moves fwd):
 *
 *   goes upstream (SET, an unknown name, SUBSCRIBE, HELLO without AUTH, ...)
 *       ──▶ streamed as it arrives; a subscription too big to record pins the session
 *   answered here (AUTH, HELLO ... AUTH, anything before a required AUTH; any command
 *   of a FAILED session)
 *       ──▶ swallowed: its bytes are dropped as they come (zeroed: a password may be in
 *           them) and the scanner's captures and counts answer it when it is complete
 *
 * So any size Redis accepts (up to redis_max_bulk) gets an answer, with nothing buffered
 * beyond the pipe. A swallowed AUTH is judged by its captured arguments (AUTH has at most
 * three, and a password over RESP_CAP_LEN bytes never matches a shorter one); a swallowed
 * HELLO ... AUTH by its first half buffer, split before it is dropped.
 */
#include "proxy/redis/redis_internal.h"

static const char wrongpass[] = "WRONGPASS invalid username-password pair or user is disabled.";

static int large_password_ok(const redis_session_t *s, const char *pw, size_t len)
{
    return s->password == NULL || sy_secret_equal(s->password, pw, len);
}

/* HELLO <proto> [AUTH user pw] [SETNAME name], from its first arguments: 1 the password
 * is right (or none is asked), 0 wrong, -1 cannot tell (an argument before it is huge). */
static int large_hello_verdict(const redis_session_t *s, const uint8_t *buf, size_t len)
{
    resp_arg_t argv[16];
    long long argc, next;
    int n = resp_cmd_split_head(buf, len, argv, 16, &argc, &next);
    for (int j = 2; j < n; j++) {
        if (argv[j].len == 7 && strncasecmp(argv[j].ptr, "SETNAME", 7) == 0) {
            j++;
            continue;
        }
        if (argv[j].len != 4 || strncasecmp(argv[j].ptr, "AUTH", 4) != 0)
            return -1;
        if (j + 2 < n)
            return large_password_ok(s, argv[j + 2].ptr, argv[j + 2].len);
        if (s->password == NULL)
            return 1;
        if (j + 2 == n && next >= 0 && (size_t)next != strlen(s->password))
            return 0;
        return -1;
    }
    return -1;
}

void rs_large_drop(redis_session_t *s, sy_pipe_t *p)
{
    uint32_t n = p->scanned - p->fwd;
    if (!s->swallow) {
        s->swallow = 1;
        s->swallow_hello = resp_cmd_classify(&s->rq).id == RESP_CMD_HELLO
                               ? large_hello_verdict(s, p->buf + p->fwd, n) : -1;
    }
    memset(p->buf + p->fwd, 0, n);
    memmove(p->buf + p->fwd, p->buf + p->scanned, p->end - p->scanned);
    p->end -= n;
    p->scanned = p->fwd;
}

void rs_large_stream(redis_session_t *s, sy_pipe_t *p, const resp_cmd_t *cmd)
{
    if (cmd->flags & (RESP_CF_SUBSCRIBE | RESP_CF_UNSUBSCRIBE)) {
        s->subs_untracked = 1;   /* its names cannot be recorded for a move */
        sy_session_set_pinned(&s->link, 1);
    }
    p->fwd = p->scanned;
}

size_t rs_large_answer(redis_session_t *s, local_t what, uint8_t *out, size_t cap)
{
    const resp_req_t *r = &s->rq;
    if (what == LOCAL_HELLO) {
        if (s->swallow_hello == 0)
            return resp_build_error(out, cap, wrongpass);
        return resp_build_error(out, cap, "ERR switchyard: HELLO with AUTH longer than 32 KiB is not supported");
    }
    /* LOCAL_AUTH: AUTH [user] password, all captured (RESP_CAP_ARGS > 3) */
    if (r->argc < 2 || r->argc > 3)
        return resp_build_error(out, cap, "ERR wrong number of arguments for 'auth' command");
    uint32_t i = r->argc - 1;
    if (r->arg_trunc[i] ? s->password != NULL : !large_password_ok(s, r->arg[i], r->arg_len[i]))
        return resp_build_error(out, cap, wrongpass);
    s->authed = 1;
    if (s->in_multi) {
        memcpy(out, "+QUEUED\r\n", 9);
        return 9;
    }
    memcpy(out, "+OK\r\n", 5);
    return 5;
}

/* The client shut its side (UV_DISCONNECT) while the session was not reading it. Redis
 * reads on, meets the end and frees the client; here the bytes before the end wait behind
 * a held command or back-pressure, and what is owed will come. So close now only when
 * nothing finite is owed: a blocked, subscribed or monitoring client, or one owed nothing
 * (a switch's hold excepted: it ends by its deadline). Returns 1 when it closed. */
int rs_large_client_left(redis_session_t *s)
{
    s->client_fin = 1;   /* the watch asks for it no more: it would fire again at once */
    if (s->blocking || s->sub_count > 0 || s->monitoring ||
        (s->pending == 0 && !sy_pipe_pending(&s->s2c) && s->link.state != SY_CLIENT_HELD)) {
        sy_debug("event=client_left conn=%llu pending=%llu", (unsigned long long)s->id,
                 (unsigned long long)s->pending);
        rs_close(s, NULL);
        return 1;
    }
    return 0;
}
