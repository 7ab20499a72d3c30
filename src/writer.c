/* The writer (C core; Lua only submits batches through the API): its public
 * face and the pump. Pending batches per destination are encoded lazily into
 * chunks of at most max_publish_size lines (one chunk per free send slot, so
 * at most max_inflight+1 encoded chunks exist besides the retry queue) and
 * sent; the rooms below it hold the rest: wqueue.c the queues, drops and the
 * memory bound; wspool.c the spool side; wsend.c the InfluxDB requests,
 * their answers and the probes. Batches live in batch.c, the protocol in
 * influx.c. */
#include "ts_writer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_clock.h"
#include "ts_influx.h"
#include "ts_log.h"
#include "ts_wqueue.h"
#include "ts_wsend.h"
#include "ts_wspool.h"

static void pump(ts_writer *w);
static void arm_timer(ts_writer *w);

static ts_influx_opts influx_opts(const ts_writer_opts *o) {
    return (ts_influx_opts){o->urls, o->user, o->password, o->insecure, o->ca_file, o->timeout_ms,
                            o->connect_timeout_ms, o->tls};
}

static void set_opts(ts_writer *w, const ts_writer_opts *o) {
    w->gzip = o->gzip;
    w->max_publish_size = o->max_publish_size > 0 ? o->max_publish_size : 10000;
    w->max_buffer_bytes = o->max_buffer_bytes > 0 ? o->max_buffer_bytes : ((size_t)256 << 20);
    w->max_inflight = o->max_inflight > 0 ? o->max_inflight : 2;
    w->backoff_min = o->backoff_min_ms > 0 ? o->backoff_min_ms : 1000;
    w->backoff_max = o->backoff_max_ms > 0 ? o->backoff_max_ms : 60000;
    if (w->backoff_max < w->backoff_min) w->backoff_max = w->backoff_min;
    w->evict = o->evict;
    w->evict_ud = o->evict_ud;
    if (!w->evict && w->spool) {
        /* what memory cannot keep goes to the spool, if it takes it again */
        w->evict = ts_wspool_evict;
        w->evict_ud = w;
    }
    w->replay_rate = o->replay_rate > 0 ? o->replay_rate : 500000;
    /* Live records kept in memory until the publish: about one poll of the
     * 84k-point workload (8.4 MB of line protocol), so peak RSS stays near
     * the spool-off figure (32 MiB raised it to 48 MB); the rest of a
     * publishing interval is read back. */
    w->live_cap = w->max_buffer_bytes / 4 < ((size_t)12 << 20) ? w->max_buffer_bytes / 4 : (size_t)12 << 20;
}

static void on_timer(void *ud);

ts_writer *ts_writer_new(ts_loop *loop, const ts_writer_opts *o) {
    ts_writer *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->loop = loop;
    w->pump = pump;
    ts_influx_opts io = influx_opts(o);
    w->influx = ts_influx_new(&io);
    w->pool_owned = !o->pool;
    w->pool = o->pool ? o->pool : ts_batch_pool_new();
    w->spool = o->spool;
    ts_buf_init(&w->spool_buf);
    if (w->spool) {
        const char *name = o->spool_consumer && *o->spool_consumer ? o->spool_consumer : "influx";
        w->cons = ts_spool_consumer_open(w->spool, name, o->spool_start_end ? TS_SPOOL_START_END : TS_SPOOL_START_OLDEST);
        if (!w->cons) {
            ts_error("writer: spool consumer '%s' cannot be opened (already open?): writing from memory only", name);
            w->spool = NULL;
        } else {
            ts_spool_cstats cs;
            ts_spool_consumer_stats(w->cons, &cs);
            if (cs.backlog_bytes > 0)
                ts_info("writer: %llu bytes in the spool not yet written to InfluxDB: replaying (at most %.0f "
                        "points/s)",
                        (unsigned long long)cs.backlog_bytes, o->replay_rate > 0 ? o->replay_rate : 500000.0);
            w->flushing = cs.backlog_bytes > 0;   /* replay now, not at the first publish */
            /* and something must pump: nothing else does before the first publish tick (up to
             * publishing_interval after the start) */
            if (w->flushing) w->timer_id = ts_loop_timer(loop, w->timer_due = ts_mono_ms(), on_timer, w);
        }
        w->tokens_at = ts_mono_ms();
    }
    set_opts(w, o);
    if (ts_influx_nurls(w->influx) == 0) ts_warn("writer: no InfluxDB URLs configured; data will be buffered, then dropped");
    w->rng = (uint64_t)ts_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)w;
    if (!w->rng) w->rng = 88172645463325252ULL;
    w->c_written = ts_counter_get("writer_points_written");
    w->c_rejected = ts_counter_get("writer_points_rejected");
    w->c_dropped = ts_counter_get("writer_points_dropped");
    w->c_ok = ts_counter_get("writer_requests_ok");
    w->c_failed = ts_counter_get("writer_requests_failed");
    w->c_bytes = ts_counter_get("writer_bytes_sent");
    w->c_retries = ts_counter_get("writer_retries");
    w->c_invalid = ts_counter_get("writer_points_invalid");
    w->c_spooled = ts_counter_get("writer_points_spooled");
    w->c_db_missing = ts_counter_get("writer_database_missing");
    return w;
}

int ts_writer_reconfigure(ts_writer *w, const ts_writer_opts *o) {
    /* Strings handed to curl are copied at request start, and a chunk in
     * flight keeps its own URL, so in-flight requests need none of the old ones. */
    ts_influx_opts io = influx_opts(o);
    ts_influx_update(w->influx, &io);
    set_opts(w, o);
    pump(w);
    return 0;
}

ts_influx *ts_writer_influx(ts_writer *w) { return w->influx; }
ts_batch_pool *ts_writer_pool(ts_writer *w) { return w->pool; }

void ts_writer_submit(ts_writer *w, ts_batch *b) {
    if (!b) return;
    if (ts_batch_points(b) == 0) { ts_batch_pool_put(w->pool, b); return; }
    if (w->spool) {
        ts_batch *rest;
        if (ts_wspool_batch(w, b, &rest)) { ts_batch_pool_put(w->pool, b); return; }
        /* the spool refused (disk full, unwritable: logged there): memory keeps it */
        ts_writer_submit_memory(w, rest);
        if (ts_batch_points(b) == 0) { ts_batch_pool_put(w->pool, b); return; }
    }
    ts_writer_submit_memory(w, b);
}

void ts_writer_submit_memory(ts_writer *w, ts_batch *b) {
    if (!b) return;
    if (ts_batch_points(b) == 0) { ts_batch_pool_put(w->pool, b); return; }
    ts_wqueue_dest *d = ts_wqueue_dest_get(w, ts_batch_dest(b));
    ts_wqueue_pend *n = malloc(sizeof *n);
    if (!n) abort();
    *n = (ts_wqueue_pend){b, ++w->seq, NULL};
    if (d->tail) d->tail->next = n; else d->head = n;
    d->tail = n;
    d->pending_points += ts_batch_points(b);
    w->bytes_held += ts_batch_bytes(b);
    ts_batch_pool_hold(w->pool, b);
    ts_wqueue_enforce_bound(w);
}

/* Next chunk from d's pending batches: up to max_publish_size lines. */
static ts_wqueue_chunk *encode_chunk(ts_writer *w, ts_wqueue_dest *d) {
    ts_wqueue_chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->d = d;
    c->seq = d->head ? d->head->seq : w->seq;
    c->body = ts_wqueue_spare_body(w);
    /* One allocation at about the final size instead of a dozen doubling
     * copies of a megabyte-sized body (CacheStats lines are ~90-130 bytes). */
    size_t expect = d->pending_points < w->max_publish_size ? d->pending_points : w->max_publish_size;
    ts_buf_reserve(&c->body, expect * 128 + 256);
    size_t invalid = 0;
    while (d->head && c->lines < w->max_publish_size) {
        ts_batch *b = d->head->b;
        size_t before = ts_batch_bytes(b), taken = 0;
        c->lines += ts_batch_take(b, &c->body, w->max_publish_size - c->lines, &taken, &invalid);
        w->bytes_held -= before - ts_batch_bytes(b);
        d->pending_points -= taken;
        if (ts_batch_points(b) == 0) ts_batch_pool_put(w->pool, ts_wqueue_pend_pop(w, d));
    }
    if (invalid) {
        ts_counter_add(w->c_invalid, (int64_t)invalid);
        ts_debug("writer: skipped %zu NaN/Inf points for %s", invalid, d->d.db);
    }
    return c;
}


static void on_timer(void *ud) {
    ts_writer *w = ud;
    w->timer_id = 0;
    pump(w);
}

static void arm_timer(ts_writer *w) {
    int64_t now = ts_mono_ms(), due = INT64_MAX;
    for (ts_wqueue_chunk *c = w->retry_head; c; c = c->next)
        if (c->next_at < due) due = c->next_at;
    /* A retry that is already due waits for a free slot: the completion
     * that frees it pumps, so no timer (it would spin). */
    if (due == INT64_MAX || due <= now) {
        if (w->timer_id) { ts_loop_timer_cancel(w->loop, w->timer_id); w->timer_id = 0; }
        return;
    }
    if (w->timer_id && w->timer_due == due) return;
    if (w->timer_id) ts_loop_timer_cancel(w->loop, w->timer_id);
    w->timer_due = due;
    w->timer_id = ts_loop_timer(w->loop, due, on_timer, w);
}

static ts_wqueue_dest *next_ready_dest(ts_writer *w) {
    if (!w->dests) return NULL;
    ts_wqueue_dest *start = w->rr ? w->rr : w->dests;
    ts_wqueue_dest *d = start;
    do {
        ts_wqueue_dest *nx = d->next ? d->next : w->dests;
        /* a destination with unresolved failures sends only its failed
         * chunks (as probes); new data stays compact until they succeed */
        if (d->head && d->nretry == 0) { w->rr = nx; return d; }
        d = nx;
    } while (d != start);
    return NULL;
}

static void pump(ts_writer *w) {
    if (w->in_pump) return;
    w->in_pump = 1;
    int64_t now = ts_mono_ms();
    while (w->ninflight < w->max_inflight) {
        ts_wqueue_chunk *c = w->retry_head;
        while (c && c->next_at > now) c = c->next;
        if (c) {
            ts_wqueue_retry_unlink(w, c);
            w->bytes_held -= c->body.len;
            if (ts_wsend_chunk(w, c) != 0) break;
            continue;
        }
        if (!w->flushing) break;
        /* live points first, never behind a replayed backlog */
        if ((c = ts_wspool_live_next(w)) != NULL) {
            if (ts_wsend_chunk(w, c) != 0) break;
            continue;
        }
        /* then the spool's backlog, oldest first, at most replay_rate */
        if (w->parked && w->parked->d->nretry == 0) {
            c = w->parked;
            w->parked = NULL;
            if (ts_wsend_chunk(w, c) != 0) break;
            continue;
        }
        if (!w->parked && (c = ts_wspool_next(w)) != NULL) {
            /* a destination with unresolved failures waits (see next_ready_dest) */
            if (c->d->nretry > 0) w->parked = c;
            else if (ts_wsend_chunk(w, c) != 0) break;
            continue;
        }
        ts_wqueue_dest *d = next_ready_dest(w);
        if (!d) break;
        c = encode_chunk(w, d);
        if (c->lines == 0) { ts_wqueue_recycle_body(w, c); continue; }
        if (ts_wsend_chunk(w, c) != 0) break;
    }
    if (w->flushing) {
        int any = w->parked != NULL || w->live_head != NULL || (w->cons && !w->spool_dry) || w->rate_timer != 0;
        for (ts_wqueue_dest *d = w->dests; d; d = d->next) any |= d->head != NULL;
        if (!any) w->flushing = 0;
    }
    arm_timer(w);
    w->in_pump = 0;
}

void ts_writer_flush(ts_writer *w) {
    if (w->pool_owned) ts_batch_pool_interval(w->pool);   /* a shared pool: its owner says when */
    w->flushing = 1;
    w->spool_dry = 0;
    if (w->spool) ts_spool_tick(w->spool);
    pump(w);
}

static int has_work(const ts_writer *w) {
    if (w->ninflight > 0 || w->retry_head || w->parked || w->live_head) return 1;
    if (w->cons && !w->spool_dry) return 1;
    for (ts_wqueue_dest *d = w->dests; d; d = d->next)
        if (d->head) return 1;
    return 0;
}

size_t ts_writer_drain(ts_writer *w, int64_t deadline) {
    w->draining = 1;
    w->drop_ret = 0;
    int64_t now = ts_mono_ms();
    for (ts_wqueue_chunk *c = w->retry_head; c; c = c->next) c->next_at = now;
    ts_writer_flush(w);
    while (has_work(w) && (now = ts_mono_ms()) < deadline) {
        int64_t left = deadline - now;
        ts_loop_run_once(w->loop, left < 50 ? (int)left : 50);
        w->flushing = 1;   /* anything submitted meanwhile goes too */
        pump(w);
    }
    /* Past the deadline: in-flight chunks are given up (their completion
     * will find them orphaned), then the queues are emptied. */
    while (w->inflight) {
        /* oldest first (the list is newest first), so a spool keeps order */
        ts_wqueue_chunk *c = w->inflight;
        while (c->next) c = c->next;
        ts_wqueue_inflight_unlink(w, c);
        if (c->is_retry) c->d->nretry--;
        if (c->spooled) {
            w->st.points_left_in_spool += c->lines;   /* unacknowledged: read again at the next start */
            ts_wqueue_pieces_release(c);
        } else if (!ts_wqueue_offer_evict(w, &c->d->d, c->body.data, c->body.len, c->lines)) {
            ts_wqueue_count_dropped(w, c->d, c->lines);
            ts_warn("writer: dropped %zu points for %s/%s (shutdown deadline, request still in flight)", c->lines,
                    c->d->d.db, ts_wqueue_rp(&c->d->d));
        }
        c->w = NULL;
    }
    while (w->retry_head) ts_wqueue_drop_retry(w, w->retry_head, "shutdown deadline");
    if (w->parked) {
        w->st.points_left_in_spool += w->parked->lines;
        ts_wqueue_chunk_free(w->parked);
        w->parked = NULL;
    }
    ts_wspool_live_release(w);
    if (w->spool) ts_spool_sync(w->spool);
    for (ts_wqueue_dest *d = w->dests; d; d = d->next)
        while (d->head) ts_wqueue_drop_batch(w, d, "shutdown deadline");
    w->flushing = 0;
    w->draining = 0;
    arm_timer(w);
    size_t n = (size_t)w->drop_ret;
    if (n) ts_warn("writer: shutdown: %zu points could not be written", n);
    if (w->cons) {
        ts_spool_cstats cs;
        ts_spool_consumer_stats(w->cons, &cs);
        if (cs.backlog_bytes)
            ts_info("writer: shutdown: %llu bytes stay in the spool for the next start",
                    (unsigned long long)cs.backlog_bytes);
    }
    return n;
}

void ts_writer_get_stats(const ts_writer *w, ts_writer_stats *s) {
    *s = (ts_writer_stats){.points_written = w->st.points_written,
                           .points_rejected = w->st.points_rejected,
                           .points_dropped = w->st.points_dropped,
                           .requests_ok = w->st.requests_ok,
                           .requests_failed = w->st.requests_failed,
                           .retries = w->st.retries,
                           .bytes_sent = w->st.bytes_sent,
                           .points_spooled = w->st.points_spooled,
                           .split_413 = w->st.split_413,
                           .points_left_in_spool = w->st.points_left_in_spool};
    uint64_t pts = 0;
    for (ts_wqueue_dest *d = w->dests; d; d = d->next) pts += d->pending_points;
    for (ts_wqueue_chunk *c = w->retry_head; c; c = c->next) pts += c->lines;
    for (ts_wqueue_chunk *c = w->inflight; c; c = c->next) pts += c->lines;
    if (w->parked) pts += w->parked->lines;
    s->points_pending = pts;
    s->bytes_pending = w->bytes_held;
    s->spool_oldest_age_ms = w->cons ? ts_spool_oldest_age_ms(w->cons) : -1;
    if (w->cons) {
        ts_spool_cstats cs;
        ts_spool_consumer_stats(w->cons, &cs);
        s->spool_backlog_bytes = cs.backlog_bytes;
        s->spool_replay_bytes = cs.replay_bytes;
    }
}

int ts_writer_current_url(const ts_writer *w) { return ts_influx_current(w->influx); }

int ts_writer_get_dest_stats(const ts_writer *w, ts_writer_dest_stats *out, int max) {
    int n = 0;
    for (ts_wqueue_dest *d = w->dests; d && n < max; d = d->next, n++) {
        ts_writer_dest_stats *o = &out[n];
        o->dest = d->d;
        o->written = d->written;
        o->rejected = d->rejected;
        o->dropped = d->dropped;
        o->pending = d->pending_points;
        for (ts_wqueue_chunk *c = w->retry_head; c; c = c->next) if (c->d == d) o->pending += c->lines;
        for (ts_wqueue_chunk *c = w->inflight; c; c = c->next) if (c->d == d) o->pending += c->lines;
    }
    return n;
}

void ts_writer_get_retry_state(const ts_writer *w, uint64_t *chunks, int64_t *next_in_ms) {
    uint64_t n = 0;
    int64_t next = 0, now = ts_mono_ms();
    for (ts_wqueue_chunk *c = w->retry_head; c; c = c->next) {
        n++;
        int64_t in = c->next_at > now ? c->next_at - now : 0;
        if (n == 1 || in < next) next = in;
    }
    *chunks = n;
    *next_in_ms = next;
}

void ts_writer_current_url_text(const ts_writer *w, char *out, size_t n) {
    const char *u = ts_influx_url(w->influx, ts_influx_current(w->influx));
    if (u) ts_influx_safe_url(out, n, u);
    else if (n) out[0] = '\0';
}

void ts_writer_free(ts_writer *w) {
    if (!w) return;
    if (w->timer_id) ts_loop_timer_cancel(w->loop, w->timer_id);
    ts_wsend_free(w);
    if (w->rate_timer) ts_loop_timer_cancel(w->loop, w->rate_timer);
    if (w->sync_timer) ts_loop_timer_cancel(w->loop, w->sync_timer);
    if (w->parked) ts_wqueue_chunk_free(w->parked);
    w->parked = NULL;
    ts_wspool_live_release(w);
    ts_buf_free(&w->spool_buf);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    /* its position is saved; the spool itself belongs to the daemon */
    if (w->cons) ts_spool_consumer_close(w->cons);
    w->cons = NULL;
    if (s.points_pending) ts_warn("writer: freed with %llu points not written", (unsigned long long)s.points_pending);
    for (ts_wqueue_chunk *c = w->inflight; c; c = c->next) c->w = NULL;   /* freed by their completion */
    while (w->retry_head) {
        ts_wqueue_chunk *c = w->retry_head;
        ts_wqueue_retry_unlink(w, c);
        ts_wqueue_chunk_free(c);
    }
    while (w->dests) {
        ts_wqueue_dest *d = w->dests;
        w->dests = d->next;
        while (d->head) ts_batch_free(ts_wqueue_pend_pop(w, d));
        free(d->path);
        free(d);
    }
    if (w->pool_owned) ts_batch_pool_free(w->pool);
    for (int i = 0; i < w->nspare_bodies; i++) ts_buf_free(&w->spare_bodies[i]);
    ts_influx_free(w->influx);
    free(w);
}


int ts_writer_reads_spool(const ts_writer *w) { return w->cons != NULL; }

int ts_writer_healthy(const ts_writer *w) { return ts_influx_nurls(w->influx) > 0 && !w->host_down; }

/* ---- the InfluxDB kind of target (ts_target.h) ---- */

static void t_submit(void *self, ts_batch *b) { ts_writer_submit_memory(self, b); }
static int t_reads_spool(void *self) { return ts_writer_reads_spool(self); }
static void t_tick(void *self) { ts_writer_flush(self); }
static int t_healthy(void *self) { return ts_writer_healthy(self); }
static size_t t_drain(void *self, int64_t deadline) { return ts_writer_drain(self, deadline); }
static void t_close(void *self) { ts_writer_free(self); }
static int t_live(void *self, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                  ts_spool_pos at, ts_spool_pos next) {
    return ts_wspool_live(self, d, b, from, to, lines, at, next);
}

static void t_stats(void *self, ts_target_stats *s) {
    ts_writer_stats ws;
    ts_writer_get_stats(self, &ws);
    *s = (ts_target_stats){.written = ws.points_written,
                           .rejected = ws.points_rejected,
                           .dropped = ws.points_dropped,
                           .pending = ws.points_pending,
                           .pending_bytes = ws.bytes_pending,
                           .spool_backlog_bytes = ws.spool_backlog_bytes,
                           .spool_replay_bytes = ws.spool_replay_bytes,
                           .spool_oldest_age_ms = ws.spool_oldest_age_ms,
                           .requests_ok = ws.requests_ok,
                           .requests_failed = ws.requests_failed,
                           .retries = ws.retries,
                           .bytes_sent = ws.bytes_sent};
}

static const ts_target_ops influx_ops = {"influxdb", t_submit, t_reads_spool, t_tick, t_healthy, t_stats, t_drain,
                                         t_close, t_live};

ts_target *ts_writer_target(ts_writer *w, const char *name) { return ts_target_new(&influx_ops, w, name); }
