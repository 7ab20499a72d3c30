/* The daemon's InfluxDB targets as the configuration asks for them (C core):
 * influxdb.mode = "failover" is one writer over every URL (target and spool
 * consumer "influx"), "mirror" one writer per URL ("influx:<URL without
 * credentials>"). A SIGHUP that changes the list or the mode is applied as one
 * transaction: kept targets are reconfigured, new ones made (their spool
 * position at the oldest record the spool holds), removed ones retired: they
 * leave the list at once, send what they hold until influxdb's shutdown
 * timeout passes, then close (listed again before that, they stay). */
#ifndef TS_INFLUX_SET_H
#define TS_INFLUX_SET_H
#include "ts_config.h"
#include "ts_target.h"
#include "ts_writer.h"

typedef struct ts_influx_set ts_influx_set;
/* Adds its targets to `targets` (not owned; nor are spool and pool). */
ts_influx_set *ts_influx_set_new(ts_loop *loop, ts_targets *targets, ts_spool *spool, ts_batch_pool *pool);
/* Start (reload 0): makes the targets. Reload: applies s as above; returns
 * 0, or -1 when the change cannot be applied (logged; the running set stays
 * as it was, credentials and limits reloaded). */
int ts_influx_set_apply(ts_influx_set *x, const ts_settings *s, int reload);
/* The first InfluxDB target's writer (the Lua API's servers), NULL if none. */
ts_writer *ts_influx_set_first(const ts_influx_set *x);
/* Targets being retired, not in the list any more. */
int ts_influx_set_retiring(const ts_influx_set *x);
/* From the loop: retiring targets that hold nothing more (or whose time is
 * up) are drained and closed. */
void ts_influx_set_step(ts_influx_set *x);
/* Shutdown: the retiring targets drained to deadline and closed; returns the
 * points they could not write. Then frees x. NULL ok. */
size_t ts_influx_set_free(ts_influx_set *x, int64_t deadline_mono_ms);

#endif
