/* Streaming scanner for Traffic Monitor payloads (C core, hand-written
 * lexer in src/scan.c; no library, no Lua).
 * Feeds arrive as curl delivers them; the scanner never holds the payload.
 * It reports each entity (cache / delivery service) and each stat key once
 * per occurrence through the sink, which answers with an opaque handle (the
 * mapping cache decides; NULL = skip), and then one sample per stat with the
 * value text and the time. Only element [0] (the newest) of each history
 * array is reported. */
#ifndef TS_SCAN_H
#define TS_SCAN_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    TS_SCAN_CACHESTATS, /* {"caches":{"<host>":{"<stat>":[{"value":"..","time":ms,"span":n}]}}, "pp":..,"date":..} */
    TS_SCAN_DSSTATS     /* {"deliveryService":{"<ds>":{"<key>":[{"time":ms,"value":".."}]}}, "pp":..,"date":..} */
} ts_scan_kind;

/* What kind of JSON value a sample's "value" was. */
enum { TS_VAL_STRING = 1, TS_VAL_NUMBER, TS_VAL_OTHER /* bool/null/array/object: text is empty */ };

typedef struct ts_scan_sink {
    void *(*entity)(void *ud, const char *name, size_t len);
    void *(*stat)(void *ud, void *entity, const char *name, size_t len);
    /* val: unescaped string contents or the number token; NUL-terminated.
     * has_time=0 when the sample had no integer "time". */
    void (*sample)(void *ud, void *entity, void *stat, const char *val, size_t vlen,
                   int val_kind, int64_t time_ms, int has_time);
    void *ud;
} ts_scan_sink;

typedef struct ts_scan_stats {
    uint64_t bytes;
    uint64_t entities;
    uint64_t samples;        /* samples delivered to sink->sample */
    uint64_t skipped_shape;  /* stats whose value had an unexpected shape (not an array of objects, ...) */
    uint64_t truncated_values; /* value strings longer than the scanner keeps (delivered as TS_VAL_OTHER) */
} ts_scan_stats;

typedef struct ts_scan ts_scan;

ts_scan *ts_scan_new(ts_scan_kind kind, const ts_scan_sink *sink);
/* 0 ok; -1 on a JSON syntax error or a wrong top-level shape (error text via ts_scan_error). */
int ts_scan_feed(ts_scan *s, const char *buf, size_t len);
/* End of input: -1 if the document is incomplete/truncated or was never a JSON object. */
int ts_scan_finish(ts_scan *s);
const char *ts_scan_error(const ts_scan *s);
const ts_scan_stats *ts_scan_get_stats(const ts_scan *s);
void ts_scan_free(ts_scan *s);

#endif
