/*
 * The embeddable admin HTTP server (libmicrohttpd): /metrics, /debug/threads,
 * /debug/locks, /healthz, plus routes a component adds.
 *
 * It runs on libmicrohttpd's own thread and its built-in handlers take no
 * application lock (only the registry's and the metrics' raw mutexes, which
 * are never held across a blocking call), so it answers while every
 * application thread is deadlocked: that is when its dumps matter most.
 *
 *   GET /healthz                 200 "ok\n"
 *   GET /metrics                 Prometheus text 0.0.4: the metrics registry
 *                                plus thread/lock gauges from the registry
 *   GET /debug/threads[?format=json]   thread dump with deadlocks
 *   GET /debug/locks[?format=json]     locks held or awaited, by lock
 *   GET /debug                   an index of the above
 */
#ifndef RAVEL_OBS_ADMIN_H
#define RAVEL_OBS_ADMIN_H

#include "obs/metrics.h"
#include "obs/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Request bodies larger than this are refused with 413. */
#define RV_ADMIN_BODY_MAX (6u << 20)
/* Routes a component may add. */
#define RV_ADMIN_ROUTES_MAX 48
/* Connections served at once; more wait in the kernel's backlog. */
#define RV_ADMIN_CONNECTIONS_MAX 256
#define RV_ADMIN_DEFAULT_HOST "127.0.0.1"

typedef struct rv_admin rv_admin;

typedef struct rv_admin_request {
  const char *method;
  const char *path;
  const char *body;   /* NUL-terminated copy; body_len excludes the NUL */
  size_t body_len;
  void *opaque;       /* for rv_admin_query */
} rv_admin_request;

typedef struct rv_admin_response {
  int status;                /* default 200 */
  const char *content_type;  /* default text/plain; charset=utf-8 */
  char *body;                /* malloc'd; the server frees it */
  size_t body_len;
  const char *header_name, *header_value; /* one extra header, optional */
} rv_admin_response;

/* Query parameter by name; NULL if absent. */
const char *rv_admin_query(const rv_admin_request *req, const char *name);
/* Set resp->body to a printf-formatted copy. */
void rv_admin_printf(rv_admin_response *resp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef void (*rv_admin_handler)(void *arg, const rv_admin_request *req, rv_admin_response *resp);

typedef struct rv_admin_opts {
  const char *host;       /* default 127.0.0.1 */
  uint16_t port;          /* 0: pick a free port */
  rv_metrics *metrics;    /* may be NULL */
  rv_registry *registry;  /* default: rv_registry_current() */
  /* One thread per connection, for handlers that may block (an HTTP publish
   * waiting for its fsync); default: one polling thread for all. */
  bool thread_per_connection;
} rv_admin_opts;

/* Start serving.  Returns 0, RV_EADDR (cannot bind) or RV_ENOMEM. */
int rv_admin_start(rv_admin **out, const rv_admin_opts *opts);
uint16_t rv_admin_port(const rv_admin *a);
/*
 * Add a route (exact path; a path ending in '/' matches as a prefix).
 * method NULL matches any.  Add routes before traffic arrives.
 */
int rv_admin_route(rv_admin *a, const char *method, const char *path, rv_admin_handler fn,
                   void *arg);
void rv_admin_stop(rv_admin *a);

/* The collector behind the thread and lock gauges on /metrics. */
void rv_registry_collect(rv_metrics_writer *w, void *registry);

#ifdef __cplusplus
}
#endif
#endif
