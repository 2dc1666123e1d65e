/*
 * conf_internal.h - what the files of conf/ share with each other, not with the rest of
 * switchyard (the public API is conf.h).
 *
 * How a configuration is built (conf_load in conf.c):
 *
 *     built-in defaults text ─┐
 *                             ├─ conf__raw_merge ─ overrides (-o) ─▶ raw sections ─┐
 *     config file ────────────┘                                                    │
 *     env snapshot + env file ─▶ merged env (conf__menv) ─────────────────────────┤
 *                                                                                  ▼
 *                                                      conf__build: typed conf_t, validated
 *
 * The "raw" model is the INI text as sections of key/value strings, each value with its
 * origin ("conf/x.conf:12", "-o route.pg.builtin", "built-in defaults") so that errors
 * found while typing and validating can still name where the bad value came from.
 *
 * Layer: this header declares the middle of the hierarchy drawn in conf_util.h: the raw
 * model (conf_file.c), the merged environment (conf_env.c) and the targets
 * (conf_target.c), which may use each other's declarations here and everything below
 * (conf_libpq.h, conf_util.h). conf.c builds on all of it; conf_print.c needs none of it.
 *
 * Internal names carry the conf__ prefix (libuv's uv__ convention).
 */
#ifndef SY_CONF_INTERNAL_H
#define SY_CONF_INTERNAL_H

#include <stdio.h>
#include "conf/conf.h"
#include "conf/conf_libpq.h"
#include "conf/conf_util.h"

/* ---- raw model (conf_file.c) ----------------------------------------------------------- */

typedef enum { CONF_SEC_SWITCHYARD = 1, CONF_SEC_LISTENER, CONF_SEC_ROUTE } conf_sec_type_t;

typedef struct conf_raw_kv_s {
    char *key;
    char *val;
    char *origin;       /* "FILE:LINE", "-o route.pg.builtin" or "built-in defaults" */
} conf_raw_kv_t;

typedef struct conf_raw_sec_s {
    conf_sec_type_t type;
    char           *name;       /* NULL for [switchyard] */
    char           *origin;     /* where the section header is */
    conf_raw_kv_t  *kv;
    size_t          nkv;
} conf_raw_sec_t;

typedef struct conf_raw_s {
    conf_raw_sec_t *sec;
    size_t          nsec;
} conf_raw_t;

/* Parse INI text from f. name is used in messages ("conf/x.conf"); with record_lines 0
 * the origins are just name (used for the built-in defaults). Returns 0 or -1 + err. */
int conf__raw_parse(conf_raw_t *raw, FILE *f, const char *name, int record_lines,
                    char *err, size_t errlen);
/* Parse the file at path. */
int conf__raw_parse_path(conf_raw_t *raw, const char *path, char *err, size_t errlen);
/* Merge file into base: when file has any [listener]/[route] section, base's listeners
 * and routes are dropped; [switchyard] keys of file replace base's one by one. file is
 * emptied (its contents move into base). */
void conf__raw_merge(conf_raw_t *base, conf_raw_t *file);
/* Apply one "-o" override ("route.pg.listen=..."). Returns 0 or -1 + err. */
int conf__raw_override(conf_raw_t *raw, const char *ov, char *err, size_t errlen);
void conf__raw_free(conf_raw_t *raw);
/* "[route pg]", "[switchyard]" into buf. */
const char *conf__sec_label(const conf_raw_sec_t *s, char *buf, size_t len);
/* The raw value of key in s, or NULL. */
const conf_raw_kv_t *conf__raw_get(const conf_raw_sec_t *s, const char *key);

/* ---- merged environment (conf_env.c) --------------------------------------------------- */

typedef struct conf_menv_s {
    size_t n;
    char **vars;        /* "KEY=VALUE" */
    char **origin;      /* NULL: process environment; else "ENVFILE:LINE" */
} conf_menv_t;

/* Copy env (may be NULL: empty). */
void conf__menv_init(conf_menv_t *m, const conf_env_t *env);
/* Read an env file on top; its values replace the snapshot's. Returns 0 or -1 + err. */
int conf__menv_load_file(conf_menv_t *m, const char *path, char *err, size_t errlen);
/* Parse env file text (exposed for the same code path from a FILE *). */
int conf__menv_load(conf_menv_t *m, FILE *f, const char *name, char *err, size_t errlen);
/* Value of key, NULL when unset; *origin (if origin != NULL) set as above. An empty value
 * is returned as "" (callers treat it as unset: see conf_env.c). */
const char *conf__menv_get(const conf_menv_t *m, const char *key, const char **origin);
void conf__menv_free(conf_menv_t *m);

/* ---- targets (conf_target.c) ----------------------------------------------------------- */

/* Everything a target builder needs to say where it is. */
typedef struct conf_tctx_s {
    const char        *route;       /* route name */
    const conf_menv_t *env;
} conf_tctx_t;

/* Postgres built-in from a conninfo string; origin names the config line. */
int conf__pg_builtin(conf_target_t *t, const conf_tctx_t *x, const char *conninfo,
                     const char *origin, char *err, size_t errlen);
/* Postgres external from <prefix>PG*; t->defined stays 0 when no host/hostaddr/service
 * variable is set. *why receives a malloc'd "PGHOST is set" / "none of ... is set". */
int conf__pg_external(conf_target_t *t, const conf_tctx_t *x, const char *prefix,
                      char **why, char *err, size_t errlen);
/* Redis built-in from an endpoint string. */
int conf__redis_builtin(conf_target_t *t, const conf_tctx_t *x, const char *endpoint,
                        const char *origin, char *err, size_t errlen);
/* Redis external from the first set variable of names (comma list, may be NULL). */
int conf__redis_external(conf_target_t *t, const conf_tctx_t *x, const char *names,
                         char **why, char *err, size_t errlen);
void conf__target_free(conf_target_t *t);
void conf__kv_add(conf_kv_t *kv, const char *key, const char *val);
void conf__kv_free(conf_kv_t *kv);

#endif /* SY_CONF_INTERNAL_H */
