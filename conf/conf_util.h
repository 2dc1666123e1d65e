/*
 * conf_util.h - the bottom layer of conf/: string, number and boolean helpers and the
 * error formatting every other conf/ file uses (conf_util.c).
 *
 * The files of conf/ form a hierarchy; each may include only the layers below it:
 *
 *     conf_util      this file: libc only, knows no conf_t, no libpq, no raw model
 *       ▲
 *     conf_libpq     libpq's option registry (keywords, PG* variables, secrets)
 *       ▲
 *     conf_file, conf_env, conf_target     raw INI model, merged environment, targets
 *       ▲                                  (conf_internal.h declares them)
 *     conf.c         conf_load: types and validates everything
 *       ▲
 *     conf_print     --check and --help text
 *
 * Value parsers return NULL on success or a static problem ("must be a number") that never
 * quotes the value (it may be a password); the caller adds where the value came from,
 * usually through conf__key_err.
 *
 * Internal names carry the conf__ prefix (libuv's uv__ convention).
 */
#ifndef SY_CONF_UTIL_H
#define SY_CONF_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ---------------------------------------------------------------------------- */

/* Format into err (always NUL-terminated when errlen > 0) and return -1. */
int conf__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The message for a bad key, in the one shape conf/ uses: "ORIGIN: SECTION KEY: problem",
 * or "ORIGIN: SECTION: problem" when key is NULL. origin says where the value came from
 * ("conf/x.conf:12", "-o listener.pg.listen"), section is a label such as "[route pg]".
 * Returns -1 (like conf__err).
 */
int conf__key_err(char *err, size_t errlen, const char *origin, const char *section,
                  const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
int conf__vkey_err(char *err, size_t errlen, const char *origin, const char *section,
                   const char *key, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

/* ---- memory and strings ---------------------------------------------------------------- */

void *conf__xrealloc(void *p, size_t n);           /* aborts on out-of-memory */
char *conf__strdup(const char *s);                 /* aborts on out-of-memory; NULL stays NULL */
char *conf__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A copy of v, or NULL when v is NULL or empty ("" means unset in the configuration). */
char *conf__nonempty_dup(const char *v);

/*
 * Parse one value as written in the config or env file: leading whitespace skipped, then
 * either "..." (backslash escapes \" and \\), '...' (literal), or unquoted text that ends
 * at the end of the line or at whitespace followed by a comment character (any of
 * comment_chars). Trailing whitespace of unquoted text is dropped. Returns a malloc'd
 * string, or NULL with a static message in *problem (which never quotes the value).
 */
char *conf__parse_value(const char *s, const char *comment_chars, const char **problem);

/* ---- typed values: NULL or a static problem -------------------------------------------- */

/*
 * A decimal number, digits only (no sign, no spaces, no hex); with sizes, an optional
 * binary k/M/G suffix (256M, 256MiB, 256MB). Overflow of 64 bits is "is too large", never
 * a wrapped value. *out is written only on success.
 */
const char *conf__parse_uint(const char *v, int sizes, uint64_t *out);
/* true/yes/on/1 or false/no/off/0, any case. */
const char *conf__parse_bool(const char *v, int *out);
/* "host:port" or "[v6]:port" into *host (malloc'd, no brackets) and *port (1..65535). */
const char *conf__parse_hostport(const char *v, char **host, int *port);

/* localhost, 127.0.0.0/8, ::1 or ::ffff:127.x.y.z. */
int conf__is_loopback(const char *host);
/* s[0..n) is letters, digits and '_' (an environment variable name or a prefix of one). */
int conf__env_name_ok(const char *s, size_t n, int allow_empty, int allow_digit_first);

#endif /* SY_CONF_UTIL_H */
