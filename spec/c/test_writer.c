/* C unit tests of module ts_net (event loop, HTTP client, InfluxDB writer).
 * No InfluxDB needed: transport errors come from loopback listeners that
 * accept and close, or accept nothing (black hole), or a refused port.
 * With `--it ...` the same binary is the integration driver (it_writer.c)
 * that spec/runtime/writer_spec.lua runs against a real influxd. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ts_http.h"
#include "ts_log.h"
#include "ts_writer.h"

#include "check.h"

#include "it_writer.c"

/* ---- fixtures: points, maps, owners ---- */

static ts_stat_map g_stat = {"it_bw", 5, "value", 5, {NULL, 0}, 1.0, 1, -2, 0, 0, NULL};
static ts_etag g_tags[2][2];
static ts_entity_map g_ent[2];
enum { NMANY = 300 };
static ts_stat_map g_many[NMANY];   /* distinct stats "s0".."s299" for the compact-batch tests */

static void init_maps(void) {
    static char names[NMANY][16];
    for (int i = 0; i < NMANY; i++) {
        snprintf(names[i], sizeof names[i], "s%d", i);
        g_many[i] = g_stat;
        g_many[i].meas = names[i];
        g_many[i].meas_len = (uint32_t)strlen(names[i]);
    }
    static char kv[2][16];
    for (int i = 0; i < 2; i++) {
        snprintf(kv[i], sizeof kv[i], "host=h%d", i);
        g_tags[i][0] = (ts_etag){"cdn", "cdn=it", 6};
        g_tags[i][1] = (ts_etag){"host", kv[i], (uint32_t)strlen(kv[i])};
        g_ent[i].tags.tags = g_tags[i];
        g_ent[i].tags.n = 2;
        g_ent[i].keep = 1;
    }
}

static ts_cpoint pt(int ent, double v, int64_t t) { return (ts_cpoint){&g_stat, &g_ent[ent], v, t}; }

typedef struct owner_count { int retain, release; } owner_count;
static void own_retain(void *o) { ((owner_count *)o)->retain++; }
static void own_release(void *o) { ((owner_count *)o)->release++; }

static ts_dest mkdest(const char *db, const char *rp, ts_precision p) {
    ts_dest d;
    memset(&d, 0, sizeof d);
    snprintf(d.db, sizeof d.db, "%s", db);
    snprintf(d.rp, sizeof d.rp, "%s", rp);
    d.precision = p;
    return d;
}

/* Evict seam recorder: keeps every body offered. */
typedef struct evrec {
    int n;
    size_t lines[64];
    ts_buf bodies[64];
    int keep;   /* return value */
} evrec;
static int ev_cb(void *ud, const ts_dest *d, const char *body, size_t len, size_t lines) {
    (void)d;
    evrec *e = ud;
    if (e->n < 64) {
        e->lines[e->n] = lines;
        ts_buf_init(&e->bodies[e->n]);
        ts_buf_add(&e->bodies[e->n], body, len);
        e->n++;
    }
    return e->keep;
}
static void evrec_free(evrec *e) {
    for (int i = 0; i < e->n; i++) ts_buf_free(&e->bodies[i]);
    e->n = 0;
}
static size_t count_nl(const ts_buf *b) {
    size_t n = 0;
    for (size_t i = 0; i < b->len; i++) n += b->data[i] == '\n';
    return n;
}

/* ---- loopback listeners ---- */

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) { perror("listen"); exit(2); }
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A black hole: a listener nobody accepts on, so a request to it is never
 * answered; urls is a one-URL list of it for ts_writer_opts. */
typedef struct blackhole {
    int fd;
    char url[64];
    const char *urls[2];
} blackhole;

static void blackhole_open(blackhole *b) {
    int port;
    b->fd = listen_any(&port);
    snprintf(b->url, sizeof b->url, "http://127.0.0.1:%d", port);
    b->urls[0] = b->url;
    b->urls[1] = NULL;
}

/* The set-up the black-hole tests share: a loop, a black hole, and writer
 * options whose one URL is it (the rest zero, for the test to set). */
static ts_loop *blackhole_setup(blackhole *b, ts_writer_opts *o) {
    blackhole_open(b);
    memset(o, 0, sizeof *o);
    o->urls = b->urls;
    return ts_loop_new();
}

/* Accepts, optionally reads the request head, then closes: the client sees
 * an empty reply (a transport error), never an HTTP answer. */
typedef struct lsn {
    ts_loop *loop;
    int fd, port;
    int accepts;
    int read_head;
    int cfd;
    ts_buf head;
} lsn;

static void on_client(void *ud) {
    lsn *s = ud;
    char buf[65536];
    ssize_t n = read(s->cfd, buf, sizeof buf);
    if (n > 0) ts_buf_add(&s->head, buf, (size_t)n);
    if (n <= 0 || (s->head.data && strstr(s->head.data, "\r\n\r\n"))) {
        ts_loop_watch_fd(s->loop, s->cfd, NULL, NULL);
        close(s->cfd);
        s->cfd = -1;
    }
}

static void on_accept(void *ud) {
    lsn *s = ud;
    int c;
    while ((c = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        s->accepts++;
        if (s->read_head && s->cfd < 0 && !s->head.len) {
            s->cfd = c;
            ts_loop_watch_fd(s->loop, c, on_client, s);
        } else {
            close(c);
        }
    }
}

static void lsn_start(lsn *s, ts_loop *l, int read_head) {
    memset(s, 0, sizeof *s);
    s->loop = l;
    s->cfd = -1;
    s->read_head = read_head;
    ts_buf_init(&s->head);
    s->fd = listen_any(&s->port);
    ts_loop_watch_fd(l, s->fd, on_accept, s);
}

static void lsn_stop(lsn *s) {
    ts_loop_watch_fd(s->loop, s->fd, NULL, NULL);
    if (s->cfd >= 0) { ts_loop_watch_fd(s->loop, s->cfd, NULL, NULL); close(s->cfd); }
    close(s->fd);
    ts_buf_free(&s->head);
}

static void run_for(ts_loop *l, int ms) {
    int64_t end = ts_mono_ms() + ms;
    while (ts_mono_ms() < end) ts_loop_run_once(l, 20);
}

/* ---- tests ---- */

static void test_urlencode(void) {
    ts_buf b;
    ts_buf_init(&b);
    const char *s = "a b/c?d=\xc3\xa9~._-Z9&+%";
    ts_http_urlencode(&b, s, strlen(s));
    CHECK(strcmp(b.data, "a%20b%2Fc%3Fd%3D%C3%A9~._-Z9%26%2B%25") == 0);
    ts_buf_reset(&b);
    ts_http_urlencode(&b, "", 0);
    CHECK(b.len == 0);
    ts_buf_free(&b);
}

static void test_rejected_count(void) {
    /* texts as influxd 1.6.7 sends them */
    CHECK_EQ_U(ts_influx_rejected_count("partial write: unable to parse 'bad line here': invalid field format\n"
                                        "unable to parse 'bad2': missing fields dropped=0", 4), 2);
    CHECK_EQ_U(ts_influx_rejected_count("partial write: field type conflict: input field \"v\" on measurement "
                                        "\"m\" is type integer, already exists as type float dropped=1", 2), 1);
    CHECK_EQ_U(ts_influx_rejected_count("partial write: points beyond retention policy dropped=2", 10), 2);
    CHECK_EQ_U(ts_influx_rejected_count("something else entirely", 7), 7);
    CHECK_EQ_U(ts_influx_rejected_count("partial write: points beyond retention policy dropped=99", 10), 10);
}

static int g_order[8], g_norder;
static void tmark(void *ud) { g_order[g_norder++] = (int)(intptr_t)ud; }

static void test_timers(void) {
    ts_loop *l = ts_loop_new();
    int64_t now = ts_mono_ms();
    g_norder = 0;
    ts_loop_timer(l, now + 60, tmark, (void *)4);
    ts_loop_timer(l, now + 20, tmark, (void *)1);
    int c = ts_loop_timer(l, now + 30, tmark, (void *)99);
    ts_loop_timer(l, now + 40, tmark, (void *)2);
    ts_loop_timer(l, now + 40, tmark, (void *)3);   /* same deadline: after 2 */
    ts_loop_timer_cancel(l, c);
    int64_t t0 = ts_mono_ms();
    ts_loop_run_once(l, 5000);                       /* must wake for the 20 ms timer */
    int64_t dt = ts_mono_ms() - t0;
    CHECK(dt < 1000);
    CHECK(g_norder == 1 && g_order[0] == 1);
    for (int i = 0; i < 100 && g_norder < 4; i++) ts_loop_run_once(l, 5000);
    CHECK(g_norder == 4);
    CHECK(g_order[1] == 2 && g_order[2] == 3 && g_order[3] == 4);
    CHECK(ts_mono_ms() - now >= 60);
    /* nothing due: run_once waits max_wait_ms */
    t0 = ts_mono_ms();
    ts_loop_run_once(l, 80);
    dt = ts_mono_ms() - t0;
    CHECK(dt >= 70 && dt < 1000);
    ts_loop_free(l);
}

static int g_pipe_hits;
static void on_pipe(void *ud) {
    int fd = (int)(intptr_t)ud;
    char b[16];
    while (read(fd, b, sizeof b) > 0) {}
    g_pipe_hits++;
}

static void test_watch_fd(void) {
    ts_loop *l = ts_loop_new();
    int p[2];
    CHECK(pipe2(p, O_NONBLOCK) == 0);
    ts_loop_watch_fd(l, p[0], on_pipe, (void *)(intptr_t)p[0]);
    int64_t t0 = ts_mono_ms();
    ts_loop_run_once(l, 100);
    CHECK(g_pipe_hits == 0);
    CHECK(ts_mono_ms() - t0 >= 90);
    CHECK(write(p[1], "x", 1) == 1);
    t0 = ts_mono_ms();
    ts_loop_run_once(l, 5000);
    CHECK(g_pipe_hits == 1);
    CHECK(ts_mono_ms() - t0 < 1000);
    ts_loop_watch_fd(l, p[0], NULL, NULL);
    CHECK(write(p[1], "y", 1) == 1);
    ts_loop_run_once(l, 50);
    CHECK(g_pipe_hits == 1);   /* unwatched */
    close(p[0]);
    close(p[1]);
    ts_loop_free(l);
}

static int g_done_code = -1, g_done_calls;
static void on_done_rec(void *ud, ts_http_result *r) {
    (void)ud;
    g_done_code = r->curl_code;
    g_done_calls++;
}

static void test_http_errors(void) {
    int bport;
    int bh = listen_any(&bport);   /* black hole: never accepted, never answered */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", bport);
    ts_http_req rq;
    memset(&rq, 0, sizeof rq);
    rq.url = url;
    rq.opts.timeout_ms = 200;
    ts_http_result r;
    ts_http_result_init(&r);
    int64_t t0 = ts_mono_ms();
    CHECK(ts_http_perform(&rq, &r) == -1);
    int64_t dt = ts_mono_ms() - t0;
    CHECK(r.curl_code == CURLE_OPERATION_TIMEDOUT);
    CHECK(r.status == 0);
    CHECK(r.errmsg[0] != '\0');
    CHECK(dt >= 150 && dt < 2000);
    ts_http_result_free(&r);

    rq.url = "http://127.0.0.1:1/";
    ts_http_result_init(&r);
    CHECK(ts_http_perform(&rq, &r) == -1);
    CHECK(r.curl_code == CURLE_COULDNT_CONNECT);
    ts_http_result_free(&r);

    /* loop free aborts what is in flight, and on_done says so */
    ts_loop *l = ts_loop_new();
    rq.url = url;
    rq.opts.timeout_ms = 10000;
    rq.on_done = on_done_rec;
    CHECK(ts_http_start(l, &rq) == 0);
    CHECK(ts_loop_running(l) == 1);
    run_for(l, 50);
    CHECK(g_done_calls == 0);
    ts_loop_free(l);
    CHECK(g_done_calls == 1);
    CHECK(g_done_code == CURLE_ABORTED_BY_CALLBACK);
    close(bh);
}

/* 25,001 compact points, max_publish_size 10,000: three chunks in flight to
 * a black hole; the shutdown deadline hands them to the spool seam. */
static void test_chunking(void) {
    blackhole bh;
    ts_writer_opts o;
    ts_loop *l = blackhole_setup(&bh, &o);
    evrec ev = {0};
    ev.keep = 1;
    o.max_publish_size = 10000;
    o.max_inflight = 3;
    o.evict = ev_cb;
    o.evict_ud = &ev;
    ts_writer *w = ts_writer_new(l, &o);
    owner_count oc = {0, 0};
    ts_map_owner own = {own_retain, own_release, &oc};
    ts_dest d = mkdest("cache_stats", "", TS_PREC_MS);
    ts_batch *b = ts_batch_new_compact(&d, &own);
    CHECK(oc.retain == 1);
    for (int i = 0; i < 25001; i++) {
        ts_cpoint p = pt(i & 1, i * 0.25, 1600000000000LL + i);
        ts_batch_add_compact(b, &p);
    }
    CHECK_EQ_U(ts_batch_points(b), 25001);
    size_t held = ts_batch_bytes(b);
    CHECK(held >= 25001 * 12);
    ts_writer_submit(w, b);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_pending, 25001);
    CHECK_EQ_U(s.bytes_pending, held);
    ts_writer_flush(w);
    CHECK(ts_loop_running(l) == 3);
    CHECK(oc.release == 1);          /* fully encoded: the maps are no longer needed */
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_pending, 25001);
    CHECK_EQ_U(s.bytes_pending, 0);  /* in flight is bounded by max_inflight, not held */
    run_for(l, 50);
    size_t lost = ts_writer_drain(w, ts_mono_ms() + 100);
    CHECK_EQ_U(lost, 0);             /* all three went to the spool seam */
    CHECK(ev.n == 3);
    size_t tot = 0;
    for (int i = 0; i < ev.n; i++) {
        tot += ev.lines[i];
        CHECK_EQ_U(count_nl(&ev.bodies[i]), ev.lines[i]);
    }
    CHECK_EQ_U(tot, 25001);
    if (ev.n == 3) {
        /* oldest first */
        CHECK_EQ_U(ev.lines[0], 10000);
        CHECK_EQ_U(ev.lines[1], 10000);
        CHECK_EQ_U(ev.lines[2], 5001);
        CHECK(strncmp(ev.bodies[0].data, "it_bw,cdn=it,host=h0 value=0 1600000000000\n"
                                         "it_bw,cdn=it,host=h1 value=0.25 1600000000001\n", 89) == 0);
        CHECK(strstr(ev.bodies[2].data, "it_bw,cdn=it,host=h0 value=6250 1600000025000\n") != NULL);
    }
    evrec_free(&ev);
    ts_writer_free(w);
    ts_loop_free(l);
    close(bh.fd);
    CHECK(oc.retain == oc.release);
}

/* The compact batch form: a TM-shaped poll (every cache lists the same stats
 * at one time stamp) costs ~12 bytes per point, and whatever the shape
 * (entities alternating, time stamps changing inside an entity, a stat order
 * that changes, 300 distinct stats, NaN) the lines are exactly those of the
 * points encoded one by one. */
static void test_compact_form(void) {
    enum { NSTAT = NMANY };
    ts_stat_map *st = g_many;
    ts_dest d = mkdest("cache_stats", "", TS_PREC_MS);

    /* TM shape: 2000 caches x 40 stats, one time per cache */
    ts_batch *b = ts_batch_new_compact(&d, NULL);
    size_t n = 0;
    for (int c = 0; c < 2000; c++)
        for (int k = 0; k < 40; k++, n++) {
            ts_cpoint p = {&st[k], &g_ent[c & 1], c * 40.0 + k, 1600000000000LL + c};
            ts_batch_add_compact(b, &p);
        }
    CHECK_EQ_U(ts_batch_points(b), n);
    CHECK(ts_batch_bytes(b) < 13 * n);
    CHECK(ts_batch_bytes(b) >= 12 * n);
    ts_batch_free(b);

    /* any shape: same lines as the points one by one */
    b = ts_batch_new_compact(&d, NULL);
    ts_buf want, got;
    ts_buf_init(&want);
    ts_buf_init(&got);
    uint32_t x = 12345;
    size_t nvalid = 0;
    for (int i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        int ent = (x >> 8) & 1;
        int64_t t = 1600000000000LL + (i / 7) * ((x >> 20) & 1 ? 1 : -3);
        double v = (x >> 12) % 97 == 0 ? NAN : (double)(x >> 5) / 8.0;
        ts_cpoint p = {&st[i % 41 == 0 ? (int)((x >> 3) % NSTAT) : i % 40], &g_ent[i % 50 < 25 ? 0 : ent], v, t};
        ts_batch_add_compact(b, &p);
        if (ts_lp_encode_compact(&want, &p, TS_PREC_MS) == 0) nvalid++;
    }
    CHECK_EQ_U(ts_batch_encode(b, &got), nvalid);
    CHECK(nvalid > 19000 && nvalid < 20000);
    CHECK_EQ_U(got.len, want.len);
    CHECK(got.len == want.len && memcmp(got.data, want.data, got.len) == 0);
    ts_buf_free(&want);
    ts_buf_free(&got);
    ts_batch_free(b);
}

/* A batch the writer has encoded comes back from ts_writer_new_compact with
 * its arrays, and nothing of its old contents (stat index, runs, owner)
 * leaks into the lines of the new one. */
static void test_recycled_batch(void) {
    enum { NSTAT = NMANY };
    ts_stat_map *st = g_many;
    ts_loop *l = ts_loop_new();
    ts_writer_opts o = {0};   /* no URLs: chunks wait in the retry queue, batches are done with */
    ts_writer *w = ts_writer_new(l, &o);
    ts_dest d = mkdest("cache_stats", "", TS_PREC_MS);
    owner_count oc = {0, 0};
    ts_map_owner own = {own_retain, own_release, &oc};

    ts_batch *a = ts_batch_pool_get(ts_writer_pool(w), &d, &own, 0, 0);   /* nothing spare yet: a new one */
    for (int c = 0; c < 2; c++)
        for (int k = 0; k < NSTAT / 2; k++) {
            ts_cpoint p = {&st[k], &g_ent[c], k, 1600000000000LL + c};
            ts_batch_add_compact(a, &p);
        }
    ts_writer_submit(w, a);
    ts_writer_flush(w);
    CHECK_EQ_U(oc.retain, 1);
    CHECK_EQ_U(oc.release, 1);   /* encoded: the maps are free to go */

    ts_dest d2 = mkdest("other", "rp", TS_PREC_S);
    ts_batch *b = ts_batch_pool_get(ts_writer_pool(w), &d2, &own, 50, 5);
    CHECK(b == a);
    CHECK_EQ_U(oc.retain, 2);
    CHECK_EQ_U(ts_batch_points(b), 0);
    CHECK(strcmp(ts_batch_dest(b)->db, "other") == 0 && strcmp(ts_batch_dest(b)->rp, "rp") == 0);
    /* a stat of the old batch among new ones that take its old index (a stale
     * lookup slot would hand that index out); entities interleaved; past the
     * old capacity */
    ts_buf want, got;
    ts_buf_init(&want);
    ts_buf_init(&got);
    for (int i = 0; i < 5000; i++) {
        int k = i % 13 == 2 ? 5 : NSTAT / 2 + (i * 7 + 3) % 101;
        ts_cpoint p = {&st[k], &g_ent[(i / 3) & 1], i * 0.5, 1700000000000LL + i / 9};
        ts_batch_add_compact(b, &p);
        CHECK(ts_lp_encode_compact(&want, &p, TS_PREC_S) == 0);
    }
    CHECK_EQ_U(ts_batch_points(b), 5000);
    CHECK_EQ_U(ts_batch_encode(b, &got), 5000);
    CHECK(got.len == want.len && memcmp(got.data, want.data, got.len) == 0);
    ts_buf_free(&want);
    ts_buf_free(&got);
    ts_batch_free(b);
    CHECK_EQ_U(oc.release, 2);
    ts_writer_drain(w, ts_mono_ms());
    ts_writer_free(w);
    ts_loop_free(l);
}

/* Lazy encoding: with 2 slots busy, the rest stays compact. */
static void test_lazy_encoding(void) {
    blackhole bh;
    ts_writer_opts o;
    ts_loop *l = blackhole_setup(&bh, &o);
    o.max_publish_size = 10000;
    o.max_inflight = 2;
    ts_writer *w = ts_writer_new(l, &o);
    ts_dest d = mkdest("cache_stats", "monthly", TS_PREC_MS);
    size_t held = 0;
    for (int k = 0; k < 5; k++) {
        ts_batch *b = ts_batch_new_compact(&d, NULL);
        for (int i = 0; i < 10000; i++) {
            ts_cpoint p = pt(i & 1, i, 1600000000000LL + k * 10000 + i);
            ts_batch_add_compact(b, &p);
        }
        held = ts_batch_bytes(b);   /* the same for each of the five */
        ts_writer_submit(w, b);
    }
    ts_writer_flush(w);
    run_for(l, 30);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    CHECK(ts_loop_running(l) == 2);
    CHECK_EQ_U(s.points_pending, 50000);
    CHECK_EQ_U(s.bytes_pending, 3 * held);
    int64_t dropped0 = ts_counter_get("writer_points_dropped")->value;
    size_t lost = ts_writer_drain(w, ts_mono_ms() + 50);
    CHECK_EQ_U(lost, 50000);
    CHECK_EQ_U(ts_counter_get("writer_points_dropped")->value - dropped0, 50000);
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_pending, 0);
    CHECK_EQ_U(s.points_dropped, 50000);
    ts_writer_free(w);
    ts_loop_free(l);
    close(bh.fd);
}

/* Exact bytes and the request as sent: db/rp URL-encoded, gzip, auth,
 * NaN skipped, text lines copied; secrets never in the log. */
static void test_exact_request(void) {
    ts_loop *l = ts_loop_new();
    lsn s;
    lsn_start(&s, l, 1);
    char url[128];
    snprintf(url, sizeof url, "http://itu:secretpw1@127.0.0.1:%d/", s.port);
    const char *urls[] = {url, NULL};
    char logpath[] = "/tmp/test_writer_log.XXXXXX";
    int lfd = mkstemp(logpath);
    close(lfd);
    ts_log_open(logpath);
    ts_log_set_level(TS_LOG_WARN);
    evrec ev = {0};
    ev.keep = 1;
    ts_writer_opts o = {0};
    o.urls = urls;
    o.user = "itu";
    o.password = "secretpw2";
    o.gzip = 1;
    o.max_publish_size = 2;
    o.max_inflight = 1;
    o.backoff_min_ms = 5000;
    o.evict = ev_cb;
    o.evict_ud = &ev;
    ts_writer *w = ts_writer_new(l, &o);
    ts_dest d = mkdest("my db", "r/p", TS_PREC_S);
    ts_batch *b = ts_batch_new_compact(&d, NULL);
    ts_cpoint p0 = pt(0, 0.5, 1600000000999LL), p1 = pt(1, 1.25, 1600000002000LL);
    ts_cpoint pn = pt(0, NAN, 1600000003000LL), pi = pt(1, INFINITY, 1600000003000LL);
    ts_cpoint p2 = pt(1, -3e-7, 1600000004000LL);
    ts_batch_add_compact(b, &p0);
    ts_batch_add_compact(b, &pn);
    ts_batch_add_compact(b, &p1);
    ts_batch_add_compact(b, &pi);
    ts_batch_add_compact(b, &p2);
    ts_writer_submit(w, b);
    ts_dest dt = mkdest("daily_stats", "", TS_PREC_S);
    ts_batch *t = ts_batch_new_text(&dt);
    ts_batch_add_line(t, "daily_maxgbps,cdn=c1 value=1.5 1600000000", 41);
    ts_batch_add_line(t, "daily_bytesserved,cdn=c1 value=2\n", 33);
    ts_batch_add_line(t, "", 0);
    CHECK_EQ_U(ts_batch_points(t), 2);
    ts_writer_submit(w, t);
    int64_t inv0 = ts_counter_get("writer_points_invalid")->value;
    ts_writer_flush(w);
    for (int i = 0; i < 200 && !(s.head.len && s.cfd < 0); i++) ts_loop_run_once(l, 20);
    CHECK(s.head.data != NULL);
    if (s.head.data) {
        CHECK(strncmp(s.head.data, "POST /write?db=my%20db&rp=r%2Fp&precision=s HTTP/1.1\r\n", 54) == 0);
        CHECK(strstr(s.head.data, "\r\nContent-Encoding: gzip\r\n") != NULL);
        CHECK(strstr(s.head.data, "\r\nAuthorization: Basic aXR1OnNlY3JldHB3Mg==\r\n") != NULL);
        CHECK(strstr(s.head.data, "\r\nUser-Agent: tstats/") != NULL);
        CHECK(strstr(s.head.data, "Expect:") == NULL);
    }
    run_for(l, 100);
    ts_writer_stats st;
    ts_writer_get_stats(w, &st);
    CHECK(st.requests_failed >= 1);
    /* chunk 1 (2 lines) waits for retry; [Inf, p2] not encoded yet; 2 text lines */
    CHECK_EQ_U(st.points_pending, 6);
    ts_writer_drain(w, ts_mono_ms());
    CHECK_EQ_U(ts_counter_get("writer_points_invalid")->value - inv0, 2);
    /* bodies as offered to the spool, any order */
    const char *want[] = {
        "it_bw,cdn=it,host=h0 value=0.5 1600000000\nit_bw,cdn=it,host=h1 value=1.25 1600000002\n",
        "it_bw,cdn=it,host=h1 value=-3e-07 1600000004\n",
        "daily_maxgbps,cdn=c1 value=1.5 1600000000\ndaily_bytesserved,cdn=c1 value=2\n",
    };
    int found[3] = {0, 0, 0};
    for (int i = 0; i < ev.n; i++)
        for (int k = 0; k < 3; k++)
            if (strcmp(ev.bodies[i].data, want[k]) == 0) found[k]++;
    CHECK(ev.n == 3);
    CHECK(found[0] == 1 && found[1] == 1 && found[2] == 1);
    if (ev.n != 3 || !found[0] || !found[1] || !found[2])
        for (int i = 0; i < ev.n; i++) fprintf(stderr, "body %d: [%s]\n", i, ev.bodies[i].data);
    evrec_free(&ev);
    ts_writer_free(w);
    lsn_stop(&s);
    ts_loop_free(l);
    ts_log_open(NULL);
    ts_log_set_level(TS_LOG_ERROR);
    FILE *f = fopen(logpath, "r");
    ts_buf lg;
    ts_buf_init(&lg);
    char line[1024];
    while (f && fgets(line, sizeof line, f)) ts_buf_adds(&lg, line);
    if (f) fclose(f);
    unlink(logpath);
    CHECK(lg.len > 0);
    CHECK(lg.data && strstr(lg.data, "my db/r/p") != NULL);   /* failures are logged ... */
    CHECK(lg.data && strstr(lg.data, "secretpw") == NULL);     /* ... without secrets */
    CHECK(lg.data && strstr(lg.data, "itu") == NULL);
    ts_buf_free(&lg);
}

/* Memory bound: a refused URL, 1000-point batches of 32 kB, bound 100 kB. */
static void test_memory_bound(void) {
    ts_loop *l = ts_loop_new();
    const char *urls[] = {"http://127.0.0.1:1", NULL};
    evrec ev = {0};
    ev.keep = 0;
    ts_writer_opts o = {0};
    o.urls = urls;
    /* every point has its own time stamp here (the worst case of the compact
     * form): a batch of 1000 holds ~36 kB, so three fit and four do not */
    o.max_buffer_bytes = 112000;
    o.max_publish_size = 1000;
    o.max_inflight = 1;
    o.backoff_min_ms = 10000;
    o.evict = ev_cb;
    o.evict_ud = &ev;
    ts_writer *w = ts_writer_new(l, &o);
    owner_count oc = {0, 0};
    ts_map_owner own = {own_retain, own_release, &oc};
    ts_dest d = mkdest("cache_stats", "", TS_PREC_MS);
    int64_t drop0 = ts_counter_get("writer_points_dropped")->value;
    ts_writer_stats s;
    size_t held = 0;
    for (int k = 0; k < 4; k++) {
        ts_batch *b = ts_batch_new_compact(&d, &own);
        for (int i = 0; i < 1000; i++) {
            ts_cpoint p = pt(i & 1, 12.25, 1600000000000LL + k * 1000 + i);
            ts_batch_add_compact(b, &p);
        }
        held = ts_batch_bytes(b);
        CHECK(held > 112000 / 4 && held <= 112000 / 3);
        ts_writer_submit(w, b);
        ts_writer_get_stats(w, &s);
        CHECK(s.bytes_pending <= 112000);
    }
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_dropped, 1000);          /* the oldest batch */
    CHECK_EQ_U(s.points_pending, 3000);
    CHECK_EQ_U(s.bytes_pending, 3 * held);
    CHECK(oc.release == 1);
    ts_writer_flush(w);
    for (int i = 0; i < 300; i++) {
        ts_loop_run_once(l, 10);
        ts_writer_get_stats(w, &s);
        CHECK(s.bytes_pending <= 112000);
        if (s.requests_failed >= 2 && ts_loop_running(l) == 0) break;
    }
    /* batch 2 failed as a ~48 kB body: 48 kB + 72 kB > bound, so it (the
     * oldest) went, after the spool seam said no; batch 3 then failed and
     * is kept, batch 4 waits compact behind it. */
    CHECK_EQ_U(s.requests_failed, 2);
    CHECK_EQ_U(s.points_dropped, 2000);
    CHECK_EQ_U(s.points_pending, 2000);
    CHECK(ev.n == 2 && ev.lines[0] == 1000 && ev.lines[1] == 1000);   /* batch 1, then batch 2's body */
    CHECK_EQ_U(s.points_written, 0);
    CHECK_EQ_U(ts_counter_get("writer_points_dropped")->value - drop0, 2000);
    size_t lost = ts_writer_drain(w, ts_mono_ms() + 300);
    CHECK_EQ_U(lost, 2000);
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_dropped, 4000);
    CHECK_EQ_U(s.points_pending, 0);
    CHECK_EQ_U(s.bytes_pending, 0);
    CHECK(s.requests_failed > 2);                /* drain retried at once */
    CHECK_EQ_U(ts_counter_get("writer_points_dropped")->value - drop0, 4000);
    evrec_free(&ev);
    ts_writer_free(w);
    ts_loop_free(l);
    CHECK(oc.retain == 4 && oc.release == 4);
}

/* Fail-over keeps every host in rotation (Traffic Stats' host picker rewrites
 * its own URL list, so a host it passed over once is never tried again):
 * two listeners that accept and close, a refused port between them. */
static void test_failover_rotation(void) {
    ts_loop *l = ts_loop_new();
    lsn a, b;
    lsn_start(&a, l, 0);
    lsn_start(&b, l, 0);
    char ua[64], ub[64];
    snprintf(ua, sizeof ua, "http://127.0.0.1:%d", a.port);
    snprintf(ub, sizeof ub, "http://127.0.0.1:%d", b.port);
    const char *urls[] = {ua, "http://127.0.0.1:1", ub, NULL};
    ts_writer_opts o = {0};
    o.urls = urls;
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 40;
    ts_writer *w = ts_writer_new(l, &o);
    ts_dest d = mkdest("cache_stats", "", TS_PREC_MS);
    owner_count oc = {0, 0};
    ts_map_owner own = {own_retain, own_release, &oc};
    ts_batch *bt = ts_batch_new_compact(&d, &own);
    for (int i = 0; i < 500; i++) {
        ts_cpoint p = pt(i & 1, i, 1600000000000LL + i);
        ts_batch_add_compact(bt, &p);
    }
    ts_batch *unused = ts_batch_new_compact(&d, &own);   /* freed without submit */
    ts_batch_free(unused);
    int64_t r0 = ts_counter_get("writer_retries")->value;
    ts_writer_submit(w, bt);
    CHECK(ts_writer_current_url(w) == 0);
    ts_writer_flush(w);
    int seen[3] = {0, 0, 0};
    int64_t end = ts_mono_ms() + 800;
    while (ts_mono_ms() < end) {
        ts_loop_run_once(l, 10);
        int c = ts_writer_current_url(w);
        if (c >= 0 && c < 3) seen[c] = 1;
    }
    CHECK(a.accepts >= 3);
    CHECK(b.accepts >= 3);
    CHECK(seen[0] && seen[1] && seen[2]);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_pending, 500);
    CHECK(s.requests_failed >= 6);
    CHECK(ts_counter_get("writer_retries")->value - r0 >= 5);
    /* reconfigure keeps the data */
    const char *urls2[] = {ub, NULL};
    o.urls = urls2;
    ts_writer_reconfigure(w, &o);
    CHECK(ts_writer_current_url(w) == 0);
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_pending, 500);
    CHECK(ts_writer_drain(w, ts_mono_ms() + 100) == 500);
    ts_writer_free(w);
    lsn_stop(&a);
    lsn_stop(&b);
    ts_loop_free(l);
    CHECK(oc.retain == 2 && oc.release == 2);
}

/* Freeing the writer with requests in flight, then the loop: no leak, no
 * use after free (run under ASan). */
static void test_free_inflight(void) {
    blackhole bh;
    ts_writer_opts o;
    ts_loop *l = blackhole_setup(&bh, &o);
    ts_writer *w = ts_writer_new(l, &o);
    ts_dest d = mkdest("x", "", TS_PREC_MS);
    ts_batch *b = ts_batch_new_text(&d);
    ts_batch_add_line(b, "m v=1 1", 7);
    ts_writer_submit(w, b);
    ts_writer_flush(w);
    run_for(l, 20);
    CHECK(ts_loop_running(l) == 1);
    ts_writer_free(w);
    ts_loop_free(l);
    close(bh.fd);
}

/* A reload to an empty URL list while a request is in flight: its answer
 * (here: the connection dropped) finds no server at its index; the chunk is
 * kept, nothing reads past the list (run under ASan). */
static void test_reconfigure_inflight_empty(void) {
    blackhole bh;
    ts_writer_opts o;
    ts_loop *l = blackhole_setup(&bh, &o);
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 20;
    ts_writer *w = ts_writer_new(l, &o);
    ts_dest d = mkdest("x", "", TS_PREC_MS);
    ts_batch *b = ts_batch_new_text(&d);
    ts_batch_add_line(b, "m v=1 1", 7);
    ts_writer_submit(w, b);
    ts_writer_flush(w);
    run_for(l, 20);
    CHECK(ts_loop_running(l) == 1);
    const char *none[] = {NULL};
    o.urls = none;
    ts_writer_reconfigure(w, &o);
    CHECK(ts_writer_current_url(w) == -1);
    close(bh.fd);   /* the in-flight request fails now */
    run_for(l, 200);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    CHECK_EQ_U(s.points_pending, 1);
    CHECK(ts_writer_drain(w, ts_mono_ms() + 50) == 1);
    ts_writer_free(w);
    ts_loop_free(l);
}

/* A generic HTTP/1.1 responder in a child process (not an InfluxDB: it
 * answers every request with its own connection/request counters, or a big
 * body), to prove keep-alive reuse across async and blocking requests,
 * streaming and the body cap. */
static pid_t http_child(int *port) {
    int fd = listen_any(port);
    pid_t pid = fork();
    if (pid != 0) { close(fd); return pid; }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    int conns = 0, reqs = 0;
    for (int k = 0; k < 20; k++) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) break;
        conns++;
        char buf[8192];
        size_t have = 0;
        for (;;) {
            char *end = have ? memmem(buf, have, "\r\n\r\n", 4) : NULL;
            if (!end) {
                ssize_t n = read(c, buf + have, sizeof buf - have);
                if (n <= 0) break;
                have += (size_t)n;
                continue;
            }
            reqs++;
            size_t hl = (size_t)(end - buf) + 4;
            int big = strncmp(buf, "GET /big", 8) == 0;
            char hdr[256], body[64];
            size_t blen = big ? (size_t)1 << 20 : (size_t)snprintf(body, sizeof body, "conn=%d req=%d", conns, reqs);
            int hn = snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", blen);
            if (write(c, hdr, (size_t)hn) != hn) break;
            if (big) {
                static char z[1 << 20];
                memset(z, 'z', sizeof z);
                size_t off = 0;
                while (off < blen) { ssize_t n = write(c, z + off, blen - off); if (n <= 0) break; off += (size_t)n; }
            } else if (write(c, body, blen) != (ssize_t)blen) break;
            memmove(buf, buf + hl, have - hl);
            have -= hl;
        }
        close(c);
    }
    _exit(0);
}

static ts_buf g_async_body;
static long g_async_status;
static void on_done_body(void *ud, ts_http_result *r) {
    (void)ud;
    g_async_status = r->status;
    g_done_code = r->curl_code;
    ts_buf_reset(&g_async_body);
    if (r->body.len) ts_buf_add(&g_async_body, r->body.data, r->body.len);
    g_done_calls++;
}
static size_t g_streamed;
static int on_data_abort(void *ud, const char *p, size_t n) {
    (void)ud; (void)p;
    g_streamed += n;
    return g_streamed > 100000;   /* stop after ~100 kB */
}

static void test_http_keepalive_stream(void) {
    int port;
    pid_t pid = http_child(&port);
    char u1[64], u2[64];
    snprintf(u1, sizeof u1, "http://127.0.0.1:%d/info", port);
    snprintf(u2, sizeof u2, "http://127.0.0.1:%d/big", port);
    ts_loop *l = ts_loop_new();
    ts_buf_init(&g_async_body);
    ts_http_req rq;
    memset(&rq, 0, sizeof rq);
    rq.url = u1;
    rq.on_done = on_done_body;
    g_done_calls = 0;
    CHECK(ts_http_start(l, &rq) == 0);
    for (int i = 0; i < 200 && g_done_calls == 0; i++) ts_loop_run_once(l, 20);
    CHECK(g_async_status == 200);
    CHECK(g_async_body.data && strcmp(g_async_body.data, "conn=1 req=1") == 0);
    /* the blocking request reuses the async request's connection */
    ts_http_result r;
    ts_http_result_init(&r);
    CHECK(ts_http_perform(&rq, &r) == 0);
    CHECK(r.status == 200);
    CHECK(r.body.data && strcmp(r.body.data, "conn=1 req=2") == 0);
    ts_http_result_free(&r);
    /* and back to async, still the same connection */
    g_done_calls = 0;
    CHECK(ts_http_start(l, &rq) == 0);
    for (int i = 0; i < 200 && g_done_calls == 0; i++) ts_loop_run_once(l, 20);
    CHECK(g_async_body.data && strcmp(g_async_body.data, "conn=1 req=3") == 0);
    /* body cap */
    rq.url = u2;
    rq.max_body = 1000;
    ts_http_result_init(&r);
    CHECK(ts_http_perform(&rq, &r) == -1);
    CHECK(r.curl_code == CURLE_WRITE_ERROR);
    CHECK(r.status == 200);
    CHECK(strstr(r.errmsg, "larger than 1000") != NULL);
    ts_http_result_free(&r);
    /* streaming: all bytes to on_data, nothing collected; abort on request */
    rq.max_body = 0;
    rq.on_data = on_data_abort;
    g_done_calls = 0;
    g_streamed = 0;
    CHECK(ts_http_start(l, &rq) == 0);
    for (int i = 0; i < 200 && g_done_calls == 0; i++) ts_loop_run_once(l, 20);
    CHECK(g_done_code == CURLE_WRITE_ERROR);
    CHECK(g_streamed > 100000 && g_streamed < (1 << 20));
    CHECK(g_async_body.len == 0);
    ts_buf_free(&g_async_body);
    ts_loop_free(l);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--it") == 0) return it_main(argc - 1, argv + 1);
    ts_http_global_init();
    ts_log_set_level(getenv("TS_TEST_VERBOSE") ? TS_LOG_DEBUG : TS_LOG_ERROR);
    init_maps();
    test_urlencode();
    test_rejected_count();
    test_timers();
    test_watch_fd();
    test_http_errors();
    test_http_keepalive_stream();
    test_chunking();
    test_compact_form();
    test_recycled_batch();
    test_lazy_encoding();
    test_exact_request();
    test_memory_bound();
    test_failover_rotation();
    test_free_inflight();
    test_reconfigure_inflight_empty();
    ts_http_global_cleanup();
    return check_report("test_writer");
}
