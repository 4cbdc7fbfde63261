/*
 * `ravel up`: coord and queue in one process, on one event loop (the
 * embedded default for a laptop or a demo).  Each keeps its own ports, data
 * directory, admin endpoint and metrics.
 */
#include "cli/cli.h"

#include "server/coord.h"
#include "server/queue.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UP_DEFAULT_DATA "./ravel-data"

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel up [OPTIONS]\n\n"
          "Run coord and queue together in one process (data in DIR/coord and DIR/queue).\n"
          "SIGINT or SIGTERM stops both cleanly.\n\n"
          "options:\n"
          "  --host ADDR              address to bind (default 127.0.0.1)\n"
          "  --data DIR               data directory (default %s)\n"
          "  --coord-port N           coord RESP port (default %d)\n"
          "  --coord-admin-port N     coord admin HTTP port (default %d)\n"
          "  --tcp-port N             queue NSQ TCP port (default %d)\n"
          "  --http-port N            queue HTTP port (default %d)\n"
          "  --msg-timeout MS         queue's default message timeout (default 60000)\n"
          "  --sync MODE              queue durability: always (default) or none\n"
          "  --log-level LEVEL        debug, info, warn, error (default info)\n"
          "  -h, --help               show this help\n",
          UP_DEFAULT_DATA, RV_COORD_DEFAULT_PORT, RV_COORD_DEFAULT_ADMIN_PORT,
          RV_QSRV_DEFAULT_TCP_PORT, RV_QSRV_DEFAULT_HTTP_PORT);
}

int cmd_up(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, 0, 'H'},        {"data", required_argument, 0, 'd'},
      {"coord-port", required_argument, 0, 'c'},  {"coord-admin-port", required_argument, 0, 'a'},
      {"tcp-port", required_argument, 0, 't'},    {"http-port", required_argument, 0, 'w'},
      {"msg-timeout", required_argument, 0, 'm'}, {"sync", required_argument, 0, 's'},
      {"log-level", required_argument, 0, 'L'},   {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  rv_coord_opts co = {0};
  rv_qsrv_opts qo = {0};
  const char *data = UP_DEFAULT_DATA;
  enum rv_log_level level = RV_LOG_INFO;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'H': co.host = qo.host = optarg; break;
    case 'd': data = optarg; break;
    case 'c': co.port = (uint16_t)cli_int_opt("up", "--coord-port", optarg, 1, 65535); break;
    case 'a': co.admin_port = (uint16_t)cli_int_opt("up", "--coord-admin-port", optarg, 1, 65535); break;
    case 't': qo.tcp_port = (uint16_t)cli_int_opt("up", "--tcp-port", optarg, 1, 65535); break;
    case 'w': qo.http_port = (uint16_t)cli_int_opt("up", "--http-port", optarg, 1, 65535); break;
    case 'm': qo.msg_timeout_ms = cli_int_opt("up", "--msg-timeout", optarg, 1000, 15 * 60 * 1000); break;
    case 's':
      if (strcmp(optarg, "none") == 0)
        qo.sync_none = true;
      else if (strcmp(optarg, "always") != 0) {
        fprintf(stderr, "ravel up: --sync %s is invalid: use always or none\n", optarg);
        return 2;
      }
      break;
    case 'L':
      if (rv_log_level_parse(optarg, &level) != RV_OK) {
        fprintf(stderr, "ravel up: --log-level %s is invalid: use debug, info, warn or error\n",
                optarg);
        return 2;
      }
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ravel up: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  rv_thread_adopt("main", "up");
  rv_log *clog = rv_log_new(2, level, "coord"), *qlog = rv_log_new(2, level, "queue");
  char cdir[600], qdir[600], why[512];
  snprintf(cdir, sizeof cdir, "%s/coord", data);
  snprintf(qdir, sizeof qdir, "%s/queue", data);
  rv_loop *loop;
  int rc = rv_loop_new(&loop, NULL);
  if (rc != RV_OK) {
    fprintf(stderr, "ravel up: cannot create the event loop: %s\n", rv_strerror(rc));
    return 1;
  }
  co.loop = qo.loop = loop;
  co.data_dir = cdir;
  qo.data_dir = qdir;
  co.log = clog;
  qo.log = qlog;
  rv_coord *c = NULL;
  rv_qsrv *q = NULL;
  if ((rc = rv_coord_start(&c, &co, why, sizeof why)) != RV_OK) {
    fprintf(stderr, "ravel up: coord: %s\n", why);
  } else if ((rc = rv_qsrv_start(&q, &qo, why, sizeof why)) != RV_OK) {
    fprintf(stderr, "ravel up: queue: %s\n", why);
  } else {
    const char *host = co.host ? co.host : "127.0.0.1";
    printf("ravel up: coord RESP %s:%u (admin http://%s:%u/), queue NSQ TCP %s:%u (HTTP http://%s:%u/), "
           "data %s\n",
           host, rv_coord_port(c), host, rv_coord_admin_port(c), host, rv_qsrv_tcp_port(q), host,
           rv_qsrv_http_port(q), data);
    fflush(stdout);
    rv_loop_stop_on_signals(loop);
    rc = rv_loop_run(loop);
  }
  rv_qsrv_free(q);
  rv_coord_free(c);
  rv_loop_free(loop);
  rv_log_info(clog, "ravel up stopped");
  rv_log_free(clog);
  rv_log_free(qlog);
  return rc == RV_OK ? 0 : 1;
}
