/*
 * test_pg_cancel.c - the cancel-key table (proxy/pg/pg_cancel.c): every registered key is
 * found and routed to its session's worker, an unregistered one is not, and the table
 * that grew for a burst of sessions shrinks back once they end (it used to stay at the
 * peak's size: 256 KB for 5,000 sessions, every page touched).
 *
 * Out of memory, a table that cannot grow takes keys until one slot is left, then hands
 * out key 0 (never routed) instead of aborting the daemon, as it did before.
 *
 * The rest of the proxy is stubbed: sessions are opaque pointers on a fake loop, and
 * sy_post records where a cancel request would go instead of posting it. calloc is
 * wrapped (-Wl,--wrap=calloc, Makefile) so that the table's growth can be made to fail.
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

static int calloc_fails;   /* the table's calloc returns NULL while set */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    return calloc_fails ? NULL : __real_calloc(n, size);
}
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
    /* Out of memory: with no table yet, key 0. A fresh 256-slot table that cannot grow
     * past half load takes keys up to 255 (one slot stays empty, or a lookup of an absent
     * key would never end), then hands out key 0; lookups of absent keys still end. */
    static uint32_t oom[256];
    int got = 0, zero = 0, found;
    calloc_fails = 1;
    CHECK(pg_cancel_register((pg_session_t *)&sessions[0]) == 0 && pg_cancel_slots() == 0);
    calloc_fails = 0;
    for (int i = 0; i < 128; i++)
        oom[got++] = pg_cancel_register((pg_session_t *)&sessions[i]);
    calloc_fails = 1;
    for (int i = 128; i < 256; i++) {
        uint32_t k = pg_cancel_register((pg_session_t *)&sessions[i]);
        if (k == 0)
            zero++;
        else
            oom[got++] = k;
    }
    CHECK_MSG(pg_cancel_slots() == 256, "%u slots with calloc failing", pg_cancel_slots());
    CHECK_MSG(got == 255 && zero == 1, "%d keys and %d zero keys with calloc failing", got, zero);
    calloc_fails = 0;   /* routing a request allocates its message */
    found = 0;
    for (int i = 0; i < got; i++)
        found += routed(oom[i]);
    CHECK_MSG(found == got, "%d of %d keys routed in a full table", found, got);
    CHECK(!routed(0x5eed1234u));
    uint32_t again = pg_cancel_register((pg_session_t *)&sessions[0]);
    CHECK(again != 0 && routed(again) && pg_cancel_slots() > 256);
    pg_cancel_unregister(again);
    for (int i = 0; i < got; i++)
        pg_cancel_unregister(oom[i]);
    CHECK(pg_cancel_slots() == 256);

    for (int i = 0; i < N; i++) {
        keys[i] = pg_cancel_register((pg_session_t *)&sessions[i]);
        CHECK(keys[i] != 0);
    }
    uint32_t peak = pg_cancel_slots();
    CHECK_MSG(peak >= 2 * N, "%u slots for %d keys", peak, N);
    found = 0;
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
