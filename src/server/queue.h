/*
 * queue: the event queue server.  It speaks NSQ's TCP protocol V2 (so
 * go-nsq, nsqjs, pynsq and NSQ's tools work unchanged) and NSQ's HTTP API,
 * stores every message in a durable, checksummed log before it says OK, and
 * adds the extensions the incident asked for: timeout notification and held
 * slots, negotiated per connection in IDENTIFY, and FIN / REQ / TOUCH
 * qualified by the delivery's attempt number.  docs/queue.md is the
 * reference.
 *
 * The shell glues the server loop (server/loop.h) to the NSQ codec
 * (proto/nsq.h), the queue core (core/queue.h) and the log
 * (storage/qlog.h).  The core and all connections live on the loop thread;
 * fsyncs run on each topic's sync thread; the HTTP API runs on its own
 * threads and hands its work to the loop thread.
 */
#ifndef RAVEL_SERVER_QUEUE_H
#define RAVEL_SERVER_QUEUE_H

#include "obs/log.h"
#include "obs/metrics.h"
#include "server/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RV_QSRV_DEFAULT_TCP_PORT 4150
#define RV_QSRV_DEFAULT_HTTP_PORT 4151
#define RV_QSRV_DEFAULT_DATA "./ravel-data/queue"
/* Client connections served at once; more are refused. */
#define RV_QSRV_CONNECTIONS_MAX 10000

typedef struct rv_qsrv rv_qsrv;

typedef struct rv_qsrv_opts {
  const char *host;            /* default 127.0.0.1 */
  uint16_t tcp_port;           /* 0: RV_QSRV_DEFAULT_TCP_PORT */
  uint16_t http_port;          /* 0: RV_QSRV_DEFAULT_HTTP_PORT */
  bool port_any;               /* pick free ports (tests) */
  bool no_http;                /* no HTTP API / admin endpoint (embedding) */
  const char *data_dir;        /* default RV_QSRV_DEFAULT_DATA */
  bool sync_none;              /* "fast": acknowledge after write(2), not after fsync */
  int64_t msg_timeout_ms;      /* default 60000 (nsqd's) */
  int64_t max_msg_timeout_ms;  /* default 900000 */
  int64_t max_req_timeout_ms;  /* default 3600000 */
  int64_t max_msg_size;        /* default 1 MiB */
  int64_t max_body_size;       /* default 5 MiB */
  int64_t max_rdy_count;       /* default 2500 */
  bool no_extensions;          /* refuse timeout_notify / hold_slots */
  rv_log *log;                 /* default: stderr at info */
  rv_metrics *metrics;         /* default: a registry of its own */
  rv_loop *loop;               /* run on an existing loop (ravel up) */
  /*
   * TEST-ONLY, never in production: answer PUB/MPUB/DPUB "OK" as soon as the
   * message is written, before it is synced, i.e. break the durability
   * promise (docs/queue.md, "Durability").  It exists so that the
   * simulator's durability scenario (`ravel sim durability
   * --ack-before-sync`) can show that its property catches such a queue.
   * Consumers still get only synced messages.  Not reachable from `ravel
   * queue`'s options.
   */
  bool test_ack_before_sync;
} rv_qsrv_opts;

/* Open (recover) the data, bind the ports.  0 or an rv_err; *why says what failed. */
int rv_qsrv_start(rv_qsrv **out, const rv_qsrv_opts *opts, char *why, size_t why_len);
uint16_t rv_qsrv_tcp_port(const rv_qsrv *s);
uint16_t rv_qsrv_http_port(const rv_qsrv *s);
/* Run until rv_qsrv_stop or SIGINT/SIGTERM (own loop only). */
int rv_qsrv_run(rv_qsrv *s);
/* Thread-safe. */
void rv_qsrv_stop(rv_qsrv *s);
void rv_qsrv_free(rv_qsrv *s);

#ifdef __cplusplus
}
#endif
#endif
