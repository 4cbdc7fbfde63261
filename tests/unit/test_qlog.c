/*
 * The queue's durable storage: topic log round trips across segment rolls,
 * group commit (many appends, few fdatasyncs), checksums, torn tails,
 * channel journal recovery and checkpoints, reclamation, and real crashes:
 * a child process appending (or finishing) under SYNC_ALWAYS is killed with
 * SIGKILL at an arbitrary moment, and everything it had been told was
 * durable must be back, intact, when the parent reopens the files.
 */
#define _GNU_SOURCE /* nftw */
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "obs/log.h"
#include "storage/crc32c.h"
#include "storage/qjournal.h"
#include "storage/qlog.h"

/* Small segments so a few thousand messages roll many times. */
#define SMALL_SEGMENT_BYTES (4u << 10)
#define BODY_MAX_TEST 300
#define RECORD_HDR RV_QLOG_RECORD_HEADER_BYTES
#define SEG_HDR RV_QLOG_SEGMENT_HEADER_BYTES

/* ---- helpers ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

static void rm_rf(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

typedef struct fixture {
  char root[64];    /* mkdtemp */
  char topic[128];  /* root/topic */
  char chan[160];   /* root/topic/ch.a */
  int log_fd;       /* log lines go here, read back by tests */
  rv_log *log;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  snprintf(f->root, sizeof f->root, "/tmp/ravel-qlog-XXXXXX");
  if (!mkdtemp(f->root))
    return -1;
  snprintf(f->topic, sizeof f->topic, "%s/topic", f->root);
  snprintf(f->chan, sizeof f->chan, "%s/ch.a", f->topic);
  char lp[128];
  snprintf(lp, sizeof lp, "%s/log.txt", f->root);
  f->log_fd = open(lp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  f->log = rv_log_new(f->log_fd, RV_LOG_DEBUG, "qlog");
  *state = f;
  return f->log ? 0 : -1;
}

static int teardown(void **state) {
  fixture *f = *state;
  rv_log_free(f->log);
  close(f->log_fd);
  rm_rf(f->root);
  free(f);
  return 0;
}

/* Everything logged so far (static buffer). */
static const char *logged(fixture *f) {
  static char buf[64 << 10];
  ssize_t n = pread(f->log_fd, buf, sizeof buf - 1, 0);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

/* The content of message seq is a function of seq alone, so any process can check it. */
static uint32_t body_len_of(uint64_t seq) { return (uint32_t)((seq * 7919) % BODY_MAX_TEST); }

static void body_of(uint64_t seq, uint8_t *out) {
  for (uint32_t i = 0; i < body_len_of(seq); i++)
    out[i] = (uint8_t)(seq * 31 + i * 17);
}

static rv_qlog_entry entry_of(uint64_t seq, uint8_t *body_buf) {
  body_of(seq, body_buf);
  return (rv_qlog_entry){.id = seq * UINT64_C(2654435761),
                         .ts_ns = (int64_t)seq * 1000,
                         .defer_until_ns = (seq % 10 == 0) ? (int64_t)seq * 5 : 0,
                         .attempts = (uint16_t)(seq % 7),
                         .body_len = body_len_of(seq),
                         .body = body_buf};
}

/* Append n messages with the canonical content, in batches of `batch`; returns the first seq. */
static uint64_t append_canonical(rv_qlog *q, size_t n, size_t batch) {
  static uint8_t bodies[512][BODY_MAX_TEST];
  rv_qlog_entry e[512];
  assert_true(batch <= 512);
  uint64_t first = rv_qlog_next_seq(q), seq = first;
  for (size_t done = 0; done < n;) {
    size_t k = n - done < batch ? n - done : batch;
    for (size_t i = 0; i < k; i++)
      e[i] = entry_of(seq + i, bodies[i]);
    uint64_t got;
    assert_int_equal(rv_qlog_append(q, e, k, &got), RV_OK);
    assert_int_equal(got, seq);
    seq += k;
    done += k;
  }
  return first;
}

static bool msg_is_canonical(const rv_qlog_msg *m) {
  uint8_t want[BODY_MAX_TEST];
  body_of(m->seq, want);
  rv_qlog_entry e = entry_of(m->seq, want);
  return m->id == e.id && m->ts_ns == e.ts_ns && m->defer_until_ns == e.defer_until_ns &&
         m->attempts == e.attempts && m->body_len == e.body_len &&
         memcmp(m->body, want, m->body_len) == 0;
}

/* Check seqs [from, to] with an iterator and with random reads. */
static void check_range(rv_qlog *q, uint64_t from, uint64_t to) {
  rv_qlog_iter *it;
  assert_int_equal(rv_qlog_iter_new(q, from, &it), RV_OK);
  rv_qlog_msg m;
  for (uint64_t s = from; s <= to; s++) {
    assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
    assert_int_equal(m.seq, s);
    assert_true(msg_is_canonical(&m));
  }
  rv_qlog_iter_free(it);
  uint8_t buf[BODY_MAX_TEST];
  for (uint64_t s = to; s >= from && s > 0; s = s > (s % 13) + 1 ? s - (s % 13) - 1 : 0) {
    assert_int_equal(rv_qlog_read(q, s, &m, buf, sizeof buf), RV_OK);
    assert_int_equal(m.seq, s);
    assert_true(msg_is_canonical(&m));
  }
}

static size_t count_files(const char *dir, const char *suffix) {
  DIR *d = opendir(dir);
  size_t n = 0, slen = strlen(suffix);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    n += len > slen && strcmp(e->d_name + len - slen, suffix) == 0;
  }
  if (d)
    closedir(d);
  return n;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The first seq of each segment, ascending, from the directory. */
static size_t segment_firsts(const char *dir, uint64_t *out, size_t cap) {
  DIR *d = opendir(dir);
  size_t n = 0;
  struct dirent *e;
  while (d && n < cap && (e = readdir(d)) != NULL) {
    unsigned long long v;
    char rest[16];
    if (strlen(e->d_name) == 24 && sscanf(e->d_name, "%20llu%15s", &v, rest) == 2 &&
        strcmp(rest, ".seg") == 0)
      out[n++] = v;
  }
  if (d)
    closedir(d);
  qsort(out, n, sizeof *out, cmp_u64);
  return n;
}

static void seg_path(char *out, size_t cap, const char *dir, uint64_t first) {
  snprintf(out, cap, "%s/%020llu.seg", dir, (unsigned long long)first);
}

/* ---- crc32c --------------------------------------------------------------------------- */

static void test_crc32c_vectors(void **state) {
  assert_int_equal(rv_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(rv_crc32c_sw(0, "123456789", 9), 0xE3069283u);
  uint8_t buf[1000];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (uint8_t)(i * 131 + 7);
  for (size_t len = 0; len + 3 <= sizeof buf; len += 37) {
    uint32_t whole = rv_crc32c(0, buf + 3, len);
    assert_int_equal(whole, rv_crc32c_sw(0, buf + 3, len));
    /* chaining */
    assert_int_equal(whole, rv_crc32c(rv_crc32c(0, buf + 3, len / 3), buf + 3 + len / 3,
                                      len - len / 3));
  }
}

/* ---- round trips ---------------------------------------------------------------------- */

static void test_roundtrip_across_rolls(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.segment_bytes = SMALL_SEGMENT_BYTES, .manual_sync = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qlog_next_seq(q), 1);
  /* Nothing is visible before it is durable under SYNC_ALWAYS. */
  append_canonical(q, 3, 3);
  rv_qlog_msg m;
  uint8_t buf[BODY_MAX_TEST];
  assert_int_equal(rv_qlog_read(q, 1, &m, buf, sizeof buf), RV_ENOTFOUND);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  assert_int_equal(rv_qlog_durable_seq(q), 3);
  /* Batches of every size, including ones larger than a segment and than one pwritev. */
  size_t batches[] = {1, 2, 17, 200, 600, 5, 64};
  for (size_t i = 0; i < sizeof batches / sizeof *batches; i++)
    append_canonical(q, batches[i] * 3, batches[i] > 512 ? 512 : batches[i]);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  uint64_t last = rv_qlog_next_seq(q) - 1;
  assert_int_equal(rv_qlog_durable_seq(q), last);
  rv_qlog_stats st;
  rv_qlog_stats_get(q, &st);
  assert_true(st.segments > 50);
  assert_int_equal(st.segments, count_files(f->topic, ".seg"));
  check_range(q, 1, last);
  /* A body that does not fit says how much it needs. */
  uint64_t big = 1;
  while (body_len_of(big) < 10)
    big++;
  assert_int_equal(rv_qlog_read(q, big, &m, buf, 5), RV_ERANGE);
  assert_int_equal(m.body_len, body_len_of(big));
  assert_int_equal(rv_qlog_read(q, last + 1, &m, buf, sizeof buf), RV_ENOTFOUND);
  /* An empty body and a body larger than a segment. */
  uint8_t *huge = calloc(1, SMALL_SEGMENT_BYTES * 3);
  huge[7] = 42;
  rv_qlog_entry e[2] = {{.id = 1, .body_len = 0, .body = NULL},
                        {.id = 2, .body_len = SMALL_SEGMENT_BYTES * 3, .body = huge}};
  uint64_t first;
  assert_int_equal(rv_qlog_append(q, e, 2, &first), RV_OK);
  assert_int_equal(first, last + 1);
  rv_qlog_entry toolarge = {.body_len = RV_QLOG_BODY_MAX_BYTES + 1, .body = huge};
  assert_int_equal(rv_qlog_append(q, &toolarge, 1, &first), RV_EINVAL);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  rv_qlog_close(q);

  /* Reopen: the same messages, recovered and verified; appends continue. */
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qlog_next_seq(q), last + 3);
  assert_int_equal(rv_qlog_durable_seq(q), last + 2);
  check_range(q, 1, last);
  rv_qlog_iter *it;
  assert_int_equal(rv_qlog_iter_new(q, last + 1, &it), RV_OK);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.body_len, 0);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.body_len, SMALL_SEGMENT_BYTES * 3);
  assert_int_equal(m.body[7], 42);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_ENOTFOUND);
  rv_qlog_iter_free(it);
  rv_qlog_stats_get(q, &st);
  assert_int_equal(st.truncated_bytes, 0);
  assert_int_equal(st.lost_seqs, 0);
  assert_int_equal(st.recovered_records, last + 2);
  free(huge);
  rv_qlog_close(q);
}

/* ---- group commit ---------------------------------------------------------------------- */

typedef struct acks {
  _Atomic uint64_t max;
  _Atomic uint64_t calls;
  _Atomic bool regressed;
} acks;

static void on_durable(void *arg, uint64_t seq) {
  acks *a = arg;
  if (seq < atomic_load(&a->max))
    atomic_store(&a->regressed, true);
  atomic_store(&a->max, seq);
  atomic_fetch_add(&a->calls, 1);
}

#define GC_PRODUCERS 4
#define GC_BATCHES 1500
#define GC_BATCH 8

typedef struct producer {
  rv_qlog *q;
  int index;
} producer;

static void producer_main(void *arg) {
  producer *p = arg;
  uint8_t body[64];
  memset(body, p->index, sizeof body);
  rv_qlog_entry e[GC_BATCH];
  for (int i = 0; i < GC_BATCH; i++)
    e[i] = (rv_qlog_entry){.id = (uint64_t)p->index, .body_len = sizeof body, .body = body};
  for (int b = 0; b < GC_BATCHES; b++) {
    uint64_t first;
    if (rv_qlog_append(p->q, e, GC_BATCH, &first) != RV_OK)
      return;
  }
}

static void test_group_commit(void **state) {
  fixture *f = *state;
  acks a = {0};
  rv_qlog_opts o = {.on_durable = on_durable, .on_durable_arg = &a, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  producer p[GC_PRODUCERS];
  rv_thread *t[GC_PRODUCERS];
  for (int i = 0; i < GC_PRODUCERS; i++) {
    p[i] = (producer){q, i + 1};
    assert_int_equal(rv_thread_start(&t[i], "producer", "test", producer_main, &p[i]), RV_OK);
  }
  for (int i = 0; i < GC_PRODUCERS; i++)
    rv_thread_join(t[i]);
  uint64_t last = (uint64_t)GC_PRODUCERS * GC_BATCHES * GC_BATCH;
  assert_int_equal(rv_qlog_next_seq(q), last + 1);
  assert_int_equal(rv_qlog_wait_durable(q, last, NULL), RV_OK);
  /* the callback runs after the round publishes; wait for it to catch up */
  int64_t until = rv_now_ns() + RVT_BOUND_NS;
  while (atomic_load(&a.max) < last && rv_now_ns() < until)
    rv_sleep(NULL, RVT_POLL_NS);
  assert_int_equal(atomic_load(&a.max), last);
  assert_false(atomic_load(&a.regressed));
  rv_qlog_stats st;
  rv_qlog_stats_get(q, &st);
  print_message("group commit: %llu appends in %llu calls, %llu log fdatasyncs in %llu rounds\n",
                (unsigned long long)st.appends, (unsigned long long)st.append_calls,
                (unsigned long long)st.log_syncs, (unsigned long long)st.sync_rounds);
  assert_int_equal(st.appends, last);
  assert_int_equal(st.append_calls, (uint64_t)GC_PRODUCERS * GC_BATCHES);
  /* Many appends share one fdatasync. */
  assert_true(st.log_syncs * 4 < st.append_calls);
  assert_true(atomic_load(&a.calls) <= st.sync_rounds);
  /* Every message each producer wrote is there, in one piece. */
  rv_qlog_iter *it;
  assert_int_equal(rv_qlog_iter_new(q, 1, &it), RV_OK);
  rv_qlog_msg m;
  uint64_t per[GC_PRODUCERS + 1] = {0};
  for (uint64_t s = 1; s <= last; s++) {
    assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
    assert_true(m.id >= 1 && m.id <= GC_PRODUCERS);
    assert_int_equal(m.body[0], m.id);
    per[m.id]++;
  }
  for (int i = 1; i <= GC_PRODUCERS; i++)
    assert_int_equal(per[i], GC_BATCHES * GC_BATCH);
  rv_qlog_iter_free(it);
  rv_qlog_close(q);
}

/* SYNC_NONE: visible and acknowledged at write; the background sync still comes. */
static void test_sync_none(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.sync = RV_QLOG_SYNC_NONE, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 100, 10);
  assert_int_equal(rv_qlog_acked_seq(q), 100);
  check_range(q, 1, 100);
  assert_int_equal(rv_qlog_wait_durable(q, 100, NULL), RV_OK);
  rv_qlog_close(q);
}

/* ---- checksums, torn tails, damage ----------------------------------------------------- */

/* Offset of record seq in its segment file, found by walking headers. */
static uint64_t record_offset(const char *path, uint64_t first, uint64_t seq) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  uint64_t off = SEG_HDR;
  for (uint64_t s = first; s < seq; s++) {
    uint8_t h[RECORD_HDR];
    assert_int_equal(pread(fd, h, sizeof h, (off_t)off), (ssize_t)sizeof h);
    uint32_t len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
    off += RECORD_HDR + len;
  }
  close(fd);
  return off;
}

static void flip_byte(const char *path, uint64_t off) {
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  uint8_t b;
  assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
  b ^= 0x20;
  assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
  close(fd);
}

static void test_checksum_detects_flipped_byte(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.segment_bytes = SMALL_SEGMENT_BYTES, .manual_sync = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 600, 50);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  uint64_t firsts[256];
  size_t nseg = segment_firsts(f->topic, firsts, 256);
  assert_true(nseg >= 4);

  /* While open: a byte flipped under a running log is caught on read, never served. */
  char path[256];
  seg_path(path, sizeof path, f->topic, firsts[1]);
  uint64_t victim = firsts[1] + 3;
  while (body_len_of(victim) == 0)
    victim++;
  flip_byte(path, record_offset(path, firsts[1], victim) + RECORD_HDR); /* first body byte */
  rv_qlog_msg m;
  uint8_t buf[BODY_MAX_TEST];
  assert_int_equal(rv_qlog_read(q, victim, &m, buf, sizeof buf), RV_EIO);
  assert_int_equal(rv_qlog_read(q, victim - 1, &m, buf, sizeof buf), RV_OK);
  assert_int_equal(rv_qlog_read(q, victim + 1, &m, buf, sizeof buf), RV_OK);
  rv_qlog_iter *it;
  assert_int_equal(rv_qlog_iter_new(q, victim - 1, &it), RV_OK);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.seq, victim - 1);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_EIO);
  assert_int_equal(m.seq, victim);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.seq, victim + 1);
  assert_true(msg_is_canonical(&m));
  rv_qlog_iter_free(it);
  rv_qlog_stats st;
  rv_qlog_stats_get(q, &st);
  assert_true(st.read_errors >= 2);
  rv_qlog_close(q);
  assert_non_null(strstr(logged(f), "checksum mismatch"));

  /* Reopen: damage in an older segment makes the rest of that segment unreadable. */
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  rv_qlog_stats_get(q, &st);
  assert_int_equal(st.lost_seqs, firsts[2] - victim);
  assert_int_equal(st.truncated_bytes, 0);
  assert_int_equal(rv_qlog_next_seq(q), 601);
  check_range(q, 1, victim - 1);
  check_range(q, firsts[2], 600);
  assert_int_equal(rv_qlog_iter_new(q, victim, &it), RV_OK);
  for (uint64_t s = victim; s < firsts[2]; s++) {
    assert_int_equal(rv_qlog_iter_next(it, &m), RV_EIO);
    assert_int_equal(m.seq, s);
  }
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.seq, firsts[2]);
  rv_qlog_iter_free(it);
  assert_non_null(strstr(logged(f), "damaged record in older segment"));

  /* A flipped byte in the newest segment: cut there at reopen (with the tail saved). */
  seg_path(path, sizeof path, f->topic, firsts[nseg - 1]);
  uint64_t cut = firsts[nseg - 1] + (600 - firsts[nseg - 1] < 2 ? 600 - firsts[nseg - 1] : 2);
  flip_byte(path, record_offset(path, firsts[nseg - 1], cut) + 9); /* inside the seq field */
  rv_qlog_close(q);
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qlog_next_seq(q), cut);
  rv_qlog_stats_get(q, &st);
  assert_true(st.truncated_bytes > 0);
  check_range(q, firsts[nseg - 1], cut - 1);
  /* appending reuses the cut seqs */
  append_canonical(q, 10, 10);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  check_range(q, cut, cut + 9);
  rv_qlog_close(q);
  char tail[300];
  snprintf(tail, sizeof tail, "%s.tail-%llu", path,
           (unsigned long long)record_offset(path, firsts[nseg - 1], cut));
  struct stat sb;
  assert_int_equal(stat(tail, &sb), 0);
}

static void test_torn_tail_truncated(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.manual_sync = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 50, 7);
  rv_qlog_close(q);

  /* Write half of record 51 by hand, as a crash in the middle of a write leaves it. */
  uint8_t body[BODY_MAX_TEST];
  assert_true(body_len_of(51) > 10);
  rv_qlog_entry e = entry_of(51, body);
  /* Encode it through a scratch log, then copy its bytes. */
  char scratch[200];
  snprintf(scratch, sizeof scratch, "%s/scratch", f->root);
  assert_int_equal(rv_qlog_open(&q, scratch, &o), RV_OK);
  append_canonical(q, 50, 50);
  assert_int_equal(rv_qlog_append(q, &e, 1, NULL), RV_OK);
  rv_qlog_close(q);
  char spath[256], path[256];
  seg_path(spath, sizeof spath, scratch, 1);
  seg_path(path, sizeof path, f->topic, 1);
  uint64_t off = record_offset(spath, 1, 51);
  size_t rec_len = RECORD_HDR + body_len_of(51), partial = rec_len / 2;
  uint8_t rec[RECORD_HDR + BODY_MAX_TEST];
  int sfd = open(spath, O_RDONLY), fd = open(path, O_RDWR);
  assert_int_equal(pread(sfd, rec, rec_len, (off_t)off), (ssize_t)rec_len);
  assert_int_equal(pwrite(fd, rec, partial, (off_t)off), (ssize_t)partial);
  close(sfd);
  close(fd);

  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  rv_qlog_stats st;
  rv_qlog_stats_get(q, &st);
  assert_int_equal(st.truncated_bytes, partial);
  assert_int_equal(rv_qlog_next_seq(q), 51);
  check_range(q, 1, 50);
  assert_non_null(strstr(logged(f), "truncated torn tail of segment"));
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal((uint64_t)sb.st_size, off);
  /* The same record, written whole now, reads back. */
  append_canonical(q, 5, 5);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  check_range(q, 1, 55);
  rv_qlog_close(q);

  /* A torn segment header (crash right after creating it) is rewritten. */
  char next[256];
  seg_path(next, sizeof next, f->topic, 56);
  fd = open(next, O_RDWR | O_CREAT, 0644);
  assert_int_equal(write(fd, "RVQSEG", 6), 6);
  close(fd);
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qlog_next_seq(q), 56);
  append_canonical(q, 3, 3);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  check_range(q, 1, 58);
  rv_qlog_close(q);
}

/* ---- channel journal -------------------------------------------------------------------- */

typedef struct dcollect {
  size_t n;
  rv_qjournal_deferred d[64];
} dcollect;

static void collect_deferred(void *arg, const rv_qjournal_deferred *d) {
  dcollect *c = arg;
  if (c->n < 64)
    c->d[c->n++] = *d;
}

static void test_journal_recovery(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.manual_sync = true, .no_auto_reclaim = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 100, 25);
  rv_qjournal *j;
  rv_qjournal_opts jo = {.start_seq = 1};
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, &jo), RV_OK);
  assert_int_equal(rv_qjournal_floor(j), 1);
  /* In order, out of order, duplicates, a gap. */
  uint64_t fins[] = {1, 2, 3, 5, 6, 9, 8, 3, 1, 20, 21, 22, 50};
  for (size_t i = 0; i < sizeof fins / sizeof *fins; i++)
    assert_int_equal(rv_qjournal_fin(j, fins[i], NULL), RV_OK);
  assert_int_equal(rv_qjournal_floor(j), 4);
  assert_true(rv_qjournal_is_finished(j, 5));
  assert_false(rv_qjournal_is_finished(j, 7));
  assert_int_equal(rv_qjournal_next_unfinished(j, 5), 7);
  assert_int_equal(rv_qjournal_next_unfinished(j, 8), 10);
  /* REQ with delay; one deferred then finished; one deferred then undeferred. */
  int64_t base = INT64_C(1700000000000000000);
  uint64_t lsn;
  assert_int_equal(rv_qjournal_defer(j, 4, base + 1, 2, NULL), RV_OK);
  assert_int_equal(rv_qjournal_defer(j, 7, base + 2, 3, NULL), RV_OK);
  assert_int_equal(rv_qjournal_defer(j, 10, base + 3, 1, NULL), RV_OK);
  assert_int_equal(rv_qjournal_defer(j, 11, base + 4, 1, NULL), RV_OK);
  assert_int_equal(rv_qjournal_fin(j, 10, NULL), RV_OK);
  assert_int_equal(rv_qjournal_defer(j, 11, 0, 0, NULL), RV_OK);
  assert_int_equal(rv_qjournal_defer(j, 7, base + 5, 4, &lsn), RV_OK); /* REQ'd again later */
  assert_int_equal(rv_qjournal_defer(j, 2, base, 1, NULL), RV_OK);     /* finished: ignored */
  assert_int_equal(rv_qjournal_deferred_count(j), 2);
  assert_int_equal(rv_qjournal_wait_durable(j, lsn, NULL), RV_OK);
  assert_int_equal(rv_qjournal_durable_lsn(j), lsn);
  rv_qlog_close(q); /* closes the journal too */

  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, NULL), RV_OK);
  assert_int_equal(rv_qjournal_floor(j), 4);
  uint64_t finished[] = {5, 6, 8, 9, 10, 20, 21, 22, 50};
  for (size_t i = 0; i < sizeof finished / sizeof *finished; i++)
    assert_true(rv_qjournal_is_finished(j, finished[i]));
  for (uint64_t s = 4; s <= 100; s++) {
    bool want = false;
    for (size_t i = 0; i < sizeof finished / sizeof *finished; i++)
      want |= finished[i] == s;
    assert_int_equal(rv_qjournal_is_finished(j, s), want);
  }
  rv_qjournal_deferred d;
  assert_true(rv_qjournal_deferred_get(j, 4, &d));
  assert_int_equal(d.due_ns, base + 1);
  assert_int_equal(d.attempts, 2);
  assert_true(rv_qjournal_deferred_get(j, 7, &d));
  assert_int_equal(d.due_ns, base + 5);
  assert_int_equal(d.attempts, 4);
  assert_false(rv_qjournal_deferred_get(j, 10, NULL));
  assert_false(rv_qjournal_deferred_get(j, 11, NULL));
  dcollect c = {0};
  rv_qjournal_deferred_each(j, collect_deferred, &c);
  assert_int_equal(c.n, 2);
  /* Ready after recovery: >= floor, not finished, not deferred, < next seq. */
  size_t ready = 0;
  for (uint64_t s = rv_qjournal_next_unfinished(j, 1); s < rv_qlog_next_seq(q);
       s = rv_qjournal_next_unfinished(j, s + 1))
    ready += !rv_qjournal_deferred_get(j, s, NULL);
  assert_int_equal(ready, 100 - 3 - 9 - 2);
  rv_qjournal_stats js;
  rv_qjournal_stats_get(j, &js);
  assert_int_equal(js.lsn, lsn);

  /* A torn record at the journal's end is cut on reopen. */
  rv_qjournal_close(j);
  char jpath[256];
  snprintf(jpath, sizeof jpath, "%s/%020d.qj", f->chan, 1);
  int fd = open(jpath, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "\x01\x02\x03\x04\x09\x00", 6), 6);
  close(fd);
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, NULL), RV_OK);
  rv_qjournal_stats_get(j, &js);
  assert_int_equal(js.truncated_bytes, 6);
  assert_int_equal(js.lsn, lsn);
  assert_int_equal(rv_qjournal_floor(j), 4);
  assert_non_null(strstr(logged(f), "truncated torn tail of channel journal"));
  rv_qjournal_close(j);
  rv_qlog_close(q);
}

/* A checkpoint every ~1 KiB: state survives rotations; old files go away. */
/* A channel emptied: one SKIP record finishes a whole range, survives a reopen,
 * and drops deferrals inside it. */
static void test_journal_skip_range(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.manual_sync = true, .no_auto_reclaim = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 5000, 25);
  rv_qjournal *j;
  rv_qjournal_opts jo = {.start_seq = 1};
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, &jo), RV_OK);
  assert_int_equal(rv_qjournal_fin(j, 3, NULL), RV_OK);
  assert_int_equal(rv_qjournal_defer(j, 4100, INT64_C(1700000000000000000), 2, NULL), RV_OK);
  rv_qjournal_stats before;
  rv_qjournal_stats_get(j, &before);
  assert_int_equal(rv_qjournal_skip(j, 1, 2999, NULL), RV_OK);
  uint64_t lsn;
  assert_int_equal(rv_qjournal_skip(j, 4000, 4500, &lsn), RV_OK);
  assert_int_equal(rv_qjournal_skip(j, 5, 4, NULL), RV_EINVAL);
  rv_qjournal_stats after;
  rv_qjournal_stats_get(j, &after);
  assert_int_equal(after.lsn, before.lsn + 2); /* one record per range */
  assert_int_equal(rv_qjournal_floor(j), 3000);
  assert_int_equal(rv_qjournal_deferred_count(j), 0);
  assert_int_equal(rv_qjournal_wait_durable(j, lsn, NULL), RV_OK);
  rv_qlog_close(q);

  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, NULL), RV_OK);
  assert_int_equal(rv_qjournal_floor(j), 3000);
  assert_false(rv_qjournal_is_finished(j, 3999));
  for (uint64_t s = 4000; s <= 4500; s++)
    assert_true(rv_qjournal_is_finished(j, s));
  assert_false(rv_qjournal_is_finished(j, 4501));
  assert_int_equal(rv_qjournal_deferred_count(j), 0);
  rv_qlog_close(q);
}

static void test_journal_checkpoints(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.manual_sync = true, .no_auto_reclaim = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 5000, 500);
  rv_qjournal *j;
  rv_qjournal_opts jo = {.start_seq = 1, .checkpoint_bytes = RV_QJOURNAL_CHECKPOINT_BYTES_MIN};
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, &jo), RV_OK);
  /* A model: finished[] and deferred[] by seq. */
  static bool fin_model[5001];
  static int64_t def_model[5001];
  memset(fin_model, 0, sizeof fin_model);
  memset(def_model, 0, sizeof def_model);
  rv_rng rng;
  rv_rng_seed(&rng, 42);
  for (int i = 0; i < 20000; i++) {
    /* Mostly near a moving window, like FINs of in-flight messages. */
    uint64_t s = 1 + (uint64_t)i / 5 + rv_rng_below(&rng, 200);
    if (s > 5000)
      s = 5000;
    if (rv_rng_below(&rng, 10) == 0) {
      int64_t due = (int64_t)rv_rng_below(&rng, 1000) + 1;
      assert_int_equal(rv_qjournal_defer(j, s, due, 1, NULL), RV_OK);
      if (!fin_model[s])
        def_model[s] = due;
    } else {
      assert_int_equal(rv_qjournal_fin(j, s, NULL), RV_OK);
      fin_model[s] = true;
      def_model[s] = 0;
    }
    if (i % 500 == 0)
      assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  }
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  rv_qjournal_stats js;
  rv_qjournal_stats_get(j, &js);
  assert_true(js.checkpoints > 10);
  assert_true(js.file_bytes < 4 * RV_QJOURNAL_CHECKPOINT_BYTES_MIN + js.finished_runs * 16 +
                                  js.deferred * 18);
  assert_int_equal(count_files(f->chan, ".qj"), 1);
  uint64_t lsn = js.lsn;
  rv_qlog_close(q);

  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qjournal_open(&j, q, f->chan, &jo), RV_OK);
  rv_qjournal_stats_get(j, &js);
  assert_int_equal(js.lsn, lsn);
  for (uint64_t s = 1; s <= 5000; s++) {
    assert_int_equal(rv_qjournal_is_finished(j, s), fin_model[s]);
    rv_qjournal_deferred d;
    bool is_def = rv_qjournal_deferred_get(j, s, &d);
    assert_int_equal(is_def, def_model[s] != 0);
    if (is_def)
      assert_int_equal(d.due_ns, def_model[s]);
  }
  rv_qlog_close(q);
}

/* ---- reclamation ------------------------------------------------------------------------- */

static void test_reclaim_exact_segments(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.segment_bytes = SMALL_SEGMENT_BYTES, .manual_sync = true, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 300, 30);
  uint64_t firsts[256];
  size_t n = segment_firsts(f->topic, firsts, 256);
  assert_true(n >= 6);
  size_t deleted;
  /* Not durable yet: nothing goes, whatever the floor. */
  assert_int_equal(rv_qlog_reclaim(q, 1000, &deleted), RV_OK);
  assert_int_equal(deleted, 0);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  /* Floor = last seq of segment 2: segment 2 still holds an unfinished message. */
  assert_int_equal(rv_qlog_reclaim(q, firsts[2] - 1, &deleted), RV_OK);
  assert_int_equal(deleted, 1);
  assert_int_equal(count_files(f->topic, ".seg"), n - 1);
  assert_int_equal(rv_qlog_first_seq(q), firsts[1]);
  /* Floor = first seq of segment 3: segments 1 and 2 (0-based) are all below it. */
  assert_int_equal(rv_qlog_reclaim(q, firsts[3], &deleted), RV_OK);
  assert_int_equal(deleted, 2);
  assert_int_equal(count_files(f->topic, ".seg"), n - 3);
  char path[256];
  seg_path(path, sizeof path, f->topic, firsts[2]);
  assert_int_equal(access(path, F_OK), -1);
  seg_path(path, sizeof path, f->topic, firsts[3]);
  assert_int_equal(access(path, F_OK), 0);
  /* Reclaimed seqs are gone; an iterator from 1 starts at the first stored one. */
  rv_qlog_msg m;
  uint8_t buf[BODY_MAX_TEST];
  assert_int_equal(rv_qlog_read(q, firsts[3] - 1, &m, buf, sizeof buf), RV_ENOTFOUND);
  rv_qlog_iter *it;
  assert_int_equal(rv_qlog_iter_new(q, 1, &it), RV_OK);
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.seq, firsts[3]);
  /* Past everything: all but the segment being written. */
  assert_int_equal(rv_qlog_reclaim(q, UINT64_MAX, &deleted), RV_OK);
  assert_int_equal(deleted, n - 4);
  assert_int_equal(count_files(f->topic, ".seg"), 1);
  /* The iterator moves on to the first stored seq: reclaimed ones are finished everywhere. */
  assert_int_equal(rv_qlog_iter_next(it, &m), RV_OK);
  assert_int_equal(m.seq, firsts[n - 1]);
  assert_true(msg_is_canonical(&m));
  rv_qlog_iter_free(it);
  rv_qlog_close(q);
  /* Reopen after reclamation: starts at the remaining segment. */
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  assert_int_equal(rv_qlog_first_seq(q), firsts[n - 1]);
  assert_int_equal(rv_qlog_next_seq(q), 301);
  check_range(q, firsts[n - 1], 300);
  rv_qlog_close(q);
}

/* The sync thread reclaims below the channels' durable floor by itself. */
static void test_reclaim_by_channels(void **state) {
  fixture *f = *state;
  rv_qlog_opts o = {.segment_bytes = SMALL_SEGMENT_BYTES, .log = f->log};
  rv_qlog *q;
  assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
  append_canonical(q, 300, 30);
  assert_int_equal(rv_qlog_wait_durable(q, 300, NULL), RV_OK);
  size_t n = count_files(f->topic, ".seg");
  rv_qjournal *a, *b;
  char cb[200];
  snprintf(cb, sizeof cb, "%s/ch.b", f->topic);
  rv_qjournal_opts jo = {.start_seq = 1};
  assert_int_equal(rv_qjournal_open(&a, q, f->chan, &jo), RV_OK);
  assert_int_equal(rv_qjournal_open(&b, q, cb, &jo), RV_OK);
  uint64_t lsn = 0;
  for (uint64_t s = 1; s <= 300; s++)
    assert_int_equal(rv_qjournal_fin(a, s, &lsn), RV_OK);
  assert_int_equal(rv_qjournal_wait_durable(a, lsn, NULL), RV_OK);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  /* Channel b has finished nothing: everything stays. */
  assert_int_equal(count_files(f->topic, ".seg"), n);
  assert_int_equal(rv_qlog_channels_floor(q), 1);
  for (uint64_t s = 1; s <= 150; s++)
    assert_int_equal(rv_qjournal_fin(b, s, &lsn), RV_OK);
  assert_int_equal(rv_qjournal_wait_durable(b, lsn, NULL), RV_OK);
  assert_int_equal(rv_qlog_sync_now(q), RV_OK);
  assert_int_equal(rv_qlog_channels_floor(q), 151);
  uint64_t first = rv_qlog_first_seq(q);
  assert_true(first > 1 && first <= 151);
  rv_qjournal_close(a);
  assert_int_equal(rv_qjournal_remove(b), RV_OK);
  assert_int_equal(access(cb, F_OK), -1);
  rv_qlog_close(q);
  /* With the log closed (no sync thread deleting meanwhile), the files agree. */
  uint64_t firsts[256];
  size_t left = segment_firsts(f->topic, firsts, 256);
  assert_true(left < n);
  assert_int_equal(firsts[0], first);
}

/* ---- real crashes --------------------------------------------------------------------------- */

#define CRASH_ROUNDS 5
#define CRASH_SEGMENT_BYTES (64u << 10)
/* Past this many messages the child slows down, bounding the disk a round uses. */
#define CRASH_FAST_MAX 40000
#define CRASH_SLOW_PAUSE_NS RV_NS_PER_MS

static int crash_ack_fd;

static void crash_on_durable(void *arg, uint64_t seq) {
  if (write(crash_ack_fd, &seq, sizeof seq) != (ssize_t)sizeof seq)
    _exit(3);
}

/* The child: append canonical messages forever, reporting each durable seq. */
static void crash_child_log(const char *dir, int fd) {
  crash_ack_fd = fd;
  rv_qlog_opts o = {.segment_bytes = CRASH_SEGMENT_BYTES, .on_durable = crash_on_durable};
  rv_qlog *q;
  if (rv_qlog_open(&q, dir, &o) != RV_OK)
    _exit(2);
  static uint8_t bodies[64][BODY_MAX_TEST];
  rv_qlog_entry e[64];
  rv_rng rng;
  rv_rng_seed(&rng, (uint64_t)rv_getpid());
  for (;;) {
    uint64_t seq = rv_qlog_next_seq(q);
    if (seq > CRASH_FAST_MAX)
      rv_sleep(NULL, CRASH_SLOW_PAUSE_NS);
    size_t k = 1 + (size_t)rv_rng_below(&rng, 64);
    for (size_t i = 0; i < k; i++)
      e[i] = entry_of(seq + i, bodies[i]);
    uint64_t got;
    if (rv_qlog_append(q, e, k, &got) != RV_OK || got != seq)
      _exit(4);
  }
}

/* Read u64s from fd until `want` have arrived (or EOF); returns the max seen. */
static uint64_t read_acks(int fd, size_t want, size_t *got) {
  uint64_t max = 0, v;
  size_t n = 0;
  while ((want == 0 || n < want) && read(fd, &v, sizeof v) == (ssize_t)sizeof v) {
    if (v > max)
      max = v;
    n++;
  }
  if (got)
    *got = n;
  return max;
}

static void test_crash_log_kill9(void **state) {
  fixture *f = *state;
  uint64_t total_acked = 0;
  for (int round = 0; round < CRASH_ROUNDS; round++) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      crash_child_log(f->topic, p[1]);
      _exit(0);
    }
    close(p[1]);
    size_t got;
    uint64_t acked = read_acks(p[0], 10 + 15 * (size_t)round, &got);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* Acks the child sent before it died count too. */
    uint64_t late = read_acks(p[0], 0, NULL);
    if (late > acked)
      acked = late;
    close(p[0]);
    assert_true(acked > total_acked);

    rv_qlog_opts o = {.segment_bytes = CRASH_SEGMENT_BYTES, .manual_sync = true, .log = f->log};
    rv_qlog *q;
    assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
    rv_qlog_stats st;
    rv_qlog_stats_get(q, &st);
    print_message("crash %d: %zu acks read before kill, acked up to %llu, recovered %llu, "
                  "truncated %llu bytes\n",
                  round + 1, got, (unsigned long long)acked,
                  (unsigned long long)(st.next_seq - 1), (unsigned long long)st.truncated_bytes);
    assert_true(st.next_seq - 1 >= acked);
    assert_int_equal(st.lost_seqs, 0);
    /* Everything, acknowledged or not, that survived is intact; nothing acked is missing. */
    check_range(q, 1, st.next_seq - 1);
    rv_qlog_close(q);
    total_acked = acked;
  }
}

#define JCRASH_MESSAGES 20000
#define JCRASH_REPORT_EVERY 40

/* Op i touches seq perm(i) exactly once: a DEFER for every 4th, a FIN otherwise. */
static uint64_t jop_seq(uint64_t i) { return (i * 7919) % JCRASH_MESSAGES + 1; }
static bool jop_is_defer(uint64_t i) { return i % 4 == 1; }
static int64_t jop_due(uint64_t i) { return INT64_C(1700000000000000000) + (int64_t)i; }
static uint16_t jop_attempts(uint64_t i) { return (uint16_t)(i % 100 + 1); }

static void crash_child_journal(fixture *f, int fd) {
  rv_qlog *q;
  rv_qlog_opts o = {.no_auto_reclaim = true};
  if (rv_qlog_open(&q, f->topic, &o) != RV_OK)
    _exit(2);
  if (rv_qlog_next_seq(q) == 1) {
    static uint8_t body[16];
    rv_qlog_entry e[500];
    for (int i = 0; i < 500; i++)
      e[i] = (rv_qlog_entry){.body_len = sizeof body, .body = body};
    for (int i = 0; i < JCRASH_MESSAGES / 500; i++)
      if (rv_qlog_append(q, e, 500, NULL) != RV_OK)
        _exit(3);
    if (rv_qlog_wait_durable(q, JCRASH_MESSAGES, NULL) != RV_OK)
      _exit(4);
  }
  rv_qjournal *j;
  rv_qjournal_opts jo = {.start_seq = 1, .checkpoint_bytes = 16u << 10};
  if (rv_qjournal_open(&j, q, f->chan, &jo) != RV_OK)
    _exit(5);
  /* Ops are idempotent, so every round replays them from the start. */
  for (uint64_t i = 0;; i++) {
    if (i == JCRASH_MESSAGES) {
      for (;;)
        rv_sleep(NULL, RV_NS_PER_S);
    }
    uint64_t lsn;
    int rc = jop_is_defer(i) ? rv_qjournal_defer(j, jop_seq(i), jop_due(i), jop_attempts(i), &lsn)
                             : rv_qjournal_fin(j, jop_seq(i), &lsn);
    if (rc != RV_OK)
      _exit(6);
    if ((i + 1) % JCRASH_REPORT_EVERY == 0) {
      if (rv_qjournal_wait_durable(j, lsn, NULL) != RV_OK)
        _exit(7);
      uint64_t done = i + 1;
      if (write(fd, &done, sizeof done) != (ssize_t)sizeof done)
        _exit(8);
    }
  }
}

static void test_crash_journal_kill9(void **state) {
  fixture *f = *state;
  uint64_t prev_ops = 0;
  for (int round = 0; round < CRASH_ROUNDS; round++) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      crash_child_journal(f, p[1]);
      _exit(0);
    }
    close(p[1]);
    /* Kill once the child is well into ops it had not done in earlier rounds. */
    uint64_t target = prev_ops + JCRASH_REPORT_EVERY * (3 + (uint64_t)round), durable_ops = 0, v;
    if (target > JCRASH_MESSAGES)
      target = JCRASH_MESSAGES;
    while (durable_ops < target && read(p[0], &v, sizeof v) == (ssize_t)sizeof v)
      durable_ops = v > durable_ops ? v : durable_ops;
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    uint64_t late = read_acks(p[0], 0, NULL);
    if (late > durable_ops)
      durable_ops = late;
    close(p[0]);
    assert_true(durable_ops > 0);

    rv_qlog_opts o = {.manual_sync = true, .no_auto_reclaim = true, .log = f->log};
    rv_qlog *q;
    assert_int_equal(rv_qlog_open(&q, f->topic, &o), RV_OK);
    assert_int_equal(rv_qlog_next_seq(q), JCRASH_MESSAGES + 1);
    rv_qjournal *j;
    assert_int_equal(rv_qjournal_open(&j, q, f->chan, NULL), RV_OK);
    rv_qjournal_stats js;
    rv_qjournal_stats_get(j, &js);
    print_message("journal crash %d: %llu ops durable before kill; recovered floor %llu, "
                  "%llu runs of finished seqs, %llu deferred\n",
                  round + 1, (unsigned long long)durable_ops, (unsigned long long)js.floor,
                  (unsigned long long)js.finished_runs, (unsigned long long)js.deferred);
    /* Every durable FIN stays finished; every durable DEFER keeps its due time and attempts. */
    for (uint64_t i = 0; i < durable_ops; i++) {
      uint64_t s = jop_seq(i);
      if (jop_is_defer(i)) {
        rv_qjournal_deferred d;
        assert_true(rv_qjournal_deferred_get(j, s, &d));
        assert_int_equal(d.due_ns, jop_due(i));
        assert_int_equal(d.attempts, jop_attempts(i));
        assert_false(rv_qjournal_is_finished(j, s));
      } else {
        assert_true(rv_qjournal_is_finished(j, s));
      }
    }
    /* And nothing was finished or deferred that no op asked for. */
    for (uint64_t i = 0; i < JCRASH_MESSAGES; i++) {
      uint64_t s = jop_seq(i);
      if (jop_is_defer(i))
        assert_false(rv_qjournal_is_finished(j, s));
      else
        assert_false(rv_qjournal_deferred_get(j, s, NULL));
    }
    rv_qjournal_close(j);
    rv_qlog_close(q);
    prev_ops = durable_ops;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c_vectors),
      cmocka_unit_test_setup_teardown(test_roundtrip_across_rolls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_none, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checksum_detects_flipped_byte, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_tail_truncated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_journal_recovery, setup, teardown),
      cmocka_unit_test_setup_teardown(test_journal_skip_range, setup, teardown),
      cmocka_unit_test_setup_teardown(test_journal_checkpoints, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reclaim_exact_segments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reclaim_by_channels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_log_kill9, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_journal_kill9, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
