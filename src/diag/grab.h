/*
 * ravel grab: capture the evidence of every process of a ravel system before
 * it is restarted.  The collector writes a directory in the layout below;
 * the archiver packs it into one tar.gz.  `ravel unravel` reads the same
 * layout (from an archive, or from a collection it makes itself of a live
 * system), so that the diagnosis of a live system and of its archive are the
 * same code over the same files.
 *
 * The layout of a collection directory (format "ravel-grab/1"), the
 * manifest's keys, what each file holds, the bounds and the limits are
 * documented in docs/grab.md; that page is the contract `ravel unravel`
 * reads against.  In short:
 *
 *   manifest.json          what was captured, from whom, what failed and why
 *   coord/                 sessions.json, session-ID.json, lock-table.json,
 *                          config-SERVICE.json, audit.json + admin files
 *   queue/                 stats.json + admin files
 *   SERVICE-REPLICA/       one per coord session (kind "service")
 *   target-N/              one per explicit --target (kind "target")
 *     admin files:         threads.txt, threads.json, locks.txt, metrics.txt,
 *                          history.json (if served)
 *     local process files: proc.json, stacks.txt (only when the admin
 *                          endpoint did not answer), log.txt
 *
 * lock-table.json is LOCK.LIST converted: coord's LOCK.LIST carries, for each
 * lock, the same map as LOCK.INFO, waiters included, all taken at one instant.
 *
 * RESP replies become JSON by the rule in diag/collect.h (rv_resp_to_json):
 * the collector states which replies are maps (coord sends a map as a flat
 * array key, value, ...) -> object; array -> array; integer -> number;
 * string -> string; nil -> null; error -> {"error": "..."}.
 *
 * manifest.json (every key is always present; null where unknown):
 *   {"format": "ravel-grab/1", "taken_at_ms": unix ms, "bound_ms": N,
 *    "elapsed_ms": N, "coord": "host:port"|null, "queue": "host:port"|null,
 *    "processes": [{"dir": "billing-1", "kind": "service", "service": "billing",
 *                   "replica": "1", "pid": 4242, "admin": "http://...",
 *                   "session": 4294967297, "answered": true,
 *                   "stacks_from_outside": false,
 *                   "files": ["threads.json", ...],
 *                   "failed": [{"what": "threads.json", "why": "..."}]}],
 *    "failed": [{"what": "...", "why": "..."}]}
 * kind is "coord", "queue", "service" or "target".
 */
#ifndef RAVEL_DIAG_GRAB_H
#define RAVEL_DIAG_GRAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RV_GRAB_FORMAT "ravel-grab/1"
#define RV_GRAB_TARGETS_MAX 32
/* Default total bound of one collection. */
#define RV_GRAB_DEFAULT_BOUND_MS 10000
/* Process folders in one collection (sessions beyond it are listed as failed). */
#define RV_GRAB_PROCESSES_MAX 256
/* Collection threads at once. */
#define RV_GRAB_WORKERS_MAX 32
/* rv_grab_extract refuses archives that unpack to more than this, or to
 * more entries than RV_GRAB_EXTRACT_MAX_ENTRIES. */
#define RV_GRAB_EXTRACT_MAX_BYTES (1024ull << 20)
#define RV_GRAB_EXTRACT_MAX_ENTRIES 100000

typedef struct rv_grab_opts {
  const char *coord_host; /* NULL: no coord (no discovery) */
  uint16_t coord_port;
  uint16_t coord_admin_port;  /* 0: coord's admin files are not taken */
  const char *queue_host;     /* NULL: no queue */
  uint16_t queue_http_port;
  /* Explicit targets: admin base URLs ("http://127.0.0.1:7500/") or "pid:N". */
  const char *targets[RV_GRAB_TARGETS_MAX];
  size_t ntargets;
  int64_t bound_ms;           /* total bound; 0: RV_GRAB_DEFAULT_BOUND_MS */
  int64_t per_request_ms;     /* one HTTP/RESP request; 0: bound/4, at most 3000 */
  bool outside_stacks;        /* take stacks with gdb/eu-stack when admin fails (default on in the CLI) */
} rv_grab_opts;

typedef struct rv_grab_result {
  size_t processes;           /* process folders written */
  size_t answered;            /* of which answered their admin endpoint */
  size_t failures;            /* entries in the manifest's failed lists */
  size_t files;               /* data files written (the manifest not counted) */
  int64_t elapsed_ms;
} rv_grab_result;

/* Collect into dir (created; must not exist or be empty).  RV_OK if the
 * manifest was written, even if parts failed (the manifest says which);
 * an error if nothing could be written.  why gets a message on error. */
int rv_grab_collect(const rv_grab_opts *o, const char *dir, rv_grab_result *res, char *why,
                    size_t whylen);

/* Pack dir into a tar.gz at path, entries under the directory's base name. */
int rv_grab_archive(const char *dir, const char *path, char *why, size_t whylen);

/* Unpack a grab archive into parent: its entries must all lie under one
 * top directory, which must not exist yet in parent; *out_dir gets
 * parent/TOP (free it).  Refused (RV_EINVAL, nothing left behind): absolute
 * paths, ".." or "." components, entries outside the top directory, links,
 * devices and other special files, archives over RV_GRAB_EXTRACT_MAX_BYTES
 * or RV_GRAB_EXTRACT_MAX_ENTRIES, and archives without TOP/manifest.json. */
int rv_grab_extract(const char *path, const char *parent, char **out_dir, char *why,
                    size_t whylen);

/* The same with another bound on the total size (tests). */
int rv_grab_extract_bounded(const char *path, const char *parent, unsigned long long max_bytes,
                            char **out_dir, char *why, size_t whylen);

/* Whether an archive entry's path is acceptable (the check extract applies):
 * relative, no "." or ".." components, no empty components but a trailing
 * slash.  On success *toplen gets the length of its first component. */
bool rv_grab_entry_path_ok(const char *path, size_t *toplen);

/* A directory name made of [A-Za-z0-9._-] from s (others become '_', a
 * leading '.' too), at most cap - 1 bytes, never empty. */
void rv_grab_sanitize(const char *s, char *out, size_t cap);

/* Remove a directory tree (no symlinks followed). RV_OK or RV_EIO. */
int rv_grab_rmtree(const char *dir);

#endif
