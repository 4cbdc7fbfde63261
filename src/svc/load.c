/* The incident's load generator: see load.h. */
#include "svc/load.h"

#include "client/queue_client.h"
#include "rt/ctx.h"
#include "rt/rt.h"
#include "svc/svc.h"

#include <stdio.h>

static bool stopped(const rv_svc_load_opts *o) {
  return (o->stop && atomic_load(o->stop)) || (o->until_ns > 0 && rv_now_ns() >= o->until_ns);
}

int rv_svc_load_run(const rv_svc_load_opts *o) {
  rv_producer *p = NULL;
  rv_producer_opts po = {.host = o->queue_host, .port = o->queue_port};
  while (!p) {
    if (stopped(o))
      return RV_ECANCELED;
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, RV_SVC_LOAD_PUB_TIMEOUT_MS * RV_NS_PER_MS);
    if (rv_producer_open(&p, ctx, &po) != RV_OK) {
      p = NULL;
      rv_sleep(NULL, RV_SVC_LOAD_RETRY_MS * RV_NS_PER_MS); /* the queue may not listen yet */
    }
    rv_ctx_free(ctx);
  }
  const char *topic = o->topic ? o->topic : RV_SVC_DEFAULT_TOPIC;
  rv_rng rng;
  rv_rng_seed(&rng, o->seed);
  uint64_t resources = o->resources > 0 ? (uint64_t)o->resources : 1;
  int64_t period_ns = RV_NS_PER_S / (o->rate > 0 ? o->rate : 1), next = rv_now_ns();
  while (!stopped(o)) {
    char body[RV_SVC_LOAD_EVENT_MAX];
    int n = snprintf(body, sizeof body, "acct-%llu",
                     (unsigned long long)rv_rng_below(&rng, resources));
    for (int64_t i = 1; i <= o->items && n < (int)sizeof body - 16; i++)
      n += snprintf(body + n, sizeof body - (size_t)n, " item-%lld", (long long)i);
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, RV_SVC_LOAD_PUB_TIMEOUT_MS * RV_NS_PER_MS);
    if (rv_producer_pub(ctx, p, topic, body, (size_t)n) == RV_OK && o->published)
      atomic_fetch_add(o->published, 1);
    rv_ctx_free(ctx);
    next += period_ns;
    int64_t wait = next - rv_now_ns();
    if (wait > 0)
      rv_sleep(NULL, wait);
  }
  rv_producer_close(p);
  return RV_OK;
}
