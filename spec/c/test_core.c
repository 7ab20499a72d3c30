/* C unit tests of the core (ctest `core`): the poll pipeline without the
 * network (TM fixture → streaming scanner → Lua mapping caches → compact
 * batch → line protocol, compared with ATC's own lines), number parsing, and
 * the Lua runtime's guards (errors, instruction budget, heap cap, config). */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_api.h"
#include "ts_collect.h"
#include "ts_config.h"
#include "ts_lua.h"
#include "ts_mapping.h"
#include "ts_log.h"
#include "ts_scan.h"

#include "check.h"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n) exit(2);
    p[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return p;
}

/* The fast path must agree with strtod bit for bit on every form TM sends. */
static void test_parse_number_vs_strtod(void) {
    char buf[64];
    unsigned long long x = 88172645463325252ULL;
    int bad = 0;
    for (int k = 0; k < 400000; k++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        double v;
        switch (k % 5) {
        case 0: snprintf(buf, sizeof buf, "%llu", (x >> (x % 40)) % 100000000000000000ULL); break;
        case 1: snprintf(buf, sizeof buf, "%.*g", 1 + (int)(x % 17), (double)(x % 1000000007) / (double)(1 + (x >> 40) % 1000)); break;
        case 2: snprintf(buf, sizeof buf, "%f", (double)(x % 100000000) / 1000.0); break;
        case 3: snprintf(buf, sizeof buf, "%.*e", (int)(x % 16), (double)(x >> 11) * 1e-3); break;
        default: snprintf(buf, sizeof buf, "%s0.%0*llu", (x & 1) ? "-" : "", 1 + (int)(x % 20), x % 1000000); break;
        }
        if (!ts_parse_number(buf, strlen(buf), &v)) { bad++; if (bad < 5) printf("FAIL not parsed: %s\n", buf); continue; }
        double want = strtod(buf, NULL);
        if (memcmp(&v, &want, sizeof v) != 0) { bad++; if (bad < 5) printf("FAIL %s: %.17g vs strtod %.17g\n", buf, v, want); }
    }
    CHECK(bad == 0, "%d numbers differ from strtod", bad);
}

static void test_parse_number(void) {
    struct { const char *s; int ok; double v; } cases[] = {
        {"1523", 1, 1523}, {"2.62200722e+10", 1, 26220072200.0}, {"12.500000", 1, 12.5}, {"-3", 1, -3},
        {"1e+06", 1, 1e6}, {"0.00001", 1, 1e-5}, {"1e-05", 1, 1e-5}, {"728207677726", 1, 728207677726.0},
        {"18446744073709551615", 1, 18446744073709551615.0}, {"<nil>", 0, 0}, {"REPORTED", 0, 0},
        {"", 0, 0}, {"NaN", 0, 0}, {"inf", 0, 0}, {"0x10", 0, 0}, {"1e999", 0, 0}, {"1.", 1, 1}, {".5", 1, 0.5},
        {"1e", 0, 0}, {"--1", 0, 0}, {"1 ", 0, 0}, {"true", 0, 0}, {"{true false}", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -42;
        int ok = ts_parse_number(cases[i].s, strlen(cases[i].s), &v);
        CHECK(ok == cases[i].ok, "parse_number(\"%s\") ok=%d want %d", cases[i].s, ok, cases[i].ok);
        if (ok && cases[i].ok) CHECK(v == cases[i].v, "parse_number(\"%s\") = %.17g want %.17g", cases[i].s, v, cases[i].v);
    }
}

/* ---- pipeline: scanner + mapper + batch, as the collector wires them ----- */
typedef struct pipe { ts_mapper *m; ts_batch *b; int nonnum; } pipe;
static void *p_entity(void *ud, const char *n, size_t l) {
    const ts_entity_map *e = ts_mapper_entity(((pipe *)ud)->m, n, l);
    return e->keep ? (void *)e : NULL;
}
static void *p_stat(void *ud, void *ent, const char *n, size_t l) {
    (void)ent;
    const ts_stat_map *s = ts_mapper_stat(((pipe *)ud)->m, n, l);
    return s->keep ? (void *)s : NULL;
}
static void p_sample(void *ud, void *ent, void *st, const char *v, size_t vl, int kind, int64_t t, int has_t) {
    pipe *p = ud;
    ts_cpoint cp;
    /* the collector's own per-sample path, without the age cut-off (2020 fixtures) */
    ts_sample_policy pol = {INT64_MIN, 0};
    ts_raw_sample s = {v, vl, kind, t, has_t};
    int rc = ts_collect_sample(p->m, &pol, st, ent, &s, &cp);
    if (rc == TS_SAMPLE_OK) ts_batch_add_compact(p->b, &cp);
    else if (rc == TS_SAMPLE_NON_NUMERIC) p->nonnum++;
}

/* Servers map as lua/plan.lua builds it, for the hosts of the fixture. */
static int make_ctx(lua_State *L, const char *cdn) {
    const char *src =
        "return {cdn = ..., servers = {"
        " edge = {cacheGroup = 'CDN_in_a_Box_Edge', type = 'EDGE', cdn = 'CDN-in-a-Box'},"
        " mid = {cacheGroup = 'CDN_in_a_Box_Mid', type = 'MID', cdn = 'CDN-in-a-Box'} }}";
    if (luaL_loadstring(L, src) != LUA_OK) return LUA_NOREF;
    lua_pushstring(L, cdn);
    lua_call(L, 1, 1);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static char *run_pipeline(lua_State *L, const char *module, ts_scan_kind kind, const char *fixture, int *nonnum) {
    size_t len;
    char *json = slurp(fixture, &len);
    pipe p = {0};
    p.m = ts_mapper_new(L, module, make_ctx(L, "CDN-in-a-Box"), module);
    CHECK(p.m != NULL, "mapper for %s", module);
    if (!p.m) return strdup("");
    ts_dest d = {"cache_stats", "daily", TS_PREC_MS};
    p.b = ts_batch_new_compact(&d, ts_mapper_owner(p.m));
    ts_scan_sink sink = {p_entity, p_stat, p_sample, &p};
    ts_scan *s = ts_scan_new(kind, &sink);
    /* in odd-sized pieces, as curl would deliver them */
    for (size_t off = 0; off < len; off += 7) CHECK(ts_scan_feed(s, json + off, len - off < 7 ? len - off : 7) == 0, "feed");
    CHECK(ts_scan_finish(s) == 0, "finish: %s", ts_scan_error(s));
    ts_scan_free(s);
    ts_buf out;
    ts_buf_init(&out);
    ts_batch_encode(p.b, &out);
    ts_mapper_release(p.m);       /* the batch still holds a reference */
    ts_batch_free(p.b);           /* last reference: the maps go now */
    free(json);
    *nonnum = p.nonnum;
    char *r = strdup(out.data ? out.data : "");
    ts_buf_free(&out);
    return r;
}

/* Every data line of ATC's .lp fixture must be in our output, byte for byte. */
static void expect_lines(const char *out, const char *lp_fixture) {
    char *lp = slurp(lp_fixture, NULL);
    int n = 0;
    for (char *line = strtok(lp, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || !line[0]) continue;
        char want[1024];
        snprintf(want, sizeof want, "%s\n", line);
        CHECK(strstr(out, want) != NULL, "ATC line missing from our output:\n  %s\nour output:\n%s", line, out);
        n++;
    }
    CHECK(n >= 5, "fixture %s had %d lines", lp_fixture, n);
    free(lp);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void test_pipeline(lua_State *L) {
    int nonnum = 0;
    char *out = run_pipeline(L, "mappings.cachestats", TS_SCAN_CACHESTATS,
                             TS_SPEC_DIR "/fixtures/synthesized/tm_CacheStats_legacy_hc1_wildcard.json", &nonnum);
    expect_lines(out, TS_SPEC_DIR "/fixtures/synthesized/influx_write_cache_stats.lp");
    CHECK(count_lines(out) == 14, "14 cache samples in the fixture, got %d:\n%s", count_lines(out), out);
    CHECK(strstr(out, "bandwidth,cachegroup=CDN_in_a_Box_Mid,cdn=CDN-in-a-Box,hostname=mid,type=MID value=0 1589471330899\n") != NULL,
          "mid bandwidth line");
    free(out);
    out = run_pipeline(L, "mappings.dsstats", TS_SCAN_DSSTATS,
                       TS_SPEC_DIR "/fixtures/synthesized/tm_DsStats_unfiltered_one_ds.json", &nonnum);
    CHECK(strstr(out, "kbps,cachegroup=CDN_in_a_Box_Edge,cdn=CDN-in-a-Box,deliveryservice=demo1 value=1523 1589471331000\n") != NULL, "ds location kbps:\n%s", out);
    CHECK(strstr(out, "kbps,cachegroup=all,cdn=CDN-in-a-Box,deliveryservice=demo1,type=EDGE value=1523 1589471331000\n") != NULL, "ds type kbps");
    CHECK(strstr(out, "kbps,cachegroup=total,cdn=CDN-in-a-Box,deliveryservice=demo1 value=1523 1589471331000\n") != NULL, "ds total kbps");
    CHECK(strstr(out, "tps_2xx,cachegroup=CDN_in_a_Box_Edge,cdn=CDN-in-a-Box,deliveryservice=demo1 value=12.5 1589471331000\n") != NULL, "ds tps");
    CHECK(strstr(out, "isAvailable") == NULL && strstr(out, "disabledLocations") == NULL && strstr(out, "caches") == NULL,
          "quirk and unprefixed keys dropped:\n%s", out);
    free(out);
}

/* A stat whose answer carries a per-sample hook: C calls it for every sample
 * of that stat only; nil drops the sample. */
static void test_sample_hook(lua_State *L) {
    const char *mod =
        "package.preload['mappings.test_hook'] = function() return {"
        " entity = function(name, ctx) return { hostname = name } end,"
        " stat = function(name, ctx)"
        "   if name == 'bandwidth' then return { measurement = 'bw', sample = function(v, text, t, ctx) return v * 2 end } end"
        "   if name == 'maxKbps' then return { measurement = 'max', sample = function(v) return nil end } end"
        "   if name == 'inBytes' then return { measurement = 'in', scale = 8, as_int = true, tags = { unit = 'bits' } } end"
        "   return nil end } end";
    CHECK(luaL_dostring(L, mod) == LUA_OK, "preload test mapping");
    ts_counter *hooks = ts_counter_get("mapping_sample_hook_calls");
    int64_t before = hooks->value;
    int nonnum = 0;
    char *out = run_pipeline(L, "mappings.test_hook", TS_SCAN_CACHESTATS,
                             TS_SPEC_DIR "/fixtures/synthesized/tm_CacheStats_legacy_hc1_wildcard.json", &nonnum);
    CHECK(strstr(out, "bw,hostname=edge value=3046 1589471331498\n") != NULL, "hook doubled the value:\n%s", out);
    CHECK(strstr(out, "bw,hostname=mid value=0 1589471330899\n") != NULL, "hook on mid");
    CHECK(strstr(out, "max,") == NULL, "hook returning nil drops the sample");
    CHECK(strstr(out, "in,hostname=edge,unit=bits value=383262657032i 1589471331510\n") != NULL, "scale + as_int + stat tags merged:\n%s", out);
    CHECK(count_lines(out) == 4, "only the mapped stats: %d", count_lines(out));
    CHECK(hooks->value - before == 4, "one hook call per sample of hooked stats: %lld", (long long)(hooks->value - before));
    free(out);
}

/* A hostile monitor cannot make the scanner buffer an endless token. */
static void test_scan_token_cap(void) {
    ts_scan *s = ts_scan_new(TS_SCAN_CACHESTATS, NULL);
    const char *head = "{\"caches\":{\"x\":{\"s\":[{\"value\":\"";
    int rc = ts_scan_feed(s, head, strlen(head));
    size_t piece = 1 << 20, fed = 0;
    char *chunk = malloc(piece);
    memset(chunk, 'a', piece);
    while (rc == 0 && fed < ((size_t)100 << 20)) { rc = ts_scan_feed(s, chunk, piece); fed += piece; }
    CHECK(rc == -1 && fed <= ((size_t)65 << 20), "refused after %zu MiB", fed >> 20);
    CHECK(strstr(ts_scan_error(s), "longer than 64 MiB") != NULL, "message: %s", ts_scan_error(s));
    ts_scan_free(s);
    free(chunk);
}

static void test_runtime_guards(lua_State *L) {
    /* a script error is a logged failure, not a crash */
    luaL_loadstring(L, "error('boom')");
    CHECK(ts_lua_pcall(L, 0, 0, "test", 0) == -1, "error caught");
    CHECK(lua_gettop(L) == 0, "stack clean after error (top=%d)", lua_gettop(L));
    /* a runaway loop is stopped by the budget */
    luaL_loadstring(L, "while true do end");
    CHECK(ts_lua_pcall(L, 0, 0, "runaway", 100000) == -1, "budget stops a runaway loop");
    /* and the budget hook does not linger */
    luaL_loadstring(L, "local x = 0 for i = 1, 2000000 do x = x + i end return x");
    CHECK(ts_lua_pcall(L, 0, 1, "long but unbudgeted", 0) == 0, "unbudgeted call runs to the end");
    lua_settop(L, 0);
    CHECK(ts_lua_embedded_exists("mappings.cachestats") && ts_lua_embedded_exists("tstats.default_config"),
          "stock scripts embedded");
}

static void test_heap_cap(void) {
    lua_State *L = ts_lua_new(8u << 20, ts_api_open);
    CHECK(L != NULL, "state with an 8 MiB cap");
    if (!L) return;
    luaL_loadstring(L, "local t = {} for i = 1, 1e8 do t[i] = ('x'):rep(100) .. i end");
    CHECK(ts_lua_pcall(L, 0, 0, "memory hog", 0) == -1, "heap cap turns a hog into an error");
    CHECK(ts_lua_mem_used(L) <= (8u << 20), "heap within the cap: %zu", ts_lua_mem_used(L));
    luaL_loadstring(L, "return 1 + 1");
    CHECK(ts_lua_pcall(L, 0, 1, "after", 0) == 0 && lua_tointeger(L, -1) == 2, "state usable after a memory error");
    ts_lua_close(L);
}

/* tstats.config's value at a dotted path, as a string ("" when absent). */
static const char *cfg_str(lua_State *L, const char *path) {
    static char buf[256];
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "config");
    for (const char *p = path; lua_istable(L, -1);) {
        const char *dot = strchr(p, '.');
        lua_pushlstring(L, p, dot ? (size_t)(dot - p) : strlen(p));
        lua_gettable(L, -2);
        lua_remove(L, -2);
        if (!dot) break;
        p = dot + 1;
    }
    snprintf(buf, sizeof buf, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "");
    lua_pop(L, 2);
    return buf;
}

static void test_config(void) {
    lua_State *L = ts_lua_new(0, ts_api_open);
    CHECK(ts_config_load(L, NULL) == 0, "embedded default config loads");
    CHECK(ts_config_settings(L)->influxdb.max_publish_size == 10000, "default max_publish_size");
    CHECK(strcmp(cfg_str(L, "retention.cache"), "daily") == 0, "retention.cache");
    const char *path = "/tmp/tstats_test_core_config.lua";
    FILE *f = fopen(path, "w");
    fputs("return { traffic_ops = { url = 'http://x' }, influxdb = { urls = {'http://y'}, max_publish_sise = 5 } }", f);
    fclose(f);
    CHECK(ts_config_load(L, path) == -1, "typo'd key refused");
    CHECK(ts_config_settings(L)->influxdb.max_publish_size == 10000, "old config kept after a refused load");
    f = fopen(path, "w");
    fputs("return { traffic_ops = { url = 'http://x' }, influxdb = { urls = {'http://y'}, max_publish_size = 'many' } }", f);
    fclose(f);
    CHECK(ts_config_load(L, path) == -1, "wrong type refused");
    f = fopen(path, "w");
    fputs("return { traffic_ops = { url = 'http://x' } }", f);
    fclose(f);
    CHECK(ts_config_load(L, path) == -1, "missing required influxdb.urls refused");
    f = fopen(path, "w");
    fputs("return { traffic_ops = { url = 'http://x' }, influxdb = { urls = {} } }", f);
    fclose(f);
    CHECK(ts_config_load(L, path) == -1, "an empty influxdb.urls refused");
    f = fopen(path, "w");
    fputs("return { traffic_ops = { url = 'http://x', password = env('TSTATS_TEST_SECRET', 'dflt') }, influxdb = { urls = {'http://y'} }, polling_interval = 5, summary = { enabled = false } }", f);
    fclose(f);
    setenv("TSTATS_TEST_SECRET", "s3cret", 1);
    CHECK(ts_config_load(L, path) == 0, "valid config loads");
    CHECK(strcmp(cfg_str(L, "traffic_ops.password"), "s3cret") == 0, "env() in config");
    CHECK(ts_config_settings(L)->polling_interval == 5, "value from file");
    CHECK(ts_config_settings(L)->summary_enabled == 0, "false inside a section overrides a true default");
    remove(path);
    /* A setting C reads that the option table lacks fails the load instead of
     * yielding a C-side default. */
    const char *logp = "/tmp/tstats_test_core_log.txt";
    ts_log_open(logp);
    luaL_dostring(L, "require('options').by_key['collect.timeout'].type = 'boolean'");
    CHECK(ts_config_load(L, NULL) == -1, "a C setting whose option type differs refuses the load");
    luaL_dostring(L, "require('options').by_key['collect.timeout'].type = 'number'");
    ts_log_open(NULL);
    FILE *lf = fopen(logp, "r");
    char logbuf[4096] = "";
    if (lf) { logbuf[fread(logbuf, 1, sizeof logbuf - 1, lf)] = '\0'; fclose(lf); }
    remove(logp);
    CHECK(strstr(logbuf, "internal: C reads setting 'collect.timeout' as number, but lua/options.lua declares it boolean") != NULL,
          "the log names the setting: %s", logbuf);
    CHECK(ts_config_load(L, NULL) == 0, "loads again once the option is back");
    CHECK(ts_config_settings(L)->collect.timeout == 4, "collect.timeout from the option table's default");
    ts_lua_close(L);
}

int main(void) {
    ts_log_set_level(TS_LOG_WARN);
    test_parse_number();
    test_parse_number_vs_strtod();
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L || ts_config_load(L, NULL) != 0) { printf("FAIL: Lua state\n"); return 1; }
    test_scan_token_cap();
    test_pipeline(L);
    test_sample_hook(L);
    test_runtime_guards(L);
    ts_lua_close(L);
    test_heap_cap();
    test_config();
    return check_report("test_core");
}
