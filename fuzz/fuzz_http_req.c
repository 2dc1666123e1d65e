/*
 * fuzz_http_req.c - libFuzzer target for protocol/http_req.c (build: make -C fuzz).
 *
 * Byte 0 picks a chunk size (0: whole); the rest is fed whole and in chunks, each chunk in
 * an exact-size heap buffer. Both feeds must agree on done/error, the bytes consumed and
 * the captured method and target; every call must make progress or finish.
 */
#include <stdlib.h>
#include <string.h>
#include "protocol/http_req.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static size_t feed(http_req_t *r, const uint8_t *p, size_t n, size_t chunk, int *err)
{
    size_t off = 0;
    *err = 0;
    while (off < n && !r->done) {
        size_t len = chunk && n - off > chunk ? chunk : n - off;
        uint8_t *b = malloc(len);
        memcpy(b, p + off, len);
        ssize_t k = http_req_parse(r, b, len);
        free(b);
        if (k < 0) {
            *err = 1;
            return off;
        }
        REQUIRE((size_t)k <= len);
        REQUIRE(k > 0 || r->done);
        off += (size_t)k;
    }
    return off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = data[0] % 9;
    http_req_t a, b;
    int ea, eb;
    http_req_init(&a, 0);
    http_req_init(&b, 0);
    size_t na = feed(&a, data + 1, size - 1, 0, &ea);
    size_t nb = feed(&b, data + 1, size - 1, chunk, &eb);
    REQUIRE(ea == eb);
    REQUIRE(a.done == b.done);
    if (a.done) {
        REQUIRE(na == nb);
        REQUIRE(strcmp(a.method, b.method) == 0 && strcmp(a.target, b.target) == 0);
        REQUIRE(a.version_minor == b.version_minor && a.nhost == b.nhost);
    }
    return 0;
}
