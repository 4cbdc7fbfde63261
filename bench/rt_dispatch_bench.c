/*
 * The cost of rt's runtime dispatch (one binary, two worlds: every public rt
 * call first checks a thread-local "current simulated world" pointer).
 * Measures uncontended rv_mutex lock/unlock pairs, rv_rawmu lock/unlock pairs
 * and rv_now_ns on the OS backend, in ns per operation (best of 5 runs).
 * Time is the process's CPU time (getrusage), not a clock: on a loaded
 * machine the time the thread spends descheduled would swamp nanoseconds.
 * Run: build/bench/rt_dispatch_bench [iterations]; bench/rt_dispatch_bench.sh
 * compares against a build with the dispatch compiled out.
 */
#include "rt/rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static int64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * RV_NS_PER_S +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * RV_NS_PER_US;
}

static double best_ns(void (*fn)(long), long iters) {
  double best = 1e30;
  for (int r = 0; r < 5; r++) {
    int64_t t0 = cpu_ns();
    fn(iters);
    double per = (double)(cpu_ns() - t0) / (double)iters;
    if (per < best)
      best = per;
  }
  return best;
}

static rv_mutex mu;
static rv_rawmu raw;
static volatile int64_t sink;

static void mutex_pairs(long n) {
  for (long i = 0; i < n; i++) {
    rv_mutex_lock(&mu);
    rv_mutex_unlock(&mu);
  }
}

static void rawmu_pairs(long n) {
  for (long i = 0; i < n; i++) {
    rv_rawmu_lock(&raw);
    rv_rawmu_unlock(&raw);
  }
}

static void now_calls(long n) {
  int64_t acc = 0;
  for (long i = 0; i < n; i++)
    acc += rv_now_ns();
  sink = acc;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 5000000;
  rv_mutex_init(&mu, "bench");
  rv_rawmu_init(&raw);
  printf("rv_mutex_lock+unlock  %6.2f ns/pair\n", best_ns(mutex_pairs, iters));
  printf("rv_rawmu_lock+unlock  %6.2f ns/pair\n", best_ns(rawmu_pairs, iters));
  printf("rv_now_ns             %6.2f ns/call\n", best_ns(now_calls, iters));
  rv_mutex_destroy(&mu);
  rv_rawmu_destroy(&raw);
  return 0;
}
