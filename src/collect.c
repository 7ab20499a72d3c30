/* Collection (C side of the C/Lua line): the plan that lua/plan.lua builds
 * from Traffic Ops says which endpoints to poll on which monitors and with
 * which mapping; here every endpoint is fetched concurrently on the loop, its
 * body streamed through the TM scanner into a compact batch, and the batch
 * handed on only when the whole payload parsed. Any failure (transport,
 * timeout, non-2xx, unparsable body) moves to the endpoint's next monitor. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "ts_core.h"
#include "ts_derive.h"
#include "ts_log.h"
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
    /* the fetch in progress */
    int busy;
    int url_idx;
    ts_scan *scan;
    ts_batch *batch;
    ts_buf body;            /* FMT_LUA only */
    uint64_t bytes;
    int too_big;
    int64_t cutoff_ms;      /* samples older than this are skipped */
    uint64_t n_points;
    char scan_err[200];
    size_t last_points, last_runs;   /* the last poll's batch, for the next one's size */
    ts_derive *derive;      /* derived metrics: the engine of this plan and this endpoint's state */
    ts_derive_ep *dst;
    int dst_on;             /* this fetch feeds dst */
} endpoint;

struct ts_collector {
    lua_State *L;
    ts_loop *loop;
    ts_emit_fn emit;
    void *emit_ud;
    ts_batch_source_fn batch_source;
    void *batch_source_ud;
    endpoint **eps;
    int neps;
    endpoint **retired;
    int nretired;
    int busy;
    int closing;            /* shutting down: no failover, no new fetches */
    ts_collect_stats st;
    ts_derive *derive;      /* for the next plan's endpoints */
    double timeout_s, connect_timeout_s;
    int gzip, zero_non_numeric;
    int64_t max_age_ms;
    uint64_t max_payload;
};

static ts_counter *c_ok, *c_fail, *c_points, *c_nonnum, *c_old, *c_notime, *c_timeslot;

ts_collector *ts_collector_new(lua_State *L, ts_loop *loop, ts_emit_fn emit, void *emit_ud) {
    if (!c_ok) {
        c_ok = ts_counter_get("collect_fetch_ok");
        c_fail = ts_counter_get("collect_fetch_failed");
        c_points = ts_counter_get("collect_points");
        c_nonnum = ts_counter_get("collect_skipped_non_numeric");
        c_old = ts_counter_get("collect_skipped_old");
        c_notime = ts_counter_get("collect_skipped_no_time");
        c_timeslot = ts_counter_get("collect_timeslots_skipped");
    }
    ts_collector *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->L = L;
    c->loop = loop;
    c->emit = emit;
    c->emit_ud = emit_ud;
    return c;
}

void ts_collector_set_batch_source(ts_collector *c, ts_batch_source_fn fn, void *ud) {
    c->batch_source = fn;
    c->batch_source_ud = ud;
}

static ts_batch *new_batch(endpoint *e) {
    ts_collector *c = e->c;
    const ts_map_owner *owner = ts_mapper_owner(e->mapper);
    if (c->batch_source) return c->batch_source(c->batch_source_ud, &e->dest, owner, e->last_points, e->last_runs);
    ts_batch *b = ts_batch_new_compact(&e->dest, owner);
    ts_batch_reserve(b, e->last_points, e->last_runs);
    return b;
}

static void endpoint_free(endpoint *e) {
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
    char *r = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

/* Reads one plan endpoint (table at index t). NULL when malformed (logged). */
static endpoint *endpoint_from_lua(ts_collector *c, int t, int plan_index) {
    lua_State *L = c->L;
    endpoint *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->c = c;
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
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) == LUA_TSTRING) e->urls[e->nurls++] = strdup(lua_tostring(L, -1));
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
    int ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    char label[160];
    snprintf(label, sizeof label, "%s [%s %s]", e->mapping, e->cdn, e->name);
    e->mapper = ts_mapper_new(L, e->mapping, ctx_ref, label);
    if (!e->mapper) {
        luaL_unref(L, LUA_REGISTRYINDEX, ctx_ref);
        ts_error("plan endpoint %s %s: mapping '%s' could not be loaded; endpoint ignored", e->cdn, e->name, e->mapping);
        endpoint_free(e);
        return NULL;
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
    c->retired = realloc(c->retired, sizeof(endpoint *) * (size_t)(c->nretired + 1));
    c->retired[c->nretired++] = e;
}

int ts_collector_set_plan(ts_collector *c, int plan_index) {
    lua_State *L = c->L;
    plan_index = lua_absindex(L, plan_index);
    if (!lua_istable(L, plan_index)) { ts_error("plan is not a table; keeping the previous plan"); return -1; }
    lua_getfield(L, plan_index, "endpoints");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); ts_error("plan has no endpoints table; keeping the previous plan"); return -1; }
    int n = (int)luaL_len(L, -1);
    endpoint **eps = calloc((size_t)(n ? n : 1), sizeof *eps);
    int k = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_istable(L, -1)) {
            endpoint *e = endpoint_from_lua(c, lua_gettop(L), plan_index);
            if (e) eps[k++] = e;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    for (int i = 0; i < c->neps; i++) retire(c, c->eps[i]);
    free(c->eps);
    c->eps = eps;
    c->neps = k;
    c->timeout_s = ts_cfg_num(L, "collect.timeout", 10);
    c->connect_timeout_s = ts_cfg_num(L, "collect.connect_timeout", 3);
    c->gzip = ts_cfg_bool(L, "collect.gzip", 0);
    char buf[16];
    c->zero_non_numeric = strcmp(ts_cfg_str(L, "collect.non_numeric", "skip", buf, sizeof buf), "zero") == 0;
    c->max_age_ms = ts_cfg_int(L, "collect.max_sample_age", 86400) * 1000;
    c->max_payload = (uint64_t)ts_cfg_int(L, "collect.max_payload_bytes", 1LL << 30);
    return k;
}

/* ---- scanner sink: the per-sample path, no Lua unless a hook asked ------- */
static void *sink_entity(void *ud, const char *name, size_t len) {
    endpoint *e = ud;
    const ts_entity_map *m = ts_mapper_entity(e->mapper, name, len);
    return m->keep ? (void *)m : NULL;
}

static void *sink_stat(void *ud, void *ent, const char *name, size_t len) {
    (void)ent;
    endpoint *e = ud;
    const ts_stat_map *m = ts_mapper_stat(e->mapper, name, len);
    return m->keep ? (void *)m : NULL;
}

static void sink_sample(void *ud, void *ent, void *stat, const char *val, size_t vlen, int kind, int64_t time_ms, int has_time) {
    endpoint *e = ud;
    ts_collector *c = e->c;
    ts_cpoint p;
    switch (ts_mapper_sample(e->mapper, stat, ent, val, vlen, kind, time_ms, has_time, e->cutoff_ms,
                             c->zero_non_numeric, &p)) {
    case TS_SAMPLE_OK:
        ts_batch_add_compact(e->batch, &p);
        e->n_points++;
        if (p.stat->derive && e->dst_on) ts_derive_sample(e->dst, &p);
        break;
    case TS_SAMPLE_NO_TIME: c->st.skipped_no_time++; ts_counter_add(c_notime, 1); break;
    case TS_SAMPLE_OLD: c->st.skipped_old++; ts_counter_add(c_old, 1); break;
    case TS_SAMPLE_NON_NUMERIC: c->st.skipped_non_numeric++; ts_counter_add(c_nonnum, 1); break;
    default: break;   /* the script's hook dropped it */
    }
}

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

/* FMT_LUA: M.payload(body, ctx) -> points, written as text lines. */
static ts_batch *lua_payload_batch(endpoint *e) {
    lua_State *L = e->c->L;
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "_map_payload");
    lua_remove(L, -2);
    lua_pushstring(L, e->mapping);
    lua_pushlstring(L, e->body.data ? e->body.data : "", e->body.len);
    lua_pushstring(L, e->cdn);
    lua_pushstring(L, e->name);
    lua_pushstring(L, ts_precision_name(e->dest.precision));
    if (ts_lua_pcall(L, 5, 2, e->mapping, 0) != 0) return NULL;
    ts_batch *b = NULL;
    if (lua_type(L, -2) == LUA_TSTRING) {
        size_t len;
        const char *body = lua_tolstring(L, -2, &len);
        b = ts_batch_new_text(&e->dest);
        const char *p = body, *end = body + len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (l) { ts_batch_add_line(b, p, l); e->n_points++; }
            p += l + 1;
        }
    }
    lua_pop(L, 2);
    return b;
}

static void finish_fetch(endpoint *e, int ok) {
    ts_collector *c = e->c;
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
        ts_warn("failed to get %s %s from %s: %s", e->cdn, e->name, url, why);
        if (e->batch) { ts_batch_free(e->batch); e->batch = NULL; }
        if (e->url_idx + 1 < e->nurls && !e->retired && !c->closing) {
            e->url_idx++;
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
    size_t np = ts_batch_points(b);
    if (e->format != FMT_LUA) {
        e->last_points = np;
        e->last_runs = ts_batch_runs(b);
    }
    c->st.points += np;
    c->st.bytes += e->bytes;
    ts_counter_add(c_points, (int64_t)np);
    ts_info("Collected %zu %s values for %s @ %lld", np,
            e->format == FMT_CACHESTATS ? "cache stats" : e->format == FMT_DSSTATS ? "deliveryservice stats" : e->name,
            e->cdn, (long long)(ts_now_ms() / 1000));
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
        e->cutoff_ms = ts_now_ms() - c->max_age_ms;
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
        ts_warn("failed to get %s %s from %s: request could not be started", e->cdn, e->name, req.url);
        if (e->scan) { ts_scan_free(e->scan); e->scan = NULL; }
        if (e->batch) { ts_batch_free(e->batch); e->batch = NULL; }
        if (e->dst_on) { e->dst_on = 0; ts_derive_abort(e->dst); }
        if (e->url_idx + 1 >= e->nurls) { finish_fetch(e, 0); return; }
        e->busy = 0;
        c->busy--;
        e->url_idx++;
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
        e->url_idx = 0;
        start_fetch(e);
    }
}

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
