/* test_metrics: C unit test of the service metrics store and the listener's address parsing
 * (src/metrics.c, src/httpd.c; C core). Events in, exposition text / health / ready JSON out:
 * label escaping, cumulative histogram buckets, counters that survive a plan change, the
 * health verdict before and after a successful poll, the InfluxDB reason, the per-CDN
 * written verdict, the daily summary's last success per CDN, and a threaded
 * hammer (renders while the "loop" records) for the sanitizer tree. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"
#include "ts_httpd.h"
#include "ts_metrics.h"
#include "ts_metrics_json.h"

static void test_listen(void) {
    char host[256], err[256];
    int port = -1;
    CHECK(ts_httpd_parse_listen("9101", host, sizeof host, &port, err, sizeof err) == 0 && port == 9101 &&
              strcmp(host, "127.0.0.1") == 0, "bare port is loopback: %s %d", host, port);
    CHECK(ts_httpd_parse_listen(":9101", host, sizeof host, &port, err, sizeof err) == 0 &&
              strcmp(host, "127.0.0.1") == 0, "':port' is loopback");
    CHECK(ts_httpd_parse_listen("0.0.0.0:80", host, sizeof host, &port, err, sizeof err) == 0 && port == 80 &&
              strcmp(host, "0.0.0.0") == 0, "explicit address");
    CHECK(ts_httpd_parse_listen("[::1]:9101", host, sizeof host, &port, err, sizeof err) == 0 &&
              strcmp(host, "::1") == 0, "IPv6 in brackets: %s", host);
    CHECK(ts_httpd_parse_listen("::1:9101", host, sizeof host, &port, err, sizeof err) != 0, "bare IPv6 refused");
    CHECK(ts_httpd_parse_listen("host:99999", host, sizeof host, &port, err, sizeof err) != 0, "port range");
    CHECK(ts_httpd_parse_listen("host:", host, sizeof host, &port, err, sizeof err) != 0, "empty port");
    CHECK(ts_httpd_parse_listen("host:12x", host, sizeof host, &port, err, sizeof err) != 0 && strstr(err, "12x"),
          "bad port named: %s", err);
}

static ts_poll_event ev(const char *cdn, const char *ep, int ok, int64_t ms, uint64_t points) {
    ts_poll_event e = {.cdn = cdn, .endpoint = ep, .monitor = "http://tm-1:80/publish/CacheStats?stats=a",
                       .ok = ok, .points = points, .bytes = 1000, .duration_ms = ms, .db = "cache_stats", .rp = "daily",
                       .error = ok ? NULL : "http://tm-1:80/x: HTTP 503"};
    return e;
}

static void test_render(void) {
    ts_metrics *m = ts_metrics_new("1.2.3");
    ts_buf b;
    ts_buf_init(&b);
    /* nothing yet: not ready, unhealthy (no plan) */
    CHECK(ts_metrics_render_ready(m, &b) == 503 && strstr(b.data, "Traffic Ops"), "not ready: %s", b.data);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 503 && strstr(b.data, "no polling plan"), "no plan: %s", b.data);

    ts_metrics_plan_begin(m);
    ts_metrics_plan_endpoint(m, "cdn\"1\\", "CacheStats");
    ts_metrics_plan_end(m);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_ready(m, &b) == 503 && strstr(b.data, "first poll"), "waits for a poll: %s", b.data);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 503 && strstr(b.data, "no successful poll yet"), "%s", b.data);

    ts_poll_event e = ev("cdn\"1\\", "CacheStats", 0, 70, 0);
    e.failovers = 1;
    ts_metrics_poll_done(m, &e);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 503 && strstr(b.data, "HTTP 503"), "the last error is a reason: %s", b.data);
    e = ev("cdn\"1\\", "CacheStats", 1, 300, 42);
    ts_metrics_poll_done(m, &e);
    ts_metrics_inputs in;
    memset(&in, 0, sizeof in);
    in.poll_interval_ms = 10000;
    in.publish_interval_ms = 30000;
    in.health_intervals = 3;
    ts_metrics_publish(m, &in);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 200 && strstr(b.data, "\"status\":\"ok\""), "healthy: %s", b.data);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_ready(m, &b) == 200, "ready");

    ts_buf_reset(&b);
    ts_metrics_render_prometheus(m, &b);
    const char *t = b.data;
    CHECK(strstr(t, "tstats_polls_total{cdn=\"cdn\\\"1\\\\\",endpoint=\"CacheStats\"} 2\n"), "escaped labels, 2 polls:\n%s", t);
    CHECK(strstr(t, "tstats_poll_failures_total{cdn=\"cdn\\\"1\\\\\",endpoint=\"CacheStats\"} 1\n"), "1 failure");
    CHECK(strstr(t, "tstats_monitor_failovers_total{cdn=\"cdn\\\"1\\\\\",endpoint=\"CacheStats\"} 1\n"), "1 failover");
    CHECK(strstr(t, "monitor=\"http://tm-1:80\"} 1\n"), "monitor is the base URL");
    /* 0.07 s and 0.3 s: le=0.05 holds 0, 0.1 holds 1, 0.5 holds 2, +Inf 2 */
    CHECK(strstr(t, "le=\"0.05\"} 0\n") && strstr(t, "le=\"0.1\"} 1\n") && strstr(t, "le=\"0.25\"} 1\n") &&
              strstr(t, "le=\"0.5\"} 2\n") && strstr(t, "le=\"+Inf\"} 2\n"), "cumulative buckets");
    CHECK(strstr(t, "tstats_poll_duration_seconds_sum{cdn=\"cdn\\\"1\\\\\",endpoint=\"CacheStats\"} 0.37\n"), "sum 0.37");
    CHECK(strstr(t, "tstats_points_collected_total{db=\"cache_stats\",rp=\"daily\"} 42\n"), "collected per destination");
    CHECK(strstr(t, "tstats_build_info{version=\"1.2.3\""), "build info");
    CHECK(strstr(t, "# TYPE tstats_poll_duration_seconds histogram\n"), "histogram type");
    int helps = 0, types = 0;
    for (const char *p = t; (p = strstr(p, "# HELP ")); p++) helps++;
    for (const char *p = t; (p = strstr(p, "# TYPE ")); p++) types++;
    CHECK(helps == types && helps > 20, "HELP and TYPE per family: %d %d", helps, types);

    /* a new plan without the endpoint: counters stay, health ignores it */
    ts_metrics_plan_begin(m);
    ts_metrics_plan_endpoint(m, "cdn2", "DsStats");
    ts_metrics_plan_end(m);
    ts_buf_reset(&b);
    ts_metrics_render_prometheus(m, &b);
    CHECK(strstr(b.data, "tstats_polls_total{cdn=\"cdn\\\"1\\\\\",endpoint=\"CacheStats\"} 2\n"), "counter survives the plan");
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 503 && strstr(b.data, "cdn2 DsStats") && !strstr(b.data, "CacheStats: "),
          "only the plan's endpoints count: %s", b.data);

    /* InfluxDB: pending points and nothing written for longer than N publishing intervals */
    in.points_pending = 10;
    in.publish_interval_ms = 1;    /* 3 ms */
    ts_metrics_publish(m, &in);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    ts_buf_reset(&b);
    ts_metrics_render_health(m, &b);
    CHECK(strstr(b.data, "influxdb: 10 points pending"), "writer reason: %s", b.data);
    in.points_written = 10;
    in.points_pending = 0;
    ts_metrics_publish(m, &in);
    ts_buf_reset(&b);
    ts_metrics_render_health(m, &b);
    CHECK(!strstr(b.data, "influxdb:"), "written: no writer reason: %s", b.data);

    ts_buf_reset(&b);
    ts_metrics_render_status(m, &b);
    CHECK(strstr(b.data, "\"name\":\"cdn2\"") && strstr(b.data, "\"history\":[]") , "status JSON: %s", b.data);
    ts_buf_free(&b);
    ts_metrics_free(m);
}

/* "Written within N intervals" per CDN: each CDN's points go to their own database
 * here; the one whose database takes no write is named, the other is not. */
static void test_health_per_cdn(void) {
    ts_metrics *m = ts_metrics_new("x");
    ts_metrics_plan_begin(m);
    ts_metrics_plan_endpoint(m, "cdn-a", "CacheStats");
    ts_metrics_plan_endpoint(m, "cdn-b", "CacheStats");
    ts_metrics_plan_end(m);
    ts_poll_event e = ev("cdn-a", "CacheStats", 1, 10, 10);
    e.db = "a_db";
    ts_metrics_poll_done(m, &e);
    e = ev("cdn-b", "CacheStats", 1, 10, 5);
    e.db = "b_db";
    ts_metrics_poll_done(m, &e);
    ts_metrics_dest dests[2];
    memset(dests, 0, sizeof dests);
    snprintf(dests[0].db, sizeof dests[0].db, "a_db");
    snprintf(dests[0].rp, sizeof dests[0].rp, "daily");
    dests[0].written = 10;
    snprintf(dests[1].db, sizeof dests[1].db, "b_db");
    snprintf(dests[1].rp, sizeof dests[1].rp, "daily");
    dests[1].pending = 5;
    ts_metrics_inputs in;
    memset(&in, 0, sizeof in);
    in.poll_interval_ms = 100;     /* polls stale after 300 ms */
    in.publish_interval_ms = 1;    /* a destination's limit: 3 ms + one polling interval */
    in.health_intervals = 3;
    in.dests = dests;
    in.ndests = 2;
    in.points_written = 10;
    in.points_pending = 5;
    ts_metrics_publish(m, &in);
    ts_buf b;
    ts_buf_init(&b);
    CHECK(ts_metrics_render_health(m, &b) == 200, "within the limit: %s", b.data);
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 503, "cdn-b unwritten: %s", b.data);
    CHECK(strstr(b.data, "cdn-b: its points for b_db.daily are not being written") && strstr(b.data, "5 pending"),
          "cdn-b named with its destination: %s", b.data);
    CHECK(!strstr(b.data, "cdn-a:"), "cdn-a's points were written: %s", b.data);
    /* the write arrives: healthy again */
    dests[1].written = 5;
    dests[1].pending = 0;
    in.points_written = 15;
    in.points_pending = 0;
    ts_metrics_publish(m, &in);
    ts_buf_reset(&b);
    CHECK(ts_metrics_render_health(m, &b) == 200, "written: %s", b.data);
    /* the last summary per CDN: kept, never moved back */
    ts_metrics_summary_done(m, "cdn-a", 1700000000000LL);
    ts_metrics_summary_done(m, "cdn-a", 1600000000000LL);
    ts_metrics_summary_done(m, "cdn-b", 1700000500000LL);
    ts_buf_reset(&b);
    ts_metrics_render_prometheus(m, &b);
    CHECK(strstr(b.data, "tstats_summary_last_success_timestamp_seconds{cdn=\"cdn-a\"} 1700000000\n") &&
              strstr(b.data, "tstats_summary_last_success_timestamp_seconds{cdn=\"cdn-b\"} 1700000500\n"),
          "summary per CDN: %s", b.data);
    ts_buf_free(&b);
    ts_metrics_free(m);
}

/* Renders from other threads while this one records: data races show in the sanitizer tree. */
static void *renderer(void *ud) {
    ts_metrics *m = ud;
    ts_buf b;
    ts_buf_init(&b);
    for (int i = 0; i < 200; i++) {
        ts_buf_reset(&b);
        ts_metrics_render_prometheus(m, &b);
        ts_buf_reset(&b);
        ts_metrics_render_status(m, &b);
        ts_buf_reset(&b);
        ts_metrics_render_health(m, &b);
    }
    ts_buf_free(&b);
    return NULL;
}

static void test_threads(void) {
    ts_metrics *m = ts_metrics_new("x");
    ts_metrics_plan_begin(m);
    ts_metrics_plan_endpoint(m, "cdn1", "CacheStats");
    ts_metrics_plan_end(m);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, renderer, m);
    ts_metrics_inputs in;
    memset(&in, 0, sizeof in);
    in.poll_interval_ms = 1000;
    in.publish_interval_ms = 1000;
    for (int i = 0; i < 5000; i++) {
        char cdn[16];
        snprintf(cdn, sizeof cdn, "cdn%d", i % 7);
        ts_poll_event e = ev(cdn, i % 2 ? "CacheStats" : "DsStats", i % 5 != 0, i % 400, (uint64_t)i);
        ts_metrics_poll_done(m, &e);
        if (i % 100 == 0) { in.points_written = (uint64_t)i; ts_metrics_publish(m, &in); }
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    ts_buf b;
    ts_buf_init(&b);
    ts_metrics_render_prometheus(m, &b);
    CHECK(strstr(b.data, "tstats_polls_total{cdn=\"cdn0\",endpoint=\"DsStats\"}"), "records from the hammer");
    ts_buf_free(&b);
    ts_metrics_free(m);
}

int main(void) {
    test_listen();
    test_render();
    test_health_per_cdn();
    test_threads();
    return check_report("test_metrics");
}
