/* tstats-sim response plumbing (C, test side): refcounted bodies shared by the
 * payload cache and MHD responses, gzip, and small send helpers. A cached
 * 160 MB body is never copied: each response holds a reference instead. */
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include "sim.h"
#include "ts_log.h"

sim_payload *ts_sim_payload_new(char *data, size_t len) {
    sim_payload *p = malloc(sizeof *p);
    if (!p) abort();
    atomic_init(&p->refs, 1);
    p->data = data;
    p->len = len;
    return p;
}

sim_payload *ts_sim_payload_from_buf(ts_buf *b) {
    if (!b->data) ts_buf_reserve(b, 1);
    sim_payload *p = ts_sim_payload_new(b->data, b->len);
    ts_buf_init(b);
    return p;
}

void ts_sim_payload_ref(sim_payload *p) { atomic_fetch_add(&p->refs, 1); }

void ts_sim_payload_unref(sim_payload *p) {
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        free(p->data);
        free(p);
    }
}

sim_payload *ts_sim_gzip(const char *data, size_t len) {
    z_stream z;
    memset(&z, 0, sizeof z);
    /* Level 1: the sim is a load generator, its CPU belongs to the client under test. */
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&z, (uLong)len) + 64;
    char *out = malloc(cap);
    if (!out) abort();
    z.next_in = (Bytef *)(uintptr_t)data;
    z.next_out = (Bytef *)out;
    /* zlib counts in uInt: feed gigantic bodies in slices. */
    size_t in_left = len;
    int rc;
    do {
        uInt chunk = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
        z.avail_in = chunk;
        in_left -= chunk;
        size_t room = cap - (size_t)((char *)z.next_out - out);
        z.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
        rc = deflate(&z, in_left ? Z_NO_FLUSH : Z_FINISH);
    } while (in_left && rc == Z_OK);
    while (rc == Z_OK) {
        size_t room = cap - (size_t)((char *)z.next_out - out);
        z.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
        rc = deflate(&z, Z_FINISH);
    }
    size_t n = (size_t)((char *)z.next_out - out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        ts_warn("gzip failed (%d)", rc);
        free(out);
        return NULL;
    }
    return ts_sim_payload_new(out, n);
}

int ts_sim_wants_gzip(struct MHD_Connection *c) {
    const char *ae = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    return ae && strstr(ae, "gzip") != NULL;
}

static void unref_cb(void *cls) { ts_sim_payload_unref(cls); }

enum MHD_Result ts_sim_send_payload(struct MHD_Connection *c, int status, const char *ctype, sim_payload *p,
                        size_t len, int gzip_encoded) {
    ts_sim_payload_ref(p);
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback_cls(len, p->data, unref_cb, p);
    if (!r) {
        ts_sim_payload_unref(p);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (gzip_encoded) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result ts_sim_send_text(struct MHD_Connection *c, int status, const char *ctype, const char *body) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Sends b (gzipped when the client asks and it is worth it) and empties it. */
enum MHD_Result ts_sim_send_buf(struct MHD_Connection *c, int status, const char *ctype, ts_buf *b) {
    sim_payload *p = ts_sim_payload_from_buf(b);
    int gz = 0;
    if (p->len > 512 && ts_sim_wants_gzip(c)) {
        sim_payload *z = ts_sim_gzip(p->data, p->len);
        if (z) {
            ts_sim_payload_unref(p);
            p = z;
            gz = 1;
        }
    }
    int ret = ts_sim_send_payload(c, status, ctype, p, p->len, gz);
    ts_sim_payload_unref(p);
    return ret;
}

/* The "cut" fault: announce the full length, then drop the connection halfway. */
typedef struct cut_ctx {
    sim_payload *p;
} cut_ctx;

static ssize_t cut_read(void *cls, uint64_t pos, char *buf, size_t max) {
    cut_ctx *cc = cls;
    size_t half = cc->p->len / 2;
    if (pos >= half) return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = half - (size_t)pos;
    if (n > max) n = max;
    memcpy(buf, cc->p->data + pos, n);
    return (ssize_t)n;
}

static void cut_free(void *cls) {
    cut_ctx *cc = cls;
    ts_sim_payload_unref(cc->p);
    free(cc);
}

enum MHD_Result ts_sim_send_cut(struct MHD_Connection *c, const char *ctype, sim_payload *p) {
    cut_ctx *cc = malloc(sizeof *cc);
    if (!cc) abort();
    ts_sim_payload_ref(p);
    cc->p = p;
    struct MHD_Response *r = MHD_create_response_from_callback(p->len, 64 * 1024, cut_read, cc, cut_free);
    if (!r) {
        cut_free(cc);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

int64_t ts_sim_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ts_sim_sleep_ms(int ms, const int *watch) {
    int64_t end = ts_sim_mono_ms() + ms;
    for (;;) {
        if (atomic_load(&ts_sim.stopping)) return -1;
        if (watch && !__atomic_load_n(watch, __ATOMIC_RELAXED)) return 1;
        int64_t left = end - ts_sim_mono_ms();
        if (left <= 0) return 0;
        struct timespec ts = {0, (left > 20 ? 20 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}
