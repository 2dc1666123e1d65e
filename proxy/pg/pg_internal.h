/*
 * pg_internal.h - what the files of the Postgres session share: the session object, its
 * state enum and the functions one part calls in another.
 *
 *   pg_session.c   lifecycle (refs, state, the one close path), the relay and its scans,
 *                  the greeting; the protocol's ops table
 *   pg_startup.c   the client's startup packets, TLS, password, routing
 *   pg_server.c    the server connection, its own object: resolve off the loop, libpq
 *                  parameters, one attempt per address, attach to a session, its close
 *   pg_move.c      switchover: prepare, move (state query, replay), the link hooks
 *   pg_console.c   the admin console's wire side
 *   pg_pool.c      session pooling: a left client's server reset and kept IDLE, and
 *                  handed to the next client with the same key
 *   pg_reconnect.c reconnect_window: the state an idle session would need replayed, saved
 *                  ahead; the reconnect after its upstream closed; new sessions that wait;
 *                  a released session's re-take
 *   pg_release.c   server_release_delay: an idle client without session state gives its
 *                  server back to the pool (asked of the server first), or is pinned
 *
 * Nothing here is for other modules: they use pg_session.h.
 */
#ifndef SY_PG_INTERNAL_H
#define SY_PG_INTERNAL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <libpq-fe.h>
#include "proxy/core/sy.h"
#include "proxy/pg/pg_session.h"
#include "protocol/pg_wire.h"
#include "protocol/pg_result.h"
#include "protocol/pg_sql.h"
#include "protocol/pg_array.h"
#include "protocol/pg_conninfo.h"
#include "protocol/pg_errclass.h"
#include "proxy/control/admin.h"

typedef enum {
    PGS_STARTUP = 0,
    PGS_CLIENT_TLS,
    PGS_AUTH,
    PGS_RESOLVING,
    PGS_CONNECTING,
    PGS_RELAY,
    PGS_MOVING,
    PGS_ADMIN,
    PGS_SAVING,          /* reading the session's state to replay (pg_reconnect.c) */
    PGS_RECONNECTING,    /* the upstream closed under an idle session (or a released one
                          * sent its next message): reconnecting */
    PGS_RELEASED,        /* idle, its server given back (pg_release.c): no server */
    PGS_CLOSING,
    PGS_CLOSED
} pg_state_t;

/* SHOW CLIENTS names of the states; the ParameterStatus names libpq is asked for. */
extern const char *const pg_state_names[];
extern const char *const pg_reported_params[];

/* Everything PQconnectStartParams / PQconnectdbParams needs for one upstream session,
 * with the storage its strings point into. */
typedef struct pg_params_s {
    const char *keys[64];
    const char *vals[64];
    char options[2048];
    char alloptions[4096];
    char hostlist[4096], addrlist[4096], portlist[1024];
    char portbuf[1024];
    char user_timeout[16];
} pg_params_t;

#define PG_MAX_HOSTS 64

/* What a server needs only while it is being opened (about 21 KB with its pg_params_t):
 * allocated by pg_upstream_connect, freed once the connection is up. */
typedef struct pg_connect_s {
    uv_getaddrinfo_t gai;
    char          *hosts[PG_MAX_HOSTS];   /* host list being resolved */
    char          *addrs[PG_MAX_HOSTS];   /* comma-joined addresses per host, "" = as is */
    int            nhosts, ihost;
    char          *resolve_err;
    /* connection attempts: one per host address, each with its own connect_timeout, as
     * libpq's blocking connect does (PQconnectPoll alone never moves on by itself) */
    struct pg_params_s *pp;
    char          *att_host[PG_MAX_HOSTS], *att_addr[PG_MAX_HOSTS], *att_port[PG_MAX_HOSTS];
    char          *att_buf;
    int            natt, iatt;
    char          *att_errs;           /* what each failed attempt said */
} pg_connect_t;

/*
 * One upstream connection (the server side of a session), its own object: its socket
 * (libpq's), its PGconn and backend, how it is being opened (names resolved off the loop,
 * one attempt per address, its own connect timer) and, in link, its target and its state
 * on the worker's lists. conn.data points here; the session it serves is link.client.
 *
 * A server can outlive its client (link.client NULL): a move or prepare job still using
 * its PGconn on the thread pool owns it until the job is done (state CLOSING, closed by
 * pg_server_job_done), and the pool (pg_pool.c) keeps servers IDLE between clients.
 *
 * Lifetime: reference counted. The owner (its session, a job, the pool) holds one
 * until pg_server_close; a getaddrinfo request and the timer's close callback hold one.
 */
struct pg_server_s {
    sy_server_link_t link;            /* first member: the lists hold &link */
    sy_conn_t      conn;              /* next to link: a relay step reads both (pg_session_s) */
    int            refs;
    int            job;               /* a thread-pool job uses pg: its close waits for the job */
    int            closed;            /* pg_server_close was called (the job finishes the close) */
    int            gone;              /* the server closed or failed under its client: never pooled */
    int            needs_password;    /* the last attempt failed for want of a password */
    const char    *reason;            /* ...with this reason */
    int            counted;           /* counted in its route's upstreams */
    PGconn        *pg;
    uint32_t       be_pid;            /* the upstream backend */
    int            adopted;           /* pg_server_adopt ran once (a pooled server is adopted again) */

    /* being opened */
    uv_timer_t     timer;
    int            timer_on;
    uint64_t       timeout_ms;
    pg_connect_t  *cn;                 /* while it is being opened, NULL once up (pg_server_adopt) */

    /* pooling (pg_pool.c) */
    uint64_t       born_at;            /* loop ms it was made (server_lifetime) */
    uint64_t       idle_since;         /* loop ms it went IDLE (server_idle_timeout, check delay) */
    char          *key;                /* user, database, startup parameters it was opened with */
    size_t         keylen;
    int            pool_op;            /* PG_POOL_RESET / PG_POOL_CHECK running, else 0 */
    int            pool_failed;        /* ...and a result of it was not the expected one */
    int            pin_found;          /* PG_POOL_PIN: 1 + the first column that was not 0 */
    int            pin_cancel;         /* PG_POOL_PIN outlived its timeout: PG_PIN_CANCEL_* */
    int            pin_answered;       /* ...and its answer came while the cancel was on its way */
    pg_session_t  *waiter;             /* resetting: the client that takes it when done */
    struct pg_server_s *rs_prev, *rs_next;   /* on its worker's list of resetting servers */
};
typedef struct pg_server_s pg_server_t;

/* A place on a worker's queue of clients due for a release check; next NULL: on none. */
typedef struct pg_due_s {
    struct pg_due_s *prev, *next;
} pg_due_t;

struct pg_session_s {
    sy_session_link_t link;           /* the client connection; first member */
    uint64_t       id;
    int            refs;
    pg_state_t     state;

    /* What every relay step reads comes first, on a few adjacent cache lines: between
     * two transactions the loop sleeps and the caches go cold, so each line a
     * transaction touches is a miss (docs/performance.md, 2026-12-07 afternoon). */
    pg_server_t   *srv;               /* the one it relays to (pg_server_attach), once routed */
    pg_server_t   *pre;               /* switchover: the next one, opened ahead of the move */
    sy_activity_t  activity;          /* the last traffic either way (client_idle_timeout) */
    /* protocol state (the part switchover builds on) */
    uint8_t        txn;               /* 'I', 'T', 'E' from the last ReadyForQuery */
    uint32_t       inflight;          /* Query/Sync sent, ReadyForQuery not yet seen */
    int            unsynced;          /* extended-protocol messages sent since the last Sync */
    int            copy_in, copy_out;
    int            s2c_cut;           /* the server stream was cut at a message boundary */
    int            server_fatal;      /* the server sent a FATAL or PANIC ErrorResponse */
    int            fatal_dropped;     /* ...while the session was idle, not relayed: it reconnects,
                                       * and the client's next query waits for the new server */
    int            terminating;       /* client sent Terminate */
    int            admin;             /* this is a console session */
    /* reconnect_window (pg_reconnect.c) */
    int            dirty;             /* the session state may have changed since it was saved */
    int            custom_set;        /* it may have set a custom setting (PG_SQL_CUSTOM),
                                       * which Postgres does not report: not released, moved
                                       * or reconnected (PG_CUSTOM_WHY) */
    int            set_local;         /* the one Query in flight is a SET LOCAL (or TRANSACTION,
                                       * CONSTRAINTS): its "SET" tag changes nothing */
    int            ro_suspect;        /* its server may have turned read-only (25006, or
                                       * in_hot_standby / default_transaction_read_only on):
                                       * looked at when idle, moved if so (pg_reconnect.c) */
    const char    *unsaved;           /* why the saved state cannot be replayed, or NULL */
    /* Messages of our own for the client that must precede anything more from the
     * server (what a move learned: ParameterStatus changes, notifications that arrived on
     * the old upstream). Fed into s2c as it drains; the server is not read meanwhile. */
    pgr_buf_t      s2c_extra;
    size_t         s2c_extra_sent;

    sy_conn_t      client;
    sy_pipe_t      c2s, s2c;          /* their server side is srv->conn (NULL: no server) */
    pgw_scan_t     cscan, sscan;

    sy_listener_t *listener;
    /* route in link; target and which in the server's link */
    int            trusted;
    int            ssl_answered;      /* SSLRequest seen */
    int            gss_answered;      /* GSSENCRequest seen (libpq may follow it with SSLRequest) */
    int            linger;            /* after our last error: read and drop until the client closes */

    /* startup */
    uint8_t       *startup;           /* copy of the client's StartupMessage */
    pg_scram_t    *scram;             /* the client's SCRAM exchange with us, while in PGS_AUTH;
                                       * NULL there: the cleartext ask for its own password */
    char          *client_password;   /* the client's own password, asked because the target
                                       * had none and its server wanted one: kept for
                                       * reconnects and moves, wiped at the end */
    pgw_startup_t  st;
    const char    *user, *database;
    uint32_t       key;
    uint32_t       client_pid;        /* the process id the client was given */
    uv_timer_t     timer;             /* the closing timer */
    int            timer_on;
    uint64_t       born_at;           /* loop ms of the accept (client_login_timeout) */

    /* ParameterStatus values the client has seen, to tell it what a move changes:
     * "name\0value\0" pairs, params_len bytes in one allocation (pg_param_seen) */
    char          *params;
    uint32_t       params_len;

    /* admin console */
    pgr_buf_t      admin_out;
    size_t         admin_sent;
    int            admin_busy;        /* an asynchronous command is running */
    int            cancels;           /* cancel jobs running for it: its server is not pooled */
    pg_server_t   *pool_wait;         /* the resetting server it waits for (pg_pool.c) */
    const char    *pin_why;           /* pinned to its server for life: why (pg_release.c) */
    pg_due_t       due;               /* waiting for a release check's turn (pg_release.c) */
    int            retake;            /* RECONNECTING is a released session's re-take */

    /* the rest of reconnect_window's state */
    PGresult      *saved[3];          /* settings, prepared statements, LISTENs, as a move reads them */
    conf_which_t   rc_which;          /* reconnecting to this target */
    uint64_t       rc_since;          /* loop ms the upstream was lost (or the first connect failed) */
    uint64_t       rc_delay;          /* the next back-off, ms */
    int            rc_attempts;
    char          *rc_why;            /* the last cause: PG_RC_WHY bytes, allocated with the
                                       * first (pg_rc_why_set), kept until the session ends */
};

void pg_admin_drive(pg_session_t *s);
void pg_server_describe(const sy_server_link_t *sv, char cols[][128]);
pg_server_t *pg_server_new(pg_session_t *s, conf_which_t which);
pg_server_t *pg_server_route(pg_session_t *s, sy_route_t *r);
void pg_server_attach(pg_session_t *s, pg_server_t *sv);
void pg_server_close(pg_server_t *sv, const char *reason);
void pg_server_unref(pg_server_t *sv);
int pg_server_job_done(pg_server_t *sv);
int pg_server_adopt(pg_server_t *sv);
void pg_client_cb(sy_conn_t *c, int status, int events);
void pg_handle_password(pg_session_t *s);
void pg_admin_begin(pg_session_t *s);
int pg_build_params(const pg_session_t *s, const pg_server_t *resolved, const conf_target_t *t, pg_params_t *pp,
                    const char **why);
void pg_close(pg_session_t *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pg_closing_drive(pg_session_t *s);
int pg_extra_drain(pg_session_t *s);
int pg_idle(const pg_session_t *s);
void pg_link_kick(sy_session_link_t *l, const char *why);
void pg_link_move(sy_session_link_t *l);
void pg_link_prepare(sy_session_link_t *l);
void pg_link_unprepare(sy_session_link_t *l);
int pg_link_quiet(sy_session_link_t *l);
void pg_link_release(sy_session_link_t *l);
/* The ParameterStatus values the client has seen: at most PG_PARAMS_MAX names shorter
 * than PG_PARAM_NAME_MAX, values cut to PG_PARAM_VAL_MAX - 1 bytes. */
#define PG_PARAMS_MAX     16
#define PG_PARAM_NAME_MAX 40
#define PG_PARAM_VAL_MAX  80
const char *pg_param_get(const pg_session_t *s, const char *name);
void pg_param_seen(pg_session_t *s, const char *name, const char *value);
/* reconnect_window's last cause (s->rc_why), allocated on first use; the text read back
 * is never NULL (pg_rc_why: "out of memory" when it could not be kept). */
#define PG_RC_WHY 256
void pg_rc_why_set(pg_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *pg_rc_why(const pg_session_t *s);
void pg_relay_begin(pg_session_t *s);
void pg_relay_drive(pg_session_t *s, sy_conn_t *c, int events);
void pg_set_state(pg_session_t *s, pg_state_t to);
void pg_update_polls(pg_session_t *s);
void pg_upstream_begin(pg_session_t *s);
void pg_watch(pg_session_t *s, sy_conn_t *c, int events, sy_conn_cb cb);
void pg_upstream_lost(pg_session_t *s, int err);
void pg_sscan_reset(pg_session_t *s);
void pg_timer_start(pg_session_t *s, uv_timer_cb cb, uint64_t ms);
int  pg_ask_upstream_password(pg_session_t *s, pg_server_t *sv);
void pg_upstream_connect(pg_session_t *s);

/* pg_move.c: the move's two halves, for a reconnect */
int  pg_state_read(PGconn *old, PGresult *out[3], char *err, size_t errlen);
int  pg_state_replay(PGconn *conn, PGresult *const st[3], char *err, size_t errlen);
void pg_notifies_take(PGconn *c, pgr_buf_t *out);
int  pg_swap_in(pg_session_t *s, pg_server_t *to, const pgr_buf_t *notifies, const char *old_reason);
void pg_release(pg_session_t *s);

/* pg_reconnect.c */
void pg_saved_free(pg_session_t *s);

/* ---- what may change session state (reconnect_window, pg_reconnect.c) ---------- */

/*
 * The header of a Query or Parse from the client, or of a CommandComplete from the
 * server (sc: the scanner that reported it). Their bodies are read (pg_dirty_query,
 * pg_dirty_tag, where they lie in the pipe: nothing is copied) only when that can tell
 * something: not while the session is dirty anyway, and not with reconnect_window off,
 * where nothing reads the answer. The session then counts as changed, so a RELOAD that
 * turns the window on has its state read before it could be reconnected. A query too
 * long to capture is assumed to change state. A query's body is read whatever the window,
 * until the session may have set a custom setting (PG_SQL_CUSTOM): a switch's move and
 * a release need to know that too.
 *
 * These run on every transaction while reconnect_window is on, so they are inline in the
 * scanners (pg_session.c) rather than calls into this concern's own file.
 */
static inline void pg_dirty_header(pg_session_t *s, pgw_scan_t *sc)
{
    int query = sc->type != 'C';
    if (query && sc->len - 4 > PGW_CAPTURE_MAX) {
        s->dirty = 1;   /* too long to look at */
    } else if (s->dirty || sy_conf()->reconnect_window == 0) {
        s->dirty = 1;
        if (!query || s->custom_set)
            pgw_scan_skip_body(sc);   /* a query is read for a custom setting (pg_dirty_query) */
    }
}

/* Why a session that may have set a custom setting is not released, moved or reconnected. */
#define PG_CUSTOM_WHY "it set a custom setting (such as SET app.x), which Postgres does not report"

/* A Query ('Q') or Parse ('P', parse = 1) body from the client, whole. A named Parse makes
 * a prepared statement; a SELECT may take an advisory lock or call set_config (their tags
 * say nothing). */
static inline void pg_dirty_query(pg_session_t *s, const uint8_t *body, size_t len, int parse)
{
    if (s->custom_set && s->dirty)
        return;
    /* the text: a Query's body up to its NUL; a Parse's after the statement's name. A
     * Query's NUL is its last byte, taken as is: one that has another before it is refused
     * by the server ("invalid message format"), and reading on past that one only makes
     * the answer more often "may". */
    const uint8_t *sql = body, *nul = !parse && len > 0 && body[len - 1] == '\0' ? body + len - 1
                                                                               : memchr(body, '\0', len);
    if (parse && nul != NULL) {
        sql = nul + 1;
        nul = memchr(sql, '\0', len - (size_t)(sql - body));
    }
    unsigned fx = pg_sql_query_effects((const char *)sql, nul != NULL ? (size_t)(nul - sql) : len - (size_t)(sql - body));
    if (fx & PG_SQL_CUSTOM)
        s->custom_set = 1;
    if (s->dirty)
        return;
    if (!parse && (fx & PG_SQL_TXN_SET) && s->inflight == 1) {
        s->set_local = 1;   /* nothing else in flight: the next tag is its own */
        return;
    }
    if ((parse && len > 0 && body[0] != '\0') || (fx & PG_SQL_STATE_FN))
        s->dirty = 1;
}

/* A CommandComplete from the server: the commands that change no session state are
 * named (pg_sql_tag_keeps_state); anything else (SET, RESET, PREPARE, DEALLOCATE, LISTEN,
 * UNLISTEN, DISCARD, DECLARE, CREATE ...) may, but for the "SET" of a SET LOCAL. */
static inline void pg_dirty_tag(pg_session_t *s, const uint8_t *body, size_t len)
{
    if (s->set_local && len >= 3 && memcmp(body, "SET", 3) == 0 && (len == 3 || body[3] == '\0')) {
        s->set_local = 0;
        return;
    }
    if (!s->dirty && !pg_sql_tag_keeps_state((const char *)body, len))
        s->dirty = 1;
}
void pg_ro_seen_param(pg_session_t *s, const char *name, const char *value);
void pg_ro_seen_error(pg_session_t *s, const char *sqlstate);
void pg_save_maybe(pg_session_t *s);
int  pg_reconnectable(const pg_session_t *s);
int  pg_reconnect_begin(pg_session_t *s, const char *why);
int  pg_connect_retry(pg_session_t *s, const char *state, const char *cause);
void pg_reconnect_retake(pg_session_t *s);
void pg_reconnect_taken(pg_session_t *s);
void pg_reconnect_attempt(pg_session_t *s);

/* pg_release.c */
void pg_release_maybe(pg_session_t *s, uint64_t now);
void pg_release_checked(pg_server_t *sv);
void pg_release_forget(pg_session_t *s);
void pg_release_wake(pg_session_t *s);

/* pg_pool.c */
enum { PG_POOL_RESET = 1, PG_POOL_CHECK = 2, PG_POOL_PIN = 3 };
enum { PG_PIN_CANCEL_NONE = 0, PG_PIN_CANCEL_RUNNING, PG_PIN_CANCEL_DONE };
int  pg_pool_keep(pg_session_t *s);
int  pg_pool_put(pg_session_t *s);
int  pg_pool_pin_check(pg_session_t *s, const char *sql);
int  pg_pool_pin_room(uv_loop_t *loop);
int  pg_pool_take(pg_session_t *s);
void pg_pool_unwait(pg_session_t *s);
void pg_pool_forget(pg_server_t *sv);
void pg_pool_idle_check(sy_server_link_t *l, uint64_t now);

#endif
