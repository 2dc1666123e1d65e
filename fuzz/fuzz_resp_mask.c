/*
 * fuzz_resp_mask.c - libFuzzer target for protocol/resp_mask.c and resp_cmd_split_head
 * (build: make -C fuzz).
 *
 * Input layout: byte 0 is a knob (min_depth, output size), the rest is a reply. The mask
 * must never read past the input (exact-size heap copy), must return -1, 0 or a length
 * within the output, and masking its own output again must give the same bytes with
 * nothing left to mask but what the mask itself names (it names nothing). The same bytes
 * go to resp_cmd_split_head, whose arguments must lie inside the input.
 */
#include "protocol/resp_mask.h"
#include "protocol/resp_cmd.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static const char *const names[] = { "requirepass", "masterauth", NULL };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int depth = data[0] & 3;
    size_t n = size - 1;
    uint8_t *in = malloc(n ? n : 1);
    memcpy(in, data + 1, n);
    size_t cap = (data[0] & 4) ? n / 2 : n * 2 + 64;
    uint8_t *out = malloc(cap ? cap : 1), *again = malloc(cap * 2 + 64);
    int masked = 0, masked2 = 0;
    ssize_t r = resp_mask_pairs(in, n, depth, names, "****", out, cap, &masked);
    REQUIRE(r >= -1 && (r < 0 || (size_t)r <= cap));
    if (r > 0) {
        ssize_t r2 = resp_mask_pairs(out, (size_t)r, depth, names, "****", again, cap * 2 + 64, &masked2);
        REQUIRE(r2 == r && memcmp(out, again, (size_t)r) == 0);   /* "****" stays "****" */
    }
    resp_arg_t argv[8];
    long long argc, next;
    int k = resp_cmd_split_head(in, n, argv, 8, &argc, &next);
    REQUIRE(k >= -1 && k <= 8);
    for (int i = 0; i < k; i++)
        REQUIRE((const uint8_t *)argv[i].ptr >= in && (const uint8_t *)argv[i].ptr + argv[i].len <= in + n);
    free(in);
    free(out);
    free(again);
    return 0;
}
