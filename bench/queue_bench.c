/*
 * queue_bench: `ravel queue` throughput over the NSQ TCP protocol V2, in the
 * workload of issue 3, next to the nsqd v1.3.0 figures the issue gives.
 *
 * bench/queue_bench.sh starts one `ravel queue --sync always` and one
 * `ravel queue --sync none` on loopback and runs this program with their
 * ports; the program only speaks the protocol (ravel's NSQ codec, client side,
 * over rt's TCP).  nsqd itself cannot be installed here (not in Debian, no Go
 * toolchain), so its column is the measurement, labelled as such, not
 * a measurement of this program.
 *
 * One workload (per round, per server, per connection count):
 *
 *   0. C consumer connections: "  V2", IDENTIFY (feature negotiation), SUB
 *      <topic> bench, RDY 0.  The topic is new for every workload and the
 *      channel exists before the first publish, so it gets every message.
 *      While they wait, the main thread sends each a NOP every few seconds
 *      (heartbeats).
 *   1. publish: P producer connections ("  V2", IDENTIFY) share N messages
 *      in MPUB batches of --batch (200) messages of --msg-bytes (200) bytes.
 *      Each connection keeps up to --inflight (4) MPUBs outstanding (it writes
 *      a batch whenever fewer are unanswered) and counts the OKs; every
 *      message body starts with its own 8-byte sequence number.  Measured:
 *      from the first write to the last OK, N / that time.
 *   2. consume: the C consumer connections each send RDY --rdy (2500), then
 *      read message frames and answer each with a FIN; the FINs of whatever
 *      one read returned are written together, before the next read (as
 *      client libraries batch them).  When all N first deliveries have
 *      arrived, each consumer ends with a round trip that proves the server
 *      has processed its FINs: it sends TOUCH of the last id it finished,
 *      which the server answers, in order, with the non-fatal error
 *      E_TOUCH_FAILED (the id is no longer in flight; nsqd behaves the same).
 *      Measured: from the RDY to the last of those answers, N / that time.
 *
 * Workloads run --rounds (3) times, the servers taking turns (always, none,
 * then none, always, ...); the table shows each median, with every round's
 * figure on the lines above it.  A phase that takes more than
 * --phase-timeout-s (120) fails the run (exit 2).  Redeliveries (attempts > 1)
 * are FIN'd, reported, and not counted.
 *
 * Output: per-round lines, a table (phase | ravel sync always | ravel sync
 * none | nsqd reference | ratios) and one line starting "queue_bench summary:".
 *
 * Threads, clocks and sockets go through src/rt/rt.h (the rt seam).
 */
#include "proto/nsq.h"
#include "rt/rt.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- named constants ----------------------------------------------------------------- */

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_MESSAGES 1000000
#define DEFAULT_BATCH 200
#define DEFAULT_MSG_BYTES 200
#define DEFAULT_RDY 2500
#define DEFAULT_INFLIGHT 4              /* outstanding MPUBs per producer connection */
#define DEFAULT_ROUNDS 3
#define DEFAULT_PHASE_TIMEOUT_S 120
#define DEFAULT_CONNS "4,1"             /* publisher (and consumer) connection counts */
#define MAX_CONFIGS 8
#define MAX_CONNS 64
#define MAX_ROUNDS 50
/* nsqd v1.3.0, measured by the author of issue 3 on this kind of machine (2 cores). */
#define NSQD_REF_PUBLISH 350000.0
#define NSQD_REF_CONSUME 220000.0

#define READ_BUF_BYTES (256 * 1024)
#define SETUP_BOUND_NS (10 * RV_NS_PER_S)        /* connect, IDENTIFY, SUB */
#define IDLE_READ_SLICE_NS (2 * RV_NS_PER_MS)    /* how often an idle consumer looks at the total */
#define WAIT_POLL_NS (10 * RV_NS_PER_MS)         /* main thread, waiting for a phase */
#define KEEPALIVE_NS (5 * RV_NS_PER_S)           /* NOPs to the waiting consumers */
#define HEARTBEAT_MS 30000                       /* asked in IDENTIFY (nsqd's default) */
#define SEQ_BYTES 8                              /* sequence number at the start of a body */
#define CHANNEL "bench"

static const char IDENTIFY_JSON[] =
    "{\"client_id\":\"queue_bench\",\"hostname\":\"localhost\","
    "\"user_agent\":\"ravel-queue_bench/1\",\"feature_negotiation\":true,"
    "\"heartbeat_interval\":30000}";

/* ---- options ---------------------------------------------------------------------------- */

typedef struct opts {
  const char *host;
  uint16_t port[2];          /* [0] sync always, [1] sync none; 0: not run */
  uint64_t messages;
  int batch, msg_bytes, rdy, inflight, rounds;
  int64_t phase_timeout_ns;
  int npubs[MAX_CONFIGS], ncons[MAX_CONFIGS], nconfigs;
  double ref_publish, ref_consume;
} opts;

static opts O;

static const char *const MODE_NAME[2] = {"always", "none"};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "queue_bench: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

/* ---- a client connection ------------------------------------------------------------------ */

typedef struct bconn {
  rv_conn *c;
  rv_nsq_frame_decoder fd;
  rv_nsq_buf out;            /* commands not yet written */
  uint8_t *in;
  size_t have, off;
  char what[48];             /* "sync always, consumer 3" for messages */
} bconn;

static int bc_flush(bconn *b) {
  if (!b->out.len)
    return RV_OK;
  int rc = rv_conn_write_all(b->c, b->out.data, b->out.len, NULL);
  b->out.len = 0;
  return rc;
}

/*
 * The next frame already read: 1 and *f (valid until the next call), 0 if
 * every byte read so far has been decoded, <0 on a protocol error.
 */
static int bc_decode(bconn *b, rv_nsq_frame *f) {
  while (b->off < b->have) {
    size_t used = 0;
    const char *why = NULL;
    int rc = rv_nsq_frame_decode(&b->fd, b->in + b->off, b->have - b->off, &used, f, &why);
    b->off += used;
    if (rc == 1)
      return 1;
    if (rc < 0) {
      fprintf(stderr, "queue_bench: %s: bad frame from the server: %s\n", b->what,
              why ? why : rv_strerror(rc));
      return rc;
    }
  }
  b->have = b->off = 0;
  return 0;
}

/* Write what is pending, then read more (until read_deadline): RV_OK, RV_ETIMEDOUT, <0. */
static int bc_fill(bconn *b, int64_t read_deadline) {
  int rc = bc_flush(b);
  if (rc != RV_OK)
    return rc;
  rv_conn_set_read_deadline(b->c, read_deadline);
  ssize_t r = rv_conn_read(b->c, b->in + b->have, READ_BUF_BYTES - b->have, NULL);
  if (r == 0)
    return RV_ECLOSED;
  if (r < 0)
    return (int)r;
  b->have += (size_t)r;
  return RV_OK;
}

/* The next frame, not a heartbeat (answered with a NOP), within deadline. */
static int bc_next(bconn *b, rv_nsq_frame *f, int64_t deadline) {
  for (;;) {
    int rc = bc_decode(b, f);
    if (rc < 0)
      return rc;
    if (rc == 1) {
      if (f->type == RV_NSQ_FRAME_RESPONSE && f->data.len == 11 &&
          memcmp(f->data.ptr, "_heartbeat_", 11) == 0) {
        rv_nsq_enc_nop(&b->out);
        continue;
      }
      return RV_OK;
    }
    rc = bc_fill(b, deadline);
    if (rc != RV_OK)
      return rc;
  }
}

static void frame_text(const rv_nsq_frame *f, char *buf, size_t n) {
  size_t k = f->data.len < n - 1 ? f->data.len : n - 1;
  memcpy(buf, f->data.ptr, k);
  buf[k] = 0;
}

/* Expect a response frame; its text starts with `want` (NULL: any). */
static void bc_expect(bconn *b, const char *step, const char *want) {
  rv_nsq_frame f;
  int rc = bc_next(b, &f, rv_now_ns() + SETUP_BOUND_NS);
  if (rc != RV_OK)
    die("%s: %s: no answer: %s", b->what, step, rv_strerror(rc));
  char text[256];
  frame_text(&f, text, sizeof text);
  if (f.type != RV_NSQ_FRAME_RESPONSE || (want && strncmp(text, want, strlen(want)) != 0))
    die("%s: %s: unexpected answer (frame type %d): %s", b->what, step, (int)f.type, text);
}

static void bc_open(bconn *b, uint16_t port, const char *what) {
  memset(b, 0, sizeof *b);
  snprintf(b->what, sizeof b->what, "%s", what);
  int rc = rv_tcp_connect(&b->c, O.host, port, NULL);
  if (rc != RV_OK)
    die("%s: cannot connect to %s:%u: %s", what, O.host, port, rv_strerror(rc));
  b->in = malloc(READ_BUF_BYTES);
  if (!b->in)
    die("out of memory");
  rv_nsq_frame_decoder_init(&b->fd, 0);
  rv_nsq_buf_init(&b->out, 0);
  rv_nsq_enc_magic(&b->out);
  rv_nsq_enc_identify_json(&b->out, IDENTIFY_JSON, strlen(IDENTIFY_JSON));
  if ((rc = bc_flush(b)) != RV_OK)
    die("%s: cannot write: %s", what, rv_strerror(rc));
  bc_expect(b, "IDENTIFY", "{");
}

static void bc_close(bconn *b) {
  rv_conn_close(b->c);
  rv_nsq_frame_decoder_free(&b->fd);
  rv_nsq_buf_free(&b->out);
  free(b->in);
  b->c = NULL;
}

/* ---- phase 1: publishers --------------------------------------------------------------------- */

typedef struct phase {
  atomic_int done;              /* threads finished (ok or not) */
  atomic_bool failed;
  _Atomic uint64_t acked;       /* publish: messages acknowledged */
  _Atomic uint64_t received;    /* consume: first deliveries */
  int64_t t0, deadline;
  const char *topic;
} phase;

typedef struct pub_worker {
  bconn *b;
  phase *ph;
  uint64_t first_batch, nbatches;   /* its share of the batches */
  int64_t t_end;                    /* when its last OK arrived */
} pub_worker;

/* The MPUB command for `count` messages, with the offsets of their bodies. */
typedef struct mpub_frame {
  rv_nsq_buf buf;
  size_t *body_off;
  int count;
} mpub_frame;

static void mpub_build(mpub_frame *m, const char *topic, int count) {
  rv_nsq_slice *msgs = calloc((size_t)count, sizeof *msgs);
  uint8_t *body = malloc((size_t)O.msg_bytes);
  m->body_off = calloc((size_t)count, sizeof *m->body_off);
  if (!msgs || !body || !m->body_off)
    die("out of memory");
  for (int i = 0; i < O.msg_bytes; i++)
    body[i] = (uint8_t)('a' + i % 26);
  for (int i = 0; i < count; i++)
    msgs[i] = (rv_nsq_slice){body, (size_t)O.msg_bytes};
  rv_nsq_buf_init(&m->buf, 0);
  if (rv_nsq_enc_mpub(&m->buf, topic, msgs, (size_t)count) != RV_OK)
    die("cannot encode an MPUB of %d x %d bytes", count, O.msg_bytes);
  /* "MPUB <topic>\n" [int32 size] [int32 count] then ([int32 len][body])* */
  size_t off = strlen("MPUB ") + strlen(topic) + 1 + 4 + 4;
  for (int i = 0; i < count; i++) {
    m->body_off[i] = off + 4;
    off += 4 + (size_t)O.msg_bytes;
  }
  if (off != m->buf.len)
    die("MPUB layout is not what this program assumes (%zu != %zu)", off, m->buf.len);
  m->count = count;
  free(msgs);
  free(body);
}

static void mpub_free(mpub_frame *m) {
  rv_nsq_buf_free(&m->buf);
  free(m->body_off);
}

/* Number each body of the batch starting at message `seq`. */
static void mpub_number(mpub_frame *m, uint64_t seq) {
  if (O.msg_bytes < SEQ_BYTES)
    return;
  for (int i = 0; i < m->count; i++) {
    uint64_t v = seq + (uint64_t)i;
    uint8_t *p = m->buf.data + m->body_off[i];
    for (int k = SEQ_BYTES - 1; k >= 0; k--, v >>= 8)
      p[k] = (uint8_t)v;
  }
}

static uint64_t total_batches(void) { return (O.messages + (uint64_t)O.batch - 1) / (uint64_t)O.batch; }

/* Messages in batch i (the last one may be short). */
static int batch_size(uint64_t i) {
  uint64_t rest = O.messages - i * (uint64_t)O.batch;
  return rest < (uint64_t)O.batch ? (int)rest : O.batch;
}

static void pub_main(void *arg) {
  pub_worker *w = arg;
  bconn *b = w->b;
  phase *ph = w->ph;
  mpub_frame full, last;
  mpub_build(&full, ph->topic, O.batch);
  bool short_last = w->nbatches && batch_size(w->first_batch + w->nbatches - 1) != O.batch;
  if (short_last)
    mpub_build(&last, ph->topic, batch_size(w->first_batch + w->nbatches - 1));
  rv_conn_set_write_deadline(b->c, ph->deadline);
  uint64_t sent = 0, oks = 0;
  int rc = RV_OK;
  while (oks < w->nbatches && !atomic_load(&ph->failed)) {
    while (sent < w->nbatches && sent - oks < (uint64_t)O.inflight) {
      uint64_t i = w->first_batch + sent;
      mpub_frame *m = (short_last && sent == w->nbatches - 1) ? &last : &full;
      mpub_number(m, i * (uint64_t)O.batch);
      if ((rc = bc_flush(b)) != RV_OK || (rc = rv_conn_write_all(b->c, m->buf.data, m->buf.len, NULL)))
        goto fail;
      sent++;
    }
    rv_nsq_frame f;
    if ((rc = bc_next(b, &f, ph->deadline)) != RV_OK)
      goto fail;
    if (f.type != RV_NSQ_FRAME_RESPONSE || f.data.len != 2 || memcmp(f.data.ptr, "OK", 2) != 0) {
      char text[256];
      frame_text(&f, text, sizeof text);
      fprintf(stderr, "queue_bench: %s: MPUB answered (frame type %d): %s\n", b->what,
              (int)f.type, text);
      rc = RV_EPROTO;
      goto fail;
    }
    atomic_fetch_add(&ph->acked, (uint64_t)batch_size(w->first_batch + oks));
    oks++;
  }
  w->t_end = rv_now_ns();
  goto out;
fail:
  if (rc != RV_EPROTO)
    fprintf(stderr, "queue_bench: %s: publishing failed after %" PRIu64 " of %" PRIu64
            " OKs: %s\n", b->what, oks, w->nbatches,
            rc == RV_ETIMEDOUT ? "phase timeout" : rv_strerror(rc));
  atomic_store(&ph->failed, true);
out:
  mpub_free(&full);
  if (short_last)
    mpub_free(&last);
  atomic_fetch_add(&ph->done, 1);
}

/* ---- phase 2: consumers ---------------------------------------------------------------------- */

typedef struct con_worker {
  bconn *b;
  phase *ph;
  uint64_t received, redelivered;
  int64_t t_end;                    /* when the server answered its final TOUCH */
} con_worker;

static void con_main(void *arg) {
  con_worker *w = arg;
  bconn *b = w->b;
  phase *ph = w->ph;
  uint8_t last_id[RV_NSQ_MSG_ID_SIZE_BYTES];
  bool have_id = false, barrier_sent = false;
  int rc;
  rv_conn_set_write_deadline(b->c, ph->deadline);
  rv_nsq_enc_rdy(&b->out, O.rdy);
  for (;;) {
    rv_nsq_frame f;
    rc = bc_decode(b, &f);
    if (rc < 0)
      goto fail;
    if (rc == 0) {
      /* Everything read is handled: FINs go out with the next fill. */
      if (!barrier_sent && atomic_load(&ph->received) >= O.messages) {
        if (!have_id) {
          if ((rc = bc_flush(b)) != RV_OK)
            goto fail;
          w->t_end = 0; /* finished nothing: nothing to confirm */
          goto out;
        }
        rv_nsq_enc_touch(&b->out, last_id);
        barrier_sent = true;
      }
      int64_t now = rv_now_ns();
      if (now >= ph->deadline) {
        rc = RV_ETIMEDOUT;
        goto fail;
      }
      int64_t until = barrier_sent ? ph->deadline : now + IDLE_READ_SLICE_NS;
      rc = bc_fill(b, until < ph->deadline ? until : ph->deadline);
      if (rc == RV_ETIMEDOUT)
        continue;
      if (rc != RV_OK)
        goto fail;
      continue;
    }
    switch (f.type) {
    case RV_NSQ_FRAME_MESSAGE:
      if (f.attempts <= 1) {
        w->received++;
        atomic_fetch_add_explicit(&ph->received, 1, memory_order_relaxed);
      } else {
        w->redelivered++;
      }
      rv_nsq_enc_fin(&b->out, f.id);
      memcpy(last_id, f.id, sizeof last_id);
      have_id = true;
      break;
    case RV_NSQ_FRAME_RESPONSE:
      if (f.data.len == 11 && memcmp(f.data.ptr, "_heartbeat_", 11) == 0)
        rv_nsq_enc_nop(&b->out);
      break;
    case RV_NSQ_FRAME_ERROR: {
      char text[256];
      frame_text(&f, text, sizeof text);
      if (barrier_sent && strncmp(text, "E_TOUCH_FAILED", 14) == 0) {
        w->t_end = rv_now_ns();
        goto out;
      }
      fprintf(stderr, "queue_bench: %s: error from the server: %s\n", b->what, text);
      rc = RV_EPROTO;
      goto fail;
    }
    default:
      break;
    }
  }
fail:
  if (rc != RV_EPROTO)
    fprintf(stderr, "queue_bench: %s: consuming failed after %" PRIu64 " messages: %s\n",
            b->what, w->received, rc == RV_ETIMEDOUT ? "phase timeout" : rv_strerror(rc));
  atomic_store(&ph->failed, true);
out:
  atomic_fetch_add(&ph->done, 1);
}

/* ---- one workload ----------------------------------------------------------------------------- */

typedef struct result {
  double pub_rate, con_rate;       /* msgs/s */
  double pub_s, con_s;
  uint64_t redelivered;
} result;

/* Wait for n threads of ph; keep the idle connections alive; fail the run on timeout. */
static void wait_phase(phase *ph, int n, const char *what, bconn *idle, int nidle) {
  int64_t next_nop = rv_now_ns() + KEEPALIVE_NS;
  while (atomic_load(&ph->done) < n) {
    rv_sleep(NULL, WAIT_POLL_NS);
    int64_t now = rv_now_ns();
    if (now > ph->deadline + 5 * RV_NS_PER_S)
      die("%s: phase did not end within %" PRId64 " s", what, O.phase_timeout_ns / RV_NS_PER_S);
    if (now >= next_nop) {
      for (int i = 0; i < nidle; i++) {
        rv_nsq_enc_nop(&idle[i].out);
        bc_flush(&idle[i]);
      }
      next_nop = now + KEEPALIVE_NS;
    }
  }
  if (atomic_load(&ph->failed))
    die("%s failed (see above)", what);
}

static result run_workload(int mode, int npub, int ncon, int round) {
  uint16_t port = O.port[mode];
  char topic[RV_NSQ_NAME_MAX_BYTES + 1], what[96];
  snprintf(topic, sizeof topic, "qbench_%d_r%d_p%dc%d", rv_getpid(), round, npub, ncon);
  bconn *cons = calloc((size_t)ncon, sizeof *cons), *pubs = calloc((size_t)npub, sizeof *pubs);
  if (!cons || !pubs)
    die("out of memory");

  /* 0. consumers first, so that the channel exists before the first message. */
  for (int i = 0; i < ncon; i++) {
    snprintf(what, sizeof what, "sync %s, consumer %d", MODE_NAME[mode], i);
    bc_open(&cons[i], port, what);
    rv_nsq_enc_sub(&cons[i].out, topic, CHANNEL);
    bc_flush(&cons[i]);
    bc_expect(&cons[i], "SUB", "OK");
    rv_nsq_enc_rdy(&cons[i].out, 0);
    bc_flush(&cons[i]);
  }
  for (int i = 0; i < npub; i++) {
    snprintf(what, sizeof what, "sync %s, producer %d", MODE_NAME[mode], i);
    bc_open(&pubs[i], port, what);
  }

  /* 1. publish */
  result r = {0};
  phase ph = {.topic = topic};
  pub_worker *pw = calloc((size_t)npub, sizeof *pw);
  rv_thread **pt = calloc((size_t)npub, sizeof *pt);
  if (!pw || !pt)
    die("out of memory");
  uint64_t nb = total_batches();
  for (int i = 0; i < npub; i++) {
    uint64_t lo = nb * (uint64_t)i / (uint64_t)npub, hi = nb * (uint64_t)(i + 1) / (uint64_t)npub;
    pw[i] = (pub_worker){.b = &pubs[i], .ph = &ph, .first_batch = lo, .nbatches = hi - lo};
  }
  ph.t0 = rv_now_ns();
  ph.deadline = ph.t0 + O.phase_timeout_ns;
  for (int i = 0; i < npub; i++) {
    char tname[RV_THREAD_NAME_MAX];
    snprintf(tname, sizeof tname, "pub-%d", i);
    if (rv_thread_start(&pt[i], tname, "bench", pub_main, &pw[i]) != RV_OK)
      die("cannot start a thread");
  }
  snprintf(what, sizeof what, "sync %s, publish with %d connection(s)", MODE_NAME[mode], npub);
  wait_phase(&ph, npub, what, cons, ncon);
  int64_t t_end = ph.t0;
  for (int i = 0; i < npub; i++) {
    rv_thread_join(pt[i]);
    if (pw[i].t_end > t_end)
      t_end = pw[i].t_end;
  }
  if (atomic_load(&ph.acked) != O.messages)
    die("%s: %" PRIu64 " of %" PRIu64 " messages acknowledged", what, atomic_load(&ph.acked),
        O.messages);
  r.pub_s = (double)(t_end - ph.t0) / RV_NS_PER_S;
  r.pub_rate = (double)O.messages / r.pub_s;
  for (int i = 0; i < npub; i++)
    bc_close(&pubs[i]);

  /* 2. consume */
  phase cph = {.topic = topic};
  con_worker *cw = calloc((size_t)ncon, sizeof *cw);
  rv_thread **ct = calloc((size_t)ncon, sizeof *ct);
  if (!cw || !ct)
    die("out of memory");
  for (int i = 0; i < ncon; i++)
    cw[i] = (con_worker){.b = &cons[i], .ph = &cph};
  cph.t0 = rv_now_ns();
  cph.deadline = cph.t0 + O.phase_timeout_ns;
  for (int i = 0; i < ncon; i++) {
    char tname[RV_THREAD_NAME_MAX];
    snprintf(tname, sizeof tname, "con-%d", i);
    if (rv_thread_start(&ct[i], tname, "bench", con_main, &cw[i]) != RV_OK)
      die("cannot start a thread");
  }
  snprintf(what, sizeof what, "sync %s, consume with %d connection(s)", MODE_NAME[mode], ncon);
  wait_phase(&cph, ncon, what, NULL, 0);
  t_end = cph.t0;
  uint64_t got = 0;
  for (int i = 0; i < ncon; i++) {
    rv_thread_join(ct[i]);
    if (cw[i].t_end > t_end)
      t_end = cw[i].t_end;
    got += cw[i].received;
    r.redelivered += cw[i].redelivered;
  }
  if (got != O.messages)
    die("%s: %" PRIu64 " first deliveries for %" PRIu64 " messages", what, got, O.messages);
  r.con_s = (double)(t_end - cph.t0) / RV_NS_PER_S;
  r.con_rate = (double)O.messages / r.con_s;
  for (int i = 0; i < ncon; i++)
    bc_close(&cons[i]);
  free(pw);
  free(pt);
  free(cw);
  free(ct);
  free(cons);
  free(pubs);
  return r;
}

/* ---- reporting -------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
  double s[MAX_ROUNDS];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* "1,234,567" */
static const char *thousands(double v, char *buf, size_t n) {
  char raw[32];
  snprintf(raw, sizeof raw, "%.0f", v);
  size_t len = strlen(raw), o = 0;
  for (size_t i = 0; i < len && o + 2 < n; i++) {
    buf[o++] = raw[i];
    size_t left = len - i - 1;
    if (left && left % 3 == 0 && o + 2 < n)
      buf[o++] = ',';
  }
  buf[o] = 0;
  return buf;
}

static void parse_list(const char *s, int *v, int *n, const char *name) {
  *n = 0;
  char *copy = strdup(s), *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *end;
    long x = strtol(tok, &end, 10);
    if (*end || x < 1 || x > MAX_CONNS || *n >= MAX_CONFIGS)
      die("%s %s: a comma-separated list of 1..%d (at most %d entries)", name, s, MAX_CONNS,
          MAX_CONFIGS);
    v[(*n)++] = (int)x;
  }
  free(copy);
  if (!*n)
    die("%s is empty", name);
}

static long long num_opt(const char *name, const char *s, long long lo, long long hi) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*end || v < lo || v > hi)
    die("%s %s: must be %lld..%lld", name, s, lo, hi);
  return v;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: queue_bench [--port-always PORT] [--port-none PORT] [options]\n"
          "  Benchmark `ravel queue` over NSQ TCP: MPUB publish, then RDY+FIN consume.\n"
          "  --host ADDR            server address (default %s)\n"
          "  --port-always PORT     a `ravel queue --sync always` server\n"
          "  --port-none PORT       a `ravel queue --sync none` server\n"
          "  --messages N           messages per workload (default %d)\n"
          "  --publishers LIST      producer connections per workload (default %s)\n"
          "  --consumers LIST       consumer connections, paired with --publishers\n"
          "                         (default: the same list)\n"
          "  --batch N              messages per MPUB (default %d)\n"
          "  --msg-bytes N          message size (default %d)\n"
          "  --rdy N                RDY per consumer connection (default %d)\n"
          "  --inflight N           outstanding MPUBs per producer connection (default %d)\n"
          "  --rounds N             repetitions; medians are reported (default %d)\n"
          "  --phase-timeout-s S    fail if a phase takes longer (default %d)\n"
          "  --ref-publish R        nsqd reference publish msgs/s (default %.0f, issue 3)\n"
          "  --ref-consume R        nsqd reference consume msgs/s (default %.0f, issue 3)\n",
          DEFAULT_HOST, DEFAULT_MESSAGES, DEFAULT_CONNS, DEFAULT_BATCH, DEFAULT_MSG_BYTES,
          DEFAULT_RDY, DEFAULT_INFLIGHT, DEFAULT_ROUNDS, DEFAULT_PHASE_TIMEOUT_S,
          NSQD_REF_PUBLISH, NSQD_REF_CONSUME);
}

int main(int argc, char **argv) {
  rv_thread_adopt("main", "bench");
  O = (opts){.host = DEFAULT_HOST,
             .messages = DEFAULT_MESSAGES,
             .batch = DEFAULT_BATCH,
             .msg_bytes = DEFAULT_MSG_BYTES,
             .rdy = DEFAULT_RDY,
             .inflight = DEFAULT_INFLIGHT,
             .rounds = DEFAULT_ROUNDS,
             .phase_timeout_ns = DEFAULT_PHASE_TIMEOUT_S * RV_NS_PER_S,
             .ref_publish = NSQD_REF_PUBLISH,
             .ref_consume = NSQD_REF_CONSUME};
  const char *publishers = DEFAULT_CONNS, *consumers = NULL;
  static const struct option longopts[] = {
      {"host", required_argument, 0, 'H'},       {"port-always", required_argument, 0, 'a'},
      {"port-none", required_argument, 0, 'n'},  {"messages", required_argument, 0, 'm'},
      {"publishers", required_argument, 0, 'p'}, {"consumers", required_argument, 0, 'c'},
      {"batch", required_argument, 0, 'b'},      {"msg-bytes", required_argument, 0, 's'},
      {"rdy", required_argument, 0, 'r'},        {"inflight", required_argument, 0, 'i'},
      {"rounds", required_argument, 0, 'R'},     {"phase-timeout-s", required_argument, 0, 'T'},
      {"ref-publish", required_argument, 0, 'P'}, {"ref-consume", required_argument, 0, 'C'},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'H': O.host = optarg; break;
    case 'a': O.port[0] = (uint16_t)num_opt("--port-always", optarg, 1, 65535); break;
    case 'n': O.port[1] = (uint16_t)num_opt("--port-none", optarg, 1, 65535); break;
    case 'm': O.messages = (uint64_t)num_opt("--messages", optarg, 1, 1000000000LL); break;
    case 'p': publishers = optarg; break;
    case 'c': consumers = optarg; break;
    case 'b': O.batch = (int)num_opt("--batch", optarg, 1, 100000); break;
    case 's': O.msg_bytes = (int)num_opt("--msg-bytes", optarg, 1, 1 << 20); break;
    case 'r': O.rdy = (int)num_opt("--rdy", optarg, 1, 1000000); break;
    case 'i': O.inflight = (int)num_opt("--inflight", optarg, 1, 1000); break;
    case 'R': O.rounds = (int)num_opt("--rounds", optarg, 1, MAX_ROUNDS); break;
    case 'T': O.phase_timeout_ns = num_opt("--phase-timeout-s", optarg, 1, 3600) * RV_NS_PER_S; break;
    case 'P': O.ref_publish = (double)num_opt("--ref-publish", optarg, 1, 1000000000LL); break;
    case 'C': O.ref_consume = (double)num_opt("--ref-consume", optarg, 1, 1000000000LL); break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc)
    die("unexpected argument '%s' (see --help)", argv[optind]);
  if (!O.port[0] && !O.port[1])
    die("give --port-always and/or --port-none (see --help)");
  parse_list(publishers, O.npubs, &O.nconfigs, "--publishers");
  int nc = 0;
  parse_list(consumers ? consumers : publishers, O.ncons, &nc, "--consumers");
  if (nc != O.nconfigs)
    die("--consumers must have as many entries as --publishers");
  if ((int64_t)O.batch * (O.msg_bytes + 4) + 4 > RV_NSQ_DEFAULT_MAX_BODY_SIZE_BYTES)
    die("an MPUB of %d x %d bytes exceeds the server's default max body size", O.batch, O.msg_bytes);

  printf("queue_bench: %" PRIu64 " messages of %d bytes per workload; MPUB batches of %d, up to %d "
         "in flight per producer connection; RDY %d per consumer connection, one FIN per message; "
         "%d round(s), servers taking turns\n",
         O.messages, O.msg_bytes, O.batch, O.inflight, O.rdy, O.rounds);
  fflush(stdout);

  static double pub[MAX_CONFIGS][2][MAX_ROUNDS], con[MAX_CONFIGS][2][MAX_ROUNDS];
  uint64_t redelivered = 0;
  for (int round = 0; round < O.rounds; round++) {
    for (int c = 0; c < O.nconfigs; c++) {
      for (int k = 0; k < 2; k++) {
        int mode = (round % 2 == 0) ? k : 1 - k;
        if (!O.port[mode])
          continue;
        result r = run_workload(mode, O.npubs[c], O.ncons[c], round);
        pub[c][mode][round] = r.pub_rate;
        con[c][mode][round] = r.con_rate;
        redelivered += r.redelivered;
        char a[32], b[32];
        printf("  round %d  sync %-6s  %d producer(s): publish %9s msgs/s (%.2f s)   "
               "%d consumer(s): consume+FIN %9s msgs/s (%.2f s)%s\n",
               round + 1, MODE_NAME[mode], O.npubs[c], thousands(r.pub_rate, a, sizeof a),
               r.pub_s, O.ncons[c], thousands(r.con_rate, b, sizeof b), r.con_s,
               r.redelivered ? "  (redeliveries seen)" : "");
        fflush(stdout);
      }
    }
  }

  printf("\n%-36s | %19s | %19s | %18s | %10s | %10s\n", "phase (median msgs/s)",
         "ravel (sync always)", "ravel (sync none)", "nsqd v1.3.0 (ref*)", "always/ref",
         "none/ref");
  printf("%.*s\n", 36 + 3 + 19 + 3 + 19 + 3 + 18 + 3 + 10 + 3 + 10,
         "----------------------------------------------------------------------------------"
         "----------------------------------------------------------------------------------");
  char summary[1024];
  size_t sl = (size_t)snprintf(summary, sizeof summary, "queue_bench summary: messages=%" PRIu64,
                               O.messages);
  for (int c = 0; c < O.nconfigs; c++) {
    for (int phase_i = 0; phase_i < 2; phase_i++) {
      char label[64];
      if (phase_i == 0)
        snprintf(label, sizeof label, "publish, %d conn%s (MPUB %dx%dB)", O.npubs[c],
                 O.npubs[c] > 1 ? "s" : "", O.batch, O.msg_bytes);
      else
        snprintf(label, sizeof label, "consume, %d conn%s (RDY %d, FIN)", O.ncons[c],
                 O.ncons[c] > 1 ? "s" : "", O.rdy);
      double ref = phase_i == 0 ? O.ref_publish : O.ref_consume;
      double med[2] = {0, 0};
      char cell[2][32], ratio[2][32], refs[32];
      for (int mode = 0; mode < 2; mode++) {
        if (!O.port[mode]) {
          snprintf(cell[mode], sizeof cell[mode], "-");
          snprintf(ratio[mode], sizeof ratio[mode], "-");
          continue;
        }
        med[mode] = median(phase_i == 0 ? pub[c][mode] : con[c][mode], O.rounds);
        thousands(med[mode], cell[mode], sizeof cell[mode]);
        snprintf(ratio[mode], sizeof ratio[mode], "%.2fx", med[mode] / ref);
        if (sl < sizeof summary)
          sl += (size_t)snprintf(summary + sl, sizeof summary - sl, " %s_%s_%d=%.0f",
                                 phase_i == 0 ? "publish" : "consume", MODE_NAME[mode],
                                 phase_i == 0 ? O.npubs[c] : O.ncons[c], med[mode]);
      }
      printf("%-36s | %19s | %19s | %18s | %10s | %10s\n", label, cell[0], cell[1],
             thousands(ref, refs, sizeof refs), ratio[0], ratio[1]);
    }
  }
  printf("\n* nsqd v1.3.0 figures are the ones issue 3 reports for this workload on 2 cores (about\n"
         "  %s msgs/s publish, %s msgs/s consume with FIN); nsqd is not installable here, so they\n"
         "  were not measured by this program. Goal: ratio >= 2.00x.\n",
         thousands(O.ref_publish, (char[32]){0}, 32), thousands(O.ref_consume, (char[32]){0}, 32));
  if (redelivered)
    printf("  note: %" PRIu64 " redeliveries (attempts > 1) were seen and not counted\n", redelivered);
  printf("%s redeliveries=%" PRIu64 "\n", summary, redelivered);
  return 0;
}
