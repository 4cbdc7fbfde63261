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

/*
 * Backends: coord (these files) or etcd (etcd_backend.c).  Every handle
 * (rv_session, rv_dlock, rv_config_watcher) begins with a cc_handle saying
 * which backend made it, and the public functions dispatch on it (or on the
 * client's `etcd`) at their top.
 */
typedef struct cc_handle {
  bool etcd;
} cc_handle;
#define CC_IS_ETCD(h) (((const cc_handle *)(const void *)(h))->etcd)

typedef struct ec_client ec_client;

struct rv_coord_client {
  ec_client *etcd; /* non-NULL: the etcd backend serves every call */
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
/* A write on the control connection: never sent twice (a reused connection is checked
 * with PING first); an rv_err means it may or may not have been applied. */
int cc_ctl_write(rv_coord_client *c, rv_ctx *ctx, int argc, const char *const *argv,
                 redisReply **out);
/* Map an error reply to an rv_err and remember its text for rv_coord_last_error. */
int cc_reply_err(const redisReply *r);
void cc_set_last_error(const char *text);

/*
 * The keepalive loop shared by the coord and etcd sessions: renew every TTL/3,
 * retry every TTL/10 after a failure, and declare the session lost when the
 * server says so or when no renewal succeeded within the TTL.  attempt makes
 * one renewal under op (deadline: the expiry): RV_OK, CC_KA_LOST (the server
 * says the session is gone; why says how), or another error (transient; why
 * says what).  Returns when stop ends or the session is lost (after lose).
 */
#define CC_KA_LOST 1
typedef struct cc_keepalive {
  rv_coord_client *c; /* its keepalives counter */
  rv_ctx *stop;
  int64_t ttl_ns, opened_ns;
  const bool *paused; /* __atomic test hook */
  int (*attempt)(void *arg, rv_ctx *op, char *why, size_t whylen);
  void (*lose)(void *arg, const char *why);
  void *arg;
} cc_keepalive;
void cc_keepalive_run(const cc_keepalive *k);

/* Flat map lookup: the value element for key, or NULL. */
const redisReply *cc_map_get(const redisReply *m, const char *key);
/* malloc'd copy of a string/status value; NULL for nil or absent. */
char *cc_map_strdup(const redisReply *m, const char *key);
long long cc_map_int(const redisReply *m, const char *key, long long dflt);

/* "service" or "service/replica" into buf. */
void cc_target(char *buf, size_t len, const char *service, const char *replica);

/* ---- the etcd backend (etcd_backend.c): same contracts as the public functions ---- */
int ec_client_open(rv_coord_client *c, rv_ctx *ctx, const char *url);
void ec_client_close(rv_coord_client *c);
int ec_session_open(rv_ctx *ctx, rv_coord_client *c, int64_t ttl_ms, rv_session_lost_fn on_lost,
                    void *arg, rv_session **out);
uint64_t ec_session_id(const rv_session *s);
rv_ctx *ec_session_ctx(rv_session *s);
bool ec_session_lost(rv_session *s);
void ec_session_close(rv_session *s);
void ec_session_test_pause_keepalive(rv_session *s, bool pause);
int ec_dlock_acquire(rv_ctx *ctx, rv_session *s, const char *name, const char *description,
                     rv_dlock **out);
uint64_t ec_dlock_token(const rv_dlock *h);
const char *ec_dlock_name(const rv_dlock *h);
int ec_dlock_release(rv_dlock *h);
int ec_config_get(rv_ctx *ctx, rv_coord_client *c, const char *service, const char *replica,
                  const char *key, char **value, uint64_t *revision);
int ec_config_revision(rv_ctx *ctx, rv_coord_client *c, uint64_t *revision);
int ec_config_write(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                    const char *value, const rv_config_write_opts *o, uint64_t *revision);
int ec_config_watch(rv_coord_client *c, const char *service, const char *replica,
                    const rv_config_watch_opts *o, uint64_t since_rev, rv_config_watch_fn cb,
                    void *arg, rv_config_watcher **out);
uint64_t ec_config_watch_revision(rv_config_watcher *w);
void ec_config_watch_test_drop(rv_config_watcher *w);
void ec_config_watch_stop(rv_config_watcher *w);

#endif
