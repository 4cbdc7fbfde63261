/*
 * The coord server shell (see coord.h; the protocol is docs/coord.md).
 *
 * One loop thread owns everything.  A connection parses RESP commands from
 * its input and answers each in order.  A command that must wait (a lock
 * acquisition that queues, a config watch with nothing new yet) "blocks" the
 * connection, as Redis's BLPOP does: the connection stops reading further
 * commands (rv_sconn_pause) until the lock table or the config store settles
 * the wait, whose reply is then written and the connection resumed.  A
 * connection that closes while blocked withdraws its wait at once, so the
 * lock's queue never holds a waiter nobody will answer.
 *
 * Fencing tokens survive restarts: the lock table reserves ranges of tokens
 * and the shell writes the range's ceiling to coord.state (write, fsync,
 * rename, fsync the directory) before any reply that announces a token from
 * it.  The same file counts boots, which keys session ids so that an id
 * from before a restart is never mistaken for a new session.
 */
#define _GNU_SOURCE
#include "server/coord.h"

#include "core/locktable.h"
#include "obs/admin.h"
#include "proto/resp.h"
#include "server/coord_internal.h"
#include "storage/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COORD_STATE_FILE "coord.state"
/* A coord.state bigger than this is not one we wrote. */
#define COORD_STATE_MAX_BYTES 4096
/* Fencing tokens reserved per durable write of the ceiling. */
#define COORD_TOKEN_RESERVE (UINT64_C(1) << 20)

/* ---- coord.state: boots and the fencing-token ceiling ------------------------------- */

static int state_load(rv_coord *c, uint64_t *boot, uint64_t *ceiling) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", c->data_dir, COORD_STATE_FILE);
  *boot = 0;
  *ceiling = 0;
  char *text;
  int rc = rv_read_file_small(path, COORD_STATE_MAX_BYTES, &text);
  if (rc == RV_ENOTFOUND)
    return RV_OK;
  if (rc != RV_OK)
    return rc;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    uint64_t v;
    if (sscanf(line, "boot %" SCNu64, &v) == 1)
      *boot = v;
    else if (sscanf(line, "token_ceiling %" SCNu64, &v) == 1)
      *ceiling = v;
    else if (line[0] != '#' && line[0] != '\0')
      rc = RV_EPROTO;
  }
  free(text);
  return rc;
}

/* Write the state durably (temp file, fsync, rename, fsync the directory). */
static int state_save(rv_coord *c, uint64_t boot, uint64_t ceiling) {
  char buf[256];
  snprintf(buf, sizeof buf,
           "# ravel coord state: do not edit while coord runs\nboot %" PRIu64
           "\ntoken_ceiling %" PRIu64 "\n",
           boot, ceiling);
  return rv_write_file_durable(c->data_dir, COORD_STATE_FILE, buf);
}

/*
 * Make the token range durable if the table asks for it.  Called before any
 * reply that may carry a token; on failure the server cannot promise
 * monotonic tokens across restarts, so it says so and stops.
 */
static void persist_tokens(rv_coord *c) {
  uint64_t ceiling;
  if (!rv_lt_token_persist_wanted(c->lt, &ceiling))
    return;
  if (state_save(c, c->boot, ceiling) != RV_OK) {
    rv_log_error(c->log, "cannot persist fencing-token ceiling; stopping", "dir=%s", c->data_dir);
    rv_coord_stop(c);
    return;
  }
  rv_lt_token_persisted(c->lt, ceiling);
}

static void publish_stats(rv_coord *c);

/* ---- replies ------------------------------------------------------------------------- */

void  rv__coord_conn_flush(cconn *k) {
  if (k->out.overflow) {
    rv_resp_out_rewind(&k->out, 0);
    k->out.overflow = false;
    rv_resp_out_error(&k->out, "ERR reply too large for this connection");
  }
  if (k->out.len) {
    rv_sconn_write(k->sc, k->out.buf, k->out.len);
    rv_resp_out_rewind(&k->out, 0);
  }
}

/* Every error reply goes through here, so ravel_coord_errors_total counts them all. */
void  rv__coord_reply_err(cconn *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void  rv__coord_reply_err(cconn *k, const char *fmt, ...) {
  char msg[RV_RESP_OUT_ERRORF_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  rv_counter_inc(k->srv->m.errors);
  rv_resp_out_error(&k->out, msg);
}

/* An error from the lock table: "-CODE specific message". */
static void reply_lt_error(cconn *k, int err) {
  rv__coord_reply_err(k, "%s %s", rv_lt_errcode(err), rv_lt_errmsg(k->srv->lt));
}

void  rv__coord_reply_usage(cconn *k, const char *usage) {
  rv__coord_reply_err(k, "ERR wrong arguments: usage: %s", usage);
}

int64_t  rv__coord_ns_to_ms(int64_t ns) { return ns / RV_NS_PER_MS; }

/* ---- blocked connections ----------------------------------------------------------------- */

void  rv__coord_unblock(cconn *k) {
  k->blocked = BLOCK_NONE;
  k->block_waiter = 0;
  rv__coord_conn_flush(k);
  rv_sconn_resume(k->sc);
}

/* Answer the blocked clients the lock table's events concern. */
static void handle_events(rv_coord *c) {
  persist_tokens(c); /* before any grant is announced */
  for (size_t i = 0; i < c->ev.len; i++) {
    const rv_lt_event *e = &c->ev.v[i];
    cconn *k = (cconn *)(uintptr_t)e->cookie;
    switch (e->type) {
    case RV_LT_EV_GRANTED:
      rv_histogram_observe(c->m.wait_seconds, (double)e->waited_ns / RV_NS_PER_S);
      if (k && k->blocked == BLOCK_LOCK && k->block_waiter == e->waiter_id) {
        rv_resp_out_int(&k->out, (int64_t)e->token);
        rv__coord_unblock(k);
        /* Release (or expiry) to the grant's reply leaving: the hand-off. */
        rv_histogram_observe(c->m.handoff_seconds, (double)(rv_now_ns() - e->at_ns) / RV_NS_PER_S);
      }
      break;
    case RV_LT_EV_TIMED_OUT:
      rv_histogram_observe(c->m.wait_seconds, (double)e->waited_ns / RV_NS_PER_S);
      if (k && k->blocked == BLOCK_LOCK && k->block_waiter == e->waiter_id) {
        rv_resp_out_null(&k->out);
        rv__coord_unblock(k);
      }
      break;
    case RV_LT_EV_WAITER_DROPPED:
      if (k && k->blocked == BLOCK_LOCK && k->block_waiter == e->waiter_id) {
        rv__coord_reply_err(k, "%s session %" PRIu64 " %s while waiting for lock %s",
                           e->reason == RV_LT_DROP_SESSION_EXPIRED ? "EXPIRED" : "CLOSED",
                           e->session_id,
                           e->reason == RV_LT_DROP_SESSION_EXPIRED ? "expired" : "was closed",
                           e->lock);
        rv__coord_unblock(k);
      }
      break;
    case RV_LT_EV_SESSION_EXPIRED:
      rv_log_info(c->log, "session expired", "session=%" PRIu64 " who=%s", e->session_id, e->who);
      break;
    case RV_LT_EV_LOCK_LOST:
      rv_log_warn(c->log, "lock released by session expiry",
                  "lock=%s session=%" PRIu64 " token=%" PRIu64 " who=%s", e->lock,
                  e->session_id, e->token, e->who);
      break;
    }
  }
  rv_lt_events_clear(&c->ev);
}

static void arm_timer(rv_coord *c) {
  int64_t d = rv_lt_next_deadline(c->lt);
  if (d == RV_LT_NO_DEADLINE)
    rv_timer_stop(c->timer);
  else
    rv_timer_set(c->timer, d);
}

static void on_timer(void *arg) {
  rv_coord *c = arg;
  rv_lt_tick(c->lt, rv_now_ns(), &c->ev);
  handle_events(c);
  arm_timer(c);
  publish_stats(c);
}

/* ---- argument helpers ------------------------------------------------------------------ */

rv_lt_str  rv__coord_arg_str(const rv_resp_arg *a) { return (rv_lt_str){a->ptr, a->len}; }

bool  rv__coord_arg_i64(const rv_resp_arg *a, int64_t *out) {
  return rv_resp_parse_i64(a->ptr, a->len, out) == 0;
}

bool  rv__coord_arg_u64(const rv_resp_arg *a, uint64_t *out) {
  int64_t v;
  if (!rv__coord_arg_i64(a, &v) || v < 0)
    return false;
  *out = (uint64_t)v;
  return true;
}

/* A copy of an argument as a C string (for logs and names), truncated to cap. */
void  rv__coord_arg_cstr(const rv_resp_arg *a, char *out, size_t cap) {
  size_t n = a->len < cap - 1 ? a->len : cap - 1;
  memcpy(out, a->ptr, n);
  out[n] = 0;
}

/* ---- flat maps (RESP2 has no map type: [key, value, key, value...]) ------------------------- */

void  rv__coord_out_kv_str(rv_resp_out *o, const char *k, const char *v) {
  rv_resp_out_bulk_cstr(o, k);
  rv_resp_out_bulk_cstr(o, v ? v : "");
}

void  rv__coord_out_kv_int(rv_resp_out *o, const char *k, int64_t v) {
  rv_resp_out_bulk_cstr(o, k);
  rv_resp_out_int(o, v);
}

static void out_identity(rv_resp_out *o, const rv_lt_identity_view *id) {
  rv__coord_out_kv_str(o, "service", id->service);
  rv__coord_out_kv_str(o, "replica", id->replica);
  rv__coord_out_kv_str(o, "host", id->host);
  rv__coord_out_kv_int(o, "pid", id->pid);
  rv__coord_out_kv_str(o, "admin", id->admin_url);
}
#define IDENTITY_FIELDS 5

/* ---- commands: sessions ----------------------------------------------------------------- */

static bool cmd_session_open(cmdctx *x) {
  const rv_resp_cmd *cmd = x->cmd;
  static const char usage[] =
      "SESSION.OPEN ttl_ms SERVICE name [REPLICA r] [HOST h] [PID n] [ADMIN url]";
  int64_t ttl_ms;
  if (cmd->argc < 2 || !rv__coord_arg_i64(&cmd->argv[1], &ttl_ms) || (cmd->argc % 2) != 0) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  rv_lt_identity id = {0};
  for (size_t i = 2; i + 1 < cmd->argc; i += 2) {
    const rv_resp_arg *key = &cmd->argv[i], *val = &cmd->argv[i + 1];
    if (rv_resp_arg_is(key, "SERVICE"))
      id.service = rv__coord_arg_str(val);
    else if (rv_resp_arg_is(key, "REPLICA"))
      id.replica = rv__coord_arg_str(val);
    else if (rv_resp_arg_is(key, "HOST"))
      id.host = rv__coord_arg_str(val);
    else if (rv_resp_arg_is(key, "ADMIN"))
      id.admin_url = rv__coord_arg_str(val);
    else if (rv_resp_arg_is(key, "PID")) {
      if (!rv__coord_arg_i64(val, &id.pid)) {
        rv__coord_reply_usage(x->k, usage);
        return false;
      }
    } else {
      char opt[32];
      rv__coord_arg_cstr(key, opt, sizeof opt);
      rv__coord_reply_err(x->k, "ERR unknown option '%s': usage: %s", opt, usage);
      return false;
    }
  }
  if (ttl_ms < rv__coord_ns_to_ms(RV_LT_TTL_MIN_NS) || ttl_ms > rv__coord_ns_to_ms(RV_LT_TTL_MAX_NS)) {
    rv__coord_reply_err(x->k, "BADTTL ttl_ms %" PRId64 " is out of range: must be %" PRId64 "..%" PRId64 " ms",
              ttl_ms, rv__coord_ns_to_ms(RV_LT_TTL_MIN_NS), rv__coord_ns_to_ms(RV_LT_TTL_MAX_NS));
    return false;
  }
  uint64_t sid;
  int rc = rv_lt_session_open(x->k->srv->lt, x->now, ttl_ms * RV_NS_PER_MS, &id, &sid);
  if (rc < 0) {
    reply_lt_error(x->k, rc);
  } else {
    rv_resp_out_int(&x->k->out, (int64_t)sid);
    /* Config's dry run must know this service exists, even if it sets no key. */
    rv__coord_cfg_register(x->k->srv, id.service, id.replica);
  }
  arm_timer(x->k->srv);
  return false;
}

static bool cmd_session_keepalive(cmdctx *x) {
  uint64_t sid;
  if (x->cmd->argc != 2 || !rv__coord_arg_u64(&x->cmd->argv[1], &sid)) {
    rv__coord_reply_usage(x->k, "SESSION.KEEPALIVE session");
    return false;
  }
  int64_t expires;
  int rc = rv_lt_session_keepalive(x->k->srv->lt, x->now, sid, &expires);
  if (rc < 0)
    reply_lt_error(x->k, rc);
  else
    rv_resp_out_int(&x->k->out, rv__coord_ns_to_ms(expires - x->now));
  arm_timer(x->k->srv);
  return false;
}

static bool cmd_session_close(cmdctx *x) {
  uint64_t sid;
  if (x->cmd->argc != 2 || !rv__coord_arg_u64(&x->cmd->argv[1], &sid)) {
    rv__coord_reply_usage(x->k, "SESSION.CLOSE session");
    return false;
  }
  rv_coord *c = x->k->srv;
  int rc = rv_lt_session_close(c->lt, x->now, sid, &c->ev);
  if (rc < 0)
    reply_lt_error(x->k, rc);
  else
    rv_resp_out_simple(&x->k->out, "OK");
  handle_events(c);
  arm_timer(c);
  return false;
}

typedef struct list_acc {
  rv_resp_out *o;
  size_t n;
  int64_t now;
} list_acc;

static bool held_row(const rv_lt_lock_view *v, void *arg) {
  list_acc *a = arg;
  rv_resp_out_array(a->o, 6);
  rv__coord_out_kv_str(a->o, "lock", v->name);
  rv__coord_out_kv_int(a->o, "token", (int64_t)v->token);
  rv__coord_out_kv_str(a->o, "description", v->holder_description);
  a->n++;
  return true;
}

static bool waiting_row(const rv_lt_waiter_view *v, void *arg) {
  list_acc *a = arg;
  rv_resp_out_array(a->o, 8);
  rv__coord_out_kv_str(a->o, "lock", v->lock);
  rv__coord_out_kv_int(a->o, "position", (int64_t)v->position);
  rv__coord_out_kv_str(a->o, "description", v->description);
  rv__coord_out_kv_int(a->o, "waiting_ms", rv__coord_ns_to_ms(a->now - v->since_ns));
  a->n++;
  return true;
}

static bool count_held(const rv_lt_lock_view *v, void *arg) {
  (*(size_t *)arg)++;
  return true;
}

static bool count_waiting(const rv_lt_waiter_view *v, void *arg) {
  (*(size_t *)arg)++;
  return true;
}

/* One session as a flat map; with_lists adds its held and awaited locks. */
static void out_session(rv_coord *c, rv_resp_out *o, const rv_lt_session_view *s, int64_t now,
                        bool with_lists) {
  rv_resp_out_array(o, 2 * (6 + IDENTITY_FIELDS + (with_lists ? 2 : 0)));
  rv__coord_out_kv_int(o, "session", (int64_t)s->id);
  out_identity(o, &s->identity);
  rv__coord_out_kv_int(o, "ttl_ms", rv__coord_ns_to_ms(s->ttl_ns));
  rv__coord_out_kv_int(o, "expires_in_ms", rv__coord_ns_to_ms(s->expires_ns - now));
  rv__coord_out_kv_int(o, "held_count", (int64_t)s->held);
  rv__coord_out_kv_int(o, "waiting_count", (int64_t)s->waiting);
  if (with_lists) {
    size_t nh = 0, nw = 0;
    rv_lt_session_held(c->lt, s->id, count_held, &nh);
    rv_lt_session_waiting(c->lt, s->id, count_waiting, &nw);
    list_acc a = {o, 0, now};
    rv_resp_out_bulk_cstr(o, "held");
    rv_resp_out_array(o, nh);
    rv_lt_session_held(c->lt, s->id, held_row, &a);
    rv_resp_out_bulk_cstr(o, "waiting");
    rv_resp_out_array(o, nw);
    rv_lt_session_waiting(c->lt, s->id, waiting_row, &a);
  }
  rv__coord_out_kv_int(o, "age_ms", rv__coord_ns_to_ms(now - s->opened_ns));
}

static bool cmd_session_info(cmdctx *x) {
  uint64_t sid;
  if (x->cmd->argc != 2 || !rv__coord_arg_u64(&x->cmd->argv[1], &sid)) {
    rv__coord_reply_usage(x->k, "SESSION.INFO session");
    return false;
  }
  rv_lt_session_view s;
  int rc = rv_lt_session_get(x->k->srv->lt, sid, &s);
  if (rc < 0)
    reply_lt_error(x->k, rc);
  else
    out_session(x->k->srv, &x->k->out, &s, x->now, true);
  return false;
}

typedef struct sess_list {
  rv_coord *c;
  rv_resp_out *o;
  int64_t now;
} sess_list;

static bool count_session(const rv_lt_session_view *s, void *arg) {
  (*(size_t *)arg)++;
  return true;
}

static bool session_row(const rv_lt_session_view *s, void *arg) {
  sess_list *l = arg;
  out_session(l->c, l->o, s, l->now, false);
  return true;
}

static bool cmd_session_list(cmdctx *x) {
  rv_coord *c = x->k->srv;
  size_t n = 0;
  rv_lt_session_list(c->lt, count_session, &n);
  rv_resp_out_array(&x->k->out, n);
  sess_list l = {c, &x->k->out, x->now};
  rv_lt_session_list(c->lt, session_row, &l);
  return false;
}

/* ---- commands: locks --------------------------------------------------------------------- */

static bool cmd_lock_acquire(cmdctx *x) {
  static const char usage[] =
      "LOCK.ACQUIRE session name [NOWAIT | WAIT ms] [DESC text] [DELAY ms]";
  const rv_resp_cmd *cmd = x->cmd;
  rv_coord *c = x->k->srv;
  uint64_t sid;
  if (cmd->argc < 3 || !rv__coord_arg_u64(&cmd->argv[1], &sid)) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  rv_lt_acquire_req req = {.session_id = sid,
                           .name = rv__coord_arg_str(&cmd->argv[2]),
                           .mode = RV_LT_WAIT,
                           .deadline_ns = RV_LT_NO_DEADLINE,
                           .lock_delay_ns = c->lock_delay_ns,
                           .cookie = (uint64_t)(uintptr_t)x->k};
  bool nowait = false, wait = false;
  for (size_t i = 3; i < cmd->argc; i++) {
    const rv_resp_arg *a = &cmd->argv[i];
    int64_t ms;
    if (rv_resp_arg_is(a, "NOWAIT")) {
      req.mode = RV_LT_TRY;
      nowait = true;
    } else if (rv_resp_arg_is(a, "WAIT") && i + 1 < cmd->argc && rv__coord_arg_i64(&cmd->argv[i + 1], &ms)) {
      wait = true;
      if (ms < 0 || ms > INT64_MAX / RV_NS_PER_MS / 2) {
        rv__coord_reply_err(x->k, "ERR WAIT %" PRId64 " ms is out of range: must be >= 0", ms);
        return false;
      }
      req.deadline_ns = x->now + ms * RV_NS_PER_MS;
      i++;
    } else if (rv_resp_arg_is(a, "DESC") && i + 1 < cmd->argc) {
      req.description = rv__coord_arg_str(&cmd->argv[++i]);
    } else if (rv_resp_arg_is(a, "DELAY") && i + 1 < cmd->argc &&
               rv__coord_arg_i64(&cmd->argv[i + 1], &ms)) {
      if (ms < 0 || ms > rv__coord_ns_to_ms(RV_LT_LOCK_DELAY_MAX_NS)) {
        rv__coord_reply_err(x->k, "BADDELAY DELAY %" PRId64 " ms is out of range: must be 0..%" PRId64, ms,
                  rv__coord_ns_to_ms(RV_LT_LOCK_DELAY_MAX_NS));
        return false;
      }
      req.lock_delay_ns = ms * RV_NS_PER_MS;
      i++;
    } else {
      rv__coord_reply_usage(x->k, usage);
      return false;
    }
  }
  if (nowait && wait) {
    rv__coord_reply_err(x->k, "ERR NOWAIT and WAIT contradict each other: give one");
    return false;
  }
  rv_lt_acquire_res res;
  int rc = rv_lt_acquire(c->lt, x->now, &req, &res);
  persist_tokens(c);
  arm_timer(c);
  switch (rc) {
  case RV_LT_GRANTED:
    rv_histogram_observe(c->m.wait_seconds, 0);
    rv_resp_out_int(&x->k->out, (int64_t)res.token);
    return false;
  case RV_LT_BUSY:
  case RV_LT_TIMEDOUT:
    rv_resp_out_null(&x->k->out);
    return false;
  case RV_LT_QUEUED:
    x->k->blocked = BLOCK_LOCK;
    x->k->block_session = sid;
    x->k->block_waiter = res.waiter_id;
    x->k->block_since_ns = x->now;
    return true;
  default:
    reply_lt_error(x->k, rc);
    return false;
  }
}

static bool cmd_lock_release(cmdctx *x) {
  uint64_t sid, token;
  const rv_resp_cmd *cmd = x->cmd;
  if (cmd->argc != 4 || !rv__coord_arg_u64(&cmd->argv[1], &sid) || !rv__coord_arg_u64(&cmd->argv[3], &token)) {
    rv__coord_reply_usage(x->k, "LOCK.RELEASE session name token");
    return false;
  }
  rv_coord *c = x->k->srv;
  int rc = rv_lt_release(c->lt, x->now, sid, rv__coord_arg_str(&cmd->argv[2]), token, &c->ev);
  if (rc < 0)
    reply_lt_error(x->k, rc);
  else
    rv_resp_out_simple(&x->k->out, "OK");
  handle_events(c);
  arm_timer(c);
  return false;
}

static bool cmd_lock_describe(cmdctx *x) {
  uint64_t sid, token;
  const rv_resp_cmd *cmd = x->cmd;
  if (cmd->argc != 5 || !rv__coord_arg_u64(&cmd->argv[1], &sid) || !rv__coord_arg_u64(&cmd->argv[3], &token)) {
    rv__coord_reply_usage(x->k, "LOCK.DESCRIBE session name token description");
    return false;
  }
  int rc = rv_lt_describe(x->k->srv->lt, x->now, sid, rv__coord_arg_str(&cmd->argv[2]), token,
                          rv__coord_arg_str(&cmd->argv[4]));
  if (rc < 0)
    reply_lt_error(x->k, rc);
  else
    rv_resp_out_simple(&x->k->out, "OK");
  return false;
}

typedef struct cancel_acc {
  rv_lt_str name;
  uint64_t ids[64];
  size_t n;
} cancel_acc;

static bool collect_waiter(const rv_lt_waiter_view *v, void *arg) {
  cancel_acc *a = arg;
  if (strlen(v->lock) == a->name.len && memcmp(v->lock, a->name.ptr, a->name.len) == 0 &&
      a->n < sizeof a->ids / sizeof a->ids[0])
    a->ids[a->n++] = v->waiter_id;
  return true;
}

typedef struct find_cookie {
  uint64_t waiter_id;
  uint64_t cookie;
} find_cookie;

static bool find_waiter_cookie(const rv_lt_waiter_view *v, void *arg) {
  find_cookie *f = arg;
  if (v->waiter_id == f->waiter_id) {
    f->cookie = v->cookie;
    return false;
  }
  return true;
}

/*
 * Withdraw a session's waits on one lock from any connection (a client
 * library cancelling a context without closing its blocked connection).
 * Each blocked connection gets "-CANCELLED".
 */
static bool cmd_lock_cancel(cmdctx *x) {
  uint64_t sid;
  const rv_resp_cmd *cmd = x->cmd;
  if (cmd->argc != 3 || !rv__coord_arg_u64(&cmd->argv[1], &sid)) {
    rv__coord_reply_usage(x->k, "LOCK.CANCEL session name");
    return false;
  }
  rv_coord *c = x->k->srv;
  cancel_acc a = {.name = rv__coord_arg_str(&cmd->argv[2])};
  int rc = rv_lt_session_waiting(c->lt, sid, collect_waiter, &a);
  if (rc < 0) {
    reply_lt_error(x->k, rc);
    return false;
  }
  for (size_t i = 0; i < a.n; i++) {
    find_cookie f = {a.ids[i], 0};
    rv_lt_session_waiting(c->lt, sid, find_waiter_cookie, &f);
    if (rv_lt_withdraw(c->lt, x->now, sid, a.ids[i]) < 0)
      continue;
    cconn *w = (cconn *)(uintptr_t)f.cookie;
    if (w && w->blocked == BLOCK_LOCK && w->block_waiter == a.ids[i]) {
      rv_resp_out_error(&w->out, "CANCELLED lock wait cancelled by LOCK.CANCEL");
      rv__coord_unblock(w);
    }
  }
  rv_resp_out_int(&x->k->out, (int64_t)a.n);
  arm_timer(c);
  return false;
}

typedef struct lock_out {
  rv_coord *c;
  rv_resp_out *o;
  int64_t now;
  size_t n;
} lock_out;

static bool waiter_row(const rv_lt_waiter_view *v, void *arg) {
  lock_out *l = arg;
  rv_resp_out_array(l->o, 2 * (5 + IDENTITY_FIELDS));
  rv__coord_out_kv_int(l->o, "position", (int64_t)v->position);
  rv__coord_out_kv_int(l->o, "session", (int64_t)v->session_id);
  out_identity(l->o, &v->identity);
  rv__coord_out_kv_str(l->o, "description", v->description);
  rv__coord_out_kv_int(l->o, "waiting_ms", rv__coord_ns_to_ms(l->now - v->since_ns));
  rv__coord_out_kv_int(l->o, "deadline_in_ms",
             v->deadline_ns == RV_LT_NO_DEADLINE ? -1 : rv__coord_ns_to_ms(v->deadline_ns - l->now));
  return true;
}

/* One lock as a flat map; with_waiters lists its queue in FIFO order. */
static void out_lock(lock_out *l, const rv_lt_lock_view *v, bool with_waiters) {
  rv_resp_out *o = l->o;
  rv_resp_out_array(o, 2 * (8 + IDENTITY_FIELDS + (with_waiters ? 1 : 0)));
  rv__coord_out_kv_str(o, "lock", v->name);
  rv__coord_out_kv_int(o, "held", v->held);
  rv__coord_out_kv_int(o, "token", (int64_t)v->token);
  rv__coord_out_kv_int(o, "holder_session", (int64_t)v->holder_session);
  out_identity(o, &v->holder_identity);
  rv__coord_out_kv_str(o, "description", v->holder_description);
  rv__coord_out_kv_int(o, "held_ms", v->held ? rv__coord_ns_to_ms(l->now - v->held_since_ns) : 0);
  rv__coord_out_kv_int(o, "waiter_count", (int64_t)v->waiters);
  rv__coord_out_kv_int(o, "oldest_wait_ms",
             v->waiters ? rv__coord_ns_to_ms(l->now - v->oldest_waiter_since_ns) : 0);
  if (with_waiters) {
    rv_resp_out_bulk_cstr(o, "waiters");
    rv_resp_out_array(o, v->waiters);
    rv_lt_lock_waiters(l->c->lt, (rv_lt_str){v->name, strlen(v->name)}, waiter_row, l);
  }
}

static bool cmd_lock_info(cmdctx *x) {
  if (x->cmd->argc != 2) {
    rv__coord_reply_usage(x->k, "LOCK.INFO name");
    return false;
  }
  rv_lt_lock_view v;
  int rc = rv_lt_lock_get(x->k->srv->lt, rv__coord_arg_str(&x->cmd->argv[1]), &v);
  if (rc == RV_LT_ENOLOCK) {
    rv_resp_out_null(&x->k->out); /* never held, or released with nobody waiting */
    return false;
  }
  if (rc < 0) {
    reply_lt_error(x->k, rc);
    return false;
  }
  lock_out l = {x->k->srv, &x->k->out, x->now, 0};
  out_lock(&l, &v, true);
  return false;
}

static bool count_lock(const rv_lt_lock_view *v, void *arg) {
  (*(size_t *)arg)++;
  return true;
}

static bool lock_row(const rv_lt_lock_view *v, void *arg) {
  out_lock(arg, v, true);
  return true;
}

static bool cmd_lock_list(cmdctx *x) {
  rv_lt_filter f = {0};
  const rv_resp_cmd *cmd = x->cmd;
  for (size_t i = 1; i < cmd->argc; i++) {
    if (rv_resp_arg_is(&cmd->argv[i], "PREFIX") && i + 1 < cmd->argc)
      f.prefix = rv__coord_arg_str(&cmd->argv[++i]);
    else if (rv_resp_arg_is(&cmd->argv[i], "CONTENDED"))
      f.only_contended = true;
    else if (rv_resp_arg_is(&cmd->argv[i], "HELD"))
      f.only_held = true;
    else {
      rv__coord_reply_usage(x->k, "LOCK.LIST [PREFIX p] [CONTENDED] [HELD]");
      return false;
    }
  }
  rv_coord *c = x->k->srv;
  size_t n = 0;
  rv_lt_lock_list(c->lt, &f, count_lock, &n);
  rv_resp_out_array(&x->k->out, n);
  lock_out l = {c, &x->k->out, x->now, 0};
  rv_lt_lock_list(c->lt, &f, lock_row, &l);
  return false;
}

/* ---- commands: the Redis basics every client expects ---------------------------------------- */

static bool cmd_ping(cmdctx *x) {
  if (x->cmd->argc > 2) {
    rv__coord_reply_usage(x->k, "PING [message]");
    return false;
  }
  if (x->cmd->argc == 2)
    rv_resp_out_bulk(&x->k->out, x->cmd->argv[1].ptr, x->cmd->argv[1].len);
  else
    rv_resp_out_simple(&x->k->out, "PONG");
  return false;
}

static bool cmd_echo(cmdctx *x) {
  if (x->cmd->argc != 2) {
    rv__coord_reply_usage(x->k, "ECHO message");
    return false;
  }
  rv_resp_out_bulk(&x->k->out, x->cmd->argv[1].ptr, x->cmd->argv[1].len);
  return false;
}

static bool cmd_quit(cmdctx *x) {
  rv_resp_out_simple(&x->k->out, "OK");
  rv__coord_conn_flush(x->k);
  rv_sconn_close(x->k->sc);
  return false;
}

/* SELECT 0 only: clients configured with a db number send it on connect. */
static bool cmd_select(cmdctx *x) {
  int64_t db;
  if (x->cmd->argc != 2 || !rv__coord_arg_i64(&x->cmd->argv[1], &db))
    rv__coord_reply_usage(x->k, "SELECT 0");
  else if (db != 0)
    rv__coord_reply_err(x->k, "ERR DB index is out of range: coord has only database 0");
  else
    rv_resp_out_simple(&x->k->out, "OK");
  return false;
}

static bool cmd_client(cmdctx *x) {
  const rv_resp_cmd *cmd = x->cmd;
  if (cmd->argc == 3 && rv_resp_arg_is(&cmd->argv[1], "SETNAME")) {
    rv__coord_arg_cstr(&cmd->argv[2], x->k->name, sizeof x->k->name);
    rv_resp_out_simple(&x->k->out, "OK");
  } else if (cmd->argc == 2 && rv_resp_arg_is(&cmd->argv[1], "GETNAME")) {
    if (x->k->name[0])
      rv_resp_out_bulk_cstr(&x->k->out, x->k->name);
    else
      rv_resp_out_null(&x->k->out);
  } else if (cmd->argc == 2 && rv_resp_arg_is(&cmd->argv[1], "ID")) {
    rv_resp_out_int(&x->k->out, (int64_t)x->k->id);
  } else if (cmd->argc >= 2 && (rv_resp_arg_is(&cmd->argv[1], "SETINFO"))) {
    rv_resp_out_simple(&x->k->out, "OK"); /* redis-cli 7 and newer clients send it */
  } else {
    rv__coord_reply_usage(x->k, "CLIENT SETNAME name | GETNAME | ID | SETINFO ...");
  }
  return false;
}

/* COMMAND (and COMMAND DOCS/COUNT): clients probe it; coord answers with nothing to learn. */
static bool cmd_command(cmdctx *x) {
  if (x->cmd->argc >= 2 && rv_resp_arg_is(&x->cmd->argv[1], "COUNT"))
    rv_resp_out_int(&x->k->out, 0);
  else
    rv_resp_out_array(&x->k->out, 0);
  return false;
}

static bool cmd_info(cmdctx *x) {
  rv_coord *c = x->k->srv;
  rv_lt_stats st;
  rv_lt_get_stats(c->lt, &st);
  char *s = NULL;
  int n = asprintf(&s,
                   "# Server\r\nravel_component:coord\r\nravel_version:0.1.0\r\n"
                   "redis_version:7.0.0-ravel-coord\r\ntcp_port:%u\r\nuptime_in_seconds:%" PRId64
                   "\r\nboot:%" PRIu64 "\r\n\r\n# Persistence\r\nloading:0\r\n\r\n"
                   "# Clients\r\nconnected_clients:%zu\r\n\r\n# Locks\r\nsessions:%zu\r\n"
                   "locks:%zu\r\nwaiters:%zu\r\ntoken_last:%" PRIu64 "\r\n",
                   c->port, (rv_wall_ns() - c->started_wall_ns) / RV_NS_PER_S, c->boot,
                   c->nconns, st.sessions, st.locks, st.waiters, rv_lt_token_last(c->lt));
  if (n < 0) {
    rv__coord_reply_err(x->k, "OOM cannot render INFO");
    return false;
  }
  rv_resp_out_bulk(&x->k->out, s, (size_t)n);
  free(s);
  return false;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

typedef struct command {
  const char *name;
  cmd_fn fn;
} command;

static const command commands[] = {
    {"SESSION.OPEN", cmd_session_open},
    {"SESSION.KEEPALIVE", cmd_session_keepalive},
    {"SESSION.CLOSE", cmd_session_close},
    {"SESSION.INFO", cmd_session_info},
    {"SESSION.LIST", cmd_session_list},
    {"LOCK.ACQUIRE", cmd_lock_acquire},
    {"LOCK.RELEASE", cmd_lock_release},
    {"LOCK.DESCRIBE", cmd_lock_describe},
    {"LOCK.CANCEL", cmd_lock_cancel},
    {"LOCK.INFO", cmd_lock_info},
    {"LOCK.LIST", cmd_lock_list},
    {"PING", cmd_ping},
    {"ECHO", cmd_echo},
    {"QUIT", cmd_quit},
    {"SELECT", cmd_select},
    {"CLIENT", cmd_client},
    {"COMMAND", cmd_command},
    {"INFO", cmd_info},
};

static bool dispatch(cconn *k, const rv_resp_cmd *cmd) {
  rv_counter_inc(k->srv->m.commands);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (rv_resp_arg_is(&cmd->argv[0], commands[i].name)) {
      cmdctx x = {k, cmd, rv_now_ns()};
      return commands[i].fn(&x);
    }
  }
  bool blocked;
  cmdctx x = {k, cmd, rv_now_ns()};
  if (rv__coord_cfg_dispatch(&x, &blocked))
    return blocked;
  char name[64];
  rv__coord_arg_cstr(&cmd->argv[0], name, sizeof name);
  rv__coord_reply_err(k, "ERR unknown command '%s': coord speaks SESSION.*, LOCK.*, CFG.* (see docs/coord.md)",
            name);
  return false;
}

/* ---- connections -------------------------------------------------------------------------- */

static void *on_open(void *server, rv_sconn *sc) {
  rv_coord *c = server;
  if (c->nconns >= RV_COORD_CONNECTIONS_MAX) {
    rv_sconn_write(sc, "-ERR max number of clients reached\r\n", 36);
    rv_sconn_close(sc);
    rv_log_warn(c->log, "connection refused: limit reached", "peer=%s limit=%d",
                rv_sconn_peer(sc), RV_COORD_CONNECTIONS_MAX);
    return NULL;
  }
  cconn *k = calloc(1, sizeof *k);
  if (!k)
    return NULL;
  k->srv = c;
  k->sc = sc;
  k->id = ++c->next_conn_id;
  rv_resp_parser_init(&k->parser, NULL);
  rv_resp_out_init(&k->out, COORD_REPLY_MAX_BYTES);
  k->next = c->conns;
  if (c->conns)
    c->conns->prev = k;
  c->conns = k;
  c->nconns++;
  return k;
}

static size_t on_data(void *conn, const char *buf, size_t len) {
  cconn *k = conn;
  size_t used = 0;
  while (used < len && k->blocked == BLOCK_NONE) {
    size_t n = 0;
    rv_resp_cmd cmd;
    int rc = rv_resp_parse(&k->parser, buf + used, len - used, &n, &cmd);
    used += n;
    if (rc == RV_RESP_AGAIN)
      break;
    if (rc == RV_RESP_ERROR) {
      rv_resp_out_error(&k->out, rv_resp_parser_error(&k->parser));
      rv__coord_conn_flush(k);
      rv_sconn_close(k->sc);
      return len;
    }
    if (cmd.argc == 0)
      continue;
    if (dispatch(k, &cmd)) {
      rv_sconn_pause(k->sc);
      break;
    }
  }
  rv__coord_conn_flush(k);
  publish_stats(k->srv);
  return used;
}

static void on_close(void *conn) {
  cconn *k = conn;
  rv_coord *c = k->srv;
  rv__coord_cfg_conn_closed(k);
  if (k->blocked == BLOCK_LOCK) {
    /* The client gave up (closed): its wait leaves the queue now. */
    rv_lt_withdraw(c->lt, rv_now_ns(), k->block_session, k->block_waiter);
    arm_timer(c);
  }
  if (k->prev)
    k->prev->next = k->next;
  else
    c->conns = k->next;
  if (k->next)
    k->next->prev = k->prev;
  c->nconns--;
  rv_resp_parser_free(&k->parser);
  rv_resp_out_free(&k->out);
  free(k);
}

static const rv_sconn_handler coord_handler = {on_open, on_data, on_close, NULL};

/* ---- metrics ------------------------------------------------------------------------------- */

/*
 * The lock table belongs to the loop thread; the admin thread renders
 * /metrics.  So the loop thread publishes what the gauges need (the table's
 * stats after every batch of commands, the contended locks once a second)
 * into pub_* under a raw mutex, and the collector only copies from there.
 */
#define COORD_METRICS_REFRESH_NS (1 * RV_NS_PER_S)
#define COORD_LOCK_SERIES_MAX 64 /* contended locks shown with their oldest waiter */

static void publish_stats(rv_coord *c) {
  rv_lt_stats st;
  rv_lt_get_stats(c->lt, &st);
  rv_cfg_stats cst = {0};
  if (c->cfg)
    rv_cfg_get_stats(c->cfg, &cst);
  rv_rawmu_lock(&c->pub_mu);
  c->pub_stats = st;
  c->pub_cfg = cst;
  c->pub_conns = c->nconns;
  rv_rawmu_unlock(&c->pub_mu);
}

typedef struct contended {
  rv_coord *c;
  int64_t now;
  size_t n;
} contended;

static bool publish_lock(const rv_lt_lock_view *v, void *arg) {
  contended *a = arg;
  if (a->n >= COORD_LOCK_SERIES_MAX)
    return false;
  snprintf(a->c->pub_locks[a->n].name, sizeof a->c->pub_locks[0].name, "%s", v->name);
  a->c->pub_locks[a->n].oldest_wait_s = (double)(a->now - v->oldest_waiter_since_ns) / RV_NS_PER_S;
  a->c->pub_locks[a->n].waiters = v->waiters;
  a->n++;
  return true;
}

static void on_metrics_timer(void *arg) {
  rv_coord *c = arg;
  rv_lt_filter f = {.only_contended = true};
  contended a = {c, rv_now_ns(), 0};
  rv_rawmu_lock(&c->pub_mu);
  rv_lt_lock_list(c->lt, &f, publish_lock, &a);
  c->pub_nlocks = a.n;
  rv_rawmu_unlock(&c->pub_mu);
  publish_stats(c);
  rv_timer_set(c->metrics_timer, rv_now_ns() + COORD_METRICS_REFRESH_NS);
}

static void write_one(rv_metrics_writer *w, const char *name, const char *help, int type, double v) {
  rv_metrics_write_family(w, name, help, type);
  rv_metrics_write_sample(w, NULL, v);
}

static void collect(rv_metrics_writer *w, void *arg) {
  rv_coord *c = arg;
  rv_rawmu_lock(&c->pub_mu);
  rv_lt_stats st = c->pub_stats;
  size_t conns = c->pub_conns;
  write_one(w, "ravel_coord_connections", "Client connections open.", RV_METRIC_GAUGE, (double)conns);
  write_one(w, "ravel_coord_sessions", "Sessions alive.", RV_METRIC_GAUGE, (double)st.sessions);
  write_one(w, "ravel_coord_locks_held", "Locks held.", RV_METRIC_GAUGE, (double)st.locks_held);
  write_one(w, "ravel_coord_locks_delayed", "Locks in lock-delay after a holder's expiry.",
            RV_METRIC_GAUGE, (double)st.locks_delayed);
  write_one(w, "ravel_coord_lock_waiters", "Lock waits queued.", RV_METRIC_GAUGE, (double)st.waiters);
  write_one(w, "ravel_coord_lock_acquisitions_total", "Lock grants, immediate or by hand-off.",
            RV_METRIC_COUNTER, (double)st.grants);
  write_one(w, "ravel_coord_lock_handoffs_total", "Locks handed to a waiter.", RV_METRIC_COUNTER,
            (double)st.handoffs);
  write_one(w, "ravel_coord_lock_waits_total", "Acquisitions that queued.", RV_METRIC_COUNTER,
            (double)st.waits);
  write_one(w, "ravel_coord_lock_busy_total", "Acquisitions refused (NOWAIT busy or WAIT elapsed).",
            RV_METRIC_COUNTER, (double)st.busy);
  write_one(w, "ravel_coord_lock_releases_total", "Locks released.", RV_METRIC_COUNTER,
            (double)st.releases);
  write_one(w, "ravel_coord_lock_releases_rejected_total",
            "Releases refused: not held, another session's, or a stale token.", RV_METRIC_COUNTER,
            (double)st.releases_rejected);
  write_one(w, "ravel_coord_lock_wait_timeouts_total", "Lock waits that reached their WAIT bound.",
            RV_METRIC_COUNTER, (double)st.waiter_timeouts);
  write_one(w, "ravel_coord_lock_wait_withdrawals_total",
            "Lock waits withdrawn by LOCK.CANCEL or a closed connection.", RV_METRIC_COUNTER,
            (double)st.waiter_withdrawals);
  write_one(w, "ravel_coord_session_expiries_total", "Sessions expired for want of keepalives.",
            RV_METRIC_COUNTER, (double)st.sessions_expired);
  write_one(w, "ravel_coord_locks_lost_total", "Holds ended by their session's expiry.",
            RV_METRIC_COUNTER, (double)st.locks_lost);
  rv_cfg_stats cst = c->pub_cfg;
  write_one(w, "ravel_coord_config_revision", "The config store's revision.", RV_METRIC_GAUGE,
            (double)cst.revision);
  write_one(w, "ravel_coord_config_keys", "Config keys across all layers.", RV_METRIC_GAUGE,
            (double)cst.keys);
  write_one(w, "ravel_coord_config_watches", "Config watches open (CFG.WATCH polls waiting).",
            RV_METRIC_GAUGE, (double)cst.watches);
  write_one(w, "ravel_coord_config_writes_total", "Config writes committed.", RV_METRIC_COUNTER,
            (double)cst.writes);
  write_one(w, "ravel_coord_config_conflicts_total", "Config writes refused by IFREV.",
            RV_METRIC_COUNTER, (double)cst.conflicts);
  write_one(w, "ravel_coord_config_notifications_total",
            "Effective-change notifications produced for watches.", RV_METRIC_COUNTER,
            (double)cst.notifications);
  write_one(w, "ravel_coord_config_raw_notifications_total",
            "Notifications produced for raw (every-write) watches.", RV_METRIC_COUNTER,
            (double)cst.raw_notifications);
  write_one(w, "ravel_coord_config_suppressed_total",
            "Writes that reached an effective watch without changing its value (no notification).",
            RV_METRIC_COUNTER, (double)cst.suppressed);
  rv_metrics_write_family(w, "ravel_coord_lock_oldest_wait_seconds",
                          "Age of the oldest waiter of each contended lock (refreshed each second).",
                          RV_METRIC_GAUGE);
  for (size_t i = 0; i < c->pub_nlocks; i++)
    rv_metrics_write_sample(w, (const char *[]){"lock", c->pub_locks[i].name, NULL},
                            c->pub_locks[i].oldest_wait_s);
  rv_rawmu_unlock(&c->pub_mu);
}

static void setup_metrics(rv_coord *c) {
  rv_metrics *m = c->metrics;
  c->m.commands = rv_counter_labels(
      rv_metrics_counter(m, "ravel_coord_commands_total", "RESP commands processed.", NULL));
  c->m.errors = rv_counter_labels(
      rv_metrics_counter(m, "ravel_coord_errors_total", "Commands answered with an error.", NULL));
  c->m.wait_seconds = rv_histogram_labels(rv_metrics_histogram(
      m, "ravel_coord_lock_wait_seconds", "Time from LOCK.ACQUIRE to grant or timeout.", NULL,
      NULL, 0));
  static const double handoff_bounds[] = {0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                          0.0025,  0.005,   0.01,   0.1,     1};
  c->m.handoff_seconds = rv_histogram_labels(rv_metrics_histogram(
      m, "ravel_coord_lock_handoff_seconds",
      "From a release (or expiry) to the next waiter's grant leaving the server.", NULL,
      handoff_bounds, sizeof handoff_bounds / sizeof handoff_bounds[0]));
  rv_metrics_add_collector(m, collect, c);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

int rv_coord_start(rv_coord **out, const rv_coord_opts *o, char *why, size_t why_len) {
  rv_coord *c = calloc(1, sizeof *c);
  if (!c)
    return RV_ENOMEM;
  snprintf(why, why_len, "ok");
  c->started_wall_ns = rv_wall_ns();
  rv_rawmu_init(&c->pub_mu);
  c->lock_delay_ns = o->lock_delay_ns;
  snprintf(c->data_dir, sizeof c->data_dir, "%s", o->data_dir ? o->data_dir : RV_COORD_DEFAULT_DATA);
  c->log = o->log;
  if (!c->log) {
    c->log = rv_log_new(2, RV_LOG_INFO, "coord");
    c->own_log = true;
  }
  c->metrics = o->metrics;
  if (!c->metrics) {
    c->metrics = rv_metrics_new();
    c->own_metrics = true;
  }
  int rc = RV_OK;
  if ((rc = rv_mkdir_p(c->data_dir)) != RV_OK) {
    snprintf(why, why_len, "cannot create data directory %s: %s", c->data_dir, rv_strerror(rc));
    rc = RV_EIO;
    goto fail;
  }
  uint64_t ceiling;
  rc = state_load(c, &c->boot, &ceiling);
  if (rc != RV_OK) {
    snprintf(why, why_len, "cannot read %s/%s: %s", c->data_dir, COORD_STATE_FILE,
             rc == RV_EPROTO ? "unrecognised line (corrupt file?)" : rv_strerror(rc));
    goto fail;
  }
  c->boot++; /* saved once the ports are bound: a start that fails does not count */
  rv_lt_opts lo;
  rv_lt_opts_default(&lo);
  lo.token_floor = ceiling;
  /* Each reservation costs an fsync on the loop thread; a large one makes
   * that rare (the bench saw a 5 ms save every 512 grants block the loop
   * 10% of the time).  A crash skips at most this many tokens: harmless. */
  lo.token_reserve = COORD_TOKEN_RESERVE;
  lo.session_id_floor = c->boot << 32;
  lo.hash_seed[0] = rv_rng_os_seed();
  lo.hash_seed[1] = rv_rng_os_seed();
  if (rv_lt_create(&c->lt, &lo) != RV_LT_OK) {
    snprintf(why, why_len, "cannot create lock table (token ceiling %" PRIu64 ")", ceiling);
    rc = RV_EINVAL;
    goto fail;
  }
  rv_lt_events_init(&c->ev);
  rc = rv__coord_cfg_open(c, o->config_sync_full, why, why_len);
  if (rc != RV_OK)
    goto fail;
  publish_stats(c);
  setup_metrics(c);

  if (o->loop) {
    c->loop = o->loop;
  } else {
    rc = rv_loop_new(&c->loop, NULL);
    if (rc != RV_OK)
      goto fail;
    c->own_loop = true;
  }
  c->timer = rv_timer_new(c->loop, on_timer, c);
  c->metrics_timer = rv_timer_new(c->loop, on_metrics_timer, c);
  rv_timer_set(c->metrics_timer, rv_now_ns() + COORD_METRICS_REFRESH_NS);
  const char *host = o->host ? o->host : "127.0.0.1";
  uint16_t port = o->port_any ? 0 : (o->port ? o->port : RV_COORD_DEFAULT_PORT);
  rc = rv_loop_listen(c->loop, host, port, &coord_handler, c, &c->port);
  if (rc != RV_OK) {
    snprintf(why, why_len, "cannot listen on %s:%u (in use?)", host, port);
    goto fail;
  }
  if (!o->no_admin) {
    uint16_t aport = o->port_any ? 0 : (o->admin_port ? o->admin_port : RV_COORD_DEFAULT_ADMIN_PORT);
    rc = rv_admin_start(&c->admin, &(rv_admin_opts){.host = host, .port = aport, .metrics = c->metrics});
    if (rc != RV_OK) {
      snprintf(why, why_len, "cannot start admin endpoint on %s:%u (in use?)", host, aport);
      goto fail;
    }
    c->admin_port = rv_admin_port(c->admin);
  }
  if ((rc = state_save(c, c->boot, ceiling)) != RV_OK) {
    snprintf(why, why_len, "cannot write %s/%s: %s", c->data_dir, COORD_STATE_FILE, rv_strerror(rc));
    rc = RV_EIO;
    goto fail;
  }
  rv_log_info(c->log, "coord listening", "resp=%s:%u admin=%s:%u data=%s boot=%" PRIu64
              " token_floor=%" PRIu64, host, c->port, host, c->admin_port, c->data_dir, c->boot,
              ceiling);
  *out = c;
  return RV_OK;
fail:
  rv_coord_free(c);
  return rc;
}

uint16_t rv_coord_port(const rv_coord *c) { return c->port; }
uint16_t rv_coord_admin_port(const rv_coord *c) { return c->admin_port; }

int rv_coord_run(rv_coord *c) {
  if (!c->own_loop)
    return RV_EINVAL;
  rv_loop_stop_on_signals(c->loop);
  return rv_loop_run(c->loop);
}

void rv_coord_stop(rv_coord *c) {
  if (c->own_loop)
    rv_loop_stop(c->loop);
}

void rv_coord_free(rv_coord *c) {
  if (!c)
    return;
  rv_admin_stop(c->admin);
  rv_timer_free(c->timer);
  rv_timer_free(c->metrics_timer);
  if (c->own_loop)
    rv_loop_free(c->loop); /* closes connections: on_close withdraws their waits */
  rv__coord_cfg_close(c);
  rv_lt_events_free(&c->ev);
  rv_lt_destroy(c->lt);
  if (c->own_metrics)
    rv_metrics_free(c->metrics);
  rv_rawmu_destroy(&c->pub_mu);
  if (c->own_log)
    rv_log_free(c->log);
  free(c);
}
