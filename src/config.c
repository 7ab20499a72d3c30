/* Configuration (C side): config.lua is loaded and validated by
 * lua/options.lua (the one option table); C keeps the resolved table in the
 * registry and reads values from it by dotted path. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_core.h"
#include "ts_log.h"

#include "ts_embedded.h"

static const char CFG_KEY = 'g';

static int l_embedded_default(lua_State *L) {
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++)
        if (strcmp(e->name, "tstats.default_config") == 0) {
            lua_pushlstring(L, (const char *)e->src, e->len);
            return 1;
        }
    return 0;
}

int ts_config_load(lua_State *L, const char *file) {
    if (ts_lua_require(L, "options") != 0) return -1;
    int opt = lua_gettop(L);
    lua_pushcfunction(L, l_embedded_default);
    lua_setfield(L, opt, "embedded_default");
    lua_getfield(L, opt, "load");
    if (file) lua_pushstring(L, file); else lua_pushnil(L);
    if (ts_lua_pcall(L, 1, 2, "loading the configuration", 0) != 0) { lua_settop(L, opt - 1); return -1; }
    if (lua_isnil(L, -2)) {
        lua_Integer n = lua_istable(L, -1) ? luaL_len(L, -1) : 0;
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            ts_error("configuration error: %s", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_settop(L, opt - 1);
        return -1;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CFG_KEY);
    lua_getglobal(L, "tstats");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "config");
    lua_settop(L, opt - 1);
    return 0;
}

void ts_cfg_push(lua_State *L, const char *path) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CFG_KEY);
    const char *p = path;
    while (*p && lua_istable(L, -1)) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        lua_pushlstring(L, p, n);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        p += n + (dot ? 1 : 0);
        if (!dot) break;
    }
    if (*p && !lua_istable(L, -1)) { lua_pop(L, 1); lua_pushnil(L); }
}

int64_t ts_cfg_int(lua_State *L, const char *path, int64_t def) {
    ts_cfg_push(L, path);
    int64_t v = lua_isnumber(L, -1) ? (int64_t)lua_tonumber(L, -1) : def;
    if (lua_isinteger(L, -1)) v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

double ts_cfg_num(lua_State *L, const char *path, double def) {
    ts_cfg_push(L, path);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

int ts_cfg_bool(lua_State *L, const char *path, int def) {
    ts_cfg_push(L, path);
    int v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

const char *ts_cfg_str(lua_State *L, const char *path, const char *def, char *buf, size_t n) {
    ts_cfg_push(L, path);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    const char *ret = def;
    if (s) { snprintf(buf, n, "%s", s); ret = buf; }
    lua_pop(L, 1);
    return ret;
}

int ts_influx_cfg_read(lua_State *L, ts_influx_cfg *c) {
    memset(c, 0, sizeof *c);
    ts_cfg_push(L, "influxdb.urls");
    int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
    for (int i = 1; i <= n && c->nurls < 64; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) == LUA_TSTRING) {
            c->urls[c->nurls] = strdup(lua_tostring(L, -1));
            if (!c->urls[c->nurls]) abort();
            c->nurls++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (n > 64) ts_warn("influxdb.urls: %d URLs, only the first 64 are used", n);
    ts_writer_opts *o = &c->o;
    o->urls = (const char *const *)c->urls;
    o->user = ts_cfg_str(L, "influxdb.user", NULL, c->user, sizeof c->user);
    if (o->user && !*o->user) o->user = NULL;
    o->password = ts_cfg_str(L, "influxdb.password", NULL, c->password, sizeof c->password);
    o->insecure = ts_cfg_bool(L, "influxdb.insecure", 0);
    o->gzip = ts_cfg_bool(L, "influxdb.gzip", 0);
    o->timeout_ms = (long)(ts_cfg_num(L, "influxdb.timeout", 30) * 1000);
    o->max_publish_size = (size_t)ts_cfg_int(L, "influxdb.max_publish_size", 10000);
    o->max_buffer_bytes = (size_t)ts_cfg_int(L, "influxdb.max_buffer_bytes", 256LL << 20);
    o->max_inflight = (int)ts_cfg_int(L, "influxdb.max_inflight", 2);
    c->conn = (ts_influx_conn){(const char *const *)c->urls, c->nurls, o->user, o->password ? o->password : "",
                               NULL, o->insecure, o->timeout_ms, 5000};
    return c->nurls;
}

void ts_influx_cfg_free(ts_influx_cfg *c) {
    for (int i = 0; i < c->nurls; i++) free(c->urls[i]);
    c->nurls = 0;
}
