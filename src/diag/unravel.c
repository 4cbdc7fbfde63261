/*
 * ravel unravel: the cross-process wait-for graph over a grab collection.
 * Loading and graph building live here; the explanation (text and JSON) in
 * unravel_explain.c.  See unravel.h and docs/unravel.md.
 */
#define _GNU_SOURCE
#include "diag/unravel_internal.h"
#include "obs/scc.h"
#include "rt/rt.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- small helpers ------------------------------------------------------------------------ */

void *ur_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    abort(); /* a diagnosis tool out of memory has nothing better to do */
  return q;
}

char *ur_strdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d)
    abort();
  return d;
}

char *ur_fmt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0)
    abort();
  va_end(ap);
  return s;
}

const char *ur_jstr(const json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

long long ur_jint(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  if (json_is_integer(v))
    return (long long)json_integer_value(v);
  if (json_is_real(v))
    return (long long)json_real_value(v);
  if (json_is_string(v))
    return strtoll(json_string_value(v), NULL, 10);
  if (json_is_true(v))
    return 1;
  return 0;
}

/* ---- a string -> index hash map (open addressing, owned keys) ----------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static void smap_grow(ur_smap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 64;
  char **keys = calloc(ncap, sizeof *keys);
  size_t *vals = calloc(ncap, sizeof *vals);
  if (!keys || !vals)
    abort();
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->keys[i])
      continue;
    size_t j = hash_str(m->keys[i]) & (ncap - 1);
    while (keys[j])
      j = (j + 1) & (ncap - 1);
    keys[j] = m->keys[i];
    vals[j] = m->vals[i];
  }
  free(m->keys);
  free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = ncap;
}

bool ur_smap_get(const ur_smap *m, const char *k, size_t *v) {
  if (!m->cap)
    return false;
  for (size_t j = hash_str(k) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1))
    if (strcmp(m->keys[j], k) == 0) {
      *v = m->vals[j];
      return true;
    }
  return false;
}

void ur_smap_put(ur_smap *m, const char *k, size_t v) {
  if ((m->n + 1) * 2 > m->cap)
    smap_grow(m);
  size_t j = hash_str(k) & (m->cap - 1);
  for (; m->keys[j]; j = (j + 1) & (m->cap - 1))
    if (strcmp(m->keys[j], k) == 0) {
      m->vals[j] = v;
      return;
    }
  m->keys[j] = ur_strdup(k);
  m->vals[j] = v;
  m->n++;
}

static void smap_free(ur_smap *m) {
  for (size_t i = 0; i < m->cap; i++)
    free(m->keys[i]);
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

/* ---- nodes and edges ---------------------------------------------------------------------- */

/* The node with this id, created (kind, label, proc) if new; *created says which. */
static size_t node_get(ur *u, const char *id, ur_kind kind, const char *label, int proc,
                       bool *created) {
  size_t v;
  if (ur_smap_get(&u->ids, id, &v)) {
    if (created)
      *created = false;
    return v;
  }
  if (u->nn == u->capn) {
    u->capn = u->capn ? u->capn * 2 : 256;
    u->nodes = ur_xrealloc(u->nodes, u->capn * sizeof *u->nodes);
  }
  v = u->nn++;
  ur_node *n = &u->nodes[v];
  memset(n, 0, sizeof *n);
  n->kind = kind;
  n->id = ur_strdup(id);
  n->label = ur_strdup(label);
  n->proc = proc;
  n->cycle = -1;
  n->behind = -1;
  ur_smap_put(&u->ids, id, v);
  if (created)
    *created = true;
  return v;
}

static void edge_add(ur *u, size_t from, size_t to, ur_ekind kind, const json_t *hold,
                     char *label /* owned */) {
  if (u->ne == u->cape) {
    u->cape = u->cape ? u->cape * 2 : 256;
    u->edges = ur_xrealloc(u->edges, u->cape * sizeof *u->edges);
  }
  u->edges[u->ne++] = (ur_edge){from, to, kind, hold, label};
}

/* ---- loading ------------------------------------------------------------------------------ */

static json_t *load_json(const char *dir, const char *sub, const char *file) {
  char *path = sub ? ur_fmt("%s/%s/%s", dir, sub, file) : ur_fmt("%s/%s", dir, file);
  json_error_t err;
  json_t *j = json_load_file(path, JSON_DECODE_ANY, &err);
  free(path);
  return j;
}

static int proc_add(ur *u, const char *dir, const char *kind) {
  if (u->nprocs == u->capprocs) {
    u->capprocs = u->capprocs ? u->capprocs * 2 : 8;
    u->procs = ur_xrealloc(u->procs, u->capprocs * sizeof *u->procs);
  }
  ur_proc *p = &u->procs[u->nprocs];
  memset(p, 0, sizeof *p);
  p->dir = ur_strdup(dir);
  p->kind = ur_strdup(kind);
  p->answered = true;
  return (int)u->nprocs++;
}

/* The session (from sessions.json) with this pid, or NULL. */
static const json_t *session_by_pid(const ur *u, long long pid) {
  size_t i;
  const json_t *s;
  json_array_foreach(u->sessions, i, s) if (ur_jint(s, "pid") == pid) return s;
  return NULL;
}

static void proc_name(ur *u, ur_proc *p, const json_t *m) {
  const char *svc = m ? ur_jstr(m, "service") : "", *rep = m ? ur_jstr(m, "replica") : "";
  if (!svc[0] && p->pid > 0) {
    const json_t *s = session_by_pid(u, p->pid);
    if (s) {
      svc = ur_jstr(s, "service");
      rep = ur_jstr(s, "replica");
    }
  }
  if (svc[0])
    p->group = rep[0] ? ur_fmt("%s/%s", svc, rep) : ur_strdup(svc);
  else
    p->group = ur_strdup(p->dir);
}

/* Processes from the manifest, or (no manifest) every subdirectory with a threads.json. */
static void load_procs(ur *u) {
  const json_t *procs = json_object_get(u->manifest, "processes");
  if (json_is_array(procs)) {
    size_t i;
    const json_t *m;
    json_array_foreach(procs, i, m) {
      const char *kind = ur_jstr(m, "kind");
      const char *dir = ur_jstr(m, "dir");
      if (!dir[0] || strcmp(kind, "queue") == 0)
        continue;
      int pi = proc_add(u, dir, kind);
      ur_proc *p = &u->procs[pi];
      p->pid = ur_jint(m, "pid");
      const json_t *ans = json_object_get(m, "answered");
      p->answered = !json_is_false(ans);
      p->outside = json_is_true(json_object_get(m, "stacks_from_outside"));
      p->threads = load_json(u->dir, dir, "threads.json");
      if (p->threads && p->pid <= 0)
        p->pid = ur_jint(p->threads, "pid");
      proc_name(u, p, m);
    }
    return;
  }
  struct dirent **ents = NULL;
  int n = scandir(u->dir, &ents, NULL, alphasort); /* sorted: the same order every time */
  for (int i = 0; i < n; i++) {
    const char *name = ents[i]->d_name;
    json_t *t = name[0] == '.' ? NULL : load_json(u->dir, name, "threads.json");
    if (t) {
      int pi = proc_add(u, name, strcmp(name, "coord") == 0 ? "coord" : "service");
      ur_proc *p = &u->procs[pi];
      p->threads = t;
      p->pid = ur_jint(t, "pid");
      proc_name(u, p, NULL);
    }
    free(ents[i]);
  }
  free(ents);
}

/* ---- confirmation by an earlier capture ---------------------------------------------------- */

/* When thread t's wait began, on its process's monotonic clock (-1: unknown). */
static long long wait_start(const json_t *threads_json, const json_t *t) {
  const json_t *w = json_object_get(t, "wait");
  const json_t *mono = json_object_get(threads_json, "taken_mono_ns");
  if (!json_is_object(w) || !json_is_integer(mono))
    return -1;
  return (long long)json_integer_value(mono) - ur_jint(w, "waiting_ns");
}

static bool same_wait(const json_t *now_root, const json_t *now, const json_t *then_root,
                      const json_t *then) {
  const json_t *a = json_object_get(now, "wait"), *b = json_object_get(then, "wait");
  long long sa = wait_start(now_root, now), sb = wait_start(then_root, then);
  return json_is_object(a) && json_is_object(b) && sa >= 0 && sa == sb &&
         strcmp(ur_jstr(a, "kind"), ur_jstr(b, "kind")) == 0 &&
         strcmp(ur_jstr(a, "what"), ur_jstr(b, "what")) == 0 &&
         ur_jint(a, "obj_id") == ur_jint(b, "obj_id");
}

/*
 * Mark as moving every waiting thread whose wait is not the one it had in the earlier
 * capture in dir (its process's folder of the same name).  A thread blocked across both
 * captures kept one wait, begun before the first; a wait that ended in between (and
 * perhaps began again) did not, and no cycle is drawn through it.
 */
static void confirm_against(ur *u, const char *dir) {
  for (size_t pi = 0; pi < u->nprocs; pi++) {
    ur_proc *p = &u->procs[pi];
    if (!p->threads)
      continue;
    json_t *then = load_json(dir, p->dir, "threads.json");
    bool same_proc = then && ur_jint(then, "pid") == ur_jint(p->threads, "pid");
    ur_smap ids = {0};
    size_t i;
    const json_t *t;
    if (same_proc)
      json_array_foreach(json_object_get(then, "threads"), i, t) {
        char key[32];
        snprintf(key, sizeof key, "%lld", ur_jint(t, "id"));
        ur_smap_put(&ids, key, i);
      }
    json_array_foreach(json_object_get(p->threads, "threads"), i, t) {
      if (!json_is_object(json_object_get(t, "wait")))
        continue;
      char key[32];
      size_t j;
      snprintf(key, sizeof key, "%lld", ur_jint(t, "id"));
      const json_t *old = same_proc && ur_smap_get(&ids, key, &j)
                              ? json_array_get(json_object_get(then, "threads"), j)
                              : NULL;
      if (!old || !same_wait(p->threads, t, then, old)) {
        json_object_set_new((json_t *)t, "moving", json_true());
        u->unconfirmed++;
      }
    }
    smap_free(&ids);
    json_decref(then);
  }
}

/* ---- the graph ---------------------------------------------------------------------------- */

static const char *verb_of(const char *kind) {
  if (strcmp(kind, "mutex.lock") == 0)
    return "lock";
  if (strcmp(kind, "rwlock.rdlock") == 0)
    return "read-lock";
  if (strcmp(kind, "rwlock.wrlock") == 0)
    return "write-lock";
  return "wait for";
}

const char *ur_verb(const char *wait_kind) { return verb_of(wait_kind); }

bool ur_is_lock_wait(const char *kind) {
  return strcmp(kind, "mutex.lock") == 0 || strcmp(kind, "rwlock.rdlock") == 0 ||
         strcmp(kind, "rwlock.wrlock") == 0;
}

/* "dlock NAME" -> NAME, or NULL. */
const char *ur_dlock_name(const json_t *wait) {
  if (strcmp(ur_jstr(wait, "kind"), "external") != 0)
    return NULL;
  const char *what = ur_jstr(wait, "what");
  return strncmp(what, "dlock ", 6) == 0 ? what + 6 : NULL;
}

static size_t lock_node(ur *u, int pi, long long lock_id, const char *name) {
  char *id = ur_fmt("%s/l%lld", u->procs[pi].group, lock_id);
  char *label = ur_fmt("%s \"%s\"", u->procs[pi].group, name);
  size_t v = node_get(u, id, UR_LOCK, label, pi, NULL);
  free(id);
  free(label);
  return v;
}

static void thread_key(char *buf, size_t n, long long pid, long long tid) {
  snprintf(buf, n, "%lld:%lld", pid, tid);
}

/* "pid P thread ID NAME: TASK" -> pid, thread id. */
static bool parse_desc(const char *desc, long long *pid, long long *tid) {
  return desc && sscanf(desc, "pid %lld thread %lld", pid, tid) == 2;
}

static bool desc_is(const char *desc, long long pid, long long tid) {
  long long p, t;
  return parse_desc(desc, &p, &t) && p == pid && t == tid;
}

/*
 * Whether coord's lock table says thread tid of process pid holds the distributed
 * lock `name` and is not among its waiters.  The thread dump and the lock table are
 * not read at one instant: a thread dumped while waiting can hold the lock by the time
 * coord is asked, and drawing both would show it waiting for itself.  Coord's table,
 * read later, wins.
 */
static bool coord_granted(const ur *u, long long pid, long long tid, const char *name) {
  size_t i;
  if (pid <= 0 || !ur_smap_get(&u->dlocks, name, &i))
    return false;
  const json_t *l = json_array_get(u->locktable, i);
  if (!ur_jint(l, "held") || !desc_is(ur_jstr(l, "description"), pid, tid))
    return false;
  size_t k;
  const json_t *w;
  json_array_foreach(json_object_get(l, "waiters"), k, w) {
    if (desc_is(ur_jstr(w, "description"), pid, tid))
      return false;
  }
  return true;
}

/* Thread nodes, lock nodes, holder edges, then wait edges, for one process. */
static void build_process(ur *u, int pi) {
  ur_proc *p = &u->procs[pi];
  const json_t *threads = json_object_get(p->threads, "threads");
  size_t i;
  const json_t *t;
  size_t first = u->nn;
  json_array_foreach(threads, i, t) {
    long long tid = ur_jint(t, "id");
    char *id = ur_fmt("%s/t%lld", p->group, tid);
    char *label = ur_fmt("%s thread %lld %s", p->group, tid, ur_jstr(t, "name"));
    bool created;
    size_t v = node_get(u, id, UR_THREAD, label, pi, &created);
    free(id);
    free(label);
    if (!created)
      continue; /* a duplicate id: keep the first */
    u->nodes[v].th = t;
    u->nodes[v].tid = tid;
    p->nthreads++;
    u->nthreads++;
    char key[64];
    thread_key(key, sizeof key, p->pid, tid);
    ur_smap_put(&u->tids, key, v);
    const json_t *h;
    size_t k;
    json_array_foreach(json_object_get(t, "held"), k, h) {
      size_t l = lock_node(u, pi, ur_jint(h, "lock_id"), ur_jstr(h, "lock"));
      bool rd = strcmp(ur_jstr(h, "mode"), "read") == 0;
      if (!rd)
        u->nodes[l].write_held = true;
      edge_add(u, l, v, UR_E_HELD, h,
               ur_fmt("held (%s), acquired at %s", ur_jstr(h, "mode"), ur_jstr(h, "site")));
    }
    const json_t *w = json_object_get(t, "wait");
    if (json_is_object(w) && ur_is_lock_wait(ur_jstr(w, "kind"))) {
      size_t l = lock_node(u, pi, ur_jint(w, "obj_id"), ur_jstr(w, "what"));
      u->nodes[l].nwaiters++;
      if (strcmp(ur_jstr(w, "kind"), "rwlock.wrlock") == 0) {
        ur_node *ln = &u->nodes[l];
        if (ln->nwriters == ln->capwriters) {
          ln->capwriters = ln->capwriters ? ln->capwriters * 2 : 4;
          ln->writers = ur_xrealloc(ln->writers, ln->capwriters * sizeof *ln->writers);
        }
        ln->writers[ln->nwriters++] = v;
      }
    }
  }
  for (size_t v = first; v < u->nn; v++) {
    ur_node *n = &u->nodes[v];
    if (n->kind != UR_THREAD || n->proc != pi)
      continue;
    const json_t *w = json_object_get(n->th, "wait");
    if (!json_is_object(w))
      continue;
    if (json_is_true(json_object_get(n->th, "moving")))
      continue; /* it changed while its process was dumped: not blocked */
    const char *kind = ur_jstr(w, "kind");
    const char *dl = ur_dlock_name(w);
    if (dl && coord_granted(u, p->pid, n->tid, dl)) {
      u->granted_since_dump++;
      continue;
    }
    if (dl) {
      char *id = ur_fmt("dlock/%s", dl);
      char *label = ur_fmt("dlock %s", dl);
      size_t d = node_get(u, id, UR_DLOCK, label, -1, NULL);
      free(id);
      free(label);
      edge_add(u, v, d, UR_E_WAITS, NULL, ur_strdup("waits for the distributed lock"));
      continue;
    }
    if (strcmp(kind, "cond.wait") == 0 && strcmp(ur_jstr(w, "what"), UR_POOL_COND) == 0) {
      /* Waiting for a coord lock connection: every one is in use by a thread blocked in
       * LOCK.ACQUIRE, so the waiter waits (for any one of) the process's dlock waiters. */
      char *id = ur_fmt("%s/pool", p->group);
      char *label = ur_fmt("%s \"%s\"", p->group, UR_POOL_COND);
      bool created;
      size_t pool = node_get(u, id, UR_LOCK, label, pi, &created);
      free(id);
      free(label);
      if (created) {
        u->nodes[pool].pool = true;
        for (size_t x = first; x < u->nn; x++)
          if (u->nodes[x].kind == UR_THREAD && u->nodes[x].proc == pi &&
              ur_dlock_name(json_object_get(u->nodes[x].th, "wait")))
            edge_add(u, pool, x, UR_E_HELD, NULL,
                     ur_strdup("its lock connection is in use, blocked in LOCK.ACQUIRE"));
      }
      u->nodes[pool].nwaiters++;
      edge_add(u, v, pool, UR_E_WAITS, NULL,
               ur_fmt("waits for a free coord lock connection at %s", ur_jstr(w, "site")));
      continue;
    }
    if (!ur_is_lock_wait(kind))
      continue;
    size_t l = lock_node(u, pi, ur_jint(w, "obj_id"), ur_jstr(w, "what"));
    bool rd = strcmp(kind, "rwlock.rdlock") == 0;
    /* A reader is blocked by a write holder (through the lock) and by queued writers,
     * never by other readers: with neither in the dump, the writer that queued has not
     * published its wait yet, and the reader's wait has no edge to draw (an edge to the
     * lock would lead to the read holders, the reader itself among them). */
    if (!rd || u->nodes[l].write_held)
      edge_add(u, v, l, UR_E_WAITS, NULL,
               ur_fmt("waits to %s at %s", verb_of(kind), ur_jstr(w, "site")));
    if (rd) {
      for (size_t k = 0; k < u->nodes[l].nwriters; k++) {
        size_t wr = u->nodes[l].writers[k];
        if (wr != v)
          edge_add(u, v, wr, UR_E_QUEUED, NULL,
                   ur_fmt("waits to read-lock \"%s\" behind this queued writer",
                          ur_jstr(w, "what")));
      }
    }
  }
}

static int proc_by_pid(const ur *u, long long pid) {
  char key[32];
  snprintf(key, sizeof key, "%lld", pid);
  size_t v;
  return ur_smap_get(&u->pids, key, &v) ? (int)v : -1;
}

/* The thread node a coord description names, created as a "ghost" (a thread of a
 * process whose registry we do not have) when needed. */
static size_t desc_thread(ur *u, const json_t *who, const char *desc, bool *found) {
  long long pid = 0, tid = 0;
  *found = false;
  if (!parse_desc(desc, &pid, &tid)) {
    pid = ur_jint(who, "pid");
    tid = -1;
  }
  char key[64];
  thread_key(key, sizeof key, pid, tid);
  size_t v;
  if (tid >= 0 && ur_smap_get(&u->tids, key, &v)) {
    *found = true;
    return v;
  }
  int pi = proc_by_pid(u, pid);
  char *group = pi >= 0 ? ur_strdup(u->procs[pi].group)
                        : (ur_jstr(who, "replica")[0]
                               ? ur_fmt("%s/%s", ur_jstr(who, "service"), ur_jstr(who, "replica"))
                               : ur_fmt("pid %lld", pid));
  char *id = tid >= 0 ? ur_fmt("%s/t%lld", group, tid) : ur_fmt("%s/session%lld", group,
                                                                 ur_jint(who, "session"));
  char *label = ur_fmt("%s %s", group, desc && desc[0] ? desc : "(thread unknown)");
  bool created;
  v = node_get(u, id, UR_THREAD, label, pi, &created);
  if (created) {
    u->nodes[v].ghost = true;
    u->nodes[v].tid = tid;
    u->nodes[v].ghost_group = group;
    u->nodes[v].desc = ur_strdup(desc);
    ur_smap_put(&u->tids, key, v);
    group = NULL;
  }
  free(group);
  free(id);
  free(label);
  return v;
}

static void build_dlocks(ur *u) {
  size_t i;
  const json_t *l;
  json_array_foreach(u->locktable, i, l) {
    if (!json_is_object(l))
      continue;
    const char *name = ur_jstr(l, "lock");
    char *id = ur_fmt("dlock/%s", name);
    char *label = ur_fmt("dlock %s", name);
    size_t d = node_get(u, id, UR_DLOCK, label, -1, NULL);
    free(id);
    free(label);
    u->nodes[d].info = l;
    u->ndlocks++;
    if (ur_jint(l, "held")) {
      bool found;
      size_t h = desc_thread(u, l, ur_jstr(l, "description"), &found);
      edge_add(u, d, h, UR_E_DHELD, NULL,
               ur_fmt("held (token %lld) for %lld ms", ur_jint(l, "token"), ur_jint(l, "held_ms")));
    }
    size_t k;
    const json_t *w;
    json_array_foreach(json_object_get(l, "waiters"), k, w) {
      bool found;
      size_t t = desc_thread(u, w, ur_jstr(w, "description"), &found);
      if (found) {
        const char *dl = ur_dlock_name(json_object_get(u->nodes[t].th, "wait"));
        if (dl && strcmp(dl, name) == 0)
          continue; /* its own registry already says so */
      }
      if (u->nodes[t].ghost && u->nodes[t].ghost_waits)
        continue;
      u->nodes[t].ghost_waits = true;
      edge_add(u, t, d, UR_E_WAITS, NULL, ur_strdup("waits for the distributed lock (per coord)"));
    }
  }
}

/* The queue's clients named "SERVICE/REPLICA pid N" by the service. */
static void build_queue(ur *u) {
  size_t i, j, k;
  const json_t *t, *c, *cl;
  json_array_foreach(json_object_get(u->stats, "topics"), i, t) {
    json_array_foreach(json_object_get(t, "channels"), j, c) {
      json_array_foreach(json_object_get(c, "clients"), k, cl) {
        const char *cid = ur_jstr(cl, "client_id");
        long long pid = 0;
        const char *sp = strstr(cid, " pid ");
        if (sp)
          pid = strtoll(sp + 5, NULL, 10);
        int pi = pid ? proc_by_pid(u, pid) : -1;
        if (pi < 0) {
          for (size_t q = 0; q < u->nprocs && pi < 0; q++) {
            size_t gl = strlen(u->procs[q].group);
            if (strncmp(cid, u->procs[q].group, gl) == 0 && (cid[gl] == ' ' || !cid[gl]))
              pi = (int)q;
          }
        }
        if (pi < 0)
          continue;
        ur_proc *p = &u->procs[pi];
        p->in_flight += ur_jint(cl, "in_flight_count");
        p->timeouts += ur_jint(cl, "timeout_count");
        p->held += ur_jint(cl, "held_count");
        p->has_queue = true;
        if (!p->channel)
          p->channel = ur_fmt("%s/%s", ur_jstr(t, "topic_name"), ur_jstr(c, "channel_name"));
      }
    }
  }
  for (size_t q = 0; q < u->nprocs; q++) {
    ur_proc *p = &u->procs[q];
    if (!p->has_queue)
      continue;
    char *id = ur_fmt("%s/messages", p->group);
    char *label = ur_fmt("%s: %lld in flight, %lld timed out, %lld held", p->group, p->in_flight,
                         p->timeouts, p->held);
    size_t m = node_get(u, id, UR_MESSAGE, label, (int)q, NULL);
    free(id);
    free(label);
    edge_add(u, m, p->node, UR_E_MSGS, NULL, ur_strdup("in flight on"));
  }
}

/* ---- strongly connected components -------------------------------------------------------- */

static void build_csr(ur *u) {
  size_t n = u->nn, m = u->ne;
  u->off = calloc(n + 1, sizeof *u->off);
  u->adj = calloc(m ? m : 1, sizeof *u->adj);
  u->roff = calloc(n + 1, sizeof *u->roff);
  u->radj = calloc(m ? m : 1, sizeof *u->radj);
  if (!u->off || !u->adj || !u->roff || !u->radj)
    abort();
  for (size_t e = 0; e < m; e++) {
    u->off[u->edges[e].from + 1]++;
    u->roff[u->edges[e].to + 1]++;
  }
  for (size_t i = 0; i < n; i++) {
    u->off[i + 1] += u->off[i];
    u->roff[i + 1] += u->roff[i];
  }
  size_t *fo = calloc(n + 1, sizeof *fo), *fr = calloc(n + 1, sizeof *fr);
  if (!fo || !fr)
    abort();
  for (size_t e = 0; e < m; e++) {
    size_t a = u->edges[e].from, b = u->edges[e].to;
    u->adj[u->off[a] + fo[a]++] = e;
    u->radj[u->roff[b] + fr[b]++] = e;
  }
  free(fo);
  free(fr);
}

/* The components of the graph (obs/scc.h): comp[v] gets v's component, *ncomp their number. */
static void tarjan(ur *u, size_t *comp, size_t *ncomp) {
  size_t ne = u->off[u->nn];
  size_t *dst = ur_xrealloc(NULL, (ne ? ne : 1) * sizeof *dst);
  for (size_t e = 0; e < ne; e++)
    dst[e] = u->edges[u->adj[e]].to;
  if (!rv_scc(u->nn, u->off, dst, comp, ncomp))
    abort();
  free(dst);
}

static bool self_edge(const ur *u, size_t v) {
  for (size_t e = u->off[v]; e < u->off[v + 1]; e++)
    if (u->edges[u->adj[e]].to == v)
      return true;
  return false;
}

/* One elementary cycle through v's component: follow in-component edges until a repeat. */
static void extract_cycle(ur *u, const size_t *comp, size_t v, ur_cycle *c, size_t *pos) {
  size_t len = 0, cap = 8, cur = v;
  size_t *path = ur_xrealloc(NULL, cap * sizeof *path), *via = ur_xrealloc(NULL, cap * sizeof *via);
  while (pos[cur] == (size_t)-1) {
    if (len == cap) {
      cap *= 2;
      path = ur_xrealloc(path, cap * sizeof *path);
      via = ur_xrealloc(via, cap * sizeof *via);
    }
    pos[cur] = len;
    path[len] = cur;
    size_t e = u->off[cur];
    while (e < u->off[cur + 1] && comp[u->edges[u->adj[e]].to] != comp[v])
      e++;
    via[len++] = u->adj[e];
    cur = u->edges[u->adj[e]].to;
  }
  size_t start = pos[cur];
  for (size_t k = 0; k < len; k++)
    pos[path[k]] = (size_t)-1;
  c->n = len - start;
  c->nodes = ur_xrealloc(NULL, c->n * sizeof *c->nodes);
  c->via = ur_xrealloc(NULL, c->n * sizeof *c->via);
  memcpy(c->nodes, path + start, c->n * sizeof *c->nodes);
  memcpy(c->via, via + start, c->n * sizeof *c->via);
  free(path);
  free(via);
}

/* How much a thread holds (local holds and distributed locks): the root of a cycle is
 * told first, and the root is the thread holding the most. */
static size_t holdings(const ur *u, size_t v) {
  size_t n = json_array_size(json_object_get(u->nodes[v].th, "held"));
  for (size_t e = u->roff[v]; e < u->roff[v + 1]; e++)
    n += u->edges[u->radj[e]].kind == UR_E_DHELD ? 2 : 0;
  return n;
}

static void rotate_root(const ur *u, ur_cycle *c) {
  size_t best = 0, bestn = 0;
  for (size_t k = 0; k < c->n; k++) {
    if (u->nodes[c->nodes[k]].kind != UR_THREAD)
      continue;
    size_t h = holdings(u, c->nodes[k]);
    if (h > bestn) {
      best = k;
      bestn = h;
    }
  }
  if (!best)
    return;
  size_t *nodes = ur_xrealloc(NULL, c->n * sizeof *nodes), *via = ur_xrealloc(NULL, c->n * sizeof *via);
  for (size_t k = 0; k < c->n; k++) {
    nodes[k] = c->nodes[(best + k) % c->n];
    via[k] = c->via[(best + k) % c->n];
  }
  free(c->nodes);
  free(c->via);
  c->nodes = nodes;
  c->via = via;
}

static void find_cycles(ur *u) {
  size_t n = u->nn, ncomp = 0;
  size_t *comp = calloc(n + 1, sizeof *comp);
  if (!comp)
    abort();
  tarjan(u, comp, &ncomp);
  size_t *size = calloc(ncomp + 1, sizeof *size);
  bool *done = calloc(ncomp + 1, sizeof *done);
  size_t *pos = malloc((n + 1) * sizeof *pos);
  if (!size || !done || !pos)
    abort();
  for (size_t i = 0; i < n; i++) {
    size[comp[i]]++;
    pos[i] = (size_t)-1;
  }
  /* Start each cycle at a thread, the earliest in node order (stable across captures). */
  for (size_t v = 0; v < n; v++) {
    size_t c = comp[v];
    if (done[c] || u->nodes[v].kind != UR_THREAD || !(size[c] > 1 || self_edge(u, v)))
      continue;
    done[c] = true;
    if (u->ncycles == u->capcycles) {
      u->capcycles = u->capcycles ? u->capcycles * 2 : 4;
      u->cycles = ur_xrealloc(u->cycles, u->capcycles * sizeof *u->cycles);
    }
    ur_cycle *cy = &u->cycles[u->ncycles];
    memset(cy, 0, sizeof *cy);
    extract_cycle(u, comp, v, cy, pos);
    rotate_root(u, cy);
    u->ncycles++;
  }
  /* Mark every node of a deadlocked component as in the cycle of that component. */
  for (size_t k = 0; k < u->ncycles; k++) {
    size_t c = comp[u->cycles[k].nodes[0]];
    u->cycles[k].comp = c;
  }
  for (size_t v = 0; v < n; v++)
    for (size_t k = 0; k < u->ncycles; k++)
      if (comp[v] == u->cycles[k].comp) {
        u->nodes[v].cycle = (int)k;
        break;
      }
  free(size);
  free(done);
  free(pos);
  free(comp);
}

/* Everything that reaches a cycle: multi-source BFS over reversed edges. */
static void find_blocked(ur *u) {
  size_t n = u->nn, head = 0, tail = 0;
  size_t *queue = malloc((n + 1) * sizeof *queue);
  if (!queue)
    abort();
  for (size_t v = 0; v < n; v++)
    if (u->nodes[v].cycle >= 0) {
      u->nodes[v].behind = u->nodes[v].cycle;
      queue[tail++] = v;
    }
  while (head < tail) {
    size_t v = queue[head++];
    for (size_t e = u->roff[v]; e < u->roff[v + 1]; e++) {
      size_t w = u->edges[u->radj[e]].from;
      if (u->nodes[w].behind < 0) {
        u->nodes[w].behind = u->nodes[v].behind;
        queue[tail++] = w;
      }
    }
  }
  free(queue);
}

/* ---- entry points ------------------------------------------------------------------------- */

static int64_t mono_ms(void) { return rv_now_ns() / RV_NS_PER_MS; }

void ur_free(ur *u) {
  for (size_t i = 0; i < u->nprocs; i++) {
    ur_proc *p = &u->procs[i];
    free(p->dir);
    free(p->kind);
    free(p->group);
    free(p->channel);
    json_decref(p->threads);
  }
  free(u->procs);
  for (size_t i = 0; i < u->nn; i++) {
    free(u->nodes[i].id);
    free(u->nodes[i].label);
    free(u->nodes[i].writers);
    free(u->nodes[i].ghost_group);
    free(u->nodes[i].desc);
  }
  free(u->nodes);
  for (size_t e = 0; e < u->ne; e++)
    free(u->edges[e].label);
  free(u->edges);
  for (size_t k = 0; k < u->ncycles; k++) {
    free(u->cycles[k].nodes);
    free(u->cycles[k].via);
  }
  free(u->cycles);
  free(u->off);
  free(u->adj);
  free(u->roff);
  free(u->radj);
  smap_free(&u->ids);
  smap_free(&u->tids);
  smap_free(&u->dlocks);
  smap_free(&u->pids);
  json_decref(u->manifest);
  json_decref(u->locktable);
  json_decref(u->sessions);
  json_decref(u->stats);
  free(u->dir);
}

static int cmp_proc(const void *a, const void *b) {
  const ur_proc *x = a, *y = b;
  return strcmp(x->group, y->group);
}

json_t *rv_unravel_dir(const char *dir, const rv_unravel_opts *o, char *why, size_t whylen) {
  int64_t t0 = mono_ms();
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(why, whylen, "%s is not a directory", dir);
    return NULL;
  }
  ur u;
  memset(&u, 0, sizeof u);
  u.dir = ur_strdup(dir);
  u.hold_ms = o && o->hold_ms > 0 ? o->hold_ms : RV_UNRAVEL_DEFAULT_HOLD_MS;
  u.wait_ms = o && o->wait_ms > 0 ? o->wait_ms : RV_UNRAVEL_DEFAULT_WAIT_MS;
  u.manifest = load_json(dir, NULL, "manifest.json");
  u.sessions = load_json(dir, "coord", "sessions.json");
  u.locktable = load_json(dir, "coord", "lock-table.json");
  u.stats = load_json(dir, "queue", "stats.json");
  if (!json_is_array(u.sessions)) {
    json_decref(u.sessions);
    u.sessions = json_array();
  }
  if (!json_is_array(u.locktable)) {
    json_decref(u.locktable);
    u.locktable = json_array();
  }
  size_t li;
  const json_t *lj;
  json_array_foreach(u.locktable, li, lj) {
    if (json_is_object(lj) && ur_jstr(lj, "lock")[0])
      ur_smap_put(&u.dlocks, ur_jstr(lj, "lock"), li);
  }
  load_procs(&u);
  if (o && o->confirm_dir)
    confirm_against(&u, o->confirm_dir);
  /* The same order every time, whatever the manifest's: by name. */
  if (u.nprocs > 1)
    qsort(u.procs, u.nprocs, sizeof *u.procs, cmp_proc);
  size_t nthreadfiles = 0;
  for (size_t i = 0; i < u.nprocs; i++)
    nthreadfiles += u.procs[i].threads != NULL;
  if (!u.manifest && nthreadfiles == 0) {
    snprintf(why, whylen, "%s has no manifest.json and no process folder with threads.json", dir);
    ur_free(&u);
    return NULL;
  }
  for (size_t i = 0; i < u.nprocs; i++) {
    ur_proc *p = &u.procs[i];
    if (p->pid > 0) {
      char key[32];
      snprintf(key, sizeof key, "%lld", p->pid);
      ur_smap_put(&u.pids, key, i);
    }
    char *id = ur_fmt("%s", p->group);
    p->node = node_get(&u, id, UR_PROCESS, p->group, (int)i, NULL);
    free(id);
  }
  for (size_t i = 0; i < u.nprocs; i++)
    if (u.procs[i].threads)
      build_process(&u, (int)i);
  build_dlocks(&u);
  build_queue(&u);
  build_csr(&u);
  find_cycles(&u);
  find_blocked(&u);
  json_t *res = ur_explain(&u);
  json_object_set_new(
      res, "stats",
      json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "processes", (json_int_t)u.nprocs, "threads",
                (json_int_t)u.nthreads, "dlocks", (json_int_t)u.ndlocks, "nodes", (json_int_t)u.nn,
                "edges", (json_int_t)u.ne, "granted_since_dump", (json_int_t)u.granted_since_dump,
                "unconfirmed_waits", (json_int_t)u.unconfirmed,
                "analysis_ms", (json_int_t)(mono_ms() - t0)));
  ur_free(&u);
  return res;
}

json_t *rv_unravel_report_model(const char *dir, const json_t *result) {
  json_t *model = json_object();
  int64_t now_ms = rv_wall_ns() / RV_NS_PER_MS;
  json_t *manifest = load_json(dir, NULL, "manifest.json");
  const json_t *taken = json_object_get(manifest, "taken_at_ms");
  json_object_set_new(model, "title",
                      json_string(json_is_true(json_object_get(result, "healthy"))
                                      ? "ravel unravel: healthy"
                                      : "ravel unravel: problems found"));
  json_object_set_new(model, "generated_at_ms",
                      json_integer(json_is_integer(taken) ? json_integer_value(taken) : now_ms));
  json_t *replicas = json_array();
  const json_t *procs = json_object_get(manifest, "processes");
  size_t i;
  const json_t *m;
  json_array_foreach(procs, i, m) {
    const char *kind = ur_jstr(m, "kind");
    if (strcmp(kind, "service") != 0 && strcmp(kind, "target") != 0)
      continue;
    const char *svc = ur_jstr(m, "service"), *rep = ur_jstr(m, "replica");
    char *name = svc[0] ? (rep[0] ? ur_fmt("%s/%s", svc, rep) : ur_strdup(svc))
                        : ur_strdup(ur_jstr(m, "dir"));
    json_t *hist = load_json(dir, ur_jstr(m, "dir"), "history.json");
    json_t *samples = json_object_get(hist, "samples");
    json_array_append_new(replicas, json_pack("{s:s, s:o}", "name", name, "samples",
                                              json_is_array(samples) ? json_incref(samples)
                                                                     : json_array()));
    json_decref(hist);
    free(name);
  }
  json_object_set_new(model, "replicas", replicas);
  json_t *markers = json_array();
  json_t *audit = load_json(dir, "coord", "audit.json");
  const json_t *a;
  json_array_foreach(audit, i, a) {
    const char *op = ur_jstr(a, "op");
    char *label = ur_fmt("CFG.%s %s %s rev %lld", strcmp(op, "del") == 0 ? "DEL" : "SET",
                         ur_jstr(a, "ns"), ur_jstr(a, "key"), ur_jint(a, "revision"));
    json_array_append_new(markers, json_pack("{s:I, s:s}", "t_ms", (json_int_t)ur_jint(a, "time_ms"),
                                             "label", label));
    free(label);
  }
  json_decref(audit);
  json_object_set_new(model, "markers", markers);
  json_object_set_new(model, "diagnosis",
                      json_pack("{s:s, s:b}", "text", ur_jstr(result, "text"), "healthy",
                                json_is_true(json_object_get(result, "healthy"))));
  json_object_set_new(model, "graph",
                      rv_unravel_graph_focus(json_object_get(result, "graph"),
                                             RV_UNRAVEL_FOCUS_NODES_MAX));
  json_decref(manifest);
  return model;
}

/* ---- the part of the graph worth drawing ------------------------------------------------------ */

static bool id_in(const json_t *set, const char *id) { return id && json_object_get(set, id); }

json_t *rv_unravel_graph_focus(const json_t *graph, size_t max_nodes) {
  json_t *out = json_pack("{s[] s[]}", "nodes", "edges");
  const json_t *nodes = json_object_get(graph, "nodes"), *edges = json_object_get(graph, "edges");
  if (!out || !json_is_array(nodes))
    return out;
  if (json_array_size(nodes) <= max_nodes) { /* small enough: all of it */
    json_object_set(out, "nodes", (json_t *)nodes);
    if (json_is_array(edges))
      json_object_set(out, "edges", (json_t *)edges);
    return out;
  }
  /* The cycles first, then the nodes one edge away from them, up to max_nodes. */
  json_t *keep = json_object();
  size_t i;
  json_t *n, *e;
  json_array_foreach(nodes, i, n)
    if (json_is_true(json_object_get(n, "in_cycle")) && json_object_size(keep) < max_nodes)
      json_object_set_new(keep, json_string_value(json_object_get(n, "id")), json_true());
  json_t *ring = json_object();
  json_array_foreach(edges, i, e) {
    const char *from = json_string_value(json_object_get(e, "from"));
    const char *to = json_string_value(json_object_get(e, "to"));
    if (!from || !to)
      continue;
    if (id_in(keep, from) && !id_in(keep, to))
      json_object_set_new(ring, to, json_true());
    else if (id_in(keep, to) && !id_in(keep, from))
      json_object_set_new(ring, from, json_true());
  }
  const char *id;
  json_t *v;
  json_object_foreach(ring, id, v)
    if (json_object_size(keep) < max_nodes)
      json_object_set_new(keep, id, json_true());
  json_decref(ring);
  json_t *on = json_object_get(out, "nodes"), *oe = json_object_get(out, "edges");
  json_array_foreach(nodes, i, n)
    if (id_in(keep, json_string_value(json_object_get(n, "id"))))
      json_array_append(on, n);
  json_array_foreach(edges, i, e)
    if (id_in(keep, json_string_value(json_object_get(e, "from"))) &&
        id_in(keep, json_string_value(json_object_get(e, "to"))))
      json_array_append(oe, e);
  json_object_set_new(out, "omitted_nodes",
                      json_integer((json_int_t)(json_array_size(nodes) - json_array_size(on))));
  json_decref(keep);
  return out;
}
