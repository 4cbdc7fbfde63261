/* ravel sim: run a scenario in the deterministic simulator (docs/sim.md). */
#include "cli/cli.h"

#include "sim/spec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel sim SCENARIO [--seed N | --seeds A..B] [--check-determinism]\n"
          "                 [--KEY VALUE | --KEY | --no-KEY]...\n"
          "       ravel sim SCENARIO --show\n"
          "       ravel sim --list\n"
          "       ravel sim service [OPTIONS]   (the incident; ravel sim service --help)\n"
          "\n"
          "Run real ravel components in one process and one OS thread, with virtual time, a\n"
          "simulated network and disk, faults, and every choice drawn from a seeded PRNG:\n"
          "a run is reproduced exactly by its seed.\n"
          "\n"
          "SCENARIO is a built-in scenario (--list) or the path of a scenario file (a '/'\n"
          "in it or a .sim name); docs/sim.md describes the format. Every key of the\n"
          "scenario's kind is also an option that overrides the file: --KEY VALUE, and for\n"
          "on/off keys --KEY (on) or --no-KEY (off).\n"
          "\n"
          "options:\n"
          "  --seed N               one seed (default 1)\n"
          "  --seeds A..B           every seed from A to B, and a summary\n"
          "  --check-determinism    run each seed twice and compare the trace hashes\n"
          "  --swarm, --no-swarm    let the seed pick the fault mix, or not (overrides the file)\n"
          "  --show                 print the scenario file and exit\n"
          "  --list                 list the built-in scenarios and exit\n"
          "\n"
          "keys:\n");
  rv_sim_spec_print_keys(f, -1);
  fprintf(f,
          "\n"
          "Per seed it prints virtual seconds, wall time, their ratio, events, the trace hash,\n"
          "the scenario's figures and its properties; on a violation, the seed, the virtual\n"
          "time, the property, the diagnosis where the scenario has one, and the last trace\n"
          "events. Exit status: 0 no violation, 1 a violation (or a run that was not\n"
          "deterministic), 2 usage, 3 a world that could not be set up.\n");
}

static bool parse_range(const char *s, uint64_t *a, uint64_t *b) {
  char *end;
  *a = strtoull(s, &end, 10);
  if (end == s || strncmp(end, "..", 2) != 0)
    return false;
  const char *p = end + 2;
  *b = strtoull(p, &end, 10);
  return end != p && *end == 0 && *a <= *b;
}

static void list_builtins(void) {
  for (const rv_sim_builtin *b = rv_sim_builtins; b->name; b++) {
    rv_sim_spec s;
    char why[256];
    if (rv_sim_spec_parse(&s, b->text, b->name, why, sizeof why) == RV_OK)
      printf("  %-28s %-10s expect %-9s  %s\n", b->name, rv_sim_kind_name(s.kind),
             s.expect_violation ? "violation" : "pass", s.description);
    else
      printf("  %-28s (does not parse: %s)\n", b->name, why);
  }
}

static int show(const char *name) {
  for (const rv_sim_builtin *b = rv_sim_builtins; b->name; b++)
    if (strcmp(b->name, name) == 0) {
      fputs(b->text, stdout);
      return 0;
    }
  FILE *f = fopen(name, "r");
  if (!f) {
    fprintf(stderr, "ravel sim: no scenario named '%s'\n", name);
    return 2;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    fwrite(buf, 1, n, stdout);
  fclose(f);
  return 0;
}

static void print_outcome(uint64_t seed, const rv_sim_outcome *r) {
  double vs = (double)r->virtual_ns / RV_NS_PER_S, ws = (double)r->wall_ns / RV_NS_PER_S;
  printf("seed %" PRIu64 ": virtual %.1f s, wall %.3f s, ratio %.0f, events %" PRIu64 ", hash %016" PRIx64
         "\n",
         seed, vs, ws, ws > 0 ? vs / ws : 0.0, r->events, r->hash);
  if (r->swarm[0])
    printf("  fault mix (swarm): %s\n", r->swarm);
  printf("  %s\n", r->figures);
  if (r->ok) {
    printf("  properties: %s\n", r->properties);
    return;
  }
  printf("  VIOLATION (seed %" PRIu64 ", virtual time %.6f s): %s\n", seed,
         (double)r->violation_at / RV_NS_PER_S, r->violation);
  if (r->diagnosis)
    printf("  diagnosis:\n%s\n", r->diagnosis);
  printf("  last trace events (virtual time, what):\n%s", r->trace);
}

int cmd_sim(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--list") == 0) {
    list_builtins();
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    fprintf(stderr, "ravel sim: the scenario comes first (ravel sim --list shows them)\n");
    usage(stderr);
    return 2;
  }
  const char *name = argv[1];
  rv_sim_spec spec;
  char why[1400];
  if (argc >= 3 && strcmp(argv[2], "--show") == 0)
    return show(name);
  if (rv_sim_spec_load(&spec, name, why, sizeof why) != RV_OK) {
    fprintf(stderr, "ravel sim: %s\n", why);
    return 2;
  }
  uint64_t first = 1, last = 1;
  bool determinism = false;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--seed") == 0 && i + 1 < argc) {
      first = last = (uint64_t)cli_int_opt("sim", a, argv[++i], 0, INT64_MAX);
    } else if (strcmp(a, "--seeds") == 0 && i + 1 < argc) {
      if (!parse_range(argv[++i], &first, &last)) {
        fprintf(stderr, "ravel sim: --seeds %s is invalid: must be A..B with A <= B\n", argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--check-determinism") == 0) {
      determinism = true;
    } else if (strcmp(a, "--swarm") == 0 || strcmp(a, "--no-swarm") == 0) {
      spec.swarm = a[2] == 's';
    } else if (strncmp(a, "--no-", 5) == 0 && rv_sim_spec_key_is_flag(&spec, a + 5)) {
      rv_sim_spec_set(&spec, a + 5, "off", why, sizeof why);
    } else if (strncmp(a, "--", 2) == 0 && rv_sim_spec_key_is_flag(&spec, a + 2) &&
               (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)) {
      rv_sim_spec_set(&spec, a + 2, "on", why, sizeof why);
    } else if (strncmp(a, "--", 2) == 0 && i + 1 < argc) {
      if (rv_sim_spec_set(&spec, a + 2, argv[i + 1], why, sizeof why) != RV_OK) {
        fprintf(stderr, "ravel sim: --%s\n", why);
        return 2;
      }
      i++;
    } else {
      fprintf(stderr, "ravel sim: unknown or incomplete option '%s' (ravel sim --help)\n", a);
      return 2;
    }
  }
  printf("scenario %s (%s): %s; expect %s\n", spec.name, rv_sim_kind_name(spec.kind),
         spec.description[0] ? spec.description : "no description",
         spec.expect_violation ? "a violation" : "every property to hold");
  uint64_t violated = 0, runs = 0;
  int failed = 0;
  for (uint64_t seed = first;; seed++) {
    rv_sim_outcome r;
    int rc = rv_sim_spec_run(&spec, seed, &r);
    if (rc != RV_OK) {
      fprintf(stderr, "ravel sim: seed %" PRIu64 ": cannot run: %s\n", seed,
              r.violation[0] ? r.violation : rv_strerror(rc));
      rv_sim_outcome_clear(&r);
      return 3;
    }
    print_outcome(seed, &r);
    runs++;
    if (!r.ok) {
      violated++;
      failed = 1;
    }
    if (determinism) {
      rv_sim_outcome r2;
      if (rv_sim_spec_run(&spec, seed, &r2) != RV_OK || r2.hash != r.hash || r2.events != r.events) {
        printf("  NOT DETERMINISTIC: second run gave hash %016" PRIx64 " after %" PRIu64
               " events (first: %016" PRIx64 " after %" PRIu64 ")\n",
               r2.hash, r2.events, r.hash, r.events);
        failed = 1;
      } else {
        printf("  deterministic: second run gave the same hash\n");
      }
      rv_sim_outcome_clear(&r2);
    }
    rv_sim_outcome_clear(&r);
    fflush(stdout);
    if (seed == last)
      break;
  }
  if (runs > 1)
    printf("summary: %" PRIu64 " seeds (%" PRIu64 "..%" PRIu64 "): %" PRIu64 " passed, %" PRIu64
           " violated; expected %s\n",
           runs, first, last, runs - violated, violated,
           spec.expect_violation ? "a violation" : "every property to hold");
  return failed;
}
