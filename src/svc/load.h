/*
 * The load generator of the incident: events "acct-K item-1 .. item-N" (the
 * reference service's format, svc.h) published at a steady rate to the
 * queue, K drawn from a seeded PRNG over `resources` resources.  One code
 * path for `ravel demo` (a thread of the demo process, real time) and for
 * the simulator's service scenario (a simulated process, virtual time).
 */
#ifndef RAVEL_SVC_LOAD_H
#define RAVEL_SVC_LOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Each publish is bounded by this; a publish that fails is dropped (not counted). */
#define RV_SVC_LOAD_PUB_TIMEOUT_MS 5000
/* The producer's connection is retried this often until the queue answers. */
#define RV_SVC_LOAD_RETRY_MS 200
/* Bytes of one event (items past it are left out). */
#define RV_SVC_LOAD_EVENT_MAX 256

typedef struct rv_svc_load_opts {
  const char *queue_host;  /* NULL: the producer's default (127.0.0.1) */
  uint16_t queue_port;     /* 0: the producer's default */
  const char *topic;       /* NULL: RV_SVC_DEFAULT_TOPIC */
  int64_t rate;            /* events per second (>= 1) */
  int64_t resources;       /* distinct resources (>= 1) */
  int64_t items;           /* items per event */
  uint64_t seed;           /* the PRNG that picks resources */
  const atomic_bool *stop; /* publishing ends when it becomes true (NULL: never) */
  int64_t until_ns;        /* ... or when rv_now_ns() reaches it (0: no end) */
  atomic_long *published;  /* acknowledged publishes are counted here (may be NULL) */
} rv_svc_load_opts;

/* Publish until stopped; RV_OK, or RV_ECANCELED when stopped before the queue answered. */
int rv_svc_load_run(const rv_svc_load_opts *o);

#ifdef __cplusplus
}
#endif
#endif
