/*
 * nsq: the NSQ TCP protocol V2 codec, pure and sans-IO.
 *
 * Everything ravel's queue (and its client library, and its benchmark) needs
 * to speak NSQ's wire protocol, with nothing that touches a socket, a clock or
 * a thread: bytes in, typed values out, and typed values in, bytes out.
 *
 *   server side   rv_nsq_decoder     client bytes -> rv_nsq_cmd (validated as
 *                                    nsqd v1.3.0 validates, with its error
 *                                    codes, texts and fatal flags)
 *                 rv_nsq_enc_*       response / error / message frames
 *                 rv_nsq_identify_*  IDENTIFY JSON in, negotiated reply out
 *   client side   rv_nsq_enc_*       commands (PUB, MPUB, SUB, RDY, ...)
 *                 rv_nsq_frame_decoder  server bytes -> rv_nsq_frame
 *
 * Wire format (all integers big-endian):
 *   client -> server   "  V2" once, then text lines "CMD p1 p2\n"; IDENTIFY,
 *                      AUTH, PUB, MPUB and DPUB are followed by [int32 size]
 *                      [size bytes]; MPUB's body is [int32 n]([int32 len]
 *                      [len bytes])*n.
 *   server -> client   [int32 size][int32 frame type][size-4 bytes of data]
 *                      type 0 response, 1 error "E_CODE description",
 *                      2 message [int64 ts ns][uint16 attempts][16-byte id]
 *                      [body].
 *
 * ravel extensions (unknown to nsqd, go-nsq and nsqjs, which therefore keep
 * nsqd's behaviour; both are negotiated per connection in IDENTIFY and only
 * take effect when the client also set feature_negotiation, so that it can
 * read the server's answer in the IDENTIFY reply):
 *   - IDENTIFY "timeout_notify": true asks the server to tell this consumer
 *     when one of its in-flight messages times out, so that its client can
 *     cancel the handler.  The notice is frame type 3, RV_NSQ_FRAME_TIMEOUT,
 *     whose data is exactly the 16-byte message id.  It is sent only to
 *     clients whose IDENTIFY reply said "timeout_notify":true.
 *   - IDENTIFY "hold_slots": true asks that a message of this consumer that
 *     timed out keep occupying its in-flight (RDY) slot until the consumer
 *     FINs, REQs or otherwise releases that id, or disconnects.
 *   The IDENTIFY reply echoes each of these two keys only when the client
 *   asked for it (sent true), with the value the server granted.
 *   - FIN, REQ and TOUCH take an optional last argument, the attempts of the
 *     delivery being answered as the message frame gave it:
 *     "FIN <id> <attempts>", "REQ <id> <ms> <attempts>",
 *     "TOUCH <id> <attempts>".  An NSQ id names the message, not the
 *     delivery, so without it a late answer from a handler whose delivery
 *     timed out acts on a redelivery of the same id to the same consumer.
 *     With it the server acts only on that delivery.  The server always
 *     accepts it (1..65535, decimal; anything else is a fatal E_INVALID; an
 *     empty parameter counts as absent, as nsqd ignores it); a client sends
 *     it only to a server that granted timeout_notify or hold_slots (nsqd
 *     ignores extra parameters, but grants neither).
 *
 * Memory: every buffer is bounded by a named limit or an option (line length,
 * max_body_size_bytes, the rv_nsq_buf limit); a body size is checked from its
 * 4-byte header before a byte of the body is buffered.
 *
 * Errors: functions return 0 (or a count) on success and a negative rv_err
 * code from rt/rt.h otherwise (header-only use: this module links nothing
 * from rt).  Protocol errors additionally fill an rv_nsq_error with the NSQ
 * code, the exact frame text and whether nsqd would close the connection.
 */
#ifndef RAVEL_PROTO_NSQ_H
#define RAVEL_PROTO_NSQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- wire constants ------------------------------------------------------ */

#define RV_NSQ_MAGIC_V2 "  V2"
#define RV_NSQ_MAGIC_SIZE_BYTES 4
#define RV_NSQ_MSG_ID_SIZE_BYTES 16
/* [int32 size][int32 type] in front of every server frame. */
#define RV_NSQ_FRAME_HEADER_SIZE_BYTES 8
/* [int64 ts][uint16 attempts][16-byte id] in front of a message body. */
#define RV_NSQ_MSG_HEADER_SIZE_BYTES 26
/* nsqd reads command lines through a 16 KiB bufio.Reader; a longer line
 * (including its '\n') cannot be read. */
#define RV_NSQ_LINE_MAX_BYTES 16384
/* Topic and channel names: 1..64 bytes of [.a-zA-Z0-9_-], optionally ending
 * in "#ephemeral" (counted in the 64). */
#define RV_NSQ_NAME_MAX_BYTES 64
#define RV_NSQ_EPHEMERAL_SUFFIX "#ephemeral"

#define RV_NSQ_FRAME_RESPONSE 0
#define RV_NSQ_FRAME_ERROR 1
#define RV_NSQ_FRAME_MESSAGE 2
/* ravel-only: "your message <16-byte id> timed out"; see the top comment. */
#define RV_NSQ_FRAME_TIMEOUT 3

/* ---- nsqd v1.3.0 defaults and fixed bounds ------------------------------- */

#define RV_NSQ_DEFAULT_MAX_MSG_SIZE_BYTES (1024 * 1024)
#define RV_NSQ_DEFAULT_MAX_BODY_SIZE_BYTES (5 * 1024 * 1024)
#define RV_NSQ_DEFAULT_MAX_RDY_COUNT 2500
#define RV_NSQ_DEFAULT_MAX_REQ_TIMEOUT_MS (60 * 60 * 1000)
#define RV_NSQ_DEFAULT_MSG_TIMEOUT_MS (60 * 1000)
#define RV_NSQ_DEFAULT_MAX_MSG_TIMEOUT_MS (15 * 60 * 1000)
#define RV_NSQ_MIN_MSG_TIMEOUT_MS 1000
/* ClientTimeout (60 s) has no flag; the default heartbeat is half of it. */
#define RV_NSQ_CLIENT_TIMEOUT_MS (60 * 1000)
#define RV_NSQ_DEFAULT_HEARTBEAT_INTERVAL_MS (RV_NSQ_CLIENT_TIMEOUT_MS / 2)
#define RV_NSQ_MIN_HEARTBEAT_INTERVAL_MS 1000
#define RV_NSQ_DEFAULT_MAX_HEARTBEAT_INTERVAL_MS (60 * 1000)
#define RV_NSQ_DEFAULT_OUTPUT_BUFFER_SIZE_BYTES (16 * 1024)
#define RV_NSQ_MIN_OUTPUT_BUFFER_SIZE_BYTES 64
#define RV_NSQ_DEFAULT_MAX_OUTPUT_BUFFER_SIZE_BYTES (64 * 1024)
#define RV_NSQ_DEFAULT_OUTPUT_BUFFER_TIMEOUT_MS 250
#define RV_NSQ_DEFAULT_MIN_OUTPUT_BUFFER_TIMEOUT_MS 25
#define RV_NSQ_DEFAULT_MAX_OUTPUT_BUFFER_TIMEOUT_MS (30 * 1000)
#define RV_NSQ_DEFAULT_DEFLATE_LEVEL 6
#define RV_NSQ_DEFAULT_MAX_DEFLATE_LEVEL 6
#define RV_NSQ_MAX_SAMPLE_RATE_PCT 99
/* The nsqd version ravel reports in the IDENTIFY reply. */
#define RV_NSQ_COMPAT_VERSION "1.3.0"

/*
 * Server limits that the codec enforces or reports.  rv_nsq_opts_init fills
 * nsqd's defaults; a server overrides what its flags say.
 */
typedef struct rv_nsq_opts {
  int64_t max_msg_size_bytes;           /* PUB/DPUB body, each MPUB message */
  int64_t max_body_size_bytes;          /* MPUB, IDENTIFY, AUTH bodies */
  int64_t max_rdy_count;
  int64_t max_req_timeout_ms;           /* REQ clamp, DPUB range */
  int64_t msg_timeout_ms;               /* default per-client msg_timeout */
  int64_t max_msg_timeout_ms;
  int64_t heartbeat_interval_ms;        /* default per-client heartbeat */
  int64_t max_heartbeat_interval_ms;
  int64_t output_buffer_size_bytes;     /* default per-client */
  int64_t max_output_buffer_size_bytes;
  int64_t output_buffer_timeout_ms;     /* default per-client */
  int64_t min_output_buffer_timeout_ms;
  int64_t max_output_buffer_timeout_ms;
  int64_t max_deflate_level;
  bool auth_required;                   /* reported in the IDENTIFY reply */
  bool allow_timeout_notify;            /* ravel extension; default true */
  bool allow_hold_slots;                /* ravel extension; default true */
  const char *version;                  /* reported; RV_NSQ_COMPAT_VERSION */
} rv_nsq_opts;

void rv_nsq_opts_init(rv_nsq_opts *opts);

/* ---- errors -------------------------------------------------------------- */

/* Every code nsqd v1.3.0 sends (protocol_v2.go, tcp.go). */
#define RV_NSQ_CODES(X)                                                       \
  X(RV_NSQ_E_INVALID, "E_INVALID")                                            \
  X(RV_NSQ_E_BAD_BODY, "E_BAD_BODY")                                          \
  X(RV_NSQ_E_BAD_TOPIC, "E_BAD_TOPIC")                                        \
  X(RV_NSQ_E_BAD_CHANNEL, "E_BAD_CHANNEL")                                    \
  X(RV_NSQ_E_BAD_MESSAGE, "E_BAD_MESSAGE")                                    \
  X(RV_NSQ_E_BAD_PROTOCOL, "E_BAD_PROTOCOL")                                  \
  X(RV_NSQ_E_PUB_FAILED, "E_PUB_FAILED")                                      \
  X(RV_NSQ_E_MPUB_FAILED, "E_MPUB_FAILED")                                    \
  X(RV_NSQ_E_DPUB_FAILED, "E_DPUB_FAILED")                                    \
  X(RV_NSQ_E_FIN_FAILED, "E_FIN_FAILED")                                      \
  X(RV_NSQ_E_REQ_FAILED, "E_REQ_FAILED")                                      \
  X(RV_NSQ_E_TOUCH_FAILED, "E_TOUCH_FAILED")                                  \
  X(RV_NSQ_E_SUB_FAILED, "E_SUB_FAILED")                                      \
  X(RV_NSQ_E_IDENTIFY_FAILED, "E_IDENTIFY_FAILED")                            \
  X(RV_NSQ_E_AUTH_DISABLED, "E_AUTH_DISABLED")                                \
  X(RV_NSQ_E_AUTH_FAILED, "E_AUTH_FAILED")                                    \
  X(RV_NSQ_E_AUTH_FIRST, "E_AUTH_FIRST")                                      \
  X(RV_NSQ_E_AUTH_ERROR, "E_AUTH_ERROR")                                      \
  X(RV_NSQ_E_UNAUTHORIZED, "E_UNAUTHORIZED")

typedef enum rv_nsq_code {
  RV_NSQ_OK = 0,
#define RV_NSQ__CODE_ENUM(name, text) name,
  RV_NSQ_CODES(RV_NSQ__CODE_ENUM)
#undef RV_NSQ__CODE_ENUM
  RV_NSQ_CODE_COUNT
} rv_nsq_code;

/* "E_INVALID" for RV_NSQ_E_INVALID; "OK" for RV_NSQ_OK; never NULL. */
const char *rv_nsq_code_name(rv_nsq_code code);
/* The code an error frame's text starts with (client side); RV_NSQ_OK if
 * the text starts with no known code. */
rv_nsq_code rv_nsq_code_parse(const uint8_t *text, size_t len);
/* NSQ's split: only E_FIN_FAILED, E_REQ_FAILED and E_TOUCH_FAILED leave the
 * connection open; every other error is fatal. */
bool rv_nsq_code_is_fatal(rv_nsq_code code);

/* An error frame's text: "E_CODE description", raw bytes echoed from the
 * client included.  Long echoes are cut (see RV_NSQ_ERROR_ECHO_MAX_BYTES). */
#define RV_NSQ_ERROR_TEXT_MAX_BYTES 1024
#define RV_NSQ_ERROR_ECHO_MAX_BYTES 200

typedef struct rv_nsq_error {
  rv_nsq_code code;
  bool fatal;       /* nsqd closes the connection after sending it */
  size_t text_len;  /* may contain any byte; text is also NUL-terminated */
  char text[RV_NSQ_ERROR_TEXT_MAX_BYTES];
} rv_nsq_error;

/* Fill err with code, its fatal flag and "CODE <printf(fmt, ...)>" (just
 * "CODE" when fmt is NULL).  For the connection handler's own errors
 * (E_FIN_FAILED, E_AUTH_DISABLED, ...). */
void rv_nsq_error_set(rv_nsq_error *err, rv_nsq_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- names, ids ---------------------------------------------------------- */

/* nsqd's topic and channel name rule (the two are the same). */
bool rv_nsq_valid_name(const char *name, size_t len);

/* A 64-bit GUID as the 16 lowercase hex characters nsqd uses as message id. */
void rv_nsq_id_format(uint64_t guid, uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]);
/* And back; false unless id is exactly 16 lowercase hex characters. */
bool rv_nsq_id_parse(const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES], uint64_t *guid);

/* ---- growable output buffer ---------------------------------------------- */

/* Encoders append to one of these.  It grows on demand up to limit_bytes and
 * never past it: an append that would is refused whole (RV_ELIMIT) and the
 * buffer is left as it was, as on RV_ENOMEM. */
#define RV_NSQ_BUF_DEFAULT_LIMIT_BYTES (2 * RV_NSQ_DEFAULT_MAX_BODY_SIZE_BYTES)

typedef struct rv_nsq_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
  size_t limit_bytes;
} rv_nsq_buf;

/* limit_bytes 0 means RV_NSQ_BUF_DEFAULT_LIMIT_BYTES. */
void rv_nsq_buf_init(rv_nsq_buf *buf, size_t limit_bytes);
void rv_nsq_buf_free(rv_nsq_buf *buf);
/* Drop the first n bytes (those a writer has sent). */
void rv_nsq_buf_consume(rv_nsq_buf *buf, size_t n);

/* ---- commands (server side decoding) ------------------------------------- */

typedef enum rv_nsq_cmd_kind {
  RV_NSQ_CMD_NONE = 0,
  RV_NSQ_CMD_IDENTIFY,
  RV_NSQ_CMD_AUTH,
  RV_NSQ_CMD_SUB,
  RV_NSQ_CMD_PUB,
  RV_NSQ_CMD_MPUB,
  RV_NSQ_CMD_DPUB,
  RV_NSQ_CMD_RDY,
  RV_NSQ_CMD_FIN,
  RV_NSQ_CMD_REQ,
  RV_NSQ_CMD_TOUCH,
  RV_NSQ_CMD_CLS,
  RV_NSQ_CMD_NOP,
} rv_nsq_cmd_kind;

/* "PUB" for RV_NSQ_CMD_PUB; "NONE" otherwise; never NULL. */
const char *rv_nsq_cmd_name(rv_nsq_cmd_kind kind);

typedef struct rv_nsq_slice {
  const uint8_t *ptr;
  size_t len;
} rv_nsq_slice;

/* IDENTIFY's JSON as the client sent it (Go zero values for absent keys). */
#define RV_NSQ_IDENTIFY_STR_MAX_BYTES 256

typedef struct rv_nsq_identify {
  char client_id[RV_NSQ_IDENTIFY_STR_MAX_BYTES];   /* cut at a UTF-8 boundary */
  char hostname[RV_NSQ_IDENTIFY_STR_MAX_BYTES];
  char user_agent[RV_NSQ_IDENTIFY_STR_MAX_BYTES];
  bool feature_negotiation;
  int64_t heartbeat_interval_ms;     /* -1 off, 0 server default */
  int64_t output_buffer_size_bytes;  /* -1 unbuffered, 0 server default */
  int64_t output_buffer_timeout_ms;  /* -1 off, 0 server default */
  bool tls_v1;                       /* always declined by ravel */
  bool snappy;                       /* always declined by ravel */
  bool deflate;                      /* always declined by ravel */
  int64_t deflate_level;
  int32_t sample_rate_pct;           /* 0..99 */
  int64_t msg_timeout_ms;            /* 0 server default */
  /* ravel-only extensions, both default false; see the top comment. */
  bool timeout_notify;               /* tell me when my message times out */
  bool hold_slots;                   /* timed-out messages keep their slot */
} rv_nsq_identify;

/*
 * A client connection's state, numbered as nsqd numbers it (and shows it in
 * /stats "state"): init until SUB, subscribed, closing after CLS.
 */
typedef enum rv_nsq_state {
  RV_NSQ_STATE_INIT = 0,
  RV_NSQ_STATE_SUBSCRIBED = 3,
  RV_NSQ_STATE_CLOSING = 4,
} rv_nsq_state;

typedef struct rv_nsq_cmd {
  rv_nsq_cmd_kind kind;
  /* RDY after CLS: nsqd ignores it without looking at its parameter. */
  bool ignored;
  char topic[RV_NSQ_NAME_MAX_BYTES + 1];    /* SUB, PUB, MPUB, DPUB */
  char channel[RV_NSQ_NAME_MAX_BYTES + 1];  /* SUB */
  uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];     /* FIN, REQ, TOUCH: raw bytes */
  int64_t count;                            /* RDY: 0..max_rdy_count */
  int64_t delay_ms;                         /* REQ (clamped), DPUB */
  bool delay_clamped;                       /* REQ: delay_ms was clamped */
  /* FIN, REQ, TOUCH: ravel's optional attempt argument, 1..65535; 0 when
   * absent (nsqd's commands). */
  uint16_t attempt;
  /* PUB/DPUB message, IDENTIFY JSON, AUTH secret, MPUB whole body. */
  rv_nsq_slice body;
  /* MPUB: every message, all validated before the command is returned. */
  size_t msg_count;
  const rv_nsq_slice *msgs;
  rv_nsq_identify identify;                 /* IDENTIFY, parsed */
} rv_nsq_cmd;

/* The decoder's progress through the byte stream (private). */
typedef enum rv_nsq__phase {
  RV_NSQ__PHASE_MAGIC = 0,
  RV_NSQ__PHASE_LINE,
  RV_NSQ__PHASE_SIZE,
  RV_NSQ__PHASE_BODY,
  RV_NSQ__PHASE_FAILED,
} rv_nsq__phase;

/*
 * The server side's incremental decoder.  Fields are private except where
 * noted; embed it by value.
 */
typedef struct rv_nsq_decoder {
  rv_nsq_opts opts;
  /* Set by the connection handler (rv_nsq_decoder_set_state) so that
   * wrong-state commands fail exactly where nsqd fails them. */
  rv_nsq_state state;
  bool heartbeats_disabled;
  /* private */
  rv_nsq__phase phase;
  bool emitted;
  uint8_t hdr[RV_NSQ_MAGIC_SIZE_BYTES];
  size_t hdr_len;
  uint8_t *buf;
  size_t buf_len;
  size_t buf_cap;
  int64_t body_len;
  rv_nsq_cmd pending;
  size_t mpub_pos;
  size_t mpub_index;
  int64_t mpub_count;
  rv_nsq_slice *msgs;
  size_t msgs_cap;
  rv_nsq_error failure;
} rv_nsq_decoder;

/* opts NULL means nsqd's defaults.  Cannot fail. */
void rv_nsq_decoder_init(rv_nsq_decoder *dec, const rv_nsq_opts *opts);
void rv_nsq_decoder_free(rv_nsq_decoder *dec);
void rv_nsq_decoder_set_state(rv_nsq_decoder *dec, rv_nsq_state state,
                              bool heartbeats_disabled);

/*
 * Feed bytes.  Consumes at most one command's bytes and reports how many in
 * *consumed; the caller feeds the rest in the next call.
 *   1            *cmd holds a command.  Its pointers (body, msgs) point into
 *                data or into the decoder and stay valid until the next call
 *                on this decoder, as long as data is left unchanged.
 *   0            all of data consumed, no command complete yet.
 *   RV_EPROTO    *err holds the error frame to send (always fatal: every
 *                error the decoder finds makes nsqd close the connection);
 *                the decoder stays failed and repeats it.
 *   RV_ENOMEM    allocation failed; *consumed bytes were taken, feed the
 *                rest again later.
 */
int rv_nsq_decode(rv_nsq_decoder *dec, const uint8_t *data, size_t len,
                  size_t *consumed, rv_nsq_cmd *cmd, rv_nsq_error *err);

/*
 * The peer closed its side.  If that cut a body short, nsqd would have sent a
 * fatal "failed to read" error: returns RV_EPROTO with it in *err.  Between
 * commands, or inside a line (nsqd then closes silently), returns 0.
 */
int rv_nsq_decode_eof(const rv_nsq_decoder *dec, rv_nsq_error *err);

typedef enum rv_nsq_verdict {
  RV_NSQ_ALLOW = 0,
  RV_NSQ_IGNORE,   /* RDY while closing */
  RV_NSQ_REJECT,   /* *err holds the fatal E_INVALID to send */
} rv_nsq_verdict;

/*
 * Whether a command is allowed in a connection state, with nsqd's error
 * texts ("cannot SUB in current state", "cannot SUB with heartbeats
 * disabled").  The decoder applies it before it looks at parameters, as
 * nsqd does; it is public for the connection handler's own use.
 */
rv_nsq_verdict rv_nsq_check_state(rv_nsq_cmd_kind kind, rv_nsq_state state,
                                  bool heartbeats_disabled, rv_nsq_error *err);

/* ---- IDENTIFY ------------------------------------------------------------ */

/* All zero: what a client that sends "{}" asks for. */
void rv_nsq_identify_init(rv_nsq_identify *ident);

/*
 * Parse and validate an IDENTIFY body as nsqd does: unknown keys ignored,
 * keys matched case-insensitively (Go's encoding/json), wrong JSON types
 * rejected, then each value checked in nsqd's order.  0, or RV_EPROTO with a
 * fatal E_BAD_BODY in *err.
 */
int rv_nsq_identify_parse(const uint8_t *json, size_t len,
                          const rv_nsq_opts *opts, rv_nsq_identify *out,
                          rv_nsq_error *err);

/* A connection's effective settings, as IDENTIFY leaves them. */
typedef struct rv_nsq_client_cfg {
  int64_t heartbeat_interval_ms;     /* 0 = no heartbeats */
  int64_t output_buffer_size_bytes;
  int64_t output_buffer_timeout_ms;  /* 0 = flush at once */
  int32_t sample_rate_pct;
  int64_t msg_timeout_ms;
  bool feature_negotiation;
  bool timeout_notify;               /* granted ravel extension */
  bool hold_slots;                   /* granted ravel extension */
} rv_nsq_client_cfg;

/* A new connection's settings: the server defaults in opts. */
void rv_nsq_client_cfg_init(rv_nsq_client_cfg *cfg, const rv_nsq_opts *opts);
/* Apply a parsed, validated IDENTIFY (0 keeps the current value, -1
 * disables), as nsqd's clientV2.Identify does. */
void rv_nsq_identify_apply(rv_nsq_client_cfg *cfg, const rv_nsq_identify *ident,
                           const rv_nsq_opts *opts);

/*
 * Append the reply frame to IDENTIFY: "OK" without feature negotiation, else
 * the JSON nsqd sends (same keys, same order), TLS/snappy/deflate declined,
 * plus the ravel extension keys the client asked for.
 */
int rv_nsq_enc_identify_reply(rv_nsq_buf *out, const rv_nsq_opts *opts,
                              const rv_nsq_client_cfg *cfg,
                              const rv_nsq_identify *ident);

/* ---- server frames ------------------------------------------------------- */

int rv_nsq_enc_frame(rv_nsq_buf *out, int32_t frame_type, const void *data,
                     size_t len);
int rv_nsq_enc_response(rv_nsq_buf *out, const void *data, size_t len);
/* "OK", "_heartbeat_", "CLOSE_WAIT" responses. */
int rv_nsq_enc_ok(rv_nsq_buf *out);
int rv_nsq_enc_heartbeat(rv_nsq_buf *out);
int rv_nsq_enc_close_wait(rv_nsq_buf *out);
int rv_nsq_enc_error(rv_nsq_buf *out, const rv_nsq_error *err);
int rv_nsq_enc_message(rv_nsq_buf *out, int64_t ts_ns, uint16_t attempts,
                       const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                       const void *body, size_t len);
/* ravel-only timeout notice (frame type 3). */
int rv_nsq_enc_timeout(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]);

/* ---- client commands ----------------------------------------------------- */
/* Names are checked with rv_nsq_valid_name and bodies must be 1..INT32_MAX
 * bytes (RV_EINVAL otherwise): a client never puts bytes on the wire that
 * would desynchronise the stream. */

int rv_nsq_enc_magic(rv_nsq_buf *out);
/* IDENTIFY with a JSON body built from ident (extension keys only when true). */
int rv_nsq_enc_identify(rv_nsq_buf *out, const rv_nsq_identify *ident);
/* IDENTIFY with a caller-made JSON body. */
int rv_nsq_enc_identify_json(rv_nsq_buf *out, const void *json, size_t len);
int rv_nsq_enc_auth(rv_nsq_buf *out, const void *secret, size_t len);
int rv_nsq_enc_sub(rv_nsq_buf *out, const char *topic, const char *channel);
int rv_nsq_enc_pub(rv_nsq_buf *out, const char *topic, const void *body, size_t len);
int rv_nsq_enc_mpub(rv_nsq_buf *out, const char *topic, const rv_nsq_slice *msgs,
                    size_t count);
int rv_nsq_enc_dpub(rv_nsq_buf *out, const char *topic, int64_t defer_ms,
                    const void *body, size_t len);
int rv_nsq_enc_rdy(rv_nsq_buf *out, int64_t count);
int rv_nsq_enc_fin(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]);
int rv_nsq_enc_req(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                   int64_t delay_ms);
int rv_nsq_enc_touch(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES]);
/* The same, qualified by the delivery's attempt number (ravel extension, see
 * the top comment): "FIN <id> <attempt>", "REQ <id> <delay_ms> <attempt>",
 * "TOUCH <id> <attempt>".  attempt 0 writes the plain NSQ command.  Send them
 * only to a server that granted timeout_notify or hold_slots. */
int rv_nsq_enc_fin_attempt(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                           uint16_t attempt);
int rv_nsq_enc_req_attempt(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                           int64_t delay_ms, uint16_t attempt);
int rv_nsq_enc_touch_attempt(rv_nsq_buf *out, const uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES],
                             uint16_t attempt);
int rv_nsq_enc_nop(rv_nsq_buf *out);
int rv_nsq_enc_cls(rv_nsq_buf *out);

/* ---- client side frame decoding ------------------------------------------ */

typedef struct rv_nsq_frame {
  int32_t type;                 /* RV_NSQ_FRAME_*; unknown types pass through */
  rv_nsq_slice data;            /* everything after the type */
  /* RV_NSQ_FRAME_MESSAGE only: */
  int64_t ts_ns;
  uint16_t attempts;
  uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];   /* also RV_NSQ_FRAME_TIMEOUT */
  rv_nsq_slice body;
} rv_nsq_frame;

/* Large enough for a message of nsqd's default max-msg-size. */
#define RV_NSQ_DEFAULT_MAX_FRAME_SIZE_BYTES                                   \
  (RV_NSQ_DEFAULT_MAX_MSG_SIZE_BYTES + RV_NSQ_MSG_HEADER_SIZE_BYTES + 4)

typedef struct rv_nsq_frame_decoder {
  int64_t max_frame_size_bytes;  /* the int32 size field's bound */
  /* private */
  bool emitted;
  bool failed;
  uint8_t hdr[RV_NSQ_FRAME_HEADER_SIZE_BYTES];
  size_t hdr_len;
  uint8_t *buf;
  size_t buf_len;
  size_t buf_cap;
  const char *why;
} rv_nsq_frame_decoder;

/* max_frame_size_bytes 0 means RV_NSQ_DEFAULT_MAX_FRAME_SIZE_BYTES. */
void rv_nsq_frame_decoder_init(rv_nsq_frame_decoder *fd, int64_t max_frame_size_bytes);
void rv_nsq_frame_decoder_free(rv_nsq_frame_decoder *fd);

/*
 * Like rv_nsq_decode, for server frames: 1 with *frame (pointers valid until
 * the next call, data unchanged), 0 need more, RV_EPROTO with a static
 * explanation in *why (size field < 4 or over the bound, message or timeout
 * frame too short), RV_ENOMEM.
 */
int rv_nsq_frame_decode(rv_nsq_frame_decoder *fd, const uint8_t *data, size_t len,
                        size_t *consumed, rv_nsq_frame *frame, const char **why);

#ifdef __cplusplus
}
#endif

#endif /* RAVEL_PROTO_NSQ_H */
