/*
 * ravel unravel: join every process's thread registry (threads.json) with
 * coord's lock table and the queue's per-client stats into one wait-for
 * graph, find its cycles and the trees of waiters hanging off them, and
 * explain them in plain language.  The input is a collection directory in
 * the layout of diag/grab.h ("ravel-grab/1"); the live mode of the command
 * collects one into a temporary directory first, so that a live system and
 * its archive are diagnosed by the same code over the same files.
 *
 * The graph (nodes and edges, see docs/unravel.md):
 *   thread  T waits for a mutex / to write-lock L  -> lock L -> every holder
 *   thread  T waits to read-lock L                 -> lock L -> the write holder
 *                                                  -> every thread queued to
 *                                                     write-lock L (writers first)
 *   thread  T waits "dlock X"                      -> dlock X -> the holder thread,
 *           found by the pid and thread id of coord's holder description
 *   message node of a replica                      -> the replica's process node
 * A strongly connected component with more than one node (or a self edge)
 * is a deadlock; everything that reaches one is blocked behind it.
 */
#ifndef RAVEL_DIAG_UNRAVEL_H
#define RAVEL_DIAG_UNRAVEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RV_UNRAVEL_DEFAULT_HOLD_MS 5000
#define RV_UNRAVEL_DEFAULT_WAIT_MS 5000

/* Live: the gap before the capture that confirms a deadlock (ravel unravel --confirm-ms). */
#define RV_UNRAVEL_CONFIRM_MS 300

typedef struct rv_unravel_opts {
  int64_t hold_ms; /* a lock held longer than this with waiters is a finding (0: default) */
  int64_t wait_ms; /* a thread waiting longer than this for a lock is a finding (0: default) */
  /*
   * An earlier collection of the same system (NULL: none).  A thread whose wait is not
   * the very one it had there (same process, kind, object and start) is taken as
   * moving: its wait makes no edge, so only deadlocks that stood across both captures
   * are named (a blocked thread's wait does not change; a passing one does).
   */
  const char *confirm_dir;
} rv_unravel_opts;

/*
 * Analyse the collection in dir.  Returns a new JSON object:
 *   {"healthy": bool, "cycles": [...], "blocked": [...], "findings": [...],
 *    "text": "the plain-text explanation",
 *    "graph": {"nodes": [{"id","label","kind","group","in_cycle"}],
 *              "edges": [{"from","to","label"}]},
 *    "stats": {"processes", "threads", "dlocks", "nodes", "edges", "analysis_ms"}}
 * or NULL (why says why) when dir is not a readable collection.
 */
json_t *rv_unravel_dir(const char *dir, const rv_unravel_opts *o, char *why, size_t whylen);

/*
 * The model of the HTML report (diag/report.h) for the collection in dir and
 * the result of rv_unravel_dir: {"title", "generated_at_ms", "replicas":
 * [{"name", "samples"}], "markers": [{"t_ms", "label"}], "diagnosis":
 * {"text", "healthy"}, "graph"}.  Returns a new object.
 */
json_t *rv_unravel_report_model(const char *dir, const json_t *result);

/*
 * The part of a result's graph worth drawing: all of it when it has at most
 * max_nodes nodes; else the nodes in cycles, then the nodes one edge away
 * from them, up to max_nodes, with the edges among those, and
 * "omitted_nodes" saying how many were left out.  Returns a new object.
 */
#define RV_UNRAVEL_FOCUS_NODES_MAX 120
json_t *rv_unravel_graph_focus(const json_t *graph, size_t max_nodes);

#endif
