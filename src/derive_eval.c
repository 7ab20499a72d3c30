/* Derived metrics, per-sample path (C core): binding the mapping cache's
 * answers (per stat: a list of slots, per entity: an id), the filter verdict
 * and group of a series worked out once per (definition, stat, entity) and
 * cached in a cell indexed by the entity's id, and the poll's boundaries. */
#include "ts_derive_eval.h"
#include <stdlib.h>
#include <string.h>
#include "ts_buf.h"

/* ---- binding ------------------------------------------------------------- */
static dcellset *cellset_get(ts_derive_ep *e, int di, const ts_tagset *tags) {
    ts_buf k;
    ts_buf_init(&k);
    ts_buf_printf(&k, "%d", di);
    for (uint32_t i = 0; i < tags->n; i++) { ts_buf_addc(&k, 0); ts_buf_add(&k, tags->tags[i].kv, tags->tags[i].kv_len); }
    dcellset *cs = ts_dtab_get(&e->sets, k.data, k.len, NULL);
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs) abort();
        ddefst *ds = &e->defs[di];
        cs->ds = ds;
        cs->agg = ds->def->agg;
        cs->kind = cs->agg == AGG_RATE ? CK_RATE : cs->agg == AGG_RATIO ? CK_RATIO : ds->def->window_ms > 0 ? CK_WIN : CK_PLAIN;
        cs->csize = cs->kind == CK_RATE ? sizeof(dcell_rate) : cs->kind == CK_RATIO ? sizeof(dcell_ratio)
                  : cs->kind == CK_WIN ? sizeof(dcell_win) : sizeof(dcell);
        cs->ntags = tags->n;
        cs->tags = calloc(tags->n ? tags->n : 1, sizeof(ts_etag));
        for (uint32_t i = 0; i < tags->n; i++) {
            cs->tags[i].key = ts_dv_strndup(tags->tags[i].key, strlen(tags->tags[i].key));
            cs->tags[i].kv = ts_dv_strndup(tags->tags[i].kv, tags->tags[i].kv_len);
            cs->tags[i].kv_len = tags->tags[i].kv_len;
        }
        ds->sets = ts_dv_realloc(ds->sets, sizeof(dcellset *) * (size_t)(ds->nsets + 1));
        ds->sets[ds->nsets++] = cs;
        ts_dtab_put(&e->sets, k.data, k.len, cs);
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
    ts_derive_slots *sl = ts_dtab_get(&e->stats, k.data, k.len, &found);
    if (!found) {
        dbind tmp[64];
        uint32_t n = 0;
        for (int i = 0; i < e->d->ndefs && n < 64; i++) {
            const ddef *f = &e->d->defs[i];
            if (!e->defs[i].active) continue;
            for (uint32_t op = 0; op < 2; op++) {
                const char *want = op == 0 ? f->from : f->over;
                if (want && strlen(want) == len && memcmp(want, meas, len) == 0 && n < 64) {
                    dcellset *cs = cellset_get(e, i, tags);
                    uint32_t code = cs->kind == CK_RATE ? DB_RATE : cs->kind == CK_RATIO ? DB_RATIO : cs->kind == CK_WIN ? DB_WIN
                                  : cs->agg == AGG_SUM ? DB_SUM : cs->agg == AGG_MIN ? DB_MIN : cs->agg == AGG_MAX ? DB_MAX : DB_PLAIN;
                    tmp[n++] = (dbind){cs, op, code};
                }
            }
        }
        if (n) {
            sl = malloc(sizeof *sl + n * sizeof(dbind));
            if (!sl) abort();
            sl->n = n;
            memcpy(sl->b, tmp, n * sizeof(dbind));
        }
        ts_dtab_put(&e->stats, k.data, k.len, sl);
    }
    ts_buf_free(&k);
    return sl;
}

static const char *ent_key(const void *ud, uint32_t id, size_t *len) {
    const ts_derive_ep *e = ud;
    *len = e->ent_len[id];
    return e->ent_name[id];
}

uint32_t ts_derive_bind_entity(ts_derive_ep *e, const char *name, size_t len) {
    if (!e) return 0;
    uint32_t id = ts_dix_find(&e->ents, name, len, ent_key, e);
    if (id) id--;
    else {
        id = ++e->nents;
        e->ent_ver = ts_dv_realloc(e->ent_ver, sizeof(uint32_t) * (id + 1));
        e->ent_ver[id] = 0;
        e->ent_name = ts_dv_realloc(e->ent_name, sizeof(char *) * (id + 1));
        e->ent_name[id] = ts_dv_kv_copy(&e->ent_kv, name, len);
        e->ent_len = ts_dv_realloc(e->ent_len, sizeof(uint32_t) * (id + 1));
        e->ent_len[id] = (uint32_t)len;
        ts_dix_add(&e->ents, id, name, len, ent_key, e);
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

static const char *group_key(const void *ud, uint32_t id, size_t *len) {
    const ddefst *ds = ud;
    *len = ds->groups[id].kvs_len;
    return ds->groups[id].kvs;
}

/* Filter verdict and group of one series, once per (cell set, entity version);
 * out of line, so the per-sample loop keeps its registers. */
__attribute__((noinline, cold)) static void classify(ts_derive_ep *e, dcellset *cs, dcell *c, const ts_entity_map *ent, uint32_t id) {
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
    uint32_t gi = ts_dix_find(&ds->group_ix, g.data ? g.data : "", g.len, group_key, ds);
    if (gi) gi--;
    else {
        if (ds->ngroups == ds->capgroups) {
            ds->capgroups = ds->capgroups ? ds->capgroups * 2 : 16;
            ds->groups = ts_dv_realloc(ds->groups, sizeof(dgroup) * ds->capgroups);
        }
        gi = ds->ngroups++;
        dgroup *gr = &ds->groups[gi];
        memset(gr, 0, sizeof *gr);
        gr->kvs = ts_dv_kv_copy(&ds->kv, g.data ? g.data : "", g.len);
        gr->kvs_len = (uint32_t)g.len;
        ts_dix_add(&ds->group_ix, gi, gr->kvs, g.len, group_key, ds);
    }
    c->group = (int32_t)gi;
    ts_buf_free(&g);
}


static dbucket *bucket_get(ddefst *ds, int64_t b) {
    for (int i = 0; i < ds->nbuckets; i++) if (ds->buckets[i].b == b) return &ds->buckets[i];
    ds->buckets = ts_dv_realloc(ds->buckets, sizeof(dbucket) * (size_t)(ds->nbuckets + 1));
    dbucket *bk = &ds->buckets[ds->nbuckets++];
    memset(bk, 0, sizeof *bk);
    bk->b = b;
    return bk;
}

/* A series' window mean joins its group's window. */
void ts_dv_window_fold(ddefst *ds, dcell_win *c) {
    if (c->wn == 0 || c->h.group < 0) { c->wn = 0; return; }
    dbucket *bk = bucket_get(ds, c->wb);
    if ((uint32_t)c->h.group >= bk->naccs) {
        uint32_t n = ds->ngroups > (uint32_t)c->h.group ? ds->ngroups : (uint32_t)c->h.group + 1;
        bk->accs = ts_dv_realloc(bk->accs, sizeof(dacc) * n);
        memset(bk->accs + bk->naccs, 0, sizeof(dacc) * (n - bk->naccs));
        bk->naccs = n;
    }
    acc_add(&bk->accs[c->h.group], ds->def->agg, c->sum / c->wn, c->pt);
    c->wn = 0;
    c->sum = 0;
}

__attribute__((noinline)) static void sample_window(ts_derive_ep *e, ddefst *ds, dcell_win *c, double v, int64_t t) {
    ts_derive *d = e->d;
    if (c->h.x && t == c->pt) { d->st.window_dups++; ts_counter_add(ts_dv_ctr.dups, 1); return; }
    int64_t b = floor_div(t, ds->def->window_ms);
    if (b <= ds->closed_through) { d->st.window_late++; ts_counter_add(ts_dv_ctr.late, 1); return; }
    if (c->wn && c->wb != b) ts_dv_window_fold(ds, c);
    c->wb = b;
    c->sum += v;
    c->wn++;
    c->pt = t;
    c->h.x = 1;
    if (!ds->has_t || t < ds->poll_tmin) ds->poll_tmin = t;
    if (!ds->has_t || t > ds->poll_tmax) ds->poll_tmax = t;
    ds->has_t = 1;
}

static void sample_rate(ts_derive_ep *e, ddefst *ds, dcell_rate *c, double v, int64_t t) {
    ts_derive *d = e->d;
    if (c->h.stamp) {   /* the value staged by a poll that finished: the base now */
        c->pv = c->v;
        c->pt = c->t;
        c->h.x = 1;
    }
    c->h.stamp = e->stamp;
    if (!c->h.x) {
        d->st.rate_first++;
    } else {
        int64_t dt = t - c->pt;
        if (dt <= 0) { d->st.rate_repeats++; ts_counter_add(ts_dv_ctr.repeats, 1); return; }
        if (dt > ds->def->max_gap_ms) { d->st.rate_gaps++; ts_counter_add(ts_dv_ctr.gaps, 1); }
        else if (v < c->pv) { d->st.rate_resets++; ts_counter_add(ts_dv_ctr.resets, 1); }
        else acc_add(poll_acc(e, ds, c->h.group), AGG_RATE, (v - c->pv) * 1000.0 / (double)dt, t);
    }
    c->v = v;
    c->t = t;
}

/* A ratio's pair joins its group when its second value comes. */
static void sample_ratio(ts_derive_ep *e, ddefst *ds, dcell_ratio *c, uint32_t op, double v, int64_t t) {
    c->v[op] = v;
    if ((op ? c->h.stamp : c->h.x) != e->stamp) {
        c->t = t;
        ds->ratio_first++;
        return;
    }
    if (t > c->t) c->t = t;
    dacc *a = poll_acc(e, ds, c->h.group);
    acc_add(a, AGG_RATIO, c->v[0], c->t);
    a->y += c->v[1];
    ds->ratio_paired++;
}

void ts_derive_sample(ts_derive_ep *e, const ts_cpoint *p) {
    const ts_derive_slots *sl = p->stat->derive;
    uint32_t id = p->ent->derive_id;
    if (!e->owner || !id) return;
    double v = p->value * p->stat->scale;
    int64_t t = p->time_ms;
    uint32_t stamp = e->stamp, ver = e->ent_ver[id];
    if (id + 16 <= e->nents) __builtin_prefetch(&e->ent_ver[id + 16]);
    for (uint32_t i = 0; i < sl->n; i++) {
        dcellset *cs = sl->b[i].set;
        uint32_t op = sl->b[i].op;
        if (id >= cs->ncells) {
            uint32_t n = cs->ncells ? cs->ncells : 64;
            while (n <= id) n *= 2;
            cs->cells = ts_dv_realloc(cs->cells, (size_t)cs->csize * n);
            memset(cs->cells + (size_t)cs->csize * cs->ncells, 0, (size_t)cs->csize * (n - cs->ncells));
            cs->ncells = n;
        }
        dcell *c = cell_at(cs, id);
        /* Entities come in the same order every poll (ids are given in the
         * order of the first one), a few KB of payload apart, and the scan of
         * those pushes this state out of the caches: fetch the cell of the
         * entity after next, and the group of the next one (its cell came
         * with the last sample's fetch), so they are there when asked for. */
        if (id + 2 < cs->ncells) {
            const char *nc = (const char *)cell_at(cs, id + 2);
            __builtin_prefetch(nc, 1);
            __builtin_prefetch(nc + cs->csize - 1, 1);
            int32_t ng = cell_at(cs, id + 1)->group;
            if (ng >= 0 && (uint32_t)ng < cs->ds->ngroups) __builtin_prefetch(&cs->ds->groups[ng], 1);
        }
        if (c->ver != ver) classify(e, cs, c, p->ent, id);
        /* one value per series per poll: history entries after the newest are older */
        if (c->group < 0) continue;
        uint32_t *seen = op ? &c->x : &c->stamp;
        if (*seen == stamp) continue;
        e->d->st.samples++;
        ddefst *ds = cs->ds;
        switch (sl->b[i].code) {
        case DB_SUM:
            c->stamp = stamp;
            acc_add(poll_acc(e, ds, c->group), AGG_SUM, v, t);
            break;
        case DB_MIN:
            c->stamp = stamp;
            acc_add(poll_acc(e, ds, c->group), AGG_MIN, v, t);
            break;
        case DB_MAX:
            c->stamp = stamp;
            acc_add(poll_acc(e, ds, c->group), AGG_MAX, v, t);
            break;
        case DB_PLAIN:
            c->stamp = stamp;
            acc_add(poll_acc(e, ds, c->group), cs->agg, v, t);
            break;
        case DB_RATE:
            sample_rate(e, ds, (dcell_rate *)c, v, t);   /* sets the stamp once the staged value is taken */
            break;
        case DB_RATIO:
            *seen = stamp;
            sample_ratio(e, ds, (dcell_ratio *)c, op, v, t);
            break;
        default:
            c->stamp = stamp;
            sample_window(e, ds, (dcell_win *)c, v, t);
            break;
        }
    }
    ts_counter_add(ts_dv_ctr.samples, 1);
}

/* ---- poll boundaries ------------------------------------------------------- */
/* What the open poll staged is dropped: rates keep their base (aborts are
 * rare, so this walks the cells rather than keeping a list per poll). */
static void drop_staged(ts_derive_ep *e) {
    for (int i = 0; i < e->d->ndefs; i++) {
        ddefst *ds = &e->defs[i];
        for (int s = 0; s < ds->nsets; s++) {
            dcellset *cs = ds->sets[s];
            if (cs->kind != CK_RATE) continue;
            for (uint32_t k = 0; k < cs->ncells; k++) {
                dcell *c = cell_at(cs, k);
                if (c->stamp == e->stamp) c->stamp = 0;
            }
        }
    }
}

int ts_derive_begin(ts_derive_ep *e, const void *owner) {
    if (e->owner && e->owner != owner) {
        e->d->st.busy_skips++;
        ts_counter_add(ts_dv_ctr.busy, 1);
        return -1;
    }
    if (e->owner) drop_staged(e);   /* the same fetch again: its unfinished attempt */
    e->owner = owner;
    if (++e->stamp == 0) e->stamp = 1;   /* 0 marks "never" in cells and groups */
    for (int i = 0; i < e->d->ndefs; i++) {
        e->defs[i].ntouched = 0;
        e->defs[i].has_t = 0;
        e->defs[i].ratio_first = e->defs[i].ratio_paired = 0;
    }
    return 0;
}

void ts_derive_abort(ts_derive_ep *e) {
    if (e->owner) drop_staged(e);
    e->owner = NULL;
}
