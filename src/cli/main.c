/* The ravel command: one binary, one subcommand per component. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct subcommand {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *help;
} subcommand;

static const subcommand subcommands[] = {
    {"coord", cmd_coord, "run the coordination server (locks, sessions, config; RESP on :7400)"},
    {"queue", cmd_queue, "run the event queue (NSQ protocol on :4150, HTTP API on :4151)"},
    {"up", cmd_up, "run coord and queue together in one process"},
    {"demo", cmd_demo, "replay the incident on real processes (--incident) or show it fixed"},
    {"top", cmd_top, "a live per-replica view of the services, the queue and the locks"},
    {"svc", cmd_svc, "run one replica of the incident's reference service"},
    {"grab", cmd_grab, "capture every process's evidence into one archive (before a restart)"},
    {"unravel", cmd_unravel, "join every process's locks and waits into one diagnosis"},
    {"sim", cmd_sim, "run a scenario in the deterministic simulator (virtual time, seeds)"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: ravel COMMAND [OPTIONS]   (ravel COMMAND --help for its options)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].help);
  fprintf(f, "  %-10s %s\n  %-10s %s\n", "help", "show this help", "version", "print the version");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("ravel 0.1.0\n");
    return 0;
  }
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    if (strcmp(cmd, subcommands[i].name) == 0)
      return subcommands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "ravel: unknown command '%s'\n", cmd);
  usage(stderr);
  return 2;
}
