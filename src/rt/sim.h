/*
 * The simulation backend of rt (rt_sim.c): a deterministic world in which
 * many simulated processes run on one OS thread, with virtual time, a seeded
 * PRNG for every choice and an in-memory network.  docs/sim.md is the guide.
 *
 * One binary, two worlds: rt's public functions (rt.h, and the server loop
 * in server/loop.h) check a thread-local "current world" pointer and forward
 * here when it is set, i.e. while rv_sim_run runs on this OS thread.  Outside
 * rv_sim_run everything is the OS backend, unchanged.
 *
 * Model:
 *  - a world holds processes; a process holds rv_threads (coroutines on
 *    fixed-size stacks) and its own thread registry; rv_getpid and
 *    rv_registry_current answer for the process of the running coroutine;
 *  - the scheduler runs one runnable coroutine at a time until it parks;
 *    which runnable coroutine runs next is drawn from the world's PRNG, so a
 *    seed picks one interleaving and another seed explores another;
 *  - when nothing is runnable, virtual time jumps to the next event (a park
 *    deadline, a network delivery, a scheduled callback);
 *  - the network: hosts are processes (addressed by their name, their
 *    address "10.0.0.N", or 127.0.0.1/localhost for the process itself);
 *    each direction of a connection is a FIFO whose segments arrive after a
 *    latency drawn from [latency_min, latency_max]; a partition between two
 *    processes holds their segments (and connection attempts) until it
 *    heals; writes never block (no send window);
 *  - every scheduling decision and network delivery is folded into a running
 *    hash (rv_sim_hash): two runs with the same seed give the same hash.
 */
#ifndef RAVEL_RT_SIM_H
#define RAVEL_RT_SIM_H

#include "rt/rt.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stack of each simulated thread (coroutine), with a guard page below it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RV_SIM_STACK_BYTES (1024u * 1024u)
#else
#define RV_SIM_STACK_BYTES (256u * 1024u)
#endif
#define RV_SIM_PROCS_MAX 64
#define RV_SIM_NAME_MAX 32
/* Virtual wall clock at virtual time 0: 2026-01-01T00:00:00Z. */
#define RV_SIM_EPOCH_WALL_NS (INT64_C(1767225600) * RV_NS_PER_S)
/* Events kept for rv_sim_trace_print. */
#define RV_SIM_TRACE_KEEP 64

typedef struct rv_sim_world rv_sim_world;
typedef struct rv_sim_proc rv_sim_proc;

typedef struct rv_sim_opts {
  uint64_t seed;
  int64_t latency_min_ns; /* one-way network latency; default 100 us */
  int64_t latency_max_ns; /* default 2 ms */
} rv_sim_opts;

int rv_sim_world_new(rv_sim_world **out, const rv_sim_opts *opts);
/*
 * Free the world.  Coroutines still alive are abandoned (their stacks are
 * freed without unwinding: whatever they allocated leaks), so scenarios end
 * their threads first.
 */
void rv_sim_world_free(rv_sim_world *w);

/* A new process named `name` (its host name; address 10.0.0.<index+1>). */
rv_sim_proc *rv_sim_proc_new(rv_sim_world *w, const char *name);
const char *rv_sim_proc_name(const rv_sim_proc *p);
const char *rv_sim_proc_addr(const rv_sim_proc *p);
int rv_sim_proc_pid(const rv_sim_proc *p);
/* The process of the running coroutine (NULL outside one). */
rv_sim_proc *rv_sim_proc_current(void);

/* Start the first thread of a process (later ones come from rv_thread_start). */
int rv_sim_spawn(rv_sim_proc *p, const char *name, const char *role, void (*fn)(void *),
                 void *arg);

/* Run fn(arg) on the scheduler (no coroutine: it must not block) at virtual time at_ns. */
void rv_sim_at(rv_sim_world *w, int64_t at_ns, void (*fn)(void *), void *arg);

/*
 * Run until no coroutine is alive (0), nothing can ever happen again while
 * some are (RV_EDEADLK: all parked without deadlines or pending events),
 * virtual time passes until_ns (RV_ETIMEDOUT), or rv_sim_stop (RV_ECANCELED).
 */
int rv_sim_run(rv_sim_world *w, int64_t until_ns);
/* Ask rv_sim_run to return after the current step (callable from anywhere inside). */
void rv_sim_stop(rv_sim_world *w);
/* Called after every scheduling step (coroutine switch or event); for invariants. */
void rv_sim_set_step_hook(rv_sim_world *w, void (*fn)(void *), void *arg);

/* Cut (true) or heal (false) the network between two processes. */
void rv_sim_partition(rv_sim_world *w, rv_sim_proc *a, rv_sim_proc *b, bool cut);

int64_t rv_sim_now(const rv_sim_world *w);
uint64_t rv_sim_hash(const rv_sim_world *w);
uint64_t rv_sim_events(const rv_sim_world *w);
int rv_sim_threads_alive(const rv_sim_world *w);
/* The world's PRNG, for scenarios (draws are part of the seeded history). */
rv_rng *rv_sim_rng(rv_sim_world *w);
/* Add a scenario event to the trace and the hash ("grant acct-1 token 7"). */
void rv_sim_note(rv_sim_world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print the last n (<= RV_SIM_TRACE_KEEP) trace events. */
void rv_sim_trace_print(const rv_sim_world *w, FILE *f, int n);

/* ---- the dispatch seam (for rt_os.c and server/loop.c; not for applications) ---- */

extern __thread rv_sim_world *rv__sim_tls __attribute__((tls_model("initial-exec")));
#ifdef RAVEL_NO_SIM_DISPATCH
/* Only for measuring the dispatch's cost (bench/rt_dispatch_bench.sh): OS backend only. */
static inline bool rv__sim_active(void) { return false; }
#else
static inline bool rv__sim_active(void) { return __builtin_expect(rv__sim_tls != NULL, 0); }
#endif

/* rt.h under the simulator (rt_os.c forwards to these). */
int64_t rv__sim_now_ns(void);
int64_t rv__sim_wall_ns(void);
int rv__sim_getpid(void);
uint64_t rv__sim_rng_os_seed(void);
struct rv_registry *rv__sim_registry_current(void);
void rv__sim_park(rv_thread *self, int64_t deadline_ns);
void rv__sim_unpark(rv_thread *t);
int rv__sim_thread_start(rv_thread **out, const char *name, const char *role,
                         void (*fn)(void *), void *arg);
int rv__sim_thread_join(rv_thread *t);
rv_thread *rv__sim_thread_self(void);
int rv__sim_tcp_connect(rv_conn **out, const char *host, uint16_t port, rv_ctx *ctx);
ssize_t rv__sim_conn_read(rv_conn *c, void *buf, size_t len, rv_ctx *ctx);
int rv__sim_conn_write_all(rv_conn *c, const void *buf, size_t len, rv_ctx *ctx);
void rv__sim_conn_set_read_deadline(rv_conn *c, int64_t deadline_ns);
void rv__sim_conn_set_write_deadline(rv_conn *c, int64_t deadline_ns);
int rv__sim_conn_shutdown_write(rv_conn *c);
void rv__sim_conn_close(rv_conn *c);
const char *rv__sim_conn_peer(const rv_conn *c);
int rv__sim_tcp_listen(rv_listener **out, const char *host, uint16_t port, int backlog);
uint16_t rv__sim_listener_port(const rv_listener *l);
int rv__sim_listener_accept(rv_listener *l, rv_conn **out, rv_ctx *ctx);
void rv__sim_listener_close(rv_listener *l);

/* Non-blocking forms for the simulated server loop (server/loop_sim.c). */
/* >0 bytes, 0 at end of stream, RV_EBUSY when nothing is there yet, RV_ECLOSED on reset. */
ssize_t rv__sim_conn_read_nb(rv_conn *c, void *buf, size_t len);
/* Queue all of buf for the peer (never blocks); RV_ECLOSED if the connection is gone. */
int rv__sim_conn_write_nb(rv_conn *c, const void *buf, size_t len);
/* 0 with *out, or RV_EBUSY when no connection is waiting. */
int rv__sim_listener_accept_nb(rv_listener *l, rv_conn **out);
/* fn(arg) runs (on the scheduler, must not block) when input, EOF or a connection arrives. */
void rv__sim_conn_notify(rv_conn *c, void (*fn)(void *), void *arg);
void rv__sim_listener_notify(rv_listener *l, void (*fn)(void *), void *arg);

#ifdef __cplusplus
}
#endif
#endif
