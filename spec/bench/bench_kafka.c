/* Benchmark of the Kafka target alone (C core, librdkafka): N line-protocol
 * lines shaped like a poll's cache stats go through ts_kafka to a Kafka given
 * on the command line (tstats-kafka-mock in its own process, so that the
 * brokers' CPU is not counted), K times; prints the process CPU (all threads:
 * librdkafka's included) per poll and per message. scripts/bench --kafka runs
 * the daemon with Kafka on; this isolates the target's share.
 *   bench_kafka --brokers HOST:PORT [--topic T] [--points N] [--iters K] [--format json|lp]
 *               [--compression C] [--per-message N] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ts_http.h"
#include "ts_kafka.h"
#include "ts_log.h"

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
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
    /* a poll's cache stats: 40 stats of N/40 caches, ms time stamps */
    ts_buf body;
    ts_buf_init(&body);
    int64_t t0 = 1700000000000LL;
    for (int i = 0; i < points; i++)
        ts_buf_printf(&body,
                      "ats.proxy.process.http.stat%d,cachegroup=us-east-%d,cdn=cdn1,hostname=edge-%05d,type=EDGE "
                      "value=%d.%d %" PRId64 "\n",
                      i % 40, (i / 40) % 2, i / 40, i * 7, i % 10, t0 + i / 40);
    if (!getenv("BENCH_KAFKA_NO_CONVERT")) {
        /* the conversion alone: what of the per-message cost is ours */
        ts_buf js;
        ts_buf_init(&js);
        ts_kafka_dest cd = {"cache_stats", "daily", TS_PREC_MS};
        double a = cpu_s();
        size_t nlines = 0;
        for (int it = 0; it < iters; it++) {
            const char *p = body.data, *end = body.data + body.len;
            while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *why;
                ts_buf_reset(&js);
                ts_kafka_enc_series_key(p, (size_t)(nl - p));
                if (ts_kafka_enc_json(&js, p, (size_t)(nl - p), &cd, 0, &why) == 0) nlines++;
                p = nl + 1;
            }
        }
        double b = cpu_s();
        printf("bench_kafka: line protocol to JSON + series key alone: %.0f ns per line (%zu lines)\n",
               (b - a) / (double)nlines * 1e9, nlines);
        /* the same through the series cache (the first pass fills it, as a first poll) */
        ts_kafka_enc *enc = ts_kafka_enc_new(1, (size_t)64 << 20);
        a = cpu_s();
        nlines = 0;
        for (int it = 0; it < iters; it++) {
            const char *p = body.data, *end = body.data + body.len;
            while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *why;
                ts_buf_reset(&js);
                size_t klen = ts_kafka_enc_series_key(p, (size_t)(nl - p));
                ts_kafka_series *se = ts_kafka_enc_series(enc, p, klen);
                if (ts_kafka_enc_json_series(enc, se, &js, p, (size_t)(nl - p), &cd, 0, &why) == 0) nlines++;
                p = nl + 1;
            }
        }
        b = cpu_s();
        ts_kafka_enc_stats es;
        ts_kafka_enc_get_stats(enc, &es);
        printf("bench_kafka: the same through the series cache: %.0f ns per line (%zu lines; %llu series, %.1f MB)\n",
               (b - a) / (double)nlines * 1e9, nlines, (unsigned long long)es.series, es.bytes / 1e6);
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
    for (int it = 0; it < iters; it++) ts_kafka_submit(k, &d, body.data, body.len, (uint64_t)it + 1, on_done, NULL);
    while (g_done < iters + 1) ts_loop_run_once(l, 50);
    double c1 = cpu_s();
    int64_t w1 = ts_mono_ms();
    ts_kafka_stats st;
    ts_kafka_get_stats(k, &st);
    printf("bench_kafka: %d x %d points (%s, %d per message, compression %s, %.1f MB of line protocol per poll): "
           "%.4f CPU-s per poll, %.0f ns CPU per point, %.2f s wall; %" PRIu64 " messages, delivered %" PRIu64
           ", failed %" PRIu64 "\n",
           iters, points, format, per, compression, body.len / 1e6, (c1 - c0) / iters, (c1 - c0) / iters / points * 1e9,
           (w1 - w0) / 1000.0, st.messages_produced, st.points_delivered, st.points_failed);
    ts_kafka_free(k);
    ts_loop_free(l);
    ts_buf_free(&body);
    ts_http_global_cleanup();
    return 0;
}
