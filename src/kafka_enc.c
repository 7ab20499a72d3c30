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
    /* a poll's points share a handful of time stamps: the last one's text is
     * kept whole, and the date part of the last second */
    static int64_t last_ns = INT64_MIN, last_sec = INT64_MIN;
    static char text[64], date[40];
    static size_t text_len, date_len;
    if (ns != last_ns) {
        int64_t sec = ns / 1000000000, frac = ns % 1000000000;
        if (frac < 0) {
            frac += 1000000000;
            sec--;
        }
        if (sec != last_sec) {
            time_t t = (time_t)sec;
            struct tm tm;
            gmtime_r(&t, &tm);
            date_len = (size_t)snprintf(date, sizeof date, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
            last_sec = sec;
        }
        memcpy(text, date, date_len);
        size_t n = date_len;
        if (frac) {
            /* nine digits (constant divisors: no division instruction), trailing zeros trimmed */
            char d9[9];
            for (int i = 8; i >= 0; i--) {
                d9[i] = (char)('0' + frac % 10);
                frac /= 10;
            }
            size_t nd = 9;
            while (d9[nd - 1] == '0') nd--;
            text[n++] = '.';
            memcpy(text + n, d9, nd);
            n += nd;
        }
        text[n++] = 'Z';
        text[n++] = '"';
        text_len = n;
        last_ns = ns;
    }
    ts_buf_add(out, text, text_len);
}


#define FAIL(msg)                               \
    do {                                        \
        *err = msg;                             \
        out->len = start;                       \
        if (out->data) out->data[start] = '\0'; \
        return -1;                              \
    } while (0)

/* {"name":..,"tags":{.. of the series key at s (n bytes at most): returns
 * where the tags end (a space or n), or -1 with *err and out unchanged. */
static long enc_series(ts_buf *out, const char *s, size_t n, const char **err) {
    size_t start = out->len;
    size_t me = scan_token(s, 0, n, C_COMMA | C_SPACE);
    if (me == 0) FAIL("empty measurement");
    ts_buf_adds(out, "{\"name\":");
    json_string(out, s, me, C_COMMA | C_SPACE);
    ts_buf_adds(out, ",\"tags\":{");
    size_t i = me;
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
    return (long)i;
}

/* What follows the series' `"fields":{`: the fields, the time, db and rp of
 * the line s[0..n) from i, the space after the series key. `start` is where
 * the point's JSON began in out (reset to it on failure). */
/* ,"db":..,"rp":..} of a destination */
static void enc_suffix(ts_buf *out, const ts_kafka_dest *d) {
    ts_buf_adds(out, ",\"db\":");
    json_string(out, d->db, strlen(d->db), 0);
    ts_buf_adds(out, ",\"rp\":");
    json_string(out, d->rp ? d->rp : "", d->rp ? strlen(d->rp) : 0, 0);
    ts_buf_addc(out, '}');
}

/* A time stamp of `mag` ticks of prec (negative when neg) in ns; -1 when it
 * does not fit an int64 of ns. */
static int ticks_ns(uint64_t mag, int neg, ts_precision prec, int64_t *ns) {
    uint64_t m = (uint64_t)prec_ns[prec];
    if (mag > (uint64_t)INT64_MAX / m) return -1;
    *ns = neg ? -(int64_t)(mag * m) : (int64_t)(mag * m);
    return 0;
}

/* a message's end: its time and the db/rp suffix (sfx made once, or NULL) */
static void enc_time_end(ts_buf *out, int64_t ns, const ts_kafka_dest *d, const ts_buf *sfx) {
    rfc3339(out, ns);
    if (sfx) ts_buf_add(out, sfx->data, sfx->len);
    else enc_suffix(out, d);
}

/* The last plain field key ("value=" nearly always) and its JSON ("value":). */
typedef struct fmemo {
    char lp[32], js[40];
    size_t lplen, jslen;
} fmemo;

/* sfx: enc_suffix(d) made already, or NULL; fm: the field key memo, or NULL */
static int enc_rest(ts_buf *out, size_t start, const char *s, size_t n, size_t i, const ts_kafka_dest *d,
                    const ts_buf *sfx, fmemo *fm, int64_t now_ns, const char **err) {
    while (i < n && s[i] == ' ') i++;
    int first = 1;
    for (;;) {
        size_t vs;
        if (fm && fm->lplen && n - i > fm->lplen && memcmp(s + i, fm->lp, fm->lplen) == 0) {
            /* a key without escapes or stop characters ends at its '=' as the scan would */
            if (!first) ts_buf_addc(out, ',');
            ts_buf_add(out, fm->js, fm->jslen);
            vs = i + fm->lplen;
        } else {
            size_t ke = scan_token(s, i, n, C_EQ | C_COMMA | C_SPACE);
            if (ke == i || ke >= n || s[ke] != '=') FAIL("bad field");
            if (fm && ke - i < sizeof fm->lp - 1) {
                int plain = 1;
                for (size_t j = i; j < ke && plain; j++)
                    if (g_cls[(unsigned char)s[j]] & (C_JSON | C_SPACE | C_COMMA | C_EQ)) plain = 0;
                if (plain) {
                    memcpy(fm->lp, s + i, ke - i + 1);   /* with its '=' */
                    fm->lplen = ke - i + 1;
                    fm->js[0] = '"';
                    memcpy(fm->js + 1, s + i, ke - i);
                    memcpy(fm->js + 1 + (ke - i), "\":", 2);
                    fm->jslen = ke - i + 3;
                }
            }
            if (!first) ts_buf_addc(out, ',');
            json_string(out, s + i, ke - i, C_COMMA | C_EQ | C_SPACE);
            ts_buf_addc(out, ':');
            vs = ke + 1;
        }
        first = 0;
        /* the value: a quoted string to its closing quote, else a token */
        size_t ve;
        if (vs < n && s[vs] == '"') {
            ve = vs + 1;
            while (ve < n && s[ve] != '"') ve += (s[ve] == '\\' && ve + 1 < n) ? 2 : 1;
            if (ve >= n) FAIL("unterminated string field");
            ve++;
        } else {
            ve = scan_token(s, vs, n, C_COMMA | C_SPACE);
        }
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
        if (ticks_ns(t, neg, d->precision, &ns) != 0) FAIL("time stamp out of range");
    }
    enc_time_end(out, ns, d, sfx);
    return 0;
}

static size_t trim_end(const char *s, size_t n) {
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) n--;
    return n;
}

int ts_kafka_enc_json(ts_buf *out, const char *s, size_t n, const ts_kafka_dest *d, int64_t now_ns,
                      const char **err) {
    init_classes();
    size_t start = out->len;
    n = trim_end(s, n);
    long i = enc_series(out, s, n, err);
    if (i < 0) return -1;
    if ((size_t)i >= n || s[i] != ' ') FAIL("no fields");
    ts_buf_adds(out, "},\"fields\":{");
    return enc_rest(out, start, s, n, (size_t)i, d, NULL, NULL, now_ns, err);
}
#undef FAIL

size_t ts_kafka_enc_count_lines(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - p) : n;
        size_t s = i;
        while (s < e && (p[s] == ' ' || p[s] == '\t' || p[s] == '\r')) s++;
        if (s < e) c++;
        i = e + 1;
    }
    return c;
}

/* ---- the series cache ----
 * A poll brings the same series as the last one: their JSON head (name and
 * tags, unescaped and escaped again) and their partition are kept by series
 * key, so a point costs a hash, a compare and a copy instead of a scan of
 * its tags. Entries live in an arena; past max_bytes it is emptied whole. */

struct ts_kafka_series {
    struct ts_kafka_series *next;   /* the series that came after this one last time */
    uint64_t hash;
    uint32_t klen, plen;      /* plen: length of the JSON head, 0 when not made (not JSON, or refused) */
    int32_t part, nparts;     /* partition for nparts partitions; nparts 0: not known */
    char data[];              /* the key, then the JSON head */
};

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    char data[];
} arena_blk;

struct ts_kafka_enc {
    int json;
    size_t max_bytes, bytes;
    ts_kafka_series **slots;
    size_t nslots, used;      /* nslots: a power of two */
    arena_blk *blk;
    ts_kafka_series *last;    /* the entry returned last */
    ts_buf tmp;
    ts_buf sfx;               /* enc_suffix of the destination below */
    char sfx_db[256], sfx_rp[256];
    fmemo fm;
    uint64_t hits, misses, resets;
    /* compact points: (stat, entity) pairs to series entries, in the arena */
    struct cpair **pslots;
    size_t npslots, pused;
    struct cpair *plast;
    ts_map_owner owners[8];   /* a reference held on each while pairs point into its maps */
    int nowners, last_owner;
    ts_buf line;              /* a compact point's line protocol */
    char cf_lp[32], cf_js[40];   /* the last field key (LP) and its JSON */
    size_t cf_lplen, cf_jslen;
    uint64_t pair_hits, pair_misses;
    const ts_kafka_dest *cpt_dest;   /* ts_kafka_enc_set_dest: its suffix made */
    const ts_buf *cpt_sfx;
};

typedef struct cpair {
    const ts_stat_map *st;
    const ts_entity_map *ent;
    ts_kafka_series *se;
    struct cpair *next;       /* the pair that came after this one last time */
} cpair;

#define ARENA_BLK (1u << 20)

/* 8 bytes a step, then murmur3's finaliser: series keys differ in a few
 * bytes anywhere, and the table indexes by the low bits. */
static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h = (h << 31) | (h >> 33);
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h ^= v;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

ts_kafka_enc *ts_kafka_enc_new(int json, size_t max_bytes) {
    ts_kafka_enc *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->json = json;
    e->max_bytes = max_bytes;
    ts_buf_init(&e->tmp);
    ts_buf_init(&e->sfx);
    ts_buf_init(&e->line);
    init_classes();
    return e;
}

static void enc_clear(ts_kafka_enc *e) {
    for (arena_blk *b = e->blk, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    e->blk = NULL;
    free(e->slots);
    e->slots = NULL;
    e->nslots = e->used = 0;
    e->bytes = 0;
    e->last = NULL;
    free(e->pslots);
    e->pslots = NULL;
    e->npslots = e->pused = 0;
    e->plast = NULL;
    /* nothing points into those maps now */
    for (int i = 0; i < e->nowners; i++) e->owners[i].release(e->owners[i].owner);
    e->nowners = e->last_owner = 0;
}

void ts_kafka_enc_free(ts_kafka_enc *e) {
    if (!e) return;
    enc_clear(e);
    ts_buf_free(&e->tmp);
    ts_buf_free(&e->sfx);
    ts_buf_free(&e->line);
    free(e);
}

static void *arena_alloc(ts_kafka_enc *e, size_t n) {
    n = (n + 7) & ~(size_t)7;
    if (!e->blk || e->blk->cap - e->blk->used < n) {
        size_t cap = n > ARENA_BLK ? n : ARENA_BLK;
        arena_blk *b = malloc(sizeof *b + cap);
        if (!b) abort();
        b->next = e->blk;
        b->used = 0;
        b->cap = cap;
        e->blk = b;
        e->bytes += sizeof *b + cap;
    }
    void *p = e->blk->data + e->blk->used;
    e->blk->used += n;
    return p;
}

static void grow(ts_kafka_enc *e) {
    size_t n = e->nslots ? e->nslots * 2 : 4096;
    ts_kafka_series **s = calloc(n, sizeof *s);
    if (!s) abort();
    for (size_t i = 0; i < e->nslots; i++) {
        ts_kafka_series *x = e->slots[i];
        if (!x) continue;
        size_t j = x->hash & (n - 1);
        while (s[j]) j = (j + 1) & (n - 1);
        s[j] = x;
    }
    e->bytes += (n - e->nslots) * sizeof *s;
    free(e->slots);
    e->slots = s;
    e->nslots = n;
}

ts_kafka_series *ts_kafka_enc_series(ts_kafka_enc *e, const char *key, size_t klen) {
    if (klen == 0 || klen > 65535) return NULL;
    /* A poll's points come in the order of the last poll's: the series that
     * followed the last one then is tried first, with no hash and no random
     * access into the table (entries sit in the arena in that order). */
    ts_kafka_series *pred = e->last ? e->last->next : NULL;
    if (pred && pred->klen == klen && memcmp(pred->data, key, klen) == 0) {
        e->hits++;
        return e->last = pred;
    }
    uint64_t h = hash_bytes(key, klen);
    if (e->nslots) {
        for (size_t j = h & (e->nslots - 1);; j = (j + 1) & (e->nslots - 1)) {
            ts_kafka_series *x = e->slots[j];
            if (!x) break;
            if (x->hash == h && x->klen == klen && memcmp(x->data, key, klen) == 0) {
                e->hits++;
                if (e->last) e->last->next = x;
                return e->last = x;
            }
        }
    }
    e->misses++;
    if (e->bytes > e->max_bytes) {
        /* a churn of series (or a bound too small): start again rather than grow */
        enc_clear(e);
        e->resets++;
    }
    if ((e->used + 1) * 4 > e->nslots * 3) grow(e);
    uint32_t plen = 0;
    if (e->json) {
        const char *why;
        ts_buf_reset(&e->tmp);
        long i = enc_series(&e->tmp, key, klen, &why);
        if (i == (long)klen) {
            ts_buf_adds(&e->tmp, "},\"fields\":{");
            plen = (uint32_t)e->tmp.len;
        }
    }
    ts_kafka_series *x = arena_alloc(e, sizeof *x + klen + plen);
    x->next = NULL;
    x->hash = h;
    x->klen = (uint32_t)klen;
    x->plen = plen;
    x->part = -1;
    x->nparts = 0;
    memcpy(x->data, key, klen);
    if (plen) memcpy(x->data + klen, e->tmp.data, plen);
    size_t j = h & (e->nslots - 1);
    while (e->slots[j]) j = (j + 1) & (e->nslots - 1);
    e->slots[j] = x;
    e->used++;
    if (e->last) e->last->next = x;
    return e->last = x;
}

int32_t ts_kafka_enc_partition(const ts_kafka_series *s, int32_t nparts) {
    return s && s->nparts == nparts ? s->part : -1;
}

void ts_kafka_enc_set_partition(ts_kafka_series *s, int32_t nparts, int32_t part) {
    if (!s) return;
    s->nparts = nparts;
    s->part = part;
}

/* enc_suffix of d, made once per destination (NULL: names too long to keep) */
static const ts_buf *suffix_of(ts_kafka_enc *e, const ts_kafka_dest *d) {
    const char *rp = d->rp ? d->rp : "";
    if (!e->sfx.len || strcmp(e->sfx_db, d->db) || strcmp(e->sfx_rp, rp)) {
        ts_buf_reset(&e->sfx);
        enc_suffix(&e->sfx, d);
        snprintf(e->sfx_db, sizeof e->sfx_db, "%s", d->db);
        snprintf(e->sfx_rp, sizeof e->sfx_rp, "%s", rp);
        if (strlen(d->db) >= sizeof e->sfx_db || strlen(rp) >= sizeof e->sfx_rp) e->sfx.len = 0;
    }
    return e->sfx.len ? &e->sfx : NULL;
}

int ts_kafka_enc_json_series(ts_kafka_enc *e, const ts_kafka_series *se, ts_buf *out, const char *line, size_t len,
                             const ts_kafka_dest *d, int64_t now_ns, const char **err) {
    size_t n = trim_end(line, len);
    /* the head is the series' whatever line it came from; a line without
     * fields after it (or a head refused) gets the full conversion's verdict */
    if (!se || !se->plen || se->klen >= n || line[se->klen] != ' ')
        return ts_kafka_enc_json(out, line, len, d, now_ns, err);
    size_t start = out->len;
    ts_buf_add(out, se->data + se->klen, se->plen);
    return enc_rest(out, start, line, n, se->klen, d, suffix_of(e, d), &e->fm, now_ns, err);
}

void ts_kafka_enc_get_stats(const ts_kafka_enc *e, ts_kafka_enc_stats *s) {
    s->series = e->used;
    s->bytes = e->bytes;
    s->hits = e->hits;
    s->misses = e->misses;
    s->resets = e->resets;
    s->pairs = e->pused;
    s->pair_hits = e->pair_hits;
    s->pair_misses = e->pair_misses;
    s->owners = (uint64_t)e->nowners;
}


/* ---- compact points ----
 * A poll's points come as (stat map, entity map, value, time): the pair
 * finds the series entry with a pointer compare (the last poll's order
 * first), and the message is the cached head, the value's text and the
 * time, with no line protocol made or parsed. */

static uint64_t hash_pair(const void *a, const void *b) {
    uint64_t h = (uint64_t)(uintptr_t)a * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)b * 0xc2b2ae3d27d4eb4full;
    return h ^ (h >> 29);
}

const char *ts_kafka_enc_point_line(ts_buf *buf, const ts_cpoint *p, ts_precision prec, size_t *n) {
    ts_buf_reset(buf);
    if (ts_lp_encode_compact(buf, p, prec) != 0) return NULL;
    const char *s = buf->data;
    size_t len = buf->len - 1;
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    *n = len;
    return s;
}

static void hold_owner(ts_kafka_enc *e, const ts_map_owner *o) {
    if (e->nowners && e->owners[e->last_owner].owner == o->owner) return;
    for (int i = 0; i < e->nowners; i++)
        if (e->owners[i].owner == o->owner) {
            e->last_owner = i;
            return;
        }
    if (e->nowners == (int)(sizeof e->owners / sizeof e->owners[0])) {
        /* mappers replaced (reloads, a new plan): the pairs of the old ones go */
        enc_clear(e);
        e->resets++;
    }
    o->retain(o->owner);
    e->owners[e->nowners] = *o;
    e->last_owner = e->nowners++;
}

ts_kafka_series *ts_kafka_enc_series_cpt(ts_kafka_enc *e, const ts_stat_map *st, const ts_entity_map *ent,
                                         const ts_map_owner *owner) {
    cpair *pr = e->plast ? e->plast->next : NULL;
    if (pr && pr->st == st && pr->ent == ent) {
        e->pair_hits++;
        return (e->plast = pr)->se;
    }
    uint64_t h = hash_pair(st, ent);
    if (e->npslots) {
        for (size_t j = h & (e->npslots - 1);; j = (j + 1) & (e->npslots - 1)) {
            cpair *x = e->pslots[j];
            if (!x) break;
            if (x->st == st && x->ent == ent) {
                e->pair_hits++;
                if (e->plast) e->plast->next = x;
                return (e->plast = x)->se;
            }
        }
    }
    e->pair_misses++;
    ts_cpoint p = {st, ent, 0, 0};
    size_t n = 0;
    const char *line = ts_kafka_enc_point_line(&e->line, &p, TS_PREC_MS, &n);
    if (!line) return NULL;
    if (owner) hold_owner(e, owner);
    uint64_t resets = e->resets;
    ts_kafka_series *se = ts_kafka_enc_series(e, line, ts_lp_series_key(line, n));
    if (!se || !owner) return se;
    if (e->resets != resets) hold_owner(e, owner);   /* the series cache started again: so did the pairs */
    if ((e->pused + 1) * 4 > e->npslots * 3) {
        size_t nn = e->npslots ? e->npslots * 2 : 4096;
        cpair **s = calloc(nn, sizeof *s);
        if (!s) abort();
        for (size_t i = 0; i < e->npslots; i++) {
            cpair *x = e->pslots[i];
            if (!x) continue;
            size_t j = hash_pair(x->st, x->ent) & (nn - 1);
            while (s[j]) j = (j + 1) & (nn - 1);
            s[j] = x;
        }
        e->bytes += (nn - e->npslots) * sizeof *s;
        free(e->pslots);
        e->pslots = s;
        e->npslots = nn;
    }
    cpair *x = arena_alloc(e, sizeof *x);
    *x = (cpair){st, ent, se, NULL};
    size_t j = h & (e->npslots - 1);
    while (e->pslots[j]) j = (j + 1) & (e->npslots - 1);
    e->pslots[j] = x;
    e->pused++;
    if (e->plast) e->plast->next = x;
    e->plast = x;
    return se;
}

void ts_kafka_enc_set_dest(ts_kafka_enc *e, const ts_kafka_dest *d) {
    e->cpt_dest = d;
    e->cpt_sfx = d ? suffix_of(e, d) : NULL;
}

const char *ts_kafka_enc_key(const ts_kafka_series *s, size_t *klen) {
    *klen = s->klen;
    return s->data;
}

int ts_kafka_enc_cpt(ts_kafka_enc *e, const ts_kafka_series *se, ts_buf *out, const ts_cpoint *p,
                     const ts_kafka_dest *d, const char **err) {
    const ts_stat_map *st = p->stat;
    size_t start = out->len, fl = st->field_len;
    if (!e->json || !se || !se->plen || !fl || st->field[fl - 1] == '\\' || !st->meas_len || st->meas[0] == ' ' ||
        st->meas[0] == '\t') {
        /* the line itself, or the cases the cached head does not cover:
         * what the line-protocol path makes of the point's line */
        size_t n = 0;
        const char *line = ts_kafka_enc_point_line(&e->line, p, d->precision, &n);
        if (!line) {
            *err = "not a finite value";
            return -1;
        }
        if (e->json) return ts_kafka_enc_json_series(e, se, out, line, n, d, 0, err);
        ts_buf_add(out, line, n);
        return 0;
    }
    ts_buf_add(out, se->data + se->klen, se->plen);
    if (e->cf_lplen != fl || memcmp(e->cf_lp, st->field, fl) != 0) {
        size_t mark = out->len;
        json_string(out, st->field, fl, C_COMMA | C_EQ | C_SPACE);
        ts_buf_addc(out, ':');
        e->cf_lplen = e->cf_jslen = 0;
        if (fl <= sizeof e->cf_lp && out->len - mark <= sizeof e->cf_js) {
            memcpy(e->cf_lp, st->field, fl);
            memcpy(e->cf_js, out->data + mark, out->len - mark);
            e->cf_lplen = fl;
            e->cf_jslen = out->len - mark;
        }
    } else {
        ts_buf_add(out, e->cf_js, e->cf_jslen);
    }
    char num[32];
    size_t nn = ts_lp_compact_value(num, st, p->value);
    if (st->as_int) {
        if (field_value(out, num, nn) < 0) {
            *err = "bad field value";
            goto fail;
        }
    } else {
        /* a finite double's shortest text: field_value takes it as it is or,
         * were it not JSON, reads it back and writes the same shortest text */
        ts_buf_add(out, num, nn);
    }
    ts_buf_adds(out, "},\"time\":");
    /* the time as the line's digits would be read back (enc_rest) */
    int64_t t = ts_lp_ms_to_prec(p->time_ms, d->precision), ns;
    if (ticks_ns(t < 0 ? (uint64_t)0 - (uint64_t)t : (uint64_t)t, t < 0, d->precision, &ns) != 0) {
        *err = "time stamp out of range";
        goto fail;
    }
    enc_time_end(out, ns, d, d == e->cpt_dest ? e->cpt_sfx : suffix_of(e, d));
    return 0;
fail:
    out->len = start;
    if (out->data) out->data[start] = '\0';
    return -1;
}
