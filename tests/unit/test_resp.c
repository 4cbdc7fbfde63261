/*
 * test_resp: the RESP2 parser and encoder (src/proto/resp.c).
 *
 * Most parser tests go through run(): it feeds an input in chunks of a given
 * size, copying the unconsumed bytes into a fresh, exactly sized allocation
 * before every call (so AddressSanitizer catches any read past the end and
 * any pointer kept across calls), and records the commands and the final
 * state as one string.  Feeding whole, byte by byte and in odd chunk sizes
 * must give the same string.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/resp.h"

#define TRANSCRIPT_MAX (256 * 1024)

typedef struct run_result {
  char text[TRANSCRIPT_MAX]; /* "[argc|len:bytes|...]" per command, then "AGAIN n" or "ERROR msg" */
  size_t len;
  size_t ncmds;
} run_result;

static void emit(run_result *r, const void *p, size_t n) {
  assert_true(r->len + n < sizeof r->text);
  memcpy(r->text + r->len, p, n);
  r->len += n;
  r->text[r->len] = '\0';
}

static void emitf(run_result *r, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  emit(r, tmp, (size_t)n);
}

/* Feed in[0..len) in chunks of `chunk` bytes (0: all at once). */
static void run(const rv_resp_opts *opts, const char *in, size_t len, size_t chunk,
                run_result *r) {
  rv_resp_parser p;
  assert_int_equal(rv_resp_parser_init(&p, opts), 0);
  memset(r, 0, sizeof *r);
  char *pending = NULL; /* unconsumed bytes, owned here */
  size_t plen = 0, fed = 0;
  int rc = RV_RESP_AGAIN;
  if (chunk == 0) chunk = len ? len : 1;
  while (fed < len && rc != RV_RESP_ERROR) {
    size_t take = len - fed < chunk ? len - fed : chunk;
    char *grown = malloc(plen + take ? plen + take : 1);
    assert_non_null(grown);
    if (plen) memcpy(grown, pending, plen);
    memcpy(grown + plen, in + fed, take);
    free(pending);
    pending = grown;
    plen += take;
    fed += take;
    for (;;) {
      /* A fresh, exactly sized copy: the parser may keep no pointers. */
      char *view = malloc(plen ? plen : 1);
      assert_non_null(view);
      if (plen) memcpy(view, pending, plen);
      size_t consumed = 99999;
      rv_resp_cmd cmd;
      rc = rv_resp_parse(&p, view, plen, &consumed, &cmd);
      if (rc == RV_RESP_CMD) {
        emitf(r, "[%zu", cmd.argc);
        for (size_t i = 0; i < cmd.argc; i++) {
          assert_true(cmd.argv[i].ptr != NULL || cmd.argv[i].len == 0);
          emitf(r, "|%zu:", cmd.argv[i].len);
          emit(r, cmd.argv[i].ptr, cmd.argv[i].len);
        }
        emit(r, "]", 1);
        r->ncmds++;
      }
      free(view);
      if (rc == RV_RESP_ERROR) {
        assert_int_equal(consumed, 0);
        break;
      }
      assert_true(consumed <= plen);
      memmove(pending, pending + consumed, plen - consumed);
      plen -= consumed;
      if (rc == RV_RESP_AGAIN) break;
    }
  }
  if (rc == RV_RESP_ERROR) {
    emitf(r, "ERROR %s", rv_resp_parser_error(&p));
    /* Sticky: the parser stays failed. */
    size_t consumed = 1;
    rv_resp_cmd cmd;
    assert_int_equal(rv_resp_parse(&p, "PING\r\n", 6, &consumed, &cmd), RV_RESP_ERROR);
    assert_int_equal(consumed, 0);
  } else {
    assert_null(rv_resp_parser_error(&p));
    emitf(r, "AGAIN %zu", plen);
  }
  free(pending);
  rv_resp_parser_free(&p);
}

/*
 * Run in every interesting chunking and demand one transcript; returns it in
 * *r.  This is how every parser test checks byte-at-a-time feeding.
 */
static void run_all(const rv_resp_opts *opts, const char *in, size_t len, run_result *r) {
  static run_result other;
  run(opts, in, len, 0, r);
  const size_t chunks[] = {1, 2, 3, 7, 64};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    run(opts, in, len, chunks[i], &other);
    if (strcmp(other.text, r->text) != 0)
      fail_msg("chunk %zu gives\n  %s\nwhole gives\n  %s", chunks[i], other.text, r->text);
  }
}

static void expect(const rv_resp_opts *opts, const char *in, size_t len, const char *want) {
  static run_result r;
  run_all(opts, in, len, &r);
  if (strcmp(r.text, want) != 0) fail_msg("input gave\n  %s\nwanted\n  %s", r.text, want);
}

#define EXPECT(in, want) expect(NULL, (in), sizeof(in) - 1, (want))
#define EXPECT_OPTS(o, in, want) expect((o), (in), sizeof(in) - 1, (want))

/* ---- requests that parse -------------------------------------------------- */

static void test_multibulk_basic(void **state) {
  (void)state;
  EXPECT("*1\r\n$4\r\nPING\r\n", "[1|4:PING]AGAIN 0");
  EXPECT("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n", "[3|3:SET|1:k|5:hello]AGAIN 0");
  EXPECT("*2\r\n$3\r\nGET\r\n$0\r\n\r\n", "[2|3:GET|0:]AGAIN 0");
}

static void test_binary_bulk(void **state) {
  (void)state;
  static const char in[] = "*2\r\n$4\r\nECHO\r\n$6\r\na\r\n\0\nb\r\n";
  static run_result r;
  run_all(NULL, in, sizeof in - 1, &r);
  static const char want[] = "[2|4:ECHO|6:a\r\n\0\nb]AGAIN 0";
  assert_int_equal(r.len, sizeof want - 1);
  assert_memory_equal(r.text, want, sizeof want - 1);
}

static void test_partial_stays_pending(void **state) {
  (void)state;
  EXPECT("*2\r\n$3\r\nGET\r\n$1\r\n", "AGAIN 17");
  EXPECT("*2\r\n$3\r\nGET", "AGAIN 11");
  EXPECT("*1\r", "AGAIN 3");
  EXPECT("PING", "AGAIN 4");
  EXPECT("PING\r", "AGAIN 5");
}

static void test_pipeline(void **state) {
  (void)state;
  EXPECT("*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nECHO  x\n*1\r\n$4\r\nPI",
         "[1|4:PING][1|4:PING][2|4:ECHO|2:hi][2|4:ECHO|1:x]AGAIN 10");
}

static void test_empty_requests_skipped(void **state) {
  (void)state;
  EXPECT("*0\r\n*-1\r\n*-7\r\n\r\n   \r\n\n\t\r\nPING\r\n", "[1|4:PING]AGAIN 0");
  EXPECT("*0\r\n\r\n", "AGAIN 0");

  /* Skipped requests are reported as consumed even when nothing follows. */
  rv_resp_parser p;
  assert_int_equal(rv_resp_parser_init(&p, NULL), 0);
  size_t consumed = 0;
  rv_resp_cmd cmd;
  assert_int_equal(rv_resp_parse(&p, "*0\r\n\r\n*1", 9, &consumed, &cmd), RV_RESP_AGAIN);
  assert_int_equal(consumed, 6);
  rv_resp_parser_free(&p);
}

/* The parser must accept the caller moving its bytes between calls. */
static void test_buffer_moves_between_calls(void **state) {
  (void)state;
  rv_resp_parser p;
  assert_int_equal(rv_resp_parser_init(&p, NULL), 0);
  char a[64] = "*2\r\n$3\r\nGET\r\n$5\r\nhe";
  char b[64];
  size_t consumed;
  rv_resp_cmd cmd;
  assert_int_equal(rv_resp_parse(&p, a, strlen(a), &consumed, &cmd), RV_RESP_AGAIN);
  assert_int_equal(consumed, 0);
  /* Move to another buffer, append the rest, scribble over the old one. */
  size_t alen = strlen(a);
  memcpy(b, a, alen);
  memcpy(b + alen, "llo\r\n", 6);
  memset(a, 'X', sizeof a);
  assert_int_equal(rv_resp_parse(&p, b, strlen(b), &consumed, &cmd), RV_RESP_CMD);
  assert_int_equal(consumed, strlen(b));
  assert_int_equal(cmd.argc, 2);
  assert_false(cmd.is_inline);
  assert_ptr_equal(cmd.argv[1].ptr, b + 17);
  assert_memory_equal(cmd.argv[1].ptr, "hello", 5);
  rv_resp_parser_free(&p);
}

/* A caller that hands back fewer bytes than before gets an error, not UB. */
static void test_contract_violation(void **state) {
  (void)state;
  rv_resp_parser p;
  assert_int_equal(rv_resp_parser_init(&p, NULL), 0);
  size_t consumed;
  rv_resp_cmd cmd;
  const char *in = "*1\r\n$10\r\nabcdef";
  assert_int_equal(rv_resp_parse(&p, in, strlen(in), &consumed, &cmd), RV_RESP_AGAIN);
  assert_int_equal(rv_resp_parse(&p, in, 4, &consumed, &cmd), RV_RESP_ERROR);
  assert_non_null(strstr(rv_resp_parser_error(&p), "internal error"));
  rv_resp_parser_free(&p);
}

static void test_need_hint(void **state) {
  (void)state;
  rv_resp_parser p;
  assert_int_equal(rv_resp_parser_init(&p, NULL), 0);
  size_t consumed;
  rv_resp_cmd cmd;
  const char *in = "*1\r\n$10\r\nab";
  assert_int_equal(rv_resp_parse(&p, in, strlen(in), &consumed, &cmd), RV_RESP_AGAIN);
  assert_int_equal(rv_resp_parser_need(&p), 4 + 5 + 10 + 2);
  rv_resp_parser_reset(&p);
  assert_int_equal(rv_resp_parse(&p, "PIN", 3, &consumed, &cmd), RV_RESP_AGAIN);
  assert_true(rv_resp_parser_need(&p) > 3);
  rv_resp_parser_free(&p);
}

/* ---- inline requests ---------------------------------------------------------- */

static void test_inline_plain(void **state) {
  (void)state;
  EXPECT("PING\r\n", "[1|4:PING]AGAIN 0");
  EXPECT("PING\n", "[1|4:PING]AGAIN 0");
  EXPECT("  SET   k\tv  \r\n", "[3|3:SET|1:k|1:v]AGAIN 0");
  /* \v and \f are blanks between arguments but part of an unquoted one. */
  EXPECT("\v\fA\vB C\n", "[2|3:A\vB|1:C]AGAIN 0");
  /* A '\r' inside the line separates arguments; only one before '\n' is dropped. */
  EXPECT("A\rB\r\r\n", "[2|1:A|1:B]AGAIN 0");
}

static void test_inline_quoting(void **state) {
  (void)state;
  EXPECT("SET \"a b\" 'c d'\r\n", "[3|3:SET|3:a b|3:c d]AGAIN 0");
  EXPECT("X \"\\x41\\x4a\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n",
         "[2|1:X|10:AJ\n\r\t\b\a\\\"q]AGAIN 0");
  /* Not a hex escape: "\x" then non-hex is an escaped 'x'. */
  EXPECT("X \"\\xZZ\" \"\\x4\"\n", "[3|1:X|3:xZZ|2:x4]AGAIN 0");
  /* Single quotes: only \' is an escape. */
  EXPECT("X 'it\\'s \\n'\n", "[2|1:X|7:it's \\n]AGAIN 0");
  EXPECT("X \"\" ''\n", "[3|1:X|0:|0:]AGAIN 0");
  /* Quotes in the middle of a token open a quoted part, as in Redis. */
  EXPECT("ab\"c d\"\n", "[1|5:abc d]AGAIN 0");
  /* A closing quote may be followed by a blank or the end of the line. */
  EXPECT("X \"a\"\tY\n", "[3|1:X|1:a|1:Y]AGAIN 0");
}

static void test_inline_nul_ends_line(void **state) {
  (void)state;
  static const char in[] = "SET k\0v w\r\nPING\r\n";
  static run_result r;
  run_all(NULL, in, sizeof in - 1, &r);
  assert_string_equal(r.text, "[2|3:SET|1:k][1|4:PING]AGAIN 0");
}

static void test_inline_unbalanced(void **state) {
  (void)state;
  EXPECT("SET \"a b\r\n", "ERROR ERR Protocol error: unbalanced quotes in request");
  EXPECT("SET 'a b\r\n", "ERROR ERR Protocol error: unbalanced quotes in request");
  EXPECT("SET \"a\"b\r\n", "ERROR ERR Protocol error: unbalanced quotes in request");
  EXPECT("SET 'a'b\r\n", "ERROR ERR Protocol error: unbalanced quotes in request");
  EXPECT("SET \"a\\\"\r\n", "ERROR ERR Protocol error: unbalanced quotes in request");
  /* Commands before the bad line are still delivered. */
  EXPECT("PING\r\nX \"\r\n", "[1|4:PING]ERROR ERR Protocol error: unbalanced quotes in request");
}

/* ---- every error path ------------------------------------------------------------ */

static void test_multibulk_errors(void **state) {
  (void)state;
  EXPECT("*abc\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*01\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*+1\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*-0\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*1 \r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*3000000000\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*99999999999999999999\r\n", "ERROR ERR Protocol error: invalid multibulk length");
  EXPECT("*1\r\nx3\r\n", "ERROR ERR Protocol error: expected '$', got 'x'");
  EXPECT("*2\r\n$1\r\na\r\n:1\r\n", "ERROR ERR Protocol error: expected '$', got ':'");
  static const char nul[] = "*1\r\n\0";
  static run_result r;
  run_all(NULL, nul, sizeof nul - 1, &r);
  assert_string_equal(r.text, "ERROR ERR Protocol error: expected '$', got '\\x00'");
}

static void test_bulk_errors(void **state) {
  (void)state;
  const char *bad[] = {"x", "", "-1", "-0", "01", "04", "+4", " 4", "4 ", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char in[64];
    int n = snprintf(in, sizeof in, "*1\r\n$%s\r\nPING\r\n", bad[i]);
    expect(NULL, in, (size_t)n, "ERROR ERR Protocol error: invalid bulk length");
  }
  EXPECT("*1\r\n$4\r\nPINGxx", "ERROR ERR Protocol error: bulk data of 4 bytes not followed by CRLF");
  EXPECT("*1\r\n$4\r\nPING\rx", "ERROR ERR Protocol error: bulk data of 4 bytes not followed by CRLF");
  EXPECT("*1\rx", "ERROR ERR Protocol error: header line not terminated by CRLF, got 'x' after CR");
  EXPECT("*1\r\n$4\r\r",
         "ERROR ERR Protocol error: header line not terminated by CRLF, got '\\x0d' after CR");
}

static void test_limit_inline_length(void **state) {
  (void)state;
  size_t max = RV_RESP_MAX_INLINE_BYTES_DEFAULT;
  char *in = malloc(max + 16);
  assert_non_null(in);
  /* Exactly max bytes before '\n' (the '\r' included) is accepted. */
  memset(in, 'a', max);
  in[max - 1] = '\r';
  in[max] = '\n';
  static run_result r;
  run(NULL, in, max + 1, 0, &r);
  assert_int_equal(r.ncmds, 1);
  run(NULL, in, max + 1, 4096, &r);
  assert_int_equal(r.ncmds, 1);
  /* One more byte is too big, however it arrives.  (Chunk sizes are coarse
   * here: the harness copies the pending bytes on every call, so byte-sized
   * chunks of 64 KiB would be quadratic; small inputs cover byte feeding.) */
  memset(in, 'a', max + 1);
  in[max + 1] = '\n';
  const size_t chunks[] = {0, 4093, 65535, 65536, 65537};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    run(NULL, in, max + 2, chunks[i], &r);
    assert_string_equal(r.text, "ERROR ERR Protocol error: too big inline request");
  }
  run(NULL, in, max + 1, 0, &r); /* the '\n' has not arrived yet */
  assert_string_equal(r.text, "ERROR ERR Protocol error: too big inline request");
  run(NULL, in, max, 0, &r); /* not yet decided */
  assert_string_equal(r.text, "AGAIN 65536");
  free(in);
}

static void test_limit_header_lines(void **state) {
  (void)state;
  rv_resp_opts o;
  rv_resp_opts_default(&o);
  o.max_inline_bytes = 64;
  char in[256];
  memset(in, '1', sizeof in);
  in[0] = '*';
  expect(&o, in, 100, "ERROR ERR Protocol error: too big mbulk count string");
  memcpy(in, "*1\r\n$", 5);
  expect(&o, in, 100, "ERROR ERR Protocol error: too big bulk count string");
  /* A long line that does end in time is just an invalid number. */
  memset(in, '1', sizeof in);
  in[0] = '*';
  memcpy(in + 64, "\r\n", 2);
  expect(&o, in, 66, "ERROR ERR Protocol error: invalid multibulk length");
}

static void test_limit_args(void **state) {
  (void)state;
  rv_resp_opts o;
  rv_resp_opts_default(&o);
  o.max_args = 3;
  EXPECT_OPTS(&o, "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", "[3|1:a|1:b|1:c]AGAIN 0");
  EXPECT_OPTS(&o, "*4\r\n",
              "ERROR ERR Protocol error: invalid multibulk length 4: the limit is 3 arguments "
              "(max_args)");
  EXPECT_OPTS(&o, "a b c\r\n", "[3|1:a|1:b|1:c]AGAIN 0");
  EXPECT_OPTS(&o, "a b c d\r\n",
              "ERROR ERR Protocol error: too many arguments in inline request: the limit is 3 "
              "(max_args)");

  /* Many arguments with the default limit: argv grows as they arrive. */
  static char big[4096 * 8 + 64];
  size_t n = (size_t)snprintf(big, sizeof big, "*%d\r\n", RV_RESP_MAX_ARGS_DEFAULT);
  for (int i = 0; i < RV_RESP_MAX_ARGS_DEFAULT; i++) {
    memcpy(big + n, "$1\r\nx\r\n", 7);
    n += 7;
  }
  static run_result r;
  run(NULL, big, n, 0, &r);
  assert_int_equal(r.ncmds, 1);
  run(NULL, big, n, 13, &r);
  assert_int_equal(r.ncmds, 1);
}

static void test_limit_bulk_and_request(void **state) {
  (void)state;
  rv_resp_opts o;
  rv_resp_opts_default(&o);
  o.max_bulk_bytes = 5;
  EXPECT_OPTS(&o, "*1\r\n$5\r\nhello\r\n", "[1|5:hello]AGAIN 0");
  EXPECT_OPTS(&o, "*1\r\n$6\r\n",
              "ERROR ERR Protocol error: invalid bulk length 6: the limit is 5 bytes "
              "(max_bulk_bytes)");

  rv_resp_opts_default(&o);
  o.max_inline_bytes = 32;
  o.max_request_bytes = 40;
  /* 4 + 5 + 10 + 2 = 21: fits.  4 + 6 + 30 + 2 = 42: the header says too big. */
  EXPECT_OPTS(&o, "*1\r\n$10\r\n0123456789\r\n", "[1|10:0123456789]AGAIN 0");
  EXPECT_OPTS(&o, "*1\r\n$30\r\n",
              "ERROR ERR Protocol error: too big request: the limit is 40 bytes "
              "(max_request_bytes)");
  /* Small arguments add up: the third one (bytes 32..) fits with 1 byte of
   * data, not with 10, and its header line may not run past byte 38. */
  EXPECT_OPTS(&o, "*9\r\n$8\r\n01234567\r\n$8\r\n01234567\r\n$1\r\nx\r\n", "AGAIN 39");
  EXPECT_OPTS(&o, "*9\r\n$8\r\n01234567\r\n$8\r\n01234567\r\n$10\r\n",
              "ERROR ERR Protocol error: too big request: the limit is 40 bytes "
              "(max_request_bytes)");
  EXPECT_OPTS(&o, "*9\r\n$8\r\n01234567\r\n$8\r\n01234567\r\n$12345",
              "AGAIN 38");
  EXPECT_OPTS(&o, "*9\r\n$8\r\n01234567\r\n$8\r\n01234567\r\n$123456",
              "ERROR ERR Protocol error: too big request: the limit is 40 bytes "
              "(max_request_bytes)");
}

static void test_error_is_sticky_until_reset(void **state) {
  (void)state;
  rv_resp_parser p;
  assert_int_equal(rv_resp_parser_init(&p, NULL), 0);
  size_t consumed;
  rv_resp_cmd cmd;
  assert_int_equal(rv_resp_parse(&p, "*x\r\n", 4, &consumed, &cmd), RV_RESP_ERROR);
  assert_string_equal(rv_resp_parser_error(&p), "ERR Protocol error: invalid multibulk length");
  assert_int_equal(rv_resp_parse(&p, "PING\r\n", 6, &consumed, &cmd), RV_RESP_ERROR);
  rv_resp_parser_reset(&p);
  assert_null(rv_resp_parser_error(&p));
  assert_int_equal(rv_resp_parse(&p, "PING\r\n", 6, &consumed, &cmd), RV_RESP_CMD);
  assert_int_equal(consumed, 6);
  assert_true(cmd.is_inline);
  rv_resp_parser_free(&p);
}

static void test_bad_options(void **state) {
  (void)state;
  rv_resp_parser p;
  rv_resp_opts o;
  rv_resp_opts_default(&o);
  o.max_args = 0;
  assert_int_equal(rv_resp_parser_init(&p, &o), -1);
  assert_non_null(strstr(rv_resp_parser_error(&p), "max_args"));
  rv_resp_opts_default(&o);
  o.max_inline_bytes = 4;
  assert_int_equal(rv_resp_parser_init(&p, &o), -1);
  rv_resp_opts_default(&o);
  o.max_request_bytes = o.max_inline_bytes;
  assert_int_equal(rv_resp_parser_init(&p, &o), -1);
  rv_resp_opts_default(&o);
  o.max_bulk_bytes = (size_t)RV_RESP_MAX_BULK_BYTES_LIMIT + 1;
  assert_int_equal(rv_resp_parser_init(&p, &o), -1);
  rv_resp_parser_free(&p);
}

/* ---- helpers ------------------------------------------------------------------ */

static void test_parse_i64(void **state) {
  (void)state;
  int64_t v = 7;
  assert_int_equal(rv_resp_parse_i64("0", 1, &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(rv_resp_parse_i64("-42", 3, &v), 0);
  assert_int_equal(v, -42);
  assert_int_equal(rv_resp_parse_i64("9223372036854775807", 19, &v), 0);
  assert_int_equal(v, INT64_MAX);
  assert_int_equal(rv_resp_parse_i64("-9223372036854775808", 20, &v), 0);
  assert_true(v == INT64_MIN);
  const char *bad[] = {"", "-", "-0", "00", "01", "+1", "1a", " 1", "9223372036854775808",
                       "-9223372036854775809", "18446744073709551616"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(rv_resp_parse_i64(bad[i], strlen(bad[i]), &v), -1);
}

static void test_arg_is(void **state) {
  (void)state;
  rv_resp_arg a = {"lOcK", 4};
  assert_true(rv_resp_arg_is(&a, "LOCK"));
  assert_true(rv_resp_arg_is(&a, "lock"));
  assert_false(rv_resp_arg_is(&a, "LOCKS"));
  assert_false(rv_resp_arg_is(&a, "LOC"));
}

/* ---- encoder ---------------------------------------------------------------- */

static void out_is(const rv_resp_out *o, const char *want) {
  if (o->len != strlen(want) || memcmp(o->buf, want, o->len) != 0)
    fail_msg("encoded %.*s, wanted %s", (int)o->len, o->buf, want);
}

static void test_encoder_bytes(void **state) {
  (void)state;
  rv_resp_out o;
  rv_resp_out_init(&o, 0);
  assert_int_equal(rv_resp_out_simple(&o, "OK"), 0);
  assert_int_equal(rv_resp_out_error(&o, "ERR bad\r\nthing"), 0);
  assert_int_equal(rv_resp_out_errorf(&o, "STALE token %d", 7), 0);
  assert_int_equal(rv_resp_out_int(&o, 0), 0);
  assert_int_equal(rv_resp_out_int(&o, -12), 0);
  assert_int_equal(rv_resp_out_int(&o, INT64_MIN), 0);
  assert_int_equal(rv_resp_out_bulk(&o, "a\r\n\0b", 5), 0);
  assert_int_equal(rv_resp_out_bulk(&o, NULL, 0), 0);
  assert_int_equal(rv_resp_out_bulk_cstr(&o, "hi"), 0);
  assert_int_equal(rv_resp_out_null(&o), 0);
  assert_int_equal(rv_resp_out_null_array(&o), 0);
  assert_int_equal(rv_resp_out_array(&o, 2), 0);
  assert_int_equal(rv_resp_out_simple(&o, "a\nb"), 0);
  static const char want[] = "+OK\r\n-ERR bad  thing\r\n-STALE token 7\r\n:0\r\n:-12\r\n"
                             ":-9223372036854775808\r\n$5\r\na\r\n\0b\r\n$0\r\n\r\n$2\r\nhi\r\n"
                             "$-1\r\n*-1\r\n*2\r\n+a b\r\n";
  assert_int_equal(o.len, sizeof want - 1);
  assert_memory_equal(o.buf, want, sizeof want - 1);
  assert_false(o.overflow);
  rv_resp_out_consume(&o, 5);
  assert_memory_equal(o.buf, "-ERR bad", 8);
  rv_resp_out_consume(&o, o.len + 10);
  assert_int_equal(o.len, 0);
  rv_resp_out_free(&o);
}

static void test_encoder_overflow(void **state) {
  (void)state;
  rv_resp_out o;
  rv_resp_out_init(&o, 16);
  assert_int_equal(rv_resp_out_array(&o, 1), 0);          /* 4 bytes */
  assert_int_equal(rv_resp_out_bulk(&o, "abcd", 4), 0);   /* 10 bytes: 14 */
  assert_int_equal(rv_resp_out_bulk(&o, "x", 1), RV_RESP_OUT_EFULL);
  assert_true(o.overflow);
  out_is(&o, "*1\r\n$4\r\nabcd\r\n"); /* nothing half-written */
  assert_int_equal(rv_resp_out_int(&o, 5), RV_RESP_OUT_EFULL);
  assert_int_equal(rv_resp_out_simple(&o, "O"), RV_RESP_OUT_EFULL); /* 14 + 4 > 16 */
  rv_resp_out_rewind(&o, 0);
  assert_false(o.overflow);
  assert_int_equal(o.len, 0);
  assert_int_equal(rv_resp_out_error(&o, "ERR too long"), RV_RESP_OUT_OK);
  out_is(&o, "-ERR too long\r\n");
  assert_int_equal(rv_resp_out_bulk(&o, "0123456789abcdefg", 17), RV_RESP_OUT_EFULL);
  rv_resp_out_free(&o);

  /* Growth from the first allocation past several doublings. */
  rv_resp_out_init(&o, 0);
  static char blob[100000];
  memset(blob, 'z', sizeof blob);
  assert_int_equal(rv_resp_out_bulk(&o, blob, sizeof blob), 0);
  assert_int_equal(o.len, sizeof blob + 11); /* "$100000\r\n" + data + CRLF */
  rv_resp_out_free(&o);
}

/* The cap is inclusive: an item that ends exactly at max_bytes fits. */
static void test_encoder_exact_cap(void **state) {
  (void)state;
  rv_resp_out o;
  rv_resp_out_init(&o, 8);
  assert_int_equal(rv_resp_out_simple(&o, "ABC"), 0); /* 6 */
  assert_int_equal(rv_resp_out_simple(&o, ""), RV_RESP_OUT_EFULL); /* 3 more = 9 */
  assert_int_equal(rv_resp_out_int(&o, 1), RV_RESP_OUT_EFULL);     /* 4 more = 10 */
  rv_resp_out_rewind(&o, 6);
  assert_int_equal(o.len, 6);
  rv_resp_out_free(&o);
  rv_resp_out_init(&o, 9);
  assert_int_equal(rv_resp_out_simple(&o, "ABC"), 0);
  assert_int_equal(rv_resp_out_simple(&o, ""), 0); /* exactly 9 */
  out_is(&o, "+ABC\r\n+\r\n");
  rv_resp_out_free(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_multibulk_basic),
      cmocka_unit_test(test_binary_bulk),
      cmocka_unit_test(test_partial_stays_pending),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_empty_requests_skipped),
      cmocka_unit_test(test_buffer_moves_between_calls),
      cmocka_unit_test(test_need_hint),
      cmocka_unit_test(test_contract_violation),
      cmocka_unit_test(test_inline_plain),
      cmocka_unit_test(test_inline_quoting),
      cmocka_unit_test(test_inline_nul_ends_line),
      cmocka_unit_test(test_inline_unbalanced),
      cmocka_unit_test(test_multibulk_errors),
      cmocka_unit_test(test_bulk_errors),
      cmocka_unit_test(test_limit_inline_length),
      cmocka_unit_test(test_limit_header_lines),
      cmocka_unit_test(test_limit_args),
      cmocka_unit_test(test_limit_bulk_and_request),
      cmocka_unit_test(test_error_is_sticky_until_reset),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_parse_i64),
      cmocka_unit_test(test_arg_is),
      cmocka_unit_test(test_encoder_bytes),
      cmocka_unit_test(test_encoder_overflow),
      cmocka_unit_test(test_encoder_exact_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
