/* InfluxDB 1.x line protocol encoder (C core, no Lua). Generic points come
 * from the Lua API, compact points from the writer; both end up here.
 * Escaping follows the 1.x parser (models/points.go), which treats a
 * backslash as escaping whatever byte follows it and never pairs them. */
#include "ts_lp.h"
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1.x MaxKeyLength: the series key (measurement + tags) must fit in 65535. */
#define TS_LP_MAX_KEY 65535

const char *ts_precision_name(ts_precision p) {
    switch (p) {
    case TS_PREC_NS: return "ns";
    case TS_PREC_US: return "u";
    case TS_PREC_MS: return "ms";
    case TS_PREC_S: return "s";
    case TS_PREC_M: return "m";
    case TS_PREC_H: return "h";
    }
    return "ns";
}

int ts_precision_parse(const char *s, ts_precision *out) {
    static const struct { const char *name; ts_precision p; } tab[] = {
        {"ns", TS_PREC_NS}, {"n", TS_PREC_NS}, {"u", TS_PREC_US}, {"us", TS_PREC_US},
        {"ms", TS_PREC_MS}, {"s", TS_PREC_S}, {"m", TS_PREC_M}, {"h", TS_PREC_H},
    };
    if (!s) return -1;
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (strcmp(s, tab[i].name) == 0) { *out = tab[i].p; return 0; }
    }
    return -1;
}

/* ---- escaping ---------------------------------------------------------- */

/* Byte classes: 0 copy, 1 prefix with '\', 2 newline written as "\n". One
 * constant table per element kind keeps the inner loop to a load and a
 * branch, with nothing to initialise (so nothing to race on). */
enum { ESC_MEAS, ESC_TAG, ESC_FKEY, ESC_STR, ESC_KINDS };
static const unsigned char esc_class[ESC_KINDS][256] = {
    [ESC_MEAS] = {[','] = 1, [' '] = 1, ['\n'] = 2},
    [ESC_TAG] = {[','] = 1, ['='] = 1, [' '] = 1, ['\n'] = 2},
    /* Field keys also escape '"' (1.x pkg/escape.String). */
    [ESC_FKEY] = {[','] = 1, ['='] = 1, [' '] = 1, ['"'] = 1, ['\n'] = 2},
    /* String values keep raw newlines: the 1.x parser tracks quotes, and
     * "\n" inside a string would be stored as two characters. */
    [ESC_STR] = {['"'] = 1, ['\\'] = 1},
};

/* A trailing backslash would escape the separator that follows the element
 * (the 1.x parser looks only at the previous byte), and doubling it does not
 * help, so it cannot be represented: drop it, as Telegraf does. */
static size_t trim_backslashes(const char *s, size_t n) {
    while (n > 0 && s[n - 1] == '\\') n--;
    return n;
}

/* Worst case doubles the input; reserve once and write without checks. */
static void esc_append(ts_buf *out, int kind, const char *s, size_t n) {
    ts_buf_reserve(out, 2 * n + 1);
    const unsigned char *cls = esc_class[kind];
    char *d = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (cls[c]) {
        case 0: *d++ = (char)c; break;
        case 1: *d++ = '\\'; *d++ = (char)c; break;
        default: *d++ = '\\'; *d++ = 'n'; break;
        }
    }
    out->len = (size_t)(d - out->data);
    out->data[out->len] = '\0';
}

void ts_lp_escape_measurement(ts_buf *out, const char *s, size_t n) {
    esc_append(out, ESC_MEAS, s, trim_backslashes(s, n));
}

void ts_lp_escape_tag(ts_buf *out, const char *s, size_t n) {
    esc_append(out, ESC_TAG, s, trim_backslashes(s, n));
}

void ts_lp_escape_field_key(ts_buf *out, const char *s, size_t n) {
    esc_append(out, ESC_FKEY, s, trim_backslashes(s, n));
}

void ts_lp_escape_string_value(ts_buf *out, const char *s, size_t n) {
    esc_append(out, ESC_STR, s, n);
}

/* ---- numbers ----------------------------------------------------------- */

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Unsigned to decimal, two digits per step; returns the length written. */
static size_t fmt_u64(char *out, uint64_t v) {
    char tmp[24];
    char *p = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    return n;
}

size_t ts_fmt_int64(char out[24], int64_t v) {
    size_t n = 0;
    uint64_t u = (uint64_t)v;
    if (v < 0) {
        out[n++] = '-';
        u = 0 - u; /* well defined for INT64_MIN, unlike -v */
    }
    n += fmt_u64(out + n, u);
    out[n] = '\0';
    return n;
}

static const double pow10_tab[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
};
#define TWO53 9007199254740992.0

/* Decimal fast path for |v| in [1e-4, 2^53) with at most 15 decimals: the
 * candidate r / 10^k is an IEEE division of two exact values, so it equals
 * the double nearest the decimal r*10^-k, which is exactly what strtod makes
 * of the printed text. Equality with v therefore proves the round trip, and
 * the first k that works gives the fewest digits. Returns 0 if not found. */
static size_t fmt_decimal_fast(char *out, double v) {
    double a = fabs(v);
    if (a < 1e-4) return 0;
    for (int k = 1; k <= 15; k++) {
        double r = nearbyint(a * pow10_tab[k]);
        if (r >= TWO53) return 0;
        if (r / pow10_tab[k] != a) continue;
        char dig[24];
        size_t nd = fmt_u64(dig, (uint64_t)r);
        size_t n = 0;
        if (v < 0) out[n++] = '-';
        if (nd <= (size_t)k) {
            /* 0.000ddd: leading zeros between the point and the digits */
            out[n++] = '0';
            out[n++] = '.';
            for (size_t z = nd; z < (size_t)k; z++) out[n++] = '0';
            memcpy(out + n, dig, nd);
            n += nd;
        } else {
            size_t ip = nd - (size_t)k;
            memcpy(out + n, dig, ip);
            n += ip;
            out[n++] = '.';
            memcpy(out + n, dig + ip, (size_t)k);
            n += (size_t)k;
        }
        out[n] = '\0';
        return n;
    }
    return 0;
}

size_t ts_fmt_double(char out[32], double v) {
    if (!isfinite(v)) {
        /* Callers drop these before formatting; never emit them silently as
         * a number InfluxDB would take. */
        const char *s = isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
        size_t n = strlen(s);
        memcpy(out, s, n + 1);
        return n;
    }
    /* Integral values are the common case (TM counters): plain digits. */
    if (v == nearbyint(v) && fabs(v) < TWO53) {
        size_t n = 0;
        if (signbit(v)) out[n++] = '-'; /* keeps -0 distinct from 0 */
        n += fmt_u64(out + n, (uint64_t)fabs(v));
        out[n] = '\0';
        return n;
    }
    size_t n = fmt_decimal_fast(out, v);
    if (n) return n;
    /* For normal doubles (53-bit precision) the 15-digit rounding equals
     * any shorter decimal that round-trips, so %.15g is shortest whenever
     * <= 15 digits suffice; otherwise the nearest 16-digit decimal
     * round-trips if any does; 17 always does. Subnormals carry fewer bits
     * (5e-324 is one digit), so they search from 1 digit: rare, off the
     * hot path. */
    int p = fabs(v) < DBL_MIN ? 1 : 15;
    for (; p <= 17; p++) {
        int w = snprintf(out, 32, "%.*g", p, v);
        if (w <= 0 || w >= 32) continue;
        if (p == 17 || strtod(out, NULL) == v) {
            n = (size_t)w;
            break;
        }
    }
    /* snprintf/strtod follow LC_NUMERIC together; line protocol wants '.'. */
    for (size_t i = 0; i < n; i++)
        if (out[i] == ',') out[i] = '.';
    return n;
}

/* ---- timestamps -------------------------------------------------------- */

/* C division truncates toward zero, like Go's in 1.x Point.PrecisionString,
 * so negative times match what the reference client writes. */
static int64_t ns_to_prec(int64_t ns, ts_precision p) {
    switch (p) {
    case TS_PREC_NS: return ns;
    case TS_PREC_US: return ns / 1000;
    case TS_PREC_MS: return ns / 1000000;
    case TS_PREC_S: return ns / 1000000000;
    case TS_PREC_M: return ns / 60000000000LL;
    case TS_PREC_H: return ns / 3600000000000LL;
    }
    return ns;
}

/* Finer-than-ms precisions multiply; saturate so a hostile time cannot
 * overflow (signed overflow is undefined behaviour). */
static int64_t mul_sat(int64_t v, int64_t m) {
    if (v > INT64_MAX / m) return INT64_MAX;
    if (v < INT64_MIN / m) return INT64_MIN;
    return v * m;
}

static int64_t ms_to_prec(int64_t ms, ts_precision p) {
    switch (p) {
    case TS_PREC_NS: return mul_sat(ms, 1000000);
    case TS_PREC_US: return mul_sat(ms, 1000);
    case TS_PREC_MS: return ms;
    case TS_PREC_S: return ms / 1000;
    case TS_PREC_M: return ms / 60000;
    case TS_PREC_H: return ms / 3600000;
    }
    return ms;
}

/* ---- generic points ---------------------------------------------------- */

/* Byte order of the raw keys (Go bytes.Compare), shorter prefix first. */
static int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return (an > bn) - (an < bn);
}

static int tag_qcmp(const void *x, const void *y) {
    const ts_tag *a = x, *b = y;
    return key_cmp(a->key, a->key_len, b->key, b->key_len);
}

static void sort_tags(ts_tag *t, size_t n) {
    if (n > 16) {
        qsort(t, n, sizeof *t, tag_qcmp);
        return;
    }
    /* Points carry a handful of tags: insertion sort beats qsort's calls. */
    for (size_t i = 1; i < n; i++) {
        ts_tag x = t[i];
        size_t j = i;
        while (j > 0 && key_cmp(t[j - 1].key, t[j - 1].key_len, x.key, x.key_len) > 0) {
            t[j] = t[j - 1];
            j--;
        }
        t[j] = x;
    }
}

static int is_time_key(const char *k, size_t n) { return n == 4 && memcmp(k, "time", 4) == 0; }

static void append_i64(ts_buf *out, int64_t v) {
    char tmp[24];
    ts_buf_add(out, tmp, ts_fmt_int64(tmp, v));
}

/* Fail without leaving partial output behind (the header promises len). */
static int fail(ts_buf *out, size_t start, const char **err, const char *msg) {
    out->len = start;
    if (out->data) out->data[start] = '\0';
    if (err) *err = msg;
    return -1;
}

int ts_lp_encode(ts_buf *out, const char *measurement, size_t mlen,
                 ts_tag *tags, size_t ntags, const ts_field *fields, size_t nfields,
                 int has_ts, int64_t ts_ns, ts_precision prec, const char **err) {
    size_t start = out->len;
    if (!measurement || trim_backslashes(measurement, mlen) == 0)
        return fail(out, start, err, "empty measurement");
    ts_lp_escape_measurement(out, measurement, mlen);

    if (ntags) sort_tags(tags, ntags);
    for (size_t i = 0; i < ntags; i++) {
        const ts_tag *t = &tags[i];
        if (!t->key || trim_backslashes(t->key, t->key_len) == 0)
            return fail(out, start, err, "empty tag key");
        if (is_time_key(t->key, t->key_len))
            return fail(out, start, err, "reserved key 'time'");
        /* 1.x refuses "k=" ("missing tag value"); an absent tag is what a
         * query sees as empty anyway. */
        if (!t->value || trim_backslashes(t->value, t->value_len) == 0) continue;
        ts_buf_addc(out, ',');
        ts_lp_escape_tag(out, t->key, t->key_len);
        ts_buf_addc(out, '=');
        ts_lp_escape_tag(out, t->value, t->value_len);
    }
    if (out->len - start > TS_LP_MAX_KEY) return fail(out, start, err, "key too long");

    size_t written = 0;
    for (size_t i = 0; i < nfields; i++) {
        const ts_field *f = &fields[i];
        if (f->type == TS_F_FLOAT && !isfinite(f->v.f)) continue;
        if (!f->key || trim_backslashes(f->key, f->key_len) == 0)
            return fail(out, start, err, "empty field key");
        if (is_time_key(f->key, f->key_len))
            return fail(out, start, err, "reserved key 'time'");
        if (f->key_len > TS_LP_MAX_KEY) return fail(out, start, err, "key too long");
        ts_buf_addc(out, written ? ',' : ' ');
        ts_lp_escape_field_key(out, f->key, f->key_len);
        ts_buf_addc(out, '=');
        char num[32];
        switch (f->type) {
        case TS_F_FLOAT:
            ts_buf_add(out, num, ts_fmt_double(num, f->v.f));
            break;
        case TS_F_INT:
            append_i64(out, f->v.i);
            ts_buf_addc(out, 'i');
            break;
        case TS_F_UINT:
            /* 1.x servers reject the 'u' suffix; clamp like Telegraf does. */
            append_i64(out, f->v.u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)f->v.u);
            ts_buf_addc(out, 'i');
            break;
        case TS_F_BOOL:
            ts_buf_adds(out, f->v.b ? "true" : "false");
            break;
        case TS_F_STRING:
            ts_buf_addc(out, '"');
            if (f->v.str.len) ts_lp_escape_string_value(out, f->v.str.s, f->v.str.len);
            ts_buf_addc(out, '"');
            break;
        default:
            return fail(out, start, err, "bad field type");
        }
        written++;
    }
    if (!written) return fail(out, start, err, "no fields");

    if (has_ts) {
        ts_buf_addc(out, ' ');
        append_i64(out, ns_to_prec(ts_ns, prec));
    }
    return 0;
}

/* ---- compact points (the writer's hot path) ---------------------------- */

static inline char *put(char *d, const void *s, size_t n) {
    memcpy(d, s, n);
    return d + n;
}

int64_t ts_lp_ms_to_prec(int64_t ms, ts_precision prec) { return ms_to_prec(ms, prec); }

/* v already scaled */
static size_t compact_value(char *d, const ts_stat_map *st, double v) {
    if (!st->as_int) return ts_fmt_double(d, v);
    /* llround is undefined outside int64; clamp as 1.x would refuse it. */
    int64_t iv;
    if (v >= 9223372036854775807.0) iv = INT64_MAX;
    else if (v <= -9223372036854775808.0) iv = INT64_MIN;
    else iv = (int64_t)llround(v);
    size_t n = ts_fmt_int64(d, iv);
    d[n++] = 'i';
    d[n] = '\0';
    return n;
}

size_t ts_lp_compact_value(char out[32], const ts_stat_map *st, double value) {
    if (st->scale != 1.0) value *= st->scale;
    return compact_value(out, st, value);
}

int ts_lp_compact_writable(const ts_stat_map *st, double value) {
    if (!st) return 0;
    if (st->scale != 1.0) value *= st->scale;
    return isfinite(value) != 0;
}

int ts_lp_encode_compact(ts_buf *out, const ts_cpoint *p, ts_precision prec) {
    const ts_stat_map *st = p->stat;
    if (!ts_lp_compact_writable(st, p->value)) return -1;
    double v = p->value;
    if (st->scale != 1.0) v *= st->scale;

    static const ts_tagset none = {NULL, 0};
    const ts_tagset *a = &st->tags;
    const ts_tagset *b = p->ent ? &p->ent->tags : &none;

    /* One reservation for the whole line, then plain stores: the longest
     * number is 24 bytes, the timestamp 20, plus ' ', '=', 'i', ' ', '\n'. */
    size_t need = (size_t)st->meas_len + st->field_len + 64;
    for (uint32_t i = 0; i < a->n; i++) need += a->tags[i].kv_len + 1;
    for (uint32_t i = 0; i < b->n; i++) need += b->tags[i].kv_len + 1;
    ts_buf_reserve(out, need + 1);
    char *d = out->data + out->len;

    d = put(d, st->meas, st->meas_len);
    /* Merge two sorted sets. On the same key the stat's tag wins: the stat
     * mapping is the more specific answer (e.g. cachegroup=total). */
    uint32_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        const ts_etag *t;
        if (j >= b->n) t = &a->tags[i++];
        else if (i >= a->n) t = &b->tags[j++];
        else {
            int c = strcmp(a->tags[i].key, b->tags[j].key);
            if (c < 0) t = &a->tags[i++];
            else if (c > 0) t = &b->tags[j++];
            else { t = &a->tags[i++]; j++; }
        }
        *d++ = ',';
        d = put(d, t->kv, t->kv_len);
    }
    *d++ = ' ';
    d = put(d, st->field, st->field_len);
    *d++ = '=';
    d += compact_value(d, st, v);
    *d++ = ' ';
    d += ts_fmt_int64(d, ms_to_prec(p->time_ms, prec));
    *d++ = '\n';
    out->len = (size_t)(d - out->data);
    *d = '\0';
    return 0;
}

size_t ts_lp_series_key(const char *line, size_t len) {
    /* the first space not escaped: an odd run of backslashes before a space
     * escapes it (each backslash takes the next character along) */
    for (size_t i = 0;;) {
        const char *sp = memchr(line + i, ' ', len - i);
        if (!sp) return len;
        size_t j = (size_t)(sp - line), b = 0;
        while (b < j && line[j - 1 - b] == '\\') b++;
        if (b % 2 == 0) return j;
        i = j + 1;
    }
}
