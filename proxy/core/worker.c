/*
 * worker.c - the loops: one control loop on the main thread, and one session loop per
 * worker thread (`workers`, by default half the CPUs).
 *
 *   main thread     control loop (sy_server.loop): signals, console commands, switchover
 *                   and pause timers, reload, metrics and health probes
 *   worker 0        session loop; also polls the listeners and hands each accepted socket
 *                   to the workers in turn
 *   worker 1..N-1   session loops
 *
 * A session lives on one worker loop for its whole life, and only that loop's thread
 * touches it: the relay path takes no lock.
 *
 * Threads talk by posting messages, as envoy's Dispatcher::post() does; nothing calls
 * into another thread's loop except uv_async_send:
 *
 *   main -> worker   sy_post(worker, msg): msg->fn runs on that worker's loop
 *   main -> all      sy_run_on_all(each, done, ctx): each(ctx, w) on every worker, then
 *                    done(ctx) on the main loop once all have run (envoy's runOnAllThreads)
 *   worker -> main   sy_ctl_post(ctl): ctl->fn runs on the main loop
 *
 * Each worker keeps its own client and server connections on lists per route and state
 * (session.c), so a switch step on a worker reads only the sessions of that route on that
 * worker, and the workers move their own sessions in parallel.
 *
 * One isolation remains, for rare operations that swap what every worker reads (RELOAD's
 * configuration swap) and for the exit: sy_isolate() parks every worker in an async
 * callback of its own loop and returns when all are parked; sy_deisolate() releases
 * them. Like haproxy's thread_isolate(), it is explicit, bounded by one callback of each
 * worker, and never used in the steady state.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
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
    uv_async_t      wake;       /* new sockets or messages to handle here */
    uv_async_t      park;       /* the main thread isolates (sy_isolate) */
    pthread_mutex_t qmu;        /* guards q and msgs */
    handoff_t      *q;          /* accepted sockets waiting to be started here */
    size_t          qlen, qcap;
    sy_msg_t       *msg_head, *msg_tail;
    int            *graves;     /* fds whose close waits (sy_close_later) */
    size_t          ngraves, gcap;
} sy_worker_t;

pthread_mutex_t sy_shared_mu = PTHREAD_MUTEX_INITIALIZER;

static sy_worker_t *workers;
static int nworkers;
static unsigned next_worker;
static __thread int on_main;
static __thread sy_worker_t *self;
__thread int sy_worker_index;   /* self's id, for the per-worker counters (sy.h) */

/* Isolation (see sy_isolate). */
static int iso_want;          /* the main thread wants every worker parked */
static unsigned iso_gen;      /* bumped by each release */
static int parked;            /* workers inside park_cb */
static int running;           /* worker threads started */
static pthread_mutex_t iso_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t iso_cv = PTHREAD_COND_INITIALIZER;      /* release */
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

int sy_worker_self(void)
{
    return self ? self->id : -1;
}

uv_loop_t *sy_worker_loop(int worker)
{
    return &workers[worker].loop;
}

/*
 * Park every worker between two of its callbacks and wait until all are parked. Until
 * sy_deisolate the main thread may read and change what workers read (the configuration,
 * route settings, any session) as if it were a callback of each loop. Bounded: each
 * worker parks at its next callback boundary. Used by RELOAD's swap and by the exit only.
 */
void sy_isolate(void)
{
    if (!running)
        return;
    pthread_mutex_lock(&iso_mu);
    iso_want = 1;
    pthread_mutex_unlock(&iso_mu);
    for (int i = 0; i < nworkers; i++)
        uv_async_send(&workers[i].park);
    pthread_mutex_lock(&iso_mu);
    while (parked < nworkers)
        pthread_cond_wait(&parked_cv, &iso_mu);
    pthread_mutex_unlock(&iso_mu);
}

/* The release waits until every worker has left, so a worker still leaving one isolation
 * is never counted as parked for the next. */
void sy_deisolate(void)
{
    if (!running)
        return;
    pthread_mutex_lock(&iso_mu);
    iso_want = 0;
    iso_gen++;
    pthread_cond_broadcast(&iso_cv);
    while (parked > 0)
        pthread_cond_wait(&parked_cv, &iso_mu);
    pthread_mutex_unlock(&iso_mu);
}

static void park_cb(uv_async_t *a)
{
    pthread_mutex_lock(&iso_mu);
    if (iso_want) {
        unsigned gen = iso_gen;
        parked++;
        pthread_cond_broadcast(&parked_cv);
        while (iso_gen == gen)
            pthread_cond_wait(&iso_cv, &iso_mu);
        parked--;
        pthread_cond_broadcast(&parked_cv);
    }
    pthread_mutex_unlock(&iso_mu);
}

/* ---- worker -> main ------------------------------------------------------------------- */

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
    sy_server_client_gone();
}

/* ---- main -> worker ------------------------------------------------------------------- */

void sy_post(int worker, sy_msg_t *m)
{
    sy_worker_t *w = &workers[worker];
    if (w == self) {
        m->fn(m);
        return;
    }
    m->next = NULL;
    pthread_mutex_lock(&w->qmu);
    if (w->msg_tail)
        w->msg_tail->next = m;
    else
        w->msg_head = m;
    w->msg_tail = m;
    pthread_mutex_unlock(&w->qmu);
    uv_async_send(&w->wake);
}

typedef struct fanout_s fanout_t;
typedef struct fanout_msg_s {
    sy_msg_t  msg;
    fanout_t *f;
    int       worker;
} fanout_msg_t;

struct fanout_s {
    sy_ctl_t     ctl;        /* first: the completion runs on the main loop */
    sy_each_fn   each;
    sy_all_fn    done;
    void        *ctx;
    int          remaining;  /* workers that have not run each yet (atomic) */
    fanout_msg_t msgs[];
};

static void fanout_done_cb(sy_ctl_t *c)
{
    fanout_t *f = (fanout_t *)c;
    if (f->done)
        f->done(f->ctx);
    free(f);
}

static void fanout_each_cb(sy_msg_t *m)
{
    fanout_msg_t *fm = (fanout_msg_t *)m;
    fanout_t *f = fm->f;
    f->each(f->ctx, fm->worker);
    if (__atomic_sub_fetch(&f->remaining, 1, __ATOMIC_ACQ_REL) == 0)
        sy_ctl_post(&f->ctl);
}

int sy_run_on_all(sy_each_fn each, sy_all_fn done, void *ctx)
{
    fanout_t *f = calloc(1, sizeof(*f) + (size_t)nworkers * sizeof(fanout_msg_t));
    if (f == NULL)
        return -1;
    f->ctl.fn = fanout_done_cb;
    f->each = each;
    f->done = done;
    f->ctx = ctx;
    f->remaining = nworkers;
    for (int i = 0; i < nworkers; i++) {
        f->msgs[i].msg.fn = fanout_each_cb;
        f->msgs[i].f = f;
        f->msgs[i].worker = i;
    }
    for (int i = 0; i < nworkers; i++)
        sy_post(i, &f->msgs[i].msg);
    return 0;
}

void sy_main_quit(void)
{
    main_quit = 1;
}

/* The main thread's loop, embedded (uv_backend_fd / uv_backend_timeout) so the exit can
 * be taken between two rounds. Returns with every worker isolated, so none is half-way
 * through anything as the process ends. */
void sy_main_run(void)
{
    uv_loop_t *loop = sy_server.loop;
    for (;;) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (main_quit) {
            sy_isolate();
            return;
        }
        int timeout = uv_backend_timeout(loop);
        if (timeout != 0) {
            struct pollfd p = { .fd = uv_backend_fd(loop), .events = POLLIN };
            poll(&p, 1, timeout);
        }
    }
}

/* ---- closes that can wait --------------------------------------------------------------- */

void sy_close_later(int fd)
{
    sy_worker_t *w = self;
    if (w == NULL || w->ngraves >= 8192) {   /* bounded: past that, close now */
        close(fd);
        return;
    }
    if (w->ngraves == w->gcap) {
        size_t ncap = w->gcap ? w->gcap * 2 : 256;
        int *g = realloc(w->graves, ncap * sizeof(int));
        if (g == NULL) {
            close(fd);
            return;
        }
        w->graves = g;
        w->gcap = ncap;
    }
    w->graves[w->ngraves++] = fd;
}

void sy_close_pending(void)
{
    sy_worker_t *w = self;
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->ngraves; i++)
        close(w->graves[i]);
    w->ngraves = 0;
    if (w->gcap > 4096) {   /* give a large burst's array back */
        free(w->graves);
        w->graves = NULL;
        w->gcap = 0;
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
    sy_msg_t *m = w->msg_head;
    w->q = NULL;
    w->qlen = w->qcap = 0;
    w->msg_head = w->msg_tail = NULL;
    pthread_mutex_unlock(&w->qmu);
    for (size_t i = 0; i < n; i++) {
        if (__atomic_load_n(&sy_server.stopping, __ATOMIC_ACQUIRE))
            close(q[i].fd);
        else
            start_session(q[i].l, q[i].fd, q[i].trusted, &w->loop);
    }
    free(q);
    while (m != NULL) {
        sy_msg_t *next = m->next;   /* fn may free m */
        m->fn(m);
        m = next;
    }
}

/*
 * The once-a-second sweep (session.c: the sessions' timeouts, idle servers, pipe memory) is
 * driven by a periodic timerfd that the loop polls, not by a uv timer. While a uv timer is
 * pending, every epoll_wait of the loop has a timeout, and the kernel arms and cancels an
 * hrtimer around each sleep: a relaying worker sleeps about once per request, and at two
 * loops that was 4% of switchyard's CPU per pgbench -S transaction (2026-12-07). The kernel
 * re-arms the timerfd once a second instead. Without a timerfd (out of descriptors), the uv
 * timer it replaces.
 */
typedef struct sweep_clock_s {
    int        worker;
    int        fd;
    uv_poll_t  poll;
    uv_timer_t timer;
} sweep_clock_t;

static void sweep_fd_cb(uv_poll_t *p, int status, int events)
{
    sweep_clock_t *c = p->data;
    uint64_t expirations;
    if (read(c->fd, &expirations, sizeof(expirations)) != (ssize_t)sizeof(expirations))
        return;   /* EAGAIN: nothing expired after all */
    sy_sweep(c->worker, uv_now(p->loop));
}

static void sweep_timer_cb(uv_timer_t *t)
{
    sweep_clock_t *c = t->data;
    sy_sweep(c->worker, uv_now(t->loop));
}

static void sweep_clock_start(sweep_clock_t *c, uv_loop_t *loop, int worker)
{
    struct itimerspec every_second = { { 1, 0 }, { 1, 0 } };
    c->worker = worker;
    c->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int err = c->fd < 0 ? errno : 0;
    if (c->fd >= 0 && timerfd_settime(c->fd, 0, &every_second, NULL) == 0 &&
        uv_poll_init(loop, &c->poll, c->fd) == 0) {
        c->poll.data = c;
        if (uv_poll_start(&c->poll, UV_READABLE, sweep_fd_cb) == 0) {
            uv_unref((uv_handle_t *)&c->poll);
            return;
        }
        uv_close((uv_handle_t *)&c->poll, NULL);
    }
    if (c->fd >= 0)
        close(c->fd);
    sy_warn("event=sweep_timerfd_unavailable worker=%d error=\"%s\"", worker,
            err ? strerror(err) : "cannot watch it");
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, sweep_timer_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&c->timer);
}

static void worker_main(void *arg)
{
    sy_worker_t *w = arg;
    self = w;
    sy_worker_index = w->id;
    sweep_clock_t sweep;
    sweep_clock_start(&sweep, &w->loop, w->id);
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
    if (workers == NULL || sy_lists_init(n) != 0) {
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
