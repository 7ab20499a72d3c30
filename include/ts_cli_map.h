/* ts_cli_map: the offline mapping loop behind `tstats map` and `tstats test`
 * (C core, src/cli_map.c): one real collection over saved payloads (file:// URLs). */
#ifndef TS_CLI_MAP_H
#define TS_CLI_MAP_H
#include <lua.h>

/* Adds tstats._map_run(plan, timeout_s) to the state's tstats table. */
void ts_cli_map_open(lua_State *L);

#endif
