/* The daemon's InfluxDB targets from influxdb.urls and influxdb.mode (C core,
 * no Lua): made at start, and on SIGHUP kept (reconfigured), added or retired
 * as one transaction; see ts_influx_set.h. */
#include "ts_influx_set.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_clock.h"
#include "ts_log.h"

#define MAX_INFLUX 17

typedef struct retiring {
    ts_target *t;
    int64_t deadline;
} retiring;

struct ts_influx_set {
    ts_loop *loop;
    ts_targets *targets;
    ts_spool *spool;
    ts_batch_pool *pool;
    retiring *ret;
    int nret;
};

/* One InfluxDB target the configuration asks for. */
typedef struct want {
    char name[300];
    const char *url;          /* mirror: its one server; failover: NULL (every URL) */
} want;

ts_influx_set *ts_influx_set_new(ts_loop *loop, ts_targets *targets, ts_spool *spool, ts_batch_pool *pool) {
    ts_influx_set *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->loop = loop;
    x->targets = targets;
    x->spool = spool;
    x->pool = pool;
    return x;
}

static int is_influx(const ts_target *t) { return strcmp(ts_target_kind(t), "influxdb") == 0; }

static int wanted(const ts_settings *s, want *w) {
    int mirror = s->influxdb.mode && strcmp(s->influxdb.mode, "mirror") == 0;
    if (!mirror || s->influxdb.nurls == 0) {
        snprintf(w[0].name, sizeof w[0].name, "influx");
        w[0].url = NULL;
        return 1;
    }
    int n = 0;
    for (int i = 0; i < s->influxdb.nurls; i++) {
        if (n == MAX_INFLUX) {
            ts_warn("influxdb.mode = \"mirror\": at most %d servers; the URLs after the %dth are not written to",
                    MAX_INFLUX, MAX_INFLUX);
            break;
        }
        char safe[256];
        ts_influx_safe_url(safe, sizeof safe, s->influxdb.urls[i]);
        snprintf(w[n].name, sizeof w[n].name, "influx:%s", safe);
        w[n].url = s->influxdb.urls[i];
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= strcmp(w[k].name, w[n].name) == 0;
        if (dup) {
            ts_warn("influxdb.urls names %s twice: it is written to once", safe);
            continue;
        }
        n++;
    }
    return n;
}

static void opts_for(const ts_influx_set *x, const ts_settings *s, const want *w, const char **one,
                     ts_writer_opts *o) {
    ts_config_writer_opts(s, o);
    o->spool = x->spool;
    o->replay_rate = (double)s->spool.replay_rate;
    o->pool = x->pool;
    o->spool_consumer = w->name;
    if (w->url) {
        one[0] = w->url;
        one[1] = NULL;
        o->urls = one;
    }
}

static void retire(ts_influx_set *x, ts_target *t, int64_t deadline) {
    x->ret = realloc(x->ret, (size_t)(x->nret + 1) * sizeof *x->ret);
    if (!x->ret) abort();
    x->ret[x->nret++] = (retiring){t, deadline};
    ts_writer_flush(ts_target_self(t));   /* what it holds goes now */
}

static int retiring_index(const ts_influx_set *x, const char *name) {
    for (int i = 0; i < x->nret; i++)
        if (strcmp(ts_target_name(x->ret[i].t), name) == 0) return i;
    return -1;
}

int ts_influx_set_apply(ts_influx_set *x, const ts_settings *s, int reload) {
    want w[MAX_INFLUX];
    int nw = wanted(s, w);
    const char *one[MAX_INFLUX][2];
    ts_writer_opts o;

    /* the new ones first: if one cannot have its spool position, nothing changes */
    ts_writer *made[MAX_INFLUX] = {0};
    int nmade = 0, failed = 0;
    for (int i = 0; i < nw; i++) {
        ts_target *t = ts_targets_find(x->targets, w[i].name);
        if (t && is_influx(t)) continue;
        if (retiring_index(x, w[i].name) >= 0) continue;   /* listed again before it closed: it comes back */
        opts_for(x, s, &w[i], one[i], &o);
        made[i] = ts_writer_new(x->loop, &o);
        nmade++;
        if (x->spool && !ts_writer_reads_spool(made[i])) failed = 1;
    }
    if (failed && reload) {
        for (int i = 0; i < nw; i++) ts_writer_free(made[i]);
        ts_error("influxdb: the new server list cannot be applied (a spool position cannot be opened, see above): "
                 "the running targets keep their servers");
        /* credentials and limits still apply to those that stay */
        for (int i = 0; i < nw; i++) {
            if (made[i]) continue;
            opts_for(x, s, &w[i], one[i], &o);
            ts_writer_reconfigure(ts_target_self(ts_targets_find(x->targets, w[i].name)), &o);
        }
        return -1;
    }

    /* commit: the removed ones leave the list (and are retired), the kept ones reload, the new ones join */
    int64_t deadline = ts_mono_ms() + (int64_t)(s->shutdown_timeout * 1000);
    for (int i = ts_targets_count(x->targets) - 1; i >= 0; i--) {
        ts_target *t = ts_targets_at(x->targets, i);
        if (!is_influx(t)) continue;
        int keep = 0;
        for (int k = 0; k < nw; k++) keep |= strcmp(w[k].name, ts_target_name(t)) == 0;
        if (keep) continue;
        ts_info("influxdb: %s is not configured any more: it sends what it holds (at most %.0f s), then closes",
                ts_target_name(t), s->shutdown_timeout);
        retire(x, ts_targets_take(x->targets, ts_target_name(t)), deadline);
    }
    for (int i = 0; i < nw; i++) {
        int r = made[i] ? -1 : retiring_index(x, w[i].name);
        if (r >= 0) {
            ts_targets_add(x->targets, x->ret[r].t);
            x->ret[r] = x->ret[--x->nret];
            ts_info("influxdb: %s is configured again: it stays", w[i].name);
        }
        if (made[i]) {
            ts_targets_add(x->targets, ts_writer_target(made[i], w[i].name));
            if (reload) ts_info("influxdb: %s added (its spool position at the oldest record the spool holds)", w[i].name);
            continue;
        }
        opts_for(x, s, &w[i], one[i], &o);
        ts_writer_reconfigure(ts_target_self(ts_targets_find(x->targets, w[i].name)), &o);
    }
    if (nw > 1 && (!reload || nmade))
        ts_info("influxdb.mode = mirror: every point goes to %d servers, each with its own queue and spool position", nw);
    return 0;
}

ts_writer *ts_influx_set_first(const ts_influx_set *x) {
    for (int i = 0; i < ts_targets_count(x->targets); i++) {
        ts_target *t = ts_targets_at(x->targets, i);
        if (is_influx(t)) return ts_target_self(t);
    }
    return NULL;
}

int ts_influx_set_retiring(const ts_influx_set *x) { return x->nret; }

static size_t close_retired(ts_influx_set *x, int i, int64_t deadline) {
    ts_target *t = x->ret[i].t;
    size_t lost = ts_target_drain(t, deadline);
    ts_info("influxdb: %s closed%s", ts_target_name(t), lost ? " (see above for what it could not write)" : "");
    ts_target_close(t);
    x->ret[i] = x->ret[--x->nret];
    return lost;
}

void ts_influx_set_step(ts_influx_set *x) {
    int64_t now = ts_mono_ms();
    for (int i = x->nret - 1; i >= 0; i--) {
        ts_target_stats st;
        ts_target_stats_get(x->ret[i].t, &st);
        if (st.pending == 0 || now >= x->ret[i].deadline) close_retired(x, i, now);
    }
}

size_t ts_influx_set_free(ts_influx_set *x, int64_t deadline) {
    if (!x) return 0;
    size_t lost = 0;
    while (x->nret > 0) lost += close_retired(x, x->nret - 1, deadline);
    free(x->ret);
    free(x);
    return lost;
}
