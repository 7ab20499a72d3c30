/* systemd service notifications (C core): READY / RELOADING / STOPPING / STATUS and
 * watchdog pings through libsystemd's sd_notify. Every call is a no-op when the process
 * was not started by systemd (no NOTIFY_SOCKET), so the daemon calls them unconditionally. */
#ifndef TS_SDNOTIFY_H
#define TS_SDNOTIFY_H
#include <stdint.h>

void ts_sd_ready(const char *status);       /* READY=1 (+ STATUS=) */
void ts_sd_reloading(void);                  /* RELOADING=1 + MONOTONIC_USEC= */
void ts_sd_stopping(void);                   /* STOPPING=1 */
void ts_sd_status(const char *status);       /* STATUS= only */
/* The watchdog interval systemd asked for (WATCHDOG_USEC, for this pid), in ms; 0 = none. */
int64_t ts_sd_watchdog_ms(void);
void ts_sd_watchdog_ping(void);              /* WATCHDOG=1 */

#endif
