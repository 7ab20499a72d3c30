/* Tests of the target interface and the target list (C test side): two
 * targets driven through ts_target.h (the InfluxDB writer and a recording
 * kind): a batch handed over once, the spool appended once for the targets
 * that read it, copies from memory for the others and for everyone when the
 * spool refuses, live records sent from memory (claimed, never read back),
 * ticks, stats, health, drain, removal and close; the
 * InfluxDB set made from the settings, changed on reload as one transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ts_clock.h"
#include "ts_influx_set.h"
#include "ts_log.h"
#include "ts_target.h"
#include "ts_writer.h"

/* A kind that records what it is handed (the list's side of the contract). */
typedef struct rec {
    int reads_spool, ticks, closed, drained, healthy;
    size_t lines;
    ts_buf got;               /* every line handed over, in order */
    const ts_batch *last;     /* the last batch received (pointer identity) */
    int *closed_flag;
} rec;

static void r_submit(void *self, ts_batch *b) {
    rec *r = self;
    r->last = b;
    r->lines += ts_batch_encode(b, &r->got);
    ts_batch_free(b);
}
static int r_reads(void *self) { return ((rec *)self)->reads_spool; }
static void r_tick(void *self) { ((rec *)self)->ticks++; }
static int r_healthy(void *self) { return ((rec *)self)->healthy; }
static void r_stats(void *self, ts_target_stats *s) { s->written = ((rec *)self)->lines; }
static size_t r_drain(void *self, int64_t deadline) {
    (void)deadline;
    ((rec *)self)->drained++;
    return 7;
}
static void r_close(void *self) {
    rec *r = self;
    *r->closed_flag = 1;
    ts_buf_free(&r->got);
    free(r);
}
static const ts_target_ops rec_ops = {"recorder", r_submit, r_reads, r_tick, r_healthy, r_stats, r_drain, r_close, NULL};

static rec *rec_new(int reads_spool, int *closed_flag) {
    rec *r = calloc(1, sizeof *r);
    r->reads_spool = reads_spool;
    r->healthy = 1;
    r->closed_flag = closed_flag;
    ts_buf_init(&r->got);
    return r;
}

static ts_batch *text_batch(const char *db, const char *lines, size_t n) {
    ts_dest d;
    memset(&d, 0, sizeof d);
    snprintf(d.db, sizeof d.db, "%s", db);
    d.precision = TS_PREC_MS;
    ts_batch *b = ts_batch_new_text(&d);
    ts_buf_add(ts_batch_text_buf(b), lines, strlen(lines));
    ts_batch_text_commit(b, n);
    return b;
}

static const char *LINES = "m,host=a v=1 1000\nm,host=b v=2 1000\nm,host=c v=3 1000\n";

/* Two recorders, no spool: each gets every line; the last one the batch itself. */
static void test_memory_fanout(void) {
    ts_loop *loop = ts_loop_new();
    ts_targets *l = ts_targets_new(loop, NULL, 100, NULL);
    int c1 = 0, c2 = 0;
    rec *a = rec_new(1, &c1), *b = rec_new(0, &c2);
    ts_targets_add(l, ts_target_new(&rec_ops, a, "a"));
    ts_targets_add(l, ts_target_new(&rec_ops, b, "b"));
    ts_batch *x = text_batch("db1", LINES, 3);
    ts_targets_submit(l, x);
    CHECK(a->lines == 3 && b->lines == 3, "a %zu b %zu", a->lines, b->lines);
    CHECK(a->got.len == strlen(LINES) && memcmp(a->got.data, LINES, a->got.len) == 0);
    CHECK(b->got.len == a->got.len && memcmp(b->got.data, a->got.data, a->got.len) == 0);
    CHECK(b->last == x, "the last target takes the batch itself");
    CHECK(a->last != x, "the others a copy");
    ts_targets_tick(l);
    CHECK(a->ticks == 1 && b->ticks == 1);
    CHECK(ts_targets_drain(l, ts_mono_ms()) == 14, "drain sums every target's loss");
    CHECK(a->drained == 1 && b->drained == 1);
    ts_target *t = ts_targets_take(l, "a");
    CHECK(t && ts_targets_count(l) == 1 && ts_targets_find(l, "a") == NULL);
    ts_targets_submit(l, text_batch("db1", LINES, 3));
    CHECK(a->lines == 3 && b->lines == 6, "a removed target gets nothing: a %zu b %zu", a->lines, b->lines);
    ts_target_close(t);
    CHECK(c1 == 1 && c2 == 0);
    ts_targets_free(l);
    CHECK(c2 == 1, "the list closes what it holds");
    ts_loop_free(loop);
}

/* A spool in dir with the default options (CHECKed; NULL when it did not open). */
static ts_spool *open_spool(const char *dir) {
    ts_spool_opts so;
    memset(&so, 0, sizeof so);
    so.dir = dir;
    char err[256];
    ts_spool *s = ts_spool_open(&so, err, sizeof err);
    CHECK(s != NULL, "%s", err);
    return s;
}

static int count_records(ts_spool *s, const char *name, size_t *lines) {
    ts_spool_consumer *c = ts_spool_consumer_open(s, name, TS_SPOOL_START_OLDEST);
    ts_spool_rec r;
    int n = 0;
    *lines = 0;
    while (ts_spool_read(c, &r) == 1) {
        n++;
        *lines += r.lines;
    }
    ts_spool_consumer_close(c);
    return n;
}

/* A spool reader and a memory-only target: one append in records of
 * record_lines lines, the copy from memory to the other only. */
static void test_spool_once(const char *dir) {
    ts_loop *loop = ts_loop_new();
    ts_spool *s = open_spool(dir);
    if (!s) return;
    ts_targets *l = ts_targets_new(loop, s, 2, NULL);
    int c1 = 0, c2 = 0;
    rec *rd = rec_new(1, &c1), *mem = rec_new(0, &c2);
    ts_targets_add(l, ts_target_new(&rec_ops, rd, "reader"));
    ts_targets_add(l, ts_target_new(&rec_ops, mem, "memory"));
    ts_targets_submit(l, text_batch("db1", LINES, 3));
    CHECK(rd->lines == 0, "the reader reads the spool: nothing from memory (%zu)", rd->lines);
    CHECK(mem->lines == 3 && memcmp(mem->got.data, LINES, mem->got.len) == 0, "memory %zu", mem->lines);
    CHECK(ts_targets_spooled(l) == 3);
    size_t lines;
    int recs = count_records(s, "check", &lines);
    CHECK(recs == 2 && lines == 3, "3 lines in records of at most 2: %d records, %zu lines", recs, lines);
    ts_targets_free(l);
    ts_spool_close(s);
    ts_loop_free(loop);
}

/* A recorder that sends from memory (ts_target_ops.live): it claims what
 * it keeps in its own consumer, holds a reference to each record's batch
 * and encodes the record's points only at the end (as a writer does at its
 * publish), so a batch freed or reused under it would show. */
typedef struct lrec {
    rec r;
    ts_spool_consumer *c;
    int records;
    ts_spool_pos at[8];
    ts_batch *held[8];
    size_t from[8], to[8], want[8];
} lrec;
static int l_live(void *self, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                  ts_spool_pos at, ts_spool_pos next) {
    lrec *x = self;
    (void)d;
    if (!x->r.healthy || x->records >= 8) return 0;
    ts_batch_retain(b);
    x->held[x->records] = b;
    x->from[x->records] = from;
    x->to[x->records] = to;
    x->want[x->records] = lines;
    x->at[x->records] = at;
    x->records++;
    ts_spool_claim(x->c, at, next);
    return 1;
}
/* What the held records encode to, in order; the references dropped. */
static void l_send(lrec *x) {
    for (int i = 0; i < x->records; i++) {
        if (!x->held[i]) continue;
        size_t invalid = 0, n = ts_batch_encode_range(x->held[i], x->from[i], x->to[i], &x->r.got, &invalid);
        CHECK(n == x->want[i], "record %d: %zu lines encoded, %zu told", i, n, x->want[i]);
        x->r.lines += n;
        ts_batch_free(x->held[i]);
        x->held[i] = NULL;
    }
}
static void l_close(void *self) {
    lrec *x = self;
    l_send(x);
    ts_spool_consumer_close(x->c);
    *x->r.closed_flag = 1;
    ts_buf_free(&x->r.got);
    free(x);
}
static const ts_target_ops lrec_ops = {"live", r_submit, r_reads, r_tick, r_healthy, r_stats, r_drain, l_close, l_live};

static lrec *lrec_new(ts_spool *s, const char *name, int *closed_flag) {
    lrec *x = calloc(1, sizeof *x);
    x->r.reads_spool = 1;
    x->r.healthy = 1;
    x->r.closed_flag = closed_flag;
    ts_buf_init(&x->r.got);
    x->c = ts_spool_consumer_open(s, name, TS_SPOOL_START_OLDEST);
    return x;
}

/* Live records: every healthy reader with a live op gets each record the
 * spool took (a reference to the batch's points, no copy), claims it and
 * never reads it back; an unhealthy one and a reader without the op
 * read every record back; an acknowledged claim moves the position. */
static void test_live(const char *dir) {
    ts_loop *loop = ts_loop_new();
    ts_spool *s = open_spool(dir);
    if (!s) return;
    ts_targets *l = ts_targets_new(loop, s, 2, NULL);
    int c[4] = {0};
    lrec *a = lrec_new(s, "a", &c[0]), *sick = lrec_new(s, "sick", &c[1]), *z = lrec_new(s, "z", &c[3]);
    sick->r.healthy = 0;
    rec *plain = rec_new(1, &c[2]);
    ts_targets_add(l, ts_target_new(&lrec_ops, a, "a"));
    ts_targets_add(l, ts_target_new(&lrec_ops, sick, "sick"));
    ts_targets_add(l, ts_target_new(&rec_ops, plain, "plain"));
    ts_targets_add(l, ts_target_new(&lrec_ops, z, "z"));
    ts_targets_submit(l, text_batch("db1", LINES, 3));
    ts_targets_submit(l, text_batch("db1", LINES, 3));
    CHECK(a->records == 4 && z->records == 4, "4 records of at most 2 lines live: a %d z %d", a->records, z->records);
    CHECK(a->held[0] == z->held[0] && a->held[0] != a->held[2], "both hold the same batches, no copies");
    l_send(a);
    l_send(z);
    CHECK(a->r.lines == 6 && z->r.lines == 6 && sick->records == 0 && plain->lines == 0);
    CHECK(a->r.got.len == 2 * strlen(LINES) && memcmp(a->r.got.data, LINES, strlen(LINES)) == 0);
    CHECK(z->r.got.len == a->r.got.len && memcmp(z->r.got.data, a->r.got.data, a->r.got.len) == 0);
    ts_spool_rec r;
    CHECK(ts_spool_read(a->c, &r) == 0, "a claimed record is never read back");
    int n = 0;
    while (ts_spool_read(sick->c, &r) == 1) n++;
    CHECK(n == 4, "the unhealthy reader reads every record back: %d", n);
    ts_spool_pos before = ts_spool_acked(a->c);
    ts_spool_ack_one(a->c, a->at[1]);
    CHECK(ts_spool_pos_cmp(ts_spool_acked(a->c), before) == 0, "out of order: the position waits for the first");
    ts_spool_ack_one(a->c, a->at[0]);
    CHECK(ts_spool_pos_cmp(ts_spool_acked(a->c), before) > 0, "both done: the position moves");
    CHECK(ts_targets_spooled(l) == 6);
    ts_targets_free(l);
    CHECK(c[0] && c[1] && c[2] && c[3]);
    ts_spool_close(s);
    ts_loop_free(loop);
}

/* The spool refuses (its directory cannot be made): every target gets it from memory. */
static void test_spool_refuses(const char *base) {
    char file[512], dir[600];
    snprintf(file, sizeof file, "%s/not-a-dir", base);
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    snprintf(dir, sizeof dir, "%s/spool", file);
    ts_loop *loop = ts_loop_new();
    ts_spool *s = open_spool(dir);
    if (!s) return;
    ts_targets *l = ts_targets_new(loop, s, 2, NULL);
    int c1 = 0, c2 = 0;
    rec *r1 = rec_new(1, &c1), *r2 = rec_new(1, &c2);
    ts_targets_add(l, ts_target_new(&rec_ops, r1, "r1"));
    ts_targets_add(l, ts_target_new(&rec_ops, r2, "r2"));
    ts_targets_submit(l, text_batch("db1", LINES, 3));
    CHECK(r1->lines == 3 && r2->lines == 3, "refused: r1 %zu r2 %zu", r1->lines, r2->lines);
    CHECK(r1->got.len == strlen(LINES) && memcmp(r1->got.data, LINES, r1->got.len) == 0);
    CHECK(r2->got.len == strlen(LINES) && memcmp(r2->got.data, LINES, r2->got.len) == 0);
    CHECK(ts_targets_spooled(l) == 0);
    ts_targets_free(l);
    ts_spool_close(s);
    ts_loop_free(loop);
}

/* The InfluxDB kind beside a recorder: a writer without servers keeps what
 * it is handed, tells it in its stats, is not healthy, and its drain gives
 * up at the deadline and counts the points. */
static void test_influx_kind(void) {
    ts_loop *loop = ts_loop_new();
    ts_targets *l = ts_targets_new(loop, NULL, 100, NULL);
    const char *none[] = {NULL};
    ts_writer_opts o;
    memset(&o, 0, sizeof o);
    o.urls = none;
    ts_writer *w = ts_writer_new(loop, &o);
    int c2 = 0;
    rec *r = rec_new(0, &c2);
    ts_targets_add(l, ts_writer_target(w, "influx"));
    ts_targets_add(l, ts_target_new(&rec_ops, r, "rec"));
    ts_target *ti = ts_targets_find(l, "influx");
    CHECK(ti && strcmp(ts_target_kind(ti), "influxdb") == 0 && ts_target_self(ti) == w);
    ts_targets_submit(l, text_batch("db1", LINES, 3));
    ts_target_stats st;
    ts_target_stats_get(ti, &st);
    CHECK(st.pending == 3, "the writer holds the 3 points: %llu", (unsigned long long)st.pending);
    CHECK(r->lines == 3);
    CHECK(!ts_target_healthy(ti), "no servers: not healthy");
    ts_targets_tick(l);
    CHECK(r->ticks == 1);
    size_t lost = ts_targets_drain(l, ts_mono_ms() + 50);
    ts_target_stats_get(ti, &st);
    CHECK(lost == 3 + 7, "3 from the writer, 7 from the recorder: %zu", lost);
    CHECK(st.dropped == 3 && st.pending == 0, "dropped %llu pending %llu", (unsigned long long)st.dropped,
          (unsigned long long)st.pending);
    ts_targets_free(l);
    CHECK(c2 == 1);
    ts_loop_free(loop);
}

static int has(const ts_targets *l, const char *name) { return ts_targets_find(l, name) != NULL; }

/* Failover -> mirror [A, B] -> mirror [B]; then a change one of whose new
 * targets cannot open its spool position changes nothing. */
static void test_influx_set(const char *dir) {
    ts_loop *loop = ts_loop_new();
    ts_spool *sp = open_spool(dir);
    if (!sp) return;
    ts_targets *l = ts_targets_new(loop, sp, 100, NULL);
    ts_influx_set *x = ts_influx_set_new(loop, l, sp, NULL);
    char a[] = "http://127.0.0.1:1", b[] = "http://127.0.0.1:2", c[] = "http://127.0.0.1:3";
    char mirror[] = "mirror", failover[] = "failover";
    char *urls[4] = {a, NULL, NULL, NULL};
    ts_settings s;
    memset(&s, 0, sizeof s);
    s.shutdown_timeout = 0.05;
    s.influxdb.urls = urls;
    s.influxdb.nurls = 1;
    s.influxdb.mode = failover;
    CHECK(ts_influx_set_apply(x, &s, 0) == 0);
    CHECK(ts_targets_count(l) == 1 && has(l, "influx"));
    ts_writer *first = ts_influx_set_first(x);
    CHECK(first && ts_writer_reads_spool(first));

    urls[1] = b;
    s.influxdb.nurls = 2;
    s.influxdb.mode = mirror;
    CHECK(ts_influx_set_apply(x, &s, 1) == 0);
    CHECK(ts_targets_count(l) == 2 && has(l, "influx:http://127.0.0.1:1") && has(l, "influx:http://127.0.0.1:2"),
          "%d targets", ts_targets_count(l));
    CHECK(!has(l, "influx") && ts_influx_set_retiring(x) == 1, "the failover target retires");
    ts_influx_set_step(x);
    CHECK(ts_influx_set_retiring(x) == 0, "holding nothing, it closes at the next step");
    ts_target *tb = ts_targets_find(l, "influx:http://127.0.0.1:2");

    urls[0] = b;
    urls[1] = NULL;
    s.influxdb.nurls = 1;
    CHECK(ts_influx_set_apply(x, &s, 1) == 0);
    CHECK(ts_targets_count(l) == 1 && ts_targets_find(l, "influx:http://127.0.0.1:2") == tb, "B kept as it was");
    CHECK(ts_influx_set_first(x) == ts_target_self(tb));
    CHECK(ts_influx_set_retiring(x) == 1, "A retires");
    /* listed again before it closed: the same target comes back */
    urls[1] = a;
    s.influxdb.nurls = 2;
    CHECK(ts_influx_set_apply(x, &s, 1) == 0);
    CHECK(ts_targets_count(l) == 2 && ts_influx_set_retiring(x) == 0 && has(l, "influx:http://127.0.0.1:1"));
    urls[1] = NULL;
    s.influxdb.nurls = 1;
    CHECK(ts_influx_set_apply(x, &s, 1) == 0);
    ts_influx_set_step(x);
    CHECK(ts_targets_count(l) == 1 && ts_influx_set_retiring(x) == 0, "A closed");

    /* C's position is held open elsewhere: adding A and C is refused as a whole */
    ts_spool_consumer *held = ts_spool_consumer_open(sp, "influx:http://127.0.0.1:3", TS_SPOOL_START_END);
    CHECK(held != NULL);
    urls[1] = a;
    urls[2] = c;
    s.influxdb.nurls = 3;
    CHECK(ts_influx_set_apply(x, &s, 1) == -1);
    CHECK(ts_targets_count(l) == 1 && ts_targets_find(l, "influx:http://127.0.0.1:2") == tb,
          "nothing joined: %d targets", ts_targets_count(l));
    ts_spool_consumer_close(held);
    CHECK(ts_influx_set_apply(x, &s, 1) == 0);
    CHECK(ts_targets_count(l) == 3, "once it can, all of it joins: %d", ts_targets_count(l));

    CHECK(ts_influx_set_free(x, ts_mono_ms()) == 0);
    ts_targets_free(l);
    ts_spool_close(sp);
    ts_loop_free(loop);
}

int main(void) {
    ts_log_set_level(TS_LOG_ERROR);
    char base[] = "/tmp/ts_target_XXXXXX";
    if (!mkdtemp(base)) return 1;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/spool", base);
    test_memory_fanout();
    test_spool_once(dir);
    test_spool_refuses(base);
    char dir3[600];
    snprintf(dir3, sizeof dir3, "%s/spool3", base);
    test_live(dir3);
    test_influx_kind();
    char dir2[600];
    snprintf(dir2, sizeof dir2, "%s/spool2", base);
    test_influx_set(dir2);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) printf("could not remove %s\n", base);
    return check_report("test_target");
}
