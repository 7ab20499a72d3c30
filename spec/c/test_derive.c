/* C unit tests of the derived-metrics engine (ctest `derive`): definitions
 * compiled by lua/metrics.lua, bound to the real mapping caches (stock
 * lua/mappings), fed by the real scanner from generated Traffic Monitor
 * payloads, and the points they emit compared with values worked out by
 * hand: sums per group, filters, min/max/mean/count/last, a counter rate
 * across a reset, a gap and a repeat, a ratio, time windows, no Lua per poll. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_api.h"
#include "ts_collect.h"
#include "ts_config.h"
#include "ts_derive.h"
#include "ts_lua.h"
#include "ts_mapping.h"
#include "ts_log.h"
#include "ts_scan.h"

#include "check.h"

/* ---- a poll as the collector runs it ----------------------------------- */
typedef struct rig {
    lua_State *L;
    ts_derive *d;
    ts_derive_ep *ep;
    ts_mapper *m;
    ts_scan_kind kind;
    ts_buf out;          /* every derived line emitted, in order */
    size_t batches;
} rig;

static void *r_entity(void *ud, const char *n, size_t l) {
    const ts_entity_map *e = ts_mapper_entity(((rig *)ud)->m, n, l);
    return e->keep ? (void *)e : NULL;
}
static void *r_stat(void *ud, void *ent, const char *n, size_t l) {
    (void)ent;
    const ts_stat_map *s = ts_mapper_stat(((rig *)ud)->m, n, l);
    return s->keep ? (void *)s : NULL;
}
static void r_sample(void *ud, void *ent, void *st, const char *v, size_t vl, int kind, int64_t t, int has_t) {
    rig *r = ud;
    ts_cpoint cp;
    ts_sample_policy pol = {INT64_MIN, 0};
    ts_raw_sample s = {v, vl, kind, t, has_t};
    if (ts_collect_sample(r->m, &pol, st, ent, &s, &cp) != TS_SAMPLE_OK) return;
    if (cp.stat->derive) ts_derive_sample(r->ep, &cp);
}
static void r_emit(void *ud, ts_batch *b) {
    rig *r = ud;
    const ts_dest *d = ts_batch_dest(b);
    ts_buf_printf(&r->out, "# db=%s rp=%s\n", d->db, d->rp);
    ts_batch_encode(b, &r->out);
    r->batches++;
    ts_batch_free(b);
}

/* Definitions: a Lua chunk returning the `metrics` list; compiled as at start. */
static ts_derive *compile(lua_State *L, const char *defs, char *problems, size_t plen) {
    char src[4096];
    snprintf(src, sizeof src, "local list = (function() %s end)()\n"
                              "local c, p = require('metrics').compile(list, nil)\n"
                              "return c, require('metrics').format(p)\n", defs);
    if (luaL_loadstring(L, src) != LUA_OK || ts_lua_pcall(L, 0, 2, "compile", 0) != 0) {
        FAIL("compile chunk: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
        return NULL;
    }
    if (problems) snprintf(problems, plen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    ts_derive *d = NULL;
    if (lua_istable(L, -2)) {
        char err[256];
        d = ts_derive_new(L, -2, err, sizeof err);
        if (!d) printf("ts_derive_new: %s\n", err);
    }
    lua_pop(L, 2);
    return d;
}

static int make_ctx(lua_State *L, const char *cdn) {
    const char *src =
        "local cdn = ...\n"
        "local s = {}\n"
        "s['e1'] = {cacheGroup = 'cg1', type = 'EDGE'}\n"
        "s['e2'] = {cacheGroup = 'cg1', type = 'EDGE'}\n"
        "s['e3'] = {cacheGroup = 'cg2', type = 'EDGE'}\n"
        "s['m1'] = {cacheGroup = 'mid', type = 'MID'}\n"
        "return {cdn = cdn, servers = s}\n";
    if (luaL_loadstring(L, src) != LUA_OK) return LUA_NOREF;
    lua_pushstring(L, cdn);
    lua_call(L, 1, 1);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void rig_init(rig *r, lua_State *L, ts_derive *d, const char *module, ts_scan_kind kind, const char *endpoint) {
    memset(r, 0, sizeof *r);
    r->L = L;
    r->d = d;
    r->kind = kind;
    ts_buf_init(&r->out);
    ts_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    r->ep = ts_derive_endpoint(d, "cdn1", endpoint, &dest);
    r->m = ts_mapper_new(L, module, make_ctx(L, "cdn1"), module);
    if (r->ep) ts_mapper_set_derive(r->m, r->ep);
}

/* A new plan (Traffic Ops refresh): new mapper, same endpoint state. */
static void rig_replan(rig *r, const char *module) {
    ts_mapper_release(r->m);
    r->m = ts_mapper_new(r->L, module, make_ctx(r->L, "cdn1"), module);
    ts_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    r->ep = ts_derive_endpoint(r->d, "cdn1", "CacheStats", &dest);
    ts_mapper_set_derive(r->m, r->ep);
}

static void rig_free(rig *r) {
    ts_mapper_release(r->m);
    ts_buf_free(&r->out);
}

/* One poll of `json`; returns the number of derived points. */
static size_t poll(rig *r, const char *json) {
    ts_buf_reset(&r->out);
    if (r->out.data) r->out.data[0] = 0;
    CHECK(ts_derive_begin(r->ep, r) == 0, "begin");
    ts_scan_sink sink = {r_entity, r_stat, r_sample, r};
    ts_scan *s = ts_scan_new(r->kind, &sink);
    size_t len = strlen(json);
    for (size_t off = 0; off < len; off += 11) CHECK(ts_scan_feed(s, json + off, len - off < 11 ? len - off : 11) == 0, "feed: %s", ts_scan_error(s));
    CHECK(ts_scan_finish(s) == 0, "scan: %s", ts_scan_error(s));
    ts_scan_free(s);
    return ts_derive_finish(r->ep, r_emit, r);
}

/* The value of the line whose measurement+tags are exactly `series`; *t its time. NAN when absent. */
static double value_of(const char *out, const char *series, long long *t) {
    size_t n = strlen(series);
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            const char *eq = strchr(p + n + 1, '=');
            char *end;
            double v = strtod(eq + 1, &end);
            if (t) *t = strtoll(end, NULL, 10);
            return v;
        }
    }
    return NAN;
}

static int count_lines(const char *s, const char *prefix) {
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = s; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, pl) == 0) n++;
    return n;
}

/* CacheStats with stats (name, value) per host at one time per host. */
typedef struct hs { const char *host; int64_t t; const char *stats[8][2]; } hs;
static char *cachestats(const hs *hosts, int n) {
    ts_buf b;
    ts_buf_init(&b);
    ts_buf_adds(&b, "{\"pp\":\"\",\"date\":\"x\",\"caches\":{");
    for (int i = 0; i < n; i++) {
        ts_buf_printf(&b, "%s\"%s\":{", i ? "," : "", hosts[i].host);
        for (int k = 0; k < 8 && hosts[i].stats[k][0]; k++)
            ts_buf_printf(&b, "%s\"%s\":[{\"value\":\"%s\",\"time\":%lld,\"span\":1}]", k ? "," : "", hosts[i].stats[k][0],
                          hosts[i].stats[k][1], (long long)hosts[i].t);
        ts_buf_adds(&b, "}");
    }
    ts_buf_adds(&b, "}}");
    return b.data;
}

static int NEAR(double a, double b) { return fabs(a - b) <= 1e-9 * (fabs(a) + fabs(b) + 1); }

static void test_aggregations(lua_State *L) {
    char probs[2048];
    ts_derive *d = compile(L,
        "return {"
        " { name = 'bandwidth.cdn', from = 'bandwidth', agg = 'sum', group_by = {'cdn'} },"
        " { name = 'cachegroup.kbps', from = 'bandwidth', agg = 'sum', group_by = {'cdn', 'cachegroup'}, scale = 1/1000, db = 'cache_stats', rp = 'monthly' },"
        " { name = 'edge.maxkbps', from = 'maxKbps', agg = 'max', where = { type = 'EDGE' }, group_by = {'cdn'} },"
        " { name = 'bw.min', from = 'bandwidth', agg = 'min', group_by = {'cdn', 'type'} },"
        " { name = 'bw.mean', from = 'bandwidth', agg = 'mean', group_by = {'cdn', 'type'} },"
        " { name = 'bw.count', from = 'bandwidth', agg = 'count', where = { cachegroup = { ['not'] = 'mid' } }, group_by = {'cdn'} },"
        " { name = 'bw.last', from = 'bandwidth', agg = 'last', group_by = {'cdn'} },"
        " { name = 'ds.only', from = 'kbps', agg = 'sum', endpoint = 'DsStats', group_by = {'cdn'} },"
        "}", probs, sizeof probs);
    CHECK(d != NULL, "compiled: %s", probs);
    if (!d) return;
    CHECK(ts_derive_count(d) == 8, "8 definitions");
    rig r;
    rig_init(&r, L, d, "mappings.cachestats", TS_SCAN_CACHESTATS, "CacheStats");
    hs h[] = {
        {"e1", 1000000, {{"bandwidth", "100"}, {"maxKbps", "500"}, {"loadavg", "1.5"}}},
        {"e2", 1000100, {{"bandwidth", "250.5"}, {"maxKbps", "900"}}},
        {"e3", 1000200, {{"bandwidth", "50"}, {"maxKbps", "700"}}},
        {"m1", 1000300, {{"bandwidth", "1000"}, {"maxKbps", "5000"}}},
        {"unknown-host", 1000050, {{"bandwidth", "7"}}},
    };
    char *json = cachestats(h, 5);
    size_t n = poll(&r, json);
    const char *o = r.out.data;
    long long t = 0;
    CHECK(NEAR(value_of(o, "bandwidth.cdn,cdn=cdn1", &t), 1407.5), "sum of every cache's bandwidth:\n%s", o);
    CHECK(t == 1000300, "time of a group point = its newest sample's (%lld)", t);
    CHECK(NEAR(value_of(o, "cachegroup.kbps,cachegroup=cg1,cdn=cdn1", NULL), 0.3505), "cg1 = (100+250.5)/1000:\n%s", o);
    CHECK(NEAR(value_of(o, "cachegroup.kbps,cachegroup=cg2,cdn=cdn1", NULL), 0.05), "cg2");
    CHECK(NEAR(value_of(o, "cachegroup.kbps,cachegroup=mid,cdn=cdn1", NULL), 1.0), "mid");
    CHECK(NEAR(value_of(o, "cachegroup.kbps,cdn=cdn1", NULL), 0.007), "a host unknown to TO has no cachegroup: its own group");
    CHECK(NEAR(value_of(o, "edge.maxkbps,cdn=cdn1", NULL), 900), "max over EDGE caches only (MID has 5000):\n%s", o);
    CHECK(NEAR(value_of(o, "bw.min,cdn=cdn1,type=EDGE", NULL), 50), "min EDGE");
    CHECK(NEAR(value_of(o, "bw.mean,cdn=cdn1,type=EDGE", NULL), 400.5 / 3), "mean EDGE");
    CHECK(NEAR(value_of(o, "bw.mean,cdn=cdn1,type=MID", NULL), 1000), "mean MID");
    CHECK(NEAR(value_of(o, "bw.count,cdn=cdn1", NULL), 4), "count with cachegroup != mid (unknown host has none: kept)");
    CHECK(NEAR(value_of(o, "bw.last,cdn=cdn1", NULL), 1000), "last = the newest sample (m1 at 1000300)");
    CHECK(count_lines(o, "ds.only") == 0, "a DsStats-only definition stays off CacheStats");
    /* 1 cdn sum + 4 cache groups (cg1, cg2, mid, none) + 1 max + min and mean by type (EDGE, MID, none) + count + last */
    CHECK(n == 14, "14 points, got %zu:\n%s", n, o);
    CHECK(strstr(o, "# db=cache_stats rp=monthly\ncachegroup.kbps") != NULL, "db/rp of the definition: own batch:\n%s", o);
    CHECK(r.batches == 2, "two destinations, two batches (%zu)", r.batches);
    /* warm poll: no Lua at all */
    uint64_t calls = ts_mapper_lua_calls(r.m);
    int64_t hooks = ts_counter_get("mapping_sample_hook_calls")->value;
    h[0].stats[0][1] = "200";
    free(json);
    json = cachestats(h, 5);
    poll(&r, json);
    CHECK(ts_mapper_lua_calls(r.m) == calls, "no Lua call on a warm poll (%llu -> %llu)", (unsigned long long)calls,
          (unsigned long long)ts_mapper_lua_calls(r.m));
    CHECK(ts_counter_get("mapping_sample_hook_calls")->value == hooks, "no sample hook");
    CHECK(NEAR(value_of(r.out.data, "bandwidth.cdn,cdn=cdn1", NULL), 1507.5), "next poll's own sum (not accumulated)");
    free(json);
    /* a Traffic Ops refresh: new mapper and answers, the same endpoint state */
    rig_replan(&r, "mappings.cachestats");
    hs h2[] = {{"e1", 2000000, {{"bandwidth", "1"}}}, {"e3", 2000000, {{"bandwidth", "2"}}}};
    json = cachestats(h2, 2);
    poll(&r, json);
    CHECK(NEAR(value_of(r.out.data, "cachegroup.kbps,cachegroup=cg1,cdn=cdn1", NULL), 0.001), "after a new plan:\n%s", r.out.data);
    CHECK(NEAR(value_of(r.out.data, "cachegroup.kbps,cachegroup=cg2,cdn=cdn1", NULL), 0.002), "after a new plan (cg2)");
    CHECK(count_lines(r.out.data, "cachegroup.kbps,cachegroup=mid") == 0, "a group with no sample this poll writes nothing");
    free(json);
    rig_free(&r);
    ts_derive_release(d);
}

/* The rate of an ATS counter, per cache, hand-computed:
 *   t=0 s 1000, t=10 s 1600 -> 60/s; t=20 s 400 (restart: reset) -> nothing;
 *   t=30 s 1000 -> 60/s; t=30 s again (TM did not refresh) -> repeat, nothing;
 *   t=40.5 s 1105 -> 10/s; t=400 s 2000 (gap > max_gap 60 s) -> nothing; t=410 s 2100 -> 10/s. */
static void test_rate(lua_State *L) {
    ts_derive *d = compile(L,
        "return {"
        " { name = 'requests.rate', from = 'ats.proxy.process.http.completed_requests', agg = 'rate',"
        "   group_by = {'cdn', 'hostname'}, max_gap = 60 },"
        " { name = 'requests.rate.cdn', from = 'ats.proxy.process.http.completed_requests', agg = 'rate', group_by = {'cdn'} },"
        "}", NULL, 0);
    CHECK(d != NULL, "rate compiled");
    if (!d) return;
    rig r;
    rig_init(&r, L, d, "mappings.cachestats", TS_SCAN_CACHESTATS, "CacheStats");
    struct { int64_t t; const char *v; const char *v2; int emits; double want; } steps[] = {
        {0, "1000", "5000", 0, 0},
        {10000, "1600", "5100", 1, 60},
        {20000, "400", "5200", 0, 0},
        {30000, "1000", "5300", 1, 60},
        {30000, "1000", "5300", 0, 0},
        {40500, "1105", "5405", 1, 10},
        {400000, "2000", "9000", 0, 0},
        {410000, "2100", "9100", 1, 10},
    };
    ts_derive_stats s0;
    ts_derive_get_stats(d, &s0);
    const int64_t base = 1700000000000LL;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        hs h[] = {{"e1", base + steps[i].t, {{"ats.proxy.process.http.completed_requests", steps[i].v}}},
                  {"e2", base + steps[i].t, {{"ats.proxy.process.http.completed_requests", steps[i].v2}}}};
        char *json = cachestats(h, 2);
        poll(&r, json);
        long long t = 0;
        double v = value_of(r.out.data, "requests.rate,cdn=cdn1,hostname=e1", &t);
        if (steps[i].emits) {
            CHECK(NEAR(v, steps[i].want), "step %zu: rate %.17g, want %.17g", i, v, steps[i].want);
            CHECK(t == base + steps[i].t, "step %zu: time of the newer sample", i);
        } else {
            CHECK(isnan(v), "step %zu: no rate expected, got %g", i, v);
        }
        free(json);
    }
    /* e2 grows by 100 per step: 10/s except after the gap; the CDN rate sums both caches */
    ts_derive_stats s;
    ts_derive_get_stats(d, &s);
    /* per definition: 1 reset (e1 only), 2 repeats (both caches, both defs -> 4 in all), gaps: max_gap 60 for the
     * first definition (both caches), default 300 s for the second (both caches) */
    CHECK(s.rate_resets - s0.rate_resets == 2, "resets counted: e1 in both definitions (%llu)", (unsigned long long)(s.rate_resets - s0.rate_resets));
    CHECK(s.rate_repeats - s0.rate_repeats == 4, "repeats counted (%llu)", (unsigned long long)(s.rate_repeats - s0.rate_repeats));
    CHECK(s.rate_gaps - s0.rate_gaps == 4, "gaps counted (%llu)", (unsigned long long)(s.rate_gaps - s0.rate_gaps));
    CHECK(s.rate_first - s0.rate_first == 4, "first samples (%llu)", (unsigned long long)(s.rate_first - s0.rate_first));
    CHECK(NEAR(value_of(r.out.data, "requests.rate.cdn,cdn=cdn1", NULL), 20), "last step: 10/s + 10/s:\n%s", r.out.data);
    /* a fetch that fails half way (abort) commits nothing: the next one rates against the last good base */
    hs bad[] = {{"e1", base + 420000, {{"ats.proxy.process.http.completed_requests", "999999"}}}};
    char *json = cachestats(bad, 1);
    CHECK(ts_derive_begin(r.ep, &r) == 0, "begin");
    ts_scan_sink sink = {r_entity, r_stat, r_sample, &r};
    ts_scan *sc = ts_scan_new(TS_SCAN_CACHESTATS, &sink);
    ts_scan_feed(sc, json, strlen(json));
    ts_scan_finish(sc);
    ts_scan_free(sc);
    ts_derive_abort(r.ep);
    free(json);
    hs good[] = {{"e1", base + 430000, {{"ats.proxy.process.http.completed_requests", "2300"}}}};
    json = cachestats(good, 1);
    poll(&r, json);
    CHECK(NEAR(value_of(r.out.data, "requests.rate,cdn=cdn1,hostname=e1", NULL), 10), "after an aborted fetch: (2300-2100)/20 s:\n%s", r.out.data);
    free(json);
    /* the same fetch begun again before it finished (no abort between): the unfinished attempt commits nothing either */
    hs bad2[] = {{"e1", base + 440000, {{"ats.proxy.process.http.completed_requests", "999999"}}}};
    json = cachestats(bad2, 1);
    CHECK(ts_derive_begin(r.ep, &r) == 0, "begin");
    sc = ts_scan_new(TS_SCAN_CACHESTATS, &sink);
    ts_scan_feed(sc, json, strlen(json));
    ts_scan_finish(sc);
    ts_scan_free(sc);
    free(json);
    hs good2[] = {{"e1", base + 450000, {{"ats.proxy.process.http.completed_requests", "2400"}}}};
    json = cachestats(good2, 1);
    poll(&r, json);
    CHECK(NEAR(value_of(r.out.data, "requests.rate,cdn=cdn1,hostname=e1", NULL), 5), "after a restarted fetch: (2400-2300)/20 s:\n%s", r.out.data);
    free(json);
    /* another owner's poll open (a retired endpoint still fetching): begin refuses, nothing mixes */
    CHECK(ts_derive_begin(r.ep, &r) == 0, "begin A");
    CHECK(ts_derive_begin(r.ep, &s) == -1, "begin B while A is open");
    ts_derive_abort(r.ep);
    rig_free(&r);
    ts_derive_release(d);
}

/* Cache hit ratio: hit_fresh / completed_requests of the same cache. */
static void test_ratio(lua_State *L) {
    ts_derive *d = compile(L,
        "return {"
        " { name = 'hit.ratio', from = 'ats.proxy.process.http.transaction_counts.hit_fresh',"
        "   over = 'ats.proxy.process.http.completed_requests', agg = 'ratio', group_by = {'cdn', 'hostname'} },"
        " { name = 'hit.ratio.cg', from = 'ats.proxy.process.http.transaction_counts.hit_fresh',"
        "   over = 'ats.proxy.process.http.completed_requests', agg = 'ratio', group_by = {'cdn', 'cachegroup'} },"
        "}", NULL, 0);
    CHECK(d != NULL, "ratio compiled");
    if (!d) return;
    rig r;
    rig_init(&r, L, d, "mappings.cachestats", TS_SCAN_CACHESTATS, "CacheStats");
    hs h[] = {
        {"e1", 5000, {{"ats.proxy.process.http.transaction_counts.hit_fresh", "30"}, {"ats.proxy.process.http.completed_requests", "120"}}},
        {"e2", 5000, {{"ats.proxy.process.http.completed_requests", "80"}, {"ats.proxy.process.http.transaction_counts.hit_fresh", "60"}}},
        {"e3", 5000, {{"ats.proxy.process.http.transaction_counts.hit_fresh", "5"}}},
        {"m1", 5000, {{"ats.proxy.process.http.transaction_counts.hit_fresh", "0"}, {"ats.proxy.process.http.completed_requests", "0"}}},
    };
    ts_derive_stats s0, s1;
    ts_derive_get_stats(d, &s0);
    char *json = cachestats(h, 4);
    poll(&r, json);
    const char *o = r.out.data;
    CHECK(NEAR(value_of(o, "hit.ratio,cdn=cdn1,hostname=e1", NULL), 0.25), "e1 30/120:\n%s", o);
    CHECK(NEAR(value_of(o, "hit.ratio,cdn=cdn1,hostname=e2", NULL), 0.75), "e2 60/80 (stats in the other order)");
    CHECK(isnan(value_of(o, "hit.ratio,cdn=cdn1,hostname=e3", NULL)), "e3 has no denominator: no point");
    CHECK(isnan(value_of(o, "hit.ratio,cdn=cdn1,hostname=m1", NULL)), "0/0: no point");
    CHECK(NEAR(value_of(o, "hit.ratio.cg,cachegroup=cg1,cdn=cdn1", NULL), 90.0 / 200.0), "cg1 = (30+60)/(120+80)");
    CHECK(isnan(value_of(o, "hit.ratio.cg,cachegroup=cg2,cdn=cdn1", NULL)), "cg2: e3 unpaired");
    ts_derive_get_stats(d, &s1);
    CHECK(s1.ratio_unpaired - s0.ratio_unpaired == 2, "e3 unpaired in both definitions");
    CHECK(s1.undefined - s0.undefined == 2, "m1 0/0 in both");
    free(json);
    rig_free(&r);
    ts_derive_release(d);
}

/* Windows: a series' mean over the window, then the group's sum (the CQ
 * chain bandwidth.1min -> bandwidth.cdn.1min), written at the window start
 * once every series has moved past it. */
static void test_window(lua_State *L) {
    ts_derive *d = compile(L,
        "return { { name = 'bandwidth.cdn.1min', from = 'bandwidth', agg = 'sum', window = 60, group_by = {'cdn'} } }",
        NULL, 0);
    CHECK(d != NULL, "window compiled");
    if (!d) return;
    rig r;
    rig_init(&r, L, d, "mappings.cachestats", TS_SCAN_CACHESTATS, "CacheStats");
    const int64_t m0 = 1700000040000LL - 1700000040000LL % 60000;   /* a minute boundary */
    struct { int64_t t1, t2; const char *v1, *v2; } polls[] = {
        {m0 + 10000, m0 + 10500, "100", "10"},
        {m0 + 20000, m0 + 20500, "200", "20"},
        {m0 + 20000, m0 + 30500, "200", "30"},   /* e1 not refreshed: a duplicate, not a third sample */
        {m0 + 59900, m0 + 60200, "300", "40"},   /* e2 already in the next minute: minute 0 still open */
        {m0 + 70000, m0 + 70000, "1000", "100"}, /* every series past minute 0: it is written */
    };
    size_t n = 0;
    for (int i = 0; i < 5; i++) {
        hs h[] = {{"e1", polls[i].t1, {{"bandwidth", polls[i].v1}}}, {"e2", polls[i].t2, {{"bandwidth", polls[i].v2}}}};
        char *json = cachestats(h, 2);
        n = poll(&r, json);
        free(json);
        if (i < 4) CHECK(n == 0, "poll %d: minute 0 not closed yet:\n%s", i, r.out.data);
    }
    long long t = 0;
    double v = value_of(r.out.data, "bandwidth.cdn.1min,cdn=cdn1", &t);
    CHECK(n == 1 && NEAR(v, 200.0 + 20.0), "mean(e1: 100,200,300) + mean(e2: 10,20,30) = 220, got %g:\n%s", v, r.out.data);
    CHECK(t == m0, "written at the window's start (%lld vs %lld)", t, (long long)m0);
    /* a late sample for minute 0 is dropped and counted */
    ts_derive_stats s0, s1;
    ts_derive_get_stats(d, &s0);
    hs late[] = {{"e1", m0 + 50000, {{"bandwidth", "5"}}}, {"e2", m0 + 80000, {{"bandwidth", "5"}}}};
    char *json = cachestats(late, 2);
    poll(&r, json);
    free(json);
    ts_derive_get_stats(d, &s1);
    CHECK(s1.window_late - s0.window_late == 1, "late sample counted");
    CHECK(s1.window_dups >= 1, "the unrefreshed e1 sample counted as a duplicate");
    rig_free(&r);
    ts_derive_release(d);
}

/* DsStats: stat tags (cachegroup) take part in filters and groups. */
static void test_dsstats(lua_State *L) {
    ts_derive *d = compile(L,
        "return { { name = 'kbps.cdn', from = 'kbps', agg = 'sum', where = { cachegroup = 'total' }, group_by = {'cdn'}, endpoint = 'DsStats' },"
        "         { name = 'kbps.cg', from = 'kbps', agg = 'sum', where = { cachegroup = { ['not'] = {'total', 'all'} } }, group_by = {'cdn', 'cachegroup'} } }",
        NULL, 0);
    CHECK(d != NULL, "ds compiled");
    if (!d) return;
    rig r;
    rig_init(&r, L, d, "mappings.dsstats", TS_SCAN_DSSTATS, "DsStats");
    const char *json =
        "{\"deliveryService\":{"
        "\"ds1\":{\"total.kbps\":[{\"time\":1000,\"value\":\"300\"}],\"location.cg1.kbps\":[{\"time\":1000,\"value\":\"100\"}],"
        "\"location.cg2.kbps\":[{\"time\":1000,\"value\":\"200\"}],\"type.EDGE.kbps\":[{\"time\":1000,\"value\":\"300\"}]},"
        "\"ds2\":{\"total.kbps\":[{\"time\":1000,\"value\":\"40\"}],\"location.cg1.kbps\":[{\"time\":1000,\"value\":\"40\"}]}}}";
    poll(&r, json);
    const char *o = r.out.data;
    CHECK(NEAR(value_of(o, "kbps.cdn,cdn=cdn1", NULL), 340), "sum of DS totals:\n%s", o);
    CHECK(NEAR(value_of(o, "kbps.cg,cachegroup=cg1,cdn=cdn1", NULL), 140), "cg1 over DSes");
    CHECK(NEAR(value_of(o, "kbps.cg,cachegroup=cg2,cdn=cdn1", NULL), 200), "cg2");
    CHECK(count_lines(o, "kbps.cg,cachegroup=total") == 0 && count_lines(o, "kbps.cg,cachegroup=all") == 0, "not total/all");
    rig_free(&r);
    ts_derive_release(d);
}

/* No definition reads a stat: its slot stays NULL (one pointer test per sample). */
static void test_unbound(lua_State *L) {
    ts_derive *d = compile(L, "return { { name = 'x', from = 'bandwidth', agg = 'sum', group_by = {'cdn'} } }", NULL, 0);
    CHECK(d != NULL, "compiled");
    if (!d) return;
    ts_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    CHECK(ts_derive_endpoint(d, "cdn1", "Other", &dest) != NULL, "no endpoint filter: applies everywhere");
    ts_derive_ep *ep = ts_derive_endpoint(d, "cdn1", "CacheStats", &dest);
    ts_mapper *m = ts_mapper_new(L, "mappings.cachestats", make_ctx(L, "cdn1"), "t");
    ts_mapper_set_derive(m, ep);
    CHECK(ts_mapper_stat(m, "loadavg", 7)->derive == NULL, "unread stat: no slots");
    const ts_stat_map *bw = ts_mapper_stat(m, "bandwidth", 9);
    CHECK(bw->derive != NULL, "bandwidth has slots");
    const ts_entity_map *e1 = ts_mapper_entity(m, "e1", 2), *e2 = ts_mapper_entity(m, "e2", 2);
    CHECK(e1->derive_id && e2->derive_id && e1->derive_id != e2->derive_id, "entity ids");
    ts_mapper_release(m);
    ts_derive_release(d);
    ts_derive *none = compile(L, "return { { name = 'y', from = 'bandwidth', agg = 'sum', endpoint = 'DsStats' } }", NULL, 0);
    CHECK(none && ts_derive_endpoint(none, "cdn1", "CacheStats", &dest) == NULL, "no definition for that endpoint: no state");
    ts_derive_release(none);
}

/* lua/metrics.lua's checks: errors refuse, warnings name file:line. */
static void test_validation(lua_State *L) {
    char probs[4096];
    ts_derive *d = compile(L,
        "return {"
        " { name = 'a', from = 'bandwidth', agg = 'summ' },"
        " { name = 'b', from = 'bandwidth', agg = 'sum', group_by = 'cdn' },"
        " { name = 'c', from = 'bandwidth', agg = 'ratio' },"
        " { name = 'd', from = 'bandwidth', agg = 'sum', scale = 'x', colour = 1 },"
        " { name = 'e', from = 'bandwidht', agg = 'sum', group_by = {'cdn', 'hostnme'}, where = { typ = 'EDGE' } },"
        " { name = 'f', from = 'bandwidth', agg = 'rate', window = 60 },"
        " 42,"
        "}", probs, sizeof probs);
    CHECK(d == NULL, "errors refuse the whole set");
    const char *want[] = {"agg \"summ\" is not one of", "did you mean sum?", "b: group_by must be a list of strings",
                          "c: ratio needs over", "d: scale must be a number", "d: unknown key colour",
                          "e: from bandwidht: not a stat", "did you mean bandwidth?", "group_by hostnme: not a tag",
                          "where.typ: not a tag", "f: window is for", "metrics[7]: a definition (table)", NULL};
    for (int i = 0; want[i]; i++) CHECK(strstr(probs, want[i]) != NULL, "problem '%s' missing from:\n%s", want[i], probs);
    CHECK(strstr(probs, ": error: ") && strstr(probs, ": warning: "), "levels shown:\n%s", probs);
    /* warnings alone load */
    d = compile(L, "return { { name = 'w', from = 'ats.proxy.process.new_thing', agg = 'sum' } }", probs, sizeof probs);
    CHECK(d != NULL, "warnings only: loaded");
    CHECK(strstr(probs, "group_by has no cdn") != NULL, "missing cdn warned:\n%s", probs);
    ts_derive_release(d);
    /* file:line from a config file */
    const char *path = "/tmp/tstats_test_derive_config.lua";
    FILE *f = fopen(path, "w");
    fputs("return {\n  metrics = {\n    { name = 'ok1', from = 'bandwidth', agg = 'sum', group_by = {'cdn'} },\n"
          "    {\n      name = \"bad2\", from = 'bandwidth',\n      agg = 'avg',\n    },\n"
          "    metric { name = 'bad3', from = 'bandwidth', agg = 'max', group_by = { 'cdn' }, scale = {} },\n  },\n}\n", f);
    fclose(f);
    char src[1024];
    snprintf(src, sizeof src,
             "local cfg = assert(loadfile(%s, 't', setmetatable({metric = function(t) local i = debug.getinfo(2, 'Sl');"
             " t.__where = i.source:sub(2) .. ':' .. i.currentline; return t end}, {__index = _G})))()\n"
             "local c, text, nerr = require('metrics').load(cfg, %s)\nreturn text, nerr", "'/tmp/tstats_test_derive_config.lua'",
             "'/tmp/tstats_test_derive_config.lua'");
    if (luaL_loadstring(L, src) == LUA_OK && ts_lua_pcall(L, 0, 2, "load", 0) == 0) {
        const char *text = lua_tostring(L, -2) ? lua_tostring(L, -2) : "(none)";
        CHECK(lua_tointeger(L, -1) == 2, "two errors");
        CHECK(strstr(text, "/tmp/tstats_test_derive_config.lua:5: error: bad2: agg \"avg\""), "file:line of bad2:\n%s", text);
        CHECK(strstr(text, "/tmp/tstats_test_derive_config.lua:8: error: bad3: scale must be a number"), "file:line via metric{}:\n%s", text);
        lua_pop(L, 2);
    } else {
        CHECK(0, "load chunk");
    }
    remove(path);
}

/* Derived values' text must read back as the very same double. */
static void test_fmt(void) {
    unsigned long long x = 0x243F6A8885A308D3ULL;
    int bad = 0, shortish = 0;
    char buf[40];
    for (int i = 0; i < 1000000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        double v;
        switch (i % 4) {
        case 0: v = (double)(x >> 11) / 9007199254740992.0 * pow(10, (int)(x % 30) - 10); break;   /* any digits, 1e-10..1e20 */
        case 1: v = (double)(x % 100000000) / 1000.0; break;                                         /* short decimals */
        case 2: v = ((double)(x % 1000000) + 0.5) * 1000.0 / (double)(1 + x % 20000); break;           /* a rate */
        default: v = -(double)(x % 90000) / (double)(1 + (x >> 20) % 100000); break;                  /* a ratio, negative */
        }
        size_t n = ts_derive_fmt_double(buf, v);
        double back = strtod(buf, NULL);
        if (n == 0 || n >= 40 || memcmp(&back, &v, sizeof v) != 0 || (strchr(buf, 'e') != NULL && fabs(v) >= 1e-6 && fabs(v) < 9e15)) {
            if (bad++ < 5) printf("fmt %.17g -> \"%s\" -> %.17g\n", v, buf, back);
        }
        if (i % 4 == 1 && n <= 13) shortish++;
    }
    CHECK(bad == 0, "%d values do not read back", bad);
    CHECK(shortish == 250000, "short decimals stay short (%d of 250000)", shortish);
    ts_derive_fmt_double(buf, 0.1);
    CHECK(strcmp(buf, "0.1") == 0, "0.1 -> %s", buf);
    ts_derive_fmt_double(buf, 1.0 / 3.0);
    CHECK(strcmp(buf, "0.33333333333333331") == 0, "1/3 -> %s", buf);
    ts_derive_fmt_double(buf, 220);
    CHECK(strcmp(buf, "220") == 0, "220 -> %s", buf);
}

int main(void) {
    test_fmt();
    ts_log_set_level(TS_LOG_ERROR);
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L || ts_config_load(L, NULL) != 0) { printf("FAIL Lua state\n"); return 1; }
    test_aggregations(L);
    test_rate(L);
    test_ratio(L);
    test_window(L);
    test_dsstats(L);
    test_unbound(L);
    test_validation(L);
    ts_lua_close(L);
    return check_report("test_derive");
}
