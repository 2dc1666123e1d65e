/*
 * probe.c - the health probes behind route->healthy, on PR_THREADS threads of their own.
 *
 * A repeating timer (unref'd) looks at every route each second and queues a probe for a
 * route whose active target was probed more than PR_EVERY_MS ago, or not at all since a
 * switch or a RELOAD. A probe is sy_target_probe: the same full login as SWITCH's
 * precheck, blocking. One probe per route at a time.
 *
 * Why not libuv's thread pool: a probe every 5 s per route lands on whichever of the
 * pool's 64 threads is free, and each thread that runs one grows a malloc arena of its own
 * that keeps its top chunk (glibc's malloc_trim does not shrink a thread arena's top). An
 * idle proxy grew by 1.7 MB in five minutes that way, as much as its pg and Redis
 * sessions cost. Two long-lived threads keep two arenas. Two, so that one dead target,
 * whose probe waits out connect_timeout, does not hold every other route's probe back.
 *
 *   control loop                        probe threads
 *   pump: due ─▶ todo (FIFO, mu) ──cv──▶ take one, probe (blocking)
 *   async_cb ◀──────── done (mu) ◀─────┘ put it on done, uv_async_send
 *     └─ store route->healthy / health_err, log a change, pump again
 *
 * route->healthy and route->health_err are only written on the control loop. A result for
 * a target that is no longer active, or under a configuration RELOAD replaced, is dropped.
 * Threads read the route's configuration, which RELOAD keeps alive (reload.c). The threads
 * are never joined: at shutdown one may be inside a probe for connect_timeout, and the
 * process exits without waiting for it. The async handle stays open (unref'd) until then,
 * so a late uv_async_send always has a handle to wake.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxy/control/admin.h"
#include "proxy/control/probe.h"

#define PR_TICK_MS     1000
#define PR_EVERY_MS    5000
#define PR_THREADS     2
#define PR_USER        "postgres"
#define PR_NOT_PROBED  "not probed yet"

typedef struct pr_probe_s {
    struct pr_probe_s  *next;       /* on todo or done */
    sy_route_t         *route;
    int                 busy;       /* queued or running */
    conf_which_t        which;      /* the target being (or last) probed */
    const conf_route_t *conf;       /* ...under this configuration (RELOAD replaces it) */
    int                 ok;         /* the thread's result */
    char                err[256];   /* the thread's cause */
    int                 has_result; /* a result for `which` was stored in the route */
    int                 last_ok;    /* -1 before the first result: for logging changes */
    uint64_t            started_ms;
} pr_probe_t;

static struct {
    pr_probe_t     *probes;         /* one per route */
    uv_timer_t      timer;
    int             timer_on;
    uv_async_t      async;
    int             stopping;
    int             nthreads;
    pthread_mutex_t mu;             /* todo, todo_tail, done */
    pthread_cond_t  cv;             /* todo is not empty */
    pr_probe_t     *todo, *todo_tail, *done;
} pr = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static const char *which_name(conf_which_t w)
{
    return w == CONF_EXTERNAL ? "external" : "builtin";
}

static void *pr_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pr.mu);
    for (;;) {
        while (pr.todo == NULL)
            pthread_cond_wait(&pr.cv, &pr.mu);
        pr_probe_t *p = pr.todo;
        if ((pr.todo = p->next) == NULL)
            pr.todo_tail = NULL;
        pthread_mutex_unlock(&pr.mu);

        p->ok = sy_target_probe(p->conf, p->which, PR_USER, p->err, sizeof(p->err)) == 0;

        pthread_mutex_lock(&pr.mu);
        p->next = pr.done;
        pr.done = p;
        uv_async_send(&pr.async);
    }
    return NULL;
}

static void pump(void);

static void store(pr_probe_t *p)
{
    sy_route_t *r = p->route;
    p->busy = 0;
    if (pr.stopping)
        return;
    if (r->active != p->which || r->conf != p->conf) {
        p->has_result = 0;   /* switched or reloaded meanwhile: says nothing about the new target */
        return;
    }
    p->has_result = 1;
    r->healthy = p->ok;
    snprintf(r->health_err, sizeof(r->health_err), "%s", p->ok ? "" : p->err);
    if (p->ok == p->last_ok)
        return;
    char q[600];
    if (p->ok)
        sy_info("event=health route=%s target=%s healthy=1", r->conf->name, which_name(p->which));
    else
        sy_warn("event=health route=%s target=%s healthy=0 error=%s", r->conf->name, which_name(p->which),
                sy_logq(q, sizeof(q), p->err));
    p->last_ok = p->ok;
}

static void async_cb(uv_async_t *h)
{
    (void)h;
    pthread_mutex_lock(&pr.mu);
    pr_probe_t *done = pr.done;
    pr.done = NULL;
    pthread_mutex_unlock(&pr.mu);
    while (done != NULL) {
        pr_probe_t *p = done;
        done = p->next;
        store(p);
    }
    pump();
}

/* Queue the probes that are due. */
static void pump(void)
{
    if (pr.stopping || pr.probes == NULL)
        return;
    uint64_t now = uv_now(sy_server.loop);
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        pr_probe_t *p = &pr.probes[i];
        sy_route_t *r = p->route;
        if (p->busy)
            continue;
        if (p->has_result && p->which == r->active && p->conf == r->conf && now - p->started_ms < PR_EVERY_MS)
            continue;
        p->which = r->active;
        p->conf = r->conf;
        p->started_ms = now;
        p->busy = 1;
        p->next = NULL;
        pthread_mutex_lock(&pr.mu);
        if (pr.todo_tail != NULL)
            pr.todo_tail->next = p;
        else
            pr.todo = p;
        pr.todo_tail = p;
        pthread_cond_signal(&pr.cv);
        pthread_mutex_unlock(&pr.mu);
    }
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
    pump();
}

int sy_probes_start(char *err, size_t errlen)
{
    pr.probes = calloc(sy_server.nroutes ? sy_server.nroutes : 1, sizeof(*pr.probes));
    if (pr.probes == NULL) {
        snprintf(err, errlen, "out of memory for health probes");
        return -1;
    }
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        sy_route_t *r = &sy_server.routes[i];
        pr.probes[i].route = r;
        pr.probes[i].last_ok = -1;
        r->healthy = 0;
        snprintf(r->health_err, sizeof(r->health_err), "%s", PR_NOT_PROBED);
    }
    if (sy_server.nroutes == 0)
        return 0;
    int rc = uv_async_init(sy_server.loop, &pr.async, async_cb);
    if (rc != 0) {
        snprintf(err, errlen, "health probes: %s", uv_strerror(rc));
        return -1;
    }
    uv_unref((uv_handle_t *)&pr.async);
    int want = sy_server.nroutes < PR_THREADS ? (int)sy_server.nroutes : PR_THREADS;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (; pr.nthreads < want; pr.nthreads++) {
        pthread_t th;
        if ((rc = pthread_create(&th, &attr, pr_thread, NULL)) != 0)
            break;
    }
    pthread_attr_destroy(&attr);
    if (pr.nthreads == 0) {
        snprintf(err, errlen, "health probes: cannot start a thread: %s", strerror(rc));
        return -1;
    }
    uv_timer_init(sy_server.loop, &pr.timer);
    pr.timer_on = 1;
    uv_timer_start(&pr.timer, tick_cb, PR_TICK_MS, PR_TICK_MS);
    uv_unref((uv_handle_t *)&pr.timer);
    pump();   /* the first round right away */
    return 0;
}

/* Probes still queued are dropped; one already running finishes on its thread, and its
 * result is not stored. */
void sy_probes_stop(void)
{
    if (pr.stopping)
        return;
    pr.stopping = 1;
    if (pr.timer_on) {
        uv_timer_stop(&pr.timer);
        uv_close((uv_handle_t *)&pr.timer, NULL);
        pr.timer_on = 0;
    }
    pthread_mutex_lock(&pr.mu);
    pr.todo = pr.todo_tail = NULL;
    pthread_mutex_unlock(&pr.mu);
}

conf_which_t sy_probe_target(size_t i)
{
    const pr_probe_t *p = pr.probes != NULL && i < sy_server.nroutes ? &pr.probes[i] : NULL;
    return p != NULL && p->has_result ? p->which : sy_server.routes[i].active;
}
