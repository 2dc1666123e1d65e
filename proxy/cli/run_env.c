/*
 * run_env.c - the environment `switchyard run` gives COMMAND: every route's family pointed
 * at its listener, every credential removed (run.c starts the daemon with ours, only
 * NOTIFY_SOCKET replaced, then COMMAND with this one).
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
 * SWITCHYARD_ADMIN_PASSWORD and NOTIFY_SOCKET. `--dry-run` prints exactly these changes
 * (run_env_print).
 *
 *   snapshot of our environment + configuration
 *     ──run_env_build──▶ list of changes (name, new value or removed, old value)
 *     ──run_env_vector─▶ COMMAND's envp         ──run_env_print──▶ --dry-run
 *
 * After the daemon has its copy, the values this process inherited for every variable the
 * rewrite removes or changes are overwritten in place (run_env_scrub_own), so
 * /proc/<our pid>/environ (which a same-user application can read) no longer holds them
 * either.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conf/conf.h"
#include "protocol/endpoint.h"
#include "proxy/cli/run.h"
#include "proxy/cli/run_env.h"

extern char **environ;

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

void run_env_free(run_env_t *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].name);
        free(e->v[i].value);
    }
    free(e->v);
    memset(e, 0, sizeof(*e));
}

const char *run_env_listener_host(const conf_listener_t *l)
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
        const char *host = run_env_listener_host(l);
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
        const char *host = l ? run_env_listener_host(l) : NULL;
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

void run_env_build(run_env_t *e, const conf_t *c, const conf_env_t *snap)
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

char **run_env_vector(const run_env_t *e, const conf_env_t *snap, const char *drop, const char *extra,
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

void run_env_print(FILE *f, const run_env_t *e, char **command)
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

void run_env_scrub_own(const run_env_t *e)
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
