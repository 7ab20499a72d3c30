/* One output of the daemon and the list of them (C core, no Lua). Every kind
 * of target (InfluxDB: one writer per failover list or per mirrored server;
 * Kafka: the producer behind its spool position) implements the same small
 * table of operations, and the daemon drives them all through the list: a
 * batch is handed over once, appended once to the spool the targets share,
 * and copied from memory to each target that cannot read it from there. */
#ifndef TS_TARGET_H
#define TS_TARGET_H
#include <stddef.h>
#include <stdint.h>
#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_http.h"
#include "ts_spool.h"

/* What every target tells, in points unless named otherwise. */
typedef struct ts_target_stats {
    uint64_t written;          /* acknowledged by the destination */
    uint64_t rejected;         /* refused for good by the destination */
    uint64_t dropped;          /* dropped by us (memory bound, shutdown deadline) */
    uint64_t pending;          /* held now: queued, retrying, in flight */
    uint64_t pending_bytes;
    uint64_t spool_backlog_bytes;   /* spool bytes this target has not acknowledged */
    uint64_t spool_replay_bytes;    /* from its durable spool position to the end (ts_spool_cstats) */
    int64_t spool_oldest_age_ms;    /* age of the oldest spool record it has not acknowledged; -1 none */
    uint64_t requests_ok, requests_failed, retries, bytes_sent;   /* 0 where a kind has no such thing */
} ts_target_stats;

typedef struct ts_target_ops {
    const char *kind;                          /* "influxdb", "kafka" */
    /* Hand over a batch from memory: the target takes b (what the spool
     * refused, or everything when it does not read the spool). */
    void (*submit)(void *self, ts_batch *b);
    /* 1 when the target reads the shared spool through its own consumer:
     * what the spool took is then not handed over to it. */
    int (*reads_spool)(void *self);
    void (*tick)(void *self);                  /* publish tick: send what it holds */
    int (*healthy)(void *self);                /* 1: its destination takes data now */
    void (*stats)(void *self, ts_target_stats *s);
    /* Shutdown (or removal): send until deadline (ts_mono_ms); returns the
     * points that could not be written (the spool keeps what it holds). */
    size_t (*drain)(void *self, int64_t deadline_mono_ms);
    void (*close)(void *self);                 /* frees self */
    /* Optional (NULL: every record is read back from the spool). A record
     * the spool just took at `at` (its end at `next`): the points of b
     * between the cursors from and to (ts_batch_cursor), `lines` lines once
     * encoded. The target may keep it in memory and send it from there
     * (claiming it in its consumer with ts_spool_claim, so it is never read
     * back and never waits behind a replayed backlog; the spool stays the
     * durable copy and its position moves when the destination answered).
     * b is shared: a target that keeps the record takes a reference
     * (ts_batch_retain), encodes the range when it sends it
     * (ts_batch_encode_range: the bytes the spool-off path sends) and then
     * drops the reference (ts_batch_pool_put / ts_batch_free). Returns 1 when
     * it keeps the record, 0 when the record is to be read back later
     * (unhealthy, memory cap). */
    int (*live)(void *self, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines, ts_spool_pos at,
                ts_spool_pos next);
} ts_target_ops;

typedef struct ts_target ts_target;
/* A target of kind ops over self, named for logs and metrics (copied). */
ts_target *ts_target_new(const ts_target_ops *ops, void *self, const char *name);
const char *ts_target_name(const ts_target *t);
const char *ts_target_kind(const ts_target *t);
void *ts_target_self(const ts_target *t);
int ts_target_healthy(const ts_target *t);
int ts_target_reads_spool(const ts_target *t);
void ts_target_stats_get(const ts_target *t, ts_target_stats *s);
size_t ts_target_drain(ts_target *t, int64_t deadline_mono_ms);
/* Calls ops->close and frees t. NULL ok. */
void ts_target_close(ts_target *t);

typedef struct ts_targets ts_targets;
/* The list over one spool (NULL: memory only), appending records of at most
 * record_lines lines; spares of consumed compact batches go to pool (may be
 * NULL). Neither is owned. */
ts_targets *ts_targets_new(ts_loop *loop, ts_spool *spool, size_t record_lines, ts_batch_pool *pool);
void ts_targets_set_record_lines(ts_targets *l, size_t record_lines);
/* Appends t (the list owns it). */
void ts_targets_add(ts_targets *l, ts_target *t);
/* Unlinks the target named name and returns it (NULL if none): the caller drains and closes it. */
ts_target *ts_targets_take(ts_targets *l, const char *name);
int ts_targets_count(const ts_targets *l);
ts_target *ts_targets_at(const ts_targets *l, int i);
ts_target *ts_targets_find(const ts_targets *l, const char *name);
/* Takes b: to the spool once (if a target reads it), and from memory to
 * every target that does not read it, or to all when the spool refused it. */
void ts_targets_submit(ts_targets *l, ts_batch *b);
void ts_targets_tick(ts_targets *l);
/* Drains every target to one deadline; returns the points not written. */
size_t ts_targets_drain(ts_targets *l, int64_t deadline_mono_ms);
/* Points the list appended to the spool. */
uint64_t ts_targets_spooled(const ts_targets *l);
/* Closes every target, then frees the list. NULL ok. */
void ts_targets_free(ts_targets *l);

/* What ts_target_spool_batch calls after each record the spool took: the
 * points of b between the cursors from and to (see ts_target_ops.live);
 * at / next are the record's place (ts_spool_append_at). */
typedef void (*ts_target_appended_fn)(void *ud, const ts_dest *d, ts_batch *b, size_t from, size_t to,
                                      size_t lines, ts_spool_pos at, ts_spool_pos next);
/* The spool step shared by the list and the writer: b into the spool in
 * records of at most max_lines lines, encoded through buf. Returns 1 when all
 * of it is there; otherwise what the spool refused is left in b (the lines
 * already encoded come back as a text batch in *rest). *spooled and *invalid
 * get the lines appended and the points skipped as not writable (NaN/Inf).
 * appended (may be NULL) is called with ud after each record appended. */
int ts_target_spool_batch(ts_spool *s, ts_batch *b, size_t max_lines, ts_buf *buf, ts_batch **rest,
                          size_t *spooled, size_t *invalid, ts_target_appended_fn appended, void *ud);

#endif
