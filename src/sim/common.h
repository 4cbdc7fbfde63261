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
  /* Optional: the world's diagnosis (sim_diagnose) taken at the first violation, when the
   * evidence is freshest, into the result's diagnosis text. */
  char *(*diagnose)(void *arg);
  void *diagnose_arg;
  char *diagnosis;
  size_t diagnosis_cap;
  bool stop_world; /* end the run (rv_sim_stop) at the first violation */
} sim_verdict;

/* The verdict kept in a result struct with fields ok, violation, violation_at, trace. */
#define SIM_VERDICT_OF(world, res)                                                                 \
  ((sim_verdict){.w = (world),                                                                     \
                 .ok = &(res)->ok,                                                                 \
                 .violation = (res)->violation,                                                    \
                 .violation_cap = sizeof (res)->violation,                                         \
                 .violation_at = &(res)->violation_at,                                             \
                 .trace = (res)->trace,                                                            \
                 .trace_cap = sizeof (res)->trace,                                                 \
                 .diagnosis = (res)->diagnosis,                                                    \
                 .diagnosis_cap = sizeof (res)->diagnosis})

/*
 * A scenario's stage: a world with the scenarios' network latency (0.2-5 ms),
 * and in dir the servers' data directory, SIM_DATA_DIR: a path on each
 * process's own simulated disk volume (nothing is made on the real disk).
 * On failure why is filled.
 */
#define SIM_DATA_DIR "/var/lib/ravel/data"
int sim_stage_open(rv_sim_world **w, char *dir, size_t dircap, uint64_t seed, char *why,
                   size_t whylen);
void sim_stage_close(rv_sim_world *w);

/* Run the world until `until`; wall and virtual time, trace hash and events go to the result. */
#define SIM_RUN(world, until, res)                                                                 \
  sim_run((world), (until), &(res)->wall_ns, &(res)->virtual_ns, &(res)->hash, &(res)->events)
int sim_run(rv_sim_world *w, int64_t until, int64_t *wall_ns, int64_t *virtual_ns, uint64_t *hash,
            uint64_t *events);

/* A producer of the real libravel connected to host:port, retrying every retry_ns until the
 * queue answers (it may not listen yet, or be down); each attempt is bounded by 3 s. */
struct rv_producer *sim_producer_open(const char *host, uint16_t port, int64_t retry_ns);

/* A scenario option left 0 (or negative) takes its default; above max (if max > 0), max. */
static inline void sim_opt_int(int *v, int def, int max) {
  if (*v <= 0)
    *v = def;
  if (max > 0 && *v > max)
    *v = max;
}
static inline void sim_opt_i64(int64_t *v, int64_t def, int64_t max) {
  if (*v <= 0)
    *v = def;
  if (max > 0 && *v > max)
    *v = max;
}

/* Record a violation (only the first one counts); the world keeps running. */
void sim_violation(sim_verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A scenario's violation(sc, fmt, ...): its verdict lives in sc->verdict. */
#define SIM_VIOLATION(sc, ...) sim_violation(&(sc)->verdict, __VA_ARGS__)
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
/* Set it up against server with no targets yet (add them to targets[], ntargets). */
void sim_nemesis_init(sim_nemesis *n, rv_sim_world *w, rv_sim_proc *server, int64_t stop_ns,
                      uint64_t *partitions);
/* Start it (first partition at first_ns); n must outlive the world's run. */
void sim_nemesis_start(sim_nemesis *n, int64_t first_ns);


/*
 * The diagnosis of `ravel unravel` for the simulated world: the same code
 * (rv_unravel_dir) over the same files.  A collection directory in the grab
 * layout (diag/grab.h) is written into a real temporary directory from the
 * simulated processes' registries (threads.json per process, pid = the
 * simulated pid), coord's lock table with its waiters and its sessions (read
 * from the server's rv_lt, as LOCK.LIST and SESSION.LIST would give them),
 * and the queue's per-client stats (from its core, as /stats?format=json);
 * analysed, and removed.  coord and queue may be NULL (not in the scenario).
 * Call it inside the run (a step hook or an rv_sim_at callback), where ages
 * are virtual.  Returns unravel's text (malloc'd; the caller frees) or NULL
 * with why filled in.
 */
struct rv_coord;
struct rv_qsrv;
/* Processes one diagnosis reads at most. */
#define SIM_DIAG_PROCS_MAX RV_SIM_PROCS_MAX
char *sim_diagnose(rv_sim_proc *const *procs, size_t nprocs, const rv_sim_proc *coord_proc,
                   struct rv_coord *coord, struct rv_qsrv *queue, char *why, size_t whylen);
/* The same, for a verdict's diagnose hook: on failure, a text that says why (NULL only when
 * out of memory). */
char *sim_diagnosis_text(rv_sim_proc *const *procs, size_t nprocs, const rv_sim_proc *coord_proc,
                         struct rv_coord *coord, struct rv_qsrv *queue);

/*
 * The body of a simulated coord process: start coord with o (a struct rv_coord_opts),
 * run it until it stops or its process is killed, free it.  *coord and *up describe it
 * to the checks meanwhile; a coord that does not start is a violation of v.
 */
struct rv_coord_opts;
void sim_coord_serve(sim_verdict *v, const struct rv_coord_opts *o, struct rv_coord **coord,
                     bool *up);

#endif
