/*
 * configdb: durable config in SQLite (see configdb.h for the model).
 *
 * Why the audit table is the source of truth and "current" only a cache:
 * every write is one audit row, and the audit log alone says what the
 * config is (the last row of each key).  The current table is updated in
 * the same transaction so that a start need not replay years of history,
 * and rv_cfgdb_verify recomputes it from the log to prove they agree.
 *
 * Why prepare, commit, apply (and not apply, then commit): the store emits
 * watch events when it applies a write, and events cannot be taken back.
 * So nothing reaches memory or a watcher before it is on disk.  The store's
 * rv_cfg_prepare resolves the write exactly (revision, old value, rollback
 * value) without changing anything; rv_cfg_apply then does precisely that,
 * and the only way it can fail after a successful commit is running out of
 * memory, which this module treats as "restart and reload".
 */
#include "storage/configdb.h"
#include "storage/sqlite_vfs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

/* The schema, created on first open.  Values are BLOBs (NULL: absent) so bytes round-trip. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta ("
    "  name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS audit ("
    "  revision INTEGER PRIMARY KEY,"
    "  wall_ns INTEGER NOT NULL,"
    "  op INTEGER NOT NULL,"
    "  rollback_to INTEGER NOT NULL,"
    "  ns TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  old_value BLOB,"
    "  new_value BLOB,"
    "  author TEXT NOT NULL,"
    "  reason TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS audit_by_key ON audit(key, ns, revision);"
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit(wall_ns);"
    "CREATE TABLE IF NOT EXISTS current ("
    "  ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
    "  create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,"
    "  PRIMARY KEY (ns, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS services ("
    "  service TEXT NOT NULL, replica TEXT NOT NULL,"
    "  PRIMARY KEY (service, replica)) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);";

enum stmt_id {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_INS_AUDIT,
  ST_UPSERT_CURRENT,
  ST_DEL_CURRENT,
  ST_SET_REVISION,
  ST_REGISTER,
  ST_UNREGISTER,
  ST_VALUE_AS_OF,
  ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INS_AUDIT] = "INSERT INTO audit (revision, wall_ns, op, rollback_to, ns, key, old_value,"
                     " new_value, author, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_UPSERT_CURRENT] = "INSERT INTO current (ns, key, value, create_revision, mod_revision)"
                          " VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (ns, key) DO UPDATE SET"
                          " value = excluded.value, mod_revision = excluded.mod_revision",
    [ST_DEL_CURRENT] = "DELETE FROM current WHERE ns = ?1 AND key = ?2",
    [ST_SET_REVISION] = "UPDATE meta SET value = ?1 WHERE name = 'revision'",
    [ST_REGISTER] = "INSERT OR IGNORE INTO services (service, replica) VALUES (?1, ?2)",
    [ST_UNREGISTER] = "DELETE FROM services WHERE service = ?1 AND replica = ?2",
    [ST_VALUE_AS_OF] = "SELECT new_value FROM audit WHERE key = ?2 AND ns = ?1 AND revision <= ?3"
                       " ORDER BY revision DESC LIMIT 1",
};

struct rv_cfgdb {
  sqlite3 *db;
  rv_cfg *cfg;
  sqlite3_stmt *st[ST_COUNT];
  bool diverged; /* a commit reached disk but not memory: refuse writes until restart */
  char *resolved; /* a rollback value read from disk; lives until the next write or dry run */
  char errmsg[RV_CFGDB_ERRMSG_MAX];
};

#define SP(s) (int)(s).len, (s).ptr
#define ULL(x) (unsigned long long)(x)

/* Accessors: the message of the last failure, and the store this database feeds. */
const char *rv_cfgdb_errmsg(const rv_cfgdb *d) { return d->errmsg; }
rv_cfg *rv_cfgdb_cfg(const rv_cfgdb *d) { return d->cfg; }

/* Record a specific message; return the code so failures read "return db_fail(...)". */
__attribute__((format(printf, 3, 4))) static int db_fail(rv_cfgdb *d, int err, const char *fmt,
                                                         ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->errmsg, sizeof d->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

/* A SQLite failure: say what we were doing and what SQLite said. */
static int sql_fail(rv_cfgdb *d, const char *what) {
  return db_fail(d, RV_CFG_ESTORAGE, "config database: %s failed: %s (sqlite error %d)", what,
                 sqlite3_errmsg(d->db), sqlite3_extended_errcode(d->db));
}

/* A failure of the in-memory store: keep its code and message. */
static int cfg_fail(rv_cfgdb *d, int rc) {
  return db_fail(d, rc, "%s", rv_cfg_errmsg(d->cfg));
}

/* ---- binding and reading -------------------------------------------------------- */

static int bind_text(sqlite3_stmt *st, int i, rv_cfg_str s) {
  return sqlite3_bind_text(st, i, s.len ? s.ptr : "", (int)s.len, SQLITE_STATIC);
}

/* A value: NULL when absent, a (possibly empty) BLOB when present. */
static int bind_value(sqlite3_stmt *st, int i, bool present, rv_cfg_str v) {
  if (!present)
    return sqlite3_bind_null(st, i);
  if (!v.len)
    return sqlite3_bind_zeroblob(st, i, 0);
  return sqlite3_bind_blob(st, i, v.ptr, (int)v.len, SQLITE_STATIC);
}

/* Column readers that never return NULL pointers: views always point somewhere. */
static rv_cfg_str col_text(sqlite3_stmt *st, int i) {
  const unsigned char *p = sqlite3_column_text(st, i);
  return p ? (rv_cfg_str){(const char *)p, (size_t)sqlite3_column_bytes(st, i)}
           : (rv_cfg_str){"", 0};
}

static bool col_present(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) != SQLITE_NULL;
}

static rv_cfg_str col_blob(sqlite3_stmt *st, int i) {
  const void *p = sqlite3_column_blob(st, i);
  size_t n = (size_t)sqlite3_column_bytes(st, i);
  return p && n ? (rv_cfg_str){p, n} : (rv_cfg_str){"", 0};
}

/* Run a prepared statement that returns no rows, then reset it for reuse. */
static int run(rv_cfgdb *d, enum stmt_id id, const char *what) {
  sqlite3_stmt *st = d->st[id];
  int rc = sqlite3_step(st);
  int out = rc == SQLITE_DONE ? RV_CFG_OK : sql_fail(d, what);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return out;
}

/* Run SQL text without results (pragmas, schema, load transactions). */
static int exec(rv_cfgdb *d, const char *sql, const char *what) {
  char *err = NULL;
  if (sqlite3_exec(d->db, sql, NULL, NULL, &err) == SQLITE_OK)
    return RV_CFG_OK;
  db_fail(d, RV_CFG_ESTORAGE, "config database: %s failed: %s", what,
          err ? err : sqlite3_errmsg(d->db));
  sqlite3_free(err);
  return RV_CFG_ESTORAGE;
}

/* One integer from a query, or def when it returns no row or NULL. */
static int query_int(rv_cfgdb *d, const char *sql, int64_t def, int64_t *out, const char *what) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
    return sql_fail(d, what);
  int rc = sqlite3_step(st);
  *out = def;
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    *out = sqlite3_column_int64(st, 0);
  int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? RV_CFG_OK : sql_fail(d, what);
  sqlite3_finalize(st);
  return ret;
}

/* ---- opening and loading ---------------------------------------------------------- */

/*
 * WAL mode lets readers (an operator's sqlite3 shell, a backup) run beside
 * the writer, and with synchronous=NORMAL a commit costs a write(2) but no
 * fsync: durable against a killed process, which is what the crash test
 * checks.  FULL adds the fsync for machines that lose power.
 */
static int configure(rv_cfgdb *d, const rv_cfgdb_opts *o) {
  sqlite3_extended_result_codes(d->db, 1);
  sqlite3_busy_timeout(d->db, o->busy_timeout_ms);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(d->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
    return sql_fail(d, "setting WAL mode");
  bool wal = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
             strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
  sqlite3_finalize(st);
  if (!wal)
    return db_fail(d, RV_CFG_ESTORAGE,
                   "config database: cannot switch to WAL mode (%s); is the file on a filesystem "
                   "without shared memory, or opened read-only?",
                   sqlite3_errmsg(d->db));
  int rc = exec(d,
                o->sync == RV_CFGDB_SYNC_FULL ? "PRAGMA synchronous=FULL"
                                              : "PRAGMA synchronous=NORMAL",
                "setting synchronous");
  if (rc)
    return rc;
  if ((rc = exec(d, "BEGIN IMMEDIATE", "creating the schema")) ||
      (rc = exec(d, schema_sql, "creating the schema")))
    return rc;
  int64_t version;
  if ((rc = query_int(d, "SELECT value FROM meta WHERE name = 'schema_version'", 0, &version,
                      "reading the schema version")))
    return rc;
  if (version == 0) {
    char sql[96];
    snprintf(sql, sizeof sql, "INSERT INTO meta (name, value) VALUES ('schema_version', %d)",
             RV_CFGDB_SCHEMA_VERSION);
    if ((rc = exec(d, sql, "recording the schema version")))
      return rc;
  } else if (version != RV_CFGDB_SCHEMA_VERSION) {
    return db_fail(d, RV_CFG_ESTORAGE,
                   "config database has schema version %lld; this ravel reads version %d",
                   (long long)version, RV_CFGDB_SCHEMA_VERSION);
  }
  if ((rc = exec(d, "COMMIT", "creating the schema")))
    return rc;
  for (int i = 0; i < ST_COUNT; i++)
    if (sqlite3_prepare_v3(d->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &d->st[i], NULL) !=
        SQLITE_OK)
      return sql_fail(d, "preparing statements");
  return RV_CFG_OK;
}

/* Fill a change view from an audit row (columns in ST_INS_AUDIT order). */
static int row_change(rv_cfgdb *d, sqlite3_stmt *st, rv_cfg_change *c) {
  memset(c, 0, sizeof *c);
  c->revision = (uint64_t)sqlite3_column_int64(st, 0);
  c->wall_ns = sqlite3_column_int64(st, 1);
  c->op = sqlite3_column_int(st, 2);
  c->rollback_to = (uint64_t)sqlite3_column_int64(st, 3);
  c->ns = col_text(st, 4);
  c->key = col_text(st, 5);
  c->old_present = col_present(st, 6);
  c->old_value = col_blob(st, 6);
  c->new_present = col_present(st, 7);
  c->new_value = col_blob(st, 7);
  c->author = col_text(st, 8);
  c->reason = col_text(st, 9);
  rv_cfg_ns p;
  char why[256];
  if (rv_cfg_ns_parse(c->ns, &p, why, sizeof why))
    return db_fail(d, RV_CFG_ESTORAGE, "config database: audit revision %llu has a bad namespace: %s",
                   ULL(c->revision), why);
  c->level = p.level;
  c->service = p.service;
  c->replica = p.replica;
  return RV_CFG_OK;
}

static const char audit_cols[] =
    "revision, wall_ns, op, rollback_to, ns, key, old_value, new_value, author, reason";

/*
 * Load current values, registrations, the newest history and the counter,
 * in one read transaction so they describe one moment.  Checks that the
 * audit revisions are 1..counter without gaps, so a damaged file fails
 * here rather than serving wrong config.
 */
static int load(rv_cfgdb *d) {
  rv_cfg *c = d->cfg;
  int rc = exec(d, "BEGIN", "starting the load");
  if (rc)
    return rc;
  int64_t rev, count, lo, hi;
  if ((rc = query_int(d, "SELECT value FROM meta WHERE name = 'revision'", 0, &rev,
                      "reading the revision")) ||
      (rc = query_int(d, "SELECT COUNT(*) FROM audit", 0, &count, "counting the audit log")) ||
      (rc = query_int(d, "SELECT MIN(revision) FROM audit", 0, &lo, "reading the audit log")) ||
      (rc = query_int(d, "SELECT MAX(revision) FROM audit", 0, &hi, "reading the audit log")))
    goto out;
  if (rev < 0 || count != rev || hi != rev || (rev && lo != 1)) {
    rc = db_fail(d, RV_CFG_ESTORAGE,
                 "config database is inconsistent: counter %lld, audit log has %lld rows "
                 "(revisions %lld..%lld); restore it from a backup",
                 (long long)rev, (long long)count, (long long)lo, (long long)hi);
    goto out;
  }

  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(d->db,
                         "SELECT ns, key, value, create_revision, mod_revision FROM current", -1,
                         &st, NULL) != SQLITE_OK) {
    rc = sql_fail(d, "reading current values");
    goto out;
  }
  int step = SQLITE_DONE;
  while (rc == RV_CFG_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
    rc = rv_cfg_load_value(c, col_text(st, 0), col_text(st, 1), col_blob(st, 2),
                           (uint64_t)sqlite3_column_int64(st, 3),
                           (uint64_t)sqlite3_column_int64(st, 4));
    if (rc)
      rc = db_fail(d, rc == RV_CFG_ENOMEM ? rc : RV_CFG_ESTORAGE,
                   "config database: loading current values: %s", rv_cfg_errmsg(c));
  }
  if (rc == RV_CFG_OK && step != SQLITE_DONE)
    rc = sql_fail(d, "reading current values");
  sqlite3_finalize(st);
  if (rc)
    goto out;

  /* The newest history the store keeps; older rows stay on disk. */
  size_t keep = rv_cfg_get_opts(c)->history_max_entries;
  int64_t from = rev > (int64_t)keep ? rev - (int64_t)keep : 0;
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT %s FROM audit WHERE revision > ?1 ORDER BY revision",
           audit_cols);
  if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = sql_fail(d, "reading the audit log");
    goto out;
  }
  sqlite3_bind_int64(st, 1, from);
  while (rc == RV_CFG_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
    rv_cfg_change ch;
    if ((rc = row_change(d, st, &ch)))
      break;
    if ((rc = rv_cfg_load_history(c, &ch)))
      rc = db_fail(d, rc == RV_CFG_ENOMEM ? rc : RV_CFG_ESTORAGE,
                   "config database: loading the audit log: %s", rv_cfg_errmsg(c));
  }
  if (rc == RV_CFG_OK && step != SQLITE_DONE)
    rc = sql_fail(d, "reading the audit log");
  sqlite3_finalize(st);
  if (rc)
    goto out;

  if ((rc = rv_cfg_load_finish(c, (uint64_t)rev))) {
    rc = db_fail(d, RV_CFG_ESTORAGE, "config database: %s", rv_cfg_errmsg(c));
    goto out;
  }

  /* Registrations are advisory: one the limits no longer allow is skipped, not fatal. */
  if (sqlite3_prepare_v2(d->db, "SELECT service, replica FROM services", -1, &st, NULL) !=
      SQLITE_OK) {
    rc = sql_fail(d, "reading registrations");
    goto out;
  }
  while (rc == RV_CFG_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
    int r = rv_cfg_register(c, col_text(st, 0), col_text(st, 1));
    if (r == RV_CFG_ENOMEM)
      rc = cfg_fail(d, r);
  }
  if (rc == RV_CFG_OK && step != SQLITE_DONE)
    rc = sql_fail(d, "reading registrations");
  sqlite3_finalize(st);

out:;
  int end = exec(d, rc == RV_CFG_OK ? "COMMIT" : "ROLLBACK", "ending the load");
  return rc ? rc : end;
}

/* Finalize statements before closing, or sqlite3_close_v2 keeps the file open. */
static void db_free(rv_cfgdb *d) {
  free(d->resolved);
  for (int i = 0; i < ST_COUNT; i++)
    sqlite3_finalize(d->st[i]);
  sqlite3_close_v2(d->db);
  free(d);
}

/* Open, configure, load: a store is served only once it matches the disk. */
int rv_cfgdb_open(rv_cfgdb **out, const char *path, const rv_cfgdb_opts *opts, rv_cfg *cfg,
                  char *why, size_t why_len) {
  *out = NULL;
  rv_cfgdb_opts o = {RV_CFGDB_SYNC_NORMAL, RV_CFGDB_BUSY_TIMEOUT_MS_DEFAULT};
  if (opts) {
    o = *opts;
    if (!o.sync)
      o.sync = RV_CFGDB_SYNC_NORMAL;
    if (!o.busy_timeout_ms)
      o.busy_timeout_ms = RV_CFGDB_BUSY_TIMEOUT_MS_DEFAULT;
  }
  if (!path || !cfg || (o.sync != RV_CFGDB_SYNC_NORMAL && o.sync != RV_CFGDB_SYNC_FULL) ||
      o.busy_timeout_ms < 0 || rv_cfg_revision(cfg) != 0) {
    if (why && why_len)
      snprintf(why, why_len, "config database: bad arguments (path, store, sync mode, or a "
                             "store that is not fresh)");
    return RV_CFG_EINVAL;
  }
  rv_cfgdb *d = calloc(1, sizeof *d);
  if (!d) {
    if (why && why_len)
      snprintf(why, why_len, "config database: out of memory");
    return RV_CFG_ENOMEM;
  }
  d->cfg = cfg;
  int rc;
  /* On the simulated disk while a simulated world runs (storage/sqlite_vfs.h). */
  if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      rv_sqlite_vfs_for_rt()) !=
      SQLITE_OK) {
    rc = db_fail(d, RV_CFG_ESTORAGE, "config database: cannot open %s: %s", path,
                 d->db ? sqlite3_errmsg(d->db) : "out of memory");
  } else if ((rc = configure(d, &o)) == RV_CFG_OK) {
    rc = load(d);
  }
  if (rc) {
    if (why && why_len)
      snprintf(why, why_len, "%s", d->errmsg);
    db_free(d);
    return rc;
  }
  *out = d;
  return RV_CFG_OK;
}

/* Nothing to flush: every acknowledged write was committed when it was acknowledged. */
void rv_cfgdb_close(rv_cfgdb *d) {
  if (d)
    db_free(d);
}

/* ---- writes ---------------------------------------------------------------------------- */

/*
 * Prepare w in the store; a rollback past the store's memory gets its
 * target value from the audit table (copied into d->resolved, which the
 * views the caller gets back point into) and is prepared again as a
 * resolved rollback in *rw.
 */
static int resolve(rv_cfgdb *d, const rv_cfg_write *w, rv_cfg_write *rw, rv_cfg_change *plan) {
  *rw = *w;
  free(d->resolved);
  d->resolved = NULL;
  int rc = rv_cfg_prepare(d->cfg, rw, plan);
  if (rc != RV_CFG_ECOMPACTED || w->op != RV_CFG_OP_ROLLBACK || w->rollback_resolved)
    return rc ? cfg_fail(d, rc) : RV_CFG_OK;
  sqlite3_stmt *st = d->st[ST_VALUE_AS_OF];
  bind_text(st, 1, w->ns);
  bind_text(st, 2, w->key);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)w->rollback_to);
  int step = sqlite3_step(st);
  rc = RV_CFG_OK;
  if (step == SQLITE_ROW && col_present(st, 0)) {
    rv_cfg_str v = col_blob(st, 0);
    if (!(d->resolved = malloc(v.len + 1)))
      rc = db_fail(d, RV_CFG_ENOMEM, "out of memory resolving a rollback");
    else {
      memcpy(d->resolved, v.ptr, v.len);
      d->resolved[v.len] = '\0';
      rw->rollback_present = true;
      rw->rollback_value = (rv_cfg_str){d->resolved, v.len};
    }
  } else if (step != SQLITE_ROW && step != SQLITE_DONE) {
    rc = sql_fail(d, "looking up a rollback target");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc)
    return rc;
  rw->rollback_resolved = true;
  rc = rv_cfg_prepare(d->cfg, rw, plan);
  return rc ? cfg_fail(d, rc) : RV_CFG_OK;
}

/* One transaction: the audit row, the current row, the counter.  All or nothing. */
static int persist(rv_cfgdb *d, const rv_cfg_change *p) {
  int rc = run(d, ST_BEGIN, "starting a write");
  if (rc)
    return rc;
  sqlite3_stmt *st = d->st[ST_INS_AUDIT];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)p->revision);
  sqlite3_bind_int64(st, 2, p->wall_ns);
  sqlite3_bind_int(st, 3, p->op);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)p->rollback_to);
  bind_text(st, 5, p->ns);
  bind_text(st, 6, p->key);
  bind_value(st, 7, p->old_present, p->old_value);
  bind_value(st, 8, p->new_present, p->new_value);
  bind_text(st, 9, p->author);
  bind_text(st, 10, p->reason);
  rc = run(d, ST_INS_AUDIT, "recording the change");
  if (rc == RV_CFG_OK && p->new_present) {
    st = d->st[ST_UPSERT_CURRENT];
    bind_text(st, 1, p->ns);
    bind_text(st, 2, p->key);
    bind_value(st, 3, true, p->new_value);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)p->revision);
    rc = run(d, ST_UPSERT_CURRENT, "storing the value");
  } else if (rc == RV_CFG_OK) {
    st = d->st[ST_DEL_CURRENT];
    bind_text(st, 1, p->ns);
    bind_text(st, 2, p->key);
    rc = run(d, ST_DEL_CURRENT, "deleting the value");
  }
  if (rc == RV_CFG_OK) {
    sqlite3_bind_int64(d->st[ST_SET_REVISION], 1, (sqlite3_int64)p->revision);
    rc = run(d, ST_SET_REVISION, "advancing the revision");
  }
  if (rc == RV_CFG_OK)
    rc = run(d, ST_COMMIT, "committing the write");
  if (rc && !sqlite3_get_autocommit(d->db)) {
    char keep[RV_CFGDB_ERRMSG_MAX];
    memcpy(keep, d->errmsg, sizeof keep);
    (void)run(d, ST_ROLLBACK, "rolling back");
    memcpy(d->errmsg, keep, sizeof keep);
  }
  return rc;
}

/* Prepare, commit, apply: see the top of this file for why in that order. */
int rv_cfgdb_apply(rv_cfgdb *d, const rv_cfg_write *w, rv_cfg_events *ev, rv_cfg_change *out) {
  if (!ev)
    return db_fail(d, RV_CFG_EINVAL, "rv_cfgdb_apply needs an event list");
  if (d->diverged)
    return db_fail(d, RV_CFG_ESTORAGE,
                   "an earlier write reached disk but not memory; restart to reload the config");
  rv_cfg_write rw;
  rv_cfg_change plan;
  int rc = resolve(d, w, &rw, &plan);
  if (rc == RV_CFG_OK)
    rc = persist(d, &plan);
  if (rc == RV_CFG_OK) {
    uint64_t durable = plan.revision;
    rc = rv_cfg_apply(d->cfg, &rw, ev, out);
    if (rc) {
      d->diverged = true;
      rc = db_fail(d, rc,
                   "revision %llu is on disk but not in memory (%s); restart to reload the config",
                   ULL(durable), rv_cfg_errmsg(d->cfg));
    }
  }
  return rc;
}

/* A dry run of a rollback must resolve its target the same way the write would. */
int rv_cfgdb_dry_run(rv_cfgdb *d, const rv_cfg_write *w, bool include_unaffected,
                     rv_cfg_impact_fn fn, void *arg, rv_cfg_dry_run_res *res) {
  rv_cfg_write rw;
  rv_cfg_change plan;
  int rc = resolve(d, w, &rw, &plan);
  if (rc == RV_CFG_OK && (rc = rv_cfg_dry_run(d->cfg, &rw, include_unaffected, fn, arg, res)))
    cfg_fail(d, rc);
  return rc;
}

/* ---- registrations ------------------------------------------------------------------------ */

/* Registrations are validated by the store's own rules before they reach disk. */
static int check_target(rv_cfgdb *d, rv_cfg_str service, rv_cfg_str replica) {
  char ns[RV_CFG_NS_MAX_BYTES + 16], why[256];
  int n = snprintf(ns, sizeof ns, "svc/%.*s%s%.*s", SP(service), replica.len ? "/" : "",
                   SP(replica));
  rv_cfg_ns p;
  if (n < 0 || (size_t)n >= sizeof ns || service.len > RV_CFG_NAME_MAX_BYTES ||
      replica.len > RV_CFG_NAME_MAX_BYTES)
    return db_fail(d, RV_CFG_EBADNAME, "service or replica name too long: at most %d bytes",
                   RV_CFG_NAME_MAX_BYTES);
  int rc = rv_cfg_ns_parse((rv_cfg_str){ns, (size_t)n}, &p, why, sizeof why);
  return rc ? db_fail(d, rc, "%s", why) : RV_CFG_OK;
}

/* Disk first, then memory; a registration the limits refuse is removed from disk again. */
int rv_cfgdb_register(rv_cfgdb *d, rv_cfg_str service, rv_cfg_str replica) {
  int rc = check_target(d, service, replica);
  if (rc)
    return rc;
  bind_text(d->st[ST_REGISTER], 1, service);
  bind_text(d->st[ST_REGISTER], 2, replica);
  if ((rc = run(d, ST_REGISTER, "recording a registration")))
    return rc;
  bool inserted = sqlite3_changes(d->db) > 0;
  if ((rc = rv_cfg_register(d->cfg, service, replica))) {
    cfg_fail(d, rc);
    if (inserted) { /* the limits refused it: do not keep it on disk either */
      char keep[RV_CFGDB_ERRMSG_MAX];
      memcpy(keep, d->errmsg, sizeof keep);
      bind_text(d->st[ST_UNREGISTER], 1, service);
      bind_text(d->st[ST_UNREGISTER], 2, replica);
      (void)run(d, ST_UNREGISTER, "undoing a registration");
      memcpy(d->errmsg, keep, sizeof keep);
    }
  }
  return rc;
}

/* Memory first (it knows whether the registration exists), then disk. */
int rv_cfgdb_unregister(rv_cfgdb *d, rv_cfg_str service, rv_cfg_str replica) {
  int rc = check_target(d, service, replica);
  if (rc)
    return rc;
  if ((rc = rv_cfg_unregister(d->cfg, service, replica)))
    return cfg_fail(d, rc);
  bind_text(d->st[ST_UNREGISTER], 1, service);
  bind_text(d->st[ST_UNREGISTER], 2, replica);
  if ((rc = run(d, ST_UNREGISTER, "removing a registration")))
    (void)rv_cfg_register(d->cfg, service, replica); /* keep memory like the disk */
  return rc;
}

/* ---- audit ------------------------------------------------------------------------------- */

int rv_cfgdb_audit(rv_cfgdb *d, const rv_cfg_audit_query *q, rv_cfg_change_fn fn, void *arg,
                   rv_cfg_audit_res *res) {
  memset(res, 0, sizeof *res);
  int rc = rv_cfg_audit_check(d->cfg, q);
  if (rc)
    return cfg_fail(d, rc);
  size_t limit = q->limit ? q->limit : RV_CFG_AUDIT_LIMIT_DEFAULT;
  /* Only the filters asked for appear in the SQL, so SQLite can pick the key or time index. */
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT %s FROM audit WHERE revision >= :lo AND revision <= :hi%s%s%s%s"
           " ORDER BY revision %s LIMIT :lim",
           audit_cols, q->ns.len ? " AND ns = :ns" : "", q->key.len ? " AND key = :key" : "",
           " AND wall_ns >= :wmin", q->wall_max_ns ? " AND wall_ns < :wmax" : "",
           q->newest_first ? "DESC" : "ASC");
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
    return sql_fail(d, "querying the audit log");
  sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":lo"), (sqlite3_int64)q->rev_min);
  sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":hi"),
                     q->rev_max ? (sqlite3_int64)q->rev_max : INT64_MAX);
  if (q->ns.len)
    bind_text(st, sqlite3_bind_parameter_index(st, ":ns"), q->ns);
  if (q->key.len)
    bind_text(st, sqlite3_bind_parameter_index(st, ":key"), q->key);
  sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":wmin"), q->wall_min_ns);
  if (q->wall_max_ns)
    sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":wmax"), q->wall_max_ns);
  /* One row beyond the limit tells whether there is more. */
  sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":lim"), (sqlite3_int64)limit + 1);
  int step = SQLITE_DONE;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (res->count == limit) {
      res->more = true;
      break;
    }
    rv_cfg_change ch;
    if ((rc = row_change(d, st, &ch)))
      break;
    res->count++;
    if (!fn(&ch, arg)) {
      res->more = true;
      break;
    }
  }
  if (rc == RV_CFG_OK && step != SQLITE_ROW && step != SQLITE_DONE)
    rc = sql_fail(d, "querying the audit log");
  sqlite3_finalize(st);
  return rc;
}

/* ---- verification ------------------------------------------------------------------------- */

/*
 * The current table as the audit log defines it: for each key its last
 * write if that write left a value, created by the last write that found
 * it absent.  EXCEPT both ways counts the rows that differ.
 */
static const char derive_sql[] =
    "WITH last AS (SELECT ns, key, MAX(revision) AS r FROM audit GROUP BY ns, key),"
    " born AS (SELECT ns, key, MAX(revision) AS c FROM audit"
    "          WHERE old_value IS NULL AND new_value IS NOT NULL GROUP BY ns, key),"
    " derived AS (SELECT a.ns, a.key, a.new_value AS value, b.c AS create_revision,"
    "                    a.revision AS mod_revision"
    "             FROM audit a JOIN last l ON a.ns = l.ns AND a.key = l.key AND a.revision = l.r"
    "             JOIN born b ON b.ns = a.ns AND b.key = a.key"
    "             WHERE a.new_value IS NOT NULL),"
    " cur AS (SELECT ns, key, value, create_revision, mod_revision FROM current)"
    " SELECT (SELECT COUNT(*) FROM (SELECT * FROM derived EXCEPT SELECT * FROM cur))"
    "      + (SELECT COUNT(*) FROM (SELECT * FROM cur EXCEPT SELECT * FROM derived))";

/* Three agreements: the log is gapless, the cache matches the log, memory matches the cache. */
int rv_cfgdb_verify(rv_cfgdb *d) {
  int64_t rev, count, lo, hi, diff;
  int rc;
  if ((rc = query_int(d, "SELECT value FROM meta WHERE name = 'revision'", 0, &rev,
                      "reading the revision")) ||
      (rc = query_int(d, "SELECT COUNT(*) FROM audit", 0, &count, "counting the audit log")) ||
      (rc = query_int(d, "SELECT MIN(revision) FROM audit", 0, &lo, "reading the audit log")) ||
      (rc = query_int(d, "SELECT MAX(revision) FROM audit", 0, &hi, "reading the audit log")) ||
      (rc = query_int(d, derive_sql, 0, &diff, "deriving current values")))
    return rc;
  if (count != rev || hi != rev || (rev && lo != 1))
    return db_fail(d, RV_CFG_ESTORAGE, "audit log has %lld rows (%lld..%lld) for counter %lld",
                   (long long)count, (long long)lo, (long long)hi, (long long)rev);
  if (diff)
    return db_fail(d, RV_CFG_ESTORAGE,
                   "%lld current rows differ from what the audit log adds up to", (long long)diff);
  if ((uint64_t)rev != rv_cfg_revision(d->cfg))
    return db_fail(d, RV_CFG_ESTORAGE, "disk is at revision %lld, memory at %llu", (long long)rev,
                   ULL(rv_cfg_revision(d->cfg)));
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(d->db,
                         "SELECT ns, key, value, create_revision, mod_revision FROM current", -1,
                         &st, NULL) != SQLITE_OK)
    return sql_fail(d, "reading current values");
  size_t rows = 0;
  int step = SQLITE_DONE;
  while (rc == RV_CFG_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
    rv_cfg_kv kv;
    rv_cfg_str ns = col_text(st, 0), key = col_text(st, 1), v = col_blob(st, 2);
    rows++;
    if (rv_cfg_get(d->cfg, ns, key, &kv) != RV_CFG_OK || kv.value.len != v.len ||
        (v.len && memcmp(kv.value.ptr, v.ptr, v.len) != 0) ||
        kv.create_revision != (uint64_t)sqlite3_column_int64(st, 3) ||
        kv.mod_revision != (uint64_t)sqlite3_column_int64(st, 4))
      rc = db_fail(d, RV_CFG_ESTORAGE, "%.*s in %.*s differs between disk and memory", SP(key),
                   SP(ns));
  }
  if (rc == RV_CFG_OK && step != SQLITE_DONE)
    rc = sql_fail(d, "reading current values");
  sqlite3_finalize(st);
  if (rc)
    return rc;
  rv_cfg_stats s;
  rv_cfg_get_stats(d->cfg, &s);
  if (s.keys != rows)
    return db_fail(d, RV_CFG_ESTORAGE, "disk holds %zu keys, memory %zu", rows, s.keys);
  return RV_CFG_OK;
}
