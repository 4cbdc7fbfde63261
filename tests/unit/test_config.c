/*
 * Tests of the config store core (src/core/config.c): namespaces and
 * inheritance, compare-and-set, watches that fire only on effective change
 * (the incident's three cases), raw watches, resume after a disconnect
 * without missing or repeating, the history bound, dry runs that name
 * inheriting services, the audit log and rollback, limits, and loading.
 * Every test ends with rv_cfg_check() on the store it used.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfg_test_util.h"
#include "core/config.h"
#include "rt/rt.h"


static rv_cfg *new_store(const rv_cfg_opts *o) {
  rv_cfg *c = NULL;
  assert_int_equal(rv_cfg_create(&c, o), RV_CFG_OK);
  return c;
}

static void done(rv_cfg *c) {
  const char *why = rv_cfg_check(c);
  if (why)
    fail_msg("invariant: %s", why);
  rv_cfg_destroy(c);
}

/* set, asserting success; returns the revision. */
static uint64_t put(rv_cfg *c, const char *ns, const char *key, const char *val,
                    rv_cfg_events *ev) {
  uint64_t rev = 0;
  int rc = rv_cfg_set(c, S(ns), S(key), S(val), ANY, S("alice"), S("test"), T0_NS, ev, &rev);
  if (rc)
    fail_msg("set %s %s: %s", ns, key, rv_cfg_errmsg(c));
  return rev;
}

static uint64_t del(rv_cfg *c, const char *ns, const char *key, rv_cfg_events *ev) {
  uint64_t rev = 0;
  int rc = rv_cfg_delete(c, S(ns), S(key), ANY, S("alice"), S("test"), T0_NS, ev, &rev);
  if (rc)
    fail_msg("delete %s %s: %s", ns, key, rv_cfg_errmsg(c));
  return rev;
}


/* The effective value of key for (svc, rep) or NULL; *level gets its level. */
static const char *eff(rv_cfg *c, const char *svc, const char *rep, const char *key, int *level) {
  rv_cfg_kv kv;
  int rc = rv_cfg_get_effective(c, S(svc), S(rep), S(key), &kv);
  if (rc == RV_CFG_ENOKEY) {
    if (level)
      *level = RV_CFG_LEVEL_NONE;
    return NULL;
  }
  assert_int_equal(rc, RV_CFG_OK);
  if (level)
    *level = kv.level;
  assert_int_equal(kv.value.ptr[kv.value.len], '\0');
  return kv.value.ptr;
}

static uint64_t watch_eff(rv_cfg *c, const char *svc, const char *rep, uint64_t since,
                          rv_cfg_events *ev) {
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S(svc), .replica = S(rep),
                          .since_revision = since};
  uint64_t id = 0;
  int rc = rv_cfg_watch(c, &req, ev, &id, NULL);
  if (rc)
    fail_msg("watch %s/%s: %s", svc, rep, rv_cfg_errmsg(c));
  return id;
}

/* Events in ev for watch id. */
static size_t count_for(const rv_cfg_events *ev, uint64_t id) {
  size_t n = 0;
  for (size_t i = 0; i < ev->len; i++)
    n += ev->v[i].watch_id == id;
  return n;
}

static const rv_cfg_event *first_for(const rv_cfg_events *ev, uint64_t id) {
  for (size_t i = 0; i < ev->len; i++)
    if (ev->v[i].watch_id == id)
      return &ev->v[i];
  return NULL;
}

/* ---- namespaces and inheritance ---------------------------------------------------- */

static void test_ns_parse(void **state) {
  (void)state;
  rv_cfg_ns p;
  char why[256];
  assert_int_equal(rv_cfg_ns_parse(S("platform"), &p, why, sizeof why), RV_CFG_OK);
  assert_int_equal(p.level, RV_CFG_LEVEL_PLATFORM);
  assert_int_equal(rv_cfg_ns_parse(S("svc/api"), &p, why, sizeof why), RV_CFG_OK);
  assert_int_equal(p.level, RV_CFG_LEVEL_SERVICE);
  assert_str(p.service, "api");
  assert_int_equal(rv_cfg_ns_parse(S("svc/api/r-1.a_b"), &p, why, sizeof why), RV_CFG_OK);
  assert_int_equal(p.level, RV_CFG_LEVEL_REPLICA);
  assert_str(p.replica, "r-1.a_b");

  const char *bad_ns[] = {"", "Platform", "svc", "service/api", "svc/a/b/c", "platform/x"};
  for (size_t i = 0; i < sizeof bad_ns / sizeof bad_ns[0]; i++)
    assert_int_equal(rv_cfg_ns_parse(S(bad_ns[i]), &p, why, sizeof why), RV_CFG_EBADNS);
  const char *bad_name[] = {"svc/", "svc/a/", "svc/-a", "svc/a b", "svc/a/b c", "svc/é"};
  for (size_t i = 0; i < sizeof bad_name / sizeof bad_name[0]; i++)
    assert_int_equal(rv_cfg_ns_parse(S(bad_name[i]), &p, why, sizeof why), RV_CFG_EBADNAME);
  char long_name[RV_CFG_NAME_MAX_BYTES + 8];
  memset(long_name, 'a', sizeof long_name);
  memcpy(long_name, "svc/", 4);
  long_name[4 + RV_CFG_NAME_MAX_BYTES + 1] = '\0';
  assert_int_equal(rv_cfg_ns_parse(S(long_name), &p, why, sizeof why), RV_CFG_EBADNAME);
  assert_non_null(strstr(why, "too long"));
  long_name[4 + RV_CFG_NAME_MAX_BYTES] = '\0';
  assert_int_equal(rv_cfg_ns_parse(S(long_name), &p, why, sizeof why), RV_CFG_OK);

  char out[RV_CFG_NS_MAX_BYTES + 1];
  assert_int_equal(rv_cfg_ns_format(out, RV_CFG_LEVEL_REPLICA, S("api"), S("2")), 9);
  assert_string_equal(out, "svc/api/2");
}

static void test_inheritance(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  put(c, "platform", "timeout_ms", "30000", NULL);
  put(c, "platform", "region", "eu", NULL);
  put(c, "svc/api", "timeout_ms", "10000", NULL);
  put(c, "svc/api/1", "timeout_ms", "5000", NULL);
  int level;
  assert_string_equal(eff(c, "api", "1", "timeout_ms", &level), "5000");
  assert_int_equal(level, RV_CFG_LEVEL_REPLICA);
  assert_string_equal(eff(c, "api", "2", "timeout_ms", &level), "10000");
  assert_int_equal(level, RV_CFG_LEVEL_SERVICE);
  assert_string_equal(eff(c, "api", "", "timeout_ms", &level), "10000");
  assert_string_equal(eff(c, "web", "", "timeout_ms", &level), "30000");
  assert_int_equal(level, RV_CFG_LEVEL_PLATFORM);
  assert_string_equal(eff(c, "api", "1", "region", &level), "eu");
  assert_int_equal(level, RV_CFG_LEVEL_PLATFORM);
  assert_null(eff(c, "api", "1", "missing", &level));

  /* Deleting the override uncovers the next layer. */
  del(c, "svc/api/1", "timeout_ms", NULL);
  assert_string_equal(eff(c, "api", "1", "timeout_ms", &level), "10000");
  del(c, "svc/api", "timeout_ms", NULL);
  assert_string_equal(eff(c, "api", "1", "timeout_ms", &level), "30000");

  /* Raw reads name the layer and revisions; values are NUL-terminated and may be empty. */
  uint64_t r1 = put(c, "svc/api", "json", "{\"a\": [1, 2]}", NULL);
  uint64_t r2 = put(c, "svc/api", "json", "", NULL);
  rv_cfg_kv kv;
  assert_int_equal(rv_cfg_get(c, S("svc/api"), S("json"), &kv), RV_CFG_OK);
  assert_int_equal(kv.value.len, 0);
  assert_int_equal(kv.create_revision, r1);
  assert_int_equal(kv.mod_revision, r2);
  assert_str(kv.ns, "svc/api");
  assert_int_equal(rv_cfg_get(c, S("svc/api/1"), S("json"), &kv), RV_CFG_ENOKEY);
  assert_int_equal(rv_cfg_get(c, S("svc/nope"), S("json"), &kv), RV_CFG_ENOKEY);
  assert_non_null(strstr(rv_cfg_errmsg(c), "svc/nope"));
  done(c);
}

typedef struct collected {
  size_t n;
  char keys[32][64];
  char vals[32][64];
  int levels[32];
} collected;

static bool collect_kv(const rv_cfg_kv *kv, void *arg) {
  collected *col = arg;
  snprintf(col->keys[col->n], sizeof col->keys[0], "%.*s", (int)kv->key.len, kv->key.ptr);
  snprintf(col->vals[col->n], sizeof col->vals[0], "%.*s", (int)kv->value.len, kv->value.ptr);
  col->levels[col->n] = kv->level;
  col->n++;
  return col->n < 32;
}

static void test_list(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  put(c, "platform", "db/url", "pg://p", NULL);
  put(c, "platform", "db/pool", "10", NULL);
  put(c, "platform", "log", "info", NULL);
  put(c, "svc/api", "db/pool", "50", NULL);
  put(c, "svc/api/1", "log", "debug", NULL);
  put(c, "svc/api/1", "zz", "1", NULL);

  collected col = {0};
  size_t n;
  assert_int_equal(rv_cfg_list(c, S("platform"), S(""), collect_kv, &col, &n), RV_CFG_OK);
  assert_int_equal(n, 3);
  assert_string_equal(col.keys[0], "db/pool");
  assert_string_equal(col.keys[1], "db/url");
  assert_string_equal(col.keys[2], "log");

  memset(&col, 0, sizeof col);
  assert_int_equal(rv_cfg_list(c, S("platform"), S("db/"), collect_kv, &col, &n), RV_CFG_OK);
  assert_int_equal(n, 2);

  memset(&col, 0, sizeof col);
  assert_int_equal(rv_cfg_list_effective(c, S("api"), S("1"), S(""), collect_kv, &col, &n),
                   RV_CFG_OK);
  assert_int_equal(n, 4);
  assert_string_equal(col.keys[0], "db/pool");
  assert_string_equal(col.vals[0], "50");
  assert_int_equal(col.levels[0], RV_CFG_LEVEL_SERVICE);
  assert_string_equal(col.keys[1], "db/url");
  assert_int_equal(col.levels[1], RV_CFG_LEVEL_PLATFORM);
  assert_string_equal(col.keys[2], "log");
  assert_string_equal(col.vals[2], "debug");
  assert_int_equal(col.levels[2], RV_CFG_LEVEL_REPLICA);
  assert_string_equal(col.keys[3], "zz");

  memset(&col, 0, sizeof col);
  assert_int_equal(rv_cfg_list_effective(c, S("web"), S(""), S("db"), collect_kv, &col, &n),
                   RV_CFG_OK);
  assert_int_equal(n, 2);
  assert_string_equal(col.vals[0], "10");

  assert_int_equal(rv_cfg_list(c, S("svc/a b"), S(""), collect_kv, &col, &n), RV_CFG_EBADNAME);
  assert_int_equal(rv_cfg_list(c, S("platform"), S("a b"), collect_kv, &col, &n),
                   RV_CFG_EBADKEY);
  done(c);
}

/* ---- compare-and-set ------------------------------------------------------------------- */

static void test_cas(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  uint64_t rev = 0;
  rv_cfg_str a = S("alice"), why = S("cas");
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k"), S("1"), 0, a, why, T0_NS, NULL, &rev),
                   RV_CFG_OK);
  assert_int_equal(rev, 1);
  /* 0 = must not exist */
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k"), S("2"), 0, a, why, T0_NS, NULL, &rev),
                   RV_CFG_ECONFLICT);
  assert_non_null(strstr(rv_cfg_errmsg(c), "mod_revision 1"));
  put(c, "platform", "other", "x", NULL); /* revision 2: other keys do not matter */
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k"), S("2"), 2, a, why, T0_NS, NULL, &rev),
                   RV_CFG_ECONFLICT);
  assert_non_null(strstr(rv_cfg_errmsg(c), "not 2"));
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k"), S("2"), 1, a, why, T0_NS, NULL, &rev),
                   RV_CFG_OK);
  assert_int_equal(rev, 3);
  /* A lost update: the writer that read revision 1 loses. */
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k"), S("3"), 1, a, why, T0_NS, NULL, &rev),
                   RV_CFG_ECONFLICT);
  assert_int_equal(rv_cfg_delete(c, S("platform"), S("k"), 1, a, why, T0_NS, NULL, &rev),
                   RV_CFG_ECONFLICT);
  assert_int_equal(rv_cfg_delete(c, S("platform"), S("k"), 3, a, why, T0_NS, NULL, &rev),
                   RV_CFG_OK);
  /* Expecting a revision of a key that does not exist. */
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k"), S("4"), 3, a, why, T0_NS, NULL, &rev),
                   RV_CFG_ECONFLICT);
  assert_non_null(strstr(rv_cfg_errmsg(c), "does not exist"));
  assert_int_equal(rv_cfg_delete(c, S("platform"), S("k"), ANY, a, why, T0_NS, NULL, &rev),
                   RV_CFG_ENOKEY);
  assert_int_equal(rv_cfg_revision(c), 4);
  rv_cfg_stats st;
  rv_cfg_get_stats(c, &st);
  assert_int_equal(st.conflicts, 5);
  assert_int_equal(st.writes, 4);
  done(c);
}

/* ---- watches ------------------------------------------------------------------------------ */

/*
 * The incident's cases: a watcher on service api must hear nothing from
 * (1) a platform write that api overrides, (2) a write of the value it
 * already has; and must hear (3) a platform write api inherits, with old
 * and new effective values and the layer.
 */
static void test_watch_effective_only_on_change(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  put(c, "platform", "api_url", "https://v1", NULL);
  put(c, "platform", "timeout_ms", "30000", NULL);
  put(c, "svc/api", "timeout_ms", "10000", NULL);
  uint64_t w_api = watch_eff(c, "api", "", RV_CFG_SINCE_NOW, &ev);
  uint64_t w_api1 = watch_eff(c, "api", "1", RV_CFG_SINCE_NOW, &ev);
  uint64_t w_web = watch_eff(c, "web", "", RV_CFG_SINCE_NOW, &ev);
  assert_int_equal(ev.len, 0);

  /* (1) platform write overridden by api: only web hears it. */
  uint64_t r = put(c, "platform", "timeout_ms", "20000", &ev);
  assert_int_equal(count_for(&ev, w_api), 0);
  assert_int_equal(count_for(&ev, w_api1), 0);
  assert_int_equal(count_for(&ev, w_web), 1);
  const rv_cfg_event *e = first_for(&ev, w_web);
  assert_int_equal(e->change.revision, r);
  assert_str(e->old_value, "30000");
  assert_str(e->new_value, "20000");
  assert_int_equal(e->new_level, RV_CFG_LEVEL_PLATFORM);
  rv_cfg_events_clear(&ev);

  /* (2) a write of the same value: nobody hears it, though it gets a revision. */
  uint64_t before = rv_cfg_revision(c);
  put(c, "platform", "api_url", "https://v1", &ev);
  put(c, "svc/api", "timeout_ms", "10000", &ev);
  assert_int_equal(rv_cfg_revision(c), before + 2);
  assert_int_equal(ev.len, 0);

  /* (3) a platform write api inherits: every watcher hears it once. */
  r = put(c, "platform", "api_url", "https://v2", &ev);
  assert_int_equal(ev.len, 3);
  e = first_for(&ev, w_api1);
  assert_non_null(e);
  assert_int_equal(e->mode, RV_CFG_WATCH_EFFECTIVE);
  assert_int_equal(e->change.revision, r);
  assert_str(e->change.key, "api_url");
  assert_str(e->change.ns, "platform");
  assert_str(e->change.author, "alice");
  assert_true(e->old_present && e->new_present);
  assert_str(e->old_value, "https://v1");
  assert_str(e->new_value, "https://v2");
  assert_int_equal(e->old_level, RV_CFG_LEVEL_PLATFORM);
  rv_cfg_events_clear(&ev);

  /* A replica override: the replica hears the change of source and value; others nothing. */
  put(c, "svc/api/1", "api_url", "https://canary", &ev);
  assert_int_equal(ev.len, 1);
  e = first_for(&ev, w_api1);
  assert_str(e->old_value, "https://v2");
  assert_int_equal(e->old_level, RV_CFG_LEVEL_PLATFORM);
  assert_int_equal(e->new_level, RV_CFG_LEVEL_REPLICA);
  rv_cfg_events_clear(&ev);
  /* Overriding with the inherited value changes the layer, not the value: silence. */
  put(c, "svc/api", "api_url", "https://v2", &ev);
  assert_int_equal(ev.len, 0);
  /* Deleting a key nobody else sets: absent afterwards. */
  put(c, "svc/web", "only_web", "1", &ev);
  rv_cfg_events_clear(&ev);
  del(c, "svc/web", "only_web", &ev);
  assert_int_equal(ev.len, 1);
  assert_true(ev.v[0].old_present);
  assert_false(ev.v[0].new_present);
  assert_int_equal(ev.v[0].new_level, RV_CFG_LEVEL_NONE);
  assert_int_equal(ev.v[0].change.op, RV_CFG_OP_DELETE);
  rv_cfg_events_clear(&ev);

  rv_cfg_stats st;
  rv_cfg_get_stats(c, &st);
  assert_true(st.suppressed > 0);
  assert_int_equal(rv_cfg_unwatch(c, w_api), RV_CFG_OK);
  assert_int_equal(rv_cfg_unwatch(c, w_api), RV_CFG_ENOWATCH);
  assert_int_equal(rv_cfg_unwatch(c, w_api1), RV_CFG_OK);
  assert_int_equal(rv_cfg_unwatch(c, w_web), RV_CFG_OK);
  put(c, "platform", "api_url", "https://v3", &ev);
  assert_int_equal(ev.len, 0);
  rv_cfg_events_free(&ev);
  done(c);
}

/* A watch with a key prefix hears only its keys. */
static void test_watch_prefix(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"),
                          .key_prefix = S("thirdparty/"), .since_revision = RV_CFG_SINCE_NOW};
  uint64_t id;
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &id, NULL), RV_CFG_OK);
  put(c, "platform", "thirdparty/url", "a", &ev);
  put(c, "platform", "log", "info", &ev);
  assert_int_equal(ev.len, 1);
  assert_str(ev.v[0].change.key, "thirdparty/url");
  rv_cfg_events_free(&ev);
  done(c);
}

/* The reference service's bug mode: a raw watch hears every write, changed or not. */
static void test_watch_raw(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  put(c, "svc/api", "timeout_ms", "10000", NULL);
  rv_cfg_str nss[] = {S("platform"), S("svc/api"), S("svc/api/1"), S("platform")};
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_RAW, .ns = nss, .nns = 4,
                          .since_revision = RV_CFG_SINCE_NOW};
  uint64_t raw;
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &raw, NULL), RV_CFG_OK);
  uint64_t effw = watch_eff(c, "api", "1", RV_CFG_SINCE_NOW, &ev);

  put(c, "platform", "timeout_ms", "20000", &ev); /* overridden: raw only */
  put(c, "svc/api", "timeout_ms", "10000", &ev);  /* same value: raw only */
  put(c, "svc/web", "timeout_ms", "1", &ev);      /* not watched at all */
  put(c, "svc/api/1", "x", "1", &ev);             /* both */
  assert_int_equal(count_for(&ev, raw), 3);       /* duplicate namespace counted once */
  assert_int_equal(count_for(&ev, effw), 1);
  const rv_cfg_event *e = first_for(&ev, raw);
  assert_int_equal(e->mode, RV_CFG_WATCH_RAW);
  assert_str(e->new_value, "20000");
  assert_false(e->old_present);
  assert_int_equal(e->new_level, RV_CFG_LEVEL_PLATFORM);

  rv_cfg_str bad[] = {S("svc/a b")};
  req.ns = bad;
  req.nns = 1;
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &raw, NULL), RV_CFG_EBADNAME);
  req.nns = RV_CFG_WATCH_NS_MAX + 1;
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &raw, NULL), RV_CFG_EINVAL);
  rv_cfg_events_free(&ev);
  done(c);
}

/* ---- resume -------------------------------------------------------------------------------- */

/* One event reduced to what a watcher acts on, for comparing event streams. */
typedef struct seen {
  uint64_t rev;
  char key[32];
  bool oldp, newp;
  char oldv[16], newv[16];
  int oldl, newl;
} seen;

typedef struct stream {
  seen v[4096];
  size_t n;
} stream;

static void take(stream *s, rv_cfg_events *ev, uint64_t id) {
  for (size_t i = 0; i < ev->len; i++) {
    const rv_cfg_event *e = &ev->v[i];
    if (e->watch_id != id)
      continue;
    assert_true(s->n < sizeof s->v / sizeof s->v[0]);
    seen *x = &s->v[s->n++];
    memset(x, 0, sizeof *x);
    x->rev = e->change.revision;
    snprintf(x->key, sizeof x->key, "%.*s", (int)e->change.key.len, e->change.key.ptr);
    x->oldp = e->old_present;
    x->newp = e->new_present;
    snprintf(x->oldv, sizeof x->oldv, "%.*s", (int)e->old_value.len, e->old_value.ptr);
    snprintf(x->newv, sizeof x->newv, "%.*s", (int)e->new_value.len, e->new_value.ptr);
    x->oldl = e->old_level;
    x->newl = e->new_level;
  }
}

static void assert_same_stream(const stream *a, const stream *b, const char *what) {
  if (a->n != b->n)
    fail_msg("%s: %zu events vs %zu", what, a->n, b->n);
  for (size_t i = 0; i < a->n; i++)
    if (memcmp(&a->v[i], &b->v[i], sizeof a->v[i]) != 0)
      fail_msg("%s: event %zu differs (rev %llu key %s vs rev %llu key %s)", what, i,
               (unsigned long long)a->v[i].rev, a->v[i].key, (unsigned long long)b->v[i].rev,
               b->v[i].key);
  for (size_t i = 1; i < a->n; i++)
    assert_true(a->v[i].rev > a->v[i - 1].rev); /* at most one event per revision */
}

/* A random write over a small space of layers, keys and values, so effects collide. */
static void random_write(rv_cfg *c, rv_rng *rng, rv_cfg_events *ev) {
  static const char *nss[] = {"platform", "svc/api", "svc/api/1", "svc/api/2", "svc/web"};
  static const char *keys[] = {"a", "b", "c", "tp/x"};
  static const char *vals[] = {"1", "2", "3"};
  const char *ns = nss[rv_rng_below(rng, 5)];
  const char *key = keys[rv_rng_below(rng, 4)];
  uint64_t rev;
  int rc;
  if (rv_rng_below(rng, 4) == 0)
    rc = rv_cfg_delete(c, S(ns), S(key), ANY, S("bot"), S("fuzz"), T0_NS, ev, &rev);
  else if (rv_rng_below(rng, 8) == 0 && rv_cfg_revision(c) > 0)
    rc = rv_cfg_rollback(c, S(ns), S(key), rv_rng_below(rng, rv_cfg_revision(c) + 1), S("bot"),
                         S("fuzz"), T0_NS, ev, &rev);
  else
    rc = rv_cfg_set(c, S(ns), S(key), S(vals[rv_rng_below(rng, 3)]), ANY, S("bot"), S("fuzz"),
                    T0_NS, ev, &rev);
  assert_true(rc == RV_CFG_OK || rc == RV_CFG_ENOKEY);
}

/*
 * A watcher that disconnects and resumes from the last revision it saw gets
 * exactly the stream of one that never disconnected, and a watch replayed
 * from revision 0 gets it too.  Targets: a service, a replica, a prefix
 * watch, a raw watch.  Random writes with a fixed seed make collisions
 * (overrides appearing and disappearing between disconnects) common.
 */
static void test_watch_resume(void **state) {
  (void)state;
  rv_cfg_str raw_ns[] = {S("platform"), S("svc/api/2")};
  rv_cfg_watch_req reqs[] = {
      {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api")},
      {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"), .replica = S("1")},
      {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"), .replica = S("2"),
       .key_prefix = S("tp/")},
      {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("web")},
      {.mode = RV_CFG_WATCH_RAW, .ns = raw_ns, .nns = 2},
  };
  static stream live, resumed, replayed;
  for (uint64_t seed = 1; seed <= 20; seed++) {
    for (size_t t = 0; t < sizeof reqs / sizeof reqs[0]; t++) {
      rv_cfg *c = new_store(NULL);
      rv_rng rng;
      rv_rng_seed(&rng, seed * 100 + t);
      rv_cfg_events ev;
      rv_cfg_events_init(&ev);
      live.n = resumed.n = replayed.n = 0;

      rv_cfg_watch_req req = reqs[t];
      req.since_revision = RV_CFG_SINCE_NOW;
      uint64_t live_id, res_id, start;
      assert_int_equal(rv_cfg_watch(c, &req, &ev, &live_id, NULL), RV_CFG_OK);
      assert_int_equal(rv_cfg_watch(c, &req, &ev, &res_id, &start), RV_CFG_OK);
      uint64_t last_seen = start;
      bool connected = true;
      for (int step = 0; step < 300; step++) {
        random_write(c, &rng, &ev);
        take(&live, &ev, live_id);
        if (connected) {
          size_t before = resumed.n;
          take(&resumed, &ev, res_id);
          if (resumed.n > before)
            last_seen = resumed.v[resumed.n - 1].rev;
        }
        rv_cfg_events_clear(&ev);
        if (rv_rng_below(&rng, 25) == 0) {
          if (connected) { /* disconnect */
            assert_int_equal(rv_cfg_unwatch(c, res_id), RV_CFG_OK);
            connected = false;
          } else { /* reconnect since the last revision seen */
            req.since_revision = last_seen;
            assert_int_equal(rv_cfg_watch(c, &req, &ev, &res_id, &start), RV_CFG_OK);
            take(&resumed, &ev, res_id);
            rv_cfg_events_clear(&ev);
            last_seen = resumed.n ? resumed.v[resumed.n - 1].rev : last_seen;
            if (start > last_seen)
              last_seen = start;
            connected = true;
          }
        }
      }
      if (!connected) {
        req.since_revision = last_seen;
        assert_int_equal(rv_cfg_watch(c, &req, &ev, &res_id, NULL), RV_CFG_OK);
        take(&resumed, &ev, res_id);
        rv_cfg_events_clear(&ev);
      }
      req.since_revision = 0;
      uint64_t rep_id;
      assert_int_equal(rv_cfg_watch(c, &req, &ev, &rep_id, NULL), RV_CFG_OK);
      take(&replayed, &ev, rep_id);
      rv_cfg_events_free(&ev);
      assert_true(live.n > 0);
      assert_same_stream(&live, &resumed, "resumed vs live");
      assert_same_stream(&live, &replayed, "replayed from 0 vs live");
      done(c);
    }
  }
}

/* The history bound: a resume or rollback from before it fails with a specific error. */
static void test_history_too_old(void **state) {
  (void)state;
  rv_cfg_opts o;
  rv_cfg_opts_default(&o);
  o.history_max_entries = 5;
  rv_cfg *c = new_store(&o);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  for (int i = 1; i <= 10; i++) {
    char v[8];
    snprintf(v, sizeof v, "%d", i);
    put(c, "platform", "k", v, NULL);
  }
  assert_int_equal(rv_cfg_oldest_retained(c), 6);
  uint64_t id;
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"),
                          .since_revision = 4};
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &id, NULL), RV_CFG_ECOMPACTED);
  assert_non_null(strstr(rv_cfg_errmsg(c), "re-read"));
  assert_int_equal(ev.len, 0);
  req.since_revision = 11;
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &id, NULL), RV_CFG_EFUTURE);
  /* since 5: revisions 6..10 are all retained. */
  req.since_revision = 5;
  assert_int_equal(rv_cfg_watch(c, &req, &ev, &id, NULL), RV_CFG_OK);
  assert_int_equal(ev.len, 5);
  assert_int_equal(ev.v[0].change.revision, 6);
  assert_str(ev.v[0].old_value, "5");
  assert_int_equal(rv_cfg_watch(c, &req, NULL, &id, NULL), RV_CFG_EINVAL); /* events need a list */

  uint64_t rev;
  assert_int_equal(rv_cfg_rollback(c, S("platform"), S("k"), 4, S("a"), S(""), T0_NS, &ev, &rev),
                   RV_CFG_ECOMPACTED);
  rv_cfg_events_clear(&ev);
  assert_int_equal(rv_cfg_rollback(c, S("platform"), S("k"), 5, S("a"), S(""), T0_NS, &ev, &rev),
                   RV_CFG_OK);
  assert_string_equal(eff(c, "api", "", "k", NULL), "5");
  assert_int_equal(rv_cfg_rollback(c, S("platform"), S("k"), 99, S("a"), S(""), T0_NS, &ev, &rev),
                   RV_CFG_EFUTURE);
  rv_cfg_events_free(&ev);
  done(c);
}

/* ---- dry run ------------------------------------------------------------------------------------ */

typedef struct impacts {
  size_t n;
  char who[16][48];
  int effect[16];
  char oldv[16][16], newv[16][16];
  int new_level[16];
} impacts;

static bool collect_impact(const rv_cfg_impact *imp, void *arg) {
  impacts *im = arg;
  snprintf(im->who[im->n], sizeof im->who[0], "%.*s%s%.*s", (int)imp->service.len,
           imp->service.ptr, imp->replica.len ? "/" : "", (int)imp->replica.len,
           imp->replica.ptr);
  im->effect[im->n] = imp->effect;
  snprintf(im->oldv[im->n], sizeof im->oldv[0], "%.*s", (int)imp->old_value.len,
           imp->old_value.ptr);
  snprintf(im->newv[im->n], sizeof im->newv[0], "%.*s", (int)imp->new_value.len,
           imp->new_value.ptr);
  im->new_level[im->n] = imp->new_level;
  im->n++;
  return im->n < 16;
}

static void test_dry_run(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  put(c, "platform", "timeout_ms", "30000", NULL);
  put(c, "svc/api", "timeout_ms", "10000", NULL);      /* api overrides */
  assert_int_equal(rv_cfg_register(c, S("web"), S("")), RV_CFG_OK);      /* inherits only */
  assert_int_equal(rv_cfg_register(c, S("worker"), S("1")), RV_CFG_OK);
  assert_int_equal(rv_cfg_register(c, S("worker"), S("2")), RV_CFG_OK);
  put(c, "svc/worker/2", "timeout_ms", "30000", NULL); /* same value as platform today */
  uint64_t rev_before = rv_cfg_revision(c);

  rv_cfg_write w = {.op = RV_CFG_OP_SET, .ns = S("platform"), .key = S("timeout_ms"),
                    .value = S("60000"), .expect_revision = ANY, .author = S("bob"),
                    .reason = S("slow upstream"), .wall_ns = T0_NS};
  impacts im = {0};
  rv_cfg_dry_run_res res;
  assert_int_equal(rv_cfg_dry_run(c, &w, false, collect_impact, &im, &res), RV_CFG_OK);
  /* Changes: web, worker, worker/1 (all inherit). api and worker/2 override. */
  assert_int_equal(res.changes, 3);
  assert_int_equal(res.unaffected, 2);
  assert_int_equal(im.n, 3);
  assert_string_equal(im.who[0], "web");
  assert_string_equal(im.who[1], "worker");
  assert_string_equal(im.who[2], "worker/1");
  assert_string_equal(im.oldv[0], "30000");
  assert_string_equal(im.newv[0], "60000");
  assert_int_equal(im.new_level[0], RV_CFG_LEVEL_PLATFORM);
  assert_int_equal(res.change.revision, rev_before + 1);
  assert_str(res.change.old_value, "30000");
  assert_int_equal(rv_cfg_revision(c), rev_before); /* nothing written */

  memset(&im, 0, sizeof im);
  assert_int_equal(rv_cfg_dry_run(c, &w, true, collect_impact, &im, &res), RV_CFG_OK);
  assert_int_equal(im.n, 5);
  assert_string_equal(im.who[0], "api");
  assert_int_equal(im.effect[0], RV_CFG_IMPACT_OVERRIDDEN);
  assert_string_equal(im.who[4], "worker/2");
  assert_int_equal(im.effect[4], RV_CFG_IMPACT_OVERRIDDEN);

  /* Same value at the platform: everyone SAME, nobody changes. */
  w.value = S("30000");
  memset(&im, 0, sizeof im);
  assert_int_equal(rv_cfg_dry_run(c, &w, true, collect_impact, &im, &res), RV_CFG_OK);
  assert_int_equal(res.changes, 0);
  assert_int_equal(im.effect[1], RV_CFG_IMPACT_SAME);

  /* A service write reaches the service and its replicas that do not override. */
  w.ns = S("svc/worker");
  w.value = S("5000");
  memset(&im, 0, sizeof im);
  assert_int_equal(rv_cfg_dry_run(c, &w, false, collect_impact, &im, &res), RV_CFG_OK);
  assert_int_equal(im.n, 2);
  assert_string_equal(im.who[0], "worker");
  assert_string_equal(im.who[1], "worker/1");
  assert_int_equal(im.new_level[1], RV_CFG_LEVEL_SERVICE);

  /* The first write of a brand-new service reaches that service. */
  w.ns = S("svc/newbie/1");
  memset(&im, 0, sizeof im);
  assert_int_equal(rv_cfg_dry_run(c, &w, false, collect_impact, &im, &res), RV_CFG_OK);
  assert_int_equal(im.n, 1);
  assert_string_equal(im.who[0], "newbie/1");
  assert_string_equal(im.oldv[0], "30000");

  /* A delete at the platform: inheriting services lose the key. */
  w.op = RV_CFG_OP_DELETE;
  w.ns = S("platform");
  memset(&im, 0, sizeof im);
  assert_int_equal(rv_cfg_dry_run(c, &w, false, collect_impact, &im, &res), RV_CFG_OK);
  assert_int_equal(res.changes, 3);
  assert_int_equal(im.new_level[0], RV_CFG_LEVEL_NONE);

  /* A dry run fails as the write would. */
  w.op = RV_CFG_OP_SET;
  w.expect_revision = 1234;
  assert_int_equal(rv_cfg_dry_run(c, &w, false, collect_impact, &im, &res), RV_CFG_ECONFLICT);
  w.expect_revision = ANY;
  w.author = S("");
  assert_int_equal(rv_cfg_dry_run(c, &w, false, collect_impact, &im, &res), RV_CFG_EBADAUTHOR);
  assert_int_equal(rv_cfg_revision(c), rev_before);
  done(c);
}

/* ---- audit and rollback -------------------------------------------------------------------------- */

typedef struct audit_rows {
  size_t n;
  uint64_t rev[64];
} audit_rows;

static bool collect_change(const rv_cfg_change *ch, void *arg) {
  audit_rows *a = arg;
  a->rev[a->n++] = ch->revision;
  return a->n < 64;
}

typedef struct last_change {
  rv_cfg_change ch;
  bool got;
} last_change;

static bool keep_change(const rv_cfg_change *ch, void *arg) {
  last_change *l = arg;
  l->ch = *ch;
  l->got = true;
  return true;
}

static void test_audit(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  uint64_t rev;
  /* Revisions 1..10 at times T0 + rev seconds, alternating keys. */
  for (int i = 1; i <= 10; i++) {
    char v[8];
    snprintf(v, sizeof v, "%d", i);
    assert_int_equal(rv_cfg_set(c, S(i % 2 ? "platform" : "svc/api"), S(i % 3 ? "a" : "b"), S(v),
                                ANY, S("carol"), S("audit test"), T0_NS + i * RV_NS_PER_S, NULL,
                                &rev),
                     RV_CFG_OK);
  }
  audit_rows a = {0};
  rv_cfg_audit_res res;
  rv_cfg_audit_query q = {.key = S("b")};
  assert_int_equal(rv_cfg_audit(c, &q, collect_change, &a, &res), RV_CFG_OK);
  assert_int_equal(a.n, 3); /* 3, 6, 9 */
  assert_int_equal(a.rev[0], 3);
  assert_int_equal(a.rev[2], 9);
  assert_false(res.more);
  assert_false(res.incomplete);

  memset(&a, 0, sizeof a);
  q = (rv_cfg_audit_query){.ns = S("svc/api"), .key = S("a")};
  assert_int_equal(rv_cfg_audit(c, &q, collect_change, &a, &res), RV_CFG_OK);
  assert_int_equal(a.n, 4); /* 2, 4, 8, 10 */
  assert_int_equal(a.rev[1], 4);

  memset(&a, 0, sizeof a);
  q = (rv_cfg_audit_query){.wall_min_ns = T0_NS + 4 * RV_NS_PER_S,
                           .wall_max_ns = T0_NS + 7 * RV_NS_PER_S};
  assert_int_equal(rv_cfg_audit(c, &q, collect_change, &a, &res), RV_CFG_OK);
  assert_int_equal(a.n, 3); /* 4, 5, 6 */
  assert_int_equal(a.rev[0], 4);

  memset(&a, 0, sizeof a);
  q = (rv_cfg_audit_query){.rev_min = 2, .rev_max = 9, .limit = 3, .newest_first = true};
  assert_int_equal(rv_cfg_audit(c, &q, collect_change, &a, &res), RV_CFG_OK);
  assert_int_equal(a.n, 3);
  assert_int_equal(a.rev[0], 9);
  assert_int_equal(a.rev[2], 7);
  assert_true(res.more);

  q = (rv_cfg_audit_query){.limit = RV_CFG_AUDIT_LIMIT_MAX + 1};
  assert_int_equal(rv_cfg_audit(c, &q, collect_change, &a, &res), RV_CFG_EQUERY);
  assert_non_null(strstr(rv_cfg_errmsg(c), "at most"));
  q = (rv_cfg_audit_query){.rev_min = 5, .rev_max = 4};
  assert_int_equal(rv_cfg_audit(c, &q, collect_change, &a, &res), RV_CFG_EINVAL);

  /* The record itself. */
  last_change l = {0};
  q = (rv_cfg_audit_query){.rev_min = 10, .rev_max = 10};
  assert_int_equal(rv_cfg_audit(c, &q, keep_change, &l, &res), RV_CFG_OK);
  assert_true(l.got);
  assert_int_equal(l.ch.op, RV_CFG_OP_SET);
  assert_str(l.ch.ns, "svc/api");
  assert_str(l.ch.key, "a");
  assert_str(l.ch.old_value, "8");
  assert_str(l.ch.new_value, "10");
  assert_str(l.ch.author, "carol");
  assert_str(l.ch.reason, "audit test");
  assert_int_equal(l.ch.wall_ns, T0_NS + 10 * RV_NS_PER_S);
  done(c);
}

static void test_rollback(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  uint64_t r1 = put(c, "svc/api", "url", "v1", NULL);
  put(c, "svc/api", "url", "v2", NULL);
  put(c, "svc/api", "url", "v3", NULL);
  uint64_t w = watch_eff(c, "api", "", RV_CFG_SINCE_NOW, &ev);

  uint64_t rev;
  assert_int_equal(rv_cfg_rollback(c, S("svc/api"), S("url"), r1, S("dave"), S("v3 is broken"),
                                   T0_NS + 5, &ev, &rev),
                   RV_CFG_OK);
  assert_int_equal(rev, 4);
  assert_string_equal(eff(c, "api", "", "url", NULL), "v1");
  assert_int_equal(count_for(&ev, w), 1);
  assert_str(ev.v[0].old_value, "v3");
  assert_str(ev.v[0].new_value, "v1");
  assert_int_equal(ev.v[0].change.op, RV_CFG_OP_ROLLBACK);
  rv_cfg_events_clear(&ev);

  /* The audit record says who, why, and to what revision. */
  last_change l = {0};
  rv_cfg_audit_res res;
  rv_cfg_audit_query q = {.rev_min = rev, .rev_max = rev};
  assert_int_equal(rv_cfg_audit(c, &q, keep_change, &l, &res), RV_CFG_OK);
  assert_true(l.got);
  assert_int_equal(l.ch.op, RV_CFG_OP_ROLLBACK);
  assert_int_equal(l.ch.rollback_to, r1);
  assert_str(l.ch.author, "dave");
  assert_str(l.ch.reason, "v3 is broken");
  assert_str(l.ch.old_value, "v3");
  assert_str(l.ch.new_value, "v1");
  assert_int_equal(l.ch.wall_ns, T0_NS + 5);

  /* Rollback to "did not exist" (revision 0) is a delete. */
  assert_int_equal(rv_cfg_rollback(c, S("svc/api"), S("url"), 0, S("dave"), S(""), T0_NS, &ev,
                                   &rev),
                   RV_CFG_OK);
  assert_null(eff(c, "api", "", "url", NULL));
  assert_int_equal(count_for(&ev, w), 1);
  assert_false(ev.v[0].new_present);
  rv_cfg_events_clear(&ev);
  /* ... and again is nothing to do. */
  assert_int_equal(rv_cfg_rollback(c, S("svc/api"), S("url"), 0, S("dave"), S(""), T0_NS, &ev,
                                   &rev),
                   RV_CFG_ENOKEY);
  /* Rolling back to the value it had at revision 2 brings it back. */
  assert_int_equal(rv_cfg_rollback(c, S("svc/api"), S("url"), 2, S("dave"), S(""), T0_NS, &ev,
                                   &rev),
                   RV_CFG_OK);
  assert_string_equal(eff(c, "api", "", "url", NULL), "v2");
  rv_cfg_kv kv;
  assert_int_equal(rv_cfg_get(c, S("svc/api"), S("url"), &kv), RV_CFG_OK);
  assert_int_equal(kv.create_revision, rev); /* re-created */

  /* A caller-resolved rollback (what configdb does beyond the memory window). */
  rv_cfg_write wr = {.op = RV_CFG_OP_ROLLBACK, .ns = S("svc/api"), .key = S("url"),
                     .rollback_to = 1, .rollback_resolved = true, .rollback_present = true,
                     .rollback_value = S("from-disk"), .expect_revision = ANY,
                     .author = S("dave"), .wall_ns = T0_NS};
  assert_int_equal(rv_cfg_apply(c, &wr, &ev, NULL), RV_CFG_OK);
  assert_string_equal(eff(c, "api", "", "url", NULL), "from-disk");
  rv_cfg_events_free(&ev);
  done(c);
}

/* ---- limits and bad input -------------------------------------------------------------------------- */

static void test_limits(void **state) {
  (void)state;
  rv_cfg_opts o;
  rv_cfg_opts_default(&o);
  o.max_keys_per_layer = 2;
  o.max_services = 2;
  o.max_layers = 4; /* platform + 3 */
  o.max_watches = 2;
  o.max_value_bytes = 16;
  o.max_data_bytes = 50;
  rv_cfg *c = new_store(&o);
  uint64_t rev;
  rv_cfg_str a = S("alice"), r = S("");
#define SET(ns, k, v) rv_cfg_set(c, S(ns), S(k), S(v), ANY, a, r, T0_NS, NULL, &rev)
  assert_int_equal(SET("platform", "k1", "v"), RV_CFG_OK);
  assert_int_equal(SET("platform", "k2", "v"), RV_CFG_OK);
  assert_int_equal(SET("platform", "k3", "v"), RV_CFG_EKEYS);
  assert_non_null(strstr(rv_cfg_errmsg(c), "max_keys_per_layer"));
  assert_int_equal(SET("platform", "k2", "overwrite ok"), RV_CFG_OK);
  assert_int_equal(SET("platform", "k1", "12345678901234567"), RV_CFG_EVALUESIZE);
  assert_non_null(strstr(rv_cfg_errmsg(c), "17 bytes"));
  assert_int_equal(SET("svc/a", "k", "v"), RV_CFG_OK);
  assert_int_equal(SET("svc/b", "k", "v"), RV_CFG_OK);
  assert_int_equal(SET("svc/c", "k", "v"), RV_CFG_ESERVICES);
  assert_int_equal(rv_cfg_register(c, S("c"), S("")), RV_CFG_ESERVICES);
  assert_int_equal(SET("svc/a/1", "k", "v"), RV_CFG_OK);
  assert_int_equal(SET("svc/a/2", "k", "v"), RV_CFG_ELAYERS);
  assert_non_null(strstr(rv_cfg_errmsg(c), "max_layers"));
  /* data: so far k1 v (3) + k2 overwrite ok (14) + 3 x k v (6) = 23 bytes */
  assert_int_equal(SET("svc/a", "big1", "0123456789abcdef"), RV_CFG_OK);   /* 43 */
  assert_int_equal(SET("svc/b", "big2", "0123456789abcdef"), RV_CFG_EDATA); /* would be 63 */
  assert_non_null(strstr(rv_cfg_errmsg(c), "max_data_bytes"));

  assert_int_equal(watch_eff(c, "a", "", RV_CFG_SINCE_NOW, NULL) > 0, true);
  assert_int_equal(watch_eff(c, "b", "", RV_CFG_SINCE_NOW, NULL) > 0, true);
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("a"),
                          .since_revision = RV_CFG_SINCE_NOW};
  uint64_t id;
  assert_int_equal(rv_cfg_watch(c, &req, NULL, &id, NULL), RV_CFG_EWATCHES);

  /* Bad input: specific codes and messages. */
  assert_int_equal(SET("platform", "bad key", "v"), RV_CFG_EBADKEY);
  assert_non_null(strstr(rv_cfg_errmsg(c), "0x20 at offset 3"));
  assert_int_equal(SET("platform", "", "v"), RV_CFG_EBADKEY);
  assert_int_equal(SET("svc/x y", "k", "v"), RV_CFG_EBADNAME);
  assert_int_equal(SET("tenant/x", "k", "v"), RV_CFG_EBADNS);
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k1"), (rv_cfg_str){"a\0b", 3}, ANY, a, r,
                              T0_NS, NULL, &rev),
                   RV_CFG_EBADVALUE);
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k1"), S("v"), ANY, S(""), r, T0_NS, NULL,
                              &rev),
                   RV_CFG_EBADAUTHOR);
  assert_int_equal(rv_cfg_set(c, S("platform"), S("k1"), S("v"), ANY, a, S("line\nbreak"),
                              T0_NS, NULL, &rev),
                   RV_CFG_EBADREASON);
  char long_key[RV_CFG_KEY_MAX_BYTES + 2];
  memset(long_key, 'k', sizeof long_key - 1);
  long_key[sizeof long_key - 1] = '\0';
  assert_int_equal(SET("platform", long_key, "v"), RV_CFG_EBADKEY);
  rv_cfg_write w = {.op = 42, .ns = S("platform"), .key = S("k"), .author = a};
  assert_int_equal(rv_cfg_apply(c, &w, NULL, NULL), RV_CFG_EINVAL);
  for (int err = 0; err >= RV_CFG_ENOMEM; err--) {
    assert_non_null(rv_cfg_strerror(err));
    assert_string_not_equal(rv_cfg_errname(err), "RV_CFG_E?");
  }
  assert_string_equal(rv_cfg_errcode(RV_CFG_ECONFLICT), "CONFLICT");
  rv_cfg_opts_default(&o);
  o.max_value_bytes = RV_CFG_VALUE_MAX_BYTES_CEILING + 1;
  rv_cfg *bad = NULL;
  assert_int_equal(rv_cfg_create(&bad, &o), RV_CFG_EINVAL);
#undef SET
  done(c);
}

/* ---- services ------------------------------------------------------------------------------------ */

typedef struct targets {
  size_t n;
  char who[16][48];
} targets;

static bool collect_target(const rv_cfg_target_view *v, void *arg) {
  targets *t = arg;
  snprintf(t->who[t->n++], sizeof t->who[0], "%.*s", (int)v->ns.len, v->ns.ptr);
  return t->n < 16;
}

static void test_services(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  assert_int_equal(rv_cfg_register(c, S("web"), S("")), RV_CFG_OK);
  assert_int_equal(rv_cfg_register(c, S("api"), S("2")), RV_CFG_OK);
  assert_int_equal(rv_cfg_register(c, S("api"), S("1")), RV_CFG_OK);
  put(c, "svc/db", "k", "v", NULL);
  targets t = {0};
  size_t n;
  assert_int_equal(rv_cfg_list_targets(c, S(""), collect_target, &t, &n), RV_CFG_OK);
  assert_int_equal(n, 5);
  assert_string_equal(t.who[0], "svc/api");
  assert_string_equal(t.who[1], "svc/api/1");
  assert_string_equal(t.who[2], "svc/api/2");
  assert_string_equal(t.who[3], "svc/db");
  assert_string_equal(t.who[4], "svc/web");

  /* A service disappears when nothing holds it any more. */
  del(c, "svc/db", "k", NULL);
  assert_int_equal(rv_cfg_unregister(c, S("api"), S("1")), RV_CFG_OK);
  assert_int_equal(rv_cfg_unregister(c, S("api"), S("1")), RV_CFG_ENOSERVICE);
  uint64_t w = watch_eff(c, "api", "2", RV_CFG_SINCE_NOW, NULL);
  assert_int_equal(rv_cfg_unregister(c, S("api"), S("2")), RV_CFG_OK); /* still watched */
  memset(&t, 0, sizeof t);
  assert_int_equal(rv_cfg_list_targets(c, S(""), collect_target, &t, &n), RV_CFG_OK);
  assert_int_equal(n, 3);
  assert_string_equal(t.who[1], "svc/api/2");
  assert_int_equal(rv_cfg_unwatch(c, w), RV_CFG_OK);
  memset(&t, 0, sizeof t);
  assert_int_equal(rv_cfg_list_targets(c, S(""), collect_target, &t, &n), RV_CFG_OK);
  assert_int_equal(n, 1);
  assert_string_equal(t.who[0], "svc/web");
  rv_cfg_stats st;
  rv_cfg_get_stats(c, &st);
  assert_int_equal(st.services, 1);
  assert_int_equal(st.layers, 2);
  done(c);
}

/*
 * A write visits only the readers under the written layer: with 500
 * watched services, a service write reaches one of them and a replica
 * write one reader; the suppressed counter (readers reached whose value did
 * not change) shows what was visited.
 */
static void test_write_cost_bounded_by_watchers(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  for (int i = 0; i < 500; i++) {
    char svc[16];
    snprintf(svc, sizeof svc, "s%d", i);
    watch_eff(c, svc, "", RV_CFG_SINCE_NOW, &ev);
    put(c, "svc/s0", "k", "1", &ev);
  }
  rv_cfg_events_clear(&ev);
  rv_cfg_stats a, b;
  rv_cfg_get_stats(c, &a);
  put(c, "svc/s7", "k", "x", &ev);
  put(c, "svc/s7", "k", "x", &ev); /* same value: one reader visited, suppressed */
  rv_cfg_get_stats(c, &b);
  assert_int_equal(b.notifications - a.notifications, 1);
  assert_int_equal(b.suppressed - a.suppressed, 1);
  put(c, "platform", "k", "p", &ev); /* every service but s0 and s7 inherits */
  assert_int_equal(ev.len, 1 + 498);
  rv_cfg_events_free(&ev);
  done(c);
}

/* Events keep their strings alive after the store overwrote and forgot them. */
static void test_events_outlive_store_changes(void **state) {
  (void)state;
  rv_cfg_opts o;
  rv_cfg_opts_default(&o);
  o.history_max_entries = 1;
  rv_cfg *c = new_store(&o);
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  watch_eff(c, "api", "", RV_CFG_SINCE_NOW, &ev);
  put(c, "platform", "k", "first", &ev);
  put(c, "platform", "k", "second", &ev);
  del(c, "platform", "k", &ev);
  put(c, "platform", "other", "x", &ev);
  assert_int_equal(ev.len, 4);
  assert_str(ev.v[0].new_value, "first");
  assert_str(ev.v[1].old_value, "first");
  assert_str(ev.v[1].new_value, "second");
  assert_str(ev.v[2].old_value, "second");
  assert_str(ev.v[0].change.key, "k");
  rv_cfg_destroy(c); /* events outlive even the store */
  assert_str(ev.v[1].change.reason, "test");
  rv_cfg_events_free(&ev);
}

/* ---- prepare and loading ---------------------------------------------------------------------------- */

static void test_prepare_changes_nothing(void **state) {
  (void)state;
  rv_cfg *c = new_store(NULL);
  put(c, "platform", "k", "1", NULL);
  rv_cfg_write w = {.op = RV_CFG_OP_SET, .ns = S("svc/new"), .key = S("k"), .value = S("2"),
                    .expect_revision = ANY, .author = S("a"), .wall_ns = T0_NS};
  rv_cfg_change ch;
  assert_int_equal(rv_cfg_prepare(c, &w, &ch), RV_CFG_OK);
  assert_int_equal(ch.revision, 2);
  assert_false(ch.old_present);
  assert_str(ch.service, "new");
  rv_cfg_stats st;
  rv_cfg_get_stats(c, &st);
  assert_int_equal(st.services, 0);
  assert_int_equal(st.revision, 1);
  rv_cfg_change applied;
  assert_int_equal(rv_cfg_apply(c, &w, NULL, &applied), RV_CFG_OK);
  assert_int_equal(applied.revision, ch.revision);
  done(c);
}

/* Feeds audit records into another store's history. */
typedef struct loader {
  rv_cfg *dst;
  int rc;
} loader;

static bool load_one(const rv_cfg_change *ch, void *arg) {
  loader *ld = arg;
  ld->rc = rv_cfg_load_history(ld->dst, ch);
  return ld->rc == RV_CFG_OK;
}

static void test_load(void **state) {
  (void)state;
  /* Build a store, then rebuild a second one from its values and history. */
  rv_cfg *a = new_store(NULL);
  put(a, "platform", "k", "1", NULL);
  put(a, "svc/api", "k", "2", NULL);
  put(a, "svc/api/1", "j", "3", NULL);
  del(a, "svc/api", "k", NULL);
  put(a, "platform", "k", "4", NULL);

  rv_cfg *b = new_store(NULL);
  collected col = {0};
  const char *nss[] = {"platform", "svc/api", "svc/api/1"};
  for (size_t i = 0; i < 3; i++) {
    rv_cfg_kv kv;
    memset(&col, 0, sizeof col);
    size_t n;
    assert_int_equal(rv_cfg_list(a, S(nss[i]), S(""), collect_kv, &col, &n), RV_CFG_OK);
    for (size_t j = 0; j < n; j++) {
      assert_int_equal(rv_cfg_get(a, S(nss[i]), S(col.keys[j]), &kv), RV_CFG_OK);
      assert_int_equal(rv_cfg_load_value(b, S(nss[i]), kv.key, kv.value, kv.create_revision,
                                         kv.mod_revision),
                       RV_CFG_OK);
    }
  }
  /* The last 3 records of history. */
  rv_cfg_audit_query q = {.rev_min = 3};
  rv_cfg_audit_res res;
  loader ld = {b, 0};
  assert_int_equal(rv_cfg_audit(a, &q, load_one, &ld, &res), RV_CFG_OK);
  assert_int_equal(ld.rc, RV_CFG_OK);
  assert_int_equal(res.count, 3);
  /* A write before finishing is refused; a wrong counter too. */
  uint64_t rev;
  assert_int_equal(rv_cfg_set(b, S("platform"), S("x"), S("y"), ANY, S("a"), S(""), T0_NS, NULL,
                              &rev),
                   RV_CFG_EINVAL);
  assert_int_equal(rv_cfg_load_finish(b, 4), RV_CFG_EINVAL);
  assert_int_equal(rv_cfg_load_finish(b, 5), RV_CFG_OK);
  assert_int_equal(rv_cfg_load_value(b, S("platform"), S("z"), S("1"), 1, 1), RV_CFG_EINVAL);

  assert_string_equal(eff(b, "api", "1", "k", NULL), "4");
  assert_string_equal(eff(b, "api", "1", "j", NULL), "3");
  assert_int_equal(rv_cfg_oldest_retained(b), 3);
  /* The loaded history serves resumes and rollbacks. */
  rv_cfg_events ev;
  rv_cfg_events_init(&ev);
  uint64_t id;
  rv_cfg_watch_req req = {.mode = RV_CFG_WATCH_EFFECTIVE, .service = S("api"),
                          .since_revision = 2};
  assert_int_equal(rv_cfg_watch(b, &req, &ev, &id, NULL), RV_CFG_OK);
  /* rev 3 (replica only): nothing for api; rev 4: 2 -> 1 (platform); rev 5: 1 -> 4 */
  assert_int_equal(ev.len, 2);
  assert_str(ev.v[0].old_value, "2");
  assert_str(ev.v[0].new_value, "1");
  assert_str(ev.v[1].new_value, "4");
  rv_cfg_events_free(&ev);
  assert_int_equal(rv_cfg_unwatch(b, id), RV_CFG_OK);
  put(b, "platform", "k", "5", NULL);
  assert_int_equal(rv_cfg_revision(b), 6);
  done(a);
  done(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ns_parse),
      cmocka_unit_test(test_inheritance),
      cmocka_unit_test(test_list),
      cmocka_unit_test(test_cas),
      cmocka_unit_test(test_watch_effective_only_on_change),
      cmocka_unit_test(test_watch_prefix),
      cmocka_unit_test(test_watch_raw),
      cmocka_unit_test(test_watch_resume),
      cmocka_unit_test(test_history_too_old),
      cmocka_unit_test(test_dry_run),
      cmocka_unit_test(test_audit),
      cmocka_unit_test(test_rollback),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_services),
      cmocka_unit_test(test_write_cost_bounded_by_watchers),
      cmocka_unit_test(test_events_outlive_store_changes),
      cmocka_unit_test(test_prepare_changes_nothing),
      cmocka_unit_test(test_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
