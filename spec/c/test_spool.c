/* test_spool: C unit test of the on-disk spool (src/spool.c, C core).
 * Round trips, positions across reopen, segment rotation and removal,
 * max_bytes, torn tails, corrupted bytes, random damage, an unwritable dir.
 *   test_spool              run the checks in a temporary directory; exit 1 on failure
 *   test_spool --enospc DIR the disk-full check on DIR, which must be an empty small
 *                           filesystem (spec/runtime/spool_spec.lua mounts a tmpfs) */
#include "ts_spool.h"
#include "ts_spool_fmt.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ts_clock.h"
#include "ts_buf.h"
#include "ts_log.h"

static int g_fail, g_checks;
#define CHECK(cond)                                                                \
    do {                                                                           \
        g_checks++;                                                                \
        if (!(cond)) {                                                             \
            g_fail++;                                                              \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
        }                                                                          \
    } while (0)
#define CHECK_EQ(a, b)                                                             \
    do {                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
        g_checks++;                                                                \
        if (a_ != b_) {                                                            \
            g_fail++;                                                              \
            fprintf(stderr, "FAIL %s:%d: %s == %s (%llu vs %llu)\n", __FILE__, __LINE__, #a, #b, a_, b_); \
        }                                                                          \
    } while (0)

static char g_root[256];
static int g_dirs;

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: %s failed\n", cmd);
}

/* A fresh directory under the test's root (its spool dir does not exist yet:
 * the spool must create it). */
static const char *newdir(void) {
    static char d[400];
    snprintf(d, sizeof d, "%s/s%d/spool", g_root, ++g_dirs);
    return d;
}

static ts_spool_opts opts(const char *dir) {
    ts_spool_opts o;
    memset(&o, 0, sizeof o);
    o.dir = dir;
    o.max_bytes = 64ull << 20;
    o.segment_bytes = 1 << 20;
    o.fsync = TS_SPOOL_FSYNC_INTERVAL;
    o.retry_ms = 30;
    o.log_interval_ms = 60000;
    return o;
}

static ts_spool *sopen(const ts_spool_opts *o) {
    char err[256] = "";
    ts_spool *s = ts_spool_open(o, err, sizeof err);
    if (!s) fprintf(stderr, "open failed: %s\n", err);
    return s;
}

/* Body of record i: `lines` lines, each naming i and its line number (zero-padded:
 * records are read back sorted by series key, and these are in that order already), so a
 * record read back is recognisable and its content checkable. */
static void body(ts_buf *b, int i, int lines) {
    ts_buf_reset(b);
    for (int j = 0; j < lines; j++) ts_buf_printf(b, "m,rec=%d,line=%03d value=%d.5 %d\n", i, j, i * 1000 + j, 1700000 + i);
}

static int append(ts_spool *s, int i, int lines) {
    ts_buf b;
    ts_buf_init(&b);
    body(&b, i, lines);
    char db[32];
    snprintf(db, sizeof db, "db%d", i % 3);
    int rc = ts_spool_append(s, db, i % 2 ? "daily" : "", i % 2 ? TS_PREC_MS : TS_PREC_S, b.data, b.len,
                             (size_t)lines);
    ts_buf_free(&b);
    return rc;
}

/* Record i as append() wrote it, or -1 (garbage: never acceptable). */
static int which(const ts_spool_rec *r) {
    int i, j;
    if (sscanf(r->body, "m,rec=%d,line=%d", &i, &j) != 2 || j != 0) return -1;
    ts_buf b;
    ts_buf_init(&b);
    body(&b, i, (int)r->lines);
    char db[32];
    snprintf(db, sizeof db, "db%d", i % 3);
    int ok = b.len == r->len && memcmp(b.data, r->body, r->len) == 0 && r->body[r->len] == '\0' &&
             strcmp(r->db, db) == 0 && strcmp(r->rp, i % 2 ? "daily" : "") == 0 &&
             r->precision == (i % 2 ? TS_PREC_MS : TS_PREC_S);
    ts_buf_free(&b);
    return ok ? i : -1;
}

/* Reads everything available; seen[i] counts record i; returns records read,
 * or -1 if any record was not one that was written. */
static int drain(ts_spool_consumer *c, int *seen, int nseen, int ack) {
    ts_spool_rec r;
    int n = 0, bad = 0, rc;
    while ((rc = ts_spool_read(c, &r)) == 1) {
        int i = which(&r);
        if (i < 0 || i >= nseen) bad = 1;
        else seen[i]++;
        n++;
        if (ack) ts_spool_ack(c, r.next);
    }
    CHECK_EQ(rc, 0);
    return bad ? -1 : n;
}

static char *seg_file(const char *dir, int nth) {
    /* the nth (0-based) segment file in id order */
    static char path[600];
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep '\\.seg$' | sort | sed -n %dp", dir, nth + 1);
    FILE *p = popen(cmd, "r");
    char name[64] = "";
    if (!p || !fgets(name, sizeof name, p)) name[0] = '\0';
    if (p) pclose(p);
    name[strcspn(name, "\n")] = '\0';
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static int count_files(const char *dir, const char *suffix) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' 2>/dev/null | grep -c '%s$'", dir, suffix);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void flip_byte(const char *path, long off) {
    int fd = open(path, O_RDWR);
    unsigned char c;
    if (fd < 0 || pread(fd, &c, 1, off) != 1) {
        CHECK(!"flip_byte");
        if (fd >= 0) close(fd);
        return;
    }
    c ^= 0x5a;
    CHECK(pwrite(fd, &c, 1, off) == 1);
    close(fd);
}

/* Offset of record n in a segment file, from the length fields. */
static long rec_offset(const char *path, int n) {
    int fd = open(path, O_RDONLY);
    long off = 16;
    for (int k = 0; k < n && fd >= 0; k++) {
        unsigned char h[8];
        if (pread(fd, h, 8, off) != 8) break;
        off += 16 + (long)(h[4] | h[5] << 8 | h[6] << 16 | (unsigned long)h[7] << 24);
    }
    if (fd >= 0) close(fd);
    return off;
}

/* Log lines are checked too: "one clear error", not one per append. */
static char g_log[400];
static void log_to_file(void) {
    snprintf(g_log, sizeof g_log, "%s/log%d.txt", g_root, g_dirs);
    ts_log_open(g_log);
}
static int log_count(const char *needle) {
    FILE *f = fopen(g_log, "r");
    if (!f) return 0;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- tests ---- */

static void test_roundtrip(void) {
    ts_spool_opts o = opts(newdir());
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "influx:http://127.0.0.1:8086", TS_SPOOL_START_OLDEST);
    CHECK(c != NULL);
    CHECK(ts_spool_consumer_open(s, "influx:http://127.0.0.1:8086", TS_SPOOL_START_OLDEST) == NULL);
    ts_spool_consumers_done(s);
    ts_spool_rec r;
    CHECK_EQ(ts_spool_read(c, &r), 0);
    for (int i = 0; i < 10; i++) CHECK_EQ(append(s, i, 1 + i), 0);
    int seen[10] = {0};
    CHECK_EQ(drain(c, seen, 10, 1), 10);
    for (int i = 0; i < 10; i++) CHECK_EQ(seen[i], 1);
    /* invalid chunks are refused, not stored */
    CHECK_EQ(ts_spool_append(s, "db", "", TS_PREC_MS, "a b=1", 5, 1), -1);      /* no newline */
    CHECK_EQ(ts_spool_append(s, "", "", TS_PREC_MS, "a b=1\n", 6, 1), -1);      /* no db */
    CHECK_EQ(ts_spool_read(c, &r), 0);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.records_appended, 10);
    CHECK_EQ(st.lines_appended, 55);
    CHECK_EQ(st.append_failures, 2);
    CHECK_EQ(st.corrupt_records + st.torn_tails, 0);
    ts_spool_cstats cs;
    ts_spool_consumer_stats(c, &cs);
    CHECK_EQ(cs.backlog_bytes, 0);
    CHECK_EQ(cs.lines_read, 55);
    ts_spool_close(s);
}

static void test_positions_reopen(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    o.fsync = TS_SPOOL_FSYNC_ALWAYS;
    ts_spool *s = sopen(&o);
    ts_spool_consumer *a = ts_spool_consumer_open(s, "influx:http://a:8086/x?y", TS_SPOOL_START_OLDEST);
    ts_spool_consumer *k = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    for (int i = 0; i < 20; i++) CHECK_EQ(append(s, i, 3), 0);
    /* a reads 12 and acknowledges 8; kafka reads 5, acknowledges all */
    ts_spool_rec r;
    ts_spool_pos p8 = {0, 0};
    for (int i = 0; i < 12; i++) {
        CHECK_EQ(ts_spool_read(a, &r), 1);
        CHECK_EQ(which(&r), i);
        if (i == 7) p8 = r.next;
    }
    ts_spool_ack(a, p8);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(ts_spool_read(k, &r), 1);
        ts_spool_ack(k, r.next);
    }
    ts_spool_close(s);   /* persists both */

    s = sopen(&o);
    /* a consumer seen for the first time with START_END gets only new data */
    ts_spool_consumer *late = ts_spool_consumer_open(s, "late", TS_SPOOL_START_END);
    a = ts_spool_consumer_open(s, "influx:http://a:8086/x?y", TS_SPOOL_START_END);
    k = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_OLDEST);
    CHECK(a && k && late);
    ts_spool_consumers_done(s);
    CHECK_EQ(ts_spool_read(a, &r), 1);
    CHECK_EQ(which(&r), 8);   /* resumes after the acknowledged position, not the read one */
    CHECK_EQ(ts_spool_read(k, &r), 1);
    CHECK_EQ(which(&r), 5);
    CHECK_EQ(ts_spool_read(late, &r), 0);
    CHECK_EQ(append(s, 20, 2), 0);
    CHECK_EQ(ts_spool_read(late, &r), 1);
    CHECK_EQ(which(&r), 20);
    /* rewind: read again from the acknowledged position */
    ts_spool_rewind(a);
    CHECK_EQ(ts_spool_read(a, &r), 1);
    CHECK_EQ(which(&r), 8);
    ts_spool_close(s);

    /* "late" was never acknowledged past its first position: a crash (no
     * close) before any ack still replays from where it was created */
    s = sopen(&o);
    late = ts_spool_consumer_open(s, "late", TS_SPOOL_START_END);
    CHECK_EQ(ts_spool_read(late, &r), 1);
    CHECK_EQ(which(&r), 20);
    ts_spool_close(s);

    /* a corrupt position file: counted, logged, that consumer starts at the oldest */
    char path[600];
    snprintf(path, sizeof path, "%s/pos-kafka", dir);
    FILE *f = fopen(path, "r+");
    CHECK(f != NULL);
    if (f) {
        fseek(f, 12, SEEK_SET);
        fputc('9', f);
        fclose(f);
    }
    log_to_file();
    s = sopen(&o);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.bad_positions, 1);
    CHECK_EQ(log_count("position file"), 1);
    k = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_END);
    CHECK_EQ(ts_spool_read(k, &r), 1);
    CHECK_EQ(which(&r), 0);
    ts_spool_close(s);

    /* a valid position past the end (segments removed by hand): new records
     * would land before it, so it restarts at the end instead of hiding them */
    s = sopen(&o);
    k = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_OLDEST);
    while (ts_spool_read(k, &r) == 1) ts_spool_ack(k, r.next);
    ts_spool_pos far = {999, 16};
    ts_spool_ack(k, far);
    ts_spool_close(s);
    s = sopen(&o);
    k = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_OLDEST);
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.bad_positions, 1);
    CHECK_EQ(log_count("past the end"), 1);
    CHECK_EQ(ts_spool_read(k, &r), 0);
    CHECK_EQ(append(s, 33, 2), 0);
    CHECK_EQ(ts_spool_read(k, &r), 1);
    CHECK_EQ(which(&r), 33);
    ts_spool_close(s);
    ts_log_open(NULL);
}

static void test_segments_cleanup(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    o.segment_bytes = 4096;
    ts_spool *s = sopen(&o);
    ts_spool_consumer *a = ts_spool_consumer_open(s, "a", TS_SPOOL_START_OLDEST);
    ts_spool_consumer *b = ts_spool_consumer_open(s, "b", TS_SPOOL_START_OLDEST);
    ts_spool_consumer *gone = ts_spool_consumer_open(s, "gone", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    for (int i = 0; i < 60; i++) CHECK_EQ(append(s, i, 10), 0);   /* ~500 bytes each: ~8 per segment */
    int nseg = count_files(dir, ".seg");
    CHECK(nseg >= 6);
    int seen[60] = {0};
    CHECK_EQ(drain(a, seen, 60, 1), 60);
    CHECK_EQ(count_files(dir, ".seg"), nseg);   /* b and gone are behind */
    ts_spool_close(s);

    /* "gone" is not configured any more: consumers_done forgets it */
    s = sopen(&o);
    a = ts_spool_consumer_open(s, "a", TS_SPOOL_START_OLDEST);
    b = ts_spool_consumer_open(s, "b", TS_SPOOL_START_OLDEST);
    CHECK_EQ(count_files(dir, "pos-gone"), 1);
    CHECK_EQ(drain(b, seen, 60, 1), 60);
    CHECK_EQ(count_files(dir, ".seg"), nseg);   /* nothing removed before consumers_done */
    ts_spool_consumers_done(s);
    CHECK_EQ(count_files(dir, "pos-gone"), 0);
    CHECK_EQ(count_files(dir, ".seg"), 0);       /* all passed, none open yet */
    CHECK_EQ(append(s, 60, 1), 0);
    ts_spool_rec r;
    CHECK_EQ(ts_spool_read(a, &r), 1);
    CHECK_EQ(which(&r), 60);
    ts_spool_ack(a, r.next);
    CHECK_EQ(ts_spool_read(b, &r), 1);
    ts_spool_ack(b, r.next);
    CHECK_EQ(count_files(dir, ".seg"), 1);       /* the old one went, the open one stays */
    for (int i = 0; i < 60; i++) CHECK_EQ(seen[i], 2);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.segments, 1);
    CHECK_EQ(st.lines_dropped, 0);
    (void)gone;
    ts_spool_close(s);
}

/* ts_spool_read_into appends the body to the caller's buffer; a record read
 * back in the run that wrote it and one read after a reopen are alike. */
static void test_read_into(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    for (int i = 0; i < 3; i++) CHECK_EQ(append(s, i, 4), 0);
    ts_buf out;
    ts_buf_init(&out);
    ts_buf_adds(&out, "prefix|");
    ts_spool_rec r;
    CHECK_EQ(ts_spool_read_into(c, &r, &out), 1);
    CHECK(r.body == out.data + 7 && out.len == 7 + r.len && which(&r) == 0);
    CHECK_EQ(ts_spool_read(c, &r), 1);
    CHECK_EQ(which(&r), 1);
    ts_spool_close(s);
    s = sopen(&o);
    c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    out.len = 0;
    for (int i = 0; i < 3; i++) {
        size_t at = out.len;
        CHECK_EQ(ts_spool_read_into(c, &r, &out), 1);
        CHECK(r.body == out.data + at && which(&r) == i);
    }
    size_t len = out.len;
    CHECK_EQ(ts_spool_read_into(c, &r, &out), 0);
    CHECK_EQ(out.len, len);
    ts_buf_free(&out);
    ts_spool_close(s);
}

/* A record's bytes on disk (a record lies in one segment). */
static uint64_t rec_bytes(ts_spool_pos pos, ts_spool_pos next) {
    CHECK_EQ(next.seg, pos.seg);
    return next.off - pos.off;
}

/* backlog_bytes counts the records not acknowledged; replay_bytes runs from
 * the durable position (the oldest one not acknowledged) to the end. */
static void check_backlog(ts_spool_consumer *c, uint64_t backlog, uint64_t replay) {
    ts_spool_cstats cs;
    ts_spool_consumer_stats(c, &cs);
    CHECK_EQ(cs.backlog_bytes, backlog);
    CHECK_EQ(cs.replay_bytes, replay);
}

static void test_ack_one(void) {
    ts_spool_opts o = opts(newdir());
    o.segment_bytes = 2048;
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    for (int i = 0; i < 10; i++) CHECK_EQ(append(s, i, 5), 0);
    ts_spool_rec r[10];
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(ts_spool_read(c, &r[i]), 1);
        CHECK_EQ(which(&r[i]), i);
    }
    uint64_t sz[10], all = 0;
    for (int i = 0; i < 10; i++) all += sz[i] = rec_bytes(r[i].pos, r[i].next);
    CHECK(r[9].pos.seg > r[0].pos.seg);   /* across segments */
    check_backlog(c, all, all);
    /* delivery reports out of order: the position only moves over a done prefix */
    ts_spool_ack_one(c, r[2].pos);
    ts_spool_ack_one(c, r[1].pos);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), r[0].pos), 0);
    check_backlog(c, all - sz[1] - sz[2], all);
    ts_spool_ack_one(c, r[0].pos);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), r[2].next), 0);
    uint64_t rest = all - sz[0] - sz[1] - sz[2];
    check_backlog(c, rest, rest);
    for (int i = 9; i >= 4; i--) ts_spool_ack_one(c, r[i].pos);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), r[2].next), 0);
    /* one old record holds the position: the backlog is that record alone */
    check_backlog(c, sz[3], rest);
    ts_spool_ack_one(c, r[3].pos);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), r[9].next), 0);
    check_backlog(c, 0, 0);
    ts_spool_close(s);
}

/* ts_spool_oldest_age_ms: the age of the oldest record a consumer has not
 * acknowledged, per consumer, across segments and a reopen. */
static void test_oldest_age(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    o.segment_bytes = 2048;   /* a few records per segment */
    ts_spool *s = sopen(&o);
    ts_spool_consumer *a = ts_spool_consumer_open(s, "a", TS_SPOOL_START_OLDEST);
    ts_spool_consumer *b = ts_spool_consumer_open(s, "b", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    CHECK_EQ(ts_spool_oldest_age_ms(a), (uint64_t)-1);   /* empty spool */
    CHECK_EQ(append(s, 0, 5), 0);
    int64_t t0 = ts_now_ms();
    sleep_ms(120);
    for (int i = 1; i < 12; i++) CHECK_EQ(append(s, i, 5), 0);
    int64_t age = ts_spool_oldest_age_ms(a);
    CHECK(age >= 120 && age <= ts_now_ms() - t0 + 50);
    /* a reads and acknowledges everything: nothing is old for a, b still waits */
    ts_spool_rec r;
    while (ts_spool_read(a, &r) == 1) ts_spool_ack(a, r.next);
    CHECK_EQ(ts_spool_oldest_age_ms(a), (uint64_t)-1);
    CHECK(ts_spool_oldest_age_ms(b) >= 120);
    /* b acknowledges the first record only: its oldest is now the second,
     * appended right after the pause */
    CHECK_EQ(ts_spool_read(b, &r), 1);
    ts_spool_ack(b, r.next);
    age = ts_spool_oldest_age_ms(b);
    CHECK(age >= 0 && age < 110);
    /* b acknowledges records across segment boundaries up to the last one */
    for (int i = 1; i < 11; i++) {
        CHECK_EQ(ts_spool_read(b, &r), 1);
        ts_spool_ack(b, r.next);
    }
    CHECK(ts_spool_oldest_age_ms(b) >= 0);
    sleep_ms(60);
    CHECK(ts_spool_oldest_age_ms(b) >= 60);   /* the cached record time, a later now */
    ts_spool_close(s);
    /* after a reopen the persisted position gives the same record */
    s = sopen(&o);
    b = ts_spool_consumer_open(s, "b", TS_SPOOL_START_OLDEST);
    a = ts_spool_consumer_open(s, "a", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    CHECK(ts_spool_oldest_age_ms(b) >= 60);
    CHECK_EQ(ts_spool_oldest_age_ms(a), (uint64_t)-1);
    CHECK_EQ(ts_spool_read(b, &r), 1);
    CHECK_EQ(which(&r), 11);
    ts_spool_ack(b, r.next);
    CHECK_EQ(ts_spool_oldest_age_ms(b), (uint64_t)-1);
    ts_spool_close(s);
}

/* CRC32C: the known check value, the instruction against the table over
 * every alignment and many lengths (both sides of the block sizes), and the
 * continuation; then a spool holding records of both format versions. */
static void test_crc32c(void) {
    CHECK_EQ(ts_spool_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ(ts_spool_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ(ts_spool_crc32c(0, "", 0), 0);
    size_t big = 3 * 8192 * 2 + 3 * 256 + 77;
    unsigned char *buf = malloc(big + 16);
    uint32_t x = 12345;
    for (size_t i = 0; i < big + 16; i++) buf[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    size_t lens[] = {0, 1, 7, 8, 9, 255, 256, 767, 768, 769, 3000, 8191, 24575, 24576, 24577, 30000, big};
    int mism = 0;
    for (size_t a = 0; a < 8; a++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            uint32_t h = ts_spool_crc32c(0, buf + a, lens[k]), w = ts_spool_crc32c_sw(0, buf + a, lens[k]);
            uint32_t part = ts_spool_crc32c(ts_spool_crc32c(0, buf + a, lens[k] / 3), buf + a + lens[k] / 3,
                                            lens[k] - lens[k] / 3);
            if (h != w || part != w) mism++;
        }
    CHECK_EQ(mism, 0);
    free(buf);
    printf("crc32c: %s\n", ts_spool_crc32c_hw() ? "SSE4.2 instruction" : "table (no SSE4.2)");

    /* records of version 1 and 2 in one spool, read by a later process */
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    for (int i = 0; i < 6; i++) {
        ts_spool_set_rec_version(i % 2 ? 2 : 1);
        CHECK_EQ(append(s, i, 3), 0);
    }
    ts_spool_set_rec_version(0);
    ts_spool_close(s);
    char *seg = seg_file(dir, 0);
    int v1 = 0, v2 = 0;
    for (int i = 0; i < 6; i++) {
        long off = rec_offset(seg, i);
        FILE *f = fopen(seg, "rb");
        unsigned char m[4] = {0};
        if (f && fseek(f, off, SEEK_SET) == 0 && fread(m, 1, 4, f) == 4) {
            if (memcmp(m, "TSR1", 4) == 0) v1++;
            if (memcmp(m, "TSR2", 4) == 0) v2++;
        }
        if (f) fclose(f);
    }
    CHECK_EQ(v1, 3);
    CHECK_EQ(v2, 3);
    /* a flipped byte in a version 2 body is caught (records of an earlier run are checked) */
    flip_byte(seg, rec_offset(seg, 3) + 16 + 16 + 5 + 10);
    s = sopen(&o);
    c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    int seen[6] = {0};
    CHECK_EQ(drain(c, seen, 6, 1), 5);
    for (int i = 0; i < 6; i++) CHECK_EQ(seen[i], i == 3 ? 0 : 1);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.corrupt_records, 1);
    ts_spool_close(s);
}

/* The disk syncs run on the spool's helper thread: with a "disk" that
 * blocks (the hook holds the thread), appends in "always" mode still return
 * at once, and they count as synced only once the fdatasync returned. */
static pthread_mutex_t g_gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_gate_cv = PTHREAD_COND_INITIALIZER;
static int g_gate_open, g_gate_waits;
static void gate_hook(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_gate_mu);
    g_gate_waits++;
    while (!g_gate_open) pthread_cond_wait(&g_gate_cv, &g_gate_mu);
    pthread_mutex_unlock(&g_gate_mu);
}
static void gate_set(int open) {
    pthread_mutex_lock(&g_gate_mu);
    g_gate_open = open;
    pthread_cond_broadcast(&g_gate_cv);
    pthread_mutex_unlock(&g_gate_mu);
}
/* waits (at most 10 s: a bound, not a speed check) until the thread is idle */
static void wait_synced(ts_spool *s, ts_spool_stats *st) {
    for (int i = 0; i < 1000; i++) {
        ts_spool_get_stats(s, st);
        if (!st->sync_busy) return;
        sleep_ms(10);
    }
}

static void test_sync_thread(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    o.fsync = TS_SPOOL_FSYNC_ALWAYS;
    o.sync_hook = gate_hook;
    gate_set(0);
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    /* the disk is held: every append still returns, none is synced yet */
    for (int i = 0; i < 5; i++) CHECK_EQ(append(s, i, 4), 0);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.records_appended, 5);
    CHECK_EQ(st.records_synced, 0);
    CHECK_EQ(st.sync_busy, 1);
    /* and they can be read (sending early loses nothing) */
    int seen[5] = {0};
    CHECK_EQ(drain(c, seen, 5, 1), 5);
    gate_set(1);
    wait_synced(s, &st);
    CHECK_EQ(st.sync_busy, 0);
    CHECK_EQ(st.records_synced, 5);
    /* requests made while one waited were merged: fewer syncs than appends */
    CHECK(st.fsyncs >= 1 && st.fsyncs < 5);
    /* one more append: synced by itself */
    CHECK_EQ(append(s, 5, 4), 0);
    wait_synced(s, &st);
    CHECK_EQ(st.records_synced, 6);
    ts_spool_close(s);

    /* "interval": a tick past the interval asks for the sync and saves the
     * moved position on the thread; the position file has it without a close */
    dir = newdir();
    o = opts(dir);
    o.fsync = TS_SPOOL_FSYNC_INTERVAL;
    o.fsync_interval_ms = 50;
    o.sync_hook = NULL;
    s = sopen(&o);
    c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    sleep_ms(60);
    CHECK_EQ(append(s, 0, 4), 0);   /* past the interval: synced at once (on the thread) */
    for (int i = 1; i < 4; i++) CHECK_EQ(append(s, i, 4), 0);
    ts_spool_rec r;
    ts_spool_pos last = {0, 0};
    while (ts_spool_read(c, &r) == 1) {
        ts_spool_ack(c, r.next);
        last = r.next;
    }
    sleep_ms(60);
    ts_spool_tick(s);
    wait_synced(s, &st);
    CHECK_EQ(st.records_synced, 4);
    char *file = ts_spool_pos_file_name("c");
    char name[64];
    uint64_t sg = 0, off = 0;
    CHECK_EQ(ts_spool_pos_read(dir, file, name, sizeof name, &sg, &off), 0);
    CHECK_EQ(sg, last.seg);
    CHECK_EQ(off, last.off);
    free(file);
    ts_spool_close(s);
    gate_set(0);
}

/* ts_spool_claim: records sent from memory are never read back, a backlog
 * before them is, and the position passes both once both are done. */
static int append_at(ts_spool *s, int i, int lines, ts_spool_pos *at, ts_spool_pos *next) {
    ts_buf b;
    ts_buf_init(&b);
    body(&b, i, lines);
    char db[32];
    snprintf(db, sizeof db, "db%d", i % 3);
    int rc = ts_spool_append_at(s, db, i % 2 ? "daily" : "", i % 2 ? TS_PREC_MS : TS_PREC_S, b.data, b.len,
                                (size_t)lines, at, next);
    ts_buf_free(&b);
    return rc;
}

static void test_claim(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    o.segment_bytes = 1500;   /* claims across segment boundaries */
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "live", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    ts_spool_pos at[20], nx[20];
    ts_spool_rec r;
    /* nothing to replay: claimed records count as read at once */
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(append_at(s, i, 5, &at[i], &nx[i]), 0);
        ts_spool_claim(c, at[i], nx[i]);
    }
    CHECK_EQ(ts_spool_read(c, &r), 0);
    ts_spool_ack_one(c, at[1]);
    ts_spool_ack_one(c, at[0]);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), nx[1]), 0);
    ts_spool_ack_one(c, at[3]);
    ts_spool_ack_one(c, at[2]);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), nx[3]), 0);
    /* a backlog (records 4-9 not claimed: the target was down), then live
     * records claimed while the backlog is replayed */
    for (int i = 4; i < 10; i++) CHECK_EQ(append_at(s, i, 5, &at[i], &nx[i]), 0);
    for (int i = 10; i < 14; i++) {
        CHECK_EQ(append_at(s, i, 5, &at[i], &nx[i]), 0);
        ts_spool_claim(c, at[i], nx[i]);
    }
    /* the live ones are answered first: the position waits for the backlog */
    for (int i = 10; i < 14; i++) ts_spool_ack_one(c, at[i]);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), nx[3]), 0);
    uint64_t back = 0, live = 0;
    for (int i = 4; i < 10; i++) back += rec_bytes(at[i], nx[i]);
    for (int i = 10; i < 14; i++) live += rec_bytes(at[i], nx[i]);
    check_backlog(c, back, back + live);   /* the answered live records are not backlog */
    /* one more live record, not answered yet */
    CHECK_EQ(append_at(s, 14, 5, &at[14], &nx[14]), 0);
    ts_spool_claim(c, at[14], nx[14]);
    /* the replay reads exactly the backlog, in order, never a claimed record */
    int got = 0, order_ok = 1;
    while (ts_spool_read(c, &r) == 1) {
        if (which(&r) != 4 + got) order_ok = 0;
        got++;
        ts_spool_ack_one(c, r.pos);
    }
    CHECK_EQ(got, 6);
    CHECK(order_ok);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), nx[13]), 0);
    ts_spool_ack_one(c, at[14]);
    CHECK_EQ(ts_spool_pos_cmp(ts_spool_acked(c), nx[14]), 0);
    /* a claimed record never answered (a stop) is read back by the next run */
    CHECK_EQ(append_at(s, 15, 5, &at[15], &nx[15]), 0);
    ts_spool_claim(c, at[15], nx[15]);
    ts_spool_close(s);
    s = sopen(&o);
    c = ts_spool_consumer_open(s, "live", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    CHECK_EQ(ts_spool_read(c, &r), 1);
    CHECK_EQ(which(&r), 15);
    CHECK_EQ(ts_spool_read(c, &r), 0);
    ts_spool_close(s);
}

static void test_max_bytes(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    o.max_bytes = 65536;
    o.segment_bytes = 8192;
    log_to_file();
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "slow", TS_SPOOL_START_OLDEST);
    ts_spool_consumer *f = ts_spool_consumer_open(s, "fast", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    int seen[400] = {0}, fseen[400] = {0};
    long bytes_ok = 0;
    for (int i = 0; i < 400; i++) {
        CHECK_EQ(append(s, i, 4), 0);
        if (i % 10 == 9) CHECK(drain(f, fseen, 400, 1) > 0);
        ts_spool_stats st;
        ts_spool_get_stats(s, &st);
        if (st.bytes <= o.max_bytes) bytes_ok++;
    }
    CHECK_EQ(bytes_ok, 400);   /* never above max_bytes */
    CHECK_EQ(drain(f, fseen, 400, 1), 0);
    int n = drain(c, seen, 400, 1);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    ts_spool_cstats cs, fs;
    ts_spool_consumer_stats(c, &cs);
    ts_spool_consumer_stats(f, &fs);
    CHECK(st.segments_dropped > 0);
    CHECK(n > 0 && n < 400);
    /* the slow consumer got the newest records and lost exactly the oldest, counted */
    CHECK_EQ(cs.lines_lost, (uint64_t)(400 - n) * 4);
    CHECK_EQ(st.lines_dropped, cs.lines_lost);
    CHECK_EQ(fs.lines_lost, 0);
    for (int i = 0; i < 400; i++) {
        CHECK_EQ(fseen[i], 1);
        CHECK_EQ(seen[i], i >= 400 - n ? 1 : 0);
    }
    CHECK_EQ(log_count("spool: full"), 1);   /* rate-limited */
    ts_spool_close(s);
    ts_log_open(NULL);
}

static void test_torn_tail(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    ts_spool *s = sopen(&o);
    for (int i = 0; i < 5; i++) CHECK_EQ(append(s, i, 20), 0);
    ts_spool_close(s);   /* no consumer yet: like a crash before any target was set up */
    const char *seg = seg_file(dir, 0);
    long size = file_size(seg);
    CHECK(size > 100);
    CHECK(truncate(seg, size - 37) == 0);   /* the last record cut in its body */

    log_to_file();
    s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    CHECK_EQ(append(s, 5, 2), 0);   /* appends go to a new segment */
    int seen[6] = {0};
    CHECK_EQ(drain(c, seen, 6, 1), 5);
    CHECK(seen[0] == 1 && seen[3] == 1 && seen[4] == 0 && seen[5] == 1);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.torn_tails, 1);
    CHECK_EQ(st.corrupt_records, 0);
    CHECK_EQ(log_count("incomplete record"), 1);
    ts_spool_close(s);

    /* a cut inside a record header, and a tail of zeros (blocks a power loss left) */
    for (int variant = 0; variant < 2; variant++) {
        dir = newdir();
        o = opts(dir);
        s = sopen(&o);
        for (int i = 0; i < 3; i++) CHECK_EQ(append(s, i, 20), 0);
        ts_spool_close(s);
        seg = seg_file(dir, 0);
        size = file_size(seg);
        if (variant == 0) {
            int fd = open(seg, O_WRONLY | O_APPEND);
            CHECK(write(fd, "TSR1\x10\0\0", 7) == 7);   /* 7 bytes of a next header */
            close(fd);
        } else
            CHECK(truncate(seg, size + 4096) == 0);
        s = sopen(&o);
        c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
        int seen3[3] = {0};
        CHECK_EQ(drain(c, seen3, 3, 1), 3);
        ts_spool_get_stats(s, &st);
        CHECK_EQ(st.torn_tails, 1);
        ts_spool_close(s);
    }
    ts_log_open(NULL);
}

static void test_corrupt_bytes(void) {
    /* one byte flipped in a middle record's body, then in a middle record's header */
    for (int where = 0; where < 3; where++) {
        const char *dir = newdir();
        ts_spool_opts o = opts(dir);
        ts_spool *s = sopen(&o);
        for (int i = 0; i < 9; i++) CHECK_EQ(append(s, i, 8), 0);
        ts_spool_close(s);
        const char *seg = seg_file(dir, 0);
        long rec4 = rec_offset(seg, 4);
        long off = where == 0 ? rec4 + 16 + 16 + 20   /* body of record 4 */
                 : where == 1 ? rec4 + 5              /* length field of record 4's header */
                              : 5;                    /* the segment header: the whole segment */
        flip_byte(seg, off);
        log_to_file();
        s = sopen(&o);
        ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
        ts_spool_consumers_done(s);
        int seen[9] = {0};
        int n = drain(c, seen, 9, 1);
        ts_spool_stats st;
        ts_spool_get_stats(s, &st);
        if (where < 2) {
            CHECK_EQ(n, 8);
            for (int i = 0; i < 9; i++) CHECK_EQ(seen[i], i == 4 ? 0 : 1);
        } else
            CHECK_EQ(n, 0);
        CHECK_EQ(st.corrupt_records, 1);
        CHECK_EQ(st.torn_tails, 0);
        CHECK(where != 1 || st.skipped_bytes > 0);
        CHECK_EQ(log_count("corrupt data"), 1);
        /* the spool goes on */
        CHECK_EQ(append(s, 1, 3), 0);
        ts_spool_rec r;
        CHECK_EQ(ts_spool_read(c, &r), 1);
        CHECK_EQ(which(&r), 1);
        ts_spool_close(s);
        ts_log_open(NULL);
    }
}

/* A corrupt record and a torn tail in one run: each kind gets its own log line
 * (the rate limit is per kind), both are counted. */
static void test_corrupt_and_torn(void) {
    const char *dir = newdir();
    ts_spool_opts o = opts(dir);
    ts_spool *s = sopen(&o);
    for (int i = 0; i < 6; i++) CHECK_EQ(append(s, i, 8), 0);
    ts_spool_close(s);
    const char *seg = seg_file(dir, 0);
    flip_byte(seg, rec_offset(seg, 2) + 16 + 16 + 20);
    CHECK(truncate(seg, file_size(seg) - 9) == 0);
    log_to_file();
    s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    int seen[6] = {0};
    CHECK_EQ(drain(c, seen, 6, 1), 4);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.corrupt_records, 1);
    CHECK_EQ(st.torn_tails, 1);
    CHECK_EQ(log_count("corrupt data"), 1);
    CHECK_EQ(log_count("incomplete record"), 1);
    ts_spool_close(s);
    ts_log_open(NULL);
}

/* Random damage: whatever is flipped, cut or inserted, every record the
 * reader returns is one that was written, byte for byte, and nothing loops. */
static void test_random_damage(void) {
    srand(12345);
    log_to_file();   /* a few hundred expected complaints */
    int total_returned = 0, total_bad = 0;
    for (int round = 0; round < 60; round++) {
        const char *dir = newdir();
        ts_spool_opts o = opts(dir);
        o.segment_bytes = 2048 + (round % 4) * 1024;
        ts_spool *s = sopen(&o);
        int nrec = 5 + rand() % 30;
        for (int i = 0; i < nrec; i++) CHECK_EQ(append(s, i, 1 + rand() % 12), 0);
        ts_spool_close(s);
        for (int k = 0, nseg = count_files(dir, ".seg"); k < nseg; k++) {
            const char *seg = seg_file(dir, k);
            long size = file_size(seg);
            int damage = rand() % 4;
            if (damage == 0)
                for (int f = 0; f < 1 + rand() % 4; f++) flip_byte(seg, rand() % size);
            else if (damage == 1)
                CHECK(truncate(seg, rand() % size) == 0);
            else if (damage == 2) {
                int fd = open(seg, O_WRONLY | O_APPEND);
                char junk[300];
                for (size_t j = 0; j < sizeof junk; j++) junk[j] = (char)rand();
                memcpy(junk + 40, "TSR1", 4);
                CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
                close(fd);
            }
        }
        s = sopen(&o);
        ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
        int seen[40] = {0};
        int n = drain(c, seen, 40, 1);
        if (n < 0) total_bad++;
        else total_returned += n;
        for (int i = 0; i < 40; i++) CHECK(seen[i] <= 1);
        ts_spool_close(s);
    }
    ts_log_open(NULL);
    CHECK_EQ(total_bad, 0);
    CHECK(total_returned > 0);
    printf("random damage: 60 spools, %d intact records returned, none garbled\n", total_returned);
}

static void test_unwritable_dir(void) {
    char base[400];
    snprintf(base, sizeof base, "%s/s%d", g_root, ++g_dirs);
    mkdir(base, 0700);
    char blocker[450], dir[500];
    snprintf(blocker, sizeof blocker, "%s/blocker", base);
    snprintf(dir, sizeof dir, "%s/spool", blocker);   /* under a regular file: ENOTDIR */
    FILE *f = fopen(blocker, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    log_to_file();
    ts_spool_opts o = opts(dir);
    ts_spool *s = sopen(&o);
    CHECK(s != NULL);   /* never fatal */
    CHECK(!ts_spool_writable(s));
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    int refused = 0;
    for (int i = 0; i < 20; i++) {
        if (append(s, i, 2) != 0) refused++;
        sleep_ms(5);   /* some of these fall after retry_ms: real retries */
    }
    CHECK_EQ(refused, 20);
    int errors = log_count("ERROR spool:");
    CHECK(errors >= 1 && errors <= 2);   /* at open (+ the position file): not one per append */
    /* space / permission comes back */
    CHECK(unlink(blocker) == 0);
    sleep_ms(40);
    CHECK_EQ(append(s, 100, 3), 0);
    CHECK(ts_spool_writable(s));
    CHECK_EQ(log_count("writing to"), 1);
    ts_spool_rec r;
    c = c ? c : ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    CHECK_EQ(ts_spool_read(c, &r), 1);
    CHECK_EQ(which(&r), 100);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.append_failures, 20);
    ts_spool_close(s);
    ts_log_open(NULL);
}

static void test_bad_opts(void) {
    char err[128] = "";
    ts_spool_opts o = opts(NULL);
    CHECK(ts_spool_open(&o, err, sizeof err) == NULL);
    CHECK(strstr(err, "directory") != NULL);
    o = opts(newdir());
    o.max_bytes = 1000;
    CHECK(ts_spool_open(&o, err, sizeof err) == NULL);
    ts_spool_fsync fm;
    CHECK(ts_spool_fsync_parse("always", &fm) == 0 && fm == TS_SPOOL_FSYNC_ALWAYS);
    CHECK(ts_spool_fsync_parse("sometimes", &fm) == -1);
}

/* Disk full on a small filesystem: appends are refused with one error line,
 * nothing half-written is ever read back, and spooling resumes once the
 * consumer's acks free the segments. */
static int run_enospc(const char *dir) {
    snprintf(g_root, sizeof g_root, "%s", dir);
    snprintf(g_log, sizeof g_log, "/tmp/test_spool_enospc.%d.log", (int)getpid());
    ts_log_open(g_log);
    ts_spool_opts o = opts(dir);
    o.max_bytes = 64ull << 20;   /* far above the filesystem: the disk fills first */
    o.segment_bytes = 32768;
    ts_spool *s = sopen(&o);
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    ts_spool_consumers_done(s);
    int ok = 0, refused = 0, i = 0;
    while (refused == 0 && i < 10000) {
        if (append(s, i, 60) == 0) ok++;   /* ~2.3 KB per record */
        else refused++;
        i++;
    }
    printf("enospc: %d records stored before the disk was full\n", ok);
    CHECK(ok > 5 && refused == 1);
    for (int k = 0; k < 50; k++) {
        if (append(s, i++, 60) != 0) refused++;
        sleep_ms(2);   /* crosses retry_ms: real attempts on a full disk */
    }
    CHECK_EQ(refused, 51);
    CHECK_EQ(log_count("ERROR spool: cannot"), 1);
    CHECK(!ts_spool_writable(s));
    /* the consumer reads and acknowledges everything: intact, no partial record */
    int *seen = calloc((size_t)i + 100, sizeof *seen);
    int n = drain(c, seen, i + 100, 1);
    CHECK_EQ(n, ok);
    ts_spool_stats st;
    ts_spool_get_stats(s, &st);
    CHECK_EQ(st.corrupt_records + st.torn_tails, 0);
    printf("enospc: %d refused appends, %d records read back intact, %" PRIu64 " segments removed\n", refused, n,
           st.segments_removed);
    /* space is back: the next attempt after retry_ms succeeds */
    sleep_ms(40);
    int resumed = -1;
    for (int k = 0; k < 20 && resumed < 0; k++) {
        if (append(s, i, 5) == 0) resumed = i;
        i++;
        sleep_ms(40);
    }
    CHECK(resumed >= 0);
    CHECK(ts_spool_writable(s));
    CHECK_EQ(log_count("writing to"), 1);
    ts_spool_rec r;
    CHECK_EQ(ts_spool_read(c, &r), 1);
    CHECK_EQ(which(&r), resumed);
    ts_spool_close(s);
    free(seen);
    unlink(g_log);
    printf("test_spool --enospc: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--enospc") == 0) return run_enospc(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_spool [--enospc DIR]\n");
        return 2;
    }
    snprintf(g_root, sizeof g_root, "/tmp/test_spool.XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_bad_opts();
    test_roundtrip();
    test_positions_reopen();
    test_segments_cleanup();
    test_ack_one();
    test_read_into();
    test_oldest_age();
    test_crc32c();
    test_sync_thread();
    test_claim();
    test_max_bytes();
    test_torn_tail();
    test_corrupt_bytes();
    test_corrupt_and_torn();
    test_random_damage();
    test_unwritable_dir();
    rm_rf(g_root);
    printf("test_spool: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
