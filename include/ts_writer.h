/* InfluxDB writer (C core). Points are buffered per destination (database,
 * retention policy, precision) as batches; at every publish tick they are
 * encoded into chunks of at most max_publish_size lines and POSTed to
 * /write. Answers are classified as InfluxDB 1.6 gives them (RUNTIME.md):
 *   204          ok
 *   400          partial write / unable to parse / beyond retention / type
 *                conflict: the server's message is logged, the points the
 *                server dropped are counted, the chunk is NOT retried
 *   401/403      auth refused: logged, kept for retry
 *   404          database not found: logged, kept for retry with backoff
 *   500 "retention policy not found": logged, kept for retry with backoff
 *   other 5xx, transport errors, timeouts: retried with exponential backoff
 *                and jitter, failing over to the next URL.
 * Memory held by pending and retrying data is bounded (max_buffer_bytes):
 * when full, the oldest data is dropped and counted. The spool seam
 * (ts_writer_opts.evict) is called with every chunk about to be dropped so
 * a later on-disk spool can keep it instead. */
#ifndef TS_WRITER_H
#define TS_WRITER_H
#include <stddef.h>
#include <stdint.h>
#include "ts_http.h"
#include "ts_lp.h"
#include "ts_point.h"

typedef struct ts_writer ts_writer;

/* A destination: where a batch goes. */
typedef struct ts_dest {
    char db[128];
    char rp[128];             /* "" = the database's default RP (no rp= parameter) */
    ts_precision precision;   /* TS_PREC_MS for stats, TS_PREC_S for daily points */
} ts_dest;

/* Owner of the stat/entity maps that compact points point into. The writer
 * holds one reference per batch and calls release when a batch is done. */
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
/* Append one already-encoded line (no trailing newline needed; one is added). */
void ts_batch_add_line(ts_batch *b, const char *line, size_t len);
size_t ts_batch_points(const ts_batch *b);
size_t ts_batch_bytes(const ts_batch *b);  /* memory it holds */
const ts_dest *ts_batch_dest(const ts_batch *b);
void ts_batch_free(ts_batch *b);
/* Append every line of b to out (b is left as it was); returns the line count. */
size_t ts_batch_encode(const ts_batch *b, ts_buf *out);

typedef struct ts_writer_opts {
    const char *const *urls;  /* NULL-terminated list of InfluxDB base URLs (http[s]://host:port) */
    const char *user, *password;
    int insecure;
    const char *ca_file;
    int gzip;                 /* gzip request bodies */
    long timeout_ms;          /* per write request; default 30000 */
    long connect_timeout_ms;  /* default 5000 */
    size_t max_publish_size;  /* lines per chunk; default 10000 */
    size_t max_buffer_bytes;  /* default 256 MiB */
    int max_inflight;         /* concurrent write requests; default 2 */
    long backoff_min_ms, backoff_max_ms;  /* default 1000, 60000 */
    /* Spool seam: called with a chunk's encoded body before it is dropped for
     * lack of memory. Return 1 if it was kept (the writer then counts it as
     * spooled, not dropped). May be NULL. */
    int (*evict)(void *ud, const ts_dest *d, const char *body, size_t len, size_t lines);
    void *evict_ud;
} ts_writer_opts;

ts_writer *ts_writer_new(ts_loop *loop, const ts_writer_opts *o);
/* Replace URLs / credentials / limits (SIGHUP) without losing buffered data. */
int ts_writer_reconfigure(ts_writer *w, const ts_writer_opts *o);
/* Takes ownership of b. Enforces max_buffer_bytes by dropping the oldest data. */
void ts_writer_submit(ts_writer *w, ts_batch *b);
/* A compact batch for a poll like the last one (`points`, `runs` as
 * ts_batch_reserve), built on the arrays of a batch w has already sent when
 * it has one: reused memory instead of fresh pages every poll. */
ts_batch *ts_writer_new_compact(ts_writer *w, const ts_dest *d, const ts_map_owner *owner, size_t points,
                                size_t runs);
/* Publish tick: encode pending batches into chunks and start sending them. */
void ts_writer_flush(ts_writer *w);
/* Shutdown: flush everything and run the loop until all is written or
 * deadline (ts_mono_ms based) passes. Returns the number of points that
 * could not be written (and were dropped + counted + logged). */
size_t ts_writer_drain(ts_writer *w, int64_t deadline_mono_ms);

typedef struct ts_writer_stats {
    uint64_t points_written;   /* acknowledged by InfluxDB (204) */
    uint64_t points_rejected;  /* 400 partial writes: points the server dropped */
    uint64_t points_dropped;   /* dropped by us (memory bound, shutdown timeout) */
    uint64_t points_pending;   /* buffered + retrying now */
    uint64_t bytes_pending;
    uint64_t requests_ok, requests_failed;
    uint64_t bytes_sent;
} ts_writer_stats;
void ts_writer_get_stats(const ts_writer *w, ts_writer_stats *s);
/* Per destination (read-only, for the metrics): fills at most max, returns how many. */
typedef struct ts_writer_dest_stats {
    ts_dest dest;
    uint64_t written, rejected, dropped, pending;
} ts_writer_dest_stats;
int ts_writer_get_dest_stats(const ts_writer *w, ts_writer_dest_stats *out, int max);
/* Chunks waiting out a backoff, and the time until the first of them is due (0: none). */
void ts_writer_get_retry_state(const ts_writer *w, uint64_t *chunks, int64_t *next_in_ms);
/* The URL currently preferred, credentials left out ("" if none). */
void ts_writer_current_url_text(const ts_writer *w, char *out, size_t n);
/* Index into urls of the server currently preferred (-1 if none). */
int ts_writer_current_url(const ts_writer *w);
/* Free the writer before its loop: in-flight requests are orphaned and
 * freed when the loop completes or aborts them. Unwritten data is not
 * counted (call ts_writer_drain first). */
void ts_writer_free(ts_writer *w);

/* Points InfluxDB did not store, from a 400 answer's error text for a chunk
 * of `lines` lines: one per "unable to parse '...'" plus N of "dropped=N";
 * the whole chunk when the text has neither. */
size_t ts_writer_rejected_count(const char *msg, size_t lines);

/* Where blocking InfluxDB requests go (the writer's settings, or the Lua
 * API's from the configuration). */
typedef struct ts_influx_conn {
    const char *const *urls;
    int nurls;
    const char *user, *password, *ca_file;
    int insecure;
    long timeout_ms, connect_timeout_ms;
} ts_influx_conn;

/* One blocking POST of body to <url><path_query>, over the URL list from
 * *preferred on (NULL: the first): transport errors and 5xx answers that are
 * not InfluxDB's own JSON errors move on to the next URL. Returns 0 with the
 * answer in out (any status; *preferred = the URL that gave it), or -1 with
 * every URL's failure in err (no credentials in it). */
int ts_influx_post(const ts_influx_conn *c, int *preferred, const char *path_query, const char *body, size_t len,
                   const char *ctype, size_t max_body, ts_http_result *out, char *err, size_t errlen);

/* Blocking InfluxQL query: POST <url>/query with q=, db=, epoch=. Returns 0 and
 * the raw JSON in out, or -1 with a message in err. Tries URLs in the writer's
 * preferred order. */
int ts_writer_query(ts_writer *w, const char *db, const char *q, const char *epoch,
                    ts_buf *out, char *err, size_t errlen);

#endif
