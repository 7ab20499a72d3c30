/* Service metrics (C core): what the daemon observed, kept for the HTTP listener.
 * The poll loop records events (a finished fetch, a new plan, a Traffic Ops refresh, a
 * stored daily summary) and publishes the writer's and the runtime's numbers about once a
 * second; any thread renders Prometheus text, /health, /ready and the status page's JSON.
 * A mutex guards the store; renderers copy what they need under it and format outside it,
 * so the loop never waits for a slow scrape. */
#ifndef TS_METRICS_H
#define TS_METRICS_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"

typedef struct ts_metrics ts_metrics;

ts_metrics *ts_metrics_new(const char *version);
void ts_metrics_free(ts_metrics *m);

/* ---- loop side ---- */
/* One finished fetch of an endpoint, after every monitor it tried. */
typedef struct ts_poll_event {
    const char *cdn, *endpoint;
    const char *monitor;        /* the URL that answered, or the last one tried */
    int ok;
    int failovers;              /* monitors that failed in this fetch before the outcome */
    uint64_t points, bytes;
    int64_t duration_ms;
    const char *db, *rp;        /* where its points go */
    const char *error;          /* why the last monitor failed; NULL when ok */
} ts_poll_event;
void ts_metrics_poll_done(ts_metrics *m, const ts_poll_event *e);

/* A new plan: begin, one call per endpoint, end. Endpoints left out stop counting for
 * health and the status page (their counters stay, as Prometheus expects). */
void ts_metrics_plan_begin(ts_metrics *m);
void ts_metrics_plan_endpoint(ts_metrics *m, const char *cdn, const char *endpoint);
void ts_metrics_plan_end(ts_metrics *m);
void ts_metrics_refresh_done(ts_metrics *m, int ok);
/* The CDN's daily summary was last stored at t_ms (wall clock); an older t_ms is ignored. */
void ts_metrics_summary_done(ts_metrics *m, const char *cdn, int64_t t_ms);

typedef struct ts_metrics_dest {
    char db[128], rp[128];
    uint64_t written, rejected, dropped, pending;
} ts_metrics_dest;

/* One of the daemon's targets (ts_target.h), as the metrics show it. */
#define TS_METRICS_MAX_OUTPUTS 24
typedef struct ts_metrics_output {
    char name[300], kind[16];
    uint64_t written, rejected, dropped, pending, spool_backlog_bytes;
    int healthy;
} ts_metrics_output;

/* One reader of the spool (an InfluxDB writer, the Kafka feed): what it has not acknowledged. */
typedef struct ts_metrics_target {
    char name[256];
    uint64_t backlog_bytes;                /* records not acknowledged (sum) */
    uint64_t replay_bytes;                 /* from its durable position to the end */
    int64_t oldest_age_ms;                 /* -1: nothing unacknowledged */
} ts_metrics_target;

typedef struct ts_metrics_inputs {
    int64_t poll_interval_ms, publish_interval_ms;
    int health_intervals;                  /* N of "polled and written within N intervals" */
    uint64_t points_written, points_rejected, points_dropped, points_pending, bytes_pending;
    uint64_t requests_ok, requests_failed, bytes_sent, retries;
    uint64_t retry_chunks;                 /* chunks waiting out a backoff */
    int64_t backoff_ms;                    /* until the next retry; 0 = none waiting */
    char writer_url[256];                  /* the InfluxDB URL preferred now */
    const ts_metrics_dest *dests;          /* per destination, when the writer tells */
    int ndests;
    uint64_t lua_heap_bytes;
    int spool_enabled;
    uint64_t spool_bytes;                  /* on disk */
    uint64_t spool_backlog_bytes;          /* not yet acknowledged by InfluxDB */
    uint64_t spool_replay_bytes;           /* from InfluxDB's durable position to the end */
    uint64_t spool_append_failures, spool_lines_dropped;
    ts_metrics_output outputs[TS_METRICS_MAX_OUTPUTS];   /* every target of the run */
    int noutputs;
    const ts_metrics_target *targets;      /* per spool reader */
    int ntargets;
} ts_metrics_inputs;
/* Also copies every named counter (ts_counters_foreach): call it on the loop. */
void ts_metrics_publish(ts_metrics *m, const ts_metrics_inputs *in);

/* ---- any thread ---- */
void ts_metrics_render_prometheus(ts_metrics *m, ts_buf *out);

/* ---- the snapshot renderers read (metrics.c takes it under the lock; the Prometheus
 * text and metrics_json.c format from it outside the lock) ---- */
#define TS_METRICS_NBUCKETS 10          /* poll duration histogram bounds */
#define TS_METRICS_HIST_CAP 3600        /* one entry per poll; at 1 s polls, an hour */
#define TS_METRICS_MAX_COUNTERS 128
#define TS_METRICS_MAX_SUMMARIES 64

typedef struct ts_metrics_hpoint {
    int64_t t_ms;
    uint32_t points, dur_ms;
    int ok;
} ts_metrics_hpoint;

typedef struct ts_metrics_rec {
    char cdn[64], ep[64], monitor[256], error[200];
    char db[128], rp[128];   /* where its last successful fetch's points went */
    int active;
    uint64_t polls, failures, failovers, bytes;
    uint64_t bucket[TS_METRICS_NBUCKETS], hcount;
    double hsum;
    int64_t last_poll_ms, last_ok_ms, last_dur_ms;
    int last_ok;
    uint64_t last_points;
    ts_metrics_hpoint *hist;            /* ring of HIST_CAP */
    int hhead, hlen;
} ts_metrics_rec;

/* A destination: what was collected for it, and whether the writer keeps up with it.
 * unwritten_since_ms: the first collection that no acknowledged write has followed yet
 * (0: none waiting), the base of the per-CDN "written within N intervals" verdict. */
typedef struct ts_metrics_drec {
    char db[128], rp[128];
    uint64_t collected;
    int known;                    /* the writer reports this destination */
    uint64_t written_seen, pending;
    int64_t unwritten_since_ms, last_write_ms;
} ts_metrics_drec;

typedef struct ts_metrics_crec {
    const char *name;
    int64_t value;
} ts_metrics_crec;

typedef struct ts_metrics_srec {
    char cdn[64];
    int64_t t_ms;
} ts_metrics_srec;

typedef struct ts_metrics_snap {
    ts_metrics_inputs in;
    char version[64];
    int64_t start_ms, now_ms, plan_ms, last_write_ms, pending_since_ms;
    ts_metrics_rec *recs;
    int nrecs;
    ts_metrics_drec *drecs;
    int ndrecs;
    ts_metrics_dest *wdests;
    int nwdests;
    ts_metrics_target *targets;
    int ntargets;
    ts_metrics_crec counters[TS_METRICS_MAX_COUNTERS];
    int ncounters;
    ts_metrics_srec summaries[TS_METRICS_MAX_SUMMARIES];
    int nsummaries;
    int have_plan, polled_since_plan, plan_endpoints;
    uint64_t refresh_ok, refresh_failed;
} ts_metrics_snap;

void ts_metrics_snap_take(ts_metrics *m, ts_metrics_snap *s, int with_hist);
void ts_metrics_snap_free(ts_metrics_snap *s);
const ts_metrics_drec *ts_metrics_snap_drec(const ts_metrics_snap *s, const char *db, const char *rp);
/* A number as Prometheus text and JSON both read it back (NaN as "NaN"). */
void ts_metrics_num(ts_buf *b, double v);

#endif
