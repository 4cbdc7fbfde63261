/*
 * The OS backend of rt/fs.h: open(2), pread/pwritev, fdatasync, rename,
 * and directory fsync.  Each public function that touches the disk starts
 * with the simulator check and forwards to fs_sim.c while a world runs on
 * this OS thread (rt_os.c's pattern); the rest (mkdir -p, read a whole file,
 * exists) is written once over the dispatching functions.
 */
#define _GNU_SOURCE /* syncfs */
#include "rt/fs.h"
#include "rt/fs_internal.h"
#include "rt/sim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct rv_file {
  int fd;
};

/* The rv_err for the errno a failed file call left. */
static int err_of(int e) {
  switch (e) {
  case ENOENT:
    return RV_ENOTFOUND;
  case EEXIST:
    return RV_EEXIST;
  case ENOSPC:
  case EDQUOT:
    return RV_ENOSPC;
  case ENOMEM:
    return RV_ENOMEM;
  case EINVAL:
  case EISDIR:
  case ENOTDIR:
  case ENAMETOOLONG:
    return RV_EINVAL;
  case EBADF:
    return RV_ESTALE;
  case ENOTEMPTY:
    return RV_EBUSY;
  default:
    return RV_EIO;
  }
}

static int os_flags(unsigned flags, int *out) {
  if (!(flags & RV_FS_RDWR) || ((flags & RV_FS_TRUNC) && !(flags & RV_FS_WRITE)) ||
      ((flags & RV_FS_EXCL) && !(flags & RV_FS_CREATE)))
    return RV_EINVAL;
  int o = (flags & RV_FS_RDWR) == RV_FS_RDWR ? O_RDWR : (flags & RV_FS_WRITE) ? O_WRONLY : O_RDONLY;
  if (flags & RV_FS_CREATE)
    o |= O_CREAT;
  if (flags & RV_FS_EXCL)
    o |= O_EXCL;
  if (flags & RV_FS_TRUNC)
    o |= O_TRUNC;
  *out = o | O_CLOEXEC;
  return RV_OK;
}

int rv_file_open(rv_file **out, const char *path, unsigned flags) {
  *out = NULL;
  if (rv__sim_active())
    return rv__simfs_open(out, path, flags);
  int oflags;
  int rc = os_flags(flags, &oflags);
  if (rc != RV_OK)
    return rc;
  rv_file *f = malloc(sizeof *f);
  if (!f)
    return RV_ENOMEM;
  do
    f->fd = open(path, oflags, 0644);
  while (f->fd < 0 && errno == EINTR);
  if (f->fd < 0) {
    rc = err_of(errno);
    free(f);
    return rc;
  }
  /* A directory opens fine for reading; a file handle to one is a mistake. */
  struct stat st;
  if (fstat(f->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(f->fd);
    free(f);
    return RV_EINVAL;
  }
  *out = f;
  return RV_OK;
}

void rv_file_close(rv_file *f) {
  if (!f)
    return;
  if (rv__sim_active()) {
    rv__simfs_close(f);
    return;
  }
  close(f->fd); /* errors of close are not actionable: durability comes from sync */
  free(f);
}

ssize_t rv_file_pread(rv_file *f, void *buf, size_t len, uint64_t off) {
  if (rv__sim_active())
    return rv__simfs_pread(f, buf, len, off);
  uint8_t *p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(f->fd, p + got, len - got, (off_t)(off + got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return err_of(errno);
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

int rv_file_pwrite(rv_file *f, const void *buf, size_t len, uint64_t off) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return rv_file_pwritev(f, &iov, 1, off);
}

/* Iovecs written per pwritev call (the kernel's IOV_MAX is 1024). */
#define FS_OS_IOV_BATCH 64

int rv_file_pwritev(rv_file *f, const struct iovec *iov, int iovcnt, uint64_t off) {
  if (rv__sim_active())
    return rv__simfs_pwritev(f, iov, iovcnt, off);
  /* Short writes happen on a full disk or a signal: continue from a private copy of the list. */
  struct iovec v[FS_OS_IOV_BATCH];
  int i = 0;
  size_t skip = 0; /* bytes of iov[i] already written */
  for (;;) {
    while (i < iovcnt && iov[i].iov_len == skip) { /* nothing (left) in this one */
      i++;
      skip = 0;
    }
    if (i == iovcnt)
      break;
    int k = 0;
    for (int j = i; j < iovcnt && k < FS_OS_IOV_BATCH; j++, k++) {
      v[k] = iov[j];
      if (j == i) {
        v[k].iov_base = (uint8_t *)v[k].iov_base + skip;
        v[k].iov_len -= skip;
      }
    }
    ssize_t n = pwritev(f->fd, v, k, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return err_of(errno);
    if (n == 0)
      return RV_ENOSPC;
    off += (uint64_t)n;
    size_t left = (size_t)n;
    while (i < iovcnt && left >= iov[i].iov_len - skip) {
      left -= iov[i].iov_len - skip;
      skip = 0;
      i++;
    }
    skip += left;
  }
  return RV_OK;
}

int rv_file_size(rv_file *f, uint64_t *out) {
  if (rv__sim_active())
    return rv__simfs_size(f, out);
  struct stat st;
  if (fstat(f->fd, &st) != 0)
    return err_of(errno);
  *out = (uint64_t)st.st_size;
  return RV_OK;
}

int rv_file_truncate(rv_file *f, uint64_t size) {
  if (rv__sim_active())
    return rv__simfs_truncate(f, size);
  int rc;
  do
    rc = ftruncate(f->fd, (off_t)size);
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? RV_OK : err_of(errno);
}

/*
 * fdatasync flushes the data and the metadata needed to read it back (the
 * size), not timestamps.  A failure is final: the kernel may already have
 * dropped the dirty pages, so the EINTR retry is the only one.
 */
int rv_file_sync(rv_file *f) {
  if (rv__sim_active())
    return rv__simfs_sync(f);
  int rc;
  do
    rc = fdatasync(f->fd);
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? RV_OK : err_of(errno);
}

int rv_fs_rename(const char *from, const char *to) {
  if (rv__sim_active())
    return rv__simfs_rename(from, to);
  return rename(from, to) == 0 ? RV_OK : err_of(errno);
}

int rv_fs_unlink(const char *path) {
  if (rv__sim_active())
    return rv__simfs_unlink(path);
  return unlink(path) == 0 ? RV_OK : err_of(errno);
}

int rv_fs_mkdir(const char *path) {
  if (rv__sim_active())
    return rv__simfs_mkdir(path);
  return mkdir(path, 0755) == 0 ? RV_OK : err_of(errno);
}

int rv_fs_rmdir(const char *path) {
  if (rv__sim_active())
    return rv__simfs_rmdir(path);
  return rmdir(path) == 0 ? RV_OK : err_of(errno);
}

/* Open a directory for fsync/syncfs. */
static int open_dir(const char *path) {
  int fd;
  do
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return fd;
}

/* Directories need fsync, not fdatasync, to make their entries durable. */
int rv_fs_sync_dir(const char *path) {
  if (rv__sim_active())
    return rv__simfs_sync_dir(path);
  int fd = open_dir(path);
  if (fd < 0)
    return err_of(errno);
  int rc;
  do
    rc = fsync(fd);
  while (rc != 0 && errno == EINTR);
  int err = rc == 0 ? RV_OK : err_of(errno);
  close(fd);
  return err;
}

int rv_fs_syncfs(const char *path) {
  if (rv__sim_active())
    return rv__simfs_syncfs(path);
  int fd = open_dir(path);
  if (fd < 0)
    return err_of(errno);
  int rc;
  do
    rc = syncfs(fd);
  while (rc != 0 && errno == EINTR);
  int err = rc == 0 ? RV_OK : err_of(errno);
  close(fd);
  return err;
}

int rv_fs_stat(const char *path, rv_fs_info *st) {
  if (rv__sim_active())
    return rv__simfs_stat(path, st);
  struct stat s;
  if (stat(path, &s) != 0)
    return err_of(errno);
  st->is_dir = S_ISDIR(s.st_mode);
  st->size = (uint64_t)s.st_size;
  return RV_OK;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int rv_fs_list(const char *path, char ***names, size_t *n) {
  *names = NULL;
  *n = 0;
  if (rv__sim_active())
    return rv__simfs_list(path, names, n);
  DIR *d = opendir(path);
  if (!d)
    return err_of(errno);
  char **v = NULL;
  size_t len = 0, cap = 0;
  int rc = RV_OK;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (len == cap) {
      if (cap >= RV_FS_LIST_MAX) {
        rc = RV_ELIMIT;
        break;
      }
      size_t ncap = cap ? cap * 2 : 16;
      char **nv = realloc(v, ncap * sizeof *nv);
      if (!nv) {
        rc = RV_ENOMEM;
        break;
      }
      v = nv;
      cap = ncap;
    }
    if (!(v[len] = strdup(e->d_name))) {
      rc = RV_ENOMEM;
      break;
    }
    len++;
  }
  closedir(d);
  if (rc != RV_OK) {
    rv_fs_list_free(v, len);
    return rc;
  }
  if (len > 1)
    qsort(v, len, sizeof *v, cmp_names);
  *names = v;
  *n = len;
  return RV_OK;
}

void rv_fs_list_free(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

/* ---- written once over the functions above (both backends) ---------------------- */

bool rv_fs_exists(const char *path) {
  rv_fs_info st;
  return rv_fs_stat(path, &st) == RV_OK;
}

int rv_fs_mkdir_p(const char *path) {
  char tmp[RV_FS_PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
    return RV_EINVAL;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = 0;
    int rc = rv_fs_mkdir(tmp);
    *p = '/';
    if (rc != RV_OK && rc != RV_EEXIST)
      return rc;
  }
  int rc = rv_fs_mkdir(tmp);
  if (rc == RV_EEXIST) {
    rv_fs_info st;
    rc = rv_fs_stat(tmp, &st);
    if (rc == RV_OK && !st.is_dir)
      rc = RV_EEXIST;
  }
  return rc;
}

int rv_fs_read_file(const char *path, size_t max, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  rv_file *f;
  int rc = rv_file_open(&f, path, RV_FS_READ);
  if (rc != RV_OK)
    return rc;
  uint64_t size;
  rc = rv_file_size(f, &size);
  if (rc == RV_OK && size > max)
    rc = RV_ELIMIT;
  char *buf = NULL;
  if (rc == RV_OK && !(buf = malloc((size_t)size + 1)))
    rc = RV_ENOMEM;
  if (rc == RV_OK) {
    ssize_t n = rv_file_pread(f, buf, (size_t)size, 0);
    if (n < 0) {
      rc = (int)n;
    } else {
      buf[n] = '\0';
      *out = buf;
      *len = (size_t)n;
      buf = NULL;
    }
  }
  free(buf);
  rv_file_close(f);
  return rc;
}
