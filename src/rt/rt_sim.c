/*
 * The simulation backend of rt (see sim.h and docs/sim.md).
 *
 * One OS thread runs a world.  rv_threads are coroutines (ucontext, fixed
 * stacks with a guard page).  The scheduler (rv_sim_run, on the caller's
 * stack) repeatedly picks a runnable coroutine with the world's PRNG and
 * switches to it; the coroutine runs until it parks (rv__park: a lock wait,
 * a condition wait, a sleep, a network wait), then control comes back.  When
 * nothing is runnable, virtual time jumps to the earliest event in a heap
 * ordered by (time, sequence): park deadlines, network segment deliveries,
 * connection handshakes, scheduled callbacks.
 *
 * rv_rawmu is a no-op under the simulator (rt_os.c skips it): one OS thread
 * and no preemption inside a coroutine, so a raw critical section (which
 * never spans a park) is atomic by construction.
 *
 * This file and rt_os.c are the only ones that touch OS primitives.
 */
#define _GNU_SOURCE
#include "rt/sim.h"

#include "obs/registry.h"
#include "rt/rt_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define SIM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIM_TSAN 1
#endif
#endif
#ifdef SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif
#ifdef SIM_TSAN
#include <sanitizer/tsan_interface.h>
#endif

__thread rv_sim_world *rv__sim_tls __attribute__((tls_model("initial-exec")));

/* A segment held by a partition is offered again after this long (TCP's retransmission). */
#define SIM_RETRANSMIT_NS (200 * RV_NS_PER_MS)
#define SIM_EPHEMERAL_PORT 40000
/* Free stacks kept for reuse.  The service scenario's replicas start and join handler
 * threads by the hundred; with 64 kept, munmap/mmap and the page faults of fresh stacks
 * were a third of its wall time.  Only touched pages cost memory. */
#define SIM_STACKS_CACHED 1024
/* Pids of a restarted process: 100 + index + this * incarnation (so pids never repeat). */
#define SIM_PID_STRIDE 1000
/* Loss draws are per million; a loss probability is capped so retransmission ends. */
#define SIM_PPM 1000000u
#define SIM_LOSS_MAX 0.9
/* Exponential backoff of a segment lost again and again stops doubling here. */
#define SIM_RTO_BACKOFF_MAX_NS (60 * RV_NS_PER_S)

/* ---- types ------------------------------------------------------------------------ */

typedef enum { C_RUNNABLE, C_RUNNING, C_PARKED, C_DONE } coro_state;

/*
 * Switching.  swapcontext saves and restores the signal mask, a system call on
 * every switch (it dominated the simulator's wall time).  Outside the
 * sanitizer builds, a coroutine is entered the first time with setcontext
 * (one mask restore per coroutine) and from then on switched with
 * _setjmp/_longjmp, which leave the mask alone: simulated threads never change
 * it.  ASan and TSan builds keep swapcontext, which their fiber annotations
 * are documented against.
 */
#if !defined(SIM_ASAN) && !defined(SIM_TSAN)
#define SIM_FAST_SWITCH 1
#endif

typedef struct coro {
  rv_thread *t;
  rv_sim_proc *proc;
  rv_sim_world *w;
  ucontext_t uc;
#ifdef SIM_FAST_SWITCH
  jmp_buf jb;
  bool entered; /* the first switch in used setcontext; later ones _longjmp */
#endif
  char *map; /* guard page + stack */
  void (*fn)(void *);
  void *arg;
  coro_state state;
  bool permit;
  uint64_t park_gen;
  int wakes;  /* deadline events in the heap that point here */
  bool dead;  /* joined: freed when the last of those events is popped */
  bool killed; /* its process crashed: never runs again (rv_sim_proc_crash) */
  uint64_t id;
  rv_thread *joiner;
  struct coro *all_next, *all_prev;
#ifdef SIM_ASAN
  void *fake_stack;
#endif
#ifdef SIM_TSAN
  void *fiber;
#endif
} coro;

typedef enum { EV_WAKE, EV_DELIVER, EV_SYN, EV_SYNACK, EV_CALL, EV_RESET_TICK } ev_kind;

typedef struct ev {
  int64_t at;
  uint64_t seq;
  ev_kind kind;
  int dir;
  void *p;
  void *arg;
  uint64_t gen;
} ev;

typedef struct seg {
  struct seg *next;
  int64_t at;
  size_t len;
  bool fin;
  bool rst; /* a reset: the receiver's reads and writes fail from then on */
  char data[];
} seg;

typedef struct sim_link sim_link;

typedef struct sim_ep {
  sim_link *link;
  int side;
  rv_sim_proc *proc;
  char *rx;
  size_t rx_off, rx_len, rx_cap;
  bool rx_eof, open, wr_shut;
  bool rst;      /* reset (RST received, or rv_sim_reset_conns): reads and writes fail */
  bool killed;   /* closed by its process's crash: input arriving now answers RST */
  bool rst_sent; /* that RST went out already */
  rv_thread *reader;
  void (*notify)(void *);
  void *notify_arg;
  int64_t rd_deadline, wr_deadline;
  char peer[64];
} sim_ep;

struct sim_link {
  rv_sim_world *w;
  uint64_t id;
  int refs; /* open endpoints + scheduled deliveries */
  sim_ep ep[2];
  struct {
    seg *head, *tail;
    bool scheduled;
    int64_t last_at;
  } dir[2]; /* dir[i]: from ep[i] to ep[1 - i] */
  sim_link *next, *prev;
};

typedef struct sim_listener {
  rv_sim_world *w;
  rv_sim_proc *proc;
  uint16_t port;
  sim_ep **q;
  size_t qhead, qlen, qcap;
  rv_thread *accepter;
  void (*notify)(void *);
  void *notify_arg;
  struct sim_listener *next, *prev;
} sim_listener;

enum { PC_PENDING = 1 };

typedef struct pconn {
  rv_sim_proc *from, *to;
  uint16_t port, from_port;
  int result; /* PC_PENDING, RV_OK, RV_ECONNREFUSED */
  bool abandoned;
  rv_thread *waiter;
  sim_link *link;
  char host[64];
} pconn;

struct rv_sim_proc {
  rv_sim_world *w;
  int index, pid, next_tid;
  uint16_t next_port;
  char name[RV_SIM_NAME_MAX];
  char addr[RV_SIM_NAME_MAX];
  rv_registry *reg;
  bool dead;           /* crashed and not restarted */
  uint32_t incarnation; /* 0 for the first; +1 per rv_sim_proc_restart */
  rv_registry **old_regs; /* registries of dead incarnations (their threads' records) */
  int nold_regs;
};

typedef enum {
  TR_RUN,
  TR_WAKE,
  TR_DELIVER,
  TR_CONNECT,
  TR_CALL,
  TR_NOTE,
  TR_SPAWN,
  TR_CRASH,
  TR_FAULT
} tr_kind;

typedef struct tr_entry {
  int64_t at;
  tr_kind kind;
  uint64_t a, b;
  char text[80];
} tr_entry;

struct rv_sim_world {
  rv_sim_opts opts;
  rv_rng rng;
  int64_t now;
  uint64_t hash, events, seq, next_coro_id, next_link_id;
  ev *heap;
  size_t nheap, capheap;
  coro **runq;
  size_t nrun, caprun;
  coro *current;
  coro *all;
  int alive;
  bool stop, running;
  ucontext_t main_uc;
#ifdef SIM_FAST_SWITCH
  jmp_buf main_jb;
#endif
#ifdef SIM_ASAN
  const void *main_bottom;
  size_t main_size;
  void *main_fake;
#endif
#ifdef SIM_TSAN
  void *main_fiber;
#endif
  rv_sim_proc *procs[RV_SIM_PROCS_MAX];
  int nprocs;
  bool cut[RV_SIM_PROCS_MAX][RV_SIM_PROCS_MAX];
  sim_link *links;
  sim_listener *listeners;
  char *stacks[SIM_STACKS_CACHED];
  int nstacks;
  void (*hook)(void *);
  void *hook_arg;
  bool reset_tick; /* an EV_RESET_TICK is in the heap */
  tr_entry trace[RV_SIM_TRACE_KEEP];
  uint64_t ntrace;
  void *disk; /* the simulated disk (fs_sim.c), NULL until first used */
};

static size_t page_size(void) {
  static size_t ps;
  if (!ps)
    ps = (size_t)sysconf(_SC_PAGESIZE);
  return ps;
}

static void die(const char *what) {
  fprintf(stderr, "ravel sim: %s\n", what);
  abort();
}

static void handle_event(rv_sim_world *w, ev *e);
static void reset_tick(rv_sim_world *w);
static void reset_tick_arm(rv_sim_world *w);

static rv_sim_world *world(void) {
  rv_sim_world *w = rv__sim_tls;
  if (!w)
    die("simulator call outside rv_sim_run");
  return w;
}

static coro *self_coro(void) {
  rv_sim_world *w = world();
  if (!w->current)
    die("blocking rt call on the simulator's scheduler (not inside a simulated thread)");
  return w->current;
}

/* ---- trace and hash ----------------------------------------------------------------- */

static inline void mix(rv_sim_world *w, uint64_t x) {
  uint64_t h = (w->hash ^ x) * UINT64_C(0x100000001b3);
  w->hash = h ^ (h >> 29);
}

static tr_entry *trace_add(rv_sim_world *w, tr_kind k, uint64_t a, uint64_t b) {
  w->events++;
  mix(w, (uint64_t)k);
  mix(w, a);
  mix(w, b);
  mix(w, (uint64_t)w->now);
  tr_entry *e = &w->trace[w->ntrace++ % RV_SIM_TRACE_KEEP];
  e->at = w->now;
  e->kind = k;
  e->a = a;
  e->b = b;
  e->text[0] = 0;
  return e;
}

void rv_sim_note(rv_sim_world *w, const char *fmt, ...) {
  char text[sizeof w->trace[0].text];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  uint64_t h = 0;
  for (const char *p = text; *p; p++)
    h = (h ^ (uint8_t)*p) * UINT64_C(0x100000001b3);
  tr_entry *e = trace_add(w, TR_NOTE, h, 0);
  memcpy(e->text, text, sizeof text);
}

/* A delivery's trace value: its length, and flags for a FIN or an RST. */
#define SIM_TR_FIN (UINT64_C(1) << 31)
#define SIM_TR_RST (UINT64_C(1) << 30)
#define SIM_TR_LEN_MASK (SIM_TR_RST - 1)

void rv_sim_trace_print(const rv_sim_world *w, FILE *f, int n) {
  if (n > RV_SIM_TRACE_KEEP)
    n = RV_SIM_TRACE_KEEP;
  uint64_t first = w->ntrace > (uint64_t)n ? w->ntrace - (uint64_t)n : 0;
  static const char *names[] = {"run",  "wake",  "deliver", "connect", "call",
                                "note", "spawn", "crash",   "fault"};
  for (uint64_t i = first; i < w->ntrace; i++) {
    const tr_entry *e = &w->trace[i % RV_SIM_TRACE_KEEP];
    fprintf(f, "  %12.6fs %-8s %s", (double)e->at / RV_NS_PER_S, names[e->kind], e->text);
    if (e->kind == TR_DELIVER && (e->b & SIM_TR_LEN_MASK))
      fprintf(f, " (%" PRIu64 " bytes)", e->b & SIM_TR_LEN_MASK); /* the rest: FIN/RST flags */
    fprintf(f, "\n");
  }
}

/* ---- event heap ---------------------------------------------------------------------- */

static bool ev_less(const ev *a, const ev *b) {
  return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void ev_push(rv_sim_world *w, ev e) {
  if (w->nheap == w->capheap) {
    size_t cap = w->capheap ? w->capheap * 2 : 256;
    ev *h = realloc(w->heap, cap * sizeof *h);
    if (!h)
      die("out of memory (event heap)");
    w->heap = h;
    w->capheap = cap;
  }
  e.seq = w->seq++;
  size_t i = w->nheap++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_less(&e, &w->heap[parent]))
      break;
    w->heap[i] = w->heap[parent];
    i = parent;
  }
  w->heap[i] = e;
}

static ev ev_pop(rv_sim_world *w) {
  ev top = w->heap[0];
  ev last = w->heap[--w->nheap];
  size_t i = 0, n = w->nheap;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const ev *best = &last;
    if (l < n && ev_less(&w->heap[l], best)) {
      m = l;
      best = &w->heap[l];
    }
    if (r < n && ev_less(&w->heap[r], best))
      m = r;
    if (m == i)
      break;
    w->heap[i] = w->heap[m];
    i = m;
  }
  if (n > 0)
    w->heap[i] = last;
  return top;
}

static void schedule(rv_sim_world *w, int64_t at, ev_kind k, void *p, int dir, void *arg,
                     uint64_t gen) {
  ev_push(w, (ev){.at = at < w->now ? w->now : at, .kind = k, .p = p, .dir = dir, .arg = arg,
                  .gen = gen});
}

void rv_sim_at(rv_sim_world *w, int64_t at_ns, void (*fn)(void *), void *arg) {
  /* Remember which incarnation of which process asked: a callback of a process that crashed
   * since then is dropped (it would run into dead state).  dir 0: the scheduler asked. */
  coro *c = w->current;
  schedule(w, at_ns, EV_CALL, (void *)fn, c ? c->proc->index + 1 : 0, arg,
           c ? c->proc->incarnation : 0);
}

/* ---- world and processes --------------------------------------------------------------- */

int rv_sim_world_new(rv_sim_world **out, const rv_sim_opts *opts) {
  rv_sim_world *w = calloc(1, sizeof *w);
  if (!w)
    return RV_ENOMEM;
  if (opts)
    w->opts = *opts;
  if (w->opts.latency_min_ns <= 0)
    w->opts.latency_min_ns = 100 * RV_NS_PER_US;
  if (w->opts.latency_max_ns < w->opts.latency_min_ns)
    w->opts.latency_max_ns = w->opts.latency_min_ns > 2 * RV_NS_PER_MS ? w->opts.latency_min_ns
                                                                        : 2 * RV_NS_PER_MS;
  if (w->opts.faults.loss > SIM_LOSS_MAX)
    w->opts.faults.loss = SIM_LOSS_MAX;
  rv_rng_seed(&w->rng, w->opts.seed);
  w->hash = UINT64_C(0xcbf29ce484222325) ^ w->opts.seed;
  reset_tick_arm(w);
  *out = w;
  return RV_OK;
}

rv_sim_proc *rv_sim_proc_new(rv_sim_world *w, const char *name) {
  if (w->nprocs >= RV_SIM_PROCS_MAX)
    return NULL;
  rv_sim_proc *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->reg = rv_registry_new();
  if (!p->reg) {
    free(p);
    return NULL;
  }
  p->w = w;
  p->index = w->nprocs;
  p->pid = 100 + p->index;
  p->next_port = SIM_EPHEMERAL_PORT;
  snprintf(p->name, sizeof p->name, "%s", name);
  snprintf(p->addr, sizeof p->addr, "10.0.0.%d", p->index + 1);
  w->procs[w->nprocs++] = p;
  return p;
}

const char *rv_sim_proc_name(const rv_sim_proc *p) { return p->name; }
const char *rv_sim_proc_addr(const rv_sim_proc *p) { return p->addr; }
int rv_sim_proc_pid(const rv_sim_proc *p) { return p->pid; }
rv_registry *rv_sim_proc_registry(const rv_sim_proc *p) { return p->reg; }
rv_sim_proc *rv_sim_proc_current(void) {
  rv_sim_world *w = rv__sim_tls;
  return w && w->current ? w->current->proc : NULL;
}

int64_t rv_sim_now(const rv_sim_world *w) { return w->now; }
uint64_t rv_sim_hash(const rv_sim_world *w) { return w->hash; }
uint64_t rv_sim_events(const rv_sim_world *w) { return w->events; }
int rv_sim_threads_alive(const rv_sim_world *w) { return w->alive; }
rv_rng *rv_sim_rng(rv_sim_world *w) { return &w->rng; }
void **rv__sim_world_disk(rv_sim_world *w) { return &w->disk; }
void rv_sim_stop(rv_sim_world *w) { w->stop = true; }
void rv_sim_set_step_hook(rv_sim_world *w, void (*fn)(void *), void *arg) {
  w->hook = fn;
  w->hook_arg = arg;
}

void rv_sim_partition(rv_sim_world *w, rv_sim_proc *a, rv_sim_proc *b, bool cut) {
  w->cut[a->index][b->index] = w->cut[b->index][a->index] = cut;
  rv_sim_note(w, "%s %s <-> %s", cut ? "partition" : "heal", a->name, b->name);
}

static bool cut_between(rv_sim_world *w, rv_sim_proc *a, rv_sim_proc *b) {
  return w->cut[a->index][b->index];
}

static int64_t latency(rv_sim_world *w) {
  uint64_t span = (uint64_t)(w->opts.latency_max_ns - w->opts.latency_min_ns);
  return w->opts.latency_min_ns + (int64_t)(span ? rv_rng_below(&w->rng, span + 1) : 0);
}

/* ---- coroutines ------------------------------------------------------------------------- */

static void runq_add(rv_sim_world *w, coro *c) {
  if (w->nrun == w->caprun) {
    size_t cap = w->caprun ? w->caprun * 2 : 64;
    coro **q = realloc(w->runq, cap * sizeof *q);
    if (!q)
      die("out of memory (run queue)");
    w->runq = q;
    w->caprun = cap;
  }
  c->state = C_RUNNABLE;
  w->runq[w->nrun++] = c;
}

static void make_runnable(coro *c) {
  c->park_gen++; /* its pending deadline event is now stale */
  runq_add(c->w, c);
}

static char *stack_get(rv_sim_world *w) {
  if (w->nstacks > 0) {
    char *m = w->stacks[--w->nstacks];
#ifdef SIM_ASAN
    /* Frames that never returned (the last switch of a finished thread) leave poison. */
    __asan_unpoison_memory_region(m + page_size(), RV_SIM_STACK_BYTES);
#endif
    return m;
  }
  size_t ps = page_size();
  char *m = mmap(NULL, RV_SIM_STACK_BYTES + ps, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  mprotect(m, ps, PROT_NONE); /* guard page: an overflow faults instead of corrupting */
  return m;
}

static void stack_put(rv_sim_world *w, char *m) {
  if (!m)
    return;
  if (w->nstacks < SIM_STACKS_CACHED) {
    w->stacks[w->nstacks++] = m;
    return;
  }
  munmap(m, RV_SIM_STACK_BYTES + page_size());
}

/* Switch from the scheduler to c; returns when c parks or ends. */
static void switch_in(rv_sim_world *w, coro *c) {
  w->current = c;
  c->state = C_RUNNING;
#ifdef SIM_ASAN
  __sanitizer_start_switch_fiber(&w->main_fake, c->map + page_size(), RV_SIM_STACK_BYTES);
#endif
#ifdef SIM_TSAN
  __tsan_switch_to_fiber(c->fiber, 0);
#endif
#ifdef SIM_FAST_SWITCH
  if (_setjmp(w->main_jb) == 0) {
    if (!c->entered) {
      c->entered = true;
      setcontext(&c->uc);
    }
    _longjmp(c->jb, 1);
  }
#else
  swapcontext(&w->main_uc, &c->uc);
#endif
#ifdef SIM_ASAN
  __sanitizer_finish_switch_fiber(w->main_fake, NULL, NULL);
#endif
  w->current = NULL;
}

/* Switch from c back to the scheduler; returns when c is scheduled again. */
static void switch_out(coro *c) {
  rv_sim_world *w = c->w;
#ifdef SIM_ASAN
  __sanitizer_start_switch_fiber(c->state == C_DONE ? NULL : &c->fake_stack, w->main_bottom,
                                 w->main_size);
#endif
#ifdef SIM_TSAN
  __tsan_switch_to_fiber(w->main_fiber, 0);
#endif
#ifdef SIM_FAST_SWITCH
  if (_setjmp(c->jb) == 0)
    _longjmp(w->main_jb, 1);
#else
  swapcontext(&c->uc, &w->main_uc);
#endif
#ifdef SIM_ASAN
  __sanitizer_finish_switch_fiber(c->fake_stack, &w->main_bottom, &w->main_size);
#endif
}

static void coro_entry(unsigned lo, unsigned hi) {
  coro *c = (coro *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
#ifdef SIM_ASAN
  __sanitizer_finish_switch_fiber(NULL, &c->w->main_bottom, &c->w->main_size);
#endif
  c->fn(c->arg);
  c->state = C_DONE;
  c->w->alive--;
  if (c->joiner)
    rv__sim_unpark(c->joiner);
  switch_out(c);
  die("finished simulated thread resumed");
}

/* Release the thread; the coroutine record lives on while heap events point to it. */
static void coro_free(rv_sim_world *w, coro *c) {
  if (c->all_prev)
    c->all_prev->all_next = c->all_next;
  else
    w->all = c->all_next;
  if (c->all_next)
    c->all_next->all_prev = c->all_prev;
#ifdef SIM_TSAN
  __tsan_destroy_fiber(c->fiber);
#endif
  stack_put(w, c->map);
  rv_thread *t = c->t;
  if (t->reg)
    rv__registry_remove_thread(t);
  rv__thread_slots_free(t);
  rv_rawmu_destroy(&t->mu);
  free(t);
  c->t = NULL;
  c->map = NULL;
  c->dead = true;
  c->state = C_DONE;
  if (c->wakes == 0)
    free(c);
}

/* A deadline event for c leaves the heap. */
static void wake_popped(coro *c) {
  if (--c->wakes == 0 && c->dead)
    free(c);
}

/* Apart, so that getcontext (returns twice) cannot clobber the caller's locals. */
static __attribute__((noinline)) void coro_ctx_init(coro *c) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = c->map + page_size();
  c->uc.uc_stack.ss_size = RV_SIM_STACK_BYTES;
  c->uc.uc_link = NULL;
  uintptr_t u = (uintptr_t)c;
  makecontext(&c->uc, (void (*)(void))coro_entry, 2, (unsigned)(u & 0xffffffffu),
              (unsigned)(u >> 32));
}

static int spawn(rv_sim_world *w, rv_sim_proc *p, rv_thread **out, const char *name,
                 const char *role, void (*fn)(void *), void *arg) {
  coro *c = calloc(1, sizeof *c);
  rv_thread *t = calloc(1, sizeof *t);
  char *map = c && t ? stack_get(w) : NULL;
  if (!map) {
    free(c);
    free(t);
    return RV_ENOMEM;
  }
  c->t = t;
  c->proc = p;
  c->w = w;
  c->map = map;
  c->fn = fn;
  c->arg = arg;
  c->id = ++w->next_coro_id;
  t->os = c;
  rv_rawmu_init(&t->mu);
  snprintf(t->name, sizeof t->name, "%s", name ? name : "thread");
  snprintf(t->role, sizeof t->role, "%s", role ? role : "");
  t->started_ns = w->now;
  t->tid = p->pid * 1000 + ++p->next_tid;
  coro_ctx_init(c);
#ifdef SIM_TSAN
  c->fiber = __tsan_create_fiber(0);
#endif
  rv__registry_add_thread(p->reg, t);
  c->all_next = w->all;
  if (w->all)
    w->all->all_prev = c;
  w->all = c;
  w->alive++;
  tr_entry *e = trace_add(w, TR_SPAWN, c->id, (uint64_t)p->index);
  snprintf(e->text, sizeof e->text, "%s/%s", p->name, t->name);
  runq_add(w, c);
  if (out)
    *out = t;
  return RV_OK;
}

int rv_sim_spawn(rv_sim_proc *p, const char *name, const char *role, void (*fn)(void *),
                 void *arg) {
  if (p->dead)
    return RV_ECLOSED; /* crashed: rv_sim_proc_restart first */
  return spawn(p->w, p, NULL, name, role, fn, arg);
}

int rv__sim_thread_start(rv_thread **out, const char *name, const char *role,
                         void (*fn)(void *), void *arg) {
  coro *me = self_coro();
  return spawn(me->w, me->proc, out, name, role, fn, arg);
}

int rv__sim_thread_join(rv_thread *t) {
  coro *me = self_coro(), *c = t->os;
  if (c == me)
    return RV_EDEADLK;
  rv__wait_begin(me->t, RV_WAIT_JOIN, t->id, t->name, __FILE__, __LINE__);
  while (c->state != C_DONE) {
    c->joiner = me->t;
    rv__sim_park(me->t, RV_NO_DEADLINE);
  }
  rv__wait_end(me->t);
  if (!c->killed) /* a killed one stays until the world is freed (rv_sim_proc_crash) */
    coro_free(me->w, c);
  return RV_OK;
}

rv_thread *rv__sim_thread_self(void) { return self_coro()->t; }

void rv__sim_park(rv_thread *self, int64_t deadline_ns) {
  coro *c = self->os;
  rv_sim_world *w = c->w;
  if (w->current != c)
    die("park of a simulated thread that is not running");
  if (c->permit) {
    c->permit = false;
    return;
  }
  if (deadline_ns != RV_NO_DEADLINE && deadline_ns <= w->now)
    return;
  c->state = C_PARKED;
  c->park_gen++;
  if (deadline_ns != RV_NO_DEADLINE) {
    c->wakes++;
    schedule(w, deadline_ns, EV_WAKE, c, 0, NULL, c->park_gen);
  }
  switch_out(c);
  c->permit = false;
}

void rv__sim_unpark(rv_thread *t) {
  coro *c = t->os;
  if (c->killed)
    return; /* a thread of a crashed process (a stale pointer in a wait queue): gone */
  c->permit = true;
  if (c->state == C_PARKED)
    make_runnable(c);
}

/* ---- clock, pid, randomness, registry ------------------------------------------------------ */

int64_t rv__sim_now_ns(void) { return world()->now; }
int64_t rv__sim_wall_ns(void) { return RV_SIM_EPOCH_WALL_NS + world()->now; }
uint64_t rv__sim_rng_os_seed(void) { return rv_rng_next(&world()->rng); }

int rv__sim_getpid(void) {
  rv_sim_world *w = world();
  return w->current ? w->current->proc->pid : 1;
}

void rv__sim_gethostname(char *buf, size_t len) {
  rv_sim_world *w = world();
  snprintf(buf, len, "%s", w->current ? w->current->proc->name : "localhost");
}

rv_registry *rv__sim_registry_current(void) {
  rv_sim_world *w = world();
  if (w->current)
    return w->current->proc->reg;
  return w->nprocs ? w->procs[0]->reg : NULL;
}

/* ---- the scheduler -------------------------------------------------------------------------- */


int rv_sim_run(rv_sim_world *w, int64_t until_ns) {
  if (rv__sim_tls || w->running)
    die("rv_sim_run is not reentrant");
  rv__sim_tls = w;
  w->running = true;
  w->stop = false;
#ifdef SIM_TSAN
  w->main_fiber = __tsan_get_current_fiber();
#endif
  int rc;
  for (;;) {
    if (w->stop) {
      rc = RV_ECANCELED;
      break;
    }
    if (w->alive == 0) {
      rc = RV_OK;
      break;
    }
    if (w->nrun > 0) {
      size_t i = w->nrun == 1 ? 0 : (size_t)rv_rng_below(&w->rng, w->nrun);
      coro *c = w->runq[i];
      w->runq[i] = w->runq[--w->nrun];
      tr_entry *e = trace_add(w, TR_RUN, c->id, 0);
      snprintf(e->text, sizeof e->text, "%s/%s", c->proc->name, c->t->name);
      switch_in(w, c);
    } else {
      if (w->nheap == 0) {
        rc = RV_EDEADLK;
        break;
      }
      if (w->heap[0].kind == EV_WAKE) {
        coro *c = w->heap[0].p;
        if (c->state != C_PARKED || c->park_gen != w->heap[0].gen) {
          ev_pop(w); /* stale: the thread was woken otherwise */
          wake_popped(c);
          continue;
        }
      }
      if (w->heap[0].at > until_ns) {
        rc = RV_ETIMEDOUT;
        break;
      }
      ev e = ev_pop(w);
      if (e.at > w->now)
        w->now = e.at;
      handle_event(w, &e);
    }
    if (w->hook)
      w->hook(w->hook_arg);
  }
  w->running = false;
  rv__sim_tls = NULL;
  return rc;
}

/* ---- network --------------------------------------------------------------------------------- */

static void link_unref(sim_link *l) {
  if (--l->refs > 0)
    return;
  rv_sim_world *w = l->w;
  if (l->prev)
    l->prev->next = l->next;
  else
    w->links = l->next;
  if (l->next)
    l->next->prev = l->prev;
  for (int d = 0; d < 2; d++) {
    for (seg *s = l->dir[d].head, *n; s; s = n) {
      n = s->next;
      free(s);
    }
    free(l->ep[d].rx);
  }
  free(l);
}

static void ep_wake(sim_ep *e) {
  if (e->reader)
    rv__sim_unpark(e->reader);
  if (e->notify)
    e->notify(e->notify_arg);
}

static void dir_schedule(rv_sim_world *w, sim_link *l, int d, int64_t at) {
  l->dir[d].scheduled = true;
  l->refs++;
  schedule(w, at, EV_DELIVER, l, d, NULL, 0);
}

static bool chance(rv_sim_world *w, double p) {
  return p > 0 && rv_rng_below(&w->rng, SIM_PPM) < (uint64_t)(p * SIM_PPM);
}

/*
 * Segment loss as TCP lives it: the receiver never sees a gap, the lost
 * segment comes again after a retransmission timeout (RV_SIM_RTO_MIN_NS..
 * RV_SIM_RTO_MAX_NS, doubling while it keeps being lost), and everything sent
 * after it in that direction waits behind it.  Returns the extra delay.
 */
static int64_t loss_delay(rv_sim_world *w, sim_link *l, int d, int64_t first_rto) {
  int64_t extra = 0;
  int losses = 0;
  int64_t rto = first_rto;
  while (chance(w, w->opts.faults.loss)) {
    if (rto <= 0)
      rto = RV_SIM_RTO_MIN_NS +
            (int64_t)rv_rng_below(&w->rng, (uint64_t)(RV_SIM_RTO_MAX_NS - RV_SIM_RTO_MIN_NS) + 1);
    extra += rto;
    rto = rto * 2 > SIM_RTO_BACKOFF_MAX_NS ? SIM_RTO_BACKOFF_MAX_NS : rto * 2;
    losses++;
  }
  if (losses) {
    tr_entry *t = trace_add(w, TR_FAULT, l ? l->id * 2 + (uint64_t)d : 0, (uint64_t)extra);
    snprintf(t->text, sizeof t->text, "loss x%d: +%" PRId64 " ms", losses, extra / RV_NS_PER_MS);
  }
  return extra;
}

static int send_seg_flags(sim_ep *e, const void *buf, size_t len, bool fin, bool rst) {
  sim_link *l = e->link;
  rv_sim_world *w = l->w;
  seg *s = malloc(sizeof *s + len);
  if (!s)
    return RV_ENOMEM;
  s->next = NULL;
  s->len = len;
  s->fin = fin;
  s->rst = rst;
  if (len)
    memcpy(s->data, buf, len);
  int d = e->side;
  int64_t at = w->now + latency(w);
  if (!rst) /* an RST is never retransmitted: a lost one is a later one's job */
    at += loss_delay(w, l, d, 0);
  if (at < l->dir[d].last_at)
    at = l->dir[d].last_at; /* a stream: never overtake an earlier segment */
  s->at = l->dir[d].last_at = at;
  if (l->dir[d].tail)
    l->dir[d].tail->next = s;
  else
    l->dir[d].head = s;
  l->dir[d].tail = s;
  if (!l->dir[d].scheduled)
    dir_schedule(w, l, d, at);
  return RV_OK;
}

static int send_seg(sim_ep *e, const void *buf, size_t len, bool fin) {
  return send_seg_flags(e, buf, len, fin, false);
}

/* e's side sends an RST after whatever it sent before (in flight segments arrive first). */
static void send_rst(sim_ep *e) {
  if (e->rst_sent)
    return;
  e->rst_sent = true;
  send_seg_flags(e, NULL, 0, false, true);
}

static void deliver(rv_sim_world *w, sim_link *l, int d) {
  l->dir[d].scheduled = false;
  seg *s = l->dir[d].head;
  sim_ep *src = &l->ep[d], *dst = &l->ep[1 - d];
  if (s && cut_between(w, src->proc, dst->proc)) {
    dir_schedule(w, l, d, w->now + SIM_RETRANSMIT_NS); /* held by the partition */
    link_unref(l);
    return;
  }
  if (s) {
    l->dir[d].head = s->next;
    if (!s->next)
      l->dir[d].tail = NULL;
    tr_entry *t = trace_add(w, TR_DELIVER, l->id * 2 + (uint64_t)d,
                            s->len + (s->fin ? SIM_TR_FIN : 0) + (s->rst ? SIM_TR_RST : 0));
    snprintf(t->text, sizeof t->text, "%s -> %s%s", src->proc->name, dst->proc->name,
             s->fin ? ": TCP FIN (close)" : s->rst ? ": TCP RST (reset)" : "");
    if (dst->open && s->rst) {
      dst->rst = true;
      ep_wake(dst);
    } else if (!dst->open && dst->killed && s->len > 0) {
      send_rst(dst); /* data for a socket of a killed process: the kernel answers RST */
    } else if (dst->open) {
      if (s->len) {
        if (dst->rx_off > 0 && dst->rx_off == dst->rx_len)
          dst->rx_off = dst->rx_len = 0;
        if (dst->rx_len + s->len > dst->rx_cap) {
          if (dst->rx_off > 0) {
            memmove(dst->rx, dst->rx + dst->rx_off, dst->rx_len - dst->rx_off);
            dst->rx_len -= dst->rx_off;
            dst->rx_off = 0;
          }
          size_t cap = dst->rx_cap ? dst->rx_cap : 4096;
          while (cap < dst->rx_len + s->len)
            cap *= 2;
          char *p = realloc(dst->rx, cap);
          if (!p)
            die("out of memory (receive buffer)");
          dst->rx = p;
          dst->rx_cap = cap;
        }
        memcpy(dst->rx + dst->rx_len, s->data, s->len);
        dst->rx_len += s->len;
      }
      if (s->fin)
        dst->rx_eof = true;
      ep_wake(dst);
    }
    free(s);
  }
  if (l->dir[d].head)
    dir_schedule(w, l, d, l->dir[d].head->at);
  link_unref(l);
}

static sim_listener *listener_find(rv_sim_world *w, rv_sim_proc *p, uint16_t port) {
  for (sim_listener *s = w->listeners; s; s = s->next)
    if (s->proc == p && s->port == port)
      return s;
  return NULL;
}

static void ep_init(sim_ep *e, sim_link *l, int side, rv_sim_proc *p, const char *peer) {
  e->link = l;
  e->side = side;
  e->proc = p;
  e->open = true;
  e->rd_deadline = e->wr_deadline = RV_NO_DEADLINE;
  snprintf(e->peer, sizeof e->peer, "%s", peer);
}

static void syn_arrives(rv_sim_world *w, pconn *pc) {
  if (cut_between(w, pc->from, pc->to)) {
    schedule(w, w->now + SIM_RETRANSMIT_NS, EV_SYN, pc, 0, NULL, 0);
    return;
  }
  sim_listener *s = listener_find(w, pc->to, pc->port);
  tr_entry *t = trace_add(w, TR_CONNECT, (uint64_t)pc->from->index * 65536 + pc->port, s != NULL);
  snprintf(t->text, sizeof t->text, "%s -> %s:%u%s", pc->from->name, pc->to->name, pc->port,
           s ? "" : " refused");
  if (s) {
    sim_link *l = calloc(1, sizeof *l);
    if (!l)
      die("out of memory (link)");
    l->w = w;
    l->id = ++w->next_link_id;
    l->refs = 2;
    char peer[64];
    snprintf(peer, sizeof peer, "%s:%u", pc->to->addr, pc->port);
    ep_init(&l->ep[0], l, 0, pc->from, peer);
    snprintf(peer, sizeof peer, "%s:%u", pc->from->addr, pc->from_port);
    ep_init(&l->ep[1], l, 1, pc->to, peer);
    l->next = w->links;
    if (w->links)
      w->links->prev = l;
    w->links = l;
    if (s->qlen == s->qcap) {
      size_t cap = s->qcap ? s->qcap * 2 : 16;
      sim_ep **q = malloc(cap * sizeof *q);
      if (!q)
        die("out of memory (accept queue)");
      for (size_t i = 0; i < s->qlen; i++)
        q[i] = s->q[(s->qhead + i) % s->qcap];
      free(s->q);
      s->q = q;
      s->qhead = 0;
      s->qcap = cap;
    }
    s->q[(s->qhead + s->qlen++) % s->qcap] = &l->ep[1];
    if (s->accepter)
      rv__sim_unpark(s->accepter);
    if (s->notify)
      s->notify(s->notify_arg);
    pc->link = l;
  }
  schedule(w, w->now + latency(w), EV_SYNACK, pc, 0, NULL, 0);
}

static void synack_arrives(rv_sim_world *w, pconn *pc) {
  if (cut_between(w, pc->from, pc->to)) {
    schedule(w, w->now + SIM_RETRANSMIT_NS, EV_SYNACK, pc, 0, NULL, 0);
    return;
  }
  if (pc->abandoned) {
    if (pc->link)
      rv__sim_conn_close((rv_conn *)&pc->link->ep[0]);
    free(pc);
    return;
  }
  pc->result = pc->link ? RV_OK : RV_ECONNREFUSED;
  rv__sim_unpark(pc->waiter);
}

static void handle_event(rv_sim_world *w, ev *e) {
  switch (e->kind) {
  case EV_WAKE: {
    coro *c = e->p;
    c->wakes--; /* not dead: it was parked */
    tr_entry *t = trace_add(w, TR_WAKE, c->id, 0);
    memcpy(t->text, c->t->name, sizeof c->t->name);
    make_runnable(c);
    break;
  }
  case EV_DELIVER:
    deliver(w, e->p, e->dir);
    break;
  case EV_SYN:
    syn_arrives(w, e->p);
    break;
  case EV_SYNACK:
    synack_arrives(w, e->p);
    break;
  case EV_CALL:
    if (e->dir > 0) {
      rv_sim_proc *p = w->procs[e->dir - 1];
      if (p->dead || p->incarnation != (uint32_t)e->gen) {
        tr_entry *t = trace_add(w, TR_CALL, 1, 0);
        snprintf(t->text, sizeof t->text, "dropped: scheduled by a crashed %s", p->name);
        break;
      }
    }
    trace_add(w, TR_CALL, 0, 0);
    ((void (*)(void *))e->p)(e->arg);
    break;
  case EV_RESET_TICK:
    reset_tick(w);
    break;
  }
}

/* The process a host name designates, seen from p. */
static rv_sim_proc *resolve(rv_sim_world *w, rv_sim_proc *p, const char *host) {
  if (!host || !*host || strcmp(host, "127.0.0.1") == 0 || strcmp(host, "localhost") == 0 ||
      strcmp(host, "::1") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
    return p;
  for (int i = 0; i < w->nprocs; i++)
    if (strcmp(w->procs[i]->name, host) == 0 || strcmp(w->procs[i]->addr, host) == 0)
      return w->procs[i];
  return NULL;
}

/* Park under ctx until ready(arg), the deadline, or ctx's end; as rt_os's wait_fd. */
static int sim_wait(bool (*ready)(void *), void *arg, rv_thread **slot, int64_t deadline_ns,
                    rv_ctx *ctx, rv_wait_kind kind, const char *what) {
  rv_thread *self = self_coro()->t;
  rv__ctxwait cw;
  rv__ctxwait_begin(&cw, ctx, self);
  bool nested = self->wait.kind == RV_WAIT_EXTERNAL;
  if (!nested)
    rv__wait_begin(self, kind, 0, what, __FILE__, __LINE__);
  int rc;
  while ((rc = rv__ctxwait_check(&cw, deadline_ns)) == 0 && !ready(arg)) {
    if (slot)
      *slot = self;
    rv__sim_park(self, rv__ctxwait_deadline(&cw, deadline_ns));
    if (slot)
      *slot = NULL;
  }
  if (rc == 0 || ready(arg))
    rc = 0;
  if (!nested)
    rv__wait_end(self);
  rv__ctxwait_end(&cw);
  return rc;
}

static bool pconn_done(void *arg) { return ((pconn *)arg)->result != PC_PENDING; }

int rv__sim_tcp_connect(rv_conn **out, const char *host, uint16_t port, rv_ctx *ctx) {
  coro *me = self_coro();
  rv_sim_world *w = me->w;
  rv_sim_proc *to = resolve(w, me->proc, host);
  if (!to)
    return RV_EADDR;
  int err = rv_ctx_err(ctx);
  if (err)
    return err;
  pconn *pc = calloc(1, sizeof *pc);
  if (!pc)
    return RV_ENOMEM;
  pc->from = me->proc;
  pc->to = to;
  pc->port = port;
  pc->from_port = me->proc->next_port++;
  pc->result = PC_PENDING;
  snprintf(pc->host, sizeof pc->host, "%s:%u", host, port);
  /* A lost SYN is sent again after the initial RTO (1 s on Linux), doubling. */
  schedule(w, w->now + latency(w) + loss_delay(w, NULL, 0, RV_SIM_SYN_RTO_NS), EV_SYN, pc, 0,
           NULL, 0);
  int rc = sim_wait(pconn_done, pc, &pc->waiter, RV_NO_DEADLINE, ctx, RV_WAIT_NET_CONNECT,
                    pc->host);
  if (rc != 0) {
    pc->abandoned = true; /* the handshake's last event frees it */
    return rc;
  }
  rc = pc->result;
  if (rc == RV_OK)
    *out = (rv_conn *)&pc->link->ep[0];
  free(pc);
  return rc;
}

static bool ep_readable(void *arg) {
  sim_ep *e = arg;
  return e->rx_len > e->rx_off || e->rx_eof || e->rst;
}

ssize_t rv__sim_conn_read_nb(rv_conn *c, void *buf, size_t len) {
  sim_ep *e = (sim_ep *)c;
  size_t have = e->rx_len - e->rx_off;
  /* As Linux after an RST: bytes already received can still be read, then the error. */
  if (have == 0)
    return e->rst ? RV_ECLOSED : e->rx_eof ? 0 : RV_EBUSY;
  if (len > have)
    len = have;
  memcpy(buf, e->rx + e->rx_off, len);
  e->rx_off += len;
  if (e->rx_off == e->rx_len)
    e->rx_off = e->rx_len = 0;
  return (ssize_t)len;
}

ssize_t rv__sim_conn_read(rv_conn *c, void *buf, size_t len, rv_ctx *ctx) {
  sim_ep *e = (sim_ep *)c;
  for (;;) {
    ssize_t n = rv__sim_conn_read_nb(c, buf, len);
    if (n != RV_EBUSY)
      return n;
    int rc = sim_wait(ep_readable, e, &e->reader, e->rd_deadline, ctx, RV_WAIT_NET_READ, e->peer);
    if (rc)
      return rc;
  }
}

int rv__sim_conn_write_nb(rv_conn *c, const void *buf, size_t len) {
  sim_ep *e = (sim_ep *)c;
  if (e->wr_shut || !e->open || e->rst)
    return RV_ECLOSED;
  if (len == 0)
    return RV_OK;
  return send_seg(e, buf, len, false);
}

int rv__sim_conn_write_all(rv_conn *c, const void *buf, size_t len, rv_ctx *ctx) {
  (void)ctx; /* writes never block: there is no send window in this model */
  return rv__sim_conn_write_nb(c, buf, len);
}

void rv__sim_conn_set_read_deadline(rv_conn *c, int64_t deadline_ns) {
  sim_ep *e = (sim_ep *)c;
  e->rd_deadline = deadline_ns;
  if (e->reader)
    rv__sim_unpark(e->reader); /* re-evaluate the wait against the new deadline */
}

void rv__sim_conn_set_write_deadline(rv_conn *c, int64_t deadline_ns) {
  ((sim_ep *)c)->wr_deadline = deadline_ns;
}

int rv__sim_conn_shutdown_write(rv_conn *c) {
  sim_ep *e = (sim_ep *)c;
  if (e->rst)
    return RV_ECLOSED;
  if (e->wr_shut)
    return RV_OK;
  e->wr_shut = true;
  return send_seg(e, NULL, 0, true);
}

void rv__sim_conn_close(rv_conn *c) {
  if (!c)
    return;
  sim_ep *e = (sim_ep *)c;
  if (!e->wr_shut && !e->rst) {
    e->wr_shut = true;
    send_seg(e, NULL, 0, true);
  }
  e->open = false;
  e->notify = NULL;
  e->reader = NULL;
  link_unref(e->link);
}

const char *rv__sim_conn_peer(const rv_conn *c) { return ((const sim_ep *)c)->peer; }

void rv__sim_conn_notify(rv_conn *c, void (*fn)(void *), void *arg) {
  sim_ep *e = (sim_ep *)c;
  e->notify = fn;
  e->notify_arg = arg;
}

int rv__sim_tcp_listen(rv_listener **out, const char *host, uint16_t port, int backlog) {
  (void)backlog;
  coro *me = self_coro();
  rv_sim_world *w = me->w;
  if (resolve(w, me->proc, host) != me->proc)
    return RV_EADDR;
  if (port == 0)
    port = me->proc->next_port++;
  if (listener_find(w, me->proc, port))
    return RV_EADDR;
  sim_listener *s = calloc(1, sizeof *s);
  if (!s)
    return RV_ENOMEM;
  s->w = w;
  s->proc = me->proc;
  s->port = port;
  s->next = w->listeners;
  if (w->listeners)
    w->listeners->prev = s;
  w->listeners = s;
  *out = (rv_listener *)s;
  return RV_OK;
}

uint16_t rv__sim_listener_port(const rv_listener *l) { return ((const sim_listener *)l)->port; }

int rv__sim_listener_accept_nb(rv_listener *l, rv_conn **out) {
  sim_listener *s = (sim_listener *)l;
  if (s->qlen == 0)
    return RV_EBUSY;
  *out = (rv_conn *)s->q[s->qhead];
  s->qhead = (s->qhead + 1) % s->qcap;
  s->qlen--;
  return RV_OK;
}

static bool listener_ready(void *arg) { return ((sim_listener *)arg)->qlen > 0; }

int rv__sim_listener_accept(rv_listener *l, rv_conn **out, rv_ctx *ctx) {
  sim_listener *s = (sim_listener *)l;
  for (;;) {
    if (rv__sim_listener_accept_nb(l, out) == RV_OK)
      return RV_OK;
    char what[RV_WAIT_WHAT_MAX];
    snprintf(what, sizeof what, "port %u", s->port);
    int rc = sim_wait(listener_ready, s, &s->accepter, RV_NO_DEADLINE, ctx, RV_WAIT_ACCEPT, what);
    if (rc)
      return rc;
  }
}

void rv__sim_listener_notify(rv_listener *l, void (*fn)(void *), void *arg) {
  sim_listener *s = (sim_listener *)l;
  s->notify = fn;
  s->notify_arg = arg;
}

static void listener_free(rv_sim_world *w, sim_listener *s, bool close_queued) {
  if (s->prev)
    s->prev->next = s->next;
  else
    w->listeners = s->next;
  if (s->next)
    s->next->prev = s->prev;
  while (close_queued && s->qlen > 0) {
    rv_conn *c;
    rv__sim_listener_accept_nb((rv_listener *)s, &c);
    rv__sim_conn_close(c);
  }
  free(s->q);
  free(s);
}

void rv__sim_listener_close(rv_listener *l) {
  if (l)
    listener_free(world(), (sim_listener *)l, true);
}

/* ---- faults: resets, loss settings, crash and restart ----------------------------------------- */

static void ep_reset(sim_ep *e) {
  if (!e->open || e->rst)
    return;
  e->rst = true;
  ep_wake(e);
}

/* Both ends see the reset at once (as from a middlebox); what was in flight is gone. */
static void link_reset(rv_sim_world *w, sim_link *l, const char *why) {
  for (int d = 0; d < 2; d++) {
    for (seg *s = l->dir[d].head, *n; s; s = n) {
      n = s->next;
      free(s);
    }
    l->dir[d].head = l->dir[d].tail = NULL; /* a scheduled delivery finds nothing */
  }
  tr_entry *t = trace_add(w, TR_FAULT, l->id, 1);
  snprintf(t->text, sizeof t->text, "reset %s <-> %s (%s)", l->ep[0].proc->name,
           l->ep[1].proc->name, why);
  ep_reset(&l->ep[0]);
  ep_reset(&l->ep[1]);
}

int rv_sim_reset_conns(rv_sim_world *w, rv_sim_proc *a, rv_sim_proc *b) {
  int n = 0;
  for (sim_link *l = w->links; l; l = l->next) {
    bool between = (l->ep[0].proc == a && l->ep[1].proc == b) ||
                   (l->ep[0].proc == b && l->ep[1].proc == a);
    if (!between || (!l->ep[0].open && !l->ep[1].open) || l->ep[0].rst || l->ep[1].rst)
      continue;
    link_reset(w, l, "requested");
    n++;
  }
  return n;
}

static void reset_tick_arm(rv_sim_world *w) {
  if (w->reset_tick || w->opts.faults.resets_per_s <= 0)
    return;
  w->reset_tick = true;
  schedule(w, w->now + RV_SIM_RESET_TICK_NS, EV_RESET_TICK, NULL, 0, NULL, 0);
}

/* Every RV_SIM_RESET_TICK_NS while random resets are on: each established connection is reset
 * with probability resets_per_s * the tick. */
static void reset_tick(rv_sim_world *w) {
  w->reset_tick = false;
  double p = w->opts.faults.resets_per_s * (double)RV_SIM_RESET_TICK_NS / RV_NS_PER_S;
  if (p <= 0)
    return;
  for (sim_link *l = w->links; l; l = l->next)
    if (l->ep[0].open && l->ep[1].open && !l->ep[0].rst && !l->ep[1].rst && chance(w, p))
      link_reset(w, l, "random");
  reset_tick_arm(w);
}

void rv_sim_set_faults(rv_sim_world *w, const rv_sim_faults *f) {
  rv_sim_faults nf = f ? *f : (rv_sim_faults){0};
  if (nf.loss < 0)
    nf.loss = 0;
  if (nf.loss > SIM_LOSS_MAX)
    nf.loss = SIM_LOSS_MAX;
  if (nf.resets_per_s < 0)
    nf.resets_per_s = 0;
  w->opts.faults = nf;
  rv_sim_note(w, "faults: loss %.3f, resets %.3f/conn/s", nf.loss, nf.resets_per_s);
  reset_tick_arm(w);
}

rv_sim_faults rv_sim_get_faults(const rv_sim_world *w) { return w->opts.faults; }

/* The process holding e was killed: its kernel closes the socket.  Unread input (or a
 * connection never accepted) makes that an RST, otherwise a FIN; input arriving later
 * is answered with an RST (deliver). */
static void ep_kill(sim_ep *e, bool force_rst) {
  if (!e->open)
    return;
  e->killed = true;
  if (!e->rst) {
    if (force_rst || e->rx_len > e->rx_off)
      send_rst(e);
    else if (!e->wr_shut)
      send_seg(e, NULL, 0, true);
  }
  e->wr_shut = true;
  e->open = false;
  e->notify = NULL;
  e->reader = NULL;
  link_unref(e->link);
}

#ifdef SIM_ASAN
/*
 * Threads of crashed processes, kept for LeakSanitizer until the OS process
 * exits (ASan builds only).  A kill -9 leaks what the process allocated; to
 * LSan the honest statement of that is "still reachable from the dead
 * process": each killed coroutine's record (with its saved registers) stays on
 * this list and its stack stays mapped and registered as a root region, so
 * what the dead incarnation could reach is reachable, and a leak that
 * happened before the crash is still reported.  Never freed, on purpose.
 */
static coro *sim_graveyard;
#endif

void rv_sim_proc_crash(rv_sim_proc *p) {
  rv_sim_world *w = p->w;
  if (p->dead)
    return;
  if (w->current && w->current->proc == p)
    die("a simulated process cannot crash itself (use rv_sim_at or another process)");
  p->dead = true;
  int killed = 0;
  for (coro *c = w->all; c; c = c->all_next) {
    if (c->proc != p || c->state == C_DONE)
      continue;
    if (c->state == C_RUNNABLE)
      for (size_t i = 0; i < w->nrun; i++)
        if (w->runq[i] == c) {
          w->runq[i] = w->runq[--w->nrun];
          break;
        }
    c->state = C_DONE;
    c->killed = true;
    c->park_gen++; /* its deadline events are stale now */
    w->alive--;
    killed++;
#ifdef SIM_ASAN
    __lsan_register_root_region(c->map + page_size(), RV_SIM_STACK_BYTES);
#endif
    if (c->joiner && !((coro *)c->joiner->os)->killed)
      rv__sim_unpark(c->joiner);
  }
  /* Listening sockets go first (connections never accepted get an RST), then every socket. */
  for (sim_listener *s = w->listeners, *n; s; s = n) {
    n = s->next;
    if (s->proc != p)
      continue;
    for (size_t i = 0; i < s->qlen; i++)
      ep_kill(s->q[(s->qhead + i) % s->qcap], true);
    s->qlen = 0;
    listener_free(w, s, false);
  }
  for (sim_link *l = w->links, *n; l; l = n) {
    l->refs++; /* both ends may be p's: keep l until both are handled */
    for (int side = 0; side < 2; side++)
      if (l->ep[side].proc == p)
        ep_kill(&l->ep[side], false);
    n = l->next;
    link_unref(l);
  }
  /* Its connection attempts in flight end with it (the handshake's last event frees them). */
  for (size_t i = 0; i < w->nheap; i++)
    if (w->heap[i].kind == EV_SYN || w->heap[i].kind == EV_SYNACK) {
      pconn *pc = w->heap[i].p;
      if (pc->from == p)
        pc->abandoned = true;
    }
  tr_entry *t = trace_add(w, TR_CRASH, (uint64_t)p->index, (uint64_t)killed);
  snprintf(t->text, sizeof t->text, "kill -9 %s (pid %d, %d threads)", p->name, p->pid, killed);
}

int rv_sim_proc_restart(rv_sim_proc *p) {
  if (!p->dead)
    return RV_EINVAL;
  rv_registry *reg = rv_registry_new();
  rv_registry **old = realloc(p->old_regs, (size_t)(p->nold_regs + 1) * sizeof *old);
  if (!reg || !old) {
    if (reg)
      rv_registry_free(reg);
    if (old)
      p->old_regs = old;
    return RV_ENOMEM;
  }
  p->old_regs = old;
  p->old_regs[p->nold_regs++] = p->reg; /* its dead threads still point at it */
  p->reg = reg;
  p->incarnation++;
  p->pid = 100 + p->index + SIM_PID_STRIDE * (int)p->incarnation;
  p->next_tid = 0;
  p->dead = false;
  tr_entry *t = trace_add(p->w, TR_CRASH, (uint64_t)p->index, UINT64_C(1) << 32);
  snprintf(t->text, sizeof t->text, "restart %s (pid %d, incarnation %u)", p->name, p->pid,
           p->incarnation);
  return RV_OK;
}

bool rv_sim_proc_alive(const rv_sim_proc *p) { return !p->dead; }
unsigned rv_sim_proc_incarnation(const rv_sim_proc *p) { return p->incarnation; }

/* ---- teardown ------------------------------------------------------------------------------------ */

void rv_sim_world_free(rv_sim_world *w) {
  if (!w)
    return;
  /* Events own handshakes in flight (pconn); links and listeners are on lists. */
  for (size_t i = 0; i < w->nheap; i++)
    if (w->heap[i].kind == EV_SYN || w->heap[i].kind == EV_SYNACK) {
      pconn *pc = w->heap[i].p;
      if (pc->abandoned)
        free(pc);
    }
  while (w->all) {
    coro *c = w->all;
    c->t->reg = NULL; /* the registries go below; skip the per-thread removal */
#ifdef SIM_ASAN
    /* Abandoned alive (a run stopped at a violation, a deadlock nothing breaks) is a
     * kill -9 as far as memory goes: to the graveyard too. */
    if (!c->killed && c->state != C_DONE && c->map) {
      __lsan_register_root_region(c->map + page_size(), RV_SIM_STACK_BYTES);
      c->killed = true;
    }
    if (c->killed) { /* to the graveyard, with its stack (see sim_graveyard) */
      w->all = c->all_next;
      if (w->all)
        w->all->all_prev = NULL;
      c->all_prev = NULL;
      c->all_next = __atomic_load_n(&sim_graveyard, __ATOMIC_ACQUIRE);
      while (!__atomic_compare_exchange_n(&sim_graveyard, &c->all_next, c, false, __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE)) {
      }
      continue;
    }
#endif
    coro_free(w, c);
  }
  for (size_t i = 0; i < w->nheap; i++)
    if (w->heap[i].kind == EV_WAKE)
      wake_popped(w->heap[i].p);
  free(w->heap);
  free(w->runq);
  while (w->links) {
    sim_link *l = w->links;
    l->refs = 1;
    link_unref(l);
  }
  while (w->listeners)
    listener_free(w, w->listeners, false);
  for (int i = 0; i < w->nstacks; i++)
    munmap(w->stacks[i], RV_SIM_STACK_BYTES + page_size());
  for (int i = 0; i < w->nprocs; i++) {
    for (int j = 0; j < w->procs[i]->nold_regs; j++)
      rv_registry_free(w->procs[i]->old_regs[j]);
    free(w->procs[i]->old_regs);
    rv_registry_free(w->procs[i]->reg);
    free(w->procs[i]);
  }
  rv__sim_disk_free(w->disk);
  free(w);
}
