/*
 * `ravel grab`: capture every process's evidence (thread dumps, lock tables,
 * metrics, coord's sessions, locks and config, the queue's stats, /proc and
 * outside stacks for what does not answer) into one tar.gz, within a bound,
 * before anything is restarted.  docs/grab.md is the reference.
 *
 * Exit status: 0 everything captured, 1 parts failed (the manifest says
 * which), 2 nothing captured or bad usage; with --then, CMD's status.
 */
#define _GNU_SOURCE
#include "cli/cli.h"

#include "diag/grab.h"
#include "rt/rt.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel grab [--coord HOST:PORT] [--coord-admin PORT] [--queue HOST:HTTPPORT]\n"
          "                  [--target URL|pid:N]... [--out FILE.tar.gz] [--dir DIR] [--bound-ms N]\n"
          "                  [--no-outside-stacks] [--then 'COMMAND'] [--quiet]\n\n"
          "Capture the evidence of every process of a ravel system into one archive, within a\n"
          "bound, before it is restarted: each coord session's replica (thread dump, lock table,\n"
          "metrics, history), coord's sessions, locks, config and audit, the queue's stats, and\n"
          "for a process that does not answer, its stacks taken from outside (gdb or eu-stack)\n"
          "and /proc data.  See docs/grab.md.\n\n"
          "  --coord HOST:PORT     coord's RESP address, for discovery (default 127.0.0.1:7400;\n"
          "                        \"none\": no coord)\n"
          "  --coord-admin PORT    coord's admin HTTP port on the same host (default 7401; 0: none)\n"
          "  --queue HOST:PORT     the queue's HTTP address (default 127.0.0.1:4151; \"none\": no queue)\n"
          "  --target URL|pid:N    also capture this admin endpoint (http://HOST:PORT/) or local\n"
          "                        process (stacks and /proc only); repeatable, at most %d\n"
          "  --out FILE.tar.gz     the archive (default ./ravel-grab-YYYYmmddTHHMMSSZ.tar.gz)\n"
          "  --dir DIR             collect into DIR and keep it; with --dir, an archive is written\n"
          "                        only if --out is given too\n"
          "  --bound-ms N          the whole collection's bound (default %d; 500..600000)\n"
          "  --no-outside-stacks   do not attach gdb/eu-stack to processes that do not answer\n"
          "  --then 'COMMAND'      after the capture, whatever its result, run COMMAND with\n"
          "                        /bin/sh -c and exit with its status (a preStop hook's restart)\n"
          "  --quiet               no summary\n"
          "  -h, --help            show this help\n\n"
          "Exit status: 0 everything captured, 1 parts failed (manifest.json says which),\n"
          "2 nothing captured or bad usage; with --then, COMMAND's status.\n",
          RV_GRAB_TARGETS_MAX, RV_GRAB_DEFAULT_BOUND_MS);
}

static bool split_hostport(const char *s, char *host, size_t hcap, uint16_t *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || (size_t)(colon - s) >= hcap)
    return false;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || p < 1 || p > 65535)
    return false;
  snprintf(host, hcap, "%.*s", (int)(colon - s), s);
  *port = (uint16_t)p;
  return true;
}

/* Run cmd with /bin/sh -c; its exit status (128 + signal if killed), or 127 if it cannot start. */
static int run_then(const char *cmd) {
  fflush(stdout);
  fflush(stderr);
  const char *argv[] = {"sh", "-c", cmd, NULL};
  pid_t pid;
  if (posix_spawn(&pid, "/bin/sh", NULL, NULL, (char *const *)argv, environ) != 0) {
    fprintf(stderr, "ravel grab: cannot run /bin/sh for --then\n");
    return 127;
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR)
      return 127;
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* The capture itself; returns 0, 1 or 2 as documented. */
static int grab_main(rv_grab_opts *o, const char *out, const char *keep_dir, bool quiet) {
  char stamp[32], defout[64];
  time_t now = (time_t)(rv_wall_ns() / RV_NS_PER_S);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  snprintf(defout, sizeof defout, "./ravel-grab-%s.tar.gz", stamp);
  if (!out && !keep_dir)
    out = defout;

  char dir[PATH_MAX], tmpdir[PATH_MAX] = "";
  if (keep_dir) {
    snprintf(dir, sizeof dir, "%s", keep_dir);
  } else {
    /* A temp parent; the collection dir inside it is named after the archive. */
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/ravel-grab.XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
      fprintf(stderr, "ravel grab: cannot create a temp dir in %s: %s\n", t && t[0] ? t : "/tmp",
              strerror(errno));
      return 2;
    }
    const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    char name[256];
    snprintf(name, sizeof name, "%s", base);
    size_t nl = strlen(name);
    if (nl > 7 && !strcmp(name + nl - 7, ".tar.gz"))
      name[nl - 7] = 0;
    else if (nl > 4 && !strcmp(name + nl - 4, ".tgz"))
      name[nl - 4] = 0;
    if (!name[0] || name[0] == '.')
      snprintf(name, sizeof name, "ravel-grab-%s", stamp);
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
  }
  char why[512] = "";
  rv_grab_result res;
  int rc = rv_grab_collect(o, dir, &res, why, sizeof why);
  int status;
  if (rc != RV_OK) {
    fprintf(stderr, "ravel grab: %s\n", why);
    status = 2;
  } else {
    status = res.files == 0 ? 2 : res.failures > 0 ? 1 : 0;
    bool archived = false;
    if (out) {
      if (rv_grab_archive(dir, out, why, sizeof why) != RV_OK) {
        fprintf(stderr, "ravel grab: %s\n", why);
        status = keep_dir && res.files > 0 ? 1 : 2;
      } else {
        archived = true;
      }
    }
    if (!quiet) {
      printf("ravel grab: %zu processes, %zu answered their admin endpoint, %zu failures%s\n",
             res.processes, res.answered, res.failures,
             res.failures ? " (see manifest.json)" : "");
      if (archived)
        printf("ravel grab: archive %s\n", out);
      if (keep_dir)
        printf("ravel grab: collection %s\n", dir);
      printf("ravel grab: %zu files in %lld ms (bound %lld ms)\n", res.files, (long long)res.elapsed_ms,
             (long long)o->bound_ms);
    }
    if (status == 2 && !quiet)
      printf("ravel grab: nothing could be captured\n");
  }
  if (tmpdir[0] && rv_grab_rmtree(tmpdir) != RV_OK)
    fprintf(stderr, "ravel grab: could not remove %s\n", tmpdir);
  return status;
}

int cmd_grab(int argc, char **argv) {
  static const struct option longopts[] = {{"coord", required_argument, 0, 'c'},
                                           {"coord-admin", required_argument, 0, 'a'},
                                           {"queue", required_argument, 0, 'q'},
                                           {"target", required_argument, 0, 't'},
                                           {"out", required_argument, 0, 'o'},
                                           {"dir", required_argument, 0, 'd'},
                                           {"bound-ms", required_argument, 0, 'b'},
                                           {"no-outside-stacks", no_argument, 0, 'S'},
                                           {"then", required_argument, 0, 'T'},
                                           {"quiet", no_argument, 0, 'Q'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  static char coord_host[256] = "127.0.0.1", queue_host[256] = "127.0.0.1";
  rv_grab_opts o = {.coord_host = coord_host, .coord_port = 7400, .coord_admin_port = 7401,
                    .queue_host = queue_host, .queue_http_port = 4151,
                    .bound_ms = RV_GRAB_DEFAULT_BOUND_MS, .outside_stacks = true};
  const char *out = NULL, *dir = NULL, *then = NULL;
  bool quiet = false;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      if (!strcmp(optarg, "none"))
        o.coord_host = NULL;
      else if (!split_hostport(optarg, coord_host, sizeof coord_host, &o.coord_port)) {
        fprintf(stderr, "ravel grab: --coord %s is invalid: use HOST:PORT or none\n", optarg);
        return 2;
      } else
        o.coord_host = coord_host;
      break;
    case 'a': o.coord_admin_port = (uint16_t)cli_int_opt("grab", "--coord-admin", optarg, 0, 65535); break;
    case 'q':
      if (!strcmp(optarg, "none"))
        o.queue_host = NULL;
      else if (!split_hostport(optarg, queue_host, sizeof queue_host, &o.queue_http_port)) {
        fprintf(stderr, "ravel grab: --queue %s is invalid: use HOST:PORT or none\n", optarg);
        return 2;
      } else
        o.queue_host = queue_host;
      break;
    case 't': {
      bool pid = !strncmp(optarg, "pid:", 4), url = !strncmp(optarg, "http://", 7);
      char *end = NULL;
      long n = pid ? strtol(optarg + 4, &end, 10) : 0;
      if ((!pid && !url) || (pid && (*end || n < 1 || n > INT32_MAX))) {
        fprintf(stderr, "ravel grab: --target %s is invalid: use http://HOST:PORT/ or pid:N\n", optarg);
        return 2;
      }
      if (o.ntargets == RV_GRAB_TARGETS_MAX) {
        fprintf(stderr, "ravel grab: at most %d --target options\n", RV_GRAB_TARGETS_MAX);
        return 2;
      }
      o.targets[o.ntargets++] = optarg;
      break;
    }
    case 'o': out = optarg; break;
    case 'd': dir = optarg; break;
    case 'b': o.bound_ms = cli_int_opt("grab", "--bound-ms", optarg, 500, 600000); break;
    case 'S': o.outside_stacks = false; break;
    case 'T': then = optarg; break;
    case 'Q': quiet = true; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ravel grab: unexpected argument %s\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (!o.coord_host)
    o.coord_admin_port = 0;
  if (!o.coord_host && !o.queue_host && o.ntargets == 0) {
    fprintf(stderr, "ravel grab: nothing to capture: no coord, no queue, no --target\n");
    return 2;
  }
  rv_thread_adopt("main", "grab");
  int status = grab_main(&o, out, dir, quiet);
  if (then) {
    int st = run_then(then);
    if (!quiet)
      printf("ravel grab: --then exited %d\n", st);
    return st;
  }
  return status;
}
