/*
 * fuzz_pg_wire.c - libFuzzer target for protocol/pg_wire.c (build: make -C fuzz).
 *
 * Input layout: byte 0 is a knob (chunking seed, which types to capture, scanner limit),
 * the rest is the payload. The payload is fed to
 *   1. pgw_startup_parse, checking that the verdict is consistent over prefixes;
 *   2. pgw_scan, whole and in knob-chosen chunks, each chunk in an exact-size heap buffer;
 *      both feeds must report the same events at the same offsets (a running hash), and
 *      captured 'S'/'E' bodies go through the readers;
 *   3. pgw_build_error with payload text and a knob-chosen capacity, parsed back;
 *   4. pgw_password_parse, checking its verdict over prefixes like the startup parser's.
 * Any inconsistency aborts, so the fuzzer reports it like a crash.
 */
#include "protocol/pg_wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static void fuzz_startup(const uint8_t *p, size_t n)
{
    pgw_startup_t st, st2;
    ssize_t r = pgw_startup_parse(p, n, &st);

    if (r > 0) {
        size_t off = 0, count = 0;
        const char *name, *value;

        REQUIRE((size_t)r <= n && (size_t)r <= PGW_STARTUP_MAX && st.err == NULL);
        REQUIRE(pgw_startup_parse(p, (size_t)r, &st2) == r);
        REQUIRE(pgw_startup_parse(p, (size_t)r - 1, &st2) == PGW_NEED_MORE);
        if (st.kind == PGW_STARTUP_MESSAGE) {
            const char *user = pgw_startup_get(&st, "user");
            REQUIRE(user != NULL && user[0] != 0);
            REQUIRE(st.params_len == (size_t)r - 9);
            while (pgw_startup_next(&st, &off, &name, &value)) {
                REQUIRE(name[0] != 0);
                count++;
            }
            REQUIRE(count > 0 && off == st.params_len);
        }
    } else if (r == PGW_NEED_MORE) {
        REQUIRE(n < PGW_STARTUP_MAX && st.err == NULL);
        if (n > 0)
            REQUIRE(pgw_startup_parse(p, n - 1, &st2) == PGW_NEED_MORE);
    } else {
        REQUIRE(r == PGW_ERR && st.err != NULL);
        /* a longer prefix never turns an error back into success */
        if (n > 0) {
            r = pgw_startup_parse(p, n - 1, &st2);
            REQUIRE(r == PGW_NEED_MORE || (r == PGW_ERR && st2.err == st.err));
        }
    }
}

static void fuzz_password(const uint8_t *p, size_t n, unsigned knob)
{
    uint32_t max = (knob & 1) ? PGW_PASSWORD_MAX : 5 + knob;
    pgw_password_t pw, pw2;
    ssize_t r = pgw_password_parse(p, n, max, &pw);

    if (r > 0) {
        REQUIRE((size_t)r <= n && (size_t)r <= (size_t)max + 1 && p[0] == 'p');
        if (pw.password != NULL)
            REQUIRE(pw.err == NULL && pw.password == (const char *)p + 5 && pw.len + 6 == (size_t)r &&
                    strlen(pw.password) == pw.len);
        else
            REQUIRE(pw.err != NULL);
        REQUIRE(pgw_password_parse(p, (size_t)r - 1, max, &pw2) == PGW_NEED_MORE);
    } else if (r == PGW_NEED_MORE) {
        REQUIRE(pw.err == NULL && n <= (size_t)max);
    } else {
        REQUIRE(r == PGW_ERR && pw.err != NULL && n > 0);
        r = pgw_password_parse(p, n - 1, max, &pw2);
        REQUIRE(r == PGW_NEED_MORE || (r == PGW_ERR && pw2.err == pw.err));
    }
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

static void check_captured(const pgw_scan_t *s)
{
    REQUIRE(s->cap_len <= PGW_CAPTURE_MAX && s->cap_len == s->len - 4);
    if (s->type == 'S') {
        const char *name, *value;
        if (pgw_parse_parameter_status(s->cap, s->cap_len, &name, &value) == 0)
            REQUIRE(strlen(name) + strlen(value) + 2 == s->cap_len);
    } else if (s->type == 'E') {
        pgw_error_fields_t f;
        if (pgw_parse_error(s->cap, s->cap_len, &f) == 0 && f.message)
            REQUIRE((const uint8_t *)f.message >= s->cap &&
                    (const uint8_t *)f.message + strlen(f.message) < s->cap + s->cap_len);
    }
}

/* Feed p[0..n) in chunks of 1..chunk bytes (0: whole); returns a hash of the events. */
static uint64_t fuzz_scan_run(const uint8_t *p, size_t n, unsigned knob, size_t chunk, const char **err)
{
    pgw_scan_t s;
    uint64_t h = 1;
    size_t start = 0, step = 0;

    pgw_scan_init(&s, (knob & 0x10) ? 300 : 0);
    if (knob & 0x20) {
        pgw_scan_capture(&s, 'S');
        pgw_scan_capture(&s, 'E');
    }
    if (knob & 0x40)
        pgw_scan_capture(&s, 'Z');
    if (knob & 0x80)
        pgw_scan_capture(&s, 'C');
    *err = NULL;

    while (start < n) {
        size_t clen = chunk ? 1 + (step++ * 7 + knob) % chunk : n;
        size_t off = 0;
        uint8_t *b;

        if (clen > n - start)
            clen = n - start;
        b = malloc(clen);
        REQUIRE(b != NULL);
        memcpy(b, p + start, clen);
        for (;;) {
            pgw_event_t ev;
            ssize_t r = pgw_scan(&s, b + off, clen - off, &ev);

            if (r == PGW_ERR) {
                REQUIRE(s.err != NULL);
                *err = s.err;
                free(b);
                pgw_scan_release(&s);
                return h;
            }
            REQUIRE(r >= 0 && (size_t)r <= clen - off);
            off += (size_t)r;
            if (ev == PGW_EV_HEADER && s.type == 'C' && (knob & 0x08))
                pgw_scan_skip_body(&s);   /* not captured after all */
            if (ev != PGW_EV_NONE) {
                h = mix(h, ev);
                h = mix(h, s.type);
                h = mix(h, s.len);
                h = mix(h, start + off);
                if (s.type == 'Z') {
                    REQUIRE(s.status == 'I' || s.status == 'T' || s.status == 'E');
                    h = mix(h, s.status);
                }
                if (ev == PGW_EV_CAPTURED)
                    check_captured(&s);
            } else if (off == clen) {
                break;
            } else {
                REQUIRE(r > 0);     /* progress or an event, never neither */
            }
        }
        free(b);
        start += clen;
    }
    h = mix(h, (uint64_t)pgw_scan_at_boundary(&s));
    pgw_scan_release(&s);
    return h;
}

static void fuzz_scan(const uint8_t *p, size_t n, unsigned knob)
{
    const char *e1, *e2, *e3;
    uint64_t whole = fuzz_scan_run(p, n, knob, 0, &e1);
    uint64_t bytes = fuzz_scan_run(p, n, knob, 1, &e2);
    uint64_t chunks = fuzz_scan_run(p, n, knob, 1 + (knob & 0xf) * 3, &e3);

    REQUIRE(e1 == e2 && e1 == e3);
    if (e1 == NULL)
        REQUIRE(whole == bytes && whole == chunks);
}

static void fuzz_build(const uint8_t *p, size_t n, unsigned knob)
{
    uint8_t out[512];
    char text[256];
    size_t tl = n < sizeof text - 1 ? n : sizeof text - 1;
    size_t cap = 20 + (knob * 3 + n) % (sizeof out - 20);
    size_t built;
    pgw_error_fields_t f;

    memcpy(text, p, tl);
    text[tl] = 0;               /* stops at the first NUL in the payload */
    built = pgw_build_error(out, cap, "ERROR", "08P01", text, (knob & 1) ? text : NULL);
    if (built == 0)
        return;
    REQUIRE(built <= cap && out[0] == 'E');
    REQUIRE(pgw_parse_error(out + 5, built - 5, &f) == 0);
    REQUIRE(f.message != NULL && strncmp(f.message, text, strlen(f.message)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned knob;

    if (size == 0)
        return 0;
    knob = data[0];
    fuzz_startup(data + 1, size - 1);
    fuzz_scan(data + 1, size - 1, knob);
    fuzz_build(data + 1, size - 1, knob);
    fuzz_password(data + 1, size - 1, knob);
    return 0;
}
