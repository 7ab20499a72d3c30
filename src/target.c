/* The target interface and the list the daemon drives its targets through
 * (C core, no Lua): one append to the spool every target reading it shares,
 * copies from memory to the rest (line protocol encoded once, a copy each),
 * and the publish tick, drain and close of every target. */
#include "ts_target.h"

#include <stdlib.h>
#include <string.h>

#include "ts_clock.h"
#include "ts_counter.h"
#include "ts_spool_rec.h"

struct ts_target {
    const ts_target_ops *ops;
    void *self;
    char *name;
};

ts_target *ts_target_new(const ts_target_ops *ops, void *self, const char *name) {
    ts_target *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->ops = ops;
    t->self = self;
    t->name = strdup(name ? name : ops->kind);
    if (!t->name) abort();
    return t;
}

const char *ts_target_name(const ts_target *t) { return t->name; }
const char *ts_target_kind(const ts_target *t) { return t->ops->kind; }
void *ts_target_self(const ts_target *t) { return t->self; }
int ts_target_healthy(const ts_target *t) { return t->ops->healthy(t->self); }
int ts_target_reads_spool(const ts_target *t) { return t->ops->reads_spool(t->self); }

void ts_target_stats_get(const ts_target *t, ts_target_stats *s) {
    memset(s, 0, sizeof *s);
    s->spool_oldest_age_ms = -1;
    t->ops->stats(t->self, s);
}

size_t ts_target_drain(ts_target *t, int64_t deadline) { return t->ops->drain(t->self, deadline); }

void ts_target_close(ts_target *t) {
    if (!t) return;
    t->ops->close(t->self);
    free(t->name);
    free(t);
}

int ts_target_spool_batch(ts_spool *s, ts_batch *b, size_t max_lines, ts_buf *buf, ts_batch **rest,
                          size_t *spooled, size_t *invalid, ts_target_appended_fn appended, void *ud) {
    const ts_dest *d = ts_batch_dest(b);
    *rest = NULL;
    *spooled = *invalid = 0;
    int compact = ts_batch_is_compact(b);
    while (ts_batch_points(b) > 0) {
        ts_buf_reset(buf);
        size_t pts = ts_batch_points(b), want = pts < max_lines ? pts : max_lines;
        size_t taken = 0, inv = 0, from = ts_batch_cursor(b), lines;
        if (compact) {
            /* the points in their own shape (~1/6 of their line protocol);
             * read back, they are encoded as the spool-off writer does */
            ts_buf_reserve(buf, want * 10 + 4096);
            lines = ts_spool_rec_compact(buf, b, max_lines, &taken, &inv);
        } else {
            /* one allocation at about the record's size, not a dozen doubling
             * copies (lines are ~90-130 bytes; see encode_chunk) */
            ts_buf_reserve(buf, want * 128 + 256);
            lines = ts_batch_take(b, buf, max_lines, &taken, &inv);
        }
        *invalid += inv;
        if (lines == 0) continue;
        ts_spool_pos at, next;
        if (ts_spool_append_kind(s, d->db, d->rp, d->precision, compact ? TS_SPOOL_KIND_COMPACT : TS_SPOOL_KIND_LP,
                                 buf->data, buf->len, lines, &at, &next) != 0) {
            ts_batch *t = ts_batch_new_text(d);
            if (compact) {
                size_t skipped = 0;
                ts_batch_encode_range(b, from, ts_batch_cursor(b), ts_batch_text_buf(t), &skipped);
            } else
                ts_buf_add(ts_batch_text_buf(t), buf->data, buf->len);
            ts_batch_text_commit(t, lines);
            *rest = t;
            return 0;
        }
        *spooled += lines;
        if (appended) appended(ud, d, b, from, ts_batch_cursor(b), lines, at, next);
    }
    ts_buf_shrink(buf, max_lines * 128 + 256 > ((size_t)1 << 20) ? max_lines * 128 + 256 : (size_t)1 << 20);
    return 1;
}

/* ---- the list ---- */

struct ts_targets {
    ts_loop *loop;
    ts_spool *spool;
    size_t record_lines;
    ts_batch_pool *pool;
    ts_target **t;
    int n, cap;
    ts_buf buf;                /* records on their way to the spool, copies' line protocol */
    uint64_t spooled;
    int sync_timer;
    ts_counter *c_spooled, *c_invalid;
};

ts_targets *ts_targets_new(ts_loop *loop, ts_spool *spool, size_t record_lines, ts_batch_pool *pool) {
    ts_targets *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->loop = loop;
    l->spool = spool;
    l->pool = pool;
    ts_targets_set_record_lines(l, record_lines);
    ts_buf_init(&l->buf);
    /* the writer's names: the same numbers whichever side appends */
    l->c_spooled = ts_counter_get("writer_points_spooled");
    l->c_invalid = ts_counter_get("writer_points_invalid");
    return l;
}

void ts_targets_set_record_lines(ts_targets *l, size_t record_lines) {
    l->record_lines = record_lines > 0 ? record_lines : 10000;
}

void ts_targets_add(ts_targets *l, ts_target *t) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->t = realloc(l->t, (size_t)l->cap * sizeof *l->t);
        if (!l->t) abort();
    }
    l->t[l->n++] = t;
}

ts_target *ts_targets_take(ts_targets *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->t[i]->name, name) == 0) {
            ts_target *t = l->t[i];
            memmove(&l->t[i], &l->t[i + 1], (size_t)(l->n - i - 1) * sizeof *l->t);
            l->n--;
            return t;
        }
    return NULL;
}

int ts_targets_count(const ts_targets *l) { return l->n; }
ts_target *ts_targets_at(const ts_targets *l, int i) { return i >= 0 && i < l->n ? l->t[i] : NULL; }

ts_target *ts_targets_find(const ts_targets *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->t[i]->name, name) == 0) return l->t[i];
    return NULL;
}

static int reads(const ts_targets *l, const ts_target *t) {
    return l->spool && t->ops->reads_spool(t->self);
}

/* b to every target whose reads() is `readers`: a text copy each, b itself to the last. */
static void hand(ts_targets *l, ts_batch *b, int readers) {
    int last = -1, count = 0;
    for (int i = 0; i < l->n; i++)
        if (reads(l, l->t[i]) == readers) { last = i; count++; }
    if (last < 0) { ts_batch_pool_put(l->pool, b); return; }
    size_t lines = 0;
    if (count > 1) {
        ts_buf_reset(&l->buf);
        lines = ts_batch_encode(b, &l->buf);
    }
    for (int i = 0; i < last; i++) {
        if (reads(l, l->t[i]) != readers) continue;
        ts_batch *c = ts_batch_new_text(ts_batch_dest(b));
        ts_buf_add(ts_batch_text_buf(c), l->buf.data, l->buf.len);
        ts_batch_text_commit(c, lines);
        l->t[i]->ops->submit(l->t[i]->self, c);
    }
    l->t[last]->ops->submit(l->t[last]->self, b);
    if (count > 1) ts_buf_shrink(&l->buf, (size_t)1 << 20);
}

/* A record the spool took, offered to every healthy target that reads the
 * spool and can send from memory: each that keeps it holds a reference to
 * the batch (no copy). The others read it back from disk when their turn
 * comes. */
static void offer_live(void *ud, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                       ts_spool_pos at, ts_spool_pos next) {
    ts_targets *l = ud;
    for (int i = 0; i < l->n; i++) {
        ts_target *t = l->t[i];
        if (!t->ops->live || !reads(l, t) || !t->ops->healthy(t->self)) continue;
        t->ops->live(t->self, d, b, from, to, lines, at, next);
    }
}

/* A compact batch the spool consumed at once goes back to the pool counted
 * as held for this interval, so the pool keeps a spare of its size for the
 * next poll (it sizes its spares by what was held: without this, every poll
 * with the spool on allocated its batch arrays afresh). */
static void pool_put_consumed(ts_batch_pool *p, ts_batch *b) {
    ts_batch_pool_hold(p, b);
    ts_batch_pool_unhold(p, b);
    ts_batch_pool_put(p, b);
}

static void on_sync(void *ud) {
    ts_targets *l = ud;
    l->sync_timer = 0;
    ts_spool_tick(l->spool);
}

void ts_targets_submit(ts_targets *l, ts_batch *b) {
    if (!b) return;
    if (ts_batch_points(b) == 0 || l->n == 0) { ts_batch_pool_put(l->pool, b); return; }
    int nreaders = 0;
    for (int i = 0; i < l->n; i++) nreaders += reads(l, l->t[i]);
    if (nreaders == 0) { hand(l, b, 0); return; }
    if (nreaders < l->n) {
        /* the others get all of it from memory, before the spool consumes b */
        ts_batch *c = ts_batch_new_text(ts_batch_dest(b));
        size_t lines = ts_batch_encode(b, ts_batch_text_buf(c));
        ts_batch_text_commit(c, lines);
        hand(l, c, 0);
    }
    ts_batch *rest;
    size_t spooled, invalid;
    int all = ts_target_spool_batch(l->spool, b, l->record_lines, &l->buf, &rest, &spooled, &invalid, offer_live, l);
    l->spooled += spooled;
    ts_counter_add(l->c_spooled, (int64_t)spooled);
    if (invalid) ts_counter_add(l->c_invalid, (int64_t)invalid);
    /* the interval fsync and the positions within a second of an append */
    if (spooled && !l->sync_timer) l->sync_timer = ts_loop_timer(l->loop, ts_mono_ms() + 1000, on_sync, l);
    if (all) { pool_put_consumed(l->pool, b); return; }
    /* the spool refused (disk full, unwritable: logged there): memory keeps it for every reader */
    if (rest) hand(l, rest, 1);
    if (ts_batch_points(b) > 0) hand(l, b, 1);
    else ts_batch_pool_put(l->pool, b);
}

void ts_targets_tick(ts_targets *l) {
    if (l->pool) ts_batch_pool_interval(l->pool);
    for (int i = 0; i < l->n; i++) l->t[i]->ops->tick(l->t[i]->self);
}

size_t ts_targets_drain(ts_targets *l, int64_t deadline) {
    size_t lost = 0;
    for (int i = 0; i < l->n; i++) lost += l->t[i]->ops->drain(l->t[i]->self, deadline);
    return lost;
}

uint64_t ts_targets_spooled(const ts_targets *l) { return l->spooled; }

void ts_targets_free(ts_targets *l) {
    if (!l) return;
    if (l->sync_timer) ts_loop_timer_cancel(l->loop, l->sync_timer);
    for (int i = 0; i < l->n; i++) ts_target_close(l->t[i]);
    free(l->t);
    ts_buf_free(&l->buf);
    free(l);
}
