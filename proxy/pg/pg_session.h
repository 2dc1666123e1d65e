/*
 * pg_session.h - what other daemon modules may ask of a Postgres session.
 */
#ifndef SY_PG_SESSION_H
#define SY_PG_SESSION_H

#include <libpq-fe.h>
#include "proxy/core/sy.h"

uint64_t  pg_session_id(const pg_session_t *s);
/* The loop the session lives on; its references are taken and dropped there only. */
uv_loop_t *pg_session_loop(const pg_session_t *s);
void      pg_session_ref(pg_session_t *s);
void      pg_session_unref(pg_session_t *s);
/* A new PGcancel for the session's upstream when pid is its backend's process id and the
 * session is relaying, else NULL; pg_session_cancel_done follows when it was not NULL. The caller owns it (PQfreeCancel). On the session's
 * worker only. */
PGcancel *pg_session_cancel_handle(pg_session_t *s, uint32_t pid);
/* A cancel made with that handle is over (its server may be pooled again). */
void      pg_session_cancel_done(pg_session_t *s);
/* pg_cancel.c: PQcancel(pc) on loop's thread pool, then cb(arg, ok, error) on loop; pc is the job's
 * (freed after cb). 0, or -1 when it could not start (pc freed, cb not called). */
typedef void (*pg_cancel_cb)(void *arg, int ok, const char *err);
int       pg_cancel_run(uv_loop_t *loop, PGcancel *pc, pg_cancel_cb cb, void *arg);

#endif
