/*
 * config: coord's layered service config as a pure state machine.
 *
 * No syscalls, no clock, no threads, no globals: wall time comes in as
 * wall_ns on every write, and effects on watchers go out as events appended
 * to a caller-owned rv_cfg_events list.  Durability is the storage layer's
 * job (storage/configdb.h wraps every write in a SQLite transaction and
 * loads the store back at start).  The model is explained at the top of
 * config.c; the short version:
 *
 * Namespaces (layers).  Every key lives in exactly one namespace:
 *
 *     platform                    every service inherits it
 *     svc/<service>               one service, all its replicas
 *     svc/<service>/<replica>     one replica of one service
 *
 * Service and replica names are 1..RV_CFG_NAME_MAX_BYTES of [A-Za-z0-9._-],
 * starting with a letter or digit.  Keys are 1..RV_CFG_KEY_MAX_BYTES of
 * [A-Za-z0-9._:/-].  Values are byte strings of 0..max_value_bytes without
 * NUL bytes (JSON welcome; the store never parses them).  An empty value is
 * a value; a deleted key is absent.
 *
 * Effective values.  What replica R of service S sees for a key is the value
 * of the most specific layer that sets it: svc/S/R, else svc/S, else
 * platform.  A service-level reader (no replica) sees svc/S, else platform.
 *
 * Revisions.  Every write (set, delete, rollback) gets the next revision of
 * one store-wide counter (1, 2, 3, ... without gaps) and an audit record:
 * revision, wall time, author, reason, namespace, key, old and new value.
 * Each key remembers the revision that created it and the one that last
 * changed it (mod_revision), for compare-and-set: expect_revision 0 means
 * "must not exist", N means "its mod_revision must be N", RV_CFG_REV_ANY
 * means unconditional.
 *
 * Watches.  An effective watch on (service[, replica]) gets an event for a
 * write only when the effective value it sees changes: a platform write the
 * service overrides, or a write of the same value, produces nothing for it.
 * A raw watch on up to RV_CFG_WATCH_NS_MAX namespaces gets an event for
 * every write to them (what a naive client does; the reference service's
 * bug mode uses it).  A watch opened "since revision R" first receives,
 * in order, exactly the events it would have received for revisions
 * R+1..now, then live ones: a client that remembers the revision of the
 * last event it handled (or the start revision of its watch) resumes
 * without missing or repeating anything.  The store keeps the last
 * history_max_entries writes (and at most history_max_bytes); a resume from
 * before that window fails with RV_CFG_ECOMPACTED and the client must
 * re-read the full state (rv_cfg_list_effective) and watch from now.
 *
 * Threading.  None: the caller serializes every call on one rv_cfg,
 * including rv_cfg_events_clear/free (events share reference-counted
 * values with the store).  Views filled by reads and passed to visitors
 * point into the store and stay valid until the next call that changes it;
 * events stay valid until they are cleared.
 *
 * Durable stores (configdb) split a write in two: rv_cfg_prepare computes
 * exactly what rv_cfg_apply would do without changing anything, the caller
 * makes it durable, then rv_cfg_apply performs it.
 */
#ifndef RAVEL_CORE_CONFIG_H
#define RAVEL_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits ---------------------------------------------------------------- */

/* Service and replica names. */
#define RV_CFG_NAME_MAX_BYTES 64
/* Keys. */
#define RV_CFG_KEY_MAX_BYTES 256
/* The longest namespace: "svc/" name "/" name. */
#define RV_CFG_NS_MAX_BYTES (4 + RV_CFG_NAME_MAX_BYTES + 1 + RV_CFG_NAME_MAX_BYTES)
/* Authors ("alice", "deploy-bot@ci"): printable, no control bytes, required. */
#define RV_CFG_AUTHOR_MAX_BYTES 128
/* Reasons ("raise timeout for INC-42"): printable, no control bytes, may be empty. */
#define RV_CFG_REASON_MAX_BYTES 1024
/* Values: the default per-store limit, and the ceiling any store may set. */
#define RV_CFG_VALUE_MAX_BYTES_DEFAULT (64 * 1024)
#define RV_CFG_VALUE_MAX_BYTES_CEILING (1024 * 1024)
#define RV_CFG_MAX_KEYS_PER_LAYER_DEFAULT 10000
/* Namespaces alive: platform + services + replicas. */
#define RV_CFG_MAX_LAYERS_DEFAULT 20000
#define RV_CFG_MAX_SERVICES_DEFAULT 2000
#define RV_CFG_MAX_WATCHES_DEFAULT 10000
/* Bytes of all current keys and values together. */
#define RV_CFG_MAX_DATA_BYTES_DEFAULT ((size_t)256 * 1024 * 1024)
/* The change history kept in memory (watch resume, rollback, audit). */
#define RV_CFG_HISTORY_MAX_ENTRIES_DEFAULT 100000
#define RV_CFG_HISTORY_MAX_BYTES_DEFAULT ((size_t)256 * 1024 * 1024)
/* Namespaces one raw watch may cover. */
#define RV_CFG_WATCH_NS_MAX 8
/* Audit query results per call: the default and the most a caller may ask. */
#define RV_CFG_AUDIT_LIMIT_DEFAULT 100
#define RV_CFG_AUDIT_LIMIT_MAX 1000
/* Revisions fit a RESP integer and a SQLite INTEGER. */
#define RV_CFG_REVISION_MAX ((uint64_t)INT64_MAX)
/* expect_revision: write unconditionally. */
#define RV_CFG_REV_ANY UINT64_MAX
/* since_revision: start a watch at the current revision, replay nothing. */
#define RV_CFG_SINCE_NOW UINT64_MAX
/* Bytes of rv_cfg_errmsg's buffer. */
#define RV_CFG_ERRMSG_MAX 512

/* ---- errors ------------------------------------------------------------------ */
/*
 * Negative codes from one table.  rv_cfg_errcode() is a short word for a
 * RESP error ("-CONFLICT ..."), rv_cfg_strerror() a fixed sentence, and
 * rv_cfg_errmsg(cfg) the specific message of the last failed call (which
 * key, which limit, what to do).
 */
#define RV_CFG_ERRORS(X)                                                             \
  X(RV_CFG_OK, 0, "OK", "ok")                                                        \
  X(RV_CFG_EINVAL, -1, "ERR", "invalid argument")                                    \
  X(RV_CFG_EBADNS, -2, "BADNS", "invalid namespace")                                 \
  X(RV_CFG_EBADNAME, -3, "BADNAME", "invalid service or replica name")               \
  X(RV_CFG_EBADKEY, -4, "BADKEY", "invalid key")                                     \
  X(RV_CFG_EBADVALUE, -5, "BADVALUE", "invalid value")                               \
  X(RV_CFG_EVALUESIZE, -6, "TOOBIG", "value too large")                              \
  X(RV_CFG_EBADAUTHOR, -7, "BADAUTHOR", "invalid author")                            \
  X(RV_CFG_EBADREASON, -8, "BADREASON", "invalid reason")                            \
  X(RV_CFG_ENOKEY, -9, "NOKEY", "no such key")                                       \
  X(RV_CFG_ECONFLICT, -10, "CONFLICT", "key revision does not match")                \
  X(RV_CFG_ECOMPACTED, -11, "COMPACTED", "revision older than the retained history") \
  X(RV_CFG_EFUTURE, -12, "FUTURE", "revision ahead of the store")                    \
  X(RV_CFG_ENOWATCH, -13, "NOWATCH", "no such watch")                                \
  X(RV_CFG_ENOSERVICE, -14, "NOSERVICE", "no such service or replica")               \
  X(RV_CFG_EKEYS, -15, "LIMIT", "too many keys in one namespace")                    \
  X(RV_CFG_ELAYERS, -16, "LIMIT", "too many namespaces")                             \
  X(RV_CFG_ESERVICES, -17, "LIMIT", "too many services")                             \
  X(RV_CFG_EWATCHES, -18, "LIMIT", "too many watches")                               \
  X(RV_CFG_EDATA, -19, "LIMIT", "config data limit reached")                         \
  X(RV_CFG_EQUERY, -20, "LIMIT", "audit query asks for too many results")            \
  X(RV_CFG_EREVISIONS, -21, "LIMIT", "revisions exhausted")                          \
  X(RV_CFG_ESTORAGE, -22, "STORAGE", "durable storage failed")                       \
  X(RV_CFG_ENOMEM, -23, "OOM", "out of memory")

enum rv_cfg_err {
#define RV__CFG_ERR_ENUM(name, val, code, text) name = (val),
  RV_CFG_ERRORS(RV__CFG_ERR_ENUM)
#undef RV__CFG_ERR_ENUM
};

const char *rv_cfg_strerror(int err);
/* "CONFLICT", "LIMIT", ...: the first word of a RESP error. */
const char *rv_cfg_errcode(int err);
/* "RV_CFG_ECONFLICT". */
const char *rv_cfg_errname(int err);

/* ---- types ------------------------------------------------------------------- */

typedef struct rv_cfg rv_cfg;
/* Reference-counted internals that events keep alive. */
typedef struct rv__cfg_rec rv__cfg_rec;
typedef struct rv__cfg_val rv__cfg_val;

/*
 * Bytes with a length.  Inputs need not be NUL-terminated (RESP arguments
 * are not).  Outputs that point into the store are NUL-terminated as well.
 */
typedef struct rv_cfg_str {
  const char *ptr;
  size_t len;
} rv_cfg_str;
#define RV_CFG_STR(lit) ((rv_cfg_str){(lit), sizeof(lit) - 1})
/* A C string as rv_cfg_str; NULL gives the empty string. */
rv_cfg_str rv_cfg_cstr(const char *s);

/* Where a value lives.  NONE: nowhere (the key is absent). */
enum rv_cfg_level {
  RV_CFG_LEVEL_NONE = 0,
  RV_CFG_LEVEL_PLATFORM = 1,
  RV_CFG_LEVEL_SERVICE = 2,
  RV_CFG_LEVEL_REPLICA = 3,
};
/* "none", "platform", "service", "replica". */
const char *rv_cfg_level_name(int level);

enum rv_cfg_op {
  RV_CFG_OP_SET = 1,
  RV_CFG_OP_DELETE = 2,
  RV_CFG_OP_ROLLBACK = 3, /* new_present says whether it set or deleted */
};
/* "set", "delete", "rollback". */
const char *rv_cfg_op_name(int op);

/* A parsed namespace; service and replica point into the parsed string. */
typedef struct rv_cfg_ns {
  int level;          /* PLATFORM, SERVICE or REPLICA */
  rv_cfg_str service; /* empty for PLATFORM */
  rv_cfg_str replica; /* empty unless REPLICA */
} rv_cfg_ns;

/*
 * Parse "platform", "svc/S" or "svc/S/R".  Returns RV_CFG_OK, RV_CFG_EBADNS
 * or RV_CFG_EBADNAME; why (may be NULL, why_len bytes) gets the reason.
 */
int rv_cfg_ns_parse(rv_cfg_str ns, rv_cfg_ns *out, char *why, size_t why_len);
/* Check a key (what: how to name it in why; allow_empty: a key prefix).  RV_CFG_OK or
 * RV_CFG_EBADKEY with the reason in why. */
int rv_cfg_key_check(rv_cfg_str key, const char *what, bool allow_empty, char *why,
                     size_t why_len);
/* Format a namespace into out (RV_CFG_NS_MAX_BYTES + 1 bytes); returns its length. */
size_t rv_cfg_ns_format(char *out, int level, rv_cfg_str service, rv_cfg_str replica);

typedef struct rv_cfg_opts {
  size_t max_keys_per_layer;
  size_t max_layers;          /* namespaces alive, platform included */
  size_t max_services;
  size_t max_watches;
  size_t max_value_bytes;     /* <= RV_CFG_VALUE_MAX_BYTES_CEILING */
  size_t max_data_bytes;      /* keys + values currently stored */
  size_t history_max_entries; /* >= 1 */
  size_t history_max_bytes;   /* the newest entry is kept whatever its size */
  uint64_t hash_seed[2];      /* keys the hash tables (flooding resistance) */
} rv_cfg_opts;

/* A write, as requested. */
typedef struct rv_cfg_write {
  int op;                   /* enum rv_cfg_op */
  rv_cfg_str ns;            /* "platform", "svc/S", "svc/S/R" */
  rv_cfg_str key;
  rv_cfg_str value;         /* SET */
  uint64_t expect_revision; /* RV_CFG_REV_ANY, 0 (must not exist) or the key's mod_revision */
  uint64_t rollback_to;     /* ROLLBACK: the value as of this revision (0: before any write) */
  /*
   * ROLLBACK, for stores that keep more history than memory (configdb): the
   * value as of rollback_to, resolved by the caller, instead of the store
   * looking it up in its retained history.
   */
  bool rollback_resolved;
  bool rollback_present;
  rv_cfg_str rollback_value;
  rv_cfg_str author;        /* required */
  rv_cfg_str reason;        /* may be empty */
  int64_t wall_ns;          /* wall-clock time of the write, recorded as is */
} rv_cfg_write;

/*
 * A write as performed: the audit record.  From rv_cfg_prepare the strings
 * may point into the request; everywhere else they point into the store.
 */
typedef struct rv_cfg_change {
  uint64_t revision;
  int64_t wall_ns;
  int op;                   /* enum rv_cfg_op */
  uint64_t rollback_to;     /* ROLLBACK only, else 0 */
  int level;                /* of ns */
  rv_cfg_str ns, service, replica, key;
  bool old_present;
  rv_cfg_str old_value;
  bool new_present;
  rv_cfg_str new_value;
  rv_cfg_str author, reason;
} rv_cfg_change;

/* A stored key/value: a raw read, or an effective one (level says where from). */
typedef struct rv_cfg_kv {
  rv_cfg_str key;
  rv_cfg_str value;
  uint64_t create_revision;
  uint64_t mod_revision;
  int level;                /* where the value lives */
  rv_cfg_str ns;            /* the namespace it lives in */
} rv_cfg_kv;

enum rv_cfg_watch_mode {
  RV_CFG_WATCH_EFFECTIVE = 1, /* changes of the effective value of (service[, replica]) */
  RV_CFG_WATCH_RAW = 2,       /* every write to the listed namespaces */
};

typedef struct rv_cfg_watch_req {
  int mode;                 /* enum rv_cfg_watch_mode */
  rv_cfg_str service;       /* EFFECTIVE: required */
  rv_cfg_str replica;       /* EFFECTIVE: optional */
  const rv_cfg_str *ns;     /* RAW: 1..RV_CFG_WATCH_NS_MAX namespaces */
  size_t nns;
  rv_cfg_str key_prefix;    /* only keys starting with it; empty: all */
  uint64_t since_revision;  /* RV_CFG_SINCE_NOW, or replay revisions after it */
} rv_cfg_watch_req;

/*
 * One notification.  change is the write that caused it.  old_* and new_*
 * are what the watcher sees: for an effective watch the effective value
 * before and after (with the level it comes from, NONE when absent); for a
 * raw watch the written key's old and new value.
 */
typedef struct rv_cfg_event {
  uint64_t watch_id;
  int mode;                 /* of the watch */
  rv_cfg_change change;
  bool old_present;
  rv_cfg_str old_value;
  int old_level;
  bool new_present;
  rv_cfg_str new_value;
  int new_level;
  /* internal: references that keep the strings above alive */
  rv__cfg_rec *rec_ref__;
  rv__cfg_val *old_ref__;
  rv__cfg_val *new_ref__;
} rv_cfg_event;

/* A caller-owned, growable event list; reuse it across calls. */
typedef struct rv_cfg_events {
  rv_cfg_event *v;
  size_t len;
  size_t cap;
} rv_cfg_events;

void rv_cfg_events_init(rv_cfg_events *ev);
/* Drop all events (and their references); keeps the memory for reuse. */
void rv_cfg_events_clear(rv_cfg_events *ev);
void rv_cfg_events_free(rv_cfg_events *ev);

/* ---- lifecycle --------------------------------------------------------------- */

void rv_cfg_opts_default(rv_cfg_opts *o);
/* Create an empty store (opts NULL: defaults).  RV_CFG_OK, RV_CFG_EINVAL or RV_CFG_ENOMEM. */
int rv_cfg_create(rv_cfg **out, const rv_cfg_opts *opts);
void rv_cfg_destroy(rv_cfg *cfg);
/* The specific message of the last failed call on cfg. */
const char *rv_cfg_errmsg(const rv_cfg *cfg);
/* The options the store was created with (defaults filled in). */
const rv_cfg_opts *rv_cfg_get_opts(const rv_cfg *cfg);
/* The revision of the last write (0 before any). */
uint64_t rv_cfg_revision(const rv_cfg *cfg);
/*
 * The oldest revision still in the history (revision + 1 when it is
 * empty).  A watch may resume since any R >= oldest - 1; a rollback may go
 * back to any such R.
 */
uint64_t rv_cfg_oldest_retained(const rv_cfg *cfg);

/* ---- writes ------------------------------------------------------------------ */

/*
 * Check a write and resolve it (its revision, old value, and for a rollback
 * the value to restore) without changing anything.  RV_CFG_OK and *out
 * filled, or the error the write would get.
 */
int rv_cfg_prepare(rv_cfg *cfg, const rv_cfg_write *w, rv_cfg_change *out);
/*
 * Perform a write: events for every watch it concerns are appended to ev
 * (NULL is accepted only while no watch would be notified, else
 * RV_CFG_EINVAL).  *out (may be NULL) gets the audit record.  On any error
 * nothing has changed, ev included.
 */
int rv_cfg_apply(rv_cfg *cfg, const rv_cfg_write *w, rv_cfg_events *ev, rv_cfg_change *out);

/* Conveniences over rv_cfg_apply. */
int rv_cfg_set(rv_cfg *cfg, rv_cfg_str ns, rv_cfg_str key, rv_cfg_str value,
               uint64_t expect_revision, rv_cfg_str author, rv_cfg_str reason, int64_t wall_ns,
               rv_cfg_events *ev, uint64_t *revision);
int rv_cfg_delete(rv_cfg *cfg, rv_cfg_str ns, rv_cfg_str key, uint64_t expect_revision,
                  rv_cfg_str author, rv_cfg_str reason, int64_t wall_ns, rv_cfg_events *ev,
                  uint64_t *revision);
/* Restore key's value as of revision to_revision, as a new write (absent then: a delete). */
int rv_cfg_rollback(rv_cfg *cfg, rv_cfg_str ns, rv_cfg_str key, uint64_t to_revision,
                    rv_cfg_str author, rv_cfg_str reason, int64_t wall_ns, rv_cfg_events *ev,
                    uint64_t *revision);

/* ---- services ---------------------------------------------------------------- */
/*
 * A service exists while it is registered, has keys in its own or a
 * replica's namespace, or is watched; likewise a replica.  The coord server
 * registers what its sessions announce, so that a dry run names services
 * that only inherit.  replica may be empty.
 */
int rv_cfg_register(rv_cfg *cfg, rv_cfg_str service, rv_cfg_str replica);
/* Undo a registration; the service lives on if it still has keys or watches. */
int rv_cfg_unregister(rv_cfg *cfg, rv_cfg_str service, rv_cfg_str replica);

typedef struct rv_cfg_target_view {
  rv_cfg_str service;
  rv_cfg_str replica;   /* empty: the service itself */
  rv_cfg_str ns;
  bool registered;
  size_t keys;          /* in its own namespace */
  size_t watches;       /* effective watches on it */
} rv_cfg_target_view;
typedef bool (*rv_cfg_target_fn)(const rv_cfg_target_view *v, void *arg);
/*
 * Visit services sorted by name, each followed by its replicas sorted by
 * name; service non-empty: only that one.  *count (may be NULL) gets how
 * many were visited.  A visitor returns false to stop.
 */
int rv_cfg_list_targets(rv_cfg *cfg, rv_cfg_str service, rv_cfg_target_fn fn, void *arg,
                        size_t *count);

/* ---- reads ------------------------------------------------------------------- */

typedef bool (*rv_cfg_kv_fn)(const rv_cfg_kv *kv, void *arg);

/* The raw value of key in ns: RV_CFG_OK or RV_CFG_ENOKEY. */
int rv_cfg_get(rv_cfg *cfg, rv_cfg_str ns, rv_cfg_str key, rv_cfg_kv *out);
/* The effective value for (service[, replica]): RV_CFG_OK or RV_CFG_ENOKEY. */
int rv_cfg_get_effective(rv_cfg *cfg, rv_cfg_str service, rv_cfg_str replica, rv_cfg_str key,
                         rv_cfg_kv *out);
/* The keys of one namespace starting with prefix (may be empty), sorted by key. */
int rv_cfg_list(rv_cfg *cfg, rv_cfg_str ns, rv_cfg_str prefix, rv_cfg_kv_fn fn, void *arg,
                size_t *count);
/* The effective config of (service[, replica]), sorted by key. */
int rv_cfg_list_effective(rv_cfg *cfg, rv_cfg_str service, rv_cfg_str replica,
                          rv_cfg_str prefix, rv_cfg_kv_fn fn, void *arg, size_t *count);

/* ---- watches ----------------------------------------------------------------- */

/*
 * Open a watch.  With since_revision R, the events of revisions R+1..now
 * that concern it are appended to ev first (RV_CFG_ECOMPACTED if R is
 * older than the retained history, RV_CFG_EFUTURE if R is ahead of the
 * store).  *watch_id gets its id, *start_revision (may be NULL) the
 * revision it is current with: resume later since the revision of the last
 * event handled, or since start_revision if none came.  An effective watch
 * registers nothing but makes its service exist while it lives.
 */
int rv_cfg_watch(rv_cfg *cfg, const rv_cfg_watch_req *req, rv_cfg_events *ev,
                 uint64_t *watch_id, uint64_t *start_revision);
int rv_cfg_unwatch(rv_cfg *cfg, uint64_t watch_id);

/* ---- dry run ------------------------------------------------------------------- */

enum rv_cfg_effect {
  RV_CFG_IMPACT_CHANGES = 1,    /* the effective value would change */
  RV_CFG_IMPACT_OVERRIDDEN = 2, /* a more specific layer sets the key */
  RV_CFG_IMPACT_SAME = 3,       /* the effective value would stay the same */
};

/* What a proposed write does to one service or replica. */
typedef struct rv_cfg_impact {
  rv_cfg_str service;
  rv_cfg_str replica;       /* empty: the service-level config */
  int effect;               /* enum rv_cfg_effect */
  int override_level;       /* OVERRIDDEN: the level that hides the write */
  bool old_present;
  rv_cfg_str old_value;
  int old_level;
  bool new_present;
  rv_cfg_str new_value;
  int new_level;
} rv_cfg_impact;
typedef bool (*rv_cfg_impact_fn)(const rv_cfg_impact *imp, void *arg);

typedef struct rv_cfg_dry_run_res {
  rv_cfg_change change;     /* the write as rv_cfg_prepare resolves it */
  size_t changes;           /* services/replicas whose effective value would change */
  size_t unaffected;        /* in scope, but overridden or same value */
} rv_cfg_dry_run_res;

/*
 * Who a proposed write would reach, without making it: every existing
 * service (for a platform write), or the service and its replicas (a
 * service write), or the replica, in rv_cfg_list_targets order, including
 * targets that merely inherit.  The visitor sees the targets whose value
 * would change, and with include_unaffected also the others (why not).
 * Fails as the write would (validation, compare-and-set, limits).
 */
int rv_cfg_dry_run(rv_cfg *cfg, const rv_cfg_write *w, bool include_unaffected,
                   rv_cfg_impact_fn fn, void *arg, rv_cfg_dry_run_res *res);

/* ---- audit ------------------------------------------------------------------- */

typedef struct rv_cfg_audit_query {
  rv_cfg_str ns;            /* exact namespace; empty: any */
  rv_cfg_str key;           /* exact key; empty: any */
  uint64_t rev_min;         /* inclusive; 0: from the first */
  uint64_t rev_max;         /* inclusive; 0: to the last */
  int64_t wall_min_ns;      /* inclusive */
  int64_t wall_max_ns;      /* exclusive; 0: no upper bound */
  size_t limit;             /* 0: RV_CFG_AUDIT_LIMIT_DEFAULT; at most RV_CFG_AUDIT_LIMIT_MAX */
  bool newest_first;
} rv_cfg_audit_query;

typedef struct rv_cfg_audit_res {
  size_t count;             /* records visited */
  bool more;                /* the limit (or the visitor) stopped the scan early */
  /*
   * Records older than the retained history could match: the in-memory
   * answer is incomplete (configdb answers from the durable log instead).
   */
  bool incomplete;
} rv_cfg_audit_res;

typedef bool (*rv_cfg_change_fn)(const rv_cfg_change *c, void *arg);
/*
 * Retained audit records matching q, in revision order (or newest first).
 * Wall times are recorded as given and may go backwards, so a time range is
 * a filter over the revision range, not a seek.
 */
int rv_cfg_audit(rv_cfg *cfg, const rv_cfg_audit_query *q, rv_cfg_change_fn fn, void *arg,
                 rv_cfg_audit_res *res);
/* Validate a query (limit, ranges, names) the way rv_cfg_audit does. */
int rv_cfg_audit_check(rv_cfg *cfg, const rv_cfg_audit_query *q);

/* ---- loading (storage layers only) -------------------------------------------- */
/*
 * Rebuild a fresh store (no write yet) from durable state: every current
 * value, then the newest history records oldest first (contiguous
 * revisions), then the revision counter.  Loading checks names but not the
 * size limits, so a store whose limits were lowered still starts.
 */
int rv_cfg_load_value(rv_cfg *cfg, rv_cfg_str ns, rv_cfg_str key, rv_cfg_str value,
                      uint64_t create_revision, uint64_t mod_revision);
int rv_cfg_load_history(rv_cfg *cfg, const rv_cfg_change *c);
int rv_cfg_load_finish(rv_cfg *cfg, uint64_t revision);

/* ---- metrics ------------------------------------------------------------------- */

typedef struct rv_cfg_stats {
  /* gauges */
  uint64_t revision;
  size_t layers;            /* namespaces alive, platform included */
  size_t services;
  size_t keys;
  size_t data_bytes;
  size_t watches;
  size_t history_entries;
  size_t history_bytes;
  uint64_t oldest_retained;
  /* counters since creation */
  uint64_t writes;
  uint64_t conflicts;       /* compare-and-set failures */
  uint64_t notifications;   /* events from effective watches (live and replayed) */
  uint64_t raw_notifications;
  uint64_t suppressed;      /* effective watches a write reached without changing their value */
  uint64_t dry_runs;
} rv_cfg_stats;

void rv_cfg_get_stats(const rv_cfg *cfg, rv_cfg_stats *out);

/*
 * Walk every structure and check the invariants (counts, watch lists,
 * history contiguity, revisions).  NULL when all hold, else a description
 * of the first violation.  O(n): for tests and the simulator.
 */
const char *rv_cfg_check(const rv_cfg *cfg);

#ifdef __cplusplus
}
#endif
#endif
