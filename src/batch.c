/* Batches and the batch pool (C core): the compact and text containers a
 * poll or a script fills for one destination, and the spares kept for the
 * next polls. Lua never sees a batch; the writer takes lines out of them. */
#include "ts_batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A compact batch holds what a poll produced until the publishing tick, so its
 * size per point is what the daemon's memory grows with (issue 4: 30 s of
 * polls are pending at any time). A cache's stats of one poll share the
 * entity and, in Traffic Monitor's answers, the time stamp: those live once
 * per run, and a point is only a batch-local stat index and the value (12
 * bytes, against 32 for an unpacked ts_cpoint). */
typedef struct crun {
    const ts_entity_map *ent;
    int64_t time_ms;
    size_t start;         /* index of its first point */
} crun;

typedef struct cpt {
    uint32_t stat;        /* index into ts_batch.stats */
    unsigned char value[sizeof(double)];   /* keeps the struct 4-aligned: 12 bytes */
} cpt;

struct ts_batch {
    ts_dest dest;
    int compact;
    cpt *pts;
    size_t n, cap;
    crun *runs;
    size_t nruns, runs_cap;
    const ts_stat_map **stats;    /* distinct stat maps of the batch */
    uint32_t nstats, stats_cap;
    uint32_t *stat_slots;         /* open addressing over stats: index + 1, 0 = empty */
    uint32_t slots_mask;
    uint32_t last_stat;           /* stats arrive in the same order for every cache */
    ts_map_owner owner;
    int has_owner;
    ts_buf text;          /* '\n'-terminated lines */
    size_t nlines;
    size_t pos;           /* compact: next point; text: byte offset of next line */
    size_t run_pos;       /* compact: run holding point `pos` */
    size_t lines_done;    /* text: lines already taken */
    int refs;             /* holders (ts_batch_retain); the last free or put releases it */
    struct ts_batch *next;   /* the pool's list of spares */
};

/* A wrong-kind call is a caller's bug: silently ignoring it would lose points. */
static void need_kind(const ts_batch *b, int compact, const char *fn) {
    if (b->compact != compact) {
        fprintf(stderr, "tstats: BUG: %s on a %s batch\n", fn, b->compact ? "compact" : "text");
        abort();
    }
}

static void batch_set_dest(ts_batch *b, const ts_dest *d) {
    b->dest = *d;
    b->dest.db[sizeof b->dest.db - 1] = '\0';
    b->dest.rp[sizeof b->dest.rp - 1] = '\0';
}

static ts_batch *batch_alloc(const ts_dest *d) {
    ts_batch *b = calloc(1, sizeof *b);
    if (!b) abort();
    batch_set_dest(b, d);
    ts_buf_init(&b->text);
    b->refs = 1;
    return b;
}

static void batch_set_owner(ts_batch *b, const ts_map_owner *owner) {
    if (owner && owner->retain) {
        /* one reference per batch: the maps must outlive every point in it */
        b->owner = *owner;
        b->has_owner = 1;
        owner->retain(owner->owner);
    }
}

ts_batch *ts_batch_new_compact(const ts_dest *d, const ts_map_owner *owner) {
    ts_batch *b = batch_alloc(d);
    b->compact = 1;
    batch_set_owner(b, owner);
    return b;
}

static void *resize(void *p, size_t n, size_t elem) {
    p = realloc(p, n * elem);
    if (!p) abort();
    return p;
}

static void *grow(void *p, size_t *cap, size_t elem, size_t first) {
    *cap = *cap ? *cap * 2 : first;
    return resize(p, *cap, elem);
}

void ts_batch_reserve(ts_batch *b, size_t points, size_t runs) {
    need_kind(b, 1, "ts_batch_reserve");
    /* a little headroom: the next poll may bring a few more caches or stats, and
     * one point over capacity would double (and copy) the whole array */
    points += points / 8 + 64;
    runs += runs / 8 + 16;
    if (b->cap < points) {
        b->pts = resize(b->pts, points, sizeof *b->pts);
        b->cap = points;
    }
    if (b->runs_cap < runs) {
        b->runs = resize(b->runs, runs, sizeof *b->runs);
        b->runs_cap = runs;
    }
}

size_t ts_batch_runs(const ts_batch *b) { return b->compact ? b->nruns : 0; }

static uint32_t stat_hash(const ts_stat_map *st) {
    uint64_t x = (uint64_t)(uintptr_t)st;
    return (uint32_t)((x * 0x9E3779B97F4A7C15ull) >> 32);
}

static void stat_slots_rebuild(ts_batch *b, uint32_t nslots) {
    free(b->stat_slots);
    b->stat_slots = calloc(nslots, sizeof *b->stat_slots);
    if (!b->stat_slots) abort();
    b->slots_mask = nslots - 1;
    for (uint32_t i = 0; i < b->nstats; i++) {
        uint32_t h = stat_hash(b->stats[i]) & b->slots_mask;
        while (b->stat_slots[h]) h = (h + 1) & b->slots_mask;
        b->stat_slots[h] = i + 1;
    }
}

static uint32_t stat_index(ts_batch *b, const ts_stat_map *st) {
    uint32_t guess = b->last_stat + 1;
    if (guess < b->nstats && b->stats[guess] == st) return b->last_stat = guess;
    if (b->nstats > 0) {
        uint32_t h = stat_hash(st) & b->slots_mask;
        for (uint32_t s; (s = b->stat_slots[h]) != 0; h = (h + 1) & b->slots_mask)
            if (b->stats[s - 1] == st) return b->last_stat = s - 1;
    }
    if (b->nstats == UINT32_MAX - 1) abort();   /* 4 billion distinct stats: not a TM payload */
    if (b->nstats == b->stats_cap) {
        size_t cap = b->stats_cap;
        b->stats = grow((void *)b->stats, &cap, sizeof *b->stats, 64);
        b->stats_cap = (uint32_t)cap;
    }
    b->stats[b->nstats++] = st;
    if (b->nstats * 2 > b->slots_mask) stat_slots_rebuild(b, b->stats_cap * 4);
    else {
        uint32_t h = stat_hash(st) & b->slots_mask;
        while (b->stat_slots[h]) h = (h + 1) & b->slots_mask;
        b->stat_slots[h] = b->nstats;
    }
    return b->last_stat = b->nstats - 1;
}

void ts_batch_add_compact(ts_batch *b, const ts_cpoint *p) {
    need_kind(b, 1, "ts_batch_add_compact");
    if (b->nruns == 0 || b->runs[b->nruns - 1].ent != p->ent || b->runs[b->nruns - 1].time_ms != p->time_ms) {
        if (b->nruns == b->runs_cap) b->runs = grow(b->runs, &b->runs_cap, sizeof *b->runs, 64);
        b->runs[b->nruns++] = (crun){p->ent, p->time_ms, b->n};
    }
    if (b->n == b->cap) b->pts = grow(b->pts, &b->cap, sizeof *b->pts, 256);
    cpt *c = &b->pts[b->n++];
    c->stat = stat_index(b, p->stat);
    memcpy(c->value, &p->value, sizeof p->value);
}

ts_batch *ts_batch_new_text(const ts_dest *d) { return batch_alloc(d); }

void ts_batch_add_line(ts_batch *b, const char *line, size_t len) {
    need_kind(b, 0, "ts_batch_add_line");
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    if (len == 0) return;
    ts_buf_add(&b->text, line, len);
    ts_buf_addc(&b->text, '\n');
    b->nlines++;
}

size_t ts_batch_points(const ts_batch *b) {
    return b->compact ? b->n - b->pos : b->nlines - b->lines_done;
}

/* Memory accounted for the data not yet encoded. */
size_t ts_batch_bytes(const ts_batch *b) {
    if (!b->compact) return b->text.len - b->pos;
    if (b->pos == b->n) return 0;
    return (b->n - b->pos) * sizeof(cpt) + (b->nruns - b->run_pos) * sizeof(crun) + b->nstats * sizeof *b->stats;
}

const ts_dest *ts_batch_dest(const ts_batch *b) { return &b->dest; }

static void batch_release_owner(ts_batch *b) {
    if (b->has_owner && b->owner.release) b->owner.release(b->owner.owner);
    b->has_owner = 0;
}

/* Empties a compact batch for reuse: its arrays stay allocated. */
static void batch_clear(ts_batch *b) {
    batch_release_owner(b);
    b->n = b->nruns = b->pos = b->run_pos = 0;
    b->nstats = b->last_stat = 0;
    if (b->stat_slots) memset(b->stat_slots, 0, ((size_t)b->slots_mask + 1) * sizeof *b->stat_slots);
    b->next = NULL;
}

size_t ts_batch_capacity_bytes(const ts_batch *b) {
    return b->cap * sizeof *b->pts + b->runs_cap * sizeof *b->runs + b->stats_cap * sizeof *b->stats +
           (b->stat_slots ? ((size_t)b->slots_mask + 1) * sizeof *b->stat_slots : 0);
}

void ts_batch_retain(ts_batch *b) { b->refs++; }

const ts_map_owner *ts_batch_owner(const ts_batch *b) {
    return b->compact && b->has_owner && b->owner.retain ? &b->owner : NULL;
}

void ts_batch_free(ts_batch *b) {
    if (!b || --b->refs > 0) return;
    batch_release_owner(b);
    free(b->pts);
    free(b->runs);
    free((void *)b->stats);
    free(b->stat_slots);
    ts_buf_free(&b->text);
    free(b);
}

/* Compact points from *pos (in run *run) up to `to` or until max_lines were
 * written, whichever is first; both cursors move past what was consumed. The
 * one place a compact batch becomes line protocol (the spool-off writer, the
 * live records, a refused record's text copy). */
static size_t encode_compact(const ts_batch *b, size_t *pos, size_t *run, size_t to, size_t max_lines,
                             ts_buf *out, size_t *invalid) {
    size_t lines = 0, i = *pos, r = *run;
    while (i < to && lines < max_lines) {
        while (r + 1 < b->nruns && b->runs[r + 1].start <= i) r++;
        const crun *cr = &b->runs[r];
        const cpt *c = &b->pts[i++];
        ts_cpoint p = {b->stats[c->stat], cr->ent, 0, cr->time_ms};
        memcpy(&p.value, c->value, sizeof p.value);
        if (ts_lp_encode_compact(out, &p, b->dest.precision) == 0) lines++;
        else (*invalid)++;
    }
    *pos = i;
    *run = r;
    return lines;
}

size_t ts_batch_take(ts_batch *b, ts_buf *out, size_t max_lines, size_t *taken, size_t *invalid) {
    size_t lines = 0, t = 0;
    if (b->compact) {
        size_t from = b->pos;
        lines = encode_compact(b, &b->pos, &b->run_pos, b->n, max_lines, out, invalid);
        t = b->pos - from;
    } else {
        while (b->pos < b->text.len && lines < max_lines) {
            const char *s = b->text.data + b->pos;
            const char *nl = memchr(s, '\n', b->text.len - b->pos);
            size_t n = (size_t)(nl - s) + 1;
            ts_buf_add(out, s, n);
            b->pos += n;
            b->lines_done++;
            lines++;
            t++;
        }
    }
    *taken = t;
    return lines;
}

size_t ts_batch_cursor(const ts_batch *b) { return b->pos; }

size_t ts_batch_run_of(const ts_batch *b, size_t i) {
    /* the last run starting at or before i */
    size_t lo = 0, hi = b->nruns;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->runs[mid].start <= i) lo = mid;
        else hi = mid;
    }
    return lo;
}

void ts_batch_run_get(const ts_batch *b, size_t run, const ts_entity_map **ent, int64_t *time_ms, size_t *end) {
    need_kind(b, 1, "ts_batch_run_get");
    *ent = b->runs[run].ent;
    *time_ms = b->runs[run].time_ms;
    *end = run + 1 < b->nruns ? b->runs[run + 1].start : b->n;
}

uint32_t ts_batch_point_get(const ts_batch *b, size_t i, double *value) {
    memcpy(value, b->pts[i].value, sizeof *value);
    return b->pts[i].stat;
}

uint32_t ts_batch_nstats(const ts_batch *b) { return b->compact ? b->nstats : 0; }
const ts_stat_map *ts_batch_stat(const ts_batch *b, uint32_t k) { return b->stats[k]; }

void ts_batch_skip(ts_batch *b, size_t to) {
    need_kind(b, 1, "ts_batch_skip");
    if (to > b->n) to = b->n;
    if (to > b->pos) b->pos = to;
    while (b->run_pos + 1 < b->nruns && b->runs[b->run_pos + 1].start <= b->pos) b->run_pos++;
}

size_t ts_batch_range_bytes(const ts_batch *b, size_t from, size_t to) {
    if (to <= from) return 0;
    return b->compact ? (to - from) * (sizeof(cpt) + sizeof(crun) / 8) : to - from;
}

size_t ts_batch_encode_range(const ts_batch *b, size_t from, size_t to, ts_buf *out, size_t *invalid) {
    size_t lines = 0;
    if (!b->compact) {
        if (to > b->text.len) to = b->text.len;
        if (from >= to) return 0;
        ts_buf_add(out, b->text.data + from, to - from);
        for (const char *q = b->text.data + from, *e = b->text.data + to; (q = memchr(q, '\n', (size_t)(e - q))) != NULL; q++)
            lines++;
        return lines;
    }
    if (to > b->n) to = b->n;
    if (from >= to) return 0;
    size_t run = ts_batch_run_of(b, from);
    return encode_compact(b, &from, &run, to, (size_t)-1, out, invalid);
}

size_t ts_batch_encode(const ts_batch *b, ts_buf *out) {
    ts_batch copy = *b;
    size_t taken = 0, invalid = 0;
    return ts_batch_take(&copy, out, (size_t)-1, &taken, &invalid);
}

ts_buf *ts_batch_text_buf(ts_batch *b) {
    need_kind(b, 0, "ts_batch_text_buf");
    return &b->text;
}

void ts_batch_text_commit(ts_batch *b, size_t lines) {
    need_kind(b, 0, "ts_batch_text_commit");
    b->nlines += lines;
}

int ts_batch_is_compact(const ts_batch *b) { return b->compact; }

/* ---- the pool ---- */
struct ts_batch_pool {
    ts_batch *spares;
    int nspares;
    size_t spare_bytes;
    int compact_held;        /* compact batches held since the last interval */
    int spares_max;          /* compact batches of the last publishing interval */
    size_t held_bytes, held_peak;   /* array bytes of the held compact batches, its maximum */
};

ts_batch_pool *ts_batch_pool_new(void) {
    ts_batch_pool *p = calloc(1, sizeof *p);
    if (!p) abort();
    return p;
}

void ts_batch_pool_free(ts_batch_pool *p) {
    if (!p) return;
    while (p->spares) {
        ts_batch *b = p->spares;
        p->spares = b->next;
        ts_batch_free(b);
    }
    free(p);
}

ts_batch *ts_batch_pool_get(ts_batch_pool *p, const ts_dest *d, const ts_map_owner *owner, size_t points,
                            size_t runs) {
    /* the smallest spare that holds `points`, else the largest (it grows) */
    ts_batch **best = NULL;
    for (ts_batch **pp = p ? &p->spares : NULL; pp && *pp; pp = &(*pp)->next) {
        size_t cap = (*pp)->cap;
        if (!best) { best = pp; continue; }
        size_t bcap = (*best)->cap;
        if (cap >= points ? (bcap < points || cap < bcap) : (bcap < points && cap > bcap)) best = pp;
    }
    ts_batch *b;
    if (best) {
        b = *best;
        *best = b->next;
        b->next = NULL;
        p->nspares--;
        p->spare_bytes -= ts_batch_capacity_bytes(b);
        batch_set_dest(b, d);
        batch_set_owner(b, owner);
    } else {
        b = ts_batch_new_compact(d, owner);
    }
    ts_batch_reserve(b, points, runs);
    return b;
}

void ts_batch_pool_hold(ts_batch_pool *p, const ts_batch *b) {
    if (!p || !b->compact) return;
    p->compact_held++;
    p->held_bytes += ts_batch_capacity_bytes(b);
    if (p->held_bytes > p->held_peak) p->held_peak = p->held_bytes;
}

void ts_batch_pool_unhold(ts_batch_pool *p, const ts_batch *b) {
    if (!p || !b->compact) return;
    p->held_bytes -= ts_batch_capacity_bytes(b);
}

void ts_batch_pool_put(ts_batch_pool *p, ts_batch *b) {
    if (!b) return;
    if (b->refs > 1) { b->refs--; return; }   /* another holder (a live record) puts it back */
    size_t bytes = b->compact ? ts_batch_capacity_bytes(b) : 0;
    if (!p || !b->compact || p->nspares >= p->spares_max || p->spare_bytes + bytes > p->held_peak) {
        ts_batch_free(b);
        return;
    }
    batch_clear(b);   /* releases the map owner: nothing points into the maps now */
    b->refs = 1;
    b->next = p->spares;
    p->spares = b;
    p->nspares++;
    p->spare_bytes += bytes;
}

void ts_batch_pool_interval(ts_batch_pool *p) {
    if (!p) return;
    p->spares_max = p->compact_held;
    p->compact_held = 0;
}
