/* The offline mapping loop (C side of `tstats map` / `tstats test`): runs the
 * real collector (scanner, mapping cache, encoder) once over a plan whose URLs
 * are file:// paths of saved Traffic Monitor payloads, and hands the encoded
 * line protocol back to Lua instead of writing it. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "ts_cli_map.h"

#include "ts_batch.h"
#include "ts_clock.h"
#include "ts_collect.h"
#include "ts_derive.h"
#include "ts_http.h"
#include "ts_log.h"
#include "ts_lp.h"

typedef struct map_out {
    ts_buf *bodies;
    char (*db)[128], (*rp)[128], (*prec)[8];
    size_t *points;
    int n, cap;
} map_out;

static void emit_collect(void *ud, ts_batch *b) {
    map_out *o = ud;
    if (o->n == o->cap) {
        int cap = o->cap ? o->cap * 2 : 8;
        o->bodies = realloc(o->bodies, sizeof *o->bodies * (size_t)cap);
        o->db = realloc(o->db, sizeof *o->db * (size_t)cap);
        o->rp = realloc(o->rp, sizeof *o->rp * (size_t)cap);
        o->prec = realloc(o->prec, sizeof *o->prec * (size_t)cap);
        o->points = realloc(o->points, sizeof *o->points * (size_t)cap);
        if (!o->bodies || !o->db || !o->rp || !o->prec || !o->points) abort();
        o->cap = cap;
    }
    const ts_dest *d = ts_batch_dest(b);
    ts_buf_init(&o->bodies[o->n]);
    ts_batch_encode(b, &o->bodies[o->n]);
    snprintf(o->db[o->n], sizeof o->db[0], "%s", d->db);
    snprintf(o->rp[o->n], sizeof o->rp[0], "%s", d->rp);
    snprintf(o->prec[o->n], sizeof o->prec[0], "%s", ts_precision_name(d->precision));
    o->points[o->n] = ts_batch_points(b);
    o->n++;
    ts_batch_free(b);
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* tstats._map_run(plan, timeout_s, max_age_s (0 = none), with_derived_metrics) -> { batches = { {db=, rp=, precision=, points=, body=}, ... },
 *   endpoints_ok=, endpoints_failed=, points=, skipped_old=, skipped_non_numeric=, skipped_no_time=, lua_calls= } */
static int l_map_run(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout_s = luaL_optnumber(L, 2, 30);
    map_out o;
    memset(&o, 0, sizeof o);
    ts_http_allow_file(1);
    ts_loop *loop = ts_loop_new();
    ts_collector *coll = ts_collector_new(L, loop, emit_collect, &o);
    if (lua_toboolean(L, 4)) {
        /* `tstats map`: the configuration's derived metrics too, as batches like the others */
        lua_getglobal(L, "tstats");
        lua_getfield(L, -1, "_config_file");
        ts_derive *dv = NULL;
        if (ts_derive_load(L, lua_tostring(L, -1), &dv) == 0 && dv) ts_collector_set_derive(coll, dv);
        ts_derive_release(dv);
        lua_pop(L, 2);
    }
    lua_pushvalue(L, 1);
    int n = ts_collector_set_plan(coll, lua_gettop(L));
    lua_pop(L, 1);
    /* saved payloads are old: no sample age cutoff unless asked for */
    ts_collector_set_max_age(coll, (int64_t)(luaL_optnumber(L, 3, 0) * 1000));
    ts_collect_stats cs;
    memset(&cs, 0, sizeof cs);
    if (n > 0) {
        ts_collector_poll(coll);
        int64_t deadline = ts_mono_ms() + (int64_t)(timeout_s * 1000);
        while (ts_collector_busy(coll) && ts_mono_ms() < deadline) ts_loop_run_once(loop, 100);
    }
    ts_collector_get_stats(coll, &cs);
    ts_collector_close(coll);
    ts_loop_free(loop);
    ts_collector_free(coll);
    ts_http_allow_file(0);
    if (n < 0) {
        for (int i = 0; i < o.n; i++) ts_buf_free(&o.bodies[i]);
        free(o.bodies); free(o.db); free(o.rp); free(o.prec); free(o.points);
        return luaL_error(L, "the plan was refused (see the log)");
    }
    lua_createtable(L, 0, 8);
    lua_createtable(L, o.n, 0);
    for (int i = 0; i < o.n; i++) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, o.db[i]);
        lua_setfield(L, -2, "db");
        lua_pushstring(L, o.rp[i]);
        lua_setfield(L, -2, "rp");
        lua_pushstring(L, o.prec[i]);
        lua_setfield(L, -2, "precision");
        set_int(L, "points", o.points[i]);
        lua_pushlstring(L, o.bodies[i].data ? o.bodies[i].data : "", o.bodies[i].len);
        lua_setfield(L, -2, "body");
        lua_rawseti(L, -2, i + 1);
        ts_buf_free(&o.bodies[i]);
    }
    lua_setfield(L, -2, "batches");
    set_int(L, "endpoints", (uint64_t)(n > 0 ? n : 0));
    set_int(L, "endpoints_ok", cs.endpoints_ok);
    set_int(L, "endpoints_failed", cs.endpoints_failed);
    set_int(L, "points", cs.points);
    set_int(L, "skipped_old", cs.skipped_old);
    set_int(L, "skipped_non_numeric", cs.skipped_non_numeric);
    set_int(L, "skipped_no_time", cs.skipped_no_time);
    set_int(L, "lua_calls", cs.lua_calls);
    free(o.bodies); free(o.db); free(o.rp); free(o.prec); free(o.points);
    return 1;
}

void ts_cli_map_open(lua_State *L) {
    lua_getglobal(L, "tstats");
    lua_pushcfunction(L, l_map_run);
    lua_setfield(L, -2, "_map_run");
    lua_pop(L, 1);
}
