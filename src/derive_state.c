/* Derived metrics state (C core): the string-keyed table, the counters, and
 * the lifetime of an engine and its endpoints (made on the first poll of an
 * endpoint, kept across Traffic Ops refreshes, freed with the engine). */
#include "ts_derive_state.h"
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
        ts_dtab_free(&ds->group_ix, NULL);
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
    ts_dtab_free(&e->ents, NULL);
    free(e->ent_ver);
    ts_dtab_free(&e->stats, slots_free);
    ts_dtab_free(&e->sets, NULL);
    free(e->touch);
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
    ts_dtab_put(&d->eps, key, (size_t)kl, e);
    return e;
}

