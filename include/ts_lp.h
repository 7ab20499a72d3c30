/* InfluxDB 1.x line protocol encoder (C core). Exact 1.x escaping rules,
 * shortest round-trip floats, NaN/Inf fields dropped. Used by the Lua API
 * (generic points) and by the writer (compact points, see ts_point.h). */
#ifndef TS_LP_H
#define TS_LP_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"
#include "ts_point.h"

typedef enum { TS_F_FLOAT, TS_F_INT, TS_F_UINT, TS_F_BOOL, TS_F_STRING } ts_field_type;

typedef struct ts_field {
    const char *key;
    size_t key_len;
    ts_field_type type;
    union {
        double f;
        int64_t i;
        uint64_t u;
        int b;
        struct { const char *s; size_t len; } str;
    } v;
} ts_field;

typedef struct ts_tag {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} ts_tag;

/* Timestamp precisions as InfluxDB's `precision=` query parameter names them. */
typedef enum { TS_PREC_NS, TS_PREC_US, TS_PREC_MS, TS_PREC_S, TS_PREC_M, TS_PREC_H } ts_precision;
const char *ts_precision_name(ts_precision p);   /* "ns","u","ms","s","m","h" */
int ts_precision_parse(const char *s, ts_precision *out); /* 0 ok, -1 unknown */

/* Escaping, appended to out. Measurement: ',' ' ' escaped ('=' is not);
 * tag keys/values and field keys: ',' '=' ' ' escaped; '\n' written as the two
 * characters '\' 'n'; tag values lose trailing backslashes (unrepresentable
 * in 1.x). String field values: '"' and '\' escaped. */
void ts_lp_escape_measurement(ts_buf *out, const char *s, size_t n);
void ts_lp_escape_tag(ts_buf *out, const char *s, size_t n);       /* tag key or value */
void ts_lp_escape_field_key(ts_buf *out, const char *s, size_t n);
void ts_lp_escape_string_value(ts_buf *out, const char *s, size_t n);

/* Number formatting into caller storage: returns the length; the text is
 * always NUL-terminated. */
size_t ts_fmt_double(char out[32], double v);   /* shortest text that strtod()s back to v */
size_t ts_fmt_int64(char out[24], int64_t v);

/* Encode one generic point (no trailing newline). Tags are sorted by key here
 * (caller's array may be reordered); tags whose escaped value is empty are
 * dropped; NaN/Inf float fields are dropped. has_ts=0 writes no timestamp;
 * otherwise ts_ns (nanoseconds) is divided down to `prec`.
 * Returns 0, or -1 with *err set to a static message: "no fields",
 * "empty measurement", "empty field key", "empty tag key",
 * "reserved key 'time'", "key too long". On error out->len is unchanged. */
int ts_lp_encode(ts_buf *out, const char *measurement, size_t mlen,
                 ts_tag *tags, size_t ntags, const ts_field *fields, size_t nfields,
                 int has_ts, int64_t ts_ns, ts_precision prec, const char **err);

/* Encode one compact point (ts_point.h) with a trailing '\n'. The point's
 * time is in milliseconds; prec must be MS or coarser (S, M, H). The stat's
 * and entity's pre-escaped tags are merged in key order. Returns 0, or -1 if
 * the value is NaN/Inf (nothing appended). */
int ts_lp_encode_compact(ts_buf *out, const ts_cpoint *p, ts_precision prec);
/* The series key of one line (its measurement and tags as written, up to
 * the first unescaped space): Kafka's message key, the replay's sort key.
 * Returns its length; len when the line has no unescaped space. */
size_t ts_lp_series_key(const char *line, size_t len);
/* 1 when ts_lp_encode_compact writes a point of st with this value (not NaN/Inf once scaled). */
int ts_lp_compact_writable(const ts_stat_map *st, double value);
/* A compact point's time stamp (ms) in prec, as ts_lp_encode_compact writes it. */
int64_t ts_lp_ms_to_prec(int64_t ms, ts_precision prec);
/* A writable compact point's field value text as ts_lp_encode_compact writes
 * it (scaled; "42i" for an integer stat); returns its length. */
size_t ts_lp_compact_value(char out[32], const ts_stat_map *st, double value);

#endif
