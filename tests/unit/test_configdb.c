/*
 * Tests of the durable config store (src/storage/configdb.c): everything
 * written comes back after close and reopen; a child killed with SIGKILL
 * in the middle of writing loses nothing it acknowledged and the revision
 * counter continues; the audit log and rollbacks reach past the in-memory
 * history; a failed commit changes nothing; a damaged file is refused.
 *
 * The crash test never relies on timing: the child reports each
 * acknowledged revision over a pipe, and the parent kills it after reading
 * K of them, while it keeps writing.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cfg_test_util.h"
#include "core/config.h"
#include "rt/rt.h"
#include "storage/configdb.h"

/* Writes the crash child makes at most (it is killed long before). */
#define CRASH_WRITES_MAX 1000000

typedef struct fixture {
  char dir[64];
  char path[96];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/ravel-configdb-XXXXXX");
  if (!mkdtemp(f->dir))
    return -1;
  snprintf(f->path, sizeof f->path, "%s/config.db", f->dir);
  *state = f;
  return 0;
}

/* Remove the temp dir and whatever SQLite left in it (db, -wal, -shm). */
static int teardown(void **state) {
  fixture *f = *state;
  DIR *d = opendir(f->dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    char p[sizeof f->dir + sizeof e->d_name + 2];
    snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
    unlink(p);
  }
  if (d)
    closedir(d);
  rmdir(f->dir);
  free(f);
  return 0;
}

typedef struct store {
  rv_cfg *cfg;
  rv_cfgdb *db;
  rv_cfg_events ev;
} store;

static void open_store(store *s, const char *path, const rv_cfg_opts *co,
                       const rv_cfgdb_opts *dbo) {
  memset(s, 0, sizeof *s);
  assert_int_equal(rv_cfg_create(&s->cfg, co), RV_CFG_OK);
  char why[RV_CFGDB_ERRMSG_MAX];
  int rc = rv_cfgdb_open(&s->db, path, dbo, s->cfg, why, sizeof why);
  if (rc)
    fail_msg("open %s: %s", path, why);
  rv_cfg_events_init(&s->ev);
}

static void close_store(store *s) {
  const char *why = rv_cfg_check(s->cfg);
  if (why)
    fail_msg("invariant: %s", why);
  rv_cfgdb_close(s->db);
  rv_cfg_destroy(s->cfg);
  rv_cfg_events_free(&s->ev);
}

static rv_cfg_write wr(int op, const char *ns, const char *key, const char *val, int64_t t) {
  return (rv_cfg_write){.op = op, .ns = S(ns), .key = S(key), .value = S(val),
                        .expect_revision = ANY, .author = S("erin"), .reason = S("db test"),
                        .wall_ns = t};
}

static uint64_t dset(store *s, const char *ns, const char *key, const char *val, int64_t t) {
  rv_cfg_write w = wr(RV_CFG_OP_SET, ns, key, val, t);
  rv_cfg_change ch;
  int rc = rv_cfgdb_apply(s->db, &w, &s->ev, &ch);
  if (rc)
    fail_msg("set %s %s: %s", ns, key, rv_cfgdb_errmsg(s->db));
  return ch.revision;
}


/* ---- snapshots for comparing two stores ------------------------------------------------ */

#define SNAP_MAX 256

typedef struct snap {
  size_t n;
  char row[SNAP_MAX][160];
} snap;

static bool snap_kv(const rv_cfg_kv *kv, void *arg) {
  snap *s = arg;
  assert_true(s->n < SNAP_MAX);
  snprintf(s->row[s->n++], sizeof s->row[0], "%.*s %.*s=%.*s c%llu m%llu", (int)kv->ns.len,
           kv->ns.ptr, (int)kv->key.len, kv->key.ptr, (int)kv->value.len, kv->value.ptr,
           (unsigned long long)kv->create_revision, (unsigned long long)kv->mod_revision);
  return true;
}

static bool snap_target(const rv_cfg_target_view *v, void *arg) {
  snap *s = arg;
  assert_true(s->n < SNAP_MAX);
  snprintf(s->row[s->n++], sizeof s->row[0], "target %.*s reg=%d", (int)v->ns.len, v->ns.ptr,
           v->registered);
  return true;
}

static bool snap_change(const rv_cfg_change *c, void *arg) {
  snap *s = arg;
  assert_true(s->n < SNAP_MAX);
  snprintf(s->row[s->n++], sizeof s->row[0], "r%llu t%lld %s %.*s %.*s %d:%.*s -> %d:%.*s %.*s %.*s to%llu",
           (unsigned long long)c->revision, (long long)c->wall_ns, rv_cfg_op_name(c->op),
           (int)c->ns.len, c->ns.ptr, (int)c->key.len, c->key.ptr, c->old_present,
           (int)c->old_value.len, c->old_value.ptr, c->new_present, (int)c->new_value.len,
           c->new_value.ptr, (int)c->author.len, c->author.ptr, (int)c->reason.len, c->reason.ptr,
           (unsigned long long)c->rollback_to);
  return true;
}

static void snap_events(snap *s, const rv_cfg_events *ev) {
  for (size_t i = 0; i < ev->len; i++) {
    const rv_cfg_event *e = &ev->v[i];
    assert_true(s->n < SNAP_MAX);
    snprintf(s->row[s->n++], sizeof s->row[0], "r%llu %.*s %d:%.*s@%d -> %d:%.*s@%d",
             (unsigned long long)e->change.revision, (int)e->change.key.len, e->change.key.ptr,
             e->old_present, (int)e->old_value.len, e->old_value.ptr, e->old_level,
             e->new_present, (int)e->new_value.len, e->new_value.ptr, e->new_level);
  }
}

/* Everything observable about a store: targets, every namespace, effective views, history. */
static void snapshot(store *s, snap *out) {
  memset(out, 0, sizeof *out);
  assert_int_equal(rv_cfg_list_targets(s->cfg, S(""), snap_target, out, NULL), RV_CFG_OK);
  const char *nss[] = {"platform", "svc/api", "svc/api/1", "svc/web", "svc/worker/1"};
  for (size_t i = 0; i < sizeof nss / sizeof nss[0]; i++)
    assert_int_equal(rv_cfg_list(s->cfg, S(nss[i]), S(""), snap_kv, out, NULL), RV_CFG_OK);
  assert_int_equal(rv_cfg_list_effective(s->cfg, S("api"), S("1"), S(""), snap_kv, out, NULL),
                   RV_CFG_OK);
  rv_cfg_audit_query q = {.limit = RV_CFG_AUDIT_LIMIT_MAX};
  rv_cfg_audit_res res;
  assert_int_equal(rv_cfg_audit(s->cfg, &q, snap_change, out, &res), RV_CFG_OK);
  snprintf(out->row[out->n++], sizeof out->row[0], "revision %llu",
           (unsigned long long)rv_cfg_revision(s->cfg));
}

static void assert_same_snap(const snap *a, const snap *b) {
  for (size_t i = 0; i < a->n && i < b->n; i++)
    if (strcmp(a->row[i], b->row[i]) != 0)
      fail_msg("row %zu: \"%s\" vs \"%s\"", i, a->row[i], b->row[i]);
  assert_int_equal(a->n, b->n);
}

/* ---- write, close, reopen ------------------------------------------------------------------ */

static void test_roundtrip(void **state) {
  fixture *f = *state;
  store s;
  open_store(&s, f->path, NULL, NULL);
  int64_t t = T0_NS;
  dset(&s, "platform", "timeout_ms", "30000", t++);
  dset(&s, "platform", "tp/url", "https://v1", t++);
  dset(&s, "svc/api", "timeout_ms", "10000", t++);
  dset(&s, "svc/api/1", "json", "{\"a\": \"b\\n\",\n \"c\": [1]}", t++);
  dset(&s, "svc/api/1", "empty", "", t++);
  dset(&s, "svc/web", "gone", "soon", t++);
  dset(&s, "platform", "tp/url", "https://v2", t++);
  rv_cfg_write w = wr(RV_CFG_OP_DELETE, "svc/web", "gone", "", t++);
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, NULL), RV_CFG_OK);
  w = wr(RV_CFG_OP_ROLLBACK, "platform", "tp/url", "", t++);
  w.rollback_to = 2;
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, NULL), RV_CFG_OK);
  assert_int_equal(rv_cfgdb_register(s.db, S("web"), S("")), RV_CFG_OK);
  assert_int_equal(rv_cfgdb_register(s.db, S("worker"), S("1")), RV_CFG_OK);
  assert_int_equal(rv_cfgdb_register(s.db, S("worker"), S("1")), RV_CFG_OK); /* idempotent */
  assert_int_equal(rv_cfgdb_register(s.db, S("bad name"), S("")), RV_CFG_EBADNAME);
  /* A failed write leaves nothing on disk. */
  w = wr(RV_CFG_OP_SET, "svc/api", "timeout_ms", "1", t);
  w.expect_revision = 1;
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, NULL), RV_CFG_ECONFLICT);
  assert_non_null(strstr(rv_cfgdb_errmsg(s.db), "mod_revision"));
  assert_int_equal(rv_cfgdb_verify(s.db), RV_CFG_OK);

  /* What a watcher resuming since revision 3 would get, before the restart. */
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"), .replica = S("1"),
                          .since_revision = 3};
  uint64_t id;
  rv_cfg_events_clear(&s.ev);
  assert_int_equal(rv_cfg_watch(s.cfg, &req, &s.ev, &id, NULL), RV_CFG_OK);
  static snap before, after, ev_before, ev_after;
  memset(&ev_before, 0, sizeof ev_before);
  snap_events(&ev_before, &s.ev);
  assert_true(ev_before.n >= 3);
  rv_cfg_events_clear(&s.ev);
  assert_int_equal(rv_cfg_unwatch(s.cfg, id), RV_CFG_OK);
  snapshot(&s, &before);
  uint64_t rev = rv_cfg_revision(s.cfg);
  close_store(&s);

  open_store(&s, f->path, NULL, NULL);
  assert_int_equal(rv_cfg_revision(s.cfg), rev);
  snapshot(&s, &after);
  assert_same_snap(&before, &after);
  assert_int_equal(rv_cfg_watch(s.cfg, &req, &s.ev, &id, NULL), RV_CFG_OK);
  memset(&ev_after, 0, sizeof ev_after);
  snap_events(&ev_after, &s.ev);
  assert_same_snap(&ev_before, &ev_after);
  rv_cfg_events_clear(&s.ev);
  assert_int_equal(rv_cfgdb_verify(s.db), RV_CFG_OK);
  /* The counter continues. */
  assert_int_equal(dset(&s, "platform", "after", "restart", t), rev + 1);
  assert_int_equal(rv_cfgdb_unregister(s.db, S("web"), S("")), RV_CFG_OK);
  close_store(&s);

  open_store(&s, f->path, NULL, NULL);
  memset(&after, 0, sizeof after);
  assert_int_equal(rv_cfg_list_targets(s.cfg, S(""), snap_target, &after, NULL), RV_CFG_OK);
  for (size_t i = 0; i < after.n; i++)
    assert_null(strstr(after.row[i], "svc/web "));
  assert_int_equal(rv_cfg_revision(s.cfg), rev + 1);
  close_store(&s);

  /* The file is in WAL mode for any connection. */
  sqlite3 *raw;
  assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  sqlite3_close(raw);
}

/* ---- crash ----------------------------------------------------------------------------------- */

/* Write i of the crash child: sets over three layers, every 5th a delete of write i-1's key. */
static void crash_write(uint64_t i, char *ns, char *key, char *val, bool *is_delete) {
  static const char *nss[] = {"platform", "svc/a", "svc/a/1"};
  uint64_t src = i % 5 == 0 ? i - 1 : i;
  snprintf(ns, 16, "%s", nss[src % 3]);
  snprintf(key, 16, "k%llu", (unsigned long long)(src % 13));
  snprintf(val, 24, "v%llu", (unsigned long long)i);
  *is_delete = i % 5 == 0;
}

/*
 * The child: open the database, write until killed, and report each
 * revision on the pipe only after rv_cfgdb_apply returned (acknowledged).
 * It never returns into cmocka.
 */
static void crash_child(const char *path, int fd, int sync) {
  rv_cfg *cfg;
  rv_cfgdb *db;
  char why[RV_CFGDB_ERRMSG_MAX];
  rv_cfgdb_opts o = {.sync = sync};
  if (rv_cfg_create(&cfg, NULL) || rv_cfgdb_open(&db, path, &o, cfg, why, sizeof why))
    _exit(2);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  for (uint64_t i = rv_cfg_revision(cfg) + 1; i < CRASH_WRITES_MAX; i++) {
    char ns[16], key[16], val[24];
    bool is_delete;
    crash_write(i, ns, key, val, &is_delete);
    rv_cfg_write w = wr(is_delete ? RV_CFG_OP_DELETE : RV_CFG_OP_SET, ns, key, val,
                        T0_NS + (int64_t)i);
    rv_cfg_change ch;
    if (rv_cfgdb_apply(db, &w, &ev, &ch) != RV_CFG_OK || ch.revision != i)
      _exit(3);
    rv_cfg_events_clear(&ev);
    if (write(fd, &ch.revision, sizeof ch.revision) != (ssize_t)sizeof ch.revision)
      _exit(4);
  }
  _exit(5);
}

typedef struct check_rows {
  uint64_t next;
  bool ok;
  char why[160];
} check_rows;

/* Each audit row must be exactly write `revision` of the child. */
static bool check_crash_row(const rv_cfg_change *c, void *arg) {
  check_rows *cr = arg;
  char ns[16], key[16], val[24];
  bool is_delete;
  crash_write(c->revision, ns, key, val, &is_delete);
  bool ok = c->revision == cr->next && streq(c->ns, ns) && streq(c->key, key) &&
            c->wall_ns == T0_NS + (int64_t)c->revision &&
            (is_delete ? (c->op == RV_CFG_OP_DELETE && !c->new_present)
                       : (c->op == RV_CFG_OP_SET && c->new_present && streq(c->new_value, val)));
  if (!ok) {
    snprintf(cr->why, sizeof cr->why, "audit row %llu (expected %llu) is not the child's write",
             (unsigned long long)c->revision, (unsigned long long)cr->next);
    cr->ok = false;
    return false;
  }
  cr->next++;
  return true;
}

/* Fork a writer, kill -9 it after `acks` acknowledgements, reopen and check. */
static void crash_round(const char *path, uint64_t acks, int sync) {
  uint64_t start;
  {
    store s;
    open_store(&s, path, NULL, NULL);
    start = rv_cfg_revision(s.cfg);
    close_store(&s);
  }
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    crash_child(path, fds[1], sync);
  }
  close(fds[1]);
  uint64_t last = start;
  for (uint64_t k = 0; k < acks; k++) {
    uint64_t rev;
    ssize_t n;
    do
      n = read(fds[0], &rev, sizeof rev);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof rev) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      fail_msg("child stopped after %llu acks", (unsigned long long)k);
    }
    assert_int_equal(rev, last + 1); /* acks arrive in revision order */
    last = rev;
  }
  assert_int_equal(kill(pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  close(fds[0]);

  store s;
  open_store(&s, path, NULL, NULL);
  uint64_t rev = rv_cfg_revision(s.cfg);
  assert_true(rev >= last); /* every acknowledged write survived */
  check_rows cr = {.next = 1, .ok = true};
  for (uint64_t lo = 1; lo <= rev && cr.ok; lo += RV_CFG_AUDIT_LIMIT_MAX) {
    rv_cfg_audit_query q = {.rev_min = lo, .limit = RV_CFG_AUDIT_LIMIT_MAX};
    rv_cfg_audit_res res;
    assert_int_equal(rv_cfgdb_audit(s.db, &q, check_crash_row, &cr, &res), RV_CFG_OK);
  }
  if (!cr.ok)
    fail_msg("%s", cr.why);
  assert_int_equal(cr.next, rev + 1); /* 1..rev, no gaps */
  if (rv_cfgdb_verify(s.db) != RV_CFG_OK)
    fail_msg("verify: %s", rv_cfgdb_errmsg(s.db));
  /* The last acknowledged value is what the store serves. */
  char ns[16], key[16], val[24];
  bool is_delete;
  crash_write(rev, ns, key, val, &is_delete);
  rv_cfg_kv kv;
  int rc = rv_cfg_get(s.cfg, S(ns), S(key), &kv);
  if (is_delete)
    assert_int_equal(rc, RV_CFG_ENOKEY);
  else
    assert_true(rc == RV_CFG_OK && streq(kv.value, val) && kv.mod_revision == rev);
  close_store(&s);
}

static void test_crash_kill9(void **state) {
  fixture *f = *state;
  crash_round(f->path, 1, RV_CFGDB_SYNC_NORMAL);
  crash_round(f->path, 300, RV_CFGDB_SYNC_NORMAL); /* recovers a recovered file */
  crash_round(f->path, 40, RV_CFGDB_SYNC_FULL);
  /* And the counter continues from the last durable revision. */
  store s;
  open_store(&s, f->path, NULL, NULL);
  uint64_t rev = rv_cfg_revision(s.cfg);
  assert_int_equal(dset(&s, "platform", "after", "crash", T0_NS), rev + 1);
  close_store(&s);
}

/* ---- history beyond memory ------------------------------------------------------------------ */

typedef struct revs {
  size_t n;
  uint64_t rev[64];
} revs;

static bool collect_rev(const rv_cfg_change *c, void *arg) {
  revs *r = arg;
  r->rev[r->n++] = c->revision;
  return r->n < 64;
}

static void test_history_beyond_memory(void **state) {
  fixture *f = *state;
  rv_cfg_opts co;
  rv_cfg_opts_default(&co);
  co.history_max_entries = 4;
  store s;
  open_store(&s, f->path, &co, NULL);
  for (int i = 1; i <= 20; i++) {
    char v[8];
    snprintf(v, sizeof v, "%d", i);
    dset(&s, i % 2 ? "platform" : "svc/api", i % 4 < 2 ? "a" : "b", v, T0_NS + i);
  }
  rv_cfg_audit_query q = {.key = S("a")};
  rv_cfg_audit_res res;
  revs r = {0};
  assert_int_equal(rv_cfg_audit(s.cfg, &q, collect_rev, &r, &res), RV_CFG_OK);
  assert_true(res.incomplete); /* memory holds 17..20 */
  assert_int_equal(r.n, 2);
  memset(&r, 0, sizeof r);
  assert_int_equal(rv_cfgdb_audit(s.db, &q, collect_rev, &r, &res), RV_CFG_OK);
  assert_false(res.incomplete);
  assert_int_equal(r.n, 10); /* i % 4 in {0, 1}: 1,4,5,8,9,... */
  assert_int_equal(r.rev[0], 1);
  assert_int_equal(r.rev[1], 4);

  memset(&r, 0, sizeof r);
  q = (rv_cfg_audit_query){.ns = S("svc/api"), .wall_min_ns = T0_NS + 3, .wall_max_ns = T0_NS + 9,
                           .newest_first = true};
  assert_int_equal(rv_cfgdb_audit(s.db, &q, collect_rev, &r, &res), RV_CFG_OK);
  assert_int_equal(r.n, 3); /* 8, 6, 4 */
  assert_int_equal(r.rev[0], 8);
  assert_int_equal(r.rev[2], 4);
  memset(&r, 0, sizeof r);
  q = (rv_cfg_audit_query){.limit = 5};
  assert_int_equal(rv_cfgdb_audit(s.db, &q, collect_rev, &r, &res), RV_CFG_OK);
  assert_int_equal(r.n, 5);
  assert_true(res.more);
  q.limit = RV_CFG_AUDIT_LIMIT_MAX + 1;
  assert_int_equal(rv_cfgdb_audit(s.db, &q, collect_rev, &r, &res), RV_CFG_EQUERY);

  /* Rolling back past memory: the value at revision 2 ("2" for svc/api b) comes from disk. */
  rv_cfg_write w = wr(RV_CFG_OP_ROLLBACK, "svc/api", "b", "", T0_NS + 100);
  w.rollback_to = 2;
  assert_int_equal(rv_cfg_prepare(s.cfg, &w, &(rv_cfg_change){0}), RV_CFG_ECOMPACTED);
  rv_cfg_change ch;
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, &ch), RV_CFG_OK);
  assert_str(ch.new_value, "2");
  assert_int_equal(ch.rollback_to, 2);
  /* Rolling back to before the key existed deletes it. */
  w.rollback_to = 1;
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, &ch), RV_CFG_OK);
  assert_false(ch.new_present);
  assert_int_equal(rv_cfgdb_verify(s.db), RV_CFG_OK);
  uint64_t rev = rv_cfg_revision(s.cfg);
  close_store(&s);

  /* A restart loads only the newest history into memory. */
  open_store(&s, f->path, &co, NULL);
  assert_int_equal(rv_cfg_revision(s.cfg), rev);
  assert_int_equal(rv_cfg_oldest_retained(s.cfg), rev - 3);
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"),
                          .since_revision = rev - 6};
  uint64_t id;
  assert_int_equal(rv_cfg_watch(s.cfg, &req, &s.ev, &id, NULL), RV_CFG_ECOMPACTED);
  req.since_revision = rev - 4;
  assert_int_equal(rv_cfg_watch(s.cfg, &req, &s.ev, &id, NULL), RV_CFG_OK);
  close_store(&s);
}

static bool count_impact(const rv_cfg_impact *imp, void *arg) {
  (*(size_t *)arg)++;
  return true;
}

static void test_dry_run_through_db(void **state) {
  fixture *f = *state;
  rv_cfg_opts co;
  rv_cfg_opts_default(&co);
  co.history_max_entries = 2;
  store s;
  open_store(&s, f->path, &co, NULL);
  assert_int_equal(rv_cfgdb_register(s.db, S("web"), S("")), RV_CFG_OK);
  dset(&s, "platform", "k", "old", T0_NS);
  for (int i = 0; i < 5; i++)
    dset(&s, "platform", "k", "new", T0_NS);
  rv_cfg_write w = wr(RV_CFG_OP_ROLLBACK, "platform", "k", "", T0_NS);
  w.rollback_to = 1;
  size_t n = 0;
  rv_cfg_dry_run_res res;
  assert_int_equal(rv_cfgdb_dry_run(s.db, &w, false, count_impact, &n, &res), RV_CFG_OK);
  assert_int_equal(n, 1);
  assert_str(res.change.new_value, "old");
  assert_int_equal(rv_cfg_revision(s.cfg), 6);
  close_store(&s);
}

/* ---- failures ----------------------------------------------------------------------------------- */

/* A commit that fails (another connection holds the write lock) changes nothing anywhere. */
static void test_storage_failure_changes_nothing(void **state) {
  fixture *f = *state;
  store s;
  rv_cfgdb_opts dbo = {.busy_timeout_ms = 20};
  open_store(&s, f->path, NULL, &dbo);
  dset(&s, "platform", "k", "1", T0_NS);
  uint64_t id;
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"),
                          .since_revision = RV_CFG_SINCE_NOW};
  assert_int_equal(rv_cfg_watch(s.cfg, &req, &s.ev, &id, NULL), RV_CFG_OK);

  sqlite3 *other;
  assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  rv_cfg_write w = wr(RV_CFG_OP_SET, "platform", "k", "2", T0_NS);
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, NULL), RV_CFG_ESTORAGE);
  assert_non_null(strstr(rv_cfgdb_errmsg(s.db), "locked"));
  assert_int_equal(s.ev.len, 0);
  assert_int_equal(rv_cfg_revision(s.cfg), 1);
  rv_cfg_kv kv;
  assert_int_equal(rv_cfg_get(s.cfg, S("platform"), S("k"), &kv), RV_CFG_OK);
  assert_str(kv.value, "1");
  assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);

  /* With the lock gone the same write goes through, as revision 2. */
  rv_cfg_change ch;
  assert_int_equal(rv_cfgdb_apply(s.db, &w, &s.ev, &ch), RV_CFG_OK);
  assert_int_equal(ch.revision, 2);
  assert_int_equal(s.ev.len, 1);
  assert_int_equal(rv_cfgdb_apply(s.db, &w, NULL, NULL), RV_CFG_EINVAL);
  assert_int_equal(rv_cfgdb_verify(s.db), RV_CFG_OK);
  close_store(&s);

  /* Damage: a missing audit row makes the file refuse to load. */
  assert_int_equal(sqlite3_exec(other, "DELETE FROM audit WHERE revision = 1", NULL, NULL, NULL),
                   SQLITE_OK);
  rv_cfg *cfg;
  rv_cfgdb *db;
  char why[RV_CFGDB_ERRMSG_MAX];
  assert_int_equal(rv_cfg_create(&cfg, NULL), RV_CFG_OK);
  assert_int_equal(rv_cfgdb_open(&db, f->path, NULL, cfg, why, sizeof why), RV_CFG_ESTORAGE);
  assert_non_null(strstr(why, "inconsistent"));
  rv_cfg_destroy(cfg);

  /* A schema from the future is refused. */
  assert_int_equal(
      sqlite3_exec(other, "UPDATE meta SET value = 99 WHERE name = 'schema_version'", NULL, NULL,
                   NULL),
      SQLITE_OK);
  assert_int_equal(rv_cfg_create(&cfg, NULL), RV_CFG_OK);
  assert_int_equal(rv_cfgdb_open(&db, f->path, NULL, cfg, why, sizeof why), RV_CFG_ESTORAGE);
  assert_non_null(strstr(why, "schema version 99"));
  rv_cfg_destroy(cfg);
  sqlite3_close(other);

  /* Not a database at all; and a directory that does not exist. */
  char junk[128];
  snprintf(junk, sizeof junk, "%s/junk.db", f->dir);
  FILE *fp = fopen(junk, "w");
  assert_non_null(fp);
  fputs("this is not a sqlite database, just some text that is long enough to matter\n", fp);
  fclose(fp);
  assert_int_equal(rv_cfg_create(&cfg, NULL), RV_CFG_OK);
  assert_int_equal(rv_cfgdb_open(&db, junk, NULL, cfg, why, sizeof why), RV_CFG_ESTORAGE);
  assert_int_equal(rv_cfgdb_open(&db, "/nonexistent-dir/x/config.db", NULL, cfg, why, sizeof why),
                   RV_CFG_ESTORAGE);
  assert_non_null(strstr(why, "cannot open"));
  rv_cfg_destroy(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
      cmocka_unit_test_setup_teardown(test_history_beyond_memory, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dry_run_through_db, setup, teardown),
      cmocka_unit_test_setup_teardown(test_storage_failure_changes_nothing, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
