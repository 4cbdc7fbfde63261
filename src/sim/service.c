/*
 * The "service" scenario (scenario.h): the incident of ../shared/INCIDENT.md
 * in virtual time.  The real coord and queue servers, replicas of the real
 * reference service (src/svc), the demo's load generator (svc/load.h) and a
 * platform team making config writes through the real libravel coord client,
 * with the properties checked as the run goes.
 *
 * As in locks.c, everything runs as simulated threads of simulated processes
 * and the scenario's bookkeeping (`service_sc`) is shared by all of them: the
 * world runs on one OS thread and a simulated thread is never preempted
 * between parks.  The checks run on the scheduler (a step hook for coord's
 * lock table, an rv_sim_at callback every RV_SIM_SERVICE_CHECK_NS for the
 * replicas' registries and the queue), never inside a component.
 */
#include "sim/common.h"
#include "sim/scenario.h"

#include "client/coord_client.h"
#include "obs/log.h"
#include "obs/registry.h"
#include "server/coord.h"
#include "server/coord_internal.h"
#include "server/queue.h"
#include "server/queue_internal.h"
#include "svc/load.h"
#include "svc/svc.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define COORD_PORT 7400
#define QUEUE_PORT 4150
#define SERVICE RV_SVC_DEFAULT_SERVICE
/* rv_svc_start's bound on reaching coord and the queue; retried after RETRY_NS. */
#define START_TIMEOUT_MS 10000
#define RETRY_NS (200 * RV_NS_PER_MS)
/* As cmd_svc.c: the replica's main thread calls rv_svc_tick this often. */
#define TICK_NS (100 * RV_NS_PER_MS)
/* The platform writes and coord calls of the platform process are bounded by this. */
#define PLATFORM_CALL_NS (10 * RV_NS_PER_S)
/* Handler threads are named "handler-N" by the consumer (queue_client.c). */
#define HANDLER_PREFIX "handler-"
/* The condition a thread waits on for one of the coord client's lock connections. */
#define POOL_COND "coord-pool-free"

typedef struct service_sc service_sc;

typedef struct replica {
  service_sc *sc;
  int index;
  char name[RV_SIM_NAME_MAX];
  rv_sim_proc *proc;
  rv_svc *svc;
  bool up, counted;
  uint64_t rebuilds, recursive; /* the replica's counters, as of its last tick */
  uint64_t rebuilds_dead, recursive_dead; /* the same of its crashed incarnations */
  int64_t cycle_seen_ns; /* when this replica's current cycle was first seen (0: none) */
} replica;

struct service_sc {
  rv_sim_service_opts o;
  rv_sim_service_result *r;
  rv_sim_world *w;
  char dir[64];
  rv_log *log;  /* errors only: the components' logs would drown the output */
  rv_sim_proc *coord_proc, *queue_proc, *load_proc, *platform_proc;
  replica reps[RV_SIM_SERVICE_REPLICAS_MAX];
  rv_coord *coord;
  rv_qsrv *qsrv;
  bool coord_up, qsrv_up;
  bool config_ready;  /* the platform process set up the config layers */
  int replicas_up;
  atomic_bool stop_load;
  atomic_long published;
  bool load_done, platform_done;
  int procs_left;     /* replicas + load + platform still running */
  bool ending;        /* the replicas are asked to stop */
  bool drained;       /* every published event finished on the queue */
  int64_t load_end_ns, liveness_end_ns;
  uint64_t channel;   /* the queue core's channel handle (0 until it exists) */
  /* coord's lock table as last observed, per lock name (the fencing property) */
  struct lt_seen { char name[64]; uint64_t token, session; } *seen;
  size_t nseen, capseen;
  uint64_t lt_moves;  /* grants + releases + holds lost, as of the last walk */
  sim_verdict verdict;
  sim_nemesis nem_coord, nem_queue;
  bool queue_restarted; /* the queue crashed once: its counters start again from its log */
  bool faults_over;     /* the fault window closed: no more kills */
  /* What the crash nemesis kills: coord, the queue, each replica (rv_sim_at's argument). */
  struct crash_target { service_sc *sc; rv_sim_proc *p; } targets[RV_SIM_SERVICE_REPLICAS_MAX + 2];
};

#define violation(sc, ...) SIM_VIOLATION(sc, __VA_ARGS__)

/* The diagnosis of the world at the first violation (sim_verdict's hook). */
static char *diagnose(void *arg) {
  service_sc *sc = arg;
  rv_sim_proc *procs[RV_SIM_SERVICE_REPLICAS_MAX + 4];
  size_t n = 0;
  procs[n++] = sc->coord_proc;
  for (int i = 0; i < sc->o.replicas; i++)
    procs[n++] = sc->reps[i].proc;
  return sim_diagnosis_text(procs, n, sc->coord_proc, sc->coord_up ? sc->coord : NULL,
                            sc->qsrv_up ? sc->qsrv : NULL);
}



static uint64_t draw(service_sc *sc, uint64_t n) { return rv_rng_below(rv_sim_rng(sc->w), n); }

/* ---- property: fencing in coord's lock table (every step) ------------------------------------ */

static struct lt_seen *seen_get(service_sc *sc, const char *name) {
  for (size_t i = 0; i < sc->nseen; i++)
    if (strcmp(sc->seen[i].name, name) == 0)
      return &sc->seen[i];
  if (sc->nseen == sc->capseen) {
    size_t cap = sc->capseen ? 2 * sc->capseen : 16;
    struct lt_seen *s = realloc(sc->seen, cap * sizeof *s);
    if (!s)
      return NULL;
    sc->seen = s;
    sc->capseen = cap;
  }
  struct lt_seen *s = &sc->seen[sc->nseen++];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  return s;
}

static bool check_lock(const rv_lt_lock_view *v, void *arg) {
  service_sc *sc = arg;
  struct lt_seen *s = seen_get(sc, v->name);
  if (!s)
    return false;
  if (v->token < s->token)
    violation(sc, "fencing token of %s went backwards in coord's lock table: %" PRIu64
              " after %" PRIu64, v->name, v->token, s->token);
  else if (v->token == s->token && v->holder_session != s->session)
    violation(sc, "two holders of %s with token %" PRIu64 " (sessions %" PRIu64 " and %" PRIu64
              ")", v->name, v->token, s->session, v->holder_session);
  s->token = v->token;
  s->session = v->holder_session;
  return true;
}

static void check_fencing(void *arg) {
  service_sc *sc = arg;
  if (!sc->coord_up)
    return;
  /* A holder (and its token) changes only by a grant, a release or a hold lost with its
   * session: walk the table only after a step that moved one of those counters. */
  rv_lt_stats st;
  rv_lt_get_stats(sc->coord->lt, &st);
  uint64_t moves = st.grants + st.releases + st.locks_lost;
  if (moves == sc->lt_moves)
    return;
  sc->lt_moves = moves;
  rv_lt_filter f = {.only_held = true};
  rv_lt_lock_list(sc->coord->lt, &f, check_lock, sc);
}

/* ---- the servers ------------------------------------------------------------------------------ */

static void coord_main(void *arg) {
  service_sc *sc = arg;
  /* A crash of coord's disk is a power loss: coord then needs what it documents for
   * machines that lose power (synchronous=FULL); its default keeps acknowledged config
   * writes across a killed process only. */
  rv_coord_opts o = {.host = rv_sim_proc_addr(sc->coord_proc), .port = COORD_PORT,
                     .no_admin = true, .data_dir = sc->dir, .log = sc->log,
                     .config_sync_full = sc->o.crashes};
  sim_coord_serve(&sc->verdict, &o, &sc->coord, &sc->coord_up);
}

static void queue_main(void *arg) {
  service_sc *sc = arg;
  rv_qsrv_opts o = {.host = rv_sim_proc_addr(sc->queue_proc), .tcp_port = QUEUE_PORT,
                    .no_http = true, .data_dir = sc->dir, .log = sc->log};
  char why[256];
  if (rv_qsrv_start(&sc->qsrv, &o, why, sizeof why) != RV_OK) {
    violation(sc, "the queue did not start: %s", why);
    return;
  }
  sc->qsrv_up = true;
  rv_qsrv_run(sc->qsrv);
  sc->qsrv_up = false;
  rv_qsrv_free(sc->qsrv);
  sc->qsrv = NULL;
}

/* A process of the workload ended; the last one stops the servers so that the world ends. */
static void proc_done(service_sc *sc) {
  if (--sc->procs_left > 0)
    return;
  if (sc->coord)
    rv_coord_stop(sc->coord);
  if (sc->qsrv)
    rv_qsrv_stop(sc->qsrv);
}

/* The replicas' counters at the end (the last replica to stop calls it, from its thread). */
static void counters_checks(service_sc *sc) {
  uint64_t rebuilds = 0, recursive = 0;
  for (int i = 0; i < sc->o.replicas; i++) {
    if (sc->reps[i].up && !sc->reps[i].counted)
      return;
    rebuilds += sc->reps[i].rebuilds + sc->reps[i].rebuilds_dead;
    recursive += sc->reps[i].recursive + sc->reps[i].recursive_dead;
  }
  if (sc->o.check_detect && recursive == 0)
    violation(sc, "detect: no replica reported a recursive read lock");
  if (sc->o.check_no_rebuild && rebuilds > 0)
    violation(sc, "no_rebuild: the replicas rebuilt their client %" PRIu64 " times on writes "
              "that changed nothing they see", rebuilds);
}

static void quiet_log(void *arg, const char *level, const char *msg) {}

/* ---- the replicas --------------------------------------------------------------------------- */

static void replica_main(void *arg) {
  replica *rp = arg;
  service_sc *sc = rp->sc;
  while (!sc->config_ready && !sc->ending)
    rv_sleep(NULL, RETRY_NS);
  rv_svc_opts so = {.service = SERVICE,
                    .replica = rp->index + 1,
                    .coord_host = rv_sim_proc_addr(sc->coord_proc),
                    .coord_port = COORD_PORT,
                    .queue_host = rv_sim_proc_addr(sc->queue_proc),
                    .queue_port = QUEUE_PORT,
                    .max_in_flight = sc->o.max_in_flight,
                    .msg_timeout_ms = sc->o.msg_timeout_ms,
                    .upstream_latency_ms = sc->o.upstream_latency_ms,
                    .no_admin = true,
                    .log = sc->log};
  memcpy(so.bugs, sc->o.bugs, sizeof so.bugs);
  while (!rp->svc && !sc->ending) {
    char why[256];
    if (rv_svc_start(&rp->svc, &so, START_TIMEOUT_MS, why, sizeof why) != RV_OK) {
      rp->svc = NULL;
      rv_sim_note(sc->w, "%s: %s", rp->name, why);
      rv_sleep(NULL, RETRY_NS);
    }
  }
  if (rp->svc) {
    rp->up = true;
    sc->replicas_up++;
    rv_sim_note(sc->w, "%s consuming", rp->name);
    while (!sc->ending) {
      rv_svc_tick(rp->svc);
      /* Read here, not on the scheduler: the counters are behind the components' locks. */
      rp->rebuilds = rv_svc_rebuilds(rp->svc);
      rp->recursive = rv_svc_recursive_reads(rp->svc);
      rv_sleep(NULL, TICK_NS);
    }
    rp->rebuilds = rv_svc_rebuilds(rp->svc);
    rp->recursive = rv_svc_recursive_reads(rp->svc);
    rp->counted = true;
    counters_checks(sc);
    if (rv_svc_stop(rp->svc) != RV_OK) {
      /* Handlers that will not stop (deadlocked): as a real process, it is left as is. */
      rv_sim_note(sc->w, "%s: handlers would not stop", rp->name);
      return;
    }
    rp->svc = NULL;
  }
  proc_done(sc);
}

/* ---- the load and the platform team --------------------------------------------------------- */

static void load_main(void *arg) {
  service_sc *sc = arg;
  while (sc->replicas_up < sc->o.replicas && !sc->ending)
    rv_sleep(NULL, RETRY_NS); /* as the demo: load once every replica consumes */
  rv_svc_load_opts lo = {.queue_host = rv_sim_proc_addr(sc->queue_proc),
                         .queue_port = QUEUE_PORT,
                         .rate = sc->o.rate,
                         .resources = sc->o.resources,
                         .items = sc->o.items,
                         .seed = rv_rng_next(rv_sim_rng(sc->w)),
                         .stop = &sc->stop_load,
                         .until_ns = sc->load_end_ns,
                         .published = &sc->published};
  rv_svc_load_run(&lo);
  sc->load_done = true;
  rv_sim_note(sc->w, "load done: %ld published", atomic_load(&sc->published));
  proc_done(sc);
}

/* One config write, as the platform team makes it. */
static bool cfg_set(rv_coord_client *cc, const char *ns, const char *value, const char *author,
                    const char *reason) {
  rv_config_write_opts o = {.author = author, .reason = reason};
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, PLATFORM_CALL_NS);
  int rc = rv_config_set(ctx, cc, ns, RV_SVC_UPSTREAM_KEY, value, &o, NULL);
  rv_ctx_free(ctx);
  return rc == RV_OK;
}

static void platform_main(void *arg) {
  service_sc *sc = arg;
  rv_coord_client_opts co = {.host = rv_sim_proc_addr(sc->coord_proc), .port = COORD_PORT,
                             .service = "platform", .host_name = "platform"};
  rv_coord_client *cc = NULL;
  while (!cc && !sc->ending) {
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, PLATFORM_CALL_NS);
    if (rv_coord_client_open(&cc, ctx, &co) != RV_OK) {
      cc = NULL;
      rv_sleep(NULL, RETRY_NS); /* coord may not listen yet */
    }
    rv_ctx_free(ctx);
  }
  /* As the demo: the service overrides upstream.url, so platform writes change nothing it sees. */
  while (cc && !sc->config_ready && !sc->ending) {
    if (cfg_set(cc, "svc/" SERVICE, "https://billing.upstream", "billing-team",
                "service-specific endpoint") &&
        cfg_set(cc, "platform", "https://platform.upstream/v1", "platform-team", "initial"))
      sc->config_ready = true;
    else
      rv_sleep(NULL, RETRY_NS);
  }
  for (int64_t i = 0; cc && i < sc->o.config_writes && !sc->ending; i++) {
    int64_t at = sc->o.config_at_ns + i * sc->o.config_every_ns;
    if (at > rv_now_ns())
      rv_sleep(NULL, at - rv_now_ns());
    char value[64];
    snprintf(value, sizeof value, "https://platform.upstream/v%lld", (long long)i + 2);
    bool ok = cfg_set(cc, "platform", value, "other-team", "platform migration");
    sc->r->platform_writes += ok;
    rv_sim_note(sc->w, "platform write %lld of upstream.url%s", (long long)i + 1,
                ok ? "" : " failed");
  }
  if (cc)
    rv_coord_client_close(cc);
  sc->platform_done = true;
  proc_done(sc);
}

/* ---- the periodic checks (on the scheduler, every RV_SIM_SERVICE_CHECK_NS) ---------------- */

static bool find_channel(const rv_queue_channel_stats *cs, void *arg) {
  service_sc *sc = arg;
  if (strcmp(cs->name, RV_SVC_DEFAULT_CHANNEL) == 0) {
    sc->channel = cs->handle;
    return false;
  }
  return true;
}

static bool find_topic(const rv_queue_topic_stats *ts, void *arg) {
  service_sc *sc = arg;
  if (strcmp(ts->name, RV_SVC_DEFAULT_TOPIC) == 0) {
    rv_queue_channel_list(sc->qsrv->q, ts->handle, find_channel, sc);
    return false;
  }
  return true;
}

/* The channel's counters; false before it exists. */
static bool channel_stats(service_sc *sc, rv_queue_channel_stats *cs) {
  if (!sc->qsrv_up)
    return false;
  if (!sc->channel)
    rv_queue_topic_list(sc->qsrv->q, find_topic, sc);
  return sc->channel && rv_queue_channel_stats_get(sc->qsrv->q, sc->channel, cs) == 0;
}

static bool is_lock_wait(const rv_wait *wt) {
  return wt->kind == RV_WAIT_MUTEX || wt->kind == RV_WAIT_RDLOCK || wt->kind == RV_WAIT_WRLOCK ||
         (wt->kind == RV_WAIT_EXTERNAL && strncmp(wt->what, "dlock ", 6) == 0) ||
         (wt->kind == RV_WAIT_COND && strcmp(wt->what, POOL_COND) == 0);
}

/* One replica: handler threads, the age of its oldest wait-for cycle, and (at the end)
 * its longest lock wait. */
static void check_replica(service_sc *sc, replica *rp, bool final) {
  rv_snapshot *snap = rv_snapshot_take(rv_sim_proc_registry(rp->proc));
  if (!snap)
    return;
  int64_t now = rv_sim_now(sc->w);
  int handlers = 0;
  int64_t longest_wait = 0;
  const rv_thread_snap *longest = NULL;
  for (size_t i = 0; i < snap->nthreads; i++) {
    const rv_thread_snap *t = &snap->threads[i];
    if (strncmp(t->name, HANDLER_PREFIX, strlen(HANDLER_PREFIX)) == 0)
      handlers++;
    if (is_lock_wait(&t->wait) && now - t->wait.since_ns > longest_wait) {
      longest_wait = now - t->wait.since_ns;
      longest = t;
    }
  }
  if (handlers > sc->r->max_handlers)
    sc->r->max_handlers = handlers;
  if (sc->o.check_threads && handlers > sc->o.max_in_flight + RV_SIM_SERVICE_HANDLER_SLACK)
    violation(sc, "threads: %s runs %d handler threads (max_in_flight %lld + slack %d)",
              rp->name, handlers, (long long)sc->o.max_in_flight, RV_SIM_SERVICE_HANDLER_SLACK);
  /* The cycle's age, as ravel_deadlock_age_seconds: since its last member began to wait. */
  rv_deadlocks *d = rv_deadlocks_find(snap);
  int64_t age = -1;
  for (size_t i = 0; d && i < d->n; i++) {
    int64_t youngest = INT64_MAX;
    for (size_t k = 0; k < d->items[i].nsteps; k++) {
      int64_t a = now - snap->threads[d->items[i].steps[k].thread].wait.since_ns;
      if (a < youngest)
        youngest = a;
    }
    if (youngest != INT64_MAX && youngest > age)
      age = youngest;
  }
  rv_deadlocks_free(d);
  if (age >= 0) {
    if (!rp->cycle_seen_ns) {
      rp->cycle_seen_ns = now;
      rv_sim_note(sc->w, "%s: a wait-for cycle", rp->name);
      if (sc->r->first_cycle_at < 0)
        sc->r->first_cycle_at = now;
    }
  } else {
    rp->cycle_seen_ns = 0;
  }
  int64_t timeout_ns = sc->o.msg_timeout_ms * RV_NS_PER_MS;
  if (sc->o.check_deadlock && age > RV_SIM_SERVICE_DEADLOCK_TIMEOUTS * timeout_ns)
    violation(sc, "deadlock: %s has a wait-for cycle standing for %.1f s (more than %d message "
              "timeouts of %.0f s): nothing will break it", rp->name, (double)age / RV_NS_PER_S,
              RV_SIM_SERVICE_DEADLOCK_TIMEOUTS, (double)timeout_ns / RV_NS_PER_S);
  if (final) {
    sc->r->deadlocked_replicas += age >= 0;
    if (sc->o.check_liveness && longest &&
        longest_wait > RV_SIM_SERVICE_WAIT_TIMEOUTS * timeout_ns)
      violation(sc, "liveness: on %s thread %" PRIu64 " \"%s\" has waited %.1f s for %s \"%s\" "
                "(bound: %d message timeouts)", rp->name, longest->id, longest->name,
                (double)longest_wait / RV_NS_PER_S, rv_wait_kind_name(longest->wait.kind),
                longest->wait.what, RV_SIM_SERVICE_WAIT_TIMEOUTS);
  }
  rv_snapshot_free(snap);
}

static void final_checks(service_sc *sc) {
  for (int i = 0; i < sc->o.replicas; i++)
    if (sc->reps[i].up)
      check_replica(sc, &sc->reps[i], true);
}

/* Stop the replicas (the world then ends once they, the load and the platform are done). */
static void begin_ending(service_sc *sc) {
  if (sc->ending)
    return;
  final_checks(sc);
  sc->ending = true;
  atomic_store(&sc->stop_load, true);
  rv_sim_note(sc->w, "ending: stopping the replicas");
}

static void check_tick(void *arg) {
  service_sc *sc = arg;
  int64_t now = rv_sim_now(sc->w);
  if (sc->ending)
    return;
  for (int i = 0; i < sc->o.replicas; i++)
    if (sc->reps[i].up)
      check_replica(sc, &sc->reps[i], false);
  rv_queue_channel_stats cs;
  if (channel_stats(sc, &cs)) {
    sc->r->finished = cs.finish_count;
    sc->r->timeouts = cs.timeout_count;
    if (sc->load_done && !sc->drained && cs.depth == 0 && cs.in_flight_count == 0 &&
        cs.deferred_count == 0 &&
        (sc->queue_restarted || cs.message_count >= (uint64_t)atomic_load(&sc->published))) {
      sc->drained = true;
      rv_sim_note(sc->w, "every published event handled");
    }
  }
  if (sc->drained) {
    begin_ending(sc);
    return;
  }
  if (now >= sc->liveness_end_ns) {
    if (sc->o.check_liveness)
      violation(sc, "liveness: %ld published, %" PRIu64 " finished %.0f s after the load ended "
                "(%s)", atomic_load(&sc->published), sc->r->finished,
                (double)(sc->liveness_end_ns - sc->load_end_ns) / RV_NS_PER_S,
                channel_stats(sc, &cs) ? "the backlog did not drain" : "no channel");
    begin_ending(sc);
    return;
  }
  rv_sim_at(sc->w, now + (sc->r->ok ? RV_SIM_SERVICE_CHECK_NS : RV_SIM_SERVICE_FIGURES_NS),
            check_tick, sc);
}

/* ---- the crash nemesis (crashes on) ---------------------------------------------------------- */

static void replica_main(void *arg);

static void restart(void *arg) {
  struct crash_target *t = arg;
  service_sc *sc = t->sc;
  rv_sim_proc *p = t->p;
  if (rv_sim_proc_alive(p))
    return;
  int rc = rv_sim_proc_restart(p);
  if (rc == RV_OK) {
    if (p == sc->coord_proc) {
      rc = rv_sim_spawn(p, "coord-loop", "server", coord_main, sc);
    } else if (p == sc->queue_proc) {
      rc = rv_sim_spawn(p, "queue-loop", "server", queue_main, sc);
    } else {
      for (int i = 0; i < sc->o.replicas; i++)
        if (sc->reps[i].proc == p) {
          rv_registry_set_log(rv_sim_proc_registry(p), quiet_log, NULL);
          rc = rv_sim_spawn(p, "main", "svc", replica_main, &sc->reps[i]);
        }
    }
  }
  if (rc != RV_OK)
    violation(sc, "cannot restart %s: %s", rv_sim_proc_name(p), rv_strerror(rc));
  else
    sc->r->restarts++;
}

/* kill -9 of p: what the scenario observes of it is forgotten; its next incarnation is new. */
static void crash(struct crash_target *t) {
  service_sc *sc = t->sc;
  rv_sim_proc *p = t->p;
  if (!rv_sim_proc_alive(p))
    return;
  rv_sim_proc_crash(p);
  sc->r->crashes++;
  if (p == sc->coord_proc) {
    rv_sim_disk_crash(sc->w, rv_sim_proc_name(p), &RV_SIM_SERVICE_DISK_FAULTS);
    sc->coord = NULL;
    sc->coord_up = false;
    sc->lt_moves = UINT64_MAX; /* walk the new table at once */
  } else if (p == sc->queue_proc) {
    rv_sim_disk_crash(sc->w, rv_sim_proc_name(p), &RV_SIM_SERVICE_DISK_FAULTS);
    sc->qsrv = NULL;
    sc->qsrv_up = false;
    sc->channel = 0;
    sc->queue_restarted = true;
  } else {
    for (int i = 0; i < sc->o.replicas; i++) {
      replica *rp = &sc->reps[i];
      if (rp->proc != p)
        continue;
      rp->rebuilds_dead += rp->rebuilds;
      rp->recursive_dead += rp->recursive;
      rp->rebuilds = rp->recursive = 0;
      rp->svc = NULL;
      rp->cycle_seen_ns = 0;
      if (rp->up)
        sc->replicas_up--;
      rp->up = false;
    }
  }
  int64_t down = RV_SIM_SERVICE_DOWN_MIN_NS +
                 (int64_t)draw(sc, (uint64_t)(RV_SIM_SERVICE_DOWN_MAX_NS - RV_SIM_SERVICE_DOWN_MIN_NS));
  rv_sim_at(sc->w, rv_sim_now(sc->w) + down, restart, t);
}

static void strike(void *arg) {
  service_sc *sc = arg;
  if (sc->faults_over || sc->ending)
    return;
  /* Each replica, coord and the queue alike. */
  crash(&sc->targets[draw(sc, (uint64_t)sc->o.replicas + 2)]);
  int64_t every = RV_SIM_SERVICE_CRASH_EVERY_MIN_NS +
                  (int64_t)draw(sc, (uint64_t)(RV_SIM_SERVICE_CRASH_EVERY_MAX_NS -
                                               RV_SIM_SERVICE_CRASH_EVERY_MIN_NS));
  rv_sim_at(sc->w, rv_sim_now(sc->w) + every, strike, sc);
}

static void faults_on(void *arg) {
  service_sc *sc = arg;
  rv_sim_set_faults(sc->w, &(rv_sim_faults){.loss = sc->o.loss, .resets_per_s = sc->o.resets_per_s});
}

static void faults_off(void *arg) {
  service_sc *sc = arg;
  sc->faults_over = true;
  rv_sim_set_faults(sc->w, NULL);
  rv_sim_note(sc->w, "faults healed");
}

/* ---- running ---------------------------------------------------------------------------------- */

void rv_sim_service_defaults(rv_sim_service_opts *o) {
  *o = (rv_sim_service_opts){.seed = 1,
                             .replicas = 3,
                             .msg_timeout_ms = 30000,
                             .max_in_flight = 50,
                             .rate = 15,
                             .resources = 8,
                             .items = 3,
                             .upstream_latency_ms = 30,
                             .config_at_ns = 60 * RV_NS_PER_S,
                             .config_writes = 5,
                             .config_every_ns = 300 * RV_NS_PER_MS,
                             .virtual_ns = 600 * RV_NS_PER_S,
                             .check_deadlock = true,
                             .check_threads = true,
                             .check_fencing = true,
                             .check_liveness = true};
}

static void fill_defaults(rv_sim_service_opts *o) {
  rv_sim_service_opts d;
  rv_sim_service_defaults(&d);
  sim_opt_int(&o->replicas, d.replicas, RV_SIM_SERVICE_REPLICAS_MAX);
  sim_opt_i64(&o->msg_timeout_ms, d.msg_timeout_ms, 0);
  sim_opt_i64(&o->max_in_flight, d.max_in_flight, 0);
  sim_opt_i64(&o->rate, d.rate, 0);
  sim_opt_i64(&o->resources, d.resources, 0);
  sim_opt_i64(&o->items, d.items, RV_SVC_ITEMS_MAX);
  sim_opt_i64(&o->config_at_ns, d.config_at_ns, 0);
  sim_opt_i64(&o->config_every_ns, d.config_every_ns, 0);
  sim_opt_i64(&o->virtual_ns, d.virtual_ns, 0);
  if (o->upstream_latency_ms < 0)
    o->upstream_latency_ms = 0;
  if (o->config_writes < 0)
    o->config_writes = 0;
}

int rv_sim_service_run(const rv_sim_service_opts *opts, rv_sim_service_result *r) {
  memset(r, 0, sizeof *r);
  r->ok = true;
  r->first_cycle_at = -1;
  service_sc *sc = calloc(1, sizeof *sc);
  if (!sc)
    return RV_ENOMEM;
  sc->o = *opts;
  fill_defaults(&sc->o);
  sc->r = r;
  sc->load_end_ns = sc->o.virtual_ns;
  sc->liveness_end_ns = sc->load_end_ns + RV_SIM_SERVICE_LIVENESS_TIMEOUTS *
                                              sc->o.msg_timeout_ms * RV_NS_PER_MS +
                        RV_SIM_SERVICE_LIVENESS_EXTRA_NS;
  int rc = sim_stage_open(&sc->w, sc->dir, sizeof sc->dir, sc->o.seed, r->violation,
                          sizeof r->violation);
  if (rc != RV_OK) {
    r->ok = false;
    free(sc);
    return rc;
  }
  sc->log = rv_log_new(2, RV_LOG_ERROR, "sim");
  sc->verdict = SIM_VERDICT_OF(sc->w, r);
  sc->verdict.diagnose = diagnose;
  sc->verdict.diagnose_arg = sc;
  sc->verdict.stop_world = sc->o.stop_at_violation;
  sc->coord_proc = rv_sim_proc_new(sc->w, "coord");
  sc->queue_proc = rv_sim_proc_new(sc->w, "queue");
  sc->platform_proc = rv_sim_proc_new(sc->w, "platform");
  sc->load_proc = rv_sim_proc_new(sc->w, "load");
  sc->procs_left = sc->o.replicas + 2;
  rv_sim_spawn(sc->coord_proc, "coord-loop", "server", coord_main, sc);
  rv_sim_spawn(sc->queue_proc, "queue-loop", "server", queue_main, sc);
  rv_sim_spawn(sc->platform_proc, "main", "main", platform_main, sc);
  rv_sim_spawn(sc->load_proc, "main", "load", load_main, sc);
  for (int i = 0; i < sc->o.replicas; i++) {
    replica *rp = &sc->reps[i];
    rp->sc = sc;
    rp->index = i;
    snprintf(rp->name, sizeof rp->name, "%s-%d", SERVICE, i + 1);
    rp->proc = rv_sim_proc_new(sc->w, rp->name);
    /* Recursive read reports are counted by the registry (the detect property reads the
     * count); one warning line per handler would drown the output. */
    rv_registry_set_log(rv_sim_proc_registry(rp->proc), quiet_log, NULL);
    rv_sim_spawn(rp->proc, "main", "svc", replica_main, rp);
  }
  int64_t nemesis_stop = sc->load_end_ns - sc->load_end_ns * 15 / 100;
  sim_nemesis_init(&sc->nem_coord, sc->w, sc->coord_proc, nemesis_stop, &r->partitions);
  sim_nemesis_init(&sc->nem_queue, sc->w, sc->queue_proc, nemesis_stop, &r->partitions);
  for (int i = 0; i < sc->o.replicas; i++) {
    sc->nem_coord.targets[sc->nem_coord.ntargets++].proc = sc->reps[i].proc;
    sc->nem_queue.targets[sc->nem_queue.ntargets++].proc = sc->reps[i].proc;
  }
  if (sc->o.partitions) {
    sim_nemesis_start(&sc->nem_coord, 2 * RV_NS_PER_S + (int64_t)draw(sc, 3000) * RV_NS_PER_MS);
    sim_nemesis_start(&sc->nem_queue, 2 * RV_NS_PER_S + (int64_t)draw(sc, 3000) * RV_NS_PER_MS);
  }
  sc->targets[0] = (struct crash_target){sc, sc->coord_proc};
  sc->targets[1] = (struct crash_target){sc, sc->queue_proc};
  for (int i = 0; i < sc->o.replicas; i++)
    sc->targets[i + 2] = (struct crash_target){sc, sc->reps[i].proc};
  if (sc->o.crashes)
    rv_sim_at(sc->w, RV_SIM_SERVICE_CRASH_FIRST_NS, strike, sc);
  if (sc->o.loss > 0 || sc->o.resets_per_s > 0)
    rv_sim_at(sc->w, 0, faults_on, sc);
  rv_sim_at(sc->w, nemesis_stop, faults_off, sc);
  if (sc->o.check_fencing)
    rv_sim_set_step_hook(sc->w, check_fencing, sc);
  rv_sim_at(sc->w, RV_SIM_SERVICE_CHECK_NS, check_tick, sc);

  /* Past the liveness window, the replicas get a minute to stop. */
  rc = SIM_RUN(sc->w, sc->liveness_end_ns + 60 * RV_NS_PER_S, r);
  if (r->ok && rc != RV_OK && rc != RV_ECANCELED && !sc->ending)
    violation(sc, "the world stopped before the end (%s)", rv_strerror(rc));
  r->published = (uint64_t)atomic_load(&sc->published);
  for (int i = 0; i < sc->o.replicas; i++) {
    r->rebuilds += sc->reps[i].rebuilds + sc->reps[i].rebuilds_dead;
    r->recursive_reads += sc->reps[i].recursive + sc->reps[i].recursive_dead;
    if (!sc->ending) /* stopped at a violation: as the replicas stood */
      r->deadlocked_replicas += sc->reps[i].cycle_seen_ns != 0;
  }
  sim_verdict_finish(&sc->verdict);
  sim_stage_close(sc->w);
  rv_log_free(sc->log);
  free(sc->seen);
  free(sc);
  return RV_OK;
}
