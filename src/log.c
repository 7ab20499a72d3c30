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
/* The command line's --log-level/--log-format win over the configuration's. */
static int level_pinned, log_format = TS_LOG_TEXT, format_pinned;
/* A progress bar on the terminal: log lines are printed above it, then it is redrawn. */
static char status_line[512];

void ts_log_set_level(int level) { if (!level_pinned) log_level = level; }
void ts_log_pin_level(int level) { log_level = level; level_pinned = 1; }
void ts_log_set_format(int format) { if (!format_pinned) log_format = format; }
void ts_log_pin_format(int format) { log_format = format; format_pinned = 1; }

int ts_log_parse_format(const char *name) {
    static const char *names[] = {"text", "json", "logfmt"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

/* The status line is on stderr (the terminal); a log going to a file never sees it. */
void ts_log_set_status(const char *line) {
    snprintf(status_line, sizeof status_line, "%s", line ? line : "");
    fputs("\r\033[K", stderr);
    fputs(status_line, stderr);
    fflush(stderr);
}

void ts_log_clear_status(void) {
    if (status_line[0]) fputs("\r\033[K", stderr);
    status_line[0] = 0;
    fflush(stderr);
}

/* s as the body of a JSON string, or as a logfmt value (quoted when needed). */
static void put_escaped(FILE *fp, const char *s, int json) {
    int quote = json || !*s || strpbrk(s, " =\"\\\t\n") != NULL;
    if (quote) fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { fputc('\\', fp); fputc(*p, fp); }
        else if (*p == '\n') fputs("\\n", fp);
        else if (*p == '\t') fputs("\\t", fp);
        else if (*p < 0x20) fprintf(fp, "\\u%04x", *p);
        else fputc(*p, fp);
    }
    if (quote) fputc('"', fp);
}
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
    static const char *lower[] = {"error", "warn", "info", "debug"};
    if (level > log_level) return;
    FILE *fp = log_fp ? log_fp : stderr;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    int li = level < 0 ? 0 : level > 3 ? 3 : level;
    int redraw = status_line[0] && fp == stderr;
    if (redraw) fputs("\r\033[K", fp);
    if (log_format == TS_LOG_TEXT) {
        fprintf(fp, "%s.%03ldZ %s ", when, ts.tv_nsec / 1000000, tags[li]);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(fp, fmt, ap);
        va_end(ap);
    } else {
        char msg[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        int json = log_format == TS_LOG_JSON;
        if (json) fprintf(fp, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":", when, ts.tv_nsec / 1000000, lower[li]);
        else fprintf(fp, "time=%s.%03ldZ level=%s msg=", when, ts.tv_nsec / 1000000, lower[li]);
        put_escaped(fp, msg, json);
        if (json) fputc('}', fp);
    }
    fputc('\n', fp);
    if (redraw) fputs(status_line, fp);
    fflush(fp);
}
