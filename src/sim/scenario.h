/*
 * Simulator scenarios (docs/sim.md): whole systems of real ravel components
 * run in one simulated world (rt/sim.h), with properties checked as they run.
 */
#ifndef RAVEL_SIM_SCENARIO_H
#define RAVEL_SIM_SCENARIO_H

#include "rt/sim.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RV_SIM_LOCKS_CLIENTS_MAX 16
#define RV_SIM_LOCKS_THREADS_MAX 8
/* After the workload ends every client thread must finish within this much virtual time. */
#define RV_SIM_LOCKS_LIVENESS_NS (120 * RV_NS_PER_S)
#define RV_SIM_LOCKS_TTL_MS 2000

/*
 * "locks": one coord server (the real src/server/coord.c), one fenced
 * resource, and `clients` client processes each running `threads` threads of
 * the real coord client: open a session (TTL 2 s), acquire one of two locks
 * under a 3 s deadline, write to the resource with the fencing token a few
 * times while holding it (sometimes for longer than the TTL, as a paused
 * process would), release.  A nemesis partitions a random client from coord
 * for 0.5..4 s every few seconds (expiring its session) until 85% of the
 * workload time.  Properties:
 *   - per lock, the token of the holder in coord's lock table only increases
 *     (checked after every simulation step);
 *   - the resource never accepts a write with a token older than one it has
 *     accepted (two overlapping holders); it rejects stale ones (counted);
 *   - liveness: every client thread does at least min_acquisitions and
 *     finishes within RV_SIM_LOCKS_LIVENESS_NS after the workload ends.
 */
typedef struct rv_sim_locks_opts {
  uint64_t seed;
  int64_t virtual_ns;   /* workload length; default 60 s */
  int clients;          /* default 4 */
  int threads;          /* per client; default 3 */
  int min_acquisitions; /* per thread; default 3 */
  bool broken_fencing;  /* test-only: the resource skips its token check */
  bool no_partitions;
} rv_sim_locks_opts;

typedef struct rv_sim_locks_result {
  bool ok;
  char violation[256];   /* the first property that failed */
  int64_t violation_at;  /* virtual time of it */
  uint64_t hash, events;
  int64_t virtual_ns, wall_ns;
  uint64_t acquisitions, acquire_failures, session_losses, partitions;
  uint64_t writes_ok, writes_rejected;
  char trace[4096];      /* on a violation: the last 20 trace events before it */
} rv_sim_locks_result;

/*
 * Run the scenario for one seed; r says what happened (r->ok false: the first
 * violation, and r->trace the events that led to it).  Returns 0, or an
 * rv_err when the world could not be set up (r->violation says why).
 */
int rv_sim_locks_run(const rv_sim_locks_opts *o, rv_sim_locks_result *r);

#ifdef __cplusplus
}
#endif
#endif
