/*
 * pipe.c - one direction of a relay through a fixed buffer.
 *
 * pump: read src into the free tail, let the session's scan hook look at the new bytes
 * and say how far they may go (fwd), and write [start..fwd) to dst at once. When dst
 * cannot take more, the bytes stay; when the buffer is full, reading stops until dst
 * drains: that is all the back-pressure there is.
 *
 * The buffer is there only while bytes are: a pipe takes one when data arrives (pump,
 * inject, feed, or a caller's sy_pipe_ensure) and gives it back when it is empty again
 * (start == end, so nothing held by the scan hook either) at the end of a pump or flush.
 * An idle session holds none. Buffers come from a free list per worker thread, at most
 * SY_PIPE_FREE_MAX long; beyond it they are unmapped, so a burst's memory goes back to the
 * system (64 KiB is below glibc's mmap threshold: malloc would keep it in the heap).
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "proxy/core/sy.h"

/* ---- buffers ------------------------------------------------------------------------ */

/* Only the thread that runs a worker's loop touches its sessions, so a thread-local list
 * is that worker's list, without a lock. */
static __thread uint8_t *free_bufs[SY_PIPE_FREE_MAX];
static __thread unsigned free_len;
static __thread unsigned torn_down;   /* pipes since the last trim; a server: SY_PIPE_TRIM_SERVER */
static __thread unsigned torn_seen;   /* torn_down at the last sweep */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* Under a sanitizer buffers are malloc'd, so ASan's redzones catch a write past cap, and
 * a free one is poisoned: a stale use of a released buffer is reported instead of landing
 * in someone else's bytes. */
static uint8_t *buf_map(void) { return malloc(SY_PIPE_BUF); }
static void buf_unmap(uint8_t *b) { free(b); }
#else
static uint8_t *buf_map(void)
{
    void *m = mmap(NULL, SY_PIPE_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}
static void buf_unmap(uint8_t *b) { munmap(b, SY_PIPE_BUF); }
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define BUF_POISON(b)   ASAN_POISON_MEMORY_REGION((b), SY_PIPE_BUF)
#define BUF_UNPOISON(b) ASAN_UNPOISON_MEMORY_REGION((b), SY_PIPE_BUF)
#else
#define BUF_POISON(b)   ((void)(b))
#define BUF_UNPOISON(b) ((void)(b))
#endif

static uint8_t *buf_get(void)
{
    if (free_len == 0)
        return buf_map();
    uint8_t *b = free_bufs[--free_len];
    BUF_UNPOISON(b);
    return b;
}

static void buf_put(uint8_t *b)
{
    if (free_len == SY_PIPE_FREE_MAX) {
        buf_unmap(b);
        return;
    }
    BUF_POISON(b);
    free_bufs[free_len++] = b;
}

void sy_pipe_setup(sy_pipe_t *p, sy_conn_t *src, sy_conn_t *dst, sy_scan_cb scan, int reading)
{
    *p = (sy_pipe_t){ .cap = SY_PIPE_BUF, .src = src, .dst = dst, .scan = scan, .reading = reading };
}

int sy_pipe_ensure(sy_pipe_t *p)
{
    if (p->buf == NULL && (p->buf = buf_get()) == NULL)
        return -ENOMEM;
    return 0;
}

/* Give the buffer back if nothing is in it. */
static void pipe_idle(sy_pipe_t *p)
{
    if (p->buf == NULL || p->start != p->end)
        return;
    buf_put(p->buf);
    p->buf = NULL;
    p->start = p->fwd = p->scanned = p->end = 0;
}

void sy_pipe_release(sy_pipe_t *p)
{
    if (p->buf != NULL)
        buf_put(p->buf);
    p->buf = NULL;
    p->start = p->fwd = p->scanned = p->end = 0;
    torn_down++;
}

/* Something else that held memory was freed on this loop (a server connection and its
 * PGconn: SY_PIPE_TRIM_SERVER): it counts, as that many pipes, towards the burst after
 * which the sweep trims. */
void sy_pipe_note_teardown(unsigned weight)
{
    torn_down += weight;
}

void sy_pipe_sweep(void)
{
    if (torn_down < SY_PIPE_TRIM_AFTER)
        return;
    /* Trim once the burst is over (a sweep with no teardown since the last one): trimming
     * halfway would leave the rest of the burst's memory in the heap. */
    if (torn_down != torn_seen) {
        torn_seen = torn_down;
        return;
    }
    torn_down = torn_seen = 0;
    while (free_len > 0)
        buf_unmap(buf_get());
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    malloc_trim(0);   /* the sessions' own structs, libuv's handles, OpenSSL's state */
#endif
    /* Under a sanitizer the allocator is the sanitizer's: malloc_trim would walk glibc's
     * own arenas, which hold nothing of ours, and on a thread other than main it reads an
     * arena glibc never set up (a SEGV in mtrim at 0x8, test_switch_pgbench under ASan,
     * 2026-12-03; google/sanitizers#1721). */
}

unsigned sy_pipe_free_count(void)
{
    return free_len;
}

/* ---- the relay ---------------------------------------------------------------------- */

static void pipe_compact(sy_pipe_t *p)
{
    if (p->start == 0)
        return;
    uint32_t n = p->end - p->start;
    if (n > 0)
        memmove(p->buf, p->buf + p->start, n);
    p->fwd -= p->start;
    p->scanned -= p->start;
    p->end = n;
    p->start = 0;
}

/* Write [start..fwd); the buffer stays (a pump reads into it next). */
static int pipe_write(sy_pipe_t *p)
{
    while (p->fwd > p->start) {
        ssize_t n = p->dst->tp->write(p->dst, p->buf + p->start, p->fwd - p->start);
        if (n == SY_EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        p->start += (uint32_t)n;
        p->bytes += (uint64_t)n;
    }
    if (p->start == p->end)
        p->start = p->fwd = p->scanned = p->end = 0;
    return 0;
}

uint32_t sy_pipe_space(sy_pipe_t *p)
{
    if (sy_pipe_ensure(p) != 0)
        return 0;
    if (p->start == p->end && p->start != 0) {
        p->start = p->fwd = p->scanned = p->end = 0;
    } else if (p->cap - p->end < p->cap / 4 && p->start > 0) {
        pipe_compact(p);
    }
    return p->cap - p->end;
}

int sy_pipe_inject(sy_pipe_t *p, const void *bytes, size_t len)
{
    if (sy_pipe_ensure(p) != 0)
        return -1;
    if (sy_pipe_space(p) < len) {
        pipe_compact(p);
        if (p->cap - p->end < len)
            return -1;
    }
    /* Only valid when everything buffered is already forwardable. */
    memcpy(p->buf + p->end, bytes, len);
    p->end += (uint32_t)len;
    p->scanned = p->end;
    p->fwd = p->end;
    return 0;
}

int sy_pipe_feed(sy_pipe_t *p, const uint8_t *data, size_t len, size_t *sent)
{
    while (*sent < len) {
        if (sy_pipe_ensure(p) != 0)
            return -ENOMEM;
        uint32_t space = sy_pipe_space(p);
        if (space == 0)
            break;
        size_t n = len - *sent;
        if (n > space)
            n = space;
        memcpy(p->buf + p->end, data + *sent, n);
        p->end += (uint32_t)n;
        p->scanned = p->fwd = p->end;
        *sent += n;
        int r = pipe_write(p);
        if (r < 0)
            return r;
        if (sy_pipe_pending(p))
            break;
    }
    return sy_pipe_flush(p);
}

/* Let the scan hook see what arrived, then write what it let through. */
static int scan_and_flush(void *sess, sy_pipe_t *p)
{
    if (p->scan(sess, p) != 0)
        return SY_PUMP_CLOSING;
    int r = pipe_write(p);
    if (r < 0) {
        p->err = r;
        return SY_PUMP_DST_ERR;
    }
    return SY_PUMP_OK;
}

int sy_pipe_resume(void *sess, sy_pipe_t *p)
{
    p->reading = 1;
    int r = scan_and_flush(sess, p);
    pipe_idle(p);
    return r;
}

int sy_pipe_pending(const sy_pipe_t *p)
{
    return p->fwd > p->start;
}

int sy_pipe_flush(sy_pipe_t *p)
{
    int r = pipe_write(p);
    pipe_idle(p);
    return r;
}

static int pipe_pump(void *sess, sy_pipe_t *p)
{
    p->full = 0;
    for (int budget = SY_PIPE_READ_BUDGET; p->reading && !p->src_eof; budget--) {
        /* Out of budget: stop, unless TLS holds input that no poll event would announce. */
        if (budget <= 0 && !(p->src->tp->has_pending != NULL && p->src->tp->has_pending(p->src)))
            return 0;
        if (sy_pipe_ensure(p) != 0) {
            p->err = -ENOMEM;
            return SY_PUMP_SRC_ERR;
        }
        uint32_t space = sy_pipe_space(p);
        if (space == 0) {
            p->full = 1;
            return 0;
        }
        ssize_t n = p->src->tp->read(p->src, p->buf + p->end, space);
        if (n == SY_EAGAIN)
            return 0;
        if (n == 0) {
            p->src_eof = 1;
            return SY_PUMP_EOF;
        }
        if (n < 0) {
            p->err = (int)n;
            return SY_PUMP_SRC_ERR;
        }
        p->end += (uint32_t)n;
        int r = scan_and_flush(sess, p);
        if (r != SY_PUMP_OK)
            return r;
        /* A short plain read means the socket is drained; TLS may hold more records. */
        if ((uint32_t)n < space && p->src->ssl == NULL)
            return 0;
    }
    return 0;
}

int sy_pipe_pump(void *sess, sy_pipe_t *p)
{
    int r = pipe_pump(sess, p);
    pipe_idle(p);
    return r;
}

/* Who is gone after pump result r on pipe p? */
static sy_relay_t relay_end(sy_pipe_t *p, sy_pipe_t *c2s, int r, int *err)
{
    if (r == SY_PUMP_OK)
        return SY_RELAY_OK;
    if (r == SY_PUMP_CLOSING)
        return SY_RELAY_CLOSING;
    *err = r == SY_PUMP_EOF ? 0 : p->err;
    /* c2s's source and s2c's destination are the client. */
    return ((p == c2s) == (r != SY_PUMP_DST_ERR)) ? SY_RELAY_CLIENT_GONE : SY_RELAY_UPSTREAM_GONE;
}

sy_relay_t sy_relay_step(void *sess, sy_pipe_t *c2s, sy_pipe_t *s2c, sy_conn_t *c, int events, int *err)
{
    sy_pipe_t *in = (c == c2s->src) ? c2s : s2c;    /* c is its source */
    sy_pipe_t *out = (c == c2s->src) ? s2c : c2s;   /* c is its destination */
    sy_relay_t end;
    int r;

    *err = 0;
    if (out->fwd > out->start && (events == 0 || (events & c->wr_wait))) {
        r = sy_pipe_flush(out);
        if (r < 0) {
            out->err = r;
            return relay_end(out, c2s, SY_PUMP_DST_ERR, err);
        }
    }
    /* The other side stopped reading while this buffer was full: resume it. */
    if (out->full && out->end - out->start < out->cap) {
        if ((end = relay_end(out, c2s, sy_pipe_pump(sess, out), err)) != SY_RELAY_OK)
            return end;
    }
    if (events == 0 || (events & c->rd_wait)) {
        if ((end = relay_end(in, c2s, sy_pipe_pump(sess, in), err)) != SY_RELAY_OK)
            return end;
    }
    return SY_RELAY_OK;
}

int sy_pipe_src_events(const sy_pipe_t *p)
{
    if (!p->reading || p->src_eof || p->end - p->start == p->cap)
        return 0;
    return p->src->rd_wait;
}

int sy_pipe_dst_events(const sy_pipe_t *p)
{
    return p->fwd > p->start ? p->dst->wr_wait : 0;
}
