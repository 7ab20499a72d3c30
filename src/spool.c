/* Durable on-disk spool (C core): segments and appends, the size bound,
 * consumers and their positions, and the read loop that counts and logs what
 * the record reader (src/spool_read.c) found. Bytes on disk are in
 * src/spool_fmt.c; the format and the guarantees in include/ts_spool.h.
 * Single-threaded. */
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

#include "ts_buf.h"
#include "ts_log.h"
#include "ts_spool_acks.h"
#include "ts_spool_fmt.h"
#include "ts_spool_read.h"
#include "ts_spool_seg.h"
#include "ts_spool_sync.h"

#define SEG_HDR TS_SPOOL_SEG_HDR
#define REC_HDR TS_SPOOL_REC_HDR
#define PAY_HDR TS_SPOOL_PAY_HDR

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

typedef ts_spool_seg seg;

struct ts_spool_consumer {
    ts_spool *s;
    char *name;
    char *file;           /* position file name inside the dir */
    int open;             /* 0: known from its file only (not opened this run) */
    ts_spool_pos acked;   /* persisted (eventually) */
    ts_spool_pos cur;     /* read cursor, >= acked */
    int dirty;            /* acked moved since it was persisted */
    ts_spool_fifo out;    /* read, not yet acknowledged, in reading order */
    int rfd;              /* read fd of segment rfd_seg, -1 none */
    uint64_t rfd_seg;
    ts_buf buf;           /* the last record's body */
    ts_buf raw;           /* the last compact record as read, before it is encoded */
    ts_buf *into;         /* ts_spool_read_into: the caller's buffer instead */
    ts_spool_pos age_pos; /* ts_spool_oldest_age_ms: the record it looked at */
    int64_t age_time_ms;  /* and that record's append time, 0 none */
    char db[128], rp[128];
    uint64_t lines_lost, lines_read, records_read;
    ts_spool_fifo claims; /* appended records sent from memory, ahead of cur (ts_spool_claim) */
};

enum { LOGK_WRITE, LOGK_POS, LOGK_READ, LOGK_CORRUPT, LOGK_TORN, LOGK_FULL, LOGK_N };

struct ts_spool {
    ts_spool_opts o;
    char *dir;
    ts_spool_segs sg;     /* the segment files */
    int failing;          /* the last write attempt failed */
    int64_t failed_at;    /* ts_mono_ms of that failure */
    uint64_t refused;     /* appends refused since the failure started */
    int64_t last_sync;    /* when the last fdatasync was asked for */
    int unsynced;         /* appends since then */
    uint64_t seq;         /* appends of this process (their sequence numbers) */
    ts_spool_syncer *sy;  /* the sync thread; NULL with fsync "never" */
    uint64_t sync_failures_seen;
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

/* ---- consumer position files ---- */

static int pos_write(ts_spool_consumer *c) {
    ts_spool *s = c->s;
    int err = 0;
    int rc = ts_spool_pos_write(s->dir, c->file, c->name, c->acked.seg, c->acked.off,
                                s->o.fsync != TS_SPOOL_FSYNC_NEVER, ".tmp", &err);
    if (rc == 0) c->dirty = 0;
    else {
        uint64_t sup;
        char m[64];
        if (log_ok(s, LOGK_POS, &sup))
            ts_error("spool: cannot save the position of consumer '%s' in %s: %s (retried)%s", c->name, s->dir,
                     strerror(err), more(sup, m, sizeof m));
    }
    return rc;
}

static ts_spool_consumer *cons_new(ts_spool *s, const char *name, ts_spool_pos at) {
    ts_spool_consumer *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->s = s;
    c->name = strdup(name);
    c->file = ts_spool_pos_file_name(name);
    if (!c->name) abort();
    c->acked = c->cur = at;
    c->rfd = -1;
    ts_buf_init(&c->buf);
    ts_buf_init(&c->raw);
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
    ts_buf_free(&c->raw);
    ts_spool_fifo_free(&c->out);
    ts_spool_fifo_free(&c->claims);
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

static void seg_unlink(ts_spool *s, size_t i) {
    uint64_t id = s->sg.v[i].id;
    if (ts_spool_segs_remove(&s->sg, i) != 0) {
        uint64_t sup;
        if (log_ok(s, LOGK_WRITE, &sup))
            ts_error("spool: cannot remove segment %016" PRIx64 " in %s: %s", id, s->dir, strerror(errno));
    }
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        seg *left = ts_spool_segs_find(&s->sg, c->rfd_seg, NULL);
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
    seg g = s->sg.v[0];
    uint64_t worst = 0;
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        if (ts_spool_pos_cmp(c->cur, (ts_spool_pos){g.id, g.size}) >= 0) continue;
        uint64_t from = c->cur.seg < g.id ? 0 : c->cur.off;
        uint64_t lost = ts_spool_segs_count_lines(&s->sg, &g, from);
        c->lines_lost += lost;
        if (lost > worst) worst = lost;
        uint64_t sup;
        char m[64];
        if (log_ok(s, LOGK_FULL, &sup))
            ts_warn("spool: full (max_bytes %" PRIu64 "): oldest segment %016" PRIx64 " removed, %" PRIu64
                    " lines consumer '%s' had not read are lost%s",
                    s->o.max_bytes, g.id, lost, c->name, more(sup, m, sizeof m));
    }
    if (s->ncons == 0) worst = ts_spool_segs_count_lines(&s->sg, &g, 0);
    s->st.segments_dropped++;
    s->st.lines_dropped += worst;
    ts_counter_add(s->c_dropped, (int64_t)worst);
    seg_unlink(s, 0);
    /* consumers behind move to the next record that exists */
    ts_spool_pos first = s->sg.n ? (ts_spool_pos){s->sg.v[0].id, SEG_HDR} : (ts_spool_pos){s->sg.next_id, SEG_HDR};
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
    while (s->sg.n > 0 && !ts_spool_segs_is_open(&s->sg, &s->sg.v[0])) {
        seg *g = &s->sg.v[0];
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
        if (len > 4 && strncmp(n, "pos-", 4) == 0) {
            if (len > 4 && strcmp(n + len - 4, ".tmp") == 0) {
                /* a position write that did not reach its rename */
                char path[4200];
                snprintf(path, sizeof path, "%s/%s", s->dir, n);
                unlink(path);
                continue;
            }
            char name[TS_SPOOL_MAX_NAME + 1];
            ts_spool_pos p;
            if (ts_spool_pos_read(s->dir, n, name, sizeof name, &p.seg, &p.off) != 0) {
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
    return ts_spool_segs_scan(&s->sg);
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
    ts_spool_segs_init(&s->sg, s->dir, 0);   /* the directory is synced by the thread */
    s->last_sync = s->last_persist = ts_mono_ms();
    s->c_lines = ts_counter_get("spool_lines_appended");
    s->c_fail = ts_counter_get("spool_append_failures");
    s->c_dropped = ts_counter_get("spool_lines_dropped");
    s->c_corrupt = ts_counter_get("spool_corrupt_records");
    s->c_torn = ts_counter_get("spool_torn_tails");
    if (s->o.fsync != TS_SPOOL_FSYNC_NEVER) s->sy = ts_spool_syncer_new(s->dir, s->o.sync_hook, s->o.sync_hook_arg);
    int scanned = ts_spool_mkdir(s->dir) == 0 && scan_dir(s) == 0;
    s->first_own_seg = s->sg.next_id;
    if (!scanned) {
        /* not fatal: the first append retries and logs */
        ts_error("spool: cannot use directory %s: %s (points stay in memory until it works)", s->dir,
                 strerror(errno));
        s->failing = 1;
        s->failed_at = 0;
        s->log_at[LOGK_WRITE] = ts_mono_ms();
    } else if (s->sg.n > 0 || s->ncons > 0) {
        ts_info("spool: %s holds %zu segment(s), %" PRIu64 " bytes, %zu consumer position(s)", s->dir, s->sg.n,
                s->sg.total, s->ncons);
    }
    return s;
}

static void seal(ts_spool *s) {
    if (s->sg.wfd < 0) return;
    if (s->sy && s->unsynced) ts_spool_sync_data(s->sy, s->sg.wfd, s->sg.v[s->sg.n - 1].id, s->seq, 1);
    else close(s->sg.wfd);   /* (a sync already asked for holds its own descriptor) */
    s->sg.wfd = -1;
    s->unsynced = 0;
}

void ts_spool_close(ts_spool *s) {
    if (!s) return;
    ts_spool_sync(s);
    seal(s);
    ts_spool_syncer_free(s->sy);   /* after every job asked for */
    for (size_t k = 0; k < s->ncons; k++) cons_free(s->cons[k]);
    for (size_t k = 0; k < s->nbad; k++) free(s->bad_files[k]);
    free(s->bad_files);
    free(s->cons);
    ts_spool_segs_free(&s->sg);
    free(s->dir);
    free(s);
}

/* Periodic saves go to the sync thread (a failure there marks every
 * position dirty again, see sync_check); the saves that must be on disk
 * before going on (a new consumer, a close) are made here. */
static void persist_dirty(ts_spool *s) {
    for (size_t k = 0; k < s->ncons; k++) {
        ts_spool_consumer *c = s->cons[k];
        if (!c->dirty) continue;
        if (s->sy) {
            ts_spool_sync_pos(s->sy, c->file, c->name, c->acked.seg, c->acked.off);
            c->dirty = 0;
        } else
            pos_write(c);
    }
    s->last_persist = ts_mono_ms();
}

/* What the sync thread did: failures logged (rate-limited), positions saved again. */
static void sync_check(ts_spool *s) {
    if (!s->sy) return;
    ts_spool_sync_state y;
    ts_spool_sync_get(s->sy, &y);
    if (y.failures == s->sync_failures_seen) return;
    s->sync_failures_seen = y.failures;
    for (size_t k = 0; k < s->ncons; k++) s->cons[k]->dirty = 1;
    uint64_t sup;
    if (log_ok(s, LOGK_WRITE, &sup))
        ts_error("spool: a disk sync in %s failed: %s (the data is in the kernel; retried)", s->dir,
                 strerror(y.last_errno));
    s->unsynced = 1;
}

/* Asks the sync thread for an fdatasync of the open segment (everything up
 * to the last append). */
static void sync_request(ts_spool *s) {
    if (!s->sy || s->sg.wfd < 0 || !s->unsynced) return;
    ts_spool_sync_data(s->sy, s->sg.wfd, s->sg.v[s->sg.n - 1].id, s->seq, 0);
    s->unsynced = 0;
    s->last_sync = ts_mono_ms();
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
    const char *what = "";
    if (ts_spool_segs_create(&s->sg, &what) != 0) {
        write_failed(s, errno, what);
        return -1;
    }
    s->unsynced = 1;
    if (s->sy) ts_spool_sync_dir(s->sy);
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
    return ts_spool_append_at(s, db, rp, prec, body, len, lines, NULL, NULL);
}

int ts_spool_append_at(ts_spool *s, const char *db, const char *rp, ts_precision prec, const char *body, size_t len,
                       size_t lines, ts_spool_pos *at, ts_spool_pos *next) {
    return ts_spool_append_kind(s, db, rp, prec, TS_SPOOL_KIND_LP, body, len, lines, at, next);
}

int ts_spool_append_kind(ts_spool *s, const char *db, const char *rp, ts_precision prec, int kind, const char *body,
                         size_t len, size_t lines, ts_spool_pos *at, ts_spool_pos *next) {
    if (!rp) rp = "";
    size_t dbl = strlen(db), rpl = strlen(rp);
    uint64_t sup;
    if (dbl == 0 || dbl > 127 || rpl > 127 || len == 0 || (kind == TS_SPOOL_KIND_LP && body[len - 1] != '\n') ||
        (kind != TS_SPOOL_KIND_LP && kind != TS_SPOOL_KIND_COMPACT) || lines == 0 ||
        lines > UINT32_MAX || len > TS_SPOOL_MAX_RECORD || REC_HDR + PAY_HDR + dbl + rpl + len > s->o.max_bytes / 2) {
        if (log_ok(s, LOGK_WRITE, &sup))
            ts_error("spool: record for %s refused (%zu bytes, %zu lines): not a valid or storable chunk", db, len,
                     lines);
        return refuse(s);
    }
    if (s->failing && s->failed_at != 0 && ts_mono_ms() - s->failed_at < s->o.retry_ms) return refuse(s);
    uint64_t need = REC_HDR + PAY_HDR + dbl + rpl + len;
    if (s->sg.wfd >= 0) {
        seg *g = &s->sg.v[s->sg.n - 1];
        if (g->size > SEG_HDR && g->size + need > s->o.segment_bytes) seal(s);
    }
    if (s->sg.wfd < 0 && seg_create(s) != 0) return refuse(s);
    while (s->sg.total + need > s->o.max_bytes) {
        if (s->sg.n > 1) drop_oldest(s);
        else {
            /* only the open segment is left: start a new one so it can go */
            seal(s);
            if (seg_create(s) != 0) return refuse(s);
        }
    }
    unsigned char rh[REC_HDR], ph[PAY_HDR];
    ts_put32(ph, (uint32_t)lines);
    ph[4] = (unsigned char)prec;
    ph[5] = (unsigned char)dbl;
    ph[6] = (unsigned char)rpl;
    ph[7] = (unsigned char)kind;
    ts_put64(ph + 8, (uint64_t)ts_now_ms());
    int ver = ts_spool_rec_version();
    uint32_t pc = ts_spool_sum(ver, 0, ph, PAY_HDR);
    pc = ts_spool_sum(ver, pc, db, dbl);
    pc = ts_spool_sum(ver, pc, rp, rpl);
    pc = ts_spool_sum(ver, pc, body, len);
    ts_spool_hdr_make(rh, ver, (uint32_t)(need - REC_HDR), pc);
    struct iovec iov[5] = {{rh, REC_HDR}, {ph, PAY_HDR}, {(void *)db, dbl}, {(void *)rp, rpl}, {(void *)body, len}};
    ts_spool_pos here = {s->sg.v[s->sg.n - 1].id, s->sg.v[s->sg.n - 1].size};
    if (ts_spool_segs_append(&s->sg, iov, 5, need) != 0) {
        write_failed(s, errno, "append to the spool");
        return refuse(s);
    }
    if (at) *at = here;
    if (next) *next = (ts_spool_pos){here.seg, here.off + need};
    s->unsynced = 1;
    s->seq++;
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
        (s->o.fsync == TS_SPOOL_FSYNC_INTERVAL && ts_mono_ms() - s->last_sync >= s->o.fsync_interval_ms))
        sync_request(s);
    return 0;
}

void ts_spool_tick(ts_spool *s) {
    int64_t now = ts_mono_ms();
    sync_check(s);
    if (s->o.fsync != TS_SPOOL_FSYNC_NEVER && now - s->last_sync >= s->o.fsync_interval_ms) sync_request(s);
    if (now - s->last_persist >= s->o.fsync_interval_ms) persist_dirty(s);
    cleanup(s);
}

int ts_spool_sync(ts_spool *s) {
    int rc = 0;
    if (s->sy) {
        /* a stop or an explicit sync: wait for the disk here */
        uint64_t before = s->sync_failures_seen;
        sync_request(s);
        ts_spool_sync_wait(s->sy);
        sync_check(s);
        if (s->sync_failures_seen != before) rc = -1;
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
    if (s->sy) {
        ts_spool_sync_state y;
        ts_spool_sync_get(s->sy, &y);
        st->fsyncs = y.fsyncs;
        st->records_synced = y.durable_seq;
        st->sync_busy = y.busy;
    }
    st->bytes = s->sg.total;
    st->segments = s->sg.n;
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
        ts_spool_pos first = s->sg.n ? (ts_spool_pos){s->sg.v[0].id, 0} : (ts_spool_pos){s->sg.next_id, 0};
        if (ts_spool_pos_cmp(c->acked, first) < 0) c->acked = first;
        /* past the end (segments removed by hand, a file from elsewhere): new
         * records would go before it and never be read, so start at the end */
        ts_spool_pos end = {s->sg.next_id, SEG_HDR};
        if (s->sg.wfd >= 0) end = (ts_spool_pos){s->sg.v[s->sg.n - 1].id, s->sg.v[s->sg.n - 1].size};
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
    char *file = ts_spool_pos_file_name(name);
    for (size_t k = 0; k < s->nbad; k++)
        if (strcmp(s->bad_files[k], file) == 0) start = TS_SPOOL_START_OLDEST;   /* at-least-once */
    free(file);
    ts_spool_pos at;
    if (start == TS_SPOOL_START_OLDEST || s->sg.n == 0)
        at = s->sg.n ? (ts_spool_pos){s->sg.v[0].id, SEG_HDR} : (ts_spool_pos){s->sg.next_id, SEG_HDR};
    else {
        const seg *g = &s->sg.v[s->sg.n - 1];
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

/* Records sent from memory are not read again: the cursor passes over a
 * claimed record, which joins the read ones in reading order. */
static void advance_done(ts_spool_consumer *c);
static int claim_skip(ts_spool_consumer *c) {
    ts_spool_oref *o;
    while ((o = ts_spool_fifo_first(&c->claims)) && ts_spool_pos_cmp(o->pos, c->cur) < 0)
        ts_spool_fifo_pop(&c->claims);   /* in a segment removed for max_bytes: lost with it */
    if (!o || ts_spool_pos_cmp(o->pos, c->cur) != 0) return 0;
    ts_spool_oref k = *o;
    ts_spool_fifo_pop(&c->claims);
    ts_spool_fifo_push(&c->out, k.pos, k.next, k.done);
    c->cur = k.next;
    if (k.done) advance_done(c);   /* answered before the replay reached it */
    return 1;
}

void ts_spool_claim(ts_spool_consumer *c, ts_spool_pos pos, ts_spool_pos next) {
    ts_spool *s = c->s;
    /* the cursor at the end of a sealed segment is at the next one's start */
    size_t idx;
    ts_spool_seg *g = ts_spool_segs_find(&s->sg, c->cur.seg, &idx);
    if (g && g->id == c->cur.seg && c->cur.off >= g->size && idx + 1 < s->sg.n)
        c->cur = (ts_spool_pos){s->sg.v[idx + 1].id, SEG_HDR};
    if (c->claims.n == 0 && ts_spool_pos_cmp(pos, c->cur) == 0) {
        ts_spool_fifo_push(&c->out, pos, next, 0);   /* nothing to replay before it: as if read */
        c->cur = next;
    } else
        ts_spool_fifo_push(&c->claims, pos, next, 0);
}

int ts_spool_read(ts_spool_consumer *c, ts_spool_rec *r) {
    ts_spool *s = c->s;
    for (;;) {
        size_t idx;
        seg *g = ts_spool_segs_find(&s->sg, c->cur.seg, &idx);
        if (!g) return 0;
        if (g->id != c->cur.seg || c->cur.off < SEG_HDR) {
            /* its segment was removed, or a fresh position: the first record of this one */
            c->cur = (ts_spool_pos){g->id, SEG_HDR};
        }
        if (c->cur.off >= g->size) {
            if (idx + 1 == s->sg.n) return 0;
            c->cur = (ts_spool_pos){s->sg.v[idx + 1].id, SEG_HDR};
            continue;
        }
        if (claim_skip(c)) continue;
        ts_spool_rd rd;
        rd.is_open = ts_spool_segs_is_open(&s->sg, g);
        rd.size = g->size;
        /* segments this process wrote were checked when they were made */
        rd.trusted = g->id >= s->first_own_seg;
        if (c->rfd < 0 || c->rfd_seg != g->id) {
            if (c->rfd >= 0) close(c->rfd);
            char path[4200];
            ts_spool_segs_path(&s->sg, g->id, path, sizeof path);
            c->rfd = open(path, O_RDONLY | O_CLOEXEC);
            if (c->rfd < 0) return read_error(c, "open a segment", errno);
            c->rfd_seg = g->id;
            rd.fd = c->rfd;
            ts_spool_rd_kind k = ts_spool_rd_segment(&rd, g->id);
            if (k == TS_SPOOL_RD_ERROR) return read_error(c, "read a segment", rd.err);
            if (k != TS_SPOOL_RD_RECORD) {
                if (k == TS_SPOOL_RD_TORN) count_torn(c, g, 0);
                else count_corrupt(c, g, 0, rd.why);
                s->st.skipped_bytes += g->size;
                c->cur.off = g->size;
                continue;
            }
        }
        rd.fd = c->rfd;
        rd.scratch = &c->raw;
        ts_buf *dst = c->into ? c->into : &c->buf;
        if (!c->into) ts_buf_reset(dst);
        uint64_t off = c->cur.off;
        ts_spool_rd_kind k = ts_spool_rd_next(&rd, off, dst);
        if (k == TS_SPOOL_RD_WAIT) return 0;
        if (k == TS_SPOOL_RD_ERROR) return read_error(c, "read a segment", rd.err);
        s->st.skipped_bytes += rd.skipped;
        ts_spool_pos here = c->cur;
        c->cur.off = rd.next;
        if (k == TS_SPOOL_RD_TORN) {
            count_torn(c, g, off);
            continue;
        }
        if (k == TS_SPOOL_RD_CORRUPT) {
            count_corrupt(c, g, off, rd.why);
            continue;
        }
        memcpy(c->db, rd.db, sizeof c->db);
        memcpy(c->rp, rd.rp, sizeof c->rp);
        r->db = c->db;
        r->rp = c->rp;
        r->precision = rd.precision;
        r->body = dst->data + rd.body_at;
        r->len = rd.body_len;
        r->lines = rd.lines;
        r->kind = rd.kind;
        r->time_ms = rd.time_ms;
        r->pos = here;
        r->next = c->cur;
        c->lines_read += rd.lines;
        c->records_read++;
        ts_spool_fifo_push(&c->out, here, c->cur, 0);
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
    ts_spool_fifo_pop_upto(&c->out, upto);
    set_acked(c, upto);
}

void ts_spool_ack_one(ts_spool_consumer *c, ts_spool_pos pos) {
    /* a claimed record the cursor has not passed is counted when it does */
    if (!ts_spool_fifo_mark(&c->out, pos)) ts_spool_fifo_mark(&c->claims, pos);
    advance_done(c);
}

static void advance_done(ts_spool_consumer *c) {
    ts_spool_pos upto;
    if (ts_spool_fifo_pop_done(&c->out, &upto)) set_acked(c, upto);
}

void ts_spool_rewind(ts_spool_consumer *c) {
    ts_spool_fifo_clear(&c->out);
    c->cur = c->acked;
}

void ts_spool_consumer_stats(const ts_spool_consumer *c, ts_spool_cstats *st) {
    st->replay_bytes = ts_spool_segs_bytes_from(&c->s->sg, c->acked.seg, c->acked.off);
    /* one older record not answered holds the position; those answered after it are not backlog */
    uint64_t done = ts_spool_fifo_done_bytes(&c->out, c->acked) + ts_spool_fifo_done_bytes(&c->claims, c->acked);
    st->backlog_bytes = st->replay_bytes > done ? st->replay_bytes - done : 0;
    st->unread_bytes = ts_spool_segs_bytes_from(&c->s->sg, c->cur.seg, c->cur.off);
    st->lines_lost = c->lines_lost;
    st->lines_read = c->lines_read;
    st->records_read = c->records_read;
}

int64_t ts_spool_oldest_age_ms(ts_spool_consumer *c) {
    ts_spool *s = c->s;
    ts_spool_pos at = c->acked;
    if (s->sg.n == 0 || ts_spool_pos_cmp(at, (ts_spool_pos){s->sg.v[s->sg.n - 1].id, s->sg.v[s->sg.n - 1].size}) >= 0)
        return -1;
    if (c->age_time_ms == 0 || ts_spool_pos_cmp(c->age_pos, at) != 0) {
        c->age_time_ms = ts_spool_segs_time_at(&s->sg, at.seg, at.off);
        c->age_pos = at;
    }
    if (c->age_time_ms == 0) return -1;
    int64_t age = ts_now_ms() - c->age_time_ms;
    return age < 0 ? 0 : age;
}
