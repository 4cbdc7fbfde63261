/*
 * The local wait-for graph: threads are nodes; an edge T -> U means T cannot
 * proceed until U does something (release a lock it holds, or get out of a
 * writer queue T is stuck behind).  Edges, from a snapshot:
 *
 *   T waits for mutex L         -> every holder of L
 *   T waits to write-lock L     -> every holder of L (read or write)
 *   T waits to read-lock L      -> the write holder of L, and every thread
 *                                  queued to write-lock L (writer preference:
 *                                  a queued writer blocks new readers)
 *
 * A strongly connected component with more than one node, or a node with an
 * edge to itself, is a deadlock.  For each such component we report one
 * elementary cycle through it, and how many other threads are blocked on it
 * (can reach it by edges): the pile-up behind the deadlock.
 */
#include "obs/registry.h"
#include "obs/scc.h"

#include <stdlib.h>
#include <string.h>

typedef struct holdref {
  uint64_t lock_id;
  size_t thread;
  const rv_hold *hold;
} holdref;

static int cmp_holdref(const void *a, const void *b) {
  const holdref *x = a, *y = b;
  if (x->lock_id != y->lock_id)
    return x->lock_id < y->lock_id ? -1 : 1;
  return x->thread < y->thread ? -1 : x->thread > y->thread;
}

typedef struct graph {
  size_t n;
  size_t *off;   /* CSR: edges of node i are dst[off[i] .. off[i+1]) */
  size_t *dst;
  const rv_hold **why; /* per edge: the hold of dst that blocks, or NULL */
} graph;

static bool is_lock_wait(rv_wait_kind k) {
  return k == RV_WAIT_MUTEX || k == RV_WAIT_RDLOCK || k == RV_WAIT_WRLOCK;
}

/* First index in the sorted array whose lock_id is >= id. */
static size_t lower_bound(const holdref *a, size_t n, uint64_t id) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid].lock_id < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/*
 * Visit the out-edges of thread i: call emit(dst, hold) for each.  Used twice,
 * once to count and once to fill, so the edge rules live in one place.
 */
typedef void (*emit_fn)(void *acc, size_t dst, const rv_hold *why);

static void edges_of(const rv_snapshot *s, const holdref *holds, size_t nholds,
                     const holdref *wwait, size_t nwwait, size_t i, emit_fn emit, void *acc) {
  const rv_wait *w = &s->threads[i].wait;
  if (!is_lock_wait(w->kind) || s->threads[i].moving)
    return; /* a thread that moved during the snapshot is not blocked */
  for (size_t k = lower_bound(holds, nholds, w->obj_id);
       k < nholds && holds[k].lock_id == w->obj_id; k++) {
    if (w->kind == RV_WAIT_RDLOCK && holds[k].hold->mode == RV_MODE_READ)
      continue; /* readers do not block readers */
    emit(acc, holds[k].thread, holds[k].hold);
  }
  if (w->kind == RV_WAIT_RDLOCK) {
    for (size_t k = lower_bound(wwait, nwwait, w->obj_id);
         k < nwwait && wwait[k].lock_id == w->obj_id; k++)
      if (wwait[k].thread != i)
        emit(acc, wwait[k].thread, NULL);
  }
}

static void count_edge(void *acc, size_t dst, const rv_hold *why) {
  (void)dst;
  (void)why;
  (*(size_t *)acc)++;
}

typedef struct fill_acc {
  graph *g;
  size_t pos;
} fill_acc;

static void fill_edge(void *acc, size_t dst, const rv_hold *why) {
  fill_acc *f = acc;
  f->g->dst[f->pos] = dst;
  f->g->why[f->pos] = why;
  f->pos++;
}

static bool build_graph(const rv_snapshot *s, graph *g) {
  size_t n = s->nthreads, nholds = 0, nwwait = 0;
  for (size_t i = 0; i < n; i++) {
    nholds += (size_t)s->threads[i].nheld;
    nwwait += s->threads[i].wait.kind == RV_WAIT_WRLOCK;
  }
  holdref *holds = calloc(nholds ? nholds : 1, sizeof *holds);
  holdref *wwait = calloc(nwwait ? nwwait : 1, sizeof *wwait);
  g->n = n;
  g->off = calloc(n + 1, sizeof *g->off);
  bool ok = holds && wwait && g->off;
  if (ok) {
    size_t h = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
      const rv_thread_snap *t = &s->threads[i];
      for (int k = 0; k < t->nheld; k++)
        holds[h++] = (holdref){t->held[k].lock_id, i, &t->held[k]};
      if (t->wait.kind == RV_WAIT_WRLOCK)
        wwait[w++] = (holdref){t->wait.obj_id, i, NULL};
    }
    qsort(holds, nholds, sizeof *holds, cmp_holdref);
    qsort(wwait, nwwait, sizeof *wwait, cmp_holdref);
    for (size_t i = 0; i < n; i++) {
      size_t c = 0;
      edges_of(s, holds, nholds, wwait, nwwait, i, count_edge, &c);
      g->off[i + 1] = g->off[i] + c;
    }
    size_t m = g->off[n];
    g->dst = calloc(m ? m : 1, sizeof *g->dst);
    g->why = calloc(m ? m : 1, sizeof *g->why);
    ok = g->dst && g->why;
    if (ok) {
      fill_acc f = {g, 0};
      for (size_t i = 0; i < n; i++)
        edges_of(s, holds, nholds, wwait, nwwait, i, fill_edge, &f);
    }
  }
  free(holds);
  free(wwait);
  return ok;
}

static void graph_free(graph *g) {
  free(g->off);
  free(g->dst);
  free(g->why);
}

static bool has_self_edge(const graph *g, size_t v) {
  for (size_t e = g->off[v]; e < g->off[v + 1]; e++)
    if (g->dst[e] == v)
      return true;
  return false;
}

/*
 * One elementary cycle inside component c starting at v: follow edges that
 * stay in the component until a node repeats; the loop from that node's
 * first visit is the cycle.
 */
static bool extract_cycle(const graph *g, const size_t *comp, size_t v, rv_deadlock *d) {
  size_t n = g->n;
  size_t *pos = malloc(n * sizeof *pos);
  size_t *path = malloc(n * sizeof *path);
  const rv_hold **via = malloc(n * sizeof *via);
  if (!pos || !path || !via) {
    free(pos);
    free(path);
    free(via);
    return false;
  }
  for (size_t i = 0; i < n; i++)
    pos[i] = (size_t)-1;
  size_t len = 0, cur = v;
  while (pos[cur] == (size_t)-1) {
    pos[cur] = len;
    path[len] = cur;
    size_t e = g->off[cur];
    while (e < g->off[cur + 1] && comp[g->dst[e]] != comp[v])
      e++;
    via[len] = g->why[e]; /* a component node always has an edge inside it */
    len++;
    cur = g->dst[e];
  }
  size_t start = pos[cur];
  d->nsteps = len - start;
  d->steps = calloc(d->nsteps, sizeof *d->steps);
  bool ok = d->steps != NULL;
  for (size_t k = 0; ok && k < d->nsteps; k++) {
    d->steps[k].thread = path[start + k];
    d->steps[k].hold = via[start + k];
  }
  free(pos);
  free(path);
  free(via);
  return ok;
}

/* Threads outside the cycle that reach it through edges: a breadth-first
 * search over reversed edges from the component. */
static size_t count_blocked(const graph *g, const size_t *comp, size_t c) {
  size_t n = g->n, m = g->off[n], count = 0;
  size_t *roff = calloc(n + 1, sizeof *roff);
  size_t *rsrc = malloc((m ? m : 1) * sizeof *rsrc);
  size_t *fill = calloc(n, sizeof *fill);
  size_t *queue = malloc(n * sizeof *queue);
  bool *seen = calloc(n, sizeof *seen);
  if (roff && rsrc && fill && queue && seen) {
    for (size_t e = 0; e < m; e++)
      roff[g->dst[e] + 1]++;
    for (size_t i = 0; i < n; i++)
      roff[i + 1] += roff[i];
    for (size_t i = 0; i < n; i++)
      for (size_t e = g->off[i]; e < g->off[i + 1]; e++)
        rsrc[roff[g->dst[e]] + fill[g->dst[e]]++] = i;
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < n; i++)
      if (comp[i] == c) {
        seen[i] = true;
        queue[tail++] = i;
      }
    while (head < tail) {
      size_t v = queue[head++];
      for (size_t e = roff[v]; e < roff[v + 1]; e++) {
        size_t u = rsrc[e];
        if (!seen[u]) {
          seen[u] = true;
          queue[tail++] = u;
          count++;
        }
      }
    }
  }
  free(roff);
  free(rsrc);
  free(fill);
  free(queue);
  free(seen);
  return count;
}

rv_deadlocks *rv_deadlocks_find(const rv_snapshot *s) {
  rv_deadlocks *out = calloc(1, sizeof *out);
  if (!out)
    return NULL;
  size_t n = s->nthreads;
  if (n == 0)
    return out;
  graph g = {0};
  size_t *comp = calloc(n, sizeof *comp);
  size_t *size = NULL, ncomp = 0;
  bool ok = comp && build_graph(s, &g) && rv_scc(g.n, g.off, g.dst, comp, &ncomp);
  if (ok)
    ok = (size = calloc(ncomp, sizeof *size)) != NULL;
  if (ok) {
    for (size_t i = 0; i < n; i++)
      size[comp[i]]++;
    bool *done = calloc(ncomp, sizeof *done);
    out->items = calloc(ncomp, sizeof *out->items);
    ok = done && out->items;
    for (size_t v = 0; ok && v < n; v++) {
      size_t c = comp[v];
      if (done[c] || !(size[c] > 1 || has_self_edge(&g, v)))
        continue;
      done[c] = true;
      rv_deadlock *d = &out->items[out->n];
      ok = extract_cycle(&g, comp, v, d);
      if (ok) {
        d->nblocked = count_blocked(&g, comp, c);
        out->n++;
      }
    }
    free(done);
  }
  free(size);
  free(comp);
  graph_free(&g);
  if (!ok) {
    rv_deadlocks_free(out);
    return NULL;
  }
  return out;
}

void rv_deadlocks_free(rv_deadlocks *d) {
  if (!d)
    return;
  for (size_t i = 0; i < d->n; i++)
    free(d->items[i].steps);
  free(d->items);
  free(d);
}
