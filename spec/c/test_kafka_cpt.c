/* C tests of Kafka messages made straight from compact points (test side):
 * every message, key and partition must be the bytes the line-protocol path
 * makes from the same points' line protocol: the encoder point by point
 * (JSON and lp, both precisions, escapes, integers, scales, NaN/Inf,
 * negative and out-of-range times, first sight and cached), then through
 * librdkafka's mock cluster (one message per point and grouped), and the
 * maps' owner held exactly while the cache points into its maps. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_batch.h"
#include "ts_http.h"
#include "ts_kafka.h"
#include "ts_kafka_enc.h"
#include "ts_log.h"
#include "ts_lp.h"

#include "check.h"
#include "kafka_check.h"

static ts_etag et(const char *key, const char *kv) { return (ts_etag){key, kv, (uint32_t)strlen(kv)}; }

#define NSTAT 6
#define NENT 40
static ts_etag st_tags[NSTAT][2], en_tags[NENT][3];
static ts_stat_map stats[NSTAT];
static ts_entity_map ents[NENT];
static char en_kv[NENT][48];

static void maps_init(void) {
    static const char *meas[NSTAT] = {"bandwidth", "conn\\ ections", "ratio", "big", "loc\\,us", "q\"uote"};
    for (int i = 0; i < NSTAT; i++)
        stats[i] = (ts_stat_map){.meas = meas[i], .meas_len = (uint32_t)strlen(meas[i]), .field = "value",
                                 .field_len = 5, .scale = 1.0, .keep = 1, .hook_ref = -2};
    st_tags[0][0] = et("cachegroup", "cachegroup=total");
    stats[0].tags = (ts_tagset){st_tags[0], 1};
    stats[1].as_int = 1;
    stats[2].scale = 8.0;   /* 1e308 * 8 = Inf: skipped although the value is finite */
    stats[3].as_int = 1;
    stats[3].scale = 1000.0;
    st_tags[4][0] = et("a", "a=x");
    st_tags[4][1] = et("type", "type=OVERRIDE");
    stats[4].tags = (ts_tagset){st_tags[4], 2};
    stats[4].field = "val\\=ue";
    stats[4].field_len = (uint32_t)strlen(stats[4].field);
    stats[5].field = "k\\ b";
    stats[5].field_len = (uint32_t)strlen(stats[5].field);
    for (int i = 0; i < NENT; i++) {
        snprintf(en_kv[i], sizeof en_kv[i], i % 7 ? "hostname=edge\\ %d" : "hostname=e\\,dge\"%d\\\\x", i);
        en_tags[i][0] = et("cachegroup", i % 2 ? "cachegroup=cg1" : "cachegroup=cg\\=2");
        en_tags[i][1] = et("hostname", en_kv[i]);
        en_tags[i][2] = et("type", "type=EDGE");
        ents[i] = (ts_entity_map){.tags = {en_tags[i], 3}, .keep = 1};
    }
}

/* An owner that counts its references. */
static int g_refs;
static void own_retain(void *o) { (void)o; g_refs++; }
static void own_release(void *o) { (void)o; g_refs--; }
static const ts_map_owner g_owner = {own_retain, own_release, &g_refs};

/* A poll-like batch: runs per entity and time (times going back and forth,
 * one far out of ns range, one before 1970), a run without entity, NaN/Inf
 * here and there. */
static int64_t g_shift;   /* added to the times: batches of distinct points */
static ts_batch *make_batch(ts_precision prec, const ts_map_owner *owner, int runs, size_t *writable) {
    ts_dest d;
    memset(&d, 0, sizeof d);
    snprintf(d.db, sizeof d.db, "cache_stats");
    snprintf(d.rp, sizeof d.rp, "daily");
    d.precision = prec;
    ts_batch *b = ts_batch_new_compact(&d, owner);
    *writable = 0;
    for (int r = 0; r < runs; r++) {
        const ts_entity_map *e = r % 50 == 7 ? NULL : &ents[(r * 7) % NENT];
        int64_t t = 1764000000000LL + (r % 3 == 0 ? -1 : 1) * (int64_t)r * 977 + r % 1000 + g_shift;
        if (r == 13) t = -1234567;                       /* before 1970 */
        if (r == 29) t = 9300000000000000LL;             /* past int64 nanoseconds: refused as JSON */
        for (int s = 0; s < NSTAT; s++) {
            double v = r * 1000.5 + s + 0.125 * (r % 8);
            if ((r + s) % 17 == 0) v = NAN;
            if ((r + s) % 23 == 0) v = -INFINITY;
            if (s == 2 && r % 5 == 0) v = 1e308;
            if (s == 3 && r == 11) v = -9.3e18;          /* clamped as integer */
            if (s == 0 && r % 9 == 0) v = 1e-7 * r;
            ts_cpoint p = {&stats[s], e, v, t};
            ts_batch_add_compact(b, &p);
            *writable += ts_lp_compact_writable(&stats[s], v) != 0;
        }
    }
    return b;
}

/* ---- the encoder, point by point ---- */

static void test_encoder(int json, ts_precision prec, const ts_map_owner *owner) {
    size_t writable;
    ts_batch *b = make_batch(prec, owner, 200, &writable);
    ts_kafka_enc *e = ts_kafka_enc_new(json, (size_t)64 << 20);
    ts_kafka_dest d = {"cache_stats", "daily", prec};
    ts_buf line, want, got;
    ts_buf_init(&line);
    ts_buf_init(&want);
    ts_buf_init(&got);
    size_t compared = 0, refused = 0, bad = 0;
    for (int pass = 0; pass < 3; pass++) {
        for (size_t run = 0, i = 0; run < ts_batch_runs(b); run++) {
            const ts_entity_map *ent;
            int64_t t;
            size_t end;
            ts_batch_run_get(b, run, &ent, &t, &end);
            for (; i < end; i++) {
                ts_cpoint p = {NULL, ent, 0, t};
                p.stat = ts_batch_stat(b, ts_batch_point_get(b, i, &p.value));
                ts_buf_reset(&line);
                if (ts_lp_encode_compact(&line, &p, prec) != 0) continue;
                size_t n = line.len - 1, klen = ts_lp_series_key(line.data, n);
                /* the line-protocol path: the full conversion of the line */
                const char *werr = NULL, *gerr = NULL;
                ts_buf_reset(&want);
                int wrc = json ? ts_kafka_enc_json(&want, line.data, n, &d, 0, &werr) : 0;
                if (!json) ts_buf_add(&want, line.data, n);
                ts_kafka_series *se = ts_kafka_enc_series_cpt(e, p.stat, p.ent, owner);
                CHECK(se != NULL);
                if (!se) continue;
                size_t gk;
                const char *key = ts_kafka_enc_key(se, &gk);
                CHECK(gk == klen && memcmp(key, line.data, klen) == 0, "key %.*s of %s", (int)gk, key, line.data);
                ts_buf_reset(&got);
                int grc = ts_kafka_enc_cpt(e, se, &got, &p, &d, &gerr);
                CHECK(grc == wrc, "%s: rc %d, the line's %d (%s)", line.data, grc, wrc, werr ? werr : "");
                if (wrc == 0 && grc == 0 && strcmp(got.data, want.data) != 0) {
                    if (bad++ < 5) FAIL("point %zu pass %d:\n  got  %s\n  want %s", i, pass, got.data, want.data);
                }
                if (wrc < 0 && grc < 0) CHECK(strcmp(gerr, werr) == 0, "%s vs %s", gerr, werr);
                refused += wrc < 0;
                compared++;
            }
        }
    }
    CHECK_EQ_U(bad, 0);
    CHECK_EQ_U(compared, 3 * writable);
    if (json) CHECK(refused >= 3, "the out-of-range time is refused as the line is (%zu)", refused);
    ts_kafka_enc_stats st;
    ts_kafka_enc_get_stats(e, &st);
    if (owner) {
        CHECK(st.pair_hits > st.pair_misses * 2, "pairs: %" PRIu64 " hits, %" PRIu64 " misses", st.pair_hits,
              st.pair_misses);
        CHECK_EQ_U(st.owners, 1);
    } else {
        CHECK_EQ_U(st.pairs, 0);   /* no owner: no pointer kept past the batch */
    }
    ts_batch_free(b);
    /* the batch is gone; the cache still holds the owner while it points into the maps */
    CHECK_EQ_U(g_refs, owner ? 1 : 0);
    ts_kafka_enc_free(e);
    CHECK_EQ_U(g_refs, 0);
    ts_buf_free(&line);
    ts_buf_free(&want);
    ts_buf_free(&got);
}

/* Owners beyond the cache's few: the cache starts again and lets the old go. */
static void test_owner_churn(void) {
    static int refs[12];
    ts_map_owner o[12];
    for (int i = 0; i < 12; i++) o[i] = (ts_map_owner){own_retain, own_release, &refs[i]};
    ts_kafka_enc *e = ts_kafka_enc_new(1, (size_t)64 << 20);
    g_refs = 0;
    for (int i = 0; i < 12; i++) CHECK(ts_kafka_enc_series_cpt(e, &stats[0], &ents[i], &o[i]) != NULL);
    ts_kafka_enc_stats st;
    ts_kafka_enc_get_stats(e, &st);
    CHECK(st.owners >= 1 && st.owners <= 8, "%" PRIu64 " owners held", st.owners);
    CHECK_EQ_U((uint64_t)g_refs, st.owners);
    CHECK(st.resets >= 1);
    ts_kafka_enc_free(e);
    CHECK_EQ_U(g_refs, 0);
}

/* ---- through the mock cluster ---- */

typedef struct pt_msg {
    int32_t partition;
    char *text;   /* key (one message per point) or "", then the point's text */
} pt_msg;

static int pt_cmp(const void *a, const void *b) {
    const pt_msg *x = a, *y = b;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* Messages split into their points (one per line), with their partition,
 * headers and, one point per message, their key. */
static pt_msg *explode(const kmsgs *v, int per, size_t *n) {
    size_t cap = 1024;
    pt_msg *out = malloc(cap * sizeof *out);
    *n = 0;
    for (size_t i = 0; i < v->n; i++) {
        for (char *p = v->m[i].val, *e; p; p = e ? e + 1 : NULL) {
            e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (*n == cap) out = realloc(out, (cap *= 2) * sizeof *out);
            const char *key = per == 1 ? v->m[i].key : "";
            const char *hdr = v->m[i].hdr ? v->m[i].hdr : "";
            size_t tl = strlen(key) + strlen(hdr) + len + 3;
            char *t = malloc(tl);
            snprintf(t, tl, "%s|%s|%.*s", key, hdr, (int)len, p);
            out[(*n)++] = (pt_msg){v->m[i].partition, t};
        }
    }
    qsort(out, *n, sizeof *out, pt_cmp);
    return out;
}

typedef struct done_count {
    int calls;
    size_t delivered, failed, dropped;
} done_count;
static void on_done(void *ud, uint64_t id, size_t delivered, size_t failed, size_t dropped) {
    (void)id;
    done_count *d = ud;
    d->calls++;
    d->delivered += delivered;
    d->failed += failed;
    d->dropped += dropped;
}

static ts_kafka *producer(ts_loop *l, const mock *m, const char *topic, ts_kafka_format f, int per) {
    static const char *const props_short[] = {"message.timeout.ms", "1500", NULL};
    ts_kafka_opts o = {0};
    if (per < 0) {   /* librdkafka gives up on messages after 1.5 s */
        per = -per;
        o.properties = props_short;
        o.retry_backoff_ms = 200;
    }
    o.brokers = m->bootstraps;
    o.topic = topic;
    o.format = f;
    o.idempotence = 1;
    o.points_per_message = (size_t)per;
    char err[256] = "";
    ts_kafka *k = ts_kafka_new(l, &o, err, sizeof err);
    if (!k) fprintf(stderr, "ts_kafka_new: %s\n", err);
    CHECK(k != NULL);
    return k;
}

static void wait_calls(ts_loop *l, done_count *d, int calls) {
    int64_t end = ts_mono_ms() + 20000;
    while (d->calls < calls && ts_mono_ms() < end) ts_loop_run_once(l, 50);
    CHECK_EQ_U(d->calls, calls);
}

/* The same batches as line protocol to one topic, as points to another:
 * the same points, bytes, keys, headers and partitions come back. */
static void test_cluster(ts_loop *l, ts_kafka_format f, int per) {
    static const char *const topics[] = {"lines", "points", NULL};
    mock m;
    mock_start(&m, topics, 4);
    ts_kafka *kl = producer(l, &m, "lines", f, per), *kp = producer(l, &m, "points", f, per);
    if (!kl || !kp) return;
    done_count dl = {0}, dp = {0};
    size_t total = 0;
    for (int c = 0; c < 4; c++) {
        size_t writable;
        ts_precision prec = c == 3 ? TS_PREC_S : TS_PREC_MS;
        ts_batch *b = make_batch(prec, &g_owner, 150, &writable);
        ts_kafka_dest d = {"cache_stats", "daily", prec};
        ts_buf body;
        ts_buf_init(&body);
        size_t lines = ts_batch_encode(b, &body);
        CHECK_EQ_U(lines, writable);
        ts_kafka_submit(kl, &d, body.data, body.len, 0, on_done, &dl);
        /* a record's range, as the spool hands it over: the middle of the batch too */
        size_t n = ts_batch_points(b), half = n / 2, inv = 0;
        ts_buf tmp;
        ts_buf_init(&tmp);
        size_t first = ts_batch_encode_range(b, 0, half, &tmp, &inv);
        ts_kafka_submit_points(kp, &d, b, 0, half, first, 0, on_done, &dp);
        ts_kafka_submit_points(kp, &d, b, half, n, lines - first, 0, on_done, &dp);
        ts_batch_free(b);   /* the target holds its own reference */
        ts_buf_free(&tmp);
        ts_buf_free(&body);
        total += lines;
        wait_calls(l, &dl, c + 1);
        wait_calls(l, &dp, 2 * (c + 1));
    }
    CHECK_EQ_U(dl.delivered + dl.failed, total);
    CHECK_EQ_U(dp.delivered, dl.delivered);
    CHECK_EQ_U(dp.failed, dl.failed);
    CHECK_EQ_U(dp.dropped, 0);
    ts_kafka_stats sl, sp;
    ts_kafka_get_stats(kl, &sl);
    ts_kafka_get_stats(kp, &sp);
    CHECK_EQ_U(sp.lines_invalid, sl.lines_invalid);
    CHECK(f == TS_KAFKA_LP || sl.lines_invalid >= 4, "JSON refuses the out-of-range times (%" PRIu64 ")",
          sl.lines_invalid);
    ts_kafka_free(kl);
    ts_kafka_free(kp);
    CHECK_EQ_U(g_refs, 0);   /* the producers' caches let the owner go */
    kmsgs vl = {0}, vp = {0};
    consume_all(&m, "lines", 4, &vl);
    consume_all(&m, "points", 4, &vp);
    size_t nl, np;
    pt_msg *a = explode(&vl, per, &nl), *b = explode(&vp, per, &np);
    CHECK_EQ_U(nl, dl.delivered);
    CHECK_EQ_U(np, nl);
    size_t bad = 0;
    for (size_t i = 0; i < nl && i < np; i++)
        if (a[i].partition != b[i].partition || strcmp(a[i].text, b[i].text) != 0) {
            if (bad++ < 3) FAIL("point %zu:\n  lines  p%d %s\n  points p%d %s", i, a[i].partition, a[i].text,
                                b[i].partition, b[i].text);
        }
    CHECK_EQ_U(bad, 0);
    fprintf(stderr, "cluster %s, %d per message: %zu points, %zu and %zu messages\n", f == TS_KAFKA_LP ? "lp" : "json",
            per, nl, vl.n, vp.n);
    for (size_t i = 0; i < nl; i++) free(a[i].text);
    for (size_t i = 0; i < np; i++) free(b[i].text);
    free(a);
    free(b);
    kmsgs_free(&vl);
    kmsgs_free(&vp);
    mock_stop(&m);
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Grouped messages librdkafka gives up on (brokers down past
 * message.timeout.ms) are produced again from a copy while their buffers go
 * back for the next groups: every point exactly once, the bytes its line
 * converts to. */
static void test_down(ts_loop *l) {
    static const char *const topics[] = {"points", NULL};
    mock m;
    mock_start(&m, topics, 3);
    ts_kafka *k = producer(l, &m, "points", TS_KAFKA_JSON, -40);
    if (!k) return;
    done_count d = {0};
    ts_kafka_dest dest = {"cache_stats", "daily", TS_PREC_MS};
    size_t nwant = 0, capw = 4096;
    char **want = malloc(capw * sizeof *want);
    for (int c = 0; c < 5; c++) {
        if (c == 1) rd_kafka_mock_broker_set_down(m.mc, -1);
        size_t writable;
        g_shift = (int64_t)c * 100000000;
        ts_batch *b = make_batch(TS_PREC_MS, &g_owner, 60 + c, &writable);
        ts_buf body;
        ts_buf_init(&body);
        ts_batch_encode(b, &body);
        for (char *p = body.data, *e; p && *p; p = e + 1) {
            e = strchr(p, '\n');
            ts_buf js;
            ts_buf_init(&js);
            const char *err;
            if (ts_kafka_enc_json(&js, p, (size_t)(e - p), &dest, 0, &err) == 0) {
                if (nwant == capw) want = realloc(want, (capw *= 2) * sizeof *want);
                want[nwant++] = strdup(js.data);
            }
            ts_buf_free(&js);
        }
        ts_buf_free(&body);
        ts_kafka_submit_points(k, &dest, b, 0, ts_batch_points(b), writable, 0, on_done, &d);
        ts_batch_free(b);
        int64_t end = ts_mono_ms() + (c == 0 ? 20000 : 1000);
        while (ts_mono_ms() < end && !(c == 0 && d.calls == 1)) ts_loop_run_once(l, 50);
    }
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    CHECK_EQ_U(d.calls, 1);
    CHECK(st.delivery_errors > 0, "librdkafka gave up while down");
    rd_kafka_mock_broker_set_up(m.mc, -1);
    wait_calls(l, &d, 5);
    ts_kafka_get_stats(k, &st);
    CHECK(st.points_retried > 0);
    CHECK_EQ_U(st.points_pending, 0);
    CHECK_EQ_U(d.dropped, 0);
    fprintf(stderr, "grouped, brokers down past message.timeout.ms: %" PRIu64 " messages, %" PRIu64
                    " points retried, %" PRIu64 " invalid\n",
            st.messages_produced, st.points_retried, st.lines_invalid);
    ts_kafka_free(k);
    g_shift = 0;
    CHECK_EQ_U(g_refs, 0);
    kmsgs v = {0};
    consume_all(&m, "points", 3, &v);
    size_t n;
    pt_msg *got = explode(&v, 40, &n);
    char **gt = malloc((n ? n : 1) * sizeof *gt);
    for (size_t i = 0; i < n; i++) gt[i] = got[i].text + 2;   /* past the empty key and headers: "||" */
    qsort(gt, n, sizeof *gt, str_cmp);
    qsort(want, nwant, sizeof *want, str_cmp);
    CHECK_EQ_U(n, nwant);
    CHECK_EQ_U(n, d.delivered);
    size_t bad = 0;
    for (size_t i = 0; i < n && i < nwant; i++)
        if (strcmp(gt[i], want[i]) != 0 && bad++ < 3) FAIL("point %zu:\n  got  %s\n  want %s", i, gt[i], want[i]);
    CHECK_EQ_U(bad, 0);
    for (size_t i = 0; i < n; i++) free(got[i].text);
    for (size_t i = 0; i < nwant; i++) free(want[i]);
    free(got);
    free(gt);
    free(want);
    kmsgs_free(&v);
    mock_stop(&m);
}

int main(int argc, char **argv) {
    (void)argv;
    ts_http_global_init();
    ts_log_set_level(getenv("TS_TEST_VERBOSE") ? TS_LOG_DEBUG : TS_LOG_ERROR);
    maps_init();
    for (int json = 0; json < 2; json++) {
        test_encoder(json, TS_PREC_MS, &g_owner);
        test_encoder(json, TS_PREC_S, &g_owner);
        test_encoder(json, TS_PREC_MS, NULL);
    }
    test_owner_churn();
    if (argc < 2) {   /* any argument: the encoder only */
        ts_loop *l = ts_loop_new();
        test_cluster(l, TS_KAFKA_JSON, 1);
        test_cluster(l, TS_KAFKA_JSON, 50);
        test_cluster(l, TS_KAFKA_LP, 50);
        test_down(l);
        ts_loop_free(l);
    }
    ts_http_global_cleanup();
    return check_report("test_kafka_cpt");
}
