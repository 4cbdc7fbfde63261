/* Shared by the simulator's scenarios: see common.h. */
#include "sim/common.h"

#include "diag/grab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *trace_text(rv_sim_world *w) {
  char *text = NULL;
  size_t len;
  FILE *f = open_memstream(&text, &len);
  if (f) {
    rv_sim_trace_print(w, f, SIM_TRACE_EVENTS);
    fclose(f);
  }
  return text;
}

void sim_violation(sim_verdict *v, const char *fmt, va_list ap) {
  if (!*v->ok)
    return;
  *v->ok = false;
  *v->violation_at = rv_sim_now(v->w);
  vsnprintf(v->violation, v->violation_cap, fmt, ap);
  rv_sim_note(v->w, "VIOLATION %.60s", v->violation);
  v->trace_at_first = trace_text(v->w);
}

void sim_verdict_finish(sim_verdict *v) {
  if (!*v->ok) {
    if (!v->trace_at_first)
      v->trace_at_first = trace_text(v->w);
    if (v->trace_at_first)
      snprintf(v->trace, v->trace_cap, "%s", v->trace_at_first);
  }
  free(v->trace_at_first);
  v->trace_at_first = NULL;
}

static uint64_t draw(rv_sim_world *w, uint64_t n) { return rv_rng_below(rv_sim_rng(w), n); }

static void heal(void *arg) {
  sim_nemesis_target *t = arg;
  t->cut = false;
  rv_sim_partition(t->n->w, t->proc, t->n->server, false);
}

static void strike(void *arg) {
  sim_nemesis *n = arg;
  int64_t now = rv_sim_now(n->w);
  if (now >= n->stop_ns || n->ntargets == 0)
    return;
  sim_nemesis_target *t = &n->targets[draw(n->w, (uint64_t)n->ntargets)];
  int64_t len = 500 * RV_NS_PER_MS + (int64_t)draw(n->w, 3500) * RV_NS_PER_MS;
  if (!t->cut) {
    t->cut = true;
    rv_sim_partition(n->w, t->proc, n->server, true);
    if (n->partitions)
      (*n->partitions)++;
    rv_sim_at(n->w, now + len, heal, t);
  }
  rv_sim_at(n->w, now + len + RV_NS_PER_S + (int64_t)draw(n->w, 6000) * RV_NS_PER_MS, strike, n);
}

void sim_nemesis_start(sim_nemesis *n, int64_t first_ns) {
  for (int i = 0; i < n->ntargets; i++)
    n->targets[i].n = n;
  rv_sim_at(n->w, first_ns, strike, n);
}

void sim_nemesis_init(sim_nemesis *n, rv_sim_world *w, rv_sim_proc *server, int64_t stop_ns,
                      uint64_t *partitions) {
  memset(n, 0, sizeof *n);
  n->w = w;
  n->server = server;
  n->stop_ns = stop_ns;
  n->partitions = partitions;
}

int sim_stage_open(rv_sim_world **w, char *dir, size_t dircap, uint64_t seed, char *why,
                   size_t whylen) {
  snprintf(dir, dircap, "/tmp/ravel-sim-XXXXXX");
  if (!mkdtemp(dir)) {
    snprintf(why, whylen, "cannot create a temporary directory");
    return RV_EIO;
  }
  rv_sim_opts wo = {.seed = seed, .latency_min_ns = 200 * RV_NS_PER_US,
                    .latency_max_ns = 5 * RV_NS_PER_MS};
  int rc = rv_sim_world_new(w, &wo);
  if (rc != RV_OK) {
    snprintf(why, whylen, "cannot create the world: %s", rv_strerror(rc));
    rv_grab_rmtree(dir);
  }
  return rc;
}

void sim_stage_close(rv_sim_world *w, const char *dir) {
  /* A world that ended on a violation still holds live threads: their memory is abandoned. */
  rv_sim_world_free(w);
  rv_grab_rmtree(dir);
}

int sim_run(rv_sim_world *w, int64_t until, int64_t *wall_ns, int64_t *virtual_ns, uint64_t *hash,
            uint64_t *events) {
  int64_t wall0 = rv_now_ns();
  int rc = rv_sim_run(w, until);
  *wall_ns = rv_now_ns() - wall0;
  *virtual_ns = rv_sim_now(w);
  *hash = rv_sim_hash(w);
  *events = rv_sim_events(w);
  return rc;
}
