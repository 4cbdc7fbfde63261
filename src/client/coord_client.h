/*
 * The coord client of libravel: sessions with keepalive, distributed locks
 * with fencing tokens, effective config, config watches and a config-built
 * object cache, spoken over RESP to `ravel coord` (docs/coord.md).
 *
 * Model, in the manner of Go's context-based clients: every call that may
 * block takes an rv_ctx and returns RV_ECANCELED / RV_EDEADLINE promptly when
 * it ends, undoing what it half did (a lock wait is withdrawn on the server).
 * All network I/O goes through rt's connections (rv_conn_*), so every wait
 * honours the context; hiredis is used only as a RESP reply parser.
 *
 * Connections and threads:
 *  - one control connection per client (rv_mutex "coord-control") for short
 *    request/reply commands (SESSION.OPEN/CLOSE, LOCK.RELEASE, CFG.EFFECTIVE);
 *  - one connection per blocking LOCK.ACQUIRE (it blocks its connection, like
 *    BLPOP), taken from a small bounded pool of idle connections;
 *  - one background thread per session ("coord-keepalive", own connection)
 *    sending SESSION.KEEPALIVE every ttl/3;
 *  - one background thread per watch ("coord-watch", own connection) running
 *    CFG.WATCH / CFG.WATCHRAW long polls; callbacks run on it.
 * A client may be used from any number of threads at once.
 *
 * With rv_coord_client_opts.etcd_url set, the same API is served by an etcd
 * cluster instead (src/client/etcd_backend.c: sessions are leases, locks the
 * etcd mutex recipe fenced by create_revision, config layers key prefixes
 * under /ravel/config/; its header comment lists where semantics differ).
 */
#ifndef RAVEL_CLIENT_COORD_CLIENT_H
#define RAVEL_CLIENT_COORD_CLIENT_H

#include "rt/ctx.h"
#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RV_COORD_CLIENT_DEFAULT_HOST "127.0.0.1"
#define RV_COORD_CLIENT_DEFAULT_PORT 7400
/* Idle lock connections kept for reuse; more are closed after use. */
#define RV_COORD_POOL_IDLE_MAX 4
/* Lock waits (connections) in flight at once per client, by default; more wait their turn. */
#define RV_COORD_LOCK_CONNS_DEFAULT 64
/* Bound on short operations that take no context (release, close, keepalive). */
#define RV_COORD_OP_TIMEOUT_NS (5 * RV_NS_PER_S)
/* Unanswered releases and orphan checks a session keeps retrying (rv_dlock_release). */
#define RV_COORD_PENDING_RELEASES_MAX 256
/* A withdrawn or failed lock wait is checked for a racing grant at once and again this
 * much later, from the session's keepalive thread. */
#define RV_COORD_ORPHAN_RECHECK_NS (2 * RV_NS_PER_S)
/* Longest lock description the server accepts (bytes, without the NUL). */
#define RV_DLOCK_DESC_MAX 256
/* Watch long-poll length (the server's TIMEOUT); the poll is repeated. */
#define RV_CONFIG_WATCH_POLL_MS 10000
/* "Watch from the current revision" for rv_config_watch's since_rev. */
#define RV_CONFIG_SINCE_NOW UINT64_MAX
/* Namespaces a raw watch may name (the server's limit). */
#define RV_CONFIG_RAW_NS_MAX 8

typedef struct rv_coord_client rv_coord_client;
typedef struct rv_session rv_session;
typedef struct rv_dlock rv_dlock;
typedef struct rv_config_watcher rv_config_watcher;
typedef struct rv_config_cache rv_config_cache;

typedef struct rv_coord_client_opts {
  const char *host;      /* default RV_COORD_CLIENT_DEFAULT_HOST (numeric: connect is then cancellable) */
  uint16_t port;         /* default RV_COORD_CLIENT_DEFAULT_PORT */
  /* Identity sent with SESSION.OPEN. */
  const char *service;   /* required for sessions */
  const char *replica;   /* optional */
  const char *host_name; /* optional: this machine's name */
  const char *admin_url; /* optional: this process's admin endpoint */
  int pid;               /* 0: rv_getpid() */
  int lock_conns_max;    /* 0: RV_COORD_LOCK_CONNS_DEFAULT */
  /*
   * Set ("http://127.0.0.1:2379"): use the etcd backend instead of coord:
   * the same API over etcd's v3 JSON gateway (src/client/etcd_backend.c says
   * where its semantics differ).  Several endpoints, comma-separated, are
   * tried in turn when one refuses connections.  host, port and
   * lock_conns_max are ignored.
   */
  const char *etcd_url;
} rv_coord_client_opts;

/* Counters since the client was opened (read with rv_coord_client_stats). */
typedef struct rv_coord_stats {
  uint64_t acquisitions;   /* locks granted */
  uint64_t waits;          /* acquires that had to wait (not granted at once) */
  uint64_t cancels;        /* acquires that ended by ctx cancel/deadline, withdrawn */
  uint64_t keepalives;     /* successful SESSION.KEEPALIVEs */
  uint64_t session_losses; /* sessions lost (expired, closed server-side, unreachable) */
  uint64_t watch_events;   /* watch callbacks delivered */
  uint64_t watch_reconnects;
  uint64_t watch_resyncs;  /* COMPACTED/FUTURE answers: continued from the current revision */
  uint64_t cache_rebuilds; /* rv_config_cache objects rebuilt after the first build */
  uint64_t releases_retried; /* lock releases coord answered only on a later try (rv_dlock_release) */
} rv_coord_stats;

/* Connect (ctx bounds the connect).  Returns 0 or an rv_err. */
int rv_coord_client_open(rv_coord_client **out, rv_ctx *ctx, const rv_coord_client_opts *o);
/* Close; sessions, watches and caches of the client must be closed first. */
void rv_coord_client_close(rv_coord_client *c);
void rv_coord_client_stats(rv_coord_client *c, rv_coord_stats *out);
/*
 * The text of the last error reply the server sent to a call of the calling
 * thread ("NOTOWNER ..."); "" if none.  Valid until the thread's next call.
 */
const char *rv_coord_last_error(void);

/* ---- sessions ------------------------------------------------------------------ */

/* Called once, on the keepalive thread, when the session is lost; reason says why.
 * It must not block long nor call rv_session_close (which joins that thread). */
typedef void (*rv_session_lost_fn)(void *arg, const char *reason);

int rv_session_open(rv_ctx *ctx, rv_coord_client *c, int64_t ttl_ms, rv_session **out);
/* Same, with a loss callback (may be NULL). */
int rv_session_open_cb(rv_ctx *ctx, rv_coord_client *c, int64_t ttl_ms,
                       rv_session_lost_fn on_lost, void *arg, rv_session **out);
/* The server's session id. */
uint64_t rv_session_id(const rv_session *s);
/*
 * A context cancelled ("session lost: ...") when the session is lost, or
 * ("session closed") by rv_session_close.  Valid until rv_session_close;
 * derive work contexts from it so that work under a lost lock stops.
 */
rv_ctx *rv_session_ctx(rv_session *s);
bool rv_session_lost(rv_session *s);
/*
 * Stop the keepalive, close the session on the server (its locks go to their
 * waiters).  Release or drop every rv_dlock of the session first, and let no
 * acquire on it be running.
 */
void rv_session_close(rv_session *s);
/* Test hook: stop (true) or resume (false) sending keepalives. */
void rv_session_test_pause_keepalive(rv_session *s, bool pause);

/* ---- distributed locks -------------------------------------------------------------- */

/*
 * Acquire lock `name` for session s, waiting in the server's FIFO as long as
 * ctx allows.  description NULL: "pid P thread ID NAME: TASK" from the thread
 * registry.  While waiting the thread publishes the external wait "dlock NAME".
 * Returns 0 (*out set), RV_ECANCELED / RV_EDEADLINE (the wait was withdrawn on
 * the server), RV_ENOTFOUND (session gone), RV_EINVAL (bad name/description,
 * see rv_coord_last_error), or an I/O error.  When lock_conns_max waits are
 * in flight, a further acquire first waits (under ctx) for a connection.
 */
int rv_dlock_acquire(rv_ctx *ctx, rv_session *s, const char *name, const char *description,
                     rv_dlock **out);
/* The fencing token: strictly increasing across grants. */
uint64_t rv_dlock_token(const rv_dlock *h);
const char *rv_dlock_name(const rv_dlock *h);
/*
 * Release on the server and free the handle.  When the server (coord or etcd)
 * cannot be reached (a reset, a partition), the release is kept on the session
 * and sent again after each keepalive that gets through, until it answers or
 * the session ends: a lock is never left held for the life of a session because one
 * release was lost.  At most RV_COORD_PENDING_RELEASES_MAX are kept per
 * session (beyond that the lock stays held until the session ends).  The
 * return value is this first attempt's.
 */
int rv_dlock_release(rv_dlock *h);

/* The default description for the calling thread (what acquire uses for NULL). */
void rv_dlock_default_description(char *buf, size_t len);

/* ---- config ------------------------------------------------------------------------- */

/*
 * The effective value of key for service (replica may be NULL): *value is
 * malloc'd (caller frees), *revision its mod_revision (may be NULL).
 * RV_ENOTFOUND when unset.
 */
int rv_config_get(rv_ctx *ctx, rv_coord_client *c, const char *service, const char *replica,
                  const char *key, char **value, uint64_t *revision);
/* The store's current revision. */
int rv_config_revision(rv_ctx *ctx, rv_coord_client *c, uint64_t *revision);

/* How a config write is recorded and when it applies (all optional). */
typedef struct rv_config_write_opts {
  const char *author; /* NULL: coord's default (the connection's name, else its address) */
  const char *reason; /* why, for the audit log */
  bool if_revision;   /* compare-and-set: write only if the key's mod_revision is `revision` */
  uint64_t revision;  /* with if_revision: 0 means the key must not exist */
} rv_config_write_opts;

/*
 * Set key to value in namespace ns ("platform", "svc/S" or "svc/S/R"); o may be
 * NULL.  *revision (may be NULL) gets the write's revision.  RV_EBUSY when
 * if_revision does not match (someone changed the key: re-read and retry),
 * RV_EINVAL for a bad namespace, key or value (rv_coord_last_error says which).
 * A write is never sent twice: on an I/O error it may or may not have been
 * applied (if_revision makes a retry safe).  With the etcd backend author and
 * reason are not stored (etcd has no audit log).
 */
int rv_config_set(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                  const char *value, const rv_config_write_opts *o, uint64_t *revision);
/* Delete key from ns: as rv_config_set; RV_ENOTFOUND when ns does not set it. */
int rv_config_delete(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                     const rv_config_write_opts *o, uint64_t *revision);

/*
 * One change; strings valid during the callback only; old/new NULL when unset.
 * resync: the server could not answer from its history (COMPACTED, or FUTURE
 * after it lost its data); key is NULL, and the watch continues from
 * `revision`: re-read what you depend on (rv_config_cache does).
 */
typedef struct rv_config_event {
  uint64_t revision;
  bool resync;
  const char *key;
  const char *ns;        /* where the write happened */
  const char *old_value;
  const char *new_value;
} rv_config_event;

typedef void (*rv_config_watch_fn)(void *arg, const rv_config_event *ev);

typedef struct rv_config_watch_opts {
  const char *prefix;               /* only keys with this prefix (NULL: all) */
  bool raw;                         /* CFG.WATCHRAW: every write, changed or not */
  const char *raw_ns[RV_CONFIG_RAW_NS_MAX]; /* raw: namespaces (NULL-terminated if fewer) */
} rv_config_watch_opts;

/*
 * Watch the effective config of service[/replica] after revision since_rev
 * (RV_CONFIG_SINCE_NOW: from now) on a background thread; cb runs on it once
 * per change, in revision order, exactly once across reconnects.
 */
int rv_config_watch(rv_coord_client *c, const char *service, const char *replica,
                    const char *prefix, uint64_t since_rev, rv_config_watch_fn cb, void *arg,
                    rv_config_watcher **out);
int rv_config_watch_ex(rv_coord_client *c, const char *service, const char *replica,
                       const rv_config_watch_opts *o, uint64_t since_rev, rv_config_watch_fn cb,
                       void *arg, rv_config_watcher **out);
/* The revision the watch has delivered up to. */
uint64_t rv_config_watch_revision(rv_config_watcher *w);
/* Stop the thread (waits for a running callback) and free. */
void rv_config_watch_stop(rv_config_watcher *w);
/* Test hook: drop the watch's connection; it reconnects and resumes. */
void rv_config_watch_test_drop(rv_config_watcher *w);

/* ---- a cache of an object built from config ---------------------------------------------- */

/* Build an object from values[i] (the effective value of keys[i], NULL if unset). */
typedef int (*rv_config_build_fn)(void *arg, const char *const *values, void **obj);
typedef void (*rv_config_destroy_fn)(void *arg, void *obj);

typedef struct rv_config_cache_opts {
  const char *service, *replica; /* replica may be NULL */
  const char *const *keys;        /* the keys the object depends on */
  size_t nkeys;
  const char *lock_name;          /* the rv_rwlock's name, e.g. "client-cache" */
  rv_config_build_fn build;
  rv_config_destroy_fn destroy;
  void *arg;
  /*
   * Bug mode (the reference service's incident): watch every write to raw_ns
   * with CFG.WATCHRAW and rebuild on each one that names a dependent key,
   * changed or not (values re-read with CFG.EFFECTIVE).  Off: rebuild only on
   * effective changes.
   */
  bool raw;
  const char *raw_ns[RV_CONFIG_RAW_NS_MAX]; /* NULL-terminated if fewer */
} rv_config_cache_opts;

typedef struct rv_config_cache_stats {
  uint64_t builds;    /* including the first */
  uint64_t rebuilds;  /* after an effective change of a dependent key */
  uint64_t events;    /* watch events seen (any key) */
  uint64_t build_errors;
} rv_config_cache_stats;

/* Read the values, build the first object, start the watch. */
int rv_config_cache_open(rv_ctx *ctx, rv_coord_client *c, const rv_config_cache_opts *o,
                         rv_config_cache **out);
/*
 * Read-lock and return the current object; pair with rv_config_cache_release.
 * The read lock is recorded at the caller's line (dumps and recursive-read
 * reports name the handler's code, not this library's).  The _ctx form gives
 * up when ctx ends (RV_ECANCELED / RV_EDEADLINE; nothing is held then): the
 * wait for the lock honours the handler's context, as every blocking call does.
 */
#define rv_config_cache_obtain(cc, obj, release_token)                                           \
  ((void)rv__config_cache_obtain((cc), NULL, (obj), (release_token), __FILE__, __LINE__))
#define rv_config_cache_obtain_ctx(cc, ctx, obj, release_token)                                  \
  rv__config_cache_obtain((cc), (ctx), (obj), (release_token), __FILE__, __LINE__)
int rv__config_cache_obtain(rv_config_cache *cc, rv_ctx *ctx, void **obj, uint64_t *release_token,
                            const char *file, int line);
void rv_config_cache_release(rv_config_cache *cc, uint64_t release_token);
void rv_config_cache_stats_get(rv_config_cache *cc, rv_config_cache_stats *out);
/* The revision the cache has applied up to. */
uint64_t rv_config_cache_revision(rv_config_cache *cc);
void rv_config_cache_close(rv_config_cache *cc);

#ifdef __cplusplus
}
#endif
#endif
