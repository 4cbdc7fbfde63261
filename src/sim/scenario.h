/*
 * Simulator scenarios (docs/sim.md): whole systems of real ravel components
 * run in one simulated world (rt/sim.h), with properties checked as they run.
 */
#ifndef RAVEL_SIM_SCENARIO_H
#define RAVEL_SIM_SCENARIO_H

#include "rt/sim.h"
#include "svc/svc.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of ravel unravel's diagnosis a result keeps (the text is cut there). */
#define RV_SIM_DIAGNOSIS_MAX 16384

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
  char diagnosis[RV_SIM_DIAGNOSIS_MAX]; /* unravel's text at the first violation, or "" */
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
  char diagnosis[RV_SIM_DIAGNOSIS_MAX]; /* unravel's text at the first violation, or "" */
} rv_sim_queue_result;

int rv_sim_queue_run(const rv_sim_queue_opts *o, rv_sim_queue_result *r);

#define RV_SIM_DURABILITY_PRODUCERS_MAX 8
#define RV_SIM_DURABILITY_CONSUMERS_MAX 8
/* Messages per producer, at most. */
#define RV_SIM_DURABILITY_MESSAGES_MAX 10000
/* After the fault window, everything acknowledged must be finished within this much virtual time. */
#define RV_SIM_DURABILITY_LIVENESS_NS (90 * RV_NS_PER_S)
/*
 * docs/queue.md lets a message FIN'd within the last 200 ms before a crash
 * (the channel journal's sync interval, RV_QJOURNAL_SYNC_INTERVAL_NS) be
 * delivered once more; storage/qjournal.h says "plus one sync".  The checker
 * allows the interval plus this much for that sync round.
 */
#define RV_SIM_DURABILITY_FIN_SYNC_SLACK_NS (50 * RV_NS_PER_MS)

/*
 * "durability": one queue server (the real src/server/queue*.c, no HTTP API,
 * its data on the process's simulated disk volume "queue"), `producers`
 * processes publishing `messages` numbered bodies each with the real
 * rv_producer (a body counts as acknowledged only when PUB returned OK;
 * failures are retried), and `consumers` processes FINing every message
 * after a short handler.  During the fault window a nemesis kills the queue
 * process (kill -9: rv_sim_proc_crash), crashes its disk volume
 * (rv_sim_disk_crash: unsynced writes lost or torn), and restarts it over the
 * same data directory after a short downtime; half of the kills strike right
 * after a publish reached the server (before its sync).  The network loses
 * segments and resets connections at random, and the nemesis resets a random
 * client's connections now and then.  At the end of the window every fault
 * heals.  Properties:
 *   - after every step: the server core's invariants (rv_queue_check); a
 *     message seen FINISHED stays so within one incarnation; the core's
 *     lost count stays 0;
 *   - no FIN'd message redelivered outside the documented window: a message
 *     the server had FINISHED at time t is delivered again only if the queue
 *     crashed within RV_QJOURNAL_SYNC_INTERVAL_NS +
 *     RV_SIM_DURABILITY_FIN_SYNC_SLACK_NS after t (and once per such crash);
 *   - no acknowledged message lost: after the last restart and heal, within
 *     RV_SIM_DURABILITY_LIVENESS_NS, every acknowledged body was delivered
 *     and FIN'd by a handler and the server has every message FINISHED.
 */
typedef struct rv_sim_durability_opts {
  uint64_t seed;
  int64_t virtual_ns;  /* the fault window (publishing, crashes, faults); default 30 s */
  int producers;       /* default 3 */
  int messages;        /* per producer; default 100 */
  int consumers;       /* default 2 */
  bool no_crashes;     /* no kills of the queue (network faults only) */
  bool no_net_faults;  /* no loss and no resets */
  /* test-only: the queue answers PUB OK before the message is synced
   * (rv_qsrv_opts.test_ack_before_sync); expect a lost-message violation. */
  bool ack_before_sync;
} rv_sim_durability_opts;

typedef struct rv_sim_durability_result {
  bool ok;
  char violation[256];
  int64_t violation_at;
  uint64_t hash, events;
  int64_t virtual_ns, wall_ns;
  uint64_t acknowledged;       /* bodies whose PUB returned OK */
  uint64_t publish_retries;    /* publishes retried after an error */
  uint64_t deliveries;         /* handler calls */
  uint64_t handler_fins;       /* handlers that returned FIN */
  uint64_t redelivered_after_fin; /* FIN'd then delivered again after a crash (allowed window) */
  uint64_t crashes;            /* kills of the queue process */
  uint64_t armed_crashes;      /* of which right after a publish reached the server */
  uint64_t restarts;
  uint64_t resets;             /* connections reset by the nemesis */
  uint64_t server_messages;    /* messages on the channel in the last incarnation */
  char trace[4096];
  char diagnosis[RV_SIM_DIAGNOSIS_MAX]; /* unravel's text at the first violation, or "" */
} rv_sim_durability_result;

/* Run one seed; as rv_sim_locks_run. */
int rv_sim_durability_run(const rv_sim_durability_opts *o, rv_sim_durability_result *r);

#define RV_SIM_SERVICE_REPLICAS_MAX 8
/* The crash nemesis (crashes on): a kill every 15-45 s of virtual time from 10 s until the
 * fault window closes (85% of the load), the process restarted after 1-5 s; a crash of
 * coord's or the queue's disk loses or tears unsynced writes with these probabilities. */
#define RV_SIM_SERVICE_CRASH_FIRST_NS (10 * RV_NS_PER_S)
#define RV_SIM_SERVICE_CRASH_EVERY_MIN_NS (15 * RV_NS_PER_S)
#define RV_SIM_SERVICE_CRASH_EVERY_MAX_NS (45 * RV_NS_PER_S)
#define RV_SIM_SERVICE_DOWN_MIN_NS RV_NS_PER_S
#define RV_SIM_SERVICE_DOWN_MAX_NS (5 * RV_NS_PER_S)
#define RV_SIM_SERVICE_DISK_FAULTS ((rv_sim_disk_faults){.lose_unsynced = 0.5, .torn_tail = 0.5, .lose_dir_ops = 0.5})
/* A replica's handler threads may exceed max_in_flight by this many (handlers finishing). */
#define RV_SIM_SERVICE_HANDLER_SLACK 10
/* A local wait-for cycle older than this many message timeouts is a lasting deadlock;
 * younger ones may be the transient ones the cancel fix breaks at the timeout. */
#define RV_SIM_SERVICE_DEADLOCK_TIMEOUTS 2
/* How often (virtual time) the replicas' registries are checked (deadlocks, threads) and
 * the queue's backlog looked at.  Each check snapshots every replica's registry, which
 * costs more as handler threads pile up: every 100 ms made it most of the incident's wall
 * time; a second is ample against bounds of tens of seconds. */
#define RV_SIM_SERVICE_CHECK_NS RV_NS_PER_S
/* After the first violation (a run that goes on to the end) only the figures are kept up
 * to date (most handler threads, cycles): this often. */
#define RV_SIM_SERVICE_FIGURES_NS (60 * RV_NS_PER_S)
/* After the load ends, every published event must be handled within this many message
 * timeouts plus RV_SIM_SERVICE_LIVENESS_EXTRA_NS; then no thread may wait for a lock
 * (local or distributed) longer than RV_SIM_SERVICE_WAIT_TIMEOUTS message timeouts. */
#define RV_SIM_SERVICE_LIVENESS_TIMEOUTS 4
#define RV_SIM_SERVICE_LIVENESS_EXTRA_NS (30 * RV_NS_PER_S)
#define RV_SIM_SERVICE_WAIT_TIMEOUTS 2

/*
 * "service": the incident (../shared/INCIDENT.md) in virtual time.  One coord
 * (the real server), one queue (the real server, no HTTP API), `replicas`
 * replicas of the reference service (the real rv_svc_start of src/svc, no
 * admin endpoint, rv_svc_tick every 100 ms), a load process (the demo's load
 * generator, svc/load.h) publishing "acct-K item-1 .. item-N" at `rate` per
 * second until virtual_ns, and a "platform team" process making
 * `config_writes` platform-wide writes of upstream.url (the real libravel
 * coord client) every config_every_ns from config_at_ns.  As in `ravel demo`
 * the service's own layer overrides upstream.url, so those writes change
 * nothing it sees.  Each bug of the service is a switch (bugs[], svc.h).
 * Properties (each on when its check_ flag is set):
 *   deadlock   no replica's local wait-for graph (obs/waitgraph.c, checked
 *              every RV_SIM_SERVICE_CHECK_NS) holds a cycle older than
 *              RV_SIM_SERVICE_DEADLOCK_TIMEOUTS message timeouts;
 *   threads    a replica's handler threads never exceed max_in_flight +
 *              RV_SIM_SERVICE_HANDLER_SLACK;
 *   fencing    per distributed lock, the holder's token in coord's lock table
 *              only increases and one token never has two holders (after every
 *              step that granted, released or lost a hold);
 *   liveness   every published event is handled within the liveness window
 *              after the load ends, and then no thread waits for a lock longer
 *              than RV_SIM_SERVICE_WAIT_TIMEOUTS message timeouts;
 *   detect     a replica reported a recursive read lock (expected with the
 *              detect fix and the release bug: the finding must be made);
 *   no_rebuild no replica rebuilt its client (expected with the rebuild fix:
 *              the platform writes change nothing the service sees).
 * On the first violation the result gets `ravel unravel`'s diagnosis of the
 * simulated world (sim/common.h, sim_diagnose), taken at that moment.
 */
typedef struct rv_sim_service_opts {
  uint64_t seed;
  int replicas;                 /* default 3 */
  bool bugs[RV_SVC_BUG_COUNT];  /* true: the bug (enum rv_svc_bug); all false: every fix */
  int64_t msg_timeout_ms;       /* default 30000: the real timeout, not compressed */
  int64_t max_in_flight;        /* per replica; default 50 */
  int64_t rate;                 /* events per second; default 15 */
  int64_t resources;            /* distinct resources (distributed locks); default 8 */
  int64_t items;                /* items per event; default 3 */
  int64_t upstream_latency_ms;  /* per item; default 30 (< 0: 0) */
  int64_t config_at_ns;         /* first platform write (virtual time); default 60 s */
  int64_t config_writes;        /* default 5 (< 0: none) */
  int64_t config_every_ns;      /* between platform writes; default 300 ms */
  int64_t virtual_ns;           /* load length; default 600 s; then the liveness window */
  bool partitions;              /* nemeses cutting replicas from coord and from the queue */
  /* kill -9 of a random replica, coord or the queue every RV_SIM_SERVICE_CRASH_EVERY_MIN_NS..
   * _MAX_NS during the fault window, restarted 1-5 s later (coord and the queue over their
   * simulated disks, crashed with RV_SIM_SERVICE_DISK_FAULTS) */
  bool crashes;
  double loss;                  /* network segment loss during the fault window (0..0.9) */
  double resets_per_s;          /* connection resets per connection per virtual second, same window */
  bool stop_at_violation;       /* end the run at the first violation */
  bool check_deadlock, check_threads, check_fencing, check_liveness, check_detect,
      check_no_rebuild;
} rv_sim_service_opts;

typedef struct rv_sim_service_result {
  bool ok;
  char violation[512];
  int64_t violation_at;
  uint64_t hash, events;
  int64_t virtual_ns, wall_ns;
  uint64_t published;          /* events the queue acknowledged */
  uint64_t finished;           /* messages FIN'd on the queue */
  uint64_t timeouts;           /* queue: message timeouts */
  uint64_t platform_writes;    /* config writes coord accepted */
  uint64_t rebuilds;           /* clients rebuilt, all replicas */
  uint64_t recursive_reads;    /* recursive read locks reported, all replicas */
  uint64_t partitions;
  uint64_t crashes;            /* processes killed (kill -9) */
  uint64_t restarts;
  int max_handlers;            /* most handler threads seen in one replica */
  int64_t first_cycle_at;      /* virtual time a replica's wait-for cycle was first seen (-1: never) */
  int deadlocked_replicas;     /* replicas with a cycle when the run ended */
  char trace[4096];
  char diagnosis[RV_SIM_DIAGNOSIS_MAX]; /* unravel's text at the first violation, or "" */
} rv_sim_service_result;

/* Fill o with the defaults: every fix, the incident's timings (fields left 0 by a caller
 * get the same defaults), the checks deadlock, threads, fencing and liveness on. */
void rv_sim_service_defaults(rv_sim_service_opts *o);
int rv_sim_service_run(const rv_sim_service_opts *o, rv_sim_service_result *r);

#ifdef __cplusplus
}
#endif
#endif
