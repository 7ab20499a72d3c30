/* Kafka's position in the on-disk spool (C core): the spool consumer that
 * feeds the Kafka target (ts_kafka.h) from the records every target shares,
 * acknowledging each record once Kafka has acknowledged its points. */
#ifndef TS_KAFKA_FEED_H
#define TS_KAFKA_FEED_H
#include <stddef.h>
#include <stdint.h>
#include "ts_http.h"
#include "ts_kafka.h"
#include "ts_spool.h"
#include "ts_target.h"

/* Kafka's own position in the on-disk spool: the consumer "kafka" reads the
 * records every target shares and hands them to the target, holding back
 * while more than `high_bytes` wait for librdkafka; a record is acknowledged
 * in the spool (ts_spool_ack_one) once each of its points was delivered or
 * refused for good. What is not acknowledged when tstats stops or dies is
 * read again at the next start: at-least-once. Open it before
 * ts_spool_consumers_done. A consumer seen for the first time starts at the
 * end (enabling Kafka does not export the spool's history). */
typedef struct ts_kafka_feed ts_kafka_feed;
ts_kafka_feed *ts_kafka_feed_new(ts_kafka *k, ts_spool *s, ts_loop *loop, size_t high_bytes);
/* A record the spool just took (ts_target_ops.live): sent from memory and
 * claimed in the consumer while the target has room (1), else 0 (read back
 * later). With take, body's buffer is taken and body left empty. */
int ts_kafka_feed_live(ts_kafka_feed *f, const ts_dest *d, ts_buf *body, int take, size_t lines, ts_spool_pos at,
                       ts_spool_pos next);
/* The same for a record of compact points: the points [from, to) of b,
 * `lines` of them writable (the batch is retained, not copied). */
int ts_kafka_feed_live_points(ts_kafka_feed *f, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                              ts_spool_pos at, ts_spool_pos next);
/* Reads what the spool has for Kafka now (also runs from its own timer). */
void ts_kafka_feed_pump(ts_kafka_feed *f);
/* The records read from now on go to k (SIGHUP rebuilt the producer); those
 * handed to the previous one are acknowledged when it reports them done. */
void ts_kafka_feed_set_target(ts_kafka_feed *f, ts_kafka *k, size_t high_bytes);
/* Shutdown: no more reading (what is in flight may still complete); NULL ok. */
void ts_kafka_feed_stop(ts_kafka_feed *f);
typedef struct ts_kafka_feed_stats {
    uint64_t records_read, records_acked, points_read;
    uint64_t records_claimed;    /* sent from memory as they were appended (not read back) */
    uint64_t records_open;       /* handed to the target, not acknowledged yet */
    uint64_t backlog_bytes;      /* spool bytes Kafka has not acknowledged */
    uint64_t replay_bytes;       /* from its durable spool position to the end */
    uint64_t lines_lost;         /* removed from the spool for max_bytes before Kafka read them */
    int64_t oldest_age_ms;       /* age of the oldest record Kafka has not acknowledged; -1 none */
} ts_kafka_feed_stats;
void ts_kafka_feed_get_stats(const ts_kafka_feed *f, ts_kafka_feed_stats *s);
/* Closes the consumer (position persisted); records not acknowledged stay.
 * Free the target first (after its drain), then the feed, then the spool. */
void ts_kafka_feed_free(ts_kafka_feed *f);
/* Kafka as one of the daemon's targets: k fed through f (NULL: from memory).
 * The target owns both: its close frees k, then f. */
ts_target *ts_kafka_feed_target(ts_kafka *k, ts_kafka_feed *f);
/* After a kafka.* reload replaced the producer: the target's is k now (the
 * old one is retired and freed by the reload, not by the target). */
void ts_kafka_feed_target_set(ts_target *t, ts_kafka *k);

#endif
