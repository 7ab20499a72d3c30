/* test_async.c: which Lua code may yield on the loop (C test side, ts_async.h):
 * only a coroutine the daemon marked, with the loop registered, at a point where
 * a yield is possible; everything else (the main thread, other coroutines, a
 * callback of a C function such as table.sort's comparator) must block. */
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include "check.h"
#include "ts_async.h"

static ts_loop *g_loop;
static int g_wake;

/* may_yield() -> whether ts_async_get says yes here (and hands back our loop and flag) */
static int l_may_yield(lua_State *L) {
    ts_loop *l = NULL;
    int *w = NULL;
    int ok = ts_async_get(L, &l, &w);
    if (ok) CHECK(l == g_loop && w == &g_wake, "the registered loop and wake flag");
    lua_pushboolean(L, ok);
    return 1;
}

/* Runs src as a coroutine body (marked or not) and returns its first result. */
static int in_coroutine(lua_State *L, const char *src, int mark) {
    lua_State *co = lua_newthread(L);
    if (mark) ts_async_mark(L, co);
    if (luaL_loadstring(co, src) != LUA_OK) {
        FAIL("load: %s", lua_tostring(co, -1));
        lua_pop(L, 1);
        return -1;
    }
    int nres = 0;
    int st = lua_resume(co, L, 0, &nres);
    int r = st == LUA_OK && nres >= 1 ? lua_toboolean(co, -nres) : -1;
    if (st != LUA_OK) FAIL("resume: %s", lua_tostring(co, -1));
    lua_pop(L, 1);
    return r;
}

int main(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_register(L, "may_yield", l_may_yield);
    g_loop = ts_loop_new();
    CHECK(g_loop != NULL);

    const char *plain = "return may_yield()";
    /* nothing registered yet: no loop to yield on */
    CHECK(in_coroutine(L, plain, 1) == 0, "marked, but no loop registered");
    ts_async_set_loop(L, g_loop, &g_wake);
    lua_getglobal(L, "may_yield");
    lua_call(L, 0, 1);
    CHECK(!lua_toboolean(L, -1), "the main thread never yields");
    lua_pop(L, 1);
    CHECK(in_coroutine(L, plain, 0) == 0, "a coroutine the daemon did not mark");
    CHECK(in_coroutine(L, plain, 1) == 1, "a marked coroutine");
    CHECK(in_coroutine(L, "local r; pcall(function() r = may_yield() end); return r", 1) == 1,
          "inside pcall (yieldable in 5.4)");
    CHECK(in_coroutine(L, "local r; table.sort({2, 1}, function(a, b) r = may_yield(); return a < b end); return r", 1) == 0,
          "inside a C function's callback (not yieldable)");
    CHECK(in_coroutine(L, "return coroutine.wrap(function() return may_yield() end)()", 1) == 0,
          "a coroutine started by the marked one is not marked");
    ts_async_set_loop(L, NULL, NULL);
    CHECK(in_coroutine(L, plain, 1) == 0, "the loop unregistered");
    lua_close(L);
    ts_loop_free(g_loop);
    return check_report("test_async");
}
