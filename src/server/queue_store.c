/*
 * The queue server's store: rv_qstore_ops over the durable log
 * (storage/qlog.h: one log per topic, one journal per channel), and the
 * recovery that rebuilds the core from the disk at start.
 *
 * Layout under the data directory:
 *   queue.state                        the id-prefix high-water mark
 *   topics/<topic>/topic.meta          id prefix, paused flag
 *   topics/<topic>/log/                the topic's segments
 *   topics/<topic>/channels/<ch>/      the channel's journal + channel.meta
 *   ephemeral/<topic>/log/             ephemeral topics: removed at start
 * Ephemeral channels keep nothing on disk: after a restart they are gone,
 * as in nsqd.  Topic and channel names are nsqd's ([.a-zA-Z0-9_-]+ and an
 * optional #ephemeral), so they are safe as file names.
 *
 * The core's clock is the wall clock (rv__qsrv_now): message timestamps and
 * deferred due times are persisted and must mean the same after a reboot.
 */
#define _GNU_SOURCE
#include "server/queue_internal.h"
#include "rt/fs.h"
#include "storage/fsutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QSTATE_FILE "queue.state"
/* A state or metadata file bigger than this is not one we wrote. */
#define QSTATE_FILE_MAX_BYTES 4096

/* ---- state files -------------------------------------------------------------- */

/* Read "key value" lines: calls fn for each; returns false if the file is missing. */
static bool read_kv_file(const char *dir, const char *name, void (*fn)(void *, const char *, uint64_t),
                         void *arg) {
  char path[900];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  char *text;
  if (rv_read_file_small(path, QSTATE_FILE_MAX_BYTES, &text) != RV_OK)
    return false;
  char key[64];
  uint64_t v;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    if (sscanf(line, "%63s %" SCNu64, key, &v) == 2)
      fn(arg, key, v);
  }
  free(text);
  return true;
}

int rv__qsrv_state_save(rv_qsrv *s) {
  char text[128];
  snprintf(text, sizeof text, "id_prefix_next %u\n", (unsigned)s->id_prefix_next);
  return rv_write_file_durable(s->data_dir, QSTATE_FILE, text);
}

static void topic_meta_save(qs_topic *t) {
  if (t->ephemeral)
    return;
  char text[128];
  snprintf(text, sizeof text, "id_prefix %u\npaused %d\n", (unsigned)t->id_prefix, t->paused);
  if (rv_write_file_durable(t->dir, "topic.meta", text) != RV_OK)
    rv_log_error(t->srv->log, "cannot write topic metadata", "topic=%s dir=%s", t->name, t->dir);
}

static void channel_meta_save(qs_channel *c) {
  if (!c->j)
    return;
  char text[64];
  snprintf(text, sizeof text, "paused %d\n", c->paused);
  if (rv_write_file_durable(c->dir, "channel.meta", text) != RV_OK)
    rv_log_error(c->t->srv->log, "cannot write channel metadata", "topic=%s channel=%s",
                 c->t->name, c->name);
}

/* ---- topics ----------------------------------------------------------------------------- */

/* The log's sync thread reports progress: wake the loop (which reads rv_qlog_acked_seq). */
static void on_durable(void *arg, uint64_t durable_seq) {
  qs_topic *t = arg;
  rv_wakeup_send(t->srv->durable_wake);
}

static void channel_unlink(qs_channel *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    c->t->channels = c->next;
  if (c->next)
    c->next->prev = c->prev;
}

static void topic_free(qs_topic *t) {
  while (t->channels) { /* their journals close with the log */
    qs_channel *c = t->channels;
    t->channels = c->next;
    free(c);
  }
  if (t->iter)
    rv_qlog_iter_free(t->iter);
  if (t->meta_iter)
    rv_qlog_iter_free(t->meta_iter);
  rv_qlog_close(t->log);
  free(t->ring);
  free(t->scratch);
  free(t);
}

/* Create the in-memory topic and open (or create) its log. */
static int topic_open(rv_qsrv *s, const char *name, uint16_t id_prefix, bool ephemeral, bool paused,
                      qs_topic **out) {
  qs_topic *t = calloc(1, sizeof *t);
  if (!t)
    return RV_ENOMEM;
  t->srv = s;
  snprintf(t->name, sizeof t->name, "%s", name);
  snprintf(t->dir, sizeof t->dir, "%s/%s/%s", s->data_dir, ephemeral ? "ephemeral" : "topics", name);
  t->id_prefix = id_prefix;
  t->ephemeral = ephemeral;
  t->paused = paused;
  t->ring = calloc(QSRV_META_RING, sizeof *t->ring);
  t->scratch_cap = (size_t)s->o.max_msg_size;
  t->scratch = malloc(t->scratch_cap);
  char logdir[700];
  snprintf(logdir, sizeof logdir, "%s/log", t->dir);
  if (!t->ring || !t->scratch || rv_mkdir_p(logdir) != RV_OK) {
    int rc = t->ring && t->scratch ? RV_EIO : RV_ENOMEM;
    topic_free(t);
    return rc;
  }
  rv_qlog_opts lo = {.sync = s->o.sync_none ? RV_QLOG_SYNC_NONE : RV_QLOG_SYNC_ALWAYS,
                     .on_durable = on_durable,
                     .on_durable_arg = t,
                     .log = s->log,
                     .name = t->name};
  int rc = rv_qlog_open(&t->log, logdir, &lo);
  if (rc != RV_OK) {
    t->log = NULL;
    topic_free(t);
    return rc;
  }
  t->next = s->topics;
  if (s->topics)
    s->topics->prev = t;
  s->topics = t;
  *out = t;
  return RV_OK;
}

static int st_topic_create(void *store, const char *name, uint16_t id_prefix, bool ephemeral,
                           void **ctx) {
  rv_qsrv *s = store;
  qs_topic *t;
  int rc = topic_open(s, name, id_prefix, ephemeral, false, &t);
  if (rc != RV_OK) {
    rv_log_error(s->log, "cannot create topic storage", "topic=%s why=%s", name, rv_strerror(rc));
    return rc;
  }
  topic_meta_save(t);
  if (id_prefix >= s->id_prefix_next) {
    s->id_prefix_next = (uint16_t)(id_prefix + 1);
    rv__qsrv_state_save(s);
  }
  *ctx = t;
  return RV_OK;
}

static void st_topic_delete(void *store, void *ctx) {
  rv_qsrv *s = store;
  qs_topic *t = ctx;
  rv__qsrv_topic_gone(s, t);
  if (t->prev)
    t->prev->next = t->next;
  else
    s->topics = t->next;
  if (t->next)
    t->next->prev = t->prev;
  char dir[sizeof t->dir];
  memcpy(dir, t->dir, sizeof dir);
  topic_free(t);
  rv_rm_rf(dir);
}

/* ---- channels ---------------------------------------------------------------------------- */

static int channel_open(qs_topic *t, const char *name, bool ephemeral, bool paused,
                        uint64_t start_seq, qs_channel **out) {
  qs_channel *c = calloc(1, sizeof *c);
  if (!c)
    return RV_ENOMEM;
  c->t = t;
  snprintf(c->name, sizeof c->name, "%s", name);
  c->ephemeral = ephemeral || t->ephemeral;
  c->paused = paused;
  if (!c->ephemeral) {
    snprintf(c->dir, sizeof c->dir, "%s/channels/%s", t->dir, name);
    rv_qjournal_opts jo = {.start_seq = start_seq};
    int rc = rv_mkdir_p(c->dir) == RV_OK ? rv_qjournal_open(&c->j, t->log, c->dir, &jo) : RV_EIO;
    if (rc != RV_OK) {
      free(c);
      return rc;
    }
  }
  c->next = t->channels;
  if (t->channels)
    t->channels->prev = c;
  t->channels = c;
  *out = c;
  return RV_OK;
}

static int st_channel_create(void *store, void *tctx, const char *name, bool ephemeral,
                             uint64_t start_seq, void **ctx) {
  rv_qsrv *s = store;
  qs_channel *c;
  int rc = channel_open(tctx, name, ephemeral, false, start_seq, &c);
  if (rc != RV_OK) {
    rv_log_error(s->log, "cannot create channel storage", "topic=%s channel=%s why=%s",
                 ((qs_topic *)tctx)->name, name, rv_strerror(rc));
    return rc;
  }
  channel_meta_save(c);
  *ctx = c;
  return RV_OK;
}

static void st_channel_delete(void *store, void *ctx) {
  qs_channel *c = ctx;
  channel_unlink(c);
  if (c->j) {
    rv_qjournal_remove(c->j);
    rv_rm_rf(c->dir);
  }
  free(c);
}

/* ---- messages ------------------------------------------------------------------------------ */

#define APPEND_CHUNK 256

static int st_append(void *store, void *tctx, uint64_t first_seq, const rv_qstore_msg *msgs,
                     size_t n) {
  qs_topic *t = tctx;
  rv_qlog_entry e[APPEND_CHUNK];
  uint64_t expect = first_seq;
  for (size_t off = 0; off < n; off += APPEND_CHUNK) {
    size_t k = n - off < APPEND_CHUNK ? n - off : APPEND_CHUNK;
    for (size_t i = 0; i < k; i++) {
      const rv_qstore_msg *m = &msgs[off + i];
      e[i] = (rv_qlog_entry){.id = m->guid, .ts_ns = m->ts_ns, .defer_until_ns = m->defer_until_ns,
                             .attempts = 0, .body_len = (uint32_t)m->body_bytes, .body = m->body};
    }
    uint64_t got;
    int rc = rv_qlog_append(t->log, e, k, &got);
    if (rc != RV_OK)
      return rc;
    if (got != expect) {
      /* The core and the log disagree on numbering: refuse rather than corrupt. */
      rv_log_error(t->srv->log, "topic log sequence mismatch", "topic=%s expected=%" PRIu64
                   " got=%" PRIu64, t->name, expect, got);
      return RV_EIO;
    }
    for (size_t i = 0; i < k; i++) {
      qs_meta *r = &t->ring[(got + i) % QSRV_META_RING];
      *r = (qs_meta){got + i, e[i].ts_ns, e[i].defer_until_ns, e[i].body_len};
    }
    expect += k;
  }
  return RV_OK;
}

static int read_one(qs_topic *t, uint64_t seq, rv_qlog_msg *m) {
  int rc = rv_qlog_read(t->log, seq, m, t->scratch, t->scratch_cap);
  if (rc == RV_EIO) {
    rv_log_error(t->srv->log, "message damaged on disk: skipped", "topic=%s seq=%" PRIu64, t->name,
                 seq);
    return RV_ENOTFOUND;
  }
  return rc;
}

/*
 * Refill the ring from seq onwards with one sequential read: a channel that
 * is far behind (a backlog older than the ring) asks for consecutive seqs,
 * and a random read per message would cost a syscall each.
 */
static void prefetch_meta(qs_topic *t, uint64_t seq) {
  if (!t->meta_iter && rv_qlog_iter_new(t->log, seq, &t->meta_iter) != RV_OK) {
    t->meta_iter = NULL;
    return;
  }
  if (rv_qlog_iter_seq(t->meta_iter) != seq)
    rv_qlog_iter_seek(t->meta_iter, seq);
  rv_qlog_msg m;
  for (int i = 0; i < QSRV_META_PREFETCH; i++) {
    int rc = rv_qlog_iter_next(t->meta_iter, &m);
    if (rc == RV_ENOTFOUND)
      break; /* nothing more acknowledged yet */
    if (rc != RV_OK)
      continue; /* a damaged record is skipped; read_one reports it if asked */
    t->ring[m.seq % QSRV_META_RING] = (qs_meta){m.seq, m.ts_ns, m.defer_until_ns, m.body_len};
  }
}

static int st_meta(void *store, void *tctx, uint64_t seq, rv_qstore_meta *out) {
  qs_topic *t = tctx;
  const qs_meta *r = &t->ring[seq % QSRV_META_RING];
  if (r->seq != seq)
    prefetch_meta(t, seq);
  if (r->seq == seq) {
    *out = (rv_qstore_meta){r->ts_ns, r->defer_until_ns, r->body_bytes};
    return RV_OK;
  }
  rv_qlog_msg m;
  int rc = read_one(t, seq, &m);
  if (rc != RV_OK)
    return rc;
  *out = (rv_qstore_meta){m.ts_ns, m.defer_until_ns, m.body_len};
  return RV_OK;
}

/*
 * The body of a message about to be delivered.  Consumers mostly read in
 * order, so a sequential iterator (256 KiB reads) serves them; anything else
 * (requeues, deferred, a second channel far behind) is a random read.
 */
static int st_fetch(void *store, void *tctx, uint64_t seq, rv_qstore_msg *out) {
  qs_topic *t = tctx;
  rv_qlog_msg m;
  int rc = RV_ENOTFOUND;
  if (!t->iter)
    rv_qlog_iter_new(t->log, seq, &t->iter);
  if (t->iter) {
    if (rv_qlog_iter_seq(t->iter) != seq)
      rv_qlog_iter_seek(t->iter, seq);
    rc = rv_qlog_iter_next(t->iter, &m);
    if (rc == RV_OK && m.seq != seq)
      rc = RV_ENOTFOUND;
  }
  if (rc != RV_OK)
    rc = read_one(t, seq, &m);
  if (rc != RV_OK)
    return rc;
  out->body = m.body;
  out->body_bytes = m.body_len;
  out->ts_ns = m.ts_ns;
  out->defer_until_ns = m.defer_until_ns;
  return RV_OK;
}

static void st_fin(void *store, void *cctx, uint64_t seq) {
  qs_channel *c = cctx;
  if (c->j)
    rv_qjournal_fin(c->j, seq, NULL);
}

static void st_defer(void *store, void *cctx, uint64_t seq, int64_t due_ns, uint16_t attempts) {
  qs_channel *c = cctx;
  if (c->j)
    rv_qjournal_defer(c->j, seq, due_ns, attempts, NULL);
}

/* An emptied channel: every seq in [first, last] is done (one journal record). */
static void st_skip(void *store, void *cctx, uint64_t first, uint64_t last) {
  qs_channel *c = cctx;
  if (c->j)
    rv_qjournal_skip(c->j, first, last, NULL);
}

static void st_set_paused(void *store, void *tctx, void *cctx, bool paused) {
  if (cctx) {
    ((qs_channel *)cctx)->paused = paused;
    channel_meta_save(cctx);
  } else {
    ((qs_topic *)tctx)->paused = paused;
    topic_meta_save(tctx);
  }
}

const rv_qstore_ops rv__qsrv_store_ops = {
    .topic_create = st_topic_create,
    .topic_delete = st_topic_delete,
    .channel_create = st_channel_create,
    .channel_delete = st_channel_delete,
    .append = st_append,
    .meta = st_meta,
    .fetch = st_fetch,
    .fin = st_fin,
    .defer = st_defer,
    .skip = st_skip,
    .set_paused = st_set_paused,
};

/* ---- recovery ---------------------------------------------------------------------------------- */

typedef struct meta_vals {
  uint64_t id_prefix, paused, id_prefix_next;
  bool has_prefix;
} meta_vals;

static void meta_kv(void *arg, const char *key, uint64_t v) {
  meta_vals *m = arg;
  if (strcmp(key, "id_prefix") == 0) {
    m->id_prefix = v;
    m->has_prefix = true;
  } else if (strcmp(key, "paused") == 0) {
    m->paused = v;
  } else if (strcmp(key, "id_prefix_next") == 0) {
    m->id_prefix_next = v;
  }
}

typedef struct defer_acc {
  rv_qstore_deferred *v;
  size_t n, cap;
} defer_acc;

static void collect_deferred(void *arg, const rv_qjournal_deferred *d) {
  defer_acc *a = arg;
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 64;
    rv_qstore_deferred *nv = realloc(a->v, cap * sizeof *nv);
    if (!nv)
      return;
    a->v = nv;
    a->cap = cap;
  }
  a->v[a->n++] = (rv_qstore_deferred){d->seq, d->due_ns, d->attempts};
}

/* Rebuild one channel from its journal: floor, finished runs above it, deferred. */
static int recover_channel(rv_qsrv *s, qs_topic *t, uint64_t core_topic, const char *name) {
  char dir[700];
  snprintf(dir, sizeof dir, "%s/channels/%s", t->dir, name);
  meta_vals mv = {0};
  read_kv_file(dir, "channel.meta", meta_kv, &mv);
  qs_channel *c;
  int rc = channel_open(t, name, false, mv.paused != 0, 0, &c);
  if (rc != RV_OK)
    return rc;
  uint64_t floor = rv_qjournal_floor(c->j); /* lowest unfinished */
  uint64_t next = rv_qlog_next_seq(t->log);
  rv_qstore_range *runs = NULL;
  size_t nruns = 0, cap = 0;
  for (uint64_t seq = floor; seq < next;) {
    if (!rv_qjournal_is_finished(c->j, seq)) {
      seq++;
      continue;
    }
    uint64_t end = rv_qjournal_next_unfinished(c->j, seq);
    if (nruns == cap) {
      cap = cap ? cap * 2 : 64;
      rv_qstore_range *nr = realloc(runs, cap * sizeof *nr);
      if (!nr)
        break;
      runs = nr;
    }
    runs[nruns++] = (rv_qstore_range){seq, end - 1};
    seq = end;
  }
  defer_acc d = {0};
  rv_qjournal_deferred_each(c->j, collect_deferred, &d);
  rv_queue_channel_state cs = {.name = name,
                               .paused = c->paused,
                               .floor = floor ? floor - 1 : 0,
                               .finished = runs,
                               .nfinished = nruns,
                               .deferred = d.v,
                               .ndeferred = d.n,
                               .store_ctx = c};
  uint64_t handle;
  rc = rv_queue_channel_restore(s->q, rv__qsrv_now(), core_topic, &cs, &handle);
  free(runs);
  free(d.v);
  if (rc != RV_QUEUE_OK) {
    rv_log_error(s->log, "cannot restore channel", "topic=%s channel=%s why=%s", t->name, name,
                 rv_queue_errmsg(s->q));
    rv_qjournal_close(c->j);
    channel_unlink(c);
    free(c);
    return RV_EIO;
  }
  rv_log_info(s->log, "channel recovered", "topic=%s channel=%s floor=%" PRIu64
              " finished_runs=%zu deferred=%zu", t->name, name, floor, nruns, d.n);
  return RV_OK;
}

static int recover_topic(rv_qsrv *s, const char *name, char *why, size_t why_len) {
  char dir[700];
  snprintf(dir, sizeof dir, "%s/topics/%s", s->data_dir, name);
  meta_vals mv = {0};
  if (!read_kv_file(dir, "topic.meta", meta_kv, &mv) || !mv.has_prefix) {
    rv_log_warn(s->log, "topic directory without metadata: ignored", "dir=%s", dir);
    return RV_OK;
  }
  qs_topic *t;
  int rc = topic_open(s, name, (uint16_t)mv.id_prefix, false, mv.paused != 0, &t);
  if (rc != RV_OK) {
    snprintf(why, why_len, "cannot open the log of topic %s: %s", name, rv_strerror(rc));
    return rc;
  }
  rv_queue_topic_state ts = {.name = name,
                             .id_prefix = t->id_prefix,
                             .first_seq = rv_qlog_first_seq(t->log),
                             .next_seq = rv_qlog_next_seq(t->log),
                             .paused = t->paused,
                             .store_ctx = t};
  uint64_t handle;
  if (rv_queue_topic_restore(s->q, rv__qsrv_now(), &ts, &handle) != RV_QUEUE_OK) {
    snprintf(why, why_len, "cannot restore topic %s: %s", name, rv_queue_errmsg(s->q));
    return RV_EIO;
  }
  t->core_id = handle;
  if (t->id_prefix >= s->id_prefix_next)
    s->id_prefix_next = (uint16_t)(t->id_prefix + 1);
  char chdir[800];
  snprintf(chdir, sizeof chdir, "%s/channels", dir);
  char **names;
  size_t n;
  if (rv_fs_list(chdir, &names, &n) == RV_OK) {
    for (size_t i = 0; i < n; i++) {
      if (names[i][0] == '.' || !rv_nsq_valid_name(names[i], strlen(names[i])))
        continue;
      if (recover_channel(s, t, handle, names[i]) != RV_OK)
        rv_log_error(s->log, "channel not recovered", "topic=%s channel=%s", name, names[i]);
    }
    rv_fs_list_free(names, n);
  }
  rv_log_info(s->log, "topic recovered", "topic=%s first_seq=%" PRIu64 " next_seq=%" PRIu64,
              name, ts.first_seq, ts.next_seq);
  return RV_OK;
}

int rv__qsrv_recover_prefix(rv_qsrv *s, char *why, size_t why_len) {
  int rc = rv_mkdir_p(s->data_dir);
  if (rc != RV_OK) {
    snprintf(why, why_len, "cannot create data directory %s: %s", s->data_dir, rv_strerror(rc));
    return RV_EIO;
  }
  meta_vals mv = {0};
  read_kv_file(s->data_dir, QSTATE_FILE, meta_kv, &mv);
  s->id_prefix_next = (uint16_t)mv.id_prefix_next;
  return RV_OK;
}

int rv__qsrv_recover(rv_qsrv *s, char *why, size_t why_len) {
  char path[700];
  snprintf(path, sizeof path, "%s/ephemeral", s->data_dir);
  rv_rm_rf(path); /* ephemeral topics do not survive a restart */
  snprintf(path, sizeof path, "%s/topics", s->data_dir);
  int rc = rv_mkdir_p(path);
  if (rc != RV_OK) {
    snprintf(why, why_len, "cannot create %s: %s", path, rv_strerror(rc));
    return RV_EIO;
  }
  char **names;
  size_t n;
  if ((rc = rv_fs_list(path, &names, &n)) != RV_OK) {
    snprintf(why, why_len, "cannot read %s: %s", path, rv_strerror(rc));
    return RV_EIO;
  }
  for (size_t i = 0; rc == RV_OK && i < n; i++) {
    if (names[i][0] == '.' || !rv_nsq_valid_name(names[i], strlen(names[i])))
      continue;
    rc = recover_topic(s, names[i], why, why_len);
  }
  rv_fs_list_free(names, n);
  return rc;
}

void rv__qsrv_store_close(rv_qsrv *s) {
  /* Channel journals close with their log (rv_qlog_close closes attached journals). */
  while (s->topics) {
    qs_topic *t = s->topics;
    s->topics = t->next;
    topic_free(t);
  }
}
