/*
 * fuzz_pg_sql.c - libFuzzer target for protocol/pg_sql.c, the SQL text scanners that run
 * on every Query and CommandComplete while reconnect_window is on (build: make -C fuzz).
 *
 * The input, in an exact-size heap buffer (so ASan sees any read past it), is fed to
 *   1. pg_sql_query_effects: only its three bits, the same twice, and STATE_FN once "; SELECT pg_advisory_lock(1)" is appended, whatever came
 *      before: the advisory lock is looked for in the whole text, quotes or not, and
 *      nothing in front (an unclosed set_config call, quote or comment) hides it;
 *   2. pg_sql_tag_keeps_state: 0 or 1, the same with or without a NUL behind the input;
 *   3. pg_sql_find_prepare for the name "q": a statement found lies inside the input.
 * Any inconsistency aborts, so the fuzzer reports it like a crash.
 */
#include "protocol/pg_sql.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char tail[] = "\n; SELECT pg_advisory_lock(1)";
    char *b = malloc(size ? size : 1), *more = malloc(size + sizeof tail), *nul = malloc(size + 1);
    size_t start = 0, len = 0;

    REQUIRE(b != NULL && more != NULL && nul != NULL);
    memcpy(b, data, size);
    unsigned fx = pg_sql_query_effects(b, size);
    REQUIRE((fx & ~(PG_SQL_STATE_FN | PG_SQL_CUSTOM | PG_SQL_TXN_SET)) == 0);
    REQUIRE(pg_sql_query_effects(b, size) == fx);
    memcpy(more, data, size);
    memcpy(more + size, tail, sizeof tail - 1);
    REQUIRE(pg_sql_query_effects(more, size + sizeof tail - 1) & PG_SQL_STATE_FN);


    int keeps = pg_sql_tag_keeps_state(b, size);
    REQUIRE(keeps == 0 || keeps == 1);
    memcpy(nul, data, size);
    nul[size] = '\0';
    REQUIRE(pg_sql_tag_keeps_state(nul, size + 1) == keeps);

    if (pg_sql_find_prepare(b, size, "q", &start, &len) == 0)
        REQUIRE(start <= size && len <= size - start);
    free(b);
    free(more);
    free(nul);
    return 0;
}
