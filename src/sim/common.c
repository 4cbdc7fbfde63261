/* Shared by the simulator's scenarios: see common.h. */
#include "sim/common.h"

#include <stdio.h>
#include <stdlib.h>

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
