/* Logging (C core): one line per event with a UTC timestamp, to stderr or
 * a file. Single-threaded by design: the event loop owns everything. */
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
