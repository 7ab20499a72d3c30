/* Derived metrics state (C core): the types every derive_* room shares (the
 * compiled definitions, an engine, an endpoint's groups and cells), the
 * string-keyed table they index by, the counters, and the engine's lifetime.
 * Internal to the derive_* sources; other modules include ts_derive.h. */
#ifndef TS_DERIVE_STATE_H
#define TS_DERIVE_STATE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ts_batch.h"     /* ts_dest */
#include "ts_counter.h"
#include "ts_point.h"

typedef struct ts_derive ts_derive;          /* one load's compiled definitions and their state */
typedef struct ts_derive_ep ts_derive_ep;    /* the state of one endpoint (cdn + endpoint name) */
typedef struct ts_derive_slots ts_derive_slots;

/* What happened so far, over every endpoint of the engine (also counters
 * derive_*). */
typedef struct ts_derive_stats {
    uint64_t samples;          /* samples that fed a definition */
    uint64_t points;           /* derived points emitted */
    uint64_t rate_first;       /* first sample of a series: no rate yet */
    uint64_t rate_resets;      /* counter went down: no rate, new base */
    uint64_t rate_gaps;        /* more than max_gap since the last sample: no rate, new base */
    uint64_t rate_repeats;     /* same time stamp as the last sample: ignored */
    uint64_t ratio_unpaired;   /* an entity had only one of the two stats in a poll */
    uint64_t undefined;        /* ratio over 0, or a NaN/Inf result: no point */
    uint64_t window_late;      /* sample for a window already written: dropped */
    uint64_t window_dups;      /* same series, same time stamp inside a window: ignored */
    uint64_t busy_skips;       /* a fetch ran while another owner's poll was open */
} ts_derive_stats;

void ts_derive_retain(ts_derive *d);
void ts_derive_release(ts_derive *d);
int ts_derive_count(const ts_derive *d);
void ts_derive_get_stats(const ts_derive *d, ts_derive_stats *s);
/* Bytes of heap the engine's state holds (every block as malloc sized it,
 * with its header; the compiled definitions' strings left out). */
size_t ts_derive_mem(const ts_derive *d);

/* The state of an endpoint, kept across Traffic Ops refreshes (same cdn and
 * name, same state: rates go on). NULL when no definition applies to it.
 * `dest` gives the db / rp / precision of definitions that name none. */
ts_derive_ep *ts_derive_endpoint(ts_derive *d, const char *cdn, const char *endpoint, const ts_dest *dest);

/* ---- internal to the derive_* rooms ---------------------------------------- */
#define TS_DERIVE_MAX_DESTS 16
enum { AGG_SUM, AGG_MIN, AGG_MAX, AGG_MEAN, AGG_COUNT, AGG_LAST, AGG_RATE, AGG_RATIO };

/* string-keyed table (open addressing; keys copied) */
typedef struct dslot { uint64_t h; char *key; size_t len; void *val; } dslot;
typedef struct dtab { dslot *s; size_t cap, n; } dtab;
void *ts_dtab_get(const dtab *t, const char *k, size_t n, int *found);
void ts_dtab_put(dtab *t, const char *k, size_t n, void *v);
void ts_dtab_free(dtab *t, void (*fv)(void *));
/* An index of ids by a key their owner stores (open addressing, 4 bytes a
 * slot: id + 1, 0 = empty); key(ud, id) gives an id's key back. For the
 * big ones (entities, groups): a dtab would hold a second copy of every key
 * and 32 bytes a slot. */
typedef const char *(*dix_key_fn)(const void *ud, uint32_t id, size_t *len);
typedef struct dix { uint32_t *s; uint32_t cap, n; } dix;
uint32_t ts_dix_find(const dix *x, const char *k, size_t n, dix_key_fn key, const void *ud);   /* id + 1, or 0 */
void ts_dix_add(dix *x, uint32_t id, const char *k, size_t n, dix_key_fn key, const void *ud);
void *ts_dv_realloc(void *p, size_t n);      /* abort on failure, as malloc's callers here */
char *ts_dv_strndup(const char *s, size_t n);

/* compiled definitions */
typedef struct dclause {
    char *key;
    int neg;
    char **kvs;          /* escaped "key=value" of each accepted value */
    int nvals;
} dclause;

typedef struct ddef {
    char *name, *meas_esc, *field_esc, *from, *over, *endpoint, *where_text;
    size_t meas_len, field_len;
    int agg;
    dclause *where;
    int nwhere;
    char **group_by;     /* raw keys, sorted */
    int ngroup;
    double scale;
    char *db, *rp;       /* NULL = the endpoint's */
    int64_t window_ms, max_gap_ms;
} ddef;

struct ts_derive {
    int refs;
    ddef *defs;
    int ndefs;
    dtab eps;
    ts_derive_stats st;
};

void ts_dv_def_free(ddef *f);

/* per-endpoint state. Sizes matter: the state of every series is read once
 * a poll, after the scan of a payload of megabytes has pushed it out of the
 * processor's caches, so each byte here costs both memory and time. */

/* A group's value over a poll or a window: x is the sum (sum, mean, rate, the
 * ratio's numerator), the min, the max or the last value as the definition's
 * aggregation says; y the ratio's denominator. The last value is the one of
 * the newest time stamp, which is tmax. */
typedef struct dacc {
    double x, y;
    int64_t tmax;
    uint64_t n;
} dacc;

typedef struct dgroup {
    char *kvs;           /* ",k=v,k2=v2" in key order (escaped) */
    uint32_t kvs_len;
    uint32_t stamp;      /* poll whose values acc holds (per-poll definitions) */
    dacc acc;
} dgroup;

typedef struct dbucket {
    int64_t b;           /* window index: start time = b * window_ms */
    dacc *accs;          /* by group index */
    uint32_t naccs;
} dbucket;

/* A series' cached verdict, indexed by entity id in its cell set: all that
 * a per-poll sum, min, max, mean, count or last needs. Rates, ratios and
 * windows extend it with their values (a cell set holds cells of one kind). */
typedef struct dcell {
    uint32_t ver;        /* entity version the verdict is for; 0 = never worked out */
    int32_t group;       /* -1: filtered out */
    uint32_t stamp;      /* poll of the last value taken (ratio: of the numerator) */
    uint32_t x;          /* ratio: poll of the denominator; rate, window: 1 once a sample was taken */
} dcell;

/* Rate: v, t are the value staged by poll h.stamp, committed as the base
 * (pv, pt) by the series' next sample when that poll finished; an aborted
 * poll's staged values are dropped (h.stamp = 0), so finishing a poll has
 * no series to visit. */
typedef struct dcell_rate { dcell h; double v, pv; int64_t t, pt; } dcell_rate;
typedef struct dcell_ratio { dcell h; double v[2]; int64_t t; } dcell_ratio;   /* this poll's pair, newest time */
typedef struct dcell_win { dcell h; double sum; int64_t pt, wb; uint32_t wn; } dcell_win;   /* sum of wn samples of window wb; pt the last */
enum { CK_PLAIN, CK_RATE, CK_RATIO, CK_WIN };

struct ddefst;
typedef struct dcellset {
    struct ddefst *ds;
    int kind;            /* CK_*: which cells */
    int agg;             /* the definition's */
    uint32_t csize;      /* bytes of a cell */
    ts_etag *tags;       /* a copy of the stat's tags (stable across plans) */
    uint32_t ntags;
    char *cells;         /* ncells cells of csize bytes */
    uint32_t ncells;
} dcellset;

static inline dcell *cell_at(const dcellset *cs, uint32_t id) { return (dcell *)(cs->cells + (size_t)id * cs->csize); }

typedef struct kvblock { struct kvblock *next; size_t used; char data[16384]; } kvblock;
char *ts_dv_kv_copy(kvblock **head, const char *s, size_t n);

typedef struct ddefst {
    const ddef *def;
    int active;
    ts_dest dest;
    dgroup *groups;
    uint32_t ngroups, capgroups;
    dix group_ix;        /* groups by kvs */
    uint32_t *touched;   /* groups fed this poll (per-poll definitions) */
    uint32_t ntouched, captouched;
    dbucket *buckets;    /* window: open windows */
    int nbuckets;
    int64_t closed_through;   /* window: last window index written */
    int64_t poll_tmin, poll_tmax;
    int has_t;
    dcellset **sets;
    int nsets;
    struct kvblock *kv;  /* the groups' tag strings, side by side (read in order at the end of a poll) */
    uint32_t ratio_first, ratio_paired;   /* ratio: series whose first / second value of the pair came this poll */
} ddefst;

/* What a sample does to one cell set, worked out when the stat is bound:
 * the per-sample path switches once on it, and each case adds with its
 * aggregation known (no second dispatch on the definition's agg). */
enum { DB_SUM, DB_MIN, DB_MAX, DB_PLAIN, DB_RATE, DB_RATIO, DB_WIN };
typedef struct dbind { dcellset *set; uint32_t op, code; } dbind;
struct ts_derive_slots {
    uint32_t n;
    dbind b[];
};

struct ts_derive_ep {
    ts_derive *d;
    ts_dest dest;
    ddefst *defs;
    dix ents;            /* entity ids by name */
    uint32_t nents;
    uint32_t *ent_ver;   /* by id (read by every sample; the names apart) */
    char **ent_name;     /* by id, in ent_kv */
    uint32_t *ent_len;   /* by id: the names' lengths (a name may hold a NUL) */
    struct kvblock *ent_kv;
    dtab stats;          /* stat content -> slots (NULL = none) */
    dtab sets;           /* def index + stat tags -> cell set */
    uint32_t stamp;
    const void *owner;   /* the fetch whose poll is open, or NULL */
    size_t last_bytes[TS_DERIVE_MAX_DESTS];   /* text of the last poll, per destination in order */
    char label[200];
};

typedef struct ts_dv_counters {
    ts_counter *samples, *points, *resets, *gaps, *repeats, *unpaired, *undef, *late, *dups, *busy;
} ts_dv_counters;
extern ts_dv_counters ts_dv_ctr;
void ts_dv_counters_init(void);

/* accumulators, shared by the per-sample path and the end of a poll */
static inline void acc_reset(dacc *a) { memset(a, 0, sizeof *a); }

static inline void acc_add(dacc *a, int agg, double v, int64_t t) {
    if (a->n == 0) {
        a->x = agg == AGG_MIN || agg == AGG_MAX || agg == AGG_LAST ? v : 0.0 + v;   /* a sum starts at +0 */
        a->tmax = t;
    } else {
        switch (agg) {
        case AGG_MIN: if (v < a->x) a->x = v; break;
        case AGG_MAX: if (v > a->x) a->x = v; break;
        case AGG_LAST: if (t >= a->tmax) a->x = v; break;
        case AGG_COUNT: break;
        default: a->x += v; break;
        }
        if (t > a->tmax) a->tmax = t;
    }
    a->n++;
}

static inline double acc_value(int agg, const dacc *a) {
    switch (agg) {
    case AGG_MEAN: return a->x / (double)a->n;
    case AGG_COUNT: return (double)a->n;
    default: return a->x;   /* min, max, last; sum; rate: the sum of the series' rates */
    }
}

/* The poll's accumulator of group g (per-poll definitions). */
static inline dacc *poll_acc(ts_derive_ep *e, ddefst *ds, int32_t g) {
    dgroup *gr = &ds->groups[g];
    if (gr->stamp != e->stamp) {
        gr->stamp = e->stamp;
        acc_reset(&gr->acc);
        if (ds->ntouched == ds->captouched) {
            ds->captouched = ds->captouched ? ds->captouched * 2 : 16;
            ds->touched = ts_dv_realloc(ds->touched, sizeof(uint32_t) * ds->captouched);
        }
        ds->touched[ds->ntouched++] = (uint32_t)g;
    }
    return &gr->acc;
}

static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

#endif
