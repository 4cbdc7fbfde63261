/*
 * The byte buffers behind the server loop's connections, shared by both
 * implementations of loop.h (libuv in loop.c, the simulator's in
 * loop_sim.c), so that input is offered to handlers the same way in both
 * worlds.  Internal to src/server/.
 */
#ifndef RAVEL_SERVER_LOOP_BUF_H
#define RAVEL_SERVER_LOOP_BUF_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RV__LBUF_MIN_CAP 16384

typedef struct rv__lbuf {
  char *p;
  size_t len, cap;
} rv__lbuf;

/* Room for `extra` more bytes, growing by doubling but never past max. */
static inline bool rv__lbuf_reserve(rv__lbuf *b, size_t extra, size_t max) {
  if (b->len + extra <= b->cap)
    return true;
  size_t cap = b->cap ? b->cap : RV__LBUF_MIN_CAP;
  while (cap < b->len + extra)
    cap *= 2;
  if (cap > max)
    cap = max;
  if (cap < b->len + extra)
    return false;
  char *p = realloc(b->p, cap);
  if (!p)
    return false;
  b->p = p;
  b->cap = cap;
  return true;
}

/* Drop the first n bytes (those consumed or sent). */
static inline void rv__lbuf_consume(rv__lbuf *b, size_t n) {
  if (n > b->len)
    n = b->len;
  if (n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
  }
}

/* Offer the whole buffer to a handler's on_data; keep what it does not consume. */
static inline void rv__lbuf_offer(rv__lbuf *b, size_t (*on_data)(void *, const char *, size_t),
                                  void *state) {
  if (b->len)
    rv__lbuf_consume(b, on_data(state, b->p, b->len));
}

#endif
