/*
 * queue_client: libravel's NSQ producer and consumer (protocol V2 over TCP).
 *
 * Works against ravel queue and against nsqd generally.  The two ravel
 * extensions (timeout_notify, hold_slots; docs/queue.md) are only put in
 * IDENTIFY when the consumer option that needs them is on; with every option
 * off the client speaks plain go-nsq/nsqjs-compatible NSQ.
 *
 * Every blocking call takes an rv_ctx (NULL: never cancelled) and returns
 * promptly with RV_ECANCELED / RV_EDEADLINE when it ends.
 *
 * ---- Producer ---------------------------------------------------------------
 * One TCP connection, shared by every thread that publishes on the producer.
 * Threads:
 *   - one reader thread per connection ("queue-pub-rd", role "queue-client"):
 *     reads responses, matches each to the oldest outstanding request (NSQ
 *     answers in order), answers heartbeats with NOP.
 *   - callers' threads write their own commands; a write mutex serializes
 *     them, and a request is appended to the FIFO of outstanding requests in
 *     the same critical section, so responses match requests in order.
 * Bounded buffering: at most max_inflight_requests requests and
 * max_inflight_bytes body bytes are outstanding; a caller beyond either bound
 * waits (honouring its ctx) until responses free room.  A single request
 * larger than the byte bound is let through alone.
 * Reconnect: when the connection is lost (EOF, reset, write error, a fatal
 * server error closing it) the outstanding requests fail with the connection
 * error and each publishing call retries on a new connection, at most
 * max_attempts times, sleeping backoff_ms, 2*backoff_ms, ... (capped at
 * max_backoff_ms) through rv_sleep(ctx, ...).  NSQ is at-least-once: a
 * publish whose OK was lost with the connection is sent again.
 * Server errors (E_BAD_TOPIC, E_PUB_FAILED ...) are not retried: the call
 * returns RV_EPROTO and rv_queue_last_error() gives the code and text.
 *
 * ---- Consumer ---------------------------------------------------------------
 * One connection (no nsqlookupd, no multi-nsqd RDY redistribution): SUB
 * topic/channel, then RDY max_in_flight.  Threads:
 *   - one reader thread ("queue-sub-rd", role "queue-client"): connects
 *     (and reconnects with backoff after a loss), IDENTIFY, SUB, RDY, reads
 *     frames, answers heartbeats with NOP, dispatches messages, acts on
 *     timeout notifications (frame type 3) and, every RV_CONSUMER_TICK_MS,
 *     checks local timeouts, sends auto-TOUCHes and joins finished handler
 *     threads.
 *   - handler threads, by mode:
 *       RV_CONSUMER_THREAD_PER_MESSAGE (default): a thread per delivered
 *         message, started when it arrives, named "handler-N" (N counts
 *         from 1), role "queue-handler", with the task "msg <id> attempt <a>
 *         topic/channel".  Like goroutine-per-message consumers, the number
 *         alive is bounded by the messages the server lets this consumer
 *         have in flight (RDY = max_in_flight) -- except that a handler whose
 *         message timed out and was not cancelled keeps running while the
 *         server hands its slot to the next message: that is the incident's
 *         thread pile-up, and what cancel_on_* and hold_slots prevent.
 *       RV_CONSUMER_POOL: pool_size threads "handler-N" started at open,
 *         taking messages from a FIFO; the task is set per message.
 *   Each handler runs with its own context, a child of the consumer's.  When
 *   it returns, its thread sends FIN (RV_MSG_FINISH) or REQ id delay
 *   (RV_MSG_REQUEUE) on the connection the message came from.
 *   rv_message_touch() sends TOUCH from inside a handler.
 * Options, each independent:
 *   cancel_on_server_timeout  ask for timeout_notify; on a type-3 frame naming
 *                             a running message, cancel its handler's context
 *                             with "message <id> timed out (server)".
 *   cancel_on_local_timeout   cancel it when msg_timeout has passed since
 *                             delivery (or since the last TOUCH) by the
 *                             consumer's clock: "message <id> timed out
 *                             (local)".  Works against plain nsqd.
 *   auto_touch                send TOUCH every msg_timeout/2 while the
 *                             handler runs.
 *   hold_slots                ask the server to keep a timed-out message's
 *                             slot until we answer for it.
 * Late answers: E_FIN_FAILED / E_REQ_FAILED / E_TOUCH_FAILED (the message had
 * timed out and was requeued) are counted in the stats and otherwise ignored;
 * the connection goes on.  A message's answer is dropped (and counted) when
 * the connection it came on is gone: the server requeued it already.
 * Late answers and redeliveries: a handler that outlives its message's
 * timeout answers for an id that may be in flight again, redelivered to this
 * very consumer.  NSQ's FIN/REQ/TOUCH name only the id, so nsqd applies the
 * late answer to the new delivery.  When the server granted timeout_notify
 * or hold_slots (a ravel server), the consumer adds the delivery's attempt
 * ("FIN <id> <attempts>", docs/queue.md) and the server refuses a late
 * answer (E_FIN_FAILED / E_REQ_FAILED, counted above) without touching the
 * new delivery.  Against nsqd, the hazard remains.
 * Stop: rv_consumer_stop sends CLS (no new messages), waits up to
 * stop_timeout_ms for running handlers, cancels the ones still running
 * ("consumer stopping"), waits again, then closes the connection.
 */
#ifndef RAVEL_CLIENT_QUEUE_CLIENT_H
#define RAVEL_CLIENT_QUEUE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/nsq.h"
#include "rt/ctx.h"
#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RV_QUEUE_DEFAULT_HOST "127.0.0.1"
#define RV_QUEUE_DEFAULT_PORT 4150

/* The calling thread's last server error (code RV_NSQ_OK if the last call on
 * this thread did not end with an NSQ error frame). */
const rv_nsq_error *rv_queue_last_error(void);

/* ---- producer ------------------------------------------------------------ */

#define RV_PRODUCER_DEFAULT_MAX_INFLIGHT_REQUESTS 1024
#define RV_PRODUCER_DEFAULT_MAX_INFLIGHT_BYTES (16 * 1024 * 1024)
#define RV_PRODUCER_DEFAULT_MAX_ATTEMPTS 5
#define RV_PRODUCER_DEFAULT_BACKOFF_MS 50
#define RV_PRODUCER_DEFAULT_MAX_BACKOFF_MS 2000
/* A write that makes no progress this long breaks the connection. */
#define RV_PRODUCER_WRITE_TIMEOUT_MS 10000

typedef struct rv_producer rv_producer;

typedef struct rv_producer_opts {
  const char *host;              /* default RV_QUEUE_DEFAULT_HOST (numeric is best) */
  uint16_t port;                 /* default RV_QUEUE_DEFAULT_PORT */
  size_t max_inflight_requests;  /* 0: default */
  size_t max_inflight_bytes;     /* 0: default */
  int max_attempts;              /* per call, connection failures only; 0: default */
  int64_t backoff_ms;            /* first retry delay; 0: default */
  int64_t max_backoff_ms;        /* 0: default */
} rv_producer_opts;

typedef struct rv_producer_stats {
  uint64_t published;        /* messages acknowledged (an MPUB counts n) */
  uint64_t requests_ok;
  uint64_t server_errors;    /* requests answered with an error frame */
  uint64_t connects;         /* successful connects, the first included */
  uint64_t connection_losses;
  uint64_t retries;
  uint64_t inflight_requests;
  uint64_t inflight_bytes;
} rv_producer_stats;

/* Connect (ctx bounds the first connect).  0 or an rv_err. */
int rv_producer_open(rv_producer **out, rv_ctx *ctx, const rv_producer_opts *opts);
/* Each returns 0 once the server said OK; RV_EPROTO with rv_queue_last_error()
 * on a server error; the ctx's error; or the connection error after
 * max_attempts; RV_EINVAL for names or sizes the codec refuses. */
int rv_producer_pub(rv_ctx *ctx, rv_producer *p, const char *topic, const void *body,
                    size_t len);
int rv_producer_mpub(rv_ctx *ctx, rv_producer *p, const char *topic,
                     const void *const bodies[], const size_t lens[], size_t n);
int rv_producer_dpub(rv_ctx *ctx, rv_producer *p, const char *topic, int64_t defer_ms,
                     const void *body, size_t len);
void rv_producer_stats_get(rv_producer *p, rv_producer_stats *out);
/* Fail outstanding requests (RV_ECANCELED), close, free.  No call may be
 * running on p any more. */
void rv_producer_close(rv_producer *p);

/* ---- consumer ------------------------------------------------------------ */

#define RV_CONSUMER_DEFAULT_MAX_IN_FLIGHT 1
#define RV_CONSUMER_DEFAULT_STOP_TIMEOUT_MS 5000
#define RV_CONSUMER_DEFAULT_POOL_SIZE 4
/* The reader's housekeeping period (local timeouts, auto-touch, reaping). */
#define RV_CONSUMER_TICK_MS 20
#define RV_CONSUMER_BACKOFF_MS 50
#define RV_CONSUMER_MAX_BACKOFF_MS 2000
#define RV_CONSUMER_WRITE_TIMEOUT_MS 10000
/* Bound for the connect + IDENTIFY + SUB handshake. */
#define RV_CONSUMER_HANDSHAKE_TIMEOUT_MS 10000

typedef struct rv_consumer rv_consumer;

/* A delivered message, valid for the duration of the handler call. */
typedef struct rv_message {
  uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];
  char id_str[RV_NSQ_MSG_ID_SIZE_BYTES + 1];  /* NUL-terminated copy of id */
  uint16_t attempts;
  int64_t timestamp_ns;       /* publish time (server's wall clock) */
  int64_t delivered_ns;       /* rv_now_ns() when it arrived */
  const uint8_t *body;
  size_t len;
  /* out: the delay for RV_MSG_REQUEUE (rv_message_set_requeue_delay). */
  int64_t requeue_delay_ms;
} rv_message;

/* What a handler returns (any other value is taken as RV_MSG_FINISH). */
enum rv_msg_verdict {
  RV_MSG_FINISH = 0,   /* FIN */
  RV_MSG_REQUEUE = 1,  /* REQ id requeue_delay_ms */
};

/* The handler: runs on a handler thread; ctx is this message's context. */
typedef int (*rv_msg_handler)(rv_ctx *ctx, const rv_message *m, void *arg);

typedef enum rv_consumer_mode {
  RV_CONSUMER_THREAD_PER_MESSAGE = 0,
  RV_CONSUMER_POOL = 1,
} rv_consumer_mode;

typedef struct rv_consumer_opts {
  const char *host;                /* default RV_QUEUE_DEFAULT_HOST */
  uint16_t port;                   /* default RV_QUEUE_DEFAULT_PORT */
  const char *topic;
  const char *channel;
  int64_t max_in_flight;           /* RDY; 0: default */
  int64_t msg_timeout_ms;          /* asked in IDENTIFY; 0: server default */
  int64_t heartbeat_interval_ms;   /* 0: server default */
  const char *client_id;           /* default "ravel" */
  rv_msg_handler handler;
  void *handler_arg;
  bool cancel_on_server_timeout;
  bool cancel_on_local_timeout;
  bool auto_touch;
  bool hold_slots;
  rv_consumer_mode mode;
  int pool_size;                   /* RV_CONSUMER_POOL; 0: default */
  int64_t stop_timeout_ms;         /* 0: default */
} rv_consumer_opts;

typedef struct rv_consumer_stats {
  uint64_t received;
  uint64_t finished;            /* FIN sent */
  uint64_t requeued;            /* REQ sent */
  uint64_t touches;             /* TOUCH sent (auto and explicit) */
  uint64_t timeouts_notified;   /* type-3 frames received */
  uint64_t local_timeouts;      /* handlers cancelled by the local clock */
  uint64_t handlers_cancelled;  /* contexts cancelled for any timeout */
  uint64_t late_fins;           /* E_FIN_FAILED received */
  uint64_t late_reqs;           /* E_REQ_FAILED received */
  uint64_t touch_failed;        /* E_TOUCH_FAILED received */
  uint64_t answers_dropped;     /* answers for a lost connection, not sent */
  uint64_t connects;
  uint64_t connection_losses;
  uint64_t handler_threads_alive;
  uint64_t in_flight;           /* delivered, handler not yet answered */
  /* Of those, the ones the server timed out (type-3 frame) on a connection
   * that granted hold_slots: the slots the server holds for us until their
   * handlers answer. */
  uint64_t held_slots;
  int64_t msg_timeout_ms;       /* what the server granted */
  bool timeout_notify_granted;
  bool hold_slots_granted;
  bool connected;
} rv_consumer_stats;

/* Validate, start the reader (which connects in the background) and, in pool
 * mode, the handler threads.  0 or an rv_err (RV_EINVAL for bad options). */
int rv_consumer_open(rv_consumer **out, const rv_consumer_opts *opts);
/* Wait until the consumer is subscribed (RDY sent) or ctx ends. */
int rv_consumer_wait_ready(rv_consumer *c, rv_ctx *ctx);
void rv_consumer_stats_get(rv_consumer *c, rv_consumer_stats *out);
/* See the top comment.  0, or RV_ETIMEDOUT if handlers ignored both waits
 * (they are then still running; rv_consumer_free joins them). */
int rv_consumer_stop(rv_consumer *c);
/* Stop if needed and free. */
void rv_consumer_free(rv_consumer *c);

/* Set the delay sent with RV_MSG_REQUEUE (ms, 0 = now). */
void rv_message_set_requeue_delay(const rv_message *m, int64_t delay_ms);
/* From a handler: send TOUCH for m now.  0 or an rv_err. */
int rv_message_touch(const rv_message *m);

#ifdef __cplusplus
}
#endif
#endif
