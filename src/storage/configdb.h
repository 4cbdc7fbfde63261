/*
 * configdb: the config store's durable half, in SQLite.
 *
 * The core (core/config.h) holds the config in memory and knows nothing of
 * disks; configdb makes every write durable before the core performs it,
 * and rebuilds the core from disk at start.  One SQLite database file in
 * WAL mode, four tables:
 *
 *     audit     every write ever made: revision (the primary key), wall
 *               time, op, namespace, key, old and new value (NULL: absent),
 *               author, reason, rollback target.  The source of truth.
 *     current   the current value of every key with its create and mod
 *               revisions: what the audit log adds up to, kept in the same
 *               transaction so a start loads it directly.
 *     services  registered services and replicas.
 *     meta      the revision counter and the schema version.
 *
 * A write goes: rv_cfg_prepare (check, resolve; nothing changes), one
 * SQLite transaction (audit row, current row, counter), COMMIT, and only
 * then rv_cfg_apply in memory; the caller acknowledges the write after
 * rv_cfgdb_apply returns.  So an acknowledged write is on disk, and a
 * write that failed on disk never reached memory or any watcher.
 *
 * At start, rv_cfgdb_open loads current values, registrations, the newest
 * history_max_entries audit rows (the core's history bound: older rows stay
 * on disk, where rv_cfgdb_audit and rollbacks still reach them) and the
 * counter, into a fresh rv_cfg.
 *
 * Durability.  RV_CFGDB_SYNC_NORMAL (the default) runs WAL mode with
 * synchronous=NORMAL: a commit is in the WAL file, in the OS's page cache,
 * when COMMIT returns, so it survives the process being killed (kill -9,
 * a crash) but not necessarily a power loss or kernel crash.
 * RV_CFGDB_SYNC_FULL (synchronous=FULL) also fsyncs the WAL at every
 * commit: durable across power loss, at the cost of one fsync per write.
 *
 * No clock is read here: wall times come in with each write.  Threading:
 * like the core, one thread at a time, on the same thread as the rv_cfg.
 */
#ifndef RAVEL_STORAGE_CONFIGDB_H
#define RAVEL_STORAGE_CONFIGDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How long a write waits for another connection's lock before failing. */
#define RV_CFGDB_BUSY_TIMEOUT_MS_DEFAULT 5000
/* The schema this code reads and writes. */
#define RV_CFGDB_SCHEMA_VERSION 1
/* Bytes of rv_cfgdb_errmsg's buffer. */
#define RV_CFGDB_ERRMSG_MAX 640

enum rv_cfgdb_sync {
  RV_CFGDB_SYNC_NORMAL = 1, /* durable across process crash (kill -9) */
  RV_CFGDB_SYNC_FULL = 2,   /* durable across power loss: fsync per commit */
};

typedef struct rv_cfgdb_opts {
  int sync;            /* enum rv_cfgdb_sync; 0: NORMAL */
  int busy_timeout_ms; /* 0: RV_CFGDB_BUSY_TIMEOUT_MS_DEFAULT */
} rv_cfgdb_opts;

typedef struct rv_cfgdb rv_cfgdb;

/*
 * Open (creating if needed) the database at path, whose directory must
 * exist, and load it into cfg, which must be fresh (created, never
 * written).  Returns an rv_cfg error code: RV_CFG_OK, RV_CFG_ESTORAGE (the
 * file cannot be opened, is not a config database, or is inconsistent),
 * RV_CFG_EINVAL or RV_CFG_ENOMEM; why (may be NULL) says what failed.  The
 * database does not own cfg; destroy cfg after closing the database.
 */
int rv_cfgdb_open(rv_cfgdb **out, const char *path, const rv_cfgdb_opts *opts, rv_cfg *cfg,
                  char *why, size_t why_len);
/* Close the database (every acknowledged write is already durable). */
void rv_cfgdb_close(rv_cfgdb *db);
/* The specific message of the last failed call. */
const char *rv_cfgdb_errmsg(const rv_cfgdb *db);
/* The store this database feeds. */
rv_cfg *rv_cfgdb_cfg(const rv_cfgdb *db);

/*
 * Make a write durable, then apply it to the store: rv_cfg_apply's contract
 * (events appended to ev, which must not be NULL; *out may be NULL), plus
 * RV_CFG_ESTORAGE when SQLite fails (nothing changed anywhere).  A
 * rollback to a revision older than the in-memory history is resolved from
 * the audit table.  If memory runs out after the commit, the store lags the
 * disk: the call fails and every later write fails with RV_CFG_ESTORAGE
 * until the process restarts and reloads.
 */
int rv_cfgdb_apply(rv_cfgdb *db, const rv_cfg_write *w, rv_cfg_events *ev, rv_cfg_change *out);

/*
 * A dry run with the same rollback resolution as rv_cfgdb_apply (the
 * store alone cannot see past its history).  See rv_cfg_dry_run; a value
 * read from disk that res->change points to lives until the next call on db.
 */
int rv_cfgdb_dry_run(rv_cfgdb *db, const rv_cfg_write *w, bool include_unaffected,
                     rv_cfg_impact_fn fn, void *arg, rv_cfg_dry_run_res *res);

/* Durable rv_cfg_register / rv_cfg_unregister. */
int rv_cfgdb_register(rv_cfgdb *db, rv_cfg_str service, rv_cfg_str replica);
int rv_cfgdb_unregister(rv_cfgdb *db, rv_cfg_str service, rv_cfg_str replica);

/*
 * The audit log from disk: all of it, not only what memory retains (so
 * res->incomplete is always false).  Same query and order as rv_cfg_audit;
 * views are valid during the visit only.
 */
int rv_cfgdb_audit(rv_cfgdb *db, const rv_cfg_audit_query *q, rv_cfg_change_fn fn, void *arg,
                   rv_cfg_audit_res *res);

/*
 * Check the database against itself and the store: the audit revisions are
 * 1..counter without gaps, the current table is exactly what the audit log
 * adds up to, and the store holds the same values and counter.  O(size):
 * for tests and operators.  RV_CFG_OK, or RV_CFG_ESTORAGE with the first
 * mismatch in rv_cfgdb_errmsg.
 */
int rv_cfgdb_verify(rv_cfgdb *db);

#ifdef __cplusplus
}
#endif
#endif
