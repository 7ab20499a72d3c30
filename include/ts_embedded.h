/* ts_embedded: the Lua sources compiled into the binary (C core). The tables are
 * generated from lua/ by cmake/embed_lua.cmake; the lookups live in src/lua.c.
 * Modules (every .lua file under lua/ but scripts/, plus config.lua as "tstats.default_config") are what
 * require() falls back to; operator scripts (lua/scripts/NAME.lua) are kept
 * apart so that require() never finds them, and are run by name. */
#ifndef TS_EMBEDDED_H
#define TS_EMBEDDED_H
#include <lua.h>
#include <stddef.h>

struct ts_embedded_lua {
    const char *name;          /* module name ("mappings.cachestats") or script name ("cdn_report") */
    const unsigned char *src;  /* the file's bytes, NUL-terminated (the NUL is not counted in len) */
    size_t len;
};
/* Both end with an entry whose name is NULL. */
extern const struct ts_embedded_lua ts_embedded_lua[];
extern const struct ts_embedded_lua ts_embedded_scripts[];

/* The source of embedded script NAME (the file name without ".lua", exactly;
 * no path, no suffix), its length in *len; NULL when there is none. */
const char *ts_lua_embedded_script(const char *name, size_t *len);
/* The i-th embedded script's name, in file name order; NULL once i is past the last. */
const char *ts_lua_embedded_script_name(size_t i);
/* Loads embedded script NAME as a Lua chunk named "@[tstats]/lua/scripts/NAME.lua"
 * and pushes it (the function) on success. Returns LUA_OK; LUA_ERRFILE with a
 * message pushed when there is no such script; a load error code with its message. */
int ts_lua_load_embedded_script(lua_State *L, const char *name);

#endif
