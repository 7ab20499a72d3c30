/* Service metrics' JSON bodies (C core): /health, /ready and the status page's data,
 * rendered from a snapshot of the store (ts_metrics.h) on any thread. Kept apart from
 * the store and the Prometheus text so each file holds one concern. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "ts_metrics_json.h"

#define HIST_CAP TS_METRICS_HIST_CAP
#define HIST_SPAN_MS (3600 * 1000)   /* the status page's sparklines: the last hour */

typedef ts_metrics_hpoint hpoint;
typedef ts_metrics_rec rec;
typedef ts_metrics_drec drec;
typedef ts_metrics_snap snap;

static void jstr(ts_buf *b, const char *v) {
    ts_buf_addc(b, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') { ts_buf_addc(b, '\\'); ts_buf_addc(b, (char)*p); }
        else if (*p == '<') ts_buf_adds(b, "\\u003c");   /* safe inside an HTML <script> */
        else if (*p < 0x20) ts_buf_printf(b, "\\u%04x", *p);
        else ts_buf_addc(b, (char)*p);
    }
    ts_buf_addc(b, '"');
}

static void jnum(ts_buf *b, double v) {
    if (isnan(v) || isinf(v)) ts_buf_adds(b, "null");
    else ts_metrics_num(b, v);
}

/* The health verdict: reasons into `reasons` (a JSON array body), returns 1 when healthy. */
static int health_of(const snap *s, ts_buf *reasons, ts_buf *cdns) {
    int ok = 1, nr = 0;
    int n = s->in.health_intervals > 0 ? s->in.health_intervals : 3;
    int64_t poll_limit = s->in.poll_interval_ms * n, write_limit = s->in.publish_interval_ms * n;
    ts_buf msg;
    ts_buf_init(&msg);
#define REASON(...) do { \
        ts_buf_reset(&msg); \
        ts_buf_printf(&msg, __VA_ARGS__); \
        if (nr++) ts_buf_addc(reasons, ','); \
        jstr(reasons, msg.data); \
        ok = 0; \
    } while (0)
    if (!s->have_plan) REASON("no polling plan yet (Traffic Ops not reached, no saved copy)");
    int ncdn = 0;
    for (int i = 0; i < s->nrecs; i++) {
        const rec *r = &s->recs[i];
        if (!r->active) continue;
        if (cdns) {
            if (ncdn++) ts_buf_addc(cdns, ',');
            ts_buf_adds(cdns, "{\"cdn\":");
            jstr(cdns, r->cdn);
            ts_buf_adds(cdns, ",\"endpoint\":");
            jstr(cdns, r->ep);
            ts_buf_adds(cdns, ",\"last_success_age_s\":");
            jnum(cdns, r->last_ok_ms ? (double)(s->now_ms - r->last_ok_ms) / 1000.0 : NAN);
            ts_buf_addc(cdns, '}');
        }
        if (!r->last_ok_ms) REASON("%s %s: no successful poll yet%s%s", r->cdn, r->ep, r->error[0] ? " (last error: " : "",
                                   r->error[0] ? r->error : "");
        else if (s->now_ms - r->last_ok_ms > poll_limit)
            REASON("%s %s: last successful poll %.0f s ago (limit %.0f s)%s%s", r->cdn, r->ep,
                   (double)(s->now_ms - r->last_ok_ms) / 1000.0, (double)poll_limit / 1000.0,
                   r->error[0] ? "; last error: " : "", r->error);
    }
    /* written, per CDN: each destination its points go to took a write after them.
     * The limit has one polling interval more: a poll's points reach the writer at
     * the publishing tick after the poll ends. */
    int64_t dest_limit = write_limit + s->in.poll_interval_ms;
    for (int i = 0; i < s->nrecs; i++) {
        const rec *r = &s->recs[i];
        if (!r->active || !r->db[0]) continue;
        int seen = 0;   /* one reason per CDN and destination */
        for (int j = 0; j < i && !seen; j++)
            seen = s->recs[j].active && !strcmp(s->recs[j].cdn, r->cdn) && !strcmp(s->recs[j].db, r->db) &&
                   !strcmp(s->recs[j].rp, r->rp);
        const drec *d = ts_metrics_snap_drec(s, r->db, r->rp);
        if (seen || !d || !d->known || !d->unwritten_since_ms || s->now_ms - d->unwritten_since_ms <= dest_limit)
            continue;
        REASON("%s: its points for %s%s%s are not being written: none acknowledged for %.0f s (limit %.0f s; %llu pending)",
               r->cdn, d->db, d->rp[0] ? "." : "", d->rp, (double)(s->now_ms - d->unwritten_since_ms) / 1000.0,
               (double)dest_limit / 1000.0, (unsigned long long)d->pending);
    }
    if (s->pending_since_ms && s->in.points_pending) {
        int64_t since = s->last_write_ms > s->pending_since_ms ? s->last_write_ms : s->pending_since_ms;
        if (s->now_ms - since > write_limit)
            REASON("influxdb: %llu points pending and nothing written for %.0f s (limit %.0f s)",
                   (unsigned long long)s->in.points_pending, (double)(s->now_ms - since) / 1000.0,
                   (double)write_limit / 1000.0);
    }
#undef REASON
    ts_buf_free(&msg);
    return ok;
}

int ts_metrics_render_health(ts_metrics *m, ts_buf *b) {
    snap s;
    ts_metrics_snap_take(m, &s, 0);
    ts_buf reasons, cdns;
    ts_buf_init(&reasons);
    ts_buf_init(&cdns);
    ts_buf_adds(&reasons, "");
    ts_buf_adds(&cdns, "");
    int ok = health_of(&s, &reasons, &cdns);
    ts_buf_printf(b, "{\"status\":\"%s\",\"reasons\":[%s],\"endpoints\":[%s],\"intervals\":%d,"
                     "\"polling_interval_s\":%.0f,\"publishing_interval_s\":%.0f}\n",
                  ok ? "ok" : "unhealthy", reasons.data, cdns.data, s.in.health_intervals,
                  (double)s.in.poll_interval_ms / 1000.0, (double)s.in.publish_interval_ms / 1000.0);
    ts_buf_free(&reasons);
    ts_buf_free(&cdns);
    ts_metrics_snap_free(&s);
    return ok ? 200 : 503;
}

int ts_metrics_render_ready(ts_metrics *m, ts_buf *b) {
    snap s;
    ts_metrics_snap_take(m, &s, 0);
    int ready = s.have_plan && s.polled_since_plan;
    const char *why = !s.have_plan ? "waiting for Traffic Ops (no polling plan yet)"
                                   : !s.polled_since_plan ? "waiting for the first poll" : "";
    ts_buf_printf(b, "{\"ready\":%s", ready ? "true" : "false");
    if (!ready) {
        ts_buf_adds(b, ",\"reason\":");
        jstr(b, why);
    }
    ts_buf_adds(b, "}\n");
    ts_metrics_snap_free(&s);
    return ready ? 200 : 503;
}

void ts_metrics_render_status(ts_metrics *m, ts_buf *b) {
    snap s;
    ts_metrics_snap_take(m, &s, 1);
    ts_buf reasons;
    ts_buf_init(&reasons);
    ts_buf_adds(&reasons, "");
    int ok = health_of(&s, &reasons, NULL);
    ts_buf_adds(b, "{\"version\":");
    jstr(b, s.version);
    ts_buf_printf(b, ",\"now_ms\":%lld,\"start_ms\":%lld,\"polling_interval_s\":%.0f,\"healthy\":%s,\"reasons\":[%s]",
                  (long long)s.now_ms, (long long)s.start_ms, (double)s.in.poll_interval_ms / 1000.0,
                  ok ? "true" : "false", reasons.data);
    ts_buf_adds(b, ",\"plan_age_s\":");
    jnum(b, s.have_plan ? (double)(s.now_ms - s.plan_ms) / 1000.0 : NAN);
    ts_buf_adds(b, ",\"cdns\":[");
    /* group the active records by CDN, in first-seen order */
    int ncdn = 0;
    for (int i = 0; i < s.nrecs; i++) {
        if (!s.recs[i].active) continue;
        int first = 1;
        for (int j = 0; j < i; j++)
            if (s.recs[j].active && strcmp(s.recs[j].cdn, s.recs[i].cdn) == 0) first = 0;
        if (!first) continue;
        if (ncdn++) ts_buf_addc(b, ',');
        ts_buf_adds(b, "{\"name\":");
        jstr(b, s.recs[i].cdn);
        int64_t sum_t = 0;
        for (int k = 0; k < s.nsummaries; k++)
            if (strcmp(s.summaries[k].cdn, s.recs[i].cdn) == 0) sum_t = s.summaries[k].t_ms;
        ts_buf_adds(b, ",\"summary_age_s\":");
        jnum(b, sum_t ? (double)(s.now_ms - sum_t) / 1000.0 : NAN);
        ts_buf_adds(b, ",\"endpoints\":[");
        int nep = 0;
        for (int j = i; j < s.nrecs; j++) {
            const rec *r = &s.recs[j];
            if (!r->active || strcmp(r->cdn, s.recs[i].cdn) != 0) continue;
            if (nep++) ts_buf_addc(b, ',');
            ts_buf_adds(b, "{\"name\":");
            jstr(b, r->ep);
            ts_buf_adds(b, ",\"monitor\":");
            jstr(b, r->monitor);
            ts_buf_adds(b, ",\"last_poll_age_s\":");
            jnum(b, r->last_poll_ms ? (double)(s.now_ms - r->last_poll_ms) / 1000.0 : NAN);
            ts_buf_printf(b, ",\"outcome\":\"%s\",\"error\":", !r->last_poll_ms ? "none" : r->last_ok ? "ok" : "failed");
            jstr(b, r->error);
            ts_buf_printf(b, ",\"points\":%llu,\"duration_ms\":%lld,\"polls\":%llu,\"failures\":%llu,\"failovers\":%llu",
                          (unsigned long long)r->last_points, (long long)r->last_dur_ms, (unsigned long long)r->polls,
                          (unsigned long long)r->failures, (unsigned long long)r->failovers);
            /* the last hour: [age_s, points, ms, ok] oldest first */
            ts_buf_adds(b, ",\"history\":[");
            int nh = 0;
            for (int k = 0; r->hist && k < r->hlen; k++) {
                const hpoint *h = &r->hist[(r->hhead + k) % HIST_CAP];
                if (s.now_ms - h->t_ms > HIST_SPAN_MS) continue;
                if (nh++) ts_buf_addc(b, ',');
                ts_buf_printf(b, "[%.1f,%u,%u,%d]", (double)(s.now_ms - h->t_ms) / 1000.0, h->points, h->dur_ms, h->ok);
            }
            ts_buf_adds(b, "]}");
        }
        ts_buf_adds(b, "]}");
    }
    ts_buf_printf(b, "],\"writer\":{\"pending\":%llu,\"pending_bytes\":%llu,\"written\":%llu,\"rejected\":%llu,"
                     "\"dropped\":%llu,\"retries\":%llu,\"retry_chunks\":%llu,\"backoff_s\":%.1f,\"url\":",
                  (unsigned long long)s.in.points_pending, (unsigned long long)s.in.bytes_pending,
                  (unsigned long long)s.in.points_written, (unsigned long long)s.in.points_rejected,
                  (unsigned long long)s.in.points_dropped, (unsigned long long)s.in.retries,
                  (unsigned long long)s.in.retry_chunks, (double)s.in.backoff_ms / 1000.0);
    jstr(b, s.in.writer_url);
    ts_buf_adds(b, ",\"last_write_age_s\":");
    jnum(b, s.last_write_ms ? (double)(s.now_ms - s.last_write_ms) / 1000.0 : NAN);
    ts_buf_adds(b, "},\"spool\":");
    if (s.in.spool_enabled) {
        ts_buf_printf(b, "{\"bytes\":%llu,\"backlog_bytes\":%llu,\"targets\":[", (unsigned long long)s.in.spool_bytes,
                      (unsigned long long)s.in.spool_backlog_bytes);
        for (int i = 0; i < s.ntargets; i++) {
            ts_buf_adds(b, i ? ",{\"name\":" : "{\"name\":");
            jstr(b, s.targets[i].name);
            ts_buf_printf(b, ",\"backlog_bytes\":%llu,\"oldest_age_s\":", (unsigned long long)s.targets[i].backlog_bytes);
            jnum(b, s.targets[i].oldest_age_ms >= 0 ? (double)s.targets[i].oldest_age_ms / 1000.0 : NAN);
            ts_buf_addc(b, '}');
        }
        ts_buf_adds(b, "]}");
    } else ts_buf_adds(b, "null");
    ts_buf_adds(b, "}");
    ts_buf_free(&reasons);
    ts_metrics_snap_free(&s);
}
