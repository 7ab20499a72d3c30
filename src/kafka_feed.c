/* Kafka's position in the on-disk spool (C core, no Lua): reads the spool
 * through the consumer "kafka", hands each record to the Kafka target and
 * acknowledges it in the spool when the target reports it done (a record
 * the target list hands over as it is appended goes from memory: no read
 * back); holds back
 * while the target has more than its mark waiting, so that Kafka being down
 * leaves the backlog on disk, not in memory. */
#include "ts_kafka_feed.h"

#include <stdlib.h>

#include "ts_clock.h"
#include "ts_log.h"

#define FEED_PERIOD_MS 250

struct ts_kafka_feed {
    ts_kafka *k;
    ts_spool *spool;
    ts_spool_consumer *cons;
    ts_loop *loop;
    size_t high;
    int timer;
    int in_pump, stopped;
    struct feed_rec *open;   /* records handed to the target, not done yet */
    ts_kafka_feed_stats st;
};

typedef struct feed_rec {
    ts_kafka_feed *f;
    ts_spool_pos pos;
    struct feed_rec *prev, *next;
} feed_rec;

static void feed_done(void *ud, uint64_t id, size_t delivered, size_t failed, size_t dropped) {
    (void)id;
    (void)delivered;
    (void)failed;
    feed_rec *r = ud;
    ts_kafka_feed *f = r->f;
    if (dropped) {
        /* the target's memory bound is above the feed's mark: not expected;
         * the record is acknowledged all the same (the drop is counted) */
        ts_warn("kafka: %zu points of a spool record dropped for memory", dropped);
    }
    ts_spool_ack_one(f->cons, r->pos);
    f->st.records_acked++;
    f->st.records_open--;
    if (r->prev) r->prev->next = r->next;
    else f->open = r->next;
    if (r->next) r->next->prev = r->prev;
    free(r);
    /* room again: read on (inside the target's poll: the new chunk goes at its next one) */
    if (!f->in_pump) ts_kafka_feed_pump(f);
}

void ts_kafka_feed_pump(ts_kafka_feed *f) {
    if (!f || f->in_pump || f->stopped) return;
    f->in_pump = 1;
    while (ts_kafka_backlog_bytes(f->k) < f->high) {
        ts_spool_rec r;
        if (ts_spool_read(f->cons, &r) != 1) break;
        feed_rec *fr = malloc(sizeof *fr);
        if (!fr) abort();
        fr->f = f;
        fr->pos = r.pos;
        fr->prev = NULL;
        fr->next = f->open;
        if (f->open) f->open->prev = fr;
        f->open = fr;
        f->st.records_read++;
        f->st.records_open++;
        f->st.points_read += r.lines;
        ts_kafka_dest d = {r.db, r.rp, r.precision};
        ts_kafka_submit(f->k, &d, r.body, r.len, 0, feed_done, fr);
    }
    f->in_pump = 0;
}

/* A record the spool just took goes to the target from memory while the
 * target has room (the same mark as reading): claimed in the consumer, it is
 * never read back and is acknowledged as one read back would be. Past the
 * mark it stays on disk and is read when there is room. */
static feed_rec *live_claim(ts_kafka_feed *f, size_t lines, ts_spool_pos at, ts_spool_pos next) {
    if (!f || f->stopped || f->in_pump || ts_kafka_backlog_bytes(f->k) >= f->high) return NULL;
    ts_spool_claim(f->cons, at, next);
    feed_rec *fr = malloc(sizeof *fr);
    if (!fr) abort();
    fr->f = f;
    fr->pos = at;
    fr->prev = NULL;
    fr->next = f->open;
    if (f->open) f->open->prev = fr;
    f->open = fr;
    f->st.records_claimed++;
    f->st.records_open++;
    f->st.points_read += lines;
    return fr;
}

int ts_kafka_feed_live(ts_kafka_feed *f, const ts_dest *d, ts_buf *body, int take, size_t lines, ts_spool_pos at,
                       ts_spool_pos next) {
    feed_rec *fr = live_claim(f, lines, at, next);
    if (!fr) return 0;
    ts_kafka_dest kd = {d->db, d->rp, d->precision};
    f->in_pump = 1;   /* a done inside the submit reads on only after this one is in */
    if (take) ts_kafka_submit_buf(f->k, &kd, body, 0, feed_done, fr);   /* leaves body empty */
    else ts_kafka_submit(f->k, &kd, body->data, body->len, 0, feed_done, fr);
    f->in_pump = 0;
    return 1;
}

int ts_kafka_feed_live_points(ts_kafka_feed *f, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                              ts_spool_pos at, ts_spool_pos next) {
    feed_rec *fr = live_claim(f, lines, at, next);
    if (!fr) return 0;
    ts_kafka_dest kd = {d->db, d->rp, d->precision};
    f->in_pump = 1;
    ts_kafka_submit_points(f->k, &kd, b, from, to, lines, 0, feed_done, fr);
    f->in_pump = 0;
    return 1;
}

static void feed_timer(void *ud) {
    ts_kafka_feed *f = ud;
    f->timer = 0;
    if (f->stopped) return;
    ts_kafka_feed_pump(f);
    f->timer = ts_loop_timer(f->loop, ts_mono_ms() + FEED_PERIOD_MS, feed_timer, f);
}

ts_kafka_feed *ts_kafka_feed_new(ts_kafka *k, ts_spool *s, ts_loop *loop, size_t high_bytes) {
    ts_spool_consumer *c = ts_spool_consumer_open(s, "kafka", TS_SPOOL_START_END);
    if (!c) {
        ts_error("kafka: spool consumer 'kafka' cannot be opened: Kafka is fed from memory only");
        return NULL;
    }
    ts_kafka_feed *f = calloc(1, sizeof *f);
    if (!f) abort();
    f->k = k;
    f->spool = s;
    f->cons = c;
    f->loop = loop;
    f->high = high_bytes ? high_bytes : (size_t)64 << 20;
    ts_spool_cstats cs;
    ts_spool_consumer_stats(c, &cs);
    if (cs.backlog_bytes)
        ts_info("kafka: %llu bytes in the spool not yet acknowledged by Kafka: sending them first",
                (unsigned long long)cs.backlog_bytes);
    f->timer = ts_loop_timer(loop, ts_mono_ms() + FEED_PERIOD_MS, feed_timer, f);
    return f;
}

void ts_kafka_feed_set_target(ts_kafka_feed *f, ts_kafka *k, size_t high_bytes) {
    if (!f) return;
    /* records handed to the previous target stay its own: their done still
     * acknowledges them here; the next ones go to k */
    f->k = k;
    f->high = high_bytes ? high_bytes : (size_t)64 << 20;
}

void ts_kafka_feed_stop(ts_kafka_feed *f) {
    if (!f) return;
    f->stopped = 1;
    if (f->timer) ts_loop_timer_cancel(f->loop, f->timer);
    f->timer = 0;
}

void ts_kafka_feed_get_stats(const ts_kafka_feed *f, ts_kafka_feed_stats *s) {
    *s = f->st;
    ts_spool_cstats cs;
    ts_spool_consumer_stats(f->cons, &cs);
    s->backlog_bytes = cs.backlog_bytes;
    s->replay_bytes = cs.replay_bytes;
    s->lines_lost = cs.lines_lost;
    s->oldest_age_ms = ts_spool_oldest_age_ms(f->cons);
}

void ts_kafka_feed_free(ts_kafka_feed *f) {
    if (!f) return;
    if (f->timer) ts_loop_timer_cancel(f->loop, f->timer);
    /* the target is freed first (ts_kafka_free calls no done): these stay in the spool */
    for (feed_rec *r = f->open, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    ts_spool_consumer_close(f->cons);
    free(f);
}


/* ---- Kafka as one of the daemon's targets (ts_target.h) ---- */

typedef struct kafka_target {
    ts_kafka *k;
    ts_kafka_feed *f;            /* NULL: fed from memory */
    uint64_t delivered;          /* at the last tick, and when that number last moved */
    int64_t moved_at;
} kafka_target;

static void kt_submit(void *self, ts_batch *b) {
    kafka_target *t = self;
    if (ts_batch_points(b) > 0) {
        const ts_dest *d = ts_batch_dest(b);
        ts_buf body;
        ts_buf_init(&body);
        ts_batch_encode(b, &body);
        ts_kafka_dest kd = {d->db, d->rp, d->precision};
        ts_kafka_submit_buf(t->k, &kd, &body, 0, NULL, NULL);
    }
    ts_batch_free(b);
}

static int kt_reads_spool(void *self) { return ((kafka_target *)self)->f != NULL; }

/* A compact record goes as its points (a reference to the batch: the
 * messages are made from them, no line protocol between); a text one as
 * its lines. */
static int kt_live(void *self, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                   ts_spool_pos at, ts_spool_pos next) {
    ts_kafka_feed *f = ((kafka_target *)self)->f;
    if (ts_batch_is_compact(b)) return ts_kafka_feed_live_points(f, d, b, from, to, lines, at, next);
    ts_buf body;
    ts_buf_init(&body);
    size_t invalid = 0;
    ts_batch_encode_range(b, from, to, &body, &invalid);
    int kept = ts_kafka_feed_live(f, d, &body, 1, lines, at, next);
    ts_buf_free(&body);
    return kept;
}

static void kt_tick(void *self) {
    kafka_target *t = self;
    ts_kafka_stats s;
    ts_kafka_get_stats(t->k, &s);
    if (s.points_delivered != t->delivered) {
        t->delivered = s.points_delivered;
        t->moved_at = ts_mono_ms();
    }
    ts_kafka_feed_pump(t->f);
}

/* Healthy while nothing waits, or the brokers acknowledged something within a minute. */
static int kt_healthy(void *self) {
    kafka_target *t = self;
    ts_kafka_stats s;
    ts_kafka_get_stats(t->k, &s);
    return s.points_pending == 0 || s.points_delivered != t->delivered || ts_mono_ms() - t->moved_at < 60000;
}

static void kt_stats(void *self, ts_target_stats *o) {
    kafka_target *t = self;
    ts_kafka_stats s;
    ts_kafka_get_stats(t->k, &s);
    o->written = s.points_delivered;
    o->rejected = s.points_failed;
    o->dropped = s.points_dropped;
    o->pending = s.points_pending;
    o->pending_bytes = s.bytes_pending;
    o->retries = s.points_retried;
    if (t->f) {
        ts_kafka_feed_stats fs;
        ts_kafka_feed_get_stats(t->f, &fs);
        o->spool_backlog_bytes = fs.backlog_bytes;
        o->spool_replay_bytes = fs.replay_bytes;
        o->spool_oldest_age_ms = fs.oldest_age_ms;
    }
}

/* What is in flight gets the rest of the time; the spool keeps what was not read. */
static size_t kt_drain(void *self, int64_t deadline) {
    kafka_target *t = self;
    ts_kafka_feed_stop(t->f);
    return ts_kafka_drain(t->k, deadline);
}

static void kt_close(void *self) {
    kafka_target *t = self;
    ts_kafka_free(t->k);   /* the target, then its spool position */
    ts_kafka_feed_free(t->f);
    free(t);
}

static const ts_target_ops kafka_ops = {"kafka", kt_submit, kt_reads_spool, kt_tick, kt_healthy, kt_stats, kt_drain,
                                        kt_close, kt_live};

ts_target *ts_kafka_feed_target(ts_kafka *k, ts_kafka_feed *f) {
    kafka_target *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->k = k;
    t->f = f;
    t->moved_at = ts_mono_ms();
    return ts_target_new(&kafka_ops, t, "kafka");
}

void ts_kafka_feed_target_set(ts_target *t, ts_kafka *k) { ((kafka_target *)ts_target_self(t))->k = k; }
