/*
 * rt/fs.h on both backends, and the simulated disk's durability model
 * (src/rt/fs_sim.c, docs/sim.md "The simulated disk"): a crash keeps what
 * was synced, loses or tears what was not (as the faults and the seed say),
 * and loses directory operations that were never synced.  Then the queue's
 * log (storage/qlog.h) over the simulated disk: it recovers exactly the
 * synced records, survives torn tails, and does so the same way for a seed;
 * injected sync failures and a full disk; SQLite through the VFS over
 * rt/fs.h (storage/sqlite_vfs.h) across a crash.
 *
 * As in test_sim.c, simulated threads never call cmocka's asserts (they
 * longjmp): they record with CHECK and the test asserts after the run.
 */
#define _GNU_SOURCE
#include "sim_support.h"

#include "rt/fs.h"
#include "rt/sim.h"
#include "storage/fsutil.h"
#include "storage/qlog.h"
#include "storage/sqlite_vfs.h"

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Run fn(arg) as the first thread of a process named proc, to the end. */
static void run_in(rv_sim_world *w, const char *proc, void (*fn)(void *), void *arg) {
  rv_sim_proc *p = rv_sim_proc_new(w, proc);
  assert_non_null(p);
  assert_int_equal(rv_sim_spawn(p, "main", "test", fn, arg), RV_OK);
  int rc = rv_sim_run(w, 3600 * RV_NS_PER_S);
  if (failure[0])
    fail_msg("%s", failure);
  assert_int_equal(rc, RV_OK);
}

/* Write a whole small file (created or truncated) and optionally sync it. */
static int put(const char *path, const char *text, bool sync) {
  rv_file *f;
  int rc = rv_file_open(&f, path, RV_FS_WRITE | RV_FS_CREATE | RV_FS_TRUNC);
  if (rc != RV_OK)
    return rc;
  rc = rv_file_pwrite(f, text, strlen(text), 0);
  if (rc == RV_OK && sync)
    rc = rv_file_sync(f);
  rv_file_close(f);
  return rc;
}

/* The contents of a small file, or "<rv_err name>" when it cannot be read. */
static const char *get(const char *path, char *buf, size_t cap) {
  char *text;
  size_t len;
  int rc = rv_fs_read_file(path, 1 << 20, &text, &len);
  if (rc != RV_OK) {
    snprintf(buf, cap, "<%s>", rv_errname(rc));
    return buf;
  }
  snprintf(buf, cap, "%s", text);
  free(text);
  return buf;
}

/* ---- the API, the same on both backends ------------------------------------------------- */

static void fs_exercise(const char *root) {
  char p[512], q[512], buf[256];
  snprintf(p, sizeof p, "%s/a/b/c", root);
  CHECK(rv_fs_mkdir_p(p) == RV_OK);
  CHECK(rv_fs_mkdir_p(p) == RV_OK); /* exists: fine */
  CHECK(rv_fs_mkdir(p) == RV_EEXIST);
  rv_fs_info st;
  CHECK(rv_fs_stat(p, &st) == RV_OK && st.is_dir);

  snprintf(p, sizeof p, "%s/a/f.txt", root);
  rv_file *f = NULL;
  CHECK(rv_file_open(&f, p, RV_FS_READ) == RV_ENOTFOUND);
  CHECK(rv_file_open(&f, p, RV_FS_RDWR | RV_FS_CREATE | RV_FS_EXCL) == RV_OK);
  rv_file *f2 = NULL;
  CHECK(rv_file_open(&f2, p, RV_FS_RDWR | RV_FS_CREATE | RV_FS_EXCL) == RV_EEXIST);
  CHECK(rv_file_open(&f2, p, RV_FS_TRUNC) == RV_EINVAL); /* no access mode */
  CHECK(rv_file_pwrite(f, "hello", 5, 0) == RV_OK);
  struct iovec iov[3] = {{(void *)", ", 2}, {(void *)"", 0}, {(void *)"world", 5}};
  CHECK(rv_file_pwritev(f, iov, 3, 5) == RV_OK);
  uint64_t size = 0;
  CHECK(rv_file_size(f, &size) == RV_OK && size == 12);
  char rd[32] = {0};
  CHECK(rv_file_pread(f, rd, sizeof rd, 0) == 12 && memcmp(rd, "hello, world", 12) == 0);
  CHECK(rv_file_pread(f, rd, 4, 7) == 4 && memcmp(rd, "worl", 4) == 0);
  CHECK(rv_file_pread(f, rd, 4, 100) == 0);
  CHECK(rv_file_sync(f) == RV_OK);
  CHECK(rv_file_truncate(f, 5) == RV_OK);
  CHECK(rv_file_size(f, &size) == RV_OK && size == 5);
  CHECK(rv_file_truncate(f, 8) == RV_OK); /* extends with zeros */
  CHECK(rv_file_pread(f, rd, sizeof rd, 0) == 8 && memcmp(rd, "hello\0\0\0", 8) == 0);
  CHECK(rv_file_pwrite(f, "!", 1, 10) == RV_OK); /* a hole reads as zeros */
  CHECK(rv_file_pread(f, rd, sizeof rd, 0) == 11 && rd[9] == 0 && rd[10] == '!');
  rv_file_close(f);
  CHECK(rv_fs_stat(p, &st) == RV_OK && !st.is_dir && st.size == 11);
  CHECK(rv_file_open(&f, p, RV_FS_READ) == RV_OK);
  CHECK(rv_file_pwrite(f, "x", 1, 0) != RV_OK); /* read-only handle */
  rv_file_close(f);

  snprintf(q, sizeof q, "%s/a/g.txt", root);
  CHECK(put(q, "gee", true) == RV_OK);
  CHECK(rv_fs_rename(q, p) == RV_OK); /* replaces f.txt */
  CHECK(!rv_fs_exists(q));
  CHECK(strcmp(get(p, buf, sizeof buf), "gee") == 0);
  CHECK(rv_fs_rename(q, p) == RV_ENOTFOUND);

  snprintf(q, sizeof q, "%s/a/0-first", root);
  CHECK(put(q, "", false) == RV_OK);
  snprintf(q, sizeof q, "%s/a", root);
  char **names = NULL;
  size_t n = 0;
  CHECK(rv_fs_list(q, &names, &n) == RV_OK);
  CHECK(n == 3 && strcmp(names[0], "0-first") == 0 && strcmp(names[1], "b") == 0 &&
        strcmp(names[2], "f.txt") == 0);
  rv_fs_list_free(names, n);
  CHECK(rv_fs_sync_dir(q) == RV_OK);
  CHECK(rv_fs_syncfs(q) == RV_OK);
  snprintf(q, sizeof q, "%s/nope", root);
  CHECK(rv_fs_list(q, &names, &n) == RV_ENOTFOUND);
  CHECK(rv_fs_unlink(q) == RV_ENOTFOUND);
  CHECK(rv_fs_stat(q, &st) == RV_ENOTFOUND);
  snprintf(q, sizeof q, "%s/nope/x", root);
  CHECK(rv_file_open(&f, q, RV_FS_WRITE | RV_FS_CREATE) == RV_ENOTFOUND);
  CHECK(rv_fs_mkdir(q) == RV_ENOTFOUND);

  CHECK(rv_write_file_durable(root, "state", "boot 1\n") == RV_OK);
  snprintf(q, sizeof q, "%s/state", root);
  CHECK(strcmp(get(q, buf, sizeof buf), "boot 1\n") == 0);
  char *small = NULL;
  CHECK(rv_read_file_small(q, 3, &small) == RV_ELIMIT && !small);

  snprintf(q, sizeof q, "%s/a", root);
  CHECK(rv_fs_rmdir(q) == RV_EBUSY); /* not empty */
  rv_rm_rf(q);
  CHECK(!rv_fs_exists(q));
  CHECK(rv_fs_unlink(p) == RV_ENOTFOUND);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void test_fs_os(void **state) {
  (void)state;
  failure[0] = 0;
  char root[] = "/tmp/ravel-simdisk-XXXXXX";
  assert_non_null(mkdtemp(root));
  fs_exercise(root);
  nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (failure[0])
    fail_msg("%s", failure);
}

static void exercise_main(void *arg) {
  (void)arg;
  CHECK(rv_fs_mkdir("/data") == RV_OK);
  fs_exercise("/data");
  /* Nothing of it reached the real disk. */
  CHECK(rv_fs_exists("/data/state"));
}

static void test_fs_sim(void **state) {
  (void)state;
  rv_sim_world *w = world_new(1);
  run_in(w, "disk", exercise_main, NULL);
  assert_int_equal(access("/data/state", F_OK), -1);
  rv_sim_world_free(w);
}

/* ---- durability ------------------------------------------------------------------------------- */

static rv_sim_world *cur_world;

typedef struct crash_case {
  rv_sim_disk_faults faults;
  bool harshest; /* NULL faults */
  char out[8][64];
  int64_t sync_ns;
  int other_ran;
} crash_case;

static int other_steps;
static void other_thread(void *arg) {
  (void)arg;
  for (int i = 0; i < 10; i++) {
    other_steps++;
    rv_sleep(NULL, 10 * RV_NS_PER_US);
  }
}

static void crash_main(void *arg) {
  crash_case *c = arg;
  CHECK(rv_fs_mkdir("/d") == RV_OK);
  CHECK(rv_fs_sync_dir("/") == RV_OK);
  /* synced file, synced name */
  CHECK(put("/d/synced", "durable", true) == RV_OK);
  /* unsynced data under a synced name */
  rv_file *f;
  CHECK(put("/d/data", "old", true) == RV_OK);
  CHECK(rv_fs_sync_dir("/d") == RV_OK);
  CHECK(rv_file_open(&f, "/d/data", RV_FS_RDWR) == RV_OK);
  CHECK(rv_file_pwrite(f, "new-bytes", 9, 3) == RV_OK);
  /* a sync costs virtual time and lets others run */
  other_steps = 0;
  rv_thread *t;
  CHECK(rv_thread_start(&t, "other", "test", other_thread, NULL) == RV_OK);
  int64_t t0 = rv_now_ns();
  put("/d/tmp", "x", true);
  c->sync_ns = rv_now_ns() - t0;
  c->other_ran = other_steps;
  rv_thread_join(t);
  CHECK(rv_fs_unlink("/d/tmp") == RV_OK);
  CHECK(put("/d/cfg", "v1", true) == RV_OK);
  CHECK(put("/d/gone", "g", true) == RV_OK);
  /* an atomic replace done right (it syncs /d: everything above is named durably) */
  CHECK(rv_write_file_durable("/d", "state", "s2") == RV_OK);

  /* From here on nothing syncs /d. */
  /* synced data under a name never made durable */
  CHECK(put("/d/nameless", "synced-data", true) == RV_OK);
  /* an atomic replace whose rename was not synced */
  CHECK(put("/d/cfg.tmp", "v2", true) == RV_OK);
  CHECK(rv_fs_rename("/d/cfg.tmp", "/d/cfg") == RV_OK);
  /* an unsynced unlink of a synced file */
  CHECK(rv_fs_unlink("/d/gone") == RV_OK);

  rv_sim_disk_crash(cur_world, "p", c->harshest ? NULL : &c->faults);
  char rd[8];
  CHECK(rv_file_pread(f, rd, 1, 0) == RV_ESTALE);
  CHECK(rv_file_pwrite(f, "z", 1, 0) == RV_ESTALE);
  CHECK(rv_file_sync(f) == RV_ESTALE);
  rv_file_close(f);
  const char *names[] = {"/d/synced", "/d/data", "/d/nameless", "/d/cfg", "/d/state", "/d/gone"};
  for (int i = 0; i < 6; i++)
    get(names[i], c->out[i], sizeof c->out[i]);
}

static void crash_run(crash_case *c, uint64_t seed) {
  rv_sim_world *w = world_new(seed);
  cur_world = w;
  run_in(w, "p", crash_main, c);
  rv_sim_world_free(w);
}

static void test_crash_harshest(void **state) {
  (void)state;
  crash_case c = {.harshest = true};
  crash_run(&c, 7);
  assert_string_equal(c.out[0], "durable");
  assert_string_equal(c.out[1], "old");         /* unsynced write lost */
  assert_string_equal(c.out[2], "<RV_ENOTFOUND>"); /* its name was never synced */
  assert_string_equal(c.out[3], "v1");          /* the unsynced rename was lost */
  assert_string_equal(c.out[4], "s2");          /* rv_write_file_durable survives */
  assert_string_equal(c.out[5], "g");           /* the unsynced unlink was lost */
  assert_int_equal(c.sync_ns, RV_SIM_DISK_SYNC_NS);
  assert_true(c.other_ran > 0);
}

static void test_crash_keep_all(void **state) {
  (void)state;
  crash_case c = {.faults = {0, 0, 0}};
  crash_run(&c, 7);
  assert_string_equal(c.out[0], "durable");
  assert_string_equal(c.out[1], "oldnew-bytes");
  assert_string_equal(c.out[2], "synced-data");
  assert_string_equal(c.out[3], "v2");
  assert_string_equal(c.out[4], "s2");
  assert_string_equal(c.out[5], "<RV_ENOTFOUND>");
}

/* Directory operations alone: the file data is kept, every unsynced dir op lost. */
static void test_crash_lose_dir_ops(void **state) {
  (void)state;
  crash_case c = {.faults = {0, 0, 1.0}};
  crash_run(&c, 7);
  assert_string_equal(c.out[1], "oldnew-bytes");
  assert_string_equal(c.out[2], "<RV_ENOTFOUND>");
  assert_string_equal(c.out[3], "v1");
  assert_string_equal(c.out[5], "g");
}

/* syncfs makes a whole volume durable; a rename between directories is two operations. */
typedef struct xdir_case {
  char x[32], ay[32], by[32];
} xdir_case;

static void xdir_main(void *arg) {
  xdir_case *c = arg;
  CHECK(rv_fs_mkdir("/a") == RV_OK && rv_fs_mkdir("/b") == RV_OK);
  CHECK(put("/a/x", "1", false) == RV_OK);
  CHECK(rv_fs_syncfs("/") == RV_OK);
  CHECK(put("/a/y", "y", true) == RV_OK);
  CHECK(rv_fs_sync_dir("/a") == RV_OK);
  CHECK(rv_fs_rename("/a/y", "/b/y") == RV_OK);
  CHECK(rv_fs_sync_dir("/b") == RV_OK); /* the new name is durable, the removal of the old is not */
  rv_sim_disk_crash(cur_world, "x", NULL);
  get("/a/x", c->x, sizeof c->x);
  get("/a/y", c->ay, sizeof c->ay);
  get("/b/y", c->by, sizeof c->by);
}

static void test_syncfs_and_cross_dir_rename(void **state) {
  (void)state;
  xdir_case c;
  rv_sim_world *w = world_new(2);
  cur_world = w;
  run_in(w, "x", xdir_main, &c);
  rv_sim_world_free(w);
  assert_string_equal(c.x, "1");
  assert_string_equal(c.ay, "y");
  assert_string_equal(c.by, "y");
}

/* ---- torn tails ----------------------------------------------------------------------------- */

typedef struct torn_case {
  size_t len;
  char data[128];
  uint64_t hash;
} torn_case;

static void torn_main(void *arg) {
  torn_case *c = arg;
  rv_file *f;
  CHECK(rv_file_open(&f, "/log", RV_FS_RDWR | RV_FS_CREATE) == RV_OK);
  CHECK(rv_fs_sync_dir("/") == RV_OK);
  CHECK(rv_file_pwrite(f, "0123456789", 10, 0) == RV_OK);
  CHECK(rv_file_sync(f) == RV_OK);
  /* four unsynced appends of 20 bytes */
  for (int i = 0; i < 4; i++) {
    char rec[21];
    snprintf(rec, sizeof rec, "%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c%c", 'a' + i, 'a' + i,
             'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i,
             'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i, 'a' + i);
    CHECK(rv_file_pwrite(f, rec, 20, 10 + 20 * (uint64_t)i) == RV_OK);
  }
  rv_sim_disk_faults torn = {.lose_unsynced = 0, .torn_tail = 1.0, .lose_dir_ops = 0};
  rv_sim_disk_crash(cur_world, "t", &torn);
  rv_file_close(f);
  CHECK(rv_file_open(&f, "/log", RV_FS_READ) == RV_OK);
  ssize_t n = rv_file_pread(f, c->data, sizeof c->data, 0);
  CHECK(n >= 10);
  c->len = n > 0 ? (size_t)n : 0;
  rv_file_close(f);
}

static void torn_run(torn_case *c, uint64_t seed) {
  memset(c, 0, sizeof *c);
  rv_sim_world *w = world_new(seed);
  cur_world = w;
  run_in(w, "t", torn_main, c);
  c->hash = rv_sim_hash(w);
  rv_sim_world_free(w);
}

static void test_torn_tail(void **state) {
  (void)state;
  bool lengths[91] = {false};
  int distinct = 0;
  for (uint64_t seed = 1; seed <= 20; seed++) {
    torn_case a, b;
    torn_run(&a, seed);
    torn_run(&b, seed);
    /* the same seed tears at the same byte, and the trace says so */
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(a.hash, b.hash);
    /* synced bytes kept; a strict prefix of the unsynced appends, the last one cut */
    assert_true(a.len >= 10 && a.len < 90);
    assert_memory_equal(a.data, "0123456789", 10);
    for (size_t i = 10; i < a.len; i++)
      assert_int_equal(a.data[i], 'a' + (int)((i - 10) / 20));
    if (!lengths[a.len]) {
      lengths[a.len] = true;
      distinct++;
    }
  }
  assert_true(distinct >= 5); /* the seed picks the torn point */
}

/* ---- volumes -------------------------------------------------------------------------------- */

static void vol_write(void *arg) {
  (void)arg;
  CHECK(put("/mine", "p1", true) == RV_OK);
  CHECK(rv_fs_sync_dir("/") == RV_OK);
}
static void vol_read_other(void *arg) {
  (void)arg;
  CHECK(!rv_fs_exists("/mine")); /* another process: another volume */
}
static void vol_read_again(void *arg) {
  char buf[16];
  (void)arg;
  CHECK(strcmp(get("/mine", buf, sizeof buf), "p1") == 0);
}

static void test_volumes(void **state) {
  (void)state;
  rv_sim_world *w = world_new(3);
  rv_sim_proc *p1 = rv_sim_proc_new(w, "p1");
  rv_sim_proc *p2 = rv_sim_proc_new(w, "p2");
  assert_int_equal(rv_sim_spawn(p1, "w", "test", vol_write, NULL), RV_OK);
  assert_int_equal(rv_sim_run(w, RV_NS_PER_S), RV_OK);
  assert_int_equal(rv_sim_spawn(p2, "r", "test", vol_read_other, NULL), RV_OK);
  assert_int_equal(rv_sim_run(w, 2 * RV_NS_PER_S), RV_OK);
  /* a crash of the volume between runs, then the process runs again over it */
  rv_sim_disk_crash(w, "p1", NULL);
  rv_sim_disk_crash(w, "never-used", NULL);
  assert_int_equal(rv_sim_spawn(p1, "r", "test", vol_read_again, NULL), RV_OK);
  assert_int_equal(rv_sim_run(w, 3 * RV_NS_PER_S), RV_OK);
  if (failure[0])
    fail_msg("%s", failure);
  rv_sim_world_free(w);
}

/* ---- the queue's log over the simulated disk ------------------------------------------------------ */

#define QLOG_SYNCED 40
#define QLOG_UNSYNCED 25

typedef struct qlog_case {
  rv_sim_disk_faults faults;
  bool harshest, sync_all;
  uint64_t recovered; /* records read back after the crash */
  uint64_t lost;      /* seqs below next_seq the log reports lost (RV_EIO) */
  uint64_t lost_stat; /* rv_qlog_stats.lost_seqs */
  uint64_t next_seq;
  uint64_t appended_after; /* records appended after reopening */
  uint64_t hash;
} qlog_case;

static void qlog_append_n(rv_qlog *q, uint64_t from, int n) {
  for (int i = 0; i < n; i++) {
    char body[64];
    int len = snprintf(body, sizeof body, "message-%06llu-%s", (unsigned long long)(from + (uint64_t)i),
                       "padding-padding");
    rv_qlog_entry e = {.id = from + (uint64_t)i, .ts_ns = rv_wall_ns(), .body_len = (uint32_t)len,
                       .body = body};
    uint64_t seq;
    CHECK(rv_qlog_append(q, &e, 1, &seq) == RV_OK);
    CHECK(seq == from + (uint64_t)i);
  }
}

static void qlog_main(void *arg) {
  qlog_case *c = arg;
  rv_qlog_opts o = {.manual_sync = true, .segment_bytes = RV_QLOG_SEGMENT_BYTES_MIN,
                    .no_auto_reclaim = true, .name = "t"};
  CHECK(rv_fs_mkdir_p("/var/q") == RV_OK);
  CHECK(rv_fs_sync_dir("/var") == RV_OK && rv_fs_sync_dir("/") == RV_OK);
  rv_qlog *q = NULL;
  CHECK(rv_qlog_open(&q, "/var/q/log", &o) == RV_OK);
  if (!q)
    return;
  qlog_append_n(q, 1, QLOG_SYNCED);
  CHECK(rv_qlog_sync_now(q) == RV_OK);
  CHECK(rv_qlog_durable_seq(q) == QLOG_SYNCED);
  qlog_append_n(q, QLOG_SYNCED + 1, QLOG_UNSYNCED);
  if (c->sync_all)
    CHECK(rv_qlog_sync_now(q) == RV_OK);
  /* kill -9: the disk forgets, the log's handles die; closing it must not crash */
  rv_sim_disk_crash(cur_world, "queue", c->harshest ? NULL : &c->faults);
  rv_qlog_close(q);

  q = NULL;
  CHECK(rv_qlog_open(&q, "/var/q/log", &o) == RV_OK);
  if (!q)
    return;
  c->next_seq = rv_qlog_next_seq(q);
  rv_qlog_iter *it;
  CHECK(rv_qlog_iter_new(q, 1, &it) == RV_OK);
  rv_qlog_msg m;
  int rc;
  uint64_t expect = 1;
  while ((rc = rv_qlog_iter_next(it, &m)) == RV_OK || rc == RV_EIO) {
    CHECK(m.seq == expect);
    expect = m.seq + 1;
    if (rc == RV_EIO) {
      c->lost++;
      continue;
    }
    char want[64];
    int len = snprintf(want, sizeof want, "message-%06llu-%s", (unsigned long long)m.seq,
                       "padding-padding");
    CHECK(m.id == m.seq && m.body_len == (uint32_t)len && memcmp(m.body, want, (size_t)len) == 0);
    c->recovered++;
  }
  CHECK(rc == RV_ENOTFOUND);
  rv_qlog_iter_free(it);
  rv_qlog_stats st;
  rv_qlog_stats_get(q, &st);
  c->lost_stat = st.lost_seqs;
  /* the log takes appends again, from where it recovered */
  qlog_append_n(q, c->next_seq, 5);
  CHECK(rv_qlog_sync_now(q) == RV_OK);
  c->appended_after = rv_qlog_durable_seq(q);
  rv_qlog_close(q);
}

static void qlog_run(qlog_case *c, uint64_t seed) {
  rv_sim_world *w = world_new(seed);
  cur_world = w;
  run_in(w, "queue", qlog_main, c);
  c->hash = rv_sim_hash(w);
  rv_sim_world_free(w);
}

static void test_qlog_crash_without_sync(void **state) {
  (void)state;
  qlog_case c = {.harshest = true};
  qlog_run(&c, 11);
  assert_int_equal(c.recovered, QLOG_SYNCED);
  assert_int_equal(c.lost, 0);
  assert_int_equal(c.next_seq, QLOG_SYNCED + 1);
  assert_int_equal(c.appended_after, QLOG_SYNCED + 5);
}

static void test_qlog_crash_after_sync(void **state) {
  (void)state;
  qlog_case c = {.harshest = true, .sync_all = true};
  qlog_run(&c, 11);
  assert_int_equal(c.recovered, QLOG_SYNCED + QLOG_UNSYNCED);
  assert_int_equal(c.appended_after, QLOG_SYNCED + QLOG_UNSYNCED + 5);
}

/*
 * Unsynced records may come back in part: a prefix of a segment's tail, and
 * a newer segment whose name survived while the older one's tail did not.
 * The log then reports the seqs between as lost (never acknowledged: no
 * promise broken) and serves the rest.  Synced records always come back.
 */
static void test_qlog_torn_tails(void **state) {
  (void)state;
  int partial = 0, holes = 0;
  for (uint64_t seed = 1; seed <= 12; seed++) {
    qlog_case a = {.faults = {.lose_unsynced = 0.2, .torn_tail = 0.6, .lose_dir_ops = 0.3}};
    qlog_case b = a;
    qlog_run(&a, seed);
    qlog_run(&b, seed);
    /* every synced record, then a prefix of the rest: never a hole, never garbage */
    assert_true(a.recovered >= QLOG_SYNCED && a.recovered <= QLOG_SYNCED + QLOG_UNSYNCED);
    assert_int_equal(a.next_seq, a.recovered + a.lost + 1);
    assert_int_equal(a.lost, a.lost_stat);
    assert_int_equal(a.appended_after, a.next_seq + 4);
    assert_int_equal(a.recovered, b.recovered);
    assert_int_equal(a.lost, b.lost);
    assert_int_equal(a.hash, b.hash);
    if (a.recovered > QLOG_SYNCED && a.recovered < QLOG_SYNCED + QLOG_UNSYNCED)
      partial++;
    holes += a.lost > 0;
  }
  assert_true(partial > 0); /* some seeds tore inside the unsynced records */
  print_message("qlog over torn tails: %d of 12 seeds kept part of the unsynced records, %d left a hole\n",
                partial, holes);
}

/* ---- injected faults: EIO on sync, a full disk ------------------------------------------------------ */

typedef struct inject_case {
  int sync_rc, append_after_rc, failed;
  int write_rc, small_rc;
  uint64_t durable;
} inject_case;

static void inject_main(void *arg) {
  inject_case *c = arg;
  rv_qlog_opts o = {.manual_sync = true, .no_auto_reclaim = true, .name = "t"};
  rv_qlog *q = NULL;
  CHECK(rv_qlog_open(&q, "/log", &o) == RV_OK);
  if (!q)
    return;
  qlog_append_n(q, 1, 10);
  CHECK(rv_qlog_sync_now(q) == RV_OK);
  rv_sim_disk_set_faults(cur_world, "inject", 1.0, 0);
  qlog_append_n(q, 11, 5);
  c->sync_rc = rv_qlog_sync_now(q);
  /* a failed fdatasync is final: the log refuses appends instead of retrying it */
  rv_qlog_entry e = {.id = 99, .body_len = 1, .body = "x"};
  uint64_t seq;
  c->append_after_rc = rv_qlog_append(q, &e, 1, &seq);
  c->durable = rv_qlog_durable_seq(q);
  rv_qlog_stats st;
  rv_qlog_stats_get(q, &st);
  c->failed = st.failed;
  rv_qlog_close(q);

  /* a full disk: a write past the capacity fails, a small one still fits */
  rv_sim_disk_set_faults(cur_world, "inject", 0, 64 << 10);
  rv_file *f;
  CHECK(rv_file_open(&f, "/big", RV_FS_RDWR | RV_FS_CREATE) == RV_OK);
  static char block[128 << 10];
  c->write_rc = rv_file_pwrite(f, block, sizeof block, 0);
  c->small_rc = rv_file_pwrite(f, block, 16, 0);
  rv_file_close(f);
}

static void test_injected_faults(void **state) {
  (void)state;
  inject_case c = {0};
  rv_sim_world *w = world_new(5);
  cur_world = w;
  run_in(w, "inject", inject_main, &c);
  rv_sim_world_free(w);
  assert_int_not_equal(c.sync_rc, RV_OK);
  assert_int_equal(c.append_after_rc, RV_EIO);
  assert_int_equal(c.failed, RV_EIO);
  assert_int_equal(c.durable, 10); /* the failed sync acknowledged nothing */
  assert_int_equal(c.write_rc, RV_ENOSPC);
  assert_int_equal(c.small_rc, RV_OK);
}

/* ---- SQLite over the simulated disk (storage/sqlite_vfs.h) ------------------------------------------ */

typedef struct sql_case {
  const char *sync; /* "FULL" or "NORMAL" */
  int opened, rows_before, rows_after, integrity_ok;
} sql_case;

static int sql_count(sqlite3 *db) {
  sqlite3_stmt *st;
  int n = -1;
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return n;
}

static void sql_main(void *arg) {
  sql_case *c = arg;
  CHECK(rv_fs_mkdir("/db") == RV_OK && rv_fs_sync_dir("/") == RV_OK);
  const char *vfs = rv_sqlite_vfs_for_rt();
  CHECK(vfs && strcmp(vfs, RV_SQLITE_VFS_NAME) == 0);
  sqlite3 *db;
  CHECK(sqlite3_open_v2("/db/config.db", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) ==
        SQLITE_OK);
  char sql[128];
  snprintf(sql, sizeof sql, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s", c->sync);
  CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", NULL, NULL, NULL) ==
        SQLITE_OK);
  for (int i = 0; i < 50; i++) {
    snprintf(sql, sizeof sql, "INSERT INTO t (v) VALUES ('row %d')", i);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
  }
  c->rows_before = sql_count(db);
  /* kill -9 with the connection open */
  rv_sim_disk_crash(cur_world, "sql", NULL);
  sqlite3_close_v2(db); /* its files are dead: closing must not crash */

  c->opened = sqlite3_open_v2("/db/config.db", &db, SQLITE_OPEN_READWRITE, vfs) == SQLITE_OK;
  if (c->opened) {
    c->rows_after = sql_count(db);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      c->integrity_ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
  }
  sqlite3_close_v2(db);
}

static void sql_run(sql_case *c) {
  rv_sim_world *w = world_new(9);
  cur_world = w;
  run_in(w, "sql", sql_main, c);
  rv_sim_world_free(w);
}

static void test_sqlite_vfs(void **state) {
  (void)state;
  assert_null(rv_sqlite_vfs_for_rt()); /* outside a world: SQLite's own VFS */
  /* synchronous=FULL: every commit is synced to the WAL, a crash keeps them all */
  sql_case full = {.sync = "FULL"};
  sql_run(&full);
  assert_int_equal(full.rows_before, 50);
  assert_true(full.opened);
  assert_int_equal(full.rows_after, 50);
  assert_true(full.integrity_ok);
  /*
   * NORMAL: commits are synced only at checkpoints.  A crash of the disk is a
   * power loss (a kill -9 alone would keep the page cache): here, before any
   * checkpoint, everything since the open is gone, the table too (-1), and
   * what is left is a consistent database.
   */
  sql_case normal = {.sync = "NORMAL"};
  sql_run(&normal);
  assert_true(normal.opened);
  assert_true(normal.rows_after >= -1 && normal.rows_after <= 50);
  assert_true(normal.integrity_ok);
  print_message("sqlite over the simulated disk: FULL kept %d of 50 rows, NORMAL kept %d\n",
                full.rows_after, normal.rows_after);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fs_os),
      cmocka_unit_test(test_fs_sim),
      cmocka_unit_test(test_crash_harshest),
      cmocka_unit_test(test_crash_keep_all),
      cmocka_unit_test(test_crash_lose_dir_ops),
      cmocka_unit_test(test_syncfs_and_cross_dir_rename),
      cmocka_unit_test(test_torn_tail),
      cmocka_unit_test(test_volumes),
      cmocka_unit_test(test_qlog_crash_without_sync),
      cmocka_unit_test(test_qlog_crash_after_sync),
      cmocka_unit_test(test_qlog_torn_tails),
      cmocka_unit_test(test_injected_faults),
      cmocka_unit_test(test_sqlite_vfs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
