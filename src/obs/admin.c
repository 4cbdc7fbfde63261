/*
 * The admin HTTP server over libmicrohttpd (see admin.h for the contract).
 *
 * libmicrohttpd calls the access handler several times per request: once to
 * set up, once per chunk of body, once more with no data when the body is
 * complete.  We gather the body (bounded) and dispatch on the last call.
 */
#define _GNU_SOURCE
#include "obs/admin.h"

#include "obs/dump.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct route {
  char method[8];
  char path[96];
  bool prefix;
  rv_admin_handler fn;
  void *arg;
} route;

struct rv_admin {
  struct MHD_Daemon *daemon;
  rv_rawmu routes_mu; /* routes may be added while requests are served */
  uint16_t port;
  rv_metrics *metrics;
  rv_registry *registry;
  route routes[RV_ADMIN_ROUTES_MAX];
  size_t nroutes;
};

typedef struct pending {
  char *body;
  size_t len, cap;
  bool too_big;
} pending;

const char *rv_admin_query(const rv_admin_request *req, const char *name) {
  return MHD_lookup_connection_value((struct MHD_Connection *)req->opaque, MHD_GET_ARGUMENT_KIND,
                                     name);
}

void rv_admin_printf(rv_admin_response *resp, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  free(resp->body);
  resp->body = n >= 0 ? s : NULL;
  resp->body_len = n >= 0 ? (size_t)n : 0;
}

static void set_body(rv_admin_response *resp, char *body) {
  free(resp->body);
  resp->body = body;
  resp->body_len = body ? strlen(body) : 0;
  if (!body) {
    resp->status = 500;
    rv_admin_printf(resp, "out of memory\n");
  }
}

/* ---- built-in routes ------------------------------------------------------------ */

static bool want_json(const rv_admin_request *req) {
  const char *f = rv_admin_query(req, "format");
  return f && strcmp(f, "json") == 0;
}

static void h_healthz(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  rv_admin_printf(resp, "ok\n");
}

static void h_metrics(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  rv_admin *a = arg;
  char *out = NULL;
  size_t len = 0;
  int rc = a->metrics ? rv_metrics_render(a->metrics, &out, &len) : RV_EINVAL;
  if (rc != RV_OK) {
    resp->status = 500;
    rv_admin_printf(resp, "cannot render metrics: %s\n",
                    a->metrics ? rv_strerror(rc) : "no metrics registry");
    return;
  }
  resp->content_type = RV_METRICS_CONTENT_TYPE;
  resp->body = out;
  resp->body_len = len;
}

static void h_threads(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  rv_admin *a = arg;
  bool json = want_json(req);
  if (json)
    resp->content_type = "application/json";
  set_body(resp, rv_dump(a->registry, RV_DUMP_THREADS, json ? RV_DUMP_JSON : RV_DUMP_TEXT));
}

static void h_locks(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  rv_admin *a = arg;
  bool json = want_json(req);
  if (json)
    resp->content_type = "application/json";
  set_body(resp, rv_dump(a->registry, RV_DUMP_LOCKS, json ? RV_DUMP_JSON : RV_DUMP_TEXT));
}

static void h_index(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  rv_admin *a = arg;
  char *s = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&s, &len);
  if (!f) {
    set_body(resp, NULL);
    return;
  }
  fprintf(f, "ravel admin endpoints:\n");
  rv_rawmu_lock(&a->routes_mu);
  for (size_t i = 0; i < a->nroutes; i++)
    fprintf(f, "  %-6s %s%s\n", a->routes[i].method[0] ? a->routes[i].method : "*",
            a->routes[i].path, a->routes[i].prefix ? "..." : "");
  rv_rawmu_unlock(&a->routes_mu);
  fclose(f);
  set_body(resp, s);
}

/* ---- dispatch ---------------------------------------------------------------------- */

static bool find_route(rv_admin *a, const char *method, const char *path, bool *method_mismatch,
                       route *found) {
  *method_mismatch = false;
  bool ok = false;
  rv_rawmu_lock(&a->routes_mu);
  for (size_t i = 0; i < a->nroutes && !ok; i++) {
    const route *r = &a->routes[i];
    bool match = r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0
                           : strcmp(path, r->path) == 0;
    if (!match)
      continue;
    if (r->method[0] && strcmp(r->method, method) != 0) {
      *method_mismatch = true;
      continue;
    }
    *found = *r;
    ok = true;
  }
  rv_rawmu_unlock(&a->routes_mu);
  return ok;
}

static enum MHD_Result send_response(struct MHD_Connection *conn, rv_admin_response *resp) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      resp->body_len, resp->body ? resp->body : (char *)"", resp->body ? MHD_RESPMEM_MUST_FREE
                                                                       : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    free(resp->body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                          resp->content_type ? resp->content_type : "text/plain; charset=utf-8");
  if (resp->header_name && resp->header_value)
    MHD_add_response_header(r, resp->header_name, resp->header_value);
  enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  rv_admin *a = cls;
  pending *p = *con_cls;
  if (!p) {
    p = calloc(1, sizeof *p);
    if (!p)
      return MHD_NO;
    *con_cls = p;
    return MHD_YES;
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (p->too_big || p->len + n > RV_ADMIN_BODY_MAX) {
      p->too_big = true;
      return MHD_YES;
    }
    if (p->len + n + 1 > p->cap) {
      size_t cap = p->cap ? p->cap : 4096;
      while (cap < p->len + n + 1)
        cap *= 2;
      char *nb = realloc(p->body, cap);
      if (!nb)
        return MHD_NO;
      p->body = nb;
      p->cap = cap;
    }
    memcpy(p->body + p->len, upload_data, n);
    p->len += n;
    p->body[p->len] = 0;
    return MHD_YES;
  }

  rv_admin_response resp = {.status = 200};
  if (p->too_big) {
    resp.status = 413;
    rv_admin_printf(&resp, "request body over %u bytes\n", RV_ADMIN_BODY_MAX);
    return send_response(conn, &resp);
  }
  bool wrong_method;
  route found;
  const route *r = find_route(a, method, url, &wrong_method, &found) ? &found : NULL;
  if (!r) {
    resp.status = wrong_method ? 405 : 404;
    rv_admin_printf(&resp, wrong_method ? "method %s not allowed on %s\n" : "no route %s %s\n",
                    method, url);
    return send_response(conn, &resp);
  }
  rv_admin_request req = {.method = method,
                          .path = url,
                          .body = p->body ? p->body : "",
                          .body_len = p->len,
                          .opaque = conn};
  r->fn(r->arg, &req, &resp);
  return send_response(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  pending *p = *con_cls;
  if (p) {
    free(p->body);
    free(p);
  }
  *con_cls = NULL;
}

int rv_admin_route(rv_admin *a, const char *method, const char *path, rv_admin_handler fn,
                   void *arg) {
  if (!path || strlen(path) >= sizeof a->routes[0].path)
    return RV_ELIMIT;
  rv_rawmu_lock(&a->routes_mu);
  if (a->nroutes >= RV_ADMIN_ROUTES_MAX) {
    rv_rawmu_unlock(&a->routes_mu);
    return RV_ELIMIT;
  }
  route *r = &a->routes[a->nroutes++];
  snprintf(r->method, sizeof r->method, "%s", method ? method : "");
  snprintf(r->path, sizeof r->path, "%s", path);
  size_t n = strlen(path);
  r->prefix = n > 1 && path[n - 1] == '/';
  r->fn = fn;
  r->arg = arg;
  rv_rawmu_unlock(&a->routes_mu);
  return RV_OK;
}

int rv_admin_start(rv_admin **out, const rv_admin_opts *opts) {
  rv_admin *a = calloc(1, sizeof *a);
  if (!a)
    return RV_ENOMEM;
  rv_rawmu_init(&a->routes_mu);
  a->metrics = opts->metrics;
  a->registry = opts->registry ? opts->registry : rv_registry_current();
  if (a->metrics)
    rv_metrics_add_collector(a->metrics, rv_registry_collect, a->registry);
  rv_admin_route(a, "GET", "/healthz", h_healthz, a);
  rv_admin_route(a, "GET", "/metrics", h_metrics, a);
  rv_admin_route(a, "GET", "/debug/threads", h_threads, a);
  rv_admin_route(a, "GET", "/debug/locks", h_locks, a);
  rv_admin_route(a, "GET", "/debug", h_index, a);

  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(opts->port)};
  if (inet_pton(AF_INET, opts->host ? opts->host : RV_ADMIN_DEFAULT_HOST, &sin.sin_addr) != 1) {
    free(a);
    return RV_EADDR;
  }
  unsigned flags = opts->thread_per_connection
                       ? MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION
                       : MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
  a->daemon = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, a,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
      a, MHD_OPTION_CONNECTION_LIMIT, (unsigned)RV_ADMIN_CONNECTIONS_MAX,
      MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
  if (!a->daemon) {
    free(a);
    return RV_EADDR;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
  a->port = info ? info->port : opts->port;
  *out = a;
  return RV_OK;
}

uint16_t rv_admin_port(const rv_admin *a) { return a->port; }

void rv_admin_stop(rv_admin *a) {
  if (!a)
    return;
  MHD_stop_daemon(a->daemon);
  rv_rawmu_destroy(&a->routes_mu);
  free(a);
}
