/* libFuzzer driver for ts_scan, the TM payload scanner (C core side; built by
 * hand with clang, see README.md). Differential: each input goes through the
 * hand-written scanner (src/scan.c, included here) and the yajl reference
 * (spec/oracle/scan_yajl.c, compiled alongside with 1-byte gathering so yajl really
 * sees the split), each whole and in two chunks split at a point taken from
 * the input. All four runs must agree (return code, every entity/stat/sample
 * in order, every counter) and the sink checks the callback contract. */
#include "../../src/scan.c"
#include "../oracle/ts_scan_yajl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Error offsets ("near byte N") of the two scanners point into the same token
 * but not always at the same byte of it (yajl names the end of what its lexer
 * consumed). */
#define FZ_OFF_TOL 8

/* The hand-written scanner names the first byte of an unexpected token; yajl
 * lexes that token first and names its end, which for a string can be far
 * away. So: never later than yajl, and close to it unless the offending byte
 * starts a string, number or literal. */
static int offsets_agree(const uint8_t *d, size_t n, long long hand, long long ref) {
    if (hand > ref + FZ_OFF_TOL) return 0;
    if (ref <= hand + FZ_OFF_TOL) return 1;
    if (hand < 1 || (size_t)hand > n) return 0;
    unsigned char c = d[hand - 1];
    return c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n';
}

/* Whether a string body starting at d[0] has its closing quote in d[0..n). */
static int string_closes(const uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\\') i++;
        else if (d[i] == '"') return 1;
    }
    return 0;
}

/* yajl bug: after the top-level object it lexes one more token to reject
 * trailing garbage, but an unterminated string there reads as "need more
 * input" and yajl_complete_parse then accepts the document. The hand-written
 * scanner rejects it (trailing garbage); the fuzzer and the unit test accept
 * exactly this disagreement. */
static int yajl_takes_open_string(const uint8_t *d, size_t n, long long hand_off, const char *hand_err) {
    if (!strstr(hand_err, "trailing garbage")) return 0;
    if (hand_off < 1 || (size_t)hand_off > n || d[hand_off - 1] != '"') return 0;
    return !string_closes(d + hand_off, n - (size_t)hand_off);
}

typedef struct {
    uint64_t hash;   /* FNV-1a over everything reported, in order */
    uint64_t events;
    char ent[64], stat[64]; /* handles point at these */
} fz_sink;

static void mix(fz_sink *f, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) f->hash = (f->hash ^ b[i]) * 1099511628211ULL;
    f->events++;
}

static void *fz_entity(void *ud, const char *name, size_t len) {
    fz_sink *f = ud;
    mix(f, "E", 1);
    mix(f, name, len);
    /* Skip some entities so NULL handles get fuzzed too. */
    return (len && name[0] == 's') ? NULL : f->ent;
}

static void *fz_stat(void *ud, void *ent, const char *name, size_t len) {
    fz_sink *f = ud;
    if (ent != f->ent) abort();
    mix(f, "T", 1);
    mix(f, name, len);
    return (len && name[0] == 's') ? NULL : f->stat;
}

static void fz_sample(void *ud, void *ent, void *stat, const char *val, size_t vlen, int kind, int64_t t,
                      int has_time) {
    fz_sink *f = ud;
    if (ent != f->ent || stat != f->stat) abort();
    if (val[vlen] != '\0') abort();
    if (kind != TS_VAL_STRING && kind != TS_VAL_NUMBER && kind != TS_VAL_OTHER) abort();
    if (kind == TS_VAL_OTHER && vlen != 0) abort();
    if (vlen > SCAN_VAL_CAP) abort();
    if (!has_time && t != 0) abort();
    mix(f, "S", 1);
    mix(f, val, vlen);
    mix(f, &kind, sizeof kind);
    mix(f, &t, sizeof t);
    mix(f, &has_time, sizeof has_time);
}

typedef struct {
    ts_scan *(*new_)(ts_scan_kind, const ts_scan_sink *);
    int (*feed)(ts_scan *, const char *, size_t);
    int (*finish)(ts_scan *);
    const char *(*error)(const ts_scan *);
    const ts_scan_stats *(*stats)(const ts_scan *);
    void (*free_)(ts_scan *);
} fz_api;
static const fz_api hand = {ts_scan_new, ts_scan_feed, ts_scan_finish, ts_scan_error, ts_scan_get_stats, ts_scan_free};
static const fz_api yajl = {ts_scan_yajl_new,   ts_scan_yajl_feed,      ts_scan_yajl_finish,
                            ts_scan_yajl_error, ts_scan_yajl_get_stats, ts_scan_yajl_free};

static long long fz_off(const char *e) {
    const char *p = strstr(e, "near byte ");
    return p ? strtoll(p + 10, NULL, 10) : -1;
}

static int scan(const fz_api *a, ts_scan_kind kind, const uint8_t *d, size_t n, size_t split, fz_sink *f,
                ts_scan_stats *st, long long *off, char *err, size_t errsz) {
    memset(f, 0, sizeof *f);
    f->hash = 14695981039346656037ULL;
    ts_scan_sink sink = {fz_entity, fz_stat, fz_sample, f};
    ts_scan *s = a->new_(kind, &sink);
    if (!s) abort();
    int rc = a->feed(s, (const char *)d, split);
    if (rc == 0) rc = a->feed(s, (const char *)d + split, n - split);
    if (rc == 0) rc = a->finish(s);
    else if (a->finish(s) != -1) abort();
    const char *e = a->error(s);
    if (rc == 0 && e[0]) abort();
    if (rc != 0 && strncmp(e, "TM payload: ", 12) != 0) abort();
    *off = rc ? fz_off(e) : -1;
    snprintf(err, errsz, "%s", e);
    *st = *a->stats(s);
    a->free_(s);
    return rc;
}

static int same(int ra, const fz_sink *a, const ts_scan_stats *sa, int rb, const fz_sink *b,
                const ts_scan_stats *sb) {
    return ra == rb && a->hash == b->hash && a->events == b->events && sa->samples == sb->samples &&
           sa->entities == sb->entities && sa->skipped_shape == sb->skipped_shape &&
           sa->truncated_values == sb->truncated_values && (ra != 0 || sa->bytes == sb->bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    /* byte 0: kind and split point; the rest is the document */
    ts_scan_kind kind = (data[0] & 1) ? TS_SCAN_DSSTATS : TS_SCAN_CACHESTATS;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    size_t split = n ? ((size_t)data[0] * 2654435761u) % (n + 1) : 0;
    fz_sink hw, hs, yw, ys;
    ts_scan_stats shw, shs, syw, sys;
    long long ohw, ohs, oyw, oys;
    char ehw[400], e2[400];
    int rhw = scan(&hand, kind, d, n, n, &hw, &shw, &ohw, ehw, sizeof ehw);
    int rhs = scan(&hand, kind, d, n, split, &hs, &shs, &ohs, e2, sizeof e2);
    int ryw = scan(&yajl, kind, d, n, n, &yw, &syw, &oyw, e2, sizeof e2);
    int rys = scan(&yajl, kind, d, n, split, &ys, &sys, &oys, e2, sizeof e2);
    if (!same(rhw, &hw, &shw, rhs, &hs, &shs)) abort();  /* hand-written: chunking must not matter */
    if (!same(ryw, &yw, &syw, rys, &ys, &sys)) abort();  /* yajl: the same */
    if (rhw != 0 && ryw == 0 && yajl_takes_open_string(d, n, ohw, ehw)) {
        /* known yajl bug, see yajl_takes_open_string: compare all but rc */
        if (!same(ryw, &hw, &shw, ryw, &yw, &syw)) abort();
        return 0;
    }
    if (!same(rhw, &hw, &shw, ryw, &yw, &syw)) abort();  /* hand-written vs yajl */
    if (rhw == 0 && shw.bytes != n) abort();
    if (rhw != 0) {
        if ((ohw < 0) != (oyw < 0) || (ohw < 0) != (ohs < 0)) abort();
        if (ohw != ohs) abort(); /* the hand-written offset is exact whatever the chunking */
        if (ohw >= 0 && !offsets_agree(d, n, ohw, oyw)) abort();
    }
    return 0;
}
