/* Batches (C core): what a poll or a script produces for one destination,
 * held until the writer encodes it. Two kinds: compact (a poll's samples,
 * 12 bytes each, measurement and tags living once in the mapping caches) and
 * text (lines already in line protocol, from Lua). Calling a function of the
 * other kind aborts: that is a bug in the caller, never bad input.
 * The pool keeps finished compact batches' arrays for the next polls. */
#ifndef TS_BATCH_H
#define TS_BATCH_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"
#include "ts_lp.h"
#include "ts_point.h"

/* A destination: where a batch goes. */
typedef struct ts_dest {
    char db[128];
    char rp[128];             /* "" = the database's default RP (no rp= parameter) */
    ts_precision precision;   /* TS_PREC_MS for stats, TS_PREC_S for daily points */
} ts_dest;

/* Owner of the stat/entity maps that compact points point into. A batch
 * holds one reference and releases it when it is emptied or freed. */
typedef struct ts_map_owner {
    void (*retain)(void *owner);
    void (*release)(void *owner);
    void *owner;
} ts_map_owner;

typedef struct ts_batch ts_batch;

ts_batch *ts_batch_new_compact(const ts_dest *d, const ts_map_owner *owner); /* owner may be NULL */
void ts_batch_add_compact(ts_batch *b, const ts_cpoint *p);
/* Room for `points` points in `runs` runs (entity + time stamp changes) and a
 * little more, so a poll like the last one fills its arrays without regrowing. */
void ts_batch_reserve(ts_batch *b, size_t points, size_t runs);
size_t ts_batch_runs(const ts_batch *b);

ts_batch *ts_batch_new_text(const ts_dest *d);
/* Append one already-encoded line (a trailing newline is optional). */
void ts_batch_add_line(ts_batch *b, const char *line, size_t len);
/* The buffer lines are encoded into directly (each ending in '\n'); call
 * ts_batch_text_commit with how many lines were appended. */
ts_buf *ts_batch_text_buf(ts_batch *b);
void ts_batch_text_commit(ts_batch *b, size_t lines);

int ts_batch_is_compact(const ts_batch *b);
size_t ts_batch_points(const ts_batch *b);   /* not yet taken */
size_t ts_batch_bytes(const ts_batch *b);    /* memory of the data not yet taken */
size_t ts_batch_capacity_bytes(const ts_batch *b);   /* compact: array memory, taken or not */
const ts_dest *ts_batch_dest(const ts_batch *b);
void ts_batch_free(ts_batch *b);

/* Encode up to max_lines of b into out from where the last take stopped;
 * returns the lines appended. *taken gets the points consumed, *invalid those
 * consumed but not writable (NaN/Inf values). */
size_t ts_batch_take(ts_batch *b, ts_buf *out, size_t max_lines, size_t *taken, size_t *invalid);
/* Where the next take starts (compact: a point index; text: a byte offset):
 * the bounds of what one take consumed, for ts_batch_encode_range. */
size_t ts_batch_cursor(const ts_batch *b);
/* Encode what lies between two cursors of b into out (b is left as it was),
 * exactly as ts_batch_take did or would; returns the lines appended, *invalid
 * gets the NaN/Inf points skipped. */
size_t ts_batch_encode_range(const ts_batch *b, size_t from, size_t to, ts_buf *out, size_t *invalid);
/* Memory that range stands for (what a holder of it accounts). */
size_t ts_batch_range_bytes(const ts_batch *b, size_t from, size_t to);
/* A compact batch's points one by one (what a spool record of them is made
 * from): the run holding point i; a run's entity, time and end (the index
 * after its last point); a point's batch-local stat index and value; the
 * stat maps by index; and the cursor moved on to `to` (what a take would
 * have consumed, without encoding it). */
size_t ts_batch_run_of(const ts_batch *b, size_t i);
void ts_batch_run_get(const ts_batch *b, size_t run, const ts_entity_map **ent, int64_t *time_ms, size_t *end);
uint32_t ts_batch_point_get(const ts_batch *b, size_t i, double *value);
uint32_t ts_batch_nstats(const ts_batch *b);
const ts_stat_map *ts_batch_stat(const ts_batch *b, uint32_t k);
void ts_batch_skip(ts_batch *b, size_t to);
/* One more holder: a batch shared by several (live records of targets) is
 * released by each with ts_batch_free or ts_batch_pool_put, and only the
 * last of those frees it or keeps it as a spare. Its points are never
 * changed while it is shared (takes move the cursor only). */
void ts_batch_retain(ts_batch *b);
/* The owner of the maps a compact batch's points point into (NULL: none
 * given, or a text batch): a holder of map pointers beyond the batch's life
 * retains it. */
const ts_map_owner *ts_batch_owner(const ts_batch *b);
/* Append every line of b to out (b is left as it was); returns the line count. */
size_t ts_batch_encode(const ts_batch *b, ts_buf *out);

/* ---- the pool ----
 * A publish frees every batch of the last interval and the next polls need
 * the same sizes again; glibc hands blocks that big back to the kernel, so
 * each reuse would start on fresh pages (a fault per 4 KiB, ~2 us each on
 * these VMs). The pool keeps what the writer is done with, within what the
 * writer held at its busiest, so the process's peak does not grow. */
typedef struct ts_batch_pool ts_batch_pool;
ts_batch_pool *ts_batch_pool_new(void);
void ts_batch_pool_free(ts_batch_pool *p);
/* A compact batch for a poll like the last one (`points`, `runs` as
 * ts_batch_reserve), on a spare's arrays when there is one. p may be NULL. */
ts_batch *ts_batch_pool_get(ts_batch_pool *p, const ts_dest *d, const ts_map_owner *owner, size_t points,
                            size_t runs);
/* The holder (the writer) reports batches entering and leaving its pending
 * queues: their array memory sets the high-water mark spares stay within. */
void ts_batch_pool_hold(ts_batch_pool *p, const ts_batch *b);
void ts_batch_pool_unhold(ts_batch_pool *p, const ts_batch *b);
/* A batch the holder is done with: kept as a spare or freed. p may be NULL. */
void ts_batch_pool_put(ts_batch_pool *p, ts_batch *b);
/* A publishing interval ended: keep at most as many spares as it brought
 * compact batches, so a backlog's extra batches go back to malloc. */
void ts_batch_pool_interval(ts_batch_pool *p);

#endif
