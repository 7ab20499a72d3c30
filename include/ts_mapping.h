/* Mapping caches (C side): Lua's answers per stat name and per entity (cache
 * or delivery service), asked once and kept, plus the per-sample hooks a
 * stat's answer asked for. One generation owns the memory of every answer;
 * batches hold references to it, so a refresh never frees what a pending
 * point uses. Mapping modules are loaded in the sandbox of lua/sandbox.lua. */
#ifndef TS_MAPPING_H
#define TS_MAPPING_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include "ts_batch.h"
#include "ts_point.h"

typedef struct ts_mapper ts_mapper;
/* Binds one endpoint's mapping module (and its ctx table, a registry ref the
 * mapper then owns) to a cache of answers. NULL (logged) if it does not load. */
ts_mapper *ts_mapper_new(lua_State *L, const char *module, int ctx_ref, const char *label);
const ts_stat_map *ts_mapper_stat(ts_mapper *m, const char *name, size_t len);
const ts_entity_map *ts_mapper_entity(ts_mapper *m, const char *name, size_t len);
/* A poll starts: its Lua budget (lua.poll_budget_ms of CPU time, across every
 * call of this mapper) is whole again. Names it cannot pay for are answered
 * TS_MAP_DEFERRED, not cached, and asked again at the next poll. */
void ts_mapper_begin_poll(ts_mapper *m);
/* Per-sample hook (only for stats that asked for one). Returns 0 keep (value
 * may be replaced), -1 drop, -2 not run (the poll's budget is spent). */
int ts_mapper_sample_hook(ts_mapper *m, const ts_stat_map *st, double *value, const char *text, int64_t time_ms);
const ts_map_owner *ts_mapper_owner(ts_mapper *m);
/* Pushes the mapping module's table (loaded in the mapping sandbox). */
void ts_mapper_push_module(ts_mapper *m);
void ts_mapper_release(ts_mapper *m);     /* the plan lets go; memory stays while batches use it */
uint64_t ts_mapper_lua_calls(const ts_mapper *m);

#endif
