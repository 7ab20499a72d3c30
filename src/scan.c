/* ts_scan: hand-written streaming scanner for Traffic Monitor CacheStats /
 * DsStats payloads (C core, hot path; no Lua here). Replaces yajl on the poll
 * path because yajl's callback-per-token lexer was ~40% of the CPU per poll.
 * Semantics are those of the yajl oracle in spec/oracle/scan_yajl.c (the
 * unit test and the fuzz driver compare the two on every input). */
#include "ts_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest value text delivered as-is. Real TM values are numbers printed by Go
 * (<= ~25 bytes) or short words; longer ones are struct dumps nobody graphs. */
#define SCAN_VAL_CAP 256
/* JSON nesting limit (real payloads use 5 levels); one bit per level below. */
#define SCAN_MAX_DEPTH 64
/* A token split across feeds is re-lexed from its first byte when more data
 * comes. Up to this length that is cheap; beyond it the scanner waits until
 * the pending bytes have doubled, so a huge token fed in tiny pieces costs
 * O(n) in total instead of O(n^2). */
#define SCAN_RELEX_SMALL 64

/* Semantic state (same roles as in the yajl version; only meaningful when skip == 0). */
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

/* JSON grammar state: what the next token may be. */
enum {
    G_START, /* the top-level value */
    G_VAL,   /* a value (after ':' or after ',' in an array) */
    G_ARR0,  /* after '[': a value or ']' */
    G_OBJ0,  /* after '{': a key or '}' */
    G_KEY,   /* after ',' in an object: a key */
    G_COLON, /* after a key */
    G_NEXT,  /* after a value in a container: ',' or the closing bracket */
    G_DONE   /* after the top-level value: whitespace only */
};

struct ts_scan {
    ts_scan_sink sink;
    ts_scan_stats st;
    const char *ents_key; /* "caches" or "deliveryService" */
    size_t ents_key_len;
    int state, want;
    int resume;       /* state to return to when the skipped container closes */
    unsigned skip;    /* open containers being skipped (0 = not skipping) */
    int g;            /* grammar state */
    unsigned depth;   /* real JSON nesting */
    uint64_t objbits; /* bit d-1 set: the container at depth d is an object */
    int failed;       /* sticky: after an error every call returns -1 */
    uint64_t base;    /* document offset of the buffer being parsed */
    uint64_t tokend;  /* document offset just after the current token (for messages) */
    char *pend;       /* an incomplete token (and nothing else) from earlier feeds */
    size_t plen, pcap;
    size_t ptry;      /* pend length at the last lex attempt that found it incomplete */
    char *ubuf;       /* unescaped key / value text */
    size_t ucap;
    void *ent, *stat;
    /* element [0] being collected */
    int have_val, vkind, has_time;
    size_t vlen;
    int64_t time_ms;
    char val[SCAN_VAL_CAP + 1];
    char err[320];
};

/* ------------------------------------------------------------- errors */

static int sem_fail(ts_scan *s, const char *what) {
    if (!s->failed) {
        snprintf(s->err, sizeof s->err, "TM payload: %s (near byte %llu)", what, (unsigned long long)s->tokend);
        s->failed = 1;
    }
    return 0;
}

static long syn_fail(ts_scan *s, uint64_t off, const char *what) {
    if (!s->failed) {
        snprintf(s->err, sizeof s->err, "TM payload: JSON syntax error near byte %llu: %s", (unsigned long long)off,
                 what);
        s->failed = 1;
    }
    return -1;
}

/* ------------------------------------------------- semantic layer (as yajl) */

static inline void skip_open(ts_scan *s, unsigned n, int back) {
    s->skip = n;
    s->resume = back;
}

/* A scalar arrived where the scanner is not skipping. p/len are only read for
 * the "value" and "time" of element [0]. */
static int sem_scalar(ts_scan *s, int kind, const char *p, size_t len) {
    switch (s->state) {
    case S_START:
        return sem_fail(s, "top level is not a JSON object");
    case S_TOP:
    case S_ENTS:
    case S_STATS:
        if (s->want != W_SKIP) s->st.skipped_shape++;
        return 1;
    case S_HIST:
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
            /* Integer token only (already a valid JSON number); accumulate
             * negatively so INT64_MIN is exact. */
            size_t i = 0;
            int neg = 0;
            if (i < len && p[i] == '-') { neg = 1; i++; }
            if (i == len) return 1;
            int64_t v = 0;
            if (len - i <= 18) { /* cannot overflow: no per-digit range check */
                for (; i < len; i++) {
                    unsigned d = (unsigned)(unsigned char)p[i] - '0';
                    if (d > 9) return 1; /* '.', 'e', 'E': not an integer */
                    v = v * 10 - (int64_t)d;
                }
            }
            for (; i < len; i++) {
                unsigned d = (unsigned)(unsigned char)p[i] - '0';
                if (d > 9) return 1;
                if (v < (INT64_MIN + (int64_t)d) / 10) return 1;
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

static void sem_key(ts_scan *s, const char *key, size_t len) {
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
        if (len == 5 && memcmp(key, "value", 5) == 0) s->want = W_VALUE;
        else if (len == 4 && memcmp(key, "time", 4) == 0) s->want = W_TIME;
        else s->want = W_SKIP;
        break;
    default:
        break;
    }
}

static int sem_open_map(ts_scan *s) {
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

static int sem_open_array(ts_scan *s) {
    if (s->skip) { s->skip++; return 1; }
    switch (s->state) {
    case S_START:
        return sem_fail(s, "top level is not a JSON object");
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

static void sem_close_map(ts_scan *s) {
    if (s->skip) {
        if (--s->skip == 0) s->state = s->resume;
        return;
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
        skip_open(s, 1, S_STATS); /* elements [1..] are older history */
        break;
    default:
        break;
    }
}

static void sem_close_array(ts_scan *s) {
    if (s->skip) {
        if (--s->skip == 0) s->state = s->resume;
        return;
    }
    if (s->state == S_HIST) s->state = S_STATS; /* empty history */
}

/* ------------------------------------------------------------- lexing */

#define LEX_MORE 0   /* token runs past the end of the buffer */
#define LEX_ERR (-1) /* syntax error (message set) */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Bytes that end the fast path in a string body: '"', '\\', controls, non-ASCII.
 * The lowest flagged byte is exact (false positives only above a true one). */
static inline uint64_t str_special(uint64_t x) {
    uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | (x - ONES * 0x20) | x) & HIGHS;
}

static inline int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* String starting at p[i] == '"'. Returns the index just past the closing
 * quote, LEX_MORE or LEX_ERR; *esc says whether a backslash occurred. Checks
 * escapes and UTF-8 the way yajl does (lead byte + the right number of
 * continuation bytes; yajl does not reject overlong forms or surrogates). */
static long lex_string(ts_scan *s, const char *p, size_t n, size_t i, int final, int *esc) {
    size_t j = i + 1;
    int e = 0;
    for (;;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        while (j + 8 <= n) {
            uint64_t x;
            memcpy(&x, p + j, 8);
            uint64_t m = str_special(x);
            if (m) { j += (size_t)__builtin_ctzll(m) >> 3; break; }
            j += 8;
        }
#endif
        if (j >= n) goto more;
        unsigned char c = (unsigned char)p[j];
        if (c == '"') { *esc = e; return (long)(j + 1); }
        if (c == '\\') {
            e = 1;
            if (j + 1 >= n) goto more;
            unsigned char x = (unsigned char)p[j + 1];
            if (x == 'u') {
                for (size_t k = 2; k < 6; k++) {
                    if (j + k >= n) goto more;
                    if (hexval((unsigned char)p[j + k]) < 0)
                        return syn_fail(s, s->base + j + k + 1,
                                        "invalid (non-hex) character occurs after '\\u' inside string.");
                }
                j += 6;
            } else if (x == '"' || x == '\\' || x == '/' || x == 'b' || x == 'f' || x == 'n' || x == 'r' ||
                       x == 't') {
                j += 2;
            } else {
                return syn_fail(s, s->base + j + 2, "inside a JSON string, an invalid escape was found");
            }
        } else if (c < 0x20) {
            return syn_fail(s, s->base + j + 1, "invalid character inside string.");
        } else if (c >= 0x80) {
            size_t need = (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : 0;
            if (!need) return syn_fail(s, s->base + j + 1, "invalid bytes in UTF8 string.");
            for (size_t k = 1; k <= need; k++) {
                if (j + k >= n) goto more;
                if (((unsigned char)p[j + k] >> 6) != 0x2)
                    return syn_fail(s, s->base + j + k + 1, "invalid bytes in UTF8 string.");
            }
            j += need + 1;
        } else {
            j++;
        }
    }
more:
    if (final) return syn_fail(s, s->base + n, "premature EOF");
    return LEX_MORE;
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Index of the first non-digit at or after j (or n). 8 bytes at a time: a
 * byte is a digit when (b ^ '0') <= 9; the lowest flagged byte is exact. */
static inline size_t skip_digits(const char *p, size_t n, size_t j) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (j + 8 <= n) {
        uint64_t x;
        memcpy(&x, p + j, 8);
        uint64_t a = x ^ (ONES * '0');
        uint64_t m = ((a + ONES * 0x76) | a) & HIGHS;
        if (m) return j + ((size_t)__builtin_ctzll(m) >> 3);
        j += 8;
    }
#endif
    while (j < n && is_digit((unsigned char)p[j])) j++;
    return j;
}

/* Number starting at p[i]; returns the index just past it (JSON grammar). A
 * number ending exactly at the buffer end is incomplete unless final. */
static long lex_number(ts_scan *s, const char *p, size_t n, size_t i, int final) {
    size_t j = i;
    if (p[j] == '-') j++;
    if (j >= n) goto more;
    if (p[j] == '0') j++;
    else if (p[j] >= '1' && p[j] <= '9') j = skip_digits(p, n, j + 1); else return syn_fail(s, s->base + j + 1, "malformed number, a digit is required after the minus sign.");
    if (j >= n) goto end;
    if (p[j] == '.') {
        j++;
        if (j >= n) goto more;
        if (!is_digit((unsigned char)p[j]))
            return syn_fail(s, s->base + j + 1, "malformed number, a digit is required after the decimal point.");
        j = skip_digits(p, n, j);
        if (j >= n) goto end;
    }
    if (p[j] == 'e' || p[j] == 'E') {
        j++;
        if (j >= n) goto more;
        if (p[j] == '+' || p[j] == '-') j++;
        if (j >= n) goto more;
        if (!is_digit((unsigned char)p[j]))
            return syn_fail(s, s->base + j + 1, "malformed number, a digit is required after the exponent.");
        j = skip_digits(p, n, j);
        if (j >= n) goto end;
    }
    return (long)j;
end:
    return final ? (long)j : LEX_MORE;
more:
    if (final) return syn_fail(s, s->base + n, "premature EOF");
    return LEX_MORE;
}

static long lex_literal(ts_scan *s, const char *p, size_t n, size_t i, int final, const char *lit, size_t len) {
    for (size_t k = 1; k < len; k++) {
        if (i + k >= n) {
            if (final) return syn_fail(s, s->base + n, "premature EOF");
            return LEX_MORE;
        }
        if (p[i + k] != lit[k]) return syn_fail(s, s->base + i + k + 1, "invalid string in json text.");
    }
    return (long)(i + len);
}

/* yajl_string_decode as Debian's libyajl 2.1.0 behaves (checked by the
 * differential test): a high surrogate not followed by "\u" becomes '?', the
 * second half of a pair is not checked, a lone low surrogate is written as
 * its 3-byte form, \u0000 is kept; so names match the reference exactly. */
static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp < 0x200000) {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        return 4;
    }
    o[0] = '?';
    return 1;
}

static unsigned hex4(const char *p) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) v = (v << 4) | (unsigned)hexval((unsigned char)p[k]);
    return v;
}

/* str[0..len) is a lexed string body and str[len] its closing quote. Returns
 * the unescaped text (in s->ubuf) or NULL when out of memory. */
static const char *unescape(ts_scan *s, const char *str, size_t len, size_t *outlen) {
    if (s->ucap < len + 1) {
        size_t cap = s->ucap ? s->ucap : 256;
        while (cap < len + 1) cap *= 2;
        char *u = realloc(s->ubuf, cap);
        if (!u) return NULL;
        s->ubuf = u;
        s->ucap = cap;
    }
    char *o = s->ubuf;
    size_t beg = 0, end = 0;
    while (end < len) {
        if (str[end] != '\\') { end++; continue; }
        memcpy(o, str + beg, end - beg);
        o += end - beg;
        char c = str[++end];
        switch (c) {
        case 'r': *o++ = '\r'; break;
        case 'n': *o++ = '\n'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp = hex4(str + end + 1);
            end += 4;
            if ((cp & 0xFC00) == 0xD800) {
                end++;
                if (str[end] == '\\' && str[end + 1] == 'u') {
                    unsigned sur = hex4(str + end + 2);
                    cp = ((cp & 0x3F) << 10) | ((((cp >> 6) & 0xF) + 1) << 16) | (sur & 0x3FF);
                    end += 5;
                } else {
                    end--; /* the byte after the escape is ordinary text */
                    *o++ = '?';
                    break;
                }
            }
            o += put_utf8(o, cp);
            break;
        }
        default: *o++ = c; break; /* '"', '\\', '/' */
        }
        beg = ++end;
    }
    if (end > beg) {
        memcpy(o, str + beg, end - beg);
        o += end - beg;
    }
    *o = '\0';
    *outlen = (size_t)(o - s->ubuf);
    return s->ubuf;
}

/* ------------------------------------------------------------- grammar */

static inline int is_ws(unsigned char c) {
    /* yajl also takes \v and \f as whitespace; kept for equivalence */
    return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f';
}

/* Parse complete tokens of p[0..n) (document offset s->base). Returns how many
 * bytes were consumed (the rest is one incomplete token) or -1 on an error.
 * The common TM layout ("key":value,"key":value) is followed by direct jumps
 * (key -> ':' -> value -> ',' -> key) instead of a trip through the dispatch. */
static long parse(ts_scan *s, const char *p, size_t n, int final) {
    size_t i = 0;
    int g = s->g;
    long r;
    unsigned char c;
    while (i < n) {
        c = (unsigned char)p[i];
        if (c <= ' ' && is_ws(c)) { i++; continue; }
        switch (g) {
        case G_START:
        case G_VAL:
        case G_ARR0:
        value:
            if (c == '"') {
                int esc;
                r = lex_string(s, p, n, i, final, &esc);
                if (r <= 0) goto stop;
                if (!s->skip) {
                    s->tokend = s->base + (size_t)r;
                    if (s->state == S_SAMPLE && s->want == W_VALUE) {
                        const char *t = p + i + 1;
                        size_t tl = (size_t)r - i - 2;
                        if (esc && !(t = unescape(s, t, tl, &tl))) goto oom;
                        sem_scalar(s, TS_VAL_STRING, t, tl);
                    } else if (!sem_scalar(s, TS_VAL_STRING, NULL, 0)) goto fail;
                }
                i = (size_t)r;
            } else if (c == '{' || c == '[') {
                if (s->depth >= SCAN_MAX_DEPTH) {
                    s->tokend = s->base + i + 1;
                    sem_fail(s, "JSON nested deeper than 64 levels");
                    goto fail;
                }
                s->depth++;
                s->tokend = s->base + i + 1;
                i++;
                if (c == '{') {
                    s->objbits |= 1ULL << (s->depth - 1);
                    sem_open_map(s);
                    g = G_OBJ0;
                    if (i < n && p[i] == '"') { c = '"'; goto key; }
                } else {
                    s->objbits &= ~(1ULL << (s->depth - 1));
                    if (!sem_open_array(s)) goto fail;
                    g = G_ARR0;
                    if (i < n && p[i] == '{') { c = '{'; goto value; }
                }
                continue;
            } else if (c == '-' || is_digit(c)) {
                r = lex_number(s, p, n, i, final);
                if (r <= 0) goto stop;
                if (!s->skip) {
                    s->tokend = s->base + (size_t)r;
                    if (!sem_scalar(s, TS_VAL_NUMBER, p + i, (size_t)r - i)) goto fail;
                }
                i = (size_t)r;
            } else if (c == ']' && g == G_ARR0) {
                goto close;
            } else if (c == 't' || c == 'f' || c == 'n') {
                r = c == 't' ? lex_literal(s, p, n, i, final, "true", 4)
                  : c == 'f' ? lex_literal(s, p, n, i, final, "false", 5)
                             : lex_literal(s, p, n, i, final, "null", 4);
                if (r <= 0) goto stop;
                if (!s->skip) {
                    s->tokend = s->base + (size_t)r;
                    if (!sem_scalar(s, TS_VAL_OTHER, NULL, 0)) goto fail;
                }
                i = (size_t)r;
            } else {
                syn_fail(s, s->base + i + 1, "invalid char in json text.");
                goto fail;
            }
            if (!s->depth) { g = G_DONE; continue; }
            g = G_NEXT;
            if (i < n) { c = (unsigned char)p[i]; goto next; }
            continue;
        case G_OBJ0:
        case G_KEY:
        key:
            if (c == '"') {
                int esc;
                r = lex_string(s, p, n, i, final, &esc);
                if (r <= 0) goto stop;
                if (!s->skip && s->state != S_DONE) {
                    const char *t = p + i + 1;
                    size_t tl = (size_t)r - i - 2;
                    if (esc && !(t = unescape(s, t, tl, &tl))) goto oom;
                    sem_key(s, t, tl);
                }
                i = (size_t)r;
                g = G_COLON;
                if (i < n && p[i] == ':') {
                    i++;
                    g = G_VAL;
                    if (i < n && (c = (unsigned char)p[i]) > ' ') goto value;
                }
                continue;
            }
            if (c == '}' && g == G_OBJ0) goto close;
            syn_fail(s, s->base + i + 1, "invalid object key (must be a string)");
            goto fail;
        case G_COLON:
            if (c != ':') {
                syn_fail(s, s->base + i + 1, "object key and value must be separated by a colon (':')");
                goto fail;
            }
            i++;
            g = G_VAL;
            continue;
        case G_NEXT:
        next:
            if (c == ',') {
                i++;
                if ((s->objbits >> (s->depth - 1)) & 1) {
                    g = G_KEY;
                    if (i < n && p[i] == '"') { c = '"'; goto key; }
                } else {
                    g = G_VAL;
                }
                continue;
            }
            if (c == '}' || c == ']') {
                if ((c == '}') != (int)((s->objbits >> (s->depth - 1)) & 1)) {
                    syn_fail(s, s->base + i + 1, "unexpected closing bracket");
                    goto fail;
                }
                goto close;
            }
            if (c <= ' ' && is_ws(c)) { i++; continue; }
            syn_fail(s, s->base + i + 1,
                     (s->objbits >> (s->depth - 1)) & 1 ? "after key and value, inside map, I expect ',' or '}'"
                                                        : "after array element, I expect ',' or ']'");
            goto fail;
        default: /* G_DONE */
            syn_fail(s, s->base + i + 1, "trailing garbage");
            goto fail;
        }
    close:
        /* c is the bracket matching the open container (checked above) */
        if (c == '}') sem_close_map(s);
        else sem_close_array(s);
        s->depth--;
        i++;
        if (!s->depth) { g = G_DONE; continue; }
        g = G_NEXT;
        if (i < n) { c = (unsigned char)p[i]; goto next; }
        continue;
    stop:
        if (r < 0) goto fail;
        break; /* LEX_MORE: keep the token for the next feed */
    }
    s->g = g;
    s->base += i;
    return (long)i;
oom:
    snprintf(s->err, sizeof s->err, "TM payload: out of memory unescaping a string");
    s->failed = 1;
fail:
    s->g = g;
    return -1;
}

/* ------------------------------------------------------------- API */

ts_scan *ts_scan_new(ts_scan_kind kind, const ts_scan_sink *sink) {
    ts_scan *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (sink) s->sink = *sink;
    s->ents_key = kind == TS_SCAN_DSSTATS ? "deliveryService" : "caches";
    s->ents_key_len = strlen(s->ents_key);
    s->state = S_START;
    s->g = G_START;
    return s;
}

/* TM's tokens are names and short values; a multi-megabyte one is hostile or
 * broken, and buffering it whole is the only way this scanner can use memory
 * beyond a feed, so it is refused. */
#ifndef SCAN_MAX_TOKEN
#define SCAN_MAX_TOKEN ((size_t)64 << 20)
#endif

static int pend_add(ts_scan *s, const char *p, size_t n) {
    if (s->plen + n > SCAN_MAX_TOKEN) {
        snprintf(s->err, sizeof s->err, "TM payload: a single JSON token longer than %zu MiB", SCAN_MAX_TOKEN >> 20);
        s->failed = 1;
        return -1;
    }
    if (s->pcap - s->plen < n) {
        size_t cap = s->pcap ? s->pcap : 256;
        while (cap - s->plen < n) cap *= 2;
        char *q = realloc(s->pend, cap);
        if (!q) {
            snprintf(s->err, sizeof s->err, "TM payload: out of memory buffering %zu bytes", s->plen + n);
            s->failed = 1;
            return -1;
        }
        s->pend = q;
        s->pcap = cap;
    }
    memcpy(s->pend + s->plen, p, n);
    s->plen += n;
    return 0;
}

int ts_scan_feed(ts_scan *s, const char *buf, size_t len) {
    if (s->failed) return -1;
    s->st.bytes += len;
    size_t used = 0;
    /* Finish the token left over from earlier feeds, copying only about as
     * much of this feed as is already pending; then parse in place. */
    if (s->plen) {
        size_t l0 = s->plen; /* pend[l0 + k] == buf[k] from here on */
        while (used < len) {
            size_t need = s->ptry < SCAN_RELEX_SMALL ? s->ptry + 1 : 2 * s->ptry;
            size_t take = s->plen > 256 ? s->plen : 256;
            if (need > s->plen && need - s->plen > take) take = need - s->plen;
            if (take > len - used) take = len - used;
            if (pend_add(s, buf + used, take) < 0) return -1;
            used += take;
            if (s->plen < need) continue;
            long c = parse(s, s->pend, s->plen, 0);
            if (c < 0) return -1;
            if ((size_t)c >= l0) { /* the rest is still in buf */
                used = (size_t)c - l0;
                s->plen = 0;
                s->ptry = 0;
                break;
            }
            if (c > 0) {
                memmove(s->pend, s->pend + c, s->plen - (size_t)c);
                s->plen -= (size_t)c;
                l0 -= (size_t)c;
            }
            s->ptry = s->plen;
        }
        if (s->plen) return 0;
    }
    if (used < len) {
        long c = parse(s, buf + used, len - used, 0);
        if (c < 0) return -1;
        used += (size_t)c;
        if (used < len) {
            if (pend_add(s, buf + used, len - used) < 0) return -1;
            s->ptry = s->plen;
        }
    }
    return 0;
}

int ts_scan_finish(ts_scan *s) {
    if (s->failed) return -1;
    if (s->plen) {
        if (parse(s, s->pend, s->plen, 1) < 0) return -1;
        s->plen = 0;
    }
    if (s->g != G_DONE) return (int)syn_fail(s, s->base, "premature EOF");
    if (s->state != S_DONE) { /* a scalar top level already failed; kept as a guard */
        snprintf(s->err, sizeof s->err, "TM payload: incomplete JSON object (%llu bytes)",
                 (unsigned long long)s->st.bytes);
        s->failed = 1;
        return -1;
    }
    return 0;
}

const char *ts_scan_error(const ts_scan *s) { return s->err[0] ? s->err : ""; }

const ts_scan_stats *ts_scan_get_stats(const ts_scan *s) { return &s->st; }

void ts_scan_free(ts_scan *s) {
    if (!s) return;
    free(s->pend);
    free(s->ubuf);
    free(s);
}
