/* The ravel command's subcommands: each parses its own options and returns an exit code. */
#ifndef RAVEL_CLI_H
#define RAVEL_CLI_H

#include <stdint.h>

int cmd_coord(int argc, char **argv);
int cmd_queue(int argc, char **argv);
int cmd_up(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_svc(int argc, char **argv);
int cmd_grab(int argc, char **argv);
int cmd_unravel(int argc, char **argv);
int cmd_sim(int argc, char **argv);

/*
 * An integer option value within [lo, hi]; on anything else prints
 * "ravel CMD: OPT VALUE is invalid: must be lo..hi" and exits with status 2.
 */
int64_t cli_int_opt(const char *cmd, const char *opt, const char *value, int64_t lo, int64_t hi);

/* The per-replica view behind `ravel top`, reused by `ravel demo` (cmd_top.c). */
#include <stdbool.h>
#include <stdio.h>
typedef struct cli_top cli_top;
typedef struct cli_replica_stats {
  char who[96];
  bool answered;
  double messages, handler_threads, cache_waiters, dlock_waits, in_flight, timeouts, late_fins,
      deadlocked, deadlock_age_s, rebuilds, recursive_reads;
} cli_replica_stats;
cli_top *cli_top_new(const char *coord_host, uint16_t coord_port, const char *queue_host,
                     uint16_t queue_http_port);
/* One refresh of the view (also discovers replicas from coord's sessions). */
void cli_top_render(cli_top *t, FILE *f);
size_t cli_top_replicas(cli_top *t, cli_replica_stats *out, size_t cap);
void cli_top_free(cli_top *t);
/* GET http://host:port/path with a bounded wait: the body of a 200 answer (free it), or NULL. */
char *cli_http_get(const char *host, uint16_t port, const char *path);

#endif
