/* Derived metrics (C core): definitions declared in Lua (lua/metrics.lua
 * checks and compiles them at start and on SIGHUP) evaluated here over every
 * sample of every poll with no Lua call. A definition is attached to the
 * mapping cache's answers: a stat no definition reads costs one pointer test
 * per sample. At the end of an endpoint's poll each touched group gives one
 * point, handed to the normal writer path as a text batch. This header
 * gathers the rooms: ts_derive_state.h (types, lifetime), ts_derive_eval.h
 * (binding, per-sample path), ts_derive_emit.h (end of a poll). */
#ifndef TS_DERIVE_H
#define TS_DERIVE_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "ts_derive_emit.h"
#include "ts_derive_eval.h"
#include "ts_derive_state.h"

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

/* The hooks in the collection path (defined in mapping.c and collect.c). */
typedef struct ts_mapper ts_mapper;
typedef struct ts_collector ts_collector;
void ts_mapper_set_derive(ts_mapper *m, ts_derive_ep *e);     /* before its first lookup */
void ts_collector_set_derive(ts_collector *c, ts_derive *d);  /* retains d (NULL = none); next plan on */

#endif
