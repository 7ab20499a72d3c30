/* tstats-sim topology and value model (C, test side).
 * Everything is a pure function of (seed, wall time, indices): two sims with
 * the same seed serve the same numbers at the same instant, counters only grow
 * and bandwidth moves along a slow sine wave. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"
#include "ts_log.h"

/* Counters start at this instant (2025-01-01T00:00:00Z) so they stay well below 2^53. */
#define SIM_T0 1735689600.0

static const char *const ciab_cache[] = {
    "bandwidth",
    "maxKbps",
    "ats.proxy.process.http.current_client_connections",
    "ats.proxy.process.cache.volume_1.wrap_count",
    "ats.proxy.process.cache.volume_2.wrap_count",
    "ats.proxy.process.cache.volume_1.write.failure",
    "ats.proxy.process.cache.volume_1.write.success",
    "ats.proxy.process.ssl.cipher.user_agent.ECDHE-RSA-AES128-GCM-SHA256",
    "ats.proxy.process.ssl.cipher.user_agent.RC4-SHA",
    "ats.proxy.process.ssl.cipher.user_agent.RC4-MD5",
    "ats.proxy.process.ssl.cipher.user_agent.DES-CBC3-SHA",
    "ats.proxy.process.cache.bytes_total",
    "ats.proxy.process.cache.bytes_used",
    "ats.proxy.process.cache.direntries.total",
    "ats.proxy.process.cache.direntries.used",
    "ats.proxy.process.cache.directory_collision",
    "ats.proxy.process.cache.evacuate.active",
    "ats.proxy.process.cache.evacuate.failure",
    "ats.proxy.process.cache.evacuate.success",
    "ats.proxy.process.cache.frags_per_doc.1",
    "ats.proxy.process.cache.frags_per_doc.2",
    "ats.proxy.process.cache.frags_per_doc.3+",
    "ats.proxy.process.cache.gc_bytes_evacuated",
    "ats.proxy.process.cache.gc_frags_evacuated",
    "ats.proxy.process.cache.hdr_marshal_bytes",
    "ats.proxy.process.cache.hdr_marshals",
    "ats.proxy.process.cache.lookup.active",
    "ats.proxy.process.cache.lookup.failure",
    "ats.proxy.process.cache.lookup.success",
    "ats.proxy.process.cache.ram_cache.bytes_used",
    "ats.proxy.process.cache.ram_cache.total_bytes",
    "ats.proxy.process.cache.ram_cache.hits",
    "ats.proxy.process.cache.ram_cache.misses",
    "ats.proxy.process.http.background_fill_bytes_aborted_stat",
    "ats.proxy.process.http.background_fill_bytes_completed_stat",
    "ats.proxy.process.http.background_fill_current_count",
    "ats.proxy.node.cache.bytes_free",
};
/* Kind and parameters of each CiaB stat: counters use (a, b) as the rate range
 * per second, gauges as (mean, relative amplitude), constants as the value range. */
static const sim_stat ciab_kind[] = {
    {NULL, SIM_K_BANDWIDTH, 0, 0},
    {NULL, SIM_K_MAXKBPS, 0, 0},
    {NULL, SIM_K_GAUGE, 2000, 0.4},
    {NULL, SIM_K_ZERO, 0, 0},
    {NULL, SIM_K_ZERO, 0, 0},
    {NULL, SIM_K_COUNTER, 0, 0.02},
    {NULL, SIM_K_COUNTER, 20, 200},
    {NULL, SIM_K_COUNTER, 50, 500},
    {NULL, SIM_K_ZERO, 0, 0},
    {NULL, SIM_K_ZERO, 0, 0},
    {NULL, SIM_K_COUNTER, 0, 0.5},
    {NULL, SIM_K_CONST, 1e11, 1e12},
    {NULL, SIM_K_GAUGE, 8e10, 0.05},
    {NULL, SIM_K_CONST, 1e6, 1e7},
    {NULL, SIM_K_GAUGE, 5e5, 0.1},
    {NULL, SIM_K_COUNTER, 0, 0.1},
    {NULL, SIM_K_GAUGE, 3, 0.9},
    {NULL, SIM_K_ZERO, 0, 0},
    {NULL, SIM_K_COUNTER, 0, 0.05},
    {NULL, SIM_K_COUNTER, 20, 200},
    {NULL, SIM_K_COUNTER, 1, 20},
    {NULL, SIM_K_COUNTER, 0.1, 5},
    {NULL, SIM_K_COUNTER, 0, 1e4},
    {NULL, SIM_K_COUNTER, 0, 10},
    {NULL, SIM_K_COUNTER, 1e4, 1e6},
    {NULL, SIM_K_COUNTER, 20, 200},
    {NULL, SIM_K_GAUGE, 40, 0.8},
    {NULL, SIM_K_COUNTER, 0, 2},
    {NULL, SIM_K_COUNTER, 100, 3000},
    {NULL, SIM_K_GAUGE, 3e9, 0.05},
    {NULL, SIM_K_CONST, 4e9, 1.6e10},
    {NULL, SIM_K_COUNTER, 100, 2000},
    {NULL, SIM_K_COUNTER, 20, 500},
    {NULL, SIM_K_COUNTER, 0, 1e5},
    {NULL, SIM_K_COUNTER, 1e5, 1e7},
    {NULL, SIM_K_GAUGE, 5, 0.9},
    {NULL, SIM_K_GAUGE, 2e10, 0.05},
};
#define NCIAB_CACHE ((int)(sizeof ciab_cache / sizeof ciab_cache[0]))

static const char *const ciab_ds[] = {"kbps", "tps_2xx", "status_4xx", "status_5xx",
                                      "tps_3xx", "tps_4xx", "tps_5xx", "tps_total"};

const char *ts_sim_ciab_cache_stat(int i) { return i >= 0 && i < NCIAB_CACHE ? ciab_cache[i] : NULL; }
const char *ts_sim_ciab_ds_stat(int i) { return i >= 0 && i < 8 ? ciab_ds[i] : NULL; }
int ts_sim_ciab_ncache_stats(void) { return NCIAB_CACHE; }
int ts_sim_ciab_nds_stats(void) { return 8; }

uint64_t ts_sim_mix(uint64_t x) {
    /* splitmix64 finaliser: cheap and well spread, enough for test data. */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

double ts_sim_unit(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }

double ts_sim_cache_kbps(const sim_cache *c, double t_s) {
    return c->mean_kbps * (1.0 + c->amp * sin(2 * M_PI * t_s / c->period_s + c->phase));
}

/* Exact integral of kbps*125 since SIM_T0, so bytes and bandwidth agree. */
double ts_sim_cache_out_bytes(const sim_cache *c, double t_s) {
    double w = 2 * M_PI / c->period_s, dt = t_s - SIM_T0;
    double integ = dt + c->amp / w * (cos(w * SIM_T0 + c->phase) - cos(w * t_s + c->phase));
    return floor(c->mean_kbps * 125.0 * integ) + (double)(c->h % 1000000007ULL);
}

double ts_sim_stat_value(const sim_cache *c, int si, double t_s) {
    const sim_stat *s = &ts_sim.stats[si];
    uint64_t h = ts_sim_mix(c->h ^ ((uint64_t)si * 0x632be59bd9b4e019ULL));
    double u = ts_sim_unit(h);
    switch (s->kind) {
    case SIM_K_BANDWIDTH: return floor(ts_sim_cache_kbps(c, t_s));
    case SIM_K_MAXKBPS: return (double)c->speed_mbps * 1000.0;
    case SIM_K_ZERO: return 0;
    case SIM_K_CONST: return floor(s->a + u * (s->b - s->a));
    case SIM_K_GAUGE: {
        double per = 300 + 3000 * ts_sim_unit(ts_sim_mix(h));
        double v = s->a * (0.5 + u) * (1 + s->b * sin(2 * M_PI * t_s / per + 6.28 * u));
        return floor(v < 0 ? 0 : v);
    }
    default: { /* counter: floor(base + rate*dt) only grows */
        double rate = s->a + u * (s->b - s->a);
        return floor((double)(h % 100000) + rate * (t_s - SIM_T0));
    }
    }
}

void ts_sim_build_model(void) {
    sim_state *S = &ts_sim;
    /* Stat catalog: the CiaB names first, then synthetic counters up to --stats. */
    S->nstat = S->nstats;
    S->stats = calloc((size_t)S->nstat, sizeof *S->stats);
    for (int i = 0; i < S->nstat; i++) {
        if (i < NCIAB_CACHE) {
            S->stats[i] = ciab_kind[i];
            S->stats[i].name = ciab_cache[i];
        } else {
            char name[80];
            snprintf(name, sizeof name, "ats.proxy.process.sim.counter_%d", i - NCIAB_CACHE + 1);
            S->stats[i].name = strdup(name);
            S->stats[i].kind = (i % 5 == 0) ? SIM_K_GAUGE : SIM_K_COUNTER;
            S->stats[i].a = (i % 5 == 0) ? 1000 : 1;
            S->stats[i].b = (i % 5 == 0) ? 0.3 : 1000;
        }
    }

    /* Cache groups: cg-1 .. cg-(G-1) and a last one with a dot in its name,
     * which TO allows and which ATC's DsStats key parser gets wrong. */
    S->cg_names = calloc((size_t)S->ncg, sizeof *S->cg_names);
    for (int g = 0; g < S->ncg; g++) {
        if (g == S->ncg - 1)
            snprintf(S->cg_names[g], sizeof S->cg_names[g], "us.east-%d", g + 1);
        else
            snprintf(S->cg_names[g], sizeof S->cg_names[g], "cg-%d", g + 1);
    }

    S->cdns = calloc((size_t)S->ncdn, sizeof *S->cdns);
    S->ncache = S->ncdn * S->ncache_per_cdn;
    S->caches = calloc((size_t)(S->ncache ? S->ncache : 1), sizeof *S->caches);
    int id = 100;
    for (int k = 0; k < S->ncdn; k++) {
        sim_cdn *cd = &S->cdns[k];
        snprintf(cd->name, sizeof cd->name, "cdn%d", k + 1);
        cd->id = k + 1;
        cd->first_cache = k * S->ncache_per_cdn;
        cd->ncache = S->ncache_per_cdn;
        cd->first_ds = k * S->nds_per_cdn;
        cd->nds = S->nds_per_cdn;
        pthread_mutex_init(&cd->lock, NULL);
        int nmid = S->ncache_per_cdn / 5; /* about 80% edges */
        int nedge = S->ncache_per_cdn - nmid;
        for (int i = 0; i < S->ncache_per_cdn; i++) {
            sim_cache *c = &S->caches[cd->first_cache + i];
            int mid = i >= nedge;
            int n = mid ? i - nedge + 1 : i + 1;
            snprintf(c->host, sizeof c->host, "%s-%s-%d", mid ? "mid" : "edge", cd->name, n);
            c->cdn = k;
            c->type = mid ? SIM_MID : SIM_EDGE;
            c->cg = (mid ? n - 1 + S->ncg / 2 : n - 1) % S->ncg;
            c->id = id++;
            c->reported = (i % 10) != 9;
            c->h = ts_sim_mix(S->seed ^ ts_sim_mix((uint64_t)(cd->first_cache + i) + 1));
            double u1 = ts_sim_unit(c->h), u2 = ts_sim_unit(ts_sim_mix(c->h + 1));
            double u3 = ts_sim_unit(ts_sim_mix(c->h + 2)), u4 = ts_sim_unit(ts_sim_mix(c->h + 3));
            /* 1-10 Gbps mean, +-30% over 10-60 minutes. */
            c->mean_kbps = 1e6 + 9e6 * u1;
            c->amp = 0.1 + 0.2 * u2;
            c->period_s = 600 + 3000 * u3;
            c->phase = 2 * M_PI * u4;
            double peak = c->mean_kbps * (1 + c->amp);
            c->speed_mbps = peak < 9e6 ? 10000 : 25000;
            c->poll_off_ms = (int)(c->h % 997);
            snprintf(c->ip, sizeof c->ip, "10.%d.%d.%d", k + 1, (i / 250) % 256, i % 250 + 2);
        }
    }
    ts_info("model: %d CDN(s), %d caches, %d stats, %d DSes/CDN, %d cache groups", S->ncdn, S->ncache,
            S->nstat, S->nds_per_cdn, S->ncg);
}
