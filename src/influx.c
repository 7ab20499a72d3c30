/* The InfluxDB 1.x protocol (C core; no Lua): the server list with its one
 * failover memory, request set-up, answer classification as ts_influx.h
 * documents, and the blocking POST behind queries and tstats._influx_post. */
#include "ts_influx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ts_influx {
    char **urls;
    int nurls, cur;
    char *user, *password, *ca_file;
    char *ca_path, *client_cert, *client_key;
    int insecure;
    long timeout_ms, connect_timeout_ms;
};

static char *xstrdup(const char *s) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

static void clear(ts_influx *x) {
    for (int i = 0; i < x->nurls; i++) free(x->urls[i]);
    free(x->urls);
    free(x->user);
    free(x->password);
    free(x->ca_file);
    free(x->ca_path);
    free(x->client_cert);
    free(x->client_key);
    x->urls = NULL;
    x->nurls = 0;
    x->user = x->password = x->ca_file = NULL;
    x->ca_path = x->client_cert = x->client_key = NULL;
}

static void set(ts_influx *x, const ts_influx_opts *o) {
    clear(x);
    int n = 0;
    if (o->urls) while (o->urls[n]) n++;
    x->urls = calloc((size_t)n + 1, sizeof *x->urls);
    if (!x->urls) abort();
    for (int i = 0; i < n; i++) {
        /* keep "http://h:8086/" and "http://h:8086" equivalent */
        char *u = xstrdup(o->urls[i]);
        size_t l = strlen(u);
        while (l > 0 && u[l - 1] == '/') u[--l] = '\0';
        x->urls[i] = u;
    }
    x->nurls = n;
    x->user = o->user && *o->user ? xstrdup(o->user) : NULL;
    x->password = xstrdup(o->password ? o->password : "");
    x->ca_file = xstrdup(o->ca_file ? o->ca_file : o->tls.ca_file);
    x->ca_path = xstrdup(o->tls.ca_path);
    x->client_cert = xstrdup(o->tls.client_cert);
    x->client_key = xstrdup(o->tls.client_key);
    x->insecure = o->insecure || o->tls.insecure;
    x->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    x->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
}

ts_influx *ts_influx_new(const ts_influx_opts *o) {
    ts_influx *x = calloc(1, sizeof *x);
    if (!x) abort();
    set(x, o);
    return x;
}

void ts_influx_update(ts_influx *x, const ts_influx_opts *o) {
    char *prev = x->nurls > 0 ? xstrdup(x->urls[x->cur]) : NULL;
    set(x, o);
    x->cur = 0;
    for (int i = 0; prev && i < x->nurls; i++)
        if (strcmp(x->urls[i], prev) == 0) x->cur = i;
    free(prev);
}

void ts_influx_free(ts_influx *x) {
    if (!x) return;
    clear(x);
    free(x);
}

int ts_influx_nurls(const ts_influx *x) { return x->nurls; }
const char *ts_influx_url(const ts_influx *x, int i) { return i >= 0 && i < x->nurls ? x->urls[i] : NULL; }
int ts_influx_current(const ts_influx *x) { return x->nurls > 0 ? x->cur : -1; }
void ts_influx_set_current(ts_influx *x, int i) { if (i >= 0 && i < x->nurls) x->cur = i; }
void ts_influx_failed(ts_influx *x, int i) {
    /* fail over: the next URL of the full list, every host stays in rotation */
    if (x->nurls > 0 && x->cur == i) x->cur = (x->cur + 1) % x->nurls;
}

void ts_influx_req(const ts_influx *x, ts_http_req *rq, const char *url, const char *body, size_t len,
                   const char *ctype) {
    memset(rq, 0, sizeof *rq);
    rq->url = url;
    rq->method = "POST";
    rq->body = body;
    rq->body_len = len;
    rq->content_type = ctype;
    rq->opts.connect_timeout_ms = x->connect_timeout_ms;
    rq->opts.timeout_ms = x->timeout_ms;
    rq->opts.insecure = x->insecure;
    rq->opts.ca_file = x->ca_file;
    rq->opts.tls = (ts_tls){x->insecure, x->ca_file, x->ca_path, x->client_cert, x->client_key};
    rq->opts.user = x->user;
    rq->opts.password = x->password;
    rq->opts.accept_gzip = 1;
}

char *ts_influx_write_path(const ts_dest *d) {
    ts_buf p;
    ts_buf_init(&p);
    ts_buf_adds(&p, "/write?db=");
    ts_http_urlencode(&p, d->db, strlen(d->db));
    if (d->rp[0]) {
        ts_buf_adds(&p, "&rp=");
        ts_http_urlencode(&p, d->rp, strlen(d->rp));
    }
    ts_buf_printf(&p, "&precision=%s", ts_precision_name(d->precision));
    return p.data;
}

void ts_influx_safe_url(char *out, size_t n, const char *url) {
    if (!url) { snprintf(out, n, "(no URL)"); return; }
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    if (at) host = at + 1;
    int scheme = p ? (int)(p - url) : 0;
    snprintf(out, n, "%.*s%s%.*s", scheme, url, p ? "://" : "", (int)(end - host), host);
}

void ts_influx_server_message(const ts_buf *body, char *out, size_t n) {
    if (n == 0) return;
    out[0] = '\0';
    if (!body->data) return;
    const char *s = strstr(body->data, "\"error\"");
    size_t o = 0;
    if (s) {
        s += 7;
        while (*s == ' ' || *s == ':') s++;
        if (*s == '"') {
            s++;
            while (*s && *s != '"' && o + 1 < n) {
                char c = *s++;
                if (c == '\\' && *s) {
                    char e = *s++;
                    switch (e) {
                    case 'n': c = '\n'; break;
                    case 't': c = '\t'; break;
                    case 'r': c = '\r'; break;
                    case 'u':
                        /* non-ASCII escapes only matter for display */
                        for (int k = 0; k < 4 && *s; k++) s++;
                        c = '?';
                        break;
                    default: c = e; break;
                    }
                }
                out[o++] = c;
            }
            out[o] = '\0';
            return;
        }
    }
    snprintf(out, n, "%.*s", (int)(body->len < n ? body->len : n - 1), body->data);
}

/* Rule: each "unable to parse '" that starts the message or a line of it is
 * one unparseable line; a "dropped=N" adds N points dropped after parsing
 * (type conflicts, beyond retention). */
size_t ts_influx_rejected_count(const char *msg, size_t lines) {
    size_t n = 0;
    int found = 0;
    static const char up[] = "unable to parse '";
    for (const char *p = msg; (p = strstr(p, up)); p += sizeof up - 1) {
        int at_start = p == msg || p[-1] == '\n' || (p - msg >= 2 && p[-2] == ':' && p[-1] == ' ');
        if (at_start) { n++; found = 1; }
    }
    const char *dp = strstr(msg, "dropped=");
    if (dp) {
        char *end;
        unsigned long long v = strtoull(dp + 8, &end, 10);
        if (end != dp + 8) { n += (size_t)v; found = 1; }
    }
    if (!found || n > lines) n = lines;
    return n;
}

int ts_influx_classify(const ts_http_result *r, const char *msg) {
    if (r->curl_code != 0) return TS_INFLUX_HOST;
    long s = r->status;
    if (s >= 200 && s < 300) return TS_INFLUX_OK;
    if (s == 400) return TS_INFLUX_REJECT;
    if (s == 401 || s == 403 || s == 404) return TS_INFLUX_DEST;
    if (s == 500 && strstr(msg, "retention policy not found")) return TS_INFLUX_DEST;
    if (s >= 500) return TS_INFLUX_HOST;
    if (s > 400) return TS_INFLUX_DROP;   /* 405, 413, ...: resending will not help */
    return TS_INFLUX_HOST;                /* 1xx/3xx: not an InfluxDB answer */
}

int ts_influx_answered(int transport_ok, const ts_http_result *r) {
    /* a 5xx carrying InfluxDB's own JSON error (500 retention policy not
     * found) is an answer; other 5xx and transport errors mean "next URL" */
    return transport_ok && (r->status < 500 || (r->body.len && r->body.data[0] == '{'));
}

void ts_influx_note_failure(char *err, size_t errlen, size_t *used, const char *server_url, int transport_ok,
                            const ts_http_result *r) {
    if (*used >= errlen) return;
    char host[256];
    ts_influx_safe_url(host, sizeof host, server_url);
    const char *sep = *used ? "; " : "";
    int m = !r             ? snprintf(err + *used, errlen - *used, "%s%s: request could not be started", sep, host)
            : transport_ok ? snprintf(err + *used, errlen - *used, "%s%s: HTTP %ld", sep, host, r->status)
                           : snprintf(err + *used, errlen - *used, "%s%s: %s", sep, host, r->errmsg);
    if (m > 0) *used += (size_t)m;
}

int ts_influx_post(ts_influx *x, const char *path_query, const char *body, size_t len, const char *ctype,
                   size_t max_body, ts_http_result *out, char *err, size_t errlen) {
    if (errlen) err[0] = '\0';
    if (x->nurls <= 0) { snprintf(err, errlen, "no InfluxDB URLs configured"); return -1; }
    size_t used = 0;
    int start = x->cur;
    for (int k = 0; k < x->nurls; k++) {
        int idx = (start + k) % x->nurls;
        ts_buf url;
        ts_buf_init(&url);
        ts_buf_printf(&url, "%s%s", x->urls[idx], path_query);
        ts_http_req rq;
        ts_influx_req(x, &rq, url.data, body, len, ctype);
        rq.max_body = max_body;
        ts_http_result r;
        ts_http_result_init(&r);
        int prc = ts_http_perform(&rq, &r);
        ts_buf_free(&url);
        if (ts_influx_answered(prc == 0, &r)) {
            x->cur = idx;
            ts_http_result_free(out);
            *out = r;
            return 0;
        }
        ts_influx_note_failure(err, errlen, &used, x->urls[idx], prc == 0, &r);
        ts_http_result_free(&r);
    }
    return -1;
}

int ts_influx_query(ts_influx *x, const char *db, const char *q, const char *epoch, ts_buf *out, char *err,
                    size_t errlen) {
    ts_buf body;
    ts_buf_init(&body);
    ts_buf_adds(&body, "q=");
    ts_http_urlencode(&body, q, strlen(q));
    if (db && *db) { ts_buf_adds(&body, "&db="); ts_http_urlencode(&body, db, strlen(db)); }
    if (epoch && *epoch) { ts_buf_adds(&body, "&epoch="); ts_http_urlencode(&body, epoch, strlen(epoch)); }
    ts_http_result r;
    ts_http_result_init(&r);
    /* InfluxDB 1.x takes reads and writes as POST /query */
    int rc = ts_influx_post(x, "/query", body.data, body.len, "application/x-www-form-urlencoded",
                            (size_t)256 << 20, &r, err, errlen);
    ts_buf_free(&body);
    if (rc != 0) {
        ts_http_result_free(&r);
        return -1;
    }
    if (r.status != 200) {
        char msg[512], host[256];
        ts_influx_server_message(&r.body, msg, sizeof msg);
        ts_influx_safe_url(host, sizeof host, x->urls[x->cur]);
        snprintf(err, errlen, "%s: HTTP %ld: %.300s", host, r.status, msg);
        rc = -1;
    } else {
        ts_buf_add(out, r.body.data ? r.body.data : "", r.body.len);
    }
    ts_http_result_free(&r);
    return rc;
}
