/*
 * queue_http: NSQ's HTTP API on the queue server's admin port (4151 by
 * default), as nsqd v1.3.0 serves it (nsqd/http.go), next to the /metrics,
 * /debug and /healthz routes that rv_admin serves itself.
 *
 *   GET  /ping                      "OK"
 *   GET  /info                      version, ports, limits (JSON)
 *   POST /pub?topic=T[&defer=ms]    body = one message
 *   POST /mpub?topic=T[&binary=true]  newline-separated, or [n][[len][body]]*n
 *   GET  /stats[?format=json][&topic=][&channel=][&include_clients=][&include_mem=]
 *   POST /topic/{create,delete,empty,pause,unpause}?topic=T
 *   POST /channel/{create,delete,empty,pause,unpause}?topic=T&channel=C
 *
 * Threading, the one rule of this file.  Handlers run on libmicrohttpd's
 * threads (one per connection: s->http runs thread_per_connection because a
 * publish blocks until its message is durable).  The core (s->q), the topics
 * (qs_topic) and the connections (qconn) belong to the loop thread and are
 * never touched from here directly.  Each handler validates its request on
 * its own thread, packs what it needs into a job on its stack, runs a job
 * function on the loop thread with rv__qsrv_on_loop (which waits), and reads
 * the job's results afterwards.  A job function copies out everything the
 * HTTP side needs (names, counters, a JSON tree), because pointers into the
 * core die at its next change, and calls rv__qsrv_events after any change so
 * that the deliveries and closes it caused happen.  Only configuration that
 * is fixed before the first request (s->o, s->nsq, s->tcp_port, s->http,
 * s->start_wall_ns, the metric children) is read from these threads.
 *
 * Durability.  /pub and /mpub answer OK only once their messages are durable
 * under the configured policy: the job appends on the loop thread, then the
 * HTTP thread (not the loop) blocks in rv__qsrv_dwait_end.  Under
 * sync_none ("fast") the log acknowledges at write(2), so there is nothing
 * to wait for (waiting would force the fsync the mode exists to skip).
 *
 * Responses follow nsqd's V1 API: errors are {"message":"CODE"} with the
 * HTTP status, and every V1 response carries X-NSQ-Content-Type (Go prints
 * it "X-Nsq-Content-Type"); /ping is plain text without it.  Choices and
 * differences, so that nobody has to rediscover them:
 *   - Error codes are nsqd's own, which differ by endpoint: /pub, /mpub,
 *     /topic/create and /topic/empty say INVALID_TOPIC; /channel/... says
 *     INVALID_ARG_TOPIC / INVALID_ARG_CHANNEL (http_api.GetTopicChannelArgs);
 *     /topic/delete, /topic/pause and /topic/unpause do not check the name
 *     and answer 404 TOPIC_NOT_FOUND, as no topic can have an invalid name.
 *   - A binary /mpub body is exactly a TCP MPUB body and is validated by the
 *     codec's MPUB rules (one implementation); failures are nsqd's 413 with
 *     the code without its "E_" (BAD_BODY, BAD_MESSAGE).  Unlike nsqd, bytes
 *     left after the last message are refused (BAD_BODY), as on TCP.
 *   - binary mode is on when the parameter has a value (nsqd only checks
 *     that it is present, so binary=false is binary there too); a bare
 *     "?binary" without '=' cannot be told apart from its absence here.
 *   - A core failure of a publish is 500 with the core's sentence; a
 *     publish that is appended but not confirmed durable in time is 503
 *     (nsqd's status for a failed put).
 *   - /stats: ravel keeps every message on disk, so backend_depth is the
 *     whole depth; memory reports the resident set in heap_in_use_bytes
 *     (there is no Go heap); producers is null; e2e_processing_latency has
 *     no percentiles (nsqd's default without --e2e-processing-latency-*).
 */
#define _GNU_SOURCE
#include "server/queue_internal.h"

#include <stdatomic.h>

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* nsqd's V1 marker header, on every V1 response. */
#define QH_NSQ_HEADER_NAME "X-Nsq-Content-Type"
#define QH_NSQ_HEADER_VALUE "nsq; version=1.0"
#define QH_CONTENT_JSON "application/json; charset=utf-8"
/* How long a publish waits for its fsync before it gives up with 503.  Far
 * above any healthy group commit (milliseconds): only a sick disk hits it. */
#define QH_DURABLE_WAIT_NS (30 * RV_NS_PER_S)
#define QH_HEALTH_OK "OK"
/* What nsqd shows as a TCP client's protocol version. */
#define QH_CLIENT_VERSION "V2"
#define QH_HOSTNAME_MAX_BYTES 256
/* "host:port" of a peer; IPv6 with brackets fits. */
#define QH_PEER_MAX_BYTES 64
#define QH_PROC_STATM "/proc/self/statm"
#define QH_VEC_INITIAL_CAP 16
/* "MPUB " + name + "\n" + [int32 size], behind the "  V2" magic. */
#define QH_MPUB_HEADER_MAX_BYTES (RV_NSQ_MAGIC_SIZE_BYTES + 5 + RV_NSQ_NAME_MAX_BYTES + 1 + 4)
#define QH_DURATION_MAX_BYTES 48

/* ---- responses ----------------------------------------------------------------------- */

/* Take ownership of body (malloc'd, may be NULL) as the V1 response. */
static void reply(rv_admin_response *r, int status, const char *content_type, char *body,
                  size_t len) {
  free(r->body);
  r->status = status;
  r->content_type = content_type;
  r->body = body;
  r->body_len = body ? len : 0;
  r->header_name = QH_NSQ_HEADER_NAME;
  r->header_value = QH_NSQ_HEADER_VALUE;
}

/* Serialize v (consumed) compactly, as Go's json.Marshal does; 500 if that fails. */
static void reply_json(rv_admin_response *r, int status, json_t *v) {
  char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  if (!text) {
    reply(r, 500, NULL, NULL, 0);
    return;
  }
  reply(r, status, QH_CONTENT_JSON, text, strlen(text));
}

/* nsqd's error body: {"message":"TOPIC_NOT_FOUND"}. */
static void reply_error(rv_admin_response *r, int status, const char *message) {
  reply_json(r, status, json_pack("{s:s}", "message", message));
}

static void reply_text(rv_admin_response *r, const char *text) {
  char *body = strdup(text);
  reply(r, body ? 200 : 500, NULL, body, body ? strlen(body) : 0);
}

/* Topic and channel operations answer 200 with an empty body, as nsqd. */
static void reply_empty(rv_admin_response *r) { reply(r, 200, NULL, NULL, 0); }

/* Routes are registered for any method so that the wrong one gets nsqd's 405 body. */
static bool method_is(const rv_admin_request *req, rv_admin_response *r, const char *want) {
  if (strcmp(req->method, want) == 0)
    return true;
  reply_error(r, 405, "METHOD_NOT_ALLOWED");
  return false;
}

/* An RV_QUEUE_* failure as nsqd would word it: lookups are 404, the rest internal. */
static void reply_queue_error(rv_admin_response *r, int rc, const char *why) {
  if (rc == RV_QUEUE_ENOTOPIC)
    reply_error(r, 404, "TOPIC_NOT_FOUND");
  else if (rc == RV_QUEUE_ENOCHANNEL)
    reply_error(r, 404, "CHANNEL_NOT_FOUND");
  else
    reply_error(r, 500, why && *why ? why : rv_queue_strerror(rc));
}

/* ---- parameters ---------------------------------------------------------------------- */

/* A name parameter: NULL after answering missing (400) or invalid (400). */
static const char *name_arg(const rv_admin_request *req, rv_admin_response *r, const char *key,
                            const char *missing, const char *invalid) {
  const char *v = rv_admin_query(req, key);
  if (!v) {
    reply_error(r, 400, missing);
    return NULL;
  }
  if (!rv_nsq_valid_name(v, strlen(v))) {
    reply_error(r, 400, invalid);
    return NULL;
  }
  return v;
}

/* Go's strconv.ParseInt(s, 10, 64): optional sign, digits only, in range. */
static bool parse_int64(const char *s, int64_t *out) {
  const char *digits = (*s == '+' || *s == '-') ? s + 1 : s;
  if (*digits < '0' || *digits > '9')
    return false;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*end || errno == ERANGE)
    return false;
  *out = v;
  return true;
}

/* nsqd's boolParams: true/1 and false/0; anything else keeps the default. */
static bool bool_param(const char *v, bool dflt) {
  if (!v)
    return dflt;
  if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
    return true;
  if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
    return false;
  return dflt;
}

/* Go's reqParams.Get yields "" for an absent filter: both mean "all". */
static const char *filter_param(const rv_admin_request *req, const char *key) {
  const char *v = rv_admin_query(req, key);
  return v && *v ? v : NULL;
}

/* ---- loop jobs: topic creation ----------------------------------------------------------- */

/* Copy the core's sentence for a failure while still on the loop thread. */
static void errmsg_copy(rv_qsrv *s, int rc, char *why, size_t cap) {
  const char *m = rv_queue_errmsg(s->q);
  snprintf(why, cap, "%s", m && *m ? m : rv_queue_strerror(rc));
}

/*
 * Create (or find: creation is idempotent) a topic for an HTTP request.
 * Its qs_topic learns its core handle lazily (rv__qsrv_topic).  Loop thread.
 */
static int topic_ensure(rv_qsrv *s, int64_t now_ns, const char *name) {
  uint64_t handle;
  return rv_queue_topic_create(s->q, now_ns, name, &handle);
}

/* ---- /pub and /mpub ------------------------------------------------------------------------ */

typedef struct pub_job {
  const char *topic;
  rv_qstore_msg *msgs;
  size_t n;               /* 0: only create the topic (an /mpub of empty lines) */
  int rc;                 /* out: RV_QUEUE_* */
  qs_topic *t;            /* out: the seq to wait for is in this topic's log */
  uint64_t last_seq;
  bool waiting;           /* out: dw is registered with the loop */
  qdwait dw;
  char why[RV_QUEUE_ERRMSG_MAX];
} pub_job;

static void pub_on_loop(rv_qsrv *s, void *arg) {
  pub_job *j = arg;
  j->rc = j->n ? rv__qsrv_publish(s, j->topic, j->msgs, j->n, &j->t, &j->last_seq)
               : topic_ensure(s, rv__qsrv_now(), j->topic);
  if (j->rc != RV_QUEUE_OK)
    errmsg_copy(s, j->rc, j->why, sizeof j->why);
  else if (j->n && j->t && !s->o.sync_none) {
    /* Registered in the same job as the publish: the topic cannot vanish in between. */
    rv__qsrv_dwait_begin(s, &j->dw, j->t, j->last_seq);
    j->waiting = true;
  }
  rv__qsrv_events(s);
}

/*
 * Publish on the loop thread, then wait here, off the loop, until the last
 * message is durable, and answer nsqd's "OK".
 * The waiter is registered with the loop in the publish's own job and the
 * loop completes it when the sequence is durable or the topic is deleted,
 * so a concurrent /topic/delete is safe.
 */
static void publish_reply(rv_qsrv *s, const char *topic, rv_qstore_msg *msgs, size_t n,
                          rv_admin_response *r) {
  pub_job j = {.topic = topic, .msgs = msgs, .n = n};
  rv__qsrv_on_loop(s, pub_on_loop, &j);
  if (j.rc != RV_QUEUE_OK) {
    reply_queue_error(r, j.rc, j.why);
    return;
  }
  if (n > 0 && !j.t) {
    /* Published, but the server has no log for the topic: cannot vouch for it. */
    reply_error(r, 500, "INTERNAL_ERROR");
    return;
  }
  if (j.waiting) {
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, QH_DURABLE_WAIT_NS);
    int rc = rv__qsrv_dwait_end(s, &j.dw, ctx);
    rv_ctx_free(ctx);
    if (rc != RV_OK) {
      rv_counter_inc(s->m.publish_errors);
      char msg[RV_QUEUE_ERRMSG_MAX];
      snprintf(msg, sizeof msg,
               "NOT_DURABLE: written but not confirmed on disk (%s); it may still be delivered",
               rv_strerror(rc));
      reply_error(r, 503, msg);
      return;
    }
  }
  reply_text(r, "OK");
}

static void h_pub(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  if (!method_is(req, r, "POST"))
    return;
  /* nsqd's order: the body first, then the topic, then the deferral. */
  if ((int64_t)req->body_len > s->o.max_msg_size) {
    reply_error(r, 413, "MSG_TOO_BIG");
    return;
  }
  if (req->body_len == 0) {
    reply_error(r, 400, "MSG_EMPTY");
    return;
  }
  const char *topic = name_arg(req, r, "topic", "MISSING_ARG_TOPIC", "INVALID_TOPIC");
  if (!topic)
    return;
  int64_t defer_ms = 0;
  const char *d = rv_admin_query(req, "defer");
  if (d && (!parse_int64(d, &defer_ms) || defer_ms < 0 || defer_ms > s->o.max_req_timeout_ms)) {
    reply_error(r, 400, "INVALID_DEFER");
    return;
  }
  rv_qstore_msg m = {
      .body = req->body, .body_bytes = req->body_len, .defer_ns = defer_ms * RV_NS_PER_MS};
  publish_reply(s, topic, &m, 1, r);
}

/*
 * Text /mpub: nsqd reads the body line by line up to '\n' (a '\r' stays in
 * the message), skips empty lines silently and refuses a line over
 * max-msg-size.  Two passes: count and check, then point into the body.
 * 0, or the 413 code to answer; *out is NULL when *n is 0.
 */
static const char *mpub_text_split(const char *body, size_t len, int64_t max_msg_size,
                                   rv_qstore_msg **out, size_t *n) {
  *out = NULL;
  *n = 0;
  size_t count = 0;
  for (size_t pos = 0; pos < len;) {
    const char *nl = memchr(body + pos, '\n', len - pos);
    size_t line = nl ? (size_t)(nl - (body + pos)) : len - pos;
    if ((int64_t)line > max_msg_size)
      return "MSG_TOO_BIG";
    count += line > 0;
    pos += line + 1;
  }
  if (!count)
    return NULL;
  rv_qstore_msg *msgs = calloc(count, sizeof *msgs);
  if (!msgs)
    return "INTERNAL_ERROR";
  size_t i = 0;
  for (size_t pos = 0; pos < len;) {
    const char *nl = memchr(body + pos, '\n', len - pos);
    size_t line = nl ? (size_t)(nl - (body + pos)) : len - pos;
    if (line > 0)
      msgs[i++] = (rv_qstore_msg){.body = body + pos, .body_bytes = line};
    pos += line + 1;
  }
  *out = msgs;
  *n = count;
  return NULL;
}

/*
 * Binary /mpub: the body is exactly a TCP MPUB body, so rather than parse
 * it a second time, frame it as the TCP command ("  V2", "MPUB <topic>\n",
 * [int32 size]) and feed it to a codec decoder: one implementation of
 * nsqd's MPUB rules and limits.  On success cmd->msgs point into the body or
 * the decoder, which the caller frees after publishing (whatever this
 * returns: dec is always initialised).  0, RV_EPROTO (*err says why) or RV_ENOMEM.
 */
static int mpub_binary_decode(const rv_nsq_opts *opts, const char *topic, const char *body,
                              size_t len, rv_nsq_decoder *dec, rv_nsq_cmd *cmd,
                              rv_nsq_error *err) {
  rv_nsq_decoder_init(dec, opts);
  uint8_t hdr[QH_MPUB_HEADER_MAX_BYTES];
  int h = snprintf((char *)hdr, sizeof hdr, "%sMPUB %s\n", RV_NSQ_MAGIC_V2, topic);
  if (h < 0 || (size_t)h + 4 > sizeof hdr)
    return RV_EINVAL;
  hdr[h++] = (uint8_t)(len >> 24);
  hdr[h++] = (uint8_t)(len >> 16);
  hdr[h++] = (uint8_t)(len >> 8);
  hdr[h++] = (uint8_t)len;
  const uint8_t *parts[] = {hdr, (const uint8_t *)body};
  const size_t lens[] = {(size_t)h, len};
  for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
    for (size_t off = 0; off < lens[p];) {
      size_t used = 0;
      int rc = rv_nsq_decode(dec, parts[p] + off, lens[p] - off, &used, cmd, err);
      off += used;
      if (rc < 0)
        return rc;
      if (rc == 1)
        return cmd->kind == RV_NSQ_CMD_MPUB && off == lens[p] && p + 1 == sizeof parts / sizeof parts[0]
                   ? RV_OK
                   : RV_EINVAL;
      if (used == 0)
        return RV_EINVAL; /* no progress: cannot happen with a well-formed frame */
    }
  }
  return RV_EINVAL; /* the frame ended without a command */
}

static void h_mpub(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  if (!method_is(req, r, "POST"))
    return;
  if ((int64_t)req->body_len > s->o.max_body_size) {
    reply_error(r, 413, "BODY_TOO_BIG");
    return;
  }
  const char *topic = name_arg(req, r, "topic", "MISSING_ARG_TOPIC", "INVALID_TOPIC");
  if (!topic)
    return;
  if (!rv_admin_query(req, "binary")) {
    rv_qstore_msg *msgs;
    size_t n;
    const char *code = mpub_text_split(req->body, req->body_len, s->o.max_msg_size, &msgs, &n);
    if (code)
      reply_error(r, strcmp(code, "MSG_TOO_BIG") == 0 ? 413 : 500, code);
    else
      publish_reply(s, topic, msgs, n, r);
    free(msgs);
    return;
  }
  rv_nsq_decoder dec;
  rv_nsq_cmd cmd;
  rv_nsq_error err = {0};
  int rc = mpub_binary_decode(&s->nsq, topic, req->body, req->body_len, &dec, &cmd, &err);
  rv_qstore_msg *msgs = rc == RV_OK ? calloc(cmd.msg_count, sizeof *msgs) : NULL;
  if (rc == RV_EPROTO) {
    /* nsqd: http_api.Err{413, err.Code[2:]}: "E_BAD_MESSAGE" -> "BAD_MESSAGE". */
    const char *code = rv_nsq_code_name(err.code);
    reply_error(r, 413, strncmp(code, "E_", 2) == 0 ? code + 2 : code);
  } else if (!msgs) {
    reply_error(r, 500, "INTERNAL_ERROR");
  } else {
    for (size_t i = 0; i < cmd.msg_count; i++)
      msgs[i] = (rv_qstore_msg){.body = cmd.msgs[i].ptr, .body_bytes = cmd.msgs[i].len};
    publish_reply(s, topic, msgs, cmd.msg_count, r);
  }
  free(msgs);
  rv_nsq_decoder_free(&dec);
}

/* ---- /topic/... and /channel/... --------------------------------------------------------- */

enum qh_op { QH_OP_CREATE, QH_OP_DELETE, QH_OP_EMPTY, QH_OP_PAUSE, QH_OP_UNPAUSE, QH_OP_COUNT };

static const char *const qh_op_names[QH_OP_COUNT] = {
    [QH_OP_CREATE] = "create", [QH_OP_DELETE] = "delete", [QH_OP_EMPTY] = "empty",
    [QH_OP_PAUSE] = "pause",   [QH_OP_UNPAUSE] = "unpause",
};

#define QH_TOPIC_PREFIX "/topic/"
#define QH_CHANNEL_PREFIX "/channel/"

/* "/topic/pause" -> QH_OP_PAUSE; -1 for an unknown action. */
static int op_from_path(const char *path, const char *prefix) {
  size_t n = strlen(prefix);
  if (strncmp(path, prefix, n) != 0)
    return -1;
  for (int op = 0; op < QH_OP_COUNT; op++)
    if (strcmp(path + n, qh_op_names[op]) == 0)
      return op;
  return -1;
}

typedef struct admin_job {
  int op;                 /* enum qh_op */
  const char *topic;
  const char *channel;    /* NULL: a topic operation */
  int rc;                 /* out: RV_QUEUE_* */
  char why[RV_QUEUE_ERRMSG_MAX];
} admin_job;

/* delete / empty / pause of a topic or of a channel: the core's calls for
 * both have the same shapes, so one switch serves both. */
typedef struct qh_target_ops {
  int (*remove)(rv_queue *q, int64_t now_ns, uint64_t handle, rv_queue_events *ev);
  int (*empty)(rv_queue *q, int64_t now_ns, uint64_t handle, rv_queue_events *ev);
  int (*pause)(rv_queue *q, int64_t now_ns, uint64_t handle, bool paused, rv_queue_events *ev);
} qh_target_ops;

static const qh_target_ops qh_topic_ops = {rv_queue_topic_delete, rv_queue_topic_empty,
                                           rv_queue_topic_pause};
static const qh_target_ops qh_channel_ops = {rv_queue_channel_delete, rv_queue_channel_empty,
                                             rv_queue_channel_pause};

static int target_op(rv_qsrv *s, const qh_target_ops *ops, int64_t now_ns, int op,
                     uint64_t handle) {
  switch (op) {
  case QH_OP_DELETE:
    return ops->remove(s->q, now_ns, handle, &s->ev);
  case QH_OP_EMPTY:
    return ops->empty(s->q, now_ns, handle, &s->ev);
  case QH_OP_PAUSE:
  case QH_OP_UNPAUSE:
    return ops->pause(s->q, now_ns, handle, op == QH_OP_PAUSE, &s->ev);
  default:
    return RV_QUEUE_EINVAL;
  }
}

/* Every operation but /topic/create needs the topic to exist (nsqd's
 * GetExistingTopic), /channel/create included: that is measured nsqd. */
static void admin_on_loop(rv_qsrv *s, void *arg) {
  admin_job *j = arg;
  int64_t now_ns = rv__qsrv_now();
  uint64_t topic, channel;
  int rc;
  if (!j->channel && j->op == QH_OP_CREATE)
    rc = topic_ensure(s, now_ns, j->topic);
  else if ((rc = rv_queue_topic_find(s->q, j->topic, &topic)) != RV_QUEUE_OK)
    rc = RV_QUEUE_ENOTOPIC;
  else if (!j->channel)
    rc = target_op(s, &qh_topic_ops, now_ns, j->op, topic);
  else if (j->op == QH_OP_CREATE)
    rc = rv_queue_channel_create(s->q, now_ns, topic, j->channel, &channel);
  else if ((rc = rv_queue_channel_find(s->q, topic, j->channel, &channel)) != RV_QUEUE_OK)
    rc = RV_QUEUE_ENOCHANNEL;
  else
    rc = target_op(s, &qh_channel_ops, now_ns, j->op, channel);
  j->rc = rc;
  if (rc != RV_QUEUE_OK)
    errmsg_copy(s, rc, j->why, sizeof j->why);
  rv__qsrv_events(s);
}

static void run_admin_job(rv_qsrv *s, int op, const char *topic, const char *channel,
                          rv_admin_response *r) {
  admin_job j = {.op = op, .topic = topic, .channel = channel};
  rv__qsrv_on_loop(s, admin_on_loop, &j);
  if (j.rc != RV_QUEUE_OK)
    reply_queue_error(r, j.rc, j.why);
  else
    reply_empty(r);
}

/* The action named by the path, for POST only; -1 after answering nsqd's
 * 404 (unknown action, checked first as httprouter does) or 405. */
static int action_of(const rv_admin_request *req, rv_admin_response *r, const char *prefix) {
  int op = op_from_path(req->path, prefix);
  if (op < 0)
    reply_error(r, 404, "NOT_FOUND");
  else if (!method_is(req, r, "POST"))
    op = -1;
  return op;
}

static void h_topic(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  int op = action_of(req, r, QH_TOPIC_PREFIX);
  if (op < 0)
    return;
  const char *topic = rv_admin_query(req, "topic");
  if (!topic) {
    reply_error(r, 400, "MISSING_ARG_TOPIC");
    return;
  }
  if (!rv_nsq_valid_name(topic, strlen(topic))) {
    /* nsqd checks the name on create and empty; delete and (un)pause just
     * look it up, and no topic has an invalid name. */
    bool checked = op == QH_OP_CREATE || op == QH_OP_EMPTY;
    reply_error(r, checked ? 400 : 404, checked ? "INVALID_TOPIC" : "TOPIC_NOT_FOUND");
    return;
  }
  run_admin_job(s, op, topic, NULL, r);
}

static void h_channel(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  int op = action_of(req, r, QH_CHANNEL_PREFIX);
  if (op < 0)
    return;
  /* http_api.GetTopicChannelArgs: its own codes, topic checked before channel. */
  const char *topic = name_arg(req, r, "topic", "MISSING_ARG_TOPIC", "INVALID_ARG_TOPIC");
  if (!topic)
    return;
  const char *channel =
      name_arg(req, r, "channel", "MISSING_ARG_CHANNEL", "INVALID_ARG_CHANNEL");
  if (!channel)
    return;
  run_admin_job(s, op, topic, channel, r);
}

/* ---- /ping and /info ----------------------------------------------------------------------- */

static void h_ping(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  if (!method_is(req, r, "GET"))
    return;
  int failed = atomic_load(&s->storage_failed);
  if (failed) {
    /* As nsqd's /ping after a disk-queue write failure: 500 with the reason. */
    r->status = 500;
    rv_admin_printf(r, "NOK - a topic log failed (%s): appends are refused until restart",
                    rv_strerror(failed));
    r->header_name = r->header_value = NULL;
    return;
  }
  reply_text(r, QH_HEALTH_OK);
  /* nsqd serves /ping through its PlainText decorator: no V1 header. */
  r->header_name = r->header_value = NULL;
}

static void hostname_get(char *buf, size_t cap) {
  if (gethostname(buf, cap - 1) != 0)
    buf[0] = 0;
  buf[cap - 1] = 0;
}

/* nsqd's doInfo; its durations are Go time.Duration, so they marshal as nanoseconds. */
static void h_info(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  if (!method_is(req, r, "GET"))
    return;
  char host[QH_HOSTNAME_MAX_BYTES];
  hostname_get(host, sizeof host);
  const rv_nsq_opts *o = &s->nsq;
  reply_json(r, 200,
             json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:b}", "version",
                       o->version ? o->version : RV_NSQ_COMPAT_VERSION, "broadcast_address", host,
                       "hostname", host, "http_port", (int)rv_admin_port(s->http), "tcp_port",
                       (int)s->tcp_port, "start_time", (json_int_t)(s->start_wall_ns / RV_NS_PER_S),
                       "max_heartbeat_interval",
                       (json_int_t)(o->max_heartbeat_interval_ms * RV_NS_PER_MS),
                       "max_output_buffer_size", (json_int_t)o->max_output_buffer_size_bytes,
                       "max_output_buffer_timeout",
                       (json_int_t)(o->max_output_buffer_timeout_ms * RV_NS_PER_MS),
                       "max_deflate_level", (json_int_t)o->max_deflate_level, "ravel", 1));
}

/* ---- /stats: collection on the loop thread --------------------------------------------------- */

typedef struct named {
  uint64_t handle;
  const char *name;  /* the core's; valid until its next change */
} named;

typedef struct named_vec {
  named *v;
  size_t n, cap;
  bool oom;
} named_vec;

static void named_push(named_vec *vec, uint64_t handle, const char *name) {
  if (vec->n == vec->cap) {
    size_t cap = vec->cap ? vec->cap * 2 : QH_VEC_INITIAL_CAP;
    named *nv = realloc(vec->v, cap * sizeof *nv);
    if (!nv) {
      vec->oom = true;
      return;
    }
    vec->v = nv;
    vec->cap = cap;
  }
  vec->v[vec->n++] = (named){handle, name};
}

static bool collect_topic(const rv_queue_topic_stats *t, void *arg) {
  named_push(arg, t->handle, t->name);
  return true;
}

static bool collect_channel(const rv_queue_channel_stats *c, void *arg) {
  named_push(arg, c->handle, c->name);
  return true;
}

static int named_cmp(const void *a, const void *b) {
  return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* nsqd sorts topics and channels by name (TopicsByName, ChannelsByName).
 * An empty vector has no array at all, which qsort must not be given. */
static void named_sort(named_vec *vec) {
  if (vec->n > 1)
    qsort(vec->v, vec->n, sizeof *vec->v, named_cmp);
}

/* The host part of "host:port" or "[v6]:port": nsqd's client_id before IDENTIFY. */
static void peer_host(const char *peer, char *out, size_t cap) {
  const char *colon = strrchr(peer, ':');
  size_t len = colon ? (size_t)(colon - peer) : strlen(peer);
  if (len >= 2 && peer[0] == '[' && peer[len - 1] == ']') {
    peer++;
    len -= 2;
  }
  snprintf(out, cap, "%.*s", (int)len, peer);
}

/* {"count":0,"percentiles":null}: nsqd without --e2e-processing-latency-percentile. */
static json_t *e2e_json(void) { return json_pack("{s:i, s:n}", "count", 0, "percentiles"); }

/*
 * One entry of a channel's clients[]: nsqd's ClientV2Stats keys in its
 * order, then ravel's per-consumer extras.  The consumer's cookie is its
 * connection (qconn); nsqd shows the remote host as client_id and hostname
 * until the client IDENTIFYs, then whatever it sent (even empty).
 */
static json_t *client_json(const rv_queue_consumer_stats *cs) {
  const qconn *c = (const qconn *)(uintptr_t)cs->cookie;
  const char *peer = c && c->sc ? rv_sconn_peer(c->sc) : NULL;
  char host[QH_PEER_MAX_BYTES];
  peer_host(peer ? peer : "", host, sizeof host);
  bool ident = c && c->identified;
  int state = c && c->dec.state == RV_NSQ_STATE_CLOSING ? RV_NSQ_STATE_CLOSING
                                                        : RV_NSQ_STATE_SUBSCRIBED;
  int64_t connect_ns = c ? c->connect_wall_ns : cs->connect_ns;
  return json_pack(
      "{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:b, s:b, s:s, s:b, s:s, s:s,"
      " s:s, s:b, s:I, s:I, s:I, s:b, s:b}",
      "client_id", ident ? c->ident.client_id : host, "hostname",
      ident ? c->ident.hostname : host, "version", QH_CLIENT_VERSION, "remote_address",
      peer ? peer : "", "state", state, "ready_count", (json_int_t)cs->ready_count,
      "in_flight_count", (json_int_t)cs->in_flight_count, "message_count",
      (json_int_t)cs->message_count, "finish_count", (json_int_t)cs->finish_count,
      "requeue_count", (json_int_t)cs->requeue_count, "connect_ts",
      (json_int_t)(connect_ns / RV_NS_PER_S), "sample_rate", c ? (int)c->cfg.sample_rate_pct : 0,
      "deflate", 0, "snappy", 0, "user_agent", ident ? c->ident.user_agent : "", "tls", 0,
      "tls_cipher_suite", "", "tls_version", "", "tls_negotiated_protocol", "",
      "tls_negotiated_protocol_is_mutual", 0,
      /* ravel: nsqd counts timeouts only per channel and has no held slots */
      "timeout_count", (json_int_t)cs->timeout_count, "held_count", (json_int_t)cs->held_count,
      "late_fin_count", (json_int_t)(c ? c->late_fins : 0), "timeout_notify",
      (int)cs->timeout_notify, "hold_slots", (int)cs->hold_slots);
}

typedef struct clients_acc {
  json_t *arr;
  bool oom;
} clients_acc;

static bool collect_client(const rv_queue_consumer_stats *cs, void *arg) {
  clients_acc *a = arg;
  if (json_array_append_new(a->arr, client_json(cs)) != 0)
    a->oom = true;
  return !a->oom;
}

/*
 * nsqd's ChannelStats keys in its order, plus held_count.  ravel keeps every
 * message on disk and only metadata in memory, so the whole depth is
 * "backend" depth: backend_depth == depth (nsqd's memory part is always 0).
 */
static json_t *channel_json(rv_qsrv *s, const rv_queue_channel_stats *cs, bool include_clients,
                            bool *oom) {
  json_t *clients = json_null();
  if (include_clients) {
    clients_acc a = {.arr = json_array()};
    if (!a.arr)
      *oom = true;
    else
      rv_queue_consumer_list(s->q, cs->handle, collect_client, &a);
    *oom |= a.oom;
    clients = a.arr;
  }
  return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:b, s:o, s:I}",
                   "channel_name", cs->name, "depth", (json_int_t)cs->depth, "backend_depth",
                   (json_int_t)cs->depth, "in_flight_count", (json_int_t)cs->in_flight_count,
                   "deferred_count", (json_int_t)cs->deferred_count, "message_count",
                   (json_int_t)cs->message_count, "requeue_count", (json_int_t)cs->requeue_count,
                   "timeout_count", (json_int_t)cs->timeout_count, "client_count",
                   (json_int_t)cs->client_count, "clients", clients, "paused", (int)cs->paused,
                   "e2e_processing_latency", e2e_json(), "held_count",
                   (json_int_t)cs->held_count);
}

typedef struct stats_job {
  const char *topic;      /* filters: NULL means all */
  const char *channel;
  bool include_clients;
  json_t *topics;         /* out: an array, or JSON null (no such topic, as nsqd) */
  int64_t now_ns;         /* out: wall clock, for uptimes in the text form */
  bool oom;
} stats_job;

/* One topic with its channels (filtered); NULL when the channel filter
 * matches none of them, which drops the topic as nsqd drops it. */
static json_t *topic_json(rv_qsrv *s, const rv_queue_topic_stats *ts, stats_job *j) {
  named_vec chans = {0};
  if (j->channel) {
    uint64_t h;
    if (rv_queue_channel_find(s->q, ts->handle, j->channel, &h) != RV_QUEUE_OK)
      return NULL;
    named_push(&chans, h, j->channel);
  } else {
    rv_queue_channel_list(s->q, ts->handle, collect_channel, &chans);
    named_sort(&chans);
  }
  j->oom |= chans.oom;
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < chans.n; i++) {
    rv_queue_channel_stats cs;
    if (rv_queue_channel_stats_get(s->q, chans.v[i].handle, &cs) == RV_QUEUE_OK &&
        json_array_append_new(arr, channel_json(s, &cs, j->include_clients, &j->oom)) != 0)
      j->oom = true;
  }
  free(chans.v);
  json_t *t = json_pack("{s:s, s:I, s:I, s:I, s:I, s:b, s:o, s:o}", "topic_name", ts->name,
                        "depth", (json_int_t)ts->depth, "backend_depth", (json_int_t)ts->depth,
                        "message_count", (json_int_t)ts->message_count, "message_bytes",
                        (json_int_t)ts->message_bytes, "paused", (int)ts->paused,
                        "e2e_processing_latency", e2e_json(), "channels", arr);
  if (!t)
    j->oom = true;
  return t;
}

static void stats_on_loop(rv_qsrv *s, void *arg) {
  stats_job *j = arg;
  j->now_ns = rv__qsrv_now();
  named_vec topics = {0};
  if (j->topic) {
    uint64_t h;
    if (rv_queue_topic_find(s->q, j->topic, &h) != RV_QUEUE_OK) {
      j->topics = json_null();
      return;
    }
    named_push(&topics, h, j->topic);
  } else {
    rv_queue_topic_list(s->q, collect_topic, &topics);
    named_sort(&topics);
  }
  j->oom |= topics.oom;
  j->topics = json_array();
  for (size_t i = 0; j->topics && i < topics.n; i++) {
    rv_queue_topic_stats ts;
    if (rv_queue_topic_stats_get(s->q, topics.v[i].handle, &ts) != RV_QUEUE_OK)
      continue;
    json_t *t = topic_json(s, &ts, j);
    if (t && json_array_append_new(j->topics, t) != 0)
      j->oom = true;
  }
  free(topics.v);
  if (!j->topics)
    j->oom = true;
}

/* ---- /stats: rendering on the HTTP thread ------------------------------------------------------ */

static uint64_t rss_bytes(void) {
  FILE *f = fopen(QH_PROC_STATM, "r"); /* rt-seam: host-fs (the HTTP API is never simulated) */
  if (!f)
    return 0;
  unsigned long long size_pages, resident_pages;
  int n = fscanf(f, "%llu %llu", &size_pages, &resident_pages);
  fclose(f);
  long page = sysconf(_SC_PAGESIZE);
  return n == 2 && page > 0 ? (uint64_t)resident_pages * (uint64_t)page : 0;
}

/* nsqd's memStats keys; ravel has no garbage-collected heap, so only the
 * resident set (in heap_in_use_bytes) is a real number. */
static json_t *memory_json(void) {
  return json_pack("{s:i, s:i, s:I, s:i, s:i, s:i, s:i, s:i, s:i}", "heap_objects", 0,
                   "heap_idle_bytes", 0, "heap_in_use_bytes", (json_int_t)rss_bytes(),
                   "heap_released_bytes", 0, "gc_pause_usec_100", 0, "gc_pause_usec_99", 0,
                   "gc_pause_usec_95", 0, "next_gc_bytes", 0, "gc_total_runs", 0);
}

static long long jint(const json_t *o, const char *key) {
  return (long long)json_integer_value(json_object_get(o, key));
}

static const char *jstr(const json_t *o, const char *key) {
  const char *v = json_string_value(json_object_get(o, key));
  return v ? v : "";
}

/* Go's Duration printing, truncated to seconds: "1h2m3s", "4m0s", "7s". */
static void duration_fmt(int64_t ns, char *buf, size_t cap) {
  long long sec = ns > 0 ? (long long)(ns / RV_NS_PER_S) : 0;
  long long h = sec / 3600, m = sec / 60 % 60, sc = sec % 60;
  if (h)
    snprintf(buf, cap, "%lldh%lldm%llds", h, m, sc);
  else if (m)
    snprintf(buf, cap, "%lldm%llds", m, sc);
  else
    snprintf(buf, cap, "%llds", sc);
}

static void client_text(FILE *f, const json_t *c, int64_t now_ns) {
  const char *addr = jstr(c, "remote_address");
  const char *colon = strrchr(addr, ':');
  char id[QH_PEER_MAX_BYTES + 2 * RV_NSQ_IDENTIFY_STR_MAX_BYTES];
  snprintf(id, sizeof id, "%s:%s %s", jstr(c, "hostname"), colon ? colon + 1 : "",
           jstr(c, "user_agent"));
  char connected[QH_DURATION_MAX_BYTES];
  duration_fmt(now_ns - jint(c, "connect_ts") * RV_NS_PER_S, connected, sizeof connected);
  fprintf(f,
          "        [%s %-21s] state: %lld inflt: %-4lld rdy: %-4lld fin: %-8lld re-q: %-8lld "
          "msgs: %-8lld timeouts: %-5lld held: %-4lld connected: %s\n",
          jstr(c, "version"), id, jint(c, "state"), jint(c, "in_flight_count"),
          jint(c, "ready_count"), jint(c, "finish_count"), jint(c, "requeue_count"),
          jint(c, "message_count"), jint(c, "timeout_count"), jint(c, "held_count"), connected);
}

/*
 * The plain-text /stats, in the layout of nsqd's printStats: a line per
 * topic, per channel (indented, "*P" when paused) and per client, with the
 * main counters, ravel's held slots and timeouts added.  Rendered from the
 * same JSON tree, so the two forms cannot disagree.
 */
static char *stats_text(const json_t *root, int64_t now_ns, size_t *len) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  if (!f)
    return NULL;
  int64_t start_ns = jint(root, "start_time") * RV_NS_PER_S;
  time_t start = (time_t)(start_ns / RV_NS_PER_S);
  struct tm tm;
  char when[64] = "";
  if (gmtime_r(&start, &tm))
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  char uptime[QH_DURATION_MAX_BYTES];
  duration_fmt(now_ns - start_ns, uptime, sizeof uptime);
  fprintf(f, "nsqd v%s (ravel)\nstart_time %s\nuptime %s\n\nHealth: %s\n", jstr(root, "version"),
          when, uptime, jstr(root, "health"));
  const json_t *mem = json_object_get(root, "memory");
  if (json_is_object(mem)) {
    fprintf(f, "\nMemory:\n");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)mem, key, v)
      fprintf(f, "   %-25s\t%lld\n", key, (long long)json_integer_value(v));
  }
  const json_t *topics = json_object_get(root, "topics");
  fprintf(f, "\nTopics:%s\n", json_array_size(topics) ? "" : " None");
  size_t i;
  const json_t *t;
  json_array_foreach(topics, i, t) {
    fprintf(f, "\n%s[%-15s] depth: %-5lld be-depth: %-5lld msgs: %-8lld\n",
            json_is_true(json_object_get(t, "paused")) ? "*P " : "   ", jstr(t, "topic_name"),
            jint(t, "depth"), jint(t, "backend_depth"), jint(t, "message_count"));
    size_t k;
    const json_t *ch;
    json_array_foreach(json_object_get(t, "channels"), k, ch) {
      fprintf(f,
              "%s[%-25s] depth: %-5lld be-depth: %-5lld inflt: %-4lld def: %-4lld re-q: %-5lld "
              "timeout: %-5lld held: %-4lld msgs: %-8lld\n",
              json_is_true(json_object_get(ch, "paused")) ? "   *P " : "      ",
              jstr(ch, "channel_name"), jint(ch, "depth"), jint(ch, "backend_depth"),
              jint(ch, "in_flight_count"), jint(ch, "deferred_count"), jint(ch, "requeue_count"),
              jint(ch, "timeout_count"), jint(ch, "held_count"), jint(ch, "message_count"));
      size_t m;
      const json_t *c;
      json_array_foreach(json_object_get(ch, "clients"), m, c) client_text(f, c, now_ns);
    }
  }
  fprintf(f, "\nProducers: None\n");
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

static void h_stats(void *arg, const rv_admin_request *req, rv_admin_response *r) {
  rv_qsrv *s = arg;
  if (!method_is(req, r, "GET"))
    return;
  const char *format = rv_admin_query(req, "format");
  bool as_json = format && strcmp(format, "json") == 0;
  bool include_mem = bool_param(rv_admin_query(req, "include_mem"), true);
  stats_job j = {.topic = filter_param(req, "topic"),
                 .channel = filter_param(req, "channel"),
                 .include_clients = bool_param(rv_admin_query(req, "include_clients"), true)};
  rv__qsrv_on_loop(s, stats_on_loop, &j);
  /* nsqd's key order: version, health, start_time, topics, memory (omitted
   * with include_mem=false), producers. */
  json_t *root = json_object();
  bool ok = root && !j.oom && j.topics;
  const rv_nsq_opts *o = &s->nsq;
  ok = ok &&
       json_object_set_new(root, "version",
                           json_string(o->version ? o->version : RV_NSQ_COMPAT_VERSION)) == 0 &&
       json_object_set_new(root, "health", json_string(QH_HEALTH_OK)) == 0 &&
       json_object_set_new(root, "start_time",
                           json_integer((json_int_t)(s->start_wall_ns / RV_NS_PER_S))) == 0 &&
       json_object_set(root, "topics", j.topics) == 0 &&
       (!include_mem || json_object_set_new(root, "memory", memory_json()) == 0) &&
       json_object_set_new(root, "producers", json_null()) == 0;
  json_decref(j.topics);
  if (!ok) {
    json_decref(root);
    reply_error(r, 500, "INTERNAL_ERROR");
    return;
  }
  if (as_json) {
    reply_json(r, 200, root);
    return;
  }
  size_t len = 0;
  char *text = stats_text(root, j.now_ns, &len);
  json_decref(root);
  if (!text)
    reply_error(r, 500, "INTERNAL_ERROR");
  else
    reply(r, 200, NULL, text, len);
}

/* ---- registration ------------------------------------------------------------------------------ */

/*
 * Every route takes any method and checks it itself, so that a wrong one
 * gets nsqd's JSON 405 rather than rv_admin's text one.  "/topic/" and
 * "/channel/" are prefixes: an unknown action gets nsqd's JSON 404.
 */
void rv__qsrv_http_routes(rv_qsrv *s) {
  static const struct {
    const char *path;
    rv_admin_handler fn;
  } routes[] = {
      {"/ping", h_ping},   {"/info", h_info},           {"/pub", h_pub},
      {"/mpub", h_mpub},   {"/stats", h_stats},         {QH_TOPIC_PREFIX, h_topic},
      {QH_CHANNEL_PREFIX, h_channel},
  };
  if (!s->http)
    return;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (rv_admin_route(s->http, NULL, routes[i].path, routes[i].fn, s) != RV_OK)
      rv_log_error(s->log, "cannot add HTTP route", "path=%s", routes[i].path);
}
