/*
 * test_grab: the pieces of `ravel grab` that need no live system: the RESP ->
 * JSON conversion (src/diag/collect.c), directory names, archive + extract
 * round trip, and extract's refusals (paths, links, size, layout).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diag/collect.h"
#include "diag/grab.h"
#include "rt/rt.h"

/* ---- RESP -> JSON -------------------------------------------------------------------------------- */

static redisReply *parse(const char *resp) {
  redisReader *rd = redisReaderCreate();
  assert_non_null(rd);
  assert_int_equal(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
  void *out = NULL;
  assert_int_equal(redisReaderGetReply(rd, &out), REDIS_OK);
  assert_non_null(out);
  redisReaderFree(rd);
  return out;
}

/* The compact JSON of resp converted with shape, compared with want. */
static void expect_json(const char *resp, rv_resp_shape shape, const char *want) {
  redisReply *r = parse(resp);
  json_t *j = rv_resp_to_json(r, shape);
  assert_non_null(j);
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
  assert_non_null(s);
  if (strcmp(s, want) != 0)
    fail_msg("got  %s\nwant %s", s, want);
  free(s);
  json_decref(j);
  freeReplyObject(r);
}

static void test_resp_scalars(void **state) {
  expect_json(":42\r\n", RV_RESP_PLAIN, "42");
  expect_json("$-1\r\n", RV_RESP_MAP, "null");
  expect_json("+OK\r\n", RV_RESP_PLAIN, "\"OK\"");
  expect_json("$3\r\nabc\r\n", RV_RESP_MAP, "\"abc\"");
  expect_json("-NOSESSION no such session\r\n", RV_RESP_MAP, "{\"error\":\"NOSESSION no such session\"}");
  /* Bytes that are not UTF-8 become U+FFFD; valid multi-byte sequences stay. */
  expect_json("$4\r\na\xff\xc3\xa9\r\n", RV_RESP_PLAIN, "\"a\xef\xbf\xbd\xc3\xa9\"");
}

static void test_resp_map_with_nested_lists(void **state) {
  /* LOCK.INFO: a map whose "waiters" is a list of maps; other arrays stay arrays. */
  expect_json("*8\r\n$4\r\nlock\r\n$6\r\nacct-1\r\n$4\r\nheld\r\n:1\r\n"
              "$7\r\nwaiters\r\n*1\r\n*4\r\n$8\r\nposition\r\n:1\r\n$7\r\nsession\r\n:7\r\n"
              "$4\r\ntags\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
              RV_RESP_MAP,
              "{\"lock\":\"acct-1\",\"held\":1,\"waiters\":[{\"position\":1,\"session\":7}],"
              "\"tags\":[\"a\",\"b\"]}");
  /* SESSION.INFO's "held" and "waiting", empty and not. */
  expect_json("*6\r\n$7\r\nsession\r\n:9\r\n$4\r\nheld\r\n*0\r\n$7\r\nwaiting\r\n*1\r\n*2\r\n$4\r\nlock\r\n$1\r\nx\r\n",
              RV_RESP_MAP, "{\"session\":9,\"held\":[],\"waiting\":[{\"lock\":\"x\"}]}");
  /* A nil value in a map. */
  expect_json("*2\r\n$5\r\nowner\r\n$-1\r\n", RV_RESP_MAP, "{\"owner\":null}");
}

static void test_resp_list_of_maps(void **state) {
  expect_json("*2\r\n*2\r\n$1\r\nk\r\n:1\r\n*2\r\n$1\r\nk\r\n:2\r\n", RV_RESP_LIST_OF_MAPS,
              "[{\"k\":1},{\"k\":2}]");
  expect_json("*0\r\n", RV_RESP_LIST_OF_MAPS, "[]");
  /* Without the knowledge, the same bytes stay arrays. */
  expect_json("*2\r\n*2\r\n$1\r\nk\r\n:1\r\n*2\r\n$1\r\nk\r\n:2\r\n", RV_RESP_PLAIN,
              "[[\"k\",1],[\"k\",2]]");
}

static void test_resp_not_a_map_stays_an_array(void **state) {
  /* Odd length, or a key that is not a string: not guessed at. */
  expect_json("*3\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n", RV_RESP_MAP, "[\"a\",1,\"b\"]");
  expect_json("*2\r\n:1\r\n:2\r\n", RV_RESP_MAP, "[1,2]");
  /* A list of maps whose element is not a map keeps that element as an array. */
  expect_json("*2\r\n*2\r\n$1\r\nk\r\n:1\r\n*1\r\n:5\r\n", RV_RESP_LIST_OF_MAPS, "[{\"k\":1},[5]]");
  assert_null(rv_resp_to_json(NULL, RV_RESP_MAP));
}

static void test_parse_url(void **state) {
  char host[64];
  uint16_t port = 0;
  assert_true(rv_diag_parse_url("http://127.0.0.1:7500/", host, sizeof host, &port));
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 7500);
  assert_true(rv_diag_parse_url("localhost:80", host, sizeof host, &port));
  assert_string_equal(host, "localhost");
  assert_true(rv_diag_parse_url("http://[::1]:9000/x", host, sizeof host, &port));
  assert_string_equal(host, "::1");
  assert_false(rv_diag_parse_url("http://host/", host, sizeof host, &port));
  assert_false(rv_diag_parse_url("http://host:0/", host, sizeof host, &port));
  assert_false(rv_diag_parse_url("http://host:99999/", host, sizeof host, &port));
  assert_false(rv_diag_parse_url("http://:80/", host, sizeof host, &port));
}

/* ---- names and paths ------------------------------------------------------------------------------- */

static void test_sanitize(void **state) {
  char out[16];
  rv_grab_sanitize("billing", out, sizeof out);
  assert_string_equal(out, "billing");
  rv_grab_sanitize("../etc/passwd", out, sizeof out);
  assert_string_equal(out, "_._etc_passwd");
  rv_grab_sanitize("", out, sizeof out);
  assert_string_equal(out, "_");
  rv_grab_sanitize(".hidden", out, sizeof out);
  assert_string_equal(out, "_hidden");
  rv_grab_sanitize("a very long name indeed", out, sizeof out);
  assert_int_equal(strlen(out), sizeof out - 1);
}

static void test_entry_paths(void **state) {
  size_t top = 0;
  assert_true(rv_grab_entry_path_ok("g/manifest.json", &top));
  assert_int_equal(top, 1);
  assert_true(rv_grab_entry_path_ok("grab-1/", &top));
  assert_int_equal(top, 6);
  assert_true(rv_grab_entry_path_ok("grab-1/coord/lock-table.json", &top));
  assert_true(rv_grab_entry_path_ok("a..b/c..d", &top)); /* dots inside names are fine */
  const char *bad[] = {"", "/etc/passwd", "../x", "g/../x", "g/..", "..", "./g/x", "g/./x",
                       "g//x", "/", "g/x\\y", "g/\x01x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (rv_grab_entry_path_ok(bad[i], &top))
      fail_msg("accepted the unsafe path \"%s\"", bad[i]);
  assert_false(rv_grab_entry_path_ok(NULL, &top));
}

/* ---- archive and extract ----------------------------------------------------------------------------- */

static char *tmpdir(void) {
  char *d = strdup("/tmp/test_grab.XXXXXX");
  assert_non_null(mkdtemp(d));
  return d;
}

static void put(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
}

static bool exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

typedef struct entry {
  const char *name;
  int type; /* AE_IFREG, AE_IFDIR, AE_IFLNK */
  const char *data;
  int64_t size; /* -1: strlen(data) */
} entry;

/* Write a tar.gz with exactly these entries (as a hostile archive would). */
static void craft(const char *path, const entry *e, size_t n) {
  struct archive *a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++) {
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e[i].name);
    archive_entry_set_filetype(ae, (unsigned)e[i].type);
    archive_entry_set_perm(ae, 0644);
    if (e[i].type == AE_IFLNK)
      archive_entry_set_symlink(ae, e[i].data);
    int64_t size = e[i].type == AE_IFREG ? (e[i].size >= 0 ? e[i].size : (int64_t)strlen(e[i].data)) : 0;
    archive_entry_set_size(ae, size);
    assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
    if (e[i].type == AE_IFREG && e[i].size < 0)
      archive_write_data(a, e[i].data, strlen(e[i].data));
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
}

static void test_archive_round_trip(void **state) {
  char *t = tmpdir();
  char src[512], p[600], arc[512], out[512];
  snprintf(src, sizeof src, "%s/ravel-grab-x", t);
  assert_int_equal(mkdir(src, 0755), 0);
  snprintf(p, sizeof p, "%s/manifest.json", src);
  put(p, "{\"format\": \"ravel-grab/1\"}");
  snprintf(p, sizeof p, "%s/coord", src);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/coord/sessions.json", src);
  put(p, "[]");
  snprintf(arc, sizeof arc, "%s/g.tar.gz", t);
  char why[256] = "";
  assert_int_equal(rv_grab_archive(src, arc, why, sizeof why), RV_OK);
  snprintf(out, sizeof out, "%s/out", t);
  assert_int_equal(mkdir(out, 0755), 0);
  char *dir = NULL;
  int rc = rv_grab_extract(arc, out, &dir, why, sizeof why);
  if (rc != RV_OK)
    fail_msg("extract: %s", why);
  snprintf(p, sizeof p, "%s/ravel-grab-x", out);
  assert_string_equal(dir, p);
  snprintf(p, sizeof p, "%s/coord/sessions.json", dir);
  assert_true(exists(p));
  /* The top directory now exists: a second extract refuses to mix into it. */
  char *dir2 = NULL;
  assert_int_equal(rv_grab_extract(arc, out, &dir2, why, sizeof why), RV_EBUSY);
  assert_null(dir2);
  free(dir);
  assert_int_equal(rv_grab_rmtree(t), RV_OK);
  assert_false(exists(t));
  free(t);
}

/* extract must refuse the archive, say why (containing want), and leave parent empty. */
static void expect_refused(const entry *e, size_t n, const char *want) {
  char *t = tmpdir();
  char arc[512], out[512];
  snprintf(arc, sizeof arc, "%s/bad.tar.gz", t);
  snprintf(out, sizeof out, "%s/out", t);
  assert_int_equal(mkdir(out, 0755), 0);
  craft(arc, e, n);
  char why[512] = "", *dir = NULL;
  int rc = rv_grab_extract(arc, out, &dir, why, sizeof why);
  if (rc == RV_OK)
    fail_msg("accepted a bad archive (first entry %s)", e[0].name);
  assert_null(dir);
  if (!strstr(why, want))
    fail_msg("why \"%s\" does not mention \"%s\"", why, want);
  assert_int_equal(rmdir(out), 0); /* empty: nothing was left behind */
  char outside[512];
  snprintf(outside, sizeof outside, "%s/evil", t);
  assert_false(exists(outside));
  rv_grab_rmtree(t);
  free(t);
}

static void test_extract_refusals(void **state) {
  const entry dotdot[] = {{"g/", AE_IFDIR, NULL, 0}, {"g/manifest.json", AE_IFREG, "{}", -1},
                          {"g/../evil", AE_IFREG, "x", -1}};
  expect_refused(dotdot, 3, "unsafe entry path");
  const entry absolute[] = {{"/tmp/evil-test-grab", AE_IFREG, "x", -1}};
  expect_refused(absolute, 1, "unsafe entry path");
  const entry twotops[] = {{"g/manifest.json", AE_IFREG, "{}", -1}, {"evil/x", AE_IFREG, "x", -1}};
  expect_refused(twotops, 2, "outside the top directory");
  const entry link[] = {{"g/manifest.json", AE_IFREG, "{}", -1}, {"g/l", AE_IFLNK, "/etc/passwd", 0}};
  expect_refused(link, 2, "not a file or a directory");
  const entry nomanifest[] = {{"g/coord/x.json", AE_IFREG, "{}", -1}};
  expect_refused(nomanifest, 1, "not a ravel grab archive");
  const entry topfile[] = {{"g", AE_IFREG, "x", -1}};
  expect_refused(topfile, 1, "is a file");
}

static void test_extract_size_bound(void **state) {
  char *t = tmpdir();
  char arc[512], out[512];
  snprintf(arc, sizeof arc, "%s/big.tar.gz", t);
  snprintf(out, sizeof out, "%s/out", t);
  assert_int_equal(mkdir(out, 0755), 0);
  static char big[3000];
  memset(big, 'x', sizeof big - 1);
  const entry e[] = {{"g/manifest.json", AE_IFREG, "{}", -1}, {"g/a", AE_IFREG, big, -1},
                     {"g/b", AE_IFREG, big, -1}};
  craft(arc, e, 3);
  char why[512] = "", *dir = NULL;
  /* 2 + 2999 bytes fit in 4000; with the second file they do not. */
  assert_int_equal(rv_grab_extract_bounded(arc, out, 4000, &dir, why, sizeof why), RV_EINVAL);
  assert_null(dir);
  assert_non_null(strstr(why, "more than 4000 bytes"));
  assert_int_equal(rmdir(out), 0);
  assert_int_equal(mkdir(out, 0755), 0);
  assert_int_equal(rv_grab_extract_bounded(arc, out, 7000, &dir, why, sizeof why), RV_OK);
  free(dir);
  rv_grab_rmtree(t);
  free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resp_scalars),
      cmocka_unit_test(test_resp_map_with_nested_lists),
      cmocka_unit_test(test_resp_list_of_maps),
      cmocka_unit_test(test_resp_not_a_map_stays_an_array),
      cmocka_unit_test(test_parse_url),
      cmocka_unit_test(test_sanitize),
      cmocka_unit_test(test_entry_paths),
      cmocka_unit_test(test_archive_round_trip),
      cmocka_unit_test(test_extract_refusals),
      cmocka_unit_test(test_extract_size_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
