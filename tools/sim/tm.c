/* tstats-sim Traffic Monitor face (C, test side): /publish/CacheStats (legacy
 * shape), /publish/DsStats, /publish/CrStates, /api/cache-statuses and the
 * plain-number routes, with TM's query rules and quirks, faults, gzip and a
 * short-lived payload cache shared by the monitors of one CDN. */
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "sim.h"
#include "ts_log.h"

enum { R_CACHESTATS, R_DSSTATS, R_CRSTATES, R_STATUSES, R_PLAIN, R_NONE };
#define TM_HIST_MAX 5 /* TM's max_stat_history default */
#define MAXQ 64

typedef struct qparam {
    const char *k, *v; /* v NULL for "?name" */
} qparam;

typedef struct tm_req {
    int route;
    qparam q[MAXQ];
    int nq;
    const char *path_arg;
    /* parsed filter */
    char *stats_copy;
    const char *stat_list[256];
    int nstat_list;
    int wildcard, hc, type; /* type: -1 any, else SIM_EDGE/SIM_MID (CacheStats) or 0 http / 1 dns */
    const char *names[256]; /* host or DS name filter */
    int nnames;
    char *names_copy[32];
    int nnames_copy;
    ts_buf pp, key;
    int hostile, huge_mb;
    int64_t now_ms;
    int cdn;
} tm_req;

/* Non-numeric and computed stats TM adds to every cache (unprefixed, span 1). */
static const char *const extras[] = {
    "availableBandwidthInKbps", "availableBandwidthInMbps", "kbps", "gbps", "loadavg", "queryTime",
    "stateUrl", "status", "error-string", "isAvailable", "isHealthy", "system.astatsLoad",
    "system.configReloadRequests", "system.configReloads", "system.inf.name", "system.inf.speed",
    "system.lastReload", "system.lastReloadRequest", "system.notAvailable", "system.proc.loadavg",
    "system.proc.net.dev", "ats.server",
};
#define NEXTRAS ((int)(sizeof extras / sizeof extras[0]))

/* Names with every character a naive parser or line-protocol encoder trips on. */
static const char *const hostile_names[] = {
    "edge with space", "edge,comma", "edge=equals", "edge\"quote", "edge\\backslash",
    "edge-ünïcödé-日本", "edge\nnewline", "edge\ttab", "trailing-backslash\\", "",
};
#define NHOSTILE ((int)(sizeof hostile_names / sizeof hostile_names[0]))
static const char *const hostile_values[] = {
    "NaN", "+Inf", "-1", "1e400", "0x10", "", "<nil>", "12abc", "-0", "9223372036854775808",
};

/* ---------- query parsing ---------- */

static enum MHD_Result collect_q(void *cls, enum MHD_ValueKind kind, const char *k, const char *v) {
    (void)kind;
    tm_req *r = cls;
    if (r->nq < MAXQ) {
        r->q[r->nq].k = k;
        r->q[r->nq].v = v;
        r->nq++;
    }
    return MHD_YES;
}

static const char *qfirst(tm_req *r, const char *k) {
    for (int i = 0; i < r->nq; i++)
        if (!strcmp(r->q[i].k, k)) return r->q[i].v ? r->q[i].v : "";
    return NULL;
}

static int go_parse_bool(const char *s) {
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    for (size_t i = 0; s && i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(s, t[i])) return 1;
    return 0;
}

static void add_names_csv(tm_req *r, const char *csv) {
    if (r->nnames_copy >= 32) return;
    char *c = strdup(csv);
    r->names_copy[r->nnames_copy++] = c;
    for (char *tok = c, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next) *next++ = '\0';
        if (*tok && r->nnames < 256) r->names[r->nnames++] = tok;
    }
}

/* Go prints url.Values (a map) as "k=[v1 v2], k2=[v]"; TM serves that as "pp". */
static void build_pp(tm_req *r) {
    int first = 1;
    for (int i = 0; i < r->nq; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            if (!strcmp(r->q[j].k, r->q[i].k)) seen = 1;
        if (seen) continue;
        if (!first) ts_buf_adds(&r->pp, ", ");
        first = 0;
        ts_buf_adds(&r->pp, r->q[i].k);
        ts_buf_adds(&r->pp, "=[");
        int n = 0;
        for (int j = i; j < r->nq; j++) {
            if (strcmp(r->q[j].k, r->q[i].k)) continue;
            if (n++) ts_buf_addc(&r->pp, ' ');
            if (r->q[j].v) ts_buf_adds(&r->pp, r->q[j].v);
        }
        ts_buf_addc(&r->pp, ']');
    }
}

/* Returns NULL or the 400 error text (static or in errbuf). */
static const char *parse_filter(tm_req *r, char *errbuf, size_t errn) {
    static const char *const cs_ok[] = {"hc", "stats", "interfaceStats", "wildcard", "type", "hosts", "cache", NULL};
    static const char *const ds_ok[] = {"hc", "stats", "wildcard", "type", "deliveryservices", NULL};
    const char *const *ok = r->route == R_DSSTATS ? ds_ok : cs_ok;
    for (int i = 0; i < r->nq; i++) {
        const char *k = r->q[i].k, *v = r->q[i].v;
        if (!v || !*v) {
            /* TM's gotcha: a valueless parameter names a cache (or DS) to keep. */
            if (r->nnames < 256) r->names[r->nnames++] = k;
            continue;
        }
        int allowed = 0;
        for (int j = 0; ok[j]; j++)
            if (!strcmp(ok[j], k)) allowed = 1;
        if (!allowed) {
            snprintf(errbuf, errn, "invalid query parameter '%s'", k);
            return errbuf;
        }
    }
    const char *hc = qfirst(r, "hc");
    r->hc = 1;
    if (hc && *hc) {
        char *end;
        unsigned long v = strtoul(hc, &end, 10);
        if (!*end && hc[0] != '-') r->hc = v == 0 || v > TM_HIST_MAX ? TM_HIST_MAX : (int)v;
    }
    if (r->route == R_DSSTATS) r->hc = 1; /* DS stats keep no history */
    r->wildcard = go_parse_bool(qfirst(r, "wildcard"));
    const char *st = qfirst(r, "stats");
    if (st && *st) {
        /* Split like Go's strings.Split: empty entries stay (and with
         * wildcard an empty entry matches every stat, as in TM). */
        r->stats_copy = strdup(st);
        for (char *tok = r->stats_copy, *next; tok && r->nstat_list < 256; tok = next) {
            next = strchr(tok, ',');
            if (next) *next++ = '\0';
            r->stat_list[r->nstat_list++] = tok;
        }
    }
    r->type = -1;
    const char *ty = qfirst(r, "type");
    if (ty && *ty) {
        if (r->route == R_DSSTATS) {
            if (!strcasecmp(ty, "http")) r->type = 0;
            else if (!strcasecmp(ty, "dns")) r->type = 1;
            else {
                snprintf(errbuf, errn, "invalid query value for type '%s'", ty);
                return errbuf;
            }
        } else {
            if (!strcasecmp(ty, "edge")) r->type = SIM_EDGE;
            else if (!strcasecmp(ty, "mid")) r->type = SIM_MID;
            else {
                snprintf(errbuf, errn, "invalid query value for type '%s'", ty);
                return errbuf;
            }
        }
    }
    for (int i = 0; i < r->nq; i++) {
        const char *k = r->q[i].k, *v = r->q[i].v;
        if (!v || !*v) continue;
        if (r->route == R_CACHESTATS && (!strcmp(k, "hosts") || !strcmp(k, "cache"))) add_names_csv(r, v);
        if (r->route == R_DSSTATS && !strcmp(k, "deliveryservices")) add_names_csv(r, v);
    }
    if (r->path_arg && *r->path_arg && r->nnames < 256) r->names[r->nnames++] = r->path_arg;
    return NULL;
}

static int stat_wanted(const tm_req *r, const char *name) {
    if (r->nstat_list == 0) return 1;
    for (int i = 0; i < r->nstat_list; i++) {
        if (r->wildcard ? strstr(name, r->stat_list[i]) != NULL : !strcmp(name, r->stat_list[i])) return 1;
    }
    return 0;
}

static int name_wanted(const tm_req *r, const char *name) {
    if (r->nnames == 0) return 1;
    for (int i = 0; i < r->nnames; i++)
        if (!strcmp(r->names[i], name)) return 1;
    return 0;
}

static void head(ts_buf *b, const tm_req *r, const char *first_key) {
    char date[64];
    ts_sim_go_date(date, sizeof date, r->now_ms);
    ts_buf_adds(b, "{\"pp\":");
    ts_sim_json_str(b, r->pp.data ? r->pp.data : "");
    ts_buf_adds(b, ",\"date\":\"");
    ts_buf_adds(b, date);
    ts_buf_adds(b, "\",\"");
    ts_buf_adds(b, first_key);
    ts_buf_adds(b, "\":{");
}

/* ---------- CacheStats ---------- */

typedef struct cs_ctx {
    const tm_req *r;
    char **prefix; /* per catalog stat: "\"<name>\":[" */
    size_t *prefix_len;
    unsigned char *keep;
    unsigned char keep_extra[NEXTRAS];
} cs_ctx;

static inline void add_entry(ts_buf *b, const char *val, size_t vlen, const char *tstr, size_t tlen, int64_t span,
                             int first) {
    if (b->cap - b->len < vlen + tlen + 64) ts_buf_reserve(b, vlen + tlen + 64);
    char *p = b->data + b->len;
    if (!first) *p++ = ',';
    memcpy(p, "{\"value\":\"", 10);
    p += 10;
    memcpy(p, val, vlen);
    p += vlen;
    memcpy(p, "\",\"time\":", 9);
    p += 9;
    memcpy(p, tstr, tlen);
    p += tlen;
    memcpy(p, ",\"span\":", 8);
    p += 8;
    p += ts_sim_fmt_i64(p, span);
    *p++ = '}';
    *p = '\0';
    b->len = (size_t)(p - b->data);
}

static void extra_value(const sim_cache *c, int e, double t_s, int64_t t_ms, ts_buf *v) {
    char num[40];
    double kbps = ts_sim_cache_kbps(c, t_s), maxk = c->speed_mbps * 1000.0;
    uint64_t h = ts_sim_mix(c->h + 77 + (uint64_t)(t_ms / 1000));
    switch (e) {
    case 0: ts_buf_add(v, num, ts_sim_fmt_gofloat(num, maxk - kbps)); break;
    case 1: ts_buf_add(v, num, ts_sim_fmt_gofloat(num, (maxk - kbps) / 1000.0)); break;
    case 2: ts_buf_add(v, num, ts_sim_fmt_gofloat(num, kbps)); break;
    case 3: ts_buf_add(v, num, ts_sim_fmt_gofloat(num, kbps / 1e6)); break;
    case 4: ts_buf_add(v, num, ts_sim_fmt_gofloat(num, (double)(h % 300) / 100.0)); break;
    case 5: ts_buf_add(v, num, ts_sim_fmt_i64(num, 3 + (int64_t)(h % 40))); break;
    case 6: ts_buf_printf(v, "http://%s.sim.test:80/_astats?application=&inf.name=eth0", c->host); break;
    case 7: ts_buf_adds(v, c->reported ? "REPORTED" : "ONLINE"); break;
    case 8: ts_buf_adds(v, "false"); break;
    case 9: ts_buf_adds(v, "{true true false}"); break; /* Go %v of TM's IsAvailable struct */
    case 10: ts_buf_adds(v, "true"); break;
    case 11: ts_buf_adds(v, "3"); break;
    case 12: ts_buf_adds(v, "1733011200"); break;
    case 13: ts_buf_adds(v, "1733011201"); break;
    case 14: ts_buf_adds(v, "eth0"); break;
    case 15: ts_buf_add(v, num, ts_sim_fmt_i64(num, c->speed_mbps)); break;
    case 16: ts_buf_adds(v, "1733011201"); break;
    case 17: ts_buf_adds(v, "1733011200"); break;
    case 18: ts_buf_adds(v, "false"); break;
    case 19:
        ts_buf_printf(v, "%.2f %.2f %.2f 1/%d %d", (double)(h % 300) / 100.0, (double)(h % 250) / 100.0,
                      (double)(h % 200) / 100.0, 600 + (int)(h % 400), 60 + (int)(h % 30000));
        break;
    case 20: {
        double ob = ts_sim_cache_out_bytes(c, t_s);
        ts_buf_printf(v, "eth0:%.0f %llu    0    0    0     0          0   %llu %.0f %llu    0    0    0     0       0          0",
                      floor(ob / 20), (unsigned long long)(ob / 1400 / 20), (unsigned long long)(h % 1000000),
                      ob, (unsigned long long)(ob / 1400));
        break;
    }
    default: ts_buf_adds(v, "9.2.5"); break;
    }
}

static void gen_cache(ts_buf *b, cs_ctx *x, const sim_cache *c, const char *host_override) {
    const tm_req *r = x->r;
    int64_t poll = ts_sim.poll_ms;
    int64_t off = c->poll_off_ms % poll;
    int64_t pt = (r->now_ms - off) / poll * poll + off; /* last poll instant <= now */
    char tstr[TM_HIST_MAX][24], tstr_c[TM_HIST_MAX][24];
    size_t tlen[TM_HIST_MAX], tlen_c[TM_HIST_MAX];
    double ts[TM_HIST_MAX];
    for (int k = 0; k < r->hc; k++) {
        int64_t t = pt - k * poll;
        tlen[k] = ts_sim_fmt_i64(tstr[k], t);
        tlen_c[k] = ts_sim_fmt_i64(tstr_c[k], t - 12); /* computed stats are stamped a little earlier */
        ts[k] = (double)t / 1000.0;
    }
    ts_sim_json_str(b, host_override ? host_override : c->host);
    ts_buf_adds(b, ":{");
    int firstkey = 1;
    char val[40];
    for (int si = 0; si < ts_sim.nstat; si++) {
        if (!x->keep[si]) continue;
        const sim_stat *s = &ts_sim.stats[si];
        if (!firstkey) ts_buf_addc(b, ',');
        firstkey = 0;
        ts_buf_add(b, x->prefix[si], x->prefix_len[si]);
        int computed = s->kind == SIM_K_BANDWIDTH || s->kind == SIM_K_MAXKBPS;
        int constant = s->kind == SIM_K_CONST || s->kind == SIM_K_ZERO || s->kind == SIM_K_MAXKBPS;
        for (int k = 0; k < r->hc; k++) {
            double v = ts_sim_stat_value(c, si, ts[k]);
            /* ATS counters reach TM as JSON numbers, i.e. float64; computed ones are ints. */
            size_t vl = computed ? ts_sim_fmt_i64(val, (int64_t)v) : ts_sim_fmt_gofloat(val, v);
            int64_t span = 1;
            if (constant && !computed) span = 1 + (pt - k * poll - ts_sim.start_ms) / poll;
            if (span < 1) span = 1;
            add_entry(b, val, vl, computed ? tstr_c[k] : tstr[k], computed ? tlen_c[k] : tlen[k], span, k == 0);
        }
        ts_buf_addc(b, ']');
    }
    ts_buf vb, esc; /* reused for every extra value of this cache */
    ts_buf_init(&vb);
    ts_buf_init(&esc);
    for (int e = 0; e < NEXTRAS; e++) {
        if (!x->keep_extra[e]) continue;
        if (!firstkey) ts_buf_addc(b, ',');
        firstkey = 0;
        ts_sim_json_str(b, extras[e]);
        ts_buf_adds(b, ":[");
        for (int k = 0; k < r->hc; k++) {
            ts_buf_reset(&vb);
            ts_buf_reset(&esc);
            extra_value(c, e, ts[k], pt - k * poll, &vb);
            ts_sim_json_raw_esc(&esc, vb.data ? vb.data : "", vb.len);
            add_entry(b, esc.data ? esc.data : "", esc.len, tstr_c[k], tlen_c[k], 1, k == 0);
        }
        ts_buf_addc(b, ']');
    }
    /* Interface stats: TM never applies the stats filter to these three. */
    static const char *const ifs[] = {"inBytes", "outBytes", "speed"};
    for (int i = 0; i < 3; i++) {
        if (!firstkey) ts_buf_addc(b, ',');
        firstkey = 0;
        ts_buf_addc(b, '"');
        ts_buf_adds(b, ifs[i]);
        ts_buf_adds(b, "\":[");
        for (int k = 0; k < r->hc; k++) {
            double ob = ts_sim_cache_out_bytes(c, ts[k]);
            int64_t v = i == 0 ? (int64_t)(ob / 20) : i == 1 ? (int64_t)ob : c->speed_mbps;
            int64_t span = i == 2 ? 1 + (pt - k * poll - ts_sim.start_ms) / poll : 1;
            add_entry(b, val, ts_sim_fmt_i64(val, v), tstr[k], tlen[k], span < 1 ? 1 : span, k == 0);
        }
        ts_buf_addc(b, ']');
    }
    if (r->hostile) {
        for (int i = 0; i < NHOSTILE; i++) {
            if (!firstkey) ts_buf_addc(b, ',');
            firstkey = 0;
            ts_buf_addc(b, '"');
            ts_buf_adds(b, "ats.hostile.");
            ts_sim_json_raw_esc(b, hostile_names[i], strlen(hostile_names[i]));
            ts_buf_adds(b, "\":[");
            ts_buf_reset(&esc);
            ts_sim_json_raw_esc(&esc, hostile_values[i], strlen(hostile_values[i]));
            add_entry(b, esc.data ? esc.data : "", esc.len, tstr[0], tlen[0], 1, 1);
            ts_buf_addc(b, ']');
        }
    }
    ts_buf_free(&vb);
    ts_buf_free(&esc);
    ts_buf_addc(b, '}');
}

static void cs_ctx_init(cs_ctx *x, const tm_req *r) {
    x->r = r;
    x->prefix = calloc((size_t)ts_sim.nstat, sizeof *x->prefix);
    x->prefix_len = calloc((size_t)ts_sim.nstat, sizeof *x->prefix_len);
    x->keep = calloc((size_t)ts_sim.nstat, 1);
    for (int si = 0; si < ts_sim.nstat; si++) {
        x->keep[si] = (unsigned char)stat_wanted(r, ts_sim.stats[si].name);
        ts_buf t;
        ts_buf_init(&t);
        ts_sim_json_str(&t, ts_sim.stats[si].name);
        ts_buf_adds(&t, ":[");
        x->prefix_len[si] = t.len;
        x->prefix[si] = t.data;
    }
    for (int e = 0; e < NEXTRAS; e++) x->keep_extra[e] = (unsigned char)stat_wanted(r, extras[e]);
}

static void cs_ctx_free(cs_ctx *x) {
    for (int si = 0; si < ts_sim.nstat; si++) free(x->prefix[si]);
    free(x->prefix);
    free(x->prefix_len);
    free(x->keep);
}

static void gen_cachestats(ts_buf *b, const tm_req *r) {
    const sim_cdn *cd = &ts_sim.cdns[r->cdn];
    cs_ctx x;
    cs_ctx_init(&x, r);
    ts_buf_reserve(b, (size_t)cd->ncache * (size_t)(ts_sim.nstat + NEXTRAS + 3) * 80 * (size_t)r->hc + 4096);
    head(b, r, "caches");
    int first = 1;
    for (int i = 0; i < cd->ncache; i++) {
        const sim_cache *c = &ts_sim.caches[cd->first_cache + i];
        if (r->type >= 0 && c->type != r->type) continue;
        if (!name_wanted(r, c->host)) continue;
        if (!first) ts_buf_addc(b, ',');
        first = 0;
        gen_cache(b, &x, c, NULL);
    }
    if (r->hostile && r->type != SIM_MID) {
        for (int i = 0; i < NHOSTILE && cd->ncache > 0; i++) {
            if (!name_wanted(r, hostile_names[i])) continue;
            if (!first) ts_buf_addc(b, ',');
            first = 0;
            gen_cache(b, &x, &ts_sim.caches[cd->first_cache + i % cd->ncache], hostile_names[i]);
        }
    }
    if (r->huge_mb > 0) {
        /* Pad with extra edge caches until the body reaches the requested size. */
        size_t want = (size_t)r->huge_mb << 20;
        sim_cache hc;
        for (int i = 0; b->len < want; i++) {
            memset(&hc, 0, sizeof hc);
            hc.h = ts_sim_mix(ts_sim.seed ^ 0xabcdefULL ^ ts_sim_mix((uint64_t)i));
            snprintf(hc.host, sizeof hc.host, "huge-%s-%d", cd->name, i + 1);
            hc.mean_kbps = 1e6 + 9e6 * ts_sim_unit(hc.h);
            hc.amp = 0.2;
            hc.period_s = 1800;
            hc.speed_mbps = 25000;
            hc.poll_off_ms = (int)(hc.h % 997);
            hc.reported = 1;
            if (!first) ts_buf_addc(b, ',');
            first = 0;
            gen_cache(b, &x, &hc, NULL);
        }
    }
    ts_buf_adds(b, "}}");
    cs_ctx_free(&x);
}

/* ---------- DsStats ---------- */

static const char *const ds_stat_names[] = {"out_bytes", "in_bytes", "status_2xx", "status_3xx", "status_4xx",
                                            "status_5xx", "kbps", "tps_2xx", "tps_3xx", "tps_4xx",
                                            "tps_5xx", "tps_total"};

typedef struct ds_vals {
    double out_bytes, in_bytes, st[4], kbps, tps[4];
} ds_vals;

static void ds_cell(int ds, int g, int ty, int ncaches, double t_s, ds_vals *o) {
    uint64_t h = ts_sim_mix(ts_sim.seed ^ ts_sim_mix(((uint64_t)ds << 32) ^ ((uint64_t)g << 8) ^ (uint64_t)ty));
    double u1 = ts_sim_unit(h), u2 = ts_sim_unit(ts_sim_mix(h + 1)), u3 = ts_sim_unit(ts_sim_mix(h + 2));
    double mean = (ty == SIM_EDGE ? 50000.0 : 5000.0) * (0.5 + u1) * ncaches, amp = 0.3;
    double per = 900 + 2700 * u2, ph = 6.283 * u3, w = 2 * M_PI / per, dt = t_s - 1735689600.0;
    double kbps = mean * (1 + amp * sin(w * t_s + ph));
    double integ = mean * (dt + amp / w * (cos(w * 1735689600.0 + ph) - cos(w * t_s + ph))); /* kbit */
    double r[4] = {1.0, 0.05 * ts_sim_unit(ts_sim_mix(h + 3)), 0.02 * ts_sim_unit(ts_sim_mix(h + 4)),
                   u1 < 0.3 ? 0.0 : 0.004 * ts_sim_unit(ts_sim_mix(h + 5))};
    o->kbps = kbps;
    o->out_bytes = floor(integ * 125.0);
    o->in_bytes = floor(integ * 5.0);
    for (int i = 0; i < 4; i++) {
        o->tps[i] = kbps / 8000.0 * r[i]; /* 1 MB objects */
        o->st[i] = floor(integ / 8000.0 * r[i]);
    }
}

static void ds_add(ds_vals *a, const ds_vals *b) {
    a->out_bytes += b->out_bytes;
    a->in_bytes += b->in_bytes;
    a->kbps += b->kbps;
    for (int i = 0; i < 4; i++) {
        a->st[i] += b->st[i];
        a->tps[i] += b->tps[i];
    }
}

static void ds_key(ts_buf *b, int *first, const char *prefix, const char *stat, const char *tstr) {
    if (!*first) ts_buf_addc(b, ',');
    *first = 0;
    ts_buf_addc(b, '"');
    ts_sim_json_raw_esc(b, prefix, strlen(prefix));
    ts_sim_json_raw_esc(b, stat, strlen(stat));
    ts_buf_adds(b, "\":[{\"time\":");
    ts_buf_adds(b, tstr);
    ts_buf_adds(b, ",\"value\":");
}

static void ds_group(ts_buf *b, int *first, const tm_req *r, const char *prefix, const ds_vals *v,
                     const char *tstr) {
    char num[48];
    for (int i = 0; i < 12; i++) {
        if (!stat_wanted(r, ds_stat_names[i])) continue;
        ds_key(b, first, prefix, ds_stat_names[i], tstr);
        double x;
        if (i == 0) x = v->out_bytes;
        else if (i == 1) x = v->in_bytes;
        else if (i < 6) x = v->st[i - 2];
        else if (i == 6) x = v->kbps;
        else if (i < 11) x = v->tps[i - 7];
        else x = v->tps[0] + v->tps[1] + v->tps[2] + v->tps[3];
        if (i <= 6) /* integer strings; kbps truncated like strconv.Itoa(int(f)) */
            snprintf(num, sizeof num, "\"%lld\"", (long long)x);
        else
            snprintf(num, sizeof num, "\"%f\"", x);
        ts_buf_adds(b, num);
        ts_buf_adds(b, "}]");
    }
    /* TM's quirk: these two get a second "location." in front of the prefix. */
    char qp[256];
    snprintf(qp, sizeof qp, "location.%s", prefix);
    if (stat_wanted(r, "isAvailable")) {
        ds_key(b, first, qp, "isAvailable", tstr);
        ts_buf_adds(b, "\"true\"}]");
    }
    if (stat_wanted(r, "error-string")) {
        ds_key(b, first, qp, "error-string", tstr);
        ts_buf_adds(b, "\"\"}]");
    }
}

static const char *const hostile_cgs[] = {"cg with space", "cg,comma=eq", "cg\"quote", "cg\\", "total.cg",
                                          "type.cg", "cg-ünï", "cg\nnl"};
static const char *const hostile_ds[] = {"ds with space", "ds,comma=eq", "ds\"quote", "ds-trailing\\",
                                         "ds-ünï-日本", "ds\nnewline"};

static void gen_one_ds(ts_buf *b, const tm_req *r, const char *dsname, int dsnum, const char *tstr, double t_s) {
    const sim_cdn *cd = &ts_sim.cdns[r->cdn];
    int ng = ts_sim.ncg;
    int *cnt = calloc((size_t)ng * 2, sizeof *cnt);
    for (int i = 0; i < cd->ncache; i++) {
        const sim_cache *c = &ts_sim.caches[cd->first_cache + i];
        cnt[c->cg * 2 + c->type]++;
    }
    ts_sim_json_str(b, dsname);
    ts_buf_adds(b, ":{");
    int first = 1;
    char num[32];
    snprintf(num, sizeof num, "\"%d\"", cd->ncache);
    static const char *const common[] = {"caches-configured", "caches-reporting", "error-string", "status",
                                         "isHealthy", "isAvailable", "caches-available", "disabledLocations"};
    const char *cval[] = {num, num, "\"\"", "\"REPORTED\"", "\"true\"", "\"true\"", num, "[]"};
    for (int i = 0; i < 8; i++) {
        if (!stat_wanted(r, common[i])) continue;
        ds_key(b, &first, "", common[i], tstr);
        ts_buf_adds(b, cval[i]);
        ts_buf_adds(b, "}]");
    }
    ds_vals total, type[2];
    memset(&total, 0, sizeof total);
    memset(type, 0, sizeof type);
    char prefix[256];
    for (int g = 0; g < ng; g++) {
        if (!cnt[g * 2] && !cnt[g * 2 + 1]) continue;
        ds_vals loc;
        memset(&loc, 0, sizeof loc);
        for (int ty = 0; ty < 2; ty++) {
            if (!cnt[g * 2 + ty]) continue;
            ds_vals cell;
            ds_cell(dsnum, g, ty, cnt[g * 2 + ty], t_s, &cell);
            ds_add(&loc, &cell);
            ds_add(&type[ty], &cell);
            ds_add(&total, &cell);
        }
        snprintf(prefix, sizeof prefix, "location.%s.", ts_sim.cg_names[g]);
        ds_group(b, &first, r, prefix, &loc, tstr);
    }
    if (r->hostile) {
        for (size_t i = 0; i < sizeof hostile_cgs / sizeof hostile_cgs[0]; i++) {
            ds_vals cell;
            ds_cell(dsnum, 1000 + (int)i, 0, 1, t_s, &cell);
            snprintf(prefix, sizeof prefix, "location.%s.", hostile_cgs[i]);
            ds_group(b, &first, r, prefix, &cell, tstr);
        }
    }
    int nty[2] = {0, 0};
    for (int g = 0; g < ng; g++) {
        nty[0] += cnt[g * 2];
        nty[1] += cnt[g * 2 + 1];
    }
    if (nty[0]) ds_group(b, &first, r, "type.EDGE.", &type[0], tstr);
    if (nty[1]) ds_group(b, &first, r, "type.MID.", &type[1], tstr);
    ds_group(b, &first, r, "total.", &total, tstr);
    ts_buf_addc(b, '}');
    free(cnt);
}

static void gen_dsstats(ts_buf *b, const tm_req *r) {
    const sim_cdn *cd = &ts_sim.cdns[r->cdn];
    int64_t t = r->now_ms / ts_sim.poll_ms * ts_sim.poll_ms;
    char tstr[24];
    ts_sim_fmt_i64(tstr, t);
    ts_buf_adds(b, "{\"deliveryService\":{");
    int first = 1;
    if (r->type != 1) { /* every simulated DS is HTTP */
        for (int j = 0; j < cd->nds; j++) {
            char name[32];
            snprintf(name, sizeof name, "ds-%d", cd->first_ds + j + 1);
            if (!name_wanted(r, name)) continue;
            if (!first) ts_buf_addc(b, ',');
            first = 0;
            gen_one_ds(b, r, name, cd->first_ds + j, tstr, (double)t / 1000.0);
        }
        for (size_t j = 0; r->hostile && j < sizeof hostile_ds / sizeof hostile_ds[0]; j++) {
            if (!name_wanted(r, hostile_ds[j])) continue;
            if (!first) ts_buf_addc(b, ',');
            first = 0;
            gen_one_ds(b, r, hostile_ds[j], 100000 + (int)j, tstr, (double)t / 1000.0);
        }
    }
    char date[64];
    ts_sim_go_date(date, sizeof date, r->now_ms);
    ts_buf_adds(b, "},\"pp\":");
    ts_sim_json_str(b, r->pp.data ? r->pp.data : "");
    ts_buf_adds(b, ",\"date\":\"");
    ts_buf_adds(b, date);
    ts_buf_adds(b, "\"}");
}

/* ---------- CrStates and cache-statuses ---------- */

static void rfc3339nano(char *out, size_t n, int64_t ms) {
    char base[32];
    ts_sim_rfc3339(base, sizeof base, ms / 1000);
    base[strlen(base) - 1] = '\0'; /* drop Z */
    int frac = (int)(ms % 1000);
    char f[8];
    snprintf(f, sizeof f, "%03d", frac);
    size_t fl = 3;
    while (fl && f[fl - 1] == '0') f[--fl] = '\0';
    snprintf(out, n, "%s%s%sZ", base, fl ? "." : "", f);
}

static void gen_crstates(ts_buf *b, const tm_req *r) {
    const sim_cdn *cd = &ts_sim.cdns[r->cdn];
    ts_buf_adds(b, "{\"caches\":{");
    for (int i = 0; i < cd->ncache; i++) {
        const sim_cache *c = &ts_sim.caches[cd->first_cache + i];
        char lp[48];
        rfc3339nano(lp, sizeof lp, r->now_ms - c->poll_off_ms);
        /* Escaped: fixture mode takes cache names from a file. */
        ts_buf_adds(b, i ? "," : "");
        ts_sim_json_str(b, c->host);
        ts_buf_printf(b,
                      ":{\"isAvailable\":true,\"ipv4Available\":true,\"ipv6Available\":false,"
                      "\"status\":\"%s - available\",\"lastPoll\":\"%s\"}",
                      c->reported ? "REPORTED" : "ONLINE", lp);
    }
    ts_buf_adds(b, "},\"deliveryServices\":{");
    for (int j = 0; j < cd->nds; j++) {
        if (ts_sim.fixture && j < ts_sim.nfx_ds) { /* the fixture's delivery services */
            ts_buf_adds(b, j ? "," : "");
            ts_sim_json_str(b, ts_sim.fx_ds[j]);
            ts_buf_adds(b, ":{\"disabledLocations\":[],\"isAvailable\":true}");
            continue;
        }
        ts_buf_printf(b, "%s\"ds-%d\":{\"disabledLocations\":[],\"isAvailable\":true}", j ? "," : "",
                      cd->first_ds + j + 1);
    }
    ts_buf_adds(b, "}}");
}

static void gen_statuses(ts_buf *b, const tm_req *r) {
    const sim_cdn *cd = &ts_sim.cdns[r->cdn];
    double t_s = (double)r->now_ms / 1000.0;
    char n1[40], n2[40];
    ts_buf_addc(b, '{');
    for (int i = 0; i < cd->ncache; i++) {
        const sim_cache *c = &ts_sim.caches[cd->first_cache + i];
        uint64_t h = ts_sim_mix(c->h + (uint64_t)(r->now_ms / 1000));
        ts_sim_fmt_jsonfloat(n1, ts_sim_cache_kbps(c, t_s));
        ts_sim_fmt_jsonfloat(n2, (double)(h % 300) / 100.0);
        ts_buf_adds(b, i ? "," : "");
        ts_sim_json_str(b, c->host);
        ts_buf_printf(b,
                      ":{\"type\":\"%s\",\"load_average\":%s,\"query_time_ms\":%d,\"health_time_ms\":%d,"
                      "\"stat_time_ms\":%d,\"stat_span_ms\":%d,\"health_span_ms\":%d,\"status\":\"%s - available\","
                      "\"status_poller\":\"health\",\"bandwidth_kbps\":%s,\"bandwidth_capacity_kbps\":%d,"
                      "\"connection_count\":%d,\"ipv4_available\":true,\"ipv6_available\":false,"
                      "\"combined_available\":true,\"interfaces\":{\"eth0\":{\"status\":\"available\","
                      "\"status_poller\":\"health\",\"bandwidth_kbps\":%s,\"available\":true}}}",
                      c->type == SIM_EDGE ? "EDGE" : "MID", n2, 3 + (int)(h % 40),
                      2 + (int)(h % 20), c->poll_off_ms % 1000, ts_sim.poll_ms, ts_sim.poll_ms,
                      c->reported ? "REPORTED" : "ONLINE", n1, c->speed_mbps * 1000, 1000 + (int)(h % 3000), n1);
    }
    ts_buf_addc(b, '}');
}

/* ---------- payload cache ---------- */

static void pentry_clear(sim_pentry *e) {
    free(e->key);
    ts_sim_payload_unref(e->raw);
    ts_sim_payload_unref(e->gz);
    memset(e, 0, sizeof *e);
}

static void generate(ts_buf *b, const tm_req *r) {
    int64_t t0 = ts_now_ns();
    switch (r->route) {
    case R_CACHESTATS: gen_cachestats(b, r); break;
    case R_DSSTATS: gen_dsstats(b, r); break;
    case R_CRSTATES: gen_crstates(b, r); break;
    default: gen_statuses(b, r); break;
    }
    int64_t us = (ts_now_ns() - t0) / 1000;
    atomic_fetch_add(&ts_sim.gen_count, 1);
    atomic_fetch_add(&ts_sim.gen_us_total, us);
    atomic_store(&ts_sim.gen_us_last, us);
    atomic_store(&ts_sim.gen_bytes_last, (long long)b->len);
    ts_debug("generated route %d for %s: %zu bytes in %lld us", r->route, ts_sim.cdns[r->cdn].name, b->len,
             (long long)us);
}

/* Returns a referenced raw body, and a referenced gzip body in *gz when asked. */
static sim_payload *get_payload(tm_req *r, int want_gz, sim_payload **gz) {
    *gz = NULL;
    if (ts_sim.payload_cache_ms <= 0) {
        ts_buf b;
        ts_buf_init(&b);
        generate(&b, r);
        sim_payload *p = ts_sim_payload_from_buf(&b);
        if (want_gz) *gz = ts_sim_gzip(p->data, p->len);
        return p;
    }
    sim_cdn *cd = &ts_sim.cdns[r->cdn];
    int64_t now = ts_sim_mono_ms();
    pthread_mutex_lock(&cd->lock);
    sim_pentry *hit = NULL, *victim = NULL;
    for (int i = 0; i < SIM_PCACHE; i++) {
        sim_pentry *e = &cd->pc[i];
        if (e->key && now - e->made_ms >= ts_sim.payload_cache_ms) pentry_clear(e);
        if (e->key && !strcmp(e->key, r->key.data)) hit = e;
        if (!e->key) {
            if (!victim || victim->key) victim = e;
        } else if (!victim || (victim->key && e->made_ms < victim->made_ms)) {
            victim = e;
        }
    }
    if (hit) {
        atomic_fetch_add(&ts_sim.cache_hits, 1);
    } else {
        hit = victim;
        pentry_clear(hit);
        ts_buf b;
        ts_buf_init(&b);
        generate(&b, r);
        hit->raw = ts_sim_payload_from_buf(&b);
        hit->key = strdup(r->key.data);
        hit->made_ms = now;
    }
    if (want_gz && !hit->gz) hit->gz = ts_sim_gzip(hit->raw->data, hit->raw->len);
    sim_payload *p = hit->raw;
    ts_sim_payload_ref(p);
    if (want_gz && hit->gz) {
        *gz = hit->gz;
        ts_sim_payload_ref(*gz);
    }
    pthread_mutex_unlock(&cd->lock);
    return p;
}

/* ---------- handler ---------- */

static int route_of(const char *url, const char **arg) {
    static const struct {
        const char *p;
        int r;
    } routes[] = {{"/publish/CacheStats", R_CACHESTATS}, {"/publish/DsStats", R_DSSTATS},
                  {"/publish/CrStates", R_CRSTATES},     {"/api/cache-statuses", R_STATUSES}};
    *arg = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t n = strlen(routes[i].p);
        if (strncmp(url, routes[i].p, n)) continue;
        if (url[n] == '\0' || (url[n] == '/' && url[n + 1] == '\0')) return routes[i].r;
        if (url[n] == '/' && (routes[i].r == R_CACHESTATS || routes[i].r == R_DSSTATS)) {
            *arg = url + n + 1;
            return routes[i].r;
        }
    }
    return R_PLAIN;
}

static enum MHD_Result plain_route(struct MHD_Connection *c, sim_monitor *m, const char *url) {
    const sim_cdn *cd = &ts_sim.cdns[m->cdn];
    char body[128];
    char u[64];
    snprintf(u, sizeof u, "%s", url);
    size_t ul = strlen(u);
    if (ul > 1 && u[ul - 1] == '/') u[ul - 1] = '\0';
    double t_s = (double)ts_now_ms() / 1000.0;
    if (!strcmp(u, "/api/cache-count") || !strcmp(u, "/api/cache-available-count")) {
        snprintf(body, sizeof body, "%d", cd->ncache);
    } else if (!strcmp(u, "/api/cache-down-count")) {
        snprintf(body, sizeof body, "0");
    } else if (!strcmp(u, "/api/bandwidth-kbps")) {
        double s = 0;
        for (int i = 0; i < cd->ncache; i++) s += ts_sim_cache_kbps(&ts_sim.caches[cd->first_cache + i], t_s);
        snprintf(body, sizeof body, "%f", s);
    } else if (!strcmp(u, "/api/bandwidth-capacity-kbps")) {
        long long s = 0;
        for (int i = 0; i < cd->ncache; i++) s += ts_sim.caches[cd->first_cache + i].speed_mbps * 1000LL;
        snprintf(body, sizeof body, "%lld", s);
    } else if (!strcmp(u, "/api/version")) {
        atomic_fetch_add(&m->n_200, 1);
        return ts_sim_send_text(c, 200, "text/plain; charset=utf-8", "traffic_monitor-8.0.0.tssim0");
    } else {
        atomic_fetch_add(&m->n_404, 1);
        return ts_sim_send_text(c, 404, "text/plain; charset=utf-8", "404 page not found\n");
    }
    atomic_fetch_add(&m->n_200, 1);
    return ts_sim_send_text(c, 200, "application/json", body);
}

static const char *const garbage[] = {
    "{\"pp\":\"\",\"date\":\"Thu May 14 15:48:55 UTC 2020\",\"caches\":{\"edge\":{\"bandwidth\":[{\"value\":\"12",
    "<html><body><h1>502 Bad Gateway</h1></body></html>",
    "{\"caches\":{\"edge\":{\"bandwidth\":[{\"value\":NaN,\"time\":1,\"span\":1}]}}} trailing",
    "{\"caches\":[1,2,3,}",
};

static enum MHD_Result tm_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method);

/* Fixture mode: the recorded body as is, whatever the query (TM's filters do not
 * apply); the body faults (invalid, truncate, cut) and gzip still do. */
static enum MHD_Result serve_fixture(struct MHD_Connection *c, sim_monitor *m, int route, const sim_fault *f) {
    int k = route == R_DSSTATS;
    sim_payload *raw = ts_sim.fx_body[k], *gz = ts_sim.fx_gz[k];
    const char *ct = "application/json";
    enum MHD_Result ret;
    atomic_fetch_add(&m->n_200, 1);
    if (f->invalid)
        return ts_sim_send_text(c, 200, ct, garbage[(atomic_load(&m->n_200) + (long long)route) % 4]);
    int want_gz = ts_sim_wants_gzip(c) && gz;
    if (f->truncate) {
        sim_payload *half = want_gz ? ts_sim_gzip(raw->data, raw->len / 2) : NULL;
        if (half) {
            atomic_fetch_add(&m->bytes, (long long)half->len);
            ret = ts_sim_send_payload(c, 200, ct, half, half->len, 1);
            ts_sim_payload_unref(half);
        } else {
            atomic_fetch_add(&m->bytes, (long long)(raw->len / 2));
            ret = ts_sim_send_payload(c, 200, ct, raw, raw->len / 2, 0);
        }
    } else if (f->cut) {
        ret = ts_sim_send_cut(c, ct, want_gz ? gz : raw);
    } else if (want_gz) {
        atomic_fetch_add(&m->n_gzip, 1);
        atomic_fetch_add(&m->bytes, (long long)gz->len);
        ret = ts_sim_send_payload(c, 200, ct, gz, gz->len, 1);
    } else {
        atomic_fetch_add(&m->bytes, (long long)raw->len);
        ret = ts_sim_send_payload(c, 200, ct, raw, raw->len, 0);
    }
    return ret;
}

enum MHD_Result ts_sim_tm_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    (void)upload;
    /* Drain any request body: TM routes are GET-only and ignore it. */
    if (*con_cls == NULL) {
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    return tm_handle(cls, c, url, method);
}

static enum MHD_Result tm_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method) {
    sim_monitor *m = cls;
    int midx = (int)(m - ts_sim.mons);
    if (atomic_load(&ts_sim.stopping)) return MHD_NO;
    const char *arg;
    int route = route_of(url, &arg);
    switch (route) {
    case R_CACHESTATS: atomic_fetch_add(&m->n_cachestats, 1); break;
    case R_DSSTATS: atomic_fetch_add(&m->n_dsstats, 1); break;
    case R_CRSTATES: atomic_fetch_add(&m->n_crstates, 1); break;
    default: atomic_fetch_add(&m->n_other, 1); break;
    }
    sim_fault f;
    ts_sim_fault_get(midx, &f);
    if (f.dead) { /* a kept-alive connection to a dead TM: just drop it */
        atomic_fetch_add(&m->n_dropped, 1);
        return MHD_NO;
    }
    if (f.hang) {
        ts_debug("monitor %s:%d hangs on %s", ts_sim.cdns[m->cdn].name, m->index, url);
        if (ts_sim_sleep_ms(INT32_MAX, &m->fault.hang) < 0) return MHD_NO;
        ts_sim_fault_get(midx, &f);
    }
    if (f.slow_ms > 0 && ts_sim_sleep_ms(f.slow_ms, NULL) < 0) return MHD_NO;
    if (f.dead) {
        atomic_fetch_add(&m->n_dropped, 1);
        return MHD_NO;
    }
    if (f.always503 || ts_now_ms() < f.start503_until_ms) {
        atomic_fetch_add(&m->n_503, 1);
        return ts_sim_send_text(c, 503, "text/plain; charset=utf-8", "Service Unavailable");
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        atomic_fetch_add(&m->n_404, 1);
        return ts_sim_send_text(c, 405, "text/plain; charset=utf-8", "Method Not Allowed");
    }
    if (route == R_PLAIN) return plain_route(c, m, url);
    if (ts_sim.fixture && (route == R_CACHESTATS || route == R_DSSTATS)) return serve_fixture(c, m, route, &f);

    tm_req r;
    memset(&r, 0, sizeof r);
    r.route = route;
    r.cdn = m->cdn;
    r.path_arg = arg;
    r.now_ms = ts_now_ms();
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_q, &r);
    ts_buf_init(&r.pp);
    ts_buf_init(&r.key);
    enum MHD_Result ret;
    if (route == R_CACHESTATS || route == R_DSSTATS) {
        char err[256];
        const char *e = parse_filter(&r, err, sizeof err);
        if (e) {
            atomic_fetch_add(&m->n_400, 1);
            ret = ts_sim_send_text(c, 400, "text/plain; charset=utf-8", e);
            goto done;
        }
        build_pp(&r);
        r.hostile = f.hostile;
        r.huge_mb = route == R_CACHESTATS ? f.huge_mb : 0;
    }
    if (f.invalid) {
        atomic_fetch_add(&m->n_200, 1);
        ret = ts_sim_send_text(c, 200, "application/json",
                               garbage[(atomic_load(&m->n_200) + (long long)route) % 4]);
        goto done;
    }
    /* The cache key is everything the body depends on (besides time). */
    ts_buf_printf(&r.key, "%d|%s|%d|%d|", route, arg ? arg : "", r.hostile, r.huge_mb);
    for (int i = 0; i < r.nq; i++) {
        ts_buf_adds(&r.key, r.q[i].k);
        ts_buf_adds(&r.key, r.q[i].v ? "=" : "");
        ts_buf_adds(&r.key, r.q[i].v ? r.q[i].v : "");
        ts_buf_addc(&r.key, '\x01');
    }
    int want_gz = ts_sim_wants_gzip(c);
    sim_payload *gz = NULL;
    sim_payload *raw = get_payload(&r, want_gz && !f.truncate, &gz);
    const char *ct = "application/json";
    if (f.truncate) {
        /* Half a body with a matching Content-Length: a clean transfer of invalid JSON. */
        sim_payload *half = want_gz ? ts_sim_gzip(raw->data, raw->len / 2) : NULL;
        if (half) {
            atomic_fetch_add(&m->bytes, (long long)half->len);
            ret = ts_sim_send_payload(c, 200, ct, half, half->len, 1);
            ts_sim_payload_unref(half);
        } else {
            atomic_fetch_add(&m->bytes, (long long)(raw->len / 2));
            ret = ts_sim_send_payload(c, 200, ct, raw, raw->len / 2, 0);
        }
    } else if (f.cut) {
        ret = ts_sim_send_cut(c, ct, gz ? gz : raw);
    } else if (gz) {
        atomic_fetch_add(&m->n_gzip, 1);
        atomic_fetch_add(&m->bytes, (long long)gz->len);
        ret = ts_sim_send_payload(c, 200, ct, gz, gz->len, 1);
    } else {
        atomic_fetch_add(&m->bytes, (long long)raw->len);
        ret = ts_sim_send_payload(c, 200, ct, raw, raw->len, 0);
    }
    atomic_fetch_add(&m->n_200, 1);
    ts_sim_payload_unref(raw);
    ts_sim_payload_unref(gz);
done:
    free(r.stats_copy);
    for (int i = 0; i < r.nnames_copy; i++) free(r.names_copy[i]);
    ts_buf_free(&r.pp);
    ts_buf_free(&r.key);
    return ret;
}

/* --bench: time the generator alone (no HTTP), for the benchmark's numbers. */
void ts_sim_bench(int iters, const char *stats, int wildcard) {
    tm_req r;
    memset(&r, 0, sizeof r);
    r.route = R_CACHESTATS;
    r.cdn = 0;
    r.hc = 1;
    r.type = -1;
    r.wildcard = wildcard;
    ts_buf_init(&r.pp);
    if (stats && *stats) {
        r.stats_copy = strdup(stats);
        for (char *tok = r.stats_copy, *next; tok && r.nstat_list < 256; tok = next) {
            next = strchr(tok, ',');
            if (next) *next++ = '\0';
            r.stat_list[r.nstat_list++] = tok;
        }
        ts_buf_printf(&r.pp, "hc=[1], wildcard=[%d], stats=[%s]", wildcard, stats);
    }
    ts_buf b;
    ts_buf_init(&b);
    int64_t best = INT64_MAX, total = 0;
    size_t len = 0, values = 0;
    for (int i = 0; i < iters; i++) {
        ts_buf_reset(&b);
        r.now_ms = ts_now_ms();
        int64_t t0 = ts_now_ns();
        gen_cachestats(&b, &r);
        int64_t dt = ts_now_ns() - t0;
        total += dt;
        if (dt < best) best = dt;
        len = b.len;
    }
    for (size_t i = 0; i + 9 < len; i++)
        if (b.data[i] == '{' && !memcmp(b.data + i, "{\"value\":", 9)) values++;
    int64_t t0 = ts_now_ns();
    sim_payload *z = ts_sim_gzip(b.data, b.len);
    int64_t gz_ns = ts_now_ns() - t0;
#ifdef __SANITIZE_ADDRESS__
    const int sanitized = 1; /* ASan makes the generator ~2x slower: tests relax their bound */
#else
    const int sanitized = 0;
#endif
    printf("{\"sanitized\":%s,\"caches\":%d,\"stats_filter\":%d,\"bytes\":%zu,\"values\":%zu,\"iterations\":%d,"
           "\"best_ms\":%.3f,\"mean_ms\":%.3f,\"gzip_ms\":%.3f,\"gzip_bytes\":%zu}\n",
           sanitized ? "true" : "false", ts_sim.cdns[0].ncache, r.nstat_list, len, values, iters, (double)best / 1e6,
           (double)total / 1e6 / (iters ? iters : 1), (double)gz_ns / 1e6, z ? z->len : 0);
    fflush(stdout);
    ts_sim_payload_unref(z);
    ts_buf_free(&b);
    ts_buf_free(&r.pp);
    free(r.stats_copy);
}
