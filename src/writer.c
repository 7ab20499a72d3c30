/* The writer (C core; Lua only submits batches through the API): pending
 * batches per destination, encoded lazily into chunks of at most
 * max_publish_size lines (one chunk per free send slot, so at most
 * max_inflight+1 encoded chunks exist besides the retry queue), sent to the
 * target, retried with backoff, and the memory it holds kept under
 * max_buffer_bytes by dropping the oldest data. The target's kind-specific
 * part (today InfluxDB 1.x: request, classification, host failover) is the
 * "target" section below; batches live in batch.c, the protocol in influx.c. */
#include "ts_writer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_influx.h"
#include "ts_log.h"

/* ---- writer state ---- */

/* A pending batch: its arrival order across the writer is its age for "drop oldest". */
typedef struct pend {
    ts_batch *b;
    uint64_t seq;
    struct pend *next;
} pend;

typedef struct dest {
    ts_dest d;
    char *path;              /* "/write?db=..&rp=..&precision=.." */
    pend *head, *tail;       /* pending, arrival order */
    size_t pending_points;
    int nretry;              /* chunks of this destination failed and not resolved yet */
    uint64_t written, rejected, dropped;   /* per destination, for the metrics */
    struct dest *next;
} dest;

typedef struct chunk {
    struct ts_writer *w;     /* NULL once orphaned (writer freed or drained past) */
    dest *d;
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
    struct chunk *prev, *next;
} chunk;

struct ts_writer {
    ts_loop *loop;
    ts_influx *influx;       /* the target's servers, with the failover memory the Lua API shares */
    int gzip;
    size_t max_publish_size, max_buffer_bytes;
    int max_inflight;
    long backoff_min, backoff_max;
    int (*evict)(void *, const ts_dest *, const char *, size_t, size_t);
    void *evict_ud;

    dest *dests, *rr;
    chunk *retry_head, *retry_tail;   /* sorted by seq, oldest first */
    chunk *inflight;
    int ninflight;
    size_t bytes_held;                /* pending batches + retry bodies */
    uint64_t seq;
    int flushing, draining, in_pump;
    int timer_id;
    int64_t timer_due;
    uint64_t rng;
    ts_writer_stats st;
    uint64_t drop_ret;                /* dropped during the current drain */

    /* Kept from finished work for the next polls and publishes (see batch.c's pool). */
    ts_batch_pool *pool;
    ts_buf spare_bodies[8];
    int nspare_bodies;

    /* The spool (see ts_writer.h): records read back through one consumer,
     * at most replay_rate lines a second (a token bucket of one second). */
    ts_spool *spool;
    ts_spool_consumer *cons;
    double replay_rate, tokens;
    int64_t tokens_at;
    int spool_dry;                    /* the last read found nothing new */
    chunk *parked;                    /* read, but its destination waits on retries */
    int rate_timer, sync_timer;
    ts_buf spool_buf;

    /* Recovery without waiting on backoff: while every server failed, a GET
     * /ping runs every second and the first answer sends the retries at once;
     * after a failover the servers listed before the current one are pinged
     * every 10 s and the first that answers is written to again (failback). */
    int host_down;
    struct probe *probe;              /* in flight (one at a time) */
    int probe_timer, probe_next;
    int64_t failback_at;

    ts_writer *const *mirrors;        /* mirror mode: copies of what stays in memory */
    int nmirrors;

    ts_counter *c_written, *c_rejected, *c_dropped, *c_ok, *c_failed, *c_bytes, *c_retries,
        *c_invalid, *c_spooled, *c_db_missing;
    int64_t db_missing_logged;        /* mono ms of the last "run setup-influx" line */
};

static void pump(ts_writer *w);
static void arm_probe(ts_writer *w);

static uint64_t rnd(ts_writer *w) {
    /* xorshift64*: jitter only, not security */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

/* Full jitter: uniform in [min, min(max, min * 2^(attempts-1))]. */
static int64_t backoff_ms(ts_writer *w, int attempts) {
    if (w->draining) return w->backoff_min < 100 ? w->backoff_min : 100;
    int64_t lo = w->backoff_min, cap = lo;
    for (int i = 1; i < attempts && cap < w->backoff_max; i++) cap *= 2;
    if (cap > w->backoff_max) cap = w->backoff_max;
    if (cap < lo) cap = lo;
    return lo + (int64_t)(rnd(w) % (uint64_t)(cap - lo + 1));
}

static ts_influx_opts influx_opts(const ts_writer_opts *o) {
    return (ts_influx_opts){o->urls, o->user, o->password, o->insecure, o->ca_file, o->timeout_ms,
                            o->connect_timeout_ms, o->tls};
}

static int spool_evict(void *ud, const ts_dest *d, const char *body, size_t len, size_t lines);
static void arm_sync(ts_writer *w);

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
        w->evict = spool_evict;
        w->evict_ud = w;
    }
    w->replay_rate = o->replay_rate > 0 ? o->replay_rate : 500000;
}

ts_writer *ts_writer_new(ts_loop *loop, const ts_writer_opts *o) {
    ts_writer *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->loop = loop;
    ts_influx_opts io = influx_opts(o);
    w->influx = ts_influx_new(&io);
    w->pool = ts_batch_pool_new();
    w->spool = o->spool;
    ts_buf_init(&w->spool_buf);
    if (w->spool) {
        const char *name = o->spool_consumer && *o->spool_consumer ? o->spool_consumer : "influx";
        w->cons = ts_spool_consumer_open(w->spool, name, TS_SPOOL_START_OLDEST);
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

static void chunk_free(chunk *c);

/* A sent chunk's body goes back for the next encode_chunk. */
static void recycle_body(ts_writer *w, chunk *c) {
    size_t limit = w->max_publish_size * 512 + 4096;   /* not a freak-sized one */
    int keep = w->max_inflight + 1 < 8 ? w->max_inflight + 1 : 8;
    if (c->body.data && c->body.cap <= limit && w->nspare_bodies < keep) {
        w->spare_bodies[w->nspare_bodies++] = c->body;
        ts_buf_init(&c->body);
    }
    chunk_free(c);
}

static dest *dest_get(ts_writer *w, const ts_dest *d) {
    for (dest *x = w->dests; x; x = x->next)
        if (x->d.precision == d->precision && strcmp(x->d.db, d->db) == 0 && strcmp(x->d.rp, d->rp) == 0)
            return x;
    dest *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->d = *d;
    x->path = ts_influx_write_path(d);
    /* append: round-robin order follows first appearance */
    dest **pp = &w->dests;
    while (*pp) pp = &(*pp)->next;
    *pp = x;
    return x;
}

/* ---- accounting of drops ---- */

static void count_dropped(ts_writer *w, dest *d, size_t n) {
    d->dropped += n;
    w->st.points_dropped += n;
    ts_counter_add(w->c_dropped, (int64_t)n);
    if (w->draining) w->drop_ret += n;
}

/* Offer an encoded body to the spool seam; returns 1 if it kept it. */
static int offer_evict(ts_writer *w, const ts_dest *d, const char *body, size_t len, size_t lines) {
    if (!w->evict || lines == 0) return 0;
    if (w->evict(w->evict_ud, d, body, len, lines) == 1) {
        ts_counter_add(w->c_spooled, (int64_t)lines);
        return 1;
    }
    return 0;
}

static int spool_evict(void *ud, const ts_dest *d, const char *body, size_t len, size_t lines) {
    ts_writer *w = ud;
    if (!w->spool || ts_spool_append(w->spool, d->db, d->rp, d->precision, body, len, lines) != 0) return 0;
    w->spool_dry = 0;
    arm_sync(w);
    return 1;
}

static const char *rp_or_default(const ts_dest *d) { return d->rp[0] ? d->rp : "(default)"; }

static void retry_unlink(ts_writer *w, chunk *c) {
    if (c->prev) c->prev->next = c->next; else w->retry_head = c->next;
    if (c->next) c->next->prev = c->prev; else w->retry_tail = c->prev;
    c->prev = c->next = NULL;
}

static void retry_insert(ts_writer *w, chunk *c) {
    chunk *a = w->retry_tail;
    while (a && a->seq > c->seq) a = a->prev;
    c->prev = a;
    c->next = a ? a->next : w->retry_head;
    if (c->next) c->next->prev = c; else w->retry_tail = c;
    if (a) a->next = c; else w->retry_head = c;
}

static void inflight_unlink(ts_writer *w, chunk *c) {
    if (c->prev) c->prev->next = c->next; else w->inflight = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->ninflight--;
}

static void pieces_release(chunk *c);

static void chunk_free(chunk *c) {
    /* an orphan's pieces (writer freed): the record stays in the spool */
    if (c->pieces && --*c->pieces == 0) free(c->pieces);
    ts_buf_free(&c->body);
    free(c->url);
    free(c);
}

/* Drop a chunk from the retry queue (memory bound or shutdown). */
static void drop_retry(ts_writer *w, chunk *c, const char *why) {
    retry_unlink(w, c);
    w->bytes_held -= c->body.len;
    c->d->nretry--;
    if (c->spooled) {
        /* not acknowledged: the next start reads it from the spool again */
        w->st.points_left_in_spool += c->lines;
        pieces_release(c);
        chunk_free(c);
        return;
    }
    if (!offer_evict(w, &c->d->d, c->body.data, c->body.len, c->lines)) {
        count_dropped(w, c->d, c->lines);
        ts_warn("writer: dropped %zu points for %s/%s (%s, a failed chunk awaiting retry)",
                c->lines, c->d->d.db, rp_or_default(&c->d->d), why);
    }
    chunk_free(c);
}

/* Unlinks d's oldest pending batch and returns it. */
static ts_batch *pend_pop(ts_writer *w, dest *d) {
    pend *n = d->head;
    ts_batch *b = n->b;
    d->head = n->next;
    if (!d->head) d->tail = NULL;
    free(n);
    ts_batch_pool_unhold(w->pool, b);
    return b;
}

/* Drop the oldest pending batch of d (what remains of it). */
static void drop_batch(ts_writer *w, dest *d, const char *why) {
    ts_batch *b = pend_pop(w, d);
    size_t pts = ts_batch_points(b);
    w->bytes_held -= ts_batch_bytes(b);
    d->pending_points -= pts;
    size_t kept = 0;
    if (w->evict && pts > 0) {
        ts_buf tmp;
        ts_buf_init(&tmp);
        size_t taken = 0, invalid = 0;
        size_t lines = ts_batch_take(b, &tmp, (size_t)-1, &taken, &invalid);
        if (invalid) ts_counter_add(w->c_invalid, (int64_t)invalid);
        if (offer_evict(w, &d->d, tmp.data, tmp.len, lines)) kept = pts;
        ts_buf_free(&tmp);
    }
    if (!kept && pts > 0) {
        count_dropped(w, d, pts);
        ts_warn("writer: dropped %zu points for %s/%s (%s, oldest pending batch)", pts, d->d.db,
                rp_or_default(&d->d), why);
    }
    ts_batch_free(b);
}

/* Keep bytes_held <= max_buffer_bytes, dropping the oldest data first. */
static void enforce_bound(ts_writer *w) {
    while (w->bytes_held > w->max_buffer_bytes) {
        /* chunks read from the spool are still there: they are never the ones to go */
        chunk *rc = w->retry_head;
        while (rc && rc->spooled) rc = rc->next;
        dest *od = NULL;
        for (dest *d = w->dests; d; d = d->next)
            if (d->head && (!od || d->head->seq < od->head->seq)) od = d;
        if (!rc && !od) break;
        if (rc && (!od || rc->seq <= od->head->seq)) drop_retry(w, rc, "buffer full");
        else drop_batch(w, od, "buffer full");
    }
}

/* A batch into the spool, in records of at most max_publish_size lines.
 * Returns 1 when all of it is there; otherwise what the spool refused is
 * left in b (lines already encoded come back as a text batch in *rest). */
static int spool_batch(ts_writer *w, ts_batch *b, ts_batch **rest) {
    const ts_dest *d = ts_batch_dest(b);
    *rest = NULL;
    while (ts_batch_points(b) > 0) {
        ts_buf *buf = &w->spool_buf;
        ts_buf_reset(buf);
        size_t taken = 0, invalid = 0;
        size_t lines = ts_batch_take(b, buf, w->max_publish_size, &taken, &invalid);
        if (invalid) ts_counter_add(w->c_invalid, (int64_t)invalid);
        if (lines == 0) continue;
        if (ts_spool_append(w->spool, d->db, d->rp, d->precision, buf->data, buf->len, lines) != 0) {
            ts_batch *t = ts_batch_new_text(d);
            ts_buf_add(ts_batch_text_buf(t), buf->data, buf->len);
            ts_batch_text_commit(t, lines);
            *rest = t;
            return 0;
        }
        w->st.points_spooled += lines;
        ts_counter_add(w->c_spooled, (int64_t)lines);
        w->spool_dry = 0;
    }
    ts_buf_shrink(&w->spool_buf, (size_t)1 << 20);
    arm_sync(w);
    return 1;
}

static void submit_memory(ts_writer *w, ts_batch *b);

void ts_writer_set_mirrors(ts_writer *w, ts_writer *const *mirrors, int n) {
    w->mirrors = mirrors;
    w->nmirrors = n;
}

/* Mirror mode without the spool's help: every other server gets its own
 * copy (as line protocol: compact batches cannot be shared). */
static void copy_to_mirrors(ts_writer *w, const ts_batch *b) {
    if (w->nmirrors == 0 || ts_batch_points(b) == 0) return;
    ts_buf *buf = &w->spool_buf;
    ts_buf_reset(buf);
    size_t lines = ts_batch_encode(b, buf);
    if (lines == 0) return;
    for (int i = 0; i < w->nmirrors; i++) {
        ts_batch *t = ts_batch_new_text(ts_batch_dest(b));
        ts_buf_add(ts_batch_text_buf(t), buf->data, buf->len);
        ts_batch_text_commit(t, lines);
        submit_memory(w->mirrors[i], t);
    }
    ts_buf_shrink(buf, (size_t)1 << 20);
}

void ts_writer_submit(ts_writer *w, ts_batch *b) {
    if (!b) return;
    if (ts_batch_points(b) == 0) { ts_batch_pool_put(w->pool, b); return; }
    if (w->spool) {
        ts_batch *rest;
        if (spool_batch(w, b, &rest)) { ts_batch_pool_put(w->pool, b); return; }
        /* the spool refused (disk full, unwritable: logged there): memory keeps it */
        copy_to_mirrors(w, rest);
        submit_memory(w, rest);
        if (ts_batch_points(b) == 0) { ts_batch_pool_put(w->pool, b); return; }
    }
    copy_to_mirrors(w, b);
    submit_memory(w, b);
}

static void submit_memory(ts_writer *w, ts_batch *b) {
    dest *d = dest_get(w, ts_batch_dest(b));
    pend *n = malloc(sizeof *n);
    if (!n) abort();
    *n = (pend){b, ++w->seq, NULL};
    if (d->tail) d->tail->next = n; else d->head = n;
    d->tail = n;
    d->pending_points += ts_batch_points(b);
    w->bytes_held += ts_batch_bytes(b);
    ts_batch_pool_hold(w->pool, b);
    enforce_bound(w);
}

/* ---- the target: InfluxDB 1.x ---- */

static void chunk_done(void *ud, ts_http_result *r);

/* Returns 0, or -1 if the request could not be started (c went to retry). */
static int send_chunk(ts_writer *w, chunk *c) {
    int nurls = ts_influx_nurls(w->influx);
    if (nurls == 0) {
        /* nowhere to send: keep it as a failed chunk with backoff */
        if (!c->is_retry) { c->is_retry = 1; c->d->nretry++; }
        c->attempts++;
        c->next_at = ts_mono_ms() + backoff_ms(w, c->attempts);
        ts_buf_shrink(&c->body, c->body.len + 1);
        w->bytes_held += c->body.len;
        retry_insert(w, c);
        enforce_bound(w);
        return -1;
    }
    int idx = ts_influx_current(w->influx);
    const char *base = ts_influx_url(w->influx, idx);
    c->url_idx = idx;
    c->w = w;
    free(c->url);
    size_t ul = strlen(base) + strlen(c->d->path) + 1;
    c->url = malloc(ul);
    if (!c->url) abort();
    snprintf(c->url, ul, "%s%s", base, c->d->path);

    ts_http_req rq;
    ts_influx_req(w->influx, &rq, c->url, c->body.data, c->body.len, "text/plain; charset=utf-8");
    rq.opts.gzip_body = w->gzip;
    rq.max_body = 1 << 20;  /* error answers are short; a huge one is not InfluxDB */
    rq.on_done = chunk_done;
    rq.ud = c;

    if (c->is_retry) {
        w->st.retries++;
        ts_counter_add(w->c_retries, 1);
    }
    c->prev = NULL;
    c->next = w->inflight;
    if (c->next) c->next->prev = c;
    w->inflight = c;
    w->ninflight++;
    if (ts_http_start(w->loop, &rq) != 0) {
        inflight_unlink(w, c);
        ts_warn("writer: could not start a request for %s/%s; will retry", c->d->d.db, rp_or_default(&c->d->d));
        if (!c->is_retry) { c->is_retry = 1; c->d->nretry++; }
        c->attempts++;
        c->next_at = ts_mono_ms() + backoff_ms(w, c->attempts);
        ts_buf_shrink(&c->body, c->body.len + 1);
        w->bytes_held += c->body.len;
        retry_insert(w, c);
        enforce_bound(w);
        return -1;
    }
    return 0;
}

/* Next chunk from d's pending batches: up to max_publish_size lines. */
static chunk *encode_chunk(ts_writer *w, dest *d) {
    chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->d = d;
    c->seq = d->head ? d->head->seq : w->seq;
    if (w->nspare_bodies > 0) {
        c->body = w->spare_bodies[--w->nspare_bodies];
        c->body.len = 0;
    } else {
        ts_buf_init(&c->body);
    }
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
        if (ts_batch_points(b) == 0) ts_batch_pool_put(w->pool, pend_pop(w, d));
    }
    if (invalid) {
        ts_counter_add(w->c_invalid, (int64_t)invalid);
        ts_debug("writer: skipped %zu NaN/Inf points for %s", invalid, d->d.db);
    }
    return c;
}

static void arm_timer(ts_writer *w);

static void on_timer(void *ud) {
    ts_writer *w = ud;
    w->timer_id = 0;
    pump(w);
}

static void arm_timer(ts_writer *w) {
    int64_t now = ts_mono_ms(), due = INT64_MAX;
    for (chunk *c = w->retry_head; c; c = c->next)
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

/* ---- reading the spool back ---- */

static void on_rate_timer(void *ud) {
    ts_writer *w = ud;
    w->rate_timer = 0;
    pump(w);
}

static void on_sync_timer(void *ud) {
    ts_writer *w = ud;
    w->sync_timer = 0;
    if (w->spool) ts_spool_tick(w->spool);
}

/* The spool's interval fsync and position saving happen within a second of
 * an append even when nothing else wakes the writer. */
static void arm_sync(ts_writer *w) {
    if (!w->spool || w->sync_timer) return;
    w->sync_timer = ts_loop_timer(w->loop, ts_mono_ms() + 1000, on_sync_timer, w);
}

/* The next record of the target's consumer as a chunk, within replay_rate;
 * NULL when there is none (or the rate says wait: a timer is armed). */
static chunk *spool_next(ts_writer *w) {
    if (!w->cons || w->spool_dry) return NULL;
    int64_t now = ts_mono_ms();
    double burst = w->replay_rate > (double)w->max_publish_size ? w->replay_rate : (double)w->max_publish_size;
    w->tokens += (double)(now - w->tokens_at) * w->replay_rate / 1000.0;
    if (w->tokens > burst) w->tokens = burst;
    w->tokens_at = now;
    if (w->tokens <= 0) {
        if (!w->rate_timer) {
            int64_t wait = (int64_t)(-w->tokens * 1000.0 / w->replay_rate) + 1;
            w->rate_timer = ts_loop_timer(w->loop, now + wait, on_rate_timer, w);
        }
        return NULL;
    }
    /* the body is read straight into the chunk's buffer */
    ts_buf body;
    if (w->nspare_bodies > 0) {
        body = w->spare_bodies[--w->nspare_bodies];
        body.len = 0;
    } else
        ts_buf_init(&body);
    ts_spool_rec r;
    int rc = ts_spool_read_into(w->cons, &r, &body);
    if (rc != 1) {
        w->spool_dry = rc == 0;
        if (body.data && w->nspare_bodies < 8) w->spare_bodies[w->nspare_bodies++] = body;
        else ts_buf_free(&body);
        return NULL;
    }
    ts_dest dd;
    memset(&dd, 0, sizeof dd);
    snprintf(dd.db, sizeof dd.db, "%s", r.db);
    snprintf(dd.rp, sizeof dd.rp, "%s", r.rp);
    dd.precision = r.precision;
    chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->d = dest_get(w, &dd);
    c->seq = ++w->seq;
    c->body = body;
    c->lines = r.lines;
    c->spooled = 1;
    c->pos = r.pos;
    w->tokens -= (double)r.lines;
    return c;
}

/* A chunk from the spool is answered for good: its record is done. */
static void spool_done(ts_writer *w, chunk *c) {
    if (c->pieces) {
        /* a record split after a 413 is done when its last piece is */
        int left = --*c->pieces;
        if (left == 0) free(c->pieces);
        c->pieces = NULL;
        if (left > 0) return;
    }
    if (c->spooled && w->cons) ts_spool_ack_one(w->cons, c->pos);
}

/* A piece that will never be answered (shutdown): it stays in the spool. */
static void pieces_release(chunk *c) {
    if (c->pieces && --*c->pieces == 0) free(c->pieces);
    c->pieces = NULL;
}

static dest *next_ready_dest(ts_writer *w) {
    if (!w->dests) return NULL;
    dest *start = w->rr ? w->rr : w->dests;
    dest *d = start;
    do {
        dest *nx = d->next ? d->next : w->dests;
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
        chunk *c = w->retry_head;
        while (c && c->next_at > now) c = c->next;
        if (c) {
            retry_unlink(w, c);
            w->bytes_held -= c->body.len;
            if (send_chunk(w, c) != 0) break;
            continue;
        }
        if (!w->flushing) break;
        /* the spool first: it holds everything accepted, oldest first */
        if (w->parked && w->parked->d->nretry == 0) {
            c = w->parked;
            w->parked = NULL;
            if (send_chunk(w, c) != 0) break;
            continue;
        }
        if (!w->parked && (c = spool_next(w)) != NULL) {
            /* a destination with unresolved failures waits (see next_ready_dest) */
            if (c->d->nretry > 0) w->parked = c;
            else if (send_chunk(w, c) != 0) break;
            continue;
        }
        dest *d = next_ready_dest(w);
        if (!d) break;
        c = encode_chunk(w, d);
        if (c->lines == 0) { recycle_body(w, c); continue; }
        if (send_chunk(w, c) != 0) break;
    }
    if (w->flushing) {
        int any = w->parked != NULL || (w->cons && !w->spool_dry) || w->rate_timer != 0;
        for (dest *d = w->dests; d; d = d->next) any |= d->head != NULL;
        if (!any) w->flushing = 0;
    }
    arm_timer(w);
    w->in_pump = 0;
}

void ts_writer_flush(ts_writer *w) {
    ts_batch_pool_interval(w->pool);
    w->flushing = 1;
    w->spool_dry = 0;
    if (w->spool) ts_spool_tick(w->spool);
    pump(w);
}

/* ---- /ping probes: recovery and failback ---- */

typedef struct probe {
    ts_writer *w;            /* NULL once orphaned (writer freed) */
    int idx, failback;
    char *url;
} probe;

static void probe_done(void *ud, ts_http_result *r) {
    probe *p = ud;
    ts_writer *w = p->w;
    if (w) {
        w->probe = NULL;
        const char *at = ts_influx_url(w->influx, p->idx);
        size_t al = at ? strlen(at) : 0;
        int same = at && strncmp(p->url, at, al) == 0 && strcmp(p->url + al, "/ping") == 0;
        int up = r->curl_code == 0 && r->status >= 200 && r->status < 300;
        char host[256];
        ts_influx_safe_url(host, sizeof host, p->url);
        if (up && same && p->failback) {
            int cur = ts_influx_current(w->influx);
            if (cur > p->idx) {
                ts_info("writer: %s answers again: writing to it (failback from the server at position %d)", host,
                        cur + 1);
                ts_influx_set_current(w->influx, p->idx);
            }
        } else if (up && same && w->host_down) {
            w->host_down = 0;
            ts_influx_set_current(w->influx, p->idx);
            int64_t now = ts_mono_ms();
            size_t n = 0;
            for (chunk *x = w->retry_head; x; x = x->next) {
                x->next_at = now;
                x->round_fails = 0;
                n++;
            }
            ts_info("writer: %s answers /ping: sending %zu waiting chunk(s) and the backlog now", host, n);
            pump(w);
        }
        arm_probe(w);
    }
    free(p->url);
    free(p);
}

static void probe_start(ts_writer *w, int idx, int failback) {
    const char *base = ts_influx_url(w->influx, idx);
    if (!base) return;
    probe *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->w = w;
    p->idx = idx;
    p->failback = failback;
    size_t n = strlen(base) + sizeof "/ping";
    p->url = malloc(n);
    if (!p->url) abort();
    snprintf(p->url, n, "%s/ping", base);
    ts_http_req rq;
    ts_influx_req(w->influx, &rq, p->url, NULL, 0, NULL);
    rq.method = NULL;   /* GET */
    /* cheap: a server that does not answer within a second is still down */
    rq.opts.connect_timeout_ms = 1000;
    rq.opts.timeout_ms = 2000;
    rq.max_body = 4096;
    rq.on_done = probe_done;
    rq.ud = p;
    if (ts_http_start(w->loop, &rq) != 0) {
        free(p->url);
        free(p);
        return;
    }
    w->probe = p;
}

static void on_probe_timer(void *ud) {
    ts_writer *w = ud;
    w->probe_timer = 0;
    if (w->probe || w->draining) return;
    int n = ts_influx_nurls(w->influx), cur = ts_influx_current(w->influx);
    if (n <= 0) return;
    if (w->host_down) {
        /* every server failed: ping them in list order, so the first healthy one wins */
        probe_start(w, w->probe_next % n, 0);
        w->probe_next = (w->probe_next + 1) % n;
    } else if (cur > 0) {
        /* written to a later server: is an earlier one back? */
        w->failback_at = ts_mono_ms() + 10000;
        probe_start(w, w->probe_next % cur, 1);
        w->probe_next = (w->probe_next + 1) % cur;
    }
    arm_probe(w);
}

static void arm_probe(ts_writer *w) {
    if (w->probe_timer || w->probe || w->draining) return;
    int64_t now = ts_mono_ms();
    if (w->host_down) w->probe_timer = ts_loop_timer(w->loop, now + 1000, on_probe_timer, w);
    else if (ts_influx_current(w->influx) > 0) {
        if (w->failback_at < now + 1000) w->failback_at = now + 10000;
        w->probe_timer = ts_loop_timer(w->loop, w->failback_at, on_probe_timer, w);
    }
}

/* HTTP 413: the server's body limit (InfluxDB's [http] max-body-size) is
 * below this chunk. Resend it as two halves at a line boundary, at once and
 * before new data; a single line that is still too large is dropped and
 * counted. Returns 1 when c was consumed. */
static int split_413(ts_writer *w, chunk *c, const char *host) {
    dest *d = c->d;
    if (c->lines <= 1) {
        count_dropped(w, d, c->lines);
        ts_warn("writer: HTTP 413 from %s for %s/%s: one line of %zu bytes is larger than the server accepts: "
                "dropped", host, d->d.db, rp_or_default(&d->d), c->body.len);
        if (c->is_retry) d->nretry--;
        spool_done(w, c);
        recycle_body(w, c);
        return 1;
    }
    size_t want = c->lines / 2, n = 0, cut = 0;
    for (size_t i = 0; i < c->body.len; i++)
        if (c->body.data[i] == '\n' && ++n == want) {
            cut = i + 1;
            break;
        }
    if (cut == 0 || cut >= c->body.len) return 0;   /* not line protocol we wrote: let it be classified */
    chunk *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->d = d;
    b->seq = c->seq;
    b->spooled = c->spooled;
    b->pos = c->pos;
    ts_buf_init(&b->body);
    ts_buf_add(&b->body, c->body.data + cut, c->body.len - cut);
    b->lines = c->lines - want;
    c->body.len = cut;
    c->body.data[cut] = '\0';
    c->lines = want;
    if (c->spooled) {
        if (!c->pieces) {
            c->pieces = malloc(sizeof *c->pieces);
            if (!c->pieces) abort();
            *c->pieces = 1;
        }
        ++*c->pieces;
        b->pieces = c->pieces;
    }
    ts_debug("writer: HTTP 413 from %s for %s/%s: resending as %zu + %zu lines", host, d->d.db,
             rp_or_default(&d->d), c->lines, b->lines);
    w->st.split_413++;
    int64_t now = ts_mono_ms();
    chunk *parts[2] = {c, b};
    for (int k = 0; k < 2; k++) {
        chunk *x = parts[k];
        if (!x->is_retry) { x->is_retry = 1; d->nretry++; }
        x->next_at = now;
        x->round_fails = 0;
        w->bytes_held += x->body.len;
        retry_insert(w, x);
    }
    return 1;
}

static void chunk_done(void *ud, ts_http_result *r) {
    chunk *c = ud;
    ts_writer *w = c->w;
    if (!w) { chunk_free(c); return; }   /* orphaned: nobody counts it any more */
    inflight_unlink(w, c);
    dest *d = c->d;
    char msg[512];
    if (r->curl_code != 0) snprintf(msg, sizeof msg, "%s", r->errmsg);
    else ts_influx_server_message(&r->body, msg, sizeof msg);
    int kind = ts_influx_classify(r, msg);
    /* the chunk's own URL: the server list may have been replaced meanwhile (SIGHUP) */
    char host[256];
    ts_influx_safe_url(host, sizeof host, c->url);
    /* its index means the same server only if the list still names it there */
    const char *now_at = ts_influx_url(w->influx, c->url_idx);
    int same = now_at && strncmp(c->url, now_at, strlen(now_at)) == 0 &&
               strcmp(c->url + strlen(now_at), d->path) == 0;

    /* what went over the wire, answered or not */
    w->st.bytes_sent += r->bytes_out;
    ts_counter_add(w->c_bytes, (int64_t)r->bytes_out);
    if (r->curl_code == 0 && r->status == 413) {
        w->st.requests_failed++;
        ts_counter_add(w->c_failed, 1);
        if (split_413(w, c, host)) {
            enforce_bound(w);
            pump(w);
            return;
        }
    }
    if (kind == TS_INFLUX_OK || kind == TS_INFLUX_REJECT || kind == TS_INFLUX_DROP) {
        /* this host answers: it becomes the preferred one, unless an earlier
         * one already is (a late answer after a failback must not undo it) */
        int cur = ts_influx_current(w->influx);
        if (same && kind != TS_INFLUX_DROP && (cur < 0 || c->url_idx <= cur))
            ts_influx_set_current(w->influx, c->url_idx);
        if (c->is_retry) d->nretry--;
        w->host_down = 0;
        arm_probe(w);   /* failed over: look for an earlier server coming back */
    }
    if (kind == TS_INFLUX_OK) {
        w->st.requests_ok++;
        ts_counter_add(w->c_ok, 1);
        w->st.points_written += c->lines;
        d->written += c->lines;
        ts_counter_add(w->c_written, (int64_t)c->lines);
        ts_info("Sent %zu stats for %s", c->lines, d->d.db);
        spool_done(w, c);
        /* the destination works again: its other failed chunks go now */
        for (chunk *x = w->retry_head; x; x = x->next)
            if (x->d == d && x->next_at > ts_mono_ms()) x->next_at = ts_mono_ms();
        recycle_body(w, c);
        pump(w);
        return;
    }

    w->st.requests_failed++;
    ts_counter_add(w->c_failed, 1);
    if (kind == TS_INFLUX_REJECT) {
        size_t rej = ts_influx_rejected_count(msg, c->lines);
        w->st.points_rejected += rej;
        d->rejected += rej;
        d->written += c->lines - rej;
        ts_counter_add(w->c_rejected, (int64_t)rej);
        w->st.points_written += c->lines - rej;
        ts_counter_add(w->c_written, (int64_t)(c->lines - rej));
        ts_warn("writer: HTTP 400 from %s for %s/%s: %.300s (%zu of %zu points rejected, not retried)", host,
                d->d.db, rp_or_default(&d->d), msg, rej, c->lines);
        spool_done(w, c);
        recycle_body(w, c);
        pump(w);
        return;
    }
    if (kind == TS_INFLUX_DROP) {
        count_dropped(w, c->d, c->lines);
        ts_warn("writer: HTTP %ld from %s for %s/%s: %.300s (%zu points dropped, not retryable)", r->status,
                host, d->d.db, rp_or_default(&d->d), msg, c->lines);
        spool_done(w, c);
        recycle_body(w, c);
        pump(w);
        return;
    }

    /* kept for retry */
    if (!c->is_retry) { c->is_retry = 1; d->nretry++; }
    int64_t now = ts_mono_ms();
    if (kind == TS_INFLUX_HOST) {
        /* fail over: the next URL of the full list, every host stays in rotation */
        if (same) ts_influx_failed(w->influx, c->url_idx);
        if (++c->round_fails < ts_influx_nurls(w->influx)) {
            c->next_at = now;   /* another host has not been tried yet */
        } else {
            c->round_fails = 0;
            c->attempts++;
            c->next_at = now + backoff_ms(w, c->attempts);
            /* every server failed: ping instead of waiting out the backoff */
            if (!w->host_down) w->probe_next = 0;
            w->host_down = 1;
            arm_probe(w);
        }
    } else {
        c->attempts++;
        c->next_at = now + backoff_ms(w, c->attempts);
    }
    if (r->status == 404 && strstr(msg, "database not found")) {
        /* Every chunk of every publish says the same thing until the schema
         * exists: one line a minute that says what to do, and a counter. */
        ts_counter_add(w->c_db_missing, 1);
        if (!w->db_missing_logged || now - w->db_missing_logged >= 60000) {
            w->db_missing_logged = now;
            ts_error("writer: %s has no database '%s' (HTTP 404 database not found): run `tstats setup-influx` "
                     "to create ATC's databases, retention policies and continuous queries; %zu points kept for "
                     "retry (repeated at most once a minute)", host, d->d.db, c->lines);
        }
    } else if (r->curl_code != 0)
        ts_warn("writer: request to %s for %s/%s failed: %.300s (%zu points kept, retry in %lld ms)", host,
                d->d.db, rp_or_default(&d->d), msg, c->lines, (long long)(c->next_at - now));
    else
        ts_warn("writer: HTTP %ld from %s for %s/%s: %.300s (%zu points kept, retry in %lld ms)", r->status, host,
                d->d.db, rp_or_default(&d->d), msg, c->lines, (long long)(c->next_at - now));
    ts_buf_shrink(&c->body, c->body.len + 1);
    w->bytes_held += c->body.len;
    retry_insert(w, c);
    enforce_bound(w);
    pump(w);
}

static int has_work(const ts_writer *w) {
    if (w->ninflight > 0 || w->retry_head || w->parked) return 1;
    if (w->cons && !w->spool_dry) return 1;
    for (dest *d = w->dests; d; d = d->next)
        if (d->head) return 1;
    return 0;
}

size_t ts_writer_drain(ts_writer *w, int64_t deadline) {
    w->draining = 1;
    w->drop_ret = 0;
    int64_t now = ts_mono_ms();
    for (chunk *c = w->retry_head; c; c = c->next) c->next_at = now;
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
        chunk *c = w->inflight;
        while (c->next) c = c->next;
        inflight_unlink(w, c);
        if (c->is_retry) c->d->nretry--;
        if (c->spooled) {
            w->st.points_left_in_spool += c->lines;   /* unacknowledged: read again at the next start */
            pieces_release(c);
        } else if (!offer_evict(w, &c->d->d, c->body.data, c->body.len, c->lines)) {
            count_dropped(w, c->d, c->lines);
            ts_warn("writer: dropped %zu points for %s/%s (shutdown deadline, request still in flight)", c->lines,
                    c->d->d.db, rp_or_default(&c->d->d));
        }
        c->w = NULL;
    }
    while (w->retry_head) drop_retry(w, w->retry_head, "shutdown deadline");
    if (w->parked) {
        w->st.points_left_in_spool += w->parked->lines;
        chunk_free(w->parked);
        w->parked = NULL;
    }
    if (w->spool) ts_spool_sync(w->spool);
    for (dest *d = w->dests; d; d = d->next)
        while (d->head) drop_batch(w, d, "shutdown deadline");
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
    *s = w->st;
    uint64_t pts = 0;
    for (dest *d = w->dests; d; d = d->next) pts += d->pending_points;
    for (chunk *c = w->retry_head; c; c = c->next) pts += c->lines;
    for (chunk *c = w->inflight; c; c = c->next) pts += c->lines;
    if (w->parked) pts += w->parked->lines;
    s->points_pending = pts;
    s->bytes_pending = w->bytes_held;
    s->spool_oldest_age_ms = w->cons ? ts_spool_oldest_age_ms(w->cons) : -1;
    if (w->cons) {
        ts_spool_cstats cs;
        ts_spool_consumer_stats(w->cons, &cs);
        s->spool_backlog_bytes = cs.backlog_bytes;
    }
}

int ts_writer_current_url(const ts_writer *w) { return ts_influx_current(w->influx); }

int ts_writer_get_dest_stats(const ts_writer *w, ts_writer_dest_stats *out, int max) {
    int n = 0;
    for (dest *d = w->dests; d && n < max; d = d->next, n++) {
        ts_writer_dest_stats *o = &out[n];
        o->dest = d->d;
        o->written = d->written;
        o->rejected = d->rejected;
        o->dropped = d->dropped;
        o->pending = d->pending_points;
        for (chunk *c = w->retry_head; c; c = c->next) if (c->d == d) o->pending += c->lines;
        for (chunk *c = w->inflight; c; c = c->next) if (c->d == d) o->pending += c->lines;
    }
    return n;
}

void ts_writer_get_retry_state(const ts_writer *w, uint64_t *chunks, int64_t *next_in_ms) {
    uint64_t n = 0;
    int64_t next = 0, now = ts_mono_ms();
    for (chunk *c = w->retry_head; c; c = c->next) {
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
    if (w->probe_timer) ts_loop_timer_cancel(w->loop, w->probe_timer);
    if (w->probe) w->probe->w = NULL;   /* freed by its completion */
    if (w->rate_timer) ts_loop_timer_cancel(w->loop, w->rate_timer);
    if (w->sync_timer) ts_loop_timer_cancel(w->loop, w->sync_timer);
    if (w->parked) chunk_free(w->parked);
    w->parked = NULL;
    ts_buf_free(&w->spool_buf);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    /* its position is saved; the spool itself belongs to the daemon */
    if (w->cons) ts_spool_consumer_close(w->cons);
    w->cons = NULL;
    if (s.points_pending) ts_warn("writer: freed with %llu points not written", (unsigned long long)s.points_pending);
    for (chunk *c = w->inflight; c; c = c->next) c->w = NULL;   /* freed by their completion */
    while (w->retry_head) {
        chunk *c = w->retry_head;
        retry_unlink(w, c);
        chunk_free(c);
    }
    while (w->dests) {
        dest *d = w->dests;
        w->dests = d->next;
        while (d->head) ts_batch_free(pend_pop(w, d));
        free(d->path);
        free(d);
    }
    ts_batch_pool_free(w->pool);
    for (int i = 0; i < w->nspare_bodies; i++) ts_buf_free(&w->spare_bodies[i]);
    ts_influx_free(w->influx);
    free(w);
}

