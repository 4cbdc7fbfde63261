/*
 * Faults of the simulator (rt/sim.h): kill -9 and restart of a simulated
 * process, segment loss, connection resets, and the "durability" scenario
 * (the queue under crashes, disk crashes and network faults).
 *
 * As in test_sim.c, simulated threads record what they saw (CHECK) and the
 * test asserts after rv_sim_run returns; every time asserted on is virtual.
 */
// ctest-timeout: 300
#include "sim_support.h"

#include "client/coord_client.h"
#include "rt/sim.h"
#include "server/coord.h"
#include "sim/scenario.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- kill -9 and restart ------------------------------------------------------------------------ */

typedef struct crash_t {
  rv_sim_world *w;
  rv_sim_proc *srv, *cli;
  int ticks, ticks_at_crash;
  bool dead_callback_ran, accepted_both;
  int pid_before, pid_after;
  int eof_rc, rst_rc, late_write_rc, late_read_rc, refused_rc, restarted_echo;
  int respawn_dead_rc, restart_alive_rc;
} crash_t;

static void ticker(void *arg) {
  crash_t *s = arg;
  for (;;) { /* only a crash ends it */
    s->ticks++;
    rv_sleep(NULL, 10 * RV_NS_PER_MS);
  }
}

static void dead_callback(void *arg) { ((crash_t *)arg)->dead_callback_ran = true; }

/* First incarnation: accepts two connections, reads neither, and never ends by itself. */
static void doomed_server(void *arg) {
  crash_t *s = arg;
  char *leaked = malloc(4096); /* leaked by the kill, as with a real kill -9 */
  CHECK(leaked != NULL);
  rv_thread *t;
  CHECK(rv_thread_start(&t, "ticker", "test", ticker, s) == RV_OK);
  rv_sim_at(s->w, 3 * RV_NS_PER_S, dead_callback, s); /* must be dropped by the crash */
  rv_listener *l;
  CHECK(rv_tcp_listen(&l, rv_sim_proc_addr(s->srv), 7000, 8) == RV_OK);
  rv_conn *a, *b;
  CHECK(rv_listener_accept(l, &a, NULL) == RV_OK);
  CHECK(rv_listener_accept(l, &b, NULL) == RV_OK);
  s->accepted_both = true;
  leaked[0] = (char)(uintptr_t)a;
  rv_sleep(NULL, 3600 * RV_NS_PER_S);
  CHECK(!"a killed thread ran again");
}

/* Second incarnation: an echo server for one connection. */
static void echo_server(void *arg) {
  crash_t *s = arg;
  echo_one_connection(s->srv, 7000);
}

static void crash_cb(void *arg) {
  crash_t *s = arg;
  s->ticks_at_crash = s->ticks;
  s->pid_before = rv_sim_proc_pid(s->srv);
  rv_sim_proc_crash(s->srv);
  rv_sim_proc_crash(s->srv); /* a no-op */
  s->respawn_dead_rc = rv_sim_spawn(s->srv, "x", "test", echo_server, s);
}

static void restart_cb(void *arg) {
  crash_t *s = arg;
  CHECK(rv_sim_proc_restart(s->srv) == RV_OK);
  s->restart_alive_rc = rv_sim_proc_restart(s->srv);
  s->pid_after = rv_sim_proc_pid(s->srv);
  CHECK(rv_sim_spawn(s->srv, "echo", "test", echo_server, s) == RV_OK);
}

static void crash_client(void *arg) {
  crash_t *s = arg;
  rv_sleep(NULL, 10 * RV_NS_PER_MS);
  rv_conn *a, *b;
  CHECK(rv_tcp_connect(&a, rv_sim_proc_name(s->srv), 7000, NULL) == RV_OK);
  CHECK(rv_tcp_connect(&b, rv_sim_proc_addr(s->srv), 7000, NULL) == RV_OK);
  CHECK(rv_conn_write_all(b, "unread", 6, NULL) == RV_OK); /* the server never reads it */
  char c;
  /* The server is killed at 0.5 s: a socket without unread input closes with a FIN. */
  s->eof_rc = (int)rv_conn_read(a, &c, 1, NULL);
  CHECK(rv_now_ns() >= 500 * RV_NS_PER_MS);
  /* ...one with unread input with an RST. */
  s->rst_rc = (int)rv_conn_read(b, &c, 1, NULL);
  /* Writing to the dead process's socket works locally; the answer is an RST. */
  s->late_write_rc = rv_conn_write_all(a, "late", 4, NULL);
  rv_sleep(NULL, 50 * RV_NS_PER_MS); /* until then a read still says end of stream (0) */
  s->late_read_rc = (int)rv_conn_read(a, &c, 1, NULL);
  rv_conn_close(a);
  rv_conn_close(b);
  /* Nobody listens while it is dead. */
  rv_conn *x;
  s->refused_rc = rv_tcp_connect(&x, rv_sim_proc_name(s->srv), 7000, NULL);
  /* The restarted incarnation (at 1 s) answers under the same name. */
  rv_sleep(NULL, 1200 * RV_NS_PER_MS - rv_now_ns());
  CHECK(rv_tcp_connect(&x, rv_sim_proc_name(s->srv), 7000, NULL) == RV_OK);
  char buf[8] = {0};
  CHECK(rv_conn_write_all(x, "again", 5, NULL) == RV_OK);
  CHECK(rv_conn_read_full(x, buf, 5, NULL) == RV_OK);
  s->restarted_echo = strcmp(buf, "again") == 0;
  rv_conn_close(x);
}

static uint64_t crash_run(uint64_t seed, crash_t *s) {
  rv_sim_world *w = world_new(seed);
  *s = (crash_t){.w = w};
  s->srv = rv_sim_proc_new(w, "srv");
  s->cli = rv_sim_proc_new(w, "cli");
  rv_sim_spawn(s->srv, "server", "test", doomed_server, s);
  rv_sim_spawn(s->cli, "client", "test", crash_client, s);
  rv_sim_at(w, 500 * RV_NS_PER_MS, crash_cb, s);
  rv_sim_at(w, 1 * RV_NS_PER_S, restart_cb, s);
  run_to_end(w, 60 * RV_NS_PER_S);
  uint64_t h = rv_sim_hash(w);
  rv_sim_world_free(w);
  return h;
}

static void test_crash_and_restart(void **state) {
  crash_t s;
  uint64_t h = crash_run(5, &s);
  assert_true(s.accepted_both);
  assert_int_equal(s.eof_rc, 0);
  assert_int_equal(s.rst_rc, RV_ECLOSED);
  assert_int_equal(s.late_write_rc, RV_OK);
  assert_int_equal(s.late_read_rc, RV_ECLOSED);
  assert_int_equal(s.refused_rc, RV_ECONNREFUSED);
  assert_int_equal(s.respawn_dead_rc, RV_ECLOSED);
  assert_int_equal(s.restart_alive_rc, RV_EINVAL);
  assert_true(s.restarted_echo);
  assert_true(s.ticks_at_crash >= 40);
  assert_int_equal(s.ticks, s.ticks_at_crash); /* the ticker never ran again */
  assert_false(s.dead_callback_ran);
  assert_int_not_equal(s.pid_before, s.pid_after);
  crash_t s2;
  assert_true(crash_run(5, &s2) == h); /* deterministic, crash included */
}

/* ---- loss: delay, never a gap or a reordering --------------------------------------------------- */

#define LOSS_CHUNKS 200

typedef struct loss_t {
  rv_sim_proc *srv, *cli;
  bool intact;
  int64_t last_write_at, eof_at;
} loss_t;

static void sink_server(void *arg) {
  loss_t *s = arg;
  rv_listener *l;
  CHECK(rv_tcp_listen(&l, rv_sim_proc_addr(s->srv), 7100, 8) == RV_OK);
  rv_conn *c;
  CHECK(rv_listener_accept(l, &c, NULL) == RV_OK);
  static char got[LOSS_CHUNKS * 6 + 64];
  size_t len = 0;
  ssize_t n;
  while ((n = rv_conn_read(c, got + len, sizeof got - len, NULL)) > 0)
    len += (size_t)n;
  s->eof_at = rv_now_ns();
  char want[LOSS_CHUNKS * 6 + 1];
  for (int i = 0; i < LOSS_CHUNKS; i++)
    snprintf(want + 6 * i, 7, "%05d\n", i);
  s->intact = n == 0 && len == LOSS_CHUNKS * 6 && memcmp(got, want, len) == 0;
  rv_conn_close(c);
  rv_listener_close(l);
}

static void loss_client(void *arg) {
  loss_t *s = arg;
  rv_sleep(NULL, 10 * RV_NS_PER_MS);
  rv_conn *c;
  int rc;
  while ((rc = rv_tcp_connect(&c, rv_sim_proc_name(s->srv), 7100, NULL)) != RV_OK)
    rv_sleep(NULL, 10 * RV_NS_PER_MS);
  for (int i = 0; i < LOSS_CHUNKS; i++) {
    char chunk[8];
    snprintf(chunk, sizeof chunk, "%05d\n", i);
    CHECK(rv_conn_write_all(c, chunk, 6, NULL) == RV_OK);
    rv_sleep(NULL, 1 * RV_NS_PER_MS);
  }
  s->last_write_at = rv_now_ns();
  CHECK(rv_conn_shutdown_write(c) == RV_OK);
  char b;
  CHECK(rv_conn_read(c, &b, 1, NULL) == 0);
  rv_conn_close(c);
}

static int64_t loss_run(uint64_t seed, double loss, uint64_t *hash) {
  rv_sim_faults f = {.loss = loss};
  rv_sim_world *w = world_new_faults(seed, &f);
  loss_t s = {0};
  s.srv = rv_sim_proc_new(w, "srv");
  s.cli = rv_sim_proc_new(w, "cli");
  rv_sim_spawn(s.srv, "sink", "test", sink_server, &s);
  rv_sim_spawn(s.cli, "client", "test", loss_client, &s);
  run_to_end(w, 600 * RV_NS_PER_S);
  assert_true(s.intact);
  if (hash)
    *hash = rv_sim_hash(w);
  rv_sim_world_free(w);
  return s.eof_at - s.last_write_at;
}

static void test_loss_delays_but_keeps_bytes_and_order(void **state) {
  int64_t clean = loss_run(3, 0, NULL);
  uint64_t h1, h2;
  int64_t lossy = loss_run(3, 0.2, &h1);
  assert_true(clean < 10 * RV_NS_PER_MS);
  /* 200 segments at 20% loss: some lost, each retransmitted after >= 200 ms. */
  assert_true(lossy >= RV_SIM_RTO_MIN_NS);
  loss_run(3, 0.2, &h2);
  assert_true(h1 == h2);
}

/* ---- resets ---------------------------------------------------------------------------------------- */

typedef struct reset_t {
  rv_sim_world *w;
  rv_sim_proc *srv, *cli;
  int srv_read_rc, cli_read_rc, cli_write_rc, nreset;
  int64_t reset_seen_at;
} reset_t;

static void reset_server(void *arg) {
  reset_t *s = arg;
  rv_listener *l;
  CHECK(rv_tcp_listen(&l, rv_sim_proc_addr(s->srv), 7200, 8) == RV_OK);
  rv_conn *c;
  CHECK(rv_listener_accept(l, &c, NULL) == RV_OK);
  char buf[8];
  CHECK(rv_conn_read_full(c, buf, 2, NULL) == RV_OK);
  CHECK(rv_conn_write_all(c, "ok", 2, NULL) == RV_OK);
  s->srv_read_rc = (int)rv_conn_read(c, buf, 1, NULL); /* blocks until the reset */
  rv_conn_close(c);
  rv_listener_close(l);
}

static void reset_cb(void *arg) {
  reset_t *s = arg;
  s->nreset = rv_sim_reset_conns(s->w, s->cli, s->srv);
}

static void reset_client(void *arg) {
  reset_t *s = arg;
  rv_sleep(NULL, 10 * RV_NS_PER_MS);
  rv_conn *c;
  CHECK(rv_tcp_connect(&c, rv_sim_proc_name(s->srv), 7200, NULL) == RV_OK);
  char buf[4];
  CHECK(rv_conn_write_all(c, "hi", 2, NULL) == RV_OK);
  CHECK(rv_conn_read_full(c, buf, 2, NULL) == RV_OK);
  s->cli_read_rc = (int)rv_conn_read(c, buf, 1, NULL);
  s->reset_seen_at = rv_now_ns();
  s->cli_write_rc = rv_conn_write_all(c, "x", 1, NULL);
  rv_conn_close(c);
}

static reset_t reset_run(uint64_t seed, double resets_per_s, int64_t reset_at) {
  rv_sim_faults f = {.resets_per_s = resets_per_s};
  rv_sim_world *w = world_new_faults(seed, &f);
  reset_t s = {.w = w};
  s.srv = rv_sim_proc_new(w, "srv");
  s.cli = rv_sim_proc_new(w, "cli");
  rv_sim_spawn(s.srv, "server", "test", reset_server, &s);
  rv_sim_spawn(s.cli, "client", "test", reset_client, &s);
  if (reset_at)
    rv_sim_at(w, reset_at, reset_cb, &s);
  run_to_end(w, 600 * RV_NS_PER_S);
  rv_sim_world_free(w);
  return s;
}

static void test_reset_fails_both_sides(void **state) {
  reset_t s = reset_run(4, 0, 2 * RV_NS_PER_S);
  assert_int_equal(s.nreset, 1);
  assert_int_equal(s.srv_read_rc, RV_ECLOSED);
  assert_int_equal(s.cli_read_rc, RV_ECLOSED);
  assert_int_equal(s.cli_write_rc, RV_ECLOSED);
  assert_true(s.reset_seen_at == 2 * RV_NS_PER_S);
  /* Random resets: 2 per connection per second end an idle connection soon enough. */
  reset_t r = reset_run(4, 2.0, 0);
  assert_int_equal(r.srv_read_rc, RV_ECLOSED);
  assert_int_equal(r.cli_read_rc, RV_ECLOSED);
  assert_true(r.reset_seen_at < 30 * RV_NS_PER_S);
}

/* ---- the durability scenario ------------------------------------------------------------------------ */

static void run_durability(uint64_t seed, bool broken, rv_sim_durability_result *r) {
  rv_sim_durability_opts o = {.seed = seed, .ack_before_sync = broken};
  assert_int_equal(rv_sim_durability_run(&o, r), RV_OK);
}

/* ---- a lock release coord never answered is sent again (libravel) ------------------------------ */

/*
 * Client A holds lock L; its connections to coord are reset and cut just before it
 * releases L, so the release gets no answer; the cut heals 6 s later, within A's session
 * TTL.  Client B then asks for L with a 12 s deadline while A's session is still alive: it
 * gets it only if A's session sent the release again after its keepalive got through.
 * Without that, L stays held for as long as A's session lives (found by all-fixes-faults).
 */
typedef struct lost_release_t {
  rv_sim_world *w;
  rv_sim_proc *coord_proc, *a, *b;
  rv_coord *coord;
  int done;
  int release_rc, b_rc;
  uint64_t retried;
} lost_release_t;

#define LR_PORT 7400

static void lr_coord(void *arg) {
  lost_release_t *s = arg;
  rv_coord_opts o = {.host = rv_sim_proc_addr(s->coord_proc), .port = LR_PORT, .no_admin = true,
                     .data_dir = "/var/lib/ravel/coord"};
  char why[256];
  CHECK(rv_coord_start(&s->coord, &o, why, sizeof why) == RV_OK);
  if (!s->coord)
    return;
  rv_coord_run(s->coord);
  rv_coord_free(s->coord);
}

static void lr_finish(lost_release_t *s) {
  if (++s->done == 2)
    rv_coord_stop(s->coord);
}

static rv_coord_client *lr_open(lost_release_t *s, const char *service, rv_session **sess) {
  rv_coord_client *c = NULL;
  rv_coord_client_opts co = {.host = rv_sim_proc_addr(s->coord_proc), .port = LR_PORT,
                             .service = service};
  CHECK(rv_coord_client_open(&c, NULL, &co) == RV_OK);
  CHECK(c && rv_session_open_cb(NULL, c, 10000, NULL, NULL, sess) == RV_OK);
  return c;
}

static void lr_cut(void *arg) {
  lost_release_t *s = arg;
  rv_sim_partition(s->w, s->a, s->coord_proc, true);
  rv_sim_reset_conns(s->w, s->a, s->coord_proc);
}

static void lr_heal(void *arg) {
  lost_release_t *s = arg;
  rv_sim_partition(s->w, s->a, s->coord_proc, false);
}

static void lr_client_a(void *arg) {
  lost_release_t *s = arg;
  rv_sleep(NULL, 500 * RV_NS_PER_MS); /* coord listens */
  rv_session *sess = NULL;
  rv_coord_client *c = lr_open(s, "a", &sess);
  rv_dlock *l = NULL;
  CHECK(sess && rv_dlock_acquire(NULL, sess, "L", NULL, &l) == RV_OK);
  rv_sim_at(s->w, 2 * RV_NS_PER_S, lr_cut, s);
  rv_sim_at(s->w, 8 * RV_NS_PER_S, lr_heal, s);
  rv_sleep(NULL, 2 * RV_NS_PER_S + 100 * RV_NS_PER_MS - rv_now_ns());
  s->release_rc = l ? rv_dlock_release(l) : RV_OK;
  rv_sleep(NULL, 30 * RV_NS_PER_S - rv_now_ns()); /* the session stays alive meanwhile */
  CHECK(!rv_session_lost(sess));
  rv_coord_stats st;
  rv_coord_client_stats(c, &st);
  s->retried = st.releases_retried;
  rv_session_close(sess);
  rv_coord_client_close(c);
  lr_finish(s);
}

static void lr_client_b(void *arg) {
  lost_release_t *s = arg;
  rv_sleep(NULL, 9 * RV_NS_PER_S);
  rv_session *sess = NULL;
  rv_coord_client *c = lr_open(s, "b", &sess);
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, 12 * RV_NS_PER_S);
  rv_dlock *l = NULL;
  s->b_rc = sess ? rv_dlock_acquire(ctx, sess, "L", NULL, &l) : RV_EINVAL;
  rv_ctx_free(ctx);
  if (l)
    rv_dlock_release(l);
  rv_session_close(sess);
  rv_coord_client_close(c);
  lr_finish(s);
}

static void test_lost_release_is_sent_again(void **state) {
  lost_release_t s = {.release_rc = RV_OK, .b_rc = RV_OK};
  s.w = world_new(5);
  s.coord_proc = rv_sim_proc_new(s.w, "coord");
  s.a = rv_sim_proc_new(s.w, "client-a");
  s.b = rv_sim_proc_new(s.w, "client-b");
  rv_sim_spawn(s.coord_proc, "coord-loop", "server", lr_coord, &s);
  rv_sim_spawn(s.a, "main", "main", lr_client_a, &s);
  rv_sim_spawn(s.b, "main", "main", lr_client_b, &s);
  run_to_end(s.w, 120 * RV_NS_PER_S);
  rv_sim_world_free(s.w);
  assert_int_not_equal(s.release_rc, RV_OK); /* the first try got no answer */
  assert_int_equal(s.b_rc, RV_OK);           /* yet L was released while A's session lived */
  assert_true(s.retried >= 1);
}

static void test_durability_fixed_seed(void **state) {
  rv_sim_durability_result r, r2;
  run_durability(1, false, &r);
  if (!r.ok)
    fail_msg("seed 1: %s\n%s", r.violation, r.trace);
  assert_true(r.crashes >= 2);
  assert_int_equal(r.restarts, r.crashes);
  assert_int_equal(r.acknowledged, 300);
  run_durability(1, false, &r2);
  assert_true(r2.hash == r.hash);
  assert_true(r2.events == r.events);
}

static void test_durability_seed_sweep(void **state) {
  for (uint64_t seed = 2; seed <= 6; seed++) {
    rv_sim_durability_result r;
    run_durability(seed, false, &r);
    if (!r.ok)
      fail_msg("seed %llu: %s\n%s", (unsigned long long)seed, r.violation, r.trace);
  }
}

static void test_ack_before_sync_is_caught(void **state) {
  rv_sim_durability_result r;
  run_durability(1, true, &r);
  assert_false(r.ok);
  assert_non_null(strstr(r.violation, "acknowledged message lost"));
  /* Found after the run: the diagnosis is the story of each lost body and its crash. */
  const char *first = strstr(r.violation, "(first ");
  assert_non_null(first);
  char story[64];
  snprintf(story, sizeof story, "%.9s: PUB at ", first + 7);
  const char *told = strstr(r.diagnosis, story);
  assert_non_null(told);
  assert_non_null(strstr(told, "s; the queue crashed "));
  assert_non_null(strstr(r.diagnosis, "answered OK by a queue that crashed before the OK arrived"));
  int caught = 0;
  for (uint64_t seed = 2; seed <= 6; seed++) {
    run_durability(seed, true, &r);
    caught += !r.ok;
  }
  assert_true(caught >= 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crash_and_restart),
      cmocka_unit_test(test_loss_delays_but_keeps_bytes_and_order),
      cmocka_unit_test(test_reset_fails_both_sides),
      cmocka_unit_test(test_lost_release_is_sent_again),
      cmocka_unit_test(test_durability_fixed_seed),
      cmocka_unit_test(test_durability_seed_sweep),
      cmocka_unit_test(test_ack_before_sync_is_caught),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
