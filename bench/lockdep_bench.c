/*
 * lockdep_bench: what lock-order checking costs an uncontended rv_mutex
 * lock/unlock pair, next to its peer, the same pair with the checker off
 * (rv_registry_set_lockorder_policy(RV_LOCKORDER_OFF)).
 *
 * Two cases, one thread, nothing contended:
 *   - nothing held: lock/unlock "bench-inner" (the checker costs one relaxed
 *     load of the thread's hold count);
 *   - one held: "bench-outer" is held around the loop, so every lock of
 *     "bench-inner" looks up the known pair outer -> inner (a raw mutex and a
 *     small hash table).
 * Rounds alternate off/on; the table shows the best (least disturbed) and the
 * median ns per pair of each; on a busy machine trust the best.
 * No driver script: nothing to start.  Usage: lockdep_bench [iterations] [rounds]
 */
#include "obs/registry.h"
#include "rt/rt.h"

#include <stdio.h>
#include <stdlib.h>

#define DEFAULT_ITERS 200000L
#define DEFAULT_ROUNDS 31
#define MAX_ROUNDS 101

static double run(rv_mutex *inner, rv_mutex *outer, long iters) {
  if (outer)
    rv_mutex_lock(outer);
  int64_t t0 = rv_now_ns();
  for (long i = 0; i < iters; i++) {
    rv_mutex_lock(inner);
    rv_mutex_unlock(inner);
  }
  int64_t t1 = rv_now_ns();
  if (outer)
    rv_mutex_unlock(outer);
  return (double)(t1 - t0) / (double)iters;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : DEFAULT_ITERS;
  int rounds = argc > 2 ? atoi(argv[2]) : DEFAULT_ROUNDS;
  if (iters <= 0 || rounds <= 0 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "usage: lockdep_bench [iterations>0] [rounds 1..%d]\n", MAX_ROUNDS);
    return 2;
  }
  rv_thread_adopt("bench", "bench");
  rv_registry *reg = rv_registry_current();
  rv_mutex inner, outer;
  rv_mutex_init(&inner, "bench-inner");
  rv_mutex_init(&outer, "bench-outer");

  /* Warm up both paths (and let the checker record outer -> inner). */
  rv_registry_set_lockorder_policy(reg, RV_LOCKORDER_WARN);
  run(&inner, &outer, iters / 10 + 1);
  run(&inner, NULL, iters / 10 + 1);

  double v[2][2][MAX_ROUNDS]; /* [held][on][round] */
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < 2; k++) {
      int on = (r + k) % 2; /* alternate which goes first */
      rv_registry_set_lockorder_policy(reg, on ? RV_LOCKORDER_WARN : RV_LOCKORDER_OFF);
      v[0][on][r] = run(&inner, NULL, iters);
      v[1][on][r] = run(&inner, &outer, iters);
    }
  rv_registry_set_lockorder_policy(reg, RV_LOCKORDER_WARN);

  printf("lockdep_bench: uncontended rv_mutex lock+unlock, %ld pairs x %d rounds, ns/pair\n",
         iters, rounds);
  printf("%-14s %-7s %12s %12s %8s\n", "case", "stat", "checker off", "checker on", "on/off");
  static const char *const names[2] = {"nothing held", "one held"};
  for (int h = 0; h < 2; h++) {
    double moff = median(v[h][0], rounds), mon = median(v[h][1], rounds); /* sorts */
    double boff = v[h][0][0], bon = v[h][1][0];
    printf("%-14s %-7s %12.1f %12.1f %8.2f\n", names[h], "best", boff, bon, bon / boff);
    printf("%-14s %-7s %12.1f %12.1f %8.2f\n", names[h], "median", moff, mon, mon / moff);
  }
  rv_lockorder_stats st;
  rv_registry_lockorder_stats(reg, &st);
  printf("order graph: %u classes, %u pairs, %llu inversions\n", st.classes, st.edges,
         (unsigned long long)st.reports_total);
  rv_mutex_destroy(&inner);
  rv_mutex_destroy(&outer);
  return 0;
}
