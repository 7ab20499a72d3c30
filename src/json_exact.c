/* Exact JSON decoding for InfluxDB answers (C side of the C/Lua line):
 * tstats.json.decode_exact(body) is cjson.decode except that a number whose
 * text is an integer becomes a Lua integer (all 64 bits kept) and every other
 * number is converted once by strtod from its own text. cjson turns every
 * number into a double, which loses nanosecond timestamps and large integer
 * fields. JSON null becomes nothing (a hole in an array, an absent key).
 * yajl fills a compact tape first; the Lua tables are built after the parse,
 * so a Lua memory error never unwinds through yajl. */
#include "ts_json_exact.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "ts_buf.h"

/* Tape: one tag byte per event; K (key), S (string) and N (number text)
 * carry a 4-byte length and the bytes. { } [ ] open and close containers,
 * T F are booleans, Z is null. */
typedef struct tape {
    ts_buf b;
    int depth;
    int too_deep;
} tape;

#define MAX_DEPTH 64

static void put_len(tape *t, char tag, const void *s, size_t n) {
    uint32_t len = (uint32_t)n;
    ts_buf_addc(&t->b, tag);
    ts_buf_add(&t->b, &len, 4);
    ts_buf_add(&t->b, s, n);
}

static int cb_null(void *ud) { ts_buf_addc(&((tape *)ud)->b, 'Z'); return 1; }
static int cb_bool(void *ud, int v) { ts_buf_addc(&((tape *)ud)->b, v ? 'T' : 'F'); return 1; }
static int cb_number(void *ud, const char *s, size_t n) { put_len(ud, 'N', s, n); return 1; }
static int cb_string(void *ud, const unsigned char *s, size_t n) { put_len(ud, 'S', s, n); return 1; }
static int cb_key(void *ud, const unsigned char *s, size_t n) { put_len(ud, 'K', s, n); return 1; }
static int open_c(tape *t, char c) {
    if (++t->depth > MAX_DEPTH) { t->too_deep = 1; return 0; }
    ts_buf_addc(&t->b, c);
    return 1;
}
static int cb_start_map(void *ud) { return open_c(ud, '{'); }
static int cb_end_map(void *ud) { tape *t = ud; t->depth--; ts_buf_addc(&t->b, '}'); return 1; }
static int cb_start_array(void *ud) { return open_c(ud, '['); }
static int cb_end_array(void *ud) { tape *t = ud; t->depth--; ts_buf_addc(&t->b, ']'); return 1; }

static const yajl_callbacks callbacks = {cb_null, cb_bool, NULL, NULL, cb_number, cb_string,
                                         cb_start_map, cb_key, cb_end_map, cb_start_array, cb_end_array};

static uint32_t get_len(const char **p) {
    uint32_t n;
    memcpy(&n, *p, 4);
    *p += 4;
    return n;
}

/* Pushes the value starting at *p (nothing for null: returns 0), advancing *p. */
static int push_value(lua_State *L, const char **p) {
    char tag = *(*p)++;
    switch (tag) {
    case 'Z': return 0;
    case 'T': lua_pushboolean(L, 1); return 1;
    case 'F': lua_pushboolean(L, 0); return 1;
    case 'S': {
        uint32_t n = get_len(p);
        lua_pushlstring(L, *p, n);
        *p += n;
        return 1;
    }
    case 'N': {
        uint32_t n = get_len(p);
        char tmp[400];
        if (n >= sizeof tmp || (memcpy(tmp, *p, n), tmp[n] = '\0', lua_stringtonumber(L, tmp) == 0))
            lua_pushlstring(L, *p, n);   /* not representable: keep the text */
        *p += n;
        return 1;
    }
    case '[': {
        lua_newtable(L);
        lua_Integer i = 0;
        while (**p != ']') {
            i++;
            if (push_value(L, p)) lua_rawseti(L, -2, i);
        }
        (*p)++;
        return 1;
    }
    case '{': {
        lua_newtable(L);
        while (**p != '}') {
            (*p)++;   /* 'K' */
            uint32_t n = get_len(p);
            lua_pushlstring(L, *p, n);
            *p += n;
            if (push_value(L, p)) lua_rawset(L, -3);
            else lua_pop(L, 1);
        }
        (*p)++;
        return 1;
    }
    }
    return 0;
}

static int tape_gc(lua_State *L) {
    tape *t = lua_touserdata(L, 1);
    ts_buf_free(&t->b);
    return 0;
}

/* decode_exact(text) -> value | nil, err */
static int l_decode_exact(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    tape *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    ts_buf_init(&t->b);
    if (luaL_newmetatable(L, "tstats.json_tape")) {
        lua_pushcfunction(L, tape_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    yajl_handle h = yajl_alloc(&callbacks, NULL, t);
    if (!h) return luaL_error(L, "decode_exact: out of memory");
    yajl_status st = yajl_parse(h, (const unsigned char *)s, len);
    if (st == yajl_status_ok) st = yajl_complete_parse(h);
    if (st != yajl_status_ok) {
        char msg[300];
        if (t->too_deep) snprintf(msg, sizeof msg, "JSON nested deeper than %d", MAX_DEPTH);
        else {
            unsigned char *e = yajl_get_error(h, 0, (const unsigned char *)s, len);
            snprintf(msg, sizeof msg, "invalid JSON: %s", e ? (const char *)e : "parse error");
            if (e) yajl_free_error(h, e);
        }
        yajl_free(h);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    yajl_free(h);
    const char *p = t->b.data;
    if (!p || t->b.len == 0 || !push_value(L, &p)) lua_pushnil(L);
    return 1;
}

void ts_json_exact_open(lua_State *L) {
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "json");
    lua_pushcfunction(L, l_decode_exact);
    lua_setfield(L, -2, "decode_exact");
    lua_pop(L, 2);
}
