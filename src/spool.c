/* Durable on-disk spool (C core): segments of checksummed records, named
 * consumer positions, bounded size, and a reader that survives torn and
 * corrupt data. The format and the guarantees are in include/ts_spool.h;
 * this file holds the reasons behind the mechanics. Single-threaded. */
#include "ts_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "ts_buf.h"
#include "ts_log.h"

#define SEG_HDR 16u
#define REC_HDR 16u
#define PAY_HDR 16u
#define REC_MAGIC 0x31525354u    /* "TSR1" little endian */
static const char seg_magic[8] = {'T', 'S', 'S', 'P', 'S', 'E', 'G', '1'};

/* ---- little-endian fields (the files must not depend on the host) ---- */

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

static uint32_t crc(const void *p, size_t n) {
    /* zlib's crc32 takes uInt lengths: feed big bodies in pieces */
    uLong c = crc32(0L, Z_NULL, 0);
    const unsigned char *b = p;
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

int ts_spool_pos_cmp(ts_spool_pos a, ts_spool_pos b) {
    if (a.seg != b.seg) return a.seg < b.seg ? -1 : 1;
    if (a.off != b.off) return a.off < b.off ? -1 : 1;
    return 0;
}

int ts_spool_fsync_parse(const char *s, ts_spool_fsync *out) {
    static const char *names[] = {"interval", "always", "never"};
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *out = (ts_spool_fsync)i;
            return 0;
        }
    return -1;
}

const char *ts_spool_fsync_name(ts_spool_fsync f) {
    return f == TS_SPOOL_FSYNC_ALWAYS ? "always" : f == TS_SPOOL_FSYNC_NEVER ? "never" : "interval";
}

/* ---- state ---- */

typedef struct seg {
    uint64_t id;
    uint64_t size;    /* bytes of whole records (the open segment: what was committed) */
} seg;

typedef struct outrec {
    ts_spool_pos pos, next;
    int done;
} outrec;

struct ts_spool_consumer {
    ts_spool *s;
    char *name;
    char *file;           /* position file name inside the dir */
    int open;             /* 0: known from its file only (not opened this run) */
    ts_spool_pos acked;   /* persisted (eventually) */
    ts_spool_pos cur;     /* read cursor, >= acked */
    int dirty;            /* acked moved since it was persisted */
    outrec *out;          /* read, not yet acknowledged, in reading order */
    size_t out_head, out_n, out_cap;
    int rfd;              /* read fd of segment rfd_seg, -1 none */
    uint64_t rfd_seg;
    ts_buf buf;           /* the last record's body */
    ts_buf *into;         /* ts_spool_read_into: the caller's buffer instead */
    ts_spool_pos age_pos; /* ts_spool_oldest_age_ms: the record it looked at */
    int64_t age_time_ms;  /* and that record's append time, 0 none */
    char db[128], rp[128];
    uint64_t lines_lost, lines_read, records_read;
};

enum { LOGK_WRITE, LOGK_POS, LOGK_READ, LOGK_CORRUPT, LOGK_TORN, LOGK_FULL, LOGK_N };

struct ts_spool {
    ts_spool_opts o;
    char *dir;
    seg *segs;            /* ascending ids */
    size_t nsegs, segs_cap;
    uint64_t total;       /* sum of segs[].size */
    int wfd;              /* open (last) segment, -1 none */
    uint64_t next_id;
    int failing;          /* the last write attempt failed */
    int64_t failed_at;    /* ts_mono_ms of that failure */
    uint64_t refused;     /* appends refused since the failure started */
    int64_t last_sync;
    int unsynced;
    int64_t last_persist;
    int cleanup_ok;
    uint64_t first_own_seg;   /* segments from this id on were written by this process */
    ts_spool_consumer **cons;
    size_t ncons, cons_cap;
    char **bad_files;     /* position files found corrupt at open */
    size_t nbad;
    int64_t log_at[LOGK_N];
    uint64_t log_skipped[LOGK_N];
    ts_spool_stats st;
    ts_counter *c_lines, *c_fail, *c_dropped, *c_corrupt, *c_torn;
};

/* At most one line per kind and log_interval_ms; the number of suppressed
 * events rides on the next line that is written. */
static int log_ok(ts_spool *s, int kind, uint64_t *suppressed) {
    int64_t now = ts_mono_ms();
    if (s->log_at[kind] != 0 && now - s->log_at[kind] < s->o.log_interval_ms) {
        s->log_skipped[kind]++;
        return 0;
    }
    s->log_at[kind] = now;
    *suppressed = s->log_skipped[kind];
    s->log_skipped[kind] = 0;
    return 1;
}

/* " (N more not logged)" when the rate limit swallowed some */
static const char *more(uint64_t sup, char *buf, size_t n) {
    if (sup == 0) return "";
    snprintf(buf, n, " (%" PRIu64 " more not logged)", sup);
    return buf;
}

static void seg_path(const ts_spool *s, uint64_t id, char *out, size_t n) {
    snprintf(out, n, "%s/%016" PRIx64 ".seg", s->dir, id);
}

static seg *seg_find(ts_spool *s, uint64_t id, size_t *idx) {
    /* first segment with an id >= id */
    size_t lo = 0, hi = s->nsegs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->segs[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    if (idx) *idx = lo;
    return lo < s->nsegs ? &s->segs[lo] : NULL;
}

static int seg_is_open(const ts_spool *s, const seg *g) {
    return s->wfd >= 0 && s->nsegs > 0 && g == &s->segs[s->nsegs - 1];
}

static void fsync_dir(ts_spool *s) {
    if (s->o.fsync == TS_SPOOL_FSYNC_NEVER) return;
    int fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int mkdir_p(const char *dir) {
    char tmp[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp) return errno = ENAMETOOLONG, -1;
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -1;
            tmp[i] = c;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) return errno = ENOTDIR, -1;
    return 0;
}

/* ---- consumer names and position files ---- */

/* Names are free text ("influx:http://host:8086"); file names keep
 * [A-Za-z0-9._-] and %XX the rest, cut with a checksum of the whole name
 * when long. The real name is inside the file. */
static void encode_name(const char *name, ts_buf *out) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
            *p == '_' || *p == '-')
            ts_buf_addc(out, (char)*p);
        else {
            ts_buf_addc(out, '%');
            ts_buf_addc(out, hex[*p >> 4]);
            ts_buf_addc(out, hex[*p & 15]);
        }
    }
}

static int decode_name(const char *enc, char *out, size_t n) {
    size_t j = 0;
    for (const char *p = enc; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            unsigned v;
            if (!p[1] || !p[2] || sscanf(p + 1, "%2x", &v) != 1) return -1;
            c = (int)v;
            p += 2;
        }
        if (c == 0 || j + 1 >= n) return -1;
        out[j++] = (char)c;
    }
    out[j] = '\0';
    return j > 0 ? 0 : -1;
}

static char *pos_file_name(const char *name) {
    ts_buf b;
    ts_buf_init(&b);
    ts_buf_adds(&b, "pos-");
    encode_name(name, &b);
    if (b.len > 180) {
        char tail[16];
        snprintf(tail, sizeof tail, "~%08" PRIx32, crc(name, strlen(name)));
        b.len = 170;
        ts_buf_adds(&b, tail);
    }
    return b.data;   /* ownership to the caller */
}

/* "TSSPPOS1 <encoded name> <seg> <off> <crc32 of what precedes>\n" */
static int pos_write(ts_spool_consumer *c) {
    ts_spool *s = c->s;
    ts_buf line, enc;
    ts_buf_init(&line);
    ts_buf_init(&enc);
    encode_name(c->name, &enc);
    ts_buf_printf(&line, "TSSPPOS1 %s %" PRIu64 " %" PRIu64, enc.data, c->acked.seg, c->acked.off);
    ts_buf_printf(&line, " %08" PRIx32 "\n", crc(line.data, line.len));
    char path[4600], tmp[4610];
    snprintf(path, sizeof path, "%s/%s", s->dir, c->file);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = -1, err = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, line.data, line.len);
        if (w != (ssize_t)line.len) err = w < 0 ? errno : ENOSPC;
        else if (s->o.fsync != TS_SPOOL_FSYNC_NEVER && fsync(fd) != 0) err = errno;
        if (close(fd) != 0 && !err) err = errno;
        if (!err && rename(tmp, path) != 0) err = errno;
        if (err) unlink(tmp);
        else {
            fsync_dir(s);
            rc = 0;
        }
    } else
        err = errno;
    if (rc == 0) c->dirty = 0;
    else {
        uint64_t sup;
        char m[64];
        if (log_ok(s, LOGK_POS, &sup))
            ts_error("spool: cannot save the position of consumer '%s' in %s: %s (retried)%s", c->name, s->dir,
                     strerror(err), more(sup, m, sizeof m));
    }
    ts_buf_free(&line);
    ts_buf_free(&enc);
    return rc;
}

/* Returns 0 with name and position, -1 if the file is not a valid position. */
static int pos_read(ts_spool *s, const char *file, char *name, size_t nlen, ts_spool_pos *p) {
    char path[4600];
    snprintf(path, sizeof path, "%s/%s", s->dir, file);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    char line[1024];
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    char *nl = memchr(line, '\n', n);
    if (!nl || nl + 1 != line + n) return -1;
    *nl = '\0';
    char *last = strrchr(line, ' ');
    if (!last) return -1;
    unsigned long want;
    char *end;
    errno = 0;
    want = strtoul(last + 1, &end, 16);
    if (errno || *end || end - (last + 1) != 8 || crc(line, (size_t)(last - line)) != (uint32_t)want) return -1;
    *last = '\0';
    char enc[900];
    uint64_t sg, off;
    char extra;
    if (sscanf(line, "TSSPPOS1 %899s %" SCNu64 " %" SCNu64 " %c", enc, &sg, &off, &extra) != 3) return -1;
    if (decode_name(enc, name, nlen) != 0) return -1;
    p->seg = sg;
    p->off = off;
    return 0;
}

static ts_spool_consumer *cons_new(ts_spool *s, const char *name, ts_spool_pos at) {
    ts_spool_consumer *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->s = s;
    c->name = strdup(name);
    c->file = pos_file_name(name);
    if (!c->name) abort();
    c->acked = c->cur = at;
    c->rfd = -1;
    ts_buf_init(&c->buf);
    if (s->ncons == s->cons_cap) {
        s->cons_cap = s->cons_cap ? s->cons_cap * 2 : 4;
        s->cons = realloc(s->cons, s->cons_cap * sizeof *s->cons);
        if (!s->cons) abort();
    }
    s->cons[s->ncons++] = c;
    return c;
}

static void cons_free(ts_spool_consumer *c) {
    if (c->rfd >= 0) close(c->rfd);
    ts_buf_free(&c->buf);
    free(c->out);
    free(c->name);
    free(c->file);
    free(c);
}

static void cons_remove(ts_spool *s, size_t i) {
    cons_free(s->cons[i]);
    memmove(&s->cons[i], &s->cons[i + 1], (s->ncons - i - 1) * sizeof *s->cons);
    s->ncons--;
}

/* ---- segments on disk ---- */

static void segs_push(ts_spool *s, uint64_t id, uint64_t size) {
    if (s->nsegs == s->segs_cap) {
        s->segs_cap = s->segs_cap ? s->segs_cap * 2 : 16;
        s->segs = realloc(s->segs, s->segs_cap * sizeof *s->segs);
        if (!s->segs) abort();
    }
    s->segs[s->nsegs++] = (seg){id, size};
    s->total += size;
}

static int seg_cmp(const void *a, const void *b) {
    const seg *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Lines of the whole records from offset `from` on, header checksums only
 * (what max_bytes is about to remove; stops at the first bad header). */
static uint64_t seg_count_lines(ts_spool *s, const seg *g, uint64_t from) {
    char path[4200];
    seg_path(s, g->id, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t lines = 0, off = SEG_HDR;
    unsigned char h[REC_HDR + 4];
    while (off + REC_HDR + PAY_HDR <= g->size) {
        if (pread(fd, h, sizeof h, (off_t)off) != (ssize_t)sizeof h) break;
        if (get32(h) != REC_MAGIC || crc(h, 8) != get32(h + 8)) break;
        uint64_t len = get32(h + 4);
        if (off + REC_HDR + len > g->size) break;
        if (off >= from) lines += get32(h + REC_HDR);
        off += REC_HDR + len;
    }
    close(fd);
    return lines;
}

static void seg_unlink(ts_spool *s, size_t i) {
    char path[4200];
    seg_path(s, s->segs[i].id, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT) {
        uint64_t sup;
        if (log_ok(s, LOGK_WRITE, &sup)) ts_error("spool: cannot remove %s: %s", path, strerror(errno));
    }
    s->total -= s->segs[i].size;
    memmove(&s->segs[i], &s->segs[i + 1], (s->nsegs - i - 1) * sizeof *s->segs);
    s->nsegs--;
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        seg *left = seg_find(s, c->rfd_seg, NULL);
        if (c->rfd >= 0 && (!left || left->id != c->rfd_seg)) {
            /* its segment is gone: reopen on the next read */
            close(c->rfd);
            c->rfd = -1;
        }
    }
}

/* The spool is full: remove the oldest segment (never the open one). Unread
 * lines in it are lost to the consumers behind: counted and logged. */
static void drop_oldest(ts_spool *s) {
    seg g = s->segs[0];
    uint64_t worst = 0;
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        if (ts_spool_pos_cmp(c->cur, (ts_spool_pos){g.id, g.size}) >= 0) continue;
        uint64_t from = c->cur.seg < g.id ? 0 : c->cur.off;
        uint64_t lost = seg_count_lines(s, &g, from);
        c->lines_lost += lost;
        if (lost > worst) worst = lost;
        uint64_t sup;
        char m[64];
        if (log_ok(s, LOGK_FULL, &sup))
            ts_warn("spool: full (max_bytes %" PRIu64 "): oldest segment %016" PRIx64 " removed, %" PRIu64
                    " lines consumer '%s' had not read are lost%s",
                    s->o.max_bytes, g.id, lost, c->name, more(sup, m, sizeof m));
    }
    if (s->ncons == 0) worst = seg_count_lines(s, &g, 0);
    s->st.segments_dropped++;
    s->st.lines_dropped += worst;
    ts_counter_add(s->c_dropped, (int64_t)worst);
    seg_unlink(s, 0);
    /* consumers behind move to the next record that exists */
    ts_spool_pos first = s->nsegs ? (ts_spool_pos){s->segs[0].id, SEG_HDR} : (ts_spool_pos){s->next_id, SEG_HDR};
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        if (ts_spool_pos_cmp(c->cur, first) < 0) c->cur = first;
        if (ts_spool_pos_cmp(c->acked, first) < 0) {
            c->acked = first;
            c->dirty = 1;
        }
    }
}

/* Remove segments every consumer has passed (after ts_spool_consumers_done). */
static void cleanup(ts_spool *s) {
    if (!s->cleanup_ok || s->ncons == 0) return;
    while (s->nsegs > 0 && !seg_is_open(s, &s->segs[0])) {
        seg *g = &s->segs[0];
        ts_spool_pos end = {g->id, g->size};
        int passed = 1;
        for (size_t k = 0; k < s->ncons && passed; k++) {
            ts_spool_pos a = s->cons[k]->acked;
            /* a position just past a sealed segment's last record has passed it */
            if (ts_spool_pos_cmp(a, end) < 0) passed = 0;
        }
        if (!passed) return;
        s->st.segments_removed++;
        seg_unlink(s, 0);
    }
}

/* ---- open / close ---- */

static int scan_dir(ts_spool *s) {
    DIR *d = opendir(s->dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        if (len == 20 && strcmp(n + 16, ".seg") == 0 && strspn(n, "0123456789abcdef") == 16) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", s->dir, n);
            struct stat sb;
            if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
            segs_push(s, strtoull(n, NULL, 16), (uint64_t)sb.st_size);
        } else if (len > 4 && strncmp(n, "pos-", 4) == 0) {
            if (len > 4 && strcmp(n + len - 4, ".tmp") == 0) {
                /* a position write that did not reach its rename */
                char path[4200];
                snprintf(path, sizeof path, "%s/%s", s->dir, n);
                unlink(path);
                continue;
            }
            char name[TS_SPOOL_MAX_NAME + 1];
            ts_spool_pos p;
            if (pos_read(s, n, name, sizeof name, &p) != 0) {
                s->st.bad_positions++;
                ts_error("spool: position file %s/%s is corrupt: ignored (that consumer starts at the oldest record)",
                         s->dir, n);
                s->bad_files = realloc(s->bad_files, (s->nbad + 1) * sizeof *s->bad_files);
                if (!s->bad_files || !(s->bad_files[s->nbad++] = strdup(n))) abort();
                char path[4200];
                snprintf(path, sizeof path, "%s/%s", s->dir, n);
                unlink(path);
                continue;
            }
            cons_new(s, name, p);
        }
    }
    closedir(d);
    if (s->nsegs > 1) qsort(s->segs, s->nsegs, sizeof *s->segs, seg_cmp);
    for (size_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].id >= s->next_id) s->next_id = s->segs[i].id + 1;
    return 0;
}

ts_spool *ts_spool_open(const ts_spool_opts *o, char *err, size_t errlen) {
    if (!o || !o->dir || !*o->dir) {
        snprintf(err, errlen, "spool: no directory");
        return NULL;
    }
    ts_spool *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->o = *o;
    if (!s->o.max_bytes) s->o.max_bytes = 1024ull << 20;
    if (s->o.max_bytes < 65536) {
        snprintf(err, errlen, "spool: max_bytes %" PRIu64 " is below 65536", s->o.max_bytes);
        free(s);
        return NULL;
    }
    if (!s->o.segment_bytes) s->o.segment_bytes = 16ull << 20;
    if (s->o.segment_bytes > s->o.max_bytes / 4) s->o.segment_bytes = s->o.max_bytes / 4;
    if (s->o.fsync_interval_ms <= 0) s->o.fsync_interval_ms = 1000;
    if (s->o.retry_ms <= 0) s->o.retry_ms = 1000;
    if (s->o.log_interval_ms <= 0) s->o.log_interval_ms = 60000;
    s->dir = strdup(o->dir);
    if (!s->dir) abort();
    s->wfd = -1;
    s->next_id = 1;
    s->last_sync = s->last_persist = ts_mono_ms();
    s->c_lines = ts_counter_get("spool_lines_appended");
    s->c_fail = ts_counter_get("spool_append_failures");
    s->c_dropped = ts_counter_get("spool_lines_dropped");
    s->c_corrupt = ts_counter_get("spool_corrupt_records");
    s->c_torn = ts_counter_get("spool_torn_tails");
    int scanned = mkdir_p(s->dir) == 0 && scan_dir(s) == 0;
    s->first_own_seg = s->next_id;
    if (!scanned) {
        /* not fatal: the first append retries and logs */
        ts_error("spool: cannot use directory %s: %s (points stay in memory until it works)", s->dir,
                 strerror(errno));
        s->failing = 1;
        s->failed_at = 0;
        s->log_at[LOGK_WRITE] = ts_mono_ms();
    } else if (s->nsegs > 0 || s->ncons > 0) {
        ts_info("spool: %s holds %zu segment(s), %" PRIu64 " bytes, %zu consumer position(s)", s->dir, s->nsegs,
                s->total, s->ncons);
    }
    return s;
}

static int seal(ts_spool *s) {
    int rc = 0;
    if (s->wfd < 0) return 0;
    if (s->o.fsync != TS_SPOOL_FSYNC_NEVER && s->unsynced) {
        if (fdatasync(s->wfd) != 0) rc = -1;
        s->st.fsyncs++;
    }
    close(s->wfd);
    s->wfd = -1;
    s->unsynced = 0;
    return rc;
}

void ts_spool_close(ts_spool *s) {
    if (!s) return;
    ts_spool_sync(s);
    seal(s);
    for (size_t k = 0; k < s->ncons; k++) cons_free(s->cons[k]);
    for (size_t k = 0; k < s->nbad; k++) free(s->bad_files[k]);
    free(s->bad_files);
    free(s->cons);
    free(s->segs);
    free(s->dir);
    free(s);
}

/* ---- appending ---- */

static void write_failed(ts_spool *s, int err, const char *what) {
    s->failing = 1;
    s->failed_at = ts_mono_ms();
    uint64_t sup;
    if (log_ok(s, LOGK_WRITE, &sup))
        ts_error("spool: cannot %s in %s: %s; points stay in memory (bounded) and spooling is retried "
                 "(%" PRIu64 " appends refused so far)",
                 what, s->dir, strerror(err), s->refused + 1);
}

static int seg_create(ts_spool *s) {
    if (mkdir_p(s->dir) != 0) {
        write_failed(s, errno, "create the spool directory");
        return -1;
    }
    char path[4200];
    uint64_t id = s->next_id;
    seg_path(s, id, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    for (int tries = 0; fd < 0 && errno == EEXIST && tries < 1000; tries++) {
        /* segments appeared that the start did not see (the dir was unavailable then) */
        id = ++s->next_id;
        seg_path(s, id, path, sizeof path);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        write_failed(s, errno, "create a spool segment");
        return -1;
    }
    unsigned char h[SEG_HDR];
    memcpy(h, seg_magic, 8);
    put64(h + 8, id);
    ssize_t w = write(fd, h, sizeof h);
    if (w != (ssize_t)sizeof h) {
        int e = w < 0 ? errno : ENOSPC;
        close(fd);
        unlink(path);
        write_failed(s, e, "create a spool segment");
        return -1;
    }
    s->next_id = id + 1;
    s->wfd = fd;
    s->unsynced = 1;
    segs_push(s, id, SEG_HDR);
    fsync_dir(s);
    return 0;
}

static int write_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) return errno = ENOSPC, -1;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int refuse(ts_spool *s) {
    s->refused++;
    s->st.append_failures++;
    ts_counter_add(s->c_fail, 1);
    return -1;
}

int ts_spool_append(ts_spool *s, const char *db, const char *rp, ts_precision prec, const char *body, size_t len,
                    size_t lines) {
    if (!rp) rp = "";
    size_t dbl = strlen(db), rpl = strlen(rp);
    uint64_t sup;
    if (dbl == 0 || dbl > 127 || rpl > 127 || len == 0 || body[len - 1] != '\n' || lines == 0 ||
        lines > UINT32_MAX || len > TS_SPOOL_MAX_RECORD || REC_HDR + PAY_HDR + dbl + rpl + len > s->o.max_bytes / 2) {
        if (log_ok(s, LOGK_WRITE, &sup))
            ts_error("spool: record for %s refused (%zu bytes, %zu lines): not a valid or storable chunk", db, len,
                     lines);
        return refuse(s);
    }
    if (s->failing && s->failed_at != 0 && ts_mono_ms() - s->failed_at < s->o.retry_ms) return refuse(s);
    uint64_t need = REC_HDR + PAY_HDR + dbl + rpl + len;
    if (s->wfd >= 0) {
        seg *g = &s->segs[s->nsegs - 1];
        if (g->size > SEG_HDR && g->size + need > s->o.segment_bytes) seal(s);
    }
    if (s->wfd < 0 && seg_create(s) != 0) return refuse(s);
    while (s->total + need > s->o.max_bytes) {
        if (s->nsegs > 1) drop_oldest(s);
        else {
            /* only the open segment is left: start a new one so it can go */
            seal(s);
            if (seg_create(s) != 0) return refuse(s);
        }
    }
    unsigned char rh[REC_HDR], ph[PAY_HDR];
    put32(ph, (uint32_t)lines);
    ph[4] = (unsigned char)prec;
    ph[5] = (unsigned char)dbl;
    ph[6] = (unsigned char)rpl;
    ph[7] = 0; /* kind: line protocol */
    put64(ph + 8, (uint64_t)ts_now_ms());
    uLong pc = crc32(0L, Z_NULL, 0);
    pc = crc32(pc, ph, PAY_HDR);
    pc = crc32(pc, (const Bytef *)db, (uInt)dbl);
    pc = crc32(pc, (const Bytef *)rp, (uInt)rpl);
    pc = crc32(pc, (const Bytef *)body, (uInt)len);   /* len <= TS_SPOOL_MAX_RECORD fits uInt */
    put32(rh, REC_MAGIC);
    put32(rh + 4, (uint32_t)(need - REC_HDR));
    put32(rh + 8, crc(rh, 8));
    put32(rh + 12, (uint32_t)pc);
    struct iovec iov[5] = {{rh, REC_HDR}, {ph, PAY_HDR}, {(void *)db, dbl}, {(void *)rp, rpl}, {(void *)body, len}};
    seg *g = &s->segs[s->nsegs - 1];
    if (write_all(s->wfd, iov, 5) != 0) {
        int e = errno;
        /* take the partial record back, or the segment would hold garbage
         * in its middle; if even that fails, abandon the segment (readers
         * stop at its committed size; a restart sees a torn tail there) */
        if (ftruncate(s->wfd, (off_t)g->size) != 0) {
            close(s->wfd);
            s->wfd = -1;
        }
        write_failed(s, e, "append to the spool");
        return refuse(s);
    }
    g->size += need;
    s->total += need;
    s->unsynced = 1;
    s->st.records_appended++;
    s->st.lines_appended += lines;
    s->st.bytes_appended += need;
    ts_counter_add(s->c_lines, (int64_t)lines);
    if (s->failing) {
        ts_info("spool: writing to %s again (%" PRIu64 " appends were refused meanwhile)", s->dir, s->refused);
        s->failing = 0;
        s->refused = 0;
        s->log_at[LOGK_WRITE] = 0;
    }
    if (s->o.fsync == TS_SPOOL_FSYNC_ALWAYS ||
        (s->o.fsync == TS_SPOOL_FSYNC_INTERVAL && ts_mono_ms() - s->last_sync >= s->o.fsync_interval_ms)) {
        if (fdatasync(s->wfd) != 0) {
            /* the data is in the kernel; only durability on power loss is in doubt */
            if (log_ok(s, LOGK_WRITE, &sup)) ts_error("spool: fdatasync in %s: %s", s->dir, strerror(errno));
        }
        s->st.fsyncs++;
        s->unsynced = 0;
        s->last_sync = ts_mono_ms();
    }
    return 0;
}

static void persist_dirty(ts_spool *s) {
    for (size_t k = 0; k < s->ncons; k++)
        if (s->cons[k]->dirty) pos_write(s->cons[k]);
    s->last_persist = ts_mono_ms();
}

void ts_spool_tick(ts_spool *s) {
    int64_t now = ts_mono_ms();
    if (s->wfd >= 0 && s->unsynced && s->o.fsync == TS_SPOOL_FSYNC_INTERVAL &&
        now - s->last_sync >= s->o.fsync_interval_ms) {
        fdatasync(s->wfd);
        s->st.fsyncs++;
        s->unsynced = 0;
        s->last_sync = now;
    }
    if (now - s->last_persist >= s->o.fsync_interval_ms) persist_dirty(s);
    cleanup(s);
}

int ts_spool_sync(ts_spool *s) {
    int rc = 0;
    if (s->wfd >= 0 && s->unsynced && s->o.fsync != TS_SPOOL_FSYNC_NEVER) {
        if (fdatasync(s->wfd) != 0) rc = -1;
        s->st.fsyncs++;
        s->unsynced = 0;
        s->last_sync = ts_mono_ms();
    }
    for (size_t k = 0; k < s->ncons; k++)
        if (s->cons[k]->dirty && pos_write(s->cons[k]) != 0) rc = -1;
    s->last_persist = ts_mono_ms();
    cleanup(s);
    return rc;
}

int ts_spool_writable(const ts_spool *s) { return !s->failing; }

void ts_spool_get_stats(const ts_spool *s, ts_spool_stats *st) {
    *st = s->st;
    st->bytes = s->total;
    st->segments = s->nsegs;
}

/* ---- consumers ---- */

ts_spool_consumer *ts_spool_consumer_open(ts_spool *s, const char *name, ts_spool_start start) {
    if (!name || !*name || strlen(name) > TS_SPOOL_MAX_NAME) return NULL;
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        if (strcmp(c->name, name) != 0) continue;
        if (c->open) return NULL;
        c->open = 1;
        /* a position older than every segment: the data it pointed at is gone */
        ts_spool_pos first = s->nsegs ? (ts_spool_pos){s->segs[0].id, 0} : (ts_spool_pos){s->next_id, 0};
        if (ts_spool_pos_cmp(c->acked, first) < 0) c->acked = first;
        /* past the end (segments removed by hand, a file from elsewhere): new
         * records would go before it and never be read, so start at the end */
        ts_spool_pos end = {s->next_id, SEG_HDR};
        if (s->wfd >= 0) end = (ts_spool_pos){s->segs[s->nsegs - 1].id, s->segs[s->nsegs - 1].size};
        if (ts_spool_pos_cmp(c->acked, end) > 0) {
            s->st.bad_positions++;
            ts_error("spool: consumer '%s' had a position past the end of %s: it starts at the end", c->name,
                     s->dir);
            c->acked = end;
            c->dirty = 1;
        }
        c->cur = c->acked;
        return c;
    }
    char *file = pos_file_name(name);
    for (size_t k = 0; k < s->nbad; k++)
        if (strcmp(s->bad_files[k], file) == 0) start = TS_SPOOL_START_OLDEST;   /* at-least-once */
    free(file);
    ts_spool_pos at;
    if (start == TS_SPOOL_START_OLDEST || s->nsegs == 0)
        at = s->nsegs ? (ts_spool_pos){s->segs[0].id, SEG_HDR} : (ts_spool_pos){s->next_id, SEG_HDR};
    else {
        const seg *g = &s->segs[s->nsegs - 1];
        at = (ts_spool_pos){g->id, g->size};
    }
    ts_spool_consumer *c = cons_new(s, name, at);
    c->open = 1;
    c->dirty = 1;
    pos_write(c);
    return c;
}

void ts_spool_consumers_done(ts_spool *s) {
    for (size_t k = s->ncons; k-- > 0;) {
        ts_spool_consumer *c = s->cons[k];
        if (c->open) continue;
        ts_info("spool: consumer '%s' is not configured any more: its position is removed", c->name);
        char path[4600];
        snprintf(path, sizeof path, "%s/%s", s->dir, c->file);
        unlink(path);
        cons_remove(s, k);
    }
    s->cleanup_ok = 1;
    cleanup(s);
}

void ts_spool_consumer_close(ts_spool_consumer *c) {
    if (!c) return;
    ts_spool *s = c->s;
    if (c->dirty) pos_write(c);
    for (size_t k = 0; k < s->ncons; k++)
        if (s->cons[k] == c) {
            cons_remove(s, k);
            break;
        }
}

const char *ts_spool_consumer_name(const ts_spool_consumer *c) { return c->name; }
ts_spool_pos ts_spool_acked(const ts_spool_consumer *c) { return c->acked; }

static void count_corrupt(ts_spool_consumer *c, const seg *g, uint64_t off, const char *why) {
    ts_spool *s = c->s;
    s->st.corrupt_records++;
    ts_counter_add(s->c_corrupt, 1);
    uint64_t sup;
    char m[64];
    if (log_ok(s, LOGK_CORRUPT, &sup))
        ts_error("spool: corrupt data in segment %016" PRIx64 " at offset %" PRIu64 " (%s): skipped%s", g->id, off,
                 why, more(sup, m, sizeof m));
}

static void count_torn(ts_spool_consumer *c, const seg *g, uint64_t off) {
    ts_spool *s = c->s;
    s->st.torn_tails++;
    ts_counter_add(s->c_torn, 1);
    uint64_t sup;
    char m[64];
    if (log_ok(s, LOGK_TORN, &sup))
        ts_warn("spool: segment %016" PRIx64 " ends with an incomplete record at offset %" PRIu64
                " (%" PRIu64 " bytes, a crash while writing): skipped%s",
                g->id, off, g->size - off, more(sup, m, sizeof m));
}

static int read_error(ts_spool_consumer *c, const char *what, int err) {
    uint64_t sup;
    char m[64];
    if (log_ok(c->s, LOGK_READ, &sup))
        ts_error("spool: consumer '%s': cannot %s in %s: %s%s", c->name, what, c->s->dir, strerror(err),
                 more(sup, m, sizeof m));
    return -1;
}

/* Whether the payload at `off` matches its checksum (error path only: tells
 * a damaged record from a well-formed one we do not understand). */
static int crc_payload_ok(ts_spool_consumer *c, uint64_t off, uint64_t len, uint32_t want) {
    ts_buf tmp;
    ts_buf_init(&tmp);
    ts_buf_reserve(&tmp, (size_t)len + 1);
    ssize_t n = pread(c->rfd, tmp.data, (size_t)len, (off_t)(off + REC_HDR));
    int ok = n == (ssize_t)len && crc(tmp.data, (size_t)len) == want;
    ts_buf_free(&tmp);
    return ok;
}

/* Offset of the next plausible record header in [from, end), or end. */
static uint64_t resync(int fd, uint64_t from, uint64_t end) {
    unsigned char win[65536];
    uint64_t off = from;
    while (off + REC_HDR <= end) {
        size_t want = end - off < sizeof win ? (size_t)(end - off) : sizeof win;
        ssize_t n = pread(fd, win, want, (off_t)off);
        if (n < (ssize_t)REC_HDR) break;
        for (size_t i = 0; i + REC_HDR <= (size_t)n; i++) {
            if (win[i] != 'T' || get32(win + i) != REC_MAGIC) continue;
            if (crc(win + i, 8) == get32(win + i + 8)) return off + i;
        }
        /* the last REC_HDR-1 bytes may begin a header split by the window */
        off += (uint64_t)n - (REC_HDR - 1);
    }
    return end;
}

static size_t count_lines(const char *p, size_t n) {
    size_t k = 0;
    const char *e = p + n;
    while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

static void out_push(ts_spool_consumer *c, ts_spool_pos pos, ts_spool_pos next) {
    if (c->out_head > 0 && c->out_head + c->out_n == c->out_cap) {
        memmove(c->out, c->out + c->out_head, c->out_n * sizeof *c->out);
        c->out_head = 0;
    }
    if (c->out_head + c->out_n == c->out_cap) {
        c->out_cap = c->out_cap ? c->out_cap * 2 : 16;
        c->out = realloc(c->out, c->out_cap * sizeof *c->out);
        if (!c->out) abort();
    }
    c->out[c->out_head + c->out_n++] = (outrec){pos, next, 0};
}

int ts_spool_read(ts_spool_consumer *c, ts_spool_rec *r) {
    ts_spool *s = c->s;
    for (;;) {
        size_t idx;
        seg *g = seg_find(s, c->cur.seg, &idx);
        if (!g) return 0;
        if (g->id != c->cur.seg || c->cur.off < SEG_HDR) {
            /* its segment was removed, or a fresh position: the first record of this one */
            c->cur = (ts_spool_pos){g->id, SEG_HDR};
        }
        int is_open = seg_is_open(s, g);
        int last = idx + 1 == s->nsegs;
        if (c->cur.off >= g->size) {
            if (last) return 0;
            c->cur = (ts_spool_pos){s->segs[idx + 1].id, SEG_HDR};
            continue;
        }
        if (c->rfd < 0 || c->rfd_seg != g->id) {
            if (c->rfd >= 0) close(c->rfd);
            char path[4200];
            seg_path(s, g->id, path, sizeof path);
            c->rfd = open(path, O_RDONLY | O_CLOEXEC);
            if (c->rfd < 0) return read_error(c, "open a segment", errno);
            c->rfd_seg = g->id;
            unsigned char h[SEG_HDR];
            ssize_t n = pread(c->rfd, h, SEG_HDR, 0);
            if (n < 0) return read_error(c, "read a segment", errno);
            if (n < (ssize_t)SEG_HDR || memcmp(h, seg_magic, 8) != 0 || get64(h + 8) != g->id) {
                if (n < (ssize_t)SEG_HDR) count_torn(c, g, 0);
                else count_corrupt(c, g, 0, "bad segment header");
                s->st.skipped_bytes += g->size;
                c->cur.off = g->size;
                continue;
            }
        }
        uint64_t off = c->cur.off, remain = g->size - off;
        unsigned char h[REC_HDR];
        if (remain < REC_HDR) {
            if (is_open) return 0;
            count_torn(c, g, off);
            c->cur.off = g->size;
            continue;
        }
        ssize_t n = pread(c->rfd, h, REC_HDR, (off_t)off);
        if (n < 0) return read_error(c, "read a segment", errno);
        if (n < (ssize_t)REC_HDR) {
            /* shorter on disk than we thought: cut outside our control */
            count_torn(c, g, off);
            c->cur.off = g->size;
            continue;
        }
        if (get32(h) != REC_MAGIC || crc(h, 8) != get32(h + 8)) {
            uint64_t next = resync(c->rfd, off + 1, g->size);
            /* garbage up to the end of a closed segment is its torn tail
             * (e.g. blocks a power loss left zeroed) */
            if (next == g->size && !is_open) count_torn(c, g, off);
            else count_corrupt(c, g, off, "bad record header");
            s->st.skipped_bytes += next - off;
            c->cur.off = next;
            continue;
        }
        uint64_t len = get32(h + 4);
        if (len > remain - REC_HDR) {
            if (is_open) return 0;   /* cannot happen: appends commit whole records */
            count_torn(c, g, off);
            s->st.skipped_bytes += remain;
            c->cur.off = g->size;
            continue;
        }
        /* The payload in two reads: its header with db and rp, then the body
         * straight into the destination buffer (no copy of megabytes). */
        ts_spool_pos here = c->cur;
        c->cur.off = off + REC_HDR + len;
        unsigned char ph[PAY_HDR + 254];
        size_t hl = len < sizeof ph ? (size_t)len : sizeof ph;
        if (len < PAY_HDR + 2) {
            count_corrupt(c, g, off, "short payload");
            continue;
        }
        n = pread(c->rfd, ph, hl, (off_t)(off + REC_HDR));
        if (n < 0) return read_error(c, "read a segment", errno);
        if ((size_t)n < hl) {
            count_torn(c, g, off);
            c->cur.off = g->size;
            continue;
        }
        uint32_t nl = get32(ph);
        unsigned prec = ph[4], dbl = ph[5], rpl = ph[6], kind = ph[7];
        if (kind != 0 || prec > TS_PREC_H || dbl == 0 || dbl > 127 || rpl > 127 || PAY_HDR + dbl + rpl >= len) {
            /* checked before the checksum: a wrong header cannot be a record we wrote either way */
            count_corrupt(c, g, off, crc_payload_ok(c, off, len, get32(h + 12)) ? "bad payload header"
                                                                               : "payload checksum mismatch");
            continue;
        }
        size_t body_off = PAY_HDR + dbl + rpl, blen = (size_t)len - body_off;
        ts_buf *dst = c->into ? c->into : &c->buf;
        if (!c->into) ts_buf_reset(dst);
        size_t at = dst->len;
        ts_buf_reserve(dst, blen + 1);
        size_t got = 0;
        while (got < blen) {
            n = pread(c->rfd, dst->data + at + got, blen - got, (off_t)(off + REC_HDR + body_off + got));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return read_error(c, "read a segment", errno);
            if (n == 0) break;
            got += (size_t)n;
        }
        if (got < blen) {
            count_torn(c, g, off);
            c->cur.off = g->size;
            continue;
        }
        char *body = dst->data + at;
        body[blen] = '\0';
        /* Segments this process wrote in this run were checked when they were
         * made: what comes back from them is what append had in memory. Anything
         * older (a previous run, a crash) is checked in full. */
        int own = g->id >= s->first_own_seg;
        if (!own) {
            uLong pc = crc32(0L, Z_NULL, 0);
            pc = crc32(pc, ph, (uInt)body_off);
            pc = crc32(pc, (const Bytef *)body, (uInt)blen);   /* blen < TS_SPOOL_MAX_RECORD fits */
            if ((uint32_t)pc != get32(h + 12)) {
                count_corrupt(c, g, off, "payload checksum mismatch");
                continue;
            }
        }
        /* a checksum only proves what was written; check it is what we write */
        const char *db = (const char *)ph + PAY_HDR, *rp = db + dbl;
        if (memchr(db, '\0', dbl) || memchr(rp, '\0', rpl) || body[blen - 1] != '\n' || nl == 0 ||
            (!own && count_lines(body, blen) != nl)) {
            count_corrupt(c, g, off, "inconsistent payload");
            continue;
        }
        dst->len = at + blen;
        const unsigned char *p = ph;
        memcpy(c->db, db, dbl);
        c->db[dbl] = '\0';
        memcpy(c->rp, rp, rpl);
        c->rp[rpl] = '\0';
        r->db = c->db;
        r->rp = c->rp;
        r->precision = (ts_precision)prec;
        r->body = body;
        r->len = blen;
        r->lines = nl;
        r->time_ms = (int64_t)get64(p + 8);
        r->pos = here;
        r->next = c->cur;
        c->lines_read += nl;
        c->records_read++;
        out_push(c, here, c->cur);
        return 1;
    }
}

int ts_spool_read_into(ts_spool_consumer *c, ts_spool_rec *r, ts_buf *out) {
    c->into = out;
    size_t before = out->len;
    int rc = ts_spool_read(c, r);
    c->into = NULL;
    if (rc != 1) {
        out->len = before;   /* skipped records leave nothing behind */
        if (out->data) out->data[before] = '\0';
    }
    return rc;
}

static void set_acked(ts_spool_consumer *c, ts_spool_pos p) {
    if (ts_spool_pos_cmp(p, c->acked) <= 0) return;
    c->acked = p;
    c->dirty = 1;
    if (ts_spool_pos_cmp(c->cur, p) < 0) c->cur = p;
    cleanup(c->s);
}

void ts_spool_ack(ts_spool_consumer *c, ts_spool_pos upto) {
    while (c->out_n > 0 && ts_spool_pos_cmp(c->out[c->out_head].next, upto) <= 0) {
        c->out_head++;
        c->out_n--;
    }
    if (c->out_n == 0) c->out_head = 0;
    set_acked(c, upto);
}

void ts_spool_ack_one(ts_spool_consumer *c, ts_spool_pos pos) {
    for (size_t i = 0; i < c->out_n; i++) {
        outrec *o = &c->out[c->out_head + i];
        if (ts_spool_pos_cmp(o->pos, pos) == 0) {
            o->done = 1;
            break;
        }
    }
    ts_spool_pos upto = c->acked;
    while (c->out_n > 0 && c->out[c->out_head].done) {
        upto = c->out[c->out_head].next;
        c->out_head++;
        c->out_n--;
    }
    if (c->out_n == 0) c->out_head = 0;
    set_acked(c, upto);
}

void ts_spool_rewind(ts_spool_consumer *c) {
    c->out_head = c->out_n = 0;
    c->cur = c->acked;
}

static uint64_t bytes_from(const ts_spool *s, ts_spool_pos p) {
    uint64_t b = 0;
    for (size_t i = 0; i < s->nsegs; i++) {
        const seg *g = &s->segs[i];
        if (g->id > p.seg) b += g->size - SEG_HDR;
        else if (g->id == p.seg && g->size > p.off) b += g->size - (p.off < SEG_HDR ? SEG_HDR : p.off);
    }
    return b;
}

void ts_spool_consumer_stats(const ts_spool_consumer *c, ts_spool_cstats *st) {
    st->backlog_bytes = bytes_from(c->s, c->acked);
    st->unread_bytes = bytes_from(c->s, c->cur);
    st->lines_lost = c->lines_lost;
    st->lines_read = c->lines_read;
    st->records_read = c->records_read;
}

/* The first whole record at or after p: its append time, 0 if there is none. */
static int64_t time_at(ts_spool *s, ts_spool_pos p, ts_spool_pos *at) {
    for (;;) {
        size_t idx;
        seg *g = seg_find(s, p.seg, &idx);
        if (!g) return 0;
        if (g->id != p.seg || p.off < SEG_HDR) p = (ts_spool_pos){g->id, SEG_HDR};
        if (p.off + REC_HDR + PAY_HDR > g->size) {
            if (idx + 1 == s->nsegs) return 0;
            p = (ts_spool_pos){s->segs[idx + 1].id, SEG_HDR};
            continue;
        }
        *at = p;
        char path[4200];
        seg_path(s, g->id, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 0;
        unsigned char h[REC_HDR + PAY_HDR];
        ssize_t n = pread(fd, h, sizeof h, (off_t)p.off);
        close(fd);
        if (n != (ssize_t)sizeof h || get32(h) != REC_MAGIC || crc(h, 8) != get32(h + 8)) return 0;
        return (int64_t)get64(h + REC_HDR + 8);
    }
}

int64_t ts_spool_oldest_age_ms(ts_spool_consumer *c) {
    ts_spool *s = c->s;
    ts_spool_pos at = c->acked;
    if (s->nsegs == 0 || ts_spool_pos_cmp(at, (ts_spool_pos){s->segs[s->nsegs - 1].id, s->segs[s->nsegs - 1].size}) >= 0)
        return -1;
    if (c->age_time_ms == 0 || ts_spool_pos_cmp(c->age_pos, at) != 0) {
        ts_spool_pos rec = at;
        c->age_time_ms = time_at(s, at, &rec);
        c->age_pos = at;
    }
    if (c->age_time_ms == 0) return -1;
    int64_t age = ts_now_ms() - c->age_time_ms;
    return age < 0 ? 0 : age;
}
