/* The writer (C core). Batches are held per destination (database, retention
 * policy, precision); at every publish tick they are encoded into chunks of
 * at most max_publish_size lines and sent to the target (today InfluxDB 1.x
 * /write, its answers classified as ts_influx.h says): 2xx done; 400 the
 * points the server dropped counted, not retried; auth / database / RP
 * missing kept for retry with backoff; other 5xx, transport errors and
 * timeouts retried with exponential backoff and jitter, failing over to the
 * next URL. Memory held by pending and retrying data is bounded
 * (max_buffer_bytes): when full, the oldest data is dropped and counted.
 * The spool seam (ts_writer_opts.evict) is called with every chunk about to
 * be dropped so an on-disk spool can keep it instead. */
#ifndef TS_WRITER_H
#define TS_WRITER_H
#include <stddef.h>
#include <stdint.h>
#include "ts_batch.h"
#include "ts_http.h"
#include "ts_influx.h"
#include "ts_spool.h"
#include "ts_target.h"

typedef struct ts_writer ts_writer;

typedef struct ts_writer_opts {
    const char *const *urls;  /* NULL-terminated list of InfluxDB base URLs (http[s]://host:port) */
    const char *user, *password;
    int insecure;
    const char *ca_file;
    ts_tls tls;               /* CA path, client certificate (insecure / ca_file above also count) */
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
    /* The on-disk spool (NULL: memory only). With one, every submitted batch
     * is encoded into records of at most max_publish_size lines and appended
     * before submit returns (what the spool refuses stays in memory as
     * without one), the target reads them back through its consumer
     * (`spool_consumer`, default "influx"), acknowledges each record once
     * InfluxDB answered it for good, and keeps at most max_inflight records
     * plus one in memory while it is down: the spool holds the backlog.
     * The spool is not owned (the daemon opens and closes it) and is set at
     * ts_writer_new only; reconfigure keeps it. */
    ts_spool *spool;
    const char *spool_consumer;
    int spool_start_end;      /* a consumer seen for the first time starts at the end, not the oldest record */
    /* Where consumed compact batches go back, shared and not owned (the
     * owner calls ts_batch_pool_interval); NULL: the writer's own. */
    ts_batch_pool *pool;
    double replay_rate;       /* lines per second read from the spool; default 500000 */
} ts_writer_opts;

ts_writer *ts_writer_new(ts_loop *loop, const ts_writer_opts *o);
/* Replace URLs / credentials / limits (SIGHUP) without losing buffered data. */
int ts_writer_reconfigure(ts_writer *w, const ts_writer_opts *o);
/* Takes ownership of b. Enforces max_buffer_bytes by dropping the oldest data. */
void ts_writer_submit(ts_writer *w, ts_batch *b);
/* The servers the writer sends to; the Lua API shares them (and so the
 * memory of which one answered last). Owned by the writer. */
ts_influx *ts_writer_influx(ts_writer *w);
/* Where the collector takes its compact batches: spares of sent ones. */
ts_batch_pool *ts_writer_pool(ts_writer *w);
/* Keeps b in memory only (takes it): the caller did the spool step (a
 * target list sharing one spool between its targets, ts_target.h). */
void ts_writer_submit_memory(ts_writer *w, ts_batch *b);
/* 1 when it reads the spool through its consumer (0: memory only). */
int ts_writer_reads_spool(const ts_writer *w);
/* 1 while the writer has servers and not every one of them failed. */
int ts_writer_healthy(const ts_writer *w);
/* w as a target of the InfluxDB kind (the target owns w: close frees it). */
ts_target *ts_writer_target(ts_writer *w, const char *name);
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
    uint64_t retries;          /* chunks sent again after a failure */
    uint64_t bytes_sent;
    uint64_t points_spooled;   /* appended to the spool by submit */
    uint64_t split_413;        /* chunks resent as two halves after HTTP 413 */
    uint64_t points_left_in_spool;  /* read from the spool, unanswered at shutdown: sent again at the next start */
    uint64_t spool_backlog_bytes;   /* spool bytes not acknowledged by this writer's target */
    uint64_t spool_replay_bytes;    /* from its durable spool position to the end (ts_spool_cstats) */
    int64_t spool_oldest_age_ms;    /* age of the oldest spool record it has not acknowledged; -1 none */
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

#endif
