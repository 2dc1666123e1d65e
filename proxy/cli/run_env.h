/*
 * run_env.h - the environment `switchyard run` gives COMMAND (run_env.c): the list of
 * changes against a snapshot of ours, the vector a child is started with, the --dry-run
 * text, and the scrubbing of this process's own copy.
 */
#ifndef SY_RUN_ENV_H
#define SY_RUN_ENV_H

#include <stddef.h>
#include <stdio.h>
#include "conf/conf.h"

/* One change to COMMAND's environment. */
typedef struct run_change_s {
    char       *name;
    char       *value;              /* NULL: removed */
    const char *old;                /* the inherited value (in the snapshot), NULL: unset */
} run_change_t;

typedef struct run_env_s {
    run_change_t *v;
    size_t        n, cap;
} run_env_t;

/* Every change COMMAND's environment gets, from the snapshot of ours and the configuration;
 * e starts zeroed and is released with run_env_free. The strings `old` points to are the
 * snapshot's, so it must outlive e. Exits with RUN_FAILED when out of memory. */
void run_env_build(run_env_t *e, const conf_t *c, const conf_env_t *snap);
void run_env_free(run_env_t *e);

/* A NULL-terminated "KEY=VALUE" vector: the snapshot with the changes of e (NULL: none)
 * applied, the variable drop (if not NULL) left out and extra (if not NULL) added. Strings
 * are the snapshot's, extra itself, or owned by *own (*nown of them); the caller frees
 * those, *own and the vector. Exits with RUN_FAILED when out of memory. */
char **run_env_vector(const run_env_t *e, const conf_env_t *snap, const char *drop, const char *extra,
                      char ***own, size_t *nown);

/* The --dry-run text: every change (old values with secrets masked), then COMMAND. */
void run_env_print(FILE *f, const run_env_t *e, char **command);

/* Overwrite, in this process's own environment block, the inherited value of every
 * variable of e, so /proc/<our pid>/environ no longer holds it. */
void run_env_scrub_own(const run_env_t *e);

/* Where a client on this machine reaches a listener (a wildcard address means loopback);
 * NULL when it has no TCP address. */
const char *run_env_listener_host(const conf_listener_t *l);

#endif
