/* Derived metrics engine (C side of the C/Lua line). Lua (lua/metrics.lua)
 * checks and compiles the definitions once per load; here they are bound to
 * the mapping caches' answers (per stat: a list of slots, per entity: an id)
 * and evaluated per sample with plain arithmetic. Everything a sample needs
 * (filter verdict, group) is worked out once per (definition, stat, entity)
 * and cached in a cell indexed by the entity's id, so the per-sample cost is
 * an array index and a few additions. */
#include "ts_derive.h"
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ts_config.h"
#include "ts_counter.h"
#include "ts_log.h"
#include "ts_lp.h"
#include "ts_lua.h"

#define TS_DERIVE_MAX_DESTS 16
enum { AGG_SUM, AGG_MIN, AGG_MAX, AGG_MEAN, AGG_COUNT, AGG_LAST, AGG_RATE, AGG_RATIO };
static const char *const AGG_NAMES[] = {"sum", "min", "max", "mean", "count", "last", "rate", "ratio", NULL};

/* ---- string-keyed table (open addressing; keys copied) ------------------ */
typedef struct dslot { uint64_t h; char *key; size_t len; void *val; } dslot;
typedef struct dtab { dslot *s; size_t cap, n; } dtab;

static uint64_t dhash(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static dslot *dtab_find(const dtab *t, uint64_t h, const char *k, size_t n) {
    if (!t->cap) return NULL;
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        dslot *s = &t->s[i];
        if (!s->key) return NULL;
        if (s->h == h && s->len == n && memcmp(s->key, k, n) == 0) return s;
    }
}

static void *dtab_get(const dtab *t, const char *k, size_t n, int *found) {
    dslot *s = dtab_find(t, dhash(k, n), k, n);
    if (found) *found = s != NULL;
    return s ? s->val : NULL;
}

static void dtab_put(dtab *t, const char *k, size_t n, void *v) {
    uint64_t h = dhash(k, n);
    dslot *old = dtab_find(t, h, k, n);
    if (old) { old->val = v; return; }
    if ((t->n + 1) * 4 >= t->cap * 3) {
        size_t nc = t->cap ? t->cap * 2 : 32;
        dslot *ns = calloc(nc, sizeof *ns);
        if (!ns) abort();
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->s[i].key) continue;
            size_t j = t->s[i].h & (nc - 1);
            while (ns[j].key) j = (j + 1) & (nc - 1);
            ns[j] = t->s[i];
        }
        free(t->s);
        t->s = ns;
        t->cap = nc;
    }
    size_t i = h & (t->cap - 1);
    while (t->s[i].key) i = (i + 1) & (t->cap - 1);
    char *kc = malloc(n + 1);
    if (!kc) abort();
    memcpy(kc, k, n);
    kc[n] = 0;
    t->s[i] = (dslot){h, kc, n, v};
    t->n++;
}

static void dtab_free(dtab *t, void (*fv)(void *)) {
    for (size_t i = 0; i < t->cap; i++)
        if (t->s[i].key) { if (fv && t->s[i].val) fv(t->s[i].val); free(t->s[i].key); }
    free(t->s);
    memset(t, 0, sizeof *t);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

static char *xstrndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) abort();
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- compiled definitions ------------------------------------------------ */
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

/* ---- per-endpoint state ---------------------------------------------------- */
typedef struct dacc {
    double sum, sum2, min, max, last;
    int64_t last_t, tmax;
    uint64_t n;
} dacc;

typedef struct dgroup {
    char *kvs;           /* ",k=v,k2=v2" in key order (escaped) */
    size_t kvs_len;
    uint32_t stamp;      /* poll whose values acc holds (per-poll definitions) */
    dacc acc;
} dgroup;

typedef struct dbucket {
    int64_t b;           /* window index: start time = b * window_ms */
    dacc *accs;          /* by group index */
    uint32_t naccs;
} dbucket;

/* A series' cached verdict and values, indexed by entity id in its cell set. */
typedef struct dcell {
    uint32_t ver;        /* entity version the verdict is for; 0 = never worked out */
    int32_t group;       /* -1: filtered out */
    uint32_t stamp[2];   /* poll of v[0] / v[1] */
    double v[2];         /* this poll's value (ratio: numerator, denominator) */
    int64_t t;           /* this poll's newest sample time */
    double pv;           /* rate: committed previous value; window: sum of the window */
    int64_t pt;          /* rate: its time; window: time of the last sample taken */
    int64_t wb;          /* window index of the sum */
    uint32_t wn;         /* window: samples in the sum */
    uint8_t has_prev;
} dcell;

struct ddefst;
typedef struct dcellset {
    struct ddefst *ds;
    ts_etag *tags;       /* a copy of the stat's tags (stable across plans) */
    uint32_t ntags;
    dcell *cells;
    uint32_t ncells;
} dcellset;

typedef struct kvblock { struct kvblock *next; size_t used; char data[16384]; } kvblock;

static char *kv_copy(kvblock **head, const char *s, size_t n) {
    if (n + 1 > sizeof((*head)->data)) return xstrndup(s, n);   /* never in practice: tags are short */
    if (!*head || sizeof((*head)->data) - (*head)->used < n + 1) {
        kvblock *b = malloc(sizeof *b);
        if (!b) abort();
        b->next = *head;
        b->used = 0;
        *head = b;
    }
    char *p = (*head)->data + (*head)->used;
    memcpy(p, s, n);
    p[n] = 0;
    (*head)->used += n + 1;
    return p;
}

typedef struct ddefst {
    const ddef *def;
    int active;
    ts_dest dest;
    dgroup *groups;
    uint32_t ngroups, capgroups;
    dtab group_ix;
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
} ddefst;

typedef struct dbind { dcellset *set; uint32_t op; } dbind;
struct ts_derive_slots {
    uint32_t n;
    dbind b[];
};

typedef struct dtouch { dcellset *set; uint32_t id; } dtouch;

struct ts_derive_ep {
    ts_derive *d;
    ts_dest dest;
    ddefst *defs;
    dtab ents;           /* name -> id (as a pointer-sized integer) */
    uint32_t nents;
    uint32_t *ent_ver;   /* by id */
    dtab stats;          /* stat content -> slots (NULL = none) */
    dtab sets;           /* def index + stat tags -> cell set */
    uint32_t stamp;
    const void *owner;   /* the fetch whose poll is open, or NULL */
    dtouch *touch;
    size_t ntouch, captouch;
    size_t last_bytes[TS_DERIVE_MAX_DESTS];   /* text of the last poll, per destination in order */
    char label[200];
};

static ts_counter *c_samples, *c_points, *c_resets, *c_gaps, *c_repeats, *c_unpaired, *c_undef, *c_late, *c_dups, *c_busy;

static void counters_init(void) {
    if (c_samples) return;
    c_samples = ts_counter_get("derive_samples");
    c_points = ts_counter_get("derive_points");
    c_resets = ts_counter_get("derive_rate_resets");
    c_gaps = ts_counter_get("derive_rate_gaps");
    c_repeats = ts_counter_get("derive_rate_repeats");
    c_unpaired = ts_counter_get("derive_ratio_unpaired");
    c_undef = ts_counter_get("derive_undefined");
    c_late = ts_counter_get("derive_window_late");
    c_dups = ts_counter_get("derive_window_dups");
    c_busy = ts_counter_get("derive_busy_skips");
}

/* ---- reading the compiled list -------------------------------------------- */
static char *get_str(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    char *r = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        r = xstrndup(s, n);
    }
    lua_pop(L, 1);
    return r;
}

static char *escape_dup(void (*esc)(ts_buf *, const char *, size_t), const char *s, size_t *len) {
    ts_buf b;
    ts_buf_init(&b);
    esc(&b, s, strlen(s));
    char *r = xstrndup(b.data ? b.data : "", b.len);
    *len = b.len;
    ts_buf_free(&b);
    return r;
}

static char *tag_kv(const char *k, const char *v, size_t *len) {
    ts_buf b;
    ts_buf_init(&b);
    ts_lp_escape_tag(&b, k, strlen(k));
    ts_buf_addc(&b, '=');
    ts_lp_escape_tag(&b, v, strlen(v));
    char *r = xstrndup(b.data, b.len);
    if (len) *len = b.len;
    ts_buf_free(&b);
    return r;
}

static void def_free(ddef *f) {
    free(f->name); free(f->meas_esc); free(f->field_esc); free(f->from); free(f->over);
    free(f->endpoint); free(f->where_text); free(f->db); free(f->rp);
    for (int i = 0; i < f->nwhere; i++) {
        for (int j = 0; j < f->where[i].nvals; j++) free(f->where[i].kvs[j]);
        free(f->where[i].kvs);
        free(f->where[i].key);
    }
    free(f->where);
    for (int i = 0; i < f->ngroup; i++) free(f->group_by[i]);
    free(f->group_by);
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int read_def(lua_State *L, int t, ddef *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->name = get_str(L, t, "name");
    f->from = get_str(L, t, "from");
    f->over = get_str(L, t, "over");
    f->endpoint = get_str(L, t, "endpoint");
    f->where_text = get_str(L, t, "where_text");
    f->db = get_str(L, t, "db");
    f->rp = get_str(L, t, "rp");
    char *field = get_str(L, t, "field");
    char *agg = get_str(L, t, "agg");
    f->agg = -1;
    for (int i = 0; agg && AGG_NAMES[i]; i++) if (strcmp(agg, AGG_NAMES[i]) == 0) f->agg = i;
    free(agg);
    const char *why = !f->name || !f->name[0] ? "no name" : !f->from ? "no from" : f->agg < 0 ? "unknown agg"
                    : f->agg == AGG_RATIO && !f->over ? "ratio without over" : NULL;
    if (why) {
        snprintf(err, errlen, "compiled definition %s: %s", f->name ? f->name : "?", why);
        free(field);
        return -1;
    }
    f->meas_esc = escape_dup(ts_lp_escape_measurement, f->name, &f->meas_len);
    f->field_esc = escape_dup(ts_lp_escape_field_key, field ? field : "value", &f->field_len);
    free(field);
    lua_getfield(L, t, "scale");
    f->scale = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1.0;
    if (!isfinite(f->scale)) f->scale = 1.0;
    lua_pop(L, 1);
    lua_getfield(L, t, "window_ms");
    f->window_ms = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    lua_getfield(L, t, "max_gap_ms");
    f->max_gap_ms = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 300000;
    lua_pop(L, 1);
    if (f->window_ms < 0 || f->max_gap_ms <= 0) { snprintf(err, errlen, "%s: bad window/max_gap", f->name); return -1; }
    lua_getfield(L, t, "where");
    if (lua_istable(L, -1)) {
        int w = lua_gettop(L);
        int n = (int)luaL_len(L, w);
        f->where = calloc((size_t)(n ? n : 1), sizeof *f->where);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, w, i);
            int c = lua_gettop(L);
            dclause *cl = &f->where[f->nwhere];
            cl->key = get_str(L, c, "key");
            lua_getfield(L, c, "neg");
            cl->neg = lua_toboolean(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, c, "values");
            int nv = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
            cl->kvs = calloc((size_t)(nv ? nv : 1), sizeof(char *));
            for (int j = 1; j <= nv; j++) {
                lua_rawgeti(L, -1, j);
                if (cl->key && lua_type(L, -1) == LUA_TSTRING) cl->kvs[cl->nvals++] = tag_kv(cl->key, lua_tostring(L, -1), NULL);
                lua_pop(L, 1);
            }
            lua_pop(L, 2);
            if (cl->key) f->nwhere++;
            else { free(cl->kvs); memset(cl, 0, sizeof *cl); }
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "group_by");
    if (lua_istable(L, -1)) {
        int n = (int)luaL_len(L, -1);
        f->group_by = calloc((size_t)(n ? n : 1), sizeof(char *));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) == LUA_TSTRING) f->group_by[f->ngroup++] = xstrndup(lua_tostring(L, -1), lua_rawlen(L, -1));
            lua_pop(L, 1);
        }
        qsort(f->group_by, (size_t)f->ngroup, sizeof(char *), str_cmp);
    }
    lua_pop(L, 1);
    return 0;
}

ts_derive *ts_derive_new(lua_State *L, int idx, char *err, size_t errlen) {
    counters_init();
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) { snprintf(err, errlen, "compiled metrics: not a table"); return NULL; }
    int n = (int)luaL_len(L, idx);
    ts_derive *d = calloc(1, sizeof *d);
    if (!d) abort();
    d->refs = 1;
    d->defs = calloc((size_t)(n ? n : 1), sizeof *d->defs);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int rc = lua_istable(L, -1) ? read_def(L, lua_gettop(L), &d->defs[d->ndefs], err, errlen) : -1;
        lua_pop(L, 1);
        if (rc != 0) {
            if (!lua_istable(L, idx)) snprintf(err, errlen, "compiled metrics: item %d is not a table", i);
            def_free(&d->defs[d->ndefs]);
            d->refs = 0;
            ts_derive_release(d);
            return NULL;
        }
        d->ndefs++;
    }
    return d;
}

int ts_derive_load(lua_State *L, const char *cfg_path, ts_derive **out) {
    *out = NULL;
    if (ts_lua_require(L, "metrics") != 0) return -1;
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "config");
    lua_remove(L, -2);
    if (cfg_path) lua_pushstring(L, cfg_path); else lua_pushnil(L);
    if (ts_lua_pcall(L, 2, 4, "metrics.load", 0) != 0) return -1;
    /* compiled, problems text, errors, warnings */
    int nerr = (int)lua_tointeger(L, -2);
    const char *text = lua_tostring(L, -3);
    if (text && *text) {
        const char *p = text;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            if (memmem(p, (size_t)len, ": error: ", 9)) ts_error("metrics: %.*s", len, p);
            else ts_warn("metrics: %.*s", len, p);
            p += len + (nl ? 1 : 0);
        }
    }
    int rc = 0;
    if (nerr > 0 || !lua_istable(L, -4)) {
        ts_error("metrics: %d error(s) in the definitions: none loaded", nerr);
        rc = -1;
    } else if (luaL_len(L, -4) > 0) {
        char err[256];
        *out = ts_derive_new(L, -4, err, sizeof err);
        if (!*out) { ts_error("metrics: %s", err); rc = -1; }
        else ts_info("metrics: %d derived metric definition(s) loaded", (*out)->ndefs);
    }
    lua_pop(L, 4);
    return rc;
}

int ts_derive_check(lua_State *L, const char *cfg_path, FILE *out) {
    const ts_settings *st = ts_config_settings(L);
    if (st) ts_lua_set_script_dir(L, st->script_dir);   /* modules as the daemon finds them */
    if (ts_lua_require(L, "metrics") != 0) return 2;
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "config");
    lua_remove(L, -2);
    if (cfg_path) lua_pushstring(L, cfg_path); else lua_pushnil(L);
    if (ts_lua_pcall(L, 2, 4, "metrics.load", 0) != 0) return 2;
    int nerr = (int)lua_tointeger(L, -2), nwarn = (int)lua_tointeger(L, -1);
    int ndef = lua_istable(L, -4) ? (int)luaL_len(L, -4) : 0;
    const char *text = lua_tostring(L, -3);
    fprintf(out, "# metrics: %d derived definition(s), %d error(s), %d warning(s)\n", ndef, nerr, nwarn);
    if (text && *text) fprintf(out, "%s\n", text);
    if (nerr == 0 && ndef > 0) {
        /* what C reads must load as well */
        char err[256];
        ts_derive *d = ts_derive_new(L, -4, err, sizeof err);
        if (!d) { fprintf(out, "metrics: %s\n", err); nerr = 1; }
        ts_derive_release(d);
    }
    lua_pop(L, 4);
    return nerr ? 2 : 0;
}

void ts_derive_retain(ts_derive *d) { if (d) d->refs++; }
int ts_derive_count(const ts_derive *d) { return d ? d->ndefs : 0; }

static void slots_free(void *p) { free(p); }

static void ep_free(void *p) {
    ts_derive_ep *e = p;
    for (int i = 0; i < e->d->ndefs; i++) {
        ddefst *ds = &e->defs[i];
        for (uint32_t g = 0; g < ds->ngroups; g++)
            if (ds->groups[g].kvs_len + 1 > sizeof(ds->kv->data)) free(ds->groups[g].kvs);
        while (ds->kv) { kvblock *n = ds->kv->next; free(ds->kv); ds->kv = n; }
        free(ds->groups);
        dtab_free(&ds->group_ix, NULL);
        free(ds->touched);
        for (int b = 0; b < ds->nbuckets; b++) free(ds->buckets[b].accs);
        free(ds->buckets);
        for (int s = 0; s < ds->nsets; s++) {
            dcellset *cs = ds->sets[s];
            for (uint32_t k = 0; k < cs->ntags; k++) { free((char *)cs->tags[k].key); free((char *)cs->tags[k].kv); }
            free(cs->tags);
            free(cs->cells);
            free(cs);
        }
        free(ds->sets);
    }
    free(e->defs);
    dtab_free(&e->ents, NULL);
    free(e->ent_ver);
    dtab_free(&e->stats, slots_free);
    dtab_free(&e->sets, NULL);
    free(e->touch);
    free(e);
}

void ts_derive_release(ts_derive *d) {
    if (!d || --d->refs > 0) return;
    dtab_free(&d->eps, ep_free);
    for (int i = 0; i < d->ndefs; i++) def_free(&d->defs[i]);
    free(d->defs);
    free(d);
}

void ts_derive_get_stats(const ts_derive *d, ts_derive_stats *s) {
    if (d) *s = d->st;
    else memset(s, 0, sizeof *s);
}

ts_derive_ep *ts_derive_endpoint(ts_derive *d, const char *cdn, const char *endpoint, const ts_dest *dest) {
    if (!d || !d->ndefs) return NULL;
    int active = 0;
    for (int i = 0; i < d->ndefs; i++)
        if (!d->defs[i].endpoint || strcmp(d->defs[i].endpoint, endpoint) == 0) active++;
    if (!active) return NULL;
    char key[512];
    int kl = snprintf(key, sizeof key, "%s%c%s", cdn, 0, endpoint);
    if (kl >= (int)sizeof key) kl = (int)sizeof key - 1;
    ts_derive_ep *e = dtab_get(&d->eps, key, (size_t)kl, NULL);
    if (e) { e->dest = *dest; return e; }
    e = calloc(1, sizeof *e);
    if (!e) abort();
    e->d = d;
    e->dest = *dest;
    snprintf(e->label, sizeof e->label, "%s %s", cdn, endpoint);
    e->defs = calloc((size_t)d->ndefs, sizeof *e->defs);
    for (int i = 0; i < d->ndefs; i++) {
        ddefst *ds = &e->defs[i];
        const ddef *f = &d->defs[i];
        ds->def = f;
        ds->active = !f->endpoint || strcmp(f->endpoint, endpoint) == 0;
        ds->dest = *dest;
        if (f->db) snprintf(ds->dest.db, sizeof ds->dest.db, "%s", f->db);
        if (f->rp) snprintf(ds->dest.rp, sizeof ds->dest.rp, "%s", f->rp);
        ds->closed_through = INT64_MIN;
    }
    e->ent_ver = calloc(1, sizeof(uint32_t));
    dtab_put(&d->eps, key, (size_t)kl, e);
    return e;
}

/* ---- binding ------------------------------------------------------------- */
static dcellset *cellset_get(ts_derive_ep *e, int di, const ts_tagset *tags) {
    ts_buf k;
    ts_buf_init(&k);
    ts_buf_printf(&k, "%d", di);
    for (uint32_t i = 0; i < tags->n; i++) { ts_buf_addc(&k, 0); ts_buf_add(&k, tags->tags[i].kv, tags->tags[i].kv_len); }
    dcellset *cs = dtab_get(&e->sets, k.data, k.len, NULL);
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs) abort();
        ddefst *ds = &e->defs[di];
        cs->ds = ds;
        cs->ntags = tags->n;
        cs->tags = calloc(tags->n ? tags->n : 1, sizeof(ts_etag));
        for (uint32_t i = 0; i < tags->n; i++) {
            cs->tags[i].key = xstrndup(tags->tags[i].key, strlen(tags->tags[i].key));
            cs->tags[i].kv = xstrndup(tags->tags[i].kv, tags->tags[i].kv_len);
            cs->tags[i].kv_len = tags->tags[i].kv_len;
        }
        ds->sets = xrealloc(ds->sets, sizeof(dcellset *) * (size_t)(ds->nsets + 1));
        ds->sets[ds->nsets++] = cs;
        dtab_put(&e->sets, k.data, k.len, cs);
    }
    ts_buf_free(&k);
    return cs;
}

const ts_derive_slots *ts_derive_bind_stat(ts_derive_ep *e, const char *meas, size_t len, const ts_tagset *tags) {
    if (!e) return NULL;
    ts_buf k;
    ts_buf_init(&k);
    ts_buf_add(&k, meas, len);
    for (uint32_t i = 0; i < tags->n; i++) { ts_buf_addc(&k, 0); ts_buf_add(&k, tags->tags[i].kv, tags->tags[i].kv_len); }
    int found;
    ts_derive_slots *sl = dtab_get(&e->stats, k.data, k.len, &found);
    if (!found) {
        dbind tmp[64];
        uint32_t n = 0;
        for (int i = 0; i < e->d->ndefs && n < 64; i++) {
            const ddef *f = &e->d->defs[i];
            if (!e->defs[i].active) continue;
            for (uint32_t op = 0; op < 2; op++) {
                const char *want = op == 0 ? f->from : f->over;
                if (want && strlen(want) == len && memcmp(want, meas, len) == 0 && n < 64)
                    tmp[n++] = (dbind){cellset_get(e, i, tags), op};
            }
        }
        if (n) {
            sl = malloc(sizeof *sl + n * sizeof(dbind));
            if (!sl) abort();
            sl->n = n;
            memcpy(sl->b, tmp, n * sizeof(dbind));
        }
        dtab_put(&e->stats, k.data, k.len, sl);
    }
    ts_buf_free(&k);
    return sl;
}

uint32_t ts_derive_bind_entity(ts_derive_ep *e, const char *name, size_t len) {
    if (!e) return 0;
    uintptr_t id = (uintptr_t)dtab_get(&e->ents, name, len, NULL);
    if (!id) {
        id = ++e->nents;
        e->ent_ver = xrealloc(e->ent_ver, sizeof(uint32_t) * (id + 1));
        e->ent_ver[id] = 0;
        dtab_put(&e->ents, name, len, (void *)id);
    }
    /* a new plan's answer may carry other tags: cells work their verdict out again */
    if (++e->ent_ver[id] == 0) e->ent_ver[id] = 1;
    return (uint32_t)id;
}

/* ---- per-sample path ------------------------------------------------------ */
static const char *find_kv(const dcellset *cs, const ts_entity_map *ent, const char *key, uint32_t *len) {
    for (uint32_t i = 0; i < cs->ntags; i++)
        if (strcmp(cs->tags[i].key, key) == 0) { *len = cs->tags[i].kv_len; return cs->tags[i].kv; }
    for (uint32_t i = 0; i < ent->tags.n; i++)
        if (strcmp(ent->tags.tags[i].key, key) == 0) { *len = ent->tags.tags[i].kv_len; return ent->tags.tags[i].kv; }
    return NULL;
}

/* Filter verdict and group of one series, once per (cell set, entity version). */
static void classify(ts_derive_ep *e, dcellset *cs, dcell *c, const ts_entity_map *ent, uint32_t id) {
    ddefst *ds = cs->ds;
    const ddef *f = ds->def;
    c->ver = e->ent_ver[id];
    c->group = -1;
    for (int i = 0; i < f->nwhere; i++) {
        const dclause *cl = &f->where[i];
        uint32_t kl = 0;
        const char *kv = find_kv(cs, ent, cl->key, &kl);
        int match = 0;
        for (int j = 0; kv && j < cl->nvals && !match; j++) match = strlen(cl->kvs[j]) == kl && memcmp(cl->kvs[j], kv, kl) == 0;
        if (match == cl->neg) return;
    }
    ts_buf g;
    ts_buf_init(&g);
    ts_buf_adds(&g, "");
    for (int i = 0; i < f->ngroup; i++) {
        uint32_t kl = 0;
        const char *kv = find_kv(cs, ent, f->group_by[i], &kl);
        if (kv) { ts_buf_addc(&g, ','); ts_buf_add(&g, kv, kl); }
    }
    int found;
    uintptr_t gi = (uintptr_t)dtab_get(&ds->group_ix, g.data ? g.data : "", g.len, &found);
    if (!found) {
        if (ds->ngroups == ds->capgroups) {
            ds->capgroups = ds->capgroups ? ds->capgroups * 2 : 16;
            ds->groups = xrealloc(ds->groups, sizeof(dgroup) * ds->capgroups);
        }
        gi = ds->ngroups++;
        dgroup *gr = &ds->groups[gi];
        memset(gr, 0, sizeof *gr);
        gr->kvs = kv_copy(&ds->kv, g.data ? g.data : "", g.len);
        gr->kvs_len = g.len;
        dtab_put(&ds->group_ix, g.data ? g.data : "", g.len, (void *)gi);
    }
    c->group = (int32_t)gi;
    ts_buf_free(&g);
}

static void acc_reset(dacc *a) { memset(a, 0, sizeof *a); }

static inline void acc_add(dacc *a, double v, int64_t t) {
    if (a->n == 0) { a->min = a->max = v; a->last = v; a->last_t = t; a->tmax = t; }
    else {
        if (v < a->min) a->min = v;
        if (v > a->max) a->max = v;
        if (t >= a->last_t) { a->last = v; a->last_t = t; }
        if (t > a->tmax) a->tmax = t;
    }
    a->sum += v;
    a->n++;
}

/* The poll's accumulator of group g (per-poll definitions). */
static inline dacc *poll_acc(ts_derive_ep *e, ddefst *ds, int32_t g) {
    dgroup *gr = &ds->groups[g];
    if (gr->stamp != e->stamp) {
        gr->stamp = e->stamp;
        acc_reset(&gr->acc);
        if (ds->ntouched == ds->captouched) {
            ds->captouched = ds->captouched ? ds->captouched * 2 : 16;
            ds->touched = xrealloc(ds->touched, sizeof(uint32_t) * ds->captouched);
        }
        ds->touched[ds->ntouched++] = (uint32_t)g;
    }
    return &gr->acc;
}

static void touch(ts_derive_ep *e, dcellset *cs, uint32_t id) {
    if (e->ntouch == e->captouch) {
        e->captouch = e->captouch ? e->captouch * 2 : 256;
        e->touch = xrealloc(e->touch, sizeof(dtouch) * e->captouch);
    }
    e->touch[e->ntouch++] = (dtouch){cs, id};
}

static dbucket *bucket_get(ddefst *ds, int64_t b) {
    for (int i = 0; i < ds->nbuckets; i++) if (ds->buckets[i].b == b) return &ds->buckets[i];
    ds->buckets = xrealloc(ds->buckets, sizeof(dbucket) * (size_t)(ds->nbuckets + 1));
    dbucket *bk = &ds->buckets[ds->nbuckets++];
    memset(bk, 0, sizeof *bk);
    bk->b = b;
    return bk;
}

/* A series' window mean joins its group's window. */
static void window_fold(ddefst *ds, dcell *c) {
    if (c->wn == 0 || c->group < 0) { c->wn = 0; return; }
    dbucket *bk = bucket_get(ds, c->wb);
    if ((uint32_t)c->group >= bk->naccs) {
        uint32_t n = ds->ngroups > (uint32_t)c->group ? ds->ngroups : (uint32_t)c->group + 1;
        bk->accs = xrealloc(bk->accs, sizeof(dacc) * n);
        memset(bk->accs + bk->naccs, 0, sizeof(dacc) * (n - bk->naccs));
        bk->naccs = n;
    }
    acc_add(&bk->accs[c->group], c->pv / c->wn, c->pt);
    c->wn = 0;
    c->pv = 0;
}

static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static void sample_window(ts_derive_ep *e, ddefst *ds, dcell *c, double v, int64_t t) {
    ts_derive *d = e->d;
    if (c->has_prev && t == c->pt) { d->st.window_dups++; ts_counter_add(c_dups, 1); return; }
    int64_t b = floor_div(t, ds->def->window_ms);
    if (b <= ds->closed_through) { d->st.window_late++; ts_counter_add(c_late, 1); return; }
    if (c->wn && c->wb != b) window_fold(ds, c);
    c->wb = b;
    c->pv += v;
    c->wn++;
    c->pt = t;
    c->has_prev = 1;
    if (!ds->has_t || t < ds->poll_tmin) ds->poll_tmin = t;
    if (!ds->has_t || t > ds->poll_tmax) ds->poll_tmax = t;
    ds->has_t = 1;
}

static void sample_rate(ts_derive_ep *e, ddefst *ds, dcellset *cs, dcell *c, uint32_t id, double v, int64_t t) {
    ts_derive *d = e->d;
    if (!c->has_prev) {
        d->st.rate_first++;
    } else {
        int64_t dt = t - c->pt;
        if (dt <= 0) { d->st.rate_repeats++; ts_counter_add(c_repeats, 1); return; }
        if (dt > ds->def->max_gap_ms) { d->st.rate_gaps++; ts_counter_add(c_gaps, 1); }
        else if (v < c->pv) { d->st.rate_resets++; ts_counter_add(c_resets, 1); }
        else acc_add(poll_acc(e, ds, c->group), (v - c->pv) * 1000.0 / (double)dt, t);
    }
    c->v[0] = v;
    c->t = t;
    touch(e, cs, id);
}

void ts_derive_sample(ts_derive_ep *e, const ts_cpoint *p) {
    const ts_derive_slots *sl = p->stat->derive;
    uint32_t id = p->ent->derive_id;
    if (!e->owner || !id) return;
    double v = p->value * p->stat->scale;
    int64_t t = p->time_ms;
    for (uint32_t i = 0; i < sl->n; i++) {
        dcellset *cs = sl->b[i].set;
        uint32_t op = sl->b[i].op;
        if (id >= cs->ncells) {
            uint32_t n = cs->ncells ? cs->ncells : 64;
            while (n <= id) n *= 2;
            cs->cells = xrealloc(cs->cells, sizeof(dcell) * n);
            memset(cs->cells + cs->ncells, 0, sizeof(dcell) * (n - cs->ncells));
            cs->ncells = n;
        }
        dcell *c = &cs->cells[id];
        if (c->ver != e->ent_ver[id]) classify(e, cs, c, p->ent, id);
        /* one value per series per poll: history entries after the newest are older */
        if (c->group < 0 || c->stamp[op] == e->stamp) continue;
        c->stamp[op] = e->stamp;
        e->d->st.samples++;
        ddefst *ds = cs->ds;
        switch (ds->def->agg) {
        case AGG_RATE:
            sample_rate(e, ds, cs, c, id, v, t);
            break;
        case AGG_RATIO:
            c->v[op] = v;
            if (c->stamp[op ^ 1] != e->stamp) { c->t = t; touch(e, cs, id); }
            else if (t > c->t) c->t = t;
            break;
        default:
            if (ds->def->window_ms > 0) sample_window(e, ds, c, v, t);
            else acc_add(poll_acc(e, ds, c->group), v, t);
            break;
        }
    }
    ts_counter_add(c_samples, 1);
}

/* ---- poll boundaries ------------------------------------------------------- */
int ts_derive_begin(ts_derive_ep *e, const void *owner) {
    if (e->owner && e->owner != owner) {
        e->d->st.busy_skips++;
        ts_counter_add(c_busy, 1);
        return -1;
    }
    e->owner = owner;
    if (++e->stamp == 0) e->stamp = 1;   /* 0 marks "never" in cells and groups */
    e->ntouch = 0;
    for (int i = 0; i < e->d->ndefs; i++) {
        e->defs[i].ntouched = 0;
        e->defs[i].has_t = 0;
    }
    return 0;
}

void ts_derive_abort(ts_derive_ep *e) {
    e->owner = NULL;
    e->ntouch = 0;
}

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

/* Digits of q, least significant first, into dig; returns their count. */
static size_t rev_digits(char *dig, uint64_t q) {
    size_t nd = 0;
    while (q >= 100) {
        unsigned r = (unsigned)(q % 100);
        q /= 100;
        dig[nd++] = DIG2[2 * r + 1];
        dig[nd++] = DIG2[2 * r];
    }
    if (q >= 10) { dig[nd++] = DIG2[2 * q + 1]; dig[nd++] = DIG2[2 * q]; }
    else dig[nd++] = (char)('0' + q);
    return nd;
}

static size_t put_decimal(char *out, uint64_t q, int frac, int neg) {
    while (frac > 0 && q % 10 == 0) { q /= 10; frac--; }
    char dig[24];
    size_t nd = rev_digits(dig, q);
    size_t n = 0;
    if (neg) out[n++] = '-';
    if ((int)nd <= frac) {
        out[n++] = '0';
        out[n++] = '.';
        for (int z = (int)nd; z < frac; z++) out[n++] = '0';
        while (nd) out[n++] = dig[--nd];
    } else {
        int ip = (int)nd - frac;
        for (int i = 0; i < ip; i++) out[n++] = dig[--nd];
        if (frac) out[n++] = '.';
        while (nd) out[n++] = dig[--nd];
    }
    out[n] = 0;
    return n;
}

/* 10^-8 .. 10^16, for the decimal exponent of a value in range */
static const double P10N[25] = {1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4,
                                1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16};

size_t ts_derive_fmt_double(char out[40], double v) {
    double a = fabs(v);
    if (!(a >= 1e-6 && a < 9e15) || v == nearbyint(v)) return ts_fmt_double(out, v);
    int ex;
    double fr = frexp(a, &ex);     /* a = fr * 2^ex, fr in [0.5, 1) */
    /* floor(log10(a)) from the binary exponent (78913 / 2^18 ~ log10(2)), then one step of correction */
    int e10 = ((ex - 1) * 78913) >> 18;
    if (e10 < -8) e10 = -8;
    while (e10 < 15 && a >= P10N[e10 + 9]) e10++;
    while (e10 > -8 && a < P10N[e10 + 8]) e10--;
    int k = 14 - e10;
    if (k >= 0 && k <= 22) {
        double m = nearbyint(a * P10D[k]);
        if (m >= 1e15 && k > 0) { k--; m = nearbyint(a * P10D[k]); }
        else if (m < 1e14 && k < 22) { k++; m = nearbyint(a * P10D[k]); }
        if (m < 9007199254740992.0 && m / P10D[k] == a) return put_decimal(out, (uint64_t)m, k, v < 0);
    }
    uint64_t f = (uint64_t)(fr * 9007199254740992.0);
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
typedef struct emitter { ts_derive_ep *e; outb v[TS_DERIVE_MAX_DESTS]; int n; size_t points; } emitter;

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
    size_t n = rev_digits(d, (uint64_t)t), k = 0;
    while (n) out[k++] = d[--n];
    out[k] = 0;
    return k;
}

static void emit_point(ts_derive_ep *e, emitter *em, ddefst *ds, const dgroup *g, double v, int64_t t_ms) {
    const ddef *f = ds->def;
    v *= f->scale;
    if (!isfinite(v)) { e->d->st.undefined++; ts_counter_add(c_undef, 1); return; }
    outb *o = out_batch(em, &ds->dest);
    if (!o) return;
    char num[40], ts[24];
    ts_buf *t = o->text;
    ts_buf_add(t, f->meas_esc, f->meas_len);
    ts_buf_add(t, g->kvs, g->kvs_len);
    ts_buf_addc(t, ' ');
    ts_buf_add(t, f->field_esc, f->field_len);
    ts_buf_addc(t, '=');
    ts_buf_add(t, num, ts_derive_fmt_double(num, v));
    ts_buf_addc(t, ' ');
    ts_buf_add(t, ts, fmt_time(ts, to_prec(t_ms, ds->dest.precision)));
    ts_buf_addc(t, '\n');
    o->lines++;
    em->points++;
}

static double acc_value(int agg, const dacc *a) {
    switch (agg) {
    case AGG_MIN: return a->min;
    case AGG_MAX: return a->max;
    case AGG_MEAN: return a->sum / (double)a->n;
    case AGG_COUNT: return (double)a->n;
    case AGG_LAST: return a->last;
    default: return a->sum;   /* sum; rate: the sum of the series' rates */
    }
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
            dcell *c = &cs->cells[i];
            if (c->wn && c->wb <= through) window_fold(ds, c);
        }
    }
    for (int i = 0; i < ds->nbuckets;) {
        dbucket *bk = &ds->buckets[i];
        if (bk->b > through) { i++; continue; }
        for (uint32_t g = 0; g < bk->naccs; g++)
            if (bk->accs[g].n) emit_point(e, em, ds, &ds->groups[g], acc_value(f->agg, &bk->accs[g]), bk->b * f->window_ms);
        free(bk->accs);
        ds->buckets[i] = ds->buckets[--ds->nbuckets];
    }
    ds->closed_through = through;
}

size_t ts_derive_finish(ts_derive_ep *e, ts_derive_emit_fn emit, void *ud) {
    if (!e->owner) return 0;
    ts_derive *d = e->d;
    /* staged series: rates commit their new base, ratios join their groups */
    for (size_t i = 0; i < e->ntouch; i++) {
        dcellset *cs = e->touch[i].set;
        dcell *c = &cs->cells[e->touch[i].id];
        ddefst *ds = cs->ds;
        if (ds->def->agg == AGG_RATE) {
            c->pv = c->v[0];
            c->pt = c->t;
            c->has_prev = 1;
        } else if (c->stamp[0] == e->stamp && c->stamp[1] == e->stamp) {
            dacc *a = poll_acc(e, ds, c->group);
            acc_add(a, c->v[0], c->t);
            a->sum2 += c->v[1];
        } else {
            d->st.ratio_unpaired++;
            ts_counter_add(c_unpaired, 1);
        }
    }
    e->ntouch = 0;
    emitter em;
    memset(&em, 0, sizeof em);
    em.e = e;
    for (int i = 0; i < d->ndefs; i++) {
        ddefst *ds = &e->defs[i];
        if (!ds->active) continue;
        if (ds->def->window_ms > 0) { close_windows(e, &em, ds); continue; }
        for (uint32_t k = 0; k < ds->ntouched; k++) {
            const dgroup *g = &ds->groups[ds->touched[k]];
            const dacc *a = &g->acc;
            if (!a->n) continue;
            if (ds->def->agg == AGG_RATIO) {
                if (a->sum2 == 0) { d->st.undefined++; ts_counter_add(c_undef, 1); continue; }
                emit_point(e, &em, ds, g, a->sum / a->sum2, a->tmax);
            } else {
                emit_point(e, &em, ds, g, acc_value(ds->def->agg, a), a->tmax);
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
    ts_counter_add(c_points, (int64_t)em.points);
    e->owner = NULL;
    return em.points;
}
