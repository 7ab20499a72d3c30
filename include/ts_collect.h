/* Collection (C side): polls the plan's endpoints on the loop, streams each
 * body through the scanner and the mapping caches into a batch, applies the
 * per-sample policy (age cutoff, non-numeric values), fails over between
 * monitors, and hands each whole payload's batch on. */
#ifndef TS_COLLECT_H
#define TS_COLLECT_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include "ts_batch.h"
#include "ts_http.h"
#include "ts_mapping.h"

typedef struct ts_collector ts_collector;
typedef void (*ts_emit_fn)(void *ud, ts_batch *b);  /* takes ownership */
ts_collector *ts_collector_new(lua_State *L, ts_loop *loop, ts_emit_fn emit, void *emit_ud);
/* Where compact batches come from (NULL: fresh ones). */
void ts_collector_set_batch_pool(ts_collector *c, ts_batch_pool *pool);
/* Install the plan table at the given stack index (from lua/plan.lua). Returns
 * the number of endpoints, or -1 on a malformed plan (old plan kept). */
int ts_collector_set_plan(ts_collector *c, int plan_index);
/* Overrides collect.max_sample_age until the next plan (ms; <= 0: no cutoff). For the offline loop. */
void ts_collector_set_max_age(ts_collector *c, int64_t ms);
/* Start one poll of every endpoint (async on the loop). */
void ts_collector_poll(ts_collector *c);
int ts_collector_busy(const ts_collector *c);  /* fetches still running */
typedef struct ts_collect_stats {
    uint64_t polls, endpoints_ok, endpoints_failed, points, bytes;
    uint64_t skipped_non_numeric, skipped_old, skipped_no_time, lua_calls;
    uint64_t samples_lost;   /* samples whose stat or entity mapping failed */
    uint64_t samples_deferred;   /* samples skipped for the mapping's spent poll budget */
} ts_collect_stats;
void ts_collector_get_stats(const ts_collector *c, ts_collect_stats *s);
/* Report every finished fetch and every new plan to the service metrics (NULL: off). */
struct ts_metrics;
void ts_collector_set_metrics(ts_collector *c, struct ts_metrics *m);
/* Shutdown order: ts_collector_close, ts_loop_free (aborts fetches), ts_collector_free. */
void ts_collector_close(ts_collector *c);
void ts_collector_free(ts_collector *c);

/* ---- the per-sample path ---- */
typedef struct ts_sample_policy {
    int64_t cutoff_ms;       /* samples older than this are skipped */
    int zero_non_numeric;    /* 1: a non-numeric value is written as 0 (ATC) */
} ts_sample_policy;

/* One scanned sample as the scanner gives it. */
typedef struct ts_raw_sample {
    const char *val;
    size_t len;
    int kind;                /* TS_VAL_* of ts_scan.h */
    int64_t time_ms;
    int has_time;
} ts_raw_sample;

/* Turns one sample into a compact point by the cached answers (running the
 * stat's hook if it has one). Returns TS_SAMPLE_OK with *out filled, or why
 * it was skipped. */
enum { TS_SAMPLE_OK = 0, TS_SAMPLE_NO_TIME, TS_SAMPLE_OLD, TS_SAMPLE_NON_NUMERIC, TS_SAMPLE_HOOK_DROP, TS_SAMPLE_DEFERRED };
int ts_collect_sample(ts_mapper *m, const ts_sample_policy *pol, const ts_stat_map *st, const ts_entity_map *ent,
                      const ts_raw_sample *s, ts_cpoint *out);

/* TM sends numbers as strings: 1 and *out on a finite number, 0 otherwise. */
int ts_parse_number(const char *s, size_t n, double *out);

#endif
