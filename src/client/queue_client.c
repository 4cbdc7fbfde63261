/*
 * queue_client: libravel's NSQ producer and consumer.  The model, the
 * threads and the options are described in queue_client.h; this comment only
 * covers the locking.
 *
 * Producer: p->mu guards the connection pointer, its generation, the FIFO of
 * outstanding requests and the counters; p->cv is broadcast on every change
 * (response, failure, reconnect, freed room).  p->wmu serializes writes to
 * the socket; a request is appended to the FIFO while holding both, so FIFO
 * order is wire order.  Lock order: wmu, then mu.  A connection is only
 * closed by the thread that replaces it (p->connecting) after its reader has
 * been joined and with wmu held, so no writer can be using it.
 *
 * Consumer: c->mu guards the connection pointer and generation, the list of
 * in-flight messages, the pool queue, the list of finished handler threads
 * and the stats; c->wmu serializes writes.  Lock order: wmu, then mu, then a
 * message context's internal lock (rv_ctx_cancel under mu).  Only the reader
 * thread opens and closes connections, taking wmu and mu to unpublish one
 * before closing it.
 */
#include "client/queue_client.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RV_QC_READ_BUF_BYTES (64 * 1024)
/* Consumer frames: messages up to this size (ravel's --max-msg-size bound). */
#define RV_QC_CONSUMER_MAX_FRAME_BYTES (8 * 1024 * 1024 + RV_NSQ_MSG_HEADER_SIZE_BYTES + 4)
/* Commands without a body (FIN, REQ, TOUCH, NOP, RDY, CLS, SUB). */
#define RV_QC_SMALL_CMD_LIMIT_BYTES 4096
#define RV_QC_USER_AGENT "ravel-queue-client/0.1"
#define RV_QC_DEFAULT_CLIENT_ID "ravel"
#define RV_QC_HEARTBEAT "_heartbeat_"

/* Per rv_thread (a simulated thread under the simulator), not _Thread_local. */
static rv_nsq_error *last_err(void) {
  static rv_nsq_error oom = {.code = RV_NSQ_E_INVALID, .text = "out of memory", .text_len = 13};
  rv_nsq_error *e = rv_thread_slot(RV_SLOT_QUEUE_LAST_ERROR, sizeof *e);
  return e ? e : &oom;
}

const rv_nsq_error *rv_queue_last_error(void) { return last_err(); }

static void set_last_err(const rv_nsq_error *from) {
  rv_nsq_error *e = rv_thread_slot(RV_SLOT_QUEUE_LAST_ERROR, sizeof *e);
  if (e)
    *e = *from;
}

static void clear_last_err(void) { set_last_err(&(rv_nsq_error){.code = RV_NSQ_OK}); }

static void set_err_from_frame(rv_nsq_error *e, const rv_nsq_slice *data) {
  e->code = rv_nsq_code_parse(data->ptr, data->len);
  e->fatal = rv_nsq_code_is_fatal(e->code);
  size_t k = data->len < sizeof e->text - 1 ? data->len : sizeof e->text - 1;
  memcpy(e->text, data->ptr, k);
  e->text[k] = 0;
  e->text_len = k;
}

static bool is_conn_error(int rc) {
  return rc == RV_ECLOSED || rc == RV_EIO || rc == RV_ETIMEDOUT || rc == RV_ECONNREFUSED ||
         rc == RV_EADDR;
}

/* ---- frame reading --------------------------------------------------------- */

typedef struct rdbuf {
  rv_nsq_frame_decoder fd;
  uint8_t *buf;
  size_t have, off;
} rdbuf;

static int rdbuf_init(rdbuf *r, int64_t max_frame) {
  memset(r, 0, sizeof *r);
  r->buf = malloc(RV_QC_READ_BUF_BYTES);
  if (!r->buf)
    return RV_ENOMEM;
  rv_nsq_frame_decoder_init(&r->fd, max_frame);
  return RV_OK;
}

static void rdbuf_free(rdbuf *r) {
  rv_nsq_frame_decoder_free(&r->fd);
  free(r->buf);
}

/* The next frame (pointers valid until the next call), or an rv_err:
 * RV_ETIMEDOUT at the connection's read deadline (state kept), RV_ECLOSED at
 * EOF, RV_EPROTO for a malformed stream, the ctx's error. */
static int rdbuf_next(rdbuf *r, rv_conn *conn, rv_ctx *ctx, rv_nsq_frame *f) {
  for (;;) {
    if (r->have > r->off) {
      size_t used = 0;
      const char *why = NULL;
      int rc = rv_nsq_frame_decode(&r->fd, r->buf + r->off, r->have - r->off, &used, f, &why);
      r->off += used;
      if (rc == 1)
        return RV_OK;
      if (rc < 0)
        return rc;
    }
    if (r->off == r->have)
      r->off = r->have = 0;
    ssize_t n = rv_conn_read(conn, r->buf + r->have, RV_QC_READ_BUF_BYTES - r->have, ctx);
    if (n == 0)
      return RV_ECLOSED;
    if (n < 0)
      return (int)n;
    r->have += (size_t)n;
  }
}

static bool frame_is(const rv_nsq_frame *f, const char *text) {
  size_t n = strlen(text);
  return f->data.len == n && memcmp(f->data.ptr, text, n) == 0;
}

static char *dup_str(const char *s, const char *dflt) {
  return strdup(s ? s : dflt);
}

/* ==== producer ============================================================== */

typedef struct preq {
  struct preq *next;
  size_t bytes;
  uint64_t msgs;
  bool done, abandoned;
  int rc;
  rv_nsq_error err;
} preq;

typedef struct pconn {
  struct rv_producer *p;
  rv_conn *conn;
  rv_ctx *ctx;        /* the reader's; cancelling it stops the reader */
  rv_thread *reader;
  uint64_t gen;
} pconn;

struct rv_producer {
  rv_producer_opts o;
  char *host;
  rv_mutex mu;
  rv_cond cv;
  rv_mutex wmu;
  pconn *cur;         /* mu */
  bool cur_broken;    /* mu */
  uint64_t gen;       /* mu: generation of cur */
  bool connecting;    /* mu: a thread is replacing cur */
  preq *head, *tail;  /* mu: outstanding on cur, in wire order */
  size_t nreq, nbytes;
  rv_producer_stats st;
};

/* Write under wmu, with the write deadline; the caller holds wmu. */
static int conn_write(rv_conn *conn, const rv_nsq_buf *b, rv_ctx *ctx) {
  rv_conn_set_write_deadline(conn, rv_now_ns() + RV_PRODUCER_WRITE_TIMEOUT_MS * RV_NS_PER_MS);
  return rv_conn_write_all(conn, b->data, b->len, ctx);
}

/* Mark the current connection broken (mu held) so the next call replaces it. */
static void prod_break_locked(rv_producer *p, uint64_t gen) {
  if (p->cur && p->gen == gen && !p->cur_broken) {
    p->cur_broken = true;
    rv_ctx_cancel(p->cur->ctx, "connection broken");
  }
}

static void prod_complete_locked(rv_producer *p, preq *r, int rc, const rv_nsq_error *err) {
  p->nreq--;
  p->nbytes -= r->bytes;
  if (rc == RV_OK) {
    p->st.requests_ok++;
    p->st.published += r->msgs;
  } else if (rc == RV_EPROTO) {
    p->st.server_errors++;
  }
  if (r->abandoned) {
    free(r);
    return;
  }
  r->done = true;
  r->rc = rc;
  if (err)
    r->err = *err;
}

static void prod_reader(void *arg) {
  pconn *pc = arg;
  rv_producer *p = pc->p;
  rdbuf rb;
  int rc = rdbuf_init(&rb, 0);
  rv_nsq_frame f;
  while (rc == RV_OK) {
    rc = rdbuf_next(&rb, pc->conn, pc->ctx, &f);
    if (rc != RV_OK)
      break;
    if (f.type == RV_NSQ_FRAME_RESPONSE && frame_is(&f, RV_QC_HEARTBEAT)) {
      rv_nsq_buf b;
      rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
      rv_nsq_enc_nop(&b);
      rv_mutex_lock(&p->wmu);
      rc = conn_write(pc->conn, &b, pc->ctx);
      rv_mutex_unlock(&p->wmu);
      rv_nsq_buf_free(&b);
      continue;
    }
    if (f.type != RV_NSQ_FRAME_RESPONSE && f.type != RV_NSQ_FRAME_ERROR)
      continue; /* a producer gets no messages; ignore what it does not know */
    rv_mutex_lock(&p->mu);
    preq *r = p->head;
    if (!r) {
      rv_mutex_unlock(&p->mu);
      rc = RV_EPROTO; /* an answer to nothing: the stream is out of step */
      break;
    }
    p->head = r->next;
    if (!p->head)
      p->tail = NULL;
    if (f.type == RV_NSQ_FRAME_RESPONSE) {
      prod_complete_locked(p, r, frame_is(&f, "OK") ? RV_OK : RV_EPROTO, NULL);
    } else {
      rv_nsq_error e;
      set_err_from_frame(&e, &f.data);
      prod_complete_locked(p, r, RV_EPROTO, &e);
    }
    rv_cond_broadcast(&p->cv);
    rv_mutex_unlock(&p->mu);
  }
  rdbuf_free(&rb);
  /* Whatever ended the connection, everything outstanding on it failed. */
  rv_mutex_lock(&p->mu);
  if (p->cur == pc && !p->cur_broken) {
    p->cur_broken = true;
  }
  p->st.connection_losses++;
  while (p->head) {
    preq *r = p->head;
    p->head = r->next;
    prod_complete_locked(p, r, RV_ECLOSED, NULL);
  }
  p->tail = NULL;
  rv_cond_broadcast(&p->cv);
  rv_mutex_unlock(&p->mu);
}

/* Stop a connection's reader and close it; the caller owns pc (it is no
 * longer p->cur). */
static void pconn_destroy(rv_producer *p, pconn *pc) {
  rv_ctx_cancel(pc->ctx, "producer connection closed");
  rv_thread_join(pc->reader);
  rv_mutex_lock(&p->wmu); /* no writer is still in a write on it */
  rv_conn_close(pc->conn);
  rv_mutex_unlock(&p->wmu);
  rv_ctx_free(pc->ctx);
  free(pc);
}

static int pconn_open(rv_producer *p, rv_ctx *ctx, pconn **out) {
  pconn *pc = calloc(1, sizeof *pc);
  if (!pc)
    return RV_ENOMEM;
  pc->p = p;
  int rc = rv_tcp_connect(&pc->conn, p->host, p->o.port, ctx);
  if (rc != RV_OK) {
    free(pc);
    return rc;
  }
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
  rv_nsq_enc_magic(&b);
  rc = conn_write(pc->conn, &b, ctx);
  rv_nsq_buf_free(&b);
  if (rc == RV_OK) {
    pc->ctx = rv_ctx_new(NULL);
    if (!pc->ctx)
      rc = RV_ENOMEM;
  }
  if (rc == RV_OK) {
    rc = rv_thread_start(&pc->reader, "queue-pub-rd", "queue-client", prod_reader, pc);
    if (rc != RV_OK)
      rv_ctx_free(pc->ctx);
  }
  if (rc != RV_OK) {
    rv_conn_close(pc->conn);
    free(pc);
    return rc;
  }
  *out = pc;
  return RV_OK;
}

/* Make sure there is a live connection; *gen names it. */
static int prod_ensure(rv_producer *p, rv_ctx *ctx, uint64_t *gen) {
  rv_mutex_lock(&p->mu);
  for (;;) {
    if (p->cur && !p->cur_broken) {
      *gen = p->gen;
      rv_mutex_unlock(&p->mu);
      return RV_OK;
    }
    if (!p->connecting)
      break;
    int rc = rv_cond_wait(&p->cv, &p->mu, ctx);
    if (rc != RV_OK) {
      rv_mutex_unlock(&p->mu);
      return rc;
    }
  }
  p->connecting = true;
  pconn *old = p->cur;
  p->cur = NULL;
  rv_mutex_unlock(&p->mu);
  if (old)
    pconn_destroy(p, old);
  pconn *pc = NULL;
  int rc = pconn_open(p, ctx, &pc);
  rv_mutex_lock(&p->mu);
  p->connecting = false;
  if (rc == RV_OK) {
    p->cur = pc;
    p->cur_broken = false;
    pc->gen = ++p->gen;
    *gen = p->gen;
    p->st.connects++;
  }
  rv_cond_broadcast(&p->cv);
  rv_mutex_unlock(&p->mu);
  return rc;
}

/* One attempt: reserve room, send, wait for the answer. */
static int prod_attempt(rv_producer *p, rv_ctx *ctx, const rv_nsq_buf *cmd, size_t bytes,
                        uint64_t msgs) {
  uint64_t gen;
  int rc = prod_ensure(p, ctx, &gen);
  if (rc != RV_OK)
    return rc;
  /* Bounded buffering: wait for room (one oversized request may go alone). */
  rv_mutex_lock(&p->mu);
  while (p->nreq >= p->o.max_inflight_requests ||
         (p->nbytes > 0 && p->nbytes + bytes > p->o.max_inflight_bytes)) {
    if (p->gen != gen || p->cur_broken) {
      rv_mutex_unlock(&p->mu);
      return RV_ECLOSED;
    }
    rc = rv_cond_wait(&p->cv, &p->mu, ctx);
    if (rc != RV_OK) {
      rv_mutex_unlock(&p->mu);
      return rc;
    }
  }
  p->nreq++;
  p->nbytes += bytes;
  rv_mutex_unlock(&p->mu);

  preq *r = calloc(1, sizeof *r);
  rv_mutex_lock(&p->wmu);
  rv_mutex_lock(&p->mu);
  if (!r || !p->cur || p->gen != gen || p->cur_broken) {
    p->nreq--;
    p->nbytes -= bytes;
    rv_cond_broadcast(&p->cv);
    rv_mutex_unlock(&p->mu);
    rv_mutex_unlock(&p->wmu);
    free(r);
    return r ? RV_ECLOSED : RV_ENOMEM;
  }
  r->bytes = bytes;
  r->msgs = msgs;
  if (p->tail)
    p->tail->next = r;
  else
    p->head = r;
  p->tail = r;
  rv_conn *conn = p->cur->conn;
  rv_mutex_unlock(&p->mu);
  rc = conn_write(conn, cmd, ctx);
  rv_mutex_lock(&p->mu);
  if (rc != RV_OK) {
    /* A write cut short desynchronises the stream: the connection goes. */
    prod_break_locked(p, gen);
    r->abandoned = !r->done;
    if (r->done)
      free(r);
    rv_mutex_unlock(&p->mu);
    rv_mutex_unlock(&p->wmu);
    int cerr = rv_ctx_err(ctx);
    return cerr ? cerr : RV_ECLOSED;
  }
  rv_mutex_unlock(&p->wmu);
  while (!r->done) {
    rc = rv_cond_wait(&p->cv, &p->mu, ctx);
    if (rc != RV_OK && !r->done) {
      r->abandoned = true; /* the reader frees it when its answer comes */
      rv_mutex_unlock(&p->mu);
      return rc;
    }
  }
  rv_mutex_unlock(&p->mu);
  rc = r->rc;
  if (rc == RV_EPROTO)
    set_last_err(&r->err);
  free(r);
  return rc;
}

static int prod_do(rv_producer *p, rv_ctx *ctx, const rv_nsq_buf *cmd, size_t bytes,
                   uint64_t msgs) {
  clear_last_err();
  int64_t backoff = p->o.backoff_ms;
  int rc = RV_ECLOSED;
  for (int attempt = 0; attempt < p->o.max_attempts; attempt++) {
    if (attempt > 0) {
      rv_mutex_lock(&p->mu);
      p->st.retries++;
      rv_mutex_unlock(&p->mu);
      int s = rv_sleep(ctx, backoff * RV_NS_PER_MS);
      if (s != RV_OK)
        return s;
      backoff = backoff * 2 > p->o.max_backoff_ms ? p->o.max_backoff_ms : backoff * 2;
    }
    rc = prod_attempt(p, ctx, cmd, bytes, msgs);
    if (rc == RV_OK)
      return RV_OK;
    if (rv_ctx_err(ctx))
      return rv_ctx_err(ctx);
    if (!is_conn_error(rc))
      return rc;
  }
  return rc;
}

int rv_producer_open(rv_producer **out, rv_ctx *ctx, const rv_producer_opts *opts) {
  rv_producer *p = calloc(1, sizeof *p);
  if (!p)
    return RV_ENOMEM;
  if (opts)
    p->o = *opts;
  p->host = dup_str(p->o.host, RV_QUEUE_DEFAULT_HOST);
  if (!p->o.port)
    p->o.port = RV_QUEUE_DEFAULT_PORT;
  if (!p->o.max_inflight_requests)
    p->o.max_inflight_requests = RV_PRODUCER_DEFAULT_MAX_INFLIGHT_REQUESTS;
  if (!p->o.max_inflight_bytes)
    p->o.max_inflight_bytes = RV_PRODUCER_DEFAULT_MAX_INFLIGHT_BYTES;
  if (p->o.max_attempts <= 0)
    p->o.max_attempts = RV_PRODUCER_DEFAULT_MAX_ATTEMPTS;
  if (p->o.backoff_ms <= 0)
    p->o.backoff_ms = RV_PRODUCER_DEFAULT_BACKOFF_MS;
  if (p->o.max_backoff_ms <= 0)
    p->o.max_backoff_ms = RV_PRODUCER_DEFAULT_MAX_BACKOFF_MS;
  p->o.host = NULL;
  rv_mutex_init(&p->mu, "queue-producer");
  rv_cond_init(&p->cv, "queue-producer");
  rv_mutex_init(&p->wmu, "queue-producer-write");
  if (!p->host) {
    rv_producer_close(p);
    return RV_ENOMEM;
  }
  uint64_t gen;
  int rc = prod_ensure(p, ctx, &gen);
  if (rc != RV_OK) {
    rv_producer_close(p);
    return rc;
  }
  *out = p;
  return RV_OK;
}

int rv_producer_pub(rv_ctx *ctx, rv_producer *p, const char *topic, const void *body,
                    size_t len) {
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  int rc = rv_nsq_enc_pub(&b, topic, body, len);
  if (rc == RV_OK)
    rc = prod_do(p, ctx, &b, len, 1);
  rv_nsq_buf_free(&b);
  return rc;
}

int rv_producer_mpub(rv_ctx *ctx, rv_producer *p, const char *topic,
                     const void *const bodies[], const size_t lens[], size_t n) {
  if (n == 0)
    return RV_EINVAL;
  rv_nsq_slice *m = calloc(n, sizeof *m);
  if (!m)
    return RV_ENOMEM;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    m[i].ptr = bodies[i];
    m[i].len = lens[i];
    total += lens[i];
  }
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  int rc = rv_nsq_enc_mpub(&b, topic, m, n);
  free(m);
  if (rc == RV_OK)
    rc = prod_do(p, ctx, &b, total, n);
  rv_nsq_buf_free(&b);
  return rc;
}

int rv_producer_dpub(rv_ctx *ctx, rv_producer *p, const char *topic, int64_t defer_ms,
                     const void *body, size_t len) {
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  int rc = rv_nsq_enc_dpub(&b, topic, defer_ms, body, len);
  if (rc == RV_OK)
    rc = prod_do(p, ctx, &b, len, 1);
  rv_nsq_buf_free(&b);
  return rc;
}

void rv_producer_stats_get(rv_producer *p, rv_producer_stats *out) {
  rv_mutex_lock(&p->mu);
  *out = p->st;
  out->inflight_requests = p->nreq;
  out->inflight_bytes = p->nbytes;
  rv_mutex_unlock(&p->mu);
}

void rv_producer_close(rv_producer *p) {
  if (!p)
    return;
  rv_mutex_lock(&p->mu);
  pconn *pc = p->cur;
  p->cur = NULL;
  rv_mutex_unlock(&p->mu);
  if (pc)
    pconn_destroy(p, pc);
  rv_mutex_destroy(&p->wmu);
  rv_cond_destroy(&p->cv);
  rv_mutex_destroy(&p->mu);
  free(p->host);
  free(p);
}

/* ==== consumer ============================================================== */

typedef struct cmsg {
  rv_message m; /* first: rv_message_* helpers cast back */
  struct cmsg *next, *prev;   /* c->mu: in-flight list */
  struct cmsg *qnext;         /* c->mu: pool queue */
  struct rv_consumer *c;
  uint64_t gen;               /* the connection it came on */
  rv_ctx *ctx;
  int64_t last_touch_ns;      /* c->mu */
  bool server_timed_out;      /* c->mu */
  bool cancelled;             /* c->mu */
  /* Its connection granted timeout_notify or hold_slots: answers carry the
   * attempt ("FIN <id> <attempts>"), so a late one cannot act on a
   * redelivery of the same id.  hold: that connection granted hold_slots. */
  bool qualify;
  bool hold;
} cmsg;

typedef struct deadthread {
  struct deadthread *next;
  rv_thread *t;
} deadthread;

struct rv_consumer {
  rv_consumer_opts o;
  char *host, *topic, *channel, *client_id;
  rv_ctx *root;        /* parent of every handler context */
  rv_ctx *reader_ctx;  /* cancelled to stop the reader */
  rv_thread *reader;
  rv_mutex mu;
  rv_cond cv;
  rv_mutex wmu;
  rv_conn *conn;       /* wmu+mu to change, either to read */
  uint64_t gen;        /* mu */
  bool ready;          /* mu: subscribed on conn */
  bool stopping;       /* mu */
  bool stopped;
  bool pool_stop;      /* mu */
  cmsg *head, *tail;   /* mu: in flight */
  cmsg *qhead, *qtail; /* mu: pool queue */
  deadthread *dead;    /* mu: finished per-message threads to join */
  rv_thread **pool;
  int npool;
  uint64_t handler_seq;
  rv_consumer_stats st;
};

/* Send a small command on connection `gen`; dropped (and counted) if that
 * connection is gone. */
static int cons_send(rv_consumer *c, uint64_t gen, const rv_nsq_buf *b) {
  rv_mutex_lock(&c->wmu);
  rv_mutex_lock(&c->mu);
  rv_conn *conn = (c->conn && c->gen == gen) ? c->conn : NULL;
  if (!conn)
    c->st.answers_dropped++;
  rv_mutex_unlock(&c->mu);
  int rc = RV_ECLOSED;
  if (conn) {
    rv_conn_set_write_deadline(conn, rv_now_ns() + RV_CONSUMER_WRITE_TIMEOUT_MS * RV_NS_PER_MS);
    rc = rv_conn_write_all(conn, b->data, b->len, NULL);
  }
  rv_mutex_unlock(&c->wmu);
  return rc;
}

static void cons_unlink_locked(rv_consumer *c, cmsg *m) {
  if (m->prev)
    m->prev->next = m->next;
  else
    c->head = m->next;
  if (m->next)
    m->next->prev = m->prev;
  else
    c->tail = m->prev;
  m->next = m->prev = NULL;
  c->st.in_flight--;
}

/* Run the handler on the calling thread and answer for the message. */
static void cons_run_one(rv_consumer *c, cmsg *m) {
  rv_thread_set_task("msg %s attempt %u %s/%s", m->m.id_str, (unsigned)m->m.attempts, c->topic,
                     c->channel);
  int verdict = c->o.handler(m->ctx, &m->m, c->o.handler_arg);
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
  bool req = verdict == RV_MSG_REQUEUE;
  uint16_t attempt = m->qualify ? m->m.attempts : 0;
  if (req)
    rv_nsq_enc_req_attempt(&b, m->m.id, m->m.requeue_delay_ms < 0 ? 0 : m->m.requeue_delay_ms,
                           attempt);
  else
    rv_nsq_enc_fin_attempt(&b, m->m.id, attempt);
  int rc = cons_send(c, m->gen, &b);
  rv_nsq_buf_free(&b);
  rv_mutex_lock(&c->mu);
  if (rc == RV_OK) {
    if (req)
      c->st.requeued++;
    else
      c->st.finished++;
  }
  cons_unlink_locked(c, m);
  rv_cond_broadcast(&c->cv);
  rv_mutex_unlock(&c->mu);
  rv_thread_set_task(NULL);
  rv_ctx_free(m->ctx);
  free(m);
}

static void cons_handler_thread(void *arg) {
  cmsg *m = arg;
  rv_consumer *c = m->c;
  cons_run_one(c, m);
  deadthread *d = malloc(sizeof *d);
  rv_mutex_lock(&c->mu);
  c->st.handler_threads_alive--;
  if (d) {
    d->t = rv_thread_self();
    d->next = c->dead;
    c->dead = d;
  }
  rv_cond_broadcast(&c->cv);
  rv_mutex_unlock(&c->mu);
}

static void cons_pool_thread(void *arg) {
  rv_consumer *c = arg;
  rv_mutex_lock(&c->mu);
  for (;;) {
    while (!c->qhead && !c->pool_stop)
      rv_cond_wait(&c->cv, &c->mu, NULL);
    if (!c->qhead)
      break;
    cmsg *m = c->qhead;
    c->qhead = m->qnext;
    if (!c->qhead)
      c->qtail = NULL;
    rv_mutex_unlock(&c->mu);
    cons_run_one(c, m);
    rv_mutex_lock(&c->mu);
  }
  c->st.handler_threads_alive--;
  rv_mutex_unlock(&c->mu);
}

static void cons_reap(rv_consumer *c) {
  rv_mutex_lock(&c->mu);
  deadthread *d = c->dead;
  c->dead = NULL;
  rv_mutex_unlock(&c->mu);
  while (d) {
    deadthread *next = d->next;
    rv_thread_join(d->t);
    free(d);
    d = next;
  }
}

static void cons_dispatch(rv_consumer *c, const rv_nsq_frame *f) {
  cmsg *m = calloc(1, sizeof *m + f->body.len + 1);
  rv_ctx *ctx = m ? rv_ctx_new(c->root) : NULL;
  if (!ctx) {
    free(m);
    return; /* the server times it out and redelivers it */
  }
  uint8_t *body = (uint8_t *)(m + 1);
  memcpy(body, f->body.ptr, f->body.len);
  memcpy(m->m.id, f->id, RV_NSQ_MSG_ID_SIZE_BYTES);
  memcpy(m->m.id_str, f->id, RV_NSQ_MSG_ID_SIZE_BYTES);
  m->m.attempts = f->attempts;
  m->m.timestamp_ns = f->ts_ns;
  m->m.delivered_ns = rv_now_ns();
  m->m.body = body;
  m->m.len = f->body.len;
  m->c = c;
  m->ctx = ctx;
  m->last_touch_ns = m->m.delivered_ns;
  rv_mutex_lock(&c->mu);
  m->gen = c->gen;
  m->hold = c->st.hold_slots_granted;
  m->qualify = c->st.timeout_notify_granted || c->st.hold_slots_granted;
  m->prev = c->tail;
  if (c->tail)
    c->tail->next = m;
  else
    c->head = m;
  c->tail = m;
  c->st.received++;
  c->st.in_flight++;
  if (c->o.mode == RV_CONSUMER_POOL) {
    if (c->qtail)
      c->qtail->qnext = m;
    else
      c->qhead = m;
    c->qtail = m;
    rv_cond_broadcast(&c->cv);
    rv_mutex_unlock(&c->mu);
    return;
  }
  uint64_t seq = ++c->handler_seq;
  c->st.handler_threads_alive++;
  rv_mutex_unlock(&c->mu);
  char name[RV_THREAD_NAME_MAX];
  snprintf(name, sizeof name, "handler-%llu", (unsigned long long)seq);
  rv_thread *t;
  if (rv_thread_start(&t, name, "queue-handler", cons_handler_thread, m) != RV_OK) {
    /* No thread: requeue at once rather than let it time out. */
    rv_nsq_buf b;
    rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
    rv_nsq_enc_req_attempt(&b, m->m.id, 0, m->qualify ? m->m.attempts : 0);
    cons_send(c, m->gen, &b);
    rv_nsq_buf_free(&b);
    rv_mutex_lock(&c->mu);
    c->st.handler_threads_alive--;
    cons_unlink_locked(c, m);
    rv_mutex_unlock(&c->mu);
    rv_ctx_free(m->ctx);
    free(m);
  }
}

static void cons_on_timeout_frame(rv_consumer *c, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]) {
  rv_mutex_lock(&c->mu);
  c->st.timeouts_notified++;
  for (cmsg *m = c->head; m; m = m->next) {
    if (m->gen != c->gen || m->server_timed_out ||
        memcmp(m->m.id, id, RV_NSQ_MSG_ID_SIZE_BYTES) != 0)
      continue;
    m->server_timed_out = true;
    if (c->o.cancel_on_server_timeout && !m->cancelled) {
      m->cancelled = true;
      c->st.handlers_cancelled++;
      rv_ctx_cancel(m->ctx, "message %s timed out (server)", m->m.id_str);
    }
    break;
  }
  rv_mutex_unlock(&c->mu);
}

/* Local timeouts and auto-touch, every tick. */
static void cons_housekeeping(rv_consumer *c) {
  cons_reap(c);
  if (!c->o.cancel_on_local_timeout && !c->o.auto_touch)
    return;
  int64_t now = rv_now_ns();
  int64_t timeout_ns = c->st.msg_timeout_ms * RV_NS_PER_MS;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  uint64_t touches = 0;
  rv_mutex_lock(&c->mu);
  uint64_t gen = c->gen;
  for (cmsg *m = c->head; m && timeout_ns > 0; m = m->next) {
    if (m->gen != gen)
      continue;
    /* A message the server already timed out cannot be touched back. */
    if (c->o.auto_touch && !m->server_timed_out && now - m->last_touch_ns >= timeout_ns / 2 &&
        rv_nsq_enc_touch_attempt(&b, m->m.id, m->qualify ? m->m.attempts : 0) == RV_OK) {
      m->last_touch_ns = now;
      touches++;
    }
    if (c->o.cancel_on_local_timeout && !m->cancelled && now - m->last_touch_ns >= timeout_ns) {
      m->cancelled = true;
      c->st.local_timeouts++;
      c->st.handlers_cancelled++;
      rv_ctx_cancel(m->ctx, "message %s timed out (local)", m->m.id_str);
    }
  }
  rv_mutex_unlock(&c->mu);
  if (b.len > 0 && cons_send(c, gen, &b) == RV_OK) {
    rv_mutex_lock(&c->mu);
    c->st.touches += touches;
    rv_mutex_unlock(&c->mu);
  }
  rv_nsq_buf_free(&b);
}

/* IDENTIFY's JSON reply: what the server granted. */
static void cons_parse_identify_reply(rv_consumer *c, const rv_nsq_slice *data) {
  json_error_t jerr;
  json_t *j = json_loadb((const char *)data->ptr, data->len, 0, &jerr);
  rv_mutex_lock(&c->mu);
  c->st.msg_timeout_ms = c->o.msg_timeout_ms ? c->o.msg_timeout_ms : RV_NSQ_DEFAULT_MSG_TIMEOUT_MS;
  c->st.timeout_notify_granted = false;
  c->st.hold_slots_granted = false;
  if (j && json_is_object(j)) {
    json_t *v = json_object_get(j, "msg_timeout");
    if (json_is_integer(v) && json_integer_value(v) > 0)
      c->st.msg_timeout_ms = (int64_t)json_integer_value(v);
    c->st.timeout_notify_granted = json_is_true(json_object_get(j, "timeout_notify"));
    c->st.hold_slots_granted = json_is_true(json_object_get(j, "hold_slots"));
  }
  rv_mutex_unlock(&c->mu);
  json_decref(j);
}

/* Expect a response frame during the handshake (heartbeats answered). */
static int cons_expect_response(rv_conn *conn, rdbuf *rb, rv_ctx *ctx, rv_nsq_frame *f) {
  for (;;) {
    int rc = rdbuf_next(rb, conn, ctx, f);
    if (rc != RV_OK)
      return rc;
    if (f->type == RV_NSQ_FRAME_RESPONSE && frame_is(f, RV_QC_HEARTBEAT)) {
      rv_nsq_buf b;
      rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
      rv_nsq_enc_nop(&b);
      rc = rv_conn_write_all(conn, b.data, b.len, ctx);
      rv_nsq_buf_free(&b);
      if (rc != RV_OK)
        return rc;
      continue;
    }
    if (f->type == RV_NSQ_FRAME_RESPONSE)
      return RV_OK;
    if (f->type == RV_NSQ_FRAME_ERROR) {
      rv_nsq_error e;
      set_err_from_frame(&e, &f->data);
      set_last_err(&e);
    }
    return RV_EPROTO;
  }
}

/* Connect, IDENTIFY, SUB, RDY: the connection, or an rv_err. */
static int cons_handshake(rv_consumer *c, rdbuf *rb, rv_conn **out) {
  rv_ctx *hs = rv_ctx_with_timeout(c->reader_ctx, RV_CONSUMER_HANDSHAKE_TIMEOUT_MS * RV_NS_PER_MS);
  if (!hs)
    return RV_ENOMEM;
  rv_conn *conn;
  int rc = rv_tcp_connect(&conn, c->host, c->o.port, hs);
  if (rc != RV_OK) {
    rv_ctx_free(hs);
    return rc;
  }
  rv_nsq_identify id;
  rv_nsq_identify_init(&id);
  snprintf(id.client_id, sizeof id.client_id, "%s", c->client_id);
  snprintf(id.hostname, sizeof id.hostname, "%s", c->client_id);
  snprintf(id.user_agent, sizeof id.user_agent, "%s", RV_QC_USER_AGENT);
  id.feature_negotiation = true; /* as go-nsq: read what the server granted */
  id.heartbeat_interval_ms = c->o.heartbeat_interval_ms;
  id.msg_timeout_ms = c->o.msg_timeout_ms;
  id.timeout_notify = c->o.cancel_on_server_timeout;  /* only when wanted */
  id.hold_slots = c->o.hold_slots;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  rv_nsq_frame f;
  rc = rv_nsq_enc_magic(&b);
  if (rc == RV_OK)
    rc = rv_nsq_enc_identify(&b, &id);
  if (rc == RV_OK)
    rc = rv_conn_write_all(conn, b.data, b.len, hs);
  if (rc == RV_OK)
    rc = cons_expect_response(conn, rb, hs, &f);
  if (rc == RV_OK) {
    if (frame_is(&f, "OK")) {
      rv_nsq_slice none = {(const uint8_t *)"{}", 2};
      cons_parse_identify_reply(c, &none);
    } else {
      cons_parse_identify_reply(c, &f.data);
    }
    b.len = 0;
    rc = rv_nsq_enc_sub(&b, c->topic, c->channel);
  }
  if (rc == RV_OK)
    rc = rv_conn_write_all(conn, b.data, b.len, hs);
  if (rc == RV_OK)
    rc = cons_expect_response(conn, rb, hs, &f);
  if (rc == RV_OK && !frame_is(&f, "OK"))
    rc = RV_EPROTO;
  if (rc == RV_OK) {
    b.len = 0;
    rc = rv_nsq_enc_rdy(&b, c->o.max_in_flight);
  }
  if (rc == RV_OK)
    rc = rv_conn_write_all(conn, b.data, b.len, hs);
  rv_nsq_buf_free(&b);
  rv_ctx_free(hs);
  if (rc != RV_OK) {
    rv_conn_close(conn);
    return rc;
  }
  *out = conn;
  return RV_OK;
}

/* One connection's life; returns when it ends. */
static int cons_session(rv_consumer *c, bool *subscribed) {
  rdbuf rb;
  int rc = rdbuf_init(&rb, RV_QC_CONSUMER_MAX_FRAME_BYTES);
  if (rc != RV_OK)
    return rc;
  rv_conn *conn = NULL;
  rc = cons_handshake(c, &rb, &conn);
  if (rc != RV_OK) {
    rdbuf_free(&rb);
    return rc;
  }
  *subscribed = true;
  rv_mutex_lock(&c->wmu);
  rv_mutex_lock(&c->mu);
  c->conn = conn;
  uint64_t gen = ++c->gen;
  c->ready = true;
  c->st.connected = true;
  c->st.connects++;
  bool stopping = c->stopping;
  rv_cond_broadcast(&c->cv);
  rv_mutex_unlock(&c->mu);
  rv_mutex_unlock(&c->wmu);
  if (stopping) {
    rv_nsq_buf b;
    rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
    rv_nsq_enc_cls(&b);
    cons_send(c, gen, &b);
    rv_nsq_buf_free(&b);
  }

  int64_t tick_ns = RV_CONSUMER_TICK_MS * RV_NS_PER_MS;
  int64_t next_tick = rv_now_ns() + tick_ns;
  rv_nsq_frame f;
  for (;;) {
    rv_conn_set_read_deadline(conn, next_tick);
    rc = rdbuf_next(&rb, conn, c->reader_ctx, &f);
    if (rc == RV_ETIMEDOUT || rv_now_ns() >= next_tick) {
      cons_housekeeping(c);
      next_tick = rv_now_ns() + tick_ns;
      if (rc == RV_ETIMEDOUT)
        continue;
    }
    if (rc != RV_OK)
      break;
    if (f.type == RV_NSQ_FRAME_MESSAGE) {
      cons_dispatch(c, &f);
    } else if (f.type == RV_NSQ_FRAME_TIMEOUT) {
      cons_on_timeout_frame(c, f.id);
    } else if (f.type == RV_NSQ_FRAME_RESPONSE) {
      if (frame_is(&f, RV_QC_HEARTBEAT)) {
        rv_nsq_buf b;
        rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
        rv_nsq_enc_nop(&b);
        cons_send(c, gen, &b);
        rv_nsq_buf_free(&b);
      }
      /* "CLOSE_WAIT" after CLS, anything else: nothing to do */
    } else if (f.type == RV_NSQ_FRAME_ERROR) {
      rv_nsq_code code = rv_nsq_code_parse(f.data.ptr, f.data.len);
      rv_mutex_lock(&c->mu);
      if (code == RV_NSQ_E_FIN_FAILED)
        c->st.late_fins++;
      else if (code == RV_NSQ_E_REQ_FAILED)
        c->st.late_reqs++;
      else if (code == RV_NSQ_E_TOUCH_FAILED)
        c->st.touch_failed++;
      rv_mutex_unlock(&c->mu);
      if (rv_nsq_code_is_fatal(code)) {
        rc = RV_EPROTO; /* nsqd closes the connection after a fatal error */
        break;
      }
    }
  }
  /* Unpublish, then close: writers hold wmu while they use conn. */
  rv_mutex_lock(&c->wmu);
  rv_mutex_lock(&c->mu);
  c->conn = NULL;
  c->ready = false;
  c->st.connected = false;
  c->st.connection_losses++;
  /* The server requeued what was in flight on it: stop those handlers. */
  for (cmsg *m = c->head; m; m = m->next) {
    if (m->gen == gen && !m->cancelled) {
      m->cancelled = true;
      rv_ctx_cancel(m->ctx, "message %s: connection lost", m->m.id_str);
    }
  }
  rv_cond_broadcast(&c->cv);
  rv_mutex_unlock(&c->mu);
  rv_mutex_unlock(&c->wmu);
  rv_conn_close(conn);
  rdbuf_free(&rb);
  return rc;
}

static void cons_reader(void *arg) {
  rv_consumer *c = arg;
  int64_t backoff = RV_CONSUMER_BACKOFF_MS;
  while (!rv_ctx_err(c->reader_ctx)) {
    bool subscribed = false;
    cons_session(c, &subscribed);
    cons_reap(c);
    rv_mutex_lock(&c->mu);
    bool stopping = c->stopping;
    rv_mutex_unlock(&c->mu);
    if (stopping)
      break;
    if (subscribed)
      backoff = RV_CONSUMER_BACKOFF_MS;
    if (rv_sleep(c->reader_ctx, backoff * RV_NS_PER_MS) != RV_OK)
      break;
    backoff = backoff * 2 > RV_CONSUMER_MAX_BACKOFF_MS ? RV_CONSUMER_MAX_BACKOFF_MS : backoff * 2;
  }
}

int rv_consumer_open(rv_consumer **out, const rv_consumer_opts *opts) {
  if (!opts || !opts->topic || !opts->channel || !opts->handler ||
      !rv_nsq_valid_name(opts->topic, strlen(opts->topic)) ||
      !rv_nsq_valid_name(opts->channel, strlen(opts->channel)) || opts->max_in_flight < 0 ||
      opts->msg_timeout_ms < 0 || (opts->mode != RV_CONSUMER_THREAD_PER_MESSAGE &&
                                   opts->mode != RV_CONSUMER_POOL))
    return RV_EINVAL;
  rv_consumer *c = calloc(1, sizeof *c);
  if (!c)
    return RV_ENOMEM;
  c->o = *opts;
  if (!c->o.port)
    c->o.port = RV_QUEUE_DEFAULT_PORT;
  if (!c->o.max_in_flight)
    c->o.max_in_flight = RV_CONSUMER_DEFAULT_MAX_IN_FLIGHT;
  if (c->o.pool_size <= 0)
    c->o.pool_size = RV_CONSUMER_DEFAULT_POOL_SIZE;
  if (c->o.stop_timeout_ms <= 0)
    c->o.stop_timeout_ms = RV_CONSUMER_DEFAULT_STOP_TIMEOUT_MS;
  c->host = dup_str(opts->host, RV_QUEUE_DEFAULT_HOST);
  c->topic = dup_str(opts->topic, "");
  c->channel = dup_str(opts->channel, "");
  c->client_id = dup_str(opts->client_id, RV_QC_DEFAULT_CLIENT_ID);
  c->o.host = c->o.topic = c->o.channel = c->o.client_id = NULL;
  c->st.msg_timeout_ms = c->o.msg_timeout_ms ? c->o.msg_timeout_ms : RV_NSQ_DEFAULT_MSG_TIMEOUT_MS;
  rv_mutex_init(&c->mu, "queue-consumer");
  rv_cond_init(&c->cv, "queue-consumer");
  rv_mutex_init(&c->wmu, "queue-consumer-write");
  c->root = rv_ctx_new(NULL);
  c->reader_ctx = rv_ctx_new(NULL);
  int rc = (c->host && c->topic && c->channel && c->client_id && c->root && c->reader_ctx)
               ? RV_OK
               : RV_ENOMEM;
  if (rc == RV_OK && c->o.mode == RV_CONSUMER_POOL) {
    c->pool = calloc((size_t)c->o.pool_size, sizeof *c->pool);
    if (!c->pool)
      rc = RV_ENOMEM;
    for (int i = 0; rc == RV_OK && i < c->o.pool_size; i++) {
      char name[RV_THREAD_NAME_MAX];
      snprintf(name, sizeof name, "handler-%d", i + 1);
      rv_mutex_lock(&c->mu);
      c->st.handler_threads_alive++;
      rv_mutex_unlock(&c->mu);
      rc = rv_thread_start(&c->pool[i], name, "queue-handler", cons_pool_thread, c);
      if (rc == RV_OK)
        c->npool++;
      else
        c->st.handler_threads_alive--;
    }
  }
  if (rc == RV_OK)
    rc = rv_thread_start(&c->reader, "queue-sub-rd", "queue-client", cons_reader, c);
  if (rc != RV_OK) {
    c->stopped = true; /* nothing to stop: free what was made */
    rv_consumer_free(c);
    return rc;
  }
  *out = c;
  return RV_OK;
}

int rv_consumer_wait_ready(rv_consumer *c, rv_ctx *ctx) {
  rv_mutex_lock(&c->mu);
  int rc = RV_OK;
  while (!c->ready && rc == RV_OK)
    rc = rv_cond_wait(&c->cv, &c->mu, ctx);
  rv_mutex_unlock(&c->mu);
  return rc;
}

void rv_consumer_stats_get(rv_consumer *c, rv_consumer_stats *out) {
  rv_mutex_lock(&c->mu);
  *out = c->st;
  /* The slots the server holds for us: timed out there, not yet answered,
   * on the live connection that granted hold_slots (a lost connection
   * released its holds). */
  out->held_slots = 0;
  for (cmsg *m = c->head; m; m = m->next)
    if (m->server_timed_out && m->hold && c->conn && m->gen == c->gen)
      out->held_slots++;
  rv_mutex_unlock(&c->mu);
}

/* Wait (mu held) until nothing is in flight or the deadline passes. */
static bool cons_wait_idle_locked(rv_consumer *c, int64_t deadline) {
  while (c->st.in_flight > 0) {
    if (rv_cond_wait_until(&c->cv, &c->mu, NULL, deadline) == RV_ETIMEDOUT)
      return c->st.in_flight == 0;
  }
  return true;
}

int rv_consumer_stop(rv_consumer *c) {
  if (c->stopped)
    return RV_OK;
  c->stopped = true;
  rv_mutex_lock(&c->mu);
  c->stopping = true;
  uint64_t gen = c->gen;
  bool connected = c->conn != NULL;
  rv_mutex_unlock(&c->mu);
  if (connected) {
    rv_nsq_buf b;
    rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
    rv_nsq_enc_cls(&b);
    cons_send(c, gen, &b);
    rv_nsq_buf_free(&b);
  }
  int64_t bound = c->o.stop_timeout_ms * RV_NS_PER_MS;
  rv_mutex_lock(&c->mu);
  bool idle = cons_wait_idle_locked(c, rv_now_ns() + bound);
  if (!idle) {
    for (cmsg *m = c->head; m; m = m->next)
      rv_ctx_cancel(m->ctx, "consumer stopping");
    idle = cons_wait_idle_locked(c, rv_now_ns() + bound);
  }
  rv_mutex_unlock(&c->mu);
  /* Answers are out; now the connection can go.  Closing it cancels the
   * handlers of messages that arrived after CLS was sent (their answers
   * would be dropped: the server requeues them). */
  rv_ctx_cancel(c->reader_ctx, "consumer stopping");
  rv_thread_join(c->reader);
  c->reader = NULL;
  rv_mutex_lock(&c->mu);
  if (idle)
    idle = cons_wait_idle_locked(c, rv_now_ns() + bound);
  c->pool_stop = true;
  rv_cond_broadcast(&c->cv);
  rv_mutex_unlock(&c->mu);
  if (idle) {
    for (int i = 0; i < c->npool; i++)
      rv_thread_join(c->pool[i]);
    c->npool = 0;
    rv_mutex_lock(&c->mu);
    while (c->st.handler_threads_alive > 0 && c->o.mode == RV_CONSUMER_THREAD_PER_MESSAGE)
      rv_cond_wait(&c->cv, &c->mu, NULL); /* past their answers: a moment */
    rv_mutex_unlock(&c->mu);
    cons_reap(c);
  }
  return idle ? RV_OK : RV_ETIMEDOUT;
}

void rv_consumer_free(rv_consumer *c) {
  if (!c)
    return;
  rv_consumer_stop(c);
  if (c->reader) {
    rv_ctx_cancel(c->reader_ctx, "consumer freed");
    rv_thread_join(c->reader);
  }
  /* Handlers that ignored the stop: wait for them, however long. */
  rv_mutex_lock(&c->mu);
  c->pool_stop = true;
  rv_cond_broadcast(&c->cv);
  while (c->st.handler_threads_alive > (uint64_t)c->npool && c->o.mode != RV_CONSUMER_POOL)
    rv_cond_wait(&c->cv, &c->mu, NULL);
  rv_mutex_unlock(&c->mu);
  for (int i = 0; i < c->npool; i++)
    rv_thread_join(c->pool[i]);
  cons_reap(c);
  /* Messages queued for a pool that never ran them. */
  while (c->qhead) {
    cmsg *m = c->qhead;
    c->qhead = m->qnext;
    rv_ctx_free(m->ctx);
    free(m);
  }
  rv_ctx_free(c->reader_ctx);
  rv_ctx_free(c->root);
  rv_mutex_destroy(&c->wmu);
  rv_cond_destroy(&c->cv);
  rv_mutex_destroy(&c->mu);
  free(c->pool);
  free(c->host);
  free(c->topic);
  free(c->channel);
  free(c->client_id);
  free(c);
}

void rv_message_set_requeue_delay(const rv_message *m, int64_t delay_ms) {
  ((rv_message *)m)->requeue_delay_ms = delay_ms;
}

int rv_message_touch(const rv_message *msg) {
  cmsg *m = (cmsg *)msg;
  rv_consumer *c = m->c;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, RV_QC_SMALL_CMD_LIMIT_BYTES);
  int rc = rv_nsq_enc_touch_attempt(&b, m->m.id, m->qualify ? m->m.attempts : 0);
  if (rc == RV_OK)
    rc = cons_send(c, m->gen, &b);
  rv_nsq_buf_free(&b);
  if (rc == RV_OK) {
    rv_mutex_lock(&c->mu);
    m->last_touch_ns = rv_now_ns();
    c->st.touches++;
    rv_mutex_unlock(&c->mu);
  }
  return rc;
}
