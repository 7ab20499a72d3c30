/* Event loop and HTTP client (C core, libcurl; no Lua here).
 * One curl multi handle driven by curl_multi_poll, one-shot timers on the
 * monotonic clock, watched fds passed to curl as extra poll fds. Async and
 * blocking requests share one connection cache and DNS cache (keep-alive
 * reuse); requests that want cookies use a second share with the jar. */
#include "ts_http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ts_log.h"
#include "ts_version.h"

/* file:// only for the offline mapping loop (`tstats map`, `tstats test`), never the daemon. */
static int allow_file;
void ts_http_allow_file(int on) { allow_file = on; }

#define MAX_BODY_DEFAULT ((size_t)64 << 20)
#define FREE_EASY_MAX 8

/* ---- process-wide state: shares and a free list of easy handles ---- */

/* Two shares because a share holding cookies turns the cookie engine on for
 * every handle attached to it: cookie users (Traffic Ops) get their own
 * pool, everything else (InfluxDB, Traffic Monitor) shares the other. */
static CURLSH *g_share_plain, *g_share_cookie;
static CURL *g_free_easy[FREE_EASY_MAX];
static int g_nfree_easy;
static int g_inited;

/* Single-threaded: the lock callbacks only exist so that curl never assumes
 * it may share across threads without us knowing. */
static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *ud) {
    (void)h; (void)d; (void)a; (void)ud;
}
static void share_unlock(CURL *h, curl_lock_data d, void *ud) { (void)h; (void)d; (void)ud; }

static CURLSH *make_share(int cookies) {
    CURLSH *s = curl_share_init();
    if (!s) return NULL;
    curl_share_setopt(s, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(s, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    if (cookies) curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE);
    return s;
}

int ts_http_global_init(void) {
    if (g_inited) return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
    g_share_plain = make_share(0);
    g_share_cookie = make_share(1);
    if (!g_share_plain || !g_share_cookie) return -1;
    g_inited = 1;
    return 0;
}

void ts_http_global_cleanup(void) {
    if (!g_inited) return;
    /* Easy handles first: a share cannot be cleaned up while handles use it. */
    while (g_nfree_easy > 0) curl_easy_cleanup(g_free_easy[--g_nfree_easy]);
    curl_share_cleanup(g_share_plain);
    curl_share_cleanup(g_share_cookie);
    g_share_plain = g_share_cookie = NULL;
    curl_global_cleanup();
    g_inited = 0;
}

static CURL *easy_get(void) {
    if (!g_inited && ts_http_global_init() != 0) return NULL;
    if (g_nfree_easy > 0) return g_free_easy[--g_nfree_easy];
    return curl_easy_init();
}

static void easy_put(CURL *e, int used_cookies) {
    if (!e) return;
    /* reset drops options (and detaches the share) but keeps the handle's
     * allocations; the connections themselves live in the share. libcurl
     * 7.88's reset does not free the cookie-file list that CURLOPT_COOKIEFILE
     * added, so a handle that used cookies is cleaned up, not pooled. */
    if (!used_cookies) curl_easy_reset(e);
    if (!used_cookies && g_inited && g_nfree_easy < FREE_EASY_MAX) g_free_easy[g_nfree_easy++] = e;
    else curl_easy_cleanup(e);
}

void ts_http_result_init(ts_http_result *r) {
    memset(r, 0, sizeof *r);
    ts_buf_init(&r->body);
}

void ts_http_result_free(ts_http_result *r) { ts_buf_free(&r->body); }

/* RFC 3986: unreserved characters stay, everything else is %XX. */
void ts_http_urlencode(ts_buf *out, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    ts_buf_reserve(out, n * 3 + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out->data[out->len++] = (char)c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = hex[c >> 4];
            out->data[out->len++] = hex[c & 15];
        }
    }
    out->data[out->len] = '\0';
}

int ts_tls_apply(void *easy, const ts_tls *t) {
    CURL *e = easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, t->insecure ? 0L : 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, t->insecure ? 0L : 2L) != CURLE_OK;
    if (t->ca_file && *t->ca_file) bad |= curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file) != CURLE_OK;
    if (t->ca_path && *t->ca_path) bad |= curl_easy_setopt(e, CURLOPT_CAPATH, t->ca_path) != CURLE_OK;
    if (t->client_cert && *t->client_cert) {
        bad |= curl_easy_setopt(e, CURLOPT_SSLCERT, t->client_cert) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK;
        const char *key = t->client_key && *t->client_key ? t->client_key : t->client_cert;
        bad |= curl_easy_setopt(e, CURLOPT_SSLKEY, key) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK;
    }
    return bad ? -1 : 0;
}

/* ---- one request (async or blocking) ---- */

typedef struct req {
    struct ts_loop *loop;        /* NULL for a blocking request */
    CURL *easy;
    ts_http_req r;               /* copy of the caller's request */
    struct curl_slist *hdrs;
    ts_buf gz;                   /* compressed body when gzip_body */
    ts_http_result res;
    size_t max_body;
    int too_big;                 /* collected body hit max_body */
    int data_abort;              /* on_data asked to stop */
    char errbuf[CURL_ERROR_SIZE];
    struct req *prev, *next;     /* loop's in-flight list */
} req;

static size_t write_cb(char *p, size_t sz, size_t nm, void *ud) {
    req *q = ud;
    size_t n = sz * nm;
    q->res.bytes_in += n;
    if (q->r.on_data) {
        if (q->r.on_data(q->r.ud, p, n) != 0) { q->data_abort = 1; return 0; }
        return n;
    }
    if (q->res.body.len + n > q->max_body) { q->too_big = 1; return 0; }
    ts_buf_add(&q->res.body, p, n);
    return n;
}

/* gzip (window bits 15 + 16 = gzip wrapper). Speed over ratio: line
 * protocol compresses ~8x even at level 1 and the writer is on the hot path. */
static int gzip_into(ts_buf *out, const char *p, size_t n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    size_t bound = deflateBound(&zs, (uLong)n) + 32;
    ts_buf_reset(out);
    ts_buf_reserve(out, bound);
    zs.next_in = (Bytef *)(uintptr_t)p;
    zs.avail_in = (uInt)n;
    zs.next_out = (Bytef *)out->data;
    zs.avail_out = (uInt)bound;
    int rc = deflate(&zs, Z_FINISH);
    out->len = zs.total_out;
    deflateEnd(&zs);
    return rc == Z_STREAM_END ? 0 : -1;
}

static int setup(req *q) {
    CURL *e = q->easy;
    const ts_http_req *r = &q->r;
    const ts_http_opts *o = &r->opts;
    q->max_body = r->max_body ? r->max_body : MAX_BODY_DEFAULT;
    q->errbuf[0] = '\0';

    curl_easy_setopt(e, CURLOPT_SHARE, o->use_cookies ? g_share_cookie : g_share_plain);
    if (o->use_cookies) curl_easy_setopt(e, CURLOPT_COOKIEFILE, "");
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms > 0 ? o->timeout_ms : 30000L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_USERAGENT, o->user_agent ? o->user_agent : "tstats/" TS_VERSION);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, allow_file ? "http,https,file" : "http,https");
    ts_tls tls = o->tls;
    if (o->insecure) tls.insecure = 1;
    if (!tls.ca_file) tls.ca_file = o->ca_file;
    if (ts_tls_apply(e, &tls) != 0) {
        snprintf(q->res.errmsg, sizeof q->res.errmsg, "TLS settings refused by libcurl");
        return -1;
    }
    if (o->user) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, o->user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, o->password ? o->password : "");
    }
    if (o->accept_gzip) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");

    /* Headers: curl_slist_append copies, so the caller's strings may go. */
    struct curl_slist *h = NULL;
    if (r->headers)
        for (const char *const *p = r->headers; *p; p++) h = curl_slist_append(h, *p);
    if (r->content_type) {
        ts_buf ct;
        ts_buf_init(&ct);
        ts_buf_printf(&ct, "Content-Type: %s", r->content_type);
        h = curl_slist_append(h, ct.data);
        ts_buf_free(&ct);
    }
    const char *method = r->method ? r->method : (r->body ? "POST" : "GET");
    int has_body = r->body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    if (has_body) {
        const char *body = r->body ? r->body : "";
        size_t len = r->body ? r->body_len : 0;
        if (o->gzip_body && len > 0) {
            if (gzip_into(&q->gz, body, len) != 0) {
                curl_slist_free_all(h);
                snprintf(q->res.errmsg, sizeof q->res.errmsg, "gzip of request body failed");
                return -1;
            }
            body = q->gz.data;
            len = q->gz.len;
            h = curl_slist_append(h, "Content-Encoding: gzip");
        }
        /* No "Expect: 100-continue" round trip before large bodies. */
        h = curl_slist_append(h, "Expect:");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    q->hdrs = h;
    if (h) curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    return 0;
}

/* Fill q->res from the finished transfer. */
static void finish(req *q, CURLcode cc) {
    ts_http_result *r = &q->res;
    long st = 0;
    curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &st);
    r->status = st;
    double t = 0;
    curl_easy_getinfo(q->easy, CURLINFO_TOTAL_TIME, &t);
    r->total_s = t;
    curl_off_t up = 0;
    curl_easy_getinfo(q->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    r->bytes_out = (uint64_t)(up > 0 ? up : 0);
    r->curl_code = (int)cc;
    if (cc == CURLE_OK) {
        r->errmsg[0] = '\0';
    } else if (q->too_big) {
        snprintf(r->errmsg, sizeof r->errmsg, "response body larger than %zu bytes", q->max_body);
    } else if (q->data_abort) {
        snprintf(r->errmsg, sizeof r->errmsg, "transfer aborted by the receiver");
    } else if (!r->errmsg[0]) {
        snprintf(r->errmsg, sizeof r->errmsg, "%s", q->errbuf[0] ? q->errbuf : curl_easy_strerror(cc));
        /* curl's error buffer ends with a newline sometimes */
        size_t n = strlen(r->errmsg);
        while (n > 0 && (r->errmsg[n - 1] == '\n' || r->errmsg[n - 1] == '\r')) r->errmsg[--n] = '\0';
    }
}

static void req_free(req *q) {
    curl_slist_free_all(q->hdrs);
    ts_buf_free(&q->gz);
    ts_http_result_free(&q->res);
    easy_put(q->easy, q->r.opts.use_cookies);
    free(q);
}

int ts_http_perform(const ts_http_req *rq, ts_http_result *out) {
    req *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->r = *rq;
    ts_http_result_init(&q->res);
    q->easy = easy_get();
    if (!q->easy) {
        ts_buf_free(&out->body);
        ts_http_result_init(out);
        out->curl_code = CURLE_FAILED_INIT;
        snprintf(out->errmsg, sizeof out->errmsg, "curl init failed");
        free(q);
        return -1;
    }
    CURLcode cc;
    if (setup(q) != 0) cc = CURLE_ABORTED_BY_CALLBACK;
    else cc = curl_easy_perform(q->easy);
    finish(q, cc);
    /* hand the collected body to the caller */
    ts_buf_free(&out->body);
    *out = q->res;
    ts_buf_init(&q->res.body);
    req_free(q);
    return cc == CURLE_OK ? 0 : -1;
}

/* ---- the loop ---- */

typedef struct timer {
    int64_t due;
    int id;
    ts_loop_fn fn;
    void *ud;
} timer;

typedef struct watch {
    int fd;
    int out;                     /* 1: wait until writable, 0: readable */
    ts_loop_fn fn;
    void *ud;
} watch;

struct ts_loop {
    CURLM *multi;
    /* Timers kept sorted by (due, id): few of them, and the loop needs the
     * earliest one every turn. */
    timer *timers;
    int ntimers, ctimers;
    int next_id;
    watch *watches;
    int nwatches, cwatches;
    req *inflight;               /* doubly linked */
    int running;
    int closing;
};

ts_loop *ts_loop_new(void) {
    if (!g_inited && ts_http_global_init() != 0) return NULL;
    ts_loop *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->multi = curl_multi_init();
    if (!l->multi) { free(l); return NULL; }
    return l;
}

int ts_loop_running(const ts_loop *l) { return l->running; }

static void complete(ts_loop *l, req *q, CURLcode cc) {
    curl_multi_remove_handle(l->multi, q->easy);
    if (q->prev) q->prev->next = q->next; else l->inflight = q->next;
    if (q->next) q->next->prev = q->prev;
    l->running--;
    finish(q, cc);
    if (q->r.on_done) q->r.on_done(q->r.ud, &q->res);
    req_free(q);
}

void ts_loop_free(ts_loop *l) {
    if (!l) return;
    /* closing: callbacks run below must not start new requests on us */
    l->closing = 1;
    while (l->inflight) complete(l, l->inflight, CURLE_ABORTED_BY_CALLBACK);
    curl_multi_cleanup(l->multi);
    free(l->timers);
    free(l->watches);
    free(l);
}

int ts_loop_timer(ts_loop *l, int64_t due, ts_loop_fn fn, void *ud) {
    if (l->ntimers == l->ctimers) {
        l->ctimers = l->ctimers ? l->ctimers * 2 : 16;
        l->timers = realloc(l->timers, (size_t)l->ctimers * sizeof *l->timers);
        if (!l->timers) abort();
    }
    if (++l->next_id <= 0) l->next_id = 1;
    int id = l->next_id;
    /* insert after every timer with due <= this one: equal deadlines fire
     * in the order they were set */
    int i = l->ntimers;
    while (i > 0 && l->timers[i - 1].due > due) i--;
    memmove(&l->timers[i + 1], &l->timers[i], (size_t)(l->ntimers - i) * sizeof *l->timers);
    l->timers[i] = (timer){due, id, fn, ud};
    l->ntimers++;
    return id;
}

void ts_loop_timer_cancel(ts_loop *l, int id) {
    for (int i = 0; i < l->ntimers; i++) {
        if (l->timers[i].id == id) {
            memmove(&l->timers[i], &l->timers[i + 1], (size_t)(l->ntimers - i - 1) * sizeof *l->timers);
            l->ntimers--;
            return;
        }
    }
}

void ts_loop_watch_fd(ts_loop *l, int fd, ts_loop_fn fn, void *ud) { ts_loop_watch_fd_for(l, fd, 0, fn, ud); }

void ts_loop_watch_fd_for(ts_loop *l, int fd, int writable, ts_loop_fn fn, void *ud) {
    for (int i = 0; i < l->nwatches; i++) {
        if (l->watches[i].fd == fd) {
            if (fn) { l->watches[i].fn = fn; l->watches[i].ud = ud; l->watches[i].out = writable; }
            else { l->watches[i] = l->watches[--l->nwatches]; }   /* fn NULL: unwatch */
            return;
        }
    }
    if (!fn) return;
    if (l->nwatches == l->cwatches) {
        l->cwatches = l->cwatches ? l->cwatches * 2 : 4;
        l->watches = realloc(l->watches, (size_t)l->cwatches * sizeof *l->watches);
        if (!l->watches) abort();
    }
    l->watches[l->nwatches++] = (watch){fd, writable, fn, ud};
}

int ts_http_start(ts_loop *l, const ts_http_req *rq) {
    if (l->closing) return -1;
    req *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->loop = l;
    q->r = *rq;
    ts_http_result_init(&q->res);
    q->easy = easy_get();
    if (!q->easy) { free(q); return -1; }
    if (setup(q) != 0) { req_free(q); return -1; }
    curl_easy_setopt(q->easy, CURLOPT_PRIVATE, q);
    if (curl_multi_add_handle(l->multi, q->easy) != CURLM_OK) { req_free(q); return -1; }
    q->next = l->inflight;
    if (q->next) q->next->prev = q;
    l->inflight = q;
    l->running++;
    return 0;
}

static void dispatch_done(ts_loop *l) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        req *q = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        /* read the result before complete(): m is invalid once the handle is removed */
        CURLcode cc = m->data.result;
        if (q) complete(l, q, cc);
    }
}

static int run_timers(ts_loop *l) {
    int fired = 0;
    int64_t now = ts_mono_ms();
    /* One at a time from the front: a callback may add or cancel timers. */
    while (l->ntimers > 0 && l->timers[0].due <= now) {
        timer t = l->timers[0];
        memmove(&l->timers[0], &l->timers[1], (size_t)(l->ntimers - 1) * sizeof *l->timers);
        l->ntimers--;
        t.fn(t.ud);
        fired++;
    }
    return fired;
}

int ts_loop_run_once(ts_loop *l, int max_wait_ms) {
    if (max_wait_ms < 0) max_wait_ms = 0;
    int64_t wait = max_wait_ms;
    if (l->ntimers > 0) {
        int64_t d = l->timers[0].due - ts_mono_ms();
        if (d < wait) wait = d < 0 ? 0 : d;
    }
    /* Watched fds ride along as extra fds; curl also caps the wait by its
     * own timeouts (a just-added handle makes it return at once). */
    struct curl_waitfd fds[16];
    int nfds = l->nwatches < 16 ? l->nwatches : 16;
    for (int i = 0; i < nfds; i++) {
        fds[i].fd = l->watches[i].fd;
        fds[i].events = l->watches[i].out ? CURL_WAIT_POLLOUT : CURL_WAIT_POLLIN;
        fds[i].revents = 0;
    }
    int numfds = 0;
    CURLMcode mc = curl_multi_poll(l->multi, nfds ? fds : NULL, (unsigned)nfds, (int)wait, &numfds);
    if (mc != CURLM_OK) ts_warn("http: curl_multi_poll: %s", curl_multi_strerror(mc));

    /* Snapshot the ready watches: a callback may change the watch list. */
    watch ready[16];
    int nready = 0;
    for (int i = 0; i < nfds; i++)
        if (fds[i].revents) {
            for (int j = 0; j < l->nwatches; j++)
                if (l->watches[j].fd == fds[i].fd) { ready[nready++] = l->watches[j]; break; }
        }
    for (int i = 0; i < nready; i++) ready[i].fn(ready[i].ud);

    int still = 0;
    curl_multi_perform(l->multi, &still);
    dispatch_done(l);
    run_timers(l);
    return l->running;
}
