/* daemon_summary.c: the daemon's daily summary coroutine (C core, drives lua/daemon.lua's
 * summary_tick). Its bookkeeping only: what a summary does is Lua's (lua/summary.lua), its
 * calls yielding on the loop is src/pg.c's and the API's. */
#include "ts_daemon_summary.h"

#include <lauxlib.h>
#include <math.h>
#include "ts_api.h"
#include "ts_clock.h"
#include "ts_counter.h"
#include "ts_log.h"
#include "ts_lua.h"
#include "ts_pg_async.h"

/* Pushes daemon.<fn> on L's stack; -1 (nothing pushed) when the module does not load (logged). */
static int push_fn(lua_State *L, const char *fn) {
    if (ts_lua_require(L, "daemon") != 0) return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    return 0;
}

void ts_dsummary_successes(ts_dsummary *s) {
    lua_State *L = s->L;
    if (!s->metrics || push_fn(L, "summary_successes") != 0) return;
    if (ts_lua_pcall(L, 0, 1, "daemon.summary_successes", 0) != 0) return;
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TNUMBER)
                ts_metrics_summary_done(s->metrics, lua_tostring(L, -2), (int64_t)llround(lua_tonumber(L, -1) * 1000.0));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Runs the coroutine until it yields on PostgreSQL or InfluxDB (its calls run on the
 * loop: polls go on meanwhile) or ends. */
static void resume(ts_dsummary *s, int nargs) {
    lua_State *L = s->L, *co = s->co;
    int nres = 0;
    int st = lua_resume(co, L, nargs, &nres);
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        return;
    }
    if (st != LUA_OK) {
        luaL_traceback(L, co, lua_tostring(co, -1), 0);
        ts_lua_log_error("daemon.summary_tick", lua_tostring(L, -1));
        lua_pop(L, 1);
        ts_warn("daily summary tick failed; it runs again next tick");
    }
    if (s->skipped)
        ts_info("daily summary over after %.1f s; %d tick(s) skipped meanwhile",
                (double)(ts_mono_ms() - s->started) / 1000.0, s->skipped);
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->co = NULL;
    ts_dsummary_successes(s);
}

void ts_dsummary_resume(ts_dsummary *s) {
    if (s->co) resume(s, 0);
}

/* Never two at once: a tick that finds one running is skipped (said once per run,
 * counted each time). */
void ts_dsummary_tick(ts_dsummary *s) {
    lua_State *L = s->L;
    if (s->co) {
        ts_counter_add(ts_counter_get("summary_ticks_skipped"), 1);
        if (s->skipped++ == 0)
            ts_info("daily summary still running (for %.1f s); skipping this tick and the next ones until it is over",
                    (double)(ts_mono_ms() - s->started) / 1000.0);
        return;
    }
    lua_State *co = lua_newthread(L);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ts_api_mark_async(L, co);
    if (push_fn(co, "summary_tick") != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
        ts_warn("daily summary tick failed; it runs again next tick");
        return;
    }
    lua_pushinteger(co, ts_now_ms() / 1000);
    s->co = co;
    s->started = ts_mono_ms();
    s->skipped = 0;
    resume(s, 1);
}

void ts_dsummary_abandon(ts_dsummary *s) {
    if (!s->co) return;
    ts_warn("shutdown: the daily summary in progress (for %.1f s) is abandoned; PostgreSQL rolls back its "
            "transaction and the next start computes the day again",
            (double)(ts_mono_ms() - s->started) / 1000.0);
    ts_pg_wait_cancel_all("shutdown");   /* else the server keeps its transaction (and a lock wait) */
    ts_pg_wait_detach_all();   /* never resumed again: its socket must not wake the loop meanwhile */
}
