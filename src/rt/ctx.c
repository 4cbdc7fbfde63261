/*
 * Contexts: a cancellation tree with lazily observed deadlines.
 *
 * Locking: each context has a raw mutex guarding its state, its children list
 * and its watch list.  Cancellation walks downwards holding the parent's lock
 * while taking each child's (parent before child, always).  A child that is
 * freed unlinks itself from its parent while holding no lock of its own, so
 * the order is never inverted.  Children hold a reference on their parent,
 * which is why the parent pointer is always valid.
 */
#include "rt/ctx.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rv_ctx {
  rv_rawmu mu;
  atomic_int refs;
  rv_ctx *parent;
  rv_ctx *first_child;        /* children, doubly linked through sib_* */
  rv_ctx *sib_next, *sib_prev;
  int64_t deadline_ns;        /* effective: min(own, parent's) */
  atomic_int err;             /* 0 while live */
  char reason[RV_CTX_REASON_MAX];
  rv_ctx_watch *watches;
};

static void ctx_unref(rv_ctx *c);

/* Mark c and its subtree done; caller holds c->mu. */
static void cancel_locked(rv_ctx *c, int err, const char *reason) {
  if (atomic_load(&c->err) != 0)
    return;
  snprintf(c->reason, sizeof c->reason, "%s", reason);
  atomic_store(&c->err, err);
  for (rv_ctx_watch *w = c->watches; w; w = w->next)
    w->fn(w->arg);
  for (rv_ctx *ch = c->first_child; ch; ch = ch->sib_next) {
    rv_rawmu_lock(&ch->mu);
    char why[RV_CTX_REASON_MAX];
    snprintf(why, sizeof why, "parent: %s", reason);
    cancel_locked(ch, err, why);
    rv_rawmu_unlock(&ch->mu);
  }
}

/* Create a child; the child's deadline is clamped to the parent's. */
static rv_ctx *ctx_make(rv_ctx *parent, int64_t deadline_ns) {
  rv_ctx *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  rv_rawmu_init(&c->mu);
  atomic_init(&c->refs, 1);
  atomic_init(&c->err, 0);
  c->deadline_ns = deadline_ns;
  if (parent) {
    rv_rawmu_lock(&parent->mu);
    if (parent->deadline_ns < c->deadline_ns)
      c->deadline_ns = parent->deadline_ns;
    atomic_fetch_add(&parent->refs, 1);
    c->parent = parent;
    c->sib_next = parent->first_child;
    if (parent->first_child)
      parent->first_child->sib_prev = c;
    parent->first_child = c;
    int perr = atomic_load(&parent->err);
    if (perr) {
      /* Born cancelled: a child of a done context is done. */
      char why[RV_CTX_REASON_MAX];
      snprintf(why, sizeof why, "parent: %s", parent->reason);
      rv_rawmu_lock(&c->mu);
      cancel_locked(c, perr, why);
      rv_rawmu_unlock(&c->mu);
    }
    rv_rawmu_unlock(&parent->mu);
  }
  return c;
}

rv_ctx *rv_ctx_new(rv_ctx *parent) { return ctx_make(parent, RV_NO_DEADLINE); }

rv_ctx *rv_ctx_with_deadline(rv_ctx *parent, int64_t deadline_ns) {
  return ctx_make(parent, deadline_ns);
}

rv_ctx *rv_ctx_with_timeout(rv_ctx *parent, int64_t timeout_ns) {
  int64_t now = rv_now_ns();
  int64_t d = timeout_ns > RV_NO_DEADLINE - now ? RV_NO_DEADLINE : now + timeout_ns;
  return ctx_make(parent, d);
}

void rv_ctx_cancel(rv_ctx *ctx, const char *reason_fmt, ...) {
  if (!ctx)
    return;
  char why[RV_CTX_REASON_MAX] = "cancelled";
  if (reason_fmt) {
    va_list ap;
    va_start(ap, reason_fmt);
    vsnprintf(why, sizeof why, reason_fmt, ap);
    va_end(ap);
  }
  rv_rawmu_lock(&ctx->mu);
  cancel_locked(ctx, RV_ECANCELED, why);
  rv_rawmu_unlock(&ctx->mu);
}

int rv_ctx_err(rv_ctx *ctx) {
  if (!ctx)
    return 0;
  int err = atomic_load(&ctx->err);
  if (err || ctx->deadline_ns == RV_NO_DEADLINE)
    return err;
  if (rv_now_ns() < ctx->deadline_ns)
    return 0;
  rv_rawmu_lock(&ctx->mu);
  cancel_locked(ctx, RV_EDEADLINE, "deadline exceeded");
  err = atomic_load(&ctx->err);
  rv_rawmu_unlock(&ctx->mu);
  return err;
}

const char *rv_ctx_reason(rv_ctx *ctx) {
  if (!ctx || atomic_load(&ctx->err) == 0)
    return "";
  return ctx->reason;
}

int64_t rv_ctx_deadline(const rv_ctx *ctx) { return ctx ? ctx->deadline_ns : RV_NO_DEADLINE; }

/* Drop one reference; the last one unlinks from the parent and frees. */
static void ctx_unref(rv_ctx *c) {
  while (c && atomic_fetch_sub(&c->refs, 1) == 1) {
    rv_ctx *parent = c->parent;
    if (parent) {
      rv_rawmu_lock(&parent->mu);
      if (c->sib_prev)
        c->sib_prev->sib_next = c->sib_next;
      else
        parent->first_child = c->sib_next;
      if (c->sib_next)
        c->sib_next->sib_prev = c->sib_prev;
      rv_rawmu_unlock(&parent->mu);
    }
    rv_rawmu_destroy(&c->mu);
    free(c);
    c = parent; /* the child's reference on its parent goes too */
  }
}

void rv_ctx_free(rv_ctx *ctx) {
  if (!ctx)
    return;
  rv_rawmu_lock(&ctx->mu);
  cancel_locked(ctx, RV_ECANCELED, "context released");
  rv_rawmu_unlock(&ctx->mu);
  ctx_unref(ctx);
}

bool rv_ctx_watch_add(rv_ctx *ctx, rv_ctx_watch *w, void (*fn)(void *), void *arg) {
  w->fn = fn;
  w->arg = arg;
  w->prev = NULL;
  rv_rawmu_lock(&ctx->mu);
  if (atomic_load(&ctx->err)) {
    rv_rawmu_unlock(&ctx->mu);
    w->next = NULL;
    return false;
  }
  w->next = ctx->watches;
  if (ctx->watches)
    ctx->watches->prev = w;
  ctx->watches = w;
  rv_rawmu_unlock(&ctx->mu);
  return true;
}

void rv_ctx_watch_remove(rv_ctx *ctx, rv_ctx_watch *w) {
  rv_rawmu_lock(&ctx->mu);
  if (w->prev)
    w->prev->next = w->next;
  else if (ctx->watches == w)
    ctx->watches = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->next = w->prev = NULL;
  rv_rawmu_unlock(&ctx->mu);
}
