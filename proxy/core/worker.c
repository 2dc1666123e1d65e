/*
 * worker.c - the loops: one control loop on the main thread, and one session loop per
 * worker thread (`workers`, by default one per CPU).
 *
 *   main thread     control loop (sy_server.loop): signals, console commands, switchover
 *                   and pause timers, reload, metrics and health probes
 *   worker 0        session loop; also polls the listeners and hands each accepted socket
 *                   to the workers in turn
 *   worker 1..N-1   session loops
 *
 * A session lives on one worker loop for its whole life, and only that loop's thread
 * touches it while the data flows: the relay path takes no lock.
 *
 * The control plane walks sessions of every loop (a switch holds, moves and releases
 * them; SHOW CLIENTS describes them; SIGTERM kicks them). Instead of rewriting all of that
 * as messages, the main thread "stops the world" while its callbacks run: every worker
 * parks in an async callback of its own loop, so the main thread has every session and
 * every loop to itself, exactly as a single loop would (sy_world_stop). Workers run their
 * loops with UV_RUN_DEFAULT and pay nothing for this between stops. The main thread waits
 * on its loop's backend fd with poll(2) and runs the loop with UV_RUN_NOWAIT, libuv's way
 * to embed a loop (uv_backend_fd / uv_backend_timeout), stopping the world around each
 * round of callbacks.
 *
 * Workers never call control code directly. What a session tells the control plane (a
 * switch may step, a console command to run, a cancel to route, the last client left
 * during shutdown) is posted to the main loop (sy_ctl_post, route->poke) and handled
 * there with the world stopped. Counters they update are atomic (SY_STAT_ADD). The
 * session list and the cancel-key map, which workers change as sessions come and go,
 * take sy_shared_mu.
 *
 * A worker never parks while it holds sy_shared_mu, and nothing blocks while holding it.
 */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "proxy/core/sy.h"

typedef struct handoff_s {
    sy_listener_t *l;
    int            fd;
    int            trusted;
} handoff_t;

typedef struct sy_worker_s {
    int             id;
    uv_loop_t       loop;
    uv_thread_t     thread;
    uv_async_t      wake;       /* new sockets to start here */
    uv_async_t      park;       /* the main thread stops the world */
    pthread_mutex_t qmu;        /* accepted sockets waiting to be started here */
    handoff_t      *q;
    size_t          qlen, qcap;
} sy_worker_t;

pthread_mutex_t sy_shared_mu = PTHREAD_MUTEX_INITIALIZER;

static sy_worker_t *workers;
static int nworkers;
static unsigned next_worker;
static __thread int on_main;
static __thread sy_worker_t *self;

/* Stopping the world (see sy_world_stop). */
static int stw_depth;
static int stw_want;          /* the main thread wants every worker parked */
static unsigned stw_gen;      /* bumped by each release */
static int parked;            /* workers inside park_cb */
static int running;           /* worker threads started */
static pthread_mutex_t stw_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stw_cv = PTHREAD_COND_INITIALIZER;      /* release */
static pthread_cond_t parked_cv = PTHREAD_COND_INITIALIZER;   /* parked changed */

/* Posted control work. */
static pthread_mutex_t ctl_mu = PTHREAD_MUTEX_INITIALIZER;
static sy_ctl_t *ctl_head, *ctl_tail;
static uv_async_t ctl_async;
static int main_quit;

int sy_on_main(void)
{
    return on_main;
}

int sy_nworkers(void)
{
    return nworkers;
}

int sy_loop_index(const uv_loop_t *loop)
{
    const sy_worker_t *w = loop->data;
    return w->id;
}

/*
 * The main thread stops the world by asking every worker to park (an async callback on
 * the worker's own loop, so it runs between two other callbacks) and waiting until all
 * have. Until the release, the main thread acts on worker loops and sessions as if it were
 * a callback of each: libuv allows a callback to start, stop and close any handle of its
 * loop, which is all the control code does. The release waits until every worker has left,
 * so a worker still leaving one stop is never counted as parked for the next.
 */
void sy_world_stop(void)
{
    if (stw_depth++ > 0 || !running)
        return;
    pthread_mutex_lock(&stw_mu);
    stw_want = 1;
    pthread_mutex_unlock(&stw_mu);
    for (int i = 0; i < nworkers; i++)
        uv_async_send(&workers[i].park);
    pthread_mutex_lock(&stw_mu);
    while (parked < nworkers)
        pthread_cond_wait(&parked_cv, &stw_mu);
    pthread_mutex_unlock(&stw_mu);
}

void sy_world_start(void)
{
    if (--stw_depth > 0 || !running)
        return;
    pthread_mutex_lock(&stw_mu);
    stw_want = 0;
    stw_gen++;
    pthread_cond_broadcast(&stw_cv);
    while (parked > 0)
        pthread_cond_wait(&parked_cv, &stw_mu);
    pthread_mutex_unlock(&stw_mu);
}

static void park_cb(uv_async_t *a)
{
    pthread_mutex_lock(&stw_mu);
    if (stw_want) {
        unsigned gen = stw_gen;
        parked++;
        pthread_cond_broadcast(&parked_cv);
        while (stw_gen == gen)
            pthread_cond_wait(&stw_cv, &stw_mu);
        parked--;
        pthread_cond_broadcast(&parked_cv);
    }
    pthread_mutex_unlock(&stw_mu);
}

/* ---- control work posted by sessions --------------------------------------------------- */

void sy_ctl_post(sy_ctl_t *c)
{
    if (on_main) {
        c->fn(c);
        return;
    }
    c->next = NULL;
    pthread_mutex_lock(&ctl_mu);
    if (ctl_tail)
        ctl_tail->next = c;
    else
        ctl_head = c;
    ctl_tail = c;
    pthread_mutex_unlock(&ctl_mu);
    uv_async_send(&ctl_async);
}

void sy_ctl_wake(void)
{
    if (!on_main)
        uv_async_send(&ctl_async);
}

/* Runs on the main loop, so with the world stopped. */
static void ctl_async_cb(uv_async_t *a)
{
    for (;;) {
        pthread_mutex_lock(&ctl_mu);
        sy_ctl_t *c = ctl_head;
        if (c != NULL) {
            ctl_head = c->next;
            if (ctl_head == NULL)
                ctl_tail = NULL;
        }
        pthread_mutex_unlock(&ctl_mu);
        if (c == NULL)
            break;
        c->fn(c);
    }
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        sy_route_t *r = &sy_server.routes[i];
        if (__atomic_exchange_n(&r->poke, 0, __ATOMIC_ACQ_REL))
            sy_switch_poke(r);
    }
    sy_server_client_gone();
}

void sy_main_quit(void)
{
    main_quit = 1;
}

/* The main thread's loop: its callbacks run with the world stopped. Returns (to exit) with
 * the world still stopped, so no worker is half-way through anything as the process ends. */
void sy_main_run(void)
{
    uv_loop_t *loop = sy_server.loop;
    for (;;) {
        sy_world_stop();
        uv_run(loop, UV_RUN_NOWAIT);
        if (main_quit)
            return;
        sy_world_start();
        int timeout = uv_backend_timeout(loop);
        if (timeout != 0) {
            struct pollfd p = { .fd = uv_backend_fd(loop), .events = POLLIN };
            poll(&p, 1, timeout);
        }
    }
}

/* ---- workers ---------------------------------------------------------------------------- */

static const sy_proto_t *protos[CONF_PROTO_REDIS + 1];

void sy_proto_register(conf_proto_t proto, const sy_proto_t *ops)
{
    protos[proto] = ops;
}

static void start_session(sy_listener_t *l, int fd, int trusted, uv_loop_t *loop)
{
    const sy_proto_t *ops = protos[l->conf->proto];
    if (ops == NULL) {
        close(fd);
        return;
    }
    ops->start(l, fd, trusted, loop);
}

static void wake_cb(uv_async_t *a)
{
    sy_worker_t *w = a->data;
    pthread_mutex_lock(&w->qmu);
    handoff_t *q = w->q;
    size_t n = w->qlen;
    w->q = NULL;
    w->qlen = w->qcap = 0;
    pthread_mutex_unlock(&w->qmu);
    for (size_t i = 0; i < n; i++) {
        if (sy_server.stopping)
            close(q[i].fd);
        else
            start_session(q[i].l, q[i].fd, q[i].trusted, &w->loop);
    }
    free(q);
}

static void worker_main(void *arg)
{
    sy_worker_t *w = arg;
    self = w;
    uv_run(&w->loop, UV_RUN_DEFAULT);   /* the wake handle keeps it alive for good */
}

uv_loop_t *sy_accept_loop(void)
{
    return &workers[0].loop;
}

/* On the accept loop: give the socket to the next worker. */
void sy_dispatch(sy_listener_t *l, int fd, int trusted)
{
    sy_worker_t *w = &workers[next_worker++ % (unsigned)nworkers];
    if (w == self) {
        start_session(l, fd, trusted, &w->loop);
        return;
    }
    pthread_mutex_lock(&w->qmu);
    if (w->qlen == w->qcap) {
        size_t ncap = w->qcap ? w->qcap * 2 : 64;
        handoff_t *nq = realloc(w->q, ncap * sizeof(handoff_t));
        if (nq == NULL) {
            pthread_mutex_unlock(&w->qmu);
            sy_warn("event=accept_dropped reason=out_of_memory");
            close(fd);
            return;
        }
        w->q = nq;
        w->qcap = ncap;
    }
    w->q[w->qlen++] = (handoff_t){ l, fd, trusted };
    pthread_mutex_unlock(&w->qmu);
    uv_async_send(&w->wake);
}

int sy_workers_start(int n, char *err, size_t errlen)
{
    on_main = 1;
    if (uv_async_init(sy_server.loop, &ctl_async, ctl_async_cb) != 0) {
        snprintf(err, errlen, "cannot create the control wakeup");
        return -1;
    }
    uv_unref((uv_handle_t *)&ctl_async);
    workers = calloc((size_t)n, sizeof(sy_worker_t));
    if (workers == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        sy_worker_t *w = &workers[i];
        w->id = i;
        int rc = uv_loop_init(&w->loop);
        if (rc == 0)
            rc = uv_async_init(&w->loop, &w->wake, wake_cb);
        if (rc == 0)
            rc = uv_async_init(&w->loop, &w->park, park_cb);
        if (rc != 0) {
            snprintf(err, errlen, "cannot create worker loop %d: %s", i, uv_strerror(rc));
            return -1;
        }
        w->loop.data = w;
        w->wake.data = w;
        pthread_mutex_init(&w->qmu, NULL);
    }
    nworkers = n;
    return 0;
}

/* The listeners are on worker 0's loop by now: start the threads. */
int sy_workers_run(char *err, size_t errlen)
{
    for (int i = 0; i < nworkers; i++) {
        int rc = uv_thread_create(&workers[i].thread, worker_main, &workers[i]);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start worker thread %d: %s", i, uv_strerror(rc));
            return -1;
        }
    }
    running = 1;
    return 0;
}
