/* Derived metrics (C side of the C/Lua line): reading the definitions Lua
 * (lua/metrics.lua) checked and compiled, once per load (start-up, SIGHUP,
 * `tstats check`). Binding and the per-sample path are in derive_eval.c, the
 * end of a poll in derive_emit.c, the shared state in derive_state.c. */
#include "ts_derive.h"
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ts_buf.h"
#include "ts_config.h"
#include "ts_log.h"
#include "ts_lp.h"
#include "ts_lua.h"

static const char *const AGG_NAMES[] = {"sum", "min", "max", "mean", "count", "last", "rate", "ratio", NULL};

/* ---- reading the compiled list -------------------------------------------- */
static char *get_str(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    char *r = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        r = ts_dv_strndup(s, n);
    }
    lua_pop(L, 1);
    return r;
}

static char *escape_dup(void (*esc)(ts_buf *, const char *, size_t), const char *s, size_t *len) {
    ts_buf b;
    ts_buf_init(&b);
    esc(&b, s, strlen(s));
    char *r = ts_dv_strndup(b.data ? b.data : "", b.len);
    *len = b.len;
    ts_buf_free(&b);
    return r;
}

static char *tag_kv(const char *k, const char *v, size_t *len) {
    ts_buf b;
    ts_buf_init(&b);
    ts_lp_escape_tag(&b, k, strlen(k));
    ts_buf_addc(&b, '=');
    ts_lp_escape_tag(&b, v, strlen(v));
    char *r = ts_dv_strndup(b.data, b.len);
    if (len) *len = b.len;
    ts_buf_free(&b);
    return r;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int read_def(lua_State *L, int t, ddef *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->name = get_str(L, t, "name");
    f->from = get_str(L, t, "from");
    f->over = get_str(L, t, "over");
    f->endpoint = get_str(L, t, "endpoint");
    f->where_text = get_str(L, t, "where_text");
    f->db = get_str(L, t, "db");
    f->rp = get_str(L, t, "rp");
    char *field = get_str(L, t, "field");
    char *agg = get_str(L, t, "agg");
    f->agg = -1;
    for (int i = 0; agg && AGG_NAMES[i]; i++) if (strcmp(agg, AGG_NAMES[i]) == 0) f->agg = i;
    free(agg);
    const char *why = !f->name || !f->name[0] ? "no name" : !f->from ? "no from" : f->agg < 0 ? "unknown agg"
                    : f->agg == AGG_RATIO && !f->over ? "ratio without over" : NULL;
    if (why) {
        snprintf(err, errlen, "compiled definition %s: %s", f->name ? f->name : "?", why);
        free(field);
        return -1;
    }
    f->meas_esc = escape_dup(ts_lp_escape_measurement, f->name, &f->meas_len);
    f->field_esc = escape_dup(ts_lp_escape_field_key, field ? field : "value", &f->field_len);
    free(field);
    lua_getfield(L, t, "scale");
    f->scale = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1.0;
    if (!isfinite(f->scale)) f->scale = 1.0;
    lua_pop(L, 1);
    lua_getfield(L, t, "window_ms");
    f->window_ms = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    lua_getfield(L, t, "max_gap_ms");
    f->max_gap_ms = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 300000;
    lua_pop(L, 1);
    if (f->window_ms < 0 || f->max_gap_ms <= 0) { snprintf(err, errlen, "%s: bad window/max_gap", f->name); return -1; }
    lua_getfield(L, t, "where");
    if (lua_istable(L, -1)) {
        int w = lua_gettop(L);
        int n = (int)luaL_len(L, w);
        f->where = calloc((size_t)(n ? n : 1), sizeof *f->where);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, w, i);
            int c = lua_gettop(L);
            dclause *cl = &f->where[f->nwhere];
            cl->key = get_str(L, c, "key");
            lua_getfield(L, c, "neg");
            cl->neg = lua_toboolean(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, c, "values");
            int nv = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
            cl->kvs = calloc((size_t)(nv ? nv : 1), sizeof(char *));
            for (int j = 1; j <= nv; j++) {
                lua_rawgeti(L, -1, j);
                if (cl->key && lua_type(L, -1) == LUA_TSTRING) cl->kvs[cl->nvals++] = tag_kv(cl->key, lua_tostring(L, -1), NULL);
                lua_pop(L, 1);
            }
            lua_pop(L, 2);
            if (cl->key) f->nwhere++;
            else { free(cl->kvs); memset(cl, 0, sizeof *cl); }
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "group_by");
    if (lua_istable(L, -1)) {
        int n = (int)luaL_len(L, -1);
        f->group_by = calloc((size_t)(n ? n : 1), sizeof(char *));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) == LUA_TSTRING) f->group_by[f->ngroup++] = ts_dv_strndup(lua_tostring(L, -1), lua_rawlen(L, -1));
            lua_pop(L, 1);
        }
        qsort(f->group_by, (size_t)f->ngroup, sizeof(char *), str_cmp);
    }
    lua_pop(L, 1);
    return 0;
}

ts_derive *ts_derive_new(lua_State *L, int idx, char *err, size_t errlen) {
    ts_dv_counters_init();
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) { snprintf(err, errlen, "compiled metrics: not a table"); return NULL; }
    int n = (int)luaL_len(L, idx);
    ts_derive *d = calloc(1, sizeof *d);
    if (!d) abort();
    d->refs = 1;
    d->defs = calloc((size_t)(n ? n : 1), sizeof *d->defs);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int rc = lua_istable(L, -1) ? read_def(L, lua_gettop(L), &d->defs[d->ndefs], err, errlen) : -1;
        lua_pop(L, 1);
        if (rc != 0) {
            if (!lua_istable(L, idx)) snprintf(err, errlen, "compiled metrics: item %d is not a table", i);
            ts_dv_def_free(&d->defs[d->ndefs]);
            d->refs = 0;
            ts_derive_release(d);
            return NULL;
        }
        d->ndefs++;
    }
    return d;
}

int ts_derive_load(lua_State *L, const char *cfg_path, ts_derive **out) {
    *out = NULL;
    if (ts_lua_require(L, "metrics") != 0) return -1;
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "config");
    lua_remove(L, -2);
    if (cfg_path) lua_pushstring(L, cfg_path); else lua_pushnil(L);
    if (ts_lua_pcall(L, 2, 4, "metrics.load", 0) != 0) return -1;
    /* compiled, problems text, errors, warnings */
    int nerr = (int)lua_tointeger(L, -2);
    const char *text = lua_tostring(L, -3);
    if (text && *text) {
        const char *p = text;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            if (memmem(p, (size_t)len, ": error: ", 9)) ts_error("metrics: %.*s", len, p);
            else ts_warn("metrics: %.*s", len, p);
            p += len + (nl ? 1 : 0);
        }
    }
    int rc = 0;
    if (nerr > 0 || !lua_istable(L, -4)) {
        ts_error("metrics: %d error(s) in the definitions: none loaded", nerr);
        rc = -1;
    } else if (luaL_len(L, -4) > 0) {
        char err[256];
        *out = ts_derive_new(L, -4, err, sizeof err);
        if (!*out) { ts_error("metrics: %s", err); rc = -1; }
        else ts_info("metrics: %d derived metric definition(s) loaded", (*out)->ndefs);
    }
    lua_pop(L, 4);
    return rc;
}

int ts_derive_check(lua_State *L, const char *cfg_path, FILE *out) {
    const ts_settings *st = ts_config_settings(L);
    if (st) ts_lua_set_script_dir(L, st->script_dir);   /* modules as the daemon finds them */
    if (ts_lua_require(L, "metrics") != 0) return 2;
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "config");
    lua_remove(L, -2);
    if (cfg_path) lua_pushstring(L, cfg_path); else lua_pushnil(L);
    if (ts_lua_pcall(L, 2, 4, "metrics.load", 0) != 0) return 2;
    int nerr = (int)lua_tointeger(L, -2), nwarn = (int)lua_tointeger(L, -1);
    int ndef = lua_istable(L, -4) ? (int)luaL_len(L, -4) : 0;
    const char *text = lua_tostring(L, -3);
    fprintf(out, "# metrics: %d derived definition(s), %d error(s), %d warning(s)\n", ndef, nerr, nwarn);
    if (text && *text) fprintf(out, "%s\n", text);
    if (nerr == 0 && ndef > 0) {
        /* what C reads must load as well */
        char err[256];
        ts_derive *d = ts_derive_new(L, -4, err, sizeof err);
        if (!d) { fprintf(out, "metrics: %s\n", err); nerr = 1; }
        ts_derive_release(d);
    }
    lua_pop(L, 4);
    return nerr ? 2 : 0;
}

