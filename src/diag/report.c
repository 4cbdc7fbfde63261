/* The HTML report: see report.h.  Plain C writing HTML and SVG; no library. */
#include "diag/report.h"

#include "rt/rt.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the charts' geometry ------------------------------------------------------------------- */

#define CH_W 640        /* chart width */
#define CH_H 230        /* chart height */
#define CH_LEFT 52      /* y labels */
#define CH_RIGHT 118    /* the replicas' names at their lines' ends */
#define CH_TOP 40       /* title, then marker numbers */
#define CH_BOTTOM 28    /* x labels */
#define CH_LABEL_GAP 11 /* least vertical distance between two end labels */
#define GAP_INTERVALS 3 /* a pause longer than this many intervals breaks a line */
#define NOTICES_MAX 12

/* ---- the graph's geometry ------------------------------------------------------------------- */

#define G_COL_W 290   /* column pitch */
#define G_BOX_W 200   /* node box */
#define G_BOX_H 40
#define G_ROW_H 60    /* row pitch */
#define G_TOP 44      /* group header */
#define G_LEFT 20
#define G_SHOWN 30    /* bytes of a label shown in a box (all of it in the tooltip) */
#define G_EDGE_SHOWN 36

typedef struct metric_def {
  const char *key, *title;
} metric_def;

/* The charts, in order. */
static const metric_def metrics[] = {
    {"rate", "messages handled per second"},
    {"handler_threads", "handler threads"},
    {"cache_waiters", "threads blocked on the client cache"},
    {"dlock_waits", "distributed-lock acquisitions in progress"},
    {"in_flight", "messages in flight"},
    {"held", "held slots (queue)"},
};
#define NMETRICS (sizeof metrics / sizeof metrics[0])

/* The last-sample table also shows these cumulative counters. */
static const metric_def counters[] = {
    {"timeouts", "timeouts"}, {"late_fins", "late FINs"}, {"rebuilds", "config rebuilds"}};
#define NCOUNTERS (sizeof counters / sizeof counters[0])

static const char *const palette[] = {"#1c64d1", "#e8590c", "#2f9e44", "#9c36b5", "#8d5524",
                                      "#d6336c", "#0c8599", "#74b816", "#495057", "#f59f00"};
#define NPALETTE (sizeof palette / sizeof palette[0])

typedef struct series {
  const char *name;
  const json_t *samples; /* the array */
  size_t first, n;       /* the samples drawn: [first, first + n) */
} series;

typedef struct marker {
  int64_t t_ms;
  const char *label;
} marker;

typedef struct gnode {
  const char *id, *label, *kind;
  size_t group, row;
  bool in_cycle;
} gnode;

typedef struct gedge {
  size_t from, to;
  const char *label;
} gedge;

typedef struct page {
  FILE *f;
  const char *title;
  int64_t generated_ms;
  series *s;
  size_t ns;
  marker *m;
  size_t nm;
  bool have_time;
  int64_t t0, t1;      /* the shared time axis, unix ms */
  int64_t interval_ms; /* the samples' usual spacing */
  const char *diag_text;
  size_t diag_len;
  int healthy; /* 1, 0, -1 unknown */
  bool have_diag, have_graph;
  gnode *nodes;
  size_t nnodes;
  gedge *edges;
  size_t nedges;
  const char *groups[RV_REPORT_GROUPS_MAX];
  size_t ngroups, rows[RV_REPORT_GROUPS_MAX];
  char notices[NOTICES_MAX][200];
  size_t nnotices;
} page;

/* ---- small helpers ------------------------------------------------------------------------- */

static void notice(page *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(page *p, const char *fmt, ...) {
  if (p->nnotices == NOTICES_MAX)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->notices[p->nnotices++], sizeof p->notices[0], fmt, ap);
  va_end(ap);
}

/* At most max bytes of s, cut back to a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max) {
  if (len <= max)
    return len;
  size_t n = max;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
    n--;
  return n;
}

/* Write s (len bytes, at most max of them) HTML-escaped; "…" when cut.  In an
 * attribute (attr) line breaks become spaces; other control characters always do. */
static void esc_n(FILE *f, const char *s, size_t len, size_t max, bool attr) {
  if (!s)
    return;
  size_t n = utf8_cut(s, len, max);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '&': fputs("&amp;", f); break;
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '"': fputs("&quot;", f); break;
    case '\'': fputs("&#39;", f); break;
    case '\n':
    case '\t': fputc(attr ? ' ' : c, f); break;
    default: fputc(c < 0x20 || c == 0x7F ? ' ' : c, f); break;
    }
  }
  if (n < len)
    fputs("\xE2\x80\xA6", f);
}

static void esc(FILE *f, const char *s, size_t max) { esc_n(f, s, s ? strlen(s) : 0, max, false); }
static void esc_attr(FILE *f, const char *s) { esc_n(f, s, s ? strlen(s) : 0, RV_REPORT_LABEL_MAX, true); }

static const char *str_or(const json_t *o, const char *key, const char *dflt) {
  const char *v = json_string_value(json_object_get(o, key));
  return v ? v : dflt;
}

static bool num(const json_t *o, const char *key, double *out) {
  const json_t *v = json_object_get(o, key);
  if (!json_is_number(v))
    return false;
  double d = json_number_value(v);
  if (!isfinite(d))
    return false;
  *out = d;
  return true;
}

static bool time_of(const json_t *o, int64_t *out) {
  double d;
  if (!num(o, "t_ms", &d) || d < 0 || d > 9e15)
    return false;
  *out = (int64_t)d;
  return true;
}

static void fmt_utc(char *out, size_t cap, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (ms <= 0 || !gmtime_r(&t, &tm)) {
    snprintf(out, cap, "-");
    return;
  }
  char buf[48];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(out, cap, "%s.%03d UTC", buf, (int)(ms % 1000));
}

/* A value for an axis label: integers plainly, others with up to 2 decimals. */
static void fmt_val(char *out, size_t cap, double v) {
  if (fabs(v - round(v)) < 1e-9)
    snprintf(out, cap, "%.0f", v);
  else
    snprintf(out, cap, "%.2g", v);
}

/* The smallest of 1, 2, 5 x 10^k that is >= v (v > 0). */
static double nice_ceil(double v) {
  if (!(v > 0))
    return 1;
  double step = 1;
  while (step * 10 <= v)
    step *= 10;
  while (step > v)
    step /= 10;
  static const double mult[] = {1, 2, 5, 10};
  for (size_t i = 0; i < 4; i++)
    if (step * mult[i] >= v)
      return step * mult[i];
  return step * 10;
}

/* ---- reading the model --------------------------------------------------------------------- */

static int prepare(page *p, const json_t *model) {
  p->title = str_or(model, "title", "ravel report");
  double g;
  p->generated_ms = num(model, "generated_at_ms", &g) ? (int64_t)g : 0;
  p->healthy = -1;

  /* replicas */
  const json_t *reps = json_object_get(model, "replicas");
  size_t nreps = json_array_size(reps);
  if (nreps > RV_REPORT_REPLICAS_MAX)
    notice(p, "%zu replicas in the input: only the first %d are drawn", nreps,
           RV_REPORT_REPLICAS_MAX);
  p->s = calloc(nreps ? nreps : 1, sizeof *p->s);
  if (!p->s)
    return RV_ENOMEM;
  for (size_t i = 0; i < nreps && p->ns < RV_REPORT_REPLICAS_MAX; i++) {
    const json_t *r = json_array_get(reps, i);
    series *s = &p->s[p->ns++];
    s->name = str_or(r, "name", "?");
    s->samples = json_object_get(r, "samples");
    size_t n = json_array_size(s->samples);
    if (n > RV_REPORT_SAMPLES_MAX) {
      notice(p, "replica %.*s has %zu samples: only the last %d are drawn", 80, s->name, n,
             RV_REPORT_SAMPLES_MAX);
      s->first = n - RV_REPORT_SAMPLES_MAX;
      s->n = RV_REPORT_SAMPLES_MAX;
    } else {
      s->n = n;
    }
  }

  /* markers */
  const json_t *marks = json_object_get(model, "markers");
  size_t nmarks = json_array_size(marks);
  if (nmarks > RV_REPORT_MARKERS_MAX)
    notice(p, "%zu markers in the input: only the first %d are drawn", nmarks,
           RV_REPORT_MARKERS_MAX);
  p->m = calloc(nmarks ? nmarks : 1, sizeof *p->m);
  if (!p->m)
    return RV_ENOMEM;
  for (size_t i = 0; i < nmarks && i < RV_REPORT_MARKERS_MAX; i++) {
    const json_t *o = json_array_get(marks, i);
    int64_t t;
    if (!time_of(o, &t))
      continue;
    p->m[p->nm++] = (marker){.t_ms = t, .label = str_or(o, "label", "")};
  }

  /* the shared time axis, and the samples' usual spacing (the smallest positive one) */
  int64_t lo = INT64_MAX, hi = INT64_MIN, step = INT64_MAX;
  for (size_t i = 0; i < p->ns; i++) {
    int64_t prev = -1;
    for (size_t k = 0; k < p->s[i].n; k++) {
      int64_t t;
      if (!time_of(json_array_get(p->s[i].samples, p->s[i].first + k), &t))
        continue;
      lo = t < lo ? t : lo;
      hi = t > hi ? t : hi;
      if (prev >= 0 && t > prev && t - prev < step)
        step = t - prev;
      prev = t;
    }
  }
  for (size_t i = 0; i < p->nm; i++) {
    lo = p->m[i].t_ms < lo ? p->m[i].t_ms : lo;
    hi = p->m[i].t_ms > hi ? p->m[i].t_ms : hi;
  }
  if (lo <= hi) {
    p->have_time = true;
    p->t0 = lo;
    p->t1 = hi > lo ? hi : lo + 1000;
  }
  p->interval_ms = step == INT64_MAX ? 1000 : step;

  /* diagnosis */
  const json_t *d = json_object_get(model, "diagnosis");
  if (json_is_object(d)) {
    p->have_diag = true;
    p->diag_text = str_or(d, "text", "");
    p->diag_len = strlen(p->diag_text);
    if (p->diag_len > RV_REPORT_TEXT_MAX)
      notice(p, "the diagnosis has %zu bytes: only the first %d are shown", p->diag_len,
             RV_REPORT_TEXT_MAX);
    const json_t *h = json_object_get(d, "healthy");
    p->healthy = json_is_boolean(h) ? json_is_true(h) : -1;
  }

  /* graph */
  const json_t *graph = json_object_get(model, "graph");
  const json_t *nodes = json_object_get(graph, "nodes"), *edges = json_object_get(graph, "edges");
  size_t nn = json_array_size(nodes), ne = json_array_size(edges);
  p->have_graph = json_is_object(graph);
  json_int_t omitted = json_integer_value(json_object_get(graph, "omitted_nodes"));
  if (omitted > 0)
    notice(p, "the graph shows the cycles and their neighbours: %lld more waiting threads and locks "
              "are counted in the diagnosis but not drawn", (long long)omitted);
  if (nn > RV_REPORT_NODES_MAX)
    notice(p, "%zu graph nodes in the input: only the first %d are drawn", nn,
           RV_REPORT_NODES_MAX);
  p->nodes = calloc(nn ? nn : 1, sizeof *p->nodes);
  p->edges = calloc(ne ? ne : 1, sizeof *p->edges);
  if (!p->nodes || !p->edges)
    return RV_ENOMEM;
  size_t dup = 0, lost_groups = 0, lost_edges = 0, dangling = 0;
  for (size_t i = 0; i < nn && i < RV_REPORT_NODES_MAX; i++) {
    const json_t *o = json_array_get(nodes, i);
    const char *id = json_string_value(json_object_get(o, "id"));
    if (!id)
      continue;
    bool seen = false;
    for (size_t k = 0; k < p->nnodes && !seen; k++)
      seen = strcmp(p->nodes[k].id, id) == 0;
    if (seen) {
      dup++;
      continue;
    }
    const char *grp = str_or(o, "group", "");
    size_t gi = 0;
    while (gi < p->ngroups && strcmp(p->groups[gi], grp) != 0)
      gi++;
    if (gi == p->ngroups) {
      if (p->ngroups == RV_REPORT_GROUPS_MAX) {
        lost_groups++;
        continue;
      }
      p->groups[p->ngroups++] = grp;
    }
    p->nodes[p->nnodes++] = (gnode){.id = id,
                                    .label = str_or(o, "label", id),
                                    .kind = str_or(o, "kind", ""),
                                    .group = gi,
                                    .row = p->rows[gi]++,
                                    .in_cycle = json_is_true(json_object_get(o, "in_cycle"))};
  }
  if (dup)
    notice(p, "%zu graph nodes repeat an earlier id: left out", dup);
  if (lost_groups)
    notice(p, "more than %d groups in the graph: %zu nodes of the further groups are left out",
           RV_REPORT_GROUPS_MAX, lost_groups);
  for (size_t i = 0; i < ne; i++) {
    const json_t *o = json_array_get(edges, i);
    const char *from = json_string_value(json_object_get(o, "from"));
    const char *to = json_string_value(json_object_get(o, "to"));
    size_t a = p->nnodes, b = p->nnodes;
    for (size_t k = 0; k < p->nnodes && from && to; k++) {
      if (strcmp(p->nodes[k].id, from) == 0)
        a = k;
      if (strcmp(p->nodes[k].id, to) == 0)
        b = k;
    }
    if (a == p->nnodes || b == p->nnodes) {
      dangling++;
      continue;
    }
    if (p->nedges == RV_REPORT_EDGES_MAX) {
      lost_edges++;
      continue;
    }
    p->edges[p->nedges++] = (gedge){.from = a, .to = b, .label = str_or(o, "label", "")};
  }
  if (lost_edges)
    notice(p, "more than %d graph edges: %zu are left out", RV_REPORT_EDGES_MAX, lost_edges);
  if (dangling)
    notice(p, "%zu graph edges name a node that is not drawn: left out", dangling);
  return RV_OK;
}

/* ---- the page ------------------------------------------------------------------------------ */

static const char css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:20px 28px;color:#212529;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}"
    ".meta{color:#6c757d;margin:0 0 10px}"
    ".truncated{background:#fff3bf;border-left:4px solid #f59f00;padding:4px 8px;margin:4px 0}"
    ".legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:8px 0}"
    ".legend span{display:inline-flex;align-items:center;gap:6px}"
    ".legend i{display:inline-block;width:22px;height:4px;border-radius:2px}"
    ".charts{display:flex;flex-wrap:wrap;gap:14px}"
    "svg.chart{border:1px solid #dee2e6;border-radius:4px;background:#fff}"
    "svg text{font:11px system-ui,sans-serif;fill:#495057}"
    "svg .title{font-size:13px;font-weight:600;fill:#212529}"
    "svg .grid{stroke:#e9ecef;stroke-width:1}svg .axis{stroke:#adb5bd;stroke-width:1}"
    "svg .series{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}"
    "svg .marker{stroke:#c92a2a;stroke-width:1;stroke-dasharray:4 3}"
    "svg .marker-num{fill:#c92a2a;font-size:10px}"
    "svg .nodata{fill:#adb5bd;font-size:13px}"
    "table{border-collapse:collapse;margin:4px 0}"
    "td,th{border:1px solid #dee2e6;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child,td.l{text-align:left}td:first-child{white-space:nowrap}"
    "th{background:#f1f3f5}"
    "#diagnosis pre{background:#f8f9fa;border:1px solid #dee2e6;padding:10px 12px;"
    "white-space:pre-wrap;overflow-wrap:anywhere;margin:0}"
    "#diagnosis.unhealthy pre{border-left:5px solid #c92a2a}"
    "#diagnosis.healthy pre{border-left:5px solid #2f9e44}"
    ".verdict-unhealthy{color:#c92a2a}.verdict-healthy{color:#2f9e44}"
    "#waitgraph{border:1px solid #dee2e6;border-radius:4px;background:#fff}"
    "#waitgraph .node rect{stroke:#868e96;stroke-width:1}"
    "#waitgraph .node.in-cycle rect{stroke:#c92a2a;stroke-width:2.5}"
    "#waitgraph .kind-thread rect{fill:#e7f0ff}#waitgraph .kind-lock rect{fill:#fff4e0}"
    "#waitgraph .kind-dlock rect{fill:#fde2c8}#waitgraph .kind-message rect{fill:#ebfbee}"
    "#waitgraph .kind-process rect{fill:#f1f3f5}"
    "#waitgraph .node.in-cycle rect{fill:#fff0f0}"
    "#waitgraph .node .kind{fill:#868e96;font-size:10px}"
    "#waitgraph .edge path{fill:none;stroke:#868e96;stroke-width:1.3}"
    "#waitgraph .edge.in-cycle path{stroke:#c92a2a;stroke-width:2}"
    "#waitgraph .edge text{font-size:10px;paint-order:stroke;stroke:#fff;stroke-width:3px}"
    "#waitgraph .group{font-size:13px;font-weight:600;fill:#212529}"
    ".note{color:#6c757d}";

static double x_of(const page *p, int64_t t) {
  double w = CH_W - CH_LEFT - CH_RIGHT;
  return CH_LEFT + w * (double)(t - p->t0) / (double)(p->t1 - p->t0);
}

static const char *color_of(size_t i) { return palette[i % NPALETTE]; }
static const char *dash_of(size_t i) { return i >= NPALETTE ? " stroke-dasharray=\"7 3\"" : ""; }

typedef struct endlabel {
  double y;
  size_t series;
} endlabel;

static int cmp_endlabel(const void *a, const void *b) {
  double d = ((const endlabel *)a)->y - ((const endlabel *)b)->y;
  return d < 0 ? -1 : d > 0;
}

static void x_ticks(FILE *f, const page *p, double y_axis) {
  static const int64_t steps_s[] = {1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400};
  int64_t span_s = (p->t1 - p->t0) / 1000 + 1, step = steps_s[0];
  for (size_t i = 0; i < sizeof steps_s / sizeof steps_s[0]; i++) {
    step = steps_s[i];
    if (span_s / step <= 8)
      break;
  }
  for (int64_t s = 0, n = 0; s * 1000 <= p->t1 - p->t0 && n < 20; s += step, n++) {
    double x = x_of(p, p->t0 + s * 1000);
    fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\"/>", x, CH_TOP,
            x, y_axis);
    if (step >= 120)
      fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">+%lldm</text>", x,
              y_axis + 15, (long long)(s / 60));
    else
      fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">+%llds</text>", x,
              y_axis + 15, (long long)s);
  }
}

static void chart(page *p, size_t mi) {
  FILE *f = p->f;
  const metric_def *m = &metrics[mi];
  double plot_bottom = CH_H - CH_BOTTOM, plot_h = plot_bottom - CH_TOP;
  double ymax = 0;
  for (size_t i = 0; i < p->ns; i++)
    for (size_t k = 0; k < p->s[i].n; k++) {
      double v;
      if (num(json_array_get(p->s[i].samples, p->s[i].first + k), m->key, &v) && v > ymax)
        ymax = v;
    }
  ymax = nice_ceil(ymax);
  fprintf(f,
          "<svg class=\"chart\" id=\"chart-%s\" data-metric=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" "
          "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">",
          m->key, m->key, CH_W, CH_H, CH_W, CH_H);
  fprintf(f, "<text class=\"title\" x=\"%d\" y=\"16\">", CH_LEFT);
  esc(f, m->title, RV_REPORT_LABEL_MAX);
  fprintf(f, "</text>");
  /* y grid: 0, half, max */
  for (int k = 0; k <= 2; k++) {
    double v = ymax * k / 2, y = plot_bottom - plot_h * k / 2;
    char lab[32];
    fmt_val(lab, sizeof lab, v);
    fprintf(f,
            "<line class=\"%s\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>"
            "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>",
            k == 0 ? "axis" : "grid", CH_LEFT, y, CH_W - CH_RIGHT, y, CH_LEFT - 6, y + 4, lab);
  }
  if (!p->have_time) {
    fprintf(f, "<text class=\"nodata\" x=\"%d\" y=\"%.1f\" text-anchor=\"middle\">no samples</text>",
            (CH_W - CH_RIGHT + CH_LEFT) / 2, CH_TOP + plot_h / 2);
  } else {
    x_ticks(f, p, plot_bottom);
    /* markers: a dashed line each; a number above it when there is room */
    double last_x = -100;
    for (size_t i = 0; i < p->nm; i++) {
      double x = x_of(p, p->m[i].t_ms);
      fprintf(f, "<line class=\"marker\" data-label=\"");
      esc_attr(f, p->m[i].label);
      fprintf(f, "\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\"><title>", x, CH_TOP - 6, x,
              plot_bottom);
      esc(f, p->m[i].label, RV_REPORT_LABEL_MAX);
      fprintf(f, "</title></line>");
      if (x - last_x >= 14) {
        fprintf(f, "<text class=\"marker-num\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%zu</text>",
                x, CH_TOP - 8, i + 1);
        last_x = x;
      }
    }
  }
  /* one line per replica; its name at its last point */
  endlabel *ends = calloc(p->ns ? p->ns : 1, sizeof *ends);
  size_t nends = 0;
  for (size_t i = 0; i < p->ns; i++) {
    const series *s = &p->s[i];
    fprintf(f, "<path class=\"series\" data-replica=\"");
    esc_attr(f, s->name);
    fprintf(f, "\" stroke=\"%s\"%s", color_of(i), dash_of(i));
    bool any = false, pen = false;
    int64_t prev_t = 0;
    double last_y = 0;
    for (size_t k = 0; k < s->n && p->have_time; k++) {
      const json_t *o = json_array_get(s->samples, s->first + k);
      int64_t t;
      double v;
      if (!time_of(o, &t) || !num(o, m->key, &v)) {
        pen = false;
        continue;
      }
      if (pen && t - prev_t > GAP_INTERVALS * p->interval_ms)
        pen = false;
      double x = x_of(p, t), y = plot_bottom - plot_h * (v < 0 ? 0 : v > ymax ? ymax : v) / ymax;
      /* a new piece starts with a zero-length segment, so that a lone point shows (round caps) */
      fprintf(f, pen ? "%sL%.1f %.1f" : "%sM%.1f %.1fh0", any ? " " : " d=\"", x, y);
      any = pen = true;
      prev_t = t;
      last_y = y;
    }
    if (any)
      fputc('"', f);
    fprintf(f, "><title>");
    esc(f, s->name, RV_REPORT_LABEL_MAX);
    fprintf(f, "</title></path>");
    if (any && ends)
      ends[nends++] = (endlabel){.y = last_y, .series = i};
  }
  if (ends && nends) {
    qsort(ends, nends, sizeof *ends, cmp_endlabel);
    for (size_t k = 1; k < nends; k++)
      if (ends[k].y - ends[k - 1].y < CH_LABEL_GAP)
        ends[k].y = ends[k - 1].y + CH_LABEL_GAP;
    /* pushed below the plot: shift the whole stack up */
    double over = ends[nends - 1].y - (plot_bottom + 4);
    for (size_t k = 0; k < nends && over > 0; k++)
      ends[k].y -= over;
    for (size_t k = 0; k < nends; k++) {
      fprintf(f, "<text class=\"end-label\" x=\"%d\" y=\"%.1f\" style=\"fill:%s\">",
              CH_W - CH_RIGHT + 6, ends[k].y + 4, color_of(ends[k].series));
      esc(f, p->s[ends[k].series].name, 18);
      fprintf(f, "</text>");
    }
  }
  free(ends);
  fprintf(f, "</svg>\n");
}

static void legend(page *p) {
  FILE *f = p->f;
  fprintf(f, "<div class=\"legend\" id=\"legend\">");
  for (size_t i = 0; i < p->ns; i++) {
    fprintf(f, "<span data-replica=\"");
    esc_attr(f, p->s[i].name);
    fprintf(f, "\"><i style=\"background:%s\"></i>", color_of(i));
    esc(f, p->s[i].name, RV_REPORT_LABEL_MAX);
    fprintf(f, "%s</span>", i >= NPALETTE ? " (dashed)" : "");
  }
  fprintf(f, "</div>\n");
}

static void markers_table(page *p) {
  FILE *f = p->f;
  fprintf(f, "<h2>Markers</h2>\n<table id=\"markers\"><tr><th>#</th><th>time</th><th>since start</th>"
             "<th>what</th></tr>\n");
  for (size_t i = 0; i < p->nm; i++) {
    char when[64];
    fmt_utc(when, sizeof when, p->m[i].t_ms);
    fprintf(f, "<tr><td>%zu</td><td class=\"l\">%s</td><td>+%.1fs</td><td class=\"l\">", i + 1,
            when, (double)(p->m[i].t_ms - p->t0) / 1000.0);
    esc(f, p->m[i].label, RV_REPORT_LABEL_MAX);
    fprintf(f, "</td></tr>\n");
  }
  fprintf(f, "</table>\n");
}

static void last_table(page *p) {
  FILE *f = p->f;
  fprintf(f, "<h2>Per replica, last sample</h2>\n<table id=\"last\"><tr><th>replica</th><th>at</th>");
  for (size_t k = 0; k < NMETRICS; k++)
    fprintf(f, "<th>%s</th>", metrics[k].title);
  for (size_t k = 0; k < NCOUNTERS; k++)
    fprintf(f, "<th>%s</th>", counters[k].title);
  fprintf(f, "</tr>\n");
  for (size_t i = 0; i < p->ns; i++) {
    const series *s = &p->s[i];
    const json_t *o = s->n ? json_array_get(s->samples, s->first + s->n - 1) : NULL;
    fprintf(f, "<tr><td><i style=\"display:inline-block;width:10px;height:10px;background:%s\"></i> ",
            color_of(i));
    esc(f, s->name, RV_REPORT_LABEL_MAX);
    int64_t t;
    if (time_of(o, &t) && p->have_time)
      fprintf(f, "</td><td>+%.0fs</td>", (double)(t - p->t0) / 1000.0);
    else
      fprintf(f, "</td><td>no samples</td>");
    for (size_t k = 0; k < NMETRICS + NCOUNTERS; k++) {
      double v;
      const char *key = k < NMETRICS ? metrics[k].key : counters[k - NMETRICS].key;
      char buf[32] = "-";
      if (num(o, key, &v))
        snprintf(buf, sizeof buf, "%.6g", v);
      fprintf(f, "<td>%s</td>", buf);
    }
    fprintf(f, "</tr>\n");
  }
  fprintf(f, "</table>\n");
}

static void diagnosis(page *p) {
  FILE *f = p->f;
  const char *cls = p->healthy == 1 ? "healthy" : p->healthy == 0 ? "unhealthy" : "unknown";
  fprintf(f, "<section id=\"diagnosis\" class=\"%s\"><h2>Diagnosis%s</h2><pre>", cls,
          p->healthy == 1   ? ": <span class=\"verdict-healthy\">healthy</span>"
          : p->healthy == 0 ? ": <span class=\"verdict-unhealthy\">unhealthy</span>"
                            : "");
  esc_n(f, p->diag_text, p->diag_len, RV_REPORT_TEXT_MAX, false);
  fprintf(f, "</pre></section>\n");
}

/* A node box's edges. */
static double node_x(const gnode *n) { return G_LEFT + (double)n->group * G_COL_W; }
static double node_y(const gnode *n) { return G_TOP + (double)n->row * G_ROW_H; }

static void graph(page *p) {
  FILE *f = p->f;
  size_t maxrows = 0;
  for (size_t g = 0; g < p->ngroups; g++)
    maxrows = p->rows[g] > maxrows ? p->rows[g] : maxrows;
  int width = G_LEFT * 2 + (int)(p->ngroups ? p->ngroups : 1) * G_COL_W;
  int height = G_TOP + (int)maxrows * G_ROW_H + 20;
  fprintf(f, "<h2>Wait-for graph</h2>\n");
  if (!p->nnodes) {
    fprintf(f, "<p class=\"note\">no nodes</p>\n");
    return;
  }
  fprintf(f,
          "<svg id=\"waitgraph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "viewBox=\"0 0 %d %d\" role=\"img\"><defs>"
          "<marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" "
          "markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"#868e96\"/></marker>"
          "<marker id=\"arrow-cycle\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" "
          "markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"#c92a2a\"/></marker>"
          "</defs>\n",
          width, height, width, height);
  for (size_t g = 0; g < p->ngroups; g++) {
    fprintf(f, "<text class=\"group\" x=\"%.1f\" y=\"%d\">", G_LEFT + (double)g * G_COL_W,
            G_TOP - 16);
    esc(f, p->groups[g][0] ? p->groups[g] : "(no group)", 40);
    fprintf(f, "</text>");
  }
  fputc('\n', f);
  /* edges under the nodes */
  for (size_t i = 0; i < p->nedges; i++) {
    const gnode *a = &p->nodes[p->edges[i].from], *b = &p->nodes[p->edges[i].to];
    bool cyc = a->in_cycle && b->in_cycle;
    double ax = node_x(a), ay = node_y(a) + G_BOX_H / 2.0, bx = node_x(b), by = node_y(b) + G_BOX_H / 2.0;
    double lx, ly;
    char d[160];
    if (a == b) { /* a loop on the right side */
      double x = ax + G_BOX_W;
      snprintf(d, sizeof d, "M%.1f %.1fC%.1f %.1f %.1f %.1f %.1f %.1f", x, ay - 8, x + 40, ay - 30,
               x + 40, ay + 30, x, ay + 8);
      lx = x + 34;
      ly = ay;
    } else if (b->group > a->group) {
      snprintf(d, sizeof d, "M%.1f %.1fL%.1f %.1f", ax + G_BOX_W, ay, bx, by);
      lx = (ax + G_BOX_W + bx) / 2;
      ly = (ay + by) / 2 - 4;
    } else if (b->group < a->group) {
      snprintf(d, sizeof d, "M%.1f %.1fL%.1f %.1f", ax, ay, bx + G_BOX_W, by);
      lx = (ax + bx + G_BOX_W) / 2;
      ly = (ay + by) / 2 - 4;
    } else { /* same column: a curve out to the right, further for rows far apart */
      double rows = a->row > b->row ? (double)(a->row - b->row) : (double)(b->row - a->row);
      double bulge = 30 + rows * 8;
      bulge = bulge > 75 ? 75 : bulge;
      double x = ax + G_BOX_W;
      snprintf(d, sizeof d, "M%.1f %.1fC%.1f %.1f %.1f %.1f %.1f %.1f", x, ay, x + bulge, ay,
               x + bulge, by, x, by);
      lx = x + bulge * 0.75 + 2;
      ly = (ay + by) / 2;
    }
    fprintf(f, "<g class=\"edge%s\" data-from=\"", cyc ? " in-cycle" : "");
    esc_attr(f, a->id);
    fprintf(f, "\" data-to=\"");
    esc_attr(f, b->id);
    fprintf(f, "\"><path d=\"%s\" marker-end=\"url(#%s)\"/>", d, cyc ? "arrow-cycle" : "arrow");
    if (p->edges[i].label[0]) {
      fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", lx, ly);
      esc(f, p->edges[i].label, G_EDGE_SHOWN);
      fprintf(f, "</text>");
    }
    fprintf(f, "<title>");
    esc(f, a->label, RV_REPORT_LABEL_MAX);
    fprintf(f, " \xE2\x86\x92 ");
    esc(f, b->label, RV_REPORT_LABEL_MAX);
    fprintf(f, ": ");
    esc(f, p->edges[i].label, RV_REPORT_LABEL_MAX);
    fprintf(f, "</title></g>\n");
  }
  for (size_t i = 0; i < p->nnodes; i++) {
    const gnode *n = &p->nodes[i];
    /* kind goes into a class name: only known kinds */
    static const char *const kinds[] = {"thread", "lock", "dlock", "message", "process"};
    const char *kind = "other";
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
      if (strcmp(n->kind, kinds[k]) == 0)
        kind = kinds[k];
    double x = node_x(n), y = node_y(n);
    fprintf(f, "<g class=\"node kind-%s%s\" data-id=\"", kind, n->in_cycle ? " in-cycle" : "");
    esc_attr(f, n->id);
    fprintf(f, "\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" rx=\"%d\"/>", x, y,
            G_BOX_W, G_BOX_H, strcmp(kind, "thread") == 0 ? 3 : 12);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", x + 8, y + 17);
    esc(f, n->label, G_SHOWN);
    fprintf(f, "</text><text class=\"kind\" x=\"%.1f\" y=\"%.1f\">", x + 8, y + 32);
    esc(f, n->kind[0] ? n->kind : "node", 20);
    fprintf(f, "%s</text><title>", n->in_cycle ? " \xC2\xB7 in the cycle" : "");
    esc(f, n->kind, 20);
    fprintf(f, " ");
    esc(f, n->label, RV_REPORT_LABEL_MAX);
    fprintf(f, " (");
    esc(f, n->id, RV_REPORT_LABEL_MAX);
    fprintf(f, ")</title></g>\n");
  }
  fprintf(f, "</svg>\n");
}

static void write_page(page *p) {
  FILE *f = p->f;
  fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             "<meta name=\"viewport\" content=\"width=device-width\">"
             "<link rel=\"icon\" href=\"data:,\"><title>");
  esc(f, p->title, RV_REPORT_LABEL_MAX);
  fprintf(f, "</title><style>%s</style></head>\n<body>\n<h1>", css);
  esc(f, p->title, RV_REPORT_LABEL_MAX);
  char gen[64], from[64], to[64];
  fmt_utc(gen, sizeof gen, p->generated_ms);
  fprintf(f, "</h1>\n<p class=\"meta\">generated %s", gen);
  if (p->have_time) {
    fmt_utc(from, sizeof from, p->t0);
    fmt_utc(to, sizeof to, p->t1);
    fprintf(f, "; time axis from %s (+0s) to %s (+%.0fs); %zu replicas", from, to,
            (double)(p->t1 - p->t0) / 1000.0, p->ns);
  }
  fprintf(f, "</p>\n");
  for (size_t i = 0; i < p->nnotices; i++) {
    fprintf(f, "<p class=\"truncated\">");
    esc(f, p->notices[i], sizeof p->notices[0]);
    fprintf(f, "</p>\n");
  }
  if (p->ns) {
    fprintf(f, "<h2>Per replica</h2>\n");
    legend(p);
    fprintf(f, "<div class=\"charts\">\n");
    for (size_t i = 0; i < NMETRICS; i++)
      chart(p, i);
    fprintf(f, "</div>\n");
    if (p->nm)
      fprintf(f, "<p class=\"note\">Dashed red lines: the markers below, by number.</p>\n");
  }
  if (p->nm)
    markers_table(p);
  if (p->ns)
    last_table(p);
  if (p->have_diag)
    diagnosis(p);
  if (p->have_graph)
    graph(p);
  fprintf(f, "</body></html>\n");
}

int rv_report_write(const char *path, const json_t *model, char *why, size_t whylen) {
  if (!path || !*path || !model) {
    snprintf(why, whylen, "no path or no model");
    return RV_EINVAL;
  }
  page p = {0};
  int rc = prepare(&p, model);
  if (rc != RV_OK) {
    snprintf(why, whylen, "out of memory");
    goto out;
  }
  /* path.PID.tmp: two writers of one path do not share a temp file */
  size_t tcap = strlen(path) + 32;
  char *tmp = malloc(tcap);
  if (!tmp) {
    snprintf(why, whylen, "out of memory");
    rc = RV_ENOMEM;
    goto out;
  }
  snprintf(tmp, tcap, "%s.%d.tmp", path, (int)rv_getpid());
  p.f = fopen(tmp, "w");
  if (!p.f) {
    snprintf(why, whylen, "cannot create %s: %m", tmp);
    free(tmp);
    rc = RV_EIO;
    goto out;
  }
  write_page(&p);
  bool bad = ferror(p.f) != 0;
  if (fclose(p.f) != 0 || bad) {
    snprintf(why, whylen, "cannot write %s: %m", tmp);
    remove(tmp);
    rc = RV_EIO;
  } else if (rename(tmp, path) != 0) {
    snprintf(why, whylen, "cannot rename %s to %s: %m", tmp, path);
    remove(tmp);
    rc = RV_EIO;
  }
  free(tmp);
out:
  free(p.s);
  free(p.m);
  free(p.nodes);
  free(p.edges);
  return rc;
}
