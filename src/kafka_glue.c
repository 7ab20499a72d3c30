/* Daemon-side glue of the Kafka target (C core, Lua API): configuration
 * (kafka.* of lua/options.lua) to ts_kafka_opts, poll batches to line
 * protocol for the target, and the Lua primitives. The producer itself is
 * src/kafka.c. */
#include "ts_kafka_glue.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_clock.h"
#include "ts_counter.h"
#include "ts_log.h"
#include "ts_lua.h"

static const char *keep(ts_kafka_cfg *c, const char *s) {
    if (c->nstrs == (int)(sizeof c->strs / sizeof c->strs[0])) return NULL;
    char *p = strdup(s);
    if (!p) abort();
    return c->strs[c->nstrs++] = p;
}

/* Pushes the resolved configuration's value at a dotted path (nil when
 * absent): the table lua/options.lua validated, as tstats.config. */
static void cfg_push(lua_State *L, const char *path) {
    lua_getglobal(L, "tstats");
    if (lua_istable(L, -1)) lua_getfield(L, -1, "config");
    else lua_pushnil(L);
    lua_remove(L, -2);
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

static const char *cfg_string(lua_State *L, ts_kafka_cfg *c, const char *path) {
    cfg_push(L, path);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? keep(c, lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return v;
}

static int cfg_bool(lua_State *L, const char *path) {
    cfg_push(L, path);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static double cfg_num(lua_State *L, const char *path) {
    cfg_push(L, path);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Every key read here must be one lua/options.lua defines (it holds the
 * defaults): a key it lacks is an internal error, never a silent default. */
static const char *const KEYS[] = {
    "kafka.enabled", "kafka.brokers", "kafka.topic", "kafka.topics", "kafka.format", "kafka.acks",
    "kafka.idempotence", "kafka.compression", "kafka.properties", "kafka.points_per_message",
    "kafka.max_buffer_bytes", "kafka.retry_backoff",
};

static int keys_defined(lua_State *L, char *err, size_t errlen) {
    if (ts_lua_require(L, "options") != 0) {
        snprintf(err, errlen, "internal: lua/options.lua cannot be loaded");
        return -1;
    }
    lua_getfield(L, -1, "by_key");
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
        lua_getfield(L, -1, KEYS[i]);
        int ok = lua_istable(L, -1);
        lua_pop(L, 1);
        if (!ok) {
            snprintf(err, errlen, "internal: C reads setting '%s', which lua/options.lua does not define", KEYS[i]);
            lua_pop(L, 2);
            return -1;
        }
    }
    lua_pop(L, 2);
    return 0;
}

/* A table of string keys (kafka.topics, kafka.properties) into NULL-terminated
 * pairs, sorted by key so that the order is the same on every start. */
static int cfg_pairs(lua_State *L, ts_kafka_cfg *c, const char *path, const char **out, size_t max_pairs, char *err,
                     size_t errlen) {
    cfg_push(L, path);
    size_t n = 0;
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                snprintf(err, errlen, "%s: keys must be strings", path);
                lua_pop(L, 3);
                return -1;
            }
            char num[64];
            const char *v = NULL;
            if (lua_type(L, -1) == LUA_TBOOLEAN) v = lua_toboolean(L, -1) ? "true" : "false";
            else if (lua_isinteger(L, -1)) snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, -1)), v = num;
            else if (lua_type(L, -1) == LUA_TNUMBER) snprintf(num, sizeof num, "%.17g", lua_tonumber(L, -1)), v = num;
            else if (lua_type(L, -1) == LUA_TSTRING) v = lua_tostring(L, -1);
            if (!v) {
                snprintf(err, errlen, "%s[\"%s\"]: must be a string, a number or a boolean", path, lua_tostring(L, -2));
                lua_pop(L, 3);
                return -1;
            }
            if (n == max_pairs) {
                snprintf(err, errlen, "%s: more than %zu entries", path, max_pairs);
                lua_pop(L, 3);
                return -1;
            }
            const char *ks = keep(c, lua_tostring(L, -2)), *vs = keep(c, v);
            if (!ks || !vs) {
                snprintf(err, errlen, "%s: too many entries", path);
                lua_pop(L, 3);
                return -1;
            }
            size_t i = n++;
            while (i > 0 && strcmp(out[(i - 1) * 2], ks) > 0) {
                out[i * 2] = out[(i - 1) * 2];
                out[i * 2 + 1] = out[(i - 1) * 2 + 1];
                i--;
            }
            out[i * 2] = ks;
            out[i * 2 + 1] = vs;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    out[n * 2] = NULL;
    return 0;
}

int ts_kafka_cfg_read(lua_State *L, ts_kafka_cfg *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (keys_defined(L, err, errlen) != 0) return -1;
    c->enabled = cfg_bool(L, "kafka.enabled");
    ts_kafka_opts *o = &c->o;
    o->brokers = cfg_string(L, c, "kafka.brokers");
    o->topic = cfg_string(L, c, "kafka.topic");
    const char *fmt = cfg_string(L, c, "kafka.format");
    o->format = fmt && strcmp(fmt, "lp") == 0 ? TS_KAFKA_LP : TS_KAFKA_JSON;
    o->acks = cfg_string(L, c, "kafka.acks");
    o->idempotence = cfg_bool(L, "kafka.idempotence");
    o->compression = cfg_string(L, c, "kafka.compression");
    o->max_buffer_bytes = (size_t)cfg_num(L, "kafka.max_buffer_bytes");
    o->points_per_message = (size_t)cfg_num(L, "kafka.points_per_message");
    o->retry_backoff_ms = (long)(cfg_num(L, "kafka.retry_backoff") * 1000);
    if (cfg_pairs(L, c, "kafka.topics", c->db_topics, (sizeof c->db_topics / sizeof *c->db_topics - 1) / 2, err,
                  errlen) ||
        cfg_pairs(L, c, "kafka.properties", c->props, (sizeof c->props / sizeof *c->props - 1) / 2, err, errlen))
        return -1;
    o->db_topics = c->db_topics;
    o->properties = c->props;
    if (c->enabled && (!o->brokers || !*o->brokers)) {
        snprintf(err, errlen, "kafka.enabled = true needs kafka.brokers");
        return -1;
    }
    if (c->enabled && (!o->topic || !*o->topic) && !c->db_topics[0]) {
        snprintf(err, errlen, "kafka.enabled = true needs kafka.topic (or kafka.topics)");
        return -1;
    }
    return 0;
}

void ts_kafka_cfg_free(ts_kafka_cfg *c) {
    for (int i = 0; i < c->nstrs; i++) free(c->strs[i]);
    c->nstrs = 0;
}

/* kafka.* as the running producer was made from it (SIGHUP compares with it) */
static ts_kafka_cfg *g_running;

const ts_kafka_cfg *ts_kafka_cfg_running(void) { return g_running; }

void ts_kafka_cfg_set_running(ts_kafka_cfg *c) {
    if (g_running) {
        ts_kafka_cfg_free(g_running);
        free(g_running);
    }
    g_running = c;
}

void ts_kafka_describe(const ts_kafka_cfg *c, const char *what) {
    ts_info("kafka: %s %s (topic %s%s, format %s, %zu point(s) per message, acks %s%s)", what, c->o.brokers,
            c->o.topic ? c->o.topic : "-", c->db_topics[0] ? " and kafka.topics" : "",
            c->o.format == TS_KAFKA_LP ? "lp" : "json", c->o.points_per_message ? c->o.points_per_message : 1,
            c->o.acks ? c->o.acks : "all", c->o.idempotence ? ", idempotent" : "");
}

ts_kafka *ts_kafka_from_config(lua_State *L, ts_loop *loop, int *failed) {
    ts_kafka_cfg *c = malloc(sizeof *c);   /* o points into it: it never moves */
    if (!c) abort();
    char err[512] = "";
    *failed = 0;
    if (ts_kafka_cfg_read(L, c, err, sizeof err) != 0) {
        ts_error("configuration error: %s", err);
        *failed = 1;
    }
    ts_kafka *k = NULL;
    if (!*failed && c->enabled) {
        k = ts_kafka_new(loop, &c->o, err, sizeof err);
        if (!k) {
            ts_error("configuration error: %s", err);
            *failed = 1;
        } else {
            ts_kafka_describe(c, "exporting to");
        }
    }
    ts_kafka_cfg_set_running(c);
    return k;
}

void ts_kafka_submit_batch(ts_kafka *k, const ts_batch *b) {
    static size_t last_len;   /* a poll like the last one: one allocation, no regrowing */
    if (!k || ts_batch_points(b) == 0) return;
    const ts_dest *d = ts_batch_dest(b);
    ts_buf body;
    ts_buf_init(&body);
    ts_buf_reserve(&body, last_len + last_len / 16 + 4096);
    ts_batch_encode(b, &body);
    last_len = body.len;
    ts_kafka_dest kd = {d->db, d->rp, d->precision};
    ts_kafka_submit_buf(k, &kd, &body, 0, NULL, NULL);
}

size_t ts_kafka_feed_high(const ts_kafka_cfg *c) {
    size_t high = c->o.max_buffer_bytes / 2;
    return high > (size_t)64 << 20 ? (size_t)64 << 20 : high;
}

ts_kafka_feed *ts_kafka_feed_from_config(lua_State *L, ts_kafka *k, ts_spool *s, ts_loop *loop) {
    (void)L;
    return ts_kafka_feed_new(k, s, loop, g_running ? ts_kafka_feed_high(g_running) : 0);
}

void ts_kafka_submit_through(ts_kafka *k, ts_kafka_feed *feed, ts_spool *spool, ts_batch *b,
                             void (*submit)(void *ud, ts_batch *b), void *ud) {
    static ts_counter *c_missed;
    static int64_t logged_at;
    if (!k) { submit(ud, b); return; }
    if (!feed || !spool) {
        ts_kafka_submit_batch(k, b);
        submit(ud, b);
        return;
    }
    size_t pts = ts_batch_points(b);
    const ts_dest *d = ts_batch_dest(b);
    ts_dest dest = *d;   /* b is the writer's after submit */
    ts_buf copy;
    ts_buf_init(&copy);
    int have = 0;
    if (!ts_spool_writable(spool) && pts > 0) {
        /* the last append failed: this one may too, keep the line protocol */
        ts_batch_encode(b, &copy);
        have = 1;
    }
    ts_spool_stats s0, s1;
    ts_spool_get_stats(spool, &s0);
    submit(ud, b);
    ts_spool_get_stats(spool, &s1);
    uint64_t appended = s1.lines_appended - s0.lines_appended;
    if (pts > 0 && appended == 0) {
        if (have) {
            ts_kafka_dest kd = {dest.db, dest.rp, dest.precision};
            ts_kafka_submit_buf(k, &kd, &copy, 0, NULL, NULL);   /* from memory, as InfluxDB */
        } else {
            /* the spool refused the first append after working: these points stay in the
             * writer's memory for InfluxDB, but Kafka, which reads the spool, never sees them */
            if (!c_missed) c_missed = ts_counter_get("kafka_points_missed");
            ts_counter_add(c_missed, (int64_t)pts);
            if (ts_mono_ms() - logged_at > 10000) {
                logged_at = ts_mono_ms();
                ts_error("kafka: the spool refused %zu points for %s (see its error): not exported to Kafka "
                         "(counted in kafka_points_missed); later ones go to Kafka from memory until it takes them",
                         pts, dest.db);
            }
        }
    }
    ts_buf_free(&copy);
    ts_kafka_feed_pump(feed);
}

static int l_kafka_lines(lua_State *L) {
    ts_kafka *k = lua_touserdata(L, lua_upvalueindex(1));
    const char *db = luaL_checkstring(L, 1);
    const char *rp = luaL_optstring(L, 2, "");
    ts_precision p;
    if (ts_precision_parse(luaL_optstring(L, 3, "ms"), &p) != 0) return luaL_argerror(L, 3, "unknown precision");
    size_t len;
    const char *body = luaL_checklstring(L, 4, &len);
    ts_kafka_dest kd = {db, rp, p};
    ts_kafka_submit(k, &kd, body, len, 0, NULL, NULL);
    return 0;
}

static int l_kafka_stats(lua_State *L) {
    ts_kafka *k = lua_touserdata(L, lua_upvalueindex(1));
    ts_kafka_stats s;
    ts_kafka_get_stats(k, &s);
    lua_createtable(L, 0, 16);
#define F(name)                                   \
    lua_pushinteger(L, (lua_Integer)s.name);      \
    lua_setfield(L, -2, #name)
    F(messages_produced);
    F(points_delivered);
    F(points_failed);
    F(points_retried);
    F(points_maybe_dup);
    F(points_dropped);
    F(lines_invalid);
    F(points_pending);
    F(bytes_pending);
    F(delivery_errors);
    F(client_errors);
    F(queue_full);
    F(last_error_code);
#undef F
    lua_pushstring(L, s.last_error);
    lua_setfield(L, -2, "last_error");
    return 1;
}

void ts_kafka_lua_open(lua_State *L, ts_kafka *k) {
    lua_getglobal(L, "tstats");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (k) {
        lua_pushlightuserdata(L, k);
        lua_pushcclosure(L, l_kafka_lines, 1);
        lua_setfield(L, -2, "_kafka_lines");
        lua_pushlightuserdata(L, k);
        lua_pushcclosure(L, l_kafka_stats, 1);
        lua_setfield(L, -2, "kafka_stats");
    } else {
        lua_pushnil(L);
        lua_setfield(L, -2, "_kafka_lines");
        lua_pushnil(L);
        lua_setfield(L, -2, "kafka_stats");
    }
    lua_pop(L, 1);
}

void ts_kafka_report(const ts_kafka *k, const ts_kafka_feed *feed) {
    if (!k) return;
    ts_kafka_stats s;
    ts_kafka_get_stats(k, &s);
    char sp[260] = "";
    if (feed) {
        ts_kafka_feed_stats fs;
        ts_kafka_feed_get_stats(feed, &fs);
        snprintf(sp, sizeof sp,
                 " spool_records_read=%llu spool_records_claimed=%llu spool_backlog_bytes=%llu spool_lines_lost=%llu missed=%lld",
                 (unsigned long long)fs.records_read, (unsigned long long)fs.records_claimed,
                 (unsigned long long)fs.backlog_bytes,
                 (unsigned long long)fs.lines_lost, (long long)ts_counter_get("kafka_points_missed")->value);
    }
    ts_info("kafka: messages=%llu delivered=%llu failed=%llu retried=%llu maybe_dup=%llu dropped=%llu invalid=%llu "
            "pending=%llu pending_bytes=%llu errors=%llu%s",
            (unsigned long long)s.messages_produced, (unsigned long long)s.points_delivered,
            (unsigned long long)s.points_failed, (unsigned long long)s.points_retried,
            (unsigned long long)s.points_maybe_dup, (unsigned long long)s.points_dropped,
            (unsigned long long)s.lines_invalid, (unsigned long long)s.points_pending,
            (unsigned long long)s.bytes_pending, (unsigned long long)(s.delivery_errors + s.client_errors), sp);
}
