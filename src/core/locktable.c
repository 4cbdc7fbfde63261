/*
 * locktable.c: coord's sessions and locks as a pure state machine.
 *
 * ## The model
 *
 * A *session* is a client process's lease on the coordination service: it
 * has an id chosen here, a TTL, and an identity (service, replica, pid,
 * host, admin URL) that introspection shows next to everything the session
 * holds or waits for, so a tool can join "who holds what" across processes.
 * It lives while keepalives arrive.  Its expiry instant is
 * last_keepalive + ttl; the table notices it only in rv_lt_tick, so that
 * when things happen depends on the calls made, never on a clock read.  A
 * call that names a session whose expiry instant has passed but which tick
 * has not reaped yet gets RV_LT_EEXPIRED: the session is dead either way,
 * the cleanup simply happens in one place.
 *
 * A *lock* is a name with at most one holder and a FIFO of waiters.  A lock
 * record exists only while it is held, awaited, or in lock-delay; idle
 * names cost nothing, which bounds memory by max_locks in use, not by every
 * name ever seen.  The invariant that makes the rest simple:
 *
 *     a lock with waiters is held or in lock-delay.
 *
 * Acquire grants at once when the lock is free, else reports busy (TRY) or
 * queues (WAIT).  Release, session close, session expiry and the end of a
 * lock-delay are the only moments a lock becomes free, and each one hands
 * it straight to the head waiter ("hand-off") and reports that as a
 * GRANTED event, which the shell turns into the reply its blocked client is
 * waiting for.  Withdrawing a waiter never grants anything, by the
 * invariant.
 *
 * A hand-off skips (drops, with an event) waiters at the head whose
 * sessions are past their expiry instant but not yet reaped: dead is dead,
 * whether or not tick has run, and granting to a dead session would only
 * make the lock bounce through a lock-delay.
 *
 * Waiters are per request, not per session: a process with one session and
 * many handler threads (the incident's replicas) queues one waiter per
 * thread, and a session waits behind its own hold; locks are not reentrant.
 *
 * ## Fencing tokens
 *
 * Every grant takes the next value of one table-wide counter.  Tokens are
 * then strictly increasing per lock (what a fenced resource checks) and
 * also globally, which buys two things: a lock record can be forgotten when
 * idle without losing its high-water mark, and persistence is one integer.
 * Restarts: the shell persists a *ceiling* before announcing any token below
 * it, and a new table starts above the last durable ceiling.  Tokens are
 * reserved in batches (token_reserve) and a new batch is requested while
 * half of the current one is left, so the shell writes once per batch and,
 * if it writes promptly, never makes a grant wait.  A crash loses at most
 * the unused rest of a batch (a gap in the sequence, never a repeat).
 * Release checks session and token; a stale token never frees anything.
 *
 * ## Lock-delay
 *
 * When a session *expires* (not when it closes or releases: those are
 * deliberate), each lock it held may stay unavailable until
 * expiry_instant + lock_delay_ns, the delay chosen by the holder when it
 * acquired.  Measured from the expiry instant, not from when tick ran, so
 * the outcome does not depend on tick cadence.  Waiters stay queued and the
 * head is granted when the delay ends.
 *
 * ## Time and determinism
 *
 * All deadlines (session expiries, waiter deadlines, lock-delay ends) sit in
 * one binary min-heap ordered by (deadline, arming sequence), like libuv's
 * timers: equal deadlines fire in the order they were set, so the same
 * calls give the same events in the same order, which the simulator needs.
 * now_ns never goes backwards here: a smaller value than one seen before is
 * taken as the latest one.  Iteration (listing locks and sessions) follows
 * creation order kept in intrusive lists, never hash order.  The lock-name
 * hash is keyed (SipHash-1-3 with opts.hash_seed) so clients cannot flood a
 * bucket; ids hash with a fixed mixer since this table chooses them.
 *
 * ## Memory
 *
 * Every count is bounded by a named limit.  Hash tables grow by doubling
 * (a failed growth only lengthens chains), lock and waiter records are
 * recycled through small free lists so the uncontended acquire/release
 * cycle does not allocate, and every call that might need memory reserves
 * it before changing anything: a call either happens whole or fails with
 * RV_LT_ENOMEM and no effect.
 */
#include "core/locktable.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records kept for reuse instead of freed. */
#define RV__LT_POOL_KEEP 256
/* First size of each hash table and of the timer heap. */
#define RV__LT_HASH_INITIAL 16
#define RV__LT_HEAP_INITIAL 16
/* First size of an event list. */
#define RV__LT_EVENTS_INITIAL 16

/*
 * Invariants stay checked in release builds (TigerBeetle's rule): a lock
 * table that broke one would hand out a lock twice, which is worse than a
 * crash.
 */
#define RV__LT_ASSERT(c) ((c) ? (void)0 : rv__lt_assert_fail(#c, __FILE__, __LINE__))

/* Say what broke and where, then stop before doing damage. */
static void rv__lt_assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "locktable: assertion failed: %s (%s:%d)\n", expr, file, line);
  abort();
}

#define CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- errors ------------------------------------------------------------------ */

/* One row per error code: the sentence, the RESP word and the C name. */
typedef struct err_row {
  int err;
  const char *code, *text, *name;
} err_row;

/*
 * The row for err, or NULL: one table serves the sentence, the RESP word and
 * the name, so the three can never disagree.
 */
static const err_row *err_lookup(int err) {
  static const err_row rows[] = {
#define RV__LT_ERR_ROW(name, val, code, text) {name, code, text, #name},
      RV_LT_ERRORS(RV__LT_ERR_ROW)
#undef RV__LT_ERR_ROW
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (rows[i].err == err) return &rows[i];
  return NULL;
}

/* The three faces of an error code, for logs, replies and tests. */
const char *rv_lt_strerror(int err) {
  const err_row *r = err_lookup(err);
  return r ? r->text : "unknown lock table error";
}

const char *rv_lt_errcode(int err) {
  const err_row *r = err_lookup(err);
  return r ? r->code : "ERR";
}

const char *rv_lt_errname(int err) {
  const err_row *r = err_lookup(err);
  return r ? r->name : "RV_LT_E?";
}

/* ---- intrusive lists --------------------------------------------------------- */

typedef struct link {
  struct link *prev, *next;
} link;

typedef struct list {
  link *head, *tail;
  size_t n;
} list;

/* Append: FIFO order is the whole point of the waiter queues. */
static void list_push(list *l, link *e) {
  e->next = NULL;
  e->prev = l->tail;
  if (l->tail)
    l->tail->next = e;
  else
    l->head = e;
  l->tail = e;
  l->n++;
}

/* Unlink from anywhere in O(1): withdrawal mid-queue must be cheap. */
static void list_del(list *l, link *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    l->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    l->tail = e->prev;
  e->prev = e->next = NULL;
  RV__LT_ASSERT(l->n > 0);
  l->n--;
}

/* ---- hashing ------------------------------------------------------------------ */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                  \
  do {                                                            \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);     \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                        \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                        \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);     \
  } while (0)

/*
 * SipHash-1-3 of a lock name under the table's key: lock names come from
 * clients, and an unkeyed hash would let one client pile every name into
 * one bucket and make each acquire O(n).
 */
static uint64_t siphash13(const uint64_t k[2], const void *data, size_t len) {
  uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k[0];
  uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k[1];
  uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k[0];
  uint64_t v3 = UINT64_C(0x7465646279746573) ^ k[1];
  const unsigned char *in = data;
  size_t whole = len - (len & 7);
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = 0;
    for (int j = 7; j >= 0; j--) m = (m << 8) | in[i + (size_t)j];
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t j = len & 7; j > 0; j--) b |= (uint64_t)in[whole + j - 1] << (8 * (j - 1));
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* Ids are ours and sequential: a fixed mixer spreads them over buckets. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

typedef struct hnode {
  struct hnode *next;
  uint64_t hash;
} hnode;

typedef struct htab {
  hnode **b;
  size_t nb; /* power of two */
  size_t n;
} htab;

/* Start small: most tables hold few locks, and growth is cheap. */
static int ht_init(htab *t) {
  t->b = calloc(RV__LT_HASH_INITIAL, sizeof *t->b);
  t->nb = RV__LT_HASH_INITIAL;
  t->n = 0;
  return t->b ? 0 : -1;
}

/*
 * Double the buckets when the load reaches 1.  Best effort: if memory is
 * short the table keeps working with longer chains, so inserting never
 * fails and callers need not reserve for it.
 */
static void ht_grow(htab *t) {
  size_t nb = t->nb * 2;
  hnode **b = calloc(nb, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < t->nb; i++) {
    hnode *e = t->b[i];
    while (e) {
      hnode *next = e->next;
      size_t j = (size_t)(e->hash & (nb - 1));
      e->next = b[j];
      b[j] = e;
      e = next;
    }
  }
  free(t->b);
  t->b = b;
  t->nb = nb;
}

/* Growth happens here, best effort, so inserting never fails. */
static void ht_insert(htab *t, hnode *e, uint64_t hash) {
  if (t->n >= t->nb) ht_grow(t);
  e->hash = hash;
  size_t i = (size_t)(hash & (t->nb - 1));
  e->next = t->b[i];
  t->b[i] = e;
  t->n++;
}

/*
 * Chains are short (load <= 1 after growth), so finding the predecessor by
 * walking the bucket is cheaper than a back pointer in every record.
 */
static void ht_remove(htab *t, hnode *e) {
  hnode **pp = &t->b[e->hash & (t->nb - 1)];
  while (*pp != e) {
    RV__LT_ASSERT(*pp != NULL);
    pp = &(*pp)->next;
  }
  *pp = e->next;
  e->next = NULL;
  t->n--;
}

/* The bucket a key lives in; callers compare keys themselves. */
static hnode *ht_chain(const htab *t, uint64_t hash) { return t->b[hash & (t->nb - 1)]; }

/* ---- records -------------------------------------------------------------------- */

enum { T_SESSION = 1, T_WAITER, T_DELAY };
#define T_UNARMED SIZE_MAX

/* A deadline in the heap; embedded in the record it belongs to. */
typedef struct timer {
  int64_t deadline_ns;
  uint64_t seq; /* arming order: breaks ties between equal deadlines */
  size_t idx;   /* position in the heap, T_UNARMED when not in it */
  int kind;
} timer;

typedef struct session {
  hnode h;
  uint64_t id;
  link all;    /* lt->sessions_all, in opening order */
  timer t;     /* expiry */
  int64_t ttl_ns, opened_ns, last_keepalive_ns;
  list held;    /* lock.hold_link, in acquisition order */
  list waiting; /* waiter.sess_link, in queueing order */
  int64_t pid;
  char service[RV_LT_IDENT_MAX_BYTES + 1];
  char replica[RV_LT_IDENT_MAX_BYTES + 1];
  char host[RV_LT_IDENT_MAX_BYTES + 1];
  char admin_url[RV_LT_URL_MAX_BYTES + 1];
  char who[RV_LT_WHO_MAX];
} session;

typedef struct lock {
  hnode h;
  link all;     /* lt->locks_all in creation order; the free list when pooled */
  timer t;      /* lock-delay end */
  struct session *holder;
  link hold_link; /* holder->held */
  uint64_t token;
  int64_t since_ns;
  int64_t holder_delay_ns;
  int64_t delay_until_ns; /* 0: no lock-delay in force */
  list queue;   /* waiter.queue_link: FIFO */
  size_t name_len;
  char name[RV_LT_NAME_MAX_BYTES + 1];
  char desc[RV_LT_DESC_MAX_BYTES + 1];
} lock;

typedef struct waiter {
  hnode h;
  uint64_t id;
  uint64_t cookie;
  lock *lock;
  session *sess;
  link queue_link; /* lock->queue; the free list when pooled */
  link sess_link;  /* sess->waiting */
  timer t;         /* deadline, armed only when there is one */
  int64_t since_ns, deadline_ns, lock_delay_ns;
  char desc[RV_LT_DESC_MAX_BYTES + 1];
} waiter;

struct rv_lt {
  rv_lt_opts o;
  htab locks, sessions, waiters;
  list locks_all, sessions_all;
  list free_locks, free_waiters;
  timer **heap;
  size_t heap_n, heap_cap;
  uint64_t timer_seq;
  uint64_t next_session_id, next_waiter_id;
  uint64_t token_last, token_durable;
  int64_t now_ns;
  size_t nheld, ndelayed;
  rv_lt_stats st;
  char errmsg[RV_LT_ERRMSG_MAX];
};

/*
 * Record the specific reason for a failure.  Every error return goes through
 * here so rv_lt_errmsg always describes the call that just failed.
 */
__attribute__((format(printf, 3, 4))) static int fail(rv_lt *lt, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(lt->errmsg, sizeof lt->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

/* Like sqlite3_errmsg: the detail behind the last error code. */
const char *rv_lt_errmsg(const rv_lt *lt) { return lt->errmsg; }

/* Deadlines are sums of client-supplied numbers: never let them wrap. */
static int64_t sat_add(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
  return a + b;
}

/* Time only moves forward inside the table, whatever the caller passes. */
static int64_t clock_in(rv_lt *lt, int64_t now_ns) {
  if (now_ns < lt->now_ns) return lt->now_ns;
  lt->now_ns = now_ns;
  return now_ns;
}

/* One definition of "expired": now >= last keepalive + ttl. */
static int64_t session_expiry(const session *s) { return sat_add(s->last_keepalive_ns, s->ttl_ns); }

/* ---- the timer heap ---------------------------------------------------------------- */

static bool t_before(const timer *a, const timer *b) {
  return a->deadline_ns < b->deadline_ns || (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

/* Every heap move goes through here so a timer always knows its slot. */
static void heap_set(rv_lt *lt, size_t i, timer *t) {
  lt->heap[i] = t;
  t->idx = i;
}

/* Restore heap order after a timer got earlier (or was appended). */
static void heap_up(rv_lt *lt, size_t i) {
  timer *t = lt->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!t_before(t, lt->heap[parent])) break;
    heap_set(lt, i, lt->heap[parent]);
    i = parent;
  }
  heap_set(lt, i, t);
}

/* Restore heap order after a timer got later (or moved into a hole). */
static void heap_down(rv_lt *lt, size_t i) {
  timer *t = lt->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= lt->heap_n) break;
    if (c + 1 < lt->heap_n && t_before(lt->heap[c + 1], lt->heap[c])) c++;
    if (!t_before(lt->heap[c], t)) break;
    heap_set(lt, i, lt->heap[c]);
    i = c;
  }
  heap_set(lt, i, t);
}

/* Make room for n more timers before changing anything (all or nothing). */
static int heap_reserve(rv_lt *lt, size_t n) {
  if (lt->heap_cap - lt->heap_n >= n) return 0;
  size_t cap = lt->heap_cap ? lt->heap_cap : RV__LT_HEAP_INITIAL;
  while (cap - lt->heap_n < n) cap *= 2;
  timer **h = realloc(lt->heap, cap * sizeof *h);
  if (!h) return fail(lt, RV_LT_ENOMEM, "out of memory growing the timer heap to %zu", cap);
  lt->heap = h;
  lt->heap_cap = cap;
  return 0;
}

/*
 * (Re)arm t for deadline_ns with a fresh sequence number: re-arming counts
 * as setting the timer anew, so among equal deadlines it fires last.
 * Capacity must have been reserved.
 */
static void timer_arm(rv_lt *lt, timer *t, int64_t deadline_ns) {
  t->deadline_ns = deadline_ns;
  t->seq = ++lt->timer_seq;
  if (t->idx == T_UNARMED) {
    RV__LT_ASSERT(lt->heap_n < lt->heap_cap);
    heap_set(lt, lt->heap_n++, t);
    heap_up(lt, t->idx);
  } else {
    heap_up(lt, t->idx);
    heap_down(lt, t->idx);
  }
}

/*
 * Remove from anywhere in O(log n): withdrawn waiters and closed sessions
 * take their deadlines with them instead of leaving stale entries.
 */
static void timer_disarm(rv_lt *lt, timer *t) {
  if (t->idx == T_UNARMED) return;
  size_t i = t->idx;
  timer *last = lt->heap[--lt->heap_n];
  t->idx = T_UNARMED;
  if (i < lt->heap_n) {
    heap_set(lt, i, last);
    heap_up(lt, i);
    heap_down(lt, last->idx);
  }
}

/* ---- events ----------------------------------------------------------------------- */

void rv_lt_events_init(rv_lt_events *ev) { memset(ev, 0, sizeof *ev); }
/* The list is reused across calls: clearing keeps its capacity. */
void rv_lt_events_clear(rv_lt_events *ev) { ev->len = 0; }
void rv_lt_events_free(rv_lt_events *ev) {
  free(ev->v);
  memset(ev, 0, sizeof *ev);
}

/* Room for n more events, reserved before any change (all or nothing). */
static int ev_reserve(rv_lt *lt, rv_lt_events *ev, size_t n) {
  if (ev->cap - ev->len >= n) return 0;
  size_t cap = ev->cap ? ev->cap : RV__LT_EVENTS_INITIAL;
  while (cap - ev->len < n) cap *= 2;
  rv_lt_event *v = realloc(ev->v, cap * sizeof *v);
  if (!v) return fail(lt, RV_LT_ENOMEM, "out of memory growing the event list to %zu", cap);
  ev->v = v;
  ev->cap = cap;
  return 0;
}

/* Append into capacity reserved earlier; zeroed so unused fields read 0. */
static rv_lt_event *ev_push(rv_lt_events *ev, int type, int64_t at_ns) {
  RV__LT_ASSERT(ev->len < ev->cap);
  rv_lt_event *e = &ev->v[ev->len++];
  memset(e, 0, sizeof *e);
  e->type = type;
  e->at_ns = at_ns;
  return e;
}

/* ---- validation ----------------------------------------------------------------------- */

/* Names show up in logs, metric labels and dumps unquoted. */
static bool name_byte_ok(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '\\';
}

/* Descriptions are free text for humans, but one line of it. */
static bool desc_byte_ok(unsigned char c) { return c >= 0x20 && c != 0x7f; }

/*
 * Check a client-supplied string against a length range and a byte class,
 * with a message that names the field, the offending byte and the rule.
 */
static int check_str(rv_lt *lt, int err, const char *what, rv_lt_str s, size_t min, size_t max,
                     bool (*ok)(unsigned char), const char *rule) {
  if (s.len > 0 && !s.ptr) return fail(lt, RV_LT_EINVAL, "%s: NULL pointer with length %zu", what, s.len);
  if (s.len < min) return fail(lt, err, "%s must not be empty", what);
  if (s.len > max)
    return fail(lt, err, "%s is %zu bytes, the limit is %zu", what, s.len, max);
  for (size_t i = 0; i < s.len; i++)
    if (!ok((unsigned char)s.ptr[i]))
      return fail(lt, err, "%s has byte 0x%02x at offset %zu; %s", what, (unsigned char)s.ptr[i],
                  i, rule);
  return 0;
}

#define NAME_RULE "use printable ASCII without spaces, quotes or backslashes"
#define DESC_RULE "use one line of printable text"

/* The two checks every lock call makes, with one wording each. */
static int check_name(rv_lt *lt, rv_lt_str name) {
  return check_str(lt, RV_LT_EBADNAME, "lock name", name, 1, RV_LT_NAME_MAX_BYTES, name_byte_ok,
                   NAME_RULE);
}

static int check_desc(rv_lt *lt, rv_lt_str d) {
  return check_str(lt, RV_LT_EBADDESC, "description", d, 0, RV_LT_DESC_MAX_BYTES, desc_byte_ok,
                   DESC_RULE);
}

/* Bounded by the caller's validation: stored strings are NUL-terminated. */
static void copy_str(char *dst, rv_lt_str s) {
  if (s.len) memcpy(dst, s.ptr, s.len);
  dst[s.len] = '\0';
}

/* ---- lookups ---------------------------------------------------------------------- */

static session *session_find(const rv_lt *lt, uint64_t id) {
  for (hnode *e = ht_chain(&lt->sessions, mix64(id)); e; e = e->next) {
    session *s = CONTAINER(e, session, h);
    if (s->id == id) return s;
  }
  return NULL;
}

/* Withdrawal names a waiter by id: the shell keeps ids, not pointers. */
static waiter *waiter_find(const rv_lt *lt, uint64_t id) {
  for (hnode *e = ht_chain(&lt->waiters, mix64(id)); e; e = e->next) {
    waiter *w = CONTAINER(e, waiter, h);
    if (w->id == id) return w;
  }
  return NULL;
}

/* Hash once per call and reuse it for lookup and insertion. */
static uint64_t name_hash(const rv_lt *lt, rv_lt_str name) {
  return siphash13(lt->o.hash_seed, name.ptr, name.len);
}

/* The record for a name, or NULL when the name is idle. */
static lock *lock_find(const rv_lt *lt, rv_lt_str name, uint64_t hash) {
  for (hnode *e = ht_chain(&lt->locks, hash); e; e = e->next) {
    lock *l = CONTAINER(e, lock, h);
    if (e->hash == hash && l->name_len == name.len && memcmp(l->name, name.ptr, name.len) == 0)
      return l;
  }
  return NULL;
}

/*
 * The session a call acts for, alive at now.  Expired-but-unreaped counts as
 * dead so the answer never depends on whether tick ran first.
 */
static int session_live(rv_lt *lt, int64_t now, uint64_t id, session **out) {
  session *s = session_find(lt, id);
  if (!s)
    return fail(lt, RV_LT_ENOSESSION,
                "no session %llu: it was never opened, was closed, or expired; open a new one",
                (unsigned long long)id);
  if (now >= session_expiry(s))
    return fail(lt, RV_LT_EEXPIRED,
                "session %llu expired at %lld ns (ttl %lld ns, last keepalive at %lld ns); "
                "open a new session and keep it alive more often than its ttl",
                (unsigned long long)id, (long long)session_expiry(s), (long long)s->ttl_ns,
                (long long)s->last_keepalive_ns);
  *out = s;
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

void rv_lt_opts_default(rv_lt_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_sessions = RV_LT_MAX_SESSIONS_DEFAULT;
  o->max_locks = RV_LT_MAX_LOCKS_DEFAULT;
  o->max_waiters_per_lock = RV_LT_MAX_WAITERS_PER_LOCK_DEFAULT;
  o->max_waiters = RV_LT_MAX_WAITERS_DEFAULT;
  o->token_reserve = RV_LT_TOKEN_RESERVE_DEFAULT;
}

/*
 * Validate options once so the rest of the code can rely on them, e.g. that
 * token_floor leaves room for 2^62 grants.
 */
int rv_lt_create(rv_lt **out, const rv_lt_opts *opts) {
  *out = NULL;
  rv_lt_opts o;
  if (opts)
    o = *opts;
  else
    rv_lt_opts_default(&o);
  if (!o.max_sessions || !o.max_locks || !o.max_waiters_per_lock || !o.max_waiters ||
      !o.token_reserve || o.token_floor > RV_LT_TOKEN_FLOOR_MAX ||
      o.session_id_floor > UINT64_MAX / 2)
    return RV_LT_EINVAL;
  rv_lt *lt = calloc(1, sizeof *lt);
  if (!lt) return RV_LT_ENOMEM;
  lt->o = o;
  if (ht_init(&lt->locks) || ht_init(&lt->sessions) || ht_init(&lt->waiters) ||
      heap_reserve(lt, RV__LT_HEAP_INITIAL)) {
    rv_lt_destroy(lt);
    return RV_LT_ENOMEM;
  }
  lt->next_session_id = o.session_id_floor;
  lt->token_last = lt->token_durable = o.token_floor;
  *out = lt;
  return RV_LT_OK;
}

/* Free every record on a list whose links sit at offset off in the record. */
static void free_all(list *l, size_t off) {
  link *e = l->head;
  while (e) {
    link *next = e->next;
    free((char *)e - off);
    e = next;
  }
  memset(l, 0, sizeof *l);
}

/* Tear down in an order that never follows a freed link. */
void rv_lt_destroy(rv_lt *lt) {
  if (!lt) return;
  /* Waiters are reachable only through their locks' queues. */
  for (link *e = lt->locks_all.head; e; e = e->next) {
    lock *l = CONTAINER(e, lock, all);
    free_all(&l->queue, offsetof(waiter, queue_link));
  }
  free_all(&lt->locks_all, offsetof(lock, all));
  free_all(&lt->sessions_all, offsetof(session, all));
  free_all(&lt->free_locks, offsetof(lock, all));
  free_all(&lt->free_waiters, offsetof(waiter, queue_link));
  free(lt->locks.b);
  free(lt->sessions.b);
  free(lt->waiters.b);
  free(lt->heap);
  free(lt);
}

/* ---- lock and waiter records ---------------------------------------------------------- */

/* A lock record for name, reused from the pool when possible. */
static lock *lock_new(rv_lt *lt, rv_lt_str name, uint64_t hash) {
  lock *l;
  if (lt->free_locks.head) {
    link *e = lt->free_locks.head;
    list_del(&lt->free_locks, e);
    l = CONTAINER(e, lock, all);
  } else {
    l = malloc(sizeof *l);
    if (!l) return NULL;
  }
  memset(l, 0, offsetof(lock, name)); /* the name and desc buffers are overwritten below */
  l->t.idx = T_UNARMED;
  l->t.kind = T_DELAY;
  l->name_len = name.len;
  copy_str(l->name, name);
  l->desc[0] = '\0';
  ht_insert(&lt->locks, &l->h, hash);
  list_push(&lt->locks_all, &l->all);
  return l;
}

/*
 * Forget a lock record once nothing refers to it: tokens are table-wide, so
 * an idle name needs no memory.
 */
static void lock_maybe_free(rv_lt *lt, lock *l) {
  if (l->holder || l->queue.n || l->delay_until_ns) return;
  RV__LT_ASSERT(l->t.idx == T_UNARMED);
  ht_remove(&lt->locks, &l->h);
  list_del(&lt->locks_all, &l->all);
  if (lt->free_locks.n < RV__LT_POOL_KEEP)
    list_push(&lt->free_locks, &l->all);
  else
    free(l);
}

/* Reuse a pooled record: queueing should not cost a malloc. */
static waiter *waiter_new(rv_lt *lt) {
  if (lt->free_waiters.head) {
    link *e = lt->free_waiters.head;
    list_del(&lt->free_waiters, e);
    return CONTAINER(e, waiter, queue_link);
  }
  return malloc(sizeof(waiter));
}

/* Take a waiter out of every structure; the caller reports why. */
static void waiter_remove(rv_lt *lt, waiter *w) {
  list_del(&w->lock->queue, &w->queue_link);
  list_del(&w->sess->waiting, &w->sess_link);
  timer_disarm(lt, &w->t);
  ht_remove(&lt->waiters, &w->h);
  if (lt->free_waiters.n < RV__LT_POOL_KEEP)
    list_push(&lt->free_waiters, &w->queue_link);
  else
    free(w);
}

/* ---- grants and releases ----------------------------------------------------------- */

/*
 * Make s the holder of l with the next token.  The one place tokens are
 * issued, so monotonicity is checked here.
 */
static void grant(rv_lt *lt, lock *l, session *s, int64_t now, const char *desc, int64_t delay_ns) {
  RV__LT_ASSERT(!l->holder && !l->delay_until_ns);
  RV__LT_ASSERT(lt->token_last < RV_LT_TOKEN_MAX);
  l->holder = s;
  l->token = ++lt->token_last;
  l->since_ns = now;
  l->holder_delay_ns = delay_ns;
  snprintf(l->desc, sizeof l->desc, "%s", desc);
  list_push(&s->held, &l->hold_link);
  lt->nheld++;
  lt->st.grants++;
}

/* The inverse of grant, minus the hand-off, which the caller decides. */
static void unhold(rv_lt *lt, lock *l) {
  RV__LT_ASSERT(l->holder);
  list_del(&l->holder->held, &l->hold_link);
  l->holder = NULL;
  lt->nheld--;
}

/* Report and remove a waiter whose session is closing or dead. */
static void drop_waiter(rv_lt *lt, waiter *w, int64_t now, int reason, rv_lt_events *ev) {
  lock *l = w->lock;
  rv_lt_event *e = ev_push(ev, RV_LT_EV_WAITER_DROPPED, now);
  e->reason = reason;
  e->session_id = w->sess->id;
  e->waiter_id = w->id;
  e->cookie = w->cookie;
  e->waited_ns = now - w->since_ns;
  memcpy(e->lock, l->name, l->name_len + 1);
  memcpy(e->who, w->sess->who, sizeof e->who);
  waiter_remove(lt, w);
  lt->st.waiters_dropped++;
}

/*
 * How many waiters at the head of l's queue belong to sessions already past
 * their expiry at now (not counting those of `leaving`, which go anyway):
 * a hand-off drops them rather than grant to a dead session.
 */
static size_t dead_head(const lock *l, int64_t now, const session *leaving) {
  size_t k = 0;
  for (const link *e = l->queue.head; e; e = e->next) {
    const waiter *w = CONTAINER(e, waiter, queue_link);
    if (w->sess == leaving) continue;
    if (session_expiry(w->sess) > now) break;
    k++;
  }
  return k;
}

/*
 * l just became free (released, its holder gone, or its lock-delay over):
 * hand it to the first waiter whose session is alive and tell the shell, or
 * forget the record.  Waiters ahead of it whose sessions have passed their
 * expiry but were not reaped yet are dropped first: granting to them would
 * give the lock to a dead session, which would lose it at the next tick and
 * might hold it back for a lock-delay.  The caller reserved
 * 1 + dead_head(l, now, NULL) events.
 */
static void lock_freed(rv_lt *lt, lock *l, int64_t now, rv_lt_events *ev) {
  while (l->queue.head) {
    waiter *w = CONTAINER(l->queue.head, waiter, queue_link);
    if (session_expiry(w->sess) > now) break;
    drop_waiter(lt, w, now, RV_LT_DROP_SESSION_EXPIRED, ev);
  }
  if (!l->queue.head) {
    lock_maybe_free(lt, l);
    return;
  }
  waiter *w = CONTAINER(l->queue.head, waiter, queue_link);
  grant(lt, l, w->sess, now, w->desc, w->lock_delay_ns);
  rv_lt_event *e = ev_push(ev, RV_LT_EV_GRANTED, now);
  e->session_id = w->sess->id;
  e->waiter_id = w->id;
  e->cookie = w->cookie;
  e->token = l->token;
  e->waited_ns = now - w->since_ns;
  memcpy(e->lock, l->name, l->name_len + 1);
  lt->st.handoffs++;
  waiter_remove(lt, w);
}

/* The events session_end may produce: computed before anything changes. */
static size_t session_end_events(const session *s, int64_t now, bool expired) {
  size_t n = (expired ? 1 : 0) + s->waiting.n + (expired ? 2 : 1) * s->held.n;
  for (const link *e = s->held.head; e; e = e->next)
    n += dead_head(CONTAINER(e, lock, hold_link), now, s);
  return n;
}

/*
 * End a session, by close (expired=false) or expiry at instant at_ns.  Its
 * waiters go first, so that none of its locks is handed to its own dying
 * waiters; then its holds end, in acquisition order.  The caller reserved
 * session_end_events() events and held timers.
 */
static void session_end(rv_lt *lt, session *s, int64_t now, int64_t at_ns, bool expired,
                        rv_lt_events *ev) {
  if (expired) {
    rv_lt_event *e = ev_push(ev, RV_LT_EV_SESSION_EXPIRED, at_ns);
    e->session_id = s->id;
    memcpy(e->who, s->who, sizeof e->who);
  }
  while (s->waiting.head) {
    waiter *w = CONTAINER(s->waiting.head, waiter, sess_link);
    lock *l = w->lock;
    drop_waiter(lt, w, now, expired ? RV_LT_DROP_SESSION_EXPIRED : RV_LT_DROP_SESSION_CLOSED,
                ev);
    lock_maybe_free(lt, l); /* a no-op by the invariant; kept for safety */
  }
  while (s->held.head) {
    lock *l = CONTAINER(s->held.head, lock, hold_link);
    unhold(lt, l);
    if (expired) {
      rv_lt_event *e = ev_push(ev, RV_LT_EV_LOCK_LOST, at_ns);
      e->session_id = s->id;
      e->token = l->token;
      memcpy(e->lock, l->name, l->name_len + 1);
      memcpy(e->who, s->who, sizeof e->who);
      lt->st.locks_lost++;
      int64_t until = sat_add(at_ns, l->holder_delay_ns);
      if (l->holder_delay_ns > 0 && until > now) {
        l->delay_until_ns = until;
        timer_arm(lt, &l->t, until);
        lt->ndelayed++;
        lt->st.lock_delays++;
        e->delay_until_ns = until;
        continue;
      }
    }
    lock_freed(lt, l, now, ev);
  }
  timer_disarm(lt, &s->t);
  ht_remove(&lt->sessions, &s->h);
  list_del(&lt->sessions_all, &s->all);
  if (expired)
    lt->st.sessions_expired++;
  else
    lt->st.sessions_closed++;
  free(s);
}

/* ---- sessions ----------------------------------------------------------------------- */

int rv_lt_session_open(rv_lt *lt, int64_t now_ns, int64_t ttl_ns, const rv_lt_identity *id,
                       uint64_t *session_id) {
  int64_t now = clock_in(lt, now_ns);
  int rc;
  if (ttl_ns < RV_LT_TTL_MIN_NS || ttl_ns > RV_LT_TTL_MAX_NS)
    return fail(lt, RV_LT_EBADTTL, "session ttl %lld ns is out of range: use %lld..%lld ns",
                (long long)ttl_ns, (long long)RV_LT_TTL_MIN_NS, (long long)RV_LT_TTL_MAX_NS);
  if (!id) return fail(lt, RV_LT_EBADIDENT, "a session needs an identity (at least a service)");
  if ((rc = check_str(lt, RV_LT_EBADIDENT, "service", id->service, 1, RV_LT_IDENT_MAX_BYTES,
                      name_byte_ok, NAME_RULE)) ||
      (rc = check_str(lt, RV_LT_EBADIDENT, "replica", id->replica, 0, RV_LT_IDENT_MAX_BYTES,
                      name_byte_ok, NAME_RULE)) ||
      (rc = check_str(lt, RV_LT_EBADIDENT, "host", id->host, 0, RV_LT_IDENT_MAX_BYTES,
                      name_byte_ok, NAME_RULE)) ||
      (rc = check_str(lt, RV_LT_EBADIDENT, "admin URL", id->admin_url, 0, RV_LT_URL_MAX_BYTES,
                      name_byte_ok, NAME_RULE)))
    return rc;
  if (id->pid < 0)
    return fail(lt, RV_LT_EBADIDENT, "pid %lld is negative: give the process id, or 0 if unknown",
                (long long)id->pid);
  if (lt->sessions.n >= lt->o.max_sessions)
    return fail(lt, RV_LT_ESESSIONS,
                "%zu sessions are open, the limit is %zu (max_sessions); close idle sessions or "
                "raise the limit",
                lt->sessions.n, lt->o.max_sessions);
  if ((rc = heap_reserve(lt, 1))) return rc;
  session *s = calloc(1, sizeof *s);
  if (!s) return fail(lt, RV_LT_ENOMEM, "out of memory opening a session");
  s->id = ++lt->next_session_id;
  s->ttl_ns = ttl_ns;
  s->opened_ns = s->last_keepalive_ns = now;
  s->pid = id->pid;
  copy_str(s->service, id->service);
  copy_str(s->replica, id->replica);
  copy_str(s->host, id->host);
  copy_str(s->admin_url, id->admin_url);
  int n = snprintf(s->who, sizeof s->who, "%s/%s pid %lld @%s", s->service,
                   s->replica[0] ? s->replica : "-", (long long)s->pid,
                   s->host[0] ? s->host : "-");
  RV__LT_ASSERT(n > 0 && (size_t)n < sizeof s->who);
  s->t.idx = T_UNARMED;
  s->t.kind = T_SESSION;
  ht_insert(&lt->sessions, &s->h, mix64(s->id));
  list_push(&lt->sessions_all, &s->all);
  timer_arm(lt, &s->t, session_expiry(s));
  lt->st.sessions_opened++;
  *session_id = s->id;
  return RV_LT_OK;
}

/*
 * A keepalive re-arms the expiry timer with a fresh sequence number, as if
 * set anew, so ordering among equal deadlines follows the latest keepalive.
 */
int rv_lt_session_keepalive(rv_lt *lt, int64_t now_ns, uint64_t session_id, int64_t *expires_ns) {
  int64_t now = clock_in(lt, now_ns);
  session *s;
  int rc = session_live(lt, now, session_id, &s);
  if (rc) return rc;
  s->last_keepalive_ns = now;
  timer_arm(lt, &s->t, session_expiry(s));
  lt->st.keepalives++;
  if (expires_ns) *expires_ns = session_expiry(s);
  return RV_LT_OK;
}

/* Reserve for the worst case first, so a close is all or nothing. */
int rv_lt_session_close(rv_lt *lt, int64_t now_ns, uint64_t session_id, rv_lt_events *ev) {
  int64_t now = clock_in(lt, now_ns);
  if (!ev) return fail(lt, RV_LT_EINVAL, "session close needs an event list for hand-offs");
  session *s;
  int rc = session_live(lt, now, session_id, &s);
  if (rc) return rc;
  if ((rc = ev_reserve(lt, ev, session_end_events(s, now, false)))) return rc;
  session_end(lt, s, now, now, false, ev);
  return RV_LT_OK;
}

/* ---- locks ------------------------------------------------------------------------- */

static bool lock_available(const lock *l) { return !l->holder && !l->delay_until_ns; }

/*
 * Checks come before any change (all or nothing): arguments, the session,
 * then limits and memory; only then is the lock granted or the waiter
 * queued.  A busy answer says who holds it or until when it is delayed, so
 * the client's error can name the holder.
 */
int rv_lt_acquire(rv_lt *lt, int64_t now_ns, const rv_lt_acquire_req *req,
                  rv_lt_acquire_res *res) {
  memset(res, 0, sizeof *res);
  int64_t now = clock_in(lt, now_ns);
  int rc;
  if (req->mode != RV_LT_TRY && req->mode != RV_LT_WAIT)
    return fail(lt, RV_LT_EINVAL, "acquire mode %d is neither RV_LT_TRY nor RV_LT_WAIT", req->mode);
  if ((rc = check_name(lt, req->name)) || (rc = check_desc(lt, req->description))) return rc;
  if (req->lock_delay_ns < 0 || req->lock_delay_ns > RV_LT_LOCK_DELAY_MAX_NS)
    return fail(lt, RV_LT_EBADDELAY, "lock delay %lld ns is out of range: use 0..%lld ns",
                (long long)req->lock_delay_ns, (long long)RV_LT_LOCK_DELAY_MAX_NS);
  session *s;
  if ((rc = session_live(lt, now, req->session_id, &s))) return rc;

  uint64_t hash = name_hash(lt, req->name);
  lock *l = lock_find(lt, req->name, hash);
  char desc[RV_LT_DESC_MAX_BYTES + 1];
  copy_str(desc, req->description);

  if (!l || lock_available(l)) {
    RV__LT_ASSERT(!l || !l->queue.n); /* the invariant: free locks have no waiters */
    if (lt->token_last >= RV_LT_TOKEN_MAX)
      return fail(lt, RV_LT_ETOKENS, "fencing tokens are exhausted (last %llu)",
                  (unsigned long long)lt->token_last);
    if (!l) {
      if (lt->locks.n >= lt->o.max_locks)
        return fail(lt, RV_LT_ELOCKS,
                    "%zu locks are in use, the limit is %zu (max_locks); release locks or raise "
                    "the limit",
                    lt->locks.n, lt->o.max_locks);
      l = lock_new(lt, req->name, hash);
      if (!l)
        return fail(lt, RV_LT_ENOMEM, "out of memory creating lock %.*s", (int)req->name.len,
                    req->name.ptr);
    }
    grant(lt, l, s, now, desc, req->lock_delay_ns);
    lt->st.grants_immediate++;
    res->token = l->token;
    res->since_ns = now;
    return RV_LT_GRANTED;
  }

  res->holder_session = l->holder ? l->holder->id : 0;
  res->holder_token = l->holder ? l->token : 0;
  res->delay_until_ns = l->delay_until_ns;
  if (req->mode == RV_LT_TRY) {
    lt->st.busy++;
    return RV_LT_BUSY;
  }
  if (req->deadline_ns <= now) {
    lt->st.busy++;
    return RV_LT_TIMEDOUT;
  }
  if (l->queue.n >= lt->o.max_waiters_per_lock)
    return fail(lt, RV_LT_EWAITERS,
                "lock %s already has %zu waiters, the limit is %zu (max_waiters_per_lock); retry "
                "later or find out why its holder (session %llu) keeps it",
                l->name, l->queue.n, lt->o.max_waiters_per_lock,
                (unsigned long long)res->holder_session);
  if (lt->waiters.n >= lt->o.max_waiters)
    return fail(lt, RV_LT_EWAITERS_TOTAL,
                "%zu waiters are queued across all locks, the limit is %zu (max_waiters)",
                lt->waiters.n, lt->o.max_waiters);
  bool timed = req->deadline_ns != RV_LT_NO_DEADLINE;
  if (timed && (rc = heap_reserve(lt, 1))) return rc;
  waiter *w = waiter_new(lt);
  if (!w) return fail(lt, RV_LT_ENOMEM, "out of memory queueing for lock %s", l->name);
  memset(w, 0, offsetof(waiter, desc));
  w->id = ++lt->next_waiter_id;
  w->cookie = req->cookie;
  w->lock = l;
  w->sess = s;
  w->since_ns = now;
  w->deadline_ns = req->deadline_ns;
  w->lock_delay_ns = req->lock_delay_ns;
  memcpy(w->desc, desc, req->description.len + 1);
  w->t.idx = T_UNARMED;
  w->t.kind = T_WAITER;
  list_push(&l->queue, &w->queue_link);
  list_push(&s->waiting, &w->sess_link);
  ht_insert(&lt->waiters, &w->h, mix64(w->id));
  if (timed) timer_arm(lt, &w->t, req->deadline_ns);
  lt->st.waits++;
  res->waiter_id = w->id;
  res->position = l->queue.n;
  return RV_LT_QUEUED;
}

/*
 * The lock a holder names in release/describe, checked against session and
 * token.  Wrong session and stale token are told apart because they mean
 * different bugs: someone else's lock, or your own lock lost and retaken.
 */
static int held_by(rv_lt *lt, int64_t now, uint64_t session_id, rv_lt_str name, uint64_t token,
                   bool is_release, lock **out) {
  int rc;
  session *s;
  if ((rc = check_name(lt, name)) || (rc = session_live(lt, now, session_id, &s))) return rc;
  lock *l = lock_find(lt, name, name_hash(lt, name));
  if (!l || !l->holder) {
    lt->st.releases_rejected += is_release;
    return fail(lt, RV_LT_ENOTHELD,
                "lock %.*s is not held by anyone (released, or lost when its holder's session "
                "expired)",
                (int)name.len, name.ptr);
  }
  if (l->holder != s) {
    lt->st.releases_rejected += is_release;
    return fail(lt, RV_LT_ENOTOWNER,
                "lock %s is held by session %llu (%s) with token %llu, not by session %llu; "
                "nothing was changed",
                l->name, (unsigned long long)l->holder->id, l->holder->who,
                (unsigned long long)l->token, (unsigned long long)session_id);
  }
  if (l->token != token) {
    lt->st.releases_rejected += is_release;
    return fail(lt, RV_LT_ESTALE,
                "stale fencing token %llu for lock %s: this session holds it now with token %llu "
                "(it lost and re-acquired it); nothing was changed",
                (unsigned long long)token, l->name, (unsigned long long)l->token);
  }
  *out = l;
  return 0;
}

/* Checked by session and token; the hand-off happens in the same call. */
int rv_lt_release(rv_lt *lt, int64_t now_ns, uint64_t session_id, rv_lt_str name,
                  uint64_t token, rv_lt_events *ev) {
  int64_t now = clock_in(lt, now_ns);
  if (!ev) return fail(lt, RV_LT_EINVAL, "release needs an event list for the hand-off");
  lock *l;
  int rc;
  if ((rc = held_by(lt, now, session_id, name, token, true, &l))) return rc;
  if ((rc = ev_reserve(lt, ev, 1 + dead_head(l, now, NULL)))) return rc;
  unhold(lt, l);
  lt->st.releases++;
  lock_freed(lt, l, now, ev);
  return RV_LT_OK;
}

/*
 * A long-running holder can say what it is doing now; the same checks as a
 * release keep a stale holder from rewriting the current one's story.
 */
int rv_lt_describe(rv_lt *lt, int64_t now_ns, uint64_t session_id, rv_lt_str name,
                   uint64_t token, rv_lt_str description) {
  int64_t now = clock_in(lt, now_ns);
  lock *l;
  int rc;
  if ((rc = check_desc(lt, description)) ||
      (rc = held_by(lt, now, session_id, name, token, false, &l)))
    return rc;
  copy_str(l->desc, description);
  return RV_LT_OK;
}

/* Cancellation must be immediate: the waiter leaves the queue now. */
int rv_lt_withdraw(rv_lt *lt, int64_t now_ns, uint64_t session_id, uint64_t waiter_id) {
  (void)clock_in(lt, now_ns);
  waiter *w = waiter_find(lt, waiter_id);
  if (!w)
    return fail(lt, RV_LT_ENOWAITER,
                "no waiter %llu: it was granted, timed out, withdrawn, or dropped with its "
                "session",
                (unsigned long long)waiter_id);
  if (session_id && w->sess->id != session_id)
    return fail(lt, RV_LT_ENOTOWNER, "waiter %llu belongs to session %llu, not to session %llu",
                (unsigned long long)waiter_id, (unsigned long long)w->sess->id,
                (unsigned long long)session_id);
  lock *l = w->lock;
  waiter_remove(lt, w);
  lt->st.waiter_withdrawals++;
  lock_maybe_free(lt, l);
  return RV_LT_OK;
}

/* ---- time ----------------------------------------------------------------------------- */

int rv_lt_tick(rv_lt *lt, int64_t now_ns, rv_lt_events *ev) {
  int64_t now = clock_in(lt, now_ns);
  if (!ev) return fail(lt, RV_LT_EINVAL, "tick needs an event list");
  int rc;
  while (lt->heap_n && lt->heap[0]->deadline_ns <= now) {
    timer *t = lt->heap[0];
    int64_t at = t->deadline_ns;
    switch (t->kind) {
    case T_SESSION: {
      session *s = CONTAINER(t, session, t);
      if ((rc = ev_reserve(lt, ev, session_end_events(s, now, true))) ||
          (rc = heap_reserve(lt, s->held.n)))
        return rc;
      timer_disarm(lt, t);
      session_end(lt, s, now, at, true, ev);
      break;
    }
    case T_WAITER: {
      waiter *w = CONTAINER(t, waiter, t);
      if ((rc = ev_reserve(lt, ev, 1))) return rc;
      lock *l = w->lock;
      rv_lt_event *e = ev_push(ev, RV_LT_EV_TIMED_OUT, at);
      e->session_id = w->sess->id;
      e->waiter_id = w->id;
      e->cookie = w->cookie;
      e->waited_ns = now - w->since_ns;
      memcpy(e->lock, l->name, l->name_len + 1);
      waiter_remove(lt, w);
      lt->st.waiter_timeouts++;
      lock_maybe_free(lt, l);
      break;
    }
    case T_DELAY: {
      lock *l = CONTAINER(t, lock, t);
      if ((rc = ev_reserve(lt, ev, 1 + dead_head(l, now, NULL)))) return rc;
      timer_disarm(lt, t);
      l->delay_until_ns = 0;
      lt->ndelayed--;
      lock_freed(lt, l, now, ev);
      break;
    }
    default:
      RV__LT_ASSERT(!"unknown timer kind");
    }
  }
  return RV_LT_OK;
}

/* The heap top is the answer: O(1), so the shell may ask every loop. */
int64_t rv_lt_next_deadline(const rv_lt *lt) {
  return lt->heap_n ? lt->heap[0]->deadline_ns : RV_LT_NO_DEADLINE;
}

/* ---- fencing tokens --------------------------------------------------------------- */

/* Read-only views of the persistence state, for the shell and /debug. */
uint64_t rv_lt_token_last(const rv_lt *lt) { return lt->token_last; }
uint64_t rv_lt_token_durable(const rv_lt *lt) { return lt->token_durable; }

/*
 * Ask for a new ceiling while half of the reserved range is still unused,
 * so a shell that writes promptly never has to hold a grant back.
 */
bool rv_lt_token_persist_wanted(const rv_lt *lt, uint64_t *ceiling) {
  uint64_t headroom = lt->token_durable > lt->token_last ? lt->token_durable - lt->token_last : 0;
  if (headroom >= (lt->o.token_reserve + 1) / 2) return false;
  uint64_t c = RV_LT_TOKEN_MAX - lt->token_last < lt->o.token_reserve
                   ? RV_LT_TOKEN_MAX
                   : lt->token_last + lt->o.token_reserve;
  if (c <= lt->token_durable) return false; /* the token space is all reserved */
  *ceiling = c;
  return true;
}

/* Monotone: a late confirmation of an older write changes nothing. */
void rv_lt_token_persisted(rv_lt *lt, uint64_t ceiling) {
  if (ceiling > RV_LT_TOKEN_MAX) ceiling = RV_LT_TOKEN_MAX;
  if (ceiling > lt->token_durable) lt->token_durable = ceiling;
}

/* ---- introspection ------------------------------------------------------------------ */

static void identity_view(const session *s, rv_lt_identity_view *v) {
  v->service = s->service;
  v->replica = s->replica;
  v->host = s->host;
  v->admin_url = s->admin_url;
  v->pid = s->pid;
}

/*
 * Views point into the records, no copies: introspection of a large table
 * must not allocate.  Fields of an absent holder read "" and 0.
 */
static void lock_view(const lock *l, rv_lt_lock_view *v) {
  static const char none[] = "";
  memset(v, 0, sizeof *v);
  v->name = l->name;
  v->held = l->holder != NULL;
  v->holder_identity.service = v->holder_identity.replica = none;
  v->holder_identity.host = v->holder_identity.admin_url = none;
  v->holder_description = none;
  if (l->holder) {
    v->holder_session = l->holder->id;
    identity_view(l->holder, &v->holder_identity);
    v->holder_description = l->desc;
    v->token = l->token;
    v->held_since_ns = l->since_ns;
    v->holder_lock_delay_ns = l->holder_delay_ns;
  }
  v->waiters = l->queue.n;
  if (l->queue.head) v->oldest_waiter_since_ns = CONTAINER(l->queue.head, waiter, queue_link)->since_ns;
  v->delay_until_ns = l->delay_until_ns;
}

/* Position is passed in: only the caller knows it cheaply. */
static void waiter_view(const waiter *w, size_t position, rv_lt_waiter_view *v) {
  v->waiter_id = w->id;
  v->lock = w->lock->name;
  v->position = position;
  v->session_id = w->sess->id;
  identity_view(w->sess, &v->identity);
  v->description = w->desc;
  v->since_ns = w->since_ns;
  v->deadline_ns = w->deadline_ns;
  v->cookie = w->cookie;
}

/* A const lookup with validation but no error message (introspection). */
static const lock *lock_lookup(const rv_lt *lt, rv_lt_str name) {
  if (name.len == 0 || name.len > RV_LT_NAME_MAX_BYTES || !name.ptr) return NULL;
  return lock_find(lt, name, name_hash(lt, name));
}

/* Introspection never fails on a bad name: it is simply not found. */
int rv_lt_lock_get(const rv_lt *lt, rv_lt_str name, rv_lt_lock_view *out) {
  const lock *l = lock_lookup(lt, name);
  if (!l) return RV_LT_ENOLOCK;
  lock_view(l, out);
  return RV_LT_OK;
}

/* FIFO order is the order of grants to come: what a dump should show. */
int rv_lt_lock_waiters(const rv_lt *lt, rv_lt_str name, rv_lt_waiter_fn fn, void *arg) {
  const lock *l = lock_lookup(lt, name);
  if (!l) return RV_LT_ENOLOCK;
  size_t pos = 0;
  for (const link *e = l->queue.head; e; e = e->next) {
    rv_lt_waiter_view v;
    waiter_view(CONTAINER(e, waiter, queue_link), ++pos, &v);
    if (!fn(&v, arg)) break;
  }
  return RV_LT_OK;
}

/* The filters an operator asks for: a service's prefix, only contention. */
static bool lock_matches(const lock *l, const rv_lt_filter *f) {
  if (!f) return true;
  if (f->prefix.len &&
      (l->name_len < f->prefix.len || memcmp(l->name, f->prefix.ptr, f->prefix.len) != 0))
    return false;
  if (f->only_contended && !l->queue.n) return false;
  if (f->only_held && !l->holder) return false;
  return true;
}

/* Creation order, not hash order: the same table lists the same way. */
size_t rv_lt_lock_list(const rv_lt *lt, const rv_lt_filter *f, rv_lt_lock_fn fn, void *arg) {
  size_t n = 0;
  for (const link *e = lt->locks_all.head; e; e = e->next) {
    const lock *l = CONTAINER(e, lock, all);
    if (!lock_matches(l, f)) continue;
    rv_lt_lock_view v;
    lock_view(l, &v);
    n++;
    if (!fn(&v, arg)) break;
  }
  return n;
}

/* Expiry is derived, never stored, so it cannot go stale. */
static void session_view(const session *s, rv_lt_session_view *v) {
  v->id = s->id;
  identity_view(s, &v->identity);
  v->ttl_ns = s->ttl_ns;
  v->opened_ns = s->opened_ns;
  v->last_keepalive_ns = s->last_keepalive_ns;
  v->expires_ns = session_expiry(s);
  v->held = s->held.n;
  v->waiting = s->waiting.n;
}

/*
 * Per-session introspection: what a process holds and awaits, the half of a
 * cross-process wait-for graph that lives in coord.
 */
int rv_lt_session_get(const rv_lt *lt, uint64_t session_id, rv_lt_session_view *out) {
  const session *s = session_find(lt, session_id);
  if (!s) return RV_LT_ENOSESSION;
  session_view(s, out);
  return RV_LT_OK;
}

size_t rv_lt_session_list(const rv_lt *lt, rv_lt_session_fn fn, void *arg) {
  size_t n = 0;
  for (const link *e = lt->sessions_all.head; e; e = e->next) {
    rv_lt_session_view v;
    session_view(CONTAINER(e, session, all), &v);
    n++;
    if (!fn(&v, arg)) break;
  }
  return n;
}

int rv_lt_session_held(const rv_lt *lt, uint64_t session_id, rv_lt_lock_fn fn, void *arg) {
  const session *s = session_find(lt, session_id);
  if (!s) return RV_LT_ENOSESSION;
  for (const link *e = s->held.head; e; e = e->next) {
    rv_lt_lock_view v;
    lock_view(CONTAINER(e, lock, hold_link), &v);
    if (!fn(&v, arg)) break;
  }
  return RV_LT_OK;
}

int rv_lt_session_waiting(const rv_lt *lt, uint64_t session_id, rv_lt_waiter_fn fn, void *arg) {
  const session *s = session_find(lt, session_id);
  if (!s) return RV_LT_ENOSESSION;
  for (const link *e = s->waiting.head; e; e = e->next) {
    const waiter *w = CONTAINER(e, waiter, sess_link);
    size_t pos = 1; /* introspection only: walking the queue is fine */
    for (const link *q = w->lock->queue.head; q != &w->queue_link; q = q->next) pos++;
    rv_lt_waiter_view v;
    waiter_view(w, pos, &v);
    if (!fn(&v, arg)) break;
  }
  return RV_LT_OK;
}

/* Gauges are read from the structures, so they cannot drift from them. */
void rv_lt_get_stats(const rv_lt *lt, rv_lt_stats *out) {
  *out = lt->st;
  out->sessions = lt->sessions.n;
  out->locks = lt->locks.n;
  out->locks_held = lt->nheld;
  out->locks_delayed = lt->ndelayed;
  out->waiters = lt->waiters.n;
}

/* ---- invariants ------------------------------------------------------------------------ */

/* Are a list's links consistent, and does it hold n elements? */
static bool list_ok(const list *l) {
  size_t n = 0;
  const link *prev = NULL;
  for (const link *e = l->head; e; e = e->next) {
    if (e->prev != prev) return false;
    prev = e;
    if (++n > l->n) return false;
  }
  return prev == l->tail && n == l->n;
}

/*
 * Recount everything from scratch and compare with the incremental state:
 * the model test and the simulator call it after every step.
 */
const char *rv_lt_check(const rv_lt *lt) {
  if (!list_ok(&lt->locks_all) || !list_ok(&lt->sessions_all)) return "broken table-wide list";
  if (lt->locks_all.n != lt->locks.n) return "lock list and lock hash disagree";
  if (lt->sessions_all.n != lt->sessions.n) return "session list and session hash disagree";
  if (lt->token_last < lt->o.token_floor) return "token below floor";
  for (size_t i = 0; i < lt->heap_n; i++) {
    if (lt->heap[i]->idx != i) return "timer heap index out of date";
    if (i > 0 && t_before(lt->heap[i], lt->heap[(i - 1) / 2])) return "timer heap out of order";
  }
  size_t held = 0, delayed = 0, waiters = 0, timers = 0;
  for (const link *e = lt->locks_all.head; e; e = e->next) {
    const lock *l = CONTAINER(e, lock, all);
    if (lock_find(lt, (rv_lt_str){l->name, l->name_len}, l->h.hash) != l)
      return "lock not found under its own name";
    if (!list_ok(&l->queue)) return "broken waiter queue";
    if (!l->holder && !l->delay_until_ns) return "idle lock record kept, or free lock with waiters";
    if (l->holder) {
      held++;
      if (session_find(lt, l->holder->id) != l->holder) return "holder session unknown";
      if (l->token == 0 || l->token > lt->token_last) return "holder token out of range";
      const link *h = l->holder->held.head;
      while (h && h != &l->hold_link) h = h->next;
      if (!h) return "held lock missing from its holder's list";
    }
    if (l->delay_until_ns) {
      delayed++;
      if (l->holder) return "lock held during its lock-delay";
      if (l->t.idx == T_UNARMED || l->t.deadline_ns != l->delay_until_ns)
        return "lock-delay without its timer";
      timers++;
    } else if (l->t.idx != T_UNARMED) {
      return "stray lock-delay timer";
    }
    for (const link *q = l->queue.head; q; q = q->next) {
      const waiter *w = CONTAINER(q, waiter, queue_link);
      waiters++;
      if (w->lock != l) return "waiter queued on the wrong lock";
      if (waiter_find(lt, w->id) != w) return "waiter not found by id";
      if (session_find(lt, w->sess->id) != w->sess) return "waiter of an unknown session";
      bool timed = w->deadline_ns != RV_LT_NO_DEADLINE;
      if (timed != (w->t.idx != T_UNARMED)) return "waiter deadline and timer disagree";
      if (timed) {
        if (w->t.deadline_ns != w->deadline_ns) return "waiter timer at the wrong deadline";
        timers++;
      }
    }
  }
  if (held != lt->nheld) return "held lock count is off";
  if (delayed != lt->ndelayed) return "delayed lock count is off";
  if (waiters != lt->waiters.n) return "waiter count is off";
  size_t sheld = 0, swaiting = 0;
  for (const link *e = lt->sessions_all.head; e; e = e->next) {
    const session *s = CONTAINER(e, session, all);
    if (!list_ok(&s->held) || !list_ok(&s->waiting)) return "broken session list";
    if (s->t.idx == T_UNARMED || s->t.deadline_ns != session_expiry(s))
      return "session without its expiry timer";
    timers++;
    for (const link *h = s->held.head; h; h = h->next)
      if (CONTAINER(h, lock, hold_link)->holder != s) return "session lists a lock it does not hold";
    for (const link *w = s->waiting.head; w; w = w->next)
      if (CONTAINER(w, waiter, sess_link)->sess != s) return "session lists a foreign waiter";
    sheld += s->held.n;
    swaiting += s->waiting.n;
  }
  if (sheld != held) return "holds per session do not add up";
  if (swaiting != waiters) return "waits per session do not add up";
  if (timers != lt->heap_n) return "timer heap holds strays";
  return NULL;
}
