/*
 * metrics: the registry, lock-free updates and the text exposition.
 * The model and the bounds are described in metrics.h.
 *
 * Locks: the registry's mutex guards its family and collector arrays; each
 * family's mutex guards its child index.  Neither is held while taking the
 * other, nor across a callback or an allocation that could be done outside.
 * Arrays are append-only, so a renderer reads a count under the lock and then
 * walks the entries below it without the lock.
 */
#include "obs/metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt/rt.h"

/* Bytes of the text kept for rv_metrics_error(). */
#define RV__METRICS_ERROR_MAX 256
/* Child-index slots of a new family; the index doubles at half load. */
#define RV__SLOTS_INITIAL 8
/* Largest integer a double holds exactly: below it, print without exponent. */
#define RV__EXACT_INT_MAX 9007199254740992.0
/* Enough for "%.17g" of any double. */
#define RV__DOUBLE_TEXT_MAX 32

/* The dropped-series family must always have room for every other family. */
_Static_assert(RV_METRIC_CHILDREN_MAX >= RV_METRICS_FAMILIES_MAX,
               "ravel_metrics_dropped_series_total needs a child per family");

const double rv_histogram_seconds_buckets[RV_HISTOGRAM_SECONDS_BUCKETS_N] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

typedef struct rv__family rv__family;

typedef struct rv__child {
  const rv__family *fam;
  const char *values[RV_METRIC_LABELS_MAX]; /* point into this allocation */
  uint64_t hash;
  _Atomic uint64_t bits;       /* counter or gauge value; histogram sum */
  _Atomic uint64_t buckets[];  /* histogram: count per bucket (not cumulative), +Inf last */
} rv__child;

struct rv__family {
  rv_metrics *m;
  enum rv_metric_type type;
  char *name, *help;
  size_t nlabels;
  char *label_names[RV_METRIC_LABELS_MAX];
  size_t nbounds;
  double bounds[RV_HISTOGRAM_BUCKETS_MAX];
  rv__child *sink;             /* updates past RV_METRIC_CHILDREN_MAX land here */

  rv_rawmu mu;                 /* guards the fields below */
  rv__child **children;        /* creation order */
  size_t nchildren, children_cap;
  rv__child **slots;           /* open-addressing index, nslots a power of two */
  size_t nslots;
};

struct rv_metrics {
  rv_rawmu mu; /* guards everything below */
  rv__family *families[RV_METRICS_FAMILIES_MAX];
  size_t nfamilies;
  struct {
    rv_metrics_collect_fn fn;
    void *arg;
  } collectors[RV_METRICS_COLLECTORS_MAX];
  size_t ncollectors;
  char error[RV__METRICS_ERROR_MAX];
  _Atomic(rv_counter *) dropped; /* registered on the first refusal */
};

/* ---- names ---------------------------------------------------------------- */

/* Prometheus' metric-name grammar; also bounded so names fit fixed buffers. */
bool rv_metric_name_valid(const char *name) {
  if (!name || !name[0] || strlen(name) > RV_METRIC_NAME_MAX) return false;
  for (const char *p = name; *p; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(p > name && c >= '0' && c <= '9')) return false;
  }
  return true;
}

/* Label names are metric names without ':' and without the reserved "__". */
bool rv_metric_label_name_valid(const char *name) {
  return rv_metric_name_valid(name) && !strchr(name, ':') && strncmp(name, "__", 2) != 0;
}

static bool rv__ends_with(const char *s, size_t len, const char *suffix) {
  size_t n = strlen(suffix);
  return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/*
 * Conventions are checked here rather than enforced at registration so that
 * compatibility names (an NSQ-shaped metric, say) stay possible.
 */
const char *rv_metric_name_lint(const char *name, enum rv_metric_type type) {
  static const char *const scaled_units[] = {
      "_ms", "_us", "_ns", "_millis", "_milliseconds", "_microseconds", "_nanoseconds",
      "_minutes", "_hours", "_days", "_kb", "_mb", "_gb", "_kilobytes", "_megabytes",
      "_gigabytes", "_percent"};
  if (!rv_metric_name_valid(name)) return "name is invalid: must match [a-zA-Z_:][a-zA-Z0-9_:]*";
  if (strncmp(name, "ravel_", 6) != 0) return "ravel's metric names start with ravel_";
  size_t len = strlen(name);
  bool total = rv__ends_with(name, len, "_total");
  if (type == RV_METRIC_COUNTER && !total) return "counter names end in _total";
  if (type != RV_METRIC_COUNTER && total) return "only counter names end in _total";
  if (total) len -= strlen("_total");
  for (size_t i = 0; i < sizeof scaled_units / sizeof scaled_units[0]; i++)
    if (rv__ends_with(name, len, scaled_units[i]))
      return "use base units: _seconds, _bytes, ratios 0..1";
  return NULL;
}

/* ---- atomic doubles ---------------------------------------------------------- */

static double rv__from_bits(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}

static uint64_t rv__to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

/* C11 has no atomic double add; a CAS loop on the bits is lock-free. */
static void rv__atomic_add(_Atomic uint64_t *p, double delta) {
  uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(p, &old, rv__to_bits(rv__from_bits(old) + delta),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

static double rv__atomic_get(const _Atomic uint64_t *p) {
  return rv__from_bits(atomic_load_explicit(p, memory_order_relaxed));
}

/* ---- registration --------------------------------------------------------- */

/* Record why a registration failed; the caller holds m->mu. */
static void rv__set_error(rv_metrics *m, const char *name, const char *why) {
  snprintf(m->error, sizeof m->error, "metric \"%.*s\": %s", RV_METRIC_NAME_MAX,
           name ? name : "(null)", why);
}

static void rv__fail(rv_metrics *m, const char *name, const char *why) {
  rv_rawmu_lock(&m->mu);
  rv__set_error(m, name, why);
  rv_rawmu_unlock(&m->mu);
}

/*
 * Check a family's description before anything is allocated, so a bad
 * registration costs nothing and says precisely what was wrong.
 */
static const char *rv__check_spec(enum rv_metric_type type, const char *name, const char *help,
                                  const char *const *labels, const double *bounds,
                                  size_t nbounds) {
  if (!rv_metric_name_valid(name)) return "name is invalid: must match [a-zA-Z_:][a-zA-Z0-9_:]*";
  if (help && strlen(help) > RV_METRIC_HELP_MAX) return "help is longer than RV_METRIC_HELP_MAX";
  size_t n = 0;
  for (; labels && labels[n]; n++) {
    if (n == RV_METRIC_LABELS_MAX) return "more label names than RV_METRIC_LABELS_MAX";
    if (!rv_metric_label_name_valid(labels[n]))
      return "label name is invalid: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __";
    if (type == RV_METRIC_HISTOGRAM && strcmp(labels[n], "le") == 0)
      return "label name \"le\" is reserved for histogram buckets";
    for (size_t j = 0; j < n; j++)
      if (strcmp(labels[j], labels[n]) == 0) return "label name appears twice";
  }
  if (type != RV_METRIC_HISTOGRAM) return NULL;
  if (nbounds > RV_HISTOGRAM_BUCKETS_MAX) return "more buckets than RV_HISTOGRAM_BUCKETS_MAX";
  for (size_t i = 0; i < nbounds; i++) {
    if (!isfinite(bounds[i])) return "bucket bounds must be finite (+Inf is implicit)";
    if (i > 0 && !(bounds[i] > bounds[i - 1])) return "bucket bounds must strictly increase";
  }
  return NULL;
}

/* Whether an existing family is the one being registered again. */
static bool rv__same_spec(const rv__family *f, const rv__family *g) {
  if (f->type != g->type || strcmp(f->help, g->help) != 0 || f->nlabels != g->nlabels ||
      f->nbounds != g->nbounds)
    return false;
  for (size_t i = 0; i < f->nlabels; i++)
    if (strcmp(f->label_names[i], g->label_names[i]) != 0) return false;
  return f->nbounds == 0 || memcmp(f->bounds, g->bounds, f->nbounds * sizeof(double)) == 0;
}

static void rv__family_free(rv__family *f) {
  if (!f) return;
  for (size_t i = 0; i < f->nchildren; i++) free(f->children[i]);
  free(f->children);
  free(f->slots);
  free(f->sink);
  for (size_t i = 0; i < f->nlabels; i++) free(f->label_names[i]);
  free(f->name);
  free(f->help);
  rv_rawmu_destroy(&f->mu);
  free(f);
}

/* One allocation per child: the struct, its buckets, then its label values. */
static rv__child *rv__child_new(const rv__family *f, const char *const *values, uint64_t hash) {
  size_t nb = f->type == RV_METRIC_HISTOGRAM ? f->nbounds + 1 : 0;
  size_t head = sizeof(rv__child) + nb * sizeof(_Atomic uint64_t), text = 0;
  for (size_t i = 0; i < f->nlabels; i++) text += strlen(values[i]) + 1;
  rv__child *c = calloc(1, head + text);
  if (!c) return NULL;
  char *p = (char *)c + head;
  for (size_t i = 0; i < f->nlabels; i++) {
    size_t n = strlen(values[i]) + 1;
    memcpy(p, values[i], n);
    c->values[i] = p;
    p += n;
  }
  c->fam = f;
  c->hash = hash;
  atomic_init(&c->bits, rv__to_bits(0.0));
  for (size_t i = 0; i < nb; i++) atomic_init(&c->buckets[i], 0);
  return c;
}

static rv__child *rv__child_get(rv__family *f, const char *const *values, size_t n);

/* Build a complete family outside any lock; the caller publishes or frees it. */
static rv__family *rv__family_new(rv_metrics *m, enum rv_metric_type type, const char *name,
                                  const char *help, const char *const *labels,
                                  const double *bounds, size_t nbounds) {
  rv__family *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  rv_rawmu_init(&f->mu);
  f->m = m;
  f->type = type;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  bool ok = f->name && f->help;
  for (; ok && labels && labels[f->nlabels]; f->nlabels++)
    ok = (f->label_names[f->nlabels] = strdup(labels[f->nlabels])) != NULL;
  if (type == RV_METRIC_HISTOGRAM) {
    f->nbounds = nbounds;
    if (nbounds) memcpy(f->bounds, bounds, nbounds * sizeof(double));
  }
  const char *none[RV_METRIC_LABELS_MAX];
  for (size_t i = 0; i < RV_METRIC_LABELS_MAX; i++) none[i] = "";
  f->sink = ok ? rv__child_new(f, none, 0) : NULL;
  f->slots = ok ? calloc(RV__SLOTS_INITIAL, sizeof *f->slots) : NULL;
  f->nslots = RV__SLOTS_INITIAL;
  /* An unlabelled family's only series exists from the start and renders 0. */
  if (!f->sink || !f->slots || (f->nlabels == 0 && !rv__child_get(f, NULL, 0))) {
    rv__family_free(f);
    return NULL;
  }
  return f;
}

/* The common path of the three registration functions. */
static rv__family *rv__register(rv_metrics *m, enum rv_metric_type type, const char *name,
                                const char *help, const char *const *labels,
                                const double *bounds, size_t nbounds) {
  if (!m) return NULL;
  if (type == RV_METRIC_HISTOGRAM && !bounds) {
    bounds = rv_histogram_seconds_buckets;
    nbounds = RV_HISTOGRAM_SECONDS_BUCKETS_N;
  }
  const char *why = rv__check_spec(type, name, help, labels, bounds, nbounds);
  if (why) {
    rv__fail(m, name, why);
    return NULL;
  }
  rv__family *f = rv__family_new(m, type, name, help, labels, bounds, nbounds);
  if (!f) {
    rv__fail(m, name, "out of memory");
    return NULL;
  }
  rv__family *result = f;
  rv_rawmu_lock(&m->mu);
  for (size_t i = 0; i < m->nfamilies; i++) {
    if (strcmp(m->families[i]->name, name) != 0) continue;
    result = rv__same_spec(m->families[i], f) ? m->families[i] : NULL;
    if (!result)
      rv__set_error(m, name, "already registered with a different type, help, labels or buckets");
    break;
  }
  if (result == f && m->nfamilies == RV_METRICS_FAMILIES_MAX) {
    rv__set_error(m, name, "registry is full (RV_METRICS_FAMILIES_MAX families)");
    result = NULL;
  }
  if (result == f) m->families[m->nfamilies++] = f;
  rv_rawmu_unlock(&m->mu);
  if (result != f) rv__family_free(f);
  return result;
}

rv_counter *rv_metrics_counter(rv_metrics *m, const char *name, const char *help,
                               const char *const *label_names) {
  return (rv_counter *)rv__register(m, RV_METRIC_COUNTER, name, help, label_names, NULL, 0);
}

rv_gauge *rv_metrics_gauge(rv_metrics *m, const char *name, const char *help,
                           const char *const *label_names) {
  return (rv_gauge *)rv__register(m, RV_METRIC_GAUGE, name, help, label_names, NULL, 0);
}

rv_histogram *rv_metrics_histogram(rv_metrics *m, const char *name, const char *help,
                                   const char *const *label_names, const double *bounds,
                                   size_t nbounds) {
  return (rv_histogram *)rv__register(m, RV_METRIC_HISTOGRAM, name, help, label_names, bounds,
                                      nbounds);
}

rv_metrics *rv_metrics_new(void) {
  rv_metrics *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  rv_rawmu_init(&m->mu);
  atomic_init(&m->dropped, NULL);
  return m;
}

void rv_metrics_free(rv_metrics *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nfamilies; i++) rv__family_free(m->families[i]);
  rv_rawmu_destroy(&m->mu);
  free(m);
}

void rv_metrics_error(rv_metrics *m, char *buf, size_t cap) {
  if (!cap) return;
  buf[0] = '\0';
  if (!m) return;
  rv_rawmu_lock(&m->mu);
  snprintf(buf, cap, "%s", m->error);
  rv_rawmu_unlock(&m->mu);
}

int rv_metrics_add_collector(rv_metrics *m, rv_metrics_collect_fn fn, void *arg) {
  if (!m || !fn) return RV_EINVAL;
  int rc = RV_ELIMIT;
  rv_rawmu_lock(&m->mu);
  if (m->ncollectors < RV_METRICS_COLLECTORS_MAX) {
    m->collectors[m->ncollectors].fn = fn;
    m->collectors[m->ncollectors].arg = arg;
    m->ncollectors++;
    rc = RV_OK;
  }
  rv_rawmu_unlock(&m->mu);
  return rc;
}

/* ---- children ------------------------------------------------------------ */

/* FNV-1a over the values, each followed by a byte UTF-8 text never contains. */
static uint64_t rv__hash(const char *const *values, size_t n) {
  uint64_t h = UINT64_C(14695981039346656037);
  for (size_t i = 0; i < n; i++) {
    for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
      h = (h ^ *p) * UINT64_C(1099511628211);
    h = (h ^ 0xff) * UINT64_C(1099511628211);
  }
  return h;
}

static bool rv__child_matches(const rv__family *f, const rv__child *c,
                              const char *const *values, uint64_t hash) {
  if (c->hash != hash) return false;
  for (size_t i = 0; i < f->nlabels; i++)
    if (strcmp(c->values[i], values[i]) != 0) return false;
  return true;
}

/* Double the index when it is half full, so probes stay short. */
static bool rv__index_reserve(rv__family *f) {
  if (2 * (f->nchildren + 1) <= f->nslots) return true;
  size_t nslots = 2 * f->nslots;
  rv__child **slots = calloc(nslots, sizeof *slots);
  if (!slots) return false;
  for (size_t i = 0; i < f->nchildren; i++) {
    size_t j = f->children[i]->hash & (nslots - 1);
    while (slots[j]) j = (j + 1) & (nslots - 1);
    slots[j] = f->children[i];
  }
  free(f->slots);
  f->slots = slots;
  f->nslots = nslots;
  return true;
}

/* The index slot holding the tuple, or the empty slot where it belongs. */
static rv__child **rv__index_slot(rv__family *f, const char *const *values, uint64_t hash) {
  size_t mask = f->nslots - 1, j = hash & mask;
  while (f->slots[j] && !rv__child_matches(f, f->slots[j], values, hash)) j = (j + 1) & mask;
  return &f->slots[j];
}

/* Append a child for a new tuple; the caller holds f->mu.  NULL without memory. */
static rv__child *rv__child_add(rv__family *f, const char *const *values, uint64_t hash) {
  if (f->nchildren == f->children_cap) {
    size_t cap = f->children_cap ? 2 * f->children_cap : RV__SLOTS_INITIAL;
    rv__child **children = realloc(f->children, cap * sizeof *children);
    if (!children) return NULL;
    f->children = children;
    f->children_cap = cap;
  }
  rv__child *c = rv__index_reserve(f) ? rv__child_new(f, values, hash) : NULL;
  if (!c) return NULL;
  f->children[f->nchildren++] = c;
  *rv__index_slot(f, values, hash) = c;
  return c;
}

/* Count one refused tuple of f, registering the dropped-series family on first use. */
static void rv__count_dropped(rv__family *f) {
  rv_metrics *m = f->m;
  rv_counter *d = atomic_load(&m->dropped);
  if (!d) {
    d = rv_metrics_counter(m, RV_METRICS_DROPPED_NAME,
                           "Label-value tuples refused because their family reached "
                           "RV_METRIC_CHILDREN_MAX; their updates were discarded.",
                           (const char *const[]){"family", NULL});
    atomic_store(&m->dropped, d);
  }
  if ((rv__family *)d != f) rv_counter_inc(rv_counter_labels(d, f->name));
}

/*
 * Find or create the child for a tuple.  The family lock covers only the
 * index; the dropped-series count is taken after releasing it, because that
 * goes through the registry lock and another family's lock.
 */
static rv__child *rv__child_get(rv__family *f, const char *const *values, size_t n) {
  if (!f || n != f->nlabels) return NULL;
  for (size_t i = 0; i < n; i++)
    if (!values[i] || strlen(values[i]) > RV_METRIC_LABEL_VALUE_MAX) return NULL;
  uint64_t hash = rv__hash(values, n);
  rv_rawmu_lock(&f->mu);
  rv__child *c = *rv__index_slot(f, values, hash);
  bool full = !c && f->nchildren == RV_METRIC_CHILDREN_MAX;
  if (full)
    c = f->sink;
  else if (!c)
    c = rv__child_add(f, values, hash);
  rv_rawmu_unlock(&f->mu);
  if (full) rv__count_dropped(f);
  return c;
}

rv_counter_child *rv_counter_labelv(rv_counter *f, const char *const *values, size_t n) {
  return (rv_counter_child *)rv__child_get((rv__family *)f, values, n);
}

rv_gauge_child *rv_gauge_labelv(rv_gauge *f, const char *const *values, size_t n) {
  return (rv_gauge_child *)rv__child_get((rv__family *)f, values, n);
}

rv_histogram_child *rv_histogram_labelv(rv_histogram *f, const char *const *values, size_t n) {
  return (rv_histogram_child *)rv__child_get((rv__family *)f, values, n);
}

/* ---- updates --------------------------------------------------------------- */

/* A counter that went down would read as a process restart to rate(). */
void rv_counter_add(rv_counter_child *c, double delta) {
  if (c && delta >= 0) rv__atomic_add(&((rv__child *)c)->bits, delta);
}

void rv_counter_inc(rv_counter_child *c) { rv_counter_add(c, 1); }

double rv_counter_value(const rv_counter_child *c) {
  return c ? rv__atomic_get(&((const rv__child *)c)->bits) : 0;
}

void rv_gauge_set(rv_gauge_child *g, double v) {
  if (g) atomic_store_explicit(&((rv__child *)g)->bits, rv__to_bits(v), memory_order_relaxed);
}

void rv_gauge_add(rv_gauge_child *g, double delta) {
  if (g) rv__atomic_add(&((rv__child *)g)->bits, delta);
}

void rv_gauge_inc(rv_gauge_child *g) { rv_gauge_add(g, 1); }
void rv_gauge_dec(rv_gauge_child *g) { rv_gauge_add(g, -1); }

double rv_gauge_value(const rv_gauge_child *g) {
  return g ? rv__atomic_get(&((const rv__child *)g)->bits) : 0;
}

/*
 * Buckets are stored non-cumulative so that an observation touches one
 * counter; the renderer sums them.  NaN compares false with every bound and
 * lands in +Inf, as in Prometheus' own clients.
 */
void rv_histogram_observe(rv_histogram_child *h, double v) {
  if (!h) return;
  rv__child *c = (rv__child *)h;
  const rv__family *f = c->fam;
  size_t lo = 0, hi = f->nbounds; /* first bucket with v <= le */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v <= f->bounds[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  atomic_fetch_add_explicit(&c->buckets[lo], 1, memory_order_relaxed);
  rv__atomic_add(&c->bits, v);
}

/* ---- rendering ----------------------------------------------------------- */

/* A growable, bounded text buffer; the first error sticks. */
typedef struct rv__buf {
  char *p;
  size_t len, cap;
  int err;
} rv__buf;

static void rv__put(rv__buf *b, const char *s, size_t n) {
  if (b->err) return;
  if (b->len + n + 1 > b->cap) {
    if (b->len + n + 1 > RV_METRICS_RENDER_BYTES_MAX) {
      b->err = RV_ELIMIT;
      return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->err = RV_ENOMEM;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void rv__puts(rv__buf *b, const char *s) { rv__put(b, s, strlen(s)); }

/* HELP text escapes backslash and newline; label values also the double quote. */
static void rv__put_escaped(rv__buf *b, const char *s, bool label_value) {
  const char *run = s;
  for (; *s; s++) {
    const char *esc = *s == '\\'                  ? "\\\\"
                      : *s == '\n'                ? "\\n"
                      : label_value && *s == '"' ? "\\\""
                                                  : NULL;
    if (!esc) continue;
    rv__put(b, run, (size_t)(s - run));
    rv__puts(b, esc);
    run = s + 1;
  }
  rv__put(b, run, (size_t)(s - run));
}

/*
 * Numbers as Prometheus' parser (Go's ParseFloat) reads them: +Inf, -Inf,
 * NaN, integers without an exponent while exact, else the shortest of %.15g
 * and %.17g that reads back as the same double.
 */
static void rv__format_double(double v, char out[RV__DOUBLE_TEXT_MAX]) {
  if (isnan(v))
    snprintf(out, RV__DOUBLE_TEXT_MAX, "NaN");
  else if (isinf(v))
    snprintf(out, RV__DOUBLE_TEXT_MAX, "%s", v > 0 ? "+Inf" : "-Inf");
  else if (v == 0)
    snprintf(out, RV__DOUBLE_TEXT_MAX, "0"); /* also -0 */
  else if (fabs(v) < RV__EXACT_INT_MAX && v == trunc(v))
    snprintf(out, RV__DOUBLE_TEXT_MAX, "%.0f", v);
  else if (snprintf(out, RV__DOUBLE_TEXT_MAX, "%.15g", v), strtod(out, NULL) != v)
    snprintf(out, RV__DOUBLE_TEXT_MAX, "%.17g", v);
}

static void rv__put_header(rv__buf *b, const char *name, const char *help,
                           enum rv_metric_type type) {
  static const char *const type_names[] = {"counter", "gauge", "histogram"};
  if (help && help[0]) {
    rv__puts(b, "# HELP ");
    rv__puts(b, name);
    rv__puts(b, " ");
    rv__put_escaped(b, help, false);
    rv__puts(b, "\n");
  }
  rv__puts(b, "# TYPE ");
  rv__puts(b, name);
  rv__puts(b, " ");
  rv__puts(b, type_names[type]);
  rv__puts(b, "\n");
}

/* One sample line; le (may be NULL) is appended as the last label. */
static void rv__put_sample(rv__buf *b, const char *name, const char *suffix,
                           const char *const *names, const char *const *values, size_t n,
                           const char *le, double v) {
  rv__puts(b, name);
  rv__puts(b, suffix);
  if (n || le) {
    rv__puts(b, "{");
    for (size_t i = 0; i < n; i++) {
      if (i) rv__puts(b, ",");
      rv__puts(b, names[i]);
      rv__puts(b, "=\"");
      rv__put_escaped(b, values[i], true);
      rv__puts(b, "\"");
    }
    if (le) {
      rv__puts(b, n ? ",le=\"" : "le=\"");
      rv__puts(b, le);
      rv__puts(b, "\"");
    }
    rv__puts(b, "}");
  }
  char text[RV__DOUBLE_TEXT_MAX];
  rv__format_double(v, text);
  rv__puts(b, " ");
  rv__puts(b, text);
  rv__puts(b, "\n");
}

static void rv__put_histogram(rv__buf *b, const rv__family *f, const rv__child *c) {
  const char *const *names = (const char *const *)f->label_names;
  char le[RV__DOUBLE_TEXT_MAX];
  uint64_t count = 0;
  for (size_t i = 0; i <= f->nbounds; i++) {
    count += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
    if (i < f->nbounds)
      rv__format_double(f->bounds[i], le);
    else
      snprintf(le, sizeof le, "+Inf");
    rv__put_sample(b, f->name, "_bucket", names, c->values, f->nlabels, le, (double)count);
  }
  /* _count is the +Inf bucket as read above, so the two always agree. */
  rv__put_sample(b, f->name, "_sum", names, c->values, f->nlabels, NULL, rv__atomic_get(&c->bits));
  rv__put_sample(b, f->name, "_count", names, c->values, f->nlabels, NULL, (double)count);
}

/*
 * The family lock is held while its children are formatted: it only blocks
 * creation of new children of this family, never updates.  A family without
 * children (labelled, none used yet) is left out, as Prometheus' clients do.
 */
static void rv__put_family(rv__buf *b, rv__family *f) {
  rv_rawmu_lock(&f->mu);
  if (f->nchildren) rv__put_header(b, f->name, f->help, f->type);
  for (size_t i = 0; i < f->nchildren; i++) {
    const rv__child *c = f->children[i];
    if (f->type == RV_METRIC_HISTOGRAM)
      rv__put_histogram(b, f, c);
    else
      rv__put_sample(b, f->name, "", (const char *const *)f->label_names, c->values, f->nlabels,
                     NULL, rv__atomic_get(&c->bits));
  }
  rv_rawmu_unlock(&f->mu);
}

/* ---- collectors' writer ------------------------------------------------------ */

struct rv_metrics_writer {
  rv__buf *b;
  rv__family *const *families; /* the registered families being rendered */
  size_t nfamilies;
  char names[RV_METRICS_COLLECTED_FAMILIES_MAX][RV_METRIC_NAME_MAX + 1];
  size_t nnames;
  bool open; /* the last header succeeded: samples are accepted */
};

/*
 * A family name may appear once per exposition, or Prometheus rejects the
 * whole scrape; so names are checked against everything rendered so far.
 */
int rv_metrics_write_family(rv_metrics_writer *w, const char *name, const char *help,
                            enum rv_metric_type type) {
  if (!w) return RV_EINVAL;
  w->open = false;
  if ((type != RV_METRIC_COUNTER && type != RV_METRIC_GAUGE) || !rv_metric_name_valid(name) ||
      (help && strlen(help) > RV_METRIC_HELP_MAX))
    return RV_EINVAL;
  for (size_t i = 0; i < w->nfamilies; i++)
    if (strcmp(w->families[i]->name, name) == 0) return RV_EINVAL;
  for (size_t i = 0; i < w->nnames; i++)
    if (strcmp(w->names[i], name) == 0) return RV_EINVAL;
  if (w->nnames == RV_METRICS_COLLECTED_FAMILIES_MAX) return RV_ELIMIT;
  snprintf(w->names[w->nnames++], sizeof w->names[0], "%s", name);
  rv__put_header(w->b, name, help, type);
  w->open = true;
  return RV_OK;
}

int rv_metrics_write_sample(rv_metrics_writer *w, const char *const *labels, double value) {
  if (!w || !w->open) return RV_EINVAL;
  const char *names[RV_METRICS_SAMPLE_LABELS_MAX], *values[RV_METRICS_SAMPLE_LABELS_MAX];
  size_t n = 0;
  for (; labels && labels[2 * n]; n++) {
    const char *name = labels[2 * n], *v = labels[2 * n + 1];
    if (n == RV_METRICS_SAMPLE_LABELS_MAX || !v || !rv_metric_label_name_valid(name))
      return RV_EINVAL;
    for (size_t j = 0; j < n; j++)
      if (strcmp(names[j], name) == 0) return RV_EINVAL;
    names[n] = name;
    values[n] = v;
  }
  rv__put_sample(w->b, w->names[w->nnames - 1], "", names, values, n, NULL, value);
  return RV_OK;
}

/*
 * Families and collectors are appended, never removed, so the counts read
 * under the registry lock stay valid while rendering without it; updates and
 * registrations proceed meanwhile.
 */
int rv_metrics_render(rv_metrics *m, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  if (!m) return RV_EINVAL;
  rv_rawmu_lock(&m->mu);
  size_t nfamilies = m->nfamilies, ncollectors = m->ncollectors;
  rv_rawmu_unlock(&m->mu);

  rv__buf b = {0};
  rv__put(&b, "", 0); /* an empty registry still renders a (empty) string */
  for (size_t i = 0; i < nfamilies; i++) rv__put_family(&b, m->families[i]);
  if (ncollectors && !b.err) {
    rv_metrics_writer *w = calloc(1, sizeof *w);
    if (w) {
      w->b = &b;
      w->families = m->families;
      w->nfamilies = nfamilies;
    } else {
      b.err = RV_ENOMEM;
    }
    for (size_t i = 0; w && i < ncollectors; i++) {
      w->open = false; /* a collector starts with a header of its own */
      m->collectors[i].fn(w, m->collectors[i].arg);
    }
    free(w);
  }
  if (b.err) {
    free(b.p);
    return b.err;
  }
  *out = b.p;
  *len = b.len;
  return RV_OK;
}
