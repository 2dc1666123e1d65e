/*
 * run.h - `switchyard run [options] -- COMMAND [ARGS...]` (start the daemon, then the
 * application with its environment pointed at the loopback listeners, and supervise
 * both) and `switchyard --wait-ready [--timeout S]` (wait for a running instance's
 * /readyz). Both are in run.c (the environment rewrite in run_env.c, readiness in
 * run_ready.c); cli.c dispatches to them.
 */
#ifndef SY_RUN_H
#define SY_RUN_H

/* The exit codes of switchyard's own making (for run, COMMAND's status is passed on). */
enum {
    RUN_USAGE = 2,          /* bad usage or configuration; nothing started */
    RUN_NOT_READY = 1,      /* --wait-ready: not ready within the timeout */
    RUN_FAILED = 125,       /* switchyard did not become ready, or died */
    RUN_CANNOT_EXEC = 126,
    RUN_NOT_FOUND = 127
};

/* 1 when argv asks for `run`, 2 for `--wait-ready`, else 0. */
int sy_run_wanted(int argc, char **argv);
/* Run it; returns the process exit code (for run: the application's). */
int sy_run_main(int argc, char **argv);

#endif
