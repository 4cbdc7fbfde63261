/*
 * queue.c: topics, channels and consumers of ravel's event queue as a pure,
 * deterministic state machine.
 *
 * THE MODEL
 *
 * A topic is an append-only sequence of messages numbered densely from 1
 * (seq).  The bodies live in a store (rv_qstore_ops: the durable log in the
 * server, rv_qstore_mem in tests); this file keeps only metadata.  A
 * message's NSQ id is (topic id_prefix << 48 | seq): the id of a FIN names
 * its seq with a shift and a mask, and the same message has the same id on
 * every channel and on every redelivery, as nsqd promises.
 *
 * Distribution.  nsqd copies each message from the topic to every channel
 * that exists when the topic's pump reads it; a topic with no channel (or a
 * paused one) keeps its messages until one appears (is unpaused).  Here the
 * topic has dist_end, the first seq not yet handed to channels: with channels
 * and not paused it is next_seq, otherwise it stays behind.  A channel born
 * into a topic starts its history at dist_end, so the first channel of a
 * topic inherits what the topic kept, and later ones start "now".  "Handing
 * a message to a channel" costs nothing: the channel reads the log.
 *
 * A channel reads the log through a cursor: the first seq it has not taken.
 * It takes a message when it delivers it (or defers it), and from then on
 * keeps a record for it until it is finished.  A record (rvq_entry, 72
 * bytes plus its slots in a hash map and two heaps) is in one state:
 *
 *   READY     requeued (REQ 0, timed out, its consumer left, deferral due):
 *             in the channel's ready FIFO, delivered before the cursor's
 *             fresh messages (nsqd puts requeued messages at the tail of its
 *             memory queue; serving them first keeps the channel's window
 *             between floor and cursor, and so the log it pins, small);
 *   IN_FLIGHT with a consumer, a deadline in the timer heap and a place in
 *             the consumer's in-flight list (delivery order);
 *   DEFERRED  with a due time in the timer heap;
 *   DONE      finished while still ahead of the cursor: a tombstone that the
 *             cursor drops when it gets there (below).
 *
 * So every message of a channel is, at any moment, exactly one of: finished
 * (below the floor, a tombstone, a finished range, or passed by the cursor
 * with no record), in flight, deferred, ready (a READY record, or at/after
 * the cursor and below the topic's dist_end) or pending (at/after dist_end).
 * The model test checks that for every message on every step.
 *
 * Out-of-order takes.  Mostly the cursor takes messages in order, but two
 * things take a message ahead of it: DPUB, which puts the message into the
 * deferred queue of every channel at once (as nsqd does: the delay counts
 * from the publish, however long the channel's backlog), and recovery, which
 * restores deferred messages and FIN'd seqs anywhere above the floor.  Such
 * records are counted in `early`; when the cursor reaches a seq it first
 * skips finished ranges (recovery) and records (early takes, dropping
 * tombstones), so nothing is taken twice.
 *
 * Floor.  The channel's floor is the highest seq with everything at or
 * below it finished: min(smallest live record's seq, cursor) - 1, kept in
 * O(log n) with a min-heap of live records by seq.  The store compacts its
 * FIN journal below it, and reclaims the log below the minimum over a
 * topic's channels (rv_queue_topic_floor).  The FIN'd set above the floor is
 * represented by its complement: (floor, cursor) minus the live records.
 * That keeps it bounded by the records however long one stuck message holds
 * the floor down; the store's journal (fin/defer calls) is what persists it,
 * and rv_queue_channel_restore takes it back as ranges.
 *
 * Consumers and RDY.  As nsqd's client_v2: RDY n stores n; a consumer gets a
 * message while in_flight + held < n.  The channel keeps a ring of the
 * consumers that can take one and serves them round robin, one message per
 * turn, starting after the last one served: fair and deterministic.  A pump
 * runs after every call that may make delivery possible (publish, RDY, FIN,
 * REQ, a timer, unpause, leave) and delivers until the channel has no ready
 * message or no ready consumer; each delivery is an RV_QUEUE_EV_DELIVER
 * event that the shell turns into a frame after fetching the body.
 *
 * Acknowledgement.  A durable log serves a message only once its publish is
 * acknowledged (durable under the fsync policy).  With deliver_after_ack the
 * topic keeps acked_end, the first seq the store cannot serve yet, and the
 * cursor never passes it; a DPUB to such a topic waits in the topic's
 * pending FIFO until rv_queue_topic_acked covers it, and only then enters
 * its channels' deferred queues, so that a short deferral cannot fire before
 * its body is readable.  Without it acked_end follows next_seq.
 *
 * Time.  In-flight timeouts and deferrals share one min-heap ordered by
 * (deadline, arming order), so equal deadlines fire in a fixed order.
 * rv_queue_tick(now) fires every timer with deadline <= now, in that order,
 * and pumps the affected channel after each; rv_queue_next_deadline() says
 * when to call it.  No scan interval: a timeout fires at its deadline.  The
 * core never reads a clock; now_ns only moves forward (a smaller now_ns than
 * the last one seen is taken as the last one).  The server passes wall-clock
 * nanoseconds, because message timestamps (shown to clients, like nsqd's
 * UnixNano) and persisted due times must survive a restart.
 *
 * Held slots (ravel extension, the incident's fix).  Without hold_slots, a
 * timeout frees the consumer's slot at once (nsqd: TimedOutMessage lowers
 * InFlightCount), so a consumer whose handlers hang keeps being handed new
 * work.  With hold_slots, the rules are:
 *   1. When a message of consumer C times out (or C's channel is emptied
 *      under it), the message is requeued as usual and may go to anyone,
 *      and C gets a hold on its id: C's in_flight + held stays what it was,
 *      so C gets no new message for that slot.
 *   2. A hold is released only by C itself: a FIN or REQ from C for that id
 *      that does not act on a message in flight at C; or C leaving.  The
 *      FIN/REQ still gets nsqd's error (ID not in flight / client does not
 *      own message / ravel's stale attempt: the late answer did not finish
 *      or requeue the message), and rv_queue_ack.held_released tells the
 *      shell that a slot came back; the client library counts late FINs
 *      from those errors.
 *   3. If the id is in flight at C again (redelivered to C), C has two
 *      handlers on the same id and each will answer once.  An answer that
 *      names its delivery (the attempt argument, "FIN <id> <attempts>")
 *      acts only on that delivery: the late one (its attempt is not the one
 *      in flight) fails with RV_QUEUE_ESTALE_ATTEMPT and releases the hold
 *      (rule 2), the current one acts on the delivery and leaves the hold.
 *      An answer without an attempt (an nsqd client, which cannot ask for
 *      holds in the first place unless it speaks ravel's extensions) acts on
 *      the delivery in flight, as nsqd does, and leaves the hold to the
 *      other answer; that may be the late one, which then requeues or
 *      finishes the new delivery from under its handler: the reason clients
 *      that negotiated an extension send the attempt.
 *   4. TOUCH never releases a hold: a late TOUCH says the handler is still
 *      running, which is exactly what the slot is held for.  It gets nsqd's
 *      E_TOUCH_FAILED.
 *   Holds of one consumer stay within in_flight + held <= the largest RDY it
 *   had, so at most max_rdy_count per consumer, and max_held across the
 *   queue (a timeout past that limit frees the slot, counted in
 *   held_dropped).
 * timeout_notify (the other extension) makes a timeout also emit
 * RV_QUEUE_EV_TIMEOUT so that the client can cancel the handler.
 *
 * Memory.  Topics, channels and consumers are bounded by max_topics,
 * max_channels(_per_topic) and max_consumers; message records by
 * max_records_per_channel and max_records (about 150 bytes each with their
 * map and heap slots), deferred ones also by max_deferred_per_channel; holds
 * by max_held (about 48 bytes each); finished ranges given to restore by the
 * caller.  Nothing grows with the number of messages in the log.  Records
 * live in one slab indexed by u32 and recycled through a free list, so the
 * hot path (deliver, FIN) does not call malloc once the slab, maps and heaps
 * have grown to the working set.
 *
 * Determinism.  Every list is kept in creation/arrival order, the hash maps
 * use fixed hash functions and are only iterated where the order cannot be
 * seen, timers break ties by arming order, and free lists are LIFO: the same
 * calls with the same arguments produce the same events and handles.
 *
 * Failure.  A call that fails leaves the queue as it was, except the pump:
 * when it cannot grow a structure it stops, and the messages stay ready for
 * the next pump.
 */
#include "core/queue.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RVQ_NONE UINT32_MAX
#define RVQ_SEQ_MASK RV_QUEUE_SEQ_MAX
#define RVQ_MAP_MIN_CAP 16u
#define RVQ_ARRAY_MIN_CAP 16u
#define RVQ_EPHEMERAL_LEN (sizeof(RV_QUEUE_EPHEMERAL_SUFFIX) - 1)
/* The slab and the handle tables index with u32, RVQ_NONE excluded. */
#define RVQ_INDEX_MAX (UINT32_MAX - 1u)
#define RVQ_CHECK_MSG_MAX 256

/* ---- errors -------------------------------------------------------------- */

const char *rv_queue_strerror(int err) {
  switch (err) {
#define RV__QUEUE_ERR_TEXT(name, val, text) \
  case (val):                               \
    return (text);
    RV_QUEUE_ERRORS(RV__QUEUE_ERR_TEXT)
#undef RV__QUEUE_ERR_TEXT
  }
  return "unknown queue error";
}

const char *rv_queue_errname(int err) {
  switch (err) {
#define RV__QUEUE_ERR_NAME(name, val, text) \
  case (val):                               \
    return #name;
    RV_QUEUE_ERRORS(RV__QUEUE_ERR_NAME)
#undef RV__QUEUE_ERR_NAME
  }
  return "RV_QUEUE_E?";
}

/*
 * rt's error texts from rt.h's table, without linking rt: the core, like the
 * codecs, uses rt.h header-only so that fuzzers and the simulator can take
 * src/core and src/proto alone.
 */
static const char *rt_err_text(int rc) {
  switch (rc) {
#define RVQ__RT_ERR_TEXT(name, val, text) \
  case (val):                             \
    return (text);
    RV_ERRORS(RVQ__RT_ERR_TEXT)
#undef RVQ__RT_ERR_TEXT
  }
  return "unknown error";
}

/* ---- growable arrays ----------------------------------------------------- */

/*
 * Grow *v (elements of size elem) so that it holds at least need elements.
 * Doubling keeps the hot paths free of malloc once the working set is
 * reached; false on overflow or allocation failure, with *v unchanged.
 */
static bool grow(void **v, uint32_t *cap, size_t elem, size_t need) {
  if (need <= *cap)
    return true;
  if (need > RVQ_INDEX_MAX)
    return false;
  size_t ncap = *cap ? *cap : RVQ_ARRAY_MIN_CAP;
  while (ncap < need)
    ncap *= 2;
  if (ncap > RVQ_INDEX_MAX)
    ncap = RVQ_INDEX_MAX;
  void *nv = realloc(*v, ncap * elem);
  if (!nv)
    return false;
  *v = nv;
  *cap = (uint32_t)ncap;
  return true;
}

/* ---- u64 -> u32 map ------------------------------------------------------------- */
/*
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones, so a long-lived map never degrades).  Key 0 marks an empty
 * slot: seqs start at 1.  Load stays <= 1/2.  Fibonacci hashing spreads the
 * dense seqs; the function is fixed, so iteration order is a function of the
 * calls alone.  Private: src/core has no generic map to share (locktable's
 * is keyed by strings and internal to it).
 */
typedef struct rvq_slot {
  uint64_t key;
  uint32_t val;
} rvq_slot;

typedef struct rvq_map {
  rvq_slot *slots;
  uint32_t cap;   /* 0 or a power of two */
  uint32_t len;
  uint32_t shift; /* 64 - log2(cap) */
} rvq_map;

#define RVQ_FIB UINT64_C(0x9E3779B97F4A7C15)

static inline uint32_t map_home(const rvq_map *m, uint64_t key) {
  return (uint32_t)((key * RVQ_FIB) >> m->shift);
}

static void map_free(rvq_map *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static uint32_t *map_find(const rvq_map *m, uint64_t key) {
  if (!m->cap)
    return NULL;
  uint32_t mask = m->cap - 1;
  for (uint32_t i = map_home(m, key);; i = (i + 1) & mask) {
    if (m->slots[i].key == key)
      return &m->slots[i].val;
    if (m->slots[i].key == 0)
      return NULL;
  }
}

static uint32_t map_get(const rvq_map *m, uint64_t key) {
  uint32_t *v = map_find(m, key);
  return v ? *v : RVQ_NONE;
}

/* Insert an absent key; room must have been reserved. */
static void map_put(rvq_map *m, uint64_t key, uint32_t val) {
  uint32_t mask = m->cap - 1;
  uint32_t i = map_home(m, key);
  while (m->slots[i].key != 0)
    i = (i + 1) & mask;
  m->slots[i].key = key;
  m->slots[i].val = val;
  m->len++;
}

/* Make room for `extra` more keys without exceeding load 1/2. */
static bool map_reserve(rvq_map *m, uint32_t extra) {
  uint64_t need = ((uint64_t)m->len + extra) * 2;
  if (need <= m->cap)
    return true;
  uint64_t ncap = m->cap ? m->cap : RVQ_MAP_MIN_CAP;
  uint32_t bits = 0;
  while (ncap < need)
    ncap *= 2;
  if (ncap > (UINT64_C(1) << 31))
    return false;
  for (uint64_t c = ncap; c > 1; c >>= 1)
    bits++;
  rvq_slot *ns = calloc((size_t)ncap, sizeof *ns);
  if (!ns)
    return false;
  rvq_map old = *m;
  m->slots = ns;
  m->cap = (uint32_t)ncap;
  m->shift = 64 - bits;
  m->len = 0;
  for (uint32_t i = 0; i < old.cap; i++)
    if (old.slots[i].key)
      map_put(m, old.slots[i].key, old.slots[i].val);
  free(old.slots);
  return true;
}

static void map_del(rvq_map *m, uint64_t key) {
  if (!m->cap)
    return;
  uint32_t mask = m->cap - 1;
  uint32_t i = map_home(m, key);
  while (m->slots[i].key != key) {
    if (m->slots[i].key == 0)
      return;
    i = (i + 1) & mask;
  }
  /* Backward shift: pull later members of the cluster into the hole when
   * their home is not between the hole and their slot. */
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (m->slots[j].key == 0)
      break;
    uint32_t home = map_home(m, m->slots[j].key);
    bool between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (!between) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = 0;
  m->len--;
}

/* ---- name map ------------------------------------------------------------ */
/*
 * Names of topics (queue-wide) and channels (per topic) to objects.  Same
 * scheme as above; the slot keeps the 64-bit hash and a pointer to the name
 * inside the object, which never moves (objects are allocated one by one).
 * The hash is FNV-1a keyed by opts.hash_seed.
 */
typedef struct rvq_nslot {
  uint64_t hash;
  const char *name; /* NULL: empty */
  void *obj;
} rvq_nslot;

typedef struct rvq_nmap {
  rvq_nslot *slots;
  uint32_t cap;
  uint32_t len;
} rvq_nmap;

static uint64_t name_hash(uint64_t seed, const char *name) {
  uint64_t h = UINT64_C(14695981039346656037) ^ seed;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    h ^= *p;
    h *= UINT64_C(1099511628211);
  }
  return h ^ (h >> 29);
}

static void nmap_free(rvq_nmap *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static void *nmap_get(const rvq_nmap *m, uint64_t hash, const char *name) {
  if (!m->cap)
    return NULL;
  uint32_t mask = m->cap - 1;
  for (uint32_t i = (uint32_t)hash & mask; m->slots[i].name; i = (i + 1) & mask)
    if (m->slots[i].hash == hash && strcmp(m->slots[i].name, name) == 0)
      return m->slots[i].obj;
  return NULL;
}

static void nmap_put_raw(rvq_nmap *m, uint64_t hash, const char *name, void *obj) {
  uint32_t mask = m->cap - 1;
  uint32_t i = (uint32_t)hash & mask;
  while (m->slots[i].name)
    i = (i + 1) & mask;
  m->slots[i] = (rvq_nslot){hash, name, obj};
  m->len++;
}

static bool nmap_reserve(rvq_nmap *m, uint32_t extra) {
  uint64_t need = ((uint64_t)m->len + extra) * 2;
  if (need <= m->cap)
    return true;
  uint64_t ncap = m->cap ? m->cap : RVQ_MAP_MIN_CAP;
  while (ncap < need)
    ncap *= 2;
  if (ncap > (UINT64_C(1) << 31))
    return false;
  rvq_nslot *ns = calloc((size_t)ncap, sizeof *ns);
  if (!ns)
    return false;
  rvq_nmap old = *m;
  m->slots = ns;
  m->cap = (uint32_t)ncap;
  m->len = 0;
  for (uint32_t i = 0; i < old.cap; i++)
    if (old.slots[i].name)
      nmap_put_raw(m, old.slots[i].hash, old.slots[i].name, old.slots[i].obj);
  free(old.slots);
  return true;
}

static void nmap_del(rvq_nmap *m, uint64_t hash, const void *obj) {
  if (!m->cap)
    return;
  uint32_t mask = m->cap - 1;
  uint32_t i = (uint32_t)hash & mask;
  while (m->slots[i].obj != obj) {
    if (!m->slots[i].name)
      return;
    i = (i + 1) & mask;
  }
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!m->slots[j].name)
      break;
    uint32_t home = (uint32_t)m->slots[j].hash & mask;
    bool between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (!between) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i] = (rvq_nslot){0, NULL, NULL};
  m->len--;
}

/* ---- handles ------------------------------------------------------------- */
/*
 * Topics, channels and consumers are named by u64 handles (generation << 32
 * | slot), so a stale handle from a closed connection or a deleted channel
 * is refused instead of reaching a recycled object.  0 is never a handle.
 */
typedef struct rvq_hslot {
  void *obj;
  uint32_t gen;
  uint32_t next_free;
} rvq_hslot;

typedef struct rvq_table {
  rvq_hslot *v;
  uint32_t cap;
  uint32_t len;       /* slots ever used */
  uint32_t free_head;
  size_t live;
} rvq_table;

static void *table_get(const rvq_table *t, uint64_t h) {
  uint32_t i = (uint32_t)h;
  uint32_t gen = (uint32_t)(h >> 32);
  if (i >= t->len || t->v[i].gen != gen)
    return NULL;
  return t->v[i].obj;
}

static bool table_reserve(rvq_table *t) {
  if (t->free_head != RVQ_NONE)
    return true;
  return grow((void **)&t->v, &t->cap, sizeof *t->v, (size_t)t->len + 1);
}

/* Room reserved by table_reserve. */
static uint64_t table_add(rvq_table *t, void *obj) {
  uint32_t i;
  if (t->free_head != RVQ_NONE) {
    i = t->free_head;
    t->free_head = t->v[i].next_free;
  } else {
    i = t->len++;
    t->v[i].gen = 1;
  }
  t->v[i].obj = obj;
  t->v[i].next_free = RVQ_NONE;
  t->live++;
  return ((uint64_t)t->v[i].gen << 32) | i;
}

static void table_del(rvq_table *t, uint64_t h) {
  uint32_t i = (uint32_t)h;
  t->v[i].obj = NULL;
  t->v[i].gen++;
  if (t->v[i].gen == 0)
    t->v[i].gen = 1;
  t->v[i].next_free = t->free_head;
  t->free_head = i;
  t->live--;
}

/* ---- objects ------------------------------------------------------------- */

enum rvq_state {
  RVQ_E_FREE = 0,
  RVQ_E_READY,
  RVQ_E_IN_FLIGHT,
  RVQ_E_DEFERRED,
  RVQ_E_DONE,
};

typedef struct rvq_topic rvq_topic;
typedef struct rvq_channel rvq_channel;

/* A DPUB waiting for its publish to be acknowledged (deliver_after_ack). */
typedef struct rvq_pend {
  uint64_t seq;
  int64_t due_ns;
  int64_t ts_ns;
} rvq_pend;
typedef struct rvq_consumer rvq_consumer;

/* One message's metadata on one channel, from take to finish. */
typedef struct rvq_entry {
  uint64_t seq;
  int64_t ts_ns;
  int64_t deadline_ns;   /* IN_FLIGHT: timeout; DEFERRED: due */
  int64_t delivered_ns;  /* IN_FLIGHT: for TOUCH's cap */
  rvq_channel *ch;
  rvq_consumer *owner;   /* IN_FLIGHT */
  uint32_t timer_pos;    /* in q->timers, or RVQ_NONE */
  uint32_t floor_pos;    /* in ch->fheap, or RVQ_NONE (DONE, FREE) */
  uint32_t prev;         /* consumer's in-flight list */
  uint32_t next;         /* in-flight list, ready FIFO, free list */
  uint16_t attempts;
  uint8_t state;
} rvq_entry;

typedef struct rvq_timer {
  int64_t deadline_ns;
  uint64_t order;
  uint32_t entry;
} rvq_timer;

struct rvq_topic {
  uint64_t handle;
  char name[RV_QUEUE_NAME_MAX_BYTES + 1];
  uint64_t hash;
  bool ephemeral;
  bool paused;
  uint16_t id_prefix;
  uint64_t next_seq;   /* the next publish's seq */
  uint64_t dist_end;   /* first seq not handed to channels */
  uint64_t acked_end;  /* first seq the store cannot serve yet */
  rvq_pend *pend;      /* DPUBs handed to channels, waiting for their ack */
  uint32_t pend_head, pend_len, pend_cap;
  uint64_t message_count;
  uint64_t message_bytes;
  void *store;
  rvq_topic *prev, *next;        /* queue's creation order */
  rvq_channel *ch_head, *ch_tail;
  size_t nchannels;
  rvq_nmap channels;
};

struct rvq_channel {
  uint64_t handle;
  rvq_topic *topic;
  char name[RV_QUEUE_NAME_MAX_BYTES + 1];
  uint64_t hash;
  bool ephemeral;
  bool paused;
  bool restoring;                    /* store ctx is not ours to delete yet */
  void *store;
  rvq_channel *prev, *next;          /* topic's creation order */
  rvq_consumer *c_head, *c_tail;     /* subscription order */
  size_t nconsumers;
  rvq_consumer *rr;                  /* ready ring: next to serve */
  uint64_t start_seq;
  uint64_t cursor;
  uint64_t early;                    /* records with seq >= cursor */
  rv_qstore_range *ranges;           /* finished ahead of the cursor (restore) */
  uint32_t nranges, range_head, ranges_cap;
  uint64_t ranges_total;
  rvq_map map;                       /* seq -> entry */
  uint32_t *fheap;                   /* live records by seq */
  uint32_t fheap_len, fheap_cap;
  uint32_t ready_head, ready_tail;
  uint64_t ready_len;
  uint64_t records;                  /* entries incl. tombstones */
  uint64_t in_flight;
  uint64_t deferred;
  uint64_t held;
  uint64_t delivery_count, finish_count, requeue_count, timeout_count, lost_count;
};

struct rvq_consumer {
  uint64_t handle;
  rvq_channel *ch;
  uint64_t cookie;
  rvq_consumer *prev, *next;       /* channel's subscription order */
  rvq_consumer *rr_prev, *rr_next; /* ready ring */
  bool in_ring;
  bool timeout_notify;
  bool hold_slots;
  int64_t rdy;
  int64_t msg_timeout_ns;
  int64_t connect_ns;
  uint32_t if_head, if_tail;       /* in-flight list, delivery order */
  uint64_t in_flight;
  uint64_t held;
  rvq_map holds;                   /* seq -> hold count */
  uint64_t message_count, finish_count, requeue_count, timeout_count;
};

struct rv_queue {
  rv_queue_opts o;
  int64_t now_ns;
  rvq_table topics_t, channels_t, consumers_t;
  rvq_topic *t_head, *t_tail;
  rvq_nmap topics;
  uint16_t next_id_prefix;
  rvq_entry *entries;
  uint32_t entries_cap, entries_len, entries_free, entries_nfree;
  rvq_timer *timers;
  uint32_t timers_len, timers_cap;
  uint64_t timer_order;
  rv_queue_stats st;
  char errmsg[RV_QUEUE_ERRMSG_MAX];
  char check_msg[RVQ_CHECK_MSG_MAX];
};

/* ---- small helpers ------------------------------------------------------- */

/*
 * Record the specific sentence of a failure for rv_queue_errmsg, and return
 * the code, so that every failing return is one line.
 */
__attribute__((format(printf, 3, 4))) static int fail(rv_queue *q, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(q->errmsg, sizeof q->errmsg, fmt, ap);
  va_end(ap);
  return rc;
}

/* Time only moves forward inside the core: timers and caps stay ordered even
 * if the shell's clock steps back. */
static int64_t clock_in(rv_queue *q, int64_t now_ns) {
  if (now_ns < q->now_ns)
    now_ns = q->now_ns;
  q->now_ns = now_ns;
  return now_ns;
}

static int64_t sat_add(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b)
    return INT64_MAX;
  return a + b;
}

static bool is_ephemeral(const char *name) {
  size_t n = strlen(name);
  return n >= RVQ_EPHEMERAL_LEN && memcmp(name + n - RVQ_EPHEMERAL_LEN, RV_QUEUE_EPHEMERAL_SUFFIX,
                                          RVQ_EPHEMERAL_LEN) == 0;
}

uint64_t rv_queue_guid(uint16_t id_prefix, uint64_t seq) {
  return ((uint64_t)id_prefix << RV_QUEUE_ID_SEQ_BITS) | (seq & RVQ_SEQ_MASK);
}

/* The seq an id names on topic t, or 0 if it cannot be one of t's. */
static uint64_t guid_seq(const rvq_topic *t, uint64_t guid) {
  if ((guid >> RV_QUEUE_ID_SEQ_BITS) != t->id_prefix)
    return 0;
  uint64_t seq = guid & RVQ_SEQ_MASK;
  return seq < t->next_seq ? seq : 0;
}

static const char *fmt_id(uint64_t guid, char buf[RV_NSQ_MSG_ID_SIZE_BYTES + 1]) {
  rv_nsq_id_format(guid, (uint8_t *)buf);
  buf[RV_NSQ_MSG_ID_SIZE_BYTES] = '\0';
  return buf;
}

/* No list, no room: a call without an event list delivers nothing. */
static bool ev_reserve(rv_queue_events *ev, size_t extra) {
  if (!ev)
    return false;
  if (ev->len + extra <= ev->cap)
    return true;
  size_t ncap = ev->cap ? ev->cap : RVQ_ARRAY_MIN_CAP;
  while (ncap < ev->len + extra)
    ncap *= 2;
  rv_queue_event *nv = realloc(ev->v, ncap * sizeof *nv);
  if (!nv)
    return false;
  ev->v = nv;
  ev->cap = ncap;
  return true;
}

/* Append an event; callers reserve first, so a NULL here only drops it. */
static rv_queue_event *ev_push(rv_queue_events *ev, int type) {
  if (!ev || !ev_reserve(ev, 1))
    return NULL;
  rv_queue_event *e = &ev->v[ev->len++];
  memset(e, 0, sizeof *e);
  e->type = type;
  return e;
}

void rv_queue_events_init(rv_queue_events *ev) { memset(ev, 0, sizeof *ev); }
void rv_queue_events_clear(rv_queue_events *ev) { ev->len = 0; }
void rv_queue_events_free(rv_queue_events *ev) {
  free(ev->v);
  memset(ev, 0, sizeof *ev);
}

/* ---- timer heap ---------------------------------------------------------- */
/*
 * One heap for every in-flight timeout and deferral of the queue, ordered by
 * (deadline, arming order): libuv's rule, so equal deadlines fire in the
 * order they were armed.  Each entry knows its position for O(log n)
 * removal (FIN, REQ, TOUCH).
 */
static inline bool timer_less(const rvq_timer *a, const rvq_timer *b) {
  return a->deadline_ns < b->deadline_ns ||
         (a->deadline_ns == b->deadline_ns && a->order < b->order);
}

static inline void timer_set(rv_queue *q, uint32_t i, rvq_timer t) {
  q->timers[i] = t;
  q->entries[t.entry].timer_pos = i;
}

static void timer_up(rv_queue *q, uint32_t i) {
  rvq_timer t = q->timers[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!timer_less(&t, &q->timers[p]))
      break;
    timer_set(q, i, q->timers[p]);
    i = p;
  }
  timer_set(q, i, t);
}

static void timer_down(rv_queue *q, uint32_t i) {
  rvq_timer t = q->timers[i];
  for (;;) {
    uint32_t l = 2 * i + 1;
    if (l >= q->timers_len)
      break;
    uint32_t m = l;
    if (l + 1 < q->timers_len && timer_less(&q->timers[l + 1], &q->timers[l]))
      m = l + 1;
    if (!timer_less(&q->timers[m], &t))
      break;
    timer_set(q, i, q->timers[m]);
    i = m;
  }
  timer_set(q, i, t);
}

static bool timer_reserve(rv_queue *q, size_t extra) {
  return grow((void **)&q->timers, &q->timers_cap, sizeof *q->timers, q->timers_len + extra);
}

/* Arm entry e at deadline; room reserved. */
static void timer_push(rv_queue *q, uint32_t e, int64_t deadline_ns) {
  uint32_t i = q->timers_len++;
  q->timers[i] = (rvq_timer){deadline_ns, q->timer_order++, e};
  q->entries[e].deadline_ns = deadline_ns;
  timer_up(q, i);
}

static void timer_remove(rv_queue *q, uint32_t e) {
  uint32_t i = q->entries[e].timer_pos;
  if (i == RVQ_NONE)
    return;
  q->entries[e].timer_pos = RVQ_NONE;
  uint32_t last = --q->timers_len;
  if (i == last)
    return;
  q->timers[i] = q->timers[last];
  q->entries[q->timers[i].entry].timer_pos = i;
  if (i > 0 && timer_less(&q->timers[i], &q->timers[(i - 1) / 2]))
    timer_up(q, i);
  else
    timer_down(q, i);
}

/* ---- floor heap (per channel: live records by seq) ----------------------- */

static inline uint64_t fseq(const rv_queue *q, uint32_t e) { return q->entries[e].seq; }

static inline void fheap_set(rv_queue *q, rvq_channel *ch, uint32_t i, uint32_t e) {
  ch->fheap[i] = e;
  q->entries[e].floor_pos = i;
}

static void fheap_up(rv_queue *q, rvq_channel *ch, uint32_t i) {
  uint32_t e = ch->fheap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (fseq(q, ch->fheap[p]) <= fseq(q, e))
      break;
    fheap_set(q, ch, i, ch->fheap[p]);
    i = p;
  }
  fheap_set(q, ch, i, e);
}

static void fheap_down(rv_queue *q, rvq_channel *ch, uint32_t i) {
  uint32_t e = ch->fheap[i];
  for (;;) {
    uint32_t l = 2 * i + 1;
    if (l >= ch->fheap_len)
      break;
    uint32_t m = l;
    if (l + 1 < ch->fheap_len && fseq(q, ch->fheap[l + 1]) < fseq(q, ch->fheap[l]))
      m = l + 1;
    if (fseq(q, ch->fheap[m]) >= fseq(q, e))
      break;
    fheap_set(q, ch, i, ch->fheap[m]);
    i = m;
  }
  fheap_set(q, ch, i, e);
}

static void fheap_remove(rv_queue *q, rvq_channel *ch, uint32_t e) {
  uint32_t i = q->entries[e].floor_pos;
  if (i == RVQ_NONE)
    return;
  q->entries[e].floor_pos = RVQ_NONE;
  uint32_t last = --ch->fheap_len;
  if (i == last)
    return;
  fheap_set(q, ch, i, ch->fheap[last]);
  if (i > 0 && fseq(q, ch->fheap[i]) < fseq(q, ch->fheap[(i - 1) / 2]))
    fheap_up(q, ch, i);
  else
    fheap_down(q, ch, i);
}

/* ---- records ------------------------------------------------------------- */

/*
 * Make sure `n` new records can be created on ch without allocating: the
 * slab, the channel's map and its floor heap.  Separate from creation so a
 * failure leaves nothing half done.
 */
static bool slab_reserve(rv_queue *q, size_t n) {
  if (q->entries_nfree >= n)
    return true;
  return grow((void **)&q->entries, &q->entries_cap, sizeof *q->entries,
              (size_t)q->entries_len + (n - q->entries_nfree));
}

static bool chan_reserve(rvq_channel *ch, uint32_t n) {
  return map_reserve(&ch->map, n) &&
         grow((void **)&ch->fheap, &ch->fheap_cap, sizeof *ch->fheap, (size_t)ch->fheap_len + n);
}

static bool records_reserve(rv_queue *q, rvq_channel *ch, uint32_t n) {
  return slab_reserve(q, n) && chan_reserve(ch, n);
}

/* A new live record for seq on ch (room reserved); state still FREE. */
static uint32_t entry_new(rv_queue *q, rvq_channel *ch, uint64_t seq, int64_t ts_ns,
                          uint16_t attempts) {
  uint32_t e;
  if (q->entries_free != RVQ_NONE) {
    e = q->entries_free;
    q->entries_free = q->entries[e].next;
    q->entries_nfree--;
  } else {
    e = q->entries_len++;
  }
  rvq_entry *E = &q->entries[e];
  memset(E, 0, sizeof *E);
  E->seq = seq;
  E->ts_ns = ts_ns;
  E->ch = ch;
  E->attempts = attempts;
  E->timer_pos = RVQ_NONE;
  E->prev = E->next = RVQ_NONE;
  map_put(&ch->map, seq, e);
  uint32_t i = ch->fheap_len++;
  ch->fheap[i] = e;
  E->floor_pos = i;
  fheap_up(q, ch, i);
  ch->records++;
  q->st.records++;
  return e;
}

/* Forget a record entirely (it must be in no list). */
static void entry_free(rv_queue *q, uint32_t e) {
  rvq_entry *E = &q->entries[e];
  rvq_channel *ch = E->ch;
  timer_remove(q, e);
  fheap_remove(q, ch, e);
  map_del(&ch->map, E->seq);
  ch->records--;
  q->st.records--;
  E->state = RVQ_E_FREE;
  E->ch = NULL;
  E->next = q->entries_free;
  q->entries_free = e;
  q->entries_nfree++;
}

/* ---- consumers: ready ring and holds ------------------------------------- */

static bool consumer_can_take(const rvq_consumer *c) {
  return c->rdy > 0 && (uint64_t)c->rdy > c->in_flight + c->held;
}

static void ring_insert(rvq_consumer *c) {
  rvq_channel *ch = c->ch;
  if (!ch->rr) {
    c->rr_next = c->rr_prev = c;
    ch->rr = c;
  } else {
    /* Just before the next to serve: the end of the current round. */
    rvq_consumer *h = ch->rr;
    c->rr_next = h;
    c->rr_prev = h->rr_prev;
    h->rr_prev->rr_next = c;
    h->rr_prev = c;
  }
  c->in_ring = true;
}

static void ring_remove(rvq_consumer *c) {
  rvq_channel *ch = c->ch;
  if (c->rr_next == c) {
    ch->rr = NULL;
  } else {
    c->rr_prev->rr_next = c->rr_next;
    c->rr_next->rr_prev = c->rr_prev;
    if (ch->rr == c)
      ch->rr = c->rr_next;
  }
  c->rr_next = c->rr_prev = NULL;
  c->in_ring = false;
}

/* Keep ring membership equal to "can take a message now". */
static void consumer_update(rvq_consumer *c) {
  bool can = consumer_can_take(c);
  if (can && !c->in_ring)
    ring_insert(c);
  else if (!can && c->in_ring)
    ring_remove(c);
}

/* Rule 1 of held slots: C keeps a slot for seq.  Past max_held (or without
 * memory) the slot is freed as nsqd would, and counted. */
static void hold_add(rv_queue *q, rvq_consumer *c, uint64_t seq) {
  if (q->st.held >= q->o.max_held) {
    q->st.held_dropped++;
    return;
  }
  uint32_t *v = map_find(&c->holds, seq);
  if (v) {
    (*v)++;
  } else {
    if (!map_reserve(&c->holds, 1)) {
      q->st.held_dropped++;
      return;
    }
    map_put(&c->holds, seq, 1);
  }
  c->held++;
  c->ch->held++;
  q->st.held++;
}

/* Rule 2: one hold on seq goes back to C. */
static bool hold_release(rv_queue *q, rvq_consumer *c, uint64_t seq) {
  uint32_t *v = map_find(&c->holds, seq);
  if (!v)
    return false;
  if (*v > 1)
    (*v)--;
  else
    map_del(&c->holds, seq);
  c->held--;
  c->ch->held--;
  q->st.held--;
  return true;
}

static void holds_release_all(rv_queue *q, rvq_consumer *c) {
  c->ch->held -= c->held;
  q->st.held -= c->held;
  c->held = 0;
  map_free(&c->holds);
}

/* ---- record state changes ------------------------------------------------ */

static void ready_push(rv_queue *q, uint32_t e) {
  rvq_entry *E = &q->entries[e];
  rvq_channel *ch = E->ch;
  E->state = RVQ_E_READY;
  E->next = RVQ_NONE;
  if (ch->ready_tail == RVQ_NONE)
    ch->ready_head = e;
  else
    q->entries[ch->ready_tail].next = e;
  ch->ready_tail = e;
  ch->ready_len++;
}

static uint32_t ready_pop(rv_queue *q, rvq_channel *ch) {
  uint32_t e = ch->ready_head;
  ch->ready_head = q->entries[e].next;
  if (ch->ready_head == RVQ_NONE)
    ch->ready_tail = RVQ_NONE;
  q->entries[e].next = RVQ_NONE;
  ch->ready_len--;
  return e;
}

/* Timer heap room reserved. */
static void defer_entry(rv_queue *q, uint32_t e, int64_t due_ns) {
  rvq_entry *E = &q->entries[e];
  E->state = RVQ_E_DEFERRED;
  E->ch->deferred++;
  q->st.deferred++;
  timer_push(q, e, due_ns);
}

/* Take an in-flight record off its consumer (FIN, REQ, timeout, leave). */
static void inflight_unlink(rv_queue *q, uint32_t e) {
  rvq_entry *E = &q->entries[e];
  rvq_consumer *c = E->owner;
  if (E->prev != RVQ_NONE)
    q->entries[E->prev].next = E->next;
  else
    c->if_head = E->next;
  if (E->next != RVQ_NONE)
    q->entries[E->next].prev = E->prev;
  else
    c->if_tail = E->prev;
  E->prev = E->next = RVQ_NONE;
  E->owner = NULL;
  c->in_flight--;
  E->ch->in_flight--;
  timer_remove(q, e);
}

/* A record is finished: dropped, or kept as a tombstone while the cursor
 * has not reached it (the cursor rests below every record it has not
 * passed), so the cursor will not take it again. */
static void entry_finish(rv_queue *q, uint32_t e) {
  rvq_entry *E = &q->entries[e];
  if (E->seq >= E->ch->cursor) {
    timer_remove(q, e);
    fheap_remove(q, E->ch, e);
    E->state = RVQ_E_DONE;
  } else {
    entry_free(q, e);
  }
}

/* ---- delivery ------------------------------------------------------------ */

/*
 * Move the cursor over seqs already taken ahead of it (finished ranges from
 * recovery, early records, dropping tombstones), so that it always rests on
 * a never-taken seq and the floor, min(live records, cursor) - 1, is exact.
 * Called wherever the cursor moves or a record appears at it.
 */
static void cursor_settle(rv_queue *q, rvq_channel *ch) {
  for (;;) {
    if (ch->range_head < ch->nranges && ch->ranges[ch->range_head].first == ch->cursor) {
      rv_qstore_range r = ch->ranges[ch->range_head++];
      ch->ranges_total -= r.last - r.first + 1;
      ch->cursor = r.last + 1;
      if (ch->range_head == ch->nranges)
        ch->range_head = ch->nranges = 0;
      continue;
    }
    if (ch->early > 0) {
      uint32_t x = map_get(&ch->map, ch->cursor);
      if (x != RVQ_NONE) {
        ch->early--;
        ch->cursor++;
        if (q->entries[x].state == RVQ_E_DONE)
          entry_free(q, x);
        continue;
      }
    }
    return;
  }
}

/* Why take_fresh stopped without a message. */
enum { RVQ_TAKE_GOT = 1, RVQ_TAKE_NONE = 0, RVQ_TAKE_STALL = -1 };

/*
 * The channel's next never-taken message from the log, as a new record, or
 * nothing.  Skips what was taken ahead of the cursor (finished ranges,
 * early records), messages the store lost, and defers DPUB messages the
 * channel meets only now (a first channel inheriting the topic's backlog).
 * Stalls, leaving the cursor where it is, at a limit or a store error; the
 * next FIN or timer pumps again.
 */
static int take_fresh(rv_queue *q, rvq_channel *ch, int64_t now, uint32_t *out) {
  rvq_topic *t = ch->topic;
  uint64_t end = t->dist_end < t->acked_end ? t->dist_end : t->acked_end;
  for (;;) {
    if (ch->cursor >= end)
      return RVQ_TAKE_NONE;
    if (ch->records >= q->o.max_records_per_channel || q->st.records >= q->o.max_records)
      return RVQ_TAKE_STALL;
    if (!records_reserve(q, ch, 1) || !timer_reserve(q, 1))
      return RVQ_TAKE_STALL;
    rv_qstore_meta m = {0};
    int rc = q->o.ops->meta(q->o.store, t->store, ch->cursor, &m);
    if (rc == RV_ENOTFOUND) {
      ch->lost_count++;
      q->st.lost++;
      ch->cursor++;
      cursor_settle(q, ch);
      continue;
    }
    if (rc != 0)
      return RVQ_TAKE_STALL;
    if (m.defer_until_ns > now && ch->deferred >= q->o.max_deferred_per_channel)
      return RVQ_TAKE_STALL;
    uint32_t e = entry_new(q, ch, ch->cursor++, m.ts_ns, 0);
    cursor_settle(q, ch);
    if (m.defer_until_ns > now) {
      defer_entry(q, e, m.defer_until_ns);
      continue;
    }
    *out = e;
    return RVQ_TAKE_GOT;
  }
}

/* Hand record e to consumer c (timer room reserved): nsqd's
 * StartInFlightTimeout plus the client's SendingMessage. */
static void deliver(rv_queue *q, rvq_consumer *c, uint32_t e, int64_t now, rv_queue_events *ev) {
  rvq_entry *E = &q->entries[e];
  rvq_channel *ch = c->ch;
  E->state = RVQ_E_IN_FLIGHT;
  E->owner = c;
  if (E->attempts < UINT16_MAX)
    E->attempts++;
  E->delivered_ns = now;
  E->prev = c->if_tail;
  E->next = RVQ_NONE;
  if (c->if_tail != RVQ_NONE)
    q->entries[c->if_tail].next = e;
  else
    c->if_head = e;
  c->if_tail = e;
  c->in_flight++;
  c->message_count++;
  ch->in_flight++;
  ch->delivery_count++;
  q->st.delivered++;
  timer_push(q, e, sat_add(now, c->msg_timeout_ns));
  E = &q->entries[e];
  rv_queue_event *x = ev_push(ev, RV_QUEUE_EV_DELIVER);
  if (x) {
    x->attempts = E->attempts;
    x->consumer = c->handle;
    x->cookie = c->cookie;
    x->topic = ch->topic->handle;
    x->channel = ch->handle;
    x->seq = E->seq;
    x->guid = rv_queue_guid(ch->topic->id_prefix, E->seq);
    x->ts_ns = E->ts_ns;
    x->topic_store = ch->topic->store;
  }
}

/*
 * Deliver while the channel has a ready message and a consumer with a free
 * slot: requeued messages first, then fresh ones from the log; consumers in
 * round robin from the one after the last served.
 */
static void pump(rv_queue *q, rvq_channel *ch, int64_t now, rv_queue_events *ev) {
  if (ch->paused)
    return;
  while (ch->rr) {
    if (!ev_reserve(ev, 1) || !timer_reserve(q, 1))
      return;
    uint32_t e;
    if (ch->ready_head != RVQ_NONE) {
      e = ready_pop(q, ch);
    } else if (take_fresh(q, ch, now, &e) != RVQ_TAKE_GOT) {
      return;
    }
    rvq_consumer *c = ch->rr;
    deliver(q, c, e, now, ev);
    ch->rr = c->rr_next;
    consumer_update(c);
  }
}

static void pump_topic(rv_queue *q, rvq_topic *t, int64_t now, rv_queue_events *ev) {
  for (rvq_channel *ch = t->ch_head; ch; ch = ch->next)
    pump(q, ch, now, ev);
}

/* ---- lifecycle ----------------------------------------------------------- */

void rv_queue_opts_default(rv_queue_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_topics = RV_QUEUE_MAX_TOPICS_DEFAULT;
  o->max_channels = RV_QUEUE_MAX_CHANNELS_DEFAULT;
  o->max_channels_per_topic = RV_QUEUE_MAX_CHANNELS_PER_TOPIC_DEFAULT;
  o->max_consumers = RV_QUEUE_MAX_CONSUMERS_DEFAULT;
  o->max_consumers_per_channel = RV_QUEUE_MAX_CONSUMERS_PER_CHANNEL_DEFAULT;
  o->max_deferred_per_channel = RV_QUEUE_MAX_DEFERRED_PER_CHANNEL_DEFAULT;
  o->max_records_per_channel = RV_QUEUE_MAX_RECORDS_PER_CHANNEL_DEFAULT;
  o->max_records = RV_QUEUE_MAX_RECORDS_DEFAULT;
  o->max_held = RV_QUEUE_MAX_HELD_DEFAULT;
  o->max_rdy_count = RV_QUEUE_MAX_RDY_COUNT_DEFAULT;
  o->msg_timeout_ns = RV_QUEUE_MSG_TIMEOUT_NS_DEFAULT;
  o->max_msg_timeout_ns = RV_QUEUE_MAX_MSG_TIMEOUT_NS_DEFAULT;
  o->max_req_timeout_ns = RV_QUEUE_MAX_REQ_TIMEOUT_NS_DEFAULT;
  o->id_prefix_first = 1;
}

/* Options are checked once here so that the hot paths can trust them. */
static const char *opts_invalid(const rv_queue_opts *o) {
  if (!o->ops || !o->ops->append || !o->ops->meta)
    return "opts.ops with append and meta is required";
  if (!o->max_topics || !o->max_channels || !o->max_channels_per_topic || !o->max_consumers)
    return "max_topics, max_channels, max_channels_per_topic and max_consumers must be >= 1";
  if (o->max_topics > RVQ_INDEX_MAX || o->max_channels > RVQ_INDEX_MAX ||
      o->max_consumers > RVQ_INDEX_MAX)
    return "max_topics, max_channels and max_consumers must fit 32 bits";
  if (!o->max_records || o->max_records > RVQ_INDEX_MAX || !o->max_records_per_channel)
    return "max_records must be 1..2^32-2 and max_records_per_channel >= 1";
  if (o->max_rdy_count < 1 || o->max_rdy_count > INT32_MAX)
    return "max_rdy_count must be 1..2^31-1";
  if (o->max_msg_timeout_ns < RV_QUEUE_MIN_MSG_TIMEOUT_NS)
    return "max_msg_timeout_ns must be >= 1 s";
  if (o->msg_timeout_ns < RV_QUEUE_MIN_MSG_TIMEOUT_NS || o->msg_timeout_ns > o->max_msg_timeout_ns)
    return "msg_timeout_ns must be 1 s..max_msg_timeout_ns";
  if (o->max_req_timeout_ns < 0)
    return "max_req_timeout_ns must be >= 0";
  return NULL;
}

int rv_queue_create(rv_queue **out, const rv_queue_opts *opts, const char **why) {
  *out = NULL;
  const char *bad = opts ? opts_invalid(opts) : "opts is required";
  if (bad) {
    if (why)
      *why = bad;
    return RV_QUEUE_EINVAL;
  }
  rv_queue *q = calloc(1, sizeof *q);
  if (!q)
    return RV_QUEUE_ENOMEM;
  q->o = *opts;
  q->topics_t.free_head = q->channels_t.free_head = q->consumers_t.free_head = RVQ_NONE;
  q->entries_free = RVQ_NONE;
  q->next_id_prefix = opts->id_prefix_first;
  q->now_ns = INT64_MIN;
  *out = q;
  return RV_QUEUE_OK;
}

static void channel_free_mem(rvq_channel *ch) {
  rvq_consumer *c = ch->c_head;
  while (c) {
    rvq_consumer *n = c->next;
    map_free(&c->holds);
    free(c);
    c = n;
  }
  map_free(&ch->map);
  free(ch->fheap);
  free(ch->ranges);
  free(ch);
}

void rv_queue_destroy(rv_queue *q) {
  if (!q)
    return;
  rvq_topic *t = q->t_head;
  while (t) {
    rvq_topic *tn = t->next;
    rvq_channel *ch = t->ch_head;
    while (ch) {
      rvq_channel *cn = ch->next;
      channel_free_mem(ch);
      ch = cn;
    }
    nmap_free(&t->channels);
    free(t->pend);
    free(t);
    t = tn;
  }
  nmap_free(&q->topics);
  free(q->topics_t.v);
  free(q->channels_t.v);
  free(q->consumers_t.v);
  free(q->entries);
  free(q->timers);
  free(q);
}

const char *rv_queue_errmsg(const rv_queue *q) { return q->errmsg; }

/* ---- topics -------------------------------------------------------------- */

static int check_name(rv_queue *q, const char *what, const char *name) {
  if (!name || !rv_nsq_valid_name(name, strlen(name)))
    return fail(q, RV_QUEUE_ENAME,
                "%s name \"%.*s\" is invalid: 1..%d characters of [.a-zA-Z0-9_-], "
                "optionally ending in #ephemeral", what, RV_QUEUE_NAME_MAX_BYTES + 1,
                name ? name : "", RV_QUEUE_NAME_MAX_BYTES);
  return RV_QUEUE_OK;
}

static rvq_topic *topic_lookup(const rv_queue *q, const char *name) {
  return nmap_get(&q->topics, name_hash(q->o.hash_seed, name), name);
}

/*
 * A new topic object, linked in, store ctx attached.  Shared by create (which
 * asks the store for a ctx first) and restore (which is given one).
 */
static int topic_new(rv_queue *q, const char *name, uint16_t id_prefix, void *store,
                     rvq_topic **out) {
  if (q->topics_t.live >= q->o.max_topics)
    return fail(q, RV_QUEUE_ETOPICS, "cannot create topic \"%s\": the queue has %zu topics (limit "
                "max_topics); delete unused topics", name, q->topics_t.live);
  rvq_topic *t = calloc(1, sizeof *t);
  if (!t || !table_reserve(&q->topics_t) || !nmap_reserve(&q->topics, 1)) {
    free(t);
    return fail(q, RV_QUEUE_ENOMEM, "out of memory creating topic \"%s\"", name);
  }
  snprintf(t->name, sizeof t->name, "%s", name);
  t->hash = name_hash(q->o.hash_seed, name);
  t->ephemeral = is_ephemeral(name);
  t->id_prefix = id_prefix;
  t->next_seq = 1;
  t->dist_end = 1;
  t->acked_end = 1;
  t->store = store;
  t->handle = table_add(&q->topics_t, t);
  nmap_put_raw(&q->topics, t->hash, t->name, t);
  t->prev = q->t_tail;
  if (q->t_tail)
    q->t_tail->next = t;
  else
    q->t_head = t;
  q->t_tail = t;
  q->st.topics++;
  *out = t;
  return RV_QUEUE_OK;
}

static int topic_get_or_create(rv_queue *q, const char *name, rvq_topic **out) {
  int rc = check_name(q, "topic", name);
  if (rc)
    return rc;
  rvq_topic *t = topic_lookup(q, name);
  if (t) {
    *out = t;
    return RV_QUEUE_OK;
  }
  if (q->topics_t.live >= q->o.max_topics)
    return fail(q, RV_QUEUE_ETOPICS, "cannot create topic \"%s\": the queue has %zu topics (limit "
                "max_topics); delete unused topics", name, q->topics_t.live);
  uint16_t prefix = q->next_id_prefix;
  void *store = NULL;
  if (q->o.ops->topic_create) {
    rc = q->o.ops->topic_create(q->o.store, name, prefix, is_ephemeral(name), &store);
    if (rc)
      return fail(q, RV_QUEUE_ESTORE, "cannot create topic \"%s\": store: %s", name,
                  rt_err_text(rc));
  }
  rc = topic_new(q, name, prefix, store, out);
  if (rc) {
    if (q->o.ops->topic_delete)
      q->o.ops->topic_delete(q->o.store, store);
    return rc;
  }
  q->next_id_prefix++;
  return RV_QUEUE_OK;
}

int rv_queue_topic_create(rv_queue *q, int64_t now_ns, const char *name, uint64_t *topic) {
  clock_in(q, now_ns);
  rvq_topic *t;
  int rc = topic_get_or_create(q, name, &t);
  if (rc)
    return rc;
  if (topic)
    *topic = t->handle;
  return RV_QUEUE_OK;
}

int rv_queue_topic_find(const rv_queue *q, const char *name, uint64_t *topic) {
  rvq_topic *t = name ? topic_lookup(q, name) : NULL;
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  if (topic)
    *topic = t->handle;
  return RV_QUEUE_OK;
}

static rvq_topic *topic_of(rv_queue *q, uint64_t h) {
  rvq_topic *t = table_get(&q->topics_t, h);
  if (!t)
    fail(q, RV_QUEUE_ENOTOPIC, "no topic with handle %016llx (deleted?)", (unsigned long long)h);
  return t;
}

static rvq_channel *channel_of(rv_queue *q, uint64_t h) {
  rvq_channel *ch = table_get(&q->channels_t, h);
  if (!ch)
    fail(q, RV_QUEUE_ENOCHANNEL, "no channel with handle %016llx (deleted?)",
         (unsigned long long)h);
  return ch;
}

static rvq_consumer *consumer_of(rv_queue *q, uint64_t h) {
  rvq_consumer *c = table_get(&q->consumers_t, h);
  if (!c)
    fail(q, RV_QUEUE_ENOCONSUMER, "no consumer with handle %016llx (gone?)", (unsigned long long)h);
  return c;
}

static void topic_destroy(rv_queue *q, rvq_topic *t, rv_queue_events *ev);
static uint64_t channel_floor(const rv_queue *q, const rvq_channel *ch);

/* ---- channels ------------------------------------------------------------ */

static rvq_channel *channel_lookup(const rv_queue *q, const rvq_topic *t, const char *name) {
  return nmap_get(&t->channels, name_hash(q->o.hash_seed, name), name);
}

static int channel_limits(rv_queue *q, rvq_topic *t, const char *name) {
  if (t->nchannels >= q->o.max_channels_per_topic)
    return fail(q, RV_QUEUE_ETOPIC_CHANNELS, "cannot create channel \"%s\": topic \"%s\" has %zu "
                "channels (limit max_channels_per_topic)", name, t->name, t->nchannels);
  if (q->channels_t.live >= q->o.max_channels)
    return fail(q, RV_QUEUE_ECHANNELS,
                "cannot create channel \"%s\" in topic \"%s\": the queue has %zu channels "
                "(limit max_channels)", name, t->name, q->channels_t.live);
  return RV_QUEUE_OK;
}

/*
 * A new channel starting at the topic's dist_end (so the first channel takes
 * over what the topic held back), after which an unpaused topic hands it
 * everything published.
 */
static int channel_new(rv_queue *q, rvq_topic *t, const char *name, void *store,
                       rvq_channel **out) {
  rvq_channel *ch = calloc(1, sizeof *ch);
  if (!ch || !table_reserve(&q->channels_t) || !nmap_reserve(&t->channels, 1)) {
    free(ch);
    return fail(q, RV_QUEUE_ENOMEM, "out of memory creating channel \"%s\"", name);
  }
  snprintf(ch->name, sizeof ch->name, "%s", name);
  ch->hash = name_hash(q->o.hash_seed, name);
  ch->ephemeral = is_ephemeral(name);
  ch->topic = t;
  ch->store = store;
  ch->start_seq = ch->cursor = t->dist_end;
  ch->ready_head = ch->ready_tail = RVQ_NONE;
  ch->handle = table_add(&q->channels_t, ch);
  nmap_put_raw(&t->channels, ch->hash, ch->name, ch);
  ch->prev = t->ch_tail;
  if (t->ch_tail)
    t->ch_tail->next = ch;
  else
    t->ch_head = ch;
  t->ch_tail = ch;
  t->nchannels++;
  q->st.channels++;
  if (!t->paused)
    t->dist_end = t->next_seq;
  *out = ch;
  return RV_QUEUE_OK;
}

static int channel_get_or_create(rv_queue *q, rvq_topic *t, const char *name, rvq_channel **out) {
  int rc = check_name(q, "channel", name);
  if (rc)
    return rc;
  rvq_channel *ch = channel_lookup(q, t, name);
  if (ch) {
    *out = ch;
    return RV_QUEUE_OK;
  }
  if ((rc = channel_limits(q, t, name)))
    return rc;
  void *store = NULL;
  if (q->o.ops->channel_create) {
    rc = q->o.ops->channel_create(q->o.store, t->store, name, is_ephemeral(name), t->dist_end,
                                  &store);
    if (rc)
      return fail(q, RV_QUEUE_ESTORE, "cannot create channel \"%s\" in topic \"%s\": store: %s",
                  name, t->name, rt_err_text(rc));
  }
  rc = channel_new(q, t, name, store, out);
  if (rc && q->o.ops->channel_delete)
    q->o.ops->channel_delete(q->o.store, store);
  return rc;
}

int rv_queue_channel_create(rv_queue *q, int64_t now_ns, uint64_t topic, const char *name,
                            uint64_t *channel) {
  clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  rvq_channel *ch;
  int rc = channel_get_or_create(q, t, name, &ch);
  if (rc)
    return rc;
  if (channel)
    *channel = ch->handle;
  return RV_QUEUE_OK;
}

int rv_queue_channel_find(const rv_queue *q, uint64_t topic, const char *name, uint64_t *channel) {
  rvq_topic *t = table_get(&q->topics_t, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  rvq_channel *ch = name ? channel_lookup(q, t, name) : NULL;
  if (!ch)
    return RV_QUEUE_ENOCHANNEL;
  if (channel)
    *channel = ch->handle;
  return RV_QUEUE_OK;
}

/* Drop every record of ch (delete, empty): no list survives this. */
static void channel_drop_records(rv_queue *q, rvq_channel *ch) {
  for (uint32_t i = 0; i < ch->map.cap && ch->map.len; i++) {
    if (!ch->map.slots[i].key)
      continue;
    uint32_t e = ch->map.slots[i].val;
    timer_remove(q, e);
    rvq_entry *E = &q->entries[e];
    if (E->state == RVQ_E_DEFERRED) {
      ch->deferred--;
    }
    E->state = RVQ_E_FREE;
    E->ch = NULL;
    E->floor_pos = RVQ_NONE;
    E->next = q->entries_free;
    q->entries_free = e;
    q->entries_nfree++;
    q->st.records--;
  }
  map_free(&ch->map);
  ch->fheap_len = 0;
  ch->records = 0;
  ch->early = 0;
  ch->ready_head = ch->ready_tail = RVQ_NONE;
  ch->ready_len = 0;
  ch->in_flight = 0;
  ch->deferred = 0;
  free(ch->ranges);
  ch->ranges = NULL;
  ch->nranges = ch->range_head = ch->ranges_cap = 0;
  ch->ranges_total = 0;
}

static void consumer_free(rv_queue *q, rvq_consumer *c) {
  rvq_channel *ch = c->ch;
  if (c->in_ring)
    ring_remove(c);
  holds_release_all(q, c);
  if (c->prev)
    c->prev->next = c->next;
  else
    ch->c_head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    ch->c_tail = c->prev;
  ch->nconsumers--;
  q->st.consumers--;
  table_del(&q->consumers_t, c->handle);
  free(c);
}

/*
 * Remove a channel with everything in it: its consumers are told to close
 * (nsqd closes their connections), the store forgets it, and an ephemeral
 * topic left with no channel goes as well (nsqd's DeleteExistingChannel).
 */
static void channel_destroy(rv_queue *q, rvq_channel *ch, rv_queue_events *ev) {
  rvq_topic *t = ch->topic;
  channel_drop_records(q, ch);
  while (ch->c_head) {
    rvq_consumer *c = ch->c_head;
    rv_queue_event *x = ev_push(ev, RV_QUEUE_EV_CLOSE);
    if (x) {
      x->consumer = c->handle;
      x->cookie = c->cookie;
      x->topic = t->handle;
      x->channel = ch->handle;
    }
    c->in_flight = 0;
    c->if_head = c->if_tail = RVQ_NONE;
    consumer_free(q, c);
  }
  if (q->o.ops->channel_delete && !ch->restoring)
    q->o.ops->channel_delete(q->o.store, ch->store);
  nmap_del(&t->channels, ch->hash, ch);
  if (ch->prev)
    ch->prev->next = ch->next;
  else
    t->ch_head = ch->next;
  if (ch->next)
    ch->next->prev = ch->prev;
  else
    t->ch_tail = ch->prev;
  t->nchannels--;
  q->st.channels--;
  rv_queue_event *x = ev_push(ev, RV_QUEUE_EV_CHANNEL_DELETED);
  if (x) {
    x->topic = t->handle;
    x->channel = ch->handle;
  }
  table_del(&q->channels_t, ch->handle);
  channel_free_mem(ch);
  if (t->ephemeral && t->nchannels == 0)
    topic_destroy(q, t, ev);
}

static void topic_destroy(rv_queue *q, rvq_topic *t, rv_queue_events *ev) {
  /* Channels first, without the ephemeral cascade coming back here. */
  bool eph = t->ephemeral;
  t->ephemeral = false;
  while (t->ch_head)
    channel_destroy(q, t->ch_head, ev);
  t->ephemeral = eph;
  if (q->o.ops->topic_delete)
    q->o.ops->topic_delete(q->o.store, t->store);
  nmap_del(&q->topics, t->hash, t);
  if (t->prev)
    t->prev->next = t->next;
  else
    q->t_head = t->next;
  if (t->next)
    t->next->prev = t->prev;
  else
    q->t_tail = t->prev;
  q->st.topics--;
  rv_queue_event *x = ev_push(ev, RV_QUEUE_EV_TOPIC_DELETED);
  if (x)
    x->topic = t->handle;
  table_del(&q->topics_t, t->handle);
  nmap_free(&t->channels);
  free(t->pend);
  free(t);
}

static size_t topic_consumers(const rvq_topic *t) {
  size_t n = 0;
  for (rvq_channel *ch = t->ch_head; ch; ch = ch->next)
    n += ch->nconsumers;
  return n;
}

int rv_queue_topic_delete(rv_queue *q, int64_t now_ns, uint64_t topic, rv_queue_events *ev) {
  clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  /* Every CLOSE must reach the shell, or a connection would linger. */
  if (ev && !ev_reserve(ev, topic_consumers(t) + t->nchannels + 1))
    return fail(q, RV_QUEUE_ENOMEM, "out of memory deleting topic \"%s\"", t->name);
  topic_destroy(q, t, ev);
  return RV_QUEUE_OK;
}

int rv_queue_channel_delete(rv_queue *q, int64_t now_ns, uint64_t channel, rv_queue_events *ev) {
  clock_in(q, now_ns);
  rvq_channel *ch = channel_of(q, channel);
  if (!ch)
    return RV_QUEUE_ENOCHANNEL;
  if (ev && !ev_reserve(ev, ch->nconsumers + 2))
    return fail(q, RV_QUEUE_ENOMEM, "out of memory deleting channel \"%s\"", ch->name);
  channel_destroy(q, ch, ev);
  return RV_QUEUE_OK;
}

/*
 * nsqd's Channel.Empty: drop what is queued, in flight and deferred; the
 * cursor jumps to what the topic has handed over.  In-flight messages of a
 * hold_slots consumer become holds: its handlers are still running.
 */
int rv_queue_channel_empty(rv_queue *q, int64_t now_ns, uint64_t channel, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_channel *ch = channel_of(q, channel);
  if (!ch)
    return RV_QUEUE_ENOCHANNEL;
  for (rvq_consumer *c = ch->c_head; c; c = c->next) {
    for (uint32_t e = c->if_head; e != RVQ_NONE; e = q->entries[e].next)
      if (c->hold_slots)
        hold_add(q, c, q->entries[e].seq);
    c->in_flight = 0;
    c->if_head = c->if_tail = RVQ_NONE;
  }
  uint64_t old_floor = channel_floor(q, ch);
  channel_drop_records(q, ch);
  ch->cursor = ch->topic->dist_end;
  if (q->o.ops->skip && old_floor + 1 < ch->cursor)
    q->o.ops->skip(q->o.store, ch->store, old_floor + 1, ch->cursor - 1);
  for (rvq_consumer *c = ch->c_head; c; c = c->next)
    consumer_update(c);
  pump(q, ch, now, ev);
  return RV_QUEUE_OK;
}

/*
 * nsqd's Topic.Empty drops only what the topic itself holds: here the
 * messages at and after dist_end.  With no channel the next one simply starts
 * after them; channels of a paused topic get them as a finished range.
 */
int rv_queue_topic_empty(rv_queue *q, int64_t now_ns, uint64_t topic, rv_queue_events *ev) {
  clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  if (t->dist_end >= t->next_seq)
    return RV_QUEUE_OK;
  for (rvq_channel *ch = t->ch_head; ch; ch = ch->next)
    if (!grow((void **)&ch->ranges, &ch->ranges_cap, sizeof *ch->ranges, (size_t)ch->nranges + 1))
      return fail(q, RV_QUEUE_ENOMEM, "out of memory emptying topic \"%s\"", t->name);
  rv_qstore_range r = {t->dist_end, t->next_seq - 1};
  for (rvq_channel *ch = t->ch_head; ch; ch = ch->next) {
    ch->ranges[ch->nranges++] = r;
    ch->ranges_total += r.last - r.first + 1;
    if (q->o.ops->skip)
      q->o.ops->skip(q->o.store, ch->store, r.first, r.last);
    cursor_settle(q, ch);
  }
  t->dist_end = t->next_seq;
  return RV_QUEUE_OK;
}

int rv_queue_topic_pause(rv_queue *q, int64_t now_ns, uint64_t topic, bool paused,
                         rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  if (t->paused == paused)
    return RV_QUEUE_OK;
  t->paused = paused;
  if (q->o.ops->set_paused)
    q->o.ops->set_paused(q->o.store, t->store, NULL, paused);
  if (!paused && t->nchannels > 0) {
    t->dist_end = t->next_seq;
    pump_topic(q, t, now, ev);
  }
  return RV_QUEUE_OK;
}

int rv_queue_channel_pause(rv_queue *q, int64_t now_ns, uint64_t channel, bool paused,
                           rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_channel *ch = channel_of(q, channel);
  if (!ch)
    return RV_QUEUE_ENOCHANNEL;
  if (ch->paused == paused)
    return RV_QUEUE_OK;
  ch->paused = paused;
  if (q->o.ops->set_paused)
    q->o.ops->set_paused(q->o.store, ch->topic->store, ch->store, paused);
  pump(q, ch, now, ev);
  return RV_QUEUE_OK;
}

/* ---- publish ------------------------------------------------------------- */

int rv_queue_publish(rv_queue *q, int64_t now_ns, uint64_t topic, rv_qstore_msg *msgs, size_t n,
                     uint64_t *first_seq, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  if (n == 0 || !msgs)
    return fail(q, RV_QUEUE_EINVAL, "publish to \"%s\" with no messages", t->name);
  if (n > RVQ_SEQ_MASK || t->next_seq + n - 1 > RVQ_SEQ_MASK)
    return fail(q, RV_QUEUE_ESEQ, "topic \"%s\" has used its %llu sequence numbers; delete and "
                "recreate it", t->name, (unsigned long long)RVQ_SEQ_MASK);
  size_t ndefer = 0;
  for (size_t i = 0; i < n; i++) {
    if (msgs[i].defer_ns < 0 || msgs[i].defer_ns > q->o.max_req_timeout_ns)
      return fail(q, RV_QUEUE_EDEFER, "defer %lld ms is out of range 0..%lld ms",
                  (long long)(msgs[i].defer_ns / RV_NS_PER_MS),
                  (long long)(q->o.max_req_timeout_ns / RV_NS_PER_MS));
    if (msgs[i].defer_ns > 0)
      ndefer++;
  }
  bool distribute = !t->paused && t->nchannels > 0;
  bool gated = q->o.deliver_after_ack;
  if (distribute && ndefer > 0) {
    /* DPUB takes the message into every channel's deferred queue now; all
     * must have room, or none does it. */
    if (ndefer > UINT32_MAX || q->st.records + ndefer * t->nchannels > q->o.max_records)
      return fail(q, RV_QUEUE_ERECORDS, "deferred publish to \"%s\" refused: the queue holds %zu "
                  "message records (limit max_records)", t->name, q->st.records);
    if (gated && t->pend_head) { /* keep the FIFO at the array's start */
      memmove(t->pend, t->pend + t->pend_head, t->pend_len * sizeof *t->pend);
      t->pend_head = 0;
    }
    if (gated && !grow((void **)&t->pend, &t->pend_cap, sizeof *t->pend,
                       (size_t)t->pend_len + ndefer))
      return fail(q, RV_QUEUE_ENOMEM, "out of memory publishing to \"%s\"", t->name);
    for (rvq_channel *ch = t->ch_head; ch; ch = ch->next) {
      if (ch->deferred + t->pend_len + ndefer > q->o.max_deferred_per_channel)
        return fail(q, RV_QUEUE_EDEFERRED, "deferred publish to \"%s\" refused: channel \"%s\" has "
                    "%llu deferred messages (limit max_deferred_per_channel %zu)", t->name,
                    ch->name, (unsigned long long)ch->deferred, q->o.max_deferred_per_channel);
      if (ch->records + t->pend_len + ndefer > q->o.max_records_per_channel)
        return fail(q, RV_QUEUE_ERECORDS, "deferred publish to \"%s\" refused: channel \"%s\" has "
                    "%llu message records (limit max_records_per_channel)", t->name, ch->name,
                    (unsigned long long)ch->records);
      if (!chan_reserve(ch, (uint32_t)ndefer))
        return fail(q, RV_QUEUE_ENOMEM, "out of memory publishing to \"%s\"", t->name);
    }
    if (!slab_reserve(q, ndefer * t->nchannels) || !timer_reserve(q, ndefer * t->nchannels))
      return fail(q, RV_QUEUE_ENOMEM, "out of memory publishing to \"%s\"", t->name);
  }
  uint64_t first = t->next_seq;
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    msgs[i].guid = rv_queue_guid(t->id_prefix, first + i);
    msgs[i].ts_ns = now;
    msgs[i].defer_until_ns = msgs[i].defer_ns > 0 ? sat_add(now, msgs[i].defer_ns) : 0;
    bytes += msgs[i].body_bytes;
  }
  int rc = q->o.ops->append(q->o.store, t->store, first, msgs, n);
  if (rc)
    return fail(q, RV_QUEUE_ESTORE, "publish to \"%s\" failed: store: %s", t->name,
                rt_err_text(rc));
  t->next_seq += n;
  if (!gated)
    t->acked_end = t->next_seq;
  t->message_count += n;
  t->message_bytes += bytes;
  q->st.published += n;
  q->st.published_bytes += bytes;
  if (first_seq)
    *first_seq = first;
  if (!distribute)
    return RV_QUEUE_OK;
  t->dist_end = t->next_seq;
  if (ndefer > 0 && gated) {
    for (size_t i = 0; i < n; i++)
      if (msgs[i].defer_ns > 0)
        t->pend[t->pend_head + t->pend_len++] = (rvq_pend){first + i, msgs[i].defer_until_ns, now};
  } else if (ndefer > 0) {
    for (rvq_channel *ch = t->ch_head; ch; ch = ch->next) {
      for (size_t i = 0; i < n; i++) {
        if (msgs[i].defer_ns <= 0)
          continue;
        uint32_t e = entry_new(q, ch, first + i, now, 0);
        ch->early++;
        defer_entry(q, e, msgs[i].defer_until_ns);
        if (q->o.ops->defer)
          q->o.ops->defer(q->o.store, ch->store, first + i, msgs[i].defer_until_ns, 0);
      }
      cursor_settle(q, ch);
    }
  }
  pump_topic(q, t, now, ev);
  return RV_QUEUE_OK;
}

int rv_queue_topic_acked(rv_queue *q, int64_t now_ns, uint64_t topic, uint64_t acked_seq,
                         rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  uint64_t end = acked_seq < t->next_seq ? acked_seq + 1 : t->next_seq;
  if (end <= t->acked_end)
    return RV_QUEUE_OK;
  /* The DPUBs now readable enter the deferred queues of the channels they
   * were handed to (and that have not emptied past them since). */
  uint32_t k = 0;
  while (k < t->pend_len && t->pend[t->pend_head + k].seq < end)
    k++;
  if (k) {
    for (rvq_channel *ch = t->ch_head; ch; ch = ch->next)
      if (!chan_reserve(ch, k))
        return fail(q, RV_QUEUE_ENOMEM, "out of memory acknowledging \"%s\"", t->name);
    if (!slab_reserve(q, (size_t)k * t->nchannels) || !timer_reserve(q, (size_t)k * t->nchannels))
      return fail(q, RV_QUEUE_ENOMEM, "out of memory acknowledging \"%s\"", t->name);
  }
  t->acked_end = end;
  for (uint32_t i = 0; i < k; i++) {
    rvq_pend d = t->pend[t->pend_head + i];
    for (rvq_channel *ch = t->ch_head; ch; ch = ch->next) {
      if (d.seq < ch->start_seq || d.seq < ch->cursor || map_get(&ch->map, d.seq) != RVQ_NONE)
        continue;
      uint32_t e = entry_new(q, ch, d.seq, d.ts_ns, 0);
      ch->early++;
      defer_entry(q, e, d.due_ns);
      if (q->o.ops->defer)
        q->o.ops->defer(q->o.store, ch->store, d.seq, d.due_ns, 0);
      cursor_settle(q, ch);
    }
  }
  t->pend_head += k;
  t->pend_len -= k;
  if (t->pend_len == 0)
    t->pend_head = 0;
  pump_topic(q, t, now, ev);
  return RV_QUEUE_OK;
}

/* ---- consumers ----------------------------------------------------------- */

int rv_queue_subscribe(rv_queue *q, int64_t now_ns, const char *topic, const char *channel,
                       const rv_queue_consumer_opts *o, uint64_t *consumer, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rv_queue_consumer_opts dflt = {0};
  if (!o)
    o = &dflt;
  int64_t timeout_ns = o->msg_timeout_ns ? o->msg_timeout_ns : q->o.msg_timeout_ns;
  if (timeout_ns < RV_QUEUE_MIN_MSG_TIMEOUT_NS || timeout_ns > q->o.max_msg_timeout_ns)
    return fail(q, RV_QUEUE_EMSG_TIMEOUT, "msg_timeout %lld ms is invalid: must be %lld..%lld ms",
                (long long)(timeout_ns / RV_NS_PER_MS),
                (long long)(RV_QUEUE_MIN_MSG_TIMEOUT_NS / RV_NS_PER_MS),
                (long long)(q->o.max_msg_timeout_ns / RV_NS_PER_MS));
  int rc = check_name(q, "topic", topic);
  if (rc || (rc = check_name(q, "channel", channel)))
    return rc;
  if (q->consumers_t.live >= q->o.max_consumers)
    return fail(q, RV_QUEUE_ECONSUMERS, "cannot subscribe to %s/%s: the queue has %zu consumers "
                "(limit max_consumers)", topic, channel, q->consumers_t.live);
  rvq_topic *t = NULL;
  if ((rc = topic_get_or_create(q, topic, &t)))
    return rc;
  rvq_channel *ch = NULL;
  if ((rc = channel_get_or_create(q, t, channel, &ch)))
    return rc;
  if (q->o.max_consumers_per_channel && ch->nconsumers >= q->o.max_consumers_per_channel)
    rc = fail(q, RV_QUEUE_ECHANNEL_CONSUMERS, "cannot subscribe to %s/%s: it has %zu consumers "
              "(limit max_consumers_per_channel)", topic, channel, ch->nconsumers);
  rvq_consumer *c = NULL;
  if (!rc && (!(c = calloc(1, sizeof *c)) || !table_reserve(&q->consumers_t))) {
    free(c);
    c = NULL;
    rc = fail(q, RV_QUEUE_ENOMEM, "out of memory subscribing to %s/%s", topic, channel);
  }
  if (rc) {
    /* An ephemeral channel made for this SUB must not outlive it. */
    if (ch->ephemeral && ch->nconsumers == 0 && ev_reserve(ev, 2))
      channel_destroy(q, ch, ev);
    return rc;
  }
  c->ch = ch;
  c->cookie = o->cookie;
  c->timeout_notify = o->timeout_notify;
  c->hold_slots = o->hold_slots;
  c->msg_timeout_ns = timeout_ns;
  c->connect_ns = now;
  c->if_head = c->if_tail = RVQ_NONE;
  c->handle = table_add(&q->consumers_t, c);
  c->prev = ch->c_tail;
  if (ch->c_tail)
    ch->c_tail->next = c;
  else
    ch->c_head = c;
  ch->c_tail = c;
  ch->nconsumers++;
  q->st.consumers++;
  if (consumer)
    *consumer = c->handle;
  return RV_QUEUE_OK;
}

int rv_queue_unsubscribe(rv_queue *q, int64_t now_ns, uint64_t consumer, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_consumer *c = consumer_of(q, consumer);
  if (!c)
    return RV_QUEUE_ENOCONSUMER;
  rvq_channel *ch = c->ch;
  /* Requeue at once, oldest delivery first (nsqd waits for each timeout). */
  while (c->if_head != RVQ_NONE) {
    uint32_t e = c->if_head;
    inflight_unlink(q, e);
    ready_push(q, e);
    q->st.disconnect_requeued++;
  }
  consumer_free(q, c);
  if (ch->ephemeral && ch->nconsumers == 0) {
    ev_reserve(ev, 2);
    channel_destroy(q, ch, ev);
    return RV_QUEUE_OK;
  }
  pump(q, ch, now, ev);
  return RV_QUEUE_OK;
}

int rv_queue_rdy(rv_queue *q, int64_t now_ns, uint64_t consumer, int64_t count,
                 rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rvq_consumer *c = consumer_of(q, consumer);
  if (!c)
    return RV_QUEUE_ENOCONSUMER;
  if (count < 0 || count > q->o.max_rdy_count)
    return fail(q, RV_QUEUE_ERDY, "RDY count %lld out of range 0-%lld", (long long)count,
                (long long)q->o.max_rdy_count);
  c->rdy = count;
  consumer_update(c);
  pump(q, c->ch, now, ev);
  return RV_QUEUE_OK;
}

/*
 * The common first half of FIN / REQ / TOUCH: the consumer, and the record
 * of guid if it is in flight at that consumer as delivery `attempt` (0: any
 * delivery); else nsqd's error (or ravel's stale attempt), after rules 2 and
 * 4 of held slots (FIN and REQ release a hold, and the slot that comes back
 * is used at once; TOUCH releases nothing).
 */
static int ack_begin(rv_queue *q, int64_t now, uint64_t consumer, const char *verb, uint64_t guid,
                     uint16_t attempt, bool releases_hold, rv_queue_ack *ack, rv_queue_events *ev,
                     rvq_consumer **cout, uint32_t *out) {
  memset(ack, 0, sizeof *ack);
  rvq_consumer *c = consumer_of(q, consumer);
  if (!c)
    return RV_QUEUE_ENOCONSUMER;
  *cout = c;
  rvq_channel *ch = c->ch;
  uint64_t seq = guid_seq(ch->topic, guid);
  uint32_t e = seq ? map_get(&ch->map, seq) : RVQ_NONE;
  ack->seq = seq;
  bool mine = e != RVQ_NONE && q->entries[e].state == RVQ_E_IN_FLIGHT && q->entries[e].owner == c;
  uint16_t current = mine ? q->entries[e].attempts : 0;
  if (mine && (attempt == 0 || attempt == current)) {
    *out = e;
    return RV_QUEUE_OK;
  }
  int rc = mine ? RV_QUEUE_ESTALE_ATTEMPT
           : (e != RVQ_NONE && q->entries[e].state == RVQ_E_IN_FLIGHT) ? RV_QUEUE_ENOT_OWNER
                                                                        : RV_QUEUE_ENOT_IN_FLIGHT;
  if (releases_hold && seq && c->held && hold_release(q, c, seq)) {
    ack->held_released = true;
    consumer_update(c);
    pump(q, ch, now, ev);
  }
  char id[RV_NSQ_MSG_ID_SIZE_BYTES + 1];
  if (rc == RV_QUEUE_ESTALE_ATTEMPT)
    return fail(q, rc, "%s %s failed attempt %u is not in flight (attempt %u is)", verb,
                fmt_id(guid, id), (unsigned)attempt, (unsigned)current);
  return fail(q, rc, "%s %s failed %s", verb, fmt_id(guid, id), rv_queue_strerror(rc));
}

int rv_queue_fin(rv_queue *q, int64_t now_ns, uint64_t consumer, uint64_t guid, uint16_t attempt,
                 rv_queue_ack *ack, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rv_queue_ack dummy;
  rvq_consumer *c;
  uint32_t e;
  int rc = ack_begin(q, now, consumer, "FIN", guid, attempt, true, ack ? ack : &dummy, ev, &c, &e);
  if (rc)
    return rc;
  if (!ack)
    ack = &dummy;
  rvq_channel *ch = c->ch;
  ack->latency_ns = now - q->entries[e].ts_ns;
  inflight_unlink(q, e);
  if (q->o.ops->fin)
    q->o.ops->fin(q->o.store, ch->store, ack->seq);
  entry_finish(q, e);
  c->finish_count++;
  ch->finish_count++;
  q->st.finished++;
  consumer_update(c);
  pump(q, ch, now, ev);
  return RV_QUEUE_OK;
}

int rv_queue_req(rv_queue *q, int64_t now_ns, uint64_t consumer, uint64_t guid, uint16_t attempt,
                 int64_t delay_ns, rv_queue_ack *ack, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  rv_queue_ack dummy;
  rvq_consumer *c;
  uint32_t e;
  int rc = ack_begin(q, now, consumer, "REQ", guid, attempt, true, ack ? ack : &dummy, ev, &c, &e);
  if (rc)
    return rc;
  if (!ack)
    ack = &dummy;
  rvq_channel *ch = c->ch;
  /* nsqd clamps the delay (PR #868) rather than failing. */
  if (delay_ns < 0)
    delay_ns = 0;
  if (delay_ns > q->o.max_req_timeout_ns)
    delay_ns = q->o.max_req_timeout_ns;
  if (delay_ns > 0 && ch->deferred + ch->topic->pend_len >= q->o.max_deferred_per_channel) {
    char id[RV_NSQ_MSG_ID_SIZE_BYTES + 1];
    return fail(q, RV_QUEUE_EDEFERRED, "REQ %s failed channel \"%s\" has %llu deferred messages "
                "(limit max_deferred_per_channel); the message stays in flight",
                fmt_id(guid, id), ch->name, (unsigned long long)ch->deferred);
  }
  inflight_unlink(q, e);
  c->requeue_count++;
  ch->requeue_count++;
  q->st.requeued++;
  if (delay_ns == 0) {
    ready_push(q, e);
  } else {
    int64_t due = sat_add(now, delay_ns);
    defer_entry(q, e, due); /* the in-flight timer's slot is free again */
    if (q->o.ops->defer)
      q->o.ops->defer(q->o.store, ch->store, ack->seq, due, q->entries[e].attempts);
  }
  consumer_update(c);
  pump(q, ch, now, ev);
  return RV_QUEUE_OK;
}

int rv_queue_touch(rv_queue *q, int64_t now_ns, uint64_t consumer, uint64_t guid,
                   uint16_t attempt, rv_queue_ack *ack) {
  int64_t now = clock_in(q, now_ns);
  rv_queue_ack dummy;
  rvq_consumer *c;
  uint32_t e;
  int rc = ack_begin(q, now, consumer, "TOUCH", guid, attempt, false, ack ? ack : &dummy, NULL,
                     &c, &e);
  if (rc)
    return rc;
  /* nsqd: now + the client's msg_timeout, but never past delivery + the
   * server's max_msg_timeout. */
  int64_t deadline = sat_add(now, c->msg_timeout_ns);
  int64_t cap = sat_add(q->entries[e].delivered_ns, q->o.max_msg_timeout_ns);
  if (deadline > cap)
    deadline = cap;
  timer_remove(q, e);
  timer_push(q, e, deadline); /* the slot just freed is reused */
  return RV_QUEUE_OK;
}

/* ---- time ---------------------------------------------------------------- */

int rv_queue_tick(rv_queue *q, int64_t now_ns, rv_queue_events *ev) {
  int64_t now = clock_in(q, now_ns);
  while (q->timers_len && q->timers[0].deadline_ns <= now) {
    if (!ev_reserve(ev, 1))
      return fail(q, RV_QUEUE_ENOMEM, "out of memory firing timers");
    uint32_t e = q->timers[0].entry;
    rvq_entry *E = &q->entries[e];
    rvq_channel *ch = E->ch;
    if (E->state == RVQ_E_IN_FLIGHT) {
      rvq_consumer *c = E->owner;
      uint64_t seq = E->seq;
      inflight_unlink(q, e);
      c->timeout_count++;
      ch->timeout_count++;
      q->st.timed_out++;
      if (c->hold_slots)
        hold_add(q, c, seq);
      if (c->timeout_notify) {
        rv_queue_event *x = ev_push(ev, RV_QUEUE_EV_TIMEOUT);
        if (x) {
          x->consumer = c->handle;
          x->cookie = c->cookie;
          x->topic = ch->topic->handle;
          x->channel = ch->handle;
          x->seq = seq;
          x->guid = rv_queue_guid(ch->topic->id_prefix, seq);
        }
      }
      ready_push(q, e);
      consumer_update(c);
    } else {
      timer_remove(q, e);
      ch->deferred--;
      ready_push(q, e);
    }
    pump(q, ch, now, ev);
  }
  return RV_QUEUE_OK;
}

int64_t rv_queue_next_deadline(const rv_queue *q) {
  return q->timers_len ? q->timers[0].deadline_ns : RV_QUEUE_NO_DEADLINE;
}

/* ---- recovery ------------------------------------------------------------ */

int rv_queue_topic_restore(rv_queue *q, int64_t now_ns, const rv_queue_topic_state *r,
                           uint64_t *topic) {
  clock_in(q, now_ns);
  int rc = check_name(q, "topic", r->name);
  if (rc)
    return rc;
  if (topic_lookup(q, r->name))
    return fail(q, RV_QUEUE_EINVAL, "restore of topic \"%s\": it exists already", r->name);
  if (r->next_seq < 1 || r->next_seq - 1 > RVQ_SEQ_MASK || r->first_seq > r->next_seq)
    return fail(q, RV_QUEUE_EINVAL, "restore of topic \"%s\": first_seq %llu / next_seq %llu are "
                "inconsistent", r->name, (unsigned long long)r->first_seq,
                (unsigned long long)r->next_seq);
  rvq_topic *t;
  if ((rc = topic_new(q, r->name, r->id_prefix, r->store_ctx, &t)))
    return rc;
  t->next_seq = r->next_seq;
  t->acked_end = r->next_seq;
  t->dist_end = r->first_seq ? r->first_seq : 1;
  t->paused = r->paused;
  /* Never hand a live topic's prefix to a new one. */
  if ((uint16_t)(r->id_prefix + 1 - q->next_id_prefix) < UINT16_MAX / 2)
    q->next_id_prefix = (uint16_t)(r->id_prefix + 1);
  if (topic)
    *topic = t->handle;
  return RV_QUEUE_OK;
}

static int range_cmp(const void *a, const void *b) {
  const rv_qstore_range *x = a, *y = b;
  return x->first < y->first ? -1 : x->first > y->first;
}

/* Is seq inside the sorted, disjoint ranges[lo..n)? */
static bool ranges_contain(const rv_qstore_range *r, uint32_t lo, uint32_t n, uint64_t seq) {
  uint32_t hi = n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (r[mid].last < seq)
      lo = mid + 1;
    else if (r[mid].first > seq)
      hi = mid;
    else
      return true;
  }
  return false;
}

int rv_queue_channel_restore(rv_queue *q, int64_t now_ns, uint64_t topic,
                             const rv_queue_channel_state *r, uint64_t *channel) {
  clock_in(q, now_ns);
  rvq_topic *t = topic_of(q, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  int rc = check_name(q, "channel", r->name);
  if (rc || (rc = channel_limits(q, t, r->name)))
    return rc;
  if (channel_lookup(q, t, r->name))
    return fail(q, RV_QUEUE_EINVAL, "restore of channel \"%s\": it exists already", r->name);
  uint64_t floor = r->floor < t->next_seq ? r->floor : t->next_seq - 1;
  uint64_t cursor = floor + 1;
  /* Clip, sort and merge the finished ranges. */
  rv_qstore_range *rs = NULL;
  uint32_t nr = 0, rcap = 0;
  if (r->nfinished) {
    if (r->nfinished > RVQ_INDEX_MAX ||
        !grow((void **)&rs, &rcap, sizeof *rs, r->nfinished))
      return fail(q, RV_QUEUE_ENOMEM, "out of memory restoring channel \"%s\"", r->name);
    for (size_t i = 0; i < r->nfinished; i++) {
      rv_qstore_range x = r->finished[i];
      if (x.first < cursor)
        x.first = cursor;
      if (x.last >= t->next_seq)
        x.last = t->next_seq - 1;
      if (x.first <= x.last)
        rs[nr++] = x;
    }
    qsort(rs, nr, sizeof *rs, range_cmp);
    uint32_t w = 0;
    for (uint32_t i = 0; i < nr; i++) {
      if (w && rs[i].first <= rs[w - 1].last + 1) {
        if (rs[i].last > rs[w - 1].last)
          rs[w - 1].last = rs[i].last;
      } else {
        rs[w++] = rs[i];
      }
    }
    nr = w;
  }
  if (r->ndeferred > q->o.max_deferred_per_channel || r->ndeferred > q->o.max_records_per_channel ||
      q->st.records + r->ndeferred > q->o.max_records) {
    free(rs);
    return fail(q, RV_QUEUE_EDEFERRED, "restore of channel \"%s\": %zu deferred messages exceed "
                "max_deferred_per_channel / max_records", r->name, r->ndeferred);
  }
  rvq_channel *ch;
  if ((rc = channel_new(q, t, r->name, r->store_ctx, &ch))) {
    free(rs);
    return rc;
  }
  ch->restoring = true;
  ch->paused = r->paused;
  ch->start_seq = ch->cursor = cursor;
  ch->ranges = rs;
  ch->nranges = nr;
  ch->ranges_cap = rcap;
  for (uint32_t i = 0; i < nr; i++)
    ch->ranges_total += rs[i].last - rs[i].first + 1;
  uint64_t high = cursor;
  if (nr && rs[nr - 1].last + 1 > high)
    high = rs[nr - 1].last + 1;
  if (r->ndeferred && (!records_reserve(q, ch, (uint32_t)r->ndeferred) ||
                       !timer_reserve(q, r->ndeferred))) {
    channel_destroy(q, ch, NULL);
    return fail(q, RV_QUEUE_ENOMEM, "out of memory restoring channel \"%s\"", r->name);
  }
  ch->restoring = false;
  for (size_t i = 0; i < r->ndeferred; i++) {
    const rv_qstore_deferred *d = &r->deferred[i];
    if (d->seq < cursor || d->seq >= t->next_seq || ranges_contain(rs, 0, nr, d->seq) ||
        map_get(&ch->map, d->seq) != RVQ_NONE)
      continue;
    rv_qstore_meta m = {0};
    if (q->o.ops->meta(q->o.store, t->store, d->seq, &m) != 0)
      continue; /* the log lost it: the cursor will count it */
    uint32_t e = entry_new(q, ch, d->seq, m.ts_ns, d->attempts);
    ch->early++;
    defer_entry(q, e, d->due_ns);
    if (d->seq + 1 > high)
      high = d->seq + 1;
  }
  cursor_settle(q, ch);
  /* Everything a channel knows of lies below the topic's dist_end. */
  if (!t->paused)
    t->dist_end = t->next_seq;
  else if (t->dist_end < high)
    t->dist_end = high;
  if (channel)
    *channel = ch->handle;
  return RV_QUEUE_OK;
}

static uint64_t channel_floor(const rv_queue *q, const rvq_channel *ch) {
  uint64_t low = ch->cursor;
  if (ch->fheap_len && q->entries[ch->fheap[0]].seq < low)
    low = q->entries[ch->fheap[0]].seq;
  return low - 1;
}

uint64_t rv_queue_channel_floor(const rv_queue *q, uint64_t channel) {
  const rvq_channel *ch = table_get(&q->channels_t, channel);
  return ch ? channel_floor(q, ch) : 0;
}

static uint64_t topic_floor(const rv_queue *q, const rvq_topic *t) {
  uint64_t f = t->dist_end - 1;
  for (const rvq_channel *ch = t->ch_head; ch; ch = ch->next) {
    uint64_t cf = channel_floor(q, ch);
    if (cf < f)
      f = cf;
  }
  return f;
}

uint64_t rv_queue_topic_floor(const rv_queue *q, uint64_t topic) {
  const rvq_topic *t = table_get(&q->topics_t, topic);
  return t ? topic_floor(q, t) : 0;
}

/* ---- introspection ------------------------------------------------------- */

static void topic_fill(const rv_queue *q, const rvq_topic *t, rv_queue_topic_stats *s) {
  memset(s, 0, sizeof *s);
  s->handle = t->handle;
  s->name = t->name;
  s->paused = t->paused;
  s->ephemeral = t->ephemeral;
  s->depth = t->next_seq - t->dist_end;
  s->message_count = t->message_count;
  s->message_bytes = t->message_bytes;
  s->channel_count = t->nchannels;
  s->next_seq = t->next_seq;
  s->acked_end = t->acked_end;
  s->floor = topic_floor(q, t);
  s->id_prefix = t->id_prefix;
  s->store_ctx = t->store;
}

static void channel_fill(const rv_queue *q, const rvq_channel *ch, rv_queue_channel_stats *s) {
  memset(s, 0, sizeof *s);
  const rvq_topic *t = ch->topic;
  s->handle = ch->handle;
  s->topic = t->handle;
  s->name = ch->name;
  s->topic_name = t->name;
  s->paused = ch->paused;
  s->ephemeral = ch->ephemeral;
  uint64_t untaken = 0;
  if (t->dist_end > ch->cursor) {
    untaken = t->dist_end - ch->cursor;
    uint64_t ahead = ch->early + ch->ranges_total;
    untaken = untaken > ahead ? untaken - ahead : 0;
  }
  s->depth = ch->ready_len + untaken;
  s->in_flight_count = ch->in_flight;
  s->deferred_count = ch->deferred;
  s->held_count = ch->held;
  s->message_count = t->dist_end > ch->start_seq ? t->dist_end - ch->start_seq : 0;
  s->delivery_count = ch->delivery_count;
  s->finish_count = ch->finish_count;
  s->requeue_count = ch->requeue_count;
  s->timeout_count = ch->timeout_count;
  s->lost_count = ch->lost_count;
  s->client_count = ch->nconsumers;
  s->floor = channel_floor(q, ch);
  s->cursor = ch->cursor;
  s->records = ch->records;
  s->store_ctx = ch->store;
}

static void consumer_fill(const rvq_consumer *c, rv_queue_consumer_stats *s) {
  memset(s, 0, sizeof *s);
  s->handle = c->handle;
  s->channel = c->ch->handle;
  s->cookie = c->cookie;
  s->ready_count = c->rdy;
  s->in_flight_count = c->in_flight;
  s->held_count = c->held;
  s->message_count = c->message_count;
  s->finish_count = c->finish_count;
  s->requeue_count = c->requeue_count;
  s->timeout_count = c->timeout_count;
  s->connect_ns = c->connect_ns;
  s->msg_timeout_ns = c->msg_timeout_ns;
  s->timeout_notify = c->timeout_notify;
  s->hold_slots = c->hold_slots;
}

int rv_queue_topic_stats_get(const rv_queue *q, uint64_t topic, rv_queue_topic_stats *out) {
  const rvq_topic *t = table_get(&q->topics_t, topic);
  if (!t)
    return RV_QUEUE_ENOTOPIC;
  topic_fill(q, t, out);
  return RV_QUEUE_OK;
}

int rv_queue_channel_stats_get(const rv_queue *q, uint64_t channel, rv_queue_channel_stats *out) {
  const rvq_channel *ch = table_get(&q->channels_t, channel);
  if (!ch)
    return RV_QUEUE_ENOCHANNEL;
  channel_fill(q, ch, out);
  return RV_QUEUE_OK;
}

int rv_queue_consumer_stats_get(const rv_queue *q, uint64_t consumer,
                                rv_queue_consumer_stats *out) {
  const rvq_consumer *c = table_get(&q->consumers_t, consumer);
  if (!c)
    return RV_QUEUE_ENOCONSUMER;
  consumer_fill(c, out);
  return RV_QUEUE_OK;
}

void rv_queue_get_stats(const rv_queue *q, rv_queue_stats *out) { *out = q->st; }

size_t rv_queue_topic_list(const rv_queue *q, rv_queue_topic_fn fn, void *arg) {
  size_t n = 0;
  for (const rvq_topic *t = q->t_head; t; t = t->next) {
    rv_queue_topic_stats s;
    topic_fill(q, t, &s);
    n++;
    if (!fn(&s, arg))
      break;
  }
  return n;
}

size_t rv_queue_channel_list(const rv_queue *q, uint64_t topic, rv_queue_channel_fn fn,
                             void *arg) {
  const rvq_topic *t = table_get(&q->topics_t, topic);
  size_t n = 0;
  for (const rvq_channel *ch = t ? t->ch_head : NULL; ch; ch = ch->next) {
    rv_queue_channel_stats s;
    channel_fill(q, ch, &s);
    n++;
    if (!fn(&s, arg))
      break;
  }
  return n;
}

size_t rv_queue_consumer_list(const rv_queue *q, uint64_t channel, rv_queue_consumer_fn fn,
                              void *arg) {
  const rvq_channel *ch = table_get(&q->channels_t, channel);
  size_t n = 0;
  for (const rvq_consumer *c = ch ? ch->c_head : NULL; c; c = c->next) {
    rv_queue_consumer_stats s;
    consumer_fill(c, &s);
    n++;
    if (!fn(&s, arg))
      break;
  }
  return n;
}

int rv_queue_msg_get(const rv_queue *q, uint64_t channel, uint64_t seq, rv_queue_msg_view *out) {
  memset(out, 0, sizeof *out);
  const rvq_channel *ch = table_get(&q->channels_t, channel);
  if (!ch)
    return RV_QUEUE_ENOCHANNEL;
  const rvq_topic *t = ch->topic;
  if (seq < ch->start_seq || seq >= t->next_seq) {
    out->state = RV_QUEUE_MSG_NONE;
    return RV_QUEUE_OK;
  }
  uint32_t e = map_get(&ch->map, seq);
  if (e != RVQ_NONE) {
    const rvq_entry *E = &q->entries[e];
    out->attempts = E->attempts;
    switch (E->state) {
    case RVQ_E_READY:
      out->state = RV_QUEUE_MSG_READY;
      break;
    case RVQ_E_IN_FLIGHT:
      out->state = RV_QUEUE_MSG_IN_FLIGHT;
      out->consumer = E->owner->handle;
      out->deadline_ns = E->deadline_ns;
      break;
    case RVQ_E_DEFERRED:
      out->state = RV_QUEUE_MSG_DEFERRED;
      out->deadline_ns = E->deadline_ns;
      break;
    default:
      out->state = RV_QUEUE_MSG_FINISHED;
      break;
    }
  } else if (seq < ch->cursor ||
             ranges_contain(ch->ranges, ch->range_head, ch->nranges, seq)) {
    out->state = RV_QUEUE_MSG_FINISHED;
  } else if (seq >= t->dist_end) {
    out->state = RV_QUEUE_MSG_PENDING;
  } else {
    out->state = RV_QUEUE_MSG_READY;
  }
  return RV_QUEUE_OK;
}

uint32_t rv_queue_consumer_held(const rv_queue *q, uint64_t consumer, uint64_t seq) {
  const rvq_consumer *c = table_get(&q->consumers_t, consumer);
  if (!c)
    return 0;
  uint32_t v = map_get(&c->holds, seq);
  return v == RVQ_NONE ? 0 : v;
}

/* ---- invariants ---------------------------------------------------------- */

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      snprintf(qq->check_msg, sizeof qq->check_msg, __VA_ARGS__);             \
      return qq->check_msg;                                                   \
    }                                                                         \
  } while (0)

static const char *check_channel(rv_queue *qq, const rvq_channel *ch, size_t *records) {
  const rvq_topic *t = ch->topic;
  uint64_t n_ready = 0, n_if = 0, n_def = 0, n_done = 0, n_early = 0, n_live = 0;
  for (uint32_t i = 0; i < ch->map.cap; i++) {
    if (!ch->map.slots[i].key)
      continue;
    uint32_t e = ch->map.slots[i].val;
    CHECK(e < qq->entries_len, "%s: map points past the slab", ch->name);
    const rvq_entry *E = &qq->entries[e];
    CHECK(E->ch == ch && E->seq == ch->map.slots[i].key, "%s: map slot %u names another record",
          ch->name, i);
    CHECK(map_get(&ch->map, E->seq) == e, "%s: record %llu unreachable in the map (probe chain "
          "broken)", ch->name, (unsigned long long)E->seq);
    CHECK(E->seq >= ch->start_seq && E->seq < t->dist_end,
          "%s: record %llu outside [start %llu, dist_end %llu)", ch->name,
          (unsigned long long)E->seq, (unsigned long long)ch->start_seq,
          (unsigned long long)t->dist_end);
    if (E->seq >= ch->cursor)
      n_early++;
    switch (E->state) {
    case RVQ_E_READY: n_ready++; break;
    case RVQ_E_IN_FLIGHT: n_if++; break;
    case RVQ_E_DEFERRED: n_def++; break;
    case RVQ_E_DONE:
      n_done++;
      CHECK(E->seq >= ch->cursor, "%s: tombstone %llu behind the cursor", ch->name,
            (unsigned long long)E->seq);
      break;
    default:
      CHECK(0, "%s: free record in map", ch->name);
    }
    bool timed = E->state == RVQ_E_IN_FLIGHT || E->state == RVQ_E_DEFERRED;
    CHECK(timed == (E->timer_pos != RVQ_NONE), "%s: record %llu timer presence wrong", ch->name,
          (unsigned long long)E->seq);
    if (timed)
      CHECK(qq->timers[E->timer_pos].entry == e && qq->timers[E->timer_pos].deadline_ns ==
            E->deadline_ns, "%s: record %llu timer position wrong", ch->name,
            (unsigned long long)E->seq);
    CHECK((E->state != RVQ_E_DONE) == (E->floor_pos != RVQ_NONE),
          "%s: record %llu floor heap presence wrong", ch->name, (unsigned long long)E->seq);
    if (E->state != RVQ_E_DONE) {
      n_live++;
      CHECK(E->floor_pos < ch->fheap_len && ch->fheap[E->floor_pos] == e,
            "%s: record %llu floor position wrong", ch->name, (unsigned long long)E->seq);
    }
  }
  CHECK(ch->map.len == ch->records && n_ready + n_if + n_def + n_done == ch->records,
        "%s: records %llu, map %u, states %llu", ch->name, (unsigned long long)ch->records,
        ch->map.len, (unsigned long long)(n_ready + n_if + n_def + n_done));
  CHECK(n_live == ch->fheap_len, "%s: floor heap has %u, live records %llu", ch->name,
        ch->fheap_len, (unsigned long long)n_live);
  for (uint32_t i = 1; i < ch->fheap_len; i++)
    CHECK(qq->entries[ch->fheap[(i - 1) / 2]].seq <= qq->entries[ch->fheap[i]].seq,
          "%s: floor heap order broken at %u", ch->name, i);
  CHECK(n_early == ch->early, "%s: early %llu, counted %llu", ch->name,
        (unsigned long long)ch->early, (unsigned long long)n_early);
  CHECK(n_ready == ch->ready_len && n_if == ch->in_flight && n_def == ch->deferred,
        "%s: ready %llu/%llu in flight %llu/%llu deferred %llu/%llu", ch->name,
        (unsigned long long)n_ready, (unsigned long long)ch->ready_len, (unsigned long long)n_if,
        (unsigned long long)ch->in_flight, (unsigned long long)n_def,
        (unsigned long long)ch->deferred);
  uint64_t walk = 0;
  for (uint32_t e = ch->ready_head; e != RVQ_NONE; e = qq->entries[e].next) {
    CHECK(qq->entries[e].state == RVQ_E_READY && qq->entries[e].ch == ch && walk < n_ready,
          "%s: ready FIFO broken", ch->name);
    if (qq->entries[e].next == RVQ_NONE)
      CHECK(ch->ready_tail == e, "%s: ready tail wrong", ch->name);
    walk++;
  }
  CHECK(walk == n_ready, "%s: ready FIFO has %llu of %llu", ch->name, (unsigned long long)walk,
        (unsigned long long)n_ready);
  CHECK(ch->cursor >= ch->start_seq && ch->cursor <= t->dist_end && t->dist_end <= t->next_seq,
        "%s: start %llu cursor %llu dist_end %llu next %llu", ch->name,
        (unsigned long long)ch->start_seq, (unsigned long long)ch->cursor,
        (unsigned long long)t->dist_end, (unsigned long long)t->next_seq);
  CHECK(ch->cursor >= t->dist_end ||
        ((ch->range_head >= ch->nranges || ch->ranges[ch->range_head].first != ch->cursor) &&
         map_get(&ch->map, ch->cursor) == RVQ_NONE),
        "%s: cursor %llu rests on a taken seq", ch->name, (unsigned long long)ch->cursor);
  uint64_t rtotal = 0;
  for (uint32_t i = ch->range_head; i < ch->nranges; i++) {
    CHECK(ch->ranges[i].first <= ch->ranges[i].last && ch->ranges[i].first >= ch->cursor &&
          ch->ranges[i].last < t->dist_end &&
          (i == ch->range_head || ch->ranges[i].first > ch->ranges[i - 1].last),
          "%s: finished range %u malformed", ch->name, i);
    rtotal += ch->ranges[i].last - ch->ranges[i].first + 1;
  }
  CHECK(rtotal == ch->ranges_total, "%s: ranges_total", ch->name);
  /* Consumers. */
  size_t nc = 0, nring = 0;
  uint64_t if_sum = 0, held_sum = 0;
  for (const rvq_consumer *c = ch->c_head; c; c = c->next) {
    nc++;
    CHECK(c->ch == ch, "%s: consumer in wrong channel", ch->name);
    uint64_t k = 0;
    for (uint32_t e = c->if_head; e != RVQ_NONE; e = qq->entries[e].next) {
      const rvq_entry *E = &qq->entries[e];
      CHECK(E->state == RVQ_E_IN_FLIGHT && E->owner == c && k < c->in_flight,
            "%s: consumer in-flight list broken", ch->name);
      if (E->next == RVQ_NONE)
        CHECK(c->if_tail == e, "%s: consumer in-flight tail wrong", ch->name);
      k++;
    }
    CHECK(k == c->in_flight, "%s: consumer in_flight %llu, list %llu", ch->name,
          (unsigned long long)c->in_flight, (unsigned long long)k);
    uint64_t h = 0;
    for (uint32_t i = 0; i < c->holds.cap; i++) {
      if (!c->holds.slots[i].key)
        continue;
      h += c->holds.slots[i].val;
      CHECK(map_find(&c->holds, c->holds.slots[i].key) == &c->holds.slots[i].val,
            "%s: hold unreachable in the map", ch->name);
    }
    CHECK(h == c->held && (c->held == 0 || c->hold_slots), "%s: consumer held %llu, map %llu",
          ch->name, (unsigned long long)c->held, (unsigned long long)h);
    CHECK(c->in_ring == consumer_can_take(c), "%s: consumer ring membership wrong", ch->name);
    if (c->in_ring)
      nring++;
    if_sum += c->in_flight;
    held_sum += c->held;
  }
  CHECK(nc == ch->nconsumers && if_sum == ch->in_flight && held_sum == ch->held,
        "%s: consumer sums", ch->name);
  size_t walk_ring = 0;
  if (ch->rr) {
    const rvq_consumer *c = ch->rr;
    do {
      CHECK(c->in_ring && c->ch == ch && c->rr_next->rr_prev == c && walk_ring < nc,
            "%s: ready ring broken", ch->name);
      walk_ring++;
      c = c->rr_next;
    } while (c != ch->rr);
  }
  CHECK(walk_ring == nring, "%s: ready ring has %zu of %zu", ch->name, walk_ring, nring);
  *records += ch->records;
  return NULL;
}

const char *rv_queue_check(const rv_queue *q) {
  rv_queue *qq = (rv_queue *)q; /* only check_msg is written */
  size_t records = 0, nt = 0, nch = 0, ncons = 0;
  uint64_t held = 0;
  for (const rvq_topic *t = q->t_head; t; t = t->next) {
    nt++;
    CHECK(table_get(&q->topics_t, t->handle) == t, "topic %s handle", t->name);
    CHECK(topic_lookup(q, t->name) == t, "topic %s not found by name", t->name);
    size_t k = 0;
    for (const rvq_channel *ch = t->ch_head; ch; ch = ch->next) {
      k++;
      CHECK(ch->topic == t && table_get(&q->channels_t, ch->handle) == ch &&
            channel_lookup(q, t, ch->name) == ch, "channel %s/%s lookup", t->name, ch->name);
      const char *why = check_channel(qq, ch, &records);
      if (why)
        return why;
      ncons += ch->nconsumers;
      held += ch->held;
    }
    CHECK(k == t->nchannels, "topic %s channel count", t->name);
    CHECK(t->paused || t->nchannels == 0 || t->dist_end == t->next_seq,
          "topic %s holds messages back while it has channels and is not paused", t->name);
    CHECK(t->acked_end <= t->next_seq && (q->o.deliver_after_ack || t->acked_end == t->next_seq),
          "topic %s acked_end %llu next_seq %llu", t->name, (unsigned long long)t->acked_end,
          (unsigned long long)t->next_seq);
    for (uint32_t i = 0; i < t->pend_len; i++)
      CHECK(t->pend[t->pend_head + i].seq >= t->acked_end &&
            (i == 0 || t->pend[t->pend_head + i].seq > t->pend[t->pend_head + i - 1].seq),
            "topic %s pending DPUB %u out of order or already acked", t->name, i);
    nch += k;
  }
  CHECK(nt == q->topics_t.live && nt == q->st.topics && nch == q->channels_t.live &&
        nch == q->st.channels && ncons == q->consumers_t.live && ncons == q->st.consumers,
        "object counts");
  CHECK(records == q->st.records && held == q->st.held, "records %zu/%zu held %llu/%zu", records,
        q->st.records, (unsigned long long)held, q->st.held);
  for (uint32_t i = 0; i < q->timers_len; i++) {
    CHECK(q->entries[q->timers[i].entry].timer_pos == i, "timer %u position", i);
    if (i > 0)
      CHECK(!timer_less(&q->timers[i], &q->timers[(i - 1) / 2]), "timer heap order at %u", i);
  }
  size_t free_n = 0;
  for (uint32_t e = q->entries_free; e != RVQ_NONE; e = q->entries[e].next) {
    CHECK(q->entries[e].state == RVQ_E_FREE && free_n < q->entries_len, "free list broken");
    free_n++;
  }
  CHECK(free_n + records == q->entries_len && free_n == q->entries_nfree,
        "slab: %zu free (%u counted) + %zu records != %u", free_n, q->entries_nfree, records,
        q->entries_len);
  return NULL;
}
