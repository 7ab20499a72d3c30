/* The spool's per-consumer lists of records in flight (C core): a growing
 * ring of (position, next, done), used by src/spool.c for what a consumer
 * read and for what it claimed to send from memory. */
#include "ts_spool_acks.h"

#include <stdlib.h>
#include <string.h>

void ts_spool_fifo_push(ts_spool_fifo *f, ts_spool_pos pos, ts_spool_pos next, int done) {
    if (f->head > 0 && f->head + f->n == f->cap) {
        memmove(f->v, f->v + f->head, f->n * sizeof *f->v);
        f->head = 0;
    }
    if (f->head + f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->v = realloc(f->v, f->cap * sizeof *f->v);
        if (!f->v) abort();
    }
    f->v[f->head + f->n++] = (ts_spool_oref){pos, next, done};
}

ts_spool_oref *ts_spool_fifo_first(ts_spool_fifo *f) { return f->n ? &f->v[f->head] : NULL; }

void ts_spool_fifo_pop(ts_spool_fifo *f) {
    if (!f->n) return;
    f->head++;
    if (--f->n == 0) f->head = 0;
}

int ts_spool_fifo_mark(ts_spool_fifo *f, ts_spool_pos pos) {
    for (size_t i = 0; i < f->n; i++) {
        ts_spool_oref *o = &f->v[f->head + i];
        if (ts_spool_pos_cmp(o->pos, pos) == 0) {
            o->done = 1;
            return 1;
        }
    }
    return 0;
}

int ts_spool_fifo_pop_done(ts_spool_fifo *f, ts_spool_pos *upto) {
    int any = 0;
    while (f->n > 0 && f->v[f->head].done) {
        *upto = f->v[f->head].next;
        ts_spool_fifo_pop(f);
        any = 1;
    }
    return any;
}

void ts_spool_fifo_pop_upto(ts_spool_fifo *f, ts_spool_pos upto) {
    while (f->n > 0 && ts_spool_pos_cmp(f->v[f->head].next, upto) <= 0) ts_spool_fifo_pop(f);
}

uint64_t ts_spool_fifo_done_bytes(const ts_spool_fifo *f, ts_spool_pos from) {
    uint64_t b = 0;
    for (size_t i = 0; i < f->n; i++) {
        const ts_spool_oref *o = &f->v[f->head + i];
        if (o->done && ts_spool_pos_cmp(o->pos, from) >= 0 && o->next.seg == o->pos.seg && o->next.off > o->pos.off)
            b += o->next.off - o->pos.off;
    }
    return b;
}

void ts_spool_fifo_clear(ts_spool_fifo *f) { f->head = f->n = 0; }

void ts_spool_fifo_free(ts_spool_fifo *f) {
    free(f->v);
    memset(f, 0, sizeof *f);
}
