/* tstats-sim number, string and date formatting (C, test side).
 * Values must look exactly like Traffic Monitor's: Go fmt "%v" of int64 and
 * float64 (shortest round-trip %g, exponent form when exp < -4 or >= 6). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "sim.h"

size_t ts_sim_fmt_i64(char *out, int64_t v) {
    char tmp[24];
    size_t n = 0, o = 0;
    /* Work on the unsigned magnitude so INT64_MIN does not overflow. */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[o++] = '-';
    while (n) out[o++] = tmp[--n];
    out[o] = '\0';
    return o;
}

/* Shortest decimal digits of v (> 0, finite): fills dig (no dot, no zeros at
 * the end), returns the count and sets *exp10 so that v = 0.d1d2.. * 10^(exp10+1). */
static int shortest_digits(double v, char *dig, int *exp10) {
    int nd = 0;
    if (v == floor(v) && v < 9007199254740992.0) {
        /* Integers below 2^53 are exact: their own digits round-trip and no
         * shorter string can (neighbours are at most 1 apart). */
        char tmp[24];
        size_t n = ts_sim_fmt_i64(tmp, (int64_t)v);
        *exp10 = (int)n - 1;
        while (n > 1 && tmp[n - 1] == '0') n--;
        memcpy(dig, tmp, n);
        return (int)n;
    }
    /* If 15 significant digits round-trip, the shortest string is their
     * prefix (half an ulp is far below half a unit in the 15th digit). */
    char buf[40];
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, v);
        if (p == 17 || strtod(buf, NULL) == v) break;
    }
    char *e = strchr(buf, 'e');
    *exp10 = atoi(e + 1);
    for (char *s = buf; s < e; s++)
        if (*s >= '0' && *s <= '9') dig[nd++] = *s;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    return nd;
}

static size_t fmt_float(char *out, double v, int json);

size_t ts_sim_fmt_gofloat(char *out, double v) { return fmt_float(out, v, 0); }

/* Go's encoding/json: shortest digits, plain decimal unless exp < -6 or >= 21. */
size_t ts_sim_fmt_jsonfloat(char *out, double v) {
    if (!isfinite(v)) v = 0; /* JSON has no NaN/Inf; never produced by the sim anyway */
    return fmt_float(out, v, 1);
}

static size_t fmt_float(char *out, double v, int json) {
    if (isnan(v)) return (size_t)sprintf(out, "NaN");
    if (isinf(v)) return (size_t)sprintf(out, v > 0 ? "+Inf" : "-Inf");
    size_t o = 0;
    if (signbit(v)) {
        out[o++] = '-';
        v = -v;
    }
    if (v == 0) {
        out[o++] = '0';
        out[o] = '\0';
        return o;
    }
    char dig[24] = {0};   /* -O3 cannot see shortest_digits always fills it */
    int exp10;
    int nd = shortest_digits(v, dig, &exp10);
    if (json ? (exp10 < -6 || exp10 >= 21) : (exp10 < -4 || exp10 >= 6)) {
        out[o++] = dig[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, dig + 1, (size_t)nd - 1);
            o += (size_t)nd - 1;
        }
        out[o++] = 'e';
        int x = exp10;
        out[o++] = x < 0 ? '-' : '+';
        if (x < 0) x = -x;
        if (x < 10 && !json) out[o++] = '0';
        o += ts_sim_fmt_i64(out + o, x);
    } else if (exp10 >= 0) {
        for (int i = 0; i <= exp10; i++) out[o++] = i < nd ? dig[i] : '0';
        if (nd > exp10 + 1) {
            out[o++] = '.';
            for (int i = exp10 + 1; i < nd; i++) out[o++] = dig[i];
        }
    } else {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -exp10 - 1; i++) out[o++] = '0';
        memcpy(out + o, dig, (size_t)nd);
        o += (size_t)nd;
    }
    out[o] = '\0';
    return o;
}

void ts_sim_json_raw_esc(ts_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        ts_buf_add(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            en = 6;
        }
        ts_buf_add(b, esc, en);
    }
    ts_buf_add(b, s + run, n - run);
}

void ts_sim_json_str(ts_buf *b, const char *s) {
    ts_buf_addc(b, '"');
    ts_sim_json_raw_esc(b, s, strlen(s));
    ts_buf_addc(b, '"');
}

void ts_sim_go_date(char *out, size_t n, int64_t ms) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a %b %d %H:%M:%S UTC %Y", &tm);
}

void ts_sim_rfc3339(char *out, size_t n, int64_t s) {
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
