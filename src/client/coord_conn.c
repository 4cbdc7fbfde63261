/*
 * RESP over rt's connections for the coord client: commands are written as
 * RESP arrays of bulk strings, replies parsed with hiredis's redisReader (the
 * parser only: hiredis never touches the socket, so every wait is an rt wait
 * that honours the caller's rv_ctx).  Also the control connection (shared,
 * under the "coord-control" mutex) and the flat-map helpers.
 *
 * Threads: a cc_conn is used by one thread at a time; the control connection
 * by whichever thread holds ctl_mu.  The last server error text is kept per
 * thread (rv_coord_last_error).
 */
#include "client/coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per rv_thread (a simulated thread under the simulator), not _Thread_local. */
static char *last_err(void) { return rv_thread_slot(RV_SLOT_COORD_LAST_ERROR, CC_ERR_MAX); }

const char *rv_coord_last_error(void) {
  const char *e = last_err();
  return e ? e : "out of memory";
}

void cc_set_last_error(const char *text) {
  char *e = last_err();
  if (e)
    snprintf(e, CC_ERR_MAX, "%s", text ? text : "");
}

int cc_dial(rv_coord_client *c, rv_ctx *ctx, cc_conn **out) {
  cc_conn *k = calloc(1, sizeof *k);
  if (!k)
    return RV_ENOMEM;
  k->rd = redisReaderCreate();
  if (!k->rd) {
    free(k);
    return RV_ENOMEM;
  }
  int rc = rv_tcp_connect(&k->c, c->host, c->port, ctx);
  if (rc != RV_OK) {
    redisReaderFree(k->rd);
    free(k);
    return rc;
  }
  *out = k;
  return RV_OK;
}

void cc_conn_free(cc_conn *k) {
  if (!k)
    return;
  rv_conn_close(k->c);
  redisReaderFree(k->rd);
  free(k);
}

int cc_send(cc_conn *k, rv_ctx *ctx, int argc, const char *const *argv) {
  size_t len[CC_ARGS_MAX];
  size_t total = 32;
  if (argc <= 0 || argc > CC_ARGS_MAX)
    return RV_EINVAL;
  for (int i = 0; i < argc; i++) {
    len[i] = strlen(argv[i]);
    total += len[i] + 32;
  }
  char *buf = malloc(total);
  if (!buf)
    return RV_ENOMEM;
  size_t n = (size_t)snprintf(buf, total, "*%d\r\n", argc);
  for (int i = 0; i < argc; i++) {
    n += (size_t)snprintf(buf + n, total - n, "$%zu\r\n", len[i]);
    memcpy(buf + n, argv[i], len[i]);
    n += len[i];
    buf[n++] = '\r';
    buf[n++] = '\n';
  }
  int rc = rv_conn_write_all(k->c, buf, n, ctx);
  free(buf);
  return rc;
}

int cc_recv(cc_conn *k, rv_ctx *ctx, redisReply **out) {
  char buf[CC_READ_CHUNK];
  for (;;) {
    void *rep = NULL;
    if (redisReaderGetReply(k->rd, &rep) != REDIS_OK)
      return RV_EPROTO;
    if (rep) {
      *out = rep;
      return RV_OK;
    }
    ssize_t n = rv_conn_read(k->c, buf, sizeof buf, ctx);
    if (n == 0)
      return RV_ECLOSED;
    if (n < 0)
      return (int)n;
    if (redisReaderFeed(k->rd, buf, (size_t)n) != REDIS_OK)
      return RV_EPROTO;
  }
}

int cc_call(cc_conn *k, rv_ctx *ctx, int argc, const char *const *argv, redisReply **out) {
  int rc = cc_send(k, ctx, argc, argv);
  return rc != RV_OK ? rc : cc_recv(k, ctx, out);
}

static bool is_ctx_err(int rc) { return rc == RV_ECANCELED || rc == RV_EDEADLINE; }

/* One command on the control connection (held ctl_mu), reconnecting once if a reused
 * connection turns out broken; the command may then have been sent twice. */
static int ctl_call_locked(rv_coord_client *c, rv_ctx *ctx, int argc, const char *const *argv,
                           redisReply **out) {
  int rc = RV_OK;
  for (int attempt = 0; attempt < 2; attempt++) {
    bool reused = c->ctl != NULL;
    if (!c->ctl && (rc = cc_dial(c, ctx, &c->ctl)) != RV_OK)
      break;
    rc = cc_call(c->ctl, ctx, argc, argv, out);
    if (rc == RV_OK)
      break;
    cc_conn_free(c->ctl); /* its state is unknown now */
    c->ctl = NULL;
    if (!reused || is_ctx_err(rc))
      break; /* a fresh connection failed, or the caller gave up */
  }
  return rc;
}

int cc_ctl_call(rv_coord_client *c, rv_ctx *ctx, int argc, const char *const *argv,
                redisReply **out) {
  int rc = rv_mutex_lock_ctx(&c->ctl_mu, ctx);
  if (rc != RV_OK)
    return rc;
  rc = ctl_call_locked(c, ctx, argc, argv, out);
  rv_mutex_unlock(&c->ctl_mu);
  return rc;
}

int cc_ctl_write(rv_coord_client *c, rv_ctx *ctx, int argc, const char *const *argv,
                 redisReply **out) {
  int rc = rv_mutex_lock_ctx(&c->ctl_mu, ctx);
  if (rc != RV_OK)
    return rc;
  if (c->ctl) { /* an idle connection may be dead (coord restarted): find out first */
    redisReply *pong = NULL;
    rc = ctl_call_locked(c, ctx, 1, (const char *const[]){"PING"}, &pong);
    if (pong)
      freeReplyObject(pong);
  }
  if (rc == RV_OK && !c->ctl)
    rc = cc_dial(c, ctx, &c->ctl);
  if (rc == RV_OK && (rc = cc_call(c->ctl, ctx, argc, argv, out)) != RV_OK) {
    cc_conn_free(c->ctl); /* sent or not, it is not sent again */
    c->ctl = NULL;
  }
  rv_mutex_unlock(&c->ctl_mu);
  return rc;
}

int cc_reply_err(const redisReply *r) {
  if (!r)
    return RV_EPROTO;
  if (r->type != REDIS_REPLY_ERROR)
    return RV_EPROTO;
  cc_set_last_error(r->str);
  static const struct {
    const char *code;
    int err;
  } map[] = {
      {"NOSESSION", RV_ENOTFOUND}, {"EXPIRED", RV_ENOTFOUND}, {"CLOSED", RV_ENOTFOUND},
      {"CANCELLED", RV_ECANCELED}, {"CONFLICT", RV_EBUSY},    {"LIMIT", RV_ELIMIT},
      {"OOM", RV_ENOMEM},          {"STORAGE", RV_EIO},       {"COMPACTED", RV_ERANGE},
      {"FUTURE", RV_ERANGE},       {"NOSERVICE", RV_ENOTFOUND}, {"NOKEY", RV_ENOTFOUND},
  };
  size_t wlen = strcspn(r->str, " ");
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strlen(map[i].code) == wlen && strncmp(r->str, map[i].code, wlen) == 0)
      return map[i].err;
  return RV_EINVAL; /* ERR, BAD*, NOTHELD, NOTOWNER, STALE, ... */
}

const redisReply *cc_map_get(const redisReply *m, const char *key) {
  if (!m || m->type != REDIS_REPLY_ARRAY)
    return NULL;
  for (size_t i = 0; i + 1 < m->elements; i += 2) {
    const redisReply *k = m->element[i];
    if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) && strcmp(k->str, key) == 0)
      return m->element[i + 1];
  }
  return NULL;
}

char *cc_map_strdup(const redisReply *m, const char *key) {
  const redisReply *v = cc_map_get(m, key);
  if (!v || (v->type != REDIS_REPLY_STRING && v->type != REDIS_REPLY_STATUS))
    return NULL;
  return strdup(v->str);
}

long long cc_map_int(const redisReply *m, const char *key, long long dflt) {
  const redisReply *v = cc_map_get(m, key);
  if (!v)
    return dflt;
  if (v->type == REDIS_REPLY_INTEGER)
    return v->integer;
  if (v->type == REDIS_REPLY_STRING)
    return strtoll(v->str, NULL, 10);
  return dflt;
}

void cc_target(char *buf, size_t len, const char *service, const char *replica) {
  if (replica && replica[0])
    snprintf(buf, len, "%s/%s", service, replica);
  else
    snprintf(buf, len, "%s", service);
}
