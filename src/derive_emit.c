/* Derived metrics, end of a poll (C core): staged series commit (rates their
 * new base, ratios join their groups), windows every series moved past
 * close, and each touched group's value is written as one line of line
 * protocol into a text batch per destination. */
#include "ts_derive_emit.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ts_derive_eval.h"
#include "ts_lp.h"

static int64_t to_prec(int64_t ms, ts_precision p) {
    switch (p) {
    case TS_PREC_S: return floor_div(ms, 1000);
    case TS_PREC_M: return floor_div(ms, 60000);
    case TS_PREC_H: return floor_div(ms, 3600000);
    default: return ms;
    }
}

/* ---- number text ----------------------------------------------------------
 * Derived values are rarely short decimals (rates, means, ratios): the
 * writer's shortest-text search would fall back to snprintf/strtod, ~1 us a
 * value. Here: the 15-digit decimal when it provably round-trips (Clinger:
 * an integer below 2^53 over an exact power of ten is correctly rounded, and
 * at most one 15-digit decimal maps to a double), else the correctly rounded
 * 17-digit decimal, computed exactly in 128-bit integers (17 digits always
 * round-trip). Outside 1e-6 .. 9e15 and for integers: ts_fmt_double. */
static const double P10D[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static const char DIG2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The digits of q, written backwards so they end at end; returns where they
 * start. Eight digits at a time come off in 64 bits, the pairs of each in 32
 * (a 17-digit value is two 64-bit divisions and 32-bit steps, not eight
 * 64-bit ones: the end of a poll writes one per derived point). */
static char *digits_r(char *end, uint64_t q) {
    char *p = end;
    while (q >= 100000000) {
        uint32_t r = (uint32_t)(q % 100000000);
        q /= 100000000;
        for (int i = 0; i < 4; i++) {
            p -= 2;
            memcpy(p, DIG2 + 2 * (r % 100), 2);
            r /= 100;
        }
    }
    uint32_t s = (uint32_t)q;
    while (s >= 100) {
        p -= 2;
        memcpy(p, DIG2 + 2 * (s % 100), 2);
        s /= 100;
    }
    if (s >= 10) { p -= 2; memcpy(p, DIG2 + 2 * s, 2); }
    else *--p = (char)('0' + s);
    return p;
}

/* q / 10^frac as a decimal, trailing zeros of the fraction dropped. */
static size_t put_decimal(char *out, uint64_t q, int frac, int neg) {
    while (frac > 0 && q % 10 == 0) { q /= 10; frac--; }
    char dig[24];
    char *d = digits_r(dig + sizeof dig, q), *o = out;
    int nd = (int)(dig + sizeof dig - d);
    if (neg) *o++ = '-';
    if (nd <= frac) {
        *o++ = '0';
        *o++ = '.';
        memset(o, '0', (size_t)(frac - nd));
        o += frac - nd;
        memcpy(o, d, (size_t)nd);
        o += nd;
    } else {
        int ip = nd - frac;
        memcpy(o, d, (size_t)ip);
        o += ip;
        if (frac) {
            *o++ = '.';
            memcpy(o, d + ip, (size_t)frac);
            o += frac;
        }
    }
    *o = 0;
    return (size_t)(o - out);
}

/* x rounded to an integer, ties to even (as nearbyint in the default
 * rounding mode) for 0 <= x < 2^52, without a call into libm. */
static inline double round_small(double x) {
    volatile double big = 4503599627370496.0;   /* volatile: the compiler must not fold (x + 2^52) - 2^52 */
    double b = big;
    return (x + b) - b;
}

/* 10^-8 .. 10^16, for the decimal exponent of a value in range */
static const double P10N[25] = {1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4,
                                1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16};

size_t ts_derive_fmt_double(char out[40], double v) {
    double a = fabs(v);
    if (!(a >= 1e-6 && a < 9e15) || a >= 4503599627370496.0 || round_small(a) == a) return ts_fmt_double(out, v);
    uint64_t bits;
    memcpy(&bits, &a, sizeof bits);
    int ex = (int)((bits >> 52) & 0x7ff) - 1022;                    /* a = fr * 2^ex, fr in [0.5, 1) (a is normal here) */
    uint64_t f = (bits & 0xFFFFFFFFFFFFFULL) | (1ULL << 52);        /* fr * 2^53 */
    /* floor(log10(a)) from the binary exponent (78913 / 2^18 ~ log10(2)), then one step of correction */
    int e10 = ((ex - 1) * 78913) >> 18;
    if (e10 < -8) e10 = -8;
    while (e10 < 15 && a >= P10N[e10 + 9]) e10++;
    while (e10 > -8 && a < P10N[e10 + 8]) e10--;
    int k = 14 - e10;
    if (k >= 0 && k <= 22) {
        /* a * 10^k is below 10^16 (< 2^52 after the correction of e10 above) */
        double m = round_small(a * P10D[k]);
        if (m >= 1e15 && k > 0) { k--; m = round_small(a * P10D[k]); }
        else if (m < 1e14 && k < 22) { k++; m = round_small(a * P10D[k]); }
        if (m < 9007199254740992.0 && m / P10D[k] == a) return put_decimal(out, (uint64_t)m, k, v < 0);
    }
    int sh = 53 - ex;   /* a = f / 2^sh */
    int n = 16 - e10;   /* q = a * 10^n has 17 digits */
    for (int tries = 0; tries < 3 && sh > 0 && sh < 127; tries++) {
        if (n < 0 || n > 22) break;
        unsigned __int128 p = (unsigned __int128)(uint64_t)(n > 19 ? 1e19 : P10D[n]);
        if (n > 19) p *= (uint64_t)P10D[n - 19];
        unsigned __int128 x = (unsigned __int128)f * p;
        unsigned __int128 q = (x + ((unsigned __int128)1 << (sh - 1))) >> sh;
        if (q >= (unsigned __int128)100000000000000000ULL) { n--; continue; }
        if (q < (unsigned __int128)10000000000000000ULL) { n++; continue; }
        return put_decimal(out, (uint64_t)q, n, v < 0);
    }
    return ts_fmt_double(out, v);
}

typedef struct outb { const ts_dest *dest; ts_batch *b; ts_buf *text; size_t lines; } outb;
typedef struct emitter {
    ts_derive_ep *e;
    outb v[TS_DERIVE_MAX_DESTS];
    int n;
    size_t points;
    int64_t t;           /* the time stamp whose text ts holds (a poll's groups: the same or a few ms apart) */
    size_t tslen;        /* 0: none yet */
    char ts[24];
} emitter;

/* The text batch of a destination; sized like the last poll's, so a poll
 * like the last one writes its lines without regrowing (fresh pages cost a
 * fault each). */
static outb *out_batch(emitter *em, const ts_dest *d) {
    for (int i = 0; i < em->n; i++)
        if (strcmp(em->v[i].dest->db, d->db) == 0 && strcmp(em->v[i].dest->rp, d->rp) == 0 &&
            em->v[i].dest->precision == d->precision)
            return &em->v[i];
    if (em->n == TS_DERIVE_MAX_DESTS) return NULL;
    outb *o = &em->v[em->n];
    o->dest = d;
    o->b = ts_batch_new_text(d);
    o->text = ts_batch_text_buf(o->b);
    o->lines = 0;
    ts_buf_reserve(o->text, em->e->last_bytes[em->n] + 64);
    em->n++;
    return o;
}

static size_t fmt_time(char out[24], int64_t t) {
    if (t < 0) return ts_fmt_int64(out, t);
    char d[24];
    char *p = digits_r(d + sizeof d, (uint64_t)t);
    size_t n = (size_t)(d + sizeof d - p);
    memcpy(out, p, n);
    out[n] = 0;
    return n;
}

/* em->ts becomes the text of tp. The groups of a poll mostly carry time
 * stamps that differ in their last digits (per-cache groups: each cache's
 * own sample time): when only the last five can differ, those are
 * rewritten in place. */
static void put_time(emitter *em, int64_t tp) {
    if (em->tslen && tp == em->t) return;
    if (em->tslen && tp >= 100000 && em->t >= 100000 && tp / 100000 == em->t / 100000) {
        uint32_t lo = (uint32_t)(tp % 100000);
        char *w = em->ts + em->tslen;
        w[-1] = (char)('0' + lo % 10);
        lo /= 10;
        memcpy(w - 3, DIG2 + 2 * (lo % 100), 2);
        memcpy(w - 5, DIG2 + 2 * (lo / 100), 2);
    } else {
        em->tslen = fmt_time(em->ts, tp);
    }
    em->t = tp;
}

/* One line: measurement, the group's tags, field, value, time. *op is the
 * definition's batch, looked up at its first point. */
static void emit_point(ts_derive_ep *e, emitter *em, ddefst *ds, outb **op, const dgroup *g, double v, int64_t t_ms) {
    const ddef *f = ds->def;
    v *= f->scale;
    if (!isfinite(v)) { e->d->st.undefined++; ts_counter_add(ts_dv_ctr.undef, 1); return; }
    if (!*op && !(*op = out_batch(em, &ds->dest))) return;
    outb *o = *op;
    int64_t tp = to_prec(t_ms, ds->dest.precision);
    put_time(em, tp);
    ts_buf *t = o->text;
    size_t need = f->meas_len + g->kvs_len + f->field_len + 40 + em->tslen + 4;
    if (t->cap - t->len < need) ts_buf_reserve(t, need);
    char *w = t->data + t->len;
    memcpy(w, f->meas_esc, f->meas_len); w += f->meas_len;
    memcpy(w, g->kvs, g->kvs_len); w += g->kvs_len;
    *w++ = ' ';
    memcpy(w, f->field_esc, f->field_len); w += f->field_len;
    *w++ = '=';
    w += ts_derive_fmt_double(w, v);
    *w++ = ' ';
    memcpy(w, em->ts, em->tslen); w += em->tslen;
    *w++ = '\n';
    *w = 0;
    t->len = (size_t)(w - t->data);
    o->lines++;
    em->points++;
}

/* Windows every series of the poll has moved past are written (a series
 * stuck on an old time stamp repeats it and does not hold them back; one a
 * whole window behind the newest does not either). */
static void close_windows(ts_derive_ep *e, emitter *em, ddefst *ds) {
    const ddef *f = ds->def;
    if (!ds->has_t) return;
    int64_t lo = floor_div(ds->poll_tmin, f->window_ms) - 1;
    int64_t hi = floor_div(ds->poll_tmax, f->window_ms) - 2;
    int64_t through = lo > hi ? lo : hi;
    if (through <= ds->closed_through) return;
    for (int s = 0; s < ds->nsets; s++) {
        dcellset *cs = ds->sets[s];
        for (uint32_t i = 0; i < cs->ncells; i++) {
            dcell_win *c = (dcell_win *)cell_at(cs, i);
            if (c->wn && c->wb <= through) ts_dv_window_fold(ds, c);
        }
    }
    outb *o = NULL;
    for (int i = 0; i < ds->nbuckets;) {
        dbucket *bk = &ds->buckets[i];
        if (bk->b > through) { i++; continue; }
        for (uint32_t g = 0; g < bk->naccs; g++)
            if (bk->accs[g].n) emit_point(e, em, ds, &o, &ds->groups[g], acc_value(f->agg, &bk->accs[g]), bk->b * f->window_ms);
        free(bk->accs);
        ds->buckets[i] = ds->buckets[--ds->nbuckets];
    }
    ds->closed_through = through;
}

size_t ts_derive_finish(ts_derive_ep *e, ts_derive_emit_fn emit, void *ud) {
    if (!e->owner) return 0;
    ts_derive *d = e->d;
    /* rates took their values as they came (each commits at its next sample);
     * ratios joined their groups when the second value of a pair came */
    emitter em;
    em.e = e;
    em.n = 0;
    em.points = 0;
    em.tslen = 0;
    for (int i = 0; i < d->ndefs; i++) {
        ddefst *ds = &e->defs[i];
        if (!ds->active) continue;
        if (ds->ratio_first > ds->ratio_paired) {
            uint32_t u = ds->ratio_first - ds->ratio_paired;
            d->st.ratio_unpaired += u;
            ts_counter_add(ts_dv_ctr.unpaired, u);
        }
        if (ds->def->window_ms > 0) { close_windows(e, &em, ds); continue; }
        int agg = ds->def->agg;
        outb *o = NULL;
        for (uint32_t k = 0; k < ds->ntouched; k++) {
            /* the scan pushed the groups out of the caches: fetch ahead (a
             * group 8 on, the tag text of one 4 on, whose group came by now) */
            if (k + 8 < ds->ntouched) __builtin_prefetch(&ds->groups[ds->touched[k + 8]]);
            if (k + 4 < ds->ntouched) __builtin_prefetch(ds->groups[ds->touched[k + 4]].kvs);
            const dgroup *g = &ds->groups[ds->touched[k]];
            const dacc *a = &g->acc;
            if (!a->n) continue;
            if (agg == AGG_RATIO) {
                if (a->y == 0) { d->st.undefined++; ts_counter_add(ts_dv_ctr.undef, 1); continue; }
                emit_point(e, &em, ds, &o, g, a->x / a->y, a->tmax);
            } else {
                emit_point(e, &em, ds, &o, g, acc_value(agg, a), a->tmax);
            }
        }
        ds->ntouched = 0;
    }
    for (int i = 0; i < em.n; i++) {
        e->last_bytes[i] = em.v[i].text->len;
        ts_batch_text_commit(em.v[i].b, em.v[i].lines);
        if (em.v[i].lines && emit) emit(ud, em.v[i].b);
        else ts_batch_free(em.v[i].b);
    }
    d->st.points += em.points;
    ts_counter_add(ts_dv_ctr.points, (int64_t)em.points);
    e->owner = NULL;
    return em.points;
}
