/* Configuration (C side): config.lua is loaded and validated by
 * lua/options.lua (the one option table, holding every default); here the
 * resolved table becomes the typed ts_settings, once per load, by a table of
 * the keys C reads, each checked against the option table's own type. */
#include "ts_config.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_log.h"
#include "ts_lua.h"

#include "ts_embedded.h"

static const char CFG_KEY = 'g';
static const char SETTINGS_KEY = 's';

static int l_embedded_default(lua_State *L) {
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++)
        if (strcmp(e->name, "tstats.default_config") == 0) {
            lua_pushlstring(L, (const char *)e->src, e->len);
            return 1;
        }
    return 0;
}

static int settings_build(lua_State *L, int cfg, ts_settings *s);
static void settings_push_new(lua_State *L, ts_settings **out);

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
    int cfg = lua_gettop(L);
    ts_settings *s;
    settings_push_new(L, &s);
    if (settings_build(L, cfg, s) != 0) { lua_settop(L, opt - 1); return -1; }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SETTINGS_KEY);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CFG_KEY);
    lua_getglobal(L, "tstats");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "config");
    lua_settop(L, opt - 1);
    return 0;
}

const ts_settings *ts_config_settings(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SETTINGS_KEY);
    ts_settings *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}

/* ---- the settings C reads ----
 * Each entry names its option and the C type it must have there; a name
 * options.lua lacks, or a type it declares otherwise, fails the load. */
enum { K_STR, K_INT, K_NUM, K_BOOL, K_LIST };

typedef struct setting {
    const char *key;
    int kind;
    size_t off;
} setting;

#define S(key, kind, field) {key, kind, offsetof(ts_settings, field)}
static const setting SETTINGS[] = {
    S("log.level", K_STR, log_level),
    S("log.file", K_STR, log_file),
    S("log.format", K_STR, log_format),
    S("state_dir", K_STR, state_dir),
    S("script_dir", K_STR, script_dir),
    S("polling_interval", K_INT, polling_interval),
    S("publishing_interval", K_INT, publishing_interval),
    S("config_interval", K_INT, config_interval),
    S("daily_summary_interval", K_INT, daily_summary_interval),
    S("shutdown_timeout", K_NUM, shutdown_timeout),
    S("summary.enabled", K_BOOL, summary_enabled),
    S("collect.timeout", K_NUM, collect.timeout),
    S("collect.connect_timeout", K_NUM, collect.connect_timeout),
    S("collect.gzip", K_BOOL, collect.gzip),
    S("collect.max_sample_age", K_INT, collect.max_sample_age),
    S("collect.non_numeric", K_STR, collect.non_numeric),
    S("collect.max_payload_bytes", K_INT, collect.max_payload_bytes),
    S("influxdb.urls", K_LIST, influxdb.urls),
    S("influxdb.mode", K_STR, influxdb.mode),
    S("influxdb.user", K_STR, influxdb.user),
    S("influxdb.password", K_STR, influxdb.password),
    S("influxdb.insecure", K_BOOL, influxdb.insecure),
    S("influxdb.ca_file", K_STR, influxdb.ca_file),
    S("influxdb.ca_path", K_STR, influxdb.ca_path),
    S("influxdb.client_cert", K_STR, influxdb.client_cert),
    S("influxdb.client_key", K_STR, influxdb.client_key),
    S("influxdb.gzip", K_BOOL, influxdb.gzip),
    S("influxdb.timeout", K_NUM, influxdb.timeout),
    S("influxdb.max_publish_size", K_INT, influxdb.max_publish_size),
    S("influxdb.max_buffer_bytes", K_INT, influxdb.max_buffer_bytes),
    S("influxdb.max_inflight", K_INT, influxdb.max_inflight),
    S("spool.enabled", K_BOOL, spool.enabled),
    S("spool.dir", K_STR, spool.dir),
    S("spool.max_bytes", K_INT, spool.max_bytes),
    S("spool.segment_bytes", K_INT, spool.segment_bytes),
    S("spool.fsync", K_STR, spool.fsync),
    S("spool.fsync_interval", K_NUM, spool.fsync_interval),
    S("spool.replay_rate", K_INT, spool.replay_rate),
    S("lua.memory_limit", K_INT, lua.memory_limit),
    S("lua.hook_budget", K_INT, lua.hook_budget),
    S("lua.poll_budget_ms", K_INT, lua.poll_budget_ms),
    S("http.listen", K_STR, http.listen),
    S("http.user", K_STR, http.user),
    S("http.password", K_STR, http.password),
    S("http.token", K_STR, http.token),
    S("http.health_intervals", K_INT, http.health_intervals),
};
#undef S

/* The option table's type names that each C kind accepts. */
static int kind_accepts(int kind, const char *type) {
    switch (kind) {
    case K_STR: return strcmp(type, "string") == 0 || strcmp(type, "secret") == 0;
    case K_INT: return strcmp(type, "integer") == 0;
    case K_NUM: return strcmp(type, "number") == 0 || strcmp(type, "integer") == 0;
    case K_BOOL: return strcmp(type, "boolean") == 0;
    case K_LIST: return strcmp(type, "list") == 0;
    }
    return 0;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

static void settings_clear(ts_settings *s) {
    for (size_t i = 0; i < sizeof SETTINGS / sizeof SETTINGS[0]; i++) {
        void *f = (char *)s + SETTINGS[i].off;
        if (SETTINGS[i].kind == K_STR) free(*(char **)f);
        if (SETTINGS[i].kind == K_LIST) {
            char **l = *(char ***)f;
            for (int k = 0; l && l[k]; k++) free(l[k]);
            free(l);
        }
    }
    memset(s, 0, sizeof *s);
}

static int settings_gc(lua_State *L) {
    settings_clear(lua_touserdata(L, 1));
    return 0;
}

/* A full userdata owns the struct's strings, so a Lua error between here and
 * the registry store cannot leak them. */
static void settings_push_new(lua_State *L, ts_settings **out) {
    ts_settings *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    if (luaL_newmetatable(L, "tstats.settings")) {
        lua_pushcfunction(L, settings_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *out = s;
}

/* Pushes cfg's value at a dotted path (nil when absent). */
static void push_path(lua_State *L, int cfg, const char *path) {
    lua_pushvalue(L, cfg);
    const char *p = path;
    while (*p && lua_istable(L, -1)) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        lua_pushlstring(L, p, n);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        p += n + (dot ? 1 : 0);
        if (!dot) { p = ""; break; }
    }
    if (*p) { lua_pop(L, 1); lua_pushnil(L); }
}

static int settings_build(lua_State *L, int cfg, ts_settings *s) {
    if (ts_lua_require(L, "options") != 0) return -1;
    lua_getfield(L, -1, "by_key");
    int by_key = lua_gettop(L);
    int bad = 0;
    for (size_t i = 0; i < sizeof SETTINGS / sizeof SETTINGS[0]; i++) {
        const setting *d = &SETTINGS[i];
        lua_getfield(L, by_key, d->key);
        if (lua_istable(L, -1)) lua_getfield(L, -1, "type"); else lua_pushnil(L);
        const char *type = lua_tostring(L, -1);
        if (!type || !kind_accepts(d->kind, type)) {
            ts_error("internal: C reads setting '%s' as %s, but lua/options.lua %s%s", d->key,
                     (const char *[]){"string", "integer", "number", "boolean", "list"}[d->kind],
                     type ? "declares it " : "does not define it", type ? type : "");
            bad = 1;
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 2);
        void *f = (char *)s + d->off;
        push_path(L, cfg, d->key);
        switch (d->kind) {
        case K_STR:
            if (lua_type(L, -1) == LUA_TSTRING) *(char **)f = xstrdup(lua_tostring(L, -1));
            break;
        case K_INT:
            if (lua_isinteger(L, -1)) *(int64_t *)f = lua_tointeger(L, -1);
            break;
        case K_NUM:
            if (lua_isnumber(L, -1)) *(double *)f = lua_tonumber(L, -1);
            break;
        case K_BOOL:
            *(int *)f = lua_toboolean(L, -1);
            break;
        case K_LIST: {
            lua_Integer n = lua_istable(L, -1) ? luaL_len(L, -1) : 0;
            char **l = calloc((size_t)n + 1, sizeof *l);
            if (!l) abort();
            int k = 0;
            for (lua_Integer j = 1; j <= n; j++) {
                lua_rawgeti(L, -1, j);
                if (lua_type(L, -1) == LUA_TSTRING) l[k++] = xstrdup(lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            *(char ***)f = l;
            if (f == (void *)&s->influxdb.urls) s->influxdb.nurls = k;
            break;
        }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 2);   /* by_key, options */
    return bad ? -1 : 0;
}

void ts_config_writer_opts(const ts_settings *s, ts_writer_opts *o) {
    memset(o, 0, sizeof *o);
    o->urls = (const char *const *)s->influxdb.urls;
    o->user = s->influxdb.user && *s->influxdb.user ? s->influxdb.user : NULL;
    o->password = s->influxdb.password;
    o->insecure = s->influxdb.insecure;
    o->ca_file = s->influxdb.ca_file;
    o->tls = (ts_tls){s->influxdb.insecure, s->influxdb.ca_file, s->influxdb.ca_path, s->influxdb.client_cert,
                      s->influxdb.client_key};
    o->gzip = s->influxdb.gzip;
    o->timeout_ms = (long)(s->influxdb.timeout * 1000);
    o->max_publish_size = (size_t)s->influxdb.max_publish_size;
    o->max_buffer_bytes = (size_t)s->influxdb.max_buffer_bytes;
    o->max_inflight = (int)s->influxdb.max_inflight;
}
