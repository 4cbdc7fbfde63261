/*
 * Bounded fetches for `ravel grab` (and `ravel unravel` on a live system):
 * an HTTP GET of an admin route, a RESP command to coord, the conversion of
 * a RESP reply to JSON, and running an outside tool with a kill on timeout.
 * Every call takes an absolute monotonic deadline (rv_now_ns() base) and
 * never blocks past it.
 */
#ifndef RAVEL_DIAG_COLLECT_H
#define RAVEL_DIAG_COLLECT_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest HTTP answer or RESP reply kept; larger ones fail with RV_ELIMIT. */
#define RV_DIAG_FETCH_MAX_BYTES (32u << 20)

/* Split "http://host:port/..." (or "host:port") into host and port. */
bool rv_diag_parse_url(const char *url, char *host, size_t hostcap, uint16_t *port);

/*
 * GET path from host:port (HTTP/1.0) before deadline_ns.  RV_OK with *status
 * set (any status) and *body (malloc'd, NUL-terminated, *len bytes) on an
 * answer; an rv_err otherwise (RV_EDEADLINE: no full answer in time).
 */
int rv_diag_http_get(const char *host, uint16_t port, const char *path, int64_t deadline_ns,
                     int *status, char **body, size_t *len);

/*
 * A connection to coord for several commands, each bounded.  rv_diag_resp_call
 * sends argv (RESP array) and reads one reply before deadline_ns; NULL and
 * *err (an rv_err) on failure.  A reply of type REDIS_REPLY_ERROR is returned
 * as a reply.  Free replies with freeReplyObject.
 */
typedef struct rv_diag_resp rv_diag_resp;
int rv_diag_resp_open(rv_diag_resp **out, const char *host, uint16_t port, int64_t deadline_ns);
redisReply *rv_diag_resp_call(rv_diag_resp *r, int argc, const char **argv, int64_t deadline_ns,
                              int *err);
void rv_diag_resp_close(rv_diag_resp *r);

/*
 * RESP -> JSON.  Coord answers in RESP2, where a map is a flat array
 * [key, value, key, value, ...]; nothing in the bytes says so, so the caller
 * states the reply's shape (docs/coord.md says which replies are maps):
 *
 *   RV_RESP_MAP           the reply is one map (SESSION.INFO, LOCK.INFO, CFG.GET)
 *   RV_RESP_LIST_OF_MAPS  a list of maps (SESSION.LIST, LOCK.LIST, CFG.DUMP,
 *                         CFG.TARGETS, CFG.AUDIT)
 *   RV_RESP_PLAIN         arrays stay arrays (anything else)
 *
 * Inside a map, the values of the keys coord documents as lists of maps
 * ("held", "waiting", "waiters", "impacts", "events") are converted as
 * RV_RESP_LIST_OF_MAPS; every other array value as RV_RESP_PLAIN.  A reply
 * that does not have the stated shape (an odd length, a key that is not a
 * string) is converted as RV_RESP_PLAIN rather than guessed at.  Scalars:
 * integer -> number, bulk/simple string -> string (bytes that are not UTF-8
 * become U+FFFD), nil -> null, error -> {"error": "..."}.  Never NULL except
 * on allocation failure (or for a NULL reply).
 */
typedef enum rv_resp_shape {
  RV_RESP_PLAIN = 0,
  RV_RESP_MAP,
  RV_RESP_LIST_OF_MAPS,
} rv_resp_shape;
json_t *rv_resp_to_json(const redisReply *r, rv_resp_shape shape);

/* A JSON string from bytes, with invalid UTF-8 replaced by U+FFFD. */
json_t *rv_diag_json_bytes(const char *s, size_t len);

/*
 * Run argv[0] (searched in PATH) with stdout and stderr appended to out_path,
 * stdin from /dev/null.  Kill it (SIGKILL) if it has not ended by deadline_ns.
 * Returns RV_OK with *exit_status (the exit code, or 128 + signal) when it
 * ended by itself; RV_ETIMEDOUT if it was killed; RV_ENOTFOUND if it cannot
 * be started.
 */
int rv_diag_run_bounded(const char *const *argv, const char *out_path, int64_t deadline_ns,
                        int *exit_status);

#endif
