/* test_lp: C unit test of the line protocol encoder (src/lp.c, C core).
 * Checks every "encode" vector of spec/fixtures/lp_vectors.json, shortest
 * round-trip float formatting and the compact (writer) encoder.
 *   test_lp           run the checks; exit 1 on any failure
 *   test_lp --emit    print "<id>\t<precision>\t<line>" per encodable vector
 *                     (input of spec/runtime/lp_roundtrip_spec.lua)
 *   test_lp --bench   time 1M compact points */
#include "ts_lp.h"
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#ifndef TS_SPEC_DIR
#define TS_SPEC_DIR "spec"
#endif

#include "check.h"

/* ---- loading the vectors ------------------------------------------------ */

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *s = malloc(cap);
    size_t n;
    while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *t = realloc(s, cap *= 2);
            if (!t) { free(s); s = NULL; }
            else s = t;
        }
    }
    fclose(f);
    if (s) s[len] = '\0';
    return s;
}

static yajl_val obj_get(yajl_val o, const char *key) {
    if (!YAJL_IS_OBJECT(o)) return NULL;
    for (size_t i = 0; i < o->u.object.len; i++)
        if (strcmp(o->u.object.keys[i], key) == 0) return o->u.object.values[i];
    return NULL;
}

/* A vector decoded into encoder inputs. Numbers are read from yajl's raw
 * text: its integer parse stops at LLONG_MAX and would lose uint64 max. */
typedef struct vec {
    const char *id;
    const char *meas;
    ts_tag tags[16];
    size_t ntags;
    ts_field fields[16];
    size_t nfields;
    int has_ts;
    int64_t ts_ns;
    ts_precision prec;
    const char *expect; /* NULL when an error is expected */
    const char *error;
    const char *note;
} vec;

static int load_vec(yajl_val v, vec *out, char *why, size_t whylen) {
    memset(out, 0, sizeof *out);
    out->id = YAJL_GET_STRING(obj_get(v, "id"));
    out->meas = YAJL_GET_STRING(obj_get(v, "measurement"));
    out->expect = YAJL_GET_STRING(obj_get(v, "expect"));
    out->error = YAJL_GET_STRING(obj_get(v, "error"));
    out->note = YAJL_GET_STRING(obj_get(v, "note"));
    if (!out->note) out->note = "";
    if (!out->id || !out->meas) { snprintf(why, whylen, "no id/measurement"); return -1; }
    if (!out->expect == !out->error) { snprintf(why, whylen, "need exactly one of expect/error"); return -1; }

    yajl_val tags = obj_get(v, "tags");
    if (tags && !YAJL_IS_OBJECT(tags)) { snprintf(why, whylen, "tags not an object"); return -1; }
    for (size_t i = 0; tags && i < tags->u.object.len; i++) {
        const char *val = YAJL_GET_STRING(tags->u.object.values[i]);
        if (!val || out->ntags == 16) { snprintf(why, whylen, "bad tag"); return -1; }
        ts_tag *t = &out->tags[out->ntags++];
        t->key = tags->u.object.keys[i];
        t->key_len = strlen(t->key);
        t->value = val;
        t->value_len = strlen(val);
    }

    yajl_val fields = obj_get(v, "fields");
    if (!YAJL_IS_OBJECT(fields)) { snprintf(why, whylen, "fields not an object"); return -1; }
    for (size_t i = 0; i < fields->u.object.len; i++) {
        yajl_val pair = fields->u.object.values[i];
        if (!YAJL_IS_ARRAY(pair) || pair->u.array.len != 2 || out->nfields == 16) {
            snprintf(why, whylen, "field %zu: want [type, value]", i);
            return -1;
        }
        const char *type = YAJL_GET_STRING(pair->u.array.values[0]);
        yajl_val val = pair->u.array.values[1];
        ts_field *f = &out->fields[out->nfields++];
        f->key = fields->u.object.keys[i];
        f->key_len = strlen(f->key);
        if (!type) { snprintf(why, whylen, "field type not a string"); return -1; }
        if (strcmp(type, "float") == 0) {
            f->type = TS_F_FLOAT;
            /* NaN and infinities are spelled as strings in JSON */
            const char *s = YAJL_IS_STRING(val) ? val->u.string
                          : YAJL_IS_NUMBER(val) ? YAJL_GET_NUMBER(val) : NULL;
            if (!s) { snprintf(why, whylen, "float value"); return -1; }
            char *end;
            f->v.f = strtod(s, &end);
            if (*end) { snprintf(why, whylen, "float value '%s'", s); return -1; }
        } else if (strcmp(type, "int") == 0 || strcmp(type, "uint") == 0) {
            if (!YAJL_IS_NUMBER(val)) { snprintf(why, whylen, "int value"); return -1; }
            char *end;
            if (type[0] == 'u') {
                f->type = TS_F_UINT;
                f->v.u = strtoull(YAJL_GET_NUMBER(val), &end, 10);
            } else {
                f->type = TS_F_INT;
                f->v.i = strtoll(YAJL_GET_NUMBER(val), &end, 10);
            }
            if (*end) { snprintf(why, whylen, "int value '%s'", YAJL_GET_NUMBER(val)); return -1; }
        } else if (strcmp(type, "bool") == 0) {
            if (!YAJL_IS_TRUE(val) && !YAJL_IS_FALSE(val)) { snprintf(why, whylen, "bool"); return -1; }
            f->type = TS_F_BOOL;
            f->v.b = YAJL_IS_TRUE(val);
        } else if (strcmp(type, "string") == 0) {
            if (!YAJL_IS_STRING(val)) { snprintf(why, whylen, "string"); return -1; }
            f->type = TS_F_STRING;
            f->v.str.s = val->u.string;
            f->v.str.len = strlen(val->u.string);
        } else {
            snprintf(why, whylen, "unknown field type '%s'", type);
            return -1;
        }
    }

    /* ts: null = none; an integer is already in the output unit, which with
     * precision ns means it is the ns value itself; {"ns":..,"precision":..}
     * asks for a conversion. */
    yajl_val ts = obj_get(v, "ts");
    out->prec = TS_PREC_NS;
    if (ts == NULL || YAJL_IS_NULL(ts)) {
        out->has_ts = 0;
    } else if (YAJL_IS_NUMBER(ts)) {
        char *end;
        out->has_ts = 1;
        out->ts_ns = strtoll(YAJL_GET_NUMBER(ts), &end, 10);
        if (*end) { snprintf(why, whylen, "ts not an integer"); return -1; }
    } else if (YAJL_IS_OBJECT(ts)) {
        yajl_val ns = obj_get(ts, "ns");
        const char *p = YAJL_GET_STRING(obj_get(ts, "precision"));
        char *end;
        if (!YAJL_IS_NUMBER(ns) || !p) { snprintf(why, whylen, "ts object"); return -1; }
        out->has_ts = 1;
        out->ts_ns = strtoll(YAJL_GET_NUMBER(ns), &end, 10);
        if (*end || ts_precision_parse(p, &out->prec) != 0) {
            snprintf(why, whylen, "ts object ns/precision");
            return -1;
        }
    } else {
        snprintf(why, whylen, "ts of unknown shape");
        return -1;
    }
    return 0;
}

/* The vectors quote the 1.x server's / Go client's error texts; ours are the
 * header's. Unknown texts fail so that a new vector gets a deliberate look. */
static const char *our_error(const char *theirs) {
    if (strstr(theirs, "without fields") || strcmp(theirs, "no fields") == 0) return "no fields";
    if (strstr(theirs, "non-empty names")) return "empty field key";
    if (strstr(theirs, "max key length")) return "key too long";
    if (strstr(theirs, "'time'")) return "reserved key 'time'";
    return NULL;
}

/* ---- float text checks --------------------------------------------------- */

/* The 1.x float grammar: -?digits[.digits][e[+-]digits] (no NaN/Inf). */
static int is_1x_float(const char *s) {
    const char *p = s;
    if (*p == '-') p++;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    return *p == '\0';
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Significant digits of a decimal text (leading zeros and, for the
 * mantissa, trailing zeros do not count). */
static int sig_digits(const char *s) {
    char d[40];
    int n = 0;
    for (const char *p = s; *p && *p != 'e' && *p != 'E'; p++)
        if (*p >= '0' && *p <= '9' && n < 39) d[n++] = *p;
    int a = 0;
    while (a < n && d[a] == '0') a++;
    while (n > a && d[n - 1] == '0') n--;
    return n - a;
}

/* Brute-force reference: fewest %.Ng digits that strtod back to v. */
static int ref_digits(double v) {
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, v);
        if (same_double(strtod(tmp, NULL), v)) return sig_digits(tmp);
    }
    return 17;
}

/* Returns 1 when the double's text is valid, round-trips bit for bit and is
 * no longer (in significant digits) than the brute-force shortest. */
static int check_double(double v, const char *label) {
    char out[32];
    memset(out, 'X', sizeof out);
    size_t n = ts_fmt_double(out, v);
    check_count++;
    if (n == 0 || n >= 32 || out[n] != '\0' || strlen(out) != n) {
        FAIL("fmt_double(%s): bad length/NUL (n=%zu)", label, n);
        return 0;
    }
    if (!is_1x_float(out)) { FAIL("fmt_double(%s) = '%s': not 1.x float syntax", label, out); return 0; }
    double back = strtod(out, NULL);
    if (!same_double(back, v)) {
        FAIL("fmt_double(%s) = '%s': parses back to %.17g", label, out, back);
        return 0;
    }
    int sd = sig_digits(out), rd = ref_digits(v);
    if (sd > rd) { FAIL("fmt_double(%s) = '%s': %d digits, shortest is %d", label, out, sd, rd); return 0; }
    return 1;
}

/* Compares an expected line with ours field by field, the field value by
 * parse-back (for vectors whose note allows any round-tripping text). The
 * float vectors have no escaped spaces, so splitting on ' ' is exact. */
static int parse_back_equal(const char *want, const char *got) {
    const char *ws = strchr(want, ' '), *gs = strchr(got, ' ');
    if (!ws || !gs || ws - want != gs - got || memcmp(want, got, (size_t)(ws - want)) != 0) return 0;
    ws++, gs++;
    const char *we = strchr(ws, ' '), *ge = strchr(gs, ' ');
    if (!we != !ge || (we && strcmp(we, ge) != 0)) return 0;
    size_t wl = we ? (size_t)(we - ws) : strlen(ws), gl = ge ? (size_t)(ge - gs) : strlen(gs);
    const char *weq = memchr(ws, '=', wl), *geq = memchr(gs, '=', gl);
    if (!weq || !geq || weq - ws != geq - gs || memcmp(ws, gs, (size_t)(weq - ws)) != 0) return 0;
    char wv[64], gv[64];
    size_t wvl = wl - (size_t)(weq + 1 - ws), gvl = gl - (size_t)(geq + 1 - gs);
    if (wvl >= sizeof wv || gvl >= sizeof gv) return 0;
    memcpy(wv, weq + 1, wvl), wv[wvl] = '\0';
    memcpy(gv, geq + 1, gvl), gv[gvl] = '\0';
    if (!is_1x_float(gv) || !is_1x_float(wv)) return 0;
    return same_double(strtod(wv, NULL), strtod(gv, NULL));
}

/* ---- the vector run ------------------------------------------------------ */

static void print_escaped(const char *s, size_t n) {
    /* One vector per output line: a raw newline (kept inside string fields)
     * and tabs are percent-encoded, and so is '%' to keep it reversible. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\t' || c == '%' || c == '\r') printf("%%%02X", c);
        else putchar(c);
    }
}

static int run_vectors(int emit) {
    char *path = TS_SPEC_DIR "/fixtures/lp_vectors.json";
    char *text = read_all(path);
    if (!text) { FAIL("cannot read %s", path); return 0; }
    char errbuf[256];
    yajl_val root = yajl_tree_parse(text, errbuf, sizeof errbuf);
    free(text);
    if (!YAJL_IS_ARRAY(root)) { FAIL("%s: %s", path, root ? "not an array" : errbuf); yajl_tree_free(root); return 0; }

    int nenc = 0, npass = 0;
    ts_buf out;
    ts_buf_init(&out);
    for (size_t i = 0; i < root->u.array.len; i++) {
        yajl_val v = root->u.array.values[i];
        const char *kind = YAJL_GET_STRING(obj_get(v, "kind"));
        if (!kind || strcmp(kind, "encode") != 0) continue;
        nenc++;
        vec t;
        char why[128];
        if (load_vec(v, &t, why, sizeof why) != 0) {
            FAIL("vector #%zu %s: cannot load: %s", i, t.id ? t.id : "?", why);
            continue;
        }
        /* A prefix proves the encoder appends, and on error leaves len alone. */
        ts_buf_reset(&out);
        ts_buf_adds(&out, "PREFIX|");
        const char *err = NULL;
        int rc = ts_lp_encode(&out, t.meas, strlen(t.meas), t.tags, t.ntags, t.fields, t.nfields,
                              t.has_ts, t.ts_ns, t.prec, &err);
        const char *got = out.data + 7;
        int ok = 1;
        check_count++;
        if (memcmp(out.data, "PREFIX|", 7) != 0) {
            FAIL("%s: prefix overwritten", t.id);
            ok = 0;
        } else if (t.error) {
            const char *want = our_error(t.error);
            if (!want) { FAIL("%s: no mapping for error text '%s'", t.id, t.error); ok = 0; }
            else if (rc != -1) { FAIL("%s: want error '%s', got line '%s'", t.id, want, got); ok = 0; }
            else if (!err || strcmp(err, want) != 0) { FAIL("%s: want error '%s', got '%s'", t.id, want, err ? err : "(null)"); ok = 0; }
            else if (out.len != 7) { FAIL("%s: error left %zu bytes behind", t.id, out.len - 7); ok = 0; }
        } else if (rc != 0) {
            FAIL("%s: unexpected error '%s'", t.id, err ? err : "(null)");
            ok = 0;
        } else if (strcmp(got, t.expect) != 0) {
            int lenient = strstr(t.note, "parses back") || strstr(t.note, "parse-back");
            if (!lenient || !parse_back_equal(t.expect, got)) {
                FAIL("%s: want '%s' got '%s'", t.id, t.expect, got);
                ok = 0;
            }
        }
        if (ok) npass++;
        if (emit && rc == 0) {
            printf("%s\t%s\t", t.id, t.has_ts ? ts_precision_name(t.prec) : "-");
            print_escaped(got, out.len - 7);
            putchar('\n');
        }
    }
    ts_buf_free(&out);
    yajl_tree_free(root);
    if (!emit) printf("vectors: %d encode vectors, %d passed\n", nenc, npass);
    CHECK(nenc > 30, "only %d encode vectors found", nenc);
    return nenc;
}

/* Extra lines for the runtime spec: tricky doubles as the server must take
 * them (exponent forms, subnormals, -0). The id carries the value. */
static const double tricky[] = {
    0.1, 1.0 / 3, 5e-324, 1.7976931348623157e308, -0.0, 9007199254740992.0,
    9007199254740994.0, 123456789012345680000.0, 26220072200.0, 1e21, 1e-5,
    2.2250738585072014e-308, -123.456, 0.30000000000000004, 1e15, 4.35, 1e-7,
};

static void emit_tricky(void) {
    ts_buf out;
    ts_buf_init(&out);
    for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++) {
        ts_field f = {.key = "value", .key_len = 5, .type = TS_F_FLOAT, .v.f = tricky[i]};
        ts_buf_reset(&out);
        const char *err;
        if (ts_lp_encode(&out, "fmt", 3, NULL, 0, &f, 1, 1, (int64_t)i + 1, TS_PREC_NS, &err) == 0)
            printf("fmt:%.17g\tns\t%s\n", tricky[i], out.data);
    }
    ts_buf_free(&out);
}

/* ---- ts_fmt_double / ts_fmt_int64 --------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) { /* xorshift64*: reproducible, no libc rand() */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void test_fmt(void) {
    struct { double v; const char *label; const char *exact; } cases[] = {
        {0.1, "0.1", "0.1"},
        {1.0 / 3, "1/3", NULL},
        {5e-324, "5e-324", NULL},
        {1.7976931348623157e308, "DBL_MAX", NULL},
        {-0.0, "-0.0", "-0"},
        {0.0, "0.0", "0"},
        {9007199254740992.0, "2^53", "9007199254740992"},
        {9007199254740994.0, "2^53+2", "9007199254740994"},
        {123456789012345680000.0, "123456789012345680000", NULL},
        {26220072200.0, "26220072200", "26220072200"},
        {2.62200722e+10, "2.62200722e+10", "26220072200"},
        {1e21, "1e21", NULL},
        {0.30000000000000004, "0.30000000000000004", "0.30000000000000004"},
        {-2.5, "-2.5", "-2.5"},
        {1e-4, "1e-4", "0.0001"},
        {1.5e-10, "1.5e-10", NULL},
        {DBL_MIN, "DBL_MIN", NULL},
        {4.35, "4.35", "4.35"},
        {100.125, "100.125", "100.125"},
        {9007199254740991.0, "2^53-1", "9007199254740991"},
        {-9007199254740991.0, "-(2^53-1)", "-9007199254740991"},
        {4503599627370495.5, "2^52-0.5", NULL},
        {0.1 + 0.2, "0.1+0.2", "0.30000000000000004"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!check_double(cases[i].v, cases[i].label)) continue;
        char out[32];
        ts_fmt_double(out, cases[i].v);
        if (cases[i].exact) CHECK(strcmp(out, cases[i].exact) == 0, "fmt_double(%s) = '%s', want '%s'",
                                  cases[i].label, out, cases[i].exact);
    }
    /* -0 must keep its sign bit (checked bitwise by check_double). */

    /* Random bit patterns cover every exponent; random decimals with few
     * places exercise the fast decimal path the TM values take. */
    int bad = 0;
    for (int i = 0; i < 200000 && bad < 10; i++) {
        uint64_t bits = rng();
        double v;
        memcpy(&v, &bits, sizeof v);
        if (!isfinite(v)) continue;
        char label[40];
        snprintf(label, sizeof label, "bits %016" PRIx64, bits);
        if (!check_double(v, label)) bad++;
    }
    for (int i = 0; i < 200000 && bad < 10; i++) {
        static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
        double v = (double)(int64_t)(rng() % 100000000000ULL) / p10[rng() % 9];
        if (rng() & 1) v = -v;
        char label[40];
        snprintf(label, sizeof label, "%.17g", v);
        if (!check_double(v, label)) bad++;
    }

    char nb[32];
    ts_fmt_double(nb, NAN);
    CHECK(!is_1x_float(nb), "NaN formatted as a number: '%s'", nb);
    ts_fmt_double(nb, INFINITY);
    CHECK(!is_1x_float(nb), "Inf formatted as a number: '%s'", nb);

    struct { int64_t v; const char *s; } ints[] = {
        {0, "0"}, {7, "7"}, {-7, "-7"}, {10, "10"}, {99, "99"}, {100, "100"},
        {INT64_MAX, "9223372036854775807"}, {INT64_MIN, "-9223372036854775808"},
        {1700000000123LL, "1700000000123"},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        char o[24];
        size_t n = ts_fmt_int64(o, ints[i].v);
        CHECK(n == strlen(ints[i].s) && strcmp(o, ints[i].s) == 0, "fmt_int64: '%s' want '%s'", o, ints[i].s);
    }
}

/* ---- generic encoder details not covered by the vectors ----------------- */

static void expect_line(const char *label, ts_tag *tags, size_t nt, const ts_field *f, size_t nf,
                        const char *meas, int has_ts, int64_t ns, ts_precision p, const char *want) {
    ts_buf b;
    ts_buf_init(&b);
    const char *err = NULL;
    int rc = ts_lp_encode(&b, meas, strlen(meas), tags, nt, f, nf, has_ts, ns, p, &err);
    if (want) {
        CHECK(rc == 0 && strcmp(b.data, want) == 0, "%s: want '%s' got '%s' (%s)", label, want,
              rc == 0 ? b.data : "", rc ? err : "ok");
    } else {
        CHECK(rc == -1 && b.len == 0, "%s: want an error, got '%s'", label, b.data ? b.data : "");
    }
    ts_buf_free(&b);
}

static void test_encode_extra(void) {
    ts_field one = {.key = "v", .key_len = 1, .type = TS_F_INT, .v.i = 1};
    /* Byte order, not locale order: 'Z' < 'a', "a" < "ab". */
    ts_tag t1[] = {{"b", 1, "1", 1}, {"ab", 2, "2", 1}, {"a", 1, "3", 1}, {"Z", 1, "4", 1}};
    expect_line("tag order", t1, 4, &one, 1, "m", 0, 0, TS_PREC_NS, "m,Z=4,a=3,ab=2,b=1 v=1i");
    ts_tag t2[20];
    char keys[20][4];
    for (int i = 0; i < 20; i++) {
        snprintf(keys[i], sizeof keys[i], "k%02d", 19 - i);
        t2[i] = (ts_tag){keys[i], 3, "x", 1};
    }
    ts_buf b;
    ts_buf_init(&b);
    const char *err;
    CHECK(ts_lp_encode(&b, "m", 1, t2, 20, &one, 1, 0, 0, TS_PREC_NS, &err) == 0, "20 tags");
    CHECK(b.data && strncmp(b.data, "m,k00=x,k01=x,k02=x", 19) == 0, "20 tags sorted (qsort path): %s", b.data);
    ts_buf_free(&b);
    /* a backslash before an escaped byte stays, and 1.x reads it back */
    ts_tag t3[] = {{"k", 1, "a\\ b", 4}};
    expect_line("backslash-space", t3, 1, &one, 1, "m", 0, 0, TS_PREC_NS, "m,k=a\\\\ b v=1i");
    ts_tag t4[] = {{"\\", 1, "x", 1}};
    expect_line("tag key only backslash", t4, 1, &one, 1, "m", 0, 0, TS_PREC_NS, NULL);
    ts_tag t5[] = {{"", 0, "x", 1}};
    expect_line("empty tag key", t5, 1, &one, 1, "m", 0, 0, TS_PREC_NS, NULL);
    expect_line("empty measurement", NULL, 0, &one, 1, "", 0, 0, TS_PREC_NS, NULL);
    expect_line("measurement trailing backslash", NULL, 0, &one, 1, "cpu\\", 0, 0, TS_PREC_NS, "cpu v=1i");
    ts_field fk = {.key = "v\\", .key_len = 2, .type = TS_F_INT, .v.i = 1};
    expect_line("field key trailing backslash", NULL, 0, &fk, 1, "m", 0, 0, TS_PREC_NS, "m v=1i");
    ts_field mixed[] = {
        {.key = "a", .key_len = 1, .type = TS_F_FLOAT, .v.f = -INFINITY},
        {.key = "b", .key_len = 1, .type = TS_F_BOOL, .v.b = 0},
        {.key = "c", .key_len = 1, .type = TS_F_UINT, .v.u = 42},
        {.key = "d", .key_len = 1, .type = TS_F_STRING, .v.str = {"", 0}},
        {.key = "e", .key_len = 1, .type = TS_F_FLOAT, .v.f = 0.5},
    };
    expect_line("mixed fields", NULL, 0, mixed, 5, "m", 1, 1500, TS_PREC_US, "m b=false,c=42i,d=\"\",e=0.5 1");
    /* Go truncates toward zero; so do we, also below zero. */
    expect_line("negative ts to ms", NULL, 0, &one, 1, "m", 1, -1500000, TS_PREC_MS, "m v=1i -1");
    expect_line("negative ts to s", NULL, 0, &one, 1, "m", 1, -1, TS_PREC_S, "m v=1i 0");
    /* a series key of exactly 65535 bytes is fine, one more is not */
    char *big = malloc(65536);
    memset(big, 'a', 65536);
    ts_buf_init(&b);
    CHECK(ts_lp_encode(&b, big, 65535, NULL, 0, &one, 1, 0, 0, TS_PREC_NS, &err) == 0, "65535-byte key refused");
    ts_buf_reset(&b);
    ts_tag tb[] = {{"k", 1, big, 65531}}; /* "m,k=" + 65531 = 65535 */
    CHECK(ts_lp_encode(&b, "m", 1, tb, 1, &one, 1, 0, 0, TS_PREC_NS, &err) == 0, "65535-byte series key refused");
    ts_buf_reset(&b);
    tb[0].value_len = 65532;
    CHECK(ts_lp_encode(&b, "m", 1, tb, 1, &one, 1, 0, 0, TS_PREC_NS, &err) == -1 && strcmp(err, "key too long") == 0,
          "65536-byte series key accepted");
    ts_buf_free(&b);
    free(big);

    /* escape helpers on their own */
    ts_buf_init(&b);
    ts_lp_escape_measurement(&b, "a,b c=d\ne", 9);
    CHECK(strcmp(b.data, "a\\,b\\ c=d\\ne") == 0, "escape_measurement: %s", b.data);
    ts_buf_reset(&b);
    ts_lp_escape_tag(&b, "a,b c=d\\\\", 9);
    CHECK(strcmp(b.data, "a\\,b\\ c\\=d") == 0, "escape_tag: %s", b.data);
    ts_buf_reset(&b);
    ts_lp_escape_field_key(&b, "a\"b=c", 5);
    CHECK(strcmp(b.data, "a\\\"b\\=c") == 0, "escape_field_key: %s", b.data);
    ts_buf_reset(&b);
    ts_lp_escape_string_value(&b, "a\"b\\c\nd", 7);
    CHECK(strcmp(b.data, "a\\\"b\\\\c\nd") == 0, "escape_string_value: %s", b.data);
    ts_buf_free(&b);

    ts_precision p;
    const char *names[] = {"ns", "u", "ms", "s", "m", "h"};
    for (int i = 0; i < 6; i++)
        CHECK(ts_precision_parse(names[i], &p) == 0 && p == (ts_precision)i &&
              strcmp(ts_precision_name(p), names[i]) == 0, "precision %s", names[i]);
    CHECK(ts_precision_parse("d", &p) == -1 && ts_precision_parse(NULL, &p) == -1, "bad precision accepted");
}

/* ---- compact points ------------------------------------------------------ */

static ts_etag et(const char *key, const char *kv) { return (ts_etag){key, kv, (uint32_t)strlen(kv)}; }

static void test_compact(void) {
    ts_etag st_tags[] = {et("cachegroup", "cachegroup=total"), et("type", "type=EDGE")};
    ts_etag en_tags[] = {et("a", "a=1"), et("hostname", "hostname=edge\\ 1"), et("type", "type=MID"),
                         et("z", "z=9")};
    ts_stat_map st = {.meas = "bandwidth", .meas_len = 9, .field = "value", .field_len = 5,
                      .tags = {st_tags, 2}, .scale = 1.0, .keep = 1, .hook_ref = -2, .as_int = 0};
    ts_entity_map en = {.tags = {en_tags, 4}, .keep = 1};
    ts_cpoint p = {&st, &en, 12.5, 1700000000123LL};
    ts_buf b;
    ts_buf_init(&b);

#define COMPACT(prec, want) do { \
        ts_buf_reset(&b); \
        int rc_ = ts_lp_encode_compact(&b, &p, prec); \
        CHECK(rc_ == 0 && strcmp(b.data, want) == 0, "compact line %d: want '%s' got '%s'", __LINE__, \
              want, rc_ == 0 ? b.data : "(error)"); \
    } while (0)

    /* merge in key order; on a shared key ("type") the stat's tag wins */
    COMPACT(TS_PREC_MS, "bandwidth,a=1,cachegroup=total,hostname=edge\\ 1,type=EDGE,z=9 value=12.5 1700000000123\n");
    COMPACT(TS_PREC_S, "bandwidth,a=1,cachegroup=total,hostname=edge\\ 1,type=EDGE,z=9 value=12.5 1700000000\n");
    COMPACT(TS_PREC_M, "bandwidth,a=1,cachegroup=total,hostname=edge\\ 1,type=EDGE,z=9 value=12.5 28333333\n");
    COMPACT(TS_PREC_H, "bandwidth,a=1,cachegroup=total,hostname=edge\\ 1,type=EDGE,z=9 value=12.5 472222\n");
    COMPACT(TS_PREC_NS, "bandwidth,a=1,cachegroup=total,hostname=edge\\ 1,type=EDGE,z=9 value=12.5 1700000000123000000\n");

    /* no tags at all, and a NULL entity */
    st.tags.n = 0;
    p.ent = NULL;
    COMPACT(TS_PREC_MS, "bandwidth value=12.5 1700000000123\n");
    st.tags.n = 2;
    en.tags.n = 0;
    p.ent = &en;
    COMPACT(TS_PREC_MS, "bandwidth,cachegroup=total,type=EDGE value=12.5 1700000000123\n");
    st.tags.n = 0;
    en.tags.n = 4;
    COMPACT(TS_PREC_MS, "bandwidth,a=1,hostname=edge\\ 1,type=MID,z=9 value=12.5 1700000000123\n");
    en.tags.n = 0;

    /* scale: kbps -> Gbps style factors must format like the product */
    st.scale = 0.008;
    p.value = 1234567;
    char want[128], num[32];
    ts_fmt_double(num, 1234567 * 0.008);
    snprintf(want, sizeof want, "bandwidth value=%s 1700000000123\n", num);
    COMPACT(TS_PREC_MS, want);
    CHECK(strtod(num, NULL) == 1234567 * 0.008, "scaled value lost: %s", num);
    st.scale = 1.0;

    /* as_int rounds half away from zero (llround) and writes 'i' */
    st.as_int = 1;
    p.value = 2.5;
    COMPACT(TS_PREC_MS, "bandwidth value=3i 1700000000123\n");
    p.value = -2.5;
    COMPACT(TS_PREC_MS, "bandwidth value=-3i 1700000000123\n");
    p.value = 1e30;
    COMPACT(TS_PREC_MS, "bandwidth value=9223372036854775807i 1700000000123\n");
    st.scale = 1000;
    p.value = 1.2345;
    COMPACT(TS_PREC_MS, "bandwidth value=1235i 1700000000123\n");
    st.scale = 1.0;
    st.as_int = 0;

    /* integral and big values keep every digit */
    p.value = 26220072200.0;
    COMPACT(TS_PREC_MS, "bandwidth value=26220072200 1700000000123\n");

    /* NaN / Inf (also when produced by the scale) append nothing */
    ts_buf_reset(&b);
    ts_buf_adds(&b, "keep\n");
    double bad[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        p.value = bad[i];
        CHECK(ts_lp_encode_compact(&b, &p, TS_PREC_MS) == -1 && b.len == 5, "non-finite %d written", i);
    }
    st.scale = 10;
    p.value = DBL_MAX;
    CHECK(ts_lp_encode_compact(&b, &p, TS_PREC_MS) == -1 && b.len == 5, "overflowing scale written");
    CHECK(strcmp(b.data, "keep\n") == 0, "buffer changed by a skipped point: %s", b.data);
    st.scale = 1.0;

    /* appends: many points in a row form a valid batch */
    ts_buf_reset(&b);
    p.value = 1;
    for (int i = 0; i < 1000; i++) {
        p.time_ms = i;
        ts_lp_encode_compact(&b, &p, TS_PREC_MS);
    }
    size_t lines = 0;
    for (size_t i = 0; i < b.len; i++) lines += b.data[i] == '\n';
    const char *last = "bandwidth value=1 999\n";
    CHECK(lines == 1000 && b.len >= strlen(last) && strcmp(b.data + b.len - strlen(last), last) == 0,
          "batch of 1000: %zu lines", lines);
    ts_buf_free(&b);
#undef COMPACT
}

/* ---- timing --------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Shaped like a cache_stats poll: three entity tags, one stat tag-free,
 * values a mix of integral counters and fractional rates. */
static int bench(void) {
    enum { N = 1000000, NENT = 1000, BATCH = 10000 };
    ts_stat_map st = {.meas = "bandwidth", .meas_len = 9, .field = "value", .field_len = 5,
                      .scale = 1.0, .keep = 1, .hook_ref = -2};
    static ts_entity_map ents[NENT];
    static ts_etag etags[NENT][3];
    static char kvs[NENT][3][48];
    for (int i = 0; i < NENT; i++) {
        snprintf(kvs[i][0], 48, "cachegroup=cg-%d", i % 20);
        snprintf(kvs[i][1], 48, "hostname=edge-%04d", i);
        snprintf(kvs[i][2], 48, "type=EDGE");
        etags[i][0] = et("cachegroup", kvs[i][0]);
        etags[i][1] = et("hostname", kvs[i][1]);
        etags[i][2] = et("type", kvs[i][2]);
        ents[i].tags = (ts_tagset){etags[i], 3};
        ents[i].keep = 1;
    }
    static double vals[4096];
    for (int i = 0; i < 4096; i++) {
        uint64_t r = rng();
        vals[i] = (i & 1) ? (double)(r % 100000000000ULL)          /* counters */
                          : (double)(r % 10000000) / 1000.0;        /* rates with 3 decimals */
    }
    ts_buf b;
    ts_buf_init(&b);
    ts_buf_reserve(&b, BATCH * 128);
    size_t bytes = 0;
    ts_cpoint p = {&st, NULL, 0, 1700000000000LL};
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        if (b.len > (size_t)BATCH * 100) { bytes += b.len; ts_buf_reset(&b); }
        p.ent = &ents[i % NENT];
        p.value = vals[i & 4095];
        p.time_ms = 1700000000000LL + (i / NENT) * 1000;
        ts_lp_encode_compact(&b, &p, TS_PREC_MS);
    }
    double t1 = now_s();
    bytes += b.len;
    printf("compact: %d points in %.3f s: %.1f ns/point, %.1f MB/s, %.1f bytes/line\n", N, t1 - t0,
           (t1 - t0) * 1e9 / N, bytes / (t1 - t0) / 1e6, (double)bytes / N);

    /* the float formatter alone, per value class */
    const char *cls[] = {"integral", "3-decimal", "random-bits", "ratio"};
    for (int c = 0; c < 4; c++) {
        static double in[4096];
        for (int i = 0; i < 4096; i++) {
            uint64_t r = rng();
            if (c == 0) in[i] = (double)(r % 100000000000ULL);
            else if (c == 1) in[i] = (double)(r % 10000000) / 1000.0;
            else if (c == 2) { do { r = rng(); memcpy(&in[i], &r, 8); } while (!isfinite(in[i])); }
            else in[i] = (double)(r % 1000000) / (double)(1 + rng() % 997); /* e.g. bytes / seconds */
        }
        char out[32];
        size_t sink = 0;
        int n = c >= 2 ? 200000 : N;
        double a = now_s();
        for (int i = 0; i < n; i++) sink += ts_fmt_double(out, in[i & 4095]);
        double z = now_s();
        printf("fmt_double %-11s: %.1f ns/value (avg %.1f chars)\n", cls[c], (z - a) * 1e9 / n, (double)sink / n);
    }
    ts_buf_free(&b);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench();
    if (argc > 1 && strcmp(argv[1], "--emit") == 0) {
        run_vectors(1);
        emit_tricky();
        if (check_failures) fprintf(stderr, "test_lp --emit: %d vector failures\n", check_failures);
        return check_failures ? 1 : 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: test_lp [--emit | --bench]\n");
        return 2;
    }
    run_vectors(0);
    test_fmt();
    test_encode_extra();
    test_compact();
    return check_report("test_lp");
}
