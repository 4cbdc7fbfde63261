/*
 * resp.c: RESP2 request parser and reply encoder.  See resp.h for the model
 * and the buffer contract; the notes here are about how.
 *
 * The parser is a small state machine over one request at a time.  All its
 * positions are offsets from the first byte of the pending request, so the
 * caller may move its buffer between calls.  Line terminators are searched
 * from where the previous call stopped (rv__scan), so a request that arrives
 * one byte per read is still scanned once.
 *
 * Chunking independence: every check is a function of a prefix of the
 * request and is made at the first byte that decides it, in a fixed order.
 * A header line may end at an index no later than its "cap" (the inline
 * limit, or the request limit, whichever is closer); as soon as the byte at
 * the cap has been seen without a terminator the request fails, whether the
 * bytes came in one read or a thousand.  fuzz_resp checks exactly this.
 */
#include "proto/resp.h"

#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  RV__RESP_IDLE = 0,     /* at the first byte of a request */
  RV__RESP_MB_COUNT,     /* reading "*N\r\n" */
  RV__RESP_MB_BULKLEN,   /* reading "$N\r\n" */
  RV__RESP_MB_BULKDATA,  /* waiting for N bytes and CRLF */
  RV__RESP_INLINE,       /* waiting for the end of an inline line */
  RV__RESP_FAILED,       /* sticky error */
};

/* Initial argv capacity: enough for every coord command without regrowth. */
#define RV__RESP_ARGV_INITIAL 16
/* Initial scratch for inline requests; grows to the line's length. */
#define RV__RESP_SCRATCH_INITIAL 256

/* Defaults live in one place so a shell and its tests agree on them. */
void rv_resp_opts_default(rv_resp_opts *o) {
  o->max_args = RV_RESP_MAX_ARGS_DEFAULT;
  o->max_bulk_bytes = RV_RESP_MAX_BULK_BYTES_DEFAULT;
  o->max_inline_bytes = RV_RESP_MAX_INLINE_BYTES_DEFAULT;
  o->max_request_bytes = RV_RESP_MAX_REQUEST_BYTES_DEFAULT;
}

/*
 * Every failure goes through here so that the state and the message are set
 * together and the parser can never be half-failed.
 */
__attribute__((format(printf, 2, 3))) static int fail(rv_resp_parser *p, const char *fmt,
                                                      ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->rv__err, sizeof p->rv__err, fmt, ap);
  va_end(ap);
  p->rv__state = RV__RESP_FAILED;
  return RV_RESP_ERROR;
}

/*
 * Render one input byte for an error message.  Redis prints it raw with %c;
 * a NUL or a control byte would then corrupt our C string or the reply, so
 * non-printable bytes are shown as \xNN.
 */
static const char *show_byte(unsigned char c, char out[8]) {
  if (c >= 0x20 && c < 0x7f)
    snprintf(out, 8, "%c", c);
  else
    snprintf(out, 8, "\\x%02x", c);
  return out;
}

/*
 * Options are checked once, here, so the parse loop can rely on them (for
 * instance that a header line always fits in a request).
 */
int rv_resp_parser_init(rv_resp_parser *p, const rv_resp_opts *opts) {
  memset(p, 0, sizeof *p);
  if (opts)
    p->opts = *opts;
  else
    rv_resp_opts_default(&p->opts);
  const rv_resp_opts *o = &p->opts;
  if (o->max_args < 1 || o->max_args > RV_RESP_MAX_ARGS_LIMIT)
    return fail(p, "ERR invalid RESP parser options: max_args %zu must be 1..%d", o->max_args,
                RV_RESP_MAX_ARGS_LIMIT);
  if (o->max_bulk_bytes > RV_RESP_MAX_BULK_BYTES_LIMIT)
    return fail(p, "ERR invalid RESP parser options: max_bulk_bytes %zu must be <= %d",
                o->max_bulk_bytes, RV_RESP_MAX_BULK_BYTES_LIMIT);
  if (o->max_inline_bytes < RV_RESP_MIN_INLINE_BYTES || o->max_inline_bytes > SIZE_MAX / 4)
    return fail(p, "ERR invalid RESP parser options: max_inline_bytes %zu must be >= %d",
                o->max_inline_bytes, RV_RESP_MIN_INLINE_BYTES);
  if (o->max_request_bytes < o->max_inline_bytes + 2 || o->max_request_bytes > SIZE_MAX / 4)
    return fail(p,
                "ERR invalid RESP parser options: max_request_bytes %zu must be >= "
                "max_inline_bytes + 2",
                o->max_request_bytes);
  return 0;
}

/* Leaves p reusable: a connection can be recycled without a new parser. */
void rv_resp_parser_free(rv_resp_parser *p) {
  free(p->rv__offs);
  free(p->rv__argv);
  free(p->rv__scratch);
  p->rv__offs = NULL;
  p->rv__argv = NULL;
  p->rv__scratch = NULL;
  p->rv__argv_cap = p->rv__scratch_cap = 0;
  p->rv__state = RV__RESP_IDLE;
}

/* Start the next request from scratch: used after a command and by reset. */
static void begin_request(rv_resp_parser *p) {
  p->rv__state = RV__RESP_IDLE;
  p->rv__pos = p->rv__scan = 0;
  p->rv__argc_want = p->rv__argc = p->rv__bulk_len = 0;
}

/* For a connection that wants to go on after an error (tests, tools). */
void rv_resp_parser_reset(rv_resp_parser *p) {
  begin_request(p);
  p->rv__err[0] = '\0';
}

/* NULL while healthy, so the shell can test and fetch in one call. */
const char *rv_resp_parser_error(const rv_resp_parser *p) {
  return p->rv__state == RV__RESP_FAILED ? p->rv__err : NULL;
}

/*
 * Only the bulk-data state knows a real target; elsewhere one byte more than
 * was scanned is the honest lower bound.
 */
size_t rv_resp_parser_need(const rv_resp_parser *p) {
  switch (p->rv__state) {
  case RV__RESP_FAILED:
    return 0;
  case RV__RESP_MB_BULKDATA:
    return p->rv__pos + p->rv__bulk_len + 2;
  default:
    return p->rv__scan + 1;
  }
}

/*
 * Grow argv (and the offsets beside it) to hold at least n arguments.  Growth
 * is geometric and capped by max_args, so a request announcing many
 * arguments costs memory only as its arguments actually arrive.
 */
static int argv_reserve(rv_resp_parser *p, size_t n) {
  if (n <= p->rv__argv_cap) return 0;
  size_t cap = p->rv__argv_cap ? p->rv__argv_cap : RV__RESP_ARGV_INITIAL;
  while (cap < n) cap *= 2;
  if (cap > p->opts.max_args) cap = p->opts.max_args;
  if (cap < n) return -1;
  size_t *offs = realloc(p->rv__offs, cap * sizeof *offs);
  if (!offs) return -1;
  p->rv__offs = offs;
  rv_resp_arg *argv = realloc(p->rv__argv, cap * sizeof *argv);
  if (!argv) return -1;
  p->rv__argv = argv;
  p->rv__argv_cap = cap;
  return 0;
}

/*
 * Redis's string2ll rules, exactly: a strict number is one that prints back
 * the same, so "01", "+1" and "-0" are not lengths or counts.
 */
int rv_resp_parse_i64(const char *s, size_t len, int64_t *out) {
  if (len == 0) return -1;
  if (len == 1 && s[0] == '0') {
    *out = 0;
    return 0;
  }
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
    if (len == 1) return -1;
  }
  if (s[i] < '1' || s[i] > '9') return -1;
  uint64_t v = 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  if (neg) {
    if (v > (uint64_t)INT64_MAX + 1) return -1;
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  } else {
    if (v > (uint64_t)INT64_MAX) return -1;
    *out = (int64_t)v;
  }
  return 0;
}

/* Command names are case-insensitive in Redis; arguments are binary-safe. */
bool rv_resp_arg_is(const rv_resp_arg *a, const char *w) {
  size_t n = strlen(w);
  if (a->len != n) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a->ptr[i], y = (unsigned char)w[i];
    if (x >= 'A' && x <= 'Z') x = (unsigned char)(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = (unsigned char)(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

/* Outcome of a search for a line terminator. */
enum { LINE_MORE = 0, LINE_FOUND = 1, LINE_TOO_LONG = -1 };

/*
 * Find byte t in b[p->rv__scan .. min(n, cap + 1)): the terminator of a line
 * is allowed at indexes up to cap.  Remembers how far it looked so the next
 * call resumes there.  LINE_TOO_LONG as soon as the byte at cap has been
 * seen and is not the terminator, which depends only on the bytes.
 */
static int find_line_end(rv_resp_parser *p, const char *b, size_t n, char t, size_t cap,
                         size_t *at) {
  size_t end = n < cap + 1 ? n : cap + 1;
  if (p->rv__scan < end) {
    const char *hit = memchr(b + p->rv__scan, t, end - p->rv__scan);
    if (hit) {
      *at = (size_t)(hit - b);
      p->rv__scan = *at; /* a CR found before its LF arrived is found again at once */
      return LINE_FOUND;
    }
  }
  if (n > cap) return LINE_TOO_LONG;
  p->rv__scan = n;
  return LINE_MORE;
}

/* The smaller of the two caps on a header line's '\r' index, and which one
 * binds (for the error message). */
static size_t header_cap(const rv_resp_parser *p, size_t start, bool *request_binds) {
  size_t by_line = start + p->opts.max_inline_bytes;
  size_t by_request = p->opts.max_request_bytes - 2;
  *request_binds = by_request < by_line;
  return *request_binds ? by_request : by_line;
}

/*
 * Redis's isspace() set (C locale), used to skip blanks between inline
 * arguments; inside an unquoted argument only space, \t, \r and \n end it.
 */
static bool inline_blank(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* -1 for a non-hex byte, so "\xZZ" falls back to an escaped x, as in Redis. */
static int hex_val(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/*
 * Split an inline line the way Redis's sdssplitargs does, into the scratch
 * buffer.  Redis works on a C string, so a NUL byte ends the line there; we
 * get the same effect by cutting the line at its first NUL.  Arguments end up
 * in p->rv__argv (pointing into scratch), their number in p->rv__argc.
 */
static int split_inline(rv_resp_parser *p, const char *line, size_t len) {
  const char *nul = memchr(line, '\0', len);
  if (nul) len = (size_t)(nul - line);
  if (len > p->rv__scratch_cap) {
    size_t cap = len < RV__RESP_SCRATCH_INITIAL ? RV__RESP_SCRATCH_INITIAL : len;
    char *s = realloc(p->rv__scratch, cap);
    if (!s) return fail(p, "ERR out of memory reading an inline request");
    p->rv__scratch = s;
    p->rv__scratch_cap = cap;
  }
  char *out = p->rv__scratch;
  size_t o = 0, i = 0, argc = 0;
  const unsigned char *c = (const unsigned char *)line;

  for (;;) {
    while (i < len && inline_blank(c[i])) i++;
    if (i >= len) break;
    if (argc == p->opts.max_args)
      return fail(p,
                  "ERR Protocol error: too many arguments in inline request: the limit is %zu "
                  "(max_args)",
                  p->opts.max_args);
    if (argv_reserve(p, argc + 1) != 0)
      return fail(p, "ERR out of memory reading an inline request");
    size_t start = o;
    bool inq = false, insq = false, done = false;
    while (!done) {
      if (inq) {
        if (i >= len) goto unbalanced;
        if (c[i] == '\\' && i + 3 < len && c[i + 1] == 'x' && hex_val(c[i + 2]) >= 0 &&
            hex_val(c[i + 3]) >= 0) {
          out[o++] = (char)(hex_val(c[i + 2]) * 16 + hex_val(c[i + 3]));
          i += 3;
        } else if (c[i] == '\\' && i + 1 < len) {
          i++;
          switch (c[i]) {
          case 'n': out[o++] = '\n'; break;
          case 'r': out[o++] = '\r'; break;
          case 't': out[o++] = '\t'; break;
          case 'b': out[o++] = '\b'; break;
          case 'a': out[o++] = '\a'; break;
          default: out[o++] = (char)c[i]; break;
          }
        } else if (c[i] == '"') {
          /* A closing quote must be followed by a blank or the end. */
          if (i + 1 < len && !inline_blank(c[i + 1])) goto unbalanced;
          done = true;
        } else {
          out[o++] = (char)c[i];
        }
      } else if (insq) {
        if (i >= len) goto unbalanced;
        if (c[i] == '\\' && i + 1 < len && c[i + 1] == '\'') {
          i++;
          out[o++] = '\'';
        } else if (c[i] == '\'') {
          if (i + 1 < len && !inline_blank(c[i + 1])) goto unbalanced;
          done = true;
        } else {
          out[o++] = (char)c[i];
        }
      } else {
        if (i >= len) break;
        switch (c[i]) {
        case ' ':
        case '\n':
        case '\r':
        case '\t':
          done = true;
          break;
        case '"': inq = true; break;
        case '\'': insq = true; break;
        default: out[o++] = (char)c[i]; break;
        }
      }
      if (i < len) i++;
    }
    p->rv__argv[argc].ptr = out + start;
    p->rv__argv[argc].len = o - start;
    argc++;
  }
  p->rv__argc = argc;
  return 0;

unbalanced:
  return fail(p, "ERR Protocol error: unbalanced quotes in request");
}

/*
 * Parse a header line's number (after '*' or '$', up to the '\r' at index
 * cr) once the '\n' after it is known to be there.  Returns 0 or an error.
 */
static int header_number(rv_resp_parser *p, const char *b, size_t start, size_t cr,
                         int64_t *v, bool *ok) {
  char shown[8];
  if (b[cr + 1] != '\n')
    return fail(p, "ERR Protocol error: header line not terminated by CRLF, got '%s' after CR",
                show_byte((unsigned char)b[cr + 1], shown));
  *ok = rv_resp_parse_i64(b + start + 1, cr - start - 1, v) == 0;
  return 0;
}

/* Report a header line that reached its cap without a '\r'. */
static int header_too_long(rv_resp_parser *p, bool request_binds, const char *what) {
  if (request_binds)
    return fail(p, "ERR Protocol error: too big request: the limit is %zu bytes (max_request_bytes)",
                p->opts.max_request_bytes);
  return fail(p, "ERR Protocol error: too big %s count string", what);
}

/*
 * The multibulk path: "*N\r\n" then N times "$len\r\n<len bytes>\r\n".
 * Returns RV_RESP_CMD with p->rv__argv filled, RV_RESP_AGAIN, RV_RESP_ERROR,
 * or 2 for an empty request (N <= 0) to be skipped; *end is the request's
 * length when complete.
 */
static int parse_multibulk(rv_resp_parser *p, const char *b, size_t n, size_t *end) {
  bool request_binds, ok = false;
  size_t cr;
  int64_t v = 0;
  char shown[8];

  if (p->rv__state == RV__RESP_MB_COUNT) {
    size_t cap = header_cap(p, 0, &request_binds);
    int f = find_line_end(p, b, n, '\r', cap, &cr);
    if (f == LINE_TOO_LONG) return header_too_long(p, request_binds, "mbulk");
    if (f == LINE_MORE || cr + 1 >= n) return RV_RESP_AGAIN;
    if (header_number(p, b, 0, cr, &v, &ok) != 0) return RV_RESP_ERROR;
    if (!ok || v > INT_MAX) return fail(p, "ERR Protocol error: invalid multibulk length");
    if (v > 0 && (uint64_t)v > p->opts.max_args)
      return fail(p,
                  "ERR Protocol error: invalid multibulk length %lld: the limit is %zu "
                  "arguments (max_args)",
                  (long long)v, p->opts.max_args);
    p->rv__pos = cr + 2;
    if (v <= 0) {
      *end = p->rv__pos;
      return 2;
    }
    p->rv__argc_want = (size_t)v;
    p->rv__argc = 0;
    p->rv__state = RV__RESP_MB_BULKLEN;
    p->rv__scan = p->rv__pos;
  }

  for (;;) {
    size_t pos = p->rv__pos;
    if (p->rv__state == RV__RESP_MB_BULKLEN) {
      if (n <= pos) return RV_RESP_AGAIN;
      if (b[pos] != '$')
        return fail(p, "ERR Protocol error: expected '$', got '%s'",
                    show_byte((unsigned char)b[pos], shown));
      size_t cap = header_cap(p, pos, &request_binds);
      int f = find_line_end(p, b, n, '\r', cap, &cr);
      if (f == LINE_TOO_LONG) return header_too_long(p, request_binds, "bulk");
      if (f == LINE_MORE || cr + 1 >= n) return RV_RESP_AGAIN;
      if (header_number(p, b, pos, cr, &v, &ok) != 0) return RV_RESP_ERROR;
      if (!ok || v < 0) return fail(p, "ERR Protocol error: invalid bulk length");
      if ((uint64_t)v > p->opts.max_bulk_bytes)
        return fail(p,
                    "ERR Protocol error: invalid bulk length %lld: the limit is %zu bytes "
                    "(max_bulk_bytes)",
                    (long long)v, p->opts.max_bulk_bytes);
      size_t data = cr + 2; /* <= max_request_bytes, by the cap */
      if ((uint64_t)v + 2 > p->opts.max_request_bytes - data)
        return fail(p,
                    "ERR Protocol error: too big request: the limit is %zu bytes "
                    "(max_request_bytes)",
                    p->opts.max_request_bytes);
      p->rv__pos = data;
      p->rv__bulk_len = (size_t)v;
      p->rv__state = RV__RESP_MB_BULKDATA;
      pos = data;
    }

    /* RV__RESP_MB_BULKDATA */
    size_t blen = p->rv__bulk_len;
    if (n - pos < blen + 2) return RV_RESP_AGAIN;
    if (b[pos + blen] != '\r' || b[pos + blen + 1] != '\n')
      return fail(p, "ERR Protocol error: bulk data of %zu bytes not followed by CRLF", blen);
    if (argv_reserve(p, p->rv__argc + 1) != 0)
      return fail(p, "ERR out of memory reading a request's arguments");
    p->rv__offs[p->rv__argc] = pos;
    p->rv__argv[p->rv__argc].len = blen;
    p->rv__argc++;
    p->rv__pos = pos + blen + 2;
    if (p->rv__argc == p->rv__argc_want) {
      for (size_t i = 0; i < p->rv__argc; i++) p->rv__argv[i].ptr = b + p->rv__offs[i];
      *end = p->rv__pos;
      return RV_RESP_CMD;
    }
    p->rv__state = RV__RESP_MB_BULKLEN;
    p->rv__scan = p->rv__pos;
  }
}

/*
 * The inline path: one line up to '\n' (an optional '\r' before it is
 * dropped), split by split_inline.  Same return values as parse_multibulk.
 */
static int parse_inline(rv_resp_parser *p, const char *b, size_t n, size_t *end) {
  size_t lf;
  int f = find_line_end(p, b, n, '\n', p->opts.max_inline_bytes, &lf);
  if (f == LINE_TOO_LONG) return fail(p, "ERR Protocol error: too big inline request");
  if (f == LINE_MORE) return RV_RESP_AGAIN;
  size_t len = lf;
  if (len > 0 && b[len - 1] == '\r') len--;
  if (split_inline(p, b, len) != 0) return RV_RESP_ERROR;
  *end = lf + 1;
  return p->rv__argc == 0 ? 2 : RV_RESP_CMD;
}

/*
 * The driver: start a request, hand it to the multibulk or inline path, skip
 * empty requests (as Redis does) and report consumed bytes relative to the
 * buffer the caller passed, so the caller's compaction stays trivial.
 */
int rv_resp_parse(rv_resp_parser *p, const char *buf, size_t len, size_t *consumed,
                  rv_resp_cmd *cmd) {
  size_t base = 0;
  *consumed = 0;
  for (;;) {
    if (p->rv__state == RV__RESP_FAILED) return RV_RESP_ERROR;
    const char *b = buf + base;
    size_t n = len - base;
    if (p->rv__state == RV__RESP_IDLE) {
      if (n == 0) {
        *consumed = base;
        return RV_RESP_AGAIN;
      }
      if (b[0] == '*') {
        p->rv__state = RV__RESP_MB_COUNT;
        p->rv__pos = p->rv__scan = 1;
      } else {
        p->rv__state = RV__RESP_INLINE;
        p->rv__pos = p->rv__scan = 0;
      }
    }
    /* The contract: bytes already examined are handed over again.  If a
     * caller breaks it, fail cleanly instead of reading out of bounds. */
    if (n < p->rv__pos || n < p->rv__scan)
      return fail(p, "ERR internal error: %zu request bytes seen before, only %zu given now",
                  p->rv__pos > p->rv__scan ? p->rv__pos : p->rv__scan, n);
    bool is_inline = p->rv__state == RV__RESP_INLINE;
    size_t end = 0;
    int rc = is_inline ? parse_inline(p, b, n, &end) : parse_multibulk(p, b, n, &end);
    if (rc == RV_RESP_ERROR) return RV_RESP_ERROR;
    if (rc == RV_RESP_AGAIN) {
      *consumed = base;
      return RV_RESP_AGAIN;
    }
    size_t argc = p->rv__argc;
    begin_request(p);
    base += end;
    if (rc == RV_RESP_CMD) {
      *consumed = base;
      cmd->argc = argc;
      cmd->argv = p->rv__argv;
      cmd->is_inline = is_inline;
      return RV_RESP_CMD;
    }
    /* An empty request: skip it and look at the next one. */
  }
}

/* ---- encoder ---------------------------------------------------------------- */

/* A zero cap means the default: callers rarely have a better number. */
void rv_resp_out_init(rv_resp_out *o, size_t max_bytes) {
  memset(o, 0, sizeof *o);
  o->max_bytes = max_bytes ? max_bytes : RV_RESP_OUT_MAX_BYTES_DEFAULT;
}

/* Keeps the struct reusable after a connection closes. */
void rv_resp_out_free(rv_resp_out *o) {
  free(o->buf);
  o->buf = NULL;
  o->len = o->cap = 0;
}

/*
 * The shell drops what the socket accepted; what remains moves to the front
 * so appends stay contiguous.
 */
void rv_resp_out_consume(rv_resp_out *o, size_t n) {
  if (n >= o->len) {
    o->len = 0;
    return;
  }
  memmove(o->buf, o->buf + n, o->len - n);
  o->len -= n;
}

/* The undo for a reply that did not fit: see resp.h. */
void rv_resp_out_rewind(rv_resp_out *o, size_t mark) {
  if (mark < o->len) o->len = mark;
  o->overflow = false;
}

/*
 * Make room for n more bytes or fail without writing: every item is written
 * whole or not at all, so a full buffer never holds half a frame.
 */
static int out_reserve(rv_resp_out *o, size_t n) {
  if (n > o->max_bytes || o->len > o->max_bytes - n) {
    o->overflow = true;
    return RV_RESP_OUT_EFULL;
  }
  size_t need = o->len + n;
  if (need <= o->cap) return RV_RESP_OUT_OK;
  size_t cap = o->cap ? o->cap : RV_RESP_OUT_INITIAL_BYTES;
  while (cap < need) cap = cap > o->max_bytes / 2 ? o->max_bytes : cap * 2;
  char *b = realloc(o->buf, cap);
  if (!b) {
    o->overflow = true;
    return RV_RESP_OUT_ENOMEM;
  }
  o->buf = b;
  o->cap = cap;
  return RV_RESP_OUT_OK;
}

/* "<type><text with CR/LF as spaces>\r\n" for simple strings and errors. */
static int out_line(rv_resp_out *o, char type, const char *s, size_t n) {
  int rc = out_reserve(o, n + 3);
  if (rc) return rc;
  char *w = o->buf + o->len;
  *w++ = type;
  for (size_t i = 0; i < n; i++) w[i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : s[i];
  w += n;
  *w++ = '\r';
  *w++ = '\n';
  o->len = (size_t)(w - o->buf);
  return RV_RESP_OUT_OK;
}

/* "<type><decimal>\r\n": integers and the headers of bulks and arrays. */
static int out_header(rv_resp_out *o, char type, int64_t v, size_t extra) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%c%lld\r\n", type, (long long)v);
  int rc = out_reserve(o, (size_t)n + extra);
  if (rc) return rc;
  memcpy(o->buf + o->len, tmp, (size_t)n);
  o->len += (size_t)n;
  return RV_RESP_OUT_OK;
}

/*
 * The public appenders: each writes one whole RESP item or nothing, so a
 * reply is never left half-framed.
 */
int rv_resp_out_simple(rv_resp_out *o, const char *s) { return out_line(o, '+', s, strlen(s)); }

int rv_resp_out_error(rv_resp_out *o, const char *msg) {
  return out_line(o, '-', msg, strlen(msg));
}

int rv_resp_out_errorf(rv_resp_out *o, const char *fmt, ...) {
  char msg[RV_RESP_OUT_ERRORF_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return rv_resp_out_error(o, msg);
}

int rv_resp_out_int(rv_resp_out *o, int64_t v) { return out_header(o, ':', v, 0); }

/*
 * Bulk strings carry client data: the length prefix makes any byte safe, so
 * no sanitizing here, unlike simple strings and errors.
 */
int rv_resp_out_bulk(rv_resp_out *o, const void *p, size_t n) {
  if (n > (size_t)INT64_MAX || n > o->max_bytes) {
    o->overflow = true;
    return RV_RESP_OUT_EFULL;
  }
  /* Reserve header and payload together so the item is all or nothing. */
  int rc = out_header(o, '$', (int64_t)n, n + 2);
  if (rc) return rc;
  assert(o->cap - o->len >= n + 2);
  if (n) memcpy(o->buf + o->len, p, n);
  o->buf[o->len + n] = '\r';
  o->buf[o->len + n + 1] = '\n';
  o->len += n + 2;
  return RV_RESP_OUT_OK;
}

int rv_resp_out_bulk_cstr(rv_resp_out *o, const char *s) { return rv_resp_out_bulk(o, s, strlen(s)); }

int rv_resp_out_null(rv_resp_out *o) { return out_header(o, '$', -1, 0); }

int rv_resp_out_null_array(rv_resp_out *o) { return out_header(o, '*', -1, 0); }

int rv_resp_out_array(rv_resp_out *o, size_t n) {
  if (n > (size_t)INT64_MAX) {
    o->overflow = true;
    return RV_RESP_OUT_EFULL;
  }
  return out_header(o, '*', (int64_t)n, 0);
}
