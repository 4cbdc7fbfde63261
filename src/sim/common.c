/* Shared by the simulator's scenarios: see common.h. */
#include "sim/common.h"

#include "client/queue_client.h"
#include "diag/grab.h"
#include "diag/unravel.h"
#include "obs/dump.h"
#include "obs/registry.h"
#include "server/coord_internal.h"
#include "server/queue_internal.h"

#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *trace_text(rv_sim_world *w) {
  char *text = NULL;
  size_t len;
  FILE *f = open_memstream(&text, &len);
  if (f) {
    rv_sim_trace_print(w, f, SIM_TRACE_EVENTS);
    fclose(f);
  }
  return text;
}

void sim_violation(sim_verdict *v, const char *fmt, ...) {
  if (!*v->ok)
    return;
  *v->ok = false;
  *v->violation_at = rv_sim_now(v->w);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->violation, v->violation_cap, fmt, ap);
  va_end(ap);
  rv_sim_note(v->w, "VIOLATION %.60s", v->violation);
  v->trace_at_first = trace_text(v->w);
  if (v->diagnose && v->diagnosis) {
    char *text = v->diagnose(v->diagnose_arg);
    snprintf(v->diagnosis, v->diagnosis_cap, "%s", text ? text : "(no diagnosis)\n");
    free(text);
  }
  if (v->stop_world)
    rv_sim_stop(v->w);
}

void sim_verdict_finish(sim_verdict *v) {
  if (!*v->ok) {
    if (!v->trace_at_first)
      v->trace_at_first = trace_text(v->w);
    if (v->trace_at_first)
      snprintf(v->trace, v->trace_cap, "%s", v->trace_at_first);
  }
  free(v->trace_at_first);
  v->trace_at_first = NULL;
}

static uint64_t draw(rv_sim_world *w, uint64_t n) { return rv_rng_below(rv_sim_rng(w), n); }

static void heal(void *arg) {
  sim_nemesis_target *t = arg;
  t->cut = false;
  rv_sim_partition(t->n->w, t->proc, t->n->server, false);
}

static void strike(void *arg) {
  sim_nemesis *n = arg;
  int64_t now = rv_sim_now(n->w);
  if (now >= n->stop_ns || n->ntargets == 0)
    return;
  sim_nemesis_target *t = &n->targets[draw(n->w, (uint64_t)n->ntargets)];
  int64_t len = 500 * RV_NS_PER_MS + (int64_t)draw(n->w, 3500) * RV_NS_PER_MS;
  if (!t->cut) {
    t->cut = true;
    rv_sim_partition(n->w, t->proc, n->server, true);
    if (n->partitions)
      (*n->partitions)++;
    rv_sim_at(n->w, now + len, heal, t);
  }
  rv_sim_at(n->w, now + len + RV_NS_PER_S + (int64_t)draw(n->w, 6000) * RV_NS_PER_MS, strike, n);
}

void sim_nemesis_start(sim_nemesis *n, int64_t first_ns) {
  for (int i = 0; i < n->ntargets; i++)
    n->targets[i].n = n;
  rv_sim_at(n->w, first_ns, strike, n);
}

void sim_nemesis_init(sim_nemesis *n, rv_sim_world *w, rv_sim_proc *server, int64_t stop_ns,
                      uint64_t *partitions) {
  memset(n, 0, sizeof *n);
  n->w = w;
  n->server = server;
  n->stop_ns = stop_ns;
  n->partitions = partitions;
}

int sim_stage_open(rv_sim_world **w, char *dir, size_t dircap, uint64_t seed, char *why,
                   size_t whylen) {
  snprintf(dir, dircap, "%s", SIM_DATA_DIR);
  rv_sim_opts wo = {.seed = seed, .latency_min_ns = 200 * RV_NS_PER_US,
                    .latency_max_ns = 5 * RV_NS_PER_MS};
  int rc = rv_sim_world_new(w, &wo);
  if (rc != RV_OK)
    snprintf(why, whylen, "cannot create the world: %s", rv_strerror(rc));
  return rc;
}

void sim_stage_close(rv_sim_world *w) {
  /* A world that ended on a violation still holds live threads: their memory is abandoned. */
  rv_sim_world_free(w);
}

int sim_run(rv_sim_world *w, int64_t until, int64_t *wall_ns, int64_t *virtual_ns, uint64_t *hash,
            uint64_t *events) {
  int64_t wall0 = rv_now_ns();
  int rc = rv_sim_run(w, until);
  *wall_ns = rv_now_ns() - wall0;
  *virtual_ns = rv_sim_now(w);
  *hash = rv_sim_hash(w);
  *events = rv_sim_events(w);
  return rc;
}

/* ---- the diagnosis: a grab collection of the simulated world, read by unravel --------------- */

static bool save_json(const char *dir, const char *sub, const char *name, json_t *j) {
  char path[PATH_MAX];
  if (sub) {
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
      json_decref(j);
      return false;
    }
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
  } else {
    snprintf(path, sizeof path, "%s/%s", dir, name);
  }
  bool ok = j && json_dump_file(j, path, JSON_COMPACT) == 0;
  json_decref(j);
  return ok;
}

static int64_t ms_of(int64_t ns) { return ns / RV_NS_PER_MS; }

static json_t *identity_json(json_t *o, const rv_lt_identity_view *id) {
  json_object_set_new(o, "service", json_string(id->service));
  json_object_set_new(o, "replica", json_string(id->replica));
  json_object_set_new(o, "host", json_string(id->host));
  json_object_set_new(o, "pid", json_integer(id->pid));
  json_object_set_new(o, "admin", json_string(id->admin_url));
  return o;
}

static bool session_row(const rv_lt_session_view *v, void *arg) {
  json_t *o = json_object();
  json_object_set_new(o, "session", json_integer((json_int_t)v->id));
  identity_json(o, &v->identity);
  json_object_set_new(o, "ttl_ms", json_integer(ms_of(v->ttl_ns)));
  json_object_set_new(o, "held", json_integer((json_int_t)v->held));
  json_object_set_new(o, "waiting", json_integer((json_int_t)v->waiting));
  json_array_append_new(arg, o);
  return true;
}

typedef struct lock_rows {
  const rv_lt *lt;
  json_t *arr, *waiters;
  int64_t now;
} lock_rows;

static bool waiter_row(const rv_lt_waiter_view *v, void *arg) {
  lock_rows *l = arg;
  json_t *o = json_object();
  json_object_set_new(o, "position", json_integer((json_int_t)v->position));
  json_object_set_new(o, "session", json_integer((json_int_t)v->session_id));
  identity_json(o, &v->identity);
  json_object_set_new(o, "description", json_string(v->description));
  json_object_set_new(o, "waiting_ms", json_integer(ms_of(l->now - v->since_ns)));
  json_array_append_new(l->waiters, o);
  return true;
}

/* One lock as LOCK.LIST gives it (coord.c's out_lock), waiters included. */
static bool lock_row(const rv_lt_lock_view *v, void *arg) {
  lock_rows *l = arg;
  json_t *o = json_object();
  json_object_set_new(o, "lock", json_string(v->name));
  json_object_set_new(o, "held", json_integer(v->held));
  json_object_set_new(o, "token", json_integer((json_int_t)v->token));
  json_object_set_new(o, "holder_session", json_integer((json_int_t)v->holder_session));
  identity_json(o, &v->holder_identity);
  json_object_set_new(o, "description", json_string(v->holder_description));
  json_object_set_new(o, "held_ms", json_integer(v->held ? ms_of(l->now - v->held_since_ns) : 0));
  json_object_set_new(o, "waiter_count", json_integer((json_int_t)v->waiters));
  json_object_set_new(o, "oldest_wait_ms",
                      json_integer(v->waiters ? ms_of(l->now - v->oldest_waiter_since_ns) : 0));
  l->waiters = json_array();
  rv_lt_lock_waiters(l->lt, (rv_lt_str){v->name, strlen(v->name)}, waiter_row, l);
  json_object_set_new(o, "waiters", l->waiters);
  json_array_append_new(l->arr, o);
  return true;
}

typedef struct queue_rows {
  rv_qsrv *q;
  json_t *arr;
} queue_rows;

/* A client as /stats lists it (the keys unravel reads): the id the consumer sent in IDENTIFY. */
static bool client_row(const rv_queue_consumer_stats *cs, void *arg) {
  const qconn *c = (const qconn *)(uintptr_t)cs->cookie;
  json_array_append_new(
      arg, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}", "client_id",
                     c && c->identified ? c->ident.client_id : "", "ready_count",
                     (json_int_t)cs->ready_count, "in_flight_count",
                     (json_int_t)cs->in_flight_count, "message_count",
                     (json_int_t)cs->message_count, "finish_count", (json_int_t)cs->finish_count,
                     "requeue_count", (json_int_t)cs->requeue_count, "timeout_count",
                     (json_int_t)cs->timeout_count, "held_count", (json_int_t)cs->held_count,
                     "timeout_notify", (int)cs->timeout_notify, "hold_slots", (int)cs->hold_slots));
  return true;
}

static bool channel_row(const rv_queue_channel_stats *cs, void *arg) {
  queue_rows *r = arg;
  json_t *clients = json_array();
  rv_queue_consumer_list(r->q->q, cs->handle, client_row, clients);
  json_array_append_new(
      r->arr, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "channel_name", cs->name,
                        "depth", (json_int_t)cs->depth, "in_flight_count",
                        (json_int_t)cs->in_flight_count, "deferred_count",
                        (json_int_t)cs->deferred_count, "message_count",
                        (json_int_t)cs->message_count, "timeout_count",
                        (json_int_t)cs->timeout_count, "held_count", (json_int_t)cs->held_count,
                        "clients", clients));
  return true;
}

static bool topic_row(const rv_queue_topic_stats *ts, void *arg) {
  queue_rows *r = arg;
  queue_rows ch = {r->q, json_array()};
  rv_queue_channel_list(r->q->q, ts->handle, channel_row, &ch);
  json_array_append_new(r->arr, json_pack("{s:s, s:I, s:I, s:o}", "topic_name", ts->name, "depth",
                                          (json_int_t)ts->depth, "message_count",
                                          (json_int_t)ts->message_count, "channels", ch.arr));
  return true;
}

/* A process's threads.json: its registry's dump, under its simulated pid. */
static bool save_threads(const char *dir, const char *sub, const rv_sim_proc *p) {
  rv_snapshot *snap = rv_snapshot_take(rv_sim_proc_registry(p));
  if (!snap)
    return false;
  snap->pid = rv_sim_proc_pid(p); /* taken on the scheduler: no current process */
  rv_deadlocks *d = rv_deadlocks_find(snap);
  char *text = rv_dump_render(snap, d, RV_DUMP_THREADS, RV_DUMP_JSON);
  rv_deadlocks_free(d);
  rv_snapshot_free(snap);
  json_t *j = text ? json_loads(text, 0, NULL) : NULL;
  free(text);
  return save_json(dir, sub, "threads.json", j);
}

static bool pid_has_session(const rv_lt_session_view *v, void *arg) {
  int *pid = arg;
  if (v->identity.pid == *pid) {
    *pid = -1;
    return false;
  }
  return true;
}

char *sim_diagnose(rv_sim_proc *const *procs, size_t nprocs, const rv_sim_proc *coord_proc,
                   struct rv_coord *coord, struct rv_qsrv *queue, char *why, size_t whylen) {
  char dir[64];
  snprintf(dir, sizeof dir, "/tmp/ravel-sim-diag-XXXXXX");
  if (!mkdtemp(dir)) {
    snprintf(why, whylen, "cannot create a temporary directory: %s", strerror(errno));
    return NULL;
  }
  int64_t now = rv_now_ns();
  bool ok = true;
  json_t *mprocs = json_array();
  for (size_t i = 0; i < nprocs && i < SIM_DIAG_PROCS_MAX; i++) {
    const rv_sim_proc *p = procs[i];
    char sub[RV_SIM_NAME_MAX + 8];
    rv_grab_sanitize(rv_sim_proc_name(p), sub, sizeof sub);
    int pid = rv_sim_proc_pid(p);
    /* A process with a coord session is a service (unravel names it SERVICE/REPLICA from it). */
    const char *kind = p == coord_proc ? "coord" : "target";
    if (coord && p != coord_proc) {
      int probe = pid;
      rv_lt_session_list(coord->lt, pid_has_session, &probe);
      if (probe < 0)
        kind = "service";
    }
    ok &= save_threads(dir, sub, p);
    json_array_append_new(mprocs, json_pack("{s:s, s:s, s:i, s:b, s:b, s:[s], s:[]}", "dir", sub,
                                            "kind", kind, "pid", pid, "answered", 1,
                                            "stacks_from_outside", 0, "files", "threads.json",
                                            "failed"));
  }
  if (coord) {
    json_t *sessions = json_array();
    rv_lt_session_list(coord->lt, session_row, sessions);
    ok &= save_json(dir, "coord", "sessions.json", sessions);
    lock_rows l = {coord->lt, json_array(), NULL, now};
    rv_lt_lock_list(coord->lt, NULL, lock_row, &l);
    ok &= save_json(dir, "coord", "lock-table.json", l.arr);
  }
  if (queue) {
    queue_rows r = {queue, json_array()};
    rv_queue_topic_list(queue->q, topic_row, &r);
    ok &= save_json(dir, "queue", "stats.json", json_pack("{s:o}", "topics", r.arr));
  }
  char caddr[RV_SIM_NAME_MAX + 16] = "", qaddr[96] = "";
  if (coord)
    snprintf(caddr, sizeof caddr, "%s:%u", rv_sim_proc_name(coord_proc), coord->port);
  if (queue)
    snprintf(qaddr, sizeof qaddr, "%s:%u", queue->host, queue->tcp_port);
  json_t *manifest = json_pack(
      "{s:s, s:I, s:i, s:i, s:s?, s:s?, s:o, s:[]}", "format", RV_GRAB_FORMAT, "taken_at_ms",
      (json_int_t)(rv_wall_ns() / RV_NS_PER_MS), "bound_ms", 0, "elapsed_ms", 0, "coord",
      coord ? caddr : NULL, "queue", queue ? qaddr : NULL, "processes", mprocs, "failed");
  ok &= save_json(dir, NULL, "manifest.json", manifest);
  char *text = NULL;
  if (!ok) {
    snprintf(why, whylen, "cannot write the collection in %s", dir);
  } else {
    json_t *res = rv_unravel_dir(dir, NULL, why, whylen);
    const char *t = res ? json_string_value(json_object_get(res, "text")) : NULL;
    if (t && !(text = strdup(t)))
      snprintf(why, whylen, "out of memory");
    else if (res && !t)
      snprintf(why, whylen, "unravel gave no text");
    json_decref(res);
  }
  rv_grab_rmtree(dir);
  return text;
}

rv_producer *sim_producer_open(const char *host, uint16_t port, int64_t retry_ns) {
  rv_producer_opts po = {.host = host, .port = port};
  rv_producer *p = NULL;
  for (;;) {
    rv_ctx *ctx = rv_ctx_with_timeout(NULL, 3 * RV_NS_PER_S);
    int rc = rv_producer_open(&p, ctx, &po);
    rv_ctx_free(ctx);
    if (rc == RV_OK)
      return p;
    rv_sleep(NULL, retry_ns);
  }
}

char *sim_diagnosis_text(rv_sim_proc *const *procs, size_t nprocs, const rv_sim_proc *coord_proc,
                         struct rv_coord *coord, struct rv_qsrv *queue) {
  char why[256];
  char *text = sim_diagnose(procs, nprocs, coord_proc, coord, queue, why, sizeof why);
  if (!text && (text = malloc(sizeof why + 32)))
    snprintf(text, sizeof why + 32, "(no diagnosis: %s)\n", why);
  return text;
}

void sim_coord_serve(sim_verdict *v, const rv_coord_opts *o, rv_coord **coord, bool *up) {
  char why[256];
  if (rv_coord_start(coord, o, why, sizeof why) != RV_OK) {
    sim_violation(v, "coord did not start: %s", why);
    return;
  }
  *up = true;
  rv_coord_run(*coord);
  *up = false;
  rv_coord_free(*coord);
  *coord = NULL;
}
