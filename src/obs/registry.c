/*
 * The thread and lock registry (see registry.h for the model).
 *
 * Locking: reg->mu guards the thread list, the report ring and the settings;
 * each thread's t->mu guards that thread's task, wait and holds.  Order:
 * reg->mu before t->mu.  Neither is held across anything that blocks.
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
  return reg;
}

void rv_registry_free(rv_registry *reg) {
  if (!reg)
    return;
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

/* ---- holds and waits ------------------------------------------------------------ */

void rv__hold_add(rv_thread *t, uint64_t lock_id, const char *lock_name, rv_lock_kind kind,
                  rv_lock_mode mode, const char *file, int line) {
  int64_t now = rv_now_ns();
  rv_rawmu_lock(&t->mu);
  if (t->nheld < RV_HELD_MAX) {
    rv_hold *h = &t->held[t->nheld++];
    h->lock_id = lock_id;
    memcpy(h->lock_name, lock_name, RV_LOCK_NAME_MAX);
    h->kind = kind;
    h->mode = mode;
    h->file = file;
    h->line = line;
    h->since_ns = now;
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
      t->nheld--;
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
  rv_rawmu_unlock(&t->mu);
}

void rv__wait_end(rv_thread *t) {
  rv_rawmu_lock(&t->mu);
  t->wait.kind = RV_WAIT_NONE;
  t->wait.obj_id = 0;
  t->wait.what[0] = 0;
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
  /* The list is newest first; dumps read better oldest (main) first. */
  rv_thread *last = reg->threads;
  while (last && last->next)
    last = last->next;
  for (rv_thread *t = last; t; t = t->prev) {
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
  for (size_t i = 0; i < nrep; i++)
    s->reports[i] = reg->reports[(total - nrep + i) % RV_REPORTS_MAX];
  s->nreports = nrep;
  s->recursive_total = total;
  rv_rawmu_unlock(&reg->mu);
  return s;
}

void rv_snapshot_free(rv_snapshot *s) {
  if (!s)
    return;
  free(s->threads);
  free(s->reports);
  free(s);
}
