/*
 * unit.h - the smallest test framework that does the job: CHECK records a failure with
 * file:line and carries on; unit_done() prints "N passed, N failed" and returns the exit
 * code. Every test binary is built with ASan+UBSan by `make test`.
 */
#ifndef SY_UNIT_H
#define SY_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_pass, unit_fail;

#define CHECK(cond) do { \
        if (cond) unit_pass++; \
        else { unit_fail++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

#define CHECK_MSG(cond, ...) do { \
        if (cond) unit_pass++; \
        else { unit_fail++; fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
               fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
    } while (0)

#define CHECK_STREQ(a, b) CHECK_MSG((a) != NULL && (b) != NULL && strcmp((a), (b)) == 0, \
                                    "\"%s\" != \"%s\"", (a) ? (a) : "(null)", (b) ? (b) : "(null)")

static inline int unit_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, unit_pass, unit_fail);
    return unit_fail ? 1 : 0;
}

#endif
