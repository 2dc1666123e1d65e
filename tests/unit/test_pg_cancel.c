/*
 * test_pg_cancel.c - the cancel-key table (proxy/pg/pg_cancel.c): every registered key is
 * found and routed to its session's worker, an unregistered one is not, and the table
 * that grew for a burst of sessions shrinks back once they end (it used to stay at the
 * peak's size: 256 KB for 5,000 sessions, every page touched).
 *
 * The rest of the proxy is stubbed: sessions are opaque pointers on a fake loop, and
 * sy_post records where a cancel request would go instead of posting it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <libpq-fe.h>
#include "proxy/core/sy.h"
#include "proxy/pg/pg_session.h"
#include "tests/unit/unit.h"

pthread_mutex_t sy_shared_mu = PTHREAD_MUTEX_INITIALIZER;
int sy_log_level = SY_LOG_WARN;
static uv_loop_t fake_loop;
static int posted_worker = -1;
static unsigned rnd = 12345;

void sy_log(int level, const char *fmt, ...) { (void)level; (void)fmt; }
void sy_random(void *out, size_t len)
{
    uint8_t *p = out;
    for (size_t i = 0; i < len; i++) {
        rnd = rnd * 1103515245u + 12345u;
        p[i] = (uint8_t)(rnd >> 16);
    }
}
int sy_loop_index(const uv_loop_t *loop) { return loop == &fake_loop ? 3 : -1; }
void sy_post(int worker, sy_msg_t *m) { posted_worker = worker; free(m); }
uv_loop_t *pg_session_loop(const pg_session_t *s) { (void)s; return &fake_loop; }
uint64_t pg_session_id(const pg_session_t *s) { (void)s; return 0; }
void pg_session_ref(pg_session_t *s) { (void)s; }
void pg_session_unref(pg_session_t *s) { (void)s; }
PGcancel *pg_session_cancel_handle(pg_session_t *s, uint32_t pid) { (void)s; (void)pid; return NULL; }
void pg_session_cancel_done(pg_session_t *s) { (void)s; }

/* pg_cancel_request routes key to a worker: 1 when it found the key. */
static int routed(uint32_t key)
{
    posted_worker = -1;
    pg_cancel_request(1, key);
    return posted_worker == 3;
}

#define N 5000

int main(void)
{
    static uint32_t keys[N];
    static char sessions[N];   /* distinct addresses to stand for sessions */

    CHECK(pg_cancel_slots() == 0);
    for (int i = 0; i < N; i++) {
        keys[i] = pg_cancel_register((pg_session_t *)&sessions[i]);
        CHECK(keys[i] != 0);
    }
    uint32_t peak = pg_cancel_slots();
    CHECK_MSG(peak >= 2 * N, "%u slots for %d keys", peak, N);
    int found = 0;
    for (int i = 0; i < N; i++)
        found += routed(keys[i]);
    CHECK_MSG(found == N, "%d of %d keys routed", found, N);
    CHECK(!routed(0));

    /* Most sessions end: the table shrinks, and the keys left are still found. */
    for (int i = 0; i < N - 100; i++)
        pg_cancel_unregister(keys[i]);
    uint32_t mid = pg_cancel_slots();
    CHECK_MSG(mid < peak && mid >= 2 * 100, "%u slots for 100 keys (peak %u)", mid, peak);
    found = 0;
    for (int i = N - 100; i < N; i++)
        found += routed(keys[i]);
    CHECK_MSG(found == 100, "%d of 100 keys left routed after the shrink", found);
    int stale = 0;
    for (int i = 0; i < N - 100; i++)
        stale += routed(keys[i]);
    CHECK_MSG(stale == 0, "%d unregistered keys still routed", stale);

    /* All gone: back to the smallest table; it grows again for the next burst. */
    for (int i = N - 100; i < N; i++)
        pg_cancel_unregister(keys[i]);
    CHECK_MSG(pg_cancel_slots() == 256, "%u slots with no session", pg_cancel_slots());
    for (int i = 0; i < N; i++)
        keys[i] = pg_cancel_register((pg_session_t *)&sessions[i]);
    found = 0;
    for (int i = 0; i < N; i++)
        found += routed(keys[i]);
    CHECK_MSG(found == N, "%d of %d keys routed after growing again", found, N);
    for (int i = 0; i < N; i++)
        pg_cancel_unregister(keys[i]);
    CHECK(pg_cancel_slots() == 256);
    return unit_done("test_pg_cancel");
}
