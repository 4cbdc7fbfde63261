/*
 * resp: the RESP2 request parser and reply encoder (Redis's wire protocol).
 *
 * Pure and sans-IO: bytes in, commands out; replies in, bytes out.  No
 * syscalls, no clock, no globals.  The coord server (and any test or
 * simulator) owns the sockets and hands this module byte buffers.
 *
 * ## Requests
 *
 * Clients send either a multibulk request, an array of bulk strings
 * ("*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n", what hiredis, ioredis and redis-cli
 * send), or an inline request, one text line ("PING hi\r\n", what telnet and
 * `redis-cli` in some modes send) split with Redis's quoting rules
 * (sdssplitargs: "double quotes" with \n \r \t \b \a \xHH and \<any>
 * escapes, 'single quotes' with \' only; a closing quote must be followed by
 * a space or the end of the line).  Like Redis, a request whose first byte is
 * '*' is multibulk and anything else is inline; empty requests ("*0\r\n",
 * "*-1\r\n", blank lines) are skipped silently.
 *
 * ## The buffer contract (zero copy)
 *
 * The caller owns the input buffer.  Each rv_resp_parse call is given the
 * bytes not yet consumed, starting at the first unconsumed byte.  It returns
 * at most one command and says, in *consumed, how many leading bytes the
 * caller may now drop.  Between calls the caller may move the unconsumed bytes
 * (compact its buffer) and append new ones, but must not change them: the
 * parser remembers how far it got inside a partial request (as offsets, never
 * pointers), so feeding a request one byte at a time costs O(n) in total.
 *
 * Argument lifetimes: bulk arguments point into the caller's buffer and stay
 * valid until the caller drops or moves those bytes; inline arguments (which
 * need unescaping) point into a parser-owned scratch buffer and stay valid
 * until the next rv_resp_parse/reset/free call.  The argv array itself is
 * parser-owned with the same lifetime.  So: handle a command before calling
 * the parser again or compacting the buffer.
 *
 * ## Limits and errors
 *
 * Every limit is named (RV_RESP_*_DEFAULT) and set per parser in
 * rv_resp_opts.  A request that breaks one, or any malformed input, puts the
 * parser in a sticky error state: rv_resp_parse returns RV_RESP_ERROR from
 * then on and rv_resp_parser_error() gives the reply to send, in Redis's
 * words where Redis has words for it ("ERR Protocol error: invalid bulk
 * length"); the server sends it and closes the connection, as Redis does.
 * Errors are decided by the bytes alone, never by how they were chunked: the
 * same input gives the same commands and the same error whatever the reads.
 *
 * Where ravel is stricter than Redis (Redis skips the two bytes after a bulk
 * payload and after '\r' without looking at them), the message says so in
 * the same style.  A byte shown in a message is printed as itself when
 * printable ASCII and as \xNN otherwise (Redis prints it raw).
 *
 * ## Replies
 *
 * rv_resp_out is a growable output buffer with a hard cap (max_bytes).  Each
 * append either writes its whole item or nothing, returns
 * RV_RESP_OUT_EFULL/ENOMEM, and sets the sticky `overflow` flag; a reply made
 * of several items is rolled back with rv_resp_out_rewind(out, mark).
 * Simple strings and errors have CR and LF replaced by spaces (as Redis's
 * addReplyError does) so a message can never break the framing.
 */
#ifndef RAVEL_PROTO_RESP_H
#define RAVEL_PROTO_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits ------------------------------------------------------------ */

/* Arguments per command.  Redis allows up to INT_MAX; coord needs a few. */
#define RV_RESP_MAX_ARGS_DEFAULT 4096
/* Hard ceiling for rv_resp_opts.max_args (Redis's 1024*1024 argv growth cap). */
#define RV_RESP_MAX_ARGS_LIMIT (1024 * 1024)
/* Bytes per bulk argument; config values are the largest coord payload. */
#define RV_RESP_MAX_BULK_BYTES_DEFAULT (1024 * 1024)
/* Hard ceiling for rv_resp_opts.max_bulk_bytes (Redis's proto-max-bulk-len). */
#define RV_RESP_MAX_BULK_BYTES_LIMIT (512 * 1024 * 1024)
/* Bytes of an inline line and of a "*N"/"$N" header line before its
 * terminator: Redis's PROTO_INLINE_MAX_SIZE. */
#define RV_RESP_MAX_INLINE_BYTES_DEFAULT (64 * 1024)
/* Bytes of one whole request: what the caller's input buffer must be able to
 * hold, since arguments point into it. */
#define RV_RESP_MAX_REQUEST_BYTES_DEFAULT (8 * 1024 * 1024)
/* Smallest accepted max_inline_bytes (room for any header line). */
#define RV_RESP_MIN_INLINE_BYTES 32
/* Size of the parser's error message buffer, NUL included. */
#define RV_RESP_ERR_MAX 192
/* Cap on one connection's pending reply bytes. */
#define RV_RESP_OUT_MAX_BYTES_DEFAULT (32 * 1024 * 1024)
/* First allocation of an output buffer. */
#define RV_RESP_OUT_INITIAL_BYTES 512

/* ---- parser -------------------------------------------------------------- */

typedef struct rv_resp_opts {
  size_t max_args;          /* 1..RV_RESP_MAX_ARGS_LIMIT */
  size_t max_bulk_bytes;    /* 0..RV_RESP_MAX_BULK_BYTES_LIMIT */
  size_t max_inline_bytes;  /* RV_RESP_MIN_INLINE_BYTES.. */
  size_t max_request_bytes; /* >= max_inline_bytes + 2 and >= a max-size bulk */
} rv_resp_opts;

/* One argument: len bytes at ptr, not NUL-terminated, may contain any byte. */
typedef struct rv_resp_arg {
  const char *ptr;
  size_t len;
} rv_resp_arg;

/* A complete command: argc >= 1 arguments, argv[0] is the command name. */
typedef struct rv_resp_cmd {
  size_t argc;
  const rv_resp_arg *argv;
  bool is_inline; /* came as an inline line rather than a multibulk array */
} rv_resp_cmd;

/* Results of rv_resp_parse. */
enum rv_resp_rc {
  RV_RESP_ERROR = -1, /* malformed or over a limit; see rv_resp_parser_error */
  RV_RESP_AGAIN = 0,  /* the next command is not complete yet */
  RV_RESP_CMD = 1,    /* *cmd holds a command */
};

/*
 * The parser.  Embed it in a connection; the fields are private (rv__) and
 * only shown so that no allocation is needed for the struct itself.
 */
typedef struct rv_resp_parser {
  rv_resp_opts opts;
  int rv__state;
  size_t rv__pos;       /* offset of the next unparsed byte of the request */
  size_t rv__scan;      /* where the search for a line terminator resumes */
  size_t rv__argc_want; /* multibulk: arguments announced by "*N" */
  size_t rv__argc;      /* arguments complete so far */
  size_t rv__bulk_len;  /* multibulk: length announced by the current "$N" */
  size_t *rv__offs;     /* per argument: offset in the request (multibulk) */
  rv_resp_arg *rv__argv;
  size_t rv__argv_cap;
  char *rv__scratch; /* unescaped inline arguments */
  size_t rv__scratch_cap;
  char rv__err[RV_RESP_ERR_MAX];
} rv_resp_parser;

/* Fill *o with the RV_RESP_*_DEFAULT limits. */
void rv_resp_opts_default(rv_resp_opts *o);

/*
 * Prepare p with opts (NULL: defaults).  Returns 0, or -1 if opts are out of
 * range (p is then unusable; the reason is in p's error message).
 */
int rv_resp_parser_init(rv_resp_parser *p, const rv_resp_opts *opts);
/* Release p's buffers; p may be initialized again. */
void rv_resp_parser_free(rv_resp_parser *p);
/* Forget any partial request and any error; keep opts and buffers. */
void rv_resp_parser_reset(rv_resp_parser *p);

/*
 * Parse the next command from buf[0..len), the caller's unconsumed bytes
 * (see "The buffer contract" above).  Always sets *consumed: the number of
 * leading bytes the caller may drop (a returned command and any empty
 * requests before it, or only skipped empty requests on RV_RESP_AGAIN; 0 on
 * RV_RESP_ERROR).  Returns RV_RESP_CMD, RV_RESP_AGAIN or RV_RESP_ERROR.
 */
int rv_resp_parse(rv_resp_parser *p, const char *buf, size_t len, size_t *consumed,
                  rv_resp_cmd *cmd);

/* The reply for a parser in the error state ("ERR Protocol error: ..."),
 * without the leading '-' and trailing CRLF; NULL when there is no error. */
const char *rv_resp_parser_error(const rv_resp_parser *p);

/*
 * A lower bound on the unconsumed bytes needed before the next call can make
 * progress: lets a shell size its read buffer for a large bulk argument.
 */
size_t rv_resp_parser_need(const rv_resp_parser *p);

/* ---- argument helpers ------------------------------------------------------ */

/* Is a equal to the NUL-terminated ASCII word w, ignoring ASCII case? */
bool rv_resp_arg_is(const rv_resp_arg *a, const char *w);

/*
 * Parse a as a signed 64-bit decimal with Redis's string2ll rules: optional
 * '-', no '+', no spaces, no leading zeros, "-0" rejected.  0 or -1.
 */
int rv_resp_parse_i64(const char *s, size_t len, int64_t *out);

/* ---- encoder ------------------------------------------------------------- */

enum rv_resp_out_rc {
  RV_RESP_OUT_OK = 0,
  RV_RESP_OUT_EFULL = -1,  /* the item would pass max_bytes */
  RV_RESP_OUT_ENOMEM = -2, /* allocation failed below max_bytes */
};

typedef struct rv_resp_out {
  char *buf;        /* bytes to send: buf[0..len) */
  size_t len;
  size_t cap;
  size_t max_bytes; /* hard cap on len */
  bool overflow;    /* sticky: an append failed since init/rewind */
} rv_resp_out;

/* An empty buffer capped at max_bytes (0: RV_RESP_OUT_MAX_BYTES_DEFAULT). */
void rv_resp_out_init(rv_resp_out *o, size_t max_bytes);
void rv_resp_out_free(rv_resp_out *o);
/* Drop the first n bytes (sent to the peer). */
void rv_resp_out_consume(rv_resp_out *o, size_t n);
/* Truncate back to mark (an earlier o->len) and clear overflow: undoes a
 * partly written reply so the shell can write an error instead. */
void rv_resp_out_rewind(rv_resp_out *o, size_t mark);

/* "+s\r\n" */
int rv_resp_out_simple(rv_resp_out *o, const char *s);
/* "-msg\r\n"; msg starts with its code word, e.g. "ERR unknown command". */
int rv_resp_out_error(rv_resp_out *o, const char *msg);
/* rv_resp_out_error with printf formatting (the message is cut at
 * RV_RESP_OUT_ERRORF_MAX bytes). */
#define RV_RESP_OUT_ERRORF_MAX 1024
int rv_resp_out_errorf(rv_resp_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* ":v\r\n" */
int rv_resp_out_int(rv_resp_out *o, int64_t v);
/* "$n\r\n<n bytes>\r\n" */
int rv_resp_out_bulk(rv_resp_out *o, const void *p, size_t n);
int rv_resp_out_bulk_cstr(rv_resp_out *o, const char *s);
/* "$-1\r\n": RESP2's null (a missing value). */
int rv_resp_out_null(rv_resp_out *o);
/* "*-1\r\n": RESP2's null array (e.g. a blocking wait that timed out). */
int rv_resp_out_null_array(rv_resp_out *o);
/* "*n\r\n": the header of an array; n items must follow. */
int rv_resp_out_array(rv_resp_out *o, size_t n);

#ifdef __cplusplus
}
#endif
#endif
