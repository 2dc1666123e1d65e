/*
 * redis_internal.h - what the files of the Redis plugin share: the client connection
 * (redis_session_t, the session), the server connection (rs_server_t), their states and
 * the functions one part calls in another.
 *
 *   redis_session.c  the client's lifecycle (refs, state, the one close path), attaching a
 *                    server, the relay, the ops table
 *   redis_client.c   the client's commands: the request and reply scans, what is answered
 *                    locally, what a move must replay, subscriptions
 *   redis_server.c   the server connection: resolve, connect, TLS, AUTH/SELECT setup, its
 *                    one close path
 *   redis_move.c     switchover: prepare (a server dialed ahead), move (swap or replay),
 *                    the link hooks
 *   redis_mux.c      multiplexing: the upstream a worker's stateless clients of a route
 *                    share (rs_mux_t), the FIFO that matches its replies to them, pinning
 *   redis_replica.c  SYNC/PSYNC over a client connection: the payload, then a raw stream
 *   redis_acl.c      AUTH <user> <pw> forwarded: the identity a move replays
 *   redis_reconnect.c  reconnect_window: an upstream lost under a session is dialed again
 *                    (the move's replay for a session's own), with back-off
 *
 * A client relays to at most one server (srv) and may hold one more dialed ahead of a
 * move (pre). A server knows its client only through link.client, and may have none
 * (closing; later, idle), so nothing of the protocol state lives in it. A multiplexed
 * client has no srv: it writes to and is answered by its worker's shared upstream (mux,
 * redis_mux.c), which serves many clients and knows them only by its FIFO; its
 * link.server is the shared one's link, so a switch sees which target it is on.
 *
 * Nothing here is for other modules.
 */
#ifndef SY_REDIS_INTERNAL_H
#define SY_REDIS_INTERNAL_H

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
#include "protocol/resp_mask.h"
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
    LOCAL_PROTO_ERR,   /* malformed request: answer like Redis and close */
    LOCAL_QUIT,        /* QUIT of a multiplexed client: +OK and close (nothing to tell the
                        * shared upstream, no upstream of its own to open for it) */
    LOCAL_GUARD        /* a write that would lock switchyard out: refused (redis_guard.c) */
} local_t;

typedef enum { SETUP_NONE = 0, SETUP_AUTH, SETUP_SELECT } setup_t;

/* One upstream connection. Its own references: 1 while open, and one for each of a
 * resolve in flight, its timer's close, a dial job on the thread pool, a callback on the
 * stack; rs_server_close ends it, the last reference frees it. */
typedef struct rs_server_s {
    sy_server_link_t link;          /* first member: route, target, state list; link.client
                                     * the session it serves, NULL when none */
    uint64_t         id;            /* the client it was opened for (logs) */
    int              refs;
    int              closed;        /* rs_server_close ran: off the lists, socket gone */
    int              counted;       /* counted in the route's upstreams gauge */
    sy_conn_t        conn;
    /* connect */
    uv_getaddrinfo_t gai;
    struct addrinfo *addrs, *next_addr;
    uv_timer_t       timer;         /* the connect timeout */
    int              timer_on;
    int              setup_left;    /* -3 connecting, -2 TLS handshake, else setup replies
                                     * (AUTH/SELECT) still to swallow */
    char             errmsg[600];   /* the last address's connect error */
} rs_server_t;

/* reconnect_window's back-off (redis_reconnect.c): lost_at 0 while not reconnecting. */
typedef struct rs_backoff_s {
    uint64_t lost_at;               /* loop ms the upstream was lost */
    uint32_t delay_ms;              /* the last wait between attempts */
    uint32_t attempts;
} rs_backoff_t;

typedef struct rs_mux_s rs_mux_t;
/* A SELECT / CLIENT SETNAME waiting for the reply with its sequence number. */
#define RS_MAX_EFFECTS 8
typedef struct rs_effect_s {
    uint64_t seq;
    int      db;                    /* >= 0: a SELECT; -1: a SETNAME */
    char     name[RESP_CAP_LEN + 1];
} rs_effect_t;
/* A CONFIG GET reply to mask (redis_guard.c). */
#define RS_MAX_MASKS 8
typedef struct rs_mask_s {
    uint64_t seq;
    int      depth;                 /* 0: the reply itself; 1: inside EXEC's array */
} rs_mask_t;
typedef struct rs_repl_s rs_repl_t;   /* a replica's SYNC and stream (redis_replica.c) */
typedef struct rs_acl_s rs_acl_t;     /* the client's own ACL user (redis_acl.c) */
/* A multiplexed client that holds up its shared upstream this long (its replies unread) is
 * closed, so that it cannot stall the other clients for good. */
#define RS_MUX_STALL_MS 5000

typedef struct redis_session_s {
    sy_session_link_t link;         /* the client connection; first member */
    uint64_t       id;
    int            refs;
    rs_state_t     state;
    sy_listener_t *listener;
    /* route, target and which: in link, stored once */
    const char    *password;        /* what clients must AUTH with, NULL if nothing */

    sy_conn_t      client;
    rs_server_t   *srv;             /* the server it relays to (rs_attach), NULL when none */
    rs_server_t   *pre;             /* a server dialed ahead of a move, NULL when none */
    sy_conn_t      noserver;        /* what the pipes point at with no server: fd -1 */
    sy_pipe_t      c2s, s2c;        /* c2s.dst and s2c.src: srv's conn */
    resp_req_t     rq;
    resp_reply_t   rp;

    /* What an idle client does not need is allocated when it is (issue 9: an idle client
     * holds a couple of KB): the timer, the error text, pending SELECT/SETNAME effects,
     * the client's name, CONFIG GET masks, subscriptions. */
    uv_timer_t    *timer;           /* a failed or closing client's linger; NULL: none */
    char          *errmsg;          /* what FAILED answers the first command with (malloc'd,
                                     * NULL: none, or out of memory: rs_errmsg) */

    sy_activity_t  activity;        /* the last traffic either way (client_idle_timeout) */
    /* protocol state */
    uint64_t       pending;         /* replies the server still owes the client */
    uint64_t       sub_count;       /* channels + patterns + shard channels subscribed */
    uint64_t       owed_seq, seen_seq;  /* replies owed / seen since the start */
    int            client_db;       /* the client's own SELECT, -1 if none */
    /* SELECT / CLIENT SETNAME take effect only when the server says OK: each waits here
     * for the reply with its sequence number */
    int            neffects;
    rs_effect_t   *effects;         /* RS_MAX_EFFECTS of them while neffects > 0, else NULL */
    char          *client_name;     /* CLIENT SETNAME's (malloc'd), NULL: none */
    sub_set_t     *subs;            /* [3] (SUB_CHANNEL...) once it subscribed, else NULL */
    const char    *proto_err;
    local_t        held;            /* a complete command awaiting its local answer */
    /* Yes/no state, one byte each (0/1 unless said). */
    int8_t         authed;          /* client may send commands */
    int8_t         in_multi, watching, monitoring, blocking, quitting;
    int8_t         reply_off, reply_skip;
    int8_t         resp3;
    int8_t         tracking;        /* CLIENT TRACKING ON: cannot move */
    int8_t         no_evict;        /* CLIENT NO-EVICT ON (RESET keeps it): a move replays it */
    int8_t         subs_untracked;  /* a subscription we could not record: cannot move */
    int8_t         mux_route;       /* the route multiplexes: 1 shared or pinned */
    int8_t         mux_waiting;     /* on mux's list of clients waiting for queue space */
    int8_t         pin_wait;        /* a command that pins waits at c2s.fwd for in-flight
                                     * replies to come back before its own upstream opens */
    /* commands bigger than the pipe, a client gone while not read (redis_large.c) */
    int8_t         swallow;         /* the command at c2s.fwd is answered here: its bytes
                                     * are dropped as they come */
    int8_t         swallow_hello;   /* a swallowed HELLO's password: 1 right, 0 wrong, -1 unknown */
    int8_t         client_fin;      /* the client shut its side (seen while not reading it) */
    int8_t         linger;          /* 0 none, 1 to shut the write side, 2 draining (below) */
    int8_t         mask_exec;       /* a CONFIG GET is queued in the open MULTI */
    int8_t         rc_new;          /* it never relayed: its first connect is retried */
    /* multiplexing (redis_mux.c): while mux is set, c2s writes whole commands into the
     * shared upstream's queue (through muxconn) and the shared upstream delivers this
     * client's replies into s2c */
    rs_mux_t      *mux;             /* the shared upstream it uses, NULL when none */
    sy_conn_t      muxconn;         /* c2s.dst while mux is set: rs_mux_transport */
    uint64_t       mux_unsent;      /* replies owed by commands not yet in mux's queue */
    uint64_t       mux_inflight;    /* replies mux still owes this client */
    uint64_t       mux_stalled_at;  /* loop ms since its full s2c holds up the shared
                                     * upstream, 0 when it does not (RS_MUX_STALL_MS) */
    rs_repl_t     *repl;            /* SYNC/PSYNC sent: a replica, NULL when not */
    rs_acl_t      *acl;             /* an ACL user it authenticated as upstream, NULL: none */
    /* closing with errors: each owed reply gets errmsg as the pipe takes it, then the
     * lingering close (sy_conn_linger) so a client still sending reads them all */
    uint64_t       errs_owed;
    size_t         linger_left;     /* bytes it may still drop */
    /* CONFIG GET replies to mask (redis_guard.c): by reply number, in order */
    rs_mask_t     *masks;           /* RS_MAX_MASKS of them while nmasks > 0, else NULL */
    int            nmasks;
    conf_which_t   rc_which;
    uint64_t       mask_all_until;  /* masks overflowed: every reply up to it is masked */
    /* reconnect_window (redis_reconnect.c): its own upstream, lost, is dialed again */
    rs_backoff_t   rc;
    const conf_target_t *rc_target;
    uint64_t       kill_seq;        /* the reply number of its last CLIENT KILL (0: none) */
} redis_session_t;

void rs_closing_timeout_cb(uv_timer_t *t);
int rs_c2s_scan(void *arg, sy_pipe_t *p);
void rs_client_cb(sy_conn_t *c, int status, int events);
void rs_close(redis_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rs_failed_read(redis_session_t *s);
int rs_idle(const redis_session_t *s);
void rs_link_kick(sy_session_link_t *l, const char *why);
void rs_link_move(sy_session_link_t *l);
void rs_link_prepare(sy_session_link_t *l);
void rs_link_unprepare(sy_session_link_t *l);
int rs_link_quiet(sy_session_link_t *l);
void rs_link_release(sy_session_link_t *l);
void rs_relay_drive(redis_session_t *s, sy_conn_t *c, int events);
int rs_reply_error(redis_session_t *s, const char *msg);
int rs_s2c_scan(void *arg, sy_pipe_t *p);
void rs_set_state(redis_session_t *s, rs_state_t to);
void rs_timer_start(redis_session_t *s, uv_timer_cb cb, uint64_t ms);
void rs_unref(redis_session_t *s);
void rs_update_polls(redis_session_t *s);
void rs_upstream_lost(redis_session_t *s, int err);
void rs_watch(redis_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb);
int rs_s2c_at_boundary(redis_session_t *s);
int rs_sub_add(sub_set_t *set, const char *name, size_t len);
void rs_sub_clear(sub_set_t *set);
void rs_sub_del(sub_set_t *set, const char *name, size_t len);
/* s's subscription sets, allocated on first use (NULL: out of memory). */
sub_set_t *rs_subs(redis_session_t *s);
size_t rs_subs_total(const redis_session_t *s);   /* names recorded in all three */
/* The error text FAILED and CLOSING answer with (s->errmsg, or an out-of-memory line). */
void rs_set_errmsg(redis_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *rs_errmsg(const redis_session_t *s);
/* CLIENT SETNAME's name takes effect ("" clears it). 0, or -1 out of memory. */
int  rs_set_client_name(redis_session_t *s, const char *name);

/* The server side (redis_server.c). */
rs_server_t *rs_server_open(redis_session_t *s);
void rs_server_connect(rs_server_t *sv);
rs_server_t *rs_server_new(redis_session_t *s, conf_which_t which, const conf_target_t *t);
void rs_server_close(rs_server_t *sv, const char *reason, int later);
void rs_enter_failed(redis_session_t *s);   /* the next command gets s->errmsg, then the close */
void rs_server_unref(rs_server_t *sv);
int  rs_server_take(rs_server_t *sv, int fd, SSL *ssl, uv_poll_t *poll, char *err, size_t errlen);
void rs_server_lend(rs_server_t *sv, int *fd, SSL **ssl);
void rs_server_cb(sy_conn_t *c, int status, int events);
/* Make sv the server s relays to (NULL: none); returns the one it relayed to before. */
rs_server_t *rs_attach(redis_session_t *s, rs_server_t *sv);
/* A socket dialed on the thread pool becomes c (made non-blocking; TLS when ssl). Returns 0,
 * or -1 with why in err when it cannot be made non-blocking: then c is untouched and the
 * socket is still the caller's to hang up. A failure of this process's, not the target's. */
int  rs_conn_take(sy_conn_t *c, uv_loop_t *loop, void *data, int fd, SSL *ssl, uv_poll_t *poll, char *err,
                  size_t errlen);
/* The commands that set an upstream of ep up (AUTH, SELECT) into out; *replies they owe.
 * Returns the bytes written (0: none needed). out holds the password: wipe it. */
size_t rs_setup_cmds(const sy_endpoint_t *ep, uint8_t *out, size_t cap, int *replies);
/* The upstream s talks to, as host:port, for messages ("-" when none). */
const char *rs_upstream_name(const redis_session_t *s);

/* A reply to the client arrived (redis_client.c); ok is 0 for an error reply. */
void rs_reply_seen(redis_session_t *s, int ok);
void rs_effects_drop_first(redis_session_t *s);   /* the oldest pending effect goes */

/* Replicas (redis_replica.c): SYNC/PSYNC sent, what answers it, then a raw stream. */
int  rs_repl_begin(redis_session_t *s, int psync);   /* SYNC/PSYNC just forwarded */
int  rs_repl_c2s_scan(redis_session_t *s, sy_pipe_t *p);
int  rs_repl_owns_s2c(const redis_session_t *s);     /* the next server bytes are SYNC's */
int  rs_repl_s2c_scan(redis_session_t *s, sy_pipe_t *p);
int  rs_repl_at_boundary(const redis_session_t *s);  /* an -ERR of ours may go in here */
const char *rs_repl_phase(const redis_session_t *s); /* sync|rdb|stream, NULL: no replica */
void rs_repl_free(redis_session_t *s);

/* The client's own ACL user (redis_acl.c). seq: the number of the reply that confirms an
 * AUTH (owed_seq once it is owed), 0 when none will come. */
int  rs_acl_forwards(const redis_session_t *s);      /* AUTH <user> <pw> goes upstream */
void rs_acl_sent(redis_session_t *s, uint64_t seq, const char *user, size_t ulen, const char *pw, size_t pwlen);
void rs_acl_sent_cmd(redis_session_t *s, uint64_t seq, const uint8_t *cmd, size_t len);   /* AUTH u p */
void rs_acl_seen(redis_session_t *s, int ok);        /* reply seen_seq arrived */
void rs_acl_reset(redis_session_t *s);               /* RESET: the default user again */
void rs_acl_free(redis_session_t *s);
int  rs_acl_unsure(const redis_session_t *s);        /* an AUTH it could not record */
const char *rs_acl_user(const redis_session_t *s);   /* the identity a move replays, or NULL */
uint8_t *rs_acl_auth_cmd(const redis_session_t *s, size_t *len);   /* AUTH u p; free: rs_acl_wipe_buf */
void rs_acl_wipe_buf(uint8_t *buf, size_t len);
int  rs_acl_after_reset(redis_session_t *s, sy_pipe_t *p);   /* the endpoint's AUTH/SELECT again */
int  rs_acl_busy(const redis_session_t *s);          /* replies of those still to come */
int  rs_acl_hides(const redis_session_t *s);         /* the next reply is one of them */
int  rs_acl_hidden_scan(redis_session_t *s, sy_pipe_t *p);
/* Commands bigger than the pipe's buffer, a client that leaves (redis_large.c). */
void   rs_large_drop(redis_session_t *s, sy_pipe_t *p);   /* swallow [fwd..scanned) */
void   rs_large_stream(redis_session_t *s, sy_pipe_t *p, const resp_cmd_t *cmd);
size_t rs_large_answer(redis_session_t *s, local_t what, uint8_t *out, size_t cap);
int    rs_large_client_left(redis_session_t *s);

/* The target's secrets (redis_guard.c). */
int    rs_guard_partial(const redis_session_t *s, const resp_cmd_t *cmd);
int    rs_guard_refuses(redis_session_t *s, const resp_cmd_t *cmd, const uint8_t *buf, size_t len);
size_t rs_guard_answer(redis_session_t *s, const resp_cmd_t *cmd, const uint8_t *buf, size_t len,
                       uint8_t *out, size_t cap);
void   rs_guard_track(redis_session_t *s, const resp_cmd_t *cmd, uint64_t seq_before);
int    rs_guard_reply(redis_session_t *s, sy_pipe_t *p);   /* a reply complete: mask it */
int    rs_guard_hold(redis_session_t *s, sy_pipe_t *p);    /* end of a scan: hold one coming */

/* Multiplexing (redis_mux.c). */
int  rs_mux_route(redis_session_t *s);          /* route s onto its worker's shared upstream */
void rs_mux_start(redis_session_t *s);          /* ...and start relaying */
void rs_mux_detach(redis_session_t *s, int later);
int  rs_mux_move(redis_session_t *s);           /* to the shared upstream of the active target */
void rs_mux_pin(redis_session_t *s);            /* a command at c2s.fwd pins s: hold it */
void rs_mux_pin_try(redis_session_t *s);        /* ...open s's own upstream once it can */
void rs_mux_poke(redis_session_t *s);           /* s's s2c drained: a stalled mux goes on */
int  rs_mux_shared_db(const redis_session_t *s);
const sy_server_link_t *rs_mux_link(const rs_mux_t *m);

/* reconnect_window (redis_reconnect.c). rs_backoff_next: ms to wait before the next
 * attempt, -1 when the window from lost_at has run out (or is 0). */
void rs_backoff_start(rs_backoff_t *b, uint64_t now);
int  rs_backoff_next(rs_backoff_t *b, uint64_t now);
/* A connect error worth retrying (refused, reset, LOADING...), not a wrong password or
 * certificate. */
int  rs_transient(const char *cause);
/* sv, s's server being connected, failed for cause: 1 when s now waits and retries within
 * the window (sv closed), 0 when the caller fails it. */
int  rs_reconnect_connect_failed(redis_session_t *s, rs_server_t *sv, const char *cause);
/* On the thread pool: PING a dialed server; 0 on +PONG, else -1 with why in err. */
int  rs_ping(int fd, SSL *ssl, char *err, size_t errlen);
/* s's own upstream is gone (why): 1 when s is now reconnecting (its commands in flight
 * answered with -ERR) or closed, 0 when it cannot be rebuilt and the caller closes it. */
int  rs_reconnect_begin(redis_session_t *s, const char *why);
/* The commands a move replays for s (redis_move.c), malloc'd into *buf; 0 or -1. */
int  rs_replay_build(redis_session_t *s, uint8_t **buf, size_t *len, int *replies);

#endif
