/* Integration driver for the InfluxDB writer (C test side; included by
 * test_writer.c, run as `test_writer --it ...`). Generates deterministic
 * compact points (and optional text lines), submits, drains against a real
 * influxd, prints one JSON line of stats. spec/runtime/writer_spec.lua runs it.
 *   point k: entity host=h<k % S>, cdn=it; time start + (k / S) * step ms;
 *   value k / 4 (exact in binary); measurement it_bw, field value.
 *   text line i: it_text,src=driver n=<i>i <start + i (in the precision)>. */

static void it_usage(void) {
    fprintf(stderr,
            "usage: test_writer --it --urls U1[,U2..] --db DB [--rp RP] [--precision ms|s] [--points N]\n"
            "  [--series S] [--start-ms T] [--step-ms T] [--text-lines M] [--bad-line] [--batch-size B]\n"
            "  [--max-publish-size K] [--max-inflight N] [--max-buffer-bytes B] [--gzip]\n"
            "  [--user U --password P] [--timeout-ms T] [--backoff-min-ms T] [--backoff-max-ms T]\n"
            "  [--drain-ms T] [--phase2-wait FILE] [--query Q] [--log-level L]\n");
}

static void it_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

typedef struct it_cfg {
    const char *urls, *db, *rp, *user, *password, *phase2, *query;
    ts_precision prec;
    long long points, series, start_ms, step_ms, text_lines, batch_size, drain_ms;
    int bad_line, gzip, max_inflight;
    long long max_publish, max_buffer, timeout_ms, bmin, bmax;
} it_cfg;

static ts_stat_map it_stat = {"it_bw", 5, "value", 5, {NULL, 0}, 1.0, 1, -2, 0, 0, NULL};

static void it_print(FILE *f, const char *phase, ts_writer *w, long long submitted, size_t lost, int64_t t0) {
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    int64_t el = ts_mono_ms() - t0;
    fprintf(f,
            "{\"phase\":\"%s\",\"submitted\":%lld,\"written\":%llu,\"rejected\":%llu,\"dropped\":%llu,"
            "\"pending\":%llu,\"requests_ok\":%llu,\"requests_failed\":%llu,\"bytes_sent\":%llu,"
            "\"retries\":%lld,\"invalid\":%lld,\"drain_lost\":%zu,\"elapsed_ms\":%lld,\"points_per_s\":%.0f,"
            "\"current_url\":%d",
            phase, submitted, (unsigned long long)s.points_written, (unsigned long long)s.points_rejected,
            (unsigned long long)s.points_dropped, (unsigned long long)s.points_pending,
            (unsigned long long)s.requests_ok, (unsigned long long)s.requests_failed,
            (unsigned long long)s.bytes_sent, (long long)ts_counter_get("writer_retries")->value,
            (long long)ts_counter_get("writer_points_invalid")->value, lost, (long long)el,
            el > 0 ? (double)s.points_written * 1000.0 / (double)el : 0.0, ts_writer_current_url(w));
}

/* Submit points [k0, k1) in batches of batch_size. */
static void it_submit_points(ts_writer *w, const it_cfg *c, const ts_dest *d, ts_entity_map *ents, long long k0,
                             long long k1) {
    ts_batch *b = NULL;
    for (long long k = k0; k < k1; k++) {
        if (!b) b = ts_batch_new_compact(d, NULL);
        ts_cpoint p = {&it_stat, &ents[k % c->series], (double)k / 4.0, c->start_ms + (k / c->series) * c->step_ms};
        ts_batch_add_compact(b, &p);
        if ((long long)ts_batch_points(b) >= c->batch_size) { ts_writer_submit(w, b); b = NULL; }
    }
    if (b) ts_writer_submit(w, b);
}

static int it_main(int argc, char **argv) {
    it_cfg c;
    memset(&c, 0, sizeof c);
    c.rp = "";
    c.prec = TS_PREC_MS;
    c.points = 1000;
    c.series = 10;
    c.start_ms = 1700000000000LL;
    c.step_ms = 1000;
    c.batch_size = 10000;
    c.drain_ms = 10000;
    c.max_inflight = 2;
    const char *lvl = "warn";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT_S(name, field) if (strcmp(a, name) == 0 && v) { c.field = v; i++; continue; }
#define OPT_I(name, field) if (strcmp(a, name) == 0 && v) { c.field = atoll(v); i++; continue; }
        OPT_S("--urls", urls) OPT_S("--db", db) OPT_S("--rp", rp) OPT_S("--user", user)
        OPT_S("--password", password) OPT_S("--phase2-wait", phase2) OPT_S("--query", query)
        OPT_I("--points", points) OPT_I("--series", series) OPT_I("--start-ms", start_ms)
        OPT_I("--step-ms", step_ms) OPT_I("--text-lines", text_lines) OPT_I("--batch-size", batch_size)
        OPT_I("--drain-ms", drain_ms) OPT_I("--max-publish-size", max_publish)
        OPT_I("--max-buffer-bytes", max_buffer) OPT_I("--timeout-ms", timeout_ms)
        OPT_I("--backoff-min-ms", bmin) OPT_I("--backoff-max-ms", bmax)
        if (strcmp(a, "--max-inflight") == 0 && v) { c.max_inflight = atoi(v); i++; continue; }
        if (strcmp(a, "--precision") == 0 && v) {
            if (ts_precision_parse(v, &c.prec) != 0) { fprintf(stderr, "bad precision %s\n", v); return 2; }
            i++;
            continue;
        }
        if (strcmp(a, "--log-level") == 0 && v) { lvl = v; i++; continue; }
        if (strcmp(a, "--bad-line") == 0) { c.bad_line = 1; continue; }
        if (strcmp(a, "--gzip") == 0) { c.gzip = 1; continue; }
        fprintf(stderr, "unknown or incomplete option %s\n", a);
        it_usage();
        return 2;
#undef OPT_S
#undef OPT_I
    }
    if (!c.urls || !c.db || c.series <= 0 || c.batch_size <= 0) { it_usage(); return 2; }
    int l = ts_log_parse_level(lvl);
    ts_log_set_level(l < 0 ? TS_LOG_WARN : l);
    ts_http_global_init();

    /* URL list */
    char *ubuf = strdup(c.urls);
    const char *urls[16];
    int nu = 0;
    for (char *s = strtok(ubuf, ","); s && nu < 15; s = strtok(NULL, ",")) urls[nu++] = s;
    urls[nu] = NULL;

    /* entity maps: cdn=it, host=h<i> (sorted by key) */
    ts_entity_map *ents = calloc((size_t)c.series, sizeof *ents);
    ts_etag *tags = calloc((size_t)c.series * 2, sizeof *tags);
    char (*kv)[32] = calloc((size_t)c.series, sizeof *kv);
    for (long long i = 0; i < c.series; i++) {
        snprintf(kv[i], sizeof kv[i], "host=h%lld", i);
        tags[2 * i] = (ts_etag){"cdn", "cdn=it", 6};
        tags[2 * i + 1] = (ts_etag){"host", kv[i], (uint32_t)strlen(kv[i])};
        ents[i].tags.tags = &tags[2 * i];
        ents[i].tags.n = 2;
        ents[i].keep = 1;
    }

    ts_loop *loop = ts_loop_new();
    ts_writer_opts o;
    memset(&o, 0, sizeof o);
    o.urls = urls;
    o.user = c.user;
    o.password = c.password;
    o.gzip = c.gzip;
    o.timeout_ms = (long)c.timeout_ms;
    o.max_publish_size = (size_t)c.max_publish;
    o.max_buffer_bytes = (size_t)c.max_buffer;
    o.max_inflight = c.max_inflight;
    o.backoff_min_ms = (long)c.bmin;
    o.backoff_max_ms = (long)c.bmax;
    ts_writer *w = ts_writer_new(loop, &o);
    ts_dest d;
    memset(&d, 0, sizeof d);
    snprintf(d.db, sizeof d.db, "%s", c.db);
    snprintf(d.rp, sizeof d.rp, "%s", c.rp);
    d.precision = c.prec;

    int64_t t0 = ts_mono_ms();
    long long submitted = 0;
    long long half = c.phase2 ? c.points / 2 : c.points;
    it_submit_points(w, &c, &d, ents, 0, half);
    submitted += half;
    if (c.text_lines > 0 || c.bad_line) {
        ts_batch *t = ts_batch_new_text(&d);
        int64_t base = c.start_ms;
        if (c.prec == TS_PREC_S) base /= 1000;
        for (long long i = 0; i < c.text_lines; i++) {
            char line[128];
            int n = snprintf(line, sizeof line, "it_text,src=driver n=%lldi %lld", i, (long long)(base + i));
            ts_batch_add_line(t, line, (size_t)n);
            if (c.bad_line && i == c.text_lines / 2) ts_batch_add_line(t, "it_text,src=driver n=", 21);
        }
        if (c.bad_line && c.text_lines == 0) ts_batch_add_line(t, "it_text,src=driver n=", 21);
        submitted += (long long)ts_batch_points(t);
        ts_writer_submit(w, t);
    }
    if (c.phase2) {
        /* phase 1: written (or bounded wait), report, wait for the go file */
        ts_writer_flush(w);
        int64_t end = ts_mono_ms() + 30000;
        ts_writer_stats s;
        do {
            ts_loop_run_once(loop, 50);
            ts_writer_get_stats(w, &s);
        } while (s.points_pending > 0 && ts_mono_ms() < end);
        it_print(stdout, "1", w, submitted, 0, t0);
        printf("}\n");
        fflush(stdout);
        end = ts_mono_ms() + 120000;
        while (access(c.phase2, F_OK) != 0 && ts_mono_ms() < end) ts_loop_run_once(loop, 50);
        it_submit_points(w, &c, &d, ents, half, c.points);
        submitted += c.points - half;
    }
    size_t lost = ts_writer_drain(w, ts_mono_ms() + c.drain_ms);
    it_print(stdout, "done", w, submitted, lost, t0);
    if (c.query) {
        ts_buf out;
        ts_buf_init(&out);
        char err[512];
        if (ts_influx_query(ts_writer_influx(w), c.db, c.query, "ms", &out, err, sizeof err) == 0) {
            while (out.len > 0 && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == ' ')) out.data[--out.len] = '\0';
            printf(",\"query\":%s", out.data ? out.data : "null");
        } else {
            printf(",\"query_error\":");
            it_json_str(stdout, err);
        }
        ts_buf_free(&out);
    }
    printf("}\n");
    fflush(stdout);
    ts_writer_free(w);
    ts_loop_free(loop);
    ts_http_global_cleanup();
    free(ents);
    free(tags);
    free(kv);
    free(ubuf);
    return 0;
}
