/* Spool records of compact points (C core, no Lua): a compact batch's points
 * written in its own shape, and such a record read back (as hostile input)
 * into line protocol through the same encoder the spool-off writer uses.
 * The layout is in include/ts_spool.h. */
#include "ts_spool_rec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ts_lp.h"
#include "ts_spool_fmt.h"

/* ---- writing ---- */

static unsigned char *sr_put_var(unsigned char *d, uint64_t v) {
    while (v >= 0x80) {
        *d++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *d++ = (unsigned char)v;
    return d;
}

static unsigned char *sr_put_f64(unsigned char *d, double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    for (int k = 0; k < 8; k++) d[k] = (unsigned char)(u >> (8 * k));
    return d + 8;
}

/* sr_room for n more bytes, returning where they go (commit with sr_end_at) */
static unsigned char *sr_room(ts_buf *b, size_t n) {
    ts_buf_reserve(b, n + 1);
    return (unsigned char *)b->data + b->len;
}
static void sr_end_at(ts_buf *b, unsigned char *d) {
    b->len = (size_t)((char *)d - b->data);
    b->data[b->len] = '\0';
}

static void sr_put_tags(ts_buf *o, const ts_tagset *ts) {
    sr_end_at(o, sr_put_var(sr_room(o, 10), ts->n));
    for (uint32_t i = 0; i < ts->n; i++) {
        const ts_etag *t = &ts->tags[i];
        size_t kl = strlen(t->key);
        unsigned char *d = sr_put_var(sr_room(o, kl + t->kv_len + 21), kl);
        memcpy(d, t->key, kl);
        d += kl;
        *d++ = 0;   /* the reader hands the key to strcmp */
        d = sr_put_var(d, t->kv_len);
        memcpy(d, t->kv, t->kv_len);
        sr_end_at(o, d + t->kv_len);
    }
}

static void sr_put_stat(ts_buf *o, const ts_stat_map *st) {
    unsigned char *d = sr_put_var(sr_room(o, st->meas_len + st->field_len + 30), st->meas_len);
    memcpy(d, st->meas, st->meas_len);
    d = sr_put_var(d + st->meas_len, st->field_len);
    memcpy(d, st->field, st->field_len);
    d += st->field_len;
    *d++ = st->as_int ? 1 : 0;
    sr_end_at(o, sr_put_f64(d, st->scale));
    sr_put_tags(o, &st->tags);
}

/* entity maps already in the record: pointer -> index + 1, open addressing */
typedef struct sr_ent_tab {
    const ts_entity_map **key;
    uint32_t *idx;
    size_t mask, n;
} sr_ent_tab;

static size_t sr_ent_slot(const sr_ent_tab *t, const ts_entity_map *e) {
    uint64_t x = (uint64_t)(uintptr_t)e * 0x9E3779B97F4A7C15ull;
    size_t h = (size_t)(x >> 32) & t->mask;
    while (t->key[h] && t->key[h] != e) h = (h + 1) & t->mask;
    return h;
}

static uint32_t sr_ent_index(sr_ent_tab *t, const ts_entity_map *e, ts_buf *dict) {
    size_t h = sr_ent_slot(t, e);
    if (t->key[h]) return t->idx[h];
    if (2 * (t->n + 1) > t->mask) {
        sr_ent_tab g = {calloc(2 * (t->mask + 1), sizeof *g.key), calloc(2 * (t->mask + 1), sizeof *g.idx),
                     2 * (t->mask + 1) - 1, t->n};
        if (!g.key || !g.idx) abort();
        for (size_t i = 0; i <= t->mask; i++)
            if (t->key[i]) {
                size_t s = sr_ent_slot(&g, t->key[i]);
                g.key[s] = t->key[i];
                g.idx[s] = t->idx[i];
            }
        free((void *)t->key);
        free(t->idx);
        *t = g;
        h = sr_ent_slot(t, e);
    }
    t->key[h] = e;
    t->idx[h] = (uint32_t)++t->n;
    sr_put_tags(dict, &e->tags);
    return t->idx[h];
}

size_t ts_spool_rec_compact(ts_buf *out, ts_batch *b, size_t max_lines, size_t *taken, size_t *invalid) {
    size_t i = ts_batch_cursor(b), end = i + ts_batch_points(b), lines = 0, inv = 0;
    *taken = *invalid = 0;
    if (i >= end || max_lines == 0) return 0;
    uint32_t nbstats = ts_batch_nstats(b), nstats = 0;
    uint32_t *smap = calloc(nbstats ? nbstats : 1, sizeof *smap);   /* batch stat -> record index + 1 */
    sr_ent_tab et = {calloc(64, sizeof *et.key), calloc(64, sizeof *et.idx), 63, 0};
    if (!smap || !et.key || !et.idx) abort();
    ts_buf sd, ed, rd;   /* the stat and entity dictionaries, the runs */
    ts_buf_init(&sd);
    ts_buf_init(&ed);
    ts_buf_init(&rd);
    size_t nruns = 0, run = ts_batch_run_of(b, i);
    int64_t prev_t = 0;
    while (i < end && lines < max_lines) {
        const ts_entity_map *ent;
        int64_t t;
        size_t rend;
        ts_batch_run_get(b, run, &ent, &t, &rend);
        if (rend > end) rend = end;
        size_t j = i, k = 0;
        for (; j < rend && lines + k < max_lines; j++) {
            double v;
            uint32_t s = ts_batch_point_get(b, j, &v);
            if (ts_lp_compact_writable(ts_batch_stat(b, s), v)) k++;
            else inv++;
        }
        if (k > 0) {
            uint32_t e = ent ? sr_ent_index(&et, ent, &ed) : 0;
            uint64_t dt = (uint64_t)t - (uint64_t)prev_t;
            uint64_t zz = (dt << 1) ^ (uint64_t)((int64_t)dt >> 63);
            prev_t = t;
            unsigned char *d = sr_room(&rd, 30 + k * 13);
            d = sr_put_var(d, e);
            d = sr_put_var(d, zz);
            d = sr_put_var(d, k);
            for (size_t q = i; q < j; q++) {
                double v;
                uint32_t s = ts_batch_point_get(b, q, &v);
                const ts_stat_map *st = ts_batch_stat(b, s);
                if (!ts_lp_compact_writable(st, v)) continue;
                if (!smap[s]) {
                    sr_put_stat(&sd, st);
                    smap[s] = ++nstats;
                }
                d = sr_put_var(d, smap[s] - 1);
                d = sr_put_f64(d, v);
            }
            sr_end_at(&rd, d);
            nruns++;
            lines += k;
        }
        i = j;
        if (j == rend) run++;
    }
    unsigned char *d = sr_room(out, 30 + sd.len + ed.len + rd.len);
    d = sr_put_var(d, nstats);
    if (sd.len) memcpy(d, sd.data, sd.len);   /* an empty buffer has no data at all */
    d = sr_put_var(d + sd.len, et.n);
    if (ed.len) memcpy(d, ed.data, ed.len);
    d = sr_put_var(d + ed.len, nruns);
    if (rd.len) memcpy(d, rd.data, rd.len);
    sr_end_at(out, d + rd.len);
    *taken = i - ts_batch_cursor(b);
    *invalid = inv;
    ts_batch_skip(b, i);
    ts_buf_free(&sd);
    ts_buf_free(&ed);
    ts_buf_free(&rd);
    free(smap);
    free((void *)et.key);
    free(et.idx);
    return lines;
}

/* ---- reading: nothing in the bytes is believed before it is checked ---- */

typedef struct sr_rdr {
    const unsigned char *p, *e;
    const char *why;
} sr_rdr;

static int sr_fail(sr_rdr *r, const char *why) {
    if (!r->why) r->why = why;
    return -1;
}

static uint64_t sr_get_var(sr_rdr *r) {
    uint64_t v = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (r->p >= r->e) return sr_fail(r, "compact record: cut short"), 0;
        unsigned char c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80)) return v;
    }
    return sr_fail(r, "compact record: bad number"), 0;
}

/* a count whose items take at least `min` bytes each must fit what is left */
static size_t sr_get_count(sr_rdr *r, size_t min) {
    uint64_t n = sr_get_var(r);
    if (r->why) return 0;
    if (n > (uint64_t)(r->e - r->p) / min) return sr_fail(r, "compact record: count past its end"), 0;
    return (size_t)n;
}

static const char *sr_get_bytes(sr_rdr *r, size_t n) {
    if (r->why) return NULL;
    if (n > (size_t)(r->e - r->p)) return sr_fail(r, "compact record: length past its end"), NULL;
    const char *s = (const char *)r->p;
    r->p += n;
    return s;
}

/* an escaped element: never a raw newline (the encoder writes "\n"), which
 * would split the line */
static const char *sr_get_elem(sr_rdr *r, uint32_t *len) {
    size_t n = sr_get_count(r, 1);
    const char *s = sr_get_bytes(r, n);
    if (s && memchr(s, '\n', n)) return sr_fail(r, "compact record: newline in a name"), NULL;
    if (n > 65535) return sr_fail(r, "compact record: name too long"), NULL;
    *len = (uint32_t)n;
    return s;
}

static double sr_get_f64(sr_rdr *r) {
    const char *s = sr_get_bytes(r, 8);
    if (!s) return 0;
    uint64_t u = 0;
    for (int k = 0; k < 8; k++) u |= (uint64_t)(unsigned char)s[k] << (8 * k);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* tags of one map: kept as indexes into *all until every map is read */
typedef struct sr_tagv {
    ts_etag *v;
    size_t n, cap;
} sr_tagv;

static int sr_get_tags(sr_rdr *r, sr_tagv *all, ts_tagset *ts, size_t *first) {
    size_t n = sr_get_count(r, 3);
    *first = all->n;
    ts->tags = NULL;
    ts->n = (uint32_t)n;
    for (size_t i = 0; i < n && !r->why; i++) {
        size_t kl = sr_get_count(r, 1);
        const char *key = sr_get_bytes(r, kl + 1);
        if (!key) break;
        if (key[kl] != '\0') return sr_fail(r, "compact record: tag key not terminated");
        ts_etag t = {key, NULL, 0};
        t.kv = sr_get_elem(r, &t.kv_len);
        if (!t.kv) break;
        if (all->n == all->cap) {
            all->cap = all->cap ? all->cap * 2 : 64;
            all->v = realloc(all->v, all->cap * sizeof *all->v);
            if (!all->v) abort();
        }
        all->v[all->n++] = t;
    }
    return r->why ? -1 : 0;
}

/* a point as read: its run (entity, time), its stat, its value */
typedef struct sr_pt {
    uint32_t run, stat;
    double value;
} sr_pt;

typedef struct sr_named {
    const char *meas;
    uint32_t len, idx;
} sr_named;

/* bytes in memcmp order, a prefix first; then by the index, so that qsort
 * keeps the first appearance first (a stable order) */
static int sr_bytes_cmp(const char *x, size_t xl, const char *y, size_t yl) {
    int c = memcmp(x, y, xl < yl ? xl : yl);
    return c ? c : (xl > yl) - (xl < yl);
}
static int sr_idx_cmp(size_t x, size_t y) { return (x > y) - (x < y); }

static int sr_by_meas(const void *a, const void *b) {
    const sr_named *x = a, *y = b;
    int c = sr_bytes_cmp(x->meas, x->len, y->meas, y->len);
    return c ? c : sr_idx_cmp(x->idx, y->idx);
}

/* stat index -> its place when the stats are ordered by measurement (then
 * by first appearance) */
static uint32_t *sr_stat_ranks(const ts_stat_map *stats, size_t nstats) {
    sr_named *by = malloc((nstats ? nstats : 1) * sizeof *by);
    uint32_t *rank = malloc((nstats ? nstats : 1) * sizeof *rank);
    if (!by || !rank) abort();
    for (size_t i = 0; i < nstats; i++) by[i] = (sr_named){stats[i].meas, stats[i].meas_len, (uint32_t)i};
    qsort(by, nstats, sizeof *by, sr_by_meas);
    for (size_t i = 0; i < nstats; i++) rank[by[i].idx] = (uint32_t)i;
    free(by);
    return rank;
}

/* entities ordered by their tags' text ("key=value" in key order, as the
 * series key holds them); ties by first appearance */
static int sr_tags_cmp(const ts_tagset *x, const ts_tagset *y) {
    for (uint32_t i = 0; i < x->n && i < y->n; i++) {
        int c = sr_bytes_cmp(x->tags[i].kv, x->tags[i].kv_len, y->tags[i].kv, y->tags[i].kv_len);
        if (c) return c;
    }
    return sr_idx_cmp(x->n, y->n);
}

typedef struct sr_ent_by {
    const ts_tagset *tags;
    uint32_t idx;
} sr_ent_by;

static int sr_by_tags(const void *a, const void *b) {
    const sr_ent_by *x = a, *y = b;
    int c = sr_tags_cmp(x->tags, y->tags);
    return c ? c : sr_idx_cmp(x->idx, y->idx);
}

/* entity number (0 none, else index + 1) -> its place by tags (0 stays first) */
static uint32_t *sr_ent_ranks(const ts_entity_map *ents, size_t nents) {
    sr_ent_by *by = malloc((nents ? nents : 1) * sizeof *by);
    uint32_t *rank = malloc((nents + 1) * sizeof *rank);
    if (!by || !rank) abort();
    for (size_t i = 0; i < nents; i++) by[i] = (sr_ent_by){&ents[i].tags, (uint32_t)i};
    qsort(by, nents, sizeof *by, sr_by_tags);
    rank[0] = 0;
    for (size_t i = 0; i < nents; i++) rank[by[i].idx + 1] = (uint32_t)i + 1;
    free(by);
    return rank;
}

/* in (indexes into pts) into out, stably ordered by a key < nkeys: the
 * point's entity's rank (erank[rent[run]]) or its stat's rank */
static void sr_count_sort(const sr_pt *pts, const uint32_t *in, uint32_t *out, size_t n, size_t nkeys, int by_stat,
                          const uint32_t *rent, const uint32_t *erank, const uint32_t *rank) {
    size_t *at = calloc(nkeys + 1, sizeof *at);
    if (!at) abort();
#define SR_KEY(p) (by_stat ? rank[(p)->stat] : erank[rent[(p)->run]])
    for (size_t i = 0; i < n; i++) at[SR_KEY(&pts[in[i]]) + 1]++;
    for (size_t k = 0; k < nkeys; k++) at[k + 1] += at[k];
    for (size_t i = 0; i < n; i++) out[at[SR_KEY(&pts[in[i]])]++] = in[i];
#undef SR_KEY
    free(at);
}

long ts_spool_rec_decode(const unsigned char *p, size_t n, ts_precision prec, size_t lines, ts_buf *out,
                         const char **why) {
    sr_rdr r = {p, p + n, NULL};
    size_t before = out->len, got = 0;
    sr_tagv all = {NULL, 0, 0};
    size_t nstats = sr_get_count(&r, 12), nents = 0;
    ts_stat_map *stats = calloc(nstats ? nstats : 1, sizeof *stats);
    size_t *sfirst = calloc(nstats ? nstats : 1, sizeof *sfirst), *efirst = NULL;
    ts_entity_map *ents = NULL;
    if (!stats || !sfirst) abort();
    for (size_t i = 0; i < nstats && !r.why; i++) {
        ts_stat_map *st = &stats[i];
        st->meas = sr_get_elem(&r, &st->meas_len);
        st->field = sr_get_elem(&r, &st->field_len);
        const char *fl = sr_get_bytes(&r, 1);
        st->scale = sr_get_f64(&r);
        if (r.why) break;
        if ((unsigned char)*fl > 1) sr_fail(&r, "compact record: bad stat flags");
        st->as_int = *fl & 1;
        st->keep = 1;
        st->hook_ref = -2;
        sr_get_tags(&r, &all, &st->tags, &sfirst[i]);
    }
    if (!r.why) nents = sr_get_count(&r, 1);
    ents = calloc(nents ? nents : 1, sizeof *ents);
    efirst = calloc(nents ? nents : 1, sizeof *efirst);
    if (!ents || !efirst) abort();
    for (size_t i = 0; i < nents && !r.why; i++) {
        ents[i].keep = 1;
        sr_get_tags(&r, &all, &ents[i].tags, &efirst[i]);
    }
    /* every map read: the tag arrays stop moving. With no tag in any map all.v is NULL, and
     * NULL + 0 is undefined in C, so such maps keep their NULL (their count is 0). */
    for (size_t i = 0; i < nstats && !r.why && all.v; i++) stats[i].tags.tags = all.v + sfirst[i];
    for (size_t i = 0; i < nents && !r.why && all.v; i++) ents[i].tags.tags = all.v + efirst[i];
    /* Every run read and checked first, then the points encoded series by
     * series: measurement by measurement (stats ranked by their name), each
     * stat's points entity by entity (entities ranked by their tags' text),
     * each series' points in the record's order (their time order). influxd spends less CPU on a body whose
     * points come series by series (docs/BENCHMARKS.md); the lines and
     * their bytes are the record's, only their order moves. */
    size_t nruns = r.why ? 0 : sr_get_count(&r, 3);
    size_t cap = lines < n / 9 ? lines : n / 9;   /* a point takes >= 9 bytes */
    sr_pt *pts = malloc((cap ? cap : 1) * sizeof *pts);
    uint32_t *ord = calloc(cap ? cap : 1, sizeof *ord), *tmp = calloc(cap ? cap : 1, sizeof *tmp);
    int64_t *rt = malloc((nruns ? nruns : 1) * sizeof *rt);
    uint32_t *rent = malloc((nruns ? nruns : 1) * sizeof *rent);
    if (!pts || !ord || !tmp || !rt || !rent) abort();
    int64_t t = 0;
    for (size_t k = 0; k < nruns && !r.why; k++) {
        uint64_t e = sr_get_var(&r), zz = sr_get_var(&r);
        size_t np = sr_get_count(&r, 9);
        if (r.why) break;
        if (e > nents) { sr_fail(&r, "compact record: entity index out of range"); break; }
        if (np > lines - got || np > cap - got) { sr_fail(&r, "compact record: more points than its lines"); break; }
        uint64_t dt = (zz >> 1) ^ (0 - (zz & 1));
        t = (int64_t)((uint64_t)t + dt);
        rt[k] = t;
        rent[k] = (uint32_t)e;
        for (size_t q = 0; q < np; q++) {
            uint64_t st = sr_get_var(&r);
            double v = sr_get_f64(&r);
            if (r.why) break;
            if (st >= nstats) { sr_fail(&r, "compact record: stat index out of range"); break; }
            pts[got++] = (sr_pt){(uint32_t)k, (uint32_t)st, v};
        }
    }
    if (!r.why && r.p != r.e) sr_fail(&r, "compact record: bytes after its points");
    if (!r.why && got != lines) sr_fail(&r, "compact record: fewer points than its lines");
    if (!r.why) {
        /* two stable counting sorts: by entity, then by the stat's rank */
        uint32_t *rank = sr_stat_ranks(stats, nstats), *erank = sr_ent_ranks(ents, nents);
        for (size_t i = 0; i < got; i++) tmp[i] = (uint32_t)i;
        sr_count_sort(pts, tmp, ord, got, nents + 1, 0, rent, erank, NULL);
        sr_count_sort(pts, ord, tmp, got, nstats, 1, NULL, NULL, rank);
        ts_cpoint cp = {NULL, NULL, 0, 0};
        for (size_t i = 0; i < got && !r.why; i++) {
            const sr_pt *pt = &pts[tmp[i]];
            cp.stat = &stats[pt->stat];
            cp.ent = rent[pt->run] ? &ents[rent[pt->run] - 1] : NULL;
            cp.value = pt->value;
            cp.time_ms = rt[pt->run];
            if (ts_lp_encode_compact(out, &cp, prec) != 0) sr_fail(&r, "compact record: unwritable value");
        }
        free(rank);
        free(erank);
    }
    free(pts);
    free(ord);
    free(tmp);
    free(rt);
    free(rent);
    free(all.v);
    free(stats);
    free(sfirst);
    free(ents);
    free(efirst);
    if (r.why) {
        out->len = before;
        if (out->data) out->data[before] = '\0';
        *why = r.why;
        return -1;
    }
    return (long)got;
}

/* ---- line protocol records: the same order by sorting the text ---- */

typedef struct sr_line {
    const char *p;
    size_t len, key, idx;   /* key: the series key's length (up to the first unescaped space) */
} sr_line;

static int sr_by_key(const void *a, const void *b) {
    const sr_line *x = a, *y = b;
    int c = sr_bytes_cmp(x->p, x->key, y->p, y->key);
    return c ? c : sr_idx_cmp(x->idx, y->idx);
}

void ts_spool_lp_by_series(char *body, size_t len) {
    size_t n = ts_spool_count_lines(body, len);
    if (n < 2) return;
    sr_line *v = malloc(n * sizeof *v);
    char *copy = malloc(len);
    if (!v || !copy) abort();
    size_t k = 0, at = 0;
    while (at < len && k < n) {
        const char *p = body + at, *nl = memchr(p, '\n', len - at);
        size_t l = (size_t)(nl - p) + 1;
        v[k] = (sr_line){p, l, ts_lp_series_key(p, l - 1), k};
        k++;
        at += l;
    }
    qsort(v, k, sizeof *v, sr_by_key);
    size_t o = 0;
    for (size_t i = 0; i < k; i++) {
        memcpy(copy + o, v[i].p, v[i].len);
        o += v[i].len;
    }
    memcpy(body, copy, o);
    free(copy);
    free(v);
}
