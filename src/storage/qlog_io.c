/*
 * qlog_io: directory helpers the queue's log and journals share.  Files go
 * through rt/fs.h (the rt seam), so the same code runs on the real disk and
 * on the simulator's.
 */
#include "storage/qlog_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* Digits in a numbered file name: enough for any uint64_t. */
#define RV__QIO_NUMBER_DIGITS 20

/*
 * Storage directories are created on first use; the parent must exist.  A
 * new directory's own entry lives in its parent, which must be synced too
 * before anything inside counts as durable: *created tells the caller so.
 */
int rv__qio_open_dir(const char *dir, bool *created) {
  *created = false;
  int rc = rv_fs_mkdir(dir);
  if (rc == RV_OK) {
    *created = true;
    return RV_OK;
  }
  if (rc != RV_EEXIST)
    return rc;
  rv_fs_info st;
  rc = rv_fs_stat(dir, &st);
  return rc == RV_OK && !st.is_dir ? RV_EINVAL : rc;
}

void rv__qio_parent(char *out, const char *dir) {
  snprintf(out, RV__QIO_PATH_MAX, "%s", dir);
  size_t len = strlen(out);
  while (len > 1 && out[len - 1] == '/')
    out[--len] = '\0';
  char *slash = strrchr(out, '/');
  if (!slash)
    snprintf(out, RV__QIO_PATH_MAX, ".");
  else if (slash == out)
    out[1] = '\0';
  else
    *slash = '\0';
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
  char **names;
  size_t nnames;
  int rc = rv_fs_list(dir, &names, &nnames);
  if (rc != RV_OK)
    return rc == RV_ENOMEM || rc == RV_ELIMIT ? rc : RV_EIO;
  size_t len = 0, slen = strlen(suffix);
  uint64_t *v = nnames ? malloc(nnames * sizeof *v) : NULL;
  if (nnames && !v) {
    rv_fs_list_free(names, nnames);
    return RV_ENOMEM;
  }
  for (size_t k = 0; k < nnames; k++) {
    const char *name = names[k];
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
    if (ok)
      v[len++] = num;
  }
  rv_fs_list_free(names, nnames);
  if (len > 1)
    qsort(v, len, sizeof *v, rv__qio_cmp_u64);
  if (len == 0) {
    free(v);
    v = NULL;
  }
  *out = v;
  *n = len;
  return RV_OK;
}

void rv__qio_path(char *out, const char *dir, uint64_t n, const char *suffix) {
  snprintf(out, RV__QIO_PATH_MAX, "%s/%0*" PRIu64 "%s", dir, RV__QIO_NUMBER_DIGITS, n, suffix);
}
