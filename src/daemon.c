/* The daemon (C side of the C/Lua line): owns the loop, the writer and the
 * collector; lua/daemon.lua decides what to poll (Traffic Ops → plan) and runs
 * the daily summaries. Timers and signals only raise flags; the work runs
 * between loop iterations, so blocking Lua calls never re-enter curl. */
#include <errno.h>
#include <math.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include "ts_daemon.h"

#include "ts_api.h"
#include "ts_collect.h"
#include "ts_config.h"
#include "ts_kafka_glue.h"
#include "ts_kafka_reload.h"
#include "ts_derive.h"
#include "ts_httpd.h"
#include "ts_influx_set.h"
#include "ts_log.h"
#include "ts_lua.h"
#include "ts_metrics.h"
#include "ts_daemon_summary.h"
#include "ts_pg_async.h"
#include "ts_sdnotify.h"
#include "ts_target.h"
#include "ts_version.h"
#include "ts_writer.h"

typedef struct tsd {
    const char *config_file;
    ts_mode mode;
    lua_State *L;
    ts_loop *loop;
    ts_spool *spool;         /* NULL: spool.enabled = false, or not the daemon's run mode */
    ts_targets *targets;     /* every output: the InfluxDB ones (ts_influx_set.h), then Kafka */
    ts_influx_set *influx_set;
    ts_writer *writer;       /* the first InfluxDB target's: the Lua API's servers, the main stats line */
    ts_batch_pool *pool;     /* spares of compact batches, shared by the collector and the writers */
    ts_kafka *kafka;          /* the Kafka target's producer, NULL unless kafka.enabled (the list owns it) */
    ts_kafka_feed *kafka_feed;   /* Kafka's position in the spool; NULL: fed from memory */
    int kafka_failed;         /* kafka.* refused: the daemon does not start */
    ts_collector *coll;
    ts_api_ctx api;
    int sigfd;
    volatile int want_stop, want_hup, want_poll, want_publish, want_refresh, want_summary;
    int t_poll, t_publish, t_refresh, t_summary;
    int t_watchdog;              /* systemd watchdog pings, from the loop so a stuck loop stops them */
    int64_t watchdog_iv;         /* ms; 0 = no watchdog */
    ts_metrics *metrics;         /* what the HTTP listener serves (run mode) */
    ts_httpd *httpd;             /* NULL when http.listen is unset */
    char http_key[1600];         /* the listener's settings, to restart it only when they change */
    int64_t metrics_published;   /* ts_mono_ms of the last publish */
    uint64_t lua_calls_at_gc;    /* mapping Lua calls of the plan at the last full GC */
    int64_t poll_iv, publish_iv, refresh_iv, summary_iv;   /* ms */
    int64_t poll_wall, publish_wall;                       /* boundaries the timers are armed for */
    int have_plan;
    int64_t batches_printed;
    lua_State *refresh_co;    /* the Traffic Ops refresh in progress (a coroutine), or NULL */
    int refresh_ref;          /* its registry anchor */
    int refresh_again;        /* asked for while one was in progress (SIGHUP) */
    int async_wake;           /* a request of the refresh or the summary is over: resume them (whoever reads it clears it) */
    int plan_fresh;           /* the last refresh installed a new plan */
    int reload_pending;       /* a SIGHUP's refresh is not over yet: "reloaded" waits for its plan */
    ts_dsummary summary;      /* the daily summary coroutine (src/daemon_summary.c) */
} tsd;

/* ---- timers: aligned to wall-clock multiples of the interval (as ATC) ---- */
/* *last_wall is the boundary the timer last fired for: a timer that wakes a
 * hair before its boundary (monotonic and wall clocks drift apart) must not
 * be armed for that same boundary again. */
static int64_t next_aligned_mono(int64_t iv_ms, int64_t *last_wall) {
    int64_t now = ts_now_ms();
    int64_t next = (now / iv_ms + 1) * iv_ms;
    if (last_wall) {
        if (*last_wall && next <= *last_wall) next = *last_wall + iv_ms;
        *last_wall = next;
    }
    return ts_mono_ms() + (next - now);
}

static void on_poll(void *ud);
static void on_publish(void *ud);
static void on_refresh(void *ud);
static void on_summary(void *ud);

static void on_poll(void *ud) {
    tsd *d = ud;
    d->want_poll = 1;
    d->t_poll = ts_loop_timer(d->loop, next_aligned_mono(d->poll_iv, &d->poll_wall), on_poll, d);
}
static void on_publish(void *ud) {
    tsd *d = ud;
    d->want_publish = 1;
    d->t_publish = ts_loop_timer(d->loop, next_aligned_mono(d->publish_iv, &d->publish_wall), on_publish, d);
}
static void on_refresh(void *ud) {
    tsd *d = ud;
    d->want_refresh = 1;
    d->t_refresh = ts_loop_timer(d->loop, ts_mono_ms() + d->refresh_iv, on_refresh, d);
}
static void on_summary(void *ud) {
    tsd *d = ud;
    d->want_summary = 1;
    d->t_summary = ts_loop_timer(d->loop, ts_mono_ms() + d->summary_iv, on_summary, d);
}

static void on_watchdog(void *ud) {
    tsd *d = ud;
    ts_sd_watchdog_ping();
    d->t_watchdog = ts_loop_timer(d->loop, ts_mono_ms() + d->watchdog_iv, on_watchdog, d);
}

/* Pings at half the interval systemd asked for, as sd_watchdog_enabled(3) advises. */
static void arm_watchdog(tsd *d) {
    int64_t ms = ts_sd_watchdog_ms();
    if (ms <= 0 || d->t_watchdog > 0) return;
    d->watchdog_iv = ms / 2 > 0 ? ms / 2 : 1;
    ts_sd_watchdog_ping();
    d->t_watchdog = ts_loop_timer(d->loop, ts_mono_ms() + d->watchdog_iv, on_watchdog, d);
}

static void cancel_timers(tsd *d) {
    int *ids[] = {&d->t_poll, &d->t_publish, &d->t_refresh, &d->t_summary};
    for (int i = 0; i < 4; i++)
        if (*ids[i] > 0) { ts_loop_timer_cancel(d->loop, *ids[i]); *ids[i] = 0; }
}

static void arm_timers(tsd *d) {
    const ts_settings *s = ts_config_settings(d->L);
    cancel_timers(d);
    d->poll_wall = d->publish_wall = 0;   /* intervals may have changed: realign */
    d->poll_iv = s->polling_interval * 1000;
    d->publish_iv = s->publishing_interval * 1000;
    d->refresh_iv = s->config_interval * 1000;
    d->summary_iv = s->daily_summary_interval * 1000;
    d->t_poll = ts_loop_timer(d->loop, next_aligned_mono(d->poll_iv, &d->poll_wall), on_poll, d);
    d->t_publish = ts_loop_timer(d->loop, next_aligned_mono(d->publish_iv, &d->publish_wall), on_publish, d);
    d->t_refresh = ts_loop_timer(d->loop, ts_mono_ms() + d->refresh_iv, on_refresh, d);
    if (s->summary_enabled)
        d->t_summary = ts_loop_timer(d->loop, ts_mono_ms() + 5000, on_summary, d);
}

static void on_signal(void *ud) {
    tsd *d = ud;
    struct signalfd_siginfo si;
    while (read(d->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) d->want_hup = 1;
        else d->want_stop = 1;
    }
}

/* ---- writer set-up from the configuration -------------------------------- */
/* The writer from influxdb.* (new, or reconfigured on SIGHUP); it copies what it keeps. */
/* The spool opens once per process: its directory and bounds apply at start
 * (a SIGHUP that changes them says so). */
static void spool_setup(tsd *d) {
    const ts_settings *s = ts_config_settings(d->L);
    if (!s->spool.enabled) {
        ts_warn("spool.enabled = false: points not yet written live in memory only (a crash loses them)");
        return;
    }
    char dir[4096];
    if (s->spool.dir && *s->spool.dir) snprintf(dir, sizeof dir, "%s", s->spool.dir);
    else snprintf(dir, sizeof dir, "%s/spool", s->state_dir && *s->state_dir ? s->state_dir : ".");
    ts_spool_opts so;
    memset(&so, 0, sizeof so);
    so.dir = dir;
    so.max_bytes = (uint64_t)s->spool.max_bytes;
    so.segment_bytes = (uint64_t)s->spool.segment_bytes;
    if (ts_spool_fsync_parse(s->spool.fsync, &so.fsync) != 0) so.fsync = TS_SPOOL_FSYNC_INTERVAL;
    so.fsync_interval_ms = (int64_t)(s->spool.fsync_interval * 1000);
    char err[256];
    d->spool = ts_spool_open(&so, err, sizeof err);
    if (!d->spool) ts_error("%s: points live in memory only", err);
    else
        ts_info("spool: %s (max %lld MiB, fsync %s)", dir, (long long)(s->spool.max_bytes >> 20),
                ts_spool_fsync_name(so.fsync));
}

/* The InfluxDB targets from influxdb.* (made, or changed on SIGHUP: see
 * ts_influx_set.h); the first one's servers are the Lua API's. */
static void writer_setup(tsd *d, int reconfigure) {
    const ts_settings *s = ts_config_settings(d->L);
    if (s->influxdb.nurls == 0) ts_warn("no influxdb.urls: nothing can be written");
    if (s->influxdb.insecure) ts_warn("influxdb.insecure = true: TLS certificates of InfluxDB are NOT verified");
    if (!d->targets) {
        d->pool = ts_batch_pool_new();
        d->targets = ts_targets_new(d->loop, d->spool, (size_t)s->influxdb.max_publish_size, d->pool);
        d->influx_set = ts_influx_set_new(d->loop, d->targets, d->spool, d->pool);
    }
    ts_targets_set_record_lines(d->targets, (size_t)s->influxdb.max_publish_size);
    ts_influx_set_apply(d->influx_set, s, reconfigure);
    d->writer = ts_influx_set_first(d->influx_set);
    d->api.writer = d->writer;
    d->api.influx = d->writer ? ts_writer_influx(d->writer) : NULL;
}

/* What every load of the configuration applies to the process: logging, the
 * script directory, the Lua heap cap. */
static void apply_settings(lua_State *L) {
    const ts_settings *s = ts_config_settings(L);
    int level = ts_log_parse_level(s->log_level ? s->log_level : "info");
    if (level >= 0) ts_log_set_level(level);
    int format = ts_log_parse_format(s->log_format ? s->log_format : "text");
    if (format >= 0) ts_log_set_format(format);
    if (ts_log_open(s->log_file) != 0)
        ts_error("cannot open log file %s: %s; logging to stderr", s->log_file, strerror(errno));
    ts_lua_set_script_dir(L, s->script_dir);
    ts_lua_set_memory_limit(L, (size_t)s->lua.memory_limit);
}

/* ---- emit: a finished poll's batch goes to the targets (or stdout) ----- */
/* Polls' batches and those Lua queues with tstats.influx.write alike: once
 * to the spool, from memory to whoever does not read it (ts_target.h). */
static void submit_to_targets(void *ud, ts_batch *b) {
    tsd *d = ud;
    ts_targets_submit(d->targets, b);
}

static void emit_to_stdout(void *ud, ts_batch *b) {
    tsd *d = ud;
    ts_buf out;
    ts_buf_init(&out);
    const ts_dest *dest = ts_batch_dest(b);
    ts_batch_encode(b, &out);
    printf("# POST /write?db=%s%s%s&precision=%s  (%zu points)\n", dest->db, dest->rp[0] ? "&rp=" : "", dest->rp,
           ts_precision_name(dest->precision), ts_batch_points(b));
    fwrite(out.data ? out.data : "", 1, out.len, stdout);
    fflush(stdout);
    ts_buf_free(&out);
    ts_batch_free(b);
    d->batches_printed++;
}

/* ---- Lua calls ----------------------------------------------------------- */
/* Pushes daemon.<fn> (lua/daemon.lua) on L's stack; -1 (nothing pushed) when
 * the module does not load (logged). */
static int push_daemon_fn(lua_State *L, const char *fn) {
    if (ts_lua_require(L, "daemon") != 0) return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    return 0;
}

static int lua_daemon_call(tsd *d, const char *fn, int nargs, int nres) {
    lua_State *L = d->L;
    if (push_daemon_fn(L, fn) != 0) { lua_pop(L, nargs); return -1; }
    lua_insert(L, -1 - nargs);
    char what[64];
    snprintf(what, sizeof what, "daemon.%s", fn);
    return ts_lua_pcall(L, nargs, nres, what, 0);
}

/* Installs the plan, err pair on top of L (and pops it). Returns 0 when a
 * plan is in place. */
static int install_plan(tsd *d) {
    lua_State *L = d->L;
    d->plan_fresh = 0;
    if (d->metrics) ts_metrics_refresh_done(d->metrics, !lua_isnil(L, -2));
    if (lua_isnil(L, -2)) {
        ts_error("Traffic Ops refresh failed: %s%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "unknown error",
                 d->have_plan ? "; keeping the last good configuration" : "");
        lua_pop(L, 2);
        return d->have_plan ? 0 : -1;
    }
    int n = ts_collector_set_plan(d->coll, -2);
    lua_pop(L, 2);
    /* The decoded Traffic Ops answers are garbage now (the plan keeps a small
     * host map): collect them at once rather than carrying them for a cycle. */
    lua_gc(L, LUA_GCCOLLECT);
    if (n < 0) return d->have_plan ? 0 : -1;
    d->plan_fresh = 1;
    if (n == 0) ts_warn("the plan has no endpoints to poll (no Traffic Monitor for the configured CDNs?)");
    d->have_plan = 1;
    return 0;
}

static int refresh_start(tsd *d, int again);
static void publish_metrics(tsd *d);

/* Runs the refresh coroutine until it yields on a request (returns 1) or
 * ends (returns install_plan's answer, or -1 on a Lua error). */
static int refresh_resume(tsd *d) {
    lua_State *L = d->L, *co = d->refresh_co;
    int nres = 0;
    int st = lua_resume(co, L, 0, &nres);
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        return 1;
    }
    int rc;
    if (st == LUA_OK) {
        lua_settop(co, nres >= 2 ? 2 : nres);
        while (lua_gettop(co) < 2) lua_pushnil(co);
        lua_xmove(co, L, 2);
        rc = install_plan(d);
    } else {
        luaL_traceback(L, co, lua_tostring(co, -1), 0);
        ts_lua_log_error("daemon.refresh", lua_tostring(L, -1));
        lua_pop(L, 1);
        rc = d->have_plan ? 0 : -1;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, d->refresh_ref);
    d->refresh_co = NULL;
    if (d->reload_pending && !d->refresh_again) {
        d->reload_pending = 0;
        if (st == LUA_OK && rc == 0 && d->plan_fresh) {
            ts_info("configuration reloaded");
            ts_sd_ready("configuration reloaded");
        } else {
            ts_error("configuration reloaded, but no new polling plan (see above); the running plan is kept");
            ts_sd_ready("configuration reloaded; no new polling plan, the running one is kept");
        }
    }
    if (d->refresh_again) {
        d->refresh_again = 0;
        int again = refresh_start(d, 0);
        if (again != 0 || rc != 0) rc = again;
    }
    return rc;
}

/* Starts asking Lua for a plan (daemon.refresh) in a coroutine whose Traffic
 * Ops requests run on the loop: polls and writes go on meanwhile. Returns 1
 * while it runs (the loop resumes it), else as refresh_resume. With one in
 * progress, `again` (a reload) queues another after it; a timer's tick is
 * dropped, the one in progress being as fresh. */
static int refresh_start(tsd *d, int again) {
    lua_State *L = d->L;
    if (d->refresh_co) {
        if (again) d->refresh_again = 1;
        else ts_info("Traffic Ops refresh still in progress; skipping this one");
        return 1;
    }
    lua_State *co = lua_newthread(L);
    d->refresh_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ts_api_mark_async(L, co);
    if (push_daemon_fn(co, "refresh") != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, d->refresh_ref);
        return d->have_plan ? 0 : -1;
    }
    d->refresh_co = co;
    return refresh_resume(d);
}

/* The first plan (and those of once / poll --dry-run): wait for it. */
static int refresh_plan(tsd *d) {
    int rc = refresh_start(d, 0);
    while (rc == 1 && !d->want_stop) {
        ts_loop_run_once(d->loop, 250);
        publish_metrics(d);
        if (d->async_wake && d->refresh_co) {
            d->async_wake = 0;
            rc = refresh_resume(d);
        }
    }
    return rc == 1 ? -1 : rc;
}

/* Unload our modules so SIGHUP picks up edited scripts; the API and the
 * standard libraries stay. */
static void unload_modules(lua_State *L) {
    static const char *keep[] = {"_G", "package", "coroutine", "table", "io", "os", "string", "math", "utf8",
                                 "debug", "cjson", "tstats", "tstats.api", "options", NULL};
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    int t = lua_gettop(L);
    lua_newtable(L);
    int drop = lua_gettop(L), nd = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        const char *k = lua_tostring(L, -1);
        int kept = 0;
        for (int i = 0; keep[i]; i++) if (k && strcmp(k, keep[i]) == 0) kept = 1;
        if (!kept) { lua_pushvalue(L, -1); lua_rawseti(L, drop, ++nd); }
    }
    for (int i = 1; i <= nd; i++) {
        lua_rawgeti(L, drop, i);
        lua_pushnil(L);
        lua_settable(L, t);
    }
    lua_pop(L, 3);
}

/* ---- HTTP listener: settings, and the numbers it serves ------------------ */
static void http_setup(tsd *d) {
    if (!d->metrics) return;
    const ts_settings *s = ts_config_settings(d->L);
    const char *l = s->http.listen ? s->http.listen : "", *u = s->http.user ? s->http.user : "";
    const char *p = s->http.password ? s->http.password : "", *t = s->http.token ? s->http.token : "";
    char key[sizeof d->http_key];
    snprintf(key, sizeof key, "%s\n%s\n%s\n%s", l, u, p, t);
    if (strcmp(key, d->http_key) == 0 && (d->httpd || !l[0])) return;
    if ((u[0] != 0) != (p[0] != 0)) ts_warn("http.user and http.password go together: basic auth is off");
    ts_httpd_stop(d->httpd);
    d->httpd = NULL;
    snprintf(d->http_key, sizeof d->http_key, "%s", key);
    if (!l[0]) return;
    ts_httpd_opts o = {.listen = l, .user = u[0] && p[0] ? u : NULL, .password = u[0] && p[0] ? p : NULL, .token = t};
    d->httpd = ts_httpd_start(&o, d->metrics, NULL);
    d->metrics_published = 0;
}

/* About once a second while the listener is on: the numbers only the loop may read. */
static void publish_metrics(tsd *d) {
    if (!d->httpd) return;
    int64_t now = ts_mono_ms();
    if (d->metrics_published && now - d->metrics_published < 1000) return;
    d->metrics_published = now;
    const ts_settings *s = ts_config_settings(d->L);
    ts_writer_stats ws;
    ts_writer_get_stats(d->writer, &ws);
    ts_metrics_inputs in;
    memset(&in, 0, sizeof in);
    in.poll_interval_ms = s->polling_interval * 1000;
    in.publish_interval_ms = s->publishing_interval * 1000;
    in.health_intervals = (int)s->http.health_intervals;
    in.points_written = ws.points_written;
    in.points_rejected = ws.points_rejected;
    in.points_dropped = ws.points_dropped;
    in.points_pending = ws.points_pending;
    in.bytes_pending = ws.bytes_pending;
    in.requests_ok = ws.requests_ok;
    in.requests_failed = ws.requests_failed;
    in.bytes_sent = ws.bytes_sent;
    in.retries = ws.retries;
    ts_writer_get_retry_state(d->writer, &in.retry_chunks, &in.backoff_ms);
    ts_writer_current_url_text(d->writer, in.writer_url, sizeof in.writer_url);
    ts_writer_dest_stats ds[32];
    ts_metrics_dest md[32];
    int nd = ts_writer_get_dest_stats(d->writer, ds, 32);
    for (int i = 0; i < nd; i++) {
        snprintf(md[i].db, sizeof md[i].db, "%s", ds[i].dest.db);
        snprintf(md[i].rp, sizeof md[i].rp, "%s", ds[i].dest.rp);
        md[i].written = ds[i].written;
        md[i].rejected = ds[i].rejected;
        md[i].dropped = ds[i].dropped;
        md[i].pending = ds[i].pending;
    }
    in.dests = md;
    in.ndests = nd;
    for (int i = 0; i < ts_targets_count(d->targets) && in.noutputs < TS_METRICS_MAX_OUTPUTS; i++) {
        const ts_target *t = ts_targets_at(d->targets, i);
        ts_target_stats ts;
        ts_target_stats_get(t, &ts);
        ts_metrics_output *mt = &in.outputs[in.noutputs++];
        *mt = (ts_metrics_output){.written = ts.written, .rejected = ts.rejected, .dropped = ts.dropped,
                                 .pending = ts.pending, .spool_backlog_bytes = ts.spool_backlog_bytes,
                                 .healthy = ts_target_healthy(t)};
        snprintf(mt->name, sizeof mt->name, "%s", ts_target_name(t));
        snprintf(mt->kind, sizeof mt->kind, "%s", ts_target_kind(t));
    }
    in.lua_heap_bytes = ts_lua_mem_used(d->L);
    if (d->spool) {
        ts_spool_stats ss;
        ts_spool_get_stats(d->spool, &ss);
        in.spool_enabled = 1;
        in.spool_bytes = ss.bytes;
        in.spool_backlog_bytes = ws.spool_backlog_bytes;
        in.spool_replay_bytes = ws.spool_replay_bytes;
        in.spool_append_failures = ss.append_failures;
        in.spool_lines_dropped = ss.lines_dropped;
    }
    ts_metrics_target tg[TS_METRICS_MAX_OUTPUTS];
    int nt = 0;
    for (int i = 0; d->spool && i < ts_targets_count(d->targets) && nt < TS_METRICS_MAX_OUTPUTS; i++) {
        /* each reader of the spool, labelled by its kind and what follows the ':' of its name
         * ("influxdb", "influxdb:<server>" in mirror mode, "kafka") */
        const ts_target *t = ts_targets_at(d->targets, i);
        if (!ts_target_reads_spool(t)) continue;
        ts_target_stats st;
        ts_target_stats_get(t, &st);
        const char *colon = strchr(ts_target_name(t), ':');
        snprintf(tg[nt].name, sizeof tg[nt].name, "%s%s", ts_target_kind(t), colon ? colon : "");
        tg[nt].backlog_bytes = st.spool_backlog_bytes;
        tg[nt].replay_bytes = st.spool_replay_bytes;
        tg[nt].oldest_age_ms = st.spool_oldest_age_ms;
        nt++;
    }
    in.targets = tg;
    in.ntargets = nt;
    ts_metrics_publish(d->metrics, &in);
}

static void reload(tsd *d) {
    ts_info("HUP Received - reloading config");
    ts_sd_reloading();
    lua_State *L = d->L;
    if (ts_config_load(L, d->config_file) != 0) {
        ts_error("new configuration rejected; keeping the running one");
        ts_sd_ready("new configuration rejected; running the previous one");
        return;
    }
    apply_settings(L);
    unload_modules(L);
    ts_derive *dv;
    if (ts_derive_load(L, d->config_file, &dv) == 0) { ts_collector_set_derive(d->coll, dv); ts_derive_release(dv); }
    else ts_error("derived metrics: keeping the running definitions");
    writer_setup(d, 1);
    ts_kafka *k = ts_kafka_reload(L, d->loop, d->kafka, d->kafka_feed);
    if (k != d->kafka) {
        /* the Kafka target sends through the new producer; the old one retires (kafka_reload.c) */
        for (int i = 0; i < ts_targets_count(d->targets); i++)
            if (strcmp(ts_target_kind(ts_targets_at(d->targets, i)), "kafka") == 0)
                ts_kafka_feed_target_set(ts_targets_at(d->targets, i), k);
        d->kafka = k;
    }
    http_setup(d);
    if (lua_daemon_call(d, "start", 0, 0) != 0) ts_error("daemon.start failed after reload");
    d->reload_pending = 1;   /* said once the new plan is installed (refresh_resume) */
    refresh_start(d, 1);     /* after the one in progress, if any */
    arm_timers(d);
}

static int setup_signals(tsd *d) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->sigfd < 0) return -1;
    ts_loop_watch_fd(d->loop, d->sigfd, on_signal, d);
    return 0;
}

/* Run the loop until no fetch is in flight or the deadline passes. */
static void wait_collector(tsd *d, int64_t deadline) {
    while (ts_collector_busy(d->coll) && ts_mono_ms() < deadline) ts_loop_run_once(d->loop, 200);
}

/* A plan's first poll asks Lua about every stat name, cache and delivery
 * service once; C keeps the answers and Lua's tables are garbage. Collect
 * them when that poll is over (once per plan, not per poll) rather than let
 * the heap float to twice its live size (~5 MB at 32,000 caches). */
static void collect_mapping_garbage(tsd *d) {
    if (ts_collector_busy(d->coll)) return;
    ts_collect_stats cs;
    ts_collector_get_stats(d->coll, &cs);
    if (cs.lua_calls == d->lua_calls_at_gc) return;
    d->lua_calls_at_gc = cs.lua_calls;
    lua_gc(d->L, LUA_GCCOLLECT);
}

static void report(tsd *d) {
    ts_writer_stats ws;
    ts_writer_get_stats(d->writer, &ws);
    ts_collect_stats cs;
    ts_collector_get_stats(d->coll, &cs);
    ts_info("stats: polls=%llu points=%llu written=%llu rejected=%llu dropped=%llu pending=%llu "
            "endpoints_failed=%llu writer_requests_failed=%llu writer_retries=%llu "
            "non_numeric_skipped=%llu old_skipped=%llu lua_calls=%llu lua_mem=%zu spooled=%llu spool_backlog_bytes=%llu "
            "split_413=%llu",
            (unsigned long long)cs.polls, (unsigned long long)cs.points, (unsigned long long)ws.points_written,
            (unsigned long long)ws.points_rejected, (unsigned long long)ws.points_dropped,
            (unsigned long long)ws.points_pending, (unsigned long long)cs.endpoints_failed,
            (unsigned long long)ws.requests_failed, (unsigned long long)ws.retries,
            (unsigned long long)cs.skipped_non_numeric, (unsigned long long)cs.skipped_old,
            (unsigned long long)cs.lua_calls, ts_lua_mem_used(d->L),
            (unsigned long long)(ws.points_spooled + ts_targets_spooled(d->targets)),
            (unsigned long long)ws.spool_backlog_bytes,
            (unsigned long long)ws.split_413);
    /* after the line above: readers take the first "stats:" line for the totals */
    for (int i = 0; i < ts_targets_count(d->targets); i++) {
        const ts_target *t = ts_targets_at(d->targets, i);
        ts_target_stats m;
        ts_target_stats_get(t, &m);
        /* keys of their own: a reader taking the last "written=" of a log gets the totals' */
        ts_info("stats: target %s (%s): acked=%llu refused=%llu lost=%llu held=%llu unacked_spool_bytes=%llu up=%d",
                ts_target_name(t), ts_target_kind(t), (unsigned long long)m.written, (unsigned long long)m.rejected,
                (unsigned long long)m.dropped, (unsigned long long)m.pending,
                (unsigned long long)m.spool_backlog_bytes, ts_target_healthy(t));
    }
    ts_kafka_report(d->kafka, d->kafka_feed);
}

/* `once`'s exit status from the poll's outcome (documented in its help): 1 when
 * an endpoint failed, 3 when the plan came from the cached Traffic Ops data
 * (daemon.stale), else rc. */
static int once_status(lua_State *L, ts_collector *coll, int rc) {
    ts_collect_stats cs;
    ts_collector_get_stats(coll, &cs);
    if (cs.endpoints_failed > 0) {
        ts_error("once: %llu of %llu endpoint polls failed", (unsigned long long)cs.endpoints_failed,
                 (unsigned long long)(cs.endpoints_failed + cs.endpoints_ok));
        return 1;
    }
    if (rc != 0) return rc;
    int stale = 0;
    if (ts_lua_require(L, "daemon") == 0) {
        lua_getfield(L, -1, "stale");
        stale = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    if (stale) {
        ts_warn("once: Traffic Ops answered an error; the poll used the last good (cached) data: exit 3");
        return 3;
    }
    return 0;
}

int ts_daemon_main(const char *config_file, ts_mode mode) {
    tsd dd, *d = &dd;
    memset(d, 0, sizeof *d);
    d->config_file = config_file;
    d->mode = mode;
    d->sigfd = -1;
    int rc = 1;
    d->L = ts_lua_new(0, ts_api_open);   /* capped by lua.memory_limit once it is read */
    if (!d->L) return 1;
    if (ts_config_load(d->L, config_file) != 0) { ts_lua_close(d->L); return 2; }
    apply_settings(d->L);
    d->loop = ts_loop_new();
    if (mode == TS_MODE_RUN) spool_setup(d);
    writer_setup(d, 0);
    if (mode != TS_MODE_DRYRUN) {
        d->kafka = ts_kafka_from_config(d->L, d->loop, &d->kafka_failed);
        if (d->kafka && d->spool) d->kafka_feed = ts_kafka_feed_from_config(d->L, d->kafka, d->spool, d->loop);
        if (d->kafka) ts_targets_add(d->targets, ts_kafka_feed_target(d->kafka, d->kafka_feed));
    }
    /* every target of the run has its spool consumer now */
    if (d->spool) ts_spool_consumers_done(d->spool);
    d->api.loop = d->loop;
    d->api.submit = submit_to_targets;
    d->api.submit_ud = d;
    d->api.async_wake = &d->async_wake;
    ts_api_set_ctx(d->L, &d->api);
    d->coll = ts_collector_new(d->L, d->loop, mode == TS_MODE_DRYRUN ? emit_to_stdout : submit_to_targets, d);
    if (mode != TS_MODE_DRYRUN) ts_collector_set_batch_pool(d->coll, d->pool);
    if (d->kafka_failed) { rc = 2; goto out; }
    if (mode != TS_MODE_DRYRUN) ts_kafka_lua_open(d->L, d->kafka);
    ts_derive *dv;
    if (ts_derive_load(d->L, config_file, &dv) != 0) { rc = 2; goto out; }
    ts_collector_set_derive(d->coll, dv);
    ts_derive_release(dv);
    if (setup_signals(d) != 0) ts_warn("signal handling unavailable: %s", strerror(errno));
    if (mode == TS_MODE_RUN) {
        d->metrics = ts_metrics_new(TS_VERSION);
        ts_collector_set_metrics(d->coll, d->metrics);
        /* After the signal mask (its thread inherits it: signals stay the loop's), before
         * Traffic Ops answers (/ready and /health say why not yet). */
        http_setup(d);
    }
    if (lua_daemon_call(d, "start", 0, 0) != 0) goto out;
    d->summary.L = d->L;
    d->summary.metrics = d->metrics;
    ts_dsummary_successes(&d->summary);

    /* Ready for systemd once the configuration is in and the loop runs; waiting for
     * Traffic Ops is part of running (it may take long), and /ready tells the rest. */
    if (mode == TS_MODE_RUN) {
        arm_watchdog(d);
        ts_sd_ready("waiting for Traffic Ops");
    }

    /* Traffic Ops may be down at start: retry (ATC panics). Nothing is polled
     * until it answers, so the retries stay short (polling starts within 4 s of
     * its recovery); the warning is said once every 30 s, not per try. */
    int64_t backoff = 1000, warned = 0;
    while (!d->want_stop && refresh_plan(d) != 0) {
        if (mode != TS_MODE_RUN) { ts_error("no polling plan: giving up"); goto out; }
        if (!warned || ts_mono_ms() - warned >= 30000) {
            warned = ts_mono_ms();
            ts_warn("no Traffic Ops data yet; retrying at most 4 s apart (said again in 30 s if it stays down)");
        }
        int64_t until = ts_mono_ms() + backoff;
        while (!d->want_stop && ts_mono_ms() < until) {
            ts_loop_run_once(d->loop, 250);
            publish_metrics(d);
        }
        backoff = backoff * 2 > 4000 ? 4000 : backoff * 2;
    }
    if (d->want_stop) { if (mode == TS_MODE_RUN) ts_sd_stopping(); rc = 0; goto out; }

    if (mode != TS_MODE_RUN) {
        ts_collector_poll(d->coll);
        wait_collector(d, ts_mono_ms() + (int64_t)(ts_config_settings(d->L)->collect.timeout * 1000) * 4 + 5000);
        if (mode == TS_MODE_DRYRUN) { rc = d->batches_printed > 0 ? 0 : 1; goto out; }
        ts_targets_tick(d->targets);
        int64_t until = ts_mono_ms() + (int64_t)(ts_config_settings(d->L)->shutdown_timeout * 1000);
        size_t lost = ts_targets_drain(d->targets, until);
        ts_writer_stats ws;
        ts_writer_get_stats(d->writer, &ws);
        report(d);
        rc = (ws.points_written > 0 && lost == 0) ? 0 : 1;
        if (ws.points_written == 0) ts_error("nothing could be written");
        rc = once_status(d->L, d->coll, rc);
        goto out;
    }

    arm_timers(d);
    ts_sd_status("polling");
    ts_info("tstats %s running: polling every %lld s, publishing every %lld s", TS_VERSION,
            (long long)(d->poll_iv / 1000), (long long)(d->publish_iv / 1000));
    int64_t last_report = ts_mono_ms();
    while (!d->want_stop) {
        ts_loop_run_once(d->loop, 1000);
        if (d->want_hup) { d->want_hup = 0; reload(d); }
        if (d->want_poll) { d->want_poll = 0; ts_collector_poll(d->coll); }
        if (d->want_publish) {
            d->want_publish = 0;
            ts_targets_tick(d->targets);
        }
        if (d->want_refresh) { d->want_refresh = 0; refresh_start(d, 0); }
        if (d->async_wake) {
            /* one flag for both coroutines: each re-yields when its own request is not over */
            d->async_wake = 0;
            if (d->refresh_co) refresh_resume(d);
            ts_dsummary_resume(&d->summary);
        }
        if (d->want_summary) { d->want_summary = 0; ts_dsummary_tick(&d->summary); }
        ts_influx_set_step(d->influx_set);
        collect_mapping_garbage(d);
        publish_metrics(d);
        if (ts_mono_ms() - last_report > 60000) { report(d); last_report = ts_mono_ms(); }
    }
    ts_info("Shutdown Request Received - Sending stored metrics then quitting");
    ts_dsummary_abandon(&d->summary);
    ts_sd_stopping();
    cancel_timers(d);
    int64_t deadline = ts_mono_ms() + (int64_t)(ts_config_settings(d->L)->shutdown_timeout * 1000);
    wait_collector(d, deadline);
    ts_targets_tick(d->targets);
    /* InfluxDB's first, then Kafka's in flight gets the rest of the timeout (the spool keeps what it
     * did not read, so Kafka's are not counted here) */
    size_t lost = ts_influx_set_free(d->influx_set, deadline);
    d->influx_set = NULL;
    for (int i = 0; i < ts_targets_count(d->targets); i++) {
        ts_target *t = ts_targets_at(d->targets, i);
        int kafka = strcmp(ts_target_kind(t), "kafka") == 0;
        if (kafka) {
            /* producers a kafka.* SIGHUP replaced: what they hold first */
            ts_kafka_feed_stop(d->kafka_feed);
            ts_kafka_reload_drain(deadline);
        }
        size_t n = ts_target_drain(t, deadline);
        if (!kafka) lost += n;
    }
    if (lost) ts_error("shutdown: %zu points could not be written before the shutdown timeout", lost);
    if (ts_pg_cancel_finish(deadline) > 0) ts_warn("shutdown: a PostgreSQL cancel request was not sent in time");
    report(d);
    rc = 0;
out:
    ts_httpd_stop(d->httpd);   /* its thread reads the metrics: stop it first */
    ts_collector_close(d->coll);
    ts_influx_set_free(d->influx_set, ts_mono_ms());
    ts_kafka_reload_drain(0);      /* producers a SIGHUP replaced, before the feed goes */
    ts_targets_free(d->targets);   /* every target (Kafka: the producer, then its spool position), then the spool */
    ts_spool_close(d->spool);
    ts_pg_cancel_finish(0);    /* the loop stops watching for their outcomes */
    ts_pg_wait_detach_all();   /* an abandoned summary's wait is collected after the loop */
    ts_loop_free(d->loop);
    ts_collector_free(d->coll);
    ts_batch_pool_free(d->pool);
    if (d->sigfd >= 0) close(d->sigfd);
    ts_lua_close(d->L);
    ts_metrics_free(d->metrics);
    return rc;
}
