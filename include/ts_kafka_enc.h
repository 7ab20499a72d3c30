/* Kafka message encoders (C core): what one point becomes in a Kafka
 * message. A line-protocol line to Traffic Stats' JSON shape plus db and rp,
 * and the series key (the message key). No librdkafka here: the producer is
 * ts_kafka.h. */
#ifndef TS_KAFKA_ENC_H
#define TS_KAFKA_ENC_H
#include <stddef.h>
#include <stdint.h>
#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_lp.h"
#include "ts_point.h"

typedef enum { TS_KAFKA_JSON = 0, TS_KAFKA_LP = 1 } ts_kafka_format;

typedef struct ts_kafka_dest {
    const char *db;
    const char *rp;             /* "" = the database's default RP */
    ts_precision precision;     /* of the chunk's time stamps */
} ts_kafka_dest;

/* One line-protocol line to Traffic Stats' JSON shape plus db and rp:
 * {"name":..,"tags":{..},"fields":{..},"time":"RFC 3339, UTC, ns exact","db":..,"rp":..}
 * Floats keep their shortest round-trip text, integers are exact, the time
 * stamp (in d->precision) is converted exactly; a line without one gets
 * now_ns. Appends to out; returns 0, or -1 with *err (static text) and out
 * unchanged. */
int ts_kafka_enc_json(ts_buf *out, const char *line, size_t len, const ts_kafka_dest *d, int64_t now_ns,
                      const char **err);

/* Points in a chunk of line protocol: its lines that are not blank. */
size_t ts_kafka_enc_count_lines(const char *p, size_t n);

/* The series cache: the JSON head of a series ({"name":..,"tags":{..},"fields":{)
 * and its partition, by series key, so that a poll's points, which are the
 * last poll's series again, skip the scan of their tags. Past max_bytes
 * (entries, their keys and heads, the table) it is emptied and starts again. */
typedef struct ts_kafka_enc ts_kafka_enc;
typedef struct ts_kafka_series ts_kafka_series;
ts_kafka_enc *ts_kafka_enc_new(int json, size_t max_bytes);   /* json 0: partitions only */
void ts_kafka_enc_free(ts_kafka_enc *e);
/* The entry of a series key (made at first sight); NULL for an empty key. */
ts_kafka_series *ts_kafka_enc_series(ts_kafka_enc *e, const char *key, size_t klen);
/* The partition noted for nparts partitions, -1 when none is. */
int32_t ts_kafka_enc_partition(const ts_kafka_series *s, int32_t nparts);
void ts_kafka_enc_set_partition(ts_kafka_series *s, int32_t nparts, int32_t part);
/* ts_kafka_enc_json for a line whose series key is se's (se NULL: the full
 * conversion): the same bytes, the head copied from the cache. */
int ts_kafka_enc_json_series(ts_kafka_enc *e, const ts_kafka_series *se, ts_buf *out, const char *line, size_t len,
                             const ts_kafka_dest *d, int64_t now_ns, const char **err);
/* Compact points (ts_point.h) straight to messages, with no line protocol
 * between: the series entry of a point by its (stat map, entity map) pair,
 * made at first sight from the series key its line would have, so that keys,
 * heads and partitions are those of the line-protocol path. A pair is kept
 * only with the maps' owner (a reference is held on it until the cache is
 * emptied: map pointers are reused once the maps are freed); owner NULL:
 * the key is made each time. NULL for an empty or too long key. */
ts_kafka_series *ts_kafka_enc_series_cpt(ts_kafka_enc *e, const ts_stat_map *st, const ts_entity_map *ent,
                                         const ts_map_owner *owner);
const char *ts_kafka_enc_key(const ts_kafka_series *s, size_t *klen);
/* A compact point's line protocol in buf (no newline), leading blanks
 * skipped as the line-protocol path skips them; NULL when not writable. */
const char *ts_kafka_enc_point_line(ts_buf *buf, const ts_cpoint *p, ts_precision prec, size_t *n);
/* A writable compact point's message appended to out: JSON (the bytes
 * ts_kafka_enc_json gives for its line) or, json 0, its line protocol line
 * without the newline. 0, or -1 with *err and out unchanged. */
int ts_kafka_enc_cpt(ts_kafka_enc *e, const ts_kafka_series *se, ts_buf *out, const ts_cpoint *p,
                     const ts_kafka_dest *d, const char **err);
/* The points that follow go to d (the same object, unchanged, until the next
 * call; NULL: none): its db/rp suffix made once, not compared per point. */
void ts_kafka_enc_set_dest(ts_kafka_enc *e, const ts_kafka_dest *d);
typedef struct ts_kafka_enc_stats {
    uint64_t series, bytes, hits, misses, resets;
    uint64_t pairs, pair_hits, pair_misses, owners;   /* the (stat, entity) pairs of compact points */
} ts_kafka_enc_stats;
void ts_kafka_enc_get_stats(const ts_kafka_enc *e, ts_kafka_enc_stats *s);

#endif
