/*
 * catchup.h - SWITCH ... AFTER CATCHUP: the wait, between the atomic hold and the moves,
 * until the new target has applied everything the old one had written (catchup.c), and
 * the switch that runs it (switchover.c).
 */
#ifndef SY_CATCHUP_H
#define SY_CATCHUP_H

#include <stdint.h>
#include "proxy/core/sy.h"

#define SY_CATCHUP_TIMEOUT_DEFAULT 30   /* seconds, when SWITCH gives no TIMEOUT */

typedef struct sy_catchup_opts_s {
    int  timeout_s;         /* the wait for the new target, 1..86400 */
    int  promote;           /* promote the new target once it has caught up */
    char user[128];         /* the console user: control connections use it where a target
                             * names no user */
} sy_catchup_opts_t;

/* What an AFTER CATCHUP switch did. ok 1: the sessions moved; 0: refused, nothing moved,
 * err says why (and how far behind the new target was). */
typedef struct sy_catchup_result_s {
    int      ok;
    char     how[32];        /* "standby", "subscription", "replica" */
    char     position[64];   /* the old target's position waited for: an LSN or an offset */
    char     promoted[48];   /* "yes", "no", or why not */
    char     err[700];
    int64_t  behind;         /* bytes of WAL / replication offset still missing, -1 unknown */
    uint64_t moved, closed;
    double   ms, hold_ms, wait_ms;
} sy_catchup_result_t;

typedef void (*sy_catchup_done_cb)(void *ctx, const sy_catchup_result_t *res);

/*
 * Begin an atomic switch of r to `to` that waits, once every session of the route is held
 * at a boundary, until the new target has caught up with the old (switchover.c). done
 * follows on the main loop with the result, refused or not; res is valid during the call
 * only. Returns 0, or -1 (a switch is already running, out of memory).
 */
int sy_switch_start_after_catchup(sy_route_t *r, conf_which_t to, const sy_catchup_opts_t *o,
                                  sy_catchup_done_cb done, void *ctx);

/* ---- the wait itself (catchup.c) ------------------------------------------------------ */

typedef struct sy_catchup_job_s sy_catchup_job_t;
/* The job finished (on the main loop): res holds how, position, promoted, behind, and ok/err
 * (wait_ms is the job's own time). The job is freed after the call. */
typedef void (*sy_catchup_job_cb)(void *arg, const sy_catchup_result_t *res);

/*
 * Read the old target's position and wait until the new one has applied it (then promote
 * it if asked), on the thread pool, over control connections of their own: no worker loop
 * and not the main loop block. rc is the route's configuration snapshot. Returns the job,
 * or NULL (out of memory, the pool refused it); cb follows unless the job is abandoned.
 */
sy_catchup_job_t *sy_catchup_start(const conf_route_t *rc, conf_which_t from, conf_which_t to,
                                   const sy_catchup_opts_t *o, sy_catchup_job_cb cb, void *arg);
/* Give up on a running job (main loop): cb will not be called; it frees itself when done. */
void sy_catchup_abandon(sy_catchup_job_t *j);

#endif
