/*
 * run.c - `switchyard run [switchyard options] -- COMMAND [ARGS...]`: switchyard as the
 * container's entry point, wrapping the application, and `switchyard --wait-ready`. This
 * file parses the options and supervises both processes; the environment rewrite is in
 * run_env.c, the readiness checks and --wait-ready in run_ready.c.
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
 * Exit codes (run.h): COMMAND's own; 2 bad usage or configuration (nothing started); 125
 * switchyard failed (did not become ready, or died while COMMAND ran); 126 COMMAND cannot
 * be executed; 127 COMMAND not found. --wait-ready's are in run_ready.c.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "conf/conf.h"
#include "proxy/cli/cli.h"
#include "proxy/cli/notify.h"
#include "proxy/cli/run.h"
#include "proxy/cli/run_env.h"
#include "proxy/cli/run_ready.h"

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

/* 1 when opt is one of the options that take a value. */
static int takes_value(const char *opt)
{
    const char *const *v = run_value_opts;
    while (*v != NULL && strcmp(*v, opt) != 0)
        v++;
    return *v != NULL;
}

int sy_run_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--wait-ready") == 0)
            return 2;
        if (strcmp(a, "--") == 0)
            return i + 1 < argc && strcmp(argv[i + 1], "run") == 0;
        if (a[0] == '-') {
            if (takes_value(a))
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
        if (!takes_value(opt)) {
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
    char **envp = run_env_vector(NULL, snap, "NOTIFY_SOCKET", notify_env, &own, &nown);
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
    run_env_scrub_own(e);

    double deadline = run_ready_now() + o->timeout;
    for (;;) {
        drain_notify(s);
        if (s->ready_seen && run_ready_listeners(c))
            return 0;
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
        if (run_ready_now() > deadline) {
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
            kill_at = run_ready_now() + o->grace;
        }
        if (daemon_failed && s->app != 0 && kill_at > 0 && run_ready_now() > kill_at) {
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
    char **envp = run_env_vector(e, snap, NULL, NULL, &own, &nown);
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
        rc = run_ready_wait(&conf, o.timeout);
        goto out;
    }
    run_env_build(&e, &conf, &snap);
    if (o.dry_run) {
        run_env_print(stdout, &e, o.command);
        rc = 0;
        goto out;
    }
    rc = run_command(&o, &conf, &e, &snap);
out:
    run_env_free(&e);
    if (have_conf)
        conf_free(&conf);
    conf_env_free(&snap);
    for (int i = 1; o.daemon_argv && i < o.ndaemon; i += 2)
        free((char *)o.daemon_argv[i]);
    free(o.daemon_argv);
    free(o.overrides);
    return rc;
}
