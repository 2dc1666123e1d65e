/*
 * main.c - switchyard's entry point: parse flags, load and validate the configuration,
 * open the listeners and run the loop.
 *
 * The process environment is snapshotted once (conf_env_snapshot) and then every libpq
 * variable is removed from it: libpq must only see what a target passes explicitly,
 * or a CODEINTEL_ route with no CODEINTEL_PGHOST would quietly inherit PGHOST.
 * Secrets are then blanked where /proc/PID/environ shows them (scrub_environ), as argv's
 * are (scrub_arg).
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/resource.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif
#include "proxy/core/sy.h"
#include "proxy/cli/cli.h"
#include "proxy/cli/notify.h"
#include "proxy/control/metrics.h"
#include "proxy/control/sentinel.h"

sy_server_t sy_server;
static uv_signal_t sig_term, sig_int, sig_hup;

/*
 * Leave the process now. Not exit(): libuv's destructor joins its thread-pool threads,
 * and one may sit in a blocking connect to a dead target (a health probe, a precheck) for
 * its whole connect_timeout. Sanitizer builds still get their leak check first.
 */
static void sy_exit(int code) __attribute__((noreturn));
static void sy_exit(int code)
{
    fflush(stdout);
    fflush(stderr);
#ifdef __SANITIZE_ADDRESS__
    __lsan_do_leak_check();
#endif
    _exit(code);
}
static uv_timer_t drain_timer;

static void random_fill(void *out, size_t len)
{
    uint8_t *p = out;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Small draws (a cancel key per Postgres client) come from a block of the kernel's random
 * bytes kept per thread, one getrandom per 64 keys instead of one per connection; each
 * byte is handed out once and wiped as it goes. */
void sy_random(void *out, size_t len)
{
    static __thread uint8_t pool[256];
    static __thread size_t left;
    if (len > sizeof(pool) / 4) {
        random_fill(out, len);
        return;
    }
    if (left < len) {
        random_fill(pool, sizeof(pool));
        left = sizeof(pool);
    }
    uint8_t *from = pool + sizeof(pool) - left;
    memcpy(out, from, len);
    memset(from, 0, len);
    left -= len;
}

sy_route_t *sy_route_find(const char *name)
{
    for (size_t i = 0; i < sy_server.nroutes; i++)
        if (strcmp(sy_server.routes[i].conf->name, name) == 0)
            return &sy_server.routes[i];
    return NULL;
}

sy_route_t *sy_route_for_database(const sy_listener_t *l, const char *db)
{
    const conf_route_t *cr = conf_route_for_database(sy_conf(), l->conf->name, db);
    return cr ? sy_route_find(cr->name) : NULL;
}

sy_route_t *sy_route_for_listener(const sy_listener_t *l)
{
    for (size_t i = 0; i < sy_server.nroutes; i++)
        if (strcmp(sy_server.routes[i].conf->listener, l->conf->name) == 0)
            return &sy_server.routes[i];
    return NULL;
}

static void exit_now_cb(uv_timer_t *t)
{
    sy_info("event=exit reason=drain_deadline clients=%llu", (unsigned long long)SY_LOAD(sy_server.nclients));
    sy_exit(0);
}

/* On each worker: every session it has gets the "shutting down" error. */
static void kick_list(sy_session_link_t *head)
{
    for (sy_session_link_t *l = head->next, *next; l != head; l = next) {
        next = l->next;   /* a kick unlinks only the session it closes */
        if (l->kick != NULL && !l->kicked) {
            l->kicked = 1;
            l->kick(l, "switchyard is shutting down; reconnect");
        }
    }
}

static void kick_each(void *ctx, int worker)
{
    for (size_t i = 0; i <= sy_server.nroutes; i++)
        for (int st = 0; st < SY_CLIENT_NSTATES; st++)
            kick_list(sy_worker_sessions_of(worker, i ? &sy_server.routes[i - 1] : NULL, (sy_client_state_t)st));
}

static void kicked_all(void *ctx)
{
    if (SY_LOAD(sy_server.nclients) == 0)
        sy_main_quit();
}

/* The drain deadline: every remaining client gets the "shutting down" error, then we go. */
static void drain_timeout_cb(uv_timer_t *t)
{
    sy_info("event=shutdown_deadline clients=%llu", (unsigned long long)SY_LOAD(sy_server.nclients));
    if (sy_run_on_all(kick_each, kicked_all, NULL) != 0)
        sy_main_quit();
    uv_timer_start(t, exit_now_cb, 2000, 0);   /* errors get 2 s to reach their clients */
}

static void sighup_cb(uv_signal_t *h, int signum)
{
    char msg[1024];
    sy_info("event=reload_begin source=SIGHUP");
    if (sy_reload(msg, sizeof(msg)) != 0)
        sy_warn("event=reload_refused message=\"%s\"", msg);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    if (sy_server.stopping) {
        sy_info("event=shutdown reason=second_signal");
        sy_exit(0);
    }
    SY_STORE(sy_server.stopping, 1);
    sy_info("event=shutdown_begin signal=%d clients=%llu", signum, (unsigned long long)SY_LOAD(sy_server.nclients));
    sy_listeners_stop();
    sy_metrics_stop();
    if (SY_LOAD(sy_server.nclients) == 0) {
        sy_main_quit();
        return;
    }
    uv_timer_init(sy_server.loop, &drain_timer);
    uv_timer_start(&drain_timer, drain_timeout_cb, (uint64_t)sy_conf()->drain_timeout * 1000, 0);
    uv_unref((uv_handle_t *)&drain_timer);
}

/* On a worker, the main loop is asked to look (it calls this again there). */
void sy_server_client_gone(void)
{
    if (!sy_on_main()) {
        if (SY_LOAD(sy_server.stopping))
            sy_ctl_wake();
        return;
    }
    if (SY_LOAD(sy_server.stopping) && SY_LOAD(sy_server.nclients) == 0)
        sy_main_quit();
}

static void usage(FILE *f)
{
    fputs(conf_usage(), f);
}

/* Hide secrets given with -o from ps: overwrite the value in argv. */
static void scrub_arg(char *arg)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL)
        return;
    if (strstr(arg, "password") == NULL && strstr(arg, "PASSWORD") == NULL)
        return;
    for (char *p = eq + 1; *p; p++)
        *p = '*';
}

/*
 * Every allocation of 16 KiB or more gets a mapping of its own, given back to the kernel
 * when it is freed: libpq's two 16 KiB buffers of each server connection above all, and
 * OpenSSL's record buffers. glibc's default threshold starts at 128 KiB, so they sat in
 * the worker's heap, each touching its first and last page and, once freed, leaving holes
 * between the pieces that stayed (bench/idle_bench.sh, 5,000 Postgres + 5,000 Redis idle
 * clients: 67.7 MiB without, 34.2 MiB with; see docs/performance.md). A mapping touches
 * only the pages written to: a server's input buffer that holds a ReadyForQuery is one
 * page. The cost is an mmap and a munmap per such buffer, once per server connection.
 * Setting it also stops glibc from raising the threshold as big blocks are freed.
 */
#define SY_MMAP_THRESHOLD (16 * 1024)

/* Each client is an fd: take the whole hard limit of open files (the usual soft 1024 is
 * about 500 Redis clients). Past it the listeners refuse clients (listener.c). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Is the variable name[0..n) one of c's Redis endpoint variables (a route's external_env)? */
static int redis_endpoint_var(const conf_t *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const char *l = c->routes[i].proto == CONF_PROTO_REDIS ? c->routes[i].external_env : NULL;
        while (l && *l) {
            size_t len = strcspn(l, ", ");
            if (len == n && strncmp(l, name, n) == 0)
                return 1;
            l += len;
            l += strspn(l, ", ");
        }
    }
    return n > 6 && strncmp(name, "REDIS_", 6) == 0;
}

/*
 * /proc/PID/environ shows the environment block the process was started with, whatever
 * unsetenv later does to the environ array. Once the snapshot holds the values, blank the
 * secrets there, in place (as setproctitle implementations reuse that block): every
 * *PASSWORD* variable and every Redis endpoint variable (its URL may carry a password),
 * then unset the endpoint variables as the libpq ones are. The strings environ points to
 * still are that block, since nothing has called setenv yet.
 */
static void scrub_environ(const conf_t *c)
{
    for (char **e = environ; e && *e; e++) {
        char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        size_t n = (size_t)(eq - *e);
        if (memmem(*e, n, "PASSWORD", 8) != NULL || redis_endpoint_var(c, *e, n))
            memset(eq + 1, 0, strlen(eq + 1));
    }
    for (;;) {                  /* unsetenv reshuffles environ: look again after each */
        char **e = environ, *eq = NULL;
        for (; e && *e; e++)
            if ((eq = strchr(*e, '=')) != NULL && redis_endpoint_var(c, *e, (size_t)(eq - *e)))
                break;
        if (e == NULL || *e == NULL)
            break;
        char *name = strndup(*e, (size_t)(eq - *e));
        if (name == NULL || unsetenv(name) != 0) {  /* removes every entry of that name */
            free(name);
            break;
        }
        free(name);
    }
}

/* Kept for the life of the process: RELOAD applies the same overrides again. */
static const char **overrides;

int main(int argc, char **argv)
{
    conf_args_t args;
    int check = 0;
    char err[1024];

    mallopt(M_MMAP_THRESHOLD, SY_MMAP_THRESHOLD);   /* before OpenSSL and libpq allocate */
    if (sy_tls_init() != 0) {
        fprintf(stderr, "switchyard: cannot initialise OpenSSL\n");
        return 1;
    }
    if (sy_cli_is_subcommand(argc, argv))
        return sy_cli_main(argc, argv);
    overrides = calloc((size_t)argc + 1, sizeof(char *));
    memset(&args, 0, sizeof(args));
    args.overrides = overrides;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("switchyard %s\n", SY_VERSION);
            return 0;
        } else if (strcmp(a, "--check") == 0) {
            check = 1;
        } else if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) {
            args.config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            args.config_path = a + 9;
        } else if (strcmp(a, "--env-file") == 0 && i + 1 < argc) {
            args.env_file = argv[++i];
        } else if (strncmp(a, "--env-file=", 11) == 0) {
            args.env_file = a + 11;
        } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--set") == 0) && i + 1 < argc) {
            overrides[args.noverrides++] = strdup(argv[++i]);
            scrub_arg(argv[i]);
        } else {
            fprintf(stderr, "switchyard: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }

    raise_fd_limit();
    conf_env_snapshot(&sy_server.env);
    sy_server.conf = calloc(1, sizeof(conf_t));
    if (sy_server.conf == NULL) {
        fprintf(stderr, "switchyard: out of memory\n");
        return 1;
    }
    if (conf_load(sy_server.conf, &args, &sy_server.env, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 2;   /* bad configuration, as --help documents */
    }
    if (check) {
        conf_print(sy_conf(), stdout);
        return 0;
    }
    sy_reload_remember_args(&args);
    scrub_environ(sy_conf());
    for (const char *const *v = conf_libpq_env_names(); *v; v++)
        unsetenv(*v);

    sy_log_level = sy_conf()->log_level;
    sy_log_json = sy_conf()->log_format == CONF_LOG_JSON;
    signal(SIGPIPE, SIG_IGN);
    sy_sentinel_adopt(sy_server.conf);   /* redis-sentinel:// targets: ask for the masters */

    /* Switchover moves sessions on the thread pool (libpq connect, state replay); give it
     * room to move a route's sessions at once. Must be set before the pool starts. */
    if (getenv("UV_THREADPOOL_SIZE") == NULL)
        setenv("UV_THREADPOOL_SIZE", "64", 1);
    sy_server.loop = uv_default_loop();
    sy_server.nroutes = sy_conf()->nroutes;
    /* Aligned to a cache line, as the struct's layout expects (sy_worker_count_t). */
    size_t nr = sy_server.nroutes ? sy_server.nroutes : 1;
    sy_server.routes = aligned_alloc(_Alignof(sy_route_t), nr * sizeof(sy_route_t));
    if (sy_server.routes == NULL) {
        fprintf(stderr, "switchyard: out of memory for %zu routes\n", nr);
        return 1;
    }
    memset(sy_server.routes, 0, nr * sizeof(sy_route_t));
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        sy_route_t *r = &sy_server.routes[i];
        r->conf = &sy_conf()->routes[i];
        SY_STORE(r->active, r->conf->active);
        const conf_target_t *t = r->active == CONF_EXTERNAL ? &r->conf->external : &r->conf->builtin;
        char q[512];
        sy_info("event=route route=%s active=%s target=%s", r->conf->name,
                r->active == CONF_EXTERNAL ? "external" : "builtin",
                sy_logq(q, sizeof(q), t->display ? t->display : ""));
    }
    /* auto: half the CPUs this process may run on, at least 1, at most 16. A sidecar shares
     * them with the application and its database: on 2 CPUs one loop beat two on every
     * bench/ figure once Redis clients were multiplexed (redis -c 50: 0.91 of direct
     * against 0.71, at 0.73 against 0.92 CPU s per 100k; pgbench -S: 1.85 against 2.36 CPU
     * s per 100k, and more tps), because two loops wake twice as often for the same work. */
    int nworkers = sy_conf()->workers;
    if (nworkers <= 0) {
        nworkers = (int)uv_available_parallelism() / 2;
        if (nworkers < 1)
            nworkers = 1;
        if (nworkers > 16)
            nworkers = 16;
    }
    sy_proto_register(CONF_PROTO_PG, &pg_proto);
    sy_proto_register(CONF_PROTO_REDIS, &redis_proto);
    if (sy_workers_start(nworkers, err, sizeof(err)) != 0 || sy_switch_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 1;
    }
    sy_sentinel_sync();
    if (sy_listeners_start(err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 1;
    }
    if (sy_metrics_start(err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 1;
    }
    uv_signal_init(sy_server.loop, &sig_term);
    uv_signal_start(&sig_term, signal_cb, SIGTERM);
    uv_signal_init(sy_server.loop, &sig_int);
    uv_signal_start(&sig_int, signal_cb, SIGINT);
    uv_signal_init(sy_server.loop, &sig_hup);
    uv_signal_start(&sig_hup, sighup_cb, SIGHUP);
    sy_info("event=ready version=%s pid=%d workers=%d", SY_VERSION, (int)getpid(), nworkers);
    sy_notify_ready();      /* systemd Type=notify, and `switchyard run` (no-op without NOTIFY_SOCKET) */

    if (sy_workers_run(err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 1;
    }
    sy_main_run();
    sy_info("event=exit");
    sy_exit(0);
}
