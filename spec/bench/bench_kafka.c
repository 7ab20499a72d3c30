/* Benchmark of the Kafka target alone (C core, librdkafka): N line-protocol
 * lines shaped like a poll's cache stats go through ts_kafka to a Kafka given
 * on the command line (tstats-kafka-mock in its own process, so that the
 * brokers' CPU is not counted), K times; prints the process CPU (all threads:
 * librdkafka's included) per poll and per message. scripts/bench --kafka runs
 * the daemon with Kafka on; this isolates the target's share.
 *   bench_kafka --brokers HOST:PORT [--topic T] [--points N] [--iters K] [--format json|lp]
 *               [--compression C] [--per-message N]
 * The same points exist as compact points (a batch with stat and entity
 * maps, as a poll makes them) and as their line protocol: the target gets the
 * line protocol (a spool record read back), or with BENCH_KAFKA_POINTS=1 the
 * compact points (a live record). BENCH_KAFKA_CONVERT_ONLY=1: the encoders
 * alone (BENCH_KAFKA_PHASES: some of them); BENCH_KAFKA_NO_CONVERT=1: the
 * target alone. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ts_batch.h"
#include "ts_http.h"
#include "ts_kafka.h"
#include "ts_log.h"

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void bench_retain(void *o) { ++*(int *)o; }
static void bench_release(void *o) { --*(int *)o; }

/* BENCH_KAFKA_PHASES="cpt lpcache" runs only those encoder phases (lp: the
 * full conversion, cache: through the series cache, lpcache: compact points
 * to line protocol then the series cache, cpt: straight from the points). */
static int phase_iters(const char *name, int iters) {
    const char *p = getenv("BENCH_KAFKA_PHASES");
    if (!p) return iters;
    size_t n = strlen(name);
    for (const char *q = p; (q = strstr(q, name)) != NULL; q += n)
        if ((q == p || q[-1] == ' ') && (q[n] == '\0' || q[n] == ' ')) return iters;
    return 0;
}

/* each line of a body to JSON through the series cache, as the target does
 * with a record it reads back; returns the lines encoded */
static size_t json_through_cache(ts_kafka_enc *enc, const char *body, size_t len, ts_buf *js,
                                 const ts_kafka_dest *cd) {
    size_t nlines = 0;
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *why;
        ts_buf_reset(js);
        ts_kafka_series *se = ts_kafka_enc_series(enc, p, ts_lp_series_key(p, (size_t)(nl - p)));
        if (ts_kafka_enc_json_series(enc, se, js, p, (size_t)(nl - p), cd, 0, &why) == 0) nlines++;
        p = nl + 1;
    }
    return nlines;
}

static int g_done;
static void on_done(void *ud, uint64_t id, size_t delivered, size_t failed, size_t dropped) {
    (void)ud;
    (void)id;
    (void)delivered;
    if (failed || dropped) fprintf(stderr, "bench_kafka: %zu failed, %zu dropped\n", failed, dropped);
    g_done++;
}

int main(int argc, char **argv) {
    const char *brokers = NULL, *topic = "tstats", *format = "json", *compression = "none";
    int points = 84000, iters = 10, per = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--brokers")) brokers = argv[i + 1];
        else if (!strcmp(argv[i], "--topic")) topic = argv[i + 1];
        else if (!strcmp(argv[i], "--points")) points = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--format")) format = argv[i + 1];
        else if (!strcmp(argv[i], "--compression")) compression = argv[i + 1];
        else if (!strcmp(argv[i], "--per-message")) per = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_kafka: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!brokers) {
        fprintf(stderr, "usage: bench_kafka --brokers HOST:PORT [--topic T] [--points N] [--iters K] [--format json|lp] [--compression C]\n");
        return 2;
    }
    ts_http_global_init();
    ts_log_set_level(TS_LOG_WARN);
    ts_loop *l = ts_loop_new();
    ts_kafka_opts o = {0};
    o.brokers = brokers;
    o.topic = topic;
    o.format = strcmp(format, "lp") == 0 ? TS_KAFKA_LP : TS_KAFKA_JSON;
    o.idempotence = 1;
    o.compression = compression;
    o.points_per_message = (size_t)per;
    char err[512];
    ts_kafka *k = ts_kafka_new(l, &o, err, sizeof err);
    if (!k) {
        fprintf(stderr, "bench_kafka: %s\n", err);
        return 1;
    }
    /* a poll's cache stats: 40 stats of N/40 caches, ms time stamps, as a poll holds them */
    ts_buf body;
    ts_buf_init(&body);
    int64_t t0 = 1700000000000LL;
    int ncaches = (points + 39) / 40;
    ts_stat_map *sm = calloc(40, sizeof *sm);
    ts_entity_map *em = calloc((size_t)ncaches, sizeof *em);
    ts_etag *tags = calloc((size_t)ncaches * 4, sizeof *tags);
    char (*names)[40] = calloc(40, sizeof *names), (*kvs)[2][48] = calloc((size_t)ncaches, sizeof *kvs);
    if (!sm || !em || !tags || !names || !kvs) abort();
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "ats.proxy.process.http.stat%d", i);
        sm[i] = (ts_stat_map){.meas = names[i], .meas_len = (uint32_t)strlen(names[i]), .field = "value", .field_len = 5,
                              .scale = 1.0, .keep = 1, .hook_ref = -2};
    }
    for (int c = 0; c < ncaches; c++) {
        ts_etag *t = &tags[c * 4];
        snprintf(kvs[c][0], sizeof kvs[c][0], "cachegroup=us-east-%d", c % 2);
        snprintf(kvs[c][1], sizeof kvs[c][1], "hostname=edge-%05d", c);
        t[0] = (ts_etag){"cachegroup", kvs[c][0], (uint32_t)strlen(kvs[c][0])};
        t[1] = (ts_etag){"cdn", "cdn=cdn1", 8};
        t[2] = (ts_etag){"hostname", kvs[c][1], (uint32_t)strlen(kvs[c][1])};
        t[3] = (ts_etag){"type", "type=EDGE", 9};
        em[c] = (ts_entity_map){.tags = {t, 4}, .keep = 1};
    }
    ts_dest bd;
    memset(&bd, 0, sizeof bd);
    snprintf(bd.db, sizeof bd.db, "cache_stats");
    snprintf(bd.rp, sizeof bd.rp, "daily");
    bd.precision = TS_PREC_MS;
    static int owner_refs;
    ts_map_owner own = {bench_retain, bench_release, &owner_refs};
    ts_batch *batch = ts_batch_new_compact(&bd, &own);
    for (int i = 0; i < points; i++) {
        ts_cpoint p = {&sm[i % 40], &em[i / 40], i * 7 + (i % 10) / 10.0, t0 + i / 40};
        ts_batch_add_compact(batch, &p);
    }
    /* their line protocol, as a spool record of them holds it:
     * "ats.proxy.process.http.stat<s>,cachegroup=us-east-<c%2>,cdn=cdn1,hostname=edge-<c>,type=EDGE value=<v> <t>" */
    ts_batch_encode(batch, &body);
    int use_points = getenv("BENCH_KAFKA_POINTS") != NULL;
    if (!getenv("BENCH_KAFKA_NO_CONVERT")) {
        /* the conversion alone: what of the per-message cost is ours */
        ts_buf js;
        ts_buf_init(&js);
        ts_kafka_dest cd = {"cache_stats", "daily", TS_PREC_MS};
        double a = cpu_s();
        size_t nlines = 0;
        for (int it = 0; it < phase_iters("lp", iters); it++) {
            const char *p = body.data, *end = body.data + body.len;
            while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *why;
                ts_buf_reset(&js);
                ts_lp_series_key(p, (size_t)(nl - p));
                if (ts_kafka_enc_json(&js, p, (size_t)(nl - p), &cd, 0, &why) == 0) nlines++;
                p = nl + 1;
            }
        }
        double b = cpu_s();
        if (nlines) printf("bench_kafka: line protocol to JSON + series key alone: %.0f ns per line (%zu lines)\n",
               (b - a) / (double)nlines * 1e9, nlines);
        /* the same through the series cache (the first pass fills it, as a first poll) */
        ts_kafka_enc *enc = ts_kafka_enc_new(1, (size_t)64 << 20);
        a = cpu_s();
        nlines = 0;
        for (int it = 0; it < phase_iters("cache", iters); it++) {
            nlines += json_through_cache(enc, body.data, body.len, &js, &cd);
        }
        b = cpu_s();
        ts_kafka_enc_stats es;
        ts_kafka_enc_get_stats(enc, &es);
        if (nlines) printf("bench_kafka: the same through the series cache: %.0f ns per line (%zu lines; %llu series, %.1f MB)\n",
               (b - a) / (double)nlines * 1e9, nlines, (unsigned long long)es.series, es.bytes / 1e6);
        ts_kafka_enc_free(enc);
        /* the live path before: the compact points encoded to line protocol, then as above */
        enc = ts_kafka_enc_new(1, (size_t)64 << 20);
        ts_buf lp;
        ts_buf_init(&lp);
        a = cpu_s();
        nlines = 0;
        for (int it = 0; it < phase_iters("lpcache", iters); it++) {
            ts_buf_init(&lp);   /* a fresh body per record, as the live path had */
            size_t inv = 0;
            ts_batch_encode_range(batch, 0, (size_t)points, &lp, &inv);
            nlines += json_through_cache(enc, lp.data, lp.len, &js, &cd);
            ts_buf_free(&lp);
        }
        b = cpu_s();
        if (nlines) printf("bench_kafka: compact points to line protocol, then the series cache: %.0f ns per point\n",
               (b - a) / (double)nlines * 1e9);
        ts_kafka_enc_free(enc);
        /* straight from the compact points: the pair cache */
        enc = ts_kafka_enc_new(1, (size_t)64 << 20);
        a = cpu_s();
        nlines = 0;
        for (int it = 0; it < phase_iters("cpt", iters); it++) {
            for (size_t run = 0, i = 0; run < ts_batch_runs(batch); run++) {
                ts_cpoint p;
                size_t end;
                ts_batch_run_get(batch, run, &p.ent, &p.time_ms, &end);
                for (; i < end; i++) {
                    const char *why;
                    p.stat = ts_batch_stat(batch, ts_batch_point_get(batch, i, &p.value));
                    ts_buf_reset(&js);
                    ts_kafka_series *se = ts_kafka_enc_series_cpt(enc, p.stat, p.ent, &own);
                    if (ts_kafka_enc_cpt(enc, se, &js, &p, &cd, &why) == 0) nlines++;
                }
            }
        }
        b = cpu_s();
        ts_kafka_enc_get_stats(enc, &es);
        if (nlines) printf("bench_kafka: compact points straight to JSON (pair cache): %.0f ns per point (%llu pairs)\n",
               (b - a) / (double)nlines * 1e9, (unsigned long long)es.pairs);
        ts_kafka_enc_free(enc);
        ts_buf_free(&js);
        if (getenv("BENCH_KAFKA_CONVERT_ONLY")) return 0;
    }
    /* warm-up: connections, metadata, producer id */
    ts_kafka_dest d = {"cache_stats", "daily", TS_PREC_MS};
    ts_kafka_submit(k, &d, body.data, body.len, 0, on_done, NULL);
    while (g_done < 1) ts_loop_run_once(l, 50);
    double c0 = cpu_s();
    int64_t w0 = ts_mono_ms();
    for (int it = 0; it < iters; it++) {
        if (use_points)
            ts_kafka_submit_points(k, &d, batch, 0, (size_t)points, (size_t)points, (uint64_t)it + 1, on_done, NULL);
        else
            ts_kafka_submit(k, &d, body.data, body.len, (uint64_t)it + 1, on_done, NULL);
    }
    while (g_done < iters + 1) ts_loop_run_once(l, 50);
    double c1 = cpu_s();
    int64_t w1 = ts_mono_ms();
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    printf("bench_kafka: %d x %d %s (%s, %d per message, compression %s, %.1f MB of line protocol per poll): "
           "%.4f CPU-s per poll, %.0f ns CPU per point, %.2f s wall; %" PRIu64 " messages, delivered %" PRIu64
           ", failed %" PRIu64 "\n",
           iters, points, use_points ? "compact points" : "lines", format, per, compression, body.len / 1e6, (c1 - c0) / iters, (c1 - c0) / iters / points * 1e9,
           (w1 - w0) / 1000.0, st.messages_produced, st.points_delivered, st.points_failed);
    ts_kafka_free(k);
    ts_batch_free(batch);
    ts_loop_free(l);
    ts_buf_free(&body);
    ts_http_global_cleanup();
    return 0;
}
