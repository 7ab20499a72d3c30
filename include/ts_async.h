/* ts_async: which Lua coroutines may yield on the daemon's loop (C core; no policy).
 * The daemon marks the coroutines it resumes itself (the Traffic Ops refresh, the
 * daily summary) and registers its loop and wake flag; a C binding (tstats.http,
 * tstats.influx, tstats.pg) asks ts_async_get whether the running code may start
 * its I/O on the loop and yield, or must block as every command-line tool does. */
#ifndef TS_ASYNC_H
#define TS_ASYNC_H
#include <lua.h>
#include "ts_http.h"

/* The loop requests run on and the flag set to 1 when one of them is over
 * (the daemon then resumes its coroutines); loop NULL unregisters. */
void ts_async_set_loop(lua_State *L, ts_loop *loop, int *wake);
/* Coroutine co (a thread of L) yields on I/O from now on. */
void ts_async_mark(lua_State *L, lua_State *co);
/* 1 with *loop and *wake set when L runs in a marked coroutine that can
 * yield here (not inside a metamethod or a C call that cannot), else 0. */
int ts_async_get(lua_State *L, ts_loop **loop, int **wake);

#endif
