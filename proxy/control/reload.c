/*
 * reload.c - RELOAD and SIGHUP: read the config file and the env file again.
 *
 * The new configuration is loaded and validated completely before anything changes; a
 * reload that fails says why and leaves everything as it was. Listeners and routes are
 * fixed for the life of the process (their sockets and sessions hang off them), so a
 * reload that adds, removes or re-binds one is refused with a message saying a restart
 * is needed. Everything else takes effect: global settings, and targets. A route whose
 * active target changed (say, a new PGHOST in the env file while the route is on
 * external) moves its sessions there with the switchover mechanism, like SWITCH.
 *
 * Sessions keep pointers into the configuration they were opened under, so a replaced
 * configuration is kept, not freed: one small allocation per reload. sy_conf_publish is the
 * swap itself; sentinel.c uses it too, to move a route to the master a failover promoted.
 */
#include <stdlib.h>
#include <string.h>
#include "proxy/core/sy.h"
#include "proxy/control/sentinel.h"

static conf_args_t saved_args;
static conf_t     **retired;      /* replaced configurations, still referenced */
static size_t       nretired;

void sy_reload_remember_args(const conf_args_t *args)
{
    saved_args = *args;
}

static int same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Same target, secrets included (display strings are masked, so compare the values). */
int sy_target_equal(const conf_target_t *a, const conf_target_t *b)
{
    if (a->defined != b->defined)
        return 0;
    if (!a->defined)
        return 1;
    if (a->pg.n != b->pg.n)
        return 0;
    for (size_t i = 0; i < a->pg.n; i++)
        if (!same_str(a->pg.keys[i], b->pg.keys[i]) || !same_str(a->pg.vals[i], b->pg.vals[i]))
            return 0;
    return memcmp(&a->redis, &b->redis, sizeof(a->redis)) == 0 && same_str(a->tls_ca_file, b->tls_ca_file) &&
           same_str(a->tls_cert, b->tls_cert) && same_str(a->tls_key, b->tls_key) &&
           a->tls_insecure_skip_verify == b->tls_insecure_skip_verify;
}

static int same_shape(const conf_t *a, const conf_t *b, char *err, size_t errlen)
{
    if (a->nlisteners != b->nlisteners || a->nroutes != b->nroutes) {
        snprintf(err, errlen, "listeners or routes were added or removed; restart switchyard for that");
        return 0;
    }
    if (a->workers != b->workers) {
        snprintf(err, errlen, "workers changed; restart switchyard for that");
        return 0;
    }
    for (size_t i = 0; i < a->nlisteners; i++) {
        const conf_listener_t *x = &a->listeners[i], *y = &b->listeners[i];
        if (!same_str(x->name, y->name) || x->proto != y->proto || !same_str(x->host, y->host) ||
            x->port != y->port || !same_str(x->unix_path, y->unix_path) || !same_str(x->tls_cert, y->tls_cert) ||
            !same_str(x->tls_key, y->tls_key) || !same_str(x->auth_password, y->auth_password)) {
            snprintf(err, errlen, "[listener %s] changed; restart switchyard for that", x->name);
            return 0;
        }
    }
    for (size_t i = 0; i < a->nroutes; i++) {
        const conf_route_t *x = &a->routes[i], *y = &b->routes[i];
        int same_dbs = 1;
        for (size_t k = 0; x->databases && y->databases && (x->databases[k] || y->databases[k]); k++)
            if (!same_str(x->databases[k], y->databases[k])) {
                same_dbs = 0;
                break;
            }
        if (!same_str(x->name, y->name) || !same_str(x->listener, y->listener) || !same_dbs ||
            x->is_default != y->is_default || !same_str(x->client_password, y->client_password)) {
            snprintf(err, errlen, "[route %s] changed its listener, databases or client password; restart "
                     "switchyard for that", x->name);
            return 0;
        }
    }
    return 1;
}

/*
 * Put fresh in force (it must have the same shape as the configuration in force): the old
 * one is retired, never freed; routes whose active target changed move their sessions with
 * an atomic switch, whose end calls done(ctx) when done is not NULL. Returns the number of
 * switches started, or -1 (out of memory, nothing changed; fresh is still the caller's).
 * why names the log events (event=<why>_retarget). Used by RELOAD and by sentinel.c.
 */
int sy_conf_publish(conf_t *fresh, const char *why, sy_switch_done_cb done, void *ctx)
{
    /* Keep the old configuration alive: sessions, listeners and thread-pool jobs point
     * into it. */
    conf_t **r2 = realloc(retired, (nretired + 1) * sizeof(*retired));
    if (r2 == NULL)
        return -1;
    retired = r2;
    retired[nretired++] = sy_server.conf;

    /*
     * The swap is the one isolation of the steady state (worker.c): workers read route->conf
     * and their sessions' target pointers without locks, so every worker is parked between
     * two callbacks while they change. Bounded: nothing below blocks or waits on I/O. The
     * switches it starts run by message, after the workers are released.
     */
    sy_isolate();
    __atomic_store_n(&sy_server.conf, fresh, __ATOMIC_RELEASE);
    sy_log_level = sy_conf()->log_level;
    sy_log_json = sy_conf()->log_format == CONF_LOG_JSON;

    int moving = 0;
    conf_which_t want[sy_server.nroutes ? sy_server.nroutes : 1];
    int start[sy_server.nroutes ? sy_server.nroutes : 1];
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        sy_route_t *r = &sy_server.routes[i];
        const conf_route_t *was = r->conf, *now = &sy_conf()->routes[i];
        conf_which_t active = sy_route_active(r);
        if (was->active != now->active)
            active = now->active;          /* the configuration itself asks for the other side */
        if (active == CONF_EXTERNAL && !now->external.defined)
            active = CONF_BUILTIN;
        const conf_target_t *old_t = active == CONF_EXTERNAL ? &was->external : &was->builtin;
        const conf_target_t *new_t = active == CONF_EXTERNAL ? &now->external : &now->builtin;
        int changed = active != sy_route_active(r) || !sy_target_equal(old_t, new_t);
        for (int w = 0; w < SY_MAX_WORKERS; w++)
            for (int k = 0; k < 2; k++) {
                if (r->tls_ctx[w][k] != NULL) {
                    SSL_CTX_free(r->tls_ctx[w][k]);   /* sessions keep their own references */
                    r->tls_ctx[w][k] = NULL;
                }
            }
        r->conf = now;
        want[i] = active;
        start[i] = changed;
        if (!changed) {
            /* Same place: sessions may keep running on their (equal) old target. */
            for (int w = 0; w < sy_nworkers(); w++)
                for (int st = 0; st < SY_SERVER_NSTATES; st++) {
                    sy_server_link_t *head = sy_worker_servers_of(w, r, (sy_server_state_t)st);
                    for (sy_server_link_t *s = head->next; s != head; s = s->next)
                        if (s->target == old_t)
                            s->target = new_t;
                }
        }
    }
    sy_deisolate();

    for (size_t i = 0; i < sy_server.nroutes; i++) {
        sy_route_t *r = &sy_server.routes[i];
        if (!start[i])
            continue;
        char q[600];
        const conf_target_t *new_t = sy_route_target(r, want[i]);
        sy_info("event=%s_retarget route=%s active=%s target=%s", why, r->conf->name,
                want[i] == CONF_EXTERNAL ? "external" : "builtin",
                sy_logq(q, sizeof(q), new_t->display ? new_t->display : ""));
        if (r->sw == NULL && sy_switch_start(r, want[i], 0, done, ctx) == 0)
            moving++;
        else
            SY_STORE(r->active, want[i]);   /* a running switch picks the new target up as it goes */
    }
    return moving;
}

int sy_reload(char *err, size_t errlen)
{
    conf_t *fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char lerr[900];
    if (conf_load(fresh, &saved_args, &sy_server.env, lerr, sizeof(lerr)) != 0) {
        snprintf(err, errlen, "reload refused, nothing changed: %s", lerr);
        free(fresh);
        sy_warn("event=reload_failed error=\"%s\"", lerr);
        return -1;
    }
    if (!same_shape(sy_conf(), fresh, lerr, sizeof(lerr))) {
        snprintf(err, errlen, "reload refused, nothing changed: %s", lerr);
        conf_free(fresh);
        free(fresh);
        sy_warn("event=reload_failed error=\"%s\"", lerr);
        return -1;
    }
    sy_sentinel_adopt(fresh);   /* the masters the sentinels named stay known */
    int moving = sy_conf_publish(fresh, "reload", NULL, NULL);
    if (moving < 0) {
        conf_free(fresh);
        free(fresh);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sy_sentinel_sync();
    sy_info("event=reload_done retargeted=%d", moving);
    snprintf(err, errlen, "reloaded; %d route(s) retargeted", moving);
    return 0;
}
