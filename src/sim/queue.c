/*
 * The "queue" scenario (scenario.h): the real queue server, the real libravel
 * producer and consumers in one simulated world, with network latency,
 * partitions between consumers and the queue, and handlers that outlive
 * their message's timeout.
 *
 * As in locks.c, everything runs as simulated threads of simulated processes
 * and the scenario's bookkeeping (`queue_sc`) is shared by all of them: the
 * world runs on one OS thread and a simulated thread is never preempted
 * between parks.  The server's log and journals live on the real disk in a
 * temporary directory (there is no simulated disk yet).
 */
#include "sim/common.h"
#include "sim/scenario.h"

#include "client/queue_client.h"
#include "core/queue.h"
#include "obs/log.h"
#include "server/queue.h"
#include "server/queue_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_PORT 4150
/* The queue's data directory, on its process's volume of the simulated disk (rt/fs.h): virtual. */
#define QUEUE_DATA_DIR "/var/lib/ravel/queue"
#define TOPIC "orders"
#define CHANNEL "work"
#define RETRY_NS (200 * RV_NS_PER_MS)
#define MONITOR_NS (10 * RV_NS_PER_MS)
#define HEARTBEAT_MS 1000

typedef struct queue_sc queue_sc;

typedef struct msg_rec {
  bool acked;         /* the producer's publish was acknowledged */
  uint32_t deliveries;
  uint32_t fin_returns; /* handler completions that returned FIN */
} msg_rec;

typedef struct cons_proc {
  queue_sc *sc;
  int index;
  rv_sim_proc *proc;
  rv_consumer *c;
  bool pool;
  int running;   /* handlers inside the handler function now */
  bool finished;
  char name[16];
} cons_proc;

struct queue_sc {
  rv_sim_queue_opts o;
  rv_sim_queue_result *r;
  rv_sim_world *w;
  rv_sim_proc *queue_proc, *prod_proc;
  cons_proc cons[RV_SIM_QUEUE_CONSUMERS_MAX];
  int procs_left; /* producer + consumers still running */
  char dir[64];
  rv_qsrv *qsrv;
  bool qsrv_up;
  bool producer_done;
  bool all_finished;   /* the server finished every message of the channel */
  int64_t end_ns;
  msg_rec *msgs;
  /* the server-side observer */
  uint64_t channel;    /* core handle, 0 until seen */
  uint64_t seen_fin, seen_deliveries, seen_requeues, seen_timeouts;
  uint8_t *finished;   /* per seq: observed in the FINISHED state */
  size_t nfinished_cap;
  uint64_t finished_msgs;
  sim_verdict verdict;
  sim_nemesis nemesis;
};

#define violation(sc, ...) SIM_VIOLATION(sc, __VA_ARGS__)

/* The diagnosis at the first violation: the producer and the consumers, with the queue's
 * per-client stats (sim_verdict's hook). */
static char *diagnose(void *arg) {
  queue_sc *sc = arg;
  rv_sim_proc *procs[RV_SIM_QUEUE_CONSUMERS_MAX + 1];
  size_t n = 0;
  procs[n++] = sc->prod_proc;
  for (int i = 0; i < sc->o.consumers; i++)
    procs[n++] = sc->cons[i].proc;
  return sim_diagnosis_text(procs, n, NULL, NULL, sc->qsrv_up ? sc->qsrv : NULL);
}

static uint64_t draw(queue_sc *sc, uint64_t n) { return rv_rng_below(rv_sim_rng(sc->w), n); }

/* ---- property: the server's view (after every step) ---------------------------------------- */

static bool find_channel(const rv_queue_channel_stats *cs, void *arg) {
  queue_sc *sc = arg;
  if (strcmp(cs->name, CHANNEL) == 0) {
    sc->channel = cs->handle;
    return false;
  }
  return true;
}

static bool find_topic(const rv_queue_topic_stats *ts, void *arg) {
  queue_sc *sc = arg;
  if (strcmp(ts->name, TOPIC) == 0) {
    rv_queue_channel_list(sc->qsrv->q, ts->handle, find_channel, sc);
    return false;
  }
  return true;
}

/* Scan every seq of the topic: FINISHED ones are marked; a marked one must stay FINISHED. */
static void scan_finished(queue_sc *sc, const rv_queue_channel_stats *cs) {
  rv_queue *q = sc->qsrv->q;
  rv_queue_topic_stats ts;
  if (rv_queue_topic_stats_get(q, cs->topic, &ts) != 0)
    return;
  if (ts.next_seq > sc->nfinished_cap) {
    size_t cap = (size_t)ts.next_seq * 2 + 64;
    uint8_t *f = realloc(sc->finished, cap);
    if (!f) {
      violation(sc, "out of memory in the observer");
      return;
    }
    memset(f + sc->nfinished_cap, 0, cap - sc->nfinished_cap);
    sc->finished = f;
    sc->nfinished_cap = cap;
  }
  for (uint64_t seq = 1; seq < ts.next_seq; seq++) {
    rv_queue_msg_view v;
    if (rv_queue_msg_get(q, sc->channel, seq, &v) != 0)
      continue;
    if (v.state == RV_QUEUE_MSG_FINISHED) {
      if (!sc->finished[seq]) {
        sc->finished[seq] = 1;
        sc->finished_msgs++;
      }
    } else if (sc->finished[seq]) {
      violation(sc, "message seq %" PRIu64 " left the FINISHED state (now state %d, attempt %u)",
                seq, v.state, v.attempts);
    }
  }
  if (cs->finish_count != sc->finished_msgs)
    violation(sc, "the server accepted %" PRIu64 " FINs for %" PRIu64
              " finished messages: a message was finished twice", cs->finish_count,
              sc->finished_msgs);
}

static void check_server(void *arg) {
  queue_sc *sc = arg;
  if (!sc->qsrv_up)
    return;
  rv_queue *q = sc->qsrv->q;
  if (!sc->channel) {
    rv_queue_topic_list(q, find_topic, sc);
    if (!sc->channel)
      return;
  }
  rv_queue_channel_stats cs;
  if (rv_queue_channel_stats_get(q, sc->channel, &cs) != 0) {
    violation(sc, "the channel %s/%s disappeared", TOPIC, CHANNEL);
    return;
  }
  if (cs.finish_count == sc->seen_fin && cs.delivery_count == sc->seen_deliveries &&
      cs.requeue_count == sc->seen_requeues && cs.timeout_count == sc->seen_timeouts)
    return; /* nothing moved on the channel */
  sc->seen_fin = cs.finish_count;
  sc->seen_deliveries = cs.delivery_count;
  sc->seen_requeues = cs.requeue_count;
  sc->seen_timeouts = cs.timeout_count;
  const char *bad = rv_queue_check(q);
  if (bad)
    violation(sc, "queue core invariant: %s", bad);
  scan_finished(sc, &cs);
  if (cs.lost_count)
    violation(sc, "the server lost %" PRIu64 " messages of the channel", cs.lost_count);
  rv_queue_topic_stats ts;
  if (sc->producer_done && !sc->all_finished && rv_queue_topic_stats_get(q, cs.topic, &ts) == 0 &&
      sc->finished_msgs == ts.next_seq - 1 && cs.depth == 0 && cs.in_flight_count == 0 &&
      cs.deferred_count == 0) {
    sc->all_finished = true;
    rv_sim_note(sc->w, "all %" PRIu64 " messages finished", sc->finished_msgs);
  }
}

/* ---- the queue process ------------------------------------------------------------------- */

static void queue_main(void *arg) {
  queue_sc *sc = arg;
  rv_log *log = rv_log_new(2, RV_LOG_ERROR, "queue");
  rv_qsrv_opts o = {.host = rv_sim_proc_addr(sc->queue_proc), .tcp_port = QUEUE_PORT,
                    .no_http = true, .data_dir = QUEUE_DATA_DIR, .log = log};
  char why[256];
  int rc = rv_qsrv_start(&sc->qsrv, &o, why, sizeof why);
  if (rc != RV_OK) {
    violation(sc, "the queue did not start: %s", why);
    rv_log_free(log);
    return;
  }
  sc->qsrv_up = true;
  rv_qsrv_run(sc->qsrv);
  /* Final tallies from the server's channel. */
  check_server(sc);
  if (sc->channel) {
    rv_queue_channel_stats cs;
    if (rv_queue_channel_stats_get(sc->qsrv->q, sc->channel, &cs) == 0) {
      sc->r->deliveries = cs.delivery_count;
      sc->r->fins_accepted = cs.finish_count;
      sc->r->timeouts = cs.timeout_count;
      sc->r->requeues = cs.requeue_count;
      sc->r->server_messages = cs.message_count;
    }
  }
  sc->qsrv_up = false;
  rv_qsrv_free(sc->qsrv);
  sc->qsrv = NULL;
  rv_log_free(log);
}

static void proc_done(queue_sc *sc) {
  if (--sc->procs_left == 0 && sc->qsrv)
    rv_qsrv_stop(sc->qsrv);
}

/* ---- the producer process ---------------------------------------------------------------- */

static void producer_main(void *arg) {
  queue_sc *sc = arg;
  rv_sleep(NULL, 300 * RV_NS_PER_MS); /* let the consumers subscribe first */
  rv_producer *p = sim_producer_open(rv_sim_proc_addr(sc->queue_proc), QUEUE_PORT, RETRY_NS);
  /* Spread the messages over the first 60% of the window. */
  int64_t gap = (sc->end_ns * 6 / 10) / sc->o.messages;
  for (int i = 0; i < sc->o.messages; i++) {
    char body[32];
    int n = snprintf(body, sizeof body, "m-%06d", i);
    for (;;) {
      rv_ctx *ctx = rv_ctx_with_timeout(NULL, 10 * RV_NS_PER_S);
      int rc = rv_producer_pub(ctx, p, TOPIC, body, (size_t)n);
      rv_ctx_free(ctx);
      if (rc == RV_OK)
        break;
      sc->r->publish_retries++;
      rv_sleep(NULL, RETRY_NS);
    }
    sc->msgs[i].acked = true;
    sc->r->published++;
    rv_sim_note(sc->w, "published %s", body);
    rv_sleep(NULL, (int64_t)draw(sc, (uint64_t)(2 * gap) + 1));
  }
  rv_producer_close(p);
  sc->producer_done = true;
  rv_sim_note(sc->w, "producer done: %d messages acknowledged", sc->o.messages);
  proc_done(sc);
}

/* ---- consumer processes ------------------------------------------------------------------- */

static int handler(rv_ctx *ctx, const rv_message *m, void *arg) {
  cons_proc *cp = arg;
  queue_sc *sc = cp->sc;
  int bound = sc->o.max_in_flight + RV_SIM_QUEUE_HANDLER_SLACK;
  if (++cp->running > bound)
    violation(sc, "%s runs %d handlers at once (max_in_flight %d)", cp->name, cp->running,
              sc->o.max_in_flight);
  int idx = -1;
  if (m->len == 8 && memcmp(m->body, "m-", 2) == 0) {
    char num[8];
    memcpy(num, m->body + 2, 6);
    num[6] = 0;
    idx = atoi(num);
  }
  if (idx < 0 || idx >= sc->o.messages) {
    violation(sc, "%s got a message that was never published (%zu bytes)", cp->name, m->len);
    cp->running--;
    return RV_MSG_FINISH;
  }
  sc->msgs[idx].deliveries++;
  rv_sim_note(sc->w, "%s handles m-%06d id %s attempt %u", cp->name, idx, m->id_str, m->attempts);
  /* Most handlers are quick; one in five runs past the message timeout. */
  int64_t work = draw(sc, 5) == 0
                     ? RV_SIM_QUEUE_MSG_TIMEOUT_MS * RV_NS_PER_MS + (int64_t)draw(sc, 3000) * RV_NS_PER_MS
                     : (int64_t)(5 + draw(sc, 300)) * RV_NS_PER_MS;
  int rc = rv_sleep(ctx, work);
  int verdict = RV_MSG_FINISH;
  if (rc != RV_OK) {
    /* Cancelled (timeout or lost connection).  Usually give it back; sometimes
     * finish a short non-cancellable step first and answer FIN anyway: a late
     * answer the server must refuse if the message was redelivered. */
    if (draw(sc, 4) == 0) {
      rv_sleep(NULL, (int64_t)draw(sc, 100) * RV_NS_PER_MS);
    } else {
      rv_message_set_requeue_delay(m, 50);
      verdict = RV_MSG_REQUEUE;
    }
  } else if (draw(sc, 20) == 0) {
    rv_message_set_requeue_delay(m, 100); /* a transient failure: try again later */
    verdict = RV_MSG_REQUEUE;
  }
  if (verdict == RV_MSG_FINISH) {
    sc->msgs[idx].fin_returns++;
    sc->r->handler_fins++;
  }
  rv_sim_note(sc->w, "%s answers %s for m-%06d attempt %u", cp->name,
              verdict == RV_MSG_FINISH ? "FIN" : "REQ", idx, m->attempts);
  cp->running--;
  return verdict;
}

static void consumer_main(void *arg) {
  cons_proc *cp = arg;
  queue_sc *sc = cp->sc;
  char client_id[32];
  snprintf(client_id, sizeof client_id, "sim-%s", cp->name);
  /* As the fixed reference service (src/svc) uses it. */
  rv_consumer_opts co = {.host = rv_sim_proc_addr(sc->queue_proc),
                         .port = QUEUE_PORT,
                         .topic = TOPIC,
                         .channel = CHANNEL,
                         .client_id = client_id,
                         .max_in_flight = sc->o.max_in_flight,
                         .msg_timeout_ms = RV_SIM_QUEUE_MSG_TIMEOUT_MS,
                         .heartbeat_interval_ms = HEARTBEAT_MS,
                         .handler = handler,
                         .handler_arg = cp,
                         .cancel_on_server_timeout = !sc->o.unfixed_consumers,
                         .hold_slots = !sc->o.unfixed_consumers,
                         .mode = cp->pool ? RV_CONSUMER_POOL : RV_CONSUMER_THREAD_PER_MESSAGE,
                         .pool_size = sc->o.max_in_flight,
                         .stop_timeout_ms = 1500};
  int rc = rv_consumer_open(&cp->c, &co);
  if (rc != RV_OK) {
    violation(sc, "%s: rv_consumer_open: %s", cp->name, rv_strerror(rc));
    proc_done(sc);
    return;
  }
  int bound = sc->o.max_in_flight + RV_SIM_QUEUE_HANDLER_SLACK;
  int64_t give_up = sc->end_ns + RV_SIM_QUEUE_LIVENESS_NS;
  rv_consumer_stats st;
  while (!sc->all_finished && rv_now_ns() < give_up) {
    rv_consumer_stats_get(cp->c, &st);
    if ((int)st.handler_threads_alive > sc->r->max_handlers)
      sc->r->max_handlers = (int)st.handler_threads_alive;
    if ((int)st.handler_threads_alive > bound)
      violation(sc, "%s has %" PRIu64 " handler threads alive (max_in_flight %d)", cp->name,
                st.handler_threads_alive, sc->o.max_in_flight);
    rv_sleep(NULL, MONITOR_NS);
  }
  rv_consumer_stop(cp->c);
  rv_consumer_stats_get(cp->c, &st);
  sc->r->late_answers += st.late_fins + st.late_reqs;
  sc->r->answers_dropped += st.answers_dropped;
  sc->r->reconnects += st.connection_losses;
  if (!sc->o.unfixed_consumers && (!st.timeout_notify_granted || !st.hold_slots_granted))
    violation(sc, "%s: the server did not grant timeout_notify and hold_slots", cp->name);
  rv_consumer_free(cp->c);
  cp->c = NULL;
  cp->finished = true;
  proc_done(sc);
}

/* ---- running ---------------------------------------------------------------------------------- */

static void final_checks(queue_sc *sc, int run_rc) {
  rv_sim_queue_result *r = sc->r;
  if (!r->ok)
    return;
  if (run_rc != RV_OK || !sc->all_finished) {
    int unacked = 0, unfinished = 0;
    for (int i = 0; i < sc->o.messages; i++) {
      unacked += !sc->msgs[i].acked;
      unfinished += sc->msgs[i].acked && sc->msgs[i].fin_returns == 0;
    }
    r->ok = false;
    r->violation_at = r->virtual_ns;
    snprintf(r->violation, sizeof r->violation,
             "liveness: %s %.0f s after the window (%d messages unacknowledged, %d acknowledged "
             "never finished by a handler, server finished %" PRIu64 "; %s)",
             sc->all_finished ? "the world did not end" : "messages still unfinished",
             (double)RV_SIM_QUEUE_LIVENESS_NS / RV_NS_PER_S, unacked, unfinished,
             sc->finished_msgs,
             run_rc == RV_EDEADLK   ? "every thread blocked for good"
             : run_rc == RV_OK      ? "the processes gave up"
                                    : "virtual time ran out");
    return;
  }
  for (int i = 0; i < sc->o.messages; i++) {
    if (!sc->msgs[i].acked || sc->msgs[i].fin_returns == 0) {
      r->ok = false;
      r->violation_at = r->virtual_ns;
      snprintf(r->violation, sizeof r->violation,
               "m-%06d (acknowledged %d) was never finished by a handler (%u deliveries)", i,
               sc->msgs[i].acked, sc->msgs[i].deliveries);
      return;
    }
  }
  if (r->fins_accepted != r->server_messages) {
    r->ok = false;
    r->violation_at = r->virtual_ns;
    snprintf(r->violation, sizeof r->violation,
             "the server accepted %" PRIu64 " FINs for %" PRIu64 " messages", r->fins_accepted,
             r->server_messages);
  }
}

int rv_sim_queue_run(const rv_sim_queue_opts *opts, rv_sim_queue_result *r) {
  memset(r, 0, sizeof *r);
  r->ok = true;
  queue_sc *sc = calloc(1, sizeof *sc);
  if (!sc)
    return RV_ENOMEM;
  sc->o = *opts;
  sim_opt_i64(&sc->o.virtual_ns, 30 * RV_NS_PER_S, 0);
  sim_opt_int(&sc->o.messages, 200, RV_SIM_QUEUE_MESSAGES_MAX);
  sim_opt_int(&sc->o.consumers, 3, RV_SIM_QUEUE_CONSUMERS_MAX);
  sim_opt_int(&sc->o.max_in_flight, 3, 0);
  sc->r = r;
  r->max_in_flight = sc->o.max_in_flight;
  sc->end_ns = sc->o.virtual_ns;
  sc->msgs = calloc((size_t)sc->o.messages, sizeof *sc->msgs);
  if (!sc->msgs) {
    free(sc);
    return RV_ENOMEM;
  }
  int rc = sim_stage_open(&sc->w, sc->dir, sizeof sc->dir, sc->o.seed, r->violation,
                          sizeof r->violation);
  if (rc != RV_OK) {
    r->ok = false;
    free(sc->msgs);
    free(sc);
    return rc;
  }
  sc->verdict = SIM_VERDICT_OF(sc->w, r);
  sc->verdict.diagnose = diagnose;
  sc->verdict.diagnose_arg = sc;
  sc->queue_proc = rv_sim_proc_new(sc->w, "queue");
  sc->prod_proc = rv_sim_proc_new(sc->w, "producer");
  sc->procs_left = 1 + sc->o.consumers;
  rv_sim_spawn(sc->queue_proc, "queue-loop", "server", queue_main, sc);
  rv_sim_spawn(sc->prod_proc, "main", "main", producer_main, sc);
  for (int i = 0; i < sc->o.consumers; i++) {
    cons_proc *cp = &sc->cons[i];
    cp->sc = sc;
    cp->index = i;
    cp->pool = i == 1; /* the second consumer runs a handler pool */
    snprintf(cp->name, sizeof cp->name, "consumer-%d", i + 1);
    cp->proc = rv_sim_proc_new(sc->w, cp->name);
    rv_sim_spawn(cp->proc, "main", "main", consumer_main, cp);
  }
  sim_nemesis_init(&sc->nemesis, sc->w, sc->queue_proc, sc->end_ns - (sc->end_ns * 15) / 100, &r->partitions);
  for (int i = 0; i < sc->o.consumers; i++)
    sc->nemesis.targets[sc->nemesis.ntargets++].proc = sc->cons[i].proc;
  if (!sc->o.no_partitions)
    sim_nemesis_start(&sc->nemesis, 1 * RV_NS_PER_S + (int64_t)draw(sc, 3000) * RV_NS_PER_MS);
  rv_sim_set_step_hook(sc->w, check_server, sc);

  rc = SIM_RUN(sc->w, sc->end_ns + RV_SIM_QUEUE_LIVENESS_NS + 30 * RV_NS_PER_S, r);
  final_checks(sc, rc);
  sim_verdict_finish(&sc->verdict);
  sim_stage_close(sc->w);
  free(sc->finished);
  free(sc->msgs);
  free(sc);
  return RV_OK;
}
