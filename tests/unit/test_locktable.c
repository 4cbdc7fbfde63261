/*
 * test_locktable: the coord lock table (src/core/locktable.c), driven
 * directly with explicit time.  Every test checks rv_lt_check() after each
 * step; the model test at the end runs seeded, bounded sequences of
 * operations against a shadow model of holders and FIFO queues.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/locktable.h"

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)
#define TTL (10 * SEC)

#define CHECK_LT(lt)                                                   \
  do {                                                                 \
    const char *why_ = rv_lt_check(lt);                                \
    if (why_) fail_msg("lock table invariant broken: %s", why_);       \
  } while (0)

static rv_lt *mk(const rv_lt_opts *o) {
  rv_lt *lt = NULL;
  assert_int_equal(rv_lt_create(&lt, o), RV_LT_OK);
  CHECK_LT(lt);
  return lt;
}

static rv_lt_str S(const char *s) { return (rv_lt_str){s, strlen(s)}; }

static uint64_t open_s(rv_lt *lt, int64_t now, const char *service, const char *replica) {
  rv_lt_identity id = {S(service), S(replica), S("host-a"), S("http://127.0.0.1:9000"), 4242};
  uint64_t sid = 0;
  int rc = rv_lt_session_open(lt, now, TTL, &id, &sid);
  if (rc) fail_msg("open: %s", rv_lt_errmsg(lt));
  CHECK_LT(lt);
  return sid;
}

static int acq(rv_lt *lt, int64_t now, uint64_t sid, const char *name, int mode,
               int64_t deadline, const char *desc, rv_lt_acquire_res *res) {
  rv_lt_acquire_req req = {sid, S(name), S(desc), mode, deadline, 0, sid * 1000};
  int rc = rv_lt_acquire(lt, now, &req, res);
  CHECK_LT(lt);
  return rc;
}

static uint64_t must_grant(rv_lt *lt, int64_t now, uint64_t sid, const char *name) {
  rv_lt_acquire_res res;
  int rc = acq(lt, now, sid, name, RV_LT_TRY, 0, "", &res);
  if (rc != RV_LT_GRANTED) fail_msg("acquire %s: %d %s", name, rc, rv_lt_errmsg(lt));
  return res.token;
}

static uint64_t must_queue(rv_lt *lt, int64_t now, uint64_t sid, const char *name,
                           int64_t deadline) {
  rv_lt_acquire_res res;
  int rc = acq(lt, now, sid, name, RV_LT_WAIT, deadline, "waiting", &res);
  if (rc != RV_LT_QUEUED) fail_msg("wait %s: %d %s", name, rc, rv_lt_errmsg(lt));
  return res.waiter_id;
}

static int rel(rv_lt *lt, int64_t now, uint64_t sid, const char *name, uint64_t token,
               rv_lt_events *ev) {
  int rc = rv_lt_release(lt, now, sid, S(name), token, ev);
  CHECK_LT(lt);
  return rc;
}

static void tick(rv_lt *lt, int64_t now, rv_lt_events *ev) {
  assert_int_equal(rv_lt_tick(lt, now, ev), RV_LT_OK);
  CHECK_LT(lt);
}

static void expect_errmsg(rv_lt *lt, const char *part) {
  if (!strstr(rv_lt_errmsg(lt), part))
    fail_msg("error message \"%s\" lacks \"%s\"", rv_lt_errmsg(lt), part);
}

/*
 * Most tests start from a default table and an empty event list: a cmocka
 * fixture builds both and tears them down even when an assertion fails.
 */
typedef struct fixture {
  rv_lt *lt;
  rv_lt_events ev;
} fixture;

static int fx_setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f || rv_lt_create(&f->lt, NULL) != RV_LT_OK) return -1;
  rv_lt_events_init(&f->ev);
  *state = f;
  return 0;
}

static int fx_teardown(void **state) {
  fixture *f = *state;
  rv_lt_events_free(&f->ev);
  rv_lt_destroy(f->lt);
  free(f);
  return 0;
}

/* ---- basics -------------------------------------------------------------------- */

static void test_grant_busy_release(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1"), b = open_s(lt, 0, "svc", "2");
  assert_true(a != b);
  uint64_t t = must_grant(lt, 10, a, "acct-42");
  assert_int_equal(t, 1);

  rv_lt_acquire_res res;
  assert_int_equal(acq(lt, 20, b, "acct-42", RV_LT_TRY, 0, "", &res), RV_LT_BUSY);
  assert_int_equal(res.holder_session, a);
  assert_int_equal(res.holder_token, t);
  /* A wait whose deadline already passed reports a timeout, without queueing. */
  assert_int_equal(acq(lt, 20, b, "acct-42", RV_LT_WAIT, 20, "", &res), RV_LT_TIMEDOUT);

  assert_int_equal(rel(lt, 30, a, "acct-42", t, ev), RV_LT_OK);
  assert_int_equal(ev->len, 0);
  rv_lt_lock_view v;
  assert_int_equal(rv_lt_lock_get(lt, S("acct-42"), &v), RV_LT_ENOLOCK); /* idle: forgotten */
  assert_int_equal(must_grant(lt, 40, b, "acct-42"), 2);

  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.grants, 2);
  assert_int_equal(st.grants_immediate, 2);
  assert_int_equal(st.busy, 2);
  assert_int_equal(st.releases, 1);
  assert_int_equal(st.locks, 1);
  assert_int_equal(st.locks_held, 1);
  assert_int_equal(st.sessions, 2);
}

static void test_fifo_handoff(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t s[4];
  for (int i = 0; i < 4; i++) s[i] = open_s(lt, 0, "svc", "r");
  uint64_t tok = must_grant(lt, 1, s[0], "L");
  uint64_t w[4];
  for (int i = 1; i < 4; i++) {
    rv_lt_acquire_res res;
    assert_int_equal(acq(lt, 10 + i, s[i], "L", RV_LT_WAIT, RV_LT_NO_DEADLINE, "", &res),
                     RV_LT_QUEUED);
    assert_int_equal(res.position, (size_t)i);
    assert_int_equal(res.holder_session, s[0]);
    w[i] = res.waiter_id;
  }
  uint64_t holder = s[0];
  for (int i = 1; i < 4; i++) {
    rv_lt_events_clear(ev);
    assert_int_equal(rel(lt, 100 * i, holder, "L", tok, ev), RV_LT_OK);
    assert_int_equal(ev->len, 1);
    const rv_lt_event *e = &ev->v[0];
    assert_int_equal(e->type, RV_LT_EV_GRANTED);
    assert_int_equal(e->waiter_id, w[i]);
    assert_int_equal(e->session_id, s[i]);
    assert_int_equal(e->cookie, s[i] * 1000);
    assert_string_equal(e->lock, "L");
    assert_true(e->token > tok);
    assert_int_equal(e->waited_ns, 100 * i - (10 + i));
    holder = s[i];
    tok = e->token;
  }
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.handoffs, 3);
  assert_int_equal(st.waits, 3);
  assert_int_equal(st.waiters, 0);
}

/* Many threads of one process share a session: it queues behind itself. */
static void test_session_waits_behind_itself(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1");
  uint64_t t1 = must_grant(lt, 1, a, "L");
  rv_lt_acquire_res res;
  assert_int_equal(acq(lt, 2, a, "L", RV_LT_TRY, 0, "", &res), RV_LT_BUSY);
  assert_int_equal(res.holder_session, a);
  uint64_t w = must_queue(lt, 3, a, "L", RV_LT_NO_DEADLINE);
  assert_int_equal(rel(lt, 4, a, "L", t1, ev), RV_LT_OK);
  assert_int_equal(ev->len, 1);
  assert_int_equal(ev->v[0].waiter_id, w);
  assert_int_equal(ev->v[0].session_id, a);
}

static void test_stale_and_foreign_release(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1"), b = open_s(lt, 0, "svc", "2");
  uint64_t t1 = must_grant(lt, 1, a, "L");
  assert_int_equal(rel(lt, 2, a, "L", t1, ev), RV_LT_OK);
  uint64_t t2 = must_grant(lt, 3, a, "L");
  assert_true(t2 > t1);

  /* A late release with the old token is stale and frees nothing. */
  assert_int_equal(rel(lt, 4, a, "L", t1, ev), RV_LT_ESTALE);
  expect_errmsg(lt, "stale fencing token 1");
  assert_string_equal(rv_lt_errcode(RV_LT_ESTALE), "STALE");
  /* Another session can never free it, even with the right token. */
  assert_int_equal(rel(lt, 5, b, "L", t2, ev), RV_LT_ENOTOWNER);
  expect_errmsg(lt, "held by session");
  expect_errmsg(lt, "svc/1 pid 4242 @host-a");
  rv_lt_lock_view v;
  assert_int_equal(rv_lt_lock_get(lt, S("L"), &v), RV_LT_OK);
  assert_true(v.held);
  assert_int_equal(v.holder_session, a);
  assert_int_equal(v.token, t2);

  assert_int_equal(rel(lt, 6, a, "nobody-holds-this", 1, ev), RV_LT_ENOTHELD);
  assert_int_equal(rel(lt, 6, 999, "L", t2, ev), RV_LT_ENOSESSION);
  assert_int_equal(rv_lt_release(lt, 6, a, S("L"), t2, NULL), RV_LT_EINVAL);
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.releases_rejected, 3);
  assert_int_equal(ev->len, 0);
}

/* ---- sessions ------------------------------------------------------------------ */

static void test_keepalive_and_expired_session(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1");
  assert_int_equal(rv_lt_next_deadline(lt), TTL);
  int64_t exp = 0;
  assert_int_equal(rv_lt_session_keepalive(lt, 4 * SEC, a, &exp), RV_LT_OK);
  assert_int_equal(exp, 4 * SEC + TTL);
  assert_int_equal(rv_lt_next_deadline(lt), 4 * SEC + TTL);
  tick(lt, TTL, ev); /* the old expiry instant: nothing happens */
  assert_int_equal(ev->len, 0);

  /* Expired but not reaped yet: every call treats it as dead. */
  int64_t dead = 4 * SEC + TTL;
  assert_int_equal(rv_lt_session_keepalive(lt, dead, a, NULL), RV_LT_EEXPIRED);
  expect_errmsg(lt, "expired");
  rv_lt_acquire_res res;
  assert_int_equal(acq(lt, dead, a, "L", RV_LT_TRY, 0, "", &res), RV_LT_EEXPIRED);
  assert_int_equal(rv_lt_session_close(lt, dead, a, ev), RV_LT_EEXPIRED);
  tick(lt, dead, ev);
  assert_int_equal(ev->len, 1);
  assert_int_equal(ev->v[0].type, RV_LT_EV_SESSION_EXPIRED);
  assert_int_equal(ev->v[0].at_ns, dead);
  assert_string_equal(ev->v[0].who, "svc/1 pid 4242 @host-a");
  assert_int_equal(rv_lt_session_keepalive(lt, dead, a, NULL), RV_LT_ENOSESSION);
  assert_int_equal(rv_lt_next_deadline(lt), RV_LT_NO_DEADLINE);

  /* Time never runs backwards inside the table. */
  uint64_t b = open_s(lt, 0, "svc", "2");
  rv_lt_session_view sv;
  assert_int_equal(rv_lt_session_get(lt, b, &sv), RV_LT_OK);
  assert_int_equal(sv.opened_ns, dead);
}

static void test_expiry_releases_and_grants(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1");
  uint64_t b = open_s(lt, 5 * SEC, "svc", "2");
  uint64_t c = open_s(lt, 5 * SEC, "svc", "3");
  uint64_t tx = must_grant(lt, 1, a, "X");
  uint64_t ty = must_grant(lt, 1, a, "Y");
  must_grant(lt, 2, b, "Z");
  uint64_t wa = must_queue(lt, 3, a, "Z", RV_LT_NO_DEADLINE); /* a waits on Z */
  uint64_t wc = must_queue(lt, 4, c, "X", RV_LT_NO_DEADLINE); /* c waits on X */
  uint64_t wa2 = must_queue(lt, 5, a, "X", RV_LT_NO_DEADLINE); /* a waits behind c */

  tick(lt, TTL - 1, ev);
  assert_int_equal(ev->len, 0);
  tick(lt, TTL + 7, ev); /* tick runs a little late */
  /* Expired, then its waiters dropped, then each hold lost and handed on. */
  assert_int_equal(ev->len, 6);
  assert_int_equal(ev->v[0].type, RV_LT_EV_SESSION_EXPIRED);
  assert_int_equal(ev->v[0].session_id, a);
  assert_int_equal(ev->v[0].at_ns, TTL);
  assert_int_equal(ev->v[1].type, RV_LT_EV_WAITER_DROPPED);
  assert_int_equal(ev->v[1].waiter_id, wa);
  assert_int_equal(ev->v[1].reason, RV_LT_DROP_SESSION_EXPIRED);
  assert_string_equal(ev->v[1].lock, "Z");
  assert_int_equal(ev->v[2].type, RV_LT_EV_WAITER_DROPPED);
  assert_int_equal(ev->v[2].waiter_id, wa2);
  assert_int_equal(ev->v[3].type, RV_LT_EV_LOCK_LOST);
  assert_string_equal(ev->v[3].lock, "X");
  assert_int_equal(ev->v[3].token, tx);
  assert_int_equal(ev->v[3].delay_until_ns, 0);
  assert_int_equal(ev->v[4].type, RV_LT_EV_GRANTED);
  assert_int_equal(ev->v[4].waiter_id, wc);
  assert_int_equal(ev->v[4].session_id, c);
  assert_int_equal(ev->v[4].at_ns, TTL + 7);
  assert_true(ev->v[4].token > ty);
  assert_int_equal(ev->v[5].type, RV_LT_EV_LOCK_LOST);
  assert_string_equal(ev->v[5].lock, "Y");
  assert_int_equal(ev->v[5].token, ty);

  rv_lt_lock_view v;
  assert_int_equal(rv_lt_lock_get(lt, S("Y"), &v), RV_LT_ENOLOCK);
  assert_int_equal(rv_lt_lock_get(lt, S("Z"), &v), RV_LT_OK);
  assert_int_equal(v.waiters, 0);
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.sessions_expired, 1);
  assert_int_equal(st.locks_lost, 2);
  assert_int_equal(st.waiters_dropped, 2);
  assert_int_equal(st.handoffs, 1);
}

static void test_close_releases_without_delay(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1"), b = open_s(lt, 0, "svc", "2");
  rv_lt_acquire_req req = {a, S("L"), S(""), RV_LT_TRY, 0, 5 * SEC, 0};
  rv_lt_acquire_res res;
  assert_int_equal(rv_lt_acquire(lt, 1, &req, &res), RV_LT_GRANTED);
  uint64_t wb = must_queue(lt, 2, b, "L", RV_LT_NO_DEADLINE);
  must_grant(lt, 3, b, "M");
  uint64_t wa = must_queue(lt, 3, a, "M", RV_LT_NO_DEADLINE);
  rv_lt_events_clear(ev);
  assert_int_equal(rv_lt_session_close(lt, 4, a, ev), RV_LT_OK);
  CHECK_LT(lt);
  /* No expiry event, no lock-delay: a deliberate close hands over at once. */
  assert_int_equal(ev->len, 2);
  assert_int_equal(ev->v[0].type, RV_LT_EV_WAITER_DROPPED);
  assert_int_equal(ev->v[0].waiter_id, wa);
  assert_int_equal(ev->v[0].reason, RV_LT_DROP_SESSION_CLOSED);
  assert_int_equal(ev->v[1].type, RV_LT_EV_GRANTED);
  assert_int_equal(ev->v[1].waiter_id, wb);
  assert_int_equal(ev->v[1].at_ns, 4);
  assert_int_equal(rv_lt_session_close(lt, 5, a, ev), RV_LT_ENOSESSION);
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.sessions_closed, 1);
  assert_int_equal(st.lock_delays, 0);
}

/* A hand-off never grants to a session that is past its expiry, reaped or not. */
static void test_handoff_skips_dead_waiters(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1");
  uint64_t b = open_s(lt, 0, "svc", "2");        /* expires at TTL */
  uint64_t c = open_s(lt, 5 * SEC, "svc", "3");  /* expires at TTL + 5 s */
  uint64_t t = must_grant(lt, 1, a, "L");
  uint64_t wb = must_queue(lt, 2, b, "L", RV_LT_NO_DEADLINE);
  uint64_t wc = must_queue(lt, 5 * SEC, c, "L", RV_LT_NO_DEADLINE);
  assert_int_equal(rv_lt_session_keepalive(lt, 9 * SEC, a, NULL), RV_LT_OK);
  /* b is dead at TTL + 1 s, but nobody has ticked. */
  assert_int_equal(rel(lt, TTL + 1 * SEC, a, "L", t, ev), RV_LT_OK);
  assert_int_equal(ev->len, 2);
  assert_int_equal(ev->v[0].type, RV_LT_EV_WAITER_DROPPED);
  assert_int_equal(ev->v[0].waiter_id, wb);
  assert_int_equal(ev->v[0].reason, RV_LT_DROP_SESSION_EXPIRED);
  assert_int_equal(ev->v[1].type, RV_LT_EV_GRANTED);
  assert_int_equal(ev->v[1].waiter_id, wc);
  rv_lt_events_clear(ev);
  tick(lt, TTL + 1 * SEC, ev);
  assert_int_equal(ev->len, 1); /* just b's expiry: its waiter is already gone */
  assert_int_equal(ev->v[0].type, RV_LT_EV_SESSION_EXPIRED);
  assert_int_equal(ev->v[0].session_id, b);

  /* Only dead waiters: the lock is simply forgotten. */
  uint64_t d = open_s(lt, TTL + 1 * SEC, "svc", "4");
  uint64_t t2 = must_grant(lt, TTL + 1 * SEC, d, "M");
  must_queue(lt, TTL + 2 * SEC, c, "M", RV_LT_NO_DEADLINE);
  assert_int_equal(rv_lt_session_keepalive(lt, TTL + 4 * SEC, d, NULL), RV_LT_OK);
  rv_lt_events_clear(ev);
  assert_int_equal(rel(lt, TTL + 6 * SEC, d, "M", t2, ev), RV_LT_OK); /* c died at TTL+5s */
  assert_int_equal(ev->len, 1);
  assert_int_equal(ev->v[0].type, RV_LT_EV_WAITER_DROPPED);
  rv_lt_lock_view v;
  assert_int_equal(rv_lt_lock_get(lt, S("M"), &v), RV_LT_ENOLOCK);
}

/* ---- lock-delay ------------------------------------------------------------------ */

static void test_lock_delay(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1");
  uint64_t b = open_s(lt, 5 * SEC, "svc", "2");
  uint64_t c = open_s(lt, 5 * SEC, "svc", "3");
  rv_lt_acquire_req req = {a, S("L"), S("job 7"), RV_LT_TRY, 0, 3 * SEC, 0};
  rv_lt_acquire_res res;
  assert_int_equal(rv_lt_acquire(lt, 1, &req, &res), RV_LT_GRANTED);
  uint64_t wb = must_queue(lt, 2, b, "L", RV_LT_NO_DEADLINE);

  tick(lt, TTL + 1 * SEC, ev); /* late tick: the delay still counts from the expiry instant */
  assert_int_equal(ev->len, 2);
  assert_int_equal(ev->v[1].type, RV_LT_EV_LOCK_LOST);
  assert_int_equal(ev->v[1].delay_until_ns, TTL + 3 * SEC);
  rv_lt_lock_view v;
  assert_int_equal(rv_lt_lock_get(lt, S("L"), &v), RV_LT_OK);
  assert_false(v.held);
  assert_int_equal(v.delay_until_ns, TTL + 3 * SEC);
  assert_int_equal(v.waiters, 1);
  assert_int_equal(rv_lt_next_deadline(lt), TTL + 3 * SEC);

  /* During the delay nobody gets it; a newcomer queues behind b. */
  assert_int_equal(acq(lt, TTL + 2 * SEC, c, "L", RV_LT_TRY, 0, "", &res), RV_LT_BUSY);
  assert_int_equal(res.holder_session, 0);
  assert_int_equal(res.delay_until_ns, TTL + 3 * SEC);
  uint64_t wc = must_queue(lt, TTL + 2 * SEC, c, "L", RV_LT_NO_DEADLINE);

  rv_lt_events_clear(ev);
  tick(lt, TTL + 3 * SEC - 1, ev);
  assert_int_equal(ev->len, 0);
  tick(lt, TTL + 3 * SEC, ev);
  assert_int_equal(ev->len, 1);
  assert_int_equal(ev->v[0].type, RV_LT_EV_GRANTED);
  assert_int_equal(ev->v[0].waiter_id, wb);
  assert_int_equal(rv_lt_lock_get(lt, S("L"), &v), RV_LT_OK);
  assert_int_equal(v.holder_session, b);
  assert_int_equal(v.delay_until_ns, 0);
  (void)wc;

  /* A delay that has already passed when tick runs hands over at once. */
  uint64_t d = open_s(lt, TTL + 3 * SEC, "svc", "4");
  rv_lt_acquire_req rd = {d, S("M"), S(""), RV_LT_TRY, 0, 1 * SEC, 0};
  assert_int_equal(rv_lt_acquire(lt, TTL + 3 * SEC, &rd, &res), RV_LT_GRANTED);
  must_queue(lt, TTL + 3 * SEC, c, "M", RV_LT_NO_DEADLINE);
  assert_int_equal(rv_lt_session_keepalive(lt, TTL + 4 * SEC, c, NULL), RV_LT_OK);
  assert_int_equal(rv_lt_session_keepalive(lt, 2 * TTL, c, NULL), RV_LT_OK);
  rv_lt_events_clear(ev);
  tick(lt, 2 * TTL + 5 * SEC, ev); /* d expired at 2*TTL+3s, its delay ended at 2*TTL+4s */
  bool granted_m = false;
  for (size_t i = 0; i < ev->len; i++)
    if (ev->v[i].type == RV_LT_EV_GRANTED && strcmp(ev->v[i].lock, "M") == 0) granted_m = true;
  assert_true(granted_m);
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.lock_delays, 1);
}

/* ---- waiters --------------------------------------------------------------------- */

static void test_waiter_deadline(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t a = open_s(lt, 0, "svc", "1"), b = open_s(lt, 0, "svc", "2");
  uint64_t t = must_grant(lt, 0, a, "L");
  uint64_t w = must_queue(lt, 100, b, "L", 100 + 2 * SEC);
  assert_int_equal(rv_lt_next_deadline(lt), 100 + 2 * SEC);
  tick(lt, 100 + 2 * SEC - 1, ev);
  assert_int_equal(ev->len, 0);
  tick(lt, 100 + 2 * SEC, ev);
  assert_int_equal(ev->len, 1);
  assert_int_equal(ev->v[0].type, RV_LT_EV_TIMED_OUT);
  assert_int_equal(ev->v[0].waiter_id, w);
  assert_int_equal(ev->v[0].waited_ns, 2 * SEC);
  assert_int_equal(ev->v[0].cookie, b * 1000);
  rv_lt_events_clear(ev);
  assert_int_equal(rel(lt, 3 * SEC, a, "L", t, ev), RV_LT_OK);
  assert_int_equal(ev->len, 0); /* the timed-out waiter is gone */
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.waiter_timeouts, 1);
}

static void test_withdraw_mid_queue(void **state) {
  fixture *f = *state;
  rv_lt *lt = f->lt;
  rv_lt_events *ev = &f->ev;
  uint64_t s[4];
  for (int i = 0; i < 4; i++) s[i] = open_s(lt, 0, "svc", "r");
  uint64_t t = must_grant(lt, 0, s[0], "L");
  uint64_t w1 = must_queue(lt, 1, s[1], "L", 5 * SEC);
  uint64_t w2 = must_queue(lt, 2, s[2], "L", 5 * SEC);
  uint64_t w3 = must_queue(lt, 3, s[3], "L", RV_LT_NO_DEADLINE);
  assert_int_equal(rv_lt_withdraw(lt, 4, s[1], w2), RV_LT_ENOTOWNER);
  assert_int_equal(rv_lt_withdraw(lt, 4, s[2], w2), RV_LT_OK);
  CHECK_LT(lt);
  assert_int_equal(rv_lt_withdraw(lt, 4, 0, w2), RV_LT_ENOWAITER);
  expect_errmsg(lt, "no waiter");
  assert_int_equal(rel(lt, 5, s[0], "L", t, ev), RV_LT_OK);
  assert_int_equal(ev->v[0].waiter_id, w1);
  t = ev->v[0].token;
  rv_lt_events_clear(ev);
  assert_int_equal(rel(lt, 6, s[1], "L", t, ev), RV_LT_OK);
  assert_int_equal(ev->v[0].waiter_id, w3);
  /* The withdrawn waiter's timer went with it. */
  rv_lt_events_clear(ev);
  tick(lt, 6 * SEC, ev);
  for (size_t i = 0; i < ev->len; i++) assert_true(ev->v[i].type != RV_LT_EV_TIMED_OUT);
  rv_lt_stats st;
  rv_lt_get_stats(lt, &st);
  assert_int_equal(st.waiter_withdrawals, 1);
}

/* ---- limits and bad input ------------------------------------------------------------ */

static void test_limits(void **state) {
  (void)state;
  rv_lt_opts o;
  rv_lt_opts_default(&o);
  o.max_sessions = 3;
  o.max_locks = 2;
  o.max_waiters_per_lock = 1;
  o.max_waiters = 2;
  rv_lt *lt = mk(&o);
  uint64_t a = open_s(lt, 0, "svc", "1"), b = open_s(lt, 0, "svc", "2");
  uint64_t c = open_s(lt, 0, "svc", "3");
  rv_lt_identity id = {S("svc"), S(""), S(""), S(""), 0};
  uint64_t sid;
  assert_int_equal(rv_lt_session_open(lt, 0, TTL, &id, &sid), RV_LT_ESESSIONS);
  expect_errmsg(lt, "max_sessions");

  must_grant(lt, 0, a, "L1");
  must_grant(lt, 0, a, "L2");
  rv_lt_acquire_res res;
  assert_int_equal(acq(lt, 0, a, "L3", RV_LT_TRY, 0, "", &res), RV_LT_ELOCKS);
  expect_errmsg(lt, "max_locks");
  must_queue(lt, 0, b, "L1", RV_LT_NO_DEADLINE);
  assert_int_equal(acq(lt, 0, c, "L1", RV_LT_WAIT, RV_LT_NO_DEADLINE, "", &res), RV_LT_EWAITERS);
  expect_errmsg(lt, "max_waiters_per_lock");
  must_queue(lt, 0, b, "L2", RV_LT_NO_DEADLINE);
  rv_lt_destroy(lt);

  o.max_waiters_per_lock = 10;
  lt = mk(&o);
  a = open_s(lt, 0, "svc", "1");
  b = open_s(lt, 0, "svc", "2");
  must_grant(lt, 0, a, "L1");
  must_queue(lt, 0, b, "L1", RV_LT_NO_DEADLINE);
  must_queue(lt, 0, b, "L1", RV_LT_NO_DEADLINE);
  assert_int_equal(acq(lt, 0, b, "L1", RV_LT_WAIT, RV_LT_NO_DEADLINE, "", &res),
                   RV_LT_EWAITERS_TOTAL);
  expect_errmsg(lt, "max_waiters)");
  rv_lt_destroy(lt);
}

static void test_bad_input(void **state) {
  (void)state;
  rv_lt *lt = mk(NULL);
  uint64_t sid;
  rv_lt_identity id = {S("svc"), S("1"), S("h"), S(""), 1};
  assert_int_equal(rv_lt_session_open(lt, 0, RV_LT_TTL_MIN_NS - 1, &id, &sid), RV_LT_EBADTTL);
  expect_errmsg(lt, "ttl");
  assert_int_equal(rv_lt_session_open(lt, 0, -5, &id, &sid), RV_LT_EBADTTL);
  assert_int_equal(rv_lt_session_open(lt, 0, RV_LT_TTL_MAX_NS + 1, &id, &sid), RV_LT_EBADTTL);
  rv_lt_identity bad = id;
  bad.service = S("");
  assert_int_equal(rv_lt_session_open(lt, 0, TTL, &bad, &sid), RV_LT_EBADIDENT);
  expect_errmsg(lt, "service must not be empty");
  bad = id;
  bad.host = S("a b");
  assert_int_equal(rv_lt_session_open(lt, 0, TTL, &bad, &sid), RV_LT_EBADIDENT);
  expect_errmsg(lt, "host has byte 0x20 at offset 1");
  bad = id;
  bad.pid = -1;
  assert_int_equal(rv_lt_session_open(lt, 0, TTL, &bad, &sid), RV_LT_EBADIDENT);
  assert_int_equal(rv_lt_session_open(lt, 0, TTL, NULL, &sid), RV_LT_EBADIDENT);

  uint64_t a = open_s(lt, 0, "svc", "1");
  rv_lt_acquire_res res;
  char longname[RV_LT_NAME_MAX_BYTES + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  assert_int_equal(acq(lt, 0, a, longname, RV_LT_TRY, 0, "", &res), RV_LT_EBADNAME);
  expect_errmsg(lt, "257 bytes, the limit is 256");
  longname[RV_LT_NAME_MAX_BYTES] = '\0';
  assert_int_equal(acq(lt, 0, a, longname, RV_LT_TRY, 0, "", &res), RV_LT_GRANTED);
  assert_int_equal(acq(lt, 0, a, "", RV_LT_TRY, 0, "", &res), RV_LT_EBADNAME);
  assert_int_equal(acq(lt, 0, a, "a\"b", RV_LT_TRY, 0, "", &res), RV_LT_EBADNAME);
  assert_int_equal(acq(lt, 0, a, "a\nb", RV_LT_TRY, 0, "", &res), RV_LT_EBADNAME);
  assert_int_equal(acq(lt, 0, a, "ok", RV_LT_TRY, 0, "line\nbreak", &res), RV_LT_EBADDESC);
  char longdesc[RV_LT_DESC_MAX_BYTES + 2];
  memset(longdesc, 'd', sizeof longdesc - 1);
  longdesc[sizeof longdesc - 1] = '\0';
  assert_int_equal(acq(lt, 0, a, "ok", RV_LT_TRY, 0, longdesc, &res), RV_LT_EBADDESC);
  assert_int_equal(acq(lt, 0, a, "ok", 99, 0, "", &res), RV_LT_EINVAL);
  rv_lt_acquire_req req = {a, S("ok"), S(""), RV_LT_TRY, 0, -1, 0};
  assert_int_equal(rv_lt_acquire(lt, 0, &req, &res), RV_LT_EBADDELAY);
  req.lock_delay_ns = RV_LT_LOCK_DELAY_MAX_NS + 1;
  assert_int_equal(rv_lt_acquire(lt, 0, &req, &res), RV_LT_EBADDELAY);
  /* UTF-8 is fine in a description. */
  assert_int_equal(acq(lt, 0, a, "ok", RV_LT_TRY, 0, "t\xc3\xa2" "che 3", &res), RV_LT_GRANTED);
  assert_string_equal(rv_lt_strerror(RV_LT_EBADNAME), "invalid lock name");
  assert_string_equal(rv_lt_errname(RV_LT_EWAITERS), "RV_LT_EWAITERS");

  rv_lt *bad_lt = NULL;
  rv_lt_opts o;
  rv_lt_opts_default(&o);
  o.max_locks = 0;
  assert_int_equal(rv_lt_create(&bad_lt, &o), RV_LT_EINVAL);
  rv_lt_opts_default(&o);
  o.token_floor = RV_LT_TOKEN_FLOOR_MAX + 1;
  assert_int_equal(rv_lt_create(&bad_lt, &o), RV_LT_EINVAL);
  assert_null(bad_lt);
  rv_lt_destroy(lt);
}

/* ---- introspection ---------------------------------------------------------------- */

typedef struct collected {
  char text[4096];
  size_t n;
} collected;

static bool collect_lock(const rv_lt_lock_view *v, void *arg) {
  collected *c = arg;
  size_t used = strlen(c->text);
  snprintf(c->text + used, sizeof c->text - used, "%s%s:%llu:%zu", c->n ? "," : "", v->name,
           (unsigned long long)v->holder_session, v->waiters);
  c->n++;
  return true;
}

static bool collect_waiter(const rv_lt_waiter_view *v, void *arg) {
  collected *c = arg;
  size_t used = strlen(c->text);
  snprintf(c->text + used, sizeof c->text - used, "%s%zu:%s:%llu:%s/%s:%s:%lld", c->n ? "," : "",
           v->position, v->lock, (unsigned long long)v->session_id, v->identity.service,
           v->identity.replica, v->description, (long long)v->since_ns);
  c->n++;
  return true;
}

static bool collect_session(const rv_lt_session_view *v, void *arg) {
  collected *c = arg;
  size_t used = strlen(c->text);
  snprintf(c->text + used, sizeof c->text - used, "%s%llu:%s/%s:%zu:%zu", c->n ? "," : "",
           (unsigned long long)v->id, v->identity.service, v->identity.replica, v->held,
           v->waiting);
  c->n++;
  return true;
}

static bool stop_after_one(const rv_lt_lock_view *v, void *arg) {
  (void)v;
  (*(int *)arg)++;
  return false;
}

static void test_introspection(void **state) {
  (void)state;
  rv_lt *lt = mk(NULL);
  uint64_t a = open_s(lt, 0, "billing", "1"), b = open_s(lt, 0, "billing", "2");
  uint64_t c = open_s(lt, 0, "search", "1");
  rv_lt_acquire_res res;
  assert_int_equal(acq(lt, 100, a, "acct-1", RV_LT_TRY, 0, "thread 7: msg 0a3f", &res),
                   RV_LT_GRANTED);
  uint64_t t1 = res.token;
  assert_int_equal(acq(lt, 110, a, "acct-2", RV_LT_TRY, 0, "", &res), RV_LT_GRANTED);
  assert_int_equal(acq(lt, 120, c, "idx-1", RV_LT_TRY, 0, "", &res), RV_LT_GRANTED);
  assert_int_equal(acq(lt, 200, b, "acct-1", RV_LT_WAIT, RV_LT_NO_DEADLINE, "thread 3", &res),
                   RV_LT_QUEUED);
  assert_int_equal(acq(lt, 300, c, "acct-1", RV_LT_WAIT, 9 * SEC, "worker", &res), RV_LT_QUEUED);

  rv_lt_lock_view v;
  assert_int_equal(rv_lt_lock_get(lt, S("acct-1"), &v), RV_LT_OK);
  assert_string_equal(v.name, "acct-1");
  assert_true(v.held);
  assert_int_equal(v.holder_session, a);
  assert_string_equal(v.holder_identity.service, "billing");
  assert_string_equal(v.holder_identity.replica, "1");
  assert_string_equal(v.holder_identity.host, "host-a");
  assert_string_equal(v.holder_identity.admin_url, "http://127.0.0.1:9000");
  assert_int_equal(v.holder_identity.pid, 4242);
  assert_string_equal(v.holder_description, "thread 7: msg 0a3f");
  assert_int_equal(v.token, t1);
  assert_int_equal(v.held_since_ns, 100);
  assert_int_equal(v.waiters, 2);
  assert_int_equal(v.oldest_waiter_since_ns, 200);

  assert_int_equal(rv_lt_describe(lt, 150, a, S("acct-1"), t1, S("thread 7: msg 0b00")),
                   RV_LT_OK);
  assert_int_equal(rv_lt_describe(lt, 150, b, S("acct-1"), t1, S("x")), RV_LT_ENOTOWNER);
  assert_int_equal(rv_lt_lock_get(lt, S("acct-1"), &v), RV_LT_OK);
  assert_string_equal(v.holder_description, "thread 7: msg 0b00");

  collected col = {{0}, 0};
  assert_int_equal(rv_lt_lock_waiters(lt, S("acct-1"), collect_waiter, &col), RV_LT_OK);
  char want[256];
  snprintf(want, sizeof want, "1:acct-1:%llu:billing/2:thread 3:200,2:acct-1:%llu:search/1:worker:300",
           (unsigned long long)b, (unsigned long long)c);
  assert_string_equal(col.text, want);
  assert_int_equal(rv_lt_lock_waiters(lt, S("nope"), collect_waiter, &col), RV_LT_ENOLOCK);

  memset(&col, 0, sizeof col);
  assert_int_equal(rv_lt_lock_list(lt, NULL, collect_lock, &col), 3);
  snprintf(want, sizeof want, "acct-1:%llu:2,acct-2:%llu:0,idx-1:%llu:0", (unsigned long long)a,
           (unsigned long long)a, (unsigned long long)c);
  assert_string_equal(col.text, want);

  rv_lt_filter f = {S("acct-"), false, false};
  memset(&col, 0, sizeof col);
  assert_int_equal(rv_lt_lock_list(lt, &f, collect_lock, &col), 2);
  f.only_contended = true;
  memset(&col, 0, sizeof col);
  assert_int_equal(rv_lt_lock_list(lt, &f, collect_lock, &col), 1);
  snprintf(want, sizeof want, "acct-1:%llu:2", (unsigned long long)a);
  assert_string_equal(col.text, want);
  int stops = 0;
  assert_int_equal(rv_lt_lock_list(lt, NULL, stop_after_one, &stops), 1);
  assert_int_equal(stops, 1);

  rv_lt_session_view sv;
  assert_int_equal(rv_lt_session_get(lt, c, &sv), RV_LT_OK);
  assert_int_equal(sv.held, 1);
  assert_int_equal(sv.waiting, 1);
  assert_int_equal(sv.ttl_ns, TTL);
  assert_int_equal(sv.expires_ns, TTL);
  assert_string_equal(sv.identity.service, "search");
  memset(&col, 0, sizeof col);
  assert_int_equal(rv_lt_session_held(lt, a, collect_lock, &col), RV_LT_OK);
  snprintf(want, sizeof want, "acct-1:%llu:2,acct-2:%llu:0", (unsigned long long)a,
           (unsigned long long)a);
  assert_string_equal(col.text, want);
  memset(&col, 0, sizeof col);
  assert_int_equal(rv_lt_session_waiting(lt, c, collect_waiter, &col), RV_LT_OK);
  snprintf(want, sizeof want, "2:acct-1:%llu:search/1:worker:300", (unsigned long long)c);
  assert_string_equal(col.text, want);
  assert_int_equal(rv_lt_session_held(lt, 12345, collect_lock, &col), RV_LT_ENOSESSION);
  memset(&col, 0, sizeof col);
  assert_int_equal(rv_lt_session_list(lt, collect_session, &col), 3);
  snprintf(want, sizeof want, "%llu:billing/1:2:0,%llu:billing/2:0:1,%llu:search/1:1:1",
           (unsigned long long)a, (unsigned long long)b, (unsigned long long)c);
  assert_string_equal(col.text, want);
  rv_lt_destroy(lt);
}

/* ---- determinism ---------------------------------------------------------------------- */

/*
 * One fixed script with many equal deadlines; returns its event trace.  The
 * hash seed varies between runs and must not change anything.
 */
static void scripted_run(uint64_t hash_seed, collected *out) {
  rv_lt_opts o;
  rv_lt_opts_default(&o);
  o.hash_seed[0] = hash_seed;
  o.hash_seed[1] = ~hash_seed;
  rv_lt *lt = mk(&o);
  rv_lt_events ev;
  rv_lt_events_init(&ev);
  uint64_t s[6]; /* ids 1..6, all expiring at TTL */
  for (int i = 0; i < 6; i++) s[i] = open_s(lt, 0, "svc", "r");
  const char *names[] = {"c", "a", "b"};
  for (int i = 0; i < 3; i++) must_grant(lt, 1, s[0], names[i]);
  for (int i = 0; i < 5; i++) assert_int_equal(rv_lt_session_keepalive(lt, 1 * SEC, s[i], NULL), 0);
  /* s[5] still expires at TTL; five waiters get that same deadline. */
  must_queue(lt, 2, s[5], "b", TTL);
  must_queue(lt, 3, s[3], "b", TTL);
  must_queue(lt, 4, s[1], "c", TTL);
  must_queue(lt, 5, s[2], "a", TTL);
  must_queue(lt, 6, s[4], "a", TTL);
  tick(lt, TTL, &ev);
  tick(lt, TTL + 1 * SEC, &ev);
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < ev.len; i++) {
    size_t used = strlen(out->text);
    snprintf(out->text + used, sizeof out->text - used, "%d:%llu:%llu:%s:%lld;", ev.v[i].type,
             (unsigned long long)ev.v[i].session_id, (unsigned long long)ev.v[i].waiter_id,
             ev.v[i].lock, (long long)ev.v[i].at_ns);
  }
  out->n = ev.len;
  rv_lt_events_free(&ev);
  rv_lt_destroy(lt);
}

static void test_tick_determinism(void **state) {
  (void)state;
  static collected one, two;
  scripted_run(1, &one);
  scripted_run(0xdeadbeef, &two);
  assert_string_equal(one.text, two.text);
  /* At TTL, in arming order: s[5]'s expiry (armed at open) drops its waiter,
   * then the four waiters time out in the order they queued.  At TTL + 1 s
   * the sessions kept alive expire in keepalive order; s[0] loses c, a, b in
   * the order it acquired them. */
  const char *want =
      "4:6:0::10000000000;3:6:1:b:10000000000;"
      "2:4:2:b:10000000000;2:2:3:c:10000000000;2:3:4:a:10000000000;2:5:5:a:10000000000;"
      "4:1:0::11000000000;5:1:0:c:11000000000;5:1:0:a:11000000000;5:1:0:b:11000000000;"
      "4:2:0::11000000000;4:3:0::11000000000;4:4:0::11000000000;4:5:0::11000000000;";
  assert_string_equal(one.text, want);
}

/* ---- fencing tokens across restarts ------------------------------------------------------ */

static void test_tokens_persist_and_restart(void **state) {
  (void)state;
  rv_lt_opts o;
  rv_lt_opts_default(&o);
  o.token_reserve = 8;
  rv_lt *lt = mk(&o);
  rv_lt_events ev;
  rv_lt_events_init(&ev);

  uint64_t ceiling = 0;
  assert_true(rv_lt_token_persist_wanted(lt, &ceiling)); /* nothing reserved yet */
  assert_int_equal(ceiling, 8);
  rv_lt_token_persisted(lt, ceiling);
  assert_int_equal(rv_lt_token_durable(lt), 8);
  assert_false(rv_lt_token_persist_wanted(lt, &ceiling));

  uint64_t a = open_s(lt, 0, "svc", "1");
  uint64_t max_announced = 0, last = 0;
  size_t writes = 1;
  for (int i = 0; i < 50; i++) {
    uint64_t t = must_grant(lt, i, a, "L");
    assert_true(t > last);
    last = t;
    /* The shell: persist when asked, announce only what is durable. */
    if (rv_lt_token_persist_wanted(lt, &ceiling)) {
      assert_true(ceiling > rv_lt_token_durable(lt));
      rv_lt_token_persisted(lt, ceiling);
      writes++;
    }
    assert_true(t <= rv_lt_token_durable(lt)); /* asked early: never waits */
    max_announced = t;
    assert_int_equal(rel(lt, i, a, "L", t, &ev), RV_LT_OK);
  }
  assert_true(writes < 50 / 2); /* batched */
  assert_int_equal(rv_lt_token_last(lt), 50);
  uint64_t durable = rv_lt_token_durable(lt);
  rv_lt_token_persisted(lt, 3); /* going back is ignored */
  assert_int_equal(rv_lt_token_durable(lt), durable);
  rv_lt_destroy(lt);

  /* Restart: a new table seeded with the durable ceiling. */
  o.token_floor = durable;
  lt = mk(&o);
  assert_int_equal(rv_lt_token_last(lt), durable);
  a = open_s(lt, 0, "svc", "1");
  uint64_t t = must_grant(lt, 0, a, "L");
  assert_true(t > max_announced);
  assert_int_equal(t, durable + 1);
  assert_true(rv_lt_token_persist_wanted(lt, &ceiling));
  assert_int_equal(ceiling, durable + 1 + 8);
  rv_lt_events_free(&ev);
  rv_lt_destroy(lt);
}

static void test_session_id_floor(void **state) {
  (void)state;
  rv_lt_opts o;
  rv_lt_opts_default(&o);
  o.session_id_floor = UINT64_C(7) << 32;
  rv_lt *lt = mk(&o);
  assert_int_equal(open_s(lt, 0, "svc", "1"), (UINT64_C(7) << 32) + 1);
  rv_lt_destroy(lt);
}

/* ---- a seeded model test ------------------------------------------------------------------- */

#define M_SESSIONS 6
#define M_LOCKS 5
#define M_QMAX 16
#define M_STEPS 20000
#define M_WAITERS_MAX (M_STEPS + 1)

typedef struct model {
  rv_lt *lt;
  uint64_t rng;
  int64_t now;
  uint64_t sid[M_SESSIONS];       /* 0: slot free */
  uint64_t hold_sid[M_LOCKS];     /* shadow holder, 0 if none */
  uint64_t hold_tok[M_LOCKS];
  uint64_t last_tok[M_LOCKS];     /* per-lock monotonicity */
  uint64_t last_tok_any;
  uint64_t q[M_LOCKS][M_QMAX];    /* shadow FIFO of waiter ids */
  size_t qn[M_LOCKS];
  uint64_t w_sid[M_WAITERS_MAX];  /* waiter id -> session */
  unsigned char w_done[M_WAITERS_MAX]; /* terminal outcomes seen per waiter id */
  uint64_t max_waiter;
  rv_lt_events ev;
} model;

static const char *m_names[M_LOCKS] = {"m0", "m1", "m2", "m3", "m4"};

static uint64_t m_next(model *m) {
  uint64_t z = (m->rng += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static size_t m_below(model *m, size_t n) { return (size_t)(m_next(m) % n); }

static int m_lock_index(const char *name) {
  for (int i = 0; i < M_LOCKS; i++)
    if (strcmp(name, m_names[i]) == 0) return i;
  fail_msg("unknown lock %s", name);
  return -1;
}

static void m_new_token(model *m, int li, uint64_t sid, uint64_t tok) {
  if (m->hold_sid[li]) fail_msg("two holders for %s", m_names[li]);
  if (tok <= m->last_tok[li] || tok <= m->last_tok_any) fail_msg("token did not increase");
  m->last_tok[li] = m->last_tok_any = tok;
  m->hold_sid[li] = sid;
  m->hold_tok[li] = tok;
}

static void m_settle(model *m, uint64_t wid) {
  assert_true(wid >= 1 && wid <= m->max_waiter);
  if (m->w_done[wid]++) fail_msg("waiter %llu settled twice", (unsigned long long)wid);
}

static void m_q_remove(model *m, int li, uint64_t wid) {
  for (size_t i = 0; i < m->qn[li]; i++)
    if (m->q[li][i] == wid) {
      memmove(&m->q[li][i], &m->q[li][i + 1], (m->qn[li] - i - 1) * sizeof m->q[li][0]);
      m->qn[li]--;
      return;
    }
  fail_msg("waiter %llu not in the shadow queue of %s", (unsigned long long)wid, m_names[li]);
}

/* Apply the table's events to the shadow, checking FIFO and tokens. */
static void m_events(model *m) {
  for (size_t i = 0; i < m->ev.len; i++) {
    const rv_lt_event *e = &m->ev.v[i];
    switch (e->type) {
    case RV_LT_EV_GRANTED: {
      int li = m_lock_index(e->lock);
      assert_true(m->qn[li] > 0);
      if (m->q[li][0] != e->waiter_id) fail_msg("grant out of FIFO order on %s", e->lock);
      m_q_remove(m, li, e->waiter_id);
      m_settle(m, e->waiter_id);
      assert_int_equal(m->w_sid[e->waiter_id], e->session_id);
      m_new_token(m, li, e->session_id, e->token);
      break;
    }
    case RV_LT_EV_TIMED_OUT:
    case RV_LT_EV_WAITER_DROPPED:
      m_q_remove(m, m_lock_index(e->lock), e->waiter_id);
      m_settle(m, e->waiter_id);
      break;
    case RV_LT_EV_LOCK_LOST: {
      int li = m_lock_index(e->lock);
      assert_int_equal(m->hold_sid[li], e->session_id);
      assert_int_equal(m->hold_tok[li], e->token);
      m->hold_sid[li] = 0;
      break;
    }
    case RV_LT_EV_SESSION_EXPIRED:
      for (int s = 0; s < M_SESSIONS; s++)
        if (m->sid[s] == e->session_id) m->sid[s] = 0;
      break;
    default:
      fail_msg("unknown event %d", e->type);
    }
  }
  rv_lt_events_clear(&m->ev);
}

typedef struct m_qcheck {
  model *m;
  int li;
  size_t i;
} m_qcheck;

static bool m_check_waiter(const rv_lt_waiter_view *v, void *arg) {
  m_qcheck *c = arg;
  assert_true(c->i < c->m->qn[c->li]);
  assert_int_equal(v->waiter_id, c->m->q[c->li][c->i]);
  assert_int_equal(v->position, c->i + 1);
  c->i++;
  return true;
}

/* Compare the table with the shadow: holders, tokens, queue order. */
static void m_compare(model *m) {
  CHECK_LT(m->lt);
  for (int li = 0; li < M_LOCKS; li++) {
    rv_lt_lock_view v;
    int rc = rv_lt_lock_get(m->lt, S(m_names[li]), &v);
    if (rc == RV_LT_ENOLOCK) {
      assert_int_equal(m->hold_sid[li], 0);
      assert_int_equal(m->qn[li], 0);
      continue;
    }
    assert_int_equal(v.holder_session, m->hold_sid[li]);
    if (v.held) assert_int_equal(v.token, m->hold_tok[li]);
    assert_int_equal(v.waiters, m->qn[li]);
    m_qcheck c = {m, li, 0};
    assert_int_equal(rv_lt_lock_waiters(m->lt, S(m_names[li]), m_check_waiter, &c), RV_LT_OK);
    assert_int_equal(c.i, m->qn[li]);
  }
}

static uint64_t m_some_session(model *m) { return m->sid[m_below(m, M_SESSIONS)]; }

static void m_step(model *m) {
  m->now += (int64_t)m_below(m, 4) * 100 * MS;
  size_t op = m_below(m, 100);
  uint64_t sid = m_some_session(m);
  int li = (int)m_below(m, M_LOCKS);
  int rc;
  if (op < 8) { /* open */
    size_t slot = m_below(m, M_SESSIONS);
    if (m->sid[slot]) return;
    rv_lt_identity id = {S("model"), S("r"), S(""), S(""), 0};
    int64_t ttl = (int64_t)(1 + m_below(m, 5)) * SEC;
    assert_int_equal(rv_lt_session_open(m->lt, m->now, ttl, &id, &m->sid[slot]), RV_LT_OK);
  } else if (op < 30) { /* keepalive */
    if (!sid) return;
    rc = rv_lt_session_keepalive(m->lt, m->now, sid, NULL);
    assert_true(rc == RV_LT_OK || rc == RV_LT_EEXPIRED);
  } else if (op < 33) { /* close */
    if (!sid) return;
    rc = rv_lt_session_close(m->lt, m->now, sid, &m->ev);
    assert_true(rc == RV_LT_OK || rc == RV_LT_EEXPIRED);
    if (rc == RV_LT_OK) {
      for (int s = 0; s < M_SESSIONS; s++)
        if (m->sid[s] == sid) m->sid[s] = 0;
      for (int l = 0; l < M_LOCKS; l++)
        if (m->hold_sid[l] == sid) m->hold_sid[l] = 0;
    }
  } else if (op < 65) { /* acquire */
    if (!sid) return;
    int mode = m_below(m, 3) == 0 ? RV_LT_TRY : RV_LT_WAIT;
    int64_t deadline = m_below(m, 3) == 0 ? RV_LT_NO_DEADLINE
                                           : m->now + (int64_t)m_below(m, 40) * 100 * MS;
    rv_lt_acquire_req req = {sid, S(m_names[li]), S("model"), mode, deadline,
                             (int64_t)m_below(m, 3) * 500 * MS, 0};
    rv_lt_acquire_res res;
    rc = rv_lt_acquire(m->lt, m->now, &req, &res);
    if (rc == RV_LT_GRANTED) {
      assert_int_equal(m->qn[li], 0);
      m_new_token(m, li, sid, res.token);
    } else if (rc == RV_LT_QUEUED) {
      assert_true(res.waiter_id == m->max_waiter + 1);
      m->max_waiter = res.waiter_id;
      m->w_sid[res.waiter_id] = sid;
      assert_true(m->qn[li] < M_QMAX);
      m->q[li][m->qn[li]++] = res.waiter_id;
      assert_int_equal(res.position, m->qn[li]);
    } else {
      assert_true(rc == RV_LT_BUSY || rc == RV_LT_TIMEDOUT || rc == RV_LT_EEXPIRED ||
                  rc == RV_LT_EWAITERS);
    }
  } else if (op < 85) { /* release: right, stale or foreign */
    if (!m->hold_sid[li]) return;
    uint64_t who = m_below(m, 4) ? m->hold_sid[li] : m_some_session(m);
    uint64_t tok = m_below(m, 5) ? m->hold_tok[li] : m->hold_tok[li] - 1;
    rc = rv_lt_release(m->lt, m->now, who, S(m_names[li]), tok, &m->ev);
    if (rc == RV_LT_OK) {
      assert_int_equal(who, m->hold_sid[li]);
      assert_int_equal(tok, m->hold_tok[li]);
      m->hold_sid[li] = 0;
    } else {
      assert_true(rc == RV_LT_ESTALE || rc == RV_LT_ENOTOWNER || rc == RV_LT_EEXPIRED ||
                  rc == RV_LT_ENOSESSION);
    }
  } else if (op < 92) { /* withdraw a queued waiter */
    if (!m->qn[li]) return;
    uint64_t wid = m->q[li][m_below(m, m->qn[li])];
    assert_int_equal(rv_lt_withdraw(m->lt, m->now, m->w_sid[wid], wid), RV_LT_OK);
    m_q_remove(m, li, wid);
    m_settle(m, wid);
  } else { /* tick */
    assert_int_equal(rv_lt_tick(m->lt, m->now, &m->ev), RV_LT_OK);
  }
  m_events(m);
}

static void model_run(uint64_t seed) {
  static model m;
  memset(&m, 0, sizeof m);
  m.rng = seed;
  rv_lt_opts o;
  rv_lt_opts_default(&o);
  o.max_waiters_per_lock = M_QMAX;
  o.hash_seed[0] = seed;
  m.lt = mk(&o);
  rv_lt_events_init(&m.ev);
  for (int i = 0; i < M_STEPS; i++) {
    m_step(&m);
    if (i % 16 == 0) m_compare(&m);
  }
  m_compare(&m);
  /* Drain: let every session lapse and every delay end; everything settles. */
  m.now += 2 * RV_LT_TTL_MAX_NS;
  assert_int_equal(rv_lt_tick(m.lt, m.now, &m.ev), RV_LT_OK);
  m_events(&m);
  m_compare(&m);
  for (uint64_t w = 1; w <= m.max_waiter; w++)
    if (m.w_done[w] != 1) fail_msg("seed %llu: waiter %llu never settled", (unsigned long long)seed, (unsigned long long)w);
  rv_lt_stats st;
  rv_lt_get_stats(m.lt, &st);
  assert_int_equal(st.sessions, 0);
  assert_int_equal(st.locks, 0);
  assert_int_equal(st.waiters, 0);
  assert_int_equal(st.grants, st.grants_immediate + st.handoffs);
  assert_int_equal(rv_lt_next_deadline(m.lt), RV_LT_NO_DEADLINE);
  assert_true(m.max_waiter > 100); /* the run did exercise queues */
  rv_lt_events_free(&m.ev);
  rv_lt_destroy(m.lt);
}

static void test_model(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 8; seed++) model_run(seed);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_grant_busy_release, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_fifo_handoff, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_session_waits_behind_itself, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_stale_and_foreign_release, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_keepalive_and_expired_session, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_expiry_releases_and_grants, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_close_releases_without_delay, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_handoff_skips_dead_waiters, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_lock_delay, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_waiter_deadline, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_withdraw_mid_queue, fx_setup, fx_teardown),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_introspection),
      cmocka_unit_test(test_tick_determinism),
      cmocka_unit_test(test_tokens_persist_and_restart),
      cmocka_unit_test(test_session_id_floor),
      cmocka_unit_test(test_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
