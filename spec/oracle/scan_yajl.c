/* ts_scan_yajl: the yajl-based TM payload scanner (C test side; no Lua here), kept
 * as the reference that the hand-written scanner in src/scan.c is tested and
 * fuzzed against; built for the tests, the fuzzer and the benchmark only (same contract, ts_scan_yajl_* names). yajl's SAX parser drives a small fixed
 * state machine: top object -> entity map -> stat map -> history array ->
 * element [0]. Everything else is skipped by counting container depth, so the
 * scanner holds no payload and allocates nothing per key or sample (only one
 * feed-gathering buffer, plus yajl's own token buffer). */
#include "ts_scan_yajl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* Longest value text delivered as-is. Real TM values are numbers printed by Go
 * (<= ~25 bytes) or short words; longer ones are struct dumps nobody graphs. */
#define SCAN_VAL_CAP 256
/* JSON nesting limit (real payloads use 5 levels). Also bounds yajl's stack. */
#define SCAN_MAX_DEPTH 64
/* Feeds below this size are gathered before yajl sees them (curl hands over
 * up to 16 KiB at a time, which then goes straight through). yajl
 * re-lexes a token that spans calls from its first byte on every call, so
 * tiny feeds (and long tokens) would otherwise cost O(token^2). The unit
 * test builds a second copy with 1 to split tokens everywhere. */
#ifndef SCAN_COALESCE
#define SCAN_COALESCE 8192
#endif

/* Which container the scanner is in (only meaningful when skip == 0). */
enum {
    S_START,  /* nothing seen yet */
    S_TOP,    /* top-level object */
    S_ENTS,   /* "caches" / "deliveryService" object: keys are entities */
    S_STATS,  /* one entity's object: keys are stats */
    S_HIST,   /* a stat's history array, before element [0] */
    S_SAMPLE, /* element [0] object */
    S_DONE    /* top-level object closed */
};

/* What the next value in the current container means (set by the map key). */
enum { W_SKIP, W_ENTS, W_ENTITY, W_STATARR, W_VALUE, W_TIME };

struct ts_scan {
    yajl_handle h;
    ts_scan_sink sink;
    ts_scan_stats st;
    const char *ents_key; /* "caches" or "deliveryService" */
    size_t ents_key_len;
    int state, want;
    int resume;      /* state to return to when the skipped container closes */
    unsigned skip;   /* open containers being skipped (0 = not skipping) */
    unsigned depth;  /* real JSON nesting, skipped parts included */
    int failed;      /* sticky: after an error every call returns -1 */
    uint64_t parsed; /* bytes handed to yajl before the current call, for offsets */
    unsigned ncb;    /* callbacks so far: a call without any means a long token */
    uint64_t quiet;  /* bytes handed to yajl since the last call with a callback */
    char *pend;      /* gathered small feeds, not yet parsed */
    size_t plen, pcap;
    void *ent, *stat;
    /* element [0] being collected */
    int have_val, vkind, has_time;
    size_t vlen;
    int64_t time_ms;
    char val[SCAN_VAL_CAP + 1];
    char err[320];
};

/* Cancel the parse with our own message; yajl then returns client_canceled. */
static int scan_fail(ts_scan *s, const char *what) {
    if (!s->failed) {
        uint64_t off = s->parsed + (uint64_t)yajl_get_bytes_consumed(s->h);
        snprintf(s->err, sizeof s->err, "TM payload: %s (near byte %llu)", what,
                 (unsigned long long)off);
        s->failed = 1;
    }
    return 0;
}

/* Start skipping a container that has just opened; `back` is the state that
 * continues after it closes. */
static inline void skip_open(ts_scan *s, unsigned n, int back) {
    s->skip = n;
    s->resume = back;
}

/* A scalar arrived where the scanner is not skipping. */
static int on_scalar(ts_scan *s, int kind, const char *p, size_t len) {
    switch (s->state) {
    case S_START:
        return scan_fail(s, "top level is not a JSON object");
    case S_TOP:
    case S_ENTS:
    case S_STATS:
        /* W_ENTS / W_ENTITY / W_STATARR wanted a container */
        if (s->want != W_SKIP) s->st.skipped_shape++;
        return 1;
    case S_HIST:
        /* element [0] is not an object: count it and skip the rest of the array */
        s->st.skipped_shape++;
        skip_open(s, 1, S_STATS);
        return 1;
    case S_SAMPLE:
        if (s->want == W_VALUE) {
            s->have_val = 1;
            if (kind == TS_VAL_OTHER) {
                s->vkind = TS_VAL_OTHER;
                s->vlen = 0;
            } else if (len > SCAN_VAL_CAP) {
                s->vkind = TS_VAL_OTHER;
                s->vlen = 0;
                s->st.truncated_values++;
            } else {
                memcpy(s->val, p, len);
                s->vkind = kind;
                s->vlen = len;
            }
            s->val[s->vlen] = '\0';
        } else if (s->want == W_TIME) {
            s->has_time = 0;
            if (kind != TS_VAL_NUMBER) return 1;
            /* Integer token only (yajl already checked JSON number syntax);
             * accumulate negatively so INT64_MIN is exact. */
            size_t i = 0;
            int neg = 0;
            if (i < len && p[i] == '-') { neg = 1; i++; }
            if (i == len) return 1;
            int64_t v = 0;
            for (; i < len; i++) {
                unsigned d = (unsigned)(unsigned char)p[i] - '0';
                if (d > 9) return 1; /* '.', 'e', 'E': not an integer */
                if (v < (INT64_MIN + (int64_t)d) / 10) return 1; /* overflow */
                v = v * 10 - (int64_t)d;
            }
            if (!neg) {
                if (v == INT64_MIN) return 1;
                v = -v;
            }
            s->time_ms = v;
            s->has_time = 1;
        }
        return 1;
    default:
        return 1;
    }
}

static int cb_null(void *ctx) {
    ts_scan *s = ctx;
    s->ncb++;
    return s->skip ? 1 : on_scalar(s, TS_VAL_OTHER, NULL, 0);
}

static int cb_bool(void *ctx, int b) {
    (void)b;
    ts_scan *s = ctx;
    s->ncb++;
    return s->skip ? 1 : on_scalar(s, TS_VAL_OTHER, NULL, 0);
}

static int cb_number(void *ctx, const char *p, size_t len) {
    ts_scan *s = ctx;
    s->ncb++;
    return s->skip ? 1 : on_scalar(s, TS_VAL_NUMBER, p, len);
}

static int cb_string(void *ctx, const unsigned char *p, size_t len) {
    ts_scan *s = ctx;
    s->ncb++;
    return s->skip ? 1 : on_scalar(s, TS_VAL_STRING, (const char *)p, len);
}

static int cb_key(void *ctx, const unsigned char *k, size_t len) {
    ts_scan *s = ctx;
    s->ncb++;
    if (s->skip) return 1;
    const char *key = (const char *)k;
    switch (s->state) {
    case S_TOP:
        s->want = (len == s->ents_key_len && memcmp(key, s->ents_key, len) == 0) ? W_ENTS : W_SKIP;
        break;
    case S_ENTS:
        s->st.entities++;
        s->ent = s->sink.entity ? s->sink.entity(s->sink.ud, key, len) : NULL;
        s->want = s->ent ? W_ENTITY : W_SKIP;
        break;
    case S_STATS:
        s->stat = s->sink.stat ? s->sink.stat(s->sink.ud, s->ent, key, len) : NULL;
        s->want = s->stat ? W_STATARR : W_SKIP;
        break;
    case S_SAMPLE:
        if (len == 5 && memcmp(key, "value", 5) == 0)
            s->want = W_VALUE;
        else if (len == 4 && memcmp(key, "time", 4) == 0)
            s->want = W_TIME;
        else
            s->want = W_SKIP;
        break;
    default:
        break;
    }
    return 1;
}

static int cb_start_map(void *ctx) {
    ts_scan *s = ctx;
    s->ncb++;
    if (++s->depth > SCAN_MAX_DEPTH) return scan_fail(s, "JSON nested deeper than 64 levels");
    if (s->skip) { s->skip++; return 1; }
    switch (s->state) {
    case S_START:
        s->state = S_TOP;
        s->want = W_SKIP;
        break;
    case S_TOP:
        if (s->want == W_ENTS) { s->state = S_ENTS; s->want = W_SKIP; }
        else skip_open(s, 1, S_TOP);
        break;
    case S_ENTS:
        if (s->want == W_ENTITY) { s->state = S_STATS; s->want = W_SKIP; }
        else skip_open(s, 1, S_ENTS);
        break;
    case S_STATS:
        if (s->want == W_STATARR) s->st.skipped_shape++;
        skip_open(s, 1, S_STATS);
        break;
    case S_HIST:
        s->state = S_SAMPLE;
        s->want = W_SKIP;
        s->have_val = 0;
        s->has_time = 0;
        s->vlen = 0;
        s->val[0] = '\0';
        break;
    case S_SAMPLE:
        if (s->want == W_VALUE) { s->have_val = 1; s->vkind = TS_VAL_OTHER; s->vlen = 0; s->val[0] = '\0'; }
        else if (s->want == W_TIME) s->has_time = 0;
        skip_open(s, 1, S_SAMPLE);
        break;
    default:
        break;
    }
    return 1;
}

static int cb_start_array(void *ctx) {
    ts_scan *s = ctx;
    s->ncb++;
    if (++s->depth > SCAN_MAX_DEPTH) return scan_fail(s, "JSON nested deeper than 64 levels");
    if (s->skip) { s->skip++; return 1; }
    switch (s->state) {
    case S_START:
        return scan_fail(s, "top level is not a JSON object");
    case S_TOP:
        if (s->want == W_ENTS) s->st.skipped_shape++;
        skip_open(s, 1, S_TOP);
        break;
    case S_ENTS:
        if (s->want == W_ENTITY) s->st.skipped_shape++;
        skip_open(s, 1, S_ENTS);
        break;
    case S_STATS:
        if (s->want == W_STATARR) { s->state = S_HIST; s->want = W_SKIP; }
        else skip_open(s, 1, S_STATS);
        break;
    case S_HIST:
        /* element [0] is an array: skip it and the rest of the history */
        s->st.skipped_shape++;
        skip_open(s, 2, S_STATS);
        break;
    case S_SAMPLE:
        if (s->want == W_VALUE) { s->have_val = 1; s->vkind = TS_VAL_OTHER; s->vlen = 0; s->val[0] = '\0'; }
        else if (s->want == W_TIME) s->has_time = 0;
        skip_open(s, 1, S_SAMPLE);
        break;
    default:
        break;
    }
    return 1;
}

static int cb_end_map(void *ctx) {
    ts_scan *s = ctx;
    s->ncb++;
    s->depth--;
    if (s->skip) {
        if (--s->skip == 0) s->state = s->resume;
        return 1;
    }
    switch (s->state) {
    case S_TOP: s->state = S_DONE; break;
    case S_ENTS: s->state = S_TOP; break;
    case S_STATS: s->state = S_ENTS; break;
    case S_SAMPLE:
        if (s->have_val) {
            s->st.samples++;
            if (s->sink.sample)
                s->sink.sample(s->sink.ud, s->ent, s->stat, s->val, s->vlen, s->vkind,
                               s->has_time ? s->time_ms : 0, s->has_time);
        } else {
            s->st.skipped_shape++; /* a history element without "value" */
        }
        /* elements [1..] are older history: skip until the array closes */
        skip_open(s, 1, S_STATS);
        break;
    default:
        break;
    }
    return 1;
}

static int cb_end_array(void *ctx) {
    ts_scan *s = ctx;
    s->ncb++;
    s->depth--;
    if (s->skip) {
        if (--s->skip == 0) s->state = s->resume;
        return 1;
    }
    if (s->state == S_HIST) s->state = S_STATS; /* empty history: nothing to report */
    return 1;
}

static const yajl_callbacks scan_callbacks = {
    cb_null, cb_bool, NULL, NULL, cb_number, cb_string,
    cb_start_map, cb_key, cb_end_map, cb_start_array, cb_end_array,
};

ts_scan *ts_scan_yajl_new(ts_scan_kind kind, const ts_scan_sink *sink) {
    ts_scan *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (sink) s->sink = *sink;
    s->ents_key = kind == TS_SCAN_DSSTATS ? "deliveryService" : "caches";
    s->ents_key_len = strlen(s->ents_key);
    s->state = S_START;
    s->h = yajl_alloc(&scan_callbacks, NULL, s);
    if (!s->h) { free(s); return NULL; }
    /* One document per scanner; strings stay UTF-8 validated (yajl default). */
    yajl_config(s->h, yajl_allow_multiple_values, 0);
    yajl_config(s->h, yajl_allow_partial_values, 0);
    yajl_config(s->h, yajl_allow_trailing_garbage, 0);
    return s;
}

/* Turn a yajl status into our return code and error text. */
static int scan_status(ts_scan *s, yajl_status st) {
    if (st == yajl_status_ok) return 0;
    if (!s->failed) { /* a syntax error (our own cancels already set err) */
        uint64_t off = s->parsed + (uint64_t)yajl_get_bytes_consumed(s->h);
        unsigned char *msg = yajl_get_error(s->h, 0, NULL, 0);
        const char *m = msg ? (const char *)msg : "unknown yajl error";
        size_t n = strlen(m);
        while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
        snprintf(s->err, sizeof s->err, "TM payload: JSON syntax error near byte %llu: %.*s",
                 (unsigned long long)off, (int)n, m);
        if (msg) yajl_free_error(s->h, msg);
        s->failed = 1;
    }
    return -1;
}

/* Hand bytes to yajl and keep track of how long the current token may be. */
static int scan_parse(ts_scan *s, const char *p, size_t n) {
    unsigned before = s->ncb;
    int rc = scan_status(s, yajl_parse(s->h, (const unsigned char *)p, n));
    s->quiet = s->ncb != before ? 0 : s->quiet + n;
    s->parsed += n;
    return rc;
}

int ts_scan_yajl_feed(ts_scan *s, const char *buf, size_t len) {
    if (s->failed) return -1;
    s->st.bytes += len;
    /* While a token keeps growing without any callback, wait for at least as
     * many new bytes as it already has: yajl's re-lexing stays linear. */
    uint64_t want = s->quiet > SCAN_COALESCE ? s->quiet : SCAN_COALESCE;
    if (s->plen == 0 && len >= want) return scan_parse(s, buf, len);
    if (len == 0) return 0;
    if (s->pcap - s->plen < len) {
        size_t cap = s->pcap ? s->pcap : SCAN_COALESCE;
        while (cap - s->plen < len) cap *= 2;
        char *p = realloc(s->pend, cap);
        if (!p) {
            snprintf(s->err, sizeof s->err, "TM payload: out of memory buffering %zu bytes", s->plen + len);
            s->failed = 1;
            return -1;
        }
        s->pend = p;
        s->pcap = cap;
    }
    memcpy(s->pend + s->plen, buf, len);
    s->plen += len;
    if (s->plen < want) return 0;
    size_t n = s->plen;
    s->plen = 0;
    return scan_parse(s, s->pend, n);
}

int ts_scan_yajl_finish(ts_scan *s) {
    if (s->failed) return -1;
    if (s->plen) {
        size_t n = s->plen;
        s->plen = 0;
        if (scan_parse(s, s->pend, n) < 0) return -1;
    }
    if (scan_status(s, yajl_complete_parse(s->h)) < 0) return -1;
    if (s->state != S_DONE) { /* yajl reports this itself; kept as a guard */
        snprintf(s->err, sizeof s->err, "TM payload: incomplete JSON object (%llu bytes)",
                 (unsigned long long)s->st.bytes);
        s->failed = 1;
        return -1;
    }
    return 0;
}

const char *ts_scan_yajl_error(const ts_scan *s) { return s->err[0] ? s->err : ""; }

const ts_scan_stats *ts_scan_yajl_get_stats(const ts_scan *s) { return &s->st; }

void ts_scan_yajl_free(ts_scan *s) {
    if (!s) return;
    yajl_free(s->h);
    free(s->pend);
    free(s);
}
