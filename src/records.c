/* Traffic Ops records (C side of the C/Lua line): TO answers are
 * {"response":[{...}, ...]} with dozens of fields per record, of which tstats
 * needs a handful. Decoding the whole answer with cjson builds Lua tables for
 * everything, and even holding the answer costs its size (the servers list is
 * ~1 KB per server: 31 MB at 32,000 caches). The decoder here is fed the body
 * piece by piece as curl delivers it (tstats.http.request{records=...}) or
 * all at once (tstats.json.decode_records), keeps only the requested
 * top-level scalar fields of each record in a compact C buffer, and builds
 * the Lua tables after the transfer, outside curl's and yajl's callbacks, so
 * a Lua memory error never unwinds through them. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "ts_buf.h"
#include "ts_records.h"

#define MAX_FIELDS 32

/* The compact buffer: 'R' opens a record, 'E' closes it; a value is a tag
 * ('S' string, 'N' number text, 'T' true, 'F' false), the field index (one
 * byte) and, for S and N, a 4-byte length and the bytes. */
struct ts_records {
    yajl_handle h;
    ts_buf out;
    int depth;                  /* containers open */
    int in_response;            /* inside the top-level "response" array */
    int saw_response;           /* that array was found */
    int root_key_response;      /* the pending top-level key is "response" */
    int field;                  /* index of the current record key, -1 = not wanted */
    int rec_open;
    size_t nrec;
    int failed;
    char err[256];
    char *fields[MAX_FIELDS];
    size_t lens[MAX_FIELDS];
    int nfields;
};

static int scalar_ok(ts_records *c) { return c->in_response && c->depth == 3 && c->field >= 0 && c->rec_open; }

static void put_bytes(ts_records *c, char tag, const void *s, size_t n) {
    char hdr[6];
    uint32_t len = (uint32_t)n;
    hdr[0] = tag;
    hdr[1] = (char)c->field;
    memcpy(hdr + 2, &len, 4);
    ts_buf_add(&c->out, hdr, 6);
    ts_buf_add(&c->out, s, n);
}

static int cb_null(void *ctx) { (void)ctx; return 1; }
static int cb_bool(void *ctx, int b) {
    ts_records *c = ctx;
    if (!scalar_ok(c)) return 1;
    char hdr[2] = {b ? 'T' : 'F', (char)c->field};
    ts_buf_add(&c->out, hdr, 2);
    return 1;
}
static int cb_number(void *ctx, const char *s, size_t n) {
    ts_records *c = ctx;
    if (scalar_ok(c) && n < 64) put_bytes(c, 'N', s, n);
    return 1;
}
static int cb_string(void *ctx, const unsigned char *s, size_t n) {
    ts_records *c = ctx;
    if (scalar_ok(c) && n <= UINT32_MAX) put_bytes(c, 'S', s, n);
    return 1;
}
static int cb_key(void *ctx, const unsigned char *k, size_t n) {
    ts_records *c = ctx;
    if (c->depth == 1) { c->root_key_response = n == 8 && memcmp(k, "response", 8) == 0; return 1; }
    if (c->depth != 3 || !c->in_response) return 1;
    c->field = -1;
    for (int i = 0; i < c->nfields; i++)
        if (c->lens[i] == n && memcmp(c->fields[i], k, n) == 0) { c->field = i; break; }
    return 1;
}
static int cb_start_map(void *ctx) {
    ts_records *c = ctx;
    c->depth++;
    if (c->in_response && c->depth == 3) {
        ts_buf_addc(&c->out, 'R');
        c->rec_open = 1;
        c->field = -1;
    }
    return 1;
}
static int cb_end_map(void *ctx) {
    ts_records *c = ctx;
    if (c->in_response && c->depth == 3 && c->rec_open) {
        ts_buf_addc(&c->out, 'E');
        c->rec_open = 0;
        c->nrec++;
    }
    c->depth--;
    return 1;
}
static int cb_start_array(void *ctx) {
    ts_records *c = ctx;
    c->depth++;
    if (c->depth == 2 && c->root_key_response) c->in_response = c->saw_response = 1;
    return 1;
}
static int cb_end_array(void *ctx) {
    ts_records *c = ctx;
    if (c->depth == 2 && c->in_response) { c->in_response = 0; c->root_key_response = 0; }
    c->depth--;
    return 1;
}

static const yajl_callbacks record_callbacks = {
    cb_null, cb_bool, NULL, NULL, cb_number, cb_string, cb_start_map, cb_key, cb_end_map, cb_start_array, cb_end_array};

static void ts_records_free(ts_records *c);

static ts_records *ts_records_new(const char *const *fields, const size_t *lens, int n) {
    ts_records *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    ts_buf_init(&c->out);
    c->field = -1;
    for (int i = 0; i < n && i < MAX_FIELDS; i++) {
        c->fields[i] = malloc(lens[i] + 1);
        if (!c->fields[i]) { ts_records_free(c); return NULL; }
        memcpy(c->fields[i], fields[i], lens[i]);
        c->fields[i][lens[i]] = '\0';
        c->lens[i] = lens[i];
        c->nfields++;
    }
    c->h = yajl_alloc(&record_callbacks, NULL, c);
    if (!c->h) { ts_records_free(c); return NULL; }
    return c;
}

static void fail(ts_records *c, const unsigned char *p, size_t n) {
    unsigned char *e = yajl_get_error(c->h, 0, p, n);
    snprintf(c->err, sizeof c->err, "invalid JSON: %s", e ? (const char *)e : "parse error");
    if (e) yajl_free_error(c->h, e);
    c->failed = 1;
}

int ts_records_feed(ts_records *c, const char *p, size_t n) {
    if (c->failed) return -1;
    if (yajl_parse(c->h, (const unsigned char *)p, n) != yajl_status_ok) fail(c, (const unsigned char *)p, n);
    return c->failed ? -1 : 0;
}

int ts_records_finish(ts_records *c) {
    if (c->failed) return -1;
    if (yajl_complete_parse(c->h) != yajl_status_ok) fail(c, (const unsigned char *)"", 0);
    else if (!c->saw_response) {
        snprintf(c->err, sizeof c->err, "no \"response\" array in the answer");
        c->failed = 1;
    }
    return c->failed ? -1 : 0;
}

const char *ts_records_error(const ts_records *c) { return c->failed ? c->err : NULL; }

/* Pushes the array of records (after a successful finish). */
void ts_records_push(lua_State *L, const ts_records *c) {
    lua_createtable(L, c->nrec > INT32_MAX ? INT32_MAX : (int)c->nrec, 0);
    int arr = lua_gettop(L);
    lua_Integer n = 0;
    const char *p = c->out.data, *end = p ? p + c->out.len : p;
    while (p && p < end) {
        char tag = *p++;
        if (tag == 'R') { lua_createtable(L, 0, c->nfields); continue; }
        if (tag == 'E') { lua_rawseti(L, arr, ++n); continue; }
        int f = (unsigned char)*p++;
        if (tag == 'T' || tag == 'F') {
            lua_pushboolean(L, tag == 'T');
        } else {
            uint32_t len;
            memcpy(&len, p, 4);
            p += 4;
            if (tag == 'S') lua_pushlstring(L, p, len);
            else {
                char tmp[64];
                memcpy(tmp, p, len);
                tmp[len] = '\0';
                if (lua_stringtonumber(L, tmp) == 0) { p += len; continue; }
            }
            p += len;
        }
        lua_setfield(L, -2, c->fields[f]);
    }
}

static void ts_records_free(ts_records *c) {
    if (!c) return;
    if (c->h) yajl_free(c->h);
    for (int i = 0; i < c->nfields; i++) free(c->fields[i]);
    ts_buf_free(&c->out);
    free(c);
}

static int records_gc(lua_State *L) {
    ts_records **ud = luaL_checkudata(L, 1, "tstats.records");
    ts_records_free(*ud);
    *ud = NULL;
    return 0;
}

/* A decoder for the field names of the Lua array at idx (strings only, at
 * most MAX_FIELDS), owned by a userdata pushed on the stack: a Lua error
 * anywhere after this (memory while building the tables) cannot leak it. */
ts_records *ts_records_push_new(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    ts_records **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = NULL;
    if (luaL_newmetatable(L, "tstats.records")) {
        lua_pushcfunction(L, records_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    const char *names[MAX_FIELDS];
    size_t lens[MAX_FIELDS];
    int n = 0;
    lua_Integer nf = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= nf && n < MAX_FIELDS; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) == LUA_TSTRING) {
            names[n] = lua_tolstring(L, -1, &lens[n]);   /* alive in the table until we return */
            n++;
        }
        lua_pop(L, 1);
    }
    *ud = ts_records_new(names, lens, n);
    if (!*ud) luaL_error(L, "records decoder: out of memory");
    return *ud;
}

/* decode_records(body, {field, ...}) -> array of records | nil, err */
static int l_decode_records(lua_State *L) {
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    ts_records *c = ts_records_push_new(L, 2);
    if (ts_records_feed(c, body, len) != 0 || ts_records_finish(c) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, ts_records_error(c));
        return 2;
    }
    ts_records_push(L, c);
    return 1;
}

void ts_records_open(lua_State *L) {
    /* tstats.json is cjson's table: add the function to it. */
    lua_getglobal(L, "tstats");
    lua_getfield(L, -1, "json");
    lua_pushcfunction(L, l_decode_records);
    lua_setfield(L, -2, "decode_records");
    lua_pop(L, 2);
}
