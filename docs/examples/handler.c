/*
 * A complete libravel program: the incident's service, written the fixed way.
 *
 * It consumes events from a topic; for each one it takes the distributed
 * lock of the event's resource, then obtains an upstream client from a
 * config-driven cache (read lock, released at the end of each use), and
 * finishes the message.  The handler's context is cancelled when the queue
 * says the message timed out, and the lock wait honours it.  The cache is
 * rebuilt only when the config it depends on actually changes.
 *
 *   handler COORD_PORT QUEUE_TCP_PORT N
 *
 * publishes N events, handles them, and exits 0 once all N are finished.
 * docs/libravel.md walks through it; the test suite builds it and runs it
 * against `ravel up` (tests/scripts/check_libravel_example.sh).
 */
#include <rt/ctx.h>
#include <rt/rt.h>
#include <client/coord_client.h>
#include <client/queue_client.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The object the cache builds from config: an "upstream client". */
typedef struct upstream {
  char url[256];
} upstream;

static int build_upstream(void *arg, const char *const *values, void **obj) {
  upstream *u = calloc(1, sizeof *u);
  if (!u)
    return RV_ENOMEM;
  snprintf(u->url, sizeof u->url, "%s", values[0] ? values[0] : "https://default.invalid");
  *obj = u;
  return RV_OK;
}

static void destroy_upstream(void *arg, void *obj) { free(obj); }

typedef struct app {
  rv_session *session;
  rv_config_cache *cache;
  atomic_int finished;
} app;

/* One event: "resource item item item". */
static int handle(rv_ctx *ctx, const rv_message *m, void *arg) {
  app *a = arg;
  char event[256];
  size_t n = m->len < sizeof event - 1 ? m->len : sizeof event - 1;
  memcpy(event, m->body, n);
  event[n] = 0;
  char *save = NULL;
  const char *resource = strtok_r(event, " ", &save);
  rv_thread_set_task("msg %s resource=%s", m->id_str, resource ? resource : "?");

  /* The lock wait honours the handler's context: a timed-out message gives up here. */
  rv_dlock *lock;
  int rc = rv_dlock_acquire(ctx, a->session, resource ? resource : "none", NULL, &lock);
  if (rc != RV_OK) {
    rv_message_set_requeue_delay(m, 100);
    return RV_MSG_REQUEUE;
  }
  for (const char *item = strtok_r(NULL, " ", &save); item; item = strtok_r(NULL, " ", &save)) {
    void *obj;
    uint64_t token;
    if (rv_config_cache_obtain_ctx(a->cache, ctx, &obj, &token) != RV_OK)
      break; /* the message timed out: give up (the lock is released below) */
    upstream *u = obj;
    (void)u; /* a real service would call u->url for this item here */
    rv_config_cache_release(a->cache, token); /* at the end of each iteration: the fix */
  }
  rv_dlock_release(lock);
  rv_thread_set_task(NULL);
  atomic_fetch_add(&a->finished, 1);
  return RV_MSG_FINISH;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: handler COORD_PORT QUEUE_TCP_PORT N\n");
    return 2;
  }
  uint16_t coord_port = (uint16_t)atoi(argv[1]), queue_port = (uint16_t)atoi(argv[2]);
  int total = atoi(argv[3]);
  rv_thread_adopt("main", "example");
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, 60 * RV_NS_PER_S); /* the whole run is bounded */

  rv_coord_client *cc;
  rv_coord_client_opts co = {.port = coord_port, .service = "example", .replica = "1"};
  if (rv_coord_client_open(&cc, ctx, &co) != RV_OK) {
    fprintf(stderr, "cannot reach coord on %u\n", coord_port);
    return 1;
  }
  app a = {0};
  if (rv_session_open(ctx, cc, 10000, &a.session) != RV_OK) {
    fprintf(stderr, "cannot open a session: %s\n", rv_coord_last_error());
    return 1;
  }
  static const char *const keys[] = {"upstream.url"};
  rv_config_cache_opts cfo = {.service = "example",
                              .replica = "1",
                              .keys = keys,
                              .nkeys = 1,
                              .lock_name = "client-cache",
                              .build = build_upstream,
                              .destroy = destroy_upstream};
  if (rv_config_cache_open(ctx, cc, &cfo, &a.cache) != RV_OK) {
    fprintf(stderr, "cannot open the config cache: %s\n", rv_coord_last_error());
    return 1;
  }

  rv_consumer_opts qo = {.port = queue_port,
                         .topic = "events",
                         .channel = "example",
                         .max_in_flight = 8,
                         .msg_timeout_ms = 5000,
                         .handler = handle,
                         .handler_arg = &a,
                         .cancel_on_server_timeout = true,
                         .hold_slots = true};
  rv_consumer *consumer;
  if (rv_consumer_open(&consumer, &qo) != RV_OK || rv_consumer_wait_ready(consumer, ctx) != RV_OK) {
    fprintf(stderr, "cannot consume from the queue on %u\n", queue_port);
    return 1;
  }
  rv_producer *producer;
  rv_producer_opts po = {.port = queue_port};
  if (rv_producer_open(&producer, ctx, &po) != RV_OK) {
    fprintf(stderr, "cannot publish to the queue on %u\n", queue_port);
    return 1;
  }
  for (int i = 0; i < total; i++) {
    char body[64];
    int len = snprintf(body, sizeof body, "acct-%d item-a item-b item-c", i % 3);
    if (rv_producer_pub(ctx, producer, "events", body, (size_t)len) != RV_OK) {
      fprintf(stderr, "publish %d failed\n", i);
      return 1;
    }
  }
  while (atomic_load(&a.finished) < total && rv_ctx_err(ctx) == RV_OK)
    rv_sleep(ctx, 10 * RV_NS_PER_MS);
  int done = atomic_load(&a.finished);
  rv_producer_close(producer);
  rv_consumer_stop(consumer);
  rv_consumer_free(consumer);
  rv_config_cache_close(a.cache);
  rv_session_close(a.session);
  rv_coord_client_close(cc);
  rv_ctx_free(ctx);
  printf("handled %d of %d events\n", done, total);
  return done == total ? 0 : 1;
}
