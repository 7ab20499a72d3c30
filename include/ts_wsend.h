/* The writer's InfluxDB 1.x side (C core): sending a chunk as a /write
 * request, classifying its answer (acknowledge, count rejected points, drop,
 * or retry with backoff and host failover), and the /ping probes of recovery
 * and failback. Internal to the writer (see ts_wqueue.h). */
#ifndef TS_WSEND_H
#define TS_WSEND_H
#include "ts_wqueue.h"

/* Returns 0, or -1 if the request could not be started (c went to retry). */
int ts_wsend_chunk(ts_writer *w, ts_wqueue_chunk *c);
/* Arms the probe timer when every server failed (a /ping a second) or after
 * a failover (the earlier servers pinged every 10 s). */
void ts_wsend_arm_probe(ts_writer *w);
/* At ts_writer_free: cancels the probe timer, orphans a probe in flight. */
void ts_wsend_free(ts_writer *w);

#endif
