/*
 * Tests of structured logging: exact logfmt lines (after the timestamp),
 * quoting and escaping, the printf walker, levels, truncation, timestamps,
 * and whole lines from several threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <wchar.h>

#include <cmocka.h>

#include "obs/log.h"
#include "rt/rt.h"

/* "ts=" + "2026-11-27T08:50:00.123Z" */
#define TS_FIELD_LEN (3 + 24)

typedef struct fixture {
  int rd, wr; /* a pipe: the logger writes, the test reads */
  rv_log *log;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  int fds[2];
  if (!f || pipe(fds) != 0) return -1;
  f->rd = fds[0];
  f->wr = fds[1];
  fcntl(f->rd, F_SETFL, O_NONBLOCK); /* a missing line reads as empty, not a hang */
  f->log = rv_log_new(f->wr, RV_LOG_DEBUG, "queue");
  *state = f;
  return f->log ? 0 : -1;
}

static int teardown(void **state) {
  fixture *f = *state;
  rv_log_free(f->log);
  close(f->rd);
  close(f->wr);
  free(f);
  return 0;
}

/* Everything written so far ("" if nothing). */
static char *drain(fixture *f) {
  static char buf[4 * RV_LOG_LINE_MAX];
  size_t len = 0;
  ssize_t n;
  while (len < sizeof buf - 1 && (n = read(f->rd, buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
  return buf;
}

/* Check the timestamp's shape and return the line after it. */
static const char *after_ts(const char *line) {
  assert_memory_equal(line, "ts=", 3);
  const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
  for (size_t i = 0; shape[i]; i++) {
    char c = line[3 + i];
    if (shape[i] == 'd')
      assert_true(c >= '0' && c <= '9');
    else
      assert_int_equal(c, shape[i]);
  }
  return line + TS_FIELD_LEN;
}

static void assert_line(fixture *f, const char *want_after_ts) {
  assert_string_equal(after_ts(drain(f)), want_after_ts);
}

/* A string of size - 1 copies of c, for the length limits. */
static char *fill(char *buf, size_t size, char c) {
  memset(buf, c, size - 1);
  buf[size - 1] = '\0';
  return buf;
}

static void test_basic_line(void **state) {
  fixture *f = *state;
  rv_log_warn(f->log, "lease expired", "topic=%s attempts=%d", "orders", 3);
  assert_line(f, " level=warn comp=queue msg=\"lease expired\" topic=orders attempts=3\n");
  rv_log_info(f->log, "started");
  assert_line(f, " level=info comp=queue msg=\"started\"\n");
  rv_log_write(f->log, RV_LOG_ERROR, "disk full", "free_bytes=%d", 0);
  assert_line(f, " level=error comp=queue msg=\"disk full\" free_bytes=0\n");
}

static void test_quoting(void **state) {
  fixture *f = *state;
  rv_log_info(f->log, "m", "a=%s b=%s c=%s d=%s e=%s g=%s h=%s", "x y", "say \"hi\"", "k=v", "",
              "l1\nl2\t\x01\r\x7f", "c:\\dir", "c:\\my dir");
  assert_line(f, " level=info comp=queue msg=\"m\" a=\"x y\" b=\"say \\\"hi\\\"\" c=\"k=v\" d=\"\" "
                 "e=\"l1\\nl2\\t\\u0001\\r\\u007f\" g=c:\\dir h=\"c:\\\\my dir\"\n");
  rv_log_info(f->log, "say \"no\"\nnow", "utf8=%s", "caf\xc3\xa9");
  assert_line(f, " level=info comp=queue msg=\"say \\\"no\\\"\\nnow\" utf8=caf\xc3\xa9\n");
  /* The component is a value too. */
  rv_log *odd = rv_log_new(f->wr, RV_LOG_INFO, "my comp");
  rv_log_info(odd, "x");
  assert_line(f, " level=info comp=\"my comp\" msg=\"x\"\n");
  rv_log_free(odd);
}

static void test_conversions(void **state) {
  fixture *f = *state;
  const char *volatile null_string = NULL; /* hidden from the compiler's format check */
  rv_log_info(f->log, "m",
              "n=%d u=%u l=%ld ll=%lld z=%zu zd=%zd x=%#x f=%.2f w=%*d s=%.*s c=%c pct=%d%% "
              "g=%g hh=%hhd j=%jd L=%.1Lf e=%-4s| p=%s",
              -5, 7u, -8L, 9LL, (size_t)10, (ssize_t)-11, 255, 3.14159, 4, 42, 3, "abcdef", 'Z',
              50, 1e300, (signed char)-3, (intmax_t)-12, (long double)2.5, "ab", null_string);
  assert_line(f, " level=info comp=queue msg=\"m\" n=-5 u=7 l=-8 ll=9 z=10 zd=-11 x=0xff f=3.14 "
                 "w=\"  42\" s=abc c=Z pct=50% g=1e+300 hh=-3 j=-12 L=2.5 e=\"ab  |\" p=(null)\n");
  /* Star widths and precisions as printf reads them: negative width pads left. */
  rv_log_info(f->log, "m", "a=%*d| b=%.*s c=%.*f", -3, 7, -1, "whole", 2, 0.125);
  assert_line(f, " level=info comp=queue msg=\"m\" a=\"7  |\" b=whole c=0.12\n");
  /* Several conversions and literal text make one value; fields need no key. */
  rv_log_info(f->log, "m", "addr=%s:%d %s plain", "127.0.0.1", 7400, "bare");
  assert_line(f, " level=info comp=queue msg=\"m\" addr=127.0.0.1:7400 _=bare _=plain\n");
  /* Extra spaces between fields are ignored; an empty key becomes _. */
  rv_log_info(f->log, "m", "  a=1   =2 ");
  assert_line(f, " level=info comp=queue msg=\"m\" a=1 _=2\n");
}

static void test_unsupported_conversion(void **state) {
  fixture *f = *state;
  rv_log_info(f->log, "m", "a=%d b=%ls c=%d", 1, L"wide", 2);
  assert_line(f, " level=info comp=queue msg=\"m\" a=1 badfmt=true\n");
}

static void test_levels(void **state) {
  fixture *f = *state;
  rv_log_set_level(f->log, RV_LOG_WARN);
  assert_int_equal(rv_log_get_level(f->log), RV_LOG_WARN);
  assert_false(rv_log_enabled(f->log, RV_LOG_INFO));
  assert_true(rv_log_enabled(f->log, RV_LOG_ERROR));
  rv_log_info(f->log, "hidden");
  rv_log_debug(f->log, "hidden");
  assert_string_equal(drain(f), "");
  rv_log_set_level(f->log, RV_LOG_DEBUG);
  rv_log_debug(f->log, "shown", "k=%d", 1);
  assert_line(f, " level=debug comp=queue msg=\"shown\" k=1\n");
  rv_log_set_level(f->log, (enum rv_log_level)42); /* ignored */
  assert_int_equal(rv_log_get_level(f->log), RV_LOG_DEBUG);

  enum rv_log_level lv = RV_LOG_INFO;
  assert_int_equal(rv_log_level_parse("DEBUG", &lv), RV_OK);
  assert_int_equal(lv, RV_LOG_DEBUG);
  assert_int_equal(rv_log_level_parse("Warning", &lv), RV_OK);
  assert_int_equal(lv, RV_LOG_WARN);
  assert_int_equal(rv_log_level_parse("warn", &lv), RV_OK);
  assert_int_equal(rv_log_level_parse("error", &lv), RV_OK);
  assert_int_equal(lv, RV_LOG_ERROR);
  assert_int_equal(rv_log_level_parse("verbose", &lv), RV_EINVAL);
  assert_int_equal(rv_log_level_parse(NULL, &lv), RV_EINVAL);
  assert_int_equal(lv, RV_LOG_ERROR);
  assert_string_equal(rv_log_level_name(RV_LOG_INFO), "info");
  assert_string_equal(rv_log_level_name((enum rv_log_level)9), "unknown");

  assert_null(rv_log_new(-1, RV_LOG_INFO, "x"));
  assert_null(rv_log_new(f->wr, (enum rv_log_level)7, "x"));
  rv_log_error(NULL, "nowhere", "k=%d", 1); /* a NULL logger is silent */
  errno = 42;
  rv_log_info(f->log, "errno kept");
  assert_int_equal(errno, 42);
  drain(f);
}

static void test_long_component(void **state) {
  fixture *f = *state;
  char comp[RV_LOG_COMPONENT_MAX + 10];
  fill(comp, sizeof comp, 'c');
  rv_log *l = rv_log_new(f->wr, RV_LOG_INFO, comp);
  rv_log_info(l, "x");
  char want[128];
  snprintf(want, sizeof want, " level=info comp=%.*s msg=\"x\"\n", RV_LOG_COMPONENT_MAX, comp);
  assert_line(f, want);
  rv_log_free(l);
}

static void test_truncation_unquoted(void **state) {
  fixture *f = *state;
  char big[RV_LOG_LINE_MAX + 100];
  fill(big, sizeof big, 'x');
  rv_log_info(f->log, "m", "a=1 big=%s after=2", big);
  const char *line = drain(f);
  size_t len = strlen(line);
  assert_int_equal(len, RV_LOG_LINE_MAX);
  const char *end = " truncated=true\n";
  assert_string_equal(line + len - strlen(end), end);
  assert_non_null(strstr(line, " msg=\"m\" a=1 big=xxxx"));
  assert_null(strstr(line, "after="));
}

static void test_truncation_quoted_utf8(void **state) {
  fixture *f = *state;
  /* "a b" then 3000 two-byte characters: the cut must fall between characters. */
  char big[3 + 2 * 3000 + 1];
  memcpy(big, "a b", 3);
  for (size_t i = 0; i < 3000; i++) memcpy(big + 3 + 2 * i, "\xc3\xa9", 2);
  big[sizeof big - 1] = '\0';
  rv_log_info(f->log, big, "never=%d", 1);
  const char *line = drain(f);
  size_t len = strlen(line);
  assert_true(len <= RV_LOG_LINE_MAX);
  const char *end = "\" truncated=true\n"; /* the quote is closed */
  assert_string_equal(line + len - strlen(end), end);
  const char *start = strstr(line, " msg=\"a b");
  assert_non_null(start);
  size_t utf8_bytes = (size_t)(line + len - strlen(end) - (start + strlen(" msg=\"a b")));
  assert_int_equal(utf8_bytes % 2, 0);
  assert_null(strstr(line, "never="));

  /* An escape sequence is never split either: fill with quotes (2 bytes each escaped). */
  char quotes[RV_LOG_LINE_MAX];
  fill(quotes, sizeof quotes, '"');
  rv_log_info(f->log, "m", "q=%s", quotes);
  line = drain(f);
  len = strlen(line);
  assert_true(len <= RV_LOG_LINE_MAX);
  assert_string_equal(line + len - strlen(end), end);
  start = strstr(line, " q=\"") + 4;
  size_t body = (size_t)(line + len - strlen(end) - start);
  assert_int_equal(body % 2, 0);
}

static void test_timestamp(void **state) {
  char ts[RV_LOG_TS_MAX];
  rv_log_format_ts(ts, 0);
  assert_string_equal(ts, "1970-01-01T00:00:00.000Z");
  rv_log_format_ts(ts, INT64_C(1795769400123456789));
  assert_string_equal(ts, "2026-11-27T08:50:00.123Z");
  rv_log_format_ts(ts, -1);
  assert_string_equal(ts, "1969-12-31T23:59:59.999Z");
  rv_log_format_ts(ts, INT64_C(951782400999999999)); /* a leap day */
  assert_string_equal(ts, "2000-02-29T00:00:00.999Z");
}

/* ---- whole lines across threads ---------------------------------------------- */

#define THREADS 4
#define LINES_PER_THREAD 200
#define PAYLOAD_BYTES 1500

typedef struct writer_arg {
  rv_log *log;
  int id;
} writer_arg;

static void writer(void *p) {
  writer_arg *a = p;
  char payload[PAYLOAD_BYTES + 1];
  fill(payload, sizeof payload, (char)('a' + a->id));
  for (int i = 0; i < LINES_PER_THREAD; i++)
    rv_log_info(a->log, "tick", "writer=%d seq=%d payload=%s", a->id, i, payload);
}

static void test_lines_stay_whole(void **state) {
  char path[] = "/tmp/ravel-test-log-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  assert_int_equal(fcntl(fd, F_SETFL, O_APPEND), 0);
  rv_log *log = rv_log_new(fd, RV_LOG_INFO, "multi");
  writer_arg args[THREADS];
  rv_thread *t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (writer_arg){.log = log, .id = i};
    assert_int_equal(rv_thread_start(&t[i], "log-writer", "test", writer, &args[i]), RV_OK);
  }
  for (int i = 0; i < THREADS; i++) assert_int_equal(rv_thread_join(t[i]), RV_OK);
  rv_log_free(log);

  off_t size = lseek(fd, 0, SEEK_END);
  assert_true(size > 0);
  char *text = malloc((size_t)size + 1);
  assert_int_equal(pread(fd, text, (size_t)size, 0), size);
  text[size] = '\0';
  close(fd);

  int seen[THREADS] = {0};
  size_t lines = 0;
  for (char *line = text, *nl; *line; line = nl + 1) {
    nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    int id = -1, seq = -1, used = 0;
    const char *rest = after_ts(line);
    assert_int_equal(sscanf(rest, " level=info comp=multi msg=\"tick\" writer=%d seq=%d payload=%n",
                            &id, &seq, &used),
                     2);
    assert_true(id >= 0 && id < THREADS);
    assert_int_equal(seq, seen[id]++); /* each writer's lines in order, none lost */
    assert_int_equal(strlen(rest + used), PAYLOAD_BYTES);
    assert_int_equal(strspn(rest + used, (char[]){(char)('a' + id), 0}), PAYLOAD_BYTES);
    lines++;
  }
  assert_int_equal(lines, THREADS * LINES_PER_THREAD);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_basic_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_quoting, setup, teardown),
      cmocka_unit_test_setup_teardown(test_conversions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unsupported_conversion, setup, teardown),
      cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_component, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncation_unquoted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncation_quoted_utf8, setup, teardown),
      cmocka_unit_test(test_timestamp),
      cmocka_unit_test(test_lines_stay_whole),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
