/*
 * The coord client's etcd backend (src/client/etcd_backend.c) against a real
 * single-node etcd (Debian's etcd-server), started once for the file on free
 * loopback ports with a temporary data dir and fast raft timings (so the
 * server's minimum lease TTL is 1 s), and killed by pid at the end.  The test
 * itself plays "another client" over the v3 JSON gateway with rvt_http and
 * jansson.  The checks mirror test_client_coord.c where the semantics are the
 * same; each test uses lock, service and key names of its own, so they share
 * the server.  Without the etcd binary every test is skipped with a message.
 */
#include "support.h"

#include "config_write_check.h"

#include "client/coord_client.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TTL_MS 1000
#define LOST_BOUND_NS (3 * RV_NS_PER_S)

static struct {
  bool have_binary;
  bool up;
  pid_t pid;
  char dir[64];
  uint16_t port, peer;
  char url[64];
} E;

/* ---- talking to etcd directly --------------------------------------------------------------- */

static char *b64(const char *s) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = strlen(s), o = 0;
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  assert_non_null(out);
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned char)s[i] << 16;
    if (i + 1 < n)
      v |= (unsigned char)s[i + 1] << 8;
    if (i + 2 < n)
      v |= (unsigned char)s[i + 2];
    out[o++] = a[(v >> 18) & 63];
    out[o++] = a[(v >> 12) & 63];
    out[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? a[v & 63] : '=';
  }
  out[o] = 0;
  return out;
}

/* POST body (consumed) to path; the parsed answer (NULL if unreachable); *status set. */
static json_t *etcd_post_status(const char *path, json_t *body, int *status) {
  char *b = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  char *out = NULL;
  *status = rvt_http(E.port, "POST", path, b, &out);
  free(b);
  json_t *j = out ? json_loads(out, 0, NULL) : NULL;
  free(out);
  return j;
}

static json_t *etcd_post(const char *path, json_t *body) {
  int status;
  json_t *j = etcd_post_status(path, body, &status);
  if (status != 200)
    fail_msg("etcd %s: HTTP %d", path, status);
  assert_non_null(j);
  return j;
}

static long long jnum(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  if (json_is_string(v))
    return strtoll(json_string_value(v), NULL, 10);
  return json_is_integer(v) ? json_integer_value(v) : 0;
}

static long long rev_of(const json_t *resp) { return jnum(json_object_get(resp, "header"), "revision"); }

/* Put "/ravel/config/NS@KEY" = value; returns the revision. */
static long long cfg_set(const char *ns, const char *key, const char *value) {
  char k[256];
  snprintf(k, sizeof k, "/ravel/config/%s@%s", ns, key);
  char *kb = b64(k), *vb = b64(value);
  json_t *r = etcd_post("/v3/kv/put", json_pack("{s:s,s:s}", "key", kb, "value", vb));
  free(kb);
  free(vb);
  long long rev = rev_of(r);
  json_decref(r);
  return rev;
}

static long long cfg_del(const char *ns, const char *key) {
  char k[256];
  snprintf(k, sizeof k, "/ravel/config/%s@%s", ns, key);
  char *kb = b64(k);
  json_t *r = etcd_post("/v3/kv/deleterange", json_pack("{s:s}", "key", kb));
  free(kb);
  long long rev = rev_of(r);
  json_decref(r);
  return rev;
}

/* Keys under the lock's prefix ("/ravel/lock/NAME "): holder and waiters. */
static long long lock_keys(const char *name) {
  char p[256], e[256];
  snprintf(p, sizeof p, "/ravel/lock/%s ", name);
  snprintf(e, sizeof e, "/ravel/lock/%s!", name); /* ' ' + 1 */
  char *pb = b64(p), *eb = b64(e);
  json_t *r = etcd_post("/v3/kv/range", json_pack("{s:s,s:s,s:b}", "key", pb, "range_end", eb,
                                                 "count_only", 1));
  free(pb);
  free(eb);
  long long n = jnum(r, "count");
  json_decref(r);
  return n;
}

/* The value (description) of the lock key with the largest create_revision; malloc'd. */
static char *last_waiter_desc(const char *name) {
  char p[256], e[256];
  snprintf(p, sizeof p, "/ravel/lock/%s ", name);
  snprintf(e, sizeof e, "/ravel/lock/%s!", name);
  char *pb = b64(p), *eb = b64(e);
  json_t *r = etcd_post("/v3/kv/range", json_pack("{s:s,s:s,s:s,s:s}", "key", pb, "range_end", eb,
                                                 "sort_order", "DESCEND", "sort_target", "CREATE"));
  free(pb);
  free(eb);
  const json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
  assert_non_null(kv);
  const char *v = json_string_value(json_object_get(kv, "value"));
  assert_non_null(v);
  /* decode base64 */
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = calloc(1, strlen(v) + 1);
  assert_non_null(out);
  unsigned acc = 0;
  int bits = 0;
  size_t o = 0;
  for (const char *q = v; *q && *q != '='; q++) {
    acc = (acc << 6) | (unsigned)(strchr(a, *q) - a);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  json_decref(r);
  return out;
}

typedef struct keys_at {
  const char *lock;
  long long n;
} keys_at;

static bool have_keys(void *arg) {
  keys_at *k = arg;
  return lock_keys(k->lock) == k->n;
}

/* Remaining TTL of a lease (-1: gone). */
static long long lease_ttl(uint64_t id) {
  char ids[32];
  snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
  json_t *r = etcd_post("/v3/lease/timetolive", json_pack("{s:s}", "ID", ids));
  long long ttl = json_object_get(r, "TTL") ? jnum(r, "TTL") : 0;
  json_decref(r);
  return ttl;
}

static bool lease_gone(void *arg) { return lease_ttl(*(uint64_t *)arg) == -1; }

/* ---- the server ------------------------------------------------------------------------------ */

static bool find_etcd(void) {
  const char *path = getenv("PATH");
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
  for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char f[4200];
    snprintf(f, sizeof f, "%s/etcd", d);
    if (access(f, X_OK) == 0)
      return true;
  }
  return false;
}

static uint16_t free_port(void) {
  rv_listener *l;
  assert_int_equal(rv_tcp_listen(&l, "127.0.0.1", 0, 1), RV_OK);
  uint16_t p = rv_listener_port(l);
  rv_listener_close(l);
  return p;
}

static bool etcd_answers(void *arg) {
  (void)arg;
  int status;
  json_t *j = etcd_post_status("/v3/kv/range", json_pack("{s:s}", "key", "AA=="), &status);
  json_decref(j);
  return status == 200;
}

/* Start etcd on E's ports and data dir (again after a kill: the same member). */
static bool etcd_spawn(void) {
  char curl[64], purl[64], cluster[96], data[96], logf[96];
  snprintf(curl, sizeof curl, "http://127.0.0.1:%u", E.port);
  snprintf(purl, sizeof purl, "http://127.0.0.1:%u", E.peer);
  snprintf(cluster, sizeof cluster, "t=%s", purl);
  snprintf(data, sizeof data, "%s/data", E.dir);
  snprintf(logf, sizeof logf, "%s/etcd.log", E.dir);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execlp("etcd", "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", curl,
           "--advertise-client-urls", curl, "--listen-peer-urls", purl,
           "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster,
           "--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "warn",
           (char *)NULL);
    _exit(127);
  }
  E.pid = pid;
  if (rvt_await(etcd_answers, NULL))
    return true;
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  E.pid = 0;
  return false;
}

static bool etcd_start(void) {
  snprintf(E.dir, sizeof E.dir, "/tmp/ravel-etcd-XXXXXX");
  assert_non_null(mkdtemp(E.dir));
  E.port = free_port();
  E.peer = free_port();
  snprintf(E.url, sizeof E.url, "http://127.0.0.1:%u", E.port);
  return etcd_spawn();
}

/* kill -9 etcd (it keeps its data, leases included). */
static void etcd_kill(void) {
  kill(E.pid, SIGKILL);
  waitpid(E.pid, NULL, 0);
  E.pid = 0;
}

static int group_setup(void **state) {
  E.have_binary = find_etcd();
  if (!E.have_binary)
    return 0;
  for (int attempt = 0; attempt < 3 && !E.up; attempt++) /* a port may be taken meanwhile */
    E.up = etcd_start();
  return E.up ? 0 : -1;
}

static int group_teardown(void **state) {
  if (E.pid > 0) {
    kill(E.pid, SIGTERM);
    waitpid(E.pid, NULL, 0);
  }
  if (E.dir[0]) {
    char cmdline[128];
    snprintf(cmdline, sizeof cmdline, "rm -rf %s", E.dir);
    if (system(cmdline) != 0)
      return -1;
  }
  return 0;
}

#define NEED_ETCD()                                                                               \
  do {                                                                                            \
    if (!E.have_binary) {                                                                         \
      print_message("SKIP: the etcd binary is not installed (apt-get install etcd-server)\n");     \
      skip();                                                                                     \
    }                                                                                             \
  } while (0)

static rv_coord_client *open_client(void) {
  rv_coord_client_opts o = {.etcd_url = E.url, .service = "billing", .replica = "1"};
  rv_coord_client *c = NULL;
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  assert_int_equal(rv_coord_client_open(&c, ctx, &o), RV_OK);
  rv_ctx_free(ctx);
  return c;
}

/* ---- sessions --------------------------------------------------------------------------------- */

static void test_keepalive_outlives_ttl(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *ss;
  assert_int_equal(rv_session_open(NULL, c, TTL_MS, &ss), RV_OK);
  assert_int_equal(rv_sleep(NULL, 4 * TTL_MS * RV_NS_PER_MS), 0);
  assert_false(rv_session_lost(ss));
  assert_int_equal(rv_ctx_err(rv_session_ctx(ss)), 0);
  assert_true(lease_ttl(rv_session_id(ss)) >= 0); /* etcd still has the lease (-1: gone) */
  rv_coord_stats st;
  rv_coord_client_stats(c, &st);
  assert_true(st.keepalives >= 8); /* every ttl/3 */
  assert_int_equal(st.session_losses, 0);
  uint64_t id = rv_session_id(ss);
  rv_session_close(ss);
  assert_int_equal(lease_ttl(id), -1); /* revoked */
  rv_coord_client_close(c);
}

static bool ctx_done(void *arg) { return rv_ctx_err(arg) != RV_OK; }

typedef struct lost_note {
  int calls;
  char reason[256];
} lost_note;

/* Runs on the keepalive thread after the session ctx is cancelled: publish with release. */
static void on_lost(void *arg, const char *reason) {
  lost_note *n = arg;
  snprintf(n->reason, sizeof n->reason, "%s", reason);
  __atomic_fetch_add(&n->calls, 1, __ATOMIC_RELEASE);
}

static bool lost_called(void *arg) {
  return __atomic_load_n(&((lost_note *)arg)->calls, __ATOMIC_ACQUIRE) > 0;
}

static void test_session_lost_when_lease_revoked(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *ss;
  lost_note note = {0};
  assert_int_equal(rv_session_open_cb(NULL, c, TTL_MS, on_lost, &note, &ss), RV_OK);
  char ids[32];
  snprintf(ids, sizeof ids, "%llu", (unsigned long long)rv_session_id(ss));
  json_decref(etcd_post("/v3/lease/revoke", json_pack("{s:s}", "ID", ids)));
  assert_true(rvt_await(ctx_done, rv_session_ctx(ss)));
  assert_true(rv_session_lost(ss));
  assert_non_null(strstr(rv_ctx_reason(rv_session_ctx(ss)), "session lost"));
  assert_true(rvt_await(lost_called, &note));
  assert_int_equal(__atomic_load_n(&note.calls, __ATOMIC_ACQUIRE), 1);
  assert_non_null(strstr(note.reason, "lease"));
  /* A lost session acquires nothing. */
  rv_dlock *h = NULL;
  assert_int_equal(rv_dlock_acquire(NULL, ss, "lost-lock", NULL, &h), RV_ENOTFOUND);
  assert_int_equal(lock_keys("lost-lock"), 0);
  rv_session_close(ss);
  rv_coord_client_close(c);
}

static void test_session_lost_when_keepalive_stops(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *ss;
  assert_int_equal(rv_session_open(NULL, c, TTL_MS, &ss), RV_OK);
  rv_session_test_pause_keepalive(ss, true);
  int64_t t0 = rv_now_ns();
  assert_true(rvt_await(ctx_done, rv_session_ctx(ss)));
  assert_true(rv_now_ns() - t0 <= TTL_MS * RV_NS_PER_MS + LOST_BOUND_NS);
  assert_non_null(strstr(rv_ctx_reason(rv_session_ctx(ss)), "session lost"));
  uint64_t id = rv_session_id(ss);
  assert_true(rvt_await(lease_gone, &id)); /* etcd agrees, soon after */
  rv_session_close(ss);
  rv_coord_client_close(c);
}

/* ---- locks ------------------------------------------------------------------------------------ */

typedef struct locker {
  rv_session *s;
  const char *lock;
  const char *task;
  rv_ctx *ctx;
  int rc;
  uint64_t token;
  int order;
  int *next_order;
} locker;

static void locker_main(void *arg) {
  locker *l = arg;
  if (l->task)
    rv_thread_set_task("%s", l->task);
  rv_dlock *h = NULL;
  l->rc = rv_dlock_acquire(l->ctx, l->s, l->lock, NULL, &h);
  if (l->rc == RV_OK) {
    l->token = rv_dlock_token(h);
    l->order = __atomic_fetch_add(l->next_order, 1, __ATOMIC_ACQ_REL);
    assert_int_equal(rv_dlock_release(h), RV_OK);
  }
}

/* The client counted at least n waits: an acquire found its predecessor and waits. */
typedef struct waits_at {
  rv_coord_client *c;
  uint64_t n;
} waits_at;

static bool have_waits(void *arg) {
  waits_at *w = arg;
  rv_coord_stats st;
  rv_coord_client_stats(w->c, &st);
  return st.waits >= w->n;
}

static void test_fifo_between_threads(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *ss;
  assert_int_equal(rv_session_open(NULL, c, 10000, &ss), RV_OK);
  rv_dlock *h;
  assert_int_equal(rv_dlock_acquire(NULL, ss, "fifo-42", "main holds it", &h), RV_OK);
  uint64_t t0 = rv_dlock_token(h);
  assert_string_equal(rv_dlock_name(h), "fifo-42");
  int next = 0;
  locker l[2] = {{.s = ss, .lock = "fifo-42", .next_order = &next},
                 {.s = ss, .lock = "fifo-42", .next_order = &next}};
  rv_thread *t[2];
  for (int i = 0; i < 2; i++) {
    assert_int_equal(rv_thread_start(&t[i], i ? "handler-2" : "handler-1", "test", locker_main, &l[i]), RV_OK);
    keys_at ka = {"fifo-42", i + 2};
    assert_true(rvt_await(have_keys, &ka)); /* queued in this order */
    /* and waiting: its key alone does not mean it has looked for its predecessor yet (a
     * release before that would let it through without a wait; seen under TSan in CI) */
    waits_at wa = {c, (uint64_t)i + 1};
    assert_true(rvt_await(have_waits, &wa));
  }
  assert_int_equal(rv_dlock_release(h), RV_OK);
  for (int i = 0; i < 2; i++)
    rv_thread_join(t[i]);
  assert_int_equal(l[0].rc, RV_OK);
  assert_int_equal(l[1].rc, RV_OK);
  assert_int_equal(l[0].order, 0);
  assert_int_equal(l[1].order, 1);
  assert_true(l[0].token > t0 && l[1].token > l[0].token);
  assert_int_equal(lock_keys("fifo-42"), 0);
  rv_coord_stats st;
  rv_coord_client_stats(c, &st);
  assert_int_equal(st.acquisitions, 3);
  assert_int_equal(st.waits, 2);
  rv_session_close(ss);
  rv_coord_client_close(c);
}

static void test_cancel_withdraws_wait(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *holder, *ss;
  assert_int_equal(rv_session_open(NULL, c, 10000, &holder), RV_OK);
  assert_int_equal(rv_session_open(NULL, c, 10000, &ss), RV_OK);
  rv_dlock *h;
  assert_int_equal(rv_dlock_acquire(NULL, holder, "cancel-42", NULL, &h), RV_OK);
  int next = 0;
  locker l = {.s = ss, .lock = "cancel-42", .task = "msg 0a1b resource=acct-42",
              .ctx = rv_ctx_new(NULL), .next_order = &next};
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "handler-3", "handler", locker_main, &l), RV_OK);
  keys_at ka = {"cancel-42", 2};
  assert_true(rvt_await(have_keys, &ka));
  /* The waiter key's value is the description: the thread and its task. */
  char *d = last_waiter_desc("cancel-42");
  char want[128];
  snprintf(want, sizeof want, "pid %d thread %llu handler-3: msg 0a1b resource=acct-42", rv_getpid(),
           (unsigned long long)rv_thread_id(t));
  assert_string_equal(d, want);
  free(d);
  /* While it waits for its predecessor, the registry shows the external wait "dlock NAME". */
  assert_true(rvt_await_wait(t, RV_WAIT_EXTERNAL));
  rv_snapshot *snap = rv_snapshot_take(rv_registry_current());
  char seen[RV_WAIT_WHAT_MAX] = "";
  for (size_t i = 0; i < snap->nthreads; i++)
    if (snap->threads[i].id == rv_thread_id(t))
      snprintf(seen, sizeof seen, "%s", snap->threads[i].wait.what);
  rv_snapshot_free(snap);
  assert_string_equal(seen, "dlock cancel-42");

  int64_t t0 = rv_now_ns();
  rv_ctx_cancel(l.ctx, "test cancels");
  rv_thread_join(t);
  /* Promptly: the ctx watch wakes the transfer (no waiting for a poll slice or timeout). */
  assert_true(rv_now_ns() - t0 < 500 * RV_NS_PER_MS);
  assert_int_equal(l.rc, RV_ECANCELED);
  assert_int_equal(lock_keys("cancel-42"), 1); /* no waiter key left: only the holder's */
  rv_coord_stats st;
  rv_coord_client_stats(c, &st);
  assert_int_equal(st.cancels, 1);
  rv_ctx_free(l.ctx);
  assert_int_equal(rv_dlock_release(h), RV_OK);
  assert_int_equal(lock_keys("cancel-42"), 0);
  rv_session_close(ss);
  rv_session_close(holder);
  rv_coord_client_close(c);
}

static void test_deadline_withdraws_wait(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *ss;
  assert_int_equal(rv_session_open(NULL, c, 10000, &ss), RV_OK);
  rv_dlock *h, *h2 = NULL;
  assert_int_equal(rv_dlock_acquire(NULL, ss, "deadline-7", NULL, &h), RV_OK);
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, 200 * RV_NS_PER_MS);
  int64_t t0 = rv_now_ns();
  /* The same session waits behind itself (locks are not reentrant). */
  assert_int_equal(rv_dlock_acquire(ctx, ss, "deadline-7", NULL, &h2), RV_EDEADLINE);
  assert_true(rv_now_ns() - t0 >= 200 * RV_NS_PER_MS);
  assert_true(rv_now_ns() - t0 < RVT_BOUND_NS);
  assert_null(h2);
  rv_ctx_free(ctx);
  assert_int_equal(lock_keys("deadline-7"), 1);
  uint64_t t1 = rv_dlock_token(h);
  assert_int_equal(rv_dlock_release(h), RV_OK);
  assert_int_equal(rv_dlock_acquire(NULL, ss, "deadline-7", NULL, &h2), RV_OK);
  assert_true(rv_dlock_token(h2) > t1);
  assert_int_equal(rv_dlock_release(h2), RV_OK);
  rv_session_close(ss);
  rv_coord_client_close(c);
}

static void test_stale_release_refused(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *a, *b;
  assert_int_equal(rv_session_open(NULL, c, 10000, &a), RV_OK);
  assert_int_equal(rv_session_open(NULL, c, 10000, &b), RV_OK);
  rv_dlock *ha, *hb;
  assert_int_equal(rv_dlock_acquire(NULL, a, "stale-1", NULL, &ha), RV_OK);
  /* a's key vanishes (as when its lease expires), b takes the lock. */
  char p[] = "/ravel/lock/stale-1 ", e[] = "/ravel/lock/stale-1!";
  char *pb = b64(p), *eb = b64(e);
  json_decref(etcd_post("/v3/kv/deleterange", json_pack("{s:s,s:s}", "key", pb, "range_end", eb)));
  free(pb);
  free(eb);
  assert_int_equal(rv_dlock_acquire(NULL, b, "stale-1", NULL, &hb), RV_OK);
  assert_true(rv_dlock_token(hb) > rv_dlock_token(ha));
  /* a's late release must not free b's lock. */
  assert_int_equal(rv_dlock_release(ha), RV_EINVAL);
  assert_non_null(strstr(rv_coord_last_error(), "NOTOWNER"));
  assert_int_equal(lock_keys("stale-1"), 1);
  assert_int_equal(rv_dlock_release(hb), RV_OK);
  assert_int_equal(lock_keys("stale-1"), 0);
  rv_session_close(b);
  rv_session_close(a);
  rv_coord_client_close(c);
}

/* A release etcd never answered (it was down) is sent again after the next keepalive
 * that gets through: the lock does not stay held for the life of the session. */
static bool release_retried(void *arg) {
  rv_coord_stats st;
  rv_coord_client_stats(arg, &st);
  return st.releases_retried == 1;
}

static void test_unanswered_release_is_sent_again(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *s;
  assert_int_equal(rv_session_open(NULL, c, 10000, &s), RV_OK);
  rv_dlock *h;
  assert_int_equal(rv_dlock_acquire(NULL, s, "lost-release-1", NULL, &h), RV_OK);
  assert_int_equal(lock_keys("lost-release-1"), 1);
  etcd_kill();
  assert_int_not_equal(rv_dlock_release(h), RV_OK); /* nobody answers */
  assert_true(etcd_spawn());                         /* the same member, its lease kept */
  assert_int_equal(lock_keys("lost-release-1"), 1);  /* still held on etcd */
  /* The client counts the retry once etcd answered it: wait for the count, then look. */
  assert_true(rvt_await(release_retried, c));
  assert_int_equal(lock_keys("lost-release-1"), 0);
  assert_false(rv_session_lost(s));
  /* Another session gets the lock while this one lives on. */
  rv_session *b;
  assert_int_equal(rv_session_open(NULL, c, 10000, &b), RV_OK);
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  assert_int_equal(rv_dlock_acquire(ctx, b, "lost-release-1", NULL, &h), RV_OK);
  rv_ctx_free(ctx);
  assert_int_equal(rv_dlock_release(h), RV_OK);
  rv_session_close(b);
  rv_session_close(s);
  rv_coord_client_close(c);
}

/* A wait that ended because etcd went away leaves its key queued on etcd; the key is
 * deleted once etcd is back, so the lock does not pass to a waiter that has gone. */
static void test_unanswered_withdrawal_is_sent_again(void **state) {
  NEED_ETCD();
  rv_coord_client *ca = open_client(), *cb = open_client();
  rv_session *a, *b;
  assert_int_equal(rv_session_open(NULL, ca, 10000, &a), RV_OK);
  assert_int_equal(rv_session_open(NULL, cb, 10000, &b), RV_OK);
  rv_dlock *ha;
  assert_int_equal(rv_dlock_acquire(NULL, a, "lost-withdraw-1", NULL, &ha), RV_OK);
  int next = 0;
  locker lb = {.s = b, .lock = "lost-withdraw-1", .ctx = NULL, .next_order = &next};
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "waiter", "test", locker_main, &lb), RV_OK);
  assert_true(rvt_await(have_waits, &(waits_at){cb, 1}));
  assert_int_equal(lock_keys("lost-withdraw-1"), 2);
  etcd_kill();
  rv_thread_join(t); /* its wait failed with etcd gone; its withdrawal went unanswered */
  assert_int_not_equal(lb.rc, RV_OK);
  assert_true(etcd_spawn());
  assert_true(rvt_await(release_retried, cb));
  assert_int_equal(lock_keys("lost-withdraw-1"), 1); /* a's, still held */
  assert_false(rv_session_lost(b));
  assert_int_equal(rv_dlock_release(ha), RV_OK);
  assert_int_equal(lock_keys("lost-withdraw-1"), 0);
  rv_session_close(b);
  rv_session_close(a);
  rv_coord_client_close(cb);
  rv_coord_client_close(ca);
}

/* etcd 3.4's lock granted a waiter whose lease had expired; this one must not. */
static void test_waiter_with_expired_lease_is_not_granted(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  rv_session *holder, *ss;
  assert_int_equal(rv_session_open(NULL, c, 10000, &holder), RV_OK);
  assert_int_equal(rv_session_open(NULL, c, TTL_MS, &ss), RV_OK);
  rv_dlock *h;
  assert_int_equal(rv_dlock_acquire(NULL, holder, "bug34", NULL, &h), RV_OK);
  int next = 0;
  locker l = {.s = ss, .lock = "bug34", .next_order = &next};
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "handler-4", "handler", locker_main, &l), RV_OK);
  keys_at ka = {"bug34", 2};
  assert_true(rvt_await(have_keys, &ka));
  rv_session_test_pause_keepalive(ss, true);
  uint64_t id = rv_session_id(ss);
  assert_true(rvt_await(lease_gone, &id)); /* the waiter's key went with its lease */
  assert_int_equal(rv_dlock_release(h), RV_OK);
  rv_thread_join(t);
  assert_int_equal(l.rc, RV_ENOTFOUND);
  assert_int_equal(lock_keys("bug34"), 0);
  rv_session_close(ss);
  rv_session_close(holder);
  rv_coord_client_close(c);
}

/* ---- config ----------------------------------------------------------------------------------- */

static void test_config_get(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  cfg_set("platform", "get.timeout_ms", "900");
  long long rev = cfg_set("svc/getsvc", "get.timeout_ms", "500");
  cfg_set("svc/getsvc/2", "get.other", "r2");
  char *v;
  uint64_t mod;
  assert_int_equal(rv_config_get(NULL, c, "getsvc", NULL, "get.timeout_ms", &v, &mod), RV_OK);
  assert_string_equal(v, "500");
  assert_int_equal(mod, (uint64_t)rev);
  free(v);
  assert_int_equal(rv_config_get(NULL, c, "getsvc", "1", "get.timeout_ms", &v, NULL), RV_OK);
  assert_string_equal(v, "500");
  free(v);
  assert_int_equal(rv_config_get(NULL, c, "otherpay", NULL, "get.timeout_ms", &v, NULL), RV_OK);
  assert_string_equal(v, "900");
  free(v);
  assert_int_equal(rv_config_get(NULL, c, "getsvc", "2", "get.other", &v, NULL), RV_OK);
  assert_string_equal(v, "r2");
  free(v);
  assert_int_equal(rv_config_get(NULL, c, "getsvc", "1", "get.other", &v, NULL), RV_ENOTFOUND);
  assert_null(v);
  assert_int_equal(rv_config_get(NULL, c, "getsvc", "1", "nope", &v, NULL), RV_ENOTFOUND);
  uint64_t now;
  assert_int_equal(rv_config_revision(NULL, c, &now), RV_OK);
  assert_true(now >= (uint64_t)rev);
  rv_coord_client_close(c);
}

/* Writes through the client, read back through it (etcd keeps no author or reason). */
static void test_config_write(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  check_config_write(c, "cwsvc");
  rv_coord_client_close(c);
}

#define EVENTS_MAX 16

typedef struct evlog {
  rv_rawmu mu;
  int n;
  uint64_t rev[EVENTS_MAX];
  char key[EVENTS_MAX][32], old_v[EVENTS_MAX][32], new_v[EVENTS_MAX][32];
} evlog;

static void on_event(void *arg, const rv_config_event *ev) {
  evlog *l = arg;
  rv_rawmu_lock(&l->mu);
  if (l->n < EVENTS_MAX) {
    l->rev[l->n] = ev->revision;
    snprintf(l->key[l->n], 32, "%s", ev->resync ? "(resync)" : ev->key);
    snprintf(l->old_v[l->n], 32, "%s", ev->old_value ? ev->old_value : "(nil)");
    snprintf(l->new_v[l->n], 32, "%s", ev->new_value ? ev->new_value : "(nil)");
  }
  l->n++;
  rv_rawmu_unlock(&l->mu);
}

typedef struct evwait {
  evlog *l;
  int n;
} evwait;

static bool have_events(void *arg) {
  evwait *w = arg;
  rv_rawmu_lock(&w->l->mu);
  bool ok = w->l->n >= w->n;
  rv_rawmu_unlock(&w->l->mu);
  return ok;
}

static bool watch_at(void *arg) {
  void **a = arg;
  return rv_config_watch_revision(a[0]) >= *(uint64_t *)a[1];
}

static void test_watch_effective_changes_and_resume(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  cfg_set("svc/watchsvc", "w.timeout_ms", "500");
  evlog l = {.n = 0};
  rv_rawmu_init(&l.mu);
  rv_config_watcher *w;
  assert_int_equal(rv_config_watch(c, "watchsvc", NULL, "w.", RV_CONFIG_SINCE_NOW, on_event, &l, &w), RV_OK);
  cfg_set("platform", "w.timeout_ms", "900");     /* overridden by svc/watchsvc: no event */
  cfg_set("svc/watchsvc", "w.timeout_ms", "500"); /* same value: no event */
  cfg_set("svc/othersvc", "w.timeout_ms", "1");   /* another service: no event */
  cfg_set("svc/watchsvc", "x.other", "1");        /* outside the prefix: no event */
  long long r1 = cfg_set("svc/watchsvc", "w.timeout_ms", "700");
  evwait ew = {&l, 1};
  assert_true(rvt_await(have_events, &ew));

  /* Drop the stream; writes land while it reconnects; nothing missed or repeated. */
  rv_config_watch_test_drop(w);
  long long r2 = cfg_set("platform", "w.upstream.url", "https://a");
  rv_config_watch_test_drop(w);
  long long r3 = cfg_del("svc/watchsvc", "w.timeout_ms"); /* falls back to platform's 900 */
  ew.n = 3;
  assert_true(rvt_await(have_events, &ew));
  uint64_t want = (uint64_t)r3;
  void *wa[2] = {w, &want};
  assert_true(rvt_await(watch_at, wa));
  rv_config_watch_stop(w);
  assert_int_equal(l.n, 3);
  assert_int_equal(l.rev[0], (uint64_t)r1);
  assert_string_equal(l.key[0], "w.timeout_ms");
  assert_string_equal(l.old_v[0], "500");
  assert_string_equal(l.new_v[0], "700");
  assert_int_equal(l.rev[1], (uint64_t)r2);
  assert_string_equal(l.key[1], "w.upstream.url");
  assert_string_equal(l.old_v[1], "(nil)");
  assert_string_equal(l.new_v[1], "https://a");
  assert_int_equal(l.rev[2], (uint64_t)r3);
  assert_string_equal(l.old_v[2], "700");
  assert_string_equal(l.new_v[2], "900");
  rv_coord_stats st;
  rv_coord_client_stats(c, &st);
  assert_int_equal(st.watch_events, 3);
  assert_true(st.watch_reconnects >= 1);
  rv_rawmu_destroy(&l.mu);
  rv_coord_client_close(c);
}

static void test_watch_resyncs_when_compacted(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  long long old = cfg_set("svc/compsvc", "k.a", "1");
  cfg_set("svc/compsvc", "k.a", "2");
  long long now = cfg_set("svc/compsvc", "k.b", "3");
  json_decref(etcd_post("/v3/kv/compaction", json_pack("{s:I,s:b}", "revision", (json_int_t)now,
                                                      "physical", 1)));
  evlog l = {.n = 0};
  rv_rawmu_init(&l.mu);
  rv_config_watcher *w;
  /* Watching from before the compaction: one resync event, then live events. */
  assert_int_equal(rv_config_watch(c, "compsvc", NULL, "k.", (uint64_t)old, on_event, &l, &w), RV_OK);
  evwait ew = {&l, 1};
  assert_true(rvt_await(have_events, &ew));
  long long r = cfg_set("svc/compsvc", "k.a", "4");
  ew.n = 2;
  assert_true(rvt_await(have_events, &ew));
  rv_config_watch_stop(w);
  assert_int_equal(l.n, 2);
  assert_string_equal(l.key[0], "(resync)");
  assert_true(l.rev[0] >= (uint64_t)now);
  assert_int_equal(l.rev[1], (uint64_t)r);
  assert_string_equal(l.old_v[1], "2");
  assert_string_equal(l.new_v[1], "4");
  rv_coord_stats st;
  rv_coord_client_stats(c, &st);
  assert_int_equal(st.watch_resyncs, 1);
  rv_rawmu_destroy(&l.mu);
  rv_coord_client_close(c);
}

static void test_raw_watch_sees_every_write(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  evlog l = {.n = 0};
  rv_rawmu_init(&l.mu);
  rv_config_watch_opts o = {.raw = true, .raw_ns = {"platform", "svc/rawsvc"}, .prefix = "raw."};
  rv_config_watcher *w;
  assert_int_equal(rv_config_watch_ex(c, "rawsvc", NULL, &o, RV_CONFIG_SINCE_NOW, on_event, &l, &w), RV_OK);
  long long r1 = cfg_set("svc/rawsvc", "raw.t", "5");
  long long r2 = cfg_set("svc/rawsvc", "raw.t", "5"); /* same value: still an event */
  long long r3 = cfg_set("platform", "raw.t", "9");   /* overridden: still an event */
  cfg_set("svc/rawsvc/1", "raw.t", "7");              /* not a watched namespace */
  evwait ew = {&l, 3};
  assert_true(rvt_await(have_events, &ew));
  uint64_t want = (uint64_t)r3;
  void *wa[2] = {w, &want};
  assert_true(rvt_await(watch_at, wa));
  rv_config_watch_stop(w);
  assert_int_equal(l.n, 3);
  assert_int_equal(l.rev[0], (uint64_t)r1);
  assert_string_equal(l.old_v[0], "(nil)");
  assert_int_equal(l.rev[1], (uint64_t)r2);
  assert_string_equal(l.old_v[1], "5");
  assert_string_equal(l.new_v[1], "5");
  assert_int_equal(l.rev[2], (uint64_t)r3);
  assert_string_equal(l.new_v[2], "9");
  rv_rawmu_destroy(&l.mu);
  rv_coord_client_close(c);
}

typedef struct built {
  char timeout[32];
} built;

static int build_obj(void *arg, const char *const *values, void **obj) {
  built *b = calloc(1, sizeof *b);
  if (!b)
    return -1;
  snprintf(b->timeout, sizeof b->timeout, "%s", values[0] ? values[0] : "(nil)");
  *obj = b;
  return 0;
}

static void destroy_obj(void *arg, void *obj) { free(obj); }

static bool cache_at(void *arg) {
  void **a = arg;
  return rv_config_cache_revision(a[0]) >= *(uint64_t *)a[1];
}

static void test_cache_rebuilds_only_on_effective_change(void **state) {
  NEED_ETCD();
  rv_coord_client *c = open_client();
  cfg_set("svc/cachesvc", "c.timeout_ms", "500");
  const char *keys[] = {"c.timeout_ms"};
  rv_config_cache_opts o = {.service = "cachesvc", .keys = keys, .nkeys = 1,
                            .lock_name = "client-cache", .build = build_obj,
                            .destroy = destroy_obj};
  rv_config_cache *cc;
  assert_int_equal(rv_config_cache_open(NULL, c, &o, &cc), RV_OK);
  cfg_set("platform", "c.timeout_ms", "900");     /* overridden: no rebuild */
  cfg_set("svc/cachesvc", "c.timeout_ms", "500"); /* same value: no rebuild */
  uint64_t r = (uint64_t)cfg_set("svc/cachesvc", "c.unrelated", "x");
  void *a[2] = {cc, &r};
  assert_true(rvt_await(cache_at, a));
  rv_config_cache_stats cs;
  rv_config_cache_stats_get(cc, &cs);
  assert_int_equal(cs.builds, 1);
  r = (uint64_t)cfg_set("svc/cachesvc", "c.timeout_ms", "750");
  assert_true(rvt_await(cache_at, a));
  void *obj;
  uint64_t tok;
  rv_config_cache_obtain(cc, &obj, &tok);
  assert_string_equal(((built *)obj)->timeout, "750");
  rv_config_cache_release(cc, tok);
  rv_config_cache_stats_get(cc, &cs);
  assert_int_equal(cs.builds, 2);
  assert_int_equal(cs.rebuilds, 1);
  rv_config_cache_close(cc);
  rv_coord_client_close(c);
}

static void test_open_fails_without_server(void **state) {
  NEED_ETCD();
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u", free_port());
  rv_coord_client_opts o = {.etcd_url = url};
  rv_coord_client *c = NULL;
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  assert_int_equal(rv_coord_client_open(&c, ctx, &o), RV_ECONNREFUSED);
  rv_ctx_free(ctx);
}

static void test_fails_over_to_the_next_endpoint(void **state) {
  NEED_ETCD();
  char urls[160];
  snprintf(urls, sizeof urls, "http://127.0.0.1:%u/, %s", free_port(), E.url);
  rv_coord_client_opts o = {.etcd_url = urls};
  rv_coord_client *c = NULL;
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  assert_int_equal(rv_coord_client_open(&c, ctx, &o), RV_OK);
  long long rev = cfg_set("platform", "fo.key", "v1");
  char *v;
  uint64_t mod;
  assert_int_equal(rv_config_get(ctx, c, "fosvc", NULL, "fo.key", &v, &mod), RV_OK);
  assert_string_equal(v, "v1");
  assert_int_equal(mod, (uint64_t)rev);
  free(v);
  rv_ctx_free(ctx);
  rv_coord_client_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keepalive_outlives_ttl),
      cmocka_unit_test(test_session_lost_when_lease_revoked),
      cmocka_unit_test(test_session_lost_when_keepalive_stops),
      cmocka_unit_test(test_fifo_between_threads),
      cmocka_unit_test(test_cancel_withdraws_wait),
      cmocka_unit_test(test_deadline_withdraws_wait),
      cmocka_unit_test(test_stale_release_refused),
      cmocka_unit_test(test_unanswered_release_is_sent_again),
      cmocka_unit_test(test_unanswered_withdrawal_is_sent_again),
      cmocka_unit_test(test_waiter_with_expired_lease_is_not_granted),
      cmocka_unit_test(test_config_get),
      cmocka_unit_test(test_config_write),
      cmocka_unit_test(test_watch_effective_changes_and_resume),
      cmocka_unit_test(test_watch_resyncs_when_compacted),
      cmocka_unit_test(test_raw_watch_sees_every_write),
      cmocka_unit_test(test_cache_rebuilds_only_on_effective_change),
      cmocka_unit_test(test_open_fails_without_server),
      cmocka_unit_test(test_fails_over_to_the_next_endpoint),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
