/*
 * qjournal: a channel's FINs and DEFERs, journaled so that a restart gets
 * back the channel's floor, finished set and deferred set.
 *
 * ON DISK
 *
 * A channel is a directory of journal files named by a generation number
 * (20 digits, ".qj").  Normally there is one; two exist for the moment
 * between writing a new checkpoint and deleting the file it supersedes.
 *
 *     file header (16 bytes): magic "RVQJRN01", version u32 (1), crc32c u32 of bytes 0..11
 *     record:                 crc32c u32 of bytes 4.., payload length u32, payload
 *     payloads (first byte is the type, integers little-endian):
 *       FIN         1  seq u64                                           (9 bytes)
 *       DEFER       2  seq u64, due_ns i64 (wall clock; 0 = undefer), attempts u16 (19 bytes)
 *       CHECKPOINT  3  lsn u64, floor u64, nruns u32, ndeferred u32,
 *                      nruns x (lo u64, hi u64), ndeferred x (seq u64, due_ns i64, attempts u16)
 *
 * Every file begins with a CHECKPOINT holding the channel's whole state as
 * of LSN `lsn`; each later record is the next LSN.  When a file grows past
 * checkpoint_bytes, the sync thread writes the current state as a CHECKPOINT
 * into a new file (generation + 1), makes it and its directory entry
 * durable, then deletes the older files.  So the journal's size is bounded
 * by checkpoint_bytes plus one checkpoint, however long the channel lives.
 *
 * RECOVERY
 *
 * The newest file whose header and CHECKPOINT are valid wins: its state is
 * loaded and its records replayed up to the first one that is incomplete or
 * fails its checksum, where the file is truncated (with a log line).  Newer
 * files without a valid checkpoint are torn creations and are deleted;
 * older files are superseded and deleted.  If no file is usable at all, the
 * channel starts again at the topic's first stored seq: everything is
 * redelivered rather than anything skipped (at-least-once).
 *
 * WHAT A CRASH CAN LOSE: the records not yet synced, i.e. the FINs and
 * DEFERs of at most the last RV_QJOURNAL_SYNC_INTERVAL_NS plus one sync
 * (see qjournal.h).  Their messages come back as ready: delivered again.
 */
#include "storage/qjournal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/crc32c.h"
#include "storage/qlog_internal.h"

#define RV__QJ_MAGIC "RVQJRN01"
#define RV__QJ_MAGIC_BYTES 8
#define RV__QJ_VERSION 1
#define RV__QJ_FILE_HEADER_BYTES 16
#define RV__QJ_SUFFIX ".qj"
#define RV__QJ_REC_HEADER_BYTES 8
#define RV__QJ_FIN 1
#define RV__QJ_DEFER 2
#define RV__QJ_CHECKPOINT 3
#define RV__QJ_SKIP 4
#define RV__QJ_SKIP_PAYLOAD_BYTES 17
#define RV__QJ_FIN_PAYLOAD_BYTES 9
#define RV__QJ_DEFER_PAYLOAD_BYTES 19
#define RV__QJ_CKPT_FIXED_BYTES 25
#define RV__QJ_CKPT_RUN_BYTES 16
#define RV__QJ_CKPT_DEFERRED_BYTES 18
/* Largest FIN/DEFER record: what the buffer must always have room for. */
#define RV__QJ_SMALL_RECORD_MAX_BYTES (RV__QJ_REC_HEADER_BYTES + RV__QJ_DEFER_PAYLOAD_BYTES)
/* Initial capacity of the deferred table (a power of two). */
#define RV__QJ_DTAB_MIN 16

/* A run of finished seqs [lo, hi), all above the floor. */
typedef struct rv__qrun {
  uint64_t lo, hi;
} rv__qrun;

/* A slot of the deferred table; seq 0 marks an empty slot (seqs start at 1). */
typedef struct rv__qdslot {
  uint64_t seq;
  int64_t due_ns;
  uint16_t attempts;
} rv__qdslot;

struct rv_qjournal {
  rv_qlog *q;
  char *dir;
  bool parent_dirty;        /* the journal directory is new: its parent needs a sync (sync rounds only) */
  rv_mutex mu;              /* guards everything not atomic */

  /* the channel's state */
  uint64_t floor;
  rv__qrun *runs;           /* sorted, disjoint, not adjacent; live at [runs_head, runs_head + runs_len) */
  size_t runs_head, runs_len, runs_cap;
  rv__qdslot *dtab;         /* open addressing, linear probing, at most half full */
  size_t dcap, dcount;

  /* the file being appended to */
  rv_file *file;
  uint64_t gen;
  uint64_t file_bytes;
  uint8_t *buf;             /* records not yet written */
  size_t buf_len;
  uint64_t lsn;             /* LSN of the last record */
  uint64_t checkpoint_bytes;
  bool force_checkpoint;    /* state changed outside records (recovery clamp) */
  bool need_dir_sync;       /* a file was created since the last directory fsync */
  uint64_t unlink_below;    /* superseded generations to delete after the next sync */

  _Atomic uint64_t durable_lsn;
  _Atomic uint64_t durable_floor;
  _Atomic int64_t dirty_since_ns; /* first unsynced record; 0: clean */
  _Atomic bool sync_requested;
  _Atomic int failed;

  uint64_t fins, defers, checkpoints, recovered_records, truncated_bytes;
};

/* ---- the finished set: runs above the floor ---------------------------------------- */

/* Runs live in a window of the array, so that popping the first is O(1). */
static rv__qrun *rv__qj_run(rv_qjournal *j, size_t i) { return &j->runs[j->runs_head + i]; }

/* Index of the first run with lo > seq. */
static size_t rv__qj_runs_upper(rv_qjournal *j, uint64_t seq) {
  size_t lo = 0, hi = j->runs_len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (rv__qj_run(j, mid)->lo <= seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/*
 * Insert a run at position k.  Inserting at the front reuses the room left
 * by floor advances; elsewhere the tail moves up (runs are few: about one per
 * out-of-order gap among the in-flight messages).
 */
static int rv__qj_runs_insert(rv_qjournal *j, size_t k, rv__qrun r) {
  if (j->runs_len >= RV_QJOURNAL_RUNS_MAX)
    return RV_ELIMIT;
  if (k == 0 && j->runs_head > 0) {
    j->runs[--j->runs_head] = r;
    j->runs_len++;
    return RV_OK;
  }
  if (j->runs_head + j->runs_len == j->runs_cap) {
    if (j->runs_head > 0) {
      memmove(j->runs, j->runs + j->runs_head, j->runs_len * sizeof *j->runs);
      j->runs_head = 0;
    } else {
      size_t cap = j->runs_cap ? j->runs_cap * 2 : 16;
      rv__qrun *nr = realloc(j->runs, cap * sizeof *nr);
      if (!nr)
        return RV_ENOMEM;
      j->runs = nr;
      j->runs_cap = cap;
    }
  }
  rv__qrun *base = j->runs + j->runs_head;
  memmove(base + k + 1, base + k, (j->runs_len - k) * sizeof *base);
  base[k] = r;
  j->runs_len++;
  return RV_OK;
}

/* Removing the first run (the floor moved) is the common case: O(1). */
static void rv__qj_runs_remove(rv_qjournal *j, size_t k) {
  if (k == 0) {
    j->runs_head++;
    if (--j->runs_len == 0)
      j->runs_head = 0;
    return;
  }
  rv__qrun *base = j->runs + j->runs_head;
  memmove(base + k, base + k + 1, (j->runs_len - k - 1) * sizeof *base);
  j->runs_len--;
}

/* Below the floor, or inside a run. */
static bool rv__qj_finished(rv_qjournal *j, uint64_t seq) {
  if (seq < j->floor)
    return true;
  size_t k = rv__qj_runs_upper(j, seq);
  return k > 0 && seq < rv__qj_run(j, k - 1)->hi;
}

/* ---- the deferred set: seq -> (due, attempts) --------------------------------------- */

/* Fibonacci hashing: dense seqs spread over the table. */
static size_t rv__qj_dhash(uint64_t seq, size_t cap) {
  uint64_t x = seq * UINT64_C(0x9E3779B97F4A7C15);
  return (size_t)(x ^ (x >> 31)) & (cap - 1);
}

/* Linear probing: the table is at most half full, so probes are short. */
static rv__qdslot *rv__qj_dfind(rv_qjournal *j, uint64_t seq) {
  if (!j->dcap)
    return NULL;
  for (size_t i = rv__qj_dhash(seq, j->dcap);; i = (i + 1) & (j->dcap - 1)) {
    if (j->dtab[i].seq == seq)
      return &j->dtab[i];
    if (j->dtab[i].seq == 0)
      return NULL;
  }
}

/* Place a slot known to be absent (inserts and rehashing). */
static void rv__qj_dinsert_new(rv__qdslot *tab, size_t cap, rv__qdslot v) {
  size_t i = rv__qj_dhash(v.seq, cap);
  while (tab[i].seq)
    i = (i + 1) & (cap - 1);
  tab[i] = v;
}

/* Insert or update; the table doubles before it passes half full. */
static int rv__qj_dput(rv_qjournal *j, uint64_t seq, int64_t due_ns, uint16_t attempts) {
  rv__qdslot *s = rv__qj_dfind(j, seq);
  if (s) {
    s->due_ns = due_ns;
    s->attempts = attempts;
    return RV_OK;
  }
  if (j->dcount >= RV_QJOURNAL_DEFERRED_MAX)
    return RV_ELIMIT;
  if ((j->dcount + 1) * 2 > j->dcap) {
    size_t cap = j->dcap ? j->dcap * 2 : RV__QJ_DTAB_MIN;
    rv__qdslot *nt = calloc(cap, sizeof *nt);
    if (!nt)
      return RV_ENOMEM;
    for (size_t i = 0; i < j->dcap; i++)
      if (j->dtab[i].seq)
        rv__qj_dinsert_new(nt, cap, j->dtab[i]);
    free(j->dtab);
    j->dtab = nt;
    j->dcap = cap;
  }
  rv__qj_dinsert_new(j->dtab, j->dcap, (rv__qdslot){seq, due_ns, attempts});
  j->dcount++;
  return RV_OK;
}

/* Remove with backward shift, so lookups never need tombstones. */
static bool rv__qj_dremove(rv_qjournal *j, uint64_t seq) {
  rv__qdslot *s = rv__qj_dfind(j, seq);
  if (!s)
    return false;
  size_t mask = j->dcap - 1, hole = (size_t)(s - j->dtab);
  j->dtab[hole].seq = 0;
  for (size_t i = (hole + 1) & mask; j->dtab[i].seq; i = (i + 1) & mask) {
    size_t home = rv__qj_dhash(j->dtab[i].seq, j->dcap);
    /* Move it into the hole unless its home lies cyclically in (hole, i]. */
    bool stays = hole < i ? (home > hole && home <= i) : (home > hole || home <= i);
    if (!stays) {
      j->dtab[hole] = j->dtab[i];
      j->dtab[i].seq = 0;
      hole = i;
    }
  }
  j->dcount--;
  return true;
}

/* ---- state transitions (shared by live calls and replay) ----------------------------- */

/* 1: the state changed, 0: nothing to do, <0: an rv_err. */
static int rv__qj_apply_fin(rv_qjournal *j, uint64_t seq) {
  if (seq < j->floor)
    return 0;
  if (seq == j->floor) {
    j->floor++;
    if (j->runs_len && rv__qj_run(j, 0)->lo == j->floor) {
      j->floor = rv__qj_run(j, 0)->hi;
      rv__qj_runs_remove(j, 0);
    }
  } else {
    size_t k = rv__qj_runs_upper(j, seq);
    rv__qrun *prev = k > 0 ? rv__qj_run(j, k - 1) : NULL;
    rv__qrun *next = k < j->runs_len ? rv__qj_run(j, k) : NULL;
    if (prev && seq < prev->hi)
      return 0;
    bool join_prev = prev && prev->hi == seq, join_next = next && next->lo == seq + 1;
    if (join_prev && join_next) {
      prev->hi = next->hi;
      rv__qj_runs_remove(j, k);
    } else if (join_prev) {
      prev->hi = seq + 1;
    } else if (join_next) {
      next->lo = seq;
    } else {
      int rc = rv__qj_runs_insert(j, k, (rv__qrun){seq, seq + 1});
      if (rc != RV_OK)
        return rc;
    }
  }
  rv__qj_dremove(j, seq);
  return 1;
}

/* Every seq in [first, last] is done (a channel emptied).  1: changed, 0: nothing, <0: rv_err. */
static int rv__qj_apply_skip(rv_qjournal *j, uint64_t first, uint64_t last) {
  if (last < j->floor || last < first)
    return 0;
  if (first < j->floor)
    first = j->floor;
  int changed = 0;
  for (uint64_t seq = first; seq <= last; seq++) {
    int rc = rv__qj_apply_fin(j, seq);
    if (rc < 0)
      return rc;
    changed |= rc;
  }
  return changed;
}

/* 1: changed, 0: nothing to do (finished, or the same deferral again), <0: an rv_err. */
static int rv__qj_apply_defer(rv_qjournal *j, uint64_t seq, int64_t due_ns, uint16_t attempts) {
  if (rv__qj_finished(j, seq))
    return 0;
  if (due_ns == 0)
    return rv__qj_dremove(j, seq) ? 1 : 0;
  rv__qdslot *s = rv__qj_dfind(j, seq);
  if (s && s->due_ns == due_ns && s->attempts == attempts)
    return 0;
  int rc = rv__qj_dput(j, seq, due_ns, attempts);
  return rc == RV_OK ? 1 : rc;
}

/* Forget the state (before loading a checkpoint, or starting anew). */
static void rv__qj_state_reset(rv_qjournal *j, uint64_t floor) {
  j->floor = floor;
  j->runs_head = j->runs_len = 0;
  if (j->dtab)
    memset(j->dtab, 0, j->dcap * sizeof *j->dtab);
  j->dcount = 0;
}

/* ---- records ----------------------------------------------------------------------------- */

/* Fill in a record's length and checksum once its payload is written. */
static void rv__qj_seal(uint8_t *rec, uint32_t payload_len) {
  rv__put_u32(rec + 4, payload_len);
  rv__put_u32(rec, rv_crc32c(0, rec + 4, 4 + (size_t)payload_len));
}

/* The whole state as one CHECKPOINT record, in a malloc'd buffer. */
static uint8_t *rv__qj_encode_checkpoint(rv_qjournal *j, size_t *len) {
  size_t payload = RV__QJ_CKPT_FIXED_BYTES + j->runs_len * RV__QJ_CKPT_RUN_BYTES +
                   j->dcount * RV__QJ_CKPT_DEFERRED_BYTES;
  uint8_t *r = malloc(RV__QJ_REC_HEADER_BYTES + payload);
  if (!r)
    return NULL;
  uint8_t *p = r + RV__QJ_REC_HEADER_BYTES;
  *p++ = RV__QJ_CHECKPOINT;
  rv__put_u64(p, j->lsn);
  rv__put_u64(p + 8, j->floor);
  rv__put_u32(p + 16, (uint32_t)j->runs_len);
  rv__put_u32(p + 20, (uint32_t)j->dcount);
  p += 24;
  for (size_t i = 0; i < j->runs_len; i++, p += RV__QJ_CKPT_RUN_BYTES) {
    rv__put_u64(p, rv__qj_run(j, i)->lo);
    rv__put_u64(p + 8, rv__qj_run(j, i)->hi);
  }
  for (size_t i = 0; i < j->dcap; i++) {
    if (!j->dtab[i].seq)
      continue;
    rv__put_u64(p, j->dtab[i].seq);
    rv__put_u64(p + 8, (uint64_t)j->dtab[i].due_ns);
    rv__put_u16(p + 16, j->dtab[i].attempts);
    p += RV__QJ_CKPT_DEFERRED_BYTES;
  }
  rv__qj_seal(r, (uint32_t)payload);
  *len = RV__QJ_REC_HEADER_BYTES + payload;
  return r;
}

/*
 * Load a CHECKPOINT payload into the state.  Runs must be sorted, disjoint
 * and above the floor; anything else means the checksum let garbage through.
 */
static int rv__qj_decode_checkpoint(rv_qjournal *j, const uint8_t *p, uint32_t len) {
  if (len < RV__QJ_CKPT_FIXED_BYTES || p[0] != RV__QJ_CHECKPOINT)
    return RV_EINVAL;
  uint64_t lsn = rv__get_u64(p + 1), floor = rv__get_u64(p + 9);
  uint32_t nruns = rv__get_u32(p + 17), ndef = rv__get_u32(p + 21);
  if (floor == 0 || (uint64_t)len != RV__QJ_CKPT_FIXED_BYTES + (uint64_t)nruns * RV__QJ_CKPT_RUN_BYTES +
                                         (uint64_t)ndef * RV__QJ_CKPT_DEFERRED_BYTES)
    return RV_EINVAL;
  rv__qj_state_reset(j, floor);
  j->lsn = lsn;
  const uint8_t *q = p + RV__QJ_CKPT_FIXED_BYTES;
  uint64_t prev_hi = floor;
  for (uint32_t i = 0; i < nruns; i++, q += RV__QJ_CKPT_RUN_BYTES) {
    rv__qrun r = {rv__get_u64(q), rv__get_u64(q + 8)};
    if (r.lo <= prev_hi || r.hi <= r.lo)
      return RV_EINVAL;
    int rc = rv__qj_runs_insert(j, j->runs_len, r);
    if (rc != RV_OK)
      return rc;
    prev_hi = r.hi;
  }
  for (uint32_t i = 0; i < ndef; i++, q += RV__QJ_CKPT_DEFERRED_BYTES) {
    int rc = rv__qj_dput(j, rv__get_u64(q), (int64_t)rv__get_u64(q + 8), rv__get_u16(q + 16));
    if (rc != RV_OK)
      return rc;
  }
  return RV_OK;
}

/* Parse the record at off: its payload and length, or false if torn or corrupt. */
static bool rv__qj_record_at(const uint8_t *file, uint64_t size, uint64_t off, const uint8_t **payload,
                             uint32_t *len) {
  if (size - off < RV__QJ_REC_HEADER_BYTES)
    return false;
  const uint8_t *r = file + off;
  uint32_t n = rv__get_u32(r + 4);
  if (n == 0 || n > RV_QJOURNAL_RECORD_MAX_BYTES || size - off - RV__QJ_REC_HEADER_BYTES < n)
    return false;
  if (rv_crc32c(0, r + 4, 4 + (size_t)n) != rv__get_u32(r))
    return false;
  *payload = r + RV__QJ_REC_HEADER_BYTES;
  *len = n;
  return true;
}

/* ---- the file ---------------------------------------------------------------------------- */

/* A journal that cannot write stops accepting FINs loudly rather than losing them quietly. */
static void rv__qj_fail(rv_qjournal *j, const char *what, int err) {
  if (atomic_exchange(&j->failed, RV_EIO) == 0)
    rv_log_error(rv__qlog_logger(j->q), "channel journal failed: FINs are no longer journaled",
                 "topic=%s dir=%s what=%s err=%s", rv__qlog_name(j->q), j->dir, what,
                 rv_strerror(err));
}

/* Write the buffered records; under mu. */
static int rv__qj_flush_locked(rv_qjournal *j) {
  if (!j->buf_len)
    return RV_OK;
  int rc = rv_file_pwrite(j->file, j->buf, j->buf_len, j->file_bytes);
  if (rc != RV_OK) {
    rv__qj_fail(j, "write", rc);
    return RV_EIO;
  }
  j->file_bytes += j->buf_len;
  j->buf_len = 0;
  return RV_OK;
}

/*
 * Start generation gen: a new file holding the header and a CHECKPOINT of
 * the current state.  The buffered records are not needed any more (the
 * checkpoint includes them).  The old file is deleted only after the new
 * one and its directory entry are durable (unlink_below, after the sync).
 */
static int rv__qj_start_file_locked(rv_qjournal *j, uint64_t gen) {
  char path[RV__QIO_PATH_MAX];
  rv__qio_path(path, j->dir, gen, RV__QJ_SUFFIX);
  size_t clen;
  uint8_t *ckpt = rv__qj_encode_checkpoint(j, &clen);
  if (!ckpt)
    return RV_ENOMEM;
  rv_file *f = NULL;
  int rc = rv_file_open(&f, path, RV_FS_RDWR | RV_FS_CREATE | RV_FS_TRUNC);
  uint8_t h[RV__QJ_FILE_HEADER_BYTES];
  memcpy(h, RV__QJ_MAGIC, RV__QJ_MAGIC_BYTES);
  rv__put_u32(h + 8, RV__QJ_VERSION);
  rv__put_u32(h + 12, rv_crc32c(0, h, 12));
  if (rc == RV_OK && (rc = rv_file_pwrite(f, h, sizeof h, 0)) == RV_OK)
    rc = rv_file_pwrite(f, ckpt, clen, sizeof h);
  if (rc != RV_OK) {
    rv__qj_fail(j, "create journal file", rc);
    if (f) {
      rv_file_close(f);
      rv_fs_unlink(path);
    }
    free(ckpt);
    return RV_EIO;
  }
  free(ckpt);
  rv_file_close(j->file);
  j->file = f;
  j->unlink_below = gen;
  j->gen = gen;
  j->file_bytes = sizeof h + clen;
  j->buf_len = 0;
  j->need_dir_sync = true;
  j->force_checkpoint = false;
  j->checkpoints++;
  return RV_OK;
}

/* Note that there is something to sync; true if the sync thread should be woken. */
static bool rv__qj_mark_dirty_locked(rv_qjournal *j) {
  if (atomic_load(&j->dirty_since_ns) != 0)
    return false;
  atomic_store(&j->dirty_since_ns, rv__dirty_stamp());
  return true;
}

/* Buffer one small record; under mu.  Writes the buffer first when full. */
static int rv__qj_append_locked(rv_qjournal *j, const uint8_t *rec, size_t len) {
  if (j->buf_len + len > RV_QJOURNAL_BUF_MAX_BYTES && rv__qj_flush_locked(j) != RV_OK)
    return RV_EIO;
  memcpy(j->buf + j->buf_len, rec, len);
  j->buf_len += len;
  j->lsn++;
  return RV_OK;
}

/* ---- the sync machinery's side --------------------------------------------------------- */

/* Lock-free, because the sync thread asks while holding the log's mu. */
int64_t rv__qjournal_due_ns(rv_qjournal *j) {
  if (atomic_load(&j->failed))
    return INT64_MAX;
  if (atomic_load(&j->sync_requested))
    return INT64_MIN;
  int64_t d = atomic_load(&j->dirty_since_ns);
  return d ? d + RV_QJOURNAL_SYNC_INTERVAL_NS : INT64_MAX;
}

/*
 * Everything that must be consistent with the state is done here under the
 * journal's lock: the buffer written, the checkpoint taken, the targets noted.
 */
void rv__qjournal_prepare(rv_qjournal *j, rv__qjournal_work *w) {
  *w = (rv__qjournal_work){.j = j};
  rv_mutex_lock(&j->mu);
  if (!atomic_load(&j->failed)) {
    int rc;
    if (j->force_checkpoint || j->file_bytes + j->buf_len >= j->checkpoint_bytes)
      rc = rv__qj_start_file_locked(j, j->gen + 1);
    else
      rc = rv__qj_flush_locked(j);
    if (rc == RV_OK) {
      w->file = j->file;
      w->sync_dir = j->need_dir_sync;
      w->unlink_below = j->unlink_below;
      w->target_lsn = j->lsn;
      w->target_floor = j->floor;
      j->need_dir_sync = false;
      j->unlink_below = 0;
      atomic_store(&j->dirty_since_ns, 0);
      atomic_store(&j->sync_requested, false);
    }
  }
  rv_mutex_unlock(&j->mu);
}

/* Superseded files go only after the new checkpoint and its directory entry are durable. */
void rv__qjournal_sync(rv__qjournal_work *w) {
  rv_qjournal *j = w->j;
  w->rc = rv_file_sync(w->file);
  if (w->rc == RV_OK && w->sync_dir)
    w->rc = rv_fs_sync_dir(j->dir);
  if (w->rc == RV_OK && w->sync_dir && j->parent_dirty) {
    char parent[RV__QIO_PATH_MAX];
    rv__qio_parent(parent, j->dir);
    w->rc = rv_fs_sync_dir(parent);
    j->parent_dirty = false;
  }
  if (w->rc != RV_OK || !w->unlink_below)
    return;
  uint64_t *gens;
  size_t n;
  if (rv__qio_list_numbered(j->dir, RV__QJ_SUFFIX, &gens, &n) != RV_OK)
    return;
  for (size_t i = 0; i < n && gens[i] < w->unlink_below; i++) {
    char path[RV__QIO_PATH_MAX];
    rv__qio_path(path, j->dir, gens[i], RV__QJ_SUFFIX);
    (void)rv_fs_unlink(path);
  }
  free(gens);
}

/* Durable LSN and floor move together, after the disk said yes. */
void rv__qjournal_complete(rv__qjournal_work *w) {
  rv_qjournal *j = w->j;
  if (!w->file)
    return;
  if (w->rc != RV_OK) {
    rv__qj_fail(j, "fdatasync", w->rc);
    return;
  }
  if (w->target_lsn > atomic_load(&j->durable_lsn))
    atomic_store(&j->durable_lsn, w->target_lsn);
  atomic_store(&j->durable_floor, w->target_floor);
}

void rv__qjournal_close_detached(rv_qjournal *j) { rv_qjournal_close(j); }

/* ---- recovery ---------------------------------------------------------------------------- */

/*
 * Load generation gen: RV_OK (state loaded, file open for appending),
 * RV_EINVAL (no valid header and checkpoint: not usable), or an error.
 */
static int rv__qj_load(rv_qjournal *j, uint64_t gen) {
  char path[RV__QIO_PATH_MAX];
  rv__qio_path(path, j->dir, gen, RV__QJ_SUFFIX);
  rv_file *jf;
  if (rv_file_open(&jf, path, RV_FS_RDWR) != RV_OK)
    return RV_EIO;
  uint64_t size;
  if (rv_file_size(jf, &size) != RV_OK) {
    rv_file_close(jf);
    return RV_EIO;
  }
  if (size > 2 * (uint64_t)RV_QJOURNAL_RECORD_MAX_BYTES) {
    rv_file_close(jf);
    return RV_EINVAL;
  }
  uint8_t *file = malloc(size ? size : 1);
  if (!file) {
    rv_file_close(jf);
    return RV_ENOMEM;
  }
  int rc = RV_EINVAL;
  const uint8_t *payload;
  uint32_t len;
  if (rv_file_pread(jf, file, size, 0) != (ssize_t)size) {
    rc = RV_EIO;
  } else if (size >= RV__QJ_FILE_HEADER_BYTES && !memcmp(file, RV__QJ_MAGIC, RV__QJ_MAGIC_BYTES) &&
             rv__get_u32(file + 8) == RV__QJ_VERSION &&
             rv__get_u32(file + 12) == rv_crc32c(0, file, 12) &&
             rv__qj_record_at(file, size, RV__QJ_FILE_HEADER_BYTES, &payload, &len)) {
    rc = rv__qj_decode_checkpoint(j, payload, len);
  }
  if (rc != RV_OK) {
    free(file);
    rv_file_close(jf);
    return rc;
  }
  uint64_t off = RV__QJ_FILE_HEADER_BYTES + RV__QJ_REC_HEADER_BYTES + len;
  while (off < size && rv__qj_record_at(file, size, off, &payload, &len)) {
    int arc;
    if (payload[0] == RV__QJ_FIN && len == RV__QJ_FIN_PAYLOAD_BYTES)
      arc = rv__qj_apply_fin(j, rv__get_u64(payload + 1));
    else if (payload[0] == RV__QJ_SKIP && len == RV__QJ_SKIP_PAYLOAD_BYTES)
      arc = rv__qj_apply_skip(j, rv__get_u64(payload + 1), rv__get_u64(payload + 9));
    else if (payload[0] == RV__QJ_DEFER && len == RV__QJ_DEFER_PAYLOAD_BYTES)
      arc = rv__qj_apply_defer(j, rv__get_u64(payload + 1), (int64_t)rv__get_u64(payload + 9),
                               rv__get_u16(payload + 17));
    else
      break; /* a valid checksum over an unknown record: treat as the end */
    if (arc < 0) {
      free(file);
      rv_file_close(jf);
      return arc;
    }
    j->lsn++;
    j->recovered_records++;
    off += RV__QJ_REC_HEADER_BYTES + len;
  }
  free(file);
  if (off < size) {
    if (rv_file_truncate(jf, off) != RV_OK) {
      rv_file_close(jf);
      return RV_EIO;
    }
    j->truncated_bytes += size - off;
    rv_log_warn(rv__qlog_logger(j->q), "truncated torn tail of channel journal",
                "topic=%s path=%s offset=%" PRIu64 " cut_bytes=%" PRIu64 " lsn=%" PRIu64,
                rv__qlog_name(j->q), path, off, size - off, j->lsn);
  }
  j->file = jf;
  j->gen = gen;
  j->file_bytes = off;
  return RV_OK;
}

/* Load the newest usable generation, delete the rest; start anew if there is none. */
static int rv__qj_recover(rv_qjournal *j, uint64_t start_seq) {
  uint64_t *gens;
  size_t n;
  int rc = rv__qio_list_numbered(j->dir, RV__QJ_SUFFIX, &gens, &n);
  if (rc != RV_OK)
    return rc;
  size_t chosen = n;
  for (size_t i = n; i-- > 0;) {
    if (gens[i] == 0)
      continue;
    rc = rv__qj_load(j, gens[i]);
    if (rc == RV_OK) {
      chosen = i;
      break;
    }
    if (rc != RV_EINVAL) {
      free(gens);
      return rc;
    }
    char path[RV__QIO_PATH_MAX];
    rv__qio_path(path, j->dir, gens[i], RV__QJ_SUFFIX);
    rv_log_warn(rv__qlog_logger(j->q), "removing channel journal file without a valid checkpoint",
                "topic=%s path=%s", rv__qlog_name(j->q), path);
    (void)rv_fs_unlink(path);
  }
  rc = RV_OK;
  if (chosen < n) {
    for (size_t i = 0; i < chosen; i++) {
      char path[RV__QIO_PATH_MAX];
      rv__qio_path(path, j->dir, gens[i], RV__QJ_SUFFIX);
      (void)rv_fs_unlink(path);
    }
  } else {
    uint64_t floor = start_seq;
    if (n > 0) {
      floor = rv_qlog_first_seq(j->q);
      rv_log_error(rv__qlog_logger(j->q),
                   "channel journal unusable: redelivering every stored message",
                   "topic=%s dir=%s from_seq=%" PRIu64, rv__qlog_name(j->q), j->dir, floor);
    }
    rv__qj_state_reset(j, floor);
    rc = rv__qj_start_file_locked(j, n > 0 ? gens[n - 1] + 1 : 1);
    rv__qj_mark_dirty_locked(j);
  }
  free(gens);
  return rc;
}

/*
 * A journal cannot be ahead of its topic unless the topic lost its unsynced
 * tail in a power loss under SYNC_NONE; those seqs will be reused by new
 * messages, which must not be born finished or deferred.
 */
static void rv__qj_clamp(rv_qjournal *j, uint64_t next_seq) {
  bool changed = false;
  if (j->floor > next_seq) {
    j->floor = next_seq;
    changed = true;
  }
  while (j->runs_len && rv__qj_run(j, j->runs_len - 1)->lo >= next_seq) {
    j->runs_len--;
    changed = true;
  }
  if (j->runs_len && rv__qj_run(j, j->runs_len - 1)->hi > next_seq) {
    rv__qj_run(j, j->runs_len - 1)->hi = next_seq;
    changed = true;
  }
  for (size_t i = 0; i < j->dcap;) {
    if (j->dtab[i].seq >= next_seq && rv__qj_dremove(j, j->dtab[i].seq)) {
      changed = true;
      continue; /* the backward shift may have moved another entry into slot i */
    }
    i++;
  }
  if (changed) {
    rv_log_warn(rv__qlog_logger(j->q), "channel journal was ahead of its topic: clamped",
                "topic=%s dir=%s next_seq=%" PRIu64, rv__qlog_name(j->q), j->dir, next_seq);
    j->force_checkpoint = true;
    rv__qj_mark_dirty_locked(j);
  }
}

/* ---- public API ----------------------------------------------------------------------------- */

/* Release everything; the files stay. */
static void rv__qj_free(rv_qjournal *j) {
  rv_file_close(j->file);
  rv_mutex_destroy(&j->mu);
  free(j->runs);
  free(j->dtab);
  free(j->buf);
  free(j->dir);
  free(j);
}

/* Recover under the journal's lock, then attach: the sync thread sees only a whole journal. */
int rv_qjournal_open(rv_qjournal **out, rv_qlog *q, const char *dir, const rv_qjournal_opts *opts) {
  *out = NULL;
  rv_qjournal_opts o = opts ? *opts : (rv_qjournal_opts){0};
  uint64_t ckpt = o.checkpoint_bytes ? o.checkpoint_bytes : RV_QJOURNAL_CHECKPOINT_BYTES_DEFAULT;
  if (!q || !dir || strlen(dir) + 32 >= RV__QIO_PATH_MAX || ckpt < RV_QJOURNAL_CHECKPOINT_BYTES_MIN)
    return RV_EINVAL;
  rv_qjournal *j = calloc(1, sizeof *j);
  if (!j)
    return RV_ENOMEM;
  j->q = q;
  j->checkpoint_bytes = ckpt;
  rv_mutex_init(&j->mu, "qjournal");
  j->dir = strdup(dir);
  j->buf = malloc(RV_QJOURNAL_BUF_MAX_BYTES);
  if (!j->dir || !j->buf) {
    rv__qj_free(j);
    return RV_ENOMEM;
  }
  int drc = rv__qio_open_dir(dir, &j->parent_dirty);
  if (drc != RV_OK) {
    rv_log_error(rv__qlog_logger(q), "cannot open channel journal directory",
                 "topic=%s dir=%s err=%s", rv__qlog_name(q), dir, rv_strerror(drc));
    rv__qj_free(j);
    return RV_EIO;
  }
  uint64_t next = rv_qlog_next_seq(q);
  rv_mutex_lock(&j->mu);
  int rc = rv__qj_recover(j, o.start_seq ? o.start_seq : next);
  if (rc == RV_OK)
    rv__qj_clamp(j, next);
  atomic_store(&j->durable_lsn, j->lsn);
  atomic_store(&j->durable_floor, j->floor);
  rv_mutex_unlock(&j->mu);
  if (rc == RV_OK)
    rc = rv__qlog_attach(q, j);
  if (rc != RV_OK) {
    rv__qj_free(j);
    return rc;
  }
  *out = j;
  return RV_OK;
}

/* Flush and sync under the round lock, so no round can hold the journal while it is freed. */
void rv_qjournal_close(rv_qjournal *j) {
  if (!j)
    return;
  rv_qlog *q = j->q;
  rv__qlog_round_lock(q);
  rv__qjournal_work w;
  rv__qjournal_prepare(j, &w);
  if (w.file)
    rv__qjournal_sync(&w);
  rv__qjournal_complete(&w);
  rv__qlog_detach(q, j);
  rv__qlog_round_unlock(q);
  rv__qlog_notify_durable(q);
  rv__qj_free(j);
}

int rv_qjournal_remove(rv_qjournal *j) {
  rv_qlog *q = j->q;
  rv__qlog_round_lock(q);
  rv__qlog_detach(q, j);
  rv__qlog_round_unlock(q);
  uint64_t *gens;
  size_t n;
  int rc = rv__qio_list_numbered(j->dir, RV__QJ_SUFFIX, &gens, &n);
  for (size_t i = 0; rc == RV_OK && i < n; i++) {
    char path[RV__QIO_PATH_MAX];
    rv__qio_path(path, j->dir, gens[i], RV__QJ_SUFFIX);
    (void)rv_fs_unlink(path);
  }
  if (rc == RV_OK) {
    free(gens);
    if (rv_fs_rmdir(j->dir) != RV_OK)
      rc = RV_EIO;
  }
  rv__qj_free(j);
  return rc;
}

/* Wake the sync thread after a record made the journal dirty (no journal lock held). */
static void rv__qj_after_record(rv_qjournal *j, bool wake) {
  if (wake)
    rv__qlog_kick(j->q);
}

/*
 * The state changes at once and the record goes to the buffer: a FIN costs
 * a memcpy, not a write(2).  A no-op FIN writes nothing, so a duplicate FIN
 * from a client cannot grow the journal.
 */
int rv_qjournal_fin(rv_qjournal *j, uint64_t seq, uint64_t *lsn) {
  if (seq == 0)
    return RV_EINVAL;
  bool wake = false;
  rv_mutex_lock(&j->mu);
  int rc = atomic_load(&j->failed);
  if (rc == RV_OK) {
    rc = rv__qj_apply_fin(j, seq);
    if (rc == 1) {
      uint8_t rec[RV__QJ_REC_HEADER_BYTES + RV__QJ_FIN_PAYLOAD_BYTES];
      rec[RV__QJ_REC_HEADER_BYTES] = RV__QJ_FIN;
      rv__put_u64(rec + RV__QJ_REC_HEADER_BYTES + 1, seq);
      rv__qj_seal(rec, RV__QJ_FIN_PAYLOAD_BYTES);
      rc = rv__qj_append_locked(j, rec, sizeof rec);
      if (rc == RV_OK) {
        j->fins++;
        wake = rv__qj_mark_dirty_locked(j);
      }
    }
  }
  if (rc >= 0 && lsn)
    *lsn = j->lsn;
  rv_mutex_unlock(&j->mu);
  rv__qj_after_record(j, wake);
  return rc < 0 ? rc : RV_OK;
}

/*
 * A range finished at once (a channel emptied): one record however long the
 * range, so emptying a large backlog neither bloats the journal nor writes a
 * record per message.
 */
int rv_qjournal_skip(rv_qjournal *j, uint64_t first, uint64_t last, uint64_t *lsn) {
  if (first == 0 || last < first)
    return RV_EINVAL;
  bool wake = false;
  rv_mutex_lock(&j->mu);
  int rc = atomic_load(&j->failed);
  if (rc == RV_OK) {
    rc = rv__qj_apply_skip(j, first, last);
    if (rc == 1) {
      uint8_t rec[RV__QJ_REC_HEADER_BYTES + RV__QJ_SKIP_PAYLOAD_BYTES];
      rec[RV__QJ_REC_HEADER_BYTES] = RV__QJ_SKIP;
      rv__put_u64(rec + RV__QJ_REC_HEADER_BYTES + 1, first);
      rv__put_u64(rec + RV__QJ_REC_HEADER_BYTES + 9, last);
      rv__qj_seal(rec, RV__QJ_SKIP_PAYLOAD_BYTES);
      rc = rv__qj_append_locked(j, rec, sizeof rec);
      if (rc == RV_OK)
        wake = rv__qj_mark_dirty_locked(j);
    }
  }
  if (rc >= 0 && lsn)
    *lsn = j->lsn;
  rv_mutex_unlock(&j->mu);
  rv__qj_after_record(j, wake);
  return rc < 0 ? rc : RV_OK;
}

int rv_qjournal_defer(rv_qjournal *j, uint64_t seq, int64_t due_ns, uint16_t attempts,
                      uint64_t *lsn) {
  if (seq == 0 || due_ns < 0)
    return RV_EINVAL;
  bool wake = false;
  rv_mutex_lock(&j->mu);
  int rc = atomic_load(&j->failed);
  if (rc == RV_OK) {
    rc = rv__qj_apply_defer(j, seq, due_ns, attempts);
    if (rc == 1) {
      uint8_t rec[RV__QJ_REC_HEADER_BYTES + RV__QJ_DEFER_PAYLOAD_BYTES];
      uint8_t *p = rec + RV__QJ_REC_HEADER_BYTES;
      p[0] = RV__QJ_DEFER;
      rv__put_u64(p + 1, seq);
      rv__put_u64(p + 9, (uint64_t)due_ns);
      rv__put_u16(p + 17, attempts);
      rv__qj_seal(rec, RV__QJ_DEFER_PAYLOAD_BYTES);
      rc = rv__qj_append_locked(j, rec, sizeof rec);
      if (rc == RV_OK) {
        j->defers++;
        wake = rv__qj_mark_dirty_locked(j);
      }
    }
  }
  if (rc >= 0 && lsn)
    *lsn = j->lsn;
  rv_mutex_unlock(&j->mu);
  rv__qj_after_record(j, wake);
  return rc < 0 ? rc : RV_OK;
}

uint64_t rv_qjournal_floor(rv_qjournal *j) {
  rv_mutex_lock(&j->mu);
  uint64_t v = j->floor;
  rv_mutex_unlock(&j->mu);
  return v;
}

uint64_t rv_qjournal_durable_floor(rv_qjournal *j) { return atomic_load(&j->durable_floor); }

bool rv_qjournal_is_finished(rv_qjournal *j, uint64_t seq) {
  rv_mutex_lock(&j->mu);
  bool v = rv__qj_finished(j, seq);
  rv_mutex_unlock(&j->mu);
  return v;
}

uint64_t rv_qjournal_next_unfinished(rv_qjournal *j, uint64_t from) {
  rv_mutex_lock(&j->mu);
  if (from < j->floor)
    from = j->floor;
  size_t k = rv__qj_runs_upper(j, from);
  if (k > 0 && from < rv__qj_run(j, k - 1)->hi)
    from = rv__qj_run(j, k - 1)->hi; /* runs are never adjacent: hi is not finished */
  rv_mutex_unlock(&j->mu);
  return from;
}

bool rv_qjournal_deferred_get(rv_qjournal *j, uint64_t seq, rv_qjournal_deferred *out) {
  rv_mutex_lock(&j->mu);
  rv__qdslot *s = seq ? rv__qj_dfind(j, seq) : NULL;
  if (s && out)
    *out = (rv_qjournal_deferred){s->seq, s->due_ns, s->attempts};
  rv_mutex_unlock(&j->mu);
  return s != NULL;
}

size_t rv_qjournal_deferred_count(rv_qjournal *j) {
  rv_mutex_lock(&j->mu);
  size_t v = j->dcount;
  rv_mutex_unlock(&j->mu);
  return v;
}

void rv_qjournal_deferred_each(rv_qjournal *j, void (*fn)(void *arg, const rv_qjournal_deferred *d),
                               void *arg) {
  rv_mutex_lock(&j->mu);
  for (size_t i = 0; i < j->dcap; i++) {
    if (!j->dtab[i].seq)
      continue;
    rv_qjournal_deferred d = {j->dtab[i].seq, j->dtab[i].due_ns, j->dtab[i].attempts};
    fn(arg, &d);
  }
  rv_mutex_unlock(&j->mu);
}

uint64_t rv_qjournal_lsn(rv_qjournal *j) {
  rv_mutex_lock(&j->mu);
  uint64_t v = j->lsn;
  rv_mutex_unlock(&j->mu);
  return v;
}

uint64_t rv_qjournal_durable_lsn(rv_qjournal *j) { return atomic_load(&j->durable_lsn); }

typedef struct rv__qj_wait_arg {
  rv_qjournal *j;
  uint64_t lsn;
} rv__qj_wait_arg;

/* Called under the log's mu by rv__qlog_wait; asks for a sync now rather than at the interval. */
static bool rv__qj_lsn_durable(void *arg, int *err) {
  rv__qj_wait_arg *a = arg;
  if (atomic_load(&a->j->durable_lsn) >= a->lsn)
    return true;
  *err = atomic_load(&a->j->failed);
  if (!*err)
    atomic_store(&a->j->sync_requested, true);
  return *err != 0;
}

int rv_qjournal_wait_durable(rv_qjournal *j, uint64_t lsn, rv_ctx *ctx) {
  rv__qj_wait_arg a = {j, lsn};
  return rv__qlog_wait(j->q, rv__qj_lsn_durable, &a, ctx);
}

void rv_qjournal_stats_get(rv_qjournal *j, rv_qjournal_stats *out) {
  rv_mutex_lock(&j->mu);
  *out = (rv_qjournal_stats){
      .floor = j->floor,
      .durable_floor = atomic_load(&j->durable_floor),
      .lsn = j->lsn,
      .durable_lsn = atomic_load(&j->durable_lsn),
      .finished_runs = j->runs_len,
      .deferred = j->dcount,
      .fins = j->fins,
      .defers = j->defers,
      .checkpoints = j->checkpoints,
      .file_bytes = j->file_bytes + j->buf_len,
      .recovered_records = j->recovered_records,
      .truncated_bytes = j->truncated_bytes,
      .failed = atomic_load(&j->failed),
  };
  rv_mutex_unlock(&j->mu);
}
