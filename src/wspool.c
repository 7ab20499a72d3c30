/* The writer's spool side (C core, no Lua): every submitted batch appended
 * to the on-disk spool in records of at most max_publish_size lines; records
 * appended while the target is healthy kept in memory and sent from there
 * (live, never behind a backlog), the rest read back through the target's
 * consumer at most replay_rate lines a second; each record acknowledged once
 * its target answered it for good. */
#include "ts_wspool.h"

#include <stdlib.h>
#include <string.h>

#include "ts_clock.h"
#include "ts_log.h"
#include "ts_target.h"

int ts_wspool_evict(void *ud, const ts_dest *d, const char *body, size_t len, size_t lines) {
    ts_writer *w = ud;
    if (!w->spool || ts_spool_append(w->spool, d->db, d->rp, d->precision, body, len, lines) != 0) return 0;
    w->spool_dry = 0;
    ts_wspool_arm_sync(w);
    return 1;
}

/* The record just appended stays in memory and is sent from there (the
 * spool keeps the durable copy; the position moves when the target
 * answers): no read back at publishing time, and never behind a replayed
 * backlog. What is kept is a reference to the batch's points, encoded at
 * the publish as encode_chunk does for the spool-off writer. Only while the
 * target is healthy and the live records fit live_cap: otherwise the record
 * is read from disk later, like any backlog. */
int ts_wspool_live(ts_writer *w, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                   ts_spool_pos at, ts_spool_pos next) {
    size_t bytes = ts_batch_range_bytes(b, from, to);
    if (!w->cons || w->host_down || w->retry_head || ts_influx_nurls(w->influx) == 0 ||
        w->live_bytes + bytes > w->live_cap)
        return 0;
    ts_wqueue_chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->d = ts_wqueue_dest_get(w, d);
    c->seq = ++w->seq;
    ts_batch_retain(b);
    c->src = b;
    c->src_from = from;
    c->src_to = to;
    ts_buf_init(&c->body);
    c->lines = lines;
    c->spooled = 1;
    c->pos = at;
    ts_spool_claim(w->cons, at, next);
    if (w->live_tail) w->live_tail->next = c;
    else w->live_head = c;
    w->live_tail = c;
    w->live_bytes += bytes;
    return 1;
}

ts_wqueue_chunk *ts_wspool_live_next(ts_writer *w) {
    ts_wqueue_chunk *c = w->live_head;
    if (!c || c->d->nretry > 0) return NULL;
    w->live_head = c->next;
    if (!w->live_head) w->live_tail = NULL;
    c->next = NULL;
    w->live_bytes -= ts_batch_range_bytes(c->src, c->src_from, c->src_to);
    c->body = ts_wqueue_spare_body(w);
    ts_buf_reserve(&c->body, c->lines * 128 + 256);
    size_t invalid = 0;
    /* the same lines the record holds: its NaN/Inf points were counted when it was appended */
    c->lines = ts_batch_encode_range(c->src, c->src_from, c->src_to, &c->body, &invalid);
    ts_batch_pool_put(w->pool, c->src);
    c->src = NULL;
    return c;
}

void ts_wspool_live_release(ts_writer *w) {
    while (w->live_head) {
        ts_wqueue_chunk *c = w->live_head;
        w->live_head = c->next;
        w->st.points_left_in_spool += c->lines;   /* unacknowledged: read again at the next start */
        ts_wqueue_chunk_free(c);
    }
    w->live_tail = NULL;
    w->live_bytes = 0;
}

static void appended(void *ud, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                     ts_spool_pos at, ts_spool_pos next) {
    ts_writer *w = ud;
    if (!ts_wspool_live(w, d, b, from, to, lines, at, next)) w->spool_dry = 0;
}

/* A batch into the spool, in records of at most max_publish_size lines.
 * Returns 1 when all of it is there; otherwise what the spool refused is
 * left in b (lines already encoded come back as a text batch in *rest). */
int ts_wspool_batch(ts_writer *w, ts_batch *b, ts_batch **rest) {
    size_t spooled, invalid;
    int all = ts_target_spool_batch(w->spool, b, w->max_publish_size, &w->spool_buf, rest, &spooled, &invalid,
                                    appended, w);
    if (invalid) ts_counter_add(w->c_invalid, (int64_t)invalid);
    if (spooled) {
        w->st.points_spooled += spooled;
        ts_counter_add(w->c_spooled, (int64_t)spooled);
    }
    if (all) ts_wspool_arm_sync(w);
    return all;
}

static void on_rate_timer(void *ud) {
    ts_writer *w = ud;
    w->rate_timer = 0;
    ts_wqueue_pump(w);
}

static void on_sync_timer(void *ud) {
    ts_writer *w = ud;
    w->sync_timer = 0;
    if (w->spool) ts_spool_tick(w->spool);
}

/* The spool's interval fsync and position saving happen within a second of
 * an append even when nothing else wakes the writer. */
void ts_wspool_arm_sync(ts_writer *w) {
    if (!w->spool || w->sync_timer) return;
    w->sync_timer = ts_loop_timer(w->loop, ts_mono_ms() + 1000, on_sync_timer, w);
}

/* The next record of the target's consumer as a chunk, within replay_rate;
 * NULL when there is none (or the rate says wait: a timer is armed). */
ts_wqueue_chunk *ts_wspool_next(ts_writer *w) {
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
    ts_buf body = ts_wqueue_spare_body(w);
    ts_spool_rec r;
    int rc = ts_spool_read_into(w->cons, &r, &body);
    if (rc != 1) {
        w->spool_dry = rc == 0;
        if (body.data && w->nspare_bodies < 16) w->spare_bodies[w->nspare_bodies++] = body;
        else ts_buf_free(&body);
        return NULL;
    }
    ts_dest dd;
    memset(&dd, 0, sizeof dd);
    snprintf(dd.db, sizeof dd.db, "%s", r.db);
    snprintf(dd.rp, sizeof dd.rp, "%s", r.rp);
    dd.precision = r.precision;
    ts_wqueue_chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->d = ts_wqueue_dest_get(w, &dd);
    c->seq = ++w->seq;
    c->body = body;
    c->lines = r.lines;
    c->spooled = 1;
    c->pos = r.pos;
    w->tokens -= (double)r.lines;
    return c;
}

/* A chunk from the spool is answered for good: its record is done. */
void ts_wspool_done(ts_writer *w, ts_wqueue_chunk *c) {
    if (c->pieces) {
        /* a record split after a 413 is done when its last piece is */
        int left = --*c->pieces;
        if (left == 0) free(c->pieces);
        c->pieces = NULL;
        if (left > 0) return;
    }
    if (c->spooled && w->cons) ts_spool_ack_one(w->cons, c->pos);
}

