/* The Lua runtime (C side): one lua_State per process, made inside a
 * protected call, with a heap cap, instruction budgets for calls into
 * scripts, a traceback on every error, and a module searcher that prefers
 * script_dir and falls back to the scripts compiled into the binary. */
#ifndef TS_LUA_H
#define TS_LUA_H
#include <lua.h>
#include <stddef.h>

/* Opens the host API in the new state (ts_api_open); runs protected. */
typedef void (*ts_lua_open_fn)(lua_State *L);

/* Creates the state inside a protected call: stock libs, cjson, the module
 * searcher, then open_api (may be NULL). mem_limit caps the Lua heap in
 * bytes (0 = none until ts_lua_set_memory_limit). NULL (logged) on failure. */
lua_State *ts_lua_new(size_t mem_limit, ts_lua_open_fn open_api);
void ts_lua_close(lua_State *L);
/* lua.memory_limit once the configuration is loaded (and on every reload). */
void ts_lua_set_memory_limit(lua_State *L, size_t bytes);
size_t ts_lua_mem_used(lua_State *L);
void ts_lua_set_script_dir(lua_State *L, const char *dir);
/* Protected call with traceback: function + nargs are on the stack. On error
 * logs "<what>: <file:line: msg>" with the traceback at debug level, bumps the
 * lua_errors counter, leaves nothing on the stack and returns -1. `budget`
 * instructions at most (0 = unlimited). */
int ts_lua_pcall(lua_State *L, int nargs, int nresults, const char *what, long budget);
/* Counts a Lua error (lua_errors) and logs "what: first line", the rest of
 * msg (a traceback) at debug. */
void ts_lua_log_error(const char *what, const char *msg);
/* require(mod) in protected mode; pushes the module on success. */
int ts_lua_require(lua_State *L, const char *mod);
/* Does an embedded module of that name exist? */
int ts_lua_embedded_exists(const char *mod);

#endif
