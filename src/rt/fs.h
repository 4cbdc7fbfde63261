/*
 * rt/fs: files and directories through the rt seam.
 *
 * Storage code (the queue's log and journals, coord's state file, the small
 * helpers of storage/fsutil.h) does its file I/O here instead of calling
 * open/pwrite/fdatasync/rename itself, so that the same code runs on the
 * real disk (fs_os.c) and, while a simulated world runs on the calling OS
 * thread, on the simulated disk of the world (fs_sim.c; docs/sim.md, "The
 * simulated disk"), where durability follows POSIX strictly and a crash can
 * lose what was not synced.  tests/scripts/check_rt_seam.sh refuses raw file
 * calls in the directories that run under the simulator.
 *
 * Durability contract (the one both backends honour, and the simulated one
 * enforces): data written to a file is durable only after rv_file_sync of
 * that file; a create, rename, unlink or mkdir is durable only after
 * rv_fs_sync_dir of the directory holding the name (of both directories for
 * a rename between two).
 *
 * Errors are rv_err values: RV_ENOTFOUND (no such file or directory),
 * RV_EEXIST (exists, with RV_FS_EXCL or mkdir), RV_ENOSPC (disk full),
 * RV_ESTALE (the handle died: under the simulator its process crashed),
 * RV_EINVAL (bad flags, a path too long, a directory where a file was
 * expected), RV_EBUSY (rmdir of a directory that is not empty), RV_ENOMEM,
 * and RV_EIO for everything else.  The simulated disk does not model ".."
 * in paths (RV_EINVAL).  A failed
 * rv_file_sync is final (as with fdatasync, the data may be gone): never
 * retry it and assume what was written is durable.
 */
#ifndef RAVEL_RT_FS_H
#define RAVEL_RT_FS_H

#include "rt/rt.h"

#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest path (bytes, with the terminating NUL) the fs functions accept. */
#define RV_FS_PATH_MAX 4096
/* Longest name of one directory entry (bytes, without the NUL). */
#define RV_FS_NAME_MAX 255
/* Entries rv_fs_list returns at most before giving RV_ELIMIT (bounds the array). */
#define RV_FS_LIST_MAX (1u << 20)

/* An open file.  Not shared between threads without the caller's own locking. */
typedef struct rv_file rv_file;

/* rv_file_open flags (combine with |). */
enum rv_fs_open_flags {
  RV_FS_READ = 1u << 0,   /* read access */
  RV_FS_WRITE = 1u << 1,  /* write access (pwrite, truncate, sync) */
  RV_FS_CREATE = 1u << 2, /* create the file if missing (mode 0644) */
  RV_FS_EXCL = 1u << 3,   /* with CREATE: RV_EEXIST if it exists */
  RV_FS_TRUNC = 1u << 4,  /* truncate to 0 on open (needs WRITE) */
  RV_FS_RDWR = RV_FS_READ | RV_FS_WRITE
};

/* Open path; *out on success.  RV_ENOTFOUND without CREATE when missing. */
int rv_file_open(rv_file **out, const char *path, unsigned flags);
/* Close (never fails in a way callers can act on; NULL is a no-op). */
void rv_file_close(rv_file *f);
/*
 * Read up to len bytes at off, retrying short reads until len or the end of
 * the file: the number of bytes read (< len only at the end), or an rv_err.
 */
ssize_t rv_file_pread(rv_file *f, void *buf, size_t len, uint64_t off);
/* Write all len bytes at off (retrying short writes): 0 or an rv_err. */
int rv_file_pwrite(rv_file *f, const void *buf, size_t len, uint64_t off);
/* Write all of a gather list at off (one system call in the common case); iov is not modified. */
int rv_file_pwritev(rv_file *f, const struct iovec *iov, int iovcnt, uint64_t off);
/* Current size in bytes. */
int rv_file_size(rv_file *f, uint64_t *out);
/* Cut or extend (with zeros) to size bytes. */
int rv_file_truncate(rv_file *f, uint64_t size);
/*
 * Make the file's data (and the size needed to read it back) durable:
 * fdatasync(2).  Blocks; under the simulator it costs RV_SIM_DISK_SYNC_NS of
 * virtual time, during which other simulated threads run.
 */
int rv_file_sync(rv_file *f);

/* rename(2): replaces `to` atomically if it exists. */
int rv_fs_rename(const char *from, const char *to);
/* Remove a file (not a directory). */
int rv_fs_unlink(const char *path);
/* Create one directory (mode 0755): 0, RV_EEXIST if it exists, RV_ENOTFOUND if the parent is missing. */
int rv_fs_mkdir(const char *path);
/* mkdir -p: create path and missing parents; 0 when it exists as a directory afterwards. */
int rv_fs_mkdir_p(const char *path);
/* Remove an empty directory: RV_EBUSY when it is not empty. */
int rv_fs_rmdir(const char *path);
/* Make the entries of directory path durable (fsync(2) of the directory). */
int rv_fs_sync_dir(const char *path);
/*
 * Make everything on the file system holding path durable (syncfs(2)); the
 * simulated disk syncs the whole volume.  Used once at recovery.
 */
int rv_fs_syncfs(const char *path);

/* What rv_fs_stat reports. */
typedef struct rv_fs_info {
  bool is_dir;
  uint64_t size; /* bytes, for a regular file */
} rv_fs_info;

/* stat(2) following symlinks: 0, RV_ENOTFOUND, or an rv_err. */
int rv_fs_stat(const char *path, rv_fs_info *st);
bool rv_fs_exists(const char *path);
/*
 * The names in directory path, without "." and "..", sorted by strcmp (so a
 * listing is the same on both backends and deterministic under the
 * simulator): *names is a malloc'd array of *n malloc'd strings, released
 * with rv_fs_list_free.  RV_ENOTFOUND, RV_ELIMIT past RV_FS_LIST_MAX, RV_ENOMEM.
 */
int rv_fs_list(const char *path, char ***names, size_t *n);
void rv_fs_list_free(char **names, size_t n);

/*
 * Read a whole (small) file into a malloc'd, NUL-terminated buffer (*len
 * bytes before the NUL).  RV_ELIMIT when it is bigger than max bytes.
 */
int rv_fs_read_file(const char *path, size_t max, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
