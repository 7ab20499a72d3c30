/* influxd's own write ceiling, without tstats (C, benchmark side): posts the
 * line protocol of one real poll (what `tstats map` made from the simulator's
 * payloads, as bench_spool_fill reads it) repeated poll after poll, time
 * stamps moved 10 s apart so the last poll ends just before now, to /write
 * with libcurl's multi interface at --inflight requests at once, --lines lines
 * a body. Request shape, gzip bodies and the order of points in a body are
 * choices; prints points/s and influxd's CPU per point (--influxd-pid). */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "bench_util.h"
#include "ts_buf.h"

static void usage(void) {
    fputs("usage: bench_influx_load --url URL --points N [--lines L] [--inflight K] [--interval-ms MS]\n"
          "                         [--order poll|sorted|record|series] [--series-polls G] [--gzip LEVEL]\n"
          "                         [--influxd-pid PID] [--label TEXT] DB,RP,FILE...\n"
          "  --order poll: each body holds one poll's lines in the encoder's order (what the spool replays);\n"
          "          sorted: the same, one poll's lines sorted by series key; record: one poll's lines cut into\n"
          "          bodies in the encoder's order first, then each body's own lines sorted by series key (what\n"
          "          sorting one spool record at a time can do); record-meas: the same cut, each body's lines grouped by\n"
          "          measurement only, the poll's order kept within one (a compact record decoded stat by stat);\n"
          "          series: G polls at a time,\n"
          "          each series' G points one after the other (time-sorted within a series)\n"
          "  --gzip LEVEL: bodies gzip-compressed at zlib level LEVEL (1-9), Content-Encoding: gzip\n",
          stderr);
    exit(2);
}

static const bench_lp_input *g_sort_in;
static int by_series(const void *a, const void *b) {
    const bench_lp_input *x = g_sort_in;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const char *pi = x->text.data + (i ? x->lend[i - 1] : 0), *pj = x->text.data + (j ? x->lend[j - 1] : 0);
    size_t li = x->tpos[i] - (size_t)(pi - x->text.data), lj = x->tpos[j] - (size_t)(pj - x->text.data);
    int c = memcmp(pi, pj, li < lj ? li : lj);
    return c ? c : (li > lj) - (li < lj);
}

/* The measurement only (up to its first unescaped ',' or ' '), then the line's place: what decoding
 * a compact record stat by stat gives (its entities stay in the poll's order). */
static size_t meas_len(const char *p, size_t n) { return bench_lp_upto(p, n, ", "); }
static int by_measurement(const void *a, const void *b) {
    const bench_lp_input *x = g_sort_in;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const char *pi = x->text.data + (i ? x->lend[i - 1] : 0), *pj = x->text.data + (j ? x->lend[j - 1] : 0);
    size_t li = meas_len(pi, x->tpos[i] - (size_t)(pi - x->text.data)), lj = meas_len(pj, x->tpos[j] - (size_t)(pj - x->text.data));
    int c = memcmp(pi, pj, li < lj ? li : lj);
    if (c) return c;
    if (li != lj) return (li > lj) - (li < lj);
    return (i > j) - (i < j);
}

/* Where the next body starts: polls [p0, p0 + G), input k, line jj of its order, poll g of the group. */
typedef struct cursor {
    long long p0, polls, group;
    int k, nin;
    size_t jj;
    long long g;
} cursor;

typedef struct job {
    CURL *h;
    ts_buf body, gz;
    char url[1024];
    size_t lines;
    long code;
    char answer[512];
    size_t answer_len;
} job;

static bench_lp_input g_in[8];
static size_t *g_perm[8];   /* per input: the order its lines are sent in within a poll */
static int64_t g_shift0, g_interval;

static int cursor_done(const cursor *c) { return c->p0 >= c->polls; }

/* Up to `max` lines of one input into b; 0 when nothing is left. */
static size_t next_body(cursor *c, size_t max, ts_buf *b, int *which) {
    ts_buf_reset(b);
    if (cursor_done(c)) return 0;
    const bench_lp_input *x = &g_in[c->k];
    *which = c->k;
    size_t lines = 0;
    char num[32];
    long long gn = c->p0 + c->group <= c->polls ? c->group : c->polls - c->p0;
    while (lines < max) {
        size_t j = g_perm[c->k][c->jj];
        size_t start = j ? x->lend[j - 1] : 0;
        int64_t shift = g_shift0 + (c->p0 + c->g) * g_interval;
        ts_buf_add(b, x->text.data + start, x->tpos[j] - start);
        int nl = snprintf(num, sizeof num, "%lld\n", (long long)(x->t[j] + shift));
        ts_buf_add(b, num, (size_t)nl);
        lines++;
        if (++c->g < gn) continue;
        c->g = 0;
        if (++c->jj < x->n) continue;
        c->jj = 0;
        if (++c->k < c->nin) break;   /* a body never mixes databases */
        c->k = 0;
        c->p0 += c->group;
        break;
    }
    return lines;
}

static int gzip_into(const ts_buf *in, ts_buf *out, int level) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    uLong bound = deflateBound(&z, (uLong)in->len);
    ts_buf_reset(out);
    ts_buf_reserve(out, bound + 1);
    z.next_in = (Bytef *)in->data;
    z.avail_in = (uInt)in->len;
    z.next_out = (Bytef *)out->data;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    out->len = bound - z.avail_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -1;
}

static size_t on_answer(char *p, size_t sz, size_t n, void *ud) {
    job *j = ud;
    size_t len = sz * n, room = sizeof j->answer - 1 - j->answer_len;
    size_t take = len < room ? len : room;
    memcpy(j->answer + j->answer_len, p, take);
    j->answer_len += take;
    j->answer[j->answer_len] = '\0';
    return len;
}

int main(int argc, char **argv) {
    const char *url = NULL, *order = "poll", *label = "";
    long long points = 0, interval_ms = 10000, group = 10;
    long lines_per = 10000, inflight = 2, pid = 0;
    int gzip_level = 0, nin = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (OPT("--url")) url = v;
        else if (OPT("--points")) points = atoll(v);
        else if (OPT("--lines")) lines_per = atol(v);
        else if (OPT("--inflight")) inflight = atol(v);
        else if (OPT("--interval-ms")) interval_ms = atoll(v);
        else if (OPT("--order")) order = v;
        else if (OPT("--series-polls")) group = atoll(v);
        else if (OPT("--gzip")) gzip_level = atoi(v);
        else if (OPT("--influxd-pid")) pid = atol(v);
        else if (OPT("--label")) label = v;
        else if (a[0] != '-' && nin < 8) {
            bench_lp_input *in = &g_in[nin];
            bench_lp_input_load(in, a, "bench_influx_load", usage);
            g_perm[nin] = malloc(in->n * sizeof *g_perm[nin]);
            if (!g_perm[nin]) abort();
            for (size_t j = 0; j < in->n; j++) g_perm[nin][j] = j;
            nin++;
        } else usage();
#undef OPT
    }
    int series = strcmp(order, "series") == 0, sorted = strcmp(order, "sorted") == 0;
    int record_meas = strcmp(order, "record-meas") == 0, record = record_meas || strcmp(order, "record") == 0;
    if (!url || points < 1 || lines_per < 1 || inflight < 1 || inflight > 64 || interval_ms < 1 || nin == 0 ||
        gzip_level < 0 || gzip_level > 9 || group < 1 || (!series && !sorted && !record && strcmp(order, "poll") != 0))
        usage();
    if (sorted || series) {
        for (int k = 0; k < nin; k++) {
            g_sort_in = &g_in[k];
            qsort(g_perm[k], g_in[k].n, sizeof *g_perm[k], by_series);
        }
    }
    if (record) {
        /* bodies start at each poll's first line of an input and hold lines_per lines: sort each such slice */
        for (int k = 0; k < nin; k++) {
            g_sort_in = &g_in[k];
            for (size_t a = 0; a < g_in[k].n; a += (size_t)lines_per) {
                size_t n = g_in[k].n - a < (size_t)lines_per ? g_in[k].n - a : (size_t)lines_per;
                qsort(g_perm[k] + a, n, sizeof *g_perm[k], record_meas ? by_measurement : by_series);
            }
        }
    }
    size_t per_poll = 0;
    int64_t tmax = 0;
    for (int k = 0; k < nin; k++) {
        per_poll += g_in[k].n;
        for (size_t j = 0; j < g_in[k].n; j++) if (g_in[k].t[j] > tmax) tmax = g_in[k].t[j];
    }
    long long polls = (points + (long long)per_poll - 1) / (long long)per_poll;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t now = (int64_t)rt.tv_sec * 1000 + rt.tv_nsec / 1000000;
    /* poll p is stamped (polls - p) intervals before now */
    g_interval = interval_ms;
    g_shift0 = now - polls * interval_ms - tmax;
    cursor cur = {.p0 = 0, .polls = polls, .group = series ? group : 1, .k = 0, .nin = nin};
    printf("influx load%s%s: %lld polls x %zu points = %lld points into %s, %ld lines a body, %ld in flight, "
           "order %s%s, %s\n",
           *label ? " " : "", label, polls, per_poll, polls * (long long)per_poll, url, lines_per, inflight, order,
           series ? (group == 1 ? " (1 poll)" : "") : "", gzip_level ? "gzip bodies" : "plain bodies");
    fflush(stdout);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: text/plain; charset=utf-8");
    hdr = curl_slist_append(hdr, "Expect:");
    struct curl_slist *hdr_gz = curl_slist_append(NULL, "Content-Type: text/plain; charset=utf-8");
    hdr_gz = curl_slist_append(hdr_gz, "Expect:");
    hdr_gz = curl_slist_append(hdr_gz, "Content-Encoding: gzip");
    job jobs[64];
    memset(jobs, 0, sizeof jobs);
    unsigned long long sent_points = 0, ok_points = 0, failed_points = 0, requests = 0, failed_requests = 0;
    unsigned long long bytes_plain = 0, bytes_wire = 0;
    double cpu_i0 = bench_proc_cpu_s(pid), w0 = bench_now_s(CLOCK_MONOTONIC), c0 = bench_now_s(CLOCK_PROCESS_CPUTIME_ID);
    int running = 0, active = 0, shown = 0;
    for (long i = 0; i < inflight; i++) {
        ts_buf_init(&jobs[i].body);
        ts_buf_init(&jobs[i].gz);
        jobs[i].h = curl_easy_init();
    }
    /* start (or restart) job j with the next body; 0 when none is left */
    for (;;) {
        for (long i = 0; i < inflight; i++) {
            job *j = &jobs[i];
            if (j->lines || cursor_done(&cur)) continue;
            int which = 0;
            size_t n = next_body(&cur, (size_t)lines_per, &j->body, &which);
            if (!n) continue;
            j->lines = n;
            j->answer_len = 0;
            j->answer[0] = '\0';
            snprintf(j->url, sizeof j->url, "%s/write?db=%s&rp=%s&precision=ms", url, g_in[which].db, g_in[which].rp);
            const ts_buf *out = &j->body;
            if (gzip_level) {
                if (gzip_into(&j->body, &j->gz, gzip_level) != 0) { fputs("bench_influx_load: gzip failed\n", stderr); return 1; }
                out = &j->gz;
            }
            bytes_plain += j->body.len;
            bytes_wire += out->len;
            curl_easy_reset(j->h);
            curl_easy_setopt(j->h, CURLOPT_URL, j->url);
            curl_easy_setopt(j->h, CURLOPT_POSTFIELDS, out->data);
            curl_easy_setopt(j->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)out->len);
            curl_easy_setopt(j->h, CURLOPT_HTTPHEADER, gzip_level ? hdr_gz : hdr);
            curl_easy_setopt(j->h, CURLOPT_WRITEFUNCTION, on_answer);
            curl_easy_setopt(j->h, CURLOPT_WRITEDATA, j);
            curl_easy_setopt(j->h, CURLOPT_PRIVATE, j);
            curl_easy_setopt(j->h, CURLOPT_TIMEOUT, 120L);
            curl_multi_add_handle(m, j->h);
            sent_points += n;
            requests++;
            active++;
        }
        if (active == 0) break;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            job *j = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &j->code);
            if (msg->data.result == CURLE_OK && j->code == 204) ok_points += j->lines;
            else {
                failed_points += j->lines;
                failed_requests++;
                if (shown++ < 3)
                    fprintf(stderr, "bench_influx_load: HTTP %ld (%s): %s\n", j->code, curl_easy_strerror(msg->data.result),
                            j->answer);
            }
            curl_multi_remove_handle(m, msg->easy_handle);
            j->lines = 0;
            active--;
        }
        if (active > 0 && running > 0) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double wall = bench_now_s(CLOCK_MONOTONIC) - w0, cpu = bench_now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    double cpu_i = cpu_i0 >= 0 ? bench_proc_cpu_s(pid) - cpu_i0 : -1;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("influx load: %llu points acknowledged (204), %llu failed, in %llu requests (%llu failed); %.1f MB of line "
           "protocol, %.1f MB on the wire\n",
           ok_points, failed_points, requests, failed_requests, (double)bytes_plain / 1e6, (double)bytes_wire / 1e6);
    printf("influx load: wall %.1f s: %.0f points/s; this process CPU %.1f s; peak RSS %.1f MB\n", wall,
           (double)ok_points / wall, cpu, (double)ru.ru_maxrss / 1024);
    if (cpu_i >= 0)
        printf("influx load: influxd CPU %.1f s (%.0f %% of a core): %.0f points per influxd CPU-s, %.2f us of influxd "
               "CPU per point\n",
               cpu_i, 100 * cpu_i / wall, ok_points / (cpu_i > 0 ? cpu_i : 1e-9),
               ok_points ? 1e6 * cpu_i / (double)ok_points : 0);
    printf("load_result label=%s inflight=%ld lines=%ld order=%s gzip=%d points=%llu failed=%llu wall_s=%.2f "
           "points_per_s=%.0f influxd_cpu_s=%.2f self_cpu_s=%.2f\n",
           *label ? label : "-", inflight, lines_per, order, gzip_level, ok_points, failed_points, wall,
           (double)ok_points / wall, cpu_i, cpu);
    for (long i = 0; i < inflight; i++) {
        curl_easy_cleanup(jobs[i].h);
        ts_buf_free(&jobs[i].body);
        ts_buf_free(&jobs[i].gz);
    }
    curl_slist_free_all(hdr);
    curl_slist_free_all(hdr_gz);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    for (int k = 0; k < nin; k++) {
        bench_lp_input_free(&g_in[k]);
        free(g_perm[k]);
    }
    return failed_points == 0 ? 0 : 1;
}
