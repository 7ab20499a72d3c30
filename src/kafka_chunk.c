/* The Kafka target's chunks (C core, no librdkafka): a chunk read point by
 * point, from its line protocol or from a compact batch's points, and freed. */
#include "ts_kafka_chunk.h"

#include <stdlib.h>
#include <string.h>

#include "ts_lp.h"

int ts_kafka_chunk_complete(const ts_kafka_chunk *c) {
    return c->pos >= c->len && c->outstanding == 0 && c->nretry == 0;
}

void ts_kafka_chunk_free_retries(ts_kafka_chunk *c) {
    for (ts_kafka_retry *r = c->rhead, *n; r; r = n) {
        n = r->next;
        free(r->key);
        free(r);
    }
    c->rhead = c->rtail = NULL;
    c->nretry = c->retry_bytes = 0;
}

size_t ts_kafka_chunk_body_free(ts_kafka_chunk *c) {
    size_t held = c->held;
    free(c->body);
    ts_batch_free(c->src);
    c->body = NULL;
    c->src = NULL;
    c->pos = c->len = c->held = 0;
    return held;
}

void ts_kafka_chunk_free(ts_kafka_chunk *c) {
    ts_kafka_chunk_free_retries(c);
    ts_kafka_chunk_body_free(c);
    free(c);
}

/* The next writable compact point from c->pos into *p (pos not moved past it). */
static int next_cpt(ts_kafka_chunk *c, ts_cpoint *p) {
    while (c->pos < c->len) {
        size_t end;
        ts_batch_run_get(c->src, c->run, &p->ent, &p->time_ms, &end);
        if (c->pos >= end) {
            c->run++;
            continue;
        }
        p->stat = ts_batch_stat(c->src, ts_batch_point_get(c->src, c->pos, &p->value));
        if (ts_lp_compact_writable(p->stat, p->value)) return 1;
        c->pos++;   /* NaN/Inf: not a line of the record either */
    }
    return 0;
}

size_t ts_kafka_chunk_unsent(ts_kafka_chunk *c) {
    if (!c->src) return c->body ? ts_kafka_enc_count_lines(c->body + c->pos, c->len - c->pos) : 0;
    size_t n = 0;
    for (ts_cpoint p; next_cpt(c, &p); c->pos++) n++;
    return n;
}

int ts_kafka_chunk_next(ts_kafka_chunk *c, ts_kafka_enc *enc, ts_buf *scratch, int series, ts_kafka_pt *pt) {
    pt->se = NULL;
    pt->cpt = 0;
    if (c->src) {
        /* a compact point: its series by its maps, its message made from it */
        if (!next_cpt(c, &pt->p)) return 0;
        pt->next = c->pos + 1;
        pt->se = ts_kafka_enc_series_cpt(enc, pt->p.stat, pt->p.ent, ts_batch_owner(c->src));
        if (pt->se) {
            pt->line = ts_kafka_enc_key(pt->se, &pt->klen);
            pt->len = pt->klen;
            pt->cpt = 1;
            return 1;
        }
        /* no key to cache (empty, too long): the point goes as its line would */
        pt->line = ts_kafka_enc_point_line(scratch, &pt->p, c->prec, &pt->len);
        pt->klen = ts_lp_series_key(pt->line, pt->len);
        return 1;
    }
    while (c->body && c->pos < c->len) {
        const char *line = c->body + c->pos;
        const char *nl = memchr(line, '\n', c->len - c->pos);
        size_t ll = nl ? (size_t)(nl - line) : c->len - c->pos;
        size_t next = c->pos + ll + (nl ? 1 : 0);
        size_t e = ll;
        while (e > 0 && (line[e - 1] == '\r' || line[e - 1] == ' ')) e--;
        size_t s = 0;
        while (s < e && (line[s] == ' ' || line[s] == '\t')) s++;
        if (s == e) {   /* blank line: not a point */
            c->pos = next;
            continue;
        }
        pt->line = line + s;
        pt->len = e - s;
        pt->next = next;
        pt->klen = ts_lp_series_key(pt->line, pt->len);
        if (series) pt->se = ts_kafka_enc_series(enc, pt->line, pt->klen);
        return 1;
    }
    return 0;
}
