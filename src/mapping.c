/* Mapping caches (C side of the C/Lua line). Lua is asked once per distinct
 * stat name and once per entity (cache / delivery service) of an endpoint;
 * its answer is turned into pre-escaped line-protocol pieces kept in an arena,
 * and C applies them to every sample. A mapper is refcounted: the plan holds
 * one reference and every pending batch another, so a Traffic Ops refresh or
 * a SIGHUP never frees strings that buffered points still point at. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ts_mapping.h"

#include "ts_config.h"
#include "ts_derive.h"
#include "ts_log.h"
#include "ts_lp.h"
#include "ts_lua.h"

/* ---- arena --------------------------------------------------------------- */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
} arena_block;

static void *arena_alloc(arena_block **head, size_t n) {
    n = (n + 7) & ~(size_t)7;
    arena_block *b = *head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        arena_block *nb = malloc(sizeof *nb + cap);
        if (!nb) abort();
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        *head = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_strdup(arena_block **head, const char *s, size_t n) {
    char *p = arena_alloc(head, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void arena_free(arena_block *b) {
    while (b) { arena_block *n = b->next; free(b); b = n; }
}

/* ---- string-keyed hash table (open addressing) --------------------------- */
typedef struct slot { uint64_t h; const char *key; uint32_t len; void *val; } slot;
typedef struct htab { slot *slots; size_t cap, n; } htab;

/* Called for every sample's stat name (~80k per poll): 8 bytes per step. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
    return h;
}

static void *htab_get(const htab *t, uint64_t h, const char *k, size_t n) {
    if (!t->cap) return NULL;
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        const slot *s = &t->slots[i];
        if (!s->key) return NULL;
        if (s->h == h && s->len == n && memcmp(s->key, k, n) == 0) return s->val;
    }
}

static void htab_put(htab *t, uint64_t h, const char *k, size_t n, void *v) {
    if ((t->n + 1) * 4 >= t->cap * 3) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        slot *ns = calloc(ncap, sizeof *ns);
        if (!ns) abort();
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->slots[i].key) continue;
            size_t j = t->slots[i].h & (ncap - 1);
            while (ns[j].key) j = (j + 1) & (ncap - 1);
            ns[j] = t->slots[i];
        }
        free(t->slots);
        t->slots = ns;
        t->cap = ncap;
    }
    size_t i = h & (t->cap - 1);
    while (t->slots[i].key) i = (i + 1) & (t->cap - 1);
    t->slots[i] = (slot){h, k, (uint32_t)n, v};
    t->n++;
}

/* ---- mapper -------------------------------------------------------------- */
struct ts_mapper {
    lua_State *L;
    int mod_ref, ctx_ref;
    int refs;
    arena_block *arena;
    htab stats, ents;
    struct stat_entry *last_stat;   /* the previous stat looked up (order prediction) */
    ts_map_owner owner;
    uint64_t lua_calls;
    long budget;
    int64_t poll_budget_ns, poll_spent_ns;   /* Lua time this poll may use, has used */
    int *hooks;             /* sample-hook refs to release */
    int nhooks;
    ts_derive_ep *derive;   /* derived metrics bound to this endpoint's answers, or NULL */
    char label[160];
};

static ts_counter *c_lua_calls, *c_map_errors, *c_hook_calls, *c_names_altered;

static void mapper_retain(void *o) { ((ts_mapper *)o)->refs++; }

static void mapper_free(ts_mapper *m) {
    if (m->L) {
        luaL_unref(m->L, LUA_REGISTRYINDEX, m->mod_ref);
        luaL_unref(m->L, LUA_REGISTRYINDEX, m->ctx_ref);
        for (int i = 0; i < m->nhooks; i++) luaL_unref(m->L, LUA_REGISTRYINDEX, m->hooks[i]);
    }
    free(m->hooks);
    free(m->stats.slots);
    free(m->ents.slots);
    arena_free(m->arena);
    free(m);
}

static void mapper_release_cb(void *o) {
    ts_mapper *m = o;
    if (--m->refs == 0) mapper_free(m);
}

static int l_sandbox_require(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sandbox");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "require");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* Mapping modules run inside the poll: they are loaded into lua/sandbox.lua's
 * allow-list environment, never as ordinary modules. Pushes the module. */
static int require_sandboxed(lua_State *L, const char *module) {
    lua_pushcfunction(L, l_sandbox_require);
    lua_pushstring(L, module);
    char what[200];
    snprintf(what, sizeof what, "loading mapping module '%s'", module);
    return ts_lua_pcall(L, 1, 1, what, 0);
}

void ts_mapper_push_module(ts_mapper *m) { lua_rawgeti(m->L, LUA_REGISTRYINDEX, m->mod_ref); }

ts_mapper *ts_mapper_new(lua_State *L, const char *module, int ctx_ref, const char *label) {
    if (!c_lua_calls) {
        c_lua_calls = ts_counter_get("mapping_lua_calls");
        c_map_errors = ts_counter_get("mapping_errors");
        c_hook_calls = ts_counter_get("mapping_sample_hook_calls");
        c_names_altered = ts_counter_get("lp_names_altered");
    }
    if (require_sandboxed(L, module) != 0) return NULL;
    if (!lua_istable(L, -1)) {
        ts_error("mapping module '%s' did not return a table", module);
        lua_pop(L, 1);
        return NULL;
    }
    ts_mapper *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->L = L;
    m->mod_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    m->ctx_ref = ctx_ref;
    m->refs = 1;
    m->owner.retain = mapper_retain;
    m->owner.release = mapper_release_cb;
    m->owner.owner = m;
    m->budget = (long)ts_config_settings(L)->lua.hook_budget;
    m->poll_budget_ns = ts_config_settings(L)->lua.poll_budget_ms * 1000000;
    snprintf(m->label, sizeof m->label, "%s", label ? label : module);
    return m;
}

void ts_mapper_release(ts_mapper *m) { if (m) mapper_release_cb(m); }
void ts_mapper_set_derive(ts_mapper *m, ts_derive_ep *e) { m->derive = e; }
const ts_map_owner *ts_mapper_owner(ts_mapper *m) { return &m->owner; }
uint64_t ts_mapper_lua_calls(const ts_mapper *m) { return m->lua_calls; }

static int tag_cmp(const void *a, const void *b) {
    return strcmp(((const ts_etag *)a)->key, ((const ts_etag *)b)->key);
}

/* Table of tags at `idx` → sorted, escaped tagset in the arena. Tags whose
 * value escapes to nothing are dropped, as InfluxDB would refuse them. */
static void build_tagset(ts_mapper *m, int idx, ts_tagset *ts) {
    lua_State *L = m->L;
    ts->tags = NULL;
    ts->n = 0;
    if (!lua_istable(L, idx)) return;
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) { n++; lua_pop(L, 1); }
    if (!n) return;
    ts->tags = arena_alloc(&m->arena, n * sizeof(ts_etag));
    ts_buf b;
    ts_buf_init(&b);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
            size_t kl, vl;
            const char *k = lua_tolstring(L, -2, &kl);
            lua_pushvalue(L, -1);                       /* tostring a copy, never the key */
            const char *v = lua_tolstring(L, -1, &vl);
            ts_buf_reset(&b);
            ts_lp_escape_tag(&b, k, kl);
            size_t klen = b.len;
            ts_buf_addc(&b, '=');
            ts_lp_escape_tag(&b, v, vl);
            /* InfluxDB 1.x cannot store a trailing backslash in a tag (it would
             * escape the separator): the encoder trims it, so "cg\" and "cg"
             * become one series. Said once per name (answers are cached) and counted. */
            if ((kl && k[kl - 1] == '\\') || (vl && v[vl - 1] == '\\')) {
                ts_counter_add(c_names_altered, 1);
                ts_warn("%s: tag %.*s=%.*s ends in a backslash, which InfluxDB 1.x cannot store; it is written "
                        "without it (counter lp_names_altered)", m->label, (int)kl, k, (int)vl, v);
            }
            if (klen > 0 && b.len > klen + 1 && !(kl == 4 && memcmp(k, "time", 4) == 0)) {
                ts_etag *t = &ts->tags[ts->n++];
                t->key = arena_strdup(&m->arena, k, kl);
                t->kv = arena_strdup(&m->arena, b.data, b.len);
                t->kv_len = (uint32_t)b.len;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    ts_buf_free(&b);
    qsort(ts->tags, ts->n, sizeof(ts_etag), tag_cmp);
    /* duplicate keys cannot be written: keep the first of each */
    uint32_t w = 0;
    for (uint32_t i = 0; i < ts->n; i++)
        if (w == 0 || strcmp(ts->tags[w - 1].key, ts->tags[i].key) != 0) ts->tags[w++] = ts->tags[i];
    ts->n = w;
}

void ts_mapper_begin_poll(ts_mapper *m) { m->poll_spent_ns = 0; }

/* Wall-clock, not CLOCK_THREAD_CPUTIME_ID: the thread CPU clock is a system
 * call (~0.85 us here, twice per call), which made a per-sample hook cost
 * ~2.8 us instead of ~0.15; CLOCK_MONOTONIC is read in the vDSO (~30 ns).
 * The loop is single-threaded, so Lua's wall time is its CPU time unless
 * the machine preempts it, and then the budget errs on the safe side. */
static int64_t lua_clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The poll's Lua budget is spent: what is not answered yet waits for the next
 * poll (a mapping that loops costs one endpoint a bounded time, not the daemon). */
static int poll_budget_spent(const ts_mapper *m) { return m->poll_budget_ns > 0 && m->poll_spent_ns >= m->poll_budget_ns; }

/* Calls M[fn](name, ctx) with the budget; leaves one result, or returns -1
 * (error, nothing left) or -2 (the poll's budget is spent: not called). */
static int call_lua(ts_mapper *m, const char *fn, const char *name, size_t len) {
    lua_State *L = m->L;
    if (poll_budget_spent(m)) return -2;
    m->lua_calls++;
    ts_counter_add(c_lua_calls, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->mod_ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return 1;     /* absent hook: nothing to map */
    }
    lua_pushlstring(L, name, len);
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->ctx_ref);
    char what[256];
    snprintf(what, sizeof what, "%s %s(\"%.*s\")", m->label, fn, len > 80 ? 80 : (int)len, name);
    int64_t t0 = lua_clock_ns();
    int rc = ts_lua_pcall(L, 2, 1, what, m->budget);
    m->poll_spent_ns += lua_clock_ns() - t0;
    if (rc != 0) {
        ts_counter_add(c_map_errors, 1);
        return -1;
    }
    return 0;
}

static ts_entity_map DROP_ENT = {.keep = 0};
static ts_entity_map FAILED_ENT = {.keep = 0, .failed = 1};
/* Answers not asked for lack of budget: never cached, asked again next poll. */
static ts_entity_map DEFERRED_ENT = {.keep = 0, .failed = TS_MAP_DEFERRED};
static const ts_stat_map DEFERRED_STAT = {.failed = TS_MAP_DEFERRED, .hook_ref = LUA_NOREF};

/* Every cache lists its stats in the same order, so the entry that followed
 * this one last time is checked (one memcmp) before hashing the name. */
struct stat_entry {
    ts_stat_map map;        /* first member: &entry->map == entry */
    const char *key;
    uint32_t len;
    struct stat_entry *next;
};

static void stat_from_lua(ts_mapper *m, const char *name, size_t len, ts_stat_map *st);

const ts_stat_map *ts_mapper_stat(ts_mapper *m, const char *name, size_t len) {
    struct stat_entry *p = m->last_stat ? m->last_stat->next : NULL;
    if (p && p->len == len && memcmp(p->key, name, len) == 0) {
        m->last_stat = p;
        return &p->map;
    }
    uint64_t h = hash_bytes(name, len);
    struct stat_entry *e = htab_get(&m->stats, h, name, len);
    if (!e) {
        ts_stat_map st;
        stat_from_lua(m, name, len, &st);
        if (st.failed == TS_MAP_DEFERRED) return &DEFERRED_STAT;
        e = arena_alloc(&m->arena, sizeof *e);
        e->map = st;
        e->len = (uint32_t)len;
        e->key = arena_strdup(&m->arena, name, len);
        e->next = NULL;
        /* Cache drops too: an unwanted stat costs one Lua call per plan, not per poll. */
        htab_put(&m->stats, h, e->key, len, e);
    }
    if (m->last_stat) m->last_stat->next = e;
    m->last_stat = e;
    return &e->map;
}

/* The first key of the stat answer at t that the contract does not know
 * (a typo such as `Scale` or `tag` would silently do nothing), pushed and
 * returned; NULL (nothing pushed) when every key is known. */
static const char *stat_unknown_key(lua_State *L, int t) {
    static const char *known[] = {"measurement", "tags", "field", "scale", "as_int", "sample", NULL};
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; known[i]; i++) ok |= strcmp(lua_tostring(L, -1), known[i]) == 0;
        if (!ok) {
            if (lua_type(L, -1) != LUA_TSTRING) { lua_pop(L, 1); lua_pushliteral(L, "(not a string)"); }
            return lua_tostring(L, -1);
        }
    }
    return NULL;
}

/* Lua's answer for one stat name, into *st. */
static void stat_from_lua(ts_mapper *m, const char *name, size_t len, ts_stat_map *st) {
    lua_State *L = m->L;
    memset(st, 0, sizeof *st);
    st->keep = 0;
    st->hook_ref = LUA_NOREF;
    int rc = call_lua(m, "stat", name, len);
    const char *bad = rc >= 0 && lua_istable(L, -1) ? stat_unknown_key(L, lua_gettop(L)) : NULL;
    if (bad) {
        ts_warn("%s stat(\"%.*s\"): unknown key '%s' in the answer (keys: measurement, tags, field, scale, as_int, "
                "sample); stat dropped", m->label, (int)len, name, bad);
        ts_counter_add(c_map_errors, 1);
        lua_pop(L, 2);   /* the key, the answer */
        return;
    }
    if (rc >= 0 && lua_istable(L, -1)) {
        int t = lua_gettop(L);
        size_t ml = 0;
        lua_getfield(L, t, "measurement");
        const char *meas = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &ml) : NULL;
        if (!meas || ml == 0) {
            ts_warn("%s stat(\"%.*s\"): no measurement in the answer; stat dropped", m->label, (int)len, name);
            ts_counter_add(c_map_errors, 1);
            st->failed = 1;
        } else {
            st->keep = 1;
            st->hook_ref = LUA_NOREF;
            ts_buf b;
            ts_buf_init(&b);
            ts_lp_escape_measurement(&b, meas, ml);
            st->meas = arena_strdup(&m->arena, b.data, b.len);
            st->meas_len = (uint32_t)b.len;
            lua_getfield(L, t, "field");
            size_t fl = 5;
            const char *f = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &fl) : "value";
            ts_buf_reset(&b);
            ts_lp_escape_field_key(&b, f, fl);
            if (b.len == 0 || (fl == 4 && memcmp(f, "time", 4) == 0)) { ts_buf_reset(&b); ts_buf_adds(&b, "value"); }
            st->field = arena_strdup(&m->arena, b.data, b.len);
            st->field_len = (uint32_t)b.len;
            ts_buf_free(&b);
            lua_pop(L, 1);
            lua_getfield(L, t, "scale");
            st->scale = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1.0;
            if (!isfinite(st->scale)) st->scale = 1.0;
            lua_pop(L, 1);
            lua_getfield(L, t, "as_int");
            st->as_int = lua_toboolean(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, t, "tags");
            build_tagset(m, lua_gettop(L), &st->tags);
            lua_pop(L, 1);
            if (m->derive) st->derive = ts_derive_bind_stat(m->derive, meas, ml, &st->tags);
            lua_getfield(L, t, "sample");
            if (lua_isfunction(L, -1)) {
                st->hook_ref = luaL_ref(L, LUA_REGISTRYINDEX);
                int *h = realloc(m->hooks, sizeof(int) * (size_t)(m->nhooks + 1));
                if (!h) abort();
                m->hooks = h;
                m->hooks[m->nhooks++] = st->hook_ref;
            } else {
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);   /* measurement */
    }
    if (rc >= 0) lua_pop(L, 1);
    else st->failed = rc == -2 ? TS_MAP_DEFERRED : TS_MAP_FAILED;
}

const ts_entity_map *ts_mapper_entity(ts_mapper *m, const char *name, size_t len) {
    uint64_t h = hash_bytes(name, len);
    ts_entity_map *e = htab_get(&m->ents, h, name, len);
    if (e) return e;
    lua_State *L = m->L;
    int rc = call_lua(m, "entity", name, len);
    if (rc == -2) return &DEFERRED_ENT;
    e = rc < 0 ? &FAILED_ENT : &DROP_ENT;
    if (rc >= 0 && lua_istable(L, -1)) {
        e = arena_alloc(&m->arena, sizeof *e);
        memset(e, 0, sizeof *e);   /* the arena does not zero */
        e->keep = 1;
        build_tagset(m, lua_gettop(L), &e->tags);
        e->derive_id = ts_derive_bind_entity(m->derive, name, len);
    }
    if (rc >= 0) lua_pop(L, 1);
    htab_put(&m->ents, h, arena_strdup(&m->arena, name, len), len, e);
    return e;
}

int ts_mapper_sample_hook(ts_mapper *m, const ts_stat_map *st, double *value, const char *text, int64_t time_ms) {
    lua_State *L = m->L;
    if (poll_budget_spent(m)) return -2;
    ts_counter_add(c_hook_calls, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->hook_ref);
    lua_pushnumber(L, *value);
    lua_pushstring(L, text ? text : "");
    lua_pushinteger(L, time_ms);
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->ctx_ref);
    int64_t t0 = lua_clock_ns();
    int rc = ts_lua_pcall(L, 4, 1, "sample hook", m->budget);
    m->poll_spent_ns += lua_clock_ns() - t0;
    if (rc != 0) return -1;
    int keep = 0;
    if (lua_isnumber(L, -1)) {
        *value = lua_tonumber(L, -1);
        keep = isfinite(*value);
    }
    lua_pop(L, 1);
    return keep ? 0 : -1;
}
