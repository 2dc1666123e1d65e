/*
 * cli.h - `switchyard switch|status|pause|resume|reload ...`: a small front end to the
 * admin console through libpq, for scripts (cli.c). Its exit code says whether the
 * command (for switch: the whole switch) completed.
 */
#ifndef SY_CLI_H
#define SY_CLI_H

/* 1 if argv[1] names a subcommand. */
int sy_cli_is_subcommand(int argc, char **argv);
/* Run the subcommand; returns the process exit code. */
int sy_cli_main(int argc, char **argv);

/* Hide the value of a -o KEY=VALUE whose key names a password from ps (overwrites argv). */
void sy_cli_scrub_arg(char *arg);

#endif
