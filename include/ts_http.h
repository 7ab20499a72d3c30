/* Event loop and HTTP client (C core, libcurl). One thread, one curl multi
 * handle: Traffic Monitor polls and InfluxDB writes run concurrently on it,
 * timers and watched fds (signals) wake it. A blocking variant serves the
 * Lua API and the command-line tools. Connections are kept alive and reused
 * (one shared connection cache and cookie jar). */
#ifndef TS_HTTP_H
#define TS_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"

typedef struct ts_loop ts_loop;

ts_loop *ts_loop_new(void);
void ts_loop_free(ts_loop *l);          /* aborts in-flight requests (their on_done runs with curl_code=CURLE_ABORTED_BY_CALLBACK) */
typedef void (*ts_loop_fn)(void *ud);
/* One-shot timer at a CLOCK_MONOTONIC deadline in ms (ts_mono_ms()). Returns an id > 0. */
int ts_loop_timer(ts_loop *l, int64_t due_mono_ms, ts_loop_fn fn, void *ud);
void ts_loop_timer_cancel(ts_loop *l, int id);
/* Call fn when fd is readable (e.g. a signalfd). fn NULL stops watching fd.
 * At most 16 fds are polled. */
void ts_loop_watch_fd(ts_loop *l, int fd, ts_loop_fn fn, void *ud);
/* The same, for writability when writable is 1 (a socket still connecting or
 * with unsent output, as libpq's non-blocking calls ask for). */
void ts_loop_watch_fd_for(ts_loop *l, int fd, int writable, ts_loop_fn fn, void *ud);
/* Wait up to max_wait_ms for I/O / timers and dispatch them. Returns the number of requests still running. */
int ts_loop_run_once(ts_loop *l, int max_wait_ms);
int ts_loop_running(const ts_loop *l);  /* requests in flight */

/* TLS settings of one remote (Traffic Ops, InfluxDB, ...). Unset strings use
 * the system's trust store and no client certificate. */
typedef struct ts_tls {
    int insecure;             /* 1: skip peer and host name verification (caller logs the warning) */
    const char *ca_file;      /* PEM bundle of trusted CAs */
    const char *ca_path;      /* directory of hashed CA certificates (c_rehash) */
    const char *client_cert;  /* PEM client certificate (mutual TLS) */
    const char *client_key;   /* its PEM private key (defaults to client_cert's file) */
} ts_tls;

/* Applies t to a libcurl easy handle (CURL *, kept opaque here). Returns 0,
 * or -1 when libcurl refused an option (the handle is then not usable for TLS). */
int ts_tls_apply(void *curl_easy, const ts_tls *t);

typedef struct ts_http_opts {
    long connect_timeout_ms;  /* default 5000 when 0 */
    long timeout_ms;          /* total; default 30000 when 0 */
    int insecure;             /* 1: skip TLS verification (caller logs the warning) */
    const char *ca_file;      /* optional CA bundle */
    const char *user;         /* basic auth when non-NULL */
    const char *password;
    int accept_gzip;          /* send Accept-Encoding: gzip and decode transparently */
    int gzip_body;            /* compress the request body, send Content-Encoding: gzip */
    int use_cookies;          /* use the shared cookie jar (Traffic Ops session) */
    const char *user_agent;   /* default "tstats/<version>" */
    ts_tls tls;               /* CA path, client certificate; insecure / ca_file above also count */
} ts_http_opts;

typedef struct ts_http_result {
    int curl_code;            /* CURLE_OK (0) when a response arrived */
    long status;              /* HTTP status, 0 when none */
    char errmsg[256];         /* curl's error text when curl_code != 0 */
    ts_buf body;              /* collected body when the request had no on_data */
    uint64_t bytes_in;        /* body bytes received (after decoding) */
    double total_s;           /* transfer time */
    uint64_t bytes_out;       /* request body bytes sent (after gzip) */
} ts_http_result;

typedef struct ts_http_req {
    const char *url;
    const char *method;       /* NULL = GET, or "POST" when body is set */
    const char *body;         /* request body, not copied: must live until on_done */
    size_t body_len;
    const char *content_type; /* e.g. "application/json" */
    const char *const *headers; /* NULL-terminated extra "Name: value" lines, or NULL */
    ts_http_opts opts;
    size_t max_body;          /* collected-body cap (0 = 64 MiB); beyond it the request fails */
    /* Streaming: when set, body bytes go here and are not collected. Return
     * 0 to continue, non-zero to abort the transfer (on_done then sees an error). */
    int (*on_data)(void *ud, const char *p, size_t n);
    /* Async completion. `r` is valid during the call only. */
    void (*on_done)(void *ud, ts_http_result *r);
    void *ud;
} ts_http_req;

/* Start an async request on the loop; req is copied (strings it points at
 * must outlive the request). Returns 0, or -1 if it could not be started
 * (on_done is then NOT called). */
int ts_http_start(ts_loop *l, const ts_http_req *req);
/* Lets requests read file:// URLs (saved payloads of the offline mapping loop); off by default. */
void ts_http_allow_file(int on);
/* Blocking request (own easy handle, shared connection cache / cookies).
 * Returns 0 when a response arrived (check r->status), -1 otherwise. Caller frees r->body. */
int ts_http_perform(const ts_http_req *req, ts_http_result *r);
void ts_http_result_init(ts_http_result *r);
void ts_http_result_free(ts_http_result *r);

/* Process-wide init/cleanup of libcurl (call once). */
int ts_http_global_init(void);
void ts_http_global_cleanup(void);
/* URL-encode s (RFC 3986 unreserved kept) appended to out. */
void ts_http_urlencode(ts_buf *out, const char *s, size_t n);

#endif
