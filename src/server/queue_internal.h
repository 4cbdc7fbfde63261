/*
 * The queue server's internals, shared by its modules (not API):
 *   queue.c        the TCP protocol, events, acks, heartbeats, lifecycle
 *   queue_store.c  rv_qstore_ops over the durable log (storage/qlog.h) and recovery
 *   queue_http.c   NSQ's HTTP API (/pub, /mpub, /stats, topic and channel ops)
 *
 * Threads: the core, topics and connections belong to the loop thread.  The
 * HTTP API runs on libmicrohttpd's threads and reaches them only through
 * rv__qsrv_on_loop, which runs a function on the loop thread and waits.
 * Each topic's log has a sync thread, which reports durability through
 * on_durable -> a wake-up -> rv__qsrv_durable on the loop thread.
 */
#ifndef RAVEL_SERVER_QUEUE_INTERNAL_H
#define RAVEL_SERVER_QUEUE_INTERNAL_H

#include "core/queue.h"
#include "obs/admin.h"
#include "proto/nsq.h"
#include "rt/ctx.h"
#include "server/queue.h"
#include "storage/qjournal.h"
#include "storage/qlog.h"

#include <stdatomic.h>

/* Messages whose metadata a topic keeps in memory (the core's hot path). */
#define QSRV_META_RING 65536
/* On a ring miss, read this many records ahead (one sequential pass) into the ring. */
#define QSRV_META_PREFETCH 4096
/* Heartbeats and idle checks are evaluated this often. */
#define QSRV_HEARTBEAT_TICK_NS (100 * RV_NS_PER_MS)

typedef struct qs_meta {
  uint64_t seq;
  int64_t ts_ns;
  int64_t defer_until_ns;
  uint32_t body_bytes;
} qs_meta;

typedef struct qs_topic {
  rv_qsrv *srv;
  char name[RV_NSQ_NAME_MAX_BYTES + 1];
  char dir[600];
  rv_qlog *log;
  uint16_t id_prefix;
  bool ephemeral;
  bool paused;
  uint64_t core_id;      /* the core's handle (0 until created) */
  uint64_t acked;        /* last acked seq reported to the core */
  qs_meta *ring;         /* QSRV_META_RING entries */
  rv_qlog_iter *iter;    /* sequential reads for fetch */
  rv_qlog_iter *meta_iter; /* sequential reads that refill the meta ring */
  uint8_t *scratch;      /* random reads for fetch/meta: max_msg_size */
  size_t scratch_cap;
  struct qs_channel *channels; /* the store contexts of its channels */
  struct qs_topic *next, *prev;
} qs_topic;

typedef struct qs_channel {
  qs_topic *t;
  char name[RV_NSQ_NAME_MAX_BYTES + 1];
  char dir[700];
  rv_qjournal *j;        /* NULL for ephemeral channels: nothing to recover */
  bool ephemeral;
  bool paused;
  struct qs_channel *next, *prev;
} qs_channel;

/* A response that must wait until a publish is durable (replies stay in order). */
typedef struct qreply {
  struct qreply *next;
  qs_topic *t;           /* NULL: ready */
  uint64_t seq;          /* ready once t's acked seq >= seq */
  size_t len;
  uint8_t data[];
} qreply;

typedef struct qconn {
  rv_qsrv *srv;
  rv_sconn *sc;
  rv_nsq_decoder dec;
  rv_nsq_client_cfg cfg;
  rv_nsq_identify ident;
  bool identified;
  bool magic_ok;
  uint64_t consumer;     /* core consumer handle; 0 until SUB */
  char topic[RV_NSQ_NAME_MAX_BYTES + 1];
  char channel[RV_NSQ_NAME_MAX_BYTES + 1];
  qreply *pending_head, *pending_tail;
  int64_t last_read_ns;  /* monotonic */
  int64_t next_heartbeat_ns;
  int64_t connect_wall_ns;
  uint64_t late_fins;    /* FIN/REQ of ids no longer in flight */
  uint64_t timeouts_notified;
  uint64_t published;    /* PUB/MPUB/DPUB messages from this connection */
  uint64_t id;
  struct qconn *next, *prev;
} qconn;

struct rv_qsrv {
  rv_loop *loop;
  bool own_loop;
  rv_queue *q;
  rv_queue_events ev;
  rv_log *log;
  bool own_log;
  rv_metrics *metrics;
  bool own_metrics;
  rv_admin *http;
  uint16_t tcp_port, http_port;
  char host[64];
  char data_dir[512];
  rv_qsrv_opts o;          /* with defaults filled in */
  rv_nsq_opts nsq;
  rv_timer *timer;         /* the core's next deadline */
  rv_timer *hb_timer;      /* heartbeats and idle clients */
  rv_wakeup *durable_wake;
  rv_wakeup *job_wake;
  rv_rawmu job_mu;         /* guards jobs and loop_stopped */
  struct qjob *jobs;
  bool loop_stopped;       /* jobs now run on their caller's thread */
  atomic_int storage_failed; /* 0, or the rv_err a topic log failed with (/ping reports it) */
  struct qdwait *durable_waiters; /* HTTP publishes waiting for durability (loop-owned list) */
  qs_topic *topics;
  qconn *conns;
  size_t nconns;
  uint64_t next_conn_id;
  uint16_t id_prefix_next; /* persisted high-water mark */
  int64_t start_wall_ns;
  rv_nsq_buf frame;        /* scratch for encoding one frame */
  struct {
    rv_counter_child *late_fins, *timeouts_notified, *publish_errors;
    rv_histogram *e2e;     /* by topic, channel */
  } m;
  /* What /metrics reads from the admin thread: refreshed by the loop thread. */
  rv_rawmu pub_mu;
  struct qpub *pub;        /* the latest snapshot (queue_metrics.c) */
  rv_timer *metrics_timer;
};

/* Wall-clock now: the core's clock (timestamps and due times are persisted). */
int64_t rv__qsrv_now(void);

/* Run fn(s, arg) on the loop thread and wait for it (from any other thread). */
void rv__qsrv_on_loop(rv_qsrv *s, void (*fn)(rv_qsrv *s, void *arg), void *arg);

/*
 * Publish msgs to topic (created if needed).  Loop thread.  Returns an
 * RV_QUEUE_* code; on success *t and *last_seq say which seq must become
 * durable before the publish may be acknowledged (rv_qlog_wait_durable).
 */
int rv__qsrv_publish(rv_qsrv *s, const char *topic, rv_qstore_msg *msgs, size_t n, qs_topic **t,
                     uint64_t *last_seq);
/* Act on the core's events in s->ev (deliveries, notifications, closes), then clear them. */
void rv__qsrv_events(rv_qsrv *s);
/*
 * An HTTP publish waiting for durability.  rv__qsrv_dwait_begin runs on the
 * loop thread in the same job as the publish (so the topic cannot be deleted
 * in between); rv__qsrv_dwait_end, on the HTTP thread, waits until t's seq is
 * durable (RV_OK; also RV_OK if the topic was deleted meanwhile: the publish
 * had been accepted) or ctx ends (its error).  The loop owns the waiter list,
 * so a deleted topic is never touched after it is gone.
 */
typedef struct qdwait {
  struct qdwait *next;
  qs_topic *t;
  uint64_t seq;
  bool done;
  rv_mutex mu;
  rv_cond cv;
} qdwait;
void rv__qsrv_dwait_begin(rv_qsrv *s, qdwait *w, qs_topic *t, uint64_t seq);
int rv__qsrv_dwait_end(rv_qsrv *s, qdwait *w, rv_ctx *ctx);
/* A topic's log reported progress: release acks and deliveries.  Loop thread. */
void rv__qsrv_durable(rv_qsrv *s);
/* The qs_topic for a core topic handle (NULL if none). */
qs_topic *rv__qsrv_topic(rv_qsrv *s, uint64_t core_id);

/* queue.c: a topic is being deleted: replies waiting on it are released. */
void rv__qsrv_topic_gone(rv_qsrv *s, qs_topic *t);

/* queue_store.c */
extern const rv_qstore_ops rv__qsrv_store_ops;
/* Recover every durable topic and channel under data_dir into the core. */
/* Read queue.state (the id-prefix high-water mark); creates the data directory. */
int rv__qsrv_recover_prefix(rv_qsrv *s, char *why, size_t why_len);
int rv__qsrv_recover(rv_qsrv *s, char *why, size_t why_len);
void rv__qsrv_store_close(rv_qsrv *s);
int rv__qsrv_state_save(rv_qsrv *s);

/* queue_metrics.c: per topic/channel/consumer metrics, published each second. */
void rv__qsrv_metrics_setup(rv_qsrv *s);
void rv__qsrv_metrics_free(rv_qsrv *s);

/* queue_http.c: register the NSQ HTTP API routes on s->http. */
void rv__qsrv_http_routes(rv_qsrv *s);

#endif
