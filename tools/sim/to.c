/* tstats-sim Traffic Ops face (C, test side): API v5 login with cookies,
 * servers, TRAFFIC_STATS profile parameters, stats_summary GET/POST kept in
 * memory, plus the sim's own control routes under /sim/ (faults, counters). */
#include <ctype.h>
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sim.h"
#include "ts_log.h"

#define MAX_BODY (1 << 20)
#define MAX_SESSIONS 4096
#define MAX_SUMMARIES 100000

typedef struct to_conn {
    ts_buf body;
    int too_big;
} to_conn;

/* ---------- a minimal JSON reader for flat request objects ---------- */

enum { J_NONE, J_STR, J_NUM, J_NULL, J_BOOL, J_OTHER };

static const char *jws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Parses a JSON string at p (on the quote); appends UTF-8 to out when given. */
static const char *jstr(const char *p, ts_buf *out) {
    if (*p != '"') return NULL;
    p++;
    while (*p && *p != '"') {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p != '\\') {
            if (out) ts_buf_addc(out, *p);
            p++;
            continue;
        }
        p++;
        char ch = *p++;
        switch (ch) {
        case '"': case '\\': case '/': if (out) ts_buf_addc(out, ch); break;
        case 'b': if (out) ts_buf_addc(out, '\b'); break;
        case 'f': if (out) ts_buf_addc(out, '\f'); break;
        case 'n': if (out) ts_buf_addc(out, '\n'); break;
        case 'r': if (out) ts_buf_addc(out, '\r'); break;
        case 't': if (out) ts_buf_addc(out, '\t'); break;
        case 'u': {
            unsigned cp = 0;
            for (int i = 0; i < 4; i++, p++) {
                if (!isxdigit((unsigned char)*p)) return NULL;
                cp = cp * 16 + (unsigned)(isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10));
            }
            if (out) { /* BMP only; surrogates pass through as-is, enough for names */
                char u[3];
                if (cp < 0x80) ts_buf_addc(out, (char)cp);
                else if (cp < 0x800) {
                    u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 63));
                    ts_buf_add(out, u, 2);
                } else {
                    u[0] = (char)(0xe0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 63));
                    u[2] = (char)(0x80 | (cp & 63));
                    ts_buf_add(out, u, 3);
                }
            }
            break;
        }
        default: return NULL;
        }
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *jskip(const char *p, int depth) {
    p = jws(p);
    if (depth > 64) return NULL;
    if (*p == '"') return jstr(p, NULL);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = jws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = jstr(jws(p), NULL);
                if (!p) return NULL;
                p = jws(p);
                if (*p++ != ':') return NULL;
            }
            p = jskip(p, depth + 1);
            if (!p) return NULL;
            p = jws(p);
            if (*p == ',') { p++; continue; }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    if (!strncmp(p, "true", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    if (!strncmp(p, "null", 4)) return p + 4;
    char *end;
    strtod(p, &end);
    return end == p ? NULL : end;
}

/* Finds top-level key in a JSON object. Returns its type; string value in out,
 * number in *num. J_NONE when absent, -1 when the body is not a JSON object. */
static int jget(const char *body, const char *key, ts_buf *out, double *num) {
    const char *p = jws(body);
    if (*p != '{') return -1;
    p = jws(p + 1);
    if (*p == '}') return J_NONE;
    ts_buf k;
    ts_buf_init(&k);
    int found = J_NONE;
    for (;;) {
        ts_buf_reset(&k);
        p = jstr(jws(p), &k);
        if (!p) { found = -1; break; }
        p = jws(p);
        if (*p++ != ':') { found = -1; break; }
        p = jws(p);
        int match = k.data && !strcmp(k.data, key);
        if (match && found == J_NONE) {
            if (*p == '"') {
                if (out) ts_buf_reset(out);
                p = jstr(p, out);
                found = J_STR;
            } else if (*p == 'n' && !strncmp(p, "null", 4)) {
                p += 4;
                found = J_NULL;
            } else if (*p == 't' || *p == 'f') {
                found = J_BOOL;
                p = jskip(p, 0);
            } else if (*p == '-' || isdigit((unsigned char)*p)) {
                char *end;
                double v = strtod(p, &end);
                if (num) *num = v;
                p = end;
                found = J_NUM;
            } else {
                found = J_OTHER;
                p = jskip(p, 0);
            }
        } else {
            p = jskip(p, 0);
        }
        if (!p) { found = -1; break; }
        p = jws(p);
        if (*p == ',') { p++; continue; }
        if (*p == '}') break;
        found = -1;
        break;
    }
    ts_buf_free(&k);
    return found;
}

/* ---------- responses ---------- */

static enum MHD_Result alert(struct MHD_Connection *c, int status, const char *level, const char *text) {
    ts_buf b;
    ts_buf_init(&b);
    ts_buf_adds(&b, "{\"alerts\":[{\"text\":");
    ts_sim_json_str(&b, text);
    ts_buf_adds(&b, ",\"level\":");
    ts_sim_json_str(&b, level);
    ts_buf_adds(&b, "}]}");
    return ts_sim_send_buf(c, status, "application/json", &b);
}

static void json_num(ts_buf *b, double v) {
    char s[48];
    ts_buf_add(b, s, ts_sim_fmt_jsonfloat(s, v));
}

/* ---------- sessions ---------- */

static void new_token(char *out) {
    uint64_t a = ts_sim_mix(ts_sim.seed ^ (uint64_t)ts_now_ns() ^ ++ts_sim.token_ctr);
    uint64_t b = ts_sim_mix(a ^ 0x5bd1e995ULL);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

static int session_ok(struct MHD_Connection *c) {
    const char *names[] = {"mojolicious", "access_token"};
    int ok = 0;
    int64_t now = ts_now_ms();
    pthread_mutex_lock(&ts_sim.to_lock);
    for (int n = 0; n < 2 && !ok; n++) {
        const char *tok = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, names[n]);
        if (!tok) continue;
        for (int i = 0; i < ts_sim.nsessions; i++)
            if (!strcmp(ts_sim.sessions[i], tok) && ts_sim.session_exp[i] > now) ok = 1;
    }
    pthread_mutex_unlock(&ts_sim.to_lock);
    return ok;
}

static void session_add(const char *tok) {
    pthread_mutex_lock(&ts_sim.to_lock);
    if (ts_sim.nsessions == MAX_SESSIONS) { /* forget the oldest */
        free(ts_sim.sessions[0]);
        memmove(ts_sim.sessions, ts_sim.sessions + 1, sizeof(char *) * (MAX_SESSIONS - 1));
        memmove(ts_sim.session_exp, ts_sim.session_exp + 1, sizeof(int64_t) * (MAX_SESSIONS - 1));
        ts_sim.nsessions--;
    }
    if (ts_sim.nsessions == ts_sim.sessions_cap) {
        ts_sim.sessions_cap = ts_sim.sessions_cap ? ts_sim.sessions_cap * 2 : 16;
        ts_sim.sessions = realloc(ts_sim.sessions, sizeof(char *) * (size_t)ts_sim.sessions_cap);
        ts_sim.session_exp = realloc(ts_sim.session_exp, sizeof(int64_t) * (size_t)ts_sim.sessions_cap);
        if (!ts_sim.sessions || !ts_sim.session_exp) abort();
    }
    ts_sim.sessions[ts_sim.nsessions] = strdup(tok);
    ts_sim.session_exp[ts_sim.nsessions] = ts_now_ms() + (int64_t)ts_sim.session_ttl_s * 1000;
    ts_sim.nsessions++;
    pthread_mutex_unlock(&ts_sim.to_lock);
}

static void sessions_clear(void) {
    pthread_mutex_lock(&ts_sim.to_lock);
    for (int i = 0; i < ts_sim.nsessions; i++) free(ts_sim.sessions[i]);
    ts_sim.nsessions = 0;
    pthread_mutex_unlock(&ts_sim.to_lock);
}

static enum MHD_Result do_login(struct MHD_Connection *c, const char *body) {
    ts_buf u, p;
    ts_buf_init(&u);
    ts_buf_init(&p);
    int tu = jget(body, "u", &u, NULL), tp = tu < 0 ? -1 : jget(body, "p", &p, NULL);
    enum MHD_Result ret;
    if (tu < 0 || tp < 0) {
        atomic_fetch_add(&ts_sim.to_login_fail, 1);
        ret = alert(c, 400, "error", "parsing login credentials: invalid JSON");
    } else if (tu != J_STR || tp != J_STR || !u.len || !p.len) {
        atomic_fetch_add(&ts_sim.to_login_fail, 1);
        ret = alert(c, 400, "error", "username and password are required");
    } else if (strcmp(u.data, ts_sim.user) || strcmp(p.data, ts_sim.password)) {
        atomic_fetch_add(&ts_sim.to_login_fail, 1);
        ret = alert(c, 401, "error", "Invalid username or password.");
    } else {
        char tok[40], ck[128];
        new_token(tok);
        session_add(tok);
        atomic_fetch_add(&ts_sim.to_login_ok, 1);
        ts_buf b;
        ts_buf_init(&b);
        ts_buf_adds(&b, "{\"alerts\":[{\"text\":\"Successfully logged in.\",\"level\":\"success\"}]}");
        sim_payload *pl = ts_sim_payload_from_buf(&b);
        struct MHD_Response *r = MHD_create_response_from_buffer(pl->len, pl->data, MHD_RESPMEM_MUST_COPY);
        ts_sim_payload_unref(pl);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        snprintf(ck, sizeof ck, "mojolicious=%s; Path=/; Max-Age=%d; HttpOnly", tok, ts_sim.session_ttl_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, ck);
        snprintf(ck, sizeof ck, "access_token=%s; Path=/; Max-Age=%d; HttpOnly", tok, ts_sim.session_ttl_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, ck);
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
    }
    ts_buf_free(&u);
    ts_buf_free(&p);
    return ret;
}

/* ---------- servers ---------- */

typedef struct srv_filter {
    const char *type, *status, *host;
    int cdn_id;
} srv_filter;

static void server_obj(ts_buf *b, int *first, const srv_filter *f, const char *host, const char *domain, int port,
                       const char *type, int type_id, const char *status, int status_id, int cdn, int cg, int id,
                       const char *profile, const char *ip) {
    if (f) {
        if (f->type && strcmp(f->type, type)) return;
        if (f->status && strcmp(f->status, status)) return;
        if (f->host && strcmp(f->host, host)) return;
        if (f->cdn_id > 0 && ts_sim.cdns[cdn].id != f->cdn_id) return;
    }
    if (!*first) ts_buf_addc(b, ',');
    *first = 0;
    ts_buf_adds(b, "{\"cacheGroup\":");
    ts_sim_json_str(b, ts_sim.cg_names[cg]);
    ts_buf_printf(b, ",\"cacheGroupID\":%d,\"cdnID\":%d,\"cdn\":", cg + 1, ts_sim.cdns[cdn].id);
    ts_sim_json_str(b, ts_sim.cdns[cdn].name);
    ts_buf_adds(b, ",\"configUpdateTime\":\"2025-01-01T00:00:00Z\",\"configApplyTime\":\"2025-01-01T00:00:00Z\","
                   "\"configUpdateFailed\":false,\"domainName\":");
    ts_sim_json_str(b, domain);
    ts_buf_adds(b, ",\"guid\":null,\"hostName\":");
    ts_sim_json_str(b, host);
    ts_buf_printf(b,
                  ",\"httpsPort\":443,\"id\":%d,\"iloIpAddress\":\"\",\"iloIpGateway\":\"\",\"iloIpNetmask\":\"\","
                  "\"iloPassword\":\"\",\"iloUsername\":\"\",\"lastUpdated\":\"2025-01-01T00:00:00Z\","
                  "\"mgmtIpAddress\":\"\",\"mgmtIpGateway\":\"\",\"mgmtIpNetmask\":\"\",\"offlineReason\":\"\","
                  "\"physicalLocation\":\"Simulated DC\",\"physicalLocationID\":1,\"profiles\":[\"%s\"],"
                  "\"rack\":\"\",\"revalUpdateTime\":\"2025-01-01T00:00:00Z\","
                  "\"revalApplyTime\":\"2025-01-01T00:00:00Z\",\"revalUpdateFailed\":false,"
                  "\"status\":\"%s\",\"statusID\":%d,\"tcpPort\":%d,\"type\":\"%s\",\"typeID\":%d,"
                  "\"xmppId\":\"\",\"xmppPasswd\":\"\",\"interfaces\":[{\"ipAddresses\":[{\"address\":\"%s/24\","
                  "\"gateway\":null,\"serviceAddress\":true}],\"maxBandwidth\":null,\"monitor\":true,\"mtu\":1500,"
                  "\"name\":\"eth0\",\"routerHostName\":\"\",\"routerPortName\":\"\"}]}",
                  id, profile, status, status_id, port, type, type_id, ip);
}

static void gen_servers(ts_buf *b, const srv_filter *f) {
    int first = 1;
    ts_buf_adds(b, "{\"response\":[");
    for (int i = 0; i < ts_sim.ncache; i++) {
        const sim_cache *c = &ts_sim.caches[i];
        server_obj(b, &first, f, c->host, "sim.test", 80, c->type == SIM_EDGE ? "EDGE" : "MID",
                   c->type == SIM_EDGE ? 11 : 12, c->reported ? "REPORTED" : "ONLINE", c->reported ? 3 : 2, c->cdn,
                   c->cg, c->id, c->type == SIM_EDGE ? "ATS_EDGE_TIER_CACHE" : "ATS_MID_TIER_CACHE", c->ip);
    }
    /* Monitors: hostName is the listen address and domainName is empty, so a
     * client joining them as "<hostName>.<domainName>" must skip the dot. */
    for (int i = 0; i < ts_sim.nmon; i++) {
        const sim_monitor *m = &ts_sim.mons[i];
        char ip[32];
        snprintf(ip, sizeof ip, "10.%d.250.%d", m->cdn + 1, m->index + 2);
        server_obj(b, &first, f, ts_sim.host_for_urls, "", m->port, "RASCAL", 14, m->offline ? "OFFLINE" : "ONLINE",
                   m->offline ? 1 : 2, m->cdn, 0, 10 + i, "RASCAL-Traffic_Monitor", ip);
    }
    for (int k = 0; k < ts_sim.ncdn; k++) {
        char host[48], ip[32];
        snprintf(host, sizeof host, "tr-%s", ts_sim.cdns[k].name);
        snprintf(ip, sizeof ip, "10.%d.251.2", k + 1);
        server_obj(b, &first, f, host, "sim.test", 80, "CCR", 15, "ONLINE", 2, k, 0, 5 + k, "CCR_CIAB", ip);
    }
    ts_buf_adds(b, "]}");
}

void ts_sim_build_servers(void) {
    ts_buf b;
    ts_buf_init(&b);
    gen_servers(&b, NULL);
    ts_sim.servers_raw = ts_sim_payload_from_buf(&b);
    ts_sim.servers_gz = ts_sim_gzip(ts_sim.servers_raw->data, ts_sim.servers_raw->len);
}

/* ---------- parameters ---------- */

static void param_obj(ts_buf *b, int *first, int id, const char *name, const char *value) {
    if (!*first) ts_buf_addc(b, ',');
    *first = 0;
    ts_buf_printf(b, "{\"configFile\":\"traffic_stats.config\",\"id\":%d,"
                     "\"lastUpdated\":\"2018-12-05T23:52:59.696337+05:30\",\"name\":\"%s\",\"secure\":false,\"value\":",
                  id, name);
    ts_sim_json_str(b, value);
    ts_buf_addc(b, '}');
}

static void gen_params(ts_buf *b) {
    int first = 1, id = 1000;
    ts_buf_adds(b, "{\"response\":[");
    pthread_mutex_lock(&ts_sim.to_lock);
    if (ts_sim.params_override) {
        for (int i = 0; i < ts_sim.nparam_cache; i++) param_obj(b, &first, id++, "CacheStats", ts_sim.param_cache[i]);
        for (int i = 0; i < ts_sim.nparam_ds; i++) param_obj(b, &first, id++, "DsStats", ts_sim.param_ds[i]);
    } else if (!ts_sim.no_params) {
        /* Same order as CiaB's 080-TRAFFIC_STATS.json: 3 CacheStats, the 8 DsStats, the rest. */
        for (int i = 0; i < 3; i++) param_obj(b, &first, id++, "CacheStats", ts_sim_ciab_cache_stat(i));
        for (int i = 0; i < ts_sim_ciab_nds_stats(); i++) param_obj(b, &first, id++, "DsStats", ts_sim_ciab_ds_stat(i));
        for (int i = 3; i < ts_sim_ciab_ncache_stats(); i++)
            param_obj(b, &first, id++, "CacheStats", ts_sim_ciab_cache_stat(i));
    }
    pthread_mutex_unlock(&ts_sim.to_lock);
    ts_buf_adds(b, "]}");
}

static void set_list(char ***list, int *n, const char *csv) {
    for (int i = 0; i < *n; i++) free((*list)[i]);
    free(*list);
    *list = NULL;
    *n = 0;
    if (!csv || !*csv) return;
    char *c = strdup(csv);
    int cap = 1;
    for (const char *p = c; *p; p++) cap += *p == ',';
    *list = calloc((size_t)cap, sizeof **list);
    for (char *tok = c, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next) *next++ = '\0';
        if (*tok) (*list)[(*n)++] = strdup(tok);
    }
    free(c);
}

/* ---------- stats_summary ---------- */

/* Accepts what TO accepts: RFC3339, "2006-01-02 15:04:05-07", "2006-01-02". */
static int parse_time(const char *s, int64_t *out, char *date) {
    int Y, M, D, h = 0, m = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &n) != 3 || n != 10) return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31) return -1;
    const char *p = s + 10;
    int off = 0;
    if (*p == 'T' || *p == ' ') {
        int k = 0;
        if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &m, &sec, &k) != 3 || k != 8) return -1;
        p += 9;
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p)) p++;
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p == '-' ? -1 : 1, oh = 0, om = 0;
            p++;
            if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1])) return -1;
            oh = (p[0] - '0') * 10 + (p[1] - '0');
            p += 2;
            if (*p == ':') p++;
            if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1])) {
                om = (p[0] - '0') * 10 + (p[1] - '0');
                p += 2;
            }
            off = sign * (oh * 3600 + om * 60);
        } else {
            return -1;
        }
    }
    if (*p) return -1;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    *out = (int64_t)timegm(&tm) - off;
    if (date) snprintf(date, 11, "%04d-%02d-%02d", Y, M, D);
    return 0;
}

static enum MHD_Result ss_post(struct MHD_Connection *c, const char *body) {
    ts_buf s;
    ts_buf_init(&s);
    sim_summary row;
    memset(&row, 0, sizeof row);
    double v = 0;
    enum MHD_Result ret;
    int t;
    if (jget(body, "statName", &s, NULL) < 0) {
        ret = alert(c, 400, "error", "parsing body: invalid JSON");
        goto out;
    }
    if ((t = jget(body, "statName", &s, NULL)) != J_STR || !s.len) {
        ret = alert(c, 400, "error", "statName: cannot be blank.");
        goto out;
    }
    snprintf(row.stat, sizeof row.stat, "%s", s.data);
    if (jget(body, "statValue", NULL, &v) != J_NUM) {
        ret = alert(c, 400, "error", "statValue: cannot be blank.");
        goto out;
    }
    row.value = v;
    if (jget(body, "summaryTime", &s, NULL) != J_STR || parse_time(s.data ? s.data : "", &row.summary_s, NULL) < 0) {
        ret = alert(c, 400, "error", "invalid timestamp given for summaryTime");
        goto out;
    }
    t = jget(body, "statDate", &s, NULL);
    if (t == J_STR) {
        int64_t ignored;
        if (parse_time(s.data ? s.data : "", &ignored, row.date) < 0) {
            ret = alert(c, 400, "error", "invalid timestamp given for statDate");
            goto out;
        }
        row.has_date = 1;
    }
    snprintf(row.cdn, sizeof row.cdn, "all");
    snprintf(row.ds, sizeof row.ds, "all");
    if (jget(body, "cdnName", &s, NULL) == J_STR && s.len) snprintf(row.cdn, sizeof row.cdn, "%s", s.data);
    if (jget(body, "deliveryServiceName", &s, NULL) == J_STR && s.len) snprintf(row.ds, sizeof row.ds, "%s", s.data);
    pthread_mutex_lock(&ts_sim.to_lock);
    if (ts_sim.nsummaries < MAX_SUMMARIES) {
        if (ts_sim.nsummaries == ts_sim.summaries_cap) {
            ts_sim.summaries_cap = ts_sim.summaries_cap ? ts_sim.summaries_cap * 2 : 64;
            ts_sim.summaries = realloc(ts_sim.summaries, sizeof row * (size_t)ts_sim.summaries_cap);
            if (!ts_sim.summaries) abort();
        }
        ts_sim.summaries[ts_sim.nsummaries++] = row;
    }
    pthread_mutex_unlock(&ts_sim.to_lock);
    ret = alert(c, 200, "success", "Stats Summary was successfully created");
out:
    ts_buf_free(&s);
    return ret;
}

static enum MHD_Result ss_get(struct MHD_Connection *c) {
    const char *last = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "lastSummaryDate");
    const char *stat = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "statName");
    const char *cdn = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cdnName");
    const char *ds = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "deliveryServiceName");
    ts_buf b;
    ts_buf_init(&b);
    char when[40];
    pthread_mutex_lock(&ts_sim.to_lock);
    if (last && *last) {
        /* "Last updated" mode: newest summary_time of that stat, or null. */
        int best = -1;
        for (int i = 0; i < ts_sim.nsummaries; i++) {
            const sim_summary *r = &ts_sim.summaries[i];
            if (stat && strcmp(stat, r->stat)) continue;
            if (best < 0 || r->summary_s > ts_sim.summaries[best].summary_s) best = i;
        }
        if (best < 0) {
            ts_buf_adds(&b, "{\"response\":{\"summaryTime\":null}}");
        } else {
            ts_sim_rfc3339(when, sizeof when, ts_sim.summaries[best].summary_s);
            ts_buf_printf(&b, "{\"response\":{\"summaryTime\":\"%s\"}}", when);
        }
    } else {
        int first = 1;
        ts_buf_adds(&b, "{\"response\":[");
        for (int i = 0; i < ts_sim.nsummaries; i++) {
            const sim_summary *r = &ts_sim.summaries[i];
            if ((stat && strcmp(stat, r->stat)) || (cdn && strcmp(cdn, r->cdn)) || (ds && strcmp(ds, r->ds)))
                continue;
            if (!first) ts_buf_addc(&b, ',');
            first = 0;
            ts_buf_adds(&b, "{\"cdnName\":");
            ts_sim_json_str(&b, r->cdn);
            ts_buf_adds(&b, ",\"deliveryServiceName\":");
            ts_sim_json_str(&b, r->ds);
            ts_buf_adds(&b, ",\"statName\":");
            ts_sim_json_str(&b, r->stat);
            ts_buf_adds(&b, ",\"statValue\":");
            json_num(&b, r->value);
            ts_sim_rfc3339(when, sizeof when, r->summary_s);
            ts_buf_printf(&b, ",\"summaryTime\":\"%s\",\"statDate\":", when);
            if (r->has_date) ts_buf_printf(&b, "\"%s\"}", r->date);
            else ts_buf_adds(&b, "null}");
        }
        ts_buf_adds(&b, "]}");
    }
    pthread_mutex_unlock(&ts_sim.to_lock);
    return ts_sim_send_buf(c, 200, "application/json", &b);
}

/* ---------- /sim/ control routes ---------- */

static void fault_json(ts_buf *b, const sim_fault *f) {
    int64_t left = f->start503_until_ms - ts_now_ms();
    ts_buf_printf(b,
                  "{\"503_start_ms_left\":%lld,\"503\":%s,\"slow_ms\":%d,\"hang\":%s,\"dead\":%s,\"truncate\":%s,"
                  "\"cut\":%s,\"invalid\":%s,\"huge_mb\":%d,\"hostile\":%s}",
                  (long long)(left > 0 ? left : 0), f->always503 ? "true" : "false", f->slow_ms,
                  f->hang ? "true" : "false", f->dead ? "true" : "false", f->truncate ? "true" : "false",
                  f->cut ? "true" : "false", f->invalid ? "true" : "false", f->huge_mb,
                  f->hostile ? "true" : "false");
}

static enum MHD_Result sim_stats(struct MHD_Connection *c) {
    ts_buf b;
    ts_buf_init(&b);
    pthread_mutex_lock(&ts_sim.to_lock);
    int nsess = ts_sim.nsessions, nsum = ts_sim.nsummaries;
    pthread_mutex_unlock(&ts_sim.to_lock);
    long long gc = atomic_load(&ts_sim.gen_count);
    ts_buf_printf(&b,
                  "{\"pid\":%d,\"uptime_ms\":%lld,\"to\":{\"port\":%d,\"down\":%s,\"slow_ms\":%d,\"logins\":%lld,"
                  "\"login_failures\":%lld,\"unauthorized\":%lld,\"servers\":%lld,\"parameters\":%lld,"
                  "\"stats_summary_get\":%lld,\"stats_summary_post\":%lld,\"other\":%lld,\"503\":%lld,"
                  "\"sim\":%lld,\"sessions\":%d,\"summaries\":%d},",
                  (int)getpid(), (long long)(ts_now_ms() - ts_sim.start_ms), ts_sim.to_port,
                  ts_sim.to_down ? "true" : "false", ts_sim.to_slow_ms, atomic_load(&ts_sim.to_login_ok),
                  atomic_load(&ts_sim.to_login_fail), atomic_load(&ts_sim.to_unauth), atomic_load(&ts_sim.to_servers),
                  atomic_load(&ts_sim.to_params), atomic_load(&ts_sim.to_ss_get), atomic_load(&ts_sim.to_ss_post),
                  atomic_load(&ts_sim.to_other), atomic_load(&ts_sim.to_503), atomic_load(&ts_sim.to_sim), nsess,
                  nsum);
    if (ts_sim.fixture) {
        ts_buf_adds(&b, "\"fixture_cdn\":");
        ts_sim_json_str(&b, ts_sim.fixture_cdn);
        ts_buf_printf(&b,
                      ",\"fixture_time_delta_ms\":%lld,\"fixture\":{\"newest_ms\":%lld,\"caches\":%d,"
                      "\"deliveryservices\":%d,\"cachestats_times\":%d,\"dsstats_times\":%d,"
                      "\"cachestats_bytes\":%zu,\"dsstats_bytes\":%zu},",
                      (long long)ts_sim.fixture_delta_ms, (long long)ts_sim.fixture_newest_ms, ts_sim.nfx_hosts,
                      ts_sim.nfx_ds, ts_sim.fx_ntimes[0], ts_sim.fx_ntimes[1], ts_sim.fx_body[0]->len,
                      ts_sim.fx_body[1]->len);
    }
    ts_buf_printf(&b,
                  "\"generator\":{\"count\":%lld,\"last_us\":%lld,\"mean_us\":%lld,\"last_bytes\":%lld,"
                  "\"cache_hits\":%lld},\"monitors\":[",
                  gc, atomic_load(&ts_sim.gen_us_last), gc ? atomic_load(&ts_sim.gen_us_total) / gc : 0,
                  atomic_load(&ts_sim.gen_bytes_last), atomic_load(&ts_sim.cache_hits));
    for (int i = 0; i < ts_sim.nmon; i++) {
        sim_monitor *m = &ts_sim.mons[i];
        sim_fault f;
        ts_sim_fault_get(i, &f);
        ts_buf_printf(&b,
                      "%s{\"cdn\":\"%s\",\"index\":%d,\"port\":%d,\"status\":\"%s\",\"listening\":%s,"
                      "\"requests\":{\"CacheStats\":%lld,\"DsStats\":%lld,\"CrStates\":%lld,\"other\":%lld},"
                      "\"responses\":{\"200\":%lld,\"400\":%lld,\"404\":%lld,\"503\":%lld,\"dropped\":%lld},"
                      "\"gzip\":%lld,\"bytes\":%lld,\"faults\":",
                      i ? "," : "", ts_sim.cdns[m->cdn].name, m->index, m->port, m->offline ? "OFFLINE" : "ONLINE",
                      m->fd >= 0 ? "true" : "false", atomic_load(&m->n_cachestats), atomic_load(&m->n_dsstats),
                      atomic_load(&m->n_crstates), atomic_load(&m->n_other), atomic_load(&m->n_200),
                      atomic_load(&m->n_400), atomic_load(&m->n_404), atomic_load(&m->n_503),
                      atomic_load(&m->n_dropped), atomic_load(&m->n_gzip), atomic_load(&m->bytes));
        fault_json(&b, &f);
        ts_buf_addc(&b, '}');
    }
    ts_buf_adds(&b, "]}");
    return ts_sim_send_buf(c, 200, "application/json", &b);
}

static void reset_counters(void) {
    atomic_store(&ts_sim.to_login_ok, 0);
    atomic_store(&ts_sim.to_login_fail, 0);
    atomic_store(&ts_sim.to_unauth, 0);
    atomic_store(&ts_sim.to_servers, 0);
    atomic_store(&ts_sim.to_params, 0);
    atomic_store(&ts_sim.to_ss_get, 0);
    atomic_store(&ts_sim.to_ss_post, 0);
    atomic_store(&ts_sim.to_other, 0);
    atomic_store(&ts_sim.to_503, 0);
    atomic_store(&ts_sim.to_sim, 0);
    for (int i = 0; i < ts_sim.nmon; i++) {
        sim_monitor *m = &ts_sim.mons[i];
        atomic_llong *all[] = {&m->n_cachestats, &m->n_dsstats, &m->n_crstates, &m->n_other, &m->n_200, &m->n_400,
                               &m->n_404, &m->n_503, &m->n_dropped, &m->n_gzip, &m->bytes};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) atomic_store(all[k], 0);
    }
}

static const char *qv(struct MHD_Connection *c, const char *k) {
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

static enum MHD_Result sim_route(struct MHD_Connection *c, const char *url, const char *method) {
    atomic_fetch_add(&ts_sim.to_sim, 1);
    int post = !strcmp(method, "POST") || !strcmp(method, "PUT");
    char err[256] = "";
    if (!strcmp(url, "/sim/stats")) return sim_stats(c);
    if (!strcmp(url, "/sim/fault") && post) {
        const char *spec = qv(c, "spec");
        int rc;
        if (spec) {
            rc = ts_sim_fault_spec(spec, err, sizeof err);
        } else {
            const char *arg = qv(c, "arg");
            if (!arg) arg = qv(c, "ms");
            if (!arg) arg = qv(c, "seconds");
            if (!arg) arg = qv(c, "mb");
            rc = ts_sim_fault_apply(qv(c, "monitor"), qv(c, "kind"), arg, err, sizeof err);
        }
        if (rc < 0) {
            ts_buf b;
            ts_buf_init(&b);
            ts_buf_adds(&b, "{\"ok\":false,\"error\":");
            ts_sim_json_str(&b, err);
            ts_buf_addc(&b, '}');
            return ts_sim_send_buf(c, 400, "application/json", &b);
        }
        return ts_sim_send_text(c, 200, "application/json", "{\"ok\":true}");
    }
    if (!strcmp(url, "/sim/expire-sessions") && post) {
        sessions_clear();
        return ts_sim_send_text(c, 200, "application/json", "{\"ok\":true}");
    }
    if (!strcmp(url, "/sim/params") && post) {
        const char *mode = qv(c, "mode");
        pthread_mutex_lock(&ts_sim.to_lock);
        if (mode && !strcmp(mode, "ciab")) {
            ts_sim.params_override = 0;
            ts_sim.no_params = 0;
        } else if (mode && !strcmp(mode, "none")) {
            ts_sim.params_override = 0;
            ts_sim.no_params = 1;
        } else {
            set_list(&ts_sim.param_cache, &ts_sim.nparam_cache, qv(c, "cacheStats"));
            set_list(&ts_sim.param_ds, &ts_sim.nparam_ds, qv(c, "dsStats"));
            ts_sim.params_override = 1;
        }
        pthread_mutex_unlock(&ts_sim.to_lock);
        return ts_sim_send_text(c, 200, "application/json", "{\"ok\":true}");
    }
    if (!strcmp(url, "/sim/reset") && post) {
        const char *what = qv(c, "what");
        if (!what || !strcmp(what, "all") || !strcmp(what, "counters")) reset_counters();
        if (!what || !strcmp(what, "all") || !strcmp(what, "summaries")) {
            pthread_mutex_lock(&ts_sim.to_lock);
            ts_sim.nsummaries = 0;
            pthread_mutex_unlock(&ts_sim.to_lock);
        }
        return ts_sim_send_text(c, 200, "application/json", "{\"ok\":true}");
    }
    return ts_sim_send_text(c, 404, "application/json", "{\"ok\":false,\"error\":\"unknown /sim/ route\"}");
}

/* ---------- dispatcher ---------- */

static enum MHD_Result api_route(struct MHD_Connection *c, const char *path, const char *method, const char *body) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int post = !strcmp(method, "POST");
    if (!strcmp(path, "ping") && get) return ts_sim_send_text(c, 200, "application/json", "{\"ping\":\"pong\"}");
    if (!strcmp(path, "user/login")) {
        if (!post) return alert(c, 405, "error", "method not allowed");
        return do_login(c, body);
    }
    if (!session_ok(c)) {
        atomic_fetch_add(&ts_sim.to_unauth, 1);
        return alert(c, 401, "error", "Unauthorized, please log in.");
    }
    if (!strcmp(path, "user/logout") && post) {
        const char *tok = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "mojolicious");
        pthread_mutex_lock(&ts_sim.to_lock);
        for (int i = 0; tok && i < ts_sim.nsessions; i++)
            if (!strcmp(ts_sim.sessions[i], tok)) ts_sim.session_exp[i] = 0;
        pthread_mutex_unlock(&ts_sim.to_lock);
        return alert(c, 200, "success", "You are logged out.");
    }
    if (!strcmp(path, "servers") && get) {
        atomic_fetch_add(&ts_sim.to_servers, 1);
        srv_filter f = {qv(c, "type"), qv(c, "status"), qv(c, "hostName"), 0};
        const char *cdn = qv(c, "cdn");
        if (cdn) f.cdn_id = atoi(cdn) > 0 ? atoi(cdn) : -1;
        if (!f.type && !f.status && !f.host && !cdn) {
            int gz = ts_sim_wants_gzip(c) && ts_sim.servers_gz;
            sim_payload *p = gz ? ts_sim.servers_gz : ts_sim.servers_raw;
            return ts_sim_send_payload(c, 200, "application/json", p, p->len, gz);
        }
        if (f.cdn_id < 0) return alert(c, 400, "error", "cdn must be an integer");
        ts_buf b;
        ts_buf_init(&b);
        gen_servers(&b, &f);
        return ts_sim_send_buf(c, 200, "application/json", &b);
    }
    if (!strncmp(path, "profiles/name/", 14) && get) {
        const char *name = path + 14;
        const char *slash = strchr(name, '/');
        if (slash && !strcmp(slash, "/parameters")) {
            atomic_fetch_add(&ts_sim.to_params, 1);
            ts_buf b;
            ts_buf_init(&b);
            if (!strncmp(name, "TRAFFIC_STATS/", 14)) gen_params(&b);
            else ts_buf_adds(&b, "{\"response\":[]}");
            return ts_sim_send_buf(c, 200, "application/json", &b);
        }
    }
    if (!strcmp(path, "stats_summary")) {
        if (get) {
            atomic_fetch_add(&ts_sim.to_ss_get, 1);
            return ss_get(c);
        }
        if (post) {
            atomic_fetch_add(&ts_sim.to_ss_post, 1);
            return ss_post(c, body);
        }
    }
    if (!strcmp(path, "cdns") && get) {
        ts_buf b;
        ts_buf_init(&b);
        ts_buf_adds(&b, "{\"response\":[");
        for (int k = 0; k < ts_sim.ncdn; k++)
            ts_buf_printf(&b,
                          "%s{\"dnssecEnabled\":false,\"domainName\":\"%s.sim.test\",\"id\":%d,"
                          "\"lastUpdated\":\"2025-01-01T00:00:00Z\",\"name\":\"%s\",\"ttlOverride\":null}",
                          k ? "," : "", ts_sim.cdns[k].name, ts_sim.cdns[k].id, ts_sim.cdns[k].name);
        ts_buf_adds(&b, "]}");
        return ts_sim_send_buf(c, 200, "application/json", &b);
    }
    atomic_fetch_add(&ts_sim.to_other, 1);
    return alert(c, 404, "error", "Resource not found.");
}

enum MHD_Result ts_sim_to_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)cls;
    (void)version;
    to_conn *tc = *con_cls;
    if (!tc) {
        tc = calloc(1, sizeof *tc);
        if (!tc) return MHD_NO;
        ts_buf_init(&tc->body);
        *con_cls = tc;
        return MHD_YES;
    }
    if (*upload_size) {
        if (tc->body.len + *upload_size > MAX_BODY) tc->too_big = 1;
        else ts_buf_add(&tc->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (atomic_load(&ts_sim.stopping)) return MHD_NO;
    if (!tc->body.data) ts_buf_reserve(&tc->body, 1);
    ts_debug("TO %s %s", method, url);
    if (!strncmp(url, "/sim/", 5)) return sim_route(c, url, method);
    if (tc->too_big) return alert(c, 413, "error", "request body too large");
    int slow = __atomic_load_n(&ts_sim.to_slow_ms, __ATOMIC_RELAXED);
    if (slow > 0 && ts_sim_sleep_ms(slow, NULL) < 0) return MHD_NO;
    if (__atomic_load_n(&ts_sim.to_down, __ATOMIC_RELAXED)) {
        atomic_fetch_add(&ts_sim.to_503, 1);
        return alert(c, 503, "error", "Service Unavailable");
    }
    /* /api/5.<minor>/<path> */
    const char *p = url;
    if (!strncmp(p, "/api/5.", 7)) {
        p += 7;
        while (isdigit((unsigned char)*p)) p++;
        if (*p == '/') {
            char path[512];
            snprintf(path, sizeof path, "%s", p + 1);
            size_t n = strlen(path);
            if (n && path[n - 1] == '/') path[n - 1] = '\0';
            return api_route(c, path, method, tc->body.data);
        }
    }
    atomic_fetch_add(&ts_sim.to_other, 1);
    return alert(c, 404, "error", "Resource not found.");
}

void ts_sim_to_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    to_conn *tc = *con_cls;
    if (tc) {
        ts_buf_free(&tc->body);
        free(tc);
        *con_cls = NULL;
    }
}
