/* Kafka export target (C core, librdkafka; no Lua here). Line-protocol
 * chunks become one message per line, produced on the loop's thread as far as
 * librdkafka's queue takes them; delivery reports come back through the main
 * queue's event fd (watched by the loop) and a 0-timeout rd_kafka_poll. A
 * chunk completes when each of its lines was delivered, refused for good or
 * dropped; what librdkafka gives up on for a transient reason (brokers down
 * past message.timeout.ms) is produced again after a backoff. */
#include "ts_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_kafka_chunk.h"
#include "ts_log.h"

#define MAX_TOPICS 64
#define MAX_GROUPED_PARTITIONS 4096
#define GROUP_MAX_BYTES (512 * 1024)   /* under the brokers' default message.max.bytes (1 MB) */
#define POLL_PERIOD_MS 200
#define CPT_LINE_BYTES 128     /* what a compact point held counts for (its line is ~90-130 bytes) */
/* JSON heads and partitions of ~84,000 series take ~25 MB */
#define SERIES_CACHE_BYTES ((size_t)64 << 20)

/* A message to produce again: librdkafka gave up on it (brokers down past
 * message.timeout.ms) or its queue was full when a group was ready. */
/* A message to produce again, a chunk of points (ts_kafka_chunk.h). */
typedef ts_kafka_retry kretry;
typedef ts_kafka_chunk kchunk;

typedef struct rlimit {
    int64_t next_ms;
    uint64_t suppressed;
} rlimit;

typedef struct ktopic {
    char *name;
    rd_kafka_topic_t *rkt;
    /* partition count as librdkafka's partitioner last saw it (0: not yet);
     * written by whichever librdkafka thread partitions */
    _Atomic int32_t partitions;
} ktopic;

/* What a message carries, as its opaque when points are grouped (the
 * delivery report then needs no scan of the text for its point count);
 * listed so that those librdkafka never reports are freed with the target. */
typedef struct kmsg {
    struct kmsg *prev, *next;
    kchunk *c;
    size_t lines;
    ts_buf val;               /* the text librdkafka sends from (not copied), ours again at the report */
} kmsg;

#define MAX_SPARE_VALS 32

/* Points waiting to be sent together: one per partition. */
typedef struct kgroup {
    ts_buf val, key;
    size_t lines;
} kgroup;

struct ts_kafka {
    ts_loop *loop;
    rd_kafka_conf_t *conf;    /* kept to build a new producer after a fatal error */
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipefd[2];
    ktopic topics[MAX_TOPICS];
    int ntopics;
    int default_topic;        /* -1: none */
    char **db_topic;          /* pairs: db, topic name */
    size_t ndb_topic;
    ts_kafka_format format;
    size_t per_message;       /* points per message (1: Traffic Stats' one message per point) */
    size_t max_buffer_bytes;
    long retry_backoff_ms, log_interval_ms;
    kchunk *head, *tail;
    size_t bytes_held;        /* unproduced chunk bytes + retry copies */
    uint64_t lines_waiting;   /* lines not produced yet */
    uint64_t outstanding;     /* points in librdkafka awaiting a report */
    int timer_id;
    int fatal;                /* librdkafka raised a fatal error: rebuild the producer */
    int in_poll, freeing, queue_blocked;
    ts_buf msg;               /* scratch: the JSON of one point */
    ts_buf line;              /* scratch: a compact point's line protocol */
    ts_kafka_enc *enc;        /* series cache: JSON heads, partitions */
    kgroup *groups;
    int32_t ngroups;
    kmsg *msgs;               /* grouped messages in librdkafka */
    /* group buffers back from librdkafka for the next groups: handed over
     * and freed per message, ~40 MB a poll went back to the kernel and came
     * again as fresh pages (a fault per 4 KiB) */
    ts_buf spare_vals[MAX_SPARE_VALS];
    int nspare_vals;
    ts_kafka_stats st;
    rlimit rl_perm, rl_retry, rl_client, rl_drop, rl_invalid;
};

/* ---- small helpers ---- */

static char *xstrdup(const char *s) {
    char *p = strdup(s ? s : "");
    if (!p) abort();
    return p;
}

/* At most one line per interval for one kind of trouble; the lines between
 * are counted and their number given with the next one. */
static void log_limited(ts_kafka *k, rlimit *rl, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_limited(ts_kafka *k, rlimit *rl, int level, const char *fmt, ...) {
    int64_t now = ts_mono_ms();
    if (now < rl->next_ms) {
        rl->suppressed++;
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (rl->suppressed)
        ts_log(level, "%s (%llu similar in the last %lds not logged)", line, (unsigned long long)rl->suppressed,
               k->log_interval_ms / 1000);
    else
        ts_log(level, "%s", line);
    rl->suppressed = 0;
    rl->next_ms = now + k->log_interval_ms;
}

static void note_error(ts_kafka *k, rd_kafka_resp_err_t err, const char *text) {
    k->st.last_error_code = err;
    snprintf(k->st.last_error, sizeof k->st.last_error, "%s", text ? text : rd_kafka_err2str(err));
}

/* ---- producer set-up ---- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
static void on_fd(void *ud);
static void arm_timer(ts_kafka *k);


static int topic_index(ts_kafka *k, const char *name) {
    for (int i = 0; i < k->ntopics; i++)
        if (strcmp(k->topics[i].name, name) == 0) return i;
    if (k->ntopics == MAX_TOPICS) return -1;
    ktopic *t = &k->topics[k->ntopics];
    t->name = xstrdup(name);
    t->rkt = NULL;
    atomic_store(&t->partitions, 0);
    return k->ntopics++;
}

/* murmur2 of the series key, as the Java client partitions keyed records; it
 * also notes the partition count, which grouping needs. */
static int32_t partitioner(const rd_kafka_topic_t *rkt, const void *key, size_t keylen, int32_t cnt,
                           void *rkt_opaque, void *msg_opaque) {
    ktopic *t = rkt_opaque;
    if (t && atomic_load(&t->partitions) != cnt) atomic_store(&t->partitions, cnt);
    return rd_kafka_msg_partitioner_murmur2_random(rkt, key, keylen, cnt, rkt_opaque, msg_opaque);
}

static int open_producer(ts_kafka *k, char *err, size_t errlen) {
    rd_kafka_conf_t *c = rd_kafka_conf_dup(k->conf);
    char e[512];
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof e);
    if (!k->rk) {
        rd_kafka_conf_destroy(c);
        snprintf(err, errlen, "kafka: cannot create the producer: %s", e);
        return -1;
    }
    /* librdkafka's own log lines come through the main queue too: they are
     * written by the loop's thread, never from librdkafka's threads */
    rd_kafka_set_log_queue(k->rk, NULL);
    k->mainq = rd_kafka_queue_get_main(k->rk);
    rd_kafka_queue_io_event_enable(k->mainq, k->pipefd[1], "1", 1);
    for (int i = 0; i < k->ntopics; i++) {
        rd_kafka_topic_conf_t *tc = rd_kafka_default_topic_conf_dup(k->rk);
        rd_kafka_topic_conf_set_partitioner_cb(tc, partitioner);
        rd_kafka_topic_conf_set_opaque(tc, &k->topics[i]);
        k->topics[i].rkt = rd_kafka_topic_new(k->rk, k->topics[i].name, tc);
        if (!k->topics[i].rkt) {
            rd_kafka_topic_conf_destroy(tc);
            snprintf(err, errlen, "kafka: topic \"%s\": %s", k->topics[i].name,
                     rd_kafka_err2str(rd_kafka_last_error()));
            return -1;
        }
    }
    return 0;
}

static void close_producer(ts_kafka *k) {
    if (!k->rk) return;
    for (int i = 0; i < k->ntopics; i++) {
        if (k->topics[i].rkt) rd_kafka_topic_destroy(k->topics[i].rkt);
        k->topics[i].rkt = NULL;
    }
    if (k->mainq) {
        rd_kafka_queue_io_event_enable(k->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(k->mainq);
        k->mainq = NULL;
    }
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
}

ts_kafka *ts_kafka_new(ts_loop *loop, const ts_kafka_opts *o, char *err, size_t errlen) {
    rd_kafka_conf_t *c = ts_kafka_conf_new(o, err, errlen);
    if (!c) return NULL;
    ts_kafka *k = calloc(1, sizeof *k);
    if (!k) abort();
    k->loop = loop;
    k->pipefd[0] = k->pipefd[1] = -1;
    k->default_topic = -1;
    k->format = o->format;
    k->per_message = o->points_per_message > 1 ? o->points_per_message : 1;
    k->max_buffer_bytes = o->max_buffer_bytes ? o->max_buffer_bytes : (size_t)256 << 20;
    k->retry_backoff_ms = o->retry_backoff_ms > 0 ? o->retry_backoff_ms : 1000;
    k->log_interval_ms = o->log_interval_ms > 0 ? o->log_interval_ms : 10000;
    ts_buf_init(&k->msg);
    ts_buf_init(&k->line);
    k->enc = ts_kafka_enc_new(k->format == TS_KAFKA_JSON, SERIES_CACHE_BYTES);

    k->conf = c;
    rd_kafka_conf_set_opaque(c, k);
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_conf_set_error_cb(c, error_cb);
    rd_kafka_conf_set_log_cb(c, log_cb);

    if (o->topic && *o->topic) k->default_topic = topic_index(k, o->topic);
    for (const char *const *p = o->db_topics; p && p[0] && p[1]; p += 2) {
        if (topic_index(k, p[1]) < 0) {
            snprintf(err, errlen, "kafka: more than %d topics", MAX_TOPICS);
            goto fail;
        }
        k->db_topic = realloc(k->db_topic, (k->ndb_topic + 1) * 2 * sizeof *k->db_topic);
        if (!k->db_topic) abort();
        k->db_topic[k->ndb_topic * 2] = xstrdup(p[0]);
        k->db_topic[k->ndb_topic * 2 + 1] = xstrdup(p[1]);
        k->ndb_topic++;
    }
    if (pipe2(k->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "kafka: pipe: %s", strerror(errno));
        goto fail;
    }
    if (open_producer(k, err, errlen)) goto fail;
    ts_loop_watch_fd(loop, k->pipefd[0], on_fd, k);
    return k;
fail:
    ts_kafka_free(k);
    return NULL;
}

/* ---- chunks ---- */


static void chunk_unlink(ts_kafka *k, kchunk *c) {
    if (c->prev) c->prev->next = c->next;
    else k->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else k->tail = c->prev;
    c->prev = c->next = NULL;
}

static void chunk_body_done(ts_kafka *k, kchunk *c) { k->bytes_held -= ts_kafka_chunk_body_free(c); }

static void maybe_finish(ts_kafka *k, kchunk *c) {
    if (!ts_kafka_chunk_complete(c)) return;
    chunk_unlink(k, c);
    if (c->done) c->done(c->ud, c->id, c->delivered, c->failed, c->dropped);
    ts_kafka_chunk_free(c);
}

static void add_retry(ts_kafka *k, kchunk *c, const void *key, size_t klen, const void *val, size_t vlen,
                      size_t lines, int32_t partition, int64_t due) {
    kretry *r = malloc(sizeof *r);
    char *p = malloc(klen + vlen + 1);
    if (!r || !p) abort();
    if (klen) memcpy(p, key, klen);
    if (vlen) memcpy(p + klen, val, vlen);
    *r = (kretry){NULL, p, p + klen, klen, vlen, lines, partition};
    if (c->rtail) c->rtail->next = r;
    else c->rhead = r;
    c->rtail = r;
    c->nretry += lines;
    c->retry_bytes += klen + vlen;
    k->bytes_held += klen + vlen;
    c->retry_due = due;
}

/* Drops the oldest data not yet handed to librdkafka until the bound holds:
 * live stats matter more than an old backlog (a spool keeps it, if any). */
static void enforce_bound(ts_kafka *k) {
    for (kchunk *c = k->head; c && k->bytes_held > k->max_buffer_bytes;) {
        kchunk *next = c->next;
        size_t lines = 0;
        if ((c->body || c->src) && c->pos < c->len) {
            lines = ts_kafka_chunk_unsent(c);
            chunk_body_done(k, c);
        }
        if (k->bytes_held > k->max_buffer_bytes && c->nretry) {
            lines += c->nretry;
            k->bytes_held -= c->retry_bytes;
            ts_kafka_chunk_free_retries(c);
        }
        if (lines) {
            c->dropped += lines;
            k->st.points_dropped += lines;
            k->lines_waiting -= lines < k->lines_waiting ? lines : k->lines_waiting;
            log_limited(k, &k->rl_drop, TS_LOG_ERROR,
                        "kafka: memory bound kafka.max_buffer_bytes (%zu) reached: dropped %zu oldest points for %s",
                        k->max_buffer_bytes, lines, c->db);
        }
        maybe_finish(k, c);
        c = next;
    }
}

static int resolve_topic(ts_kafka *k, const char *db) {
    for (size_t i = 0; i < k->ndb_topic; i++)
        if (strcmp(k->db_topic[i * 2], db) == 0) return topic_index(k, k->db_topic[i * 2 + 1]);
    return k->default_topic;
}

/* Queues a chunk whose body (malloc'd, NUL-terminated, len bytes) it takes
 * over, or (body NULL) the points [from, len) of src, a reference it takes. */
static void submit_owned(ts_kafka *k, const ts_kafka_dest *d, char *body, size_t len, ts_batch *src, size_t from,
                         size_t src_lines, uint64_t id, ts_kafka_done_fn done, void *ud) {
    kchunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    snprintf(c->db, sizeof c->db, "%s", d->db ? d->db : "");
    snprintf(c->rp, sizeof c->rp, "%s", d->rp ? d->rp : "");
    c->prec = d->precision;
    c->topic = resolve_topic(k, c->db);
    c->id = id;
    c->done = done;
    c->ud = ud;
    size_t lines = src ? src_lines : body ? ts_kafka_enc_count_lines(body, len) : 0;
    if (c->topic < 0) {
        /* only when kafka.topics names some databases and kafka.topic is unset */
        log_limited(k, &k->rl_perm, TS_LOG_ERROR, "kafka: no topic for database %s (set kafka.topic): %zu points not sent",
                    c->db, lines);
        c->failed = lines;
        k->st.points_failed += lines;
        free(body);
        ts_batch_free(src);
    } else if (lines && src) {
        c->src = src;
        c->pos = from;
        c->len = len;
        c->run = ts_batch_run_of(src, from);
        /* counted as the line protocol it stands for: the bounds keep their meaning */
        c->held = lines * CPT_LINE_BYTES;
        k->bytes_held += c->held;
        k->lines_waiting += lines;
    } else if (lines) {
        c->body = body;
        c->len = c->held = len;
        k->bytes_held += len;
        k->lines_waiting += lines;
    } else {
        free(body);
        ts_batch_free(src);
    }
    c->prev = k->tail;
    if (k->tail) k->tail->next = c;
    else k->head = c;
    k->tail = c;
    enforce_bound(k);
    if (!k->in_poll) ts_kafka_poll(k);
}

void ts_kafka_submit(ts_kafka *k, const ts_kafka_dest *d, const char *body, size_t len, uint64_t id,
                     ts_kafka_done_fn done, void *ud) {
    char *copy = malloc(len + 1);
    if (!copy) abort();
    if (len) memcpy(copy, body, len);
    copy[len] = '\0';
    submit_owned(k, d, copy, len, NULL, 0, 0, id, done, ud);
}

void ts_kafka_submit_buf(ts_kafka *k, const ts_kafka_dest *d, ts_buf *body, uint64_t id, ts_kafka_done_fn done,
                         void *ud) {
    char *p = body->data;
    size_t len = body->len;
    ts_buf_init(body);
    if (!p) {
        p = malloc(1);
        if (!p) abort();
        *p = '\0';
    }
    submit_owned(k, d, p, len, NULL, 0, 0, id, done, ud);
}

void ts_kafka_submit_points(ts_kafka *k, const ts_kafka_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                            uint64_t id, ts_kafka_done_fn done, void *ud) {
    ts_batch_retain(b);
    submit_owned(k, d, NULL, to, b, from, lines, id, done, ud);
}

size_t ts_kafka_backlog_bytes(const ts_kafka *k) { return k->bytes_held; }

/* ---- producing ---- */

enum { PROD_OK, PROD_FULL, PROD_FAILED };

/* flags: RD_KAFKA_MSG_F_COPY, or 0 with own: a grouped message's buffer
 * (val is own->data), kept with the message and given back at its delivery
 * report; taken only when PROD_OK is returned */
static int produce_msg(ts_kafka *k, kchunk *c, const char *key, size_t klen, const char *val, size_t vlen,
                       size_t lines, int32_t partition, int flags, const ts_buf *own) {
    rd_kafka_topic_t *rkt = k->topics[c->topic].rkt;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    void *opaque = c;
    kmsg *km = NULL;
    if (k->per_message > 1) {
        km = malloc(sizeof *km);
        if (!km) abort();
        *km = (kmsg){NULL, k->msgs, c, lines, {NULL, 0, 0}};
        if (own) km->val = *own;
        opaque = km;
    }
    if (k->format == TS_KAFKA_LP) {
        /* line protocol carries no database or retention policy: headers do */
        const char *prec = ts_precision_name(c->prec);
        e = rd_kafka_producev(k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition),
                              RD_KAFKA_V_MSGFLAGS(flags), RD_KAFKA_V_KEY(key, klen),
                              RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_HEADER("db", c->db, -1),
                              RD_KAFKA_V_HEADER("rp", c->rp, -1), RD_KAFKA_V_HEADER("precision", prec, -1),
                              RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    } else if (rd_kafka_produce(rkt, partition, flags, (void *)val, vlen, key, klen, opaque) != 0) {
        e = rd_kafka_last_error();
    }
    if (km && e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (k->msgs) k->msgs->prev = km;
        k->msgs = km;
    } else {
        free(km);
    }
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        c->outstanding += lines;
        k->outstanding += lines;
        k->st.messages_produced++;
        return PROD_OK;
    }
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        k->st.queue_full++;
        k->queue_blocked = 1;
        return PROD_FULL;
    }
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        k->fatal = 1;
        return PROD_FULL;
    }
    note_error(k, e, NULL);
    /* anything else that is not permanent: try again on a later poll */
    return ts_kafka_conf_permanent(e) ? PROD_FAILED : PROD_FULL;
}

static void count_failed(ts_kafka *k, kchunk *c, size_t lines, const char *why, size_t vlen) {
    c->failed += lines;
    k->st.points_failed += lines;
    log_limited(k, &k->rl_perm, TS_LOG_ERROR, "kafka: %zu points for %s refused for good (%s, %zu bytes): not retried",
                lines, c->db, why, vlen);
}

/* Sends a group as one message; when librdkafka cannot take it now it is
 * kept as a retry of the chunk (its points were taken from the body). */
static int flush_group(ts_kafka *k, kchunk *c, kgroup *g, int32_t partition, int64_t now) {
    if (!g->lines) return PROD_OK;
    /* the group's text itself goes to librdkafka (no copy of a poll's worth of
     * messages); the next group starts on a buffer given back by an earlier
     * report, else on one of the same size */
    size_t cap = g->val.cap;
    int rc = produce_msg(k, c, g->key.data, g->key.len, g->val.data, g->val.len, g->lines, partition, 0, &g->val);
    if (rc == PROD_OK) {
        if (k->nspare_vals) {
            g->val = k->spare_vals[--k->nspare_vals];
        } else {
            ts_buf_init(&g->val);
            ts_buf_reserve(&g->val, cap);
        }
    } else if (rc == PROD_FULL) add_retry(k, c, g->key.data, g->key.len, g->val.data, g->val.len, g->lines, partition, now);
    else if (rc == PROD_FAILED) count_failed(k, c, g->lines, k->st.last_error, g->val.len);
    ts_buf_reset(&g->val);
    ts_buf_reset(&g->key);
    g->lines = 0;
    return rc;
}

/* Produce a chunk's retries (when due) and its remaining lines. Returns 0 when
 * librdkafka's queue is full (stop for now). */
static int pump_chunk(ts_kafka *k, kchunk *c, int64_t now) {
    if (c->topic < 0) return 1;
    while (c->rhead && c->retry_due <= now) {
        kretry *r = c->rhead;
        int rc = produce_msg(k, c, r->key, r->klen, r->val, r->vlen, r->lines, r->partition, RD_KAFKA_MSG_F_COPY, NULL);
        if (rc == PROD_FULL) return 0;
        if (rc == PROD_FAILED) count_failed(k, c, r->lines, k->st.last_error, r->vlen);
        else k->st.points_retried += r->lines;
        c->rhead = r->next;
        if (!c->rhead) c->rtail = NULL;
        c->nretry -= r->lines;
        c->retry_bytes -= r->klen + r->vlen;
        k->bytes_held -= r->klen + r->vlen;
        free(r->key);
        free(r);
    }
    /* Several points per message: grouped by the partition their series key
     * maps to, so a series stays on one partition either way. Until
     * librdkafka has told the partition count, points go one by one. */
    ktopic *t = &k->topics[c->topic];
    int32_t nparts = k->per_message > 1 ? atomic_load(&t->partitions) : 0;
    if (nparts > MAX_GROUPED_PARTITIONS) nparts = 0;
    if (nparts > k->ngroups) {
        k->groups = realloc(k->groups, (size_t)nparts * sizeof *k->groups);
        if (!k->groups) abort();
        for (int32_t i = k->ngroups; i < nparts; i++) {
            ts_buf_init(&k->groups[i].val);
            ts_buf_init(&k->groups[i].key);
            k->groups[i].lines = 0;
        }
        k->ngroups = nparts;
    }
    int full = 0;
    int64_t now_ns = 0;
    ts_kafka_pt pt;
    ts_kafka_dest d = {c->db, c->rp, c->prec};
    ts_kafka_enc_set_dest(k->enc, &d);
    /* the cache serves the JSON head and the group's partition: lp one by one needs neither */
    while (!full && ts_kafka_chunk_next(c, k->enc, &k->line, k->format == TS_KAFKA_JSON || nparts > 0, &pt)) {
        const char *line = pt.line;
        size_t e = pt.len, klen = pt.klen, next = pt.next;
        ts_kafka_series *se = pt.se;
        int cpt = pt.cpt;
        int32_t p = RD_KAFKA_PARTITION_UA;
        kgroup *g = NULL;
        if (nparts > 0) {
            p = ts_kafka_enc_partition(se, nparts);
            if (p < 0) {
                p = rd_kafka_msg_partitioner_murmur2(t->rkt, line, klen, nparts, NULL, NULL);
                ts_kafka_enc_set_partition(se, nparts, p);
            }
            g = &k->groups[p];
            if (g->lines >= k->per_message && flush_group(k, c, g, p, now) == PROD_FULL) full = 1;
        }
        /* the message text goes straight where it is sent from: the group, or the scratch */
        ts_buf *out = g ? &g->val : &k->msg;
        if (!g) ts_buf_reset(out);
        size_t mark = out->len;
        if (g && g->lines) ts_buf_addc(out, '\n');
        size_t vstart = out->len;
        if (k->format == TS_KAFKA_JSON || cpt) {
            const char *why;
            if (!now_ns) now_ns = ts_now_ns();
            if ((cpt ? ts_kafka_enc_cpt(k->enc, se, out, &pt.p, &d, &why)
                     : ts_kafka_enc_json_series(k->enc, se, out, line, e, &d, now_ns, &why)) < 0) {
                out->len = mark;
                if (out->data) out->data[mark] = '\0';
                k->st.lines_invalid++;
                c->failed++;
                log_limited(k, &k->rl_invalid, TS_LOG_WARN, "kafka: not line protocol (%s) for %s: %.*s", why, c->db,
                            (int)(e > 200 ? 200 : e), line);
                c->pos = next;
                if (k->lines_waiting) k->lines_waiting--;
                continue;
            }
        } else {
            ts_buf_add(out, line, e);
        }
        if (g) {
            if (g->lines && out->len > GROUP_MAX_BYTES) {
                /* over the message bound with this point: the group goes without it */
                ts_buf_reset(&k->msg);
                ts_buf_add(&k->msg, out->data + vstart, out->len - vstart);
                out->len = mark;
                out->data[mark] = '\0';
                if (flush_group(k, c, g, p, now) == PROD_FULL) full = 1;
                ts_buf_add(&g->val, k->msg.data, k->msg.len);
            }
            if (!g->lines) ts_buf_add(&g->key, line, klen);   /* the first point's series key */
            g->lines++;
        } else {
            int rc = produce_msg(k, c, line, klen, out->data, out->len, 1, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                NULL);
            if (rc == PROD_FULL) {
                ts_kafka_enc_set_dest(k->enc, NULL);   /* d lives in this call only */
                return 0;
            }
            if (rc == PROD_FAILED) count_failed(k, c, 1, k->st.last_error, out->len);
        }
        c->pos = next;
        if (k->lines_waiting) k->lines_waiting--;
    }
    ts_kafka_enc_set_dest(k->enc, NULL);
    /* groups never outlive a pass: their points belong to this chunk */
    for (int32_t p = 0; p < nparts; p++)
        if (k->groups[p].lines && flush_group(k, c, &k->groups[p], p, now) == PROD_FULL) full = 1;
    if ((c->body || c->src) && c->pos >= c->len) chunk_body_done(k, c);
    return !full;
}

static void pump(ts_kafka *k) {
    if (!k->rk || k->fatal) return;
    int64_t now = ts_mono_ms();
    k->queue_blocked = 0;
    for (kchunk *c = k->head; c;) {
        kchunk *next = c->next;
        int more = pump_chunk(k, c, now);
        maybe_finish(k, c);
        if (!more) break;
        c = next;
    }
}

/* librdkafka raised a fatal error (idempotence state lost): every message
 * still in it comes back purged, is kept as a retry, and a new producer
 * (new producer id) takes over. */
static void rebuild_producer(ts_kafka *k) {
    char e[512];
    rd_kafka_fatal_error(k->rk, e, sizeof e);
    ts_error("kafka: fatal producer error: %s; starting a new producer", e);
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    for (int i = 0; i < 100 && k->outstanding; i++) rd_kafka_poll(k->rk, 10);
    close_producer(k);
    k->fatal = 0;
    if (open_producer(k, e, sizeof e)) ts_error("%s", e);
}

void ts_kafka_poll(ts_kafka *k) {
    if (!k->rk || k->in_poll) return;
    k->in_poll = 1;
    char drain[64];
    while (read(k->pipefd[0], drain, sizeof drain) > 0) {
    }
    /* everything queued, so that the event fd fires again on the next event */
    while (rd_kafka_poll(k->rk, 0) > 0) {
    }
    if (k->fatal) rebuild_producer(k);
    pump(k);
    while (rd_kafka_poll(k->rk, 0) > 0) {
    }
    k->in_poll = 0;
    arm_timer(k);
}

static void on_fd(void *ud) { ts_kafka_poll(ud); }

static void on_timer(void *ud) {
    ts_kafka *k = ud;
    k->timer_id = 0;
    ts_kafka_poll(k);
}

/* A periodic wake-up while anything waits: retries' backoff, a full queue,
 * librdkafka's own timeouts. The event fd covers the delivery reports. */
static void arm_timer(ts_kafka *k) {
    if (k->timer_id || !k->head || k->freeing) return;
    k->timer_id = ts_loop_timer(k->loop, ts_mono_ms() + POLL_PERIOD_MS, on_timer, k);
}

/* ---- callbacks (run inside rd_kafka_poll, on the loop's thread) ---- */

/* A grouped message reported: its buffer back for the next groups (once the
 * report has been dealt with: a retry copies the text from it). */
static void give_back(ts_kafka *k, kmsg *km) {
    if (km->val.data) {
        if (k->nspare_vals < MAX_SPARE_VALS && !k->freeing) {
            km->val.len = 0;
            km->val.data[0] = '\0';
            k->spare_vals[k->nspare_vals++] = km->val;
        } else {
            ts_buf_free(&km->val);
        }
    }
    free(km);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    ts_kafka *k = opaque;
    kchunk *c = m->_private;
    size_t lines = 1;
    kmsg *km = NULL;
    if (k->per_message > 1) {
        km = m->_private;
        c = km ? km->c : NULL;
        lines = km ? km->lines : 0;
        if (km) {
            if (km->prev) km->prev->next = km->next;
            else k->msgs = km->next;
            if (km->next) km->next->prev = km->prev;
        }
    }
    if (k->freeing || !c) {
        if (km) give_back(k, km);
        return;
    }
    c->outstanding -= lines;
    k->outstanding -= lines;
    if (!m->err) {
        c->delivered += lines;
        k->st.points_delivered += lines;
    } else {
        k->st.delivery_errors++;
        note_error(k, m->err, NULL);
        if (ts_kafka_conf_permanent(m->err)) {
            count_failed(k, c, lines, rd_kafka_err2str(m->err), m->len);
        } else {
            if (rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_NOT_PERSISTED) k->st.points_maybe_dup += lines;
            add_retry(k, c, m->key, m->key_len, m->payload, m->len, lines,
                      k->per_message > 1 ? m->partition : RD_KAFKA_PARTITION_UA, ts_mono_ms() + k->retry_backoff_ms);
            log_limited(k, &k->rl_retry, TS_LOG_WARN, "kafka: delivery to %s failed (%s): message kept, retried in %ld ms",
                        rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err), k->retry_backoff_ms);
        }
    }
    if (km) give_back(k, km);
    maybe_finish(k, c);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    ts_kafka *k = opaque;
    k->st.client_errors++;
    note_error(k, err, reason);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        k->fatal = 1;
        return;
    }
    log_limited(k, &k->rl_client, TS_LOG_WARN, "kafka: %s: %s", rd_kafka_err2name(err), reason);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    /* error_cb reports what matters, rate-limited; the rest is debugging */
    if (level <= 2) ts_error("kafka: librdkafka %s: %s", fac, buf);
    else ts_debug("kafka: librdkafka %s: %s", fac, buf);
}

/* ---- shutdown, stats ---- */

static uint64_t unacked(const ts_kafka *k) {
    uint64_t n = k->lines_waiting + k->outstanding;
    for (const kchunk *c = k->head; c; c = c->next) n += c->nretry;
    return n;
}

size_t ts_kafka_drain(ts_kafka *k, int64_t deadline) {
    while (k->head && ts_mono_ms() < deadline) {
        ts_kafka_poll(k);
        if (!k->head) break;
        int64_t left = deadline - ts_mono_ms();
        ts_loop_run_once(k->loop, left < 50 ? (int)(left > 0 ? left : 0) : 50);
        /* retries wait for no backoff at shutdown */
        for (kchunk *c = k->head; c; c = c->next) c->retry_due = 0;
    }
    ts_kafka_poll(k);
    size_t left = (size_t)unacked(k);
    if (left) ts_error("kafka: %zu points not acknowledged by Kafka at shutdown", left);
    return left;
}

int ts_kafka_idle(const ts_kafka *k) { return k->head == NULL; }

void ts_kafka_add_stats(ts_kafka *k, const ts_kafka_stats *s) {
    k->st.messages_produced += s->messages_produced;
    k->st.points_delivered += s->points_delivered;
    k->st.points_failed += s->points_failed;
    k->st.points_retried += s->points_retried;
    k->st.points_maybe_dup += s->points_maybe_dup;
    k->st.points_dropped += s->points_dropped;
    k->st.lines_invalid += s->lines_invalid;
    k->st.delivery_errors += s->delivery_errors;
    k->st.client_errors += s->client_errors;
    k->st.queue_full += s->queue_full;
    if (s->last_error_code && !k->st.last_error_code) {
        k->st.last_error_code = s->last_error_code;
        memcpy(k->st.last_error, s->last_error, sizeof k->st.last_error);
    }
}

void ts_kafka_get_stats(const ts_kafka *k, ts_kafka_stats *s) {
    *s = k->st;
    s->points_pending = unacked(k);
    s->bytes_pending = k->bytes_held;
}

void ts_kafka_free(ts_kafka *k) {
    if (!k) return;
    k->freeing = 1;
    if (k->timer_id) ts_loop_timer_cancel(k->loop, k->timer_id);
    if (k->pipefd[0] >= 0) ts_loop_watch_fd(k->loop, k->pipefd[0], NULL, NULL);
    if (k->rk) {
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
        rd_kafka_poll(k->rk, 0);
    }
    close_producer(k);
    for (kmsg *m = k->msgs, *n; m; m = n) {
        n = m->next;
        ts_buf_free(&m->val);
        free(m);
    }
    for (int i = 0; i < k->nspare_vals; i++) ts_buf_free(&k->spare_vals[i]);
    if (k->conf) rd_kafka_conf_destroy(k->conf);
    for (kchunk *c = k->head, *n; c; c = n) {
        n = c->next;
        ts_kafka_chunk_free(c);
    }
    for (int i = 0; i < k->ntopics; i++) free(k->topics[i].name);
    for (size_t i = 0; i < k->ndb_topic * 2; i++) free(k->db_topic[i]);
    free(k->db_topic);
    for (int32_t i = 0; i < k->ngroups; i++) {
        ts_buf_free(&k->groups[i].val);
        ts_buf_free(&k->groups[i].key);
    }
    free(k->groups);
    if (k->pipefd[0] >= 0) close(k->pipefd[0]);
    if (k->pipefd[1] >= 0) close(k->pipefd[1]);
    ts_buf_free(&k->msg);
    ts_buf_free(&k->line);
    ts_kafka_enc_free(k->enc);
    free(k);
}
