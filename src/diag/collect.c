/* Bounded fetches for ravel grab: HTTP GET, RESP calls, RESP -> JSON, outside tools. */
#define _GNU_SOURCE
#include "diag/collect.h"

#include "rt/ctx.h"
#include "rt/rt.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

bool rv_diag_parse_url(const char *url, char *host, size_t hostcap, uint16_t *port) {
  const char *p = strstr(url, "://");
  p = p ? p + 3 : url;
  size_t n = strcspn(p, "/");
  if (n == 0 || n >= 256)
    return false;
  char hp[256];
  memcpy(hp, p, n);
  hp[n] = 0;
  char *colon = strrchr(hp, ':');
  if (!colon || colon == hp)
    return false;
  char *end;
  long v = strtol(colon + 1, &end, 10);
  if (*end || v < 1 || v > 65535)
    return false;
  *colon = 0;
  const char *h = hp;
  size_t hl = strlen(h);
  if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') { /* [::1] */
    snprintf(host, hostcap, "%.*s", (int)(hl - 2), h + 1);
  } else {
    snprintf(host, hostcap, "%s", h);
  }
  *port = (uint16_t)v;
  return true;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

int rv_diag_http_get(const char *host, uint16_t port, const char *path, int64_t deadline_ns,
                     int *status, char **body, size_t *len) {
  *body = NULL;
  *len = 0;
  *status = 0;
  rv_ctx *ctx = rv_ctx_with_deadline(NULL, deadline_ns);
  if (!ctx)
    return RV_ENOMEM;
  rv_conn *c = NULL;
  int rc = rv_tcp_connect(&c, host, port, ctx);
  char *buf = NULL;
  size_t cap = 65536, n = 0;
  if (rc != RV_OK)
    goto out;
  char req[1024];
  int rl = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s:%u\r\nUser-Agent: ravel-grab\r\n\r\n",
                    path, host, port);
  if (rl < 0 || (size_t)rl >= sizeof req) {
    rc = RV_EINVAL;
    goto out;
  }
  if ((rc = rv_conn_write_all(c, req, (size_t)rl, ctx)) != RV_OK)
    goto out;
  if (!(buf = malloc(cap + 1))) {
    rc = RV_ENOMEM;
    goto out;
  }
  for (;;) {
    if (n == cap) {
      if (cap >= RV_DIAG_FETCH_MAX_BYTES) {
        rc = RV_ELIMIT;
        goto out;
      }
      char *nb = realloc(buf, cap * 2 + 1);
      if (!nb) {
        rc = RV_ENOMEM;
        goto out;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = rv_conn_read(c, buf + n, cap - n, ctx);
    if (r < 0) {
      rc = (int)r;
      goto out;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  buf[n] = 0;
  char *sep = strstr(buf, "\r\n\r\n");
  int st = 0;
  if (!sep || sscanf(buf, "HTTP/1.%*d %d", &st) != 1) {
    rc = RV_EPROTO;
    goto out;
  }
  size_t off = (size_t)(sep + 4 - buf);
  memmove(buf, buf + off, n - off + 1);
  *body = buf;
  *len = n - off;
  *status = st;
  buf = NULL;
  rc = RV_OK;
out:
  free(buf);
  if (c)
    rv_conn_close(c);
  rv_ctx_free(ctx);
  return rc;
}

/* ---- RESP ------------------------------------------------------------------------------------ */

struct rv_diag_resp {
  rv_conn *c;
  redisReader *rd;
  size_t bytes; /* read so far for the reply in progress */
};

int rv_diag_resp_open(rv_diag_resp **out, const char *host, uint16_t port, int64_t deadline_ns) {
  *out = NULL;
  rv_diag_resp *r = calloc(1, sizeof *r);
  rv_ctx *ctx = rv_ctx_with_deadline(NULL, deadline_ns);
  if (!r || !ctx || !(r->rd = redisReaderCreate())) {
    rv_ctx_free(ctx);
    if (r && r->rd)
      redisReaderFree(r->rd);
    free(r);
    return RV_ENOMEM;
  }
  int rc = rv_tcp_connect(&r->c, host, port, ctx);
  rv_ctx_free(ctx);
  if (rc != RV_OK) {
    redisReaderFree(r->rd);
    free(r);
    return rc;
  }
  *out = r;
  return RV_OK;
}

redisReply *rv_diag_resp_call(rv_diag_resp *r, int argc, const char **argv, int64_t deadline_ns,
                              int *err) {
  *err = RV_OK;
  char *cmd = NULL;
  int n = redisFormatCommandArgv(&cmd, argc, argv, NULL);
  if (n < 0) {
    *err = RV_ENOMEM;
    return NULL;
  }
  rv_ctx *ctx = rv_ctx_with_deadline(NULL, deadline_ns);
  if (!ctx) {
    redisFreeCommand(cmd);
    *err = RV_ENOMEM;
    return NULL;
  }
  void *reply = NULL;
  int rc = rv_conn_write_all(r->c, cmd, (size_t)n, ctx);
  redisFreeCommand(cmd);
  r->bytes = 0;
  while (rc == RV_OK) {
    if (redisReaderGetReply(r->rd, &reply) != REDIS_OK) {
      rc = RV_EPROTO;
      break;
    }
    if (reply)
      break;
    char buf[65536];
    ssize_t got = rv_conn_read(r->c, buf, sizeof buf, ctx);
    if (got < 0) {
      rc = (int)got;
      break;
    }
    if (got == 0) {
      rc = RV_ECLOSED;
      break;
    }
    r->bytes += (size_t)got;
    if (r->bytes > RV_DIAG_FETCH_MAX_BYTES) {
      rc = RV_ELIMIT;
      break;
    }
    if (redisReaderFeed(r->rd, buf, (size_t)got) != REDIS_OK) {
      rc = RV_EPROTO;
      break;
    }
  }
  rv_ctx_free(ctx);
  *err = rc;
  if (rc != RV_OK && reply) {
    freeReplyObject(reply);
    reply = NULL;
  }
  return reply;
}

void rv_diag_resp_close(rv_diag_resp *r) {
  if (!r)
    return;
  if (r->c)
    rv_conn_close(r->c);
  if (r->rd)
    redisReaderFree(r->rd);
  free(r);
}

/* ---- RESP -> JSON ------------------------------------------------------------------------------ */

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t need;
  uint32_t cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    need = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < need)
    return 0;
  for (size_t i = 1; i < need; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((need == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return need;
}

json_t *rv_diag_json_bytes(const char *s, size_t len) {
  if (!s)
    return json_null();
  json_t *j = json_stringn(s, len);
  if (j)
    return j;
  /* Not UTF-8: replace each invalid byte with U+FFFD (3 bytes). */
  char *o = malloc(len * 3 + 1);
  if (!o)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < len;) {
    size_t q = utf8_seq((const unsigned char *)s + i, len - i);
    if (q == 0) {
      memcpy(o + k, "\xef\xbf\xbd", 3);
      k += 3;
      i++;
    } else {
      memcpy(o + k, s + i, q);
      k += q;
      i += q;
    }
  }
  j = json_stringn(o, k);
  free(o);
  return j;
}

static bool is_str(const redisReply *r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool looks_like_map(const redisReply *r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
    return false;
  for (size_t i = 0; i < r->elements; i += 2)
    if (!is_str(r->element[i]))
      return false;
  return true;
}

static bool is_list_of_maps_key(const char *k, size_t n) {
  static const char *const keys[] = {"held", "waiting", "waiters", "impacts", "events"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (strlen(keys[i]) == n && memcmp(keys[i], k, n) == 0)
      return true;
  return false;
}

json_t *rv_resp_to_json(const redisReply *r, rv_resp_shape shape) {
  if (!r)
    return NULL;
  switch (r->type) {
  case REDIS_REPLY_INTEGER: return json_integer(r->integer);
  case REDIS_REPLY_NIL: return json_null();
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: return rv_diag_json_bytes(r->str, r->len);
  case REDIS_REPLY_ERROR: {
    json_t *o = json_object();
    if (o)
      json_object_set_new(o, "error", rv_diag_json_bytes(r->str, r->len));
    return o;
  }
  case REDIS_REPLY_ARRAY: break;
  default: return json_null();
  }
  if (shape == RV_RESP_MAP && looks_like_map(r)) {
    json_t *o = json_object();
    for (size_t i = 0; o && i < r->elements; i += 2) {
      const redisReply *k = r->element[i];
      char key[512];
      snprintf(key, sizeof key, "%.*s", (int)(k->len < sizeof key ? k->len : sizeof key - 1), k->str);
      rv_resp_shape inner = is_list_of_maps_key(k->str, k->len) ? RV_RESP_LIST_OF_MAPS : RV_RESP_PLAIN;
      json_t *v = rv_resp_to_json(r->element[i + 1], inner);
      /* A key that is not valid UTF-8 cannot be an object key: keep the pair as an array. */
      if (json_object_set_new(o, key, v ? v : json_null()) != 0) {
        json_decref(o);
        return rv_resp_to_json(r, RV_RESP_PLAIN);
      }
    }
    return o;
  }
  json_t *a = json_array();
  rv_resp_shape elem = shape == RV_RESP_LIST_OF_MAPS ? RV_RESP_MAP : RV_RESP_PLAIN;
  for (size_t i = 0; a && i < r->elements; i++) {
    json_t *v = rv_resp_to_json(r->element[i], elem);
    json_array_append_new(a, v ? v : json_null());
  }
  return a;
}

/* ---- outside tools ------------------------------------------------------------------------------ */

int rv_diag_run_bounded(const char *const *argv, const char *out_path, int64_t deadline_ns,
                        int *exit_status) {
  *exit_status = -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  /* Its own process group, so that a kill on timeout reaches what it started too. */
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&at, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, &at, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (rc != 0)
    return RV_ENOTFOUND;
  int st = 0;
  for (;;) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid)
      break;
    if (w < 0 && errno != EINTR)
      return RV_EIO;
    if (rv_now_ns() >= deadline_ns) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      return RV_ETIMEDOUT;
    }
    rv_sleep(NULL, 10 * RV_NS_PER_MS);
  }
  *exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return RV_OK;
}
