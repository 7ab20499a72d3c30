/* Kafka message encoders (C core): what one point becomes in a Kafka
 * message. A line-protocol line to Traffic Stats' JSON shape plus db and rp,
 * and the series key (the message key). No librdkafka here: the producer is
 * ts_kafka.h. */
#ifndef TS_KAFKA_ENC_H
#define TS_KAFKA_ENC_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"
#include "ts_lp.h"

typedef enum { TS_KAFKA_JSON = 0, TS_KAFKA_LP = 1 } ts_kafka_format;

typedef struct ts_kafka_dest {
    const char *db;
    const char *rp;             /* "" = the database's default RP */
    ts_precision precision;     /* of the chunk's time stamps */
} ts_kafka_dest;

/* The series key of a line (measurement and tags as written): the message
 * key. Returns its length (0 for an empty or malformed line). */
size_t ts_kafka_enc_series_key(const char *line, size_t len);

/* One line-protocol line to Traffic Stats' JSON shape plus db and rp:
 * {"name":..,"tags":{..},"fields":{..},"time":"RFC 3339, UTC, ns exact","db":..,"rp":..}
 * Floats keep their shortest round-trip text, integers are exact, the time
 * stamp (in d->precision) is converted exactly; a line without one gets
 * now_ns. Appends to out; returns 0, or -1 with *err (static text) and out
 * unchanged. */
int ts_kafka_enc_json(ts_buf *out, const char *line, size_t len, const ts_kafka_dest *d, int64_t now_ns,
                      const char **err);

#endif
