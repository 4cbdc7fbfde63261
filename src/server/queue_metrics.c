/*
 * The queue server's metrics per topic, channel and consumer.
 *
 * The core belongs to the loop thread and /metrics is rendered on the admin
 * thread, so the loop thread takes a snapshot of the numbers once a second
 * (QPUB_REFRESH_NS) and the collector only reads the latest snapshot under
 * a raw mutex.  Counters are cumulative in the core, so rates come out right
 * whatever the scrape interval.  The end-to-end latency histogram (publish
 * to FIN) and the late-FIN and timeout-notification counters are updated by
 * the loop thread directly (they are atomics).
 *
 * Cardinality is bounded: at most QPUB_CHANNELS_MAX channels and
 * QPUB_CONSUMERS_MAX consumers are shown per scrape (the rest are counted in
 * ravel_queue_series_dropped).
 */
#include "server/queue_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QPUB_REFRESH_NS (1 * RV_NS_PER_S)
#define QPUB_TOPICS_MAX 256
#define QPUB_CHANNELS_MAX 512
#define QPUB_CONSUMERS_MAX 512

typedef struct qpub_topic {
  char topic[RV_NSQ_NAME_MAX_BYTES + 1];
  uint64_t messages, bytes, depth;
  uint64_t disk_bytes, segments, log_syncs;
} qpub_topic;

typedef struct qpub_channel {
  char topic[RV_NSQ_NAME_MAX_BYTES + 1], channel[RV_NSQ_NAME_MAX_BYTES + 1];
  uint64_t depth, in_flight, deferred, held, messages, finished, requeued, timeouts, lost;
  uint64_t clients;
} qpub_channel;

typedef struct qpub_consumer {
  char topic[RV_NSQ_NAME_MAX_BYTES + 1], channel[RV_NSQ_NAME_MAX_BYTES + 1];
  char client[96];
  int64_t ready;
  uint64_t in_flight, held, messages, finished, requeued, timeouts, late_fins;
} qpub_consumer;

typedef struct qpub {
  qpub_topic topics[QPUB_TOPICS_MAX];
  qpub_channel channels[QPUB_CHANNELS_MAX];
  qpub_consumer consumers[QPUB_CONSUMERS_MAX];
  size_t ntopics, nchannels, nconsumers;
  uint64_t dropped;
  uint64_t connections;
} qpub;

typedef struct walk {
  rv_qsrv *s;
  qpub *p;
} walk;

static bool pub_consumer(const rv_queue_consumer_stats *st, void *arg) {
  walk *w = arg;
  if (w->p->nconsumers == QPUB_CONSUMERS_MAX) {
    w->p->dropped++;
    return true;
  }
  const qconn *k = (const qconn *)(uintptr_t)st->cookie;
  qpub_consumer *c = &w->p->consumers[w->p->nconsumers++];
  snprintf(c->topic, sizeof c->topic, "%s", k->topic);
  snprintf(c->channel, sizeof c->channel, "%s", k->channel);
  snprintf(c->client, sizeof c->client, "%s@%s", k->ident.client_id[0] ? k->ident.client_id : "-",
           rv_sconn_peer(k->sc));
  c->ready = st->ready_count;
  c->in_flight = st->in_flight_count;
  c->held = st->held_count;
  c->messages = st->message_count;
  c->finished = st->finish_count;
  c->requeued = st->requeue_count;
  c->timeouts = st->timeout_count;
  c->late_fins = k->late_fins;
  return true;
}

static bool pub_channel(const rv_queue_channel_stats *st, void *arg) {
  walk *w = arg;
  if (w->p->nchannels == QPUB_CHANNELS_MAX) {
    w->p->dropped++;
    return true;
  }
  qpub_channel *c = &w->p->channels[w->p->nchannels++];
  snprintf(c->topic, sizeof c->topic, "%s", st->topic_name);
  snprintf(c->channel, sizeof c->channel, "%s", st->name);
  c->depth = st->depth;
  c->in_flight = st->in_flight_count;
  c->deferred = st->deferred_count;
  c->held = st->held_count;
  c->messages = st->message_count;
  c->finished = st->finish_count;
  c->requeued = st->requeue_count;
  c->timeouts = st->timeout_count;
  c->lost = st->lost_count;
  c->clients = st->client_count;
  rv_queue_consumer_list(w->s->q, st->handle, pub_consumer, w);
  return true;
}

static bool pub_topic(const rv_queue_topic_stats *st, void *arg) {
  walk *w = arg;
  if (w->p->ntopics == QPUB_TOPICS_MAX) {
    w->p->dropped++;
    return true;
  }
  qpub_topic *t = &w->p->topics[w->p->ntopics++];
  snprintf(t->topic, sizeof t->topic, "%s", st->name);
  t->messages = st->message_count;
  t->bytes = st->message_bytes;
  t->depth = st->depth;
  qs_topic *qt = st->store_ctx;
  if (qt && qt->log) {
    rv_qlog_stats ls;
    rv_qlog_stats_get(qt->log, &ls);
    t->disk_bytes = ls.disk_bytes;
    if (ls.failed)
      atomic_store(&w->s->storage_failed, ls.failed);
    t->segments = ls.segments;
    t->log_syncs = ls.log_syncs;
  }
  rv_queue_channel_list(w->s->q, st->handle, pub_channel, w);
  return true;
}

/* Loop thread: take a fresh snapshot and swap it in. */
static void refresh(void *arg) {
  rv_qsrv *s = arg;
  qpub *p = calloc(1, sizeof *p);
  if (p) {
    walk w = {s, p};
    rv_queue_topic_list(s->q, pub_topic, &w);
    p->connections = s->nconns;
    rv_rawmu_lock(&s->pub_mu);
    qpub *old = s->pub;
    s->pub = p;
    rv_rawmu_unlock(&s->pub_mu);
    free(old);
  }
  rv_timer_set(s->metrics_timer, rv_now_ns() + QPUB_REFRESH_NS);
}

typedef struct family {
  const char *name, *help;
  enum rv_metric_type type;
  size_t offset; /* into the row struct */
} family;

#define CH(field) offsetof(qpub_channel, field)
#define CO(field) offsetof(qpub_consumer, field)

static const family channel_families[] = {
    {"ravel_queue_channel_depth", "Messages ready on a channel (requeued + not yet read from the log).", RV_METRIC_GAUGE, CH(depth)},
    {"ravel_queue_channel_in_flight", "Messages in flight on a channel.", RV_METRIC_GAUGE, CH(in_flight)},
    {"ravel_queue_channel_deferred", "Deferred messages (DPUB, REQ with delay) on a channel.", RV_METRIC_GAUGE, CH(deferred)},
    {"ravel_queue_channel_held_slots", "In-flight slots held by timed-out messages (hold_slots consumers).", RV_METRIC_GAUGE, CH(held)},
    {"ravel_queue_channel_clients", "Consumers subscribed to a channel.", RV_METRIC_GAUGE, CH(clients)},
    {"ravel_queue_channel_messages_total", "Messages a channel received from its topic.", RV_METRIC_COUNTER, CH(messages)},
    {"ravel_queue_channel_finished_total", "Messages FIN'd on a channel.", RV_METRIC_COUNTER, CH(finished)},
    {"ravel_queue_channel_requeued_total", "REQs on a channel.", RV_METRIC_COUNTER, CH(requeued)},
    {"ravel_queue_channel_timeouts_total", "In-flight timeouts on a channel.", RV_METRIC_COUNTER, CH(timeouts)},
    {"ravel_queue_channel_lost_total", "Messages a channel skipped because the log no longer had them.", RV_METRIC_COUNTER, CH(lost)},
};

static const family consumer_families[] = {
    {"ravel_queue_consumer_in_flight", "Messages in flight to a consumer.", RV_METRIC_GAUGE, CO(in_flight)},
    {"ravel_queue_consumer_held_slots", "Slots a consumer's timed-out messages still hold.", RV_METRIC_GAUGE, CO(held)},
    {"ravel_queue_consumer_messages_total", "Deliveries to a consumer.", RV_METRIC_COUNTER, CO(messages)},
    {"ravel_queue_consumer_finished_total", "FINs from a consumer.", RV_METRIC_COUNTER, CO(finished)},
    {"ravel_queue_consumer_requeued_total", "REQs from a consumer.", RV_METRIC_COUNTER, CO(requeued)},
    {"ravel_queue_consumer_timeouts_total", "Messages that timed out on a consumer.", RV_METRIC_COUNTER, CO(timeouts)},
    {"ravel_queue_consumer_late_fins_total", "FIN/REQ/TOUCH from a consumer for ids no longer in flight to it.", RV_METRIC_COUNTER, CO(late_fins)},
};

static void collect(rv_metrics_writer *w, void *arg) {
  rv_qsrv *s = arg;
  rv_rawmu_lock(&s->pub_mu);
  const qpub *p = s->pub;
  if (!p) {
    rv_rawmu_unlock(&s->pub_mu);
    return;
  }
  rv_metrics_write_family(w, "ravel_queue_connections", "Client connections open.", RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, NULL, (double)p->connections);
  static const struct {
    const char *name, *help;
    enum rv_metric_type type;
    size_t off;
  } tf[] = {
      {"ravel_queue_topic_messages_total", "Messages published to a topic.", RV_METRIC_COUNTER, offsetof(qpub_topic, messages)},
      {"ravel_queue_topic_bytes_total", "Message bytes published to a topic.", RV_METRIC_COUNTER, offsetof(qpub_topic, bytes)},
      {"ravel_queue_topic_depth", "Messages a topic holds back (no channel yet, or paused).", RV_METRIC_GAUGE, offsetof(qpub_topic, depth)},
      {"ravel_queue_topic_disk_bytes", "Bytes of a topic's log segments on disk.", RV_METRIC_GAUGE, offsetof(qpub_topic, disk_bytes)},
      {"ravel_queue_topic_segments", "Segments in a topic's log.", RV_METRIC_GAUGE, offsetof(qpub_topic, segments)},
      {"ravel_queue_topic_fsyncs_total", "fdatasync calls on a topic's log (group commit).", RV_METRIC_COUNTER, offsetof(qpub_topic, log_syncs)},
  };
  for (size_t f = 0; f < sizeof tf / sizeof tf[0]; f++) {
    rv_metrics_write_family(w, tf[f].name, tf[f].help, tf[f].type);
    for (size_t i = 0; i < p->ntopics; i++)
      rv_metrics_write_sample(w, (const char *[]){"topic", p->topics[i].topic, NULL},
                              (double)*(const uint64_t *)((const char *)&p->topics[i] + tf[f].off));
  }
  for (size_t f = 0; f < sizeof channel_families / sizeof channel_families[0]; f++) {
    rv_metrics_write_family(w, channel_families[f].name, channel_families[f].help,
                            channel_families[f].type);
    for (size_t i = 0; i < p->nchannels; i++) {
      const qpub_channel *c = &p->channels[i];
      rv_metrics_write_sample(
          w, (const char *[]){"topic", c->topic, "channel", c->channel, NULL},
          (double)*(const uint64_t *)((const char *)c + channel_families[f].offset));
    }
  }
  for (size_t f = 0; f < sizeof consumer_families / sizeof consumer_families[0]; f++) {
    rv_metrics_write_family(w, consumer_families[f].name, consumer_families[f].help,
                            consumer_families[f].type);
    for (size_t i = 0; i < p->nconsumers; i++) {
      const qpub_consumer *c = &p->consumers[i];
      rv_metrics_write_sample(
          w, (const char *[]){"topic", c->topic, "channel", c->channel, "client", c->client, NULL},
          (double)*(const uint64_t *)((const char *)c + consumer_families[f].offset));
    }
  }
  rv_metrics_write_family(w, "ravel_queue_consumer_ready", "A consumer's RDY count.",
                          RV_METRIC_GAUGE);
  for (size_t i = 0; i < p->nconsumers; i++) {
    const qpub_consumer *c = &p->consumers[i];
    rv_metrics_write_sample(
        w, (const char *[]){"topic", c->topic, "channel", c->channel, "client", c->client, NULL},
        (double)c->ready);
  }
  rv_metrics_write_family(w, "ravel_queue_series_dropped",
                          "Topics, channels or consumers left out of this scrape (limits).",
                          RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, NULL, (double)p->dropped);
  rv_rawmu_unlock(&s->pub_mu);
}

void rv__qsrv_metrics_setup(rv_qsrv *s) {
  rv_metrics *m = s->metrics;
  s->m.late_fins = rv_counter_labels(rv_metrics_counter(
      m, "ravel_queue_late_fins_total", "FIN/REQ/TOUCH for ids no longer in flight to the sender.",
      NULL));
  s->m.timeouts_notified = rv_counter_labels(rv_metrics_counter(
      m, "ravel_queue_timeout_notifications_total",
      "Timeout frames sent to consumers that negotiated timeout_notify.", NULL));
  s->m.publish_errors = rv_counter_labels(rv_metrics_counter(
      m, "ravel_queue_publish_errors_total", "Publishes refused (limits, storage).", NULL));
  s->m.e2e = rv_metrics_histogram(m, "ravel_queue_e2e_latency_seconds",
                                  "From publish to FIN, per topic and channel.",
                                  (const char *[]){"topic", "channel", NULL}, NULL, 0);
  rv_metrics_add_collector(m, collect, s);
  s->metrics_timer = rv_timer_new(s->loop, refresh, s);
  refresh(s);
}

void rv__qsrv_metrics_free(rv_qsrv *s) {
  free(s->pub);
  s->pub = NULL;
}
