/*
 * Internals of the coord client shared by its .c files: a RESP connection
 * (rt's rv_conn plus hiredis's reply parser), the client struct, and helpers
 * for flat-map replies.  A cc_conn is used by one thread at a time: whoever
 * holds the control mutex, the keepalive or watch thread that owns it, or the
 * acquiring thread that took it from the pool.
 */
#ifndef RAVEL_CLIENT_COORD_INTERNAL_H
#define RAVEL_CLIENT_COORD_INTERNAL_H

#include "client/coord_client.h"

#include <hiredis/hiredis.h>

#define CC_ARGS_MAX 24
#define CC_READ_CHUNK 16384
#define CC_HOST_MAX 256
#define CC_ERR_MAX 256

typedef struct cc_conn {
  rv_conn *c;
  redisReader *rd;
} cc_conn;

struct rv_coord_client {
  char host[CC_HOST_MAX];
  uint16_t port;
  char *service, *replica, *host_name, *admin_url;
  int pid;
  int lock_conns_max;

  rv_mutex ctl_mu; /* "coord-control": guards ctl */
  cc_conn *ctl;    /* NULL until (re)connected */

  rv_mutex pool_mu; /* "coord-pool": guards the fields below */
  cc_conn *idle[RV_COORD_POOL_IDLE_MAX];
  int nidle;
  int in_use;      /* connections out (waiting); in_use + nidle <= lock_conns_max */
  rv_cond pool_cv; /* "coord-pool-free": signalled when one comes back */

  /* rv_coord_stats, updated with __atomic builtins */
  rv_coord_stats st;
};

#define CC_STAT_INC(c, field) __atomic_fetch_add(&(c)->st.field, 1, __ATOMIC_RELAXED)

/* Dial a connection; 0 or an rv_err. */
int cc_dial(rv_coord_client *c, rv_ctx *ctx, cc_conn **out);
void cc_conn_free(cc_conn *k);
/* Send a command (argv strings) and read one reply.  On an rv_err the connection's state is unknown: free it. */
int cc_call(cc_conn *k, rv_ctx *ctx, int argc, const char *const *argv, redisReply **out);
/* Send only / read only (for blocking commands). */
int cc_send(cc_conn *k, rv_ctx *ctx, int argc, const char *const *argv);
int cc_recv(cc_conn *k, rv_ctx *ctx, redisReply **out);
/* A command on the control connection, reconnecting once if it was broken. */
int cc_ctl_call(rv_coord_client *c, rv_ctx *ctx, int argc, const char *const *argv,
                redisReply **out);
/* Map an error reply to an rv_err and remember its text for rv_coord_last_error. */
int cc_reply_err(const redisReply *r);
void cc_set_last_error(const char *text);

/* Flat map lookup: the value element for key, or NULL. */
const redisReply *cc_map_get(const redisReply *m, const char *key);
/* malloc'd copy of a string/status value; NULL for nil or absent. */
char *cc_map_strdup(const redisReply *m, const char *key);
long long cc_map_int(const redisReply *m, const char *key, long long dflt);

/* "service" or "service/replica" into buf. */
void cc_target(char *buf, size_t len, const char *service, const char *replica);

#endif
