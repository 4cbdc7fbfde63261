/* Option parsing shared by the subcommands. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>

int64_t cli_int_opt(const char *cmd, const char *opt, const char *value, int64_t lo, int64_t hi) {
  char *end;
  long long v = strtoll(value, &end, 10);
  if (end == value || *end || v < lo || v > hi) {
    fprintf(stderr, "ravel %s: %s %s is invalid: must be %lld..%lld\n", cmd, opt, value,
            (long long)lo, (long long)hi);
    exit(2);
  }
  return v;
}
