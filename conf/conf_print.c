/*
 * conf_print.c - what a human reads about the configuration: conf_print (--check) and
 * conf_usage (--help).
 *
 * conf_print shows only display strings (built masked in conf_target.c) and prints every
 * password field as ****: nothing here reads a password value except to test whether one
 * is set.
 *
 * Layer: the top of the hierarchy drawn in conf_util.h. It reads a finished conf_t and
 * libpq's variable list through the public conf/conf.h, and uses conf_util.h for memory;
 * nothing in conf/ calls into it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/conf_util.h"

static const char *proto_name(conf_proto_t p)
{
    return p == CONF_PROTO_PG ? "postgres" : "redis";
}

static void print_size(FILE *out, const char *key, uint64_t n)
{
    fprintf(out, "  %-19s= %" PRIu64, key, n);
    if (n >= (1u << 30) && n % (1u << 30) == 0)
        fprintf(out, " (%" PRIu64 " GiB)", n >> 30);
    else if (n >= (1u << 20) && n % (1u << 20) == 0)
        fprintf(out, " (%" PRIu64 " MiB)", n >> 20);
    else if (n >= (1u << 10) && n % (1u << 10) == 0)
        fprintf(out, " (%" PRIu64 " KiB)", n >> 10);
    fputc('\n', out);
}

static void print_target(FILE *out, const char *label, const conf_route_t *r,
                         const conf_target_t *t, int active)
{
    if (!t->defined) {
        if (t == &r->builtin)
            fprintf(out, "  %-9s not set (no builtin in the configuration)\n", label);
        else if (r->proto == CONF_PROTO_PG)
            fprintf(out, "  %-9s not set (set %sPGHOST, %sPGHOSTADDR or %sPGSERVICE)\n", label,
                    r->env_prefix, r->env_prefix, r->env_prefix);
        else if (r->external_env)
            fprintf(out, "  %-9s not set (set one of %s)\n", label, r->external_env);
        else
            fprintf(out, "  %-9s not set (no external_env configured)\n", label);
        return;
    }
    fprintf(out, "  %-9s %s%s\n", label, t->hostport, active ? "   <- active" : "");
    fprintf(out, "            %s\n", t->display);
    if (r->proto == CONF_PROTO_REDIS && (t->redis.tls || t->tls_ca_file || t->tls_cert)) {
        fprintf(out, "            tls: %s, ca %s", t->redis.tls ? "on (rediss)" : "off",
                t->tls_ca_file ? t->tls_ca_file : "system trust store");
        if (t->tls_cert)
            fprintf(out, ", client cert %s, key %s", t->tls_cert, t->tls_key);
        fputc('\n', out);
    }
    if (t->tls_insecure_skip_verify)
        fprintf(out, "            TLS VERIFICATION OFF (tls_insecure_skip_verify_i_know)\n");
    fprintf(out, "            from %s\n", t->source);
}

void conf_print(const conf_t *c, FILE *out)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };

    fprintf(out, "# switchyard configuration\n");
    fprintf(out, "config file: %s\n", c->config_path ? c->config_path
                                                      : "none (built-in defaults)");
    fprintf(out, "env file:    %s\n\n", c->env_file ? c->env_file : "none");

    fprintf(out, "[switchyard]\n");
    print_size(out, "max_message_size", c->max_message_size);
    print_size(out, "redis_max_bulk", c->redis_max_bulk);
    fprintf(out, "  %-19s= %u\n", "redis_max_pipeline", c->redis_max_pipeline);
    fprintf(out, "  %-19s= %d s\n", "connect_timeout", c->connect_timeout);
    fprintf(out, "  %-19s= %d s\n", "drain_timeout", c->drain_timeout);
    fprintf(out, "  %-19s= %d s\n", "pause_max", c->pause_max);
    fprintf(out, "  %-19s= %d s\n", "switch_hold_max", c->switch_hold_max);
    fprintf(out, "  %-19s= %d s\n", "client_login_timeout", c->client_login_timeout);
    fprintf(out, "  %-19s= %d s%s\n", "client_idle_timeout", c->client_idle_timeout,
            c->client_idle_timeout ? "" : " (never)");
    fprintf(out, "  %-19s= %d s%s\n", "client_stall_timeout", c->client_stall_timeout,
            c->client_stall_timeout ? "" : " (never)");
    if (c->tcp_keepidle > 0)
        fprintf(out, "  %-19s= %d s, then %d probes %d s apart\n", "tcp_keepidle", c->tcp_keepidle,
                c->tcp_keepcnt, c->tcp_keepintvl);
    else
        fprintf(out, "  %-19s= off (no keepalive)\n", "tcp_keepidle");
    fprintf(out, "  %-19s= %d s%s\n", "tcp_user_timeout", c->tcp_user_timeout,
            c->tcp_user_timeout ? "" : " (the system's)");
    fprintf(out, "  %-19s= %d\n", "pool_size", c->pool_size);
    fprintf(out, "  %-19s= %d s%s\n", "server_idle_timeout", c->server_idle_timeout,
            c->server_idle_timeout ? "" : " (never)");
    fprintf(out, "  %-19s= %d s%s\n", "server_lifetime", c->server_lifetime, c->server_lifetime ? "" : " (never)");
    fprintf(out, "  %-19s= %d s\n", "server_check_delay", c->server_check_delay);
    fprintf(out, "  %-19s= %d s%s\n", "server_release_delay", c->server_release_delay,
            c->server_release_delay ? "" : " (never)");
    fprintf(out, "  %-19s= %d s%s\n", "reconnect_window", c->reconnect_window, c->reconnect_window ? "" : " (off)");
    if (c->workers > 0)
        fprintf(out, "  %-19s= %d\n", "workers", c->workers);
    else
        fprintf(out, "  %-19s= auto (half the CPUs, 1 to 16)\n", "workers");
    fprintf(out, "  %-19s= %s\n", "admin_password",
            c->admin_password ? "****" : "none (console for switchyard's own user and root only)");
    fprintf(out, "  %-19s= %s\n", "metrics_listen", c->metrics_listen ? c->metrics_listen : "off");
    fprintf(out, "  %-19s= %s\n", "log_format", c->log_format == CONF_LOG_JSON ? "json" : "logfmt");
    fprintf(out, "  %-19s= %s\n", "log_level",
            c->log_level >= 0 && c->log_level <= 3 ? levels[c->log_level] : "?");

    for (size_t i = 0; i < c->nlisteners; i++) {
        const conf_listener_t *l = &c->listeners[i];
        fprintf(out, "\nlistener %s (%s)\n", l->name, proto_name(l->proto));
        if (l->host)
            fprintf(out, "  listen       %s%s%s:%d\n", strchr(l->host, ':') ? "[" : "", l->host,
                    strchr(l->host, ':') ? "]" : "", l->port);
        else
            fprintf(out, "  listen       none (unix socket only)\n");
        if (l->unix_path && l->proto == CONF_PROTO_PG)
            fprintf(out, "  unix socket  %s/.s.PGSQL.%d\n", l->unix_path, l->port);
        else if (l->unix_path)
            fprintf(out, "  unix socket  %s\n", l->unix_path);
        if (l->unix_path)
            fprintf(out, "  socket mode  %04o, group %s\n", l->unix_mode, l->unix_group ? l->unix_group : "switchyard's own");
        fprintf(out, "  max clients  %llu\n", (unsigned long long)l->max_clients);
        if (l->tls_cert)
            fprintf(out, "  client TLS   cert %s, key %s\n", l->tls_cert, l->tls_key);
        else
            fprintf(out, "  client TLS   off\n");
        fprintf(out, "  client auth  %s\n", l->auth_password ? "password ****"
                                                              : "none (loopback clients trusted)");
    }

    for (size_t i = 0; i < c->nroutes; i++) {
        const conf_route_t *r = &c->routes[i];
        fprintf(out, "\nroute %s (%s, listener %s)\n", r->name, proto_name(r->proto), r->listener);
        if (r->proto == CONF_PROTO_PG) {
            fprintf(out, "  databases ");
            if (!r->databases || !r->databases[0])
                fprintf(out, "(none)");
            for (char **d = r->databases; d && *d; d++)
                fprintf(out, "%s%s", d == r->databases ? "" : ", ", *d);
            fprintf(out, "%s\n", r->is_default ? " (and any other: default route)" : "");
            fprintf(out, "  env       %sPG*\n", r->env_prefix);
            fprintf(out, "  pool      %s\n", r->pool ? "on (session pooling)" : "off (one server per client)");
        } else {
            fprintf(out, "  env       %s\n", r->external_env ? r->external_env : "(none)");
            fprintf(out, "  client    %s\n", r->client_password ? "AUTH password ****"
                                                                : "any AUTH accepted");
            fprintf(out, "  multiplex %s\n", r->multiplex ? "on" : "off");
            fprintf(out, "  guard     %s\n", r->guard_config ? "on (CONFIG secrets masked, lock-outs refused)" : "off");
        }
        fprintf(out, "  active    %s: %s\n", r->active == CONF_EXTERNAL ? "external" : "builtin",
                r->active_reason ? r->active_reason : "");
        print_target(out, "builtin", r, &r->builtin, r->active == CONF_BUILTIN);
        print_target(out, "external", r, &r->external, r->active == CONF_EXTERNAL);
    }
}

/* ---- --help ---------------------------------------------------------------------------- */

static pthread_once_t usage_once = PTHREAD_ONCE_INIT;
static char *usage_text;

static void usage_init(void)
{
    static const char head[] =
"Usage: switchyard [--config FILE] [--env-file FILE] [-o SECTION.KEY=VALUE]... [--check]\n"
"       switchyard --help | --version\n"
"       switchyard switch|status|pause|resume|reload ...   (console front end, see below)\n"
"\n"
"switchyard owns the container's database ports (Postgres 127.0.0.1:5432, Redis\n"
"127.0.0.1:6379 and :6380) and routes every connection to the route's built-in database or\n"
"to the operator's external server, configured with the variables the container documents.\n"
"\n"
"Options:\n"
"  -c, --config FILE    read FILE (INI; see conf/switchyard.conf.example). Without it the\n"
"                       built-in defaults apply (the same as conf/switchyard.conf). If FILE\n"
"                       has any [listener] or [route] section, they replace the built-in\n"
"                       ones; its [switchyard] keys override the defaults one by one.\n"
"  --env-file FILE      read KEY=VALUE lines (blank lines and # comments ignored, optional\n"
"                       'export ', optional '...' or \"...\" quotes); they override the\n"
"                       process environment. \"KEY=\" unsets KEY. Edit and reload to retarget.\n"
"  -o, --set SECTION.KEY=VALUE\n"
"                       override one setting after the file, may be repeated:\n"
"                         -o switchyard.log_level=debug\n"
"                         -o listener.pg.listen=127.0.0.1:15432\n"
"                         -o route.pg.builtin='host=/run/postgresql port=5433'\n"
"                       (creates the listener or route if the file has none of that name)\n"
"  --check              load and validate everything, print the effective listeners, routes\n"
"                       and targets (passwords as ****) with which target is active and\n"
"                       why, and exit\n"
"  -h, --help           this text\n"
"  --version            the version\n"
"  (--config=FILE and --env-file=FILE work too.)\n"
"\n"
"Subcommands: a front end to the admin console (psql ... dbname=switchyard), for scripts;\n"
"`switchyard help` lists their options. Exit 0 done, 1 refused, 2 usage, 3 unreachable.\n"
"  switchyard switch ROUTE builtin|external [--gradual] [--force]\n"
"                                             move a route and its sessions; returns when\n"
"                                             the switch has completed\n"
"  switchyard status [ROUTE]                  routes, active targets, sessions\n"
"  switchyard pause ROUTE | resume ROUTE      hold sessions at their next transaction\n"
"  switchyard reload                          re-read config and env file (also SIGHUP)\n"
"\n"
"Signals: SIGHUP reloads; SIGTERM stops accepting, lets sessions finish for drain_timeout,\n"
"then closes the rest with 57P01 / -ERR; a second SIGTERM exits at once.\n"
"\n"
"Configuration sources, later ones win: built-in defaults, --config FILE, the process\n"
"environment (read once at startup), --env-file FILE, -o overrides.\n"
"\n"
"Environment (read once at startup; empty counts as unset):\n"
"  Postgres, per route family: route pg reads PG*, route pg-codeintel CODEINTEL_PG*, route\n"
"  pg-codeinsights CODEINSIGHTS_PG* (the route's env_prefix followed by the libpq name).\n"
"  The prefix is stripped and the rest has libpq's meaning. A route goes to its external\n"
"  server when <prefix>PGHOST, <prefix>PGHOSTADDR or <prefix>PGSERVICE is set.\n"
"  Variables read, each also with every route's prefix:\n";
    static const char tail[] =
"  PGDATESTYLE, PGTZ and PGGEQO are sent as -c options, as libpq sends them.\n"
"  PGSERVICEFILE and PGSYSCONFDIR are read by libpq from the process environment for all\n"
"  routes; they have no prefixed form and cannot come from the env file.\n"
"  switchyard removes the libpq variables from its own environment after reading them, so\n"
"  that libpq sees only what each route passes.\n"
"\n"
"  Redis: route redis-store reads REDIS_STORE_ENDPOINT, else REDIS_ENDPOINT; route\n"
"  redis-cache reads REDIS_CACHE_ENDPOINT, else REDIS_ENDPOINT (a route's external_env).\n"
"  Forms: host:port, redis://[[user]:password@]host[:port][/db], rediss://... (TLS).\n"
"\n"
"Exit status:\n"
"  0  success (also --check with a valid configuration, --help, --version)\n"
"  1  runtime failure (a listener cannot be opened, a fatal error while running)\n"
"  2  bad usage or bad configuration: the message names the file and line, the variable\n"
"     or the -o override, the key and the problem\n";

    const char *const *names = conf_libpq_env_names();
    size_t len = sizeof head + sizeof tail;
    for (size_t i = 0; names[i]; i++)
        len += strlen(names[i]) + 2;
    len += len / 60 * 4 + 16;       /* line breaks and indentation */
    usage_text = conf__xrealloc(NULL, len);
    char *o = usage_text;
    o += sprintf(o, "%s", head);
    size_t col = 0;
    for (size_t i = 0; names[i]; i++) {
        size_t w = strlen(names[i]) + (names[i + 1] ? 1 : 0);
        if (col == 0 || col + w + 1 > 90) {
            o += sprintf(o, "%s    ", col ? "\n" : "");
            col = 4;
        } else {
            o += sprintf(o, " ");
            col++;
        }
        o += sprintf(o, "%s%s", names[i], names[i + 1] ? "," : "");
        col += w;
    }
    sprintf(o, "\n%s", tail);
}

const char *conf_usage(void)
{
    pthread_once(&usage_once, usage_init);
    return usage_text;
}
