/*
 * Helpers shared by the config tests (test_config.c, test_configdb.c):
 * string arguments from literals, a fixed wall clock (the store never
 * reads one), and string assertions on rv_cfg_str views.
 */
#ifndef RAVEL_TEST_CFG_TEST_UTIL_H
#define RAVEL_TEST_CFG_TEST_UTIL_H

#include <stdbool.h>
#include <string.h>

#include "core/config.h"
#include "rt/rt.h"

#define S(x) rv_cfg_cstr(x)
#define ANY RV_CFG_REV_ANY
#define T0_NS (INT64_C(1700000000) * RV_NS_PER_S)

static inline bool streq(rv_cfg_str s, const char *lit) {
  return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* Needs cmocka.h first. */
#define assert_str(s, lit)                                                             \
  do {                                                                                 \
    rv_cfg_str s_ = (s);                                                               \
    if (!streq(s_, (lit)))                                                             \
      fail_msg("got \"%.*s\", want \"%s\"", (int)s_.len, s_.ptr, (lit));               \
  } while (0)

#endif
