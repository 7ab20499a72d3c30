/* Logging (C core). One line per event, with a UTC timestamp. Modules that
 * log also count and read the clock, so this header brings the counter and
 * clock headers along. */
#ifndef TS_LOG_H
#define TS_LOG_H
#include <stdint.h>
#include <stdio.h>
#include "ts_clock.h"
#include "ts_counter.h"

enum { TS_LOG_ERROR = 0, TS_LOG_WARN, TS_LOG_INFO, TS_LOG_DEBUG };

enum { TS_LOG_TEXT = 0, TS_LOG_JSON, TS_LOG_LOGFMT };

void ts_log_set_level(int level);        /* ignored once pinned */
void ts_log_pin_level(int level);        /* the command line's level: the configuration cannot change it */
void ts_log_set_format(int format);      /* TS_LOG_TEXT | TS_LOG_JSON | TS_LOG_LOGFMT; ignored once pinned */
void ts_log_pin_format(int format);
int ts_log_parse_format(const char *name); /* -1 if unknown */
/* A one-line status (progress bar) kept at the bottom of the log stream: log
 * lines are written above it and it is redrawn after each. */
void ts_log_set_status(const char *line);
void ts_log_clear_status(void);
int ts_log_level(void);
int ts_log_parse_level(const char *name); /* -1 if unknown */
int ts_log_open(const char *path);        /* NULL or "stderr" = stderr; returns 0/-1 */
void ts_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ts_error(...) ts_log(TS_LOG_ERROR, __VA_ARGS__)
#define ts_warn(...) ts_log(TS_LOG_WARN, __VA_ARGS__)
#define ts_info(...) ts_log(TS_LOG_INFO, __VA_ARGS__)
#define ts_debug(...) do { if (ts_log_level() >= TS_LOG_DEBUG) ts_log(TS_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
