/*
 * The coord client: opening a client, sessions with a keepalive thread, and
 * distributed locks.
 *
 * Sessions: rv_session_open sends SESSION.OPEN on the control connection and
 * starts a "coord-keepalive" rv_thread with a connection of its own.  It
 * sends SESSION.KEEPALIVE every ttl/3 (retrying every ttl/10 after an I/O
 * error).  The session is lost when the server answers NOSESSION/EXPIRED, or
 * when no keepalive succeeded within the TTL measured from the *send* time of
 * the last successful one (conservative: the server restarted its clock
 * later).  Then the session context is cancelled ("session lost: ...") and
 * on_lost runs, on the keepalive thread, once.
 *
 * Locks: each acquire takes a connection from the client's pool, tries
 * LOCK.ACQUIRE NOWAIT (to count waits), then blocks in LOCK.ACQUIRE on that
 * connection with the caller's ctx.  If ctx ends first, the wait is withdrawn
 * by closing the waiting connection (the server withdraws at once; LOCK.CANCEL
 * would also withdraw other threads' waits of the same session on the same
 * lock).  A grant that raced with the cancel is released: one already read
 * from the socket by a last non-blocking read, and one granted just before the
 * close is found through LOCK.INFO (holder = this session with this exact
 * description, under a token no live handle of the session has) and released
 * with its token.  (Residual gap: two threads of one session waiting on the
 * same lock with the same explicit description; default descriptions differ
 * per thread.)
 *
 * The session's live handles are a list under a raw mutex; handles may be
 * released from any thread.
 */
#include "client/coord_internal.h"

#include "obs/registry.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keepalive cadence as fractions of the TTL. */
#define KEEPALIVE_DIVISOR 3
#define KEEPALIVE_RETRY_DIVISOR 10
#define KEEPALIVE_RETRY_MIN_NS RV_NS_PER_MS
#define NUM_MAX 32

struct rv_session {
  cc_handle h; /* first: the backend (coord) */
  rv_coord_client *c;
  uint64_t id;
  int64_t ttl_ms;
  rv_ctx *ctx;  /* cancelled when lost or closed */
  rv_ctx *stop; /* stops the keepalive thread */
  rv_thread *ka;
  rv_session_lost_fn on_lost;
  void *arg;
  bool lost;   /* __atomic */
  bool paused; /* __atomic, test hook */
  cc_conn *ka_conn; /* the keepalive thread's own connection */
  int64_t opened_ns;
  rv_rawmu held_mu; /* guards held and pending */
  struct rv_dlock *held;    /* this session's live lock handles */
  /* Releases coord never answered (the connection failed): the keepalive thread sends them
   * again after each keepalive that got through, until coord answers or the session ends.
   * Without this a release lost to a reset or a partition leaves the lock held for as long
   * as the session lives (found by `ravel sim all-fixes-faults`). */
  struct rv_dlock *pending;
  int npending;
};

struct rv_dlock {
  cc_handle h; /* first: the backend (coord) */
  struct rv_dlock *next, *prev; /* the session's held list */
  rv_session *s;
  char *name;
  uint64_t token;
  char *desc; /* on the pending list with token 0: a grant we may hold unknowingly (orphan) */
  int64_t not_before_ns; /* on the pending list: not retried before this time */
};

static void release_pending(rv_session *s, cc_conn *conn, rv_ctx *op);
static void pending_free(rv_session *s);
static bool session_holds(rv_session *s, const char *name, uint64_t token);
static bool pending_add(rv_session *s, struct rv_dlock *h);
static void dlock_free(struct rv_dlock *h);
static void orphan_check(rv_session *s, cc_conn *conn, rv_ctx *op, const char *name,
                         const char *desc, bool *answered);

/* Whether the session has a live handle for name with this token. */
static bool session_holds(rv_session *s, const char *name, uint64_t token) {
  bool found = false;
  rv_rawmu_lock(&s->held_mu);
  for (struct rv_dlock *h = s->held; h && !found; h = h->next)
    found = h->token == token && strcmp(h->name, name) == 0;
  rv_rawmu_unlock(&s->held_mu);
  return found;
}

static char *dup_opt(const char *s) { return s && s[0] ? strdup(s) : NULL; }

int rv_coord_client_open(rv_coord_client **out, rv_ctx *ctx, const rv_coord_client_opts *o) {
  rv_coord_client_opts def = {0};
  if (!o)
    o = &def;
  rv_coord_client *c = calloc(1, sizeof *c);
  if (!c)
    return RV_ENOMEM;
  snprintf(c->host, sizeof c->host, "%s", o->host ? o->host : RV_COORD_CLIENT_DEFAULT_HOST);
  c->port = o->port ? o->port : RV_COORD_CLIENT_DEFAULT_PORT;
  c->service = dup_opt(o->service);
  c->replica = dup_opt(o->replica);
  c->host_name = dup_opt(o->host_name);
  c->admin_url = dup_opt(o->admin_url);
  c->pid = o->pid ? o->pid : rv_getpid();
  c->lock_conns_max = o->lock_conns_max > 0 ? o->lock_conns_max : RV_COORD_LOCK_CONNS_DEFAULT;
  rv_mutex_init(&c->ctl_mu, "coord-control");
  rv_mutex_init(&c->pool_mu, "coord-pool");
  rv_cond_init(&c->pool_cv, "coord-pool-free");
  int rc = o->etcd_url && o->etcd_url[0] ? ec_client_open(c, ctx, o->etcd_url)
                                         : cc_dial(c, ctx, &c->ctl);
  if (rc != RV_OK) {
    rv_coord_client_close(c);
    return rc;
  }
  *out = c;
  return RV_OK;
}

void rv_coord_client_close(rv_coord_client *c) {
  if (!c)
    return;
  ec_client_close(c);
  cc_conn_free(c->ctl);
  for (int i = 0; i < c->nidle; i++)
    cc_conn_free(c->idle[i]);
  rv_mutex_destroy(&c->ctl_mu);
  rv_mutex_destroy(&c->pool_mu);
  rv_cond_destroy(&c->pool_cv);
  free(c->service);
  free(c->replica);
  free(c->host_name);
  free(c->admin_url);
  free(c);
}

void rv_coord_client_stats(rv_coord_client *c, rv_coord_stats *out) {
  uint64_t *dst = (uint64_t *)out;
  uint64_t *src = (uint64_t *)&c->st;
  for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
    dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---- sessions ------------------------------------------------------------------------- */

static void session_lose(rv_session *s, const char *why) {
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

void cc_keepalive_run(const cc_keepalive *k) {
  int64_t interval = k->ttl_ns / KEEPALIVE_DIVISOR;
  int64_t retry = k->ttl_ns / KEEPALIVE_RETRY_DIVISOR;
  if (retry < KEEPALIVE_RETRY_MIN_NS)
    retry = KEEPALIVE_RETRY_MIN_NS;
  int64_t last_ok = k->opened_ns;
  int64_t next = last_ok + interval;
  char why[CC_ERR_MAX] = "";
  for (;;) {
    int64_t now = rv_now_ns();
    int64_t expiry = last_ok + k->ttl_ns;
    if (next > expiry)
      next = expiry;
    if (next > now && rv_sleep(k->stop, next - now) != RV_OK)
      return; /* closed */
    now = rv_now_ns();
    if (now >= expiry) {
      k->lose(k->arg, why[0] ? why : "no keepalive succeeded within the TTL");
      return;
    }
    if (__atomic_load_n(k->paused, __ATOMIC_ACQUIRE)) {
      snprintf(why, sizeof why, "keepalive paused (test hook)");
      next = now + retry;
      continue;
    }
    rv_ctx *op = rv_ctx_with_deadline(k->stop, expiry);
    int64_t sent = rv_now_ns();
    int rc = op ? k->attempt(k->arg, op, why, sizeof why) : RV_ENOMEM;
    rv_ctx_free(op);
    if (rv_ctx_err(k->stop) != RV_OK)
      return;
    if (rc == RV_OK) {
      CC_STAT_INC(k->c, keepalives);
      last_ok = sent;
      why[0] = 0;
      next = sent + interval;
    } else if (rc == CC_KA_LOST) {
      k->lose(k->arg, why);
      return;
    } else {
      if (!why[0])
        snprintf(why, sizeof why, "keepalive failed: %s", rv_strerror(rc));
      next = rv_now_ns() + retry;
    }
  }
}

/* One SESSION.KEEPALIVE on the session's own connection (dialled again after a failure). */
static int keepalive_attempt(void *arg, rv_ctx *op, char *why, size_t whylen) {
  rv_session *s = arg;
  char sid[NUM_MAX];
  snprintf(sid, sizeof sid, "%" PRIu64, s->id);
  const char *argv[] = {"SESSION.KEEPALIVE", sid};
  int rc = s->ka_conn ? RV_OK : cc_dial(s->c, op, &s->ka_conn);
  redisReply *rep = NULL;
  if (rc == RV_OK)
    rc = cc_call(s->ka_conn, op, 2, argv, &rep);
  if (rc != RV_OK) {
    cc_conn_free(s->ka_conn);
    s->ka_conn = NULL;
    snprintf(why, whylen, "cannot reach coord %s:%u: %s", s->c->host, s->c->port,
             rv_strerror(rc));
    return rc;
  }
  if (rep->type == REDIS_REPLY_INTEGER) {
    rc = RV_OK;
    release_pending(s, s->ka_conn, op);
  } else if (rep->type == REDIS_REPLY_ERROR &&
             (strncmp(rep->str, "NOSESSION", 9) == 0 || strncmp(rep->str, "EXPIRED", 7) == 0)) {
    snprintf(why, whylen, "%s", rep->str);
    rc = CC_KA_LOST;
  } else {
    snprintf(why, whylen, "keepalive refused: %s", rep->str ? rep->str : "unexpected reply");
    rc = RV_EPROTO;
  }
  freeReplyObject(rep);
  return rc;
}

static void session_lose_cb(void *arg, const char *why) { session_lose(arg, why); }

static void keepalive_main(void *arg) {
  rv_session *s = arg;
  cc_keepalive k = {.c = s->c,
                    .stop = s->stop,
                    .ttl_ns = s->ttl_ms * RV_NS_PER_MS,
                    .opened_ns = s->opened_ns,
                    .paused = &s->paused,
                    .attempt = keepalive_attempt,
                    .lose = session_lose_cb,
                    .arg = s};
  cc_keepalive_run(&k);
  cc_conn_free(s->ka_conn);
  s->ka_conn = NULL;
}

int rv_session_open_cb(rv_ctx *ctx, rv_coord_client *c, int64_t ttl_ms,
                       rv_session_lost_fn on_lost, void *arg, rv_session **out) {
  if (c->etcd)
    return ec_session_open(ctx, c, ttl_ms, on_lost, arg, out);
  if (!c->service || ttl_ms <= 0)
    return RV_EINVAL;
  char ttl[NUM_MAX], pid[NUM_MAX];
  snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
  snprintf(pid, sizeof pid, "%d", c->pid);
  const char *argv[CC_ARGS_MAX];
  int n = 0;
  argv[n++] = "SESSION.OPEN";
  argv[n++] = ttl;
  argv[n++] = "SERVICE";
  argv[n++] = c->service;
  argv[n++] = "PID";
  argv[n++] = pid;
  if (c->replica) {
    argv[n++] = "REPLICA";
    argv[n++] = c->replica;
  }
  if (c->host_name) {
    argv[n++] = "HOST";
    argv[n++] = c->host_name;
  }
  if (c->admin_url) {
    argv[n++] = "ADMIN";
    argv[n++] = c->admin_url;
  }
  int64_t opened = rv_now_ns();
  redisReply *rep;
  int rc = cc_ctl_call(c, ctx, n, argv, &rep);
  if (rc != RV_OK)
    return rc;
  if (rep->type != REDIS_REPLY_INTEGER) {
    rc = cc_reply_err(rep);
    freeReplyObject(rep);
    return rc;
  }
  rv_session *s = calloc(1, sizeof *s);
  if (!s) {
    freeReplyObject(rep);
    return RV_ENOMEM;
  }
  s->c = c;
  s->id = (uint64_t)rep->integer;
  freeReplyObject(rep);
  s->ttl_ms = ttl_ms;
  s->on_lost = on_lost;
  s->arg = arg;
  s->opened_ns = opened;
  rv_rawmu_init(&s->held_mu);
  s->ctx = rv_ctx_new(NULL);
  s->stop = rv_ctx_new(NULL);
  if (!s->ctx || !s->stop ||
      (rc = rv_thread_start(&s->ka, "coord-keepalive", "keepalive", keepalive_main, s)) != RV_OK) {
    s->ka = NULL;
    rv_session_close(s);
    return rc != RV_OK ? rc : RV_ENOMEM;
  }
  *out = s;
  return RV_OK;
}

int rv_session_open(rv_ctx *ctx, rv_coord_client *c, int64_t ttl_ms, rv_session **out) {
  return rv_session_open_cb(ctx, c, ttl_ms, NULL, NULL, out);
}

uint64_t rv_session_id(const rv_session *s) { return CC_IS_ETCD(s) ? ec_session_id(s) : s->id; }
rv_ctx *rv_session_ctx(rv_session *s) { return CC_IS_ETCD(s) ? ec_session_ctx(s) : s->ctx; }
bool rv_session_lost(rv_session *s) {
  return CC_IS_ETCD(s) ? ec_session_lost(s) : __atomic_load_n(&s->lost, __ATOMIC_ACQUIRE);
}

void rv_session_test_pause_keepalive(rv_session *s, bool pause) {
  if (CC_IS_ETCD(s)) {
    ec_session_test_pause_keepalive(s, pause);
    return;
  }
  __atomic_store_n(&s->paused, pause, __ATOMIC_RELEASE);
}

void rv_session_close(rv_session *s) {
  if (!s)
    return;
  if (CC_IS_ETCD(s)) {
    ec_session_close(s);
    return;
  }
  if (s->stop)
    rv_ctx_cancel(s->stop, "session closed");
  if (s->ka)
    rv_thread_join(s->ka);
  if (!rv_session_lost(s) && s->id) {
    char sid[NUM_MAX];
    snprintf(sid, sizeof sid, "%" PRIu64, s->id);
    const char *argv[] = {"SESSION.CLOSE", sid};
    rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
    redisReply *rep = NULL;
    if (cc_ctl_call(s->c, op, 2, argv, &rep) == RV_OK)
      freeReplyObject(rep);
    rv_ctx_free(op);
  }
  if (s->ctx)
    rv_ctx_cancel(s->ctx, "session closed");
  rv_ctx_free(s->ctx);
  rv_ctx_free(s->stop);
  pending_free(s); /* closing the session released them on coord */
  rv_rawmu_destroy(&s->held_mu);
  free(s);
}

/* ---- lock descriptions ------------------------------------------------------------------- */

static void describe(int pid, char *buf, size_t len) {
  rv_thread *t = rv_thread_self();
  char name[RV_THREAD_NAME_MAX], task[RV_TASK_MAX];
  rv_rawmu_lock(&t->mu);
  snprintf(name, sizeof name, "%s", t->name);
  snprintf(task, sizeof task, "%s", t->task);
  rv_rawmu_unlock(&t->mu);
  if (task[0])
    snprintf(buf, len, "pid %d thread %" PRIu64 " %s: %s", pid, rv_thread_id(t), name, task);
  else
    snprintf(buf, len, "pid %d thread %" PRIu64 " %s", pid, rv_thread_id(t), name);
  for (char *p = buf; *p; p++) /* the server refuses control bytes */
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      *p = '?';
}

void rv_dlock_default_description(char *buf, size_t len) { describe(rv_getpid(), buf, len); }

/* ---- the pool of lock connections ---------------------------------------------------------- */

static int pool_get(rv_coord_client *c, rv_ctx *ctx, cc_conn **out, bool *reused) {
  int rc = rv_mutex_lock_ctx(&c->pool_mu, ctx);
  if (rc != RV_OK)
    return rc;
  /* Bounded: wait (as long as ctx allows) for a connection to come back. */
  while (c->nidle == 0 && c->in_use >= c->lock_conns_max) {
    if ((rc = rv_cond_wait(&c->pool_cv, &c->pool_mu, ctx)) != RV_OK) {
      rv_mutex_unlock(&c->pool_mu);
      return rc;
    }
  }
  c->in_use++;
  if (c->nidle > 0) {
    *out = c->idle[--c->nidle];
    rv_mutex_unlock(&c->pool_mu);
    *reused = true;
    return RV_OK;
  }
  rv_mutex_unlock(&c->pool_mu);
  *reused = false;
  rc = cc_dial(c, ctx, out);
  if (rc != RV_OK) {
    rv_mutex_lock(&c->pool_mu);
    c->in_use--;
    rv_cond_signal(&c->pool_cv);
    rv_mutex_unlock(&c->pool_mu);
  }
  return rc;
}

/* Return a connection; healthy ones are kept while the idle list has room. */
static void pool_put(rv_coord_client *c, cc_conn *k, bool healthy) {
  rv_mutex_lock(&c->pool_mu);
  c->in_use--;
  if (healthy && c->nidle < RV_COORD_POOL_IDLE_MAX) {
    c->idle[c->nidle++] = k;
    k = NULL;
  }
  rv_cond_signal(&c->pool_cv);
  rv_mutex_unlock(&c->pool_mu);
  cc_conn_free(k);
}

/* ---- locks -------------------------------------------------------------------------------- */

/* LOCK.RELEASE on conn (NULL: the control connection); *answered says whether coord
 * replied at all (an error reply is an answer: the lock is not held by us any more). */
static int release_on(rv_session *s, cc_conn *conn, rv_ctx *op, const char *name, uint64_t token,
                      bool *answered) {
  char sid[NUM_MAX], tok[NUM_MAX];
  snprintf(sid, sizeof sid, "%" PRIu64, s->id);
  snprintf(tok, sizeof tok, "%" PRIu64, token);
  const char *argv[] = {"LOCK.RELEASE", sid, name, tok};
  redisReply *rep = NULL;
  int rc = conn ? cc_call(conn, op, 4, argv, &rep) : cc_ctl_call(s->c, op, 4, argv, &rep);
  *answered = rc == RV_OK;
  if (rc == RV_OK) {
    if (rep->type == REDIS_REPLY_ERROR)
      rc = cc_reply_err(rep);
    freeReplyObject(rep);
  }
  return rc;
}

static int release_token(rv_session *s, const char *name, uint64_t token) {
  rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
  bool answered;
  int rc = release_on(s, NULL, op, name, token, &answered);
  rv_ctx_free(op);
  return rc;
}

/* From the keepalive thread, after a keepalive got through on conn: send the releases coord
 * never answered; keep those that fail again for the next round. */
static void release_pending(rv_session *s, cc_conn *conn, rv_ctx *op) {
  rv_rawmu_lock(&s->held_mu);
  struct rv_dlock *list = s->pending;
  s->pending = NULL;
  s->npending = 0;
  rv_rawmu_unlock(&s->held_mu);
  bool reachable = true;
  int64_t now = rv_now_ns();
  while (list) {
    struct rv_dlock *h = list;
    list = h->next;
    bool answered = false;
    if (reachable && h->not_before_ns <= now) {
      if (h->desc)
        orphan_check(s, conn, op, h->name, h->desc, &answered);
      else
        release_on(s, conn, op, h->name, h->token, &answered);
      reachable = answered; /* unanswered: coord is gone again, keep the rest for later */
    }
    if (answered) {
      CC_STAT_INC(s->c, releases_retried);
      dlock_free(h);
    } else if (!pending_add(s, h)) {
      dlock_free(h);
    }
  }
}

static void pending_free(rv_session *s) {
  while (s->pending) {
    struct rv_dlock *h = s->pending;
    s->pending = h->next;
    dlock_free(h);
  }
  s->npending = 0;
}

/* Keep h for the keepalive thread to send again; false (h not taken) when the list is full. */
static bool pending_add(rv_session *s, struct rv_dlock *h) {
  bool taken = false;
  rv_rawmu_lock(&s->held_mu);
  if (s->npending < RV_COORD_PENDING_RELEASES_MAX) {
    h->next = s->pending;
    s->pending = h;
    s->npending++;
    taken = true;
  }
  rv_rawmu_unlock(&s->held_mu);
  return taken;
}

static void dlock_free(struct rv_dlock *h) {
  if (!h)
    return;
  free(h->name);
  free(h->desc);
  free(h);
}

/* Keep a release (token) or an orphan check (desc) to retry; dropped if the list is full. */
static void pending_keep(rv_session *s, const char *name, uint64_t token, const char *desc,
                         int64_t delay_ns) {
  struct rv_dlock *h = calloc(1, sizeof *h);
  if (h) {
    h->s = s;
    h->name = strdup(name);
    h->token = token;
    h->desc = desc ? strdup(desc) : NULL;
    h->not_before_ns = rv_now_ns() + delay_ns;
  }
  if (!h || !h->name || (desc && !h->desc) || !pending_add(s, h))
    dlock_free(h);
}

/*
 * A grant coord may hold for our session that no handle of ours knows (the wait was
 * withdrawn, or the connection failed, around the grant): if coord says our session holds
 * name with our description under a token we hold no handle for, release it.  *answered:
 * coord replied to LOCK.INFO (a release it then does not answer is kept to retry).
 */
static void orphan_check(rv_session *s, cc_conn *conn, rv_ctx *op, const char *name,
                         const char *desc, bool *answered) {
  const char *argv[] = {"LOCK.INFO", name};
  redisReply *rep = NULL;
  int rc = conn ? cc_call(conn, op, 2, argv, &rep) : cc_ctl_call(s->c, op, 2, argv, &rep);
  *answered = rc == RV_OK;
  if (rc != RV_OK)
    return;
  if (rep->type == REDIS_REPLY_ARRAY &&
      (uint64_t)cc_map_int(rep, "holder_session", 0) == s->id) {
    const redisReply *d = cc_map_get(rep, "description");
    uint64_t token = (uint64_t)cc_map_int(rep, "token", 0);
    bool released;
    if (d && d->type == REDIS_REPLY_STRING && strcmp(d->str, desc) == 0 &&
        !session_holds(s, name, token)) {
      release_on(s, conn, op, name, token, &released);
      if (!released)
        pending_keep(s, name, token, NULL, 0);
    }
  }
  freeReplyObject(rep);
}

/*
 * After a withdrawn or failed wait: release a grant of ours that raced with it, now and
 * once more from the keepalive thread after RV_COORD_ORPHAN_RECHECK_NS.  The second look
 * is needed because closing the waiting connection and asking LOCK.INFO on another one are
 * not ordered at coord: it may answer LOCK.INFO, then grant the lock to the wait, and only
 * then see the close (found by `ravel sim all-fixes-faults`: locks held for minutes by a
 * live session for handlers long gone).
 */
static void release_orphan(rv_session *s, const char *name, const char *desc) {
  rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
  bool answered = false;
  if (op)
    orphan_check(s, NULL, op, name, desc, &answered);
  rv_ctx_free(op);
  if (!rv_session_lost(s))
    pending_keep(s, name, 0, desc, answered ? RV_COORD_ORPHAN_RECHECK_NS : 0);
}

static bool is_ctx_err(int rc) { return rc == RV_ECANCELED || rc == RV_EDEADLINE; }

/* 1 granted (*token), 0 not granted (nil), <0 error; *conn_ok false if the connection must go. */
static int acquire_reply(redisReply *rep, uint64_t *token) {
  if (rep->type == REDIS_REPLY_INTEGER) {
    *token = (uint64_t)rep->integer;
    return 1;
  }
  if (rep->type == REDIS_REPLY_NIL)
    return 0;
  return cc_reply_err(rep);
}

int rv_dlock_acquire(rv_ctx *ctx, rv_session *s, const char *name, const char *description,
                     rv_dlock **out) {
  if (CC_IS_ETCD(s))
    return ec_dlock_acquire(ctx, s, name, description, out);
  rv_coord_client *c = s->c;
  char desc[RV_DLOCK_DESC_MAX + 1];
  if (description)
    snprintf(desc, sizeof desc, "%s", description);
  else
    describe(c->pid, desc, sizeof desc);
  int rc = rv_ctx_err(ctx);
  if (rc != RV_OK)
    return rc;
  char sid[NUM_MAX];
  snprintf(sid, sizeof sid, "%" PRIu64, s->id);
  char what[RV_WAIT_WHAT_MAX];
  snprintf(what, sizeof what, "dlock %s", name);
  cc_set_last_error("");

  cc_conn *k = NULL;
  bool reused = false;
  uint64_t token = 0;
  redisReply *rep = NULL;
  const char *try_argv[] = {"LOCK.ACQUIRE", sid, name, "NOWAIT", "DESC", desc};
  const char *wait_argv[] = {"LOCK.ACQUIRE", sid, name, "DESC", desc};
  /* First a NOWAIT attempt (on a fresh connection if a pooled one turns out dead). */
  for (int attempt = 0; attempt < 2; attempt++) {
    if ((rc = pool_get(c, ctx, &k, &reused)) != RV_OK) {
      k = NULL;
      break;
    }
    rc = cc_call(k, ctx, 6, try_argv, &rep);
    if (rc == RV_OK)
      break;
    pool_put(c, k, false);
    k = NULL;
    if (!reused || is_ctx_err(rc))
      break;
  }
  int got = rc;
  if (rc == RV_OK) {
    got = acquire_reply(rep, &token);
    freeReplyObject(rep);
    rep = NULL;
  } else if (k == NULL && rc != RV_ENOMEM) {
    /* The request may have reached coord and been granted, the answer lost with the
     * connection: a lock our session would hold with nobody to release it. */
    release_orphan(s, name, desc);
  }
  if (got == 0) { /* busy: wait in the server's FIFO on this connection */
    CC_STAT_INC(c, waits);
    /* Published for dumps only around the socket wait itself: rt's lock and
     * condition waits (pool, control connection) publish their own. */
    rv_wait_external_begin(what);
    rc = cc_send(k, ctx, 5, wait_argv);
    if (rc == RV_OK)
      rc = cc_recv(k, ctx, &rep);
    rv_wait_external_end();
    if (rc == RV_OK) {
      got = acquire_reply(rep, &token);
      freeReplyObject(rep);
    } else if (is_ctx_err(rc)) {
      /* Withdraw: a grant may already be on the socket; read it without waiting. */
      rv_conn_set_read_deadline(k->c, rv_now_ns());
      if (cc_recv(k, NULL, &rep) == RV_OK) {
        if (acquire_reply(rep, &token) == 1)
          release_token(s, name, token);
        freeReplyObject(rep);
      }
      pool_put(c, k, false); /* closing the connection withdraws the wait at once */
      k = NULL;
      release_orphan(s, name, desc);
      CC_STAT_INC(c, cancels);
      got = rc;
    } else {
      /* As above: granted on coord perhaps, the answer lost with the connection. */
      pool_put(c, k, false);
      k = NULL;
      release_orphan(s, name, desc);
      got = rc;
    }
  }
  if (k)
    pool_put(c, k, got >= 0 || got == RV_ECANCELED || got == RV_ENOTFOUND || got == RV_EINVAL);

  if (got == 1) {
    rv_dlock *h = calloc(1, sizeof *h);
    char *nm = strdup(name);
    if (!h || !nm) {
      free(h);
      free(nm);
      release_token(s, name, token);
      return RV_ENOMEM;
    }
    h->s = s;
    h->name = nm;
    h->token = token;
    rv_rawmu_lock(&s->held_mu);
    h->next = s->held;
    if (s->held)
      s->held->prev = h;
    s->held = h;
    rv_rawmu_unlock(&s->held_mu);
    CC_STAT_INC(c, acquisitions);
    *out = h;
    return RV_OK;
  }
  if (got == RV_ECANCELED && rc == RV_OK) /* LOCK.CANCEL by someone: still a withdrawn wait */
    CC_STAT_INC(c, cancels);
  return got == 0 ? RV_EBUSY : got;
}

uint64_t rv_dlock_token(const rv_dlock *h) { return CC_IS_ETCD(h) ? ec_dlock_token(h) : h->token; }
const char *rv_dlock_name(const rv_dlock *h) { return CC_IS_ETCD(h) ? ec_dlock_name(h) : h->name; }

int rv_dlock_release(rv_dlock *h) {
  if (!h)
    return RV_EINVAL;
  if (CC_IS_ETCD(h))
    return ec_dlock_release(h);
  rv_session *s = h->s;
  rv_rawmu_lock(&s->held_mu);
  if (h->prev)
    h->prev->next = h->next;
  else
    s->held = h->next;
  if (h->next)
    h->next->prev = h->prev;
  rv_rawmu_unlock(&s->held_mu);
  rv_ctx *op = rv_ctx_with_timeout(NULL, RV_COORD_OP_TIMEOUT_NS);
  bool answered;
  int rc = release_on(s, NULL, op, h->name, h->token, &answered);
  rv_ctx_free(op);
  /* Coord may still hold it for our live session: the keepalive thread will retry. */
  if (answered || rv_session_lost(s) || !pending_add(s, h))
    dlock_free(h);
  return rc;
}
