/* async.c: the registry of coroutines that yield on the daemon's loop (C core).
 * A weak-keyed table in the Lua registry holds the marked threads, so a finished
 * coroutine is collected as usual; the loop and its wake flag sit beside it. */
#include "ts_async.h"

#include <lauxlib.h>

static char THREADS_KEY, LOOP_KEY, WAKE_KEY;

void ts_async_set_loop(lua_State *L, ts_loop *loop, int *wake) {
    lua_pushlightuserdata(L, loop);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
    lua_pushlightuserdata(L, loop ? wake : NULL);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &WAKE_KEY);
}

void ts_async_mark(lua_State *L, lua_State *co) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &THREADS_KEY);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &THREADS_KEY);
    }
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

int ts_async_get(lua_State *L, ts_loop **loop, int **wake) {
    if (!lua_isyieldable(L)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOOP_KEY);
    ts_loop *l = lua_touserdata(L, -1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &WAKE_KEY);
    int *w = lua_touserdata(L, -1);
    lua_pop(L, 2);
    if (!l || !w) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &THREADS_KEY);
    int ok = 0;
    if (lua_istable(L, -1)) {
        lua_pushthread(L);
        ok = lua_rawget(L, -2) == LUA_TBOOLEAN;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!ok) return 0;
    if (loop) *loop = l;
    if (wake) *wake = w;
    return 1;
}
