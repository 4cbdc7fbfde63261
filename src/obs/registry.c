/*
 * The thread and lock registry (see registry.h for the model).
 *
 * Locking: reg->mu guards the thread list, the report ring and the settings;
 * each thread's t->mu guards that thread's task, wait and holds; reg->lo_mu
 * guards the lock-order graph and its reports.  Order: reg->mu before t->mu
 * before reg->lo_mu (nothing is taken under lo_mu).  None is held across
 * anything that blocks, nor while calling the log hook.
 */
#include "obs/registry.h"
#include "obs/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rv_registry {
  rv_rawmu mu;
  rv_thread *threads;
  uint64_t next_thread_id;
  atomic_uint_fast64_t next_lock_id;
  rv_recursive_policy policy;
  rv_registry_log_fn log_fn;
  void *log_arg;
  rv_recursive_report reports[RV_REPORTS_MAX]; /* ring */
  uint64_t nreports_total;

  _Atomic int lo_policy; /* rv_lockorder_policy; read without a lock on the lock paths */
  rv_rawmu lo_mu;
  struct lockorder *lo;  /* allocated on first use, guarded by lo_mu */
};

static const char *const wait_kind_names[] = {
#define RV__WK_NAME(name, text) text,
    RV_WAIT_KINDS(RV__WK_NAME)
#undef RV__WK_NAME
};

const char *rv_wait_kind_name(rv_wait_kind k) {
  return (unsigned)k < RV_WAIT_KIND_COUNT ? wait_kind_names[k] : "?";
}

rv_registry *rv_registry_new(void) {
  rv_registry *reg = calloc(1, sizeof *reg);
  if (!reg)
    return NULL;
  rv_rawmu_init(&reg->mu);
  atomic_init(&reg->next_lock_id, 1);
  reg->next_thread_id = 1;
  reg->policy = RV_RECURSIVE_WARN;
  atomic_init(&reg->lo_policy, RV_LOCKORDER_WARN);
  rv_rawmu_init(&reg->lo_mu);
  return reg;
}

void rv_registry_free(rv_registry *reg) {
  if (!reg)
    return;
  free(reg->lo);
  rv_rawmu_destroy(&reg->lo_mu);
  rv_rawmu_destroy(&reg->mu);
  free(reg);
}

void rv_registry_set_recursive_policy(rv_registry *reg, rv_recursive_policy p) {
  rv_rawmu_lock(&reg->mu);
  reg->policy = p;
  rv_rawmu_unlock(&reg->mu);
}

rv_recursive_policy rv_registry_recursive_policy(rv_registry *reg) {
  rv_rawmu_lock(&reg->mu);
  rv_recursive_policy p = reg->policy;
  rv_rawmu_unlock(&reg->mu);
  return p;
}

int rv_recursive_policy_parse(const char *s) {
  if (!s)
    return -1;
  if (strcmp(s, "off") == 0)
    return RV_RECURSIVE_OFF;
  if (strcmp(s, "warn") == 0)
    return RV_RECURSIVE_WARN;
  if (strcmp(s, "abort") == 0)
    return RV_RECURSIVE_ABORT;
  return -1;
}

void rv_registry_set_log(rv_registry *reg, rv_registry_log_fn fn, void *arg) {
  rv_rawmu_lock(&reg->mu);
  reg->log_fn = fn;
  reg->log_arg = arg;
  rv_rawmu_unlock(&reg->mu);
}

uint64_t rv_registry_recursive_count(rv_registry *reg) {
  rv_rawmu_lock(&reg->mu);
  uint64_t n = reg->nreports_total;
  rv_rawmu_unlock(&reg->mu);
  return n;
}

uint64_t rv__registry_next_lock_id(rv_registry *reg) {
  return atomic_fetch_add(&reg->next_lock_id, 1);
}

void rv__registry_add_thread(rv_registry *reg, rv_thread *t) {
  rv_rawmu_lock(&reg->mu);
  t->reg = reg;
  t->id = reg->next_thread_id++;
  t->prev = NULL;
  t->next = reg->threads;
  if (reg->threads)
    reg->threads->prev = t;
  reg->threads = t;
  rv_rawmu_unlock(&reg->mu);
}

void rv__registry_remove_thread(rv_thread *t) {
  rv_registry *reg = t->reg;
  if (!reg)
    return;
  rv_rawmu_lock(&reg->mu);
  if (t->prev)
    t->prev->next = t->next;
  else
    reg->threads = t->next;
  if (t->next)
    t->next->prev = t->prev;
  t->next = t->prev = NULL;
  rv_rawmu_unlock(&reg->mu);
  t->reg = NULL;
}

uint64_t rv_thread_id(const rv_thread *t) { return t->id; }
int rv_thread_tid(const rv_thread *t) {
  rv_thread *m = (rv_thread *)t; /* the lock is not part of the record's value */
  rv_rawmu_lock(&m->mu);
  int tid = m->tid;
  rv_rawmu_unlock(&m->mu);
  return tid;
}

void rv_thread_set_task(const char *fmt, ...) {
  rv_thread *t = rv_thread_self();
  rv_rawmu_lock(&t->mu);
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->task, sizeof t->task, fmt, ap);
    va_end(ap);
  } else {
    t->task[0] = 0;
  }
  rv_rawmu_unlock(&t->mu);
}

void *rv_thread_slot(unsigned key, size_t size) {
  if (key >= RV_THREAD_SLOTS_MAX)
    return NULL;
  rv_thread *t = rv_thread_self();
  if (!t->slots[key])
    t->slots[key] = calloc(1, size);
  return t->slots[key];
}

void rv__thread_slots_free(rv_thread *t) {
  for (unsigned k = 0; k < RV_THREAD_SLOTS_MAX; k++) {
    free(t->slots[k]);
    t->slots[k] = NULL;
  }
}

/* ---- holds and waits ------------------------------------------------------------ */

void rv__hold_add(rv_thread *t, uint64_t lock_id, const char *lock_name, rv_lock_kind kind,
                  rv_lock_mode mode, const char *file, int line) {
  int64_t now = rv_now_ns();
  rv_rawmu_lock(&t->mu);
  if (t->nheld < RV_HELD_MAX) {
    rv_hold *h = &t->held[t->nheld];
    h->lock_id = lock_id;
    memcpy(h->lock_name, lock_name, RV_LOCK_NAME_MAX);
    h->kind = kind;
    h->mode = mode;
    h->file = file;
    h->line = line;
    h->since_ns = now;
    h->class_id = -1;
    if (t->lo_pending_lock_id == lock_id) { /* resolved by rv__check_lock_order just before */
      h->class_id = t->lo_pending_class;
      t->lo_pending_lock_id = 0;
    }
    __atomic_store_n(&t->nheld, t->nheld + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
  } else {
    t->held_dropped++;
  }
  rv_rawmu_unlock(&t->mu);
}

/* Remove the most recent matching hold: locks are usually released LIFO. */
void rv__hold_remove(rv_thread *t, uint64_t lock_id, rv_lock_mode mode) {
  rv_rawmu_lock(&t->mu);
  for (int i = t->nheld - 1; i >= 0; i--) {
    if (t->held[i].lock_id == lock_id && t->held[i].mode == mode) {
      memmove(&t->held[i], &t->held[i + 1], (size_t)(t->nheld - i - 1) * sizeof t->held[0]);
      __atomic_store_n(&t->nheld, t->nheld - 1, __ATOMIC_RELAXED);
      __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
      rv_rawmu_unlock(&t->mu);
      return;
    }
  }
  if (t->held_dropped > 0)
    t->held_dropped--; /* it was one we could not record */
  rv_rawmu_unlock(&t->mu);
}

void rv__wait_begin(rv_thread *t, rv_wait_kind kind, uint64_t obj_id, const char *what,
                    const char *file, int line) {
  int64_t now = rv_now_ns();
  rv_rawmu_lock(&t->mu);
  t->wait.kind = kind;
  t->wait.obj_id = obj_id;
  snprintf(t->wait.what, sizeof t->wait.what, "%s", what ? what : "");
  t->wait.file = file;
  t->wait.line = line;
  t->wait.since_ns = now;
  __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
  rv_rawmu_unlock(&t->mu);
}

void rv__wait_end(rv_thread *t) {
  rv_rawmu_lock(&t->mu);
  t->wait.kind = RV_WAIT_NONE;
  t->wait.obj_id = 0;
  t->wait.what[0] = 0;
  __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
  rv_rawmu_unlock(&t->mu);
}

static void default_log(const char *level, const char *msg) {
  char ts[RV_LOG_TS_MAX];
  rv_log_format_ts(ts, rv_wall_ns());
  fprintf(stderr, "ts=%s level=%s comp=locks %s\n", ts, level, msg);
}

void rv__check_recursive_read(rv_thread *t, uint64_t lock_id, const char *lock_name,
                              const char *file, int line) {
  rv_registry *reg = t->reg;
  if (!reg)
    return;
  rv_recursive_report rep = {0};
  bool found = false;
  rv_rawmu_lock(&t->mu);
  for (int i = 0; i < t->nheld; i++) {
    if (t->held[i].lock_id == lock_id && t->held[i].mode == RV_MODE_READ) {
      found = true;
      rep.first_file = t->held[i].file;
      rep.first_line = t->held[i].line;
      break;
    }
  }
  if (found) {
    memcpy(rep.thread_name, t->name, sizeof rep.thread_name);
    memcpy(rep.task, t->task, sizeof rep.task);
  }
  rv_rawmu_unlock(&t->mu);
  if (!found)
    return;

  rep.thread_id = t->id;
  rep.lock_id = lock_id;
  snprintf(rep.lock_name, sizeof rep.lock_name, "%s", lock_name);
  rep.second_file = file;
  rep.second_line = line;
  rep.at_wall_ns = rv_wall_ns();

  rv_rawmu_lock(&reg->mu);
  rv_recursive_policy policy = reg->policy;
  if (policy == RV_RECURSIVE_OFF) {
    rv_rawmu_unlock(&reg->mu);
    return;
  }
  reg->reports[reg->nreports_total % RV_REPORTS_MAX] = rep;
  reg->nreports_total++;
  rv_registry_log_fn fn = reg->log_fn;
  void *arg = reg->log_arg;
  rv_rawmu_unlock(&reg->mu);

  char msg[512];
  snprintf(msg, sizeof msg,
           "msg=\"recursive read lock\" lock=\"%s\" thread=\"%s\" thread_id=%llu "
           "first=%s:%d second=%s:%d task=\"%s\" hint=\"a writer queueing between the two "
           "read locks deadlocks this thread\"",
           rep.lock_name, rep.thread_name, (unsigned long long)rep.thread_id, rep.first_file,
           rep.first_line, rep.second_file, rep.second_line, rep.task);
  const char *level = policy == RV_RECURSIVE_ABORT ? "error" : "warn";
  if (fn)
    fn(arg, level, msg);
  else
    default_log(level, msg);
  if (policy == RV_RECURSIVE_ABORT)
    abort();
}

/* ---- lock order ------------------------------------------------------------------------ */
/*
 * A graph of lock classes (lock names), in the spirit of Linux lockdep: an
 * edge A -> B records that some thread acquired B while holding A, with the
 * first pair of sites and the thread that did it.  A new edge A -> B when B
 * already reaches A closes a cycle: the orders recorded on that cycle can
 * deadlock, whether or not they ever overlapped in time.  Every cycle is seen
 * when its last edge is first added, so a known edge needs no search: the
 * steady state is one hash lookup per held lock under lo_mu.
 *
 * Fixed tables, allocated once on first use: classes and edges live in
 * arrays, found through open-addressing hash tables; the breadth-first search
 * uses per-class scratch arrays stamped with a generation number.
 */

#define LO_CLASS_SLOTS (2 * RV_LOCKORDER_CLASSES_MAX) /* powers of two */
#define LO_EDGE_SLOTS (2 * RV_LOCKORDER_EDGES_MAX)
_Static_assert((RV_LO_THREAD_CACHE & (RV_LO_THREAD_CACHE - 1)) == 0, "a power of two");
_Static_assert((RV_LOCKORDER_CLASSES_MAX & (RV_LOCKORDER_CLASSES_MAX - 1)) == 0, "a power of two");
_Static_assert((RV_LOCKORDER_EDGES_MAX & (RV_LOCKORDER_EDGES_MAX - 1)) == 0, "a power of two");

typedef struct lo_class {
  char name[RV_LOCK_NAME_MAX];
  uint32_t hash;
  int32_t out; /* first edge leaving this class, -1 if none */
} lo_class;

typedef struct lo_edge {
  int32_t from, to;
  int32_t next_out; /* next edge leaving `from` */
  uint64_t thread_id;
  char thread_name[RV_THREAD_NAME_MAX];
  const char *from_file, *to_file;
  int from_line, to_line;
} lo_edge;

struct lockorder {
  uint32_t nclasses, nedges;
  uint64_t classes_overflow, edges_overflow;
  int32_t class_slot[LO_CLASS_SLOTS]; /* class index + 1; 0 = empty */
  int32_t edge_slot[LO_EDGE_SLOTS];   /* edge index + 1; 0 = empty */
  lo_class classes[RV_LOCKORDER_CLASSES_MAX];
  lo_edge edges[RV_LOCKORDER_EDGES_MAX];
  /* search scratch */
  uint32_t gen;
  uint32_t seen[RV_LOCKORDER_CLASSES_MAX];
  int32_t via[RV_LOCKORDER_CLASSES_MAX]; /* edge that reached the class */
  int32_t queue[RV_LOCKORDER_CLASSES_MAX];
  /* reports */
  rv_lockorder_report reports[RV_LOCKORDER_REPORTS_MAX]; /* ring */
  uint64_t nreports_total;
};

void rv_registry_set_lockorder_policy(rv_registry *reg, rv_lockorder_policy p) {
  atomic_store(&reg->lo_policy, (int)p);
}

rv_lockorder_policy rv_registry_lockorder_policy(rv_registry *reg) {
  return (rv_lockorder_policy)atomic_load(&reg->lo_policy);
}

int rv_lockorder_policy_parse(const char *s) {
  if (!s)
    return -1;
  if (strcmp(s, "off") == 0)
    return RV_LOCKORDER_OFF;
  if (strcmp(s, "warn") == 0)
    return RV_LOCKORDER_WARN;
  if (strcmp(s, "abort") == 0)
    return RV_LOCKORDER_ABORT;
  return -1;
}

void rv_registry_lockorder_stats(rv_registry *reg, rv_lockorder_stats *out) {
  memset(out, 0, sizeof *out);
  rv_rawmu_lock(&reg->lo_mu);
  const struct lockorder *lo = reg->lo;
  if (lo) {
    out->reports_total = lo->nreports_total;
    out->classes = lo->nclasses;
    out->edges = lo->nedges;
    out->classes_overflow = lo->classes_overflow;
    out->edges_overflow = lo->edges_overflow;
  }
  rv_rawmu_unlock(&reg->lo_mu);
}

uint64_t rv_registry_lockorder_count(rv_registry *reg) {
  rv_lockorder_stats st;
  rv_registry_lockorder_stats(reg, &st);
  return st.reports_total;
}

static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* The class of `name`, created if new; -1 past the bound.  Under lo_mu. */
static int32_t lo_class_of(struct lockorder *lo, const char *name) {
  uint32_t h = name_hash(name);
  for (uint32_t i = h & (LO_CLASS_SLOTS - 1);; i = (i + 1) & (LO_CLASS_SLOTS - 1)) {
    int32_t c = lo->class_slot[i] - 1;
    if (c < 0) {
      if (lo->nclasses == RV_LOCKORDER_CLASSES_MAX) {
        lo->classes_overflow++;
        return -1;
      }
      c = (int32_t)lo->nclasses++;
      lo_class *k = &lo->classes[c];
      snprintf(k->name, sizeof k->name, "%s", name);
      k->hash = h;
      k->out = -1;
      lo->class_slot[i] = c + 1;
      return c;
    }
    if (lo->classes[c].hash == h && strcmp(lo->classes[c].name, name) == 0)
      return c;
  }
}

static uint32_t edge_hash(int32_t from, int32_t to) {
  uint64_t k = (uint64_t)(uint32_t)from * RV_LOCKORDER_CLASSES_MAX + (uint32_t)to;
  return (uint32_t)((k * UINT64_C(0x9E3779B97F4A7C15)) >> 32);
}

/* The slot holding edge from -> to, or the empty slot where it would go. */
static uint32_t lo_edge_slot(const struct lockorder *lo, int32_t from, int32_t to) {
  for (uint32_t i = edge_hash(from, to) & (LO_EDGE_SLOTS - 1);; i = (i + 1) & (LO_EDGE_SLOTS - 1)) {
    int32_t e = lo->edge_slot[i] - 1;
    if (e < 0 || (lo->edges[e].from == from && lo->edges[e].to == to))
      return i;
  }
}

/*
 * Breadth-first search for a path src -> ... -> dst.  On success fills
 * path[] with up to RV_LOCKORDER_CHAIN_MAX edge indexes in path order and
 * returns the path's length (which may exceed what was stored); 0 if none.
 */
static size_t lo_find_path(struct lockorder *lo, int32_t src, int32_t dst,
                           int32_t path[RV_LOCKORDER_CHAIN_MAX]) {
  if (++lo->gen == 0) { /* wrapped: clear the stamps */
    memset(lo->seen, 0, sizeof lo->seen);
    lo->gen = 1;
  }
  size_t head = 0, tail = 0;
  lo->seen[src] = lo->gen;
  lo->via[src] = -1;
  lo->queue[tail++] = src;
  bool found = false;
  while (head < tail && !found) {
    int32_t c = lo->queue[head++];
    for (int32_t e = lo->classes[c].out; e >= 0; e = lo->edges[e].next_out) {
      int32_t n = lo->edges[e].to;
      if (lo->seen[n] == lo->gen)
        continue;
      lo->seen[n] = lo->gen;
      lo->via[n] = e;
      if (n == dst) {
        found = true;
        break;
      }
      lo->queue[tail++] = n;
    }
  }
  if (!found)
    return 0;
  size_t len = 0;
  for (int32_t c = dst; c != src; c = lo->edges[lo->via[c]].from)
    len++;
  /* Walk back from dst; keep the first RV_LOCKORDER_CHAIN_MAX edges of the path. */
  size_t k = len;
  for (int32_t c = dst; c != src; c = lo->edges[lo->via[c]].from) {
    k--;
    if (k < RV_LOCKORDER_CHAIN_MAX)
      path[k] = lo->via[c];
  }
  return len;
}

static void lo_step_from_edge(const struct lockorder *lo, const lo_edge *e, rv_lockorder_step *s) {
  s->thread_id = e->thread_id;
  memcpy(s->thread_name, e->thread_name, sizeof s->thread_name);
  memcpy(s->held_lock, lo->classes[e->from].name, sizeof s->held_lock);
  s->held_file = e->from_file;
  s->held_line = e->from_line;
  memcpy(s->acquiring_lock, lo->classes[e->to].name, sizeof s->acquiring_lock);
  s->acquiring_file = e->to_file;
  s->acquiring_line = e->to_line;
}

static int step_text(char *buf, size_t n, const rv_lockorder_step *s, bool with_id) {
  char id[32] = "";
  if (with_id)
    snprintf(id, sizeof id, "%llu ", (unsigned long long)s->thread_id);
  return snprintf(buf, n, "thread %s\"%s\" acquired \"%s\" (%s:%d) while holding \"%s\" (%s:%d)",
                  id, s->thread_name, s->acquiring_lock,
                  s->acquiring_file ? s->acquiring_file : "?", s->acquiring_line, s->held_lock,
                  s->held_file ? s->held_file : "?", s->held_line);
}

int rv_lockorder_report_text(const rv_lockorder_report *r, char *buf, size_t n) {
  size_t len = 0;
#define LO_ADVANCE(expr)                                                                           \
  do {                                                                                             \
    int w_ = (expr);                                                                               \
    if (w_ > 0)                                                                                    \
      len += (size_t)w_;                                                                           \
  } while (0)
#define LO_AT (len < n ? buf + len : NULL), (len < n ? n - len : 0)
  LO_ADVANCE(step_text(LO_AT, &r->now, true));
  for (size_t i = 0; i < r->nprior; i++) {
    LO_ADVANCE(snprintf(LO_AT, "%s", i == 0 ? "; earlier " : i + 1 == r->nprior ? ", and " : ", "));
    LO_ADVANCE(step_text(LO_AT, &r->prior[i], true));
  }
  if (r->prior_more)
    LO_ADVANCE(snprintf(LO_AT, ", and %zu more steps", r->prior_more));
  LO_ADVANCE(snprintf(LO_AT, ": these %s can deadlock",
                      r->nprior + r->prior_more == 1 ? "two orders" : "orders"));
#undef LO_AT
#undef LO_ADVANCE
  return (int)len;
}

/* Copy s into out (n bytes) with `"` and `\` escaped, as the logfmt quotes need. */
static void escape_quotes(char *out, size_t n, const char *s) {
  size_t k = 0;
  for (; *s && k + 2 < n; s++) {
    if (*s == '"' || *s == '\\')
      out[k++] = '\\';
    out[k++] = *s;
  }
  out[k] = 0;
}

static void lo_publish(rv_registry *reg, const rv_lockorder_report *rep, rv_lockorder_policy policy) {
  rv_rawmu_lock(&reg->mu);
  rv_registry_log_fn fn = reg->log_fn;
  void *arg = reg->log_arg;
  rv_rawmu_unlock(&reg->mu);

  char text[2048], quoted[2560], msg[3072];
  rv_lockorder_report_text(rep, text, sizeof text);
  escape_quotes(quoted, sizeof quoted, text);
  const rv_lockorder_step *p = &rep->prior[0];
  snprintf(msg, sizeof msg,
           "msg=\"lock order inversion\" thread=\"%s\" thread_id=%llu held=\"%s\" held_site=%s:%d "
           "acquiring=\"%s\" acquiring_site=%s:%d prior_thread=\"%s\" prior_held=\"%s\" "
           "prior_held_site=%s:%d prior_acquiring=\"%s\" prior_acquiring_site=%s:%d text=\"%s\" "
           "hint=\"potential deadlock: take these locks in one order\"",
           rep->now.thread_name, (unsigned long long)rep->now.thread_id, rep->now.held_lock,
           rep->now.held_file ? rep->now.held_file : "?", rep->now.held_line,
           rep->now.acquiring_lock, rep->now.acquiring_file ? rep->now.acquiring_file : "?",
           rep->now.acquiring_line, p->thread_name, p->held_lock, p->held_file ? p->held_file : "?",
           p->held_line, p->acquiring_lock, p->acquiring_file ? p->acquiring_file : "?",
           p->acquiring_line, quoted);
  const char *level = policy == RV_LOCKORDER_ABORT ? "error" : "warn";
  if (fn)
    fn(arg, level, msg);
  else
    default_log(level, msg);
  if (policy == RV_LOCKORDER_ABORT)
    abort();
}

/* What the check needs of one hold, copied under t->mu. */
typedef struct lo_held {
  uint64_t lock_id;
  int32_t class_id;
  const char *file;
  int line;
} lo_held;

static inline uint64_t edge_key(int32_t from, int32_t to) {
  return ((uint64_t)(uint32_t)from << 32 | (uint32_t)to) + 1;
}

static inline unsigned edge_cache_slot(uint64_t key) {
  return (unsigned)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 59) & (RV_LO_THREAD_CACHE - 1);
}

/* The class of lock_id if t's cache has it, else -1. */
static inline int32_t cached_class(const rv_thread *t, uint64_t lock_id) {
  unsigned i = (unsigned)lock_id & (RV_LO_THREAD_CACHE - 1);
  return t->lo_class_lock[i] == lock_id ? t->lo_class_of[i] : -1;
}

static inline void cache_class(rv_thread *t, uint64_t lock_id, int32_t c) {
  unsigned i = (unsigned)lock_id & (RV_LO_THREAD_CACHE - 1);
  t->lo_class_lock[i] = lock_id;
  t->lo_class_of[i] = c;
}

static inline bool edge_known(const rv_thread *t, int32_t from, int32_t to) {
  uint64_t k = edge_key(from, to);
  return t->lo_known_edge[edge_cache_slot(k)] == k;
}

static inline void cache_edge(rv_thread *t, int32_t from, int32_t to) {
  uint64_t k = edge_key(from, to);
  t->lo_known_edge[edge_cache_slot(k)] = k;
}

/*
 * The steady state, without the graph's lock: every class already known to
 * t and every pair in t's cache of known edges.  Under t->mu.
 */
static bool lo_all_known(rv_thread *t, uint64_t lock_id) {
  int32_t to = cached_class(t, lock_id);
  if (to < 0)
    return false;
  for (int i = 0; i < t->nheld; i++) {
    int32_t from = t->held[i].class_id;
    if (from < 0)
      return false;
    if (from != to && !edge_known(t, from, to))
      return false;
  }
  t->lo_pending_lock_id = lock_id;
  t->lo_pending_class = to;
  return true;
}

void rv__check_lock_order(rv_thread *t, uint64_t lock_id, const char *lock_name,
                          const char *file, int line) {
  rv_registry *reg = t->reg;
  if (!reg)
    return;
  rv_lockorder_policy policy = (rv_lockorder_policy)atomic_load_explicit(&reg->lo_policy,
                                                                         memory_order_relaxed);
  if (policy == RV_LOCKORDER_OFF)
    return;

  /* Reports are built on the stack and logged once every lock is released. */
  rv_lockorder_report *rep = NULL;
  size_t nrep = 0;
  rv_lockorder_report local[2]; /* more than one new inversion per acquisition is rare */

  rv_rawmu_lock(&t->mu);
  if (lo_all_known(t, lock_id)) {
    rv_rawmu_unlock(&t->mu);
    return;
  }
  rv_rawmu_lock(&reg->lo_mu);
  struct lockorder *lo = reg->lo;
  if (!lo) {
    lo = reg->lo = calloc(1, sizeof *lo);
    if (!lo) {
      rv_rawmu_unlock(&reg->lo_mu);
      rv_rawmu_unlock(&t->mu);
      return;
    }
  }
  int32_t to = lo_class_of(lo, lock_name);
  if (to >= 0)
    cache_class(t, lock_id, to);
  t->lo_pending_lock_id = lock_id;
  t->lo_pending_class = to;
  int32_t done[RV_HELD_MAX];
  int ndone = 0;
  for (int i = 0; to >= 0 && i < t->nheld; i++) {
    rv_hold *h = &t->held[i];
    if (h->class_id < 0)
      h->class_id = lo_class_of(lo, h->lock_name);
    int32_t from = h->class_id;
    if (from < 0 || from == to) /* over the bound, or the same class: no edge */
      continue;
    bool dup = false;
    for (int k = 0; k < ndone && !dup; k++)
      dup = done[k] == from;
    if (dup)
      continue;
    done[ndone++] = from;
    uint32_t slot = lo_edge_slot(lo, from, to);
    if (lo->edge_slot[slot]) { /* known pair: checked when it was first seen */
      cache_edge(t, from, to);
      continue;
    }
    if (lo->nedges == RV_LOCKORDER_EDGES_MAX) {
      lo->edges_overflow++;
      continue;
    }
    int32_t path[RV_LOCKORDER_CHAIN_MAX];
    size_t plen = lo_find_path(lo, to, from, path);
    /* Record the edge even when it inverts: the pair is then known and not reported again. */
    int32_t e = (int32_t)lo->nedges++;
    lo_edge *ed = &lo->edges[e];
    ed->from = from;
    ed->to = to;
    ed->thread_id = t->id;
    memcpy(ed->thread_name, t->name, sizeof ed->thread_name);
    ed->from_file = h->file;
    ed->from_line = h->line;
    ed->to_file = file;
    ed->to_line = line;
    ed->next_out = lo->classes[from].out;
    lo->classes[from].out = e;
    lo->edge_slot[slot] = e + 1;
    cache_edge(t, from, to);
    if (plen == 0)
      continue;
    /* Every new inversion goes into the ring; the first two are also logged. */
    rv_lockorder_report spare;
    rep = nrep < sizeof local / sizeof local[0] ? &local[nrep++] : &spare;
    memset(rep, 0, sizeof *rep);
    lo_step_from_edge(lo, ed, &rep->now);
    memcpy(rep->task, t->task, sizeof rep->task);
    rep->nprior = plen < RV_LOCKORDER_CHAIN_MAX ? plen : RV_LOCKORDER_CHAIN_MAX;
    rep->prior_more = plen - rep->nprior;
    for (size_t k = 0; k < rep->nprior; k++)
      lo_step_from_edge(lo, &lo->edges[path[k]], &rep->prior[k]);
    rep->at_wall_ns = rv_wall_ns();
    lo->reports[lo->nreports_total % RV_LOCKORDER_REPORTS_MAX] = *rep;
    lo->nreports_total++;
  }
  rv_rawmu_unlock(&reg->lo_mu);
  rv_rawmu_unlock(&t->mu);

  for (size_t i = 0; i < nrep; i++)
    lo_publish(reg, &local[i], policy);
}

/* ---- snapshots ---------------------------------------------------------------------- */

rv_snapshot *rv_snapshot_take(rv_registry *reg) {
  rv_snapshot *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->pid = rv_getpid();
  s->taken_wall_ns = rv_wall_ns();
  s->taken_mono_ns = rv_now_ns();
  rv_rawmu_lock(&reg->mu);
  size_t n = 0;
  for (rv_thread *t = reg->threads; t; t = t->next)
    n++;
  s->threads = calloc(n ? n : 1, sizeof *s->threads);
  uint64_t total = reg->nreports_total;
  size_t nrep = total < RV_REPORTS_MAX ? (size_t)total : RV_REPORTS_MAX;
  s->reports = calloc(nrep ? nrep : 1, sizeof *s->reports);
  if (!s->threads || !s->reports) {
    rv_rawmu_unlock(&reg->mu);
    rv_snapshot_free(s);
    return NULL;
  }
  uint64_t *seq = calloc(n ? n : 1, sizeof *seq);
  if (!seq) {
    rv_rawmu_unlock(&reg->mu);
    rv_snapshot_free(s);
    return NULL;
  }
  /* The list is newest first; dumps read better oldest (main) first. */
  rv_thread *last = reg->threads;
  while (last && last->next)
    last = last->next;
  for (rv_thread *t = last; t; t = t->prev) {
    seq[s->nthreads] = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE);
    rv_thread_snap *ts = &s->threads[s->nthreads++];
    ts->id = t->id;
    ts->started_ns = t->started_ns;
    rv_rawmu_lock(&t->mu);
    ts->tid = t->tid;
    memcpy(ts->name, t->name, sizeof ts->name);
    memcpy(ts->role, t->role, sizeof ts->role);
    memcpy(ts->task, t->task, sizeof ts->task);
    ts->wait = t->wait;
    ts->nheld = t->nheld;
    memcpy(ts->held, t->held, (size_t)t->nheld * sizeof t->held[0]);
    ts->held_dropped = t->held_dropped;
    rv_rawmu_unlock(&t->mu);
  }
  /* Each record was copied whole, but at its own moment.  A thread that changed since
   * its copy is marked moving; every unmarked thread kept its copied state from its
   * copy to now, so the unmarked records all held together at this instant. */
  size_t k = 0;
  for (rv_thread *t = last; t; t = t->prev, k++)
    s->threads[k].moving = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE) != seq[k];
  free(seq);
  for (size_t i = 0; i < nrep; i++)
    s->reports[i] = reg->reports[(total - nrep + i) % RV_REPORTS_MAX];
  s->nreports = nrep;
  s->recursive_total = total;
  rv_rawmu_unlock(&reg->mu);

  rv_rawmu_lock(&reg->lo_mu);
  const struct lockorder *lo = reg->lo;
  uint64_t lototal = lo ? lo->nreports_total : 0;
  size_t nlo = lototal < RV_LOCKORDER_REPORTS_MAX ? (size_t)lototal : RV_LOCKORDER_REPORTS_MAX;
  s->lockorder = nlo ? calloc(nlo, sizeof *s->lockorder) : NULL;
  if (nlo && !s->lockorder) {
    rv_rawmu_unlock(&reg->lo_mu);
    rv_snapshot_free(s);
    return NULL;
  }
  for (size_t i = 0; i < nlo; i++)
    s->lockorder[i] = lo->reports[(lototal - nlo + i) % RV_LOCKORDER_REPORTS_MAX];
  s->nlockorder = nlo;
  if (lo) {
    s->lockorder_stats.reports_total = lototal;
    s->lockorder_stats.classes = lo->nclasses;
    s->lockorder_stats.edges = lo->nedges;
    s->lockorder_stats.classes_overflow = lo->classes_overflow;
    s->lockorder_stats.edges_overflow = lo->edges_overflow;
  }
  rv_rawmu_unlock(&reg->lo_mu);
  return s;
}

void rv_snapshot_free(rv_snapshot *s) {
  if (!s)
    return;
  free(s->threads);
  free(s->reports);
  free(s->lockorder);
  free(s);
}
