/*
 * The thread and lock registry: who is running, what each thread holds and
 * what it waits for, since when and from which line of code.
 *
 * Each thread owns its record and is the only writer of it; dumpers read it
 * under the record's raw mutex, which is never held across a blocking call.
 * That is why a dump can always be taken, even when every application lock
 * in the process is deadlocked.  The per-lock view (holders and waiters of a
 * lock) is derived from the per-thread records at snapshot time.
 */
#ifndef RAVEL_OBS_REGISTRY_H
#define RAVEL_OBS_REGISTRY_H

#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a thread is blocked in. */
#define RV_WAIT_KINDS(X)                                                       \
  X(RV_WAIT_NONE, "running")                                                   \
  X(RV_WAIT_MUTEX, "mutex.lock")                                               \
  X(RV_WAIT_RDLOCK, "rwlock.rdlock")                                           \
  X(RV_WAIT_WRLOCK, "rwlock.wrlock")                                           \
  X(RV_WAIT_COND, "cond.wait")                                                 \
  X(RV_WAIT_SLEEP, "sleep")                                                    \
  X(RV_WAIT_NET_CONNECT, "net.connect")                                        \
  X(RV_WAIT_NET_READ, "net.read")                                              \
  X(RV_WAIT_NET_WRITE, "net.write")                                            \
  X(RV_WAIT_ACCEPT, "net.accept")                                              \
  X(RV_WAIT_JOIN, "thread.join")                                               \
  X(RV_WAIT_EXTERNAL, "external")

typedef enum rv_wait_kind {
#define RV__WK_ENUM(name, text) name,
  RV_WAIT_KINDS(RV__WK_ENUM)
#undef RV__WK_ENUM
  RV_WAIT_KIND_COUNT
} rv_wait_kind;

const char *rv_wait_kind_name(rv_wait_kind k);

typedef enum rv_lock_kind { RV_LOCK_MUTEX, RV_LOCK_RWLOCK } rv_lock_kind;
typedef enum rv_lock_mode { RV_MODE_WRITE, RV_MODE_READ } rv_lock_mode;

/* Bounds: a thread records at most this many holds (the rest are counted). */
#define RV_HELD_MAX 32
/* Text of an external wait ("dlock acct-42") or of a waited-on object. */
#define RV_WAIT_WHAT_MAX 96
/* Recursive-read reports kept for dumps (oldest dropped first). */
#define RV_REPORTS_MAX 64
/*
 * Lock-order checking (see "Lock order" in docs/observability.md).  A lock
 * class is a lock name: every rv_mutex / rv_rwlock initialised with the same
 * name is one class.  Bounds of the per-registry order graph: past them
 * nothing more is recorded and the overflow is counted.
 */
#define RV_LOCKORDER_CLASSES_MAX 1024 /* distinct lock names */
#define RV_LOCKORDER_EDGES_MAX 4096   /* distinct "A held while B acquired" pairs */
#define RV_LOCKORDER_REPORTS_MAX 64   /* inversion reports kept for dumps (oldest dropped first) */
#define RV_LOCKORDER_CHAIN_MAX 8      /* edges of an earlier path kept in one report */
#define RV_LO_THREAD_CACHE 16         /* per-thread cache entries of the check (power of 2) */

typedef struct rv_hold {
  uint64_t lock_id;
  char lock_name[RV_LOCK_NAME_MAX];
  rv_lock_kind kind;
  rv_lock_mode mode;
  const char *file; /* string literal from __FILE__ */
  int line;
  int64_t since_ns; /* monotonic */
  int32_t class_id; /* lock-order class, -1 until the checker resolves it */
} rv_hold;

typedef struct rv_wait {
  rv_wait_kind kind;
  uint64_t obj_id;  /* lock or condition id; 0 if none */
  char what[RV_WAIT_WHAT_MAX];
  const char *file;
  int line;
  int64_t since_ns;
} rv_wait;

/* The record of one thread.  Fields below `mu` are guarded by it. */
struct rv_thread {
  struct rv_thread *next, *prev; /* registry list, guarded by the registry */
  struct rv_registry *reg;
  uint64_t id;
  int tid;
  bool adopted;
  int64_t started_ns;
  char name[RV_THREAD_NAME_MAX];
  char role[RV_THREAD_ROLE_MAX];
  void *os; /* backend state (the parker, the OS handle) */

  rv_rawmu mu;
  char task[RV_TASK_MAX];
  rv_wait wait;
  rv_hold held[RV_HELD_MAX];
  int nheld; /* written under mu with atomic stores: the owner may read it without mu */
  uint32_t held_dropped;
  /* Bumped under mu (with an atomic store) by every change of wait or held, so a
   * snapshot can tell which threads changed while it was being taken. */
  uint64_t seq;

  /* Owner-only: the class the lock-order check resolved for the lock about to be held. */
  uint64_t lo_pending_lock_id;
  int32_t lo_pending_class;
  /*
   * Owner-only caches of the lock-order check, so that its steady state takes
   * no registry-wide lock: the classes of recently acquired locks (by lock
   * id) and order pairs known to be in the graph (edges are never removed).
   */
  uint64_t lo_class_lock[RV_LO_THREAD_CACHE];
  int32_t lo_class_of[RV_LO_THREAD_CACHE];
  uint64_t lo_known_edge[RV_LO_THREAD_CACHE]; /* (from << 32 | to) + 1; 0 = empty */

  void *slots[RV_THREAD_SLOTS_MAX]; /* rv_thread_slot: the owner's alone, no lock */
};

typedef enum rv_recursive_policy {
  RV_RECURSIVE_OFF,   /* say nothing */
  RV_RECURSIVE_WARN,  /* log, count, keep a report for dumps (default) */
  RV_RECURSIVE_ABORT, /* log and abort the process */
} rv_recursive_policy;

/* A thread read-locked an rwlock it already held for reading. */
typedef struct rv_recursive_report {
  uint64_t thread_id;
  char thread_name[RV_THREAD_NAME_MAX];
  char task[RV_TASK_MAX];
  uint64_t lock_id;
  char lock_name[RV_LOCK_NAME_MAX];
  const char *first_file;
  int first_line;
  const char *second_file;
  int second_line;
  int64_t at_wall_ns;
} rv_recursive_report;

typedef enum rv_lockorder_policy {
  RV_LOCKORDER_OFF,   /* record nothing, say nothing */
  RV_LOCKORDER_WARN,  /* log, count, keep a report for dumps (default) */
  RV_LOCKORDER_ABORT, /* log and abort the process */
} rv_lockorder_policy;

/* One "held `held_lock` while acquiring `acquiring_lock`" observation. */
typedef struct rv_lockorder_step {
  uint64_t thread_id;
  char thread_name[RV_THREAD_NAME_MAX];
  char held_lock[RV_LOCK_NAME_MAX];
  const char *held_file;
  int held_line;
  char acquiring_lock[RV_LOCK_NAME_MAX];
  const char *acquiring_file;
  int acquiring_line;
} rv_lockorder_step;

/*
 * A potential deadlock: `now` acquires B while holding A, and earlier
 * acquisitions (`prior`, in order) took B -> ... -> A.  A direct inversion
 * has one prior step (A acquired while holding B).
 */
typedef struct rv_lockorder_report {
  rv_lockorder_step now;
  char task[RV_TASK_MAX];
  size_t nprior;
  size_t prior_more; /* steps of a longer path not kept (over RV_LOCKORDER_CHAIN_MAX) */
  rv_lockorder_step prior[RV_LOCKORDER_CHAIN_MAX];
  int64_t at_wall_ns;
} rv_lockorder_report;

/* The size of the order graph and what did not fit in it. */
typedef struct rv_lockorder_stats {
  uint64_t reports_total;
  uint32_t classes;
  uint32_t edges;
  uint64_t classes_overflow; /* lookups of a new name past RV_LOCKORDER_CLASSES_MAX */
  uint64_t edges_overflow;   /* new pairs not recorded past RV_LOCKORDER_EDGES_MAX */
} rv_lockorder_stats;

/*
 * The one-line plain-language explanation of a report (what dumps show as
 * "text"); returns what snprintf returns.
 */
int rv_lockorder_report_text(const rv_lockorder_report *r, char *buf, size_t n);

typedef struct rv_registry rv_registry;

/* Log hook: receives one already formatted logfmt-style message. */
typedef void (*rv_registry_log_fn)(void *arg, const char *level, const char *msg);

/* The registry of the calling process (the simulated process under sim). */
rv_registry *rv_registry_current(void);
rv_registry *rv_registry_new(void);
void rv_registry_free(rv_registry *reg);

void rv_registry_set_recursive_policy(rv_registry *reg, rv_recursive_policy p);
rv_recursive_policy rv_registry_recursive_policy(rv_registry *reg);
/* Parse "off" | "warn" | "abort"; -1 if unknown. */
int rv_recursive_policy_parse(const char *s);
/* Where warnings go; default: a logfmt line on stderr. */
void rv_registry_set_log(rv_registry *reg, rv_registry_log_fn fn, void *arg);
uint64_t rv_registry_recursive_count(rv_registry *reg);

void rv_registry_set_lockorder_policy(rv_registry *reg, rv_lockorder_policy p);
rv_lockorder_policy rv_registry_lockorder_policy(rv_registry *reg);
/* Parse "off" | "warn" | "abort"; -1 if unknown. */
int rv_lockorder_policy_parse(const char *s);
/* Lock-order inversions reported so far. */
uint64_t rv_registry_lockorder_count(rv_registry *reg);
void rv_registry_lockorder_stats(rv_registry *reg, rv_lockorder_stats *out);

/* ---- snapshots ------------------------------------------------------------ */

typedef struct rv_thread_snap {
  uint64_t id;
  int tid;
  char name[RV_THREAD_NAME_MAX];
  char role[RV_THREAD_ROLE_MAX];
  char task[RV_TASK_MAX];
  rv_wait wait;
  rv_hold held[RV_HELD_MAX];
  int nheld;
  uint32_t held_dropped;
  int64_t started_ns;
  /* The thread took, released or began or ended a wait while the snapshot was being
   * taken: its record may not hold together with the others', and it is not blocked
   * (a blocked thread does not change), so its wait makes no edge of a wait-for graph. */
  bool moving;
} rv_thread_snap;

typedef struct rv_snapshot {
  int pid;
  int64_t taken_wall_ns;
  int64_t taken_mono_ns;
  size_t nthreads;
  rv_thread_snap *threads;
  size_t nreports;
  rv_recursive_report *reports;
  uint64_t recursive_total;
  size_t nlockorder; /* the last RV_LOCKORDER_REPORTS_MAX lock-order reports, oldest first */
  rv_lockorder_report *lockorder;
  rv_lockorder_stats lockorder_stats;
} rv_snapshot;

/* Copy every record; never takes an application lock.  NULL on ENOMEM. */
rv_snapshot *rv_snapshot_take(rv_registry *reg);
void rv_snapshot_free(rv_snapshot *s);

/* ---- the local wait-for graph ------------------------------------------------ */

/* One step of a cycle: thread `thread` waits for `lock` held or queued by the next step. */
typedef struct rv_cycle_step {
  size_t thread;          /* index into snapshot->threads */
  const rv_hold *hold;    /* what the next thread holds that blocks this one; NULL if it only queues */
} rv_cycle_step;

typedef struct rv_deadlock {
  size_t nsteps;
  rv_cycle_step *steps;   /* steps[i] waits for steps[(i+1) % n] */
  size_t nblocked;        /* other threads waiting, directly or not, on the cycle */
} rv_deadlock;

typedef struct rv_deadlocks {
  size_t n;
  rv_deadlock *items;
} rv_deadlocks;

/* Find the cycles in the wait-for graph of a snapshot (one per strongly connected component). */
rv_deadlocks *rv_deadlocks_find(const rv_snapshot *s);
void rv_deadlocks_free(rv_deadlocks *d);

/* ---- hooks used by rt (not for application code) ------------------------------ */

uint64_t rv__registry_next_lock_id(rv_registry *reg);
void rv__registry_add_thread(rv_registry *reg, rv_thread *t);
void rv__registry_remove_thread(rv_thread *t);
/* Free the thread's rv_thread_slot storage (the backends, when they free a record). */
void rv__thread_slots_free(rv_thread *t);
void rv__hold_add(rv_thread *t, uint64_t lock_id, const char *lock_name, rv_lock_kind kind,
                  rv_lock_mode mode, const char *file, int line);
void rv__hold_remove(rv_thread *t, uint64_t lock_id, rv_lock_mode mode);
/* If t already holds lock_id for reading, apply the recursive-read policy. */
void rv__check_recursive_read(rv_thread *t, uint64_t lock_id, const char *lock_name,
                              const char *file, int line);
/*
 * Before t tries to take lock `lock_name` (blocking acquisitions only): record
 * "held class -> this class" for each lock t holds and apply the lock-order
 * policy to a new pair that closes a cycle.  Callers skip it when t holds
 * nothing (rv__holds_any).
 */
void rv__check_lock_order(rv_thread *t, uint64_t lock_id, const char *lock_name,
                          const char *file, int line);
static inline bool rv__holds_any(const rv_thread *t) {
  return __atomic_load_n(&t->nheld, __ATOMIC_RELAXED) > 0;
}
void rv__wait_begin(rv_thread *t, rv_wait_kind kind, uint64_t obj_id, const char *what,
                    const char *file, int line);
void rv__wait_end(rv_thread *t);

#ifdef __cplusplus
}
#endif
#endif
