/* The ravel command's subcommands: each parses its own options and returns an exit code. */
#ifndef RAVEL_CLI_H
#define RAVEL_CLI_H

int cmd_coord(int argc, char **argv);
int cmd_queue(int argc, char **argv);

#endif
