/* The daemon (C side): the loop, the writer, the collector, timers and
 * signals; lua/daemon.lua decides what to poll and runs the summaries. */
#ifndef TS_DAEMON_H
#define TS_DAEMON_H

typedef enum { TS_MODE_RUN, TS_MODE_ONCE, TS_MODE_DRYRUN } ts_mode;
int ts_daemon_main(const char *config_file, ts_mode mode);

#endif
