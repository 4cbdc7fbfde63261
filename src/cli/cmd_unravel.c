/*
 * ravel unravel: one diagnosis of a whole system.  Live: collect with the
 * grab collector into a temporary directory, analyse it, remove it.  From an
 * archive or a directory: the same analysis over the same layout.
 * Exit status: 0 healthy, 1 problems found, 2 could not collect/read.
 */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "diag/grab.h"
#include "diag/report.h"
#include "diag/unravel.h"
#include "rt/rt.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel unravel [--coord HOST:PORT] [--coord-admin PORT] [--queue HOST:HTTPPORT]\n"
          "                     [--target URL]... [options]\n"
          "       ravel unravel ARCHIVE.tar.gz|DIR [options]\n"
          "\n"
          "Joins every process's threads and locks with coord's distributed locks and the\n"
          "queue's in-flight messages into one wait-for graph, names its cycles (root first)\n"
          "and everything blocked behind them, and reports suspicious states.\n"
          "\n"
          "  --coord HOST:PORT       coord's RESP address (default 127.0.0.1:7400; none: skip)\n"
          "  --coord-admin PORT      coord's admin HTTP port (default 0: not taken)\n"
          "  --queue HOST:HTTPPORT   the queue's HTTP address (default 127.0.0.1:4151; none: skip)\n"
          "  --target URL            a process's admin URL (http://HOST:PORT/) or pid:N; repeatable\n"
          "  --json                  print the diagnosis as JSON\n"
          "  --report FILE.html      also write an HTML report\n"
          "  --hold-ms N             a lock held longer than N ms with waiters is reported (5000)\n"
          "  --wait-ms N             a thread waiting longer than N ms for a lock is reported (5000)\n"
          "  --bound-ms N            bound of the live collection (default 10000)\n"
          "  --confirm-ms N          live: when the first capture shows a deadlock, capture again\n"
          "                          N ms later and name only the deadlocks that stood across\n"
          "                          both (default 300; 0: one capture)\n"
          "  -h, --help              show this help\n"
          "\n"
          "Exit status: 0 healthy, 1 problems found, 2 could not collect or read.\n");
}

static bool split_hostport(const char *s, char *host, size_t hcap, uint16_t *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || (size_t)(colon - s) >= hcap)
    return false;
  char *end = NULL;
  long p = strtol(colon + 1, &end, 10);
  if (!end || *end || p < 1 || p > 65535)
    return false;
  snprintf(host, hcap, "%.*s", (int)(colon - s), s);
  *port = (uint16_t)p;
  return true;
}

static bool is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The second live capture, into again, analysed against the first (in dir); NULL (the
 * first result stands) when it cannot be made. */
static json_t *confirm(rv_grab_opts *g, const char *again, const char *dir, int64_t confirm_ms,
                       const rv_unravel_opts *uo) {
  char why[512] = "";
  rv_sleep(NULL, confirm_ms * RV_NS_PER_MS);
  rv_grab_result res = {0};
  json_t *result = NULL;
  if (rv_grab_collect(g, again, &res, why, sizeof why) == RV_OK && res.files > 0) {
    rv_unravel_opts o = *uo;
    o.confirm_dir = dir;
    result = rv_unravel_dir(again, &o, why, sizeof why);
    if (result)
      json_object_set_new(json_object_get(result, "stats"), "confirmed_after_ms",
                          json_integer(confirm_ms));
  }
  if (!result)
    fprintf(stderr, "ravel unravel: the second capture failed (%s); this is the first alone\n",
            why[0] ? why : "nothing answered");
  return result;
}

int cmd_unravel(int argc, char **argv) {
  static const struct option longopts[] = {{"coord", required_argument, 0, 'c'},
                                           {"coord-admin", required_argument, 0, 'a'},
                                           {"queue", required_argument, 0, 'q'},
                                           {"target", required_argument, 0, 't'},
                                           {"json", no_argument, 0, 'j'},
                                           {"report", required_argument, 0, 'r'},
                                           {"hold-ms", required_argument, 0, 'H'},
                                           {"wait-ms", required_argument, 0, 'W'},
                                           {"bound-ms", required_argument, 0, 'b'},
                                           {"confirm-ms", required_argument, 0, 'C'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  static char coord_host[256] = "127.0.0.1", queue_host[256] = "127.0.0.1";
  rv_grab_opts g = {.coord_host = coord_host, .coord_port = 7400, .coord_admin_port = 0,
                    .queue_host = queue_host, .queue_http_port = 4151,
                    .bound_ms = RV_GRAB_DEFAULT_BOUND_MS, .outside_stacks = true};
  rv_unravel_opts uo = {.hold_ms = RV_UNRAVEL_DEFAULT_HOLD_MS,
                        .wait_ms = RV_UNRAVEL_DEFAULT_WAIT_MS};
  bool json = false, live_opts = false;
  const char *report = NULL;
  int64_t confirm_ms = RV_UNRAVEL_CONFIRM_MS;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      live_opts = true;
      if (!strcmp(optarg, "none"))
        g.coord_host = NULL;
      else if (!split_hostport(optarg, coord_host, sizeof coord_host, &g.coord_port)) {
        fprintf(stderr, "ravel unravel: --coord %s is invalid: use HOST:PORT or none\n", optarg);
        return 2;
      } else
        g.coord_host = coord_host;
      break;
    case 'a':
      live_opts = true;
      g.coord_admin_port = (uint16_t)cli_int_opt("unravel", "--coord-admin", optarg, 0, 65535);
      break;
    case 'q':
      live_opts = true;
      if (!strcmp(optarg, "none"))
        g.queue_host = NULL;
      else if (!split_hostport(optarg, queue_host, sizeof queue_host, &g.queue_http_port)) {
        fprintf(stderr, "ravel unravel: --queue %s is invalid: use HOST:PORT or none\n", optarg);
        return 2;
      } else
        g.queue_host = queue_host;
      break;
    case 't':
      live_opts = true;
      if (strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "pid:", 4) != 0) {
        fprintf(stderr, "ravel unravel: --target %s is invalid: use http://HOST:PORT/ or pid:N\n",
                optarg);
        return 2;
      }
      if (g.ntargets == RV_GRAB_TARGETS_MAX) {
        fprintf(stderr, "ravel unravel: at most %d --target options\n", RV_GRAB_TARGETS_MAX);
        return 2;
      }
      g.targets[g.ntargets++] = optarg;
      break;
    case 'j': json = true; break;
    case 'r': report = optarg; break;
    case 'H': uo.hold_ms = cli_int_opt("unravel", "--hold-ms", optarg, 1, 86400000); break;
    case 'W': uo.wait_ms = cli_int_opt("unravel", "--wait-ms", optarg, 1, 86400000); break;
    case 'b': g.bound_ms = cli_int_opt("unravel", "--bound-ms", optarg, 500, 600000); break;
    case 'C':
      live_opts = true;
      confirm_ms = cli_int_opt("unravel", "--confirm-ms", optarg, 0, 60000);
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  const char *input = optind < argc ? argv[optind] : NULL;
  if (optind + 1 < argc) {
    fprintf(stderr, "ravel unravel: unexpected argument %s\n", argv[optind + 1]);
    usage(stderr);
    return 2;
  }
  if (input && live_opts) {
    fprintf(stderr, "ravel unravel: give either an archive/directory or live options, not both\n");
    return 2;
  }
  if (!input && !g.coord_host && !g.queue_host && g.ntargets == 0) {
    fprintf(stderr, "ravel unravel: nothing to look at: no coord, no queue, no --target\n");
    return 2;
  }
  rv_thread_adopt("main", "unravel");
  char why[512] = "";
  char tmp[] = "/tmp/ravel-unravel-XXXXXX";
  bool made_tmp = false;
  char *dir = NULL;
  int status = 2;
  int64_t t0 = rv_now_ns();
  if (input && is_dir(input)) {
    dir = strdup(input);
  } else if (input) {
    if (!mkdtemp(tmp)) {
      fprintf(stderr, "ravel unravel: cannot create a temporary directory\n");
      return 2;
    }
    made_tmp = true;
    if (rv_grab_extract(input, tmp, &dir, why, sizeof why) != RV_OK) {
      fprintf(stderr, "ravel unravel: cannot read %s: %s\n", input, why);
      goto out;
    }
  } else {
    if (!mkdtemp(tmp)) {
      fprintf(stderr, "ravel unravel: cannot create a temporary directory\n");
      return 2;
    }
    made_tmp = true;
    if (asprintf(&dir, "%s/live", tmp) < 0) {
      dir = NULL;
      goto out;
    }
    rv_grab_result res = {0};
    if (rv_grab_collect(&g, dir, &res, why, sizeof why) != RV_OK) {
      fprintf(stderr, "ravel unravel: could not collect: %s\n", why);
      goto out;
    }
    if (res.files == 0) {
      fprintf(stderr, "ravel unravel: could not collect: nothing answered (%zu failures)\n",
              res.failures);
      goto out;
    }
  }
  json_t *result = rv_unravel_dir(dir, &uo, why, sizeof why);
  if (!result) {
    fprintf(stderr, "ravel unravel: %s\n", why);
    goto out;
  }
  size_t first_cycles = json_array_size(json_object_get(result, "cycles"));
  bool confirmed = false;
  if (!input && confirm_ms > 0 && first_cycles > 0) {
    /* A deadlock stands; a cycle joined from waits caught in passing does not.  Capture
     * again and keep only what stood across both (rv_unravel_opts.confirm_dir). */
    char *again_dir = NULL;
    json_t *again = NULL;
    if (asprintf(&again_dir, "%s/again", tmp) < 0)
      again_dir = NULL;
    else
      again = confirm(&g, again_dir, dir, confirm_ms, &uo);
    if (again) {
      confirmed = true;
      json_decref(result);
      result = again;
      free(dir);
      dir = again_dir; /* the report reads the capture the result describes */
    } else {
      free(again_dir);
    }
  }
  json_object_set_new(json_object_get(result, "stats"), "total_ms",
                      json_integer((rv_now_ns() - t0) / RV_NS_PER_MS));
  json_object_set_new(result, "source", json_string(input ? input : "live"));
  status = json_is_true(json_object_get(result, "healthy")) ? 0 : 1;
  if (report) {
    json_t *model = rv_unravel_report_model(dir, result);
    char rwhy[512] = "";
    if (rv_report_write(report, model, rwhy, sizeof rwhy) != RV_OK) {
      fprintf(stderr, "ravel unravel: cannot write the report %s: %s\n", report, rwhy);
      status = 2;
    }
    json_decref(model);
  }
  if (json) {
    char *s = json_dumps(result, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (s)
      printf("%s\n", s);
    free(s);
  } else {
    fputs(json_string_value(json_object_get(result, "text")), stdout);
    const json_t *st = json_object_get(result, "stats");
    printf("(analysed %lld threads of %lld process(es) in %lld ms, %lld ms in all)\n",
           (long long)json_integer_value(json_object_get(st, "threads")),
           (long long)json_integer_value(json_object_get(st, "processes")),
           (long long)json_integer_value(json_object_get(st, "analysis_ms")),
           (long long)json_integer_value(json_object_get(st, "total_ms")));
    if (confirmed) {
      size_t n = json_array_size(json_object_get(result, "cycles"));
      if (n)
        printf("(%s stood across two captures %lld ms apart)\n",
               n == 1 ? "the deadlock" : "the deadlocks", (long long)confirm_ms);
      if (n < first_cycles)
        printf("(the first capture showed %zu more cycle(s) that a second capture %lld ms later "
               "did not confirm: waits caught in passing)\n",
               first_cycles - n, (long long)confirm_ms);
    }
    if (report && status != 2)
      printf("report: %s\n", report);
  }
  json_decref(result);
out:
  if (made_tmp && rv_grab_rmtree(tmp) != RV_OK)
    fprintf(stderr, "ravel unravel: could not remove %s\n", tmp);
  free(dir);
  fflush(stdout);
  return status;
}
