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

/* ---- file helpers (qlog_io.c) ----------------------------------------------- */

/* Bytes of a path we build (directory + file name). */
#define RV__QIO_PATH_MAX 4096

/* pwrite all len bytes at off (retrying short writes and EINTR): 0 or RV_EIO, errno kept. */
int rv__qio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* pwritev all iovecs at off; iov is modified. 0 or RV_EIO. */
int rv__qio_pwritev_all(int fd, struct iovec *iov, int iovcnt, uint64_t off);
/* pread up to len bytes at off, retrying short reads until EOF: bytes read, or -1. */
ssize_t rv__qio_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* fdatasync (fsync for directories) with EINTR retry: 0 or RV_EIO. */
int rv__qio_fdatasync(int fd);
int rv__qio_fsync(int fd);
/* syncfs(2) of the file system holding fd: 0 or RV_EIO. */
int rv__qio_syncfs(int fd);
/*
 * mkdir dir if missing, open it O_DIRECTORY: fd, or -1.  When it was
 * created, *parent_fd is its parent directory, to fsync (then close) before
 * the new directory's contents count as durable; else -1.
 */
int rv__qio_open_dir(const char *dir, int *parent_fd);
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
  int fd;                 /* file to fdatasync, or -1 (nothing to do) */
  bool sync_dir;          /* a new journal file was created */
  uint64_t unlink_below;  /* after syncing, delete journal files with a lower generation (0: none) */
  uint64_t target_lsn;    /* durable once fd is synced */
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
