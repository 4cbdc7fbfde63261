/*
 * coord: the coordination server.  Sessions, distributed locks with fencing
 * tokens and FIFO waiters, and layered service config, spoken over RESP so
 * redis-cli and every Redis client can use it.  docs/coord.md is the
 * protocol reference.
 *
 * The shell glues the server loop (server/loop.h) to the RESP codec
 * (proto/resp.h), the lock table (core/locktable.h) and the config store
 * (core/config.h over storage/configdb.h).  Everything runs on the loop
 * thread; the admin HTTP endpoint runs on its own.
 */
#ifndef RAVEL_SERVER_COORD_H
#define RAVEL_SERVER_COORD_H

#include "obs/log.h"
#include "obs/metrics.h"
#include "server/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RV_COORD_DEFAULT_PORT 7400
#define RV_COORD_DEFAULT_ADMIN_PORT 7401
#define RV_COORD_DEFAULT_DATA "./ravel-data/coord"
/* Connections served at once; more are refused. */
#define RV_COORD_CONNECTIONS_MAX 10000

typedef struct rv_coord rv_coord;

typedef struct rv_coord_opts {
  const char *host;           /* default 127.0.0.1 */
  uint16_t port;              /* 0: RV_COORD_DEFAULT_PORT; use port_any for a free port */
  bool port_any;              /* pick free ports (tests) */
  uint16_t admin_port;        /* 0: RV_COORD_DEFAULT_ADMIN_PORT (or free, with port_any) */
  bool no_admin;              /* do not start the admin endpoint (embedding) */
  const char *data_dir;       /* default RV_COORD_DEFAULT_DATA */
  int64_t lock_delay_ns;      /* default lock-delay after a holder's session expires; 0 none */
  bool config_sync_full;      /* SQLite synchronous=FULL (power-loss durable); default NORMAL */
  rv_log *log;                /* default: stderr at info */
  rv_metrics *metrics;        /* default: a registry of its own */
  rv_loop *loop;              /* run on an existing loop (ravel up); default: its own */
} rv_coord_opts;

/* Open the data, bind the ports. Returns 0 or an rv_err; *why says what failed. */
int rv_coord_start(rv_coord **out, const rv_coord_opts *opts, char *why, size_t why_len);
uint16_t rv_coord_port(const rv_coord *c);
uint16_t rv_coord_admin_port(const rv_coord *c);
/* Run the loop until rv_coord_stop or SIGINT/SIGTERM (own loop only). */
int rv_coord_run(rv_coord *c);
/* Thread-safe. */
void rv_coord_stop(rv_coord *c);
void rv_coord_free(rv_coord *c);

#ifdef __cplusplus
}
#endif
#endif
