/*
 * The server loop over libuv (see loop.h for the contract).
 *
 * Output batching: rv_sconn_write appends to the connection's `out` buffer
 * and puts the connection on the loop's dirty list.  The dirty list is
 * flushed from a prepare handle (right before the loop blocks in poll, so
 * writes made by timers and wake-ups leave at once) and a check handle (right
 * after poll, so the replies to everything read in this iteration leave in
 * one write).  A flush first tries a direct write; what the kernel does not
 * take moves to the `wbuf` buffer, pinned by one uv_write until it completes,
 * while new output keeps accumulating in `out`.
 *
 * Timers never fire early: libuv's timers count whole milliseconds of a
 * cached clock, so the callback re-checks rv_now_ns() and re-arms for the
 * remainder if it woke before its deadline.
 *
 * Under the simulator (rv__sim_active: a simulated world runs on this OS
 * thread) every public function forwards to loop_sim.c instead.
 */
#include "server/loop.h"
#include "server/loop_buf.h"

#include "rt/sim.h"
#include "server/loop_sim.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* Handles the loop owns carry this tag in ->data's first field on close. */

struct rv_sconn {
  uv_tcp_t tcp;
  rv_loop *loop;
  const rv_sconn_handler *h;
  void *state;
  rv__lbuf in, out, wbuf;
  uv_write_t wreq;
  bool writing, closing, closed_handle, paused, dirty, resume_pending, opened;
  char peer[64];
  rv_sconn *next, *prev;           /* all connections */
  rv_sconn *dirty_next;            /* dirty list */
  rv_sconn *resume_next;           /* resume list */
};

typedef struct listener {
  uv_tcp_t tcp;
  rv_loop *loop;
  const rv_sconn_handler *h;
  void *server;
} listener;

struct rv_loop {
  uv_loop_t uv;
  uv_prepare_t prepare;
  uv_check_t check;
  uv_idle_t idle;
  uv_async_t stop_async;
  uv_signal_t sig_int, sig_term;
  bool signals_on, stopping;
  rv_loop_opts opts;
  rv_sconn *conns;
  rv_sconn *dirty;
  rv_sconn *resume;
  listener *listeners[RV_LOOP_LISTENERS_MAX];
  size_t nlisteners;
};

struct rv_timer {
  uv_timer_t t;
  rv_loop *loop;
  void (*cb)(void *);
  void *arg;
  int64_t deadline_ns;
};

struct rv_wakeup {
  uv_async_t a;
  void (*cb)(void *);
  void *arg;
};

/* ---- closing ---------------------------------------------------------------------- */

static void conn_closed_cb(uv_handle_t *hnd) {
  rv_sconn *c = hnd->data;
  rv_loop *loop = c->loop;
  if (c->prev)
    c->prev->next = c->next;
  else
    loop->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->opened && c->h->on_close)
    c->h->on_close(c->state);
  free(c->in.p);
  free(c->out.p);
  free(c->wbuf.p);
  free(c);
}

static void conn_close_now(rv_sconn *c) {
  if (c->closed_handle)
    return;
  c->closed_handle = true;
  c->closing = true;
  uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

/* ---- output ---------------------------------------------------------------------- */

static void flush(rv_sconn *c);

static void write_done(uv_write_t *req, int status) {
  rv_sconn *c = req->data;
  c->writing = false;
  c->wbuf.len = 0;
  if (status < 0) {
    conn_close_now(c);
    return;
  }
  flush(c);
}

static void flush(rv_sconn *c) {
  if (c->closed_handle || c->writing)
    return;
  if (c->out.len > 0) {
    uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    size_t done = n > 0 ? (size_t)n : 0;
    if (n < 0 && n != UV_EAGAIN) {
      conn_close_now(c);
      return;
    }
    size_t rest = c->out.len - done;
    if (rest > 0) {
      /* Pin the remainder in wbuf for one uv_write; out starts empty again. */
      rv__lbuf tmp = c->wbuf;
      c->wbuf = c->out;
      c->out = tmp;
      c->out.len = 0;
      rv__lbuf_consume(&c->wbuf, done);
      uv_buf_t wb = uv_buf_init(c->wbuf.p, (unsigned)rest);
      c->wreq.data = c;
      if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &wb, 1, write_done) != 0) {
        conn_close_now(c);
        return;
      }
      c->writing = true;
      return;
    }
    c->out.len = 0;
    if (c->h->on_drain && !c->closing)
      c->h->on_drain(c->state);
  }
  if (c->closing && c->out.len == 0 && !c->writing)
    conn_close_now(c);
}

static void flush_dirty(rv_loop *loop) {
  while (loop->dirty) {
    rv_sconn *c = loop->dirty;
    loop->dirty = c->dirty_next;
    c->dirty = false;
    flush(c);
  }
}

static void mark_dirty(rv_sconn *c) {
  if (c->dirty)
    return;
  c->dirty = true;
  c->dirty_next = c->loop->dirty;
  c->loop->dirty = c;
}

void rv_sconn_write(rv_sconn *c, const void *p, size_t len) {
  if (rv__sim_active()) {
    rv__simloop_write(c, p, len);
    return;
  }
  if (c->closing || len == 0)
    return;
  if (!rv__lbuf_reserve(&c->out, len, c->loop->opts.output_max_bytes)) {
    /* A peer that does not read: drop it rather than grow without bound. */
    c->closing = true;
    c->out.len = 0;
    mark_dirty(c);
    return;
  }
  memcpy(c->out.p + c->out.len, p, len);
  c->out.len += len;
  mark_dirty(c);
}

size_t rv_sconn_out_bytes(const rv_sconn *c) {
  return rv__sim_active() ? rv__simloop_out_bytes(c) : c->out.len + c->wbuf.len;
}

void rv_sconn_close(rv_sconn *c) {
  if (rv__sim_active()) {
    rv__simloop_close(c);
    return;
  }
  if (c->closing)
    return;
  c->closing = true;
  uv_read_stop((uv_stream_t *)&c->tcp);
  mark_dirty(c);
}

const char *rv_sconn_peer(const rv_sconn *c) {
  return rv__sim_active() ? rv__simloop_peer(c) : c->peer;
}
rv_loop *rv_sconn_loop(const rv_sconn *c) {
  return rv__sim_active() ? rv__simloop_conn_loop(c) : c->loop;
}

/* ---- input ------------------------------------------------------------------------ */

/* Offer buffered input to the handler; keep what it does not consume. */
static void offer(rv_sconn *c) {
  if (c->paused || c->closing || c->in.len == 0)
    return;
  rv__lbuf_offer(&c->in, c->h->on_data, c->state);
}

static void alloc_cb(uv_handle_t *hnd, size_t suggested, uv_buf_t *out) {
  rv_sconn *c = hnd->data;
  size_t want = suggested < 65536 ? 65536 : suggested;
  size_t room = c->loop->opts.input_max_bytes - c->in.len;
  if (want > room)
    want = room;
  if (want == 0 || !rv__lbuf_reserve(&c->in, want, c->loop->opts.input_max_bytes)) {
    *out = uv_buf_init(NULL, 0);
    return;
  }
  *out = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  rv_sconn *c = s->data;
  if (nread == UV_ENOBUFS) {
    if (c->paused) {
      uv_read_stop(s); /* full while paused: stop reading until resumed */
      return;
    }
    conn_close_now(c); /* a frame larger than the input limit */
    return;
  }
  if (nread < 0) {
    /* EOF or error: answer what was sent, then close. */
    offer(c);
    uv_read_stop(s);
    if (nread == UV_EOF)
      rv_sconn_close(c);
    else
      conn_close_now(c);
    return;
  }
  c->in.len += (size_t)nread;
  offer(c);
}

void rv_sconn_pause(rv_sconn *c) {
  if (rv__sim_active())
    rv__simloop_pause(c);
  else
    c->paused = true;
}

void rv_sconn_resume(rv_sconn *c) {
  if (rv__sim_active()) {
    rv__simloop_resume(c);
    return;
  }
  if (!c->paused || c->closing)
    return;
  c->paused = false;
  if (!c->resume_pending) {
    c->resume_pending = true;
    c->resume_next = c->loop->resume;
    c->loop->resume = c;
    uv_idle_start(&c->loop->idle, NULL);
  }
}

/* ---- loop hooks ---------------------------------------------------------------------- */

static void run_resumes(rv_loop *loop) {
  while (loop->resume) {
    rv_sconn *c = loop->resume;
    loop->resume = c->resume_next;
    c->resume_pending = false;
    if (!c->closing) {
      offer(c);
      if (!c->paused)
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
  }
  uv_idle_stop(&loop->idle);
}

static void prepare_cb(uv_prepare_t *p) {
  rv_loop *loop = p->data;
  run_resumes(loop);
  flush_dirty(loop);
}

static void check_cb(uv_check_t *k) {
  rv_loop *loop = k->data;
  run_resumes(loop);
  flush_dirty(loop);
}

static void idle_cb(uv_idle_t *i) { (void)i; /* keeps poll from blocking while resumes wait */ }

static void on_connection(uv_stream_t *server, int status) {
  listener *l = server->data;
  if (status < 0)
    return;
  rv_sconn *c = calloc(1, sizeof *c);
  if (!c)
    return;
  c->loop = l->loop;
  c->h = l->h;
  uv_tcp_init(&l->loop->uv, &c->tcp);
  c->tcp.data = c;
  c->next = l->loop->conns;
  if (c->next)
    c->next->prev = c;
  l->loop->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close_now(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char host[64] = "?";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else {
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  snprintf(c->peer, sizeof c->peer, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
  c->state = l->h->on_open(l->server, c);
  if (!c->state) {
    conn_close_now(c);
    return;
  }
  c->opened = true;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void do_stop(rv_loop *loop) {
  if (loop->stopping)
    return;
  loop->stopping = true;
  for (size_t i = 0; i < loop->nlisteners; i++)
    uv_close((uv_handle_t *)&loop->listeners[i]->tcp, NULL);
  for (rv_sconn *c = loop->conns; c; c = c->next) {
    flush(c);
    conn_close_now(c);
  }
  uv_stop(&loop->uv);
}

static void stop_cb(uv_async_t *a) { do_stop(a->data); }
static void signal_cb(uv_signal_t *s, int signum) { do_stop(s->data); }

/* ---- public ------------------------------------------------------------------------- */

int rv_loop_new(rv_loop **out, const rv_loop_opts *opts) {
  if (rv__sim_active())
    return rv__simloop_new(out, opts);
  rv_loop *loop = calloc(1, sizeof *loop);
  if (!loop)
    return RV_ENOMEM;
  if (opts)
    loop->opts = *opts;
  if (!loop->opts.input_max_bytes)
    loop->opts.input_max_bytes = RV_LOOP_INPUT_MAX_BYTES;
  if (!loop->opts.output_max_bytes)
    loop->opts.output_max_bytes = RV_LOOP_OUTPUT_MAX_BYTES;
  if (uv_loop_init(&loop->uv) != 0) {
    free(loop);
    return RV_ENOMEM;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that vanished is an error code, not a signal */
  uv_prepare_init(&loop->uv, &loop->prepare);
  loop->prepare.data = loop;
  uv_prepare_start(&loop->prepare, prepare_cb);
  uv_check_init(&loop->uv, &loop->check);
  loop->check.data = loop;
  uv_check_start(&loop->check, check_cb);
  uv_idle_init(&loop->uv, &loop->idle);
  loop->idle.data = loop;
  (void)idle_cb;
  uv_async_init(&loop->uv, &loop->stop_async, stop_cb);
  loop->stop_async.data = loop;
  /* The loop's own handles must not keep uv_run alive after a stop. */
  uv_unref((uv_handle_t *)&loop->prepare);
  uv_unref((uv_handle_t *)&loop->check);
  uv_unref((uv_handle_t *)&loop->stop_async);
  *out = loop;
  return RV_OK;
}

int rv_loop_stop_on_signals(rv_loop *loop) {
  if (rv__sim_active())
    return RV_OK; /* no signals in a simulated world */
  uv_signal_init(&loop->uv, &loop->sig_int);
  uv_signal_init(&loop->uv, &loop->sig_term);
  loop->sig_int.data = loop->sig_term.data = loop;
  uv_signal_start(&loop->sig_int, signal_cb, SIGINT);
  uv_signal_start(&loop->sig_term, signal_cb, SIGTERM);
  uv_unref((uv_handle_t *)&loop->sig_int);
  uv_unref((uv_handle_t *)&loop->sig_term);
  loop->signals_on = true;
  return RV_OK;
}

int rv_loop_listen(rv_loop *loop, const char *host, uint16_t port, const rv_sconn_handler *h,
                   void *server, uint16_t *bound_port) {
  if (rv__sim_active())
    return rv__simloop_listen(loop, host, port, h, server, bound_port);
  if (loop->nlisteners >= RV_LOOP_LISTENERS_MAX)
    return RV_ELIMIT;
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
    return RV_EADDR;
  listener *l = calloc(1, sizeof *l);
  if (!l)
    return RV_ENOMEM;
  l->loop = loop;
  l->h = h;
  l->server = server;
  uv_tcp_init(&loop->uv, &l->tcp);
  l->tcp.data = l;
  if (uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0) != 0 ||
      uv_listen((uv_stream_t *)&l->tcp, RV_LOOP_BACKLOG, on_connection) != 0) {
    uv_close((uv_handle_t *)&l->tcp, NULL);
    uv_run(&loop->uv, UV_RUN_NOWAIT);
    free(l);
    return RV_EADDR;
  }
  if (bound_port) {
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&got, &len);
    *bound_port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                 : ((struct sockaddr_in *)&got)->sin_port);
  }
  loop->listeners[loop->nlisteners++] = l;
  return RV_OK;
}

int rv_loop_run(rv_loop *loop) {
  if (rv__sim_active())
    return rv__simloop_run(loop);
  uv_run(&loop->uv, UV_RUN_DEFAULT); /* until rv_loop_stop, or nothing is left to wait for */
  /* Let close callbacks run (connections report on_close). */
  uv_run(&loop->uv, UV_RUN_NOWAIT);
  return RV_OK;
}

void rv_loop_stop(rv_loop *loop) {
  if (rv__sim_active())
    rv__simloop_stop(loop);
  else
    uv_async_send(&loop->stop_async);
}

void rv_loop_free(rv_loop *loop) {
  if (rv__sim_active()) {
    rv__simloop_free(loop);
    return;
  }
  if (!loop)
    return;
  if (!loop->stopping)
    do_stop(loop);
  uv_close((uv_handle_t *)&loop->prepare, NULL);
  uv_close((uv_handle_t *)&loop->check, NULL);
  uv_close((uv_handle_t *)&loop->idle, NULL);
  uv_close((uv_handle_t *)&loop->stop_async, NULL);
  if (loop->signals_on) {
    uv_close((uv_handle_t *)&loop->sig_int, NULL);
    uv_close((uv_handle_t *)&loop->sig_term, NULL);
  }
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  for (size_t i = 0; i < loop->nlisteners; i++)
    free(loop->listeners[i]);
  uv_loop_close(&loop->uv);
  free(loop);
}

/* ---- timers and wake-ups ------------------------------------------------------------- */

static void timer_cb(uv_timer_t *h) {
  rv_timer *t = h->data;
  int64_t now = rv_now_ns();
  if (now < t->deadline_ns) {
    rv_timer_set(t, t->deadline_ns); /* woke early by rounding: never fire early */
    return;
  }
  t->deadline_ns = RV_NO_DEADLINE;
  t->cb(t->arg);
}

rv_timer *rv_timer_new(rv_loop *loop, void (*cb)(void *), void *arg) {
  if (rv__sim_active())
    return rv__simloop_timer_new(loop, cb, arg);
  rv_timer *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->loop = loop;
  t->cb = cb;
  t->arg = arg;
  t->deadline_ns = RV_NO_DEADLINE;
  uv_timer_init(&loop->uv, &t->t);
  t->t.data = t;
  return t;
}

void rv_timer_set(rv_timer *t, int64_t deadline_ns) {
  if (rv__sim_active()) {
    rv__simloop_timer_set(t, deadline_ns);
    return;
  }
  t->deadline_ns = deadline_ns;
  if (deadline_ns == RV_NO_DEADLINE) {
    uv_timer_stop(&t->t);
    return;
  }
  int64_t left = deadline_ns - rv_now_ns();
  uint64_t ms = left <= 0 ? 0 : (uint64_t)((left + RV_NS_PER_MS - 1) / RV_NS_PER_MS);
  uv_update_time(&t->loop->uv);
  uv_timer_start(&t->t, timer_cb, ms, 0);
}

void rv_timer_stop(rv_timer *t) {
  if (rv__sim_active()) {
    rv__simloop_timer_stop(t);
    return;
  }
  t->deadline_ns = RV_NO_DEADLINE;
  uv_timer_stop(&t->t);
}

static void free_on_close(uv_handle_t *h) { free(h->data); }

void rv_timer_free(rv_timer *t) {
  if (rv__sim_active()) {
    rv__simloop_timer_free(t);
    return;
  }
  if (!t)
    return;
  uv_timer_stop(&t->t);
  uv_close((uv_handle_t *)&t->t, free_on_close);
}

static void wakeup_cb(uv_async_t *a) {
  rv_wakeup *w = a->data;
  w->cb(w->arg);
}

rv_wakeup *rv_wakeup_new(rv_loop *loop, void (*cb)(void *), void *arg) {
  if (rv__sim_active())
    return rv__simloop_wakeup_new(loop, cb, arg);
  rv_wakeup *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->cb = cb;
  w->arg = arg;
  uv_async_init(&loop->uv, &w->a, wakeup_cb);
  w->a.data = w;
  uv_unref((uv_handle_t *)&w->a);
  return w;
}

void rv_wakeup_send(rv_wakeup *w) {
  if (rv__sim_active())
    rv__simloop_wakeup_send(w);
  else
    uv_async_send(&w->a);
}

void rv_wakeup_free(rv_wakeup *w) {
  if (rv__sim_active()) {
    rv__simloop_wakeup_free(w);
    return;
  }
  if (w)
    uv_close((uv_handle_t *)&w->a, free_on_close);
}
