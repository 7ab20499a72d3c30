/* ts_pg: the PostgreSQL binding behind tstats.pg (C core, libpq; called from Lua).
 * ts_pg_open pushes a table {connect=} whose connections are userdata with the
 * metatable "tstats.pg.conn" (query, exec, close, ok; __gc and __close close).
 * The Lua-side contract is the tstats.pg row of the API table in lua/README.md. */
#ifndef TS_PG_H
#define TS_PG_H
#include <lua.h>

#define TS_PG_CONN_MT "tstats.pg.conn"

/* Pushes the pg table; returns 1 (usable as a lua_CFunction / luaL_requiref). */
int ts_pg_open(lua_State *L);

#endif
