/*
 * svc: the reference service from the incident (../shared/INCIDENT.md), on
 * libravel.  `ravel svc --replica N` runs one replica.
 *
 * Per event "RESOURCE ITEM ITEM ...": take the distributed lock of RESOURCE
 * (the wait honours the handler's context), then for each item obtain the
 * upstream client from a config-driven cache (read-locks the tracked,
 * writer-preferring rwlock "client-cache"), make a simulated upstream call
 * (rv_sleep of upstream_latency_ms under the handler's context), release the
 * client; release the lock; FIN.
 *
 * Every contributing cause of the incident is a switch (bug = true):
 *   release  the client releases run at function exit (Go's defer in a loop)
 *            instead of at the end of each iteration;
 *   rebuild  the cache rebuilds on every write to the platform and service
 *            layers that names upstream.url (raw watch), not only on an
 *            effective change;
 *   cancel   the handler's context is not cancelled when the queue says the
 *            message timed out;
 *   held     a timed-out message frees its in-flight slot;
 *   detect   recursive read detection off instead of "warn".
 *
 * Threads: the consumer's reader and one handler thread per message
 * ("handler-N"), the coord session's keepalive, the cache's watch
 * ("coord-watch", which takes the write lock to swap the client), and the
 * admin HTTP server (libmicrohttpd's thread).
 */
#ifndef RAVEL_SVC_SVC_H
#define RAVEL_SVC_SVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RV_SVC_DEFAULT_SERVICE "billing"
#define RV_SVC_DEFAULT_TOPIC "events"
#define RV_SVC_DEFAULT_CHANNEL "svc"
#define RV_SVC_DEFAULT_MAX_IN_FLIGHT 50
#define RV_SVC_DEFAULT_MSG_TIMEOUT_MS 5000
#define RV_SVC_DEFAULT_UPSTREAM_LATENCY_MS 20
/* The name of the cache's rwlock, as dumps and metrics show it. */
#define RV_SVC_CACHE_LOCK "client-cache"
/* The config key the upstream client is built from. */
#define RV_SVC_UPSTREAM_KEY "upstream.url"
/* Items handled per event (more are ignored), and bytes of an event read. */
#define RV_SVC_ITEMS_MAX 128
#define RV_SVC_EVENT_MAX 4096
/* TTL of the replica's coord session. */
#define RV_SVC_SESSION_TTL_MS 10000
/*
 * A lost session (coord restarted, or the replica was cut off longer than the
 * TTL) is replaced by a new one from rv_svc_tick, at most once per
 * RV_SVC_SESSION_RETRY_MS.  The lost ones stay allocated until the replica
 * stops (a stuck handler may still hold a lock handle of one), so a process
 * replaces its session at most RV_SVC_SESSIONS_MAX - 1 times; past that it
 * logs an error and needs a restart.
 */
#define RV_SVC_SESSION_RETRY_MS 1000
#define RV_SVC_SESSIONS_MAX 64
/*
 * Per-replica history, served at GET /debug/history on the admin endpoint:
 * rv_svc_tick takes one sample about every RV_SVC_HISTORY_INTERVAL_MS and
 * keeps the last RV_SVC_HISTORY_MAX of them in memory (900: the last 15
 * minutes at one a second, ~80 bytes each); older samples are overwritten.
 *
 *   {"service": "billing", "replica": "1", "interval_ms": 1000,
 *    "samples": [{"t_ms": unix ms (wall clock), "rate": messages finished per
 *                 second, "handler_threads", "cache_waiters" (threads waiting
 *                 for the client-cache rwlock), "dlock_waits" (distributed
 *                 lock acquisitions in progress), "in_flight", "held" (slots
 *                 the queue holds for this consumer), "timeouts", "late_fins",
 *                 "rebuilds" (the last three cumulative)}, ...]}   oldest first
 */
#define RV_SVC_HISTORY_MAX 900
#define RV_SVC_HISTORY_INTERVAL_MS 1000
#define RV_SVC_HISTORY_PATH "/debug/history"

/* The incident's contributing causes; each one's fix is the default. */
enum rv_svc_bug {
  RV_SVC_BUG_RELEASE,
  RV_SVC_BUG_REBUILD,
  RV_SVC_BUG_CANCEL,
  RV_SVC_BUG_HELD,
  RV_SVC_BUG_DETECT,
  RV_SVC_BUG_COUNT
};

/* "release", "rebuild", ...; NULL for an out-of-range value. */
const char *rv_svc_bug_name(enum rv_svc_bug b);
/* The bug named s, or -1. */
int rv_svc_bug_parse(const char *s);

/*
 * Periodic snapshots: a preStop hook (ravel grab --then) cannot run when a
 * replica crashes or is OOM-killed, so a replica can also write its own
 * evidence every snapshot_every_ms from rv_svc_tick: a folder
 * SNAPSHOT_DIR/SERVICE-REPLICA/snap-UNIXMS/ with threads.txt, threads.json,
 * locks.txt, metrics.txt and history.json (the files, names and formats of a
 * process folder of `ravel grab`).  A folder appears whole (written under a
 * .tmp name, then renamed); the newest snapshot_keep are kept.
 */
#define RV_SVC_SNAPSHOT_EVERY_MS 10000
#define RV_SVC_SNAPSHOT_KEEP 6

typedef struct rv_svc_opts {
  const char *service;            /* default RV_SVC_DEFAULT_SERVICE */
  int replica;                    /* >= 1 */
  const char *coord_host;         /* default 127.0.0.1 */
  uint16_t coord_port;            /* default 7400 */
  const char *queue_host;         /* default 127.0.0.1 */
  uint16_t queue_port;            /* default 4150 */
  uint16_t admin_port;            /* 0: a free port */
  const char *topic, *channel;    /* defaults above */
  int64_t max_in_flight;          /* 0: default */
  int64_t msg_timeout_ms;         /* 0: default */
  int64_t upstream_latency_ms;    /* < 0: default; 0 is allowed */
  bool bugs[RV_SVC_BUG_COUNT];    /* true: the bug; false: its fix */
  const char *snapshot_dir;       /* periodic snapshots (below); NULL: off */
  int64_t snapshot_every_ms;      /* 0: RV_SVC_SNAPSHOT_EVERY_MS */
  int snapshot_keep;              /* 0: RV_SVC_SNAPSHOT_KEEP */
  /* No admin HTTP endpoint (no /metrics, /debug/..., history route): the
   * simulator runs replicas this way, as libmicrohttpd's threads cannot run
   * there (docs/sim.md); rv_svc_admin_port then returns 0. */
  bool no_admin;
  /* Where the replica logs; NULL: its own log, INFO and above on stderr.
   * Not freed by rv_svc_stop (the caller owns it). */
  struct rv_log *log;
} rv_svc_opts;

typedef struct rv_svc rv_svc;

/*
 * Start the admin endpoint, open the coord session, the config cache and the
 * consumer, and wait (bounded by connect_timeout_ms) until the consumer is
 * subscribed.  0, or an rv_err with why filled in.
 */
int rv_svc_start(rv_svc **out, const rv_svc_opts *o, int64_t connect_timeout_ms, char *why,
                 size_t whylen);
uint16_t rv_svc_admin_port(const rv_svc *s);
/* How many recursive read locks this replica's registry has reported (the detect fix). */
uint64_t rv_svc_recursive_reads(const rv_svc *s);
/* Upstream clients the config watcher rebuilt after the first build. */
uint64_t rv_svc_rebuilds(const rv_svc *s);
/* Call every 100 ms or so from one thread: updates ravel_svc_messages_per_second
 * and, about once a second, appends a sample to the history (see above). */
void rv_svc_tick(rv_svc *s);
/*
 * Stop consuming, wait for the handlers (cancelled after the consumer's stop
 * timeout), then close the cache, the session, the client and the admin
 * endpoint, and free.  Returns 0, or RV_ETIMEDOUT when handlers would not
 * stop (deadlocked on the client cache): then nothing they may touch is
 * freed and the process should exit.
 */
int rv_svc_stop(rv_svc *s);

#ifdef __cplusplus
}
#endif
#endif
