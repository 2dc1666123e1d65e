/*
 * conf_libpq.h - libpq's registry of connection options: every conninfo keyword, the PG*
 * environment variable that sets it, and whether libpq treats it as a secret
 * (conf_libpq.c).
 *
 * Layer: second from the bottom (the hierarchy is drawn in conf_util.h). May include
 * conf/conf_util.h only; conf_target, conf_env and conf_print build on it.
 */
#ifndef SY_CONF_LIBPQ_H
#define SY_CONF_LIBPQ_H

#include <stddef.h>

/* One libpq connection option, in libpq's order, from PQconninfoParse(""). */
typedef struct conf_pgopt_s {
    const char *keyword;
    const char *envvar;     /* NULL: no environment variable */
    int         secret;     /* dispchar '*' (password, sslpassword) */
} conf_pgopt_t;

/* The options (n of them, *n set when n != NULL). Built once, thread-safe, never freed. */
const conf_pgopt_t *conf__pg_options(size_t *n);
/* Is this libpq keyword a secret (shown as ****)? Unknown keywords containing
 * "password" count as secret too. */
int conf__pg_secret(const char *keyword);

/* conf_libpq_env_names (declared in conf.h, the public API) is defined here too. */

#endif /* SY_CONF_LIBPQ_H */
