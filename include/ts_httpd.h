/* HTTP listener (C core, libmicrohttpd): GET /metrics (Prometheus text), /health, /ready,
 * /status.json and / (the status page). It runs in libmicrohttpd's own thread and only
 * reads the metrics store (ts_metrics.h), so a slow or stuck scraper never holds up the
 * poll loop. Off unless http.listen is set. */
#ifndef TS_HTTPD_H
#define TS_HTTPD_H
#include "ts_metrics.h"

typedef struct ts_httpd_opts {
    const char *listen;       /* "host:port", "[v6]:port", ":port" or "port" (127.0.0.1); NULL/"" = off */
    const char *user, *password;   /* basic auth when both are set */
    const char *token;        /* bearer token; either credential is accepted when both kinds are set */
} ts_httpd_opts;

typedef struct ts_httpd ts_httpd;

/* Starts listening; NULL when off or on failure (logged; *failed set to 1 on failure). */
ts_httpd *ts_httpd_start(const ts_httpd_opts *o, ts_metrics *m, int *failed);
/* The port it listens on (useful with port 0). */
int ts_httpd_port(const ts_httpd *h);
void ts_httpd_stop(ts_httpd *h);

/* Parses a listen string; 0 or -1 with a message in err. */
int ts_httpd_parse_listen(const char *s, char *host, size_t hostlen, int *port, char *err, size_t errlen);

#endif
