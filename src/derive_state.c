/* Derived metrics state (C core): the string-keyed table, the counters, and
 * the lifetime of an engine and its endpoints (made on the first poll of an
 * endpoint, kept across Traffic Ops refreshes, freed with the engine). */
#include "ts_derive_state.h"
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

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

void *ts_dtab_get(const dtab *t, const char *k, size_t n, int *found) {
    dslot *s = dtab_find(t, dhash(k, n), k, n);
    if (found) *found = s != NULL;
    return s ? s->val : NULL;
}

void ts_dtab_put(dtab *t, const char *k, size_t n, void *v) {
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

void ts_dtab_free(dtab *t, void (*fv)(void *)) {
    for (size_t i = 0; i < t->cap; i++)
        if (t->s[i].key) { if (fv && t->s[i].val) fv(t->s[i].val); free(t->s[i].key); }
    free(t->s);
    memset(t, 0, sizeof *t);
}

uint32_t ts_dix_find(const dix *x, const char *k, size_t n, dix_key_fn key, const void *ud) {
    if (!x->cap) return 0;
    for (uint32_t i = (uint32_t)dhash(k, n) & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
        uint32_t v = x->s[i];
        if (!v) return 0;
        size_t kl;
        const char *kk = key(ud, v - 1, &kl);
        if (kl == n && memcmp(kk, k, n) == 0) return v;
    }
}

static void dix_place(uint32_t *s, uint32_t cap, uint64_t h, uint32_t v) {
    uint32_t i = (uint32_t)h & (cap - 1);
    while (s[i]) i = (i + 1) & (cap - 1);
    s[i] = v;
}

void ts_dix_add(dix *x, uint32_t id, const char *k, size_t n, dix_key_fn key, const void *ud) {
    if ((x->n + 1) * 4 >= x->cap * 3) {
        uint32_t nc = x->cap ? x->cap * 2 : 32;
        uint32_t *ns = calloc(nc, sizeof *ns);
        if (!ns) abort();
        for (uint32_t i = 0; i < x->cap; i++) {
            if (!x->s[i]) continue;
            size_t kl;
            const char *kk = key(ud, x->s[i] - 1, &kl);
            dix_place(ns, nc, dhash(kk, kl), x->s[i]);
        }
        free(x->s);
        x->s = ns;
        x->cap = nc;
    }
    dix_place(x->s, x->cap, dhash(k, n), id + 1);
    x->n++;
}

void *ts_dv_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

char *ts_dv_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) abort();
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

ts_dv_counters ts_dv_ctr;

void ts_dv_counters_init(void) {
    if (ts_dv_ctr.samples) return;
    ts_dv_ctr.samples = ts_counter_get("derive_samples");
    ts_dv_ctr.points = ts_counter_get("derive_points");
    ts_dv_ctr.resets = ts_counter_get("derive_rate_resets");
    ts_dv_ctr.gaps = ts_counter_get("derive_rate_gaps");
    ts_dv_ctr.repeats = ts_counter_get("derive_rate_repeats");
    ts_dv_ctr.unpaired = ts_counter_get("derive_ratio_unpaired");
    ts_dv_ctr.undef = ts_counter_get("derive_undefined");
    ts_dv_ctr.late = ts_counter_get("derive_window_late");
    ts_dv_ctr.dups = ts_counter_get("derive_window_dups");
    ts_dv_ctr.busy = ts_counter_get("derive_busy_skips");
}

char *ts_dv_kv_copy(kvblock **head, const char *s, size_t n) {
    if (n + 1 > sizeof((*head)->data)) return ts_dv_strndup(s, n);   /* never in practice: tags are short */
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

void ts_dv_def_free(ddef *f) {
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
        free(ds->group_ix.s);
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
    free(e->ents.s);
    free(e->ent_ver);
    free(e->ent_name);
    free(e->ent_len);
    while (e->ent_kv) { kvblock *n = e->ent_kv->next; free(e->ent_kv); e->ent_kv = n; }
    ts_dtab_free(&e->stats, slots_free);
    ts_dtab_free(&e->sets, NULL);
    free(e);
}

void ts_derive_release(ts_derive *d) {
    if (!d || --d->refs > 0) return;
    ts_dtab_free(&d->eps, ep_free);
    for (int i = 0; i < d->ndefs; i++) ts_dv_def_free(&d->defs[i]);
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
    ts_derive_ep *e = ts_dtab_get(&d->eps, key, (size_t)kl, NULL);
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
    e->ent_name = calloc(1, sizeof(char *));
    e->ent_len = calloc(1, sizeof(uint32_t));
    ts_dtab_put(&d->eps, key, (size_t)kl, e);
    return e;
}


/* ---- memory held ------------------------------------------------------------ */
static size_t blk(const void *p) { return p ? malloc_usable_size((void *)p) + sizeof(size_t) : 0; }

static size_t tab_mem(const dtab *t, size_t (*val)(const void *)) {
    size_t n = blk(t->s);
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->s[i].key) continue;
        n += blk(t->s[i].key);
        if (val) n += val(t->s[i].val);
    }
    return n;
}

static size_t ep_mem(const ts_derive_ep *e) {
    size_t n = blk(e) + blk(e->defs) + blk(e->ent_ver) + blk(e->ent_name) + blk(e->ent_len) + blk(e->ents.s) + tab_mem(&e->stats, blk) +
               tab_mem(&e->sets, NULL);
    for (const kvblock *k = e->ent_kv; k; k = k->next) n += blk(k);
    for (int i = 0; i < e->d->ndefs; i++) {
        const ddefst *ds = &e->defs[i];
        n += blk(ds->groups) + blk(ds->touched) + blk(ds->buckets) + blk(ds->sets) + blk(ds->group_ix.s);
        for (const kvblock *k = ds->kv; k; k = k->next) n += blk(k);
        for (int b = 0; b < ds->nbuckets; b++) n += blk(ds->buckets[b].accs);
        for (int s = 0; s < ds->nsets; s++) {
            const dcellset *cs = ds->sets[s];
            n += blk(cs) + blk(cs->tags) + blk(cs->cells);
            for (uint32_t k = 0; k < cs->ntags; k++) n += blk(cs->tags[k].key) + blk(cs->tags[k].kv);
        }
    }
    return n;
}

size_t ts_derive_mem(const ts_derive *d) {
    if (!d) return 0;
    size_t n = blk(d) + blk(d->eps.s) + blk(d->defs);
    for (size_t i = 0; i < d->eps.cap; i++)
        if (d->eps.s[i].key) n += blk(d->eps.s[i].key) + ep_mem(d->eps.s[i].val);
    return n;
}
