/*
 * log: logfmt lines assembled in a bounded buffer and written whole.
 * The format and its rules are described in log.h.
 *
 * Values come from a printf format, but quoting is decided per field, after
 * formatting, so the format is walked here one conversion at a time: each
 * conversion's argument is fetched with va_arg of the type its length
 * modifier names and formatted alone by snprintf.  That is what lets a %s
 * containing spaces or quotes still come out as one well-quoted value.
 */
#include "obs/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "rt/rt.h"

/* Ends a line that was cut; room for it is reserved in every line. */
#define RV__LOG_TRUNCATED " truncated=true\n"
#define RV__LOG_BODY_MAX (RV_LOG_LINE_MAX - (sizeof RV__LOG_TRUNCATED - 1))
/* Bytes of one rebuilt conversion spec ("%-+ #0*.*lld" with widths expanded). */
#define RV__LOG_SPEC_MAX 64

struct rv_log {
  int fd;
  _Atomic int min_level;
  char component[RV_LOG_COMPONENT_MAX + 1];
};

static const char *const rv__level_names[] = {"debug", "info", "warn", "error"};

static bool rv__level_valid(int level) { return level >= RV_LOG_DEBUG && level <= RV_LOG_ERROR; }

rv_log *rv_log_new(int fd, enum rv_log_level min, const char *component) {
  if (fd < 0 || !rv__level_valid((int)min)) return NULL;
  rv_log *log = calloc(1, sizeof *log);
  if (!log) return NULL;
  log->fd = fd;
  atomic_init(&log->min_level, (int)min);
  snprintf(log->component, sizeof log->component, "%s", component ? component : "");
  return log;
}

void rv_log_free(rv_log *log) { free(log); }

void rv_log_set_level(rv_log *log, enum rv_log_level min) {
  if (log && rv__level_valid((int)min)) atomic_store(&log->min_level, (int)min);
}

enum rv_log_level rv_log_get_level(const rv_log *log) {
  return log ? (enum rv_log_level)atomic_load(&log->min_level) : RV_LOG_ERROR;
}

bool rv_log_enabled(const rv_log *log, enum rv_log_level level) {
  return log && rv__level_valid((int)level) && (int)level >= atomic_load(&log->min_level);
}

/* Operators type levels in flags and environment variables; be forgiving of case. */
int rv_log_level_parse(const char *s, enum rv_log_level *out) {
  if (!s) return RV_EINVAL;
  for (int i = RV_LOG_DEBUG; i <= RV_LOG_ERROR; i++) {
    if (strcasecmp(s, rv__level_names[i]) == 0) {
      *out = (enum rv_log_level)i;
      return RV_OK;
    }
  }
  if (strcasecmp(s, "warning") != 0) return RV_EINVAL;
  *out = RV_LOG_WARN;
  return RV_OK;
}

const char *rv_log_level_name(enum rv_log_level level) {
  return rv__level_valid((int)level) ? rv__level_names[level] : "unknown";
}

/* Floor division, so instants before 1970 still print the right second. */
void rv_log_format_ts(char out[RV_LOG_TS_MAX], int64_t wall_ns) {
  int64_t secs = wall_ns / RV_NS_PER_S, rem_ns = wall_ns % RV_NS_PER_S;
  if (rem_ns < 0) {
    secs--;
    rem_ns += RV_NS_PER_S;
  }
  time_t t = (time_t)secs;
  struct tm tm;
  if (!gmtime_r(&t, &tm)) {
    snprintf(out, RV_LOG_TS_MAX, "invalid");
    return;
  }
  size_t n = strftime(out, RV_LOG_TS_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, RV_LOG_TS_MAX - n, ".%03dZ", (int)(rem_ns / RV_NS_PER_MS));
}

/* ---- the line buffer ----------------------------------------------------------- */

typedef struct rv__line {
  char buf[RV_LOG_LINE_MAX];
  size_t len;
  bool truncated; /* once set, nothing more is appended */
} rv__line;

/* Append all of s or, if it does not fit, nothing (and mark the line cut). */
static bool rv__put(rv__line *l, const char *s, size_t n) {
  if (l->truncated || l->len + n > RV__LOG_BODY_MAX) {
    l->truncated = true;
    return false;
  }
  memcpy(l->buf + l->len, s, n);
  l->len += n;
  return true;
}

/* logfmt (go-logfmt) quotes a value that is empty or has a space, control, '=' or '"'. */
static bool rv__needs_quotes(const char *s, size_t n) {
  if (n == 0) return true;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == '=' || c == '"' || c == 0x7f) return true;
  }
  return false;
}

/* Bytes of the UTF-8 sequence starting with c (1 for anything unexpected). */
static size_t rv__utf8_len(unsigned char c) {
  return c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/*
 * Append a value, quoted if needed.  Each escape and each UTF-8 sequence is
 * appended whole, one byte stays reserved for the closing quote, so a value
 * cut by the line bound still parses.
 */
static void rv__put_value(rv__line *l, const char *s, size_t n, bool force_quotes) {
  bool quoted = force_quotes || rv__needs_quotes(s, n);
  if (quoted && !rv__put(l, "\"", 1)) return;
  size_t reserve = quoted ? 1 : 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    const char *piece = s + i;
    size_t len = rv__utf8_len(c);
    if (len > n - i) len = 1;
    if (quoted && (c == '"' || c == '\\')) {
      len = (size_t)snprintf(esc, sizeof esc, "\\%c", c);
      piece = esc;
    } else if (quoted && (c < ' ' || c == 0x7f)) {
      len = c == '\n' ? (size_t)snprintf(esc, sizeof esc, "\\n")
            : c == '\r' ? (size_t)snprintf(esc, sizeof esc, "\\r")
            : c == '\t' ? (size_t)snprintf(esc, sizeof esc, "\\t")
                        : (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
      piece = esc;
    }
    if (l->len + len + reserve > RV__LOG_BODY_MAX) {
      l->truncated = true;
      break;
    }
    memcpy(l->buf + l->len, piece, len);
    l->len += len;
    i += piece == esc ? 1 : len;
  }
  if (quoted) { /* the reserved byte: always fits */
    l->buf[l->len++] = '"';
  }
}

/* Keys are the caller's literal text; make any odd byte harmless rather than fail. */
static void rv__put_key(rv__line *l, const char *k, size_t n) {
  if (!rv__put(l, " ", 1)) return;
  if (n == 0) {
    k = "_";
    n = 1;
  }
  size_t start = l->len;
  if (!rv__put(l, k, n)) return;
  for (size_t i = start; i < l->len; i++) {
    unsigned char c = (unsigned char)l->buf[i];
    if (c <= ' ' || c == '=' || c == '"' || c == 0x7f) l->buf[i] = '_';
  }
  rv__put(l, "=", 1);
}

/* ---- formatting one field ------------------------------------------------------ */

/* A formatted value; `cut` when it did not fit (the line will be cut anyway). */
typedef struct rv__val {
  char buf[RV_LOG_LINE_MAX];
  size_t len;
  bool cut;
} rv__val;

static void rv__val_add(rv__val *v, int n) {
  size_t room = sizeof v->buf - v->len;
  if (n < 0) return;
  if ((size_t)n >= room) {
    v->cut = true;
    v->len = sizeof v->buf - 1;
  } else {
    v->len += (size_t)n;
  }
}

static void rv__val_putc(rv__val *v, char c) {
  if (v->len + 1 < sizeof v->buf)
    v->buf[v->len++] = c;
  else
    v->cut = true;
}

/* Length modifiers, which decide the argument's type. */
enum rv__len { RV__LEN_NONE, RV__LEN_HH, RV__LEN_H, RV__LEN_L, RV__LEN_LL, RV__LEN_Z,
               RV__LEN_J, RV__LEN_T, RV__LEN_BIG_L };

/*
 * Format one conversion (*pp points just past '%') into v, consuming its
 * arguments.  Returns false for a conversion this walker does not support,
 * after which the argument list can no longer be trusted.
 */
static bool rv__format_conv(rv__val *v, const char **pp, va_list *ap) {
  const char *p = *pp;
  char spec[RV__LOG_SPEC_MAX];
  size_t sn = 0;
  spec[sn++] = '%';
  while (*p && strchr("-+ #0", *p) && sn < 8) spec[sn++] = *p++;
  for (int part = 0; part < 2; part++) { /* width, then precision */
    if (part == 1) {
      if (*p != '.') break;
      spec[sn++] = *p++;
    }
    if (*p == '*') {
      int n = va_arg(*ap, int);
      if (part == 1 && n < 0)
        sn--; /* a negative precision counts as none: drop the '.' */
      else
        sn += (size_t)snprintf(spec + sn, 16, "%d", n);
      p++;
    }
    while (*p >= '0' && *p <= '9' && sn < 40) spec[sn++] = *p++;
  }
  enum rv__len len = RV__LEN_NONE;
  static const struct { const char *text; enum rv__len len; } mods[] = {
      {"hh", RV__LEN_HH}, {"h", RV__LEN_H}, {"ll", RV__LEN_LL}, {"l", RV__LEN_L},
      {"z", RV__LEN_Z},   {"j", RV__LEN_J}, {"t", RV__LEN_T},   {"L", RV__LEN_BIG_L}};
  for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
    size_t n = strlen(mods[i].text);
    if (strncmp(p, mods[i].text, n) == 0) {
      memcpy(spec + sn, p, n);
      sn += n;
      p += n;
      len = mods[i].len;
      break;
    }
  }
  char conv = *p;
  if (!conv || !strchr("diouxXcspfFeEgGaA", conv)) return false;
  spec[sn++] = *p++;
  spec[sn] = '\0';
  *pp = p;

  char *out = v->buf + v->len;
  size_t room = sizeof v->buf - v->len;
  int n;
  bool is_signed = conv == 'd' || conv == 'i';
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  if (strchr("diouxX", conv)) {
    switch (len) {
    case RV__LEN_L:
      n = is_signed ? snprintf(out, room, spec, va_arg(*ap, long))
                    : snprintf(out, room, spec, va_arg(*ap, unsigned long));
      break;
    case RV__LEN_LL:
      n = is_signed ? snprintf(out, room, spec, va_arg(*ap, long long))
                    : snprintf(out, room, spec, va_arg(*ap, unsigned long long));
      break;
    case RV__LEN_Z:
      n = is_signed ? snprintf(out, room, spec, va_arg(*ap, ssize_t))
                    : snprintf(out, room, spec, va_arg(*ap, size_t));
      break;
    case RV__LEN_J:
      n = is_signed ? snprintf(out, room, spec, va_arg(*ap, intmax_t))
                    : snprintf(out, room, spec, va_arg(*ap, uintmax_t));
      break;
    case RV__LEN_T:
      n = snprintf(out, room, spec, va_arg(*ap, ptrdiff_t));
      break;
    case RV__LEN_BIG_L:
      return false;
    default: /* none, hh, h: promoted to int */
      n = is_signed ? snprintf(out, room, spec, va_arg(*ap, int))
                    : snprintf(out, room, spec, va_arg(*ap, unsigned int));
    }
  } else if (len == RV__LEN_BIG_L && strchr("fFeEgGaA", conv)) {
    n = snprintf(out, room, spec, va_arg(*ap, long double));
  } else if (len != RV__LEN_NONE && !(len == RV__LEN_L && strchr("fFeEgGaA", conv))) {
    return false; /* %lc, %ls, %hs and the like */
  } else if (conv == 'c') {
    n = snprintf(out, room, spec, va_arg(*ap, int));
  } else if (conv == 's') {
    const char *s = va_arg(*ap, const char *);
    n = snprintf(out, room, spec, s ? s : "(null)");
  } else if (conv == 'p') {
    n = snprintf(out, room, spec, va_arg(*ap, void *));
  } else {
    n = snprintf(out, room, spec, va_arg(*ap, double));
  }
#pragma GCC diagnostic pop
  rv__val_add(v, n);
  return true;
}

/*
 * Walk kv_fmt field by field.  A field ends at a literal space; its key is
 * the literal text before the first '=' (if that comes before any
 * conversion).  Returns false if an unsupported conversion stopped the walk.
 */
static bool rv__put_fields(rv__line *l, const char *fmt, va_list *ap) {
  rv__val val, *v = &val;
  for (const char *p = fmt; *p && !l->truncated;) {
    if (*p == ' ') {
      p++;
      continue;
    }
    const char *key = p;
    while (*p && *p != ' ' && *p != '=' && *p != '%') p++;
    size_t klen = (size_t)(p - key);
    if (*p == '=') {
      p++;
    } else {
      p = key; /* no key: the whole field is the value */
      key = "_";
      klen = 1;
    }
    v->len = 0;
    v->cut = false;
    while (*p && *p != ' ') {
      if (*p == '%' && p[1] == '%') {
        rv__val_putc(v, '%');
        p += 2;
      } else if (*p == '%') {
        p++;
        if (!rv__format_conv(v, &p, ap)) return false;
      } else {
        rv__val_putc(v, *p++);
      }
    }
    rv__put_key(l, key, klen);
    if (!l->truncated) rv__put_value(l, v->buf, v->len, false);
    if (v->cut) l->truncated = true;
  }
  return true;
}

/* ---- writing ------------------------------------------------------------------ */

/* One write(2) in the normal case; a short write is finished rather than lost. */
static void rv__write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* nowhere to report a failing log; drop the line */
    p += w;
    n -= (size_t)w;
  }
}

void rv_log_vwrite(rv_log *log, enum rv_log_level level, const char *msg, const char *kv_fmt,
                   va_list ap) {
  if (!rv_log_enabled(log, level)) return;
  int saved_errno = errno;
  rv__line line, *l = &line;
  l->len = 0;
  l->truncated = false;
  char ts[RV_LOG_TS_MAX];
  rv_log_format_ts(ts, rv_wall_ns());
  rv__put(l, "ts=", 3);
  rv__put(l, ts, strlen(ts));
  rv__put(l, " level=", 7);
  rv__put(l, rv__level_names[level], strlen(rv__level_names[level]));
  rv__put(l, " comp=", 6);
  rv__put_value(l, log->component, strlen(log->component), false);
  rv__put(l, " msg=", 5);
  msg = msg ? msg : "";
  rv__put_value(l, msg, strlen(msg), true);
  va_list aq;
  va_copy(aq, ap);
  bool ok = rv__put_fields(l, kv_fmt ? kv_fmt : "", &aq);
  va_end(aq);
  if (!ok) rv__put(l, " badfmt=true", 12);
  /* The body never exceeds RV__LOG_BODY_MAX, so the ending always fits. */
  const char *end = l->truncated ? RV__LOG_TRUNCATED : "\n";
  memcpy(l->buf + l->len, end, strlen(end));
  l->len += strlen(end);
  rv__write_all(log->fd, l->buf, l->len);
  errno = saved_errno;
}

void rv_log_write(rv_log *log, enum rv_log_level level, const char *msg, const char *kv_fmt,
                  ...) {
  va_list ap;
  va_start(ap, kv_fmt);
  rv_log_vwrite(log, level, msg, kv_fmt, ap);
  va_end(ap);
}
