/*
 * What every simulator scenario needs (src/sim/): the first violation of a
 * property with the trace that led to it, and the partition nemesis.
 * Internal to src/sim/.
 */
#ifndef RAVEL_SIM_COMMON_H
#define RAVEL_SIM_COMMON_H

#include "rt/sim.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Trace events kept with a violation. */
#define SIM_TRACE_EVENTS 20

/* Where a scenario's result keeps its verdict (fields of the result struct). */
typedef struct sim_verdict {
  rv_sim_world *w;
  bool *ok;
  char *violation;
  size_t violation_cap;
  int64_t *violation_at;
  char *trace;        /* the result's trace text */
  size_t trace_cap;
  char *trace_at_first; /* malloc'd: the trace when the first violation happened */
} sim_verdict;

/* Record a violation (only the first one counts); the world keeps running. */
void sim_violation(sim_verdict *v, const char *fmt, va_list ap);
/* At the end: copy the trace of the first violation (or, for a violation found
 * only now, the current one) into the result, and free what was kept. */
void sim_verdict_finish(sim_verdict *v);

/* The nemesis: cuts a random target off from the server for 0.5-4 s, every 1-7 s
 * between partitions, until stop_ns.  Every draw comes from the world's seed. */
#define SIM_NEMESIS_TARGETS_MAX 16
typedef struct sim_nemesis sim_nemesis;
typedef struct sim_nemesis_target {
  sim_nemesis *n;
  rv_sim_proc *proc;
  bool cut;
} sim_nemesis_target;
struct sim_nemesis {
  rv_sim_world *w;
  rv_sim_proc *server;
  sim_nemesis_target targets[SIM_NEMESIS_TARGETS_MAX];
  int ntargets;
  int64_t stop_ns;
  uint64_t *partitions; /* counted here */
};
/* Start it (first partition at first_ns); n must outlive the world's run. */
void sim_nemesis_start(sim_nemesis *n, int64_t first_ns);

#endif
