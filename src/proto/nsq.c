/*
 * nsq.c: the NSQ TCP protocol V2 codec.
 *
 * The model
 * ---------
 * A client's byte stream is a four-byte magic followed by commands.  A command
 * is a text line, and for five of them (IDENTIFY, AUTH, PUB, MPUB, DPUB) a
 * 4-byte big-endian size and that many bytes of body.  The server decoder is
 * therefore a small state machine with four phases, MAGIC -> LINE -> (SIZE ->
 * BODY) -> LINE ..., plus FAILED, which it never leaves: every error it can
 * find is one on which nsqd closes the connection.
 *
 * The decoder takes bytes as they come, in chunks of any size, and hands back
 * at most one command per call together with how many bytes it used, so the
 * caller keeps ownership of whatever follows (a pipelined "SUB t c\nRDY 1\n"
 * yields SUB, then RDY).  It is chunking-independent by construction: every
 * decision depends only on bytes already seen, never on where a chunk ended,
 * so the same stream cut anywhere yields the same commands and the same error.
 * The fuzz target checks exactly that.
 *
 * Copy only when forced.  When a whole line or a whole body is inside the
 * caller's chunk (the common case: one read() holds a whole PUB), the command
 * points straight into the caller's bytes.  Only a line or body split across
 * chunks is gathered in the decoder's own buffer, and that buffer is bounded:
 * a line by RV_NSQ_LINE_MAX_BYTES (nsqd's reader size), a body by the size
 * already validated from its 4-byte header against max_msg_size_bytes or
 * max_body_size_bytes.  An oversized size is refused before one byte of the
 * body is stored.  A large buffer is dropped after use, so an idle connection
 * costs little.
 *
 * Faithful to nsqd v1.3.0, quirks included
 * ----------------------------------------
 * Validation follows protocol_v2.go check by check and in its order, because
 * the order decides which error a bad command gets: state first (which is why
 * the decoder is told the connection state), then parameter counts, names,
 * numbers, then the body size, the body, the JSON.  Texts are nsqd's, down
 * to its oddities: numbers are parsed like its ByteToBase10 (digits only, an
 * empty string is 0, overflow wraps modulo 2^64, so "RDY 18446744073709551615"
 * reports count -1), REQ and DPUB delays wrap through Go's int64 Duration
 * arithmetic the same way, names are quoted like Go's %q, and a bad MPUB topic
 * gets nsqd's doubled "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name ...".
 *
 * Where ravel differs on purpose
 * ------------------------------
 * - MPUB: nsqd range-checks the body size and then reads the messages from
 *   the stream, never checking that they fill exactly that size.  ravel reads
 *   exactly the body and requires the messages to fill it; a short body gets
 *   nsqd's own "failed to read" texts, a long one a ravel text.  This keeps
 *   memory bounded by max_body_size_bytes (nsqd's bound is count x msg size).
 * - A line over RV_NSQ_LINE_MAX_BYTES gets a fatal E_INVALID frame; nsqd just
 *   drops the connection.
 * - Echoed client bytes in error texts are cut at RV_NSQ_ERROR_ECHO_MAX_BYTES.
 * - IDENTIFY JSON goes through jansson, not Go: invalid UTF-8, lone surrogate
 *   escapes, "\u0000" inside a key and out-of-range numbers under unknown
 *   keys are rejected where Go would accept them; Go's %q is matched for ASCII and common non-printable
 *   code points, not for every unassigned one.
 *
 * The encoders are the easy half: each computes its exact size, reserves it
 * in a bounded rv_nsq_buf and writes, so an append either happens whole or
 * not at all.
 */
#include "proto/nsq.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A decoder or frame decoder keeps at most this much buffer between
 * commands; larger ones (a 5 MiB MPUB gathered in pieces) are freed. */
#define RV_NSQ__RETAIN_MAX_BYTES (64 * 1024)
/* ... and at most this many MPUB message slots. */
#define RV_NSQ__RETAIN_MAX_MSGS 4096
#define RV_NSQ__MSGS_INITIAL_SLOTS 16
#define RV_NSQ__NS_PER_MS INT64_C(1000000)
/* Smallest MPUB message on the wire: [int32 len] and one byte. */
#define RV_NSQ__MPUB_MIN_MSG_BYTES 5
#define RV_NSQ__INT32_SIZE_BYTES 4

/* ---- small helpers ------------------------------------------------------- */

/* Big-endian reads and writes: the wire is big-endian whatever the host. */
static uint32_t be32_get(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
         (uint32_t)p[3];
}

static uint64_t be64_get(const uint8_t *p) {
  return ((uint64_t)be32_get(p) << 32) | be32_get(p + 4);
}

static void be32_put(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void be64_put(uint8_t *p, uint64_t v) {
  be32_put(p, (uint32_t)(v >> 32));
  be32_put(p + 4, (uint32_t)v);
}

/*
 * Grow a heap array to hold at least need elements of elem_size bytes,
 * doubling so that gathering a line byte by byte stays linear.  The caller
 * has bounded need; this only refuses when malloc does.
 */
static int grow(void **ptr, size_t *cap, size_t need, size_t elem_size) {
  if (need <= *cap) return 0;
  size_t ncap = *cap ? *cap : 64;
  while (ncap < need) ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
  void *p = realloc(*ptr, ncap * elem_size);
  if (!p) return RV_ENOMEM;
  *ptr = p;
  *cap = ncap;
  return 0;
}

/* ---- options ------------------------------------------------------------- */

/* nsqd's NewOptions, so that a ravel queue with no flags behaves like an
 * nsqd with no flags. */
void rv_nsq_opts_init(rv_nsq_opts *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->max_msg_size_bytes = RV_NSQ_DEFAULT_MAX_MSG_SIZE_BYTES;
  opts->max_body_size_bytes = RV_NSQ_DEFAULT_MAX_BODY_SIZE_BYTES;
  opts->max_rdy_count = RV_NSQ_DEFAULT_MAX_RDY_COUNT;
  opts->max_req_timeout_ms = RV_NSQ_DEFAULT_MAX_REQ_TIMEOUT_MS;
  opts->msg_timeout_ms = RV_NSQ_DEFAULT_MSG_TIMEOUT_MS;
  opts->max_msg_timeout_ms = RV_NSQ_DEFAULT_MAX_MSG_TIMEOUT_MS;
  opts->heartbeat_interval_ms = RV_NSQ_DEFAULT_HEARTBEAT_INTERVAL_MS;
  opts->max_heartbeat_interval_ms = RV_NSQ_DEFAULT_MAX_HEARTBEAT_INTERVAL_MS;
  opts->output_buffer_size_bytes = RV_NSQ_DEFAULT_OUTPUT_BUFFER_SIZE_BYTES;
  opts->max_output_buffer_size_bytes = RV_NSQ_DEFAULT_MAX_OUTPUT_BUFFER_SIZE_BYTES;
  opts->output_buffer_timeout_ms = RV_NSQ_DEFAULT_OUTPUT_BUFFER_TIMEOUT_MS;
  opts->min_output_buffer_timeout_ms = RV_NSQ_DEFAULT_MIN_OUTPUT_BUFFER_TIMEOUT_MS;
  opts->max_output_buffer_timeout_ms = RV_NSQ_DEFAULT_MAX_OUTPUT_BUFFER_TIMEOUT_MS;
  opts->max_deflate_level = RV_NSQ_DEFAULT_MAX_DEFLATE_LEVEL;
  opts->auth_required = false;
  opts->allow_timeout_notify = true;
  opts->allow_hold_slots = true;
  opts->version = RV_NSQ_COMPAT_VERSION;
}

/* ---- error codes and texts ----------------------------------------------- */

static const char *const rv_nsq__code_names[RV_NSQ_CODE_COUNT] = {
    [RV_NSQ_OK] = "OK",
#define RV_NSQ__CODE_NAME(name, text) [name] = text,
    RV_NSQ_CODES(RV_NSQ__CODE_NAME)
#undef RV_NSQ__CODE_NAME
};

/* One table maps codes to the words on the wire, so a code can never be
 * spelled two ways. */
const char *rv_nsq_code_name(rv_nsq_code code) {
  if ((unsigned)code >= RV_NSQ_CODE_COUNT) return "OK";
  return rv_nsq__code_names[code];
}

/* A client learns what went wrong from the first word of an error frame;
 * the word must be followed by a space or end the text, so E_AUTH_FIRST is
 * not mistaken for anything shorter. */
rv_nsq_code rv_nsq_code_parse(const uint8_t *text, size_t len) {
  for (int c = RV_NSQ_OK + 1; c < RV_NSQ_CODE_COUNT; c++) {
    const char *name = rv_nsq__code_names[c];
    size_t n = strlen(name);
    if (len >= n && memcmp(text, name, n) == 0 && (len == n || text[n] == ' '))
      return (rv_nsq_code)c;
  }
  return RV_NSQ_OK;
}

/* nsqd's NewClientErr is used for exactly these three; everything else is
 * NewFatalClientErr (or, for E_BAD_PROTOCOL, a closed socket). */
bool rv_nsq_code_is_fatal(rv_nsq_code code) {
  return code != RV_NSQ_E_FIN_FAILED && code != RV_NSQ_E_REQ_FAILED &&
         code != RV_NSQ_E_TOUCH_FAILED && code != RV_NSQ_OK;
}

/*
 * Error text builder.  Appends are truncated at the text's capacity rather
 * than failing: an error report must always go out, and the capacity is
 * sized so that only pathological echoes could reach it.
 */
static void err_cat_bytes(rv_nsq_error *err, const void *p, size_t n) {
  size_t room = RV_NSQ_ERROR_TEXT_MAX_BYTES - 1 - err->text_len;
  if (n > room) n = room;
  memcpy(err->text + err->text_len, p, n);
  err->text_len += n;
  err->text[err->text_len] = '\0';
}

static void err_cat(rv_nsq_error *err, const char *s) { err_cat_bytes(err, s, strlen(s)); }

static void err_vcatf(rv_nsq_error *err, const char *fmt, va_list ap) {
  size_t room = RV_NSQ_ERROR_TEXT_MAX_BYTES - err->text_len;
  int n = vsnprintf(err->text + err->text_len, room, fmt, ap);
  if (n < 0) n = 0;
  err->text_len += (size_t)n < room ? (size_t)n : room - 1;
}

__attribute__((format(printf, 2, 3)))
static void err_catf(rv_nsq_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  err_vcatf(err, fmt, ap);
  va_end(ap);
}

/* Start an error: the code word, and a space if a description follows. */
static void err_begin(rv_nsq_error *err, rv_nsq_code code, bool described) {
  err->code = code;
  err->fatal = rv_nsq_code_is_fatal(code);
  err->text_len = 0;
  err->text[0] = '\0';
  err_cat(err, rv_nsq_code_name(code));
  if (described) err_cat(err, " ");
}

/* The handler builds its own errors (E_FIN_FAILED, E_AUTH_DISABLED, ...)
 * with the same code table and fatal split as the decoder's. */
void rv_nsq_error_set(rv_nsq_error *err, rv_nsq_code code, const char *fmt, ...) {
  err_begin(err, code, fmt != NULL && fmt[0] != '\0');
  if (fmt && fmt[0]) {
    va_list ap;
    va_start(ap, fmt);
    err_vcatf(err, fmt, ap);
    va_end(ap);
  }
}

/* Raw echo (Go's %s on client bytes), cut to RV_NSQ_ERROR_ECHO_MAX_BYTES. */
static void err_cat_echo(rv_nsq_error *err, const uint8_t *p, size_t n) {
  bool cut = n > RV_NSQ_ERROR_ECHO_MAX_BYTES;
  err_cat_bytes(err, p, cut ? RV_NSQ_ERROR_ECHO_MAX_BYTES : n);
  if (cut) err_cat(err, "...");
}

/*
 * Decode one UTF-8 sequence the way Go's utf8.DecodeRune does: overlong
 * forms, surrogates and values past U+10FFFF are invalid.  Returns the
 * length consumed and the rune, or 0 for an invalid byte.
 */
static size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *rune) {
  uint8_t b = p[0];
  size_t len;
  uint32_t r, min;
  if (b < 0x80) {
    *rune = b;
    return 1;
  } else if ((b & 0xE0) == 0xC0) {
    len = 2, r = b & 0x1F, min = 0x80;
  } else if ((b & 0xF0) == 0xE0) {
    len = 3, r = b & 0x0F, min = 0x800;
  } else if ((b & 0xF8) == 0xF0) {
    len = 4, r = b & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    r = (r << 6) | (p[i] & 0x3F);
  }
  if (r < min || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) return 0;
  *rune = r;
  return len;
}

/* Go's unicode.IsPrint for the code points a client is likely to send:
 * controls, non-ASCII spaces, format characters and private use are not
 * printable.  Unassigned code points count as printable (a documented
 * approximation). */
static bool rune_is_print(uint32_t r) {
  if (r < 0x20 || r == 0x7F) return false;
  if (r >= 0x80 && r <= 0xA0) return false;
  if (r == 0xAD || r == 0x3000 || r == 0xFEFF) return false;
  if (r >= 0x2000 && r <= 0x200F) return false;
  if (r >= 0x2028 && r <= 0x202F) return false;
  if (r >= 0x205F && r <= 0x206F) return false;
  if (r >= 0xE000 && r <= 0xF8FF) return false;
  if (r >= 0xFFF9 && r <= 0xFFFB) return false;
  if (r == 0xFFFE || r == 0xFFFF) return false;
  if (r >= 0xF0000) return false;
  return true;
}

/*
 * Go's %q (strconv.Quote), which nsqd uses for names in its errors: a client
 * that compares texts with nsqd's sees the same quoting.  The echo is cut
 * like err_cat_echo, with "..." after the closing quote.
 */
static void err_cat_quoted(rv_nsq_error *err, const uint8_t *p, size_t n) {
  bool cut = n > RV_NSQ_ERROR_ECHO_MAX_BYTES;
  if (cut) n = RV_NSQ_ERROR_ECHO_MAX_BYTES;
  err_cat(err, "\"");
  size_t i = 0;
  while (i < n) {
    uint8_t b = p[i];
    uint32_t r;
    size_t w = utf8_decode(p + i, n - i, &r);
    if (w == 0) {
      err_catf(err, "\\x%02x", b);
      i++;
      continue;
    }
    switch (r) {
      case '\a': err_cat(err, "\\a"); break;
      case '\b': err_cat(err, "\\b"); break;
      case '\f': err_cat(err, "\\f"); break;
      case '\n': err_cat(err, "\\n"); break;
      case '\r': err_cat(err, "\\r"); break;
      case '\t': err_cat(err, "\\t"); break;
      case '\v': err_cat(err, "\\v"); break;
      case '"': err_cat(err, "\\\""); break;
      case '\\': err_cat(err, "\\\\"); break;
      default:
        if (rune_is_print(r)) {
          err_cat_bytes(err, p + i, w);
        } else if (r < 0x80) {
          err_catf(err, "\\x%02x", (unsigned)r);
        } else if (r < 0x10000) {
          err_catf(err, "\\u%04x", (unsigned)r);
        } else {
          err_catf(err, "\\U%08x", (unsigned)r);
        }
    }
    i += w;
  }
  err_cat(err, "\"");
  if (cut) err_cat(err, "...");
}

/* ---- names and ids ------------------------------------------------------- */

static bool name_char_ok(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

/* ^[.a-zA-Z0-9_-]+(#ephemeral)?$ in 1..64 bytes, without a regex engine:
 * the suffix, if present, must leave at least one ordinary character. */
bool rv_nsq_valid_name(const char *name, size_t len) {
  if (len < 1 || len > RV_NSQ_NAME_MAX_BYTES) return false;
  const size_t sfx_len = sizeof(RV_NSQ_EPHEMERAL_SUFFIX) - 1;
  size_t base = len;
  if (len > sfx_len && memcmp(name + len - sfx_len, RV_NSQ_EPHEMERAL_SUFFIX, sfx_len) == 0)
    base = len - sfx_len;
  for (size_t i = 0; i < base; i++)
    if (!name_char_ok((uint8_t)name[i])) return false;
  return true;
}

static const char rv_nsq__hex[] = "0123456789abcdef";

/* nsqd's guid.Hex: 16 lowercase hex digits, most significant first. */
void rv_nsq_id_format(uint64_t guid, uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]) {
  for (int i = RV_NSQ_MSG_ID_SIZE_BYTES - 1; i >= 0; i--) {
    id[i] = (uint8_t)rv_nsq__hex[guid & 0xF];
    guid >>= 4;
  }
}

/* Strictly lowercase: nsqd keys in-flight messages by the raw 16 bytes, so
 * "ABC..." is not the message "abc...", and parsing must not pretend it is. */
bool rv_nsq_id_parse(const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES], uint64_t *guid) {
  uint64_t v = 0;
  for (int i = 0; i < RV_NSQ_MSG_ID_SIZE_BYTES; i++) {
    uint8_t c = id[i];
    uint64_t d;
    if (c >= '0' && c <= '9')
      d = (uint64_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = (uint64_t)(c - 'a' + 10);
    else
      return false;
    v = (v << 4) | d;
  }
  *guid = v;
  return true;
}

/* ---- output buffer ------------------------------------------------------- */

void rv_nsq_buf_init(rv_nsq_buf *buf, size_t limit_bytes) {
  memset(buf, 0, sizeof(*buf));
  buf->limit_bytes = limit_bytes ? limit_bytes : RV_NSQ_BUF_DEFAULT_LIMIT_BYTES;
}

void rv_nsq_buf_free(rv_nsq_buf *buf) {
  free(buf->data);
  buf->data = NULL;
  buf->len = buf->cap = 0;
}

/* A writer sends from the front; keeping the rest contiguous lets the next
 * write(2) take one pointer. */
void rv_nsq_buf_consume(rv_nsq_buf *buf, size_t n) {
  if (n >= buf->len) {
    buf->len = 0;
    return;
  }
  memmove(buf->data, buf->data + n, buf->len - n);
  buf->len -= n;
}

/* Make room for extra bytes, or refuse without touching the buffer: the
 * all-or-nothing property every encoder relies on. */
static int buf_reserve(rv_nsq_buf *buf, size_t extra) {
  if (extra > buf->limit_bytes || buf->len > buf->limit_bytes - extra) return RV_ELIMIT;
  size_t need = buf->len + extra;
  size_t cap = buf->cap;
  void *p = buf->data;
  int rc = grow(&p, &cap, need, 1);
  if (rc) return rc;
  if (cap > buf->limit_bytes && buf->limit_bytes >= need) {
    /* never hold more than the limit, even after doubling */
    void *q = realloc(p, buf->limit_bytes);
    if (q) {
      p = q;
      cap = buf->limit_bytes;
    }
  }
  buf->data = p;
  buf->cap = cap;
  return 0;
}

static void buf_put(rv_nsq_buf *buf, const void *p, size_t n) {
  if (n) memcpy(buf->data + buf->len, p, n);
  buf->len += n;
}

static void buf_put_str(rv_nsq_buf *buf, const char *s) { buf_put(buf, s, strlen(s)); }

static void buf_put_be32(rv_nsq_buf *buf, uint32_t v) {
  be32_put(buf->data + buf->len, v);
  buf->len += 4;
}

/* ---- server frames ------------------------------------------------------- */

/* [int32 size = len + 4][int32 type][data]: protocol.SendFramedResponse. */
int rv_nsq_enc_frame(rv_nsq_buf *out, int32_t frame_type, const void *data, size_t len) {
  if (len > (size_t)INT32_MAX - 4) return RV_EINVAL;
  int rc = buf_reserve(out, RV_NSQ_FRAME_HEADER_SIZE_BYTES + len);
  if (rc) return rc;
  buf_put_be32(out, (uint32_t)(len + 4));
  buf_put_be32(out, (uint32_t)frame_type);
  buf_put(out, data, len);
  return 0;
}

int rv_nsq_enc_response(rv_nsq_buf *out, const void *data, size_t len) {
  return rv_nsq_enc_frame(out, RV_NSQ_FRAME_RESPONSE, data, len);
}

int rv_nsq_enc_ok(rv_nsq_buf *out) { return rv_nsq_enc_response(out, "OK", 2); }

int rv_nsq_enc_heartbeat(rv_nsq_buf *out) {
  return rv_nsq_enc_response(out, "_heartbeat_", sizeof("_heartbeat_") - 1);
}

int rv_nsq_enc_close_wait(rv_nsq_buf *out) {
  return rv_nsq_enc_response(out, "CLOSE_WAIT", sizeof("CLOSE_WAIT") - 1);
}

int rv_nsq_enc_error(rv_nsq_buf *out, const rv_nsq_error *err) {
  return rv_nsq_enc_frame(out, RV_NSQ_FRAME_ERROR, err->text, err->text_len);
}

/* Message.WriteTo: the header and the body go out as one frame. */
int rv_nsq_enc_message(rv_nsq_buf *out, int64_t ts_ns, uint16_t attempts,
                       const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES], const void *body,
                       size_t len) {
  if (len > (size_t)INT32_MAX - 4 - RV_NSQ_MSG_HEADER_SIZE_BYTES) return RV_EINVAL;
  size_t data_len = RV_NSQ_MSG_HEADER_SIZE_BYTES + len;
  int rc = buf_reserve(out, RV_NSQ_FRAME_HEADER_SIZE_BYTES + data_len);
  if (rc) return rc;
  buf_put_be32(out, (uint32_t)(data_len + 4));
  buf_put_be32(out, RV_NSQ_FRAME_MESSAGE);
  be64_put(out->data + out->len, (uint64_t)ts_ns);
  out->len += 8;
  out->data[out->len++] = (uint8_t)(attempts >> 8);
  out->data[out->len++] = (uint8_t)attempts;
  buf_put(out, id, RV_NSQ_MSG_ID_SIZE_BYTES);
  buf_put(out, body, len);
  return 0;
}

/* The ravel timeout notice carries only the id: the consumer already has
 * the message and needs to know which handler to cancel. */
int rv_nsq_enc_timeout(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]) {
  return rv_nsq_enc_frame(out, RV_NSQ_FRAME_TIMEOUT, id, RV_NSQ_MSG_ID_SIZE_BYTES);
}

/* ---- commands: names and state rules ------------------------------------- */

static const char *const rv_nsq__cmd_names[] = {
    [RV_NSQ_CMD_NONE] = "NONE",   [RV_NSQ_CMD_IDENTIFY] = "IDENTIFY",
    [RV_NSQ_CMD_AUTH] = "AUTH",   [RV_NSQ_CMD_SUB] = "SUB",
    [RV_NSQ_CMD_PUB] = "PUB",     [RV_NSQ_CMD_MPUB] = "MPUB",
    [RV_NSQ_CMD_DPUB] = "DPUB",   [RV_NSQ_CMD_RDY] = "RDY",
    [RV_NSQ_CMD_FIN] = "FIN",     [RV_NSQ_CMD_REQ] = "REQ",
    [RV_NSQ_CMD_TOUCH] = "TOUCH", [RV_NSQ_CMD_CLS] = "CLS",
    [RV_NSQ_CMD_NOP] = "NOP",
};
#define RV_NSQ__CMD_COUNT (sizeof(rv_nsq__cmd_names) / sizeof(rv_nsq__cmd_names[0]))

const char *rv_nsq_cmd_name(rv_nsq_cmd_kind kind) {
  if ((unsigned)kind >= RV_NSQ__CMD_COUNT) return "NONE";
  return rv_nsq__cmd_names[kind];
}

/* Command words are matched exactly and case-sensitively, like nsqd's
 * bytes.Equal; "pub" is an invalid command. */
static rv_nsq_cmd_kind cmd_lookup(const uint8_t *p, size_t n) {
  for (unsigned k = RV_NSQ_CMD_IDENTIFY; k < RV_NSQ__CMD_COUNT; k++) {
    const char *name = rv_nsq__cmd_names[k];
    if (strlen(name) == n && memcmp(name, p, n) == 0) return (rv_nsq_cmd_kind)k;
  }
  return RV_NSQ_CMD_NONE;
}

/* The state checks at the top of each of nsqd's command functions, in one
 * place, so that the decoder and the handler cannot disagree. */
rv_nsq_verdict rv_nsq_check_state(rv_nsq_cmd_kind kind, rv_nsq_state state,
                                  bool heartbeats_disabled, rv_nsq_error *err) {
  bool ok = true;
  switch (kind) {
    case RV_NSQ_CMD_IDENTIFY:
    case RV_NSQ_CMD_AUTH:
      ok = state == RV_NSQ_STATE_INIT;
      break;
    case RV_NSQ_CMD_SUB:
      if (state != RV_NSQ_STATE_INIT) {
        ok = false;
      } else if (heartbeats_disabled) {
        rv_nsq_error_set(err, RV_NSQ_E_INVALID, "cannot SUB with heartbeats disabled");
        return RV_NSQ_REJECT;
      }
      break;
    case RV_NSQ_CMD_RDY:
      if (state == RV_NSQ_STATE_CLOSING) return RV_NSQ_IGNORE;
      ok = state == RV_NSQ_STATE_SUBSCRIBED;
      break;
    case RV_NSQ_CMD_FIN:
    case RV_NSQ_CMD_REQ:
    case RV_NSQ_CMD_TOUCH:
      ok = state == RV_NSQ_STATE_SUBSCRIBED || state == RV_NSQ_STATE_CLOSING;
      break;
    case RV_NSQ_CMD_CLS:
      ok = state == RV_NSQ_STATE_SUBSCRIBED;
      break;
    default: /* PUB, MPUB, DPUB and NOP work in any state */
      break;
  }
  if (ok) return RV_NSQ_ALLOW;
  rv_nsq_error_set(err, RV_NSQ_E_INVALID, "cannot %s in current state", rv_nsq_cmd_name(kind));
  return RV_NSQ_REJECT;
}

/* ---- the server decoder -------------------------------------------------- */

void rv_nsq_decoder_init(rv_nsq_decoder *dec, const rv_nsq_opts *opts) {
  memset(dec, 0, sizeof(*dec));
  if (opts)
    dec->opts = *opts;
  else
    rv_nsq_opts_init(&dec->opts);
  dec->state = RV_NSQ_STATE_INIT;
  dec->phase = RV_NSQ__PHASE_MAGIC;
  dec->mpub_count = -1;
}

void rv_nsq_decoder_free(rv_nsq_decoder *dec) {
  free(dec->buf);
  free(dec->msgs);
  dec->buf = NULL;
  dec->msgs = NULL;
  dec->buf_len = dec->buf_cap = dec->msgs_cap = 0;
}

void rv_nsq_decoder_set_state(rv_nsq_decoder *dec, rv_nsq_state state,
                              bool heartbeats_disabled) {
  dec->state = state;
  dec->heartbeats_disabled = heartbeats_disabled;
}

/*
 * nsqd's ByteToBase10, wraparound and all: digits only, "" is 0, and the
 * value is taken modulo 2^64.  Matching it is what makes "RDY " mean RDY 0
 * and an absurd count produce nsqd's exact error text.
 */
static bool parse_base10(const uint8_t *p, size_t n, uint64_t *out) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return false;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  *out = v;
  return true;
}

/* Go's time.Duration(ms) * time.Millisecond: int64 arithmetic that wraps. */
static int64_t go_ms_to_ns(uint64_t ms) {
  return (int64_t)(ms * (uint64_t)RV_NSQ__NS_PER_MS);
}

#define RV_NSQ__MAX_PARAMS_KEPT 4

typedef struct rv_nsq__params {
  rv_nsq_slice p[RV_NSQ__MAX_PARAMS_KEPT];
  size_t count; /* all of them, like len(bytes.Split(line, " ")) */
} rv_nsq__params;

/* bytes.Split(line, " "): every single space separates, so "a  b" has an
 * empty middle parameter and "" is one empty parameter. */
static void split_params(const uint8_t *line, size_t n, rv_nsq__params *out) {
  memset(out, 0, sizeof(*out));
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || line[i] == ' ') {
      if (out->count < RV_NSQ__MAX_PARAMS_KEPT)
        out->p[out->count] = (rv_nsq_slice){line + start, i - start};
      out->count++;
      start = i + 1;
    }
  }
}

/* Copy a name that rv_nsq_valid_name accepted into a command field. */
static void copy_name(char dst[RV_NSQ_NAME_MAX_BYTES + 1], rv_nsq_slice s) {
  memcpy(dst, s.ptr, s.len);
  dst[s.len] = '\0';
}

static int check_topic(const rv_nsq__params *pp, const char *what, rv_nsq_cmd *cmd,
                       rv_nsq_error *err) {
  if (!rv_nsq_valid_name((const char *)pp->p[1].ptr, pp->p[1].len)) {
    err_begin(err, RV_NSQ_E_BAD_TOPIC, true);
    err_catf(err, "%s topic name ", what);
    err_cat_quoted(err, pp->p[1].ptr, pp->p[1].len);
    err_cat(err, " is not valid");
    return RV_EPROTO;
  }
  copy_name(cmd->topic, pp->p[1]);
  return 0;
}

/* getMessageID: only the length is checked; the bytes are the id. */
static int check_id(rv_nsq_slice s, rv_nsq_cmd *cmd, rv_nsq_error *err) {
  if (s.len != RV_NSQ_MSG_ID_SIZE_BYTES) {
    rv_nsq_error_set(err, RV_NSQ_E_INVALID, "invalid message ID");
    return RV_EPROTO;
  }
  memcpy(cmd->id, s.ptr, RV_NSQ_MSG_ID_SIZE_BYTES);
  return 0;
}

/*
 * ravel's attempt argument of FIN / REQ / TOUCH: 1..65535 in decimal, no
 * sign, no leading zero.  nsqd ignores parameters past the ones it reads, so
 * an empty one (a trailing space, which nsqd accepts) counts as absent, and
 * so does everything after the attempt.
 */
static int check_attempt(rv_nsq_slice s, rv_nsq_cmd_kind kind, rv_nsq_cmd *cmd,
                         rv_nsq_error *err) {
  if (s.len == 0) return 0;
  uint32_t v = 0;
  bool ok = s.len <= 5 && s.ptr[0] != '0';
  for (size_t i = 0; ok && i < s.len; i++) {
    if (s.ptr[i] < '0' || s.ptr[i] > '9') ok = false;
    else v = v * 10 + (uint32_t)(s.ptr[i] - '0');
  }
  if (!ok || v < 1 || v > UINT16_MAX) {
    err_begin(err, RV_NSQ_E_INVALID, true);
    err_catf(err, "%s invalid attempt ", rv_nsq_cmd_name(kind));
    err_cat_quoted(err, s.ptr, s.len);
    err_cat(err, " (must be 1-65535)");
    return RV_EPROTO;
  }
  cmd->attempt = (uint16_t)v;
  return 0;
}

static int insufficient(rv_nsq_error *err, const char *cmd, const char *noun) {
  rv_nsq_error_set(err, RV_NSQ_E_INVALID, "%s insufficient number of %s", cmd, noun);
  return RV_EPROTO;
}

static int could_not_parse(rv_nsq_error *err, const char *what, rv_nsq_slice s) {
  err_begin(err, RV_NSQ_E_INVALID, true);
  err_cat(err, what);
  err_cat_echo(err, s.ptr, s.len);
  return RV_EPROTO;
}

enum { LINE_EMIT = 1, LINE_NEEDS_BODY = 2 };

/*
 * One command line, checked in the order of nsqd's command functions.
 * Returns LINE_EMIT (the command is complete), LINE_NEEDS_BODY, or
 * RV_EPROTO.  Nothing in dec->pending may point into the line afterwards:
 * the line's bytes are not kept.
 */
static int parse_line(rv_nsq_decoder *dec, const uint8_t *line, size_t n, rv_nsq_error *err) {
  rv_nsq_cmd *cmd = &dec->pending;
  memset(cmd, 0, sizeof(*cmd));
  if (n > 0 && line[n - 1] == '\r') n--;
  rv_nsq__params pp;
  split_params(line, n, &pp);
  const rv_nsq_slice *p = pp.p;

  rv_nsq_cmd_kind kind = cmd_lookup(p[0].ptr, p[0].len);
  if (kind == RV_NSQ_CMD_NONE) {
    err_begin(err, RV_NSQ_E_INVALID, true);
    err_cat(err, "invalid command ");
    err_cat_echo(err, p[0].ptr, p[0].len);
    return RV_EPROTO;
  }
  cmd->kind = kind;
  switch (rv_nsq_check_state(kind, dec->state, dec->heartbeats_disabled, err)) {
    case RV_NSQ_REJECT: return RV_EPROTO;
    case RV_NSQ_IGNORE: cmd->ignored = true; return LINE_EMIT;
    case RV_NSQ_ALLOW: break;
  }

  uint64_t num;
  switch (kind) {
    case RV_NSQ_CMD_IDENTIFY:
      return LINE_NEEDS_BODY;
    case RV_NSQ_CMD_AUTH:
      if (pp.count != 1) {
        rv_nsq_error_set(err, RV_NSQ_E_INVALID, "AUTH invalid number of parameters");
        return RV_EPROTO;
      }
      return LINE_NEEDS_BODY;
    case RV_NSQ_CMD_SUB:
      if (pp.count < 3) return insufficient(err, "SUB", "parameters");
      if (check_topic(&pp, "SUB", cmd, err)) return RV_EPROTO;
      if (!rv_nsq_valid_name((const char *)p[2].ptr, p[2].len)) {
        err_begin(err, RV_NSQ_E_BAD_CHANNEL, true);
        err_cat(err, "SUB channel name ");
        err_cat_quoted(err, p[2].ptr, p[2].len);
        err_cat(err, " is not valid");
        return RV_EPROTO;
      }
      copy_name(cmd->channel, p[2]);
      return LINE_EMIT;
    case RV_NSQ_CMD_RDY:
      cmd->count = 1;
      if (pp.count > 1) {
        if (!parse_base10(p[1].ptr, p[1].len, &num))
          return could_not_parse(err, "RDY could not parse count ", p[1]);
        cmd->count = (int64_t)num;
      }
      if (cmd->count < 0 || cmd->count > dec->opts.max_rdy_count) {
        rv_nsq_error_set(err, RV_NSQ_E_INVALID, "RDY count %lld out of range 0-%lld",
                         (long long)cmd->count, (long long)dec->opts.max_rdy_count);
        return RV_EPROTO;
      }
      return LINE_EMIT;
    case RV_NSQ_CMD_FIN:
    case RV_NSQ_CMD_TOUCH:
      if (pp.count < 2) return insufficient(err, rv_nsq_cmd_name(kind), "params");
      if (check_id(p[1], cmd, err)) return RV_EPROTO;
      if (pp.count > 2 && check_attempt(p[2], kind, cmd, err)) return RV_EPROTO;
      return LINE_EMIT;
    case RV_NSQ_CMD_REQ: {
      if (pp.count < 3) return insufficient(err, "REQ", "params");
      if (check_id(p[1], cmd, err)) return RV_EPROTO;
      if (!parse_base10(p[2].ptr, p[2].len, &num))
        return could_not_parse(err, "REQ could not parse timeout ", p[2]);
      /* PR #868: out-of-range delays are clamped, no longer fatal */
      int64_t ns = go_ms_to_ns(num);
      int64_t max_ns = dec->opts.max_req_timeout_ms * RV_NSQ__NS_PER_MS;
      int64_t clamped = ns < 0 ? 0 : ns > max_ns ? max_ns : ns;
      cmd->delay_clamped = clamped != ns;
      cmd->delay_ms = clamped / RV_NSQ__NS_PER_MS;
      if (pp.count > 3 && check_attempt(p[3], kind, cmd, err)) return RV_EPROTO;
      return LINE_EMIT;
    }
    case RV_NSQ_CMD_CLS:
    case RV_NSQ_CMD_NOP:
      return LINE_EMIT;
    case RV_NSQ_CMD_PUB:
      if (pp.count < 2) return insufficient(err, "PUB", "parameters");
      if (check_topic(&pp, "PUB", cmd, err)) return RV_EPROTO;
      return LINE_NEEDS_BODY;
    case RV_NSQ_CMD_MPUB:
      if (pp.count < 2) return insufficient(err, "MPUB", "parameters");
      /* nsqd's description repeats the code: "E_BAD_TOPIC E_BAD_TOPIC MPUB" */
      if (check_topic(&pp, "E_BAD_TOPIC MPUB", cmd, err)) return RV_EPROTO;
      return LINE_NEEDS_BODY;
    case RV_NSQ_CMD_DPUB: {
      if (pp.count < 3) return insufficient(err, "DPUB", "parameters");
      if (check_topic(&pp, "DPUB", cmd, err)) return RV_EPROTO;
      if (!parse_base10(p[2].ptr, p[2].len, &num))
        return could_not_parse(err, "DPUB could not parse timeout ", p[2]);
      int64_t ns = go_ms_to_ns(num);
      if (ns < 0 || ns > dec->opts.max_req_timeout_ms * RV_NSQ__NS_PER_MS) {
        rv_nsq_error_set(err, RV_NSQ_E_INVALID, "DPUB timeout %llu out of range 0-%lld",
                         (unsigned long long)num, (long long)dec->opts.max_req_timeout_ms);
        return RV_EPROTO;
      }
      cmd->delay_ms = ns / RV_NSQ__NS_PER_MS;
      return LINE_NEEDS_BODY;
    }
    case RV_NSQ_CMD_NONE:
      break;
  }
  return RV_EPROTO; /* unreachable: every kind returned above */
}

/*
 * The 4-byte body size, checked the moment it is complete and before any of
 * the body is stored.  Each command's checks and their order are nsqd's
 * (IDENTIFY and AUTH check "too big" first, the others "<= 0" first).
 */
static int check_body_size(const rv_nsq_decoder *dec, int32_t size, rv_nsq_error *err) {
  const rv_nsq_opts *o = &dec->opts;
  const char *name = rv_nsq_cmd_name(dec->pending.kind);
  switch (dec->pending.kind) {
    case RV_NSQ_CMD_IDENTIFY:
    case RV_NSQ_CMD_AUTH:
      if (size > o->max_body_size_bytes) {
        rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "%s body too big %d > %lld", name, size,
                         (long long)o->max_body_size_bytes);
        return RV_EPROTO;
      }
      if (size <= 0) {
        rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "%s invalid body size %d", name, size);
        return RV_EPROTO;
      }
      return 0;
    case RV_NSQ_CMD_PUB:
    case RV_NSQ_CMD_DPUB:
      if (size <= 0) {
        rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "%s invalid message body size %d", name,
                         size);
        return RV_EPROTO;
      }
      if (size > o->max_msg_size_bytes) {
        rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "%s message too big %d > %lld", name, size,
                         (long long)o->max_msg_size_bytes);
        return RV_EPROTO;
      }
      return 0;
    case RV_NSQ_CMD_MPUB:
      if (size <= 0) {
        rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "MPUB invalid body size %d", size);
        return RV_EPROTO;
      }
      if (size > o->max_body_size_bytes) {
        rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "MPUB body too big %d > %lld", size,
                         (long long)o->max_body_size_bytes);
        return RV_EPROTO;
      }
      return 0;
    default:
      break;
  }
  rv_nsq_error_set(err, RV_NSQ_E_INVALID, "internal: %s has no body", name);
  return RV_EPROTO;
}

/*
 * Validate an MPUB body as far as avail bytes of it allow, resumably, so a
 * bad batch fails as early in the stream as nsqd would fail it: the count
 * when its 4 bytes are in, each message size when its header is in.  Checks
 * that need only the body size (does the next header fit?) run before the
 * bytes arrive.  Slices point into body, which must not move between calls
 * (the decoder reserves the whole body before gathering it).
 */
static int mpub_scan(rv_nsq_decoder *dec, const uint8_t *body, size_t avail,
                     rv_nsq_error *err) {
  const rv_nsq_opts *o = &dec->opts;
  size_t body_len = (size_t)dec->body_len;
  if (dec->mpub_count < 0) {
    if (body_len < RV_NSQ__INT32_SIZE_BYTES) {
      rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "MPUB failed to read message count");
      return RV_EPROTO;
    }
    if (avail < RV_NSQ__INT32_SIZE_BYTES) return 0;
    int32_t count = (int32_t)be32_get(body);
    int64_t max_count = (o->max_body_size_bytes - 4) / RV_NSQ__MPUB_MIN_MSG_BYTES;
    if (count <= 0 || count > max_count) {
      rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "MPUB invalid message count %d", count);
      return RV_EPROTO;
    }
    dec->mpub_count = count;
    dec->mpub_pos = RV_NSQ__INT32_SIZE_BYTES;
    dec->mpub_index = 0;
  }
  while ((int64_t)dec->mpub_index < dec->mpub_count) {
    size_t pos = dec->mpub_pos;
    int idx = (int)dec->mpub_index;
    if (body_len - pos < RV_NSQ__INT32_SIZE_BYTES) {
      rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "MPUB failed to read message(%d) body size",
                       idx);
      return RV_EPROTO;
    }
    if (avail < pos + RV_NSQ__INT32_SIZE_BYTES) return 0;
    int32_t size = (int32_t)be32_get(body + pos);
    if (size <= 0) {
      rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "MPUB invalid message(%d) body size %d", idx,
                       size);
      return RV_EPROTO;
    }
    if (size > o->max_msg_size_bytes) {
      rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "MPUB message too big %d > %lld", size,
                       (long long)o->max_msg_size_bytes);
      return RV_EPROTO;
    }
    pos += RV_NSQ__INT32_SIZE_BYTES;
    if ((size_t)size > body_len - pos) {
      rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "MPUB failed to read message body");
      return RV_EPROTO;
    }
    void *msgs = dec->msgs;
    int rc = grow(&msgs, &dec->msgs_cap, dec->mpub_index + 1, sizeof(rv_nsq_slice));
    if (rc) return rc;
    dec->msgs = msgs;
    dec->msgs[dec->mpub_index] = (rv_nsq_slice){body + pos, (size_t)size};
    dec->mpub_index++;
    dec->mpub_pos = pos + (size_t)size;
  }
  if (dec->mpub_pos != body_len) {
    rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY,
                     "MPUB invalid body size %lld: %lld bytes left after its %lld messages",
                     (long long)body_len, (long long)(body_len - dec->mpub_pos),
                     (long long)dec->mpub_count);
    return RV_EPROTO;
  }
  return 0;
}

/* The body is complete: finish the command (IDENTIFY's JSON is parsed here,
 * with the decoder's options, so the command arrives validated). */
static int finish_body(rv_nsq_decoder *dec, const uint8_t *body, rv_nsq_error *err) {
  rv_nsq_cmd *cmd = &dec->pending;
  cmd->body = (rv_nsq_slice){body, (size_t)dec->body_len};
  if (cmd->kind == RV_NSQ_CMD_IDENTIFY)
    return rv_nsq_identify_parse(body, (size_t)dec->body_len, &dec->opts, &cmd->identify, err);
  if (cmd->kind == RV_NSQ_CMD_MPUB) {
    cmd->msg_count = dec->mpub_index;
    cmd->msgs = dec->msgs;
  }
  return 0;
}

/* Forget the previous command's buffers, keeping small ones for reuse.  Done
 * at the start of the next call, because the command handed out may point
 * into them until then. */
static void decoder_reset(rv_nsq_decoder *dec) {
  dec->emitted = false;
  dec->buf_len = 0;
  if (dec->buf_cap > RV_NSQ__RETAIN_MAX_BYTES) {
    free(dec->buf);
    dec->buf = NULL;
    dec->buf_cap = 0;
  }
  if (dec->msgs_cap > RV_NSQ__RETAIN_MAX_MSGS) {
    free(dec->msgs);
    dec->msgs = NULL;
    dec->msgs_cap = 0;
  }
}

static int decoder_fail(rv_nsq_decoder *dec, rv_nsq_error *err) {
  err->fatal = true; /* every decoder error closes the connection */
  dec->failure = *err;
  dec->phase = RV_NSQ__PHASE_FAILED;
  return RV_EPROTO;
}

/* The line phase: find the '\n', in place when the whole line is in this
 * chunk, otherwise gathered (bounded by RV_NSQ_LINE_MAX_BYTES). */
static int decode_line(rv_nsq_decoder *dec, const uint8_t *data, size_t len, size_t *off,
                       rv_nsq_error *err) {
  const uint8_t *start = data + *off;
  size_t avail = len - *off;
  const uint8_t *nl = memchr(start, '\n', avail);
  const uint8_t *line;
  size_t line_len;
  size_t chunk = nl ? (size_t)(nl - start) + 1 : avail;
  if (dec->buf_len + chunk > RV_NSQ_LINE_MAX_BYTES ||
      (!nl && dec->buf_len + chunk == RV_NSQ_LINE_MAX_BYTES)) {
    rv_nsq_error_set(err, RV_NSQ_E_INVALID,
                     "command line too long: no newline within %d bytes",
                     RV_NSQ_LINE_MAX_BYTES);
    return RV_EPROTO;
  }
  if (dec->buf_len == 0 && nl) {
    line = start;
    line_len = chunk - 1;
  } else {
    void *b = dec->buf;
    int rc = grow(&b, &dec->buf_cap, dec->buf_len + chunk, 1);
    if (rc) return rc;
    dec->buf = b;
    memcpy(dec->buf + dec->buf_len, start, chunk);
    dec->buf_len += chunk;
    if (!nl) {
      *off = len;
      return 0;
    }
    line = dec->buf;
    line_len = dec->buf_len - 1;
  }
  *off += chunk;
  int rc = parse_line(dec, line, line_len, err);
  dec->buf_len = 0;
  return rc;
}

/* The body phase: in place when all of it is in this chunk, otherwise
 * gathered into a buffer reserved at its validated size.  Returns 1 when
 * the command is complete, 0 for more input, or an error. */
static int decode_body(rv_nsq_decoder *dec, const uint8_t *data, size_t len, size_t *off,
                       rv_nsq_error *err) {
  size_t body_len = (size_t)dec->body_len;
  size_t avail = len - *off;
  bool mpub = dec->pending.kind == RV_NSQ_CMD_MPUB;
  const uint8_t *body;
  int rc;
  if (avail == 0) return 0; /* allocate nothing before a body byte arrives */
  if (dec->buf_len == 0 && avail >= body_len) {
    body = data + *off;
    *off += body_len;
    if (mpub && (rc = mpub_scan(dec, body, body_len, err))) return rc;
  } else {
    if (dec->buf_cap < body_len) {
      void *b = realloc(dec->buf, body_len);
      if (!b) return RV_ENOMEM;
      dec->buf = b;
      dec->buf_cap = body_len;
    }
    size_t take = body_len - dec->buf_len < avail ? body_len - dec->buf_len : avail;
    memcpy(dec->buf + dec->buf_len, data + *off, take);
    dec->buf_len += take;
    *off += take;
    if (mpub && (rc = mpub_scan(dec, dec->buf, dec->buf_len, err))) return rc;
    if (dec->buf_len < body_len) return 0;
    body = dec->buf;
  }
  rc = finish_body(dec, body, err);
  return rc ? rc : 1;
}

/* Gather the 4 bytes of a magic or a body size across chunks. */
static bool gather_hdr(rv_nsq_decoder *dec, const uint8_t *data, size_t len, size_t *off) {
  size_t want = sizeof(dec->hdr) - dec->hdr_len;
  size_t take = len - *off < want ? len - *off : want;
  memcpy(dec->hdr + dec->hdr_len, data + *off, take);
  dec->hdr_len += take;
  *off += take;
  return dec->hdr_len == sizeof(dec->hdr);
}

/* The phase loop; see the top of the file for the model. */
int rv_nsq_decode(rv_nsq_decoder *dec, const uint8_t *data, size_t len, size_t *consumed,
                  rv_nsq_cmd *cmd, rv_nsq_error *err) {
  *consumed = 0;
  if (dec->phase == RV_NSQ__PHASE_FAILED) {
    *err = dec->failure;
    return RV_EPROTO;
  }
  if (dec->emitted) decoder_reset(dec);
  size_t off = 0;
  int rc = 0;
  for (;;) {
    switch (dec->phase) {
      case RV_NSQ__PHASE_MAGIC:
        if (!gather_hdr(dec, data, len, &off)) goto need_more;
        if (memcmp(dec->hdr, RV_NSQ_MAGIC_V2, RV_NSQ_MAGIC_SIZE_BYTES) != 0) {
          /* tcp.go sends the bare code, no description */
          err_begin(err, RV_NSQ_E_BAD_PROTOCOL, false);
          goto fail;
        }
        dec->hdr_len = 0;
        dec->phase = RV_NSQ__PHASE_LINE;
        break;
      case RV_NSQ__PHASE_LINE:
        if (off == len) goto need_more;
        rc = decode_line(dec, data, len, &off, err);
        if (rc == RV_EPROTO) goto fail;
        if (rc < 0) goto out;
        if (rc == 0) goto need_more;
        if (rc == LINE_EMIT) goto emit;
        dec->hdr_len = 0;
        dec->phase = RV_NSQ__PHASE_SIZE;
        break;
      case RV_NSQ__PHASE_SIZE:
        if (!gather_hdr(dec, data, len, &off)) goto need_more;
        dec->hdr_len = 0;
        {
          int32_t size = (int32_t)be32_get(dec->hdr);
          if (check_body_size(dec, size, err)) goto fail;
          dec->body_len = size;
        }
        dec->buf_len = 0;
        dec->mpub_count = -1;
        dec->mpub_pos = 0;
        dec->mpub_index = 0;
        dec->phase = RV_NSQ__PHASE_BODY;
        /* an MPUB body too short for its count fails before any byte of it */
        if (dec->pending.kind == RV_NSQ_CMD_MPUB && mpub_scan(dec, NULL, 0, err)) goto fail;
        break;
      case RV_NSQ__PHASE_BODY:
        rc = decode_body(dec, data, len, &off, err);
        if (rc == RV_EPROTO) goto fail;
        if (rc < 0) goto out;
        if (rc == 0) goto need_more;
        goto emit;
      case RV_NSQ__PHASE_FAILED:
        *err = dec->failure;
        rc = RV_EPROTO;
        goto out;
    }
  }
need_more:
  rc = 0;
  goto out;
emit:
  *cmd = dec->pending;
  dec->emitted = true;
  dec->phase = RV_NSQ__PHASE_LINE;
  rc = 1;
  goto out;
fail:
  rc = decoder_fail(dec, err);
out:
  *consumed = off;
  return rc;
}

/* What nsqd's io.ReadFull failure says for each command when the peer
 * closes inside a body or its size. */
int rv_nsq_decode_eof(const rv_nsq_decoder *dec, rv_nsq_error *err) {
  rv_nsq_cmd_kind kind = dec->pending.kind;
  const char *name = rv_nsq_cmd_name(kind);
  bool in_size = dec->phase == RV_NSQ__PHASE_SIZE;
  if (dec->emitted || (!in_size && dec->phase != RV_NSQ__PHASE_BODY)) return 0;
  switch (kind) {
    case RV_NSQ_CMD_IDENTIFY:
    case RV_NSQ_CMD_AUTH:
      rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "%s failed to read body%s", name,
                       in_size ? " size" : "");
      break;
    case RV_NSQ_CMD_PUB:
    case RV_NSQ_CMD_DPUB:
      rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "%s failed to read message body%s", name,
                       in_size ? " size" : "");
      break;
    case RV_NSQ_CMD_MPUB:
      if (in_size)
        rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "MPUB failed to read body size");
      else if (dec->mpub_count < 0)
        rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "MPUB failed to read message count");
      else if (dec->buf_len < dec->mpub_pos)
        rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "MPUB failed to read message body");
      else
        rv_nsq_error_set(err, RV_NSQ_E_BAD_MESSAGE, "MPUB failed to read message(%d) body size",
                         (int)dec->mpub_index);
      break;
    default:
      return 0;
  }
  err->fatal = true;
  return RV_EPROTO;
}

/* ---- IDENTIFY ------------------------------------------------------------ */

void rv_nsq_identify_init(rv_nsq_identify *ident) { memset(ident, 0, sizeof(*ident)); }

typedef enum { IDF_STR, IDF_BOOL, IDF_INT, IDF_INT32 } idf_type;

typedef struct {
  const char *key;
  idf_type type;
  size_t offset;
} idf_field;

#define IDF(key, type, member) {key, type, offsetof(rv_nsq_identify, member)}

/* identifyDataV2's JSON keys, plus ravel's two extensions. */
static const idf_field rv_nsq__idf_fields[] = {
    IDF("client_id", IDF_STR, client_id),
    IDF("hostname", IDF_STR, hostname),
    IDF("heartbeat_interval", IDF_INT, heartbeat_interval_ms),
    IDF("output_buffer_size", IDF_INT, output_buffer_size_bytes),
    IDF("output_buffer_timeout", IDF_INT, output_buffer_timeout_ms),
    IDF("feature_negotiation", IDF_BOOL, feature_negotiation),
    IDF("tls_v1", IDF_BOOL, tls_v1),
    IDF("deflate", IDF_BOOL, deflate),
    IDF("deflate_level", IDF_INT, deflate_level),
    IDF("snappy", IDF_BOOL, snappy),
    IDF("sample_rate", IDF_INT32, sample_rate_pct),
    IDF("user_agent", IDF_STR, user_agent),
    IDF("msg_timeout", IDF_INT, msg_timeout_ms),
    IDF("timeout_notify", IDF_BOOL, timeout_notify),
    IDF("hold_slots", IDF_BOOL, hold_slots),
};

/*
 * Go's encoding/json matches object keys to struct fields case-insensitively,
 * folding the Kelvin sign (U+212A) to 'k' and the long s (U+017F) to 's' as
 * well, so "Client_ID" sets client_id on nsqd, and must here too.
 */
static bool key_matches(const char *key, size_t key_len, const char *field) {
  size_t i = 0;
  for (const char *f = field; *f; f++) {
    if (i >= key_len) return false;
    uint8_t c = (uint8_t)key[i];
    if (c >= 'A' && c <= 'Z') c = (uint8_t)(c - 'A' + 'a');
    if (c == (uint8_t)*f) {
      i++;
    } else if (*f == 'k' && key_len - i >= 3 && memcmp(key + i, "\xE2\x84\xAA", 3) == 0) {
      i += 3;
    } else if (*f == 's' && key_len - i >= 2 && memcmp(key + i, "\xC5\xBF", 2) == 0) {
      i += 2;
    } else {
      return false;
    }
  }
  return i == key_len;
}

/* Copy a JSON string into a fixed field, cut at a UTF-8 boundary: these are
 * display strings (/stats), and a cut rune would show as garbage. */
static void copy_ident_str(char dst[RV_NSQ_IDENTIFY_STR_MAX_BYTES], const json_t *v) {
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  if (n > RV_NSQ_IDENTIFY_STR_MAX_BYTES - 1) {
    n = RV_NSQ_IDENTIFY_STR_MAX_BYTES - 1;
    while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80) n--;
  }
  memcpy(dst, s, n);
  dst[n] = '\0';
}

/* Assign one JSON value to its field, or report a type mismatch (Go's
 * UnmarshalTypeError, which fails the whole IDENTIFY).  null leaves the
 * field alone, as in Go. */
static bool assign_field(rv_nsq_identify *out, const idf_field *f, const json_t *v) {
  char *dst = (char *)out + f->offset;
  if (json_is_null(v)) return true;
  switch (f->type) {
    case IDF_STR:
      if (!json_is_string(v)) return false;
      copy_ident_str(dst, v);
      return true;
    case IDF_BOOL:
      if (!json_is_boolean(v)) return false;
      *(bool *)dst = json_is_true(v);
      return true;
    case IDF_INT:
      if (!json_is_integer(v)) return false;
      *(int64_t *)dst = (int64_t)json_integer_value(v);
      return true;
    case IDF_INT32: {
      if (!json_is_integer(v)) return false;
      json_int_t i = json_integer_value(v);
      if (i < INT32_MIN || i > INT32_MAX) return false;
      *(int32_t *)dst = (int32_t)i;
      return true;
    }
  }
  return false;
}

static int identify_invalid(rv_nsq_error *err, const char *what, long long v) {
  rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "IDENTIFY %s (%lld) is invalid", what, v);
  return RV_EPROTO;
}

/*
 * clientV2.Identify's checks, in its order (heartbeat, output buffer timeout
 * then size, sample rate, msg timeout), so the first bad value named is the
 * one nsqd names.
 */
static int identify_validate(const rv_nsq_identify *id, const rv_nsq_opts *o, rv_nsq_error *err) {
  int64_t v = id->heartbeat_interval_ms;
  if (!(v == -1 || v == 0 ||
        (v >= RV_NSQ_MIN_HEARTBEAT_INTERVAL_MS && v <= o->max_heartbeat_interval_ms)))
    return identify_invalid(err, "heartbeat interval", v);
  v = id->output_buffer_timeout_ms;
  if (!(v == -1 || v == 0 ||
        (v >= o->min_output_buffer_timeout_ms && v <= o->max_output_buffer_timeout_ms)))
    return identify_invalid(err, "output buffer timeout", v);
  v = id->output_buffer_size_bytes;
  if (!(v == -1 || v == 0 ||
        (v >= RV_NSQ_MIN_OUTPUT_BUFFER_SIZE_BYTES && v <= o->max_output_buffer_size_bytes)))
    return identify_invalid(err, "output buffer size", v);
  if (id->sample_rate_pct < 0 || id->sample_rate_pct > RV_NSQ_MAX_SAMPLE_RATE_PCT)
    return identify_invalid(err, "sample rate", id->sample_rate_pct);
  v = id->msg_timeout_ms;
  if (!(v == 0 || (v >= RV_NSQ_MIN_MSG_TIMEOUT_MS && v <= o->max_msg_timeout_ms)))
    return identify_invalid(err, "msg timeout", v);
  return 0;
}

/* json.Unmarshal into identifyDataV2, then clientV2.Identify's checks. */
int rv_nsq_identify_parse(const uint8_t *json, size_t len, const rv_nsq_opts *opts,
                          rv_nsq_identify *out, rv_nsq_error *err) {
  rv_nsq_opts defaults;
  if (!opts) {
    rv_nsq_opts_init(&defaults);
    opts = &defaults;
  }
  rv_nsq_identify_init(out);
  json_error_t jerr;
  json_t *root = json_loadb((const char *)json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
  bool ok = root != NULL && (json_is_object(root) || json_is_null(root));
  if (ok && json_is_object(root)) {
    for (void *it = json_object_iter(root); it; it = json_object_iter_next(root, it)) {
      const char *key = json_object_iter_key(it);
      size_t key_len = json_object_iter_key_len(it);
      json_t *v = json_object_iter_value(it);
      for (size_t i = 0; i < sizeof(rv_nsq__idf_fields) / sizeof(rv_nsq__idf_fields[0]); i++) {
        if (!key_matches(key, key_len, rv_nsq__idf_fields[i].key)) continue;
        /* Go goes on after a type error but still fails the call */
        if (!assign_field(out, &rv_nsq__idf_fields[i], v)) ok = false;
        break;
      }
    }
  }
  json_decref(root);
  if (!ok) {
    rv_nsq_error_set(err, RV_NSQ_E_BAD_BODY, "IDENTIFY failed to decode JSON body");
    return RV_EPROTO;
  }
  return identify_validate(out, opts, err);
}

void rv_nsq_client_cfg_init(rv_nsq_client_cfg *cfg, const rv_nsq_opts *opts) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->heartbeat_interval_ms = opts->heartbeat_interval_ms;
  cfg->output_buffer_size_bytes = opts->output_buffer_size_bytes;
  cfg->output_buffer_timeout_ms = opts->output_buffer_timeout_ms;
  cfg->msg_timeout_ms = opts->msg_timeout_ms;
}

/*
 * nsqd's setters: 0 keeps what the connection has (so a second IDENTIFY
 * builds on the first), -1 disables, and an unbuffered output (-1 size) also
 * zeroes the output timeout.  An extension is granted only if asked for, with
 * feature negotiation on (the client must be able to read the answer), and
 * allowed by the server.
 */
void rv_nsq_identify_apply(rv_nsq_client_cfg *cfg, const rv_nsq_identify *ident,
                           const rv_nsq_opts *opts) {
  if (ident->heartbeat_interval_ms == -1)
    cfg->heartbeat_interval_ms = 0;
  else if (ident->heartbeat_interval_ms != 0)
    cfg->heartbeat_interval_ms = ident->heartbeat_interval_ms;
  if (ident->output_buffer_timeout_ms == -1)
    cfg->output_buffer_timeout_ms = 0;
  else if (ident->output_buffer_timeout_ms != 0)
    cfg->output_buffer_timeout_ms = ident->output_buffer_timeout_ms;
  if (ident->output_buffer_size_bytes == -1) {
    cfg->output_buffer_size_bytes = 1;
    cfg->output_buffer_timeout_ms = 0;
  } else if (ident->output_buffer_size_bytes != 0) {
    cfg->output_buffer_size_bytes = ident->output_buffer_size_bytes;
  }
  cfg->sample_rate_pct = ident->sample_rate_pct;
  if (ident->msg_timeout_ms != 0) cfg->msg_timeout_ms = ident->msg_timeout_ms;
  cfg->feature_negotiation = ident->feature_negotiation;
  cfg->timeout_notify =
      ident->timeout_notify && ident->feature_negotiation && opts->allow_timeout_notify;
  cfg->hold_slots = ident->hold_slots && ident->feature_negotiation && opts->allow_hold_slots;
}

/* Serialise a jansson value compactly into out, wrapped in a frame when
 * frame_type >= 0 or after a command prefix otherwise.  Used for both the
 * IDENTIFY reply and the client's IDENTIFY. */
static int put_json(rv_nsq_buf *out, json_t *obj, int32_t frame_type, const char *cmd_line) {
  if (!obj) return RV_ENOMEM;
  size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
  int rc;
  if (n == 0 || n > (size_t)INT32_MAX - 4) {
    rc = RV_EINVAL;
    goto done;
  }
  size_t head = frame_type >= 0 ? RV_NSQ_FRAME_HEADER_SIZE_BYTES : strlen(cmd_line) + 4;
  if ((rc = buf_reserve(out, head + n))) goto done;
  if (frame_type >= 0) {
    buf_put_be32(out, (uint32_t)(n + 4));
    buf_put_be32(out, (uint32_t)frame_type);
  } else {
    buf_put_str(out, cmd_line);
    buf_put_be32(out, (uint32_t)n);
  }
  json_dumpb(obj, (char *)out->data + out->len, n, JSON_COMPACT);
  out->len += n;
done:
  json_decref(obj);
  return rc;
}

/* The reply nsqd v1.3.0 builds in IDENTIFY (its keys, its order), with
 * TLS, snappy and deflate always declined; see the header. */
int rv_nsq_enc_identify_reply(rv_nsq_buf *out, const rv_nsq_opts *opts,
                              const rv_nsq_client_cfg *cfg, const rv_nsq_identify *ident) {
  if (!ident->feature_negotiation) return rv_nsq_enc_ok(out);
  /* nsqd starts from level 6 and caps it at --max-deflate-level */
  json_int_t deflate_level = RV_NSQ_DEFAULT_DEFLATE_LEVEL;
  if (opts->max_deflate_level < deflate_level) deflate_level = opts->max_deflate_level;
  json_t *obj = json_pack(
      "{s:I, s:s, s:I, s:I, s:b, s:b, s:I, s:I, s:b, s:I, s:b, s:I, s:I}",
      "max_rdy_count", (json_int_t)opts->max_rdy_count,
      "version", opts->version ? opts->version : RV_NSQ_COMPAT_VERSION,
      "max_msg_timeout", (json_int_t)opts->max_msg_timeout_ms,
      "msg_timeout", (json_int_t)cfg->msg_timeout_ms,
      "tls_v1", 0,
      "deflate", 0,
      "deflate_level", deflate_level,
      "max_deflate_level", (json_int_t)opts->max_deflate_level,
      "snappy", 0,
      "sample_rate", (json_int_t)cfg->sample_rate_pct,
      "auth_required", (int)opts->auth_required,
      "output_buffer_size", (json_int_t)cfg->output_buffer_size_bytes,
      "output_buffer_timeout", (json_int_t)cfg->output_buffer_timeout_ms);
  if (obj && ident->timeout_notify)
    json_object_set_new(obj, "timeout_notify", json_boolean(cfg->timeout_notify));
  if (obj && ident->hold_slots)
    json_object_set_new(obj, "hold_slots", json_boolean(cfg->hold_slots));
  return put_json(out, obj, RV_NSQ_FRAME_RESPONSE, NULL);
}

/* ---- client commands ----------------------------------------------------- */

int rv_nsq_enc_magic(rv_nsq_buf *out) {
  int rc = buf_reserve(out, RV_NSQ_MAGIC_SIZE_BYTES);
  if (rc) return rc;
  buf_put(out, RV_NSQ_MAGIC_V2, RV_NSQ_MAGIC_SIZE_BYTES);
  return 0;
}

/*
 * "<CMD>[ <a>[ <b>]]\n" then, if body is not NULL, [int32 len][body]: the one
 * shape every client command has.  Sized in full before writing.
 */
static int put_cmd(rv_nsq_buf *out, const char *cmd, const char *a, const char *b,
                   const void *body, size_t body_len) {
  size_t n = strlen(cmd) + 1 + (a ? strlen(a) + 1 : 0) + (b ? strlen(b) + 1 : 0);
  if (body) {
    if (body_len == 0 || body_len > (size_t)INT32_MAX) return RV_EINVAL;
    n += 4 + body_len;
  }
  int rc = buf_reserve(out, n);
  if (rc) return rc;
  buf_put_str(out, cmd);
  if (a) {
    buf_put_str(out, " ");
    buf_put_str(out, a);
  }
  if (b) {
    buf_put_str(out, " ");
    buf_put_str(out, b);
  }
  buf_put_str(out, "\n");
  if (body) {
    buf_put_be32(out, (uint32_t)body_len);
    buf_put(out, body, body_len);
  }
  return 0;
}

static bool name_ok(const char *name) { return name && rv_nsq_valid_name(name, strlen(name)); }

/* The client's IDENTIFY: go-nsq's keys in go-nsq's (sorted) order, with the
 * ravel extensions only when requested, so that nsqd sees nothing new. */
int rv_nsq_enc_identify(rv_nsq_buf *out, const rv_nsq_identify *ident) {
  /* "o*" leaves a key out when its value is NULL; "s" refuses invalid UTF-8,
   * the only way packing these values can fail short of memory */
  json_error_t jerr;
  json_t *obj = json_pack_ex(
      &jerr, 0,
      "{s:s, s:b, s:I, s:b, s:I, s:o*, s:s, s:I, s:I, s:I, s:I, s:b, s:o*, s:b, s:s}",
      "client_id", ident->client_id,
      "deflate", (int)ident->deflate,
      "deflate_level", (json_int_t)ident->deflate_level,
      "feature_negotiation", (int)ident->feature_negotiation,
      "heartbeat_interval", (json_int_t)ident->heartbeat_interval_ms,
      "hold_slots", ident->hold_slots ? json_true() : NULL,
      "hostname", ident->hostname,
      "msg_timeout", (json_int_t)ident->msg_timeout_ms,
      "output_buffer_size", (json_int_t)ident->output_buffer_size_bytes,
      "output_buffer_timeout", (json_int_t)ident->output_buffer_timeout_ms,
      "sample_rate", (json_int_t)ident->sample_rate_pct,
      "snappy", (int)ident->snappy,
      "timeout_notify", ident->timeout_notify ? json_true() : NULL,
      "tls_v1", (int)ident->tls_v1,
      "user_agent", ident->user_agent);
  if (!obj) return RV_EINVAL;
  return put_json(out, obj, -1, "IDENTIFY\n");
}

int rv_nsq_enc_identify_json(rv_nsq_buf *out, const void *json, size_t len) {
  return put_cmd(out, "IDENTIFY", NULL, NULL, json, len);
}

int rv_nsq_enc_auth(rv_nsq_buf *out, const void *secret, size_t len) {
  return put_cmd(out, "AUTH", NULL, NULL, secret, len);
}

int rv_nsq_enc_sub(rv_nsq_buf *out, const char *topic, const char *channel) {
  if (!name_ok(topic) || !name_ok(channel)) return RV_EINVAL;
  return put_cmd(out, "SUB", topic, channel, NULL, 0);
}

int rv_nsq_enc_pub(rv_nsq_buf *out, const char *topic, const void *body, size_t len) {
  if (!name_ok(topic) || !body) return RV_EINVAL;
  return put_cmd(out, "PUB", topic, NULL, body, len);
}

/* MPUB's body is [int32 n]([int32 len][bytes])*n, sized exactly, so that
 * ravel's strict reading of MPUB accepts what its own client sends. */
int rv_nsq_enc_mpub(rv_nsq_buf *out, const char *topic, const rv_nsq_slice *msgs,
                    size_t count) {
  if (!name_ok(topic) || count == 0 || count > INT32_MAX) return RV_EINVAL;
  size_t body_len = RV_NSQ__INT32_SIZE_BYTES;
  for (size_t i = 0; i < count; i++) {
    if (msgs[i].len == 0 || msgs[i].len > (size_t)INT32_MAX) return RV_EINVAL;
    body_len += RV_NSQ__INT32_SIZE_BYTES + msgs[i].len;
    if (body_len > (size_t)INT32_MAX) return RV_EINVAL;
  }
  size_t line_len = strlen("MPUB ") + strlen(topic) + 1;
  int rc = buf_reserve(out, line_len + RV_NSQ__INT32_SIZE_BYTES + body_len);
  if (rc) return rc;
  buf_put_str(out, "MPUB ");
  buf_put_str(out, topic);
  buf_put_str(out, "\n");
  buf_put_be32(out, (uint32_t)body_len);
  buf_put_be32(out, (uint32_t)count);
  for (size_t i = 0; i < count; i++) {
    buf_put_be32(out, (uint32_t)msgs[i].len);
    buf_put(out, msgs[i].ptr, msgs[i].len);
  }
  return 0;
}

int rv_nsq_enc_dpub(rv_nsq_buf *out, const char *topic, int64_t defer_ms, const void *body,
                    size_t len) {
  if (!name_ok(topic) || !body || defer_ms < 0) return RV_EINVAL;
  char num[24];
  snprintf(num, sizeof(num), "%lld", (long long)defer_ms);
  return put_cmd(out, "DPUB", topic, num, body, len);
}

int rv_nsq_enc_rdy(rv_nsq_buf *out, int64_t count) {
  if (count < 0) return RV_EINVAL;
  char num[24];
  snprintf(num, sizeof(num), "%lld", (long long)count);
  return put_cmd(out, "RDY", num, NULL, NULL, 0);
}

/* Ids are written as given: they are the 16 bytes the server sent. */
static int put_id_cmd(rv_nsq_buf *out, const char *cmd,
                      const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES], const char *extra) {
  char idz[RV_NSQ_MSG_ID_SIZE_BYTES + 1];
  memcpy(idz, id, RV_NSQ_MSG_ID_SIZE_BYTES);
  idz[RV_NSQ_MSG_ID_SIZE_BYTES] = '\0';
  /* a space, '\r' or '\n' inside would change the line's meaning */
  for (int i = 0; i < RV_NSQ_MSG_ID_SIZE_BYTES; i++)
    if (id[i] <= ' ' || id[i] > '~') return RV_EINVAL;
  return put_cmd(out, cmd, idz, extra, NULL, 0);
}

int rv_nsq_enc_fin_attempt(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                           uint16_t attempt) {
  char num[8];
  if (attempt) snprintf(num, sizeof(num), "%u", (unsigned)attempt);
  return put_id_cmd(out, "FIN", id, attempt ? num : NULL);
}

int rv_nsq_enc_req_attempt(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                           int64_t delay_ms, uint16_t attempt) {
  if (delay_ms < 0) return RV_EINVAL;
  char num[32];
  if (attempt)
    snprintf(num, sizeof(num), "%lld %u", (long long)delay_ms, (unsigned)attempt);
  else
    snprintf(num, sizeof(num), "%lld", (long long)delay_ms);
  return put_id_cmd(out, "REQ", id, num);
}

int rv_nsq_enc_touch_attempt(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                             uint16_t attempt) {
  char num[8];
  if (attempt) snprintf(num, sizeof(num), "%u", (unsigned)attempt);
  return put_id_cmd(out, "TOUCH", id, attempt ? num : NULL);
}

int rv_nsq_enc_fin(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]) {
  return rv_nsq_enc_fin_attempt(out, id, 0);
}

int rv_nsq_enc_req(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                   int64_t delay_ms) {
  return rv_nsq_enc_req_attempt(out, id, delay_ms, 0);
}

int rv_nsq_enc_touch(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]) {
  return rv_nsq_enc_touch_attempt(out, id, 0);
}

int rv_nsq_enc_nop(rv_nsq_buf *out) { return put_cmd(out, "NOP", NULL, NULL, NULL, 0); }

int rv_nsq_enc_cls(rv_nsq_buf *out) { return put_cmd(out, "CLS", NULL, NULL, NULL, 0); }

/* ---- client side frame decoder ------------------------------------------- */

void rv_nsq_frame_decoder_init(rv_nsq_frame_decoder *fd, int64_t max_frame_size_bytes) {
  memset(fd, 0, sizeof(*fd));
  fd->max_frame_size_bytes =
      max_frame_size_bytes > 0 ? max_frame_size_bytes : RV_NSQ_DEFAULT_MAX_FRAME_SIZE_BYTES;
}

void rv_nsq_frame_decoder_free(rv_nsq_frame_decoder *fd) {
  free(fd->buf);
  fd->buf = NULL;
  fd->buf_len = fd->buf_cap = 0;
}

/* Split a complete frame's data by type; a message or timeout frame too
 * short for its fixed fields is a broken stream, not a short message. */
static int frame_fill(rv_nsq_frame_decoder *fd, rv_nsq_frame *frame, const uint8_t *data,
                      size_t n) {
  memset(frame, 0, sizeof(*frame));
  frame->type = (int32_t)be32_get(fd->hdr + 4);
  frame->data = (rv_nsq_slice){data, n};
  if (frame->type == RV_NSQ_FRAME_MESSAGE) {
    if (n < RV_NSQ_MSG_HEADER_SIZE_BYTES) {
      fd->why = "message frame shorter than its 26-byte header";
      return RV_EPROTO;
    }
    frame->ts_ns = (int64_t)be64_get(data);
    frame->attempts = (uint16_t)((data[8] << 8) | data[9]);
    memcpy(frame->id, data + 10, RV_NSQ_MSG_ID_SIZE_BYTES);
    frame->body =
        (rv_nsq_slice){data + RV_NSQ_MSG_HEADER_SIZE_BYTES, n - RV_NSQ_MSG_HEADER_SIZE_BYTES};
  } else if (frame->type == RV_NSQ_FRAME_TIMEOUT) {
    if (n != RV_NSQ_MSG_ID_SIZE_BYTES) {
      fd->why = "timeout frame data is not a 16-byte message id";
      return RV_EPROTO;
    }
    memcpy(frame->id, data, RV_NSQ_MSG_ID_SIZE_BYTES);
  }
  return 0;
}

/* The same in-place-or-gather scheme as the server decoder, for
 * [int32 size][int32 type][data]; the size is bounded before buffering. */
int rv_nsq_frame_decode(rv_nsq_frame_decoder *fd, const uint8_t *data, size_t len,
                        size_t *consumed, rv_nsq_frame *frame, const char **why) {
  *consumed = 0;
  if (fd->failed) {
    *why = fd->why;
    return RV_EPROTO;
  }
  if (fd->emitted) {
    fd->emitted = false;
    fd->hdr_len = 0;
    fd->buf_len = 0;
    if (fd->buf_cap > RV_NSQ__RETAIN_MAX_BYTES) rv_nsq_frame_decoder_free(fd);
  }
  size_t off = 0;
  if (fd->hdr_len < RV_NSQ_FRAME_HEADER_SIZE_BYTES) {
    size_t want = RV_NSQ_FRAME_HEADER_SIZE_BYTES - fd->hdr_len;
    size_t take = len < want ? len : want;
    memcpy(fd->hdr + fd->hdr_len, data, take);
    fd->hdr_len += take;
    off = take;
    if (fd->hdr_len < 4) goto need_more;
    int32_t size = (int32_t)be32_get(fd->hdr);
    if (size < 4) {
      fd->why = "frame size below 4 (the type field alone is 4 bytes)";
      goto fail;
    }
    if (size > fd->max_frame_size_bytes) {
      fd->why = "frame size over the decoder's max_frame_size_bytes";
      goto fail;
    }
    if (fd->hdr_len < RV_NSQ_FRAME_HEADER_SIZE_BYTES) goto need_more;
  }
  size_t data_len = (size_t)be32_get(fd->hdr) - 4;
  size_t avail = len - off;
  const uint8_t *fdata;
  if (fd->buf_len == 0 && avail >= data_len) {
    fdata = data + off;
    off += data_len;
  } else {
    if (fd->buf_cap < data_len) {
      void *b = realloc(fd->buf, data_len);
      if (!b) {
        *consumed = off;
        return RV_ENOMEM;
      }
      fd->buf = b;
      fd->buf_cap = data_len;
    }
    size_t take = data_len - fd->buf_len < avail ? data_len - fd->buf_len : avail;
    if (take) memcpy(fd->buf + fd->buf_len, data + off, take);
    fd->buf_len += take;
    off += take;
    if (fd->buf_len < data_len) goto need_more;
    fdata = fd->buf;
  }
  if (frame_fill(fd, frame, fdata, data_len)) goto fail;
  fd->emitted = true;
  *consumed = off;
  return 1;
need_more:
  *consumed = off;
  return 0;
fail:
  fd->failed = true;
  *why = fd->why;
  *consumed = off;
  return RV_EPROTO;
}
