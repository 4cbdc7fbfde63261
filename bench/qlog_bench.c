/*
 * qlog_bench: how fast the queue's storage is, in the queue benchmark's shape
 * (MPUB batches of 200 messages of 200 bytes), without the network.
 *
 *   append, SYNC_ALWAYS: C simulated publishers, each with one batch in
 *     flight: it appends a batch and may send the next one only when the
 *     sync thread reports the batch durable (what a PUB's OK waits for).
 *     One loop thread drives all of them, as the server's event loop would.
 *   append, SYNC_NONE: the same, acknowledged at write; then the time of the
 *     final flush.
 *   read: a sequential iterator over everything (warm page cache), and
 *     random reads by seq.
 *   fin: a channel journal finishing every message in order (the consume
 *     side's storage cost), then made durable.
 *
 * Usage: qlog_bench [messages (default 1000000)] [directory (default a new one under /tmp)]
 * The directory's contents are deleted at the end.
 */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt/rt.h"
#include "storage/qjournal.h"
#include "storage/qlog.h"

#define BENCH_MESSAGES_DEFAULT 1000000
#define BENCH_BATCH 200
#define BENCH_BODY_BYTES 200
/* Publishers with a batch in flight, like the queue bench's concurrent connections. */
static const size_t bench_publishers[] = {1, 8, 32, 128};
#define BENCH_RANDOM_READS 200000

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

static double secs(int64_t ns) { return (double)ns / (double)RV_NS_PER_S; }

static void die(const char *what, int rc) {
  fprintf(stderr, "qlog_bench: %s: %s\n", what, rv_strerror(rc));
  exit(1);
}

static rv_qlog_entry batch[BENCH_BATCH];
static uint8_t bodies[BENCH_BATCH][BENCH_BODY_BYTES];

/*
 * Append `messages` with `pubs` publishers each keeping one batch in flight;
 * returns the wall time until the last batch was acknowledged.
 */
static int64_t run_append(rv_qlog *q, uint64_t messages, size_t pubs, rv_qlog_stats *st) {
  uint64_t nbatches = messages / BENCH_BATCH, sent = 0;
  uint64_t *inflight_last = calloc(pubs, sizeof *inflight_last); /* ring of outstanding batches */
  size_t head = 0, len = 0;
  int64_t t0 = rv_now_ns();
  while (sent < nbatches || len > 0) {
    while (len < pubs && sent < nbatches) {
      uint64_t first;
      int rc = rv_qlog_append(q, batch, BENCH_BATCH, &first);
      if (rc != RV_OK)
        die("append", rc);
      inflight_last[(head + len++) % pubs] = first + BENCH_BATCH - 1;
      sent++;
    }
    /* Wait for the oldest batch, then release every batch now acknowledged. */
    uint64_t oldest = inflight_last[head];
    if (rv_qlog_acked_seq(q) < oldest) {
      int rc = rv_qlog_wait_durable(q, oldest, NULL);
      if (rc != RV_OK)
        die("wait_durable", rc);
    }
    uint64_t acked = rv_qlog_acked_seq(q);
    while (len > 0 && inflight_last[head] <= acked) {
      head = (head + 1) % pubs;
      len--;
    }
  }
  int64_t took = rv_now_ns() - t0;
  free(inflight_last);
  rv_qlog_stats_get(q, st);
  return took;
}

static void bench_mode(const char *root, rv_qlog_sync sync, uint64_t messages, bool read_too) {
  const char *mode = sync == RV_QLOG_SYNC_ALWAYS ? "always" : "none";
  for (size_t p = 0; p < sizeof bench_publishers / sizeof *bench_publishers; p++) {
    size_t pubs = bench_publishers[p];
    /* One publisher under SYNC_ALWAYS is fsync-latency bound: a tenth of the messages will do. */
    uint64_t n = sync == RV_QLOG_SYNC_ALWAYS && pubs == 1 ? messages / 10 : messages;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s-%zu", root, mode, pubs);
    rv_qlog_opts o = {.sync = sync, .name = "bench"};
    rv_qlog *q;
    int rc = rv_qlog_open(&q, dir, &o);
    if (rc != RV_OK)
      die("open", rc);
    rv_qlog_stats st;
    int64_t took = run_append(q, n, pubs, &st);
    int64_t t1 = rv_now_ns();
    rc = rv_qlog_wait_durable(q, rv_qlog_next_seq(q) - 1, NULL);
    if (rc != RV_OK)
      die("final sync", rc);
    int64_t flush = rv_now_ns() - t1;
    rv_qlog_stats_get(q, &st);
    printf("append sync=%-6s publishers=%-4zu %9.0f msgs/s  %7.1f MB/s  (%" PRIu64
           " msgs, %.2f s; %" PRIu64 " fdatasyncs, %.0f msgs each, mean %.2f ms, max %.2f ms;"
           " final flush %.3f s)\n",
           mode, pubs, (double)st.appends / secs(took),
           (double)st.bytes_written / secs(took) / 1e6, st.appends, secs(took), st.log_syncs,
           st.log_syncs ? (double)st.appends / (double)st.log_syncs : 0.0,
           st.sync_rounds ? secs(st.sync_ns_total) * 1e3 / (double)st.sync_rounds : 0.0,
           secs(st.sync_ns_max) * 1e3, secs(flush));
    fflush(stdout);

    if (read_too && p + 1 == sizeof bench_publishers / sizeof *bench_publishers) {
      rv_qlog_iter *it;
      rv_qlog_iter_new(q, 1, &it);
      rv_qlog_msg m;
      uint64_t count = 0, sum = 0;
      int64_t r0 = rv_now_ns();
      while (rv_qlog_iter_next(it, &m) == RV_OK) {
        count++;
        sum += m.body[0];
      }
      int64_t rt = rv_now_ns() - r0;
      rv_qlog_iter_free(it);
      printf("read  sequential              %9.0f msgs/s  %7.1f MB/s  (%" PRIu64 " msgs, %.2f s)\n",
             (double)count / secs(rt), (double)count * BENCH_BODY_BYTES / secs(rt) / 1e6, count,
             secs(rt));
      rv_rng rng;
      rv_rng_seed(&rng, 1);
      uint8_t buf[BENCH_BODY_BYTES];
      r0 = rv_now_ns();
      for (int i = 0; i < BENCH_RANDOM_READS; i++) {
        rc = rv_qlog_read(q, 1 + rv_rng_below(&rng, count), &m, buf, sizeof buf);
        if (rc != RV_OK)
          die("random read", rc);
        sum += buf[0];
      }
      rt = rv_now_ns() - r0;
      printf("read  random                  %9.0f msgs/s  (%d reads, %.2f s)\n",
             BENCH_RANDOM_READS / secs(rt), BENCH_RANDOM_READS, secs(rt));

      char jdir[600];
      snprintf(jdir, sizeof jdir, "%s/ch.bench", dir);
      rv_qjournal *j;
      rv_qjournal_opts jo = {.start_seq = 1};
      if ((rc = rv_qjournal_open(&j, q, jdir, &jo)) != RV_OK)
        die("journal open", rc);
      uint64_t lsn = 0;
      r0 = rv_now_ns();
      for (uint64_t s = 1; s <= count; s++)
        if ((rc = rv_qjournal_fin(j, s, &lsn)) != RV_OK)
          die("fin", rc);
      rt = rv_now_ns() - r0;
      int64_t w0 = rv_now_ns();
      if ((rc = rv_qjournal_wait_durable(j, lsn, NULL)) != RV_OK)
        die("journal sync", rc);
      rv_qjournal_stats js;
      rv_qjournal_stats_get(j, &js);
      printf("fin   journal                 %9.0f fins/s  (%" PRIu64 " fins, %.2f s; then durable in "
             "%.3f s; floor %" PRIu64 ", %" PRIu64 " checkpoints)  [checksum %" PRIu64 "]\n",
             (double)count / secs(rt), count, secs(rt), secs(rv_now_ns() - w0), js.floor,
             js.checkpoints, sum & 0xff);
      rv_qjournal_close(j);
    }
    rv_qlog_close(q);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  }
}

int main(int argc, char **argv) {
  uint64_t messages = argc > 1 ? strtoull(argv[1], NULL, 10) : BENCH_MESSAGES_DEFAULT;
  if (messages < BENCH_BATCH * 10)
    messages = BENCH_BATCH * 10;
  char root[512];
  bool own_root = argc <= 2;
  if (own_root) {
    snprintf(root, sizeof root, "/tmp/qlog-bench-XXXXXX");
    if (!mkdtemp(root)) {
      perror("mkdtemp");
      return 1;
    }
  } else {
    snprintf(root, sizeof root, "%s", argv[2]);
  }
  for (size_t i = 0; i < BENCH_BATCH; i++) {
    memset(bodies[i], (int)('a' + i % 26), BENCH_BODY_BYTES);
    batch[i] = (rv_qlog_entry){.id = i, .ts_ns = rv_wall_ns(), .body_len = BENCH_BODY_BYTES,
                               .body = bodies[i]};
  }
  printf("qlog_bench: %" PRIu64 " messages of %d bytes in batches of %d, directory %s\n", messages,
         BENCH_BODY_BYTES, BENCH_BATCH, root);
  bench_mode(root, RV_QLOG_SYNC_ALWAYS, messages, false);
  bench_mode(root, RV_QLOG_SYNC_NONE, messages, true);
  if (own_root)
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}
