/*
 * metrics: a bounded, thread-safe metrics registry that renders Prometheus'
 * text exposition format 0.0.4.
 *
 * The model.  A registry (rv_metrics) holds families: counters, gauges and
 * histograms, each with a name, a help text and up to RV_METRIC_LABELS_MAX
 * label names.  A family holds one child (one time series, or one histogram)
 * per tuple of label values, created on first use by rv_*_labels().  Finding
 * or creating a child takes the family's short internal lock; updating a
 * child never locks: values are C11 atomics (doubles by compare-and-swap on
 * their bits), so hot paths should look a child up once and keep the pointer.
 * Families and children live until rv_metrics_free(); there is no removal,
 * which is what makes handing out raw pointers safe.
 *
 * Everything is bounded.  A registry holds at most RV_METRICS_FAMILIES_MAX
 * families and a family at most RV_METRIC_CHILDREN_MAX children.  When a
 * family is full, rv_*_labels() for a new tuple returns the family's sink: a
 * child that accepts updates and is never rendered, so a label-cardinality
 * bug degrades one family instead of the process's memory.  Each refused
 * creation is counted in
 *
 *     ravel_metrics_dropped_series_total{family="<name>"}
 *
 * (one per refused rv_*_labels() call, not per distinct tuple: remembering
 * the tuples would be the unbounded memory the limit exists to avoid).
 *
 * Errors.  Registration returns NULL on a bad name, bad label name, a full
 * registry, or a conflicting registration (same name, different type, help,
 * label names or buckets); registering again with an identical description
 * returns the existing family.  rv_metrics_error() says why the last
 * registration failed.  Every update and lookup accepts NULL and does
 * nothing, so a failed registration never crashes the program it measures.
 *
 * Naming is the caller's job (rv_metric_name_lint() checks it): a `ravel_`
 * prefix, base units last (`_seconds`, `_bytes`), counters ending `_total`.
 *
 * Output order is deterministic: families in registration order, children in
 * creation order, then the samples of collectors in registration order.
 */
#ifndef RAVEL_OBS_METRICS_H
#define RAVEL_OBS_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Families per registry (registered ones; collectors' families not counted). */
#define RV_METRICS_FAMILIES_MAX 256
/* Children (label-value tuples) per family; see the sink above. */
#define RV_METRIC_CHILDREN_MAX 1024
/* Label names per family. */
#define RV_METRIC_LABELS_MAX 4
/* Bytes of a metric or label name, and of a label value, without the NUL. */
#define RV_METRIC_NAME_MAX 128
#define RV_METRIC_LABEL_VALUE_MAX 256
/* Bytes of a help text without the NUL. */
#define RV_METRIC_HELP_MAX 512
/* Finite bucket bounds per histogram (+Inf is implicit). */
#define RV_HISTOGRAM_BUCKETS_MAX 32
/* Collect callbacks per registry, and families all collectors may write per scrape. */
#define RV_METRICS_COLLECTORS_MAX 32
#define RV_METRICS_COLLECTED_FAMILIES_MAX 128
/* Label pairs per collected sample. */
#define RV_METRICS_SAMPLE_LABELS_MAX 8
/* A rendered exposition larger than this is refused (RV_ELIMIT). */
#define RV_METRICS_RENDER_BYTES_MAX (16u << 20)

/* The family that counts refused children (see above). */
#define RV_METRICS_DROPPED_NAME "ravel_metrics_dropped_series_total"

enum rv_metric_type { RV_METRIC_COUNTER, RV_METRIC_GAUGE, RV_METRIC_HISTOGRAM };

typedef struct rv_metrics rv_metrics;
typedef struct rv_metrics_writer rv_metrics_writer;
/* Family handles. */
typedef struct rv_counter rv_counter;
typedef struct rv_gauge rv_gauge;
typedef struct rv_histogram rv_histogram;
/* Child handles: one time series (or histogram) of a family. */
typedef struct rv_counter_child rv_counter_child;
typedef struct rv_gauge_child rv_gauge_child;
typedef struct rv_histogram_child rv_histogram_child;

rv_metrics *rv_metrics_new(void);
/* Frees the registry, its families and children; NULL is fine. */
void rv_metrics_free(rv_metrics *m);
/*
 * Copy why the last registration on m failed into buf (always NUL-terminated
 * when cap > 0); "" if none failed.  E.g. `metric "ravel x": name is invalid:
 * must match [a-zA-Z_:][a-zA-Z0-9_:]*`.
 */
void rv_metrics_error(rv_metrics *m, char *buf, size_t cap);

/* ---- registration ----------------------------------------------------------- */
/*
 * label_names is a NULL-terminated array, or NULL for an unlabelled family,
 * e.g. (const char *[]){"topic", "channel", NULL}.  Strings are copied.
 * An unlabelled family has its single child from the start (it renders 0).
 */
rv_counter *rv_metrics_counter(rv_metrics *m, const char *name, const char *help,
                               const char *const *label_names);
rv_gauge *rv_metrics_gauge(rv_metrics *m, const char *name, const char *help,
                           const char *const *label_names);
/*
 * bounds: nbounds strictly increasing finite upper bounds (le), at most
 * RV_HISTOGRAM_BUCKETS_MAX; +Inf is added.  bounds == NULL selects
 * rv_histogram_seconds_buckets (latencies from 5 ms to 10 s).
 * "le" is not allowed as a label name.
 */
rv_histogram *rv_metrics_histogram(rv_metrics *m, const char *name, const char *help,
                                   const char *const *label_names, const double *bounds,
                                   size_t nbounds);

#define RV_HISTOGRAM_SECONDS_BUCKETS_N 11
extern const double rv_histogram_seconds_buckets[RV_HISTOGRAM_SECONDS_BUCKETS_N];

/* ---- children -------------------------------------------------------------- */
/*
 * The child for a tuple of label values, in label-name order; created on
 * first use.  NULL if the family is NULL, the number of values differs from
 * the number of label names, or a value is NULL or longer than
 * RV_METRIC_LABEL_VALUE_MAX.  The macros take the values inline:
 *     rv_counter_inc(rv_counter_labels(requests, "GET", "200"));
 *     rv_gauge_set(rv_gauge_labels(depth), 3);   (unlabelled: no values)
 */
rv_counter_child *rv_counter_labelv(rv_counter *f, const char *const *values, size_t n);
rv_gauge_child *rv_gauge_labelv(rv_gauge *f, const char *const *values, size_t n);
rv_histogram_child *rv_histogram_labelv(rv_histogram *f, const char *const *values, size_t n);

/* Array of the variadic arguments with a NULL in front (so zero arguments compile). */
#define RV__LABEL_ARGS(...)                                                    \
  ((const char *const[]){NULL, __VA_ARGS__} + 1),                              \
      (sizeof((const char *const[]){NULL, __VA_ARGS__}) / sizeof(const char *) - 1)
#define rv_counter_labels(f, ...) rv_counter_labelv((f), RV__LABEL_ARGS(__VA_ARGS__))
#define rv_gauge_labels(f, ...) rv_gauge_labelv((f), RV__LABEL_ARGS(__VA_ARGS__))
#define rv_histogram_labels(f, ...) rv_histogram_labelv((f), RV__LABEL_ARGS(__VA_ARGS__))

/* ---- updates (lock-free; NULL children are ignored) --------------------------- */

/* Counters only go up: a negative or NaN delta is ignored. */
void rv_counter_add(rv_counter_child *c, double delta);
void rv_counter_inc(rv_counter_child *c);
double rv_counter_value(const rv_counter_child *c);

void rv_gauge_set(rv_gauge_child *g, double v);
void rv_gauge_add(rv_gauge_child *g, double delta);
void rv_gauge_inc(rv_gauge_child *g);
void rv_gauge_dec(rv_gauge_child *g);
double rv_gauge_value(const rv_gauge_child *g);

/* Count v in the first bucket with v <= le (NaN goes to +Inf) and add it to _sum. */
void rv_histogram_observe(rv_histogram_child *h, double v);

/* ---- collectors ------------------------------------------------------------- */
/*
 * fn(w, arg) runs on every render, after the registered families, and emits
 * computed samples through the writer: a family header, then its samples,
 * then the next header.  It must not register on or render the same
 * registry.  Returns 0, RV_EINVAL (NULL fn) or RV_ELIMIT.
 */
typedef void (*rv_metrics_collect_fn)(rv_metrics_writer *w, void *arg);
int rv_metrics_add_collector(rv_metrics *m, rv_metrics_collect_fn fn, void *arg);

/*
 * Start a family of computed samples (RV_METRIC_COUNTER or RV_METRIC_GAUGE).
 * RV_EINVAL if the name is invalid, already rendered in this scrape (by the
 * registry or a collector), or the type is not supported; RV_ELIMIT past
 * RV_METRICS_COLLECTED_FAMILIES_MAX.  After an error, samples are dropped
 * until the next successful header.
 */
int rv_metrics_write_family(rv_metrics_writer *w, const char *name, const char *help,
                            enum rv_metric_type type);
/*
 * One sample of the current family.  labels: NULL-terminated name, value
 * pairs, e.g. (const char *[]){"thread", "worker-1", "state", "running",
 * NULL}, or NULL.  RV_EINVAL (and nothing written) on a bad label name, a
 * missing header, or more than RV_METRICS_SAMPLE_LABELS_MAX pairs.
 */
int rv_metrics_write_sample(rv_metrics_writer *w, const char *const *labels, double value);

/* ---- rendering ----------------------------------------------------------- */
/*
 * Render the exposition into a malloc'd, NUL-terminated buffer (*out, free()
 * it; *len excludes the NUL).  Returns 0, RV_ENOMEM or RV_ELIMIT (more than
 * RV_METRICS_RENDER_BYTES_MAX).  Safe to call while other threads update.
 */
int rv_metrics_render(rv_metrics *m, char **out, size_t *len);

/* Content-Type of the rendered text, for HTTP handlers. */
#define RV_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- names ---------------------------------------------------------------- */

/* [a-zA-Z_:][a-zA-Z0-9_:]*, at most RV_METRIC_NAME_MAX bytes. */
bool rv_metric_name_valid(const char *name);
/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", at most RV_METRIC_NAME_MAX. */
bool rv_metric_label_name_valid(const char *name);
/*
 * ravel's naming conventions, beyond validity: NULL if name follows them,
 * else why not ("counter names end in _total").  Checked: the ravel_ prefix,
 * _total on counters and only on counters, no non-base units (_ms,
 * _milliseconds, _kb, ...).
 */
const char *rv_metric_name_lint(const char *name, enum rv_metric_type type);

#ifdef __cplusplus
}
#endif
#endif
