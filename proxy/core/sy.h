/*
 * sy.h - switchyard's shared daemon types: the server, connections (an fd, its poll
 * handle and its transport), pipes (one direction of a relay), logging.
 *
 *   listener --accept--> session --+-- client conn  (plain or TLS, ours)
 *                                  +-- upstream conn (plain or TLS: ours for Redis,
 *                                                     libpq's SSL for Postgres)
 *
 * Every socket is driven through a uv_poll_t and a transport ops table, so the relay
 * does not care whether bytes are encrypted, nor who set the TLS session up. Reads land
 * in the pipe's fixed buffer and are written from it to the other side: no copies, no
 * per-message allocation, and back-pressure for free (a full buffer stops reading).
 */
#ifndef SY_SY_H
#define SY_SY_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <pthread.h>
#include <uv.h>
#include <openssl/ssl.h>
#include "conf/conf.h"
#include "protocol/pg_scram.h"

#define SY_VERSION "0.1.0"

/* ---- logging (log.c) ------------------------------------------------------------- */

enum { SY_LOG_ERROR = 0, SY_LOG_WARN = 1, SY_LOG_INFO = 2, SY_LOG_DEBUG = 3 };
extern int sy_log_level;
extern int sy_log_json;

/* One line per event. `fmt` produces logfmt pairs ("event=connect conn=12 route=pg");
 * with the JSON option the pairs are converted. Never pass a secret. */
void sy_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define sy_err(...)   sy_log(SY_LOG_ERROR, __VA_ARGS__)
#define sy_warn(...)  sy_log(SY_LOG_WARN, __VA_ARGS__)
#define sy_info(...)  do { if (sy_log_level >= SY_LOG_INFO) sy_log(SY_LOG_INFO, __VA_ARGS__); } while (0)
#define sy_debug(...) do { if (sy_log_level >= SY_LOG_DEBUG) sy_log(SY_LOG_DEBUG, __VA_ARGS__); } while (0)

/* Quote a value for logfmt into out (always NUL-terminated). Returns out. */
const char *sy_logq(char *out, size_t cap, const char *s);

/* ---- connections (conn.c, tls.c) -------------------------------------------------- */

#define SY_EAGAIN (-EAGAIN)

typedef struct sy_conn_s sy_conn_t;
typedef void (*sy_conn_cb)(sy_conn_t *c, int status, int events);

typedef struct sy_transport_s {
    /* >0 bytes, 0 EOF, SY_EAGAIN (c->rd_wait says which readiness to await), <0 -errno */
    ssize_t (*read)(sy_conn_t *c, void *buf, size_t len);
    /* >0 bytes, SY_EAGAIN (c->wr_wait set), <0 -errno */
    ssize_t (*write)(sy_conn_t *c, const void *buf, size_t len);
    const char *name;
    /* 1 when input is buffered above the socket (TLS records) that no poll event will
     * announce; NULL: never (plain sockets). */
    int     (*has_pending)(sy_conn_t *c);
} sy_transport_t;

extern const sy_transport_t sy_plain_transport;
extern const sy_transport_t sy_tls_transport;

struct sy_conn_s {
    int         fd;
    uv_poll_t  *poll;       /* NULL until sy_conn_watch; freed in its close callback */
    int         events;     /* events the poll handle is started with */
    int         accepted;   /* fd from accept4(SOCK_NONBLOCK): a spare poll handle may take it */
    const sy_transport_t *tp;
    SSL        *ssl;        /* with sy_tls_transport */
    int         ssl_owned;  /* 1: we SSL_free it; 0: libpq does (PQfinish) */
    int         own_fd;     /* 1: we close fd; 0: libpq does */
    int         rd_wait;    /* UV_READABLE or UV_WRITABLE: what the last read EAGAIN awaits */
    int         wr_wait;
    const char *tls_err;    /* last TLS error text (static or from OpenSSL's table) */
    sy_conn_cb  cb;
    void       *data;
    uv_loop_t  *loop;       /* the loop its poll handle lives on (its session's) */
};

void sy_conn_init(sy_conn_t *c, uv_loop_t *loop, int fd, void *data);
/* The same for a client's socket from the listener (accept4, non-blocking). */
void sy_conn_init_accepted(sy_conn_t *c, uv_loop_t *loop, int fd, void *data);
/* TCP keepalive and TCP_USER_TIMEOUT from [switchyard] tcp_* on a connected socket whose
 * peer is across a network (nothing for loopback or unix peers); _remote when the caller
 * already knows it is. */
void sy_sock_keepalive(int fd);
void sy_sock_keepalive_remote(int fd);
/* (Re)start watching c->fd for events with cb; allocates the poll handle on first use.
 * Only calls into libuv when the event set changes (sy_conn_rewatch): a relay step that
 * leaves the events as they were, which is most of them, costs a compare. Returns 0 or a
 * libuv error. */
int  sy_conn_rewatch(sy_conn_t *c, int events, sy_conn_cb cb);
static inline int sy_conn_watch(sy_conn_t *c, int events, sy_conn_cb cb)
{
    if (c->poll == NULL || events != c->events)
        return sy_conn_rewatch(c, events, cb);
    c->cb = cb;
    return 0;
}
/* A poll handle made ahead of time for fd (uv_poll_init: also makes fd non-blocking), so
 * a connection that adopts it later only starts it: a switch opens the new upstreams'
 * handles while preparing, not while sessions are held. NULL on failure. sy_poll_free
 * releases one that was never adopted. */
uv_poll_t *sy_poll_new(uv_loop_t *loop, int fd);
void sy_poll_free(uv_poll_t *p);
void sy_conn_adopt_poll(sy_conn_t *c, uv_poll_t *p);
/* sy_conn_watch, logging a failure for session conn_id; the caller closes the session. */
void sy_conn_watch_failed(int rc, uint64_t conn_id);
static inline int sy_conn_watch_logged(sy_conn_t *c, int events, sy_conn_cb cb, uint64_t conn_id)
{
    int rc = sy_conn_watch(c, events, cb);
    if (rc != 0)
        sy_conn_watch_failed(rc, conn_id);
    return rc;
}
/* Stop watching and release the poll handle (freed in its close callback). */
void sy_conn_unwatch(sy_conn_t *c);
/* Unwatch, free our SSL and close our fd (what we own). */
void sy_conn_close(sy_conn_t *c);
/* The same, but a plain socket's close(2) waits until sy_close_pending on this worker
 * (a switch swaps thousands of upstreams; their FIN exchanges need not be in the hold:
 * they run when the switch releases its sessions, at most 8192 waiting per worker). */
void sy_conn_close_later(sy_conn_t *c);
/* A lingering close, as a server closes after an error while its peer may still be
 * sending (closing with unread input makes the kernel send a reset, which can destroy the
 * replies the peer has not read yet): the first call shuts c's write side (a FIN after all
 * that was written), each call reads and drops what the peer still sends, at most *budget
 * bytes in all. 1: done (the peer closed or failed, or the budget is spent), close c now;
 * 0: more may come, watch c for UV_READABLE and call again. The caller bounds the time. */
int  sy_conn_linger(sy_conn_t *c, size_t *budget, int first);
#define SY_LINGER_BYTES (64u << 20)

/* TLS (tls.c): all OpenSSL calls of the daemon live there. */
int  sy_tls_init(void);
SSL_CTX *sy_tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);
SSL_CTX *sy_tls_client_ctx(const char *ca_file, const char *cert, const char *key,
                           int insecure, char *err, size_t errlen);
/* Attach a new SSL to c (server or client side); c switches to the TLS transport.
 * For client side, sni/verify name is `host`. Returns 0 or -1. */
int  sy_tls_attach(sy_conn_t *c, SSL_CTX *ctx, int server, const char *host);
/* Adopt an SSL we do not own (libpq's). */
void sy_tls_adopt(sy_conn_t *c, SSL *ssl);
/* Step the handshake: 1 done, 0 in progress (c->rd_wait set), -1 failed (c->tls_err). */
int  sy_tls_handshake(sy_conn_t *c);
/* Bytes already decrypted and buffered inside the TLS session. */
int  sy_tls_pending(sy_conn_t *c);

/* ---- pipes (pipe.c) --------------------------------------------------------------- */

/*
 * One direction of a relay: bytes read from src land in buf[end..cap), the session's
 * scan hook looks at [scanned..end) and moves `fwd` (what may be written to dst) up to
 * where it likes, and writes go out from [start..fwd).
 *
 *     0      start        fwd        scanned       end        cap
 *     |------|== to dst ==|== held ===|== new ======|-- free --|
 */
typedef struct sy_pipe_s sy_pipe_t;
typedef int (*sy_scan_cb)(void *sess, sy_pipe_t *p);   /* 0 ok, -1 session is closing */

struct sy_pipe_s {
    uint8_t   *buf;         /* NULL while the pipe is empty (see sy_pipe_ensure) */
    uint32_t   cap, start, fwd, scanned, end;
    sy_conn_t *src, *dst;
    sy_scan_cb scan;
    int        src_eof;
    int        reading;     /* 0: do not read src (held by the session) */
    uint64_t   bytes;       /* forwarded to dst */
    int        err;         /* -errno of the last failed read or write */
    int        full;        /* the last pump stopped because the buffer was full */
};

enum { SY_PUMP_OK = 0, SY_PUMP_EOF, SY_PUMP_SRC_ERR, SY_PUMP_DST_ERR, SY_PUMP_CLOSING };

#define SY_PIPE_BUF (64 * 1024)
/* Reads per pump before the loop serves someone else, as libuv's stream.c caps reads per
 * event at 32: one fast sender cannot starve a worker. The poll is level-triggered, so a
 * source with more to read is called again on the next round. */
#define SY_PIPE_READ_BUDGET 32

/* The buffer is held only while bytes are in it: a pipe takes one from its worker's free
 * list when data comes (pump, inject, feed, space) and gives it back when it is empty
 * at the end of a pump, resume or flush. At most SY_PIPE_FREE_MAX free buffers are kept
 * per worker thread; the rest are unmapped. */
#define SY_PIPE_FREE_MAX 16
/* The first sweep (sy_pipe_sweep) with no teardown since the one before, after at least
 * this many pipes were torn down, returns the free buffers and the heap's free pages to
 * the system. */
#define SY_PIPE_TRIM_AFTER 256
/* What a closed server connection counts towards SY_PIPE_TRIM_AFTER: its idle PGconn (two
 * 16 KiB libpq buffers, its strings and parameters: about 55 KB) frees about what sixteen
 * pipes' sessions do, so a pool's idle timeout closing its servers also gives memory back. */
#define SY_PIPE_TRIM_SERVER 16
/* A pipe without a buffer, with cap SY_PIPE_BUF. */
void sy_pipe_setup(sy_pipe_t *p, sy_conn_t *src, sy_conn_t *dst, sy_scan_cb scan, int reading);
/* Make sure p->buf exists, for a caller that reads into it itself. 0 or -ENOMEM. */
int  sy_pipe_ensure(sy_pipe_t *p);
/* Teardown: the buffer goes back whatever is in it. */
void sy_pipe_release(sy_pipe_t *p);
/* From the worker's 1 s sweep: after a burst of closed sessions, give memory back. */
void sy_pipe_note_teardown(unsigned weight);
void sy_pipe_sweep(void);
unsigned sy_pipe_free_count(void);   /* free buffers on this thread's list */
/* Space left at the end (compacts first when that helps; takes a buffer if the pipe had
 * none, 0 when out of memory). */
uint32_t sy_pipe_space(sy_pipe_t *p);
/* Append synthesized bytes after everything already there, forwardable at once.
 * Only call at a message boundary of the stream. Returns 0 or -1 if it does not fit. */
int  sy_pipe_inject(sy_pipe_t *p, const void *bytes, size_t len);
/* Move data[*sent..len) - bytes queued by the session itself, at a message boundary, with
 * nothing else entering the pipe meanwhile - into the pipe as space allows, writing as it
 * goes; *sent says how far it got. A queue of any size drains this way, a pipe's worth
 * at a time. 0 ok (call again when dst is writable if *sent < len), <0 -errno. */
int  sy_pipe_feed(sy_pipe_t *p, const uint8_t *data, size_t len, size_t *sent);
/* Write [start..fwd) to dst until done or EAGAIN. 0 ok, <0 -errno (dst failed). */
int  sy_pipe_flush(sy_pipe_t *p);
/* Read src into the buffer until EAGAIN, EOF, full or SY_PIPE_READ_BUDGET reads, calling
 * scan after each read and flushing as it goes. Returns SY_PUMP_OK, SY_PUMP_EOF, SY_PUMP_SRC_ERR / SY_PUMP_DST_ERR
 * (p->err holds -errno) or SY_PUMP_CLOSING when the scan hook returned -1. */
int  sy_pipe_pump(void *sess, sy_pipe_t *p);
int  sy_pipe_pending(const sy_pipe_t *p);   /* bytes waiting to be written */
/* A held pipe resumes: reading is allowed again, the bytes buffered while it was held go
 * through the scan hook and out. Returns SY_PUMP_OK, SY_PUMP_CLOSING or SY_PUMP_DST_ERR
 * (p->err holds -errno). */
int  sy_pipe_resume(void *sess, sy_pipe_t *p);

/* How a relay step ended, when it did not simply carry on. */
typedef enum { SY_RELAY_OK = 0, SY_RELAY_CLOSING, SY_RELAY_CLIENT_GONE, SY_RELAY_UPSTREAM_GONE } sy_relay_t;
/*
 * One relay step for an event on connection c, which is the client (source of c2s) or
 * the upstream (source of s2c): flush what waits for c, resume the other side if it
 * stopped on a full buffer, and read c if it is readable (events 0: try everything).
 * Returns SY_RELAY_OK, SY_RELAY_CLOSING (a scan hook closed the session), or which side
 * is gone; then *err holds -errno, or 0 for a clean EOF.
 */
sy_relay_t sy_relay_step(void *sess, sy_pipe_t *c2s, sy_pipe_t *s2c, sy_conn_t *c, int events, int *err);
/* client_stall_timeout: the client (source of c2s) left a message half sent (mid_message)
 * and sent nothing since active_at, while the pipe would read it: not held by the session,
 * not stopped by a full buffer. */
int  sy_client_stalled(const sy_pipe_t *c2s, int mid_message, uint64_t active_at, uint64_t now);

/* When a session last had traffic, for its timeouts (client_idle_timeout and the like,
 * counted in seconds): an event only marks it (a clock read per event was 1% of
 * switchyard's user-space CPU per pgbench transaction), and the once-a-second tick dates
 * the mark. The session so counts as active until that tick, and a timeout fires at
 * most a tick later. */
typedef struct {
    uint64_t at;     /* loop ms: the tick that saw the last mark, or the session's start */
    int      seen;   /* traffic since that tick */
} sy_activity_t;

static inline void sy_activity_mark(sy_activity_t *a)
{
    a->seen = 1;
}

/* At a tick (now: its loop ms): when the last traffic was. */
static inline uint64_t sy_activity_at(sy_activity_t *a, uint64_t now)
{
    if (a->seen) {
        a->seen = 0;
        a->at = now;
    }
    return a->at;
}
/* Poll events src and dst need for this pipe. */
int  sy_pipe_src_events(const sy_pipe_t *p);
int  sy_pipe_dst_events(const sy_pipe_t *p);

/* ---- loops (worker.c) -------------------------------------------------------------- */

/*
 * The main thread runs the control loop (sy_server.loop); sessions run on worker loops,
 * and only a session's own worker touches it. Threads talk by posting messages (see
 * worker.c): the control plane posts to workers (sy_post, sy_run_on_all), and workers post
 * to the control plane (sy_ctl_post). Nobody calls into another thread's loop.
 */
typedef struct sy_listener_s sy_listener_t;
typedef struct sy_ctl_s sy_ctl_t;
struct sy_ctl_s {
    sy_ctl_t *next;
    void    (*fn)(sy_ctl_t *c);   /* runs on the main thread */
};
/* Run c->fn on the main loop (at once when already there). The caller keeps c alive
 * until fn runs (fn usually frees it). */
void sy_ctl_post(sy_ctl_t *c);
/* Wake the main loop to look at shutdown (no-op on the main thread). */
void sy_ctl_wake(void);

/* A message for one worker: fn runs on that worker's loop thread (at once when posted
 * from that thread). The poster keeps m alive until fn runs; fn may free it. */
typedef struct sy_msg_s sy_msg_t;
struct sy_msg_s {
    sy_msg_t *next;
    void    (*fn)(sy_msg_t *m);
};
void sy_post(int worker, sy_msg_t *m);
/* envoy's runOnAllThreads: each(ctx, worker) runs on every worker's loop, then done(ctx)
 * on the main loop once all of them have returned. Returns 0, or -1 (out of memory:
 * nothing runs). */
typedef void (*sy_each_fn)(void *ctx, int worker);
typedef void (*sy_all_fn)(void *ctx);
int  sy_run_on_all(sy_each_fn each, sy_all_fn done, void *ctx);

int  sy_on_main(void);
int  sy_nworkers(void);
int  sy_worker_self(void);                 /* this thread's worker index, -1 elsewhere */
uv_loop_t *sy_worker_loop(int worker);
uint64_t sy_worker_sessions(int worker);   /* sessions open on it (any thread) */
/* The worker index of a session loop. */
int  sy_loop_index(const uv_loop_t *loop);
/* n (>= 1) worker loops; sy_workers_run starts their threads once the listeners are set
 * up on the accept loop (worker 0's). */
int  sy_workers_start(int n, char *err, size_t errlen);
int  sy_workers_run(char *err, size_t errlen);
/* On a worker: close fd at the next sy_close_pending (at once when that cannot be
 * recorded), and close every fd recorded so far. */
void sy_close_later(int fd);
void sy_close_pending(void);
/* The one remaining isolation (RELOAD's swap, the exit): see worker.c. */
void sy_isolate(void);
void sy_deisolate(void);
uv_loop_t *sy_accept_loop(void);
/* Start a session for an accepted socket on the next worker's loop. */
void sy_dispatch(sy_listener_t *l, int fd, int trusted);
void sy_main_run(void);
void sy_main_quit(void);
/* Guards what workers share as sessions come and go: the cancel keys. Never held across
 * anything that blocks. */
extern pthread_mutex_t sy_shared_mu;

/* Counters that several threads update and the control plane reads. */
#define SY_STAT_ADD(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)
#define SY_STAT_SUB(x, n) __atomic_fetch_sub(&(x), (n), __ATOMIC_RELAXED)
#define SY_LOAD(x)        __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define SY_STORE(x, v)    __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

/* ---- the server (main.c, listener.c) ---------------------------------------------- */

typedef struct sy_route_s sy_route_t;
#define SY_MAX_WORKERS 64   /* `workers` is validated to 1..64 */

/* A counter that every worker adds to on every request, kept per worker, each on its own
 * cache line: one shared counter would move its line between the cores at each add
 * (envoy's per-thread stats, haproxy's per-thread counters). Readers sum them. */
typedef struct {
    _Alignas(64) uint64_t n;
} sy_worker_count_t;

struct sy_route_s {
    /* What every session reads at each boundary (sy_route_should_hold), together on the
     * first cache line, which nothing writes in the steady state: the counters below are
     * written by every worker. The struct is aligned to a line (sy_server.routes is
     * allocated so). */
    _Alignas(64) const conf_route_t *conf;
    conf_which_t        active;           /* written on the main loop, read anywhere: sy_route_active */
    int                 paused;           /* atomic: sessions read it at their boundaries */
    int                 sw_phase;         /* atomic: sw_phase_t of the switch (switch_rule.h) */
    int                 sw_mode;          /* atomic: 1 GRADUAL */
    SSL_CTX            *tls_ctx[SY_MAX_WORKERS][2];   /* redis: per worker and target, lazily
                                                       * built by that worker only */
    uint64_t            clients, upstreams;
    uint64_t            nerrors;          /* all errors sent to clients */
    uint64_t            err_connect;      /* upstream could not be reached or rejected us */
    uint64_t            err_lost;         /* upstream died under a session */
    uint64_t            err_protocol;     /* malformed bytes from a client or server */
    uint64_t            bytes_in;         /* client -> upstream, counted when sessions end */
    uint64_t            bytes_out;        /* upstream -> client */
    uint64_t            switches;
    double              last_switch_ms;
    double              last_hold_ms;     /* how long sessions were held in the last switch */
    uint64_t            closed_at_deadline;
    uint64_t            moved;            /* sessions moved by switchovers */
    uint64_t            pinned;           /* sessions known to be unmovable (atomic) */
    void               *sw;               /* the switch in progress (main loop only) */
    uv_timer_t         *pause_timer;
    int                 healthy;          /* last health probe of the active target: 1 ok */
    char                health_err[256];  /* its cause when not ok */
    uint64_t            pool_reuses;      /* pg: clients given an idle server (atomic) */
    uint64_t            pool_resets;      /* pg: servers reset for the next client (atomic) */
    uint64_t            pool_releases;    /* pg: idle clients that gave their server back (atomic) */
    uint64_t            pool_retakes;     /* pg: released clients that took a server again (atomic) */
    uint64_t            pool_pins;        /* pg: clients pinned to their server by session state (atomic) */
    uint64_t            reconnects;       /* sessions (pg, redis) or shared upstreams reconnected (atomic) */
    /* pg: ReadyForQuery relayed; redis: replies relayed. Per worker: sy_route_count_transactions,
     * sy_route_transactions. */
    sy_worker_count_t   transactions[SY_MAX_WORKERS];
};

/* n more transactions on r, by this thread's worker (the main thread counts as the first:
 * it relays nothing, but a count from it must land somewhere). */
extern __thread int sy_worker_index;
static inline void sy_route_count_transactions(sy_route_t *r, uint64_t n)
{
    SY_STAT_ADD(r->transactions[sy_worker_index].n, n);
}

static inline uint64_t sy_route_transactions(const sy_route_t *r)
{
    uint64_t n = 0;
    for (int i = 0; i < SY_MAX_WORKERS; i++)
        n += SY_LOAD(r->transactions[i].n);
    return n;
}

/*
 * Client and server connections (session.c). A session is a client connection, and while
 * it relays, a server connection linked to it. Each is on exactly one list of its worker,
 * per route and per state, as PgBouncer keeps its sockets on per-pool state lists
 * (change_client_state): the state is which list it is on, so a switch step walks only the
 * sessions in the state it cares about, and a gauge reads a list's length. Only the worker
 * that owns a connection touches its list.
 *
 *   client   ACTIVE   relaying, or starting up (not routed yet: the worker's route-less list)
 *            HELD     stopped at a boundary by a pause or a switch
 *            MOVING   a move to the route's active target is running
 *            CLOSING  its close has begun (an error being flushed, a linger)
 *   server   CONNECTING  being opened (for a client, or ahead of a move)
 *            ACTIVE      linked to a client
 *            IDLE        kept for reuse, linked to nobody
 *            CLOSING     its close has begun (a move job finishing it, a close(2) deferred)
 */
typedef enum { SY_CLIENT_ACTIVE = 0, SY_CLIENT_HELD, SY_CLIENT_MOVING, SY_CLIENT_CLOSING,
               SY_CLIENT_NSTATES } sy_client_state_t;
typedef enum { SY_SERVER_CONNECTING = 0, SY_SERVER_ACTIVE, SY_SERVER_IDLE, SY_SERVER_CLOSING,
               SY_SERVER_NSTATES } sy_server_state_t;
extern const char *const sy_client_state_names[SY_CLIENT_NSTATES];
extern const char *const sy_server_state_names[SY_SERVER_NSTATES];

typedef struct sy_session_link_s sy_session_link_t;
typedef struct sy_server_link_s sy_server_link_t;

/* A server connection: its target, its state list, the client it serves. describe fills
 * the SHOW SERVERS columns: client id, protocol, upstream address, state. */
struct sy_server_link_s {
    sy_server_link_t  *prev, *next;
    void              *on;          /* session.c's: the lists it is on (route, worker) */
    uv_loop_t         *loop;        /* the worker loop it lives on */
    sy_route_t        *route;
    conf_which_t       which;       /* the target it is connected to */
    const conf_target_t *target;    /* ...and that target's settings */
    sy_server_state_t  state;
    sy_session_link_t *client;      /* linked while in use; NULL when idle or orphaned */
    void             (*describe)(const sy_server_link_t *s, char cols[][128]);
    /* An IDLE server (a pool's) checks itself once a second (sy_sweep) and when a
     * switch starts or ends (sy_servers_check_idle): its timeouts, and whether its target
     * is still the route's; it closes itself when one fails. NULL: nothing to check. */
    void             (*idle_check)(sy_server_link_t *s, uint64_t now);
};

/* A client connection. describe fills the SHOW CLIENTS columns: id, protocol, route,
 * target, state, detail. */
struct sy_session_link_s {
    sy_session_link_t *prev, *next;
    void              *on;          /* session.c's: the lists it is on (route, worker) */
    uv_loop_t         *loop;        /* the worker loop the session lives on */
    sy_listener_t     *listener;    /* accepted on (its max_clients counts the session) */
    sy_route_t        *route;       /* NULL until routed */
    sy_client_state_t  state;
    sy_server_link_t  *server;      /* the server connection it relays to, once routed */
    int                preparing;   /* its new upstream is being opened ahead of the move */
    int                in_move;     /* a move the switch counts is running (sy_switch_moved ends it) */
    sy_client_state_t  moved_from;  /* the state that move started from (HELD: at a boundary) */
    int                console;     /* admin console sessions are never moved */
    int                kicked;      /* told to go at the shutdown deadline */
    int                pinned;      /* known to be unmovable (e.g. Redis CLIENT TRACKING): set it
                                     * with sy_session_set_pinned, which counts it on the route */
    void             (*describe)(const sy_session_link_t *l, char cols[][128]);
    /* Switchover hooks (switchover.c drives them):
     * quiet: 1 when the session stands at a boundary and can be moved now
     * move:  start moving to the route's active target; sy_switch_moved() follows
     * kick:  close the session with the "switched; reconnect" error
     * release: a hold ended; carry on relaying
     * prepare: open the new upstream ahead of the hold; sy_switch_prepared() follows
     * unprepare (may be NULL): the switch is over; a server opened ahead that no move used
     * (a refused AFTER CATCHUP: the route points at the old target again) goes */
    void             (*prepare)(sy_session_link_t *l);
    void             (*unprepare)(sy_session_link_t *l);
    /* Once a second on its worker (may be NULL): the session checks its own timeouts
     * (client_login_timeout, client_idle_timeout) against now (the loop's ms) and closes
     * itself when one ran out. */
    void             (*tick)(sy_session_link_t *l, uint64_t now);
    int              (*quiet)(sy_session_link_t *l);
    void             (*move)(sy_session_link_t *l);
    void             (*kick)(sy_session_link_t *l, const char *why);
    void             (*release)(sy_session_link_t *l);
};
/* On the connection's own worker (l->loop set). A client starts ACTIVE on the list of
 * l->route (NULL: not routed yet, and the console). */
void sy_session_link(sy_session_link_t *l);
void sy_session_unlink(sy_session_link_t *l);
void sy_session_set_route(sy_session_link_t *l, sy_route_t *r);
void sy_session_set_state(sy_session_link_t *l, sy_client_state_t st);
void sy_session_set_pinned(sy_session_link_t *l, int pinned);
/* Route client l: it goes to r's lists, and sv, its server connection, is set to r's
 * active target and starts CONNECTING (describe fills its SHOW SERVERS row). */
void sy_session_route(sy_session_link_t *l, sy_route_t *r, sy_server_link_t *sv,
                      void (*describe)(const sy_server_link_t *sv, char cols[][128]));
/* A new server connection for client's route, to target t (which): CONNECTING on the
 * lists, its client set (the client's own server pointer is the caller's to change). */
void sy_server_open(sy_server_link_t *sv, sy_session_link_t *client, conf_which_t which,
                    const conf_target_t *t, void (*describe)(const sy_server_link_t *sv, char cols[][128]));
/* A session's protocol state changed: relaying (its server is in use) or closing (both
 * sides leave the lists a switch walks). */
void sy_session_relaying(sy_session_link_t *l);
void sy_session_closing(sy_session_link_t *l);
/* A server starts on the list of (s->route, s->state). */
void sy_server_link(sy_server_link_t *s);
void sy_server_unlink(sy_server_link_t *s);
void sy_server_set_state(sy_server_link_t *s, sy_server_state_t st);
/* A worker's list of clients on route r (NULL: not routed yet, and the console) in state
 * st, and of servers; only that worker may walk them. The counts may be read anywhere. */
sy_session_link_t *sy_worker_sessions_of(int worker, const sy_route_t *r, sy_client_state_t st);
sy_server_link_t  *sy_worker_servers_of(int worker, const sy_route_t *r, sy_server_state_t st);
uint32_t sy_worker_clients_in(int worker, const sy_route_t *r, sy_client_state_t st);
uint32_t sy_worker_servers_in(int worker, const sy_route_t *r, sy_server_state_t st);
/* A worker's once-a-second walk of its clients, calling their tick hooks, and of its IDLE
 * servers, calling their idle_check hooks. On that worker only. */
void sy_sweep(int worker, uint64_t now);
/* Run the idle_check hook of every IDLE server of route r on this worker (a switch calls
 * it so the old target's idle servers close at once). On that worker only. */
void sy_servers_check_idle(int worker, const sy_route_t *r);
/* The lists of n workers, once the routes are known (sy_workers_start). */
int  sy_lists_init(int n);
/* The route's active target (an atomic read), and a target of the route. */
conf_which_t sy_route_active(const sy_route_t *r);
const conf_target_t *sy_route_target(const sy_route_t *r, conf_which_t which);

/* ---- switchover (switchover.c) ------------------------------------------------------- */

/* Must this session stop at its next boundary? (route paused, or it is on a target the
 * route no longer uses). Sessions call it where a new transaction or command would start. */
int  sy_route_should_hold(const sy_session_link_t *l);
/* A session reached a boundary or changed state that matters to a running switch. */
void sy_switch_poke(sy_route_t *r);
/* A session finished moving: ok 1 moved, 0 closed. */
void sy_switch_moved(sy_session_link_t *l, int ok);
/* A session's new upstream is open (or failed to open: the move will try again). */
void sy_switch_prepared(sy_session_link_t *l);
/* Begin moving a route's sessions to `to` (already prechecked); route->active is set.
 * done(ctx, moved, closed, ms) is called when the switch has finished. */
typedef void (*sy_switch_done_cb)(void *ctx, uint64_t moved, uint64_t closed, double ms);
int  sy_switch_start(sy_route_t *r, conf_which_t to, int gradual, sy_switch_done_cb done, void *ctx);
/* Per-worker switch state, once the workers exist (before any switch). */
int  sy_switch_init(char *err, size_t errlen);
/* PAUSE / RESUME. */
int  sy_route_pause(sy_route_t *r);
void sy_route_resume(sy_route_t *r, const char *why);
/* The switch in progress on a route, if any. */
int  sy_switch_running(const sy_route_t *r);

struct sy_listener_s {
    const conf_listener_t *conf;
    uv_poll_t  poll[2];           /* TCP and unix */
    int        fd[2];
    int        nfd;
    SSL_CTX   *tls_ctx;            /* client-side TLS termination, if configured */
    uint64_t   nclients;           /* sessions open (atomic): max_clients is checked at accept */
    enum { SY_NODELAY_UNKNOWN, SY_NODELAY_INHERITED, SY_NODELAY_SET } nodelay;   /* listener.c */
};

typedef struct sy_server_s {
    uv_loop_t     *loop;
    conf_t        *conf;          /* the snapshot in force: read it with sy_conf() */
    conf_env_t     env;
    sy_listener_t *listeners;
    size_t         nlisteners;
    sy_route_t    *routes;
    size_t         nroutes;
    uint64_t       next_conn_id;
    uint64_t       nclients;
    int            stopping;
} sy_server_t;

extern sy_server_t sy_server;

/* The configuration in force. RELOAD publishes a new snapshot (reload.c) and keeps the old
 * ones until exit, so a reader on any thread - a thread-pool job too - may keep the
 * pointer it read for as long as it works. */
static inline const conf_t *sy_conf(void)
{
    return __atomic_load_n(&sy_server.conf, __ATOMIC_ACQUIRE);
}

sy_route_t *sy_route_find(const char *name);
sy_route_t *sy_route_for_database(const sy_listener_t *l, const char *db);
sy_route_t *sy_route_for_listener(const sy_listener_t *l);   /* redis: the listener's route */

/* Sessions call this when a client leaves; during shutdown the last one stops the loop. */
void sy_server_client_gone(void);

int  sy_listeners_start(char *err, size_t errlen);
void sy_listeners_stop(void);
int  sy_is_loopback_peer(int fd);
int  sy_is_loopback_addr(const struct sockaddr_storage *a);   /* a unix, 127/8 or ::1 address */
/* The local uid at the other end of an accepted socket (SO_PEERCRED; for loopback TCP the
 * owner of the client's socket in /proc/net/tcp), or -1 (peer.c); and whether it is root or
 * switchyard's own user. */
int  sy_peer_uid(int fd);
int  sy_peer_is_owner(int fd);
int  sy_peer_is_unix(int fd);
/* want (a NUL-terminated secret) equals got[0..len), in time that depends on len only
 * (CRYPTO_memcmp: a remote client cannot learn the secret byte by byte from timing). */
int  sy_secret_equal(const char *want, const void *got, size_t len);

/* auth.c: what a client proves to switchyard itself. */
/* The SCRAM-SHA-256 verifier of a configured secret (derived once, random salt). 0 or -1. */
int      sy_scram_verifier(const char *secret, pg_scram_verifier_t *out);
/* A server nonce: PG_SCRAM_NONCE_LEN printable characters. 0 or -1. */
int      sy_scram_nonce(char out[PG_SCRAM_NONCE_LEN + 1]);
/* Count a failed password; returns how long (ms) to wait before saying so. */
uint64_t sy_auth_failed(uint64_t now_ms);
/* A client was refused at the listener's max_clients (logged, rate-limited). */
void sy_listener_refused(sy_listener_t *l);
/* Answer an accepted client as its server does at its limit (53300 / -ERR max number of
 * clients reached), without reading, and close the fd: for a client that cannot be served
 * at all (the fd limit, a poll handle that cannot be had). */
void sy_listener_refuse(const sy_listener_t *l, int fd);

/* A protocol plugs into the core with an ops table; the core never names its protocols.
 * start: begin a session for an accepted socket, on `loop` for its whole life. */
typedef struct sy_proto_s {
    const char *name;
    void      (*start)(sy_listener_t *l, int fd, int trusted, uv_loop_t *loop);
} sy_proto_t;
/* Register the ops for listeners of protocol `proto` (before the listeners start). */
void sy_proto_register(conf_proto_t proto, const sy_proto_t *ops);
extern const sy_proto_t pg_proto;      /* proxy/pg/pg_session.c */
extern const sy_proto_t redis_proto;   /* proxy/redis/redis_session.c */

/* Postgres cancel keys (pg_cancel.c). */
typedef struct pg_session_s pg_session_t;
uint32_t pg_cancel_register(pg_session_t *s);
void     pg_cancel_unregister(uint32_t key);
void     pg_cancel_request(uint32_t pid, uint32_t key);
uint32_t pg_cancel_slots(void);   /* the key table's size: it grows with the sessions and shrinks after */

/* RELOAD and SIGHUP (reload.c). sy_reload returns 0 with a summary in msg, or -1 with
 * the reason (nothing changed). */
void sy_reload_remember_args(const conf_args_t *args);
int  sy_reload(char *msg, size_t len);
/* Put a configuration of the same shape in force, retargeting routes like RELOAD (reload.c:
 * the comment above it). Returns the switches started, -1 when nothing changed. */
int  sy_conf_publish(conf_t *fresh, const char *why, sy_switch_done_cb done, void *ctx);
/* Two targets that reach the same place the same way (secrets included). */
int  sy_target_equal(const conf_target_t *a, const conf_target_t *b);

/* Random bytes for keys (getrandom). */
void sy_random(void *out, size_t len);

#endif /* SY_SY_H */
