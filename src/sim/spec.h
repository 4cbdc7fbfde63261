/*
 * Scenario files for the simulator (docs/sim.md, "Scenario files").
 *
 * A scenario file is plain text, one setting per line, `#` starts a comment:
 *
 *   # the incident: every contributing cause on
 *   kind             service          # which system: locks, queue, service, durability
 *   description      The incident of INCIDENT.md, every cause on
 *   expect           violation        # pass | violation: what a correct ravel shows
 *   virtual-seconds  600
 *   replicas         3
 *   bugs             release rebuild cancel held detect
 *
 * `kind` comes first; every other key belongs to that kind (rv_sim_spec_keys
 * lists them with their meaning and range) and may appear once.  The same
 * keys are the command line's options (`ravel sim incident --replicas 5`),
 * which override the file.  The scenarios shipped in scenarios/ are compiled
 * into the binary (`ravel sim --list`); any other file is read by its path.
 *
 * Swarm testing: with `swarm on`, the seed also picks the fault mix: each
 * fault setting of the kind (a probability or an on/off fault) is kept or
 * turned off, and a kept probability scaled by a factor in [1/4, 1], drawn
 * from a PRNG seeded by the seed (not the world's PRNG, so the run itself
 * stays the one the seed names).
 */
#ifndef RAVEL_SIM_SPEC_H
#define RAVEL_SIM_SPEC_H

#include "sim/scenario.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest scenario file read (bytes) and longest line in it. */
#define RV_SIM_SPEC_FILE_MAX (64 * 1024)
#define RV_SIM_SPEC_LINE_MAX 512

typedef enum rv_sim_kind {
  RV_SIM_KIND_LOCKS,
  RV_SIM_KIND_QUEUE,
  RV_SIM_KIND_SERVICE,
  RV_SIM_KIND_DURABILITY,
  RV_SIM_KIND_COUNT
} rv_sim_kind;

typedef struct rv_sim_spec {
  char name[64];
  char description[256];
  rv_sim_kind kind;
  bool kind_set;
  bool expect_violation; /* `expect violation`: the scenario shows a bug */
  bool swarm;
  uint64_t seen[2];      /* keys set by the file (bit per key index), to refuse duplicates */
  rv_sim_locks_opts locks;
  rv_sim_queue_opts queue;
  rv_sim_service_opts service;
  rv_sim_durability_opts durability;
} rv_sim_spec;

/* What one run of one seed gave, whatever the kind. */
typedef struct rv_sim_outcome {
  bool ok;
  char violation[256];
  int64_t violation_at;
  uint64_t hash, events;
  int64_t virtual_ns, wall_ns;
  char figures[1024];    /* the kind's counters, one line */
  char properties[512];  /* "name: ok; name: ok" when ok */
  char trace[4096];      /* on a violation: the trace events before it */
  char *diagnosis;       /* on a violation, when the kind computes one: unravel's text (malloc'd) */
  char swarm[256];       /* with swarm: the fault mix the seed picked */
} rv_sim_outcome;

/* A compiled-in scenario (scenarios/NAME.sim). */
typedef struct rv_sim_builtin {
  const char *name;
  const char *text;
} rv_sim_builtin;
/* The compiled-in scenarios, ending with {NULL, NULL}. */
extern const rv_sim_builtin rv_sim_builtins[];

/*
 * Load a scenario: a compiled-in name, or a path (anything with a '/' or
 * ending in ".sim").  0, or an rv_err with why filled ("FILE:LINE: ...").
 */
int rv_sim_spec_load(rv_sim_spec *s, const char *name_or_path, char *why, size_t whylen);
/* Parse scenario text; origin names it in errors. */
int rv_sim_spec_parse(rv_sim_spec *s, const char *text, const char *origin, char *why,
                      size_t whylen);
/* Set one key of the scenario's kind (a command-line override). */
int rv_sim_spec_set(rv_sim_spec *s, const char *key, const char *value, char *why, size_t whylen);
/* Is key an on/off key of the spec's kind (so `--key` alone means on)?  false if unknown. */
bool rv_sim_spec_key_is_flag(const rv_sim_spec *s, const char *key);
/* Print the keys of a kind (all kinds: kind < 0) with their help, for --help and docs. */
void rv_sim_spec_print_keys(FILE *f, int kind);
const char *rv_sim_kind_name(rv_sim_kind k);

/*
 * Run the scenario for one seed.  0 with *out filled (out->ok false on a
 * violation), or an rv_err when the world could not be set up (out->violation
 * says why).  Free out->diagnosis with rv_sim_outcome_clear.
 */
int rv_sim_spec_run(const rv_sim_spec *s, uint64_t seed, rv_sim_outcome *out);
void rv_sim_outcome_clear(rv_sim_outcome *out);

#ifdef __cplusplus
}
#endif
#endif
