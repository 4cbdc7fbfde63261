/*
 * fuzz_nsq: libFuzzer target for the NSQ V2 codec (src/proto/nsq.c).
 *
 * Input layout: byte 0 holds flags, byte 1 seeds the chunk sizes, the rest is
 * the byte stream.  Invariants checked (a failure aborts, which libFuzzer
 * reports as a crash):
 *   1. no crash, leak or UB under ASan/UBSan;
 *   2. chunking independence: the stream fed whole and fed in pseudo-random
 *      chunks yields the same commands and the same error, and the same
 *      end-of-stream verdict;
 *   3. every command is valid as nsqd would have it (names, ranges, MPUB
 *      messages filling the body) and every error is fatal with its code
 *      first;
 *   4. round trip: each command re-encoded with the client encoders and
 *      decoded again is the same command;
 *   5. the client frame decoder is chunking-independent too, and IDENTIFY
 *      parsing of arbitrary bytes either fails cleanly or yields a reply that
 *      is valid JSON.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/nsq.h"

#define FUZZ_FLAG_MAGIC 0x01      /* prepend "  V2" */
#define FUZZ_FLAG_SMALL 0x02      /* small limits so bodies hit the edges */
#define FUZZ_STATE_SHIFT 2        /* bits 2-3: initial connection state */
#define FUZZ_MAX_CHUNK_BYTES 32
#define FUZZ_SMALL_MAX_MSG_BYTES 64
#define FUZZ_SMALL_MAX_BODY_BYTES 256

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) abort();                                                     \
  } while (0)

typedef struct {
  uint64_t h;
} digest;

static void dg_bytes(digest *d, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) {
    d->h ^= b[i];
    d->h *= UINT64_C(0x100000001b3);
  }
}
static void dg_u64(digest *d, uint64_t v) { dg_bytes(d, &v, sizeof(v)); }
static void dg_str(digest *d, const char *s) { dg_bytes(d, s, strlen(s) + 1); }

/* Everything a command carries, hashed in a fixed order. */
static void dg_cmd(digest *d, const rv_nsq_cmd *c, bool with_clamped) {
  dg_u64(d, (uint64_t)c->kind);
  dg_u64(d, c->ignored);
  dg_str(d, c->topic);
  dg_str(d, c->channel);
  dg_bytes(d, c->id, sizeof(c->id));
  dg_u64(d, (uint64_t)c->count);
  dg_u64(d, (uint64_t)c->delay_ms);
  if (with_clamped) dg_u64(d, c->delay_clamped);
  dg_u64(d, c->attempt);
  dg_u64(d, c->body.len);
  if (c->body.len) dg_bytes(d, c->body.ptr, c->body.len);
  dg_u64(d, c->msg_count);
  for (size_t i = 0; i < c->msg_count; i++) {
    dg_u64(d, c->msgs[i].len);
    dg_bytes(d, c->msgs[i].ptr, c->msgs[i].len);
  }
  const rv_nsq_identify *id = &c->identify;
  dg_str(d, id->client_id);
  dg_str(d, id->hostname);
  dg_str(d, id->user_agent);
  int64_t nums[] = {id->heartbeat_interval_ms, id->output_buffer_size_bytes,
                    id->output_buffer_timeout_ms, id->deflate_level, id->sample_rate_pct,
                    id->msg_timeout_ms, id->feature_negotiation, id->tls_v1, id->snappy,
                    id->deflate, id->timeout_notify, id->hold_slots};
  dg_bytes(d, nums, sizeof(nums));
}

/* What the decoder promises about any command it returns. */
static void check_cmd(const rv_nsq_cmd *c, const rv_nsq_opts *o) {
  switch (c->kind) {
    case RV_NSQ_CMD_SUB:
      CHECK(rv_nsq_valid_name(c->channel, strlen(c->channel)));
      /* fall through */
    case RV_NSQ_CMD_PUB:
    case RV_NSQ_CMD_MPUB:
    case RV_NSQ_CMD_DPUB:
      CHECK(rv_nsq_valid_name(c->topic, strlen(c->topic)));
      break;
    case RV_NSQ_CMD_RDY:
      CHECK(c->ignored || (c->count >= 0 && c->count <= o->max_rdy_count));
      break;
    case RV_NSQ_CMD_REQ:
      CHECK(c->delay_ms >= 0 && c->delay_ms <= o->max_req_timeout_ms);
      break;
    default:
      break;
  }
  /* ravel's attempt argument: only on FIN / REQ / TOUCH (0 = absent) */
  if (c->kind != RV_NSQ_CMD_FIN && c->kind != RV_NSQ_CMD_REQ && c->kind != RV_NSQ_CMD_TOUCH)
    CHECK(c->attempt == 0);
  if (c->kind == RV_NSQ_CMD_PUB || c->kind == RV_NSQ_CMD_DPUB)
    CHECK(c->body.len >= 1 && (int64_t)c->body.len <= o->max_msg_size_bytes);
  if (c->kind == RV_NSQ_CMD_DPUB) CHECK(c->delay_ms >= 0 && c->delay_ms <= o->max_req_timeout_ms);
  if (c->kind == RV_NSQ_CMD_MPUB) {
    CHECK(c->msg_count >= 1 && (int64_t)c->body.len <= o->max_body_size_bytes);
    size_t total = 4;
    for (size_t i = 0; i < c->msg_count; i++) {
      CHECK(c->msgs[i].len >= 1 && (int64_t)c->msgs[i].len <= o->max_msg_size_bytes);
      CHECK(c->msgs[i].ptr >= c->body.ptr && c->msgs[i].ptr + c->msgs[i].len <= c->body.ptr + c->body.len);
      total += 4 + c->msgs[i].len;
    }
    CHECK(total == c->body.len);
  }
}

static void check_err(const rv_nsq_error *e) {
  CHECK(e->fatal);
  CHECK(e->text_len < RV_NSQ_ERROR_TEXT_MAX_BYTES && e->text[e->text_len] == '\0');
  const char *name = rv_nsq_code_name(e->code);
  CHECK(e->code != RV_NSQ_OK && strncmp(e->text, name, strlen(name)) == 0);
  CHECK(rv_nsq_code_parse((const uint8_t *)e->text, e->text_len) == e->code);
}

static void track_state(rv_nsq_decoder *dec, const rv_nsq_cmd *c) {
  if (c->kind == RV_NSQ_CMD_SUB) rv_nsq_decoder_set_state(dec, RV_NSQ_STATE_SUBSCRIBED, false);
  if (c->kind == RV_NSQ_CMD_CLS) rv_nsq_decoder_set_state(dec, RV_NSQ_STATE_CLOSING, false);
  if (c->kind == RV_NSQ_CMD_IDENTIFY && c->identify.heartbeat_interval_ms == -1)
    rv_nsq_decoder_set_state(dec, dec->state, true);
}

/* Encode a decoded command with the client encoders.  false when the
 * command carries bytes a well-behaved client cannot produce (an id that is
 * not printable ASCII, an IDENTIFY string that is not UTF-8). */
static bool reencode(rv_nsq_buf *b, const rv_nsq_cmd *c) {
  int rc;
  switch (c->kind) {
    case RV_NSQ_CMD_IDENTIFY: rc = rv_nsq_enc_identify(b, &c->identify); break;
    case RV_NSQ_CMD_AUTH: rc = rv_nsq_enc_auth(b, c->body.ptr, c->body.len); break;
    case RV_NSQ_CMD_SUB: rc = rv_nsq_enc_sub(b, c->topic, c->channel); break;
    case RV_NSQ_CMD_PUB: rc = rv_nsq_enc_pub(b, c->topic, c->body.ptr, c->body.len); break;
    case RV_NSQ_CMD_MPUB: rc = rv_nsq_enc_mpub(b, c->topic, c->msgs, c->msg_count); break;
    case RV_NSQ_CMD_DPUB:
      rc = rv_nsq_enc_dpub(b, c->topic, c->delay_ms, c->body.ptr, c->body.len);
      break;
    case RV_NSQ_CMD_RDY:
      if (c->ignored) return false;
      rc = rv_nsq_enc_rdy(b, c->count);
      break;
    case RV_NSQ_CMD_FIN: rc = rv_nsq_enc_fin_attempt(b, c->id, c->attempt); break;
    case RV_NSQ_CMD_REQ: rc = rv_nsq_enc_req_attempt(b, c->id, c->delay_ms, c->attempt); break;
    case RV_NSQ_CMD_TOUCH: rc = rv_nsq_enc_touch_attempt(b, c->id, c->attempt); break;
    case RV_NSQ_CMD_CLS: rc = rv_nsq_enc_cls(b); break;
    case RV_NSQ_CMD_NOP: rc = rv_nsq_enc_nop(b); break;
    default: return false;
  }
  if (rc == RV_EINVAL) return false;
  CHECK(rc == 0);
  return true;
}

/* Invariant 4: a command survives client encoding and server decoding. */
static void roundtrip(const rv_nsq_cmd *c, const rv_nsq_opts *o, rv_nsq_state st, bool hb_off) {
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  CHECK(rv_nsq_enc_magic(&b) == 0);
  /* a re-encoded IDENTIFY may outgrow a small max_body_size_bytes */
  if (!reencode(&b, c) || (int64_t)b.len > o->max_body_size_bytes) {
    rv_nsq_buf_free(&b);
    return;
  }
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, o);
  rv_nsq_decoder_set_state(&dec, st, hb_off);
  rv_nsq_cmd c2;
  rv_nsq_error err;
  size_t used;
  int rc = rv_nsq_decode(&dec, b.data, b.len, &used, &c2, &err);
  CHECK(rc == 1 && used == b.len);
  digest d1 = {UINT64_C(0xcbf29ce484222325)}, d2 = d1;
  dg_cmd(&d1, c, false);
  dg_cmd(&d2, &c2, false);
  if (c->kind == RV_NSQ_CMD_IDENTIFY) {
    /* the client encoder writes its own JSON, so compare the parsed fields */
    rv_nsq_cmd a = *c, z = c2;
    a.body = z.body = (rv_nsq_slice){NULL, 0};
    d1.h = d2.h = UINT64_C(0xcbf29ce484222325);
    dg_cmd(&d1, &a, false);
    dg_cmd(&d2, &z, false);
  }
  CHECK(d1.h == d2.h);
  rv_nsq_decoder_free(&dec);
  rv_nsq_buf_free(&b);
}

typedef struct {
  uint64_t hash;
  size_t commands;
  int eof_rc;
} run_result;

/* The next chunk: everything left when *seed is 0 (the "whole" run), else
 * 1..FUZZ_MAX_CHUNK_BYTES from a small LCG (no process-wide generator). */
static size_t next_piece(uint32_t *seed, size_t left) {
  if (*seed == 0) return left;
  *seed = *seed * 1664525u + 1013904223u;
  size_t k = 1 + (*seed >> 8) % FUZZ_MAX_CHUNK_BYTES;
  return k < left ? k : left;
}

/* Feed the stream whole (seed 0) or in chunks; hash what comes out. */
static run_result run(const uint8_t *in, size_t n, const rv_nsq_opts *o, rv_nsq_state st,
                      uint32_t seed, bool check_roundtrip) {
  rv_nsq_decoder dec;
  rv_nsq_decoder_init(&dec, o);
  rv_nsq_decoder_set_state(&dec, st, false);
  digest d = {UINT64_C(0xcbf29ce484222325)};
  run_result r = {0, 0, 0};
  size_t pos = 0;
  bool failed = false;
  while (pos < n && !failed) {
    size_t piece = next_piece(&seed, n - pos);
    const uint8_t *p = in + pos;
    size_t left = piece;
    while (left > 0) {
      rv_nsq_cmd cmd;
      rv_nsq_error err;
      size_t used = 0;
      rv_nsq_state before = dec.state;
      bool hb_before = dec.heartbeats_disabled;
      int rc = rv_nsq_decode(&dec, p, left, &used, &cmd, &err);
      CHECK(used <= left);
      p += used;
      left -= used;
      if (rc == 0) {
        CHECK(left == 0);
        break;
      }
      if (rc == 1) {
        check_cmd(&cmd, o);
        dg_cmd(&d, &cmd, true);
        r.commands++;
        if (check_roundtrip) roundtrip(&cmd, o, before, hb_before);
        track_state(&dec, &cmd);
        continue;
      }
      CHECK(rc == RV_EPROTO);
      check_err(&err);
      dg_bytes(&d, err.text, err.text_len);
      failed = true;
      break;
    }
    pos += piece;
  }
  rv_nsq_error eerr;
  r.eof_rc = rv_nsq_decode_eof(&dec, &eerr);
  if (r.eof_rc) {
    CHECK(r.eof_rc == RV_EPROTO);
    check_err(&eerr);
    dg_bytes(&d, eerr.text, eerr.text_len);
  }
  r.hash = d.h;
  rv_nsq_decoder_free(&dec);
  return r;
}

/* Invariant 5a: server frames, whole versus chunked. */
static uint64_t run_frames(const uint8_t *in, size_t n, uint32_t seed) {
  rv_nsq_frame_decoder fd;
  rv_nsq_frame_decoder_init(&fd, 4096);
  digest d = {UINT64_C(0xcbf29ce484222325)};
  size_t pos = 0;
  bool failed = false;
  while (pos < n && !failed) {
    size_t piece = next_piece(&seed, n - pos);
    const uint8_t *p = in + pos;
    size_t left = piece;
    while (left > 0) {
      rv_nsq_frame f;
      const char *why = NULL;
      size_t used = 0;
      int rc = rv_nsq_frame_decode(&fd, p, left, &used, &f, &why);
      CHECK(used <= left);
      p += used;
      left -= used;
      if (rc == 0) {
        CHECK(left == 0);
        break;
      }
      if (rc == 1) {
        dg_u64(&d, (uint64_t)f.type);
        dg_bytes(&d, f.data.ptr, f.data.len);
        if (f.type == RV_NSQ_FRAME_MESSAGE) {
          CHECK(f.body.len + RV_NSQ_MSG_HEADER_SIZE_BYTES == f.data.len);
          dg_u64(&d, (uint64_t)f.ts_ns);
          dg_u64(&d, f.attempts);
        }
        continue;
      }
      CHECK(rc == RV_EPROTO && why != NULL);
      dg_str(&d, why);
      failed = true;
      break;
    }
    pos += piece;
  }
  rv_nsq_frame_decoder_free(&fd);
  return d.h;
}

/* Invariant 5b: IDENTIFY of arbitrary bytes, and its reply. */
static void run_identify(const uint8_t *in, size_t n, const rv_nsq_opts *o) {
  rv_nsq_identify id;
  rv_nsq_error err;
  if (rv_nsq_identify_parse(in, n, o, &id, &err) != 0) {
    check_err(&err);
    CHECK(err.code == RV_NSQ_E_BAD_BODY);
    return;
  }
  rv_nsq_client_cfg cfg;
  rv_nsq_client_cfg_init(&cfg, o);
  rv_nsq_identify_apply(&cfg, &id, o);
  id.feature_negotiation = true;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  CHECK(rv_nsq_enc_identify_reply(&b, o, &cfg, &id) == 0);
  CHECK(b.len > RV_NSQ_FRAME_HEADER_SIZE_BYTES);
  json_error_t jerr;
  json_t *j = json_loadb((const char *)b.data + RV_NSQ_FRAME_HEADER_SIZE_BYTES,
                         b.len - RV_NSQ_FRAME_HEADER_SIZE_BYTES, 0, &jerr);
  CHECK(j != NULL && json_is_object(j));
  CHECK(json_is_true(json_object_get(j, "timeout_notify")) == (id.timeout_notify && cfg.timeout_notify));
  json_decref(j);
  rv_nsq_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint8_t flags = data[0];
  uint32_t seed = (uint32_t)data[1] + 1;
  const uint8_t *body = data + 2;
  size_t n = size - 2;

  rv_nsq_opts o;
  rv_nsq_opts_init(&o);
  if (flags & FUZZ_FLAG_SMALL) {
    o.max_msg_size_bytes = FUZZ_SMALL_MAX_MSG_BYTES;
    o.max_body_size_bytes = FUZZ_SMALL_MAX_BODY_BYTES;
  }
  static const rv_nsq_state states[4] = {RV_NSQ_STATE_INIT, RV_NSQ_STATE_SUBSCRIBED,
                                         RV_NSQ_STATE_CLOSING, RV_NSQ_STATE_INIT};
  rv_nsq_state st = states[(flags >> FUZZ_STATE_SHIFT) & 3];

  uint8_t *stream = malloc(n + RV_NSQ_MAGIC_SIZE_BYTES);
  CHECK(stream != NULL);
  size_t len = 0;
  if (flags & FUZZ_FLAG_MAGIC) {
    memcpy(stream, RV_NSQ_MAGIC_V2, RV_NSQ_MAGIC_SIZE_BYTES);
    len = RV_NSQ_MAGIC_SIZE_BYTES;
  }
  if (n) memcpy(stream + len, body, n);
  len += n;

  run_result whole = run(stream, len, &o, st, 0, true);
  run_result chunked = run(stream, len, &o, st, seed, false);
  CHECK(whole.hash == chunked.hash);
  CHECK(whole.commands == chunked.commands);
  CHECK(whole.eof_rc == chunked.eof_rc);

  CHECK(run_frames(body, n, 0) == run_frames(body, n, seed));
  run_identify(body, n, &o);

  free(stream);
  return 0;
}
