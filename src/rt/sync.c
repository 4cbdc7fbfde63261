/*
 * Named, tracked, cancellable locks: rv_mutex, rv_rwlock, rv_cond.
 *
 * All three follow one pattern.  A small raw mutex guards the lock's state
 * and its FIFO of waiters.  A thread that cannot take the lock appends a
 * waiter record (on its own stack) to the queue, publishes the wait in the
 * registry and parks.  Whoever releases the lock decides who gets it next,
 * marks that waiter granted and unparks it: ownership is handed over, never
 * raced for, so the queue order is the grant order.  A waiter whose context
 * ends removes itself from the queue under the same raw mutex, so a grant and
 * a cancellation can never both win.
 *
 * The rwlock has Go's sync.RWMutex semantics:
 *   - a reader gets in only when no writer holds the lock and none waits;
 *   - a writer gets in when nobody holds the lock; writers queue FIFO;
 *   - when a writer unlocks, every reader that queued behind it gets in
 *     together, before the next writer (which then waits for them).
 * So a thread that read-locks twice deadlocks if a writer queues between its
 * two read locks: the writer waits for the first read hold, the second read
 * waits for the writer.  The registry reports the second read lock the
 * moment it is attempted (rv__check_recursive_read), writer or not.
 *
 * Every blocking acquisition by a thread that already holds a tracked lock
 * is also checked for lock order (rv__check_lock_order) before it can block,
 * so an ABBA pair is reported before it hangs, or even if it never does.  A
 * thread that holds nothing pays one relaxed load (lock_order_check); trylock
 * cannot block and adds no order.
 */
#include "obs/registry.h"
#include "rt/rt_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- waiting under a context ------------------------------------------------ */

static void unpark_cb(void *arg) { rv__unpark(arg); }

void rv__ctxwait_begin(rv__ctxwait *cw, rv_ctx *ctx, rv_thread *self) {
  cw->ctx = ctx;
  cw->watching = ctx && rv_ctx_watch_add(ctx, &cw->watch, unpark_cb, self);
}

void rv__ctxwait_end(rv__ctxwait *cw) {
  if (cw->watching)
    rv_ctx_watch_remove(cw->ctx, &cw->watch);
  cw->watching = false;
}

int rv__ctxwait_check(rv__ctxwait *cw, int64_t deadline_ns) {
  int err = rv_ctx_err(cw->ctx);
  if (err)
    return err;
  if (deadline_ns != RV_NO_DEADLINE && rv_now_ns() >= deadline_ns)
    return RV_ETIMEDOUT;
  return 0;
}

int64_t rv__ctxwait_deadline(rv__ctxwait *cw, int64_t deadline_ns) {
  int64_t d = rv_ctx_deadline(cw->ctx);
  return d < deadline_ns ? d : deadline_ns;
}

/* ---- FIFO of waiters ------------------------------------------------------------ */

static void q_push(rv__waitq *q, rv__waiter *w) {
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
}

static void q_remove(rv__waitq *q, rv__waiter *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    q->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    q->tail = w->prev;
  w->next = w->prev = NULL;
}

/* What a waiter is given with the lock (see rv__waiter.hold). */
struct rv__grant_hold {
  uint64_t id;
  const char *name, *file;
  int line;
  rv_lock_kind kind;
  rv_lock_mode mode;
};

/*
 * Hand the lock to w; caller holds the lock's raw mutex.  The waiter's published
 * state changes here, under that mutex, with the lock's: its wait ends and its hold
 * begins in the same step as the grant (a thread dump never sees a thread waiting
 * for a lock it was given, which would read as a deadlock with itself).
 */
static void grant(rv__waitq *q, rv__waiter *w) {
  q_remove(q, w);
  w->granted = true;
  rv__wait_end(w->thread);
  const struct rv__grant_hold *h = w->hold;
  if (h)
    rv__hold_add(w->thread, h->id, h->name, h->kind, h->mode, h->file, h->line);
  rv__unpark(w->thread); /* under the raw mutex: w cannot vanish before this */
}

/*
 * Park until w is granted, ctx ends or deadline_ns passes.  On failure w is
 * out of the queue and `withdrawn(obj)` has run under the raw mutex, so the
 * lock can pass itself on to whoever the leaver was blocking.
 */
static int block(rv_rawmu *mu, rv__waitq *q, rv__waiter *w, rv_ctx *ctx, int64_t deadline_ns,
                 void (*withdrawn)(void *obj), void *obj) {
  rv__ctxwait cw;
  rv__ctxwait_begin(&cw, ctx, w->thread);
  int rc;
  for (;;) {
    rv_rawmu_lock(mu);
    if (w->granted) {
      rv_rawmu_unlock(mu);
      rc = 0;
      break;
    }
    rc = rv__ctxwait_check(&cw, deadline_ns);
    if (rc) {
      q_remove(q, w);
      rv__wait_end(w->thread);
      if (withdrawn)
        withdrawn(obj);
      rv_rawmu_unlock(mu);
      break;
    }
    rv_rawmu_unlock(mu);
    rv__park(w->thread, rv__ctxwait_deadline(&cw, deadline_ns));
  }
  rv__ctxwait_end(&cw);
  return rc;
}

/* Lock-order check before a blocking acquisition; nearly free when self holds nothing. */
static inline void lock_order_check(rv_thread *self, uint64_t id, const char *name,
                                    const char *file, int line) {
  if (rv__holds_any(self))
    rv__check_lock_order(self, id, name, file, line);
}

static void copy_name(char *dst, const char *name) {
  snprintf(dst, RV_LOCK_NAME_MAX, "%s", name ? name : "?");
}

/* What a lock's slow path needs to know about the lock. */
typedef struct slow_path {
  rv_rawmu *mu;
  rv__waitq *q;
  int *queued;                  /* counter of waiters to bump (writers_waiting), or NULL */
  void (*withdrawn)(void *obj); /* see block() */
  void *obj;
  rv_wait_kind wait_kind;
  uint64_t id;
  const char *name;
  rv_lock_kind kind;
  rv_lock_mode mode;
} slow_path;

/*
 * The lock was not free: queue, publish the wait, park until granted or ctx
 * ends, and record the hold on success.  Called with sp->mu held; returns
 * with it released.
 */
static int acquire_slow(rv_thread *self, const slow_path *sp, rv_ctx *ctx, const char *file,
                        int line) {
  int err = rv_ctx_err(ctx);
  if (err) {
    rv_rawmu_unlock(sp->mu);
    return err;
  }
  struct rv__grant_hold hold = {sp->id, sp->name, file, line, sp->kind, sp->mode};
  rv__waiter w = {.thread = self, .hold = &hold};
  q_push(sp->q, &w);
  if (sp->queued)
    (*sp->queued)++;
  /* Published before anyone can grant it; grant() ends it and adds the hold. */
  rv__wait_begin(self, sp->wait_kind, sp->id, sp->name, file, line);
  rv_rawmu_unlock(sp->mu);
  return block(sp->mu, sp->q, &w, ctx, RV_NO_DEADLINE, sp->withdrawn, sp->obj);
}

/* ---- mutex -------------------------------------------------------------------- */

void rv_mutex_init(rv_mutex *m, const char *name) {
  memset(m, 0, sizeof *m);
  rv_rawmu_init(&m->mu);
  m->id = rv__registry_next_lock_id(rv_registry_current());
  copy_name(m->name, name);
}

void rv_mutex_destroy(rv_mutex *m) {
  if (m->owner || m->waiters.head) {
    fprintf(stderr, "ravel: mutex %s destroyed while held or awaited\n", m->name);
    abort();
  }
  rv_rawmu_destroy(&m->mu);
}

int rv__mutex_lock(rv_mutex *m, rv_ctx *ctx, const char *file, int line) {
  rv_thread *self = rv_thread_self();
  lock_order_check(self, m->id, m->name, file, line);
  rv_rawmu_lock(&m->mu);
  if (!m->owner) {
    m->owner = self;
    rv_rawmu_unlock(&m->mu);
    rv__hold_add(self, m->id, m->name, RV_LOCK_MUTEX, RV_MODE_WRITE, file, line);
    return RV_OK;
  }
  slow_path sp = {&m->mu, &m->waiters, NULL, NULL, NULL, RV_WAIT_MUTEX,
                  m->id,  m->name,     RV_LOCK_MUTEX, RV_MODE_WRITE};
  return acquire_slow(self, &sp, ctx, file, line);
}

int rv__mutex_trylock(rv_mutex *m, const char *file, int line) {
  rv_thread *self = rv_thread_self();
  rv_rawmu_lock(&m->mu);
  bool got = m->owner == NULL;
  if (got)
    m->owner = self;
  rv_rawmu_unlock(&m->mu);
  if (!got)
    return RV_EBUSY;
  rv__hold_add(self, m->id, m->name, RV_LOCK_MUTEX, RV_MODE_WRITE, file, line);
  return RV_OK;
}

void rv_mutex_unlock(rv_mutex *m) {
  rv_rawmu_lock(&m->mu);
  rv_thread *owner = m->owner;
  if (!owner) {
    rv_rawmu_unlock(&m->mu);
    fprintf(stderr, "ravel: unlock of unlocked mutex %s\n", m->name);
    abort();
  }
  /* Forget the hold before handing over, so no snapshot sees two owners. */
  rv__hold_remove(owner, m->id, RV_MODE_WRITE);
  m->owner = NULL;
  if (m->waiters.head) {
    rv__waiter *w = m->waiters.head;
    m->owner = w->thread;
    grant(&m->waiters, w);
  }
  rv_rawmu_unlock(&m->mu);
}

/* ---- rwlock ----------------------------------------------------------------------- */

void rv_rwlock_init(rv_rwlock *rw, const char *name) {
  memset(rw, 0, sizeof *rw);
  rv_rawmu_init(&rw->mu);
  rw->id = rv__registry_next_lock_id(rv_registry_current());
  copy_name(rw->name, name);
}

void rv_rwlock_destroy(rv_rwlock *rw) {
  if (rw->writer || rw->readers || rw->rq.head || rw->wq.head) {
    fprintf(stderr, "ravel: rwlock %s destroyed while held or awaited\n", rw->name);
    abort();
  }
  rv_rawmu_destroy(&rw->mu);
}

static void rw_grant_readers(rv_rwlock *rw) {
  while (rw->rq.head) {
    rw->readers++;
    grant(&rw->rq, rw->rq.head);
  }
}

/* Decide who gets the lock next; caller holds rw->mu. */
static void rw_dispatch(rv_rwlock *rw) {
  if (rw->writer)
    return;
  if (rw->wq.head && rw->readers == 0) {
    rv__waiter *w = rw->wq.head;
    rw->writers_waiting--;
    rw->writer = w->thread;
    grant(&rw->wq, w);
    return;
  }
  if (rw->writers_waiting == 0)
    rw_grant_readers(rw);
}

static void rw_writer_withdrawn(void *obj) {
  rv_rwlock *rw = obj;
  rw->writers_waiting--;
  rw_dispatch(rw);
}

int rv__rwlock_rdlock(rv_rwlock *rw, rv_ctx *ctx, const char *file, int line) {
  rv_thread *self = rv_thread_self();
  rv__check_recursive_read(self, rw->id, rw->name, file, line);
  lock_order_check(self, rw->id, rw->name, file, line);
  rv_rawmu_lock(&rw->mu);
  if (!rw->writer && rw->writers_waiting == 0) {
    rw->readers++;
    rv_rawmu_unlock(&rw->mu);
    rv__hold_add(self, rw->id, rw->name, RV_LOCK_RWLOCK, RV_MODE_READ, file, line);
    return RV_OK;
  }
  slow_path sp = {&rw->mu, &rw->rq, NULL,     NULL, NULL, RV_WAIT_RDLOCK,
                  rw->id,  rw->name, RV_LOCK_RWLOCK, RV_MODE_READ};
  return acquire_slow(self, &sp, ctx, file, line);
}

int rv__rwlock_wrlock(rv_rwlock *rw, rv_ctx *ctx, const char *file, int line) {
  rv_thread *self = rv_thread_self();
  lock_order_check(self, rw->id, rw->name, file, line);
  rv_rawmu_lock(&rw->mu);
  if (!rw->writer && rw->readers == 0 && rw->writers_waiting == 0) {
    rw->writer = self;
    rv_rawmu_unlock(&rw->mu);
    rv__hold_add(self, rw->id, rw->name, RV_LOCK_RWLOCK, RV_MODE_WRITE, file, line);
    return RV_OK;
  }
  slow_path sp = {&rw->mu, &rw->wq, &rw->writers_waiting, rw_writer_withdrawn, rw,
                  RV_WAIT_WRLOCK, rw->id, rw->name, RV_LOCK_RWLOCK, RV_MODE_WRITE};
  return acquire_slow(self, &sp, ctx, file, line);
}

void rv_rwlock_rdunlock(rv_rwlock *rw) {
  rv__hold_remove(rv_thread_self(), rw->id, RV_MODE_READ);
  rv_rawmu_lock(&rw->mu);
  if (rw->readers <= 0) {
    rv_rawmu_unlock(&rw->mu);
    fprintf(stderr, "ravel: rdunlock of rwlock %s not read-locked\n", rw->name);
    abort();
  }
  rw->readers--;
  rw_dispatch(rw);
  rv_rawmu_unlock(&rw->mu);
}

void rv_rwlock_wrunlock(rv_rwlock *rw) {
  rv_rawmu_lock(&rw->mu);
  rv_thread *writer = rw->writer;
  if (!writer) {
    rv_rawmu_unlock(&rw->mu);
    fprintf(stderr, "ravel: wrunlock of rwlock %s not write-locked\n", rw->name);
    abort();
  }
  rv__hold_remove(writer, rw->id, RV_MODE_WRITE);
  rw->writer = NULL;
  rw_grant_readers(rw); /* readers that queued behind this writer go first */
  rw_dispatch(rw);
  rv_rawmu_unlock(&rw->mu);
}

/* ---- condition variables --------------------------------------------------------------- */

void rv_cond_init(rv_cond *c, const char *name) {
  memset(c, 0, sizeof *c);
  rv_rawmu_init(&c->mu);
  c->id = rv__registry_next_lock_id(rv_registry_current());
  copy_name(c->name, name);
}

void rv_cond_destroy(rv_cond *c) { rv_rawmu_destroy(&c->mu); }

int rv__cond_wait(rv_cond *c, rv_mutex *m, rv_ctx *ctx, int64_t deadline_ns, const char *file,
                  int line) {
  rv_thread *self = rv_thread_self();
  rv__waiter w = {.thread = self};
  /* Queue before releasing m: a signal sent after we release m finds us. */
  rv_rawmu_lock(&c->mu);
  q_push(&c->waiters, &w);
  rv__wait_begin(self, RV_WAIT_COND, c->id, c->name, file, line); /* grant() ends it */
  rv_rawmu_unlock(&c->mu);
  rv_mutex_unlock(m);

  int rc = block(&c->mu, &c->waiters, &w, ctx, deadline_ns, NULL, NULL);
  rv__mutex_lock(m, NULL, file, line);
  return rc;
}

void rv_cond_signal(rv_cond *c) {
  rv_rawmu_lock(&c->mu);
  if (c->waiters.head)
    grant(&c->waiters, c->waiters.head);
  rv_rawmu_unlock(&c->mu);
}

void rv_cond_broadcast(rv_cond *c) {
  rv_rawmu_lock(&c->mu);
  while (c->waiters.head)
    grant(&c->waiters, c->waiters.head);
  rv_rawmu_unlock(&c->mu);
}

/* ---- external waits -------------------------------------------------------------------- */

void rv__wait_external_begin(const char *what, const char *file, int line) {
  rv__wait_begin(rv_thread_self(), RV_WAIT_EXTERNAL, 0, what, file, line);
}

void rv_wait_external_end(void) { rv__wait_end(rv_thread_self()); }
