/*
 * ravel unravel's explanation: the cycles, root first (who holds what and
 * waits for whom), then the blast radius (who waits, transitively, on the
 * cycle: threads per process and per resource, and the queue's messages on
 * those processes), then the suspicious states found without a cycle.  The
 * same facts as text and as JSON.
 */
#define _GNU_SOURCE
#include "diag/unravel_internal.h"
#include "obs/dump.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000LL
/* Per-process caps on repetitive findings in the text (JSON has them all). */
#define UR_SHOW_MAX 5

static void dur_ns(long long ns, char *out, size_t n) { rv_format_duration((int64_t)ns, out, n); }

/* `billing/1 thread 30 "handler-26"` */
static char *who(const ur *u, size_t v) {
  const ur_node *n = &u->nodes[v];
  if (n->kind != UR_THREAD)
    return ur_strdup(n->label);
  if (n->ghost) {
    const char *d = n->desc ? n->desc : "";
    const char *colon = strchr(d, ':');
    int len = colon ? (int)(colon - d) : (int)strlen(d);
    return ur_fmt("%s %.*s", n->ghost_group ? n->ghost_group : "?", len, d[0] ? d : "thread ?");
  }
  return ur_fmt("%s thread %lld \"%s\"", u->procs[n->proc].group, n->tid, ur_jstr(n->th, "name"));
}

static const char *group_of_node(const ur *u, size_t v) {
  const ur_node *n = &u->nodes[v];
  if (n->proc >= 0)
    return u->procs[n->proc].group;
  return n->ghost_group ? n->ghost_group : "";
}

static const char *lock_name_of(const ur_node *l) {
  const char *q = strchr(l->label, '"');
  return q ? q : l->label;
}

/* The dlock held by thread v, if any, through its reverse DHELD edges: calls f for each. */
static void dlocks_held(const ur *u, size_t v, FILE *f, json_t *arr, const char *indent) {
  for (size_t e = u->roff[v]; e < u->roff[v + 1]; e++) {
    const ur_edge *ed = &u->edges[u->radj[e]];
    if (ed->kind != UR_E_DHELD)
      continue;
    const json_t *info = u->nodes[ed->from].info;
    char d[32];
    dur_ns(ur_jint(info, "held_ms") * NS_PER_MS, d, sizeof d);
    if (f)
      fprintf(f, "%sholds the distributed lock \"%s\" (token %lld, for %s, %lld waiting)\n", indent,
              ur_jstr(info, "lock"), ur_jint(info, "token"), d, ur_jint(info, "waiter_count"));
    if (arr)
      json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I}", "lock", ur_jstr(info, "lock"),
                                           "token", (json_int_t)ur_jint(info, "token"), "held_ms",
                                           (json_int_t)ur_jint(info, "held_ms"), "waiters",
                                           (json_int_t)ur_jint(info, "waiter_count")));
  }
}

static const char *mode_article(const char *mode) {
  return strcmp(mode, "read") == 0 ? "the read lock on" : "the write lock on";
}

static void holds_text(const ur *u, size_t v, FILE *f, const char *indent) {
  const json_t *h;
  size_t k;
  char d[32];
  json_array_foreach(json_object_get(u->nodes[v].th, "held"), k, h) {
    dur_ns(ur_jint(h, "held_ns"), d, sizeof d);
    if (strcmp(ur_jstr(h, "kind"), "mutex") == 0)
      fprintf(f, "%sholds the mutex \"%s\" (acquired at %s, %s ago)\n", indent, ur_jstr(h, "lock"),
              ur_jstr(h, "site"), d);
    else
      fprintf(f, "%sholds %s \"%s\" (acquired at %s, %s ago)\n", indent,
              mode_article(ur_jstr(h, "mode")), ur_jstr(h, "lock"), ur_jstr(h, "site"), d);
  }
  dlocks_held(u, v, f, NULL, indent);
}

/* Does thread v hold local lock obj_id in read mode?  Returns the hold or NULL. */
static const json_t *read_hold(const ur *u, size_t v, long long obj_id) {
  const json_t *h;
  size_t k;
  json_array_foreach(json_object_get(u->nodes[v].th, "held"), k, h) {
    if (ur_jint(h, "lock_id") == obj_id && strcmp(ur_jstr(h, "mode"), "read") == 0)
      return h;
  }
  return NULL;
}

/* One step of a cycle: thread at position i, what it waits for and who blocks it. */
static void cycle_step(const ur *u, const ur_cycle *c, size_t i, FILE *f, json_t *steps) {
  size_t v = c->nodes[i];
  const ur_node *n = &u->nodes[v];
  char *me = who(u, v);
  const json_t *w = json_object_get(n->th, "wait");
  const char *task = ur_jstr(n->th, "task");
  fprintf(f, "  %s%s%s%s\n", me, task[0] ? " (task: " : "", task, task[0] ? ")" : "");
  if (n->th)
    holds_text(u, v, f, "    ");
  else
    dlocks_held(u, v, f, NULL, "    ");
  /* The hop: thread -> lock -> holder, thread -> dlock -> holder, or thread -> queued writer. */
  size_t next = c->nodes[(i + 1) % c->n];
  const ur_edge *e1 = &u->edges[c->via[i]];
  size_t blocker = next;
  const ur_edge *e2 = NULL;
  if (u->nodes[next].kind == UR_LOCK || u->nodes[next].kind == UR_DLOCK) {
    e2 = &u->edges[c->via[(i + 1) % c->n]];
    blocker = c->nodes[(i + 2) % c->n];
  }
  char *them = who(u, blocker);
  char d[32];
  dur_ns(ur_jint(w, "waiting_ns"), d, sizeof d);
  const char *dl = w ? ur_dlock_name(w) : NULL;
  json_t *step = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "id", n->id, "group",
                           group_of_node(u, v), "thread_id", (json_int_t)n->tid, "name",
                           n->th ? ur_jstr(n->th, "name") : (n->desc ? n->desc : ""), "task", task,
                           "blocked_by", u->nodes[blocker].id);
  json_object_set_new(step, "via",
                      blocker != next ? json_string(u->nodes[next].id) : json_null());
  json_t *held = json_array();
  const json_t *h;
  size_t k;
  json_array_foreach(json_object_get(n->th, "held"), k, h)
    json_array_append_new(held, json_deep_copy(h));
  json_object_set_new(step, "holds", held);
  json_t *dheld = json_array();
  dlocks_held(u, v, NULL, dheld, "");
  json_object_set_new(step, "dlocks_held", dheld);
  if (dl) {
    const json_t *info = u->nodes[next].info;
    char hd[32];
    dur_ns(ur_jint(info, "held_ms") * NS_PER_MS, hd, sizeof hd);
    fprintf(f, "    waits for the distributed lock \"%s\" (for %s), held by %s for %s (session %lld)\n",
            dl, d, them, hd, ur_jint(info, "holder_session"));
    json_object_set_new(step, "waits_to", json_string("acquire"));
    json_object_set_new(step, "what", json_string(ur_jstr(w, "what")));
  } else if (w && ur_is_lock_wait(ur_jstr(w, "kind"))) {
    const char *kind = ur_jstr(w, "kind");
    bool again = strcmp(kind, "rwlock.rdlock") == 0 && read_hold(u, v, ur_jint(w, "obj_id"));
    fprintf(f, "    waits to %s \"%s\"%s at %s (for %s), ", ur_verb(kind), ur_jstr(w, "what"),
            again ? " again" : "", ur_jstr(w, "site"), d);
    if (e1->kind == UR_E_QUEUED) {
      const json_t *bw = json_object_get(u->nodes[blocker].th, "wait");
      fprintf(f, "queued behind %s, which waits to %s it (a writer-preferring lock lets no new "
                 "reader in while a writer waits)\n",
              them, ur_verb(ur_jstr(bw, "kind")));
    } else if (e2 && e2->hold) {
      char hd[32];
      dur_ns(ur_jint(e2->hold, "held_ns"), hd, sizeof hd);
      fprintf(f, "held (%s) by %s for %s, acquired at %s\n", ur_jstr(e2->hold, "mode"), them, hd,
              ur_jstr(e2->hold, "site"));
    } else {
      fprintf(f, "blocked by %s\n", them);
    }
    json_object_set_new(step, "waits_to", json_string(ur_verb(kind)));
    json_object_set_new(step, "what", json_string(ur_jstr(w, "what")));
  } else {
    fprintf(f, "    waits for %s\n", them);
    json_object_set_new(step, "waits_to", json_string("wait for"));
    json_object_set_new(step, "what", json_string(u->nodes[next].label));
  }
  json_object_set_new(step, "site", json_string(ur_jstr(w, "site")));
  json_object_set_new(step, "waiting_ms", json_integer(ur_jint(w, "waiting_ns") / NS_PER_MS));
  json_array_append_new(steps, step);
  free(me);
  free(them);
}

/* The one-sentence version of a cycle.  The incident's shape (a reader holding a
 * writer-preferring lock asks for it again behind a queued writer) gets its own words. */
static void cycle_summary(const ur *u, const ur_cycle *c, FILE *f, bool *recursive) {
  *recursive = false;
  for (size_t i = 0; i < c->n; i++) {
    size_t v = c->nodes[i];
    const ur_node *n = &u->nodes[v];
    if (n->kind != UR_THREAD || !n->th)
      continue;
    const json_t *w = json_object_get(n->th, "wait");
    if (strcmp(ur_jstr(w, "kind"), "rwlock.rdlock") != 0)
      continue;
    const json_t *first = read_hold(u, v, ur_jint(w, "obj_id"));
    const ur_edge *e = &u->edges[c->via[i]];
    if (!first || e->kind != UR_E_QUEUED)
      continue;
    size_t wr = e->to;
    char *me = who(u, v), *them = who(u, wr);
    fprintf(f, "  In short: %s holds the read lock on \"%s\" (acquired at %s)", me,
            ur_jstr(w, "what"), ur_jstr(first, "site"));
    json_t *dheld = json_array();
    dlocks_held(u, v, NULL, dheld, "");
    size_t k;
    const json_t *dh;
    json_array_foreach(dheld, k, dh) fprintf(f, "%s the distributed lock on \"%s\"",
                                             k + 1 == json_array_size(dheld) ? " and" : ",",
                                             ur_jstr(dh, "lock"));
    json_decref(dheld);
    fprintf(f,
            ", and waits to read-lock \"%s\" again (at %s) behind the writer %s, which waits "
            "for %s to release its read lock: a deadlock. Neither will ever proceed.\n",
            ur_jstr(w, "what"), ur_jstr(w, "site"), them, me);
    free(me);
    free(them);
    *recursive = true;
    return;
  }
  fprintf(f, "  In short: ");
  bool firstp = true;
  for (size_t i = 0; i < c->n; i++) {
    size_t v = c->nodes[i];
    if (u->nodes[v].kind != UR_THREAD)
      continue;
    size_t j = (i + 1) % c->n;
    while (u->nodes[c->nodes[j]].kind != UR_THREAD)
      j = (j + 1) % c->n;
    size_t via = c->nodes[(i + 1) % c->n];
    char *me = who(u, v), *them = who(u, c->nodes[j]);
    fprintf(f, "%s%s waits for %s%s%s", firstp ? "" : "; ", me, them,
            via != c->nodes[j] ? " (" : "", via != c->nodes[j] ? u->nodes[via].label : "");
    if (via != c->nodes[j])
      fputc(')', f);
    free(me);
    free(them);
    firstp = false;
  }
  fprintf(f, ": a deadlock. None of them will ever proceed.\n");
}


static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* An object's keys, sorted (free the array, not the strings). */
static const char **sorted_keys(const json_t *o, size_t *n) {
  *n = json_object_size(o);
  const char **k = ur_xrealloc(NULL, (*n + 1) * sizeof *k);
  size_t i = 0;
  const char *key;
  const json_t *val;
  json_object_foreach((json_t *)o, key, val) k[i++] = key;
  qsort(k, *n, sizeof *k, cmp_str);
  return k;
}

/* Threads of the same strongly connected component that the elementary cycle above
 * does not pass through: deadlocked too (e.g. a second recursive reader). */
static void also_deadlocked(const ur *u, size_t c, FILE *f) {
  const ur_cycle *cy = &u->cycles[c];
  size_t shown = 0, more = 0;
  for (size_t v = 0; v < u->nn; v++) {
    if (u->nodes[v].cycle != (int)c || u->nodes[v].kind != UR_THREAD)
      continue;
    bool in = false;
    for (size_t k = 0; k < cy->n && !in; k++)
      in = cy->nodes[k] == v;
    if (in)
      continue;
    if (shown == 10) {
      more++;
      continue;
    }
    char *me = who(u, v);
    const json_t *w = json_object_get(u->nodes[v].th, "wait");
    bool again = w && strcmp(ur_jstr(w, "kind"), "rwlock.rdlock") == 0 &&
                 read_hold(u, v, ur_jint(w, "obj_id"));
    fprintf(f, "  Also in this deadlock: %s%s%s%s%s\n", me,
            w ? ", waiting to " : "", w ? ur_verb(ur_jstr(w, "kind")) : "",
            w ? " " : "", w ? ur_jstr(w, "what") : "");
    if (again)
      fprintf(f, "    (it too holds the read lock on \"%s\" and asks for it again at %s)\n",
              ur_jstr(w, "what"), ur_jstr(w, "site"));
    free(me);
    shown++;
  }
  if (more)
    fprintf(f, "  ... and %zu more threads in this deadlock\n", more);
}

/* ---- the blast radius --------------------------------------------------------------------- */

typedef struct blk {
  int cycle;
  size_t res;  /* the node it waits on: a lock, a dlock, or a thread */
  int proc;    /* -1: unknown */
  size_t v;
} blk;

static int cmp_blk(const void *a, const void *b) {
  const blk *x = a, *y = b;
  if (x->cycle != y->cycle)
    return x->cycle < y->cycle ? -1 : 1;
  if (x->res != y->res)
    return x->res < y->res ? -1 : 1;
  if (x->proc != y->proc)
    return x->proc < y->proc ? -1 : 1;
  return x->v < y->v ? -1 : x->v > y->v;
}

static size_t resource_of(const ur *u, size_t v) {
  const ur_node *n = &u->nodes[v];
  const json_t *w = json_object_get(n->th, "wait");
  if (w) {
    const char *dl = ur_dlock_name(w);
    char *id = NULL;
    if (dl)
      id = ur_fmt("dlock/%s", dl);
    else if (ur_is_lock_wait(ur_jstr(w, "kind")) && n->proc >= 0)
      id = ur_fmt("%s/l%lld", u->procs[n->proc].group, ur_jint(w, "obj_id"));
    size_t r;
    bool ok = id && ur_smap_get(&u->ids, id, &r);
    free(id);
    if (ok)
      return r;
  }
  return u->off[v] < u->off[v + 1] ? u->edges[u->adj[u->off[v]]].to : v;
}

typedef struct radius {
  size_t res, count;
  int rank; /* 0: a dlock held in the deadlock, 1: the deadlocked lock, 2: the rest */
  json_t *by_group;
  const char *verb; /* the wait of all its threads, or NULL if mixed */
} radius;

static int cmp_radius(const void *a, const void *b) {
  const radius *x = a, *y = b;
  if (x->rank != y->rank)
    return x->rank < y->rank ? -1 : 1;
  if (x->count != y->count)
    return x->count > y->count ? -1 : 1;
  return x->res < y->res ? -1 : x->res > y->res;
}

static void radius_text(const ur *u, const radius *r, FILE *f, bool show, json_t *blocked,
                        int cycle) {
  const ur_node *res = &u->nodes[r->res];
  char *groups = NULL;
  size_t glen = 0;
  FILE *g = open_memstream(&groups, &glen);
  size_t ngroups;
  const char **keys = sorted_keys(r->by_group, &ngroups);
  for (size_t k = 0; k < ngroups; k++) {
    if (ngroups == 1)
      fprintf(g, "%s", keys[k]);
    else
      fprintf(g, "%s%s (%lld)", k ? (k + 1 == ngroups ? " and " : ", ") : "", keys[k],
              (long long)json_integer_value(json_object_get(r->by_group, keys[k])));
  }
  free(keys);
  fclose(g);
  char *line;
  if (res->kind == UR_DLOCK) {
    size_t holder = (size_t)-1;
    for (size_t e = u->off[r->res]; e < u->off[r->res + 1]; e++)
      if (u->edges[u->adj[e]].kind == UR_E_DHELD)
        holder = u->edges[u->adj[e]].to;
    char *h = holder != (size_t)-1 ? who(u, holder) : ur_strdup("nobody (released since)");
    const char *state = holder == (size_t)-1       ? ""
                        : u->nodes[holder].cycle >= 0 ? " (in the deadlock)"
                                                      : " (itself blocked behind it)";
    line = ur_fmt("%zu thread%s on %s wait%s for the distributed lock \"%s\" held by %s%s",
                  r->count, r->count == 1 ? "" : "s", groups, r->count == 1 ? "s" : "",
                  res->label + 6, h, state);
    free(h);
  } else if (res->kind == UR_LOCK && res->pool) {
    line = ur_fmt("%zu thread%s on %s wait%s for a free coord lock connection (\"%s\": every "
                  "connection is in use by a thread blocked on a distributed lock)",
                  r->count, r->count == 1 ? "" : "s", groups, r->count == 1 ? "s" : "",
                  UR_POOL_COND);
  } else if (res->kind == UR_LOCK) {
    line = ur_fmt("%zu thread%s on %s wait%s %s%s %s%s", r->count, r->count == 1 ? "" : "s",
                  groups, r->count == 1 ? "s" : "", r->verb ? "to " : "for the lock",
                  r->verb ? r->verb : "", lock_name_of(res),
                  res->cycle >= 0 ? " (the deadlocked lock)" : "");
  } else {
    char *h = who(u, r->res);
    line = ur_fmt("%zu thread%s on %s wait%s for %s", r->count, r->count == 1 ? "" : "s", groups,
                  r->count == 1 ? "s" : "", h);
    free(h);
  }
  if (show)
    fprintf(f, "    %s\n", line);
  json_array_append_new(blocked, json_pack("{s:i, s:s, s:s, s:I, s:O, s:s}", "cycle", cycle + 1,
                                           "resource", res->id, "kind",
                                           res->kind == UR_DLOCK  ? "dlock"
                                           : res->kind == UR_LOCK ? "lock"
                                                                  : "thread",
                                           "count", (json_int_t)r->count, "by_group",
                                           r->by_group, "text", line));
  free(line);
  free(groups);
}

static int rank_of(const ur *u, size_t res) {
  const ur_node *n = &u->nodes[res];
  if (n->kind == UR_DLOCK) {
    for (size_t e = u->off[res]; e < u->off[res + 1]; e++)
      if (u->edges[u->adj[e]].kind == UR_E_DHELD && u->nodes[u->edges[u->adj[e]].to].cycle >= 0)
        return 0;
    return 2;
  }
  return n->cycle >= 0 ? 1 : 2;
}

/* Blocked threads of every cycle, grouped by what they wait for; one pass, sorted. */
static void blast_radius(const ur *u, FILE *const *fs, json_t *blocked, json_t *cycles) {
  size_t nb = 0;
  blk *b = ur_xrealloc(NULL, (u->nn + 1) * sizeof *b);
  for (size_t v = 0; v < u->nn; v++) {
    const ur_node *n = &u->nodes[v];
    if (n->kind == UR_THREAD && n->behind >= 0 && n->cycle < 0)
      b[nb++] = (blk){n->behind, resource_of(u, v), n->proc, v};
  }
  qsort(b, nb, sizeof *b, cmp_blk);
  for (size_t c = 0; c < u->ncycles; c++) {
    FILE *f = fs[c];
    size_t lo = 0;
    while (lo < nb && b[lo].cycle < (int)c)
      lo++;
    size_t hi = lo;
    while (hi < nb && b[hi].cycle == (int)c)
      hi++;
    json_t *cy = json_array_get(cycles, c);
    json_object_set_new(cy, "blocked_behind", json_integer((json_int_t)(hi - lo)));
    /* per process totals */
    json_t *per = json_object();
    for (size_t i = lo; i < hi; i++) {
      const char *g = group_of_node(u, b[i].v);
      json_object_set_new(per, g[0] ? g : "?",
                          json_integer(json_integer_value(json_object_get(per, g[0] ? g : "?")) + 1));
    }
    json_object_set_new(cy, "blocked_by_group", json_incref(per));
    if (hi == lo) {
      fprintf(f, "  Blocked behind it: nothing else.\n");
      json_decref(per);
      continue;
    }
    fprintf(f, "  Blocked behind it: %zu thread%s (", hi - lo, hi - lo == 1 ? "" : "s");
    size_t nkeys;
    const char **keys = sorted_keys(per, &nkeys);
    for (size_t k = 0; k < nkeys; k++)
      fprintf(f, "%s%s: %lld", k ? ", " : "", keys[k],
              (long long)json_integer_value(json_object_get(per, keys[k])));
    free(keys);
    fprintf(f, ")\n");
    json_decref(per);
    size_t nr = 0;
    radius *rs = ur_xrealloc(NULL, (hi - lo) * sizeof *rs);
    for (size_t i = lo; i < hi; i++) {
      const json_t *bw = json_object_get(u->nodes[b[i].v].th, "wait");
      const char *verb = bw && ur_is_lock_wait(ur_jstr(bw, "kind")) ? ur_verb(ur_jstr(bw, "kind"))
                                                                     : NULL;
      if (!nr || rs[nr - 1].res != b[i].res)
        rs[nr++] = (radius){b[i].res, 0, rank_of(u, b[i].res), json_object(), verb};
      radius *r = &rs[nr - 1];
      if (r->verb && (!verb || strcmp(verb, r->verb) != 0))
        r->verb = NULL;
      r->count++;
      const char *g = group_of_node(u, b[i].v);
      if (!g[0])
        g = "?";
      json_object_set_new(r->by_group, g,
                          json_integer(json_integer_value(json_object_get(r->by_group, g)) + 1));
    }
    qsort(rs, nr, sizeof *rs, cmp_radius);
    for (size_t i = 0; i < nr; i++) {
      radius_text(u, &rs[i], f, i < 12, blocked, (int)c);
      json_decref(rs[i].by_group);
    }
    if (nr > 12)
      fprintf(f, "    ... and %zu more resources (see --json)\n", nr - 12);
    free(rs);
  }
  free(b);
}

/* The queue's view of the processes a cycle touches. */
static void queue_text(const ur *u, size_t c, FILE *f, json_t *cy) {
  bool *touched = calloc(u->nprocs + 1, sizeof *touched);
  if (!touched)
    abort();
  for (size_t v = 0; v < u->nn; v++)
    if (u->nodes[v].kind == UR_THREAD && u->nodes[v].behind == (int)c && u->nodes[v].proc >= 0)
      touched[u->nodes[v].proc] = true;
  long long inflight = 0, timeouts = 0, held = 0;
  char *list = NULL, *tlist = NULL;
  size_t ll = 0, tl = 0;
  FILE *g = open_memstream(&list, &ll), *t = open_memstream(&tlist, &tl);
  size_t k = 0;
  const char *channel = NULL;
  for (size_t i = 0; i < u->nprocs; i++) {
    const ur_proc *p = &u->procs[i];
    if (!touched[i] || !p->has_queue)
      continue;
    fprintf(g, "%s%s: %lld", k ? ", " : "", p->group, p->in_flight);
    fprintf(t, "%s%s: %lld", k ? ", " : "", p->group, p->timeouts);
    inflight += p->in_flight;
    timeouts += p->timeouts;
    held += p->held;
    channel = p->channel;
    k++;
  }
  fclose(g);
  fclose(t);
  if (k) {
    fprintf(f, "  Queue (%s): %lld message%s in flight on them (%s); ", channel ? channel : "?",
            inflight, inflight == 1 ? " is" : "s are", list);
    if (timeouts)
      fprintf(f, "%lld %s timed out and been redelivered (%s)", timeouts,
              timeouts == 1 ? "has" : "have", tlist);
    else
      fprintf(f, "none has timed out yet");
    if (held)
      fprintf(f, "; %lld held slots", held);
    fprintf(f, ".\n");
  }
  json_object_set_new(cy, "queue", json_pack("{s:I, s:I, s:I}", "in_flight", (json_int_t)inflight,
                                             "timed_out", (json_int_t)timeouts, "held",
                                             (json_int_t)held));
  free(list);
  free(tlist);
  free(touched);
}

/* ---- findings without a cycle ------------------------------------------------------------- */

static void finding(json_t *arr, const char *kind, const char *severity, const char *group,
                    char *text /* owned */) {
  json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "kind", kind, "severity", severity,
                                       "group", group, "text", text));
  free(text);
}

static void find_suspicious(const ur *u, json_t *out) {
  char d[32], d2[32];
  /* Processes that did not answer, and what the collection could not take. */
  const json_t *procs = json_object_get(u->manifest, "processes"), *m, *fl;
  size_t i, k;
  json_array_foreach(procs, i, m) {
    const char *dir = ur_jstr(m, "dir");
    const char *svc = ur_jstr(m, "service"), *rep = ur_jstr(m, "replica");
    char *g = svc[0] ? (rep[0] ? ur_fmt("%s/%s", svc, rep) : ur_strdup(svc)) : ur_strdup(dir);
    if (json_is_false(json_object_get(m, "answered"))) {
      const json_t *first = json_array_get(json_object_get(m, "failed"), 0);
      finding(out, "no_answer", "problem", g,
              ur_fmt("%s (pid %lld, %s) did not answer%s%s%s", g, ur_jint(m, "pid"),
                     ur_jstr(m, "admin")[0] ? ur_jstr(m, "admin") : ur_jstr(m, "kind"),
                     first ? ": " : "", first ? ur_jstr(first, "why") : "",
                     json_is_true(json_object_get(m, "stacks_from_outside"))
                         ? " (stacks taken from outside)"
                         : ""));
    } else {
      json_array_foreach(json_object_get(m, "failed"), k, fl)
        finding(out, "not_collected", "info", g,
                ur_fmt("%s: %s was not collected: %s", g, ur_jstr(fl, "what"), ur_jstr(fl, "why")));
    }
    free(g);
  }
  json_array_foreach(json_object_get(u->manifest, "failed"), i, fl)
    finding(out, "not_collected", "problem", "",
            ur_fmt("%s was not collected: %s", ur_jstr(fl, "what"), ur_jstr(fl, "why")));
  /* Local locks held too long while others wait: the longest hold per lock. */
  for (size_t v = 0; v < u->nn; v++) {
    const ur_node *l = &u->nodes[v];
    if (l->kind != UR_LOCK || l->nwaiters == 0)
      continue;
    const ur_edge *longest = NULL;
    size_t nlong = 0;
    for (size_t e = u->off[v]; e < u->off[v + 1]; e++) {
      const ur_edge *ed = &u->edges[u->adj[e]];
      if (ed->kind != UR_E_HELD || ur_jint(ed->hold, "held_ns") <= u->hold_ms * NS_PER_MS)
        continue;
      nlong++;
      if (!longest || ur_jint(ed->hold, "held_ns") > ur_jint(longest->hold, "held_ns"))
        longest = ed;
    }
    if (!longest)
      continue;
    char *h = who(u, longest->to);
    char *more = nlong > 1 ? ur_fmt(" (and %zu more hold%s over --hold-ms)", nlong - 1,
                                    nlong > 2 ? "s" : "")
                           : ur_strdup("");
    dur_ns(ur_jint(longest->hold, "held_ns"), d, sizeof d);
    finding(out, "long_hold", "problem", u->procs[l->proc].group,
            ur_fmt("%s: the lock %s is held (%s) by %s for %s (acquired at %s)%s while %zu "
                   "thread%s wait for it",
                   u->procs[l->proc].group, lock_name_of(l), ur_jstr(longest->hold, "mode"), h, d,
                   ur_jstr(longest->hold, "site"),
                   more, l->nwaiters, l->nwaiters == 1 ? "" : "s"));
    free(more);
    free(h);
  }
  /* Distributed locks held too long while others wait. */
  for (size_t v = 0; v < u->nn; v++) {
    const ur_node *dl = &u->nodes[v];
    if (dl->kind != UR_DLOCK || !dl->info)
      continue;
    const json_t *info = dl->info;
    if (!ur_jint(info, "held") || ur_jint(info, "waiter_count") == 0 ||
        ur_jint(info, "held_ms") <= u->hold_ms)
      continue;
    size_t holder = (size_t)-1;
    for (size_t e = u->off[v]; e < u->off[v + 1]; e++)
      if (u->edges[u->adj[e]].kind == UR_E_DHELD)
        holder = u->edges[u->adj[e]].to;
    char *h = holder != (size_t)-1 ? who(u, holder) : ur_strdup(ur_jstr(info, "description"));
    dur_ns(ur_jint(info, "held_ms") * NS_PER_MS, d, sizeof d);
    dur_ns(ur_jint(info, "oldest_wait_ms") * NS_PER_MS, d2, sizeof d2);
    finding(out, "long_dlock_hold", "problem", holder != (size_t)-1 ? group_of_node(u, holder) : "",
            ur_fmt("the distributed lock \"%s\" is held by %s for %s while %lld wait (the oldest "
                   "for %s)",
                   ur_jstr(info, "lock"), h, d, ur_jint(info, "waiter_count"), d2));
    free(h);
  }
  /* Per process: recursive read locks, lock-order reports, long waits, held slots. */
  for (size_t pi = 0; pi < u->nprocs; pi++) {
    const ur_proc *p = &u->procs[pi];
    const json_t *rr = json_object_get(p->threads, "recursive_reads"), *r;
    json_array_foreach(json_object_get(rr, "reports"), k, r) {
      const char *task = ur_jstr(r, "task");
      finding(out, "recursive_read", "problem", p->group,
              ur_fmt("%s: thread %lld \"%s\" read-locked \"%s\" at %s while holding it from %s "
                     "(at %s%s%s): a writer queueing between the two deadlocks it",
                     p->group, ur_jint(r, "thread_id"), ur_jstr(r, "thread"), ur_jstr(r, "lock"),
                     ur_jstr(r, "second_site"), ur_jstr(r, "first_site"), ur_jstr(r, "at"),
                     task[0] ? "; task: " : "", task));
    }
    json_array_foreach(json_object_get(p->threads, "lock_order_reports"), k, r) {
      const char *text = json_is_string(r) ? json_string_value(r) : ur_jstr(r, "text");
      finding(out, "lock_order", "problem", p->group, ur_fmt("%s: %s", p->group, text));
    }
    size_t nlong = 0;
    const json_t *longest = NULL, *t;
    json_array_foreach(json_object_get(p->threads, "threads"), k, t) {
      const json_t *w = json_object_get(t, "wait");
      bool pool = strcmp(ur_jstr(w, "what"), UR_POOL_COND) == 0;
      if (!json_is_object(w) || (!ur_is_lock_wait(ur_jstr(w, "kind")) && !ur_dlock_name(w) && !pool))
        continue;
      if (ur_jint(w, "waiting_ns") <= u->wait_ms * NS_PER_MS)
        continue;
      nlong++;
      if (!longest || ur_jint(w, "waiting_ns") > ur_jint(json_object_get(longest, "wait"), "waiting_ns"))
        longest = t;
    }
    if (nlong) {
      const json_t *w = json_object_get(longest, "wait");
      dur_ns(ur_jint(w, "waiting_ns"), d, sizeof d);
      dur_ns(u->wait_ms * NS_PER_MS, d2, sizeof d2);
      finding(out, "long_wait", "problem", p->group,
              ur_fmt("%s: %zu thread%s waited longer than %s for a lock (the longest: thread %lld "
                     "\"%s\", %s %s%s%s \"%s\" at %s)",
                     p->group, nlong, nlong == 1 ? " has" : "s have", d2, ur_jint(longest, "id"),
                     ur_jstr(longest, "name"), d,
                     ur_dlock_name(w) ? "waiting for the distributed lock" : "to",
                     ur_dlock_name(w) ? "" : " ", ur_dlock_name(w) ? "" : ur_verb(ur_jstr(w, "kind")),
                     ur_dlock_name(w) ? ur_dlock_name(w) : ur_jstr(w, "what"), ur_jstr(w, "site")));
    }
    if (p->held > 0)
      finding(out, "held_slots", "problem", p->group,
              ur_fmt("queue: %s has %lld held slot%s (messages that timed out while their handler "
                     "still runs); more piling up means stuck handlers",
                     p->group, p->held, p->held == 1 ? "" : "s"));
  }
}

/* ---- the graph for the report ------------------------------------------------------------- */

static const char *kind_name(ur_kind k) {
  switch (k) {
  case UR_THREAD:
    return "thread";
  case UR_LOCK:
    return "lock";
  case UR_DLOCK:
    return "dlock";
  case UR_MESSAGE:
    return "message";
  default:
    return "process";
  }
}

static json_t *graph_json(const ur *u) {
  json_t *nodes = json_array(), *edges = json_array();
  for (size_t v = 0; v < u->nn; v++) {
    const ur_node *n = &u->nodes[v];
    bool linked = u->off[v] < u->off[v + 1] || u->roff[v] < u->roff[v + 1];
    if (!linked && n->kind != UR_PROCESS)
      continue;
    json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", n->id, "label",
                                           n->label, "kind", kind_name(n->kind), "group",
                                           group_of_node(u, v), "in_cycle", n->cycle >= 0));
  }
  for (size_t e = 0; e < u->ne; e++) {
    const ur_edge *ed = &u->edges[e];
    json_array_append_new(edges, json_pack("{s:s, s:s, s:s}", "from", u->nodes[ed->from].id, "to",
                                           u->nodes[ed->to].id, "label", ed->label));
  }
  return json_pack("{s:o, s:o}", "nodes", nodes, "edges", edges);
}

/* ---- the whole explanation ---------------------------------------------------------------- */

json_t *ur_explain(ur *u) {
  char *text = NULL;
  size_t tlen = 0;
  FILE *f = open_memstream(&text, &tlen);
  if (!f)
    abort();
  json_t *cycles = json_array(), *blocked = json_array(), *findings = json_array();
  /* Header. */
  fprintf(f, "ravel unravel: %zu process%s", u->nprocs, u->nprocs == 1 ? "" : "es");
  for (size_t i = 0; i < u->nprocs; i++)
    fprintf(f, "%s%s", i ? ", " : " (", u->procs[i].group);
  fprintf(f, "%s, %zu thread%s, %zu distributed lock%s", u->nprocs ? ")" : "", u->nthreads,
          u->nthreads == 1 ? "" : "s", u->ndlocks, u->ndlocks == 1 ? "" : "s");
  const char *coord = ur_jstr(u->manifest, "coord"), *queue = ur_jstr(u->manifest, "queue");
  if (coord[0])
    fprintf(f, "; coord %s", coord);
  if (queue[0])
    fprintf(f, ", queue %s", queue);
  fprintf(f, "\n\n");

  /* Each cycle, root first; its blast radius is appended after. */
  char **ctext = ur_xrealloc(NULL, (u->ncycles + 1) * sizeof *ctext);
  size_t *clen = ur_xrealloc(NULL, (u->ncycles + 1) * sizeof *clen);
  FILE **cf = ur_xrealloc(NULL, (u->ncycles + 1) * sizeof *cf);
  bool any_recursive = false;
  for (size_t c = 0; c < u->ncycles; c++) {
    ctext[c] = NULL;
    cf[c] = open_memstream(&ctext[c], &clen[c]);
    if (!cf[c])
      abort();
    const ur_cycle *cy = &u->cycles[c];
    json_t *groups = json_array(), *nodes = json_array(), *steps = json_array();
    size_t nthreads = 0;
    for (size_t i = 0; i < cy->n; i++) {
      size_t v = cy->nodes[i];
      json_array_append_new(nodes, json_string(u->nodes[v].id));
      if (u->nodes[v].kind != UR_THREAD)
        continue;
      nthreads++;
      const char *g = group_of_node(u, v);
      bool seen = false;
      size_t k;
      json_t *x;
      json_array_foreach(groups, k, x) seen |= strcmp(json_string_value(x), g) == 0;
      if (!seen)
        json_array_append_new(groups, json_string(g));
    }
    fprintf(cf[c], "DEADLOCK %zu: %zu thread%s in a cycle on ", c + 1, nthreads,
            nthreads == 1 ? "" : "s");
    size_t k;
    json_t *x;
    json_array_foreach(groups, k, x) fprintf(cf[c], "%s%s", k ? ", " : "", json_string_value(x));
    fprintf(cf[c], "\n");
    for (size_t i = 0; i < cy->n; i++)
      if (u->nodes[cy->nodes[i]].kind == UR_THREAD)
        cycle_step(u, cy, i, cf[c], steps);
    bool recursive;
    cycle_summary(u, cy, cf[c], &recursive);
    also_deadlocked(u, c, cf[c]);
    any_recursive |= recursive;
    json_array_append_new(cycles, json_pack("{s:i, s:o, s:o, s:o, s:b}", "n", (int)(c + 1),
                                            "processes", groups, "nodes", nodes, "threads", steps,
                                            "recursive_read", recursive));
  }
  blast_radius(u, cf, blocked, cycles);
  for (size_t c = 0; c < u->ncycles; c++) {
    queue_text(u, c, cf[c], json_array_get(cycles, c));
    fclose(cf[c]);
    fprintf(f, "%s\n", ctext[c]);
    json_object_set_new(json_array_get(cycles, c), "text", json_string(ctext[c]));
    free(ctext[c]);
  }
  free(ctext);
  free(clen);
  free(cf);

  find_suspicious(u, findings);
  size_t problems = 0;
  size_t i;
  json_t *fd;
  json_array_foreach(findings, i, fd) problems += strcmp(ur_jstr(fd, "severity"), "problem") == 0;
  if (json_array_size(findings)) {
    fprintf(f, "FINDINGS (%zu):\n", json_array_size(findings));
    size_t shown = 0;
    json_array_foreach(findings, i, fd) {
      if (shown++ >= 40) {
        fprintf(f, "  ... and %zu more (see --json)\n", json_array_size(findings) - 40);
        break;
      }
      fprintf(f, "  %s %s\n", strcmp(ur_jstr(fd, "severity"), "problem") == 0 ? "-" : "(info)",
              ur_jstr(fd, "text"));
    }
    fprintf(f, "\n");
  }
  bool healthy = u->ncycles == 0 && problems == 0;
  size_t nblocked = 0;
  for (size_t v = 0; v < u->nn; v++)
    nblocked += u->nodes[v].kind == UR_THREAD && u->nodes[v].behind >= 0 && u->nodes[v].cycle < 0;
  if (u->ncycles) {
    fprintf(f, "VERDICT: UNHEALTHY: %zu deadlock%s, %zu thread%s blocked behind %s, %zu other "
               "finding%s.\n",
            u->ncycles, u->ncycles == 1 ? "" : "s", nblocked, nblocked == 1 ? "" : "s",
            u->ncycles == 1 ? "it" : "them", problems, problems == 1 ? "" : "s");
    fprintf(f, "HINT: the deadlocked threads will never proceed on their own; capture the evidence "
               "(ravel grab) before restarting the processes named above.%s\n",
            any_recursive ? " A thread must not read-lock a writer-preferring lock it already "
                            "holds: release the first read lock before asking again (the first "
                            "acquisition site is named above)."
                          : "");
  } else if (problems) {
    fprintf(f, "VERDICT: UNHEALTHY: no deadlock, but %zu suspicious finding%s.\n", problems,
            problems == 1 ? "" : "s");
  } else {
    fprintf(f, "VERDICT: HEALTHY: no wait-for cycle among %zu threads of %zu process%s, and "
               "nothing suspicious.\n",
            u->nthreads, u->nprocs, u->nprocs == 1 ? "" : "es");
  }
  fclose(f);
  json_t *res = json_pack("{s:b, s:o, s:o, s:o, s:s, s:o}", "healthy", healthy, "cycles", cycles,
                          "blocked", blocked, "findings", findings, "text", text, "graph",
                          graph_json(u));
  free(text);
  return res;
}
