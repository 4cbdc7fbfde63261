/*
 * The queue server shell (see queue.h; the protocol is docs/queue.md).
 *
 * A connection feeds its bytes to the NSQ decoder; each command goes to the
 * core (core/queue.h), whose events (deliver this message to that consumer,
 * tell that consumer its message timed out, close that consumer) come back
 * here and become frames.  Everything runs on the loop thread.
 *
 * Publishing is durable before OK: the core appends to the topic's log
 * (through queue_store.c) and the PUB's "OK" waits in the connection's reply
 * queue until the log's sync thread reports the sequence durable (group
 * commit: one fdatasync covers every publish since the last).  Replies leave
 * in command order, so a pipelining producer sees its OKs in order; message
 * frames to consumers are not replies and go out at once.  With
 * deliver_after_ack, consumers never see a message that is not yet durable.
 */
#define _GNU_SOURCE
#include "server/queue_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t rv__qsrv_now(void) { return rv_wall_ns(); }

/* ---- running work on the loop thread ----------------------------------------------------- */

typedef struct qjob {
  struct qjob *next;
  void (*fn)(rv_qsrv *s, void *arg);
  void *arg;
  bool done;
  rv_mutex mu;
  rv_cond cv;
} qjob;

/*
 * Once the loop has stopped (shutdown), jobs run on the caller's thread,
 * serialized by job_mu: nothing else touches the core then.
 */
static bool loop_done(rv_qsrv *s);

void rv__qsrv_on_loop(rv_qsrv *s, void (*fn)(rv_qsrv *s, void *arg), void *arg) {
  rv_rawmu_lock(&s->job_mu);
  if (loop_done(s)) {
    fn(s, arg);
    rv_rawmu_unlock(&s->job_mu);
    return;
  }
  qjob j = {.fn = fn, .arg = arg};
  rv_mutex_init(&j.mu, "qsrv-job");
  rv_cond_init(&j.cv, "qsrv-job");
  j.next = s->jobs;
  s->jobs = &j;
  rv_rawmu_unlock(&s->job_mu);
  rv_wakeup_send(s->job_wake);
  rv_mutex_lock(&j.mu);
  while (!j.done)
    rv_cond_wait(&j.cv, &j.mu, NULL);
  rv_mutex_unlock(&j.mu);
  rv_cond_destroy(&j.cv);
  rv_mutex_destroy(&j.mu);
}

static void run_jobs(rv_qsrv *s) {
  rv_rawmu_lock(&s->job_mu);
  qjob *list = s->jobs;
  s->jobs = NULL;
  rv_rawmu_unlock(&s->job_mu);
  while (list) {
    qjob *j = list;
    list = j->next;
    j->fn(s, j->arg);
    rv_mutex_lock(&j->mu);
    j->done = true;
    rv_cond_signal(&j->cv);
    rv_mutex_unlock(&j->mu);
  }
}

static void on_job_wake(void *arg) { run_jobs(arg); }

/* ---- frames and ordered replies -------------------------------------------------------------- */

static void conn_write_frame(qconn *k) {
  rv_qsrv *s = k->srv;
  rv_sconn_write(k->sc, s->frame.data, s->frame.len);
  s->frame.len = 0;
}

/* Queue the frame in s->frame as a reply; it leaves when every earlier reply has. */
static void reply(qconn *k, qs_topic *wait_topic, uint64_t wait_seq) {
  rv_qsrv *s = k->srv;
  if (!k->pending_head && (!wait_topic || wait_topic->acked >= wait_seq)) {
    conn_write_frame(k);
    return;
  }
  qreply *r = malloc(sizeof *r + s->frame.len);
  if (!r) {
    rv_sconn_close(k->sc); /* cannot keep the order promise: better to drop the client */
    s->frame.len = 0;
    return;
  }
  r->next = NULL;
  r->t = wait_topic;
  r->seq = wait_seq;
  r->len = s->frame.len;
  memcpy(r->data, s->frame.data, s->frame.len);
  s->frame.len = 0;
  if (k->pending_tail)
    k->pending_tail->next = r;
  else
    k->pending_head = r;
  k->pending_tail = r;
}

/* Send the replies at the head of k's queue that are durable now. */
static void release_replies(qconn *k) {
  while (k->pending_head) {
    qreply *r = k->pending_head;
    if (r->t && r->t->acked < r->seq)
      return;
    rv_sconn_write(k->sc, r->data, r->len);
    k->pending_head = r->next;
    if (!k->pending_head)
      k->pending_tail = NULL;
    free(r);
  }
}

static void send_error(qconn *k, const rv_nsq_error *err) {
  rv_qsrv *s = k->srv;
  rv_nsq_enc_error(&s->frame, err);
  reply(k, NULL, 0);
  if (err->fatal)
    rv_sconn_close(k->sc);
}

static void send_ok(qconn *k, qs_topic *t, uint64_t seq) {
  rv_nsq_enc_ok(&k->srv->frame);
  reply(k, t, seq);
}

/* ---- durability ------------------------------------------------------------------------------------ */

static void dwait_complete(qdwait *w) {
  rv_mutex_lock(&w->mu);
  w->done = true;
  rv_cond_signal(&w->cv);
  rv_mutex_unlock(&w->mu);
}

/* Loop thread: complete the waiters whose sequence is durable (or whose topic is gone). */
static void dwait_release(rv_qsrv *s, qs_topic *gone) {
  for (qdwait **pp = &s->durable_waiters; *pp;) {
    qdwait *w = *pp;
    if (w->t == gone || w->t->acked >= w->seq) {
      *pp = w->next;
      dwait_complete(w);
    } else {
      pp = &w->next;
    }
  }
}

void rv__qsrv_dwait_begin(rv_qsrv *s, qdwait *w, qs_topic *t, uint64_t seq) {
  *w = (qdwait){.t = t, .seq = seq};
  rv_mutex_init(&w->mu, "qsrv-durable-wait");
  rv_cond_init(&w->cv, "qsrv-durable-wait");
  if (t->acked >= seq) {
    w->done = true;
    return;
  }
  w->next = s->durable_waiters;
  s->durable_waiters = w;
}

static void dwait_remove(rv_qsrv *s, void *arg) {
  for (qdwait **pp = &s->durable_waiters; *pp; pp = &(*pp)->next)
    if (*pp == arg) {
      *pp = ((qdwait *)arg)->next;
      return;
    }
}

int rv__qsrv_dwait_end(rv_qsrv *s, qdwait *w, rv_ctx *ctx) {
  int rc = RV_OK;
  rv_mutex_lock(&w->mu);
  while (!w->done && rc == RV_OK)
    rc = rv_cond_wait(&w->cv, &w->mu, ctx);
  bool done = w->done;
  rv_mutex_unlock(&w->mu);
  if (!done)
    rv__qsrv_on_loop(s, dwait_remove, w); /* gave up: the loop must forget it */
  rv_cond_destroy(&w->cv);
  rv_mutex_destroy(&w->mu);
  return done ? RV_OK : rc;
}

qs_topic *rv__qsrv_topic(rv_qsrv *s, uint64_t core_id) {
  for (qs_topic *t = s->topics; t; t = t->next) {
    if (!t->core_id)
      rv_queue_topic_find(s->q, t->name, &t->core_id);
    if (t->core_id == core_id)
      return t;
  }
  return NULL;
}

void rv__qsrv_durable(rv_qsrv *s) {
  bool any = false;
  for (qs_topic *t = s->topics; t; t = t->next) {
    uint64_t acked = rv_qlog_acked_seq(t->log);
    if (acked <= t->acked)
      continue;
    t->acked = acked;
    any = true;
    if (!t->core_id)
      rv_queue_topic_find(s->q, t->name, &t->core_id);
    rv_queue_topic_acked(s->q, rv__qsrv_now(), t->core_id, acked, &s->ev);
  }
  if (!any)
    return;
  for (qconn *k = s->conns; k; k = k->next)
    release_replies(k);
  dwait_release(s, NULL);
  rv__qsrv_events(s);
}

static void on_durable_wake(void *arg) { rv__qsrv_durable(arg); }

void rv__qsrv_topic_gone(rv_qsrv *s, qs_topic *t) {
  dwait_release(s, t);
  for (qconn *k = s->conns; k; k = k->next) {
    for (qreply *r = k->pending_head; r; r = r->next)
      if (r->t == t)
        r->t = NULL; /* deleted with its messages: nothing left to wait for */
    release_replies(k);
  }
}

/* ---- core events ----------------------------------------------------------------------------------- */

static void arm_timer(rv_qsrv *s) {
  int64_t d = rv_queue_next_deadline(s->q);
  if (d == RV_QUEUE_NO_DEADLINE) {
    rv_timer_stop(s->timer);
    return;
  }
  /* The core runs on the wall clock; the loop's timers on the monotonic one. */
  rv_timer_set(s->timer, rv_now_ns() + (d - rv__qsrv_now()));
}

static void deliver(rv_qsrv *s, const rv_queue_event *e) {
  qconn *k = (qconn *)(uintptr_t)e->cookie;
  rv_qstore_msg m;
  int rc = rv__qsrv_store_ops.fetch(s, e->topic_store, e->seq, &m);
  if (rc != RV_OK) {
    /* The core handed out a message the log cannot read: it will time out and be retried. */
    rv_log_error(s->log, "cannot read message for delivery", "seq=%" PRIu64 " why=%s", e->seq,
                 rv_strerror(rc));
    return;
  }
  uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];
  rv_nsq_id_format(e->guid, id);
  if (rv_nsq_enc_message(&s->frame, e->ts_ns, e->attempts, id, m.body, m.body_bytes) == RV_OK)
    conn_write_frame(k);
  else
    s->frame.len = 0;
}

void rv__qsrv_events(rv_qsrv *s) {
  for (size_t i = 0; i < s->ev.len; i++) {
    const rv_queue_event *e = &s->ev.v[i];
    qconn *k = (qconn *)(uintptr_t)e->cookie;
    switch (e->type) {
    case RV_QUEUE_EV_DELIVER:
      deliver(s, e);
      break;
    case RV_QUEUE_EV_TIMEOUT: {
      uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];
      rv_nsq_id_format(e->guid, id);
      rv_nsq_enc_timeout(&s->frame, id);
      conn_write_frame(k);
      k->timeouts_notified++;
      rv_counter_inc(s->m.timeouts_notified);
      break;
    }
    case RV_QUEUE_EV_CLOSE:
      k->consumer = 0; /* the core already forgot it */
      rv_sconn_close(k->sc);
      break;
    default:
      break;
    }
  }
  rv_queue_events_clear(&s->ev);
  arm_timer(s);
}

static void on_timer(void *arg) {
  rv_qsrv *s = arg;
  rv_queue_tick(s->q, rv__qsrv_now(), &s->ev);
  rv__qsrv_events(s);
}

/* ---- publishing ------------------------------------------------------------------------------------ */

int rv__qsrv_publish(rv_qsrv *s, const char *topic, rv_qstore_msg *msgs, size_t n, qs_topic **t,
                     uint64_t *last_seq) {
  uint64_t handle, first;
  int64_t now = rv__qsrv_now();
  int rc = rv_queue_topic_create(s->q, now, topic, &handle);
  if (rc == RV_QUEUE_OK)
    rc = rv_queue_publish(s->q, now, handle, msgs, n, &first, &s->ev);
  if (rc != RV_QUEUE_OK) {
    rv_counter_inc(s->m.publish_errors);
    return rc;
  }
  *t = rv__qsrv_topic(s, handle);
  *last_seq = first + n - 1;
  if (*t && s->o.sync_none)
    rv__qsrv_durable(s); /* acknowledged at write: release at once */
  rv__qsrv_events(s);
  return RV_QUEUE_OK;
}

/* ---- commands --------------------------------------------------------------------------------------- */

static void publish_cmd(qconn *k, const rv_nsq_cmd *cmd) {
  rv_qsrv *s = k->srv;
  rv_qstore_msg one;
  rv_qstore_msg *msgs = &one;
  size_t n = 1;
  rv_nsq_code fail = RV_NSQ_E_PUB_FAILED;
  if (cmd->kind == RV_NSQ_CMD_MPUB) {
    n = cmd->msg_count;
    msgs = calloc(n, sizeof *msgs);
    if (!msgs) {
      rv_nsq_error err;
      rv_nsq_error_set(&err, RV_NSQ_E_MPUB_FAILED, "MPUB failed out of memory");
      send_error(k, &err);
      return;
    }
    for (size_t i = 0; i < n; i++)
      msgs[i] = (rv_qstore_msg){.body = cmd->msgs[i].ptr, .body_bytes = cmd->msgs[i].len};
    fail = RV_NSQ_E_MPUB_FAILED;
  } else {
    one = (rv_qstore_msg){.body = cmd->body.ptr, .body_bytes = cmd->body.len};
    if (cmd->kind == RV_NSQ_CMD_DPUB) {
      one.defer_ns = cmd->delay_ms * RV_NS_PER_MS;
      fail = RV_NSQ_E_DPUB_FAILED;
    }
  }
  qs_topic *t = NULL;
  uint64_t last = 0;
  int rc = rv__qsrv_publish(s, cmd->topic, msgs, n, &t, &last);
  if (msgs != &one)
    free(msgs);
  if (rc != RV_QUEUE_OK) {
    rv_nsq_error err;
    rv_nsq_error_set(&err, fail, "%s failed %s", rv_nsq_cmd_name(cmd->kind), rv_queue_errmsg(s->q));
    send_error(k, &err);
    return;
  }
  k->published += n;
  /* test_ack_before_sync (test-only, queue.h): OK before the disk has it. */
  send_ok(k, s->o.test_ack_before_sync ? NULL : t, last);
}

static void identify_cmd(qconn *k, const rv_nsq_cmd *cmd) {
  rv_qsrv *s = k->srv;
  k->ident = cmd->identify;
  k->identified = true;
  rv_nsq_identify_apply(&k->cfg, &cmd->identify, &s->nsq);
  rv_nsq_decoder_set_state(&k->dec, RV_NSQ_STATE_INIT, k->cfg.heartbeat_interval_ms == 0);
  k->next_heartbeat_ns = k->cfg.heartbeat_interval_ms > 0
                             ? rv_now_ns() + k->cfg.heartbeat_interval_ms * RV_NS_PER_MS
                             : RV_NO_DEADLINE;
  rv_nsq_enc_identify_reply(&s->frame, &s->nsq, &k->cfg, &cmd->identify);
  reply(k, NULL, 0);
}

static void sub_cmd(qconn *k, const rv_nsq_cmd *cmd) {
  rv_qsrv *s = k->srv;
  rv_queue_consumer_opts co = {.msg_timeout_ns = k->cfg.msg_timeout_ms * RV_NS_PER_MS,
                               .timeout_notify = k->cfg.timeout_notify,
                               .hold_slots = k->cfg.hold_slots,
                               .cookie = (uint64_t)(uintptr_t)k};
  int rc = rv_queue_subscribe(s->q, rv__qsrv_now(), cmd->topic, cmd->channel, &co, &k->consumer,
                              &s->ev);
  if (rc != RV_QUEUE_OK) {
    rv_nsq_error err;
    rv_nsq_error_set(&err, RV_NSQ_E_SUB_FAILED, "SUB failed %s", rv_queue_errmsg(s->q));
    send_error(k, &err);
    return;
  }
  snprintf(k->topic, sizeof k->topic, "%s", cmd->topic);
  snprintf(k->channel, sizeof k->channel, "%s", cmd->channel);
  rv_nsq_decoder_set_state(&k->dec, RV_NSQ_STATE_SUBSCRIBED, k->cfg.heartbeat_interval_ms == 0);
  send_ok(k, NULL, 0);
  rv__qsrv_events(s);
}

/* FIN / REQ / TOUCH: nsqd's non-fatal errors for ids that are not (or no longer) ours, and
 * ravel's for an answer (qualified by its attempt) to a delivery that is no longer in flight. */
static void ack_cmd(qconn *k, const rv_nsq_cmd *cmd) {
  rv_qsrv *s = k->srv;
  uint64_t guid = 0;
  rv_nsq_id_parse(cmd->id, &guid);
  rv_queue_ack ack = {0};
  int64_t now = rv__qsrv_now();
  int rc;
  rv_nsq_code code;
  if (cmd->kind == RV_NSQ_CMD_FIN) {
    rc = rv_queue_fin(s->q, now, k->consumer, guid, cmd->attempt, &ack, &s->ev);
    code = RV_NSQ_E_FIN_FAILED;
    if (rc == RV_QUEUE_OK && s->m.e2e)
      rv_histogram_observe(rv_histogram_labels(s->m.e2e, k->topic, k->channel),
                           (double)ack.latency_ns / RV_NS_PER_S);
  } else if (cmd->kind == RV_NSQ_CMD_REQ) {
    rc = rv_queue_req(s->q, now, k->consumer, guid, cmd->attempt, cmd->delay_ms * RV_NS_PER_MS,
                      &ack, &s->ev);
    code = RV_NSQ_E_REQ_FAILED;
  } else {
    rc = rv_queue_touch(s->q, now, k->consumer, guid, cmd->attempt, &ack);
    code = RV_NSQ_E_TOUCH_FAILED;
  }
  if (rc != RV_QUEUE_OK) {
    bool late = rc == RV_QUEUE_ENOT_IN_FLIGHT || rc == RV_QUEUE_ENOT_OWNER ||
                rc == RV_QUEUE_ESTALE_ATTEMPT;
    if (late) {
      k->late_fins++;
      rv_counter_inc(s->m.late_fins);
    }
    rv_nsq_error err;
    if (rc == RV_QUEUE_ENOT_IN_FLIGHT || rc == RV_QUEUE_ENOT_OWNER)
      rv_nsq_error_set(&err, code, "%s %.16s failed %s", rv_nsq_cmd_name(cmd->kind),
                       (const char *)cmd->id, rv_queue_strerror(rc));
    else if (rc == RV_QUEUE_ESTALE_ATTEMPT || rc == RV_QUEUE_EDEFERRED)
      /* the core's sentence already reads "<VERB> <id> failed ..." */
      rv_nsq_error_set(&err, code, "%s", rv_queue_errmsg(s->q));
    else
      rv_nsq_error_set(&err, code, "%s %.16s failed %s", rv_nsq_cmd_name(cmd->kind),
                       (const char *)cmd->id, rv_queue_errmsg(s->q));
    send_error(k, &err);
  }
  rv__qsrv_events(s);
}

static void handle(qconn *k, const rv_nsq_cmd *cmd) {
  rv_qsrv *s = k->srv;
  if (cmd->ignored)
    return;
  switch (cmd->kind) {
  case RV_NSQ_CMD_IDENTIFY:
    identify_cmd(k, cmd);
    break;
  case RV_NSQ_CMD_AUTH: {
    rv_nsq_error err;
    rv_nsq_error_set(&err, RV_NSQ_E_AUTH_DISABLED, "AUTH disabled");
    send_error(k, &err);
    break;
  }
  case RV_NSQ_CMD_SUB:
    sub_cmd(k, cmd);
    break;
  case RV_NSQ_CMD_PUB:
  case RV_NSQ_CMD_MPUB:
  case RV_NSQ_CMD_DPUB:
    publish_cmd(k, cmd);
    break;
  case RV_NSQ_CMD_RDY:
    if (k->consumer) {
      rv_queue_rdy(s->q, rv__qsrv_now(), k->consumer, cmd->count, &s->ev);
      rv__qsrv_events(s);
    }
    break;
  case RV_NSQ_CMD_FIN:
  case RV_NSQ_CMD_REQ:
  case RV_NSQ_CMD_TOUCH:
    ack_cmd(k, cmd);
    break;
  case RV_NSQ_CMD_CLS:
    if (k->consumer) {
      rv_queue_rdy(s->q, rv__qsrv_now(), k->consumer, 0, &s->ev);
      rv__qsrv_events(s);
    }
    rv_nsq_decoder_set_state(&k->dec, RV_NSQ_STATE_CLOSING, k->cfg.heartbeat_interval_ms == 0);
    rv_nsq_enc_close_wait(&s->frame);
    reply(k, NULL, 0);
    break;
  case RV_NSQ_CMD_NOP:
  case RV_NSQ_CMD_NONE:
    break;
  }
}

/* ---- connections ------------------------------------------------------------------------------------ */

static void *on_open(void *server, rv_sconn *sc) {
  rv_qsrv *s = server;
  if (s->nconns >= RV_QSRV_CONNECTIONS_MAX) {
    rv_log_warn(s->log, "connection refused: limit reached", "peer=%s limit=%d",
                rv_sconn_peer(sc), RV_QSRV_CONNECTIONS_MAX);
    return NULL;
  }
  qconn *k = calloc(1, sizeof *k);
  if (!k)
    return NULL;
  k->srv = s;
  k->sc = sc;
  k->id = ++s->next_conn_id;
  rv_nsq_decoder_init(&k->dec, &s->nsq);
  rv_nsq_client_cfg_init(&k->cfg, &s->nsq);
  k->last_read_ns = rv_now_ns();
  k->next_heartbeat_ns = k->cfg.heartbeat_interval_ms > 0
                             ? k->last_read_ns + k->cfg.heartbeat_interval_ms * RV_NS_PER_MS
                             : RV_NO_DEADLINE;
  k->connect_wall_ns = rv_wall_ns();
  k->next = s->conns;
  if (s->conns)
    s->conns->prev = k;
  s->conns = k;
  s->nconns++;
  return k;
}

static size_t on_data(void *conn, const char *buf, size_t len) {
  qconn *k = conn;
  k->last_read_ns = rv_now_ns();
  size_t used = 0;
  while (used < len) {
    size_t n = 0;
    rv_nsq_cmd cmd;
    rv_nsq_error err;
    int rc = rv_nsq_decode(&k->dec, (const uint8_t *)buf + used, len - used, &n, &cmd, &err);
    used += n;
    if (rc == 1) {
      handle(k, &cmd);
      continue;
    }
    if (rc == 0)
      break;
    if (rc == RV_EPROTO) {
      send_error(k, &err); /* decoder errors are fatal: the connection closes */
      return len;
    }
    break; /* RV_ENOMEM: try the rest again with the next bytes */
  }
  return used;
}

static void on_close(void *conn) {
  qconn *k = conn;
  rv_qsrv *s = k->srv;
  if (k->consumer) {
    /* Its in-flight messages go back to the channel now, not at their timeouts. */
    rv_queue_unsubscribe(s->q, rv__qsrv_now(), k->consumer, &s->ev);
    k->consumer = 0;
  }
  /* Events may name this connection (a delivery to it); it is gone, drop them. */
  size_t w = 0;
  for (size_t i = 0; i < s->ev.len; i++)
    if (s->ev.v[i].cookie != (uint64_t)(uintptr_t)k)
      s->ev.v[w++] = s->ev.v[i];
  s->ev.len = w;
  while (k->pending_head) {
    qreply *r = k->pending_head;
    k->pending_head = r->next;
    free(r);
  }
  if (k->prev)
    k->prev->next = k->next;
  else
    s->conns = k->next;
  if (k->next)
    k->next->prev = k->prev;
  s->nconns--;
  rv_nsq_decoder_free(&k->dec);
  free(k);
  rv__qsrv_events(s);
}

static const rv_sconn_handler queue_handler = {on_open, on_data, on_close, NULL};

/*
 * Heartbeats: a `_heartbeat_` response every heartbeat_interval; a client
 * that sends nothing for two intervals is disconnected (nsqd's rule).
 */
static void on_heartbeat_tick(void *arg) {
  rv_qsrv *s = arg;
  int64_t now = rv_now_ns();
  for (qconn *k = s->conns, *next; k; k = next) {
    next = k->next;
    int64_t iv = k->cfg.heartbeat_interval_ms * RV_NS_PER_MS;
    if (iv <= 0)
      continue;
    if (now - k->last_read_ns > 2 * iv) {
      rv_log_info(s->log, "client missed heartbeats: closing", "peer=%s", rv_sconn_peer(k->sc));
      rv_sconn_close(k->sc);
      continue;
    }
    if (now >= k->next_heartbeat_ns) {
      rv_nsq_enc_heartbeat(&s->frame);
      reply(k, NULL, 0);
      k->next_heartbeat_ns = now + iv;
    }
  }
  rv_timer_set(s->hb_timer, now + QSRV_HEARTBEAT_TICK_NS);
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

static bool loop_done(rv_qsrv *s) { return s->loop_stopped; }

static void fill_defaults(rv_qsrv_opts *o) {
  if (!o->tcp_port)
    o->tcp_port = RV_QSRV_DEFAULT_TCP_PORT;
  if (!o->http_port)
    o->http_port = RV_QSRV_DEFAULT_HTTP_PORT;
  if (!o->data_dir)
    o->data_dir = RV_QSRV_DEFAULT_DATA;
  if (!o->msg_timeout_ms)
    o->msg_timeout_ms = RV_NSQ_DEFAULT_MSG_TIMEOUT_MS;
  if (!o->max_msg_timeout_ms)
    o->max_msg_timeout_ms = RV_NSQ_DEFAULT_MAX_MSG_TIMEOUT_MS;
  if (!o->max_req_timeout_ms)
    o->max_req_timeout_ms = RV_NSQ_DEFAULT_MAX_REQ_TIMEOUT_MS;
  if (!o->max_msg_size)
    o->max_msg_size = RV_NSQ_DEFAULT_MAX_MSG_SIZE_BYTES;
  if (!o->max_body_size)
    o->max_body_size = RV_NSQ_DEFAULT_MAX_BODY_SIZE_BYTES;
  if (!o->max_rdy_count)
    o->max_rdy_count = RV_NSQ_DEFAULT_MAX_RDY_COUNT;
}

int rv_qsrv_start(rv_qsrv **out, const rv_qsrv_opts *opts, char *why, size_t why_len) {
  rv_qsrv *s = calloc(1, sizeof *s);
  if (!s)
    return RV_ENOMEM;
  snprintf(why, why_len, "ok");
  s->o = *opts;
  fill_defaults(&s->o);
  snprintf(s->host, sizeof s->host, "%s", s->o.host ? s->o.host : "127.0.0.1");
  snprintf(s->data_dir, sizeof s->data_dir, "%s", s->o.data_dir);
  s->start_wall_ns = rv_wall_ns();
  rv_rawmu_init(&s->job_mu);
  rv_rawmu_init(&s->pub_mu);
  s->log = s->o.log;
  if (!s->log) {
    s->log = rv_log_new(2, RV_LOG_INFO, "queue");
    s->own_log = true;
  }
  s->metrics = s->o.metrics;
  if (!s->metrics) {
    s->metrics = rv_metrics_new();
    s->own_metrics = true;
  }
  rv_nsq_opts_init(&s->nsq);
  s->nsq.max_msg_size_bytes = s->o.max_msg_size;
  s->nsq.max_body_size_bytes = s->o.max_body_size;
  s->nsq.max_rdy_count = s->o.max_rdy_count;
  s->nsq.msg_timeout_ms = s->o.msg_timeout_ms;
  s->nsq.max_msg_timeout_ms = s->o.max_msg_timeout_ms;
  s->nsq.max_req_timeout_ms = s->o.max_req_timeout_ms;
  s->nsq.allow_timeout_notify = s->nsq.allow_hold_slots = !s->o.no_extensions;
  rv_nsq_buf_init(&s->frame, (size_t)s->o.max_msg_size + 64);
  rv_queue_events_init(&s->ev);

  int rc;
  if (s->o.loop) {
    s->loop = s->o.loop;
  } else {
    rc = rv_loop_new(&s->loop, NULL);
    if (rc != RV_OK)
      goto fail;
    s->own_loop = true;
  }
  s->durable_wake = rv_wakeup_new(s->loop, on_durable_wake, s);
  s->job_wake = rv_wakeup_new(s->loop, on_job_wake, s);
  s->timer = rv_timer_new(s->loop, on_timer, s);
  s->hb_timer = rv_timer_new(s->loop, on_heartbeat_tick, s);

  rv_queue_opts qo;
  rv_queue_opts_default(&qo);
  qo.ops = &rv__qsrv_store_ops;
  qo.store = s;
  qo.max_rdy_count = s->o.max_rdy_count;
  qo.msg_timeout_ns = s->o.msg_timeout_ms * RV_NS_PER_MS;
  qo.max_msg_timeout_ns = s->o.max_msg_timeout_ms * RV_NS_PER_MS;
  qo.max_req_timeout_ns = s->o.max_req_timeout_ms * RV_NS_PER_MS;
  qo.hash_seed = rv_rng_os_seed();
  qo.deliver_after_ack = true;
  /* The id prefix high-water mark must be known before the core is made. */
  rc = rv__qsrv_recover_prefix(s, why, why_len);
  if (rc != RV_OK)
    goto fail;
  qo.id_prefix_first = s->id_prefix_next;
  const char *qwhy = NULL;
  if (rv_queue_create(&s->q, &qo, &qwhy) != RV_QUEUE_OK) {
    snprintf(why, why_len, "cannot create the queue core: %s", qwhy ? qwhy : "out of memory");
    rc = RV_EINVAL;
    goto fail;
  }
  rc = rv__qsrv_recover(s, why, why_len);
  if (rc != RV_OK)
    goto fail;
  rv__qsrv_durable(s); /* recovered messages are durable: let them flow */
  rv__qsrv_metrics_setup(s);

  uint16_t port = s->o.port_any ? 0 : s->o.tcp_port;
  rc = rv_loop_listen(s->loop, s->host, port, &queue_handler, s, &s->tcp_port);
  if (rc != RV_OK) {
    snprintf(why, why_len, "cannot listen on %s:%u (in use?)", s->host, port);
    goto fail;
  }
  if (!s->o.no_http) {
    uint16_t hport = s->o.port_any ? 0 : s->o.http_port;
    rc = rv_admin_start(&s->http, &(rv_admin_opts){.host = s->host,
                                                    .port = hport,
                                                    .metrics = s->metrics,
                                                    .thread_per_connection = true});
    if (rc != RV_OK) {
      snprintf(why, why_len, "cannot start the HTTP API on %s:%u (in use?)", s->host, hport);
      goto fail;
    }
    s->http_port = rv_admin_port(s->http);
    rv__qsrv_http_routes(s);
  }
  rv_timer_set(s->hb_timer, rv_now_ns() + QSRV_HEARTBEAT_TICK_NS);
  arm_timer(s);
  rv_log_info(s->log, "queue listening", "tcp=%s:%u http=%s:%u data=%s sync=%s", s->host,
              s->tcp_port, s->host, s->http_port, s->data_dir, s->o.sync_none ? "none" : "always");
  *out = s;
  return RV_OK;
fail:
  rv_qsrv_free(s);
  return rc;
}

uint16_t rv_qsrv_tcp_port(const rv_qsrv *s) { return s->tcp_port; }
uint16_t rv_qsrv_http_port(const rv_qsrv *s) { return s->http_port; }

int rv_qsrv_run(rv_qsrv *s) {
  if (!s->own_loop)
    return RV_EINVAL;
  rv_loop_stop_on_signals(s->loop);
  int rc = rv_loop_run(s->loop);
  rv_rawmu_lock(&s->job_mu);
  s->loop_stopped = true;
  rv_rawmu_unlock(&s->job_mu);
  run_jobs(s); /* anyone still waiting gets an answer */
  return rc;
}

void rv_qsrv_stop(rv_qsrv *s) {
  if (s->own_loop)
    rv_loop_stop(s->loop);
}

void rv_qsrv_free(rv_qsrv *s) {
  if (!s)
    return;
  rv_rawmu_lock(&s->job_mu);
  s->loop_stopped = true;
  rv_rawmu_unlock(&s->job_mu);
  run_jobs(s);
  rv_admin_stop(s->http);
  /* Close the logs while the wake-up they signal is still valid: a log's
   * final sync reports durability through it (connections are already gone:
   * the loop closed them when it stopped). */
  rv__qsrv_store_close(s);
  rv_timer_free(s->timer);
  rv_timer_free(s->hb_timer);
  rv_timer_free(s->metrics_timer);
  rv_wakeup_free(s->durable_wake);
  rv_wakeup_free(s->job_wake);
  if (s->own_loop)
    rv_loop_free(s->loop);
  rv_queue_destroy(s->q); /* calls no store ops */
  rv_queue_events_free(&s->ev);
  rv_nsq_buf_free(&s->frame);
  rv__qsrv_metrics_free(s);
  if (s->own_metrics)
    rv_metrics_free(s->metrics);
  if (s->own_log)
    rv_log_free(s->log);
  rv_rawmu_destroy(&s->job_mu);
  rv_rawmu_destroy(&s->pub_mu);
  free(s);
}
