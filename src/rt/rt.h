/*
 * rt: ravel's runtime interface.
 *
 * Everything in ravel that blocks, reads a clock, starts a thread, draws a
 * random number or touches a socket goes through this header.  Code above
 * src/rt/ never calls pthread_*, clock_gettime, sleep, socket or rand itself
 * (tests/scripts/check_rt_seam.sh enforces it).  That seam is what lets the
 * same components run for real (the OS backend, rt_os.c: pthreads, sockets,
 * CLOCK_MONOTONIC) and, later, under a deterministic simulator with a virtual
 * clock and coroutines.
 *
 * The model, in one paragraph: every thread that uses rt has a record in the
 * process's thread registry (src/obs/registry.h) with a name, a role, an
 * optional task annotation and a "parker", a one-permit semaphore it sleeps
 * on.  Every blocking operation (lock waits, condition waits, sleeps, network
 * waits) is "publish what I wait for, then park until granted, cancelled, or
 * past a deadline".  Cancelling an rv_ctx unparks the threads waiting under
 * it, so every blocking call honours cancellation the same way.
 *
 * Errors are negative codes from one table (rv_strerror); 0 is success.
 */
#ifndef RAVEL_RT_H
#define RAVEL_RT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

#define RV_ERRORS(X)                                                          \
  X(RV_OK, 0, "ok")                                                           \
  X(RV_ECANCELED, -1, "context cancelled")                                    \
  X(RV_EDEADLINE, -2, "context deadline exceeded")                            \
  X(RV_ETIMEDOUT, -3, "operation deadline passed")                            \
  X(RV_EBUSY, -4, "resource busy")                                            \
  X(RV_EINVAL, -5, "invalid argument")                                        \
  X(RV_ENOMEM, -6, "out of memory")                                           \
  X(RV_EIO, -7, "i/o error")                                                  \
  X(RV_ECLOSED, -8, "connection closed by peer")                              \
  X(RV_ECONNREFUSED, -9, "connection refused")                                \
  X(RV_EADDR, -10, "cannot resolve or bind address")                          \
  X(RV_EDEADLK, -11, "operation would deadlock")                              \
  X(RV_ERANGE, -12, "value out of range")                                     \
  X(RV_ENOTFOUND, -13, "not found")                                           \
  X(RV_EPROTO, -14, "protocol error")                                         \
  X(RV_ELIMIT, -15, "limit reached")                                          \
  X(RV_EEXIST, -16, "file exists")                                            \
  X(RV_ENOSPC, -17, "no space left on device")                                \
  X(RV_ESTALE, -18, "file handle no longer valid (its process crashed)")

enum rv_err {
#define RV__ERR_ENUM(name, val, text) name = (val),
  RV_ERRORS(RV__ERR_ENUM)
#undef RV__ERR_ENUM
};

/* Text for an rv_err code; never NULL. */
const char *rv_strerror(int err);
/* Symbolic name of an rv_err code ("RV_ECANCELED"); never NULL. */
const char *rv_errname(int err);

/* ---- time ---------------------------------------------------------------- */

#define RV_NS_PER_US INT64_C(1000)
#define RV_NS_PER_MS INT64_C(1000000)
#define RV_NS_PER_S INT64_C(1000000000)
/* A deadline that never comes. */
#define RV_NO_DEADLINE INT64_MAX

/* Monotonic time in nanoseconds since an arbitrary origin. */
int64_t rv_now_ns(void);
/* Wall-clock time in nanoseconds since the Unix epoch (for logs and dumps). */
int64_t rv_wall_ns(void);

/* ---- raw mutex ----------------------------------------------------------- */
/*
 * An untracked mutex for short, non-blocking critical sections inside
 * infrastructure (the registry, metrics, contexts).  Never hold one across a
 * blocking call.  Application code uses rv_mutex (tracked, named) instead.
 */
typedef struct rv_rawmu {
  _Alignas(16) unsigned char opaque[48];
} rv_rawmu;

void rv_rawmu_init(rv_rawmu *m);
void rv_rawmu_destroy(rv_rawmu *m);
void rv_rawmu_lock(rv_rawmu *m);
void rv_rawmu_unlock(rv_rawmu *m);

/* ---- threads --------------------------------------------------------------- */

/* A thread's record in the registry; see src/obs/registry.h. */
typedef struct rv_thread rv_thread;
typedef struct rv_ctx rv_ctx;

#define RV_THREAD_NAME_MAX 32
#define RV_THREAD_ROLE_MAX 24
#define RV_TASK_MAX 128

/*
 * Start a named thread running fn(arg).  name and role are copied (truncated
 * to RV_THREAD_NAME_MAX/RV_THREAD_ROLE_MAX - 1 bytes).  The thread joins the
 * registry of the calling thread.  Returns 0 or an rv_err.
 */
int rv_thread_start(rv_thread **out, const char *name, const char *role,
                    void (*fn)(void *arg), void *arg);
/* Wait for the thread to end and release its record. */
int rv_thread_join(rv_thread *t);
/*
 * The calling thread's record.  A thread not started by rv_thread_start is
 * adopted on first use with the name "thread-<tid>"; rv_thread_adopt names it.
 */
rv_thread *rv_thread_self(void);
void rv_thread_adopt(const char *name, const char *role);
/* Release the record of an adopted thread before it exits. */
void rv_thread_forget(void);
/* Set (fmt non-NULL) or clear (NULL) the calling thread's task annotation. */
void rv_thread_set_task(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Per-thread slots: storage that belongs to one rv_thread.  Use them instead
 * of C's _Thread_local, which under the simulator would be shared by every
 * simulated thread of the one OS thread.  rv_thread_slot returns the calling
 * thread's slot `key`: `size` zeroed bytes allocated on first use (a key is
 * always asked with the same size) and freed with the thread; NULL on ENOMEM.
 */
enum rv_thread_slot_key {
  RV_SLOT_COORD_LAST_ERROR, /* libravel coord client: rv_coord_last_error */
  RV_SLOT_QUEUE_LAST_ERROR, /* libravel queue client: rv_queue_last_error */
  RV_THREAD_SLOTS_MAX = 8
};
void *rv_thread_slot(unsigned key, size_t size);
/* The registry-wide id of a thread (small integer, stable for its life). */
uint64_t rv_thread_id(const rv_thread *t);
/* The OS thread id (Linux tid) of a thread, for matching outside tools. */
int rv_thread_tid(const rv_thread *t);

/* ---- sleeping ----------------------------------------------------------- */

/*
 * Sleep for dur_ns, or until ctx (may be NULL) is cancelled or its deadline
 * passes.  Returns 0 after the full duration, else RV_ECANCELED/RV_EDEADLINE.
 */
int rv_sleep(rv_ctx *ctx, int64_t dur_ns);

/* ---- named, tracked locks --------------------------------------------------- */
/*
 * rv_mutex and rv_rwlock are implemented by ravel (src/rt/sync.c) rather than
 * wrapping pthreads so that (1) waits can be cancelled by a context, (2) the
 * registry knows every holder and waiter with its acquisition site, and
 * (3) the rwlock has Go's sync.RWMutex semantics: writer-preferring, so once a
 * writer waits, new readers block.  glibc's default rwlock prefers readers and
 * would hide exactly the incident ravel exists to show.
 *
 * The *_lock macros record __FILE__:__LINE__ as the acquisition site.
 */

#define RV_LOCK_NAME_MAX 48

/* A FIFO of parked threads (internal; see sync.c). */
typedef struct rv__waiter {
  struct rv__waiter *next, *prev;
  rv_thread *thread;
  bool granted;
  /* The hold a grant gives (NULL for a condition variable): the granter publishes it
   * and ends the published wait under the lock's raw mutex, so no snapshot shows a
   * thread still waiting for a lock it has been handed. */
  const struct rv__grant_hold *hold;
} rv__waiter;

typedef struct rv__waitq {
  rv__waiter *head, *tail;
} rv__waitq;

typedef struct rv_mutex {
  rv_rawmu mu;              /* guards the fields below */
  uint64_t id;              /* unique per process, for the registry */
  char name[RV_LOCK_NAME_MAX];
  rv_thread *owner;
  rv__waitq waiters;
} rv_mutex;

typedef struct rv_rwlock {
  rv_rawmu mu;
  uint64_t id;
  char name[RV_LOCK_NAME_MAX];
  int readers;              /* read holds outstanding */
  rv_thread *writer;        /* write holder, or NULL */
  int writers_waiting;      /* length of wq: while > 0, new readers queue */
  rv__waitq rq;             /* readers waiting for the writers to pass */
  rv__waitq wq;             /* writers waiting, FIFO */
} rv_rwlock;

typedef struct rv_cond {
  rv_rawmu mu;
  uint64_t id;
  char name[RV_LOCK_NAME_MAX];
  rv__waitq waiters;
} rv_cond;

void rv_mutex_init(rv_mutex *m, const char *name);
void rv_mutex_destroy(rv_mutex *m);
int rv__mutex_lock(rv_mutex *m, rv_ctx *ctx, const char *file, int line);
int rv__mutex_trylock(rv_mutex *m, const char *file, int line);
void rv_mutex_unlock(rv_mutex *m);
/* Lock, waiting as long as it takes. */
#define rv_mutex_lock(m) ((void)rv__mutex_lock((m), NULL, __FILE__, __LINE__))
/* Lock unless ctx ends first: 0, RV_ECANCELED or RV_EDEADLINE. */
#define rv_mutex_lock_ctx(m, ctx) rv__mutex_lock((m), (ctx), __FILE__, __LINE__)
/* 0 if taken, RV_EBUSY if not. */
#define rv_mutex_trylock(m) rv__mutex_trylock((m), __FILE__, __LINE__)

void rv_rwlock_init(rv_rwlock *rw, const char *name);
void rv_rwlock_destroy(rv_rwlock *rw);
int rv__rwlock_rdlock(rv_rwlock *rw, rv_ctx *ctx, const char *file, int line);
int rv__rwlock_wrlock(rv_rwlock *rw, rv_ctx *ctx, const char *file, int line);
void rv_rwlock_rdunlock(rv_rwlock *rw);
void rv_rwlock_wrunlock(rv_rwlock *rw);
#define rv_rwlock_rdlock(rw) ((void)rv__rwlock_rdlock((rw), NULL, __FILE__, __LINE__))
#define rv_rwlock_wrlock(rw) ((void)rv__rwlock_wrlock((rw), NULL, __FILE__, __LINE__))
#define rv_rwlock_rdlock_ctx(rw, ctx) rv__rwlock_rdlock((rw), (ctx), __FILE__, __LINE__)
#define rv_rwlock_wrlock_ctx(rw, ctx) rv__rwlock_wrlock((rw), (ctx), __FILE__, __LINE__)

void rv_cond_init(rv_cond *c, const char *name);
void rv_cond_destroy(rv_cond *c);
/*
 * Atomically release m and wait for a signal; m is held again on return,
 * whatever the result.  Returns 0 when signalled (or spuriously woken),
 * RV_ETIMEDOUT when deadline_ns (monotonic; RV_NO_DEADLINE for none) passes,
 * RV_ECANCELED / RV_EDEADLINE when ctx (may be NULL) ends.
 */
int rv__cond_wait(rv_cond *c, rv_mutex *m, rv_ctx *ctx, int64_t deadline_ns,
                  const char *file, int line);
#define rv_cond_wait(c, m, ctx) \
  rv__cond_wait((c), (m), (ctx), RV_NO_DEADLINE, __FILE__, __LINE__)
#define rv_cond_wait_until(c, m, ctx, deadline_ns) \
  rv__cond_wait((c), (m), (ctx), (deadline_ns), __FILE__, __LINE__)
void rv_cond_signal(rv_cond *c);
void rv_cond_broadcast(rv_cond *c);

/* ---- external waits ---------------------------------------------------------- */
/*
 * For waits rt does not perform itself (a distributed lock, an RPC reply):
 * publish that the calling thread waits on `what` (e.g. "dlock acct-42") so
 * dumps and diagnosis can see it.  Pair every begin with an end.
 */
void rv__wait_external_begin(const char *what, const char *file, int line);
#define rv_wait_external_begin(what) rv__wait_external_begin((what), __FILE__, __LINE__)
void rv_wait_external_end(void);

/* ---- random numbers ---------------------------------------------------------- */

/* A seeded generator (xoshiro256**): the same seed gives the same sequence. */
typedef struct rv_rng {
  uint64_t s[4];
} rv_rng;

void rv_rng_seed(rv_rng *r, uint64_t seed);
uint64_t rv_rng_next(rv_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t rv_rng_below(rv_rng *r, uint64_t n);
/* A seed from the OS's entropy source, for when no seed is given. */
uint64_t rv_rng_os_seed(void);

/* ---- TCP ------------------------------------------------------------------ */
/*
 * Connections with deadlines.  Every call takes a context (may be NULL); a
 * per-connection read and write deadline (Go's SetReadDeadline) can be set as
 * well.  Cancelling the context wakes a blocked call with RV_ECANCELED; a
 * context deadline gives RV_EDEADLINE; the connection's own deadline gives
 * RV_ETIMEDOUT.  A timed-out or cancelled call leaves the connection usable.
 */
typedef struct rv_conn rv_conn;
typedef struct rv_listener rv_listener;

int rv_tcp_connect(rv_conn **out, const char *host, uint16_t port, rv_ctx *ctx);
/* Read up to len bytes: >0 bytes read, 0 at end of stream, <0 an rv_err. */
ssize_t rv_conn_read(rv_conn *c, void *buf, size_t len, rv_ctx *ctx);
/* Read exactly len bytes; RV_ECLOSED if the stream ends first. */
int rv_conn_read_full(rv_conn *c, void *buf, size_t len, rv_ctx *ctx);
/* Write all len bytes. */
int rv_conn_write_all(rv_conn *c, const void *buf, size_t len, rv_ctx *ctx);
/* Monotonic deadlines for later reads/writes; RV_NO_DEADLINE clears. */
void rv_conn_set_read_deadline(rv_conn *c, int64_t deadline_ns);
void rv_conn_set_write_deadline(rv_conn *c, int64_t deadline_ns);
/* Shut down the write side (send FIN), keep reading. */
int rv_conn_shutdown_write(rv_conn *c);
void rv_conn_close(rv_conn *c);
/* "host:port" of the peer, for logs. */
const char *rv_conn_peer(const rv_conn *c);

/* Listen on host:port (port 0 picks a free port). */
int rv_tcp_listen(rv_listener **out, const char *host, uint16_t port, int backlog);
uint16_t rv_listener_port(const rv_listener *l);
int rv_listener_accept(rv_listener *l, rv_conn **out, rv_ctx *ctx);
void rv_listener_close(rv_listener *l);

/* ---- process ---------------------------------------------------------------- */

/* The process id (the simulated process's id under the simulator). */
int rv_getpid(void);
/* The host's name into buf (NUL-terminated, cut to len - 1), "localhost" if unknown; the
 * simulated process's name under the simulator (its host name there). */
void rv_gethostname(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
