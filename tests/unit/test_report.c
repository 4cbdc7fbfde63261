/*
 * The HTML report (src/diag/report.h): a model with three replicas, markers
 * and a small wait-for graph becomes one page with a line per replica in
 * every chart, the markers, the escaped text; inputs past the bounds are
 * truncated with a notice; odd and empty models do not crash.
 */
#include "support.h"

#include "diag/report.h"

#include <jansson.h>
#include <unistd.h>

static char dir[256];

static int setup(void **state) {
  snprintf(dir, sizeof dir, "/tmp/ravel-test-report-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
  fclose(f);
  if (!buf)
    return NULL;
  buf[got] = 0;
  return buf;
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}

static json_t *samples(int64_t t0, int n, double base) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(
        a, json_pack("{sI sf sf sf sf sf sf sf sf sf}", "t_ms", (json_int_t)(t0 + i * 1000),
                     "rate", base + i % 5, "handler_threads", 2.0 + i, "cache_waiters",
                     i > 10 ? 3.0 : 0.0, "dlock_waits", (double)i, "in_flight", 4.0, "held", 1.0,
                     "timeouts", (double)i, "late_fins", 0.0, "rebuilds", 1.0));
  return a;
}

static json_t *model3(void) {
  int64_t t0 = 1795000000000;
  json_t *reps = json_array();
  for (int r = 1; r <= 3; r++) {
    char name[32];
    snprintf(name, sizeof name, "billing/%d", r);
    json_array_append_new(reps, json_pack("{ss so}", "name", name, "samples",
                                          samples(t0, 20, 5.0 * r)));
  }
  json_t *marks = json_pack("[{sI ss} {sI ss}]", "t_ms", (json_int_t)(t0 + 5000), "label",
                            "platform write 1", "t_ms", (json_int_t)(t0 + 5300), "label",
                            "platform write 2 <&> \"quoted\"");
  json_t *graph = json_pack(
      "{s[{ss ss ss ss sb} {ss ss ss ss sb} {ss ss ss ss sb} {ss ss ss ss sb}]"
      " s[{ss ss ss} {ss ss ss} {ss ss ss}]}",
      "nodes", "id", "t1", "label", "coord-watch", "kind", "thread", "group", "billing/1",
      "in_cycle", 1, "id", "t2", "label", "handler-8 <script>", "kind", "thread", "group",
      "billing/1", "in_cycle", 1, "id", "l1", "label", "client-cache", "kind", "lock", "group",
      "billing/1", "in_cycle", 0, "id", "d1", "label", "acct-3", "kind", "dlock", "group",
      "coord", "in_cycle", 0, "edges", "from", "t1", "to", "t2", "label", "waits to write <&>",
      "from", "t2", "to", "t1", "label", "queued behind", "from", "d1", "to", "t2", "label",
      "held by");
  return json_pack("{ss sI so so s{ss sb} so}", "title", "demo <&> report", "generated_at_ms",
                   (json_int_t)(t0 + 30000), "replicas", reps, "markers", marks, "diagnosis",
                   "text", "line one\nreplica 1 DEADLOCKED <&>\n", "healthy", 0, "graph", graph);
}

static void three_replicas(void **state) {
  char path[300], why[256] = "";
  snprintf(path, sizeof path, "%s/report.html", dir);
  json_t *m = model3();
  assert_non_null(m);
  assert_int_equal(rv_report_write(path, m, why, sizeof why), RV_OK);
  json_decref(m);
  char *html = slurp(path);
  assert_non_null(html);
  assert_non_null(strstr(html, "<!DOCTYPE html>"));
  assert_non_null(strstr(html, "</html>"));
  assert_null(strstr(html, "<script"));
  /* six charts, one line per replica in each */
  assert_int_equal(count(html, "<svg class=\"chart\""), 6);
  assert_int_equal(count(html, "class=\"series\""), 18);
  for (int r = 1; r <= 3; r++) {
    char needle[64];
    snprintf(needle, sizeof needle, "class=\"series\" data-replica=\"billing/%d\"", r);
    assert_int_equal(count(html, needle), 6);
  }
  assert_non_null(strstr(html, "id=\"chart-cache_waiters\""));
  /* markers, labelled; their text escaped */
  assert_int_equal(count(html, "<line class=\"marker\""), 12);
  assert_non_null(strstr(html, "platform write 1"));
  assert_non_null(strstr(html, "platform write 2 &lt;&amp;&gt; &quot;quoted&quot;"));
  assert_null(strstr(html, "<&>"));
  assert_non_null(strstr(html, "demo &lt;&amp;&gt; report"));
  /* diagnosis */
  assert_non_null(strstr(html, "<section id=\"diagnosis\" class=\"unhealthy\">"));
  assert_non_null(strstr(html, "replica 1 DEADLOCKED &lt;&amp;&gt;\n"));
  /* graph: 4 nodes, 2 of them in the cycle, 3 edges, the cycle's two red */
  assert_non_null(strstr(html, "<svg id=\"waitgraph\""));
  assert_int_equal(count(html, "<g class=\"node "), 4);
  assert_int_equal(count(html, " in-cycle\" data-id="), 2);
  assert_int_equal(count(html, "<g class=\"edge"), 3);
  assert_int_equal(count(html, "<g class=\"edge in-cycle\""), 2);
  assert_non_null(strstr(html, "handler-8 &lt;script&gt;"));
  assert_non_null(strstr(html, "waits to write &lt;&amp;&gt;"));
  assert_null(strstr(html, "class=\"truncated\""));
  free(html);
  /* no temp file left behind */
  char tmp[320];
  snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)rv_getpid());
  assert_int_not_equal(access(tmp, F_OK), 0);
}

static void bounded(void **state) {
  char path[300], why[256] = "";
  snprintf(path, sizeof path, "%s/big.html", dir);
  int64_t t0 = 1795000000000;
  json_t *reps = json_array();
  /* one replica with more samples than drawn, and more replicas than drawn */
  json_t *many = json_array();
  for (int i = 0; i < RV_REPORT_SAMPLES_MAX + 100; i++)
    json_array_append_new(many, json_pack("{sI sf}", "t_ms", (json_int_t)(t0 + i * 1000), "rate",
                                          (double)(i % 7)));
  json_array_append_new(reps, json_pack("{ss so}", "name", "long/1", "samples", many));
  for (int r = 0; r < RV_REPORT_REPLICAS_MAX + 5; r++) {
    char name[32];
    snprintf(name, sizeof name, "svc/%d", r + 2);
    json_array_append_new(reps, json_pack("{ss so}", "name", name, "samples", samples(t0, 3, 1)));
  }
  json_t *marks = json_array();
  for (int i = 0; i < RV_REPORT_MARKERS_MAX + 10; i++)
    json_array_append_new(marks, json_pack("{sI ss}", "t_ms", (json_int_t)(t0 + i * 100), "label", "m"));
  json_t *nodes = json_array(), *edges = json_array();
  for (int i = 0; i < RV_REPORT_NODES_MAX + 50; i++) {
    char id[32], grp[32];
    snprintf(id, sizeof id, "n%d", i);
    snprintf(grp, sizeof grp, "g%d", i % (RV_REPORT_GROUPS_MAX + 3));
    json_array_append_new(nodes, json_pack("{ss ss ss sb}", "id", id, "kind", "thread", "group",
                                           grp, "in_cycle", i % 2));
  }
  for (int i = 0; i < RV_REPORT_EDGES_MAX + 100; i++) {
    char a[32], b[32];
    snprintf(a, sizeof a, "n%d", i % 150);
    snprintf(b, sizeof b, "n%d", (i * 7) % 150);
    json_array_append_new(edges, json_pack("{ss ss ss}", "from", a, "to", b, "label", "w"));
  }
  json_array_append_new(edges, json_pack("{ss ss}", "from", "n1", "to", "nowhere"));
  size_t tlen = RV_REPORT_TEXT_MAX + 1000;
  char *text = malloc(tlen + 1);
  assert_non_null(text);
  memset(text, 'x', tlen);
  text[tlen] = 0;
  /* a multi-byte character across the cut */
  memcpy(text + RV_REPORT_TEXT_MAX - 1, "\xC3\xA9", 2);
  json_t *m = json_pack("{so so s{ss sb} s{so so}}", "replicas", reps, "markers", marks,
                        "diagnosis", "text", text, "healthy", 1, "graph", "nodes", nodes, "edges",
                        edges);
  free(text);
  assert_non_null(m);
  assert_int_equal(rv_report_write(path, m, why, sizeof why), RV_OK);
  json_decref(m);
  char *html = slurp(path);
  assert_non_null(html);
  assert_true(count(html, "class=\"truncated\"") >= 6);
  assert_non_null(strstr(html, "only the last 3600 are drawn"));
  assert_int_equal(count(html, "class=\"series\""), RV_REPORT_REPLICAS_MAX * 6);
  assert_int_equal(count(html, "<line class=\"marker\""), RV_REPORT_MARKERS_MAX * 6);
  assert_true(count(html, "<g class=\"node ") <= RV_REPORT_NODES_MAX);
  assert_true(count(html, "<g class=\"edge") <= RV_REPORT_EDGES_MAX);
  assert_non_null(strstr(html, "<section id=\"diagnosis\" class=\"healthy\">"));
  assert_null(strstr(html, "\xC3\xA9")); /* cut before the character, not inside it */
  assert_non_null(strstr(html, "</html>"));
  free(html);
}

static void odd_models(void **state) {
  char path[300], why[256] = "";
  snprintf(path, sizeof path, "%s/odd.html", dir);
  /* empty */
  json_t *m = json_object();
  assert_int_equal(rv_report_write(path, m, why, sizeof why), RV_OK);
  json_decref(m);
  /* only a diagnosis */
  m = json_pack("{s{ss}}", "diagnosis", "text", "all good");
  assert_int_equal(rv_report_write(path, m, why, sizeof why), RV_OK);
  char *html = slurp(path);
  assert_non_null(strstr(html, "all good"));
  assert_non_null(strstr(html, "class=\"unknown\""));
  assert_null(strstr(html, "class=\"chart\""));
  free(html);
  json_decref(m);
  /* wrong types everywhere, samples without times, a replica without samples */
  m = json_pack("{si s[{si ss} {ss s[{ss} {sf} {sI ss}]} {ss}] s[s {sI}] si s{ss s[i]}}", "title", 3,
                "replicas", "name", 4, "samples", "x", "name", "r/2", "samples", "rate", "no",
                "rate", 1.0, "t_ms", (json_int_t)5, "rate", "x", "name", "r/3", "markers", "x",
                "t_ms", (json_int_t)-4, "diagnosis", 1, "graph", "nodes", "x", "edges", 7);
  assert_non_null(m);
  assert_int_equal(rv_report_write(path, m, why, sizeof why), RV_OK);
  html = slurp(path);
  assert_int_equal(count(html, "class=\"series\""), 18);
  free(html);
  json_decref(m);
  /* errors */
  m = json_object();
  assert_int_equal(rv_report_write(NULL, m, why, sizeof why), RV_EINVAL);
  assert_int_equal(rv_report_write(path, NULL, why, sizeof why), RV_EINVAL);
  assert_int_equal(rv_report_write("/nonexistent-dir/x/report.html", m, why, sizeof why), RV_EIO);
  assert_non_null(strstr(why, "/nonexistent-dir/x/report.html"));
  json_decref(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(three_replicas),
      cmocka_unit_test(bounded),
      cmocka_unit_test(odd_models),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
