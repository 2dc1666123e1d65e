/*
 * run.h - `switchyard run [options] -- COMMAND [ARGS...]` (start the daemon, then the
 * application with its environment pointed at the loopback listeners, and supervise
 * both) and `switchyard --wait-ready [--timeout S]` (wait for a running instance's
 * /readyz). Both are in run.c; cli.c dispatches to them.
 */
#ifndef SY_RUN_H
#define SY_RUN_H

/* 1 when argv asks for `run`, 2 for `--wait-ready`, else 0. */
int sy_run_wanted(int argc, char **argv);
/* Run it; returns the process exit code (for run: the application's). */
int sy_run_main(int argc, char **argv);

#endif
