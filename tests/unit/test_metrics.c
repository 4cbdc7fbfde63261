/*
 * Tests of the metrics registry: exact exposition text, escaping, histogram
 * buckets, registration rules, the child limit, collectors, and concurrent
 * updates.  `test_metrics --render-sample` prints a populated registry for
 * tests/scripts/check_promtool.sh to feed to `promtool check metrics`.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "obs/metrics.h"
#include "rt/rt.h"

/* Render m and compare with the expected text exactly. */
static void assert_render(rv_metrics *m, const char *want) {
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(rv_metrics_render(m, &out, &len), RV_OK);
  assert_non_null(out);
  assert_int_equal(len, strlen(out));
  assert_string_equal(out, want);
  free(out);
}

static char *render(rv_metrics *m) {
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(rv_metrics_render(m, &out, &len), RV_OK);
  return out;
}

static void error_contains(rv_metrics *m, const char *part) {
  char err[256];
  rv_metrics_error(m, err, sizeof err);
  if (!strstr(err, part)) fail_msg("error \"%s\" does not contain \"%s\"", err, part);
}

static void test_empty_registry(void **state) {
  rv_metrics *m = rv_metrics_new();
  assert_render(m, "");
  rv_metrics_free(m);
  rv_metrics_free(NULL);
}

static void test_render_small_registry(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_counter *req = rv_metrics_counter(m, "ravel_test_requests_total", "Requests handled.",
                                       (const char *[]){"method", "code", NULL});
  rv_gauge *depth = rv_metrics_gauge(m, "ravel_test_queue_depth", "Messages waiting.", NULL);
  rv_histogram *lat = rv_metrics_histogram(m, "ravel_test_latency_seconds", "Handling time.",
                                           NULL, (const double[]){0.1, 0.5, 1}, 3);
  rv_counter *idle = rv_metrics_counter(m, "ravel_test_unused_total", "Never used.",
                                        (const char *[]){"x", NULL});
  assert_non_null(req);
  assert_non_null(depth);
  assert_non_null(lat);
  assert_non_null(idle);

  rv_counter_inc(rv_counter_labels(req, "GET", "200"));
  rv_counter_inc(rv_counter_labels(req, "GET", "200"));
  rv_counter_add(rv_counter_labels(req, "POST", "500"), 0.5);
  rv_gauge_set(rv_gauge_labels(depth), 7);
  rv_histogram_child *h = rv_histogram_labels(lat);
  rv_histogram_observe(h, 0.0625);
  rv_histogram_observe(h, 0.25);
  rv_histogram_observe(h, 0.5); /* on a bound: counted in le="0.5" */
  rv_histogram_observe(h, 0.75);
  rv_histogram_observe(h, 3);

  assert_render(m, "# HELP ravel_test_requests_total Requests handled.\n"
                   "# TYPE ravel_test_requests_total counter\n"
                   "ravel_test_requests_total{method=\"GET\",code=\"200\"} 2\n"
                   "ravel_test_requests_total{method=\"POST\",code=\"500\"} 0.5\n"
                   "# HELP ravel_test_queue_depth Messages waiting.\n"
                   "# TYPE ravel_test_queue_depth gauge\n"
                   "ravel_test_queue_depth 7\n"
                   "# HELP ravel_test_latency_seconds Handling time.\n"
                   "# TYPE ravel_test_latency_seconds histogram\n"
                   "ravel_test_latency_seconds_bucket{le=\"0.1\"} 1\n"
                   "ravel_test_latency_seconds_bucket{le=\"0.5\"} 3\n"
                   "ravel_test_latency_seconds_bucket{le=\"1\"} 4\n"
                   "ravel_test_latency_seconds_bucket{le=\"+Inf\"} 5\n"
                   "ravel_test_latency_seconds_sum 4.5625\n"
                   "ravel_test_latency_seconds_count 5\n");
  rv_metrics_free(m);
}

static void test_unlabelled_renders_zero(void **state) {
  rv_metrics *m = rv_metrics_new();
  assert_non_null(rv_metrics_counter(m, "ravel_test_starts_total", "Starts.", NULL));
  assert_non_null(rv_metrics_histogram(m, "ravel_test_wait_seconds", "Waits.", NULL,
                                       (const double[]){1}, 1));
  assert_render(m, "# HELP ravel_test_starts_total Starts.\n"
                   "# TYPE ravel_test_starts_total counter\n"
                   "ravel_test_starts_total 0\n"
                   "# HELP ravel_test_wait_seconds Waits.\n"
                   "# TYPE ravel_test_wait_seconds histogram\n"
                   "ravel_test_wait_seconds_bucket{le=\"1\"} 0\n"
                   "ravel_test_wait_seconds_bucket{le=\"+Inf\"} 0\n"
                   "ravel_test_wait_seconds_sum 0\n"
                   "ravel_test_wait_seconds_count 0\n");
  rv_metrics_free(m);
}

static void test_escaping(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_gauge *g = rv_metrics_gauge(m, "ravel_test_paths", "A \"path\" with \\ and\nnewline.",
                                 (const char *[]){"path", NULL});
  rv_gauge_set(rv_gauge_labels(g, "C:\\dir \"x\"\nnext"), 1);
  rv_gauge_set(rv_gauge_labels(g, ""), 2);
  rv_gauge_set(rv_gauge_labels(g, "caf\xc3\xa9"), 3);
  assert_render(m, "# HELP ravel_test_paths A \"path\" with \\\\ and\\nnewline.\n"
                   "# TYPE ravel_test_paths gauge\n"
                   "ravel_test_paths{path=\"C:\\\\dir \\\"x\\\"\\nnext\"} 1\n"
                   "ravel_test_paths{path=\"\"} 2\n"
                   "ravel_test_paths{path=\"caf\xc3\xa9\"} 3\n");
  rv_metrics_free(m);
}

static void test_float_format(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_gauge *g = rv_metrics_gauge(m, "ravel_test_values", "Values.", (const char *[]){"v", NULL});
  const struct {
    const char *label;
    double v;
  } cases[] = {{"tenth", 0.1},      {"neg", -2.5},          {"big", 1e20},
               {"int", 123456789012}, {"third", 1.0 / 3},    {"tiny", 1e-7},
               {"nan", NAN},        {"inf", INFINITY},      {"ninf", -INFINITY},
               {"negzero", -0.0},   {"exact", 9007199254740991.0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    rv_gauge_set(rv_gauge_labels(g, cases[i].label), cases[i].v);
  assert_render(m, "# HELP ravel_test_values Values.\n"
                   "# TYPE ravel_test_values gauge\n"
                   "ravel_test_values{v=\"tenth\"} 0.1\n"
                   "ravel_test_values{v=\"neg\"} -2.5\n"
                   "ravel_test_values{v=\"big\"} 1e+20\n"
                   "ravel_test_values{v=\"int\"} 123456789012\n"
                   "ravel_test_values{v=\"third\"} 0.33333333333333331\n"
                   "ravel_test_values{v=\"tiny\"} 1e-07\n"
                   "ravel_test_values{v=\"nan\"} NaN\n"
                   "ravel_test_values{v=\"inf\"} +Inf\n"
                   "ravel_test_values{v=\"ninf\"} -Inf\n"
                   "ravel_test_values{v=\"negzero\"} 0\n"
                   "ravel_test_values{v=\"exact\"} 9007199254740991\n");
  rv_metrics_free(m);
}

static void test_updates(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_counter_child *c = rv_counter_labels(rv_metrics_counter(m, "ravel_test_c_total", "C.", NULL));
  rv_gauge_child *g = rv_gauge_labels(rv_metrics_gauge(m, "ravel_test_g", "G.", NULL));
  rv_counter_add(c, 2.5);
  rv_counter_add(c, -1);  /* ignored: counters never go down */
  rv_counter_add(c, NAN); /* ignored */
  rv_counter_inc(c);
  assert_true(rv_counter_value(c) == 3.5);
  rv_gauge_set(g, 10);
  rv_gauge_add(g, -2.5);
  rv_gauge_inc(g);
  rv_gauge_dec(g);
  rv_gauge_dec(g);
  assert_true(rv_gauge_value(g) == 6.5);
  /* NULL children and families are accepted and ignored. */
  rv_counter_inc(NULL);
  rv_gauge_set(NULL, 1);
  rv_histogram_observe(NULL, 1);
  assert_null(rv_counter_labels(NULL, "x"));
  assert_true(rv_counter_value(NULL) == 0);
  rv_metrics_free(m);
}

static void test_histogram_cumulative(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_histogram *f = rv_metrics_histogram(m, "ravel_test_size_bytes", "Sizes.",
                                         (const char *[]){"op", NULL},
                                         (const double[]){10, 100, 1000}, 3);
  rv_histogram_child *rd = rv_histogram_labels(f, "read");
  const double obs[] = {1, 10, 11, 100, 500, 999, 1000, 1001, 5000, -3};
  for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) rv_histogram_observe(rd, obs[i]);
  rv_histogram_observe(rv_histogram_labels(f, "write"), NAN);
  assert_render(m, "# HELP ravel_test_size_bytes Sizes.\n"
                   "# TYPE ravel_test_size_bytes histogram\n"
                   "ravel_test_size_bytes_bucket{op=\"read\",le=\"10\"} 3\n"
                   "ravel_test_size_bytes_bucket{op=\"read\",le=\"100\"} 5\n"
                   "ravel_test_size_bytes_bucket{op=\"read\",le=\"1000\"} 8\n"
                   "ravel_test_size_bytes_bucket{op=\"read\",le=\"+Inf\"} 10\n"
                   "ravel_test_size_bytes_sum{op=\"read\"} 8619\n"
                   "ravel_test_size_bytes_count{op=\"read\"} 10\n"
                   "ravel_test_size_bytes_bucket{op=\"write\",le=\"10\"} 0\n"
                   "ravel_test_size_bytes_bucket{op=\"write\",le=\"100\"} 0\n"
                   "ravel_test_size_bytes_bucket{op=\"write\",le=\"1000\"} 0\n"
                   "ravel_test_size_bytes_bucket{op=\"write\",le=\"+Inf\"} 1\n"
                   "ravel_test_size_bytes_sum{op=\"write\"} NaN\n"
                   "ravel_test_size_bytes_count{op=\"write\"} 1\n");
  rv_metrics_free(m);
}

static void test_default_buckets(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_histogram *f = rv_metrics_histogram(m, "ravel_test_op_seconds", "Ops.", NULL, NULL, 0);
  rv_histogram_observe(rv_histogram_labels(f), 0.02);
  char *out = render(m);
  assert_non_null(strstr(out, "ravel_test_op_seconds_bucket{le=\"0.005\"} 0\n"
                              "ravel_test_op_seconds_bucket{le=\"0.01\"} 0\n"
                              "ravel_test_op_seconds_bucket{le=\"0.025\"} 1\n"));
  assert_non_null(strstr(out, "ravel_test_op_seconds_bucket{le=\"10\"} 1\n"
                              "ravel_test_op_seconds_bucket{le=\"+Inf\"} 1\n"));
  free(out);
  /* NULL bounds and the explicit default set are the same registration. */
  assert_ptr_equal(f, rv_metrics_histogram(m, "ravel_test_op_seconds", "Ops.", NULL,
                                           rv_histogram_seconds_buckets,
                                           RV_HISTOGRAM_SECONDS_BUCKETS_N));
  rv_metrics_free(m);
}

static void test_registration_rules(void **state) {
  rv_metrics *m = rv_metrics_new();
  const char *const labels[] = {"a", "b", NULL};
  rv_counter *c = rv_metrics_counter(m, "ravel_test_x_total", "X.", labels);
  assert_non_null(c);
  /* Same description: the same family. */
  assert_ptr_equal(c, rv_metrics_counter(m, "ravel_test_x_total", "X.",
                                         (const char *[]){"a", "b", NULL}));
  /* Conflicts. */
  assert_null(rv_metrics_counter(m, "ravel_test_x_total", "Other help.", labels));
  error_contains(m, "already registered with a different type, help, labels or buckets");
  assert_null(rv_metrics_gauge(m, "ravel_test_x_total", "X.", labels));
  assert_null(rv_metrics_counter(m, "ravel_test_x_total", "X.", (const char *[]){"a", NULL}));
  assert_null(rv_metrics_counter(m, "ravel_test_x_total", "X.", (const char *[]){"b", "a", NULL}));
  rv_histogram *h = rv_metrics_histogram(m, "ravel_test_h_seconds", "H.", NULL,
                                         (const double[]){1, 2}, 2);
  assert_non_null(h);
  assert_null(rv_metrics_histogram(m, "ravel_test_h_seconds", "H.", NULL, (const double[]){1, 3}, 2));

  /* Bad names and label names. */
  assert_null(rv_metrics_counter(m, "1_total", "X.", NULL));
  error_contains(m, "metric \"1_total\": name is invalid");
  assert_null(rv_metrics_counter(m, "ravel-x_total", "X.", NULL));
  assert_null(rv_metrics_counter(m, NULL, "X.", NULL));
  assert_null(rv_metrics_counter(m, "ravel_y_total", "X.", (const char *[]){"__y", NULL}));
  error_contains(m, "label name is invalid");
  assert_null(rv_metrics_counter(m, "ravel_y_total", "X.", (const char *[]){"a:b", NULL}));
  assert_null(rv_metrics_counter(m, "ravel_y_total", "X.", (const char *[]){"a", "a", NULL}));
  error_contains(m, "label name appears twice");
  assert_null(rv_metrics_counter(m, "ravel_y_total", "X.",
                                 (const char *[]){"a", "b", "c", "d", "e", NULL}));
  error_contains(m, "RV_METRIC_LABELS_MAX");
  assert_null(rv_metrics_histogram(m, "ravel_y_seconds", "X.", (const char *[]){"le", NULL},
                                   NULL, 0));
  error_contains(m, "\"le\" is reserved");
  assert_non_null(rv_metrics_counter(m, "ravel_le_total", "X.", (const char *[]){"le", NULL}));

  /* Bad buckets. */
  assert_null(rv_metrics_histogram(m, "ravel_y_seconds", "X.", NULL, (const double[]){1, 1}, 2));
  error_contains(m, "strictly increase");
  assert_null(rv_metrics_histogram(m, "ravel_y_seconds", "X.", NULL, (const double[]){NAN}, 1));
  assert_null(rv_metrics_histogram(m, "ravel_y_seconds", "X.", NULL, (const double[]){INFINITY}, 1));
  double many[RV_HISTOGRAM_BUCKETS_MAX + 1];
  for (size_t i = 0; i < RV_HISTOGRAM_BUCKETS_MAX + 1; i++) many[i] = (double)i;
  assert_null(rv_metrics_histogram(m, "ravel_y_seconds", "X.", NULL, many,
                                   RV_HISTOGRAM_BUCKETS_MAX + 1));
  assert_non_null(rv_metrics_histogram(m, "ravel_y_seconds", "X.", NULL, many,
                                       RV_HISTOGRAM_BUCKETS_MAX));

  /* Wrong number of label values, NULL values, values too long. */
  assert_null(rv_counter_labels(c, "only-one"));
  assert_null(rv_counter_labels(c, "1", "2", "3"));
  assert_null(rv_counter_labelv(c, (const char *[]){"1", NULL}, 2));
  char long_value[RV_METRIC_LABEL_VALUE_MAX + 2];
  memset(long_value, 'v', sizeof long_value - 1);
  long_value[sizeof long_value - 1] = '\0';
  assert_null(rv_counter_labels(c, "1", long_value));
  long_value[RV_METRIC_LABEL_VALUE_MAX] = '\0';
  assert_non_null(rv_counter_labels(c, "1", long_value));
  rv_metrics_free(m);
}

static void test_registry_full(void **state) {
  rv_metrics *m = rv_metrics_new();
  char name[64];
  for (int i = 0; i < RV_METRICS_FAMILIES_MAX; i++) {
    snprintf(name, sizeof name, "ravel_test_f%d", i);
    assert_non_null(rv_metrics_gauge(m, name, "F.", NULL));
  }
  assert_null(rv_metrics_gauge(m, "ravel_test_one_more", "F.", NULL));
  error_contains(m, "registry is full");
  /* An existing family is still found. */
  assert_non_null(rv_metrics_gauge(m, "ravel_test_f7", "F.", NULL));
  rv_metrics_free(m);
}

static void test_names(void **state) {
  char long_name[RV_METRIC_NAME_MAX + 2];
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  assert_false(rv_metric_name_valid(long_name));
  long_name[RV_METRIC_NAME_MAX] = '\0';
  assert_true(rv_metric_name_valid(long_name));

  const char *good[] = {"a", "_a", ":a", "a1:b_c", "Abc_9"};
  const char *bad[] = {"", "1a", "a-b", "a b", "caf\xc3\xa9", "a.b"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) assert_true(rv_metric_name_valid(good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(rv_metric_name_valid(bad[i]));
  assert_false(rv_metric_name_valid(NULL));

  assert_true(rv_metric_label_name_valid("_a"));
  assert_true(rv_metric_label_name_valid("a_b9"));
  assert_false(rv_metric_label_name_valid("__a"));
  assert_false(rv_metric_label_name_valid("a:b"));
  assert_false(rv_metric_label_name_valid("9a"));

  assert_null(rv_metric_name_lint("ravel_queue_messages_total", RV_METRIC_COUNTER));
  assert_null(rv_metric_name_lint("ravel_queue_latency_seconds", RV_METRIC_HISTOGRAM));
  assert_null(rv_metric_name_lint("ravel_log_bytes", RV_METRIC_GAUGE));
  assert_string_equal(rv_metric_name_lint("ravel_queue_messages", RV_METRIC_COUNTER),
                      "counter names end in _total");
  assert_string_equal(rv_metric_name_lint("ravel_depth_total", RV_METRIC_GAUGE),
                      "only counter names end in _total");
  assert_string_equal(rv_metric_name_lint("queue_messages_total", RV_METRIC_COUNTER),
                      "ravel's metric names start with ravel_");
  assert_string_equal(rv_metric_name_lint("ravel_latency_ms", RV_METRIC_HISTOGRAM),
                      "use base units: _seconds, _bytes, ratios 0..1");
  assert_non_null(rv_metric_name_lint("ravel_wait_milliseconds_total", RV_METRIC_COUNTER));
  assert_non_null(rv_metric_name_lint("ravel x", RV_METRIC_GAUGE));
}

static void test_child_limit_overflow(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_counter *f = rv_metrics_counter(m, "ravel_test_wide_total", "Wide.", (const char *[]){"id", NULL});
  rv_counter_child *first = NULL;
  char v[32];
  for (int i = 0; i < RV_METRIC_CHILDREN_MAX; i++) {
    snprintf(v, sizeof v, "v%d", i);
    rv_counter_child *c = rv_counter_labels(f, v);
    assert_non_null(c);
    rv_counter_add(c, i);
    if (i == 0) first = c;
  }
  /* Existing tuples are still found after the index grew. */
  assert_ptr_equal(first, rv_counter_labels(f, "v0"));
  assert_true(rv_counter_value(rv_counter_labels(f, "v1000")) == 1000);

  /* Past the limit: a sink that takes updates and is never rendered. */
  rv_counter_child *sink = rv_counter_labels(f, "extra1");
  assert_non_null(sink);
  rv_counter_inc(sink);
  assert_ptr_equal(sink, rv_counter_labels(f, "extra2"));
  assert_ptr_equal(first, rv_counter_labels(f, "v0"));

  char *out = render(m);
  assert_null(strstr(out, "extra"));
  size_t series = 0;
  for (const char *p = out; (p = strstr(p, "\nravel_test_wide_total{")); p++) series++;
  assert_int_equal(series, RV_METRIC_CHILDREN_MAX);
  assert_non_null(strstr(out, "ravel_test_wide_total{id=\"v1023\"} 1023\n"
                              "# HELP " RV_METRICS_DROPPED_NAME " "));
  assert_non_null(strstr(out, "# TYPE " RV_METRICS_DROPPED_NAME " counter\n" RV_METRICS_DROPPED_NAME
                              "{family=\"ravel_test_wide_total\"} 2\n"));
  free(out);
  rv_metrics_free(m);
}

/* ---- collectors ------------------------------------------------------------- */

typedef struct collect_result {
  int rc[8];
  int calls;
} collect_result;

static void collect_threads(rv_metrics_writer *w, void *arg) {
  collect_result *r = arg;
  r->calls++;
  r->rc[0] = rv_metrics_write_sample(w, NULL, 1); /* no header yet */
  r->rc[1] = rv_metrics_write_family(w, "ravel_test_threads", "Threads by state.", RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, (const char *[]){"state", "running", NULL}, 3);
  rv_metrics_write_sample(w, (const char *[]){"state", "blocked", "lock", "a \"b\"", NULL}, 1);
  r->rc[2] = rv_metrics_write_sample(w, (const char *[]){"__bad", "x", NULL}, 1);
  r->rc[3] = rv_metrics_write_sample(w, (const char *[]){"a", "x", "a", "y", NULL}, 1);
  r->rc[4] = rv_metrics_write_family(w, "ravel_test_threads", "Again.", RV_METRIC_GAUGE);
  r->rc[5] = rv_metrics_write_sample(w, NULL, 9); /* dropped: the header failed */
  r->rc[6] = rv_metrics_write_family(w, "ravel_test_registered", "Clash.", RV_METRIC_GAUGE);
  r->rc[7] = rv_metrics_write_family(w, "ravel_test_h", "Hist.", RV_METRIC_HISTOGRAM);
}

static void collect_waits(rv_metrics_writer *w, void *arg) {
  rv_metrics_write_sample(w, NULL, 5); /* the previous collector's family is closed */
  rv_metrics_write_family(w, "ravel_test_waits_total", NULL, RV_METRIC_COUNTER);
  rv_metrics_write_sample(w, NULL, 12);
}

static void test_collectors(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_gauge_set(rv_gauge_labels(rv_metrics_gauge(m, "ravel_test_registered", "Reg.", NULL)), 1);
  collect_result r = {{0}, 0};
  assert_int_equal(rv_metrics_add_collector(m, collect_threads, &r), RV_OK);
  assert_int_equal(rv_metrics_add_collector(m, collect_waits, NULL), RV_OK);
  assert_int_equal(rv_metrics_add_collector(m, NULL, NULL), RV_EINVAL);
  assert_render(m, "# HELP ravel_test_registered Reg.\n"
                   "# TYPE ravel_test_registered gauge\n"
                   "ravel_test_registered 1\n"
                   "# HELP ravel_test_threads Threads by state.\n"
                   "# TYPE ravel_test_threads gauge\n"
                   "ravel_test_threads{state=\"running\"} 3\n"
                   "ravel_test_threads{state=\"blocked\",lock=\"a \\\"b\\\"\"} 1\n"
                   "# TYPE ravel_test_waits_total counter\n"
                   "ravel_test_waits_total 12\n");
  assert_int_equal(r.calls, 1);
  const int want[8] = {RV_EINVAL, RV_OK,     RV_EINVAL, RV_EINVAL,
                       RV_EINVAL, RV_EINVAL, RV_EINVAL, RV_EINVAL};
  for (int i = 0; i < 8; i++) assert_int_equal(r.rc[i], want[i]);
  /* Every render calls the collectors again. */
  free(render(m));
  assert_int_equal(r.calls, 2);
  for (int i = 2; i < RV_METRICS_COLLECTORS_MAX; i++)
    assert_int_equal(rv_metrics_add_collector(m, collect_waits, NULL), RV_OK);
  assert_int_equal(rv_metrics_add_collector(m, collect_waits, NULL), RV_ELIMIT);
  rv_metrics_free(m);
}

/* ---- concurrency ------------------------------------------------------------ */

#define CONC_THREADS 8
#define CONC_INCREMENTS 20000
#define CONC_SHARED_LABELS 16

typedef struct conc_arg {
  rv_metrics *m;
  rv_counter *hits;
  rv_histogram *lat;
  rv_gauge *level;
  int index;
} conc_arg;

/* Every thread hammers one shared child and creates children others create too. */
static void conc_worker(void *p) {
  conc_arg *a = p;
  rv_counter_child *shared = rv_counter_labels(a->hits, "shared");
  rv_histogram_child *h = rv_histogram_labels(a->lat);
  rv_gauge_child *g = rv_gauge_labels(a->level);
  char label[16];
  for (int i = 0; i < CONC_INCREMENTS; i++) {
    rv_counter_inc(shared);
    rv_histogram_observe(h, (i % 2) ? 0.5 : 2);
    rv_gauge_inc(g);
    rv_gauge_dec(g);
    if (i % 100 == 0) {
      snprintf(label, sizeof label, "k%d", (i / 100) % CONC_SHARED_LABELS);
      rv_counter_inc(rv_counter_labels(a->hits, label));
    }
  }
}

/* Renders while the workers run: must never crash or tear a line. */
static void conc_renderer(void *p) {
  conc_arg *a = p;
  for (int i = 0; i < 50; i++) {
    char *out = NULL;
    size_t len = 0;
    if (rv_metrics_render(a->m, &out, &len) == RV_OK && len > 0 && out[len - 1] != '\n')
      a->index = -1;
    free(out);
  }
}

static void test_concurrent_updates(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_counter *hits = rv_metrics_counter(m, "ravel_test_hits_total", "Hits.", (const char *[]){"k", NULL});
  rv_histogram *lat = rv_metrics_histogram(m, "ravel_test_conc_seconds", "Lat.", NULL,
                                           (const double[]){1}, 1);
  rv_gauge *level = rv_metrics_gauge(m, "ravel_test_level", "Level.", NULL);
  conc_arg args[CONC_THREADS + 1];
  rv_thread *threads[CONC_THREADS + 1];
  for (int i = 0; i <= CONC_THREADS; i++) {
    args[i] = (conc_arg){.m = m, .hits = hits, .lat = lat, .level = level, .index = i};
    assert_int_equal(rv_thread_start(&threads[i], "metrics-test", "test",
                                     i < CONC_THREADS ? conc_worker : conc_renderer, &args[i]),
                     RV_OK);
  }
  for (int i = 0; i <= CONC_THREADS; i++) assert_int_equal(rv_thread_join(threads[i]), RV_OK);
  assert_int_equal(args[CONC_THREADS].index, CONC_THREADS);

  assert_true(rv_counter_value(rv_counter_labels(hits, "shared")) ==
              (double)CONC_THREADS * CONC_INCREMENTS);
  double per_label = 0;
  for (int k = 0; k < CONC_SHARED_LABELS; k++) {
    char label[16];
    snprintf(label, sizeof label, "k%d", k);
    per_label += rv_counter_value(rv_counter_labels(hits, label));
  }
  assert_true(per_label == (double)CONC_THREADS * (CONC_INCREMENTS / 100));
  assert_true(rv_gauge_value(rv_gauge_labels(level)) == 0);

  char *out = render(m);
  char want[256];
  snprintf(want, sizeof want,
           "ravel_test_conc_seconds_bucket{le=\"1\"} %d\n"
           "ravel_test_conc_seconds_bucket{le=\"+Inf\"} %d\n"
           "ravel_test_conc_seconds_sum %d\n"
           "ravel_test_conc_seconds_count %d\n",
           CONC_THREADS * CONC_INCREMENTS / 2, CONC_THREADS * CONC_INCREMENTS,
           CONC_THREADS * CONC_INCREMENTS / 2 * 5 / 2, CONC_THREADS * CONC_INCREMENTS);
  if (!strstr(out, want)) fail_msg("missing:\n%s\nin:\n%s", want, out);
  free(out);
  rv_metrics_free(m);
}

/* ---- the sample for promtool ---------------------------------------------------- */

static void sample_collect(rv_metrics_writer *w, void *arg) {
  rv_metrics_write_family(w, "ravel_threads", "Threads by role and state.", RV_METRIC_GAUGE);
  rv_metrics_write_sample(w, (const char *[]){"role", "worker", "state", "running", NULL}, 3);
  rv_metrics_write_sample(w, (const char *[]){"role", "worker", "state", "blocked", NULL}, 1);
  rv_metrics_write_family(w, "ravel_lock_waits_total", "Lock waits since start.", RV_METRIC_COUNTER);
  rv_metrics_write_sample(w, (const char *[]){"lock", "config \"main\"", NULL}, 17);
}

/* A registry with every kind of family and the awkward values; the caller frees it. */
static rv_metrics *sample_registry(void) {
  rv_metrics *m = rv_metrics_new();
  rv_counter *msgs = rv_metrics_counter(m, "ravel_queue_messages_total",
                                        "Messages published, by topic.\nSecond \\ line.",
                                        (const char *[]){"topic", NULL});
  rv_counter_add(rv_counter_labels(msgs, "orders"), 1234);
  rv_counter_inc(rv_counter_labels(msgs, "odd \"topic\"\\with\nnewline"));
  rv_counter_inc(rv_counter_labels(msgs, ""));
  rv_gauge *depth = rv_metrics_gauge(m, "ravel_queue_depth", "Messages waiting.",
                                     (const char *[]){"topic", "channel", NULL});
  rv_gauge_set(rv_gauge_labels(depth, "orders", "billing"), 42);
  rv_gauge_set(rv_gauge_labels(depth, "orders", "audit"), NAN);
  rv_gauge *temp = rv_metrics_gauge(m, "ravel_test_ratio", "A ratio.", NULL);
  rv_gauge_set(rv_gauge_labels(temp), -0.125);
  rv_gauge *inf = rv_metrics_gauge(m, "ravel_test_limit_bytes", "No limit.", NULL);
  rv_gauge_set(rv_gauge_labels(inf), INFINITY);
  rv_histogram *lat = rv_metrics_histogram(m, "ravel_request_duration_seconds",
                                           "Request latency.", (const char *[]){"method", NULL},
                                           NULL, 0);
  const double obs[] = {0.001, 0.02, 0.02, 0.3, 1.5, 20};
  for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
    rv_histogram_observe(rv_histogram_labels(lat, "GET"), obs[i]);
  rv_histogram_observe(rv_histogram_labels(lat, "PUT"), 0.05);
  rv_metrics_add_collector(m, sample_collect, NULL);
  return m;
}

static void test_sample_renders(void **state) {
  rv_metrics *m = sample_registry();
  char *out = render(m);
  assert_non_null(strstr(out, "ravel_queue_messages_total{topic=\"odd \\\"topic\\\"\\\\with\\nnewline\"} 1\n"));
  assert_non_null(strstr(out, "# HELP ravel_queue_messages_total Messages published, by topic.\\nSecond \\\\ line.\n"));
  assert_non_null(strstr(out, "ravel_request_duration_seconds_bucket{method=\"GET\",le=\"0.025\"} 3\n"));
  assert_non_null(strstr(out, "ravel_request_duration_seconds_count{method=\"PUT\"} 1\n"));
  assert_non_null(strstr(out, "ravel_lock_waits_total{lock=\"config \\\"main\\\"\"} 17\n"));
  free(out);
  rv_metrics_free(m);
}

static int render_sample(void) {
  rv_metrics *m = sample_registry();
  char *out = NULL;
  size_t len = 0;
  int rc = rv_metrics_render(m, &out, &len);
  if (rc == RV_OK) fwrite(out, 1, len, stdout);
  free(out);
  rv_metrics_free(m);
  return rc == RV_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--render-sample") == 0) return render_sample();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_registry),       cmocka_unit_test(test_render_small_registry),
      cmocka_unit_test(test_unlabelled_renders_zero), cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_float_format),         cmocka_unit_test(test_updates),
      cmocka_unit_test(test_histogram_cumulative), cmocka_unit_test(test_default_buckets),
      cmocka_unit_test(test_registration_rules),   cmocka_unit_test(test_registry_full),
      cmocka_unit_test(test_names),                cmocka_unit_test(test_child_limit_overflow),
      cmocka_unit_test(test_collectors),           cmocka_unit_test(test_concurrent_updates),
      cmocka_unit_test(test_sample_renders),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
