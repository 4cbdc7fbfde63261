/*
 * Small filesystem helpers the servers share for their own state files and
 * directories (the logs and the config database have their own formats).
 */
#ifndef RAVEL_STORAGE_FSUTIL_H
#define RAVEL_STORAGE_FSUTIL_H

/* mkdir -p: 0, or -1 with errno set. */
int rv_mkdir_p(const char *path);
/* rm -rf of a directory tree (errors ignored: used to drop what is no longer wanted). */
void rv_rm_rf(const char *path);
/*
 * Replace dir/name with text durably: write a temp file, fsync it, rename it
 * over the old one, fsync the directory.  RV_OK or RV_EIO.
 */
int rv_write_file_durable(const char *dir, const char *name, const char *text);

#endif
