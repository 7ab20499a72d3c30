/* Logging and counters (C core). Single-threaded by design: the event loop
 * owns everything, so counters need no atomics. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ts_log.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_level = TS_LOG_INFO;
static FILE *log_fp;

void ts_log_set_level(int level) { log_level = level; }
int ts_log_level(void) { return log_level; }

int ts_log_parse_level(const char *name) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    if (strcmp(name, "warning") == 0) return TS_LOG_WARN;
    return -1;
}

int ts_log_open(const char *path) {
    if (log_fp && log_fp != stderr) fclose(log_fp);
    log_fp = NULL;
    if (!path || !*path || strcmp(path, "stderr") == 0) return 0;
    FILE *fp = fopen(path, "a");
    if (!fp) return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    log_fp = fp;
    return 0;
}

void ts_log(int level, const char *fmt, ...) {
    static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (level > log_level) return;
    FILE *fp = log_fp ? log_fp : stderr;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(fp, "%s.%03ldZ %s ", when, ts.tv_nsec / 1000000, tags[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(fp, fmt, ap);
    va_end(ap);
    fputc('\n', fp);
    fflush(fp);
}

/* Counters live in a small array of fixed slots: there are a few dozen names,
 * looked up once per module at init. */
#define MAX_COUNTERS 256
static ts_counter counters[MAX_COUNTERS];
static int ncounters;

ts_counter *ts_counter_get(const char *name) {
    for (int i = 0; i < ncounters; i++)
        if (strcmp(counters[i].name, name) == 0) return &counters[i];
    if (ncounters == MAX_COUNTERS) {
        static ts_counter overflow = {"counter_overflow", 0};
        return &overflow;
    }
    char *copy = strdup(name);
    if (!copy) abort();   /* the abort-on-OOM policy of ts_buf.h */
    counters[ncounters].name = copy;
    counters[ncounters].value = 0;
    return &counters[ncounters++];
}

void ts_counters_foreach(ts_counter_fn fn, void *ud) {
    for (int i = 0; i < ncounters; i++) fn(ud, counters[i].name, counters[i].value);
}

int64_t ts_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ts_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ts_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
