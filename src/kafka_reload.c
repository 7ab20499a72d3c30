/* kafka.* on SIGHUP (C core, daemon side; reads the configuration through
 * the Lua state): compares the reloaded kafka.* with the running one,
 * builds the new producer before anything is switched (a refusal leaves
 * the running one untouched), switches the spool feed and Lua to it, and
 * retires the old producer: it keeps its own loop watchers and delivers
 * what it was handed, each record acknowledged in the spool once, then it
 * is freed from a timer. */
#include "ts_kafka_reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_clock.h"
#include "ts_kafka_glue.h"
#include "ts_log.h"

#define MAX_RETIRING 8
#define REAP_PERIOD_MS 500

typedef struct retiring {
    ts_kafka *k;
    ts_kafka_stats at;         /* k's counters when it was replaced */
} retiring;

static retiring g_ret[MAX_RETIRING];
static int g_nret, g_timer;
static ts_loop *g_loop;
static ts_kafka *g_current;

static int same_str(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

static int same_pairs(const char *const *a, const char *const *b) {
    for (;; a += 2, b += 2) {
        if (!a[0] || !b[0]) return !a[0] && !b[0];
        if (strcmp(a[0], b[0]) || strcmp(a[1], b[1])) return 0;
    }
}

/* The kafka.* keys that differ, ", "-separated ("" when none). */
static void changed_keys(const ts_kafka_cfg *a, const ts_kafka_cfg *b, char *out, size_t n) {
    out[0] = '\0';
    size_t len = 0;
#define DIFF(cond, name)                                                                     \
    if (cond) len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s", len ? ", " : "", name); \
    if (len >= n) len = n - 1
    DIFF(a->enabled != b->enabled, "kafka.enabled");
    DIFF(!same_str(a->o.brokers, b->o.brokers), "kafka.brokers");
    DIFF(!same_str(a->o.topic, b->o.topic), "kafka.topic");
    DIFF(!same_pairs(a->db_topics, b->db_topics), "kafka.topics");
    DIFF(a->o.format != b->o.format, "kafka.format");
    DIFF(!same_str(a->o.acks, b->o.acks), "kafka.acks");
    DIFF(a->o.idempotence != b->o.idempotence, "kafka.idempotence");
    DIFF(!same_str(a->o.compression, b->o.compression), "kafka.compression");
    DIFF(!same_pairs(a->props, b->props), "kafka.properties");
    DIFF(a->o.points_per_message != b->o.points_per_message, "kafka.points_per_message");
    DIFF(a->o.max_buffer_bytes != b->o.max_buffer_bytes, "kafka.max_buffer_bytes");
    DIFF(a->o.retry_backoff_ms != b->o.retry_backoff_ms, "kafka.retry_backoff");
#undef DIFF
}

static void discard(ts_kafka_cfg *c) {
    ts_kafka_cfg_free(c);
    free(c);
}

static void hand_on(retiring *r) {
    /* what it counted since it was replaced goes to the one now running */
    ts_kafka_stats s;
    ts_kafka_get_stats(r->k, &s);
    ts_kafka_stats d = {0};
    d.messages_produced = s.messages_produced - r->at.messages_produced;
    d.points_delivered = s.points_delivered - r->at.points_delivered;
    d.points_failed = s.points_failed - r->at.points_failed;
    d.points_retried = s.points_retried - r->at.points_retried;
    d.points_maybe_dup = s.points_maybe_dup - r->at.points_maybe_dup;
    d.points_dropped = s.points_dropped - r->at.points_dropped;
    d.lines_invalid = s.lines_invalid - r->at.lines_invalid;
    d.delivery_errors = s.delivery_errors - r->at.delivery_errors;
    d.client_errors = s.client_errors - r->at.client_errors;
    d.queue_full = s.queue_full - r->at.queue_full;
    if (g_current) ts_kafka_add_stats(g_current, &d);
}

static void reap(void *ud) {
    (void)ud;
    g_timer = 0;
    for (int i = 0; i < g_nret;) {
        if (!ts_kafka_idle(g_ret[i].k)) {
            i++;
            continue;
        }
        hand_on(&g_ret[i]);
        ts_info("kafka: the replaced producer delivered what it held and is closed");
        ts_kafka_free(g_ret[i].k);
        g_ret[i] = g_ret[--g_nret];
    }
    if (g_nret) g_timer = ts_loop_timer(g_loop, ts_mono_ms() + REAP_PERIOD_MS, reap, NULL);
}

ts_kafka *ts_kafka_reload(lua_State *L, ts_loop *loop, ts_kafka *k, ts_kafka_feed *feed) {
    const ts_kafka_cfg *run = ts_kafka_cfg_running();
    if (!run) return k;   /* not a daemon with Kafka set up (dry run) */
    ts_kafka_cfg *c = malloc(sizeof *c);
    if (!c) abort();
    char err[512] = "", changed[400];
    if (ts_kafka_cfg_read(L, c, err, sizeof err) != 0) {
        ts_error("kafka: the new kafka.* is refused (%s): the running producer keeps running", err);
        discard(c);
        return k;
    }
    changed_keys(run, c, changed, sizeof changed);
    if (!changed[0]) {
        discard(c);
        return k;
    }
    if (run->enabled != c->enabled) {
        /* Kafka's position in the spool is opened with the spool, before the
         * spool knows all its consumers: only a start can add or remove it */
        ts_error("kafka: kafka.enabled cannot change on SIGHUP (Kafka's spool position is set up at start): %s; "
                 "restart tstats for it",
                 k ? "the running producer keeps running" : "Kafka stays off");
        discard(c);
        return k;
    }
    if (!k) {   /* off before and after: nothing runs */
        ts_kafka_cfg_set_running(c);
        return k;
    }
    if (g_nret == MAX_RETIRING) {
        ts_error("kafka: %s changed, but %d replaced producers still deliver what they hold: the running producer "
                 "keeps running (send SIGHUP again later)",
                 changed, g_nret);
        discard(c);
        return k;
    }
    ts_kafka *nk = ts_kafka_new(loop, &c->o, err, sizeof err);
    if (!nk) {
        ts_error("kafka: %s changed, but the new producer is refused (%s): the running producer keeps running",
                 changed, err);
        discard(c);
        return k;
    }
    ts_kafka_stats s;
    ts_kafka_get_stats(k, &s);
    ts_kafka_add_stats(nk, &s);
    g_ret[g_nret++] = (retiring){k, s};
    g_current = nk;
    g_loop = loop;
    if (feed) ts_kafka_feed_set_target(feed, nk, ts_kafka_feed_high(c));
    ts_kafka_lua_open(L, nk);
    ts_info("kafka: %s changed: a new producer takes the next records; the replaced one delivers the %llu points "
            "it holds, then closes",
            changed, (unsigned long long)s.points_pending);
    ts_kafka_describe(c, "now exporting to");
    ts_kafka_cfg_set_running(c);
    if (!g_timer) g_timer = ts_loop_timer(loop, ts_mono_ms() + REAP_PERIOD_MS, reap, NULL);
    return nk;
}

int ts_kafka_reload_retiring(void) { return g_nret; }

size_t ts_kafka_reload_drain(int64_t deadline) {
    size_t left = 0;
    if (g_timer) ts_loop_timer_cancel(g_loop, g_timer);
    g_timer = 0;
    for (int i = 0; i < g_nret; i++) {
        left += ts_kafka_drain(g_ret[i].k, deadline);
        hand_on(&g_ret[i]);
        ts_kafka_free(g_ret[i].k);
    }
    g_nret = 0;
    return left;
}
