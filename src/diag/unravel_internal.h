/* ravel unravel's internal model, shared by unravel.c (graph) and unravel_explain.c (text, JSON). */
#ifndef RAVEL_DIAG_UNRAVEL_INTERNAL_H
#define RAVEL_DIAG_UNRAVEL_INTERNAL_H

#include "diag/unravel.h"

/* The condition the coord client waits on for a free lock connection (coord_client.c). */
#define UR_POOL_COND "coord-pool-free"

typedef enum { UR_THREAD, UR_LOCK, UR_DLOCK, UR_MESSAGE, UR_PROCESS } ur_kind;

typedef enum {
  UR_E_WAITS,  /* thread -> lock or dlock it waits for */
  UR_E_HELD,   /* lock -> a thread holding it (hold: the "held" entry) */
  UR_E_QUEUED, /* reader thread -> a writer queued on the lock it wants */
  UR_E_DHELD,  /* dlock -> its holder thread */
  UR_E_MSGS,   /* message node -> process node */
} ur_ekind;

typedef struct ur_smap {
  char **keys;
  size_t *vals;
  size_t cap, n;
} ur_smap;

typedef struct ur_node {
  ur_kind kind;
  char *id, *label;
  int proc;          /* index in procs, -1 for dlocks and unknown processes */
  const json_t *th;  /* thread: its threads.json entry (NULL for a ghost) */
  const json_t *info;/* dlock: its LOCK.INFO */
  long long tid;
  bool ghost;        /* a thread known only from coord's description */
  bool ghost_waits;
  char *ghost_group, *desc;
  bool write_held;   /* lock: someone holds it in write mode */
  size_t nwaiters;   /* lock: threads waiting for it */
  bool pool;         /* lock: the coord client's pool of lock connections (a condition) */
  size_t *writers, nwriters, capwriters; /* lock: threads queued to write-lock it */
  int cycle;         /* index of the deadlock this node is part of, or -1 */
  int behind;        /* index of the deadlock it waits on (transitively), or -1 */
} ur_node;

typedef struct ur_edge {
  size_t from, to;
  ur_ekind kind;
  const json_t *hold;
  char *label;
} ur_edge;

typedef struct ur_proc {
  char *dir, *kind, *group, *channel;
  long long pid;
  bool answered, outside, has_queue;
  json_t *threads;
  size_t node, nthreads;
  long long in_flight, timeouts, held;
} ur_proc;

typedef struct ur_cycle {
  size_t *nodes; /* the elementary cycle, in order */
  size_t *via;   /* edge index from nodes[k] to nodes[k+1] */
  size_t n, comp;
} ur_cycle;

typedef struct ur {
  char *dir;
  int64_t hold_ms, wait_ms;
  json_t *manifest, *locktable, *sessions, *stats;
  ur_proc *procs;
  size_t nprocs, capprocs;
  ur_node *nodes;
  size_t nn, capn;
  ur_edge *edges;
  size_t ne, cape;
  ur_smap ids, tids, pids;
  ur_smap dlocks; /* coord's lock table: lock name -> index */
  size_t *off, *adj, *roff, *radj; /* CSR of edge indexes, forward and reverse */
  ur_cycle *cycles;
  size_t ncycles, capcycles;
  size_t nthreads, ndlocks;
  size_t granted_since_dump; /* dlock waits in a dump that coord's table shows granted */
  size_t unconfirmed;        /* waits not the same as in the earlier capture (confirm_dir) */
} ur;

void *ur_xrealloc(void *p, size_t n);
char *ur_strdup(const char *s);
char *ur_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *ur_jstr(const json_t *o, const char *key);
long long ur_jint(const json_t *o, const char *key);
bool ur_smap_get(const ur_smap *m, const char *k, size_t *v);
void ur_smap_put(ur_smap *m, const char *k, size_t v);
const char *ur_verb(const char *wait_kind);
bool ur_is_lock_wait(const char *kind);
const char *ur_dlock_name(const json_t *wait);
void ur_free(ur *u);

/* The result object of rv_unravel_dir (without "stats"). */
json_t *ur_explain(ur *u);

#endif
