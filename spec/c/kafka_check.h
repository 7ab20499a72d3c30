/* Test helpers for the Kafka target (test side): librdkafka's mock cluster
 * in process, and everything in a topic read back with librdkafka's
 * consumer on fixed partitions. Include after check.h. */
#ifndef TS_SPEC_KAFKA_CHECK_H
#define TS_SPEC_KAFKA_CHECK_H
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_consumer.h"
#include "ts_clock.h"

/* ---- mock cluster and consumer ---- */

typedef struct mock {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
} mock;

static inline void mock_start(mock *m, const char *const *topics, int partitions) {
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "0", e, sizeof e);
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof e);
    if (!m->rk) abort();
    m->mc = rd_kafka_mock_cluster_new(m->rk, 3);
    if (!m->mc) abort();
    m->bootstraps = rd_kafka_mock_cluster_bootstraps(m->mc);
    for (const char *const *t = topics; *t; t++) rd_kafka_mock_topic_create(m->mc, *t, partitions, 1);
}

static inline void mock_stop(mock *m) {
    rd_kafka_mock_cluster_destroy(m->mc);
    rd_kafka_destroy(m->rk);
}

typedef struct kmsg {
    int32_t partition;
    char *key, *val, *hdr;   /* hdr: "db=..;rp=..;precision=.." when headers exist */
} kmsg;

typedef struct kmsgs {
    kmsg *m;
    size_t n, cap;
} kmsgs;

static inline void kmsgs_free(kmsgs *v) {
    for (size_t i = 0; i < v->n; i++) {
        free(v->m[i].key);
        free(v->m[i].val);
        free(v->m[i].hdr);
    }
    free(v->m);
    memset(v, 0, sizeof *v);
}

static inline char *dupn(const void *p, size_t n) {
    char *s = malloc(n + 1);
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Everything in topic's partitions from the beginning, read on fixed
 * partitions (no consumer group) until each partition reports its end. */
static inline void consume_all(const mock *m, const char *topic, int partitions, kmsgs *out) {
    rd_kafka_t *rk = kafka_consumer_from_start(m->bootstraps, "test", topic, partitions);
    if (!rk) abort();
    int eofs = 0;
    int64_t deadline = ts_mono_ms() + 30000;
    while (eofs < partitions && ts_mono_ms() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (!msg) continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (!msg->err) {
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 256;
                out->m = realloc(out->m, out->cap * sizeof *out->m);
            }
            kmsg *k = &out->m[out->n++];
            k->partition = msg->partition;
            k->key = dupn(msg->key, msg->key_len);
            k->val = dupn(msg->payload, msg->len);
            k->hdr = NULL;
            rd_kafka_headers_t *h;
            if (rd_kafka_message_headers(msg, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                char buf[512] = "";
                const char *names[] = {"db", "rp", "precision"};
                for (int i = 0; i < 3; i++) {
                    const void *v;
                    size_t vl;
                    if (rd_kafka_header_get_last(h, names[i], &v, &vl) == RD_KAFKA_RESP_ERR_NO_ERROR)
                        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s=%.*s;", names[i], (int)vl,
                                 (const char *)v);
                }
                k->hdr = strdup(buf);
            }
        } else {
            fprintf(stderr, "consumer: %s\n", rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    CHECK_EQ_U(eofs, partitions);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

#endif
