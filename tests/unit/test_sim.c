/*
 * The simulation backend of rt (rt/sim.h) and the "locks" and "queue" scenarios.
 *
 * Simulated threads are coroutines on the test's OS thread, so cmocka's
 * asserts (which longjmp) are never called inside them: they record what
 * they saw with CHECK, and the test asserts after rv_sim_run returns.
 * Every time asserted on is virtual time; wall time is never asserted.
 */
#include "sim_support.h"

#include "obs/registry.h"
#include "rt/sim.h"
#include "sim/scenario.h"

#include <stdio.h>
#include <string.h>

/* ---- mutex and condition variable: producer / consumer ---------------------------------- */

#define ITEMS 200
#define PRODUCERS 3

typedef struct pc {
  rv_mutex mu;
  rv_cond nonempty;
  int queue, produced, consumed, in_section;
} pc;

static void producer(void *arg) {
  pc *s = arg;
  for (int i = 0; i < ITEMS; i++) {
    rv_mutex_lock(&s->mu);
    CHECK(s->in_section == 0);
    s->in_section++;
    rv_sleep(NULL, RV_NS_PER_MS); /* park while holding: others must queue */
    s->queue++;
    s->produced++;
    s->in_section--;
    rv_cond_signal(&s->nonempty);
    rv_mutex_unlock(&s->mu);
  }
}

static void consumer(void *arg) {
  pc *s = arg;
  rv_mutex_lock(&s->mu);
  while (s->consumed < ITEMS * PRODUCERS) {
    while (s->queue == 0)
      CHECK(rv_cond_wait(&s->nonempty, &s->mu, NULL) == 0);
    s->queue--;
    s->consumed++;
  }
  rv_mutex_unlock(&s->mu);
}

static void pc_main(void *arg) {
  pc *s = arg;
  rv_mutex_init(&s->mu, "pc");
  rv_cond_init(&s->nonempty, "nonempty");
  rv_thread *t[PRODUCERS + 1];
  CHECK(rv_thread_start(&t[0], "consumer", "test", consumer, s) == RV_OK);
  for (int i = 1; i <= PRODUCERS; i++)
    CHECK(rv_thread_start(&t[i], "producer", "test", producer, s) == RV_OK);
  for (int i = 0; i <= PRODUCERS; i++)
    rv_thread_join(t[i]);
  CHECK(rv_mutex_trylock(&s->mu) == RV_OK);
  CHECK(rv_mutex_trylock(&s->mu) == RV_EBUSY);
  rv_mutex_unlock(&s->mu);
  rv_cond_destroy(&s->nonempty);
  rv_mutex_destroy(&s->mu);
}

static void test_mutex_cond(void **state) {
  rv_sim_world *w = world_new(7);
  pc s = {0};
  rv_sim_spawn(rv_sim_proc_new(w, "p"), "main", "test", pc_main, &s);
  run_to_end(w, RV_NO_DEADLINE);
  assert_int_equal(s.consumed, ITEMS * PRODUCERS);
  /* Every 1 ms hold was serialised: virtual time is at least their sum. */
  assert_true(rv_sim_now(w) >= (int64_t)ITEMS * PRODUCERS * RV_NS_PER_MS);
  rv_sim_world_free(w);
}

/* ---- per-thread slots: one per simulated thread, not per OS thread ------------------------ */

static void slot_user(void *arg) {
  int *seen = arg;
  int me = (int)rv_thread_id(rv_thread_self());
  for (int i = 0; i < 20; i++) {
    int *slot = rv_thread_slot(RV_SLOT_COORD_LAST_ERROR, sizeof(int));
    CHECK(slot != NULL);
    CHECK(i == 0 || *slot == me); /* no other simulated thread wrote it while we slept */
    *slot = me;
    rv_sleep(NULL, RV_NS_PER_MS);
  }
  (*seen)++;
}

static void slots_main(void *arg) {
  rv_thread *t[4];
  for (int i = 0; i < 4; i++)
    CHECK(rv_thread_start(&t[i], "slot-user", "test", slot_user, arg) == RV_OK);
  for (int i = 0; i < 4; i++)
    rv_thread_join(t[i]);
}

static void test_thread_slots_per_simulated_thread(void **state) {
  rv_sim_world *w = world_new(11);
  int seen = 0;
  rv_sim_spawn(rv_sim_proc_new(w, "p"), "main", "test", slots_main, &seen);
  run_to_end(w, RV_NO_DEADLINE);
  assert_int_equal(seen, 4);
  rv_sim_world_free(w);
}

/* ---- rwlock: writer preference, as under rt_os ------------------------------------------- */

typedef struct rwt {
  rv_rwlock rw;
  char log[16];
  int n;
} rwt;

static void rw_reader2(void *arg) {
  rwt *s = arg;
  rv_sleep(NULL, 20 * RV_NS_PER_MS); /* arrives after the writer queued */
  rv_rwlock_rdlock(&s->rw);
  s->log[s->n++] = 'r';
  rv_rwlock_rdunlock(&s->rw);
}

static void rw_writer(void *arg) {
  rwt *s = arg;
  rv_sleep(NULL, 10 * RV_NS_PER_MS);
  rv_rwlock_wrlock(&s->rw);
  s->log[s->n++] = 'W';
  rv_rwlock_wrunlock(&s->rw);
}

static void rw_main(void *arg) {
  rwt *s = arg;
  rv_rwlock_init(&s->rw, "rw");
  rv_rwlock_rdlock(&s->rw);
  rv_thread *w, *r;
  CHECK(rv_thread_start(&w, "writer", "test", rw_writer, s) == RV_OK);
  CHECK(rv_thread_start(&r, "reader2", "test", rw_reader2, s) == RV_OK);
  rv_sleep(NULL, 100 * RV_NS_PER_MS); /* writer waits for us; reader2 waits for the writer */
  s->log[s->n++] = 'R';
  rv_rwlock_rdunlock(&s->rw);
  rv_thread_join(w);
  rv_thread_join(r);
  rv_rwlock_destroy(&s->rw);
}

static void test_rwlock_writer_preferring(void **state) {
  for (uint64_t seed = 1; seed <= 5; seed++) {
    rv_sim_world *w = world_new(seed);
    rwt s = {0};
    rv_sim_spawn(rv_sim_proc_new(w, "p"), "main", "test", rw_main, &s);
    run_to_end(w, RV_NO_DEADLINE);
    assert_string_equal(s.log, "RWr");
    rv_sim_world_free(w);
  }
}

/* ---- a grant changes the waiter's published state at once ------------------------------------ */

/* A thread dump taken right after an unlock, before the granted thread has run again,
 * must show that thread holding the lock, not waiting for it: a dump that showed it
 * still waiting (with an earlier read hold) reads as a thread deadlocked with itself. */
typedef struct granted {
  rv_mutex mu;
  rv_rwlock rw;
} granted;

static void granted_taker(void *arg) {
  granted *s = arg;
  rv_mutex_lock(&s->mu);
  rv_rwlock_rdlock(&s->rw);
  rv_rwlock_rdunlock(&s->rw);
  rv_mutex_unlock(&s->mu);
}

/* The snapshot of thread `name`: not waiting, holding lock_id in mode. */
static void check_holds(const char *name, uint64_t lock_id, rv_lock_mode mode) {
  rv_snapshot *snap = rv_snapshot_take(rv_registry_current());
  CHECK(snap != NULL);
  bool seen = false;
  for (size_t i = 0; snap && i < snap->nthreads; i++) {
    const rv_thread_snap *t = &snap->threads[i];
    if (strcmp(t->name, name) != 0)
      continue;
    seen = true;
    CHECK(t->wait.kind == RV_WAIT_NONE);
    bool holds = false;
    for (int k = 0; k < t->nheld; k++)
      holds |= t->held[k].lock_id == lock_id && t->held[k].mode == mode;
    CHECK(holds);
  }
  CHECK(seen);
  rv_snapshot_free(snap);
}

static void granted_main(void *arg) {
  granted *s = arg;
  rv_mutex_init(&s->mu, "handed-over");
  rv_rwlock_init(&s->rw, "read-after-write");
  rv_mutex_lock(&s->mu);
  rv_rwlock_wrlock(&s->rw);
  rv_thread *t;
  CHECK(rv_thread_start(&t, "taker", "test", granted_taker, s) == RV_OK);
  rv_sleep(NULL, RV_NS_PER_MS); /* the taker waits for the mutex */
  rv_mutex_unlock(&s->mu);       /* no yield until the snapshot: the taker has not run */
  check_holds("taker", s->mu.id, RV_MODE_WRITE);
  rv_sleep(NULL, RV_NS_PER_MS); /* the taker waits to read-lock behind our write hold */
  rv_rwlock_wrunlock(&s->rw);
  check_holds("taker", s->rw.id, RV_MODE_READ);
  rv_thread_join(t);
  rv_mutex_destroy(&s->mu);
  rv_rwlock_destroy(&s->rw);
}

static void test_grant_publishes_hold(void **state) {
  rv_sim_world *w = world_new(1);
  granted s;
  rv_sim_spawn(rv_sim_proc_new(w, "p"), "main", "test", granted_main, &s);
  run_to_end(w, RV_NO_DEADLINE);
  rv_sim_world_free(w);
}

/* ---- virtual time, sleep, contexts ---------------------------------------------------------- */

typedef struct timing {
  int64_t slept_from, slept_to;
  int cancel_rc, deadline_rc, lock_rc, accept_rc;
  int64_t cancel_at, deadline_at;
  rv_ctx *cancel_me;
  rv_mutex mu;
  rv_cond never;
  int pid;
} timing;

static void canceller(void *arg) {
  timing *s = arg;
  rv_sleep(NULL, 5 * RV_NS_PER_S);
  rv_ctx_cancel(s->cancel_me, "test over");
}

static void held_forever(void *arg) {
  timing *s = arg;
  rv_mutex_lock(&s->mu);
  rv_sleep(NULL, 60 * RV_NS_PER_S);
  rv_mutex_unlock(&s->mu);
}

static void timing_main(void *arg) {
  timing *s = arg;
  s->pid = rv_getpid();
  s->slept_from = rv_now_ns();
  CHECK(rv_sleep(NULL, 30 * RV_NS_PER_S) == 0);
  s->slept_to = rv_now_ns();
  CHECK(rv_wall_ns() == RV_SIM_EPOCH_WALL_NS + rv_now_ns());

  /* A condition wait cancelled by another thread's rv_ctx_cancel. */
  rv_mutex_init(&s->mu, "timing");
  rv_cond_init(&s->never, "never");
  s->cancel_me = rv_ctx_new(NULL);
  rv_thread *t;
  CHECK(rv_thread_start(&t, "canceller", "test", canceller, s) == RV_OK);
  int64_t t0 = rv_now_ns();
  rv_mutex_lock(&s->mu);
  s->cancel_rc = rv_cond_wait(&s->never, &s->mu, s->cancel_me);
  rv_mutex_unlock(&s->mu);
  s->cancel_at = rv_now_ns() - t0;
  rv_thread_join(t);

  /* A deadline: the wait ends exactly at it, in virtual time. */
  rv_ctx *d = rv_ctx_with_timeout(NULL, 2 * RV_NS_PER_S);
  t0 = rv_now_ns();
  s->deadline_rc = rv_sleep(d, 10 * RV_NS_PER_S);
  s->deadline_at = rv_now_ns() - t0;
  rv_ctx_free(d);

  /* A mutex wait under a deadline while another thread holds it. */
  rv_thread *h;
  CHECK(rv_thread_start(&h, "holder", "test", held_forever, s) == RV_OK);
  rv_sleep(NULL, RV_NS_PER_MS);
  d = rv_ctx_with_timeout(NULL, RV_NS_PER_S);
  s->lock_rc = rv_mutex_lock_ctx(&s->mu, d);
  rv_ctx_free(d);
  rv_thread_join(h);

  /* An accept with nobody connecting, under a deadline. */
  rv_listener *l;
  CHECK(rv_tcp_listen(&l, "127.0.0.1", 0, 8) == RV_OK);
  d = rv_ctx_with_timeout(NULL, RV_NS_PER_S);
  rv_conn *c;
  s->accept_rc = rv_listener_accept(l, &c, d);
  rv_ctx_free(d);
  rv_listener_close(l);

  rv_ctx_free(s->cancel_me);
  rv_cond_destroy(&s->never);
  rv_mutex_destroy(&s->mu);
}

static void test_virtual_time_and_ctx(void **state) {
  rv_sim_world *w = world_new(3);
  timing s = {0};
  rv_sim_proc *p = rv_sim_proc_new(w, "p");
  rv_sim_spawn(p, "main", "test", timing_main, &s);
  run_to_end(w, RV_NO_DEADLINE);
  assert_int_equal(s.slept_to - s.slept_from, 30 * RV_NS_PER_S);
  assert_int_equal(s.cancel_rc, RV_ECANCELED);
  assert_int_equal(s.cancel_at, 5 * RV_NS_PER_S);
  assert_int_equal(s.deadline_rc, RV_EDEADLINE);
  assert_int_equal(s.deadline_at, 2 * RV_NS_PER_S);
  assert_int_equal(s.lock_rc, RV_EDEADLINE);
  assert_int_equal(s.accept_rc, RV_EDEADLINE);
  assert_int_equal(s.pid, rv_sim_proc_pid(p));
  rv_sim_world_free(w);
}

/* ---- network: echo, refusal, partitions, read deadlines ------------------------------------------- */

typedef struct net {
  rv_sim_world *w;
  rv_sim_proc *srv, *cli;
  int refused_rc, deadline_rc, echoed, eof_rc;
  int64_t partitioned_rtt, normal_rtt;
} net;

static void echo_server(void *arg) {
  net *s = arg;
  echo_one_connection(s->srv, 7000);
}

static void heal_cb(void *arg) {
  net *s = arg;
  rv_sim_partition(s->w, s->srv, s->cli, false);
}

static int64_t round_trip(rv_conn *c, const char *msg) {
  int64_t t0 = rv_now_ns();
  char buf[16] = {0};
  CHECK(rv_conn_write_all(c, msg, strlen(msg), NULL) == RV_OK);
  CHECK(rv_conn_read_full(c, buf, strlen(msg), NULL) == RV_OK);
  CHECK(strcmp(buf, msg) == 0);
  return rv_now_ns() - t0;
}

static void net_client(void *arg) {
  net *s = arg;
  rv_conn *c;
  s->refused_rc = rv_tcp_connect(&c, rv_sim_proc_name(s->srv), 7001, NULL);
  rv_sleep(NULL, 10 * RV_NS_PER_MS); /* let the server listen */
  CHECK(rv_tcp_connect(&c, rv_sim_proc_name(s->srv), 7000, NULL) == RV_OK);
  s->normal_rtt = round_trip(c, "hello");
  /* Nothing to read: the connection's own read deadline gives RV_ETIMEDOUT,
   * a context deadline RV_EDEADLINE; the connection stays usable. */
  char b;
  rv_conn_set_read_deadline(c, rv_now_ns() + 50 * RV_NS_PER_MS);
  CHECK(rv_conn_read(c, &b, 1, NULL) == RV_ETIMEDOUT);
  rv_conn_set_read_deadline(c, RV_NO_DEADLINE);
  rv_ctx *d = rv_ctx_with_timeout(NULL, 100 * RV_NS_PER_MS);
  s->deadline_rc = (int)rv_conn_read(c, &b, 1, d);
  rv_ctx_free(d);
  /* A partition holds the bytes until it heals (3 s from now). */
  rv_sim_partition(s->w, s->srv, s->cli, true);
  rv_sim_at(s->w, rv_now_ns() + 3 * RV_NS_PER_S, heal_cb, s);
  s->partitioned_rtt = round_trip(c, "world");
  s->echoed = 2;
  CHECK(rv_conn_shutdown_write(c) == RV_OK);
  s->eof_rc = (int)rv_conn_read(c, &b, 1, NULL);
  rv_conn_close(c);
}

static void test_network(void **state) {
  rv_sim_world *w = world_new(11);
  net s = {.w = w};
  s.srv = rv_sim_proc_new(w, "srv");
  s.cli = rv_sim_proc_new(w, "cli");
  rv_sim_spawn(s.srv, "echo", "test", echo_server, &s);
  rv_sim_spawn(s.cli, "client", "test", net_client, &s);
  run_to_end(w, RV_NO_DEADLINE);
  assert_int_equal(s.refused_rc, RV_ECONNREFUSED);
  assert_int_equal(s.deadline_rc, RV_EDEADLINE);
  assert_int_equal(s.echoed, 2);
  assert_int_equal(s.eof_rc, 0);
  assert_true(s.normal_rtt > 0 && s.normal_rtt < 10 * RV_NS_PER_MS);
  assert_true(s.partitioned_rtt >= 3 * RV_NS_PER_S);
  rv_sim_world_free(w);
}

/* ---- a deadlock ends the run: nothing can ever happen again ---------------------------------- */

typedef struct abba {
  rv_mutex a, b;
  int reached;
} abba;

static void ab(void *arg) {
  abba *s = arg;
  rv_mutex_lock(&s->a);
  rv_sleep(NULL, RV_NS_PER_MS);
  s->reached++;
  rv_mutex_lock(&s->b); /* never */
  s->reached += 100;
}

static void ba(void *arg) {
  abba *s = arg;
  rv_mutex_lock(&s->b);
  rv_sleep(NULL, RV_NS_PER_MS);
  s->reached++;
  rv_mutex_lock(&s->a); /* never */
  s->reached += 100;
}

static void abba_main(void *arg) {
  abba *s = arg;
  rv_registry_set_lockorder_policy(rv_registry_current(), RV_LOCKORDER_OFF);
  rv_mutex_init(&s->a, "A");
  rv_mutex_init(&s->b, "B");
  rv_thread *t1, *t2;
  CHECK(rv_thread_start(&t1, "ab", "test", ab, s) == RV_OK);
  CHECK(rv_thread_start(&t2, "ba", "test", ba, s) == RV_OK);
}

static void test_deadlock_detected(void **state) {
  rv_sim_world *w = world_new(5);
  abba s = {0};
  rv_sim_spawn(rv_sim_proc_new(w, "p"), "main", "test", abba_main, &s);
  /* The 30 s timeout of the run never matters: the world knows nothing can happen. */
  assert_int_equal(rv_sim_run(w, 30 * RV_NS_PER_S), RV_EDEADLK);
  assert_int_equal(s.reached, 2);
  assert_int_equal(rv_sim_threads_alive(w), 2);
  assert_true(rv_sim_now(w) < 30 * RV_NS_PER_S);
  rv_sim_world_free(w); /* abandons the two threads */
}

/* ---- determinism --------------------------------------------------------------------------- */

typedef struct jitter {
  rv_mutex mu;
  int order[64];
  int n;
} jitter;

typedef struct jarg {
  jitter *j;
  int id;
} jarg;

static void jitter_worker(void *arg) {
  jarg *a = arg;
  for (int i = 0; i < 4; i++) {
    rv_sleep(NULL, (int64_t)(rv_rng_os_seed() % 5) * RV_NS_PER_MS);
    rv_mutex_lock(&a->j->mu);
    if (a->j->n < 64)
      a->j->order[a->j->n++] = a->id;
    rv_mutex_unlock(&a->j->mu);
  }
}

static void jitter_main(void *arg) {
  jitter *j = arg;
  rv_mutex_init(&j->mu, "jitter");
  jarg a[8];
  rv_thread *t[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (jarg){j, i};
    CHECK(rv_thread_start(&t[i], "jitter", "test", jitter_worker, &a[i]) == RV_OK);
  }
  for (int i = 0; i < 8; i++)
    rv_thread_join(t[i]);
  rv_mutex_destroy(&j->mu);
}

static uint64_t jitter_run(uint64_t seed) {
  rv_sim_world *w = world_new(seed);
  jitter j = {0};
  rv_sim_spawn(rv_sim_proc_new(w, "p"), "main", "test", jitter_main, &j);
  run_to_end(w, RV_NO_DEADLINE);
  uint64_t h = rv_sim_hash(w);
  rv_sim_world_free(w);
  return h;
}

static void test_same_seed_same_hash(void **state) {
  for (uint64_t seed = 1; seed <= 5; seed++)
    assert_true(jitter_run(seed) == jitter_run(seed));
  int differ = 0;
  for (uint64_t seed = 1; seed <= 10; seed++)
    differ += jitter_run(seed) != jitter_run(seed + 100);
  assert_true(differ >= 9);
}

/* ---- the locks scenario ------------------------------------------------------------------------- */

static void run_locks(uint64_t seed, int64_t virtual_ns, bool broken, rv_sim_locks_result *r) {
  rv_sim_locks_opts o = {.seed = seed, .virtual_ns = virtual_ns, .broken_fencing = broken};
  assert_int_equal(rv_sim_locks_run(&o, r), RV_OK);
  if (!r->ok && !broken)
    fprintf(stderr, "seed %llu: %s\n%s", (unsigned long long)seed, r->violation, r->trace);
}

static void test_locks_fixed_seed(void **state) {
  rv_sim_locks_result r, r2;
  run_locks(42, 60 * RV_NS_PER_S, false, &r);
  if (!r.ok)
    fail_msg("seed 42: %s", r.violation);
  assert_true(r.acquisitions > 20);
  assert_true(r.partitions > 0);
  assert_true(r.session_losses > 0);
  assert_true(r.virtual_ns >= 60 * RV_NS_PER_S);
  run_locks(42, 60 * RV_NS_PER_S, false, &r2);
  assert_true(r.hash == r2.hash);
  assert_true(r.events == r2.events);
}

static void test_locks_seed_sweep(void **state) {
  uint64_t rejected = 0;
  for (uint64_t seed = 1; seed <= 20; seed++) {
    rv_sim_locks_result r;
    run_locks(seed, 20 * RV_NS_PER_S, false, &r);
    if (!r.ok)
      fail_msg("seed %llu: %s", (unsigned long long)seed, r.violation);
    rejected += r.writes_rejected;
  }
  assert_true(rejected > 0); /* partitions do make stale holders act */
}

static void test_broken_fencing_is_caught(void **state) {
  int caught = 0;
  for (uint64_t seed = 1; seed <= 20 && !caught; seed++) {
    rv_sim_locks_result r;
    run_locks(seed, 20 * RV_NS_PER_S, true, &r);
    if (!r.ok) {
      assert_non_null(strstr(r.violation, "two overlapping holders"));
      assert_non_null(strstr(r.trace, "VIOLATION"));
      caught++;
    }
  }
  assert_true(caught > 0);
}

/* ---- the queue scenario ------------------------------------------------------------------------- */

static void run_queue(uint64_t seed, bool unfixed, rv_sim_queue_result *r) {
  rv_sim_queue_opts o = {.seed = seed, .unfixed_consumers = unfixed};
  assert_int_equal(rv_sim_queue_run(&o, r), RV_OK);
  if (!r->ok && !unfixed)
    fprintf(stderr, "seed %llu: %s\n%s", (unsigned long long)seed, r->violation, r->trace);
}

static void test_queue_fixed_seed(void **state) {
  rv_sim_queue_result r, r2;
  run_queue(42, false, &r);
  if (!r.ok)
    fail_msg("seed 42: %s", r.violation);
  assert_true(r.published == 200);
  assert_true(r.fins_accepted == r.server_messages);
  assert_true(r.timeouts > 0);       /* handlers did outlive the message timeout */
  assert_true(r.late_answers > 0);   /* and the server refused their late answers */
  assert_true(r.partitions > 0);
  assert_true(r.deliveries > r.server_messages); /* redeliveries happened */
  assert_true(r.max_handlers <= r.max_in_flight + RV_SIM_QUEUE_HANDLER_SLACK);
  /* Done within the window plus the liveness bound (virtual time only). */
  assert_true(r.virtual_ns <= 30 * RV_NS_PER_S + RV_SIM_QUEUE_LIVENESS_NS);
  run_queue(42, false, &r2);
  assert_true(r.hash == r2.hash);
  assert_true(r.events == r2.events);
}

static void test_queue_seed_sweep(void **state) {
  uint64_t late = 0, reconnects = 0;
  for (uint64_t seed = 1; seed <= 10; seed++) {
    rv_sim_queue_result r;
    run_queue(seed, false, &r);
    if (!r.ok)
      fail_msg("seed %llu: %s", (unsigned long long)seed, r.violation);
    late += r.late_answers;
    reconnects += r.reconnects;
  }
  assert_true(late > 0);
  assert_true(reconnects > 0); /* partitions outlast the heartbeats */
}

static void test_queue_pile_up_is_caught(void **state) {
  int caught = 0;
  for (uint64_t seed = 1; seed <= 10 && !caught; seed++) {
    rv_sim_queue_result r;
    run_queue(seed, true, &r);
    if (!r.ok) {
      assert_non_null(strstr(r.violation, "handler"));
      assert_non_null(strstr(r.trace, "VIOLATION"));
      caught++;
    }
  }
  assert_true(caught > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mutex_cond),
      cmocka_unit_test(test_thread_slots_per_simulated_thread),
      cmocka_unit_test(test_rwlock_writer_preferring),
      cmocka_unit_test(test_grant_publishes_hold),
      cmocka_unit_test(test_virtual_time_and_ctx),
      cmocka_unit_test(test_network),
      cmocka_unit_test(test_deadlock_detected),
      cmocka_unit_test(test_same_seed_same_hash),
      cmocka_unit_test(test_locks_fixed_seed),
      cmocka_unit_test(test_locks_seed_sweep),
      cmocka_unit_test(test_broken_fencing_is_caught),
      cmocka_unit_test(test_queue_fixed_seed),
      cmocka_unit_test(test_queue_seed_sweep),
      cmocka_unit_test(test_queue_pile_up_is_caught),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
