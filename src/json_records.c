/* tstats.json.decode_records (C side of the C/Lua line): Traffic Ops answers
 * are {"response":[{...}, ...]} with dozens of fields per record, of which
 * tstats needs a handful. Decoding the whole answer with cjson builds Lua
 * tables for everything (the servers list of a large CDN is tens of MB of
 * Lua heap for a moment); this streams it with yajl and builds only the
 * requested top-level scalar fields of each record. */
#include <lauxlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>
#include "ts_core.h"

#define MAX_FIELDS 32

typedef struct rec_ctx {
    lua_State *L;
    int result;                 /* stack index of the result array */
    int depth;                  /* containers open */
    int in_response;            /* inside the top-level "response" array */
    int want;                   /* the current record key is a wanted field */
    int rec_open;               /* a record table is on the stack */
    lua_Integer n;
    const char *fields[MAX_FIELDS];
    size_t lens[MAX_FIELDS];
    int nfields;
    char key[64];
    size_t keylen;
    int root_key_response;      /* the pending top-level key is "response" */
} rec_ctx;

/* Scalars belong to a record when they sit directly in it (depth 3). */
static int put(rec_ctx *c) {
    lua_setfield(c->L, -2, c->key);
    return 1;
}

static int scalar_ok(rec_ctx *c) { return c->in_response && c->depth == 3 && c->want && c->rec_open; }

static int cb_null(void *ctx) { (void)ctx; return 1; }
static int cb_bool(void *ctx, int b) {
    rec_ctx *c = ctx;
    if (!scalar_ok(c)) return 1;
    lua_pushboolean(c->L, b);
    return put(c);
}
static int cb_number(void *ctx, const char *s, size_t n) {
    rec_ctx *c = ctx;
    if (!scalar_ok(c)) return 1;
    char tmp[64];
    if (n >= sizeof tmp) return 1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (lua_stringtonumber(c->L, tmp) == 0) return 1;
    return put(c);
}
static int cb_string(void *ctx, const unsigned char *s, size_t n) {
    rec_ctx *c = ctx;
    if (!scalar_ok(c)) return 1;
    lua_pushlstring(c->L, (const char *)s, n);
    return put(c);
}
static int cb_key(void *ctx, const unsigned char *k, size_t n) {
    rec_ctx *c = ctx;
    if (c->depth == 1) { c->root_key_response = n == 8 && memcmp(k, "response", 8) == 0; return 1; }
    if (c->depth != 3 || !c->in_response) return 1;
    c->want = 0;
    for (int i = 0; i < c->nfields; i++)
        if (c->lens[i] == n && memcmp(c->fields[i], k, n) == 0 && n < sizeof c->key) {
            memcpy(c->key, k, n);
            c->key[n] = '\0';
            c->keylen = n;
            c->want = 1;
            break;
        }
    return 1;
}
static int cb_start_map(void *ctx) {
    rec_ctx *c = ctx;
    c->depth++;
    if (c->in_response && c->depth == 3) {
        lua_createtable(c->L, 0, c->nfields);
        c->rec_open = 1;
        c->want = 0;
    }
    return 1;
}
static int cb_end_map(void *ctx) {
    rec_ctx *c = ctx;
    if (c->in_response && c->depth == 3 && c->rec_open) {
        lua_rawseti(c->L, c->result, ++c->n);
        c->rec_open = 0;
    }
    c->depth--;
    return 1;
}
static int cb_start_array(void *ctx) {
    rec_ctx *c = ctx;
    c->depth++;
    if (c->depth == 2 && c->root_key_response) c->in_response = 1;
    return 1;
}
static int cb_end_array(void *ctx) {
    rec_ctx *c = ctx;
    if (c->depth == 2 && c->in_response) { c->in_response = 0; c->root_key_response = 0; }
    c->depth--;
    return 1;
}

static const yajl_callbacks record_callbacks = {
    cb_null, cb_bool, NULL, NULL, cb_number, cb_string, cb_start_map, cb_key, cb_end_map, cb_start_array, cb_end_array};

/* decode_records(body, {field, ...}) -> array of records | nil, err */
static int l_decode_records(lua_State *L) {
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    rec_ctx c;
    memset(&c, 0, sizeof c);
    c.L = L;
    lua_Integer nf = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= nf && c.nfields < MAX_FIELDS; i++) {
        lua_rawgeti(L, 2, i);
        if (lua_type(L, -1) == LUA_TSTRING) {
            c.fields[c.nfields] = lua_tolstring(L, -1, &c.lens[c.nfields]);  /* stays alive in table 2 */
            c.nfields++;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_newtable(L);
    c.result = lua_gettop(L);
    int saw_response = 0;
    yajl_handle h = yajl_alloc(&record_callbacks, NULL, &c);
    if (!h) return luaL_error(L, "decode_records: out of memory");
    yajl_status st = yajl_parse(h, (const unsigned char *)body, len);
    if (st == yajl_status_ok) st = yajl_complete_parse(h);
    if (st != yajl_status_ok) {
        unsigned char *e = yajl_get_error(h, 0, (const unsigned char *)body, len);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON: %s", e ? (const char *)e : "parse error");
        if (e) yajl_free_error(h, e);
        yajl_free(h);
        return 2;
    }
    yajl_free(h);
    saw_response = c.n > 0 || strstr(body, "\"response\"") != NULL;
    if (!saw_response) {
        lua_pushnil(L);
        lua_pushliteral(L, "no \"response\" array in the answer");
        return 2;
    }
    lua_settop(L, c.result);
    return 1;
}

void ts_json_records_open(lua_State *L) {
    /* tstats.json is cjson's table: add the function to it. */
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "json");
    lua_pushcfunction(L, l_decode_records);
    lua_setfield(L, -2, "decode_records");
    lua_pop(L, 2);
}
