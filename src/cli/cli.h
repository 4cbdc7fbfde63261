/* The ravel command's subcommands: each parses its own options and returns an exit code. */
#ifndef RAVEL_CLI_H
#define RAVEL_CLI_H

#include <stdint.h>

int cmd_coord(int argc, char **argv);
int cmd_queue(int argc, char **argv);
int cmd_up(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_svc(int argc, char **argv);

/*
 * An integer option value within [lo, hi]; on anything else prints
 * "ravel CMD: OPT VALUE is invalid: must be lo..hi" and exits with status 2.
 */
int64_t cli_int_opt(const char *cmd, const char *opt, const char *value, int64_t lo, int64_t hi);

#endif
