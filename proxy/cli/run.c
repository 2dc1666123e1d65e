/*
 * run.c - `switchyard run [switchyard options] -- COMMAND [ARGS...]`: switchyard as the
 * container's entry point, wrapping the application, and `switchyard --wait-ready`.
 *
 *   the environment (PG*, CODEINTEL_PG*, REDIS_*ENDPOINT, ...: the real targets)
 *     │
 *     ├─▶ the daemon: /proc/self/exe [options], in its own process group, with that
 *     │   environment and NOTIFY_SOCKET set to a private abstract socket of ours
 *     │        ──"READY=1" once every listener is bound (main.c, notify.c)──┐
 *     │                                                                      ▼
 *     │   ready = READY=1 received and every listener accepts a connection (30 s at most)
 *     │                                                                      │
 *     └─▶ rewrite (run_env_build): every route's family pointed at its       ▼
 *         listener, every credential removed ───────────────────────────▶ COMMAND
 *
 * The rewrite, for each Postgres family P ("", CODEINTEL_, CODEINSIGHTS_ and every route's
 * env_prefix): P PGHOST/PGPORT become the route's listener, P PGSSLMODE disable (prefer
 * when the listener has client TLS), P PGDATABASE the route's first database (routing is
 * by database name, so an external database name must not leak into it); P PGUSER,
 * PGAPPNAME, PGOPTIONS, PGCONNECT_TIMEOUT, PGCLIENTENCODING, PGDATESTYLE, PGTZ and PGGEQO
 * are the application's own and stay; every other libpq variable (PGPASSWORD, PGPASSFILE,
 * PGSSLKEY/CERT/ROOTCERT/CRL/..., PGHOSTADDR, PGSERVICE, PGREQUIREAUTH, ...) is removed:
 * switchyard maps credentials, and each of these would either leak the external server or
 * make libpq refuse the trusted loopback. For Redis, each route's external_env names are
 * set to its listener's host:port; a name several routes list (REDIS_ENDPOINT) goes to the
 * first of them. Any other REDIS_*ENDPOINT and any REDIS_*PASSWORD* is removed, and so are
 * SWITCHYARD_ADMIN_PASSWORD and NOTIFY_SOCKET. `--dry-run` prints exactly these changes.
 *
 * After the daemon has its copy, the values this process inherited for every variable the
 * rewrite removes or changes are overwritten in place, so /proc/<our pid>/environ (which a
 * same-user application can read) no longer holds them either.
 *
 * Supervision (signals are blocked here and taken with sigtimedwait; children get the
 * default mask back before exec):
 *   SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH  forwarded to COMMAND only: the
 *            proxy keeps serving while the application shuts down. The daemon sits in
 *            its own process group, so a terminal's Ctrl-C reaches it only through us.
 *   SIGHUP   forwarded to COMMAND, and to the daemon (RELOAD).
 *   COMMAND exits    SIGTERM to the daemon, which drains (drain_timeout), then exit with
 *                    COMMAND's status (128+N when it was killed by signal N).
 *   daemon exits     SIGTERM to COMMAND, SIGKILL after --grace seconds, exit 125.
 *   other children   reaped, as tini does: as PID 1 orphans are reparented to us, and
 *                    elsewhere we ask to be their subreaper (PR_SET_CHILD_SUBREAPER).
 * Before COMMAND has started, SIGTERM/SIGINT stop the daemon and exit 128+N.
 *
 * Exit codes: COMMAND's own; 2 bad usage or configuration (nothing started); 125
 * switchyard failed (did not become ready, or died while COMMAND ran); 126 COMMAND cannot
 * be executed; 127 COMMAND not found.
 *
 * `--wait-ready [--timeout S]` asks GET /readyz on metrics_listen until it answers 200:
 * 0 ready, 1 not ready within S seconds (default 30; the last reason on stderr), 2 bad
 * usage or metrics_listen off.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "conf/conf.h"
#include "protocol/endpoint.h"
#include "proxy/cli/cli.h"
#include "proxy/cli/notify.h"
#include "proxy/cli/run.h"

extern char **environ;

enum {
    RUN_USAGE = 2,          /* bad usage or configuration; nothing started */
    RUN_NOT_READY = 1,      /* --wait-ready: not ready within the timeout */
    RUN_FAILED = 125,       /* switchyard did not become ready, or died */
    RUN_CANNOT_EXEC = 126,
    RUN_NOT_FOUND = 127
};

#define RUN_PROBE_MS        500     /* one connect attempt to a listener */
#define RUN_TICK_MS         50      /* how often readiness is looked at while waiting */

typedef struct run_opts_s {
    conf_args_t  args;
    const char **overrides;
    const char **daemon_argv;       /* the switchyard options, in order, for the daemon */
    int          ndaemon;
    int          dry_run, help, wait_ready;
    double       timeout;           /* seconds */
    double       grace;             /* seconds between SIGTERM and SIGKILL of COMMAND */
    char       **command;           /* NULL-terminated */
} run_opts_t;

/* One change to COMMAND's environment. */
typedef struct run_change_s {
    char       *name;
    char       *value;              /* NULL: removed */
    const char *old;                /* the inherited value (in the snapshot), NULL: unset */
} run_change_t;

typedef struct run_env_s {
    run_change_t *v;
    size_t        n, cap;
} run_env_t;

/* ---- the environment rewrite ------------------------------------------------------ */

static const char *const run_pg_families[] = { "", "CODEINTEL_", "CODEINSIGHTS_", NULL };

/* libpq variables that are the application's own business and pass unchanged. */
static const char *const run_pg_keep[] = { "PGUSER", "PGAPPNAME", "PGOPTIONS", "PGCONNECT_TIMEOUT",
                                           "PGCLIENTENCODING", "PGDATESTYLE", "PGTZ", "PGGEQO", NULL };
/* ... and those the rewrite sets for a family that has a route. */
static const char *const run_pg_set[] = { "PGHOST", "PGPORT", "PGSSLMODE", "PGDATABASE", NULL };

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

static run_change_t *env_find(run_env_t *e, const char *name)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->v[i].name, name) == 0)
            return &e->v[i];
    return NULL;
}

/* Record a change (value NULL: remove). The first change to a name wins. A removal of a
 * variable that is not set is no change. */
static void env_change(run_env_t *e, const conf_env_t *snap, const char *name, const char *value)
{
    const char *old = conf_env_get(snap, name);
    if (env_find(e, name) != NULL || (value == NULL && old == NULL))
        return;
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 32;
        e->v = realloc(e->v, e->cap * sizeof(*e->v));
        if (e->v == NULL) {
            fprintf(stderr, "switchyard: out of memory\n");
            exit(RUN_FAILED);
        }
    }
    run_change_t *c = &e->v[e->n++];
    c->name = strdup(name);
    c->value = value ? strdup(value) : NULL;
    c->old = old;
}

static void env_free(run_env_t *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].name);
        free(e->v[i].value);
    }
    free(e->v);
    memset(e, 0, sizeof(*e));
}

/* Where a client on this machine reaches a listener: a wildcard address means loopback. */
static const char *connect_host(const conf_listener_t *l)
{
    if (l->host == NULL || *l->host == '\0')
        return NULL;
    if (strcmp(l->host, "0.0.0.0") == 0 || strcmp(l->host, "*") == 0)
        return "127.0.0.1";
    if (strcmp(l->host, "::") == 0 || strcmp(l->host, "[::]") == 0)
        return "::1";
    return l->host;
}

static const conf_route_t *pg_route_of_family(const conf_t *c, const char *prefix)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (c->routes[i].proto == CONF_PROTO_PG && c->routes[i].env_prefix &&
            strcmp(c->routes[i].env_prefix, prefix) == 0)
            return &c->routes[i];
    return NULL;
}

static void env_pg_family(run_env_t *e, const conf_t *c, const conf_env_t *snap, const char *prefix)
{
    char name[256], port[16];
    const conf_route_t *r = pg_route_of_family(c, prefix);
    const conf_listener_t *l = r ? conf_listener(c, r->listener) : NULL;
    if (l != NULL) {
        const char *host = connect_host(l);
        snprintf(port, sizeof(port), "%d", l->port);
        snprintf(name, sizeof(name), "%sPGHOST", prefix);
        env_change(e, snap, name, host ? host : l->unix_path);
        snprintf(name, sizeof(name), "%sPGPORT", prefix);
        env_change(e, snap, name, port);
        snprintf(name, sizeof(name), "%sPGSSLMODE", prefix);
        env_change(e, snap, name, host && l->tls_cert ? "prefer" : "disable");
        if (r->databases && r->databases[0]) {
            snprintf(name, sizeof(name), "%sPGDATABASE", prefix);
            env_change(e, snap, name, r->databases[0]);
        }
    }
    for (const char *const *v = conf_libpq_env_names(); *v; v++) {
        if (in_list(run_pg_keep, *v) || (l != NULL && in_list(run_pg_set, *v)))
            continue;
        snprintf(name, sizeof(name), "%s%s", prefix, *v);
        env_change(e, snap, name, NULL);
    }
}

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static void env_redis(run_env_t *e, const conf_t *c, const conf_env_t *snap)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const conf_route_t *r = &c->routes[i];
        const conf_listener_t *l = conf_listener(c, r->listener);
        const char *host = l ? connect_host(l) : NULL;
        if (r->proto != CONF_PROTO_REDIS || r->external_env == NULL || host == NULL)
            continue;
        char ep[300], *names = strdup(r->external_env), *save = NULL;
        snprintf(ep, sizeof(ep), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, l->port);
        for (char *n = strtok_r(names, ", \t", &save); n; n = strtok_r(NULL, ", \t", &save))
            env_change(e, snap, n, ep);
        free(names);
    }
    /* Whatever else names a Redis server or its password would bypass the proxy. */
    for (size_t i = 0; i < snap->n; i++) {
        const char *kv = snap->vars[i], *eq = strchr(kv, '=');
        char name[256];
        size_t n = (size_t)(eq - kv);
        if (n >= sizeof(name))
            continue;
        memcpy(name, kv, n);
        name[n] = '\0';
        if (has_prefix(name, "REDIS_") &&
            ((n >= 8 && strcmp(name + n - 8, "ENDPOINT") == 0) || strstr(name, "PASSWORD")))
            env_change(e, snap, name, NULL);
    }
}

/* Every change COMMAND's environment gets, from the snapshot of ours and the configuration. */
static void run_env_build(run_env_t *e, const conf_t *c, const conf_env_t *snap)
{
    for (const char *const *f = run_pg_families; *f; f++)
        env_pg_family(e, c, snap, *f);
    for (size_t i = 0; i < c->nroutes; i++)
        if (c->routes[i].proto == CONF_PROTO_PG && c->routes[i].env_prefix)
            env_pg_family(e, c, snap, c->routes[i].env_prefix);
    env_redis(e, c, snap);
    env_change(e, snap, "SWITCHYARD_ADMIN_PASSWORD", NULL);
    env_change(e, snap, "NOTIFY_SOCKET", NULL);
}

/* A NULL-terminated "KEY=VALUE" vector: the snapshot with the changes applied (extra, if
 * not NULL, is added). Strings are the snapshot's or owned by *own (freed by the caller). */
static char **env_vector(const run_env_t *e, const conf_env_t *snap, const char *drop, const char *extra,
                         char ***own, size_t *nown)
{
    size_t nchanges = e ? e->n : 0;
    char **out = calloc(snap->n + nchanges + 2, sizeof(char *));
    *own = calloc(nchanges + 2, sizeof(char *));
    *nown = 0;
    if (out == NULL || *own == NULL) {
        fprintf(stderr, "switchyard: out of memory\n");
        exit(RUN_FAILED);
    }
    size_t k = 0;
    for (size_t i = 0; i < snap->n; i++) {
        const char *kv = snap->vars[i];
        size_t n = (size_t)(strchr(kv, '=') - kv);
        int changed = 0;
        for (size_t j = 0; e && j < e->n && !changed; j++)
            changed = strlen(e->v[j].name) == n && strncmp(e->v[j].name, kv, n) == 0;
        if (!changed && !(drop && strlen(drop) == n && strncmp(drop, kv, n) == 0))
            out[k++] = snap->vars[i];
    }
    for (size_t j = 0; e && j < e->n; j++) {
        if (e->v[j].value == NULL)
            continue;
        size_t len = strlen(e->v[j].name) + strlen(e->v[j].value) + 2;
        char *s = malloc(len);
        snprintf(s, len, "%s=%s", e->v[j].name, e->v[j].value);
        (*own)[(*nown)++] = out[k++] = s;
    }
    if (extra)
        out[k++] = (char *)extra;
    out[k] = NULL;
    return out;
}

/* How a value is shown by --dry-run: secrets as ****, URL credentials masked. */
static void show_value(FILE *f, const char *name, const char *v)
{
    if (v == NULL) {
        fputs("unset", f);
        return;
    }
    if (strstr(name, "PASSWORD") != NULL) {
        fputs("****", f);
        return;
    }
    const char *scheme = strstr(v, "://"), *at = scheme ? strrchr(scheme, '@') : NULL;
    if (at != NULL) {
        sy_endpoint_t ep;
        const char *perr;
        char buf[600];
        if (has_prefix(name, "REDIS_") && sy_endpoint_parse(v, &ep, &perr) == 0 &&
            sy_endpoint_format_masked(&ep, buf, sizeof(buf)) < (int)sizeof(buf)) {
            fputs(buf, f);
            return;
        }
        fprintf(f, "%.*s****%s", (int)(scheme + 3 - v), v, at);
        return;
    }
    fputs(v, f);
}

static void print_changes(FILE *f, const run_env_t *e, char **command)
{
    fprintf(f, "switchyard run: COMMAND's environment, %zu change%s (everything else is passed unchanged):\n",
            e->n, e->n == 1 ? "" : "s");
    for (size_t i = 0; i < e->n; i++) {
        const run_change_t *c = &e->v[i];
        if (c->value)
            fprintf(f, "  set   %s=%s (was ", c->name, c->value);
        else
            fprintf(f, "  unset %s (was ", c->name);
        show_value(f, c->name, c->old);
        fputs(")\n", f);
    }
    fputs("then runs:", f);
    for (char **a = command; a && *a; a++)
        fprintf(f, " %s", *a);
    fputc('\n', f);
}

/* Overwrite, in this process's own environment block, the inherited value of every
 * variable COMMAND does not get as it was. */
static void scrub_own_environ(const run_env_t *e)
{
    for (char **v = environ; v && *v; v++) {
        char *eq = strchr(*v, '=');
        if (eq == NULL)
            continue;
        for (size_t j = 0; j < e->n; j++)
            if (strlen(e->v[j].name) == (size_t)(eq - *v) && strncmp(e->v[j].name, *v, (size_t)(eq - *v)) == 0)
                memset(eq + 1, 0, strlen(eq + 1));
    }
}

/* ---- connecting, for readiness -------------------------------------------------------- */

/* Connect within timeout_ms; returns the fd (blocking again) or -1. */
static int connect_addr(const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, sa, len) != 0) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0;
        socklen_t el = sizeof(err);
        if (errno != EINPROGRESS || poll(&p, 1, timeout_ms) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
            close(fd);
            return -1;
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static int connect_tcp(const char *host, int port, int timeout_ms)
{
    struct addrinfo hints, *res = NULL;
    char ps[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai->ai_addr, ai->ai_addrlen, timeout_ms);
    freeaddrinfo(res);
    return fd;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    return connect_addr((struct sockaddr *)&sa, sizeof(sa), RUN_PROBE_MS);
}

/* 1 when every address of the listener accepts a connection. */
static int listener_accepts(const conf_listener_t *l)
{
    const char *host = connect_host(l);
    if (host != NULL) {
        int fd = connect_tcp(host, l->port, RUN_PROBE_MS);
        if (fd < 0)
            return 0;
        close(fd);
    }
    if (l->unix_path && *l->unix_path) {
        char path[512];
        if (l->proto == CONF_PROTO_PG)
            snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", l->unix_path, l->port);
        else
            snprintf(path, sizeof(path), "%s", l->unix_path);
        int fd = connect_unix(path);
        if (fd < 0)
            return 0;
        close(fd);
    }
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- options -------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs(
"Usage: switchyard run [OPTIONS] -- COMMAND [ARGS...]\n"
"       switchyard --wait-ready [--timeout S] [-c FILE] [-o KEY=VALUE]\n"
"\n"
"run: start switchyard with the real targets from this environment, wait until every\n"
"listener accepts, then run COMMAND with its environment pointed at the listeners:\n"
"PGHOST/PGPORT/PGSSLMODE/PGDATABASE of each family (PG*, CODEINTEL_PG*, CODEINSIGHTS_PG*)\n"
"at the postgres listener, REDIS_ENDPOINT and REDIS_*_ENDPOINT at the redis listeners, and\n"
"no password, passfile, service or TLS key: COMMAND never sees an external credential.\n"
"Signals go to COMMAND (SIGHUP also reloads switchyard); when COMMAND exits, switchyard\n"
"drains and the exit status is COMMAND's.\n"
"\n"
"  -c, --config FILE    the daemon's config file (as for switchyard itself)\n"
"  --env-file FILE      as for switchyard itself (COMMAND never sees it)\n"
"  -o, --set SECTION.KEY=VALUE   as for switchyard itself\n"
"  --dry-run            print which variables COMMAND gets changed, and to what (secrets\n"
"                       masked), and exit\n"
"  --timeout S          run: how long switchyard may take to listen (default 30);\n"
"                       --wait-ready: how long to wait for /readyz (default 30)\n"
"  --grace S            when switchyard fails, seconds between SIGTERM and SIGKILL of\n"
"                       COMMAND (default 10)\n"
"  -h, --help           this text\n"
"\n"
"--wait-ready: exit 0 once the running instance's /readyz (on metrics_listen) answers 200.\n"
"\n"
"Exit status: run: COMMAND's (128+N if signal N killed it); 2 bad usage or configuration;\n"
"125 switchyard did not become ready or died; 126 COMMAND cannot be executed; 127 not\n"
"found. --wait-ready: 0 ready, 1 not ready in time, 2 bad usage or metrics_listen off.\n",
        f);
}

static const char *const run_value_opts[] = { "-c", "--config", "--env-file", "-o", "--set", "--timeout",
                                              "--grace", NULL };

int sy_run_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--wait-ready") == 0)
            return 2;
        if (strcmp(a, "--") == 0)
            return i + 1 < argc && strcmp(argv[i + 1], "run") == 0;
        if (a[0] == '-') {
            if (in_list(run_value_opts, a))
                i++;
            continue;
        }
        return strcmp(a, "run") == 0;
    }
    return 0;
}

static int parse_seconds(const char *opt, const char *v, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || !(d > 0) || d > 86400) {
        fprintf(stderr, "switchyard: %s: want a number of seconds, got '%s'\n", opt, v);
        return -1;
    }
    *out = d;
    return 0;
}

static int parse_args(int argc, char **argv, run_opts_t *o)
{
    int seen_run = 0;
    o->timeout = 30;
    o->grace = 10;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        const char *v = NULL;
        size_t alen = strcspn(a, "=");
        if (strcmp(a, "--") == 0) {
            if (!seen_run && i + 1 < argc && strcmp(argv[i + 1], "run") == 0) {
                seen_run = 1;
                i++;
                continue;
            }
            o->command = argv + i + 1;
            break;
        }
        if (a[0] != '-') {
            if (!seen_run && !o->wait_ready && strcmp(a, "run") == 0) {
                seen_run = 1;
                continue;
            }
            o->command = argv + i;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
            continue;
        }
        if (strcmp(a, "--dry-run") == 0) {
            o->dry_run = 1;
            continue;
        }
        if (strcmp(a, "--wait-ready") == 0) {
            o->wait_ready = 1;
            continue;
        }
        /* the rest take a value, as "--opt VALUE" or "--opt=VALUE" */
        char opt[32];
        if (alen >= sizeof(opt)) {
            fprintf(stderr, "switchyard run: unknown option '%s' (see switchyard run --help)\n", a);
            return -1;
        }
        memcpy(opt, a, alen);
        opt[alen] = '\0';
        if (!in_list(run_value_opts, opt)) {
            fprintf(stderr, "switchyard run: unknown option '%s' (see switchyard run --help)\n", a);
            return -1;
        }
        if (a[alen] == '=')
            v = a + alen + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            fprintf(stderr, "switchyard run: %s needs a value\n", opt);
            return -1;
        }
        if (strcmp(opt, "--timeout") == 0) {
            if (parse_seconds(opt, v, &o->timeout) != 0)
                return -1;
        } else if (strcmp(opt, "--grace") == 0) {
            if (parse_seconds(opt, v, &o->grace) != 0)
                return -1;
        } else {
            int is_set = strcmp(opt, "-o") == 0 || strcmp(opt, "--set") == 0;
            int is_conf = strcmp(opt, "-c") == 0 || strcmp(opt, "--config") == 0;
            o->daemon_argv[o->ndaemon++] = is_set ? "-o" : is_conf ? "--config" : "--env-file";
            o->daemon_argv[o->ndaemon++] = strdup(v);
            if (is_set)
                o->args.overrides[o->args.noverrides++] = o->daemon_argv[o->ndaemon - 1];
            else if (is_conf)
                o->args.config_path = o->daemon_argv[o->ndaemon - 1];
            else
                o->args.env_file = o->daemon_argv[o->ndaemon - 1];
            if (is_set)
                sy_cli_scrub_arg(a[alen] == '=' ? a : argv[i]);
        }
    }
    if (!o->help && !o->wait_ready && (o->command == NULL || o->command[0] == NULL) && !o->dry_run) {
        fprintf(stderr, "switchyard run: no COMMAND (usage: switchyard run [OPTIONS] -- COMMAND [ARGS...])\n");
        return -1;
    }
    return 0;
}

/* ---- --wait-ready ------------------------------------------------------------------- */

/* GET /readyz once: 1 ready, 0 not (reason in why). */
static int readyz_once(const char *host, int port, char *why, size_t whylen)
{
    int fd = connect_tcp(host, port, 1000);
    if (fd < 0) {
        snprintf(why, whylen, "cannot connect to %s:%d: %s", host, port, strerror(errno ? errno : ECONNREFUSED));
        return 0;
    }
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    static const char req[] = "GET /readyz HTTP/1.0\r\nHost: switchyard\r\n\r\n";
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
        snprintf(why, whylen, "cannot send to %s:%d", host, port);
        close(fd);
        return 0;
    }
    while (len < sizeof(buf) - 1 && (n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    int ok = len >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 8, " 200", 4) == 0;
    if (!ok) {
        const char *body = strstr(buf, "\r\n\r\n");
        const char *text = body ? body + 4 : (len ? buf : "no answer");
        size_t tl = strcspn(text, "\r\n");    /* the first reason is enough */
        snprintf(why, whylen, "%.*s", (int)(tl < whylen ? tl : whylen - 1), text);
    }
    return ok;
}

static int wait_ready(const conf_t *c, double timeout)
{
    const char *addr = c->metrics_listen;
    if (addr == NULL || *addr == '\0' || strcmp(addr, "off") == 0) {
        fprintf(stderr, "switchyard: --wait-ready asks /readyz on metrics_listen, which is off\n");
        return RUN_USAGE;
    }
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    const char *hs = addr;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        hs++;
        hl -= 2;
    }
    if (colon == NULL || hl == 0 || hl >= sizeof(host)) {
        fprintf(stderr, "switchyard: metrics_listen: bad address %s\n", addr);
        return RUN_USAGE;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    conf_listener_t l = { .host = host };
    const char *h = connect_host(&l);
    double deadline = now_s() + timeout;
    char why[512] = "no answer";
    for (;;) {
        if (readyz_once(h, atoi(colon + 1), why, sizeof(why)))
            return 0;
        if (now_s() > deadline) {
            fprintf(stderr, "switchyard: not ready after %gs: %s\n", timeout, why);
            return RUN_NOT_READY;
        }
        usleep(200 * 1000);
    }
}

/* ---- supervision ----------------------------------------------------------------------- */

typedef struct run_sup_s {
    pid_t daemon, app;
    int   daemon_status, app_status;    /* wait statuses, valid once the pid is 0 */
    int   notify_fd;
    int   ready_seen;
} run_sup_t;

static sigset_t run_sigs;

static void child_exec(const char *path, char *const argv[], char *const envp[], int own_group)
{
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&run_sigs, s))
            signal(s, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (own_group)
        setpgid(0, 0);
    if (strchr(path, '/') != NULL)
        execve(path, argv, envp);
    else
        execvpe(path, argv, envp);
    int e = errno;
    fprintf(stderr, "switchyard run: cannot execute %s: %s\n", path, strerror(e));
    _exit(e == ENOENT ? RUN_NOT_FOUND : RUN_CANNOT_EXEC);
}

/* Reap every child that has exited; remembers the daemon's and COMMAND's statuses. */
static void reap(run_sup_t *s)
{
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        if (p == s->daemon) {
            s->daemon = 0;
            s->daemon_status = st;
        } else if (p == s->app) {
            s->app = 0;
            s->app_status = st;
        }
    }
}

static int exit_code_of(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return RUN_FAILED;
}

static void describe_status(char *out, size_t len, int st)
{
    if (WIFSIGNALED(st))
        snprintf(out, len, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(out, len, "exited with status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

/* Wait up to ms for a signal; returns it, or 0 on timeout. */
static int next_signal(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    siginfo_t si;
    int sig = sigtimedwait(&run_sigs, &si, &ts);
    return sig > 0 ? sig : 0;
}

static void drain_notify(run_sup_t *s)
{
    char buf[512];
    ssize_t n;
    while ((n = recv(s->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
        buf[n] = '\0';
        for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, "READY=1", 7) == 0 && (line[7] == '\n' || line[7] == '\0'))
                s->ready_seen = 1;
    }
}

/* A private abstract datagram socket for the daemon's READY=1; *name gets "@...". */
static int notify_open(char *name, size_t len)
{
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)time(NULL);
    snprintf(name, len, "@switchyard-run/%d/%08x", (int)getpid(), rnd);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(sa.sun_path, name, n);
    sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Start the daemon and wait until it is ready. Returns 0, or an exit code. */
static int start_daemon(run_sup_t *s, const run_opts_t *o, const conf_t *c, const run_env_t *e,
                        const conf_env_t *snap)
{
    char name[128], notify_env[160];
    s->notify_fd = notify_open(name, sizeof(name));
    if (s->notify_fd < 0) {
        fprintf(stderr, "switchyard run: cannot open a notify socket: %s\n", strerror(errno));
        return RUN_FAILED;
    }
    snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", name);
    char **own;
    size_t nown;
    char **envp = env_vector(NULL, snap, "NOTIFY_SOCKET", notify_env, &own, &nown);
    const char **argv = calloc((size_t)o->ndaemon + 2, sizeof(char *));
    argv[0] = "switchyard";
    for (int i = 0; i < o->ndaemon; i++)
        argv[i + 1] = o->daemon_argv[i];
    s->daemon = fork();
    if (s->daemon == 0)
        child_exec("/proc/self/exe", (char *const *)argv, envp, 1);
    free(argv);
    free(envp);
    free(own);
    if (s->daemon < 0) {
        fprintf(stderr, "switchyard run: fork: %s\n", strerror(errno));
        return RUN_FAILED;
    }
    setpgid(s->daemon, s->daemon);      /* as the child does: whichever runs first */
    scrub_own_environ(e);

    double deadline = now_s() + o->timeout;
    for (;;) {
        drain_notify(s);
        if (s->ready_seen) {
            size_t ok = 0;
            while (ok < c->nlisteners && listener_accepts(&c->listeners[ok]))
                ok++;
            if (ok == c->nlisteners)
                return 0;
        }
        int sig = next_signal(RUN_TICK_MS);
        if (sig == SIGCHLD)
            reap(s);
        else if (sig == SIGHUP)
            kill(s->daemon, SIGHUP);
        else if (sig != 0) {        /* asked to stop before COMMAND started */
            kill(s->daemon, SIGTERM);
            while (s->daemon != 0) {
                next_signal(RUN_TICK_MS);
                reap(s);
            }
            return 128 + sig;
        }
        if (s->daemon == 0) {
            char how[64];
            describe_status(how, sizeof(how), s->daemon_status);
            fprintf(stderr, "switchyard run: switchyard %s before it was ready; COMMAND not started\n", how);
            return RUN_FAILED;
        }
        if (now_s() > deadline) {
            fprintf(stderr, "switchyard run: switchyard not %s after %gs; COMMAND not started\n",
                    s->ready_seen ? "accepting on every listener" : "ready", o->timeout);
            kill(s->daemon, SIGKILL);
            while (s->daemon != 0 && waitpid(s->daemon, &s->daemon_status, 0) == s->daemon)
                s->daemon = 0;
            return RUN_FAILED;
        }
    }
}

/* COMMAND runs: forward signals until it or the daemon ends; returns the exit code. */
static int supervise(run_sup_t *s, const run_opts_t *o)
{
    int daemon_failed = 0;
    double kill_at = 0;
    char how[64];
    for (;;) {
        int sig = next_signal(200);
        if (sig == SIGCHLD) {
            reap(s);
        } else if (sig != 0) {
            if (s->app != 0)
                kill(s->app, sig);
            if (s->daemon != 0 && (sig == SIGHUP || s->app == 0))
                kill(s->daemon, sig);   /* RELOAD; or a second stop while it drains */
        }
        if (s->app == 0 && s->daemon != 0 && !daemon_failed && kill_at == 0) {
            kill(s->daemon, SIGTERM);   /* drain, then the daemon exits */
            kill_at = -1;
        }
        if (s->daemon == 0 && s->app != 0 && !daemon_failed) {
            describe_status(how, sizeof(how), s->daemon_status);
            fprintf(stderr, "switchyard run: switchyard %s; stopping COMMAND (pid %d)\n", how, (int)s->app);
            daemon_failed = 1;
            kill(s->app, SIGTERM);
            kill_at = now_s() + o->grace;
        }
        if (daemon_failed && s->app != 0 && kill_at > 0 && now_s() > kill_at) {
            kill(s->app, SIGKILL);
            kill_at = -1;
        }
        if (s->app == 0 && s->daemon == 0)
            break;
    }
    if (daemon_failed)
        return RUN_FAILED;
    if (!(WIFEXITED(s->daemon_status) && WEXITSTATUS(s->daemon_status) == 0)) {
        describe_status(how, sizeof(how), s->daemon_status);
        fprintf(stderr, "switchyard run: switchyard %s while draining\n", how);
    }
    return exit_code_of(s->app_status);
}

static int run_command(const run_opts_t *o, const conf_t *c, const run_env_t *e, const conf_env_t *snap)
{
    run_sup_t s;
    memset(&s, 0, sizeof(s));
    sigemptyset(&run_sigs);
    int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&run_sigs, sigs[i]);
    sigprocmask(SIG_BLOCK, &run_sigs, NULL);
    if (getpid() != 1)
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    int rc = start_daemon(&s, o, c, e, snap);
    if (rc != 0) {
        close(s.notify_fd);
        return rc;
    }
    /* Ready: tell a supervising systemd (the NOTIFY_SOCKET we were given; our environ's
     * copy is scrubbed by now), then start COMMAND. */
    const char *outer = conf_env_get(snap, "NOTIFY_SOCKET");
    if (outer != NULL && *outer != '\0') {
        char msg[64];
        snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%d", (int)getpid());
        sy_notify_send(outer, msg);
    }
    char **own;
    size_t nown;
    char **envp = env_vector(e, snap, NULL, NULL, &own, &nown);
    s.app = fork();
    if (s.app == 0)
        child_exec(o->command[0], o->command, envp, 0);
    for (size_t i = 0; i < nown; i++)
        free(own[i]);
    free(own);
    free(envp);
    if (s.app < 0) {
        fprintf(stderr, "switchyard run: fork: %s\n", strerror(errno));
        s.app = 0;
        s.app_status = RUN_FAILED << 8;
    }
    rc = supervise(&s, o);
    close(s.notify_fd);
    return rc;
}

int sy_run_main(int argc, char **argv)
{
    int rc = RUN_USAGE, have_conf = 0;
    char err[1024];
    run_opts_t o;
    run_env_t e;
    conf_env_t snap;
    conf_t conf;

    memset(&o, 0, sizeof(o));
    memset(&conf, 0, sizeof(conf));
    memset(&snap, 0, sizeof(snap));
    memset(&e, 0, sizeof(e));
    o.overrides = calloc((size_t)argc + 1, sizeof(char *));
    o.daemon_argv = calloc((size_t)argc * 2 + 1, sizeof(char *));
    if (o.overrides == NULL || o.daemon_argv == NULL) {
        fprintf(stderr, "switchyard: out of memory\n");
        goto out;
    }
    o.args.overrides = o.overrides;
    if (parse_args(argc, argv, &o) != 0)
        goto out;
    if (o.help) {
        usage(stdout);
        rc = 0;
        goto out;
    }
    conf_env_snapshot(&snap);
    if (conf_load(&conf, &o.args, &snap, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        goto out;
    }
    have_conf = 1;
    if (o.wait_ready) {
        rc = wait_ready(&conf, o.timeout);
        goto out;
    }
    run_env_build(&e, &conf, &snap);
    if (o.dry_run) {
        print_changes(stdout, &e, o.command);
        rc = 0;
        goto out;
    }
    rc = run_command(&o, &conf, &e, &snap);
out:
    env_free(&e);
    if (have_conf)
        conf_free(&conf);
    conf_env_free(&snap);
    for (int i = 1; o.daemon_argv && i < o.ndaemon; i += 2)
        free((char *)o.daemon_argv[i]);
    free(o.daemon_argv);
    free(o.overrides);
    return rc;
}
