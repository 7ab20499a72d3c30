/* libFuzzer driver for the line-protocol encoder (src/lp.c, included here;
 * C core side, built by hand with clang, see README.md). The input is cut
 * into a point: measurement, up to 8 tags, up to 4 typed fields, a time and
 * a precision. Two oracles:
 *  1. a parser written here with the 1.x rules (a separator counts unless the
 *     byte before it is '\'; "\X" unescapes X only where X is escaped) must
 *     give back every element as the encoder promises in ts_lp.h (tags sorted,
 *     empty values dropped, trailing backslashes trimmed, a newline as the two
 *     characters "\n", floats that strtod back to the same double), and no
 *     output ever holds a raw newline outside a string field;
 *  2. the compact encoder (the writer's hot path) must write byte for byte
 *     what the generic encoder writes for the same point. */
#include "../../src/buf.c"
#include "../../src/lp.c"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rd { const uint8_t *p; size_t n; } rd;

static unsigned rbyte(rd *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

/* A string of length given by the next byte (mod 24), taken from the input. */
static void rstr(rd *r, const char **s, size_t *len) {
    size_t want = rbyte(r) % 24;
    if (want > r->n) want = r->n;
    *s = (const char *)r->p;
    *len = want;
    r->p += want;
    r->n -= want;
}

static void expect_text(ts_buf *b, const char *s, size_t n) {
    /* what a 1.x reader gets back for a key or tag value */
    n = trim_backslashes(s, n);
    ts_buf_reset(b);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') ts_buf_add(b, "\\n", 2);
        else ts_buf_addc(b, s[i]);
    }
}

/* Reads one element up to an unescaped byte of `stops`; unescapes bytes of
 * `escaped`. Returns the position of the stop byte (or the end). */
static size_t take(const char *l, size_t i, size_t n, const char *stops, const char *escaped, ts_buf *out) {
    ts_buf_reset(out);
    ts_buf_add(out, "", 0);
    for (; i < n; i++) {
        char c = l[i];
        if (strchr(stops, c) && c != '\0' && !(i > 0 && l[i - 1] == '\\')) break;
        if (c == '\\' && i + 1 < n && strchr(escaped, l[i + 1]) && l[i + 1] != '\0') {
            ts_buf_addc(out, l[i + 1]);
            i++;
            continue;
        }
        ts_buf_addc(out, c);
    }
    return i;
}

static int same(const ts_buf *a, const ts_buf *b) { return a->len == b->len && memcmp(a->data, b->data, a->len) == 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rd r = {data, size};
    const char *meas;
    size_t mlen;
    rstr(&r, &meas, &mlen);
    size_t ntags = rbyte(&r) % 9, nfields = 1 + rbyte(&r) % 4;
    ts_tag tags[8], sorted[8];
    for (size_t i = 0; i < ntags; i++) {
        rstr(&r, &tags[i].key, &tags[i].key_len);
        rstr(&r, &tags[i].value, &tags[i].value_len);
    }
    ts_field f[4];
    for (size_t i = 0; i < nfields; i++) {
        rstr(&r, &f[i].key, &f[i].key_len);
        unsigned t = rbyte(&r) % 5;
        f[i].type = (ts_field_type)t;
        uint64_t bits = 0;
        for (int k = 0; k < 8; k++) bits = bits << 8 | rbyte(&r);
        switch (f[i].type) {
        case TS_F_FLOAT: memcpy(&f[i].v.f, &bits, 8); break;
        case TS_F_INT: f[i].v.i = (int64_t)bits; break;
        case TS_F_UINT: f[i].v.u = bits; break;
        case TS_F_BOOL: f[i].v.b = (int)(bits & 1); break;
        default: rstr(&r, &f[i].v.str.s, &f[i].v.str.len); break;
        }
    }
    int64_t ms = 0;
    for (int k = 0; k < 6; k++) ms = ms << 8 | rbyte(&r);
    ms = (ms & (((int64_t)1 << 43) - 1)) - ((int64_t)1 << 42);   /* +-4.4e12 ms: ms * 1e6 fits int64 */
    ts_precision prec = (ts_precision)(TS_PREC_MS + rbyte(&r) % 4);   /* MS S M H: what compact points allow */

    memcpy(sorted, tags, sizeof tags);
    ts_buf out, want, got;
    ts_buf_init(&out);
    ts_buf_init(&want);
    ts_buf_init(&got);
    ts_buf_adds(&out, "prefix");
    const char *err = NULL;
    int rc = ts_lp_encode(&out, meas, mlen, sorted, ntags, f, nfields, 1, ms * 1000000, prec, &err);
    if (rc != 0) {
        if (!err || out.len != 6 || memcmp(out.data, "prefix", 6) != 0) abort();   /* no partial output */
        /* refused only for the documented reasons, and each really holds */
        int why = 0;
        if (trim_backslashes(meas, mlen) == 0) why = 1;
        for (size_t i = 0; i < ntags; i++)
            if (trim_backslashes(tags[i].key, tags[i].key_len) == 0 || is_time_key(tags[i].key, tags[i].key_len))
                why = 1;
        size_t usable = 0;
        for (size_t i = 0; i < nfields; i++) {
            if (f[i].type == TS_F_FLOAT && !isfinite(f[i].v.f)) continue;
            usable++;
            if (trim_backslashes(f[i].key, f[i].key_len) == 0 || is_time_key(f[i].key, f[i].key_len)) why = 1;
        }
        if (usable == 0) why = 1;
        if (!why) abort();
        goto done;
    }
    const char *l = out.data + 6;
    size_t n = out.len - 6;
    /* 1. parse it back */
    size_t i = take(l, 0, n, ", ", ", ", &got);
    expect_text(&want, meas, mlen);
    if (!same(&got, &want)) abort();
    size_t ti = 0;
    for (size_t k = 0; k < ntags; k++) {
        const ts_tag *t = &sorted[k];
        if (trim_backslashes(t->value, t->value_len) == 0) continue;   /* dropped */
        if (ti++, i >= n || l[i] != ',') abort();
        i = take(l, i + 1, n, "=", ",= ", &got);
        expect_text(&want, t->key, t->key_len);
        if (!same(&got, &want) || i >= n) abort();
        i = take(l, i + 1, n, ", ", ",= ", &got);
        expect_text(&want, t->value, t->value_len);
        if (!same(&got, &want)) abort();
        if (k > 0 && key_cmp(sorted[k - 1].key, sorted[k - 1].key_len, t->key, t->key_len) > 0) abort();
    }
    if (i >= n || l[i] != ' ') abort();
    size_t fi = 0;
    for (size_t k = 0; k < nfields; k++) {
        const ts_field *x = &f[k];
        if (x->type == TS_F_FLOAT && !isfinite(x->v.f)) continue;
        if (i >= n || l[i] != (fi++ ? ',' : ' ')) abort();
        i = take(l, i + 1, n, "=", ",= \"", &got);
        expect_text(&want, x->key, x->key_len);
        if (!same(&got, &want) || i >= n) abort();
        i++;
        if (x->type == TS_F_STRING) {
            if (i >= n || l[i] != '"') abort();
            ts_buf_reset(&got);
            ts_buf_add(&got, "", 0);
            for (i++; i < n && l[i] != '"'; i++) {
                if (l[i] == '\\' && i + 1 < n && (l[i + 1] == '"' || l[i + 1] == '\\')) i++;
                ts_buf_addc(&got, l[i]);
            }
            if (i >= n) abort();
            i++;
            if (got.len != x->v.str.len || memcmp(got.data, x->v.str.s, got.len) != 0) abort();
            continue;
        }
        size_t j = i;
        while (j < n && l[j] != ',' && l[j] != ' ') j++;
        char num[64];
        if (j - i >= sizeof num || j == i) abort();
        memcpy(num, l + i, j - i);
        num[j - i] = '\0';
        i = j;
        char *end;
        if (x->type == TS_F_FLOAT) {
            double v = strtod(num, &end);
            if (*end || v != x->v.f || strchr(num, 'i')) abort();
        } else if (x->type == TS_F_INT || x->type == TS_F_UINT) {
            size_t L = strlen(num);
            if (num[L - 1] != 'i') abort();
            num[L - 1] = '\0';
            errno = 0;
            long long v = strtoll(num, &end, 10);
            long long expect = x->type == TS_F_INT ? x->v.i
                               : x->v.u > (uint64_t)INT64_MAX ? INT64_MAX : (long long)x->v.u;
            if (*end || errno || v != expect) abort();
        } else if (strcmp(num, x->v.b ? "true" : "false") != 0)
            abort();
    }
    if (i >= n || l[i] != ' ') abort();
    {
        char *end;
        long long t = strtoll(l + i + 1, &end, 10);
        if (end != l + n || t != ns_to_prec(ms * 1000000, prec)) abort();
    }
    /* no raw newline outside string fields: one point is one line */
    for (size_t k = 0; k < nfields; k++)
        if (f[k].type == TS_F_STRING && memchr(f[k].v.str.s, '\n', f[k].v.str.len)) goto done;
    if (memchr(l, '\n', n)) abort();

    /* 2. the compact encoder, for a point it can express: one float or
     * integer field, distinct tag keys without NUL, no empty tag values */
    if (nfields == 1 && (f[0].type == TS_F_FLOAT || f[0].type == TS_F_INT) && ti == ntags) {
        for (size_t k = 0; k < ntags; k++) {
            if (memchr(sorted[k].key, '\0', sorted[k].key_len)) goto done;
            if (k > 0 && key_cmp(sorted[k - 1].key, sorted[k - 1].key_len, sorted[k].key, sorted[k].key_len) == 0)
                goto done;
        }
        /* the stat map takes the odd-numbered sorted tags, the entity the rest */
        ts_buf store[8];
        char keys[8][32];
        ts_etag st_tags[8], en_tags[8];
        uint32_t nst = 0, nen = 0;
        for (size_t k = 0; k < ntags; k++) {
            ts_buf_init(&store[k]);
            ts_lp_escape_tag(&store[k], sorted[k].key, sorted[k].key_len);
            ts_buf_addc(&store[k], '=');
            ts_lp_escape_tag(&store[k], sorted[k].value, sorted[k].value_len);
            memcpy(keys[k], sorted[k].key, sorted[k].key_len);
            keys[k][sorted[k].key_len] = '\0';
            ts_etag e = {keys[k], store[k].data, (uint32_t)store[k].len};
            if (k % 2) st_tags[nst++] = e;
            else en_tags[nen++] = e;
        }
        ts_buf em, ef;
        ts_buf_init(&em);
        ts_buf_init(&ef);
        ts_lp_escape_measurement(&em, meas, mlen);
        ts_lp_escape_field_key(&ef, f[0].key, f[0].key_len);
        int as_int = f[0].type == TS_F_INT;
        double v = as_int ? (double)f[0].v.i : f[0].v.f;
        /* an integer that a double cannot hold would round differently; INT64_MAX rounds
         * to 2^63, outside int64, where the cast back is undefined */
        if (!as_int || (v < 9223372036854775808.0 && (double)(int64_t)v == v)) {
            ts_stat_map sm = {.meas = em.data, .meas_len = (uint32_t)em.len, .field = ef.data,
                              .field_len = (uint32_t)ef.len, .tags = {st_tags, nst}, .scale = 1.0, .keep = 1,
                              .hook_ref = -2, .as_int = as_int};
            ts_entity_map en = {.tags = {en_tags, nen}, .keep = 1};
            ts_cpoint cp = {&sm, &en, v, ms};
            ts_buf cb, gb;
            ts_buf_init(&cb);
            ts_buf_init(&gb);
            if (ts_lp_encode_compact(&cb, &cp, prec) != 0) abort();
            ts_field g1 = f[0];
            if (as_int) g1.v.i = (int64_t)v;
            memcpy(sorted, tags, sizeof tags);
            if (ts_lp_encode(&gb, meas, mlen, sorted, ntags, &g1, 1, 1, ms * 1000000, prec, &err) != 0) abort();
            ts_buf_addc(&gb, '\n');
            if (cb.len != gb.len || memcmp(cb.data, gb.data, cb.len) != 0) abort();
            ts_buf_free(&cb);
            ts_buf_free(&gb);
        }
        for (size_t k = 0; k < ntags; k++) ts_buf_free(&store[k]);
        ts_buf_free(&em);
        ts_buf_free(&ef);
    }
done:
    ts_buf_free(&out);
    ts_buf_free(&want);
    ts_buf_free(&got);
    return 0;
}
