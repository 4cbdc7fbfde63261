/*
 * The "locks" scenario (scenario.h): the real coord server and the real coord
 * client in one simulated world, with network latency and partitions, and a
 * fenced resource that checks tokens.
 *
 * Everything below runs as simulated threads of simulated processes, so it
 * only uses rt and the ravel APIs; the scenario's bookkeeping (the `locks_sc`
 * struct) is shared by all of them, which is safe because the world runs on
 * one OS thread and a simulated thread is never preempted between parks.
 */
#include "sim/common.h"
#include "sim/scenario.h"

#include "client/coord_client.h"
#include "obs/log.h"
#include "server/coord.h"
#include "server/coord_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COORD_PORT 7400
/* coord's data directory (coord.state and the SQLite config database), on its volume of the simulated disk. */
#define COORD_DATA_DIR "/var/lib/ravel/coord"
#define RESOURCE_PORT 9000
#define NLOCKS 2
#define ACQUIRE_TIMEOUT_NS (3 * RV_NS_PER_S)
#define RETRY_NS (200 * RV_NS_PER_MS)

static const char *const lock_names[NLOCKS] = {"acct-1", "acct-2"};

typedef struct locks_sc locks_sc;

typedef struct worker {
  locks_sc *sc;
  int client, index;
  rv_thread *t;
  int done;
  bool finished;
  char who[32];
} worker;

typedef struct client_proc {
  locks_sc *sc;
  int index;
  rv_sim_proc *proc;
  rv_coord_client *cc; /* one client per process, shared by its threads */
  worker workers[RV_SIM_LOCKS_THREADS_MAX];
} client_proc;

typedef struct res_conn {
  locks_sc *sc;
  rv_conn *c;
  rv_thread *t;
  struct res_conn *next;
} res_conn;

struct locks_sc {
  rv_sim_locks_opts o;
  rv_sim_locks_result *r;
  rv_sim_world *w;
  rv_sim_proc *coord_proc, *res_proc;
  client_proc clients[RV_SIM_LOCKS_CLIENTS_MAX];
  int clients_left;
  char dir[64];
  rv_coord *coord;
  bool coord_up;
  rv_ctx *res_stop;
  /* the resource's state */
  uint64_t res_hi[NLOCKS];     /* highest token accepted per lock (the fencing check) */
  uint64_t audit_hi[NLOCKS];   /* the same, kept by the auditor (independent of the check) */
  /* the coord lock table, as last observed */
  uint64_t lt_token[NLOCKS];
  uint64_t lt_session[NLOCKS];
  int64_t end_ns;
  sim_verdict verdict;
  sim_nemesis nemesis;
};

#define violation(sc, ...) SIM_VIOLATION(sc, __VA_ARGS__)

/* The diagnosis at the first violation: coord and every client process (sim_verdict's hook). */
static char *diagnose(void *arg) {
  locks_sc *sc = arg;
  rv_sim_proc *procs[RV_SIM_LOCKS_CLIENTS_MAX + 1];
  size_t n = 0;
  procs[n++] = sc->coord_proc;
  for (int i = 0; i < sc->o.clients; i++)
    procs[n++] = sc->clients[i].proc;
  return sim_diagnosis_text(procs, n, sc->coord_proc, sc->coord_up ? sc->coord : NULL, NULL);
}

static int lock_index(const char *name) {
  for (int i = 0; i < NLOCKS; i++)
    if (strcmp(lock_names[i], name) == 0)
      return i;
  return -1;
}

static uint64_t draw(locks_sc *sc, uint64_t n) { return rv_rng_below(rv_sim_rng(sc->w), n); }

/* ---- property: coord's lock table ------------------------------------------------------------ */

static void check_lock_table(void *arg) {
  locks_sc *sc = arg;
  if (!sc->coord_up)
    return;
  for (int i = 0; i < NLOCKS; i++) {
    rv_lt_lock_view v;
    rv_lt_str name = {lock_names[i], strlen(lock_names[i])};
    if (rv_lt_lock_get(sc->coord->lt, name, &v) != 0 || !v.held)
      continue;
    if (v.token < sc->lt_token[i])
      violation(sc, "fencing token of %s went backwards in coord's lock table: %" PRIu64
                " after %" PRIu64, lock_names[i], v.token, sc->lt_token[i]);
    else if (v.token == sc->lt_token[i] && v.holder_session != sc->lt_session[i])
      violation(sc, "two holders of %s with token %" PRIu64 " (sessions %" PRIu64 " and %" PRIu64
                ")", lock_names[i], v.token, sc->lt_session[i], v.holder_session);
    sc->lt_token[i] = v.token;
    sc->lt_session[i] = v.holder_session;
  }
}

/* ---- the coord process ---------------------------------------------------------------------- */

static void coord_main(void *arg) {
  locks_sc *sc = arg;
  rv_log *log = rv_log_new(2, RV_LOG_ERROR, "coord");
  rv_coord_opts o = {.host = rv_sim_proc_addr(sc->coord_proc), .port = COORD_PORT,
                     .no_admin = true, .data_dir = COORD_DATA_DIR, .log = log};
  sim_coord_serve(&sc->verdict, &o, &sc->coord, &sc->coord_up);
  rv_log_free(log);
}

/* ---- the resource process: fenced writes ---------------------------------------------------------- */

/* "W <lock> <token> <who>\n" -> "OK\n" | "STALE\n" */
static const char *res_apply(locks_sc *sc, char *line) {
  char lock[32], who[32];
  uint64_t token;
  if (sscanf(line, "W %31s %" SCNu64 " %31s", lock, &token, who) != 3)
    return "ERR\n";
  int i = lock_index(lock);
  if (i < 0)
    return "ERR\n";
  if (!sc->o.broken_fencing && token < sc->res_hi[i]) {
    sc->r->writes_rejected++;
    rv_sim_note(sc->w, "resource rejects %s token %" PRIu64 " from %s (seen %" PRIu64 ")", lock,
                token, who, sc->res_hi[i]);
    return "STALE\n";
  }
  if (token > sc->res_hi[i])
    sc->res_hi[i] = token;
  /* The auditor: an accepted write older than an accepted one means two holders acted at once. */
  if (token < sc->audit_hi[i])
    violation(sc, "resource accepted a write to %s with token %" PRIu64 " from %s after one with "
              "token %" PRIu64 ": two overlapping holders", lock, token, who, sc->audit_hi[i]);
  else
    sc->audit_hi[i] = token;
  sc->r->writes_ok++;
  return "OK\n";
}

static void res_conn_main(void *arg) {
  res_conn *rc = arg;
  char buf[256];
  size_t len = 0;
  for (;;) {
    ssize_t n = rv_conn_read(rc->c, buf + len, sizeof buf - 1 - len, NULL);
    if (n <= 0)
      break;
    len += (size_t)n;
    buf[len] = 0;
    char *nl;
    while ((nl = memchr(buf, '\n', len))) {
      *nl = 0;
      const char *reply = res_apply(rc->sc, buf);
      rv_conn_write_all(rc->c, reply, strlen(reply), NULL);
      size_t used = (size_t)(nl - buf) + 1;
      memmove(buf, nl + 1, len - used);
      len -= used;
    }
    if (len == sizeof buf - 1)
      break; /* no line that long in this protocol */
  }
  rv_conn_close(rc->c);
}

static void res_main(void *arg) {
  locks_sc *sc = arg;
  rv_listener *l;
  if (rv_tcp_listen(&l, rv_sim_proc_addr(sc->res_proc), RESOURCE_PORT, 64) != RV_OK) {
    violation(sc, "resource cannot listen");
    return;
  }
  res_conn *conns = NULL;
  for (;;) {
    rv_conn *c;
    if (rv_listener_accept(l, &c, sc->res_stop) != RV_OK)
      break;
    res_conn *rc = calloc(1, sizeof *rc);
    if (!rc) {
      rv_conn_close(c);
      continue;
    }
    rc->sc = sc;
    rc->c = c;
    if (rv_thread_start(&rc->t, "res-conn", "server", res_conn_main, rc) != RV_OK) {
      rv_conn_close(c);
      free(rc);
      continue;
    }
    rc->next = conns;
    conns = rc;
  }
  rv_listener_close(l);
  while (conns) {
    res_conn *rc = conns;
    conns = rc->next;
    rv_thread_join(rc->t);
    free(rc);
  }
}

/* ---- client processes ------------------------------------------------------------------------ */

static int res_dial(locks_sc *sc, rv_conn **out) {
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, ACQUIRE_TIMEOUT_NS);
  int rc = rv_tcp_connect(out, rv_sim_proc_addr(sc->res_proc), RESOURCE_PORT, ctx);
  rv_ctx_free(ctx);
  return rc;
}

/* One fenced write; false if the connection must be redialled. */
static bool res_write(worker *wk, rv_conn **c, const char *lock, uint64_t token) {
  locks_sc *sc = wk->sc;
  if (!*c && res_dial(sc, c) != RV_OK) {
    *c = NULL;
    return false;
  }
  char line[96];
  int n = snprintf(line, sizeof line, "W %s %" PRIu64 " %s\n", lock, token, wk->who);
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, 10 * RV_NS_PER_S);
  char reply[16];
  size_t got = 0;
  int rc = rv_conn_write_all(*c, line, (size_t)n, ctx);
  while (rc == RV_OK && (got == 0 || reply[got - 1] != '\n')) {
    ssize_t r = rv_conn_read(*c, reply + got, sizeof reply - 1 - got, ctx);
    if (r <= 0 || got + (size_t)r >= sizeof reply - 1)
      rc = r < 0 ? (int)r : RV_ECLOSED;
    else
      got += (size_t)r;
  }
  rv_ctx_free(ctx);
  if (rc != RV_OK) {
    rv_conn_close(*c);
    *c = NULL;
    return false;
  }
  return true;
}

static void worker_main(void *arg) {
  worker *wk = arg;
  locks_sc *sc = wk->sc;
  rv_coord_client *cc = sc->clients[wk->client].cc;
  rv_session *s = NULL;
  rv_conn *res = NULL;
  while (rv_now_ns() < sc->end_ns || wk->done < sc->o.min_acquisitions) {
    if (s && rv_session_lost(s)) {
      sc->r->session_losses++;
      rv_session_close(s);
      s = NULL;
    }
    if (!s) {
      rv_ctx *ctx = rv_ctx_with_timeout(NULL, ACQUIRE_TIMEOUT_NS);
      int rc = rv_session_open(ctx, cc, RV_SIM_LOCKS_TTL_MS, &s);
      rv_ctx_free(ctx);
      if (rc != RV_OK) {
        s = NULL;
        rv_sleep(NULL, RETRY_NS);
        continue;
      }
    }
    const char *lock = lock_names[draw(sc, NLOCKS)];
    rv_dlock *h;
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, ACQUIRE_TIMEOUT_NS);
    int rc = rv_dlock_acquire(ctx, s, lock, NULL, &h);
    rv_ctx_free(ctx);
    if (rc != RV_OK) {
      sc->r->acquire_failures++;
      if (rc != RV_EDEADLINE && rc != RV_ECANCELED)
        rv_sleep(NULL, RETRY_NS);
      continue;
    }
    uint64_t token = rv_dlock_token(h);
    sc->r->acquisitions++;
    rv_sim_note(sc->w, "%s holds %s token %" PRIu64, wk->who, lock, token);
    /* Hold: a few fenced writes.  Now and then the holder stalls past the TTL (a
     * paused process) and keeps acting on the lock: that is what fencing is for. */
    int writes = 1 + (int)draw(sc, 3);
    for (int i = 0; i < writes; i++) {
      int64_t pause = draw(sc, 10) == 0 ? 1500 * RV_NS_PER_MS + (int64_t)draw(sc, 2500) * RV_NS_PER_MS
                                        : (int64_t)draw(sc, 150) * RV_NS_PER_MS;
      rv_sleep(NULL, pause);
      if (!res_write(wk, &res, lock, token))
        res_write(wk, &res, lock, token); /* once more on a fresh connection */
    }
    rv_dlock_release(h);
    wk->done++;
    rv_sleep(NULL, (int64_t)draw(sc, 200) * RV_NS_PER_MS);
  }
  if (s) {
    if (rv_session_lost(s))
      sc->r->session_losses++;
    rv_session_close(s);
  }
  rv_conn_close(res);
  wk->finished = true;
  rv_sim_note(sc->w, "%s finished after %d acquisitions", wk->who, wk->done);
}

static void client_main(void *arg) {
  client_proc *cp = arg;
  locks_sc *sc = cp->sc;
  rv_coord_client_opts co = {.host = rv_sim_proc_addr(sc->coord_proc), .port = COORD_PORT,
                             .service = "sim", .host_name = rv_sim_proc_name(cp->proc)};
  char replica[16];
  snprintf(replica, sizeof replica, "%d", cp->index + 1);
  co.replica = replica;
  while (!cp->cc) {
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, ACQUIRE_TIMEOUT_NS);
    int rc = rv_coord_client_open(&cp->cc, ctx, &co);
    rv_ctx_free(ctx);
    if (rc != RV_OK) {
      cp->cc = NULL;
      rv_sleep(NULL, RETRY_NS); /* coord may not listen yet */
    }
  }
  for (int i = 0; i < sc->o.threads; i++) {
    worker *wk = &cp->workers[i];
    wk->sc = sc;
    wk->client = cp->index;
    wk->index = i;
    snprintf(wk->who, sizeof wk->who, "c%d.t%d", cp->index + 1, i + 1);
    if (rv_thread_start(&wk->t, wk->who, "worker", worker_main, wk) != RV_OK)
      wk->t = NULL;
  }
  for (int i = 0; i < sc->o.threads; i++)
    if (cp->workers[i].t)
      rv_thread_join(cp->workers[i].t);
  rv_coord_client_close(cp->cc);
  cp->cc = NULL;
  if (--sc->clients_left == 0) {
    /* Everyone is done: stop the servers so that the world ends cleanly. */
    if (sc->coord)
      rv_coord_stop(sc->coord);
    rv_ctx_cancel(sc->res_stop, "scenario over");
  }
}

/* ---- running -------------------------------------------------------------------------------------- */

int rv_sim_locks_run(const rv_sim_locks_opts *opts, rv_sim_locks_result *r) {
  memset(r, 0, sizeof *r);
  r->ok = true;
  locks_sc *sc = calloc(1, sizeof *sc);
  if (!sc)
    return RV_ENOMEM;
  sc->o = *opts;
  sim_opt_i64(&sc->o.virtual_ns, 60 * RV_NS_PER_S, 0);
  sim_opt_int(&sc->o.clients, 4, RV_SIM_LOCKS_CLIENTS_MAX);
  sim_opt_int(&sc->o.threads, 3, RV_SIM_LOCKS_THREADS_MAX);
  sim_opt_int(&sc->o.min_acquisitions, 3, 0);
  sc->r = r;
  sc->end_ns = sc->o.virtual_ns;
  int rc = sim_stage_open(&sc->w, sc->dir, sizeof sc->dir, sc->o.seed, r->violation,
                          sizeof r->violation);
  if (rc != RV_OK) {
    r->ok = false;
    free(sc);
    return rc;
  }
  sc->verdict = SIM_VERDICT_OF(sc->w, r);
  sc->verdict.diagnose = diagnose;
  sc->verdict.diagnose_arg = sc;
  sc->coord_proc = rv_sim_proc_new(sc->w, "coord");
  sc->res_proc = rv_sim_proc_new(sc->w, "resource");
  sc->res_stop = rv_ctx_new(NULL);
  sc->clients_left = sc->o.clients;
  rv_sim_spawn(sc->coord_proc, "coord-loop", "server", coord_main, sc);
  rv_sim_spawn(sc->res_proc, "res-accept", "server", res_main, sc);
  for (int i = 0; i < sc->o.clients; i++) {
    char name[RV_SIM_NAME_MAX];
    snprintf(name, sizeof name, "client-%d", i + 1);
    client_proc *cp = &sc->clients[i];
    cp->sc = sc;
    cp->index = i;
    cp->proc = rv_sim_proc_new(sc->w, name);
    rv_sim_spawn(cp->proc, "main", "main", client_main, cp);
  }
  sim_nemesis_init(&sc->nemesis, sc->w, sc->coord_proc, sc->end_ns - (sc->end_ns * 15) / 100, &r->partitions);
  for (int i = 0; i < sc->o.clients; i++)
    sc->nemesis.targets[sc->nemesis.ntargets++].proc = sc->clients[i].proc;
  if (!sc->o.no_partitions)
    sim_nemesis_start(&sc->nemesis, 2 * RV_NS_PER_S + (int64_t)draw(sc, 3000) * RV_NS_PER_MS);
  rv_sim_set_step_hook(sc->w, check_lock_table, sc);

  rc = SIM_RUN(sc->w, sc->end_ns + RV_SIM_LOCKS_LIVENESS_NS, r);
  if (r->ok && rc != RV_OK) {
    int unfinished = 0, least = -1;
    for (int i = 0; i < sc->o.clients; i++)
      for (int j = 0; j < sc->o.threads; j++)
        if (!sc->clients[i].workers[j].finished) {
          unfinished++;
          if (least < 0 || sc->clients[i].workers[j].done < least)
            least = sc->clients[i].workers[j].done;
        }
    r->ok = false;
    r->violation_at = r->virtual_ns;
    snprintf(r->violation, sizeof r->violation,
             "liveness: %d client threads unfinished %.0f s after the workload ended (fewest "
             "acquisitions: %d; %s)",
             unfinished, (double)RV_SIM_LOCKS_LIVENESS_NS / RV_NS_PER_S, least,
             rc == RV_EDEADLK ? "every thread blocked for good" : "virtual time ran out");
  }
  sim_verdict_finish(&sc->verdict);
  sim_stage_close(sc->w);
  rv_ctx_free(sc->res_stop);
  free(sc);
  return RV_OK;
}
