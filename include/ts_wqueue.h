/* The writer's state and its queues (C core, no Lua): what the rooms of the
 * writer share (writer.c the public face and the pump, wspool.c the spool
 * side, wsend.c the InfluxDB requests and their answers): destinations with
 * their pending batches, chunks on the retry and in-flight lists, drops and
 * the memory bound. Internal to the writer: everyone else uses ts_writer.h. */
#ifndef TS_WQUEUE_H
#define TS_WQUEUE_H
#include <stddef.h>
#include <stdint.h>

#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_counter.h"
#include "ts_http.h"
#include "ts_influx.h"
#include "ts_spool.h"

/* The public face (ts_writer.h) includes none of this; the same typedef may
 * be repeated in C11. */
typedef struct ts_writer ts_writer;

/* What the writer counts itself (ts_writer_get_stats adds what it holds). */
typedef struct ts_wqueue_counts {
    uint64_t points_written, points_rejected, points_dropped;
    uint64_t requests_ok, requests_failed, retries, bytes_sent;
    uint64_t points_spooled, split_413, points_left_in_spool;
} ts_wqueue_counts;

/* A pending batch: its arrival order across the writer is its age for "drop oldest". */
typedef struct ts_wqueue_pend {
    ts_batch *b;
    uint64_t seq;
    struct ts_wqueue_pend *next;
} ts_wqueue_pend;

typedef struct ts_wqueue_dest {
    ts_dest d;
    char *path;              /* "/write?db=..&rp=..&precision=.." */
    ts_wqueue_pend *head, *tail;       /* pending, arrival order */
    size_t pending_points;
    int nretry;              /* chunks of this destination failed and not resolved yet */
    uint64_t written, rejected, dropped;   /* per destination, for the metrics */
    struct ts_wqueue_dest *next;
} ts_wqueue_dest;

typedef struct ts_wqueue_chunk {
    struct ts_writer *w;     /* NULL once orphaned (writer freed or drained past) */
    ts_wqueue_dest *d;
    ts_buf body;
    size_t lines;
    uint64_t seq;            /* age of the oldest data in it */
    int attempts;            /* backoff rounds so far */
    int round_fails;         /* host failures since the last backoff */
    int is_retry;
    int url_idx;
    int64_t next_at;
    char *url;
    int spooled;             /* read from the spool: acknowledged there, never dropped for memory */
    ts_spool_pos pos;
    int *pieces;             /* split after a 413: pieces of the record still unanswered (shared) */
    ts_batch *src;           /* a live record not yet encoded: these points of a shared batch */
    size_t src_from, src_to;
    struct ts_wqueue_chunk *prev, *next;
} ts_wqueue_chunk;

struct ts_writer {
    ts_loop *loop;
    ts_influx *influx;       /* the target's servers, with the failover memory the Lua API shares */
    int gzip;
    size_t max_publish_size, max_buffer_bytes;
    int max_inflight;
    long backoff_min, backoff_max;
    int (*evict)(void *, const ts_dest *, const char *, size_t, size_t);
    void *evict_ud;

    ts_wqueue_dest *dests, *rr;
    ts_wqueue_chunk *retry_head, *retry_tail;   /* sorted by seq, oldest first */
    ts_wqueue_chunk *inflight;
    int ninflight;
    size_t bytes_held;                /* pending batches + retry bodies */
    uint64_t seq;
    int flushing, draining, in_pump;
    int timer_id;
    int64_t timer_due;
    uint64_t rng;
    ts_wqueue_counts st;
    uint64_t drop_ret;                /* dropped during the current drain */

    /* Kept from finished work for the next polls and publishes (see batch.c's pool). */
    ts_batch_pool *pool;
    int pool_owned;                   /* not when the daemon shares one between its writers */
    ts_buf spare_bodies[16];          /* with live records: about live_cap of them (wqueue.c) */
    int nspare_bodies;

    /* The spool (see ts_writer.h): records read back through one consumer,
     * at most replay_rate lines a second (a token bucket of one second). */
    ts_spool *spool;
    ts_spool_consumer *cons;
    double replay_rate, tokens;
    int64_t tokens_at;
    int spool_dry;                    /* the last read found nothing new */
    ts_wqueue_chunk *parked;                    /* read, but its destination waits on retries */
    /* Live records: appended and claimed (ts_spool_claim), sent from memory
     * before any replay, never read back; at most live_cap bytes. */
    ts_wqueue_chunk *live_head, *live_tail;
    size_t live_bytes, live_cap;
    int rate_timer, sync_timer;
    ts_buf spool_buf;

    /* Recovery without waiting on backoff: while every server failed, a GET
     * /ping runs every second and the first answer sends the retries at once;
     * after a failover the servers listed before the current one are pinged
     * every 10 s and the first that answers is written to again (failback). */
    int host_down;
    struct ts_wsend_probe *probe;     /* in flight (one at a time) */
    int probe_timer, probe_next;
    int64_t failback_at;


    /* The pump (writer.c): the rooms below it ask for it through this hook
     * after an answer or a timer, so none of them includes the writer. */
    void (*pump)(struct ts_writer *w);

    ts_counter *c_written, *c_rejected, *c_dropped, *c_ok, *c_failed, *c_bytes, *c_retries,
        *c_invalid, *c_spooled, *c_db_missing;
    int64_t db_missing_logged;        /* mono ms of the last "run setup-influx" line */
};

/* Full jitter: uniform in [min, min(max, min * 2^(attempts-1))]; short while draining. */
int64_t ts_wqueue_backoff_ms(ts_writer *w, int attempts);
/* Ask for the pump (see ts_writer.pump). */
void ts_wqueue_pump(ts_writer *w);
/* The destination record of d, created (in order of first appearance) if new. */
ts_wqueue_dest *ts_wqueue_dest_get(ts_writer *w, const ts_dest *d);
/* A body buffer for a new chunk: a spare of a sent one, or an empty one. */
ts_buf ts_wqueue_spare_body(ts_writer *w);
/* A sent chunk's body goes back for the next chunk; the chunk is freed. */
void ts_wqueue_recycle_body(ts_writer *w, ts_wqueue_chunk *c);
void ts_wqueue_chunk_free(ts_wqueue_chunk *c);
/* A piece of a split record that will never be answered (shutdown): the record stays in the spool. */
void ts_wqueue_pieces_release(ts_wqueue_chunk *c);
const char *ts_wqueue_rp(const ts_dest *d);   /* rp, or "(default)" for the logs */

void ts_wqueue_count_dropped(ts_writer *w, ts_wqueue_dest *d, size_t n);
/* Offer an encoded body to the spool seam; returns 1 if it kept it. */
int ts_wqueue_offer_evict(ts_writer *w, const ts_dest *d, const char *body, size_t len, size_t lines);

void ts_wqueue_retry_unlink(ts_writer *w, ts_wqueue_chunk *c);
void ts_wqueue_retry_insert(ts_writer *w, ts_wqueue_chunk *c);   /* sorted by seq */
void ts_wqueue_inflight_unlink(ts_writer *w, ts_wqueue_chunk *c);
/* Drop a chunk from the retry queue (memory bound or shutdown). */
void ts_wqueue_drop_retry(ts_writer *w, ts_wqueue_chunk *c, const char *why);
/* Unlinks d's oldest pending batch and returns it. */
ts_batch *ts_wqueue_pend_pop(ts_writer *w, ts_wqueue_dest *d);
/* Drop the oldest pending batch of d (what remains of it). */
void ts_wqueue_drop_batch(ts_writer *w, ts_wqueue_dest *d, const char *why);
/* Keep bytes_held <= max_buffer_bytes, dropping the oldest data first. */
void ts_wqueue_enforce_bound(ts_writer *w);

#endif
