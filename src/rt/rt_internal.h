/*
 * What the portable parts of rt (sync.c, ctx.c) need from a backend.
 * The OS backend implements it in rt_os.c; a simulation backend would
 * implement the same functions over coroutines and a virtual clock.
 */
#ifndef RAVEL_RT_INTERNAL_H
#define RAVEL_RT_INTERNAL_H

#include "rt/ctx.h"
#include "rt/rt.h"

/*
 * Park the calling thread until it is unparked or deadline_ns (monotonic)
 * passes.  A parker holds one permit: an unpark that comes before the park
 * makes the park return at once.  Spurious returns are allowed; callers loop
 * on their own condition.
 */
void rv__park(rv_thread *self, int64_t deadline_ns);
void rv__unpark(rv_thread *t);

/*
 * Wait as a cancellable thread: publish nothing, just park until woken,
 * until ctx ends or until deadline_ns.  Returns 0 when woken (check your
 * condition), RV_ECANCELED/RV_EDEADLINE when ctx is done, RV_ETIMEDOUT when
 * deadline_ns has passed.  `watch` must have been registered with
 * rv__watch_begin so that cancelling ctx unparks this thread.
 */
typedef struct rv__ctxwait {
  rv_ctx *ctx;
  rv_ctx_watch watch;
  bool watching;
} rv__ctxwait;

void rv__ctxwait_begin(rv__ctxwait *cw, rv_ctx *ctx, rv_thread *self);
void rv__ctxwait_end(rv__ctxwait *cw);
/* 0, RV_ECANCELED, RV_EDEADLINE or RV_ETIMEDOUT, checked in that order. */
int rv__ctxwait_check(rv__ctxwait *cw, int64_t deadline_ns);
/* The earlier of deadline_ns and the context's deadline. */
int64_t rv__ctxwait_deadline(rv__ctxwait *cw, int64_t deadline_ns);

#endif
