/*
 * pg_cancel.c - CancelRequest routing.
 *
 * Each Postgres session hands its client a BackendKeyData with the upstream backend's
 * real process id and a secret key of our own (libpq 15 cannot tell us the upstream's
 * key). The key maps back to the session here; a CancelRequest whose key is unknown, or
 * whose process id is not that session's backend, is ignored, so a cancel can never
 * reach the wrong backend. The cancel itself is PQcancel on the session's PGcancel,
 * run on libuv's thread pool because it connects and waits.
 *
 * Sessions register and unregister keys on their worker loops, under sy_shared_mu. A
 * CancelRequest arrives on any worker, for a session that may live on another: the key
 * names the session's worker (looked up under the mutex), and the request is posted
 * there. That worker looks the key up again (the session may have ended meanwhile; it
 * cannot end while its own worker runs this) and starts the cancel with a PGcancel of the
 * job's own, made from the session's connection: a move that swaps the connection never
 * frees what a running cancel uses.
 */
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "proxy/core/sy.h"
#include "proxy/pg/pg_session.h"

typedef struct slot_s {
    uint32_t      key;       /* 0: empty */
    int           worker;    /* the session's worker */
    pg_session_t *s;
} slot_t;

static slot_t  *table;
static uint32_t tcap, tused, tdead;
#define TOMB ((pg_session_t *)1)
#define TABLE_MIN 256   /* slots; a burst's table shrinks back to this as its sessions end */

static int rehash(uint32_t ncap)
{
    slot_t *old = table;
    uint32_t ocap = tcap;
    if ((table = calloc(ncap, sizeof(slot_t))) == NULL) {
        table = old;
        return -1;
    }
    tcap = ncap;
    tused = tdead = 0;
    for (uint32_t i = 0; i < ocap; i++) {
        if (old[i].key != 0 && old[i].s != TOMB) {
            uint32_t h = old[i].key & (tcap - 1);
            while (table[h].key != 0)
                h = (h + 1) & (tcap - 1);
            table[h] = old[i];
            tused++;
        }
    }
    free(old);
    return 0;
}

static slot_t *lookup(uint32_t key)
{
    if (key == 0 || tcap == 0)
        return NULL;
    for (uint32_t h = key & (tcap - 1);; h = (h + 1) & (tcap - 1)) {
        if (table[h].key == 0)
            return NULL;
        if (table[h].key == key && table[h].s != TOMB)
            return &table[h];
    }
}

uint32_t pg_cancel_register(pg_session_t *s)
{
    pthread_mutex_lock(&sy_shared_mu);
    if ((tused + tdead + 1) * 2 > tcap)   /* out of memory the table goes on over half load */
        (void)rehash(tcap == 0 ? TABLE_MIN : (tused + 1) * 4 > tcap ? tcap * 2 : tcap);
    if (tused + tdead + 1 >= tcap) {
        /* It could not grow, and one more key would leave no empty slot (lookup stops at
         * one): this session gets key 0, which is never looked up, so its cancels are
         * ignored and everyone else goes on. */
        pthread_mutex_unlock(&sy_shared_mu);
        sy_warn("event=cancel_key_unavailable reason=out_of_memory");
        return 0;
    }
    uint32_t key;
    do {
        sy_random(&key, sizeof(key));
    } while (key == 0 || lookup(key) != NULL);
    uint32_t h = key & (tcap - 1);
    while (table[h].key != 0 && table[h].s != TOMB)
        h = (h + 1) & (tcap - 1);
    if (table[h].s == TOMB)
        tdead--;
    table[h].key = key;
    table[h].s = s;
    table[h].worker = sy_loop_index(pg_session_loop(s));
    tused++;
    pthread_mutex_unlock(&sy_shared_mu);
    return key;
}

void pg_cancel_unregister(uint32_t key)
{
    if (key == 0)
        return;
    pthread_mutex_lock(&sy_shared_mu);
    for (uint32_t h = key & (tcap - 1); tcap > 0; h = (h + 1) & (tcap - 1)) {
        if (table[h].key == 0)
            break;
        if (table[h].key == key && table[h].s != TOMB) {
            table[h].s = TOMB;
            tused--;
            tdead++;
            break;
        }
    }
    /* Under an eighth full: halve it (a quarter full after), so that the table of a burst
     * of 5,000 sessions (16,384 slots, 256 KB, every page touched by random keys) does not
     * stay once they left. Out of memory the bigger table simply stays. */
    if (tcap > TABLE_MIN && tused * 8 < tcap)
        (void)rehash(tcap / 2);
    pthread_mutex_unlock(&sy_shared_mu);
}

uint32_t pg_cancel_slots(void)
{
    pthread_mutex_lock(&sy_shared_mu);
    uint32_t n = tcap;
    pthread_mutex_unlock(&sy_shared_mu);
    return n;
}

/* ---- PQcancel on libuv's thread pool (it connects and waits) ---------------------- */

typedef struct cancel_job_s {
    uv_work_t    req;
    PGcancel    *pc;
    pg_cancel_cb cb;
    void        *arg;
    int          ok;
    char         err[256];
} cancel_job_t;

static void job_work(uv_work_t *req)
{
    cancel_job_t *j = req->data;
    j->ok = PQcancel(j->pc, j->err, sizeof(j->err));
}

static void job_done(uv_work_t *req, int status)
{
    cancel_job_t *j = req->data;
    (void)status;
    j->cb(j->arg, j->ok, j->err);
    PQfreeCancel(j->pc);
    free(j);
}

int pg_cancel_run(uv_loop_t *loop, PGcancel *pc, pg_cancel_cb cb, void *arg)
{
    cancel_job_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        PQfreeCancel(pc);
        return -1;
    }
    j->req.data = j;
    j->pc = pc;
    j->cb = cb;
    j->arg = arg;
    if (uv_queue_work(loop, &j->req, job_work, job_done) != 0) {
        PQfreeCancel(pc);
        free(j);
        return -1;
    }
    return 0;
}

/* ---- a client's CancelRequest -------------------------------------------------------- */

typedef struct cancel_msg_s {
    sy_msg_t msg;   /* first: the request, on the session's worker */
    uint32_t pid, key;
} cancel_msg_t;

static void client_cancel_done(void *arg, int ok, const char *err)
{
    pg_session_t *s = arg;
    if (ok)
        sy_info("event=cancel_sent conn=%llu", (unsigned long long)pg_session_id(s));
    else
        sy_warn("event=cancel_failed conn=%llu error=\"%s\"", (unsigned long long)pg_session_id(s), err);
    pg_session_cancel_done(s);
    pg_session_unref(s);
}

/* On the session's worker: find it again and start the cancel. */
static void cancel_on_worker(sy_msg_t *m)
{
    cancel_msg_t *w = (cancel_msg_t *)m;
    pthread_mutex_lock(&sy_shared_mu);
    slot_t *slot = lookup(w->key);
    pg_session_t *s = slot ? slot->s : NULL;
    pthread_mutex_unlock(&sy_shared_mu);
    PGcancel *pc = s ? pg_session_cancel_handle(s, w->pid) : NULL;
    free(w);
    if (pc == NULL) {
        sy_info("event=cancel_ignored reason=unknown_key");
        return;
    }
    pg_session_ref(s);
    if (pg_cancel_run(pg_session_loop(s), pc, client_cancel_done, s) != 0) {
        pg_session_cancel_done(s);
        pg_session_unref(s);
    }
}

void pg_cancel_request(uint32_t pid, uint32_t key)
{
    pthread_mutex_lock(&sy_shared_mu);
    slot_t *slot = lookup(key);
    int worker = slot ? slot->worker : -1;
    pthread_mutex_unlock(&sy_shared_mu);
    if (worker < 0) {
        sy_info("event=cancel_ignored reason=unknown_key");
        return;
    }
    cancel_msg_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    w->pid = pid;
    w->key = key;
    w->msg.fn = cancel_on_worker;
    sy_post(worker, &w->msg);
}
