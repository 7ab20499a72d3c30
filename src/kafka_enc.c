/* Kafka message encoders (C core, no librdkafka, no Lua): a line-protocol
 * line to Traffic Stats' JSON shape plus db and rp, and the series key that
 * keys every message. Exact: floats keep their text, integers and ns time
 * stamps go through no double. */
#include "ts_kafka_enc.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Character classes of line protocol and JSON, one table lookup per byte. */
enum { C_SPACE = 1, C_COMMA = 2, C_EQ = 4, C_QUOTE = 8, C_BSLASH = 16, C_JSON = 32 /* escaped in JSON */ };
static unsigned char g_cls[256];

static void init_classes(void) {
    if (g_cls[' ']) return;
    for (int c = 0; c < 0x20; c++) g_cls[c] = C_JSON;
    g_cls[' '] = C_SPACE;
    g_cls[','] = C_COMMA;
    g_cls['='] = C_EQ;
    g_cls['"'] = C_QUOTE | C_JSON;
    g_cls['\\'] = C_BSLASH | C_JSON;
}

/* Scans a token as InfluxDB 1.x does: a backslash always takes the next
 * character with it, the token ends at an unescaped stop character. */
static size_t scan_token(const char *s, size_t i, size_t n, unsigned stops) {
    while (i < n) {
        unsigned char k = g_cls[(unsigned char)s[i]];
        if (k & C_BSLASH && i + 1 < n) {
            i += 2;
            continue;
        }
        if (k & stops) break;
        i++;
    }
    return i;
}

/* Appends s as a JSON string, undoing exactly the escapes InfluxDB undoes for
 * this kind of token (`unesc`: the classes a backslash escapes there). */
static void json_string(ts_buf *out, const char *s, size_t n, unsigned unesc) {
    static const char hex[] = "0123456789abcdef";
    ts_buf_reserve(out, n + 2);
    ts_buf_addc(out, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(g_cls[c] & C_JSON)) continue;
        if (i > run) ts_buf_add(out, s + run, i - run);
        if (c == '\\' && i + 1 < n && (g_cls[(unsigned char)s[i + 1]] & unesc)) c = (unsigned char)s[++i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ts_buf_add(out, e, 2);
        } else if (c < 0x20) {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ts_buf_add(out, u, 6);
        } else {
            ts_buf_addc(out, (char)c);
        }
        run = i + 1;
    }
    if (n > run) ts_buf_add(out, s + run, n - run);
    ts_buf_addc(out, '"');
}

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number_ok(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n) return 0;
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    else return 0;
    if (i < n && s[i] == '.') {
        i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    return i == n;
}

static int digits_ok(const char *s, size_t n, int allow_minus) {
    size_t i = 0;
    if (allow_minus && i < n && s[i] == '-') i++;
    if (i >= n || n - i > 20) return 0;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int field_value(ts_buf *out, const char *v, size_t n) {
    if (n == 0) return -1;
    if (v[0] == '"') {
        if (n < 2 || v[n - 1] != '"') return -1;
        json_string(out, v + 1, n - 2, C_QUOTE | C_BSLASH);
        return 0;
    }
    char last = v[n - 1];
    if (last == 'i' || last == 'u') {
        if (!digits_ok(v, n - 1, last == 'i')) return -1;
        /* "-0i" and leading zeros are not JSON: go through the integer */
        if (n - 1 > 1 && (v[0] == '0' || (v[0] == '-' && (n - 1 == 1 || v[1] == '0')))) {
            char tmp[32];
            memcpy(tmp, v, n - 1);
            tmp[n - 1] = '\0';
            errno = 0;
            char buf[32];
            if (last == 'i') {
                long long x = strtoll(tmp, NULL, 10);
                if (errno) return -1;
                snprintf(buf, sizeof buf, "%lld", x);
            } else {
                unsigned long long x = strtoull(tmp, NULL, 10);
                if (errno) return -1;
                snprintf(buf, sizeof buf, "%llu", x);
            }
            ts_buf_adds(out, buf);
            return 0;
        }
        ts_buf_add(out, v, n - 1);
        return 0;
    }
    if (json_number_ok(v, n)) {
        ts_buf_add(out, v, n);   /* the encoder's shortest round-trip text, as it is */
        return 0;
    }
    if (v[0] == 't' || v[0] == 'T' || v[0] == 'f' || v[0] == 'F') {
        static const char *const truths[] = {"t", "T", "true", "True", "TRUE"};
        static const char *const lies[] = {"f", "F", "false", "False", "FALSE"};
        for (size_t i = 0; i < 5; i++) {
            if (strlen(truths[i]) == n && memcmp(truths[i], v, n) == 0) { ts_buf_adds(out, "true"); return 0; }
            if (strlen(lies[i]) == n && memcmp(lies[i], v, n) == 0) { ts_buf_adds(out, "false"); return 0; }
        }
        return -1;
    }
    if (n >= 64) return -1;
    char tmp[64], *end;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    double d = strtod(tmp, &end);
    if (end != tmp + n || !isfinite(d)) return -1;
    char num[32];
    ts_buf_add(out, num, ts_fmt_double(num, d));
    return 0;
}

static const int64_t prec_ns[] = {
    [TS_PREC_NS] = 1, [TS_PREC_US] = 1000, [TS_PREC_MS] = 1000000,
    [TS_PREC_S] = 1000000000, [TS_PREC_M] = 60000000000LL, [TS_PREC_H] = 3600000000000LL,
};

/* RFC 3339 in UTC with the fraction trimmed of trailing zeros, as Go's
 * time.RFC3339Nano prints it (Traffic Stats' JSON). */
static void rfc3339(ts_buf *out, int64_t ns) {
    /* a poll's points share a handful of seconds: the date part is cached */
    static int64_t last_sec = INT64_MIN;
    static char date[40];
    static int date_len;
    int64_t sec = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        sec--;
    }
    if (sec != last_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        date_len = snprintf(date, sizeof date, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        last_sec = sec;
    }
    char b[16];
    int n = 0;
    if (frac) {
        b[n++] = '.';
        for (int64_t div = 100000000; div > 0 && frac; div /= 10) {
            b[n++] = (char)('0' + frac / div);
            frac %= div;
        }
    }
    b[n++] = 'Z';
    b[n++] = '"';
    ts_buf_reserve(out, (size_t)date_len + (size_t)n);
    ts_buf_add(out, date, (size_t)date_len);
    ts_buf_add(out, b, (size_t)n);
}

size_t ts_kafka_enc_series_key(const char *line, size_t len) {
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

int ts_kafka_enc_json(ts_buf *out, const char *s, size_t n, const ts_kafka_dest *d, int64_t now_ns,
                        const char **err) {
    init_classes();
    size_t start = out->len;
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) n--;
    size_t i = 0;
#define FAIL(msg)                \
    do {                         \
        *err = msg;              \
        out->len = start;        \
        if (out->data) out->data[start] = '\0'; \
        return -1;               \
    } while (0)
    size_t me = scan_token(s, 0, n, C_COMMA | C_SPACE);
    if (me == 0) FAIL("empty measurement");
    ts_buf_adds(out, "{\"name\":");
    json_string(out, s, me, C_COMMA | C_SPACE);
    ts_buf_adds(out, ",\"tags\":{");
    i = me;
    int first = 1;
    while (i < n && s[i] == ',') {
        i++;
        size_t ke = scan_token(s, i, n, C_EQ | C_COMMA | C_SPACE);
        if (ke == i || ke >= n || s[ke] != '=') FAIL("bad tag");
        size_t ve = scan_token(s, ke + 1, n, C_COMMA | C_SPACE);
        if (ve == ke + 1) FAIL("empty tag value");
        if (!first) ts_buf_addc(out, ',');
        first = 0;
        json_string(out, s + i, ke - i, C_COMMA | C_EQ | C_SPACE);
        ts_buf_addc(out, ':');
        json_string(out, s + ke + 1, ve - ke - 1, C_COMMA | C_EQ | C_SPACE);
        i = ve;
    }
    if (i >= n || s[i] != ' ') FAIL("no fields");
    while (i < n && s[i] == ' ') i++;
    ts_buf_adds(out, "},\"fields\":{");
    first = 1;
    for (;;) {
        size_t ke = scan_token(s, i, n, C_EQ | C_COMMA | C_SPACE);
        if (ke == i || ke >= n || s[ke] != '=') FAIL("bad field");
        size_t vs = ke + 1, ve;
        if (vs < n && s[vs] == '"') {
            ve = vs + 1;
            while (ve < n && s[ve] != '"') ve += (s[ve] == '\\' && ve + 1 < n) ? 2 : 1;
            if (ve >= n) FAIL("unterminated string field");
            ve++;
        } else {
            ve = scan_token(s, vs, n, C_COMMA | C_SPACE);
        }
        if (!first) ts_buf_addc(out, ',');
        first = 0;
        json_string(out, s + i, ke - i, C_COMMA | C_EQ | C_SPACE);
        ts_buf_addc(out, ':');
        if (field_value(out, s + vs, ve - vs) < 0) FAIL("bad field value");
        i = ve;
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        break;
    }
    ts_buf_adds(out, "},\"time\":");
    while (i < n && s[i] == ' ') i++;
    int64_t ns;
    if (i == n) {
        ns = now_ns;
    } else {
        if (!digits_ok(s + i, n - i, 1)) FAIL("bad time stamp");
        int neg = s[i] == '-';
        uint64_t t = 0;
        for (size_t j = i + (size_t)neg; j < n; j++) {
            if (t > (UINT64_MAX - 9) / 10) FAIL("time stamp out of range");
            t = t * 10 + (uint64_t)(s[j] - '0');
        }
        uint64_t m = (uint64_t)prec_ns[d->precision];
        if (t > (uint64_t)INT64_MAX / m) FAIL("time stamp out of range");
        ns = neg ? -(int64_t)(t * m) : (int64_t)(t * m);
    }
    rfc3339(out, ns);
    ts_buf_adds(out, ",\"db\":");
    json_string(out, d->db, strlen(d->db), 0);
    ts_buf_adds(out, ",\"rp\":");
    json_string(out, d->rp ? d->rp : "", d->rp ? strlen(d->rp) : 0, 0);
    ts_buf_addc(out, '}');
#undef FAIL
    return 0;
}
