/* Command line (C side): asks lua/commands.lua (the one command table) what
 * argv means, in a bare Lua state, before anything runs; then starts the
 * daemon modes (daemon.c) or calls the command's Lua function in a state with
 * the configuration loaded. Help and usage errors never reach a command. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ts_cli.h"

#include "ts_api.h"
#include "ts_cli_map.h"
#include "ts_clock.h"
#include "ts_collect.h"
#include "ts_config.h"
#include "ts_daemon.h"
#include "ts_derive.h"
#include "ts_embedded.h"
#include "ts_http.h"
#include "ts_log.h"
#include "ts_lua.h"
#include "ts_writer.h"

typedef struct cli_plan {
    char action[16], mode[16], command[64];
    char *config, *log_level, *log_format;
    int code, load_config;
} cli_plan;

static void push_argv(lua_State *L, int argc, char **argv) {
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static char *field_dup(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    char *s = lua_type(L, -1) == LUA_TSTRING ? strdup(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return s;
}

static void field_copy(lua_State *L, int t, const char *k, char *dst, size_t n) {
    lua_getfield(L, t, k);
    snprintf(dst, n, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
}

/* commands.dispatch(argv) in a state without configuration. Returns 0 with p filled. */
static int plan_argv(int argc, char **argv, cli_plan *p) {
    memset(p, 0, sizeof *p);
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L) return -1;
    int rc = -1;
    if (ts_lua_require(L, "commands") == 0) {
        lua_getfield(L, -1, "dispatch");
        push_argv(L, argc, argv);
        if (ts_lua_pcall(L, 1, 1, "commands.dispatch", 0) == 0 && lua_istable(L, -1)) {
            int t = lua_gettop(L);
            field_copy(L, t, "action", p->action, sizeof p->action);
            field_copy(L, t, "mode", p->mode, sizeof p->mode);
            field_copy(L, t, "command", p->command, sizeof p->command);
            p->config = field_dup(L, t, "config");
            p->log_level = field_dup(L, t, "log_level");
            p->log_format = field_dup(L, t, "log_format");
            lua_getfield(L, t, "code");
            p->code = (int)lua_tointeger(L, -1);
            lua_getfield(L, t, "load_config");
            p->load_config = lua_toboolean(L, -1);
            lua_pop(L, 3);
            rc = 0;
        }
    }
    ts_lua_close(L);
    return rc;
}

/* tstats._status(line) / tstats._status() : the progress line kept under the log. */
static int l_status(lua_State *L) {
    if (lua_isnoneornil(L, 1)) ts_log_clear_status();
    else ts_log_set_status(luaL_checkstring(L, 1));
    return 0;
}

/* tstats._embedded_script(NAME) -> source or nil */
static int l_embedded_script(lua_State *L) {
    size_t len;
    const char *src = ts_lua_embedded_script(luaL_checkstring(L, 1), &len);
    if (!src) return 0;
    lua_pushlstring(L, src, len);
    return 1;
}

/* tstats._embedded_scripts() -> list of names, in file name order */
static int l_embedded_scripts(lua_State *L) {
    lua_newtable(L);
    const char *name;
    for (size_t i = 0; (name = ts_lua_embedded_script_name(i)) != NULL; i++) {
        lua_pushstring(L, name);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static const char *embedded_module(const char *name, size_t *len) {
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++)
        if (strcmp(e->name, name) == 0) { *len = e->len; return (const char *)e->src; }
    return NULL;
}

/* tstats._derive_check() -> 0, or 2 when a derived metric definition has an
 * error; the definitions' problems are printed on stdout (`tstats check`). */
static int l_derive_check(lua_State *L) {
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "_config_file");
    const char *cfg = lua_tostring(L, -1);
    fflush(stdout);
    int rc = ts_derive_check(L, cfg, stdout);
    fflush(stdout);
    lua_pop(L, 2);
    lua_pushinteger(L, rc);
    return 1;
}

/* tstats._embedded_modules() -> list of the embedded module names */
static int l_embedded_modules(lua_State *L) {
    lua_newtable(L);
    int n = 0;
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++)
        if (strcmp(e->name, "tstats.default_config") != 0) {
            lua_pushstring(L, e->name);
            lua_rawseti(L, -2, ++n);
        }
    return 1;
}

/* tstats._default_config() -> the embedded config.lua */
static int l_default_config(lua_State *L) {
    size_t len;
    const char *src = embedded_module("tstats.default_config", &len);
    if (!src) return 0;
    lua_pushlstring(L, src, len);
    return 1;
}

static void add_cli_api(lua_State *L, const char *config) {
    lua_getglobal(L, "tstats");
    lua_pushcfunction(L, l_status);
    lua_setfield(L, -2, "_status");
    lua_pushcfunction(L, l_embedded_script);
    lua_setfield(L, -2, "_embedded_script");
    lua_pushcfunction(L, l_embedded_scripts);
    lua_setfield(L, -2, "_embedded_scripts");
    lua_pushcfunction(L, l_derive_check);
    lua_setfield(L, -2, "_derive_check");
    lua_pushcfunction(L, l_embedded_modules);
    lua_setfield(L, -2, "_embedded_modules");
    lua_pushcfunction(L, l_default_config);
    lua_setfield(L, -2, "_default_config");
    if (config) lua_pushstring(L, config); else lua_pushnil(L);
    lua_setfield(L, -2, "_config_file");
    lua_pop(L, 1);
    ts_cli_map_open(L);
}

/* Runs commands.run(argv, tty) with the configuration loaded (unless the
 * command needs none) and a writer available for asynchronous writes. */
static int run_lua_command(const cli_plan *p, int argc, char **argv) {
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L) return 1;
    int rc = 1;
    if (p->load_config && ts_config_load(L, p->config) != 0) {
        fprintf(stderr, "tstats %s: configuration %s is NOT valid\n", p->command,
                p->config ? p->config : "[embedded]config.lua");
        ts_lua_close(L);
        return 2;
    }
    const ts_settings *s = p->load_config ? ts_config_settings(L) : NULL;
    ts_loop *loop = ts_loop_new();
    ts_writer *w = NULL;
    if (s) {
        ts_lua_set_script_dir(L, s->script_dir);
        /* commands run under the same heap cap as the daemon */
        ts_lua_set_memory_limit(L, (size_t)s->lua.memory_limit);
        int lv = ts_log_parse_level(s->log_level ? s->log_level : "info");
        if (lv >= 0) ts_log_set_level(lv);
        int lf = ts_log_parse_format(s->log_format ? s->log_format : "text");
        if (lf >= 0) ts_log_set_format(lf);
        ts_writer_opts o;
        ts_config_writer_opts(s, &o);
        if (s->influxdb.nurls > 0) w = ts_writer_new(loop, &o);
    }
    add_cli_api(L, p->config);
    ts_api_ctx ctx = {loop, w, w ? ts_writer_influx(w) : NULL, NULL, NULL, NULL, NULL, NULL};   /* commands block on their requests */
    ts_api_set_ctx(L, &ctx);
    if (ts_lua_require(L, "commands") == 0) {
        lua_getfield(L, -1, "run");
        push_argv(L, argc, argv);
        lua_pushboolean(L, isatty(STDOUT_FILENO));
        lua_pushboolean(L, isatty(STDERR_FILENO));
        if (ts_lua_pcall(L, 3, 1, p->command, 0) == 0) {
            rc = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 1;
            lua_pop(L, 1);
        } else {
            rc = 2;
        }
        lua_pop(L, 1);
    }
    ts_log_clear_status();
    /* points a script queued asynchronously are written before we exit */
    if (w) {
        ts_writer_flush(w);
        size_t lost = ts_writer_drain(w, ts_mono_ms() + 30000);
        if (lost) { ts_error("%zu points could not be written", lost); if (rc == 0) rc = 1; }
        ts_writer_free(w);
    }
    ts_loop_free(loop);
    ts_lua_close(L);
    return rc;
}

int ts_cli_main(int argc, char **argv) {
    cli_plan p;
    if (plan_argv(argc - 1, argv + 1, &p) != 0) { fprintf(stderr, "tstats: the command table failed to load\n"); return 2; }
    int rc = 2;
    if (strcmp(p.action, "exit") == 0) { rc = p.code; goto out; }
    /* the command line wins over log.level / log.format of any configuration */
    if (p.log_level) {
        ts_log_pin_level(ts_log_parse_level(p.log_level));
        setenv("TSTATS_LOG_LEVEL", p.log_level, 1);   /* the embedded config reads it */
    }
    if (p.log_format) ts_log_pin_format(ts_log_parse_format(p.log_format));
    if (ts_http_global_init() != 0) { fprintf(stderr, "tstats: libcurl initialisation failed\n"); rc = 1; goto out; }
    if (strcmp(p.action, "daemon") == 0) {
        ts_mode mode = strcmp(p.mode, "run") == 0 ? TS_MODE_RUN : strcmp(p.mode, "once") == 0 ? TS_MODE_ONCE : TS_MODE_DRYRUN;
        rc = ts_daemon_main(p.config, mode);
    } else {
        rc = run_lua_command(&p, argc - 1, argv + 1);
    }
    ts_http_global_cleanup();
out:
    free(p.config);
    free(p.log_level);
    free(p.log_format);
    return rc;
}
