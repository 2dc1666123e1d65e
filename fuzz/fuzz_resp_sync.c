/*
 * fuzz_resp_sync.c - libFuzzer target for protocol/resp_sync.c (build: make -C fuzz).
 *
 * Input layout: byte 0 is a knob (bit 0: PSYNC or SYNC; the rest seeds the chunking), the
 * rest is what a master might send after SYNC. It is fed whole and in knob-chosen chunks,
 * each chunk in an exact-size heap buffer; both feeds must report the same events at the
 * same offsets and stop at the same place in the same state with the same error, every
 * call must make progress or stop in a done state, and the fields keep their bounds.
 */
#include "protocol/resp_sync.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

typedef struct {
    uint64_t    hash;
    size_t      stop;      /* bytes consumed in all */
    int         state;
    const char *err;
} run_t;

static uint64_t mix(uint64_t h, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        h = (h ^ (v & 0xff)) * 1099511628211ull;
    return h;
}

static void feed(int psync, const uint8_t *p, size_t n, uint32_t seed, run_t *out)
{
    resp_sync_t s;
    resp_sync_init(&s, psync);
    size_t pos = 0;
    out->hash = 1469598103934665603ull;
    out->err = NULL;
    while (pos < n) {
        size_t clen = n - pos;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 16) % 64;
            clen = k < clen ? k : clen;
        }
        uint8_t *chunk = malloc(clen);
        REQUIRE(chunk != NULL);
        memcpy(chunk, p + pos, clen);
        size_t off = 0;
        int stop = 0;
        while (off < clen) {
            int ev;
            ssize_t r = resp_sync_scan(&s, chunk + off, clen - off, &ev);
            if (r < 0) {
                REQUIRE(s.err != NULL);
                out->err = s.err;
                stop = 1;
                break;
            }
            REQUIRE((size_t)r <= clen - off);
            off += (size_t)r;
            if (ev != 0)
                out->hash = mix(mix(out->hash, (uint64_t)ev), pos + off);
            if (s.state == RESP_SYNC_STREAM || s.state == RESP_SYNC_REFUSED) {
                stop = 1;
                break;
            }
            REQUIRE(r > 0);   /* progress unless done */
        }
        free(chunk);
        pos += off;
        if (stop)
            break;
    }
    REQUIRE(s.line_len <= RESP_SYNC_LINE_MAX && strlen(s.line) <= RESP_SYNC_LINE_CAP);
    REQUIRE(s.tail_len < RESP_SYNC_MARK);
    out->stop = out->err != NULL ? 0 : pos;   /* an error is at the line end, but stops mid-chunk */
    out->state = s.state;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int psync = data[0] & 1;
    uint32_t seed = (uint32_t)(data[0] >> 1) + 1;
    run_t a, b;
    feed(psync, data + 1, size - 1, 0, &a);
    feed(psync, data + 1, size - 1, seed, &b);
    REQUIRE(a.hash == b.hash && a.stop == b.stop && a.state == b.state);
    REQUIRE((a.err == NULL) == (b.err == NULL) && (a.err == NULL || strcmp(a.err, b.err) == 0));
    return 0;
}
