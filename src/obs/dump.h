/*
 * Thread dumps and lock tables, in text (for people) and JSON (for tools).
 *
 * The text dump reads like Go's goroutine dump or jstack: one block per
 * thread with its name, what it is blocked in and for how long, what it holds
 * and from where; then recursive read-lock reports; then one section per
 * deadlock naming every thread and lock in the cycle.  docs/observability.md
 * shows an example.  The JSON carries the same facts under stable keys.
 */
#ifndef RAVEL_OBS_DUMP_H
#define RAVEL_OBS_DUMP_H

#include "obs/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rv_dump_view { RV_DUMP_THREADS, RV_DUMP_LOCKS } rv_dump_view;
typedef enum rv_dump_format { RV_DUMP_TEXT, RV_DUMP_JSON } rv_dump_format;

/* Render a snapshot (and its deadlocks, may be NULL); malloc'd, NUL-terminated. */
char *rv_dump_render(const rv_snapshot *s, const rv_deadlocks *d, rv_dump_view view,
                     rv_dump_format format);
/* Snapshot the registry, find deadlocks and render: what /debug/threads serves. */
char *rv_dump(rv_registry *reg, rv_dump_view view, rv_dump_format format);

/* "5m12s", "340ms", "2h3m4s": Go's way of printing a duration, to the millisecond. */
void rv_format_duration(int64_t ns, char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
