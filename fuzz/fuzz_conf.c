/*
 * fuzz_conf.c - libFuzzer target for the text parsers of conf/ (build: make -C fuzz):
 * the INI reader (conf_file.c: conf__raw_parse, conf__raw_override) and the env-file
 * reader (conf_env.c: conf__menv_load). They read a FILE *; the input reaches them
 * through fmemopen, exactly as a file's bytes would.
 *
 * Byte 0 is a knob: bit 0 picks the config-file reader or the env-file reader, bit 1 also
 * applies the input's first line as a -o override. Checked:
 *   1. a refusal has a message and, for the INI reader, leaves the raw model empty;
 *   2. an accepted config has sections of a known type, listener/route names and keys
 *      that are unique per section, every value with its "fuzz.conf:LINE" origin; an
 *      accepted env file has KEY=VALUE entries with unique keys and "fuzz.env:LINE"
 *      origins, each found again by conf__menv_get;
 *   3. printed back (every value double-quoted with \" and \\ escapes), either parses to
 *      the same sections, keys and values.
 * Any inconsistency aborts, so the fuzzer reports it like a crash.
 */
#include "conf/conf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

/* Append v double-quoted to f. */
static void put_quoted(FILE *f, const char *v)
{
    fputc('"', f);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            fputc('\\', f);
        fputc(*v, f);
    }
    fputc('"', f);
}

static void check_raw(const conf_raw_t *raw, int from_file)
{
    for (size_t i = 0; i < raw->nsec; i++) {
        const conf_raw_sec_t *s = &raw->sec[i];
        REQUIRE(s->type == CONF_SEC_SWITCHYARD || s->type == CONF_SEC_LISTENER ||
                s->type == CONF_SEC_ROUTE);
        REQUIRE((s->type == CONF_SEC_SWITCHYARD) == (s->name == NULL));
        REQUIRE(s->name == NULL || (*s->name && strlen(s->name) <= 64));
        for (size_t j = 0; j < i; j++)
            REQUIRE(raw->sec[j].type != s->type ||
                    (s->name && strcmp(raw->sec[j].name, s->name) != 0));
        for (size_t k = 0; k < s->nkv; k++) {
            REQUIRE(s->kv[k].key && *s->kv[k].key && s->kv[k].val && s->kv[k].origin);
            REQUIRE(!from_file || strncmp(s->kv[k].origin, "fuzz.conf:", 10) == 0);
            REQUIRE(conf__raw_get(s, s->kv[k].key) == &s->kv[k]);
        }
    }
}

static void print_raw(const conf_raw_t *raw, FILE *f)
{
    for (size_t i = 0; i < raw->nsec; i++) {
        const conf_raw_sec_t *s = &raw->sec[i];
        if (s->type == CONF_SEC_SWITCHYARD)
            fputs("[switchyard]\n", f);
        else
            fprintf(f, "[%s %s]\n", s->type == CONF_SEC_LISTENER ? "listener" : "route",
                    s->name);
        for (size_t k = 0; k < s->nkv; k++) {
            fprintf(f, "%s = ", s->kv[k].key);
            put_quoted(f, s->kv[k].val);
            fputc('\n', f);
        }
    }
}

static void same_raw(const conf_raw_t *a, const conf_raw_t *b)
{
    REQUIRE(a->nsec == b->nsec);
    for (size_t i = 0; i < a->nsec; i++) {
        const conf_raw_sec_t *x = &a->sec[i], *y = &b->sec[i];
        REQUIRE(x->type == y->type && x->nkv == y->nkv);
        REQUIRE((x->name == NULL) == (y->name == NULL));
        REQUIRE(!x->name || strcmp(x->name, y->name) == 0);
        for (size_t k = 0; k < x->nkv; k++) {
            REQUIRE(strcmp(x->kv[k].key, y->kv[k].key) == 0);
            REQUIRE(strcmp(x->kv[k].val, y->kv[k].val) == 0);
        }
    }
}

/* The bytes f was given, as a malloc'd open_memstream result. */
typedef struct { char *buf; size_t len; FILE *f; } membuf_t;

static void fuzz_ini(const uint8_t *p, size_t n, int override)
{
    conf_raw_t raw = { 0 }, again = { 0 };
    char err[512] = "";
    FILE *f = fmemopen((void *)p, n, "r");
    membuf_t out = { 0 };
    int rc;

    REQUIRE(f != NULL);
    rc = conf__raw_parse(&raw, f, "fuzz.conf", 1, err, sizeof err);
    fclose(f);
    if (rc != 0) {
        REQUIRE(rc == -1 && err[0] != '\0' && raw.nsec == 0 && raw.sec == NULL);
        return;
    }
    check_raw(&raw, 1);
    if (override) {
        const uint8_t *nl = memchr(p, '\n', n);
        char *ov = strndup((const char *)p, nl ? (size_t)(nl - p) : n);
        REQUIRE(ov != NULL);
        err[0] = '\0';
        if (conf__raw_override(&raw, ov, err, sizeof err) != 0)
            REQUIRE(err[0] != '\0');
        free(ov);
        check_raw(&raw, 0);
    }

    out.f = open_memstream(&out.buf, &out.len);
    REQUIRE(out.f != NULL);
    print_raw(&raw, out.f);
    fclose(out.f);
    f = fmemopen(out.buf, out.len ? out.len : 1, "r");
    REQUIRE(f != NULL);
    if (out.len == 0)
        fgetc(f);                       /* an empty model prints nothing: read EOF */
    rc = conf__raw_parse(&again, f, "fuzz.conf", 1, err, sizeof err);
    fclose(f);
    REQUIRE(rc == 0);
    same_raw(&raw, &again);
    conf__raw_free(&again);
    conf__raw_free(&raw);
    free(out.buf);
}

static void check_menv(const conf_menv_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *eq = strchr(m->vars[i], '=');
        const char *origin = NULL, *v;
        REQUIRE(eq != NULL && eq > m->vars[i]);
        REQUIRE(m->origin[i] && strncmp(m->origin[i], "fuzz.env:", 9) == 0);
        char *key = strndup(m->vars[i], (size_t)(eq - m->vars[i]));
        REQUIRE(key != NULL);
        v = conf__menv_get(m, key, &origin);
        REQUIRE(v != NULL && strcmp(v, eq + 1) == 0 && origin == m->origin[i]);
        for (size_t j = 0; j < i; j++)
            REQUIRE(strncmp(m->vars[j], m->vars[i], (size_t)(eq - m->vars[i]) + 1) != 0);
        free(key);
    }
}

static void fuzz_env(const uint8_t *p, size_t n)
{
    conf_menv_t m, again;
    char err[512] = "";
    FILE *f = fmemopen((void *)p, n, "r");
    membuf_t out = { 0 };
    int rc;

    REQUIRE(f != NULL);
    conf__menv_init(&m, NULL);
    rc = conf__menv_load(&m, f, "fuzz.env", err, sizeof err);
    fclose(f);
    if (rc != 0) {
        REQUIRE(rc == -1 && err[0] != '\0');
        conf__menv_free(&m);
        return;
    }
    check_menv(&m);

    out.f = open_memstream(&out.buf, &out.len);
    REQUIRE(out.f != NULL);
    for (size_t i = 0; i < m.n; i++) {
        const char *eq = strchr(m.vars[i], '=');
        fprintf(out.f, "%.*s=", (int)(eq - m.vars[i]), m.vars[i]);
        put_quoted(out.f, eq + 1);
        fputc('\n', out.f);
    }
    fclose(out.f);
    f = fmemopen(out.buf, out.len ? out.len : 1, "r");
    REQUIRE(f != NULL);
    if (out.len == 0)
        fgetc(f);
    conf__menv_init(&again, NULL);
    rc = conf__menv_load(&again, f, "fuzz.env", err, sizeof err);
    fclose(f);
    REQUIRE(rc == 0 && again.n == m.n);
    for (size_t i = 0; i < m.n; i++)
        REQUIRE(strcmp(m.vars[i], again.vars[i]) == 0);
    conf__menv_free(&again);
    conf__menv_free(&m);
    free(out.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;                       /* fmemopen wants at least one byte */
    uint8_t knob = data[0];
    if (knob & 1)
        fuzz_env(data + 1, size - 1);
    else
        fuzz_ini(data + 1, size - 1, knob & 2);
    return 0;
}
