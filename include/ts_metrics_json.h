/* Service metrics' JSON bodies (C core): /health, /ready and the status page's data.
 * Any thread; each copies the store's snapshot (ts_metrics.h) and formats outside its lock. */
#ifndef TS_METRICS_JSON_H
#define TS_METRICS_JSON_H
#include "ts_buf.h"
#include "ts_metrics.h"

/* The return value is the HTTP status (200 or 503). */
int ts_metrics_render_health(ts_metrics *m, ts_buf *out);
int ts_metrics_render_ready(ts_metrics *m, ts_buf *out);
void ts_metrics_render_status(ts_metrics *m, ts_buf *out);
#endif
