/* The InfluxDB 1.x protocol (C core): a set of servers with their connection
 * settings and the one memory of which of them answered last (shared by the
 * writer and the Lua API, so both fail over alike), request set-up, answer
 * classification, and one blocking POST for queries and scripts.
 * Answers as InfluxDB 1.6 gives them:
 *   204          ok
 *   400          partial write / unable to parse / beyond retention / type
 *                conflict: the points the server dropped are counted, the
 *                chunk is not retried (TS_INFLUX_REJECT)
 *   401/403/404  auth refused, database not found (TS_INFLUX_DEST)
 *   500 "retention policy not found" (TS_INFLUX_DEST)
 *   other 5xx, transport errors, timeouts (TS_INFLUX_HOST: next server)
 *   other 4xx    resending will not help (TS_INFLUX_DROP) */
#ifndef TS_INFLUX_H
#define TS_INFLUX_H
#include <stddef.h>
#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_http.h"

typedef struct ts_influx_opts {
    const char *const *urls;  /* NULL-terminated base URLs (http[s]://host:port) */
    const char *user, *password;
    int insecure;
    const char *ca_file;
    long timeout_ms;          /* per request; default 30000 */
    long connect_timeout_ms;  /* default 5000 */
    ts_tls tls;               /* CA path, client certificate (insecure / ca_file above also count) */
} ts_influx_opts;

typedef struct ts_influx ts_influx;
ts_influx *ts_influx_new(const ts_influx_opts *o);
/* New settings (SIGHUP): the preferred server is kept when it is still listed. */
void ts_influx_update(ts_influx *x, const ts_influx_opts *o);
void ts_influx_free(ts_influx *x);

int ts_influx_nurls(const ts_influx *x);
const char *ts_influx_url(const ts_influx *x, int i);   /* NULL out of range */
int ts_influx_current(const ts_influx *x);              /* -1 with no URLs */
void ts_influx_set_current(ts_influx *x, int i);        /* i answered */
/* i failed: prefer the next one (when i was the preferred one). */
void ts_influx_failed(ts_influx *x, int i);

/* A POST of body to url with x's credentials, TLS settings and timeouts. */
void ts_influx_req(const ts_influx *x, ts_http_req *rq, const char *url, const char *body, size_t len,
                   const char *ctype);
/* "/write?db=..&rp=..&precision=.." for d (malloc'd). */
char *ts_influx_write_path(const ts_dest *d);

enum { TS_INFLUX_OK, TS_INFLUX_REJECT, TS_INFLUX_DROP, TS_INFLUX_DEST, TS_INFLUX_HOST };
int ts_influx_classify(const ts_http_result *r, const char *msg);
/* The text of {"error":"..."} (InfluxDB 1.x's only error shape), else the raw body. */
void ts_influx_server_message(const ts_buf *body, char *out, size_t n);
/* URL for logs: no user:password@ and no path or query. */
void ts_influx_safe_url(char *out, size_t n, const char *url);
/* Points InfluxDB did not store, from a 400 answer's error text for a chunk
 * of `lines` lines: one per "unable to parse '...'" plus N of "dropped=N";
 * the whole chunk when the text has neither. */
size_t ts_influx_rejected_count(const char *msg, size_t lines);

/* The failover rule of a POST to one server: 1 when it answered (the
 * failover ends there, any status), 0 when the next URL is tried. */
int ts_influx_answered(int transport_ok, const ts_http_result *r);
/* Appends one server's failure to err ("; "-separated, *used bytes so far,
 * no credentials): its HTTP status, its transport error, or, r NULL, a
 * request that could not be started. */
void ts_influx_note_failure(char *err, size_t errlen, size_t *used, const char *server_url, int transport_ok,
                            const ts_http_result *r);
/* One blocking POST of body to <url><path_query>, from the preferred server
 * on: transport errors and 5xx answers that are not InfluxDB's own JSON
 * errors move on to the next URL. Returns 0 with the answer in out (any
 * status; the server that gave it becomes the preferred one), or -1 with
 * every URL's failure in err (no credentials in it). */
int ts_influx_post(ts_influx *x, const char *path_query, const char *body, size_t len, const char *ctype,
                   size_t max_body, ts_http_result *out, char *err, size_t errlen);
/* Blocking InfluxQL query (POST /query with q=, db=, epoch=): 0 and the raw
 * JSON in out, or -1 with a message in err. */
int ts_influx_query(ts_influx *x, const char *db, const char *q, const char *epoch, ts_buf *out, char *err,
                    size_t errlen);

#endif
