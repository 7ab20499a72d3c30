/* Exact JSON decoding (C side): tstats.json.decode_exact keeps integers as
 * Lua integers (all 64 bits) where cjson would round them through a double.
 * Used for InfluxDB query answers (nanosecond times, integer fields). */
#ifndef TS_JSON_EXACT_H
#define TS_JSON_EXACT_H
#include <lua.h>

void ts_json_exact_open(lua_State *L);   /* adds tstats.json.decode_exact */

#endif
