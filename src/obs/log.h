/*
 * log: structured log lines in logfmt, one write(2) per line.
 *
 *     ts=2026-11-27T08:50:00.123Z level=warn comp=queue msg="lease expired" topic=orders attempts=3
 *
 * A logger (rv_log) is an explicit object: a file descriptor (not owned, not
 * closed), a minimum level that may change at run time, and a component
 * name.  Several loggers may share one descriptor; each line is assembled in
 * a buffer of at most RV_LOG_LINE_MAX bytes and written with one write(2),
 * so lines from different threads never interleave (on a pipe, writes up to
 * PIPE_BUF are atomic, and RV_LOG_LINE_MAX is PIPE_BUF on Linux).
 *
 * Fields.  After the message comes a printf format of space-separated
 * key=value fields, checked by the compiler like any printf format:
 *
 *     rv_log_warn(log, "lease expired", "topic=%s attempts=%d age_s=%.3f", t, n, age);
 *     rv_log_info(log, "started");
 *
 * Each value is formatted, then quoted and escaped as logfmt needs, so a %s
 * that yields `a "b" c` is written as value="a \"b\" c".  A literal space in
 * the format separates fields, which is why a value with spaces must come
 * from a conversion, not from the format's literal text.  A field without a
 * `key=` before its first conversion is written under the key `_`.  Keys
 * ts, level, comp and msg are the logger's; don't reuse them.  Supported
 * conversions: d i u o x X c s p f F e E g G a A and %%, with flags, width,
 * precision (also `*`) and length modifiers; anything else (%n, %ls) ends the
 * line with the marker field `badfmt=true`.
 *
 * Bounds.  A line longer than RV_LOG_LINE_MAX is cut inside the value that
 * overflows (never inside an escape or a UTF-8 sequence, quotes closed), the
 * remaining fields are dropped, and the line ends with `truncated=true`.
 *
 * Timestamps are UTC with milliseconds, from rv_wall_ns(), so the simulator's
 * virtual clock shows in its logs.  Logging preserves errno.
 */
#ifndef RAVEL_OBS_LOG_H
#define RAVEL_OBS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of one line including its newline (PIPE_BUF on Linux). */
#define RV_LOG_LINE_MAX 4096
/* Bytes of a component name without the NUL; longer names are cut. */
#define RV_LOG_COMPONENT_MAX 32
/* Buffer bytes for rv_log_format_ts ("2026-11-27T08:50:00.123Z" and a NUL, with room). */
#define RV_LOG_TS_MAX 32

enum rv_log_level { RV_LOG_DEBUG, RV_LOG_INFO, RV_LOG_WARN, RV_LOG_ERROR };

typedef struct rv_log rv_log;

/* NULL if fd < 0, min is not a level, or out of memory. component may be NULL. */
rv_log *rv_log_new(int fd, enum rv_log_level min, const char *component);
/* Frees the logger, never closes its descriptor; NULL is fine. */
void rv_log_free(rv_log *log);

/* Change the minimum level; safe while other threads log. */
void rv_log_set_level(rv_log *log, enum rv_log_level min);
enum rv_log_level rv_log_get_level(const rv_log *log);
/* Whether a line at level would be written: to skip costly argument preparation. */
bool rv_log_enabled(const rv_log *log, enum rv_log_level level);

/* "debug", "info", "warn" (or "warning"), "error", any case: RV_OK or RV_EINVAL. */
int rv_log_level_parse(const char *s, enum rv_log_level *out);
/* The name used in lines ("warn"); "unknown" for a value that is not a level. */
const char *rv_log_level_name(enum rv_log_level level);

/* RFC 3339 UTC with milliseconds: "2026-11-27T08:50:00.123Z". */
void rv_log_format_ts(char out[RV_LOG_TS_MAX], int64_t wall_ns);

/*
 * Write one line if level is enabled.  log may be NULL (nothing happens).
 * msg is plain text, always quoted; kv_fmt is described above.
 */
void rv_log_write(rv_log *log, enum rv_log_level level, const char *msg, const char *kv_fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rv_log_vwrite(rv_log *log, enum rv_log_level level, const char *msg, const char *kv_fmt,
                   va_list ap) __attribute__((format(printf, 4, 0)));

/*
 * rv_log_info(log, "msg") or rv_log_info(log, "msg", "k=%d", v): the format
 * is a literal, glued to a leading " " (an empty field separator) so that
 * the call without fields still passes a non-empty format.
 */
#define rv_log_debug(log, msg, ...) rv_log_write((log), RV_LOG_DEBUG, (msg), " " __VA_ARGS__)
#define rv_log_info(log, msg, ...) rv_log_write((log), RV_LOG_INFO, (msg), " " __VA_ARGS__)
#define rv_log_warn(log, msg, ...) rv_log_write((log), RV_LOG_WARN, (msg), " " __VA_ARGS__)
#define rv_log_error(log, msg, ...) rv_log_write((log), RV_LOG_ERROR, (msg), " " __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
