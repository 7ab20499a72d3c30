/* Fills a durable spool directory with a backlog (C, benchmark side): the
 * line protocol of one real poll (what `tstats map` made from the simulator's
 * payloads with the stock mappings) repeated poll after poll, time stamps
 * moved 10 s apart so the backlog ends just before now, appended through
 * ts_spool_append in records of --record-lines lines as the daemon appends
 * them. Prints the append rate; scripts/bench --replay then starts the daemon
 * on that directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "ts_buf.h"
#include "ts_clock.h"
#include "ts_log.h"
#include "ts_spool.h"

static void usage(void) {
    fputs("usage: bench_spool_fill --dir SPOOL_DIR --points N [--record-lines L] [--interval-ms MS]\n"
          "                        [--max-bytes B] [--segment-bytes B] [--fsync interval|always|never]\n"
          "                        DB,RP,FILE...   (FILE: line protocol, ms time stamps; '#' lines skipped)\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *fsync_name = "interval";
    long long points = 0;
    long record_lines = 10000;
    long long interval_ms = 10000, max_bytes = 8LL << 30, segment_bytes = 16LL << 20;
    bench_lp_input in[8];
    int nin = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (OPT("--dir")) dir = v;
        else if (OPT("--points")) points = atoll(v);
        else if (OPT("--record-lines")) record_lines = atol(v);
        else if (OPT("--interval-ms")) interval_ms = atoll(v);
        else if (OPT("--max-bytes")) max_bytes = atoll(v);
        else if (OPT("--segment-bytes")) segment_bytes = atoll(v);
        else if (OPT("--fsync")) fsync_name = v;
        else if (a[0] != '-' && nin < 8) bench_lp_input_load(&in[nin++], a, "bench_spool_fill", usage);
        else usage();
#undef OPT
    }
    ts_spool_fsync fs;
    if (!dir || points < 1 || record_lines < 1 || interval_ms < 1 || nin == 0 || ts_spool_fsync_parse(fsync_name, &fs) != 0)
        usage();
    ts_log_set_level(TS_LOG_WARN);

    size_t per_poll = 0;
    int64_t tmax = 0;
    for (int k = 0; k < nin; k++) {
        per_poll += in[k].n;
        for (size_t j = 0; j < in[k].n; j++) if (in[k].t[j] > tmax) tmax = in[k].t[j];
    }
    long long polls = (points + (long long)per_poll - 1) / (long long)per_poll;

    ts_spool_opts so;
    memset(&so, 0, sizeof so);
    so.dir = dir;
    so.max_bytes = (uint64_t)max_bytes;
    so.segment_bytes = (uint64_t)segment_bytes;
    so.fsync = fs;
    so.fsync_interval_ms = 1000;
    so.retry_ms = 1000;
    so.log_interval_ms = 60000;
    char err[256];
    ts_spool *s = ts_spool_open(&so, err, sizeof err);
    if (!s) { fprintf(stderr, "bench_spool_fill: %s\n", err); return 1; }

    /* poll k is stamped (polls - k) intervals before now: the last one an interval ago */
    int64_t now = ts_now_ms();
    printf("spool fill: %lld polls x %zu points = %lld points, %lld ms apart, time stamps %.0f s .. %.0f s ago, "
           "records of <= %ld lines, spool.fsync = %s, into %s\n",
           polls, per_poll, polls * (long long)per_poll, interval_ms, (double)polls * (double)interval_ms / 1000,
           (double)interval_ms / 1000, record_lines, fsync_name, dir);
    fflush(stdout);
    ts_buf rec;
    ts_buf_init(&rec);
    char num[32];
    unsigned long long appended = 0, failed = 0, records = 0;
    double w0 = bench_now_s(CLOCK_MONOTONIC), c0 = bench_now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (long long p = 0; p < polls; p++) {
        int64_t shift = now - (polls - p) * interval_ms - tmax;
        for (int k = 0; k < nin; k++) {
            const bench_lp_input *x = &in[k];
            size_t j = 0;
            while (j < x->n) {
                ts_buf_reset(&rec);
                size_t lines = 0;
                for (; j < x->n && lines < (size_t)record_lines; j++, lines++) {
                    size_t start = j ? x->lend[j - 1] : 0;
                    ts_buf_add(&rec, x->text.data + start, x->tpos[j] - start);
                    int nl = snprintf(num, sizeof num, "%lld\n", (long long)(x->t[j] + shift));
                    ts_buf_add(&rec, num, (size_t)nl);
                }
                if (ts_spool_append(s, x->db, x->rp, TS_PREC_MS, rec.data, rec.len, lines) == 0) {
                    appended += lines;
                    records++;
                } else {
                    failed += lines;
                }
            }
        }
        ts_spool_tick(s);
    }
    double wa = bench_now_s(CLOCK_MONOTONIC) - w0;
    int sync_rc = ts_spool_sync(s);
    double wall = bench_now_s(CLOCK_MONOTONIC) - w0, cpu = bench_now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    ts_spool_close(s);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("spool fill: appended %llu points in %llu records (%llu refused), %.1f MB in %llu segments (%llu dropped "
           "for max_bytes), %llu fsyncs\n",
           appended, records, failed, (double)st.bytes / 1e6, (unsigned long long)st.segments,
           (unsigned long long)st.segments_dropped, (unsigned long long)st.fsyncs);
    printf("spool fill: appends %.1f s wall (%.0f points/s, %.0f MB/s), %.1f s with the final sync; CPU %.1f s "
           "(%.2f M points per CPU-s); peak RSS %.1f MB\n",
           wa, (double)appended / wa, (double)st.bytes / 1e6 / wa, wall, cpu, (double)appended / cpu / 1e6,
           (double)ru.ru_maxrss / 1024);
    printf("backlog_points=%llu\n", appended);
    ts_buf_free(&rec);
    for (int k = 0; k < nin; k++) bench_lp_input_free(&in[k]);
    return failed == 0 && st.segments_dropped == 0 && sync_rc == 0 ? 0 : 1;
}
