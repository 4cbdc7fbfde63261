/*
 * The coord client's config side: effective values (CFG.EFFECTIVE), watches
 * (CFG.WATCH / CFG.WATCHRAW long polls) and rv_config_cache.
 *
 * A watch runs one "coord-watch" rv_thread with a connection of its own.  It
 * polls `CFG.WATCH target SINCE rev TIMEOUT ms`; each reply is
 * [resume_rev, events]: the callback runs once per event, in order, then
 * rev = resume_rev.  After a broken connection the thread reconnects and asks
 * again with the same SINCE, so nothing is missed or repeated (the server
 * answers "every change after rev").  When the history cannot answer
 * (COMPACTED, or FUTURE after the server lost its data) the watch continues
 * from CFG.REVISION and delivers one `resync` event instead.  Stopping cancels the thread's context,
 * which interrupts the long poll at once.
 *
 * A cache holds one object built from the effective values of a list of keys,
 * behind a tracked rv_rwlock (writer-preferring, like Go's).  Readers
 * obtain/release it under the read lock; the watch thread compares each
 * event's new value with the value the current object was built from and,
 * only when it differs, builds a new object (outside the lock), swaps it in
 * under the write lock and destroys the old one.  Option `raw` is the
 * reference service's bug mode: CFG.WATCHRAW, rebuild on every write that
 * names a dependent key.
 */
#include "client/coord_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TARGET_MAX 160
#define NUM_MAX 32
/* Pause before reconnecting a watch after a failure. */
#define WATCH_BACKOFF_NS (100 * RV_NS_PER_MS)

/* ---- get ----------------------------------------------------------------------------- */

int rv_config_get(rv_ctx *ctx, rv_coord_client *c, const char *service, const char *replica,
                  const char *key, char **value, uint64_t *revision) {
  if (c->etcd)
    return ec_config_get(ctx, c, service, replica, key, value, revision);
  char target[TARGET_MAX];
  cc_target(target, sizeof target, service, replica);
  const char *argv[] = {"CFG.EFFECTIVE", target, key};
  redisReply *rep;
  *value = NULL;
  int rc = cc_ctl_call(c, ctx, 3, argv, &rep);
  if (rc != RV_OK)
    return rc;
  if (rep->type == REDIS_REPLY_NIL) {
    rc = RV_ENOTFOUND;
  } else if (rep->type == REDIS_REPLY_ARRAY) {
    *value = cc_map_strdup(rep, "value");
    if (!*value)
      rc = RV_EPROTO;
    else if (revision)
      *revision = (uint64_t)cc_map_int(rep, "mod_revision", 0);
  } else {
    rc = cc_reply_err(rep);
  }
  freeReplyObject(rep);
  return rc;
}

int rv_config_revision(rv_ctx *ctx, rv_coord_client *c, uint64_t *revision) {
  if (c->etcd)
    return ec_config_revision(ctx, c, revision);
  const char *argv[] = {"CFG.REVISION"};
  redisReply *rep;
  int rc = cc_ctl_call(c, ctx, 1, argv, &rep);
  if (rc != RV_OK)
    return rc;
  if (rep->type == REDIS_REPLY_INTEGER)
    *revision = (uint64_t)rep->integer;
  else
    rc = cc_reply_err(rep);
  freeReplyObject(rep);
  return rc;
}

/* ---- writes ---------------------------------------------------------------------------- */

/* CFG.SET (value) or CFG.DEL (value NULL) with the options as AUTHOR, REASON, IFREV. */
static int config_write(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                        const char *value, const rv_config_write_opts *o, uint64_t *revision) {
  cc_set_last_error("");
  if (!ns || !key) {
    cc_set_last_error("ERR a config write needs a namespace and a key");
    return RV_EINVAL;
  }
  if (c->etcd)
    return ec_config_write(ctx, c, ns, key, value, o, revision);
  const char *argv[10];
  int n = 0;
  char rev[24];
  argv[n++] = value ? "CFG.SET" : "CFG.DEL";
  argv[n++] = ns;
  argv[n++] = key;
  if (value)
    argv[n++] = value;
  if (o && o->author) {
    argv[n++] = "AUTHOR";
    argv[n++] = o->author;
  }
  if (o && o->reason) {
    argv[n++] = "REASON";
    argv[n++] = o->reason;
  }
  if (o && o->if_revision) {
    snprintf(rev, sizeof rev, "%" PRIu64, o->revision);
    argv[n++] = "IFREV";
    argv[n++] = rev;
  }
  redisReply *rep;
  int rc = cc_ctl_write(c, ctx, n, argv, &rep);
  if (rc != RV_OK)
    return rc;
  if (rep->type == REDIS_REPLY_INTEGER && rep->integer > 0) {
    if (revision)
      *revision = (uint64_t)rep->integer;
  } else {
    rc = cc_reply_err(rep);
  }
  freeReplyObject(rep);
  return rc;
}

int rv_config_set(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                  const char *value, const rv_config_write_opts *o, uint64_t *revision) {
  if (!value) {
    cc_set_last_error("ERR rv_config_set needs a value (rv_config_delete deletes)");
    return RV_EINVAL;
  }
  return config_write(ctx, c, ns, key, value, o, revision);
}

int rv_config_delete(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                     const rv_config_write_opts *o, uint64_t *revision) {
  return config_write(ctx, c, ns, key, NULL, o, revision);
}

/* ---- watch --------------------------------------------------------------------------------- */

struct rv_config_watcher {
  cc_handle h; /* first: the backend (coord) */
  rv_coord_client *c;
  char target[TARGET_MAX];
  char *prefix;
  bool raw;
  char *raw_ns[RV_CONFIG_RAW_NS_MAX];
  int nraw;
  uint64_t rev; /* __atomic: delivered up to */
  rv_config_watch_fn cb;
  void *arg;
  rv_ctx *stop;
  rv_thread *t;
  rv_rawmu poll_mu; /* guards poll */
  rv_ctx *poll;     /* the current long poll's context (test hook cancels it) */
  bool drop;        /* __atomic: test hook asked to drop the connection */
};

static const char *str_or_null(const redisReply *v) {
  return v && (v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS) ? v->str : NULL;
}

/* Deliver the events of one reply; returns the resume revision, or 0 if malformed. */
static uint64_t deliver(rv_config_watcher *w, const redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[1]->type != REDIS_REPLY_ARRAY)
    return 0;
  const redisReply *evs = rep->element[1];
  for (size_t i = 0; i < evs->elements; i++) {
    const redisReply *m = evs->element[i];
    rv_config_event ev = {
        .revision = (uint64_t)cc_map_int(m, "revision", 0),
        .key = str_or_null(cc_map_get(m, "key")),
        .ns = str_or_null(cc_map_get(m, "ns")),
        .old_value = str_or_null(cc_map_get(m, "old")),
        .new_value = str_or_null(cc_map_get(m, "new")),
    };
    if (!ev.key)
      continue;
    CC_STAT_INC(w->c, watch_events);
    w->cb(w->arg, &ev);
    __atomic_store_n(&w->rev, ev.revision, __ATOMIC_RELEASE);
  }
  return (uint64_t)rep->element[0]->integer;
}

/* The history cannot answer SINCE rev: continue from the current revision, telling the callback. */
static void resync(rv_config_watcher *w, cc_conn *k) {
  const char *argv[] = {"CFG.REVISION"};
  redisReply *rep = NULL;
  if (cc_call(k, w->stop, 1, argv, &rep) != RV_OK || rep->type != REDIS_REPLY_INTEGER) {
    if (rep)
      freeReplyObject(rep);
    rv_sleep(w->stop, WATCH_BACKOFF_NS);
    return;
  }
  uint64_t now = (uint64_t)rep->integer;
  freeReplyObject(rep);
  CC_STAT_INC(w->c, watch_resyncs);
  rv_config_event ev = {.revision = now, .resync = true};
  w->cb(w->arg, &ev);
  __atomic_store_n(&w->rev, now, __ATOMIC_RELEASE);
}

static void watch_main(void *arg) {
  rv_config_watcher *w = arg;
  cc_conn *k = NULL;
  char since[NUM_MAX], timeout[NUM_MAX];
  snprintf(timeout, sizeof timeout, "%d", RV_CONFIG_WATCH_POLL_MS);
  while (rv_ctx_err(w->stop) == RV_OK) {
    const char *argv[CC_ARGS_MAX];
    int n = 0;
    argv[n++] = w->raw ? "CFG.WATCHRAW" : "CFG.WATCH";
    if (w->raw)
      for (int i = 0; i < w->nraw; i++)
        argv[n++] = w->raw_ns[i];
    else
      argv[n++] = w->target;
    snprintf(since, sizeof since, "%" PRIu64, __atomic_load_n(&w->rev, __ATOMIC_ACQUIRE));
    argv[n++] = "SINCE";
    argv[n++] = since;
    if (w->prefix) {
      argv[n++] = "PREFIX";
      argv[n++] = w->prefix;
    }
    argv[n++] = "TIMEOUT";
    argv[n++] = timeout;

    if (__atomic_exchange_n(&w->drop, false, __ATOMIC_ACQ_REL) && k) {
      cc_conn_free(k); /* the hook came between two polls */
      k = NULL;
      CC_STAT_INC(w->c, watch_reconnects);
    }
    rv_ctx *poll = rv_ctx_new(w->stop);
    if (!poll)
      break;
    rv_rawmu_lock(&w->poll_mu);
    w->poll = poll;
    rv_rawmu_unlock(&w->poll_mu);
    int rc = RV_OK;
    if (!k)
      rc = cc_dial(w->c, poll, &k);
    redisReply *rep = NULL;
    if (rc == RV_OK)
      rc = cc_call(k, poll, n, argv, &rep);
    rv_rawmu_lock(&w->poll_mu);
    w->poll = NULL;
    rv_rawmu_unlock(&w->poll_mu);
    rv_ctx_free(poll);

    if (rc != RV_OK) {
      cc_conn_free(k);
      k = NULL;
      if (rv_ctx_err(w->stop) != RV_OK)
        break;
      CC_STAT_INC(w->c, watch_reconnects);
      __atomic_store_n(&w->drop, false, __ATOMIC_RELEASE);
      if (rc != RV_ECANCELED) /* the test hook's drop reconnects at once */
        rv_sleep(w->stop, WATCH_BACKOFF_NS);
      continue;
    }
    if (rep->type == REDIS_REPLY_ERROR &&
        (strncmp(rep->str, "COMPACTED", 9) == 0 || strncmp(rep->str, "FUTURE", 6) == 0)) {
      freeReplyObject(rep);
      resync(w, k);
      continue;
    }
    uint64_t resume = rep->type == REDIS_REPLY_ERROR ? 0 : deliver(w, rep);
    freeReplyObject(rep);
    if (resume == 0) { /* another error reply, or a malformed one: back off */
      rv_sleep(w->stop, WATCH_BACKOFF_NS);
      continue;
    }
    __atomic_store_n(&w->rev, resume, __ATOMIC_RELEASE);
  }
  cc_conn_free(k);
}

int rv_config_watch_ex(rv_coord_client *c, const char *service, const char *replica,
                       const rv_config_watch_opts *o, uint64_t since_rev, rv_config_watch_fn cb,
                       void *arg, rv_config_watcher **out) {
  rv_config_watch_opts def = {0};
  if (!o)
    o = &def;
  if (!cb || (!o->raw && !service))
    return RV_EINVAL;
  if (c->etcd)
    return ec_config_watch(c, service, replica, o, since_rev, cb, arg, out);
  int rc;
  if (since_rev == RV_CONFIG_SINCE_NOW) {
    rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
    rc = rv_config_revision(op, c, &since_rev);
    rv_ctx_free(op);
    if (rc != RV_OK)
      return rc;
  }
  rv_config_watcher *w = calloc(1, sizeof *w);
  if (!w)
    return RV_ENOMEM;
  w->c = c;
  if (service)
    cc_target(w->target, sizeof w->target, service, replica);
  w->prefix = o->prefix && o->prefix[0] ? strdup(o->prefix) : NULL;
  w->raw = o->raw;
  for (int i = 0; o->raw && i < RV_CONFIG_RAW_NS_MAX && o->raw_ns[i]; i++)
    w->raw_ns[w->nraw++] = strdup(o->raw_ns[i]);
  w->rev = since_rev;
  w->cb = cb;
  w->arg = arg;
  rv_rawmu_init(&w->poll_mu);
  w->stop = rv_ctx_new(NULL);
  if ((o->raw && w->nraw == 0) || !w->stop) {
    rv_config_watch_stop(w);
    return o->raw && w->nraw == 0 ? RV_EINVAL : RV_ENOMEM;
  }
  rc = rv_thread_start(&w->t, "coord-watch", "watcher", watch_main, w);
  if (rc != RV_OK) {
    w->t = NULL;
    rv_config_watch_stop(w);
    return rc;
  }
  *out = w;
  return RV_OK;
}

int rv_config_watch(rv_coord_client *c, const char *service, const char *replica,
                    const char *prefix, uint64_t since_rev, rv_config_watch_fn cb, void *arg,
                    rv_config_watcher **out) {
  rv_config_watch_opts o = {.prefix = prefix};
  return rv_config_watch_ex(c, service, replica, &o, since_rev, cb, arg, out);
}

uint64_t rv_config_watch_revision(rv_config_watcher *w) {
  if (CC_IS_ETCD(w))
    return ec_config_watch_revision(w);
  return __atomic_load_n(&w->rev, __ATOMIC_ACQUIRE);
}

void rv_config_watch_test_drop(rv_config_watcher *w) {
  if (CC_IS_ETCD(w)) {
    ec_config_watch_test_drop(w);
    return;
  }
  __atomic_store_n(&w->drop, true, __ATOMIC_RELEASE);
  rv_rawmu_lock(&w->poll_mu);
  if (w->poll)
    rv_ctx_cancel(w->poll, "test: drop the watch connection");
  rv_rawmu_unlock(&w->poll_mu);
}

void rv_config_watch_stop(rv_config_watcher *w) {
  if (!w)
    return;
  if (CC_IS_ETCD(w)) {
    ec_config_watch_stop(w);
    return;
  }
  if (w->stop)
    rv_ctx_cancel(w->stop, "watch stopped");
  if (w->t)
    rv_thread_join(w->t);
  rv_ctx_free(w->stop);
  rv_rawmu_destroy(&w->poll_mu);
  free(w->prefix);
  for (int i = 0; i < w->nraw; i++)
    free(w->raw_ns[i]);
  free(w);
}

/* ---- cache ------------------------------------------------------------------------------------ */

struct rv_config_cache {
  rv_coord_client *c;
  char *service, *replica;
  char **keys;
  char **values; /* what obj was built from; the watch thread's (and open's) only */
  size_t nkeys;
  rv_config_build_fn build;
  rv_config_destroy_fn destroy;
  void *arg;
  rv_rwlock rw; /* guards obj, gen */
  void *obj;
  uint64_t gen;
  rv_config_watcher *w;
  bool raw;
  rv_config_cache_stats st; /* __atomic */
};

#define CACHE_STAT_INC(cc, f) __atomic_fetch_add(&(cc)->st.f, 1, __ATOMIC_RELAXED)

static bool same_value(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Set values[i] to v; true if it changed. */
static bool cache_set(rv_config_cache *cc, size_t i, const char *v) {
  if (same_value(cc->values[i], v))
    return false;
  char *nv = v ? strdup(v) : NULL;
  if (v && !nv)
    return false;
  free(cc->values[i]);
  cc->values[i] = nv;
  return true;
}

/* After a resync: re-read every dependency; true if any changed. */
static bool cache_reread(rv_config_cache *cc) {
  bool changed = false;
  rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
  for (size_t i = 0; i < cc->nkeys; i++) {
    char *v = NULL;
    int rc = rv_config_get(op, cc->c, cc->service, cc->replica, cc->keys[i], &v, NULL);
    if (rc == RV_OK || rc == RV_ENOTFOUND)
      changed |= cache_set(cc, i, v);
    free(v);
  }
  rv_ctx_free(op);
  return changed;
}

static void cache_on_event(void *arg, const rv_config_event *ev) {
  rv_config_cache *cc = arg;
  CACHE_STAT_INC(cc, events);
  if (cc->raw && !ev->resync) {
    size_t i = 0;
    while (i < cc->nkeys && strcmp(cc->keys[i], ev->key) != 0)
      i++;
    if (i == cc->nkeys)
      return;
    cache_reread(cc); /* bug mode: rebuild whether or not anything changed */
  } else if (ev->resync) {
    if (!cache_reread(cc))
      return;
  } else {
    size_t i = 0;
    while (i < cc->nkeys && strcmp(cc->keys[i], ev->key) != 0)
      i++;
    if (i == cc->nkeys || !cache_set(cc, i, ev->new_value))
      return; /* not a dependency, or not an effective change of it */
  }
  void *obj = NULL;
  if (cc->build(cc->arg, (const char *const *)cc->values, &obj) != 0) {
    CACHE_STAT_INC(cc, build_errors);
    return; /* keep serving the old object */
  }
  rv_rwlock_wrlock(&cc->rw);
  void *old = cc->obj;
  cc->obj = obj;
  cc->gen++;
  rv_rwlock_wrunlock(&cc->rw);
  if (old && cc->destroy)
    cc->destroy(cc->arg, old);
  CACHE_STAT_INC(cc, builds);
  CACHE_STAT_INC(cc, rebuilds);
  CC_STAT_INC(cc->c, cache_rebuilds);
}

int rv_config_cache_open(rv_ctx *ctx, rv_coord_client *c, const rv_config_cache_opts *o,
                         rv_config_cache **out) {
  if (!o || !o->service || !o->build || o->nkeys == 0 || !o->keys)
    return RV_EINVAL;
  rv_config_cache *cc = calloc(1, sizeof *cc);
  if (!cc)
    return RV_ENOMEM;
  cc->c = c;
  cc->service = strdup(o->service);
  cc->replica = o->replica ? strdup(o->replica) : NULL;
  cc->build = o->build;
  cc->destroy = o->destroy;
  cc->arg = o->arg;
  cc->nkeys = o->nkeys;
  rv_rwlock_init(&cc->rw, o->lock_name ? o->lock_name : "config-cache");
  cc->keys = calloc(o->nkeys, sizeof *cc->keys);
  cc->values = calloc(o->nkeys, sizeof *cc->values);
  int rc = cc->keys && cc->values && cc->service ? RV_OK : RV_ENOMEM;
  uint64_t rev = 0;
  if (rc == RV_OK)
    rc = rv_config_revision(ctx, c, &rev); /* first the revision, then the values: no gap */
  for (size_t i = 0; rc == RV_OK && i < o->nkeys; i++) {
    cc->keys[i] = strdup(o->keys[i]);
    if (!cc->keys[i]) {
      rc = RV_ENOMEM;
      break;
    }
    rc = rv_config_get(ctx, c, o->service, o->replica, o->keys[i], &cc->values[i], NULL);
    if (rc == RV_ENOTFOUND)
      rc = RV_OK;
  }
  if (rc == RV_OK && cc->build(cc->arg, (const char *const *)cc->values, &cc->obj) != 0)
    rc = RV_EINVAL;
  if (rc == RV_OK) {
    cc->st.builds = 1;
    rv_config_watch_opts wo = {.raw = o->raw};
    memcpy(wo.raw_ns, o->raw_ns, sizeof wo.raw_ns);
    cc->raw = o->raw;
    rc = rv_config_watch_ex(c, o->service, o->replica, &wo, rev, cache_on_event, cc, &cc->w);
  }
  if (rc != RV_OK) {
    rv_config_cache_close(cc);
    return rc;
  }
  *out = cc;
  return RV_OK;
}

int rv__config_cache_obtain(rv_config_cache *cc, rv_ctx *ctx, void **obj, uint64_t *release_token,
                            const char *file, int line) {
  int rc = rv__rwlock_rdlock(&cc->rw, ctx, file, line);
  if (rc != RV_OK) {
    *obj = NULL;
    *release_token = 0;
    return rc;
  }
  *obj = cc->obj;
  *release_token = cc->gen;
  return RV_OK;
}

void rv_config_cache_release(rv_config_cache *cc, uint64_t release_token) {
  (void)release_token; /* the generation obtained; kept for symmetry and debugging */
  rv_rwlock_rdunlock(&cc->rw);
}

void rv_config_cache_stats_get(rv_config_cache *cc, rv_config_cache_stats *out) {
  out->builds = __atomic_load_n(&cc->st.builds, __ATOMIC_RELAXED);
  out->rebuilds = __atomic_load_n(&cc->st.rebuilds, __ATOMIC_RELAXED);
  out->events = __atomic_load_n(&cc->st.events, __ATOMIC_RELAXED);
  out->build_errors = __atomic_load_n(&cc->st.build_errors, __ATOMIC_RELAXED);
}

uint64_t rv_config_cache_revision(rv_config_cache *cc) {
  return cc->w ? rv_config_watch_revision(cc->w) : 0;
}

void rv_config_cache_close(rv_config_cache *cc) {
  if (!cc)
    return;
  rv_config_watch_stop(cc->w);
  if (cc->obj && cc->destroy)
    cc->destroy(cc->arg, cc->obj);
  for (size_t i = 0; i < cc->nkeys; i++) {
    if (cc->keys)
      free(cc->keys[i]);
    if (cc->values)
      free(cc->values[i]);
  }
  free(cc->keys);
  free(cc->values);
  free(cc->service);
  free(cc->replica);
  rv_rwlock_destroy(&cc->rw);
  free(cc);
}
