/*
 * conf_libpq.c - libpq's own list of connection options and their variables, taken from
 * PQconninfoParse("") so that it is exactly what the linked libpq reads:
 *
 *   - conf__pg_options: keyword, PG* variable and secrecy of every option, in libpq's
 *     order; conf_target.c reads <prefix>PG* through it and masks secrets with it.
 *   - conf_libpq_env_names: every variable libpq would read from the environment, which
 *     main unsets after the snapshot (conf_env.c) and --help lists (conf_print.c).
 *
 * Built once under pthread_once, never freed: readers on any thread get the same table.
 *
 * Layer: second from the bottom (the hierarchy is drawn in conf_util.h). May include
 * libpq, conf/conf_util.h, conf/conf_libpq.h and conf/conf.h (for the public prototype
 * only); nothing that reads the configuration itself.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "conf/conf.h"
#include "conf/conf_libpq.h"
#include "conf/conf_util.h"


static pthread_once_t pg_once = PTHREAD_ONCE_INIT;
static conf_pgopt_t *pg_opts;
static size_t pg_nopts;
static const char **pg_env_names;

/*
 * PQconninfoParse("") returns the same option list as PQconndefaults() (keyword, envvar,
 * dispchar, in libpq's order) without filling in defaults: PQconndefaults would read the
 * process environment and the service file, and returns NULL when PGSERVICE names a
 * service it cannot find.
 */
static void pg_init(void)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse("", &perr);
    if (!opts) {
        fprintf(stderr, "switchyard: libpq cannot list its connection options: %s\n",
                perr ? perr : "out of memory");
        abort();
    }
    size_t n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    pg_opts = conf__xrealloc(NULL, (n + 1) * sizeof *pg_opts);
    /* every envvar + PGDATESTYLE, PGTZ, PGGEQO + NULL */
    pg_env_names = conf__xrealloc(NULL, (n + 4) * sizeof *pg_env_names);
    size_t ne = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        conf_pgopt_t *d = &pg_opts[pg_nopts++];
        d->keyword = conf__strdup(o->keyword);
        d->envvar = conf__strdup(o->envvar);
        d->secret = o->dispchar && strchr(o->dispchar, '*') != NULL;
        if (d->envvar)
            pg_env_names[ne++] = d->envvar;
    }
    memset(&pg_opts[pg_nopts], 0, sizeof *pg_opts);
    /* libpq reads these three itself and sends them as startup parameters
     * (fe-connect.c EnvironmentOptions); switchyard passes them as "-c" in options. */
    pg_env_names[ne++] = "PGDATESTYLE";
    pg_env_names[ne++] = "PGTZ";
    pg_env_names[ne++] = "PGGEQO";
    pg_env_names[ne] = NULL;
    PQconninfoFree(opts);
}

const conf_pgopt_t *conf__pg_options(size_t *n)
{
    pthread_once(&pg_once, pg_init);
    if (n)
        *n = pg_nopts;
    return pg_opts;
}

int conf__pg_secret(const char *keyword)
{
    size_t n;
    const conf_pgopt_t *o = conf__pg_options(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(o[i].keyword, keyword) == 0)
            return o[i].secret;
    /* not a libpq keyword: play safe if it looks like one */
    return strstr(keyword, "password") != NULL;
}

const char *const *conf_libpq_env_names(void)
{
    pthread_once(&pg_once, pg_init);
    return pg_env_names;
}
