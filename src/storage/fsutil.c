/* Filesystem helpers (see fsutil.h), over rt/fs.h. */
#include "storage/fsutil.h"

#include "rt/fs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rv_mkdir_p(const char *path) {
  char buf[RV_FSUTIL_PATH_MAX];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return RV_EINVAL;
  memcpy(buf, path, n + 1);
  /* Component by component: a directory made here is durable only once the directory
   * holding its name is synced (rt/fs.h); otherwise a crash can forget it and everything
   * below it, however carefully that was synced (found by the simulator, twice). */
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0)
      continue;
    char c = buf[i];
    buf[i] = 0;
    if (!rv_fs_exists(buf)) {
      int rc = rv_fs_mkdir(buf);
      if (rc != RV_OK && rc != RV_EEXIST)
        return rc;
      char *slash = strrchr(buf, '/');
      if (slash) {
        *slash = 0;
        rc = rv_fs_sync_dir(slash == buf ? "/" : buf);
        *slash = '/';
        if (rc != RV_OK)
          return rc;
      }
    }
    buf[i] = c;
  }
  return RV_OK;
}

void rv_rm_rf(const char *path) {
  char **names;
  size_t n;
  if (rv_fs_list(path, &names, &n) == RV_OK) {
    for (size_t i = 0; i < n; i++) {
      char sub[RV_FSUTIL_PATH_MAX];
      snprintf(sub, sizeof sub, "%s/%s", path, names[i]);
      rv_fs_info st;
      if (rv_fs_stat(sub, &st) == RV_OK && st.is_dir)
        rv_rm_rf(sub);
      else
        (void)rv_fs_unlink(sub);
    }
    rv_fs_list_free(names, n);
  }
  (void)rv_fs_rmdir(path);
}

int rv_write_file_durable(const char *dir, const char *name, const char *text) {
  char path[RV_FSUTIL_PATH_MAX], tmp[RV_FSUTIL_PATH_MAX + 8];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  rv_file *f;
  int rc = rv_file_open(&f, tmp, RV_FS_WRITE | RV_FS_CREATE | RV_FS_TRUNC);
  if (rc != RV_OK)
    return rc;
  rc = rv_file_pwrite(f, text, strlen(text), 0);
  if (rc == RV_OK)
    rc = rv_file_sync(f);
  rv_file_close(f);
  if (rc == RV_OK)
    rc = rv_fs_rename(tmp, path);
  /* The rename is what replaces the old contents: it must be durable before we say so. */
  if (rc == RV_OK)
    rc = rv_fs_sync_dir(dir);
  return rc;
}

int rv_read_file_small(const char *path, size_t max, char **out) {
  size_t len;
  return rv_fs_read_file(path, max, out, &len);
}
