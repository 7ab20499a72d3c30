/* Service metrics (C core): the store behind /metrics, /health, /ready and the status page
 * (ts_metrics.h). Records are per (CDN, endpoint) and live as long as the process, so
 * counters never go back when a plan changes. Rendering copies the store under the mutex
 * and formats outside it. Prometheus text follows the exposition format 0.0.4: HELP and
 * TYPE once per family, label values escaped, counters end in _total, base units. */
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "ts_clock.h"
#include "ts_counter.h"
#include "ts_metrics.h"

#define HIST_CAP TS_METRICS_HIST_CAP
#define MAX_COUNTERS TS_METRICS_MAX_COUNTERS
#define MAX_SUMMARIES TS_METRICS_MAX_SUMMARIES

static const double bucket_le[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define NBUCKETS TS_METRICS_NBUCKETS
_Static_assert(sizeof bucket_le / sizeof bucket_le[0] == NBUCKETS, "one count per bucket bound");

typedef ts_metrics_hpoint hpoint;
typedef ts_metrics_rec rec;
typedef ts_metrics_drec drec;
typedef ts_metrics_crec crec;
typedef ts_metrics_srec srec;
typedef ts_metrics_snap snap;

struct ts_metrics {
    pthread_mutex_t mu;
    char version[64];
    int64_t start_ms;
    rec *recs;
    int nrecs, caprecs;
    drec *drecs;
    int ndrecs, capdrecs;
    ts_metrics_inputs in;        /* dests copied into wdests */
    ts_metrics_dest *wdests;
    int nwdests, capwdests;
    ts_metrics_target *targets;
    int ntargets, captargets;
    crec counters[MAX_COUNTERS];
    int ncounters;
    srec summaries[MAX_SUMMARIES];
    int nsummaries;
    int have_plan, polled_since_plan, plan_endpoints;
    int64_t plan_ms;
    uint64_t refresh_ok, refresh_failed;
    int64_t last_write_ms, pending_since_ms;
    uint64_t last_written;
};

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

ts_metrics *ts_metrics_new(const char *version) {
    ts_metrics *m = calloc(1, sizeof *m);
    if (!m) abort();
    pthread_mutex_init(&m->mu, NULL);
    snprintf(m->version, sizeof m->version, "%s", version ? version : "");
    m->start_ms = ts_now_ms();
    m->in.health_intervals = 3;
    m->in.poll_interval_ms = 10000;
    m->in.publish_interval_ms = 30000;
    return m;
}

void ts_metrics_free(ts_metrics *m) {
    if (!m) return;
    for (int i = 0; i < m->nrecs; i++) free(m->recs[i].hist);
    free(m->recs);
    free(m->drecs);
    free(m->wdests);
    free(m->targets);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- loop side (callers hold nothing; each takes the lock briefly) ---- */

static rec *rec_get(ts_metrics *m, const char *cdn, const char *ep) {
    for (int i = 0; i < m->nrecs; i++)
        if (strcmp(m->recs[i].cdn, cdn) == 0 && strcmp(m->recs[i].ep, ep) == 0) return &m->recs[i];
    if (m->nrecs == m->caprecs) {
        m->caprecs = m->caprecs ? m->caprecs * 2 : 8;
        m->recs = xrealloc(m->recs, (size_t)m->caprecs * sizeof *m->recs);
    }
    rec *r = &m->recs[m->nrecs++];
    memset(r, 0, sizeof *r);
    snprintf(r->cdn, sizeof r->cdn, "%s", cdn);
    snprintf(r->ep, sizeof r->ep, "%s", ep);
    return r;
}

static drec *drec_get(ts_metrics *m, const char *db, const char *rp) {
    for (int i = 0; i < m->ndrecs; i++)
        if (strcmp(m->drecs[i].db, db) == 0 && strcmp(m->drecs[i].rp, rp) == 0) return &m->drecs[i];
    if (m->ndrecs == m->capdrecs) {
        m->capdrecs = m->capdrecs ? m->capdrecs * 2 : 4;
        m->drecs = xrealloc(m->drecs, (size_t)m->capdrecs * sizeof *m->drecs);
    }
    drec *d = &m->drecs[m->ndrecs++];
    memset(d, 0, sizeof *d);
    snprintf(d->db, sizeof d->db, "%s", db);
    snprintf(d->rp, sizeof d->rp, "%s", rp);
    return d;
}

void ts_metrics_poll_done(ts_metrics *m, const ts_poll_event *e) {
    int64_t now = ts_now_ms();
    pthread_mutex_lock(&m->mu);
    rec *r = rec_get(m, e->cdn ? e->cdn : "", e->endpoint ? e->endpoint : "");
    r->polls++;
    if (!e->ok) r->failures++;
    r->failovers += (uint64_t)(e->failovers > 0 ? e->failovers : 0);
    r->bytes += e->bytes;
    double s = (double)e->duration_ms / 1000.0;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (s <= bucket_le[i]) r->bucket[i]++;
    r->hcount++;
    r->hsum += s;
    r->last_poll_ms = now;
    r->last_dur_ms = e->duration_ms;
    r->last_ok = e->ok;
    if (e->ok) {
        r->last_ok_ms = now;
        r->last_points = e->points;
        r->error[0] = '\0';
    } else {
        snprintf(r->error, sizeof r->error, "%s", e->error ? e->error : "failed");
    }
    /* the monitor is its base URL: the path and stats= list say nothing about which one */
    const char *mon = e->monitor ? e->monitor : "", *sch = strstr(mon, "://");
    const char *slash = sch ? strchr(sch + 3, '/') : NULL;
    snprintf(r->monitor, sizeof r->monitor, "%.*s", slash ? (int)(slash - mon) : (int)strlen(mon), mon);
    if (!r->hist) r->hist = xrealloc(NULL, HIST_CAP * sizeof *r->hist);
    hpoint *h = &r->hist[(r->hhead + r->hlen) % HIST_CAP];
    if (r->hlen < HIST_CAP) r->hlen++;
    else r->hhead = (r->hhead + 1) % HIST_CAP;
    h->t_ms = now;
    h->points = (uint32_t)(e->ok ? (e->points > UINT32_MAX ? UINT32_MAX : e->points) : 0);
    h->dur_ms = (uint32_t)(e->duration_ms < 0 ? 0 : e->duration_ms > (int64_t)UINT32_MAX ? UINT32_MAX : e->duration_ms);
    h->ok = e->ok;
    if (e->ok && e->db) {
        drec *d = drec_get(m, e->db, e->rp ? e->rp : "");
        d->collected += e->points;
        if (e->points) {
            if (!d->unwritten_since_ms) d->unwritten_since_ms = now;
            snprintf(r->db, sizeof r->db, "%s", d->db);
            snprintf(r->rp, sizeof r->rp, "%s", d->rp);
        }
    }
    m->polled_since_plan = 1;
    pthread_mutex_unlock(&m->mu);
}

void ts_metrics_plan_begin(ts_metrics *m) {
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->nrecs; i++) m->recs[i].active = 0;
    m->plan_endpoints = 0;
    pthread_mutex_unlock(&m->mu);
}

void ts_metrics_plan_endpoint(ts_metrics *m, const char *cdn, const char *endpoint) {
    pthread_mutex_lock(&m->mu);
    rec *r = rec_get(m, cdn ? cdn : "", endpoint ? endpoint : "");
    if (!r->active) m->plan_endpoints++;
    r->active = 1;
    pthread_mutex_unlock(&m->mu);
}

void ts_metrics_plan_end(ts_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->have_plan = 1;
    m->plan_ms = ts_now_ms();
    pthread_mutex_unlock(&m->mu);
}

void ts_metrics_refresh_done(ts_metrics *m, int ok) {
    pthread_mutex_lock(&m->mu);
    if (ok) m->refresh_ok++;
    else m->refresh_failed++;
    pthread_mutex_unlock(&m->mu);
}

void ts_metrics_summary_done(ts_metrics *m, const char *cdn, int64_t t_ms) {
    if (!cdn) return;
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->nsummaries; i++)
        if (strcmp(m->summaries[i].cdn, cdn) == 0) break;
    if (i == m->nsummaries && m->nsummaries < MAX_SUMMARIES) {
        snprintf(m->summaries[i].cdn, sizeof m->summaries[i].cdn, "%s", cdn);
        m->summaries[i].t_ms = 0;
        m->nsummaries++;
    }
    if (i < m->nsummaries && t_ms > m->summaries[i].t_ms) m->summaries[i].t_ms = t_ms;
    pthread_mutex_unlock(&m->mu);
}

static void copy_counter(void *ud, const char *name, int64_t value) {
    ts_metrics *m = ud;
    if (m->ncounters < MAX_COUNTERS) m->counters[m->ncounters++] = (crec){name, value};
}

void ts_metrics_publish(ts_metrics *m, const ts_metrics_inputs *in) {
    int64_t now = ts_now_ms();
    pthread_mutex_lock(&m->mu);
    m->in = *in;
    m->in.dests = NULL;
    m->in.targets = NULL;
    if (in->ntargets > m->captargets) {
        m->captargets = in->ntargets;
        m->targets = xrealloc(m->targets, (size_t)m->captargets * sizeof *m->targets);
    }
    m->ntargets = in->ntargets > 0 ? in->ntargets : 0;
    if (m->ntargets) memcpy(m->targets, in->targets, (size_t)m->ntargets * sizeof *m->targets);
    if (in->ndests > m->capwdests) {
        m->capwdests = in->ndests;
        m->wdests = xrealloc(m->wdests, (size_t)m->capwdests * sizeof *m->wdests);
    }
    m->nwdests = in->ndests > 0 ? in->ndests : 0;
    if (m->nwdests) memcpy(m->wdests, in->dests, (size_t)m->nwdests * sizeof *m->wdests);
    for (int i = 0; i < m->nwdests; i++) {
        drec *d = drec_get(m, m->wdests[i].db, m->wdests[i].rp);
        d->known = 1;
        d->pending = m->wdests[i].pending;
        if (m->wdests[i].written != d->written_seen) {
            d->written_seen = m->wdests[i].written;
            d->last_write_ms = now;
            /* what is still pending came after this write: its own wait starts now */
            d->unwritten_since_ms = d->pending ? now : 0;
        }
    }
    /* "written within N intervals": the last time the written count moved, and since when
     * points have waited without it moving. */
    if (in->points_written != m->last_written) {
        m->last_written = in->points_written;
        m->last_write_ms = now;
        m->pending_since_ms = in->points_pending ? now : 0;
    } else if (in->points_pending && !m->pending_since_ms) {
        m->pending_since_ms = now;
    } else if (!in->points_pending) {
        m->pending_since_ms = 0;
    }
    m->ncounters = 0;
    ts_counters_foreach(copy_counter, m);
    pthread_mutex_unlock(&m->mu);
}

/* ---- snapshot: what a renderer copies under the lock ---- */

static void *dup_mem(const void *p, size_t n) {
    void *q = xrealloc(NULL, n);
    if (n) memcpy(q, p, n);
    return q;
}

void ts_metrics_snap_take(ts_metrics *m, snap *s, int with_hist) {
    pthread_mutex_lock(&m->mu);
    s->in = m->in;
    memcpy(s->version, m->version, sizeof s->version);
    s->start_ms = m->start_ms;
    s->plan_ms = m->plan_ms;
    s->last_write_ms = m->last_write_ms;
    s->pending_since_ms = m->pending_since_ms;
    s->nrecs = m->nrecs;
    s->recs = dup_mem(m->recs, (size_t)m->nrecs * sizeof *m->recs);
    for (int i = 0; i < s->nrecs; i++)
        s->recs[i].hist = with_hist && m->recs[i].hist ? dup_mem(m->recs[i].hist, HIST_CAP * sizeof(hpoint)) : NULL;
    s->ndrecs = m->ndrecs;
    s->drecs = dup_mem(m->drecs, (size_t)m->ndrecs * sizeof *m->drecs);
    s->nwdests = m->nwdests;
    s->wdests = dup_mem(m->wdests, (size_t)m->nwdests * sizeof *m->wdests);
    s->ntargets = m->ntargets;
    s->targets = dup_mem(m->targets, (size_t)m->ntargets * sizeof *m->targets);
    s->ncounters = m->ncounters;
    memcpy(s->counters, m->counters, (size_t)m->ncounters * sizeof *m->counters);
    s->nsummaries = m->nsummaries;
    memcpy(s->summaries, m->summaries, (size_t)m->nsummaries * sizeof *m->summaries);
    s->have_plan = m->have_plan;
    s->polled_since_plan = m->polled_since_plan;
    s->plan_endpoints = m->plan_endpoints;
    s->refresh_ok = m->refresh_ok;
    s->refresh_failed = m->refresh_failed;
    pthread_mutex_unlock(&m->mu);
    s->now_ms = ts_now_ms();
}

void ts_metrics_snap_free(snap *s) {
    for (int i = 0; i < s->nrecs; i++) free(s->recs[i].hist);
    free(s->recs);
    free(s->drecs);
    free(s->wdests);
    free(s->targets);
}

static int64_t counter_value(const snap *s, const char *name) {
    for (int i = 0; i < s->ncounters; i++)
        if (strcmp(s->counters[i].name, name) == 0) return s->counters[i].value;
    return 0;
}

/* ---- Prometheus text ---- */

static void label_value(ts_buf *b, const char *v) {
    for (const char *p = v; *p; p++) {
        if (*p == '\\') ts_buf_adds(b, "\\\\");
        else if (*p == '"') ts_buf_adds(b, "\\\"");
        else if (*p == '\n') ts_buf_adds(b, "\\n");
        else ts_buf_addc(b, *p);
    }
}

static void family(ts_buf *b, const char *name, const char *type, const char *help) {
    ts_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ts_metrics_num(ts_buf *b, double v) {
    if (isnan(v)) ts_buf_adds(b, "NaN");
    else if (v == floor(v) && fabs(v) < 9e15) ts_buf_printf(b, "%.0f", v);
    else {
        /* the shortest of %.15g / %.17g that reads back as the same double */
        char t[40];
        snprintf(t, sizeof t, "%.15g", v);
        if (strtod(t, NULL) != v) snprintf(t, sizeof t, "%.17g", v);
        ts_buf_adds(b, t);
    }
}

static void sample_ep(ts_buf *b, const char *name, const rec *r, double v) {
    ts_buf_printf(b, "%s{cdn=\"", name);
    label_value(b, r->cdn);
    ts_buf_adds(b, "\",endpoint=\"");
    label_value(b, r->ep);
    ts_buf_adds(b, "\"} ");
    ts_metrics_num(b, v);
    ts_buf_addc(b, '\n');
}

/* name{target="...",kind="..." (the caller closes the braces) */
static void target_labels(ts_buf *b, const char *name, const ts_metrics_output *t) {
    ts_buf_printf(b, "%s{target=\"", name);
    label_value(b, t->name);
    ts_buf_adds(b, "\",kind=\"");
    label_value(b, t->kind);
    ts_buf_adds(b, "\"");
}

static void sample_dest(ts_buf *b, const char *name, const char *db, const char *rp, double v) {
    ts_buf_printf(b, "%s{db=\"", name);
    label_value(b, db);
    ts_buf_adds(b, "\",rp=\"");
    label_value(b, rp);
    ts_buf_adds(b, "\"} ");
    ts_metrics_num(b, v);
    ts_buf_addc(b, '\n');
}

static void sample(ts_buf *b, const char *name, double v) {
    ts_buf_printf(b, "%s ", name);
    ts_metrics_num(b, v);
    ts_buf_addc(b, '\n');
}

static double cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return NAN;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return NAN;
    unsigned long size = 0, res = 0;
    int n = fscanf(f, "%lu %lu", &size, &res);
    fclose(f);
    return n == 2 ? (double)res * (double)sysconf(_SC_PAGESIZE) : NAN;
}

const drec *ts_metrics_snap_drec(const snap *s, const char *db, const char *rp) {
    for (int i = 0; i < s->ndrecs; i++)
        if (strcmp(s->drecs[i].db, db) == 0 && strcmp(s->drecs[i].rp, rp) == 0) return &s->drecs[i];
    return NULL;
}

void ts_metrics_render_prometheus(ts_metrics *m, ts_buf *b) {
    snap s;
    ts_metrics_snap_take(m, &s, 0);
    family(b, "tstats_build_info", "gauge", "Version of the running tstats (always 1).");
    ts_buf_adds(b, "tstats_build_info{version=\"");
    label_value(b, s.version);
    ts_buf_adds(b, "\",lua=\"" LUA_RELEASE "\"} 1\n");
    family(b, "tstats_start_time_seconds", "gauge", "Start of the process, seconds since the epoch.");
    sample(b, "tstats_start_time_seconds", (double)s.start_ms / 1000.0);
    family(b, "tstats_process_cpu_seconds_total", "counter", "User and system CPU time of the process.");
    sample(b, "tstats_process_cpu_seconds_total", cpu_seconds());
    family(b, "tstats_process_resident_memory_bytes", "gauge", "Resident set size of the process.");
    sample(b, "tstats_process_resident_memory_bytes", rss_bytes());

    /* per CDN and endpoint */
    family(b, "tstats_polls_total", "counter", "Fetches of an endpoint (each tries the monitors in turn).");
    for (int i = 0; i < s.nrecs; i++) sample_ep(b, "tstats_polls_total", &s.recs[i], (double)s.recs[i].polls);
    family(b, "tstats_poll_failures_total", "counter", "Fetches where every monitor failed (timeslot skipped).");
    for (int i = 0; i < s.nrecs; i++) sample_ep(b, "tstats_poll_failures_total", &s.recs[i], (double)s.recs[i].failures);
    family(b, "tstats_monitor_failovers_total", "counter", "Moves to the next Traffic Monitor after a failure.");
    for (int i = 0; i < s.nrecs; i++) sample_ep(b, "tstats_monitor_failovers_total", &s.recs[i], (double)s.recs[i].failovers);
    family(b, "tstats_monitor_in_use", "gauge", "The Traffic Monitor the endpoint's last fetch used (1).");
    for (int i = 0; i < s.nrecs; i++) {
        const rec *r = &s.recs[i];
        if (!r->active || !r->monitor[0]) continue;
        ts_buf_adds(b, "tstats_monitor_in_use{cdn=\"");
        label_value(b, r->cdn);
        ts_buf_adds(b, "\",endpoint=\"");
        label_value(b, r->ep);
        ts_buf_adds(b, "\",monitor=\"");
        label_value(b, r->monitor);
        ts_buf_adds(b, "\"} 1\n");
    }
    family(b, "tstats_poll_duration_seconds", "histogram", "Duration of a fetch, over every monitor tried.");
    for (int i = 0; i < s.nrecs; i++) {
        const rec *r = &s.recs[i];
        for (size_t k = 0; k <= NBUCKETS; k++) {
            ts_buf_adds(b, "tstats_poll_duration_seconds_bucket{cdn=\"");
            label_value(b, r->cdn);
            ts_buf_adds(b, "\",endpoint=\"");
            label_value(b, r->ep);
            if (k < NBUCKETS) ts_buf_printf(b, "\",le=\"%g\"} %llu\n", bucket_le[k], (unsigned long long)r->bucket[k]);
            else ts_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)r->hcount);
        }
        sample_ep(b, "tstats_poll_duration_seconds_sum", r, r->hsum);
        sample_ep(b, "tstats_poll_duration_seconds_count", r, (double)r->hcount);
    }
    family(b, "tstats_poll_points", "gauge", "Points the endpoint's last successful fetch produced.");
    for (int i = 0; i < s.nrecs; i++) sample_ep(b, "tstats_poll_points", &s.recs[i], (double)s.recs[i].last_points);
    family(b, "tstats_poll_received_bytes_total", "counter", "Bytes of Traffic Monitor answers received.");
    for (int i = 0; i < s.nrecs; i++) sample_ep(b, "tstats_poll_received_bytes_total", &s.recs[i], (double)s.recs[i].bytes);
    family(b, "tstats_last_poll_success_timestamp_seconds", "gauge", "Last successful fetch, seconds since the epoch (0: never).");
    for (int i = 0; i < s.nrecs; i++)
        sample_ep(b, "tstats_last_poll_success_timestamp_seconds", &s.recs[i], (double)s.recs[i].last_ok_ms / 1000.0);

    /* per destination */
    family(b, "tstats_points_collected_total", "counter", "Points collected for a destination (database, retention policy).");
    for (int i = 0; i < s.ndrecs; i++)
        sample_dest(b, "tstats_points_collected_total", s.drecs[i].db, s.drecs[i].rp, (double)s.drecs[i].collected);
    if (s.nwdests > 0) {
        static const struct { const char *name, *type, *help; } fam[] = {
            {"tstats_points_written_total", "counter", "Points InfluxDB acknowledged."},
            {"tstats_points_rejected_total", "counter", "Points InfluxDB refused (400 partial writes)."},
            {"tstats_points_dropped_total", "counter", "Points dropped by tstats (memory bound, shutdown timeout)."},
            {"tstats_points_pending", "gauge", "Points buffered or retrying now."},
        };
        for (int f = 0; f < 4; f++) {
            family(b, fam[f].name, fam[f].type, fam[f].help);
            for (int i = 0; i < s.nwdests; i++) {
                const ts_metrics_dest *d = &s.wdests[i];
                uint64_t v = f == 0 ? d->written : f == 1 ? d->rejected : f == 2 ? d->dropped : d->pending;
                sample_dest(b, fam[f].name, d->db, d->rp, (double)v);
            }
            /* a destination polled but not yet known to the writer */
            for (int i = 0; i < s.ndrecs; i++) {
                int known = 0;
                for (int j = 0; j < s.nwdests; j++)
                    if (!strcmp(s.wdests[j].db, s.drecs[i].db) && !strcmp(s.wdests[j].rp, s.drecs[i].rp)) known = 1;
                if (!known) sample_dest(b, fam[f].name, s.drecs[i].db, s.drecs[i].rp, 0);
            }
        }
    } else {
        family(b, "tstats_points_written_total", "counter", "Points InfluxDB acknowledged.");
        sample(b, "tstats_points_written_total", (double)s.in.points_written);
        family(b, "tstats_points_rejected_total", "counter", "Points InfluxDB refused (400 partial writes).");
        sample(b, "tstats_points_rejected_total", (double)s.in.points_rejected);
        family(b, "tstats_points_dropped_total", "counter", "Points dropped by tstats (memory bound, shutdown timeout).");
        sample(b, "tstats_points_dropped_total", (double)s.in.points_dropped);
        family(b, "tstats_points_pending", "gauge", "Points buffered or retrying now.");
        sample(b, "tstats_points_pending", (double)s.in.points_pending);
    }

    /* writer */
    family(b, "tstats_writer_pending_bytes", "gauge", "Memory held by pending and retrying points.");
    sample(b, "tstats_writer_pending_bytes", (double)s.in.bytes_pending);
    family(b, "tstats_writer_sent_bytes_total", "counter", "Bytes of write requests sent to InfluxDB.");
    sample(b, "tstats_writer_sent_bytes_total", (double)s.in.bytes_sent);
    family(b, "tstats_writer_requests_total", "counter", "Write requests by outcome.");
    ts_buf_printf(b, "tstats_writer_requests_total{outcome=\"ok\"} %llu\n", (unsigned long long)s.in.requests_ok);
    ts_buf_printf(b, "tstats_writer_requests_total{outcome=\"failed\"} %llu\n", (unsigned long long)s.in.requests_failed);
    family(b, "tstats_writer_retries_total", "counter", "Write requests retried after a failure.");
    sample(b, "tstats_writer_retries_total", (double)s.in.retries);
    family(b, "tstats_writer_retry_chunks", "gauge", "Chunks waiting out a backoff before their next attempt.");
    sample(b, "tstats_writer_retry_chunks", (double)s.in.retry_chunks);
    family(b, "tstats_writer_backoff_seconds", "gauge", "Time until the next retry (0: nothing waiting).");
    sample(b, "tstats_writer_backoff_seconds", (double)s.in.backoff_ms / 1000.0);
    if (s.in.writer_url[0]) {
        family(b, "tstats_writer_url_in_use", "gauge", "The InfluxDB URL the writer prefers now (1).");
        ts_buf_adds(b, "tstats_writer_url_in_use{url=\"");
        label_value(b, s.in.writer_url);
        ts_buf_adds(b, "\"} 1\n");
    }
    if (s.in.noutputs > 0) {
        family(b, "tstats_target_points_total", "counter",
               "Points per target (InfluxDB server or list, Kafka) by outcome: acknowledged, refused, dropped.");
        for (int i = 0; i < 3 * s.in.noutputs; i++) {
            const ts_metrics_output *t = &s.in.outputs[i / 3];
            uint64_t v[3] = {t->written, t->rejected, t->dropped};
            target_labels(b, "tstats_target_points_total", t);
            ts_buf_printf(b, ",outcome=\"%s\"} %llu\n", i % 3 == 0 ? "written" : i % 3 == 1 ? "rejected" : "dropped",
                          (unsigned long long)v[i % 3]);
        }
        static const char *const fam[3][2] = {
            {"tstats_target_pending_points", "Points a target holds now (queued, retrying, in flight)."},
            {"tstats_target_spool_backlog_bytes", "Spool bytes a target has not acknowledged."},
            {"tstats_target_up", "1 while a target's destination takes data."}};
        for (int f = 0; f < 3; f++) {
            family(b, fam[f][0], "gauge", fam[f][1]);
            for (const ts_metrics_output *t = s.in.outputs; t < s.in.outputs + s.in.noutputs; t++) {
                target_labels(b, fam[f][0], t);
                uint64_t v = f == 0 ? t->pending : f == 1 ? t->spool_backlog_bytes : (uint64_t)(t->healthy != 0);
                ts_buf_printf(b, "} %llu\n", (unsigned long long)v);
            }
        }
    }
    if (s.in.spool_enabled) {
        family(b, "tstats_spool_bytes", "gauge", "Bytes of the on-disk spool's segments.");
        sample(b, "tstats_spool_bytes", (double)s.in.spool_bytes);
        /* backlog: what is left to send (records acknowledged out of order are not counted);
         * replay: from the durable position on, what a restart would read again */
        family(b, "tstats_spool_backlog_bytes", "gauge", "Bytes of spool records InfluxDB has not acknowledged yet.");
        sample(b, "tstats_spool_backlog_bytes", (double)s.in.spool_backlog_bytes);
        family(b, "tstats_spool_replay_bytes", "gauge",
               "Spool bytes from InfluxDB's durable position to the end: what a restart would read again.");
        sample(b, "tstats_spool_replay_bytes", (double)s.in.spool_replay_bytes);
        for (int f = 0; f < 2; f++) {
            const char *name = f == 0 ? "tstats_spool_target_backlog_bytes" : "tstats_spool_target_replay_bytes";
            family(b, name, "gauge",
                   f == 0 ? "Bytes of spool records this target (a reader of the spool) has not acknowledged."
                          : "Spool bytes from this target's durable position to the end: what a restart would read again.");
            for (int i = 0; i < s.ntargets; i++) {
                ts_buf_printf(b, "%s{target=\"", name);
                label_value(b, s.targets[i].name);
                ts_buf_adds(b, "\"} ");
                ts_metrics_num(b, (double)(f == 0 ? s.targets[i].backlog_bytes : s.targets[i].replay_bytes));
                ts_buf_addc(b, '\n');
            }
        }
        family(b, "tstats_spool_oldest_unacknowledged_age_seconds", "gauge",
               "Age of the oldest spool record this target has not acknowledged (0: none waiting).");
        for (int i = 0; i < s.ntargets; i++) {
            ts_buf_adds(b, "tstats_spool_oldest_unacknowledged_age_seconds{target=\"");
            label_value(b, s.targets[i].name);
            ts_buf_adds(b, "\"} ");
            ts_metrics_num(b, s.targets[i].oldest_age_ms > 0 ? (double)s.targets[i].oldest_age_ms / 1000.0 : 0);
            ts_buf_addc(b, '\n');
        }
        family(b, "tstats_spool_append_failures_total", "counter", "Appends the spool refused (disk full, unwritable).");
        sample(b, "tstats_spool_append_failures_total", (double)s.in.spool_append_failures);
        family(b, "tstats_spool_dropped_lines_total", "counter", "Unacknowledged lines removed for spool.max_bytes.");
        sample(b, "tstats_spool_dropped_lines_total", (double)s.in.spool_lines_dropped);
    }

    /* Lua, Traffic Ops, summaries */
    family(b, "tstats_lua_calls_total", "counter", "Calls of Lua mapping functions (once per new stat, cache or DS).");
    sample(b, "tstats_lua_calls_total", (double)counter_value(&s, "mapping_lua_calls"));
    family(b, "tstats_lua_errors_total", "counter", "Errors raised by Lua code (logged).");
    sample(b, "tstats_lua_errors_total", (double)counter_value(&s, "lua_errors"));
    family(b, "tstats_lua_heap_bytes", "gauge", "Memory used by the Lua state.");
    sample(b, "tstats_lua_heap_bytes", (double)s.in.lua_heap_bytes);
    family(b, "tstats_traffic_ops_refreshes_total", "counter", "Traffic Ops refreshes by outcome.");
    ts_buf_printf(b, "tstats_traffic_ops_refreshes_total{outcome=\"ok\"} %llu\n", (unsigned long long)s.refresh_ok);
    ts_buf_printf(b, "tstats_traffic_ops_refreshes_total{outcome=\"failed\"} %llu\n", (unsigned long long)s.refresh_failed);
    family(b, "tstats_plan_age_seconds", "gauge", "Age of the polling plan in use (NaN: none yet).");
    sample(b, "tstats_plan_age_seconds", s.have_plan ? (double)(s.now_ms - s.plan_ms) / 1000.0 : NAN);
    family(b, "tstats_plan_endpoints", "gauge", "Endpoints in the polling plan.");
    sample(b, "tstats_plan_endpoints", (double)s.plan_endpoints);
    family(b, "tstats_summary_last_success_timestamp_seconds", "gauge",
           "When the CDN's daily summary rows were last stored, seconds since the epoch (kept across restarts).");
    for (int i = 0; i < s.nsummaries; i++) {
        ts_buf_adds(b, "tstats_summary_last_success_timestamp_seconds{cdn=\"");
        label_value(b, s.summaries[i].cdn);
        ts_buf_printf(b, "\"} ");
        ts_metrics_num(b, (double)s.summaries[i].t_ms / 1000.0);
        ts_buf_addc(b, '\n');
    }
    family(b, "tstats_events_total", "counter", "Every internal event counter of the engine, by name.");
    for (int i = 0; i < s.ncounters; i++) {
        ts_buf_adds(b, "tstats_events_total{event=\"");
        label_value(b, s.counters[i].name);
        ts_buf_printf(b, "\"} %lld\n", (long long)s.counters[i].value);
    }
    ts_metrics_snap_free(&s);
}
