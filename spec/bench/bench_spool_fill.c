/* Fills a durable spool directory with a backlog (C, benchmark side): the
 * line protocol of one real poll (what `tstats map` made from the simulator's
 * payloads with the stock mappings) repeated poll after poll, time stamps
 * moved 10 s apart so the backlog ends just before now, appended in records
 * of --record-lines lines as the daemon appends them: by default each poll
 * of each input as one compact batch through ts_target_spool_batch (records
 * of kind 1, the daemon's path); --format lp: line-protocol records (kind 0)
 * through ts_spool_append, as spools written before compact records hold.
 * For the compact form each distinct tag set of the input is an entity and
 * each measurement + field a stat without tags of its own; runs follow the
 * input's lines (one poll's lines come entity by entity from the encoder).
 * Prints the append rate; scripts/bench --replay then starts the daemon on
 * that directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_clock.h"
#include "ts_log.h"
#include "ts_spool.h"
#include "ts_target.h"

static void usage(void) {
    fputs("usage: bench_spool_fill --dir SPOOL_DIR --points N [--record-lines L] [--interval-ms MS]\n"
          "                        [--max-bytes B] [--segment-bytes B] [--fsync interval|always|never]\n"
          "                        [--format compact|lp]\n"
          "                        DB,RP,FILE...   (FILE: line protocol, ms time stamps; '#' lines skipped)\n",
          stderr);
    exit(2);
}

/* ---- an input's lines as compact points (maps kept for the whole run) ---- */

typedef struct cinput {
    ts_stat_map *stats;
    ts_entity_map *ents;
    size_t nstats, nents;
    uint32_t *stat, *ent;   /* per line */
    double *value;
} cinput;

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) abort();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void compact_input(const bench_lp_input *x, cinput *c) {
    memset(c, 0, sizeof *c);
    c->stats = calloc(x->n, sizeof *c->stats);
    c->ents = calloc(x->n, sizeof *c->ents);
    c->stat = calloc(x->n, sizeof *c->stat);
    c->ent = calloc(x->n, sizeof *c->ent);
    c->value = calloc(x->n, sizeof *c->value);
    if (!c->stats || !c->ents || !c->stat || !c->ent || !c->value) abort();
    for (size_t j = 0; j < x->n; j++) {
        const char *l = x->text.data + (j ? x->lend[j - 1] : 0);
        size_t n = x->tpos[j] - (size_t)(l - x->text.data);
        while (n && l[n - 1] == ' ') n--;
        size_t ml = bench_lp_upto(l, n, ", "), kl = bench_lp_upto(l, n, " ");
        const char *tags = l + ml + (ml < kl), *fs = l + kl + 1;
        size_t tl = kl - ml - (ml < kl), fl = n > kl ? n - kl - 1 : 0;
        size_t fk = bench_lp_upto(fs, fl, "=,");
        if (fk >= fl || fs[fk] != '=' || bench_lp_upto(fs, fl, ",") < fl || fs[fl - 1] == '"') {
            fprintf(stderr, "bench_spool_fill: --format compact takes one numeric field a line: %.*s\n", (int)n, l);
            exit(1);
        }
        const char *num = fs + fk + 1;
        char *end;
        int as_int = fs[fl - 1] == 'i';
        c->value[j] = strtod(num, &end);
        if (end != fs + fl - as_int) {
            fprintf(stderr, "bench_spool_fill: not a number: %.*s\n", (int)n, l);
            exit(1);
        }
        /* the stat: measurement + field key + integer or not (few: a linear search) */
        size_t s = 0;
        for (; s < c->nstats; s++) {
            const ts_stat_map *m = &c->stats[s];
            if (m->meas_len == ml && m->field_len == fk && m->as_int == as_int && memcmp(m->meas, l, ml) == 0 &&
                memcmp(m->field, fs, fk) == 0)
                break;
        }
        if (s == c->nstats) {
            c->stats[s] = (ts_stat_map){.meas = dup_n(l, ml), .meas_len = (uint32_t)ml, .field = dup_n(fs, fk),
                                        .field_len = (uint32_t)fk, .scale = 1.0, .keep = 1, .hook_ref = -2,
                                        .as_int = as_int};
            c->nstats++;
        }
        c->stat[j] = (uint32_t)s;
        /* the entity: the tag set; lines come entity by entity, so the last one is tried first */
        size_t e = c->nents;
        if (j && c->nents) {
            const char *pl = x->text.data + (j > 1 ? x->lend[j - 2] : 0);
            size_t pn = x->tpos[j - 1] - (size_t)(pl - x->text.data);
            size_t pml = bench_lp_upto(pl, pn, ", "), pkl = bench_lp_upto(pl, pn, " ");
            if (pkl - pml == kl - ml && memcmp(pl + pml, l + ml, kl - ml) == 0) e = c->ent[j - 1];
        }
        for (size_t k = 0; e == c->nents && k < c->nents; k++) {
            const ts_tagset *t = &c->ents[k].tags;
            size_t at = 0, q = 0;
            for (; q < t->n; q++) {
                if (at + (q ? 1 : 0) + t->tags[q].kv_len > tl) break;
                if (q && tags[at++] != ',') break;
                if (memcmp(tags + at, t->tags[q].kv, t->tags[q].kv_len) != 0) break;
                at += t->tags[q].kv_len;
            }
            if (q == t->n && at == tl) e = k;
        }
        if (e == c->nents) {
            ts_tagset *t = &c->ents[e].tags;
            size_t cnt = 0;
            for (size_t a = 0; a < tl;) {
                size_t w = bench_lp_upto(tags + a, tl - a, ",");
                cnt++;
                a += w + 1;
            }
            t->tags = calloc(cnt ? cnt : 1, sizeof *t->tags);
            if (!t->tags) abort();
            for (size_t a = 0; a < tl;) {
                size_t w = bench_lp_upto(tags + a, tl - a, ","), kw = bench_lp_upto(tags + a, w, "=");
                /* the raw key orders the merge; these keys carry no escapes in the stock mappings */
                t->tags[t->n++] = (ts_etag){dup_n(tags + a, kw), dup_n(tags + a, w), (uint32_t)w};
                a += w + 1;
            }
            c->ents[e].keep = 1;
            c->nents++;
        }
        c->ent[j] = (uint32_t)e;
    }
}

int main(int argc, char **argv) {
    const char *dir = NULL, *fsync_name = "interval", *format = "compact";
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
        else if (OPT("--format")) format = v;
        else if (a[0] != '-' && nin < 8) bench_lp_input_load(&in[nin++], a, "bench_spool_fill", usage);
        else usage();
#undef OPT
    }
    ts_spool_fsync fs;
    int compact = strcmp(format, "compact") == 0;
    if (!dir || points < 1 || record_lines < 1 || interval_ms < 1 || nin == 0 || ts_spool_fsync_parse(fsync_name, &fs) != 0 ||
        (!compact && strcmp(format, "lp") != 0))
        usage();
    cinput cin[8];
    if (compact)
        for (int k = 0; k < nin; k++) compact_input(&in[k], &cin[k]);
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
           "records of <= %ld lines (%s), spool.fsync = %s, into %s\n",
           polls, per_poll, polls * (long long)per_poll, interval_ms, (double)polls * (double)interval_ms / 1000,
           (double)interval_ms / 1000, record_lines, compact ? "compact points, kind 1" : "line protocol, kind 0",
           fsync_name, dir);
    if (compact)
        for (int k = 0; k < nin; k++)
            printf("spool fill: %s: %zu stats, %zu entities a poll\n", in[k].db, cin[k].nstats, cin[k].nents);
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
            if (compact) {
                /* one poll of this input as the daemon submits it: a compact batch into the spool */
                ts_dest d;
                memset(&d, 0, sizeof d);
                memcpy(d.db, x->db, sizeof d.db);   /* both 128 bytes, NUL-terminated */
                memcpy(d.rp, x->rp, sizeof d.rp);
                d.precision = TS_PREC_MS;
                ts_batch *b = ts_batch_new_compact(&d, NULL);
                ts_batch_reserve(b, x->n, x->n);
                for (size_t j = 0; j < x->n; j++) {
                    ts_cpoint cp = {&cin[k].stats[cin[k].stat[j]], &cin[k].ents[cin[k].ent[j]], cin[k].value[j],
                                    x->t[j] + shift};
                    ts_batch_add_compact(b, &cp);
                }
                ts_batch *rest = NULL;
                size_t spooled = 0, invalid = 0;
                int all = ts_target_spool_batch(s, b, (size_t)record_lines, &rec, &rest, &spooled, &invalid, NULL, NULL);
                appended += spooled;
                records += (spooled + (size_t)record_lines - 1) / (size_t)record_lines;
                if (!all || invalid) failed += x->n - spooled;
                if (rest) ts_batch_free(rest);
                ts_batch_free(b);
                continue;
            }
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
