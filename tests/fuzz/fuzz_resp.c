/*
 * fuzz_resp: libFuzzer target for the RESP2 parser and encoder.
 *
 * For each input it derives parser limits (sometimes tiny, to reach every
 * limit path) and a chunking seed from the first bytes, then parses the rest
 * three ways: all at once, one byte at a time, and in chunks of varying size
 * drawn from the seed.  Invariants checked:
 *
 *  - no crash, no read outside the bytes handed over (every call but the
 *    byte-at-a-time run gets an exactly sized heap copy, so ASan sees it);
 *  - the three runs give the same commands and the same final state (the
 *    same error message, or the same number of pending bytes);
 *  - consumed never exceeds what was given, argc is 1..max_args, bulk
 *    arguments point inside the given bytes and respect max_bulk_bytes;
 *  - every command, encoded back as a multibulk array with rv_resp_out,
 *    parses to the same command.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/resp.h"

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "fuzz_resp: check failed at %s:%d: %s\n", __FILE__, __LINE__, \
              #cond);                                                            \
      abort();                                                                   \
    }                                                                            \
  } while (0)

typedef struct transcript {
  char *buf;
  size_t len, cap;
} transcript;

static void t_put(transcript *t, const void *p, size_t n) {
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < t->len + n) cap *= 2;
    t->buf = realloc(t->buf, cap);
    CHECK(t->buf != NULL);
    t->cap = cap;
  }
  if (n) memcpy(t->buf + t->len, p, n);
  t->len += n;
}

static void t_num(transcript *t, char tag, size_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%c%zu:", tag, v);
  t_put(t, tmp, (size_t)n);
}

/* splitmix64: the chunk sizes come from the input, so a crash reproduces. */
static uint64_t mix_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static void serialize_cmd(transcript *t, const rv_resp_cmd *cmd) {
  t_num(t, '[', cmd->argc);
  for (size_t i = 0; i < cmd->argc; i++) {
    t_num(t, '|', cmd->argv[i].len);
    t_put(t, cmd->argv[i].ptr, cmd->argv[i].len);
  }
  t_put(t, "]", 1);
}

/* Encode cmd as a multibulk array and parse it back: it must be identical. */
static void check_roundtrip(const rv_resp_opts *opts, const rv_resp_cmd *cmd) {
  rv_resp_out o;
  rv_resp_out_init(&o, 0);
  CHECK(rv_resp_out_array(&o, cmd->argc) == 0);
  for (size_t i = 0; i < cmd->argc; i++)
    CHECK(rv_resp_out_bulk(&o, cmd->argv[i].ptr, cmd->argv[i].len) == 0);

  rv_resp_opts big = *opts;
  big.max_bulk_bytes = RV_RESP_MAX_BULK_BYTES_DEFAULT;
  big.max_request_bytes = RV_RESP_MAX_REQUEST_BYTES_DEFAULT;
  rv_resp_parser p;
  CHECK(rv_resp_parser_init(&p, &big) == 0);
  size_t consumed = 0;
  rv_resp_cmd back;
  CHECK(rv_resp_parse(&p, o.buf, o.len, &consumed, &back) == RV_RESP_CMD);
  CHECK(consumed == o.len);
  CHECK(back.argc == cmd->argc);
  for (size_t i = 0; i < cmd->argc; i++) {
    CHECK(back.argv[i].len == cmd->argv[i].len);
    CHECK(memcmp(back.argv[i].ptr, cmd->argv[i].ptr, cmd->argv[i].len) == 0);
  }
  rv_resp_parser_free(&p);
  rv_resp_out_free(&o);
}

enum { MODE_WHOLE, MODE_BYTES, MODE_CHUNKS };

/*
 * Parse data[0..len) in the given mode and describe the outcome in *t.
 * Returns the number of commands.
 */
static size_t run(const rv_resp_opts *opts, const uint8_t *data, size_t len, int mode,
                  uint64_t seed, transcript *t, bool roundtrip) {
  rv_resp_parser p;
  CHECK(rv_resp_parser_init(&p, opts) == 0);
  size_t start = 0, end = 0, ncmds = 0; /* pending bytes are data[start..end) */
  int rc = RV_RESP_AGAIN;
  while (end < len && rc != RV_RESP_ERROR) {
    size_t step = len - end;
    if (mode == MODE_BYTES) step = 1;
    if (mode == MODE_CHUNKS) {
      size_t want = 1 + (size_t)(mix_next(&seed) % 97);
      if (want < step) step = want;
    }
    end += step;
    for (;;) {
      size_t n = end - start;
      const char *view;
      char *copy = NULL;
      if (mode == MODE_BYTES) {
        view = (const char *)data + start;
      } else {
        copy = malloc(n ? n : 1);
        CHECK(copy != NULL);
        if (n) memcpy(copy, data + start, n);
        view = copy;
      }
      size_t consumed = SIZE_MAX;
      rv_resp_cmd cmd;
      rc = rv_resp_parse(&p, view, n, &consumed, &cmd);
      CHECK(consumed <= n);
      if (rc == RV_RESP_CMD) {
        CHECK(cmd.argc >= 1 && cmd.argc <= opts->max_args);
        for (size_t i = 0; i < cmd.argc; i++) {
          if (!cmd.is_inline) {
            CHECK(cmd.argv[i].len <= opts->max_bulk_bytes);
            CHECK(cmd.argv[i].ptr >= view && cmd.argv[i].ptr + cmd.argv[i].len <= view + consumed);
          } else {
            CHECK(cmd.argv[i].len <= opts->max_inline_bytes);
          }
        }
        serialize_cmd(t, &cmd);
        if (roundtrip) check_roundtrip(opts, &cmd);
        ncmds++;
      } else if (rc == RV_RESP_ERROR) {
        CHECK(consumed == 0);
        CHECK(rv_resp_parser_error(&p) != NULL);
      } else {
        CHECK(rc == RV_RESP_AGAIN);
        CHECK(rv_resp_parser_error(&p) == NULL);
      }
      free(copy);
      if (rc == RV_RESP_ERROR) break;
      start += consumed;
      if (rc == RV_RESP_AGAIN) break;
    }
  }
  if (rc == RV_RESP_ERROR) {
    const char *e = rv_resp_parser_error(&p);
    t_put(t, "ERROR ", 6);
    t_put(t, e, strlen(e));
  } else {
    t_num(t, 'A', end - start);
  }
  rv_resp_parser_free(&p);
  return ncmds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  rv_resp_opts opts;
  rv_resp_opts_default(&opts);
  uint8_t knobs = data[0];
  if (knobs & 1) opts.max_args = 1 + (knobs >> 4);
  if (knobs & 2) opts.max_bulk_bytes = (size_t)(data[1] % 64);
  if (knobs & 4) opts.max_inline_bytes = RV_RESP_MIN_INLINE_BYTES + (data[1] >> 2);
  if (knobs & 8) opts.max_request_bytes = opts.max_inline_bytes + 2 + (size_t)data[1] * 2;
  uint64_t seed = (uint64_t)data[1] << 8 | data[2];
  data += 3;
  size -= 3;

  transcript whole = {0}, bytes = {0}, chunks = {0};
  run(&opts, data, size, MODE_WHOLE, seed, &whole, true);
  run(&opts, data, size, MODE_BYTES, seed, &bytes, false);
  run(&opts, data, size, MODE_CHUNKS, seed, &chunks, false);
  if (whole.len != bytes.len || memcmp(whole.buf, bytes.buf, whole.len) != 0 ||
      whole.len != chunks.len || memcmp(whole.buf, chunks.buf, whole.len) != 0) {
    fprintf(stderr, "fuzz_resp: chunkings disagree\n whole: %.*s\n bytes: %.*s\nchunks: %.*s\n",
            (int)whole.len, whole.buf, (int)bytes.len, bytes.buf, (int)chunks.len, chunks.buf);
    abort();
  }
  free(whole.buf);
  free(bytes.buf);
  free(chunks.buf);
  return 0;
}
