/*
 * An SQLite VFS over rt/fs.h (see sqlite_vfs.h).  It is glue of the rt seam
 * for a library that does its own file I/O: the only storage code that asks
 * whether a simulated world runs, to pick the VFS.
 */
#include "storage/sqlite_vfs.h"

#include "rt/fs.h"
#include "rt/sim.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes SQLite is told a sector has (what it aligns its journal writes to). */
#define VFS_SECTOR_BYTES 4096
/* Julian day number of the Unix epoch, in milliseconds (SQLite's xCurrentTimeInt64). */
#define VFS_UNIX_EPOCH_JD_MS INT64_C(210866760000000)

typedef struct vfs_file {
  sqlite3_file base; /* first: SQLite casts */
  rv_file *f;
  char path[RV_SQLITE_VFS_PATH_MAX];
  int delete_on_close;
  int sync_dir; /* a new journal or WAL: its first sync syncs the directory too */
  /* The WAL index ("-shm") of this connection's database, in memory. */
  void **shm;
  int nshm;
} vfs_file;

/* The directory holding path, into out (RV_SQLITE_VFS_PATH_MAX). */
static void parent_of(const char *path, char *out) {
  snprintf(out, RV_SQLITE_VFS_PATH_MAX, "%s", path);
  char *slash = strrchr(out, '/');
  if (!slash)
    snprintf(out, RV_SQLITE_VFS_PATH_MAX, ".");
  else if (slash == out)
    out[1] = '\0';
  else
    *slash = '\0';
}

static int vfs_close(sqlite3_file *file) {
  vfs_file *v = (vfs_file *)file;
  rv_file_close(v->f);
  v->f = NULL;
  if (v->delete_on_close)
    (void)rv_fs_unlink(v->path);
  for (int i = 0; i < v->nshm; i++)
    free(v->shm[i]);
  free(v->shm);
  v->shm = NULL;
  v->nshm = 0;
  return SQLITE_OK;
}

static int vfs_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off) {
  vfs_file *v = (vfs_file *)file;
  ssize_t n = rv_file_pread(v->f, buf, (size_t)amt, (uint64_t)off);
  if (n < 0)
    return SQLITE_IOERR_READ;
  if (n < amt) {
    /* SQLite's contract: a short read zero-fills the rest and says so. */
    memset((char *)buf + n, 0, (size_t)(amt - n));
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

static int vfs_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off) {
  vfs_file *v = (vfs_file *)file;
  int rc = rv_file_pwrite(v->f, buf, (size_t)amt, (uint64_t)off);
  return rc == RV_OK ? SQLITE_OK : rc == RV_ENOSPC ? SQLITE_FULL : SQLITE_IOERR_WRITE;
}

static int vfs_truncate(sqlite3_file *file, sqlite3_int64 size) {
  vfs_file *v = (vfs_file *)file;
  return rv_file_truncate(v->f, (uint64_t)size) == RV_OK ? SQLITE_OK : SQLITE_IOERR_TRUNCATE;
}

static int vfs_sync(sqlite3_file *file, int flags) {
  (void)flags; /* NORMAL, FULL and DATAONLY are one fdatasync here */
  vfs_file *v = (vfs_file *)file;
  if (rv_file_sync(v->f) != RV_OK)
    return SQLITE_IOERR_FSYNC;
  if (v->sync_dir) {
    char dir[RV_SQLITE_VFS_PATH_MAX];
    parent_of(v->path, dir);
    if (rv_fs_sync_dir(dir) != RV_OK)
      return SQLITE_IOERR_DIR_FSYNC;
    v->sync_dir = 0;
  }
  return SQLITE_OK;
}

static int vfs_file_size(sqlite3_file *file, sqlite3_int64 *out) {
  vfs_file *v = (vfs_file *)file;
  uint64_t size;
  if (rv_file_size(v->f, &size) != RV_OK)
    return SQLITE_IOERR_FSTAT;
  *out = (sqlite3_int64)size;
  return SQLITE_OK;
}

/* One connection per file (sqlite_vfs.h): nothing to exclude. */
static int vfs_lock(sqlite3_file *file, int level) {
  (void)file;
  (void)level;
  return SQLITE_OK;
}

static int vfs_check_reserved(sqlite3_file *file, int *out) {
  (void)file;
  *out = 0;
  return SQLITE_OK;
}

static int vfs_file_control(sqlite3_file *file, int op, void *arg) {
  (void)file;
  (void)op;
  (void)arg;
  return SQLITE_NOTFOUND;
}

static int vfs_sector_size(sqlite3_file *file) {
  (void)file;
  return VFS_SECTOR_BYTES;
}

static int vfs_device_characteristics(sqlite3_file *file) {
  (void)file;
  return 0; /* promise nothing: SQLite then does every sync POSIX asks for */
}

static int vfs_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **out) {
  vfs_file *v = (vfs_file *)file;
  *out = NULL;
  if (region >= v->nshm) {
    if (!extend)
      return SQLITE_OK;
    void **shm = realloc(v->shm, (size_t)(region + 1) * sizeof *shm);
    if (!shm)
      return SQLITE_NOMEM;
    v->shm = shm;
    for (int i = v->nshm; i <= region; i++)
      if (!(v->shm[i] = calloc(1, (size_t)size))) {
        v->nshm = i;
        return SQLITE_NOMEM;
      }
    v->nshm = region + 1;
  }
  *out = v->shm[region];
  return SQLITE_OK;
}

static int vfs_shm_lock(sqlite3_file *file, int offset, int n, int flags) {
  (void)file;
  (void)offset;
  (void)n;
  (void)flags;
  return SQLITE_OK;
}

static void vfs_shm_barrier(sqlite3_file *file) { (void)file; }

static int vfs_shm_unmap(sqlite3_file *file, int delete_flag) {
  (void)delete_flag; /* the index lives in memory only: unmapping is deleting */
  vfs_file *v = (vfs_file *)file;
  for (int i = 0; i < v->nshm; i++)
    free(v->shm[i]);
  free(v->shm);
  v->shm = NULL;
  v->nshm = 0;
  return SQLITE_OK;
}

static const sqlite3_io_methods vfs_io = {
    .iVersion = 2,
    .xClose = vfs_close,
    .xRead = vfs_read,
    .xWrite = vfs_write,
    .xTruncate = vfs_truncate,
    .xSync = vfs_sync,
    .xFileSize = vfs_file_size,
    .xLock = vfs_lock,
    .xUnlock = vfs_lock,
    .xCheckReservedLock = vfs_check_reserved,
    .xFileControl = vfs_file_control,
    .xSectorSize = vfs_sector_size,
    .xDeviceCharacteristics = vfs_device_characteristics,
    .xShmMap = vfs_shm_map,
    .xShmLock = vfs_shm_lock,
    .xShmBarrier = vfs_shm_barrier,
    .xShmUnmap = vfs_shm_unmap,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                    int *out_flags) {
  (void)vfs;
  vfs_file *v = (vfs_file *)file;
  memset(v, 0, sizeof *v);
  if (name) {
    if (snprintf(v->path, sizeof v->path, "%s", name) >= (int)sizeof v->path)
      return SQLITE_CANTOPEN;
  } else {
    /* A temporary file (sorting, a statement journal): a fresh name of our own. */
    static unsigned long temp_seq;
    snprintf(v->path, sizeof v->path, "/.sqlite-temp-%lu", ++temp_seq);
    flags |= SQLITE_OPEN_CREATE | SQLITE_OPEN_DELETEONCLOSE;
  }
  unsigned rf = flags & SQLITE_OPEN_READWRITE ? RV_FS_RDWR : RV_FS_READ;
  if (flags & SQLITE_OPEN_CREATE)
    rf |= RV_FS_CREATE;
  if ((flags & SQLITE_OPEN_EXCLUSIVE) && (flags & SQLITE_OPEN_CREATE))
    rf |= RV_FS_EXCL;
  if (rv_file_open(&v->f, v->path, rf) != RV_OK)
    return SQLITE_CANTOPEN;
  v->delete_on_close = (flags & SQLITE_OPEN_DELETEONCLOSE) != 0;
  /*
   * As SQLite's unix VFS: a journal or WAL it creates gets its directory
   * synced at its first sync, which makes the names in that directory (the
   * database's own, made just before) durable.
   */
  v->sync_dir = (flags & SQLITE_OPEN_CREATE) && !v->delete_on_close &&
                (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL | SQLITE_OPEN_WAL));
  v->base.pMethods = &vfs_io;
  if (out_flags)
    *out_flags = flags;
  return SQLITE_OK;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
  (void)vfs;
  int rc = rv_fs_unlink(name);
  if (rc == RV_ENOTFOUND)
    return SQLITE_IOERR_DELETE_NOENT;
  if (rc != RV_OK)
    return SQLITE_IOERR_DELETE;
  if (sync_dir) {
    char dir[RV_SQLITE_VFS_PATH_MAX];
    parent_of(name, dir);
    if (rv_fs_sync_dir(dir) != RV_OK)
      return SQLITE_IOERR_DIR_FSYNC;
  }
  return SQLITE_OK;
}

/* As the unix VFS: an empty file does not "exist" (a journal truncated to nothing). */
static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  (void)flags;
  rv_fs_info st;
  *out = rv_fs_stat(name, &st) == RV_OK && (st.is_dir || st.size > 0 ||
                                           flags != SQLITE_ACCESS_EXISTS);
  return SQLITE_OK;
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
  (void)vfs;
  return snprintf(out, (size_t)n, "%s", name) >= n ? SQLITE_CANTOPEN : SQLITE_OK;
}

/* The world's PRNG under the simulator: SQLite's random choices are part of the seed. */
static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  for (int i = 0; i < n; i += 8) {
    uint64_t r = rv_rng_os_seed();
    memcpy(out + i, &r, (size_t)(n - i < 8 ? n - i : 8));
  }
  return n;
}

static int vfs_sleep(sqlite3_vfs *vfs, int us) {
  (void)vfs;
  rv_sleep(NULL, (int64_t)us * RV_NS_PER_US);
  return us;
}

static int vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  (void)vfs;
  *out = VFS_UNIX_EPOCH_JD_MS + rv_wall_ns() / RV_NS_PER_MS;
  return SQLITE_OK;
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out) {
  sqlite3_int64 ms;
  vfs_current_time_int64(vfs, &ms);
  *out = (double)ms / 86400000.0;
  return SQLITE_OK;
}

static int vfs_last_error(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  if (n > 0)
    out[0] = '\0';
  return 0;
}

static sqlite3_vfs vfs_rt = {
    .iVersion = 2,
    .szOsFile = sizeof(vfs_file),
    .mxPathname = RV_SQLITE_VFS_PATH_MAX,
    .zName = RV_SQLITE_VFS_NAME,
    .xOpen = vfs_open,
    .xDelete = vfs_delete,
    .xAccess = vfs_access,
    .xFullPathname = vfs_full_pathname,
    .xRandomness = vfs_randomness,
    .xSleep = vfs_sleep,
    .xCurrentTime = vfs_current_time,
    .xGetLastError = vfs_last_error,
    .xCurrentTimeInt64 = vfs_current_time_int64,
};

const char *rv_sqlite_vfs_for_rt(void) {
  if (!rv__sim_active())
    return NULL;
  /* sqlite3_vfs_register takes SQLite's own mutex; registering twice is harmless. */
  if (!sqlite3_vfs_find(RV_SQLITE_VFS_NAME) && sqlite3_vfs_register(&vfs_rt, 0) != SQLITE_OK)
    return NULL;
  return RV_SQLITE_VFS_NAME;
}
