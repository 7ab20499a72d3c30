/* libFuzzer driver for ts_scan, the TM payload scanner (C core side; built by
 * hand with clang, see README.md). Each input is scanned whole and again in
 * two chunks split at a point taken from the input; both runs must agree
 * (return code, every sample, every counter) and the sink checks the
 * callback contract. Gathering is set to 1 byte so yajl really sees the split. */
#define SCAN_COALESCE 1
#include "../../src/tmscan.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int scan(ts_scan_kind kind, const uint8_t *d, size_t n, size_t split, fz_sink *f, ts_scan_stats *st) {
    memset(f, 0, sizeof *f);
    f->hash = 14695981039346656037ULL;
    ts_scan_sink sink = {fz_entity, fz_stat, fz_sample, f};
    ts_scan *s = ts_scan_new(kind, &sink);
    if (!s) abort();
    int rc = ts_scan_feed(s, (const char *)d, split);
    if (rc == 0) rc = ts_scan_feed(s, (const char *)d + split, n - split);
    if (rc == 0) rc = ts_scan_finish(s);
    else if (ts_scan_finish(s) != -1) abort();
    const char *e = ts_scan_error(s);
    if (rc == 0 && e[0]) abort();
    if (rc != 0 && strncmp(e, "TM payload: ", 12) != 0) abort();
    *st = *ts_scan_get_stats(s);
    ts_scan_free(s);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    /* byte 0: kind and split point; the rest is the document */
    ts_scan_kind kind = (data[0] & 1) ? TS_SCAN_DSSTATS : TS_SCAN_CACHESTATS;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    size_t split = n ? ((size_t)data[0] * 2654435761u) % (n + 1) : 0;
    fz_sink a, b;
    ts_scan_stats sa, sb;
    int ra = scan(kind, d, n, n, &a, &sa);
    int rb = scan(kind, d, n, split, &b, &sb);
    if (ra != rb || a.hash != b.hash || a.events != b.events) abort();
    if (sa.samples != sb.samples || sa.entities != sb.entities || sa.skipped_shape != sb.skipped_shape ||
        sa.truncated_values != sb.truncated_values)
        abort();
    if (ra == 0 && (sa.bytes != n || sb.bytes != n)) abort();
    return 0;
}
