/*
 * The HTML report: one self-contained page (inline CSS and SVG, no scripts,
 * nothing fetched at view time) that shows a run of a ravel system per
 * replica, so that the one broken replica is not averaged away.
 *
 * The page, top to bottom: the title and when it was made; a notice for
 * every input bound that was hit; the legend (one colour per replica); one
 * small chart per metric (rate, handler threads, threads blocked on the
 * client cache, distributed-lock acquisitions in progress, in flight, held
 * slots), each with one line per replica and that replica's name at the
 * line's end, all on one shared time axis, with a dashed vertical line per
 * marker (config changes); the markers as a table; a per-replica table of
 * the last sample (with the cumulative timeouts, late FINs and rebuilds);
 * the diagnosis text in a <pre>; the wait-for graph as SVG (one column per
 * group, i.e. per process; nodes as boxes, edges as labelled arrows; nodes
 * in a cycle and the edges between them in red).
 *
 * Stable markup for tests and tools: each chart is
 * <svg class="chart" id="chart-METRIC" data-metric="METRIC">, each replica's
 * line in it <path class="series" data-replica="NAME">, each marker line
 * <line class="marker" data-label="LABEL">, the diagnosis
 * <section id="diagnosis" class="healthy|unhealthy"><pre>, the graph
 * <svg id="waitgraph"> with <g class="node[ in-cycle]" data-id="ID"> and
 * <g class="edge" data-from="ID" data-to="ID">, each notice
 * <p class="truncated">.  Every text is HTML-escaped.
 *
 * The model (jansson; every key is optional, a wrong type counts as missing):
 *   {"title": str, "generated_at_ms": int (unix ms),
 *    "replicas": [{"name": "billing/1",
 *                  "samples": [{"t_ms": int, "rate": num, "handler_threads": num,
 *                               "cache_waiters": num, "dlock_waits": num,
 *                               "in_flight": num, "held": num, "timeouts": num,
 *                               "late_fins": num, "rebuilds": num}]}],
 *    "markers": [{"t_ms": int, "label": str}],
 *    "diagnosis": {"text": str, "healthy": bool},
 *    "graph": {"nodes": [{"id": str, "label": str,
 *                         "kind": "thread|lock|dlock|message|process",
 *                         "group": str, "in_cycle": bool}],
 *              "edges": [{"from": id, "to": id, "label": str}]}}
 * The samples are GET /debug/history's (svc.h).  A sample without a metric,
 * or with a non-number, leaves a gap in that metric's line; so does a gap
 * of more than three intervals between samples.
 */
#ifndef RAVEL_DIAG_REPORT_H
#define RAVEL_DIAG_REPORT_H

#include <jansson.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bounds on the input; past each, the rest is left out and the page says so. */
#define RV_REPORT_REPLICAS_MAX 16    /* replicas drawn (the first ones) */
#define RV_REPORT_SAMPLES_MAX 3600   /* samples per replica (the last ones: an hour at 1/s) */
#define RV_REPORT_MARKERS_MAX 100    /* markers (the first ones) */
#define RV_REPORT_NODES_MAX 200      /* graph nodes (the first ones) */
#define RV_REPORT_EDGES_MAX 400      /* graph edges (the first ones between drawn nodes) */
#define RV_REPORT_GROUPS_MAX 24      /* graph columns; nodes of further groups are left out */
#define RV_REPORT_TEXT_MAX (256 * 1024) /* bytes of diagnosis text */
#define RV_REPORT_LABEL_MAX 200      /* bytes of any one name or label */

/*
 * Write the page for model to path (through path.PID.tmp and a rename, so a
 * reader never sees half a page).  0, or RV_EINVAL (NULL path or model) /
 * RV_EIO / RV_ENOMEM with why filled in.
 */
int rv_report_write(const char *path, const json_t *model, char *why, size_t whylen);

#ifdef __cplusplus
}
#endif
#endif
