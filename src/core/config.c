/*
 * config: the layered config store, as a pure state machine.
 *
 * THE MODEL
 *
 * The incident ravel re-creates began with a platform-wide config change
 * that meant nothing to the service it reached: the service's watcher
 * rebuilt its clients anyway, took a write lock, and a latent recursive
 * read lock turned into a deadlock.  This store exists so that a watcher
 * hears only about what changes for it, and so that an operator can see,
 * before a write, whom it reaches.
 *
 * Layers.  Keys live in namespaces, one per layer: "platform", "svc/S" for
 * service S and "svc/S/R" for replica R of S.  Each namespace is a node: a
 * hash table of keys, the watches that target it, and (for services) its
 * replicas.  A reader at (S, R) sees, for each key, the value of the most
 * specific node that sets it: replica, then service, then platform.  Nodes
 * exist while they hold something (keys, a registration, a watch, replica
 * children) and are freed when they stop, so the "services that exist",
 * which a dry run walks, are exactly the services someone registered,
 * configured or watches.
 *
 * Writes and history.  Every write gets the next revision and becomes one
 * immutable, reference-counted record (revision, time, author, reason,
 * namespace, key, old value, new value).  Values are reference-counted
 * too, so a record, the current table and any number of pending events
 * share one copy of a 64 KiB value.  The records form the history: a ring
 * of the newest history_max_entries (and at most history_max_bytes)
 * records, contiguous in revision, so record R sits at a computable
 * offset.  The history is the audit log as far as memory goes (the durable
 * store keeps all of it) and it is what watches resume from.
 *
 * Effective change.  A write to key K of namespace L changes the effective
 * value of reader T only if L is in T's chain (platform, svc/S, svc/S/R)
 * and no layer more specific than L sets K; and even then only if the value
 * differs.  The store keeps, per service, a list of its watched replicas,
 * and a store-wide list of watched services, so a write visits only the
 * readers under L that have effective watches: a replica write looks at one
 * node, a service write at the service and its watched replicas, a
 * platform write at every watched service and replica.  For each it does
 * three hash lookups and compares two values, then emits an event per
 * watch of that reader.  Nothing scans the keys.
 *
 * Watch resume.  A watch opened since revision R must see what it would
 * have seen had it been connected: exactly the effective changes of
 * revisions R+1..now, in order.  Whether revision r changed T's value
 * depends on the other layers' values at r, not now (a platform write at
 * r=5 reached S even if S overrides the key since r=7).  So the replay
 * rebuilds them: for the keys written after R in T's chain it starts from
 * the current values of the three layers, walks the history backwards to
 * R undoing each write (value := record's old value), then walks forward
 * again re-applying each write and comparing T's effective value before and
 * after.  The live path computes the same thing from the current state, and
 * a test checks that a replay from 0 yields exactly the live events.  The
 * bound: R must be >= oldest retained revision - 1, otherwise the changes
 * after R are no longer all known and the watch fails with
 * RV_CFG_ECOMPACTED (re-read everything, then watch from now).  With the
 * default history of 100000 writes a watcher may be that many writes behind.
 *
 * Failure atomicity.  rv_cfg_apply allocates everything it needs (value,
 * record, node, key slot, history slot, events) before it changes
 * anything, so every error leaves the store and the event list as they
 * were.  rv_cfg_prepare runs the same checks without allocating, which is
 * what lets configdb commit a write to disk before the store performs it.
 */
#include "core/config.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------ */

typedef struct errinfo {
  int code;
  const char *word;
  const char *text;
  const char *name;
} errinfo;

static const errinfo cfg_errors[] = {
#define CFG__ERR_ROW(name, val, word, text) {val, word, text, #name},
    RV_CFG_ERRORS(CFG__ERR_ROW)
#undef CFG__ERR_ROW
};

/* One table drives codes, words and texts, so a new error cannot be half-added. */
static const errinfo *err_lookup(int err) {
  for (size_t i = 0; i < sizeof cfg_errors / sizeof cfg_errors[0]; i++)
    if (cfg_errors[i].code == err)
      return &cfg_errors[i];
  return NULL;
}

const char *rv_cfg_strerror(int err) {
  const errinfo *e = err_lookup(err);
  return e ? e->text : "unknown config error";
}

const char *rv_cfg_errcode(int err) {
  const errinfo *e = err_lookup(err);
  return e ? e->word : "ERR";
}

const char *rv_cfg_errname(int err) {
  const errinfo *e = err_lookup(err);
  return e ? e->name : "RV_CFG_E?";
}

/* Names for logs, RESP replies and tests; never NULL, so callers need no check. */
const char *rv_cfg_level_name(int level) {
  switch (level) {
  case RV_CFG_LEVEL_NONE: return "none";
  case RV_CFG_LEVEL_PLATFORM: return "platform";
  case RV_CFG_LEVEL_SERVICE: return "service";
  case RV_CFG_LEVEL_REPLICA: return "replica";
  default: return "unknown";
  }
}

const char *rv_cfg_op_name(int op) {
  switch (op) {
  case RV_CFG_OP_SET: return "set";
  case RV_CFG_OP_DELETE: return "delete";
  case RV_CFG_OP_ROLLBACK: return "rollback";
  default: return "unknown";
  }
}

/* Tests and C callers have C strings; the API takes lengths because RESP does. */
rv_cfg_str rv_cfg_cstr(const char *s) {
  return s ? (rv_cfg_str){s, strlen(s)} : (rv_cfg_str){"", 0};
}

/* Length-aware comparisons: inputs are not NUL-terminated. */
static bool str_eq(rv_cfg_str a, rv_cfg_str b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool str_has_prefix(rv_cfg_str s, const char *prefix, size_t prefix_len) {
  return prefix_len <= s.len && (prefix_len == 0 || memcmp(s.ptr, prefix, prefix_len) == 0);
}

/* Byte order of two strings, shorter first on a tie: the order of every listing. */
static int str_cmp(rv_cfg_str a, rv_cfg_str b) {
  size_t n = a.len < b.len ? a.len : b.len;
  int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
  if (c)
    return c;
  return (a.len > b.len) - (a.len < b.len);
}

/* ---- hashing ------------------------------------------------------------------- */
/*
 * SipHash-1-3 keyed by the store's seed: keys and names come from clients,
 * and an unkeyed hash would let one client make every lookup linear.
 */
static inline uint64_t rotl64(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                                   \
  do {                                                                             \
    v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);                  \
    v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                                       \
    v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                                       \
    v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);                  \
  } while (0)

static uint64_t siphash13(const uint64_t k[2], const void *data, size_t len) {
  const unsigned char *p = data;
  uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k[0];
  uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k[1];
  uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k[0];
  uint64_t v3 = UINT64_C(0x7465646279746573) ^ k[1];
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t m = 0;
    for (int j = 0; j < 8; j++)
      m |= (uint64_t)p[i + (size_t)j] << (8 * j);
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t j = 0; i + j < len; j++)
    b |= (uint64_t)p[i + j] << (8 * j);
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- hash tables ----------------------------------------------------------------- */
/*
 * Open addressing with linear probing over intrusive nodes: every table
 * entry (a key, a service, a replica, a watch) starts with an hnode naming
 * its key bytes.  Load stays under 3/4 counting tombstones, so a probe
 * always meets an empty slot; a reserve before a mutation is what keeps
 * inserts from failing halfway through a write.
 */
typedef struct hnode {
  uint64_t hash;
  const char *key;
  size_t klen;
} hnode;

typedef struct hmap {
  hnode **slot;
  size_t cap;  /* power of two, or 0 */
  size_t len;  /* live entries */
  size_t used; /* live entries + tombstones */
} hmap;

#define HMAP_TOMB ((hnode *)(uintptr_t)1)
#define HMAP_CAP_MIN 8

/* A slot holds an entry (not empty, not a tombstone). */
static bool hslot_live(const hnode *n) { return n && n != HMAP_TOMB; }

/* Callers pass the hash so one key hashed once serves the three layers of a chain. */
static hnode *hmap_find(const hmap *m, const char *k, size_t klen, uint64_t h) {
  if (!m->cap)
    return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    hnode *n = m->slot[i];
    if (!n)
      return NULL;
    if (n != HMAP_TOMB && n->hash == h && n->klen == klen &&
        (klen == 0 || memcmp(n->key, k, klen) == 0))
      return n;
  }
}

/* Reuses tombstones; tells whether an empty slot was consumed (load accounting). */
static void hmap_place(hnode **slot, size_t cap, hnode *n, bool *was_empty) {
  size_t mask = cap - 1;
  for (size_t i = n->hash & mask;; i = (i + 1) & mask) {
    if (!slot[i] || slot[i] == HMAP_TOMB) {
      *was_empty = !slot[i];
      slot[i] = n;
      return;
    }
  }
}

/* Make room for `extra` more inserts; 0 or RV_CFG_ENOMEM (table unchanged). */
static int hmap_reserve(hmap *m, size_t extra) {
  if (m->cap && (m->used + extra) * 4 <= m->cap * 3)
    return 0;
  size_t cap = HMAP_CAP_MIN;
  while ((m->len + extra) * 2 > cap)
    cap *= 2;
  hnode **slot = calloc(cap, sizeof *slot);
  if (!slot)
    return RV_CFG_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    bool empty;
    if (hslot_live(m->slot[i]))
      hmap_place(slot, cap, m->slot[i], &empty);
  }
  free(m->slot);
  m->slot = slot;
  m->cap = cap;
  m->used = m->len;
  return 0;
}

/* Insert n (not present); hmap_reserve must have made room. */
static void hmap_put(hmap *m, hnode *n) {
  assert(m->cap && (m->used + 1) * 4 <= m->cap * 3);
  bool empty;
  hmap_place(m->slot, m->cap, n, &empty);
  m->len++;
  if (empty)
    m->used++;
}

/* Delete by identity, leaving a tombstone so later probes still find their keys. */
static void hmap_del(hmap *m, const hnode *n) {
  size_t mask = m->cap - 1;
  for (size_t i = n->hash & mask;; i = (i + 1) & mask) {
    assert(m->slot[i]);
    if (m->slot[i] == n) {
      m->slot[i] = HMAP_TOMB;
      m->len--;
      return;
    }
  }
}

/* Frees the slots only: entries belong to their owners. */
static void hmap_free(hmap *m) {
  free(m->slot);
  memset(m, 0, sizeof *m);
}

/* Every live entry, in no particular order, as an array the caller frees. */
static int hmap_items(const hmap *m, hnode ***out) {
  *out = NULL;
  if (!m->len)
    return 0;
  hnode **v = malloc(m->len * sizeof *v);
  if (!v)
    return RV_CFG_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < m->cap; i++)
    if (hslot_live(m->slot[i]))
      v[n++] = m->slot[i];
  assert(n == m->len);
  *out = v;
  return 0;
}

/* qsort order for names and keys: byte order, the order every listing promises. */
static int hnode_cmp(const void *a, const void *b) {
  const hnode *x = *(hnode *const *)a, *y = *(hnode *const *)b;
  return str_cmp((rv_cfg_str){x->key, x->klen}, (rv_cfg_str){y->key, y->klen});
}

/* ---- intrusive lists --------------------------------------------------------------- */

typedef struct dlist {
  struct dlist *prev, *next;
} dlist;

#define CONTAINER_OF(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

/* Circular lists with a head: O(1) unlink of a watch from whatever lists it is on. */
static void dl_init(dlist *h) { h->prev = h->next = h; }
static bool dl_empty(const dlist *h) { return h->next == h; }
static void dl_push(dlist *h, dlist *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}
static void dl_del(dlist *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

/* ---- values and records --------------------------------------------------------------- */

/* An immutable value shared by the table, records and events. NUL-terminated. */
struct rv__cfg_val {
  size_t refs;
  size_t len;
  char data[];
};

/* Copy a value once; everything else shares it by reference. */
static rv__cfg_val *val_new(rv_cfg_str s) {
  rv__cfg_val *v = malloc(sizeof *v + s.len + 1);
  if (!v)
    return NULL;
  v->refs = 1;
  v->len = s.len;
  if (s.len)
    memcpy(v->data, s.ptr, s.len);
  v->data[s.len] = '\0';
  return v;
}

/* NULL (absent) passes through, so callers need not special-case deletes. */
static rv__cfg_val *val_ref(rv__cfg_val *v) {
  if (v)
    v->refs++;
  return v;
}

/* The last holder (table, record or event) frees the bytes. */
static void val_unref(rv__cfg_val *v) {
  if (v && --v->refs == 0)
    free(v);
}

/* Absent (NULL) equals only absent; present values compare by bytes. */
static bool val_eq(const rv__cfg_val *a, const rv__cfg_val *b) {
  if (a == b)
    return true;
  if (!a || !b)
    return false;
  return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Views show an absent value as "" (the *_present flags tell it apart from empty). */
static rv_cfg_str val_str(const rv__cfg_val *v) {
  return v ? (rv_cfg_str){v->data, v->len} : (rv_cfg_str){"", 0};
}

/* One write, immutable once made: the history entry and the audit record. */
struct rv__cfg_rec {
  size_t refs;
  uint64_t revision;
  int64_t wall_ns;
  int op;
  uint64_t rollback_to;
  int level;
  rv_cfg_str ns, service, replica, key, author, reason; /* into buf */
  rv__cfg_val *oldv, *newv;                             /* NULL: absent */
  size_t bytes;                                         /* charged to the history */
  char buf[];
};

/* A record for ns (already validated and canonical) with copies of its strings. */
static rv__cfg_rec *rec_new(const rv_cfg_ns *p, rv_cfg_str ns, rv_cfg_str key, rv_cfg_str author,
                            rv_cfg_str reason) {
  size_t n = ns.len + 1 + key.len + 1 + author.len + 1 + reason.len + 1;
  rv__cfg_rec *r = calloc(1, sizeof *r + n);
  if (!r)
    return NULL;
  r->refs = 1;
  r->level = p->level;
  char *w = r->buf;
  rv_cfg_str *dst[] = {&r->ns, &r->key, &r->author, &r->reason};
  rv_cfg_str src[] = {ns, key, author, reason};
  for (size_t i = 0; i < 4; i++) {
    if (src[i].len)
      memcpy(w, src[i].ptr, src[i].len);
    w[src[i].len] = '\0';
    *dst[i] = (rv_cfg_str){w, src[i].len};
    w += src[i].len + 1;
  }
  /* service and replica point into the copy of "svc/S/R". */
  r->service = (rv_cfg_str){"", 0};
  r->replica = (rv_cfg_str){"", 0};
  if (p->level >= RV_CFG_LEVEL_SERVICE)
    r->service = (rv_cfg_str){r->ns.ptr + 4, p->service.len};
  if (p->level == RV_CFG_LEVEL_REPLICA)
    r->replica = (rv_cfg_str){r->ns.ptr + 4 + p->service.len + 1, p->replica.len};
  r->bytes = sizeof *r + n;
  return r;
}

/* Attach the values (taking references) and account their bytes. */
static void rec_set_values(rv__cfg_rec *r, rv__cfg_val *oldv, rv__cfg_val *newv) {
  r->oldv = val_ref(oldv);
  r->newv = val_ref(newv);
  r->bytes += (oldv ? oldv->len : 0) + (newv ? newv->len : 0);
}

/* Records outlive the history when events still hold them. */
static void rec_unref(rv__cfg_rec *r) {
  if (r && --r->refs == 0) {
    val_unref(r->oldv);
    val_unref(r->newv);
    free(r);
  }
}

/* The public view of a record: audit queries, events and apply results share it. */
static void rec_view(const rv__cfg_rec *r, rv_cfg_change *c) {
  c->revision = r->revision;
  c->wall_ns = r->wall_ns;
  c->op = r->op;
  c->rollback_to = r->rollback_to;
  c->level = r->level;
  c->ns = r->ns;
  c->service = r->service;
  c->replica = r->replica;
  c->key = r->key;
  c->old_present = r->oldv != NULL;
  c->old_value = val_str(r->oldv);
  c->new_present = r->newv != NULL;
  c->new_value = val_str(r->newv);
  c->author = r->author;
  c->reason = r->reason;
}

/* ---- the store ------------------------------------------------------------------------ */

typedef struct kv {
  hnode h; /* key: the key bytes below */
  rv__cfg_val *val;
  uint64_t create_rev, mod_rev;
  char key[];
} kv;

typedef struct node {
  hnode h;             /* key: the service or replica name (into ns) */
  int level;
  struct node *parent; /* replicas: their service */
  rv_cfg_str service, replica, ns;
  bool registered;
  hmap keys;           /* of kv */
  dlist eff;           /* effective watches targeting this node (their subs) */
  size_t n_eff;
  dlist raw;           /* raw watch subscriptions on this namespace */
  size_t n_raw;
  dlist watched_link;  /* in parent->watched_reps or the store's watched_svcs */
  bool in_watched;
  hmap reps;           /* services: replicas by name */
  dlist watched_reps;  /* services: replicas with effective watches */
  char buf[];
} node;

typedef struct watch watch;
typedef struct sub {
  dlist link; /* in node->eff or node->raw */
  watch *w;
  node *n;
} sub;

struct watch {
  hnode h; /* key: the id's bytes */
  uint64_t id;
  int mode;
  node *target; /* EFFECTIVE */
  size_t nsubs;
  sub subs[RV_CFG_WATCH_NS_MAX];
  size_t prefix_len;
  char prefix[];
};

struct rv_cfg {
  rv_cfg_opts o;
  uint64_t revision;
  bool loading; /* a load_* call came, finish has not */
  bool loaded;
  uint64_t load_max_mod;
  node *platform;
  hmap svcs;
  size_t nlayers; /* platform included */
  size_t nkeys;
  size_t data_bytes;
  /* history ring: hist_len records from hist_head, contiguous revisions */
  rv__cfg_rec **hist;
  size_t hist_cap, hist_head, hist_len, hist_bytes;
  hmap watches;
  uint64_t next_watch_id;
  dlist watched_svcs;
  uint64_t writes, conflicts, notifications, raw_notifications, suppressed, dry_runs;
  char errmsg[RV_CFG_ERRMSG_MAX];
};

/* The message is per store, not global, so several stores can live in one simulator. */
const char *rv_cfg_errmsg(const rv_cfg *cfg) { return cfg->errmsg; }

const rv_cfg_opts *rv_cfg_get_opts(const rv_cfg *cfg) { return &cfg->o; }

/* Record the specific message of a failure and return its code. */
__attribute__((format(printf, 3, 4))) static int fail(rv_cfg *c, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  return err;
}

/* Out of memory is reported with what was being done, and the promise that nothing changed. */
static int fail_oom(rv_cfg *c, const char *what) {
  return fail(c, RV_CFG_ENOMEM, "out of memory while %s; nothing was changed", what);
}

/* Printf-able form of a (possibly unterminated) string argument. */
#define SP(s) (int)(s).len, (s).ptr
#define ULL(x) (unsigned long long)(x)

/* Every table hashes with the store's seed. */
static uint64_t hash_bytes(const rv_cfg *c, const char *p, size_t n) {
  return siphash13(c->o.hash_seed, p, n);
}

/* ---- validation ------------------------------------------------------------------------ */
/*
 * Names, keys and authors end up in logs, metrics labels, RESP errors and
 * SQLite: a small charset keeps them unambiguous everywhere.  Every
 * rejection says what was wrong and what is allowed.
 */
static bool is_alnum(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}
/* Explicit ASCII classes: <ctype.h> would depend on the locale. */
static bool is_name_char(unsigned char ch) {
  return is_alnum(ch) || ch == '.' || ch == '_' || ch == '-';
}
static bool is_key_char(unsigned char ch) { return is_name_char(ch) || ch == ':' || ch == '/'; }

/* Validation runs outside a store too (rv_cfg_ns_parse), so it writes to a caller buffer. */
__attribute__((format(printf, 4, 5))) static int why_fail(char *why, size_t why_len, int err,
                                                          const char *fmt, ...) {
  if (why && why_len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
  }
  return err;
}

/* Service and replica names: they become path segments, metric labels and SQL text. */
static int check_name(rv_cfg_str s, const char *what, char *why, size_t why_len) {
  if (s.len == 0)
    return why_fail(why, why_len, RV_CFG_EBADNAME, "%s name is empty", what);
  if (s.len > RV_CFG_NAME_MAX_BYTES)
    return why_fail(why, why_len, RV_CFG_EBADNAME, "%s name of %zu bytes is too long: at most %d",
                    what, s.len, RV_CFG_NAME_MAX_BYTES);
  if (!is_alnum((unsigned char)s.ptr[0]))
    return why_fail(why, why_len, RV_CFG_EBADNAME,
                    "%s name must start with a letter or digit, not byte 0x%02x", what,
                    (unsigned char)s.ptr[0]);
  for (size_t i = 0; i < s.len; i++)
    if (!is_name_char((unsigned char)s.ptr[i]))
      return why_fail(why, why_len, RV_CFG_EBADNAME,
                      "%s name has byte 0x%02x at offset %zu: allowed are A-Z a-z 0-9 . _ -",
                      what, (unsigned char)s.ptr[i], i);
  return RV_CFG_OK;
}

int rv_cfg_key_check(rv_cfg_str s, const char *what, bool allow_empty, char *why,
                     size_t why_len) {
  if (s.len == 0 && !allow_empty)
    return why_fail(why, why_len, RV_CFG_EBADKEY, "%s is empty", what);
  if (s.len > RV_CFG_KEY_MAX_BYTES)
    return why_fail(why, why_len, RV_CFG_EBADKEY, "%s of %zu bytes is too long: at most %d", what,
                    s.len, RV_CFG_KEY_MAX_BYTES);
  for (size_t i = 0; i < s.len; i++)
    if (!is_key_char((unsigned char)s.ptr[i]))
      return why_fail(why, why_len, RV_CFG_EBADKEY,
                      "%s has byte 0x%02x at offset %zu: allowed are A-Z a-z 0-9 . _ - : /", what,
                      (unsigned char)s.ptr[i], i);
  return RV_CFG_OK;
}

/* A key (allow_empty: a key prefix, which may be empty). */
static int check_key(rv_cfg *c, rv_cfg_str s, const char *what, bool allow_empty) {
  return rv_cfg_key_check(s, what, allow_empty, c->errmsg, sizeof c->errmsg);
}

/* Values are opaque text: any bytes but NUL, up to max_bytes. */
static int check_value(rv_cfg *c, rv_cfg_str s, size_t max_bytes, const char *limit_name) {
  if (s.len > max_bytes)
    return fail(c, RV_CFG_EVALUESIZE, "value of %zu bytes is too large: at most %zu (%s)", s.len,
                max_bytes, limit_name);
  if (s.len && memchr(s.ptr, '\0', s.len))
    return fail(c, RV_CFG_EBADVALUE,
                "value has a NUL byte at offset %zu: values are text (JSON welcome)",
                (size_t)((const char *)memchr(s.ptr, '\0', s.len) - s.ptr));
  return RV_CFG_OK;
}

/* Authors and reasons: printable text (UTF-8 welcome), no control bytes. */
static int check_text(rv_cfg *c, rv_cfg_str s, const char *what, size_t max_bytes, bool required,
                      int err) {
  if (s.len == 0 && required)
    return fail(c, err, "%s is required: say who makes the change", what);
  if (s.len > max_bytes)
    return fail(c, err, "%s of %zu bytes is too long: at most %zu", what, s.len, max_bytes);
  for (size_t i = 0; i < s.len; i++) {
    unsigned char ch = (unsigned char)s.ptr[i];
    if (ch < 0x20 || ch == 0x7f)
      return fail(c, err, "%s has control byte 0x%02x at offset %zu: use printable text", what,
                  ch, i);
  }
  return RV_CFG_OK;
}

static const char ns_forms[] =
    "a namespace is \"platform\", \"svc/<service>\" or \"svc/<service>/<replica>\"";

/*
 * Strict parsing: only the canonical spellings are accepted, so a parsed
 * namespace and its input are the same bytes and may be stored as given.
 */
int rv_cfg_ns_parse(rv_cfg_str ns, rv_cfg_ns *out, char *why, size_t why_len) {
  static const char platform[] = "platform", svc[] = "svc/";
  memset(out, 0, sizeof *out);
  out->service = out->replica = (rv_cfg_str){"", 0};
  if (str_eq(ns, RV_CFG_STR(platform))) {
    out->level = RV_CFG_LEVEL_PLATFORM;
    return RV_CFG_OK;
  }
  if (ns.len > RV_CFG_NS_MAX_BYTES)
    return why_fail(why, why_len, RV_CFG_EBADNS, "namespace of %zu bytes is too long: at most %d",
                    ns.len, RV_CFG_NS_MAX_BYTES);
  if (ns.len < sizeof svc - 1 || memcmp(ns.ptr, svc, sizeof svc - 1) != 0)
    return why_fail(why, why_len, RV_CFG_EBADNS, "%s", ns_forms);
  rv_cfg_str rest = {ns.ptr + 4, ns.len - 4};
  const char *slash = rest.len ? memchr(rest.ptr, '/', rest.len) : NULL;
  out->level = RV_CFG_LEVEL_SERVICE;
  out->service = rest;
  if (slash) {
    out->level = RV_CFG_LEVEL_REPLICA;
    out->service = (rv_cfg_str){rest.ptr, (size_t)(slash - rest.ptr)};
    out->replica = (rv_cfg_str){slash + 1, rest.len - out->service.len - 1};
    if (out->replica.len && memchr(out->replica.ptr, '/', out->replica.len))
      return why_fail(why, why_len, RV_CFG_EBADNS, "namespace has more than three parts: %s",
                      ns_forms);
  }
  int rc = check_name(out->service, "service", why, why_len);
  if (rc == RV_CFG_OK && out->level == RV_CFG_LEVEL_REPLICA)
    rc = check_name(out->replica, "replica", why, why_len);
  return rc;
}

/* The inverse of rv_cfg_ns_parse, for callers that hold names, not namespaces. */
size_t rv_cfg_ns_format(char *out, int level, rv_cfg_str service, rv_cfg_str replica) {
  int n;
  if (level == RV_CFG_LEVEL_PLATFORM)
    n = snprintf(out, RV_CFG_NS_MAX_BYTES + 1, "platform");
  else if (level == RV_CFG_LEVEL_SERVICE)
    n = snprintf(out, RV_CFG_NS_MAX_BYTES + 1, "svc/%.*s", SP(service));
  else
    n = snprintf(out, RV_CFG_NS_MAX_BYTES + 1, "svc/%.*s/%.*s", SP(service), SP(replica));
  return n < 0 ? 0 : (size_t)n;
}

/* Parse into the store's error message. */
static int parse_ns(rv_cfg *c, rv_cfg_str ns, rv_cfg_ns *out) {
  return rv_cfg_ns_parse(ns, out, c->errmsg, sizeof c->errmsg);
}

/* (service, replica) as a reader; replica may be empty. */
static int check_target(rv_cfg *c, rv_cfg_str service, rv_cfg_str replica) {
  int rc = check_name(service, "service", c->errmsg, sizeof c->errmsg);
  if (rc == RV_CFG_OK && replica.len)
    rc = check_name(replica, "replica", c->errmsg, sizeof c->errmsg);
  return rc;
}

/* A reader (service[, replica]) as the namespace of its own layer. */
static int target_ns(rv_cfg *c, rv_cfg_str service, rv_cfg_str replica, rv_cfg_ns *out) {
  *out = (rv_cfg_ns){replica.len ? RV_CFG_LEVEL_REPLICA : RV_CFG_LEVEL_SERVICE, service, replica};
  return check_target(c, service, replica);
}

/* ---- nodes -------------------------------------------------------------------------------- */

static node *node_new(rv_cfg *c, int level, node *parent, rv_cfg_str service, rv_cfg_str replica) {
  char ns[RV_CFG_NS_MAX_BYTES + 1];
  size_t ns_len = rv_cfg_ns_format(ns, level, service, replica);
  node *n = calloc(1, sizeof *n + ns_len + 1);
  if (!n)
    return NULL;
  memcpy(n->buf, ns, ns_len + 1);
  n->level = level;
  n->parent = parent;
  n->ns = (rv_cfg_str){n->buf, ns_len};
  n->service = n->replica = (rv_cfg_str){"", 0};
  if (level >= RV_CFG_LEVEL_SERVICE)
    n->service = (rv_cfg_str){n->buf + 4, service.len};
  if (level == RV_CFG_LEVEL_REPLICA)
    n->replica = (rv_cfg_str){n->buf + 4 + service.len + 1, replica.len};
  rv_cfg_str name = level == RV_CFG_LEVEL_REPLICA ? n->replica : n->service;
  n->h = (hnode){hash_bytes(c, name.ptr, name.len), name.ptr, name.len};
  dl_init(&n->eff);
  dl_init(&n->raw);
  dl_init(&n->watched_link);
  dl_init(&n->watched_reps);
  return n;
}

/* Frees a node and its keys; its replicas and watches are freed by their owners. */
static void node_free(node *n) {
  for (size_t i = 0; i < n->keys.cap; i++) {
    if (hslot_live(n->keys.slot[i])) {
      kv *e = (kv *)(void *)n->keys.slot[i];
      val_unref(e->val);
      free(e);
    }
  }
  hmap_free(&n->keys);
  hmap_free(&n->reps);
  free(n);
}

/* Lookups never create: reads of unknown services must not make them exist. */
static node *svc_find(const rv_cfg *c, rv_cfg_str s) {
  return (node *)(void *)hmap_find(&c->svcs, s.ptr, s.len, hash_bytes(c, s.ptr, s.len));
}

static node *rep_find(const rv_cfg *c, const node *svc, rv_cfg_str r) {
  if (!svc)
    return NULL;
  return (node *)(void *)hmap_find(&svc->reps, r.ptr, r.len, hash_bytes(c, r.ptr, r.len));
}

/* The node of a parsed namespace, or NULL when nothing lives there yet. */
static node *ns_find(const rv_cfg *c, const rv_cfg_ns *p) {
  if (p->level == RV_CFG_LEVEL_PLATFORM)
    return c->platform;
  node *svc = svc_find(c, p->service);
  return p->level == RV_CFG_LEVEL_SERVICE ? svc : rep_find(c, svc, p->replica);
}

/* Whether a node still holds anything; the rest are freed by node_gc. */
static bool node_alive(const node *n) {
  return n->level == RV_CFG_LEVEL_PLATFORM || n->registered || n->keys.len || n->n_eff ||
         n->n_raw || n->reps.len;
}

/* Free n (and then its service) if it no longer holds anything. */
static void node_gc(rv_cfg *c, node *n) {
  if (!n || node_alive(n))
    return;
  assert(!n->in_watched);
  node *parent = n->parent;
  if (parent)
    hmap_del(&parent->reps, &n->h);
  else
    hmap_del(&c->svcs, &n->h);
  c->nlayers--;
  node_free(n);
  node_gc(c, parent);
}

/* How many namespaces and services creating p's node would add. */
static void ns_missing(const rv_cfg *c, const rv_cfg_ns *p, size_t *layers, size_t *services) {
  *layers = *services = 0;
  if (p->level == RV_CFG_LEVEL_PLATFORM)
    return;
  node *svc = svc_find(c, p->service);
  if (!svc) {
    (*layers)++;
    (*services)++;
  }
  if (p->level == RV_CFG_LEVEL_REPLICA && !rep_find(c, svc, p->replica))
    (*layers)++;
}

/* Whether the limits allow creating p's node. */
static int ns_room(rv_cfg *c, const rv_cfg_ns *p) {
  size_t layers, services;
  ns_missing(c, p, &layers, &services);
  if (services && c->svcs.len + services > c->o.max_services)
    return fail(c, RV_CFG_ESERVICES,
                "cannot add service %.*s: the store holds %zu services, the limit (max_services)",
                SP(p->service), c->svcs.len);
  if (layers && c->nlayers + layers > c->o.max_layers)
    return fail(c, RV_CFG_ELAYERS,
                "cannot add namespace for %.*s%s%.*s: the store holds %zu namespaces, the limit "
                "(max_layers)",
                SP(p->service), p->replica.len ? "/" : "", SP(p->replica), c->nlayers);
  return RV_CFG_OK;
}

/*
 * The node of p, created (with its service) if missing.  enforce: check the
 * service and namespace limits.  On failure nothing new is left behind.
 */
static int ns_ensure(rv_cfg *c, const rv_cfg_ns *p, bool enforce, node **out) {
  *out = NULL;
  if (p->level == RV_CFG_LEVEL_PLATFORM) {
    *out = c->platform;
    return RV_CFG_OK;
  }
  if (enforce) {
    int rc = ns_room(c, p);
    if (rc)
      return rc;
  }
  node *svc = svc_find(c, p->service);
  if (!svc) {
    if (hmap_reserve(&c->svcs, 1) || !(svc = node_new(c, RV_CFG_LEVEL_SERVICE, NULL, p->service,
                                                      (rv_cfg_str){"", 0})))
      return fail_oom(c, "adding a service");
    hmap_put(&c->svcs, &svc->h);
    c->nlayers++;
  }
  if (p->level == RV_CFG_LEVEL_SERVICE) {
    *out = svc;
    return RV_CFG_OK;
  }
  node *rep = rep_find(c, svc, p->replica);
  if (!rep) {
    if (hmap_reserve(&svc->reps, 1) ||
        !(rep = node_new(c, RV_CFG_LEVEL_REPLICA, svc, p->service, p->replica))) {
      node_gc(c, svc);
      return fail_oom(c, "adding a replica");
    }
    hmap_put(&svc->reps, &rep->h);
    c->nlayers++;
  }
  *out = rep;
  return RV_CFG_OK;
}

/*
 * Keep the "watched" lists right: a replica is on its service's list while
 * it has effective watches; a service is on the store's list while it or
 * one of its replicas has.  These lists are what bounds a write's work.
 */
static void node_watched_update(rv_cfg *c, node *n) {
  bool want;
  dlist *head;
  if (n->level == RV_CFG_LEVEL_REPLICA) {
    want = n->n_eff > 0;
    head = &n->parent->watched_reps;
  } else if (n->level == RV_CFG_LEVEL_SERVICE) {
    want = n->n_eff > 0 || !dl_empty(&n->watched_reps);
    head = &c->watched_svcs;
  } else {
    return;
  }
  if (want != n->in_watched) {
    if (want)
      dl_push(head, &n->watched_link);
    else
      dl_del(&n->watched_link);
    n->in_watched = want;
  }
  if (n->level == RV_CFG_LEVEL_REPLICA)
    node_watched_update(c, n->parent);
}

/* Tolerates a NULL node: a reader's chain may have missing layers. */
static kv *kv_find(const node *n, rv_cfg_str key, uint64_t h) {
  return n ? (kv *)(void *)hmap_find(&n->keys, key.ptr, key.len, h) : NULL;
}

static rv__cfg_val *val_at(const node *n, rv_cfg_str key, uint64_t h) {
  kv *e = kv_find(n, key, h);
  return e ? e->val : NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

void rv_cfg_opts_default(rv_cfg_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_keys_per_layer = RV_CFG_MAX_KEYS_PER_LAYER_DEFAULT;
  o->max_layers = RV_CFG_MAX_LAYERS_DEFAULT;
  o->max_services = RV_CFG_MAX_SERVICES_DEFAULT;
  o->max_watches = RV_CFG_MAX_WATCHES_DEFAULT;
  o->max_value_bytes = RV_CFG_VALUE_MAX_BYTES_DEFAULT;
  o->max_data_bytes = RV_CFG_MAX_DATA_BYTES_DEFAULT;
  o->history_max_entries = RV_CFG_HISTORY_MAX_ENTRIES_DEFAULT;
  o->history_max_bytes = RV_CFG_HISTORY_MAX_BYTES_DEFAULT;
}

/* Zero limits would make a store that refuses everything: reject them up front. */
int rv_cfg_create(rv_cfg **out, const rv_cfg_opts *opts) {
  *out = NULL;
  rv_cfg_opts o;
  if (opts)
    o = *opts;
  else
    rv_cfg_opts_default(&o);
  if (!o.max_keys_per_layer || o.max_layers < 1 || !o.max_services || !o.max_watches ||
      o.max_value_bytes > RV_CFG_VALUE_MAX_BYTES_CEILING || !o.max_data_bytes ||
      !o.history_max_entries || !o.history_max_bytes)
    return RV_CFG_EINVAL;
  rv_cfg *c = calloc(1, sizeof *c);
  if (!c)
    return RV_CFG_ENOMEM;
  c->o = o;
  c->next_watch_id = 1;
  dl_init(&c->watched_svcs);
  c->platform = node_new(c, RV_CFG_LEVEL_PLATFORM, NULL, (rv_cfg_str){"", 0}, (rv_cfg_str){"", 0});
  if (!c->platform) {
    free(c);
    return RV_CFG_ENOMEM;
  }
  c->nlayers = 1;
  *out = c;
  return RV_CFG_OK;
}

/* Frees everything the store owns; events the caller still holds stay valid. */
void rv_cfg_destroy(rv_cfg *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->watches.cap; i++)
    if (hslot_live(c->watches.slot[i]))
      free(c->watches.slot[i]);
  hmap_free(&c->watches);
  for (size_t i = 0; i < c->svcs.cap; i++) {
    if (!hslot_live(c->svcs.slot[i]))
      continue;
    node *svc = (node *)(void *)c->svcs.slot[i];
    for (size_t j = 0; j < svc->reps.cap; j++)
      if (hslot_live(svc->reps.slot[j]))
        node_free((node *)(void *)svc->reps.slot[j]);
    node_free(svc);
  }
  hmap_free(&c->svcs);
  node_free(c->platform);
  for (size_t i = 0; i < c->hist_len; i++)
    rec_unref(c->hist[(c->hist_head + i) % c->hist_cap]);
  free(c->hist);
  free(c);
}

/* What a watcher starts from, and what the shell reports after each write. */
uint64_t rv_cfg_revision(const rv_cfg *c) { return c->revision; }

/* The resume bound: revision + 1 for an empty history, so "since now" always works. */
uint64_t rv_cfg_oldest_retained(const rv_cfg *c) {
  return c->hist_len ? c->hist[c->hist_head]->revision : c->revision + 1;
}

/* ---- history ---------------------------------------------------------------------------------- */

static rv__cfg_rec *hist_at(const rv_cfg *c, size_t i) {
  return c->hist[(c->hist_head + i) % c->hist_cap];
}

/* Index of revision r in the ring; r must be retained. */
static size_t hist_index(const rv_cfg *c, uint64_t r) {
  assert(c->hist_len && r >= rv_cfg_oldest_retained(c) && r <= c->revision);
  return (size_t)(r - rv_cfg_oldest_retained(c));
}

/* Make sure hist_push will not need memory: grow the ring up to its bound. */
static int hist_reserve(rv_cfg *c) {
  if (c->hist_len < c->hist_cap || c->hist_cap >= c->o.history_max_entries)
    return 0;
  size_t cap = c->hist_cap ? c->hist_cap * 2 : 16;
  if (cap > c->o.history_max_entries)
    cap = c->o.history_max_entries;
  rv__cfg_rec **h = malloc(cap * sizeof *h);
  if (!h)
    return RV_CFG_ENOMEM;
  for (size_t i = 0; i < c->hist_len; i++)
    h[i] = hist_at(c, i);
  free(c->hist);
  c->hist = h;
  c->hist_cap = cap;
  c->hist_head = 0;
  return 0;
}

/* Forgetting the oldest write is what bounds memory; its record lives on in pending events. */
static void hist_drop_oldest(rv_cfg *c) {
  rv__cfg_rec *r = c->hist[c->hist_head];
  c->hist_head = (c->hist_head + 1) % c->hist_cap;
  c->hist_len--;
  c->hist_bytes -= r->bytes;
  rec_unref(r);
}

/* Append r (taking the caller's reference), then trim to the bounds; the newest always stays. */
static void hist_push(rv_cfg *c, rv__cfg_rec *r) {
  if (c->hist_len == c->hist_cap)
    hist_drop_oldest(c);
  assert(c->hist_len < c->hist_cap);
  c->hist[(c->hist_head + c->hist_len) % c->hist_cap] = r;
  c->hist_len++;
  c->hist_bytes += r->bytes;
  while (c->hist_len > c->o.history_max_entries ||
         (c->hist_bytes > c->o.history_max_bytes && c->hist_len > 1))
    hist_drop_oldest(c);
}

/* ---- events ------------------------------------------------------------------------------------ */

void rv_cfg_events_init(rv_cfg_events *ev) { memset(ev, 0, sizeof *ev); }

/* Undo events appended by a call that then failed: a failed call leaves ev as it was. */
static void ev_truncate(rv_cfg_events *ev, size_t len) {
  while (ev->len > len) {
    rv_cfg_event *e = &ev->v[--ev->len];
    rec_unref(e->rec_ref__);
    val_unref(e->old_ref__);
    val_unref(e->new_ref__);
  }
}

void rv_cfg_events_clear(rv_cfg_events *ev) { ev_truncate(ev, 0); }

/* Release the references and the array. */
void rv_cfg_events_free(rv_cfg_events *ev) {
  rv_cfg_events_clear(ev);
  free(ev->v);
  memset(ev, 0, sizeof *ev);
}

/* What one reader sees for one key: a value (NULL: absent) and where it lives. */
typedef struct effv {
  rv__cfg_val *v;
  int level;
} effv;

/* Counters a write or replay accumulates, added to the store only on success. */
typedef struct tally {
  uint64_t notifications, raw_notifications, suppressed;
} tally;

/* An event holds references, so it stays valid after the store moves on. */
static int ev_push(rv_cfg *c, rv_cfg_events *ev, const watch *w, rv__cfg_rec *r, effv before,
                   effv after) {
  if (!ev)
    return fail(c, RV_CFG_EINVAL, "watch %llu needs an event but no event list was given",
                ULL(w->id));
  if (ev->len == ev->cap) {
    size_t cap = ev->cap ? ev->cap * 2 : 16;
    rv_cfg_event *v = realloc(ev->v, cap * sizeof *v);
    if (!v)
      return fail_oom(c, "queueing watch events");
    ev->v = v;
    ev->cap = cap;
  }
  rv_cfg_event *e = &ev->v[ev->len++];
  memset(e, 0, sizeof *e);
  e->watch_id = w->id;
  e->mode = w->mode;
  rec_view(r, &e->change);
  e->old_present = before.v != NULL;
  e->old_value = val_str(before.v);
  e->old_level = before.level;
  e->new_present = after.v != NULL;
  e->new_value = val_str(after.v);
  e->new_level = after.level;
  r->refs++;
  e->rec_ref__ = r;
  e->old_ref__ = val_ref(before.v);
  e->new_ref__ = val_ref(after.v);
  return RV_CFG_OK;
}

/* A watch may narrow itself to a key prefix (one client per subsystem). */
static bool watch_wants_key(const watch *w, rv_cfg_str key) {
  return str_has_prefix(key, w->prefix, w->prefix_len);
}

/* The most specific value among the levels of one reader's chain. */
static effv eff_pick(rv__cfg_val *const v[4], bool has_rep) {
  for (int l = has_rep ? RV_CFG_LEVEL_REPLICA : RV_CFG_LEVEL_SERVICE; l >= RV_CFG_LEVEL_PLATFORM;
       l--)
    if (v[l])
      return (effv){v[l], l};
  return (effv){NULL, RV_CFG_LEVEL_NONE};
}

/*
 * What reader (svc[, rep]) sees for key, with level wl's value replaced by
 * wv: the same function answers "before" (wv = old value) and "after"
 * (wv = new value) of a write without touching the table.  Nodes may be
 * NULL (a reader that does not exist yet: a dry run of its first write).
 */
static effv eff_with(const rv_cfg *c, const node *svc, const node *rep, bool has_rep,
                     rv_cfg_str key, uint64_t h, int wl, rv__cfg_val *wv) {
  rv__cfg_val *v[4] = {NULL, NULL, NULL, NULL};
  v[RV_CFG_LEVEL_PLATFORM] = val_at(c->platform, key, h);
  v[RV_CFG_LEVEL_SERVICE] = val_at(svc, key, h);
  if (has_rep)
    v[RV_CFG_LEVEL_REPLICA] = val_at(rep, key, h);
  v[wl] = wv;
  return eff_pick(v, has_rep);
}

/* Events for the effective watches of one reader, if the write changes what it sees. */
static int notify_reader(rv_cfg *c, node *svc, node *rep, rv__cfg_rec *r, uint64_t h,
                         rv_cfg_events *ev, tally *t) {
  bool has_rep = rep != NULL;
  node *reader = has_rep ? rep : svc;
  effv before = eff_with(c, svc, rep, has_rep, r->key, h, r->level, r->oldv);
  effv after = eff_with(c, svc, rep, has_rep, r->key, h, r->level, r->newv);
  if (val_eq(before.v, after.v)) {
    t->suppressed += reader->n_eff;
    return RV_CFG_OK;
  }
  for (dlist *l = reader->eff.next; l != &reader->eff; l = l->next) {
    sub *s = CONTAINER_OF(l, sub, link);
    if (!watch_wants_key(s->w, r->key))
      continue;
    int rc = ev_push(c, ev, s->w, r, before, after);
    if (rc)
      return rc;
    t->notifications++;
  }
  return RV_CFG_OK;
}

/* A watched service: its own effective watches, then its watched replicas'. */
static int notify_service(rv_cfg *c, node *svc, rv__cfg_rec *r, uint64_t h, rv_cfg_events *ev,
                          tally *t) {
  int rc = RV_CFG_OK;
  if (svc->n_eff)
    rc = notify_reader(c, svc, NULL, r, h, ev, t);
  for (dlist *l = svc->watched_reps.next; l != &svc->watched_reps && rc == RV_CFG_OK;
       l = l->next)
    rc = notify_reader(c, svc, CONTAINER_OF(l, node, watched_link), r, h, ev, t);
  return rc;
}

/*
 * Events for a write to node wn, computed before the table changes (the
 * record carries the old and new value).  Visits only watched readers under
 * wn: see "Effective change" above.
 */
static int notify_write(rv_cfg *c, node *wn, rv__cfg_rec *r, uint64_t h, rv_cfg_events *ev,
                        tally *t) {
  int rc = RV_CFG_OK;
  for (dlist *l = wn->raw.next; l != &wn->raw && rc == RV_CFG_OK; l = l->next) {
    sub *s = CONTAINER_OF(l, sub, link);
    if (!watch_wants_key(s->w, r->key))
      continue;
    effv before = {r->oldv, r->oldv ? wn->level : RV_CFG_LEVEL_NONE};
    effv after = {r->newv, r->newv ? wn->level : RV_CFG_LEVEL_NONE};
    rc = ev_push(c, ev, s->w, r, before, after);
    t->raw_notifications++;
  }
  if (rc)
    return rc;
  switch (wn->level) {
  case RV_CFG_LEVEL_REPLICA:
    return wn->n_eff ? notify_reader(c, wn->parent, wn, r, h, ev, t) : RV_CFG_OK;
  case RV_CFG_LEVEL_SERVICE:
    return wn->in_watched ? notify_service(c, wn, r, h, ev, t) : RV_CFG_OK;
  default:
    for (dlist *l = c->watched_svcs.next; l != &c->watched_svcs && rc == RV_CFG_OK; l = l->next)
      rc = notify_service(c, CONTAINER_OF(l, node, watched_link), r, h, ev, t);
    return rc;
  }
}

/* ---- writes ------------------------------------------------------------------------------------- */

/* A write resolved and checked, before anything changes. */
typedef struct plan {
  int op;
  rv_cfg_ns ns;
  uint64_t khash;
  node *n;                 /* the namespace's node, or NULL if it does not exist yet */
  kv *cur;                 /* the key's entry, or NULL */
  bool new_present;
  rv_cfg_str new_value;    /* when new_shared is NULL */
  rv__cfg_val *new_shared; /* rollback to a value the history holds */
  uint64_t revision;
} plan;

/*
 * The value of (ns, key) as of revision `at`: start from the current value
 * and undo, newest first, every retained write to it after `at`.  The
 * caller has checked that all of them are retained.
 */
static rv__cfg_val *value_as_of(const rv_cfg *c, rv_cfg_str ns, rv_cfg_str key, rv__cfg_val *cur,
                                uint64_t at) {
  rv__cfg_val *v = cur;
  for (size_t i = c->hist_len; i-- > 0;) {
    const rv__cfg_rec *r = hist_at(c, i);
    if (r->revision <= at)
      break;
    if (str_eq(r->key, key) && str_eq(r->ns, ns))
      v = r->oldv;
  }
  return v;
}

/* The one message for "too old": what the bound is and what the client should do. */
static int compacted(rv_cfg *c, const char *what, uint64_t r) {
  return fail(c, RV_CFG_ECOMPACTED,
              "%s revision %llu: the history before revision %llu was compacted (the store keeps "
              "the last %zu writes in memory); re-read the current state instead",
              what, ULL(r), ULL(rv_cfg_oldest_retained(c)), c->o.history_max_entries);
}

/*
 * Every check a write needs, in the order a user would want to hear about
 * them (syntax, then compare-and-set, then existence, then limits), and no
 * side effect but the conflict counter: prepare and apply share it, so a
 * write that prepared is a write that applies.
 */
static int write_prepare(rv_cfg *c, const rv_cfg_write *w, plan *p) {
  memset(p, 0, sizeof *p);
  if (c->loading)
    return fail(c, RV_CFG_EINVAL, "the store is loading: writes wait for rv_cfg_load_finish");
  if (w->op != RV_CFG_OP_SET && w->op != RV_CFG_OP_DELETE && w->op != RV_CFG_OP_ROLLBACK)
    return fail(c, RV_CFG_EINVAL, "unknown write op %d: use set, delete or rollback", w->op);
  int rc;
  if ((rc = parse_ns(c, w->ns, &p->ns)) || (rc = check_key(c, w->key, "key", false)) ||
      (rc = check_text(c, w->author, "author", RV_CFG_AUTHOR_MAX_BYTES, true,
                       RV_CFG_EBADAUTHOR)) ||
      (rc = check_text(c, w->reason, "reason", RV_CFG_REASON_MAX_BYTES, false,
                       RV_CFG_EBADREASON)))
    return rc;
  if (c->revision >= RV_CFG_REVISION_MAX)
    return fail(c, RV_CFG_EREVISIONS, "revision %llu is the last one a store can issue",
                ULL(c->revision));
  p->op = w->op;
  p->khash = hash_bytes(c, w->key.ptr, w->key.len);
  p->n = ns_find(c, &p->ns);
  p->cur = kv_find(p->n, w->key, p->khash);
  p->revision = c->revision + 1;

  if (w->expect_revision != RV_CFG_REV_ANY) {
    if (w->expect_revision == 0 && p->cur) {
      c->conflicts++;
      return fail(c, RV_CFG_ECONFLICT,
                  "%.*s in %.*s exists (mod_revision %llu) but the write expects it not to",
                  SP(w->key), SP(w->ns), ULL(p->cur->mod_rev));
    }
    if (w->expect_revision != 0 && (!p->cur || p->cur->mod_rev != w->expect_revision)) {
      c->conflicts++;
      if (!p->cur)
        return fail(c, RV_CFG_ECONFLICT,
                    "%.*s in %.*s does not exist but the write expects mod_revision %llu",
                    SP(w->key), SP(w->ns), ULL(w->expect_revision));
      return fail(c, RV_CFG_ECONFLICT,
                  "%.*s in %.*s is at mod_revision %llu, not %llu: someone changed it; re-read "
                  "and retry",
                  SP(w->key), SP(w->ns), ULL(p->cur->mod_rev), ULL(w->expect_revision));
    }
  }

  switch (w->op) {
  case RV_CFG_OP_SET:
    if ((rc = check_value(c, w->value, c->o.max_value_bytes, "max_value_bytes")))
      return rc;
    p->new_present = true;
    p->new_value = w->value;
    break;
  case RV_CFG_OP_DELETE:
    if (!p->cur)
      return fail(c, RV_CFG_ENOKEY, "cannot delete %.*s in %.*s: no such key", SP(w->key),
                  SP(w->ns));
    break;
  case RV_CFG_OP_ROLLBACK:
    if (w->rollback_to > c->revision)
      return fail(c, RV_CFG_EFUTURE, "cannot roll back to revision %llu: the store is at %llu",
                  ULL(w->rollback_to), ULL(c->revision));
    if (w->rollback_resolved) {
      if (w->rollback_present &&
          (rc = check_value(c, w->rollback_value, RV_CFG_VALUE_MAX_BYTES_CEILING,
                            "RV_CFG_VALUE_MAX_BYTES_CEILING")))
        return rc;
      p->new_present = w->rollback_present;
      p->new_value = w->rollback_value;
    } else {
      if (w->rollback_to + 1 < rv_cfg_oldest_retained(c))
        return compacted(c, "cannot roll back to", w->rollback_to);
      p->new_shared = value_as_of(c, w->ns, w->key, p->cur ? p->cur->val : NULL, w->rollback_to);
      p->new_present = p->new_shared != NULL;
      p->new_value = val_str(p->new_shared);
    }
    if (!p->new_present && !p->cur)
      return fail(c, RV_CFG_ENOKEY,
                  "nothing to roll back: %.*s in %.*s did not exist at revision %llu and does not "
                  "exist now",
                  SP(w->key), SP(w->ns), ULL(w->rollback_to));
    break;
  }

  if (p->new_present) {
    size_t old_bytes = p->cur ? w->key.len + p->cur->val->len : 0;
    size_t new_bytes = w->key.len + p->new_value.len;
    if (!p->cur) {
      if (p->n && p->n->keys.len >= c->o.max_keys_per_layer)
        return fail(c, RV_CFG_EKEYS,
                    "cannot add %.*s to %.*s: it holds %zu keys, the limit "
                    "(max_keys_per_layer); delete unused keys first",
                    SP(w->key), SP(w->ns), p->n->keys.len);
      if (!p->n && (rc = ns_room(c, &p->ns)))
        return rc;
    }
    if (new_bytes > old_bytes && c->data_bytes - old_bytes + new_bytes > c->o.max_data_bytes)
      return fail(c, RV_CFG_EDATA,
                  "cannot store %zu more bytes: keys and values use %zu of %zu bytes "
                  "(max_data_bytes)",
                  new_bytes - old_bytes, c->data_bytes, c->o.max_data_bytes);
  }
  return RV_CFG_OK;
}

/* The audit record a plan would produce, pointing into the request and the store. */
static void plan_view(const rv_cfg_write *w, const plan *p, rv_cfg_change *out) {
  memset(out, 0, sizeof *out);
  out->revision = p->revision;
  out->wall_ns = w->wall_ns;
  out->op = p->op;
  out->rollback_to = p->op == RV_CFG_OP_ROLLBACK ? w->rollback_to : 0;
  out->level = p->ns.level;
  out->ns = w->ns;
  out->service = p->ns.service;
  out->replica = p->ns.replica;
  out->key = w->key;
  out->old_present = p->cur != NULL;
  out->old_value = p->cur ? val_str(p->cur->val) : (rv_cfg_str){"", 0};
  out->new_present = p->new_present;
  out->new_value = p->new_present ? p->new_value : (rv_cfg_str){"", 0};
  out->author = w->author;
  out->reason = w->reason;
}

/* Lets a durable store commit exactly what apply will do, before it does it. */
int rv_cfg_prepare(rv_cfg *c, const rv_cfg_write *w, rv_cfg_change *out) {
  plan p;
  int rc = write_prepare(c, w, &p);
  if (rc == RV_CFG_OK)
    plan_view(w, &p, out);
  return rc;
}

/*
 * Allocate, compute events, then mutate: the split is what makes every
 * error leave the store and ev untouched (see "Failure atomicity").
 */
int rv_cfg_apply(rv_cfg *c, const rv_cfg_write *w, rv_cfg_events *ev, rv_cfg_change *out) {
  plan p;
  int rc = write_prepare(c, w, &p);
  if (rc)
    return rc;

  /* Allocate everything first: from "mutate" on, nothing can fail. */
  size_t ev_mark = ev ? ev->len : 0;
  rv__cfg_val *nv = NULL;
  rv__cfg_rec *r = NULL;
  kv *ne = NULL;
  node *n = p.n;
  tally t = {0, 0, 0};
  if (p.new_present && !(nv = p.new_shared ? val_ref(p.new_shared) : val_new(p.new_value))) {
    rc = fail_oom(c, "copying the value");
    goto undo;
  }
  if (!(r = rec_new(&p.ns, w->ns, w->key, w->author, w->reason))) {
    rc = fail_oom(c, "recording the change");
    goto undo;
  }
  r->revision = p.revision;
  r->wall_ns = w->wall_ns;
  r->op = p.op;
  r->rollback_to = p.op == RV_CFG_OP_ROLLBACK ? w->rollback_to : 0;
  rec_set_values(r, p.cur ? p.cur->val : NULL, nv);
  if (!n && (rc = ns_ensure(c, &p.ns, false, &n)))
    goto undo;
  if (p.new_present && !p.cur) {
    if (!(ne = malloc(sizeof *ne + w->key.len + 1)) || hmap_reserve(&n->keys, 1)) {
      rc = fail_oom(c, "adding the key");
      goto undo;
    }
    memcpy(ne->key, w->key.ptr, w->key.len);
    ne->key[w->key.len] = '\0';
    ne->h = (hnode){p.khash, ne->key, w->key.len};
  }
  if (hist_reserve(c)) {
    rc = fail_oom(c, "growing the history");
    goto undo;
  }
  if ((rc = notify_write(c, n, r, p.khash, ev, &t)))
    goto undo;

  /* Mutate. */
  if (p.new_present && p.cur) {
    c->data_bytes = c->data_bytes - p.cur->val->len + nv->len;
    val_unref(p.cur->val);
    p.cur->val = nv;
    p.cur->mod_rev = p.revision;
  } else if (p.new_present) {
    ne->val = nv;
    ne->create_rev = ne->mod_rev = p.revision;
    hmap_put(&n->keys, &ne->h);
    c->nkeys++;
    c->data_bytes += w->key.len + nv->len;
  } else {
    hmap_del(&n->keys, &p.cur->h);
    c->nkeys--;
    c->data_bytes -= w->key.len + p.cur->val->len;
    val_unref(p.cur->val);
    free(p.cur);
  }
  c->revision = p.revision;
  c->writes++;
  c->notifications += t.notifications;
  c->raw_notifications += t.raw_notifications;
  c->suppressed += t.suppressed;
  hist_push(c, r);
  if (out)
    rec_view(r, out);
  if (!p.new_present)
    node_gc(c, n);
  return RV_CFG_OK;

undo:
  if (ev)
    ev_truncate(ev, ev_mark);
  free(ne);
  rec_unref(r);
  val_unref(nv);
  if (!p.n)
    node_gc(c, n);
  return rc;
}

/* The conveniences below only need the revision back. */
static int apply_simple(rv_cfg *c, rv_cfg_write *w, rv_cfg_events *ev, uint64_t *revision) {
  rv_cfg_change ch;
  int rc = rv_cfg_apply(c, w, ev, &ch);
  if (revision)
    *revision = rc == RV_CFG_OK ? ch.revision : 0;
  return rc;
}

/* Shorthands for the common writes, so callers need not fill an rv_cfg_write. */
int rv_cfg_set(rv_cfg *c, rv_cfg_str ns, rv_cfg_str key, rv_cfg_str value,
               uint64_t expect_revision, rv_cfg_str author, rv_cfg_str reason, int64_t wall_ns,
               rv_cfg_events *ev, uint64_t *revision) {
  rv_cfg_write w = {.op = RV_CFG_OP_SET, .ns = ns, .key = key, .value = value,
                    .expect_revision = expect_revision, .author = author, .reason = reason,
                    .wall_ns = wall_ns};
  return apply_simple(c, &w, ev, revision);
}

int rv_cfg_delete(rv_cfg *c, rv_cfg_str ns, rv_cfg_str key, uint64_t expect_revision,
                  rv_cfg_str author, rv_cfg_str reason, int64_t wall_ns, rv_cfg_events *ev,
                  uint64_t *revision) {
  rv_cfg_write w = {.op = RV_CFG_OP_DELETE, .ns = ns, .key = key,
                    .expect_revision = expect_revision, .author = author, .reason = reason,
                    .wall_ns = wall_ns};
  return apply_simple(c, &w, ev, revision);
}

int rv_cfg_rollback(rv_cfg *c, rv_cfg_str ns, rv_cfg_str key, uint64_t to_revision,
                    rv_cfg_str author, rv_cfg_str reason, int64_t wall_ns, rv_cfg_events *ev,
                    uint64_t *revision) {
  rv_cfg_write w = {.op = RV_CFG_OP_ROLLBACK, .ns = ns, .key = key, .rollback_to = to_revision,
                    .expect_revision = RV_CFG_REV_ANY, .author = author, .reason = reason,
                    .wall_ns = wall_ns};
  return apply_simple(c, &w, ev, revision);
}

/* ---- services ------------------------------------------------------------------------------------ */

/* Registration makes a reader exist for dry runs before it has config of its own. */
int rv_cfg_register(rv_cfg *c, rv_cfg_str service, rv_cfg_str replica) {
  rv_cfg_ns p;
  int rc = target_ns(c, service, replica, &p);
  if (rc)
    return rc;
  node *n;
  if ((rc = ns_ensure(c, &p, true, &n)))
    return rc;
  n->registered = true;
  return RV_CFG_OK;
}

/* A session ending takes its registration away; keys and watches keep the service alive. */
int rv_cfg_unregister(rv_cfg *c, rv_cfg_str service, rv_cfg_str replica) {
  rv_cfg_ns p;
  int rc = target_ns(c, service, replica, &p);
  if (rc)
    return rc;
  node *n = ns_find(c, &p);
  if (!n || !n->registered)
    return fail(c, RV_CFG_ENOSERVICE, "%.*s%s%.*s is not registered", SP(service),
                replica.len ? "/" : "", SP(replica));
  n->registered = false;
  node_gc(c, n);
  return RV_CFG_OK;
}

/* The live nodes of a table sorted by name; the caller frees *out. */
static int sorted_nodes(rv_cfg *c, const hmap *m, node ***out) {
  hnode **v;
  if (hmap_items(m, &v))
    return fail_oom(c, "sorting names");
  if (m->len > 1)
    qsort(v, m->len, sizeof *v, hnode_cmp);
  *out = (node **)(void *)v;
  return RV_CFG_OK;
}

/* The public view of a service or replica node. */
static void target_view(const node *n, rv_cfg_target_view *v) {
  v->service = n->service;
  v->replica = n->replica;
  v->ns = n->ns;
  v->registered = n->registered;
  v->keys = n->keys.len;
  v->watches = n->n_eff;
}

/* Sorted, so operators and tests see the same order on every run. */
int rv_cfg_list_targets(rv_cfg *c, rv_cfg_str service, rv_cfg_target_fn fn, void *arg,
                        size_t *count) {
  size_t visited = 0;
  int rc = RV_CFG_OK;
  node **svcs = NULL, *one = NULL;
  size_t nsvcs;
  if (service.len) {
    if ((rc = check_target(c, service, (rv_cfg_str){"", 0})))
      return rc;
    one = svc_find(c, service);
    nsvcs = one ? 1 : 0;
  } else {
    if ((rc = sorted_nodes(c, &c->svcs, &svcs)))
      return rc;
    nsvcs = c->svcs.len;
  }
  bool go = true;
  for (size_t i = 0; i < nsvcs && go && rc == RV_CFG_OK; i++) {
    node *svc = one ? one : svcs[i];
    rv_cfg_target_view v;
    target_view(svc, &v);
    visited++;
    go = fn(&v, arg);
    node **reps;
    if (!go || (rc = sorted_nodes(c, &svc->reps, &reps)))
      break;
    for (size_t j = 0; j < svc->reps.len && go; j++) {
      target_view(reps[j], &v);
      visited++;
      go = fn(&v, arg);
    }
    free(reps);
  }
  free(svcs);
  if (count)
    *count = visited;
  return rc;
}

/* ---- reads --------------------------------------------------------------------------------------- */

static void kv_view(const kv *e, const node *n, rv_cfg_kv *out) {
  out->key = (rv_cfg_str){e->key, e->h.klen};
  out->value = val_str(e->val);
  out->create_revision = e->create_rev;
  out->mod_revision = e->mod_rev;
  out->level = n->level;
  out->ns = n->ns;
}

/* The raw value: what an operator edits, with the revisions compare-and-set needs. */
int rv_cfg_get(rv_cfg *c, rv_cfg_str ns, rv_cfg_str key, rv_cfg_kv *out) {
  rv_cfg_ns p;
  int rc;
  if ((rc = parse_ns(c, ns, &p)) || (rc = check_key(c, key, "key", false)))
    return rc;
  node *n = ns_find(c, &p);
  kv *e = kv_find(n, key, hash_bytes(c, key.ptr, key.len));
  if (!e)
    return fail(c, RV_CFG_ENOKEY, "no key %.*s in %.*s", SP(key), SP(ns));
  kv_view(e, n, out);
  return RV_CFG_OK;
}

/* What the service actually runs with, and which layer it comes from. */
int rv_cfg_get_effective(rv_cfg *c, rv_cfg_str service, rv_cfg_str replica, rv_cfg_str key,
                         rv_cfg_kv *out) {
  int rc;
  if ((rc = check_target(c, service, replica)) || (rc = check_key(c, key, "key", false)))
    return rc;
  uint64_t h = hash_bytes(c, key.ptr, key.len);
  node *svc = svc_find(c, service);
  node *chain[3] = {replica.len ? rep_find(c, svc, replica) : NULL, svc, c->platform};
  for (size_t i = 0; i < 3; i++) {
    kv *e = kv_find(chain[i], key, h);
    if (e) {
      kv_view(e, chain[i], out);
      return RV_CFG_OK;
    }
  }
  return fail(c, RV_CFG_ENOKEY, "no layer sets %.*s for %.*s%s%.*s", SP(key), SP(service),
              replica.len ? "/" : "", SP(replica));
}

typedef struct kvref {
  kv *e;
  node *n;
} kvref;

/* Key order for listings. */
static int kvref_cmp(const void *a, const void *b) {
  const kvref *x = a, *y = b;
  return str_cmp((rv_cfg_str){x->e->key, x->e->h.klen}, (rv_cfg_str){y->e->key, y->e->h.klen});
}

/*
 * Collect the keys with prefix of the chain's nodes (most specific first),
 * each key once from the first node that has it, and visit them in key
 * order.  A namespace listing is the chain of one node.
 */
static int visit_chain(rv_cfg *c, node *const *chain, size_t nchain, rv_cfg_str prefix,
                       rv_cfg_kv_fn fn, void *arg, size_t *count) {
  size_t total = 0, n = 0;
  for (size_t i = 0; i < nchain; i++)
    total += chain[i] ? chain[i]->keys.len : 0;
  kvref *v = total ? malloc(total * sizeof *v) : NULL;
  if (total && !v)
    return fail_oom(c, "listing keys");
  for (size_t i = 0; i < nchain; i++) {
    node *nd = chain[i];
    for (size_t s = 0; nd && s < nd->keys.cap; s++) {
      if (!hslot_live(nd->keys.slot[s]))
        continue;
      kv *e = (kv *)(void *)nd->keys.slot[s];
      rv_cfg_str k = {e->key, e->h.klen};
      if (!str_has_prefix(k, prefix.ptr, prefix.len))
        continue;
      bool shadowed = false;
      for (size_t j = 0; j < i && !shadowed; j++)
        shadowed = kv_find(chain[j], k, e->h.hash) != NULL;
      if (!shadowed)
        v[n++] = (kvref){e, nd};
    }
  }
  if (n > 1)
    qsort(v, n, sizeof *v, kvref_cmp);
  size_t visited = 0;
  for (size_t i = 0; i < n; i++) {
    rv_cfg_kv view;
    kv_view(v[i].e, v[i].n, &view);
    visited++;
    if (!fn(&view, arg))
      break;
  }
  free(v);
  if (count)
    *count = visited;
  return RV_CFG_OK;
}

/* One namespace as stored. */
int rv_cfg_list(rv_cfg *c, rv_cfg_str ns, rv_cfg_str prefix, rv_cfg_kv_fn fn, void *arg,
                size_t *count) {
  rv_cfg_ns p;
  int rc;
  if ((rc = parse_ns(c, ns, &p)) || (rc = check_key(c, prefix, "key prefix", true)))
    return rc;
  node *n = ns_find(c, &p);
  return visit_chain(c, &n, 1, prefix, fn, arg, count);
}

/* The full state a watcher re-reads after RV_CFG_ECOMPACTED. */
int rv_cfg_list_effective(rv_cfg *c, rv_cfg_str service, rv_cfg_str replica, rv_cfg_str prefix,
                          rv_cfg_kv_fn fn, void *arg, size_t *count) {
  int rc;
  if ((rc = check_target(c, service, replica)) ||
      (rc = check_key(c, prefix, "key prefix", true)))
    return rc;
  node *svc = svc_find(c, service);
  node *chain[3] = {replica.len ? rep_find(c, svc, replica) : NULL, svc, c->platform};
  return visit_chain(c, chain, 3, prefix, fn, arg, count);
}

/* ---- watches ---------------------------------------------------------------------------------------- */

/* Replay state of one key: its value at each level as the replay moves through time. */
typedef struct ovl {
  hnode h;
  rv__cfg_val *v[4];
} ovl;

/* Whether a write touched one of the layers reader t inherits from. */
static bool rec_in_chain(const rv__cfg_rec *r, const node *t) {
  switch (r->level) {
  case RV_CFG_LEVEL_PLATFORM: return true;
  case RV_CFG_LEVEL_SERVICE: return str_eq(r->service, t->service);
  case RV_CFG_LEVEL_REPLICA:
    return t->level == RV_CFG_LEVEL_REPLICA && str_eq(r->service, t->service) &&
           str_eq(r->replica, t->replica);
  default: return false;
  }
}

/* The replay overlay is temporary: its entries borrow values, they own nothing. */
static void ovl_free_all(hmap *m) {
  for (size_t i = 0; i < m->cap; i++)
    if (hslot_live(m->slot[i]))
      free(m->slot[i]);
  hmap_free(m);
}

/*
 * The events an effective watch on t would have received for revisions
 * after `since`: undo the later writes to t's chain back to `since`, then
 * redo them one by one and compare t's value before and after each.
 */
static int replay_effective(rv_cfg *c, const watch *w, node *t, uint64_t since, rv_cfg_events *ev,
                            tally *tl) {
  if (since >= c->revision)
    return RV_CFG_OK;
  bool has_rep = t->level == RV_CFG_LEVEL_REPLICA;
  node *svc = has_rep ? t->parent : t;
  size_t from = hist_index(c, since + 1);
  hmap ov = {0};
  int rc = RV_CFG_OK;
  for (size_t i = c->hist_len; i-- > from && rc == RV_CFG_OK;) {
    rv__cfg_rec *r = hist_at(c, i);
    if (!rec_in_chain(r, t) || !watch_wants_key(w, r->key))
      continue;
    uint64_t h = hash_bytes(c, r->key.ptr, r->key.len);
    ovl *o = (ovl *)(void *)hmap_find(&ov, r->key.ptr, r->key.len, h);
    if (!o) {
      if (hmap_reserve(&ov, 1) || !(o = calloc(1, sizeof *o))) {
        rc = fail_oom(c, "replaying history for a watch");
        break;
      }
      o->h = (hnode){h, r->key.ptr, r->key.len};
      o->v[RV_CFG_LEVEL_PLATFORM] = val_at(c->platform, r->key, h);
      o->v[RV_CFG_LEVEL_SERVICE] = val_at(svc, r->key, h);
      o->v[RV_CFG_LEVEL_REPLICA] = has_rep ? val_at(t, r->key, h) : NULL;
      hmap_put(&ov, &o->h);
    }
    o->v[r->level] = r->oldv;
  }
  for (size_t i = from; i < c->hist_len && rc == RV_CFG_OK; i++) {
    rv__cfg_rec *r = hist_at(c, i);
    if (!rec_in_chain(r, t) || !watch_wants_key(w, r->key))
      continue;
    ovl *o = (ovl *)(void *)hmap_find(&ov, r->key.ptr, r->key.len,
                                      hash_bytes(c, r->key.ptr, r->key.len));
    assert(o);
    effv before = eff_pick(o->v, has_rep);
    o->v[r->level] = r->newv;
    effv after = eff_pick(o->v, has_rep);
    if (val_eq(before.v, after.v)) {
      tl->suppressed++;
      continue;
    }
    if ((rc = ev_push(c, ev, w, r, before, after)) == RV_CFG_OK)
      tl->notifications++;
  }
  ovl_free_all(&ov);
  return rc;
}

/* The events a raw watch would have received after `since`: its namespaces' writes. */
static int replay_raw(rv_cfg *c, const watch *w, uint64_t since, rv_cfg_events *ev, tally *tl) {
  if (since >= c->revision)
    return RV_CFG_OK;
  for (size_t i = hist_index(c, since + 1); i < c->hist_len; i++) {
    rv__cfg_rec *r = hist_at(c, i);
    if (!watch_wants_key(w, r->key))
      continue;
    for (size_t s = 0; s < w->nsubs; s++) {
      if (!str_eq(r->ns, w->subs[s].n->ns))
        continue;
      effv before = {r->oldv, r->oldv ? r->level : RV_CFG_LEVEL_NONE};
      effv after = {r->newv, r->newv ? r->level : RV_CFG_LEVEL_NONE};
      int rc = ev_push(c, ev, w, r, before, after);
      if (rc)
        return rc;
      tl->raw_notifications++;
      break;
    }
  }
  return RV_CFG_OK;
}

/* Take a watch off every list it is on, then free nodes only it kept alive. */
static void watch_unlink(rv_cfg *c, watch *w) {
  for (size_t i = 0; i < w->nsubs; i++) {
    sub *s = &w->subs[i];
    if (s->link.next == &s->link)
      continue; /* never linked */
    dl_del(&s->link);
    if (w->mode == RV_CFG_WATCH_EFFECTIVE)
      s->n->n_eff--;
    else
      s->n->n_raw--;
    node_watched_update(c, s->n);
  }
  for (size_t i = 0; i < w->nsubs; i++)
    node_gc(c, w->subs[i].n);
}

/* Check a watch request; on success *nodes holds its parsed namespaces. */
static int watch_check(rv_cfg *c, const rv_cfg_watch_req *req, rv_cfg_ns *nss, size_t *nns) {
  int rc;
  *nns = 0;
  if ((rc = check_key(c, req->key_prefix, "key prefix", true)))
    return rc;
  if (req->mode == RV_CFG_WATCH_EFFECTIVE) {
    if ((rc = target_ns(c, req->service, req->replica, &nss[0])))
      return rc;
    *nns = 1;
    return RV_CFG_OK;
  }
  if (req->mode != RV_CFG_WATCH_RAW)
    return fail(c, RV_CFG_EINVAL, "unknown watch mode %d: use effective or raw", req->mode);
  if (req->nns < 1 || req->nns > RV_CFG_WATCH_NS_MAX || !req->ns)
    return fail(c, RV_CFG_EINVAL, "a raw watch covers 1 to %d namespaces, not %zu",
                RV_CFG_WATCH_NS_MAX, req->nns);
  for (size_t i = 0; i < req->nns; i++) {
    rv_cfg_ns p;
    if ((rc = parse_ns(c, req->ns[i], &p)))
      return rc;
    bool dup = false;
    for (size_t j = 0; j < *nns && !dup; j++)
      dup = nss[j].level == p.level && str_eq(nss[j].service, p.service) &&
            str_eq(nss[j].replica, p.replica);
    if (!dup)
      nss[(*nns)++] = p;
  }
  return RV_CFG_OK;
}

/*
 * Open a watch: check, create its nodes, replay what it missed, and only
 * then link it, so a failure at any step leaves no half-open watch.
 */
int rv_cfg_watch(rv_cfg *c, const rv_cfg_watch_req *req, rv_cfg_events *ev, uint64_t *watch_id,
                 uint64_t *start_revision) {
  rv_cfg_ns nss[RV_CFG_WATCH_NS_MAX];
  size_t nns;
  int rc = watch_check(c, req, nss, &nns);
  if (rc)
    return rc;
  uint64_t since = req->since_revision;
  if (since != RV_CFG_SINCE_NOW) {
    if (since > c->revision)
      return fail(c, RV_CFG_EFUTURE,
                  "cannot watch since revision %llu: the store is at %llu (was it restored from "
                  "an older copy?); re-read the current state",
                  ULL(since), ULL(c->revision));
    if (since + 1 < rv_cfg_oldest_retained(c))
      return compacted(c, "cannot resume a watch since", since);
  }
  if (c->watches.len >= c->o.max_watches)
    return fail(c, RV_CFG_EWATCHES,
                "cannot open a watch: %zu are open, the limit (max_watches); close unused ones",
                c->watches.len);
  watch *w = calloc(1, sizeof *w + req->key_prefix.len + 1);
  if (!w || hmap_reserve(&c->watches, 1)) {
    free(w);
    return fail_oom(c, "opening a watch");
  }
  w->id = c->next_watch_id;
  w->h = (hnode){hash_bytes(c, (const char *)&w->id, sizeof w->id), (const char *)&w->id,
                 sizeof w->id};
  w->mode = req->mode;
  w->prefix_len = req->key_prefix.len;
  if (w->prefix_len)
    memcpy(w->prefix, req->key_prefix.ptr, w->prefix_len);
  for (size_t i = 0; i < nns; i++) {
    dl_init(&w->subs[i].link);
    w->subs[i].w = w;
  }
  /* Nodes first (they may hit limits), then the replay, then the links. */
  for (size_t i = 0; i < nns && rc == RV_CFG_OK; i++) {
    rc = ns_ensure(c, &nss[i], true, &w->subs[i].n);
    if (rc == RV_CFG_OK)
      w->nsubs++;
  }
  size_t ev_mark = ev ? ev->len : 0;
  tally t = {0, 0, 0};
  if (rc == RV_CFG_OK && since != RV_CFG_SINCE_NOW)
    rc = w->mode == RV_CFG_WATCH_EFFECTIVE
             ? replay_effective(c, w, w->subs[0].n, since, ev, &t)
             : replay_raw(c, w, since, ev, &t);
  if (rc) {
    if (ev)
      ev_truncate(ev, ev_mark);
    watch_unlink(c, w);
    free(w);
    return rc;
  }
  if (w->mode == RV_CFG_WATCH_EFFECTIVE)
    w->target = w->subs[0].n;
  for (size_t i = 0; i < w->nsubs; i++) {
    sub *s = &w->subs[i];
    if (w->mode == RV_CFG_WATCH_EFFECTIVE) {
      dl_push(&s->n->eff, &s->link);
      s->n->n_eff++;
    } else {
      dl_push(&s->n->raw, &s->link);
      s->n->n_raw++;
    }
    node_watched_update(c, s->n);
  }
  hmap_put(&c->watches, &w->h);
  c->next_watch_id++;
  c->notifications += t.notifications;
  c->raw_notifications += t.raw_notifications;
  c->suppressed += t.suppressed;
  *watch_id = w->id;
  if (start_revision)
    *start_revision = c->revision;
  return RV_CFG_OK;
}

/* Closing is how a disconnect looks to the store; a resume opens a new watch. */
int rv_cfg_unwatch(rv_cfg *c, uint64_t watch_id) {
  watch *w = (watch *)(void *)hmap_find(&c->watches, (const char *)&watch_id, sizeof watch_id,
                                         hash_bytes(c, (const char *)&watch_id, sizeof watch_id));
  if (!w)
    return fail(c, RV_CFG_ENOWATCH, "no watch %llu (closed already?)", ULL(watch_id));
  hmap_del(&c->watches, &w->h);
  watch_unlink(c, w);
  free(w);
  return RV_CFG_OK;
}

/* ---- dry run ------------------------------------------------------------------------------------------- */

typedef struct dry {
  rv_cfg *c;
  const plan *p;
  rv_cfg_str key;
  rv__cfg_val *oldv, *newv;
  bool include_unaffected;
  rv_cfg_impact_fn fn;
  void *arg;
  bool stopped;
  rv_cfg_dry_run_res *res;
} dry;

/* What the planned write does to one reader (nodes may be NULL: not created yet). */
static void dry_reader(dry *d, node *svc, node *rep, bool has_rep, rv_cfg_str service,
                       rv_cfg_str replica) {
  int wl = d->p->ns.level;
  effv before = eff_with(d->c, svc, rep, has_rep, d->key, d->p->khash, wl, d->oldv);
  effv after = eff_with(d->c, svc, rep, has_rep, d->key, d->p->khash, wl, d->newv);
  rv_cfg_impact imp = {.service = service, .replica = replica};
  if (!val_eq(before.v, after.v)) {
    imp.effect = RV_CFG_IMPACT_CHANGES;
    d->res->changes++;
  } else {
    imp.effect = RV_CFG_IMPACT_SAME;
    if (before.level > wl) {
      imp.effect = RV_CFG_IMPACT_OVERRIDDEN;
      imp.override_level = before.level;
    }
    d->res->unaffected++;
    if (!d->include_unaffected)
      return;
  }
  imp.old_present = before.v != NULL;
  imp.old_value = val_str(before.v);
  imp.old_level = before.level;
  imp.new_present = after.v != NULL;
  imp.new_value = val_str(after.v);
  imp.new_level = after.level;
  if (!d->stopped && !d->fn(&imp, d->arg))
    d->stopped = true;
}

/* A service-level reader and all its replicas, in name order. */
static int dry_service(dry *d, node *svc, rv_cfg_str service) {
  dry_reader(d, svc, NULL, false, service, (rv_cfg_str){"", 0});
  if (!svc)
    return RV_CFG_OK;
  node **reps;
  int rc = sorted_nodes(d->c, &svc->reps, &reps);
  if (rc)
    return rc;
  for (size_t i = 0; i < svc->reps.len; i++)
    dry_reader(d, svc, reps[i], true, service, reps[i]->replica);
  free(reps);
  return RV_CFG_OK;
}

/*
 * The same effective-value function as a real write, over every existing
 * reader in scope rather than only the watched ones: the blast radius of a
 * change is whom it reaches, watched or not.
 */
int rv_cfg_dry_run(rv_cfg *c, const rv_cfg_write *w, bool include_unaffected,
                   rv_cfg_impact_fn fn, void *arg, rv_cfg_dry_run_res *res) {
  plan p;
  memset(res, 0, sizeof *res);
  int rc = write_prepare(c, w, &p);
  if (rc)
    return rc;
  plan_view(w, &p, &res->change);
  rv__cfg_val *newv = NULL;
  if (p.new_present && !(newv = p.new_shared ? val_ref(p.new_shared) : val_new(p.new_value)))
    return fail_oom(c, "preparing a dry run");
  dry d = {c, &p, w->key, p.cur ? p.cur->val : NULL, newv, include_unaffected, fn, arg,
           false, res};
  node *svc = p.ns.level == RV_CFG_LEVEL_PLATFORM ? NULL : svc_find(c, p.ns.service);
  switch (p.ns.level) {
  case RV_CFG_LEVEL_PLATFORM: {
    node **svcs;
    if ((rc = sorted_nodes(c, &c->svcs, &svcs)))
      break;
    for (size_t i = 0; i < c->svcs.len && rc == RV_CFG_OK; i++)
      rc = dry_service(&d, svcs[i], svcs[i]->service);
    free(svcs);
    break;
  }
  case RV_CFG_LEVEL_SERVICE:
    rc = dry_service(&d, svc, p.ns.service);
    break;
  case RV_CFG_LEVEL_REPLICA:
    dry_reader(&d, svc, rep_find(c, svc, p.ns.replica), true, p.ns.service, p.ns.replica);
    break;
  }
  val_unref(newv);
  if (rc == RV_CFG_OK)
    c->dry_runs++;
  return rc;
}

/* ---- audit ----------------------------------------------------------------------------------------------- */

int rv_cfg_audit_check(rv_cfg *c, const rv_cfg_audit_query *q) {
  int rc;
  if (q->limit > RV_CFG_AUDIT_LIMIT_MAX)
    return fail(c, RV_CFG_EQUERY,
                "audit query limit %zu is too large: at most %d per call; page with rev_min or "
                "rev_max",
                q->limit, RV_CFG_AUDIT_LIMIT_MAX);
  if (q->ns.len) {
    rv_cfg_ns p;
    if ((rc = parse_ns(c, q->ns, &p)))
      return rc;
  }
  if (q->key.len && (rc = check_key(c, q->key, "key", false)))
    return rc;
  if (q->rev_max && q->rev_min > q->rev_max)
    return fail(c, RV_CFG_EINVAL, "audit revision range %llu..%llu is empty: rev_min > rev_max",
                ULL(q->rev_min), ULL(q->rev_max));
  if (q->wall_max_ns && q->wall_max_ns <= q->wall_min_ns)
    return fail(c, RV_CFG_EINVAL, "audit time range is empty: wall_max_ns <= wall_min_ns");
  return RV_CFG_OK;
}

/* The filters beyond the revision range, which the scan bounds directly. */
static bool audit_match(const rv_cfg_audit_query *q, const rv__cfg_rec *r) {
  return (!q->ns.len || str_eq(q->ns, r->ns)) && (!q->key.len || str_eq(q->key, r->key)) &&
         r->wall_ns >= q->wall_min_ns && (!q->wall_max_ns || r->wall_ns < q->wall_max_ns);
}

/*
 * A scan of the retained history bounded by the revision range (records sit
 * at computable offsets); "incomplete" tells the caller to ask the durable
 * log for older records.
 */
int rv_cfg_audit(rv_cfg *c, const rv_cfg_audit_query *q, rv_cfg_change_fn fn, void *arg,
                 rv_cfg_audit_res *res) {
  memset(res, 0, sizeof *res);
  int rc = rv_cfg_audit_check(c, q);
  if (rc)
    return rc;
  size_t limit = q->limit ? q->limit : RV_CFG_AUDIT_LIMIT_DEFAULT;
  uint64_t oldest = rv_cfg_oldest_retained(c);
  uint64_t lo = q->rev_min > oldest ? q->rev_min : oldest;
  uint64_t hi = q->rev_max && q->rev_max < c->revision ? q->rev_max : c->revision;
  /* Revisions 1..oldest-1 were dropped from memory: does the range reach them? */
  res->incomplete = oldest > 1 && (q->rev_min > 1 ? q->rev_min : 1) < oldest;
  if (!c->hist_len || lo > hi)
    return RV_CFG_OK;
  size_t first = hist_index(c, lo), last = hist_index(c, hi);
  for (size_t k = 0; k <= last - first; k++) {
    const rv__cfg_rec *r = hist_at(c, q->newest_first ? last - k : first + k);
    if (!audit_match(q, r))
      continue;
    if (res->count == limit) {
      res->more = true;
      break;
    }
    rv_cfg_change ch;
    rec_view(r, &ch);
    res->count++;
    if (!fn(&ch, arg)) {
      res->more = true;
      break;
    }
  }
  return RV_CFG_OK;
}

/* ---- loading ---------------------------------------------------------------------------------------------- */

static int load_check_fresh(rv_cfg *c) {
  if (c->loaded || c->writes || c->watches.len)
    return fail(c, RV_CFG_EINVAL, "loading needs a fresh store: this one has been used");
  c->loading = true;
  return RV_CFG_OK;
}

/* Restore one current value without a write, a revision or an event. */
int rv_cfg_load_value(rv_cfg *c, rv_cfg_str ns, rv_cfg_str key, rv_cfg_str value,
                      uint64_t create_revision, uint64_t mod_revision) {
  rv_cfg_ns p;
  int rc;
  if ((rc = load_check_fresh(c)) || (rc = parse_ns(c, ns, &p)) ||
      (rc = check_key(c, key, "key", false)) ||
      (rc = check_value(c, value, RV_CFG_VALUE_MAX_BYTES_CEILING,
                        "RV_CFG_VALUE_MAX_BYTES_CEILING")))
    return rc;
  if (!create_revision || mod_revision < create_revision || mod_revision > RV_CFG_REVISION_MAX)
    return fail(c, RV_CFG_EINVAL, "loaded %.*s in %.*s has revisions create=%llu mod=%llu",
                SP(key), SP(ns), ULL(create_revision), ULL(mod_revision));
  node *n;
  if ((rc = ns_ensure(c, &p, false, &n)))
    return rc;
  uint64_t h = hash_bytes(c, key.ptr, key.len);
  if (kv_find(n, key, h)) {
    return fail(c, RV_CFG_EINVAL, "loaded %.*s in %.*s twice", SP(key), SP(ns));
  }
  kv *e = malloc(sizeof *e + key.len + 1);
  rv__cfg_val *v = val_new(value);
  if (!e || !v || hmap_reserve(&n->keys, 1)) {
    free(e);
    val_unref(v);
    node_gc(c, n);
    return fail_oom(c, "loading a value");
  }
  memcpy(e->key, key.ptr, key.len);
  e->key[key.len] = '\0';
  e->h = (hnode){h, e->key, key.len};
  e->val = v;
  e->create_rev = create_revision;
  e->mod_rev = mod_revision;
  hmap_put(&n->keys, &e->h);
  c->nkeys++;
  c->data_bytes += key.len + value.len;
  if (mod_revision > c->load_max_mod)
    c->load_max_mod = mod_revision;
  return RV_CFG_OK;
}

/* Restore one history record; contiguity is checked so resumes stay exact. */
int rv_cfg_load_history(rv_cfg *c, const rv_cfg_change *ch) {
  rv_cfg_ns p;
  int rc;
  if ((rc = load_check_fresh(c)) || (rc = parse_ns(c, ch->ns, &p)) ||
      (rc = check_key(c, ch->key, "key", false)))
    return rc;
  if (ch->op != RV_CFG_OP_SET && ch->op != RV_CFG_OP_DELETE && ch->op != RV_CFG_OP_ROLLBACK)
    return fail(c, RV_CFG_EINVAL, "loaded revision %llu has unknown op %d", ULL(ch->revision),
                ch->op);
  uint64_t expect = c->hist_len ? hist_at(c, c->hist_len - 1)->revision + 1 : 0;
  if (!ch->revision || ch->revision > RV_CFG_REVISION_MAX || (expect && ch->revision != expect))
    return fail(c, RV_CFG_EINVAL, "loaded history revision %llu where %llu was expected",
                ULL(ch->revision), ULL(expect));
  rv__cfg_rec *r = rec_new(&p, ch->ns, ch->key, ch->author, ch->reason);
  rv__cfg_val *ov = ch->old_present ? val_new(ch->old_value) : NULL;
  rv__cfg_val *nv = ch->new_present ? val_new(ch->new_value) : NULL;
  if (!r || (ch->old_present && !ov) || (ch->new_present && !nv) || hist_reserve(c)) {
    rec_unref(r);
    val_unref(ov);
    val_unref(nv);
    return fail_oom(c, "loading history");
  }
  r->revision = ch->revision;
  r->wall_ns = ch->wall_ns;
  r->op = ch->op;
  r->rollback_to = ch->rollback_to;
  rec_set_values(r, ov, nv);
  val_unref(ov);
  val_unref(nv);
  hist_push(c, r);
  return RV_CFG_OK;
}

/* The counter must cover every loaded key and end the history, or the file lies. */
int rv_cfg_load_finish(rv_cfg *c, uint64_t revision) {
  int rc = load_check_fresh(c);
  if (rc)
    return rc;
  if (revision > RV_CFG_REVISION_MAX || revision < c->load_max_mod)
    return fail(c, RV_CFG_EINVAL, "loaded revision counter %llu is below a key's mod_revision %llu",
                ULL(revision), ULL(c->load_max_mod));
  if (c->hist_len && hist_at(c, c->hist_len - 1)->revision != revision)
    return fail(c, RV_CFG_EINVAL, "loaded history ends at revision %llu, the counter says %llu",
                ULL(hist_at(c, c->hist_len - 1)->revision), ULL(revision));
  c->revision = revision;
  c->loading = false;
  c->loaded = true;
  return RV_CFG_OK;
}

/* ---- metrics and invariants ----------------------------------------------------------------------------------- */

void rv_cfg_get_stats(const rv_cfg *c, rv_cfg_stats *s) {
  memset(s, 0, sizeof *s);
  s->revision = c->revision;
  s->layers = c->nlayers;
  s->services = c->svcs.len;
  s->keys = c->nkeys;
  s->data_bytes = c->data_bytes;
  s->watches = c->watches.len;
  s->history_entries = c->hist_len;
  s->history_bytes = c->hist_bytes;
  s->oldest_retained = rv_cfg_oldest_retained(c);
  s->writes = c->writes;
  s->conflicts = c->conflicts;
  s->notifications = c->notifications;
  s->raw_notifications = c->raw_notifications;
  s->suppressed = c->suppressed;
  s->dry_runs = c->dry_runs;
}

/* For the invariant check only: O(n). */
static size_t dl_len(const dlist *h) {
  size_t n = 0;
  for (const dlist *l = h->next; l != h; l = l->next)
    n++;
  return n;
}

/* Check one node; adds its keys and bytes to the totals. */
static const char *check_node(const rv_cfg *c, const node *n, size_t *keys, size_t *bytes) {
  if (n->level != RV_CFG_LEVEL_PLATFORM && !node_alive(n))
    return "a namespace node holds nothing but was not freed";
  if (dl_len(&n->eff) != n->n_eff || dl_len(&n->raw) != n->n_raw)
    return "a node's watch counts disagree with its lists";
  for (size_t i = 0; i < n->keys.cap; i++) {
    if (!hslot_live(n->keys.slot[i]))
      continue;
    const kv *e = (const kv *)(const void *)n->keys.slot[i];
    if (!e->val || !e->create_rev || e->mod_rev < e->create_rev || e->mod_rev > c->revision)
      return "a key has bad revisions or no value";
    if (e->h.hash != hash_bytes(c, e->key, e->h.klen))
      return "a key sits under the wrong hash";
    (*keys)++;
    *bytes += e->h.klen + e->val->len;
  }
  return NULL;
}

/* Recount everything from scratch and compare with the running counts and lists. */
const char *rv_cfg_check(const rv_cfg *c) {
  size_t keys = 0, bytes = 0, layers = 1, watched_svcs = 0;
  const char *why = check_node(c, c->platform, &keys, &bytes);
  if (why)
    return why;
  for (size_t i = 0; i < c->svcs.cap; i++) {
    if (!hslot_live(c->svcs.slot[i]))
      continue;
    const node *svc = (const node *)(const void *)c->svcs.slot[i];
    layers++;
    if ((why = check_node(c, svc, &keys, &bytes)))
      return why;
    size_t watched_reps = 0;
    for (size_t j = 0; j < svc->reps.cap; j++) {
      if (!hslot_live(svc->reps.slot[j]))
        continue;
      const node *rep = (const node *)(const void *)svc->reps.slot[j];
      layers++;
      if (rep->parent != svc)
        return "a replica's parent is not its service";
      if ((why = check_node(c, rep, &keys, &bytes)))
        return why;
      if (rep->in_watched != (rep->n_eff > 0))
        return "a replica's watched flag is wrong";
      watched_reps += rep->in_watched;
    }
    if (dl_len(&svc->watched_reps) != watched_reps)
      return "a service's watched-replica list is wrong";
    if (svc->in_watched != (svc->n_eff > 0 || watched_reps > 0))
      return "a service's watched flag is wrong";
    watched_svcs += svc->in_watched;
  }
  if (dl_len(&c->watched_svcs) != watched_svcs)
    return "the watched-service list is wrong";
  if (layers != c->nlayers)
    return "the namespace count is wrong";
  if (keys != c->nkeys || bytes != c->data_bytes)
    return "the key or data byte count is wrong";
  size_t hbytes = 0;
  for (size_t i = 0; i < c->hist_len; i++) {
    const rv__cfg_rec *r = hist_at(c, i);
    hbytes += r->bytes;
    if (r->revision != rv_cfg_oldest_retained(c) + i)
      return "the history is not contiguous";
  }
  if (c->hist_len && hist_at(c, c->hist_len - 1)->revision != c->revision)
    return "the history does not end at the current revision";
  if (hbytes != c->hist_bytes)
    return "the history byte count is wrong";
  if (c->hist_len > c->o.history_max_entries)
    return "the history exceeds its bound";
  return NULL;
}
