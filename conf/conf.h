/*
 * conf.h - switchyard's configuration model: listeners, routes, targets.
 *
 * Sources, later ones win:
 *   1. built-in defaults (the container's layout, see conf/switchyard.conf)
 *   2. the config file (--config FILE; without it, built-in defaults only)
 *   3. the process environment, snapshotted once at startup (conf_env_snapshot)
 *   4. the env file (--env-file): KEY=VALUE lines; it overrides the process environment,
 *      so that editing it and reloading retargets a route
 *   5. command-line overrides (-o section.name.key=value / --set)
 *
 * Config file format (INI, like pgbouncer.ini):
 *
 *     [switchyard]                 global settings
 *     key = value                  ; or # comments; blank lines ignored
 *
 *     [listener NAME]              protocol = postgres|redis, listen = host:port, ...
 *     [route NAME]                 listener = NAME, databases = a,b, builtin = ..., ...
 *
 * Targets:
 *   - Postgres built-in: a libpq conninfo string ("host=127.0.0.1 port=5433 sslmode=disable"),
 *     parsed with PQconninfoParse.
 *   - Postgres external: every variable libpq reads (PQconndefaults() lists keyword and
 *     environment variable pairs), taken from the merged environment with the route's
 *     prefix ("" for PG*, "CODEINTEL_" for CODEINTEL_PG*), stripped, with libpq's meaning.
 *     PGDATESTYLE/PGTZ/PGGEQO become "-c" entries in options, as libpq sends them.
 *     A route has an external target when <prefix>PGHOST, <prefix>PGHOSTADDR or
 *     <prefix>PGSERVICE is set.
 *   - Redis built-in: an endpoint (protocol/endpoint.h) from the config file.
 *   - Redis external: the first set variable of the route's external_env list
 *     (e.g. "REDIS_STORE_ENDPOINT,REDIS_ENDPOINT").
 *   For Postgres targets, user and dbname left unset mean "the client's own".
 *
 * Only reads files; no sockets. Every error names the file (or variable), the key and
 * the problem, e.g. "conf/switchyard.conf:12: [route pg] port: must be 1..65535".
 */
#ifndef SY_CONF_H
#define SY_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "protocol/endpoint.h"

typedef enum { CONF_PROTO_PG = 1, CONF_PROTO_REDIS } conf_proto_t;
typedef enum { CONF_BUILTIN = 0, CONF_EXTERNAL = 1 } conf_which_t;
typedef enum { CONF_LOG_LOGFMT = 0, CONF_LOG_JSON } conf_log_format_t;

/* A NULL-terminated keyword/value list, ready for PQconnectStartParams. */
typedef struct conf_kv_s {
    size_t n;
    char **keys;                /* n + 1 entries, last NULL */
    char **vals;                /* n + 1 entries, last NULL */
} conf_kv_t;

typedef struct conf_target_s {
    int          defined;       /* 0: this route has no such target */
    conf_which_t which;
    char        *source;        /* where it came from: "config [route pg] builtin" or "env PG*" */
    /* Postgres */
    conf_kv_t    pg;            /* libpq keywords; passwords included (never print them) */
    /* Redis */
    sy_endpoint_t redis;
    char        *tls_ca_file;   /* NULL: system trust store */
    char        *tls_cert;      /* optional client certificate */
    char        *tls_key;
    int          tls_insecure_skip_verify;  /* only by the loudly named option */
    /* display */
    char        *display;       /* masked: "host=db port=5432 user=sg password=****" / endpoint */
    char        *hostport;      /* "host:port" or "host1:5432,host2:5432" or "/run/pg:5433" for messages */
} conf_target_t;

typedef struct conf_listener_s {
    char        *name;
    conf_proto_t proto;
    char        *host;          /* listen address; NULL/empty: no TCP */
    int          port;
    char        *unix_path;     /* pg: a directory (socket .s.PGSQL.<port>); redis: a socket path */
    char        *tls_cert;      /* client-side TLS (pg: answer 'S' to SSLRequest) */
    char        *tls_key;
    char        *auth_password; /* client auth (required to listen beyond loopback) */
    int          unix_mode;     /* the unix socket's permission bits (default 0770) */
    char        *unix_group;    /* ...and its group (name or number); NULL: ours */
    int          unix_gid;      /* resolved unix_group, -1 when none */
    uint64_t     max_clients;   /* client connections open at once; more are refused */
} conf_listener_t;

typedef struct conf_route_s {
    char          *name;
    char          *listener;    /* listener name */
    conf_proto_t   proto;
    char         **databases;   /* pg: database names this route serves, NULL-terminated */
    int            is_default;  /* pg: serves databases no route names */
    char          *env_prefix;  /* pg: "" or "CODEINTEL_" ... */
    char          *external_env;/* redis: comma-separated variable names, first set wins */
    char          *client_password; /* redis: password clients must AUTH with; NULL: any AUTH ok */
    conf_target_t  builtin;
    conf_target_t  external;
    conf_which_t   active;      /* external if defined, else builtin; "active = builtin" overrides */
    char          *active_reason; /* why `active` is what it is, for --check and status:
                                   * "PGHOST is set", "none of REDIS_STORE_ENDPOINT,
                                   * REDIS_ENDPOINT is set", "active = builtin in the
                                   * configuration (...)"; never contains a value */
    int            pool;        /* pg: keep a left client's server connection for the next
                                 * (session pooling, pg_pool.c); default 1 */
    int            multiplex;   /* redis: stateless clients share upstreams (multiplex = on|off) */
    int            guard_config; /* redis: mask CONFIG GET secrets, refuse lock-outs
                                  * (redis_guard_config = on|off, default on) */
} conf_route_t;

/* pool's default: on (issue 9); a build can set it off with -DCONF_POOL_DEFAULT=0 */
#ifndef CONF_POOL_DEFAULT
#define CONF_POOL_DEFAULT 1
#endif
/* multiplex's default: on (issue 9); a build can set it off with -DCONF_MULTIPLEX_DEFAULT=0 */
#ifndef CONF_MULTIPLEX_DEFAULT
#define CONF_MULTIPLEX_DEFAULT 1
#endif

typedef struct conf_s {
    /* [switchyard] */
    uint32_t   max_message_size;     /* pg: largest message accepted either way, default 256 MiB */
    uint64_t   redis_max_bulk;       /* largest bulk string, default 512 MiB */
    uint32_t   redis_max_pipeline;   /* unanswered commands per client before back-pressure, 1024 */
    int        connect_timeout;      /* seconds when the target sets none, default 10 */
    int        drain_timeout;        /* seconds, default 30 (switchover, SIGTERM) */
    int        pause_max;            /* seconds a PAUSE lasts at most, default 60 */
    int        switch_hold_max;      /* seconds an atomic switch holds its route at most before
                                      * closing the sessions not at a boundary (default 5;
                                      * 0: drain_timeout alone) */
    int        client_login_timeout; /* seconds from accept to a working session (startup, TLS,
                                      * password), default 60, as Postgres's authentication_timeout */
    int        client_idle_timeout;  /* seconds a client may sit idle, outside a transaction;
                                      * 0 (default): forever */
    int        client_stall_timeout; /* seconds a client may leave a message or command half
                                      * sent, sending nothing, while we could read more
                                      * (default 60; 0: forever) */
    int        tcp_keepidle;         /* TCP keepalive on every client and server socket: seconds
                                      * idle before the first probe (0: off), default 15 */
    int        tcp_keepintvl;        /* seconds between probes, default 5 */
    int        tcp_keepcnt;          /* unanswered probes before the peer is dead, default 3 */
    int        tcp_user_timeout;     /* seconds sent data may stay unacknowledged before the
                                      * connection fails (TCP_USER_TIMEOUT), default 30; 0: the
                                      * system's (about 15 minutes of retransmissions) */
    int        workers;              /* session loops (threads); 0: auto, half the CPUs, 1 to 16 */
    /* Postgres server-connection pooling (routes with pool = on), as PgBouncer's: */
    int        pool_size;            /* idle servers kept per worker and key, default 20 */
    int        server_idle_timeout;  /* seconds an idle server is kept, default 600; 0: forever */
    int        server_lifetime;      /* seconds a server is reused at most, default 3600; 0: forever */
    int        server_check_delay;   /* an idle server is checked on reuse past this, default 30 */
    int        server_release_delay; /* a clean idle client gives its server back after this, default 30; 0: never */
    int        reconnect_window;     /* seconds sessions wait for a lost upstream, default 30; 0: off */
    char      *admin_password;       /* console password; NULL: loopback/unix only */
    char      *metrics_listen;       /* "127.0.0.1:9187"; NULL or "off": disabled */
    conf_log_format_t log_format;
    int        log_level;            /* 0 error, 1 warn, 2 info, 3 debug */

    conf_listener_t *listeners;  size_t nlisteners;
    conf_route_t    *routes;     size_t nroutes;

    char *config_path;               /* as loaded, may be NULL */
    char *env_file;                  /* may be NULL */
} conf_t;

/* The environment to resolve external targets from: a snapshot of the process
 * environment taken at startup, so reloads see the same base. */
typedef struct conf_env_s {
    size_t n;
    char **vars;                     /* "KEY=VALUE" strings, owned */
} conf_env_t;

/* Snapshot environ. */
void conf_env_snapshot(conf_env_t *env);
void conf_env_free(conf_env_t *env);
/* Look up KEY in env; NULL when unset. */
const char *conf_env_get(const conf_env_t *env, const char *key);

typedef struct conf_args_s {
    const char  *config_path;        /* NULL: built-in defaults only (they equal
                                      * conf/switchyard.conf; pass that path to load it) */
    const char  *env_file;           /* NULL: none */
    const char **overrides;          /* "listener.pg.listen=127.0.0.1:15432", "switchyard.log_level=debug" */
    size_t       noverrides;
} conf_args_t;

/*
 * Build a configuration from defaults, file, environment, env file and overrides, then
 * validate it. Returns 0 and fills *c, or -1 with a message in err[0..errlen) that names
 * the file/variable, the key and the problem (never a secret value).
 * Validation includes: unique names; each route's listener exists and has the same
 * protocol; at most one default route per listener; no two routes of a listener claim
 * the same database; ports 1..65535; a non-loopback listen address requires
 * auth_password; a route with no built-in and no external target is an error.
 */
int conf_load(conf_t *c, const conf_args_t *args, const conf_env_t *env, char *err, size_t errlen);
void conf_free(conf_t *c);

/* Find a listener / route by name; NULL if none. */
const conf_listener_t *conf_listener(const conf_t *c, const char *name);
const conf_route_t *conf_route(const conf_t *c, const char *name);

/* Route for a database name on a pg listener: exact match, else the listener's default
 * route, else NULL. On a redis listener: its one route (db is ignored, may be NULL). */
const conf_route_t *conf_route_for_database(const conf_t *c, const char *listener, const char *db);

/* Print the effective configuration (--check): listeners, routes with both targets
 * (masked), which is active and why. Passwords are always shown as ****. */
void conf_print(const conf_t *c, FILE *out);

/* Value of a libpq keyword in a target's list, or NULL. */
const char *conf_kv_get(const conf_kv_t *kv, const char *key);

/* Every libpq environment variable name (PGHOST, PGSSLMODE, ...), NULL-terminated, so
 * main can unset them in the process after the snapshot: libpq must only ever see what a
 * target passes explicitly, or a CODEINTEL_ route would silently pick up PGHOST. */
const char *const *conf_libpq_env_names(void);

/* The --help text. */
const char *conf_usage(void);

#endif /* SY_CONF_H */
