/*
 * `ravel top`: a live per-replica view.  The incident's dashboard averaged
 * the one broken replica away; this shows one row per replica, discovered
 * from coord's sessions (each session names its admin URL), refreshed every
 * interval: consumption rate, handler threads, threads blocked on the client
 * cache, distributed-lock acquisitions in progress, in-flight, timeouts,
 * late FINs, config rebuilds; plus the queue's depth and coord's
 * longest-held lock.  Plain text: no curses, no colour.
 *
 * Everything it reads goes through rt's TCP with a per-request deadline, so
 * a replica that does not answer shows as "no answer" instead of stalling
 * the view.
 */
#define _GNU_SOURCE
#include "cli/cli.h"

#include "rt/ctx.h"
#include "rt/rt.h"

#include <getopt.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOP_REQUEST_TIMEOUT_NS (2 * RV_NS_PER_S)
#define TOP_REPLICAS_MAX 64
#define TOP_RESPONSE_MAX_BYTES (8u << 20)

/* ---- tiny clients ------------------------------------------------------------------------ */

static bool split_hostport(const char *s, char *host, size_t hcap, uint16_t *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s)
    return false;
  snprintf(host, hcap, "%.*s", (int)(colon - s), s);
  long p = strtol(colon + 1, NULL, 10);
  if (p < 1 || p > 65535)
    return false;
  *port = (uint16_t)p;
  return true;
}

/* GET http://host:port/path; returns the malloc'd body of a 200 answer, else NULL. */
char *cli_http_get(const char *host, uint16_t port, const char *path) {
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, TOP_REQUEST_TIMEOUT_NS);
  rv_conn *c = NULL;
  char *body = NULL;
  if (rv_tcp_connect(&c, host, port, ctx) == RV_OK) {
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t r = 0;
    if (buf && rv_conn_write_all(c, req, (size_t)n, ctx) == RV_OK) {
      while ((r = rv_conn_read(c, buf + len, cap - len, ctx)) > 0) {
        len += (size_t)r;
        if (len == cap) {
          if (cap >= TOP_RESPONSE_MAX_BYTES)
            break;
          char *nb = realloc(buf, (cap *= 2) + 1);
          if (!nb)
            break;
          buf = nb;
        }
      }
      buf[len] = 0;
      char *sep = strstr(buf, "\r\n\r\n");
      int status = 0;
      if (r == 0 && sep && sscanf(buf, "HTTP/1.%*d %d", &status) == 1 && status == 200)
        body = strdup(sep + 4);
    }
    free(buf);
    rv_conn_close(c);
  }
  rv_ctx_free(ctx);
  return body;
}

/* Send one inline RESP command to coord and return its reply (hiredis reader), or NULL. */
static redisReply *resp_call(const char *host, uint16_t port, const char *command) {
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, TOP_REQUEST_TIMEOUT_NS);
  rv_conn *c = NULL;
  redisReply *reply = NULL;
  redisReader *rd = redisReaderCreate();
  if (rd && rv_tcp_connect(&c, host, port, ctx) == RV_OK) {
    char line[256];
    int n = snprintf(line, sizeof line, "%s\r\n", command);
    if (rv_conn_write_all(c, line, (size_t)n, ctx) == RV_OK) {
      char buf[65536];
      void *out = NULL;
      ssize_t r;
      while (!out && (r = rv_conn_read(c, buf, sizeof buf, ctx)) > 0) {
        if (redisReaderFeed(rd, buf, (size_t)r) != REDIS_OK || redisReaderGetReply(rd, &out) != REDIS_OK)
          break;
      }
      reply = out;
    }
  }
  if (c)
    rv_conn_close(c);
  if (rd)
    redisReaderFree(rd);
  rv_ctx_free(ctx);
  return reply;
}

/* A flat-map reply's field, as a string (integers formatted). */
static const char *map_field(const redisReply *m, const char *key, char *buf, size_t cap) {
  for (size_t i = 0; m && m->type == REDIS_REPLY_ARRAY && i + 1 < m->elements; i += 2) {
    if (m->element[i]->type != REDIS_REPLY_STRING || strcmp(m->element[i]->str, key) != 0)
      continue;
    const redisReply *v = m->element[i + 1];
    if (v->type == REDIS_REPLY_INTEGER)
      snprintf(buf, cap, "%lld", v->integer);
    else if (v->type == REDIS_REPLY_STRING)
      snprintf(buf, cap, "%s", v->str);
    else
      buf[0] = 0;
    return buf;
  }
  buf[0] = 0;
  return buf;
}

/* The sum of a metric's samples in a Prometheus exposition (labels ignored); -1 if absent. */
static double metric(const char *text, const char *name) {
  double sum = -1;
  size_t n = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (strncmp(p, name, n) != 0 || (p[n] != ' ' && p[n] != '{'))
      continue;
    const char *v = p[n] == '{' ? strchr(p, '}') : p + n;
    if (!v)
      continue;
    v = v[0] == '}' ? v + 1 : v;
    sum = (sum < 0 ? 0 : sum) + strtod(v, NULL);
  }
  return sum;
}

/* ---- the view ------------------------------------------------------------------------------- */

typedef struct replica {
  char who[96];
  char admin[256];
  double last_messages;
  int64_t last_ns;
  bool seen;
} replica;

struct cli_top {
  char coord_host[128];
  uint16_t coord_port;
  char queue_host[128];
  uint16_t queue_port;
  replica r[TOP_REPLICAS_MAX];
  size_t n;
};
typedef struct cli_top top;

static replica *replica_for(top *t, const char *who, const char *admin) {
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->r[i].admin, admin) == 0)
      return &t->r[i];
  if (t->n == TOP_REPLICAS_MAX)
    return NULL;
  replica *r = &t->r[t->n++];
  memset(r, 0, sizeof *r);
  snprintf(r->who, sizeof r->who, "%s", who);
  snprintf(r->admin, sizeof r->admin, "%s", admin);
  return r;
}

static void fmt_num(char *out, size_t cap, double v) {
  if (v < 0)
    snprintf(out, cap, "-");
  else
    snprintf(out, cap, "%.0f", v);
}

/* The queue's /stats (NULL if no answer). */
static json_t *queue_stats(top *t) {
  char *js = t->queue_port ? cli_http_get(t->queue_host, t->queue_port, "/stats?format=json") : NULL;
  json_t *root = js ? json_loads(js, 0, NULL) : NULL;
  free(js);
  return root;
}

/*
 * A per-client number of the queue's /stats (held_count, timeout_count) summed
 * over replica `who`'s connections (replicas name themselves "SERVICE/REPLICA
 * pid N" as client_id): the server's view, which also counts what the replica
 * was never told of (no timeout notification).  -1 if the queue does not know
 * the replica.
 */
static double queue_client_sum(const json_t *stats, const char *who, const char *field) {
  size_t wl = strlen(who), i, k, j;
  double sum = -1;
  const json_t *tp, *ch, *cl;
  json_array_foreach(json_object_get(stats, "topics"), i, tp)
    json_array_foreach(json_object_get(tp, "channels"), k, ch)
      json_array_foreach(json_object_get(ch, "clients"), j, cl) {
        const char *id = json_string_value(json_object_get(cl, "client_id"));
        if (id && strncmp(id, who, wl) == 0 && id[wl] == ' ')
          sum = (sum < 0 ? 0 : sum) + (double)json_integer_value(json_object_get(cl, field));
      }
  return sum;
}

static void render_replica(FILE *f, replica *r, int64_t now, const json_t *qstats) {
  char host[128];
  uint16_t port;
  const char *hp = strstr(r->admin, "://");
  hp = hp ? hp + 3 : r->admin;
  char hostport[200];
  snprintf(hostport, sizeof hostport, "%.*s", (int)strcspn(hp, "/"), hp);
  char *text = split_hostport(hostport, host, sizeof host, &port) ? cli_http_get(host, port, "/metrics")
                                                                   : NULL;
  if (!text) {
    fprintf(f, "%-22s %s\n", r->who, "no answer from its admin endpoint (stalled, or gone)");
    return;
  }
  double msgs = metric(text, "ravel_svc_messages_total");
  double rate = -1;
  if (r->seen && now > r->last_ns && msgs >= r->last_messages)
    rate = (msgs - r->last_messages) / ((double)(now - r->last_ns) / RV_NS_PER_S);
  r->seen = true;
  r->last_messages = msgs;
  r->last_ns = now;
  char c[9][32];
  fmt_num(c[0], sizeof c[0], rate);
  fmt_num(c[1], sizeof c[1], metric(text, "ravel_svc_handler_threads"));
  fmt_num(c[2], sizeof c[2], metric(text, "ravel_svc_cache_waiters"));
  fmt_num(c[3], sizeof c[3], metric(text, "ravel_svc_dlock_acquisitions_in_progress"));
  fmt_num(c[4], sizeof c[4], metric(text, "ravel_svc_in_flight"));
  double held = queue_client_sum(qstats, r->who, "held_count");
  double timeouts = queue_client_sum(qstats, r->who, "timeout_count");
  fmt_num(c[5], sizeof c[5], held >= 0 ? held : metric(text, "ravel_svc_held_slots"));
  fmt_num(c[6], sizeof c[6], timeouts >= 0 ? timeouts : metric(text, "ravel_svc_timeouts_total"));
  fmt_num(c[7], sizeof c[7], metric(text, "ravel_svc_late_fins_total"));
  fmt_num(c[8], sizeof c[8], metric(text, "ravel_deadlocked_threads"));
  fprintf(f, "%-22s %8s %8s %8s %8s %8s %6s %8s %8s %9s\n", r->who, c[0], c[1], c[2], c[3], c[4],
          c[5], c[6], c[7], c[8]);
  free(text);
}

static void render_queue(FILE *f, top *t, json_t *root) {
  if (!root) {
    fprintf(f, "queue: %s\n", t->queue_port ? "no answer" : "(no --queue-http given)");
    return;
  }
  json_t *topics = json_object_get(root, "topics"), *tp, *ch;
  size_t i, k;
  json_array_foreach(topics, i, tp) {
    json_array_foreach(json_object_get(tp, "channels"), k, ch) {
      fprintf(f, "queue %s/%s: depth %lld, in flight %lld, deferred %lld, held %lld, timeouts %lld, clients %lld\n",
              json_string_value(json_object_get(tp, "topic_name")),
              json_string_value(json_object_get(ch, "channel_name")),
              json_integer_value(json_object_get(ch, "depth")),
              json_integer_value(json_object_get(ch, "in_flight_count")),
              json_integer_value(json_object_get(ch, "deferred_count")),
              json_integer_value(json_object_get(ch, "held_count")),
              json_integer_value(json_object_get(ch, "timeout_count")),
              json_integer_value(json_object_get(ch, "client_count")));
    }
  }
}

static void render(FILE *f, top *t) {
  int64_t now = rv_now_ns();
  char when[64];
  snprintf(when, sizeof when, "%lld", (long long)(rv_wall_ns() / RV_NS_PER_S));
  fprintf(f, "ravel top   coord %s:%u   (unix time %s)\n\n", t->coord_host, t->coord_port, when);
  fprintf(f, "%-22s %8s %8s %8s %8s %8s %6s %8s %8s %9s\n", "replica", "msg/s", "threads",
          "cache-w", "dlock-w", "inflight", "held", "timeouts", "late-fin", "deadlock");
  json_t *qstats = queue_stats(t);
  redisReply *sessions = resp_call(t->coord_host, t->coord_port, "SESSION.LIST");
  if (!sessions || sessions->type != REDIS_REPLY_ARRAY) {
    fprintf(f, "(coord does not answer SESSION.LIST)\n");
  } else {
    for (size_t i = 0; i < sessions->elements; i++) {
      char svc[64], rep[64], admin[256], who[96];
      map_field(sessions->element[i], "service", svc, sizeof svc);
      map_field(sessions->element[i], "replica", rep, sizeof rep);
      map_field(sessions->element[i], "admin", admin, sizeof admin);
      if (!admin[0])
        continue; /* a session without an admin endpoint (a tool, a test) */
      snprintf(who, sizeof who, "%s/%s", svc, rep[0] ? rep : "-");
      replica *r = replica_for(t, who, admin);
      if (r)
        render_replica(f, r, now, qstats);
    }
  }
  if (sessions)
    freeReplyObject(sessions);
  fputc('\n', f);
  render_queue(f, t, qstats);
  json_decref(qstats);
  redisReply *locks = resp_call(t->coord_host, t->coord_port, "LOCK.LIST HELD");
  long long longest = -1;
  char name[128] = "", holder[128] = "", buf[128];
  for (size_t i = 0; locks && locks->type == REDIS_REPLY_ARRAY && i < locks->elements; i++) {
    long long ms = atoll(map_field(locks->element[i], "held_ms", buf, sizeof buf));
    if (ms > longest) {
      longest = ms;
      map_field(locks->element[i], "lock", name, sizeof name);
      char svc[64], rep[64];
      map_field(locks->element[i], "service", svc, sizeof svc);
      map_field(locks->element[i], "replica", rep, sizeof rep);
      snprintf(holder, sizeof holder, "%s/%s", svc, rep);
    }
  }
  if (locks)
    freeReplyObject(locks);
  if (longest >= 0)
    fprintf(f, "coord: longest-held lock %s, %lld ms, by %s\n", name, longest, holder);
  else
    fprintf(f, "coord: no lock held\n");
  fflush(f);
}

cli_top *cli_top_new(const char *coord_host, uint16_t coord_port, const char *queue_host,
                     uint16_t queue_http_port) {
  cli_top *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  snprintf(t->coord_host, sizeof t->coord_host, "%s", coord_host);
  t->coord_port = coord_port;
  snprintf(t->queue_host, sizeof t->queue_host, "%s", queue_host);
  t->queue_port = queue_http_port;
  return t;
}

void cli_top_render(cli_top *t, FILE *f) { render(f, t); }

void cli_top_free(cli_top *t) { free(t); }

/* The replicas' numbers now, for a summary (reads each replica's /metrics). */
size_t cli_top_replicas(cli_top *t, cli_replica_stats *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < t->n && n < cap; i++) {
    cli_replica_stats *o = &out[n++];
    memset(o, 0, sizeof *o);
    snprintf(o->who, sizeof o->who, "%s", t->r[i].who);
    char host[128], hostport[200];
    uint16_t port;
    const char *hp = strstr(t->r[i].admin, "://");
    hp = hp ? hp + 3 : t->r[i].admin;
    snprintf(hostport, sizeof hostport, "%.*s", (int)strcspn(hp, "/"), hp);
    char *text = split_hostport(hostport, host, sizeof host, &port) ? cli_http_get(host, port, "/metrics")
                                                                     : NULL;
    if (!text)
      continue;
    o->answered = true;
    o->messages = metric(text, "ravel_svc_messages_total");
    o->handler_threads = metric(text, "ravel_svc_handler_threads");
    o->cache_waiters = metric(text, "ravel_svc_cache_waiters");
    o->dlock_waits = metric(text, "ravel_svc_dlock_acquisitions_in_progress");
    o->in_flight = metric(text, "ravel_svc_in_flight");
    o->timeouts = metric(text, "ravel_svc_timeouts_total");
    o->late_fins = metric(text, "ravel_svc_late_fins_total");
    o->deadlocked = metric(text, "ravel_deadlocked_threads");
    o->deadlock_age_s = metric(text, "ravel_deadlock_age_seconds");
    o->rebuilds = metric(text, "ravel_svc_config_rebuilds_total");
    o->recursive_reads = metric(text, "ravel_rwlock_recursive_reads_total");
    free(text);
  }
  return n;
}

static void usage(FILE *f) {
  fprintf(f, "usage: ravel top [--coord HOST:PORT] [--queue-http HOST:PORT] [--interval MS] [--iterations N]\n\n"
             "A live per-replica view: one row per replica (discovered from coord's sessions),\n"
             "the queue's channels, and coord's longest-held lock. Plain text.\n\n"
             "  --coord HOST:PORT       coord's RESP address (default 127.0.0.1:7400)\n"
             "  --queue-http HOST:PORT  the queue's HTTP address (default 127.0.0.1:4151)\n"
             "  --interval MS           refresh period (default 1000)\n"
             "  --iterations N          stop after N refreshes (default 0: until Ctrl-C)\n"
             "  -h, --help              show this help\n");
}

int cmd_top(int argc, char **argv) {
  static const struct option longopts[] = {{"coord", required_argument, 0, 'c'},
                                           {"queue-http", required_argument, 0, 'q'},
                                           {"interval", required_argument, 0, 'i'},
                                           {"iterations", required_argument, 0, 'n'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  top t = {.coord_port = 7400, .queue_port = 4151};
  snprintf(t.coord_host, sizeof t.coord_host, "127.0.0.1");
  snprintf(t.queue_host, sizeof t.queue_host, "127.0.0.1");
  int64_t interval_ms = 1000, iterations = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      if (!split_hostport(optarg, t.coord_host, sizeof t.coord_host, &t.coord_port)) {
        fprintf(stderr, "ravel top: --coord %s is invalid: use HOST:PORT\n", optarg);
        return 2;
      }
      break;
    case 'q':
      if (!split_hostport(optarg, t.queue_host, sizeof t.queue_host, &t.queue_port)) {
        fprintf(stderr, "ravel top: --queue-http %s is invalid: use HOST:PORT\n", optarg);
        return 2;
      }
      break;
    case 'i': interval_ms = cli_int_opt("top", "--interval", optarg, 100, 3600000); break;
    case 'n': iterations = cli_int_opt("top", "--iterations", optarg, 0, INT32_MAX); break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  rv_thread_adopt("main", "top");
  bool tty = isatty(STDOUT_FILENO);
  for (int64_t i = 0; iterations == 0 || i < iterations; i++) {
    if (tty)
      fputs("\033[H\033[2J", stdout);
    else if (i > 0)
      fputs("\n", stdout);
    render(stdout, &t);
    if (iterations == 0 || i + 1 < iterations)
      rv_sleep(NULL, interval_ms * RV_NS_PER_MS);
  }
  return 0;
}
