/* C unit tests of the Lua sources embedded in the binary (ctest `embedded`, C
 * core side): every .lua file in lua/scripts/ is embedded byte for byte as a script,
 * found by name, listed, loadable as a chunk, and not require()-able; the
 * modules stay require()-able and none of them is a script. */
#include <dirent.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_api.h"
#include "ts_lua.h"
#include "ts_embedded.h"
#include "ts_log.h"

#include "check.h"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) exit(2);
    p[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return p;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names of the .lua files in lua/scripts/, without ".lua", sorted (the order the list promises). */
static size_t script_files(char **names, size_t cap) {
    DIR *d = opendir(TS_LUA_DIR "/scripts");
    if (!d) { perror(TS_LUA_DIR "/scripts"); exit(2); }
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l <= 4 || strcmp(e->d_name + l - 4, ".lua") != 0) continue;
        if (n == cap) { fprintf(stderr, "too many scripts\n"); exit(2); }
        names[n] = strndup(e->d_name, l - 4);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    return n;
}

static void test_scripts_embedded(void) {
    char *names[64];
    size_t n = script_files(names, 64);
    CHECK(n >= 2, "lua/scripts holds the stock scripts (found %zu)", n);
    size_t listed = 0;
    while (ts_lua_embedded_script_name(listed)) listed++;
    CHECK(listed == n, "%zu scripts listed, %zu files in lua/scripts", listed, n);
    for (size_t i = 0; i < n; i++) {
        const char *name = ts_lua_embedded_script_name(i);
        CHECK(name && strcmp(name, names[i]) == 0, "script %zu is %s (listed %s)", i, names[i], name ? name : "(none)");
        char path[512];
        snprintf(path, sizeof path, "%s/scripts/%s.lua", TS_LUA_DIR, names[i]);
        size_t flen, elen = 0;
        char *file = slurp(path, &flen);
        const char *src = ts_lua_embedded_script(names[i], &elen);
        CHECK(src && elen == flen && memcmp(src, file, flen) == 0 && src[elen] == 0,
              "%s embedded byte for byte (%zu vs %zu bytes)", names[i], elen, flen);
        char mod[128];
        snprintf(mod, sizeof mod, "scripts.%s", names[i]);
        CHECK(!ts_lua_embedded_exists(mod), "%s is not an embedded module", mod);
        free(file);
        free(names[i]);
    }
    CHECK(ts_lua_embedded_script_name(listed) == NULL && ts_lua_embedded_script_name(listed + 100) == NULL,
          "the list ends");
    /* The name is exact: no suffix, no path, nothing guessed. */
    CHECK(ts_lua_embedded_script("cdn_report", NULL) != NULL, "cdn_report by name");
    CHECK(ts_lua_embedded_script("cdn_report.lua", NULL) == NULL, "no .lua suffix");
    CHECK(ts_lua_embedded_script("scripts/cdn_report", NULL) == NULL, "no path");
    CHECK(ts_lua_embedded_script("", NULL) == NULL && ts_lua_embedded_script("summary", NULL) == NULL,
          "modules are not scripts");
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++)
        CHECK(strncmp(e->name, "scripts.", 8) != 0, "module table holds no script (%s)", e->name);
    CHECK(ts_lua_embedded_exists("summary") && ts_lua_embedded_exists("mappings.cachestats") &&
          ts_lua_embedded_exists("tstats.default_config"), "modules still embedded");
}

static void test_scripts_in_lua(void) {
    lua_State *L = ts_lua_new(0, ts_api_open);
    CHECK(L != NULL, "state");
    if (!L) return;
    /* require() never finds a script, embedded or not */
    luaL_loadstring(L, "local ok, err = pcall(require, 'scripts.cdn_report') return ok, tostring(err)");
    CHECK(ts_lua_pcall(L, 0, 2, "require a script", 0) == 0, "pcall ran");
    CHECK(lua_toboolean(L, -2) == 0 && strstr(lua_tostring(L, -1), "no embedded module 'scripts.cdn_report'"),
          "require 'scripts.cdn_report' fails: %s", lua_tostring(L, -1));
    lua_settop(L, 0);
    CHECK(ts_lua_require(L, "summary") == 0 && lua_istable(L, -1), "modules still require()-able");
    lua_settop(L, 0);
    /* loaded by name as a chunk whose errors name the script's file */
    CHECK(ts_lua_load_embedded_script(L, "cdn_report") == LUA_OK && lua_isfunction(L, -1), "cdn_report loads");
    lua_Debug ar;
    lua_getinfo(L, ">S", &ar);
    CHECK(strcmp(ar.source, "@[tstats]/lua/scripts/cdn_report.lua") == 0, "chunk name %s", ar.source);
    CHECK(lua_gettop(L) == 0, "stack clean (top=%d)", lua_gettop(L));
    CHECK(ts_lua_load_embedded_script(L, "no_such_script") == LUA_ERRFILE &&
          strcmp(lua_tostring(L, -1), "no embedded script 'no_such_script'") == 0,
          "a missing script is an error with its name: %s", lua_tostring(L, -1));
    lua_settop(L, 0);
    ts_lua_close(L);
}

int main(void) {
    ts_log_set_level(TS_LOG_ERROR);
    test_scripts_embedded();
    test_scripts_in_lua();
    return check_report("test_embedded");
}
