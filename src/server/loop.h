/*
 * The server loop: the seam between ravel's server shells (coord, queue) and
 * the network.  The real implementation (loop.c) runs on libuv; the
 * simulator will provide the same interface over its simulated network and
 * virtual clock.  A shell sees only connections that deliver bytes and accept
 * bytes, timers on the monotonic clock, and wake-ups from other threads.
 *
 * Threading: everything here runs on the loop's thread, except
 * rv_wakeup_send and rv_loop_stop, which any thread may call.
 *
 * Input: bytes that arrive are appended to the connection's input buffer and
 * the whole buffer is offered to on_data, which consumes a prefix (complete
 * frames) and leaves the rest for later.  The buffer is bounded
 * (rv_loop_opts.input_max_bytes): a connection that exceeds it without
 * on_data consuming anything is closed, so a codec must reject oversized
 * frames from their headers (the NSQ and RESP codecs do).
 *
 * Output: rv_sconn_write copies into the connection's output buffer; all
 * connections with pending output are flushed once per loop iteration, so
 * the replies to a pipelined batch leave in one write(2).  Handlers watch
 * rv_sconn_out_bytes to stop producing when a peer reads slowly.
 */
#ifndef RAVEL_SERVER_LOOP_H
#define RAVEL_SERVER_LOOP_H

#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults (rv_loop_opts fields of 0 select them). */
#define RV_LOOP_INPUT_MAX_BYTES (8u << 20)   /* per connection input buffer */
#define RV_LOOP_OUTPUT_MAX_BYTES (64u << 20) /* per connection: over it the peer is dropped */
#define RV_LOOP_LISTENERS_MAX 8
#define RV_LOOP_BACKLOG 511

typedef struct rv_loop rv_loop;
typedef struct rv_sconn rv_sconn;
typedef struct rv_timer rv_timer;
typedef struct rv_wakeup rv_wakeup;

typedef struct rv_sconn_handler {
  /* A connection arrived: return its state, or NULL to refuse (closed at once). */
  void *(*on_open)(void *server, rv_sconn *c);
  /* Bytes arrived: consume a prefix and return its length (0..len). */
  size_t (*on_data)(void *conn, const char *buf, size_t len);
  /* The connection is gone (peer closed, error, or after rv_sconn_close): free its state. */
  void (*on_close)(void *conn);
  /* Optional: output fell back under the low watermark after a flush. */
  void (*on_drain)(void *conn);
} rv_sconn_handler;

typedef struct rv_loop_opts {
  size_t input_max_bytes;
  size_t output_max_bytes;
} rv_loop_opts;

int rv_loop_new(rv_loop **out, const rv_loop_opts *opts);
/* Run until rv_loop_stop; then close every connection and listener. */
int rv_loop_run(rv_loop *loop);
/* Thread-safe and async-signal-safe enough for a signal handler thread: ask the loop to stop. */
void rv_loop_stop(rv_loop *loop);
void rv_loop_free(rv_loop *loop);
/* Stop the loop on SIGINT and SIGTERM (handled on the loop thread). */
int rv_loop_stop_on_signals(rv_loop *loop);

/* Listen on host:port (0: any free port; *bound_port gets the port). */
int rv_loop_listen(rv_loop *loop, const char *host, uint16_t port, const rv_sconn_handler *h,
                   void *server, uint16_t *bound_port);

void rv_sconn_write(rv_sconn *c, const void *buf, size_t len);
/* Bytes written but not yet handed to the kernel. */
size_t rv_sconn_out_bytes(const rv_sconn *c);
/* Flush pending output, then close; on_close follows. */
void rv_sconn_close(rv_sconn *c);
/* Stop offering input (bytes keep buffering up to the limit, then reading pauses). */
void rv_sconn_pause(rv_sconn *c);
/* Offer buffered input again (on the next loop iteration). */
void rv_sconn_resume(rv_sconn *c);
const char *rv_sconn_peer(const rv_sconn *c);
rv_loop *rv_sconn_loop(const rv_sconn *c);

/* A one-shot timer on the monotonic clock (rv_now_ns); re-arm with rv_timer_set. */
rv_timer *rv_timer_new(rv_loop *loop, void (*cb)(void *arg), void *arg);
void rv_timer_set(rv_timer *t, int64_t deadline_ns);
void rv_timer_stop(rv_timer *t);
void rv_timer_free(rv_timer *t);

/* Run cb(arg) on the loop thread after rv_wakeup_send from any thread (coalesced). */
rv_wakeup *rv_wakeup_new(rv_loop *loop, void (*cb)(void *arg), void *arg);
void rv_wakeup_send(rv_wakeup *w);
void rv_wakeup_free(rv_wakeup *w);

#ifdef __cplusplus
}
#endif
#endif
