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

#define RV_SIM_QUEUE_CONSUMERS_MAX 8
#define RV_SIM_QUEUE_MESSAGES_MAX 100000
/* After the workload window every acknowledged message must be finished within this much virtual time. */
#define RV_SIM_QUEUE_LIVENESS_NS (60 * RV_NS_PER_S)
/* Handler threads a consumer may have alive beyond max_in_flight (stragglers of a lost connection). */
#define RV_SIM_QUEUE_HANDLER_SLACK 2
#define RV_SIM_QUEUE_MSG_TIMEOUT_MS 1000

/*
 * "queue": one queue server (the real src/server/queue*.c over its real log
 * in a temporary directory, no HTTP API), one producer process (the real
 * libravel rv_producer) publishing `messages` numbered messages, each counted
 * once the server acknowledged it, and `consumers` consumer processes (the
 * real rv_consumer, as the fixed reference service uses it: timeout_notify,
 * hold_slots, cancel_on_server_timeout; the second consumer runs a handler
 * pool, the others a thread per message) with a message timeout of 1 s and
 * handlers that sometimes run past it.  A nemesis partitions a random
 * consumer from the queue for 0.5..4 s every few seconds until 85% of the
 * workload window.  Properties:
 *   - after every step, the server core's own invariant check
 *     (rv_queue_check) holds, and the channel's count of accepted FINs equals
 *     the number of its messages in the FINISHED state, none of which ever
 *     leaves it: no message is finished twice by answers the server accepted;
 *   - every consumer's handler threads alive never exceed max_in_flight +
 *     RV_SIM_QUEUE_HANDLER_SLACK;
 *   - liveness: within RV_SIM_QUEUE_LIVENESS_NS after the window, every
 *     message of the channel is finished on the server (none lost), and
 *     every acknowledged message had a handler return FIN for it.
 */
typedef struct rv_sim_queue_opts {
  uint64_t seed;
  int64_t virtual_ns;  /* workload window (publishing, partitions); default 30 s */
  int messages;        /* default 200 */
  int consumers;       /* default 3 */
  int max_in_flight;   /* per consumer; default 3 */
  bool no_partitions;
  /* test-only: consumers without cancel_on_server_timeout and hold_slots (the
   * incident's service): timed-out handlers keep running while the server
   * hands their slots on, so handler threads pile up (expect a violation). */
  bool unfixed_consumers;
} rv_sim_queue_opts;

typedef struct rv_sim_queue_result {
  bool ok;
  char violation[256];
  int64_t violation_at;
  uint64_t hash, events;
  int64_t virtual_ns, wall_ns;
  uint64_t published;        /* acknowledged publishes */
  uint64_t publish_retries;  /* publishes retried after an error */
  uint64_t server_messages;  /* distinct messages on the channel (publish retries may add some) */
  uint64_t deliveries;       /* server: deliveries, redeliveries included */
  uint64_t fins_accepted;    /* server: FINs it accepted */
  uint64_t timeouts;         /* server: in-flight timeouts */
  uint64_t requeues;         /* server: REQs it accepted */
  uint64_t late_answers;     /* consumers: E_FIN_FAILED + E_REQ_FAILED received */
  uint64_t answers_dropped;  /* consumers: answers for a lost connection */
  uint64_t handler_fins;     /* handlers that returned FIN */
  uint64_t reconnects;       /* consumers: connection losses */
  uint64_t partitions;
  int max_handlers;          /* most handler threads alive in one consumer */
  int max_in_flight;
  char trace[4096];
} rv_sim_queue_result;

int rv_sim_queue_run(const rv_sim_queue_opts *o, rv_sim_queue_result *r);

#ifdef __cplusplus
}
#endif
#endif
