/* C tests of the spool records of compact points (src/spool_rec.c, C core):
 * a batch spooled as compact records and read back gives, record by record,
 * the lines of the spool-off path's encoding (same bytes, NaN/Inf skipped and
 * counted the same) series by series; old line-protocol records beside them
 * stay readable and come back sorted the same way; damaged bodies are
 * refused without a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ts_batch.h"
#include "ts_log.h"
#include "ts_spool.h"
#include "ts_spool_rec.h"
#include "ts_target.h"

static ts_etag et(const char *key, const char *kv) { return (ts_etag){key, kv, (uint32_t)strlen(kv)}; }

#define NSTAT 5
#define NENT 12
static ts_etag st_tags[NSTAT][2], en_tags[NENT][3];
static ts_stat_map stats[NSTAT];
static ts_entity_map ents[NENT];
static char en_kv[NENT][40];

static void maps_init(void) {
    static const char *meas[NSTAT] = {"bandwidth", "conn\\ ections", "ratio", "big", "loc\\,us"};
    for (int i = 0; i < NSTAT; i++) {
        stats[i] = (ts_stat_map){.meas = meas[i], .meas_len = (uint32_t)strlen(meas[i]), .field = "value",
                                 .field_len = 5, .scale = 1.0, .keep = 1, .hook_ref = -2};
    }
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
    stats[4].field_len = 8;
    for (int i = 0; i < NENT; i++) {
        snprintf(en_kv[i], sizeof en_kv[i], "hostname=edge\\ %d", i);
        en_tags[i][0] = et("cachegroup", "cachegroup=cg1");
        en_tags[i][1] = et("hostname", en_kv[i]);
        en_tags[i][2] = et("type", "type=EDGE");
        ents[i] = (ts_entity_map){.tags = {en_tags[i], 3}, .keep = 1};
    }
}

/* A poll-like batch: runs per entity and time, times going back and forth,
 * the same entity in several runs, a run without entity, NaN/Inf here and there. */
static ts_batch *make_batch(ts_precision prec, size_t *points) {
    ts_dest d;
    memset(&d, 0, sizeof d);
    snprintf(d.db, sizeof d.db, "cache_stats");
    d.precision = prec;
    ts_batch *b = ts_batch_new_compact(&d, NULL);
    size_t n = 0;
    for (int r = 0; r < 40; r++) {
        const ts_entity_map *e = r == 7 ? NULL : &ents[(r * 5) % NENT];
        int64_t t = 1764000000000LL + (r % 3 == 0 ? -1 : 1) * (int64_t)r * 977;
        for (int s = 0; s < NSTAT; s++) {
            double v = r * 1000.5 + s;
            if ((r + s) % 17 == 0) v = NAN;
            if ((r + s) % 23 == 0) v = -INFINITY;
            if (s == 2 && r % 5 == 0) v = 1e308;
            if (s == 3 && r == 11) v = -9.3e18;   /* clamped as integer */
            ts_cpoint p = {&stats[s], e, v, t};
            ts_batch_add_compact(b, &p);
            n++;
        }
    }
    *points = n;
    return b;
}

/* The spool-off path: ts_batch_take in publishes of max lines. */
static size_t direct(ts_batch *b, size_t max, ts_buf *out, size_t *invalid) {
    size_t lines = 0;
    *invalid = 0;
    while (ts_batch_points(b) > 0) {
        size_t taken = 0;
        lines += ts_batch_take(b, out, max, &taken, invalid);
    }
    return lines;
}

typedef struct live_seen {
    ts_buf lp;
    size_t lines, records;
} live_seen;

static void on_appended(void *ud, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                        ts_spool_pos at, ts_spool_pos next) {
    live_seen *x = ud;
    (void)d;
    (void)at;
    (void)next;
    size_t inv = 0, n = ts_batch_encode_range(b, from, to, &x->lp, &inv);
    CHECK(n == lines, "a live range encodes to its record's lines: %zu vs %zu", n, lines);
    x->lines += n;
    x->records++;
}

/* ---- a record read back: the record's lines, series by series ---- */

typedef struct lines_of {
    char **v;
    size_t n;
} lines_of;

static lines_of split_lines(const char *p, size_t len) {
    lines_of l = {NULL, 0};
    for (size_t i = 0; i < len; i++) l.n += p[i] == '\n';
    l.v = calloc(l.n ? l.n : 1, sizeof *l.v);
    size_t k = 0;
    for (const char *q = p; q < p + len && k < l.n; k++) {
        const char *nl = memchr(q, '\n', (size_t)(p + len - q));
        l.v[k] = strndup(q, (size_t)(nl - q));
        q = nl + 1;
    }
    return l;
}

static void lines_free(lines_of *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* length of the prefix up to the first unescaped `stop` (or ' ') */
static size_t upto(const char *s, char stop) {
    size_t i = 0;
    for (; s[i]; i++) {
        if (s[i] == '\\' && s[i + 1]) i++;
        else if (s[i] == stop || s[i] == ' ') return i;
    }
    return i;
}

static int same_prefix(const char *a, size_t la, const char *b, size_t lb) { return la == lb && memcmp(a, b, la) == 0; }

/* got holds exactly exp's lines (same bytes, as a multiset), measurement by
 * measurement in ascending order, each series' lines together and in exp's
 * order; strict: the series keys in ascending order too (a text record is
 * sorted by them; a compact record's entities are ordered by their own tags,
 * and an entity's tags merged with a stat's may sort otherwise). Says what
 * is wrong, or NULL. */
static const char *series_order_of(const char *got, size_t glen, const char *exp, size_t elen, int strict) {
    lines_of g = split_lines(got, glen), e = split_lines(exp, elen);
    const char *bad = NULL;
    if (g.n != e.n) bad = "not the same number of lines";
    char **gs = calloc(g.n ? g.n : 1, sizeof *gs), **es = calloc(e.n ? e.n : 1, sizeof *es);
    if (!bad) {
        memcpy(gs, g.v, g.n * sizeof *gs);
        memcpy(es, e.v, e.n * sizeof *es);
        qsort(gs, g.n, sizeof *gs, cmp_str);
        qsort(es, e.n, sizeof *es, cmp_str);
        for (size_t i = 0; i < g.n && !bad; i++)
            if (strcmp(gs[i], es[i]) != 0) bad = "not the same lines";
    }
    for (size_t i = 1; i < g.n && !bad; i++) {
        size_t la = upto(g.v[i - 1], ','), lb = upto(g.v[i], ',');
        int c = memcmp(g.v[i - 1], g.v[i], la < lb ? la : lb);
        if (c > 0 || (c == 0 && la > lb)) bad = "measurements not in ascending order";
        la = upto(g.v[i - 1], ' ');
        lb = upto(g.v[i], ' ');
        c = memcmp(g.v[i - 1], g.v[i], la < lb ? la : lb);
        if (strict && !bad && (c > 0 || (c == 0 && la > lb))) bad = "series keys not in ascending order";
    }
    for (size_t i = 0; i < g.n && !bad; i++) {
        size_t li = upto(g.v[i], ' ');
        /* once a series is left it never comes back */
        int left = 0;
        for (size_t j = i + 1; j < g.n && !bad; j++) {
            int same = same_prefix(g.v[i], li, g.v[j], upto(g.v[j], ' '));
            if (!same) left = 1;
            else if (left) bad = "a series' lines not together";
        }
        /* its lines in exp's order: the k-th of the series in got is the k-th in exp */
        size_t kg = 0, ke = 0;
        for (size_t j = 0; j < i; j++) kg += same_prefix(g.v[i], li, g.v[j], upto(g.v[j], ' '));
        for (size_t j = 0; j < e.n && !bad; j++) {
            if (!same_prefix(g.v[i], li, e.v[j], upto(e.v[j], ' '))) continue;
            if (ke++ == kg) {
                if (strcmp(e.v[j], g.v[i]) != 0) bad = "a series' lines out of their order";
                break;
            }
        }
    }
    free(gs);
    free(es);
    lines_free(&g);
    lines_free(&e);
    return bad;
}

/* Record by record: each holds the lines exp has next, series by series. */
static void read_all(ts_spool_consumer *c, const ts_buf *exp, size_t *lines, int *kinds, int pass) {
    ts_spool_rec r;
    *lines = 0;
    size_t at = 0;
    while (ts_spool_read(c, &r) == 1) {
        size_t end = at;
        for (uint32_t k = 0; k < r.lines && end < exp->len; k++) end = (size_t)((char *)memchr(exp->data + end, '\n', exp->len - end) - exp->data) + 1;
        const char *bad = series_order_of(r.body, r.len, exp->data + at, end - at, r.kind == TS_SPOOL_KIND_LP);
        CHECK(bad == NULL, "pass %d, record of %u lines at line %zu: %s", pass, r.lines, *lines, bad);
        at = end;
        *lines += r.lines;
        kinds[r.kind == TS_SPOOL_KIND_COMPACT]++;
    }
    CHECK(at == exp->len, "pass %d: every line read back", pass);
}

/* Spooled as compact records and read back (in this run, and after a
 * reopen: the full checks), each record holds the lines the spool-off path
 * sends in that publish, series by series. */
static void test_same_bytes(const char *dir, ts_precision prec, size_t max) {
    size_t npts;
    ts_batch *a = make_batch(prec, &npts), *b = make_batch(prec, &npts);
    ts_buf want;
    ts_buf_init(&want);
    size_t inv_direct;
    size_t lines_direct = direct(a, max, &want, &inv_direct);
    CHECK(inv_direct > 5 && lines_direct + inv_direct == npts, "invalid %zu lines %zu", inv_direct, lines_direct);

    ts_spool_opts so;
    memset(&so, 0, sizeof so);
    so.dir = dir;
    so.fsync = TS_SPOOL_FSYNC_NEVER;
    char err[256];
    ts_spool *s = ts_spool_open(&so, err, sizeof err);
    CHECK(s != NULL, "%s", err);
    if (!s) return;
    ts_spool_consumer *c = ts_spool_consumer_open(s, "t", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    /* an old line-protocol record before and after the compact ones */
    static const char old[] = "old,t=b value=2 2\nold,t=a value=1 1\n";   /* not in series order */
    CHECK(ts_spool_append(s, "cache_stats", "", prec, old, sizeof old - 1, 2) == 0);
    ts_buf buf;
    ts_buf_init(&buf);
    ts_batch *rest = NULL;
    size_t spooled = 0, inv_spool = 0;
    live_seen live;
    memset(&live, 0, sizeof live);
    ts_buf_init(&live.lp);
    int all = ts_target_spool_batch(s, b, max, &buf, &rest, &spooled, &inv_spool, on_appended, &live);
    CHECK(all == 1 && rest == NULL);
    CHECK(ts_spool_append(s, "cache_stats", "", prec, old, sizeof old - 1, 2) == 0);
    CHECK(spooled == lines_direct && inv_spool == inv_direct, "spooled %zu invalid %zu", spooled, inv_spool);
    CHECK(live.lp.len == want.len && memcmp(live.lp.data, want.data, want.len) == 0, "live ranges differ");
    CHECK(live.records == (lines_direct + max - 1) / max, "records %zu", live.records);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    printf("  prec %d, %zu lines: %zu bytes of line protocol, %llu bytes appended (with 2 old records)\n", (int)prec,
           lines_direct, want.len, (unsigned long long)st.bytes_appended);
    if (max >= 1000) CHECK(st.bytes_appended * 3 < want.len, "compact records are well under the line protocol");

    for (int pass = 0; pass < 2; pass++) {
        ts_buf exp;
        ts_buf_init(&exp);
        ts_buf_add(&exp, old, sizeof old - 1);
        ts_buf_add(&exp, want.data, want.len);
        ts_buf_add(&exp, old, sizeof old - 1);
        size_t lines;
        int kinds[2] = {0, 0};
        read_all(c, &exp, &lines, kinds, pass);
        CHECK(lines == lines_direct + 4, "pass %d: %zu lines", pass, lines);
        CHECK(kinds[0] == 2 && kinds[1] == (int)live.records, "pass %d: kinds %d %d", pass, kinds[0], kinds[1]);
        ts_buf_free(&exp);
        /* reopen: the segment is then from before the start, checked in full */
        ts_spool_close(s);
        s = ts_spool_open(&so, err, sizeof err);
        c = ts_spool_consumer_open(s, "t", TS_SPOOL_START_OLDEST);
        ts_spool_consumers_done(s);
        ts_spool_get_stats(s, &st);
        CHECK(st.corrupt_records == 0 && st.torn_tails == 0);
    }
    ts_spool_close(s);
    ts_batch_free(a);
    ts_batch_free(b);
    ts_buf_free(&want);
    ts_buf_free(&buf);
    ts_buf_free(&live.lp);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
}

/* Damaged bodies: every cut and every flipped byte is refused or decoded
 * within bounds (ASan watches), never more lines than told. */
static void test_hostile(void) {
    size_t npts;
    ts_batch *b = make_batch(TS_PREC_MS, &npts);
    ts_buf rec, out, want;
    ts_buf_init(&rec);
    ts_buf_init(&out);
    ts_buf_init(&want);
    size_t taken, inv;
    size_t lines = ts_spool_rec_compact(&rec, b, 30, &taken, &inv);
    CHECK(lines == 30 && taken >= 30, "lines %zu taken %zu", lines, taken);
    const char *why = NULL;
    long n = ts_spool_rec_decode((const unsigned char *)rec.data, rec.len, TS_PREC_MS, lines, &want, &why);
    CHECK(n == (long)lines, "decoded %ld: %s", n, why ? why : "");
    int refused = 0;
    for (size_t cut = 0; cut < rec.len; cut++) {
        why = NULL;
        ts_buf_reset(&out);
        if (ts_spool_rec_decode((const unsigned char *)rec.data, cut, TS_PREC_MS, lines, &out, &why) < 0) refused++;
        CHECK(out.len == 0, "a refused body leaves nothing");
    }
    CHECK(refused == (int)rec.len, "every cut refused: %d of %zu", refused, rec.len);
    why = NULL;
    CHECK(ts_spool_rec_decode((const unsigned char *)rec.data, rec.len, TS_PREC_MS, lines + 1, &out, &why) < 0 &&
          why != NULL, "a line count that does not match is refused");
    CHECK(ts_spool_rec_decode((const unsigned char *)rec.data, rec.len, TS_PREC_MS, lines - 1, &out, &why) < 0);
    int ok = 0;
    for (size_t i = 0; i < rec.len; i++)
        for (int bit = 0; bit < 8; bit += 3) {
            rec.data[i] ^= (char)(1 << bit);
            ts_buf_reset(&out);
            why = NULL;
            long k = ts_spool_rec_decode((const unsigned char *)rec.data, rec.len, TS_PREC_MS, lines, &out, &why);
            if (k >= 0) {
                ok++;
                CHECK(k == (long)lines && out.len > 0 && out.data[out.len - 1] == '\n');
            }
            rec.data[i] ^= (char)(1 << bit);
        }
    printf("  %zu-byte record: %d of %zu flips still decoded (values, times)\n", rec.len, ok, rec.len * 3);
    ts_buf_free(&rec);
    ts_buf_free(&out);
    ts_buf_free(&want);
    ts_batch_free(b);
}

/* A line-protocol body sorted in place by series key: escaped spaces and
 * commas are part of the key, each series keeps its lines' order. */
static void test_lp_by_series(void) {
    static const char in[] = "m\\ x,t=b v=1 2\nm\\ x,t=a v=9 1\nm,t=z v=0 5\nm\\ x,t=b v=3 3\nm\\ x,t=a\\ b v=2 4\n";
    static const char want[] = "m,t=z v=0 5\nm\\ x,t=a v=9 1\nm\\ x,t=a\\ b v=2 4\nm\\ x,t=b v=1 2\nm\\ x,t=b v=3 3\n";
    char buf[sizeof in];
    memcpy(buf, in, sizeof in);
    ts_spool_lp_by_series(buf, sizeof in - 1);
    CHECK(memcmp(buf, want, sizeof want) == 0, "sorted: %s", buf);
    const char *bad = series_order_of(buf, sizeof in - 1, in, sizeof in - 1, 1);
    CHECK(bad == NULL, "%s", bad);
    /* and the checker itself tells a body in the encoder's order from one series by series */
    CHECK(series_order_of(in, sizeof in - 1, in, sizeof in - 1, 0) != NULL, "an unsorted body is refused");
}

int main(void) {
    ts_log_set_level(TS_LOG_ERROR);
    maps_init();
    char base[] = "/tmp/ts_spool_rec_XXXXXX";
    if (!mkdtemp(base)) return 1;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/a", base);
    test_same_bytes(dir, TS_PREC_MS, 7);
    test_same_bytes(dir, TS_PREC_S, 10000);
    test_same_bytes(dir, TS_PREC_MS, 1);
    test_hostile();
    test_lp_by_series();
    rmdir(base);
    return check_report("test_spool_rec");
}
