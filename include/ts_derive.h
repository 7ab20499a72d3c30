/* Derived metrics (C core): definitions declared in Lua (lua/metrics.lua
 * checks and compiles them at start and on SIGHUP) evaluated here over every
 * sample of every poll with no Lua call. A definition is attached to the
 * mapping cache's answers: a stat no definition reads costs one pointer test
 * per sample. At the end of an endpoint's poll each touched group gives one
 * point, handed to the normal writer path as a text batch. */
#ifndef TS_DERIVE_H
#define TS_DERIVE_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "ts_batch.h"
#include "ts_point.h"

typedef struct ts_derive ts_derive;          /* one load's compiled definitions and their state */
typedef struct ts_derive_ep ts_derive_ep;    /* the state of one endpoint (cdn + endpoint name) */
typedef struct ts_derive_slots ts_derive_slots;

/* Reads the compiled list (lua/metrics.lua M.compile) at stack index idx.
 * NULL with a message in err when it is malformed. */
ts_derive *ts_derive_new(lua_State *L, int idx, char *err, size_t errlen);
/* metrics.load(tstats.config, cfg_path): logs every problem ("file:line:
 * level: message"); *out = the engine, or NULL when the config defines no
 * metric. Returns 0, or -1 when a definition has an error (nothing built). */
int ts_derive_load(lua_State *L, const char *cfg_path, ts_derive **out);
/* `tstats check`: the definitions' problems printed to out, one line each
 * ("file:line: level: message") after a summary line. Returns 0, or 2 when
 * a definition has an error. */
int ts_derive_check(lua_State *L, const char *cfg_path, FILE *out);
void ts_derive_retain(ts_derive *d);
void ts_derive_release(ts_derive *d);
int ts_derive_count(const ts_derive *d);

/* The state of an endpoint, kept across Traffic Ops refreshes (same cdn and
 * name, same state: rates go on). NULL when no definition applies to it.
 * `dest` gives the db / rp / precision of definitions that name none. */
ts_derive_ep *ts_derive_endpoint(ts_derive *d, const char *cdn, const char *endpoint, const ts_dest *dest);

/* Mapping-cache hooks, once per stat name / entity per plan. meas is the
 * raw (unescaped) measurement, tags the stat's escaped tags. */
const ts_derive_slots *ts_derive_bind_stat(ts_derive_ep *e, const char *meas, size_t len, const ts_tagset *tags);
uint32_t ts_derive_bind_entity(ts_derive_ep *e, const char *name, size_t len);

/* A poll of the endpoint: begin (every fetch attempt; drops what an
 * unfinished attempt staged), a sample for each point whose stat has slots,
 * then finish (points emitted, rate state committed) or abort. `owner` tells
 * two endpoints of one name apart across a plan change: begin returns -1
 * while another owner's poll is open (that fetch then feeds nothing). */
int ts_derive_begin(ts_derive_ep *e, const void *owner);
void ts_derive_sample(ts_derive_ep *e, const ts_cpoint *p);
typedef void (*ts_derive_emit_fn)(void *ud, ts_batch *b);   /* takes ownership */
size_t ts_derive_finish(ts_derive_ep *e, ts_derive_emit_fn emit, void *ud);
void ts_derive_abort(ts_derive_ep *e);

/* What happened so far, over every endpoint of the engine (also counters
 * derive_*). */
typedef struct ts_derive_stats {
    uint64_t samples;          /* samples that fed a definition */
    uint64_t points;           /* derived points emitted */
    uint64_t rate_first;       /* first sample of a series: no rate yet */
    uint64_t rate_resets;      /* counter went down: no rate, new base */
    uint64_t rate_gaps;        /* more than max_gap since the last sample: no rate, new base */
    uint64_t rate_repeats;     /* same time stamp as the last sample: ignored */
    uint64_t ratio_unpaired;   /* an entity had only one of the two stats in a poll */
    uint64_t undefined;        /* ratio over 0, or a NaN/Inf result: no point */
    uint64_t window_late;      /* sample for a window already written: dropped */
    uint64_t window_dups;      /* same series, same time stamp inside a window: ignored */
    uint64_t busy_skips;       /* a fetch ran while another owner's poll was open */
} ts_derive_stats;
void ts_derive_get_stats(const ts_derive *d, ts_derive_stats *s);

/* Text of a derived value: reads back (strtod) as exactly v; short when a
 * 15-digit decimal does, else 17 digits. Fast for any value. */
size_t ts_derive_fmt_double(char out[40], double v);

/* The hooks in the collection path (defined in mapping.c and collect.c). */
typedef struct ts_mapper ts_mapper;
typedef struct ts_collector ts_collector;
void ts_mapper_set_derive(ts_mapper *m, ts_derive_ep *e);     /* before its first lookup */
void ts_collector_set_derive(ts_collector *c, ts_derive *d);  /* retains d (NULL = none); next plan on */

#endif
