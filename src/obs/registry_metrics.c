/*
 * Thread and lock gauges computed from a registry snapshot at scrape time.
 * Computing them on demand keeps the lock paths free of metric updates, and
 * a scrape sees the same facts a dump would.
 *
 *   ravel_threads{state}                    threads by what they are blocked in
 *   ravel_lock_waiters{lock,mode}           threads waiting for a tracked lock
 *   ravel_lock_holds{lock,mode}             holds outstanding on a tracked lock
 *   ravel_lock_oldest_wait_seconds{lock}    how long the longest waiter has waited
 *   ravel_rwlock_recursive_reads_total      recursive read locks reported
 *   ravel_lock_order_reports_total          lock-order inversions reported
 *   ravel_deadlocked_threads                threads in a wait-for cycle
 *   ravel_deadlock_blocked_threads          threads blocked behind such a cycle
 *   ravel_deadlock_age_seconds              how long the oldest such cycle has stood
 */
#include "obs/admin.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Distinct lock names seen in one scrape; further locks are summed under "other". */
#define RV_LOCK_METRICS_MAX 128

typedef struct lock_row {
  uint64_t id;
  char name[RV_LOCK_NAME_MAX];
  int waiters[2], holds[2]; /* by rv_lock_mode */
  int64_t oldest_wait_ns;
} lock_row;

static lock_row *row_for(lock_row *rows, size_t *n, uint64_t id, const char *name) {
  for (size_t i = 0; i < *n; i++)
    if (rows[i].id == id)
      return &rows[i];
  if (*n == RV_LOCK_METRICS_MAX)
    return &rows[RV_LOCK_METRICS_MAX]; /* the "other" row */
  lock_row *r = &rows[(*n)++];
  r->id = id;
  snprintf(r->name, sizeof r->name, "%s", name);
  return r;
}

static void emit_mode_rows(rv_metrics_writer *w, const lock_row *rows, size_t n, bool waiters) {
  static const char *const modes[2] = {"write", "read"};
  for (size_t i = 0; i < n; i++)
    for (int m = 0; m < 2; m++) {
      int v = waiters ? rows[i].waiters[m] : rows[i].holds[m];
      if (v)
        rv_metrics_write_sample(w, (const char *[]){"lock", rows[i].name, "mode", modes[m], NULL},
                                v);
    }
}

void rv_registry_collect(rv_metrics_writer *w, void *registry) {
  rv_snapshot *s = rv_snapshot_take(registry);
  if (!s)
    return;
  size_t by_state[RV_WAIT_KIND_COUNT] = {0};
  lock_row *rows = calloc(RV_LOCK_METRICS_MAX + 1, sizeof *rows);
  size_t nrows = 0;
  if (rows)
    snprintf(rows[RV_LOCK_METRICS_MAX].name, RV_LOCK_NAME_MAX, "other");
  for (size_t i = 0; i < s->nthreads; i++) {
    const rv_thread_snap *t = &s->threads[i];
    by_state[t->wait.kind]++;
    if (!rows)
      continue;
    for (int k = 0; k < t->nheld; k++)
      row_for(rows, &nrows, t->held[k].lock_id, t->held[k].lock_name)->holds[t->held[k].mode]++;
    rv_wait_kind wk = t->wait.kind;
    if (wk == RV_WAIT_MUTEX || wk == RV_WAIT_RDLOCK || wk == RV_WAIT_WRLOCK) {
      lock_row *r = row_for(rows, &nrows, t->wait.obj_id, t->wait.what);
      r->waiters[wk == RV_WAIT_RDLOCK ? RV_MODE_READ : RV_MODE_WRITE]++;
      int64_t age = s->taken_mono_ns - t->wait.since_ns;
      if (age > r->oldest_wait_ns)
        r->oldest_wait_ns = age;
    }
  }
  size_t shown = nrows + (rows && nrows == RV_LOCK_METRICS_MAX ? 1 : 0);

  rv_metrics_write_family(w, "ravel_threads", "Threads by what they are blocked in.",
                          RV_METRIC_GAUGE);
  for (int k = 0; k < RV_WAIT_KIND_COUNT; k++)
    rv_metrics_write_sample(w, (const char *[]){"state", rv_wait_kind_name(k), NULL},
                            (double)by_state[k]);

  if (rows) {
    rv_metrics_write_family(w, "ravel_lock_waiters", "Threads waiting for a tracked lock.",
                            RV_METRIC_GAUGE);
    emit_mode_rows(w, rows, shown, true);
    rv_metrics_write_family(w, "ravel_lock_holds", "Holds outstanding on a tracked lock.",
                            RV_METRIC_GAUGE);
    emit_mode_rows(w, rows, shown, false);
    rv_metrics_write_family(w, "ravel_lock_oldest_wait_seconds",
                            "Age of the longest wait for a tracked lock.", RV_METRIC_GAUGE);
    for (size_t i = 0; i < shown; i++)
      if (rows[i].waiters[0] + rows[i].waiters[1])
        rv_metrics_write_sample(w, (const char *[]){"lock", rows[i].name, NULL},
                                (double)rows[i].oldest_wait_ns / RV_NS_PER_S);
  }

  rv_metrics_write_family(w, "ravel_rwlock_recursive_reads_total",
                          "Recursive read locks of an rwlock reported by the registry.",
                          RV_METRIC_COUNTER);
  rv_metrics_write_sample(w, NULL, (double)s->recursive_total);

  rv_metrics_write_family(w, "ravel_lock_order_reports_total",
                          "Lock-order inversions (potential ABBA deadlocks) reported by the registry.",
                          RV_METRIC_COUNTER);
  rv_metrics_write_sample(w, NULL, (double)s->lockorder_stats.reports_total);

  rv_deadlocks *d = rv_deadlocks_find(s);
  size_t in_cycle = 0, blocked = 0;
  int64_t oldest_ns = 0; /* the oldest cycle's age: it formed when its last member began to wait */
  for (size_t i = 0; d && i < d->n; i++) {
    in_cycle += d->items[i].nsteps;
    blocked += d->items[i].nblocked;
    int64_t youngest = INT64_MAX;
    for (size_t k = 0; k < d->items[i].nsteps; k++) {
      int64_t since = s->threads[d->items[i].steps[k].thread].wait.since_ns;
      int64_t age = s->taken_mono_ns - since;
      if (age < youngest)
        youngest = age;
    }
    if (youngest != INT64_MAX && youngest > oldest_ns)
      oldest_ns = youngest;
  }
  rv_metrics_write_family(w, "ravel_deadlocked_threads",
                          "Threads in a cycle of the local wait-for graph.", RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, NULL, (double)in_cycle);
  rv_metrics_write_family(w, "ravel_deadlock_blocked_threads",
                          "Threads waiting, directly or not, on a deadlocked thread.",
                          RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, NULL, (double)blocked);
  rv_metrics_write_family(w, "ravel_deadlock_age_seconds",
                          "Age of the oldest wait-for cycle (0: none): since its last member began "
                          "to wait.  A cycle that outlives every timeout is one nothing will break.",
                          RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, NULL, (double)oldest_ns / 1e9);
  rv_deadlocks_free(d);
  free(rows);
  rv_snapshot_free(s);
}
