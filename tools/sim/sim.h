/* tstats-sim internals: a Traffic Ops + Traffic Monitor simulator (C, test side; no Lua).
 * Shared between the sim's own files only: the topology model, the value
 * generator, faults, payload encoding and the two HTTP faces (TO and TM). */
#ifndef TS_SIM_H
#define TS_SIM_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <microhttpd.h>
#include "ts_buf.h"

enum { SIM_EDGE = 0, SIM_MID = 1 };

typedef struct sim_cache {
    char host[48];
    int cdn, type, cg, id; /* cdn index, SIM_EDGE/MID, cache group index, TO id */
    int reported;          /* TO status REPORTED (else ONLINE) */
    int speed_mbps;        /* interface speed */
    int poll_off_ms;       /* poll time offset inside a poll period */
    double mean_kbps, amp, period_s, phase;
    uint64_t h; /* per-cache hash, feeds every stat of this cache */
    char ip[40];
} sim_cache;

/* Every active fault on one monitor (or on TO). They combine: e.g. slow + 503-start. */
typedef struct sim_fault {
    int64_t start503_until_ms; /* 503 until this wall time */
    int always503, hang, dead, truncate, cut, invalid, hostile;
    int slow_ms;
    int huge_mb;
} sim_fault;

/* A refcounted immutable body, shared by the payload cache and in-flight responses. */
typedef struct sim_payload {
    atomic_int refs;
    size_t len;
    char *data;
} sim_payload;

typedef struct sim_monitor {
    int cdn, index, offline;
    int port, fd;
    struct MHD_Daemon *d;
    struct MHD_Daemon *graveyard[8]; /* daemons replaced after a dead→alive cycle */
    int ngrave;
    sim_fault fault; /* guarded by sim.fault_lock */
    atomic_llong n_cachestats, n_dsstats, n_crstates, n_other;
    atomic_llong n_200, n_400, n_404, n_503, n_dropped, n_gzip, bytes;
} sim_monitor;

#define SIM_PCACHE 8
typedef struct sim_pentry {
    char *key;
    int64_t made_ms; /* monotonic */
    sim_payload *raw, *gz;
} sim_pentry;

typedef struct sim_cdn {
    char name[32];
    int id;
    int first_cache, ncache; /* range in sim.caches */
    int first_ds, nds;       /* DS numbers ds-(first_ds+1) .. */
    pthread_mutex_t lock;    /* payload cache of this CDN */
    sim_pentry pc[SIM_PCACHE];
} sim_cdn;

typedef struct sim_stat {
    const char *name;
    int kind;          /* SIM_K_* */
    double a, b;       /* kind parameters */
} sim_stat;

enum { SIM_K_BANDWIDTH, SIM_K_MAXKBPS, SIM_K_COUNTER, SIM_K_GAUGE, SIM_K_CONST, SIM_K_ZERO };

typedef struct sim_summary {
    char cdn[64], ds[64], stat[64];
    double value;
    int64_t summary_s; /* unix seconds */
    int has_date;
    char date[11];
} sim_summary;

typedef struct sim_state {
    /* options */
    char listen[64];
    char host_for_urls[64];
    int to_port, ncdn, mon_per_cdn, ncache_per_cdn, nstats, nds_per_cdn, ncg;
    uint64_t seed;
    int payload_cache_ms, poll_ms, session_ttl_s, no_params, verbose;
    char user[128], password[128];
    const char *ready_file;
    int64_t start_ms;
    atomic_int stopping;

    /* topology */
    sim_cdn *cdns;
    sim_cache *caches;
    int ncache;
    char (*cg_names)[48];
    sim_monitor *mons;
    int nmon;
    sim_stat *stats;
    int nstat;

    /* faults */
    pthread_mutex_t fault_lock;
    sim_fault to_fault;
    int to_down, to_slow_ms;

    /* TO state */
    struct MHD_Daemon *to_d;
    int to_fd;
    pthread_mutex_t to_lock; /* sessions, summaries, params */
    char **sessions;
    int64_t *session_exp;
    int nsessions, sessions_cap;
    uint64_t token_ctr;
    sim_summary *summaries;
    int nsummaries, summaries_cap;
    char **param_cache, **param_ds; /* overrides of the TRAFFIC_STATS params; NULL = CiaB */
    int nparam_cache, nparam_ds, params_override;
    sim_payload *servers_raw, *servers_gz;

    atomic_llong to_login_ok, to_login_fail, to_unauth, to_servers, to_params, to_ss_get, to_ss_post,
        to_other, to_503, to_sim;
    atomic_llong gen_count, gen_us_total, gen_us_last, gen_bytes_last, cache_hits;

    /* fixture mode (fixture.c): recorded payloads instead of generated ones */
    int fixture;
    char fixture_cdn[32];
    int64_t fixture_delta_ms;       /* added to every "time" of the files */
    int64_t fixture_newest_ms;      /* newest "time" in the files, before the shift */
    sim_payload *fx_body[2], *fx_gz[2]; /* [0] CacheStats, [1] DsStats; immutable after load */
    int fx_ntimes[2];
    char **fx_hosts, **fx_ds;      /* cache names, delivery service names */
    int nfx_hosts, nfx_ds;
} sim_state;

extern sim_state ts_sim;

/* model.c */
uint64_t ts_sim_mix(uint64_t x);
double ts_sim_unit(uint64_t h); /* [0,1) */
void ts_sim_build_model(void);
const char *ts_sim_ciab_cache_stat(int i); /* 37 CiaB CacheStats names, NULL past the end */
const char *ts_sim_ciab_ds_stat(int i);    /* 8 DsStats names */
int ts_sim_ciab_ncache_stats(void);
int ts_sim_ciab_nds_stats(void);
double ts_sim_cache_kbps(const sim_cache *c, double t_s);
double ts_sim_cache_out_bytes(const sim_cache *c, double t_s);
double ts_sim_stat_value(const sim_cache *c, int si, double t_s);

/* fmt.c: numbers as Go's fmt %v prints them, JSON strings */
size_t ts_sim_fmt_i64(char *out, int64_t v);
size_t ts_sim_fmt_gofloat(char *out, double v);   /* out >= 40 bytes; Go fmt %v */
size_t ts_sim_fmt_jsonfloat(char *out, double v); /* out >= 40 bytes; Go encoding/json */
void ts_sim_json_str(ts_buf *b, const char *s); /* quoted + escaped */
void ts_sim_json_raw_esc(ts_buf *b, const char *s, size_t n); /* escaped, no quotes */
void ts_sim_go_date(char *out, size_t n, int64_t ms); /* "Thu May 14 15:48:55 UTC 2020" */
void ts_sim_rfc3339(char *out, size_t n, int64_t s);

/* payload.c: refcounts, gzip, responses */
sim_payload *ts_sim_payload_new(char *data, size_t len); /* takes ownership (malloc'd) */
sim_payload *ts_sim_payload_from_buf(ts_buf *b);          /* steals b's memory */
void ts_sim_payload_ref(sim_payload *p);
void ts_sim_payload_unref(sim_payload *p);
sim_payload *ts_sim_gzip(const char *data, size_t len);
int ts_sim_wants_gzip(struct MHD_Connection *c);
/* Queue `p` (adds a ref for the response). Returns MHD_YES/MHD_NO. */
enum MHD_Result ts_sim_send_payload(struct MHD_Connection *c, int status, const char *ctype, sim_payload *p,
                        size_t len, int gzip_encoded);
enum MHD_Result ts_sim_send_text(struct MHD_Connection *c, int status, const char *ctype, const char *body);
enum MHD_Result ts_sim_send_buf(struct MHD_Connection *c, int status, const char *ctype, ts_buf *b);
enum MHD_Result ts_sim_send_cut(struct MHD_Connection *c, const char *ctype, sim_payload *p);
int64_t ts_sim_mono_ms(void);
int ts_sim_sleep_ms(int ms, const int *watch); /* stops early on shutdown or when *watch becomes 0 */

/* fault.c */
int ts_sim_fault_apply(const char *target, const char *kind, const char *arg, char *err, size_t errn);
int ts_sim_fault_spec(const char *spec, char *err, size_t errn); /* "KIND[:ARG][@TARGET]" */
void ts_sim_fault_get(int mon, sim_fault *out);                 /* mon -1 = TO */
int ts_sim_monitor_listen(sim_monitor *m, int port);
int ts_sim_monitor_start(sim_monitor *m);
void ts_sim_monitor_kill(sim_monitor *m);
void ts_sim_monitor_revive(sim_monitor *m);

/* fixture.c: load before ts_sim_build_model (it sizes the model), apply after */
int ts_sim_fixture_load(const char *cs_path, const char *ds_path, const char *cdn, char *err, size_t errn);
void ts_sim_fixture_apply_model(void);
void ts_sim_fixture_free(void);

/* tm.c */
enum MHD_Result ts_sim_tm_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls);
void ts_sim_bench(int iters, const char *stats, int wildcard); /* --bench: generator timing on stdout */

/* to.c */
enum MHD_Result ts_sim_to_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls);
void ts_sim_to_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe);
void ts_sim_build_servers(void);

#endif
