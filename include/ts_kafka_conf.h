/* Kafka target configuration (C core, librdkafka): the options of the
 * target (kafka.* of lua/options.lua, as C) checked and turned into a
 * librdkafka configuration, with tstats' defaults and the properties the
 * operator passes through. The producer that uses it is ts_kafka.h. */
#ifndef TS_KAFKA_CONF_H
#define TS_KAFKA_CONF_H
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include "ts_kafka_enc.h"

typedef struct ts_kafka_opts {
    const char *brokers;        /* bootstrap.servers, "h1:9092,h2:9092" */
    const char *topic;          /* topic of databases without their own */
    const char *const *db_topics;   /* NULL-terminated pairs: database, topic (may be NULL) */
    const char *const *properties;  /* NULL-terminated pairs passed to librdkafka (security.protocol, sasl.*, ssl.*, ...) */
    ts_kafka_format format;
    const char *acks;           /* "all" (default), "1", "0" */
    int idempotence;            /* enable.idempotence; requires acks "all" */
    const char *compression;    /* compression.codec: none (default), gzip, snappy, lz4, zstd */
    size_t points_per_message;  /* 1 (default): one message per point, Traffic Stats' shape; N > 1: up to N
                                 * points of one partition per message, '\n'-separated (JSON lines or
                                 * line protocol), far cheaper per point */
    size_t max_buffer_bytes;    /* chunk bytes held before the oldest is dropped; default 256 MiB */
    long retry_backoff_ms;      /* before a message librdkafka gave up on is produced again; default 1000 */
    /* Logging of delivery errors: at most one line per error kind per this many ms (default 10000). */
    long log_interval_ms;
} ts_kafka_opts;

/* Checks o (brokers and a topic set, acks known, idempotence only with acks
 * "all", no property that a kafka.* option owns) and builds librdkafka's
 * configuration: tstats' defaults, then o's properties. NULL with a message
 * in err when something is refused (librdkafka's own message for a property
 * it does not know). Callbacks and the opaque are the caller's to set. */
rd_kafka_conf_t *ts_kafka_conf_new(const ts_kafka_opts *o, char *err, size_t errlen);

/* Errors that a resend cannot cure (message too large, authorization,
 * invalid record): the points are counted as failed and their chunk may
 * complete, so a spool position moves past them. */
int ts_kafka_conf_permanent(rd_kafka_resp_err_t e);

#endif
