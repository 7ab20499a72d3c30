/* Kafka export target (C core, librdkafka). Takes encoded line-protocol
 * chunks per destination (the same bodies InfluxDB gets), turns every line
 * into one Kafka message (JSON in Traffic Stats' shape plus db and rp, or the
 * line itself), keyed by the series key so that a series stays on one
 * partition, and reports a chunk done only once librdkafka delivered (or
 * permanently refused) every one of its messages. Delivery reports are
 * drained from the daemon's loop (librdkafka's queue event fd, a 0-timeout
 * rd_kafka_poll), never blocking it. */
#ifndef TS_KAFKA_H
#define TS_KAFKA_H
#include <stddef.h>
#include <stdint.h>
#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_http.h"
#include "ts_kafka_conf.h"
#include "ts_kafka_enc.h"
#include "ts_lp.h"

typedef struct ts_kafka ts_kafka;

/* Creates the producer (no network I/O yet: librdkafka connects in its own
 * threads). NULL with a message in err when librdkafka refuses a property
 * or the options contradict each other (acks other than "all" with
 * idempotence, a property that duplicates a kafka.* option). */
ts_kafka *ts_kafka_new(ts_loop *loop, const ts_kafka_opts *o, char *err, size_t errlen);

/* Called when every line of a submitted chunk has been acknowledged by Kafka
 * (delivered), refused for good (failed: permanent errors, lines that are
 * not line protocol) or dropped (memory bound, shutdown). */
typedef void (*ts_kafka_done_fn)(void *ud, uint64_t id, size_t delivered, size_t failed, size_t dropped);

/* Queue a chunk of '\n'-separated lines (copied). `id` is handed back to
 * done (e.g. a spool record's position). Messages are produced at once as
 * far as librdkafka's queue takes them, the rest from the loop. When the
 * chunks held exceed max_buffer_bytes the oldest not-yet-produced lines are
 * dropped and counted. */
void ts_kafka_submit(ts_kafka *k, const ts_kafka_dest *d, const char *body, size_t len, uint64_t id,
                     ts_kafka_done_fn done, void *ud);

/* The same, taking over body's memory (body is left empty): no copy. */
void ts_kafka_submit_buf(ts_kafka *k, const ts_kafka_dest *d, ts_buf *body, uint64_t id, ts_kafka_done_fn done,
                         void *ud);

/* The same for the points [from, to) of a compact batch (cursors of
 * ts_batch_take), `lines` of them writable: the batch is retained until they
 * are produced, and their messages are made from the points themselves,
 * the same bytes as from their line protocol. */
void ts_kafka_submit_points(ts_kafka *k, const ts_kafka_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                            uint64_t id, ts_kafka_done_fn done, void *ud);

/* Bytes of chunks not completed yet (a feeder can hold back above a mark). */
size_t ts_kafka_backlog_bytes(const ts_kafka *k);

/* Serve delivery reports and produce what waits (the loop does this by
 * itself; exposed for shutdown and tests). Never blocks. */
void ts_kafka_poll(ts_kafka *k);

/* Shutdown: produce what is left and wait for delivery reports until
 * everything is acknowledged or deadline (ts_mono_ms based) passes.
 * Returns the number of points not acknowledged; their chunks stay
 * incomplete (done is not called: a spool keeps their records). Blocks:
 * only for shutdown. */
size_t ts_kafka_drain(ts_kafka *k, int64_t deadline_mono_ms);

/* Counters in points (lines) unless named messages: with points_per_message
 * above 1 a message carries several points. */
typedef struct ts_kafka_stats {
    uint64_t messages_produced;   /* Kafka messages handed to librdkafka, re-sends included */
    uint64_t points_delivered;    /* acknowledged by the brokers */
    uint64_t points_failed;       /* refused for good (permanent errors, no topic) */
    uint64_t points_retried;      /* produced again after librdkafka gave up on them */
    uint64_t points_maybe_dup;    /* retried although possibly persisted: at most this many duplicates */
    uint64_t points_dropped;      /* dropped by us: memory bound */
    uint64_t lines_invalid;       /* lines that are not line protocol (counted, not sent) */
    uint64_t points_pending;      /* waiting to be produced + in librdkafka awaiting a report */
    uint64_t bytes_pending;       /* chunk bytes held */
    uint64_t delivery_errors;     /* delivery reports with an error, retried or not */
    uint64_t client_errors;       /* librdkafka error events (brokers down, auth, ...) */
    uint64_t queue_full;          /* times librdkafka's queue was full (backpressure) */
    int64_t last_error_code;      /* rd_kafka_resp_err_t of the latest error, 0 if none */
    char last_error[160];
} ts_kafka_stats;
void ts_kafka_get_stats(const ts_kafka *k, ts_kafka_stats *s);

/* No chunk left: everything submitted was acknowledged, refused or dropped. */
int ts_kafka_idle(const ts_kafka *k);
/* Adds s's counters (not the pending ones) to k's: a producer that replaces
 * another (SIGHUP) goes on counting from where that one was. */
void ts_kafka_add_stats(ts_kafka *k, const ts_kafka_stats *s);

/* Frees the producer without waiting (call ts_kafka_drain first); pending
 * chunks' done is not called. */
void ts_kafka_free(ts_kafka *k);

#endif
