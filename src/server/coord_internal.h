/*
 * coord's internals shared by its command modules (coord.c: sessions, locks
 * and the connection loop; coord_cfg.c: config).  Not part of the API.
 */
#ifndef RAVEL_SERVER_COORD_INTERNAL_H
#define RAVEL_SERVER_COORD_INTERNAL_H

#include "core/config.h"
#include "core/locktable.h"
#include "obs/admin.h"
#include "proto/resp.h"
#include "server/coord.h"
#include "storage/configdb.h"

/* Replies larger than this close the connection (a LOCK.LIST of everything is well below). */
#define COORD_REPLY_MAX_BYTES (64u << 20)

typedef enum block_kind { BLOCK_NONE, BLOCK_LOCK, BLOCK_WATCH } block_kind;

typedef struct cconn {
  rv_coord *srv;
  rv_sconn *sc;
  rv_resp_parser parser;
  rv_resp_out out;
  block_kind blocked;
  uint64_t block_session;
  uint64_t block_waiter;
  int64_t block_since_ns;
  char name[64];
  uint64_t id;
  struct cconn *next, *prev;
  /* BLOCK_WATCH: a CFG.WATCH long poll waiting for its first change. */
  uint64_t watch_id;
  uint64_t watch_resume_rev;
  rv_timer *watch_timer;
  struct cconn *watch_next, *watch_prev;
} cconn;

struct rv_coord {
  rv_loop *loop;
  bool own_loop;
  rv_lt *lt;
  rv_lt_events ev;
  rv_timer *timer;
  rv_cfgdb *db;             /* config, durable */
  rv_cfg *cfg;
  rv_cfg_events cev;
  cconn *watchers;          /* connections blocked in CFG.WATCH */
  rv_log *log;
  bool own_log;
  rv_metrics *metrics;
  bool own_metrics;
  rv_admin *admin;
  uint16_t port, admin_port;
  char data_dir[512];
  uint64_t boot;
  int64_t lock_delay_ns;
  int64_t started_wall_ns;
  cconn *conns;
  size_t nconns;
  uint64_t next_conn_id;
  struct {
    rv_counter_child *commands, *errors;
    rv_histogram_child *wait_seconds, *handoff_seconds;
  } m;
  rv_timer *metrics_timer;
  /* What the admin thread may read: copied from the loop thread under pub_mu. */
  rv_rawmu pub_mu;
  rv_lt_stats pub_stats;
  rv_cfg_stats pub_cfg;
  size_t pub_conns;
  size_t pub_nlocks;
  struct {
    char name[RV_LT_NAME_MAX_BYTES + 1];
    double oldest_wait_s;
    size_t waiters;
  } pub_locks[64];
};

typedef struct cmdctx {
  cconn *k;
  const rv_resp_cmd *cmd;
  int64_t now;
} cmdctx;

/* Returns true if the connection is now blocked. */
typedef bool (*cmd_fn)(cmdctx *x);


void rv__coord_conn_flush(cconn *k);
void rv__coord_reply_err(cconn *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rv__coord_reply_usage(cconn *k, const char *usage);
void rv__coord_unblock(cconn *k);
rv_lt_str rv__coord_arg_str(const rv_resp_arg *a);
bool rv__coord_arg_i64(const rv_resp_arg *a, int64_t *out);
bool rv__coord_arg_u64(const rv_resp_arg *a, uint64_t *out);
void rv__coord_arg_cstr(const rv_resp_arg *a, char *out, size_t cap);
void rv__coord_out_kv_str(rv_resp_out *o, const char *k, const char *v);
void rv__coord_out_kv_int(rv_resp_out *o, const char *k, int64_t v);
int64_t rv__coord_ns_to_ms(int64_t ns);

/* coord_cfg.c */
int rv__coord_cfg_open(rv_coord *c, bool sync_full, char *why, size_t why_len);
void rv__coord_cfg_close(rv_coord *c);
/* A CFG.* command: true if handled (*blocked tells whether the connection now waits). */
bool rv__coord_cfg_dispatch(cmdctx *x, bool *blocked);
/* The connection closes: end its watch. */
void rv__coord_cfg_conn_closed(cconn *k);
/* A session named its service (and replica): config knows the service exists. */
void rv__coord_cfg_register(rv_coord *c, rv_lt_str service, rv_lt_str replica);

#endif
