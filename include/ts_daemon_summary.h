/* ts_daemon_summary: the daemon's daily summary as a coroutine on its loop (C core).
 * A tick starts daemon.summary_tick (lua/daemon.lua) in a coroutine of its own whose
 * PostgreSQL and InfluxDB calls yield; the loop resumes it when one of them is over;
 * never two at once; at shutdown one still running is abandoned (its statement cancelled).
 * Each CDN's last stored summary goes to the metrics store after each run. */
#ifndef TS_DAEMON_SUMMARY_H
#define TS_DAEMON_SUMMARY_H
#include <lua.h>
#include <stdint.h>
#include "ts_metrics.h"

typedef struct ts_dsummary {
    lua_State *L;            /* the daemon's state (set by the daemon) */
    ts_metrics *metrics;     /* NULL: no metrics store (not the run mode) */
    lua_State *co;           /* the summary in progress, or NULL */
    int ref;                 /* its registry anchor */
    int64_t started;         /* ts_mono_ms */
    int skipped;             /* ticks that came while it ran */
} ts_dsummary;

/* A tick: starts a summary, or counts and (once per run) says the tick is skipped. */
void ts_dsummary_tick(ts_dsummary *s);
/* One of its requests is over (the loop's async wake): runs it on to its next yield or end. */
void ts_dsummary_resume(ts_dsummary *s);
/* Each CDN's last stored daily summary, as Lua keeps it in the state dir, into the metrics. */
void ts_dsummary_successes(ts_dsummary *s);
/* Shutdown: a summary still running is never resumed again; its waiting statement gets a
 * cancel request and its waits let go of the loop. */
void ts_dsummary_abandon(ts_dsummary *s);

#endif
