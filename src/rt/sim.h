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
 *    heals; writes never block (no send window); segment loss (as TCP
 *    retransmission delay), connection resets and kill -9 / restart of a
 *    process are faults a scenario turns on (rv_sim_faults,
 *    rv_sim_proc_crash);
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

/*
 * Network faults (docs/sim.md, "Network faults"), drawn from the world's PRNG.
 *  - loss: probability that one transmission of a segment is lost.  As TCP
 *    does, the lost segment is sent again after a retransmission timeout
 *    drawn from [RV_SIM_RTO_MIN_NS, RV_SIM_RTO_MAX_NS] (doubling while it
 *    keeps being lost), and everything sent after it in that direction waits
 *    behind it: the application sees delay, never a gap or a reordering.  A
 *    lost SYN is sent again after RV_SIM_SYN_RTO_NS.  Capped at 0.9.
 *  - resets_per_s: every RV_SIM_RESET_TICK_NS, each established connection
 *    is reset with probability resets_per_s * the tick (both ends then get
 *    RV_ECLOSED from reads, after the bytes already received, and writes).
 * Duplication and reordering are not modelled: TCP's sequence numbers hide
 * both from the application (duplicates are dropped, segments reassembled in
 * order), so all they could add is delay, which latency and loss give.
 */
#define RV_SIM_RTO_MIN_NS (200 * RV_NS_PER_MS)
#define RV_SIM_RTO_MAX_NS (1000 * RV_NS_PER_MS)
#define RV_SIM_SYN_RTO_NS (1000 * RV_NS_PER_MS)
#define RV_SIM_RESET_TICK_NS (100 * RV_NS_PER_MS)
typedef struct rv_sim_faults {
  double loss;         /* 0..0.9 */
  double resets_per_s; /* per connection per virtual second */
} rv_sim_faults;

typedef struct rv_sim_opts {
  uint64_t seed;
  int64_t latency_min_ns; /* one-way network latency; default 100 us */
  int64_t latency_max_ns; /* default 2 ms */
  rv_sim_faults faults;   /* at the start; rv_sim_set_faults changes them */
} rv_sim_opts;

int rv_sim_world_new(rv_sim_world **out, const rv_sim_opts *opts);
/*
 * Free the world.  Coroutines still alive are abandoned (their stacks are
 * freed without unwinding: whatever they allocated leaks), so scenarios end
 * their threads first.  Under ASan they go to the graveyard of killed
 * coroutines instead (rt_sim.c): stacks kept as LeakSanitizer root regions,
 * so a run stopped at a violation (a deadlock nothing breaks) reports no leak.
 */
void rv_sim_world_free(rv_sim_world *w);

/* A new process named `name` (its host name; address 10.0.0.<index+1>). */
rv_sim_proc *rv_sim_proc_new(rv_sim_world *w, const char *name);
const char *rv_sim_proc_name(const rv_sim_proc *p);
const char *rv_sim_proc_addr(const rv_sim_proc *p);
int rv_sim_proc_pid(const rv_sim_proc *p);
/* The process's thread registry (what rv_registry_current answers inside it): for dumps. */
struct rv_registry *rv_sim_proc_registry(const rv_sim_proc *p);
/* The process of the running coroutine (NULL outside one). */
rv_sim_proc *rv_sim_proc_current(void);

/* Start the first thread of a process (later ones come from rv_thread_start); RV_ECLOSED if it
 * crashed and was not restarted. */
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
/* Set the network faults from now on (a fault window raises them, healing sets them to 0). */
void rv_sim_set_faults(rv_sim_world *w, const rv_sim_faults *f);
rv_sim_faults rv_sim_get_faults(const rv_sim_world *w);
/* Reset every open connection between a and b (both ends see RV_ECLOSED); how many. */
int rv_sim_reset_conns(rv_sim_world *w, rv_sim_proc *a, rv_sim_proc *b);

/*
 * kill -9 of a simulated process (docs/sim.md, "Crash and restart"); callable
 * from a scheduler callback (rv_sim_at), from a coroutine of another process
 * or between runs, never from p's own threads.  Its coroutines never run
 * again: they leave the run queue, their deadlines are dropped, rv_sim_at
 * callbacks scheduled from its threads are dropped, and their stacks are
 * released without unwinding when the world is freed (ASan builds keep them,
 * see rt_sim.c's sim_graveyard).  What it allocated is leaked, as with a real
 * kill -9.  Its listeners close (connects get RV_ECONNREFUSED), and its
 * sockets close as Linux closes a killed process's: a FIN to the peer
 * (whose reads then end, 0), or an RST when it had unread input or the
 * connection was never accepted (the peer's reads give RV_ECLOSED after the
 * bytes already received); input arriving at a dead socket is answered with
 * an RST.  Rendezvous through rv_mutex/rv_cond shared between processes is
 * not supported across a crash (a dead waiter never runs).  Its disk volume
 * is the simulated disk's business (rv_sim_disk_crash).  A no-op if dead.
 */
void rv_sim_proc_crash(rv_sim_proc *p);
/* A fresh incarnation of a crashed process: same name, address and disk volume, a new pid and
 * registry; start its threads with rv_sim_spawn.  RV_EINVAL if p is not dead. */
int rv_sim_proc_restart(rv_sim_proc *p);
bool rv_sim_proc_alive(const rv_sim_proc *p);
unsigned rv_sim_proc_incarnation(const rv_sim_proc *p);

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

/* ---- the simulated disk (src/rt/fs_sim.c; docs/sim.md, "The simulated disk") ---- */
/*
 * rt/fs.h under the simulator: one volume per process name (a process
 * restarted under the same name sees its volume), owned by the world.  Every
 * file and directory has a durable state and a current state (what reads
 * see); only rv_file_sync makes a file's data durable and only
 * rv_fs_sync_dir (or rv_fs_syncfs) a directory's creates, renames and
 * unlinks.
 */
/* Virtual time one rv_file_sync / rv_fs_sync_dir takes (the thread parks; others run). */
#define RV_SIM_DISK_SYNC_NS (500 * RV_NS_PER_US)
/* Virtual time one rv_fs_syncfs takes. */
#define RV_SIM_DISK_SYNCFS_NS (2 * RV_NS_PER_MS)
/* Bytes of file data one volume may hold (current plus durable states); beyond: RV_ENOSPC. */
#define RV_SIM_DISK_VOLUME_BYTES_MAX (UINT64_C(1) << 30)

/*
 * What a crash does to the writes and directory operations not yet synced.
 * Per file with unsynced writes, one draw: with probability lose_unsynced
 * all are lost, with probability torn_tail a prefix of them is kept and the
 * last kept one is cut at a random byte (a torn tail), otherwise all are
 * kept (lose_unsynced + torn_tail <= 1).  Per unsynced directory operation
 * (create, mkdir, rename, unlink), independently: lost with probability
 * lose_dir_ops, else kept.
 */
typedef struct rv_sim_disk_faults {
  double lose_unsynced;
  double torn_tail;
  double lose_dir_ops;
} rv_sim_disk_faults;

/*
 * The process owning `volume` (its process name) was killed: every handle
 * open on the volume becomes invalid (later use gives RV_ESTALE), and what
 * was not synced is kept, lost or torn as f says, drawn from the world's
 * PRNG.  f NULL is the harshest: every unsynced write and directory
 * operation is lost.  Callable from a coroutine, a scheduler callback or
 * between runs; a volume never used is a no-op.  Noted in the trace.
 */
void rv_sim_disk_crash(rv_sim_world *w, const char *volume, const rv_sim_disk_faults *f);
/*
 * Faults of a running volume (made if new): each file or directory sync
 * fails with RV_EIO with probability sync_eio (drawn from the world's PRNG;
 * what it should have made durable stays unsynced, still visible to reads:
 * Linux's behaviour after a failed fsync), and writes past capacity_bytes of
 * file data fail with RV_ENOSPC (0: RV_SIM_DISK_VOLUME_BYTES_MAX).
 */
void rv_sim_disk_set_faults(rv_sim_world *w, const char *volume, double sync_eio,
                            uint64_t capacity_bytes);

/* ---- the dispatch seam (for rt_os.c and server/loop.c; not for applications) ---- */

/* The world's disk (fs_sim.c owns what it points to; rv_sim_world_free calls rv__sim_disk_free). */
void **rv__sim_world_disk(rv_sim_world *w);
void rv__sim_disk_free(void *disk);

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
void rv__sim_gethostname(char *buf, size_t len);
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
