#define _GNU_SOURCE
/*
 * ravel queue over a real socket, with the NSQ wire protocol: publish and
 * consume, channels and shared consumers, timeouts and redelivery, the
 * timeout notification and held-slot extensions, requeue on disconnect,
 * deferred messages, errors with NSQ's fatal/non-fatal split, and durability
 * across a restart.
 */
#include "nsq_client.h"

#include "server/queue.h"

#include <stdlib.h>
#include <string.h>

typedef struct server {
  rv_qsrv *q;
  rv_log *log;
  rv_thread *thread;
  char dir[64];
  uint16_t port, http;
} server;

static void serve(void *arg) { rv_qsrv_run(((server *)arg)->q); }

static void server_start_opts(server *s, bool sync_none) {
  if (!s->dir[0]) {
    snprintf(s->dir, sizeof s->dir, "/tmp/ravel-queue-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
  }
  s->log = rv_log_new(2, RV_LOG_WARN, "queue");
  rv_qsrv_opts o = {.port_any = true, .data_dir = s->dir, .log = s->log, .sync_none = sync_none};
  char why[256];
  int rc = rv_qsrv_start(&s->q, &o, why, sizeof why);
  if (rc != RV_OK)
    fail_msg("queue did not start: %s", why);
  s->port = rv_qsrv_tcp_port(s->q);
  s->http = rv_qsrv_http_port(s->q);
  assert_int_equal(rv_thread_start(&s->thread, "queue-loop", "server", serve, s), RV_OK);
}

static void server_start(server *s) { server_start_opts(s, false); }

static void server_stop(server *s) {
  rv_qsrv_stop(s->q);
  rv_thread_join(s->thread);
  rv_qsrv_free(s->q);
  rv_log_free(s->log);
}

static void server_cleanup(server *s) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
  assert_int_equal(system(cmd), 0);
}

#define FAST_TIMEOUT "{\"feature_negotiation\":true,\"msg_timeout\":1000,\"heartbeat_interval\":30000}"

static void expect_message(nsqc *n, nsqf *f, const char *body, int attempts) {
  assert_int_equal(nsqc_next(n, f, RVT_BOUND_NS), RV_OK);
  assert_int_equal(f->type, RV_NSQ_FRAME_MESSAGE);
  assert_int_equal(f->body_len, strlen(body));
  assert_memory_equal(f->body, body, f->body_len);
  assert_int_equal(f->attempts, attempts);
}

static void fin(nsqc *n, const uint8_t id[16]) {
  rv_nsq_enc_fin(&n->out, id);
  assert_int_equal(nsqc_send(n), RV_OK);
}

static void test_publish_consume_channels(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, a, b;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  assert_int_equal(nsqc_open(&a, s.port, "{}"), RV_OK);
  assert_int_equal(nsqc_open(&b, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&a, "orders", "billing", 10));
  assert_true(nsqc_sub(&b, "orders", "audit", 10));
  assert_true(nsqc_pub(&p, "orders", "hello"));
  /* MPUB: three in one batch. */
  rv_nsq_slice m[3] = {{(const uint8_t *)"m1", 2}, {(const uint8_t *)"m2", 2}, {(const uint8_t *)"m3", 2}};
  rv_nsq_enc_mpub(&p.out, "orders", m, 3);
  assert_int_equal(nsqc_send(&p), RV_OK);
  assert_true(nsqc_expect(&p, "OK"));
  /* Each channel gets its own copy of every message, with the same id. */
  nsqf fa, fb;
  const char *bodies[] = {"hello", "m1", "m2", "m3"};
  for (int i = 0; i < 4; i++) {
    expect_message(&a, &fa, bodies[i], 1);
    expect_message(&b, &fb, bodies[i], 1);
    assert_memory_equal(fa.id, fb.id, 16);
    fin(&a, fa.id);
    fin(&b, fb.id);
  }
  /* A FIN for an id that is not in flight: non-fatal error, connection stays. */
  fin(&a, fa.id);
  nsqf e;
  assert_int_equal(nsqc_next(&a, &e, RVT_BOUND_NS), RV_OK);
  assert_int_equal(e.type, RV_NSQ_FRAME_ERROR);
  assert_non_null(strstr(e.text, "E_FIN_FAILED"));
  assert_non_null(strstr(e.text, "not in flight"));
  assert_true(nsqc_pub(&p, "orders", "after-error"));
  expect_message(&a, &fa, "after-error", 1);
  nsqc_close(&p);
  nsqc_close(&a);
  nsqc_close(&b);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_timeout_redelivery_and_notification(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, c;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  assert_int_equal(nsqc_open(&c, s.port,
                             "{\"feature_negotiation\":true,\"msg_timeout\":1000,"
                             "\"timeout_notify\":true}"),
                   RV_OK);
  assert_true(nsqc_sub(&c, "jobs", "workers", 1));
  assert_true(nsqc_pub(&p, "jobs", "slow"));
  nsqf f1, n, f2;
  expect_message(&c, &f1, "slow", 1);
  int64_t delivered = rv_now_ns();
  /* Not FIN'd: after msg_timeout the server says so, then redelivers (same id, attempts 2). */
  assert_int_equal(nsqc_next(&c, &n, RVT_BOUND_NS), RV_OK);
  assert_int_equal(n.type, RV_NSQ_FRAME_TIMEOUT);
  assert_memory_equal(n.id, f1.id, 16);
  assert_true(rv_now_ns() - delivered >= 1000 * RV_NS_PER_MS - 50 * RV_NS_PER_MS);
  expect_message(&c, &f2, "slow", 2);
  assert_memory_equal(f2.id, f1.id, 16);
  fin(&c, f2.id);
  nsqc_close(&p);
  nsqc_close(&c);
  server_stop(&s);
  server_cleanup(&s);
}

/*
 * Held slots: with RDY 1 and hold_slots, a consumer whose message timed out
 * gets nothing more until it answers for that id; without, it is sent the
 * next message at once (nsqd's behaviour, the incident's creep).
 */
static void test_held_slots(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, held, plain;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  assert_int_equal(nsqc_open(&held, s.port,
                             "{\"feature_negotiation\":true,\"msg_timeout\":1000,"
                             "\"hold_slots\":true,\"timeout_notify\":true}"),
                   RV_OK);
  assert_true(nsqc_sub(&held, "h", "c", 1));
  assert_true(nsqc_pub(&p, "h", "first"));
  nsqf f, t;
  expect_message(&held, &f, "first", 1);
  assert_true(nsqc_pub(&p, "h", "second"));
  assert_int_equal(nsqc_next(&held, &t, RVT_BOUND_NS), RV_OK);
  assert_int_equal(t.type, RV_NSQ_FRAME_TIMEOUT);
  /* The slot is still held: neither the redelivery nor "second" is sent to it. */
  nsqf none;
  assert_int_equal(nsqc_read(&held, &none, 300 * RV_NS_PER_MS), RV_ETIMEDOUT);
  /* A second consumer (plain, nsqd semantics) takes the redelivery and the next message. */
  assert_int_equal(nsqc_open(&plain, s.port, FAST_TIMEOUT), RV_OK);
  assert_true(nsqc_sub(&plain, "h", "c", 5));
  nsqf g1, g2;
  assert_int_equal(nsqc_next(&plain, &g1, RVT_BOUND_NS), RV_OK);
  assert_int_equal(nsqc_next(&plain, &g2, RVT_BOUND_NS), RV_OK);
  assert_int_equal(g1.type, RV_NSQ_FRAME_MESSAGE);
  assert_int_equal(g2.type, RV_NSQ_FRAME_MESSAGE);
  fin(&plain, g1.id);
  fin(&plain, g2.id);
  nsqc_close(&plain);
  /* The late FIN of the timed-out id gets nsqd's error, and releases the slot. */
  fin(&held, f.id);
  nsqf e;
  assert_int_equal(nsqc_next(&held, &e, RVT_BOUND_NS), RV_OK);
  assert_int_equal(e.type, RV_NSQ_FRAME_ERROR);
  assert_non_null(strstr(e.text, "E_FIN_FAILED"));
  assert_true(nsqc_pub(&p, "h", "third"));
  /* With its slot back, the held consumer is sent work again. */
  nsqf third;
  assert_int_equal(nsqc_next(&held, &third, RVT_BOUND_NS), RV_OK);
  assert_int_equal(third.type, RV_NSQ_FRAME_MESSAGE);
  assert_memory_equal(third.body, "third", 5);
  nsqc_close(&p);
  nsqc_close(&held);
  server_stop(&s);
  server_cleanup(&s);
}

/*
 * The incident's sequence on the wire: TIMEOUT X, then MSG X attempt 2 back
 * to back; the first handler's late answer names its attempt and is refused
 * (non-fatal), the redelivery stays in flight and its own FIN works.  A
 * malformed attempt is a fatal E_INVALID.
 */
static void test_attempt_qualified_answers(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, c;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  assert_int_equal(nsqc_open(&c, s.port,
                             "{\"feature_negotiation\":true,\"msg_timeout\":1000,"
                             "\"timeout_notify\":true}"),
                   RV_OK);
  assert_true(nsqc_sub(&c, "att", "workers", 1));
  assert_true(nsqc_pub(&p, "att", "x"));
  nsqf f1, n, f2, e;
  expect_message(&c, &f1, "x", 1);
  assert_int_equal(nsqc_next(&c, &n, RVT_BOUND_NS), RV_OK);
  assert_int_equal(n.type, RV_NSQ_FRAME_TIMEOUT);
  expect_message(&c, &f2, "x", 2);
  assert_memory_equal(f2.id, f1.id, 16);
  char want[256];
  /* the late REQ and TOUCH of attempt 1: refused, the connection goes on */
  rv_nsq_enc_req_attempt(&c.out, f1.id, 0, 1);
  assert_int_equal(nsqc_send(&c), RV_OK);
  assert_int_equal(nsqc_next(&c, &e, RVT_BOUND_NS), RV_OK);
  assert_int_equal(e.type, RV_NSQ_FRAME_ERROR);
  snprintf(want, sizeof want,
           "E_REQ_FAILED REQ %.16s failed attempt 1 is not in flight (attempt 2 is)",
           (const char *)f1.id);
  assert_string_equal(e.text, want);
  rv_nsq_enc_touch_attempt(&c.out, f1.id, 1);
  assert_int_equal(nsqc_send(&c), RV_OK);
  assert_int_equal(nsqc_next(&c, &e, RVT_BOUND_NS), RV_OK);
  snprintf(want, sizeof want,
           "E_TOUCH_FAILED TOUCH %.16s failed attempt 1 is not in flight (attempt 2 is)",
           (const char *)f1.id);
  assert_string_equal(e.text, want);
  /* attempt 2 is still in flight here (RDY 1 is taken): nothing else comes */
  assert_true(nsqc_pub(&p, "att", "y"));
  nsqf none;
  assert_int_equal(nsqc_read(&c, &none, 300 * RV_NS_PER_MS), RV_ETIMEDOUT);
  /* its own FIN finishes it: the slot frees and "y" comes */
  rv_nsq_enc_fin_attempt(&c.out, f2.id, 2);
  assert_int_equal(nsqc_send(&c), RV_OK);
  nsqf y;
  expect_message(&c, &y, "y", 1);
  /* the FIN of a finished message: nsqd's error, as before */
  rv_nsq_enc_fin_attempt(&c.out, f2.id, 2);
  assert_int_equal(nsqc_send(&c), RV_OK);
  assert_int_equal(nsqc_next(&c, &e, RVT_BOUND_NS), RV_OK);
  snprintf(want, sizeof want, "E_FIN_FAILED FIN %.16s failed ID not in flight",
           (const char *)f2.id);
  assert_string_equal(e.text, want);
  /* a malformed attempt: fatal */
  char bad[64];
  snprintf(bad, sizeof bad, "FIN %.16s 0\n", (const char *)y.id);
  assert_int_equal(rv_conn_write_all(c.c, bad, strlen(bad), NULL), RV_OK);
  assert_int_equal(nsqc_next(&c, &e, RVT_BOUND_NS), RV_OK);
  assert_int_equal(e.type, RV_NSQ_FRAME_ERROR);
  assert_string_equal(e.text, "E_INVALID FIN invalid attempt \"0\" (must be 1-65535)");
  assert_int_equal(nsqc_read(&c, &e, RVT_BOUND_NS), RV_ECLOSED);
  nsqc_close(&p);
  nsqc_close(&c);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_disconnect_requeues_at_once(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, a, b;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  /* Default msg_timeout: 60 s, far beyond this test's bound. */
  assert_int_equal(nsqc_open(&a, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&a, "d", "c", 1));
  assert_true(nsqc_pub(&p, "d", "orphan"));
  nsqf f;
  expect_message(&a, &f, "orphan", 1);
  assert_int_equal(nsqc_open(&b, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&b, "d", "c", 1));
  nsqc_close(&a); /* goes away holding the message */
  nsqf g;
  expect_message(&b, &g, "orphan", 2);
  assert_memory_equal(g.id, f.id, 16);
  nsqc_close(&p);
  nsqc_close(&b);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_deferred_and_req(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, c;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  assert_int_equal(nsqc_open(&c, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&c, "later", "c", 5));
  int64_t t0 = rv_now_ns();
  rv_nsq_enc_dpub(&p.out, "later", 400, "deferred", 8);
  assert_int_equal(nsqc_send(&p), RV_OK);
  assert_true(nsqc_expect(&p, "OK"));
  nsqf f;
  expect_message(&c, &f, "deferred", 1);
  assert_true(rv_now_ns() - t0 >= 400 * RV_NS_PER_MS);
  /* REQ with a delay: back after the delay, attempts 2. */
  int64_t t1 = rv_now_ns();
  rv_nsq_enc_req(&c.out, f.id, 300);
  assert_int_equal(nsqc_send(&c), RV_OK);
  nsqf g;
  expect_message(&c, &g, "deferred", 2);
  assert_true(rv_now_ns() - t1 >= 300 * RV_NS_PER_MS);
  fin(&c, g.id);
  nsqc_close(&p);
  nsqc_close(&c);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_protocol_errors(void **state) {
  server s = {0};
  server_start(&s);
  /* Wrong magic: E_BAD_PROTOCOL, then the server closes. */
  rv_conn *raw;
  assert_int_equal(rv_tcp_connect(&raw, "127.0.0.1", s.port, NULL), RV_OK);
  assert_int_equal(rv_conn_write_all(raw, "  V1", 4, NULL), RV_OK);
  char buf[256] = {0};
  size_t got = 0;
  ssize_t r;
  while ((r = rv_conn_read(raw, buf + got, sizeof buf - 1 - got, NULL)) > 0)
    got += (size_t)r;
  assert_true(got > 8);
  assert_non_null(memmem(buf, got, "E_BAD_PROTOCOL", 14));
  rv_conn_close(raw);
  /* An invalid topic name: fatal E_BAD_TOPIC. */
  nsqc p;
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  const char *bad = "PUB bad!topic\n\x00\x00\x00\x01x";
  assert_int_equal(rv_conn_write_all(p.c, bad, 19, NULL), RV_OK);
  nsqf e;
  assert_int_equal(nsqc_next(&p, &e, RVT_BOUND_NS), RV_OK);
  assert_int_equal(e.type, RV_NSQ_FRAME_ERROR);
  assert_non_null(strstr(e.text, "E_BAD_TOPIC"));
  assert_int_equal(nsqc_read(&p, &e, RVT_BOUND_NS), RV_ECLOSED);
  nsqc_close(&p);
  /* The server is unaffected. */
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  assert_true(nsqc_pub(&p, "fine", "x"));
  nsqc_close(&p);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_durable_across_restart(void **state) {
  server s = {0};
  server_start(&s);
  nsqc p, c;
  assert_int_equal(nsqc_open(&c, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&c, "keep", "c", 0)); /* the channel exists, nothing delivered */
  nsqc_close(&c);
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  char body[32];
  for (int i = 0; i < 50; i++) {
    snprintf(body, sizeof body, "msg-%d", i);
    assert_true(nsqc_pub(&p, "keep", body));
  }
  nsqc_close(&p);
  server_stop(&s);
  server_start(&s);
  assert_int_equal(nsqc_open(&c, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&c, "keep", "c", 100));
  bool seen[50] = {0};
  for (int i = 0; i < 50; i++) {
    nsqf f;
    assert_int_equal(nsqc_next(&c, &f, RVT_BOUND_NS), RV_OK);
    assert_int_equal(f.type, RV_NSQ_FRAME_MESSAGE);
    int k = atoi(f.body + 4);
    assert_true(k >= 0 && k < 50 && !seen[k]);
    seen[k] = true;
    fin(&c, f.id);
  }
  nsqc_close(&c);
  server_stop(&s);
  server_cleanup(&s);
}

/* --sync none: acknowledged at write(2); a clean stop still keeps everything (and does not crash). */
static void test_sync_none_stop_and_restart(void **state) {
  server s = {0};
  server_start_opts(&s, true);
  nsqc p, c;
  assert_int_equal(nsqc_open(&c, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&c, "fast", "c", 0));
  nsqc_close(&c);
  assert_int_equal(nsqc_open(&p, s.port, NULL), RV_OK);
  for (int i = 0; i < 10; i++)
    assert_true(nsqc_pub(&p, "fast", "x"));
  nsqc_close(&p);
  server_stop(&s);
  server_start_opts(&s, true);
  assert_int_equal(nsqc_open(&c, s.port, "{}"), RV_OK);
  assert_true(nsqc_sub(&c, "fast", "c", 20));
  for (int i = 0; i < 10; i++) {
    nsqf f;
    expect_message(&c, &f, "x", 1);
    fin(&c, f.id);
  }
  nsqc_close(&c);
  server_stop(&s);
  server_cleanup(&s);
}

int main(void) {
  rv_thread_adopt("main", "test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_publish_consume_channels),
      cmocka_unit_test(test_timeout_redelivery_and_notification),
      cmocka_unit_test(test_held_slots),
      cmocka_unit_test(test_attempt_qualified_answers),
      cmocka_unit_test(test_disconnect_requeues_at_once),
      cmocka_unit_test(test_deferred_and_req),
      cmocka_unit_test(test_protocol_errors),
      cmocka_unit_test(test_durable_across_restart),
      cmocka_unit_test(test_sync_none_stop_and_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
