/* tstats-sim fixture mode (C, test side): the monitors of one CDN serve recorded
 * legacy TM payloads (CacheStats, DsStats) byte-for-byte, except that every "time"
 * integer is shifted by one delta so the newest sample is "now" (whole second).
 * The TO servers list is built from the cache names of the CacheStats fixture. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"
#include "ts_log.h"

#define FX_MAX_FILE ((size_t)512 << 20)
#define FX_MAX_DEPTH 256
#define FX_MAX_NAMES 100000

/* A "time" integer found in the file: where its digits are, and its value. */
typedef struct fx_time {
    size_t off, len;
    int64_t v;
} fx_time;

typedef struct fx_doc {
    const char *path;
    char *data;
    size_t len;
    fx_time *times;
    size_t ntimes, cap;
    size_t nskipped;        /* "time" values that are not integers: left alone */
    const char *names_key;  /* top-level key whose object's keys we collect */
    int names_found;
    char **names;
    int nnames;
    const char *err;        /* static text, or errbuf */
    char errbuf[256];
    int positioned;         /* a parse error: err_at is meaningful */
    size_t err_at;
} fx_doc;

typedef struct fx_parser {
    fx_doc *d;
    const char *s; /* NUL-terminated copy of the file */
    size_t i;
} fx_parser;

static int fail(fx_parser *p, const char *msg) {
    if (!p->d->err) {
        p->d->err = msg;
        p->d->err_at = p->i;
        p->d->positioned = 1;
    }
    return -1;
}

static void ws(fx_parser *p) {
    while (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r') p->i++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_utf8(ts_buf *b, unsigned cp) {
    char u[4];
    if (cp < 0x80) {
        ts_buf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 63));
        ts_buf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 63));
        u[2] = (char)(0x80 | (cp & 63));
        ts_buf_add(b, u, 3);
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 63));
        u[2] = (char)(0x80 | ((cp >> 6) & 63));
        u[3] = (char)(0x80 | (cp & 63));
        ts_buf_add(b, u, 4);
    }
}

static int read_u4(fx_parser *p, unsigned *cp) {
    *cp = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i]);
        if (h < 0) return fail(p, "bad \\u escape");
        *cp = *cp * 16 + (unsigned)h;
        p->i++;
    }
    return 0;
}

/* A JSON string at p->i (on the quote); decoded into out (may be NULL). */
static int str(fx_parser *p, ts_buf *out) {
    if (p->s[p->i] != '"') return fail(p, "string expected");
    p->i++;
    for (;;) {
        unsigned char ch = (unsigned char)p->s[p->i];
        if (ch == '"') break;
        if (ch == '\0') return fail(p, "unterminated string");
        if (ch < 0x20) return fail(p, "control character in string");
        if (ch != '\\') {
            if (out) ts_buf_addc(out, (char)ch);
            p->i++;
            continue;
        }
        p->i++;
        char e = p->s[p->i++];
        switch (e) {
        case '"': case '\\': case '/': if (out) ts_buf_addc(out, e); break;
        case 'b': if (out) ts_buf_addc(out, '\b'); break;
        case 'f': if (out) ts_buf_addc(out, '\f'); break;
        case 'n': if (out) ts_buf_addc(out, '\n'); break;
        case 'r': if (out) ts_buf_addc(out, '\r'); break;
        case 't': if (out) ts_buf_addc(out, '\t'); break;
        case 'u': {
            unsigned cp;
            if (read_u4(p, &cp) < 0) return -1;
            /* A surrogate pair is one code point; a lone half becomes U+FFFD. */
            if (cp >= 0xd800 && cp < 0xdc00 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                size_t save = p->i;
                unsigned lo;
                p->i += 2;
                if (read_u4(p, &lo) < 0) return -1;
                if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else {
                    p->i = save;
                    cp = 0xfffd;
                }
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd;
            }
            if (out) put_utf8(out, cp);
            break;
        }
        default: p->i--; return fail(p, "bad escape in string");
        }
    }
    p->i++;
    return 0;
}

/* A JSON number; *is_int set when it has no fraction or exponent and fits int64. */
static int number(fx_parser *p, int *is_int, int64_t *v) {
    size_t st = p->i;
    int neg = 0, frac = 0;
    if (p->s[p->i] == '-') neg = 1, p->i++;
    if (p->s[p->i] == '0') {
        p->i++;
    } else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
        while (p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    } else {
        return fail(p, "bad number");
    }
    if (p->s[p->i] == '.') {
        frac = 1;
        p->i++;
        if (p->s[p->i] < '0' || p->s[p->i] > '9') return fail(p, "bad number");
        while (p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    if (p->s[p->i] == 'e' || p->s[p->i] == 'E') {
        frac = 1;
        p->i++;
        if (p->s[p->i] == '+' || p->s[p->i] == '-') p->i++;
        if (p->s[p->i] < '0' || p->s[p->i] > '9') return fail(p, "bad number");
        while (p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    size_t digits = p->i - st - (size_t)neg;
    *is_int = !frac && digits <= 18; /* 18 digits always fit int64, and the shift cannot overflow */
    if (*is_int) {
        int64_t x = 0;
        for (size_t k = st + (size_t)neg; k < p->i; k++) x = x * 10 + (p->s[k] - '0');
        *v = neg ? -x : x;
    }
    return 0;
}

static void add_time(fx_doc *d, size_t off, size_t len, int64_t v) {
    if (d->ntimes == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->times = realloc(d->times, d->cap * sizeof *d->times);
        if (!d->times) abort();
    }
    d->times[d->ntimes++] = (fx_time){off, len, v};
}

/* collect: this value is the object whose keys are the cache / DS names. */
static int value(fx_parser *p, int depth, int is_time, int collect) {
    if (depth > FX_MAX_DEPTH) return fail(p, "nested too deeply");
    ws(p);
    char c = p->s[p->i];
    if (c == '{') {
        p->i++;
        ws(p);
        if (p->s[p->i] == '}') {
            p->i++;
            return 0;
        }
        ts_buf key;
        ts_buf_init(&key);
        for (;;) {
            ws(p);
            ts_buf_reset(&key);
            if (str(p, &key) < 0) break;
            const char *k = key.data ? key.data : "";
            if (collect) {
                if (p->d->nnames >= FX_MAX_NAMES) {
                    fail(p, "too many names");
                    break;
                }
                if (p->d->nnames % 64 == 0) {
                    p->d->names = realloc(p->d->names, (size_t)(p->d->nnames + 64) * sizeof *p->d->names);
                    if (!p->d->names) abort();
                }
                p->d->names[p->d->nnames++] = strdup(k);
            }
            ws(p);
            if (p->s[p->i] != ':') {
                fail(p, "':' expected");
                break;
            }
            p->i++;
            int want = depth == 0 && !strcmp(k, p->d->names_key);
            if (want) {
                ws(p);
                if (p->s[p->i] != '{') {
                    fail(p, "the names member is not an object");
                    break;
                }
                p->d->names_found = 1;
            }
            if (value(p, depth + 1, !strcmp(k, "time"), want) < 0) break;
            ws(p);
            if (p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->s[p->i] == '}') {
                p->i++;
                ts_buf_free(&key);
                return 0;
            }
            fail(p, "',' or '}' expected");
            break;
        }
        ts_buf_free(&key);
        return -1;
    }
    if (c == '[') {
        p->i++;
        ws(p);
        if (p->s[p->i] == ']') {
            p->i++;
            return 0;
        }
        for (;;) {
            if (value(p, depth + 1, 0, 0) < 0) return -1;
            ws(p);
            if (p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->s[p->i] == ']') {
                p->i++;
                return 0;
            }
            return fail(p, "',' or ']' expected");
        }
    }
    if (c == '"') {
        if (is_time) p->d->nskipped++;
        return str(p, NULL);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        size_t st = p->i;
        int is_int;
        int64_t v = 0;
        if (number(p, &is_int, &v) < 0) return -1;
        if (is_time && is_int) add_time(p->d, st, p->i - st, v);
        else if (is_time) p->d->nskipped++;
        return 0;
    }
    static const char *const lit[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lit[k]);
        if (!strncmp(p->s + p->i, lit[k], n)) {
            if (is_time) p->d->nskipped++;
            p->i += n;
            return 0;
        }
    }
    return fail(p, "value expected");
}

static int load_doc(fx_doc *d, const char *path, const char *names_key) {
    memset(d, 0, sizeof *d);
    d->path = path;
    d->names_key = names_key;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(d->errbuf, sizeof d->errbuf, "cannot open: %s", strerror(errno));
        d->err = d->errbuf;
        return -1;
    }
    ts_buf b;
    ts_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (b.len + n > FX_MAX_FILE) {
            fclose(fp);
            ts_buf_free(&b);
            d->err = "file larger than 512 MiB";
            return -1;
        }
        ts_buf_add(&b, chunk, n);
    }
    int rerr = ferror(fp);
    fclose(fp);
    if (rerr) {
        ts_buf_free(&b);
        d->err = "read error";
        return -1;
    }
    ts_buf_add(&b, "", 0); /* the parser relies on a NUL after the data, also for an empty file */
    d->data = b.data;
    d->len = b.len;
    if (memchr(d->data, '\0', d->len)) {
        d->err = "NUL byte in file";
        return -1;
    }
    fx_parser p = {d, d->data, 0};
    ws(&p);
    if (p.s[p.i] != '{') return fail(&p, "the payload is not a JSON object");
    if (value(&p, 0, 0, 0) < 0) return -1;
    ws(&p);
    if (p.i != d->len) return fail(&p, "trailing data after the JSON object");
    if (!d->names_found) {
        snprintf(d->errbuf, sizeof d->errbuf, "no top-level \"%s\" object", names_key);
        d->err = d->errbuf;
        return -1;
    }
    return 0;
}

static void free_doc(fx_doc *d) {
    free(d->data);
    free(d->times);
    for (int i = 0; i < d->nnames; i++) free(d->names[i]);
    free(d->names);
    memset(d, 0, sizeof *d);
}

/* The file with every recorded "time" integer moved by delta; nothing else changes. */
static sim_payload *shifted(const fx_doc *d, int64_t delta) {
    ts_buf b;
    ts_buf_init(&b);
    ts_buf_reserve(&b, d->len + d->ntimes * 4 + 1);
    size_t at = 0;
    char num[24];
    for (size_t k = 0; k < d->ntimes; k++) {
        const fx_time *t = &d->times[k];
        ts_buf_add(&b, d->data + at, t->off - at);
        ts_buf_add(&b, num, ts_sim_fmt_i64(num, t->v + delta));
        at = t->off + t->len;
    }
    ts_buf_add(&b, d->data + at, d->len - at);
    return ts_sim_payload_from_buf(&b);
}

static int doc_error(const fx_doc *d, const char *what, char *err, size_t errn) {
    if (d->positioned)
        snprintf(err, errn, "%s fixture %s: invalid JSON: %s at byte %zu", what, d->path, d->err, d->err_at);
    else
        snprintf(err, errn, "%s fixture %s: %s", what, d->path, d->err);
    return -1;
}

int ts_sim_fixture_load(const char *cs_path, const char *ds_path, const char *cdn, char *err, size_t errn) {
    sim_state *S = &ts_sim;
    if (!cdn || !*cdn || strlen(cdn) >= sizeof S->cdns->name || strlen(cdn) >= sizeof S->fixture_cdn) {
        snprintf(err, errn, "--fixture-cdn wants 1 to %zu characters", sizeof S->fixture_cdn - 1);
        return -1;
    }
    fx_doc cs, ds;
    if (load_doc(&cs, cs_path, "caches") < 0) {
        doc_error(&cs, "CacheStats", err, errn);
        free_doc(&cs);
        return -1;
    }
    if (load_doc(&ds, ds_path, "deliveryService") < 0) {
        doc_error(&ds, "DsStats", err, errn);
        free_doc(&cs);
        free_doc(&ds);
        return -1;
    }
    for (int i = 0; i < cs.nnames; i++) {
        size_t n = strlen(cs.names[i]);
        if (n == 0 || n >= sizeof S->caches->host) {
            snprintf(err, errn, "CacheStats fixture %s: cache name \"%.60s\" is not usable as a TO hostName (1-%zu bytes)",
                     cs_path, cs.names[i], sizeof S->caches->host - 1);
            free_doc(&cs);
            free_doc(&ds);
            return -1;
        }
    }
    /* One delta for both files, so samples keep their offsets across payloads too. */
    int have = 0;
    int64_t newest = 0;
    const fx_doc *docs[2] = {&cs, &ds};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < docs[k]->ntimes; i++)
            if (!have || docs[k]->times[i].v > newest) newest = docs[k]->times[i].v, have = 1;
    int64_t now_s = ts_now_ms() / 1000 * 1000;
    S->fixture = 1;
    snprintf(S->fixture_cdn, sizeof S->fixture_cdn, "%s", cdn);
    S->fixture_delta_ms = have ? now_s - newest : 0;
    S->fixture_newest_ms = have ? newest : 0;
    for (int k = 0; k < 2; k++) {
        S->fx_body[k] = shifted(docs[k], S->fixture_delta_ms);
        S->fx_gz[k] = ts_sim_gzip(S->fx_body[k]->data, S->fx_body[k]->len);
        S->fx_ntimes[k] = (int)docs[k]->ntimes;
        if (docs[k]->nskipped)
            ts_warn("%s: %zu \"time\" values are not integers and were left unshifted", docs[k]->path,
                    docs[k]->nskipped);
    }
    /* The names move into the sim state; the parsed texts are no longer needed. */
    S->fx_hosts = cs.names;
    S->nfx_hosts = cs.nnames;
    cs.names = NULL;
    cs.nnames = 0;
    S->fx_ds = ds.names;
    S->nfx_ds = ds.nnames;
    ds.names = NULL;
    ds.nnames = 0;
    ts_info("fixture: CDN %s, %d caches (%zu times) from %s, %d delivery services (%zu times) from %s, "
            "time delta %lld ms",
            S->fixture_cdn, S->nfx_hosts, cs.ntimes, cs_path, S->nfx_ds, ds.ntimes, ds_path,
            (long long)S->fixture_delta_ms);
    free_doc(&cs);
    free_doc(&ds);
    /* The model then has exactly the fixture's caches and delivery services. */
    S->ncdn = 1;
    S->ncache_per_cdn = S->nfx_hosts;
    S->nds_per_cdn = S->nfx_ds;
    S->ncg = 2;
    return 0;
}

/* After ts_sim_build_model: names and types as Traffic Control's CDN-in-a-Box,
 * which is what ATC's expected output for these payloads uses. */
void ts_sim_fixture_apply_model(void) {
    sim_state *S = &ts_sim;
    _Static_assert(sizeof S->cdns[0].name == sizeof S->fixture_cdn, "CDN name buffers differ");
    memcpy(S->cdns[0].name, S->fixture_cdn, sizeof S->fixture_cdn); /* NUL-terminated by the load */
    snprintf(S->cg_names[0], sizeof S->cg_names[0], "CDN_in_a_Box_Edge");
    snprintf(S->cg_names[1], sizeof S->cg_names[1], "CDN_in_a_Box_Mid");
    for (int i = 0; i < S->ncache && i < S->nfx_hosts; i++) {
        sim_cache *c = &S->caches[i];
        snprintf(c->host, sizeof c->host, "%s", S->fx_hosts[i]);
        c->type = strncmp(c->host, "mid", 3) == 0 ? SIM_MID : SIM_EDGE;
        c->cg = c->type == SIM_MID ? 1 : 0;
    }
}

void ts_sim_fixture_free(void) {
    sim_state *S = &ts_sim;
    for (int k = 0; k < 2; k++) {
        ts_sim_payload_unref(S->fx_body[k]);
        ts_sim_payload_unref(S->fx_gz[k]);
        S->fx_body[k] = S->fx_gz[k] = NULL;
    }
    for (int i = 0; i < S->nfx_hosts; i++) free(S->fx_hosts[i]);
    for (int i = 0; i < S->nfx_ds; i++) free(S->fx_ds[i]);
    free(S->fx_hosts);
    free(S->fx_ds);
    S->fx_hosts = S->fx_ds = NULL;
    S->nfx_hosts = S->nfx_ds = 0;
}
