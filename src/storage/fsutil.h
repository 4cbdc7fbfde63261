/*
 * Small filesystem helpers the servers share for their own state files and
 * directories (the logs and the config database have their own formats).
 * Written over rt/fs.h, so they run on the simulated disk too.
 */
#ifndef RAVEL_STORAGE_FSUTIL_H
#define RAVEL_STORAGE_FSUTIL_H

#include <stddef.h>

/* Longest path the helpers build (directory + name). */
#define RV_FSUTIL_PATH_MAX 1024

/* mkdir -p, durably: each directory it creates has its name synced into its parent
 * before it returns.  0, or an rv_err (rv_strerror says why). */
int rv_mkdir_p(const char *path);
/* rm -rf of a directory tree (errors ignored: used to drop what is no longer wanted). */
void rv_rm_rf(const char *path);
/*
 * Replace dir/name with text durably: write dir/name.tmp, sync it, rename
 * it over the old one, sync the directory.  0 or an rv_err.
 */
int rv_write_file_durable(const char *dir, const char *name, const char *text);
/*
 * Read a small file whole (at most max bytes) into a malloc'd NUL-terminated
 * string: 0, RV_ENOTFOUND when it does not exist, RV_ELIMIT, or an rv_err.
 */
int rv_read_file_small(const char *path, size_t max, char **out);

#endif
