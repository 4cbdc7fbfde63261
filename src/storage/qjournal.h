/*
 * qjournal: the durable state of one channel of a topic.
 *
 * What a channel must get back after kill -9, and nothing more:
 *
 *   - its floor: every sequence number below it is finished;
 *   - the finished sequence numbers at or above the floor (FINs that came
 *     out of order), kept as runs [lo, hi);
 *   - its deferred messages (REQ with a delay) with their due time and
 *     attempts count.
 *
 * Everything else is derived: after recovery, every seq >= floor that is
 * neither finished nor deferred and is below the topic's next seq is ready
 * again, which redelivers the messages that were in flight at the crash
 * (at-least-once).  A message the topic log stores with defer_until_ns
 * (DPUB) is deferred by the server from that field, not by the journal.
 *
 * Durability: FIN and DEFER take effect at once and are appended to an
 * in-memory buffer; the topic's sync thread writes and fdatasyncs dirty
 * journals at least every RV_QJOURNAL_SYNC_INTERVAL_NS (and at once when
 * someone waits on rv_qjournal_wait_durable).  So a crash (kill -9 or power
 * loss alike) forgets at most the FINs and DEFERs of the last
 * RV_QJOURNAL_SYNC_INTERVAL_NS plus one sync: those messages are delivered
 * again, or a deferred one becomes ready early (its REQ is forgotten).
 * Nothing else.  Every record has an LSN; rv_qjournal_durable_lsn() says
 * which are on disk.
 *
 * Times are wall clock (Unix epoch ns), because a monotonic clock does not
 * survive a reboot and due times must.
 *
 * Memory per channel (bounded by the channel's own state, never by the
 * topic's size): about 400 bytes, plus 16 bytes per run of finished seqs
 * above the floor (in-order FINs keep one run; each out-of-order gap adds
 * one), plus about 64 bytes per deferred message (a hash table kept at most
 * half full), plus a write buffer of at most RV_QJOURNAL_BUF_MAX_BYTES.
 * A checkpoint briefly needs a buffer the size of the state it writes.
 */
#ifndef RAVEL_STORAGE_QJOURNAL_H
#define RAVEL_STORAGE_QJOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/qlog.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Unsynced FINs and DEFERs reach the disk at least this often. */
#define RV_QJOURNAL_SYNC_INTERVAL_NS (200 * RV_NS_PER_MS)
/* Records are buffered in memory up to this many bytes, then written. */
#define RV_QJOURNAL_BUF_MAX_BYTES (64u << 10)
/* A journal file bigger than this is replaced by a checkpoint in a new file. */
#define RV_QJOURNAL_CHECKPOINT_BYTES_DEFAULT (UINT64_C(4) << 20)
#define RV_QJOURNAL_CHECKPOINT_BYTES_MIN (UINT64_C(1) << 10)
/* Largest record (a checkpoint) accepted when reading a journal back. */
#define RV_QJOURNAL_RECORD_MAX_BYTES (UINT32_C(1) << 30)
/* Deferred messages one channel may hold. */
#define RV_QJOURNAL_DEFERRED_MAX (UINT32_C(1) << 24)
/* Runs of finished seqs one channel may hold above its floor. */
#define RV_QJOURNAL_RUNS_MAX (UINT32_C(1) << 24)

typedef struct rv_qjournal rv_qjournal;

typedef struct rv_qjournal_opts {
  /*
   * For a new journal: the floor to start from, normally the topic's next
   * seq (a new channel gets the messages published after it was created).
   * 0 means rv_qlog_next_seq().  Ignored when the journal exists.
   */
  uint64_t start_seq;
  uint64_t checkpoint_bytes;    /* 0: RV_QJOURNAL_CHECKPOINT_BYTES_DEFAULT */
} rv_qjournal_opts;

typedef struct rv_qjournal_deferred {
  uint64_t seq;
  int64_t due_ns;               /* wall clock */
  uint16_t attempts;
} rv_qjournal_deferred;

typedef struct rv_qjournal_stats {
  uint64_t floor;
  uint64_t durable_floor;
  uint64_t lsn;                 /* LSN of the last record */
  uint64_t durable_lsn;
  uint64_t finished_runs;       /* runs of finished seqs above the floor */
  uint64_t deferred;
  uint64_t fins;                /* FIN records since open */
  uint64_t defers;
  uint64_t checkpoints;
  uint64_t file_bytes;          /* size of the current journal file */
  uint64_t recovered_records;   /* records replayed at open */
  uint64_t truncated_bytes;     /* torn tail cut at open */
  int failed;                   /* 0 or the rv_err that stopped the journal */
} rv_qjournal_stats;

/*
 * Open (or create) the journal in directory dir (created if missing) and
 * attach it to topic log q, whose sync thread will flush it.  Recovery:
 * the newest file with a valid checkpoint is loaded and its records
 * replayed up to the first torn one (truncated there, with a log line);
 * state above q's next seq (possible only after a power loss under
 * RV_QLOG_SYNC_NONE) is dropped with a warning.  opts may be NULL.
 * Does not fsync: the sync thread makes a new journal durable.
 */
int rv_qjournal_open(rv_qjournal **out, rv_qlog *q, const char *dir, const rv_qjournal_opts *opts);
/*
 * Sync what is buffered, detach from the topic and free.  Waits for a sync
 * round in progress to finish.  NULL is fine.
 */
void rv_qjournal_close(rv_qjournal *j);
/* Detach and delete the journal's files and directory (channel deleted). */
int rv_qjournal_remove(rv_qjournal *j);

/*
 * The message seq is finished.  Idempotent: a seq below the floor or
 * already finished writes nothing.  *lsn (may be NULL) gets the LSN that
 * must be durable for this FIN to survive a crash.  0, RV_EINVAL (seq 0),
 * RV_ELIMIT (too many runs), RV_EIO (journal failed).
 */
int rv_qjournal_fin(rv_qjournal *j, uint64_t seq, uint64_t *lsn);
/*
 * The message seq is deferred until due_ns (wall clock) with this attempts
 * count; due_ns 0 takes it out of the deferred set (ready again).  A seq
 * below the floor or finished is ignored.  Same results as rv_qjournal_fin.
 */
/* Every seq in [first, last] is finished (a channel emptied): one record. */
int rv_qjournal_skip(rv_qjournal *j, uint64_t first, uint64_t last, uint64_t *lsn);
int rv_qjournal_defer(rv_qjournal *j, uint64_t seq, int64_t due_ns, uint16_t attempts,
                      uint64_t *lsn);

/* Lowest seq not finished. */
uint64_t rv_qjournal_floor(rv_qjournal *j);
/* The floor as of the last sync: what a crash now would recover (at least). */
uint64_t rv_qjournal_durable_floor(rv_qjournal *j);
bool rv_qjournal_is_finished(rv_qjournal *j, uint64_t seq);
/* The lowest seq >= from that is not finished (it may be deferred). */
uint64_t rv_qjournal_next_unfinished(rv_qjournal *j, uint64_t from);
/* Whether seq is deferred; *out (may be NULL) gets its record. */
bool rv_qjournal_deferred_get(rv_qjournal *j, uint64_t seq, rv_qjournal_deferred *out);
size_t rv_qjournal_deferred_count(rv_qjournal *j);
/*
 * Call fn for each deferred message, in no particular order, with the
 * journal locked: fn must not call back into this journal.
 */
void rv_qjournal_deferred_each(rv_qjournal *j, void (*fn)(void *arg, const rv_qjournal_deferred *d),
                               void *arg);

uint64_t rv_qjournal_lsn(rv_qjournal *j);
uint64_t rv_qjournal_durable_lsn(rv_qjournal *j);
/* Block until lsn is durable (asking for a sync now), ctx ends, or the journal fails. */
int rv_qjournal_wait_durable(rv_qjournal *j, uint64_t lsn, rv_ctx *ctx);

void rv_qjournal_stats_get(rv_qjournal *j, rv_qjournal_stats *out);

#ifdef __cplusplus
}
#endif
#endif
