/*
 * cli.c - `switchyard switch|status|pause|resume|reload|help ...`: the admin console
 * (admin.c) for scripts, through libpq.
 *
 *   argv ──parse──▶ cli_opts_t ──(--config/--env-file/-o, or defaults: conf_load)──▶ where
 *        the console is: the first postgres listener's unix socket, then its TCP address
 *        (or --host/--port) ──PQconnectdbParams──▶ one console command with PQexec ──▶
 *        result set on stdout (aligned table, or --tsv), ErrorResponse on stderr.
 *
 * The exit code is the interface (the usage text repeats it):
 *   0  the command completed (for switch: the console answered SWITCH, so the route points
 *      at the new target)
 *   1  the console ran the command and refused or failed it (ErrorResponse)
 *   2  bad usage or bad configuration: nothing was sent
 *   3  the console cannot be reached or refuses the login, or the connection was lost while
 *      the command ran (its outcome is then unknown)
 *
 * Options may come before or after the subcommand, so sy_cli_is_subcommand looks at the
 * first word that is neither an option nor an option's value, not only at argv[1].
 *
 * The admin password is never taken from the command line (it would show in ps): it comes
 * from --password-file, SWITCHYARD_ADMIN_PASSWORD, or the admin_password of the loaded
 * configuration, in that order, and libpq sends it only if the console asks (loopback and
 * unix-socket clients are trusted without one). Every libpq variable is removed from the
 * environment first, as the daemon does: in the container PGPASSWORD is the external
 * database's password and must not be offered to the console, and PGHOST/PGSSLMODE/... must
 * not change where or how the CLI connects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <libpq-fe.h>
#include "conf/conf.h"
#include "proxy/cli/cli.h"
#include "proxy/cli/run.h"

enum {
    CLI_OK = 0,         /* the command completed */
    CLI_FAILED = 1,     /* the console answered with an ErrorResponse */
    CLI_USAGE = 2,      /* bad usage or configuration; nothing sent */
    CLI_UNREACHABLE = 3 /* no console, login refused, or connection lost mid-command */
};

#define CLI_MAX_WORDS 4
#define CLI_MAX_HOSTS 2

static const char *const subcommands[] = { "switch", "status", "pause", "resume", "reload", "help", NULL };

typedef struct cli_opts_s {
    conf_args_t  args;
    const char **overrides;         /* argc entries, strdup'ed values */
    const char  *host;              /* --host */
    const char  *port;              /* --port */
    const char  *password_file;     /* --password-file */
    const char  *user;              /* --user */
    int          gradual, force, tsv, help;
    int          after_catchup, promote;
    const char  *timeout;           /* --timeout S (with --after-catchup) */
    const char  *words[CLI_MAX_WORDS];  /* subcommand and its arguments */
    int          nwords;
} cli_opts_t;

/* Where to connect: libpq's comma-separated host and port lists, and a name for messages. */
typedef struct cli_where_s {
    char host[1024];
    char port[64];
    char display[1200];     /* "/tmp/sy:5432,127.0.0.1:5432" */
    int  loopback;          /* every host is a unix socket or a loopback address */
} cli_where_t;

static void usage(FILE *f)
{
    fputs(
"Usage: switchyard switch ROUTE builtin|external [--gradual] [--force]\n"
"       switchyard switch ROUTE builtin|external --after-catchup [--timeout S] [--promote]\n"
"       switchyard status [ROUTE]\n"
"       switchyard pause ROUTE\n"
"       switchyard resume ROUTE\n"
"       switchyard reload\n"
"       switchyard help\n"
"\n"
"Runs one command on switchyard's admin console (database \"switchyard\" on its postgres\n"
"listener) through libpq, for scripts and operators. Options may come before or after the\n"
"subcommand.\n"
"\n"
"  switch ROUTE TARGET  SWITCH ROUTE TO TARGET: precheck the target, then point the route\n"
"                       at it. --gradual moves open sessions one by one as each reaches a\n"
"                       boundary; --force switches even when the precheck fails.\n"
"                       --after-catchup holds every session at a boundary, waits until the\n"
"                       new target (a standby, a logical-replication subscriber or a Redis\n"
"                       replica of the old) has applied the old one's last write, then moves\n"
"                       them; refused, nothing moved, after --timeout S (default 30).\n"
"                       --promote promotes the new target once it has caught up.\n"
"  status [ROUTE]       SHOW ROUTES (only ROUTE's row when given)\n"
"  pause ROUTE          PAUSE ROUTE: hold the route's sessions at their next boundary\n"
"  resume ROUTE         RESUME ROUTE\n"
"  reload               RELOAD: re-read the config file and the env file\n"
"\n"
"Where the console is (the daemon's own configuration options):\n"
"  -c, --config FILE    the daemon's config file: its first postgres listener, through its\n"
"                       unix socket if it has one, else (or if that fails) its TCP address\n"
"  --env-file FILE      as for the daemon\n"
"  -o, --set SECTION.KEY=VALUE\n"
"                       as for the daemon, e.g. -o listener.pg.listen=127.0.0.1:15432\n"
"                       (without any of these: the built-in defaults, 127.0.0.1:5432)\n"
"  --host HOST          the console's TCP address or unix socket directory (overrides the\n"
"                       configuration; default 127.0.0.1)\n"
"  --port PORT          the console's port (overrides the configuration; default 5432)\n"
"\n"
"Login:\n"
"  --user NAME          user name to present (default $USER, else \"switchyard\"); SWITCH's\n"
"                       precheck connects as this user when the target names none\n"
"  --password-file FILE the admin password, first line of FILE. Else the environment\n"
"                       variable SWITCHYARD_ADMIN_PASSWORD, else the configuration's\n"
"                       admin_password. switchyard's own user and root need none on the\n"
"                       unix socket, nor over loopback when admin_password is unset. A\n"
"                       password is never accepted as an argument (it would show in ps).\n"
"\n"
"Output:\n"
"  --tsv                tab-separated values (header first) instead of an aligned table\n"
"  -h, --help           this text\n"
"\n"
"Exit status:\n"
"  0  the command completed (switch: the route now points at the target)\n"
"  1  the console ran the command and refused or failed it (message on stderr), e.g. a\n"
"     SWITCH whose precheck failed, or a route that does not exist\n"
"  2  bad usage or bad configuration (nothing was sent)\n"
"  3  cannot reach the console or log in to it (the message names host:port and the\n"
"     cause), or the connection was lost while the command ran (outcome unknown)\n",
        f);
}

static int is_subcommand_name(const char *w)
{
    for (const char *const *s = subcommands; *s; s++)
        if (strcmp(*s, w) == 0)
            return 1;
    return 0;
}

/* Options that take the next argument as their value (daemon's and CLI's). */
static int takes_value(const char *a)
{
    static const char *const opts[] = { "-c", "--config", "--env-file", "-o", "--set", "--host", "--port",
                                        "--password-file", "--user", NULL };
    for (const char *const *o = opts; *o; o++)
        if (strcmp(*o, a) == 0)
            return 1;
    return 0;
}

int sy_cli_is_subcommand(int argc, char **argv)
{
    if (sy_run_wanted(argc, argv))
        return 1;           /* `run` and `--wait-ready` (run.c) */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return i + 1 < argc && is_subcommand_name(argv[i + 1]);
        if (a[0] == '-') {
            if (takes_value(a))
                i++;
            continue;
        }
        return is_subcommand_name(a);
    }
    return 0;
}

/* Hide a secret given with -o from ps, as main.c does: overwrite the value in argv. */
void sy_cli_scrub_arg(char *arg)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL || (strstr(arg, "password") == NULL && strstr(arg, "PASSWORD") == NULL))
        return;
    for (char *p = eq + 1; *p; p++)
        *p = '*';
}

/* "--name VALUE" or "--name=VALUE": 1 and *val set when argv[*i] is option `name`, -1 when
 * the value is missing, 0 when argv[*i] is another option. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char *alias, char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strcmp(a, name) == 0 || (alias && strcmp(a, alias) == 0)) {
        if (*i + 1 >= argc)
            return -1;
        *val = argv[++*i];
        return 1;
    }
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, cli_opts_t *o)
{
    int only_words = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i], *v = NULL;
        int r;
        if (only_words || a[0] != '-' || a[1] == '\0') {
            if (o->nwords == CLI_MAX_WORDS) {
                fprintf(stderr, "switchyard: too many arguments at '%s' (see switchyard help)\n", a);
                return -1;
            }
            o->words[o->nwords++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_words = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = 1;
        } else if (strcmp(a, "--gradual") == 0) {
            o->gradual = 1;
        } else if (strcmp(a, "--force") == 0) {
            o->force = 1;
        } else if (strcmp(a, "--after-catchup") == 0) {
            o->after_catchup = 1;
        } else if (strcmp(a, "--promote") == 0) {
            o->promote = 1;
        } else if ((r = opt_value(argc, argv, &i, "--timeout", NULL, &v)) != 0) {
            if (r < 0)
                goto missing;
            o->timeout = v;
        } else if (strcmp(a, "--tsv") == 0) {
            o->tsv = 1;
        } else if (strcmp(a, "--password") == 0 || strncmp(a, "--password=", 11) == 0) {
            if (a[10] == '=')
                for (char *p = a + 11; *p; p++)
                    *p = '*';
            fprintf(stderr, "switchyard: a password is never accepted as an argument (it would show in ps):"
                            " use --password-file FILE or SWITCHYARD_ADMIN_PASSWORD\n");
            return -1;
        } else if ((r = opt_value(argc, argv, &i, "--config", "-c", &v)) != 0) {
            if (r < 0)
                goto missing;
            o->args.config_path = v;
        } else if ((r = opt_value(argc, argv, &i, "--env-file", NULL, &v)) != 0) {
            if (r < 0)
                goto missing;
            o->args.env_file = v;
        } else if ((r = opt_value(argc, argv, &i, "--set", "-o", &v)) != 0) {
            if (r < 0)
                goto missing;
            o->overrides[o->args.noverrides++] = strdup(v);
            sy_cli_scrub_arg(v);
        } else if ((r = opt_value(argc, argv, &i, "--host", NULL, &v)) != 0) {
            if (r < 0)
                goto missing;
            o->host = v;
        } else if ((r = opt_value(argc, argv, &i, "--port", NULL, &v)) != 0) {
            if (r < 0)
                goto missing;
            o->port = v;
        } else if ((r = opt_value(argc, argv, &i, "--password-file", NULL, &v)) != 0) {
            if (r < 0)
                goto missing;
            o->password_file = v;
        } else if ((r = opt_value(argc, argv, &i, "--user", NULL, &v)) != 0) {
            if (r < 0)
                goto missing;
            o->user = v;
        } else {
            fprintf(stderr, "switchyard: unknown option '%s' (see switchyard help)\n", a);
            return -1;
        }
        continue;
missing:
        fprintf(stderr, "switchyard: option '%s' needs a value (see switchyard help)\n", a);
        return -1;
    }
    return 0;
}

/* Route names as conf accepts them: letters, digits, '-' and '_', at most 64. Checked here
 * too, because the name is pasted into the console command. */
static int route_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return 0;
    return 1;
}

static int check_route(const char *route)
{
    if (route_name_ok(route))
        return 0;
    fprintf(stderr, "switchyard: '%s' is not a route name (letters, digits, '-' and '_', at most 64)\n", route);
    return -1;
}

/* " AFTER CATCHUP [TIMEOUT S] [PROMOTE]" for --after-catchup, into out. Returns 0, or -1
 * after a usage message. */
static int switch_catchup_words(const cli_opts_t *o, char *out, size_t len)
{
    if (!o->after_catchup) {
        if (o->timeout || o->promote) {
            fprintf(stderr, "switchyard: switch: --timeout and --promote need --after-catchup\n");
            return -1;
        }
        return 0;
    }
    if (o->gradual) {
        fprintf(stderr, "switchyard: switch: --after-catchup is an atomic switch: not with --gradual\n");
        return -1;
    }
    if (o->timeout) {
        size_t n = strlen(o->timeout);
        if (n == 0 || n > 5 || strspn(o->timeout, "0123456789") != n || atol(o->timeout) < 1 ||
            atol(o->timeout) > 86400) {
            fprintf(stderr, "switchyard: switch: --timeout: 1..86400 seconds, not '%s'\n", o->timeout);
            return -1;
        }
    }
    snprintf(out, len, " AFTER CATCHUP%s%s%s", o->timeout ? " TIMEOUT " : "", o->timeout ? o->timeout : "",
             o->promote ? " PROMOTE" : "");
    return 0;
}

/*
 * The console command for the parsed words, into sql[0..len). Returns 0, or -1 after a
 * usage message. *filter is set to the route `status` shows only.
 */
static int build_command(const cli_opts_t *o, char *sql, size_t len, const char **filter)
{
    const char *cmd = o->words[0];
    int nargs = o->nwords - 1;
    const char *const *arg = o->words + 1;

    *filter = NULL;
    if ((o->gradual || o->force || o->after_catchup || o->promote || o->timeout) && strcmp(cmd, "switch") != 0) {
        fprintf(stderr, "switchyard: --gradual, --force, --after-catchup, --timeout and --promote belong to"
                        " switch, not %s\n", cmd);
        return -1;
    }
    if (strcmp(cmd, "switch") == 0) {
        if (nargs != 2) {
            fprintf(stderr, "switchyard: usage: switchyard switch ROUTE builtin|external [--gradual] [--force]"
                            " [--after-catchup [--timeout S] [--promote]]\n");
            return -1;
        }
        if (check_route(arg[0]) != 0)
            return -1;
        const char *to;
        if (strcasecmp(arg[1], "builtin") == 0)
            to = "builtin";
        else if (strcasecmp(arg[1], "external") == 0)
            to = "external";
        else {
            fprintf(stderr, "switchyard: switch: the target is builtin or external, not '%s'\n", arg[1]);
            return -1;
        }
        char catchup[64] = "";
        if (switch_catchup_words(o, catchup, sizeof(catchup)) != 0)
            return -1;
        snprintf(sql, len, "SWITCH %s TO %s%s%s%s", arg[0], to, o->gradual ? " GRADUAL" : "", catchup,
                 o->force ? " FORCE" : "");
    } else if (strcmp(cmd, "status") == 0) {
        if (nargs > 1) {
            fprintf(stderr, "switchyard: usage: switchyard status [ROUTE]\n");
            return -1;
        }
        if (nargs == 1) {
            if (check_route(arg[0]) != 0)
                return -1;
            *filter = arg[0];
        }
        snprintf(sql, len, "SHOW ROUTES");
    } else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0) {
        if (nargs != 1) {
            fprintf(stderr, "switchyard: usage: switchyard %s ROUTE\n", cmd);
            return -1;
        }
        if (check_route(arg[0]) != 0)
            return -1;
        snprintf(sql, len, "%s %s", strcmp(cmd, "pause") == 0 ? "PAUSE" : "RESUME", arg[0]);
    } else if (strcmp(cmd, "reload") == 0) {
        if (nargs != 0) {
            fprintf(stderr, "switchyard: usage: switchyard reload\n");
            return -1;
        }
        snprintf(sql, len, "RELOAD");
    } else {
        fprintf(stderr, "switchyard: unknown subcommand '%s' (see switchyard help)\n", cmd);
        return -1;
    }
    return 0;
}

static int port_ok(const char *p)
{
    char *end;
    long v = strtol(p, &end, 10);
    return p[0] != '\0' && *end == '\0' && isdigit((unsigned char)p[0]) && v >= 1 && v <= 65535;
}

static int host_is_loopback(const char *h)
{
    return h[0] == '/' || h[0] == '@' || strcmp(h, "localhost") == 0 || strncmp(h, "127.", 4) == 0 ||
           strcmp(h, "::1") == 0;
}

static void where_add(cli_where_t *w, const char *host, const char *port)
{
    const char *sep = w->host[0] ? "," : "";
    size_t hl = strlen(w->host), pl = strlen(w->port), dl = strlen(w->display);
    snprintf(w->host + hl, sizeof(w->host) - hl, "%s%s", sep, host);
    snprintf(w->port + pl, sizeof(w->port) - pl, "%s%s", sep, port);
    snprintf(w->display + dl, sizeof(w->display) - dl, "%s%s:%s", sep, host, port);
    w->loopback = w->loopback && host_is_loopback(host);
}

/*
 * Fill *w from the options and, when conf is not NULL, its first postgres listener.
 * Returns 0, or -1 after a message.
 */
static int find_console(const cli_opts_t *o, const conf_t *conf, cli_where_t *w)
{
    char lport[16];
    const conf_listener_t *l = NULL;

    memset(w, 0, sizeof(*w));
    w->loopback = 1;
    if (o->port && !port_ok(o->port)) {
        fprintf(stderr, "switchyard: --port: must be 1..65535, not '%s'\n", o->port);
        return -1;
    }
    if (o->host && (o->host[0] == '\0' || strchr(o->host, ',') != NULL)) {
        fprintf(stderr, "switchyard: --host: one host name, address or socket directory, not '%s'\n", o->host);
        return -1;
    }
    if (conf) {
        for (size_t i = 0; i < conf->nlisteners && l == NULL; i++)
            if (conf->listeners[i].proto == CONF_PROTO_PG)
                l = &conf->listeners[i];
        if (l == NULL && !(o->host && o->port)) {
            fprintf(stderr, "switchyard: the configuration has no postgres listener, and the console lives on"
                            " one (or name it with --host and --port)\n");
            return -1;
        }
    }
    if (l)
        snprintf(lport, sizeof(lport), "%d", l->port);
    const char *port = o->port ? o->port : l ? lport : "5432";
    if (o->host) {
        where_add(w, o->host, port);
        return 0;
    }
    if (l && l->unix_path && l->unix_path[0])
        where_add(w, l->unix_path, port);
    if (l && l->host && l->host[0]) {
        /* A wildcard listen address is reached on loopback. */
        const char *h = l->host;
        if (strcmp(h, "0.0.0.0") == 0 || strcmp(h, "*") == 0)
            h = "127.0.0.1";
        else if (strcmp(h, "::") == 0)
            h = "::1";
        where_add(w, h, port);
    }
    if (l == NULL)
        where_add(w, "127.0.0.1", port);
    if (w->host[0] == '\0') {
        fprintf(stderr, "switchyard: listener %s has neither a TCP address nor a unix socket\n", l->name);
        return -1;
    }
    return 0;
}

/* The first line of path, into buf. Returns 0, or -1 after a message. */
static int read_password_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "switchyard: --password-file %s: %m\n", path);
        return -1;
    }
    int ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    if (!ok) {
        fprintf(stderr, "switchyard: --password-file %s: the file is empty\n", path);
        return -1;
    }
    size_t n = strlen(buf);
    if (n + 1 == len && buf[n - 1] != '\n') {
        explicit_bzero(buf, len);
        fprintf(stderr, "switchyard: --password-file %s: the first line is too long\n", path);
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (n == 0) {
        fprintf(stderr, "switchyard: --password-file %s: the first line is empty\n", path);
        return -1;
    }
    return 0;
}

/* libpq's messages are multi-line ("...failed: Connection refused\n\tIs the server..."):
 * one line for stderr and for logs that scripts collect. */
static void one_line(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

/* Number of characters a UTF-8 string takes (one column each; good enough for a table). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

/* A value for the terminal: control characters (a tab would break --tsv, an escape
 * sequence would reach the terminal) become '?'. */
static void print_value(const char *v, size_t pad)
{
    for (const char *p = v; *p; p++)
        putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
    for (size_t i = 0; i < pad; i++)
        putchar(' ');
}

/*
 * Print a result set: header, then the rows (only those whose "route" column equals
 * filter, when filter is set). Aligned with spaces, or tab-separated with --tsv; NULL is
 * "-" in the table and empty in TSV. Returns the number of rows printed.
 */
static int print_result(const PGresult *res, int tsv, const char *filter)
{
    int nf = PQnfields(res), nt = PQntuples(res), fcol = -1, shown = 0;
    size_t *width = calloc((size_t)(nf ? nf : 1), sizeof(size_t));
    char *keep = calloc((size_t)(nt ? nt : 1), 1);

    if (width == NULL || keep == NULL) {
        free(width);
        free(keep);
        fprintf(stderr, "switchyard: out of memory\n");
        return -1;
    }
    if (filter) {
        for (int c = 0; c < nf && fcol < 0; c++)
            if (strcmp(PQfname(res, c), "route") == 0)
                fcol = c;
        if (fcol < 0)
            fcol = 0;
    }
    for (int r = 0; r < nt; r++) {
        keep[r] = filter == NULL || (!PQgetisnull(res, r, fcol) && strcmp(PQgetvalue(res, r, fcol), filter) == 0);
        shown += keep[r];
    }
    for (int c = 0; c < nf; c++) {
        width[c] = text_width(PQfname(res, c));
        for (int r = 0; r < nt; r++) {
            size_t vw = PQgetisnull(res, r, c) ? 1 : text_width(PQgetvalue(res, r, c));
            if (keep[r] && vw > width[c])
                width[c] = vw;
        }
    }
    for (int r = -1; r < nt; r++) {
        if (r >= 0 && !keep[r])
            continue;
        for (int c = 0; c < nf; c++) {
            const char *v = r < 0 ? PQfname(res, c) : PQgetisnull(res, r, c) ? (tsv ? "" : "-") : PQgetvalue(res, r, c);
            int last = c == nf - 1;
            print_value(v, tsv || last ? 0 : width[c] - text_width(v) + 2);
            if (tsv && !last)
                putchar('\t');
        }
        putchar('\n');
    }
    free(width);
    free(keep);
    return shown;
}

/* Print an ErrorResponse's message (and detail/hint) to stderr, prefixed once. */
static void print_error(const PGresult *res, PGconn *conn)
{
    const char *prim = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    char msg[2048];

    snprintf(msg, sizeof(msg), "%s", prim ? prim : PQerrorMessage(conn));
    one_line(msg);
    fprintf(stderr, "%s%s\n", strncmp(msg, "switchyard:", 11) == 0 ? "" : "switchyard: ", msg);
    if (detail)
        fprintf(stderr, "DETAIL: %s\n", detail);
    if (hint)
        fprintf(stderr, "HINT: %s\n", hint);
}

/* Connect, run sql, print; returns the exit code. */
static int run_command(const cli_where_t *w, const char *user, const char *password, const char *sql,
                       const char *filter, int tsv)
{
    const char *keys[12], *vals[12];
    int n = 0, rc;
    char cause[2048];

    keys[n] = "host", vals[n++] = w->host;
    keys[n] = "port", vals[n++] = w->port;
    keys[n] = "dbname", vals[n++] = "switchyard";
    keys[n] = "user", vals[n++] = user;
    keys[n] = "connect_timeout", vals[n++] = "10";
    /* loopback and unix sockets: plain, as the console trusts them; elsewhere TLS when
     * the listener offers it */
    keys[n] = "sslmode", vals[n++] = w->loopback ? "disable" : "prefer";
    keys[n] = "gssencmode", vals[n++] = "disable";     /* switchyard never speaks GSSAPI */
    keys[n] = "fallback_application_name", vals[n++] = "switchyard-cli";
    if (password)
        keys[n] = "password", vals[n++] = password;
    keys[n] = vals[n] = NULL;

    PGconn *conn = PQconnectdbParams(keys, vals, 0);
    if (conn == NULL) {
        fprintf(stderr, "switchyard: cannot connect to the console at %s: out of memory\n", w->display);
        return CLI_UNREACHABLE;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(cause, sizeof(cause), "%s", PQerrorMessage(conn));
        one_line(cause);
        fprintf(stderr, "switchyard: cannot connect to the console at %s: %s\n", w->display, cause);
        PQfinish(conn);
        return CLI_UNREACHABLE;
    }

    PGresult *res = PQexec(conn, sql);
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
        if (print_result(res, tsv, filter) == 0 && filter) {
            fprintf(stderr, "switchyard: no route named \"%s\"\n", filter);
            rc = CLI_FAILED;
        } else {
            rc = CLI_OK;
        }
        break;
    case PGRES_COMMAND_OK:
        printf("%s\n", PQcmdStatus(res));
        rc = CLI_OK;
        break;
    default:
        if (PQstatus(conn) != CONNECTION_OK || res == NULL) {
            /* No answer: the command may or may not have taken effect. */
            snprintf(cause, sizeof(cause), "%s", PQerrorMessage(conn));
            one_line(cause);
            fprintf(stderr, "switchyard: lost the connection to the console at %s while running \"%s\";"
                            " its outcome is unknown: %s\n", w->display, sql, cause);
            rc = CLI_UNREACHABLE;
        } else {
            print_error(res, conn);
            rc = CLI_FAILED;
        }
        break;
    }
    PQclear(res);
    PQfinish(conn);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "switchyard: cannot write the result: %m\n");
        if (rc == CLI_OK && strncmp(sql, "SHOW", 4) == 0)
            rc = CLI_FAILED;
    }
    return rc;
}

int sy_cli_main(int argc, char **argv)
{
    cli_opts_t o;
    conf_t conf;
    conf_env_t env;
    cli_where_t where;
    char err[1024], sql[256], pwbuf[1024];
    const char *filter = NULL, *password = NULL;
    int have_conf = 0, rc = CLI_USAGE;

    if (sy_run_wanted(argc, argv))
        return sy_run_main(argc, argv);
    memset(&o, 0, sizeof(o));
    memset(&conf, 0, sizeof(conf));
    memset(&env, 0, sizeof(env));
    pwbuf[0] = '\0';
    o.overrides = calloc((size_t)argc + 1, sizeof(char *));
    if (o.overrides == NULL) {
        fprintf(stderr, "switchyard: out of memory\n");
        return CLI_USAGE;
    }
    o.args.overrides = o.overrides;

    if (parse_args(argc, argv, &o) != 0)
        goto out;
    if (o.help || o.nwords == 0 || strcmp(o.words[0], "help") == 0) {
        usage(o.help || o.nwords > 0 ? stdout : stderr);
        rc = o.help || o.nwords > 0 ? CLI_OK : CLI_USAGE;
        goto out;
    }
    if (build_command(&o, sql, sizeof(sql), &filter) != 0)
        goto out;

    /* The configuration says where the console is, unless --host and --port both do and
     * no configuration option was given. */
    conf_env_snapshot(&env);
    if (o.args.config_path || o.args.env_file || o.args.noverrides || !(o.host && o.port)) {
        if (conf_load(&conf, &o.args, &env, err, sizeof(err)) != 0) {
            fprintf(stderr, "switchyard: %s\n", err);
            goto out;
        }
        have_conf = 1;
    }
    for (const char *const *v = conf_libpq_env_names(); *v; v++)
        unsetenv(*v);
    if (find_console(&o, have_conf ? &conf : NULL, &where) != 0)
        goto out;

    if (o.password_file) {
        if (read_password_file(o.password_file, pwbuf, sizeof(pwbuf)) != 0)
            goto out;
        password = pwbuf;
    } else if (getenv("SWITCHYARD_ADMIN_PASSWORD") && getenv("SWITCHYARD_ADMIN_PASSWORD")[0]) {
        password = getenv("SWITCHYARD_ADMIN_PASSWORD");
    } else if (have_conf && conf.admin_password) {
        password = conf.admin_password;
    }
    const char *user = o.user ? o.user : getenv("USER");
    if (user == NULL || user[0] == '\0')
        user = "switchyard";

    rc = run_command(&where, user, password, sql, filter, o.tsv);

out:
    explicit_bzero(pwbuf, sizeof(pwbuf));
    if (have_conf)
        conf_free(&conf);
    conf_env_free(&env);
    for (size_t i = 0; i < o.args.noverrides; i++)
        free((char *)o.overrides[i]);
    free(o.overrides);
    return rc;
}
