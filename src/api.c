/* The `tstats` Lua API, C half (C side of the C/Lua line): logging, clocks,
 * HTTP (on the daemon's loop in its async coroutines, else blocking), the
 * line-protocol encoder, raw InfluxDB transport (the same two ways) with
 * failover, the writer queue, counters and the PostgreSQL binding. The Lua
 * half (lua/tstats/api.lua) shapes results on top of these primitives.
 * Every l_* function is listed in one luaL_Reg table below. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ts_api.h"
#include "ts_async.h"
#include "ts_batch.h"
#include "ts_json_exact.h"
#include "ts_log.h"
#include "ts_lp.h"
#include "ts_lua.h"
#include "ts_records.h"
#include "ts_pg.h"

#include "ts_version.h"

static const char CTX_KEY = 'c';

void ts_api_set_ctx(lua_State *L, ts_api_ctx *ctx) {
    lua_pushlightuserdata(L, ctx);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
    ts_async_set_loop(L, ctx ? ctx->loop : NULL, ctx ? ctx->async_wake : NULL);
}

ts_api_ctx *ts_api_get_ctx(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
    ts_api_ctx *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
}

/* ---- logging, clocks, counters ------------------------------------------ */
static int log_at(lua_State *L, int level, int idx) {
    luaL_checkany(L, idx);
    const char *msg = luaL_tolstring(L, idx, NULL);
    lua_Debug ar;
    /* file:line of the script that logged, so operators can find it. */
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        ts_log(level, "[%s:%d] %s", ar.short_src, ar.currentline, msg);
    else
        ts_log(level, "%s", msg);
    return 0;
}

static int l_log(lua_State *L) {
    const char *lv = luaL_checkstring(L, 1);
    int level = ts_log_parse_level(lv);
    if (level < 0) return luaL_error(L, "unknown log level '%s'", lv);
    return log_at(L, level, 2);
}
static int l_error(lua_State *L) { return log_at(L, TS_LOG_ERROR, 1); }
static int l_warn(lua_State *L) { return log_at(L, TS_LOG_WARN, 1); }
static int l_info(lua_State *L) { return log_at(L, TS_LOG_INFO, 1); }
static int l_debug(lua_State *L) {
    if (ts_log_level() >= TS_LOG_DEBUG) log_at(L, TS_LOG_DEBUG, 1);
    return 0;
}

static int l_now_ms(lua_State *L) { lua_pushinteger(L, ts_now_ms()); return 1; }
static int l_now(lua_State *L) { lua_pushnumber(L, (double)ts_now_ns() / 1e9); return 1; }

static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    if (s > 0) {
        struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void push_counter(void *ud, const char *name, int64_t v) {
    lua_State *L = ud;
    lua_pushinteger(L, v);
    lua_setfield(L, -2, name);
}
static int l_counters(lua_State *L) {
    lua_newtable(L);
    ts_counters_foreach(push_counter, L);
    return 1;
}
static int l_count(lua_State *L) {
    ts_counter *c = ts_counter_get(luaL_checkstring(L, 1));
    ts_counter_add(c, luaL_optinteger(L, 2, 1));
    return 0;
}

static int l_float(lua_State *L) {
    lua_pushnumber(L, (lua_Number)luaL_checknumber(L, 1));
    return 1;
}

static int l_mem(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ts_lua_mem_used(L));
    return 1;
}

/* ---- HTTP ---------------------------------------------------------------- */
static long opt_ms(lua_State *L, int t, const char *k, long def) {
    lua_getfield(L, t, k);
    long v = lua_isnumber(L, -1) ? (long)(lua_tonumber(L, -1) * 1000.0) : def;
    lua_pop(L, 1);
    return v;
}
static int opt_bool(lua_State *L, int t, const char *k, int def) {
    lua_getfield(L, t, k);
    int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}
static const char *opt_str(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1);   /* stays alive: the table holds it */
    lua_pop(L, 1);
    return s;
}

typedef struct records_sink {
    ts_records *dec;
    ts_buf head;
} records_sink;

#define RECORDS_HEAD_MAX 65536

static int records_data(void *ud, const char *p, size_t n) {
    records_sink *s = ud;
    if (s->head.len < RECORDS_HEAD_MAX) {
        size_t k = RECORDS_HEAD_MAX - s->head.len;
        ts_buf_add(&s->head, p, n < k ? n : k);
    }
    ts_records_feed(s->dec, p, n);   /* an error is kept and reported after the transfer */
    return 0;
}

/* Pushes the result of a finished request and releases r (and the records
 * sink's head, which becomes the body). */
static int http_result(lua_State *L, const char *url, int rc, ts_http_result *r, records_sink *rs) {
    if (rs && rs->dec) {
        ts_buf_free(&r->body);
        r->body = rs->head;
        ts_buf_init(&rs->head);
    }
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", url, r->errmsg[0] ? r->errmsg : "request failed");
        ts_http_result_free(r);
        ts_buf_init(&r->body);
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
    ts_http_result_free(r);
    ts_buf_init(&r->body);
    if (rs && rs->dec) {
        if (ts_records_finish(rs->dec) == 0) {
            ts_records_push(L, rs->dec);
            lua_setfield(L, -2, "records");
        } else {
            lua_pushstring(L, ts_records_error(rs->dec));
            lua_setfield(L, -2, "records_error");
        }
    }
    return 1;
}

/* ---- requests that yield (the daemon's Traffic Ops refresh) ----------------
 * In a coroutine the daemon marked with ts_api_mark_async, a request runs on
 * the daemon's loop and the coroutine yields until it is over, so a slow or
 * unreachable Traffic Ops never holds up a poll. Elsewhere requests block. */
typedef struct async_http {
    records_sink rs;          /* first: on_data and on_done share the ud */
    ts_http_result res;
    int done;
    int *wake;
    int url_idx;              /* stack slot of the URL, for the answer's error text */
} async_http;

static int async_http_gc(lua_State *L) {
    async_http *a = lua_touserdata(L, 1);
    ts_buf_free(&a->rs.head);
    ts_buf_free(&a->res.body);
    return 0;
}

static void async_http_done(void *ud, ts_http_result *r) {
    async_http *a = ud;
    a->res = *r;
    ts_buf_init(&r->body);    /* the body is ours now */
    a->done = 1;
    if (a->wake) *a->wake = 1;
}

void ts_api_mark_async(lua_State *L, lua_State *co) { ts_async_mark(L, co); }

static int async_ok(lua_State *L, ts_api_ctx *ctx) { return ctx && ctx->loop && ts_async_get(L, NULL, NULL); }

static int http_continue(lua_State *L, int status, lua_KContext k) {
    (void)status;
    int idx = (int)k;
    async_http *a = lua_touserdata(L, idx);
    if (!a->done) return lua_yieldk(L, 0, k, http_continue);   /* woken for another reason */
    const char *url = lua_tostring(L, a->url_idx);
    return http_result(L, url ? url : "", a->res.curl_code == 0 ? 0 : -1, &a->res, &a->rs);
}

/* res = {status=, body=[, records= | records_error=]} or nil, err.
 * t is the options table (may be 0: none); url, body_idx and method, when
 * given, stand instead of its fields: the caller's table is only read, so a
 * table reused for a GET after a POST stays a GET. */
static int http_do(lua_State *L, int t, int url_idx, int body_idx, const char *method) {
    ts_http_req req;
    memset(&req, 0, sizeof req);
    if (!url_idx) {
        lua_getfield(L, t, "url");
        url_idx = lua_gettop(L);
    }
    req.url = lua_type(L, url_idx) == LUA_TSTRING ? lua_tostring(L, url_idx) : NULL;
    if (!req.url) return luaL_error(L, "http.request: url is required");
    req.method = method ? method : opt_str(L, t, "method");
    if (!body_idx) {
        lua_getfield(L, t, "body");
        body_idx = lua_gettop(L);
    }
    size_t blen = 0;
    req.body = lua_tolstring(L, body_idx, &blen);
    req.body_len = blen;
    req.content_type = opt_str(L, t, "content_type");
    req.opts.timeout_ms = opt_ms(L, t, "timeout", 10000);
    req.opts.connect_timeout_ms = opt_ms(L, t, "connect_timeout", 5000);
    req.opts.insecure = opt_bool(L, t, "insecure", 0);
    req.opts.user = opt_str(L, t, "user");
    req.opts.password = opt_str(L, t, "password");
    req.opts.use_cookies = opt_bool(L, t, "cookies", 0);
    req.opts.gzip_body = opt_bool(L, t, "gzip", 0);
    req.opts.accept_gzip = 1;
    req.opts.ca_file = opt_str(L, t, "ca_file");
    req.opts.tls.ca_path = opt_str(L, t, "ca_path");
    req.opts.tls.client_cert = opt_str(L, t, "client_cert");
    req.opts.tls.client_key = opt_str(L, t, "client_key");
    lua_getfield(L, t, "max_body");
    req.max_body = lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0 ? (size_t)lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    /* headers: strings anchored on the Lua stack stay valid until we return
     * (or, in a coroutine, while it is suspended) */
    const char **hdrs = lua_newuserdatauv(L, 33 * sizeof *hdrs, 0);
    int nh = 0;
    lua_getfield(L, t, "headers");
    int htab = lua_gettop(L);
    lua_newtable(L);
    int anchor = lua_gettop(L);
    if (lua_istable(L, htab)) {
        lua_pushnil(L);
        while (lua_next(L, htab) && nh < 32) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
                lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
                hdrs[nh++] = lua_tostring(L, -1);
                lua_rawseti(L, anchor, nh);
            }
            lua_pop(L, 1);
        }
    }
    hdrs[nh] = NULL;
    req.headers = nh ? hdrs : NULL;
    /* records = {field, ...}: the body streams through the records decoder
     * and is never held whole; its head is kept for error messages */
    ts_records *dec = NULL;
    lua_getfield(L, t, "records");
    if (lua_istable(L, -1)) dec = ts_records_push_new(L, -1);

    ts_api_ctx *ctx = ts_api_get_ctx(L);
    if (async_ok(L, ctx)) {
        async_http *a = lua_newuserdatauv(L, sizeof *a, 0);
        memset(a, 0, sizeof *a);
        ts_buf_init(&a->rs.head);
        ts_http_result_init(&a->res);
        if (luaL_newmetatable(L, "tstats.async_http")) {
            lua_pushcfunction(L, async_http_gc);
            lua_setfield(L, -2, "__gc");
        }
        lua_setmetatable(L, -2);
        a->wake = ctx->async_wake;
        a->url_idx = url_idx;
        if (dec) {
            a->rs.dec = dec;
            req.on_data = records_data;
        }
        req.on_done = async_http_done;
        req.ud = a;
        if (ts_http_start(ctx->loop, &req) != 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: request could not be started", req.url);
            return 2;
        }
        return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), http_continue);
    }

    records_sink rs = {dec, {0}};
    ts_buf_init(&rs.head);
    if (dec) {
        req.on_data = records_data;
        req.ud = &rs;
    }
    ts_http_result r;
    ts_http_result_init(&r);
    int rc = ts_http_perform(&req, &r);
    return http_result(L, req.url, rc, &r, &rs);
}

static int l_http_request(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    return http_do(L, 1, 0, 0, NULL);
}

/* An options table at idx, or an empty one in its place. */
static int opts_table(lua_State *L, int idx) {
    if (lua_istable(L, idx)) return idx;
    lua_settop(L, idx - 1);
    lua_newtable(L);
    return idx;
}

static int l_http_get(lua_State *L) {
    luaL_checkstring(L, 1);
    int t = opts_table(L, 2);
    lua_pushnil(L);   /* no body, whatever the table holds */
    return http_do(L, t, 1, lua_gettop(L), "GET");
}

static int l_http_post(lua_State *L) {
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    int t = opts_table(L, 3);
    return http_do(L, t, 1, 2, "POST");
}

static int l_urlencode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    ts_buf b;
    ts_buf_init(&b);
    ts_http_urlencode(&b, s, n);
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    ts_buf_free(&b);
    return 1;
}

/* ---- line protocol --------------------------------------------------------- */
static int64_t prec_unit_ns(ts_precision p) {
    switch (p) {
    case TS_PREC_NS: return 1;
    case TS_PREC_US: return 1000;
    case TS_PREC_MS: return 1000000;
    case TS_PREC_S: return 1000000000;
    case TS_PREC_M: return 60LL * 1000000000;
    case TS_PREC_H: return 3600LL * 1000000000;
    }
    return 1;
}

#define MAX_KV 64
/* Encodes tstats.line(measurement, tags, fields, time, precision) into b.
 * Returns NULL or an error message. Uses the Lua stack for string lifetimes. */
static const char *encode_line(lua_State *L, int mi, int ti, int fi, int tmi, ts_precision prec, ts_buf *b) {
    size_t mlen;
    const char *meas = luaL_checklstring(L, mi, &mlen);
    ts_tag tags[MAX_KV];
    ts_field fields[MAX_KV];
    size_t nt = 0, nf = 0;
    if (!lua_isnoneornil(L, ti)) {
        luaL_checktype(L, ti, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, ti)) {
            if (nt == MAX_KV) { lua_pop(L, 2); return "too many tags"; }
            if (lua_type(L, -2) != LUA_TSTRING) { lua_pop(L, 2); return "tag keys must be strings"; }
            tags[nt].key = lua_tolstring(L, -2, &tags[nt].key_len);
            if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
                tags[nt].value = lua_tolstring(L, -1, &tags[nt].value_len); /* converts numbers in the table */
            } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
                tags[nt].value = lua_toboolean(L, -1) ? "true" : "false";
                tags[nt].value_len = strlen(tags[nt].value);
            } else { lua_pop(L, 2); return "tag values must be strings"; }
            nt++;
            lua_pop(L, 1);
        }
    }
    luaL_checktype(L, fi, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, fi)) {
        if (nf == MAX_KV) { lua_pop(L, 2); return "too many fields"; }
        if (lua_type(L, -2) != LUA_TSTRING) { lua_pop(L, 2); return "field keys must be strings"; }
        ts_field *f = &fields[nf];
        f->key = lua_tolstring(L, -2, &f->key_len);
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER:
            if (lua_isinteger(L, -1)) { f->type = TS_F_INT; f->v.i = lua_tointeger(L, -1); }
            else { f->type = TS_F_FLOAT; f->v.f = lua_tonumber(L, -1); }
            break;
        case LUA_TBOOLEAN: f->type = TS_F_BOOL; f->v.b = lua_toboolean(L, -1); break;
        case LUA_TSTRING:
            f->type = TS_F_STRING;
            f->v.str.s = lua_tolstring(L, -1, &f->v.str.len);
            break;
        default: lua_pop(L, 2); return "field values must be numbers, booleans or strings";
        }
        nf++;
        lua_pop(L, 1);
    }
    int has_ts = !lua_isnoneornil(L, tmi);
    int64_t ts_ns = 0;
    if (has_ts) {
        if (!lua_isinteger(L, tmi)) return "time must be an integer in the precision's unit";
        int64_t t = lua_tointeger(L, tmi), unit = prec_unit_ns(prec);
        if ((t > 0 && t > INT64_MAX / unit) || (t < 0 && t < INT64_MIN / unit)) return "time out of range";
        ts_ns = t * unit;
    }
    const char *err = NULL;
    if (ts_lp_encode(b, meas, mlen, tags, nt, fields, nf, has_ts, ts_ns, prec, &err) != 0) return err;
    return NULL;
}

static ts_precision check_prec(lua_State *L, int idx, const char *def) {
    const char *p = luaL_optstring(L, idx, def);
    ts_precision prec;
    if (ts_precision_parse(p, &prec) != 0) luaL_error(L, "unknown precision '%s'", p);
    return prec;
}

static int l_line(lua_State *L) {
    ts_precision prec = check_prec(L, 5, "ms");
    ts_buf b;
    ts_buf_init(&b);
    const char *err = encode_line(L, 1, 2, 3, 4, prec, &b);
    if (err) { ts_buf_free(&b); lua_pushnil(L); lua_pushstring(L, err); return 2; }
    lua_pushlstring(L, b.data, b.len);
    ts_buf_free(&b);
    return 1;
}

size_t ts_api_encode_points(lua_State *L, int idx, ts_precision prec, ts_buf *out, int errt) {
    idx = lua_absindex(L, idx);
    errt = lua_absindex(L, errt);
    int nerr = (int)luaL_len(L, errt);
    size_t count = 0;
    lua_Integer n = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int p = lua_gettop(L);
        if (!lua_istable(L, p)) { lua_pop(L, 1); lua_pushfstring(L, "point %d is not a table", (int)i); lua_rawseti(L, errt, ++nerr); continue; }
        lua_getfield(L, p, "measurement");
        lua_getfield(L, p, "tags");
        lua_getfield(L, p, "fields");
        lua_getfield(L, p, "time");
        /* checked here so encode_line's own checks never raise past a caller's
         * half-filled batch */
        if (!lua_isstring(L, p + 1) || !lua_istable(L, p + 3) || !(lua_isnil(L, p + 2) || lua_istable(L, p + 2))) {
            lua_settop(L, p - 1);
            lua_pushfstring(L, "point %d needs a measurement, a fields table and tags as a table or nil", (int)i);
            lua_rawseti(L, errt, ++nerr);
            continue;
        }
        size_t before = out->len;
        const char *err = encode_line(L, p + 1, p + 2, p + 3, p + 4, prec, out);
        if (err) {
            out->len = before;
            if (out->data) out->data[before] = '\0';
            lua_settop(L, p - 1);
            lua_pushfstring(L, "point %d: %s", (int)i, err);
            lua_rawseti(L, errt, ++nerr);
            continue;
        }
        ts_buf_addc(out, '\n');
        count++;
        lua_settop(L, p - 1);
    }
    return count;
}

/* tstats._encode_points(points, precision) -> body, count, errors(table) */
static int l_encode_points(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    ts_precision prec = check_prec(L, 2, "ms");
    ts_buf b;
    ts_buf_init(&b);
    lua_newtable(L);
    int errt = lua_gettop(L);
    size_t count = ts_api_encode_points(L, 1, prec, &b, errt);
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    lua_pushinteger(L, (lua_Integer)count);
    lua_pushvalue(L, errt);
    ts_buf_free(&b);
    return 3;
}

/* ---- InfluxDB raw transport ------------------------------------------------ */
/* tstats._influx_post(path_and_query, body, content_type) -> status, body | nil, err
 * The servers are the writer's (the context's), so a failover here and one
 * of the writer's agree on which server answers. */
/* In an async coroutine: the same failover as ts_influx_post, one request at
 * a time on the loop. The servers are looked up again at each step: a SIGHUP
 * may have replaced them while a request was out. */
typedef struct async_influx {
    ts_http_result res;
    int done, *wake;
    int k, start;             /* tries made; the preferred server when it began */
    ts_buf url;               /* the current try's URL text, reused by the next try */
    size_t used;
    char err[1024];
} async_influx;

static int async_influx_gc(lua_State *L) {
    async_influx *a = lua_touserdata(L, 1);
    ts_buf_free(&a->url);
    ts_buf_free(&a->res.body);
    return 0;
}

static void async_influx_done(void *ud, ts_http_result *r) {
    async_influx *a = ud;
    a->res = *r;
    ts_buf_init(&r->body);
    a->done = 1;
    if (a->wake) *a->wake = 1;
}

/* Starts the next server's request; 0 when one is out. */
static int influx_try(lua_State *L, async_influx *a, ts_api_ctx *ctx) {
    ts_influx *x = ctx->influx;
    int n = x ? ts_influx_nurls(x) : 0;
    while (a->k < n) {
        int idx = (a->start + a->k) % n;
        ts_buf_reset(&a->url);
        ts_buf_printf(&a->url, "%s%s", ts_influx_url(x, idx), lua_tostring(L, 1));
        size_t blen;
        const char *body = lua_tolstring(L, 2, &blen);
        ts_http_req rq;
        ts_influx_req(x, &rq, a->url.data, body, blen, lua_tostring(L, 3));
        rq.max_body = (size_t)512 << 20;
        rq.on_done = async_influx_done;
        rq.ud = a;
        a->done = 0;
        ts_http_result_init(&a->res);
        if (ts_http_start(ctx->loop, &rq) == 0) return 0;
        ts_influx_note_failure(a->err, sizeof a->err, &a->used, ts_influx_url(x, idx), 0, NULL);
        a->k++;
    }
    return -1;
}

static int influx_continue(lua_State *L, int status, lua_KContext k) {
    (void)status;
    async_influx *a = lua_touserdata(L, (int)k);
    if (!a->done) return lua_yieldk(L, 0, k, influx_continue);
    ts_api_ctx *ctx = ts_api_get_ctx(L);
    ts_influx *x = ctx ? ctx->influx : NULL;
    int n = x ? ts_influx_nurls(x) : 0;
    int idx = n ? (a->start + a->k) % n : 0;
    ts_http_result *r = &a->res;
    if (ts_influx_answered(r->curl_code == 0, r)) {
        if (n) ts_influx_set_current(x, idx);
        lua_pushinteger(L, r->status);
        lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
        ts_buf_free(&r->body);
        return 2;
    }
    ts_influx_note_failure(a->err, sizeof a->err, &a->used, n ? ts_influx_url(x, idx) : "", r->curl_code == 0, r);
    ts_buf_free(&r->body);
    a->k++;
    if (ctx && influx_try(L, a, ctx) == 0) return lua_yieldk(L, 0, k, influx_continue);
    lua_pushnil(L);
    lua_pushstring(L, a->used ? a->err : "no InfluxDB URLs configured");
    return 2;
}

static int l_influx_post(lua_State *L) {
    const char *pq = luaL_checkstring(L, 1);
    size_t blen;
    const char *body = luaL_checklstring(L, 2, &blen);
    const char *ctype = luaL_optstring(L, 3, "text/plain; charset=utf-8");
    ts_api_ctx *ctx = ts_api_get_ctx(L);
    if (!ctx || !ctx->influx) { lua_pushnil(L); lua_pushliteral(L, "no InfluxDB URLs configured"); return 2; }
    if (async_ok(L, ctx)) {
        lua_settop(L, 2);
        lua_pushstring(L, ctype);   /* 1 path, 2 body, 3 type: anchored while the coroutine waits */
        async_influx *a = lua_newuserdatauv(L, sizeof *a, 0);
        memset(a, 0, sizeof *a);
        ts_buf_init(&a->url);
        ts_http_result_init(&a->res);
        if (luaL_newmetatable(L, "tstats.async_influx")) {
            lua_pushcfunction(L, async_influx_gc);
            lua_setfield(L, -2, "__gc");
        }
        lua_setmetatable(L, -2);
        a->wake = ctx->async_wake;
        int cur = ts_influx_current(ctx->influx);
        a->start = cur > 0 ? cur : 0;
        if (influx_try(L, a, ctx) != 0) {
            lua_pushnil(L);
            lua_pushstring(L, a->used ? a->err : "no InfluxDB URLs configured");
            return 2;
        }
        return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), influx_continue);
    }
    ts_http_result r;
    ts_http_result_init(&r);
    char err[1024];
    int rc = ts_influx_post(ctx->influx, pq, body, blen, ctype, (size_t)512 << 20, &r, err, sizeof err);
    if (rc != 0) {
        ts_http_result_free(&r);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, r.status);
    lua_pushlstring(L, r.body.data ? r.body.data : "", r.body.len);
    ts_http_result_free(&r);
    return 2;
}

/* tstats._queue_points(points, db, rp, precision) -> count, errors | nil, err
 * Encodes straight into a text batch for the writer's next publish. */
static int l_queue_points(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    ts_api_ctx *ctx = ts_api_get_ctx(L);
    if (!ctx || (!ctx->writer && !ctx->submit)) {
        lua_pushnil(L);
        lua_pushliteral(L, "no writer in this mode: use sync=true");
        return 2;
    }
    ts_dest d;
    memset(&d, 0, sizeof d);
    snprintf(d.db, sizeof d.db, "%s", luaL_checkstring(L, 2));
    snprintf(d.rp, sizeof d.rp, "%s", luaL_optstring(L, 3, ""));
    d.precision = check_prec(L, 4, "ms");
    lua_newtable(L);
    int errt = lua_gettop(L);
    ts_batch *b = ts_batch_new_text(&d);
    size_t n = ts_api_encode_points(L, 1, d.precision, ts_batch_text_buf(b), errt);
    ts_batch_text_commit(b, n);
    if (ctx->on_queue) ctx->on_queue(ctx->on_queue_ud, b);
    if (ctx->submit) ctx->submit(ctx->submit_ud, b);
    else ts_writer_submit(ctx->writer, b);
    lua_pushinteger(L, (lua_Integer)n);
    lua_pushvalue(L, errt);
    return 2;
}

/* tstats._write_durable(path, data) -> true | nil, err
 * data to path.tmp, fsync, rename over path, fsync the directory: after a
 * crash or a power loss the file is the old one or the new one, whole. */
static int l_write_durable(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return luaL_error(L, "path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const char *step = "open";
    if (fd >= 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t n = write(fd, data + off, len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            off += (size_t)n;
        }
        step = off < len ? "write" : fsync(fd) != 0 ? "fsync" : NULL;
        if (close(fd) != 0 && !step) step = "close";
        if (!step && rename(tmp, path) != 0) step = "rename";
    }
    if (step) {
        int err = errno;
        unlink(tmp);
        lua_pushnil(L);
        lua_pushfstring(L, "%s %s: %s", step, tmp, strerror(err));
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0'; else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }   /* the rename itself is durable only after this */
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg api_funcs[] = {
    {"log", l_log}, {"error", l_error}, {"warn", l_warn}, {"info", l_info}, {"debug", l_debug},
    {"now_ms", l_now_ms}, {"now", l_now}, {"sleep", l_sleep},
    {"counters", l_counters}, {"count", l_count}, {"float", l_float}, {"lua_memory", l_mem},
    {"line", l_line}, {"_encode_points", l_encode_points},
    {"_influx_post", l_influx_post}, {"_queue_points", l_queue_points}, {"_write_durable", l_write_durable},
    {NULL, NULL}};

static const luaL_Reg http_funcs[] = {
    {"request", l_http_request}, {"get", l_http_get}, {"post", l_http_post},
    {"urlencode", l_urlencode}, {NULL, NULL}};

void ts_api_open(lua_State *L) {
    luaL_newlib(L, api_funcs);
    lua_pushliteral(L, TS_VERSION);
    lua_setfield(L, -2, "version");
    luaL_newlib(L, http_funcs);
    lua_setfield(L, -2, "http");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);          /* raises inside the set-up pcall if cjson is missing */
    lua_setfield(L, -2, "json");
    ts_pg_open(L);
    lua_setfield(L, -2, "pg");
    lua_pushvalue(L, -1);
    lua_setglobal(L, "tstats");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "tstats");
    lua_pop(L, 3);
    ts_records_open(L);
    ts_json_exact_open(L);
    /* The Lua half of the API (influx.query/write, ...) */
    if (ts_lua_require(L, "tstats.api") == 0) lua_pop(L, 1);
}
