/*
 * fuzz_resp.c - libFuzzer target for protocol/resp.c (build: make -C fuzz).
 *
 * Input layout: byte 0 is a knob (chunking seed and max_bulk), the rest is the payload.
 * The payload is fed to the request scanner and to the reply scanner, each twice: whole,
 * and in knob-chosen chunks, every chunk in an exact-size heap buffer. Both feeds must
 * report the same events at the same stream offsets (a running hash over offset, result
 * fields and error text), every call must make progress, and the result fields must
 * respect their documented bounds. Any inconsistency aborts, so the fuzzer reports it.
 * Every completed request is also classified by the command table (resp_cmdtab.c): the
 * id and flags join the hash, and a known id must name the captured argument exactly.
 */
#include "protocol/resp.h"
#include "protocol/resp_cmdtab.h"

#include <strings.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint64_t mix_u64(uint64_t h, uint64_t v)
{
    return mix(h, &v, sizeof v);
}

/* Chunk length at position pos: whole (seed 0) or 1..16 bytes from a tiny LCG. */
static size_t next_chunk(uint32_t *seed, size_t left)
{
    size_t n;

    if (*seed == 0)
        return left;
    *seed = *seed * 1103515245u + 12345u;
    n = 1 + (*seed >> 16) % 16;
    return n < left ? n : left;
}

/* The table's answer for r, checked against the captured name: a known id or subcommand
 * spells argument 0 (1) in some letter case, and the flags are its rows' plus at most the
 * ones the arguments decide. */
static uint64_t cmd_event(uint64_t h, const resp_req_t *r)
{
    resp_cmd_t c = resp_cmd_classify(r);
    uint32_t row = resp_cmd_flags(c.id) | resp_subcmd_flags(c.sub);

    if (c.id != RESP_CMD_UNKNOWN) {
        const char *name = resp_cmd_name(c.id);
        REQUIRE(r->ncap >= 1 && !r->arg_trunc[0] && r->arg_len[0] == strlen(name));
        REQUIRE(strncasecmp(r->arg[0], name, r->arg_len[0]) == 0);
        REQUIRE(memchr(r->arg[0], '\0', r->arg_len[0]) == NULL);
    }
    if (c.sub != RESP_SUBCMD_NONE) {
        const char *name = resp_subcmd_name(c.sub);
        REQUIRE(resp_subcmd_parent(c.sub) == c.id);
        REQUIRE(r->ncap >= 2 && !r->arg_trunc[1] && r->arg_len[1] == strlen(name));
        REQUIRE(strncasecmp(r->arg[1], name, r->arg_len[1]) == 0);
    }
    REQUIRE((c.flags & row) == row && (c.flags & ~row & ~(RESP_CF_BLOCKING | RESP_CF_UNSURE)) == 0);
    REQUIRE((c.flags & ~row) == 0 || (row & RESP_CF_BLOCK_ARG));
    REQUIRE(!resp_cmd_is_shareable(&c) || (c.id != RESP_CMD_UNKNOWN && !(c.flags & RESP_CF_NOSHARE)));
    h = mix_u64(h, (uint64_t)c.id);
    h = mix_u64(h, (uint64_t)c.sub);
    return mix_u64(h, c.flags);
}

static uint64_t req_event(uint64_t h, const resp_req_t *r, uint64_t at)
{
    REQUIRE(r->argc > 0);
    REQUIRE(r->ncap == (r->argc < RESP_CAP_ARGS ? r->argc : RESP_CAP_ARGS));
    REQUIRE(r->cmd_bytes > 0 && r->cmd_bytes <= at);
    h = mix_u64(h, at);
    h = mix_u64(h, r->argc);
    h = mix_u64(h, (uint64_t)r->inline_cmd);
    h = mix_u64(h, r->cmd_bytes);
    for (uint32_t i = 0; i < r->ncap; i++) {
        size_t n = r->arg_len[i] < RESP_CAP_LEN ? r->arg_len[i] : RESP_CAP_LEN;
        REQUIRE(r->arg_trunc[i] == (r->arg_len[i] > RESP_CAP_LEN));
        REQUIRE(r->arg[i][n] == '\0');
        h = mix_u64(h, r->arg_len[i]);
        h = mix(h, r->arg[i], n);
    }
    return cmd_event(h, r);
}

static uint64_t run_req(const uint8_t *p, size_t n, uint64_t max_bulk, uint32_t seed)
{
    resp_req_t r;
    uint64_t h = 14695981039346656037ull, at = 0;
    size_t pos = 0;

    resp_req_init(&r, max_bulk);
    while (pos < n) {
        size_t clen = next_chunk(&seed, n - pos), off = 0;
        uint8_t *chunk = malloc(clen);
        REQUIRE(chunk != NULL);
        memcpy(chunk, p + pos, clen);
        while (off < clen) {
            int done = 0;
            ssize_t rc = resp_req_scan(&r, chunk + off, clen - off, &done);
            if (rc == RESP_ERR) {
                REQUIRE(r.err != NULL);
                free(chunk);
                return mix(h, r.err, strlen(r.err));  /* offset differs by chunking */
            }
            REQUIRE(rc > 0 && (size_t)rc <= clen - off);
            off += (size_t)rc;
            at += (uint64_t)rc;
            if (done) {
                h = req_event(h, &r, at);
                REQUIRE(resp_req_at_boundary(&r));
            } else {
                REQUIRE(off == clen);
            }
        }
        free(chunk);
        pos += clen;
    }
    return mix_u64(h, (uint64_t)resp_req_at_boundary(&r));
}

static uint64_t reply_event(uint64_t h, const resp_reply_t *p, uint64_t since)
{
    REQUIRE(p->type != 0 && p->type != '|');
    REQUIRE(p->reply_bytes == since);
    REQUIRE(p->first_len <= RESP_CAP_LEN && p->first[p->first_len] == '\0');
    h = mix_u64(h, since);
    h = mix(h, &p->type, 1);
    h = mix_u64(h, (uint64_t)p->is_null);
    h = mix_u64(h, (uint64_t)p->integer);
    h = mix_u64(h, (uint64_t)p->nelem);
    h = mix(h, p->first, p->first_len);
    h = mix_u64(h, (uint64_t)p->has_third_int);
    h = mix_u64(h, (uint64_t)p->third_int);
    return h;
}

static uint64_t run_reply(const uint8_t *d, size_t n, uint64_t max_bulk, uint32_t seed)
{
    resp_reply_t p;
    uint64_t h = 14695981039346656037ull, since = 0;
    size_t pos = 0;

    resp_reply_init(&p, max_bulk);
    while (pos < n) {
        size_t clen = next_chunk(&seed, n - pos), off = 0;
        uint8_t *chunk = malloc(clen);
        REQUIRE(chunk != NULL);
        memcpy(chunk, d + pos, clen);
        while (off < clen) {
            int done = 0;
            ssize_t rc = resp_reply_scan(&p, chunk + off, clen - off, &done);
            if (rc == RESP_ERR) {
                REQUIRE(p.err != NULL);
                free(chunk);
                return mix(h, p.err, strlen(p.err));
            }
            REQUIRE(rc > 0 && (size_t)rc <= clen - off);
            off += (size_t)rc;
            since += (uint64_t)rc;
            if (done) {
                h = reply_event(h, &p, since);
                since = 0;
                REQUIRE(resp_reply_at_boundary(&p));
            } else {
                REQUIRE(off == clen);
            }
        }
        free(chunk);
        pos += clen;
    }
    return mix_u64(h, (uint64_t)resp_reply_at_boundary(&p));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t seed;
    uint64_t max_bulk;

    if (size < 1)
        return 0;
    seed = (uint32_t)data[0] * 2654435761u | 1u;
    max_bulk = (data[0] & 0x80) ? 0 : (uint64_t)(data[0] & 0x3f);   /* small limits too */
    data++;
    size--;

    REQUIRE(run_req(data, size, max_bulk, 0) == run_req(data, size, max_bulk, seed));
    REQUIRE(run_reply(data, size, max_bulk, 0) == run_reply(data, size, max_bulk, seed));
    return 0;
}
