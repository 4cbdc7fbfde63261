/* `ravel queue`: run the NSQ-compatible, crash-durable queue server. */
#include "cli/cli.h"

#include "server/queue.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel queue [OPTIONS]\n\n"
          "Run the event queue: NSQ's TCP protocol V2 and HTTP API (nsqjs, go-nsq, pynsq and\n"
          "NSQ's tools work), every message durable before OK. Reference: docs/queue.md.\n\n"
          "options:\n"
          "  --host ADDR              address to bind (default 127.0.0.1)\n"
          "  --tcp-port N             NSQ TCP port (default %d)\n"
          "  --http-port N            HTTP API, /metrics and /debug port (default %d)\n"
          "  --data DIR               data directory (default %s)\n"
          "  --sync MODE              always: OK after fdatasync (group commit, default);\n"
          "                           none: OK after write(2) (kill -9 safe, not power-loss safe)\n"
          "  --msg-timeout MS         default message timeout (default 60000; 1000..max)\n"
          "  --max-msg-timeout MS     largest timeout a client may ask for (default 900000)\n"
          "  --max-req-timeout MS     largest REQ delay / DPUB defer (default 3600000)\n"
          "  --max-msg-size BYTES     largest message (default 1048576)\n"
          "  --max-body-size BYTES    largest MPUB body (default 5242880)\n"
          "  --max-rdy-count N        largest RDY (default 2500)\n"
          "  --no-extensions          refuse ravel's timeout_notify and hold_slots\n"
          "  --log-level LEVEL        debug, info, warn, error (default info)\n"
          "  -h, --help               show this help\n",
          RV_QSRV_DEFAULT_TCP_PORT, RV_QSRV_DEFAULT_HTTP_PORT, RV_QSRV_DEFAULT_DATA);
}

static int64_t int_opt(const char *opt, const char *value, int64_t lo, int64_t hi) {
  return cli_int_opt("queue", opt, value, lo, hi);
}

int cmd_queue(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, 0, 'H'},        {"tcp-port", required_argument, 0, 't'},
      {"http-port", required_argument, 0, 'w'},   {"data", required_argument, 0, 'd'},
      {"sync", required_argument, 0, 's'},        {"msg-timeout", required_argument, 0, 'm'},
      {"max-msg-timeout", required_argument, 0, 'M'}, {"max-req-timeout", required_argument, 0, 'r'},
      {"max-msg-size", required_argument, 0, 'z'}, {"max-body-size", required_argument, 0, 'b'},
      {"max-rdy-count", required_argument, 0, 'R'}, {"no-extensions", no_argument, 0, 'x'},
      {"log-level", required_argument, 0, 'L'},   {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  rv_qsrv_opts o = {0};
  enum rv_log_level level = RV_LOG_INFO;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'H': o.host = optarg; break;
    case 't': o.tcp_port = (uint16_t)int_opt("--tcp-port", optarg, 1, 65535); break;
    case 'w': o.http_port = (uint16_t)int_opt("--http-port", optarg, 1, 65535); break;
    case 'd': o.data_dir = optarg; break;
    case 's':
      if (strcmp(optarg, "none") == 0)
        o.sync_none = true;
      else if (strcmp(optarg, "always") != 0) {
        fprintf(stderr, "ravel queue: --sync %s is invalid: use always or none\n", optarg);
        return 2;
      }
      break;
    case 'm': o.msg_timeout_ms = int_opt("--msg-timeout", optarg, 1000, 15 * 60 * 1000); break;
    case 'M': o.max_msg_timeout_ms = int_opt("--max-msg-timeout", optarg, 1000, 24 * 3600 * 1000LL); break;
    case 'r': o.max_req_timeout_ms = int_opt("--max-req-timeout", optarg, 0, 7 * 24 * 3600 * 1000LL); break;
    case 'z': o.max_msg_size = int_opt("--max-msg-size", optarg, 1, 16 << 20); break;
    case 'b': o.max_body_size = int_opt("--max-body-size", optarg, 1, 64 << 20); break;
    case 'R': o.max_rdy_count = int_opt("--max-rdy-count", optarg, 1, 1000000); break;
    case 'x': o.no_extensions = true; break;
    case 'L':
      if (rv_log_level_parse(optarg, &level) != RV_OK) {
        fprintf(stderr, "ravel queue: --log-level %s is invalid: use debug, info, warn or error\n",
                optarg);
        return 2;
      }
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ravel queue: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (o.msg_timeout_ms && o.max_msg_timeout_ms && o.msg_timeout_ms > o.max_msg_timeout_ms) {
    fprintf(stderr, "ravel queue: --msg-timeout %lld exceeds --max-msg-timeout %lld\n",
            (long long)o.msg_timeout_ms, (long long)o.max_msg_timeout_ms);
    return 2;
  }
  rv_thread_adopt("main", "queue");
  o.log = rv_log_new(2, level, "queue");
  rv_qsrv *s;
  char why[512];
  int rc = rv_qsrv_start(&s, &o, why, sizeof why);
  if (rc != RV_OK) {
    fprintf(stderr, "ravel queue: %s\n", why);
    rv_log_free(o.log);
    return 1;
  }
  const char *host = o.host ? o.host : "127.0.0.1";
  printf("queue: NSQ TCP on %s:%u, HTTP on http://%s:%u/ (data %s, sync %s)\n", host,
         rv_qsrv_tcp_port(s), host, rv_qsrv_http_port(s), o.data_dir ? o.data_dir : RV_QSRV_DEFAULT_DATA,
         o.sync_none ? "none" : "always");
  fflush(stdout);
  rc = rv_qsrv_run(s);
  rv_log_info(o.log, "queue stopped");
  rv_qsrv_free(s);
  rv_log_free(o.log);
  return rc == RV_OK ? 0 : 1;
}
