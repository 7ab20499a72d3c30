/* The writer's queues (C core, no Lua): destinations and their pending
 * batches, the retry queue (oldest data first) and the in-flight list, the
 * accounting of drops, and the memory bound that drops the oldest data (or
 * hands it to the spool seam) when max_buffer_bytes is passed. */
#include "ts_wqueue.h"

#include <stdlib.h>
#include <string.h>

#include "ts_log.h"

static uint64_t rnd(ts_writer *w) {
    /* xorshift64*: jitter only, not security */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

/* Full jitter: uniform in [min, min(max, min * 2^(attempts-1))]. */
int64_t ts_wqueue_backoff_ms(ts_writer *w, int attempts) {
    if (w->draining) return w->backoff_min < 100 ? w->backoff_min : 100;
    int64_t lo = w->backoff_min, cap = lo;
    for (int i = 1; i < attempts && cap < w->backoff_max; i++) cap *= 2;
    if (cap > w->backoff_max) cap = w->backoff_max;
    if (cap < lo) cap = lo;
    return lo + (int64_t)(rnd(w) % (uint64_t)(cap - lo + 1));
}

void ts_wqueue_pump(ts_writer *w) { w->pump(w); }

ts_buf ts_wqueue_spare_body(ts_writer *w) {
    ts_buf b;
    if (w->nspare_bodies > 0) {
        b = w->spare_bodies[--w->nspare_bodies];
        b.len = 0;
    } else
        ts_buf_init(&b);
    return b;
}

/* A sent chunk's body goes back for the next encode_chunk. */
void ts_wqueue_recycle_body(ts_writer *w, ts_wqueue_chunk *c) {
    size_t limit = w->max_publish_size * 512 + 4096;   /* not a freak-sized one */
    /* live records are encoded when they are sent, like encode_chunk's, so
     * the bodies in flight are all there is to keep */
    int keep = w->max_inflight + 1;
    if (keep > 16) keep = 16;
    if (c->body.data && c->body.cap <= limit && w->nspare_bodies < keep) {
        w->spare_bodies[w->nspare_bodies++] = c->body;
        ts_buf_init(&c->body);
    }
    ts_wqueue_chunk_free(c);
}

ts_wqueue_dest *ts_wqueue_dest_get(ts_writer *w, const ts_dest *d) {
    for (ts_wqueue_dest *x = w->dests; x; x = x->next)
        if (x->d.precision == d->precision && strcmp(x->d.db, d->db) == 0 && strcmp(x->d.rp, d->rp) == 0)
            return x;
    ts_wqueue_dest *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->d = *d;
    x->path = ts_influx_write_path(d);
    /* append: round-robin order follows first appearance */
    ts_wqueue_dest **pp = &w->dests;
    while (*pp) pp = &(*pp)->next;
    *pp = x;
    return x;
}

const char *ts_wqueue_rp(const ts_dest *d) { return d->rp[0] ? d->rp : "(default)"; }

/* ---- accounting of drops ---- */

void ts_wqueue_count_dropped(ts_writer *w, ts_wqueue_dest *d, size_t n) {
    d->dropped += n;
    w->st.points_dropped += n;
    ts_counter_add(w->c_dropped, (int64_t)n);
    if (w->draining) w->drop_ret += n;
}

/* Offer an encoded body to the spool seam; returns 1 if it kept it. */
int ts_wqueue_offer_evict(ts_writer *w, const ts_dest *d, const char *body, size_t len, size_t lines) {
    if (!w->evict || lines == 0) return 0;
    if (w->evict(w->evict_ud, d, body, len, lines) == 1) {
        ts_counter_add(w->c_spooled, (int64_t)lines);
        return 1;
    }
    return 0;
}

void ts_wqueue_retry_unlink(ts_writer *w, ts_wqueue_chunk *c) {
    if (c->prev) c->prev->next = c->next; else w->retry_head = c->next;
    if (c->next) c->next->prev = c->prev; else w->retry_tail = c->prev;
    c->prev = c->next = NULL;
}

void ts_wqueue_retry_insert(ts_writer *w, ts_wqueue_chunk *c) {
    ts_wqueue_chunk *a = w->retry_tail;
    while (a && a->seq > c->seq) a = a->prev;
    c->prev = a;
    c->next = a ? a->next : w->retry_head;
    if (c->next) c->next->prev = c; else w->retry_tail = c;
    if (a) a->next = c; else w->retry_head = c;
}

void ts_wqueue_inflight_unlink(ts_writer *w, ts_wqueue_chunk *c) {
    if (c->prev) c->prev->next = c->next; else w->inflight = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->ninflight--;
}

/* A piece that will never be answered (shutdown): it stays in the spool. */
void ts_wqueue_pieces_release(ts_wqueue_chunk *c) {
    if (c->pieces && --*c->pieces == 0) free(c->pieces);
    c->pieces = NULL;
}

void ts_wqueue_chunk_free(ts_wqueue_chunk *c) {
    /* an orphan's pieces (writer freed): the record stays in the spool */
    if (c->pieces && --*c->pieces == 0) free(c->pieces);
    ts_batch_free(c->src);   /* a reference to a shared batch, if still held */
    ts_buf_free(&c->body);
    free(c->url);
    free(c);
}

/* Drop a chunk from the retry queue (memory bound or shutdown). */
void ts_wqueue_drop_retry(ts_writer *w, ts_wqueue_chunk *c, const char *why) {
    ts_wqueue_retry_unlink(w, c);
    w->bytes_held -= c->body.len;
    c->d->nretry--;
    if (c->spooled) {
        /* not acknowledged: the next start reads it from the spool again */
        w->st.points_left_in_spool += c->lines;
        ts_wqueue_pieces_release(c);
        ts_wqueue_chunk_free(c);
        return;
    }
    if (!ts_wqueue_offer_evict(w, &c->d->d, c->body.data, c->body.len, c->lines)) {
        ts_wqueue_count_dropped(w, c->d, c->lines);
        ts_warn("writer: dropped %zu points for %s/%s (%s, a failed chunk awaiting retry)",
                c->lines, c->d->d.db, ts_wqueue_rp(&c->d->d), why);
    }
    ts_wqueue_chunk_free(c);
}

/* Unlinks d's oldest pending batch and returns it. */
ts_batch *ts_wqueue_pend_pop(ts_writer *w, ts_wqueue_dest *d) {
    ts_wqueue_pend *n = d->head;
    ts_batch *b = n->b;
    d->head = n->next;
    if (!d->head) d->tail = NULL;
    free(n);
    ts_batch_pool_unhold(w->pool, b);
    return b;
}

/* Drop the oldest pending batch of d (what remains of it). */
void ts_wqueue_drop_batch(ts_writer *w, ts_wqueue_dest *d, const char *why) {
    ts_batch *b = ts_wqueue_pend_pop(w, d);
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
        if (ts_wqueue_offer_evict(w, &d->d, tmp.data, tmp.len, lines)) kept = pts;
        ts_buf_free(&tmp);
    }
    if (!kept && pts > 0) {
        ts_wqueue_count_dropped(w, d, pts);
        ts_warn("writer: dropped %zu points for %s/%s (%s, oldest pending batch)", pts, d->d.db,
                ts_wqueue_rp(&d->d), why);
    }
    ts_batch_free(b);
}

/* Keep bytes_held <= max_buffer_bytes, dropping the oldest data first. */
void ts_wqueue_enforce_bound(ts_writer *w) {
    while (w->bytes_held > w->max_buffer_bytes) {
        /* chunks read from the spool are still there: they are never the ones to go */
        ts_wqueue_chunk *rc = w->retry_head;
        while (rc && rc->spooled) rc = rc->next;
        ts_wqueue_dest *od = NULL;
        for (ts_wqueue_dest *d = w->dests; d; d = d->next)
            if (d->head && (!od || d->head->seq < od->head->seq)) od = d;
        if (!rc && !od) break;
        if (rc && (!od || rc->seq <= od->head->seq)) ts_wqueue_drop_retry(w, rc, "buffer full");
        else ts_wqueue_drop_batch(w, od, "buffer full");
    }
}
