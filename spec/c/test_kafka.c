/* C tests of module ts_kafka (Kafka export target) against librdkafka's mock
 * cluster: an in-process cluster speaking the real Kafka protocol. Messages
 * are read back with librdkafka's consumer on fixed partitions and compared
 * one by one: every line exactly once, the expected JSON, the series key,
 * through brokers going down and coming back, permanent errors and the
 * memory bound. */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_http.h"
#include "ts_kafka.h"
#include "ts_kafka_feed.h"
#include "ts_spool.h"
#include "ts_log.h"

#include "check.h"
#include "kafka_check.h"

#define CHECK_STR(a, b)                                                    \
    do {                                                                   \
        const char *a_ = (a), *b_ = (b);                                   \
        CHECK(strcmp(a_, b_) == 0, "\n  got  %s\n  want %s", a_, b_);       \
    } while (0)

/* ---- line protocol to JSON ---- */

static const char *to_json(const char *line, const char *db, const char *rp, ts_precision p, int64_t now_ns) {
    static ts_buf b;
    const char *err = NULL;
    ts_buf_reset(&b);
    ts_kafka_dest d = {db, rp, p};
    int rc = ts_kafka_enc_json(&b, line, strlen(line), &d, now_ns, &err);
    /* the series cache gives the same bytes (or the same refusal), first
     * seen and seen again, after another series and right after itself */
    static ts_kafka_enc *enc;
    if (!enc) enc = ts_kafka_enc_new(1, (size_t)1 << 20);
    static ts_buf c;
    const char *other = "other,x=y v=1 1";
    for (int pass = 0; pass < 3; pass++) {
        const char *cerr = NULL;
        ts_buf_reset(&c);
        if (pass == 1) {
            ts_kafka_series *o = ts_kafka_enc_series(enc, other, ts_lp_series_key(other, strlen(other)));
            CHECK(o != NULL, "no entry for a plain series");
        }
        ts_kafka_series *se = ts_kafka_enc_series(enc, line, ts_lp_series_key(line, strlen(line)));
        int crc = ts_kafka_enc_json_series(enc, se, &c, line, strlen(line), &d, now_ns, &cerr);
        CHECK(crc == rc, "cached conversion of %s: rc %d, uncached %d", line, crc, rc);
        if (rc == 0 && crc == 0) CHECK_STR(c.data, b.data);
        if (rc < 0 && crc < 0) CHECK_STR(cerr, err);
    }
    if (rc < 0) return err;
    return b.data ? b.data : "";
}

static void test_json(void) {
    /* Traffic Stats' own message for this point, plus db and rp */
    CHECK_STR(to_json("bandwidth,cachegroup=CDN_in_a_Box_Edge,cdn=CDN-in-a-Box,hostname=edge,type=EDGE value=1523 "
                      "1589471331498",
                      "cache_stats", "monthly", TS_PREC_MS, 0),
              "{\"name\":\"bandwidth\",\"tags\":{\"cachegroup\":\"CDN_in_a_Box_Edge\",\"cdn\":\"CDN-in-a-Box\","
              "\"hostname\":\"edge\",\"type\":\"EDGE\"},\"fields\":{\"value\":1523},"
              "\"time\":\"2020-05-14T15:48:51.498Z\",\"db\":\"cache_stats\",\"rp\":\"monthly\"}");
    /* floats keep their shortest round-trip text; integers exact beyond 2^53 */
    CHECK_STR(to_json("m f=0.1,g=-2.5e-07,i=9007199254740993i,u=18446744073709551615u,b=t,c=FALSE 0", "d", "",
                      TS_PREC_S, 0),
              "{\"name\":\"m\",\"tags\":{},\"fields\":{\"f\":0.1,\"g\":-2.5e-07,\"i\":9007199254740993,"
              "\"u\":18446744073709551615,\"b\":true,\"c\":false},\"time\":\"1970-01-01T00:00:00Z\",\"db\":\"d\","
              "\"rp\":\"\"}");
    /* escapes undone as InfluxDB undoes them; JSON escapes where JSON needs them */
    CHECK_STR(to_json("we\\,ird\\ m,t\\=k=v\\ 1\\,2,q=a\"b s=\"x\\\"y\\\\z\" 1", "d", "r", TS_PREC_NS, 0),
              "{\"name\":\"we,ird m\",\"tags\":{\"t=k\":\"v 1,2\",\"q\":\"a\\\"b\"},\"fields\":{\"s\":\"x\\\"y\\\\z\"},"
              "\"time\":\"1970-01-01T00:00:00.000000001Z\",\"db\":\"d\",\"rp\":\"r\"}");
    /* a backslash InfluxDB keeps (before n) stays */
    CHECK_STR(to_json("m,t=a\\nb v=1 1000", "d", "r", TS_PREC_MS, 0),
              "{\"name\":\"m\",\"tags\":{\"t\":\"a\\\\nb\"},\"fields\":{\"v\":1},\"time\":\"1970-01-01T00:00:01Z\","
              "\"db\":\"d\",\"rp\":\"r\"}");
    /* ns time exact, negative times floor */
    CHECK_STR(to_json("m v=1 1700000000123456789", "d", "r", TS_PREC_NS, 0),
              "{\"name\":\"m\",\"tags\":{},\"fields\":{\"v\":1},\"time\":\"2023-11-14T22:13:20.123456789Z\","
              "\"db\":\"d\",\"rp\":\"r\"}");
    CHECK_STR(to_json("m v=1 -1", "d", "r", TS_PREC_MS, 0),
              "{\"name\":\"m\",\"tags\":{},\"fields\":{\"v\":1},\"time\":\"1969-12-31T23:59:59.999Z\","
              "\"db\":\"d\",\"rp\":\"r\"}");
    /* daily points are in seconds; no time stamp: the time given */
    CHECK_STR(to_json("daily_maxgbps,cdn=over-the-top value=12.5 1589414400", "daily_stats", "indefinite", TS_PREC_S, 0),
              "{\"name\":\"daily_maxgbps\",\"tags\":{\"cdn\":\"over-the-top\"},\"fields\":{\"value\":12.5},"
              "\"time\":\"2020-05-14T00:00:00Z\",\"db\":\"daily_stats\",\"rp\":\"indefinite\"}");
    CHECK_STR(to_json("m v=1", "d", "r", TS_PREC_MS, 1500000000LL),
              "{\"name\":\"m\",\"tags\":{},\"fields\":{\"v\":1},\"time\":\"1970-01-01T00:00:01.5Z\","
              "\"db\":\"d\",\"rp\":\"r\"}");
    /* control characters become \u escapes: the output stays JSON */
    CHECK_STR(to_json("m,t=a\x01z v=1 0", "d", "r", TS_PREC_MS, 0),
              "{\"name\":\"m\",\"tags\":{\"t\":\"a\\u0001z\"},\"fields\":{\"v\":1},\"time\":\"1970-01-01T00:00:00Z\","
              "\"db\":\"d\",\"rp\":\"r\"}");
    /* what is not line protocol is refused, with a reason */
    CHECK_STR(to_json("m", "d", "r", TS_PREC_MS, 0), "no fields");
    CHECK_STR(to_json(",t=1 v=1", "d", "r", TS_PREC_MS, 0), "empty measurement");
    CHECK_STR(to_json("m v=abc 1", "d", "r", TS_PREC_MS, 0), "bad field value");
    CHECK_STR(to_json("m v=1 12x", "d", "r", TS_PREC_MS, 0), "bad time stamp");
    CHECK_STR(to_json("m v=1 99999999999999999", "d", "r", TS_PREC_S, 0), "time stamp out of range");
    CHECK_STR(to_json("m v=\"open 1", "d", "r", TS_PREC_S, 0), "unterminated string field");
    CHECK_STR(to_json("m,t v=1", "d", "r", TS_PREC_S, 0), "bad tag");

    const char *l = "bw,host=a\\ b,cg=x value=1 1";
    CHECK_EQ_U(ts_lp_series_key(l, strlen(l)), strlen("bw,host=a\\ b,cg=x"));
    l = "bw,host=a\\\\ value=1";   /* an escaped backslash, then the separator */
    CHECK_EQ_U(ts_lp_series_key(l, strlen(l)), strlen("bw,host=a\\\\"));
    l = "bw,host=a\\\\\\ b value=1";
    CHECK_EQ_U(ts_lp_series_key(l, strlen(l)), strlen("bw,host=a\\\\\\ b"));
}

/* ---- helpers for the producer side ---- */

typedef struct done_log {
    int calls;
    size_t delivered, failed, dropped;
    uint64_t ids[64];
} done_log;

static void on_done(void *ud, uint64_t id, size_t delivered, size_t failed, size_t dropped) {
    done_log *d = ud;
    if (d->calls < 64) d->ids[d->calls] = id;
    d->calls++;
    d->delivered += delivered;
    d->failed += failed;
    d->dropped += dropped;
}

/* Lines "kt_<meas%5>,host=h<i%37>,cg=g<i%3> value=<i>.25 <t>" i from first. */
static void make_body(ts_buf *b, int first, int n, int64_t t) {
    ts_buf_reset(b);
    for (int i = first; i < first + n; i++)
        ts_buf_printf(b, "kt_%d,cg=g%d,host=h%d value=%d.25 %" PRId64 "\n", i % 5, i % 3, i % 37, i, t + i);
}

static int run_until(ts_loop *l, int (*cond)(void *), void *ud, int64_t ms, int64_t *max_iter_ms) {
    int64_t end = ts_mono_ms() + ms;
    while (ts_mono_ms() < end) {
        if (cond(ud)) return 1;
        int64_t t0 = ts_mono_ms();
        ts_loop_run_once(l, 50);
        int64_t dt = ts_mono_ms() - t0;
        if (max_iter_ms && dt > *max_iter_ms) *max_iter_ms = dt;
    }
    return cond(ud);
}

typedef struct want_calls {
    done_log *d;
    int calls;
} want_calls;
static int calls_reached(void *ud) {
    want_calls *w = ud;
    return w->d->calls >= w->calls;
}

static void run_ms(ts_loop *l, int64_t ms, int64_t *max_iter_ms) {
    int64_t end = ts_mono_ms() + ms;
    while (ts_mono_ms() < end) {
        int64_t t0 = ts_mono_ms();
        ts_loop_run_once(l, 50);
        int64_t dt = ts_mono_ms() - t0;
        if (max_iter_ms && dt > *max_iter_ms) *max_iter_ms = dt;
    }
}

/* Each "value=<i>.25" seen once per i in [0, n), nothing else. */
static void check_exactly_once(const kmsgs *v, int n, const char *what) {
    unsigned char *seen = calloc((size_t)n, 1);
    size_t dups = 0, strange = 0;
    for (size_t i = 0; i < v->n; i++) {
        const char *p = strstr(v->m[i].val, "\"value\":");
        int x = -1;
        if (!p || sscanf(p + 8, "%d.25", &x) != 1 || x < 0 || x >= n) {
            strange++;
            continue;
        }
        if (seen[x]++) dups++;
    }
    size_t missing = 0;
    for (int i = 0; i < n; i++) missing += seen[i] == 0;
    if (missing || dups || strange)
        fprintf(stderr, "%s: %zu messages, %zu missing, %zu duplicated, %zu strange\n", what, v->n, missing, dups,
                strange);
    CHECK_EQ_U(missing, 0);
    CHECK_EQ_U(dups, 0);
    CHECK_EQ_U(strange, 0);
    CHECK_EQ_U(v->n, (size_t)n);
    free(seen);
}

/* Same key, same partition; the key is the line's series key. */
static void check_keys(const kmsgs *v) {
    size_t bad_part = 0, bad_key = 0;
    for (size_t i = 0; i < v->n; i++) {
        for (size_t j = i + 1; j < v->n; j++)
            if (strcmp(v->m[i].key, v->m[j].key) == 0 && v->m[i].partition != v->m[j].partition) bad_part++;
        /* key kt_<a>,cg=g<b>,host=h<c> against the JSON's name and tags */
        int a, b, c;
        char want[256];
        if (sscanf(v->m[i].key, "kt_%d,cg=g%d,host=h%d", &a, &b, &c) != 3) {
            bad_key++;
            continue;
        }
        snprintf(want, sizeof want, "{\"name\":\"kt_%d\",\"tags\":{\"cg\":\"g%d\",\"host\":\"h%d\"}", a, b, c);
        if (strncmp(v->m[i].val, want, strlen(want)) != 0) bad_key++;
    }
    CHECK_EQ_U(bad_part, 0);
    CHECK_EQ_U(bad_key, 0);
}

static ts_kafka *new_kafka(ts_loop *l, const mock *m, const char *topic, const char *const *props, size_t bound) {
    ts_kafka_opts o = {0};
    o.brokers = m->bootstraps;
    o.topic = topic;
    o.format = TS_KAFKA_JSON;
    o.idempotence = 1;
    o.properties = props;
    o.max_buffer_bytes = bound;
    o.retry_backoff_ms = 200;
    char err[256] = "";
    ts_kafka *k = ts_kafka_new(l, &o, err, sizeof err);
    if (!k) fprintf(stderr, "ts_kafka_new: %s\n", err);
    CHECK(k != NULL);
    return k;
}

/* ---- tests against the mock cluster ---- */

static void test_exactly_once(ts_loop *l) {
    static const char *const topics[] = {"stats", NULL};
    mock m;
    mock_start(&m, topics, 4);
    ts_kafka *k = new_kafka(l, &m, "stats", NULL, 0);
    done_log d = {0};
    ts_buf b;
    ts_buf_init(&b);
    int n = 0;
    for (int c = 0; c < 6; c++) {
        make_body(&b, n, 500, 1700000000000LL);
        ts_kafka_dest dest = {"cache_stats", "daily", TS_PREC_MS};
        ts_kafka_submit(k, &dest, b.data, b.len, (uint64_t)c + 1, on_done, &d);
        n += 500;
    }
    int64_t max_iter = 0;
    want_calls w = {&d, 6};
    CHECK(run_until(l, calls_reached, &w, 20000, &max_iter));
    CHECK_EQ_U(d.delivered, (size_t)n);
    CHECK_EQ_U(d.failed + d.dropped, 0);
    for (int i = 0; i < 6; i++) CHECK(d.ids[i] >= 1 && d.ids[i] <= 6);
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    CHECK_EQ_U(st.points_delivered, (uint64_t)n);
    CHECK_EQ_U(st.points_pending, 0);
    CHECK_EQ_U(st.bytes_pending, 0);
    kmsgs v = {0};
    consume_all(&m, "stats", 4, &v);
    check_exactly_once(&v, n, "exactly once");
    check_keys(&v);
    /* one exact message end to end: line 7 */
    int found = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (strstr(v.m[i].val, "\"value\":7.25")) {
            found = 1;
            CHECK_STR(v.m[i].val, "{\"name\":\"kt_2\",\"tags\":{\"cg\":\"g1\",\"host\":\"h7\"},\"fields\":{\"value\":7.25},"
                                  "\"time\":\"2023-11-14T22:13:20.007Z\",\"db\":\"cache_stats\",\"rp\":\"daily\"}");
            CHECK_STR(v.m[i].key, "kt_2,cg=g1,host=h7");
        }
    }
    CHECK(found);
    /* the partitions are all used (4 partitions, 555 distinct series) */
    int used[4] = {0};
    for (size_t i = 0; i < v.n; i++) used[v.m[i].partition & 3] = 1;
    CHECK_EQ_U(used[0] + used[1] + used[2] + used[3], 4);
    kmsgs_free(&v);
    ts_kafka_free(k);
    ts_buf_free(&b);
    mock_stop(&m);
}

/* All brokers down for several polls (shorter and longer than librdkafka's
 * message timeout), then back: the loop never blocks, nothing lost, nothing
 * twice. */
static void test_brokers_down(ts_loop *l, int past_timeout) {
    static const char *const topics[] = {"stats", NULL};
    mock m;
    mock_start(&m, topics, 3);
    static const char *const props_short[] = {"message.timeout.ms", "1500", NULL};
    ts_kafka *k = new_kafka(l, &m, "stats", past_timeout ? props_short : NULL, 0);
    done_log d = {0};
    ts_buf b;
    ts_buf_init(&b);
    ts_kafka_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    /* first a chunk while up, so the producer knows the cluster */
    make_body(&b, 0, 200, 1700000000000LL);
    ts_kafka_submit(k, &dest, b.data, b.len, 1, on_done, &d);
    want_calls w = {&d, 1};
    CHECK(run_until(l, calls_reached, &w, 20000, NULL));
    rd_kafka_mock_broker_set_down(m.mc, -1);
    int64_t max_iter = 0;
    for (int poll = 0; poll < 4; poll++) {   /* four "polls" of 300 points while down */
        make_body(&b, 200 + poll * 300, 300, 1700000000000LL);
        ts_kafka_submit(k, &dest, b.data, b.len, (uint64_t)poll + 2, on_done, &d);
        run_ms(l, 1000, &max_iter);
    }
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    CHECK_EQ_U(d.calls, 1);                      /* nothing acknowledged while down */
    CHECK_EQ_U(st.points_delivered, 200);
    CHECK_EQ_U(st.points_pending, 1200);
    CHECK(max_iter < 1000);                      /* 50 ms waits: a blocked loop shows as seconds */
    if (past_timeout) CHECK(st.delivery_errors > 0);   /* librdkafka gave up: ours to retry */
    rd_kafka_mock_broker_set_up(m.mc, -1);
    w.calls = 5;
    CHECK(run_until(l, calls_reached, &w, 30000, &max_iter));
    CHECK_EQ_U(d.delivered, 1400);
    CHECK_EQ_U(d.failed + d.dropped, 0);
    ts_kafka_get_stats(k, &st);
    if (past_timeout) CHECK(st.points_retried > 0);
    CHECK_EQ_U(st.points_pending, 0);
    /* the mock broker was refusing connections: nothing can have been written */
    CHECK_EQ_U(st.points_maybe_dup, 0);
    fprintf(stderr, "brokers down%s: produced %" PRIu64 ", retried %" PRIu64 ", delivery errors %" PRIu64
                    ", client errors %" PRIu64 ", longest loop iteration %" PRId64 " ms\n",
            past_timeout ? " past message.timeout.ms" : "", st.messages_produced, st.points_retried,
            st.delivery_errors, st.client_errors, max_iter);
    kmsgs v = {0};
    consume_all(&m, "stats", 3, &v);
    check_exactly_once(&v, 1400, past_timeout ? "down past timeout" : "down");
    kmsgs_free(&v);
    ts_kafka_free(k);
    ts_buf_free(&b);
    mock_stop(&m);
}

/* Topic authorization refused and a message too large: counted as failed,
 * the chunk completes, nothing is retried for ever. */
static void test_permanent(ts_loop *l) {
    static const char *const topics[] = {"stats", NULL};
    mock m;
    mock_start(&m, topics, 1);
    /* a short metadata refresh: after refusing a topic librdkafka fails its
     * messages at once until metadata shows the topic again */
    static const char *const props[] = {"message.max.bytes", "2000", "topic.metadata.refresh.interval.ms", "500", NULL};
    ts_kafka *k = new_kafka(l, &m, "stats", props, 0);
    done_log d = {0};
    ts_buf b;
    ts_buf_init(&b);
    ts_kafka_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    /* a line whose JSON is over 2000 bytes, between two good ones */
    ts_buf_adds(&b, "kt_0,cg=g0,host=h0 value=0.25 1\nbig,t=");
    for (int i = 0; i < 2100; i++) ts_buf_addc(&b, 'x');
    ts_buf_adds(&b, " value=1 1\nkt_1,cg=g1,host=h1 value=1.25 2\nnot line protocol\n");
    ts_kafka_submit(k, &dest, b.data, b.len, 1, on_done, &d);
    want_calls w = {&d, 1};
    CHECK(run_until(l, calls_reached, &w, 20000, NULL));
    CHECK_EQ_U(d.delivered, 2);
    CHECK_EQ_U(d.failed, 2);
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    CHECK_EQ_U(st.lines_invalid, 1);
    CHECK_EQ_U(st.points_failed, 1);   /* the too large one; the invalid line is not a message */

    /* the broker refuses the topic: every produce request answers
     * TOPIC_AUTHORIZATION_FAILED */
    rd_kafka_resp_err_t errs[64];
    for (int i = 0; i < 64; i++) errs[i] = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
    rd_kafka_mock_push_request_errors_array(m.mc, 0 /* Produce */, 64, errs);
    make_body(&b, 0, 50, 1);
    ts_kafka_submit(k, &dest, b.data, b.len, 2, on_done, &d);
    w.calls = 2;
    CHECK(run_until(l, calls_reached, &w, 20000, NULL));
    rd_kafka_mock_clear_request_errors(m.mc, 0);
    ts_kafka_get_stats(k, &st);
    CHECK_EQ_U(d.failed, 52);
    CHECK_EQ_U(st.points_retried, 0);
    CHECK_EQ_U(st.points_pending, 0);
    CHECK_EQ_U(st.last_error_code, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    fprintf(stderr, "permanent: delivered %zu, failed %zu (1 too large, 1 not line protocol, 50 refused)\n",
            d.delivered, d.failed);
    /* and it goes on working once the topic is allowed again */
    run_ms(l, 1500, NULL);
    make_body(&b, 100, 10, 1);
    ts_kafka_submit(k, &dest, b.data, b.len, 3, on_done, &d);
    w.calls = 3;
    CHECK(run_until(l, calls_reached, &w, 20000, NULL));
    CHECK_EQ_U(d.delivered, 12);
    if (d.delivered != 12) { ts_kafka_get_stats(k, &st); fprintf(stderr, "after refusal: failed %zu dropped %zu last %s\n", d.failed, d.dropped, st.last_error); }
    kmsgs v = {0};
    consume_all(&m, "stats", 1, &v);
    CHECK_EQ_U(v.n, 12);
    kmsgs_free(&v);
    ts_kafka_free(k);
    ts_buf_free(&b);
    mock_stop(&m);
}

/* Brokers down with librdkafka's queue full: our bound drops the oldest
 * chunk's lines (counted, its done says so), the newer arrive. */
static void test_memory_bound(ts_loop *l) {
    static const char *const topics[] = {"stats", NULL};
    mock m;
    mock_start(&m, topics, 1);
    static const char *const props[] = {"queue.buffering.max.messages", "100", NULL};
    ts_kafka *k = new_kafka(l, &m, "stats", props, 65536);
    done_log d = {0};
    ts_buf b;
    ts_buf_init(&b);
    ts_kafka_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    rd_kafka_mock_broker_set_down(m.mc, -1);
    int per = 0;
    for (int c = 0; c < 4; c++) {
        make_body(&b, c * 1000, 1000, 1);   /* ~45 KB each */
        per = (int)b.len;
        ts_kafka_submit(k, &dest, b.data, b.len, (uint64_t)c + 1, on_done, &d);
        run_ms(l, 100, NULL);
    }
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    CHECK(st.bytes_pending <= 65536);
    CHECK(st.points_dropped > 0);
    CHECK(st.queue_full > 0);
    rd_kafka_mock_broker_set_up(m.mc, -1);
    want_calls w = {&d, 4};
    CHECK(run_until(l, calls_reached, &w, 30000, NULL));
    CHECK_EQ_U(d.delivered + d.dropped, 4000);
    CHECK_EQ_U(d.dropped, st.points_dropped);
    kmsgs v = {0};
    consume_all(&m, "stats", 1, &v);
    CHECK_EQ_U(v.n, d.delivered);
    fprintf(stderr, "memory bound 64 KiB, chunks of %d bytes: delivered %zu, dropped %zu\n", per, d.delivered,
            d.dropped);
    kmsgs_free(&v);
    ts_kafka_free(k);
    ts_buf_free(&b);
    mock_stop(&m);
}

/* format "lp": the line itself, db/rp/precision in headers; a topic per
 * database with a default for the others. */
static void test_lp_topics(ts_loop *l) {
    static const char *const topics[] = {"caches", "other", NULL};
    mock m;
    mock_start(&m, topics, 2);
    static const char *const db_topics[] = {"cache_stats", "caches", NULL};
    ts_kafka_opts o = {0};
    o.brokers = m.bootstraps;
    o.topic = "other";
    o.db_topics = db_topics;
    o.format = TS_KAFKA_LP;
    o.idempotence = 1;
    o.compression = "lz4";
    char err[256];
    ts_kafka *k = ts_kafka_new(l, &o, err, sizeof err);
    CHECK(k != NULL);
    if (!k) return;
    done_log d = {0};
    ts_kafka_dest a = {"cache_stats", "daily", TS_PREC_MS}, b2 = {"daily_stats", "", TS_PREC_S};
    const char *la = "bandwidth,cdn=x,hostname=e1 value=1.5 1589471331498\nbandwidth,cdn=x,hostname=e2 value=2 1589471331498\n";
    const char *lb = "daily_maxgbps,cdn=x value=12 1589414400\n";
    ts_kafka_submit(k, &a, la, strlen(la), 1, on_done, &d);
    ts_kafka_submit(k, &b2, lb, strlen(lb), 2, on_done, &d);
    want_calls w = {&d, 2};
    CHECK(run_until(l, calls_reached, &w, 20000, NULL));
    CHECK_EQ_U(d.delivered, 3);
    kmsgs v = {0};
    consume_all(&m, "caches", 2, &v);
    CHECK_EQ_U(v.n, 2);
    for (size_t i = 0; i < v.n; i++) {
        CHECK(strncmp(v.m[i].val, "bandwidth,cdn=x,hostname=e", 26) == 0);
        CHECK(v.m[i].hdr && strcmp(v.m[i].hdr, "db=cache_stats;rp=daily;precision=ms;") == 0);
    }
    kmsgs_free(&v);
    consume_all(&m, "other", 2, &v);
    CHECK_EQ_U(v.n, 1);
    if (v.n == 1) {
        CHECK_STR(v.m[0].val, "daily_maxgbps,cdn=x value=12 1589414400");
        CHECK_STR(v.m[0].key, "daily_maxgbps,cdn=x");
        CHECK(v.m[0].hdr && strcmp(v.m[0].hdr, "db=daily_stats;rp=;precision=s;") == 0);
    }
    kmsgs_free(&v);
    ts_kafka_free(k);
    mock_stop(&m);
}

/* Several points per message: every point once, grouped by the partition of
 * its series, the same partition a message of its own would get. */
static void test_grouped(ts_loop *l) {
    static const char *const topics[] = {"stats", NULL};
    mock m;
    mock_start(&m, topics, 4);
    ts_kafka_opts o = {0};
    o.brokers = m.bootstraps;
    o.topic = "stats";
    o.idempotence = 1;
    o.points_per_message = 50;
    char err[256];
    ts_kafka *k = ts_kafka_new(l, &o, err, sizeof err);
    CHECK(k != NULL);
    if (!k) return;
    done_log d = {0};
    ts_buf b;
    ts_buf_init(&b);
    ts_kafka_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    for (int c = 0; c < 3; c++) {   /* the first goes point by point: the partition count is not known yet */
        make_body(&b, c * 1000, 1000, 1700000000000LL);
        ts_kafka_submit(k, &dest, b.data, b.len, (uint64_t)c + 1, on_done, &d);
        want_calls w = {&d, c + 1};
        CHECK(run_until(l, calls_reached, &w, 20000, NULL));
    }
    CHECK_EQ_U(d.delivered, 3000);
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    CHECK(st.messages_produced < 1000 + 2 * 1000 / 10);   /* chunks 2 and 3: ~4 partitions x 5 messages */
    fprintf(stderr, "grouped: 3000 points in %" PRIu64 " messages\n", st.messages_produced);
    kmsgs v = {0};
    consume_all(&m, "stats", 4, &v);
    /* split messages into points, keep the partition and the point's own key */
    kmsgs pts = {0};
    int max_lines = 0;
    for (size_t i = 0; i < v.n; i++) {
        int lines = 0;
        for (char *p = v.m[i].val, *e; p; p = e ? e + 1 : NULL) {
            e = strchr(p, '\n');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (pts.n == pts.cap) {
                pts.cap = pts.cap ? pts.cap * 2 : 1024;
                pts.m = realloc(pts.m, pts.cap * sizeof *pts.m);
            }
            kmsg *q = &pts.m[pts.n++];
            q->partition = v.m[i].partition;
            q->val = dupn(p, n);
            q->hdr = NULL;
            int a, bb, c;
            char key[128] = "";
            const char *tags = strstr(q->val, "\"name\":\"kt_");
            if (tags && sscanf(tags, "\"name\":\"kt_%d\",\"tags\":{\"cg\":\"g%d\",\"host\":\"h%d\"", &a, &bb, &c) == 3)
                snprintf(key, sizeof key, "kt_%d,cg=g%d,host=h%d", a, bb, c);
            q->key = strdup(key);
            lines++;
        }
        if (lines > max_lines) max_lines = lines;
    }
    CHECK(max_lines > 1 && max_lines <= 50);
    check_exactly_once(&pts, 3000, "grouped");
    check_keys(&pts);   /* one partition per series across single and grouped messages */
    kmsgs_free(&pts);
    kmsgs_free(&v);
    ts_kafka_free(k);
    ts_buf_free(&b);
    mock_stop(&m);
}

/* Kafka's own position in the spool: records appended before Kafka's first
 * start are not exported; the ones after are, each once; records read and
 * not acknowledged when the process stops (brokers down) are read again by
 * the next one and then delivered, once. */
static ts_spool *open_spool(const char *dir) {
    ts_spool_opts so = {0};
    so.dir = dir;
    char err[256];
    ts_spool *s = ts_spool_open(&so, err, sizeof err);
    if (!s) fprintf(stderr, "spool: %s\n", err);
    CHECK(s != NULL);
    return s;
}

typedef struct feed_wait {
    ts_kafka_feed *f;
    uint64_t acked;
} feed_wait;
static int feed_acked(void *ud) {
    feed_wait *w = ud;
    ts_kafka_feed_stats st;
    ts_kafka_feed_get_stats(w->f, &st);
    return st.records_acked >= w->acked;
}

static void append_lines(ts_spool *s, int first, int n) {
    ts_buf b;
    ts_buf_init(&b);
    make_body(&b, first, n, 1700000000000LL);
    CHECK(ts_spool_append(s, "cache_stats", "daily", TS_PREC_MS, b.data, b.len, (size_t)n) == 0);
    ts_buf_free(&b);
}

static void test_feed(ts_loop *l) {
    static const char *const topics[] = {"stats", NULL};
    mock m;
    mock_start(&m, topics, 2);
    char dir[] = "/tmp/test_kafka_spool.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ts_spool *s = open_spool(dir);
    append_lines(s, 100000, 300);   /* before Kafka's first start: not exported */
    ts_kafka *k = new_kafka(l, &m, "stats", NULL, 0);
    ts_kafka_feed *f = ts_kafka_feed_new(k, s, l, 0);
    CHECK(f != NULL);
    ts_spool_consumers_done(s);
    for (int r = 0; r < 5; r++) append_lines(s, r * 500, 500);
    feed_wait w = {f, 5};
    CHECK(run_until(l, feed_acked, &w, 20000, NULL));
    ts_kafka_feed_stats fs;
    ts_kafka_feed_get_stats(f, &fs);
    CHECK_EQ_U(fs.points_read, 2500);
    CHECK_EQ_U(fs.records_open, 0);
    CHECK_EQ_U(fs.backlog_bytes, 0);

    /* brokers down: three more records are read, none acknowledged; then
     * the process stops without waiting (no drain) */
    rd_kafka_mock_broker_set_down(m.mc, -1);
    for (int r = 5; r < 8; r++) append_lines(s, r * 500, 500);
    run_ms(l, 1500, NULL);
    ts_kafka_feed_get_stats(f, &fs);
    CHECK_EQ_U(fs.records_acked, 5);
    CHECK_EQ_U(fs.records_open, 3);
    CHECK(fs.backlog_bytes > 0);
    ts_kafka_free(k);
    ts_kafka_feed_free(f);
    ts_spool_close(s);
    rd_kafka_mock_broker_set_up(m.mc, -1);

    /* the next start reads them again and delivers them */
    s = open_spool(dir);
    k = new_kafka(l, &m, "stats", NULL, 0);
    f = ts_kafka_feed_new(k, s, l, 0);
    ts_spool_consumers_done(s);
    w.f = f;
    w.acked = 3;
    CHECK(run_until(l, feed_acked, &w, 20000, NULL));
    ts_kafka_feed_get_stats(f, &fs);
    CHECK_EQ_U(fs.points_read, 1500);
    CHECK_EQ_U(fs.backlog_bytes, 0);
    kmsgs v = {0};
    consume_all(&m, "stats", 2, &v);
    check_exactly_once(&v, 4000, "spool feed");
    kmsgs_free(&v);
    ts_kafka_free(k);
    ts_kafka_feed_free(f);
    ts_spool_close(s);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    mock_stop(&m);
}

static void test_bad_options(ts_loop *l) {
    char err[256];
    ts_kafka_opts o = {0};
    o.brokers = "127.0.0.1:1";
    o.topic = "t";
    o.idempotence = 1;
    o.acks = "1";
    CHECK(ts_kafka_new(l, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "kafka.idempotence needs kafka.acks") != NULL);
    o.acks = "all";
    static const char *const p1[] = {"acks", "1", NULL};
    o.properties = p1;
    CHECK(ts_kafka_new(l, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "set kafka.acks instead") != NULL);
    static const char *const p2[] = {"no.such.property", "1", NULL};
    o.properties = p2;
    CHECK(ts_kafka_new(l, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "no.such.property") != NULL);
    o.properties = NULL;
    o.compression = "rar";
    CHECK(ts_kafka_new(l, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "compression.codec") != NULL);
    o.compression = NULL;
    o.topic = NULL;
    CHECK(ts_kafka_new(l, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "kafka.topic") != NULL);
}

/* `test_kafka NAME...` runs only the named tests (iterating on one). */
static int g_argc;
static char **g_argv;
static int want(const char *name) {
    if (g_argc < 2) return 1;
    for (int i = 1; i < g_argc; i++)
        if (strcmp(g_argv[i], name) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    g_argc = argc;
    g_argv = argv;
    ts_http_global_init();
    ts_log_set_level(getenv("TS_TEST_VERBOSE") ? TS_LOG_DEBUG : TS_LOG_ERROR);
    ts_loop *l = ts_loop_new();
    if (want("json")) test_json();
    if (want("options")) test_bad_options(l);
    if (want("once")) test_exactly_once(l);
    if (want("lp")) test_lp_topics(l);
    if (want("grouped")) test_grouped(l);
    if (want("feed")) test_feed(l);
    if (want("permanent")) test_permanent(l);
    if (want("bound")) test_memory_bound(l);
    if (want("down")) test_brokers_down(l, 0);
    if (want("timeout")) test_brokers_down(l, 1);
    ts_loop_free(l);
    ts_http_global_cleanup();
    return check_report("test_kafka");
}
