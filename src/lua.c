/* The Lua runtime (C side of the C/Lua line): one lua_State per process,
 * created inside a protected call, with a heap cap, an instruction budget
 * for hooks, a traceback on every error, and a module searcher that prefers
 * the operator's script_dir and falls back to the scripts compiled into the
 * binary. The host API is opened by the function its creator hands over, so
 * the runtime depends on no module above it. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ts_embedded.h"
#include "ts_log.h"
#include "ts_lua.h"

/* Heap accounting for the allocator cap. Kept outside the state so that the
 * allocator (which has no state pointer) can reach it through its ud. */
typedef struct lua_heap {
    size_t used;
    size_t limit;
    lua_State *running;   /* the state of the innermost ts_lua_pcall, or NULL */
    int over;             /* the cap was crossed; mem_hook is armed */
    lua_Hook saved_hook;  /* what mem_hook replaced (the budget hook), put back when it fires */
    int saved_mask, saved_count;
} lua_heap;

static void mem_hook(lua_State *L, lua_Debug *ar);

/* A Lua memory error carries no position, and the allocator cannot ask for
 * one (the stack may be half-moved while it runs). So the first crossing of
 * the cap inside ts_lua_pcall is let through up to a slack, and a count hook
 * armed for the next instruction raises an ordinary error naming file:line
 * (lua_sethook is safe from anywhere). Past the slack, or outside a pcall,
 * growth is refused: Lua raises "not enough memory" inside the running
 * pcall, which the script's caller logs and survives. */
static size_t heap_slack(const lua_heap *h) { return h->limit / 16 > 1048576 ? h->limit / 16 : 1048576; }

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    lua_heap *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        h->used -= old;
        if (h->over && h->used <= h->limit) h->over = 0;
        return NULL;
    }
    if (h->limit && nsize > old && h->used - old + nsize > h->limit) {
        if (h->over || !h->running || h->used - old + nsize > h->limit + heap_slack(h)) return NULL;
        h->over = 1;
        h->saved_hook = lua_gethook(h->running);
        h->saved_mask = lua_gethookmask(h->running);
        h->saved_count = lua_gethookcount(h->running);
        lua_sethook(h->running, mem_hook, LUA_MASKCOUNT, 1);
    }
    void *p = realloc(ptr, nsize);
    if (p) h->used = h->used - old + nsize;
    if (h->over && h->used <= h->limit) h->over = 0;
    return p;
}

static const char SCRIPT_DIR_KEY = 'd';
static const char HEAP_KEY = 'h';

static lua_heap *get_heap(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &HEAP_KEY);
    lua_heap *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

void ts_lua_set_memory_limit(lua_State *L, size_t bytes) {
    lua_heap *h = get_heap(L);
    if (h) h->limit = bytes;
}

size_t ts_lua_mem_used(lua_State *L) {
    lua_heap *h = get_heap(L);
    return h ? h->used : 0;
}

int ts_lua_embedded_exists(const char *mod) {
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++)
        if (strcmp(e->name, mod) == 0) return 1;
    return 0;
}

const char *ts_lua_embedded_script(const char *name, size_t *len) {
    for (const struct ts_embedded_lua *e = ts_embedded_scripts; e->name; e++)
        if (strcmp(e->name, name) == 0) {
            if (len) *len = e->len;
            return (const char *)e->src;
        }
    return NULL;
}

const char *ts_lua_embedded_script_name(size_t i) {
    for (size_t k = 0; ts_embedded_scripts[k].name; k++)
        if (k == i) return ts_embedded_scripts[k].name;
    return NULL;
}

int ts_lua_load_embedded_script(lua_State *L, const char *name) {
    size_t len;
    const char *src = ts_lua_embedded_script(name, &len);
    if (!src) {
        lua_pushfstring(L, "no embedded script '%s'", name);
        return LUA_ERRFILE;
    }
    lua_pushfstring(L, "@[tstats]/lua/scripts/%s.lua", name);
    int rc = luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t");
    lua_remove(L, -2);
    return rc;
}

/* package.searchers entry: script_dir/<mod with dots as slashes>.lua, then
 * the embedded copy. Mapping modules are loaded through lua/sandbox.lua
 * because they run inside the poll path. */
static int searcher(lua_State *L) {
    const char *mod = luaL_checkstring(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SCRIPT_DIR_KEY);
    const char *dir = lua_tostring(L, -1);
    if (dir && *dir) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, dir);
        luaL_addchar(&b, '/');
        for (const char *p = mod; *p; p++) luaL_addchar(&b, *p == '.' ? '/' : *p);
        luaL_addstring(&b, ".lua");
        luaL_pushresult(&b);
        const char *path = lua_tostring(L, -1);
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L);
            lua_pushstring(L, path);
            return 2;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    for (const struct ts_embedded_lua *e = ts_embedded_lua; e->name; e++) {
        if (strcmp(e->name, mod) != 0) continue;
        char chunk[256];
        snprintf(chunk, sizeof chunk, "@[tstats]/lua/%s.lua", mod);
        for (char *p = chunk + 15; *p && strcmp(p, ".lua") != 0; p++)
            if (*p == '.') *p = '/';
        if (luaL_loadbufferx(L, (const char *)e->src, e->len, chunk, "t") != LUA_OK) return lua_error(L);
        lua_pushfstring(L, "[embedded]%s", mod);
        return 2;
    }
    lua_pushfstring(L, "\n\tno embedded module '%s'%s%s", mod, dir && *dir ? " and none in " : "",
                    dir && *dir ? dir : "");
    return 1;
}

void ts_lua_set_script_dir(lua_State *L, const char *dir) {
    if (dir) lua_pushstring(L, dir);
    else lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SCRIPT_DIR_KEY);
}

static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* The error names the function that was running (level 0 inside a hook):
 * luaL_error's own position would be its caller's, or none. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_Debug d;
    if (lua_getstack(L, 0, &d) && lua_getinfo(L, "Sln", &d) && d.currentline > 0)
        lua_pushfstring(L, "%s:%d: script exceeded its instruction budget (in %s)", d.short_src, d.currentline,
                        d.name ? d.name : "a function");
    else
        lua_pushliteral(L, "script exceeded its instruction budget");
    lua_error(L);
}

/* Level 0 may be the C function that allocated (string.rep, table.concat):
 * the position is the nearest Lua function's. */
static void push_where(lua_State *L, const char *what) {
    lua_Debug d, c;
    int have_c = lua_getstack(L, 0, &c) && lua_getinfo(L, "Sn", &c) && c.what[0] == 'C';
    for (int lv = 0; lua_getstack(L, lv, &d); lv++) {
        if (lua_getinfo(L, "Sln", &d) && d.currentline > 0) {
            const char *fn = have_c && c.name ? c.name : d.name;
            lua_pushfstring(L, "%s:%d: %s (in %s)", d.short_src, d.currentline, what, fn ? fn : "a function");
            return;
        }
    }
    lua_pushstring(L, what);
}

static void mem_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_heap *h = get_heap(L);
    if (!h) { lua_sethook(L, NULL, 0, 0); return; }
    lua_sethook(L, h->saved_hook, h->saved_mask, h->saved_count);
    if (!h->over) return;
    char what[96];
    snprintf(what, sizeof what, "not enough memory: lua.memory_limit (%.1f MiB) reached", (double)h->limit / 1048576.0);
    push_where(L, what);
    lua_error(L);
}

void ts_lua_log_error(const char *what, const char *msg) {
    static ts_counter *errors;
    if (!errors) errors = ts_counter_get("lua_errors");
    ts_counter_add(errors, 1);
    if (!msg) msg = "(no message)";
    /* First line is file:line: message; the traceback goes to debug. */
    const char *nl = strchr(msg, '\n');
    ts_error("%s: %.*s", what, nl ? (int)(nl - msg) : (int)strlen(msg), msg);
    if (nl) ts_debug("%s traceback:%s", what, nl);
}

int ts_lua_pcall(lua_State *L, int nargs, int nresults, const char *what, long budget) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    /* The count hook fires every `budget` instructions: the first firing
     * means the budget is spent. A nested call keeps its caller's hook. */
    lua_Hook old_hook = lua_gethook(L);
    int old_mask = lua_gethookmask(L), old_count = lua_gethookcount(L);
    if (budget > 0 && !old_hook) lua_sethook(L, budget_hook, LUA_MASKCOUNT, (int)(budget > 0x7fffffff ? 0x7fffffff : budget));
    lua_heap *h = get_heap(L);
    lua_State *outer = h ? h->running : NULL;
    if (h) h->running = L;
    int rc = lua_pcall(L, nargs, nresults, base);
    if (h) h->running = outer;
    /* mem_hook may have replaced (or cleared) the budget hook: the caller's comes back */
    if ((budget > 0 && !old_hook) || lua_gethook(L) != old_hook) lua_sethook(L, old_hook, old_mask, old_count);
    lua_remove(L, base);
    if (rc != LUA_OK) {
        ts_lua_log_error(what, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static int l_require_helper(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

int ts_lua_require(lua_State *L, const char *mod) {
    lua_pushcfunction(L, l_require_helper);
    lua_pushstring(L, mod);
    char what[200];
    snprintf(what, sizeof what, "loading Lua module '%s'", mod);
    return ts_lua_pcall(L, 1, 1, what, 0);
}

/* Everything that can raise during set-up runs here, under lua_pcall. */
static int pmain_setup(lua_State *L) {
    ts_lua_open_fn open_api = (ts_lua_open_fn)(uintptr_t)lua_touserdata(L, 1);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = n; i >= 2; i--) {      /* make room at index 2 */
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);
    if (open_api) open_api(L);
    return 0;
}

lua_State *ts_lua_new(size_t mem_limit, ts_lua_open_fn open_api) {
    lua_heap *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->limit = mem_limit;
    lua_State *L = lua_newstate(heap_alloc, h);
    if (!L) { free(h); ts_error("cannot create the Lua state"); return NULL; }
    lua_pushlightuserdata(L, h);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HEAP_KEY);
    ts_lua_set_script_dir(L, NULL);
    lua_pushcfunction(L, pmain_setup);
    /* a function pointer travels as a light userdata (POSIX: same size) */
    lua_pushlightuserdata(L, (void *)(uintptr_t)open_api);
    if (ts_lua_pcall(L, 1, 0, "Lua set-up", 0) != 0) {
        lua_close(L);
        free(h);
        return NULL;
    }
    return L;
}

void ts_lua_close(lua_State *L) {
    if (!L) return;
    lua_heap *h = get_heap(L);
    lua_close(L);
    free(h);
}
