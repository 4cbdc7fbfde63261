/* ravel sim: run a scenario in the deterministic simulator (docs/sim.md). */
#include "cli/cli.h"

#include "sim/scenario.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel sim SCENARIO [--seed N | --seeds A..B] [--check-determinism]\n"
          "                 [--virtual-seconds S] [--clients N] [--threads N]\n"
          "                 [--no-partitions] [--break-fencing]\n"
          "                 [--messages N] [--consumers N] [--max-in-flight N]\n"
          "                 [--unfixed-consumers]\n"
          "\n"
          "Run real ravel components in one process and one OS thread, with virtual time, a\n"
          "simulated network (latency, partitions) and every choice drawn from a seeded PRNG:\n"
          "a run is reproduced exactly by its seed.\n"
          "\n"
          "scenarios:\n"
          "  locks   coord server + %d..%d coord-client processes taking fenced locks while a\n"
          "          nemesis partitions clients from coord; checks fencing, mutual exclusion\n"
          "          as the resource sees it, and liveness\n"
          "  queue   queue server + a producer + %d..%d consumer processes (timeout_notify,\n"
          "          hold_slots, cancel_on_server_timeout; handlers that outlive the 1 s message\n"
          "          timeout) while a nemesis partitions consumers from the queue; checks that\n"
          "          every acknowledged message is finished, none twice by accepted FINs, and\n"
          "          that handler threads stay within max_in_flight + %d\n"
          "\n"
          "options:\n"
          "  --seed N               one seed (default 1)\n"
          "  --seeds A..B           every seed from A to B\n"
          "  --check-determinism    run each seed twice and compare the trace hashes\n"
          "  --virtual-seconds S    workload length in virtual seconds (locks: 60, queue: 30)\n"
          "  --clients N            locks: client processes (default 4)\n"
          "  --threads N            locks: threads per client (default 3)\n"
          "  --messages N           queue: messages to publish (default 200)\n"
          "  --consumers N          queue: consumer processes (default 3)\n"
          "  --max-in-flight N      queue: RDY per consumer (default 3)\n"
          "  --unfixed-consumers    queue, to test the checker: consumers without\n"
          "                         cancel_on_server_timeout and hold_slots (expect a\n"
          "                         handler-thread pile-up violation)\n"
          "  --no-partitions        no nemesis\n"
          "  --break-fencing        test the checker: the resource skips its token check,\n"
          "                         so stale holders get through (expect a violation)\n"
          "\n"
          "Per seed it prints virtual seconds, wall time, their ratio, events, the trace hash\n"
          "and the properties; on a violation, the seed, the virtual time, the property and\n"
          "the last 20 trace events, and exits 1.\n",
          1, RV_SIM_LOCKS_CLIENTS_MAX, 1, RV_SIM_QUEUE_CONSUMERS_MAX, RV_SIM_QUEUE_HANDLER_SLACK);
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

static int run_queue(rv_sim_queue_opts *o, uint64_t first, uint64_t last, bool determinism) {
  int failed = 0;
  for (uint64_t seed = first;; seed++) {
    o->seed = seed;
    rv_sim_queue_result r;
    int rc = rv_sim_queue_run(o, &r);
    if (rc != RV_OK) {
      fprintf(stderr, "ravel sim: seed %" PRIu64 ": cannot run: %s\n", seed,
              r.violation[0] ? r.violation : rv_strerror(rc));
      return 1;
    }
    double vs = (double)r.virtual_ns / RV_NS_PER_S, ws = (double)r.wall_ns / RV_NS_PER_S;
    printf("seed %" PRIu64 ": virtual %.1f s, wall %.3f s, ratio %.0f, events %" PRIu64
           ", hash %016" PRIx64 "\n",
           seed, vs, ws, ws > 0 ? vs / ws : 0.0, r.events, r.hash);
    printf("  published %" PRIu64 " (retries %" PRIu64 ", server messages %" PRIu64
           "), deliveries %" PRIu64 ", FINs accepted %" PRIu64 ", handler FINs %" PRIu64
           ", timeouts %" PRIu64 ", REQs %" PRIu64 ", late answers refused %" PRIu64
           ", answers dropped %" PRIu64 ", reconnects %" PRIu64 ", partitions %" PRIu64
           ", most handler threads %d (max_in_flight %d)\n",
           r.published, r.publish_retries, r.server_messages, r.deliveries, r.fins_accepted,
           r.handler_fins, r.timeouts, r.requeues, r.late_answers, r.answers_dropped,
           r.reconnects, r.partitions, r.max_handlers, r.max_in_flight);
    if (r.ok) {
      printf("  properties: core invariants: ok; no message finished twice: ok; handler "
             "threads bounded: ok; every acknowledged message finished: ok\n");
    } else {
      printf("  VIOLATION (seed %" PRIu64 ", virtual time %.6f s): %s\n", seed,
             (double)r.violation_at / RV_NS_PER_S, r.violation);
      printf("  last trace events (virtual time, what):\n%s", r.trace);
      failed++;
    }
    if (determinism) {
      rv_sim_queue_result r2;
      if (rv_sim_queue_run(o, &r2) != RV_OK || r2.hash != r.hash || r2.events != r.events) {
        printf("  NOT DETERMINISTIC: second run gave hash %016" PRIx64 " after %" PRIu64
               " events (first: %016" PRIx64 " after %" PRIu64 ")\n",
               r2.hash, r2.events, r.hash, r.events);
        failed++;
      } else {
        printf("  deterministic: second run gave the same hash\n");
      }
    }
    fflush(stdout);
    if (seed == last)
      break;
  }
  return failed ? 1 : 0;
}

int cmd_sim(int argc, char **argv) {
  const char *scenario = NULL;
  uint64_t first = 1, last = 1;
  bool determinism = false;
  rv_sim_locks_opts o = {0};
  rv_sim_queue_opts qo = {0};
  for (int i = 1; i < argc; i++) {
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
    } else if (strcmp(a, "--virtual-seconds") == 0 && i + 1 < argc) {
      o.virtual_ns = cli_int_opt("sim", a, argv[++i], 1, 86400) * RV_NS_PER_S;
    } else if (strcmp(a, "--clients") == 0 && i + 1 < argc) {
      o.clients = (int)cli_int_opt("sim", a, argv[++i], 1, RV_SIM_LOCKS_CLIENTS_MAX);
    } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
      o.threads = (int)cli_int_opt("sim", a, argv[++i], 1, RV_SIM_LOCKS_THREADS_MAX);
    } else if (strcmp(a, "--messages") == 0 && i + 1 < argc) {
      qo.messages = (int)cli_int_opt("sim", a, argv[++i], 1, RV_SIM_QUEUE_MESSAGES_MAX);
    } else if (strcmp(a, "--consumers") == 0 && i + 1 < argc) {
      qo.consumers = (int)cli_int_opt("sim", a, argv[++i], 1, RV_SIM_QUEUE_CONSUMERS_MAX);
    } else if (strcmp(a, "--max-in-flight") == 0 && i + 1 < argc) {
      qo.max_in_flight = (int)cli_int_opt("sim", a, argv[++i], 1, 1000);
    } else if (strcmp(a, "--unfixed-consumers") == 0) {
      qo.unfixed_consumers = true;
    } else if (strcmp(a, "--no-partitions") == 0) {
      o.no_partitions = true;
    } else if (strcmp(a, "--break-fencing") == 0) {
      o.broken_fencing = true;
    } else if (a[0] != '-' && !scenario) {
      scenario = a;
    } else {
      fprintf(stderr, "ravel sim: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!scenario) {
    usage(stderr);
    return 2;
  }
  if (strcmp(scenario, "queue") == 0) {
    qo.virtual_ns = o.virtual_ns;
    qo.no_partitions = o.no_partitions;
    return run_queue(&qo, first, last, determinism);
  }
  if (strcmp(scenario, "locks") != 0) {
    fprintf(stderr, "ravel sim: unknown scenario '%s' (known: locks, queue)\n", scenario);
    return 2;
  }
  int failed = 0;
  for (uint64_t seed = first;; seed++) {
    o.seed = seed;
    rv_sim_locks_result r;
    int rc = rv_sim_locks_run(&o, &r);
    if (rc != RV_OK) {
      fprintf(stderr, "ravel sim: seed %" PRIu64 ": cannot run: %s\n", seed,
              r.violation[0] ? r.violation : rv_strerror(rc));
      return 1;
    }
    double vs = (double)r.virtual_ns / RV_NS_PER_S, ws = (double)r.wall_ns / RV_NS_PER_S;
    printf("seed %" PRIu64 ": virtual %.1f s, wall %.3f s, ratio %.0f, events %" PRIu64
           ", hash %016" PRIx64 "\n",
           seed, vs, ws, ws > 0 ? vs / ws : 0.0, r.events, r.hash);
    printf("  acquisitions %" PRIu64 ", acquire timeouts/failures %" PRIu64
           ", session losses %" PRIu64 ", partitions %" PRIu64 ", writes ok %" PRIu64
           ", stale writes rejected %" PRIu64 "\n",
           r.acquisitions, r.acquire_failures, r.session_losses, r.partitions, r.writes_ok,
           r.writes_rejected);
    if (r.ok) {
      printf("  properties: fencing tokens increase: ok; no overlapping holders at the resource: "
             "ok; liveness: ok\n");
    } else {
      printf("  VIOLATION (seed %" PRIu64 ", virtual time %.6f s): %s\n", seed,
             (double)r.violation_at / RV_NS_PER_S, r.violation);
      printf("  last trace events (virtual time, what):\n%s", r.trace);
      failed++;
    }
    if (determinism) {
      rv_sim_locks_result r2;
      if (rv_sim_locks_run(&o, &r2) != RV_OK || r2.hash != r.hash ||
          r2.events != r.events) {
        printf("  NOT DETERMINISTIC: second run gave hash %016" PRIx64 " after %" PRIu64
               " events (first: %016" PRIx64 " after %" PRIu64 ")\n",
               r2.hash, r2.events, r.hash, r.events);
        failed++;
      } else {
        printf("  deterministic: second run gave the same hash\n");
      }
    }
    fflush(stdout);
    if (seed == last)
      break;
  }
  return failed ? 1 : 0;
}
