/* metrics: the Prometheus text exposition (format 0.0.4) served at MetricsPath: hub
 * counters, LMDB commit latency and group-commit batch sizes, and a few process facts.
 * Names are prefixed zwibbler_ (process_ for the process facts); counters end in
 * _total. Thread-safe: it only reads snapshots. */
#ifndef ZW_METRICS_H
#define ZW_METRICS_H

#include <stddef.h>

struct app;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Renders every metric. Returns a malloc'ed buffer of *len bytes (not NUL-terminated
 * for the caller's purposes), or NULL when out of memory. */
char *metrics_render(const struct app *app, size_t *len);

#endif
