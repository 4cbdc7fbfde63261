/*
 * qlog: a topic's append-only message log, its group commit, its recovery.
 *
 * ON DISK
 *
 * A topic is a directory.  Its messages live in segment files named by the
 * sequence number of their first record, 20 digits, so that names sort:
 *
 *     orders/00000000000000000001.seg
 *     orders/00000000000000262145.seg
 *     orders/ch.archive/...           (channel journals, storage/qjournal.c)
 *
 * A segment starts with a 32-byte header, then records back to back.  All
 * integers are little-endian.
 *
 *     segment header (RV_QLOG_SEGMENT_HEADER_BYTES = 32)
 *       0  magic "RVQSEG01"   8 bytes
 *       8  version            u32  (1)
 *      12  header bytes       u32  (32)
 *      16  first seq          u64  (equals the file name)
 *      24  reserved           u32  (0)
 *      28  crc32c of bytes 0..27
 *
 *     record (RV_QLOG_RECORD_HEADER_BYTES = 44, then the body)
 *       0  crc32c             u32  of bytes 4..43 and the body
 *       4  body length        u32  (<= RV_QLOG_BODY_MAX_BYTES)
 *       8  seq                u64  dense per topic: 1, 2, 3, ...
 *      16  message id         u64
 *      24  timestamp ns       i64  wall clock
 *      32  defer until ns     i64  wall clock, 0 = not deferred (DPUB)
 *      40  attempts           u16
 *      42  kind               u8   (1 = message)
 *      43  reserved           u8   (0)
 *      44  body
 *
 * Records never span segments.  A segment rolls when the next record would
 * take it past segment_bytes (a record larger than that gets a segment of
 * its own).  Because sequence numbers are dense inside a segment, finding
 * seq needs no search: an in-memory sparse index holds the offset of every
 * RV_QLOG_INDEX_STRIDE-th record, so a read starts at most STRIDE-1 records
 * before its target and walks forward over fixed-size headers.  The index
 * is rebuilt at open by scanning the segments (which verifies every
 * checksum once); it is never written to disk, so it can never disagree
 * with the data.
 *
 * APPENDS AND GROUP COMMIT
 *
 * rv_qlog_append encodes the batch's headers (bodies are not copied) and
 * writes headers and bodies with one pwritev(2) into the page cache, under
 * the log's mutex, and returns the sequence numbers.  It never calls fsync.
 * A sync thread per topic (or the caller, in manual mode) runs "rounds":
 * note the last written seq N and the dirty segments, fdatasync them (and
 * fsync the directory if a segment was created), then publish "durable up to
 * N" by calling on_durable.  Appends that arrive while a round flushes are
 * covered by the next round, so under load one fdatasync acknowledges
 * thousands of messages: that is the group commit, and it needs no timer.
 *
 * SYNC POLICIES AND WHAT A CRASH CAN LOSE
 *
 * RV_QLOG_SYNC_ALWAYS (default): a message may be acknowledged only when
 * durable_seq covers it.  Neither kill -9 nor a power loss can lose an
 * acknowledged message.  A power loss can lose written but unacknowledged
 * messages (their producers got no OK and will retry).
 *
 * RV_QLOG_SYNC_NONE ("fast"): a message may be acknowledged once written.
 * kill -9 loses nothing (the data is in the kernel's page cache, which
 * outlives the process).  A power loss or kernel crash loses what was
 * written after the last completed sync: the sync thread still flushes at
 * least every RV_QLOG_BACKGROUND_SYNC_NS, so at most about one second of
 * messages plus one sync's duration.
 *
 * Either way consumers are shown only acknowledged messages (acked_seq), so
 * a consumer never sees a message that a crash could take back under the
 * chosen policy.
 *
 * RECOVERY (rv_qlog_open)
 *
 * Every segment is read and every record's checksum verified; the first
 * record that is incomplete, fails its checksum, or carries the wrong seq
 * ends the valid part of its segment.
 *
 *   - In the newest segment that is the torn tail of an interrupted write
 *     (only a power loss or a write error leaves one): the bytes from there on
 *     are copied to NAME.tail-OFFSET beside the segment for forensics, the
 *     segment is truncated, a warning is logged, and appending continues
 *     from the last valid record.  Nothing acknowledged can be in a torn
 *     tail under SYNC_ALWAYS, since acknowledgement waited for the sync.
 *   - In an older segment it is damage (a disk error, a flipped bit): the
 *     segment is left as it is, an error is logged, and the sequence numbers
 *     from the damaged record to the end of that segment are reported lost:
 *     readers get RV_EIO for each and move on.  Framing cannot be trusted
 *     past a bad record, so nothing after it in that segment is served;
 *     later segments are served normally.  A segment whose header is bad is
 *     lost as a whole (renamed NAME.bad if it is the newest).
 *
 * No corrupt record is ever served: reads verify the checksum again.
 *
 * After recovery the log calls syncfs(2) once before serving anything: the
 * previous process may have been killed with records still only in the page
 * cache, and nothing may be shown to consumers (or counted durable) that a
 * power loss could still take away.
 *
 * RECLAMATION
 *
 * A segment is deleted once every channel's floor is past its last seq,
 * that seq is durable and the segment is not the one being written.  The
 * topic knows its channels (journals attach to it), so the sync thread does
 * this after each round with the lowest durable floor; rv_qlog_reclaim lets a
 * caller pass its own floor.  Readers hold a reference to the segment they
 * read, so a deleted segment's descriptor closes when the last one leaves.
 *
 * LOCKING
 *
 * mu guards all mutable state; append writes under it (page-cache writes
 * only); readers and the sync thread do their I/O outside it, holding
 * segment references.  round_mu serialises sync rounds with each other and
 * with journal detachment.  Lock order: round_mu, then a journal's mu, then
 * mu (the sync thread never holds mu while it takes a journal's mu).
 */
#include "storage/qlog.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/crc32c.h"
#include "storage/qlog_internal.h"

#define RV__QSEG_MAGIC "RVQSEG01"
#define RV__QSEG_MAGIC_BYTES 8
#define RV__QSEG_VERSION 1
#define RV__QSEG_SUFFIX ".seg"
#define RV__QREC_KIND_MESSAGE 1
/* Bytes read at a time when scanning segments at open. */
#define RV__QLOG_SCAN_CHUNK_BYTES (1u << 20)
/* Bytes rv_qlog_read reads at a time (on its stack): covers a stride of 200-byte messages. */
#define RV__QLOG_READ_WINDOW_BYTES (8u << 10)
/* Segments unlinked per pass of rv_qlog_reclaim (outside the mutex). */
#define RV__QLOG_RECLAIM_BATCH 64
/* Bytes of a topic name kept for log lines and the thread name. */
#define RV__QLOG_NAME_MAX 64

/* One segment file.  Shared by the list and by readers (refs). */
typedef struct rv__qseg {
  uint64_t first_seq;
  uint64_t next_seq;      /* one past the last valid record */
  uint64_t size_bytes;    /* valid bytes: header and records */
  uint64_t synced_bytes;  /* bytes known fdatasync'ed */
  rv_file *file;
  int refs;               /* the list's and readers'; guarded by the log's mu */
  uint32_t *index;        /* index[i]: offset of record first_seq + i * STRIDE */
  size_t index_len, index_cap;
} rv__qseg;

/* A segment a sync round flushes, and its size when the round began. */
typedef struct rv__qseg_sync {
  rv__qseg *seg;
  uint64_t size_bytes;
} rv__qseg_sync;

struct rv_qlog {
  char *dir;
  char name[RV__QLOG_NAME_MAX];
  rv_qlog_opts opts;
  uint64_t segment_bytes;
  bool dir_open;          /* the topic directory exists (open got that far) */
  bool parent_dirty;      /* the topic directory is new: its parent needs a sync */

  rv_mutex mu;
  rv_mutex round_mu;
  rv_cond wake;           /* the sync thread waits here */
  rv_cond durable_cond;   /* *_wait_durable callers wait here */

  rv__qseg **segs;        /* ascending first_seq; the last is the one written */
  size_t nsegs, segs_cap;
  uint64_t next_seq;
  _Atomic uint64_t durable_seq;
  bool dir_dirty;         /* a segment was created since the last directory fsync */
  int64_t dirty_since_ns; /* first unsynced append; 0 when clean */
  bool sync_requested;    /* someone waits: flush now whatever the policy */
  bool stopping;
  bool sync_idle;         /* the sync thread is waiting on wake */
  int failed;
  rv_thread *thread;

  uint8_t *hbuf;          /* header scratch for a pwritev chunk */
  struct iovec *iov;

  rv_qjournal **journals;
  size_t njournals, journals_cap;
  rv__qjournal_work *jwork; /* per-round scratch, guarded by round_mu */
  size_t jwork_cap;
  rv__qseg_sync *ssync;     /* per-round scratch, guarded by round_mu */
  size_t ssync_cap;

  rv_qlog_stats st;       /* counters; guarded by mu */
  _Atomic uint64_t read_errors;
};

struct rv_qlog_iter {
  rv_qlog *q;
  uint64_t seq;           /* next to return */
  rv__qseg *seg;          /* referenced segment of seq, or NULL */
  bool positioned;        /* off is the offset of seq's record */
  uint64_t off;
  uint8_t *buf;           /* cached bytes [buf_off, buf_off + buf_len) of seg */
  size_t cap, buf_len;
  uint64_t buf_off;
};

/* ---- segments ------------------------------------------------------------------ */

/* Drop a reference; the last one closes the file (it may be unlinked already). */
static void rv__qseg_unref(rv__qseg *s) {
  if (--s->refs > 0)
    return;
  rv_file_close(s->file);
  free(s->index);
  free(s);
}

/* Room for `more` index entries, so that committing a write cannot fail. */
static int rv__qseg_index_reserve(rv__qseg *s, size_t more) {
  if (s->index_len + more <= s->index_cap)
    return RV_OK;
  size_t cap = s->index_cap ? s->index_cap : 64;
  while (cap < s->index_len + more)
    cap *= 2;
  uint32_t *ni = realloc(s->index, cap * sizeof *ni);
  if (!ni)
    return RV_ENOMEM;
  s->index = ni;
  s->index_cap = cap;
  return RV_OK;
}

/* The header names the segment's first seq, so a renamed or misplaced file is caught. */
static void rv__qseg_encode_header(uint8_t h[RV_QLOG_SEGMENT_HEADER_BYTES], uint64_t first_seq) {
  memset(h, 0, RV_QLOG_SEGMENT_HEADER_BYTES);
  memcpy(h, RV__QSEG_MAGIC, RV__QSEG_MAGIC_BYTES);
  rv__put_u32(h + 8, RV__QSEG_VERSION);
  rv__put_u32(h + 12, RV_QLOG_SEGMENT_HEADER_BYTES);
  rv__put_u64(h + 16, first_seq);
  rv__put_u32(h + 28, rv_crc32c(0, h, 28));
}

/* Magic, version, size and checksum, and the first seq the file name promises. */
static bool rv__qseg_header_valid(const uint8_t *h, uint64_t first_seq) {
  return memcmp(h, RV__QSEG_MAGIC, RV__QSEG_MAGIC_BYTES) == 0 &&
         rv__get_u32(h + 8) == RV__QSEG_VERSION &&
         rv__get_u32(h + 12) == RV_QLOG_SEGMENT_HEADER_BYTES && rv__get_u64(h + 16) == first_seq &&
         rv__get_u32(h + 28) == rv_crc32c(0, h, 28);
}

/*
 * Create an empty segment starting at first_seq.  The file's directory
 * entry becomes durable at the next round (dir_dirty), before anything in it
 * is reported durable.
 */
static int rv__qseg_create(rv_qlog *q, uint64_t first_seq, rv__qseg **out) {
  char path[RV__QIO_PATH_MAX];
  rv__qio_path(path, q->dir, first_seq, RV__QSEG_SUFFIX);
  rv__qseg *s = calloc(1, sizeof *s);
  if (!s)
    return RV_ENOMEM;
  int rc = rv_file_open(&s->file, path, RV_FS_RDWR | RV_FS_CREATE | RV_FS_EXCL);
  if (rc != RV_OK) {
    rv_log_error(q->opts.log, "cannot create segment", "topic=%s path=%s err=%s", q->name, path,
                 rv_strerror(rc));
    free(s);
    return RV_EIO;
  }
  uint8_t h[RV_QLOG_SEGMENT_HEADER_BYTES];
  rv__qseg_encode_header(h, first_seq);
  if ((rc = rv_file_pwrite(s->file, h, sizeof h, 0)) != RV_OK) {
    rv_log_error(q->opts.log, "cannot write segment header", "topic=%s path=%s err=%s", q->name,
                 path, rv_strerror(rc));
    rv_file_close(s->file);
    rv_fs_unlink(path);
    free(s);
    return RV_EIO;
  }
  s->first_seq = s->next_seq = first_seq;
  s->size_bytes = RV_QLOG_SEGMENT_HEADER_BYTES;
  s->refs = 1;
  q->dir_dirty = true;
  q->st.segments_created++;
  *out = s;
  return RV_OK;
}

/* Append s to the segment list (ascending first_seq is the caller's business). */
static int rv__qlog_push_seg(rv_qlog *q, rv__qseg *s) {
  if (q->nsegs == q->segs_cap) {
    size_t cap = q->segs_cap ? q->segs_cap * 2 : 8;
    rv__qseg **ns = realloc(q->segs, cap * sizeof *ns);
    if (!ns)
      return RV_ENOMEM;
    q->segs = ns;
    q->segs_cap = cap;
  }
  q->segs[q->nsegs++] = s;
  return RV_OK;
}

/* Index of the segment holding seq (the last one with first_seq <= seq); seq >= segs[0]->first_seq. */
static size_t rv__qlog_find_seg(const rv_qlog *q, uint64_t seq) {
  size_t lo = 0, hi = q->nsegs;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (q->segs[mid]->first_seq <= seq)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* ---- records --------------------------------------------------------------------- */

/* Encode a record header; the checksum covers the header and the body, so neither can rot unseen. */
static void rv__qrec_encode_header(uint8_t *h, uint64_t seq, const rv_qlog_entry *e) {
  rv__put_u32(h + 4, e->body_len);
  rv__put_u64(h + 8, seq);
  rv__put_u64(h + 16, e->id);
  rv__put_u64(h + 24, (uint64_t)e->ts_ns);
  rv__put_u64(h + 32, (uint64_t)e->defer_until_ns);
  rv__put_u16(h + 40, e->attempts);
  h[42] = RV__QREC_KIND_MESSAGE;
  h[43] = 0;
  uint32_t crc = rv_crc32c(0, h + 4, RV_QLOG_RECORD_HEADER_BYTES - 4);
  crc = rv_crc32c(crc, e->body, e->body_len);
  rv__put_u32(h, crc);
}

/*
 * Whether a header is plausible for seq: length in bounds, kind known, the
 * seq we expect.  A plausible header is enough to step over a record; its
 * checksum is checked before the record is served.
 */
static bool rv__qrec_header_ok(const uint8_t *h, uint64_t seq) {
  return rv__get_u32(h + 4) <= RV_QLOG_BODY_MAX_BYTES && rv__get_u64(h + 8) == seq &&
         h[42] == RV__QREC_KIND_MESSAGE && h[43] == 0;
}

/* The checksum over header (after the crc field) and body, computed in two pieces. */
static bool rv__qrec_crc_ok(const uint8_t *h, const uint8_t *body, uint32_t body_len) {
  uint32_t crc = rv_crc32c(0, h + 4, RV_QLOG_RECORD_HEADER_BYTES - 4);
  return rv_crc32c(crc, body, body_len) == rv__get_u32(h);
}

/* Fields out of a verified header; body points wherever the caller keeps it. */
static void rv__qrec_decode(const uint8_t *h, const uint8_t *body, rv_qlog_msg *m) {
  m->body_len = rv__get_u32(h + 4);
  m->seq = rv__get_u64(h + 8);
  m->id = rv__get_u64(h + 16);
  m->ts_ns = (int64_t)rv__get_u64(h + 24);
  m->defer_until_ns = (int64_t)rv__get_u64(h + 32);
  m->attempts = rv__get_u16(h + 40);
  m->body = body;
}

/* ---- buffered reads (scan at open, iterators) ---------------------------------------- */

typedef struct rv__qrbuf {
  uint8_t *p;
  size_t cap, len;
  uint64_t off;   /* file offset of p[0] */
} rv__qrbuf;

/*
 * Make bytes [off, off + need) of file f available in b, reading at least
 * chunk bytes at a time but never past limit (the segment's valid size, so
 * a concurrent append is never half seen).  RV_OK, RV_ERANGE (the range
 * passes limit: a torn record), RV_EIO, RV_ENOMEM.
 */
static int rv__qrbuf_load(rv__qrbuf *b, rv_file *f, uint64_t off, size_t need, uint64_t limit,
                          size_t chunk) {
  if (off + need > limit)
    return RV_ERANGE;
  if (b->len && off >= b->off && off + need <= b->off + b->len)
    return RV_OK;
  size_t want = need > chunk ? need : chunk;
  if (off + want > limit)
    want = (size_t)(limit - off);
  if (want > b->cap) {
    uint8_t *np = realloc(b->p, want);
    if (!np)
      return RV_ENOMEM;
    b->p = np;
    b->cap = want;
  }
  ssize_t n = rv_file_pread(f, b->p, want, off);
  b->off = off;
  b->len = n > 0 ? (size_t)n : 0;
  if (n < 0)
    return RV_EIO;
  return (size_t)n >= need ? RV_OK : RV_ERANGE;
}

/*
 * Load the whole record at off, expected to be seq, into b, and check it
 * (the checksum too when verify).  RV_OK with *rec pointing at it;
 * RV_EINVAL with *why when the bytes there are not that record (torn,
 * corrupt, or past limit); RV_EIO or RV_ENOMEM when reading failed.
 */
static int rv__qrec_load(rv__qrbuf *b, rv_file *f, uint64_t off, uint64_t seq, uint64_t limit,
                         size_t chunk, bool verify, const uint8_t **rec, const char **why) {
  int rc = rv__qrbuf_load(b, f, off, RV_QLOG_RECORD_HEADER_BYTES, limit, chunk);
  if (rc != RV_OK) {
    *why = rc == RV_ERANGE ? "incomplete record header" : "read failed";
    return rc == RV_ERANGE ? RV_EINVAL : rc;
  }
  if (!rv__qrec_header_ok(b->p + (off - b->off), seq)) {
    *why = "bad record header";
    return RV_EINVAL;
  }
  uint32_t len = rv__get_u32(b->p + (off - b->off) + 4);
  rc = rv__qrbuf_load(b, f, off, RV_QLOG_RECORD_HEADER_BYTES + (size_t)len, limit, chunk);
  if (rc != RV_OK) {
    *why = rc == RV_ERANGE ? "incomplete record body" : "read failed";
    return rc == RV_ERANGE ? RV_EINVAL : rc;
  }
  const uint8_t *h = b->p + (off - b->off);
  if (verify && !rv__qrec_crc_ok(h, h + RV_QLOG_RECORD_HEADER_BYTES, len)) {
    *why = "checksum mismatch";
    return RV_EINVAL;
  }
  *rec = h;
  return RV_OK;
}

/* ---- recovery ----------------------------------------------------------------------- */

/* Keep the bytes a truncation removes, so an operator can still look at them. */
static void rv__qlog_save_tail(rv_qlog *q, rv__qseg *s, const char *path, uint64_t off,
                               uint64_t size) {
  char side[RV__QIO_PATH_MAX + 32];
  snprintf(side, sizeof side, "%s.tail-%" PRIu64, path, off);
  rv_file *f;
  if (rv_file_open(&f, side, RV_FS_WRITE | RV_FS_CREATE | RV_FS_TRUNC) != RV_OK)
    return;
  uint8_t buf[64 << 10];
  uint64_t woff = 0;
  while (off < size) {
    size_t want = size - off < sizeof buf ? (size_t)(size - off) : sizeof buf;
    ssize_t n = rv_file_pread(s->file, buf, want, off);
    if (n <= 0 || rv_file_pwrite(f, buf, (size_t)n, woff) != RV_OK)
      break;
    off += (uint64_t)n;
    woff += (uint64_t)n;
  }
  rv_file_close(f);
}

/*
 * Scan one segment: verify its header and every record, build its index,
 * and find where the valid part ends.  is_last: the segment being written,
 * whose bad tail is cut off; an older segment's damage is only reported.
 */
static int rv__qlog_scan_seg(rv_qlog *q, rv__qseg *s, bool is_last) {
  char path[RV__QIO_PATH_MAX];
  rv__qio_path(path, q->dir, s->first_seq, RV__QSEG_SUFFIX);
  uint64_t size;
  if (rv_file_size(s->file, &size) != RV_OK)
    return RV_EIO;
  uint8_t h[RV_QLOG_SEGMENT_HEADER_BYTES];
  ssize_t hn = rv_file_pread(s->file, h, sizeof h, 0);
  if (hn < 0)
    return RV_EIO;
  s->next_seq = s->first_seq;
  if ((size_t)hn < sizeof h || !rv__qseg_header_valid(h, s->first_seq)) {
    if (is_last && size <= RV_QLOG_SEGMENT_HEADER_BYTES) {
      /* Created, then the crash came before its header was complete: redo it. */
      rv__qseg_encode_header(h, s->first_seq);
      if (rv_file_truncate(s->file, 0) != RV_OK || rv_file_pwrite(s->file, h, sizeof h, 0) != RV_OK)
        return RV_EIO;
      rv_log_warn(q->opts.log, "rewrote torn segment header", "topic=%s path=%s", q->name, path);
      s->size_bytes = s->synced_bytes = RV_QLOG_SEGMENT_HEADER_BYTES;
      q->st.truncated_bytes += size;
      return RV_OK;
    }
    rv_log_error(q->opts.log, "segment header is corrupt: its records are lost",
                 "topic=%s path=%s size_bytes=%" PRIu64, q->name, path, size);
    s->size_bytes = 0;
    return RV_EINVAL; /* the caller sets the segment aside */
  }

  rv__qrbuf b = {0};
  uint64_t off = RV_QLOG_SEGMENT_HEADER_BYTES;
  const char *why = NULL;
  while (off < size) {
    const uint8_t *rh;
    int rc = rv__qrec_load(&b, s->file, off, s->next_seq, size, RV__QLOG_SCAN_CHUNK_BYTES, true, &rh,
                           &why);
    if (rc == RV_EINVAL)
      break;
    if (rc != RV_OK) {
      free(b.p);
      return rc;
    }
    uint32_t len = rv__get_u32(rh + 4);
    if ((s->next_seq - s->first_seq) % RV_QLOG_INDEX_STRIDE == 0) {
      if (rv__qseg_index_reserve(s, 1) != RV_OK) {
        free(b.p);
        return RV_ENOMEM;
      }
      s->index[s->index_len++] = (uint32_t)off;
    }
    off += RV_QLOG_RECORD_HEADER_BYTES + len;
    s->next_seq++;
    q->st.recovered_records++;
  }
  free(b.p);
  s->size_bytes = s->synced_bytes = off;
  if (off == size)
    return RV_OK;
  if (is_last) {
    rv__qlog_save_tail(q, s, path, off, size);
    if (rv_file_truncate(s->file, off) != RV_OK)
      return RV_EIO;
    q->st.truncated_bytes += size - off;
    rv_log_warn(q->opts.log, "truncated torn tail of segment",
                "topic=%s path=%s why=%s offset=%" PRIu64 " cut_bytes=%" PRIu64
                " next_seq=%" PRIu64 " saved_as=%s.tail-%" PRIu64,
                q->name, path, why, off, size - off, s->next_seq, path, off);
  } else {
    rv_log_error(q->opts.log, "damaged record in older segment: the rest of it is not served",
                 "topic=%s path=%s why=%s offset=%" PRIu64 " from_seq=%" PRIu64, q->name, path, why,
                 off, s->next_seq);
  }
  return RV_OK;
}

/*
 * Load every segment of the directory, oldest first, and make the newest
 * writable.  Called from open only, before any other thread sees q.
 */
static int rv__qlog_recover(rv_qlog *q, bool *recovered_any) {
  uint64_t *firsts;
  size_t n;
  int rc = rv__qio_list_numbered(q->dir, RV__QSEG_SUFFIX, &firsts, &n);
  if (rc != RV_OK)
    return rc;
  *recovered_any = n > 0;
  for (size_t i = 0; i < n && rc == RV_OK; i++) {
    if (firsts[i] == 0)
      continue; /* seqs start at 1: not one of ours */
    char path[RV__QIO_PATH_MAX];
    rv__qio_path(path, q->dir, firsts[i], RV__QSEG_SUFFIX);
    rv__qseg *s = calloc(1, sizeof *s);
    if (!s) {
      rc = RV_ENOMEM;
      break;
    }
    s->refs = 1;
    s->first_seq = firsts[i];
    int orc = rv_file_open(&s->file, path, RV_FS_RDWR);
    if (orc != RV_OK) {
      rv_log_error(q->opts.log, "cannot open segment", "topic=%s path=%s err=%s", q->name, path,
                   rv_strerror(orc));
      free(s);
      rc = RV_EIO;
      break;
    }
    bool is_last = i + 1 == n;
    int src = rv__qlog_scan_seg(q, s, is_last);
    if (src == RV_EINVAL && is_last) {
      /* The newest segment's header is bad: set it aside, write anew from its first seq. */
      char bad[RV__QIO_PATH_MAX + 8];
      snprintf(bad, sizeof bad, "%s.bad", path);
      (void)rv_fs_rename(path, bad);
      uint64_t first = s->first_seq;
      rv__qseg_unref(s);
      rc = rv__qseg_create(q, first, &s);
      if (rc != RV_OK)
        break;
      src = RV_OK;
    } else if (src == RV_EINVAL) {
      src = RV_OK; /* unreadable older segment: kept, its range reported lost */
    }
    if (src != RV_OK) {
      rv__qseg_unref(s);
      rc = src;
      break;
    }
    if (q->nsegs > 0) {
      rv__qseg *prev = q->segs[q->nsegs - 1];
      if (prev->next_seq > s->first_seq) {
        rv_log_error(q->opts.log, "segments overlap: serving the older one only up to the newer",
                     "topic=%s first_seq=%" PRIu64 " prev_next_seq=%" PRIu64, q->name,
                     s->first_seq, prev->next_seq);
        prev->next_seq = s->first_seq;
      }
    }
    if ((rc = rv__qlog_push_seg(q, s)) != RV_OK)
      rv__qseg_unref(s);
  }
  free(firsts);
  if (rc != RV_OK)
    return rc;
  /* Sequence numbers a segment should hold but cannot serve are lost. */
  for (size_t i = 0; i + 1 < q->nsegs; i++) {
    uint64_t lost = q->segs[i + 1]->first_seq - q->segs[i]->next_seq;
    if (lost) {
      q->st.lost_seqs += lost;
      rv_log_error(q->opts.log, "sequence numbers lost to damage",
                   "topic=%s from_seq=%" PRIu64 " to_seq=%" PRIu64 " count=%" PRIu64, q->name,
                   q->segs[i]->next_seq, q->segs[i + 1]->first_seq - 1, lost);
    }
  }
  if (q->nsegs == 0) {
    rv__qseg *s;
    if ((rc = rv__qseg_create(q, 1, &s)) != RV_OK)
      return rc;
    if ((rc = rv__qlog_push_seg(q, s)) != RV_OK) {
      rv__qseg_unref(s);
      return rc;
    }
  }
  q->next_seq = q->segs[q->nsegs - 1]->next_seq;
  return RV_OK;
}

/* ---- the sync thread ------------------------------------------------------------------- */

/* What producers may be told and consumers shown: depends on the policy. */
static uint64_t rv__qlog_acked_locked(rv_qlog *q) {
  return q->opts.sync == RV_QLOG_SYNC_NONE ? q->next_seq - 1 : atomic_load(&q->durable_seq);
}

/* A failed log has nothing worth syncing: its durable_seq is frozen. */
static bool rv__qlog_log_dirty(const rv_qlog *q) { return !q->failed && q->dirty_since_ns != 0; }

/*
 * When the next round is due (INT64_MIN: now; INT64_MAX: nothing to do).
 * The log is due at once under SYNC_ALWAYS (that is the group commit: the
 * next round starts as soon as the previous one ends), after
 * RV_QLOG_BACKGROUND_SYNC_NS under SYNC_NONE; each journal when its own
 * interval has passed.
 */
static int64_t rv__qlog_next_due_locked(rv_qlog *q) {
  int64_t due = INT64_MAX;
  if (rv__qlog_log_dirty(q)) {
    if (q->opts.sync == RV_QLOG_SYNC_ALWAYS || q->sync_requested)
      return INT64_MIN;
    due = q->dirty_since_ns + RV_QLOG_BACKGROUND_SYNC_NS;
  }
  for (size_t i = 0; i < q->njournals; i++) {
    int64_t d = rv__qjournal_due_ns(q->journals[i]);
    if (d < due)
      due = d;
  }
  return due;
}

/*
 * One round: flush the log and the due journals.  The disk is touched with
 * no mutex held but round_mu, so appends and FINs go on meanwhile; whatever
 * they write is left for the next round.  force: everything dirty, due or
 * not.  Returns RV_OK or RV_EIO (the log failed).
 */
static int rv__qlog_round(rv_qlog *q, bool force) {
  rv_mutex_lock(&q->round_mu);
  int64_t start_ns = rv_now_ns();
  rv_mutex_lock(&q->mu);

  size_t njw = 0;
  if (q->jwork_cap < q->njournals) {
    rv__qjournal_work *nw = realloc(q->jwork, q->njournals * sizeof *nw);
    if (nw) {
      q->jwork = nw;
      q->jwork_cap = q->njournals;
    }
  }
  for (size_t i = 0; i < q->njournals && i < q->jwork_cap; i++) {
    rv_qjournal *j = q->journals[i];
    int64_t d = rv__qjournal_due_ns(j);
    if (d == INT64_MAX || (!force && d > start_ns))
      continue;
    q->jwork[njw++] = (rv__qjournal_work){.j = j};
  }

  /*
   * The log is synced whenever a journal is: so a FIN found durable after a
   * crash always refers to a message that is durable too, whatever the policy.
   */
  bool log_due = rv__qlog_log_dirty(q) &&
                 (force || njw > 0 || q->sync_requested || q->opts.sync == RV_QLOG_SYNC_ALWAYS ||
                  start_ns >= q->dirty_since_ns + RV_QLOG_BACKGROUND_SYNC_NS);
  size_t nss = 0;
  uint64_t target_seq = 0;
  bool sync_dir = false;
  if (log_due) {
    /* Dirty segments are the newest ones (a batch can roll several): walk back. */
    size_t first = q->nsegs;
    while (first > 0 && q->segs[first - 1]->synced_bytes < q->segs[first - 1]->size_bytes)
      first--;
    size_t last = q->nsegs;
    if (last - first > q->ssync_cap) {
      rv__qseg_sync *ns = realloc(q->ssync, (last - first) * sizeof *ns);
      if (ns) {
        q->ssync = ns;
        q->ssync_cap = last - first;
      } else {
        last = first + q->ssync_cap; /* out of memory: the rest waits for the next round */
      }
    }
    for (size_t i = first; i < last; i++) {
      rv__qseg *s = q->segs[i];
      s->refs++;
      q->ssync[nss++] = (rv__qseg_sync){s, s->size_bytes};
    }
    target_seq = last == q->nsegs ? q->next_seq - 1 : q->segs[last - 1]->next_seq - 1;
    sync_dir = q->dir_dirty;
    q->dir_dirty = false;
    if (last == q->nsegs) {
      q->dirty_since_ns = 0;
      q->sync_requested = false;
    } else {
      q->sync_requested = true;
    }
  }
  rv_mutex_unlock(&q->mu);

  for (size_t i = 0; i < njw; i++)
    rv__qjournal_prepare(q->jwork[i].j, &q->jwork[i]);

  int rc = RV_OK;
  uint64_t nlog = 0, ndir = 0, njsync = 0;
  for (size_t i = 0; i < nss && rc == RV_OK; i++) {
    rc = rv_file_sync(q->ssync[i].seg->file);
    nlog++;
  }
  if (rc == RV_OK && sync_dir) {
    rc = rv_fs_sync_dir(q->dir);
    ndir++;
    if (rc == RV_OK && q->parent_dirty) {
      char parent[RV__QIO_PATH_MAX];
      rv__qio_parent(parent, q->dir);
      rc = rv_fs_sync_dir(parent);
      ndir++;
      q->parent_dirty = false; /* only rounds touch it, and round_mu is held */
    }
  }
  int sync_err = rc;
  for (size_t i = 0; i < njw; i++) {
    if (q->jwork[i].file) {
      rv__qjournal_sync(&q->jwork[i]);
      njsync++;
    }
  }

  bool advanced = false;
  uint64_t durable = 0;
  rv_mutex_lock(&q->mu);
  if (log_due && rc == RV_OK) {
    for (size_t i = 0; i < nss; i++)
      if (q->ssync[i].seg->synced_bytes < q->ssync[i].size_bytes)
        q->ssync[i].seg->synced_bytes = q->ssync[i].size_bytes;
    if (target_seq > atomic_load(&q->durable_seq)) {
      atomic_store(&q->durable_seq, target_seq);
      advanced = true;
    }
  } else if (log_due && !q->failed) {
    q->failed = RV_EIO;
    q->dir_dirty = sync_dir || q->dir_dirty;
    rv_log_error(q->opts.log, "fdatasync failed: the log refuses appends until reopened",
                 "topic=%s err=%s durable_seq=%" PRIu64, q->name, rv_strerror(sync_err),
                 atomic_load(&q->durable_seq));
  }
  for (size_t i = 0; i < nss; i++)
    rv__qseg_unref(q->ssync[i].seg);
  for (size_t i = 0; i < njw; i++)
    rv__qjournal_complete(&q->jwork[i]);
  if (nlog || ndir || njsync) {
    int64_t took_ns = rv_now_ns() - start_ns;
    q->st.sync_rounds++;
    q->st.log_syncs += nlog;
    q->st.dir_syncs += ndir;
    q->st.journal_syncs += njsync;
    q->st.sync_ns_total += took_ns;
    if (took_ns > q->st.sync_ns_max)
      q->st.sync_ns_max = took_ns;
  }
  durable = atomic_load(&q->durable_seq);
  rv_cond_broadcast(&q->durable_cond);
  rv_mutex_unlock(&q->mu);
  /* Still under round_mu, so that callbacks see durable_seq in increasing order. */
  if (advanced && q->opts.on_durable)
    q->opts.on_durable(q->opts.on_durable_arg, durable);
  rv_mutex_unlock(&q->round_mu);

  if (!q->opts.no_auto_reclaim) {
    uint64_t floor = rv_qlog_channels_floor(q);
    if (floor)
      rv_qlog_reclaim(q, floor, NULL);
  }
  return rc;
}

/*
 * The sync thread: run a round whenever one is due, sleep on wake until the
 * next deadline otherwise.  Appends wake it only when it sleeps (sync_idle).
 */
static void rv__qlog_sync_main(void *arg) {
  rv_qlog *q = arg;
  rv_mutex_lock(&q->mu);
  while (!q->stopping) {
    int64_t due = rv__qlog_next_due_locked(q);
    if (due == INT64_MIN || due <= rv_now_ns()) {
      rv_mutex_unlock(&q->mu);
      rv__qlog_round(q, false);
      rv_mutex_lock(&q->mu);
      continue;
    }
    q->sync_idle = true;
    rv_cond_wait_until(&q->wake, &q->mu, NULL, due == INT64_MAX ? RV_NO_DEADLINE : due);
    q->sync_idle = false;
  }
  rv_mutex_unlock(&q->mu);
}

/* Called with mu held. */
/* Wake the sync thread if it sleeps; a busy one rechecks before sleeping.  */
static void rv__qlog_kick_locked(rv_qlog *q) {
  if (q->sync_idle)
    rv_cond_signal(&q->wake);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/*
 * Recovery happens here, before the sync thread starts and before anyone
 * else can see q, so it needs no locking.
 */
int rv_qlog_open(rv_qlog **out, const char *dir, const rv_qlog_opts *opts) {
  *out = NULL;
  rv_qlog_opts o = opts ? *opts : (rv_qlog_opts){0};
  if (!dir || strlen(dir) + 32 >= RV__QIO_PATH_MAX ||
      (o.sync != RV_QLOG_SYNC_ALWAYS && o.sync != RV_QLOG_SYNC_NONE))
    return RV_EINVAL;
  uint64_t seg_bytes = o.segment_bytes ? o.segment_bytes : RV_QLOG_SEGMENT_BYTES_DEFAULT;
  if (seg_bytes < RV_QLOG_SEGMENT_BYTES_MIN || seg_bytes > RV_QLOG_SEGMENT_BYTES_MAX)
    return RV_EINVAL;
  rv_qlog *q = calloc(1, sizeof *q);
  if (!q)
    return RV_ENOMEM;
  q->opts = o;
  q->segment_bytes = seg_bytes;
  snprintf(q->name, sizeof q->name, "%s", o.name ? o.name : dir);
  q->opts.name = q->name;
  q->dir = strdup(dir);
  q->hbuf = malloc((size_t)RV_QLOG_WRITEV_RECORDS_MAX * RV_QLOG_RECORD_HEADER_BYTES);
  q->iov = malloc((size_t)RV_QLOG_WRITEV_RECORDS_MAX * 2 * sizeof *q->iov);
  rv_mutex_init(&q->mu, "qlog");
  rv_mutex_init(&q->round_mu, "qlog-round");
  rv_cond_init(&q->wake, "qlog-wake");
  rv_cond_init(&q->durable_cond, "qlog-durable");
  if (!q->dir || !q->hbuf || !q->iov) {
    rv_qlog_close(q);
    return RV_ENOMEM;
  }
  int drc = rv__qio_open_dir(dir, &q->parent_dirty);
  if (drc != RV_OK) {
    rv_log_error(o.log, "cannot open topic directory", "topic=%s dir=%s err=%s", q->name, dir,
                 rv_strerror(drc));
    rv_qlog_close(q);
    return RV_EIO;
  }
  q->dir_open = true;
  bool recovered_any = false;
  int rc = rv__qlog_recover(q, &recovered_any);
  if (rc != RV_OK) {
    rv_qlog_close(q);
    return rc;
  }
  /*
   * What recovery found may sit only in the page cache (the previous process
   * was killed before syncing it): make it durable before anyone is shown it.
   * Which segments hold such data cannot be known, and an fdatasync per
   * segment costs a disk cache flush each even when clean, so one syncfs(2)
   * flushes the whole file system once.
   */
  if (recovered_any) {
    rc = rv_fs_syncfs(q->dir);
    if (rc != RV_OK) {
      rv_log_error(o.log, "cannot sync recovered topic log", "topic=%s err=%s", q->name,
                   rv_strerror(rc));
      rv_qlog_close(q);
      return rc;
    }
    q->st.log_syncs++;
    for (size_t i = 0; i < q->nsegs; i++)
      q->segs[i]->synced_bytes = q->segs[i]->size_bytes;
    q->dir_dirty = false;
    atomic_store(&q->durable_seq, q->next_seq - 1);
    rv_log_info(o.log, "topic log recovered",
                "topic=%s segments=%zu first_seq=%" PRIu64 " next_seq=%" PRIu64
                " truncated_bytes=%" PRIu64 " lost_seqs=%" PRIu64,
                q->name, q->nsegs, q->segs[0]->first_seq, q->next_seq, q->st.truncated_bytes,
                q->st.lost_seqs);
  } else {
    q->dirty_since_ns = rv__dirty_stamp(); /* the new segment's entry and header, synced by the thread */
  }
  if (!o.manual_sync) {
    char tname[RV_THREAD_NAME_MAX];
    snprintf(tname, sizeof tname, "qsync-%s", q->name);
    rc = rv_thread_start(&q->thread, tname, "storage", rv__qlog_sync_main, q);
    if (rc != RV_OK) {
      rv_qlog_close(q);
      return rc;
    }
  }
  *out = q;
  return RV_OK;
}

/* Stop the thread first, so the final forced round is the last word on disk. */
void rv_qlog_close(rv_qlog *q) {
  if (!q)
    return;
  if (q->thread) {
    rv_mutex_lock(&q->mu);
    q->stopping = true;
    rv_cond_signal(&q->wake);
    rv_mutex_unlock(&q->mu);
    rv_thread_join(q->thread);
    q->thread = NULL;
  }
  if (q->dir_open && q->nsegs > 0)
    rv__qlog_round(q, true);
  while (q->njournals > 0)
    rv__qjournal_close_detached(q->journals[q->njournals - 1]);
  for (size_t i = 0; i < q->nsegs; i++)
    rv__qseg_unref(q->segs[i]);
  free(q->segs);
  free(q->journals);
  free(q->jwork);
  free(q->ssync);
  rv_cond_destroy(&q->durable_cond);
  rv_cond_destroy(&q->wake);
  rv_mutex_destroy(&q->round_mu);
  rv_mutex_destroy(&q->mu);
  free(q->hbuf);
  free(q->iov);
  free(q->dir);
  free(q);
}

/* ---- appending -------------------------------------------------------------------------- */

/*
 * Close the segment being written (it stays readable) and start a new one
 * at next_seq.  The old one's unsynced tail is flushed by the next round,
 * which also makes the new file's directory entry durable.
 */
static int rv__qlog_roll_locked(rv_qlog *q) {
  if (q->nsegs >= RV_QLOG_SEGMENTS_MAX)
    return RV_ELIMIT;
  rv__qseg *s;
  int rc = rv__qseg_create(q, q->next_seq, &s);
  if (rc == RV_OK && (rc = rv__qlog_push_seg(q, s)) != RV_OK) {
    char path[RV__QIO_PATH_MAX];
    rv__qio_path(path, q->dir, s->first_seq, RV__QSEG_SUFFIX);
    rv_fs_unlink(path);
    rv__qseg_unref(s);
  }
  return rc;
}

/*
 * A write error leaves the file's tail unknown: cut back what we can and
 * refuse further appends, rather than risk acknowledging over a hole.
 */
static int rv__qlog_fail_write_locked(rv_qlog *q, rv__qseg *s, int err) {
  rv_log_error(q->opts.log, "write failed: the log refuses appends until reopened",
               "topic=%s seq=%" PRIu64 " err=%s", q->name, q->next_seq, rv_strerror(err));
  if (rv_file_truncate(s->file, s->size_bytes) != RV_OK) {
    /* the torn tail is cut at the next open instead */
  }
  q->failed = RV_EIO;
  rv_cond_broadcast(&q->durable_cond);
  return RV_EIO;
}

/*
 * A batch is cut into chunks at segment boundaries and at
 * RV_QLOG_WRITEV_RECORDS_MAX records; each chunk is one pwritev, and the
 * in-memory state (sizes, index, next_seq) moves only after its write
 * succeeded, so a failed write never leaves a seq that points at nothing.
 */
int rv_qlog_append(rv_qlog *q, const rv_qlog_entry *entries, size_t n, uint64_t *first_seq) {
  if (n == 0 || !entries)
    return RV_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (entries[i].body_len > RV_QLOG_BODY_MAX_BYTES || (entries[i].body_len && !entries[i].body))
      return RV_EINVAL;
  rv_mutex_lock(&q->mu);
  if (q->failed) {
    rv_mutex_unlock(&q->mu);
    return q->failed;
  }
  uint64_t first = q->next_seq;
  int rc = RV_OK;
  size_t i = 0;
  while (i < n) {
    rv__qseg *s = q->segs[q->nsegs - 1];
    uint64_t rec0 = RV_QLOG_RECORD_HEADER_BYTES + (uint64_t)entries[i].body_len;
    if (s->size_bytes + rec0 > q->segment_bytes && s->next_seq > s->first_seq) {
      if ((rc = rv__qlog_roll_locked(q)) != RV_OK)
        break;
      s = q->segs[q->nsegs - 1];
    }
    /* A chunk: as many records as fit in this segment and in one pwritev. */
    size_t cnt = 0;
    uint64_t bytes = 0;
    while (i + cnt < n && cnt < RV_QLOG_WRITEV_RECORDS_MAX) {
      uint64_t rec = RV_QLOG_RECORD_HEADER_BYTES + (uint64_t)entries[i + cnt].body_len;
      if (cnt > 0 && s->size_bytes + bytes + rec > q->segment_bytes)
        break;
      bytes += rec;
      cnt++;
    }
    if ((rc = rv__qseg_index_reserve(s, cnt / RV_QLOG_INDEX_STRIDE + 1)) != RV_OK)
      break;
    size_t nidx = 0;
    uint64_t off = s->size_bytes;
    for (size_t k = 0; k < cnt; k++) {
      const rv_qlog_entry *e = &entries[i + k];
      uint64_t seq = q->next_seq + k;
      uint8_t *h = q->hbuf + k * RV_QLOG_RECORD_HEADER_BYTES;
      rv__qrec_encode_header(h, seq, e);
      q->iov[2 * k] = (struct iovec){.iov_base = h, .iov_len = RV_QLOG_RECORD_HEADER_BYTES};
      q->iov[2 * k + 1] = (struct iovec){.iov_base = (void *)e->body, .iov_len = e->body_len};
      if ((seq - s->first_seq) % RV_QLOG_INDEX_STRIDE == 0)
        s->index[s->index_len + nidx++] = (uint32_t)off;
      off += RV_QLOG_RECORD_HEADER_BYTES + e->body_len;
    }
    int wrc = rv_file_pwritev(s->file, q->iov, (int)(2 * cnt), s->size_bytes);
    if (wrc != RV_OK) {
      rc = rv__qlog_fail_write_locked(q, s, wrc);
      break;
    }
    s->index_len += nidx;
    s->size_bytes += bytes;
    s->next_seq += cnt;
    q->next_seq += cnt;
    q->st.write_calls++;
    q->st.bytes_written += bytes;
    q->st.appends += cnt;
    i += cnt;
  }
  if (i > 0) {
    bool was_clean = q->dirty_since_ns == 0;
    if (was_clean)
      q->dirty_since_ns = rv__dirty_stamp();
    /* ALWAYS: flush now.  NONE: the thread may sleep without a deadline; give it one. */
    if (q->opts.sync == RV_QLOG_SYNC_ALWAYS || was_clean)
      rv__qlog_kick_locked(q);
  }
  q->st.append_calls++;
  rv_mutex_unlock(&q->mu);
  if (rc != RV_OK)
    return rc;
  if (first_seq)
    *first_seq = first;
  return RV_OK;
}

uint64_t rv_qlog_next_seq(rv_qlog *q) {
  rv_mutex_lock(&q->mu);
  uint64_t v = q->next_seq;
  rv_mutex_unlock(&q->mu);
  return v;
}

uint64_t rv_qlog_first_seq(rv_qlog *q) {
  rv_mutex_lock(&q->mu);
  uint64_t v = q->segs[0]->first_seq;
  rv_mutex_unlock(&q->mu);
  return v;
}

uint64_t rv_qlog_durable_seq(rv_qlog *q) { return atomic_load(&q->durable_seq); }

uint64_t rv_qlog_acked_seq(rv_qlog *q) {
  rv_mutex_lock(&q->mu);
  uint64_t v = rv__qlog_acked_locked(q);
  rv_mutex_unlock(&q->mu);
  return v;
}

int rv_qlog_sync_now(rv_qlog *q) { return rv__qlog_round(q, true); }

typedef struct rv__qlog_wait_arg {
  rv_qlog *q;
  uint64_t seq;
} rv__qlog_wait_arg;

/* Called with mu held. */
static bool rv__qlog_seq_durable(void *arg, int *err) {
  rv__qlog_wait_arg *a = arg;
  if (atomic_load(&a->q->durable_seq) >= a->seq)
    return true;
  *err = a->q->failed;
  if (!*err)
    a->q->sync_requested = true;
  return *err != 0;
}

int rv_qlog_wait_durable(rv_qlog *q, uint64_t seq, rv_ctx *ctx) {
  rv__qlog_wait_arg a = {q, seq};
  return rv__qlog_wait(q, rv__qlog_seq_durable, &a, ctx);
}

/* ---- reading ------------------------------------------------------------------------------ */

/*
 * Where seq is, under mu: its segment (referenced for the caller), the
 * offset to start walking from and how many records to step over.
 * RV_OK; RV_ENOTFOUND (not acknowledged yet, or reclaimed: *reclaimed says);
 * RV_EIO (seq lost to damage).
 */
static int rv__qlog_locate_locked(rv_qlog *q, uint64_t seq, rv__qseg **seg, uint64_t *off,
                                  uint64_t *skip, uint64_t *limit, bool *reclaimed) {
  *reclaimed = seq < q->segs[0]->first_seq;
  if (*reclaimed || seq == 0 || seq > rv__qlog_acked_locked(q))
    return RV_ENOTFOUND;
  rv__qseg *s = q->segs[rv__qlog_find_seg(q, seq)];
  if (seq >= s->next_seq)
    return RV_EIO;
  uint64_t rel = seq - s->first_seq;
  *off = s->index[rel / RV_QLOG_INDEX_STRIDE];
  *skip = rel % RV_QLOG_INDEX_STRIDE;
  *limit = s->size_bytes;
  s->refs++;
  *seg = s;
  return RV_OK;
}

/* Readers drop their segment reference under mu (refs is guarded by it). */
static void rv__qlog_unref_seg(rv_qlog *q, rv__qseg *s) {
  rv_mutex_lock(&q->mu);
  rv__qseg_unref(s);
  rv_mutex_unlock(&q->mu);
}

/* A record that cannot be served is logged each time: damage must be loud. */
static void rv__qlog_read_error(rv_qlog *q, uint64_t seq, const char *why) {
  atomic_fetch_add(&q->read_errors, 1);
  rv_log_error(q->opts.log, "record not served", "topic=%s seq=%" PRIu64 " why=%s", q->name, seq,
               why);
}

int rv_qlog_iter_new(rv_qlog *q, uint64_t from_seq, rv_qlog_iter **out) {
  rv_qlog_iter *it = calloc(1, sizeof *it);
  if (!it)
    return RV_ENOMEM;
  it->q = q;
  it->seq = from_seq ? from_seq : 1;
  *out = it;
  return RV_OK;
}

void rv_qlog_iter_seek(rv_qlog_iter *it, uint64_t seq) {
  it->seq = seq ? seq : 1;
  it->positioned = false;
}

uint64_t rv_qlog_iter_seq(const rv_qlog_iter *it) { return it->seq; }

void rv_qlog_iter_free(rv_qlog_iter *it) {
  if (!it)
    return;
  if (it->seg)
    rv__qlog_unref_seg(it->q, it->seg);
  free(it->buf);
  free(it);
}

/*
 * Sequential reads: after the first record the iterator knows the next
 * record's offset, so it never consults the index again within a segment,
 * and it reads RV_QLOG_READ_CHUNK_BYTES at a time, so a stream of small
 * messages costs one pread per chunk.
 */
int rv_qlog_iter_next(rv_qlog_iter *it, rv_qlog_msg *out) {
  rv_qlog *q = it->q;
  rv_mutex_lock(&q->mu);
  if (it->seq < q->segs[0]->first_seq) {
    it->seq = q->segs[0]->first_seq;
    it->positioned = false;
  }
  if (it->seq > rv__qlog_acked_locked(q)) {
    rv_mutex_unlock(&q->mu);
    return RV_ENOTFOUND;
  }
  rv__qseg *s = q->segs[rv__qlog_find_seg(q, it->seq)];
  if (s != it->seg) {
    if (it->seg)
      rv__qseg_unref(it->seg);
    s->refs++;
    it->seg = s;
    it->positioned = false;
    it->buf_len = 0;
  }
  uint64_t seq = it->seq;
  if (seq >= s->next_seq) {
    rv_mutex_unlock(&q->mu);
    out->seq = seq;
    it->seq++;
    atomic_fetch_add(&q->read_errors, 1);
    return RV_EIO;
  }
  uint64_t limit = s->size_bytes, off, skip = 0;
  if (it->positioned) {
    off = it->off;
  } else {
    uint64_t rel = seq - s->first_seq;
    off = s->index[rel / RV_QLOG_INDEX_STRIDE];
    skip = rel % RV_QLOG_INDEX_STRIDE;
  }
  rv_mutex_unlock(&q->mu);

  rv__qrbuf b = {.p = it->buf, .cap = it->cap, .len = it->buf_len, .off = it->buf_off};
  const char *why = NULL;
  for (uint64_t at = seq - skip;; at++) {
    const uint8_t *h;
    if (rv__qrec_load(&b, s->file, off, at, limit, RV_QLOG_READ_CHUNK_BYTES, at == seq, &h, &why) !=
        RV_OK)
      break;
    uint32_t len = rv__get_u32(h + 4);
    if (at < seq) {
      off += RV_QLOG_RECORD_HEADER_BYTES + len;
      continue;
    }
    rv__qrec_decode(h, h + RV_QLOG_RECORD_HEADER_BYTES, out);
    it->off = off + RV_QLOG_RECORD_HEADER_BYTES + len;
    why = NULL;
    break;
  }
  it->buf = b.p;
  it->cap = b.cap;
  it->buf_len = b.len;
  it->buf_off = b.off;
  it->seq++;
  if (why) {
    /* Step over it; the next call re-walks from the index to find seq + 1. */
    it->positioned = false;
    out->seq = seq;
    rv__qlog_read_error(q, seq, why);
    return RV_EIO;
  }
  it->positioned = true;
  return RV_OK;
}

/*
 * Random access without an iterator's buffer: read a window from the index
 * point (one pread covers the STRIDE-1 records before seq when messages are
 * small), walk the headers in it, and copy the body out, or read it straight
 * into the caller's buffer when it lies past the window.
 */
int rv_qlog_read(rv_qlog *q, uint64_t seq, rv_qlog_msg *out, void *buf, size_t cap) {
  rv__qseg *s;
  uint64_t off, skip, limit;
  bool reclaimed;
  rv_mutex_lock(&q->mu);
  int rc = rv__qlog_locate_locked(q, seq, &s, &off, &skip, &limit, &reclaimed);
  rv_mutex_unlock(&q->mu);
  if (rc == RV_EIO)
    atomic_fetch_add(&q->read_errors, 1);
  if (rc != RV_OK)
    return rc;
  uint8_t win[RV__QLOG_READ_WINDOW_BYTES];
  uint64_t win_off = 0;
  size_t win_len = 0;
  const char *why = NULL;
  for (uint64_t at = seq - skip;; at++) {
    if (off < win_off || off + RV_QLOG_RECORD_HEADER_BYTES > win_off + win_len) {
      size_t want = limit - off < sizeof win ? (size_t)(limit - off) : sizeof win;
      ssize_t n = want >= RV_QLOG_RECORD_HEADER_BYTES ? rv_file_pread(s->file, win, want, off) : 0;
      win_off = off;
      win_len = n > 0 ? (size_t)n : 0;
      if (win_len < RV_QLOG_RECORD_HEADER_BYTES) {
        why = "record past the valid end";
        break;
      }
    }
    const uint8_t *h = win + (off - win_off);
    if (!rv__qrec_header_ok(h, at)) {
      why = "bad record header";
      break;
    }
    uint32_t len = rv__get_u32(h + 4);
    if (at < seq) {
      off += RV_QLOG_RECORD_HEADER_BYTES + len;
      continue;
    }
    uint8_t hdr[RV_QLOG_RECORD_HEADER_BYTES];
    memcpy(hdr, h, sizeof hdr);
    rv__qrec_decode(hdr, buf, out);
    if (len > cap) {
      rc = RV_ERANGE;
      break;
    }
    uint64_t body_off = off + RV_QLOG_RECORD_HEADER_BYTES;
    if (body_off + len > limit) {
      why = "record past the valid end";
      break;
    }
    if (body_off + len <= win_off + win_len)
      memcpy(buf, win + (body_off - win_off), len);
    else if (rv_file_pread(s->file, buf, len, body_off) != (ssize_t)len) {
      why = "record past the valid end";
      break;
    }
    if (!rv__qrec_crc_ok(hdr, buf, len))
      why = "checksum mismatch";
    break;
  }
  rv__qlog_unref_seg(q, s);
  if (why) {
    rv__qlog_read_error(q, seq, why);
    return RV_EIO;
  }
  return rc;
}

/* ---- reclamation, stats ------------------------------------------------------------------ */

/*
 * Segments leave the list under mu and are unlinked outside it; a reader
 * still holding one keeps reading it until it lets go.  A deleted segment
 * that reappears after a power loss is harmless: it is below every floor.
 */
int rv_qlog_reclaim(rv_qlog *q, uint64_t min_floor, size_t *deleted) {
  rv__qseg *gone[RV__QLOG_RECLAIM_BATCH];
  size_t ngone = 0, total = 0;
again:
  ngone = 0;
  rv_mutex_lock(&q->mu);
  uint64_t durable = atomic_load(&q->durable_seq);
  /* segs[i] holds seqs below segs[i + 1]->first_seq; the newest is never deleted. */
  while (q->nsegs - ngone > 1 && ngone < RV__QLOG_RECLAIM_BATCH) {
    uint64_t end = q->segs[ngone + 1]->first_seq; /* one past the segment's last seq */
    if (end > min_floor || end - 1 > durable)
      break;
    gone[ngone] = q->segs[ngone];
    ngone++;
  }
  if (ngone) {
    memmove(q->segs, q->segs + ngone, (q->nsegs - ngone) * sizeof *q->segs);
    q->nsegs -= ngone;
    q->st.segments_deleted += ngone;
  }
  rv_mutex_unlock(&q->mu);
  for (size_t i = 0; i < ngone; i++) {
    char path[RV__QIO_PATH_MAX];
    rv__qio_path(path, q->dir, gone[i]->first_seq, RV__QSEG_SUFFIX);
    int urc = rv_fs_unlink(path);
    if (urc != RV_OK)
      rv_log_warn(q->opts.log, "cannot delete reclaimed segment", "topic=%s path=%s err=%s",
                  q->name, path, rv_strerror(urc));
    rv__qlog_unref_seg(q, gone[i]);
  }
  total += ngone;
  if (ngone == RV__QLOG_RECLAIM_BATCH)
    goto again;
  if (deleted)
    *deleted = total;
  return RV_OK;
}

uint64_t rv_qlog_channels_floor(rv_qlog *q) {
  rv_mutex_lock(&q->mu);
  uint64_t floor = 0;
  for (size_t i = 0; i < q->njournals; i++) {
    uint64_t f = rv_qjournal_durable_floor(q->journals[i]);
    if (i == 0 || f < floor)
      floor = f;
  }
  rv_mutex_unlock(&q->mu);
  return floor;
}

void rv_qlog_stats_get(rv_qlog *q, rv_qlog_stats *out) {
  rv_mutex_lock(&q->mu);
  *out = q->st;
  out->first_seq = q->segs[0]->first_seq;
  out->next_seq = q->next_seq;
  out->durable_seq = atomic_load(&q->durable_seq);
  out->segments = q->nsegs;
  out->disk_bytes = 0;
  for (size_t i = 0; i < q->nsegs; i++)
    out->disk_bytes += q->segs[i]->size_bytes;
  out->read_errors = atomic_load(&q->read_errors);
  out->failed = q->failed;
  rv_mutex_unlock(&q->mu);
}

const char *rv_qlog_dir(const rv_qlog *q) { return q->dir; }

/* ---- the journal's side of the sync machinery --------------------------------------------- */

rv_log *rv__qlog_logger(rv_qlog *q) { return q->opts.log; }
const char *rv__qlog_name(rv_qlog *q) { return q->name; }
void rv__qlog_round_lock(rv_qlog *q) { rv_mutex_lock(&q->round_mu); }
void rv__qlog_round_unlock(rv_qlog *q) { rv_mutex_unlock(&q->round_mu); }

int rv__qlog_attach(rv_qlog *q, rv_qjournal *j) {
  rv_mutex_lock(&q->mu);
  int rc = RV_OK;
  if (q->njournals >= RV_QLOG_JOURNALS_MAX) {
    rc = RV_ELIMIT;
  } else if (q->njournals == q->journals_cap) {
    size_t cap = q->journals_cap ? q->journals_cap * 2 : 4;
    rv_qjournal **nj = realloc(q->journals, cap * sizeof *nj);
    if (!nj)
      rc = RV_ENOMEM;
    else {
      q->journals = nj;
      q->journals_cap = cap;
    }
  }
  if (rc == RV_OK) {
    q->journals[q->njournals++] = j;
    rv__qlog_kick_locked(q);
  }
  rv_mutex_unlock(&q->mu);
  return rc;
}

void rv__qlog_detach(rv_qlog *q, rv_qjournal *j) {
  rv_mutex_lock(&q->mu);
  for (size_t i = 0; i < q->njournals; i++) {
    if (q->journals[i] == j) {
      q->journals[i] = q->journals[--q->njournals];
      break;
    }
  }
  rv_mutex_unlock(&q->mu);
}

void rv__qlog_kick(rv_qlog *q) {
  rv_mutex_lock(&q->mu);
  rv__qlog_kick_locked(q);
  rv_mutex_unlock(&q->mu);
}

void rv__qlog_notify_durable(rv_qlog *q) {
  rv_mutex_lock(&q->mu);
  rv_cond_broadcast(&q->durable_cond);
  rv_mutex_unlock(&q->mu);
}

/* One wait loop for the log's and the journals' durability, woken by each round's broadcast. */
int rv__qlog_wait(rv_qlog *q, bool (*done)(void *arg, int *err), void *arg, rv_ctx *ctx) {
  int err = 0;
  rv_mutex_lock(&q->mu);
  while (!done(arg, &err)) {
    if (q->opts.manual_sync || q->stopping) {
      rv_mutex_unlock(&q->mu);
      rv__qlog_round(q, true);
      rv_mutex_lock(&q->mu);
      continue;
    }
    rv__qlog_kick_locked(q);
    int rc = rv_cond_wait(&q->durable_cond, &q->mu, ctx);
    if (rc != RV_OK && rc != RV_ETIMEDOUT) {
      err = rc;
      break;
    }
  }
  rv_mutex_unlock(&q->mu);
  return err;
}
