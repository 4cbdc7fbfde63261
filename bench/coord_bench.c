/*
 * coord_bench: ravel coord against redis-server and etcd, side by side, in one run.
 *
 * bench/coord_bench.sh starts the three servers on loopback and runs this
 * program with their ports; the program only talks to them.  Issue 4's goal:
 * coord's cycle rate at least Redis's (while coord also gives sessions and
 * fencing tokens) and a hand-off p99 under 1 ms.
 *
 * What is measured
 *
 * 1. Uncontended acquire+release cycles per second, with 1 client and with
 *    --clients (default 50) clients.  Each client is a thread of its own with
 *    its own connection and its own lock name; every acquire is a request whose
 *    reply arrives before the release is sent, and the release's reply arrives
 *    before the next acquire (no pipelining): request/response latency is what
 *    counts.  Each phase runs WARMUP_MS unmeasured, then --duration-ms measured.
 *    The phases run --rounds times (default 5), the systems taking turns
 *    (coord, redis, etcd, coord, ...), and the table shows each median: the
 *    machine is small and shared, and a burst of someone else's work during
 *    one phase must not decide a comparison.
 *      coord: SESSION.OPEN once per client, then
 *             LOCK.ACQUIRE sid name NOWAIT -> fencing token, LOCK.RELEASE sid name token.
 *      redis: the standard single-instance Redis lock: SET name value NX PX 30000,
 *             released by EVALSHA of a compare-and-delete Lua script (SCRIPT LOAD
 *             once per client).  No session, no fencing token.
 *      etcd:  its v3 lock API through the JSON gateway over HTTP/1.1 keep-alive
 *             (libcurl): POST /v3/lease/grant once per client, then /v3/lock/lock
 *             {name, lease} -> key and /v3/lock/unlock {key}.  etcd has no
 *             try-lock; an uncontended lock returns at once.  Its fencing token
 *             (the key's create_revision) would need one more range call,
 *             which is not made here: the cycle counted for etcd is the cheapest.
 *
 * 2. Hand-off latency with --handoff-clients (default 8) clients contending on
 *    one lock.  Each loops: blocking acquire -> hold --hold-us of busy work ->
 *    release.  Right before sending its release, the holder writes a monotonic
 *    timestamp (rv_now_ns) to memory shared by the clients of this process; the
 *    next grant's hand-off latency is the time from that timestamp to its reply
 *    arriving.  The first grant has no previous release and is not counted.  The
 *    phase ends after --handoffs samples or --handoff-max-ms, whichever first;
 *    it too runs --rounds times, interleaved, and the table pools the samples.
 *      coord: LOCK.ACQUIRE sid name (blocks in coord's FIFO queue).
 *      etcd:  /v3/lock/lock (blocks until the waiter's predecessor key is deleted).
 *      redis: has no blocking lock: a waiter retries SET NX.  By default it
 *             retries at once (--redis-retry-us 0): Redis's best case for
 *             latency, paid for by every waiting client spinning on a CPU.  A
 *             real client sleeps between retries (--redis-retry-us N); the first
 *             waiter to retry after a release wins, so with W waiters a hand-off
 *             waits about N/(W+1) on average, in no particular order (no FIFO).
 *    Each grant is checked: mutual exclusion (no two holders at once) and, for
 *    coord, fencing tokens strictly increasing; a violation fails the run.
 *
 * Output: a table (workload | ravel coord | redis | etcd | coord/redis |
 * coord/etcd) and one machine-readable line starting "coord_bench summary:".
 * For cycle rates a ratio above 1 favours coord; for latencies, below 1.
 *
 * Threads, clocks and sleeps go through src/rt/rt.h (the rt seam).
 */
#include "rt/rt.h"

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* ---- named constants ----------------------------------------------------------------- */

#define BENCH_HOST "127.0.0.1"
#define DEFAULT_DURATION_MS 2000        /* measured time of each cycle phase */
#define DEFAULT_ROUNDS 5                /* phases are repeated, interleaved; see the top */
#define MAX_ROUNDS 20
#define WARMUP_MS 300                   /* run, unmeasured, before each cycle phase */
#define DEFAULT_MANY_CLIENTS 50         /* the "many clients" cycle phase */
#define MAX_CLIENTS 256
#define DEFAULT_HANDOFF_CLIENTS 8
#define DEFAULT_HANDOFFS 2000           /* hand-off samples per system and round */
#define DEFAULT_HANDOFF_MAX_MS 5000     /* or this long, whichever ends first */
#define DEFAULT_HOLD_US 100             /* busy work while holding, hand-off phase */
#define SESSION_TTL_MS 60000            /* coord session TTL: longer than any phase */
#define LEASE_TTL_S 60                  /* etcd lease TTL: the same */
#define REDIS_PX_MS 30000               /* Redis lock expiry (the lock's "lease") */
#define IO_TIMEOUT_MS 30000             /* any single request; a stuck server fails the run */
#define CONNECT_TIMEOUT_MS 5000
#define START_POLL_NS (50 * RV_NS_PER_US) /* workers poll the start flag this often */
#define ERR_MAX 256
#define NAME_MAX_LEN 64
#define KEY_MAX_LEN 160                 /* Redis lock value or etcd lock key (base64) */
#define URL_MAX_LEN 128
#define BODY_MAX_LEN 512
#define PERCENT_P50 50.0
#define PERCENT_P99 99.0
#define HANDOFF_GOAL_P99_US 1000.0      /* issue 4: hand-off p99 under 1 ms */

/* The standard compare-and-delete release of a single-instance Redis lock. */
static const char REDIS_RELEASE_LUA[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";

/* ---- configuration and shared state ---------------------------------------------------- */

typedef struct bench_cfg {
  uint16_t coord_port, redis_port, etcd_port; /* 0: system not run */
  int64_t duration_ns;
  int rounds;
  int many_clients;
  int handoff_clients;
  size_t handoffs;
  int64_t handoff_max_ns;
  int64_t hold_ns;
  int64_t redis_retry_ns;                      /* 0: spin */
} bench_cfg;

enum sys { SYS_COORD, SYS_REDIS, SYS_ETCD, SYS_COUNT };
static const char *const SYS_NAMES[SYS_COUNT] = {"coord", "redis", "etcd"};

/* A growable byte buffer for HTTP response bodies. */
typedef struct membuf {
  char *p;
  size_t len, cap;
} membuf;

/* One client: one connection and (coord) a session or (etcd) a lease. */
typedef struct client {
  enum sys sys;
  const bench_cfg *cfg;
  int idx;
  char err[ERR_MAX];
  /* RESP (coord, redis) */
  redisContext *rc;
  uint64_t sid;                 /* coord session */
  char sha[48];                 /* redis release script */
  uint64_t seq;                 /* redis: makes each lock value unique */
  /* HTTP (etcd) */
  CURL *curl;
  struct curl_slist *hdrs;
  membuf resp;
  char lease[32];               /* int64 as a decimal string, as the gateway gives it */
} client;

/* What a grant returns and its release needs. */
typedef struct grant {
  uint64_t token;               /* coord fencing token; 0 for the peers */
  char key[KEY_MAX_LEN];        /* redis: the value SET; etcd: the lock key (base64) */
} grant;

/* Result codes of acquire calls. */
enum { ACQ_GRANTED = 1, ACQ_BUSY = 0 }; /* negative: error, text in client.err */

static void cerr(client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cerr(client *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
}

static struct timeval ms_to_tv(int64_t ms) {
  return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* ---- RESP helpers (coord and redis) ------------------------------------------------------ */

static int resp_connect(client *c, uint16_t port) {
  c->rc = redisConnectWithTimeout(BENCH_HOST, port, ms_to_tv(CONNECT_TIMEOUT_MS));
  if (!c->rc || c->rc->err) {
    cerr(c, "connect %s:%u: %s", BENCH_HOST, port, c->rc ? c->rc->errstr : "out of memory");
    return -1;
  }
  if (redisSetTimeout(c->rc, ms_to_tv(IO_TIMEOUT_MS)) != REDIS_OK) {
    cerr(c, "set timeout: %s", c->rc->errstr);
    return -1;
  }
  return 0;
}

/* Send one command (argv form, no formatting surprises) and wait for its reply. */
static redisReply *resp_call(client *c, int argc, const char **argv) {
  redisReply *r = redisCommandArgv(c->rc, argc, argv, NULL);
  if (!r) {
    cerr(c, "%s: %s", argv[0], c->rc->errstr);
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    cerr(c, "%s: server error: %s", argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

static void resp_close(client *c) {
  if (c->rc)
    redisFree(c->rc);
  c->rc = NULL;
}

/* ---- coord ---------------------------------------------------------------------------- */

static int coord_open(client *c) {
  if (resp_connect(c, c->cfg->coord_port) < 0)
    return -1;
  char ttl[24], replica[24];
  snprintf(ttl, sizeof ttl, "%d", SESSION_TTL_MS);
  snprintf(replica, sizeof replica, "%d", c->idx);
  const char *argv[] = {"SESSION.OPEN", ttl, "SERVICE", "coord-bench", "REPLICA", replica};
  redisReply *r = resp_call(c, 6, argv);
  if (!r)
    return -1;
  if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0) {
    cerr(c, "SESSION.OPEN: unexpected reply type %d", r->type);
    freeReplyObject(r);
    return -1;
  }
  c->sid = (uint64_t)r->integer;
  freeReplyObject(r);
  return 0;
}

static int coord_acquire_cmd(client *c, const char *name, bool nowait, grant *g) {
  char sid[24];
  snprintf(sid, sizeof sid, "%" PRIu64, c->sid);
  const char *argv[] = {"LOCK.ACQUIRE", sid, name, "NOWAIT"};
  redisReply *r = resp_call(c, nowait ? 4 : 3, argv);
  if (!r)
    return -1;
  int rc;
  if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
    g->token = (uint64_t)r->integer;
    rc = ACQ_GRANTED;
  } else if (r->type == REDIS_REPLY_NIL && nowait) {
    rc = ACQ_BUSY;
  } else {
    cerr(c, "LOCK.ACQUIRE: unexpected reply type %d", r->type);
    rc = -1;
  }
  freeReplyObject(r);
  return rc;
}

static int coord_release(client *c, const char *name, const grant *g) {
  char sid[24], tok[24];
  snprintf(sid, sizeof sid, "%" PRIu64, c->sid);
  snprintf(tok, sizeof tok, "%" PRIu64, g->token);
  const char *argv[] = {"LOCK.RELEASE", sid, name, tok};
  redisReply *r = resp_call(c, 4, argv);
  if (!r)
    return -1;
  bool ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
  if (!ok)
    cerr(c, "LOCK.RELEASE: unexpected reply type %d", r->type);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

static void coord_close(client *c) {
  if (c->rc && c->sid) {
    char sid[24];
    snprintf(sid, sizeof sid, "%" PRIu64, c->sid);
    const char *argv[] = {"SESSION.CLOSE", sid};
    redisReply *r = resp_call(c, 2, argv);
    if (r)
      freeReplyObject(r);
  }
  resp_close(c);
}

/* ---- redis ------------------------------------------------------------------------------ */

static int redis_open(client *c) {
  if (resp_connect(c, c->cfg->redis_port) < 0)
    return -1;
  const char *argv[] = {"SCRIPT", "LOAD", REDIS_RELEASE_LUA};
  redisReply *r = resp_call(c, 3, argv);
  if (!r)
    return -1;
  bool ok = r->type == REDIS_REPLY_STRING && r->len < sizeof c->sha;
  if (ok)
    memcpy(c->sha, r->str, r->len + 1);
  else
    cerr(c, "SCRIPT LOAD: unexpected reply type %d", r->type);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

static int redis_try_acquire(client *c, const char *name, grant *g) {
  /* A value unique to this client and attempt, as the Redis lock recipe asks. */
  snprintf(g->key, sizeof g->key, "cb-%d-%" PRIu64, c->idx, ++c->seq);
  char px[24];
  snprintf(px, sizeof px, "%d", REDIS_PX_MS);
  const char *argv[] = {"SET", name, g->key, "NX", "PX", px};
  redisReply *r = resp_call(c, 6, argv);
  if (!r)
    return -1;
  int rc;
  if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0)
    rc = ACQ_GRANTED;
  else if (r->type == REDIS_REPLY_NIL)
    rc = ACQ_BUSY;
  else {
    cerr(c, "SET NX: unexpected reply type %d", r->type);
    rc = -1;
  }
  freeReplyObject(r);
  return rc;
}

static int redis_release(client *c, const char *name, const grant *g) {
  const char *argv[] = {"EVALSHA", c->sha, "1", name, g->key};
  redisReply *r = resp_call(c, 5, argv);
  if (!r)
    return -1;
  bool ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  if (!ok)
    cerr(c, "EVALSHA release: lock was not ours (type %d, %lld)", r->type, r->integer);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

/* ---- etcd (v3 JSON gateway over libcurl) -------------------------------------------------- */

static size_t membuf_write(char *ptr, size_t size, size_t nmemb, void *arg) {
  membuf *b = arg;
  size_t n = size * nmemb;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      return 0; /* curl reports a write error */
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, ptr, n);
  b->len += n;
  b->p[b->len] = '\0';
  return n;
}

/* Standard base64 with padding, as the gateway requires for bytes fields. */
static void base64(const char *in, char *out, size_t cap) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = strlen(in), o = 0;
  for (size_t i = 0; i < n && o + 5 < cap; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)(unsigned char)in[i + 1] << 8;
    if (i + 2 < n)
      v |= (uint32_t)(unsigned char)in[i + 2];
    out[o++] = tbl[(v >> 18) & 63];
    out[o++] = tbl[(v >> 12) & 63];
    out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? tbl[v & 63] : '=';
  }
  out[o] = '\0';
}

/*
 * POST body to path; on HTTP 200 parse the JSON reply into *out and return 0.
 * The caller json_decref()s *out.
 */
static int etcd_post(client *c, const char *path, const char *body, json_t **out) {
  char url[URL_MAX_LEN];
  snprintf(url, sizeof url, "http://%s:%u%s", BENCH_HOST, c->cfg->etcd_port, path);
  c->resp.len = 0;
  curl_easy_setopt(c->curl, CURLOPT_URL, url);
  curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
  CURLcode cc = curl_easy_perform(c->curl);
  if (cc != CURLE_OK) {
    cerr(c, "POST %s: %s", path, curl_easy_strerror(cc));
    return -1;
  }
  long status = 0;
  curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    cerr(c, "POST %s: HTTP %ld: %.120s", path, status, c->resp.p ? c->resp.p : "");
    return -1;
  }
  json_error_t je;
  json_t *j = json_loadb(c->resp.p ? c->resp.p : "", c->resp.len, 0, &je);
  if (!j) {
    cerr(c, "POST %s: bad JSON: %s", path, je.text);
    return -1;
  }
  *out = j;
  return 0;
}

static int etcd_open(client *c) {
  c->curl = curl_easy_init();
  if (!c->curl) {
    cerr(c, "curl_easy_init failed");
    return -1;
  }
  c->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->hdrs);
  /* Plaintext HTTP/2 goes to etcd's gRPC server: force HTTP/1.1 (reference §1.4). */
  curl_easy_setopt(c->curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c->curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
  curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)IO_TIMEOUT_MS);
  curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, membuf_write);
  curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &c->resp);
  char body[BODY_MAX_LEN];
  snprintf(body, sizeof body, "{\"TTL\": %d}", LEASE_TTL_S);
  json_t *j;
  if (etcd_post(c, "/v3/lease/grant", body, &j) < 0)
    return -1;
  /* int64 fields come back as strings (reference §1.4). */
  const char *id = json_string_value(json_object_get(j, "ID"));
  bool ok = id && strlen(id) < sizeof c->lease;
  if (ok)
    snprintf(c->lease, sizeof c->lease, "%s", id);
  else
    cerr(c, "lease grant: no ID in %.120s", c->resp.p);
  json_decref(j);
  return ok ? 0 : -1;
}

/* /v3/lock/lock blocks until granted; uncontended, it returns at once. */
static int etcd_acquire(client *c, const char *name, grant *g) {
  char b64[2 * NAME_MAX_LEN], body[BODY_MAX_LEN];
  base64(name, b64, sizeof b64);
  snprintf(body, sizeof body, "{\"name\": \"%s\", \"lease\": \"%s\"}", b64, c->lease);
  json_t *j;
  if (etcd_post(c, "/v3/lock/lock", body, &j) < 0)
    return -1;
  const char *key = json_string_value(json_object_get(j, "key"));
  bool ok = key && strlen(key) < sizeof g->key;
  if (ok)
    snprintf(g->key, sizeof g->key, "%s", key);
  else
    cerr(c, "lock: no key in %.120s", c->resp.p);
  json_decref(j);
  return ok ? ACQ_GRANTED : -1;
}

static int etcd_release(client *c, const char *name, const grant *g) {
  char body[BODY_MAX_LEN];
  snprintf(body, sizeof body, "{\"key\": \"%s\"}", g->key);
  json_t *j;
  if (etcd_post(c, "/v3/lock/unlock", body, &j) < 0)
    return -1;
  json_decref(j);
  return 0;
}

static void etcd_close(client *c) {
  if (c->curl && c->lease[0]) {
    char body[BODY_MAX_LEN];
    snprintf(body, sizeof body, "{\"ID\": \"%s\"}", c->lease);
    json_t *j;
    if (etcd_post(c, "/v3/lease/revoke", body, &j) == 0)
      json_decref(j);
  }
  if (c->curl)
    curl_easy_cleanup(c->curl);
  curl_slist_free_all(c->hdrs);
  free(c->resp.p);
  c->curl = NULL;
  c->hdrs = NULL;
  c->resp = (membuf){0};
}

/* ---- the three systems behind one interface --------------------------------------------- */

static int client_open(client *c, enum sys sys, const bench_cfg *cfg, int idx) {
  *c = (client){.sys = sys, .cfg = cfg, .idx = idx};
  switch (sys) {
  case SYS_COORD:
    return coord_open(c);
  case SYS_REDIS:
    return redis_open(c);
  case SYS_ETCD:
    return etcd_open(c);
  default:
    return -1;
  }
}

static void client_close(client *c) {
  switch (c->sys) {
  case SYS_COORD:
    coord_close(c);
    break;
  case SYS_REDIS:
    resp_close(c);
    break;
  case SYS_ETCD:
    etcd_close(c);
    break;
  default:
    break;
  }
}

/* Acquire without waiting: ACQ_GRANTED, ACQ_BUSY or -1.  etcd has no try-lock. */
static int client_try_acquire(client *c, const char *name, grant *g) {
  g->token = 0;
  switch (c->sys) {
  case SYS_COORD:
    return coord_acquire_cmd(c, name, true, g);
  case SYS_REDIS:
    return redis_try_acquire(c, name, g);
  case SYS_ETCD:
    return etcd_acquire(c, name, g);
  default:
    return -1;
  }
}

/*
 * Acquire, waiting as long as it takes: ACQ_GRANTED, ACQ_BUSY (only when a
 * Redis retry loop sees *stop) or -1.
 */
static int client_acquire(client *c, const char *name, grant *g, atomic_bool *stop) {
  g->token = 0;
  switch (c->sys) {
  case SYS_COORD:
    return coord_acquire_cmd(c, name, false, g);
  case SYS_ETCD:
    return etcd_acquire(c, name, g);
  case SYS_REDIS:
    for (;;) {
      int rc = redis_try_acquire(c, name, g);
      if (rc != ACQ_BUSY || atomic_load(stop))
        return rc;
      if (c->cfg->redis_retry_ns > 0)
        rv_sleep(NULL, c->cfg->redis_retry_ns);
    }
  default:
    return -1;
  }
}

static int client_release(client *c, const char *name, const grant *g) {
  switch (c->sys) {
  case SYS_COORD:
    return coord_release(c, name, g);
  case SYS_REDIS:
    return redis_release(c, name, g);
  case SYS_ETCD:
    return etcd_release(c, name, g);
  default:
    return -1;
  }
}

/* Open n clients; on failure close those opened and print why. */
static int open_clients(client *cs, int n, enum sys sys, const bench_cfg *cfg) {
  for (int i = 0; i < n; i++) {
    if (client_open(&cs[i], sys, cfg, i) < 0) {
      fprintf(stderr, "coord_bench: %s client %d: %s\n", SYS_NAMES[sys], i, cs[i].err);
      for (int k = 0; k <= i; k++)
        client_close(&cs[k]);
      return -1;
    }
  }
  return 0;
}

static void close_clients(client *cs, int n) {
  for (int i = 0; i < n; i++)
    client_close(&cs[i]);
}

static void wait_for_start(atomic_bool *start) {
  while (!atomic_load(start))
    rv_sleep(NULL, START_POLL_NS);
}

/* ---- workload 1: uncontended cycles ---------------------------------------------------------- */

typedef struct cycle_phase {
  atomic_bool start, stop, failed;
} cycle_phase;

typedef struct cycle_worker {
  client *c;
  cycle_phase *ph;
  char name[NAME_MAX_LEN];
  _Atomic uint64_t cycles;      /* read by the main thread while running */
  uint64_t busy;                /* uncontended try-acquires found busy: must stay 0 */
  uint64_t token_regressions;   /* coord: a token not above the previous one */
} cycle_worker;

static void cycle_main(void *arg) {
  cycle_worker *w = arg;
  client *c = w->c;
  uint64_t last_token = 0;
  wait_for_start(&w->ph->start);
  while (!atomic_load(&w->ph->stop)) {
    grant g;
    int rc = client_try_acquire(c, w->name, &g);
    if (rc == ACQ_BUSY) {
      w->busy++;
      continue;
    }
    if (rc < 0 || client_release(c, w->name, &g) < 0) {
      fprintf(stderr, "coord_bench: %s cycle client %d: %s\n", SYS_NAMES[c->sys], c->idx, c->err);
      atomic_store(&w->ph->failed, true);
      atomic_store(&w->ph->stop, true);
      return;
    }
    if (c->sys == SYS_COORD) {
      if (g.token <= last_token)
        w->token_regressions++;
      last_token = g.token;
    }
    atomic_fetch_add_explicit(&w->cycles, 1, memory_order_relaxed);
  }
}

static uint64_t total_cycles(cycle_worker *ws, int n) {
  uint64_t t = 0;
  for (int i = 0; i < n; i++)
    t += atomic_load_explicit(&ws[i].cycles, memory_order_relaxed);
  return t;
}

/* Cycles per second of n clients, or NAN on failure. */
static double run_cycles(enum sys sys, const bench_cfg *cfg, int n) {
  client *cs = calloc((size_t)n, sizeof *cs);
  cycle_worker *ws = calloc((size_t)n, sizeof *ws);
  rv_thread **ts = calloc((size_t)n, sizeof *ts);
  double rate = NAN;
  if (!cs || !ws || !ts || open_clients(cs, n, sys, cfg) < 0)
    goto out;
  cycle_phase ph;
  atomic_init(&ph.start, false);
  atomic_init(&ph.stop, false);
  atomic_init(&ph.failed, false);
  int started = 0;
  for (int i = 0; i < n; i++) {
    ws[i].c = &cs[i];
    ws[i].ph = &ph;
    atomic_init(&ws[i].cycles, 0);
    snprintf(ws[i].name, sizeof ws[i].name, "cb-cycle-%d", i);
    char tname[RV_THREAD_NAME_MAX];
    snprintf(tname, sizeof tname, "%s-cyc-%d", SYS_NAMES[sys], i);
    if (rv_thread_start(&ts[i], tname, "bench", cycle_main, &ws[i]) != RV_OK) {
      fprintf(stderr, "coord_bench: cannot start thread %d\n", i);
      atomic_store(&ph.failed, true);
      atomic_store(&ph.stop, true);
      break;
    }
    started++;
  }
  atomic_store(&ph.start, true);
  if (!atomic_load(&ph.stop)) {
    rv_sleep(NULL, WARMUP_MS * RV_NS_PER_MS);
    uint64_t c0 = total_cycles(ws, n);
    int64_t t0 = rv_now_ns();
    rv_sleep(NULL, cfg->duration_ns);
    uint64_t c1 = total_cycles(ws, n);
    int64_t t1 = rv_now_ns();
    atomic_store(&ph.stop, true);
    rate = (double)(c1 - c0) * (double)RV_NS_PER_S / (double)(t1 - t0);
  }
  for (int i = 0; i < started; i++)
    rv_thread_join(ts[i]);
  uint64_t busy = 0, regress = 0;
  for (int i = 0; i < n; i++) {
    busy += ws[i].busy;
    regress += ws[i].token_regressions;
  }
  if (busy || regress) {
    fprintf(stderr, "coord_bench: %s: %" PRIu64 " uncontended acquires found busy, %" PRIu64
            " fencing tokens not increasing\n", SYS_NAMES[sys], busy, regress);
    atomic_store(&ph.failed, true);
  }
  if (atomic_load(&ph.failed))
    rate = NAN;
  close_clients(cs, n);
out:
  free(cs);
  free(ws);
  free(ts);
  return rate;
}

/* ---- workload 2: hand-off latency ------------------------------------------------------ */

#define NO_HOLDER (-1)
#define HANDOFF_LOCK "cb-handoff"

typedef struct handoff_phase {
  const bench_cfg *cfg;
  atomic_bool start, stop, failed;
  _Atomic int64_t last_release_ns;   /* 0 until the first release */
  atomic_int holder;                 /* client index holding the lock, or NO_HOLDER */
  atomic_int last_holder;
  _Atomic uint64_t last_token;       /* coord: the previous grant's token */
  atomic_size_t nsamples;
  atomic_ulong violations;           /* two holders at once, or a token not increasing */
  atomic_ulong same_client;          /* grants to the client that held it just before */
  atomic_ulong grants;
  int64_t deadline_ns;
  int64_t *samples;                  /* cfg->handoffs entries */
} handoff_phase;

typedef struct handoff_worker {
  client *c;
  handoff_phase *ph;
} handoff_worker;

static void busy_work(int64_t since_ns, int64_t dur_ns) {
  while (rv_now_ns() - since_ns < dur_ns) {
  }
}

static void handoff_main(void *arg) {
  handoff_worker *w = arg;
  handoff_phase *ph = w->ph;
  client *c = w->c;
  wait_for_start(&ph->start);
  while (!atomic_load(&ph->stop)) {
    grant g;
    int rc = client_acquire(c, HANDOFF_LOCK, &g, &ph->stop);
    if (rc == ACQ_BUSY)
      break; /* a Redis retry loop saw stop */
    if (rc < 0) {
      fprintf(stderr, "coord_bench: %s hand-off client %d: %s\n", SYS_NAMES[c->sys], c->idx,
              c->err);
      atomic_store(&ph->failed, true);
      atomic_store(&ph->stop, true);
      return;
    }
    int64_t granted_ns = rv_now_ns();
    if (atomic_exchange(&ph->holder, c->idx) != NO_HOLDER)
      atomic_fetch_add(&ph->violations, 1);
    if (c->sys == SYS_COORD && atomic_exchange(&ph->last_token, g.token) >= g.token)
      atomic_fetch_add(&ph->violations, 1);
    if (atomic_exchange(&ph->last_holder, c->idx) == c->idx)
      atomic_fetch_add(&ph->same_client, 1);
    atomic_fetch_add(&ph->grants, 1);
    int64_t released_ns = atomic_load(&ph->last_release_ns);
    if (released_ns != 0 && !atomic_load(&ph->stop)) {
      size_t i = atomic_fetch_add(&ph->nsamples, 1);
      if (i < ph->cfg->handoffs)
        ph->samples[i] = granted_ns - released_ns;
      if (i + 1 >= ph->cfg->handoffs || granted_ns >= ph->deadline_ns)
        atomic_store(&ph->stop, true);
    }
    busy_work(granted_ns, ph->cfg->hold_ns);
    atomic_store(&ph->holder, NO_HOLDER);
    atomic_store(&ph->last_release_ns, rv_now_ns());
    if (client_release(c, HANDOFF_LOCK, &g) < 0) {
      fprintf(stderr, "coord_bench: %s hand-off client %d: %s\n", SYS_NAMES[c->sys], c->idx,
              c->err);
      atomic_store(&ph->failed, true);
      atomic_store(&ph->stop, true);
      return;
    }
  }
}

typedef struct latency {
  bool ok;
  size_t n;
  double p50_us, p99_us, max_us, mean_us;
  unsigned long grants, same_client; /* grants, and those back to the previous holder */
} latency;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile_us(const int64_t *v, size_t n, double pct) {
  size_t rank = (size_t)ceil(pct / 100.0 * (double)n);
  if (rank < 1)
    rank = 1;
  return (double)v[rank - 1] / (double)RV_NS_PER_US;
}

/* Sorts v[0..n) and summarizes it (n > 0). */
static latency summarize(int64_t *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_i64);
  double sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (double)v[i];
  return (latency){.ok = true,
                   .n = n,
                   .p50_us = percentile_us(v, n, PERCENT_P50),
                   .p99_us = percentile_us(v, n, PERCENT_P99),
                   .max_us = (double)v[n - 1] / (double)RV_NS_PER_US,
                   .mean_us = sum / (double)n / (double)RV_NS_PER_US};
}

/* One hand-off phase; its samples are also appended to pool (*pool_n of them so far). */
static latency run_handoff(enum sys sys, const bench_cfg *cfg, int64_t *pool, size_t *pool_n) {
  latency res = {0};
  int n = cfg->handoff_clients;
  client *cs = calloc((size_t)n, sizeof *cs);
  handoff_worker *ws = calloc((size_t)n, sizeof *ws);
  rv_thread **ts = calloc((size_t)n, sizeof *ts);
  handoff_phase *ph = calloc(1, sizeof *ph);
  int64_t *samples = calloc(cfg->handoffs, sizeof *samples);
  if (!cs || !ws || !ts || !ph || !samples || open_clients(cs, n, sys, cfg) < 0)
    goto out;
  ph->cfg = cfg;
  ph->samples = samples;
  atomic_init(&ph->start, false);
  atomic_init(&ph->stop, false);
  atomic_init(&ph->failed, false);
  atomic_init(&ph->last_release_ns, 0);
  atomic_init(&ph->holder, NO_HOLDER);
  atomic_init(&ph->last_holder, NO_HOLDER);
  atomic_init(&ph->last_token, 0);
  atomic_init(&ph->nsamples, 0);
  atomic_init(&ph->violations, 0);
  atomic_init(&ph->same_client, 0);
  atomic_init(&ph->grants, 0);
  int started = 0;
  for (int i = 0; i < n; i++) {
    ws[i] = (handoff_worker){&cs[i], ph};
    char tname[RV_THREAD_NAME_MAX];
    snprintf(tname, sizeof tname, "%s-hand-%d", SYS_NAMES[sys], i);
    if (rv_thread_start(&ts[i], tname, "bench", handoff_main, &ws[i]) != RV_OK) {
      fprintf(stderr, "coord_bench: cannot start thread %d\n", i);
      atomic_store(&ph->failed, true);
      atomic_store(&ph->stop, true);
      break;
    }
    started++;
  }
  ph->deadline_ns = rv_now_ns() + cfg->handoff_max_ns;
  atomic_store(&ph->start, true);
  for (int i = 0; i < started; i++)
    rv_thread_join(ts[i]);
  close_clients(cs, n);
  size_t ns = atomic_load(&ph->nsamples);
  if (ns > cfg->handoffs)
    ns = cfg->handoffs;
  unsigned long viol = atomic_load(&ph->violations);
  if (viol)
    fprintf(stderr, "coord_bench: %s: %lu mutual-exclusion or fencing-token violations\n",
            SYS_NAMES[sys], viol);
  if (atomic_load(&ph->failed) || viol || ns == 0)
    goto out;
  memcpy(pool + *pool_n, samples, ns * sizeof *samples);
  *pool_n += ns;
  res = summarize(samples, ns);
  res.grants = atomic_load(&ph->grants);
  res.same_client = atomic_load(&ph->same_client);
out:
  free(cs);
  free(ws);
  free(ts);
  free(ph);
  free(samples);
  return res;
}

/* ---- report ---------------------------------------------------------------------------------- */

#define ROWS 6
enum { ROW_C1, ROW_CN, ROW_P50, ROW_P99, ROW_MAX, ROW_SAME };

typedef struct results {
  bool run[SYS_COUNT];
  double v[ROWS][SYS_COUNT];      /* NAN: failed or not run */
  double rounds[2][SYS_COUNT][MAX_ROUNDS]; /* cycle rates of each round: [1 client, many] */
  double round_p99[SYS_COUNT][MAX_ROUNDS]; /* hand-off p99 of each round */
  size_t handoff_n[SYS_COUNT];
} results;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n); NAN if any is NAN (a failed phase fails the figure). */
static double median(const double *v, int n) {
  double s[MAX_ROUNDS];
  for (int i = 0; i < n; i++) {
    if (isnan(v[i]))
      return NAN;
    s[i] = v[i];
  }
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void fmt_cell(char *out, size_t cap, double v, bool run) {
  if (!run)
    snprintf(out, cap, "-");
  else if (isnan(v))
    snprintf(out, cap, "FAILED");
  else if (v >= 100)
    snprintf(out, cap, "%.0f", v);
  else
    snprintf(out, cap, "%.1f", v);
}

static void fmt_ratio(char *out, size_t cap, double a, double b) {
  if (isnan(a) || isnan(b) || b == 0)
    snprintf(out, cap, "-");
  else
    snprintf(out, cap, "%.2f", a / b);
}

static void print_report(const results *r, const bench_cfg *cfg) {
  char labels[ROWS][64];
  snprintf(labels[ROW_C1], 64, "cycles/s, 1 client");
  snprintf(labels[ROW_CN], 64, "cycles/s, %d clients", cfg->many_clients);
  snprintf(labels[ROW_P50], 64, "hand-off p50 us, %d clients", cfg->handoff_clients);
  snprintf(labels[ROW_P99], 64, "hand-off p99 us, %d clients", cfg->handoff_clients);
  snprintf(labels[ROW_MAX], 64, "hand-off max us, %d clients", cfg->handoff_clients);
  snprintf(labels[ROW_SAME], 64, "hand-offs back to same client %%");
  printf("\n%-32s | %12s | %12s | %12s | %11s | %10s\n", "workload", "ravel coord", "redis",
         "etcd", "coord/redis", "coord/etcd");
  printf("%.*s\n", 32 + 3 * 15 + 14 + 13, "-------------------------------------------------"
         "-----------------------------------------------------------------------------------");
  for (int row = 0; row < ROWS; row++) {
    char cell[SYS_COUNT][24], rr[24], re[24];
    for (int s = 0; s < SYS_COUNT; s++)
      fmt_cell(cell[s], sizeof cell[s], r->v[row][s], r->run[s]);
    if (row == ROW_SAME) {
      snprintf(rr, sizeof rr, " ");
      snprintf(re, sizeof re, " ");
    } else {
      fmt_ratio(rr, sizeof rr, r->v[row][SYS_COORD], r->v[row][SYS_REDIS]);
      fmt_ratio(re, sizeof re, r->v[row][SYS_COORD], r->v[row][SYS_ETCD]);
    }
    printf("%-32s | %12s | %12s | %12s | %11s | %10s\n", labels[row], cell[SYS_COORD],
           cell[SYS_REDIS], cell[SYS_ETCD], rr, re);
  }
  printf("\ncycles: median of %d rounds; hand-offs: the samples of %d rounds pooled.\n"
         "A cycle ratio > 1 favours coord; a latency ratio < 1 favours coord.\n",
         cfg->rounds, cfg->rounds);
  for (int k = 0; k < 2; k++)
    for (int s = 0; s < SYS_COUNT; s++) {
      if (!r->run[s])
        continue;
      printf("cycles/s per round, %-5s %3d client(s):", SYS_NAMES[s],
             k == 0 ? 1 : cfg->many_clients);
      for (int i = 0; i < cfg->rounds; i++)
        printf(" %.0f", r->rounds[k][s][i]);
      printf("\n");
    }
  for (int s = 0; s < SYS_COUNT; s++) {
    if (!r->run[s])
      continue;
    printf("hand-off p99 us per round, %-5s:", SYS_NAMES[s]);
    for (int i = 0; i < cfg->rounds; i++)
      printf(" %.0f", r->round_p99[s][i]);
    printf("\n");
  }
  printf("hand-off samples: coord %zu, redis %zu, etcd %zu; hold %" PRId64 " us; redis waiters "
         "%s\n",
         r->handoff_n[SYS_COORD], r->handoff_n[SYS_REDIS], r->handoff_n[SYS_ETCD],
         cfg->hold_ns / RV_NS_PER_US,
         cfg->redis_retry_ns ? "sleep between SET NX retries" : "retry SET NX at once (spin)");
  if (cfg->redis_retry_ns)
    printf("redis retry sleep: %" PRId64 " us\n", cfg->redis_retry_ns / RV_NS_PER_US);

  double cc1 = r->v[ROW_C1][SYS_COORD], rc1 = r->v[ROW_C1][SYS_REDIS];
  double ccn = r->v[ROW_CN][SYS_COORD], rcn = r->v[ROW_CN][SYS_REDIS];
  double p99 = r->v[ROW_P99][SYS_COORD];
  if (r->run[SYS_COORD] && r->run[SYS_REDIS])
    printf("goal: coord cycles >= redis: 1 client %s, %d clients %s\n",
           !isnan(cc1) && !isnan(rc1) && cc1 >= rc1 ? "MET" : "NOT MET", cfg->many_clients,
           !isnan(ccn) && !isnan(rcn) && ccn >= rcn ? "MET" : "NOT MET");
  if (r->run[SYS_COORD])
    printf("goal: coord hand-off p99 < %.0f us: %s\n", HANDOFF_GOAL_P99_US,
           !isnan(p99) && p99 < HANDOFF_GOAL_P99_US ? "MET" : "NOT MET");

  static const char *const keys[ROWS] = {"cycles_1",        "cycles_n",        "handoff_p50_us",
                                         "handoff_p99_us",  "handoff_max_us",  "handoff_same_pct"};
  printf("coord_bench summary: rounds=%d clients_n=%d handoff_clients=%d hold_us=%" PRId64
         " redis_retry_us=%" PRId64,
         cfg->rounds, cfg->many_clients, cfg->handoff_clients, cfg->hold_ns / RV_NS_PER_US,
         cfg->redis_retry_ns / RV_NS_PER_US);
  for (int row = 0; row < ROWS; row++)
    for (int s = 0; s < SYS_COUNT; s++) {
      if (!r->run[s])
        continue;
      double v = r->v[row][s];
      if (isnan(v))
        printf(" %s_%s=fail", SYS_NAMES[s], keys[row]);
      else
        printf(" %s_%s=%.1f", SYS_NAMES[s], keys[row], v);
    }
  printf("\n");
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fprintf(f,
          "usage: coord_bench [--coord PORT] [--redis PORT] [--etcd PORT] [OPTIONS]\n\n"
          "Measure lock cycles/s and hand-off latency of ravel coord, redis-server and etcd\n"
          "(v3 JSON gateway) already running on %s; a system without a port is skipped.\n"
          "bench/coord_bench.sh starts the servers and runs this.\n\n"
          "options:\n"
          "  --duration-ms N      measured time of each cycle phase (default %d)\n"
          "  --rounds N           cycle phases per system and client count; median shown\n"
          "                       (default %d, max %d)\n"
          "  --clients N          clients of the many-clients cycle phase (default %d, max %d)\n"
          "  --handoff-clients N  clients contending in the hand-off phase (default %d)\n"
          "  --handoffs N         hand-off samples per system and round (default %d)\n"
          "  --handoff-max-ms N   time limit of each hand-off phase (default %d)\n"
          "  --hold-us N          busy work while holding, hand-off phase (default %d)\n"
          "  --redis-retry-us N   redis waiters sleep N us between SET NX retries (default 0:\n"
          "                       retry at once, Redis's best case, burning CPU)\n",
          BENCH_HOST, DEFAULT_DURATION_MS, DEFAULT_ROUNDS, MAX_ROUNDS, DEFAULT_MANY_CLIENTS,
          MAX_CLIENTS, DEFAULT_HANDOFF_CLIENTS, DEFAULT_HANDOFFS, DEFAULT_HANDOFF_MAX_MS,
          DEFAULT_HOLD_US);
}

static long parse_num(const char *opt, const char *s, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi) {
    fprintf(stderr, "coord_bench: %s %s is invalid: must be %ld..%ld\n", opt, s, lo, hi);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  enum { O_COORD = 1, O_REDIS, O_ETCD, O_DUR, O_ROUNDS, O_CLIENTS, O_HCLIENTS, O_HANDOFFS, O_HMAX,
         O_HOLD, O_RETRY };
  static const struct option longopts[] = {
      {"coord", required_argument, 0, O_COORD},
      {"redis", required_argument, 0, O_REDIS},
      {"etcd", required_argument, 0, O_ETCD},
      {"duration-ms", required_argument, 0, O_DUR},
      {"rounds", required_argument, 0, O_ROUNDS},
      {"clients", required_argument, 0, O_CLIENTS},
      {"handoff-clients", required_argument, 0, O_HCLIENTS},
      {"handoffs", required_argument, 0, O_HANDOFFS},
      {"handoff-max-ms", required_argument, 0, O_HMAX},
      {"hold-us", required_argument, 0, O_HOLD},
      {"redis-retry-us", required_argument, 0, O_RETRY},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  bench_cfg cfg = {.duration_ns = DEFAULT_DURATION_MS * RV_NS_PER_MS,
                   .rounds = DEFAULT_ROUNDS,
                   .many_clients = DEFAULT_MANY_CLIENTS,
                   .handoff_clients = DEFAULT_HANDOFF_CLIENTS,
                   .handoffs = DEFAULT_HANDOFFS,
                   .handoff_max_ns = DEFAULT_HANDOFF_MAX_MS * RV_NS_PER_MS,
                   .hold_ns = DEFAULT_HOLD_US * RV_NS_PER_US};
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case O_COORD:
      cfg.coord_port = (uint16_t)parse_num("--coord", optarg, 1, 65535);
      break;
    case O_REDIS:
      cfg.redis_port = (uint16_t)parse_num("--redis", optarg, 1, 65535);
      break;
    case O_ETCD:
      cfg.etcd_port = (uint16_t)parse_num("--etcd", optarg, 1, 65535);
      break;
    case O_DUR:
      cfg.duration_ns = parse_num("--duration-ms", optarg, 100, 600000) * RV_NS_PER_MS;
      break;
    case O_ROUNDS:
      cfg.rounds = (int)parse_num("--rounds", optarg, 1, MAX_ROUNDS);
      break;
    case O_CLIENTS:
      cfg.many_clients = (int)parse_num("--clients", optarg, 1, MAX_CLIENTS);
      break;
    case O_HCLIENTS:
      cfg.handoff_clients = (int)parse_num("--handoff-clients", optarg, 2, MAX_CLIENTS);
      break;
    case O_HANDOFFS:
      cfg.handoffs = (size_t)parse_num("--handoffs", optarg, 10, 10000000);
      break;
    case O_HMAX:
      cfg.handoff_max_ns = parse_num("--handoff-max-ms", optarg, 100, 600000) * RV_NS_PER_MS;
      break;
    case O_HOLD:
      cfg.hold_ns = parse_num("--hold-us", optarg, 0, 1000000) * RV_NS_PER_US;
      break;
    case O_RETRY:
      cfg.redis_retry_ns = parse_num("--redis-retry-us", optarg, 0, 1000000) * RV_NS_PER_US;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  const uint16_t ports[SYS_COUNT] = {cfg.coord_port, cfg.redis_port, cfg.etcd_port};
  results r;
  for (int row = 0; row < ROWS; row++)
    for (int s = 0; s < SYS_COUNT; s++)
      r.v[row][s] = NAN;
  bool any = false;
  for (int s = 0; s < SYS_COUNT; s++) {
    r.run[s] = ports[s] != 0;
    r.handoff_n[s] = 0;
    any |= r.run[s];
  }
  if (!any) {
    fprintf(stderr, "coord_bench: give at least one of --coord, --redis, --etcd\n");
    usage(stderr);
    return 2;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "coord_bench: curl_global_init failed\n");
    return 1;
  }
  rv_thread_adopt("coord-bench", "main");

  const int counts[2] = {1, cfg.many_clients};
  for (int round = 0; round < cfg.rounds; round++)
    for (int k = 0; k < 2; k++)
      for (int s = 0; s < SYS_COUNT; s++) {
        if (!r.run[s])
          continue;
        printf("cycles: round %d/%d %-5s %3d client(s), %" PRId64 " ms ... ", round + 1,
               cfg.rounds, SYS_NAMES[s], counts[k], cfg.duration_ns / RV_NS_PER_MS);
        fflush(stdout);
        double v = run_cycles((enum sys)s, &cfg, counts[k]);
        r.rounds[k][s][round] = v;
        printf("%.0f/s\n", v);
      }
  for (int k = 0; k < 2; k++)
    for (int s = 0; s < SYS_COUNT; s++)
      if (r.run[s])
        r.v[k == 0 ? ROW_C1 : ROW_CN][s] = median(r.rounds[k][s], cfg.rounds);
  /* Hand-off phases, also in interleaved rounds; the table pools the samples of all rounds. */
  int64_t *pool[SYS_COUNT] = {0};
  size_t pool_n[SYS_COUNT] = {0};
  unsigned long grants[SYS_COUNT] = {0}, same[SYS_COUNT] = {0};
  bool handoff_failed[SYS_COUNT] = {0};
  for (int s = 0; s < SYS_COUNT; s++)
    if (r.run[s] && !(pool[s] = calloc(cfg.handoffs * (size_t)cfg.rounds, sizeof *pool[s]))) {
      fprintf(stderr, "coord_bench: out of memory\n");
      return 1;
    }
  for (int round = 0; round < cfg.rounds; round++)
    for (int s = 0; s < SYS_COUNT; s++) {
      if (!r.run[s])
        continue;
      printf("hand-off: round %d/%d %-5s %d clients, up to %zu hand-offs or %" PRId64 " ms ... ",
             round + 1, cfg.rounds, SYS_NAMES[s], cfg.handoff_clients, cfg.handoffs,
             cfg.handoff_max_ns / RV_NS_PER_MS);
      fflush(stdout);
      latency l = run_handoff((enum sys)s, &cfg, pool[s], &pool_n[s]);
      r.round_p99[s][round] = l.ok ? l.p99_us : NAN;
      if (l.ok) {
        grants[s] += l.grants;
        same[s] += l.same_client;
        printf("%zu samples, p50 %.0f us, p99 %.0f us, mean %.0f us\n", l.n, l.p50_us,
               l.p99_us, l.mean_us);
      } else {
        handoff_failed[s] = true;
        printf("FAILED\n");
      }
    }
  for (int s = 0; s < SYS_COUNT; s++) {
    if (r.run[s] && !handoff_failed[s] && pool_n[s] > 0) {
      latency l = summarize(pool[s], pool_n[s]);
      r.v[ROW_P50][s] = l.p50_us;
      r.v[ROW_P99][s] = l.p99_us;
      r.v[ROW_MAX][s] = l.max_us;
      r.v[ROW_SAME][s] = 100.0 * (double)same[s] / (double)grants[s];
      r.handoff_n[s] = l.n;
    }
    free(pool[s]);
  }
  print_report(&r, &cfg);
  curl_global_cleanup();

  bool failed = false;
  for (int row = 0; row < ROWS; row++)
    for (int s = 0; s < SYS_COUNT; s++)
      failed |= r.run[s] && isnan(r.v[row][s]);
  return failed ? 1 : 0;
}
