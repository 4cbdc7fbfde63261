/*
 * rv_config_set / rv_config_delete, the same checks for both backends of the
 * coord client (test_client_coord.c against a real coord, test_client_etcd.c
 * against a real etcd): every write is read back through rv_config_get, so
 * the check holds whatever the server.  `svc` must be a service name of the
 * caller's own (the two files share nothing, but each test keeps its keys).
 */
#ifndef RAVEL_TEST_CONFIG_WRITE_CHECK_H
#define RAVEL_TEST_CONFIG_WRITE_CHECK_H

#include "client/coord_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The effective value of key for service svc; "(unset)" when none. */
static void expect_effective(rv_coord_client *c, const char *svc, const char *key, const char *want,
                             uint64_t want_rev) {
  char *v = NULL;
  uint64_t mod = 0;
  int rc = rv_config_get(NULL, c, svc, NULL, key, &v, &mod);
  if (!want) {
    assert_int_equal(rc, RV_ENOTFOUND);
    return;
  }
  assert_int_equal(rc, RV_OK);
  assert_string_equal(v, want);
  if (want_rev)
    assert_int_equal(mod, want_rev);
  free(v);
}

static void expect_error(int rc, int want, const char *code) {
  assert_int_equal(rc, want);
  if (strncmp(rv_coord_last_error(), code, strlen(code)) != 0)
    fail_msg("last error \"%s\", want it to start with %s", rv_coord_last_error(), code);
}

static void check_config_write(rv_coord_client *c, const char *svc) {
  char ns[96];
  snprintf(ns, sizeof ns, "svc/%s", svc);
  rv_config_write_opts who = {.author = "ops-1", .reason = "raise the timeout"};
  uint64_t r1 = 0, r2 = 0, r3 = 0, r4 = 0;

  /* Set on the platform: inherited by the service. */
  assert_int_equal(rv_config_set(NULL, c, "platform", "cw.timeout_ms", "900", &who, &r1), RV_OK);
  assert_true(r1 > 0);
  expect_effective(c, svc, "cw.timeout_ms", "900", r1);

  /* Create-only on the service: it wins over the platform; a second create conflicts. */
  rv_config_write_opts create = {.if_revision = true, .revision = 0};
  assert_int_equal(rv_config_set(NULL, c, ns, "cw.timeout_ms", "500", &create, &r2), RV_OK);
  assert_true(r2 > r1);
  expect_effective(c, svc, "cw.timeout_ms", "500", r2);
  expect_error(rv_config_set(NULL, c, ns, "cw.timeout_ms", "600", &create, NULL), RV_EBUSY,
               "CONFLICT");
  expect_effective(c, svc, "cw.timeout_ms", "500", r2);

  /* Compare-and-set on the revision read. */
  rv_config_write_opts cas = {.if_revision = true, .revision = r2};
  assert_int_equal(rv_config_set(NULL, c, ns, "cw.timeout_ms", "700", &cas, &r3), RV_OK);
  assert_true(r3 > r2);
  expect_error(rv_config_set(NULL, c, ns, "cw.timeout_ms", "800", &cas, NULL), RV_EBUSY,
               "CONFLICT");
  expect_effective(c, svc, "cw.timeout_ms", "700", r3);
  rv_config_write_opts stale = {.if_revision = true, .revision = r3};
  expect_error(rv_config_set(NULL, c, ns, "cw.absent", "1", &stale, NULL), RV_EBUSY, "CONFLICT");

  /* Bad input is refused before it is written, and says what is wrong. */
  expect_error(rv_config_set(NULL, c, "svc/", "cw.k", "1", NULL, NULL), RV_EINVAL, "BAD");
  expect_error(rv_config_set(NULL, c, "services/x", "cw.k", "1", NULL, NULL), RV_EINVAL, "BADNS");
  expect_error(rv_config_set(NULL, c, ns, "cw key", "1", NULL, NULL), RV_EINVAL, "BADKEY");
  expect_error(rv_config_set(NULL, c, ns, "", "1", NULL, NULL), RV_EINVAL, "BADKEY");
  assert_int_equal(rv_config_set(NULL, c, ns, "cw.k", NULL, NULL, NULL), RV_EINVAL);
  assert_int_equal(rv_config_set(NULL, c, NULL, "cw.k", "1", NULL, NULL), RV_EINVAL);
  expect_effective(c, svc, "cw.k", NULL, 0);

  /* Delete: the platform's value shows through again; deleting twice says so. */
  rv_config_write_opts del_stale = {.if_revision = true, .revision = r2};
  expect_error(rv_config_delete(NULL, c, ns, "cw.timeout_ms", &del_stale, NULL), RV_EBUSY,
               "CONFLICT");
  assert_int_equal(rv_config_delete(NULL, c, ns, "cw.timeout_ms", &who, &r4), RV_OK);
  assert_true(r4 > r3);
  expect_effective(c, svc, "cw.timeout_ms", "900", r1);
  expect_error(rv_config_delete(NULL, c, ns, "cw.timeout_ms", NULL, NULL), RV_ENOTFOUND, "NOKEY");
  assert_int_equal(rv_config_delete(NULL, c, "platform", "cw.timeout_ms", NULL, NULL), RV_OK);
  expect_effective(c, svc, "cw.timeout_ms", NULL, 0);
}

#endif
