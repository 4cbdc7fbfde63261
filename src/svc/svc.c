/* The reference service from the incident: see svc.h. */
#include "svc/svc.h"

#include "client/coord_client.h"
#include "client/queue_client.h"
#include "diag/grab.h"
#include "obs/admin.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "obs/dump.h"
#include "obs/registry.h"
#include "rt/ctx.h"
#include "rt/rt.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const bug_names[RV_SVC_BUG_COUNT] = {
    [RV_SVC_BUG_RELEASE] = "release", [RV_SVC_BUG_REBUILD] = "rebuild",
    [RV_SVC_BUG_CANCEL] = "cancel",   [RV_SVC_BUG_HELD] = "held",
    [RV_SVC_BUG_DETECT] = "detect",
};

const char *rv_svc_bug_name(enum rv_svc_bug b) {
  return (unsigned)b < RV_SVC_BUG_COUNT ? bug_names[b] : NULL;
}

int rv_svc_bug_parse(const char *s) {
  for (int i = 0; s && i < RV_SVC_BUG_COUNT; i++)
    if (strcmp(s, bug_names[i]) == 0)
      return i;
  return -1;
}

/* One history sample (see RV_SVC_HISTORY_MAX in svc.h). */
typedef struct sample {
  int64_t t_ms;
  double rate, handler_threads, cache_waiters, dlock_waits, in_flight, held, timeouts, late_fins,
      rebuilds;
} sample;

/* The "upstream client" the cache builds from config. */
typedef struct upstream {
  char url[256];
} upstream;

struct rv_svc {
  rv_svc_opts o;
  char replica[16];
  char service[128];
  rv_log *log;
  bool own_log;
  rv_registry *reg;           /* the process's registry, as of rv_svc_start */
  rv_metrics *metrics;
  rv_admin *admin;
  rv_coord_client *coord;
  rv_session *session;        /* the current one: handlers read it (__atomic) */
  rv_session *sessions[RV_SVC_SESSIONS_MAX]; /* every one opened (main thread) */
  size_t nsessions;
  int64_t session_retry_at_ns;  /* main thread */
  rv_config_cache *cache;     /* set once; read by the collector (__atomic) */
  rv_consumer *consumer;      /* set once; read by the collector (__atomic) */
  /* Children kept for the hot path. */
  rv_counter_child *messages, *requeued, *upstream_calls, *session_reopens, *snapshots;
  int64_t snapshot_at_ns;       /* main thread: when the next snapshot is due */
  rv_gauge_child *dlock_in_progress, *rate;
  /* rv_svc_tick's last sample (main thread only). */
  int64_t rate_at_ns;
  double rate_count;
  /* The history ring: written by rv_svc_tick, read by the admin server's
   * thread (GET /debug/history); both under history_mu, a raw mutex held only
   * to copy samples in or out (never across a blocking call). */
  rv_rawmu history_mu;
  sample history[RV_SVC_HISTORY_MAX];
  size_t history_next, history_len; /* next slot to write; samples kept */
};

/* ---- the cache's object ---------------------------------------------------------------------- */

static int build_upstream(void *arg, const char *const *values, void **obj) {
  upstream *u = calloc(1, sizeof *u);
  if (!u)
    return RV_ENOMEM;
  snprintf(u->url, sizeof u->url, "%s", values[0] ? values[0] : "https://upstream.invalid");
  *obj = u;
  return RV_OK;
}

static void destroy_upstream(void *arg, void *obj) { free(obj); }

/* ---- the handler ------------------------------------------------------------------------------- */

/* One event: "RESOURCE ITEM ITEM ...". */
static int handle(rv_ctx *ctx, const rv_message *m, void *arg) {
  rv_svc *s = arg;
  char event[RV_SVC_EVENT_MAX];
  size_t n = m->len < sizeof event - 1 ? m->len : sizeof event - 1;
  memcpy(event, m->body, n);
  event[n] = 0;
  char *save = NULL;
  const char *resource = strtok_r(event, " \t\r\n", &save);
  if (!resource) { /* nothing to do for an empty event */
    rv_counter_inc(s->messages);
    return RV_MSG_FINISH;
  }
  rv_thread_set_task("msg %s resource=%s", m->id_str, resource);

  /* The distributed lock; the wait honours the handler's context (when the
   * cancel fix is on, a timed-out message gives up here). */
  rv_dlock *lock;
  rv_gauge_inc(s->dlock_in_progress);
  int rc = rv_dlock_acquire(ctx, __atomic_load_n(&s->session, __ATOMIC_ACQUIRE), resource, NULL,
                           &lock);
  rv_gauge_dec(s->dlock_in_progress);
  if (rc != RV_OK) {
    rv_thread_set_task(NULL);
    rv_counter_inc(s->requeued);
    rv_message_set_requeue_delay(m, 100);
    return RV_MSG_REQUEUE;
  }

  bool release_at_exit = s->o.bugs[RV_SVC_BUG_RELEASE];
  uint64_t deferred[RV_SVC_ITEMS_MAX];
  int ndeferred = 0, nitems = 0;
  int64_t latency = s->o.upstream_latency_ms * RV_NS_PER_MS;
  rc = RV_OK;
  for (const char *item = strtok_r(NULL, " \t\r\n", &save); item && nitems < RV_SVC_ITEMS_MAX;
       item = strtok_r(NULL, " \t\r\n", &save), nitems++) {
    void *obj;
    uint64_t token;
    /* The read lock's wait honours the context too: with the cancel fix, a
     * handler whose message timed out gives up even here, and its deferred
     * releases below let a queued config writer through. */
    if ((rc = rv_config_cache_obtain_ctx(s->cache, ctx, &obj, &token)) != RV_OK)
      break;
    upstream *u = obj;
    (void)u; /* the simulated upstream call to u->url for this item */
    rc = latency > 0 ? rv_sleep(ctx, latency) : rv_ctx_err(ctx);
    rv_counter_inc(s->upstream_calls);
    if (release_at_exit)
      deferred[ndeferred++] = token; /* the bug: `defer release()` inside the loop */
    else
      rv_config_cache_release(s->cache, token); /* the fix: at the end of each iteration */
    if (rc != RV_OK)
      break; /* the call failed with the context: give up on this message */
  }
  /* Function exit: the deferred releases run, last first. */
  while (ndeferred > 0)
    rv_config_cache_release(s->cache, deferred[--ndeferred]);
  rv_dlock_release(lock);
  rv_thread_set_task(NULL);
  if (rc != RV_OK) {
    rv_counter_inc(s->requeued);
    rv_message_set_requeue_delay(m, 100);
    return RV_MSG_REQUEUE;
  }
  rv_counter_inc(s->messages);
  return RV_MSG_FINISH;
}

/* ---- metrics computed at scrape time ----------------------------------------------------------- */

static void write_one(rv_metrics_writer *w, const rv_svc *s, const char *name, const char *help,
                      enum rv_metric_type type, double v) {
  if (rv_metrics_write_family(w, name, help, type) == RV_OK)
    rv_metrics_write_sample(w, (const char *const[]){"replica", s->replica, NULL}, v);
}

/* Threads waiting (read or write) for the client cache's rwlock, from the registry. */
static size_t cache_waiters(void) {
  size_t waiters = 0;
  rv_snapshot *snap = rv_snapshot_take(rv_registry_current());
  for (size_t i = 0; snap && i < snap->nthreads; i++) {
    const rv_wait *wt = &snap->threads[i].wait;
    if ((wt->kind == RV_WAIT_RDLOCK || wt->kind == RV_WAIT_WRLOCK) &&
        strcmp(wt->what, RV_SVC_CACHE_LOCK) == 0)
      waiters++;
  }
  rv_snapshot_free(snap);
  return waiters;
}

/* The consumer's and the cache's counters (zeros before they exist; any thread). */
static void component_stats(rv_svc *s, rv_consumer_stats *cs, rv_config_cache_stats *ks) {
  rv_consumer *cons = __atomic_load_n(&s->consumer, __ATOMIC_ACQUIRE);
  rv_config_cache *cache = __atomic_load_n(&s->cache, __ATOMIC_ACQUIRE);
  *cs = (rv_consumer_stats){0};
  *ks = (rv_config_cache_stats){0};
  if (cons)
    rv_consumer_stats_get(cons, cs);
  if (cache)
    rv_config_cache_stats_get(cache, ks);
}

/* The slots the queue holds for this consumer (timed-out messages whose handler still runs). */
static double held_slots(const rv_consumer_stats *cs) { return (double)cs->held_slots; }

static void collect(rv_metrics_writer *w, void *arg) {
  rv_svc *s = arg;
  rv_consumer_stats cs;
  rv_config_cache_stats ks;
  component_stats(s, &cs, &ks);
  size_t waiters = cache_waiters();
  write_one(w, s, "ravel_svc_handler_threads", "Handler threads alive.", RV_METRIC_GAUGE,
            (double)cs.handler_threads_alive);
  write_one(w, s, "ravel_svc_cache_waiters",
            "Threads waiting for the client-cache rwlock (read or write).", RV_METRIC_GAUGE,
            (double)waiters);
  write_one(w, s, "ravel_svc_in_flight", "Messages delivered whose handler has not answered.",
            RV_METRIC_GAUGE, (double)cs.in_flight);
  write_one(w, s, "ravel_svc_received_total", "Messages delivered to this replica.",
            RV_METRIC_COUNTER, (double)cs.received);
  write_one(w, s, "ravel_svc_timeouts_total",
            "Message timeout notifications received from the queue.", RV_METRIC_COUNTER,
            (double)cs.timeouts_notified);
  write_one(w, s, "ravel_svc_handlers_cancelled_total",
            "Handler contexts cancelled because their message timed out.", RV_METRIC_COUNTER,
            (double)cs.handlers_cancelled);
  write_one(w, s, "ravel_svc_late_fins_total",
            "FINs the queue refused because the message had timed out.", RV_METRIC_COUNTER,
            (double)cs.late_fins);
  write_one(w, s, "ravel_svc_late_reqs_total",
            "REQs the queue refused because the message had timed out.", RV_METRIC_COUNTER,
            (double)cs.late_reqs);
  write_one(w, s, "ravel_svc_config_rebuilds_total",
            "Upstream clients rebuilt by the config watcher (after the first build).",
            RV_METRIC_COUNTER, (double)ks.rebuilds);
  write_one(w, s, "ravel_svc_config_events_total", "Config watch events seen by the cache.",
            RV_METRIC_COUNTER, (double)ks.events);
  write_one(w, s, "ravel_svc_queue_connected", "1 while the consumer is connected.",
            RV_METRIC_GAUGE, cs.connected ? 1 : 0);
  write_one(w, s, "ravel_svc_held_slots",
            "Slots the queue holds for this replica: timed-out messages whose handler still runs.",
            RV_METRIC_GAUGE, held_slots(&cs));
  write_one(w, s, "ravel_svc_hold_slots_granted", "1 if the queue granted held slots.",
            RV_METRIC_GAUGE, cs.hold_slots_granted ? 1 : 0);
  write_one(w, s, "ravel_svc_timeout_notify_granted",
            "1 if the queue granted timeout notifications.", RV_METRIC_GAUGE,
            cs.timeout_notify_granted ? 1 : 0);
}

static int register_metrics(rv_svc *s) {
  const char *const lr[] = {"replica", NULL};
  rv_metrics *m = s->metrics;
  s->messages = rv_counter_labels(
      rv_metrics_counter(m, "ravel_svc_messages_total", "Messages handled and finished.", lr),
      s->replica);
  s->requeued = rv_counter_labels(
      rv_metrics_counter(m, "ravel_svc_messages_requeued_total",
                         "Messages requeued (lock or upstream call ended by the context).", lr),
      s->replica);
  s->session_reopens = rv_counter_labels(
      rv_metrics_counter(m, "ravel_svc_session_reopens_total",
                         "Coord sessions opened to replace a lost one.", lr),
      s->replica);
  s->snapshots = rv_counter_labels(
      rv_metrics_counter(m, "ravel_svc_snapshots_total",
                         "Periodic snapshots written (--snapshot-dir).", lr),
      s->replica);
  s->upstream_calls = rv_counter_labels(
      rv_metrics_counter(m, "ravel_svc_upstream_calls_total", "Simulated upstream calls made.",
                         lr),
      s->replica);
  s->dlock_in_progress = rv_gauge_labels(
      rv_metrics_gauge(m, "ravel_svc_dlock_acquisitions_in_progress",
                       "Distributed lock acquisitions waiting for the lock.", lr),
      s->replica);
  s->rate = rv_gauge_labels(
      rv_metrics_gauge(m, "ravel_svc_messages_per_second",
                       "Messages finished per second, over the last second or so.", lr),
      s->replica);
  rv_gauge *bug = rv_metrics_gauge(m, "ravel_svc_bug",
                                   "1 if the replica runs with this incident bug, 0 if fixed.",
                                   (const char *const[]){"replica", "bug", NULL});
  for (int i = 0; i < RV_SVC_BUG_COUNT; i++)
    rv_gauge_set(rv_gauge_labels(bug, s->replica, bug_names[i]), s->o.bugs[i] ? 1 : 0);
  rv_gauge_set(rv_gauge_labels(rv_metrics_gauge(m, "ravel_svc_info", "The replica's identity.",
                                                (const char *const[]){"replica", "service", NULL}),
                               s->replica, s->service),
               1);
  if (!s->messages || !s->requeued || !s->upstream_calls || !s->dlock_in_progress || !s->rate ||
      !bug)
    return RV_EINVAL;
  return rv_metrics_add_collector(m, collect, s);
}

/* ---- history ------------------------------------------------------------------------------------ */


/* Append one sample (main thread, from rv_svc_tick). */
static void history_take(rv_svc *s, double rate) {
  rv_consumer_stats cs;
  rv_config_cache_stats ks;
  component_stats(s, &cs, &ks);
  sample x = {.t_ms = rv_wall_ns() / RV_NS_PER_MS,
              .rate = rate,
              .handler_threads = (double)cs.handler_threads_alive,
              .cache_waiters = (double)cache_waiters(),
              .dlock_waits = rv_gauge_value(s->dlock_in_progress),
              .in_flight = (double)cs.in_flight,
              .held = held_slots(&cs),
              .timeouts = (double)cs.timeouts_notified,
              .late_fins = (double)cs.late_fins,
              .rebuilds = (double)ks.rebuilds};
  rv_rawmu_lock(&s->history_mu);
  s->history[s->history_next] = x;
  s->history_next = (s->history_next + 1) % RV_SVC_HISTORY_MAX;
  if (s->history_len < RV_SVC_HISTORY_MAX)
    s->history_len++;
  rv_rawmu_unlock(&s->history_mu);
}

/* The history as JSON (any thread): the ring is copied out under its lock and
 * formatted outside it.  NULL on ENOMEM. */
static char *history_json(rv_svc *s) {
  sample *copy = malloc(sizeof s->history);
  json_t *root = json_object(), *arr = json_array();
  char *text = NULL;
  if (copy && root && arr) {
    rv_rawmu_lock(&s->history_mu);
    size_t n = s->history_len;
    size_t first = (s->history_next + RV_SVC_HISTORY_MAX - n) % RV_SVC_HISTORY_MAX;
    for (size_t i = 0; i < n; i++)
      copy[i] = s->history[(first + i) % RV_SVC_HISTORY_MAX];
    rv_rawmu_unlock(&s->history_mu);
    json_object_set_new(root, "service", json_string(s->service));
    json_object_set_new(root, "replica", json_string(s->replica));
    json_object_set_new(root, "interval_ms", json_integer(RV_SVC_HISTORY_INTERVAL_MS));
    for (size_t i = 0; i < n; i++) {
      const sample *x = &copy[i];
      json_array_append_new(
          arr, json_pack("{sI sf sf sf sf sf sf sf sf sf}", "t_ms", (json_int_t)x->t_ms, "rate",
                         x->rate, "handler_threads", x->handler_threads, "cache_waiters",
                         x->cache_waiters, "dlock_waits", x->dlock_waits, "in_flight",
                         x->in_flight, "held", x->held, "timeouts", x->timeouts, "late_fins",
                         x->late_fins, "rebuilds", x->rebuilds));
    }
    json_object_set(root, "samples", arr);
    text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
  }
  free(copy);
  json_decref(arr);
  json_decref(root);
  return text;
}

/* GET /debug/history (the admin server's thread). */
static void history_route(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  char *text = history_json(arg);
  if (!text) {
    resp->status = 500;
    rv_admin_printf(resp, "out of memory\n");
    return;
  }
  resp->content_type = "application/json";
  resp->body = text;
  resp->body_len = strlen(text);
}

/* ---- periodic snapshots (see svc.h) ------------------------------------------------------------ */

static bool write_text(const char *dir, const char *name, char *text) {
  if (!text)
    return false;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  bool ok = f && fputs(text, f) >= 0;
  if (f && fclose(f) != 0)
    ok = false;
  free(text);
  return ok;
}

static int snap_name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Remove all but the newest `keep` snap-* folders of dir (names sort by time). */
static void snapshot_prune(const char *dir, int keep) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  char **names = NULL;
  size_t n = 0, cap = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (strncmp(e->d_name, "snap-", 5) != 0 || strstr(e->d_name, ".tmp"))
      continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      char **nn = realloc(names, cap * sizeof *names);
      if (!nn)
        break;
      names = nn;
    }
    if (!(names[n] = strdup(e->d_name)))
      break;
    n++;
  }
  closedir(d);
  qsort(names, n, sizeof *names, snap_name_cmp);
  for (size_t i = 0; i < n; i++) {
    if (i + (size_t)keep < n) {
      char path[PATH_MAX];
      snprintf(path, sizeof path, "%s/%s", dir, names[i]);
      rv_grab_rmtree(path);
    }
    free(names[i]);
  }
  free(names);
}

/* From rv_svc_tick.  Dumps never take an application lock: this works on a deadlocked replica. */
static void snapshot_take(rv_svc *s, int64_t now) {
  if (!s->o.snapshot_dir || now < s->snapshot_at_ns)
    return;
  s->snapshot_at_ns = now + s->o.snapshot_every_ms * RV_NS_PER_MS;
  char dir[PATH_MAX], tmp[PATH_MAX], fin[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/%s-%s", s->o.snapshot_dir, s->service, s->replica);
  long long ms = (long long)(rv_wall_ns() / RV_NS_PER_MS);
  snprintf(fin, sizeof fin, "%s/snap-%013lld", dir, ms);
  snprintf(tmp, sizeof tmp, "%s.tmp", fin);
  rv_registry *reg = rv_registry_current();
  char *metrics = NULL;
  size_t mlen;
  bool ok = (mkdir(s->o.snapshot_dir, 0755) == 0 || errno == EEXIST) &&
            (mkdir(dir, 0755) == 0 || errno == EEXIST) && mkdir(tmp, 0755) == 0;
  ok = ok && write_text(tmp, "threads.txt", rv_dump(reg, RV_DUMP_THREADS, RV_DUMP_TEXT));
  ok = ok && write_text(tmp, "threads.json", rv_dump(reg, RV_DUMP_THREADS, RV_DUMP_JSON));
  ok = ok && write_text(tmp, "locks.txt", rv_dump(reg, RV_DUMP_LOCKS, RV_DUMP_TEXT));
  ok = ok && rv_metrics_render(s->metrics, &metrics, &mlen) == RV_OK &&
       write_text(tmp, "metrics.txt", metrics);
  ok = ok && write_text(tmp, "history.json", history_json(s));
  ok = ok && rename(tmp, fin) == 0;
  if (!ok) {
    rv_log_warn(s->log, "cannot write a snapshot", "dir=%s err=\"%s\"", tmp, strerror(errno));
    rv_grab_rmtree(tmp);
    return;
  }
  rv_counter_inc(s->snapshots);
  snapshot_prune(dir, s->o.snapshot_keep);
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

static void on_session_lost(void *arg, const char *reason) {
  rv_svc *s = arg;
  rv_log_error(s->log, "coord session lost: distributed locks fail until a new one is open",
               "reason=%s", reason);
}

static int open_session(rv_svc *s, rv_ctx *ctx) {
  if (s->nsessions == RV_SVC_SESSIONS_MAX)
    return RV_ELIMIT;
  rv_session *ns;
  int rc = rv_session_open_cb(ctx, s->coord, RV_SVC_SESSION_TTL_MS, on_session_lost, s, &ns);
  if (rc != RV_OK)
    return rc;
  s->sessions[s->nsessions++] = ns;
  __atomic_store_n(&s->session, ns, __ATOMIC_RELEASE);
  return RV_OK;
}

/* From rv_svc_tick: replace a lost session (bounded wait, retried each RV_SVC_SESSION_RETRY_MS). */
static void reopen_session(rv_svc *s, int64_t now) {
  if (!s->session || !rv_session_lost(s->session) || now < s->session_retry_at_ns)
    return;
  s->session_retry_at_ns = now + RV_SVC_SESSION_RETRY_MS * RV_NS_PER_MS;
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RV_SVC_SESSION_RETRY_MS * RV_NS_PER_MS);
  int rc = open_session(s, ctx);
  rv_ctx_free(ctx);
  if (rc == RV_OK) {
    rv_counter_inc(s->session_reopens);
    rv_log_info(s->log, "coord session reopened", "replica=%s", s->replica);
  } else if (rc == RV_ELIMIT) {
    rv_log_error(s->log, "coord session lost too many times: restart this replica",
                 "replica=%s sessions=%d", s->replica, RV_SVC_SESSIONS_MAX);
    s->session_retry_at_ns = INT64_MAX;
  } else {
    rv_log_warn(s->log, "cannot reopen the coord session yet", "err=%s detail=\"%s\"",
                rv_strerror(rc), rv_coord_last_error());
  }
}

static void free_all(rv_svc *s) {
  rv_admin_stop(s->admin);
  if (s->consumer)
    rv_consumer_free(s->consumer);
  rv_config_cache_close(s->cache);
  for (size_t i = 0; i < s->nsessions; i++)
    rv_session_close(s->sessions[i]);
  if (s->coord)
    rv_coord_client_close(s->coord);
  rv_metrics_free(s->metrics);
  if (s->own_log)
    rv_log_free(s->log);
  rv_rawmu_destroy(&s->history_mu);
  free(s);
}

int rv_svc_start(rv_svc **out, const rv_svc_opts *o, int64_t connect_timeout_ms, char *why,
                 size_t whylen) {
  if (!o || o->replica < 1) {
    snprintf(why, whylen, "replica must be >= 1");
    return RV_EINVAL;
  }
  rv_svc *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(why, whylen, "out of memory");
    return RV_ENOMEM;
  }
  rv_rawmu_init(&s->history_mu);
  s->o = *o;
  if (!s->o.service || !*s->o.service)
    s->o.service = RV_SVC_DEFAULT_SERVICE;
  if (!s->o.coord_host)
    s->o.coord_host = "127.0.0.1";
  if (!s->o.coord_port)
    s->o.coord_port = RV_COORD_CLIENT_DEFAULT_PORT;
  if (!s->o.queue_host)
    s->o.queue_host = RV_QUEUE_DEFAULT_HOST;
  if (!s->o.queue_port)
    s->o.queue_port = RV_QUEUE_DEFAULT_PORT;
  if (!s->o.topic)
    s->o.topic = RV_SVC_DEFAULT_TOPIC;
  if (!s->o.channel)
    s->o.channel = RV_SVC_DEFAULT_CHANNEL;
  if (s->o.max_in_flight <= 0)
    s->o.max_in_flight = RV_SVC_DEFAULT_MAX_IN_FLIGHT;
  if (s->o.msg_timeout_ms <= 0)
    s->o.msg_timeout_ms = RV_SVC_DEFAULT_MSG_TIMEOUT_MS;
  if (s->o.upstream_latency_ms < 0)
    s->o.upstream_latency_ms = RV_SVC_DEFAULT_UPSTREAM_LATENCY_MS;
  if (s->o.snapshot_every_ms <= 0)
    s->o.snapshot_every_ms = RV_SVC_SNAPSHOT_EVERY_MS;
  if (s->o.snapshot_keep <= 0)
    s->o.snapshot_keep = RV_SVC_SNAPSHOT_KEEP;
  snprintf(s->replica, sizeof s->replica, "%d", o->replica);
  snprintf(s->service, sizeof s->service, "%s", s->o.service);
  s->o.service = s->service;
  s->own_log = !s->o.log;
  s->log = s->o.log ? s->o.log : rv_log_new(2, RV_LOG_INFO, "svc");

  /* Recursive read detection: the fix reports the first recursive read. */
  rv_registry *reg = rv_registry_current();
  s->reg = reg;
  rv_registry_set_recursive_policy(reg, s->o.bugs[RV_SVC_BUG_DETECT] ? RV_RECURSIVE_OFF
                                                                    : RV_RECURSIVE_WARN);

  int rc = RV_OK;
  s->metrics = rv_metrics_new();
  if (!s->metrics || register_metrics(s) != RV_OK) {
    snprintf(why, whylen, "cannot register the metrics");
    rc = RV_ENOMEM;
    goto fail;
  }
  char admin_url[64] = "", host[256] = "";
  if (!s->o.no_admin) {
    rc = rv_admin_start(&s->admin,
                        &(rv_admin_opts){.port = s->o.admin_port, .metrics = s->metrics});
    if (rc != RV_OK) {
      snprintf(why, whylen, "admin endpoint on port %u: %s", s->o.admin_port, rv_strerror(rc));
      goto fail;
    }
    rc = rv_admin_route(s->admin, "GET", RV_SVC_HISTORY_PATH, history_route, s);
    if (rc != RV_OK) {
      snprintf(why, whylen, "cannot add %s: %s", RV_SVC_HISTORY_PATH, rv_strerror(rc));
      goto fail;
    }
    snprintf(admin_url, sizeof admin_url, "http://127.0.0.1:%u/", rv_admin_port(s->admin));
  }
  rv_gethostname(host, sizeof host);

  rv_ctx *ctx = rv_ctx_with_timeout(NULL, connect_timeout_ms * RV_NS_PER_MS);
  rv_coord_client_opts co = {.host = s->o.coord_host,
                             .port = s->o.coord_port,
                             .service = s->service,
                             .replica = s->replica,
                             .host_name = host,
                             .admin_url = admin_url[0] ? admin_url : NULL};
  rc = rv_coord_client_open(&s->coord, ctx, &co);
  if (rc != RV_OK) {
    snprintf(why, whylen, "cannot reach coord on %s:%u: %s", s->o.coord_host, s->o.coord_port,
             rv_strerror(rc));
    goto fail_ctx;
  }
  rc = open_session(s, ctx);
  if (rc != RV_OK) {
    snprintf(why, whylen, "cannot open a coord session: %s %s", rv_strerror(rc),
             rv_coord_last_error());
    goto fail_ctx;
  }

  char svc_ns[160];
  snprintf(svc_ns, sizeof svc_ns, "svc/%s", s->service);
  static const char *const keys[] = {RV_SVC_UPSTREAM_KEY};
  rv_config_cache_opts cfo = {.service = s->service,
                              .replica = s->replica,
                              .keys = keys,
                              .nkeys = 1,
                              .lock_name = RV_SVC_CACHE_LOCK,
                              .build = build_upstream,
                              .destroy = destroy_upstream,
                              .arg = s,
                              .raw = s->o.bugs[RV_SVC_BUG_REBUILD],
                              .raw_ns = {"platform", svc_ns, NULL}};
  rv_config_cache *cache;
  rc = rv_config_cache_open(ctx, s->coord, &cfo, &cache);
  if (rc != RV_OK) {
    snprintf(why, whylen, "cannot open the config cache: %s %s", rv_strerror(rc),
             rv_coord_last_error());
    goto fail_ctx;
  }
  __atomic_store_n(&s->cache, cache, __ATOMIC_RELEASE);

  /* The queue's /stats names each consumer "SERVICE/REPLICA pid N": unravel
   * joins the queue's clients to the replicas by it. */
  char client_id[200];
  snprintf(client_id, sizeof client_id, "%s/%s pid %d", s->service, s->replica, rv_getpid());
  rv_consumer_opts qo = {.host = s->o.queue_host,
                         .client_id = client_id,
                         .port = s->o.queue_port,
                         .topic = s->o.topic,
                         .channel = s->o.channel,
                         .max_in_flight = s->o.max_in_flight,
                         .msg_timeout_ms = s->o.msg_timeout_ms,
                         .handler = handle,
                         .handler_arg = s,
                         .cancel_on_server_timeout = !s->o.bugs[RV_SVC_BUG_CANCEL],
                         .hold_slots = !s->o.bugs[RV_SVC_BUG_HELD],
                         .mode = RV_CONSUMER_THREAD_PER_MESSAGE,
                         .stop_timeout_ms = 1500};
  rv_consumer *cons;
  rc = rv_consumer_open(&cons, &qo);
  if (rc != RV_OK) {
    snprintf(why, whylen, "cannot open the consumer: %s", rv_strerror(rc));
    goto fail_ctx;
  }
  __atomic_store_n(&s->consumer, cons, __ATOMIC_RELEASE);
  rc = rv_consumer_wait_ready(cons, ctx);
  if (rc != RV_OK) {
    snprintf(why, whylen, "cannot consume %s/%s from the queue on %s:%u: %s", s->o.topic,
             s->o.channel, s->o.queue_host, s->o.queue_port, rv_strerror(rc));
    goto fail_ctx;
  }
  rv_ctx_free(ctx);
  char bugs[96] = "";
  for (int i = 0; i < RV_SVC_BUG_COUNT; i++)
    if (s->o.bugs[i])
      snprintf(bugs + strlen(bugs), sizeof bugs - strlen(bugs), "%s%s", *bugs ? "," : "",
               bug_names[i]);
  rv_log_info(s->log, "consuming", "replica=%s service=%s topic=%s channel=%s admin=%s bugs=%s",
              s->replica, s->service, s->o.topic, s->o.channel, admin_url, *bugs ? bugs : "none");
  *out = s;
  return RV_OK;

fail_ctx:
  rv_ctx_free(ctx);
fail:
  free_all(s);
  return rc;
}

uint16_t rv_svc_admin_port(const rv_svc *s) { return s->admin ? rv_admin_port(s->admin) : 0; }

uint64_t rv_svc_recursive_reads(const rv_svc *s) { return rv_registry_recursive_count(s->reg); }

uint64_t rv_svc_rebuilds(const rv_svc *s) {
  rv_config_cache *cache = __atomic_load_n(&s->cache, __ATOMIC_ACQUIRE);
  rv_config_cache_stats ks = {0};
  if (cache)
    rv_config_cache_stats_get(cache, &ks);
  return ks.rebuilds;
}

void rv_svc_tick(rv_svc *s) {
  int64_t now = rv_now_ns();
  reopen_session(s, now);
  snapshot_take(s, now);
  double count = rv_counter_value(s->messages);
  if (s->rate_at_ns == 0) {
    s->rate_at_ns = now;
    s->rate_count = count;
    return;
  }
  int64_t dt = now - s->rate_at_ns;
  if (dt < RV_SVC_HISTORY_INTERVAL_MS * RV_NS_PER_MS)
    return;
  double rate = (count - s->rate_count) * (double)RV_NS_PER_S / (double)dt;
  rv_gauge_set(s->rate, rate);
  /* The history is read only through the admin endpoint and the snapshots; without
   * either nobody can (the simulator), and a sample snapshots the whole registry. */
  if (s->admin || s->o.snapshot_dir)
    history_take(s, rate);
  s->rate_at_ns = now;
  s->rate_count = count;
}

int rv_svc_stop(rv_svc *s) {
  if (!s)
    return RV_OK;
  int rc = rv_consumer_stop(s->consumer);
  if (rc != RV_OK) {
    /* Handlers still running: deadlocked on the client cache, most likely.
     * Joining them would hang, and the cache, session and client they use
     * must stay: leave everything to the process's exit. */
    rv_log_error(s->log, "handlers did not stop; exiting without closing (see /debug/threads)",
                 "replica=%s", s->replica);
    return RV_ETIMEDOUT;
  }
  rv_log_info(s->log, "stopped", "replica=%s", s->replica);
  free_all(s);
  return RV_OK;
}
