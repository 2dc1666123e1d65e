/*
 * run_ready.h - readiness for `switchyard run` and `switchyard --wait-ready`
 * (run_ready.c): does every listener accept a connection, does /readyz answer 200.
 */
#ifndef SY_RUN_READY_H
#define SY_RUN_READY_H

#include "conf/conf.h"

/* 1 when every address of every listener of c accepts a connection (each attempt gives
 * up after half a second), else 0. Blocks. */
int run_ready_listeners(const conf_t *c);

/* --wait-ready: ask GET /readyz on c's metrics_listen until it answers 200 or timeout
 * seconds have passed. Returns the exit code: 0 ready, RUN_NOT_READY (the last reason on
 * stderr), RUN_USAGE when metrics_listen is off or not an address. */
int run_ready_wait(const conf_t *c, double timeout);

/* The monotonic clock, in seconds: for deadlines. */
double run_ready_now(void);

#endif
