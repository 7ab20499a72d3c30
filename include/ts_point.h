/* Compact points (C core): what a poll produces. A sample is four machine
 * words; the measurement and tags live once in the mapping caches that Lua
 * filled (one entry per distinct stat name and per cache / delivery service),
 * and are only expanded into line protocol when a chunk is written. */
#ifndef TS_POINT_H
#define TS_POINT_H
#include <stddef.h>
#include <stdint.h>

/* One tag, pre-escaped for line protocol as "key=value"; `key` is the raw
 * key used to order the merge of stat tags with entity tags. */
typedef struct ts_etag {
    const char *key;
    const char *kv;     /* escaped "key=value" */
    uint32_t kv_len;
} ts_etag;

typedef struct ts_tagset {
    ts_etag *tags;      /* sorted by key (strcmp) */
    uint32_t n;
} ts_tagset;

/* Lua's answer for one stat name (e.g. "bandwidth" or "location.us.east.kbps"). */
typedef struct ts_stat_map {
    const char *meas;       /* escaped measurement */
    uint32_t meas_len;
    const char *field;      /* escaped field key, e.g. "value" */
    uint32_t field_len;
    ts_tagset tags;         /* tags contributed by the stat (e.g. cachegroup=total) */
    double scale;           /* value multiplier (1.0 = none) */
    int keep;               /* 0: drop every sample of this stat */
    int hook_ref;           /* Lua registry ref of a per-sample hook, or LUA_NOREF (-2) */
    int as_int;             /* write the field as an integer ("42i") */
    int failed;             /* keep = 0 not by choice: TS_MAP_FAILED (error, bad answer) or TS_MAP_DEFERRED */
    const struct ts_derive_slots *derive;   /* derived metrics fed by this stat (ts_derive.h), or NULL */
} ts_stat_map;

/* Lua's answer for one entity (cache hostname or delivery service). */
typedef struct ts_entity_map {
    ts_tagset tags;
    int keep;
    int failed;             /* as ts_stat_map.failed */
    uint32_t derive_id;     /* the entity's id in the derived-metric state (ts_derive.h); 0 = none */
} ts_entity_map;

enum { TS_MAP_FAILED = 1, TS_MAP_DEFERRED = 2 };   /* ts_stat_map.failed, ts_entity_map.failed */

typedef struct ts_cpoint {
    const ts_stat_map *stat;
    const ts_entity_map *ent;
    double value;
    int64_t time_ms;
} ts_cpoint;

#endif
