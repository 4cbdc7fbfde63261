/*
 * qlog_internal: what qlog.c (topic log, sync thread), qjournal.c (channel
 * journals) and qlog_io.c (file helpers) share.  Not installed API.
 */
#ifndef RAVEL_STORAGE_QLOG_INTERNAL_H
#define RAVEL_STORAGE_QLOG_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "rt/fs.h"
#include "rt/rt.h"
#include "storage/qjournal.h"
#include "storage/qlog.h"

/* ---- little-endian encoding: the on-disk byte order, whatever the CPU ---- */

static inline void rv__put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void rv__put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static inline void rv__put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t rv__get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rv__get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}
static inline uint64_t rv__get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/*
 * A "dirty since" stamp (rv_now_ns), for fields where 0 means clean: the
 * simulator's clock starts at 0, and a log dirtied then must not look clean.
 */
static inline int64_t rv__dirty_stamp(void) {
  int64_t t = rv_now_ns();
  return t != 0 ? t : 1;
}

/* ---- file helpers (qlog_io.c) ----------------------------------------------- */

/* Bytes of a path we build (directory + file name). */
#define RV__QIO_PATH_MAX 4096

/*
 * mkdir dir if missing (its parent must exist): 0, or an rv_err.  *created
 * says it was made now: its parent directory must then be synced
 * (rv__qio_parent names it) before the new directory's contents count as
 * durable.
 */
int rv__qio_open_dir(const char *dir, bool *created);
/* The parent directory of dir into out (RV__QIO_PATH_MAX): "." for a bare name. */
void rv__qio_parent(char *out, const char *dir);
/*
 * The numbers N of the files "NNNNNNNNNNNNNNNNNNNN<suffix>" (20 digits) in
 * dir, sorted ascending, in a malloc'd array (*out, *n).  0, RV_EIO, RV_ENOMEM.
 */
int rv__qio_list_numbered(const char *dir, const char *suffix, uint64_t **out, size_t *n);
/* "<dir>/<20-digit n><suffix>" into out (RV__QIO_PATH_MAX). */
void rv__qio_path(char *out, const char *dir, uint64_t n, const char *suffix);

/* ---- what the journal needs from its topic log (qlog.c) ---------------------- */

rv_log *rv__qlog_logger(rv_qlog *q);
const char *rv__qlog_name(rv_qlog *q);
/*
 * Attach a journal to the sync machinery (takes the log's mutex), detach it
 * (the caller holds the round lock, so no round is using it).
 */
int rv__qlog_attach(rv_qlog *q, rv_qjournal *j);
void rv__qlog_detach(rv_qlog *q, rv_qjournal *j);
/* Hold off sync rounds (and wait for the one in progress). */
void rv__qlog_round_lock(rv_qlog *q);
void rv__qlog_round_unlock(rv_qlog *q);
/* Wake the sync thread: something became dirty or someone waits. */
void rv__qlog_kick(rv_qlog *q);
/* Wake the waiters of rv_*_wait_durable after a journal's durable LSN moved. */
void rv__qlog_notify_durable(rv_qlog *q);
/*
 * Wait until done(arg) or ctx ends; in manual-sync mode runs sync rounds
 * itself.  Returns 0, RV_ECANCELED, RV_EDEADLINE, or err_fn(arg)'s error.
 */
int rv__qlog_wait(rv_qlog *q, bool (*done)(void *arg, int *err), void *arg, rv_ctx *ctx);

/* ---- what the sync machinery needs from a journal (qjournal.c) -------------- */

/* One journal's part in a sync round. */
typedef struct rv__qjournal_work {
  rv_qjournal *j;
  rv_file *file;          /* file to sync, or NULL (nothing to do) */
  bool sync_dir;          /* a new journal file was created */
  uint64_t unlink_below;  /* after syncing, delete journal files with a lower generation (0: none) */
  uint64_t target_lsn;    /* durable once file is synced */
  uint64_t target_floor;
  int rc;
} rv__qjournal_work;

/* When this journal needs syncing: INT64_MAX if clean (atomics only, no lock). */
int64_t rv__qjournal_due_ns(rv_qjournal *j);
/* Flush the buffer, checkpoint if the file is big, fill w.  Takes the journal's lock. */
void rv__qjournal_prepare(rv_qjournal *j, rv__qjournal_work *w);
/* The disk part, no lock held. */
void rv__qjournal_sync(rv__qjournal_work *w);
/* Publish the result (atomics only). */
void rv__qjournal_complete(rv__qjournal_work *w);
/* Close a journal while the log closes (the sync thread is stopped). */
void rv__qjournal_close_detached(rv_qjournal *j);

#endif
