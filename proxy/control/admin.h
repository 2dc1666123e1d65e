/*
 * admin.h - the admin console (admin.c), served on the Postgres listener as database
 * "switchyard".
 */
#ifndef SY_ADMIN_H
#define SY_ADMIN_H

#include "protocol/pg_result.h"

#define SY_ADMIN_DATABASE "switchyard"

/* Called when an asynchronous command (SWITCH) has written its result into out. */
typedef void (*admin_done_cb)(void *ctx, pgr_buf_t *out);

/*
 * Run one console command (the text of a simple Query). Appends the result messages
 * (without ReadyForQuery) to out and returns 1, or returns 0 when the command runs on
 * the thread pool: cb(ctx, out) follows, and out and ctx must stay valid until then.
 * `user` is the console user, used where a target leaves the user unset.
 */
int admin_execute(const char *sql, const char *user, pgr_buf_t *out, admin_done_cb cb, void *ctx);

#endif

#include "proxy/core/sy.h"

/*
 * Open a full session to a target of route configuration rc (a snapshot: pass the one read
 * on the main loop when the job was queued) and close it again: libpq + SELECT 1 for
 * Postgres (user/dbname default to `user` and the route's first database), TCP/TLS +
 * AUTH/SELECT + PING for Redis. Blocking: call it on the thread pool only. Returns 0, or
 * -1 with the cause in err (never a password).
 */
int sy_target_probe(const conf_route_t *rc, conf_which_t which, const char *user, char *err, size_t errlen);

/* A control connection to Postgres target t of route configuration rc, made as the SWITCH
 * precheck makes it (user/dbname default to `user` and the route's first database,
 * connect_timeout to switchyard's). Blocking: the thread pool only. Never NULL; check
 * PQstatus. The caller PQfinish()es it (struct pg_conn is libpq's PGconn). */
struct pg_conn *sy_target_pg_connect(const conf_route_t *rc, const conf_target_t *t, const char *user);
/* Trim trailing newlines and spaces of a libpq message and make it one line. */
void sy_one_line(char *err);
