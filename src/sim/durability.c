/*
 * The "durability" scenario (scenario.h): the real queue server killed with
 * kill -9 semantics (rv_sim_proc_crash), its disk volume crashed
 * (rv_sim_disk_crash) and restarted over the same data directory, while real
 * libravel producers publish numbered bodies and consumers FIN them, over a
 * network that loses segments and resets connections.
 *
 * As in queue.c, the scenario's bookkeeping (`dur_sc`) is shared by every
 * simulated thread: one OS thread, no preemption between parks.  The checker
 * reads the server core directly (rv_qsrv's rv_queue) after every step; the
 * server of a crashed incarnation is never touched again (its memory is
 * leaked, as a killed process's is).
 *
 * Identity: a body "pP-NNNNNN" names a message for the producers and the
 * "acknowledged" property; a sequence number names it in the server core.  A
 * seq is stable across restarts once the message is durable (only durable
 * messages are delivered or finished), so FIN tracking is per seq.
 */
#include "sim/common.h"
#include "sim/scenario.h"

#include "client/queue_client.h"
#include "core/queue.h"
#include "obs/log.h"
#include "proto/nsq.h"
#include "rt/fs.h"
#include "server/queue.h"
#include "server/queue_internal.h"
#include "storage/qjournal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_NAME "queue" /* the process, and so its disk volume */
#define QUEUE_PORT 4150
#define TOPIC "events"
#define CHANNEL "store"
#define RETRY_NS (100 * RV_NS_PER_MS)
#define MONITOR_NS (20 * RV_NS_PER_MS)
#define MSG_TIMEOUT_MS 5000
#define HEARTBEAT_MS 1000
/* The nemesis strikes every STRIKE_MIN_MS..+STRIKE_SPAN_MS; a kill keeps the queue down
 * DOWN_MIN_MS..+DOWN_SPAN_MS; an armed kill that sees no publish strikes anyway after ARMED_NS. */
#define STRIKE_MIN_MS 1500
#define STRIKE_SPAN_MS 3500
#define DOWN_MIN_MS 100
#define DOWN_SPAN_MS 1900
#define ARMED_NS (1 * RV_NS_PER_S)
/* A FIN the server accepted this long before a crash may be forgotten by it (docs/queue.md). */
#define FIN_WINDOW_NS (RV_QJOURNAL_SYNC_INTERVAL_NS + RV_SIM_DURABILITY_FIN_SYNC_SLACK_NS)
#define BODY_LEN 9 /* "pP-NNNNNN" */

typedef struct dur_sc dur_sc;

typedef struct body_rec {
  bool acked;
  uint32_t deliveries, fin_returns;
  int64_t sent_at;  /* virtual time of the PUB that was acknowledged */
  int64_t acked_at; /* virtual time the producer got its OK */
} body_rec;

typedef struct seq_rec {
  int64_t finished_at; /* first seen FINISHED on the server (-1: not, or forgotten since) */
  int32_t body;        /* the body delivered under this seq (-1: none yet) */
  bool fin_now;        /* FINISHED in the current incarnation */
  bool fin_durable;    /* found FINISHED by a restarted server: its FIN is on disk */
} seq_rec;

typedef struct client_proc {
  dur_sc *sc;
  int index;
  rv_sim_proc *proc;
  char name[16];
} client_proc;

struct dur_sc {
  rv_sim_durability_opts o;
  rv_sim_durability_result *r;
  rv_sim_world *w;
  rv_sim_proc *queue_proc;
  client_proc prod[RV_SIM_DURABILITY_PRODUCERS_MAX];
  client_proc cons[RV_SIM_DURABILITY_CONSUMERS_MAX];
  rv_sim_proc *clients[RV_SIM_DURABILITY_PRODUCERS_MAX + RV_SIM_DURABILITY_CONSUMERS_MAX];
  int nclients;
  char dir[64];
  rv_qsrv *qsrv; /* the live incarnation's server; NULL while down */
  bool qsrv_up;
  int producers_left, procs_left;
  bool producers_done, healed, all_finished;
  int64_t end_ns;
  body_rec *bodies;
  int nbodies;
  rv_sim_disk_faults disk;
  rv_sim_faults net;
  /* the nemesis */
  bool armed;
  int64_t armed_until;
  int64_t *crash_at; /* every kill, in order */
  size_t ncrash, crash_cap;
  /* the observer (per incarnation unless said otherwise) */
  uint64_t topic, channel;
  uint64_t seen_next_seq, seen_fin, seen_deliveries, seen_requeues, seen_timeouts;
  bool rescan; /* a fresh incarnation: compare everything with what was seen before */
  seq_rec *seqs; /* across incarnations */
  size_t nseqs;
  uint64_t finished_msgs;
  uint64_t unfinished_now; /* seqs the last scan found not FINISHED */
  sim_verdict verdict;
};

#define violation(sc, ...) SIM_VIOLATION(sc, __VA_ARGS__)

/* The diagnosis at the first violation: producers and consumers, with the queue's per-client
 * stats while it is up (sim_verdict's hook). */
static char *diagnose(void *arg) {
  dur_sc *sc = arg;
  return sim_diagnosis_text(sc->clients, (size_t)sc->nclients, NULL, NULL,
                            sc->qsrv_up ? sc->qsrv : NULL);
}

static uint64_t draw(dur_sc *sc, uint64_t n) { return rv_rng_below(rv_sim_rng(sc->w), n); }

static bool seqs_grow(dur_sc *sc, uint64_t n) {
  if (n <= sc->nseqs)
    return true;
  size_t cap = (size_t)n * 2 + 64;
  seq_rec *s = realloc(sc->seqs, cap * sizeof *s);
  if (!s) {
    violation(sc, "out of memory in the observer");
    return false;
  }
  for (size_t i = sc->nseqs; i < cap; i++)
    s[i] = (seq_rec){.finished_at = -1, .body = -1};
  sc->seqs = s;
  sc->nseqs = cap;
  return true;
}

/* ---- the nemesis's kill ---------------------------------------------------------------------- */

static void queue_main(void *arg);

static void restart_queue(void *arg) {
  dur_sc *sc = arg;
  if (rv_sim_proc_alive(sc->queue_proc))
    return;
  int rc = rv_sim_proc_restart(sc->queue_proc);
  if (rc == RV_OK)
    rc = rv_sim_spawn(sc->queue_proc, "queue-loop", "server", queue_main, sc);
  if (rc != RV_OK) {
    violation(sc, "cannot restart the queue process: %s", rv_strerror(rc));
    return;
  }
  sc->r->restarts++;
}

static void crash_queue(dur_sc *sc, bool armed) {
  if (!rv_sim_proc_alive(sc->queue_proc))
    return;
  rv_sim_proc_crash(sc->queue_proc);
  rv_sim_disk_crash(sc->w, QUEUE_NAME, &sc->disk);
  int64_t now = rv_sim_now(sc->w);
  if (sc->ncrash == sc->crash_cap) {
    size_t cap = sc->crash_cap ? sc->crash_cap * 2 : 16;
    int64_t *a = realloc(sc->crash_at, cap * sizeof *a);
    if (!a) {
      violation(sc, "out of memory in the nemesis");
      return;
    }
    sc->crash_at = a;
    sc->crash_cap = cap;
  }
  sc->crash_at[sc->ncrash++] = now;
  sc->r->crashes++;
  sc->r->armed_crashes += armed;
  sc->armed = false;
  /* The dead server is never looked at again; the next incarnation is observed afresh. */
  sc->qsrv = NULL;
  sc->qsrv_up = false;
  sc->topic = sc->channel = 0;
  sc->seen_next_seq = sc->seen_fin = sc->seen_deliveries = sc->seen_requeues =
      sc->seen_timeouts = 0;
  sc->finished_msgs = 0;
  for (size_t i = 0; i < sc->nseqs; i++)
    sc->seqs[i].fin_now = false;
  rv_sim_at(sc->w, now + (DOWN_MIN_MS + (int64_t)draw(sc, DOWN_SPAN_MS)) * RV_NS_PER_MS,
            restart_queue, sc);
}

static void strike(void *arg) {
  dur_sc *sc = arg;
  int64_t now = rv_sim_now(sc->w);
  if (now >= sc->end_ns)
    return;
  uint64_t what = draw(sc, 10);
  if (what < 6 && !sc->o.no_crashes) {
    if (draw(sc, 2) == 0) {
      crash_queue(sc, false);
    } else if (rv_sim_proc_alive(sc->queue_proc)) {
      /* Kill right after the next publish reaches the server: between its write and its sync. */
      sc->armed = true;
      sc->armed_until = now + ARMED_NS;
    }
  } else if (!sc->o.no_net_faults && sc->nclients > 0) {
    rv_sim_proc *c = sc->clients[draw(sc, (uint64_t)sc->nclients)];
    sc->r->resets += (uint64_t)rv_sim_reset_conns(sc->w, sc->queue_proc, c);
  }
  rv_sim_at(sc->w,
            now + (STRIKE_MIN_MS + (int64_t)draw(sc, STRIKE_SPAN_MS)) * RV_NS_PER_MS, strike, sc);
}

static void heal(void *arg) {
  dur_sc *sc = arg;
  sc->healed = true;
  sc->armed = false;
  rv_sim_set_faults(sc->w, NULL);
  rv_sim_note(sc->w, "faults healed");
}

static void faults_on(void *arg) {
  dur_sc *sc = arg;
  rv_sim_set_faults(sc->w, &sc->net);
}

/* ---- property: the server's view (after every step) ---------------------------------------- */

static bool find_channel(const rv_queue_channel_stats *cs, void *arg) {
  dur_sc *sc = arg;
  if (strcmp(cs->name, CHANNEL) == 0) {
    sc->channel = cs->handle;
    return false;
  }
  return true;
}

static bool find_topic(const rv_queue_topic_stats *ts, void *arg) {
  dur_sc *sc = arg;
  if (strcmp(ts->name, TOPIC) == 0) {
    sc->topic = ts->handle;
    rv_queue_channel_list(sc->qsrv->q, ts->handle, find_channel, sc);
    return false;
  }
  return true;
}

static void scan(dur_sc *sc, uint64_t next_seq) {
  rv_queue *q = sc->qsrv->q;
  if (!seqs_grow(sc, next_seq))
    return;
  int64_t now = rv_sim_now(sc->w);
  bool fresh = sc->rescan;
  sc->rescan = false;
  sc->unfinished_now = 0;
  for (uint64_t seq = 1; seq < next_seq; seq++) {
    seq_rec *s = &sc->seqs[seq];
    rv_queue_msg_view v;
    if (rv_queue_msg_get(q, sc->channel, seq, &v) != 0 || v.state == RV_QUEUE_MSG_NONE)
      continue; /* below the recovered channel's floor (all finished), or not on this channel */
    if (v.state == RV_QUEUE_MSG_FINISHED) {
      if (!s->fin_now) {
        s->fin_now = true;
        sc->finished_msgs++;
        if (s->finished_at < 0)
          s->finished_at = now;
        if (fresh)
          s->fin_durable = true;
      }
      continue;
    }
    sc->unfinished_now++;
    if (s->fin_now) {
      violation(sc, "seq %" PRIu64 " left the FINISHED state without a crash (state %d, attempt %u)",
                seq, v.state, v.attempts);
    } else if (fresh && s->finished_at >= 0) {
      /* FINISHED before a crash, not after this restart: the FIN was forgotten, so the message
       * will be delivered again.  Allowed only for a FIN made within the window before the
       * first crash after it, and never once a restarted server had it. */
      int64_t tc = -1;
      for (size_t i = 0; i < sc->ncrash && tc < 0; i++)
        if (sc->crash_at[i] >= s->finished_at)
          tc = sc->crash_at[i];
      int64_t before = tc - s->finished_at;
      if (s->fin_durable)
        violation(sc, "seq %" PRIu64 " was FINISHED (at %.3f s) after a restart, so on disk, and "
                  "is not after this one (state %d): a durable FIN was lost", seq,
                  (double)s->finished_at / RV_NS_PER_S, v.state);
      else if (before > FIN_WINDOW_NS)
        violation(sc, "seq %" PRIu64 " was FINISHED at %.3f s, %.0f ms before the crash at %.3f s, "
                  "and is not after the restart (state %d): a FIN outside the %.0f ms window "
                  "was lost", seq, (double)s->finished_at / RV_NS_PER_S,
                  (double)before / RV_NS_PER_MS, (double)tc / RV_NS_PER_S, v.state,
                  (double)RV_QJOURNAL_SYNC_INTERVAL_NS / RV_NS_PER_MS);
      else
        sc->r->redelivered_after_fin++;
      s->finished_at = -1;
      s->fin_durable = false;
    }
  }
}

static void check_server(void *arg) {
  dur_sc *sc = arg;
  if (!sc->qsrv_up)
    return;
  rv_queue *q = sc->qsrv->q;
  if (!sc->channel) {
    rv_queue_topic_list(q, find_topic, sc);
    if (!sc->topic)
      return;
  }
  rv_queue_topic_stats ts;
  if (rv_queue_topic_stats_get(q, sc->topic, &ts) != 0) {
    violation(sc, "the topic %s disappeared", TOPIC);
    return;
  }
  /* A fresh incarnation's first look is not a publish. */
  bool published = !sc->rescan && ts.next_seq != sc->seen_next_seq;
  sc->seen_next_seq = ts.next_seq;
  if (sc->armed && (published || rv_sim_now(sc->w) >= sc->armed_until) && !sc->healed &&
      rv_sim_proc_current() != sc->queue_proc) { /* a process cannot kill itself */
    crash_queue(sc, published); /* between a publish's write and its sync */
    return;
  }
  if (!sc->channel)
    return;
  rv_queue_channel_stats cs;
  if (rv_queue_channel_stats_get(q, sc->channel, &cs) != 0) {
    violation(sc, "the channel %s/%s disappeared", TOPIC, CHANNEL);
    return;
  }
  bool ending = sc->producers_done && sc->healed && !sc->all_finished;
  if (!sc->rescan && !published && !ending && cs.finish_count == sc->seen_fin &&
      cs.delivery_count == sc->seen_deliveries && cs.requeue_count == sc->seen_requeues &&
      cs.timeout_count == sc->seen_timeouts)
    return; /* nothing moved */
  sc->seen_fin = cs.finish_count;
  sc->seen_deliveries = cs.delivery_count;
  sc->seen_requeues = cs.requeue_count;
  sc->seen_timeouts = cs.timeout_count;
  const char *bad = rv_queue_check(q);
  if (bad)
    violation(sc, "queue core invariant: %s", bad);
  if (cs.lost_count)
    violation(sc, "the server lost %" PRIu64 " messages of the channel", cs.lost_count);
  scan(sc, ts.next_seq);
  sc->r->server_messages = cs.message_count;
  if (sc->producers_done && sc->healed && !sc->all_finished &&
      sc->unfinished_now == 0 && cs.depth == 0 && cs.in_flight_count == 0 && cs.deferred_count == 0) {
    sc->all_finished = true;
    rv_sim_note(sc->w, "all %" PRIu64 " messages finished", sc->finished_msgs);
  }
}

/* ---- the queue process ------------------------------------------------------------------- */

/*
 * The data directory exists, durably, before the queue first starts (an
 * installer made it): the queue answers for what it creates inside, not for
 * /tmp.  Every ancestor's entry is synced from the root down.
 */
static int install_data_dir(const char *dir) {
  int rc = rv_fs_mkdir_p(dir);
  char path[RV_FS_PATH_MAX];
  for (size_t i = 0; rc == RV_OK && dir[i]; i++) {
    if (dir[i] != '/' || i + 1 >= sizeof path)
      continue;
    memcpy(path, dir, i);
    path[i] = 0;
    rc = rv_fs_sync_dir(i ? path : "/");
  }
  return rc == RV_OK ? rv_fs_sync_dir(dir) : rc;
}

static void queue_main(void *arg) {
  dur_sc *sc = arg;
  if (rv_sim_proc_incarnation(sc->queue_proc) == 0) {
    int rc = install_data_dir(sc->dir);
    if (rc != RV_OK) {
      violation(sc, "cannot make the data directory %s: %s", sc->dir, rv_strerror(rc));
      return;
    }
  }
  rv_log *log = rv_log_new(2, RV_LOG_ERROR, "queue");
  rv_qsrv_opts o = {.host = rv_sim_proc_addr(sc->queue_proc),
                    .tcp_port = QUEUE_PORT,
                    .no_http = true,
                    .data_dir = sc->dir,
                    .log = log,
                    .test_ack_before_sync = sc->o.ack_before_sync};
  char why[256];
  rv_qsrv *s;
  int rc = rv_qsrv_start(&s, &o, why, sizeof why);
  if (rc != RV_OK) {
    violation(sc, "the queue did not %s: %s",
              rv_sim_proc_incarnation(sc->queue_proc) ? "restart over its data" : "start", why);
    rv_log_free(log);
    return;
  }
  sc->qsrv = s;
  sc->qsrv_up = true;
  sc->rescan = true;
  if (sc->procs_left == 0)
    rv_qsrv_stop(s); /* everyone left while it was down */
  rv_qsrv_run(s);
  check_server(sc);
  sc->qsrv_up = false;
  sc->qsrv = NULL;
  rv_qsrv_free(s);
  rv_log_free(log);
}

static void proc_done(dur_sc *sc) {
  if (--sc->procs_left == 0 && sc->qsrv_up)
    rv_qsrv_stop(sc->qsrv);
}

/* ---- producers --------------------------------------------------------------------------------- */

static void producer_main(void *arg) {
  client_proc *cp = arg;
  dur_sc *sc = cp->sc;
  rv_sleep(NULL, 300 * RV_NS_PER_MS); /* let the consumers subscribe first */
  rv_producer *p = sim_producer_open(rv_sim_proc_addr(sc->queue_proc), QUEUE_PORT, RETRY_NS);
  /* Spread the messages over the first 70% of the window. */
  int64_t gap = (sc->end_ns * 7 / 10) / sc->o.messages;
  for (int i = 0; i < sc->o.messages; i++) {
    int idx = cp->index * sc->o.messages + i;
    char body[16];
    int n = snprintf(body, sizeof body, "p%d-%06d", cp->index, i);
    for (;;) {
      rv_ctx *ctx = rv_ctx_with_timeout(NULL, 10 * RV_NS_PER_S);
      sc->bodies[idx].sent_at = rv_sim_now(sc->w);
      int rc = rv_producer_pub(ctx, p, TOPIC, body, (size_t)n);
      rv_ctx_free(ctx);
      if (rc == RV_OK)
        break;
      sc->r->publish_retries++; /* not acknowledged: it may or may not be there; again */
      rv_sleep(NULL, RETRY_NS);
    }
    sc->bodies[idx].acked = true;
    sc->bodies[idx].acked_at = rv_sim_now(sc->w);
    sc->r->acknowledged++;
    rv_sim_note(sc->w, "acknowledged %s", body);
    rv_sleep(NULL, (int64_t)draw(sc, (uint64_t)(2 * gap) + 1));
  }
  rv_producer_close(p);
  if (--sc->producers_left == 0) {
    sc->producers_done = true;
    rv_sim_note(sc->w, "producers done");
  }
  proc_done(sc);
}

/* ---- consumers --------------------------------------------------------------------------------- */

static int body_index(dur_sc *sc, const rv_message *m) {
  if (m->len != BODY_LEN || m->body[0] != 'p' || m->body[2] != '-')
    return -1;
  int prod = m->body[1] - '0';
  int num = 0;
  for (int i = 3; i < BODY_LEN; i++) {
    if (m->body[i] < '0' || m->body[i] > '9')
      return -1;
    num = num * 10 + (m->body[i] - '0');
  }
  if (prod < 0 || prod >= sc->o.producers || num >= sc->o.messages)
    return -1;
  return prod * sc->o.messages + num;
}

static int handler(rv_ctx *ctx, const rv_message *m, void *arg) {
  client_proc *cp = arg;
  dur_sc *sc = cp->sc;
  int idx = body_index(sc, m);
  if (idx < 0) {
    violation(sc, "%s got a message that was never published (%zu bytes)", cp->name, m->len);
    return RV_MSG_FINISH;
  }
  uint64_t guid = 0;
  rv_nsq_id_parse(m->id, &guid);
  uint64_t seq = guid & RV_QUEUE_SEQ_MAX;
  if (seqs_grow(sc, seq + 1)) {
    seq_rec *s = &sc->seqs[seq];
    if (s->body >= 0 && s->body != idx)
      violation(sc, "seq %" PRIu64 " was delivered as p%d-%06d and now as p%d-%06d: a delivered "
                "(so durable) message was lost and its seq reused", seq,
                s->body / sc->o.messages, s->body % sc->o.messages, idx / sc->o.messages,
                idx % sc->o.messages);
    s->body = idx;
  }
  sc->bodies[idx].deliveries++;
  sc->r->deliveries++;
  rv_sim_note(sc->w, "%s handles p%d-%06d seq %" PRIu64 " attempt %u", cp->name,
              idx / sc->o.messages, idx % sc->o.messages, seq, m->attempts);
  if (rv_sleep(ctx, (int64_t)(1 + draw(sc, 50)) * RV_NS_PER_MS) != RV_OK) {
    rv_message_set_requeue_delay(m, 0);
    return RV_MSG_REQUEUE;
  }
  sc->bodies[idx].fin_returns++;
  sc->r->handler_fins++;
  return RV_MSG_FINISH;
}

static void consumer_main(void *arg) {
  client_proc *cp = arg;
  dur_sc *sc = cp->sc;
  char client_id[32];
  snprintf(client_id, sizeof client_id, "sim-%s", cp->name);
  rv_consumer_opts co = {.host = rv_sim_proc_addr(sc->queue_proc),
                         .port = QUEUE_PORT,
                         .topic = TOPIC,
                         .channel = CHANNEL,
                         .client_id = client_id,
                         .max_in_flight = 4,
                         .msg_timeout_ms = MSG_TIMEOUT_MS,
                         .heartbeat_interval_ms = HEARTBEAT_MS,
                         .handler = handler,
                         .handler_arg = cp,
                         .mode = RV_CONSUMER_THREAD_PER_MESSAGE,
                         .stop_timeout_ms = 1500};
  rv_consumer *c;
  int rc = rv_consumer_open(&c, &co);
  if (rc != RV_OK) {
    violation(sc, "%s: rv_consumer_open: %s", cp->name, rv_strerror(rc));
    proc_done(sc);
    return;
  }
  int64_t give_up = sc->end_ns + RV_SIM_DURABILITY_LIVENESS_NS;
  while (!sc->all_finished && rv_now_ns() < give_up)
    rv_sleep(NULL, MONITOR_NS);
  rv_consumer_stop(c);
  rv_consumer_free(c);
  proc_done(sc);
}

/* ---- running ---------------------------------------------------------------------------------- */

/* Bodies named one by one in the story of a loss; the rest are counted. */
#define LOST_TOLD_MAX 8

/*
 * The diagnosis of acknowledged messages lost, found once the run is over (the queue's
 * processes are gone, so there is no world to dump): each lost body with its PUB, its
 * OK and the queue crash that came nearest after the PUB, and what the timings say.
 */
static void lost_story(dur_sc *sc, int lost) {
  char *text = NULL;
  size_t len;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    return;
  int told = 0, in_flight = 0, after = 0;
  fprintf(f,
          "acknowledged bodies never delivered, each with its PUB, its OK and the first queue "
          "crash after the PUB (every crash also crashed the queue's disk, losing or tearing what "
          "was not synced):\n");
  for (int i = 0; i < sc->nbodies; i++) {
    const body_rec *b = &sc->bodies[i];
    if (!b->acked || b->deliveries)
      continue;
    size_t k = 0;
    while (k < sc->ncrash && sc->crash_at[k] < b->sent_at)
      k++;
    bool between = k < sc->ncrash && sc->crash_at[k] <= b->acked_at;
    in_flight += between;
    after += k < sc->ncrash && !between;
    if (told++ >= LOST_TOLD_MAX)
      continue;
    fprintf(f, "  p%d-%06d: PUB at %.6f s, OK at %.6f s; ", i / sc->o.messages, i % sc->o.messages,
            (double)b->sent_at / RV_NS_PER_S, (double)b->acked_at / RV_NS_PER_S);
    if (between)
      fprintf(f,
              "the queue crashed at %.6f s, in between (crash %zu of %zu): the OK was on its way "
              "from a queue about to die\n",
              (double)sc->crash_at[k] / RV_NS_PER_S, k + 1, sc->ncrash);
    else if (k < sc->ncrash)
      fprintf(f, "the queue crashed %.1f ms after the OK (at %.6f s, crash %zu of %zu)\n",
              (double)(sc->crash_at[k] - b->acked_at) / RV_NS_PER_MS,
              (double)sc->crash_at[k] / RV_NS_PER_S, k + 1, sc->ncrash);
    else
      fprintf(f, "no crash came after it\n");
  }
  if (told > LOST_TOLD_MAX)
    fprintf(f, "  ... and %d more\n", told - LOST_TOLD_MAX);
  if (in_flight)
    fprintf(f,
            "%d of %d were answered OK by a queue that crashed before the OK arrived, and lost "
            "with its disk's unsynced writes: the queue acknowledged before its disk had them (a "
            "PUB must be answered only after its sync, docs/queue.md)\n",
            in_flight, lost);
  if (after)
    fprintf(f, "%d of %d were lost in a crash after their OK arrived\n", after, lost);
  if (lost - in_flight - after)
    fprintf(f, "%d of %d were lost with no crash after their PUB: the queue lost them by itself\n",
            lost - in_flight - after, lost);
  fclose(f);
  snprintf(sc->r->diagnosis, sizeof sc->r->diagnosis, "%s", text ? text : "");
  free(text);
}

static void final_checks(dur_sc *sc, int run_rc) {
  rv_sim_durability_result *r = sc->r;
  if (!r->ok)
    return;
  int unacked = 0, lost = 0, unfinished = 0, first_lost = -1;
  for (int i = 0; i < sc->nbodies; i++) {
    body_rec *b = &sc->bodies[i];
    unacked += !b->acked;
    if (b->acked && b->deliveries == 0) {
      lost++;
      if (first_lost < 0)
        first_lost = i;
    } else if (b->acked && b->fin_returns == 0) {
      unfinished++;
    }
  }
  if (lost) {
    r->ok = false;
    r->violation_at = r->virtual_ns;
    snprintf(r->violation, sizeof r->violation,
             "acknowledged message lost: %d acknowledged bodies were never delivered (first "
             "p%d-%06d) after %" PRIu64 " crashes%s",
             lost, first_lost / sc->o.messages, first_lost % sc->o.messages, r->crashes,
             sc->all_finished ? " (the server finished everything it still had)" : "");
    lost_story(sc, lost);
    return;
  }
  if (run_rc != RV_OK || !sc->all_finished || unacked || unfinished) {
    r->ok = false;
    r->violation_at = r->virtual_ns;
    snprintf(r->violation, sizeof r->violation,
             "liveness: %s %.0f s after the window (%d bodies unacknowledged, %d acknowledged "
             "never FIN'd by a handler; %s)",
             sc->all_finished ? "the world did not end" : "messages still unfinished",
             (double)RV_SIM_DURABILITY_LIVENESS_NS / RV_NS_PER_S, unacked, unfinished,
             run_rc == RV_EDEADLK ? "every thread blocked for good"
             : run_rc == RV_OK    ? "the processes gave up"
                                  : "virtual time ran out");
  }
}

int rv_sim_durability_run(const rv_sim_durability_opts *opts, rv_sim_durability_result *r) {
  memset(r, 0, sizeof *r);
  r->ok = true;
  dur_sc *sc = calloc(1, sizeof *sc);
  if (!sc)
    return RV_ENOMEM;
  sc->o = *opts;
  sim_opt_i64(&sc->o.virtual_ns, 30 * RV_NS_PER_S, 0);
  sim_opt_int(&sc->o.producers, 3, RV_SIM_DURABILITY_PRODUCERS_MAX);
  sim_opt_int(&sc->o.messages, 100, RV_SIM_DURABILITY_MESSAGES_MAX);
  sim_opt_int(&sc->o.consumers, 2, RV_SIM_DURABILITY_CONSUMERS_MAX);
  sc->r = r;
  sc->end_ns = sc->o.virtual_ns;
  sc->nbodies = sc->o.producers * sc->o.messages;
  sc->bodies = calloc((size_t)sc->nbodies, sizeof *sc->bodies);
  if (!sc->bodies || !seqs_grow(sc, 1)) {
    free(sc->bodies);
    free(sc->seqs);
    free(sc);
    return RV_ENOMEM;
  }
  int rc = sim_stage_open(&sc->w, sc->dir, sizeof sc->dir, sc->o.seed, r->violation,
                          sizeof r->violation);
  if (rc != RV_OK) {
    r->ok = false;
    free(sc->bodies);
    free(sc->seqs);
    free(sc);
    return rc;
  }
  sc->verdict = SIM_VERDICT_OF(sc->w, r);
  sc->verdict.diagnose = diagnose;
  sc->verdict.diagnose_arg = sc;
  /* Swarm style: the seed also picks the fault mix. */
  sc->disk.lose_unsynced = 0.6 + (double)draw(sc, 41) / 100;
  sc->disk.torn_tail = (1 - sc->disk.lose_unsynced) / 2;
  sc->disk.lose_dir_ops = (double)draw(sc, 51) / 100;
  if (!sc->o.no_net_faults) {
    sc->net.loss = (double)(1 + draw(sc, 5)) / 100;
    sc->net.resets_per_s = (double)(1 + draw(sc, 5)) / 100;
  }
  rv_sim_note(sc->w, "disk faults: lose %.2f torn %.2f dir ops %.2f; loss %.2f resets %.2f/s",
              sc->disk.lose_unsynced, sc->disk.torn_tail, sc->disk.lose_dir_ops, sc->net.loss,
              sc->net.resets_per_s);
  sc->queue_proc = rv_sim_proc_new(sc->w, QUEUE_NAME);
  rv_sim_spawn(sc->queue_proc, "queue-loop", "server", queue_main, sc);
  sc->producers_left = sc->o.producers;
  sc->procs_left = sc->o.producers + sc->o.consumers;
  for (int i = 0; i < sc->o.consumers; i++) {
    client_proc *cp = &sc->cons[i];
    *cp = (client_proc){.sc = sc, .index = i};
    snprintf(cp->name, sizeof cp->name, "consumer-%d", i + 1);
    cp->proc = rv_sim_proc_new(sc->w, cp->name);
    sc->clients[sc->nclients++] = cp->proc;
    rv_sim_spawn(cp->proc, "main", "main", consumer_main, cp);
  }
  for (int i = 0; i < sc->o.producers; i++) {
    client_proc *cp = &sc->prod[i];
    *cp = (client_proc){.sc = sc, .index = i};
    snprintf(cp->name, sizeof cp->name, "producer-%d", i + 1);
    cp->proc = rv_sim_proc_new(sc->w, cp->name);
    sc->clients[sc->nclients++] = cp->proc;
    rv_sim_spawn(cp->proc, "main", "main", producer_main, cp);
  }
  if (!sc->o.no_net_faults)
    rv_sim_at(sc->w, 1 * RV_NS_PER_S, faults_on, sc);
  rv_sim_at(sc->w, (int64_t)(1000 + draw(sc, 2000)) * RV_NS_PER_MS, strike, sc);
  rv_sim_at(sc->w, sc->end_ns, heal, sc);
  rv_sim_set_step_hook(sc->w, check_server, sc);

  rc = SIM_RUN(sc->w, sc->end_ns + RV_SIM_DURABILITY_LIVENESS_NS + 30 * RV_NS_PER_S, r);
  final_checks(sc, rc);
  sim_verdict_finish(&sc->verdict);
  sim_stage_close(sc->w);
  free(sc->crash_at);
  free(sc->seqs);
  free(sc->bodies);
  free(sc);
  return RV_OK;
}
