/*
 * `ravel demo`: the incident, replayed on real processes.
 *
 * It runs coord and queue (in this process, on free ports), starts the
 * replicas of the reference service (`ravel svc`, child processes), gives
 * the service a config layer that overrides the platform's upstream.url,
 * publishes events at a steady rate, and a few seconds in makes several
 * platform-wide writes of upstream.url in quick succession (the other
 * team's change: it changes nothing the service sees).  It shows the
 * per-replica view each second and ends with a plain-language summary.
 *
 * With every fix (the default) the replicas ignore the platform writes and
 * stay healthy.  With --incident a replica rebuilds its client under a
 * handler that holds the cache's read lock and asks for it again: a
 * deadlock; its messages time out and are redelivered to the others, whose
 * handlers pile up on the distributed lock the stuck handler holds.
 *
 * Exit status: 0 healthy, 1 unhealthy (a replica deadlocked or the backlog
 * did not drain), 2 usage, 3 the demo could not run.
 */
#define _GNU_SOURCE
#include "cli/cli.h"

#include "client/queue_client.h"
#include "diag/grab.h"
#include "diag/report.h"
#include "diag/unravel.h"
#include "rt/ctx.h"
#include "rt/rt.h"
#include "server/coord.h"
#include "server/queue.h"
#include "svc/load.h"

#include <fcntl.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define DEMO_REPLICAS_MAX 9
#define DEMO_FLAGS_MAX 16
#define DEMO_STOP_GRACE_NS (8 * RV_NS_PER_S)
#define DEMO_DRAIN_NS (15 * RV_NS_PER_S)
/* The report's default file (in the current directory), and its markers: one
 * per platform write, the first ones (the report draws at most as many). */
#define DEMO_REPORT_DEFAULT "ravel-demo-report.html"
#define DEMO_MARKERS_MAX RV_REPORT_MARKERS_MAX

typedef struct demo_marker {
  int64_t t_ms; /* wall clock, unix ms */
  char label[96];
} demo_marker;

typedef struct demo {
  /* options */
  int replicas;
  int64_t duration_s, msg_timeout_ms, latency_ms, rate, resources, items;
  int64_t config_at_s, config_writes;
  bool incident, quiet;
  const char *flags[DEMO_FLAGS_MAX]; /* --bug/--fix NAME pairs passed to svc, in order */
  int nflags;
  char data[256];
  bool own_data;
  const char *report; /* NULL or "": no report */
  /* running */
  rv_loop *loop;
  rv_coord *coord;
  rv_qsrv *queue;
  rv_thread *loop_thread;
  pid_t pids[DEMO_REPLICAS_MAX];
  atomic_long published;
  atomic_bool stop_load;
  int64_t started_ns, config_done_ns;
  demo_marker markers[DEMO_MARKERS_MAX];
  int nmarkers;
} demo;

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { interrupted = 1; }

static void loop_main(void *arg) { rv_loop_run(((demo *)arg)->loop); }

/* ---- the load generator: events "acct-K item-1 .. item-N" at a steady rate --------------- */

/* The same generator runs in the simulator's service scenario (svc/load.h); seed 42 as always. */
static void load_main(void *arg) {
  demo *d = arg;
  rv_svc_load_opts lo = {.queue_port = rv_qsrv_tcp_port(d->queue), .rate = d->rate,
                         .resources = d->resources, .items = d->items, .seed = 42,
                         .stop = &d->stop_load, .published = &d->published};
  rv_svc_load_run(&lo);
}

/* ---- coord commands ------------------------------------------------------------------------ */

static bool coord_cmd(demo *d, const char *fmt, ...) {
  redisContext *r = redisConnect("127.0.0.1", rv_coord_port(d->coord));
  if (!r || r->err) {
    if (r)
      redisFree(r);
    return false;
  }
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  bool ok = rep && rep->type != REDIS_REPLY_ERROR;
  if (rep)
    freeReplyObject(rep);
  redisFree(r);
  return ok;
}

static long long session_count(demo *d) {
  redisContext *r = redisConnect("127.0.0.1", rv_coord_port(d->coord));
  long long n = -1;
  if (r && !r->err) {
    redisReply *rep = redisCommand(r, "SESSION.LIST");
    if (rep && rep->type == REDIS_REPLY_ARRAY)
      n = (long long)rep->elements;
    if (rep)
      freeReplyObject(rep);
  }
  if (r)
    redisFree(r);
  return n;
}

/* ---- replicas ------------------------------------------------------------------------------- */

static int spawn_replica(demo *d, int i) {
  char rep[16], coord[64], queue[64], timeout[32], latency[32], logpath[400];
  snprintf(rep, sizeof rep, "%d", i);
  snprintf(coord, sizeof coord, "127.0.0.1:%u", rv_coord_port(d->coord));
  snprintf(queue, sizeof queue, "127.0.0.1:%u", rv_qsrv_tcp_port(d->queue));
  snprintf(timeout, sizeof timeout, "%lld", (long long)d->msg_timeout_ms);
  snprintf(latency, sizeof latency, "%lld", (long long)d->latency_ms);
  snprintf(logpath, sizeof logpath, "%s/replica-%d.log", d->data, i);
  const char *argv[32 + DEMO_FLAGS_MAX] = {"ravel", "svc", "--replica", rep, "--coord", coord,
                                           "--queue", queue, "--msg-timeout", timeout,
                                           "--upstream-latency", latency, "--exit-with-parent"};
  int argc = 13;
  if (d->incident)
    argv[argc++] = "--incident";
  for (int k = 0; k < d->nflags; k++)
    argv[argc++] = d->flags[k];
  argv[argc] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  int rc = posix_spawn(&d->pids[i - 1], "/proc/self/exe", &fa, NULL, (char **)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? RV_OK : RV_EIO;
}

/* SIGTERM every replica, wait for each within a bound, SIGKILL what remains (stuck handlers). */
static void stop_replicas(demo *d) {
  for (int i = 0; i < d->replicas; i++)
    if (d->pids[i] > 0)
      kill(d->pids[i], SIGTERM);
  int64_t until = rv_now_ns() + DEMO_STOP_GRACE_NS;
  for (int i = 0; i < d->replicas; i++) {
    while (d->pids[i] > 0) {
      int st;
      if (waitpid(d->pids[i], &st, WNOHANG) == d->pids[i]) {
        d->pids[i] = 0;
        break;
      }
      if (rv_now_ns() > until) {
        kill(d->pids[i], SIGKILL);
        waitpid(d->pids[i], &st, 0);
        d->pids[i] = 0;
        break;
      }
      rv_sleep(NULL, 50 * RV_NS_PER_MS);
    }
  }
}

/* The queue channel's backlog: depth + in flight + deferred (-1 if unknown). */
static long long backlog(demo *d) {
  char *js = cli_http_get("127.0.0.1", rv_qsrv_http_port(d->queue), "/stats?format=json&topic=events");
  json_t *root = js ? json_loads(js, 0, NULL) : NULL;
  free(js);
  long long n = -1;
  json_t *tp = json_array_get(json_object_get(root, "topics"), 0);
  json_t *ch = json_array_get(json_object_get(tp, "channels"), 0);
  if (ch)
    n = json_integer_value(json_object_get(ch, "depth")) +
        json_integer_value(json_object_get(ch, "in_flight_count")) +
        json_integer_value(json_object_get(ch, "deferred_count"));
  json_decref(root);
  return n;
}

/* ---- the report -------------------------------------------------------------------------------- */

/* The replicas' admin endpoints, from coord's sessions: admin[i] for replica i + 1 ("" if none). */
static void replica_admins(demo *d, char admin[][256]) {
  for (int i = 0; i < d->replicas; i++)
    admin[i][0] = 0;
  redisContext *r = redisConnect("127.0.0.1", rv_coord_port(d->coord));
  redisReply *rep = r && !r->err ? redisCommand(r, "SESSION.LIST") : NULL;
  for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
    const redisReply *m = rep->element[i];
    const char *svc = NULL, *replica = NULL, *url = NULL;
    for (size_t k = 0; m->type == REDIS_REPLY_ARRAY && k + 1 < m->elements; k += 2) {
      const redisReply *key = m->element[k], *v = m->element[k + 1];
      if (key->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
        continue;
      if (strcmp(key->str, "service") == 0)
        svc = v->str;
      else if (strcmp(key->str, "replica") == 0)
        replica = v->str;
      else if (strcmp(key->str, "admin") == 0)
        url = v->str;
    }
    int n = replica ? atoi(replica) : 0;
    if (svc && strcmp(svc, "billing") == 0 && url && n >= 1 && n <= d->replicas)
      snprintf(admin[n - 1], sizeof admin[0], "%s", url);
  }
  if (rep)
    freeReplyObject(rep);
  if (r)
    redisFree(r);
}

/* GET /debug/history of one replica (admin "http://127.0.0.1:PORT/"): its samples, or NULL. */
static json_t *replica_history(const char *admin) {
  const char *hp = strstr(admin, "://");
  hp = hp ? hp + 3 : admin;
  const char *colon = strchr(hp, ':');
  long port = colon ? strtol(colon + 1, NULL, 10) : 0;
  if (!colon || port < 1 || port > 65535)
    return NULL;
  char host[128];
  snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
  char *js = cli_http_get(host, (uint16_t)port, "/debug/history");
  json_t *root = js ? json_loads(js, 0, NULL) : NULL;
  free(js);
  json_t *samples = json_incref(json_object_get(root, "samples"));
  json_decref(root);
  if (samples && !json_is_array(samples)) {
    json_decref(samples);
    return NULL;
  }
  return samples;
}

/*
 * HOOK(unravel): fill model["diagnosis"] ({"text", "healthy"}) and, when there
 * is one, model["graph"] (the wait-for graph: nodes and edges, see
 * diag/report.h).  For now the diagnosis is the demo's own summary and there
 * is no graph.  To plug `ravel unravel` in: diagnose the live system here (it
 * is still running: coord on rv_coord_port(d->coord), the queue's HTTP on
 * rv_qsrv_http_port(d->queue), the replicas from coord's sessions) and set
 * both keys from its result, keeping the summary as a fallback.
 */
/*
 * `ravel unravel` on the live demo: a grab of every process into the data
 * dir, then the cross-process diagnosis.  NULL if it could not collect.
 */
static json_t *demo_unravel(demo *d) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/unravel-%lld", d->data, (long long)(rv_wall_ns() / RV_NS_PER_MS));
  rv_grab_opts go = {.coord_host = "127.0.0.1",
                     .coord_port = rv_coord_port(d->coord),
                     .coord_admin_port = rv_coord_admin_port(d->coord),
                     .queue_host = "127.0.0.1",
                     .queue_http_port = rv_qsrv_http_port(d->queue),
                     .outside_stacks = false};
  rv_grab_result gr;
  char why[512];
  json_t *res = NULL;
  if (rv_grab_collect(&go, dir, &gr, why, sizeof why) == RV_OK)
    res = rv_unravel_dir(dir, NULL, why, sizeof why);
  if (!res)
    fprintf(stderr, "ravel demo: no diagnosis: %s\n", why);
  rv_grab_rmtree(dir);
  return res;
}

/* The report's diagnosis: the summary, then unravel's explanation and graph when there is one. */
static void demo_diagnose(demo *d, json_t *model, const char *summary, bool healthy,
                          const json_t *diag) {
  const char *dtext = diag ? json_string_value(json_object_get(diag, "text")) : NULL;
  size_t n = strlen(summary ? summary : "") + (dtext ? strlen(dtext) : 0) + 64;
  char *text = malloc(n);
  if (text)
    snprintf(text, n, "%s%s%s", summary ? summary : "",
             dtext ? "\n=== diagnosis (ravel unravel) ===\n" : "", dtext ? dtext : "");
  json_object_set_new(model, "diagnosis",
                      json_pack("{ss sb}", "text", text ? text : "", "healthy", healthy));
  free(text);
  if (diag)
    json_object_set_new(model, "graph", rv_unravel_graph_focus(json_object_get(diag, "graph"),
                                                               RV_UNRAVEL_FOCUS_NODES_MAX));
}

/* Build the model (per-replica history, the platform writes as markers, the
 * diagnosis) and write the report; prints where, or why not. */
static void write_report(demo *d, const char *summary, bool healthy, const json_t *diag,
                         FILE *out) {
  json_t *model = json_object(), *reps = json_array(), *marks = json_array();
  if (!model || !reps || !marks) {
    json_decref(model);
    json_decref(reps);
    json_decref(marks);
    fprintf(stderr, "ravel demo: no report: out of memory\n");
    return;
  }
  char title[160];
  snprintf(title, sizeof title, "ravel demo: %s, %d replicas",
           d->incident ? "the incident (every cause on)" : "every fix on", d->replicas);
  for (int k = 0; k + 1 < d->nflags; k += 2)
    snprintf(title + strlen(title), sizeof title - strlen(title), " %s %s", d->flags[k],
             d->flags[k + 1]);
  json_object_set_new(model, "title", json_string(title));
  json_object_set_new(model, "generated_at_ms", json_integer(rv_wall_ns() / RV_NS_PER_MS));
  char admin[DEMO_REPLICAS_MAX][256];
  replica_admins(d, admin);
  int missing = 0;
  for (int i = 0; i < d->replicas; i++) {
    char name[32];
    snprintf(name, sizeof name, "billing/%d", i + 1);
    json_t *samples = admin[i][0] ? replica_history(admin[i]) : NULL;
    missing += !samples;
    json_array_append_new(reps, json_pack("{ss so}", "name", name, "samples",
                                          samples ? samples : json_array()));
  }
  for (int i = 0; i < d->nmarkers; i++)
    json_array_append_new(marks, json_pack("{sI ss}", "t_ms", (json_int_t)d->markers[i].t_ms,
                                           "label", d->markers[i].label));
  json_object_set_new(model, "replicas", reps);
  json_object_set_new(model, "markers", marks);
  demo_diagnose(d, model, summary, healthy, diag);
  char why[512];
  if (rv_report_write(d->report, model, why, sizeof why) == RV_OK) {
    char abs[PATH_MAX];
    fprintf(out, "report: %s%s\n", realpath(d->report, abs) ? abs : d->report,
            missing ? " (some replicas did not answer GET /debug/history: no lines for them)" : "");
  } else {
    fprintf(stderr, "ravel demo: cannot write the report: %s\n", why);
  }
  json_decref(model);
}

/* ---- the run ---------------------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel demo [--incident] [--bug NAME]... [--fix NAME]... [OPTIONS]\n\n"
          "Replay the incident (../shared/INCIDENT.md) on real processes: coord and queue, N replicas\n"
          "of the reference service, a steady load, and a few platform-wide config writes that change\n"
          "nothing the service sees.  Shows the per-replica view each second and ends with a summary.\n"
          "Exit 0 if the run stayed healthy, 1 if not.\n\n"
          "  --incident             every contributing cause on (default: every fix on)\n"
          "  --bug NAME, --fix NAME toggle one cause (release, rebuild, cancel, held, detect; see\n"
          "                         ravel svc --help), applied in order after --incident\n"
          "  --replicas N           replicas (default 3, at most %d)\n"
          "  --duration S           seconds of load (default 40)\n"
          "  --msg-timeout MS       the queue's message timeout for the replicas (default 3000)\n"
          "  --rate N               events per second (default 15)\n"
          "  --resources N          distinct resources (locks) the events name (default 8)\n"
          "  --items N              items per event, one upstream call each (default 3)\n"
          "  --upstream-latency MS  simulated upstream call (default 30)\n"
          "  --config-at S          when the platform writes start (default 5)\n"
          "  --config-writes N      how many platform writes, 300 ms apart (default 5)\n"
          "  --data DIR             keep data and replica logs in DIR (default: a temp dir, removed)\n"
          "  --report FILE          write the HTML report there (default %s; '' disables)\n"
          "  --no-report            no report\n"
          "  --quiet                no live view, only the summary\n"
          "  -h, --help             show this help\n",
          DEMO_REPLICAS_MAX, DEMO_REPORT_DEFAULT);
}

int cmd_demo(int argc, char **argv) {
  static const struct option longopts[] = {
      {"incident", no_argument, 0, 'I'},         {"bug", required_argument, 0, 'b'},
      {"fix", required_argument, 0, 'f'},        {"replicas", required_argument, 0, 'n'},
      {"duration", required_argument, 0, 'd'},   {"msg-timeout", required_argument, 0, 'm'},
      {"rate", required_argument, 0, 'r'},       {"resources", required_argument, 0, 'R'},
      {"items", required_argument, 0, 'i'},      {"upstream-latency", required_argument, 0, 'l'},
      {"config-at", required_argument, 0, 'a'},  {"config-writes", required_argument, 0, 'w'},
      {"data", required_argument, 0, 'D'},       {"quiet", no_argument, 0, 'q'},
      {"report", required_argument, 0, 'o'},     {"no-report", no_argument, 0, 'N'},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  static demo d;
  /* Defaults leave headroom: a lock is held items x latency = 90 ms, so 8 resources
   * can serve ~88 events/s against 15 offered; trouble comes only from the causes. */
  d = (demo){.replicas = 3, .duration_s = 40, .msg_timeout_ms = 3000, .latency_ms = 30, .rate = 15,
             .resources = 8, .items = 3, .config_at_s = 5, .config_writes = 5,
             .report = DEMO_REPORT_DEFAULT};
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'I': d.incident = true; break;
    case 'b':
    case 'f':
      if (d.nflags + 2 > DEMO_FLAGS_MAX) {
        fprintf(stderr, "ravel demo: too many --bug/--fix options (at most %d)\n", DEMO_FLAGS_MAX / 2);
        return 2;
      }
      d.flags[d.nflags++] = ch == 'b' ? "--bug" : "--fix";
      d.flags[d.nflags++] = optarg;
      break;
    case 'n': d.replicas = (int)cli_int_opt("demo", "--replicas", optarg, 1, DEMO_REPLICAS_MAX); break;
    case 'd': d.duration_s = cli_int_opt("demo", "--duration", optarg, 1, 3600); break;
    case 'm': d.msg_timeout_ms = cli_int_opt("demo", "--msg-timeout", optarg, 1000, 900000); break;
    case 'r': d.rate = cli_int_opt("demo", "--rate", optarg, 1, 10000); break;
    case 'R': d.resources = cli_int_opt("demo", "--resources", optarg, 1, 1000000); break;
    case 'i': d.items = cli_int_opt("demo", "--items", optarg, 1, 20); break;
    case 'l': d.latency_ms = cli_int_opt("demo", "--upstream-latency", optarg, 0, 60000); break;
    case 'a': d.config_at_s = cli_int_opt("demo", "--config-at", optarg, 0, 3600); break;
    case 'w': d.config_writes = cli_int_opt("demo", "--config-writes", optarg, 0, 1000); break;
    case 'D': snprintf(d.data, sizeof d.data, "%s", optarg); break;
    case 'q': d.quiet = true; break;
    case 'o': d.report = optarg; break;
    case 'N': d.report = NULL; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  rv_thread_adopt("main", "demo");
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  /* Output piped into `head` must not kill the demo before it stops its replicas. */
  signal(SIGPIPE, SIG_IGN);
  if (!d.data[0]) {
    snprintf(d.data, sizeof d.data, "/tmp/ravel-demo-XXXXXX");
    if (!mkdtemp(d.data)) {
      fprintf(stderr, "ravel demo: cannot create a temp dir\n");
      return 3;
    }
    d.own_data = true;
  }
  char cdir[400], qdir[400], why[512];
  snprintf(cdir, sizeof cdir, "%s/coord", d.data);
  snprintf(qdir, sizeof qdir, "%s/queue", d.data);
  rv_log *slog = rv_log_new(2, RV_LOG_ERROR, "demo");
  int status = 3;
  if (rv_loop_new(&d.loop, NULL) != RV_OK ||
      rv_coord_start(&d.coord, &(rv_coord_opts){.port_any = true, .loop = d.loop, .data_dir = cdir, .log = slog},
                     why, sizeof why) != RV_OK ||
      rv_qsrv_start(&d.queue, &(rv_qsrv_opts){.port_any = true, .loop = d.loop, .data_dir = qdir, .log = slog},
                    why, sizeof why) != RV_OK ||
      rv_thread_start(&d.loop_thread, "demo-servers", "server", loop_main, &d) != RV_OK) {
    fprintf(stderr, "ravel demo: cannot start coord and queue: %s\n", why);
    goto out;
  }
  printf("ravel demo: %s, %d replicas, %lld events/s on %lld resources, message timeout %lld ms\n",
         d.incident ? "the incident (every cause on)" : "every fix on", d.replicas,
         (long long)d.rate, (long long)d.resources, (long long)d.msg_timeout_ms);
  printf("ravel demo: coord 127.0.0.1:%u (admin %u), queue 127.0.0.1:%u (HTTP %u), data %s\n",
         rv_coord_port(d.coord), rv_coord_admin_port(d.coord), rv_qsrv_tcp_port(d.queue),
         rv_qsrv_http_port(d.queue), d.data);
  fflush(stdout); /* tools (ravel grab's test) read where coord and queue listen while it runs */
  /* The service overrides upstream.url: platform writes change nothing it sees. */
  coord_cmd(&d, "CFG.SET svc/billing upstream.url https://billing.upstream AUTHOR billing-team REASON %s",
            "service-specific endpoint");
  coord_cmd(&d, "CFG.SET platform upstream.url https://platform.upstream/v1 AUTHOR platform-team");
  for (int i = 1; i <= d.replicas; i++)
    if (spawn_replica(&d, i) != RV_OK) {
      fprintf(stderr, "ravel demo: cannot start replica %d\n", i);
      goto out;
    }
  int64_t until = rv_now_ns() + 20 * RV_NS_PER_S;
  while (session_count(&d) < d.replicas && rv_now_ns() < until && !interrupted)
    rv_sleep(NULL, 50 * RV_NS_PER_MS);
  if (session_count(&d) < d.replicas) {
    fprintf(stderr, "ravel demo: the replicas did not all register (see %s/replica-*.log)\n", d.data);
    goto out;
  }
  cli_top *view = cli_top_new("127.0.0.1", rv_coord_port(d.coord), "127.0.0.1", rv_qsrv_http_port(d.queue));
  rv_thread *load;
  rv_thread_start(&load, "demo-load", "load", load_main, &d);
  d.started_ns = rv_now_ns();
  int64_t writes_done = 0;
  for (int64_t tick = 0; tick < d.duration_s * 10 && !interrupted; tick++) {
    int64_t elapsed_ms = (rv_now_ns() - d.started_ns) / RV_NS_PER_MS;
    /* Platform writes in quick succession, for other reasons: the effective value of the service does not change. */
    while (writes_done < d.config_writes && elapsed_ms >= d.config_at_s * 1000 + writes_done * 300) {
      bool wrote = coord_cmd(&d, "CFG.SET platform upstream.url https://platform.upstream/v%lld AUTHOR other-team "
                    "REASON %s", (long long)writes_done + 2, "platform migration");
      writes_done++;
      if (d.nmarkers < DEMO_MARKERS_MAX) {
        demo_marker *mk = &d.markers[d.nmarkers++];
        mk->t_ms = rv_wall_ns() / RV_NS_PER_MS;
        snprintf(mk->label, sizeof mk->label, "platform write %lld of upstream.url%s", (long long)writes_done,
                 wrote ? "" : " (failed)");
      }
      if (writes_done == d.config_writes)
        d.config_done_ns = rv_now_ns();
      if (!d.quiet)
        printf("ravel demo: t=%llds platform write %lld of upstream.url (billing overrides it)\n",
               (long long)elapsed_ms / 1000, (long long)writes_done);
    }
    if (!d.quiet && tick % 10 == 0) {
      printf("\n--- t=%llds, published %ld ---\n", (long long)elapsed_ms / 1000, atomic_load(&d.published));
      cli_top_render(view, stdout);
    }
    rv_sleep(NULL, 100 * RV_NS_PER_MS);
  }
  atomic_store(&d.stop_load, true);
  rv_thread_join(load);
  /* Let a healthy system finish what it was given; a deadlocked one never will, so stop
   * waiting as soon as a replica's cycle has stood longer than two message timeouts: by
   * then, cancellation on timeout (the cancel fix) would have broken it.  A younger one
   * may be one of the transient deadlocks the cancel fix leaves (each lasts at most a
   * message timeout). */
  double lasting_s = 2.0 * (double)d.msg_timeout_ms / 1000.0 + 1.0;
  cli_replica_stats st[DEMO_REPLICAS_MAX];
  cli_top_render(view, stdout); /* a last view, which also refreshes the replica list */
  until = rv_now_ns() + DEMO_DRAIN_NS;
  long long left;
  size_t n;
  for (;;) {
    left = backlog(&d);
    n = cli_top_replicas(view, st, DEMO_REPLICAS_MAX);
    bool any_deadlock = false;
    for (size_t i = 0; i < n; i++)
      any_deadlock |= st[i].deadlocked > 0 && st[i].deadlock_age_s >= lasting_s;
    if (left == 0 || any_deadlock || rv_now_ns() >= until || interrupted)
      break;
    rv_sleep(NULL, 200 * RV_NS_PER_MS);
  }
  int deadlocked = 0;
  double handled = 0;
  /* The summary goes to stdout and, as text, into the report's diagnosis. */
  char *sumtext = NULL;
  size_t sumlen = 0;
  FILE *sum = open_memstream(&sumtext, &sumlen);
  FILE *out = sum ? sum : stdout;
  printf("\n=== summary ===\n");
  fprintf(out, "published %ld events; %lld still queued, in flight or deferred at the end\n",
         atomic_load(&d.published), left);
  for (size_t i = 0; i < n; i++) {
    handled += st[i].messages > 0 ? st[i].messages : 0;
    if (!st[i].answered) {
      fprintf(out, "replica %s: did not answer its admin endpoint\n", st[i].who);
      continue;
    }
    bool dl = st[i].deadlocked > 0 && st[i].deadlock_age_s >= lasting_s;
    deadlocked += dl;
    char state[160] = "healthy";
    if (dl)
      snprintf(state, sizeof state, "DEADLOCKED (its dump names the cycle: GET /debug/threads)");
    else if (st[i].deadlocked > 0)
      snprintf(state, sizeof state, "in a deadlock for %.1f s, less than two message timeouts "
               "(cancellation on timeout may still break it)", st[i].deadlock_age_s);
    fprintf(out, "replica %s: %s; handled %.0f, %.0f handler threads, %.0f waiting on the client cache, "
           "%.0f waiting for distributed locks, %.0f timeout notifications, %.0f late FINs, %.0f config rebuilds, "
           "%.0f recursive read locks reported\n",
           st[i].who, state,
           st[i].messages, st[i].handler_threads, st[i].cache_waiters, st[i].dlock_waits, st[i].timeouts,
           st[i].late_fins, st[i].rebuilds, st[i].recursive_reads);
  }
  bool healthy = deadlocked == 0 && left == 0 && !interrupted;
  if (deadlocked)
    fprintf(out, "%d of %zu replicas deadlocked after the platform writes: a handler held the client cache's "
           "read lock and asked for it again behind the config watcher's write lock; the other replicas' "
           "handlers piled up behind the distributed locks it holds, and the backlog grew.\n",
           deadlocked, n);
  else if (left != 0)
    fprintf(out, "no replica deadlocked, but the backlog did not drain within %lld s\n",
           (long long)(DEMO_DRAIN_NS / RV_NS_PER_S));
  else
    fprintf(out, "every replica stayed healthy through the platform writes; every event was handled\n");
  fprintf(out, "verdict: %s (handled %.0f events)\n", healthy ? "HEALTHY" : "UNHEALTHY", handled);
  if (sum) {
    fclose(sum);
    fputs(sumtext, stdout);
  }
  /* An unhealthy run ends with the cross-process diagnosis, taken live. */
  json_t *diag = healthy ? NULL : demo_unravel(&d);
  if (diag)
    printf("\n=== diagnosis (ravel unravel) ===\n%s", json_string_value(json_object_get(diag, "text")));
  if (d.report && *d.report)
    write_report(&d, sumtext, healthy, diag, stdout);
  json_decref(diag);
  free(sumtext);
  fflush(stdout);
  status = healthy ? 0 : 1;
  cli_top_free(view);
out:
  stop_replicas(&d);
  if (d.loop_thread) {
    rv_loop_stop(d.loop);
    rv_thread_join(d.loop_thread);
  }
  rv_qsrv_free(d.queue);
  rv_coord_free(d.coord);
  if (d.loop)
    rv_loop_free(d.loop);
  rv_log_free(slog);
  if (d.own_data) {
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d.data);
    if (system(cmd) != 0)
      fprintf(stderr, "ravel demo: could not remove %s\n", d.data);
  }
  return status;
}
