/*
 * queue: the event queue's topics, channels and consumers as a pure state
 * machine (the core of `ravel queue`).
 *
 * No syscalls, no clock, no threads, no globals: time comes in as now_ns on
 * every call that needs it, and effects go out as events appended to a
 * caller-owned rv_queue_events list (deliver message M to consumer C, tell C
 * that its message timed out, close C because its channel was deleted, a
 * channel or topic went away).  Message bodies never live here: they live in
 * a store reached through rv_qstore_ops (the server implements it over the
 * durable log, tests use the in-memory rv_qstore_mem below).  The model, the
 * memory bound and the held-slot rules are explained at the top of queue.c;
 * the short version:
 *
 *  - A topic numbers its messages densely from 1 (seq).  A message's NSQ id
 *    is the 64-bit GUID (id_prefix << 48 | seq), printed as 16 hex chars, so
 *    an id names its message without a lookup and is the same on every
 *    channel and on every redelivery.
 *  - Every channel gets a copy of each message published after it exists
 *    (the first channel of a topic also gets what the topic kept while it had
 *    none).  A channel reads the topic's log through a cursor and keeps only
 *    metadata for the messages it has taken: ready (requeued), in flight,
 *    deferred.  Consumers of one channel share its messages, round robin.
 *  - nsqd's RDY counting: a consumer is sent messages while in_flight (+ held)
 *    < RDY.  FIN / REQ / TOUCH with nsqd's semantics and error texts.
 *    Timeouts fire exactly at their deadline (rv_queue_tick), a consumer that
 *    leaves has its in-flight messages requeued at once.
 *  - ravel extensions per consumer: timeout_notify (an RV_QUEUE_EV_TIMEOUT
 *    event when its message times out) and hold_slots (a timed-out message
 *    keeps its slot until that consumer FINs or REQs the id, or leaves), and
 *    FIN / REQ / TOUCH qualified by the delivery's attempt number, so that a
 *    late answer never acts on a later delivery of the same id.
 *
 * Pointers in stats views stay valid until the next call that changes the
 * queue.  Errors are negative rv_queue_err codes; rv_queue_errmsg() gives the
 * specific sentence of the last failure (for FIN / REQ / TOUCH it is exactly
 * nsqd's text after the code: "FIN 0001000000000007 failed ID not in flight";
 * a stale attempt says "FIN 0001000000000007 failed attempt 1 is not in
 * flight (attempt 2 is)").
 * A call given a NULL rv_queue_events delivers nothing (messages stay ready).
 */
#ifndef RAVEL_CORE_QUEUE_H
#define RAVEL_CORE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/nsq.h"
#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits and defaults ------------------------------------------------- */

#define RV_QUEUE_NAME_MAX_BYTES RV_NSQ_NAME_MAX_BYTES
#define RV_QUEUE_EPHEMERAL_SUFFIX RV_NSQ_EPHEMERAL_SUFFIX

#define RV_QUEUE_MAX_TOPICS_DEFAULT 4096
#define RV_QUEUE_MAX_CHANNELS_DEFAULT 16384             /* across all topics */
#define RV_QUEUE_MAX_CHANNELS_PER_TOPIC_DEFAULT 256
#define RV_QUEUE_MAX_CONSUMERS_DEFAULT 65536
/* nsqd's --max-channel-consumers: 0 means no limit but max_consumers. */
#define RV_QUEUE_MAX_CONSUMERS_PER_CHANNEL_DEFAULT 0
/* Deferred messages (DPUB, REQ with delay) one channel may hold. */
#define RV_QUEUE_MAX_DEFERRED_PER_CHANNEL_DEFAULT 100000
/* Message records (ready + in flight + deferred + finished-ahead) of one
 * channel; bounds a channel's metadata however its consumers behave. */
#define RV_QUEUE_MAX_RECORDS_PER_CHANNEL_DEFAULT 500000
/* Message records across the whole queue (about 150 bytes each: 300 MB). */
#define RV_QUEUE_MAX_RECORDS_DEFAULT 2000000
/* Held slots across the whole queue (about 48 bytes each). */
#define RV_QUEUE_MAX_HELD_DEFAULT 1000000
#define RV_QUEUE_MAX_RDY_COUNT_DEFAULT RV_NSQ_DEFAULT_MAX_RDY_COUNT
#define RV_QUEUE_MSG_TIMEOUT_NS_DEFAULT (RV_NSQ_DEFAULT_MSG_TIMEOUT_MS * RV_NS_PER_MS)
#define RV_QUEUE_MIN_MSG_TIMEOUT_NS (RV_NSQ_MIN_MSG_TIMEOUT_MS * RV_NS_PER_MS)
#define RV_QUEUE_MAX_MSG_TIMEOUT_NS_DEFAULT (RV_NSQ_DEFAULT_MAX_MSG_TIMEOUT_MS * RV_NS_PER_MS)
#define RV_QUEUE_MAX_REQ_TIMEOUT_NS_DEFAULT (RV_NSQ_DEFAULT_MAX_REQ_TIMEOUT_MS * RV_NS_PER_MS)

/* A message id is (id_prefix << RV_QUEUE_ID_SEQ_BITS) | seq. */
#define RV_QUEUE_ID_SEQ_BITS 48
#define RV_QUEUE_SEQ_MAX ((UINT64_C(1) << RV_QUEUE_ID_SEQ_BITS) - 1)
#define RV_QUEUE_ID_PREFIX_MAX UINT16_MAX

/* A deadline that never comes. */
#define RV_QUEUE_NO_DEADLINE INT64_MAX
#define RV_QUEUE_ERRMSG_MAX 320

/* ---- errors -------------------------------------------------------------- */
/*
 * One table: (name, value, text).  The texts of ENOT_IN_FLIGHT and ENOT_OWNER
 * are nsqd's exact words, so the shell writes
 *   E_FIN_FAILED FIN <id> failed <rv_queue_strerror(rc)>
 * (E_REQ_FAILED / E_TOUCH_FAILED likewise); every other error's specific
 * sentence is rv_queue_errmsg(q).  Which NSQ code the shell sends: SUB limits
 * E_SUB_FAILED, publish failures E_PUB_FAILED / E_MPUB_FAILED /
 * E_DPUB_FAILED, HTTP not-found TOPIC_NOT_FOUND / CHANNEL_NOT_FOUND.
 * ESTALE_ATTEMPT (ravel's attempt-qualified FIN / REQ / TOUCH) is sent as
 * E_FIN_FAILED / E_REQ_FAILED / E_TOUCH_FAILED with rv_queue_errmsg(q), which
 * starts like nsqd's ("FIN <id> failed ...").
 */
#define RV_QUEUE_ERRORS(X)                                                     \
  X(RV_QUEUE_OK, 0, "ok")                                                      \
  X(RV_QUEUE_EINVAL, -1, "invalid argument")                                   \
  X(RV_QUEUE_ENAME, -2, "invalid topic or channel name")                       \
  X(RV_QUEUE_ENOTOPIC, -3, "topic not found")                                  \
  X(RV_QUEUE_ENOCHANNEL, -4, "channel not found")                              \
  X(RV_QUEUE_ENOCONSUMER, -5, "consumer not found")                            \
  X(RV_QUEUE_ENOT_IN_FLIGHT, -6, "ID not in flight")                           \
  X(RV_QUEUE_ENOT_OWNER, -7, "client does not own message")                    \
  X(RV_QUEUE_ERDY, -8, "RDY count out of range")                               \
  X(RV_QUEUE_EMSG_TIMEOUT, -9, "msg_timeout out of range")                     \
  X(RV_QUEUE_EDEFER, -10, "defer out of range")                                \
  X(RV_QUEUE_ETOPICS, -11, "too many topics")                                  \
  X(RV_QUEUE_ECHANNELS, -12, "too many channels")                              \
  X(RV_QUEUE_ETOPIC_CHANNELS, -13, "too many channels in topic")               \
  X(RV_QUEUE_ECONSUMERS, -14, "too many consumers")                            \
  X(RV_QUEUE_ECHANNEL_CONSUMERS, -15, "too many consumers on channel")         \
  X(RV_QUEUE_EDEFERRED, -16, "deferred queue full")                            \
  X(RV_QUEUE_ERECORDS, -17, "message records full")                            \
  X(RV_QUEUE_ESEQ, -18, "topic sequence space exhausted")                      \
  X(RV_QUEUE_ESTORE, -19, "store failed")                                      \
  X(RV_QUEUE_ENOMEM, -20, "out of memory")                                     \
  X(RV_QUEUE_ESTALE_ATTEMPT, -21, "attempt not in flight")

enum rv_queue_err {
#define RV__QUEUE_ERR_ENUM(name, val, text) name = (val),
  RV_QUEUE_ERRORS(RV__QUEUE_ERR_ENUM)
#undef RV__QUEUE_ERR_ENUM
};

const char *rv_queue_strerror(int err);
const char *rv_queue_errname(int err);

/* ---- the store seam ------------------------------------------------------ */

/* One message as published (and as the store keeps it).  The caller of
 * rv_queue_publish fills body, body_bytes and defer_ns; the core fills the
 * rest before it calls append. */
typedef struct rv_qstore_msg {
  const void *body;
  size_t body_bytes;
  int64_t defer_ns;        /* in: DPUB delay, 0 = none */
  uint64_t guid;           /* out: the message id */
  int64_t ts_ns;           /* out: publish time (now_ns of the publish) */
  int64_t defer_until_ns;  /* out: now_ns + defer_ns, 0 = not deferred */
} rv_qstore_msg;

/* What the core needs to hand out a message it has not seen yet. */
typedef struct rv_qstore_meta {
  int64_t ts_ns;
  int64_t defer_until_ns;  /* 0 = not deferred */
  size_t body_bytes;
} rv_qstore_meta;

/* Inclusive seq range. */
typedef struct rv_qstore_range {
  uint64_t first;
  uint64_t last;
} rv_qstore_range;

typedef struct rv_qstore_deferred {
  uint64_t seq;
  int64_t due_ns;
  uint16_t attempts;  /* deliveries so far */
} rv_qstore_deferred;

/*
 * What the core asks of storage.  `store` is rv_queue_opts.store.  The core
 * calls append and meta on hot paths: both must be O(1) and must not block
 * (meta is called once per channel per message, for the newest messages in
 * the common case: keep the tail's headers in memory).  Journal calls (fin,
 * defer, skip, set_paused) report facts; how and when they are made durable
 * is the store's business.  NULL void ops are skipped; append and meta are
 * required.  fetch is never called by the core: it is the shell's way to get
 * the body of an RV_QUEUE_EV_DELIVER event, part of the same contract.
 */
typedef struct rv_qstore_ops {
  /* A topic / channel came into being (SUB, PUB, HTTP create) or went away
   * (delete, ephemeral cleanup).  Not called for rv_queue_*_restore. */
  int (*topic_create)(void *store, const char *name, uint16_t id_prefix, bool ephemeral,
                      void **topic_ctx);
  void (*topic_delete)(void *store, void *topic_ctx);
  /* The channel's history starts at start_seq (everything below is done). */
  int (*channel_create)(void *store, void *topic_ctx, const char *name, bool ephemeral,
                        uint64_t start_seq, void **channel_ctx);
  void (*channel_delete)(void *store, void *channel_ctx);
  /* Append msgs as seqs first_seq.. first_seq+n-1, all or nothing.
   * 0 or a negative rv_err. */
  int (*append)(void *store, void *topic_ctx, uint64_t first_seq, const rv_qstore_msg *msgs,
                size_t n);
  /* 0, RV_ENOTFOUND (gone: reclaimed or lost; the channel skips it and
   * counts it lost), or another rv_err (transient: delivery waits). */
  int (*meta)(void *store, void *topic_ctx, uint64_t seq, rv_qstore_meta *out);
  /* The shell's: body and meta of seq; out->body valid until the next store
   * call.  guid is not filled (the event has it). */
  int (*fetch)(void *store, void *topic_ctx, uint64_t seq, rv_qstore_msg *out);
  /* Channel journal (rv_qjournal_fin / rv_qjournal_defer fit).  fin: the
   * message was FIN'd.  defer: it entered this channel's deferred queue with
   * an absolute due time, by REQ with a delay or by a DPUB taken into the
   * channel (journaling DPUBs too lets a restart defer them at once instead
   * of when the cursor reaches them).  A deferral that fires is not
   * journaled: at recovery an overdue deferral is simply ready. */
  void (*fin)(void *store, void *channel_ctx, uint64_t seq);
  void (*defer)(void *store, void *channel_ctx, uint64_t seq, int64_t due_ns,
                uint16_t attempts);
  /* Every seq in [first, last] is done without a FIN (channel or topic
   * emptied); may be a long range. */
  void (*skip)(void *store, void *channel_ctx, uint64_t first, uint64_t last);
  /* channel_ctx NULL: the topic's flag. */
  void (*set_paused)(void *store, void *topic_ctx, void *channel_ctx, bool paused);
} rv_qstore_ops;

/* ---- events -------------------------------------------------------------- */

enum rv_queue_event_type {
  /* Send message seq/guid to consumer: the shell fetches the body from the
   * store (topic_store, seq) and writes the frame. */
  RV_QUEUE_EV_DELIVER = 1,
  /* ravel extension: the consumer's message guid timed out (it asked for
   * timeout_notify): send the RV_NSQ_FRAME_TIMEOUT frame. */
  RV_QUEUE_EV_TIMEOUT,
  /* The consumer's channel or topic was deleted: close the connection, as
   * nsqd does.  The consumer handle is already gone. */
  RV_QUEUE_EV_CLOSE,
  /* A channel / topic went away (delete or ephemeral cleanup): drop its
   * metrics.  The handles are already gone. */
  RV_QUEUE_EV_CHANNEL_DELETED,
  RV_QUEUE_EV_TOPIC_DELETED,
};

typedef struct rv_queue_event {
  int type;                /* enum rv_queue_event_type */
  uint16_t attempts;       /* DELIVER: this delivery's number, from 1 */
  uint64_t consumer;       /* DELIVER, TIMEOUT, CLOSE */
  uint64_t cookie;         /* the consumer's cookie (connection) */
  uint64_t topic;
  uint64_t channel;        /* 0 for TOPIC_DELETED */
  uint64_t seq;            /* DELIVER, TIMEOUT */
  uint64_t guid;           /* DELIVER, TIMEOUT */
  int64_t ts_ns;           /* DELIVER: publish time */
  void *topic_store;       /* DELIVER: the store's topic_ctx, for fetch */
} rv_queue_event;

/* A caller-owned, growable event list; reuse it across calls. */
typedef struct rv_queue_events {
  rv_queue_event *v;
  size_t len;
  size_t cap;
} rv_queue_events;

void rv_queue_events_init(rv_queue_events *ev);
void rv_queue_events_clear(rv_queue_events *ev);
void rv_queue_events_free(rv_queue_events *ev);

/* ---- lifecycle ----------------------------------------------------------- */

typedef struct rv_queue rv_queue;

typedef struct rv_queue_opts {
  const rv_qstore_ops *ops;
  void *store;
  size_t max_topics;
  size_t max_channels;
  size_t max_channels_per_topic;
  size_t max_consumers;
  size_t max_consumers_per_channel;  /* 0 = only max_consumers */
  size_t max_deferred_per_channel;
  size_t max_records_per_channel;
  size_t max_records;
  size_t max_held;
  int64_t max_rdy_count;
  int64_t msg_timeout_ns;           /* a consumer's default */
  int64_t max_msg_timeout_ns;       /* msg_timeout bound and TOUCH cap */
  int64_t max_req_timeout_ns;       /* REQ delay clamp, DPUB bound */
  /* First new topic's id prefix, then +1 per topic (restore moves it past
   * every restored prefix).  The server persists the high-water mark and
   * passes it here, so a recreated topic never repeats a deleted one's ids. */
  uint16_t id_prefix_first;
  uint64_t hash_seed;               /* keys the name hash */
  /*
   * The store serves a message only once its publish is acknowledged
   * (rv_qlog: durable under the fsync policy; reads of later seqs fail).
   * Then nothing is delivered, and no DPUB enters a deferred queue, until
   * rv_queue_topic_acked covers it.  false: deliverable once appended.
   */
  bool deliver_after_ack;
} rv_queue_opts;

/* Defaults above; ops and store NULL (must be set). */
void rv_queue_opts_default(rv_queue_opts *o);
/* RV_QUEUE_OK, RV_QUEUE_EINVAL (bad opts, with a message in *why if
 * non-NULL), RV_QUEUE_ENOMEM. */
int rv_queue_create(rv_queue **out, const rv_queue_opts *opts, const char **why);
/* Frees everything; calls no store ops. */
void rv_queue_destroy(rv_queue *q);
const char *rv_queue_errmsg(const rv_queue *q);

/* ---- topics and channels ------------------------------------------------- */
/* Names follow nsqd's rule (rv_nsq_valid_name); "#ephemeral" at the end makes
 * a topic or channel ephemeral.  Create is idempotent, as nsqd's GetTopic. */

int rv_queue_topic_create(rv_queue *q, int64_t now_ns, const char *name, uint64_t *topic);
int rv_queue_topic_find(const rv_queue *q, const char *name, uint64_t *topic);
/* Deletes its channels (their consumers get RV_QUEUE_EV_CLOSE). */
int rv_queue_topic_delete(rv_queue *q, int64_t now_ns, uint64_t topic, rv_queue_events *ev);
/* Drops the messages the topic holds back (published while it had no channel
 * or was paused); channels keep theirs, as nsqd's /topic/empty. */
int rv_queue_topic_empty(rv_queue *q, int64_t now_ns, uint64_t topic, rv_queue_events *ev);
/* A paused topic stops handing new messages to its channels. */
int rv_queue_topic_pause(rv_queue *q, int64_t now_ns, uint64_t topic, bool paused,
                         rv_queue_events *ev);

/* RV_QUEUE_ENOTOPIC if the topic does not exist (nsqd's /channel/create). */
int rv_queue_channel_create(rv_queue *q, int64_t now_ns, uint64_t topic, const char *name,
                            uint64_t *channel);
int rv_queue_channel_find(const rv_queue *q, uint64_t topic, const char *name,
                          uint64_t *channel);
/* Its consumers get RV_QUEUE_EV_CLOSE; an ephemeral topic left without
 * channels goes too. */
int rv_queue_channel_delete(rv_queue *q, int64_t now_ns, uint64_t channel, rv_queue_events *ev);
/* Drops everything queued, in flight and deferred, as nsqd's Channel.Empty
 * (a hold_slots consumer's in-flight messages become held slots). */
int rv_queue_channel_empty(rv_queue *q, int64_t now_ns, uint64_t channel, rv_queue_events *ev);
/* A paused channel delivers nothing; in-flight messages still time out. */
int rv_queue_channel_pause(rv_queue *q, int64_t now_ns, uint64_t channel, bool paused,
                           rv_queue_events *ev);

/* ---- publishing ---------------------------------------------------------- */

/*
 * PUB / MPUB / DPUB: msgs[0..n) become seqs *first_seq.. (may be NULL).  All
 * or nothing: limits (deferred room on every channel, records, seq space,
 * defer_ns in 0..max_req_timeout) are checked before the store's append, and
 * a failed append changes nothing.  Fills each msg's out fields.
 */
int rv_queue_publish(rv_queue *q, int64_t now_ns, uint64_t topic, rv_qstore_msg *msgs, size_t n,
                     uint64_t *first_seq, rv_queue_events *ev);

/*
 * deliver_after_ack: the store acknowledged topic's messages up to acked_seq
 * (inclusive; rv_qlog_acked_seq): they may now be delivered.  Lower values
 * than before are ignored, higher than the last published are clamped.
 */
int rv_queue_topic_acked(rv_queue *q, int64_t now_ns, uint64_t topic, uint64_t acked_seq,
                         rv_queue_events *ev);

/* ---- consumers ----------------------------------------------------------- */

typedef struct rv_queue_consumer_opts {
  int64_t msg_timeout_ns;  /* 0: the queue's default */
  bool timeout_notify;     /* ravel extension */
  bool hold_slots;         /* ravel extension */
  uint64_t cookie;         /* the shell's handle, echoed in events */
} rv_queue_consumer_opts;

/* SUB: creates the topic and channel if needed; RDY starts at 0. */
int rv_queue_subscribe(rv_queue *q, int64_t now_ns, const char *topic, const char *channel,
                       const rv_queue_consumer_opts *o, uint64_t *consumer, rv_queue_events *ev);
/* Disconnect: in-flight messages are requeued at once, held slots released;
 * an ephemeral channel left without consumers is deleted. */
int rv_queue_unsubscribe(rv_queue *q, int64_t now_ns, uint64_t consumer, rv_queue_events *ev);
/* RDY n (0..max_rdy_count); CLS is RDY 0 as far as the core cares. */
int rv_queue_rdy(rv_queue *q, int64_t now_ns, uint64_t consumer, int64_t count,
                 rv_queue_events *ev);

/* What FIN / REQ / TOUCH did besides their result code. */
typedef struct rv_queue_ack {
  /* The consumer held a slot for this id (hold_slots) and it was released.
   * The result code is still nsqd's error: the late FIN/REQ did not act on
   * the message, which had been requeued. */
  bool held_released;
  /* FIN: now_ns - the message's publish time, for the e2e histogram. */
  int64_t latency_ns;
  uint64_t seq;
} rv_queue_ack;

/*
 * attempt: the delivery the answer is for, as the client saw it in the
 * message frame (ravel extension: "FIN <id> <attempts>").  0 means any
 * delivery, nsqd's behaviour: the answer acts on id if it is in flight at
 * this consumer.  Otherwise it acts only if the record in flight at this
 * consumer is that very delivery (its attempts equal attempt); an answer for
 * an earlier (or any other) delivery of an id that is in flight at this
 * consumer again fails with RV_QUEUE_ESTALE_ATTEMPT (rv_queue_errmsg:
 * "FIN <id> failed attempt 1 is not in flight (attempt 2 is)"), leaves the
 * delivery in flight, and for FIN / REQ releases a hold of this consumer on
 * id if there is one (held slots, rule 3 in queue.c).
 */
int rv_queue_fin(rv_queue *q, int64_t now_ns, uint64_t consumer, uint64_t guid, uint16_t attempt,
                 rv_queue_ack *ack, rv_queue_events *ev);
/* delay_ns is clamped to 0..max_req_timeout; 0 requeues at the tail of the
 * channel's ready queue, > 0 defers. */
int rv_queue_req(rv_queue *q, int64_t now_ns, uint64_t consumer, uint64_t guid, uint16_t attempt,
                 int64_t delay_ns, rv_queue_ack *ack, rv_queue_events *ev);
int rv_queue_touch(rv_queue *q, int64_t now_ns, uint64_t consumer, uint64_t guid,
                   uint16_t attempt, rv_queue_ack *ack);

/* ---- time ---------------------------------------------------------------- */

/* Fire every in-flight timeout and deferred message due at or before now_ns,
 * in (deadline, arming order) order.  RV_QUEUE_ENOMEM: retry later. */
int rv_queue_tick(rv_queue *q, int64_t now_ns, rv_queue_events *ev);
/* When rv_queue_tick next has work; RV_QUEUE_NO_DEADLINE if never. */
int64_t rv_queue_next_deadline(const rv_queue *q);

/* ---- recovery ------------------------------------------------------------ */

typedef struct rv_queue_topic_state {
  const char *name;
  uint16_t id_prefix;     /* as given to topic_create the first time */
  uint64_t first_seq;     /* oldest message still in the log */
  uint64_t next_seq;      /* one past the newest durable message */
  bool paused;
  void *store_ctx;        /* the store's topic_ctx */
} rv_queue_topic_state;

typedef struct rv_queue_channel_state {
  const char *name;
  bool paused;
  /* Every seq <= floor is done (rv_qjournal_floor() - 1: the journal's
   * floor is the lowest unfinished seq). */
  uint64_t floor;
  /* FIN'd (or skipped) above floor, inclusive, any order, may overlap (a
   * journal run [lo, hi) is {lo, hi - 1}). */
  const rv_qstore_range *finished;
  size_t nfinished;
  const rv_qstore_deferred *deferred;  /* deferred at crash, with due times */
  size_t ndeferred;
  void *store_ctx;
} rv_queue_channel_state;

/*
 * Rebuild state after a restart, before any consumer subscribes.  Every seq
 * above floor that is neither finished nor deferred (those in flight at the
 * crash, and all never delivered) is ready again.  Entries at or beyond the
 * topic's next_seq are ignored (the log lost them).  Store create ops are not
 * called.
 */
int rv_queue_topic_restore(rv_queue *q, int64_t now_ns, const rv_queue_topic_state *r,
                           uint64_t *topic);
int rv_queue_channel_restore(rv_queue *q, int64_t now_ns, uint64_t topic,
                             const rv_queue_channel_state *r, uint64_t *channel);

/* Everything <= this seq is done on this channel (for journal compaction). */
uint64_t rv_queue_channel_floor(const rv_queue *q, uint64_t channel);
/* Everything <= this seq is done on every channel of the topic and no longer
 * held back by the topic: the log may reclaim it. */
uint64_t rv_queue_topic_floor(const rv_queue *q, uint64_t topic);

/* ---- introspection ------------------------------------------------------- */

typedef struct rv_queue_topic_stats {
  uint64_t handle;
  const char *name;
  bool paused;
  bool ephemeral;
  /* nsqd's meaning: messages the topic holds back from its channels
   * (published while it had none, or while paused). */
  uint64_t depth;
  uint64_t message_count;   /* published since creation */
  uint64_t message_bytes;
  size_t channel_count;
  uint64_t next_seq;
  uint64_t acked_end;       /* first seq not yet deliverable (deliver_after_ack) */
  uint64_t floor;
  uint16_t id_prefix;
  void *store_ctx;
} rv_queue_topic_stats;

typedef struct rv_queue_channel_stats {
  uint64_t handle;
  uint64_t topic;
  const char *name;
  const char *topic_name;
  bool paused;
  bool ephemeral;
  /* Messages ready to be delivered: requeued + not yet taken from the log. */
  uint64_t depth;
  uint64_t in_flight_count;
  uint64_t deferred_count;
  uint64_t held_count;       /* held slots of its consumers */
  uint64_t message_count;    /* messages the channel received from the topic */
  uint64_t delivery_count;   /* deliveries, redeliveries included */
  uint64_t finish_count;
  uint64_t requeue_count;    /* REQ */
  uint64_t timeout_count;
  uint64_t lost_count;       /* seqs the store no longer had */
  size_t client_count;
  uint64_t floor;
  uint64_t cursor;
  size_t records;            /* metadata records alive */
  void *store_ctx;
} rv_queue_channel_stats;

typedef struct rv_queue_consumer_stats {
  uint64_t handle;
  uint64_t channel;
  uint64_t cookie;
  int64_t ready_count;       /* RDY */
  uint64_t in_flight_count;
  uint64_t held_count;
  uint64_t message_count;    /* deliveries */
  uint64_t finish_count;
  uint64_t requeue_count;    /* REQ */
  uint64_t timeout_count;    /* ravel: nsqd has none per client */
  int64_t connect_ns;
  int64_t msg_timeout_ns;
  bool timeout_notify;
  bool hold_slots;
} rv_queue_consumer_stats;

typedef struct rv_queue_stats {
  size_t topics;
  size_t channels;
  size_t consumers;
  size_t records;
  size_t held;
  uint64_t published;        /* messages */
  uint64_t published_bytes;
  uint64_t delivered;        /* deliveries, redeliveries included */
  uint64_t finished;
  uint64_t requeued;         /* REQ */
  uint64_t timed_out;
  uint64_t deferred;         /* messages that entered a deferred queue */
  uint64_t disconnect_requeued;
  uint64_t held_dropped;     /* holds not recorded because max_held was reached */
  uint64_t lost;
} rv_queue_stats;

int rv_queue_topic_stats_get(const rv_queue *q, uint64_t topic, rv_queue_topic_stats *out);
int rv_queue_channel_stats_get(const rv_queue *q, uint64_t channel, rv_queue_channel_stats *out);
int rv_queue_consumer_stats_get(const rv_queue *q, uint64_t consumer,
                                rv_queue_consumer_stats *out);
void rv_queue_get_stats(const rv_queue *q, rv_queue_stats *out);

/* Visitors return false to stop early and must not change the queue; each
 * list returns how many it visited.  Topics in creation order, channels in
 * creation order, consumers in subscription order. */
typedef bool (*rv_queue_topic_fn)(const rv_queue_topic_stats *s, void *arg);
typedef bool (*rv_queue_channel_fn)(const rv_queue_channel_stats *s, void *arg);
typedef bool (*rv_queue_consumer_fn)(const rv_queue_consumer_stats *s, void *arg);
size_t rv_queue_topic_list(const rv_queue *q, rv_queue_topic_fn fn, void *arg);
size_t rv_queue_channel_list(const rv_queue *q, uint64_t topic, rv_queue_channel_fn fn, void *arg);
size_t rv_queue_consumer_list(const rv_queue *q, uint64_t channel, rv_queue_consumer_fn fn,
                              void *arg);

/* Where one message stands on one channel (tests, /debug). */
enum rv_queue_msg_state {
  RV_QUEUE_MSG_NONE = 0,    /* not this channel's (before it existed, or unpublished) */
  RV_QUEUE_MSG_PENDING,     /* held back by the topic (paused / no channels) */
  RV_QUEUE_MSG_READY,       /* requeued, or not yet taken from the log */
  RV_QUEUE_MSG_IN_FLIGHT,
  RV_QUEUE_MSG_DEFERRED,
  RV_QUEUE_MSG_FINISHED,    /* FIN'd, emptied or lost */
};

typedef struct rv_queue_msg_view {
  int state;                /* enum rv_queue_msg_state */
  uint16_t attempts;        /* known once taken */
  uint64_t consumer;        /* IN_FLIGHT */
  int64_t deadline_ns;      /* IN_FLIGHT: timeout; DEFERRED: due */
} rv_queue_msg_view;

int rv_queue_msg_get(const rv_queue *q, uint64_t channel, uint64_t seq, rv_queue_msg_view *out);
/* Does consumer hold a slot for seq, and how many times. */
uint32_t rv_queue_consumer_held(const rv_queue *q, uint64_t consumer, uint64_t seq);

/* The id of seq on topic (what rv_nsq_id_format prints). */
uint64_t rv_queue_guid(uint16_t id_prefix, uint64_t seq);

/*
 * Walk every structure and check the invariants (heap orders and positions,
 * lists, counts, ready ring, in_flight + held <= RDY, records accounted).
 * NULL when all hold, else a description of the first violation.  O(n): for
 * tests and the simulator.
 */
const char *rv_queue_check(const rv_queue *q);

/* ---- an in-memory store (tests, simulator, `--mem` mode) -------------------------- */

/*
 * Keeps every body in memory (unbounded: not for production) and replays its
 * own journal into restore arguments, so tests can crash and recover a core.
 */
typedef struct rv_qstore_mem rv_qstore_mem;

extern const rv_qstore_ops rv_qstore_mem_ops;

rv_qstore_mem *rv_qstore_mem_create(void);
void rv_qstore_mem_destroy(rv_qstore_mem *m);
/* Make the next n appends fail with RV_EIO (fault injection). */
void rv_qstore_mem_fail_appends(rv_qstore_mem *m, int n);
/* Counters of calls, for tests. */
typedef struct rv_qstore_mem_counts {
  uint64_t appends;
  uint64_t metas;
  uint64_t fins;
  uint64_t defers;
  uint64_t skips;
  uint64_t topics_created;
  uint64_t topics_deleted;
  uint64_t channels_created;
  uint64_t channels_deleted;
} rv_qstore_mem_counts;
void rv_qstore_mem_counts_get(const rv_qstore_mem *m, rv_qstore_mem_counts *out);

/*
 * Simulate a crash and restart: rebuild a fresh queue from what the store
 * has persisted (durable topics and channels; ephemeral ones are lost), the
 * way the server will from the log.  The store is kept; the old queue must be
 * destroyed by the caller (without further calls).
 */
int rv_qstore_mem_recover(rv_qstore_mem *m, int64_t now_ns, rv_queue *q);

#ifdef __cplusplus
}
#endif
#endif
