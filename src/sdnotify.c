/* systemd notifications (C core) over libsystemd's sd_notify: see ts_sdnotify.h. A failed
 * notification is logged once at debug level and otherwise ignored: systemd then times the
 * service out itself, which is the right outcome for a broken notify socket. */
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include "ts_log.h"
#include "ts_sdnotify.h"

static void send_state(const char *state) {
    int rc = sd_notify(0, state);
    if (rc < 0) ts_debug("sd_notify failed: %d", rc);
}

void ts_sd_ready(const char *status) {
    char buf[512];
    if (status) snprintf(buf, sizeof buf, "READY=1\nSTATUS=%s", status);
    else snprintf(buf, sizeof buf, "READY=1");
    send_state(buf);
}

void ts_sd_reloading(void) {
    /* MONOTONIC_USEC lets systemd (Type=notify-reload) tell this reload from an older one. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char buf[128];
    snprintf(buf, sizeof buf, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull);
    send_state(buf);
}

void ts_sd_stopping(void) { send_state("STOPPING=1"); }

void ts_sd_status(const char *status) {
    char buf[512];
    snprintf(buf, sizeof buf, "STATUS=%s", status);
    send_state(buf);
}

int64_t ts_sd_watchdog_ms(void) {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0) return 0;
    int64_t ms = (int64_t)(usec / 1000);
    return ms > 0 ? ms : 1;
}

void ts_sd_watchdog_ping(void) { send_state("WATCHDOG=1"); }
