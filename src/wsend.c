/* The writer's InfluxDB 1.x side (C core, no Lua): a chunk sent as one
 * /write request, its answer classified (acknowledged, rejected, dropped, or
 * kept for retry with backoff and host failover), a 413 split in halves, and
 * the /ping probes that end a backoff early and fail back to an earlier
 * server. The protocol itself (URLs, auth, classification) is influx.c's. */
#include "ts_wsend.h"

#include <stdlib.h>
#include <string.h>

#include "ts_clock.h"
#include "ts_log.h"
#include "ts_wspool.h"

static void chunk_done(void *ud, ts_http_result *r);

/* A chunk that could not be sent now waits out a backoff in the retry queue,
 * counted in the memory bound like any held body. Returns -1 for the caller. */
static int retry_later(ts_writer *w, ts_wqueue_chunk *c) {
    if (!c->is_retry) { c->is_retry = 1; c->d->nretry++; }
    c->attempts++;
    c->next_at = ts_mono_ms() + ts_wqueue_backoff_ms(w, c->attempts);
    ts_buf_shrink(&c->body, c->body.len + 1);
    w->bytes_held += c->body.len;
    ts_wqueue_retry_insert(w, c);
    ts_wqueue_enforce_bound(w);
    return -1;
}

/* Returns 0, or -1 if the request could not be started (c went to retry). */
int ts_wsend_chunk(ts_writer *w, ts_wqueue_chunk *c) {
    int nurls = ts_influx_nurls(w->influx);
    if (nurls == 0) {
        /* nowhere to send: keep it as a failed chunk with backoff */
        return retry_later(w, c);
    }
    int idx = ts_influx_current(w->influx);
    const char *base = ts_influx_url(w->influx, idx);
    c->url_idx = idx;
    c->w = w;
    free(c->url);
    size_t ul = strlen(base) + strlen(c->d->path) + 1;
    c->url = malloc(ul);
    if (!c->url) abort();
    snprintf(c->url, ul, "%s%s", base, c->d->path);

    ts_http_req rq;
    ts_influx_req(w->influx, &rq, c->url, c->body.data, c->body.len, "text/plain; charset=utf-8");
    rq.opts.gzip_body = w->gzip;
    rq.max_body = 1 << 20;  /* error answers are short; a huge one is not InfluxDB */
    rq.on_done = chunk_done;
    rq.ud = c;

    if (c->is_retry) {
        w->st.retries++;
        ts_counter_add(w->c_retries, 1);
    }
    c->prev = NULL;
    c->next = w->inflight;
    if (c->next) c->next->prev = c;
    w->inflight = c;
    w->ninflight++;
    if (ts_http_start(w->loop, &rq) != 0) {
        ts_wqueue_inflight_unlink(w, c);
        ts_warn("writer: could not start a request for %s/%s; will retry", c->d->d.db, ts_wqueue_rp(&c->d->d));
        return retry_later(w, c);
    }
    return 0;
}

/* ---- /ping probes: recovery and failback ---- */

struct ts_wsend_probe {
    ts_writer *w;            /* NULL once orphaned (writer freed) */
    int idx, failback;
    char *url;
};

static void probe_done(void *ud, ts_http_result *r) {
    struct ts_wsend_probe *p = ud;
    ts_writer *w = p->w;
    if (w) {
        w->probe = NULL;
        const char *at = ts_influx_url(w->influx, p->idx);
        size_t al = at ? strlen(at) : 0;
        int same = at && strncmp(p->url, at, al) == 0 && strcmp(p->url + al, "/ping") == 0;
        int up = r->curl_code == 0 && r->status >= 200 && r->status < 300;
        char host[256];
        ts_influx_safe_url(host, sizeof host, p->url);
        if (up && same && p->failback) {
            int cur = ts_influx_current(w->influx);
            if (cur > p->idx) {
                ts_info("writer: %s answers again: writing to it (failback from the server at position %d)", host,
                        cur + 1);
                ts_influx_set_current(w->influx, p->idx);
            }
        } else if (up && same && w->host_down) {
            w->host_down = 0;
            ts_influx_set_current(w->influx, p->idx);
            int64_t now = ts_mono_ms();
            size_t n = 0;
            for (ts_wqueue_chunk *x = w->retry_head; x; x = x->next) {
                x->next_at = now;
                x->round_fails = 0;
                n++;
            }
            ts_info("writer: %s answers /ping: sending %zu waiting chunk(s) and the backlog now", host, n);
            ts_wqueue_pump(w);
        }
        ts_wsend_arm_probe(w);
    }
    free(p->url);
    free(p);
}

static void probe_start(ts_writer *w, int idx, int failback) {
    const char *base = ts_influx_url(w->influx, idx);
    if (!base) return;
    struct ts_wsend_probe *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->w = w;
    p->idx = idx;
    p->failback = failback;
    size_t n = strlen(base) + sizeof "/ping";
    p->url = malloc(n);
    if (!p->url) abort();
    snprintf(p->url, n, "%s/ping", base);
    ts_http_req rq;
    ts_influx_req(w->influx, &rq, p->url, NULL, 0, NULL);
    rq.method = NULL;   /* GET */
    /* cheap: a server that does not answer within a second is still down */
    rq.opts.connect_timeout_ms = 1000;
    rq.opts.timeout_ms = 2000;
    rq.max_body = 4096;
    rq.on_done = probe_done;
    rq.ud = p;
    if (ts_http_start(w->loop, &rq) != 0) {
        free(p->url);
        free(p);
        return;
    }
    w->probe = p;
}

static void on_probe_timer(void *ud) {
    ts_writer *w = ud;
    w->probe_timer = 0;
    if (w->probe || w->draining) return;
    int n = ts_influx_nurls(w->influx), cur = ts_influx_current(w->influx);
    if (n <= 0) return;
    if (w->host_down) {
        /* every server failed: ping them in list order, so the first healthy one wins */
        probe_start(w, w->probe_next % n, 0);
        w->probe_next = (w->probe_next + 1) % n;
    } else if (cur > 0) {
        /* written to a later server: is an earlier one back? */
        w->failback_at = ts_mono_ms() + 10000;
        probe_start(w, w->probe_next % cur, 1);
        w->probe_next = (w->probe_next + 1) % cur;
    }
    ts_wsend_arm_probe(w);
}

void ts_wsend_arm_probe(ts_writer *w) {
    if (w->probe_timer || w->probe || w->draining) return;
    int64_t now = ts_mono_ms();
    if (w->host_down) w->probe_timer = ts_loop_timer(w->loop, now + 1000, on_probe_timer, w);
    else if (ts_influx_current(w->influx) > 0) {
        if (w->failback_at < now + 1000) w->failback_at = now + 10000;
        w->probe_timer = ts_loop_timer(w->loop, w->failback_at, on_probe_timer, w);
    }
}

/* HTTP 413: the server's body limit (InfluxDB's [http] max-body-size) is
 * below this chunk. Resend it as two halves at a line boundary, at once and
 * before new data; a single line that is still too large is dropped and
 * counted. Returns 1 when c was consumed. */
static int split_413(ts_writer *w, ts_wqueue_chunk *c, const char *host) {
    ts_wqueue_dest *d = c->d;
    if (c->lines <= 1) {
        ts_wqueue_count_dropped(w, d, c->lines);
        ts_warn("writer: HTTP 413 from %s for %s/%s: one line of %zu bytes is larger than the server accepts: "
                "dropped", host, d->d.db, ts_wqueue_rp(&d->d), c->body.len);
        if (c->is_retry) d->nretry--;
        ts_wspool_done(w, c);
        ts_wqueue_recycle_body(w, c);
        return 1;
    }
    size_t want = c->lines / 2, n = 0, cut = 0;
    for (size_t i = 0; i < c->body.len; i++)
        if (c->body.data[i] == '\n' && ++n == want) {
            cut = i + 1;
            break;
        }
    if (cut == 0 || cut >= c->body.len) return 0;   /* not line protocol we wrote: let it be classified */
    ts_wqueue_chunk *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->d = d;
    b->seq = c->seq;
    b->spooled = c->spooled;
    b->pos = c->pos;
    ts_buf_init(&b->body);
    ts_buf_add(&b->body, c->body.data + cut, c->body.len - cut);
    b->lines = c->lines - want;
    c->body.len = cut;
    c->body.data[cut] = '\0';
    c->lines = want;
    if (c->spooled) {
        if (!c->pieces) {
            c->pieces = malloc(sizeof *c->pieces);
            if (!c->pieces) abort();
            *c->pieces = 1;
        }
        ++*c->pieces;
        b->pieces = c->pieces;
    }
    ts_debug("writer: HTTP 413 from %s for %s/%s: resending as %zu + %zu lines", host, d->d.db,
             ts_wqueue_rp(&d->d), c->lines, b->lines);
    w->st.split_413++;
    int64_t now = ts_mono_ms();
    ts_wqueue_chunk *parts[2] = {c, b};
    for (int k = 0; k < 2; k++) {
        ts_wqueue_chunk *x = parts[k];
        if (!x->is_retry) { x->is_retry = 1; d->nretry++; }
        x->next_at = now;
        x->round_fails = 0;
        w->bytes_held += x->body.len;
        ts_wqueue_retry_insert(w, x);
    }
    return 1;
}

static void chunk_done(void *ud, ts_http_result *r) {
    ts_wqueue_chunk *c = ud;
    ts_writer *w = c->w;
    if (!w) { ts_wqueue_chunk_free(c); return; }   /* orphaned: nobody counts it any more */
    ts_wqueue_inflight_unlink(w, c);
    ts_wqueue_dest *d = c->d;
    char msg[512];
    if (r->curl_code != 0) snprintf(msg, sizeof msg, "%s", r->errmsg);
    else ts_influx_server_message(&r->body, msg, sizeof msg);
    int kind = ts_influx_classify(r, msg);
    /* the chunk's own URL: the server list may have been replaced meanwhile (SIGHUP) */
    char host[256];
    ts_influx_safe_url(host, sizeof host, c->url);
    /* its index means the same server only if the list still names it there */
    const char *now_at = ts_influx_url(w->influx, c->url_idx);
    int same = now_at && strncmp(c->url, now_at, strlen(now_at)) == 0 &&
               strcmp(c->url + strlen(now_at), d->path) == 0;

    /* what went over the wire, answered or not */
    w->st.bytes_sent += r->bytes_out;
    ts_counter_add(w->c_bytes, (int64_t)r->bytes_out);
    if (r->curl_code == 0 && r->status == 413) {
        w->st.requests_failed++;
        ts_counter_add(w->c_failed, 1);
        if (split_413(w, c, host)) {
            ts_wqueue_enforce_bound(w);
            ts_wqueue_pump(w);
            return;
        }
    }
    if (kind == TS_INFLUX_OK || kind == TS_INFLUX_REJECT || kind == TS_INFLUX_DROP) {
        /* this host answers: it becomes the preferred one, unless an earlier
         * one already is (a late answer after a failback must not undo it) */
        int cur = ts_influx_current(w->influx);
        if (same && kind != TS_INFLUX_DROP && (cur < 0 || c->url_idx <= cur))
            ts_influx_set_current(w->influx, c->url_idx);
        if (c->is_retry) d->nretry--;
        w->host_down = 0;
        ts_wsend_arm_probe(w);   /* failed over: look for an earlier server coming back */
    }
    if (kind == TS_INFLUX_OK) {
        w->st.requests_ok++;
        ts_counter_add(w->c_ok, 1);
        w->st.points_written += c->lines;
        d->written += c->lines;
        ts_counter_add(w->c_written, (int64_t)c->lines);
        ts_info("Sent %zu stats for %s", c->lines, d->d.db);
        ts_wspool_done(w, c);
        /* the destination works again: its other failed chunks go now */
        for (ts_wqueue_chunk *x = w->retry_head; x; x = x->next)
            if (x->d == d && x->next_at > ts_mono_ms()) x->next_at = ts_mono_ms();
        ts_wqueue_recycle_body(w, c);
        ts_wqueue_pump(w);
        return;
    }

    w->st.requests_failed++;
    ts_counter_add(w->c_failed, 1);
    if (kind == TS_INFLUX_REJECT) {
        size_t rej = ts_influx_rejected_count(msg, c->lines);
        w->st.points_rejected += rej;
        d->rejected += rej;
        d->written += c->lines - rej;
        ts_counter_add(w->c_rejected, (int64_t)rej);
        w->st.points_written += c->lines - rej;
        ts_counter_add(w->c_written, (int64_t)(c->lines - rej));
        ts_warn("writer: HTTP 400 from %s for %s/%s: %.300s (%zu of %zu points rejected, not retried)", host,
                d->d.db, ts_wqueue_rp(&d->d), msg, rej, c->lines);
        ts_wspool_done(w, c);
        ts_wqueue_recycle_body(w, c);
        ts_wqueue_pump(w);
        return;
    }
    if (kind == TS_INFLUX_DROP) {
        ts_wqueue_count_dropped(w, c->d, c->lines);
        ts_warn("writer: HTTP %ld from %s for %s/%s: %.300s (%zu points dropped, not retryable)", r->status,
                host, d->d.db, ts_wqueue_rp(&d->d), msg, c->lines);
        ts_wspool_done(w, c);
        ts_wqueue_recycle_body(w, c);
        ts_wqueue_pump(w);
        return;
    }

    /* kept for retry */
    if (!c->is_retry) { c->is_retry = 1; d->nretry++; }
    int64_t now = ts_mono_ms();
    if (kind == TS_INFLUX_HOST) {
        /* fail over: the next URL of the full list, every host stays in rotation */
        if (same) ts_influx_failed(w->influx, c->url_idx);
        if (++c->round_fails < ts_influx_nurls(w->influx)) {
            c->next_at = now;   /* another host has not been tried yet */
        } else {
            c->round_fails = 0;
            c->attempts++;
            c->next_at = now + ts_wqueue_backoff_ms(w, c->attempts);
            /* every server failed: ping instead of waiting out the backoff */
            if (!w->host_down) w->probe_next = 0;
            w->host_down = 1;
            ts_wsend_arm_probe(w);
        }
    } else {
        c->attempts++;
        c->next_at = now + ts_wqueue_backoff_ms(w, c->attempts);
    }
    if (r->status == 404 && strstr(msg, "database not found")) {
        /* Every chunk of every publish says the same thing until the schema
         * exists: one line a minute that says what to do, and a counter. */
        ts_counter_add(w->c_db_missing, 1);
        if (!w->db_missing_logged || now - w->db_missing_logged >= 60000) {
            w->db_missing_logged = now;
            ts_error("writer: %s has no database '%s' (HTTP 404 database not found): run `tstats setup-influx` "
                     "to create ATC's databases, retention policies and continuous queries; %zu points kept for "
                     "retry (repeated at most once a minute)", host, d->d.db, c->lines);
        }
    } else if (r->curl_code != 0)
        ts_warn("writer: request to %s for %s/%s failed: %.300s (%zu points kept, retry in %lld ms)", host,
                d->d.db, ts_wqueue_rp(&d->d), msg, c->lines, (long long)(c->next_at - now));
    else
        ts_warn("writer: HTTP %ld from %s for %s/%s: %.300s (%zu points kept, retry in %lld ms)", r->status, host,
                d->d.db, ts_wqueue_rp(&d->d), msg, c->lines, (long long)(c->next_at - now));
    ts_buf_shrink(&c->body, c->body.len + 1);
    w->bytes_held += c->body.len;
    ts_wqueue_retry_insert(w, c);
    ts_wqueue_enforce_bound(w);
    ts_wqueue_pump(w);
}

void ts_wsend_free(ts_writer *w) {
    if (w->probe_timer) ts_loop_timer_cancel(w->loop, w->probe_timer);
    w->probe_timer = 0;
    if (w->probe) w->probe->w = NULL;   /* freed by its completion */
    w->probe = NULL;
}
