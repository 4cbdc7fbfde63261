/*
 * Rendering of snapshots: thread dumps and lock tables, text and JSON.
 * Pure functions of a snapshot, so the same code renders a live process, a
 * captured one, or (later) a simulated one.
 */
#define _GNU_SOURCE
#include "obs/dump.h"
#include "obs/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rv_format_duration(int64_t ns, char *out, size_t n) {
  if (ns < 0)
    ns = 0;
  int64_t ms = ns / RV_NS_PER_MS;
  if (ms < 1000) {
    snprintf(out, n, "%lldms", (long long)ms);
    return;
  }
  int64_t s = ms / 1000, h = s / 3600, m = (s / 60) % 60;
  int64_t sec = s % 60, frac = ms % 1000;
  char secs[32];
  if (frac && h == 0 && m == 0)
    snprintf(secs, sizeof secs, "%lld.%03llds", (long long)sec, (long long)frac);
  else
    snprintf(secs, sizeof secs, "%llds", (long long)sec);
  if (h)
    snprintf(out, n, "%lldh%lldm%s", (long long)h, (long long)m, secs);
  else if (m)
    snprintf(out, n, "%lldm%s", (long long)m, secs);
  else
    snprintf(out, n, "%s", secs);
}

static const char *kind_name(rv_lock_kind k) { return k == RV_LOCK_MUTEX ? "mutex" : "rwlock"; }
static const char *mode_name(rv_lock_mode m) { return m == RV_MODE_READ ? "read" : "write"; }

static bool is_lock_wait(rv_wait_kind k) {
  return k == RV_WAIT_MUTEX || k == RV_WAIT_RDLOCK || k == RV_WAIT_WRLOCK;
}

static rv_lock_mode wait_mode(rv_wait_kind k) {
  return k == RV_WAIT_RDLOCK ? RV_MODE_READ : RV_MODE_WRITE;
}

static const char *verb_of(rv_wait_kind k) {
  switch (k) {
  case RV_WAIT_MUTEX:
    return "lock";
  case RV_WAIT_RDLOCK:
    return "read-lock";
  case RV_WAIT_WRLOCK:
    return "write-lock";
  default:
    return "wait for";
  }
}

/* ---- text: threads ---------------------------------------------------------------- */

static void text_thread(FILE *f, const rv_snapshot *s, const rv_thread_snap *t) {
  char dur[32];
  fprintf(f, "thread %llu \"%s\" (tid %d%s%s) ", (unsigned long long)t->id, t->name, t->tid,
          t->role[0] ? ", role " : "", t->role);
  if (t->wait.kind == RV_WAIT_NONE) {
    fprintf(f, "[running]\n");
  } else {
    rv_format_duration(s->taken_mono_ns - t->wait.since_ns, dur, sizeof dur);
    fprintf(f, "[%s%s%s, %s]\n", rv_wait_kind_name(t->wait.kind), t->wait.what[0] ? " " : "",
            t->wait.what, dur);
  }
  if (t->task[0])
    fprintf(f, "    task: %s\n", t->task);
  if (t->wait.kind != RV_WAIT_NONE && t->wait.file)
    fprintf(f, "    waiting at %s:%d\n", t->wait.file, t->wait.line);
  for (int k = 0; k < t->nheld; k++) {
    const rv_hold *h = &t->held[k];
    rv_format_duration(s->taken_mono_ns - h->since_ns, dur, sizeof dur);
    fprintf(f, "    holds %s \"%s\" (%s) for %s, acquired at %s:%d\n", kind_name(h->kind),
            h->lock_name, mode_name(h->mode), dur, h->file, h->line);
  }
  if (t->held_dropped)
    fprintf(f, "    holds %u more locks not recorded (over %d)\n", t->held_dropped, RV_HELD_MAX);
  if (t->moving)
    fprintf(f, "    (took, released or waited for a lock while this dump was taken)\n");
  fputc('\n', f);
}

static void text_deadlocks(FILE *f, const rv_snapshot *s, const rv_deadlocks *d) {
  for (size_t i = 0; d && i < d->n; i++) {
    const rv_deadlock *dl = &d->items[i];
    fprintf(f, "DEADLOCK %zu: %zu threads in a cycle, %zu more blocked behind it\n", i + 1,
            dl->nsteps, dl->nblocked);
    for (size_t k = 0; k < dl->nsteps; k++) {
      const rv_thread_snap *t = &s->threads[dl->steps[k].thread];
      const rv_thread_snap *next = &s->threads[dl->steps[(k + 1) % dl->nsteps].thread];
      const rv_hold *h = dl->steps[k].hold;
      fprintf(f, "  thread %llu \"%s\" waits to %s \"%s\" at %s:%d, ", (unsigned long long)t->id,
              t->name, verb_of(t->wait.kind), t->wait.what, t->wait.file ? t->wait.file : "?",
              t->wait.line);
      if (h) {
        char dur[32];
        rv_format_duration(s->taken_mono_ns - h->since_ns, dur, sizeof dur);
        fprintf(f, "held (%s) by thread %llu \"%s\" for %s, acquired at %s:%d\n",
                mode_name(h->mode), (unsigned long long)next->id, next->name, dur, h->file,
                h->line);
      } else {
        fprintf(f, "queued behind thread %llu \"%s\", which waits to %s it (writers go first)\n",
                (unsigned long long)next->id, next->name, verb_of(next->wait.kind));
      }
    }
    fputc('\n', f);
  }
}

static void text_reports(FILE *f, const rv_snapshot *s) {
  if (s->recursive_total == 0)
    return;
  fprintf(f, "RECURSIVE READ LOCKS: %llu reported (last %zu shown)\n",
          (unsigned long long)s->recursive_total, s->nreports);
  for (size_t i = 0; i < s->nreports; i++) {
    const rv_recursive_report *r = &s->reports[i];
    char when[RV_LOG_TS_MAX];
    rv_log_format_ts(when, r->at_wall_ns);
    fprintf(f, "  %s thread %llu \"%s\" read-locked \"%s\" at %s:%d while holding it from %s:%d%s%s\n",
            when, (unsigned long long)r->thread_id, r->thread_name, r->lock_name, r->second_file,
            r->second_line, r->first_file, r->first_line, r->task[0] ? "; task: " : "", r->task);
  }
  fputc('\n', f);
}

static void text_lockorder(FILE *f, const rv_snapshot *s) {
  const rv_lockorder_stats *st = &s->lockorder_stats;
  if (st->reports_total == 0 && st->classes_overflow == 0 && st->edges_overflow == 0)
    return;
  fprintf(f, "LOCK ORDER: %llu reported (last %zu shown)\n",
          (unsigned long long)st->reports_total, s->nlockorder);
  char text[2048];
  for (size_t i = 0; i < s->nlockorder; i++) {
    const rv_lockorder_report *r = &s->lockorder[i];
    char when[RV_LOG_TS_MAX];
    rv_log_format_ts(when, r->at_wall_ns);
    rv_lockorder_report_text(r, text, sizeof text);
    fprintf(f, "  %s %s%s%s\n", when, text, r->task[0] ? "; task: " : "", r->task);
  }
  if (st->classes_overflow || st->edges_overflow)
    fprintf(f, "  order graph full: %llu lock names and %llu pairs not recorded (limits %d names, %d pairs)\n",
            (unsigned long long)st->classes_overflow, (unsigned long long)st->edges_overflow,
            RV_LOCKORDER_CLASSES_MAX, RV_LOCKORDER_EDGES_MAX);
  fputc('\n', f);
}

static void text_threads(FILE *f, const rv_snapshot *s, const rv_deadlocks *d) {
  char when[RV_LOG_TS_MAX];
  rv_log_format_ts(when, s->taken_wall_ns);
  fprintf(f, "ravel thread dump: pid %d, %zu threads, %s\n\n", s->pid, s->nthreads, when);
  for (size_t i = 0; i < s->nthreads; i++)
    text_thread(f, s, &s->threads[i]);
  text_reports(f, s);
  text_lockorder(f, s);
  text_deadlocks(f, s, d);
  if (!d || d->n == 0)
    fprintf(f, "no deadlock among tracked locks\n");
}

/* ---- the per-lock view -------------------------------------------------------------- */

typedef struct lock_entry {
  uint64_t id;
  const char *name;
  rv_lock_kind kind;
} lock_entry;

/* Every lock that someone holds or waits for, once each, in order of id. */
static size_t collect_locks(const rv_snapshot *s, lock_entry **out) {
  size_t cap = 16, n = 0;
  lock_entry *v = malloc(cap * sizeof *v);
  for (size_t i = 0; v && i < s->nthreads; i++) {
    const rv_thread_snap *t = &s->threads[i];
    for (int k = -1; k < t->nheld; k++) {
      lock_entry e;
      if (k < 0) {
        if (!is_lock_wait(t->wait.kind))
          continue;
        e = (lock_entry){t->wait.obj_id, t->wait.what,
                         t->wait.kind == RV_WAIT_MUTEX ? RV_LOCK_MUTEX : RV_LOCK_RWLOCK};
      } else {
        e = (lock_entry){t->held[k].lock_id, t->held[k].lock_name, t->held[k].kind};
      }
      bool dup = false;
      for (size_t j = 0; j < n && !dup; j++)
        dup = v[j].id == e.id;
      if (dup)
        continue;
      if (n == cap) {
        lock_entry *nv = realloc(v, (cap *= 2) * sizeof *v);
        if (!nv) {
          free(v);
          v = NULL;
          break;
        }
        v = nv;
      }
      v[n++] = e;
    }
  }
  *out = v;
  return v ? n : 0;
}

static void text_locks(FILE *f, const rv_snapshot *s) {
  lock_entry *locks;
  size_t n = collect_locks(s, &locks);
  fprintf(f, "ravel lock table: pid %d, %zu locks held or awaited\n\n", s->pid, n);
  char dur[32];
  for (size_t j = 0; j < n; j++) {
    fprintf(f, "%s \"%s\"\n", kind_name(locks[j].kind), locks[j].name);
    for (size_t i = 0; i < s->nthreads; i++) {
      const rv_thread_snap *t = &s->threads[i];
      for (int k = 0; k < t->nheld; k++) {
        const rv_hold *h = &t->held[k];
        if (h->lock_id != locks[j].id)
          continue;
        rv_format_duration(s->taken_mono_ns - h->since_ns, dur, sizeof dur);
        fprintf(f, "    held (%s) by thread %llu \"%s\" for %s, at %s:%d\n", mode_name(h->mode),
                (unsigned long long)t->id, t->name, dur, h->file, h->line);
      }
    }
    for (size_t i = 0; i < s->nthreads; i++) {
      const rv_thread_snap *t = &s->threads[i];
      if (!is_lock_wait(t->wait.kind) || t->wait.obj_id != locks[j].id)
        continue;
      rv_format_duration(s->taken_mono_ns - t->wait.since_ns, dur, sizeof dur);
      fprintf(f, "    awaited (%s) by thread %llu \"%s\" for %s, at %s:%d\n",
              mode_name(wait_mode(t->wait.kind)), (unsigned long long)t->id, t->name, dur,
              t->wait.file, t->wait.line);
    }
    fputc('\n', f);
  }
  free(locks);
}

/* ---- JSON ------------------------------------------------------------------------------ */

static json_t *site_json(const char *file, int line) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s:%d", file ? file : "?", line);
  return json_string(buf);
}

static json_t *hold_json(const rv_snapshot *s, const rv_hold *h) {
  return json_pack("{s:s, s:I, s:s, s:s, s:o, s:I}", "lock", h->lock_name, "lock_id",
                   (json_int_t)h->lock_id, "kind", kind_name(h->kind), "mode", mode_name(h->mode),
                   "site", site_json(h->file, h->line), "held_ns",
                   (json_int_t)(s->taken_mono_ns - h->since_ns));
}

static json_t *thread_json(const rv_snapshot *s, const rv_thread_snap *t) {
  json_t *held = json_array();
  for (int k = 0; k < t->nheld; k++)
    json_array_append_new(held, hold_json(s, &t->held[k]));
  json_t *j = json_pack("{s:I, s:i, s:s, s:s, s:s, s:s, s:o, s:i}", "id", (json_int_t)t->id, "tid",
                        t->tid, "name", t->name, "role", t->role, "task", t->task, "state",
                        rv_wait_kind_name(t->wait.kind), "held", held, "held_dropped",
                        (int)t->held_dropped);
  if (t->wait.kind != RV_WAIT_NONE) {
    json_t *w = json_pack("{s:s, s:s, s:I, s:I}", "kind", rv_wait_kind_name(t->wait.kind), "what",
                          t->wait.what, "obj_id", (json_int_t)t->wait.obj_id, "waiting_ns",
                          (json_int_t)(s->taken_mono_ns - t->wait.since_ns));
    if (t->wait.file)
      json_object_set_new(w, "site", site_json(t->wait.file, t->wait.line));
    if (is_lock_wait(t->wait.kind))
      json_object_set_new(w, "mode", json_string(mode_name(wait_mode(t->wait.kind))));
    json_object_set_new(j, "wait", w);
  } else {
    json_object_set_new(j, "wait", json_null());
  }
  if (t->moving)
    json_object_set_new(j, "moving", json_true());
  return j;
}

static json_t *reports_json(const rv_snapshot *s) {
  json_t *arr = json_array();
  for (size_t i = 0; i < s->nreports; i++) {
    const rv_recursive_report *r = &s->reports[i];
    char when[RV_LOG_TS_MAX];
    rv_log_format_ts(when, r->at_wall_ns);
    json_array_append_new(
        arr, json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:s}", "thread_id",
                       (json_int_t)r->thread_id, "thread", r->thread_name, "task", r->task, "lock",
                       r->lock_name, "first_site", site_json(r->first_file, r->first_line),
                       "second_site", site_json(r->second_file, r->second_line), "at", when));
  }
  return json_pack("{s:I, s:o}", "total", (json_int_t)s->recursive_total, "reports", arr);
}

static json_t *lockorder_step_json(const rv_lockorder_step *st) {
  return json_pack("{s:I, s:s, s:s, s:o, s:s, s:o}", "thread_id", (json_int_t)st->thread_id,
                   "thread_name", st->thread_name, "held_lock", st->held_lock, "held_site",
                   site_json(st->held_file, st->held_line), "acquiring_lock", st->acquiring_lock,
                   "acquiring_site", site_json(st->acquiring_file, st->acquiring_line));
}

/* The keys `ravel unravel` reads; keep their names. */
static json_t *lockorder_json(const rv_snapshot *s) {
  json_t *arr = json_array();
  char text[2048];
  for (size_t i = 0; i < s->nlockorder; i++) {
    const rv_lockorder_report *r = &s->lockorder[i];
    const rv_lockorder_step *p = &r->prior[0];
    rv_lockorder_report_text(r, text, sizeof text);
    json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:o, s:s, s:o}", "text", text, "thread_id",
                          (json_int_t)r->now.thread_id, "thread_name", r->now.thread_name,
                          "held_lock", r->now.held_lock, "held_site",
                          site_json(r->now.held_file, r->now.held_line), "acquiring_lock",
                          r->now.acquiring_lock, "acquiring_site",
                          site_json(r->now.acquiring_file, r->now.acquiring_line));
    json_object_set_new(o, "task", json_string(r->task));
    json_object_set_new(o, "prior_thread_id", json_integer((json_int_t)p->thread_id));
    json_object_set_new(o, "prior_thread_name", json_string(p->thread_name));
    json_object_set_new(o, "prior_held_lock", json_string(p->held_lock));
    json_object_set_new(o, "prior_held_site", site_json(p->held_file, p->held_line));
    json_object_set_new(o, "prior_acquiring_lock", json_string(p->acquiring_lock));
    json_object_set_new(o, "prior_acquiring_site", site_json(p->acquiring_file, p->acquiring_line));
    json_t *chain = json_array();
    for (size_t k = 0; k < r->nprior; k++)
      json_array_append_new(chain, lockorder_step_json(&r->prior[k]));
    json_object_set_new(o, "prior_chain", chain);
    json_object_set_new(o, "prior_chain_more", json_integer((json_int_t)r->prior_more));
    json_object_set_new(o, "at_wall_ms", json_integer((json_int_t)(r->at_wall_ns / RV_NS_PER_MS)));
    json_array_append_new(arr, o);
  }
  return arr;
}

static json_t *deadlocks_json(const rv_snapshot *s, const rv_deadlocks *d) {
  json_t *arr = json_array();
  for (size_t i = 0; d && i < d->n; i++) {
    const rv_deadlock *dl = &d->items[i];
    json_t *cycle = json_array();
    for (size_t k = 0; k < dl->nsteps; k++) {
      const rv_thread_snap *t = &s->threads[dl->steps[k].thread];
      const rv_thread_snap *next = &s->threads[dl->steps[(k + 1) % dl->nsteps].thread];
      json_t *step = json_pack("{s:I, s:s, s:s, s:s, s:o, s:I, s:s}", "thread_id",
                               (json_int_t)t->id, "thread", t->name, "waits_to",
                               verb_of(t->wait.kind), "lock", t->wait.what, "site",
                               site_json(t->wait.file, t->wait.line), "blocked_by_id",
                               (json_int_t)next->id, "blocked_by", next->name);
      json_object_set_new(step, "blocking_hold",
                          dl->steps[k].hold ? hold_json(s, dl->steps[k].hold) : json_null());
      json_array_append_new(cycle, step);
    }
    json_array_append_new(arr, json_pack("{s:o, s:I}", "cycle", cycle, "blocked_behind",
                                         (json_int_t)dl->nblocked));
  }
  return arr;
}

static json_t *locks_json(const rv_snapshot *s) {
  lock_entry *locks;
  size_t n = collect_locks(s, &locks);
  json_t *arr = json_array();
  for (size_t j = 0; j < n; j++) {
    json_t *holders = json_array(), *waiters = json_array();
    for (size_t i = 0; i < s->nthreads; i++) {
      const rv_thread_snap *t = &s->threads[i];
      for (int k = 0; k < t->nheld; k++) {
        if (t->held[k].lock_id != locks[j].id)
          continue;
        json_t *h = hold_json(s, &t->held[k]);
        json_object_set_new(h, "thread_id", json_integer((json_int_t)t->id));
        json_object_set_new(h, "thread", json_string(t->name));
        json_array_append_new(holders, h);
      }
      if (is_lock_wait(t->wait.kind) && t->wait.obj_id == locks[j].id)
        json_array_append_new(
            waiters, json_pack("{s:I, s:s, s:s, s:o, s:I}", "thread_id", (json_int_t)t->id,
                               "thread", t->name, "mode", mode_name(wait_mode(t->wait.kind)),
                               "site", site_json(t->wait.file, t->wait.line), "waiting_ns",
                               (json_int_t)(s->taken_mono_ns - t->wait.since_ns)));
    }
    json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:o, s:o}", "name", locks[j].name, "id",
                                         (json_int_t)locks[j].id, "kind",
                                         kind_name(locks[j].kind), "holders", holders, "waiters",
                                         waiters));
  }
  free(locks);
  return arr;
}

static char *render_json(const rv_snapshot *s, const rv_deadlocks *d, rv_dump_view view) {
  char when[RV_LOG_TS_MAX];
  rv_log_format_ts(when, s->taken_wall_ns);
  /* taken_mono_ns: the process's monotonic clock, so two dumps of one process can tell
   * a wait that went on (the same start, taken_mono_ns - waiting_ns) from a new one. */
  json_t *root = json_pack("{s:i, s:s, s:I}", "pid", s->pid, "taken_at", when, "taken_mono_ns",
                           (json_int_t)s->taken_mono_ns);
  if (view == RV_DUMP_THREADS) {
    json_t *threads = json_array();
    for (size_t i = 0; i < s->nthreads; i++)
      json_array_append_new(threads, thread_json(s, &s->threads[i]));
    json_object_set_new(root, "threads", threads);
    json_object_set_new(root, "recursive_reads", reports_json(s));
    json_object_set_new(root, "lock_order_reports", lockorder_json(s));
    json_object_set_new(root, "lock_order_total",
                        json_integer((json_int_t)s->lockorder_stats.reports_total));
    const rv_lockorder_stats *st = &s->lockorder_stats;
    json_object_set_new(root, "lock_order_graph",
                        json_pack("{s:I, s:I, s:I, s:I}", "classes", (json_int_t)st->classes,
                                  "edges", (json_int_t)st->edges, "classes_overflow",
                                  (json_int_t)st->classes_overflow, "edges_overflow",
                                  (json_int_t)st->edges_overflow));
    json_object_set_new(root, "deadlocks", deadlocks_json(s, d));
  } else {
    json_object_set_new(root, "locks", locks_json(s));
  }
  char *out = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(root);
  return out;
}

char *rv_dump_render(const rv_snapshot *s, const rv_deadlocks *d, rv_dump_view view,
                     rv_dump_format format) {
  if (format == RV_DUMP_JSON)
    return render_json(s, d, view);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return NULL;
  if (view == RV_DUMP_THREADS)
    text_threads(f, s, d);
  else
    text_locks(f, s);
  fclose(f);
  return buf;
}

char *rv_dump(rv_registry *reg, rv_dump_view view, rv_dump_format format) {
  rv_snapshot *s = rv_snapshot_take(reg);
  if (!s)
    return NULL;
  rv_deadlocks *d = view == RV_DUMP_THREADS ? rv_deadlocks_find(s) : NULL;
  char *out = rv_dump_render(s, d, view, format);
  rv_deadlocks_free(d);
  rv_snapshot_free(s);
  return out;
}
