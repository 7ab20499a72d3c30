/* The Kafka target's chunks (C core, no librdkafka): what one submit
 * queued, line protocol or a compact batch's points, and the messages of it
 * kept to produce again. Internal to the target (ts_kafka.h is its face):
 * this is where a chunk is read point by point. */
#ifndef TS_KAFKA_CHUNK_H
#define TS_KAFKA_CHUNK_H
#include <stddef.h>
#include <stdint.h>

#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_kafka_enc.h"
#include "ts_point.h"

/* ts_kafka.h's own (C11 takes the same typedef twice): including ts_kafka.h
 * here would make an include circle with kafka.c. */
typedef void (*ts_kafka_done_fn)(void *ud, uint64_t id, size_t delivered, size_t failed, size_t dropped);

/* A message to produce again: librdkafka gave up on it (brokers down past
 * message.timeout.ms) or its queue was full when a group was ready. */
typedef struct ts_kafka_retry {
    struct ts_kafka_retry *next;
    char *key, *val;          /* one allocation: key then value */
    size_t klen, vlen;
    size_t lines;             /* points it carries */
    int32_t partition;        /* RD_KAFKA_PARTITION_UA: the partitioner decides */
} ts_kafka_retry;

typedef struct ts_kafka_chunk {
    struct ts_kafka_chunk *prev, *next;
    char db[128], rp[128];
    ts_precision prec;
    int topic;                /* index into the target's topics, -1: none configured */
    char *body;
    size_t len, pos;          /* pos: byte offset of the next line to produce; with src, a point index */
    ts_batch *src;            /* or the points [pos, len) of this batch (a reference held) */
    size_t run, held;         /* src: the run of point pos; bytes the target counts for the body */
    /* the counters below are in points (lines); a message may carry several */
    size_t outstanding;       /* produced, no delivery report yet */
    size_t delivered, failed, dropped;
    ts_kafka_retry *rhead, *rtail;
    size_t nretry, retry_bytes;   /* points in retries, their bytes */
    int64_t retry_due;        /* ts_mono_ms when the retries may go */
    uint64_t id;
    ts_kafka_done_fn done;
    void *ud;
} ts_kafka_chunk;

/* One point of a chunk, as the producer needs it. */
typedef struct ts_kafka_pt {
    const char *line;         /* its line protocol (trimmed), or for a compact point its series key */
    size_t len, klen;         /* klen: the series key's length (the key starts at line) */
    ts_kafka_series *se;      /* its series entry, or NULL (not asked for, or no key) */
    int cpt;                  /* a compact point with its entry: the message is made from p */
    ts_cpoint p;
    size_t next;              /* the chunk's pos after it */
} ts_kafka_pt;

/* The next point of c from c->pos (blank lines and NaN/Inf points skipped:
 * pos moves past them, not past the point); 0 at the end. Compact points
 * always get their series entry; lines only with `series`. scratch holds a
 * compact point's line when its key cannot be cached. */
int ts_kafka_chunk_next(ts_kafka_chunk *c, ts_kafka_enc *enc, ts_buf *scratch, int series, ts_kafka_pt *pt);
/* Points not produced yet (reads them: pos moves to the end). */
size_t ts_kafka_chunk_unsent(ts_kafka_chunk *c);
int ts_kafka_chunk_complete(const ts_kafka_chunk *c);
/* The body or the batch reference released; returns the bytes it counted. */
size_t ts_kafka_chunk_body_free(ts_kafka_chunk *c);
void ts_kafka_chunk_free_retries(ts_kafka_chunk *c);
void ts_kafka_chunk_free(ts_kafka_chunk *c);

#endif
