/*
 * rv_ctx: deadlines and cancellation, in the manner of Go's context package.
 *
 * A context is a node in a tree.  Cancelling a node cancels its whole
 * subtree; a child's deadline is never later than its parent's.  Every
 * blocking rt call takes a context (NULL means "never cancelled, no
 * deadline") and returns RV_ECANCELED when it was cancelled or RV_EDEADLINE
 * when its deadline passed, promptly, from whatever it was blocked in.
 *
 * Lifetime: contexts are reference counted internally.  rv_ctx_free releases
 * the caller's reference and cancels the context (like calling the cancel
 * function Go returns); a child keeps its parent's memory alive, so children
 * and parents may be freed in any order.
 *
 * Deadlines are observed, not timed: no timer thread fires them.  A waiter
 * parks no later than its context's deadline and, on waking past it, marks
 * the context cancelled with RV_EDEADLINE (which then propagates to its
 * children and runs its watches).  rv_ctx_err does the same check.
 */
#ifndef RAVEL_RT_CTX_H
#define RAVEL_RT_CTX_H

#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RV_CTX_REASON_MAX 160

/* A cancellable child of parent (NULL: a new root). NULL on allocation failure. */
rv_ctx *rv_ctx_new(rv_ctx *parent);
/* A child that is cancelled with RV_EDEADLINE at deadline_ns (monotonic). */
rv_ctx *rv_ctx_with_deadline(rv_ctx *parent, int64_t deadline_ns);
/* A child whose deadline is now + timeout_ns. */
rv_ctx *rv_ctx_with_timeout(rv_ctx *parent, int64_t timeout_ns);

/*
 * Cancel ctx and its descendants with a reason (printf-style, copied,
 * truncated to RV_CTX_REASON_MAX - 1).  Idempotent: the first reason wins.
 */
void rv_ctx_cancel(rv_ctx *ctx, const char *reason_fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* 0 while live; RV_ECANCELED or RV_EDEADLINE once done. NULL ctx: 0. */
int rv_ctx_err(rv_ctx *ctx);
/*
 * Why ctx ended ("" while live).  The returned string stays valid and
 * unchanged until rv_ctx_free.
 */
const char *rv_ctx_reason(rv_ctx *ctx);
/* The effective deadline (RV_NO_DEADLINE if none). NULL ctx: RV_NO_DEADLINE. */
int64_t rv_ctx_deadline(const rv_ctx *ctx);

/* Cancel (reason "context released") and drop the caller's reference. */
void rv_ctx_free(rv_ctx *ctx);

/*
 * Watches: run fn(arg) when ctx is cancelled (explicitly, through a parent, or
 * when a waiter observes its deadline).  fn runs on the cancelling thread with
 * the context's internal lock held: it must be short, must not block, and
 * must not call into the same context.  Unparking a thread or setting a flag
 * is the intended use.
 */
typedef struct rv_ctx_watch {
  struct rv_ctx_watch *next, *prev;
  void (*fn)(void *arg);
  void *arg;
} rv_ctx_watch;

/* Returns true if registered; false if ctx is already done (fn not called). */
bool rv_ctx_watch_add(rv_ctx *ctx, rv_ctx_watch *w, void (*fn)(void *), void *arg);
/* After this returns, fn is not running and will not run for w. */
void rv_ctx_watch_remove(rv_ctx *ctx, rv_ctx_watch *w);

#ifdef __cplusplus
}
#endif
#endif
