/*
 * test_queue_core: the queue's pure core (src/core/queue.c) over the
 * in-memory store.
 *
 * Each test drives a fixture with explicit virtual time (f.now), looks at the
 * events a call produced (f.ev is cleared before every call through the
 * helpers) and at the core's stats, and runs rv_queue_check after every
 * step.  The last tests are a determinism check and a seeded randomized
 * model test that compares the core with a small independent model and
 * checks the invariants the design promises.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/queue.h"

#define S (RV_NS_PER_S)
#define MS (RV_NS_PER_MS)
#define T0 (INT64_C(1700000000) * S) /* a wall-clock-like start */

typedef struct fx {
  rv_qstore_mem *m;
  rv_queue *q;
  rv_queue_events ev;
  int64_t now;
  rv_queue_opts o;
} fx;

static void check_ok(fx *f) {
  const char *why = rv_queue_check(f->q);
  if (why)
    fail_msg("invariant: %s", why);
}

static void fx_open(fx *f, void (*tweak)(rv_queue_opts *)) {
  memset(f, 0, sizeof *f);
  f->m = rv_qstore_mem_create();
  assert_non_null(f->m);
  rv_queue_opts_default(&f->o);
  f->o.ops = &rv_qstore_mem_ops;
  f->o.store = f->m;
  f->o.msg_timeout_ns = 10 * S;
  if (tweak)
    tweak(&f->o);
  const char *why = NULL;
  assert_int_equal(rv_queue_create(&f->q, &f->o, &why), RV_QUEUE_OK);
  rv_queue_events_init(&f->ev);
  f->now = T0;
}

static void fx_close(fx *f) {
  check_ok(f);
  rv_queue_destroy(f->q);
  rv_qstore_mem_destroy(f->m);
  rv_queue_events_free(&f->ev);
}

/* Crash and restart: a fresh core rebuilt from the store's journal. */
static void fx_crash(fx *f) {
  rv_queue_destroy(f->q);
  assert_int_equal(rv_queue_create(&f->q, &f->o, NULL), RV_QUEUE_OK);
  assert_int_equal(rv_qstore_mem_recover(f->m, f->now, f->q), RV_QUEUE_OK);
  check_ok(f);
}

static uint64_t topic(fx *f, const char *name) {
  uint64_t t;
  assert_int_equal(rv_queue_topic_create(f->q, f->now, name, &t), RV_QUEUE_OK);
  return t;
}

static uint64_t channel(fx *f, const char *t, const char *c) {
  uint64_t ch;
  assert_int_equal(rv_queue_channel_create(f->q, f->now, topic(f, t), c, &ch), RV_QUEUE_OK);
  return ch;
}

static uint64_t chan_of(fx *f, const char *t, const char *c) {
  uint64_t th, ch;
  assert_int_equal(rv_queue_topic_find(f->q, t, &th), RV_QUEUE_OK);
  assert_int_equal(rv_queue_channel_find(f->q, th, c, &ch), RV_QUEUE_OK);
  return ch;
}

/* Publish n messages ("m<i>") with defer_ns each; returns the first seq. */
static uint64_t pubn(fx *f, const char *t, size_t n, int64_t defer_ns) {
  rv_qstore_msg msgs[64];
  char bodies[64][16];
  assert_true(n <= 64);
  for (size_t i = 0; i < n; i++) {
    snprintf(bodies[i], sizeof bodies[i], "m%zu", i);
    msgs[i] = (rv_qstore_msg){.body = bodies[i], .body_bytes = strlen(bodies[i]),
                              .defer_ns = defer_ns};
  }
  uint64_t first = 0;
  rv_queue_events_clear(&f->ev);
  int rc = rv_queue_publish(f->q, f->now, topic(f, t), msgs, n, &first, &f->ev);
  if (rc)
    fail_msg("publish: %s", rv_queue_errmsg(f->q));
  check_ok(f);
  return first;
}

static uint64_t pub(fx *f, const char *t) { return pubn(f, t, 1, 0); }

static uint64_t sub_opts(fx *f, const char *t, const char *c, int64_t rdy, bool hold,
                         bool notify, int64_t timeout_ns) {
  rv_queue_consumer_opts o = {.msg_timeout_ns = timeout_ns, .hold_slots = hold,
                              .timeout_notify = notify};
  uint64_t h;
  rv_queue_events_clear(&f->ev);
  int rc = rv_queue_subscribe(f->q, f->now, t, c, &o, &h, &f->ev);
  if (rc)
    fail_msg("subscribe: %s", rv_queue_errmsg(f->q));
  if (rdy) {
    rv_queue_events_clear(&f->ev);
    assert_int_equal(rv_queue_rdy(f->q, f->now, h, rdy, &f->ev), RV_QUEUE_OK);
  }
  check_ok(f);
  return h;
}

static uint64_t sub(fx *f, const char *t, const char *c, int64_t rdy) {
  return sub_opts(f, t, c, rdy, false, false, 0);
}

static void rdy(fx *f, uint64_t c, int64_t n) {
  rv_queue_events_clear(&f->ev);
  assert_int_equal(rv_queue_rdy(f->q, f->now, c, n, &f->ev), RV_QUEUE_OK);
  check_ok(f);
}

/* FIN / REQ of one delivery (attempt > 0, ravel's extension) or of whatever
 * delivery of guid is in flight (attempt 0, nsqd's commands). */
static int fin_at(fx *f, uint64_t c, uint64_t guid, uint16_t attempt, rv_queue_ack *ack) {
  rv_queue_events_clear(&f->ev);
  int rc = rv_queue_fin(f->q, f->now, c, guid, attempt, ack, &f->ev);
  check_ok(f);
  return rc;
}

static int req_at(fx *f, uint64_t c, uint64_t guid, uint16_t attempt, int64_t delay_ns,
                  rv_queue_ack *ack) {
  rv_queue_events_clear(&f->ev);
  int rc = rv_queue_req(f->q, f->now, c, guid, attempt, delay_ns, ack, &f->ev);
  check_ok(f);
  return rc;
}

static int fin(fx *f, uint64_t c, uint64_t guid, rv_queue_ack *ack) {
  return fin_at(f, c, guid, 0, ack);
}

static int req(fx *f, uint64_t c, uint64_t guid, int64_t delay_ns, rv_queue_ack *ack) {
  return req_at(f, c, guid, 0, delay_ns, ack);
}

static void tick(fx *f, int64_t now) {
  f->now = now;
  rv_queue_events_clear(&f->ev);
  assert_int_equal(rv_queue_tick(f->q, f->now, &f->ev), RV_QUEUE_OK);
  check_ok(f);
}

static void unsub(fx *f, uint64_t c) {
  rv_queue_events_clear(&f->ev);
  assert_int_equal(rv_queue_unsubscribe(f->q, f->now, c, &f->ev), RV_QUEUE_OK);
  check_ok(f);
}

/* Events of type `type` for consumer c (0: any consumer) in the last call. */
static size_t count_ev(const fx *f, int type, uint64_t c) {
  size_t n = 0;
  for (size_t i = 0; i < f->ev.len; i++)
    if (f->ev.v[i].type == type && (!c || f->ev.v[i].consumer == c))
      n++;
  return n;
}

static const rv_queue_event *nth_ev(const fx *f, int type, uint64_t c, size_t k) {
  for (size_t i = 0; i < f->ev.len; i++)
    if (f->ev.v[i].type == type && (!c || f->ev.v[i].consumer == c) && k-- == 0)
      return &f->ev.v[i];
  fail_msg("no event %d #%zu", type, k);
  return NULL;
}

static size_t ndeliv(const fx *f, uint64_t c) { return count_ev(f, RV_QUEUE_EV_DELIVER, c); }
static const rv_queue_event *deliv(const fx *f, uint64_t c, size_t k) {
  return nth_ev(f, RV_QUEUE_EV_DELIVER, c, k);
}

static rv_queue_channel_stats cstats(fx *f, uint64_t ch) {
  rv_queue_channel_stats s;
  assert_int_equal(rv_queue_channel_stats_get(f->q, ch, &s), RV_QUEUE_OK);
  return s;
}

static rv_queue_consumer_stats kstats(fx *f, uint64_t c) {
  rv_queue_consumer_stats s;
  assert_int_equal(rv_queue_consumer_stats_get(f->q, c, &s), RV_QUEUE_OK);
  return s;
}

/* ---- distribution -------------------------------------------------------- */

static void test_channels_each_get_a_copy(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "a", 10), b = sub(&f, "t", "b", 10);
  pubn(&f, "t", 3, 0);
  assert_int_equal(ndeliv(&f, a), 3);
  assert_int_equal(ndeliv(&f, b), 3);
  for (size_t i = 0; i < 3; i++) {
    const rv_queue_event *x = deliv(&f, a, i), *y = deliv(&f, b, i);
    assert_int_equal(x->seq, i + 1);
    assert_int_equal(x->seq, y->seq);
    assert_int_equal(x->guid, y->guid); /* same id on every channel */
    assert_int_equal(x->attempts, 1);
    assert_int_equal(x->ts_ns, f.now);
    assert_int_not_equal(x->channel, y->channel);
    /* the shell fetches the body from the store with what the event says */
    rv_qstore_msg m;
    assert_int_equal(rv_qstore_mem_ops.fetch(f.m, x->topic_store, x->seq, &m), 0);
    char want[8];
    snprintf(want, sizeof want, "m%zu", i);
    assert_int_equal(m.body_bytes, strlen(want));
    assert_memory_equal(m.body, want, m.body_bytes);
  }
  rv_queue_channel_stats s = cstats(&f, chan_of(&f, "t", "a"));
  assert_int_equal(s.message_count, 3);
  assert_int_equal(s.in_flight_count, 3);
  assert_int_equal(s.depth, 0);
  fx_close(&f);
}

static void test_first_channel_inherits_backlog_later_ones_do_not(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  pubn(&f, "t", 4, 0);
  rv_queue_topic_stats ts;
  assert_int_equal(rv_queue_topic_stats_get(f.q, topic(&f, "t"), &ts), RV_QUEUE_OK);
  assert_int_equal(ts.depth, 4); /* held by the topic: no channel yet */
  assert_int_equal(ts.message_count, 4);
  assert_int_equal(ts.message_bytes, 8);
  uint64_t a = channel(&f, "t", "a");
  uint64_t b = channel(&f, "t", "b");
  assert_int_equal(cstats(&f, a).depth, 4);
  assert_int_equal(cstats(&f, b).depth, 0);
  assert_int_equal(rv_queue_topic_stats_get(f.q, topic(&f, "t"), &ts), RV_QUEUE_OK);
  assert_int_equal(ts.depth, 0);
  pub(&f, "t");
  assert_int_equal(cstats(&f, a).depth, 5);
  assert_int_equal(cstats(&f, b).depth, 1);
  fx_close(&f);
}

static void test_consumers_share_round_robin(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "c", 10), b = sub(&f, "t", "c", 10), c = sub(&f, "t", "c", 10);
  pubn(&f, "t", 7, 0);
  assert_int_equal(ndeliv(&f, 0), 7);
  /* one message per turn, in subscription order */
  uint64_t order[] = {a, b, c, a, b, c, a};
  for (size_t i = 0; i < 7; i++) {
    assert_int_equal(f.ev.v[i].consumer, order[i]);
    assert_int_equal(f.ev.v[i].seq, i + 1);
  }
  /* the round goes on where it stopped */
  pub(&f, "t");
  assert_int_equal(deliv(&f, 0, 0)->consumer, b);
  fx_close(&f);
}

/* ---- RDY ----------------------------------------------------------------- */

static void test_rdy_caps_in_flight(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub(&f, "t", "c", 0);
  pubn(&f, "t", 5, 0);
  assert_int_equal(ndeliv(&f, 0), 0); /* RDY 0: nothing */
  rdy(&f, c, 2);
  assert_int_equal(ndeliv(&f, c), 2);
  uint64_t g1 = deliv(&f, c, 0)->guid;
  pub(&f, "t");
  assert_int_equal(ndeliv(&f, c), 0); /* RDY stores a count; it is not a credit */
  assert_int_equal(fin(&f, c, g1, NULL), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, c), 1); /* a slot freed, one more */
  uint64_t g3 = deliv(&f, c, 0)->guid;
  rdy(&f, c, 0);
  assert_int_equal(fin(&f, c, g3, NULL), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, c), 0);
  assert_int_equal(kstats(&f, c).in_flight_count, 1);
  rdy(&f, c, 4);
  assert_int_equal(ndeliv(&f, c), 3);
  assert_int_equal(kstats(&f, c).in_flight_count, 4);
  assert_int_equal(rv_queue_rdy(f.q, f.now, c, f.o.max_rdy_count + 1, &f.ev), RV_QUEUE_ERDY);
  assert_string_equal(rv_queue_errmsg(f.q), "RDY count 2501 out of range 0-2500");
  assert_int_equal(rv_queue_rdy(f.q, f.now, c, -1, &f.ev), RV_QUEUE_ERDY);
  fx_close(&f);
}

/* ---- FIN / REQ / TOUCH --------------------------------------------------- */

static void test_fin_req_touch_errors(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "c", 1), b = sub(&f, "t", "c", 1);
  pubn(&f, "t", 2, 0);
  uint64_t ga = deliv(&f, a, 0)->guid, gb = deliv(&f, b, 0)->guid;
  char want[128];
  char id[17];
  rv_nsq_id_format(ga, (uint8_t *)id);
  id[16] = 0;
  /* owned by another consumer */
  rv_queue_ack ack;
  assert_int_equal(fin(&f, b, ga, &ack), RV_QUEUE_ENOT_OWNER);
  snprintf(want, sizeof want, "FIN %s failed client does not own message", id);
  assert_string_equal(rv_queue_errmsg(f.q), want);
  assert_false(ack.held_released);
  assert_int_equal(req(&f, b, ga, 0, NULL), RV_QUEUE_ENOT_OWNER);
  assert_int_equal(rv_queue_touch(f.q, f.now, b, ga, 0, NULL), RV_QUEUE_ENOT_OWNER);
  snprintf(want, sizeof want, "TOUCH %s failed client does not own message", id);
  assert_string_equal(rv_queue_errmsg(f.q), want);
  /* FIN, then FIN again: not in flight */
  f.now += 5 * MS;
  assert_int_equal(fin(&f, a, ga, &ack), RV_QUEUE_OK);
  assert_int_equal(ack.latency_ns, 5 * MS);
  assert_int_equal(ack.seq, 1);
  assert_int_equal(fin(&f, a, ga, NULL), RV_QUEUE_ENOT_IN_FLIGHT);
  snprintf(want, sizeof want, "FIN %s failed ID not in flight", id);
  assert_string_equal(rv_queue_errmsg(f.q), want);
  assert_string_equal(rv_queue_strerror(RV_QUEUE_ENOT_IN_FLIGHT), "ID not in flight");
  assert_int_equal(req(&f, a, ga, 0, NULL), RV_QUEUE_ENOT_IN_FLIGHT);
  snprintf(want, sizeof want, "REQ %s failed ID not in flight", id);
  assert_string_equal(rv_queue_errmsg(f.q), want);
  /* ids that cannot be: unpublished seq, another topic's prefix, zero */
  assert_int_equal(fin(&f, b, gb + 100, NULL), RV_QUEUE_ENOT_IN_FLIGHT);
  assert_int_equal(fin(&f, b, gb ^ (UINT64_C(7) << 48), NULL), RV_QUEUE_ENOT_IN_FLIGHT);
  assert_int_equal(fin(&f, b, 0, NULL), RV_QUEUE_ENOT_IN_FLIGHT);
  /* a stale consumer handle */
  unsub(&f, b);
  assert_int_equal(fin(&f, b, gb, NULL), RV_QUEUE_ENOCONSUMER);
  fx_close(&f);
}

static void test_req_zero_goes_to_tail_and_first(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub(&f, "t", "c", 3);
  pubn(&f, "t", 5, 0);
  assert_int_equal(ndeliv(&f, c), 3);
  uint64_t g1 = deliv(&f, c, 0)->guid, g2 = deliv(&f, c, 1)->guid;
  rdy(&f, c, 0);
  assert_int_equal(req(&f, c, g2, 0, NULL), RV_QUEUE_OK);
  assert_int_equal(req(&f, c, g1, 0, NULL), RV_QUEUE_OK);
  uint64_t ch = chan_of(&f, "t", "c");
  assert_int_equal(cstats(&f, ch).depth, 4); /* 2 requeued + 2 fresh */
  assert_int_equal(cstats(&f, ch).requeue_count, 2);
  assert_int_equal(kstats(&f, c).requeue_count, 2);
  rdy(&f, c, 4);
  assert_int_equal(ndeliv(&f, c), 3);
  /* requeued ones first, in REQ order (tail), same ids, attempts + 1 */
  assert_int_equal(deliv(&f, c, 0)->guid, g2);
  assert_int_equal(deliv(&f, c, 0)->attempts, 2);
  assert_int_equal(deliv(&f, c, 1)->guid, g1);
  assert_int_equal(deliv(&f, c, 1)->attempts, 2);
  assert_int_equal(deliv(&f, c, 2)->seq, 4);
  assert_int_equal(deliv(&f, c, 2)->attempts, 1);
  fx_close(&f);
}

static void test_touch_resets_and_caps(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  /* msg_timeout 60 s, max_msg_timeout 15 min (nsqd's defaults) */
  uint64_t c = sub_opts(&f, "t", "c", 1, false, false, 60 * S);
  pub(&f, "t");
  uint64_t g = deliv(&f, c, 0)->guid;
  int64_t t_deliver = f.now;
  assert_int_equal(rv_queue_next_deadline(f.q), t_deliver + 60 * S);
  f.now += 50 * S;
  assert_int_equal(rv_queue_touch(f.q, f.now, c, g, 0, NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_next_deadline(f.q), f.now + 60 * S);
  tick(&f, t_deliver + 60 * S); /* the old deadline passes: nothing */
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_DELIVER, 0), 0);
  assert_int_equal(kstats(&f, c).timeout_count, 0);
  /* TOUCH near the cap: deliveryTS + 15 min */
  f.now = t_deliver + 14 * 60 * S + 30 * S;
  assert_int_equal(rv_queue_touch(f.q, f.now, c, g, 0, NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_next_deadline(f.q), t_deliver + 15 * 60 * S);
  fx_close(&f);
}

/* ---- timeouts ------------------------------------------------------------ */

static void test_timeout_fires_exactly_and_redelivers(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub_opts(&f, "t", "c", 1, false, false, 1 * S);
  pub(&f, "t");
  uint64_t g = deliv(&f, a, 0)->guid;
  int64_t due = f.now + 1 * S;
  assert_int_equal(rv_queue_next_deadline(f.q), due);
  tick(&f, due - 1);
  assert_int_equal(f.ev.len, 0);
  assert_int_equal(kstats(&f, a).in_flight_count, 1);
  tick(&f, due);
  /* requeued and, RDY 1 being free again (nsqd's counting), redelivered */
  assert_int_equal(ndeliv(&f, a), 1);
  assert_int_equal(deliv(&f, a, 0)->guid, g);
  assert_int_equal(deliv(&f, a, 0)->attempts, 2);
  assert_int_equal(deliv(&f, a, 0)->ts_ns, T0);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TIMEOUT, 0), 0); /* not asked for */
  assert_int_equal(kstats(&f, a).timeout_count, 1);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "c")).timeout_count, 1);
  /* the late FIN of the first delivery now acts on the second: same id */
  assert_int_equal(fin(&f, a, g, NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_next_deadline(f.q), RV_QUEUE_NO_DEADLINE);
  fx_close(&f);
}

static void test_equal_deadlines_fire_in_arming_order(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub_opts(&f, "t", "c", 3, false, true, 1 * S);
  pubn(&f, "t", 3, 0);
  uint64_t g[3];
  for (int i = 0; i < 3; i++)
    g[i] = deliv(&f, a, (size_t)i)->guid;
  tick(&f, f.now + 5 * S);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TIMEOUT, a), 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(nth_ev(&f, RV_QUEUE_EV_TIMEOUT, a, (size_t)i)->guid, g[i]);
  fx_close(&f);
}

static void test_disconnect_requeues_at_once(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "c", 3);
  pubn(&f, "t", 3, 0);
  uint64_t b = sub(&f, "t", "c", 10);
  assert_int_equal(ndeliv(&f, b), 0);
  unsub(&f, a);
  assert_int_equal(ndeliv(&f, b), 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(deliv(&f, b, i)->seq, i + 1); /* oldest delivery first */
    assert_int_equal(deliv(&f, b, i)->attempts, 2);
  }
  rv_queue_stats st;
  rv_queue_get_stats(f.q, &st);
  assert_int_equal(st.disconnect_requeued, 3);
  assert_int_equal(rv_queue_consumer_stats_get(f.q, a, &(rv_queue_consumer_stats){0}),
                   RV_QUEUE_ENOCONSUMER);
  fx_close(&f);
}

/* ---- deferred ------------------------------------------------------------ */

static void test_req_with_delay_defers(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 5, false, false, 60 * S);
  pub(&f, "t");
  uint64_t g = deliv(&f, c, 0)->guid;
  uint64_t ch = chan_of(&f, "t", "c");
  assert_int_equal(req(&f, c, g, 5 * S, NULL), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, c), 0);
  assert_int_equal(cstats(&f, ch).deferred_count, 1);
  assert_int_equal(cstats(&f, ch).depth, 0);
  assert_int_equal(rv_queue_next_deadline(f.q), f.now + 5 * S);
  int64_t due = f.now + 5 * S;
  tick(&f, due - 1);
  assert_int_equal(f.ev.len, 0);
  tick(&f, due);
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->guid, g);
  assert_int_equal(deliv(&f, c, 0)->attempts, 2);
  assert_int_equal(cstats(&f, ch).deferred_count, 0);
  /* the delay is clamped to max_req_timeout, as nsqd since PR #868 */
  assert_int_equal(req(&f, c, g, 10 * 3600 * S, NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_next_deadline(f.q), f.now + f.o.max_req_timeout_ns);
  fx_close(&f);
}

static void test_dpub_defers_on_every_channel(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "a", 10), b = sub(&f, "t", "b", 10);
  pubn(&f, "t", 2, 0);
  uint64_t s = pubn(&f, "t", 1, 3 * S);
  assert_int_equal(ndeliv(&f, 0), 0);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "a")).deferred_count, 1);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "b")).deferred_count, 1);
  pub(&f, "t"); /* behind the deferred one, delivered now */
  assert_int_equal(ndeliv(&f, a), 1);
  assert_int_equal(deliv(&f, a, 0)->seq, s + 1);
  tick(&f, f.now + 3 * S);
  assert_int_equal(ndeliv(&f, a), 1);
  assert_int_equal(ndeliv(&f, b), 1);
  assert_int_equal(deliv(&f, a, 0)->seq, s);
  assert_int_equal(deliv(&f, a, 0)->attempts, 1);
  /* out of range */
  rv_qstore_msg m = {.body = "x", .body_bytes = 1, .defer_ns = f.o.max_req_timeout_ns + 1};
  assert_int_equal(rv_queue_publish(f.q, f.now, topic(&f, "t"), &m, 1, NULL, &f.ev),
                   RV_QUEUE_EDEFER);
  m.defer_ns = -1;
  assert_int_equal(rv_queue_publish(f.q, f.now, topic(&f, "t"), &m, 1, NULL, &f.ev),
                   RV_QUEUE_EDEFER);
  fx_close(&f);
}

static void test_dpub_before_any_channel_keeps_its_due_time(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  pubn(&f, "t", 1, 10 * S);
  pub(&f, "t");
  f.now += 2 * S;
  uint64_t c = sub(&f, "t", "c", 10);
  /* the channel meets the DPUB message in the log, defers it to its due */
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->seq, 2);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "c")).deferred_count, 1);
  assert_int_equal(rv_queue_next_deadline(f.q), T0 + 10 * S);
  tick(&f, T0 + 10 * S);
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->seq, 1);
  fx_close(&f);
}

/* ---- held slots and timeout notification --------------------------------- */

/*
 * The incident: a consumer whose handlers hang never FINs.  Without held
 * slots each timeout frees a slot and it keeps receiving; with them it
 * receives RDY messages in total and no more.
 */
static size_t stuck_consumer_receives(bool hold) {
  fx f;
  fx_open(&f, NULL);
  uint64_t stuck = sub_opts(&f, "t", "c", 2, hold, true, 1 * S);
  pubn(&f, "t", 20, 0);
  size_t got = ndeliv(&f, stuck);
  for (int i = 1; i <= 30; i++) {
    tick(&f, T0 + i * S);
    got += ndeliv(&f, stuck);
  }
  rv_queue_consumer_stats ks = kstats(&f, stuck);
  if (hold) {
    assert_int_equal(ks.held_count, 2);
    assert_int_equal(ks.in_flight_count, 0);
    assert_int_equal(ks.timeout_count, 2);
    assert_int_equal(cstats(&f, chan_of(&f, "t", "c")).held_count, 2);
  } else {
    assert_int_equal(ks.held_count, 0);
    assert_int_equal(ks.in_flight_count, 2);
  }
  fx_close(&f);
  return got;
}

static void test_held_slots_stop_in_flight_creep(void **state) {
  (void)state;
  assert_int_equal(stuck_consumer_receives(true), 2);
  assert_true(stuck_consumer_receives(false) > 20);
}

static void test_held_slots_rules(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 2, true, true, 1 * S);
  uint64_t seq = pub(&f, "t");
  uint64_t g = deliv(&f, c, 0)->guid;
  /* rule 1: timeout -> requeued, and c holds a slot; rule 3: redelivered to c */
  tick(&f, f.now + 1 * S);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TIMEOUT, c), 1);
  assert_int_equal(nth_ev(&f, RV_QUEUE_EV_TIMEOUT, c, 0)->guid, g);
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->attempts, 2);
  assert_int_equal(kstats(&f, c).held_count, 1);
  assert_int_equal(kstats(&f, c).in_flight_count, 1);
  assert_int_equal(rv_queue_consumer_held(f.q, c, seq), 1);
  pub(&f, "t");
  assert_int_equal(ndeliv(&f, c), 0); /* 1 in flight + 1 held = RDY 2 */
  /* rule 4: TOUCH keeps the hold (and acts on the live delivery) */
  assert_int_equal(rv_queue_touch(f.q, f.now, c, g, 0, NULL), RV_QUEUE_OK);
  assert_int_equal(kstats(&f, c).held_count, 1);
  /* rule 3: a FIN while the id is in flight at c acts on it; the hold stays */
  rv_queue_ack ack;
  assert_int_equal(fin(&f, c, g, &ack), RV_QUEUE_OK);
  assert_false(ack.held_released);
  assert_int_equal(kstats(&f, c).held_count, 1);
  assert_int_equal(ndeliv(&f, c), 1); /* the freed in-flight slot took seq 2 */
  uint64_t g2 = deliv(&f, c, 0)->guid;
  /* rule 2: the second answer for g releases the hold, with nsqd's error */
  assert_int_equal(fin(&f, c, g, &ack), RV_QUEUE_ENOT_IN_FLIGHT);
  assert_true(ack.held_released);
  assert_int_equal(kstats(&f, c).held_count, 0);
  assert_int_equal(fin(&f, c, g, &ack), RV_QUEUE_ENOT_IN_FLIGHT);
  assert_false(ack.held_released);
  /* a late REQ on a message that went to someone else: ENOT_OWNER, released */
  uint64_t other = sub_opts(&f, "t", "c", 0, false, false, 60 * S);
  rdy(&f, c, 1);
  tick(&f, f.now + 1 * S); /* g2 times out at c; its held slot keeps it from c */
  assert_int_equal(kstats(&f, c).held_count, 1);
  assert_int_equal(ndeliv(&f, 0), 0);
  rdy(&f, other, 1);
  assert_int_equal(ndeliv(&f, other), 1);
  assert_int_equal(deliv(&f, other, 0)->guid, g2);
  assert_int_equal(req(&f, c, g2, 0, &ack), RV_QUEUE_ENOT_OWNER);
  assert_true(ack.held_released);
  assert_int_equal(kstats(&f, c).held_count, 0);
  /* TOUCH on a held id: error, hold kept */
  tick(&f, f.now + 60 * S); /* other's copy times out: no hold (not asked) */
  assert_int_equal(kstats(&f, other).held_count, 0);
  fx_close(&f);
}

static void assert_errmsg(fx *f, const char *verb, uint64_t guid, const char *rest) {
  uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];
  rv_nsq_id_format(guid, id);
  char want[RV_QUEUE_ERRMSG_MAX];
  snprintf(want, sizeof want, "%s %.16s failed %s", verb, (const char *)id, rest);
  assert_string_equal(rv_queue_errmsg(f->q), want);
}

/*
 * The incident's late answer: X times out at C and is redelivered to C
 * (attempt 2) while the first handler is still running.  Answers qualified
 * by their attempt act only on their own delivery: the late one fails and
 * releases C's hold (if C asked for holds); the current one succeeds.
 */
static void attempt_qualified_answers(bool hold) {
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 2, hold, true, 1 * S);
  uint64_t seq = pub(&f, "t");
  assert_int_equal(ndeliv(&f, c), 1);
  uint64_t g = deliv(&f, c, 0)->guid;
  assert_int_equal(deliv(&f, c, 0)->attempts, 1);
  tick(&f, f.now + 1 * S);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TIMEOUT, c), 1);
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->guid, g);
  assert_int_equal(deliv(&f, c, 0)->attempts, 2);
  assert_int_equal(kstats(&f, c).held_count, hold ? 1 : 0);

  /* the late FIN of attempt 1: refused, attempt 2 untouched, hold released */
  rv_queue_ack ack;
  assert_int_equal(fin_at(&f, c, g, 1, &ack), RV_QUEUE_ESTALE_ATTEMPT);
  assert_errmsg(&f, "FIN", g, "attempt 1 is not in flight (attempt 2 is)");
  assert_int_equal(ack.held_released, hold);
  rv_queue_consumer_stats ks = kstats(&f, c);
  assert_int_equal(ks.in_flight_count, 1);
  assert_int_equal(ks.finish_count, 0);
  assert_int_equal(ks.held_count, 0);
  assert_int_equal(rv_queue_consumer_held(f.q, c, seq), 0);
  /* a late REQ or TOUCH likewise (no hold left to release) */
  assert_int_equal(req_at(&f, c, g, 1, 0, &ack), RV_QUEUE_ESTALE_ATTEMPT);
  assert_errmsg(&f, "REQ", g, "attempt 1 is not in flight (attempt 2 is)");
  assert_false(ack.held_released);
  assert_int_equal(rv_queue_touch(f.q, f.now, c, g, 1, &ack), RV_QUEUE_ESTALE_ATTEMPT);
  assert_errmsg(&f, "TOUCH", g, "attempt 1 is not in flight (attempt 2 is)");
  /* an attempt that never was is no better */
  assert_int_equal(req_at(&f, c, g, 3, 5 * S, &ack), RV_QUEUE_ESTALE_ATTEMPT);
  assert_errmsg(&f, "REQ", g, "attempt 3 is not in flight (attempt 2 is)");
  ks = kstats(&f, c);
  assert_int_equal(ks.requeue_count, 0);
  assert_int_equal(ks.in_flight_count, 1);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "c")).deferred_count, 0);
  /* attempt 2's own answers act on it */
  assert_int_equal(rv_queue_touch(f.q, f.now, c, g, 2, &ack), RV_QUEUE_OK);
  assert_int_equal(fin_at(&f, c, g, 2, &ack), RV_QUEUE_OK);
  ks = kstats(&f, c);
  assert_int_equal(ks.finish_count, 1);
  assert_int_equal(ks.in_flight_count, 0);
  assert_int_equal(fin_at(&f, c, g, 2, &ack), RV_QUEUE_ENOT_IN_FLIGHT);
  assert_errmsg(&f, "FIN", g, "ID not in flight");

  /* the other order: the current answer first keeps the hold, the late one
   * (now for an id not in flight) releases it with nsqd's error */
  pub(&f, "t");
  uint64_t g2 = deliv(&f, c, 0)->guid;
  tick(&f, f.now + 1 * S);
  assert_int_equal(deliv(&f, c, 0)->attempts, 2);
  assert_int_equal(req_at(&f, c, g2, 2, 0, &ack), RV_QUEUE_OK);
  assert_false(ack.held_released);
  assert_int_equal(kstats(&f, c).requeue_count, 1);
  assert_int_equal(kstats(&f, c).held_count, hold ? 1 : 0);
  /* REQ 0 put it back at once: RDY 2 minus the hold leaves room for it */
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->attempts, 3);
  assert_int_equal(fin_at(&f, c, g2, 1, &ack), RV_QUEUE_ESTALE_ATTEMPT);
  assert_errmsg(&f, "FIN", g2, "attempt 1 is not in flight (attempt 3 is)");
  assert_int_equal(ack.held_released, hold);
  assert_int_equal(kstats(&f, c).held_count, 0);
  assert_int_equal(kstats(&f, c).in_flight_count, 1);

  /* in flight at another consumer: nsqd's ENOT_OWNER, whatever the attempt */
  uint64_t d = sub_opts(&f, "t", "c", 1, false, false, 60 * S);
  tick(&f, f.now + 1 * S); /* g2 attempt 3 times out at c, goes to d (or c) */
  uint64_t owner = ndeliv(&f, d) ? d : c;
  uint64_t stranger = owner == d ? c : d;
  uint16_t att = deliv(&f, owner, 0)->attempts;
  assert_int_equal(att, 4);
  assert_int_equal(fin_at(&f, stranger, g2, att, &ack), RV_QUEUE_ENOT_OWNER);
  assert_errmsg(&f, "FIN", g2, "client does not own message");
  assert_int_equal(fin_at(&f, owner, g2, att, &ack), RV_QUEUE_OK);
  fx_close(&f);
}

static void test_attempt_qualified_answers_timeout_notify(void **state) {
  (void)state;
  attempt_qualified_answers(false);
}

static void test_attempt_qualified_answers_hold_slots(void **state) {
  (void)state;
  attempt_qualified_answers(true);
}

/* Without the attempt (nsqd's commands) nothing changed: a late FIN acts on
 * the redelivery of the same id, and on a hold rule 3 keeps the hold. */
static void test_unqualified_answers_keep_nsq_behaviour(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 2, true, true, 1 * S);
  pub(&f, "t");
  uint64_t g = deliv(&f, c, 0)->guid;
  tick(&f, f.now + 1 * S);
  assert_int_equal(deliv(&f, c, 0)->attempts, 2);
  rv_queue_ack ack;
  assert_int_equal(req_at(&f, c, g, 0, 0, &ack), RV_QUEUE_OK); /* acts on attempt 2 */
  assert_false(ack.held_released);
  assert_int_equal(kstats(&f, c).requeue_count, 1);
  assert_int_equal(kstats(&f, c).held_count, 1);
  fx_close(&f);
}

static void test_held_slots_released_on_disconnect_and_freed_slot_used(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 1, true, false, 1 * S);
  pubn(&f, "t", 2, 0);
  uint64_t g = deliv(&f, c, 0)->guid;
  uint64_t d = sub_opts(&f, "t", "c", 5, false, false, 60 * S);
  assert_int_equal(ndeliv(&f, d), 1); /* seq 2 */
  tick(&f, f.now + 1 * S);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TIMEOUT, 0), 0); /* not asked */
  assert_int_equal(ndeliv(&f, d), 1);                        /* d gets seq 1 */
  assert_int_equal(kstats(&f, c).held_count, 1);
  assert_int_equal(rv_queue_touch(f.q, f.now, c, g, 0, NULL), RV_QUEUE_ENOT_OWNER);
  assert_int_equal(kstats(&f, c).held_count, 1);
  pub(&f, "t");
  assert_int_equal(ndeliv(&f, c), 0);
  rv_queue_stats st;
  rv_queue_get_stats(f.q, &st);
  assert_int_equal(st.held, 1);
  unsub(&f, c);
  rv_queue_get_stats(f.q, &st);
  assert_int_equal(st.held, 0);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "c")).held_count, 0);
  fx_close(&f);
}

static void tweak_max_held_1(rv_queue_opts *o) { o->max_held = 1; }

static void test_held_slots_bounded(void **state) {
  (void)state;
  fx f;
  fx_open(&f, tweak_max_held_1);
  uint64_t c = sub_opts(&f, "t", "c", 2, true, false, 1 * S);
  pubn(&f, "t", 2, 0);
  tick(&f, f.now + 1 * S);
  rv_queue_stats st;
  rv_queue_get_stats(f.q, &st);
  assert_int_equal(st.held, 1);
  assert_int_equal(st.held_dropped, 1);
  assert_int_equal(kstats(&f, c).held_count, 1);
  assert_int_equal(kstats(&f, c).in_flight_count, 1); /* the dropped hold's slot was reused */
  fx_close(&f);
}

/* ---- ephemeral, pause, empty, delete ------------------------------------- */

static void test_ephemeral_channel_and_topic(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "c#ephemeral", 1);
  uint64_t b = sub(&f, "t", "c#ephemeral", 1);
  uint64_t d = sub(&f, "t", "durable", 1);
  unsub(&f, a);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_CHANNEL_DELETED, 0), 0);
  unsub(&f, b);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_CHANNEL_DELETED, 0), 1);
  uint64_t th, ch;
  assert_int_equal(rv_queue_topic_find(f.q, "t", &th), RV_QUEUE_OK);
  assert_int_equal(rv_queue_channel_find(f.q, th, "c#ephemeral", &ch), RV_QUEUE_ENOCHANNEL);
  unsub(&f, d);
  assert_int_equal(rv_queue_channel_find(f.q, th, "durable", &ch), RV_QUEUE_OK);
  /* an ephemeral topic goes with its last channel */
  uint64_t e = sub(&f, "e#ephemeral", "x#ephemeral", 1);
  pub(&f, "e#ephemeral");
  assert_int_equal(ndeliv(&f, e), 1);
  unsub(&f, e);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_CHANNEL_DELETED, 0), 1);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TOPIC_DELETED, 0), 1);
  assert_int_equal(rv_queue_topic_find(f.q, "e#ephemeral", &th), RV_QUEUE_ENOTOPIC);
  rv_qstore_mem_counts mc;
  rv_qstore_mem_counts_get(f.m, &mc);
  assert_int_equal(mc.topics_deleted, 1);
  assert_int_equal(mc.channels_deleted, 2);
  /* an ephemeral channel made by HTTP create lives until a consumer leaves */
  uint64_t h = channel(&f, "t", "h#ephemeral");
  assert_int_equal(cstats(&f, h).client_count, 0);
  fx_close(&f);
}

static void test_pause_channel_and_topic(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 10, false, false, 1 * S);
  uint64_t ch = chan_of(&f, "t", "c"), th = topic(&f, "t");
  pub(&f, "t");
  assert_int_equal(ndeliv(&f, c), 1);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_channel_pause(f.q, f.now, ch, true, &f.ev), RV_QUEUE_OK);
  pubn(&f, "t", 2, 0);
  assert_int_equal(ndeliv(&f, c), 0);
  assert_int_equal(cstats(&f, ch).depth, 2);
  assert_true(cstats(&f, ch).paused);
  tick(&f, f.now + 1 * S); /* in-flight still times out; nothing delivered */
  assert_int_equal(cstats(&f, ch).timeout_count, 1);
  assert_int_equal(ndeliv(&f, c), 0);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_channel_pause(f.q, f.now, ch, false, &f.ev), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, c), 3);
  /* topic pause: messages stay with the topic */
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_topic_pause(f.q, f.now, th, true, &f.ev), RV_QUEUE_OK);
  pubn(&f, "t", 2, 0);
  assert_int_equal(ndeliv(&f, c), 0);
  rv_queue_topic_stats ts;
  assert_int_equal(rv_queue_topic_stats_get(f.q, th, &ts), RV_QUEUE_OK);
  assert_int_equal(ts.depth, 2);
  assert_true(ts.paused);
  assert_int_equal(cstats(&f, ch).depth, 0);
  rv_queue_msg_view mv;
  assert_int_equal(rv_queue_msg_get(f.q, ch, ts.next_seq - 1, &mv), RV_QUEUE_OK);
  assert_int_equal(mv.state, RV_QUEUE_MSG_PENDING);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_topic_pause(f.q, f.now, th, false, &f.ev), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, c), 2);
  fx_close(&f);
}

static void test_empty_channel_and_topic(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 2, true, false, 60 * S);
  uint64_t ch = chan_of(&f, "t", "c");
  pubn(&f, "t", 5, 0);
  uint64_t g1 = deliv(&f, c, 0)->guid;
  assert_int_equal(req(&f, c, g1, 30 * S, NULL), RV_QUEUE_OK); /* deferred */
  rv_queue_channel_stats s = cstats(&f, ch);
  assert_int_equal(s.in_flight_count, 2);
  assert_int_equal(s.deferred_count, 1);
  assert_int_equal(s.depth, 2);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_channel_empty(f.q, f.now, ch, &f.ev), RV_QUEUE_OK);
  check_ok(&f);
  s = cstats(&f, ch);
  assert_int_equal(s.in_flight_count, 0);
  assert_int_equal(s.deferred_count, 0);
  assert_int_equal(s.depth, 0);
  assert_int_equal(s.floor, 5);
  assert_int_equal(kstats(&f, c).held_count, 2); /* its handlers still run */
  assert_int_equal(rv_queue_next_deadline(f.q), RV_QUEUE_NO_DEADLINE);
  pub(&f, "t");
  assert_int_equal(ndeliv(&f, c), 0); /* held slots */
  /* topic empty drops what the topic holds back */
  pubn(&f, "x", 3, 0);
  uint64_t tx = topic(&f, "x");
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_topic_empty(f.q, f.now, tx, &f.ev), RV_QUEUE_OK);
  uint64_t xc = channel(&f, "x", "c");
  assert_int_equal(cstats(&f, xc).depth, 0);
  /* and, on a paused topic with a channel, only the held-back part */
  uint64_t k = sub(&f, "x", "c", 0);
  pubn(&f, "x", 2, 0);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_topic_pause(f.q, f.now, tx, true, &f.ev), RV_QUEUE_OK);
  pubn(&f, "x", 3, 0);
  assert_int_equal(rv_queue_topic_empty(f.q, f.now, tx, &f.ev), RV_QUEUE_OK);
  assert_int_equal(rv_queue_topic_pause(f.q, f.now, tx, false, &f.ev), RV_QUEUE_OK);
  check_ok(&f);
  assert_int_equal(cstats(&f, xc).depth, 2);
  rdy(&f, k, 10);
  assert_int_equal(ndeliv(&f, k), 2);
  pub(&f, "x");
  assert_int_equal(ndeliv(&f, k), 1);
  assert_int_equal(deliv(&f, k, 0)->seq, 9);
  assert_int_equal(cstats(&f, xc).floor, 3);
  fx_close(&f);
}

static void test_delete_closes_consumers(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "a", 5), b = sub(&f, "t", "b", 5);
  pubn(&f, "t", 3, 0);
  uint64_t ca = chan_of(&f, "t", "a");
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_channel_delete(f.q, f.now, ca, &f.ev), RV_QUEUE_OK);
  check_ok(&f);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_CLOSE, a), 1);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_CHANNEL_DELETED, 0), 1);
  assert_int_equal(rv_queue_channel_delete(f.q, f.now, ca, &f.ev), RV_QUEUE_ENOCHANNEL);
  assert_int_equal(fin(&f, a, 1, NULL), RV_QUEUE_ENOCONSUMER);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_topic_delete(f.q, f.now, topic(&f, "t"), &f.ev), RV_QUEUE_OK);
  check_ok(&f);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_CLOSE, b), 1);
  assert_int_equal(count_ev(&f, RV_QUEUE_EV_TOPIC_DELETED, 0), 1);
  rv_queue_stats st;
  rv_queue_get_stats(f.q, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(rv_queue_next_deadline(f.q), RV_QUEUE_NO_DEADLINE);
  /* a recreated topic gets a new id prefix: old ids cannot name new messages */
  uint64_t k = sub(&f, "t", "a", 1);
  pub(&f, "t");
  assert_int_equal(deliv(&f, k, 0)->seq, 1);
  assert_int_equal(deliv(&f, k, 0)->guid >> 48, 2);
  fx_close(&f);
}

static void test_names_and_not_found(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t ch;
  assert_int_equal(rv_queue_channel_create(f.q, f.now, 12345, "c", &ch), RV_QUEUE_ENOTOPIC);
  assert_int_equal(rv_queue_topic_find(f.q, "nope", NULL), RV_QUEUE_ENOTOPIC);
  assert_int_equal(rv_queue_topic_create(f.q, f.now, "bad name", NULL), RV_QUEUE_ENAME);
  assert_int_equal(rv_queue_topic_create(f.q, f.now, "", NULL), RV_QUEUE_ENAME);
  char longname[80];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = 0;
  assert_int_equal(rv_queue_topic_create(f.q, f.now, longname, NULL), RV_QUEUE_ENAME);
  uint64_t t1 = topic(&f, "t"), t2 = topic(&f, "t");
  assert_int_equal(t1, t2); /* idempotent, as nsqd's GetTopic */
  assert_int_equal(rv_queue_channel_create(f.q, f.now, t1, "c#ephemeral", &ch), RV_QUEUE_OK);
  assert_true(cstats(&f, ch).ephemeral);
  assert_int_equal(rv_queue_channel_find(f.q, t1, "d", &ch), RV_QUEUE_ENOCHANNEL);
  rv_queue_consumer_opts o = {.msg_timeout_ns = 999 * MS};
  assert_int_equal(rv_queue_subscribe(f.q, f.now, "t", "c", &o, NULL, &f.ev),
                   RV_QUEUE_EMSG_TIMEOUT);
  o.msg_timeout_ns = f.o.max_msg_timeout_ns + 1;
  assert_int_equal(rv_queue_subscribe(f.q, f.now, "t", "c", &o, NULL, &f.ev),
                   RV_QUEUE_EMSG_TIMEOUT);
  assert_string_equal(rv_queue_errmsg(f.q),
                      "msg_timeout 900000 ms is invalid: must be 1000..900000 ms");
  fx_close(&f);
}

/* ---- limits -------------------------------------------------------------- */

static void tweak_small(rv_queue_opts *o) {
  o->max_topics = 2;
  o->max_channels_per_topic = 2;
  o->max_channels = 3;
  o->max_consumers = 4;
  o->max_consumers_per_channel = 2;
  o->max_deferred_per_channel = 2;
  o->max_records_per_channel = 4;
}

static void test_limits(void **state) {
  (void)state;
  fx f;
  fx_open(&f, tweak_small);
  topic(&f, "a");
  topic(&f, "b");
  assert_int_equal(rv_queue_topic_create(f.q, f.now, "c", NULL), RV_QUEUE_ETOPICS);
  uint64_t ta = topic(&f, "a"), tb = topic(&f, "b");
  assert_int_equal(rv_queue_channel_create(f.q, f.now, ta, "1", NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_channel_create(f.q, f.now, ta, "2", NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_channel_create(f.q, f.now, ta, "3", NULL), RV_QUEUE_ETOPIC_CHANNELS);
  assert_int_equal(rv_queue_channel_create(f.q, f.now, tb, "1", NULL), RV_QUEUE_OK);
  assert_int_equal(rv_queue_channel_create(f.q, f.now, tb, "2", NULL), RV_QUEUE_ECHANNELS);
  uint64_t k1 = sub(&f, "a", "1", 10);
  sub(&f, "a", "1", 0);
  assert_int_equal(rv_queue_subscribe(f.q, f.now, "a", "1", NULL, NULL, &f.ev),
                   RV_QUEUE_ECHANNEL_CONSUMERS);
  sub(&f, "a", "2", 0);
  sub(&f, "b", "1", 0);
  assert_int_equal(rv_queue_subscribe(f.q, f.now, "b", "1", NULL, NULL, &f.ev),
                   RV_QUEUE_ECONSUMERS);
  /* deferred room is checked on every channel before anything happens */
  pubn(&f, "a", 2, 5 * S);
  rv_qstore_msg m = {.body = "x", .body_bytes = 1, .defer_ns = 5 * S};
  rv_queue_topic_stats before;
  assert_int_equal(rv_queue_topic_stats_get(f.q, ta, &before), RV_QUEUE_OK);
  assert_int_equal(rv_queue_publish(f.q, f.now, ta, &m, 1, NULL, &f.ev), RV_QUEUE_EDEFERRED);
  rv_queue_topic_stats after;
  assert_int_equal(rv_queue_topic_stats_get(f.q, ta, &after), RV_QUEUE_OK);
  assert_int_equal(after.next_seq, before.next_seq);
  /* records per channel (4, two of them deferred) stall fresh delivery */
  pubn(&f, "a", 5, 0);
  assert_int_equal(ndeliv(&f, k1), 2);
  uint64_t g = deliv(&f, k1, 0)->guid;
  /* REQ with delay into a full deferred queue: refused, stays in flight */
  assert_int_equal(req(&f, k1, g, 1 * S, NULL), RV_QUEUE_EDEFERRED);
  rv_queue_msg_view mv;
  assert_int_equal(rv_queue_msg_get(f.q, chan_of(&f, "a", "1"), g & RV_QUEUE_SEQ_MAX, &mv), 0);
  assert_int_equal(mv.state, RV_QUEUE_MSG_IN_FLIGHT);
  assert_int_equal(fin(&f, k1, g, NULL), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, k1), 1); /* a record freed: one more */
  /* a failing store changes nothing */
  rv_qstore_mem_fail_appends(f.m, 1);
  m.defer_ns = 0;
  assert_int_equal(rv_queue_publish(f.q, f.now, tb, &m, 1, NULL, &f.ev), RV_QUEUE_ESTORE);
  assert_int_equal(rv_queue_topic_stats_get(f.q, tb, &after), RV_QUEUE_OK);
  assert_int_equal(after.next_seq, 1);
  assert_int_equal(after.message_count, 0);
  assert_int_equal(rv_queue_publish(f.q, f.now, tb, &m, 1, NULL, &f.ev), RV_QUEUE_OK);
  fx_close(&f);
}

static void test_clock_never_goes_back(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 1, false, false, 1 * S);
  pub(&f, "t");
  int64_t due = rv_queue_next_deadline(f.q);
  f.now -= 100 * S; /* the shell's wall clock stepped back */
  rv_queue_ack ack;
  assert_int_equal(fin(&f, c, deliv(&f, c, 0)->guid, &ack), RV_QUEUE_OK);
  assert_int_equal(ack.latency_ns, 0);
  pub(&f, "t");
  assert_int_equal(rv_queue_next_deadline(f.q), due); /* from T0, not from T0 - 100 s */
  fx_close(&f);
}

/* ---- floors and recovery ------------------------------------------------- */

static void test_floor_tracks_lowest_unfinished(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t a = sub(&f, "t", "a", 10);
  channel(&f, "t", "b");
  uint64_t ca = chan_of(&f, "t", "a"), cb = chan_of(&f, "t", "b");
  pubn(&f, "t", 4, 0);
  uint64_t g[4];
  for (int i = 0; i < 4; i++)
    g[i] = deliv(&f, a, (size_t)i)->guid;
  assert_int_equal(rv_queue_channel_floor(f.q, ca), 0);
  assert_int_equal(fin(&f, a, g[1], NULL), 0);
  assert_int_equal(fin(&f, a, g[2], NULL), 0);
  assert_int_equal(rv_queue_channel_floor(f.q, ca), 0);
  assert_int_equal(fin(&f, a, g[0], NULL), 0);
  assert_int_equal(rv_queue_channel_floor(f.q, ca), 3);
  assert_int_equal(rv_queue_channel_floor(f.q, cb), 0); /* nothing taken */
  assert_int_equal(rv_queue_topic_floor(f.q, topic(&f, "t")), 0);
  rv_queue_events_clear(&f.ev);
  assert_int_equal(rv_queue_channel_delete(f.q, f.now, cb, &f.ev), 0);
  assert_int_equal(rv_queue_topic_floor(f.q, topic(&f, "t")), 3);
  fx_close(&f);
}

static void test_recovery_redelivers_in_flight_keeps_deferred(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 4, false, false, 60 * S);
  channel(&f, "t", "idle");
  sub(&f, "t", "e#ephemeral", 0);
  pubn(&f, "t", 10, 0);
  uint64_t g[4];
  for (int i = 0; i < 4; i++)
    g[i] = deliv(&f, c, (size_t)i)->guid;
  assert_int_equal(fin(&f, c, g[0], NULL), 0);
  assert_int_equal(fin(&f, c, g[2], NULL), 0);
  assert_int_equal(req(&f, c, g[1], 30 * S, NULL), 0);       /* deferred to T0+30 s */
  uint64_t dp = pubn(&f, "t", 1, 20 * S);                    /* DPUB, due T0+20 s */
  /* in flight at the crash: 4 and what the freed slots took (5, 6, 7) */
  uint64_t ch_before = chan_of(&f, "t", "c");
  rv_queue_channel_stats sb = cstats(&f, ch_before);
  f.now += 5 * S;
  fx_crash(&f);
  uint64_t ch = chan_of(&f, "t", "c");
  rv_queue_channel_stats s = cstats(&f, ch);
  assert_int_equal(s.deferred_count, 2);
  assert_int_equal(s.in_flight_count, 0);
  assert_int_equal(s.depth, sb.depth + sb.in_flight_count);
  assert_int_equal(s.floor, 1);
  uint64_t th;
  assert_int_equal(rv_queue_topic_find(f.q, "t", &th), 0);
  assert_int_equal(rv_queue_channel_find(f.q, th, "e#ephemeral", NULL), RV_QUEUE_ENOCHANNEL);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "idle")).depth, 10);
  assert_int_equal(cstats(&f, chan_of(&f, "t", "idle")).deferred_count, 1); /* the DPUB */
  uint64_t k = sub_opts(&f, "t", "c", 100, false, false, 60 * S);
  size_t n = ndeliv(&f, k);
  assert_int_equal(n, s.depth);
  for (size_t i = 0; i < n; i++) {
    const rv_queue_event *x = deliv(&f, k, i);
    assert_int_not_equal(x->seq, 1); /* FIN'd: never again */
    assert_int_not_equal(x->seq, 3);
    assert_int_not_equal(x->seq, 2); /* still deferred */
    assert_int_not_equal(x->seq, dp);
    if (x->seq == 4)
      assert_int_equal(x->guid, g[3]); /* the id survives the restart */
  }
  tick(&f, T0 + 20 * S);
  assert_int_equal(ndeliv(&f, k), 1);
  assert_int_equal(deliv(&f, k, 0)->seq, dp);
  tick(&f, T0 + 30 * S);
  assert_int_equal(ndeliv(&f, k), 1);
  assert_int_equal(deliv(&f, k, 0)->guid, g[1]);
  assert_int_equal(deliv(&f, k, 0)->attempts, 2); /* the journal kept its attempts */
  /* new publishes continue the sequence and the ids */
  uint64_t s2 = pub(&f, "t");
  assert_int_equal(s2, dp + 1);
  assert_int_equal(deliv(&f, k, 0)->guid, rv_queue_guid((uint16_t)(g[0] >> 48), dp + 1));
  fx_close(&f);
}

static void test_restore_clips_and_merges(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  /* a log of 20 messages, restored by hand */
  uint64_t th = topic(&f, "t");
  for (int i = 0; i < 20; i++)
    pub(&f, "t");
  rv_queue_topic_stats ts;
  assert_int_equal(rv_queue_topic_stats_get(f.q, th, &ts), 0);
  void *tstore = ts.store_ctx;
  rv_queue_destroy(f.q);
  assert_int_equal(rv_queue_create(&f.q, &f.o, NULL), 0);
  rv_queue_topic_state tr = {.name = "t", .id_prefix = 9, .first_seq = 1, .next_seq = 21,
                             .store_ctx = tstore};
  assert_int_equal(rv_queue_topic_restore(f.q, f.now, &tr, &th), 0);
  assert_int_equal(rv_queue_topic_restore(f.q, f.now, &tr, NULL), RV_QUEUE_EINVAL);
  rv_qstore_range fin_r[] = {{12, 14}, {3, 4}, {1, 2}, {5, 5}, {13, 16}, {19, 30}};
  rv_qstore_deferred def[] = {{8, T0 + 5 * S, 3}, {4, T0, 1}, {25, T0, 1}, {8, T0, 1}};
  rv_queue_channel_state cr = {.name = "c", .floor = 2, .finished = fin_r, .nfinished = 6,
                               .deferred = def, .ndeferred = 4};
  uint64_t ch;
  assert_int_equal(rv_queue_channel_restore(f.q, f.now, th, &cr, &ch), 0);
  check_ok(&f);
  rv_queue_channel_stats s = cstats(&f, ch);
  /* finished: 1..5, 12..16, 19..20; deferred: 8; ready: 6,7,9,10,11,17,18 */
  assert_int_equal(s.floor, 5);
  assert_int_equal(s.deferred_count, 1);
  assert_int_equal(s.depth, 7);
  uint64_t k = sub(&f, "t", "c", 100);
  assert_int_equal(ndeliv(&f, k), 7);
  uint64_t want[] = {6, 7, 9, 10, 11, 17, 18};
  for (size_t i = 0; i < 7; i++) {
    assert_int_equal(deliv(&f, k, i)->seq, want[i]);
    assert_int_equal(deliv(&f, k, i)->guid, rv_queue_guid(9, want[i]));
  }
  tick(&f, T0 + 5 * S);
  assert_int_equal(ndeliv(&f, k), 1);
  assert_int_equal(deliv(&f, k, 0)->attempts, 4);
  /* a new topic never reuses the restored prefix */
  uint64_t k2 = sub(&f, "u", "c", 1);
  pub(&f, "u");
  assert_int_equal(deliv(&f, k2, 0)->guid >> 48, 10);
  fx_close(&f);
}

static void tweak_gated(rv_queue_opts *o) { o->deliver_after_ack = true; }

static int acked(fx *f, const char *t, uint64_t seq) {
  rv_queue_events_clear(&f->ev);
  int rc = rv_queue_topic_acked(f->q, f->now, topic(f, t), seq, &f->ev);
  check_ok(f);
  return rc;
}

/* With a durable log, nothing is delivered (and no DPUB is deferred) before
 * the store acknowledges it. */
static void test_deliver_after_ack(void **state) {
  (void)state;
  fx f;
  fx_open(&f, tweak_gated);
  uint64_t c = sub(&f, "t", "c", 10);
  uint64_t ch = chan_of(&f, "t", "c");
  pubn(&f, "t", 3, 0);
  assert_int_equal(ndeliv(&f, c), 0);
  assert_int_equal(cstats(&f, ch).depth, 3);
  assert_int_equal(acked(&f, "t", 2), RV_QUEUE_OK);
  assert_int_equal(ndeliv(&f, c), 2);
  assert_int_equal(acked(&f, "t", 1), RV_QUEUE_OK); /* going back: ignored */
  assert_int_equal(ndeliv(&f, c), 0);
  uint64_t d = pubn(&f, "t", 1, 1 * MS);
  assert_int_equal(cstats(&f, ch).deferred_count, 0); /* not readable yet */
  tick(&f, f.now + 5 * MS);
  assert_int_equal(ndeliv(&f, c), 0);
  uint64_t late = channel(&f, "t", "late"); /* created after the DPUB */
  assert_int_equal(acked(&f, "t", 100), RV_QUEUE_OK); /* clamped to the last published */
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->seq, 3);
  assert_int_equal(cstats(&f, ch).deferred_count, 1);
  assert_int_equal(cstats(&f, late).deferred_count, 0);
  rv_queue_topic_stats ts;
  assert_int_equal(rv_queue_topic_stats_get(f.q, topic(&f, "t"), &ts), 0);
  assert_int_equal(ts.acked_end, d + 1);
  assert_true(rv_queue_next_deadline(f.q) <= f.now); /* overdue: fires at once */
  tick(&f, f.now);
  assert_int_equal(ndeliv(&f, c), 1);
  assert_int_equal(deliv(&f, c, 0)->seq, d);
  /* what was durable at a crash is deliverable after it */
  pubn(&f, "t", 2, 0);
  fx_crash(&f);
  uint64_t k = sub(&f, "t", "c", 10);
  assert_int_equal(ndeliv(&f, k), 5); /* 1, 2, 3, 5, 6 */
  tick(&f, f.now);                    /* the journaled DPUB is overdue */
  assert_int_equal(ndeliv(&f, k), 1);
  assert_int_equal(deliv(&f, k, 0)->seq, d);
  fx_close(&f);
}

/* ---- structures under load ----------------------------------------------- */

static uint64_t rng_next(uint64_t *s);

/* 2500 in flight (RDY max), FIN'd in random order: the seq map's deletion
 * (backward shift) and growth, the floor heap, the timer heap. */
static void test_many_in_flight_random_fin(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  enum { N = 2500 };
  uint64_t c = sub(&f, "t", "c", N);
  static uint64_t guids[N];
  size_t got = 0;
  for (int i = 0; i < N / 50; i++) {
    pubn(&f, "t", 50, 0);
    for (size_t k = 0; k < ndeliv(&f, c); k++)
      guids[got++] = deliv(&f, c, k)->guid;
  }
  assert_int_equal(got, N);
  pubn(&f, "t", 10, 0);
  assert_int_equal(ndeliv(&f, c), 0); /* RDY 2500 reached */
  uint64_t seed = 99;
  for (size_t i = N - 1; i > 0; i--) { /* Fisher-Yates */
    size_t j = (size_t)(rng_next(&seed) % (i + 1));
    uint64_t x = guids[i];
    guids[i] = guids[j];
    guids[j] = x;
  }
  uint64_t ch = chan_of(&f, "t", "c");
  uint64_t lowest = 1;
  static bool done[N + 1];
  for (size_t i = 0; i < N; i++) {
    rv_queue_events_clear(&f.ev);
    assert_int_equal(rv_queue_fin(f.q, f.now, c, guids[i], 0, NULL, &f.ev), RV_QUEUE_OK);
    done[guids[i] & RV_QUEUE_SEQ_MAX] = true;
    while (lowest <= N && done[lowest])
      lowest++;
    if (i % 97 == 0) {
      check_ok(&f);
      /* the floor is below the lowest unfinished, which is the lowest not FIN'd
       * among the first N or one of the 10 delivered as slots freed */
      assert_true(rv_queue_channel_floor(f.q, ch) <= lowest - 1);
    }
  }
  check_ok(&f);
  assert_int_equal(kstats(&f, c).finish_count, N);
  assert_int_equal(kstats(&f, c).in_flight_count, 10);
  assert_int_equal(rv_queue_channel_floor(f.q, ch), N);
  fx_close(&f);
}

static bool visit_topic(const rv_queue_topic_stats *s, void *arg) {
  char *buf = arg;
  strcat(buf, s->name);
  strcat(buf, " ");
  return strlen(buf) < 40;
}

static bool visit_channel(const rv_queue_channel_stats *s, void *arg) {
  strcat(arg, s->name);
  strcat(arg, " ");
  return true;
}

static bool visit_consumer(const rv_queue_consumer_stats *s, void *arg) {
  uint64_t *sum = arg;
  *sum += (uint64_t)s->ready_count;
  return true;
}

/* Hundreds of topics created and deleted: the name map's deletion, handles
 * recycled with new generations, and the listings in creation order. */
static void test_many_topics_and_listings(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  enum { N = 300 };
  static uint64_t th[N];
  static bool alive[N];
  char name[32];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "t%d", i);
    th[i] = topic(&f, name);
    alive[i] = true;
  }
  uint64_t seed = 5;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      if (rng_next(&seed) % 3)
        continue;
      snprintf(name, sizeof name, "t%d", i);
      if (alive[i]) {
        assert_int_equal(rv_queue_topic_delete(f.q, f.now, th[i], &f.ev), RV_QUEUE_OK);
        assert_int_equal(rv_queue_topic_delete(f.q, f.now, th[i], &f.ev), RV_QUEUE_ENOTOPIC);
      } else {
        th[i] = topic(&f, name);
      }
      alive[i] = !alive[i];
    }
    check_ok(&f);
    for (int i = 0; i < N; i++) {
      uint64_t h;
      snprintf(name, sizeof name, "t%d", i);
      int rc = rv_queue_topic_find(f.q, name, &h);
      if (alive[i]) {
        assert_int_equal(rc, RV_QUEUE_OK);
        assert_int_equal(h, th[i]);
      } else {
        assert_int_equal(rc, RV_QUEUE_ENOTOPIC);
      }
    }
  }
  /* listings */
  rv_queue_destroy(f.q);
  assert_int_equal(rv_queue_create(&f.q, &f.o, NULL), RV_QUEUE_OK);
  sub(&f, "b", "z", 3);
  sub(&f, "b", "y", 4);
  sub(&f, "b", "z", 5);
  topic(&f, "a");
  char buf[128] = "";
  assert_int_equal(rv_queue_topic_list(f.q, visit_topic, buf), 2);
  assert_string_equal(buf, "b a ");
  buf[0] = 0;
  assert_int_equal(rv_queue_channel_list(f.q, topic(&f, "b"), visit_channel, buf), 2);
  assert_string_equal(buf, "z y ");
  uint64_t sum = 0;
  assert_int_equal(rv_queue_consumer_list(f.q, chan_of(&f, "b", "z"), visit_consumer, &sum), 2);
  assert_int_equal(sum, 8);
  fx_close(&f);
}

/* A DPUB message fires, is delivered and FIN'd while the channel's backlog
 * is still in front of it: it becomes a tombstone, and the cursor passes it
 * without delivering it again. */
static void test_dpub_ahead_of_backlog(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t c = sub_opts(&f, "t", "c", 1, false, false, 60 * S);
  uint64_t ch = chan_of(&f, "t", "c");
  pubn(&f, "t", 4, 0); /* 1 in flight, 3 waiting */
  uint64_t g1 = deliv(&f, c, 0)->guid;
  uint64_t d = pubn(&f, "t", 1, 1 * S);
  pubn(&f, "t", 2, 0);
  tick(&f, f.now + 1 * S);
  assert_int_equal(fin(&f, c, g1, NULL), RV_QUEUE_OK);
  assert_int_equal(deliv(&f, c, 0)->seq, d); /* ready (fired) before fresh */
  assert_int_equal(fin(&f, c, deliv(&f, c, 0)->guid, NULL), RV_QUEUE_OK);
  rv_queue_msg_view v;
  assert_int_equal(rv_queue_msg_get(f.q, ch, d, &v), 0);
  assert_int_equal(v.state, RV_QUEUE_MSG_FINISHED);
  assert_int_equal(cstats(&f, ch).records, 1 + 1); /* in flight + tombstone */
  assert_int_equal(cstats(&f, ch).depth, 4);
  uint64_t seen[8];
  size_t n = 0;
  seen[n++] = deliv(&f, c, 0)->seq;
  for (int i = 0; i < 6 && ndeliv(&f, c); i++) {
    assert_int_equal(fin(&f, c, deliv(&f, c, 0)->guid, NULL), RV_QUEUE_OK);
    if (ndeliv(&f, c))
      seen[n++] = deliv(&f, c, 0)->seq;
  }
  uint64_t want[] = {2, 3, 4, 6, 7};
  assert_int_equal(n, 5);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(seen[i], want[i]);
  assert_int_equal(cstats(&f, ch).records, 0);
  assert_int_equal(rv_queue_channel_floor(f.q, ch), 7);
  fx_close(&f);
}

/* The log lost messages the topic's next_seq still counts: the channel
 * skips them, counts them, and goes on. */
static void test_lost_messages_are_skipped(void **state) {
  (void)state;
  fx f;
  fx_open(&f, NULL);
  uint64_t th = topic(&f, "t");
  pubn(&f, "t", 2, 0);
  rv_queue_topic_stats ts;
  assert_int_equal(rv_queue_topic_stats_get(f.q, th, &ts), 0);
  rv_queue_destroy(f.q);
  assert_int_equal(rv_queue_create(&f.q, &f.o, NULL), 0);
  rv_queue_topic_state tr = {.name = "t", .id_prefix = 1, .first_seq = 1, .next_seq = 6,
                             .store_ctx = ts.store_ctx};
  assert_int_equal(rv_queue_topic_restore(f.q, f.now, &tr, &th), 0);
  rv_qstore_deferred def[] = {{4, T0, 1}}; /* lost too: ignored */
  rv_queue_channel_state cr = {.name = "c", .deferred = def, .ndeferred = 1};
  uint64_t ch;
  assert_int_equal(rv_queue_channel_restore(f.q, f.now, th, &cr, &ch), 0);
  uint64_t c = sub(&f, "t", "c", 10);
  assert_int_equal(ndeliv(&f, c), 2);
  assert_int_equal(cstats(&f, ch).lost_count, 3);
  assert_int_equal(cstats(&f, ch).depth, 0);
  rv_queue_stats st;
  rv_queue_get_stats(f.q, &st);
  assert_int_equal(st.lost, 3);
  fx_close(&f);
}

/* ---- determinism and the randomized model -------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n) { return rng_next(s) % n; }

#define MODEL_CONSUMERS 6
#define MODEL_CHANNELS 3
#define MODEL_MAX_SEQ 400
#define MODEL_STEPS 2500

static const char *const model_channels[MODEL_CHANNELS] = {"a", "b", "c"};

typedef struct model {
  fx f;
  uint64_t seed;
  uint64_t cons[MODEL_CONSUMERS];       /* 0: not subscribed */
  int cons_ch[MODEL_CONSUMERS];
  int64_t cons_rdy[MODEL_CONSUMERS];
  uint64_t owner[MODEL_CHANNELS][MODEL_MAX_SEQ + 1]; /* consumer a message is in flight at */
  bool finned[MODEL_CHANNELS][MODEL_MAX_SEQ + 1];
  uint64_t published;
  bool gated;                           /* deliver_after_ack */
  uint64_t hash;                        /* of every event, for determinism */
} model;

static int model_ch_index(model *m, uint64_t ch) {
  for (int i = 0; i < MODEL_CHANNELS; i++) {
    uint64_t h;
    uint64_t th;
    if (rv_queue_topic_find(m->f.q, "t", &th) == 0 &&
        rv_queue_channel_find(m->f.q, th, model_channels[i], &h) == 0 && h == ch)
      return i;
  }
  fail_msg("unknown channel");
  return -1;
}

/* Apply the events of the last call to the model and check them. */
static void model_events(model *m) {
  fx *f = &m->f;
  for (size_t i = 0; i < f->ev.len; i++) {
    const rv_queue_event *x = &f->ev.v[i];
    m->hash = (m->hash ^ ((uint64_t)x->type << 56 ^ x->consumer ^ x->seq << 20 ^ x->attempts)) *
              UINT64_C(1099511628211);
    if (x->type == RV_QUEUE_EV_DELIVER) {
      int ci = model_ch_index(m, x->channel);
      assert_true(x->seq >= 1 && x->seq <= m->published);
      if (m->finned[ci][x->seq])
        fail_msg("seed %llu: FIN'd message %llu redelivered on %s", (unsigned long long)m->seed,
                 (unsigned long long)x->seq, model_channels[ci]);
      rv_queue_topic_stats ts;
      assert_int_equal(rv_queue_topic_stats_get(f->q, x->topic, &ts), 0);
      if (x->seq >= ts.acked_end)
        fail_msg("seed %llu: unacknowledged %llu delivered", (unsigned long long)m->seed,
                 (unsigned long long)x->seq);
      assert_int_equal(m->owner[ci][x->seq], 0);
      m->owner[ci][x->seq] = x->consumer;
      rv_queue_consumer_stats ks = kstats(f, x->consumer);
      /* the cap: in_flight + held <= RDY after every delivery */
      if (ks.in_flight_count + ks.held_count > (uint64_t)ks.ready_count)
        fail_msg("seed %llu: consumer over RDY: %llu + %llu > %lld", (unsigned long long)m->seed,
                 (unsigned long long)ks.in_flight_count, (unsigned long long)ks.held_count,
                 (long long)ks.ready_count);
    } else if (x->type == RV_QUEUE_EV_TIMEOUT) {
      int ci = model_ch_index(m, x->channel);
      assert_int_equal(m->owner[ci][x->seq], x->consumer);
      m->owner[ci][x->seq] = 0;
    }
  }
}

/* Every published message is exactly one of finished / in flight / ready /
 * deferred on each channel, agreeing with the model and the counters. */
static void model_check(model *m) {
  fx *f = &m->f;
  check_ok(f);
  uint64_t th;
  if (rv_queue_topic_find(f->q, "t", &th))
    return;
  for (int ci = 0; ci < MODEL_CHANNELS; ci++) {
    uint64_t ch;
    if (rv_queue_channel_find(f->q, th, model_channels[ci], &ch))
      continue;
    rv_queue_channel_stats s = cstats(f, ch);
    uint64_t n_if = 0, n_def = 0, n_ready = 0;
    for (uint64_t seq = 1; seq <= m->published; seq++) {
      rv_queue_msg_view v;
      assert_int_equal(rv_queue_msg_get(f->q, ch, seq, &v), 0);
      switch (v.state) {
      case RV_QUEUE_MSG_IN_FLIGHT:
        n_if++;
        assert_int_equal(v.consumer, m->owner[ci][seq]);
        assert_false(m->finned[ci][seq]);
        break;
      case RV_QUEUE_MSG_DEFERRED:
        n_def++;
        break;
      case RV_QUEUE_MSG_READY:
        n_ready++;
        break;
      case RV_QUEUE_MSG_FINISHED:
      case RV_QUEUE_MSG_NONE:
      case RV_QUEUE_MSG_PENDING: /* ready, at the paused topic */
        break;
      default:
        fail_msg("unexpected state %d", v.state);
      }
      if (v.state != RV_QUEUE_MSG_IN_FLIGHT && m->owner[ci][seq])
        fail_msg("seed %llu: model has %llu in flight on %s, core says %d",
                 (unsigned long long)m->seed, (unsigned long long)seq, model_channels[ci],
                 v.state);
      if (m->finned[ci][seq])
        assert_int_equal(v.state, RV_QUEUE_MSG_FINISHED);
      if (v.state != RV_QUEUE_MSG_FINISHED && v.state != RV_QUEUE_MSG_NONE)
        assert_true(seq > s.floor);
    }
    assert_int_equal(n_if, s.in_flight_count);
    assert_int_equal(n_def, s.deferred_count);
    assert_int_equal(n_ready, s.depth);
  }
}

static void model_drop_consumer(model *m, uint64_t c) {
  for (int ci = 0; ci < MODEL_CHANNELS; ci++)
    for (uint64_t s = 0; s <= MODEL_MAX_SEQ; s++)
      if (m->owner[ci][s] == c)
        m->owner[ci][s] = 0;
}

/* Pick a message in flight at consumer i (or any seq), as the consumer's id. */
static uint64_t model_pick_guid(model *m, int i, uint64_t *seq_out) {
  int ci = m->cons_ch[i];
  uint64_t th;
  rv_queue_topic_stats ts;
  assert_int_equal(rv_queue_topic_find(m->f.q, "t", &th), 0);
  assert_int_equal(rv_queue_topic_stats_get(m->f.q, th, &ts), 0);
  uint64_t cand[MODEL_MAX_SEQ];
  size_t n = 0;
  for (uint64_t s = 1; s <= m->published; s++)
    if (m->owner[ci][s] == m->cons[i])
      cand[n++] = s;
  uint64_t seq;
  if (n && rng_below(&m->seed, 10) < 8)
    seq = cand[rng_below(&m->seed, n)];
  else
    seq = 1 + rng_below(&m->seed, m->published ? m->published : 1);
  *seq_out = seq;
  return rv_queue_guid(ts.id_prefix, seq);
}

static void model_step(model *m) {
  fx *f = &m->f;
  uint64_t *s = &m->seed;
  rv_queue_events_clear(&f->ev);
  int op = (int)rng_below(s, 100);
  int i = (int)rng_below(s, MODEL_CONSUMERS);
  if (op < 12 && m->published + 3 <= MODEL_MAX_SEQ) {
    size_t n = 1 + rng_below(s, 3);
    int64_t defer = rng_below(s, 5) == 0 ? (int64_t)(1 + rng_below(s, 3000)) * MS : 0;
    rv_qstore_msg msgs[3];
    for (size_t k = 0; k < n; k++)
      msgs[k] = (rv_qstore_msg){.body = "body", .body_bytes = 4, .defer_ns = defer};
    uint64_t th;
    assert_int_equal(rv_queue_topic_create(f->q, f->now, "t", &th), 0);
    int rc = rv_queue_publish(f->q, f->now, th, msgs, n, NULL, &f->ev);
    assert_true(rc == 0 || rc == RV_QUEUE_EDEFERRED || rc == RV_QUEUE_ERECORDS);
    if (rc == 0)
      m->published += n;
  } else if (op < 15 && m->gated) {
    uint64_t th;
    rv_queue_topic_stats ts;
    if (rv_queue_topic_find(f->q, "t", &th) == 0 &&
        rv_queue_topic_stats_get(f->q, th, &ts) == 0 && ts.next_seq > ts.acked_end) {
      uint64_t to = ts.acked_end + rng_below(s, ts.next_seq - ts.acked_end);
      assert_int_equal(rv_queue_topic_acked(f->q, f->now, th, to, &f->ev), 0);
    }
  } else if (op < 20) {
    if (!m->cons[i]) {
      int ci = (int)rng_below(s, MODEL_CHANNELS);
      rv_queue_consumer_opts o = {.msg_timeout_ns = (int64_t)(1 + rng_below(s, 3)) * S,
                                  .hold_slots = rng_below(s, 2), .timeout_notify = true};
      assert_int_equal(rv_queue_subscribe(f->q, f->now, "t", model_channels[ci], &o,
                                          &m->cons[i], &f->ev), 0);
      m->cons_ch[i] = ci;
      m->cons_rdy[i] = 0;
    } else {
      assert_int_equal(rv_queue_unsubscribe(f->q, f->now, m->cons[i], &f->ev), 0);
      model_drop_consumer(m, m->cons[i]);
      m->cons[i] = 0;
    }
  } else if (op < 32) {
    if (m->cons[i]) {
      int64_t n = (int64_t)rng_below(s, 6);
      assert_int_equal(rv_queue_rdy(f->q, f->now, m->cons[i], n, &f->ev), 0);
      m->cons_rdy[i] = n;
    }
  } else if (op < 62) {
    if (m->cons[i] && m->published) {
      uint64_t seq;
      uint64_t guid = model_pick_guid(m, i, &seq);
      int ci = m->cons_ch[i];
      bool mine = m->owner[ci][seq] == m->cons[i];
      rv_queue_ack ack;
      int kind = (int)rng_below(s, 10);
      int rc;
      if (kind < 6) {
        rc = rv_queue_fin(f->q, f->now, m->cons[i], guid, 0, &ack, &f->ev);
        if (rc == 0) {
          m->finned[ci][seq] = true;
          m->owner[ci][seq] = 0;
        }
      } else if (kind < 9) {
        int64_t delay = rng_below(s, 2) ? 0 : (int64_t)(1 + rng_below(s, 2000)) * MS;
        rc = rv_queue_req(f->q, f->now, m->cons[i], guid, 0, delay, &ack, &f->ev);
        if (rc == 0)
          m->owner[ci][seq] = 0;
      } else {
        rc = rv_queue_touch(f->q, f->now, m->cons[i], guid, 0, &ack);
      }
      /* success exactly when the model says it is in flight here */
      if (mine)
        assert_true(rc == 0 || rc == RV_QUEUE_EDEFERRED);
      else
        assert_true(rc == RV_QUEUE_ENOT_IN_FLIGHT || rc == RV_QUEUE_ENOT_OWNER);
      if (rc == RV_QUEUE_ENOT_OWNER)
        assert_int_not_equal(m->owner[ci][seq], 0);
    }
  } else if (op < 90) {
    f->now += (int64_t)rng_below(s, 700) * MS;
    assert_int_equal(rv_queue_tick(f->q, f->now, &f->ev), 0);
  } else if (op < 92) {
    uint64_t th;
    if (rv_queue_topic_find(f->q, "t", &th) == 0) {
      int ci = (int)rng_below(s, MODEL_CHANNELS);
      uint64_t ch;
      if (rv_queue_channel_find(f->q, th, model_channels[ci], &ch) == 0)
        assert_int_equal(rv_queue_channel_pause(f->q, f->now, ch, rng_below(s, 3) == 0, &f->ev),
                         0);
    }
  } else if (op < 93) {
    uint64_t th;
    if (rv_queue_topic_find(f->q, "t", &th) == 0) {
      int ci = (int)rng_below(s, MODEL_CHANNELS);
      uint64_t ch;
      if (rv_queue_channel_find(f->q, th, model_channels[ci], &ch) == 0) {
        assert_int_equal(rv_queue_channel_empty(f->q, f->now, ch, &f->ev), 0);
        for (uint64_t k = 0; k <= MODEL_MAX_SEQ; k++)
          m->owner[ci][k] = 0;
      }
    }
  } else if (op < 95) {
    uint64_t th;
    if (rv_queue_topic_find(f->q, "t", &th) == 0)
      assert_int_equal(rv_queue_topic_pause(f->q, f->now, th, rng_below(s, 2) == 0, &f->ev), 0);
  } else if (op < 96) {
    /* crash and restart: consumers are gone, the journal is kept */
    fx_crash(f);
    for (int k = 0; k < MODEL_CONSUMERS; k++)
      m->cons[k] = 0;
    memset(m->owner, 0, sizeof m->owner);
    rv_queue_events_clear(&f->ev);
  } else {
    /* a hold_slots consumer answers late for an id it does not have */
    if (m->cons[i] && m->published) {
      uint64_t seq;
      uint64_t guid = model_pick_guid(m, i, &seq);
      if (m->owner[m->cons_ch[i]][seq] != m->cons[i]) {
        rv_queue_ack ack;
        int rc = rv_queue_fin(f->q, f->now, m->cons[i], guid, 0, &ack, &f->ev);
        assert_true(rc == RV_QUEUE_ENOT_IN_FLIGHT || rc == RV_QUEUE_ENOT_OWNER);
      }
    }
  }
  model_events(m);
  model_check(m);
}

static uint64_t model_run(uint64_t seed, int steps, bool gated) {
  model *m = calloc(1, sizeof *m);
  assert_non_null(m);
  fx_open(&m->f, gated ? tweak_gated : NULL);
  m->gated = gated;
  m->seed = seed;
  m->hash = UINT64_C(14695981039346656037);
  for (int k = 0; k < steps; k++)
    model_step(m);
  /* drain: everyone FINs everything, time runs out; all must end finished */
  for (int k = 0; k < MODEL_CONSUMERS; k++)
    if (m->cons[k])
      assert_int_equal(rv_queue_unsubscribe(m->f.q, m->f.now, m->cons[k], &m->f.ev), 0);
  uint64_t h = m->hash;
  fx_close(&m->f);
  free(m);
  return h;
}

static void test_model_randomized(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 6; seed++)
    model_run(seed * 7919, MODEL_STEPS, seed % 2 == 0);
}

static void test_determinism(void **state) {
  (void)state;
  /* the same calls give the same events, handles and ids */
  uint64_t h1 = model_run(42, 1500, false), h2 = model_run(42, 1500, false);
  uint64_t h3 = model_run(43, 1500, false);
  assert_int_equal(h1, h2);
  assert_int_not_equal(h1, h3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_channels_each_get_a_copy),
      cmocka_unit_test(test_first_channel_inherits_backlog_later_ones_do_not),
      cmocka_unit_test(test_consumers_share_round_robin),
      cmocka_unit_test(test_rdy_caps_in_flight),
      cmocka_unit_test(test_fin_req_touch_errors),
      cmocka_unit_test(test_req_zero_goes_to_tail_and_first),
      cmocka_unit_test(test_touch_resets_and_caps),
      cmocka_unit_test(test_timeout_fires_exactly_and_redelivers),
      cmocka_unit_test(test_equal_deadlines_fire_in_arming_order),
      cmocka_unit_test(test_disconnect_requeues_at_once),
      cmocka_unit_test(test_req_with_delay_defers),
      cmocka_unit_test(test_dpub_defers_on_every_channel),
      cmocka_unit_test(test_dpub_before_any_channel_keeps_its_due_time),
      cmocka_unit_test(test_held_slots_stop_in_flight_creep),
      cmocka_unit_test(test_held_slots_rules),
      cmocka_unit_test(test_attempt_qualified_answers_timeout_notify),
      cmocka_unit_test(test_attempt_qualified_answers_hold_slots),
      cmocka_unit_test(test_unqualified_answers_keep_nsq_behaviour),
      cmocka_unit_test(test_held_slots_released_on_disconnect_and_freed_slot_used),
      cmocka_unit_test(test_held_slots_bounded),
      cmocka_unit_test(test_ephemeral_channel_and_topic),
      cmocka_unit_test(test_pause_channel_and_topic),
      cmocka_unit_test(test_empty_channel_and_topic),
      cmocka_unit_test(test_delete_closes_consumers),
      cmocka_unit_test(test_names_and_not_found),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_clock_never_goes_back),
      cmocka_unit_test(test_floor_tracks_lowest_unfinished),
      cmocka_unit_test(test_recovery_redelivers_in_flight_keeps_deferred),
      cmocka_unit_test(test_restore_clips_and_merges),
      cmocka_unit_test(test_deliver_after_ack),
      cmocka_unit_test(test_many_in_flight_random_fin),
      cmocka_unit_test(test_many_topics_and_listings),
      cmocka_unit_test(test_dpub_ahead_of_backlog),
      cmocka_unit_test(test_lost_messages_are_skipped),
      cmocka_unit_test(test_model_randomized),
      cmocka_unit_test(test_determinism),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
