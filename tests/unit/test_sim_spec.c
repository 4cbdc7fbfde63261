/*
 * Scenario files (sim/spec.h): parsing and its errors, command-line
 * overrides, the compiled-in scenarios, swarm fault mixes, and that a run
 * through a scenario file is the same run as the scenario's API with the
 * same settings (same trace hash).
 */
#include "support.h"

#include "sim/spec.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void parse_ok(rv_sim_spec *s, const char *text) {
  char why[1400] = "";
  int rc = rv_sim_spec_parse(s, text, "t.sim", why, sizeof why);
  if (rc != RV_OK)
    fail_msg("did not parse: %s", why);
}

/* The error for text contains want. */
static void parse_fails(const char *text, const char *want) {
  rv_sim_spec s;
  char why[1400] = "";
  assert_int_not_equal(rv_sim_spec_parse(&s, text, "t.sim", why, sizeof why), RV_OK);
  if (!strstr(why, want))
    fail_msg("error '%s' does not say '%s'", why, want);
}

static void test_parse(void **state) {
  rv_sim_spec s;
  parse_ok(&s, "# a comment\n\n  kind   locks   # trailing comment\n"
               "description   two  words\nexpect violation\nclients 5\nvirtual-seconds 90\n"
               "partitions off\nbreak-fencing on\n");
  assert_int_equal(s.kind, RV_SIM_KIND_LOCKS);
  assert_string_equal(s.description, "two  words");
  assert_true(s.expect_violation);
  assert_int_equal(s.locks.clients, 5);
  assert_int_equal(s.locks.virtual_ns, 90 * RV_NS_PER_S);
  assert_true(s.locks.no_partitions);
  assert_true(s.locks.broken_fencing);
  assert_int_equal(s.locks.threads, 0); /* unset: the scenario's default */

  parse_fails("clients 3\nkind locks\n", "t.sim:1: 'clients' before 'kind'");
  parse_fails("kind locks\nreplicas 3\n", "t.sim:2: unknown key 'replicas' for kind locks (known: virtual-seconds");
  parse_fails("kind locks\nclients 3\nclients 4\n", "t.sim:3: clients given twice");
  parse_fails("kind locks\nclients 99\n", "clients: '99' is not a whole number from 1 to 16");
  parse_fails("kind locks\nclients 3x\n", "'3x' is not a whole number");
  parse_fails("kind locks\npartitions maybe\n", "partitions: 'maybe' is not on or off");
  parse_fails("kind locks\nclients\n", "clients needs a value");
  parse_fails("kind bananas\n", "unknown kind 'bananas'");
  parse_fails("kind locks\nkind queue\n", "kind given twice");
  parse_fails("kind locks\nexpect maybe\n", "expect: 'maybe' is not pass or violation");
  parse_fails("# nothing\n", "no 'kind' line");
  char longline[RV_SIM_SPEC_LINE_MAX + 10];
  memset(longline, 'x', sizeof longline - 1);
  longline[sizeof longline - 1] = 0;
  parse_fails(longline, "line longer than");
}

static void test_overrides_and_flags(void **state) {
  rv_sim_spec s;
  char why[1400];
  parse_ok(&s, "kind queue\nmessages 10\n");
  assert_int_equal(rv_sim_spec_set(&s, "messages", "20", why, sizeof why), RV_OK);
  assert_int_equal(s.queue.messages, 20);
  assert_true(rv_sim_spec_key_is_flag(&s, "partitions"));
  assert_true(rv_sim_spec_key_is_flag(&s, "unfixed-consumers"));
  assert_false(rv_sim_spec_key_is_flag(&s, "messages"));
  assert_false(rv_sim_spec_key_is_flag(&s, "clients")); /* a locks key */
  assert_int_not_equal(rv_sim_spec_set(&s, "clients", "2", why, sizeof why), RV_OK);
  assert_non_null(strstr(why, "unknown key 'clients' for kind queue"));
}

static void test_builtins_parse(void **state) {
  int n = 0;
  bool locks = false, queue = false;
  for (const rv_sim_builtin *b = rv_sim_builtins; b->name; b++, n++) {
    rv_sim_spec s;
    char why[1400];
    if (rv_sim_spec_load(&s, b->name, why, sizeof why) != RV_OK)
      fail_msg("built-in %s: %s", b->name, why);
    assert_string_equal(s.name, b->name);
    assert_true(s.description[0] != 0);
    locks |= strcmp(b->name, "locks") == 0;
    queue |= strcmp(b->name, "queue") == 0;
  }
  assert_true(n >= 3);
  assert_true(locks && queue);
  rv_sim_spec s;
  char why[1400];
  assert_int_equal(rv_sim_spec_load(&s, "no-such-scenario", why, sizeof why), RV_ENOTFOUND);
  assert_non_null(strstr(why, "built in: "));
  assert_int_not_equal(rv_sim_spec_load(&s, "/nonexistent/x.sim", why, sizeof why), RV_OK);
}

static void test_load_file(void **state) {
  char path[] = "/tmp/ravel-spec-XXXXXX.sim";
  int fd = mkstemps(path, 4);
  assert_true(fd >= 0);
  const char *text = "kind locks\nclients 2\nthreads 2\nvirtual-seconds 10\n";
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  rv_sim_spec s;
  char why[1400];
  assert_int_equal(rv_sim_spec_load(&s, path, why, sizeof why), RV_OK);
  assert_int_equal(s.locks.clients, 2);
  assert_int_equal(strncmp(s.name, "ravel-spec-", 11), 0);

  /* The file's run is the API's run with the same settings, event for event. */
  rv_sim_outcome out;
  assert_int_equal(rv_sim_spec_run(&s, 7, &out), RV_OK);
  rv_sim_locks_result r;
  assert_int_equal(rv_sim_locks_run(&(rv_sim_locks_opts){.seed = 7, .clients = 2, .threads = 2,
                                                         .virtual_ns = 10 * RV_NS_PER_S},
                                    &r),
                   RV_OK);
  assert_true(out.ok && r.ok);
  assert_true(out.hash == r.hash);
  assert_true(out.events == r.events);
  rv_sim_outcome_clear(&out);
  unlink(path);
}

static void test_swarm_mix_follows_the_seed(void **state) {
  rv_sim_spec s;
  parse_ok(&s, "kind locks\nswarm on\nclients 2\nthreads 1\nvirtual-seconds 5\nmin-acquisitions 1\n");
  rv_sim_outcome a, b;
  bool saw_on = false, saw_off = false;
  for (uint64_t seed = 1; seed <= 8; seed++) {
    assert_int_equal(rv_sim_spec_run(&s, seed, &a), RV_OK);
    assert_int_equal(rv_sim_spec_run(&s, seed, &b), RV_OK);
    assert_string_equal(a.swarm, b.swarm);
    assert_true(a.hash == b.hash);
    saw_on |= strstr(a.swarm, "partitions on") != NULL;
    saw_off |= strstr(a.swarm, "partitions off") != NULL;
    rv_sim_outcome_clear(&a);
    rv_sim_outcome_clear(&b);
  }
  assert_true(saw_on && saw_off);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_overrides_and_flags),
      cmocka_unit_test(test_builtins_parse),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_swarm_mix_follows_the_seed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
