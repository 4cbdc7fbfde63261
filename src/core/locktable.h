/*
 * locktable: coord's sessions and named locks as a pure state machine.
 *
 * No syscalls, no clock, no threads, no globals: time comes in as now_ns on
 * every call that needs it, and effects on other clients (a waiter granted
 * by someone's release, a waiter timed out, a session expired) go out as
 * events appended to a caller-owned rv_lt_events list.  The server shell
 * turns events into replies to the right blocked connections; a simulator
 * drives the same calls with virtual time.  The model is explained at the
 * top of locktable.c; the short version:
 *
 *  - A session (TTL, identity) lives while keepalives arrive.  It expires
 *    when now >= last_keepalive + ttl, detected by rv_lt_tick.  Calls that
 *    name an expired-but-not-yet-ticked session get RV_LT_EEXPIRED.
 *  - A lock has at most one holder (a session + a fencing token) and a FIFO
 *    of waiters.  Acquire tries, or queues with or without a deadline.
 *    Several waiters of one session may queue for one lock (many handler
 *    threads of one process), and a session waits behind its own hold: locks
 *    are not reentrant.
 *  - Fencing tokens come from one table-wide counter, so they increase
 *    strictly per lock (and globally) across the table's life; restarts are
 *    covered by token_floor and the batch reservation protocol below.
 *  - Release is checked against session and token; a stale release never
 *    frees anything.  A holder's expiry can hold the lock back for a
 *    lock-delay (Chubby) before the next waiter gets it.
 *
 * Token persistence (the shell's side):
 *   1. At start, create the table with token_floor = the ceiling last made
 *      durable (0 on first start).  Every token issued will be > it.
 *   2. After each batch of calls, if rv_lt_token_persist_wanted() says so,
 *      write its ceiling durably, then call rv_lt_token_persisted().
 *   3. Announce a grant (reply to the client) only if its token is
 *      <= rv_lt_token_durable(); otherwise hold the reply until step 2 has
 *      covered it.  The table asks for a fresh range while half of the last
 *      one is still unused, so in steady state no grant waits for a write.
 *
 * Pointers in views passed to callbacks or filled by *_get calls stay valid
 * until the next call that changes the table.
 */
#ifndef RAVEL_CORE_LOCKTABLE_H
#define RAVEL_CORE_LOCKTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits ---------------------------------------------------------------- */

#define RV_LT_MAX_SESSIONS_DEFAULT 10000
#define RV_LT_MAX_LOCKS_DEFAULT 100000
#define RV_LT_MAX_WAITERS_PER_LOCK_DEFAULT 4096
#define RV_LT_MAX_WAITERS_DEFAULT 100000
/* Lock names: 1..RV_LT_NAME_MAX_BYTES of printable ASCII other than space,
 * quotes and backslash (they appear in logs, metrics labels and dumps). */
#define RV_LT_NAME_MAX_BYTES 256
/* Holder and waiter descriptions ("thread 12 handling msg 0a3f"): printable,
 * spaces and UTF-8 allowed, no control bytes. */
#define RV_LT_DESC_MAX_BYTES 256
/* Session identity: service (required), replica and host: name rules. */
#define RV_LT_IDENT_MAX_BYTES 128
#define RV_LT_URL_MAX_BYTES 256
#define RV_LT_TTL_MIN_NS (INT64_C(10) * 1000000)             /* 10 ms */
#define RV_LT_TTL_MAX_NS (INT64_C(3600) * 1000000000)        /* 1 h */
#define RV_LT_LOCK_DELAY_MAX_NS (INT64_C(60) * 1000000000)   /* 1 min, as Chubby */
/* Tokens reserved per durable write of the high-water mark. */
#define RV_LT_TOKEN_RESERVE_DEFAULT 1024
/* Tokens fit a RESP integer. */
#define RV_LT_TOKEN_MAX ((uint64_t)INT64_MAX)
/* token_floor may use at most half the token space. */
#define RV_LT_TOKEN_FLOOR_MAX (RV_LT_TOKEN_MAX / 2)
/* A deadline that never comes. */
#define RV_LT_NO_DEADLINE INT64_MAX
/* Bytes of rv_lt_errmsg's buffer and of an identity summary
 * ("service/replica pid N @host": three identity fields and a pid). */
#define RV_LT_ERRMSG_MAX 512
#define RV_LT_WHO_MAX (3 * RV_LT_IDENT_MAX_BYTES + 48)

/* ---- errors ------------------------------------------------------------------ */
/*
 * Negative codes from one table.  rv_lt_errcode() is a short word for a RESP
 * error ("-STALE ..."), rv_lt_strerror() a fixed sentence, and
 * rv_lt_errmsg(lt) the specific message of the last failed call (which lock,
 * which limit, what to do).
 */
#define RV_LT_ERRORS(X)                                                              \
  X(RV_LT_OK, 0, "OK", "ok")                                                         \
  X(RV_LT_EINVAL, -1, "ERR", "invalid argument")                                     \
  X(RV_LT_EBADNAME, -2, "BADNAME", "invalid lock name")                              \
  X(RV_LT_EBADDESC, -3, "BADDESC", "invalid description")                            \
  X(RV_LT_EBADIDENT, -4, "BADIDENT", "invalid session identity")                     \
  X(RV_LT_EBADTTL, -5, "BADTTL", "session TTL out of range")                         \
  X(RV_LT_EBADDELAY, -6, "BADDELAY", "lock delay out of range")                      \
  X(RV_LT_ENOSESSION, -7, "NOSESSION", "no such session")                            \
  X(RV_LT_EEXPIRED, -8, "EXPIRED", "session expired")                                \
  X(RV_LT_ENOLOCK, -9, "NOLOCK", "no such lock")                                     \
  X(RV_LT_ENOTHELD, -10, "NOTHELD", "lock is not held")                              \
  X(RV_LT_ENOTOWNER, -11, "NOTOWNER", "lock is held by another session")             \
  X(RV_LT_ESTALE, -12, "STALE", "stale fencing token")                               \
  X(RV_LT_ENOWAITER, -13, "NOWAITER", "no such waiter")                              \
  X(RV_LT_ESESSIONS, -14, "LIMIT", "too many sessions")                              \
  X(RV_LT_ELOCKS, -15, "LIMIT", "too many locks")                                    \
  X(RV_LT_EWAITERS, -16, "LIMIT", "too many waiters on one lock")                    \
  X(RV_LT_EWAITERS_TOTAL, -17, "LIMIT", "too many waiters")                          \
  X(RV_LT_ETOKENS, -18, "TOKENS", "fencing tokens exhausted")                        \
  X(RV_LT_ENOMEM, -19, "OOM", "out of memory")

enum rv_lt_err {
#define RV__LT_ERR_ENUM(name, val, code, text) name = (val),
  RV_LT_ERRORS(RV__LT_ERR_ENUM)
#undef RV__LT_ERR_ENUM
};

const char *rv_lt_strerror(int err);
const char *rv_lt_errcode(int err);
const char *rv_lt_errname(int err);

/* ---- types ------------------------------------------------------------------- */

typedef struct rv_lt rv_lt;

/* Bytes in, not NUL-terminated (RESP arguments are not). */
typedef struct rv_lt_str {
  const char *ptr;
  size_t len;
} rv_lt_str;
#define RV_LT_STR(lit) ((rv_lt_str){(lit), sizeof(lit) - 1})

typedef struct rv_lt_opts {
  size_t max_sessions;
  size_t max_locks;            /* lock records alive: held, awaited or in lock-delay */
  size_t max_waiters_per_lock;
  size_t max_waiters;          /* across all locks */
  uint64_t token_floor;        /* every token issued is > this; <= RV_LT_TOKEN_FLOOR_MAX */
  uint64_t token_reserve;      /* tokens per durable reservation, >= 1 */
  uint64_t session_id_floor;   /* session ids are > this (e.g. boot_count << 32) */
  uint64_t hash_seed[2];       /* keys the lock-name hash (flooding resistance) */
} rv_lt_opts;

/* Who a session is, as given when it opens. */
typedef struct rv_lt_identity {
  rv_lt_str service;   /* required */
  rv_lt_str replica;   /* optional */
  rv_lt_str host;      /* optional */
  rv_lt_str admin_url; /* optional: where its /debug lives */
  int64_t pid;         /* >= 0; 0 when unknown */
} rv_lt_identity;

/* The same, as stored (NUL-terminated, "" when not given). */
typedef struct rv_lt_identity_view {
  const char *service;
  const char *replica;
  const char *host;
  const char *admin_url;
  int64_t pid;
} rv_lt_identity_view;

enum rv_lt_mode {
  RV_LT_TRY = 1,  /* grant now or report RV_LT_BUSY */
  RV_LT_WAIT = 2, /* grant now or queue until deadline_ns (RV_LT_NO_DEADLINE: until withdrawn) */
};

typedef struct rv_lt_acquire_req {
  uint64_t session_id;
  rv_lt_str name;
  rv_lt_str description;  /* may be empty */
  int mode;               /* enum rv_lt_mode */
  int64_t deadline_ns;    /* RV_LT_WAIT only: absolute, same clock as now_ns */
  int64_t lock_delay_ns;  /* 0..RV_LT_LOCK_DELAY_MAX_NS: applied if this hold ends by expiry */
  uint64_t cookie;        /* the shell's handle (e.g. connection id), echoed in events */
} rv_lt_acquire_req;

/* Non-negative results of rv_lt_acquire. */
enum rv_lt_outcome {
  RV_LT_GRANTED = 1,  /* token, since_ns */
  RV_LT_QUEUED = 2,   /* waiter_id, position; a later event settles it */
  RV_LT_BUSY = 3,     /* RV_LT_TRY and not available: holder_* or delay_until_ns say why */
  RV_LT_TIMEDOUT = 4, /* RV_LT_WAIT whose deadline had already passed, not available */
};

typedef struct rv_lt_acquire_res {
  uint64_t token;
  int64_t since_ns;
  uint64_t waiter_id;
  size_t position;          /* 1 = first in line */
  uint64_t holder_session;  /* BUSY/TIMEDOUT/QUEUED: current holder, 0 if none */
  uint64_t holder_token;
  int64_t delay_until_ns;   /* BUSY/TIMEDOUT/QUEUED: lock-delay end, 0 if none */
} rv_lt_acquire_res;

enum rv_lt_event_type {
  RV_LT_EV_GRANTED = 1,     /* a waiter got the lock: answer its blocked client */
  RV_LT_EV_TIMED_OUT,       /* a waiter's deadline passed: answer "timed out" */
  RV_LT_EV_WAITER_DROPPED,  /* a waiter's session closed or expired */
  RV_LT_EV_SESSION_EXPIRED, /* no keepalive within the TTL */
  RV_LT_EV_LOCK_LOST,       /* a hold ended because its session expired */
};

enum rv_lt_drop_reason {
  RV_LT_DROP_SESSION_CLOSED = 1,
  RV_LT_DROP_SESSION_EXPIRED = 2,
};

typedef struct rv_lt_event {
  int type;               /* enum rv_lt_event_type */
  int reason;             /* WAITER_DROPPED: enum rv_lt_drop_reason */
  uint64_t session_id;
  uint64_t waiter_id;     /* GRANTED, TIMED_OUT, WAITER_DROPPED */
  uint64_t cookie;        /* GRANTED, TIMED_OUT, WAITER_DROPPED */
  uint64_t token;         /* GRANTED: the new token; LOCK_LOST: the lost one */
  int64_t at_ns;          /* when: the call's now, or the expiry instant */
  int64_t waited_ns;      /* GRANTED, TIMED_OUT, WAITER_DROPPED: time queued */
  int64_t delay_until_ns; /* LOCK_LOST: lock-delay end, 0 if none */
  char lock[RV_LT_NAME_MAX_BYTES + 1]; /* "" for SESSION_EXPIRED */
  char who[RV_LT_WHO_MAX]; /* the session: "service/replica pid N @host" */
} rv_lt_event;

/* A caller-owned, growable event list; reuse it across calls. */
typedef struct rv_lt_events {
  rv_lt_event *v;
  size_t len;
  size_t cap;
} rv_lt_events;

void rv_lt_events_init(rv_lt_events *ev);
void rv_lt_events_clear(rv_lt_events *ev);
void rv_lt_events_free(rv_lt_events *ev);

/* ---- lifecycle --------------------------------------------------------------- */

void rv_lt_opts_default(rv_lt_opts *o);
/* Create a table (opts NULL: defaults).  RV_LT_OK, RV_LT_EINVAL or RV_LT_ENOMEM. */
int rv_lt_create(rv_lt **out, const rv_lt_opts *opts);
void rv_lt_destroy(rv_lt *lt);
/* The specific message of the last failed call on lt. */
const char *rv_lt_errmsg(const rv_lt *lt);

/* ---- sessions ---------------------------------------------------------------- */

int rv_lt_session_open(rv_lt *lt, int64_t now_ns, int64_t ttl_ns, const rv_lt_identity *id,
                       uint64_t *session_id);
/* Extend the session to now_ns + ttl; *expires_ns (may be NULL) gets the new end. */
int rv_lt_session_keepalive(rv_lt *lt, int64_t now_ns, uint64_t session_id,
                            int64_t *expires_ns);
/* End a session on request: its waiters are dropped and its locks released
 * to their next waiters (no lock-delay: the holder let go on purpose). */
int rv_lt_session_close(rv_lt *lt, int64_t now_ns, uint64_t session_id, rv_lt_events *ev);

/* ---- locks ------------------------------------------------------------------- */

/* Returns an rv_lt_outcome (> 0) or an error (< 0); *res is filled either way. */
int rv_lt_acquire(rv_lt *lt, int64_t now_ns, const rv_lt_acquire_req *req,
                  rv_lt_acquire_res *res);
/* Release a hold; the next waiter (if any) is granted, with an event. */
int rv_lt_release(rv_lt *lt, int64_t now_ns, uint64_t session_id, rv_lt_str name,
                  uint64_t token, rv_lt_events *ev);
/* Change the holder's description (what the holding thread now does). */
int rv_lt_describe(rv_lt *lt, int64_t now_ns, uint64_t session_id, rv_lt_str name,
                   uint64_t token, rv_lt_str description);
/*
 * Take a waiter out of its queue (cancel, timeout on the client side,
 * connection closed).  session_id must be the waiter's session, or 0 to skip
 * the check.  Never grants anything: a lock with waiters is held or in
 * lock-delay, and removing a waiter changes neither.
 */
int rv_lt_withdraw(rv_lt *lt, int64_t now_ns, uint64_t session_id, uint64_t waiter_id);

/* ---- time -------------------------------------------------------------------- */

/*
 * Fire everything due at now_ns, in (deadline, arming order) order: session
 * expiries, waiter deadlines, lock-delay ends.  On RV_LT_ENOMEM nothing of
 * the timer being handled has happened; call again.
 */
int rv_lt_tick(rv_lt *lt, int64_t now_ns, rv_lt_events *ev);
/* When rv_lt_tick next has work: RV_LT_NO_DEADLINE if never. */
int64_t rv_lt_next_deadline(const rv_lt *lt);

/* ---- fencing tokens ---------------------------------------------------------- */

/* The last token issued (token_floor before the first grant). */
uint64_t rv_lt_token_last(const rv_lt *lt);
/* The ceiling the shell last reported durable (token_floor at first). */
uint64_t rv_lt_token_durable(const rv_lt *lt);
/* Should a new ceiling be persisted?  If so, *ceiling is the one to write. */
bool rv_lt_token_persist_wanted(const rv_lt *lt, uint64_t *ceiling);
/* The shell made ceiling durable; lower values than before are ignored. */
void rv_lt_token_persisted(rv_lt *lt, uint64_t ceiling);

/* ---- introspection ------------------------------------------------------------ */

typedef struct rv_lt_session_view {
  uint64_t id;
  rv_lt_identity_view identity;
  int64_t ttl_ns;
  int64_t opened_ns;
  int64_t last_keepalive_ns;
  int64_t expires_ns;
  size_t held;
  size_t waiting;
} rv_lt_session_view;

typedef struct rv_lt_lock_view {
  const char *name;
  bool held;
  uint64_t holder_session;               /* 0 when not held */
  rv_lt_identity_view holder_identity;   /* all "" when not held */
  const char *holder_description;
  uint64_t token;
  int64_t held_since_ns;
  int64_t holder_lock_delay_ns;
  size_t waiters;
  int64_t oldest_waiter_since_ns;        /* 0 without waiters */
  int64_t delay_until_ns;                /* lock-delay in force until, 0 if none */
} rv_lt_lock_view;

typedef struct rv_lt_waiter_view {
  uint64_t waiter_id;
  const char *lock;
  size_t position;                       /* 1 = next to be granted */
  uint64_t session_id;
  rv_lt_identity_view identity;
  const char *description;
  int64_t since_ns;
  int64_t deadline_ns;                   /* RV_LT_NO_DEADLINE if none */
  uint64_t cookie;
} rv_lt_waiter_view;

typedef struct rv_lt_filter {
  rv_lt_str prefix;     /* names starting with it; empty: all */
  bool only_contended;  /* with at least one waiter */
  bool only_held;
} rv_lt_filter;

/* Visitors return false to stop early.  They must not change the table. */
typedef bool (*rv_lt_lock_fn)(const rv_lt_lock_view *v, void *arg);
typedef bool (*rv_lt_waiter_fn)(const rv_lt_waiter_view *v, void *arg);
typedef bool (*rv_lt_session_fn)(const rv_lt_session_view *v, void *arg);

int rv_lt_lock_get(const rv_lt *lt, rv_lt_str name, rv_lt_lock_view *out);
/* Waiters of one lock in FIFO order. */
int rv_lt_lock_waiters(const rv_lt *lt, rv_lt_str name, rv_lt_waiter_fn fn, void *arg);
/* Locks matching f (NULL: all) in creation order; returns how many were visited. */
size_t rv_lt_lock_list(const rv_lt *lt, const rv_lt_filter *f, rv_lt_lock_fn fn, void *arg);
int rv_lt_session_get(const rv_lt *lt, uint64_t session_id, rv_lt_session_view *out);
/* Sessions in opening order; returns how many were visited. */
size_t rv_lt_session_list(const rv_lt *lt, rv_lt_session_fn fn, void *arg);
/* A session's held locks in acquisition order, and its waits in queueing order. */
int rv_lt_session_held(const rv_lt *lt, uint64_t session_id, rv_lt_lock_fn fn, void *arg);
int rv_lt_session_waiting(const rv_lt *lt, uint64_t session_id, rv_lt_waiter_fn fn,
                          void *arg);

/* ---- metrics ------------------------------------------------------------------- */

typedef struct rv_lt_stats {
  /* gauges */
  size_t sessions;
  size_t locks;          /* records alive */
  size_t locks_held;
  size_t locks_delayed;  /* in lock-delay */
  size_t waiters;
  /* counters since creation */
  uint64_t sessions_opened;
  uint64_t sessions_closed;
  uint64_t sessions_expired;
  uint64_t keepalives;
  uint64_t grants;             /* all grants = grants_immediate + handoffs */
  uint64_t grants_immediate;   /* granted by rv_lt_acquire itself */
  uint64_t handoffs;           /* granted to a waiter */
  uint64_t waits;              /* acquisitions that queued */
  uint64_t busy;               /* RV_LT_BUSY and RV_LT_TIMEDOUT results */
  uint64_t releases;
  uint64_t releases_rejected;  /* not held, not owner, stale token */
  uint64_t locks_lost;         /* holds ended by session expiry */
  uint64_t lock_delays;        /* lock-delays started */
  uint64_t waiter_timeouts;
  uint64_t waiter_withdrawals;
  uint64_t waiters_dropped;    /* by session close or expiry */
} rv_lt_stats;

void rv_lt_get_stats(const rv_lt *lt, rv_lt_stats *out);

/*
 * Walk every structure and check the invariants (one holder, FIFO links,
 * heap order, counts, token bounds).  NULL when all hold, else a description
 * of the first violation.  O(n): for tests and the simulator.
 */
const char *rv_lt_check(const rv_lt *lt);

#ifdef __cplusplus
}
#endif
#endif
