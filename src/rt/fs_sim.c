/*
 * The simulated disk: rt/fs.h while a simulated world runs (fs_os.c
 * forwards here).  docs/sim.md, "The simulated disk", is the guide.
 *
 * The world owns one disk (rv__sim_world_disk); the disk holds volumes, one
 * per simulated process name, created on first use.  A volume is a tree of
 * nodes (files and directories) under a root that always exists.  Paths are
 * virtual: "/data/queue" names the same node for every thread of the
 * process, and nothing touches the real disk.
 *
 * Durability is modelled strictly (POSIX promises no more):
 *  - a file has its current contents (what reads see) and its durable
 *    contents, plus the list of writes and truncations made since its last
 *    sync, in order.  rv_file_sync makes current durable;
 *  - a directory has its current entries and its durable entries, plus the
 *    list of operations (link a name, unlink a name, rename within it) since
 *    its last sync.  rv_fs_sync_dir makes current durable.  A rename between
 *    two directories is an unlink in one and a link in the other, each made
 *    durable by its own directory's sync;
 *  - rv_sim_disk_crash rebuilds every file and directory from its durable
 *    state plus the unsynced operations the faults keep (drawn from the
 *    world's PRNG, in node creation order, so a seed gives one outcome).
 *    Whatever is then unreachable from the root is gone: a file whose data
 *    was synced but whose name never was (no sync of its directory) is lost
 *    with its name when the crash drops that directory operation.
 *
 * Single OS thread, no preemption inside a coroutine: no locks.  A sync parks
 * the calling coroutine for RV_SIM_DISK_SYNC_NS of virtual time; the volume
 * may crash meanwhile (a volume epoch tells), and the sync then fails with
 * RV_ESTALE having made nothing durable.
 */
#include "rt/fs_internal.h"
#include "rt/rt_internal.h"
#include "rt/sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- data structures --------------------------------------------------------- */

typedef struct sim_node sim_node;

typedef struct dent {
  char *name;
  sim_node *node;
} dent;

/* Directory entries, sorted by strcmp of the name (listings come out sorted). */
typedef struct dmap {
  dent *v;
  size_t n, cap;
} dmap;

enum { OP_WRITE, OP_TRUNC };
typedef struct file_op {
  int kind;
  uint64_t off; /* OP_WRITE: where; OP_TRUNC: the new size */
  size_t len;   /* OP_WRITE */
  uint8_t *data;
} file_op;

enum { DOP_LINK, DOP_UNLINK, DOP_RENAME };
typedef struct dir_op {
  int kind;
  char *name;  /* LINK/UNLINK: the name; RENAME: the old name */
  char *name2; /* RENAME: the new name */
  sim_node *node;
} dir_op;

/* A byte buffer: a file's contents. */
typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

struct sim_node {
  uint64_t id; /* creation number in its volume: names it in the trace (paths may not be stable) */
  bool is_dir;
  bool mark; /* reachability, during collect() */
  /* file */
  bytes cur, dur;
  file_op *ops;
  size_t nops, capops;
  /* directory */
  dmap cur_ents, dur_ents;
  dir_op *dops;
  size_t ndops, capdops;
  sim_node *next; /* the volume's nodes, in creation order */
};

typedef struct sim_volume sim_volume;

/* What an rv_file is under the simulator (fs_os.c's struct is never used here). */
typedef struct sim_file {
  sim_volume *vol;
  sim_node *node; /* NULL once the volume crashed */
  unsigned flags;
  struct sim_file *next, *prev; /* the volume's open handles */
} sim_file;

struct sim_volume {
  char name[RV_SIM_NAME_MAX];
  sim_node *root;
  sim_node *nodes, *nodes_tail;
  sim_file *files;
  uint64_t bytes; /* file data held: current + durable + unsynced operations */
  uint64_t epoch; /* bumped by every crash */
  uint64_t next_id;
  double sync_eio;   /* rv_sim_disk_set_faults */
  uint64_t capacity; /* bytes of file data allowed */
  sim_volume *next;
};

typedef struct sim_disk {
  sim_volume *vols, *vols_tail;
} sim_disk;

static sim_file *sf(rv_file *f) { return (sim_file *)f; }

/* ---- small helpers ---------------------------------------------------------------- */

static int bytes_reserve(bytes *b, size_t n) {
  if (n <= b->cap)
    return RV_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < n)
    cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (!p)
    return RV_ENOMEM;
  b->p = p;
  b->cap = cap;
  return RV_OK;
}

/* Set b's length to len, zero-filling growth. */
static int bytes_resize(bytes *b, size_t len) {
  int rc = bytes_reserve(b, len);
  if (rc != RV_OK)
    return rc;
  if (len > b->len)
    memset(b->p + b->len, 0, len - b->len);
  b->len = len;
  return RV_OK;
}

static int bytes_write(bytes *b, uint64_t off, const void *data, size_t len) {
  if (off + len > b->len) {
    int rc = bytes_resize(b, (size_t)(off + len));
    if (rc != RV_OK)
      return rc;
  }
  memcpy(b->p + off, data, len);
  return RV_OK;
}

static int bytes_copy(bytes *dst, const bytes *src) {
  int rc = bytes_reserve(dst, src->len);
  if (rc != RV_OK)
    return rc;
  if (src->len)
    memcpy(dst->p, src->p, src->len);
  dst->len = src->len;
  return RV_OK;
}

static size_t dmap_find(const dmap *m, const char *name, bool *found) {
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(m->v[mid].name, name);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

static sim_node *dmap_get(const dmap *m, const char *name) {
  bool found;
  size_t i = dmap_find(m, name, &found);
  return found ? m->v[i].node : NULL;
}

static int dmap_set(dmap *m, const char *name, sim_node *node) {
  bool found;
  size_t i = dmap_find(m, name, &found);
  if (found) {
    m->v[i].node = node;
    return RV_OK;
  }
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 8;
    dent *v = realloc(m->v, cap * sizeof *v);
    if (!v)
      return RV_ENOMEM;
    m->v = v;
    m->cap = cap;
  }
  char *copy = strdup(name);
  if (!copy)
    return RV_ENOMEM;
  memmove(m->v + i + 1, m->v + i, (m->n - i) * sizeof *m->v);
  m->v[i] = (dent){copy, node};
  m->n++;
  return RV_OK;
}

static void dmap_del(dmap *m, const char *name) {
  bool found;
  size_t i = dmap_find(m, name, &found);
  if (!found)
    return;
  free(m->v[i].name);
  memmove(m->v + i, m->v + i + 1, (m->n - i - 1) * sizeof *m->v);
  m->n--;
}

static void dmap_clear(dmap *m) {
  for (size_t i = 0; i < m->n; i++)
    free(m->v[i].name);
  m->n = 0;
}

static void dmap_free(dmap *m) {
  dmap_clear(m);
  free(m->v);
  *m = (dmap){0};
}

static int dmap_copy(dmap *dst, const dmap *src) {
  dmap_clear(dst);
  for (size_t i = 0; i < src->n; i++) {
    int rc = dmap_set(dst, src->v[i].name, src->v[i].node);
    if (rc != RV_OK)
      return rc;
  }
  return RV_OK;
}

/* Bytes a node accounts for in its volume's capacity (current + durable + unsynced writes). */
static uint64_t node_bytes(const sim_node *n) {
  uint64_t b = (uint64_t)n->cur.len + n->dur.len;
  for (size_t i = 0; i < n->nops; i++)
    b += n->ops[i].len;
  return b;
}

static void file_ops_clear(sim_node *n) {
  for (size_t i = 0; i < n->nops; i++)
    free(n->ops[i].data);
  n->nops = 0;
}

static void dir_ops_clear(sim_node *n) {
  for (size_t i = 0; i < n->ndops; i++) {
    free(n->dops[i].name);
    free(n->dops[i].name2);
  }
  n->ndops = 0;
}

static void node_free(sim_node *n) {
  free(n->cur.p);
  free(n->dur.p);
  file_ops_clear(n);
  free(n->ops);
  dmap_free(&n->cur_ents);
  dmap_free(&n->dur_ents);
  dir_ops_clear(n);
  free(n->dops);
  free(n);
}

static sim_node *node_new(sim_volume *v, bool is_dir) {
  sim_node *n = calloc(1, sizeof *n);
  if (!n)
    return NULL;
  n->is_dir = is_dir;
  n->id = v->next_id++;
  if (v->nodes_tail)
    v->nodes_tail->next = n;
  else
    v->nodes = n;
  v->nodes_tail = n;
  return n;
}

static int file_op_add(sim_node *n, int kind, uint64_t off, const struct iovec *iov, int iovcnt,
                       size_t len) {
  if (n->nops == n->capops) {
    size_t cap = n->capops ? n->capops * 2 : 8;
    file_op *ops = realloc(n->ops, cap * sizeof *ops);
    if (!ops)
      return RV_ENOMEM;
    n->ops = ops;
    n->capops = cap;
  }
  file_op op = {.kind = kind, .off = off, .len = len};
  if (kind == OP_WRITE && len) {
    if (!(op.data = malloc(len)))
      return RV_ENOMEM;
    size_t at = 0;
    for (int i = 0; i < iovcnt; i++) {
      memcpy(op.data + at, iov[i].iov_base, iov[i].iov_len);
      at += iov[i].iov_len;
    }
  }
  n->ops[n->nops++] = op;
  return RV_OK;
}

static int dir_op_add(sim_node *d, int kind, const char *name, const char *name2, sim_node *node) {
  if (d->ndops == d->capdops) {
    size_t cap = d->capdops ? d->capdops * 2 : 8;
    dir_op *ops = realloc(d->dops, cap * sizeof *ops);
    if (!ops)
      return RV_ENOMEM;
    d->dops = ops;
    d->capdops = cap;
  }
  dir_op op = {.kind = kind, .node = node, .name = strdup(name), .name2 = name2 ? strdup(name2) : NULL};
  if (!op.name || (name2 && !op.name2)) {
    free(op.name);
    free(op.name2);
    return RV_ENOMEM;
  }
  d->dops[d->ndops++] = op;
  return RV_OK;
}

/* Apply one directory operation to a set of entries. */
static int dir_op_apply(dmap *m, const dir_op *op) {
  switch (op->kind) {
  case DOP_LINK:
    return dmap_set(m, op->name, op->node);
  case DOP_UNLINK:
    dmap_del(m, op->name);
    return RV_OK;
  default: /* DOP_RENAME: the old name goes only if it still names the node */
    if (dmap_get(m, op->name) == op->node)
      dmap_del(m, op->name);
    return dmap_set(m, op->name2, op->node);
  }
}

/* ---- volumes and paths --------------------------------------------------------------- */

static sim_disk *disk_of(rv_sim_world *w, bool create) {
  void **slot = rv__sim_world_disk(w);
  if (!*slot && create)
    *slot = calloc(1, sizeof(sim_disk));
  return *slot;
}

static sim_volume *volume_find(rv_sim_world *w, const char *name, bool create) {
  sim_disk *d = disk_of(w, create);
  if (!d)
    return NULL;
  for (sim_volume *v = d->vols; v; v = v->next)
    if (strcmp(v->name, name) == 0)
      return v;
  if (!create)
    return NULL;
  sim_volume *v = calloc(1, sizeof *v);
  if (!v)
    return NULL;
  snprintf(v->name, sizeof v->name, "%s", name);
  v->capacity = RV_SIM_DISK_VOLUME_BYTES_MAX;
  if (!(v->root = node_new(v, true))) {
    free(v);
    return NULL;
  }
  if (d->vols_tail)
    d->vols_tail->next = v;
  else
    d->vols = v;
  d->vols_tail = v;
  return v;
}

/* The calling process's volume; NULL outside a simulated process. */
static sim_volume *volume_current(void) {
  rv_sim_proc *p = rv_sim_proc_current();
  return p ? volume_find(rv__sim_tls, rv_sim_proc_name(p), true) : NULL;
}

/*
 * Walk path in the current tree.  *dir gets the directory holding the last
 * component (NULL for the root itself), leaf that component, and the return
 * value the node it names (NULL when missing).  *err is set for a bad path
 * or a missing directory on the way.
 */
static sim_node *resolve(sim_volume *v, const char *path, sim_node **dir, char *leaf, int *err) {
  *err = RV_OK;
  *dir = NULL;
  leaf[0] = '\0';
  if (!path || strlen(path) >= RV_FS_PATH_MAX) {
    *err = RV_EINVAL;
    return NULL;
  }
  sim_node *cur = v->root;
  const char *p = path;
  for (;;) {
    while (*p == '/')
      p++;
    if (!*p)
      return cur;
    const char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > RV_FS_NAME_MAX || (len == 2 && p[0] == '.' && p[1] == '.')) {
      *err = RV_EINVAL; /* ".." is not modelled: nothing ravel runs uses it */
      return NULL;
    }
    if (len == 1 && p[0] == '.') {
      p += len;
      continue;
    }
    if (!cur) {
      *err = RV_ENOTFOUND;
      return NULL;
    }
    if (!cur->is_dir) {
      *err = RV_EINVAL;
      return NULL;
    }
    memcpy(leaf, p, len);
    leaf[len] = '\0';
    *dir = cur;
    cur = dmap_get(&cur->cur_ents, leaf);
    p += len;
  }
}

/* Resolve a path that must end in a name inside an existing directory. */
/* A path looked up on the calling process's volume. */
typedef struct sim_lookup {
  sim_volume *v;
  sim_node *dir;  /* the directory holding it (NULL for the root) */
  sim_node *node; /* NULL when absent */
  char leaf[RV_FS_NAME_MAX + 1];
} sim_lookup;

/* Look path up; entry: it must be an entry of a directory (not the root itself). */
static int lookup(const char *path, bool entry, sim_lookup *l) {
  l->v = volume_current();
  if (!l->v)
    return RV_EINVAL;
  int err;
  l->node = resolve(l->v, path, &l->dir, l->leaf, &err);
  if (err == RV_OK && entry && !l->dir)
    err = RV_EINVAL;
  return err;
}

/*
 * Free the nodes nothing can reach any more: not from the root through
 * current or durable entries or pending directory operations (a crash could
 * bring those back), and not open.
 */
static void collect(sim_volume *v) {
  for (sim_node *n = v->nodes; n; n = n->next)
    n->mark = false;
  for (sim_file *f = v->files; f; f = f->next)
    if (f->node)
      f->node->mark = true;
  v->root->mark = true;
  /* Marking in creation order until nothing changes: trees are shallow and small. */
  bool changed = true;
  while (changed) {
    changed = false;
    for (sim_node *n = v->nodes; n; n = n->next) {
      if (!n->mark || !n->is_dir)
        continue;
      const dmap *maps[2] = {&n->cur_ents, &n->dur_ents};
      for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < maps[k]->n; i++)
          if (!maps[k]->v[i].node->mark)
            maps[k]->v[i].node->mark = changed = true;
      for (size_t i = 0; i < n->ndops; i++)
        if (!n->dops[i].node->mark)
          n->dops[i].node->mark = changed = true;
    }
  }
  sim_node **pp = &v->nodes;
  v->nodes_tail = NULL;
  while (*pp) {
    sim_node *n = *pp;
    if (n->mark) {
      v->nodes_tail = n;
      pp = &n->next;
      continue;
    }
    *pp = n->next;
    v->bytes -= node_bytes(n);
    node_free(n);
  }
}

/* Uniform in [0, 1) from the world's PRNG. */
static double draw01(rv_sim_world *w) {
  return (double)(rv_rng_next(rv_sim_rng(w)) >> 11) * 0x1.0p-53;
}

/*
 * A sync's cost in virtual time; RV_ESTALE when the volume crashed
 * meanwhile, RV_EIO when an injected failure says so (nothing became durable).
 */
static int sync_wait(sim_volume *v, int64_t cost_ns) {
  uint64_t epoch = v->epoch;
  rv_thread *self = rv_thread_self();
  int64_t until = rv_now_ns() + cost_ns;
  while (rv_now_ns() < until)
    rv__park(self, until);
  if (v->epoch != epoch)
    return RV_ESTALE;
  if (v->sync_eio > 0 && draw01(rv__sim_tls) < v->sync_eio) {
    rv_sim_note(rv__sim_tls, "disk sync %s EIO (injected)", v->name);
    return RV_EIO;
  }
  return RV_OK;
}

static int file_make_durable(sim_volume *v, sim_node *n) {
  if (n->is_dir) {
    int rc = dmap_copy(&n->dur_ents, &n->cur_ents);
    if (rc == RV_OK)
      dir_ops_clear(n);
    return rc;
  }
  v->bytes -= node_bytes(n);
  int rc = bytes_copy(&n->dur, &n->cur);
  if (rc == RV_OK)
    file_ops_clear(n);
  v->bytes += node_bytes(n);
  return rc;
}

/* ---- the rt/fs.h functions ------------------------------------------------------------ */

int rv__simfs_open(rv_file **out, const char *path, unsigned flags) {
  if (!(flags & RV_FS_RDWR) || ((flags & RV_FS_TRUNC) && !(flags & RV_FS_WRITE)) ||
      ((flags & RV_FS_EXCL) && !(flags & RV_FS_CREATE)))
    return RV_EINVAL;
  sim_lookup l;
  int rc = lookup(path, true, &l);
  if (rc != RV_OK)
    return rc;
  sim_volume *v = l.v;
  sim_node *dir = l.dir, *node = l.node;
  const char *leaf = l.leaf;
  if (node && node->is_dir)
    return RV_EINVAL;
  if (node && (flags & RV_FS_EXCL))
    return RV_EEXIST;
  if (!node && !(flags & RV_FS_CREATE))
    return RV_ENOTFOUND;
  sim_file *f = calloc(1, sizeof *f);
  if (!f)
    return RV_ENOMEM;
  if (!node) {
    if (!(node = node_new(v, false)) || dmap_set(&dir->cur_ents, leaf, node) != RV_OK ||
        dir_op_add(dir, DOP_LINK, leaf, NULL, node) != RV_OK) {
      dmap_del(&dir->cur_ents, leaf);
      free(f);
      collect(v);
      return RV_ENOMEM;
    }
  } else if ((flags & RV_FS_TRUNC) && node->cur.len > 0) {
    v->bytes -= node_bytes(node);
    rc = file_op_add(node, OP_TRUNC, 0, NULL, 0, 0);
    if (rc == RV_OK)
      node->cur.len = 0;
    v->bytes += node_bytes(node);
    if (rc != RV_OK) {
      free(f);
      return rc;
    }
  }
  f->vol = v;
  f->node = node;
  f->flags = flags;
  f->next = v->files;
  if (v->files)
    v->files->prev = f;
  v->files = f;
  *out = (rv_file *)f;
  return RV_OK;
}

void rv__simfs_close(rv_file *file) {
  sim_file *f = sf(file);
  sim_volume *v = f->vol;
  if (f->prev)
    f->prev->next = f->next;
  else
    v->files = f->next;
  if (f->next)
    f->next->prev = f->prev;
  free(f);
  collect(v); /* an unlinked file's contents go with its last handle */
}

ssize_t rv__simfs_pread(rv_file *file, void *buf, size_t len, uint64_t off) {
  sim_file *f = sf(file);
  if (!f->node)
    return RV_ESTALE;
  if (!(f->flags & RV_FS_READ))
    return RV_EINVAL;
  const bytes *b = &f->node->cur;
  if (off >= b->len)
    return 0;
  size_t n = b->len - (size_t)off < len ? b->len - (size_t)off : len;
  memcpy(buf, b->p + off, n);
  return (ssize_t)n;
}

int rv__simfs_pwritev(rv_file *file, const struct iovec *iov, int iovcnt, uint64_t off) {
  sim_file *f = sf(file);
  if (!f->node)
    return RV_ESTALE;
  if (!(f->flags & RV_FS_WRITE) || iovcnt < 0)
    return RV_EINVAL;
  sim_node *n = f->node;
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++)
    len += iov[i].iov_len;
  if (len == 0)
    return RV_OK;
  sim_volume *v = f->vol;
  uint64_t grow = off + len > n->cur.len ? off + len - n->cur.len : 0;
  /* The write is held twice until synced (the current contents and the operation). */
  if (v->bytes + grow + len > v->capacity || off > v->capacity)
    return RV_ENOSPC;
  v->bytes -= node_bytes(n);
  int rc = file_op_add(n, OP_WRITE, off, iov, iovcnt, len);
  if (rc == RV_OK)
    rc = bytes_write(&n->cur, off, n->ops[n->nops - 1].data, len);
  v->bytes += node_bytes(n);
  return rc;
}

int rv__simfs_size(rv_file *file, uint64_t *out) {
  sim_file *f = sf(file);
  if (!f->node)
    return RV_ESTALE;
  *out = f->node->cur.len;
  return RV_OK;
}

int rv__simfs_truncate(rv_file *file, uint64_t size) {
  sim_file *f = sf(file);
  if (!f->node)
    return RV_ESTALE;
  if (!(f->flags & RV_FS_WRITE))
    return RV_EINVAL;
  sim_node *n = f->node;
  sim_volume *v = f->vol;
  if (size > n->cur.len && v->bytes + (size - n->cur.len) > v->capacity)
    return RV_ENOSPC;
  v->bytes -= node_bytes(n);
  int rc = file_op_add(n, OP_TRUNC, size, NULL, 0, 0);
  if (rc == RV_OK)
    rc = bytes_resize(&n->cur, (size_t)size);
  v->bytes += node_bytes(n);
  return rc;
}

int rv__simfs_sync(rv_file *file) {
  sim_file *f = sf(file);
  if (!f->node)
    return RV_ESTALE;
  sim_volume *v = f->vol;
  int rc = sync_wait(v, RV_SIM_DISK_SYNC_NS);
  if (rc != RV_OK)
    return rc;
  rv_sim_note(rv__sim_tls, "disk sync %s #%" PRIu64 " %zu bytes", v->name, f->node->id,
              f->node->cur.len);
  return file_make_durable(v, f->node);
}

int rv__simfs_rename(const char *from, const char *to) {
  sim_lookup f, t;
  int rc = lookup(from, true, &f);
  if (rc == RV_OK && !f.node)
    rc = RV_ENOTFOUND;
  if (rc == RV_OK)
    rc = lookup(to, true, &t);
  if (rc != RV_OK)
    return rc;
  sim_node *fdir = f.dir, *tdir = t.dir, *node = f.node, *old = t.node;
  const char *fleaf = f.leaf, *tleaf = t.leaf;
  if (old == node)
    return RV_OK;
  if (old && (old->is_dir || node->is_dir))
    return RV_EINVAL; /* replacing directories is not modelled */
  if (fdir == tdir) {
    rc = dir_op_add(fdir, DOP_RENAME, fleaf, tleaf, node);
    if (rc == RV_OK)
      rc = dir_op_apply(&fdir->cur_ents, &fdir->dops[fdir->ndops - 1]);
  } else {
    rc = dir_op_add(tdir, DOP_LINK, tleaf, NULL, node);
    if (rc == RV_OK)
      rc = dmap_set(&tdir->cur_ents, tleaf, node);
    if (rc == RV_OK)
      rc = dir_op_add(fdir, DOP_UNLINK, fleaf, NULL, node);
    if (rc == RV_OK)
      dmap_del(&fdir->cur_ents, fleaf);
  }
  return rc;
}

/* unlink (dir false) or rmdir (dir true, only when empty): the name goes at once; the removal
 * is durable only when the directory is synced. */
static int remove_entry(const char *path, bool dir_wanted) {
  sim_lookup l;
  int rc = lookup(path, true, &l);
  if (rc != RV_OK)
    return rc;
  sim_node *dir = l.dir, *node = l.node;
  const char *leaf = l.leaf;
  if (!node)
    return RV_ENOTFOUND;
  if (node->is_dir != dir_wanted)
    return RV_EINVAL;
  if (dir_wanted && node->cur_ents.n > 0)
    return RV_EBUSY; /* not empty */
  rc = dir_op_add(dir, DOP_UNLINK, leaf, NULL, node);
  if (rc == RV_OK)
    dmap_del(&dir->cur_ents, leaf);
  return rc;
}

int rv__simfs_unlink(const char *path) { return remove_entry(path, false); }

int rv__simfs_mkdir(const char *path) {
  sim_lookup l;
  int err = lookup(path, false, &l);
  if (err != RV_OK)
    return err;
  if (l.node)
    return RV_EEXIST;
  sim_volume *v = l.v;
  sim_node *dir = l.dir, *node;
  const char *leaf = l.leaf;
  if (!(node = node_new(v, true)))
    return RV_ENOMEM;
  int rc = dmap_set(&dir->cur_ents, leaf, node);
  if (rc == RV_OK)
    rc = dir_op_add(dir, DOP_LINK, leaf, NULL, node);
  if (rc != RV_OK) {
    dmap_del(&dir->cur_ents, leaf);
    collect(v);
  }
  return rc;
}

int rv__simfs_rmdir(const char *path) { return remove_entry(path, true); }

int rv__simfs_sync_dir(const char *path) {
  sim_lookup l;
  int err = lookup(path, false, &l);
  if (err == RV_OK && !l.node)
    err = RV_ENOTFOUND;
  if (err == RV_OK && !l.node->is_dir)
    err = RV_EINVAL;
  if (err != RV_OK)
    return err;
  sim_volume *v = l.v;
  if ((err = sync_wait(v, RV_SIM_DISK_SYNC_NS)) != RV_OK)
    return err;
  /* Look again: other coroutines of the process ran during the sync. */
  err = lookup(path, false, &l);
  if (err != RV_OK || !l.node || !l.node->is_dir)
    return err != RV_OK ? err : RV_ENOTFOUND;
  sim_node *node = l.node;
  rv_sim_note(rv__sim_tls, "disk dirsync %s #%" PRIu64 " %zu entries", v->name, node->id,
              node->cur_ents.n);
  err = file_make_durable(v, node);
  collect(v);
  return err;
}

int rv__simfs_syncfs(const char *path) {
  sim_volume *v = volume_current();
  if (!v)
    return RV_EINVAL;
  int rc = sync_wait(v, RV_SIM_DISK_SYNCFS_NS);
  if (rc != RV_OK)
    return rc;
  rv_sim_note(rv__sim_tls, "disk syncfs %s", v->name);
  for (sim_node *n = v->nodes; n && rc == RV_OK; n = n->next)
    rc = file_make_durable(v, n);
  collect(v);
  return rc;
}

int rv__simfs_stat(const char *path, rv_fs_info *st) {
  sim_lookup l;
  int err = lookup(path, false, &l);
  if (err != RV_OK)
    return err;
  const sim_node *node = l.node;
  if (!node)
    return RV_ENOTFOUND;
  st->is_dir = node->is_dir;
  st->size = node->is_dir ? 0 : node->cur.len;
  return RV_OK;
}

int rv__simfs_list(const char *path, char ***names, size_t *n) {
  sim_lookup l;
  int err = lookup(path, false, &l);
  if (err != RV_OK)
    return err;
  const sim_node *node = l.node;
  if (!node)
    return RV_ENOTFOUND;
  if (!node->is_dir)
    return RV_EINVAL;
  if (node->cur_ents.n > RV_FS_LIST_MAX)
    return RV_ELIMIT;
  char **v2 = calloc(node->cur_ents.n + 1, sizeof *v2);
  if (!v2)
    return RV_ENOMEM;
  for (size_t i = 0; i < node->cur_ents.n; i++)
    if (!(v2[i] = strdup(node->cur_ents.v[i].name))) {
      rv_fs_list_free(v2, i);
      return RV_ENOMEM;
    }
  *names = v2;
  *n = node->cur_ents.n;
  return RV_OK;
}

/* ---- crash --------------------------------------------------------------------------------- */

/* Replay ops[0..keep) on the durable contents, the last one cut to cut_len bytes if cut. */
static int replay_file(sim_node *n, size_t keep, bool cut, size_t cut_len) {
  bytes b = {0};
  int rc = bytes_copy(&b, &n->dur);
  for (size_t i = 0; i < keep && rc == RV_OK; i++) {
    const file_op *op = &n->ops[i];
    bool last_cut = cut && i == keep - 1;
    if (op->kind == OP_TRUNC)
      rc = bytes_resize(&b, (size_t)op->off);
    else
      rc = bytes_write(&b, op->off, op->data, last_cut ? cut_len : op->len);
  }
  if (rc != RV_OK) {
    free(b.p);
    return rc;
  }
  free(n->cur.p);
  n->cur = b;
  rc = bytes_copy(&n->dur, &n->cur);
  file_ops_clear(n);
  return rc;
}

void rv_sim_disk_crash(rv_sim_world *w, const char *volume, const rv_sim_disk_faults *f) {
  sim_volume *v = volume_find(w, volume, false);
  if (!v)
    return;
  static const rv_sim_disk_faults harshest = {.lose_unsynced = 1.0, .torn_tail = 0.0, .lose_dir_ops = 1.0};
  if (!f)
    f = &harshest;
  v->epoch++;
  int handles = 0;
  for (sim_file *h = v->files; h; h = h->next, handles++)
    h->node = NULL; /* the process is gone: its handles only give RV_ESTALE now */
  int kept = 0, lost = 0, torn = 0, dops_kept = 0, dops_lost = 0;
  for (sim_node *n = v->nodes; n; n = n->next) {
    if (n->is_dir) {
      /* Each unsynced operation on its own, applied in order to the durable entries. */
      for (size_t i = 0; i < n->ndops; i++) {
        if (draw01(w) < f->lose_dir_ops) {
          dops_lost++;
          continue;
        }
        dops_kept++;
        (void)dir_op_apply(&n->dur_ents, &n->dops[i]);
      }
      (void)dmap_copy(&n->cur_ents, &n->dur_ents);
      dir_ops_clear(n);
      continue;
    }
    if (n->nops == 0)
      continue;
    v->bytes -= node_bytes(n);
    double u = draw01(w);
    if (u < f->lose_unsynced) {
      lost++;
      (void)replay_file(n, 0, false, 0);
    } else if (u < f->lose_unsynced + f->torn_tail) {
      /* Keep ops[0..k) whole and ops[k] up to a random byte (a write) or not at all (a truncate). */
      size_t k = (size_t)rv_rng_below(rv_sim_rng(w), n->nops);
      const file_op *op = &n->ops[k];
      if (op->kind == OP_WRITE && op->len > 0)
        (void)replay_file(n, k + 1, true, (size_t)rv_rng_below(rv_sim_rng(w), op->len));
      else
        (void)replay_file(n, k, false, 0);
      torn++;
    } else {
      kept++;
      (void)replay_file(n, n->nops, false, 0);
    }
    v->bytes += node_bytes(n);
  }
  collect(v);
  rv_sim_note(w, "disk crash %s: handles %d; unsynced files kept %d lost %d torn %d; dir ops kept %d lost %d",
              v->name, handles, kept, lost, torn, dops_kept, dops_lost);
}

void rv_sim_disk_set_faults(rv_sim_world *w, const char *volume, double sync_eio,
                            uint64_t capacity_bytes) {
  sim_volume *v = volume_find(w, volume, true);
  if (!v)
    return;
  v->sync_eio = sync_eio;
  v->capacity = capacity_bytes ? capacity_bytes : RV_SIM_DISK_VOLUME_BYTES_MAX;
  rv_sim_note(w, "disk faults %s: sync EIO %.3f, capacity %" PRIu64 " bytes", v->name, sync_eio,
              v->capacity);
}

void rv__sim_disk_free(void *disk) {
  sim_disk *d = disk;
  if (!d)
    return;
  while (d->vols) {
    sim_volume *v = d->vols;
    d->vols = v->next;
    while (v->files) {
      sim_file *f = v->files;
      v->files = f->next;
      free(f);
    }
    while (v->nodes) {
      sim_node *n = v->nodes;
      v->nodes = n->next;
      node_free(n);
    }
    free(v);
  }
  free(d);
}
