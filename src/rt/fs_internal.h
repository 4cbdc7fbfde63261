/*
 * The simulated disk's side of rt/fs.h (fs_sim.c): fs_os.c forwards every
 * public function here while a simulated world runs on the calling OS
 * thread, exactly as rt_os.c forwards to rt_sim.c.  Same contracts as fs.h.
 */
#ifndef RAVEL_RT_FS_INTERNAL_H
#define RAVEL_RT_FS_INTERNAL_H

#include "rt/fs.h"

int rv__simfs_open(rv_file **out, const char *path, unsigned flags);
void rv__simfs_close(rv_file *f);
ssize_t rv__simfs_pread(rv_file *f, void *buf, size_t len, uint64_t off);
int rv__simfs_pwritev(rv_file *f, const struct iovec *iov, int iovcnt, uint64_t off);
int rv__simfs_size(rv_file *f, uint64_t *out);
int rv__simfs_truncate(rv_file *f, uint64_t size);
int rv__simfs_sync(rv_file *f);
int rv__simfs_rename(const char *from, const char *to);
int rv__simfs_unlink(const char *path);
int rv__simfs_mkdir(const char *path);
int rv__simfs_rmdir(const char *path);
int rv__simfs_sync_dir(const char *path);
int rv__simfs_syncfs(const char *path);
int rv__simfs_stat(const char *path, rv_fs_info *st);
int rv__simfs_list(const char *path, char ***names, size_t *n);

#endif
