/*
 * A tiny NSQ client for tests, over rt's TCP and ravel's NSQ codec (client
 * side): connect with IDENTIFY, SUB, RDY, publish, read frames with a bound.
 */
#ifndef RAVEL_TEST_NSQ_CLIENT_H
#define RAVEL_TEST_NSQ_CLIENT_H

#include "support.h"

#include "proto/nsq.h"

typedef struct nsqc {
  rv_conn *c;
  rv_nsq_frame_decoder fd;
  rv_nsq_buf out;
  uint8_t buf[1 << 16];
  size_t have, off;
} nsqc;

typedef struct nsqf {
  int32_t type;
  char text[512];           /* response/error text */
  int64_t ts_ns;
  uint16_t attempts;
  uint8_t id[RV_NSQ_MSG_ID_SIZE_BYTES];
  char body[4096];
  size_t body_len;
} nsqf;

static inline int nsqc_send(nsqc *n) {
  int rc = rv_conn_write_all(n->c, n->out.data, n->out.len, NULL);
  n->out.len = 0;
  return rc;
}

/* Read the next frame, waiting at most bound_ns; RV_ETIMEDOUT if none came. */
static inline int nsqc_read(nsqc *n, nsqf *f, int64_t bound_ns) {
  rv_conn_set_read_deadline(n->c, rv_now_ns() + bound_ns);
  for (;;) {
    if (n->have > n->off) {
      size_t used = 0;
      rv_nsq_frame fr;
      const char *why = NULL;
      int rc = rv_nsq_frame_decode(&n->fd, n->buf + n->off, n->have - n->off, &used, &fr, &why);
      n->off += used;
      if (rc == 1) {
        memset(f, 0, sizeof *f);
        f->type = fr.type;
        if (fr.type == RV_NSQ_FRAME_MESSAGE) {
          f->ts_ns = fr.ts_ns;
          f->attempts = fr.attempts;
          memcpy(f->id, fr.id, sizeof f->id);
          f->body_len = fr.body.len < sizeof f->body ? fr.body.len : sizeof f->body;
          memcpy(f->body, fr.body.ptr, f->body_len);
        } else {
          size_t k = fr.data.len < sizeof f->text - 1 ? fr.data.len : sizeof f->text - 1;
          memcpy(f->text, fr.data.ptr, k);
          if (fr.type == RV_NSQ_FRAME_TIMEOUT)
            memcpy(f->id, fr.id, sizeof f->id);
        }
        return RV_OK;
      }
      if (rc < 0)
        return rc;
    }
    if (n->off == n->have)
      n->off = n->have = 0;
    ssize_t r = rv_conn_read(n->c, n->buf + n->have, sizeof n->buf - n->have, NULL);
    if (r <= 0)
      return r == 0 ? RV_ECLOSED : (int)r;
    n->have += (size_t)r;
  }
}

/* Read frames, skipping heartbeats, until one that is not a heartbeat. */
static inline int nsqc_next(nsqc *n, nsqf *f, int64_t bound_ns) {
  for (;;) {
    int rc = nsqc_read(n, f, bound_ns);
    if (rc != RV_OK)
      return rc;
    if (!(f->type == RV_NSQ_FRAME_RESPONSE && strcmp(f->text, "_heartbeat_") == 0))
      return RV_OK;
    rv_nsq_enc_nop(&n->out);
    nsqc_send(n);
  }
}

/* Connect, send the magic and IDENTIFY (json may be NULL: none). */
static inline int nsqc_open(nsqc *n, uint16_t port, const char *identify_json) {
  memset(n, 0, sizeof *n);
  int rc = rv_tcp_connect(&n->c, "127.0.0.1", port, NULL);
  if (rc != RV_OK)
    return rc;
  rv_nsq_frame_decoder_init(&n->fd, 8 << 20);
  rv_nsq_buf_init(&n->out, 8 << 20);
  rv_nsq_enc_magic(&n->out);
  if (identify_json)
    rv_nsq_enc_identify_json(&n->out, identify_json, strlen(identify_json));
  rc = nsqc_send(n);
  if (rc == RV_OK && identify_json) {
    nsqf f;
    rc = nsqc_next(n, &f, RVT_BOUND_NS);
    if (rc == RV_OK && f.type != RV_NSQ_FRAME_RESPONSE)
      rc = RV_EPROTO;
  }
  return rc;
}

static inline void nsqc_close(nsqc *n) {
  rv_conn_close(n->c);
  rv_nsq_frame_decoder_free(&n->fd);
  rv_nsq_buf_free(&n->out);
}

/* Expect the next frame to be the response `text`. */
static inline bool nsqc_expect(nsqc *n, const char *text) {
  nsqf f;
  return nsqc_next(n, &f, RVT_BOUND_NS) == RV_OK && f.type == RV_NSQ_FRAME_RESPONSE &&
         strcmp(f.text, text) == 0;
}

static inline bool nsqc_pub(nsqc *n, const char *topic, const char *body) {
  rv_nsq_enc_pub(&n->out, topic, body, strlen(body));
  return nsqc_send(n) == RV_OK && nsqc_expect(n, "OK");
}

static inline bool nsqc_sub(nsqc *n, const char *topic, const char *channel, int rdy) {
  rv_nsq_enc_sub(&n->out, topic, channel);
  if (nsqc_send(n) != RV_OK || !nsqc_expect(n, "OK"))
    return false;
  rv_nsq_enc_rdy(&n->out, rdy);
  return nsqc_send(n) == RV_OK;
}

#endif
