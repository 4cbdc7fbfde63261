/* `ravel coord`: run the coordination server. */
#include "cli/cli.h"

#include "server/coord.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: ravel coord [OPTIONS]\n\n"
          "Run coord: sessions, distributed locks with fencing tokens, and layered service\n"
          "config, spoken over RESP (redis-cli -p 7400 works). Protocol: docs/coord.md.\n\n"
          "options:\n"
          "  --host ADDR          address to bind (default 127.0.0.1)\n"
          "  --port N             RESP port (default %d)\n"
          "  --admin-port N       admin HTTP port: /metrics /debug /healthz (default %d)\n"
          "  --data DIR           data directory (default %s)\n"
          "  --lock-delay MS      default lock-delay after a holder's session expires (default 0)\n"
          "  --sync-full          SQLite synchronous=FULL: config survives power loss, slower writes\n"
          "  --log-level LEVEL    debug, info, warn, error (default info)\n"
          "  -h, --help           show this help\n",
          RV_COORD_DEFAULT_PORT, RV_COORD_DEFAULT_ADMIN_PORT, RV_COORD_DEFAULT_DATA);
}

int cmd_coord(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, 0, 'H'},       {"port", required_argument, 0, 'p'},
      {"admin-port", required_argument, 0, 'a'}, {"data", required_argument, 0, 'd'},
      {"lock-delay", required_argument, 0, 'l'}, {"sync-full", no_argument, 0, 'f'},
      {"log-level", required_argument, 0, 'L'},  {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  rv_coord_opts o = {0};
  enum rv_log_level level = RV_LOG_INFO;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'H':
      o.host = optarg;
      break;
    case 'p':
      o.port = (uint16_t)cli_int_opt("coord", "--port", optarg, 1, 65535);
      break;
    case 'a':
      o.admin_port = (uint16_t)cli_int_opt("coord", "--admin-port", optarg, 1, 65535);
      break;
    case 'd':
      o.data_dir = optarg;
      break;
    case 'l':
      o.lock_delay_ns = cli_int_opt("coord", "--lock-delay", optarg, 0, 60000) * RV_NS_PER_MS;
      break;
    case 'f':
      o.config_sync_full = true;
      break;
    case 'L':
      if (rv_log_level_parse(optarg, &level) != RV_OK) {
        fprintf(stderr, "ravel coord: --log-level %s is invalid: use debug, info, warn or error\n",
                optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ravel coord: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  rv_thread_adopt("main", "coord");
  o.log = rv_log_new(2, level, "coord");
  rv_coord *c;
  char why[512];
  int rc = rv_coord_start(&c, &o, why, sizeof why);
  if (rc != RV_OK) {
    fprintf(stderr, "ravel coord: %s\n", why);
    rv_log_free(o.log);
    return 1;
  }
  printf("coord: RESP on %s:%u, admin on http://%s:%u/ (data %s)\n", o.host ? o.host : "127.0.0.1",
         rv_coord_port(c), o.host ? o.host : "127.0.0.1", rv_coord_admin_port(c),
         o.data_dir ? o.data_dir : RV_COORD_DEFAULT_DATA);
  fflush(stdout);
  rc = rv_coord_run(c);
  rv_log_info(o.log, "coord stopped");
  rv_coord_free(c);
  rv_log_free(o.log);
  return rc == RV_OK ? 0 : 1;
}
