/*
 * The server loop over a real socket: framing, pipelining, pause/resume,
 * large output to a slow reader, timers that never fire early, wake-ups and
 * stop from other threads.
 */
#include "support.h"

#include "server/loop.h"

#include <string.h>

typedef struct echo_srv {
  rv_loop *loop;
  uint16_t port;
  int opened, closed;
  rv_timer *timer;
  int64_t timer_deadline, timer_fired_at;
  rv_wakeup *wake;
  int wakes;
  rv_sconn *last;
} echo_srv;

typedef struct echo_conn {
  echo_srv *srv;
  rv_sconn *c;
} echo_conn;

static void *e_open(void *server, rv_sconn *c) {
  echo_srv *s = server;
  echo_conn *e = calloc(1, sizeof *e);
  e->srv = s;
  e->c = c;
  s->opened++;
  s->last = c;
  return e;
}

/* One command per line: "echo X" replies "X\n"; "big N" replies N bytes; "pause" pauses. */
static size_t e_data(void *conn, const char *buf, size_t len) {
  echo_conn *e = conn;
  size_t used = 0;
  for (;;) {
    const char *nl = memchr(buf + used, '\n', len - used);
    if (!nl)
      break;
    size_t n = (size_t)(nl - (buf + used));
    const char *line = buf + used;
    used += n + 1;
    if (n >= 5 && memcmp(line, "echo ", 5) == 0) {
      rv_sconn_write(e->c, line + 5, n - 5);
      rv_sconn_write(e->c, "\n", 1);
    } else if (n >= 4 && memcmp(line, "big ", 4) == 0) {
      size_t want = strtoul(line + 4, NULL, 10);
      char chunk[4096];
      memset(chunk, 'x', sizeof chunk);
      while (want) {
        size_t k = want < sizeof chunk ? want : sizeof chunk;
        rv_sconn_write(e->c, chunk, k);
        want -= k;
      }
    } else if (n == 5 && memcmp(line, "pause", 5) == 0) {
      rv_sconn_pause(e->c);
      return used; /* stop here; the rest waits for resume */
    } else if (n == 4 && memcmp(line, "quit", 4) == 0) {
      rv_sconn_write(e->c, "bye\n", 4);
      rv_sconn_close(e->c);
      return used;
    }
  }
  return used;
}

static void e_close(void *conn) {
  echo_conn *e = conn;
  e->srv->closed++;
  free(e);
}

static const rv_sconn_handler echo_handler = {e_open, e_data, e_close, NULL};

static void timer_cb(void *arg) {
  echo_srv *s = arg;
  s->timer_fired_at = rv_now_ns();
}

static void wake_cb(void *arg) {
  echo_srv *s = arg;
  s->wakes++;
  if (s->last)
    rv_sconn_resume(s->last);
}

static void loop_thread(void *arg) {
  echo_srv *s = arg;
  rv_loop_run(s->loop);
}

static bool read_line(rv_conn *c, char *out, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    char ch;
    if (rv_conn_read_full(c, &ch, 1, NULL) != RV_OK)
      return false;
    if (ch == '\n')
      break;
    out[n++] = ch;
  }
  out[n] = 0;
  return true;
}

static void test_loop_end_to_end(void **state) {
  echo_srv s = {0};
  assert_int_equal(rv_loop_new(&s.loop, NULL), RV_OK);
  assert_int_equal(rv_loop_listen(s.loop, "127.0.0.1", 0, &echo_handler, &s, &s.port), RV_OK);
  s.timer = rv_timer_new(s.loop, timer_cb, &s);
  s.wake = rv_wakeup_new(s.loop, wake_cb, &s);
  /* A deadline 30 ms ahead: the callback must not run before it. */
  s.timer_deadline = rv_now_ns() + 30 * RV_NS_PER_MS;
  rv_timer_set(s.timer, s.timer_deadline);
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "loop", "server", loop_thread, &s), RV_OK);

  rv_conn *c;
  assert_int_equal(rv_tcp_connect(&c, "127.0.0.1", s.port, NULL), RV_OK);
  /* Pipelined, and split mid-line. */
  const char *part1 = "echo one\necho tw";
  const char *part2 = "o\necho three\n";
  assert_int_equal(rv_conn_write_all(c, part1, strlen(part1), NULL), RV_OK);
  assert_int_equal(rv_conn_write_all(c, part2, strlen(part2), NULL), RV_OK);
  char line[128];
  assert_true(read_line(c, line, sizeof line));
  assert_string_equal(line, "one");
  assert_true(read_line(c, line, sizeof line));
  assert_string_equal(line, "two");
  assert_true(read_line(c, line, sizeof line));
  assert_string_equal(line, "three");

  /* Pause holds later commands until a wake-up resumes the connection. */
  const char *paused = "pause\necho after\n";
  assert_int_equal(rv_conn_write_all(c, paused, strlen(paused), NULL), RV_OK);
  rv_conn_set_read_deadline(c, rv_now_ns() + 50 * RV_NS_PER_MS);
  char ch;
  assert_int_equal(rv_conn_read(c, &ch, 1, NULL), RV_ETIMEDOUT); /* nothing while paused */
  rv_conn_set_read_deadline(c, RV_NO_DEADLINE);
  rv_wakeup_send(s.wake);
  assert_true(read_line(c, line, sizeof line));
  assert_string_equal(line, "after");

  /* 20 MB of output to a reader: everything arrives, in order and whole. */
  const char *big = "big 20000000\necho end\n";
  assert_int_equal(rv_conn_write_all(c, big, strlen(big), NULL), RV_OK);
  static char sink[1 << 16];
  size_t got = 0;
  while (got < 20000000) {
    size_t want = 20000000 - got < sizeof sink ? 20000000 - got : sizeof sink;
    ssize_t n = rv_conn_read(c, sink, want, NULL);
    assert_true(n > 0);
    for (ssize_t i = 0; i < n; i++)
      assert_int_equal(sink[i], 'x');
    got += (size_t)n;
  }
  assert_true(read_line(c, line, sizeof line));
  assert_string_equal(line, "end");

  /* The server closes after flushing its reply. */
  assert_int_equal(rv_conn_write_all(c, "quit\n", 5, NULL), RV_OK);
  assert_true(read_line(c, line, sizeof line));
  assert_string_equal(line, "bye");
  assert_int_equal(rv_conn_read(c, &ch, 1, NULL), 0);
  rv_conn_close(c);

  rv_loop_stop(s.loop);
  rv_thread_join(t);
  assert_true(s.timer_fired_at >= s.timer_deadline);
  assert_int_equal(s.opened, 1);
  assert_int_equal(s.closed, 1);
  assert_true(s.wakes >= 1);
  rv_timer_free(s.timer);
  rv_wakeup_free(s.wake);
  rv_loop_free(s.loop);
}

/* A peer that disconnects with open connections: on_close runs for each at stop. */
static void test_loop_stop_closes_connections(void **state) {
  echo_srv s = {0};
  assert_int_equal(rv_loop_new(&s.loop, NULL), RV_OK);
  assert_int_equal(rv_loop_listen(s.loop, "127.0.0.1", 0, &echo_handler, &s, &s.port), RV_OK);
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "loop", "server", loop_thread, &s), RV_OK);
  rv_conn *c1, *c2;
  assert_int_equal(rv_tcp_connect(&c1, "127.0.0.1", s.port, NULL), RV_OK);
  assert_int_equal(rv_tcp_connect(&c2, "127.0.0.1", s.port, NULL), RV_OK);
  char line[16];
  assert_int_equal(rv_conn_write_all(c1, "echo a\n", 7, NULL), RV_OK);
  assert_true(read_line(c1, line, sizeof line));
  assert_int_equal(rv_conn_write_all(c2, "echo b\n", 7, NULL), RV_OK);
  assert_true(read_line(c2, line, sizeof line));
  rv_loop_stop(s.loop);
  rv_thread_join(t);
  assert_int_equal(s.opened, 2);
  assert_int_equal(s.closed, 2);
  char ch;
  assert_int_equal(rv_conn_read(c1, &ch, 1, NULL), 0);
  rv_conn_close(c1);
  rv_conn_close(c2);
  rv_loop_free(s.loop);
}

int main(void) {
  rv_thread_adopt("main", "test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loop_end_to_end),
      cmocka_unit_test(test_loop_stop_closes_connections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
