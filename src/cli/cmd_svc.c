/* `ravel svc --replica N`: one replica of the reference service from the incident. */
#include "cli/cli.h"

#include "svc/svc.h"

#include "rt/rt.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel svc --replica N [OPTIONS]\n\n"
          "Run one replica of the incident's service (../shared/INCIDENT.md): per event\n"
          "\"RESOURCE ITEM ITEM ...\" take the distributed lock of RESOURCE, then for each item\n"
          "obtain the upstream client from the config cache (read lock on \"client-cache\"),\n"
          "make a simulated upstream call (a sleep of --upstream-latency under the handler's\n"
          "context), release the client; release the lock; FIN. Admin HTTP: /metrics\n"
          "/debug/threads /debug/locks /healthz. SIGINT or SIGTERM stops it.\n\n"
          "options:\n"
          "  --replica N            this replica's number (required, 1..9999)\n"
          "  --service NAME         service name (default %s)\n"
          "  --coord HOST:PORT      coord (default 127.0.0.1:7400)\n"
          "  --queue HOST:PORT      queue NSQ TCP (default 127.0.0.1:4150)\n"
          "  --admin-port P         admin HTTP port (default 0: a free port)\n"
          "  --topic T              topic (default %s)\n"
          "  --channel C            channel (default %s)\n"
          "  --max-in-flight N      messages in flight (RDY) (default %d)\n"
          "  --msg-timeout MS       message timeout asked of the queue (default %d)\n"
          "  --upstream-latency MS  simulated upstream call per item (default %d)\n"
          "  --snapshot-dir DIR     every --snapshot-every S, write this replica's evidence\n"
          "                         (dumps, locks, metrics, history) to DIR/SERVICE-REPLICA/\n"
          "                         snap-UNIXMS/, keeping the last --snapshot-keep N: what a\n"
          "                         crash or an OOM kill leaves behind (default: off)\n"
          "  --snapshot-every S     seconds between snapshots (default %d)\n"
          "  --snapshot-keep N      snapshots kept (default %d)\n"
          "  --exit-with-parent     stop when the process that started this one ends (ravel demo\n"
          "                         uses it, so that no replica outlives a demo that was killed)\n"
          "  --incident             every bug below on\n"
          "  --bug NAME             turn one bug on\n"
          "  --fix NAME             turn one fix on (bug off); flags apply in order\n"
          "  -h, --help             show this help\n\n"
          "NAMEs (default: every fix on):\n"
          "  release  fix: release the client at the end of each iteration;\n"
          "           bug: at function exit, like Go's defer in a loop\n"
          "  rebuild  fix: rebuild the client only on an effective config change;\n"
          "           bug: on every write to the platform/service layers (raw watch)\n"
          "  cancel   fix: cancel the handler's context on the queue's timeout notification;\n"
          "           bug: never cancel\n"
          "  held     fix: a timed-out message keeps its in-flight slot; bug: frees it\n"
          "  detect   fix: recursive read detection \"warn\"; bug: \"off\"\n",
          RV_SVC_DEFAULT_SERVICE, RV_SVC_DEFAULT_TOPIC, RV_SVC_DEFAULT_CHANNEL,
          RV_SVC_DEFAULT_MAX_IN_FLIGHT, RV_SVC_DEFAULT_MSG_TIMEOUT_MS,
          RV_SVC_DEFAULT_UPSTREAM_LATENCY_MS, RV_SVC_SNAPSHOT_EVERY_MS / 1000, RV_SVC_SNAPSHOT_KEEP);
}

/* "HOST:PORT" (or ":PORT", or "PORT") into host (static storage: the option string) and port. */
static void parse_hostport(const char *opt, char *value, const char **host, uint16_t *port) {
  char *colon = strrchr(value, ':');
  const char *p = value;
  if (colon) {
    *colon = 0;
    p = colon + 1;
    if (*value)
      *host = value;
  }
  *port = (uint16_t)cli_int_opt("svc", opt, p, 1, 65535);
}

static void set_bug(const char *opt, const char *name, bool *bugs, bool on) {
  int b = rv_svc_bug_parse(name);
  if (b < 0) {
    fprintf(stderr, "ravel svc: %s %s is invalid: use release, rebuild, cancel, held or detect\n",
            opt, name);
    exit(2);
  }
  bugs[b] = on;
}

int cmd_svc(int argc, char **argv) {
  static const struct option longopts[] = {
      {"replica", required_argument, 0, 'r'},
      {"service", required_argument, 0, 's'},
      {"coord", required_argument, 0, 'c'},
      {"queue", required_argument, 0, 'q'},
      {"admin-port", required_argument, 0, 'a'},
      {"topic", required_argument, 0, 't'},
      {"channel", required_argument, 0, 'C'},
      {"max-in-flight", required_argument, 0, 'm'},
      {"msg-timeout", required_argument, 0, 'T'},
      {"upstream-latency", required_argument, 0, 'u'},
      {"snapshot-dir", required_argument, 0, 'S'},
      {"snapshot-every", required_argument, 0, 'E'},
      {"snapshot-keep", required_argument, 0, 'K'},
      {"exit-with-parent", no_argument, 0, 'P'},
      {"incident", no_argument, 0, 'I'},
      {"bug", required_argument, 0, 'b'},
      {"fix", required_argument, 0, 'f'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  rv_svc_opts o = {.upstream_latency_ms = RV_SVC_DEFAULT_UPSTREAM_LATENCY_MS};
  bool exit_with_parent = false;
  pid_t parent = getppid();
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'r': o.replica = (int)cli_int_opt("svc", "--replica", optarg, 1, 9999); break;
    case 's': o.service = optarg; break;
    case 'c': parse_hostport("--coord", optarg, &o.coord_host, &o.coord_port); break;
    case 'q': parse_hostport("--queue", optarg, &o.queue_host, &o.queue_port); break;
    case 'a': o.admin_port = (uint16_t)cli_int_opt("svc", "--admin-port", optarg, 0, 65535); break;
    case 't': o.topic = optarg; break;
    case 'C': o.channel = optarg; break;
    case 'm': o.max_in_flight = cli_int_opt("svc", "--max-in-flight", optarg, 1, 100000); break;
    case 'T': o.msg_timeout_ms = cli_int_opt("svc", "--msg-timeout", optarg, 1, 15 * 60 * 1000); break;
    case 'u':
      o.upstream_latency_ms = cli_int_opt("svc", "--upstream-latency", optarg, 0, 600000);
      break;
    case 'S': o.snapshot_dir = optarg; break;
    case 'E':
      o.snapshot_every_ms = cli_int_opt("svc", "--snapshot-every", optarg, 1, 86400) * 1000;
      break;
    case 'K': o.snapshot_keep = (int)cli_int_opt("svc", "--snapshot-keep", optarg, 1, 1000); break;
    case 'P': exit_with_parent = true; break;
    case 'I':
      for (int i = 0; i < RV_SVC_BUG_COUNT; i++)
        o.bugs[i] = true;
      break;
    case 'b': set_bug("--bug", optarg, o.bugs, true); break;
    case 'f': set_bug("--fix", optarg, o.bugs, false); break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ravel svc: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (o.replica < 1) {
    fprintf(stderr, "ravel svc: --replica N is required\n");
    usage(stderr);
    return 2;
  }
  /* SIGINT/SIGTERM are blocked before any thread starts (threads inherit the
   * mask) and taken by the main thread below with sigtimedwait. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigprocmask(SIG_BLOCK, &sigs, NULL);

  rv_thread_adopt("main", "svc");
  rv_svc *s;
  char why[512];
  int rc = rv_svc_start(&s, &o, 10000, why, sizeof why);
  if (rc != RV_OK) {
    fprintf(stderr, "ravel svc: %s\n", why);
    return 1;
  }
  printf("svc: replica %d admin http://127.0.0.1:%u/ service %s\n", o.replica,
         rv_svc_admin_port(s), o.service ? o.service : RV_SVC_DEFAULT_SERVICE);
  fflush(stdout);
  for (;;) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    if (sigtimedwait(&sigs, NULL, &ts) > 0)
      break;
    if (exit_with_parent && getppid() != parent) {
      /* Orphaned (the parent was killed): a stuck replica cannot stop cleanly, and
       * nobody is left to stop it, so end now. */
      fprintf(stderr, "ravel svc: replica %d: the parent process %d is gone; exiting\n", o.replica,
              (int)parent);
      _exit(3);
    }
    rv_svc_tick(s);
  }
  rc = rv_svc_stop(s);
  return rc == RV_OK ? 0 : 3;
}
