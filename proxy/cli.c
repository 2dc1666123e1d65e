/* cli.c - placeholder until the console front end lands (see cli.h). */
#include <stdio.h>
#include <string.h>
#include "proxy/cli.h"

int sy_cli_is_subcommand(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int sy_cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "switchyard: subcommands are not available yet\n");
    return 2;
}
