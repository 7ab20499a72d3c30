/* In-process benchmark of the poll hot path (C core + the embedded Lua
 * mappings, no network): a generated Traffic Monitor CacheStats + DsStats
 * payload goes through scanner → mapping caches → compact batch → line
 * protocol, next to a naive pure-Lua version of the same mapping (cjson.decode,
 * a loop per sample, string.format per line) and a per-sample Lua hook.
 * With --catchup it replays a backlog through the real writer into influxd.
 * Every figure it prints is measured in that run (scripts/bench runs it). */
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "bench_util.h"
#include "ts_api.h"
#include "ts_collect.h"
#include "ts_config.h"
#include "ts_lua.h"
#include "ts_mapping.h"
#include "ts_writer.h"
#include "ts_derive.h"
#include "ts_log.h"
#include "ts_scan.h"
#include "ts_scan_yajl.h"

/* ---- options ------------------------------------------------------------- */
typedef struct opts {
    int caches, stats, ds, cgs, iters, naive_iters, hook_iters;
    size_t feed;                 /* bytes per scanner feed, as curl hands them over */
    const char *catchup_url, *catchup_db;
    long long catchup_points;
    int influxd_pid;
    long publish_size, inflight;
    int chosen_only;             /* --chosen-only: skip the baseline, parsers and hook (for profilers) */
    int derive_iters;            /* polls of the derived-metrics comparison */
    int derive_only;             /* --derive-only: the chosen design, then only that comparison */
    const char *derive_set;      /* --derive-set NAME: only lua/metrics/NAME.lua (default: both shipped sets) */
    long long poll_budget_ms;    /* --poll-budget-ms: lua.poll_budget_ms of the bench's mappers */
    int derive_separate;         /* --derive-separate: the pass without definitions on mappers of its own */
} opts;

static void usage(void) {
    fputs("usage: bench_pipeline [--caches N] [--stats M] [--ds D] [--cachegroups G] [--iters K]\n"
          "                      [--naive-iters K] [--hook-iters K] [--feed BYTES] [--chosen-only]\n"
          "                      [--derive-iters K] [--derive-only] [--derive-set NAME]\n"
          "                      [--poll-budget-ms MS] [--derive-separate]\n"
          "       bench_pipeline --catchup INFLUX_URL --db DB [--points N] [--influxd-pid PID]\n"
          "                      [--publish-size N] [--inflight N]   (plus the payload options)\n"
          "--poll-budget-ms MS: the mappers' Lua time per poll (lua.poll_budget_ms); default 86400000\n"
          "  (a day): the bench asks Lua once per name in its cold poll, and a slow run (valgrind,\n"
          "  a loaded machine) must not defer names to the next poll and fail the point check.\n"
          "--derive-separate: the derived-metrics comparison's pass without definitions scans with\n"
          "  mappers of its own (as before 2026-12-02); default: both passes on the same mappers,\n"
          "  the derived path off in one (two instances of the same mappers differ by ~2 ns a sample).\n",
          stderr);
    exit(2);
}

/* ---- clocks -------------------------------------------------------------- */
typedef struct tmark { double wall, cpu; } tmark;
static tmark mark(void) { return (tmark){bench_now_s(CLOCK_MONOTONIC), bench_now_s(CLOCK_PROCESS_CPUTIME_ID)}; }
typedef struct tspan { double wall, cpu; } tspan;
static tspan since(tmark a) { tmark b = mark(); return (tspan){b.wall - a.wall, b.cpu - a.cpu}; }

/* Best and median of a run of timings: the machine is shared, the best
 * iteration is the least disturbed one, the median shows the noise. */
static int dcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double best(double *v, int n) { qsort(v, (size_t)n, sizeof *v, dcmp); return v[0]; }
static double median(double *v, int n) { qsort(v, (size_t)n, sizeof *v, dcmp); return v[n / 2]; }

/* ---- payload generation -------------------------------------------------- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* Stat names as TM's legacy CacheStats carries them for an ATS cache (the
 * astats names Traffic Stats polls), then synthetic ones up to --stats. */
static const char *BASE_STATS[] = {
    "bandwidth", "maxKbps", "inBytes", "outBytes", "speed", "loadavg", "availableBandwidthInKbps",
    "ats.proxy.process.http.current_client_connections", "ats.proxy.process.http.current_server_connections",
    "ats.proxy.process.http.completed_requests", "ats.proxy.process.http.total_incoming_connections",
    "ats.proxy.process.http.transaction_counts.hit_fresh", "ats.proxy.process.http.transaction_counts.miss_cold",
    "ats.proxy.process.http.2xx_responses", "ats.proxy.process.http.3xx_responses",
    "ats.proxy.process.http.4xx_responses", "ats.proxy.process.http.5xx_responses",
    "ats.proxy.process.cache.volume_1.wrap_count", "ats.proxy.process.cache.bytes_used",
    "ats.proxy.process.cache.bytes_total", "ats.proxy.process.cache.ram_cache.hits",
    "ats.proxy.process.cache.ram_cache.misses", "ats.proxy.process.net.read_bytes",
    "ats.proxy.process.net.write_bytes", "ats.proxy.process.ssl.total_handshake_time",
    "ats.proxy.process.ssl.cipher.user_agent.ECDHE-RSA-AES128-GCM-SHA256",
    "ats.proxy.process.ssl.cipher.user_agent.ECDHE-ECDSA-AES256-GCM-SHA384",
    "ats.proxy.process.ssl.user_agent_session_hit", "ats.proxy.process.ssl.user_agent_session_miss",
    "ats.proxy.process.http.origin_server_total_response_bytes", "ats.proxy.process.http.user_agent_total_response_bytes",
    "ats.proxy.process.eventloop.time.max", "system.proc.loadavg", "system.proc.net.dev",
    "system.inf.speed", "ats.proxy.node.restarts.proxy.restart_count", "ats.proxy.process.http.tcp_hit_count_stat",
    "ats.proxy.process.http.tcp_miss_count_stat", "ats.proxy.process.http.err_client_abort_count_stat",
    "ats.proxy.process.http.background_fill_bytes_aborted_stat",
};
#define NBASE (int)(sizeof BASE_STATS / sizeof BASE_STATS[0])

static const char *DS_STATS[] = {"kbps", "tps_total", "tps_2xx", "tps_3xx", "tps_4xx", "tps_5xx",
                                 "status_2xx", "status_3xx", "status_4xx", "status_5xx", "out_bytes", "in_bytes"};
#define NDS_STATS (int)(sizeof DS_STATS / sizeof DS_STATS[0])

/* A value as TM prints it: it relays the astats text, so counters are
 * integer strings, some gauges come "%g"-style, DS rates "%f"-style. */
static void put_value(ts_buf *b, int stat_index) {
    uint64_t r = rnd();
    switch (stat_index % 8) {
    case 0: case 1: case 2: case 3:
        ts_buf_printf(b, "%llu", (unsigned long long)(r % 900000000000ULL));
        break;
    case 4:
        ts_buf_printf(b, "%.8e", (double)(r % 100000000000ULL) * 1.01);   /* "2.62200722e+10" */
        break;
    case 5:
        ts_buf_printf(b, "%f", (double)(r % 100000) / 8.0);                /* "12.500000" */
        break;
    case 6:
        ts_buf_printf(b, "%g", (double)(r % 1000000) / 1000.0);            /* "0.25", "731.2" */
        break;
    default:
        ts_buf_printf(b, "%llu", (unsigned long long)(r % 100));
        break;
    }
}

static void stat_name(char *out, size_t n, int i) {
    if (i < NBASE) snprintf(out, n, "%s", BASE_STATS[i]);
    else snprintf(out, n, "ats.proxy.process.synthetic.stat_%03d", i);
}

static void cache_name(char *out, size_t n, int i, int cgs) {
    snprintf(out, n, "%s-cg%02d-%05d", i % 5 == 4 ? "mid" : "edge", i % cgs, i);
}

static void cg_name(char *out, size_t n, int k, int cgs) {
    /* the last cache group has a dot in its name, as real ones sometimes do */
    if (k == cgs - 1) snprintf(out, n, "us.east-%02d", k);
    else snprintf(out, n, "cg-%02d", k);
}

/* {"pp":..,"date":..,"caches":{"<host>":{"<stat>":[{"value":"..","time":ms,"span":n}]}}} */
static void gen_cachestats(ts_buf *b, const opts *o, int64_t t0, size_t *expect) {
    char name[128];
    ts_buf_adds(b, "{\"pp\":\"hc=[1], wildcard=[1], stats=[...]\",\"date\":\"Thu May 14 15:48:55 UTC 2020\",\"caches\":{");
    *expect = 0;
    for (int c = 0; c < o->caches; c++) {
        cache_name(name, sizeof name, c, o->cgs);
        ts_buf_printf(b, "%s\"%s\":{", c ? "," : "", name);
        /* Traffic Monitor stamps a cache's stats with the time of the poll
         * result they came from: one time per cache */
        long long tc = (long long)(t0 + (int64_t)(rnd() % 900));
        for (int s = 0; s < o->stats; s++) {
            stat_name(name, sizeof name, s);
            ts_buf_printf(b, "%s\"%s\":[{\"value\":\"", s ? "," : "", name);
            put_value(b, s);
            ts_buf_printf(b, "\",\"time\":%lld,\"span\":%d}]", tc, 1 + (int)(rnd() % 480));
            (*expect)++;
        }
        ts_buf_adds(b, "}");
    }
    ts_buf_adds(b, "}}");
}

/* {"deliveryService":{"<ds>":{"<key>":[{"time":ms,"value":".."}]}}} with the
 * unprefixed stats and TM's location.location.<cg>.isAvailable quirk keys,
 * which the stock mapping drops. */
static void gen_dsstats(ts_buf *b, const opts *o, int64_t t0, size_t *expect) {
    char cg[64];
    static const char *unprefixed[] = {"caches-configured", "caches-reporting", "caches-available", "status",
                                       "isHealthy", "isAvailable", "error-string"};
    ts_buf_adds(b, "{\"pp\":\"\",\"date\":\"Thu May 14 15:48:55 UTC 2020\",\"deliveryService\":{");
    *expect = 0;
    for (int d = 0; d < o->ds; d++) {
        ts_buf_printf(b, "%s\"ds-%04d\":{", d ? "," : "", d);
        int first = 1;
        for (size_t u = 0; u < sizeof unprefixed / sizeof unprefixed[0]; u++) {
            ts_buf_printf(b, "%s\"%s\":[{\"time\":%lld,\"value\":\"%s\"}]", first ? "" : ",", unprefixed[u],
                          (long long)t0, u < 3 ? "12" : u == 3 ? "REPORTED" : u < 6 ? "true" : "");
            first = 0;
        }
        ts_buf_printf(b, ",\"disabledLocations\":[{\"time\":%lld,\"value\":[]}]", (long long)t0);
        cg_name(cg, sizeof cg, d % o->cgs, o->cgs);
        const char *prefixes[3] = {"total", "type.EDGE", NULL};
        char loc[96];
        snprintf(loc, sizeof loc, "location.%s", cg);
        prefixes[2] = loc;
        for (int p = 0; p < 3; p++)
            for (int s = 0; s < NDS_STATS; s++) {
                ts_buf_printf(b, ",\"%s.%s\":[{\"time\":%lld,\"value\":\"", prefixes[p], DS_STATS[s], (long long)t0);
                put_value(b, s < 6 ? 5 : 0);
                ts_buf_adds(b, "\"}]");
                (*expect)++;
            }
        ts_buf_printf(b, ",\"location.location.%s.isAvailable\":[{\"time\":%lld,\"value\":\"true\"}]", cg, (long long)t0);
        ts_buf_printf(b, ",\"location.type.EDGE.isAvailable\":[{\"time\":%lld,\"value\":\"true\"}]", (long long)t0);
        ts_buf_adds(b, "}");
    }
    ts_buf_adds(b, "}}");
}

/* ctx as lua/plan.lua builds it: servers map of every cache of the payload. */
static int make_ctx(lua_State *L, const opts *o) {
    static const char *src =
        "local n, cgs = ...\n"
        "local servers = {}\n"
        "for i = 0, n - 1 do\n"
        "  local kind = (i % 5 == 4) and 'mid' or 'edge'\n"
        "  local k = i % cgs\n"
        "  local cg = (k == cgs - 1) and string.format('us.east-%02d', k) or string.format('cg-%02d', k)\n"
        "  servers[string.format('%s-cg%02d-%05d', kind, k, i)] =\n"
        "    { hostName = '', cacheGroup = cg, type = kind == 'mid' and 'MID' or 'EDGE', cdn = 'cdn1', status = 'REPORTED' }\n"
        "end\n"
        "return { cdn = 'cdn1', endpoint = 'CacheStats', servers = servers, config = tstats.config }\n";
    if (luaL_loadstring(L, src) != LUA_OK) { fprintf(stderr, "ctx: %s\n", lua_tostring(L, -1)); exit(1); }
    lua_pushinteger(L, o->caches);
    lua_pushinteger(L, o->cgs);
    if (ts_lua_pcall(L, 2, 1, "bench ctx", 0) != 0) exit(1);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- the chosen pipeline: scanner sink as src/collect.c wires it --------- */
typedef struct bpipe {
    ts_mapper *m;
    ts_derive_ep *dep;           /* derived metrics fed by this scan, or NULL */
    ts_batch *b;
    uint64_t nonnum, hook_dropped;
    ts_cpoint *rec;              /* catch-up: record the points instead of batching them */
    size_t nrec, caprec;
} bpipe;

static void *p_entity(void *ud, const char *n, size_t l) {
    const ts_entity_map *e = ts_mapper_entity(((bpipe *)ud)->m, n, l);
    return e->keep ? (void *)e : NULL;
}
static void *p_stat(void *ud, void *ent, const char *n, size_t l) {
    (void)ent;
    const ts_stat_map *s = ts_mapper_stat(((bpipe *)ud)->m, n, l);
    return s->keep ? (void *)s : NULL;
}
static void p_sample(void *ud, void *ent, void *stv, const char *v, size_t vl, int kind, int64_t t, int has_t) {
    bpipe *p = ud;
    const ts_stat_map *st = stv;
    double d;
    if (!has_t) return;
    if (kind == TS_VAL_OTHER || !ts_parse_number(v, vl, &d)) { p->nonnum++; return; }
    if (st->hook_ref != LUA_NOREF && ts_mapper_sample_hook(p->m, st, &d, v, t) != 0) { p->hook_dropped++; return; }
    ts_cpoint cp = {st, ent, d, t};
    if (st->derive && p->dep) ts_derive_sample(p->dep, &cp);   /* as src/collect.c: one pointer test */
    if (p->rec) {
        if (p->nrec == p->caprec) {
            p->rec = realloc(p->rec, (p->caprec *= 2) * sizeof *p->rec);
            if (!p->rec) abort();
        }
        p->rec[p->nrec++] = cp;
        return;
    }
    ts_batch_add_compact(p->b, &cp);
}

/* Scan one payload into a fresh compact batch (returned), fed in pieces of
 * `feed` bytes as curl would hand them over. */
static ts_batch *scan_map(ts_mapper *m, ts_scan_kind kind, const ts_buf *json, size_t feed, bpipe *p) {
    static const ts_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    p->m = m;
    ts_mapper_begin_poll(m);     /* each scan is a poll of one endpoint, as src/collect.c starts them */
    p->b = ts_batch_new_compact(&dest, ts_mapper_owner(m));
    ts_scan_sink sink = {p_entity, p_stat, p_sample, p};
    ts_scan *s = ts_scan_new(kind, &sink);
    for (size_t off = 0; off < json->len; off += feed) {
        size_t n = json->len - off < feed ? json->len - off : feed;
        if (ts_scan_feed(s, json->data + off, n) != 0) { fprintf(stderr, "scan: %s\n", ts_scan_error(s)); exit(1); }
    }
    if (ts_scan_finish(s) != 0) { fprintf(stderr, "scan finish: %s\n", ts_scan_error(s)); exit(1); }
    ts_scan_free(s);
    return p->b;
}

/* A sink that maps nothing: the scanner's own speed. */
static int null_handle;
static void *null_entity(void *ud, const char *n, size_t l) { (void)ud; (void)n; (void)l; return &null_handle; }
static void *null_stat(void *ud, void *e, const char *n, size_t l) { (void)ud; (void)e; (void)n; (void)l; return &null_handle; }
static void null_sample(void *ud, void *e, void *s, const char *v, size_t vl, int k, int64_t t, int ht) {
    (void)e; (void)s; (void)v; (void)vl; (void)k; (void)t; (void)ht;
    (*(uint64_t *)ud)++;
}

/* The two scanner implementations behind one table, to time them alike. */
typedef struct scan_impl {
    ts_scan *(*new_)(ts_scan_kind, const ts_scan_sink *);
    int (*feed)(ts_scan *, const char *, size_t);
    int (*finish)(ts_scan *);
    void (*free_)(ts_scan *);
} scan_impl;
static const scan_impl scan_linked = {ts_scan_new, ts_scan_feed, ts_scan_finish, ts_scan_free};
static const scan_impl scan_yajl = {ts_scan_yajl_new, ts_scan_yajl_feed, ts_scan_yajl_finish, ts_scan_yajl_free};

/* CPU seconds to scan both payloads with a no-op sink; *samples gets the count. */
static double null_scan(const scan_impl *im, const ts_buf *cs, const ts_buf *ds, size_t feed, uint64_t *samples) {
    *samples = 0;
    ts_scan_sink sink = {null_entity, null_stat, null_sample, samples};
    tmark m = mark();
    for (int which = 0; which < 2; which++) {
        const ts_buf *j = which ? ds : cs;
        ts_scan *sc = im->new_(which ? TS_SCAN_DSSTATS : TS_SCAN_CACHESTATS, &sink);
        for (size_t off = 0; off < j->len; off += feed)
            if (im->feed(sc, j->data + off, j->len - off < feed ? j->len - off : feed) != 0) exit(1);
        if (im->finish(sc) != 0) { fprintf(stderr, "null scan failed\n"); exit(1); }
        im->free_(sc);
    }
    return since(m).cpu;
}

/* ---- the naive baseline: the same mapping the obvious way in pure Lua ---- */
static const char NAIVE_LUA[] =
    "local cjson = require 'cjson'\n"
    "local function esc_tag(s) return (s:gsub('[ ,=]', '\\\\%0')) end\n"
    "local function esc_meas(s) return (s:gsub('[ ,]', '\\\\%0')) end\n"
    /* integral floats as digits, else the shortest of %.15g/%.16g/%.17g that round-trips */
    "local function fmt(v)\n"
    "  if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format('%d', v) end\n"
    "  for p = 15, 17 do\n"
    "    local s = string.format('%.' .. p .. 'g', v)\n"
    "    if p == 17 or tonumber(s) == v then return s end\n"
    "  end\n"
    "end\n"
    "local function tagstr(t)\n"
    "  local keys = {}\n"
    "  for k, v in pairs(t) do if v ~= '' then keys[#keys + 1] = k end end\n"
    "  table.sort(keys)\n"
    "  local parts = {}\n"
    "  for i, k in ipairs(keys) do parts[i] = esc_tag(k) .. '=' .. esc_tag(t[k]) end\n"
    "  return table.concat(parts, ',')\n"
    "end\n"
    "local M = {}\n"
    /* returns the line-protocol body, the line count and the Lua heap (KiB) in use with doc + lines alive */
    "function M.cachestats(body, ctx)\n"
    "  local doc = cjson.decode(body)\n"
    "  local out = {}\n"
    "  for host, stats in pairs(doc.caches) do\n"
    "    local srv = ctx.servers[host]\n"
    "    for name, hist in pairs(stats) do\n"
    "      local s = hist[1]\n"
    "      local v = s and type(s.value) == 'string' and tonumber(s.value)\n"
    "      if v and v == v and v ~= math.huge and v ~= -math.huge and type(s.time) == 'number' then\n"
    "        local meas = name\n"
    "        local i, j = meas:find('.bandwidth', 1, true)\n"
    "        if i then meas = meas:sub(1, i - 1) .. '.kbps' .. meas:sub(j + 1) end\n"
    "        meas = meas:gsub('-', '_')\n"
    "        local tags = { hostname = host, cdn = ctx.cdn }\n"
    "        if srv then tags.cachegroup = srv.cacheGroup; tags.type = srv.type end\n"
    "        out[#out + 1] = string.format('%s,%s value=%s %d', esc_meas(meas), tagstr(tags), fmt(v), s.time)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local kb = collectgarbage('count')\n"
    "  return table.concat(out, '\\n') .. '\\n', #out, kb\n"
    "end\n"
    "function M.dsstats(body, ctx)\n"
    "  local doc = cjson.decode(body)\n"
    "  local out = {}\n"
    "  for ds, stats in pairs(doc.deliveryService) do\n"
    "    for key, hist in pairs(stats) do\n"
    "      local prefix, stat = key:match('^(.*)%.([^.]*)$')\n"
    "      local tags\n"
    "      if prefix and stat ~= '' and stat ~= 'isAvailable' and stat ~= 'error-string' then\n"
    "        if prefix == 'total' then tags = { cachegroup = 'total' }\n"
    "        elseif prefix:match('^type%.(.+)$') then tags = { cachegroup = 'all', type = prefix:match('^type%.(.+)$') }\n"
    "        elseif prefix:match('^location%.(.+)$') and prefix ~= 'location.total' then\n"
    "          tags = { cachegroup = prefix:match('^location%.(.+)$') }\n"
    "        end\n"
    "      end\n"
    "      local s = hist[1]\n"
    "      local v = tags and s and type(s.value) == 'string' and tonumber(s.value)\n"
    "      if v and type(s.time) == 'number' then\n"
    "        tags.deliveryservice = ds; tags.cdn = ctx.cdn\n"
    "        out[#out + 1] = string.format('%s,%s value=%s %d', esc_meas(stat), tagstr(tags), fmt(v), s.time)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local kb = collectgarbage('count')\n"
    "  return table.concat(out, '\\n') .. '\\n', #out, kb\n"
    "end\n"
    "return M\n";

/* Lines of a body as an array of pointers (the body is modified). */
static size_t split_lines(char *s, char ***out) {
    size_t n = 0, cap = 1024;
    char **v = malloc(cap * sizeof *v);
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = line;
    }
    *out = v;
    return n;
}
static int scmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Same set of lines? Returns the number of lines that differ (0 = identical). */
static size_t compare_bodies(const char *a, size_t alen, const char *b, size_t blen, char *ex, size_t exn) {
    char *x = malloc(alen + 1), *y = malloc(blen + 1);
    memcpy(x, a, alen); x[alen] = 0;
    memcpy(y, b, blen); y[blen] = 0;
    char **lx, **ly;
    size_t nx = split_lines(x, &lx), ny = split_lines(y, &ly);
    qsort(lx, nx, sizeof *lx, scmp);
    qsort(ly, ny, sizeof *ly, scmp);
    size_t i = 0, j = 0, diff = 0;
    ex[0] = 0;
    while (i < nx || j < ny) {
        int c = i >= nx ? 1 : j >= ny ? -1 : strcmp(lx[i], ly[j]);
        if (c == 0) { i++; j++; continue; }
        if (!ex[0]) snprintf(ex, exn, "%s: %s", c < 0 ? "only in tstats" : "only in naive", c < 0 ? lx[i] : ly[j]);
        diff++;
        if (c < 0) i++; else j++;
    }
    free(lx); free(ly); free(x); free(y);
    return diff;
}

/* ---- catch-up: replay a backlog through the real writer ------------------ */

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Points of one poll, recorded from the real scanner + mapping. */
static ts_cpoint *record_points(ts_mapper *m, ts_scan_kind kind, const ts_buf *json, size_t feed, size_t *n) {
    bpipe p = {0};
    p.caprec = 1024;
    p.rec = malloc(p.caprec * sizeof *p.rec);
    ts_batch_free(scan_map(m, kind, json, feed, &p));
    *n = p.nrec;
    return p.rec;
}

/* A 1-hour-like backlog: the poll's points repeated with time stamps 10 s
 * apart (ending now), pushed through ts_writer into influxd as fast as it
 * takes them; at most ~3 polls are buffered so memory stays flat. */
static int run_catchup(lua_State *L, const opts *o, ts_mapper *mc, ts_mapper *md, const ts_buf *cs, const ts_buf *dsj,
                       int64_t t0) {
    size_t nc, nd;
    ts_cpoint *pc = record_points(mc, TS_SCAN_CACHESTATS, cs, o->feed, &nc);
    ts_cpoint *pd = record_points(md, TS_SCAN_DSSTATS, dsj, o->feed, &nd);
    size_t per_poll = nc + nd;
    long long polls = (o->catchup_points + (long long)per_poll - 1) / (long long)per_poll;
    const char *urls[2] = {o->catchup_url, NULL};
    ts_writer_opts wo;
    memset(&wo, 0, sizeof wo);
    wo.urls = urls;
    wo.max_publish_size = (size_t)(o->publish_size > 0 ? o->publish_size : ts_config_settings(L)->influxdb.max_publish_size);
    wo.max_inflight = (int)(o->inflight > 0 ? o->inflight : ts_config_settings(L)->influxdb.max_inflight);
    wo.timeout_ms = 60000;
    ts_loop *loop = ts_loop_new();
    ts_writer *w = ts_writer_new(loop, &wo);
    ts_dest dest;
    memset(&dest, 0, sizeof dest);
    snprintf(dest.db, sizeof dest.db, "%s", o->catchup_db);
    dest.precision = TS_PREC_MS;
    int64_t base = ts_now_ms() - polls * 10000;
    printf("\n== catch-up: %lld polls x %zu points = %lld points into %s db=%s (max_publish_size=%zu, max_inflight=%d)\n",
           polls, per_poll, polls * (long long)per_poll, o->catchup_url, o->catchup_db, wo.max_publish_size,
           wo.max_inflight);
    fflush(stdout);
    size_t runs_c = 0, runs_d = 0;   /* entity or time changes: ts_batch_reserve's runs */
    for (size_t i = 0; i < nc; i++) runs_c += i == 0 || pc[i].ent != pc[i - 1].ent || pc[i].time_ms != pc[i - 1].time_ms;
    for (size_t i = 0; i < nd; i++) runs_d += i == 0 || pd[i].ent != pd[i - 1].ent || pd[i].time_ms != pd[i - 1].time_ms;
    double infl0 = o->influxd_pid > 0 ? bench_proc_cpu_s(o->influxd_pid) : -1;
    tmark m0 = mark();
    ts_writer_stats ws;
    for (long long k = 0; k < polls; k++) {
        int64_t shift = base + k * 10000 - t0;
        /* batches as the daemon's collector gets them: on the arrays of sent ones */
        ts_batch *b1 = ts_batch_pool_get(ts_writer_pool(w), &dest, ts_mapper_owner(mc), nc, runs_c);
        for (size_t i = 0; i < nc; i++) { ts_cpoint q = pc[i]; q.time_ms += shift; ts_batch_add_compact(b1, &q); }
        ts_batch *b2 = ts_batch_pool_get(ts_writer_pool(w), &dest, ts_mapper_owner(md), nd, runs_d);
        for (size_t i = 0; i < nd; i++) { ts_cpoint q = pd[i]; q.time_ms += shift; ts_batch_add_compact(b2, &q); }
        ts_writer_submit(w, b1);
        ts_writer_submit(w, b2);
        ts_writer_flush(w);
        for (;;) {
            ts_writer_get_stats(w, &ws);
            if (ws.points_pending <= 2 * per_poll) break;
            ts_loop_run_once(loop, 50);
        }
        if (ws.requests_failed > 0 && ws.points_written == 0) { fprintf(stderr, "catch-up: writes fail; giving up\n"); break; }
    }
    size_t lost = ts_writer_drain(w, ts_mono_ms() + 600000);
    tspan sp = since(m0);
    double infl1 = o->influxd_pid > 0 ? bench_proc_cpu_s(o->influxd_pid) : -1;
    ts_writer_get_stats(w, &ws);
    double icpu = infl0 >= 0 && infl1 >= 0 ? infl1 - infl0 : -1;
    printf("catch-up written (204) %llu, rejected %llu, dropped %llu (lost at drain %zu), requests ok %llu failed %llu, "
           "%.1f MB of line protocol sent\n",
           (unsigned long long)ws.points_written, (unsigned long long)ws.points_rejected,
           (unsigned long long)ws.points_dropped, lost, (unsigned long long)ws.requests_ok,
           (unsigned long long)ws.requests_failed, (double)ws.bytes_sent / 1e6);
    printf("catch-up wall %.1f s: %.0f points/s written\n", sp.wall, (double)ws.points_written / sp.wall);
    printf("catch-up tstats (this process) CPU %.1f s = %.0f%% of one core; %.2f M points per CPU-s\n", sp.cpu,
           100 * sp.cpu / sp.wall, (double)ws.points_written / sp.cpu / 1e6);
    if (icpu >= 0) printf("catch-up influxd CPU %.1f s = %.0f%% of one core (%ld cores here)\n", icpu, 100 * icpu / sp.wall,
                          sysconf(_SC_NPROCESSORS_ONLN));
    const char *who = icpu < 0 ? "unknown (no --influxd-pid)"
                    : icpu > sp.cpu ? "influxd (it used more CPU than tstats; tstats waited on its answers)"
                                    : "tstats (it used more CPU than influxd)";
    printf("catch-up bottleneck: %s\n", who);
    printf("catch-up peak RSS of this process %.1f MB\n", (double)peak_rss_kb() / 1024);
    ts_writer_free(w);
    ts_loop_free(loop);
    free(pc);
    free(pd);
    return ws.points_written > 0 && lost == 0 ? 0 : 1;
}

/* The per-sample hook mapping, written where an operator would put it. */
static const char HOOK_LUA[] =
    "-- bench: the stock CacheStats mapping plus a per-sample hook (bits -> bytes style scaling)\n"
    "local base = require 'mappings.cachestats'\n"
    "local M = { entity = base.entity }\n"
    "local function times8(v) return v * 8 end\n"
    "function M.stat(name, ctx)\n"
    "  local r = base.stat(name, ctx)\n"
    "  if r then r.sample = times8 end\n"
    "  return r\n"
    "end\n"
    "return M\n";

static char *write_hook_dir(void) {
    static char dir[] = "/tmp/bench_pipeline.XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(1); }
    char path[256];
    snprintf(path, sizeof path, "%s/mappings", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/mappings/bench_hook.lua", dir);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(1); }
    fputs(HOOK_LUA, f);
    fclose(f);
    return dir;
}

static void remove_hook_dir(const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/mappings/bench_hook.lua", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/mappings", dir);
    rmdir(path);
    rmdir(dir);
}

static int64_t counter(const char *name) { return ts_counter_get(name)->value; }

/* ---- derived metrics: the five definitions of lua/metrics/<module>.lua ---- */
static uint64_t lua_calls_seen;
static void count_calls(lua_State *L, lua_Debug *ar) { (void)L; (void)ar; lua_calls_seen++; }
static void take_points(void *ud, ts_batch *b) { *(size_t *)ud += ts_batch_points(b); ts_batch_free(b); }

/* The same polls (fresh time stamps and values each, generated outside the
 * timing) through plain mappers and through mappers with the definitions
 * bound, alternately; the difference of the CPU times is what they add.
 * By default both passes scan with the same mappers (the definitions bound
 * to their answers) and one of them has the derived path off (p.dep NULL,
 * the pointer test of src/collect.c): two instances of the same mappers sit
 * at different addresses, and with the derived path doing nothing at all
 * the separate pair still measured +2.0 .. +3.2 ns a sample, the same pair
 * -0.8 .. +1.6 (2026-12-02, 100 polls each). --derive-separate: the old way. */
static int run_derive(lua_State *L, const opts *o, int ctx_ref, const ts_buf *dsj, int64_t t0, const char *module) {
    char src[256];
    snprintf(src, sizeof src, "local m = require('metrics')\nlocal c, p = m.compile({ '%s' })\nreturn c, m.format(p)\n", module);
    if (luaL_loadstring(L, src) != LUA_OK || ts_lua_pcall(L, 0, 2, "metrics.compile", 0) != 0) return 1;
    char err[256];
    ts_derive *d = lua_istable(L, -2) ? ts_derive_new(L, -2, err, sizeof err) : NULL;
    if (!d) { fprintf(stderr, "bench: %s did not compile: %s\n", module, lua_tostring(L, -1)); return 1; }
    lua_pop(L, 2);
    static const ts_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    ts_derive_ep *ec = ts_derive_endpoint(d, "cdn1", "CacheStats", &dest);
    ts_derive_ep *ed = ts_derive_endpoint(d, "cdn1", "DsStats", &dest);   /* NULL: every definition is CacheStats' */
    int refs[4];
    for (int i = 0; i < 4; i++) { lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref); refs[i] = luaL_ref(L, LUA_REGISTRYINDEX); }
    ts_mapper *bc = ts_mapper_new(L, "mappings.cachestats", refs[0], "base cs"), *bd = ts_mapper_new(L, "mappings.dsstats", refs[1], "base ds");
    ts_mapper *dc = ts_mapper_new(L, "mappings.cachestats", refs[2], "derive cs"), *dd = ts_mapper_new(L, "mappings.dsstats", refs[3], "derive ds");
    ts_mapper_set_derive(dc, ec);
    if (ed) ts_mapper_set_derive(dd, ed);
    int n = o->derive_iters + 1;
    double *cb = calloc((size_t)n, sizeof(double)), *cd = calloc((size_t)n, sizeof(double)), *df = calloc((size_t)n, sizeof(double));
    double *cf = calloc((size_t)n, sizeof(double));
    size_t points = 0, dpoints = 0;
    uint64_t warm_lua = 0, warm_map_calls = 0;
    ts_buf cs;
    ts_buf_init(&cs);
    for (int it = 0; it < n; it++) {
        size_t exp_c;
        ts_buf_reset(&cs);
        gen_cachestats(&cs, o, t0 + (int64_t)it * 10000, &exp_c);
        uint64_t mc0 = ts_mapper_lua_calls(dc) + ts_mapper_lua_calls(dd);
        if (it > 0) { lua_calls_seen = 0; lua_sethook(L, count_calls, LUA_MASKCALL, 0); }
        for (int pass = 0; pass < 2; pass++) {
            int with = (pass + it) % 2;      /* alternate which goes first */
            bpipe p = {0};
            size_t got = 0;
            if (with) { ts_derive_begin(ec, &p); if (ed) ts_derive_begin(ed, &p); }
            p.dep = with ? ec : NULL;
            tmark m = mark();
            int on = with || !o->derive_separate;   /* the mappers with the definitions bound */
            ts_batch *b1 = scan_map(on ? dc : bc, TS_SCAN_CACHESTATS, &cs, o->feed, &p);
            p.dep = with ? ed : NULL;
            ts_batch *b2 = scan_map(on ? dd : bd, TS_SCAN_DSSTATS, dsj, o->feed, &p);
            tmark mf = mark();
            if (with) { ts_derive_finish(ec, take_points, &got); if (ed) ts_derive_finish(ed, take_points, &got); }
            if (with) cf[it] = since(mf).cpu;
            double c = since(m).cpu;
            if (with) { cd[it] = c; dpoints = got; } else cb[it] = c;
            points = ts_batch_points(b1) + ts_batch_points(b2);
            ts_batch_free(b1);
            ts_batch_free(b2);
        }
        if (it > 0) {
            lua_sethook(L, NULL, 0, 0);
            warm_lua += lua_calls_seen;
            warm_map_calls += ts_mapper_lua_calls(dc) + ts_mapper_lua_calls(dd) - mc0;
        }
        df[it] = cd[it] - cb[it];
    }
    ts_derive_stats ds;
    ts_derive_get_stats(d, &ds);
    double bb = best(cb + 1, n - 1), db = best(cd + 1, n - 1), dmed = median(df + 1, n - 1), bmed = median(cb + 1, n - 1);
    printf("\n== derived metrics: lua/metrics/%s.lua (2 sums, a rate over every cache, a ratio, a filtered max)\n", module);
    printf("derive: the pass without definitions on %s\n",
           o->derive_separate ? "mappers of its own (--derive-separate)" : "the same mappers, the derived path off");
    printf("derive: %d warm polls, %zu input samples per poll, %zu derived points per poll; %llu samples fed a definition in all\n",
           n - 1, points, dpoints, (unsigned long long)ds.samples);
    printf("derive: Lua calls in the warm polls: %llu (any Lua function, counted by a call hook); mapping calls %llu\n",
           (unsigned long long)warm_lua, (unsigned long long)warm_map_calls);
    printf("derive: scan+map CPU best %.2f ms without, %.2f ms with; median of the per-poll differences %+.3f ms\n", bb * 1e3,
           db * 1e3, dmed * 1e3);
    printf("derive: added cost %.2f ns per input sample (median difference / samples; best-vs-best %.2f), "
           "%+.1f %% CPU per poll (median difference / median poll)\n",
           dmed * 1e9 / (double)points, (db - bb) * 1e9 / (double)points, 100 * dmed / bmed);
    /* distribution-free 95 % interval of the median: the order statistics n/2 -+ 0.98 sqrt(n) of the sorted differences */
    int m = n - 1, lo = (int)floor(m / 2.0 - 0.98 * sqrt((double)m)), hi = (int)ceil(m / 2.0 + 0.98 * sqrt((double)m));
    if (lo < 0) lo = 0;
    if (hi > m - 1) hi = m - 1;
    printf("derive: 95 %% interval of the median difference: %.2f .. %.2f ns per input sample (%.3f .. %.3f ms per poll; %d polls)\n",
           df[1 + lo] * 1e9 / (double)points, df[1 + hi] * 1e9 / (double)points, df[1 + lo] * 1e3, df[1 + hi] * 1e3, m);
    printf("derive: of which the end of the poll (groups -> points -> text batch): median %.3f ms\n", median(cf + 1, n - 1) * 1e3);
    printf("derive: rate first %llu, resets %llu, gaps %llu, repeats %llu; ratio unpaired %llu, undefined %llu\n",
           (unsigned long long)ds.rate_first, (unsigned long long)ds.rate_resets, (unsigned long long)ds.rate_gaps,
           (unsigned long long)ds.rate_repeats, (unsigned long long)ds.ratio_unpaired, (unsigned long long)ds.undefined);
    printf("derive: state held after the polls: %.0f KB (ts_derive_mem: every block of the engine's state as malloc sized it)\n",
           (double)ts_derive_mem(d) / 1024);
    ts_buf_free(&cs);
    free(cb); free(cd); free(df); free(cf);
    ts_mapper_release(bc); ts_mapper_release(bd); ts_mapper_release(dc); ts_mapper_release(dd);
    ts_derive_release(d);
    return warm_lua == 0 && warm_map_calls == 0 && dpoints > 0 ? 0 : 1;
}

/* The default configuration with lua.poll_budget_ms replaced: the
 * bench's cold polls ask Lua once per name, which under valgrind or on a
 * loaded machine can take longer than the daemon's default budget; names it
 * then defers would be missing from the poll and fail the point check. */
static int load_config(lua_State *L, long long budget_ms) {
    char path[] = "/tmp/bench_pipeline_conf.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { perror("mkstemp"); return -1; }
    FILE *f = fdopen(fd, "w");
    if (!f) { perror(path); close(fd); remove(path); return -1; }
    /* the two required keys as the embedded default has them: the bench connects to neither */
    fprintf(f, "return { traffic_ops = { url = 'http://127.0.0.1:6443' }, influxdb = { urls = { 'http://127.0.0.1:8086' } },\n"
               "         summary = { sinks = {} },\n"
               "         lua = { poll_budget_ms = %lld } }\n", budget_ms);
    fclose(f);
    int rc = ts_config_load(L, path);
    remove(path);
    return rc;
}

/* First "value=<x>" of a body. */
static double first_value(const char *body) {
    const char *p = strstr(body, " value=");
    return p ? strtod(p + 7, NULL) : NAN;
}

/* ---- main ---------------------------------------------------------------- */
int main(int argc, char **argv) {
    opts o = {.caches = 2000, .stats = 40, .ds = 100, .cgs = 10, .iters = 10, .naive_iters = 3, .hook_iters = 3, .derive_iters = 20,
              .feed = 16384, .catchup_points = 30000000, .publish_size = 0, .inflight = 0, .poll_budget_ms = 86400000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (OPT("--caches")) o.caches = atoi(v);
        else if (OPT("--stats")) o.stats = atoi(v);
        else if (OPT("--ds")) o.ds = atoi(v);
        else if (OPT("--cachegroups")) o.cgs = atoi(v);
        else if (OPT("--iters")) o.iters = atoi(v);
        else if (OPT("--naive-iters")) o.naive_iters = atoi(v);
        else if (OPT("--hook-iters")) o.hook_iters = atoi(v);
        else if (OPT("--feed")) o.feed = (size_t)atol(v);
        else if (OPT("--catchup")) o.catchup_url = v;
        else if (OPT("--db")) o.catchup_db = v;
        else if (OPT("--points")) o.catchup_points = atoll(v);
        else if (OPT("--influxd-pid")) o.influxd_pid = atoi(v);
        else if (OPT("--publish-size")) o.publish_size = atol(v);
        else if (OPT("--inflight")) o.inflight = atol(v);
        else if (strcmp(a, "--chosen-only") == 0) o.chosen_only = 1;
        else if (OPT("--derive-iters")) o.derive_iters = atoi(v);
        else if (strcmp(a, "--derive-only") == 0) o.derive_only = 1;
        else if (OPT("--derive-set")) o.derive_set = v;
        else if (OPT("--poll-budget-ms")) o.poll_budget_ms = atoll(v);
        else if (strcmp(a, "--derive-separate") == 0) o.derive_separate = 1;
        else usage();
#undef OPT
    }
    if (o.caches < 1 || o.stats < 1 || o.ds < 0 || o.cgs < 1 || o.iters < 2 || o.naive_iters < 1 ||
        o.hook_iters < 1 || o.derive_iters < 2 || o.feed < 1 || o.poll_budget_ms < 1 || (o.catchup_url && (!o.catchup_db || o.catchup_points < 1)))
        usage();
    ts_log_set_level(TS_LOG_WARN);
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L || load_config(L, o.poll_budget_ms) != 0) { fprintf(stderr, "bench: Lua state / embedded config failed\n"); return 1; }

    int64_t t0 = ts_now_ms() - 5000;
    ts_buf cs, dsj;
    ts_buf_init(&cs);
    ts_buf_init(&dsj);
    size_t exp_c, exp_d;
    gen_cachestats(&cs, &o, t0, &exp_c);
    gen_dsstats(&dsj, &o, t0, &exp_d);
    int ctx_ref = make_ctx(L, &o);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    int ctx_ref2 = luaL_ref(L, LUA_REGISTRYINDEX);      /* each mapper owns (and unrefs) its own ref */
    ts_mapper *mc = ts_mapper_new(L, "mappings.cachestats", ctx_ref, "bench cachestats");
    ts_mapper *md = ts_mapper_new(L, "mappings.dsstats", ctx_ref2, "bench dsstats");
    if (!mc || !md) { fprintf(stderr, "bench: stock mappings did not load\n"); return 1; }

    if (o.catchup_url) {
        if (ts_http_global_init() != 0) return 1;
        int rc = run_catchup(L, &o, mc, md, &cs, &dsj, t0);
        ts_mapper_release(mc);
        ts_mapper_release(md);
        ts_buf_free(&cs);
        ts_buf_free(&dsj);
        ts_lua_close(L);
        ts_http_global_cleanup();
        return rc;
    }

    double json_mb = (double)(cs.len + dsj.len) / 1e6;
    printf("== bench_pipeline: in-process scan+map+encode, no network\n");
    printf("payload: CacheStats %d caches x %d stats = %.2f MB, DsStats %d DS = %.2f MB (feed %zu B pieces)\n", o.caches,
           o.stats, (double)cs.len / 1e6, o.ds, (double)dsj.len / 1e6, o.feed);
    printf("lua.poll_budget_ms = %lld for every mapper (--poll-budget-ms; large so a slow run never defers names)\n",
           o.poll_budget_ms);

    /* ---- chosen design ---- */
    int n = o.iters;
    double *sm_w = calloc((size_t)n, sizeof(double)), *sm_c = calloc((size_t)n, sizeof(double));
    double *en_w = calloc((size_t)n, sizeof(double)), *en_c = calloc((size_t)n, sizeof(double));
    double *cs_c = calloc((size_t)n, sizeof(double));
    uint64_t *calls = calloc((size_t)n, sizeof(uint64_t));
    size_t points = 0, lp_bytes = 0;
    ts_buf out;
    ts_buf_init(&out);
    for (int it = 0; it < n; it++) {
        bpipe p = {0};
        uint64_t c0 = ts_mapper_lua_calls(mc) + ts_mapper_lua_calls(md);
        tmark m = mark();
        ts_batch *b1 = scan_map(mc, TS_SCAN_CACHESTATS, &cs, o.feed, &p);
        tspan s1 = since(m);
        ts_batch *b2 = scan_map(md, TS_SCAN_DSSTATS, &dsj, o.feed, &p);
        tspan s = since(m);
        calls[it] = ts_mapper_lua_calls(mc) + ts_mapper_lua_calls(md) - c0;
        sm_w[it] = s.wall;
        sm_c[it] = s.cpu;
        cs_c[it] = s1.cpu;
        points = ts_batch_points(b1) + ts_batch_points(b2);
        if (points != exp_c + exp_d) {
            fprintf(stderr, "bench: %zu points, expected %zu (non-numeric %llu)\n", points, exp_c + exp_d,
                    (unsigned long long)p.nonnum);
            return 1;
        }
        ts_buf_reset(&out);
        m = mark();
        ts_batch_encode(b1, &out);
        ts_batch_encode(b2, &out);
        s = since(m);
        en_w[it] = s.wall;
        en_c[it] = s.cpu;
        lp_bytes = out.len;
        ts_batch_free(b1);
        ts_batch_free(b2);
    }
    /* iteration 0 is the cold one (Lua asked once per name): reported apart */
    double smw0 = sm_w[0], smc0 = sm_c[0];
    uint64_t warm_calls = 0;
    for (int it = 1; it < n; it++) warm_calls += calls[it];
    double smw_b = best(sm_w + 1, n - 1), smw_m = median(sm_w + 1, n - 1);
    double smc_b = best(sm_c + 1, n - 1), smc_m = median(sm_c + 1, n - 1);
    double enw_b = best(en_w + 1, n - 1), enw_m = median(en_w + 1, n - 1);
    double enc_b = best(en_c + 1, n - 1), enc_m = median(en_c + 1, n - 1);
    double cs_only = best(cs_c + 1, n - 1);
    printf("points per iteration: %zu (CacheStats %zu + DsStats %zu); line protocol %.2f MB\n", points, exp_c, exp_d,
           (double)lp_bytes / 1e6);
    printf("Lua calls: first iteration %llu (one per distinct stat name + cache + DS key + DS), "
           "next %d iterations %llu in total\n",
           (unsigned long long)calls[0], n - 1, (unsigned long long)warm_calls);
    printf("%-26s %12s %12s %12s %12s\n", "warm iterations (best/med)", "CPU ms", "MB/s JSON", "Mpoints/s", "ns/point");
    printf("%-26s %5.1f/%-6.1f %5.0f/%-6.0f %5.2f/%-6.2f %5.0f/%-6.0f\n", "scan+map (CPU time)", smc_b * 1e3, smc_m * 1e3,
           json_mb / smc_b, json_mb / smc_m, points / smc_b / 1e6, points / smc_m / 1e6, smc_b * 1e9 / points,
           smc_m * 1e9 / points);
    printf("%-26s %5.1f/%-6.1f %5.0f/%-6.0f %5.2f/%-6.2f %5.0f/%-6.0f\n", "scan+map (wall)", smw_b * 1e3, smw_m * 1e3,
           json_mb / smw_b, json_mb / smw_m, points / smw_b / 1e6, points / smw_m / 1e6, smw_b * 1e9 / points,
           smw_m * 1e9 / points);
    printf("%-26s %5.1f/%-6.1f %12s %5.2f/%-6.2f %5.0f/%-6.0f  (%.0f MB/s of line protocol)\n", "encode (CPU time)",
           enc_b * 1e3, enc_m * 1e3, "-", points / enc_b / 1e6, points / enc_m / 1e6, enc_b * 1e9 / points,
           enc_m * 1e9 / points, (double)lp_bytes / 1e6 / enc_b);
    printf("%-26s %5.1f/%-6.1f %12s %5.2f/%-6.2f %5.0f/%-6.0f\n", "encode (wall)", enw_b * 1e3, enw_m * 1e3, "-",
           points / enw_b / 1e6, points / enw_m / 1e6, enw_b * 1e9 / points, enw_m * 1e9 / points);
    printf("cold first iteration scan+map: %.1f ms wall, %.1f ms CPU (includes the Lua calls)\n", smw0 * 1e3, smc0 * 1e3);
    double chosen = smc_b + enc_b;
    printf("chosen total (best scan+map + best encode, CPU): %.1f ms = %.2f M points/s; Lua heap %.2f MB\n",
           chosen * 1e3, points / chosen / 1e6, (double)ts_lua_mem_used(L) / 1e6);

    int derive_rc = 0;
    if (!o.chosen_only && o.derive_set) derive_rc = run_derive(L, &o, ctx_ref, &dsj, t0, o.derive_set);
    else if (!o.chosen_only)
        derive_rc = run_derive(L, &o, ctx_ref, &dsj, t0, "cache_health") | run_derive(L, &o, ctx_ref, &dsj, t0, "cdn_summary");
    if (o.chosen_only || o.derive_only) {
        ts_buf_free(&out);
        ts_mapper_release(mc);
        ts_mapper_release(md);
        ts_buf_free(&cs);
        ts_buf_free(&dsj);
        free(sm_w); free(sm_c); free(en_w); free(en_c); free(cs_c); free(calls);
        ts_lua_close(L);
        return warm_calls == 0 && derive_rc == 0 ? 0 : 1;
    }

    /* ---- naive baseline in the same Lua state ---- */
    if (luaL_loadstring(L, NAIVE_LUA) != LUA_OK || ts_lua_pcall(L, 0, 1, "naive module", 0) != 0) {
        fprintf(stderr, "bench: naive module: %s\n", lua_tostring(L, -1));
        return 1;
    }
    int naive_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlstring(L, cs.data, cs.len);
    int cs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlstring(L, dsj.data, dsj.len);
    int ds_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int nn = o.naive_iters;
    double *nv_w = calloc((size_t)nn, sizeof(double)), *nv_c = calloc((size_t)nn, sizeof(double));
    double heap_mb = 0;
    size_t naive_lines = 0, diff = 0;
    char example[512] = "";
    for (int it = 0; it < nn; it++) {
        lua_gc(L, LUA_GCCOLLECT);
        double base_kb = (double)ts_lua_mem_used(L) / 1024;
        double peak_kb = 0;
        ts_buf nb;
        ts_buf_init(&nb);
        naive_lines = 0;
        tmark m = mark();
        for (int which = 0; which < 2; which++) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, naive_ref);
            lua_getfield(L, -1, which ? "dsstats" : "cachestats");
            lua_remove(L, -2);
            lua_rawgeti(L, LUA_REGISTRYINDEX, which ? ds_ref : cs_ref);
            lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
            if (ts_lua_pcall(L, 2, 3, "naive", 0) != 0) return 1;
            size_t bl;
            const char *body = lua_tolstring(L, -3, &bl);
            naive_lines += (size_t)lua_tointeger(L, -2);
            double kb = lua_tonumber(L, -1);
            if (kb > peak_kb) peak_kb = kb;
            if (it == nn - 1) ts_buf_add(&nb, body, bl);
            lua_pop(L, 3);
        }
        tspan s = since(m);
        nv_w[it] = s.wall;
        nv_c[it] = s.cpu;
        if (peak_kb - base_kb > heap_mb * 1024) heap_mb = (peak_kb - base_kb) / 1024;
        if (it == nn - 1) diff = compare_bodies(out.data, out.len, nb.data, nb.len, example, sizeof example);
        ts_buf_free(&nb);
    }
    lua_gc(L, LUA_GCCOLLECT);
    double nvc_b = best(nv_c, nn), nvc_m = median(nv_c, nn), nvw_b = best(nv_w, nn);
    printf("\n== naive baseline: pure Lua in the same state (cjson.decode, loop per sample, string.format per line, "
           "table.concat)\n");
    printf("naive: %zu lines; %s\n", naive_lines,
           diff == 0 ? "output identical to tstats' (same set of lines)" : "OUTPUT DIFFERS from tstats'");
    if (diff) printf("naive: %zu lines differ, e.g. %s\n", diff, example);
    printf("naive: best %.0f ms CPU (median %.0f, best wall %.0f) = %.2f M points/s, %.0f MB/s of JSON, %.0f ns/point\n",
           nvc_b * 1e3, nvc_m * 1e3, nvw_b * 1e3, points / nvc_b / 1e6, json_mb / nvc_b, nvc_b * 1e9 / points);
    printf("naive: Lua heap needed %.1f MB (doc + lines alive, GC running) = %.1fx the %.1f MB of JSON\n", heap_mb,
           heap_mb / json_mb, json_mb);
    printf("ratio chosen/naive (points per CPU-second, scan+map+encode vs decode+loop+format): %.1fx\n",
           nvc_b / chosen);

    /* ---- the parsers alone: what the JSON library choice costs ---- */
    {
        double *yw = calloc((size_t)n, sizeof(double)), *xw = calloc((size_t)n, sizeof(double));
        double *cw = calloc((size_t)nn, sizeof(double));
        uint64_t ns = 0, nx = 0;
        for (int it = 0; it < n; it++) {
            yw[it] = null_scan(&scan_linked, &cs, &dsj, o.feed, &ns);
            xw[it] = null_scan(&scan_yajl, &cs, &dsj, o.feed, &nx);
        }
        static const char DECODE_LUA[] =
            "local cjson = require 'cjson'\n"
            "return function(a, b)\n"
            "  local x, y = cjson.decode(a), cjson.decode(b)\n"
            "  return collectgarbage('count')\n"
            "end\n";
        if (luaL_loadstring(L, DECODE_LUA) != LUA_OK || ts_lua_pcall(L, 0, 1, "decode chunk", 0) != 0) return 1;
        int dec_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        double dheap = 0;
        for (int it = 0; it < nn; it++) {
            lua_gc(L, LUA_GCCOLLECT);
            double base_kb = (double)ts_lua_mem_used(L) / 1024;
            lua_rawgeti(L, LUA_REGISTRYINDEX, dec_ref);
            lua_rawgeti(L, LUA_REGISTRYINDEX, cs_ref);
            lua_rawgeti(L, LUA_REGISTRYINDEX, ds_ref);
            tmark m = mark();
            if (ts_lua_pcall(L, 2, 1, "decode", 0) != 0) return 1;
            cw[it] = since(m).cpu;
            double kb = lua_tonumber(L, -1) - base_kb;
            if (kb / 1024 > dheap) dheap = kb / 1024;
            lua_pop(L, 1);
        }
        luaL_unref(L, LUA_REGISTRYINDEX, dec_ref);
        lua_gc(L, LUA_GCCOLLECT);
        double yb = best(yw + 1, n - 1), xb = best(xw + 1, n - 1), cb = best(cw, nn);
        printf("\n== the JSON parsers alone, same payload (CPU, best)\n");
        printf("ts_scan (the scanner linked into tstats), no-op sink: %.1f ms = %.0f MB/s (%llu samples; streaming)\n",
               yb * 1e3, json_mb / yb, (unsigned long long)ns);
        printf("yajl reference scanner (ts_scan_yajl_*), no-op sink: %.1f ms = %.0f MB/s (%llu samples; streaming)\n",
               xb * 1e3, json_mb / xb, (unsigned long long)nx);
        printf("lua-cjson decode of the whole document: %.1f ms = %.0f MB/s, Lua heap %.1f MB = %.1fx the JSON\n", cb * 1e3,
               json_mb / cb, dheap, dheap / json_mb);
        free(yw);
        free(xw);
        free(cw);
    }

    /* ---- per-sample Lua hook ---- */
    char *dir = write_hook_dir();
    ts_lua_set_script_dir(L, dir);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    int ctx_ref3 = luaL_ref(L, LUA_REGISTRYINDEX);
    ts_mapper *mh = ts_mapper_new(L, "mappings.bench_hook", ctx_ref3, "bench hook");
    if (!mh) { fprintf(stderr, "bench: hook mapping did not load from %s\n", dir); return 1; }
    int nh = o.hook_iters + 1;
    double *hk_c = calloc((size_t)nh, sizeof(double));
    int64_t hooks = 0;
    double v_plain = first_value(out.data), v_hook = NAN;
    for (int it = 0; it < nh; it++) {
        bpipe p = {0};
        int64_t h0 = counter("mapping_sample_hook_calls");
        tmark m = mark();
        ts_batch *b = scan_map(mh, TS_SCAN_CACHESTATS, &cs, o.feed, &p);
        hk_c[it] = since(m).cpu;
        hooks = counter("mapping_sample_hook_calls") - h0;
        if (it == nh - 1) {
            ts_buf hb;
            ts_buf_init(&hb);
            ts_batch_encode(b, &hb);
            v_hook = first_value(hb.data);
            ts_buf_free(&hb);
        }
        ts_batch_free(b);
    }
    ts_mapper_release(mh);
    ts_lua_set_script_dir(L, NULL);
    remove_hook_dir(dir);
    double hk_b = best(hk_c + 1, nh - 1);
    printf("\n== per-sample Lua hook (stat() returns sample = function(v) return v * 8 end, from a script_dir)\n");
    printf("hook: %lld hook calls per CacheStats scan (%zu samples); first value %.17g -> %.17g (%s)\n",
           (long long)hooks, exp_c, v_plain, v_hook, v_hook == v_plain * 8 ? "x8 applied" : "NOT x8");
    printf("hook: CacheStats scan+map best %.1f ms CPU with the hook vs %.1f ms without: +%.0f ns per hooked sample "
           "(%.2f M hooked samples/s)\n",
           hk_b * 1e3, cs_only * 1e3, (hk_b - cs_only) * 1e9 / (double)exp_c, (double)exp_c / hk_b / 1e6);

    printf("\npeak RSS of this process: %.1f MB (payload buffers, naive Lua heap included)\n", (double)peak_rss_kb() / 1024);
    ts_buf_free(&out);
    ts_mapper_release(mc);
    ts_mapper_release(md);
    ts_buf_free(&cs);
    ts_buf_free(&dsj);
    free(sm_w); free(sm_c); free(en_w); free(en_c); free(cs_c); free(calls); free(nv_w); free(nv_c); free(hk_c);
    ts_lua_close(L);
    return (diff == 0 && warm_calls == 0 && v_hook == v_plain * 8 && derive_rc == 0) ? 0 : 1;
}
