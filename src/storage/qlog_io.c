/*
 * qlog_io: the few POSIX file operations the queue's storage needs, with
 * the retries (EINTR, short transfers) done once here instead of at every
 * call site.  Plain POSIX: files and fsync are not part of the rt seam.
 */
#define _GNU_SOURCE /* syncfs */
#include "storage/qlog_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Digits in a numbered file name: enough for any uint64_t. */
#define RV__QIO_NUMBER_DIGITS 20
/* Names a directory listing may return before we refuse (bounds the array). */
#define RV__QIO_LIST_MAX (1u << 20)

/* Short writes happen on a full disk or a signal; retry until done or a real error. */
int rv__qio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = ENOSPC;
      return RV_EIO;
    }
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return RV_OK;
}

/* As rv__qio_pwrite_all for a gather list: one syscall for a whole batch in the common case. */
int rv__qio_pwritev_all(int fd, struct iovec *iov, int iovcnt, uint64_t off) {
  while (iovcnt > 0) {
    ssize_t n = pwritev(fd, iov, iovcnt, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = ENOSPC;
      return RV_EIO;
    }
    off += (uint64_t)n;
    size_t left = (size_t)n;
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return RV_OK;
}

/* A short count means end of file; the caller decides whether that is a torn record. */
ssize_t rv__qio_pread_full(int fd, void *buf, size_t len, uint64_t off) {
  uint8_t *p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/*
 * fdatasync flushes the data and the metadata needed to read it back (the
 * size), not timestamps: exactly what a log needs.  A failure is final: the
 * kernel may already have dropped the dirty pages, so callers never retry.
 */
int rv__qio_fdatasync(int fd) {
  int rc;
  do
    rc = fdatasync(fd);
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? RV_OK : RV_EIO;
}

/* Directories need fsync, not fdatasync, to make a new entry durable. */
int rv__qio_fsync(int fd) {
  int rc;
  do
    rc = fsync(fd);
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? RV_OK : RV_EIO;
}

/* Recovery: one flush of everything on the file system holding fd. */
int rv__qio_syncfs(int fd) {
  int rc;
  do
    rc = syncfs(fd);
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? RV_OK : RV_EIO;
}

/*
 * Storage directories are created on first use; the parent must exist.  A
 * new directory's own entry lives in its parent, which must be fsync'ed too
 * before anything inside counts as durable: *parent_fd gets the parent open
 * for that (-1 when the directory already existed).
 */
int rv__qio_open_dir(const char *dir, int *parent_fd) {
  *parent_fd = -1;
  bool created = mkdir(dir, 0755) == 0;
  if (!created && errno != EEXIST)
    return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0 && created) {
    char parent[RV__QIO_PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    size_t len = strlen(parent);
    while (len > 1 && parent[len - 1] == '/')
      parent[--len] = '\0';
    char *slash = strrchr(parent, '/');
    if (!slash)
      snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
      parent[1] = '\0';
    else
      *slash = '\0';
    *parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  return fd;
}

/* qsort order for file numbers. */
static int rv__qio_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/*
 * Segment and journal files are found by name alone: a fixed-width decimal
 * number, so that ls sorts them too.  Anything else in the directory (saved
 * tails, .bad files, an operator's notes) is ignored.
 */
int rv__qio_list_numbered(const char *dir, const char *suffix, uint64_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return RV_EIO;
  size_t cap = 0, len = 0, slen = strlen(suffix);
  uint64_t *v = NULL;
  struct dirent *e;
  int rc = RV_OK;
  while ((e = readdir(d)) != NULL) {
    const char *name = e->d_name;
    if (strlen(name) != RV__QIO_NUMBER_DIGITS + slen || strcmp(name + RV__QIO_NUMBER_DIGITS, suffix))
      continue;
    uint64_t num = 0;
    bool ok = true;
    for (int i = 0; i < RV__QIO_NUMBER_DIGITS && ok; i++) {
      if (name[i] < '0' || name[i] > '9' || num > (UINT64_MAX - 9) / 10)
        ok = false;
      else
        num = num * 10 + (uint64_t)(name[i] - '0');
    }
    if (!ok)
      continue;
    if (len == cap) {
      if (cap >= RV__QIO_LIST_MAX) {
        rc = RV_ELIMIT;
        break;
      }
      size_t ncap = cap ? cap * 2 : 16;
      uint64_t *nv = realloc(v, ncap * sizeof *nv);
      if (!nv) {
        rc = RV_ENOMEM;
        break;
      }
      v = nv;
      cap = ncap;
    }
    v[len++] = num;
  }
  closedir(d);
  if (rc != RV_OK) {
    free(v);
    return rc;
  }
  if (len > 1)
    qsort(v, len, sizeof *v, rv__qio_cmp_u64);
  *out = v;
  *n = len;
  return RV_OK;
}

void rv__qio_path(char *out, const char *dir, uint64_t n, const char *suffix) {
  snprintf(out, RV__QIO_PATH_MAX, "%s/%0*" PRIu64 "%s", dir, RV__QIO_NUMBER_DIGITS, n, suffix);
}
