/* HTTP listener (C core): libmicrohttpd in its own polling thread serving the metrics
 * store (ts_httpd.h). Nothing here touches the loop, Lua or the writer: every answer is
 * rendered from a copy of the store taken under its mutex. Credentials are compared in
 * constant time; answers never echo them. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "ts_httpd.h"
#include "ts_log.h"
#include "ts_metrics_json.h"

/* The status page (an embedded asset); "null" after the marker is replaced by the
 * status JSON so the page renders without a round trip, then it refreshes by itself. */
extern const char ts_status_page_html[];
#define STATUS_MARKER "/*TSTATS_STATUS*/null"

struct ts_httpd {
    struct MHD_Daemon *d;
    int fd, port;
    ts_metrics *m;
    char *basic;     /* "Basic <base64(user:password)>" or NULL */
    char *bearer;    /* "Bearer <token>" or NULL */
};

int ts_httpd_parse_listen(const char *s, char *host, size_t hostlen, int *port, char *err, size_t errlen) {
    const char *p;
    char h[256] = "";
    if (!s || !*s) { snprintf(err, errlen, "empty address"); return -1; }
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':') { snprintf(err, errlen, "'%s': want [IPv6]:port", s); return -1; }
        snprintf(h, sizeof h, "%.*s", (int)(e - s - 1), s + 1);
        p = e + 2;
    } else if ((p = strrchr(s, ':')) != NULL) {
        if (strchr(s, ':') != p) { snprintf(err, errlen, "'%s': write an IPv6 address as [addr]:port", s); return -1; }
        snprintf(h, sizeof h, "%.*s", (int)(p - s), s);
        p++;
    } else {
        p = s;
    }
    char *end;
    long v = strtol(p, &end, 10);
    if (!*p || *end || v < 0 || v > 65535) { snprintf(err, errlen, "'%s': bad port '%s'", s, p); return -1; }
    /* loopback unless an address is given: metrics are for this host's scraper first */
    snprintf(host, hostlen, "%s", h[0] ? h : "127.0.0.1");
    *port = (int)v;
    return 0;
}

static char *b64(const char *in) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out) abort();
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int same(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *ctype, char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(body); return MHD_NO; }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"tstats\"");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status, const char *text) {
    char *s = strdup(text);
    if (!s) abort();
    return answer(c, status, "text/plain; charset=utf-8", s, strlen(s));
}

static enum MHD_Result answer_buf(struct MHD_Connection *c, unsigned status, const char *ctype, ts_buf *b) {
    if (!b->data) ts_buf_reserve(b, 1);
    return answer(c, status, ctype, b->data, b->len);   /* takes b's memory */
}

static int authorized(ts_httpd *h, struct MHD_Connection *c) {
    if (!h->basic && !h->bearer) return 1;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a) return 0;
    return (h->basic && same(a, h->basic)) || (h->bearer && same(a, h->bearer));
}

static void status_page(ts_httpd *h, ts_buf *out) {
    const char *page = ts_status_page_html, *mark = strstr(page, STATUS_MARKER);
    if (!mark) { ts_buf_adds(out, page); return; }
    ts_buf_add(out, page, (size_t)(mark - page));
    ts_metrics_render_status(h->m, out);   /* its strings escape '<': safe in <script> */
    ts_buf_adds(out, mark + strlen(STATUS_MARKER));
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version; (void)upload; (void)con_cls;
    ts_httpd *h = cls;
    if (*upload_size) { *upload_size = 0; return MHD_YES; }   /* ignore any body */
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    if (!authorized(h, c)) return answer_text(c, MHD_HTTP_UNAUTHORIZED, "unauthorized\n");
    ts_buf b;
    ts_buf_init(&b);
    if (strcmp(url, "/metrics") == 0) {
        ts_metrics_render_prometheus(h->m, &b);
        return answer_buf(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    if (strcmp(url, "/health") == 0 || strcmp(url, "/healthz") == 0) {
        int st = ts_metrics_render_health(h->m, &b);
        return answer_buf(c, (unsigned)st, "application/json", &b);
    }
    if (strcmp(url, "/ready") == 0) {
        int st = ts_metrics_render_ready(h->m, &b);
        return answer_buf(c, (unsigned)st, "application/json", &b);
    }
    if (strcmp(url, "/status.json") == 0) {
        ts_metrics_render_status(h->m, &b);
        return answer_buf(c, MHD_HTTP_OK, "application/json", &b);
    }
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
        status_page(h, &b);
        return answer_buf(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b);
    }
    ts_buf_free(&b);
    return answer_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics, /health, /ready or /\n");
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    ts_warn("http: %s", msg);
}

static int bind_listen(const char *host, int port, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0) { snprintf(err, errlen, "%s: %s", host, gai_strerror(rc)); return -1; }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) break;
        snprintf(err, errlen, "%s:%d: %s", host, port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

ts_httpd *ts_httpd_start(const ts_httpd_opts *o, ts_metrics *m, int *failed) {
    if (failed) *failed = 0;
    if (!o || !o->listen || !o->listen[0]) return NULL;
    char host[256], err[300] = "";
    int port;
    if (ts_httpd_parse_listen(o->listen, host, sizeof host, &port, err, sizeof err) != 0) {
        ts_error("http.listen %s; the HTTP listener is off", err);
        if (failed) *failed = 1;
        return NULL;
    }
    int fd = bind_listen(host, port, err, sizeof err);
    if (fd < 0) {
        ts_error("http.listen: cannot listen on %s; the HTTP listener is off", err);
        if (failed) *failed = 1;
        return NULL;
    }
    ts_httpd *h = calloc(1, sizeof *h);
    if (!h) abort();
    h->fd = fd;
    h->m = m;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    if (o->user && o->user[0] && o->password) {
        char up[600];
        snprintf(up, sizeof up, "%s:%s", o->user, o->password);
        char *enc = b64(up);
        size_t n = strlen(enc) + 7;
        h->basic = malloc(n);
        if (!h->basic) abort();
        snprintf(h->basic, n, "Basic %s", enc);
        free(enc);
    }
    if (o->token && o->token[0]) {
        size_t n = strlen(o->token) + 8;
        h->bearer = malloc(n);
        if (!h->bearer) abort();
        snprintf(h->bearer, n, "Bearer %s", o->token);
    }
    /* One polling thread: answers are small and rendered from a copy; 16 connections and
     * a 10 s idle timeout keep a misbehaving client from holding resources. The thread
     * needs an inter-thread channel (ITC) for MHD_quiesce_daemon at stop: without it MHD
     * logs a warning at every shutdown and the quiesce does nothing. */
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                            handler, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)16, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_END);
    if (!h->d) {
        ts_error("http.listen: libmicrohttpd did not start on %s:%d; the HTTP listener is off", host, h->port);
        close(fd);
        free(h->basic);
        free(h->bearer);
        free(h);
        if (failed) *failed = 1;
        return NULL;
    }
    ts_info("http: listening on %s:%d (/metrics, /health, /ready, /)%s", host, h->port,
            h->basic || h->bearer ? ", credentials required" : "");
    return h;
}

int ts_httpd_port(const ts_httpd *h) { return h ? h->port : 0; }

void ts_httpd_stop(ts_httpd *h) {
    if (!h) return;
    /* Quiesced first, the listening socket is ours to close (MHD would close it otherwise). */
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    MHD_stop_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    free(h->basic);
    free(h->bearer);
    free(h);
}
