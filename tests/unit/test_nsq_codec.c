/*
 * test_nsq_codec: the NSQ V2 codec against nsqd v1.3.0's behaviour.
 *
 * Most tests drive the server decoder the way a connection handler will:
 * feed bytes in chunks, take one command per call, update the connection
 * state after SUB and CLS, and render what came out as a compact text trace
 * ("SUB t c|RDY 1|ERR E_INVALID ...").  Comparing traces makes the exact
 * error texts readable in the test and makes chunking-independence a
 * one-line assertion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/nsq.h"

/* ---- stream builder ------------------------------------------------------ */

typedef struct {
  uint8_t data[1 << 16];
  size_t len;
} sb;

static void sb_bytes(sb *s, const void *p, size_t n) {
  assert_true(s->len + n <= sizeof(s->data));
  memcpy(s->data + s->len, p, n);
  s->len += n;
}
static void sb_str(sb *s, const char *str) { sb_bytes(s, str, strlen(str)); }
static void sb_be32(sb *s, uint32_t v) {
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  sb_bytes(s, b, 4);
}
/* "CMD\n[size][body]" */
static void sb_body_cmd(sb *s, const char *line, const char *body) {
  sb_str(s, line);
  sb_be32(s, (uint32_t)strlen(body));
  sb_str(s, body);
}

/* ---- trace rendering ----------------------------------------------------- */

typedef struct {
  char text[1 << 16];
  size_t len;
} trace;

static void tr_cat(trace *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->text + t->len, sizeof(t->text) - t->len, fmt, ap);
  va_end(ap);
  assert_true(n >= 0 && (size_t)n < sizeof(t->text) - t->len);
  t->len += (size_t)n;
}

static void tr_bytes(trace *t, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] >= 0x20 && p[i] < 0x7f)
      tr_cat(t, "%c", p[i]);
    else
      tr_cat(t, "\\x%02x", p[i]);
  }
}

static void tr_cmd(trace *t, const rv_nsq_cmd *c) {
  if (t->len) tr_cat(t, "|");
  tr_cat(t, "%s", rv_nsq_cmd_name(c->kind));
  switch (c->kind) {
    case RV_NSQ_CMD_IDENTIFY:
      tr_cat(t, " fn=%d hb=%lld mt=%lld ua=%s", c->identify.feature_negotiation,
             (long long)c->identify.heartbeat_interval_ms, (long long)c->identify.msg_timeout_ms,
             c->identify.user_agent);
      break;
    case RV_NSQ_CMD_AUTH:
      tr_cat(t, " ");
      tr_bytes(t, c->body.ptr, c->body.len);
      break;
    case RV_NSQ_CMD_SUB:
      tr_cat(t, " %s %s", c->topic, c->channel);
      break;
    case RV_NSQ_CMD_PUB:
      tr_cat(t, " %s ", c->topic);
      tr_bytes(t, c->body.ptr, c->body.len);
      break;
    case RV_NSQ_CMD_DPUB:
      tr_cat(t, " %s %lld ", c->topic, (long long)c->delay_ms);
      tr_bytes(t, c->body.ptr, c->body.len);
      break;
    case RV_NSQ_CMD_MPUB:
      tr_cat(t, " %s", c->topic);
      for (size_t i = 0; i < c->msg_count; i++) {
        tr_cat(t, " [");
        tr_bytes(t, c->msgs[i].ptr, c->msgs[i].len);
        tr_cat(t, "]");
      }
      break;
    case RV_NSQ_CMD_RDY:
      if (c->ignored)
        tr_cat(t, " ignored");
      else
        tr_cat(t, " %lld", (long long)c->count);
      break;
    case RV_NSQ_CMD_FIN:
    case RV_NSQ_CMD_TOUCH:
      tr_cat(t, " ");
      tr_bytes(t, c->id, 16);
      if (c->attempt) tr_cat(t, " attempt=%u", (unsigned)c->attempt);
      break;
    case RV_NSQ_CMD_REQ:
      tr_cat(t, " ");
      tr_bytes(t, c->id, 16);
      tr_cat(t, " %lld%s", (long long)c->delay_ms, c->delay_clamped ? " clamped" : "");
      if (c->attempt) tr_cat(t, " attempt=%u", (unsigned)c->attempt);
      break;
    default:
      break;
  }
}

/* What a connection handler does with the state after each command. */
static void track_state(rv_nsq_decoder *dec, const rv_nsq_cmd *c) {
  if (c->kind == RV_NSQ_CMD_SUB) rv_nsq_decoder_set_state(dec, RV_NSQ_STATE_SUBSCRIBED, false);
  if (c->kind == RV_NSQ_CMD_CLS) rv_nsq_decoder_set_state(dec, RV_NSQ_STATE_CLOSING, false);
  if (c->kind == RV_NSQ_CMD_IDENTIFY && c->identify.heartbeat_interval_ms == -1)
    rv_nsq_decoder_set_state(dec, dec->state, true);
}

/* A deterministic chunk-size sequence (not the C library's generator: the
 * codec's tests stay independent of process-wide state). */
static uint32_t lcg_next(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/*
 * Feed in chunks: chunk > 0 fixed size, chunk == 0 all at once, chunk < 0
 * pseudo-random sizes 1..-chunk seeded by -chunk.  Stops at the first error.
 */
static void drive_into(trace *t, const uint8_t *in, size_t n, long chunk,
                       rv_nsq_state state, const rv_nsq_opts *opts) {
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, opts);
  rv_nsq_decoder_set_state(&dec, state, false);
  uint32_t seed = (uint32_t)(chunk < 0 ? -chunk : 0);
  size_t pos = 0;
  t->len = 0;
  t->text[0] = '\0';
  bool failed = false;
  while (pos < n && !failed) {
    size_t piece = n - pos;
    if (chunk > 0 && (size_t)chunk < piece) piece = (size_t)chunk;
    if (chunk < 0) {
      size_t r = 1 + lcg_next(&seed) % (size_t)(-chunk);
      if (r < piece) piece = r;
    }
    const uint8_t *p = in + pos;
    size_t left = piece;
    for (;;) {
      rv_nsq_cmd cmd;
      rv_nsq_error err;
      size_t used = 0;
      int rc = rv_nsq_decode(&dec, p, left, &used, &cmd, &err);
      assert_true(used <= left);
      p += used;
      left -= used;
      if (rc == 1) {
        tr_cmd(t, &cmd);
        track_state(&dec, &cmd);
        if (left == 0) break;
        continue;
      }
      if (rc == 0) {
        assert_int_equal(left, 0);
        break;
      }
      assert_int_equal(rc, RV_EPROTO);
      assert_true(err.fatal);
      assert_int_equal(strlen(err.text), err.text_len);
      if (t->len) tr_cat(t, "|");
      tr_cat(t, "ERR ");
      tr_bytes(t, (const uint8_t *)err.text, err.text_len);
      failed = true;
      break;
    }
    pos += piece;
  }
  rv_nsq_decoder_free(&dec);
}

static trace g_trace, g_trace2;

static const char *drive(const sb *s, rv_nsq_state state) {
  drive_into(&g_trace, s->data, s->len, 0, state, NULL);
  /* every trace in this file is also checked byte by byte and in random
   * chunks: chunking must never change what comes out */
  drive_into(&g_trace2, s->data, s->len, 1, state, NULL);
  assert_string_equal(g_trace.text, g_trace2.text);
  drive_into(&g_trace2, s->data, s->len, -7, state, NULL);
  assert_string_equal(g_trace.text, g_trace2.text);
  return g_trace.text;
}

/* A stream of "  V2" and one command line. */
static const char *drive_line(const char *line, rv_nsq_state state) {
  static sb s;
  s.len = 0;
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_str(&s, line);
  return drive(&s, state);
}

#define ID16 "0123456789abcdef"

/* ---- magic --------------------------------------------------------------- */

static void test_magic(void **state) {
  (void)state;
  assert_string_equal(drive_line("NOP\n", RV_NSQ_STATE_INIT), "NOP");

  sb s = {.len = 0};
  sb_str(&s, "GET / HTTP/1.1\r\n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT), "ERR E_BAD_PROTOCOL");

  /* three bytes are not yet an error; the fourth decides */
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, NULL);
  rv_nsq_cmd cmd;
  rv_nsq_error err;
  size_t used;
  assert_int_equal(rv_nsq_decode(&dec, (const uint8_t *)"  V", 3, &used, &cmd, &err), 0);
  assert_int_equal(used, 3);
  assert_int_equal(rv_nsq_decode(&dec, (const uint8_t *)"1", 1, &used, &cmd, &err), RV_EPROTO);
  assert_int_equal(err.code, RV_NSQ_E_BAD_PROTOCOL);
  assert_true(err.fatal);
  assert_string_equal(err.text, "E_BAD_PROTOCOL");
  /* a failed decoder stays failed */
  assert_int_equal(rv_nsq_decode(&dec, (const uint8_t *)"NOP\n", 4, &used, &cmd, &err),
                   RV_EPROTO);
  assert_int_equal(used, 0);
  assert_string_equal(err.text, "E_BAD_PROTOCOL");
  rv_nsq_decoder_free(&dec);
}

/* ---- every command ------------------------------------------------------- */

static void test_every_command(void **state) {
  (void)state;
  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "IDENTIFY\n", "{\"feature_negotiation\":true,\"user_agent\":\"t/1\"}");
  sb_body_cmd(&s, "AUTH\n", "secret");
  sb_body_cmd(&s, "PUB t1\n", "hello");
  sb_body_cmd(&s, "DPUB t1 1500\n", "later");
  sb_str(&s, "MPUB t1\n");
  sb_be32(&s, 4 + 4 + 1 + 4 + 2);
  sb_be32(&s, 2);
  sb_be32(&s, 1);
  sb_str(&s, "a");
  sb_be32(&s, 2);
  sb_str(&s, "bc");
  sb_str(&s, "SUB t1 c1#ephemeral\r\n");
  sb_str(&s, "RDY 2500\n");
  sb_str(&s, "RDY\n");
  sb_str(&s, "FIN " ID16 "\n");
  sb_str(&s, "REQ " ID16 " 1000\n");
  sb_str(&s, "TOUCH " ID16 "\n");
  sb_str(&s, "NOP\n");
  sb_str(&s, "CLS\n");
  sb_str(&s, "RDY 5\n");
  sb_str(&s, "FIN " ID16 "\n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT),
                      "IDENTIFY fn=1 hb=0 mt=0 ua=t/1"
                      "|AUTH secret"
                      "|PUB t1 hello"
                      "|DPUB t1 1500 later"
                      "|MPUB t1 [a] [bc]"
                      "|SUB t1 c1#ephemeral"
                      "|RDY 2500|RDY 1"
                      "|FIN " ID16 "|REQ " ID16 " 1000|TOUCH " ID16
                      "|NOP|CLS|RDY ignored|FIN " ID16);
}

static void test_pipelined_sub_rdy(void **state) {
  (void)state;
  const char *in = "  V2SUB t c\nRDY 1\n";
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, NULL);
  rv_nsq_cmd cmd;
  rv_nsq_error err;
  size_t used;
  const uint8_t *p = (const uint8_t *)in;
  size_t n = strlen(in);
  assert_int_equal(rv_nsq_decode(&dec, p, n, &used, &cmd, &err), 1);
  assert_int_equal(cmd.kind, RV_NSQ_CMD_SUB);
  assert_string_equal(cmd.topic, "t");
  assert_string_equal(cmd.channel, "c");
  assert_int_equal(used, strlen("  V2SUB t c\n"));
  rv_nsq_decoder_set_state(&dec, RV_NSQ_STATE_SUBSCRIBED, false);
  p += used;
  n -= used;
  assert_int_equal(rv_nsq_decode(&dec, p, n, &used, &cmd, &err), 1);
  assert_int_equal(cmd.kind, RV_NSQ_CMD_RDY);
  assert_int_equal(cmd.count, 1);
  assert_int_equal(used, n);
  assert_int_equal(rv_nsq_decode(&dec, p + used, 0, &used, &cmd, &err), 0);
  rv_nsq_decoder_free(&dec);
}

/* A whole command in one chunk is not copied; a split one is gathered. */
static void test_zero_copy_and_gather(void **state) {
  (void)state;
  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "PUB t\n", "payload");
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, NULL);
  rv_nsq_cmd cmd;
  rv_nsq_error err;
  size_t used;
  assert_int_equal(rv_nsq_decode(&dec, s.data, s.len, &used, &cmd, &err), 1);
  assert_ptr_equal(cmd.body.ptr, s.data + s.len - 7);
  assert_int_equal(dec.buf_cap, 0);
  rv_nsq_decoder_free(&dec);

  rv_nsq_decoder_init(&dec, NULL);
  assert_int_equal(rv_nsq_decode(&dec, s.data, s.len - 3, &used, &cmd, &err), 0);
  assert_int_equal(rv_nsq_decode(&dec, s.data + s.len - 3, 3, &used, &cmd, &err), 1);
  assert_memory_equal(cmd.body.ptr, "payload", 7);
  assert_ptr_equal(cmd.body.ptr, dec.buf);
  rv_nsq_decoder_free(&dec);
}

/* ---- error paths: exact texts -------------------------------------------- */

typedef struct {
  rv_nsq_state state;
  const char *line;
  const char *trace;
} line_case;

static void test_line_errors(void **state) {
  (void)state;
  static const line_case cases[] = {
      {RV_NSQ_STATE_INIT, "X\n", "ERR E_INVALID invalid command X"},
      {RV_NSQ_STATE_INIT, "pub t\n", "ERR E_INVALID invalid command pub"},
      {RV_NSQ_STATE_INIT, "\n", "ERR E_INVALID invalid command "},
      {RV_NSQ_STATE_INIT, " NOP\n", "ERR E_INVALID invalid command "},
      {RV_NSQ_STATE_INIT, "NOP\r\r\n", "ERR E_INVALID invalid command NOP\\x0d"},
      {RV_NSQ_STATE_INIT, "NOP extra params\n", "NOP"},
      /* state */
      {RV_NSQ_STATE_SUBSCRIBED, "IDENTIFY\n", "ERR E_INVALID cannot IDENTIFY in current state"},
      {RV_NSQ_STATE_SUBSCRIBED, "AUTH\n", "ERR E_INVALID cannot AUTH in current state"},
      {RV_NSQ_STATE_SUBSCRIBED, "SUB t c\n", "ERR E_INVALID cannot SUB in current state"},
      {RV_NSQ_STATE_SUBSCRIBED, "SUB !! c\n", "ERR E_INVALID cannot SUB in current state"},
      {RV_NSQ_STATE_INIT, "RDY 1\n", "ERR E_INVALID cannot RDY in current state"},
      {RV_NSQ_STATE_INIT, "FIN " ID16 "\n", "ERR E_INVALID cannot FIN in current state"},
      {RV_NSQ_STATE_INIT, "REQ " ID16 " 0\n", "ERR E_INVALID cannot REQ in current state"},
      {RV_NSQ_STATE_INIT, "TOUCH " ID16 "\n", "ERR E_INVALID cannot TOUCH in current state"},
      {RV_NSQ_STATE_INIT, "CLS\n", "ERR E_INVALID cannot CLS in current state"},
      {RV_NSQ_STATE_CLOSING, "CLS\n", "ERR E_INVALID cannot CLS in current state"},
      {RV_NSQ_STATE_CLOSING, "RDY garbage\n", "RDY ignored"},
      {RV_NSQ_STATE_CLOSING, "TOUCH " ID16 "\n", "TOUCH " ID16},
      {RV_NSQ_STATE_SUBSCRIBED, "NOP\n", "NOP"},
      /* parameter counts */
      {RV_NSQ_STATE_INIT, "AUTH x\n", "ERR E_INVALID AUTH invalid number of parameters"},
      {RV_NSQ_STATE_INIT, "SUB t\n", "ERR E_INVALID SUB insufficient number of parameters"},
      {RV_NSQ_STATE_INIT, "PUB\n", "ERR E_INVALID PUB insufficient number of parameters"},
      {RV_NSQ_STATE_INIT, "MPUB\n", "ERR E_INVALID MPUB insufficient number of parameters"},
      {RV_NSQ_STATE_INIT, "DPUB t\n", "ERR E_INVALID DPUB insufficient number of parameters"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN\n", "ERR E_INVALID FIN insufficient number of params"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 "\n",
       "ERR E_INVALID REQ insufficient number of params"},
      {RV_NSQ_STATE_SUBSCRIBED, "TOUCH\n", "ERR E_INVALID TOUCH insufficient number of params"},
      /* names */
      {RV_NSQ_STATE_INIT, "SUB bad!topic c\n",
       "ERR E_BAD_TOPIC SUB topic name \"bad!topic\" is not valid"},
      {RV_NSQ_STATE_INIT, "SUB t bad/chan\n",
       "ERR E_BAD_CHANNEL SUB channel name \"bad/chan\" is not valid"},
      {RV_NSQ_STATE_INIT, "SUB  t c\n", "ERR E_BAD_TOPIC SUB topic name \"\" is not valid"},
      {RV_NSQ_STATE_INIT, "PUB #ephemeral\n",
       "ERR E_BAD_TOPIC PUB topic name \"#ephemeral\" is not valid"},
      {RV_NSQ_STATE_INIT, "PUB a\"b\\c\n",
       "ERR E_BAD_TOPIC PUB topic name \"a\\\"b\\\\c\" is not valid"},
      {RV_NSQ_STATE_INIT, "MPUB b@d\n",
       "ERR E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"b@d\" is not valid"},
      {RV_NSQ_STATE_INIT, "DPUB b@d 10\n",
       "ERR E_BAD_TOPIC DPUB topic name \"b@d\" is not valid"},
      {RV_NSQ_STATE_INIT,
       "PUB aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
       "ERR E_BAD_TOPIC PUB topic name "
       "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is not valid"},
      /* numbers: nsqd's ByteToBase10 */
      {RV_NSQ_STATE_SUBSCRIBED, "RDY 99999\n", "ERR E_INVALID RDY count 99999 out of range 0-2500"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY 2501\n", "ERR E_INVALID RDY count 2501 out of range 0-2500"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY 0\n", "RDY 0"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY \n", "RDY 0"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY 7 8\n", "RDY 7"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY -1\n", "ERR E_INVALID RDY could not parse count -1"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY 18446744073709551615\n",
       "ERR E_INVALID RDY count -1 out of range 0-2500"},
      {RV_NSQ_STATE_SUBSCRIBED, "RDY 18446744073709551617\n", "RDY 1"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " x\n",
       "ERR E_INVALID REQ could not parse timeout x"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 3600000\n", "REQ " ID16 " 3600000"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 3600001\n", "REQ " ID16 " 3600000 clamped"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " \n", "REQ " ID16 " 0"},
      /* 2^63/1e6 + 1 ms wraps negative in Go's Duration: clamped to 0 */
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 9223372036855\n", "REQ " ID16 " 0 clamped"},
      {RV_NSQ_STATE_INIT, "DPUB t x\n", "ERR E_INVALID DPUB could not parse timeout x"},
      {RV_NSQ_STATE_INIT, "DPUB t 3600001\n",
       "ERR E_INVALID DPUB timeout 3600001 out of range 0-3600000"},
      {RV_NSQ_STATE_INIT, "DPUB t 9223372036855\n",
       "ERR E_INVALID DPUB timeout 9223372036855 out of range 0-3600000"},
      /* ids */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN abc\n", "ERR E_INVALID invalid message ID"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 "0\n", "ERR E_INVALID invalid message ID"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ abc 10\n", "ERR E_INVALID invalid message ID"},
      {RV_NSQ_STATE_SUBSCRIBED, "TOUCH \n", "ERR E_INVALID invalid message ID"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN ZZZZZZZZZZZZZZZZ\n", "FIN ZZZZZZZZZZZZZZZZ"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *got = drive_line(cases[i].line, cases[i].state);
    if (strcmp(got, cases[i].trace) != 0)
      fail_msg("case %zu %s: got [%s] want [%s]", i, cases[i].line, got, cases[i].trace);
  }
}

/* ravel's attempt argument: "FIN <id> <attempts>", "REQ <id> <ms> <attempts>",
 * "TOUCH <id> <attempts>"; absent means nsqd's command, unchanged. */
static void test_attempt_argument(void **state) {
  (void)state;
  static const line_case cases[] = {
      /* absent: exactly nsqd's commands (attempt 0, not traced) */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 "\n", "FIN " ID16},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 10\n", "REQ " ID16 " 10"},
      {RV_NSQ_STATE_SUBSCRIBED, "TOUCH " ID16 "\n", "TOUCH " ID16},
      /* a trailing space: an empty parameter nsqd accepts, still absent */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " \n", "FIN " ID16},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 10 \n", "REQ " ID16 " 10"},
      /* given */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 1\n", "FIN " ID16 " attempt=1"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 2\r\n", "FIN " ID16 " attempt=2"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 10 3\n", "REQ " ID16 " 10 attempt=3"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 3600001 7\n",
       "REQ " ID16 " 3600000 clamped attempt=7"},
      {RV_NSQ_STATE_SUBSCRIBED, "TOUCH " ID16 " 65535\n", "TOUCH " ID16 " attempt=65535"},
      /* TOUCH after CLS is still parsed (nsqd allows it) */
      {RV_NSQ_STATE_CLOSING, "TOUCH " ID16 " 4\n", "TOUCH " ID16 " attempt=4"},
      /* parameters past the attempt are ignored, as nsqd ignores extras */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 5 x\n", "FIN " ID16 " attempt=5"},
      /* malformed: fatal E_INVALID */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 0\n",
       "ERR E_INVALID FIN invalid attempt \"0\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 65536\n",
       "ERR E_INVALID FIN invalid attempt \"65536\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 100000\n",
       "ERR E_INVALID FIN invalid attempt \"100000\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " 01\n",
       "ERR E_INVALID FIN invalid attempt \"01\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " -1\n",
       "ERR E_INVALID FIN invalid attempt \"-1\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "FIN " ID16 " +1\n",
       "ERR E_INVALID FIN invalid attempt \"+1\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 10 x\n",
       "ERR E_INVALID REQ invalid attempt \"x\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "REQ " ID16 " 10 1x\n",
       "ERR E_INVALID REQ invalid attempt \"1x\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "TOUCH " ID16 " 99999999999999999999\n",
       "ERR E_INVALID TOUCH invalid attempt \"99999999999999999999\" (must be 1-65535)"},
      {RV_NSQ_STATE_SUBSCRIBED, "TOUCH " ID16 " \x01\n",
       "ERR E_INVALID TOUCH invalid attempt \"\\x01\" (must be 1-65535)"},
      /* the id is checked first, as before */
      {RV_NSQ_STATE_SUBSCRIBED, "FIN abc 1\n", "ERR E_INVALID invalid message ID"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *got = drive_line(cases[i].line, cases[i].state);
    if (strcmp(got, cases[i].trace) != 0)
      fail_msg("case %zu %s: got [%s] want [%s]", i, cases[i].line, got, cases[i].trace);
  }
}

static void test_heartbeats_disabled_sub(void **state) {
  (void)state;
  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "IDENTIFY\n", "{\"heartbeat_interval\":-1}");
  sb_str(&s, "SUB t c\n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT),
                      "IDENTIFY fn=0 hb=-1 mt=0 ua=|"
                      "ERR E_INVALID cannot SUB with heartbeats disabled");
}

static void test_go_quoting(void **state) {
  (void)state;
  /* control bytes, a tab, invalid UTF-8, a printable and a non-printable
   * non-ASCII rune: Go's strconv.Quote keeps the printable one raw */
  const char *in = "  V2PUB a\tb\x01\xff\xc3\xa9\xc2\x85\n";
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, NULL);
  rv_nsq_cmd cmd;
  rv_nsq_error err;
  size_t used;
  assert_int_equal(rv_nsq_decode(&dec, (const uint8_t *)in, strlen(in), &used, &cmd, &err),
                   RV_EPROTO);
  assert_string_equal(err.text, "E_BAD_TOPIC PUB topic name \"a\\tb\\x01\\xff\xc3\xa9\\u0085\""
                                " is not valid");
  rv_nsq_decoder_free(&dec);
  /* long echoes are cut */
  char line[600] = "PUB ";
  memset(line + 4, '!', 500);
  strcpy(line + 504, "\n");
  const char *got = drive_line(line, RV_NSQ_STATE_INIT);
  char want[400] = "ERR E_BAD_TOPIC PUB topic name \"";
  memset(want + strlen(want), '!', RV_NSQ_ERROR_ECHO_MAX_BYTES);
  strcat(want, "\"... is not valid");
  assert_string_equal(got, want);
}

static void test_line_too_long(void **state) {
  (void)state;
  static sb s;
  s.len = 0;
  sb_str(&s, RV_NSQ_MAGIC_V2);
  /* 16383 bytes and the newline: exactly the reader's size, accepted */
  sb_str(&s, "NOP");
  while (s.len < 4 + RV_NSQ_LINE_MAX_BYTES - 1) sb_str(&s, " ");
  sb_str(&s, "\n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT), "NOP");
  s.len--;
  sb_str(&s, " \n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT),
                      "ERR E_INVALID command line too long: no newline within 16384 bytes");
}

/* ---- bodies -------------------------------------------------------------- */

static const char *drive_sized(const char *line, int32_t size, const char *body) {
  static sb s;
  s.len = 0;
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_str(&s, line);
  sb_be32(&s, (uint32_t)size);
  if (body) sb_str(&s, body);
  return drive(&s, RV_NSQ_STATE_INIT);
}

static void test_body_size_errors(void **state) {
  (void)state;
  assert_string_equal(drive_sized("PUB t\n", 0, NULL),
                      "ERR E_BAD_MESSAGE PUB invalid message body size 0");
  assert_string_equal(drive_sized("PUB t\n", -1, NULL),
                      "ERR E_BAD_MESSAGE PUB invalid message body size -1");
  assert_string_equal(drive_sized("PUB t\n", 1048577, NULL),
                      "ERR E_BAD_MESSAGE PUB message too big 1048577 > 1048576");
  assert_string_equal(drive_sized("DPUB t 5\n", 0, NULL),
                      "ERR E_BAD_MESSAGE DPUB invalid message body size 0");
  assert_string_equal(drive_sized("DPUB t 5\n", 2000000, NULL),
                      "ERR E_BAD_MESSAGE DPUB message too big 2000000 > 1048576");
  assert_string_equal(drive_sized("MPUB t\n", 0, NULL),
                      "ERR E_BAD_BODY MPUB invalid body size 0");
  assert_string_equal(drive_sized("MPUB t\n", 5242881, NULL),
                      "ERR E_BAD_BODY MPUB body too big 5242881 > 5242880");
  assert_string_equal(drive_sized("IDENTIFY\n", 0, NULL),
                      "ERR E_BAD_BODY IDENTIFY invalid body size 0");
  assert_string_equal(drive_sized("IDENTIFY\n", INT32_MAX, NULL),
                      "ERR E_BAD_BODY IDENTIFY body too big 2147483647 > 5242880");
  assert_string_equal(drive_sized("AUTH\n", -5, NULL),
                      "ERR E_BAD_BODY AUTH invalid body size -5");
  assert_string_equal(drive_sized("AUTH\n", 5242881, NULL),
                      "ERR E_BAD_BODY AUTH body too big 5242881 > 5242880");
  assert_string_equal(drive_sized("PUB t\n", 1, "x"), "PUB t x");

  rv_nsq_opts o;
  rv_nsq_opts_init(&o);
  o.max_msg_size_bytes = 10;
  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "PUB t\n", "0123456789A");
  drive_into(&g_trace, s.data, s.len, 1, RV_NSQ_STATE_INIT, &o);
  assert_string_equal(g_trace.text, "ERR E_BAD_MESSAGE PUB message too big 11 > 10");
}

/* The size is refused from its header: no byte of the body is needed and
 * nothing is buffered. */
static void test_oversized_not_buffered(void **state) {
  (void)state;
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, NULL);
  rv_nsq_cmd cmd;
  rv_nsq_error err;
  size_t used;
  const char *head = "  V2MPUB t\n";
  assert_int_equal(rv_nsq_decode(&dec, (const uint8_t *)head, strlen(head), &used, &cmd, &err),
                   0);
  const uint8_t size[4] = {0x7f, 0xff, 0xff, 0xff};
  for (int i = 0; i < 3; i++)
    assert_int_equal(rv_nsq_decode(&dec, size + i, 1, &used, &cmd, &err), 0);
  assert_int_equal(rv_nsq_decode(&dec, size + 3, 1, &used, &cmd, &err), RV_EPROTO);
  assert_string_equal(err.text, "E_BAD_BODY MPUB body too big 2147483647 > 5242880");
  assert_int_equal(dec.buf_cap, 0);
  rv_nsq_decoder_free(&dec);

  /* an accepted size allocates nothing until body bytes arrive */
  rv_nsq_decoder_init(&dec, NULL);
  uint8_t in[] = "  V2PUB t\n\x00\x10\x00\x00";
  assert_int_equal(rv_nsq_decode(&dec, in, sizeof(in) - 1, &used, &cmd, &err), 0);
  assert_int_equal(dec.buf_cap, 0);
  rv_nsq_decoder_free(&dec);
}

/* "MPUB t\n", then words as big-endian int32s, then tail_len bytes. */
static const char *drive_mpub_n(const uint32_t *words, size_t nwords, const char *tail,
                                size_t tail_len) {
  static sb s;
  s.len = 0;
  sb_str(&s, RV_NSQ_MAGIC_V2 "MPUB t\n");
  for (size_t i = 0; i < nwords; i++) sb_be32(&s, words[i]);
  if (tail) sb_bytes(&s, tail, tail_len);
  return drive(&s, RV_NSQ_STATE_INIT);
}

static const char *drive_mpub(const uint32_t *words, size_t nwords, const char *tail) {
  return drive_mpub_n(words, nwords, tail, tail ? strlen(tail) : 0);
}

static void test_mpub(void **state) {
  (void)state;
  /* size, count, [len, bytes]... */
  assert_string_equal(drive_mpub((uint32_t[]){9, 1, 1}, 3, "x"), "MPUB t [x]");
  assert_string_equal(drive_mpub((uint32_t[]){4, 0}, 2, NULL),
                      "ERR E_BAD_BODY MPUB invalid message count 0");
  assert_string_equal(drive_mpub((uint32_t[]){4, 0xffffffff}, 2, NULL),
                      "ERR E_BAD_BODY MPUB invalid message count -1");
  assert_string_equal(drive_mpub((uint32_t[]){4, 1048576}, 2, NULL),
                      "ERR E_BAD_BODY MPUB invalid message count 1048576");
  assert_string_equal(drive_mpub((uint32_t[]){13, 2, 0}, 3, NULL),
                      "ERR E_BAD_MESSAGE MPUB invalid message(0) body size 0");
  assert_string_equal(drive_mpub((uint32_t[]){20, 2, 1}, 3, "x\xff\xff\xff\xff"),
                      "ERR E_BAD_MESSAGE MPUB invalid message(1) body size -1");
  assert_string_equal(drive_mpub((uint32_t[]){20, 2, 1048577}, 3, NULL),
                      "ERR E_BAD_MESSAGE MPUB message too big 1048577 > 1048576");
  /* the whole batch is checked before the command comes out: a bad second
   * message fails the batch and the first is never seen */
  assert_string_equal(drive_mpub_n((uint32_t[]){18, 2, 1}, 3, "x\0\0\0\0zz", 7),
                      "ERR E_BAD_MESSAGE MPUB invalid message(1) body size 0");
  /* ravel's strict framing: the messages must fill the body exactly */
  assert_string_equal(drive_mpub((uint32_t[]){2}, 1, NULL),
                      "ERR E_BAD_BODY MPUB failed to read message count");
  assert_string_equal(drive_mpub((uint32_t[]){9, 2, 1}, 3, "x"),
                      "ERR E_BAD_MESSAGE MPUB failed to read message(1) body size");
  assert_string_equal(drive_mpub((uint32_t[]){9, 1, 2}, 3, "xy"),
                      "ERR E_BAD_MESSAGE MPUB failed to read message body");
  assert_string_equal(drive_mpub((uint32_t[]){11, 1, 1}, 3, "xyz"),
                      "ERR E_BAD_BODY MPUB invalid body size 11: 2 bytes left after its 1 messages");
}

static void test_eof(void **state) {
  (void)state;
  struct {
    const char *in;
    size_t n;
    const char *want; /* NULL: nsqd closes silently */
  } cases[] = {
      {"  V", 3, NULL},
      {"  V2NOP", 7, NULL},
      {"  V2NOP\n", 8, NULL},
      {"  V2PUB t\n", 10, "E_BAD_MESSAGE PUB failed to read message body size"},
      {"  V2PUB t\n\0\0\0\5ab", 16, "E_BAD_MESSAGE PUB failed to read message body"},
      {"  V2DPUB t 1\n\0\0", 15, "E_BAD_MESSAGE DPUB failed to read message body size"},
      {"  V2IDENTIFY\n", 13, "E_BAD_BODY IDENTIFY failed to read body size"},
      {"  V2IDENTIFY\n\0\0\0\2{", 18, "E_BAD_BODY IDENTIFY failed to read body"},
      {"  V2AUTH\n\0\0\0\2", 13, "E_BAD_BODY AUTH failed to read body"},
      {"  V2MPUB t\n\0", 12, "E_BAD_BODY MPUB failed to read body size"},
      {"  V2MPUB t\n\0\0\0\x0d\0\0", 17, "E_BAD_BODY MPUB failed to read message count"},
      {"  V2MPUB t\n\0\0\0\x0d\0\0\0\1\0\0", 21,
       "E_BAD_MESSAGE MPUB failed to read message(0) body size"},
      {"  V2MPUB t\n\0\0\0\x0d\0\0\0\1\0\0\0\5ab", 25,
       "E_BAD_MESSAGE MPUB failed to read message body"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    rv_nsq_decoder dec;
    rv_nsq_decoder_init(&dec, NULL);
    rv_nsq_cmd cmd;
    rv_nsq_error err;
    size_t used;
    int rc = rv_nsq_decode(&dec, (const uint8_t *)cases[i].in, cases[i].n, &used, &cmd, &err);
    assert_true(rc == 0 || rc == 1);
    rc = rv_nsq_decode_eof(&dec, &err);
    if (cases[i].want) {
      assert_int_equal(rc, RV_EPROTO);
      assert_true(err.fatal);
      assert_string_equal(err.text, cases[i].want);
    } else {
      assert_int_equal(rc, 0);
    }
    rv_nsq_decoder_free(&dec);
  }
}

/* ---- state helper -------------------------------------------------------- */

static void test_check_state(void **state) {
  (void)state;
  rv_nsq_error err;
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_PUB, RV_NSQ_STATE_CLOSING, false, &err),
                   RV_NSQ_ALLOW);
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_IDENTIFY, RV_NSQ_STATE_INIT, false, &err),
                   RV_NSQ_ALLOW);
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_RDY, RV_NSQ_STATE_CLOSING, false, &err),
                   RV_NSQ_IGNORE);
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_SUB, RV_NSQ_STATE_SUBSCRIBED, false, &err),
                   RV_NSQ_REJECT);
  assert_string_equal(err.text, "E_INVALID cannot SUB in current state");
  assert_true(err.fatal);
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_SUB, RV_NSQ_STATE_INIT, true, &err),
                   RV_NSQ_REJECT);
  assert_string_equal(err.text, "E_INVALID cannot SUB with heartbeats disabled");
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_CLS, RV_NSQ_STATE_INIT, false, &err),
                   RV_NSQ_REJECT);
  assert_string_equal(err.text, "E_INVALID cannot CLS in current state");
  assert_int_equal(rv_nsq_check_state(RV_NSQ_CMD_FIN, RV_NSQ_STATE_CLOSING, false, &err),
                   RV_NSQ_ALLOW);
}

static void test_error_codes(void **state) {
  (void)state;
  rv_nsq_error err;
  rv_nsq_error_set(&err, RV_NSQ_E_FIN_FAILED, "FIN %s failed %s", ID16, "ID not in flight");
  assert_string_equal(err.text, "E_FIN_FAILED FIN " ID16 " failed ID not in flight");
  assert_false(err.fatal);
  rv_nsq_error_set(&err, RV_NSQ_E_AUTH_DISABLED, "AUTH disabled");
  assert_true(err.fatal);
  rv_nsq_error_set(&err, RV_NSQ_E_BAD_PROTOCOL, NULL);
  assert_string_equal(err.text, "E_BAD_PROTOCOL");
  assert_false(rv_nsq_code_is_fatal(RV_NSQ_E_REQ_FAILED));
  assert_false(rv_nsq_code_is_fatal(RV_NSQ_E_TOUCH_FAILED));
  assert_true(rv_nsq_code_is_fatal(RV_NSQ_E_SUB_FAILED));
  assert_string_equal(rv_nsq_code_name(RV_NSQ_E_UNAUTHORIZED), "E_UNAUTHORIZED");
  const char *t = "E_AUTH_FIRST AUTH required before SUB";
  assert_int_equal(rv_nsq_code_parse((const uint8_t *)t, strlen(t)), RV_NSQ_E_AUTH_FIRST);
  assert_int_equal(rv_nsq_code_parse((const uint8_t *)"E_BAD_PROTOCOL", 14),
                   RV_NSQ_E_BAD_PROTOCOL);
  assert_int_equal(rv_nsq_code_parse((const uint8_t *)"E_INVALIDX", 10), RV_NSQ_OK);
}

/* ---- IDENTIFY ------------------------------------------------------------ */

/* Measured on the wire (reference §1.7). */
static const char *GO_NSQ_IDENTIFY =
    "{\"client_id\":\"vm\",\"deflate\":false,\"deflate_level\":6,\"feature_negotiation\":true,"
    "\"heartbeat_interval\":30000,\"hostname\":\"vm\",\"long_id\":\"vm\",\"msg_timeout\":0,"
    "\"output_buffer_size\":16384,\"output_buffer_timeout\":250,\"sample_rate\":0,"
    "\"short_id\":\"vm\",\"snappy\":false,\"tls_v1\":false,"
    "\"user_agent\":\"nsq_tail/1.3.0 go-nsq/1.1.0\"}";
static const char *NSQJS_IDENTIFY =
    "{\"client_id\":\"vm\",\"deflate\":false,\"deflate_level\":6,\"feature_negotiation\":true,"
    "\"heartbeat_interval\":30000,\"hostname\":\"vm\",\"long_id\":\"vm\",\"msg_timeout\":5000,"
    "\"short_id\":\"vm\",\"snappy\":false,\"tls_v1\":false,\"user_agent\":\"nsqjs/0.13.0\"}";

/* The JSON in an IDENTIFY reply frame, as a string. */
static const char *reply_json(const rv_nsq_client_cfg *cfg, const rv_nsq_identify *id,
                              const rv_nsq_opts *o) {
  static char out[1024];
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  assert_int_equal(rv_nsq_enc_identify_reply(&b, o, cfg, id), 0);
  assert_true(b.len >= 8);
  uint32_t size = ((uint32_t)b.data[0] << 24) | ((uint32_t)b.data[1] << 16) |
                  ((uint32_t)b.data[2] << 8) | b.data[3];
  assert_int_equal(size, b.len - 4);
  assert_memory_equal(b.data + 4, "\0\0\0\0", 4);
  memcpy(out, b.data + 8, b.len - 8);
  out[b.len - 8] = '\0';
  rv_nsq_buf_free(&b);
  return out;
}

static void test_identify_go_nsq(void **state) {
  (void)state;
  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "IDENTIFY\n", GO_NSQ_IDENTIFY);
  sb_str(&s, "SUB gomini tail180490#ephemeral\nRDY 1\n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT),
                      "IDENTIFY fn=1 hb=30000 mt=0 ua=nsq_tail/1.3.0 go-nsq/1.1.0"
                      "|SUB gomini tail180490#ephemeral|RDY 1");

  rv_nsq_opts o;
  rv_nsq_opts_init(&o);
  rv_nsq_identify id;
  rv_nsq_error err;
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)GO_NSQ_IDENTIFY,
                                         strlen(GO_NSQ_IDENTIFY), &o, &id, &err), 0);
  assert_string_equal(id.client_id, "vm");
  assert_string_equal(id.hostname, "vm");
  assert_int_equal(id.output_buffer_size_bytes, 16384);
  assert_int_equal(id.output_buffer_timeout_ms, 250);
  assert_int_equal(id.deflate_level, 6);
  assert_false(id.tls_v1 || id.snappy || id.deflate || id.timeout_notify || id.hold_slots);
  rv_nsq_client_cfg cfg;
  rv_nsq_client_cfg_init(&cfg, &o);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_string_equal(reply_json(&cfg, &id, &o),
                      "{\"max_rdy_count\":2500,\"version\":\"1.3.0\",\"max_msg_timeout\":900000,"
                      "\"msg_timeout\":60000,\"tls_v1\":false,\"deflate\":false,"
                      "\"deflate_level\":6,\"max_deflate_level\":6,\"snappy\":false,"
                      "\"sample_rate\":0,\"auth_required\":false,\"output_buffer_size\":16384,"
                      "\"output_buffer_timeout\":250}");
}

static void test_identify_nsqjs(void **state) {
  (void)state;
  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "IDENTIFY\n", NSQJS_IDENTIFY);
  sb_str(&s, "SUB jsmini c\nRDY 3\nRDY 3\nTOUCH " ID16 "\nFIN " ID16 "\nCLS\n");
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT),
                      "IDENTIFY fn=1 hb=30000 mt=5000 ua=nsqjs/0.13.0|SUB jsmini c|RDY 3|RDY 3"
                      "|TOUCH " ID16 "|FIN " ID16 "|CLS");
  rv_nsq_opts o;
  rv_nsq_opts_init(&o);
  rv_nsq_identify id;
  rv_nsq_error err;
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)NSQJS_IDENTIFY,
                                         strlen(NSQJS_IDENTIFY), &o, &id, &err), 0);
  rv_nsq_client_cfg cfg;
  rv_nsq_client_cfg_init(&cfg, &o);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_int_equal(cfg.msg_timeout_ms, 5000);
  assert_int_equal(cfg.heartbeat_interval_ms, 30000);
  assert_string_equal(reply_json(&cfg, &id, &o),
                      "{\"max_rdy_count\":2500,\"version\":\"1.3.0\",\"max_msg_timeout\":900000,"
                      "\"msg_timeout\":5000,\"tls_v1\":false,\"deflate\":false,"
                      "\"deflate_level\":6,\"max_deflate_level\":6,\"snappy\":false,"
                      "\"sample_rate\":0,\"auth_required\":false,\"output_buffer_size\":16384,"
                      "\"output_buffer_timeout\":250}");
}

static const char *identify_err(const char *json) {
  static rv_nsq_error err;
  rv_nsq_identify id;
  if (rv_nsq_identify_parse((const uint8_t *)json, strlen(json), NULL, &id, &err) == 0)
    return "ok";
  assert_true(err.fatal);
  assert_int_equal(err.code, RV_NSQ_E_BAD_BODY);
  return err.text;
}

static void test_identify_validation(void **state) {
  (void)state;
  const char *dec_fail = "E_BAD_BODY IDENTIFY failed to decode JSON body";
  assert_string_equal(identify_err("{\"msg_timeout\":10}"),
                      "E_BAD_BODY IDENTIFY msg timeout (10) is invalid");
  assert_string_equal(identify_err("{\"msg_timeout\":900001}"),
                      "E_BAD_BODY IDENTIFY msg timeout (900001) is invalid");
  assert_string_equal(identify_err("{\"msg_timeout\":-1}"),
                      "E_BAD_BODY IDENTIFY msg timeout (-1) is invalid");
  assert_string_equal(identify_err("{\"msg_timeout\":1000}"), "ok");
  assert_string_equal(identify_err("{\"heartbeat_interval\":999}"),
                      "E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid");
  assert_string_equal(identify_err("{\"heartbeat_interval\":60001}"),
                      "E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid");
  assert_string_equal(identify_err("{\"heartbeat_interval\":-2}"),
                      "E_BAD_BODY IDENTIFY heartbeat interval (-2) is invalid");
  assert_string_equal(identify_err("{\"output_buffer_timeout\":24}"),
                      "E_BAD_BODY IDENTIFY output buffer timeout (24) is invalid");
  assert_string_equal(identify_err("{\"output_buffer_timeout\":30001}"),
                      "E_BAD_BODY IDENTIFY output buffer timeout (30001) is invalid");
  assert_string_equal(identify_err("{\"output_buffer_size\":63}"),
                      "E_BAD_BODY IDENTIFY output buffer size (63) is invalid");
  assert_string_equal(identify_err("{\"output_buffer_size\":65537}"),
                      "E_BAD_BODY IDENTIFY output buffer size (65537) is invalid");
  assert_string_equal(identify_err("{\"sample_rate\":100}"),
                      "E_BAD_BODY IDENTIFY sample rate (100) is invalid");
  assert_string_equal(identify_err("{\"sample_rate\":-1}"),
                      "E_BAD_BODY IDENTIFY sample rate (-1) is invalid");
  /* nsqd's order: heartbeat, output timeout, output size, sample, msg timeout */
  assert_string_equal(identify_err("{\"msg_timeout\":1,\"sample_rate\":100,"
                                   "\"output_buffer_size\":1,\"output_buffer_timeout\":1}"),
                      "E_BAD_BODY IDENTIFY output buffer timeout (1) is invalid");
  /* Go's json.Unmarshal */
  assert_string_equal(identify_err("not json"), dec_fail);
  assert_string_equal(identify_err("{}trailing"), dec_fail);
  assert_string_equal(identify_err("[]"), dec_fail);
  assert_string_equal(identify_err("\"s\""), dec_fail);
  assert_string_equal(identify_err("null"), "ok");
  assert_string_equal(identify_err("{\"msg_timeout\":\"1000\"}"), dec_fail);
  assert_string_equal(identify_err("{\"msg_timeout\":1000.0}"), dec_fail);
  assert_string_equal(identify_err("{\"msg_timeout\":1e3}"), dec_fail);
  assert_string_equal(identify_err("{\"sample_rate\":4294967296}"), dec_fail);
  assert_string_equal(identify_err("{\"tls_v1\":1}"), dec_fail);
  assert_string_equal(identify_err("{\"client_id\":7}"), dec_fail);
  assert_string_equal(identify_err("{\"timeout_notify\":\"yes\"}"), dec_fail);
  assert_string_equal(identify_err("{\"msg_timeout\":null,\"client_id\":null}"), "ok");
  assert_string_equal(identify_err("{\"unknown\":[1,{\"a\":2}],\"short_id\":\"x\"}"), "ok");
  /* a type error is reported even when a valid key follows it */
  assert_string_equal(identify_err("{\"hostname\":false,\"msg_timeout\":1000}"), dec_fail);

  rv_nsq_identify id;
  rv_nsq_error err;
  const char *j = "{\"Client_ID\":\"a\",\"HOSTNAME\":\"h\",\"\xc5\xbf" "ample_rate\":5,"
                  "\"hostname\":\"h2\",\"client_id_\":\"z\"}";
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)j, strlen(j), NULL, &id, &err), 0);
  assert_string_equal(id.client_id, "a");
  assert_string_equal(id.hostname, "h2");
  assert_int_equal(id.sample_rate_pct, 5);

  /* long display strings are cut at a UTF-8 boundary */
  char big[1200] = "{\"user_agent\":\"";
  size_t n = strlen(big);
  for (int i = 0; i < 300; i++, n += 2) memcpy(big + n, "\xc3\xa9", 2);
  strcpy(big + n, "\"}");
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)big, strlen(big), NULL, &id, &err), 0);
  assert_int_equal(strlen(id.user_agent), 254);
}

static void test_identify_apply(void **state) {
  (void)state;
  rv_nsq_opts o;
  rv_nsq_opts_init(&o);
  rv_nsq_client_cfg cfg;
  rv_nsq_client_cfg_init(&cfg, &o);
  assert_int_equal(cfg.heartbeat_interval_ms, 30000);
  assert_int_equal(cfg.output_buffer_size_bytes, 16384);
  assert_int_equal(cfg.output_buffer_timeout_ms, 250);
  assert_int_equal(cfg.msg_timeout_ms, 60000);

  rv_nsq_identify id;
  rv_nsq_error err;
  const char *j = "{\"heartbeat_interval\":-1,\"output_buffer_size\":-1,"
                  "\"output_buffer_timeout\":100,\"msg_timeout\":2000,\"sample_rate\":10}";
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)j, strlen(j), &o, &id, &err), 0);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_int_equal(cfg.heartbeat_interval_ms, 0);
  assert_int_equal(cfg.output_buffer_size_bytes, 1);
  assert_int_equal(cfg.output_buffer_timeout_ms, 0);
  assert_int_equal(cfg.msg_timeout_ms, 2000);
  assert_int_equal(cfg.sample_rate_pct, 10);

  /* a second IDENTIFY with zeros keeps what the first set */
  rv_nsq_identify_init(&id);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_int_equal(cfg.msg_timeout_ms, 2000);
  assert_int_equal(cfg.output_buffer_size_bytes, 1);
  assert_int_equal(cfg.sample_rate_pct, 0);

  /* no feature negotiation: the reply is "OK" */
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  assert_int_equal(rv_nsq_enc_identify_reply(&b, &o, &cfg, &id), 0);
  assert_int_equal(b.len, 10);
  assert_memory_equal(b.data, "\0\0\0\6\0\0\0\0OK", 10);
  rv_nsq_buf_free(&b);
}

static void test_identify_extensions(void **state) {
  (void)state;
  rv_nsq_opts o;
  rv_nsq_opts_init(&o);
  rv_nsq_identify id;
  rv_nsq_error err;
  rv_nsq_client_cfg cfg;
  const char *tail = "\"auth_required\":false,\"output_buffer_size\":16384,"
                     "\"output_buffer_timeout\":250";
  char want[512];

  const char *j = "{\"feature_negotiation\":true,\"timeout_notify\":true,\"hold_slots\":true,"
                  "\"tls_v1\":true,\"snappy\":true,\"deflate\":true,\"deflate_level\":9}";
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)j, strlen(j), &o, &id, &err), 0);
  assert_true(id.timeout_notify && id.hold_slots);
  rv_nsq_client_cfg_init(&cfg, &o);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_true(cfg.timeout_notify && cfg.hold_slots);
  snprintf(want, sizeof(want),
           "{\"max_rdy_count\":2500,\"version\":\"1.3.0\",\"max_msg_timeout\":900000,"
           "\"msg_timeout\":60000,\"tls_v1\":false,\"deflate\":false,\"deflate_level\":6,"
           "\"max_deflate_level\":6,\"snappy\":false,\"sample_rate\":0,%s,"
           "\"timeout_notify\":true,\"hold_slots\":true}", tail);
  assert_string_equal(reply_json(&cfg, &id, &o), want);

  /* the server may refuse one; the key is still echoed, with false */
  o.allow_hold_slots = false;
  rv_nsq_client_cfg_init(&cfg, &o);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_true(cfg.timeout_notify);
  assert_false(cfg.hold_slots);
  snprintf(want, sizeof(want),
           "{\"max_rdy_count\":2500,\"version\":\"1.3.0\",\"max_msg_timeout\":900000,"
           "\"msg_timeout\":60000,\"tls_v1\":false,\"deflate\":false,\"deflate_level\":6,"
           "\"max_deflate_level\":6,\"snappy\":false,\"sample_rate\":0,%s,"
           "\"timeout_notify\":true,\"hold_slots\":false}", tail);
  assert_string_equal(reply_json(&cfg, &id, &o), want);

  /* only what was asked for is echoed; a smaller max deflate level caps the
   * reported level */
  o.allow_hold_slots = true;
  o.max_deflate_level = 4;
  j = "{\"feature_negotiation\":true,\"timeout_notify\":true}";
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)j, strlen(j), &o, &id, &err), 0);
  rv_nsq_client_cfg_init(&cfg, &o);
  rv_nsq_identify_apply(&cfg, &id, &o);
  snprintf(want, sizeof(want),
           "{\"max_rdy_count\":2500,\"version\":\"1.3.0\",\"max_msg_timeout\":900000,"
           "\"msg_timeout\":60000,\"tls_v1\":false,\"deflate\":false,\"deflate_level\":4,"
           "\"max_deflate_level\":4,\"snappy\":false,\"sample_rate\":0,%s,"
           "\"timeout_notify\":true}", tail);
  assert_string_equal(reply_json(&cfg, &id, &o), want);

  /* without feature negotiation nothing is granted: the client could not
   * have learnt that it was */
  j = "{\"timeout_notify\":true,\"hold_slots\":true}";
  assert_int_equal(rv_nsq_identify_parse((const uint8_t *)j, strlen(j), &o, &id, &err), 0);
  rv_nsq_client_cfg_init(&cfg, &o);
  rv_nsq_identify_apply(&cfg, &id, &o);
  assert_false(cfg.timeout_notify || cfg.hold_slots);
}

/* ---- server frames: exact bytes ------------------------------------------ */

static void test_server_frames(void **state) {
  (void)state;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  assert_int_equal(rv_nsq_enc_ok(&b), 0);
  assert_int_equal(rv_nsq_enc_heartbeat(&b), 0);
  assert_int_equal(rv_nsq_enc_close_wait(&b), 0);
  static const uint8_t want1[] = "\0\0\0\6\0\0\0\0OK"
                                 "\0\0\0\x0f\0\0\0\0_heartbeat_"
                                 "\0\0\0\x0e\0\0\0\0CLOSE_WAIT";
  assert_int_equal(b.len, sizeof(want1) - 1);
  assert_memory_equal(b.data, want1, b.len);

  b.len = 0;
  rv_nsq_error err;
  rv_nsq_error_set(&err, RV_NSQ_E_INVALID, "invalid command %s", "X");
  assert_int_equal(rv_nsq_enc_error(&b, &err), 0);
  static const uint8_t want2[] = "\0\0\0\x1f\0\0\0\1E_INVALID invalid command X";
  assert_int_equal(b.len, sizeof(want2) - 1);
  assert_memory_equal(b.data, want2, b.len);

  b.len = 0;
  assert_int_equal(rv_nsq_enc_message(&b, INT64_C(0x0102030405060708), 0x0a0b,
                                      (const uint8_t *)ID16, "body", 4), 0);
  static const uint8_t want3[] = "\0\0\0\x22\0\0\0\2"
                                 "\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b" ID16 "body";
  assert_int_equal(b.len, sizeof(want3) - 1);
  assert_memory_equal(b.data, want3, b.len);

  b.len = 0;
  assert_int_equal(rv_nsq_enc_timeout(&b, (const uint8_t *)ID16), 0);
  static const uint8_t want4[] = "\0\0\0\x14\0\0\0\3" ID16;
  assert_int_equal(b.len, sizeof(want4) - 1);
  assert_memory_equal(b.data, want4, b.len);
  rv_nsq_buf_free(&b);
}

static void test_buf_limit(void **state) {
  (void)state;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 16);
  assert_int_equal(rv_nsq_enc_ok(&b), 0);
  assert_int_equal(rv_nsq_enc_ok(&b), RV_ELIMIT);
  assert_int_equal(b.len, 10);
  assert_true(b.cap <= 16);
  rv_nsq_buf_consume(&b, 4);
  assert_int_equal(b.len, 6);
  assert_memory_equal(b.data, "\0\0\0\0OK", 6);
  rv_nsq_buf_consume(&b, 100);
  assert_int_equal(b.len, 0);
  rv_nsq_buf_free(&b);
}

/* ---- client commands: exact bytes and round trips ------------------------ */

static void test_client_commands_bytes(void **state) {
  (void)state;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  assert_int_equal(rv_nsq_enc_magic(&b), 0);
  assert_int_equal(rv_nsq_enc_sub(&b, "t", "c#ephemeral"), 0);
  assert_int_equal(rv_nsq_enc_rdy(&b, 3), 0);
  assert_int_equal(rv_nsq_enc_fin(&b, (const uint8_t *)ID16), 0);
  assert_int_equal(rv_nsq_enc_req(&b, (const uint8_t *)ID16, 250), 0);
  assert_int_equal(rv_nsq_enc_touch(&b, (const uint8_t *)ID16), 0);
  assert_int_equal(rv_nsq_enc_nop(&b), 0);
  assert_int_equal(rv_nsq_enc_cls(&b), 0);
  assert_int_equal(rv_nsq_enc_pub(&b, "t", "ab", 2), 0);
  assert_int_equal(rv_nsq_enc_dpub(&b, "t", 1000, "ab", 2), 0);
  rv_nsq_slice msgs[2] = {{(const uint8_t *)"x", 1}, {(const uint8_t *)"yz", 2}};
  assert_int_equal(rv_nsq_enc_mpub(&b, "t", msgs, 2), 0);
  assert_int_equal(rv_nsq_enc_auth(&b, "s", 1), 0);
  static const uint8_t want[] = "  V2SUB t c#ephemeral\nRDY 3\nFIN " ID16 "\nREQ " ID16
                                " 250\nTOUCH " ID16 "\nNOP\nCLS\n"
                                "PUB t\n\0\0\0\2ab"
                                "DPUB t 1000\n\0\0\0\2ab"
                                "MPUB t\n\0\0\0\x0f\0\0\0\2\0\0\0\1x\0\0\0\2yz"
                                "AUTH\n\0\0\0\1s";
  assert_int_equal(b.len, sizeof(want) - 1);
  assert_memory_equal(b.data, want, b.len);

  /* nothing that would desynchronise the stream is written */
  size_t before = b.len;
  assert_int_equal(rv_nsq_enc_sub(&b, "t c", "c"), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_pub(&b, "t\n", "x", 1), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_pub(&b, "t", "", 0), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_mpub(&b, "t", msgs, 0), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_rdy(&b, -1), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_req(&b, (const uint8_t *)ID16, -1), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_fin(&b, (const uint8_t *)"0123456789abcde\n"), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_req_attempt(&b, (const uint8_t *)ID16, -1, 2), RV_EINVAL);
  assert_int_equal(rv_nsq_enc_touch_attempt(&b, (const uint8_t *)"0123456789abcd f", 2),
                   RV_EINVAL);
  assert_int_equal(b.len, before);
  rv_nsq_buf_free(&b);
}

/* The attempt-qualified encoders: exact bytes, attempt 0 is nsqd's command,
 * and what they write decodes back to the same id, delay and attempt. */
static void test_client_attempt_commands(void **state) {
  (void)state;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  const uint8_t *id = (const uint8_t *)ID16;
  assert_int_equal(rv_nsq_enc_fin_attempt(&b, id, 2), 0);
  assert_int_equal(rv_nsq_enc_req_attempt(&b, id, 250, 3), 0);
  assert_int_equal(rv_nsq_enc_touch_attempt(&b, id, 65535), 0);
  assert_int_equal(rv_nsq_enc_fin_attempt(&b, id, 0), 0);
  assert_int_equal(rv_nsq_enc_req_attempt(&b, id, 0, 0), 0);
  assert_int_equal(rv_nsq_enc_touch_attempt(&b, id, 0), 0);
  static const char want[] = "FIN " ID16 " 2\nREQ " ID16 " 250 3\nTOUCH " ID16 " 65535\n"
                             "FIN " ID16 "\nREQ " ID16 " 0\nTOUCH " ID16 "\n";
  assert_int_equal(b.len, sizeof(want) - 1);
  assert_memory_equal(b.data, want, b.len);

  sb s = {.len = 0};
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_bytes(&s, b.data, b.len);
  assert_string_equal(drive(&s, RV_NSQ_STATE_SUBSCRIBED),
                      "FIN " ID16 " attempt=2|REQ " ID16 " 250 attempt=3|TOUCH " ID16
                      " attempt=65535|FIN " ID16 "|REQ " ID16 " 0|TOUCH " ID16);
  rv_nsq_buf_free(&b);
}

static void test_client_roundtrip(void **state) {
  (void)state;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  rv_nsq_identify id;
  rv_nsq_identify_init(&id);
  strcpy(id.client_id, "c1");
  strcpy(id.hostname, "h1");
  strcpy(id.user_agent, "ravel/0.1");
  id.feature_negotiation = true;
  id.heartbeat_interval_ms = 5000;
  id.msg_timeout_ms = 30000;
  id.timeout_notify = true;
  id.hold_slots = true;
  assert_int_equal(rv_nsq_enc_magic(&b), 0);
  assert_int_equal(rv_nsq_enc_identify(&b, &id), 0);
  /* the JSON body: go-nsq's sorted keys, extensions only when set */
  const char *json = "{\"client_id\":\"c1\",\"deflate\":false,\"deflate_level\":0,"
                     "\"feature_negotiation\":true,\"heartbeat_interval\":5000,"
                     "\"hold_slots\":true,\"hostname\":\"h1\",\"msg_timeout\":30000,"
                     "\"output_buffer_size\":0,\"output_buffer_timeout\":0,\"sample_rate\":0,"
                     "\"snappy\":false,\"timeout_notify\":true,\"tls_v1\":false,"
                     "\"user_agent\":\"ravel/0.1\"}";
  assert_int_equal(b.len, 4 + 9 + 4 + strlen(json));
  assert_memory_equal(b.data + 4 + 9 + 4, json, strlen(json));

  assert_int_equal(rv_nsq_enc_sub(&b, "topic", "chan"), 0);
  assert_int_equal(rv_nsq_enc_rdy(&b, 2500), 0);
  uint8_t mid[16];
  rv_nsq_id_format(UINT64_C(0x0123456789abcdef), mid);
  assert_int_equal(rv_nsq_enc_fin(&b, mid), 0);
  assert_int_equal(rv_nsq_enc_req(&b, mid, 5000), 0);
  assert_int_equal(rv_nsq_enc_touch(&b, mid), 0);
  assert_int_equal(rv_nsq_enc_cls(&b), 0);
  assert_int_equal(rv_nsq_enc_pub(&b, "topic", "one", 3), 0);
  assert_int_equal(rv_nsq_enc_dpub(&b, "topic", 3600000, "two", 3), 0);
  rv_nsq_slice msgs[3] = {{(const uint8_t *)"a", 1}, {(const uint8_t *)"bb", 2},
                          {(const uint8_t *)"ccc", 3}};
  assert_int_equal(rv_nsq_enc_mpub(&b, "topic", msgs, 3), 0);
  assert_int_equal(rv_nsq_enc_nop(&b), 0);
  sb s = {.len = 0};
  sb_bytes(&s, b.data, b.len);
  assert_string_equal(drive(&s, RV_NSQ_STATE_INIT),
                      "IDENTIFY fn=1 hb=5000 mt=30000 ua=ravel/0.1|SUB topic chan|RDY 2500"
                      "|FIN 0123456789abcdef|REQ 0123456789abcdef 5000|TOUCH 0123456789abcdef"
                      "|CLS|PUB topic one|DPUB topic 3600000 two|MPUB topic [a] [bb] [ccc]|NOP");
  rv_nsq_buf_free(&b);
}

/* ---- client frame decoder ------------------------------------------------ */

static void test_frame_decoder(void **state) {
  (void)state;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  uint8_t mid[16];
  rv_nsq_id_format(42, mid);
  rv_nsq_error err;
  rv_nsq_error_set(&err, RV_NSQ_E_FIN_FAILED, "FIN x failed ID not in flight");
  assert_int_equal(rv_nsq_enc_ok(&b), 0);
  assert_int_equal(rv_nsq_enc_message(&b, 1700000000000000000, 3, mid, "hello", 5), 0);
  assert_int_equal(rv_nsq_enc_error(&b, &err), 0);
  assert_int_equal(rv_nsq_enc_timeout(&b, mid), 0);
  assert_int_equal(rv_nsq_enc_heartbeat(&b), 0);
  assert_int_equal(rv_nsq_enc_frame(&b, 9, "", 0), 0);

  for (size_t chunk = 1; chunk <= b.len; chunk++) {
    rv_nsq_frame_decoder fd;
    rv_nsq_frame_decoder_init(&fd, 0);
    char got[512] = "";
    size_t pos = 0;
    while (pos < b.len) {
      size_t piece = b.len - pos < chunk ? b.len - pos : chunk;
      const uint8_t *p = b.data + pos;
      while (piece > 0) {
        rv_nsq_frame f;
        const char *why = NULL;
        size_t used;
        int rc = rv_nsq_frame_decode(&fd, p, piece, &used, &f, &why);
        assert_true(rc == 0 || rc == 1);
        p += used;
        pos += used;
        piece -= used;
        if (rc == 0) break;
        char line[128];
        if (f.type == RV_NSQ_FRAME_MESSAGE)
          snprintf(line, sizeof(line), "M%lld/%u/%.16s/%.*s;", (long long)f.ts_ns, f.attempts,
                   (const char *)f.id, (int)f.body.len, (const char *)f.body.ptr);
        else if (f.type == RV_NSQ_FRAME_TIMEOUT)
          snprintf(line, sizeof(line), "T%.16s;", (const char *)f.id);
        else
          snprintf(line, sizeof(line), "%d:%.*s;", f.type, (int)f.data.len,
                   (const char *)f.data.ptr);
        strcat(got, line);
      }
    }
    assert_string_equal(got, "0:OK;M1700000000000000000/3/000000000000002a/hello;"
                             "1:E_FIN_FAILED FIN x failed ID not in flight;"
                             "T000000000000002a;0:_heartbeat_;9:;");
    rv_nsq_frame_decoder_free(&fd);
  }
  rv_nsq_buf_free(&b);

  /* broken streams */
  struct {
    const char *in;
    size_t n;
  } bad[] = {
      {"\0\0\0\3", 4},
      {"\x7f\0\0\0", 4},
      {"\0\0\0\x0e\0\0\0\2shortmsg!!", 18},
      {"\0\0\0\x08\0\0\0\3abcd", 12},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    rv_nsq_frame_decoder fd;
    rv_nsq_frame_decoder_init(&fd, 0);
    rv_nsq_frame f;
    const char *why = NULL;
    size_t used;
    assert_int_equal(rv_nsq_frame_decode(&fd, (const uint8_t *)bad[i].in, bad[i].n, &used, &f,
                                         &why), RV_EPROTO);
    assert_non_null(why);
    rv_nsq_frame_decoder_free(&fd);
  }
}

/* ---- ids and names ------------------------------------------------------- */

static void test_ids_and_names(void **state) {
  (void)state;
  uint8_t id[16];
  uint64_t g;
  rv_nsq_id_format(UINT64_C(0x05d1a7c3b2e4f001), id);
  assert_memory_equal(id, "05d1a7c3b2e4f001", 16);
  assert_true(rv_nsq_id_parse(id, &g));
  assert_true(g == UINT64_C(0x05d1a7c3b2e4f001));
  rv_nsq_id_format(UINT64_MAX, id);
  assert_memory_equal(id, "ffffffffffffffff", 16);
  assert_true(rv_nsq_id_parse(id, &g) && g == UINT64_MAX);
  assert_false(rv_nsq_id_parse((const uint8_t *)"05D1A7C3B2E4F001", &g));
  assert_false(rv_nsq_id_parse((const uint8_t *)"05d1a7c3b2e4f00g", &g));

  assert_true(rv_nsq_valid_name("a", 1));
  assert_true(rv_nsq_valid_name("A.b_c-9", 7));
  assert_true(rv_nsq_valid_name("t#ephemeral", 11));
  assert_false(rv_nsq_valid_name("", 0));
  assert_false(rv_nsq_valid_name("#ephemeral", 10));
  assert_false(rv_nsq_valid_name("a#ephemeral#ephemeral", 21));
  assert_false(rv_nsq_valid_name("a#b", 3));
  assert_false(rv_nsq_valid_name("a b", 3));
  char n64[65];
  memset(n64, 'x', 64);
  assert_true(rv_nsq_valid_name(n64, 64));
  memcpy(n64 + 54, "#ephemeral", 10);
  assert_true(rv_nsq_valid_name(n64, 64));
  char n65[66];
  memset(n65, 'x', 65);
  assert_false(rv_nsq_valid_name(n65, 65));
}

/* ---- chunking over one long mixed stream --------------------------------- */

static void test_chunking_everything(void **state) {
  (void)state;
  static sb s;
  s.len = 0;
  sb_str(&s, RV_NSQ_MAGIC_V2);
  sb_body_cmd(&s, "IDENTIFY\n", NSQJS_IDENTIFY);
  sb_body_cmd(&s, "PUB t\n", "hello world");
  sb_str(&s, "MPUB t\n");
  sb_be32(&s, 4 + 3 * 7);
  sb_be32(&s, 3);
  for (int i = 0; i < 3; i++) {
    sb_be32(&s, 3);
    sb_str(&s, "abc");
  }
  sb_body_cmd(&s, "DPUB t 10\n", "d");
  sb_str(&s, "SUB t c\r\nRDY 10\nFIN " ID16 "\nREQ " ID16 " 5\nTOUCH " ID16 "\nNOP\nCLS\n");
  sb_str(&s, "RDY 1\nFIN bad\n");
  drive_into(&g_trace, s.data, s.len, 0, RV_NSQ_STATE_INIT, NULL);
  assert_string_equal(g_trace.text,
                      "IDENTIFY fn=1 hb=30000 mt=5000 ua=nsqjs/0.13.0|PUB t hello world"
                      "|MPUB t [abc] [abc] [abc]|DPUB t 10 d|SUB t c|RDY 10|FIN " ID16
                      "|REQ " ID16 " 5|TOUCH " ID16 "|NOP|CLS|RDY ignored"
                      "|ERR E_INVALID invalid message ID");
  for (long chunk = 1; chunk <= 64; chunk++) {
    drive_into(&g_trace2, s.data, s.len, chunk, RV_NSQ_STATE_INIT, NULL);
    assert_string_equal(g_trace.text, g_trace2.text);
    drive_into(&g_trace2, s.data, s.len, -chunk, RV_NSQ_STATE_INIT, NULL);
    assert_string_equal(g_trace.text, g_trace2.text);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_magic),
      cmocka_unit_test(test_every_command),
      cmocka_unit_test(test_pipelined_sub_rdy),
      cmocka_unit_test(test_zero_copy_and_gather),
      cmocka_unit_test(test_line_errors),
      cmocka_unit_test(test_attempt_argument),
      cmocka_unit_test(test_heartbeats_disabled_sub),
      cmocka_unit_test(test_go_quoting),
      cmocka_unit_test(test_line_too_long),
      cmocka_unit_test(test_body_size_errors),
      cmocka_unit_test(test_oversized_not_buffered),
      cmocka_unit_test(test_mpub),
      cmocka_unit_test(test_eof),
      cmocka_unit_test(test_check_state),
      cmocka_unit_test(test_error_codes),
      cmocka_unit_test(test_identify_go_nsq),
      cmocka_unit_test(test_identify_nsqjs),
      cmocka_unit_test(test_identify_validation),
      cmocka_unit_test(test_identify_apply),
      cmocka_unit_test(test_identify_extensions),
      cmocka_unit_test(test_server_frames),
      cmocka_unit_test(test_buf_limit),
      cmocka_unit_test(test_client_commands_bytes),
      cmocka_unit_test(test_client_attempt_commands),
      cmocka_unit_test(test_client_roundtrip),
      cmocka_unit_test(test_frame_decoder),
      cmocka_unit_test(test_ids_and_names),
      cmocka_unit_test(test_chunking_everything),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
