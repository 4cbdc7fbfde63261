/*
 * An SQLite VFS over rt/fs.h, so that coord's config database (configdb.c)
 * lives on the simulated disk while a simulated world runs: its files are
 * rv_files on the process's volume, its syncs are the simulated disk's (with
 * their virtual cost and crash semantics), its randomness and clock are the
 * world's.  Outside the simulator SQLite's own unix VFS is used, unchanged.
 *
 * Limits of the VFS (all that configdb needs): one connection per database
 * file (the WAL index, SQLite's "-shm", is kept in the memory of that
 * connection, and file locks are no-ops), no memory-mapped I/O, no loadable
 * extensions.
 */
#ifndef RAVEL_STORAGE_SQLITE_VFS_H
#define RAVEL_STORAGE_SQLITE_VFS_H

/* Registered name of the VFS. */
#define RV_SQLITE_VFS_NAME "ravel-rt"
/* Longest path SQLite may hand the VFS (bytes, with the NUL). */
#define RV_SQLITE_VFS_PATH_MAX 1024

/*
 * The VFS sqlite3_open_v2 should use for the calling thread: RV_SQLITE_VFS_NAME
 * (registered on first use) while a simulated world runs on it, NULL (SQLite's
 * default) otherwise.
 */
const char *rv_sqlite_vfs_for_rt(void);

#endif
