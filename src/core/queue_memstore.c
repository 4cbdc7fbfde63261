/*
 * queue_memstore.c: rv_qstore_mem, the queue core's store kept in memory.
 *
 * It exists so that the core can be tested, simulated and crashed without a
 * disk: it implements the whole rv_qstore_ops contract (bodies by seq, the
 * per-channel journal of FIN, DEFER and SKIP facts) in the plainest way, and
 * rv_qstore_mem_recover turns that journal into restore calls exactly as the
 * server will turn the durable log into them after a kill -9.  Everything
 * the journal was told counts as persisted here (a "sync every call"
 * store); the real log decides what its fsync policy loses.
 *
 * Nothing is ever reclaimed: memory grows with every message and journal
 * fact.  That is fine for tests and the simulator and the reason it is not
 * a production mode.
 */
#include "core/queue.h"

#include <stdlib.h>
#include <string.h>

typedef struct mem_rec {
  int64_t ts_ns;
  int64_t defer_until_ns;
  size_t body_bytes;
  uint8_t *body;
} mem_rec;

typedef struct mem_topic mem_topic;

typedef struct mem_channel {
  mem_topic *t;
  char name[RV_QUEUE_NAME_MAX_BYTES + 1];
  bool ephemeral;
  bool paused;
  bool deleted;
  uint64_t start_seq;
  rv_qstore_range *done;       /* FIN'd seqs and skipped ranges, as told */
  size_t ndone, done_cap;
  rv_qstore_deferred *def;     /* current deferrals (last word per seq) */
  size_t ndef, def_cap;
} mem_channel;

struct mem_topic {
  char name[RV_QUEUE_NAME_MAX_BYTES + 1];
  uint16_t id_prefix;
  bool ephemeral;
  bool paused;
  bool deleted;
  mem_rec *recs;               /* recs[seq - 1] */
  size_t nrecs, recs_cap;
  mem_channel **chs;
  size_t nchs, chs_cap;
};

struct rv_qstore_mem {
  mem_topic **topics;          /* creation order; deleted ones kept */
  size_t ntopics, topics_cap;
  int fail_appends;
  rv_qstore_mem_counts counts;
};

/* Double an array's capacity until it holds need elements. */
static bool mem_grow(void **v, size_t *cap, size_t elem, size_t need) {
  if (need <= *cap)
    return true;
  size_t ncap = *cap ? *cap * 2 : 8;
  while (ncap < need)
    ncap *= 2;
  void *nv = realloc(*v, ncap * elem);
  if (!nv)
    return false;
  *v = nv;
  *cap = ncap;
  return true;
}

static int mem_topic_create(void *store, const char *name, uint16_t id_prefix, bool ephemeral,
                            void **topic_ctx) {
  rv_qstore_mem *m = store;
  mem_topic *t = calloc(1, sizeof *t);
  if (!t || !mem_grow((void **)&m->topics, &m->topics_cap, sizeof *m->topics, m->ntopics + 1)) {
    free(t);
    return RV_ENOMEM;
  }
  strncpy(t->name, name, RV_QUEUE_NAME_MAX_BYTES);
  t->id_prefix = id_prefix;
  t->ephemeral = ephemeral;
  m->topics[m->ntopics++] = t;
  m->counts.topics_created++;
  *topic_ctx = t;
  return 0;
}

static void mem_topic_delete(void *store, void *topic_ctx) {
  rv_qstore_mem *m = store;
  mem_topic *t = topic_ctx;
  t->deleted = true;
  m->counts.topics_deleted++;
}

static int mem_channel_create(void *store, void *topic_ctx, const char *name, bool ephemeral,
                              uint64_t start_seq, void **channel_ctx) {
  rv_qstore_mem *m = store;
  mem_topic *t = topic_ctx;
  mem_channel *c = calloc(1, sizeof *c);
  if (!c || !mem_grow((void **)&t->chs, &t->chs_cap, sizeof *t->chs, t->nchs + 1)) {
    free(c);
    return RV_ENOMEM;
  }
  c->t = t;
  strncpy(c->name, name, RV_QUEUE_NAME_MAX_BYTES);
  c->ephemeral = ephemeral;
  c->start_seq = start_seq;
  t->chs[t->nchs++] = c;
  m->counts.channels_created++;
  *channel_ctx = c;
  return 0;
}

static void mem_channel_delete(void *store, void *channel_ctx) {
  rv_qstore_mem *m = store;
  mem_channel *c = channel_ctx;
  c->deleted = true;
  m->counts.channels_deleted++;
}

static int mem_append(void *store, void *topic_ctx, uint64_t first_seq, const rv_qstore_msg *msgs,
                      size_t n) {
  rv_qstore_mem *m = store;
  mem_topic *t = topic_ctx;
  if (m->fail_appends > 0) {
    m->fail_appends--;
    return RV_EIO;
  }
  if (first_seq != t->nrecs + 1)
    return RV_EINVAL;
  if (!mem_grow((void **)&t->recs, &t->recs_cap, sizeof *t->recs, t->nrecs + n))
    return RV_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    uint8_t *b = malloc(msgs[i].body_bytes ? msgs[i].body_bytes : 1);
    if (!b) {
      for (size_t j = 0; j < i; j++)
        free(t->recs[t->nrecs + j].body);
      return RV_ENOMEM;
    }
    if (msgs[i].body_bytes)
      memcpy(b, msgs[i].body, msgs[i].body_bytes);
    t->recs[t->nrecs + i] = (mem_rec){msgs[i].ts_ns, msgs[i].defer_until_ns, msgs[i].body_bytes, b};
  }
  t->nrecs += n;
  m->counts.appends++;
  return 0;
}

static int mem_meta(void *store, void *topic_ctx, uint64_t seq, rv_qstore_meta *out) {
  rv_qstore_mem *m = store;
  mem_topic *t = topic_ctx;
  m->counts.metas++;
  if (seq < 1 || seq > t->nrecs)
    return RV_ENOTFOUND;
  const mem_rec *r = &t->recs[seq - 1];
  out->ts_ns = r->ts_ns;
  out->defer_until_ns = r->defer_until_ns;
  out->body_bytes = r->body_bytes;
  return 0;
}

static int mem_fetch(void *store, void *topic_ctx, uint64_t seq, rv_qstore_msg *out) {
  (void)store;
  mem_topic *t = topic_ctx;
  if (seq < 1 || seq > t->nrecs)
    return RV_ENOTFOUND;
  const mem_rec *r = &t->recs[seq - 1];
  memset(out, 0, sizeof *out);
  out->body = r->body;
  out->body_bytes = r->body_bytes;
  out->ts_ns = r->ts_ns;
  out->defer_until_ns = r->defer_until_ns;
  return 0;
}

/* The journal keeps the last word about each seq: a FIN or skip ends a
 * deferral, a new deferral replaces the old one. */
static void def_drop(mem_channel *c, uint64_t first, uint64_t last) {
  size_t w = 0;
  for (size_t i = 0; i < c->ndef; i++)
    if (c->def[i].seq < first || c->def[i].seq > last)
      c->def[w++] = c->def[i];
  c->ndef = w;
}

static void mem_done(mem_channel *c, uint64_t first, uint64_t last) {
  def_drop(c, first, last);
  /* An allocation failure loses the fact: the message may come back after a
   * crash, which at-least-once allows. */
  if (mem_grow((void **)&c->done, &c->done_cap, sizeof *c->done, c->ndone + 1))
    c->done[c->ndone++] = (rv_qstore_range){first, last};
}

static void mem_fin(void *store, void *channel_ctx, uint64_t seq) {
  rv_qstore_mem *m = store;
  m->counts.fins++;
  mem_done(channel_ctx, seq, seq);
}

static void mem_skip(void *store, void *channel_ctx, uint64_t first, uint64_t last) {
  rv_qstore_mem *m = store;
  m->counts.skips++;
  mem_done(channel_ctx, first, last);
}

static void mem_defer(void *store, void *channel_ctx, uint64_t seq, int64_t due_ns,
                      uint16_t attempts) {
  rv_qstore_mem *m = store;
  mem_channel *c = channel_ctx;
  m->counts.defers++;
  def_drop(c, seq, seq);
  if (mem_grow((void **)&c->def, &c->def_cap, sizeof *c->def, c->ndef + 1))
    c->def[c->ndef++] = (rv_qstore_deferred){seq, due_ns, attempts};
}

static void mem_set_paused(void *store, void *topic_ctx, void *channel_ctx, bool paused) {
  (void)store;
  if (channel_ctx)
    ((mem_channel *)channel_ctx)->paused = paused;
  else
    ((mem_topic *)topic_ctx)->paused = paused;
}

const rv_qstore_ops rv_qstore_mem_ops = {
    .topic_create = mem_topic_create,
    .topic_delete = mem_topic_delete,
    .channel_create = mem_channel_create,
    .channel_delete = mem_channel_delete,
    .append = mem_append,
    .meta = mem_meta,
    .fetch = mem_fetch,
    .fin = mem_fin,
    .defer = mem_defer,
    .skip = mem_skip,
    .set_paused = mem_set_paused,
};

rv_qstore_mem *rv_qstore_mem_create(void) { return calloc(1, sizeof(rv_qstore_mem)); }

void rv_qstore_mem_destroy(rv_qstore_mem *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->ntopics; i++) {
    mem_topic *t = m->topics[i];
    for (size_t j = 0; j < t->nrecs; j++)
      free(t->recs[j].body);
    for (size_t j = 0; j < t->nchs; j++) {
      free(t->chs[j]->done);
      free(t->chs[j]->def);
      free(t->chs[j]);
    }
    free(t->recs);
    free(t->chs);
    free(t);
  }
  free(m->topics);
  free(m);
}

void rv_qstore_mem_fail_appends(rv_qstore_mem *m, int n) { m->fail_appends = n; }

void rv_qstore_mem_counts_get(const rv_qstore_mem *m, rv_qstore_mem_counts *out) {
  *out = m->counts;
}

/*
 * What the server does at start, from this store's journal: every durable
 * topic with its log, every durable channel with its floor (the seq before
 * its start), the FIN'd and skipped ranges and the deferrals.  The core sorts
 * and merges the ranges and works out what is ready again.
 */
int rv_qstore_mem_recover(rv_qstore_mem *m, int64_t now_ns, rv_queue *q) {
  for (size_t i = 0; i < m->ntopics; i++) {
    mem_topic *t = m->topics[i];
    if (t->deleted || t->ephemeral)
      continue;
    rv_queue_topic_state tr = {
        .name = t->name,
        .id_prefix = t->id_prefix,
        .first_seq = 1,
        .next_seq = t->nrecs + 1,
        .paused = t->paused,
        .store_ctx = t,
    };
    uint64_t th;
    int rc = rv_queue_topic_restore(q, now_ns, &tr, &th);
    if (rc)
      return rc;
    for (size_t j = 0; j < t->nchs; j++) {
      mem_channel *c = t->chs[j];
      if (c->deleted || c->ephemeral)
        continue;
      rv_queue_channel_state cr = {
          .name = c->name,
          .paused = c->paused,
          .floor = c->start_seq - 1,
          .finished = c->done,
          .nfinished = c->ndone,
          .deferred = c->def,
          .ndeferred = c->ndef,
          .store_ctx = c,
      };
      if ((rc = rv_queue_channel_restore(q, now_ns, th, &cr, NULL)))
        return rc;
    }
  }
  return RV_QUEUE_OK;
}
