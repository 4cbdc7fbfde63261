/*
 * The server loop (loop.h) under the simulator: listeners and connections on
 * the simulated network (rt/sim.h), timers on virtual time, wake-ups.
 *
 * rv_loop_run becomes a simulated thread of its process that repeats one
 * iteration (accept, read and offer input, resumes, due timers, wake-ups,
 * flush output and close what is closing) and then parks until the next
 * timer deadline.  Whatever needs another iteration unparks it: a network
 * delivery or a new connection (the simulator's notify hooks), a wake-up or a
 * stop from another thread, a write or a resume made during the iteration.
 * Handlers see exactly the contract of loop.c: a prefix-consuming on_data,
 * output flushed once per iteration, on_drain after a flush, on_close last.
 */
#include "server/loop_sim.h"
#include "server/loop_buf.h"

#include "rt/sim.h"

#include <stdlib.h>
#include <string.h>


typedef struct simloop simloop;

typedef struct ssconn {
  simloop *loop;
  rv_conn *conn;
  const rv_sconn_handler *h;
  void *state;
  rv__lbuf in, out;
  bool closing, paused, pending_in, opened, eof;
  struct ssconn *next, *prev;
} ssconn;

typedef struct slistener {
  simloop *loop;
  rv_listener *l;
  const rv_sconn_handler *h;
  void *server;
  bool pending;
} slistener;

typedef struct stimer {
  simloop *loop;
  void (*cb)(void *);
  void *arg;
  int64_t deadline_ns;
  uint64_t seq;
  struct stimer *next, *prev;
} stimer;

typedef struct swakeup {
  simloop *loop;
  void (*cb)(void *);
  void *arg;
  bool pending;
  struct swakeup *next, *prev;
} swakeup;

struct simloop {
  rv_loop_opts opts;
  rv_thread *thread; /* the thread in rv_loop_run, NULL outside it */
  bool stopping, stopped;
  ssconn *conns, *conns_tail;
  slistener listeners[RV_LOOP_LISTENERS_MAX];
  size_t nlisteners;
  stimer *timers;
  uint64_t timer_seq;
  swakeup *wakeups;
};

#define SL(x) ((simloop *)(x))
#define SC(x) ((ssconn *)(x))
#define ST(x) ((stimer *)(x))
#define SW(x) ((swakeup *)(x))

static void kick(simloop *L) {
  if (L->thread)
    rv__sim_unpark(L->thread);
}

/* ---- connections ------------------------------------------------------------------ */

static void conn_free_now(ssconn *c) {
  simloop *L = c->loop;
  if (c->prev)
    c->prev->next = c->next;
  else
    L->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    L->conns_tail = c->prev;
  rv_conn_close(c->conn);
  if (c->opened && c->h->on_close)
    c->h->on_close(c->state);
  free(c->in.p);
  free(c->out.p);
  free(c);
}

static void conn_notify(void *arg) {
  ssconn *c = arg;
  c->pending_in = true;
  kick(c->loop);
}

static void offer(ssconn *c) {
  if (c->paused || c->closing || c->in.len == 0)
    return;
  rv__lbuf_offer(&c->in, c->h->on_data, c->state);
}

/* Read what has arrived into the input buffer (bounded) and offer it. */
static void pump(ssconn *c) {
  size_t max = c->loop->opts.input_max_bytes;
  while (!c->closing && !c->eof) {
    if (c->in.len >= max) {
      if (!c->paused) {
        c->closing = true; /* a frame larger than the input limit */
        c->out.len = 0;
      }
      return;
    }
    size_t want = max - c->in.len < 65536 ? max - c->in.len : 65536;
    if (!rv__lbuf_reserve(&c->in, want, max)) {
      c->closing = true;
      return;
    }
    ssize_t n = rv__sim_conn_read_nb(c->conn, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (n == RV_EBUSY)
      return;
    if (n <= 0) {
      /* EOF or reset: answer what was sent, then close. */
      c->eof = true;
      offer(c);
      rv_sconn_close((rv_sconn *)c);
      return;
    }
    c->in.len += (size_t)n;
    offer(c);
  }
}

void rv__simloop_write(rv_sconn *sc, const void *p, size_t len) {
  ssconn *c = SC(sc);
  if (c->closing || len == 0)
    return;
  if (!rv__lbuf_reserve(&c->out, len, c->loop->opts.output_max_bytes)) {
    c->closing = true; /* a peer that does not read: drop it */
    c->out.len = 0;
    kick(c->loop);
    return;
  }
  memcpy(c->out.p + c->out.len, p, len);
  c->out.len += len;
  kick(c->loop);
}

size_t rv__simloop_out_bytes(const rv_sconn *c) { return SC(c)->out.len; }

void rv__simloop_close(rv_sconn *sc) {
  ssconn *c = SC(sc);
  if (c->closing)
    return;
  c->closing = true;
  kick(c->loop);
}

void rv__simloop_pause(rv_sconn *c) { SC(c)->paused = true; }

void rv__simloop_resume(rv_sconn *sc) {
  ssconn *c = SC(sc);
  if (!c->paused || c->closing)
    return;
  c->paused = false;
  c->pending_in = true; /* offer buffered input on the next iteration */
  kick(c->loop);
}

const char *rv__simloop_peer(const rv_sconn *c) { return rv_conn_peer(SC(c)->conn); }
rv_loop *rv__simloop_conn_loop(const rv_sconn *c) { return (rv_loop *)SC(c)->loop; }

static void flush(ssconn *c) {
  if (c->out.len > 0) {
    if (rv__sim_conn_write_nb(c->conn, c->out.p, c->out.len) != RV_OK)
      c->closing = true;
    c->out.len = 0;
    if (c->h->on_drain && !c->closing)
      c->h->on_drain(c->state);
  }
  if (c->closing && c->out.len == 0)
    conn_free_now(c);
}

/* ---- the loop ----------------------------------------------------------------------- */

static void listener_notify(void *arg) {
  slistener *s = arg;
  s->pending = true;
  kick(s->loop);
}

static void accept_all(simloop *L) {
  for (size_t i = 0; i < L->nlisteners; i++) {
    slistener *s = &L->listeners[i];
    rv_conn *conn;
    while (rv__sim_listener_accept_nb(s->l, &conn) == RV_OK) {
      ssconn *c = calloc(1, sizeof *c);
      if (!c) {
        rv_conn_close(conn);
        continue;
      }
      c->loop = L;
      c->conn = conn;
      c->h = s->h;
      c->prev = L->conns_tail;
      if (L->conns_tail)
        L->conns_tail->next = c;
      else
        L->conns = c;
      L->conns_tail = c;
      rv__sim_conn_notify(conn, conn_notify, c);
      c->state = s->h->on_open(s->server, (rv_sconn *)c);
      if (!c->state) {
        conn_free_now(c);
        continue;
      }
      c->opened = true;
      c->pending_in = true;
    }
    s->pending = false;
  }
}

static void fire_timers(simloop *L) {
  int64_t now = rv_now_ns();
  for (;;) {
    stimer *due = NULL;
    for (stimer *t = L->timers; t; t = t->next)
      if (t->deadline_ns <= now &&
          (!due || t->deadline_ns < due->deadline_ns ||
           (t->deadline_ns == due->deadline_ns && t->seq < due->seq)))
        due = t;
    if (!due)
      return;
    due->deadline_ns = RV_NO_DEADLINE;
    due->cb(due->arg);
  }
}

static void fire_wakeups(simloop *L) {
  for (;;) {
    swakeup *w = L->wakeups;
    while (w && !w->pending)
      w = w->next;
    if (!w)
      return;
    w->pending = false;
    w->cb(w->arg);
  }
}

static void iterate(simloop *L) {
  accept_all(L);
  for (ssconn *c = L->conns; c; c = c->next)
    if (c->pending_in) {
      c->pending_in = false;
      offer(c);
      pump(c);
    }
  fire_timers(L);
  fire_wakeups(L);
  for (ssconn *c = L->conns, *next; c; c = next) {
    next = c->next;
    flush(c);
  }
}

static int64_t next_deadline(simloop *L) {
  int64_t d = RV_NO_DEADLINE;
  for (stimer *t = L->timers; t; t = t->next)
    if (t->deadline_ns < d)
      d = t->deadline_ns;
  return d;
}

static void do_stop(simloop *L) {
  if (L->stopped)
    return;
  L->stopped = L->stopping = true;
  for (size_t i = 0; i < L->nlisteners; i++)
    rv_listener_close(L->listeners[i].l);
  L->nlisteners = 0;
  while (L->conns) {
    ssconn *c = L->conns;
    c->closing = true;
    flush(c); /* frees it */
  }
}

int rv__simloop_new(rv_loop **out, const rv_loop_opts *opts) {
  simloop *L = calloc(1, sizeof *L);
  if (!L)
    return RV_ENOMEM;
  if (opts)
    L->opts = *opts;
  if (!L->opts.input_max_bytes)
    L->opts.input_max_bytes = RV_LOOP_INPUT_MAX_BYTES;
  if (!L->opts.output_max_bytes)
    L->opts.output_max_bytes = RV_LOOP_OUTPUT_MAX_BYTES;
  *out = (rv_loop *)L;
  return RV_OK;
}

int rv__simloop_run(rv_loop *loop) {
  simloop *L = SL(loop);
  rv_thread *self = rv_thread_self();
  L->thread = self;
  while (!L->stopping) {
    iterate(L);
    if (L->stopping)
      break;
    rv__sim_park(self, next_deadline(L));
  }
  L->thread = NULL;
  do_stop(L);
  return RV_OK;
}

void rv__simloop_stop(rv_loop *loop) {
  simloop *L = SL(loop);
  L->stopping = true;
  kick(L);
}

void rv__simloop_free(rv_loop *loop) {
  simloop *L = SL(loop);
  if (!L)
    return;
  do_stop(L);
  while (L->timers) {
    stimer *t = L->timers;
    L->timers = t->next;
    t->loop = NULL; /* freed by rv_timer_free, which the owner still calls */
    t->next = t->prev = NULL;
  }
  while (L->wakeups) {
    swakeup *w = L->wakeups;
    L->wakeups = w->next;
    w->loop = NULL;
    w->next = w->prev = NULL;
  }
  free(L);
}

int rv__simloop_listen(rv_loop *loop, const char *host, uint16_t port, const rv_sconn_handler *h,
                       void *server, uint16_t *bound_port) {
  simloop *L = SL(loop);
  if (L->nlisteners >= RV_LOOP_LISTENERS_MAX)
    return RV_ELIMIT;
  rv_listener *l;
  int rc = rv_tcp_listen(&l, host, port, RV_LOOP_BACKLOG);
  if (rc != RV_OK)
    return rc;
  slistener *s = &L->listeners[L->nlisteners++];
  s->loop = L;
  s->l = l;
  s->h = h;
  s->server = server;
  rv__sim_listener_notify(l, listener_notify, s);
  if (bound_port)
    *bound_port = rv_listener_port(l);
  return RV_OK;
}

/* ---- timers and wake-ups ------------------------------------------------------------------ */

rv_timer *rv__simloop_timer_new(rv_loop *loop, void (*cb)(void *), void *arg) {
  simloop *L = SL(loop);
  stimer *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->loop = L;
  t->cb = cb;
  t->arg = arg;
  t->deadline_ns = RV_NO_DEADLINE;
  t->seq = ++L->timer_seq;
  t->next = L->timers;
  if (L->timers)
    L->timers->prev = t;
  L->timers = t;
  return (rv_timer *)t;
}

void rv__simloop_timer_set(rv_timer *tm, int64_t deadline_ns) {
  stimer *t = ST(tm);
  t->deadline_ns = deadline_ns;
  if (t->loop)
    kick(t->loop); /* the park deadline may have to come earlier */
}

void rv__simloop_timer_stop(rv_timer *tm) { ST(tm)->deadline_ns = RV_NO_DEADLINE; }

void rv__simloop_timer_free(rv_timer *tm) {
  stimer *t = ST(tm);
  if (!t)
    return;
  if (t->loop) {
    if (t->prev)
      t->prev->next = t->next;
    else
      t->loop->timers = t->next;
    if (t->next)
      t->next->prev = t->prev;
  }
  free(t);
}

rv_wakeup *rv__simloop_wakeup_new(rv_loop *loop, void (*cb)(void *), void *arg) {
  simloop *L = SL(loop);
  swakeup *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->loop = L;
  w->cb = cb;
  w->arg = arg;
  w->next = L->wakeups;
  if (L->wakeups)
    L->wakeups->prev = w;
  L->wakeups = w;
  return (rv_wakeup *)w;
}

void rv__simloop_wakeup_send(rv_wakeup *wk) {
  swakeup *w = SW(wk);
  w->pending = true;
  if (w->loop)
    kick(w->loop);
}

void rv__simloop_wakeup_free(rv_wakeup *wk) {
  swakeup *w = SW(wk);
  if (!w)
    return;
  if (w->loop) {
    if (w->prev)
      w->prev->next = w->next;
    else
      w->loop->wakeups = w->next;
    if (w->next)
      w->next->prev = w->prev;
  }
  free(w);
}
