/*
 * qlog: the queue's durable storage for one topic.
 *
 *   - the topic log: an append-only, segmented, checksummed log of messages,
 *     each with a dense per-topic sequence number starting at 1;
 *   - group commit: appends return their sequence numbers at once, and a
 *     sync thread reports later, through a callback, up to which sequence
 *     number the log is durable (fdatasync'ed), so the server's event loop
 *     never waits for a disk flush;
 *   - channel journals (storage/qjournal.h), attached to their topic's log
 *     and synced by the same thread;
 *   - recovery after a crash (torn tails truncated with a log line, never
 *     served) and reclamation of segments every channel has moved past.
 *
 * The on-disk format, the sync policies and exactly what a crash can lose
 * are described in the essay at the top of qlog.c.
 *
 * Threads: every function may be called from any thread; the log is guarded
 * by its own mutex.  Appends never wait for a disk flush (they do one
 * pwritev(2) into the page cache).  Only rv_qlog_open (recovery),
 * rv_qlog_close, rv_qlog_sync_now and the *_wait_durable calls may block on
 * the disk.
 *
 * Memory, per topic (bounded; message bodies are never kept in RAM):
 *   - the rv_qlog struct and its sync thread: about 2 KiB plus the thread stack;
 *   - per segment: about 120 bytes, plus a sparse index of 4 bytes per
 *     RV_QLOG_INDEX_STRIDE records: for a 64 MiB segment of 200-byte
 *     messages (244 bytes a record) about 34 KiB; at most about 190 KiB for
 *     a segment of empty messages.  At most RV_QLOG_SEGMENTS_MAX segments;
 *   - fixed append scratch: RV_QLOG_WRITEV_RECORDS_MAX record headers and
 *     twice as many iovecs (38 KiB);
 *   - per iterator: a read buffer of RV_QLOG_READ_CHUNK_BYTES (grown to one
 *     record when a record is larger).
 * Per channel, see storage/qjournal.h.
 */
#ifndef RAVEL_STORAGE_QLOG_H
#define RAVEL_STORAGE_QLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/log.h"
#include "rt/ctx.h"
#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits and defaults ------------------------------------------------- */

/* A segment rolls once the next record would take it past this size. */
#define RV_QLOG_SEGMENT_BYTES_DEFAULT (UINT64_C(64) << 20)
#define RV_QLOG_SEGMENT_BYTES_MIN (UINT64_C(4) << 10)
#define RV_QLOG_SEGMENT_BYTES_MAX (UINT64_C(1) << 30)
/* Largest message body (nsqd's default max-msg-size is 1 MiB). */
#define RV_QLOG_BODY_MAX_BYTES (UINT32_C(16) << 20)
/* Fixed bytes in front of every record's body, and in front of every segment. */
#define RV_QLOG_RECORD_HEADER_BYTES 44
#define RV_QLOG_SEGMENT_HEADER_BYTES 32
/* One index entry every this many records of a segment (a power of two). */
#define RV_QLOG_INDEX_STRIDE 32
/* Bytes an iterator reads from disk at a time. */
#define RV_QLOG_READ_CHUNK_BYTES (256u << 10)
/* Records per pwritev(2) call (two iovecs each; IOV_MAX is 1024). */
#define RV_QLOG_WRITEV_RECORDS_MAX 500
/* Segments a topic may have (with 64 MiB segments: 4 TiB). */
#define RV_QLOG_SEGMENTS_MAX 65536
/* Channel journals that may be attached to one topic. */
#define RV_QLOG_JOURNALS_MAX 4096
/* RV_QLOG_SYNC_NONE: the sync thread still flushes written data this often. */
#define RV_QLOG_BACKGROUND_SYNC_NS (1000 * RV_NS_PER_MS)

/* ---- types ---------------------------------------------------------------- */

typedef enum rv_qlog_sync {
  /* Default.  A message is acknowledged once fdatasync'ed (group commit). */
  RV_QLOG_SYNC_ALWAYS = 0,
  /*
   * "Fast": acknowledged once written to the page cache.  kill -9 loses
   * nothing (the kernel still has the data); a power loss or kernel crash
   * loses what was written since the last background sync, at most about
   * RV_QLOG_BACKGROUND_SYNC_NS plus the duration of one sync.
   */
  RV_QLOG_SYNC_NONE = 1,
} rv_qlog_sync;

typedef struct rv_qlog rv_qlog;
typedef struct rv_qlog_iter rv_qlog_iter;

typedef struct rv_qlog_opts {
  rv_qlog_sync sync;           /* RV_QLOG_SYNC_ALWAYS unless set */
  uint64_t segment_bytes;      /* 0: RV_QLOG_SEGMENT_BYTES_DEFAULT */
  /*
   * Called on the sync thread (or the thread running rv_qlog_sync_now) each
   * time the durable sequence number advances: durable_seq is the highest
   * sequence number now on disk; calls come in increasing order.  Keep it
   * short: the server turns it into an async wake-up of its loop
   * (uv_async_send) and acknowledges PUBs there.  It runs while sync rounds
   * are held off, so it must not call rv_qlog_sync_now, rv_*_wait_durable,
   * rv_qjournal_close or rv_qlog_close (the non-blocking calls are fine).
   */
  void (*on_durable)(void *arg, uint64_t durable_seq);
  void *on_durable_arg;
  /*
   * No sync thread: the caller runs rv_qlog_sync_now() itself (a
   * single-threaded simulator; tests that count syncs exactly).
   */
  bool manual_sync;
  /*
   * Do not reclaim segments after each sync round.  By default the sync
   * thread deletes segments below the lowest durable floor of the attached
   * journals (never when no journal is attached: a topic without channels
   * keeps its messages for the first channel, as nsqd does).
   */
  bool no_auto_reclaim;
  rv_log *log;                 /* recovery and I/O errors; may be NULL */
  const char *name;            /* the topic, for log lines and the thread's name; may be NULL */
} rv_qlog_opts;

/* One message to append. */
typedef struct rv_qlog_entry {
  uint64_t id;                 /* the message id */
  int64_t ts_ns;               /* publish time, wall clock (Unix epoch ns) */
  int64_t defer_until_ns;      /* DPUB: due time, wall clock; 0 = not deferred */
  uint16_t attempts;
  uint32_t body_len;           /* <= RV_QLOG_BODY_MAX_BYTES */
  const void *body;
} rv_qlog_entry;

/* One message read back.  body points into the iterator's buffer (or the caller's). */
typedef struct rv_qlog_msg {
  uint64_t seq;
  uint64_t id;
  int64_t ts_ns;
  int64_t defer_until_ns;
  uint16_t attempts;
  uint32_t body_len;
  const uint8_t *body;
} rv_qlog_msg;

typedef struct rv_qlog_stats {
  uint64_t first_seq;          /* lowest sequence number still stored */
  uint64_t next_seq;           /* the next append gets this number */
  uint64_t durable_seq;        /* highest sequence number fdatasync'ed (0: none) */
  uint64_t appends;            /* records appended since open */
  uint64_t append_calls;
  uint64_t write_calls;        /* pwritev(2) calls */
  uint64_t bytes_written;
  uint64_t sync_rounds;        /* rounds of the sync machinery that flushed something */
  uint64_t log_syncs;          /* fdatasync(2) calls on segments */
  uint64_t dir_syncs;          /* fsync(2) calls on directories */
  uint64_t journal_syncs;      /* fdatasync(2) calls on channel journals */
  int64_t sync_ns_max;         /* longest round */
  int64_t sync_ns_total;
  uint64_t segments;           /* segments now */
  uint64_t segments_created;
  uint64_t segments_deleted;
  uint64_t disk_bytes;         /* bytes in the segments now */
  uint64_t recovered_records;  /* records found valid at open */
  uint64_t truncated_bytes;    /* torn or corrupt tail cut at open */
  uint64_t lost_seqs;          /* sequence numbers unreadable because of damage found at open */
  uint64_t read_errors;        /* checksum or framing errors met while reading */
  int failed;                  /* 0, or the rv_err that stopped appends (an I/O error) */
} rv_qlog_stats;

/* ---- lifecycle ------------------------------------------------------------ */

/*
 * Open (creating if needed) the log in directory dir (created if missing,
 * parent must exist).  Existing segments are scanned and verified; a torn
 * or corrupt tail of the newest segment is truncated (and saved beside it
 * as NAME.tail-OFFSET), damage inside an older segment makes the rest of
 * that segment unreadable (reads give RV_EIO).  opts may be NULL.
 * Returns 0, RV_EIO (cannot read/write the directory), RV_EINVAL, RV_ENOMEM.
 */
int rv_qlog_open(rv_qlog **out, const char *dir, const rv_qlog_opts *opts);
/*
 * Stop the sync thread, sync everything once more, close the journals still
 * attached (as rv_qjournal_close does) and free the log.  NULL is fine.
 * Iterators must have been freed.
 */
void rv_qlog_close(rv_qlog *q);

/* ---- appending ------------------------------------------------------------ */

/*
 * Append n messages (n >= 1) in order; they get the sequence numbers
 * *first_seq .. *first_seq + n - 1.  Returns once they are written to the
 * page cache, never waiting for a flush.  Under RV_QLOG_SYNC_ALWAYS they
 * may be acknowledged once rv_qlog_durable_seq() >= *first_seq + n - 1
 * (on_durable says when); under RV_QLOG_SYNC_NONE at once.
 * Returns 0; RV_EINVAL (n == 0, body too large); RV_ELIMIT (too many
 * segments); RV_EIO after a write or sync error: the log then refuses all
 * appends until it is reopened (a failed fsync leaves the page cache in an
 * unknown state, so retrying it would be a lie).
 */
int rv_qlog_append(rv_qlog *q, const rv_qlog_entry *entries, size_t n, uint64_t *first_seq);

/* The sequence number the next append gets. */
uint64_t rv_qlog_next_seq(rv_qlog *q);
/* The lowest sequence number still stored (after reclamation). */
uint64_t rv_qlog_first_seq(rv_qlog *q);
/* The highest sequence number known fdatasync'ed; 0 if none. */
uint64_t rv_qlog_durable_seq(rv_qlog *q);
/*
 * The highest sequence number that may be acknowledged to producers and
 * shown to consumers: durable_seq under SYNC_ALWAYS, the last written one
 * under SYNC_NONE.
 */
uint64_t rv_qlog_acked_seq(rv_qlog *q);
/*
 * Block until seq is durable, ctx ends (RV_ECANCELED/RV_EDEADLINE) or the
 * log fails (RV_EIO).  Asks the sync thread to flush now, whatever the policy.
 */
int rv_qlog_wait_durable(rv_qlog *q, uint64_t seq, rv_ctx *ctx);
/*
 * Run one sync round now on the calling thread: flush and fdatasync the log
 * and every attached journal that has anything unsynced.  Blocks on the disk.
 * Returns 0 or RV_EIO.
 */
int rv_qlog_sync_now(rv_qlog *q);

/* ---- reading -------------------------------------------------------------- */
/*
 * Readers see messages up to rv_qlog_acked_seq(): never one that a crash
 * could still take back under the configured policy.  Every record's
 * checksum is verified on every read; a record that fails is not served.
 */

/* A sequential reader starting at from_seq (clamped up to the first stored seq). */
int rv_qlog_iter_new(rv_qlog *q, uint64_t from_seq, rv_qlog_iter **out);
/* Move to seq (clamped up to the first stored seq). */
void rv_qlog_iter_seek(rv_qlog_iter *it, uint64_t seq);
/* The sequence number the next call to rv_qlog_iter_next will try. */
uint64_t rv_qlog_iter_seq(const rv_qlog_iter *it);
/*
 * The next message: 0 and *out filled (out->body valid until the next call
 * on this iterator); RV_ENOTFOUND when there is nothing more to read yet
 * (the iterator stays put: call again after more is acknowledged); RV_EIO
 * when the record at out->seq is lost or damaged: it is skipped, the next
 * call goes on with out->seq + 1.
 */
int rv_qlog_iter_next(rv_qlog_iter *it, rv_qlog_msg *out);
void rv_qlog_iter_free(rv_qlog_iter *it);

/*
 * Read one message by sequence number, its body copied into buf (cap
 * bytes).  0; RV_ERANGE if the body does not fit (out->body_len says how
 * much is needed); RV_ENOTFOUND if seq is reclaimed or not yet
 * acknowledged; RV_EIO if the record is lost or damaged.  For random
 * access (requeued and deferred messages); stream with an iterator.
 */
int rv_qlog_read(rv_qlog *q, uint64_t seq, rv_qlog_msg *out, void *buf, size_t cap);

/* ---- reclamation and stats ------------------------------------------------ */

/*
 * Delete every segment whose messages are all below min_floor (the lowest
 * acknowledgement floor over the topic's channels), are durable, and that is
 * not the segment being written.  *deleted (may be NULL) gets the count.
 * The sync thread already does this after each round with
 * rv_qlog_channels_floor() unless opts.no_auto_reclaim.
 */
int rv_qlog_reclaim(rv_qlog *q, uint64_t min_floor, size_t *deleted);
/*
 * The lowest durable floor over the attached journals, or 0 when none is
 * attached (reclaim nothing).
 */
uint64_t rv_qlog_channels_floor(rv_qlog *q);

void rv_qlog_stats_get(rv_qlog *q, rv_qlog_stats *out);
/* The directory this log lives in. */
const char *rv_qlog_dir(const rv_qlog *q);

#ifdef __cplusplus
}
#endif
#endif
