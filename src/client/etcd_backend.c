/*
 * The etcd backend of the coord client: the session, lock and config API of
 * coord_client.h, spoken to etcd's v3 JSON gateway (grpc-gateway, etcd 3.4+)
 * over HTTP/1.1 with libcurl.  Selected by rv_coord_client_opts.etcd_url;
 * the public functions dispatch here (coord_internal.h).  Facts about the
 * gateway: ../shared/reference/etcd-gateway.md (bytes are base64, int64s come
 * back as strings, zero values are left out, streams are newline-delimited).
 *
 * Transfers: every request is one easy handle driven by its own multi handle
 * (pairs are pooled, so connections are reused), polled in slices of at most
 * EC_POLL_SLICE_MS and woken at once through curl_multi_wakeup by an rv_ctx
 * watch when the caller's context is cancelled; the slice also bounds the
 * reaction to a deadline.  Aborting a transfer closes its connection, which
 * ends the server-side watch.
 *
 * Sessions are leases: LeaseGrant(TTL rounded up to seconds; the server may
 * raise it to its minimum, ~2 s by default), then a "etcd-keepalive"
 * rv_thread sends a LeaseKeepAlive every ttl/3 (one message per POST).  A
 * keepalive answer without TTL means the lease is gone; the session is also
 * lost when no keepalive succeeded within the TTL since the send time of the
 * last good one.  Loss cancels the session context and runs on_lost once.
 * rv_session_close revokes the lease.  rv_session_id is the lease ID.
 *
 * Locks follow etcd's mutex recipe, done by the client (not /v3/lock/lock,
 * whose 3.4 implementation returns success to a waiter whose lease expired,
 * and whose key is per lease, so two threads of one session would share it):
 * each acquire puts a key of its own, "/ravel/lock/NAME LEASEHEX-SEQ"
 * (a space cannot appear in a lock name), attached to the session's lease,
 * with the description as its value.  Its create_revision orders the waiters
 * (FIFO) and is the fencing token.  The acquire then loops: find the key under
 * the lock's prefix with the largest create_revision below its own; if there
 * is none, check that its own key still exists (the 3.4 bug: never grant on a
 * deleted key; a missing key means the lease, i.e. the session, is gone) and
 * it holds the lock; otherwise watch that predecessor until it is deleted.
 * Each waiter watches only its predecessor (no herd).  When the caller's ctx
 * ends, or the session is lost, the wait is withdrawn: the transfer is
 * aborted and the waiter's own key deleted.  Release is a txn that deletes
 * the key only if its create_revision still equals the token, so a stale
 * release never frees someone else's lock (it fails with NOTOWNER, RV_EINVAL).
 * A release or a withdrawal that etcd does not answer leaves its key on the
 * session's pending list; the keepalive thread deletes it after each keepalive
 * that gets through (ec_pending).
 *
 * Config layers are key prefixes: "/ravel/config/NS@KEY" for NS "platform",
 * "svc/S" or "svc/S/R" ('@' appears in no namespace nor key, so the split is
 * unambiguous; a prefix "/ravel/config/svc/S@" does not cover S's replicas).
 * rv_config_get reads the three layers in one txn (one snapshot) and returns
 * the most specific.  A watch ("etcd-watch" thread) keeps a copy of the
 * relevant layers, loaded at since_rev, then streams /v3/watch from
 * since_rev + 1 over the whole /ravel/config/ prefix, applies each event to
 * its copy and calls back only when the effective value changed (an
 * overridden or same-value write gives no callback).  After a dropped stream
 * it resumes from the last applied revision; when that revision was
 * compacted it reloads at the current revision and delivers one resync
 * event.  A raw watch calls back on every write to its namespaces.
 * rv_config_cache works unchanged on top.
 *
 * Where the semantics differ from coord's:
 *  - no introspection: coord's LOCK.INFO/SESSION.LIST are not available; the
 *    description is stored as the waiter key's value (readable with a range
 *    of "/ravel/lock/NAME "), the session's identity (service, replica, host,
 *    pid, admin URL) is not sent anywhere, and no service is required;
 *  - TTLs have a granularity of one second and a server minimum (~2 s);
 *  - no lock-delay, and no lock cancellation by others (coord's LOCK.CANCEL);
 *  - tokens are etcd revisions, shared with every other write in the
 *    cluster: strictly increasing across the grants of one lock, but not
 *    consecutive;
 *  - config writes, dry runs, authors/reasons and the audit log are coord's
 *    only: the backend reads what others put under /ravel/config/ (etcdctl
 *    put, or the gateway), and a config revision is the etcd revision;
 *  - lock names may not contain a space (coord forbids it too) and the wait
 *    counts in the stats count acquires that found a predecessor;
 *  - lock_conns_max does not apply: each blocked acquire holds one HTTP
 *    connection of its own.
 */
#include "client/coord_internal.h"
#include "core/config.h"

#include "obs/registry.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EC_URL_MAX 512
#define EC_URLS_MAX 8
#define EC_IDLE_MAX 8
#define EC_POLL_SLICE_MS 100
#define EC_CONNECT_TIMEOUT_MS 5000
#define EC_RESPONSE_MAX (64 * 1024 * 1024)
#define EC_LOCK_PREFIX "/ravel/lock/"
#define EC_CFG_PREFIX "/ravel/config/"
#define EC_KEY_MAX 1024
#define EC_NUM_MAX 32
#define EC_WATCH_BACKOFF_NS (100 * RV_NS_PER_MS)
#define EC_LOCK_NAME_MAX 256

typedef struct ec_xfer {
  CURLM *m;
  CURL *e;
} ec_xfer;

struct ec_client {
  char urls[EC_URLS_MAX][EC_URL_MAX]; /* endpoints, without a trailing '/' */
  int nurls;
  int cur; /* __atomic: the endpoint that answered last */
  rv_rawmu mu;          /* guards idle, nidle */
  ec_xfer *idle[EC_IDLE_MAX];
  int nidle;
  uint64_t seq; /* __atomic: waiter key suffixes */
};

/* ---- base64 (standard alphabet, padded: the gateway rejects anything else) ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_enc(const void *data, size_t n) {
  const unsigned char *p = data;
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n)
      v |= p[i + 2];
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? B64[v & 63] : '=';
  }
  out[o] = 0;
  return out;
}

static int b64_val(char ch) {
  const char *q = ch ? strchr(B64, ch) : NULL;
  return q ? (int)(q - B64) : -1;
}

/* Decode into a NUL-terminated malloc'd buffer; NULL on bad input. */
static char *b64_dec(const char *s, size_t *len) {
  size_t n = strlen(s);
  char *out = malloc(n / 4 * 3 + 4);
  if (!out)
    return NULL;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '=')
      break;
    int v = b64_val(s[i]);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[o] = 0;
  if (len)
    *len = o;
  return out;
}

/* ---- JSON helpers ---------------------------------------------------------------------- */

/* A base64 JSON string of s (a C string). */
static json_t *jb64(const char *s) {
  char *e = b64_enc(s, strlen(s));
  json_t *j = e ? json_string(e) : NULL;
  free(e);
  return j;
}

/* The prefix's range end: the prefix with its last byte incremented. */
static json_t *jb64_end(const char *prefix) {
  char buf[EC_KEY_MAX];
  snprintf(buf, sizeof buf, "%s", prefix);
  size_t n = strlen(buf);
  if (n > 0)
    buf[n - 1] = (char)(buf[n - 1] + 1);
  return jb64(buf);
}

/* An int64 field (the gateway sends strings; numbers accepted too); dflt when absent. */
static int64_t jint(const json_t *o, const char *key, int64_t dflt) {
  const json_t *v = o ? json_object_get(o, key) : NULL;
  if (json_is_integer(v))
    return (int64_t)json_integer_value(v);
  if (json_is_string(v))
    return (int64_t)strtoll(json_string_value(v), NULL, 10);
  return dflt;
}

/* A decoded bytes field (malloc'd) or NULL when absent (an empty value is left out: ""). */
static char *jbytes(const json_t *o, const char *key, bool empty_if_absent) {
  const json_t *v = o ? json_object_get(o, key) : NULL;
  if (!json_is_string(v))
    return empty_if_absent ? strdup("") : NULL;
  return b64_dec(json_string_value(v), NULL);
}

static json_t *jint_str(int64_t v) {
  char buf[EC_NUM_MAX];
  snprintf(buf, sizeof buf, "%" PRId64, v);
  return json_string(buf);
}

/* ---- transfers ----------------------------------------------------------------------------- */

typedef int (*ec_msg_fn)(void *arg, json_t *msg); /* nonzero: stop the stream */

typedef struct ec_io {
  char *buf;
  size_t len, cap;
  ec_msg_fn on_msg; /* NULL: unary, keep the whole body */
  void *arg;
  bool stopped; /* on_msg asked to stop */
  bool too_big;
} ec_io;

static bool io_append(ec_io *io, const char *p, size_t n) {
  if (io->len + n + 1 > EC_RESPONSE_MAX) {
    io->too_big = true;
    return false;
  }
  if (io->len + n + 1 > io->cap) {
    size_t cap = io->cap ? io->cap : 4096;
    while (cap < io->len + n + 1)
      cap *= 2;
    char *b = realloc(io->buf, cap);
    if (!b)
      return false;
    io->buf = b;
    io->cap = cap;
  }
  memcpy(io->buf + io->len, p, n);
  io->len += n;
  io->buf[io->len] = 0;
  return true;
}

static size_t on_write(char *p, size_t sz, size_t nmemb, void *ud) {
  ec_io *io = ud;
  size_t n = sz * nmemb;
  if (!io_append(io, p, n))
    return 0;
  if (!io->on_msg)
    return n;
  char *nl;
  while ((nl = memchr(io->buf, '\n', io->len)) != NULL) {
    size_t line = (size_t)(nl - io->buf);
    json_t *msg = json_loadb(io->buf, line, 0, NULL);
    memmove(io->buf, nl + 1, io->len - line - 1);
    io->len -= line + 1;
    io->buf[io->len] = 0;
    if (msg) {
      int stop = io->on_msg(io->arg, msg);
      json_decref(msg);
      if (stop) {
        io->stopped = true;
        return 0;
      }
    }
  }
  return n;
}

static ec_xfer *xfer_get(ec_client *e) {
  ec_xfer *x = NULL;
  rv_rawmu_lock(&e->mu);
  if (e->nidle > 0)
    x = e->idle[--e->nidle];
  rv_rawmu_unlock(&e->mu);
  if (x)
    return x;
  x = calloc(1, sizeof *x);
  if (!x)
    return NULL;
  x->m = curl_multi_init();
  x->e = curl_easy_init();
  if (!x->m || !x->e) {
    if (x->m)
      curl_multi_cleanup(x->m);
    if (x->e)
      curl_easy_cleanup(x->e);
    free(x);
    return NULL;
  }
  return x;
}

static void xfer_free(ec_xfer *x) {
  if (!x)
    return;
  curl_easy_cleanup(x->e);
  curl_multi_cleanup(x->m);
  free(x);
}

static void xfer_put(ec_client *e, ec_xfer *x, bool healthy) {
  rv_rawmu_lock(&e->mu);
  if (healthy && e->nidle < EC_IDLE_MAX) {
    e->idle[e->nidle++] = x;
    x = NULL;
  }
  rv_rawmu_unlock(&e->mu);
  xfer_free(x);
}

static void wake_multi(void *arg) { curl_multi_wakeup(arg); }

/*
 * POST body to path; the response goes to io (whole, or message by message).
 * Returns RV_OK (then *status is the HTTP status), the ctx's error, or an I/O error.
 */
static int ec_http_one(ec_client *e, rv_ctx *ctx, const char *base, const char *path,
                       const char *body, ec_io *io, long *status) {
  int rc = rv_ctx_err(ctx);
  if (rc != RV_OK)
    return rc;
  ec_xfer *x = xfer_get(e);
  if (!x)
    return RV_ENOMEM;
  char url[EC_URL_MAX + 64];
  snprintf(url, sizeof url, "%s%s", base, path);
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_reset(x->e);
  curl_easy_setopt(x->e, CURLOPT_URL, url);
  curl_easy_setopt(x->e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(x->e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(x->e, CURLOPT_COPYPOSTFIELDS, body);
  curl_easy_setopt(x->e, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(x->e, CURLOPT_WRITEDATA, io);
  curl_easy_setopt(x->e, CURLOPT_CONNECTTIMEOUT_MS, (long)EC_CONNECT_TIMEOUT_MS);
  if (curl_multi_add_handle(x->m, x->e) != CURLM_OK) {
    curl_slist_free_all(hdr);
    xfer_free(x);
    return RV_EIO;
  }
  rv_ctx_watch w;
  bool watching = ctx && rv_ctx_watch_add(ctx, &w, wake_multi, x->m);
  int running = 1;
  for (;;) {
    if (curl_multi_perform(x->m, &running) != CURLM_OK) {
      rc = RV_EIO;
      break;
    }
    if (!running)
      break;
    if ((rc = rv_ctx_err(ctx)) != RV_OK)
      break;
    int64_t slice = EC_POLL_SLICE_MS * RV_NS_PER_MS;
    int64_t dl = rv_ctx_deadline(ctx);
    if (dl != RV_NO_DEADLINE && dl - rv_now_ns() < slice)
      slice = dl - rv_now_ns();
    if (slice < 0)
      slice = 0;
    curl_multi_poll(x->m, NULL, 0, (int)((slice + RV_NS_PER_MS - 1) / RV_NS_PER_MS), NULL);
  }
  if (watching)
    rv_ctx_watch_remove(ctx, &w);
  bool healthy = false;
  if (rc == RV_OK) {
    int left;
    CURLMsg *msg = curl_multi_info_read(x->m, &left);
    CURLcode res = msg && msg->msg == CURLMSG_DONE ? msg->data.result : CURLE_RECV_ERROR;
    if (res == CURLE_OK) {
      healthy = true;
    } else if (!(res == CURLE_WRITE_ERROR && io->stopped)) {
      cc_set_last_error(curl_easy_strerror(res));
      rc = res == CURLE_COULDNT_CONNECT ? RV_ECONNREFUSED
           : res == CURLE_COULDNT_RESOLVE_HOST ? RV_EADDR
           : res == CURLE_WRITE_ERROR && !io->too_big ? RV_ENOMEM
           : res == CURLE_WRITE_ERROR ? RV_ELIMIT
                                     : RV_EIO;
    }
    long code = 0;
    curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &code);
    *status = code;
  }
  curl_multi_remove_handle(x->m, x->e); /* mid-transfer: closes the connection */
  curl_slist_free_all(hdr);
  xfer_put(e, x, healthy);
  return rc;
}

/*
 * ec_http_one on the endpoint that answered last, then on the others in turn
 * while they refuse connections (no request reached a server, so a retry is
 * safe).  Failover only: the gateway has no membership sync nor balancing.
 */
static int ec_http(ec_client *e, rv_ctx *ctx, const char *path, const char *body, ec_io *io,
                   long *status) {
  int first = __atomic_load_n(&e->cur, __ATOMIC_RELAXED), rc = RV_EINVAL;
  for (int i = 0; i < e->nurls; i++) {
    int idx = (first + i) % e->nurls;
    rc = ec_http_one(e, ctx, e->urls[idx], path, body, io, status);
    if (rc != RV_ECONNREFUSED && rc != RV_EADDR) {
      if (rc == RV_OK && idx != first)
        __atomic_store_n(&e->cur, idx, __ATOMIC_RELAXED);
      break;
    }
  }
  return rc;
}

/* Map a gateway error body ({"error","message","code"}) to an rv_err; remembers the text. */
static int ec_error(long status, const json_t *body) {
  const char *msg = json_string_value(json_object_get(body, "message"));
  if (!msg)
    msg = json_string_value(json_object_get(body, "error"));
  char text[CC_ERR_MAX];
  snprintf(text, sizeof text, "etcd HTTP %ld: %s", status, msg ? msg : "(no message)");
  cc_set_last_error(text);
  int64_t code = jint(body, "code", 0);
  if (code == 5 || (msg && strstr(msg, "not found")))
    return RV_ENOTFOUND;
  if (code == 3)
    return RV_EINVAL;
  if (code == 11 || (msg && strstr(msg, "compacted")))
    return RV_ERANGE;
  return RV_EPROTO;
}

/* A unary call: req (consumed) to path; *resp the parsed 200 body. */
static int ec_call(ec_client *e, rv_ctx *ctx, const char *path, json_t *req, json_t **resp) {
  *resp = NULL;
  char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  if (!body)
    return RV_ENOMEM;
  ec_io io = {0};
  long status = 0;
  int rc = ec_http(e, ctx, path, body, &io, &status);
  free(body);
  if (rc == RV_OK) {
    json_t *j = io.buf ? json_loadb(io.buf, io.len, 0, NULL) : NULL;
    if (status / 100 != 2) {
      rc = ec_error(status, j);
      json_decref(j);
    } else if (!json_is_object(j)) {
      cc_set_last_error("etcd: malformed response");
      json_decref(j);
      rc = RV_EPROTO;
    } else {
      *resp = j;
    }
  }
  free(io.buf);
  return rc;
}

/* A stream call: each message to on_msg until it returns nonzero, the stream ends or ctx ends. */
static int ec_stream(ec_client *e, rv_ctx *ctx, const char *path, json_t *req, ec_msg_fn on_msg,
                     void *arg, bool *stopped) {
  char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  if (!body)
    return RV_ENOMEM;
  ec_io io = {.on_msg = on_msg, .arg = arg};
  long status = 0;
  int rc = ec_http(e, ctx, path, body, &io, &status);
  free(body);
  if (rc == RV_OK && status / 100 != 2 && !io.stopped) {
    json_t *j = io.buf ? json_loadb(io.buf, io.len, 0, NULL) : NULL;
    rc = ec_error(status, j);
    json_decref(j);
  }
  if (stopped)
    *stopped = io.stopped;
  free(io.buf);
  return rc;
}

static int64_t header_rev(const json_t *resp) {
  return jint(json_object_get(resp, "header"), "revision", 0);
}

/* ---- client ----------------------------------------------------------------------------------- */

int ec_client_open(rv_coord_client *c, rv_ctx *ctx, const char *url) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return RV_EIO;
  ec_client *e = calloc(1, sizeof *e);
  if (!e) {
    curl_global_cleanup();
    return RV_ENOMEM;
  }
  /* "http://a:2379,http://b:2379": endpoints tried in turn when one refuses. */
  for (const char *p = url; *p && e->nurls < EC_URLS_MAX;) {
    size_t len = strcspn(p, ",");
    char *u = e->urls[e->nurls];
    snprintf(u, EC_URL_MAX, "%.*s", (int)(len < EC_URL_MAX ? len : EC_URL_MAX - 1), p);
    size_t n = strlen(u);
    while (n > 0 && (u[n - 1] == '/' || u[n - 1] == ' '))
      u[--n] = 0;
    if (n > 0)
      e->nurls++;
    p += len;
    while (*p == ',' || *p == ' ')
      p++;
  }
  rv_rawmu_init(&e->mu);
  c->etcd = e;
  if (e->nurls == 0)
    return RV_EINVAL;
  /* Reach the server now, as coord's open does (and learn that the gateway answers). */
  json_t *req = json_pack("{s:o,s:b}", "key", jb64(EC_CFG_PREFIX), "count_only", 1);
  json_t *resp = NULL;
  int rc = ec_call(e, ctx, "/v3/kv/range", req, &resp);
  json_decref(resp);
  return rc; /* on failure the caller closes the client, which frees e */
}

void ec_client_close(rv_coord_client *c) {
  ec_client *e = c->etcd;
  if (!e)
    return;
  for (int i = 0; i < e->nidle; i++)
    xfer_free(e->idle[i]);
  rv_rawmu_destroy(&e->mu);
  free(e);
  c->etcd = NULL;
  curl_global_cleanup();
}

/* ---- sessions --------------------------------------------------------------------------------- */

typedef struct ec_session {
  cc_handle h; /* first: the backend (etcd) */
  rv_coord_client *c;
  int64_t lease;
  int64_t ttl_ms; /* as granted */
  rv_ctx *ctx;    /* cancelled when lost or closed */
  rv_ctx *stop;   /* stops the keepalive thread */
  rv_thread *ka;
  rv_session_lost_fn on_lost;
  void *arg;
  bool lost;   /* __atomic */
  bool paused; /* __atomic, test hook */
  int64_t opened_ns;
  rv_rawmu pmu;               /* guards pending */
  struct ec_pending *pending; /* lock keys whose delete etcd never answered */
  int npending;
} ec_session;

static ec_session *ES(rv_session *s) { return (ec_session *)(void *)s; }

/*
 * A lock key still to delete: a release or a withdrawal whose request etcd never
 * answered (etcd down, a reset).  The key is attached to the session's lease, which
 * the keepalives keep alive, so without another try the lock (or the place in its
 * queue) would stay ours for the life of the session.  Each key is this acquire's
 * own ("NAME LEASEHEX-SEQ"), never re-created by anyone, so deleting it again is
 * always safe.  Sent again after each keepalive that gets through.
 */
typedef struct ec_pending {
  struct ec_pending *next;
  char *key;
} ec_pending;

static void pending_keep(ec_session *s, const char *key) {
  if (__atomic_load_n(&s->lost, __ATOMIC_ACQUIRE))
    return; /* the lease is gone, and every key attached to it */
  ec_pending *p = calloc(1, sizeof *p);
  if (p)
    p->key = strdup(key);
  bool taken = false;
  rv_rawmu_lock(&s->pmu);
  if (p && p->key && s->npending < RV_COORD_PENDING_RELEASES_MAX) {
    p->next = s->pending;
    s->pending = p;
    s->npending++;
    taken = true;
  }
  rv_rawmu_unlock(&s->pmu);
  if (!taken) {
    if (p)
      free(p->key);
    free(p);
  }
}

static int delete_key(ec_client *e, rv_ctx *ctx, const char *key) {
  json_t *resp = NULL;
  int rc = ec_call(e, ctx, "/v3/kv/deleterange", json_pack("{s:o}", "key", jb64(key)), &resp);
  json_decref(resp);
  return rc;
}

/* From the keepalive thread, after a keepalive got through: delete the pending keys;
 * keep those etcd does not answer again for the next round. */
static void pending_retry(ec_session *s, rv_ctx *op) {
  rv_rawmu_lock(&s->pmu);
  ec_pending *list = s->pending;
  s->pending = NULL;
  s->npending = 0;
  rv_rawmu_unlock(&s->pmu);
  bool reachable = true;
  while (list) {
    ec_pending *p = list;
    list = p->next;
    if (reachable && delete_key(s->c->etcd, op, p->key) == RV_OK) {
      CC_STAT_INC(s->c, releases_retried);
      free(p->key);
      free(p);
      continue;
    }
    reachable = false; /* etcd is gone again: keep the rest for later */
    rv_rawmu_lock(&s->pmu);
    p->next = s->pending;
    s->pending = p;
    s->npending++;
    rv_rawmu_unlock(&s->pmu);
  }
}

static void pending_free(ec_session *s) {
  while (s->pending) {
    ec_pending *p = s->pending;
    s->pending = p->next;
    free(p->key);
    free(p);
  }
  s->npending = 0;
}

static void ec_session_lose(ec_session *s, const char *why) {
  if (__atomic_exchange_n(&s->lost, true, __ATOMIC_ACQ_REL))
    return;
  CC_STAT_INC(s->c, session_losses);
  rv_ctx_cancel(s->ctx, "session lost: %s", why);
  if (s->on_lost) {
    char reason[RV_CTX_REASON_MAX + 16];
    snprintf(reason, sizeof reason, "session lost: %s", why);
    s->on_lost(s->arg, reason);
  }
}

typedef struct ka_result {
  bool got;
  int64_t ttl; /* -1: absent (the lease is gone) */
} ka_result;

static int ka_on_msg(void *arg, json_t *msg) {
  ka_result *r = arg;
  const json_t *res = json_object_get(msg, "result");
  if (!res)
    return 1; /* a stream error: r->got stays false */
  r->got = true;
  r->ttl = jint(res, "TTL", -1);
  return 1;
}

/* One lease keepalive round trip on the gateway's stream endpoint. */
static int ec_keepalive_attempt(void *arg, rv_ctx *op, char *why, size_t whylen) {
  ec_session *s = arg;
  ka_result r = {0};
  bool stopped = false;
  int rc = ec_stream(s->c->etcd, op, "/v3/lease/keepalive",
                     json_pack("{s:o}", "ID", jint_str(s->lease)), ka_on_msg, &r, &stopped);
  if (rc == RV_OK && r.got && r.ttl > 0) {
    pending_retry(s, op);
    return RV_OK;
  }
  if (rc == RV_OK && r.got) {
    snprintf(why, whylen, "lease expired or revoked");
    return CC_KA_LOST;
  }
  snprintf(why, whylen, "keepalive failed: %s (%s)", rv_strerror(rc == RV_OK ? RV_EPROTO : rc),
           rv_coord_last_error());
  return rc == RV_OK ? RV_EPROTO : rc;
}

static void ec_session_lose_cb(void *arg, const char *why) { ec_session_lose(arg, why); }

static void ec_keepalive_main(void *arg) {
  ec_session *s = arg;
  cc_keepalive k = {.c = s->c,
                    .stop = s->stop,
                    .ttl_ns = s->ttl_ms * RV_NS_PER_MS,
                    .opened_ns = s->opened_ns,
                    .paused = &s->paused,
                    .attempt = ec_keepalive_attempt,
                    .lose = ec_session_lose_cb,
                    .arg = s};
  cc_keepalive_run(&k);
}

int ec_session_open(rv_ctx *ctx, rv_coord_client *c, int64_t ttl_ms, rv_session_lost_fn on_lost,
                    void *arg, rv_session **out) {
  if (ttl_ms <= 0)
    return RV_EINVAL;
  int64_t opened = rv_now_ns();
  json_t *resp;
  int rc = ec_call(c->etcd, ctx, "/v3/lease/grant",
                   json_pack("{s:o}", "TTL", jint_str((ttl_ms + 999) / 1000)), &resp);
  if (rc != RV_OK)
    return rc;
  int64_t id = jint(resp, "ID", 0), ttl = jint(resp, "TTL", 0);
  json_decref(resp);
  if (id == 0 || ttl <= 0) {
    cc_set_last_error("etcd: lease grant without ID or TTL");
    return RV_EPROTO;
  }
  ec_session *s = calloc(1, sizeof *s);
  if (!s)
    return RV_ENOMEM;
  s->h.etcd = true;
  s->c = c;
  s->lease = id;
  s->ttl_ms = ttl * 1000;
  s->on_lost = on_lost;
  s->arg = arg;
  s->opened_ns = opened;
  rv_rawmu_init(&s->pmu);
  s->ctx = rv_ctx_new(NULL);
  s->stop = rv_ctx_new(NULL);
  if (!s->ctx || !s->stop ||
      (rc = rv_thread_start(&s->ka, "etcd-keepalive", "keepalive", ec_keepalive_main, s)) !=
          RV_OK) {
    s->ka = NULL;
    ec_session_close((rv_session *)(void *)s);
    return rc != RV_OK ? rc : RV_ENOMEM;
  }
  *out = (rv_session *)(void *)s;
  return RV_OK;
}

uint64_t ec_session_id(const rv_session *s) {
  return (uint64_t)((const ec_session *)(const void *)s)->lease;
}
rv_ctx *ec_session_ctx(rv_session *s) { return ES(s)->ctx; }
bool ec_session_lost(rv_session *s) { return __atomic_load_n(&ES(s)->lost, __ATOMIC_ACQUIRE); }
void ec_session_test_pause_keepalive(rv_session *s, bool pause) {
  __atomic_store_n(&ES(s)->paused, pause, __ATOMIC_RELEASE);
}

void ec_session_close(rv_session *ss) {
  ec_session *s = ES(ss);
  if (s->stop)
    rv_ctx_cancel(s->stop, "session closed");
  if (s->ka)
    rv_thread_join(s->ka);
  if (!ec_session_lost(ss)) {
    rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
    json_t *resp = NULL;
    if (op)
      ec_call(s->c->etcd, op, "/v3/lease/revoke", json_pack("{s:o}", "ID", jint_str(s->lease)),
              &resp);
    json_decref(resp);
    rv_ctx_free(op);
  }
  if (s->ctx)
    rv_ctx_cancel(s->ctx, "session closed");
  rv_ctx_free(s->ctx);
  rv_ctx_free(s->stop);
  pending_free(s); /* the revoke deleted them, or the lease expires without keepalives */
  rv_rawmu_destroy(&s->pmu);
  free(s);
}

/* ---- locks ---------------------------------------------------------------------------------- */

typedef struct ec_dlock {
  cc_handle h; /* first: the backend (etcd) */
  ec_session *s;
  char *name;
  char *key;
  uint64_t token; /* the key's create_revision */
} ec_dlock;

static bool lock_name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > EC_LOCK_NAME_MAX)
    return false;
  for (const char *p = name; *p; p++)
    if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\'' || *p == '\\')
      return false;
  return true;
}

/* Delete key if its create_revision is rev: 1 deleted, 0 not (not ours / gone), <0 error. */
static int delete_if_created(ec_client *e, rv_ctx *ctx, const char *key, int64_t rev) {
  json_t *req = json_pack("{s:[{s:s,s:s,s:o,s:o}],s:[{s:{s:o}}]}", "compare", "target", "CREATE",
                          "result", "EQUAL", "key", jb64(key), "create_revision", jint_str(rev),
                          "success", "request_delete_range", "key", jb64(key));
  json_t *resp;
  int rc = ec_call(e, ctx, "/v3/kv/txn", req, &resp);
  if (rc != RV_OK)
    return rc;
  bool ok = json_is_true(json_object_get(resp, "succeeded")); /* absent when false */
  json_decref(resp);
  return ok ? 1 : 0;
}

/* Withdraw a wait: delete our own waiter key (bounded, whatever the caller's ctx); kept
 * for the keepalive thread to delete when etcd does not answer. */
static void withdraw(ec_session *s, const char *key) {
  rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
  if (!op || delete_key(s->c->etcd, op, key) != RV_OK)
    pending_keep(s, key);
  rv_ctx_free(op);
}

typedef struct pred_watch {
  bool deleted;
  bool canceled;
} pred_watch;

static int pred_on_msg(void *arg, json_t *msg) {
  pred_watch *p = arg;
  const json_t *res = json_object_get(msg, "result");
  if (!res) {
    p->canceled = true; /* a stream error: look again */
    return 1;
  }
  if (json_is_true(json_object_get(res, "canceled"))) {
    p->canceled = true;
    return 1;
  }
  const json_t *evs = json_object_get(res, "events");
  size_t i;
  const json_t *ev;
  json_array_foreach(evs, i, ev) {
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (type && strcmp(type, "DELETE") == 0) {
      p->deleted = true;
      return 1;
    }
  }
  return 0;
}

/* Cancel the wait's context when the session's ends. */
static void cancel_wait(void *arg) { rv_ctx_cancel(arg, "session lost"); }

/*
 * Wait until key (created at myrev) is the oldest under prefix.  Returns 1
 * granted, 0 the key is gone (the session's lease expired), or <0.
 */
static int wait_turn(rv_coord_client *c, rv_ctx *ctx, const char *prefix, const char *key,
                     int64_t myrev, const char *what) {
  ec_client *e = c->etcd;
  bool waited = false;
  int rc;
  for (;;) {
    json_t *req = json_pack("{s:o,s:o,s:o,s:i,s:s,s:s,s:b}", "key", jb64(prefix), "range_end",
                            jb64_end(prefix), "max_create_revision", jint_str(myrev - 1), "limit",
                            1, "sort_order", "DESCEND", "sort_target", "CREATE", "keys_only", 1);
    json_t *resp;
    if ((rc = ec_call(e, ctx, "/v3/kv/range", req, &resp)) != RV_OK)
      return rc;
    const json_t *kv = json_array_get(json_object_get(resp, "kvs"), 0);
    char *pred = kv ? jbytes(kv, "key", false) : NULL;
    int64_t at = header_rev(resp);
    json_decref(resp);
    if (!pred) {
      /* No predecessor: ours, if our key still exists (3.4 granted deleted keys). */
      if ((rc = ec_call(e, ctx, "/v3/kv/range",
                        json_pack("{s:o,s:b}", "key", jb64(key), "count_only", 1), &resp)) != RV_OK)
        return rc;
      int64_t count = jint(resp, "count", 0);
      json_decref(resp);
      return count > 0 ? 1 : 0;
    }
    if (!waited) {
      waited = true;
      CC_STAT_INC(c, waits);
    }
    pred_watch pw = {0};
    json_t *wreq = json_pack("{s:{s:o,s:o}}", "create_request", "key", jb64(pred), "start_revision",
                             jint_str(at + 1));
    free(pred);
    rv_wait_external_begin(what);
    rc = ec_stream(e, ctx, "/v3/watch", wreq, pred_on_msg, &pw, NULL);
    rv_wait_external_end();
    if (rc != RV_OK)
      return rc;
    if (!pw.deleted && !pw.canceled) /* the stream ended without an answer: back off a little */
      if ((rc = rv_sleep(ctx, EC_WATCH_BACKOFF_NS)) != RV_OK)
        return rc;
  }
}

int ec_dlock_acquire(rv_ctx *ctx, rv_session *ss, const char *name, const char *description,
                     rv_dlock **out) {
  ec_session *s = ES(ss);
  rv_coord_client *c = s->c;
  ec_client *e = c->etcd;
  cc_set_last_error("");
  if (!name || !lock_name_ok(name)) {
    cc_set_last_error("BADNAME lock name must be 1..256 printable bytes without space, quotes or backslash");
    return RV_EINVAL;
  }
  char desc[RV_DLOCK_DESC_MAX + 1];
  if (description)
    snprintf(desc, sizeof desc, "%s", description);
  else
    rv_dlock_default_description(desc, sizeof desc);
  int rc = rv_ctx_err(ctx);
  if (rc != RV_OK)
    return rc;
  if (ec_session_lost(ss))
    return RV_ENOTFOUND;
  char prefix[EC_KEY_MAX], key[EC_KEY_MAX + 64], what[RV_WAIT_WHAT_MAX];
  snprintf(prefix, sizeof prefix, "%s%s ", EC_LOCK_PREFIX, name);
  snprintf(key, sizeof key, "%s%016" PRIx64 "-%" PRIu64, prefix, (uint64_t)s->lease,
           __atomic_add_fetch(&e->seq, 1, __ATOMIC_RELAXED));
  snprintf(what, sizeof what, "dlock %s", name);

  /* The wait ends with the caller's ctx or with the session. */
  rv_ctx *wctx = rv_ctx_new(ctx);
  if (!wctx)
    return RV_ENOMEM;
  rv_ctx_watch sw;
  bool watching = rv_ctx_watch_add(s->ctx, &sw, cancel_wait, wctx);
  if (!watching)
    rv_ctx_cancel(wctx, "session lost");

  json_t *resp = NULL;
  rc = ec_call(e, wctx, "/v3/kv/put",
               json_pack("{s:o,s:o,s:o}", "key", jb64(key), "value", jb64(desc), "lease",
                         jint_str(s->lease)),
               &resp);
  int64_t myrev = rc == RV_OK ? header_rev(resp) : 0;
  json_decref(resp);
  int got = rc;
  if (rc == RV_OK)
    got = myrev > 0 ? wait_turn(c, wctx, prefix, key, myrev, what) : RV_EPROTO;
  if (watching)
    rv_ctx_watch_remove(s->ctx, &sw);
  bool session_gone = ec_session_lost(ss) || got == RV_ENOTFOUND;
  rv_ctx_free(wctx);

  if (got != 1) {
    withdraw(s, key); /* the put may have landed even if its answer did not */
    if (got == 0 || session_gone) {
      cc_set_last_error("NOSESSION the session's lease is gone");
      return RV_ENOTFOUND;
    }
    rc = rv_ctx_err(ctx);
    if (rc != RV_OK) {
      CC_STAT_INC(c, cancels);
      return rc;
    }
    return got;
  }
  ec_dlock *h = calloc(1, sizeof *h);
  char *nm = strdup(name), *k = strdup(key);
  if (!h || !nm || !k) {
    free(h);
    free(nm);
    free(k);
    withdraw(s, key);
    return RV_ENOMEM;
  }
  h->h.etcd = true;
  h->s = s;
  h->name = nm;
  h->key = k;
  h->token = (uint64_t)myrev;
  CC_STAT_INC(c, acquisitions);
  *out = (rv_dlock *)(void *)h;
  return RV_OK;
}

uint64_t ec_dlock_token(const rv_dlock *h) { return ((const ec_dlock *)(const void *)h)->token; }
const char *ec_dlock_name(const rv_dlock *h) { return ((const ec_dlock *)(const void *)h)->name; }

int ec_dlock_release(rv_dlock *hh) {
  ec_dlock *h = (ec_dlock *)(void *)hh;
  rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
  int rc = op ? delete_if_created(h->s->c->etcd, op, h->key, (int64_t)h->token) : RV_ENOMEM;
  rv_ctx_free(op);
  if (rc < 0)
    pending_keep(h->s, h->key); /* unanswered: sent again after the next keepalive */
  if (rc == 0) {
    cc_set_last_error("NOTOWNER the lock key is gone or was re-created (lease expired?)");
    rc = RV_EINVAL;
  } else if (rc == 1) {
    rc = RV_OK;
  }
  free(h->name);
  free(h->key);
  free(h);
  return rc;
}

/* ---- config ------------------------------------------------------------------------------------- */

#define EC_LAYERS 3

/* The namespaces of service[/replica], least specific first; returns how many. */
static int layers(char ns[EC_LAYERS][160], const char *service, const char *replica) {
  int n = 0;
  snprintf(ns[n++], 160, "platform");
  if (service && service[0]) {
    snprintf(ns[n++], 160, "svc/%s", service);
    if (replica && replica[0])
      snprintf(ns[n++], 160, "svc/%s/%s", service, replica);
  }
  return n;
}

int ec_config_get(rv_ctx *ctx, rv_coord_client *c, const char *service, const char *replica,
                  const char *key, char **value, uint64_t *revision) {
  *value = NULL;
  if (!key || !key[0] || strchr(key, '@'))
    return RV_EINVAL;
  char ns[EC_LAYERS][160];
  int n = layers(ns, service, replica);
  json_t *ops = json_array();
  for (int i = 0; i < n; i++) {
    char k[EC_KEY_MAX];
    snprintf(k, sizeof k, "%s%s@%s", EC_CFG_PREFIX, ns[i], key);
    json_array_append_new(ops, json_pack("{s:{s:o}}", "request_range", "key", jb64(k)));
  }
  json_t *resp;
  int rc = ec_call(c->etcd, ctx, "/v3/kv/txn", json_pack("{s:o}", "success", ops), &resp);
  if (rc != RV_OK)
    return rc;
  rc = RV_ENOTFOUND;
  const json_t *rs = json_object_get(resp, "responses");
  for (int i = n - 1; i >= 0 && rc == RV_ENOTFOUND; i--) {
    const json_t *r = json_object_get(json_array_get(rs, (size_t)i), "response_range");
    const json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
    if (!kv)
      continue;
    *value = jbytes(kv, "value", true);
    rc = *value ? RV_OK : RV_EPROTO;
    if (revision)
      *revision = (uint64_t)jint(kv, "mod_revision", 0);
  }
  json_decref(resp);
  return rc;
}

int ec_config_revision(rv_ctx *ctx, rv_coord_client *c, uint64_t *revision) {
  json_t *resp;
  int rc = ec_call(c->etcd, ctx, "/v3/kv/range",
                   json_pack("{s:o,s:b}", "key", jb64(EC_CFG_PREFIX), "count_only", 1), &resp);
  if (rc != RV_OK)
    return rc;
  *revision = (uint64_t)header_rev(resp);
  json_decref(resp);
  return *revision ? RV_OK : RV_EPROTO;
}

/*
 * A write as one transaction: put (value) or delete (value NULL) "/ravel/config/NS@KEY",
 * if the key's mod_revision is o->revision (0: the key must not exist) when asked, and
 * for a delete if the key exists; otherwise the key is read back to say why not.
 * The same checks of namespace, key and value as coord's, so a write that coord
 * would refuse is refused here too.
 */
int ec_config_write(rv_ctx *ctx, rv_coord_client *c, const char *ns, const char *key,
                    const char *value, const rv_config_write_opts *o, uint64_t *revision) {
  char why[CC_ERR_MAX - 8], err[CC_ERR_MAX];
  rv_cfg_ns parsed;
  const char *code = "BADNS";
  int bad = rv_cfg_ns_parse((rv_cfg_str){ns, strlen(ns)}, &parsed, why, sizeof why);
  if (bad == RV_CFG_OK) {
    code = "BADKEY";
    bad = rv_cfg_key_check((rv_cfg_str){key, strlen(key)}, "key", false, why, sizeof why);
  }
  if (bad != RV_CFG_OK) {
    snprintf(err, sizeof err, "%s %s", code, why);
    cc_set_last_error(err);
    return RV_EINVAL;
  }
  if (value && strlen(value) > RV_CFG_VALUE_MAX_BYTES_DEFAULT) {
    snprintf(err, sizeof err, "BADVALUE value of %zu bytes is too large: at most %d",
             strlen(value), RV_CFG_VALUE_MAX_BYTES_DEFAULT);
    cc_set_last_error(err);
    return RV_EINVAL;
  }
  char k[EC_KEY_MAX];
  snprintf(k, sizeof k, "%s%s@%s", EC_CFG_PREFIX, ns, key);
  json_t *cmp = json_array();
  if (o && o->if_revision)
    json_array_append_new(cmp, o->revision
                                   ? json_pack("{s:s,s:s,s:o,s:o}", "target", "MOD", "result",
                                               "EQUAL", "key", jb64(k), "mod_revision",
                                               jint_str((int64_t)o->revision))
                                   : json_pack("{s:s,s:s,s:o,s:s}", "target", "VERSION", "result",
                                               "EQUAL", "key", jb64(k), "version", "0"));
  if (!value)
    json_array_append_new(cmp, json_pack("{s:s,s:s,s:o,s:s}", "target", "VERSION", "result",
                                         "GREATER", "key", jb64(k), "version", "0"));
  json_t *op = value ? json_pack("{s:{s:o,s:o}}", "request_put", "key", jb64(k), "value",
                                 jb64(value))
                     : json_pack("{s:{s:o}}", "request_delete_range", "key", jb64(k));
  json_t *resp;
  int rc = ec_call(c->etcd, ctx, "/v3/kv/txn",
                   json_pack("{s:o,s:[o],s:[{s:{s:o}}]}", "compare", cmp, "success", op,
                             "failure", "request_range", "key", jb64(k)),
                   &resp);
  if (rc != RV_OK)
    return rc;
  if (json_is_true(json_object_get(resp, "succeeded"))) {
    if (revision)
      *revision = (uint64_t)header_rev(resp);
    json_decref(resp);
    return RV_OK;
  }
  const json_t *r = json_object_get(json_array_get(json_object_get(resp, "responses"), 0),
                                    "response_range");
  const json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
  int64_t mod = kv ? jint(kv, "mod_revision", 0) : 0;
  json_decref(resp);
  if (!value && !kv) {
    snprintf(err, sizeof err, "NOKEY cannot delete %s in %s: no such key", key, ns);
    cc_set_last_error(err);
    return RV_ENOTFOUND;
  }
  if (!kv)
    snprintf(err, sizeof err,
             "CONFLICT %s in %s does not exist but the write expects mod_revision %" PRIu64, key,
             ns, o ? o->revision : 0);
  else if (o && o->if_revision && o->revision == 0)
    snprintf(err, sizeof err,
             "CONFLICT %s in %s exists (mod_revision %" PRId64 ") but the write expects it not to",
             key, ns, mod);
  else
    snprintf(err, sizeof err,
             "CONFLICT %s in %s is at mod_revision %" PRId64 ", not %" PRIu64
             ": someone changed it; re-read and retry",
             key, ns, mod, o ? o->revision : 0);
  cc_set_last_error(err);
  return RV_EBUSY;
}

/* One key of one layer in the watch's copy. */
typedef struct ec_ent {
  int layer;
  char *key, *value;
} ec_ent;

typedef struct ec_watcher {
  cc_handle h; /* first: the backend (etcd) */
  rv_coord_client *c;
  char ns[EC_LAYERS][160];
  int nlayers;
  char *prefix;
  bool raw;
  char *raw_ns[RV_CONFIG_RAW_NS_MAX];
  int nraw;
  uint64_t rev; /* __atomic: applied up to */
  rv_config_watch_fn cb;
  void *arg;
  rv_ctx *stop;
  rv_thread *t;
  rv_rawmu poll_mu; /* guards poll */
  rv_ctx *poll;     /* the current stream's context (the test hook cancels it) */
  /* The watch thread's only: */
  ec_ent *ents;
  size_t nents, cap;
  bool need_resync;
} ec_watcher;

static ec_watcher *EW(rv_config_watcher *w) { return (ec_watcher *)(void *)w; }

/* Which layer (or raw namespace) ns is for this watch; -1 if none. */
static int ns_index(const ec_watcher *w, const char *ns) {
  if (w->raw) {
    for (int i = 0; i < w->nraw; i++)
      if (strcmp(w->raw_ns[i], ns) == 0)
        return i;
    return -1;
  }
  for (int i = 0; i < w->nlayers; i++)
    if (strcmp(w->ns[i], ns) == 0)
      return i;
  return -1;
}

static const char *ns_name(const ec_watcher *w, int layer) {
  return w->raw ? w->raw_ns[layer] : w->ns[layer];
}

static ec_ent *ent_find(ec_watcher *w, int layer, const char *key) {
  for (size_t i = 0; i < w->nents; i++)
    if (w->ents[i].layer == layer && strcmp(w->ents[i].key, key) == 0)
      return &w->ents[i];
  return NULL;
}

/* The effective value of key in the copy (most specific layer), or NULL. */
static const char *effective(ec_watcher *w, const char *key) {
  const char *v = NULL;
  int best = -1;
  for (size_t i = 0; i < w->nents; i++)
    if (w->ents[i].layer > best && strcmp(w->ents[i].key, key) == 0) {
      best = w->ents[i].layer;
      v = w->ents[i].value;
    }
  return v;
}

/* Set (value non-NULL) or remove an entry. */
static void ent_set(ec_watcher *w, int layer, const char *key, const char *value) {
  ec_ent *e = ent_find(w, layer, key);
  if (!value) {
    if (e) {
      free(e->key);
      free(e->value);
      *e = w->ents[--w->nents];
    }
    return;
  }
  char *v = strdup(value);
  if (!v)
    return;
  if (e) {
    free(e->value);
    e->value = v;
    return;
  }
  if (w->nents == w->cap) {
    size_t cap = w->cap ? 2 * w->cap : 16;
    ec_ent *n = realloc(w->ents, cap * sizeof *n);
    if (!n) {
      free(v);
      return;
    }
    w->ents = n;
    w->cap = cap;
  }
  char *k = strdup(key);
  if (!k) {
    free(v);
    return;
  }
  w->ents[w->nents++] = (ec_ent){layer, k, v};
}

static void ents_clear(ec_watcher *w) {
  for (size_t i = 0; i < w->nents; i++) {
    free(w->ents[i].key);
    free(w->ents[i].value);
  }
  w->nents = 0;
}

/* Split an etcd key "/ravel/config/NS@KEY" into the watch's layer and KEY; false if not ours. */
static bool split_key(const ec_watcher *w, const char *full, int *layer, const char **key) {
  size_t pl = strlen(EC_CFG_PREFIX);
  if (strncmp(full, EC_CFG_PREFIX, pl) != 0)
    return false;
  const char *at = strchr(full + pl, '@');
  if (!at)
    return false;
  char ns[160];
  size_t n = (size_t)(at - (full + pl));
  if (n >= sizeof ns)
    return false;
  memcpy(ns, full + pl, n);
  ns[n] = 0;
  *layer = ns_index(w, ns);
  *key = at + 1;
  if (*layer < 0 || !**key)
    return false;
  return !w->prefix || strncmp(*key, w->prefix, strlen(w->prefix)) == 0;
}

/* Load the copy at revision rev (0: the current one; *rev is set to it). */
static int load(ec_watcher *w, rv_ctx *ctx, uint64_t *rev) {
  json_t *req = json_pack("{s:o,s:o}", "key", jb64(EC_CFG_PREFIX), "range_end",
                          jb64_end(EC_CFG_PREFIX));
  if (*rev)
    json_object_set_new(req, "revision", jint_str((int64_t)*rev));
  json_t *resp;
  int rc = ec_call(w->c->etcd, ctx, "/v3/kv/range", req, &resp);
  if (rc != RV_OK)
    return rc;
  ents_clear(w);
  size_t i;
  const json_t *kv;
  json_array_foreach(json_object_get(resp, "kvs"), i, kv) {
    char *k = jbytes(kv, "key", false), *v = jbytes(kv, "value", true);
    int layer;
    const char *key;
    if (k && v && split_key(w, k, &layer, &key))
      ent_set(w, layer, key, v);
    free(k);
    free(v);
  }
  if (!*rev)
    *rev = (uint64_t)header_rev(resp);
  json_decref(resp);
  return RV_OK;
}

static void deliver(ec_watcher *w, uint64_t rev, int layer, const char *key, const char *old_v,
                    const char *new_v) {
  rv_config_event ev = {.revision = rev, .key = key, .ns = ns_name(w, layer), .old_value = old_v,
                        .new_value = new_v};
  CC_STAT_INC(w->c, watch_events);
  w->cb(w->arg, &ev);
}

static bool same(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Apply one event to the copy; call back on an effective change (or any write, raw). */
static void apply(ec_watcher *w, const json_t *ev) {
  const json_t *kv = json_object_get(ev, "kv");
  const char *type = json_string_value(json_object_get(ev, "type"));
  bool del = type && strcmp(type, "DELETE") == 0; /* a PUT has no "type" */
  uint64_t rev = (uint64_t)jint(kv, "mod_revision", 0);
  char *k = jbytes(kv, "key", false);
  char *v = del ? NULL : jbytes(kv, "value", true);
  int layer;
  const char *key;
  if (k && (del || v) && split_key(w, k, &layer, &key)) {
    if (w->raw) {
      ec_ent *e = ent_find(w, layer, key);
      char *old_v = e && e->value ? strdup(e->value) : NULL;
      ent_set(w, layer, key, v);
      deliver(w, rev, layer, key, old_v, v);
      free(old_v);
    } else {
      const char *eff = effective(w, key);
      char *before = eff ? strdup(eff) : NULL;
      ent_set(w, layer, key, v);
      const char *after = effective(w, key);
      if (!same(before, after))
        deliver(w, rev, layer, key, before, after);
      free(before);
    }
  }
  free(k);
  free(v);
  if (rev > __atomic_load_n(&w->rev, __ATOMIC_ACQUIRE))
    __atomic_store_n(&w->rev, rev, __ATOMIC_RELEASE);
}

static int watch_on_msg(void *arg, json_t *msg) {
  ec_watcher *w = arg;
  const json_t *res = json_object_get(msg, "result");
  if (!res)
    return 1; /* a stream error: reconnect */
  if (json_is_true(json_object_get(res, "canceled"))) {
    if (jint(res, "compact_revision", 0) > 0)
      w->need_resync = true;
    return 1;
  }
  size_t i;
  const json_t *ev;
  json_array_foreach(json_object_get(res, "events"), i, ev) apply(w, ev);
  return 0;
}

/* The history cannot answer: reload at the current revision and tell the callback. */
static void ec_resync(ec_watcher *w) {
  uint64_t now = 0;
  if (load(w, w->stop, &now) != RV_OK) {
    rv_sleep(w->stop, EC_WATCH_BACKOFF_NS);
    return;
  }
  w->need_resync = false;
  CC_STAT_INC(w->c, watch_resyncs);
  rv_config_event ev = {.revision = now, .resync = true};
  w->cb(w->arg, &ev);
  __atomic_store_n(&w->rev, now, __ATOMIC_RELEASE);
}

static void ec_watch_main(void *arg) {
  ec_watcher *w = arg;
  bool loaded = false;
  while (rv_ctx_err(w->stop) == RV_OK) {
    if (w->need_resync) {
      ec_resync(w);
      loaded = !w->need_resync;
      continue;
    }
    if (!loaded) {
      uint64_t rev = __atomic_load_n(&w->rev, __ATOMIC_ACQUIRE);
      if (rev == 0) /* "from the beginning": etcd's first revision is 1, an empty store */
        __atomic_store_n(&w->rev, rev = 1, __ATOMIC_RELEASE);
      int rc = load(w, w->stop, &rev);
      if (rc == RV_ERANGE) { /* compacted (or no revision): start over from now */
        w->need_resync = true;
        continue;
      }
      if (rc != RV_OK) {
        rv_sleep(w->stop, EC_WATCH_BACKOFF_NS);
        continue;
      }
      loaded = true;
    }
    rv_ctx *poll = rv_ctx_new(w->stop);
    if (!poll)
      break;
    rv_rawmu_lock(&w->poll_mu);
    w->poll = poll;
    rv_rawmu_unlock(&w->poll_mu);
    uint64_t from = __atomic_load_n(&w->rev, __ATOMIC_ACQUIRE) + 1;
    json_t *req = json_pack("{s:{s:o,s:o,s:o,s:b}}", "create_request", "key", jb64(EC_CFG_PREFIX),
                            "range_end", jb64_end(EC_CFG_PREFIX), "start_revision",
                            jint_str((int64_t)from), "progress_notify", 1);
    int rc = ec_stream(w->c->etcd, poll, "/v3/watch", req, watch_on_msg, w, NULL);
    rv_rawmu_lock(&w->poll_mu);
    w->poll = NULL;
    rv_rawmu_unlock(&w->poll_mu);
    rv_ctx_free(poll);
    if (rv_ctx_err(w->stop) != RV_OK)
      break;
    CC_STAT_INC(w->c, watch_reconnects);
    if (rc != RV_ECANCELED && !w->need_resync) /* the test hook's drop reconnects at once */
      rv_sleep(w->stop, EC_WATCH_BACKOFF_NS);
  }
}

int ec_config_watch(rv_coord_client *c, const char *service, const char *replica,
                    const rv_config_watch_opts *o, uint64_t since_rev, rv_config_watch_fn cb,
                    void *arg, rv_config_watcher **out) {
  int rc;
  if (since_rev == RV_CONFIG_SINCE_NOW) {
    rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
    rc = op ? ec_config_revision(op, c, &since_rev) : RV_ENOMEM;
    rv_ctx_free(op);
    if (rc != RV_OK)
      return rc;
  }
  ec_watcher *w = calloc(1, sizeof *w);
  if (!w)
    return RV_ENOMEM;
  w->h.etcd = true;
  w->c = c;
  w->nlayers = layers(w->ns, service, replica);
  w->prefix = o->prefix && o->prefix[0] ? strdup(o->prefix) : NULL;
  w->raw = o->raw;
  for (int i = 0; o->raw && i < RV_CONFIG_RAW_NS_MAX && o->raw_ns[i]; i++)
    w->raw_ns[w->nraw++] = strdup(o->raw_ns[i]);
  w->rev = since_rev;
  w->cb = cb;
  w->arg = arg;
  rv_rawmu_init(&w->poll_mu);
  w->stop = rv_ctx_new(NULL);
  rv_config_watcher *pub = (rv_config_watcher *)(void *)w;
  if ((o->raw && w->nraw == 0) || !w->stop) {
    ec_config_watch_stop(pub);
    return o->raw && w->nraw == 0 ? RV_EINVAL : RV_ENOMEM;
  }
  rc = rv_thread_start(&w->t, "etcd-watch", "watcher", ec_watch_main, w);
  if (rc != RV_OK) {
    w->t = NULL;
    ec_config_watch_stop(pub);
    return rc;
  }
  *out = pub;
  return RV_OK;
}

uint64_t ec_config_watch_revision(rv_config_watcher *w) {
  return __atomic_load_n(&EW(w)->rev, __ATOMIC_ACQUIRE);
}

void ec_config_watch_test_drop(rv_config_watcher *ww) {
  ec_watcher *w = EW(ww);
  rv_rawmu_lock(&w->poll_mu);
  if (w->poll)
    rv_ctx_cancel(w->poll, "test: drop the watch connection");
  rv_rawmu_unlock(&w->poll_mu);
}

void ec_config_watch_stop(rv_config_watcher *ww) {
  ec_watcher *w = EW(ww);
  if (w->stop)
    rv_ctx_cancel(w->stop, "watch stopped");
  if (w->t)
    rv_thread_join(w->t);
  rv_ctx_free(w->stop);
  rv_rawmu_destroy(&w->poll_mu);
  ents_clear(w);
  free(w->ents);
  free(w->prefix);
  for (int i = 0; i < w->nraw; i++)
    free(w->raw_ns[i]);
  free(w);
}
