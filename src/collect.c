/* Collection (C side of the C/Lua line): the plan that lua/plan.lua builds
 * from Traffic Ops says which endpoints to poll on which monitors and with
 * which mapping; here every endpoint is fetched concurrently on the loop, its
 * body streamed through the TM scanner into a compact batch, and the batch
 * handed on only when the whole payload parsed. Any failure (transport,
 * timeout, non-2xx, unparsable body) moves to the endpoint's next monitor.
 * The per-sample policy (age cutoff, non-numeric values) lives here too;
 * mapping.c only caches Lua's answers. */
#include "ts_collect.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_api.h"
#include "ts_config.h"
#include "ts_derive.h"
#include "ts_log.h"
#include "ts_lua.h"
#include "ts_metrics.h"
#include "ts_scan.h"

enum { FMT_CACHESTATS, FMT_DSSTATS, FMT_LUA };

typedef struct endpoint {
    struct ts_collector *c;
    char *cdn, *name, *mapping;
    int format;
    char **urls;
    int nurls;
    ts_dest dest;
    ts_mapper *mapper;
    int retired;            /* replaced by a newer plan; freed when idle */
    int payload_ref;        /* FMT_LUA: the module's payload function (registry), resolved once per plan */
    int payload_ctx_ref;    /* FMT_LUA: the ctx table it is called with */
    /* the fetch in progress */
    int busy;
    int url_idx;
    int tried;              /* monitors tried in this timeslot */
    int good_idx;           /* the monitor that answered last: the next poll starts there */
    ts_scan *scan;
    ts_batch *batch;
    ts_buf body;            /* FMT_LUA only */
    uint64_t bytes;
    int too_big;
    ts_sample_policy pol;
    uint64_t n_points;
    uint64_t n_lost;        /* samples of this fetch lost to mapping errors */
    uint64_t n_deferred;    /* samples whose mapping waits for the next poll's Lua budget */
    int64_t deferred_warned;
    int64_t lost_warned;    /* mono ms of the last warning about them */
    ts_counter *c_lost;     /* mapping_samples_lost.<module> */
    char scan_err[200];
    size_t last_points, last_runs;   /* the last poll's batch, for the next one's size */
    ts_derive *derive;      /* derived metrics: the engine of this plan and this endpoint's state */
    ts_derive_ep *dst;
    int dst_on;             /* this fetch feeds dst */
    /* for the metrics: this fetch's start, monitors failed, last failure, points */
    int64_t t0_ms;
    int fails;
    char last_err[300];
    uint64_t got_points;
} endpoint;

struct ts_collector {
    lua_State *L;
    ts_loop *loop;
    ts_emit_fn emit;
    void *emit_ud;
    ts_batch_pool *pool;     /* spares of batches the writer has sent; may be NULL */
    endpoint **eps;
    int neps;
    endpoint **retired;
    int nretired;
    int busy;
    int closing;            /* shutting down: no failover, no new fetches */
    ts_metrics *metrics;    /* may be NULL */
    ts_collect_stats st;
    ts_derive *derive;      /* for the next plan's endpoints */
    /* collect.* of the settings at the last plan */
    double timeout_s, connect_timeout_s;
    int gzip, zero_non_numeric;
    int64_t max_age_ms;
    uint64_t max_payload;
};

static ts_counter *c_ok, *c_fail, *c_points, *c_nonnum, *c_old, *c_notime, *c_timeslot, *c_lost_all, *c_deferred;

ts_collector *ts_collector_new(lua_State *L, ts_loop *loop, ts_emit_fn emit, void *emit_ud) {
    if (!c_ok) {
        c_ok = ts_counter_get("collect_fetch_ok");
        c_fail = ts_counter_get("collect_fetch_failed");
        c_points = ts_counter_get("collect_points");
        c_nonnum = ts_counter_get("collect_skipped_non_numeric");
        c_old = ts_counter_get("collect_skipped_old");
        c_notime = ts_counter_get("collect_skipped_no_time");
        c_timeslot = ts_counter_get("collect_timeslots_skipped");
        c_lost_all = ts_counter_get("mapping_samples_lost");
        c_deferred = ts_counter_get("mapping_samples_deferred");
    }
    ts_collector *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->L = L;
    c->loop = loop;
    c->emit = emit;
    c->emit_ud = emit_ud;
    return c;
}

void ts_collector_set_batch_pool(ts_collector *c, ts_batch_pool *pool) { c->pool = pool; }

/* Sized from the endpoint's last poll, on a spare's arrays when the pool has one. */
static ts_batch *new_batch(endpoint *e) {
    return ts_batch_pool_get(e->c->pool, &e->dest, ts_mapper_owner(e->mapper), e->last_points, e->last_runs);
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

static void endpoint_free(endpoint *e) {
    luaL_unref(e->c->L, LUA_REGISTRYINDEX, e->payload_ref);
    luaL_unref(e->c->L, LUA_REGISTRYINDEX, e->payload_ctx_ref);
    if (e->scan) ts_scan_free(e->scan);
    if (e->batch) ts_batch_free(e->batch);
    ts_buf_free(&e->body);
    if (e->dst_on) ts_derive_abort(e->dst);
    ts_mapper_release(e->mapper);
    ts_derive_release(e->derive);
    for (int i = 0; i < e->nurls; i++) free(e->urls[i]);
    free(e->urls);
    free(e->cdn);
    free(e->name);
    free(e->mapping);
    free(e);
}

static char *field_dup(lua_State *L, int t, const char *k, const char *def) {
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : def;
    char *r = s ? xstrdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

/* Reads one plan endpoint (table at index t). NULL when malformed (logged). */
static endpoint *endpoint_from_lua(ts_collector *c, int t, int plan_index, int *mapping_failed) {
    lua_State *L = c->L;
    endpoint *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->c = c;
    e->payload_ref = e->payload_ctx_ref = LUA_NOREF;
    e->cdn = field_dup(L, t, "cdn", "");
    e->name = field_dup(L, t, "name", "endpoint");
    e->mapping = field_dup(L, t, "mapping", NULL);
    char *fmt = field_dup(L, t, "format", "tm_cachestats");
    e->format = strcmp(fmt, "tm_dsstats") == 0 ? FMT_DSSTATS : strcmp(fmt, "lua") == 0 ? FMT_LUA : FMT_CACHESTATS;
    int bad_fmt = strcmp(fmt, "tm_cachestats") && strcmp(fmt, "tm_dsstats") && strcmp(fmt, "lua");
    free(fmt);
    char *db = field_dup(L, t, "db", NULL), *rp = field_dup(L, t, "rp", ""), *prec = field_dup(L, t, "precision", "ms");
    if (db) snprintf(e->dest.db, sizeof e->dest.db, "%s", db);
    snprintf(e->dest.rp, sizeof e->dest.rp, "%s", rp ? rp : "");
    int bad_prec = ts_precision_parse(prec, &e->dest.precision) != 0 || e->dest.precision == TS_PREC_NS || e->dest.precision == TS_PREC_US;
    free(db); free(rp); free(prec);
    lua_getfield(L, t, "urls");
    int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
    e->urls = calloc((size_t)(n ? n : 1), sizeof(char *));
    if (!e->urls) abort();
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) == LUA_TSTRING) e->urls[e->nurls++] = xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    const char *why = !e->mapping ? "no mapping" : !e->dest.db[0] ? "no db" : !e->nurls ? "no urls"
                    : bad_fmt ? "unknown format" : bad_prec ? "precision must be ms, s, m or h" : NULL;
    if (why) {
        ts_error("plan endpoint %d (%s %s): %s; endpoint ignored", plan_index, e->cdn, e->name, why);
        endpoint_free(e);
        return NULL;
    }
    /* ctx = {cdn=, endpoint=, servers=plan.servers, config=tstats.config} */
    lua_createtable(L, 0, 4);
    lua_pushstring(L, e->cdn);
    lua_setfield(L, -2, "cdn");
    lua_pushstring(L, e->name);
    lua_setfield(L, -2, "endpoint");
    lua_getfield(L, plan_index, "servers");
    lua_setfield(L, -2, "servers");
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "config");
    lua_setfield(L, -3, "config");
    lua_pop(L, 1);
    lua_getfield(L, t, "ctx");              /* extra per-endpoint context from the plan */
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) { lua_pushvalue(L, -2); lua_insert(L, -2); lua_settable(L, -5); }
    }
    lua_pop(L, 1);
    if (e->format == FMT_LUA) {
        lua_pushvalue(L, -1);
        e->payload_ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    int ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    char cname[200];
    snprintf(cname, sizeof cname, "mapping_samples_lost.%s", e->mapping);
    e->c_lost = ts_counter_get(cname);
    char label[160];
    snprintf(label, sizeof label, "%s [%s %s]", e->mapping, e->cdn, e->name);
    e->mapper = ts_mapper_new(L, e->mapping, ctx_ref, label);
    if (!e->mapper) {
        luaL_unref(L, LUA_REGISTRYINDEX, ctx_ref);
        ts_error("plan endpoint %s %s: mapping '%s' could not be loaded (the error above names file:line)", e->cdn,
                 e->name, e->mapping);
        *mapping_failed = 1;
        endpoint_free(e);
        return NULL;
    }
    if (e->format == FMT_LUA) {
        ts_mapper_push_module(e->mapper);
        lua_getfield(L, -1, "payload");
        if (lua_isfunction(L, -1)) e->payload_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else lua_pop(L, 1);
        lua_pop(L, 1);
        if (e->payload_ref == LUA_NOREF) {
            ts_error("plan endpoint %s %s: mapping '%s' has no payload(body, ctx) function (format = \"lua\")",
                     e->cdn, e->name, e->mapping);
            *mapping_failed = 1;
            endpoint_free(e);
            return NULL;
        }
    }
    if (c->derive && e->format != FMT_LUA && (e->dst = ts_derive_endpoint(c->derive, e->cdn, e->name, &e->dest))) {
        ts_derive_retain(e->derive = c->derive);
        ts_mapper_set_derive(e->mapper, e->dst);
    }
    return e;
}

void ts_collector_set_derive(ts_collector *c, ts_derive *d) {
    ts_derive_retain(d);
    ts_derive_release(c->derive);
    c->derive = d;
}

static void retire(ts_collector *c, endpoint *e) {
    if (!e->busy) { endpoint_free(e); return; }
    e->retired = 1;
    endpoint **r = realloc(c->retired, sizeof(endpoint *) * (size_t)(c->nretired + 1));
    if (!r) abort();
    c->retired = r;
    c->retired[c->nretired++] = e;
}

static int same_monitor(const char *a, const char *b) {
    size_t na = strcspn(a, "?"), nb = strcspn(b, "?");
    return na == nb && memcmp(a, b, na) == 0;
}

/* A new plan (refresh, SIGHUP) keeps starting where the old one found an
 * answer, if that monitor is still listed for the endpoint. */
static void keep_good_monitor(ts_collector *c, endpoint *e) {
    for (int i = 0; i < c->neps; i++) {
        endpoint *o = c->eps[i];
        if (!o) continue;
        if (strcmp(o->cdn, e->cdn) != 0 || strcmp(o->name, e->name) != 0 || o->good_idx >= o->nurls) continue;
        for (int j = 0; j < e->nurls; j++)
            if (same_monitor(e->urls[j], o->urls[o->good_idx])) e->good_idx = j;
        return;
    }
}

/* A new plan whose mapping for an endpoint does not load (a SIGHUP with a
 * broken script): the running endpoint, with the mapping it has, goes on
 * rather than the endpoint stopping. Takes it out of c->eps. */
static endpoint *take_running(ts_collector *c, int t) {
    lua_State *L = c->L;
    char *cdn = field_dup(L, t, "cdn", ""), *name = field_dup(L, t, "name", "endpoint");
    endpoint *found = NULL;
    for (int i = 0; i < c->neps && !found; i++) {
        endpoint *o = c->eps[i];
        if (o && strcmp(o->cdn, cdn) == 0 && strcmp(o->name, name) == 0) {
            found = o;
            c->eps[i] = NULL;
            ts_error("plan endpoint %s %s: keeping the mapping '%s' that is running until one loads", cdn, name,
                     o->mapping);
        }
    }
    free(cdn);
    free(name);
    return found;
}

int ts_collector_set_plan(ts_collector *c, int plan_index) {
    lua_State *L = c->L;
    plan_index = lua_absindex(L, plan_index);
    if (!lua_istable(L, plan_index)) { ts_error("plan is not a table; keeping the previous plan"); return -1; }
    lua_getfield(L, plan_index, "endpoints");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); ts_error("plan has no endpoints table; keeping the previous plan"); return -1; }
    int n = (int)luaL_len(L, -1);
    endpoint **eps = calloc((size_t)(n ? n : 1), sizeof *eps);
    if (!eps) abort();
    int k = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_istable(L, -1)) {
            int mapping_failed = 0;
            endpoint *e = endpoint_from_lua(c, lua_gettop(L), plan_index, &mapping_failed);
            if (!e && mapping_failed) e = take_running(c, lua_gettop(L));
            if (e) eps[k++] = e;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    for (int i = 0; i < k; i++) keep_good_monitor(c, eps[i]);
    for (int i = 0; i < c->neps; i++)
        if (c->eps[i]) retire(c, c->eps[i]);
    free(c->eps);
    c->eps = eps;
    c->neps = k;
    const ts_settings *s = ts_config_settings(L);
    c->timeout_s = s->collect.timeout;
    c->connect_timeout_s = s->collect.connect_timeout;
    c->gzip = s->collect.gzip;
    c->zero_non_numeric = s->collect.non_numeric && strcmp(s->collect.non_numeric, "zero") == 0;
    c->max_age_ms = s->collect.max_sample_age * 1000;
    c->max_payload = (uint64_t)s->collect.max_payload_bytes;
    if (c->metrics) {
        ts_metrics_plan_begin(c->metrics);
        for (int i = 0; i < k; i++) ts_metrics_plan_endpoint(c->metrics, eps[i]->cdn, eps[i]->name);
        ts_metrics_plan_end(c->metrics);
    }
    return k;
}

void ts_collector_set_max_age(ts_collector *c, int64_t ms) {
    c->max_age_ms = ms > 0 ? ms : INT64_MAX / 2;
}

/* ---- scanner sink: the per-sample path, no Lua unless a hook asked ------- */
/* Samples of an entity or stat whose mapping failed still reach
 * sink_sample, which counts them as lost: a broken mapping is never a silent
 * "Collected 0". What a mapping drops by choice is skipped unseen. */
static const ts_stat_map LOST_STAT = {.failed = TS_MAP_FAILED, .hook_ref = -2};
static const ts_stat_map DEFERRED_STAT = {.failed = TS_MAP_DEFERRED, .hook_ref = -2};

static void *sink_entity(void *ud, const char *name, size_t len) {
    endpoint *e = ud;
    const ts_entity_map *m = ts_mapper_entity(e->mapper, name, len);
    return m->keep || m->failed ? (void *)m : NULL;
}

static void *sink_stat(void *ud, void *ent, const char *name, size_t len) {
    endpoint *e = ud;
    int f = ((const ts_entity_map *)ent)->failed;
    if (f) return (void *)(f == TS_MAP_DEFERRED ? &DEFERRED_STAT : &LOST_STAT);
    const ts_stat_map *m = ts_mapper_stat(e->mapper, name, len);
    return m->keep || m->failed ? (void *)m : NULL;
}

static void sink_sample(void *ud, void *ent, void *stat, const char *val, size_t vlen, int kind, int64_t time_ms, int has_time) {
    endpoint *e = ud;
    ts_collector *c = e->c;
    int f = ((const ts_stat_map *)stat)->failed;
    if (f) {
        if (f == TS_MAP_DEFERRED) e->n_deferred++; else e->n_lost++;
        return;
    }
    ts_cpoint p;
    ts_raw_sample s = {val, vlen, kind, time_ms, has_time};
    switch (ts_collect_sample(e->mapper, &e->pol, stat, ent, &s, &p)) {
    case TS_SAMPLE_OK:
        ts_batch_add_compact(e->batch, &p);
        e->n_points++;
        if (p.stat->derive && e->dst_on) ts_derive_sample(e->dst, &p);
        break;
    case TS_SAMPLE_NO_TIME: c->st.skipped_no_time++; ts_counter_add(c_notime, 1); break;
    case TS_SAMPLE_OLD: c->st.skipped_old++; ts_counter_add(c_old, 1); break;
    case TS_SAMPLE_NON_NUMERIC: c->st.skipped_non_numeric++; ts_counter_add(c_nonnum, 1); break;
    case TS_SAMPLE_DEFERRED: e->n_deferred++; break;
    default: break;   /* the script's hook dropped it */
    }
}

int ts_collect_sample(ts_mapper *m, const ts_sample_policy *pol, const ts_stat_map *st, const ts_entity_map *ent,
                      const ts_raw_sample *s, ts_cpoint *out) {
    if (!s->has_time) return TS_SAMPLE_NO_TIME;
    if (s->time_ms < pol->cutoff_ms) return TS_SAMPLE_OLD;
    double v;
    if (s->kind == TS_VAL_OTHER || !ts_parse_number(s->val, s->len, &v)) {
        if (!pol->zero_non_numeric) return TS_SAMPLE_NON_NUMERIC;
        v = 0.0;
    }
    if (st->hook_ref != LUA_NOREF) {
        int h = ts_mapper_sample_hook(m, st, &v, s->val, s->time_ms);
        if (h == -2) return TS_SAMPLE_DEFERRED;
        if (h != 0) return TS_SAMPLE_HOOK_DROP;
    }
    out->stat = st;
    out->ent = ent;
    out->value = v;
    out->time_ms = s->time_ms;
    return TS_SAMPLE_OK;
}

/* ---- fetching ---- */
static void start_fetch(endpoint *e);

static int on_data(void *ud, const char *p, size_t n) {
    endpoint *e = ud;
    e->bytes += n;
    if (e->bytes > e->c->max_payload) { e->too_big = 1; return 1; }
    if (e->format == FMT_LUA) { ts_buf_add(&e->body, p, n); return 0; }
    if (ts_scan_feed(e->scan, p, n) != 0) {
        snprintf(e->scan_err, sizeof e->scan_err, "%s", ts_scan_error(e->scan));
        return 1;
    }
    return 0;
}

/* FMT_LUA: M.payload(body, ctx) -> points, encoded by C straight into a
 * text batch (no line-protocol string passes through Lua). */
static ts_batch *lua_payload_batch(endpoint *e) {
    lua_State *L = e->c->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->payload_ref);
    lua_pushlstring(L, e->body.data ? e->body.data : "", e->body.len);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->payload_ctx_ref);
    if (ts_lua_pcall(L, 2, 1, e->mapping, 0) != 0) return NULL;
    ts_batch *b = ts_batch_new_text(&e->dest);
    if (lua_istable(L, -1)) {
        lua_newtable(L);
        size_t n = ts_api_encode_points(L, -2, e->dest.precision, ts_batch_text_buf(b), -1);
        ts_batch_text_commit(b, n);
        e->n_points += n;
        lua_Integer nerr = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= nerr; i++) {
            lua_rawgeti(L, -1, i);
            ts_warn("%s: %s", e->mapping, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    } else if (!lua_isnil(L, -1)) {
        ts_warn("%s: payload() returned a %s, not a list of points", e->mapping, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return b;
}

/* One event per fetch, after every monitor it tried: what the listener reports. */
static void report_fetch(endpoint *e, int ok) {
    ts_poll_event ev = {
        .cdn = e->cdn, .endpoint = e->name, .monitor = e->nurls ? e->urls[e->url_idx] : "", .ok = ok,
        .failovers = ok ? e->fails : (e->fails > 0 ? e->fails - 1 : 0), .points = ok ? e->got_points : 0,
        .bytes = e->bytes, .duration_ms = ts_mono_ms() - e->t0_ms, .db = e->dest.db, .rp = e->dest.rp,
        .error = ok ? NULL : (e->last_err[0] ? e->last_err : "request could not be started"),
    };
    ts_metrics_poll_done(e->c->metrics, &ev);
}

static void finish_fetch(endpoint *e, int ok) {
    ts_collector *c = e->c;
    if (c->metrics) report_fetch(e, ok);
    e->busy = 0;
    c->busy--;
    if (e->scan) { ts_scan_free(e->scan); e->scan = NULL; }
    ts_buf_free(&e->body);
    if (ok) {
        c->st.endpoints_ok++;
        ts_counter_add(c_ok, 1);
    } else {
        c->st.endpoints_failed++;
        ts_counter_add(c_fail, 1);
        ts_counter_add(c_timeslot, 1);
        ts_error("unable to get any %s %s URL - skipping timeslot", e->cdn, e->name);
    }
    if (e->retired) {
        for (int i = 0; i < c->nretired; i++)
            if (c->retired[i] == e) { c->retired[i] = c->retired[--c->nretired]; break; }
        endpoint_free(e);
    }
}

/* Failover goes round the monitor list from the one the poll started with. */
static void next_monitor(endpoint *e) {
    e->url_idx = (e->url_idx + 1) % e->nurls;
    e->tried++;
}

/* The reason first; the URL without its query (Traffic Ops' stats= list
 * makes it kilobytes long). */
static void log_fetch_failure(endpoint *e, const char *why) {
    const char *url = e->urls[e->url_idx];
    const char *q = strchr(url, '?');
    int n = q ? (int)(q - url) : (int)strlen(url);
    ts_warn("failed to get %s %s: %s (monitor %d of %d: %.*s%s)%s", e->cdn, e->name, why, e->tried, e->nurls, n, url,
            q ? "?..." : "", e->tried < e->nurls ? "; trying the next" : "");
    e->fails++;
    snprintf(e->last_err, sizeof e->last_err, "%.*s: %s", n, url, why);
}

static void on_done(void *ud, ts_http_result *r) {
    endpoint *e = ud;
    ts_collector *c = e->c;
    const char *url = e->urls[e->url_idx];
    char why[300] = "";
    if (e->too_big) snprintf(why, sizeof why, "answer larger than collect.max_payload_bytes (%llu)", (unsigned long long)c->max_payload);
    else if (r->status && (r->status < 200 || r->status > 299)) snprintf(why, sizeof why, "HTTP %ld", r->status);
    else if (e->scan_err[0]) snprintf(why, sizeof why, "unparsable body: %s", e->scan_err);
    else if (r->curl_code) snprintf(why, sizeof why, "%s", r->errmsg[0] ? r->errmsg : "transfer failed");
    else if (e->scan && ts_scan_finish(e->scan) != 0) snprintf(why, sizeof why, "unparsable body: %s", ts_scan_error(e->scan));
    ts_batch *b = NULL;
    if (!why[0]) {
        if (e->format == FMT_LUA) {
            b = lua_payload_batch(e);
            if (!b) snprintf(why, sizeof why, "mapping '%s' failed on the payload", e->mapping);
        } else {
            b = e->batch;
            e->batch = NULL;
        }
    }
    if (why[0]) {
        log_fetch_failure(e, why);
        if (e->batch) { ts_batch_free(e->batch); e->batch = NULL; }
        if (e->tried < e->nurls && !e->retired && !c->closing) {
            next_monitor(e);
            e->c->busy--;      /* start_fetch counts it again */
            e->busy = 0;
            if (e->scan) { ts_scan_free(e->scan); e->scan = NULL; }
            ts_buf_free(&e->body);
            start_fetch(e);
            return;
        }
        if (e->dst_on) { e->dst_on = 0; ts_derive_abort(e->dst); }
        finish_fetch(e, 0);
        return;
    }
    ts_debug("successfully got %s stats URL %s", e->cdn, url);
    e->good_idx = e->url_idx;
    size_t np = ts_batch_points(b);
    if (e->format != FMT_LUA) {
        e->last_points = np;
        e->last_runs = ts_batch_runs(b);
    }
    c->st.points += np;
    c->st.bytes += e->bytes;
    e->got_points = np;
    ts_counter_add(c_points, (int64_t)np);
    const char *what =
        e->format == FMT_CACHESTATS ? "cache stats" : e->format == FMT_DSSTATS ? "deliveryservice stats" : e->name;
    if (e->n_deferred) {
        c->st.samples_deferred += e->n_deferred;
        ts_counter_add(c_deferred, (int64_t)e->n_deferred);
        int64_t now = ts_mono_ms();
        if (!e->deferred_warned || now - e->deferred_warned >= 60000) {
            e->deferred_warned = now;
            ts_warn("mapping '%s' [%s %s]: its Lua budget for this poll (lua.poll_budget_ms) is spent; %llu samples "
                    "of names not mapped yet were skipped and their names wait for the next poll (at most once a "
                    "minute; counter mapping_samples_deferred)", e->mapping, e->cdn, e->name,
                    (unsigned long long)e->n_deferred);
        }
    }
    if (e->n_lost || e->n_deferred) {
        c->st.samples_lost += e->n_lost;
        ts_counter_add(e->c_lost, (int64_t)e->n_lost);
        ts_counter_add(c_lost_all, (int64_t)e->n_lost);
        char lost[64] = "", deferred[64] = "";
        if (e->n_lost) snprintf(lost, sizeof lost, "%llu lost to mapping errors", (unsigned long long)e->n_lost);
        if (e->n_deferred)
            snprintf(deferred, sizeof deferred, "%llu deferred to the next poll", (unsigned long long)e->n_deferred);
        ts_info("Collected %zu %s values for %s @ %lld (%s%s%s)", np, what, e->cdn, (long long)(ts_now_ms() / 1000),
                lost, lost[0] && deferred[0] ? ", " : "", deferred);
        int64_t now = ts_mono_ms();
        if (e->n_lost && (!e->lost_warned || now - e->lost_warned >= 60000)) {
            e->lost_warned = now;
            ts_warn("mapping '%s' [%s %s]: %llu samples of this poll were lost because the mapping failed for "
                    "their stat or entity (its errors are logged once per name per plan; this warning at most once "
                    "a minute; counter mapping_samples_lost.%s)", e->mapping, e->cdn, e->name,
                    (unsigned long long)e->n_lost, e->mapping);
        }
    } else {
        ts_info("Collected %zu %s values for %s @ %lld", np, what, e->cdn, (long long)(ts_now_ms() / 1000));
    }
    /* A retired endpoint's last poll still counts: its mapper lives on in the batch. */
    if (np > 0 && !c->closing) c->emit(c->emit_ud, b);
    else ts_batch_free(b);
    if (e->dst_on) { e->dst_on = 0; ts_derive_finish(e->dst, c->closing ? NULL : c->emit, c->emit_ud); }
    finish_fetch(e, 1);
}

static void start_fetch(endpoint *e) {
    ts_collector *c = e->c;
    static const ts_scan_sink sink_proto = {sink_entity, sink_stat, sink_sample, NULL};
    for (;;) {
        e->bytes = 0;
        e->too_big = 0;
        e->scan_err[0] = '\0';
        e->n_points = 0;
        e->n_lost = 0;
        e->n_deferred = 0;
        e->pol.cutoff_ms = ts_now_ms() - c->max_age_ms;
        e->pol.zero_non_numeric = c->zero_non_numeric;
        if (e->format != FMT_LUA) {
            ts_scan_sink sink = sink_proto;
            sink.ud = e;
            e->scan = ts_scan_new(e->format == FMT_DSSTATS ? TS_SCAN_DSSTATS : TS_SCAN_CACHESTATS, &sink);
            e->batch = new_batch(e);
            e->dst_on = e->dst && ts_derive_begin(e->dst, e) == 0;
        }
        ts_http_req req;
        memset(&req, 0, sizeof req);
        req.url = e->urls[e->url_idx];
        req.opts.timeout_ms = (long)(c->timeout_s * 1000);
        req.opts.connect_timeout_ms = (long)(c->connect_timeout_s * 1000);
        req.opts.accept_gzip = c->gzip;
        req.on_data = on_data;
        req.on_done = on_done;
        req.ud = e;
        e->busy = 1;
        c->busy++;
        if (ts_http_start(c->loop, &req) == 0) return;
        log_fetch_failure(e, "request could not be started");
        if (e->scan) { ts_scan_free(e->scan); e->scan = NULL; }
        if (e->batch) { ts_batch_free(e->batch); e->batch = NULL; }
        if (e->dst_on) { e->dst_on = 0; ts_derive_abort(e->dst); }
        if (e->tried >= e->nurls) { finish_fetch(e, 0); return; }
        e->busy = 0;
        c->busy--;
        next_monitor(e);
    }
}

void ts_collector_poll(ts_collector *c) {
    if (c->closing) return;
    c->st.polls++;
    for (int i = 0; i < c->neps; i++) {
        endpoint *e = c->eps[i];
        if (e->busy) {
            /* Still fetching the previous timeslot (a slow monitor): skip, do not pile up. */
            ts_warn("%s %s: previous poll still running; skipping this timeslot", e->cdn, e->name);
            ts_counter_add(c_timeslot, 1);
            continue;
        }
        e->url_idx = e->good_idx < e->nurls ? e->good_idx : 0;
        e->tried = 1;
        ts_mapper_begin_poll(e->mapper);
        e->t0_ms = ts_mono_ms();
        e->fails = 0;
        e->last_err[0] = '\0';
        e->got_points = 0;
        start_fetch(e);
    }
}

void ts_collector_set_metrics(ts_collector *c, ts_metrics *m) { c->metrics = m; }

int ts_collector_busy(const ts_collector *c) { return c->busy; }

void ts_collector_get_stats(const ts_collector *c, ts_collect_stats *s) {
    *s = c->st;
    s->lua_calls = 0;
    for (int i = 0; i < c->neps; i++) s->lua_calls += ts_mapper_lua_calls(c->eps[i]->mapper);
}

void ts_collector_close(ts_collector *c) { c->closing = 1; }

/* Call after ts_loop_free(): aborted fetches have finished by then. */
void ts_collector_free(ts_collector *c) {
    if (!c) return;
    for (int i = 0; i < c->neps; i++) endpoint_free(c->eps[i]);
    for (int i = 0; i < c->nretired; i++) endpoint_free(c->retired[i]);
    free(c->eps);
    free(c->retired);
    ts_derive_release(c->derive);
    free(c);
}

/* Strict number grammar first: strtod alone would accept "nan", "inf" and
 * hex floats, none of which TM means as a stat value. Most TM values are
 * integers or short decimals ("12.500000", "2.62200722e+10"): with at most 15
 * significant digits and a power of ten up to 1e22 both operands are exact
 * doubles, so one multiplication or division is correctly rounded and equals
 * strtod's answer (Clinger's fast path); anything else goes to strtod. */
int ts_parse_number(const char *s, size_t n, double *out) {
    static const double p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    size_t i = 0;
    if (n == 0 || n > 64) return 0;
    int neg = 0;
    if (s[i] == '-' || s[i] == '+') { neg = s[i] == '-'; i++; }
    uint64_t m = 0;      /* significant digits, while they fit */
    int nsig = 0;        /* significant digits seen (leading zeros excluded) */
    int dropped = 0;     /* digits not kept in m */
    size_t d0 = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (nsig || s[i] != '0') {
            if (nsig < 19) m = m * 10 + (uint64_t)(s[i] - '0'); else dropped++;
            nsig++;
        }
        i++;
    }
    size_t nd = i - d0;
    int e10 = dropped;
    size_t frac = 0;
    if (i < n && s[i] == '.') {
        i++;
        size_t f0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (nsig || s[i] != '0') {
                if (nsig < 19) { m = m * 10 + (uint64_t)(s[i] - '0'); e10--; }
                nsig++;
            } else {
                e10--;
            }
            i++;
        }
        frac = i - f0;
    }
    if (nd + frac == 0) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        int eneg = 0;
        if (i < n && (s[i] == '+' || s[i] == '-')) { eneg = s[i] == '-'; i++; }
        size_t e0 = i;
        int ev = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (ev < 100000) ev = ev * 10 + (s[i] - '0');
            i++;
        }
        if (i == e0) return 0;
        e10 += eneg ? -ev : ev;
    }
    if (i != n) return 0;
    if (nsig <= 15 && !dropped && e10 >= -22 && e10 <= 22) {
        double v = (double)m;
        v = e10 >= 0 ? v * p10[e10] : v / p10[-e10];
        *out = neg ? -v : v;
        return 1;
    }
    char tmp[72];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    double v = strtod(tmp, NULL);
    if (!isfinite(v)) return 0;
    *out = v;
    return 1;
}
