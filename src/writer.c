/* InfluxDB 1.x writer (C core; Lua only submits batches through the API).
 * Buffers batches per destination, encodes them lazily into chunks (one chunk
 * per free send slot, so at most max_inflight+1 encoded chunks exist besides
 * the retry queue), POSTs /write on the shared loop, classifies answers as
 * ts_writer.h documents, retries with backoff and URL failover, and keeps
 * the memory it holds under max_buffer_bytes by dropping the oldest data. */
#include "ts_writer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_log.h"

/* ---- batches ---- */

/* A compact batch holds what a poll produced until the publishing tick, so its
 * size per point is what the daemon's memory grows with (issue 4: 30 s of
 * polls are pending at any time). A cache's stats of one poll share the
 * entity and, in Traffic Monitor's answers, the time stamp: those live once
 * per run, and a point is only a batch-local stat index and the value (12
 * bytes, against 32 for an unpacked ts_cpoint). */
typedef struct crun {
    const ts_entity_map *ent;
    int64_t time_ms;
    size_t start;         /* index of its first point */
} crun;

typedef struct cpt {
    uint32_t stat;        /* index into ts_batch.stats */
    unsigned char value[sizeof(double)];   /* keeps the struct 4-aligned: 12 bytes */
} cpt;

struct ts_batch {
    ts_dest dest;
    int compact;
    cpt *pts;
    size_t n, cap;
    crun *runs;
    size_t nruns, runs_cap;
    const ts_stat_map **stats;    /* distinct stat maps of the batch */
    uint32_t nstats, stats_cap;
    uint32_t *stat_slots;         /* open addressing over stats: index + 1, 0 = empty */
    uint32_t slots_mask;
    uint32_t last_stat;           /* stats arrive in the same order for every cache */
    ts_map_owner owner;
    int has_owner;
    ts_buf text;          /* '\n'-terminated lines */
    size_t nlines;
    size_t pos;           /* compact: next point; text: byte offset of next line */
    size_t run_pos;       /* compact: run holding point `pos` */
    size_t lines_done;    /* text: lines already taken */
    uint64_t seq;         /* arrival order across the writer: age for "drop oldest" */
    struct ts_batch *next;
};

static void batch_set_dest(ts_batch *b, const ts_dest *d) {
    b->dest = *d;
    b->dest.db[sizeof b->dest.db - 1] = '\0';
    b->dest.rp[sizeof b->dest.rp - 1] = '\0';
}

static ts_batch *batch_alloc(const ts_dest *d) {
    ts_batch *b = calloc(1, sizeof *b);
    if (!b) abort();
    batch_set_dest(b, d);
    ts_buf_init(&b->text);
    return b;
}

static void batch_set_owner(ts_batch *b, const ts_map_owner *owner) {
    if (owner && owner->retain) {
        /* one reference per batch: the maps must outlive every point in it */
        b->owner = *owner;
        b->has_owner = 1;
        owner->retain(owner->owner);
    }
}

ts_batch *ts_batch_new_compact(const ts_dest *d, const ts_map_owner *owner) {
    ts_batch *b = batch_alloc(d);
    b->compact = 1;
    batch_set_owner(b, owner);
    return b;
}

static void *resize(void *p, size_t n, size_t elem) {
    p = realloc(p, n * elem);
    if (!p) abort();
    return p;
}

static void *grow(void *p, size_t *cap, size_t elem, size_t first) {
    *cap = *cap ? *cap * 2 : first;
    return resize(p, *cap, elem);
}

void ts_batch_reserve(ts_batch *b, size_t points, size_t runs) {
    if (!b->compact) return;
    /* a little headroom: the next poll may bring a few more caches or stats, and
     * one point over capacity would double (and copy) the whole array */
    points += points / 8 + 64;
    runs += runs / 8 + 16;
    if (b->cap < points) {
        b->pts = resize(b->pts, points, sizeof *b->pts);
        b->cap = points;
    }
    if (b->runs_cap < runs) {
        b->runs = resize(b->runs, runs, sizeof *b->runs);
        b->runs_cap = runs;
    }
}

size_t ts_batch_runs(const ts_batch *b) { return b->compact ? b->nruns : 0; }

static uint32_t stat_hash(const ts_stat_map *st) {
    uint64_t x = (uint64_t)(uintptr_t)st;
    return (uint32_t)((x * 0x9E3779B97F4A7C15ull) >> 32);
}

static void stat_slots_rebuild(ts_batch *b, uint32_t nslots) {
    free(b->stat_slots);
    b->stat_slots = calloc(nslots, sizeof *b->stat_slots);
    if (!b->stat_slots) abort();
    b->slots_mask = nslots - 1;
    for (uint32_t i = 0; i < b->nstats; i++) {
        uint32_t h = stat_hash(b->stats[i]) & b->slots_mask;
        while (b->stat_slots[h]) h = (h + 1) & b->slots_mask;
        b->stat_slots[h] = i + 1;
    }
}

static uint32_t stat_index(ts_batch *b, const ts_stat_map *st) {
    uint32_t guess = b->last_stat + 1;
    if (guess < b->nstats && b->stats[guess] == st) return b->last_stat = guess;
    if (b->nstats > 0) {
        uint32_t h = stat_hash(st) & b->slots_mask;
        for (uint32_t s; (s = b->stat_slots[h]) != 0; h = (h + 1) & b->slots_mask)
            if (b->stats[s - 1] == st) return b->last_stat = s - 1;
    }
    if (b->nstats == UINT32_MAX - 1) abort();   /* 4 billion distinct stats: not a TM payload */
    if (b->nstats == b->stats_cap) {
        size_t cap = b->stats_cap;
        b->stats = grow((void *)b->stats, &cap, sizeof *b->stats, 64);
        b->stats_cap = (uint32_t)cap;
    }
    b->stats[b->nstats++] = st;
    if (b->nstats * 2 > b->slots_mask) stat_slots_rebuild(b, b->stats_cap * 4);
    else {
        uint32_t h = stat_hash(st) & b->slots_mask;
        while (b->stat_slots[h]) h = (h + 1) & b->slots_mask;
        b->stat_slots[h] = b->nstats;
    }
    return b->last_stat = b->nstats - 1;
}

void ts_batch_add_compact(ts_batch *b, const ts_cpoint *p) {
    if (!b->compact) return;
    if (b->nruns == 0 || b->runs[b->nruns - 1].ent != p->ent || b->runs[b->nruns - 1].time_ms != p->time_ms) {
        if (b->nruns == b->runs_cap) b->runs = grow(b->runs, &b->runs_cap, sizeof *b->runs, 64);
        b->runs[b->nruns++] = (crun){p->ent, p->time_ms, b->n};
    }
    if (b->n == b->cap) b->pts = grow(b->pts, &b->cap, sizeof *b->pts, 256);
    cpt *c = &b->pts[b->n++];
    c->stat = stat_index(b, p->stat);
    memcpy(c->value, &p->value, sizeof p->value);
}

ts_batch *ts_batch_new_text(const ts_dest *d) { return batch_alloc(d); }

void ts_batch_add_line(ts_batch *b, const char *line, size_t len) {
    if (b->compact) return;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    if (len == 0) return;
    ts_buf_add(&b->text, line, len);
    ts_buf_addc(&b->text, '\n');
    b->nlines++;
}

size_t ts_batch_points(const ts_batch *b) {
    return b->compact ? b->n - b->pos : b->nlines - b->lines_done;
}

/* Memory accounted for the data not yet encoded. */
size_t ts_batch_bytes(const ts_batch *b) {
    if (!b->compact) return b->text.len - b->pos;
    if (b->pos == b->n) return 0;
    return (b->n - b->pos) * sizeof(cpt) + (b->nruns - b->run_pos) * sizeof(crun) + b->nstats * sizeof *b->stats;
}

const ts_dest *ts_batch_dest(const ts_batch *b) { return &b->dest; }

static void batch_release_owner(ts_batch *b) {
    if (b->has_owner && b->owner.release) b->owner.release(b->owner.owner);
    b->has_owner = 0;
}

/* Empties a compact batch for reuse: its arrays stay allocated. */
static void batch_clear(ts_batch *b) {
    batch_release_owner(b);
    b->n = b->nruns = b->pos = b->run_pos = 0;
    b->nstats = b->last_stat = 0;
    if (b->stat_slots) memset(b->stat_slots, 0, ((size_t)b->slots_mask + 1) * sizeof *b->stat_slots);
    b->seq = 0;
    b->next = NULL;
}

static size_t batch_capacity_bytes(const ts_batch *b) {
    return b->cap * sizeof *b->pts + b->runs_cap * sizeof *b->runs + b->stats_cap * sizeof *b->stats +
           (b->stat_slots ? ((size_t)b->slots_mask + 1) * sizeof *b->stat_slots : 0);
}

void ts_batch_free(ts_batch *b) {
    if (!b) return;
    batch_release_owner(b);
    free(b->pts);
    free(b->runs);
    free((void *)b->stats);
    free(b->stat_slots);
    ts_buf_free(&b->text);
    free(b);
}

/* Encode up to max_lines of b into out; returns lines appended; *taken gets
 * the points consumed (NaN/Inf compact points are consumed but not written). */
static size_t batch_take(ts_batch *b, ts_buf *out, size_t max_lines, size_t *taken, size_t *invalid) {
    size_t lines = 0, t = 0;
    if (b->compact) {
        while (b->pos < b->n && lines < max_lines) {
            while (b->run_pos + 1 < b->nruns && b->runs[b->run_pos + 1].start <= b->pos) b->run_pos++;
            const crun *r = &b->runs[b->run_pos];
            const cpt *c = &b->pts[b->pos++];
            ts_cpoint p = {b->stats[c->stat], r->ent, 0, r->time_ms};
            memcpy(&p.value, c->value, sizeof p.value);
            t++;
            if (ts_lp_encode_compact(out, &p, b->dest.precision) == 0) lines++;
            else (*invalid)++;
        }
    } else {
        while (b->pos < b->text.len && lines < max_lines) {
            const char *s = b->text.data + b->pos;
            const char *nl = memchr(s, '\n', b->text.len - b->pos);
            size_t n = (size_t)(nl - s) + 1;
            ts_buf_add(out, s, n);
            b->pos += n;
            b->lines_done++;
            lines++;
            t++;
        }
    }
    *taken = t;
    return lines;
}

/* ---- writer state ---- */

typedef struct dest {
    ts_dest d;
    char *path;              /* "/write?db=..&rp=..&precision=.." */
    ts_batch *head, *tail;   /* pending, arrival order */
    size_t pending_points;
    int nretry;              /* chunks of this destination failed and not resolved yet */
    uint64_t written, rejected, dropped;   /* per destination, for the metrics */
    struct dest *next;
} dest;

typedef struct chunk {
    struct ts_writer *w;     /* NULL once orphaned (writer freed or drained past) */
    dest *d;
    ts_buf body;
    size_t lines;
    uint64_t seq;            /* age of the oldest data in it */
    int attempts;            /* backoff rounds so far */
    int round_fails;         /* host failures since the last backoff */
    int is_retry;
    int url_idx;
    int64_t next_at;
    char *url;
    struct chunk *prev, *next;
} chunk;

struct ts_writer {
    ts_loop *loop;
    char **urls;
    int nurls, cur;
    char *user, *password, *ca_file;
    int insecure, gzip;
    long timeout_ms, connect_timeout_ms;
    size_t max_publish_size, max_buffer_bytes;
    int max_inflight;
    long backoff_min, backoff_max;
    int (*evict)(void *, const ts_dest *, const char *, size_t, size_t);
    void *evict_ud;

    dest *dests, *rr;
    chunk *retry_head, *retry_tail;   /* sorted by seq, oldest first */
    chunk *inflight;
    int ninflight;
    size_t bytes_held;                /* pending batches + retry bodies */
    uint64_t seq;
    int flushing, draining, in_pump;
    int timer_id;
    int64_t timer_due;
    uint64_t rng;
    ts_writer_stats st;
    uint64_t drop_ret;                /* dropped during the current drain */

    /* Kept from finished work for the next polls and publishes (see recycling). */
    ts_batch *spare_batches;
    size_t spare_batch_bytes;
    int compact_submitted;            /* since the last publish tick */
    int spare_batches_max;            /* compact batches of the last publishing interval */
    size_t pending_capacity, held_peak;   /* array bytes of the pending compact batches, its maximum */
    int nspare_batches;
    ts_buf spare_bodies[8];
    int nspare_bodies;

    ts_counter *c_written, *c_rejected, *c_dropped, *c_ok, *c_failed, *c_bytes, *c_retries,
        *c_invalid, *c_spooled;
};

static void pump(ts_writer *w);

static char *xstrdup(const char *s) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* URL for logs: no user:password@ and no query string. */
static void safe_url(char *out, size_t n, const char *url) {
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    if (at) host = at + 1;
    int scheme = p ? (int)(p - url) : 0;
    snprintf(out, n, "%.*s%s%.*s", scheme, url, p ? "://" : "", (int)(end - host), host);
}

static uint64_t rnd(ts_writer *w) {
    /* xorshift64*: jitter only, not security */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

/* Full jitter: uniform in [min, min(max, min * 2^(attempts-1))]. */
static int64_t backoff_ms(ts_writer *w, int attempts) {
    if (w->draining) return w->backoff_min < 100 ? w->backoff_min : 100;
    int64_t lo = w->backoff_min, cap = lo;
    for (int i = 1; i < attempts && cap < w->backoff_max; i++) cap *= 2;
    if (cap > w->backoff_max) cap = w->backoff_max;
    if (cap < lo) cap = lo;
    return lo + (int64_t)(rnd(w) % (uint64_t)(cap - lo + 1));
}

static void set_opts(ts_writer *w, const ts_writer_opts *o) {
    for (int i = 0; i < w->nurls; i++) free(w->urls[i]);
    free(w->urls);
    free(w->user);
    free(w->password);
    free(w->ca_file);
    int n = 0;
    if (o->urls) while (o->urls[n]) n++;
    w->urls = calloc((size_t)n + 1, sizeof *w->urls);
    if (!w->urls) abort();
    for (int i = 0; i < n; i++) {
        /* keep "http://h:8086/" and "http://h:8086" equivalent */
        char *u = xstrdup(o->urls[i]);
        size_t l = strlen(u);
        while (l > 0 && u[l - 1] == '/') u[--l] = '\0';
        w->urls[i] = u;
    }
    w->nurls = n;
    if (w->cur >= n || w->cur < 0) w->cur = 0;
    w->user = o->user && *o->user ? xstrdup(o->user) : NULL;
    w->password = xstrdup(o->password ? o->password : "");
    w->ca_file = xstrdup(o->ca_file);
    w->insecure = o->insecure;
    w->gzip = o->gzip;
    w->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    w->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    w->max_publish_size = o->max_publish_size > 0 ? o->max_publish_size : 10000;
    w->max_buffer_bytes = o->max_buffer_bytes > 0 ? o->max_buffer_bytes : ((size_t)256 << 20);
    w->max_inflight = o->max_inflight > 0 ? o->max_inflight : 2;
    w->backoff_min = o->backoff_min_ms > 0 ? o->backoff_min_ms : 1000;
    w->backoff_max = o->backoff_max_ms > 0 ? o->backoff_max_ms : 60000;
    if (w->backoff_max < w->backoff_min) w->backoff_max = w->backoff_min;
    w->evict = o->evict;
    w->evict_ud = o->evict_ud;
}

ts_writer *ts_writer_new(ts_loop *loop, const ts_writer_opts *o) {
    ts_writer *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->loop = loop;
    set_opts(w, o);
    if (w->nurls == 0) ts_warn("writer: no InfluxDB URLs configured; data will be buffered, then dropped");
    w->rng = (uint64_t)ts_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)w;
    if (!w->rng) w->rng = 88172645463325252ULL;
    w->c_written = ts_counter_get("writer_points_written");
    w->c_rejected = ts_counter_get("writer_points_rejected");
    w->c_dropped = ts_counter_get("writer_points_dropped");
    w->c_ok = ts_counter_get("writer_requests_ok");
    w->c_failed = ts_counter_get("writer_requests_failed");
    w->c_bytes = ts_counter_get("writer_bytes_sent");
    w->c_retries = ts_counter_get("writer_retries");
    w->c_invalid = ts_counter_get("writer_points_invalid");
    w->c_spooled = ts_counter_get("writer_points_spooled");
    return w;
}

int ts_writer_reconfigure(ts_writer *w, const ts_writer_opts *o) {
    /* Strings handed to curl are copied at request start, so in-flight
     * requests do not need the old ones. */
    char *prev = w->nurls > 0 ? xstrdup(w->urls[w->cur]) : NULL;
    set_opts(w, o);
    w->cur = 0;
    for (int i = 0; prev && i < w->nurls; i++)
        if (strcmp(w->urls[i], prev) == 0) w->cur = i;   /* keep the preferred host */
    free(prev);
    pump(w);
    return 0;
}

static void chunk_free(chunk *c);

/* ---- recycling ----
 * A publish frees every batch and body of the last interval, and the next
 * polls and publish allocate the same sizes again. glibc gives blocks this
 * big back to the kernel on free (mmap'd blocks, heap trim), so every reuse
 * started on fresh pages: a page fault per 4 KiB, ~2 us each on these VMs,
 * ~350 faults per 20k-point poll (issue 4's benchmark). The writer keeps what
 * it is done with instead, within what it held at its busiest (held_peak),
 * so the process's peak does not grow. */
static void recycle_batch(ts_writer *w, ts_batch *b) {
    size_t bytes = batch_capacity_bytes(b);
    /* As many as one publishing interval brings: after a backlog (InfluxDB was
     * down) the extra batches go back to malloc, not into a hoard. */
    if (!b->compact || w->nspare_batches >= w->spare_batches_max || w->spare_batch_bytes + bytes > w->held_peak) {
        ts_batch_free(b);
        return;
    }
    batch_clear(b);
    b->next = w->spare_batches;
    w->spare_batches = b;
    w->nspare_batches++;
    w->spare_batch_bytes += bytes;
}

ts_batch *ts_writer_new_compact(ts_writer *w, const ts_dest *d, const ts_map_owner *owner, size_t points,
                                size_t runs) {
    /* the smallest spare that holds `points`, else the largest (it grows) */
    ts_batch **best = NULL;
    for (ts_batch **pp = &w->spare_batches; *pp; pp = &(*pp)->next) {
        size_t cap = (*pp)->cap;
        if (!best) { best = pp; continue; }
        size_t bcap = (*best)->cap;
        if (cap >= points ? (bcap < points || cap < bcap) : (bcap < points && cap > bcap)) best = pp;
    }
    ts_batch *b;
    if (best) {
        b = *best;
        *best = b->next;
        b->next = NULL;
        w->nspare_batches--;
        w->spare_batch_bytes -= batch_capacity_bytes(b);
        batch_set_dest(b, d);
        batch_set_owner(b, owner);
    } else {
        b = ts_batch_new_compact(d, owner);
    }
    ts_batch_reserve(b, points, runs);
    return b;
}

/* A sent chunk's body goes back for the next encode_chunk. */
static void recycle_body(ts_writer *w, chunk *c) {
    size_t limit = w->max_publish_size * 512 + 4096;   /* not a freak-sized one */
    int keep = w->max_inflight + 1 < 8 ? w->max_inflight + 1 : 8;
    if (c->body.data && c->body.cap <= limit && w->nspare_bodies < keep) {
        w->spare_bodies[w->nspare_bodies++] = c->body;
        ts_buf_init(&c->body);
    }
    chunk_free(c);
}

static dest *dest_get(ts_writer *w, const ts_dest *d) {
    for (dest *x = w->dests; x; x = x->next)
        if (x->d.precision == d->precision && strcmp(x->d.db, d->db) == 0 && strcmp(x->d.rp, d->rp) == 0)
            return x;
    dest *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->d = *d;
    ts_buf p;
    ts_buf_init(&p);
    ts_buf_adds(&p, "/write?db=");
    ts_http_urlencode(&p, d->db, strlen(d->db));
    if (d->rp[0]) {
        ts_buf_adds(&p, "&rp=");
        ts_http_urlencode(&p, d->rp, strlen(d->rp));
    }
    ts_buf_printf(&p, "&precision=%s", ts_precision_name(d->precision));
    x->path = p.data;
    /* append: round-robin order follows first appearance */
    dest **pp = &w->dests;
    while (*pp) pp = &(*pp)->next;
    *pp = x;
    return x;
}

/* ---- accounting of drops ---- */

static void count_dropped(ts_writer *w, dest *d, size_t n) {
    d->dropped += n;
    w->st.points_dropped += n;
    ts_counter_add(w->c_dropped, (int64_t)n);
    if (w->draining) w->drop_ret += n;
}

/* Offer an encoded body to the spool seam; returns 1 if it kept it. */
static int offer_evict(ts_writer *w, const ts_dest *d, const char *body, size_t len, size_t lines) {
    if (!w->evict || lines == 0) return 0;
    if (w->evict(w->evict_ud, d, body, len, lines) == 1) {
        ts_counter_add(w->c_spooled, (int64_t)lines);
        return 1;
    }
    return 0;
}

static const char *rp_or_default(const ts_dest *d) { return d->rp[0] ? d->rp : "(default)"; }

static void retry_unlink(ts_writer *w, chunk *c) {
    if (c->prev) c->prev->next = c->next; else w->retry_head = c->next;
    if (c->next) c->next->prev = c->prev; else w->retry_tail = c->prev;
    c->prev = c->next = NULL;
}

static void retry_insert(ts_writer *w, chunk *c) {
    chunk *a = w->retry_tail;
    while (a && a->seq > c->seq) a = a->prev;
    c->prev = a;
    c->next = a ? a->next : w->retry_head;
    if (c->next) c->next->prev = c; else w->retry_tail = c;
    if (a) a->next = c; else w->retry_head = c;
}

static void inflight_unlink(ts_writer *w, chunk *c) {
    if (c->prev) c->prev->next = c->next; else w->inflight = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->ninflight--;
}

static void chunk_free(chunk *c) {
    ts_buf_free(&c->body);
    free(c->url);
    free(c);
}

/* Drop a chunk from the retry queue (memory bound or shutdown). */
static void drop_retry(ts_writer *w, chunk *c, const char *why) {
    retry_unlink(w, c);
    w->bytes_held -= c->body.len;
    c->d->nretry--;
    if (!offer_evict(w, &c->d->d, c->body.data, c->body.len, c->lines)) {
        count_dropped(w, c->d, c->lines);
        ts_warn("writer: dropped %zu points for %s/%s (%s, a failed chunk awaiting retry)",
                c->lines, c->d->d.db, rp_or_default(&c->d->d), why);
    }
    chunk_free(c);
}

/* Drop the oldest pending batch of d (what remains of it). */
static void drop_batch(ts_writer *w, dest *d, const char *why) {
    ts_batch *b = d->head;
    d->head = b->next;
    if (!d->head) d->tail = NULL;
    size_t pts = ts_batch_points(b);
    w->bytes_held -= ts_batch_bytes(b);
    w->pending_capacity -= batch_capacity_bytes(b);
    d->pending_points -= pts;
    size_t kept = 0;
    if (w->evict && pts > 0) {
        ts_buf tmp;
        ts_buf_init(&tmp);
        size_t taken = 0, invalid = 0;
        size_t lines = batch_take(b, &tmp, (size_t)-1, &taken, &invalid);
        if (invalid) ts_counter_add(w->c_invalid, (int64_t)invalid);
        if (offer_evict(w, &d->d, tmp.data, tmp.len, lines)) kept = pts;
        ts_buf_free(&tmp);
    }
    if (!kept && pts > 0) {
        count_dropped(w, d, pts);
        ts_warn("writer: dropped %zu points for %s/%s (%s, oldest pending batch)", pts, d->d.db,
                rp_or_default(&d->d), why);
    }
    ts_batch_free(b);
}

/* Keep bytes_held <= max_buffer_bytes, dropping the oldest data first. */
static void enforce_bound(ts_writer *w) {
    while (w->bytes_held > w->max_buffer_bytes) {
        chunk *rc = w->retry_head;
        dest *od = NULL;
        for (dest *d = w->dests; d; d = d->next)
            if (d->head && (!od || d->head->seq < od->head->seq)) od = d;
        if (!rc && !od) break;
        if (rc && (!od || rc->seq <= od->head->seq)) drop_retry(w, rc, "buffer full");
        else drop_batch(w, od, "buffer full");
    }
}

void ts_writer_submit(ts_writer *w, ts_batch *b) {
    if (!b) return;
    if (ts_batch_points(b) == 0) { ts_batch_free(b); return; }
    dest *d = dest_get(w, &b->dest);
    b->seq = ++w->seq;
    b->next = NULL;
    if (d->tail) d->tail->next = b; else d->head = b;
    d->tail = b;
    d->pending_points += ts_batch_points(b);
    w->bytes_held += ts_batch_bytes(b);
    w->pending_capacity += batch_capacity_bytes(b);
    if (w->pending_capacity > w->held_peak) w->held_peak = w->pending_capacity;
    if (b->compact) w->compact_submitted++;
    enforce_bound(w);
}

/* ---- sending ---- */

/* Parse {"error":"..."} (the only shape InfluxDB 1.x uses for errors) into
 * out; falls back to the raw body. */
static void server_message(const ts_buf *body, char *out, size_t n) {
    out[0] = '\0';
    if (!body->data || n == 0) return;
    const char *s = strstr(body->data, "\"error\"");
    size_t o = 0;
    if (s) {
        s += 7;
        while (*s == ' ' || *s == ':') s++;
        if (*s == '"') {
            s++;
            while (*s && *s != '"' && o + 1 < n) {
                char c = *s++;
                if (c == '\\' && *s) {
                    char e = *s++;
                    switch (e) {
                    case 'n': c = '\n'; break;
                    case 't': c = '\t'; break;
                    case 'r': c = '\r'; break;
                    case 'u':
                        /* non-ASCII escapes only matter for display */
                        for (int k = 0; k < 4 && *s; k++) s++;
                        c = '?';
                        break;
                    default: c = e; break;
                    }
                }
                out[o++] = c;
            }
            out[o] = '\0';
            return;
        }
    }
    snprintf(out, n, "%.*s", (int)(body->len < n ? body->len : n - 1), body->data);
}

/* Points InfluxDB did not store for a 400. Rule: each "unable to parse '"
 * that starts the message or a line of it is one unparseable line; a
 * "dropped=N" adds N points dropped after parsing (type conflicts, beyond
 * retention). If neither is present the whole chunk is counted rejected. */
size_t ts_writer_rejected_count(const char *msg, size_t lines) {
    size_t n = 0;
    int found = 0;
    static const char up[] = "unable to parse '";
    for (const char *p = msg; (p = strstr(p, up)); p += sizeof up - 1) {
        int at_start = p == msg || p[-1] == '\n' || (p - msg >= 2 && p[-2] == ':' && p[-1] == ' ');
        if (at_start) { n++; found = 1; }
    }
    const char *dp = strstr(msg, "dropped=");
    if (dp) {
        char *end;
        unsigned long long v = strtoull(dp + 8, &end, 10);
        if (end != dp + 8) { n += (size_t)v; found = 1; }
    }
    if (!found || n > lines) n = lines;
    return n;
}

enum { K_OK, K_REJECT, K_DROP, K_DEST, K_HOST };

static void chunk_done(void *ud, ts_http_result *r);

/* A POST to one InfluxDB URL with connection settings c. */
static void influx_req(const ts_influx_conn *c, ts_http_req *rq, const char *url, const char *body, size_t len,
                       const char *ctype) {
    memset(rq, 0, sizeof *rq);
    rq->url = url;
    rq->method = "POST";
    rq->body = body;
    rq->body_len = len;
    rq->content_type = ctype;
    rq->opts.connect_timeout_ms = c->connect_timeout_ms;
    rq->opts.timeout_ms = c->timeout_ms;
    rq->opts.insecure = c->insecure;
    rq->opts.ca_file = c->ca_file;
    rq->opts.user = c->user && *c->user ? c->user : NULL;
    rq->opts.password = c->password;
    rq->opts.accept_gzip = 1;
}

static ts_influx_conn writer_conn(const ts_writer *w) {
    return (ts_influx_conn){(const char *const *)w->urls, w->nurls, w->user, w->password, w->ca_file,
                            w->insecure, w->timeout_ms, w->connect_timeout_ms};
}

/* Returns 0, or -1 if the request could not be started (c went to retry). */
static int send_chunk(ts_writer *w, chunk *c) {
    if (w->nurls == 0) {
        /* nowhere to send: keep it as a failed chunk with backoff */
        if (!c->is_retry) { c->is_retry = 1; c->d->nretry++; }
        c->attempts++;
        c->next_at = ts_mono_ms() + backoff_ms(w, c->attempts);
        ts_buf_shrink(&c->body, c->body.len + 1);
        w->bytes_held += c->body.len;
        retry_insert(w, c);
        enforce_bound(w);
        return -1;
    }
    int idx = w->cur;
    c->url_idx = idx;
    c->w = w;
    free(c->url);
    size_t ul = strlen(w->urls[idx]) + strlen(c->d->path) + 1;
    c->url = malloc(ul);
    if (!c->url) abort();
    snprintf(c->url, ul, "%s%s", w->urls[idx], c->d->path);

    ts_http_req rq;
    ts_influx_conn conn = writer_conn(w);
    influx_req(&conn, &rq, c->url, c->body.data, c->body.len, "text/plain; charset=utf-8");
    rq.opts.gzip_body = w->gzip;
    rq.max_body = 1 << 20;  /* error answers are short; a huge one is not InfluxDB */
    rq.on_done = chunk_done;
    rq.ud = c;

    if (c->is_retry) {
        ts_counter_add(c->w->c_retries, 1);
    }
    c->prev = NULL;
    c->next = w->inflight;
    if (c->next) c->next->prev = c;
    w->inflight = c;
    w->ninflight++;
    if (ts_http_start(w->loop, &rq) != 0) {
        inflight_unlink(w, c);
        ts_warn("writer: could not start a request for %s/%s; will retry", c->d->d.db, rp_or_default(&c->d->d));
        if (!c->is_retry) { c->is_retry = 1; c->d->nretry++; }
        c->attempts++;
        c->next_at = ts_mono_ms() + backoff_ms(w, c->attempts);
        ts_buf_shrink(&c->body, c->body.len + 1);
        w->bytes_held += c->body.len;
        retry_insert(w, c);
        enforce_bound(w);
        return -1;
    }
    return 0;
}

/* Next chunk from d's pending batches: up to max_publish_size lines. */
static chunk *encode_chunk(ts_writer *w, dest *d) {
    chunk *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->d = d;
    c->seq = d->head ? d->head->seq : w->seq;
    if (w->nspare_bodies > 0) {
        c->body = w->spare_bodies[--w->nspare_bodies];
        c->body.len = 0;
    } else {
        ts_buf_init(&c->body);
    }
    /* One allocation at about the final size instead of a dozen doubling
     * copies of a megabyte-sized body (CacheStats lines are ~90-130 bytes). */
    size_t expect = d->pending_points < w->max_publish_size ? d->pending_points : w->max_publish_size;
    ts_buf_reserve(&c->body, expect * 128 + 256);
    size_t invalid = 0;
    while (d->head && c->lines < w->max_publish_size) {
        ts_batch *b = d->head;
        size_t before = ts_batch_bytes(b), taken = 0;
        c->lines += batch_take(b, &c->body, w->max_publish_size - c->lines, &taken, &invalid);
        w->bytes_held -= before - ts_batch_bytes(b);
        d->pending_points -= taken;
        if (ts_batch_points(b) == 0) {
            d->head = b->next;
            if (!d->head) d->tail = NULL;
            w->pending_capacity -= batch_capacity_bytes(b);
            recycle_batch(w, b);   /* releases the map owner: nothing points into the maps now */
        }
    }
    if (invalid) {
        ts_counter_add(w->c_invalid, (int64_t)invalid);
        ts_debug("writer: skipped %zu NaN/Inf points for %s", invalid, d->d.db);
    }
    return c;
}

static void arm_timer(ts_writer *w);

static void on_timer(void *ud) {
    ts_writer *w = ud;
    w->timer_id = 0;
    pump(w);
}

static void arm_timer(ts_writer *w) {
    int64_t now = ts_mono_ms(), due = INT64_MAX;
    for (chunk *c = w->retry_head; c; c = c->next)
        if (c->next_at < due) due = c->next_at;
    /* A retry that is already due waits for a free slot: the completion
     * that frees it pumps, so no timer (it would spin). */
    if (due == INT64_MAX || due <= now) {
        if (w->timer_id) { ts_loop_timer_cancel(w->loop, w->timer_id); w->timer_id = 0; }
        return;
    }
    if (w->timer_id && w->timer_due == due) return;
    if (w->timer_id) ts_loop_timer_cancel(w->loop, w->timer_id);
    w->timer_due = due;
    w->timer_id = ts_loop_timer(w->loop, due, on_timer, w);
}

static dest *next_ready_dest(ts_writer *w) {
    if (!w->dests) return NULL;
    dest *start = w->rr ? w->rr : w->dests;
    dest *d = start;
    do {
        dest *nx = d->next ? d->next : w->dests;
        /* a destination with unresolved failures sends only its failed
         * chunks (as probes); new data stays compact until they succeed */
        if (d->head && d->nretry == 0) { w->rr = nx; return d; }
        d = nx;
    } while (d != start);
    return NULL;
}

static void pump(ts_writer *w) {
    if (w->in_pump) return;
    w->in_pump = 1;
    int64_t now = ts_mono_ms();
    while (w->ninflight < w->max_inflight) {
        chunk *c = w->retry_head;
        while (c && c->next_at > now) c = c->next;
        if (c) {
            retry_unlink(w, c);
            w->bytes_held -= c->body.len;
            if (send_chunk(w, c) != 0) break;
            continue;
        }
        if (!w->flushing) break;
        dest *d = next_ready_dest(w);
        if (!d) break;
        c = encode_chunk(w, d);
        if (c->lines == 0) { recycle_body(w, c); continue; }
        if (send_chunk(w, c) != 0) break;
    }
    if (w->flushing) {
        int any = 0;
        for (dest *d = w->dests; d; d = d->next) any |= d->head != NULL;
        if (!any) w->flushing = 0;
    }
    arm_timer(w);
    w->in_pump = 0;
}

void ts_writer_flush(ts_writer *w) {
    w->spare_batches_max = w->compact_submitted;
    w->compact_submitted = 0;
    w->flushing = 1;
    pump(w);
}

static int classify(const ts_http_result *r, const char *msg) {
    if (r->curl_code != 0) return K_HOST;
    long s = r->status;
    if (s >= 200 && s < 300) return K_OK;
    if (s == 400) return K_REJECT;
    if (s == 401 || s == 403 || s == 404) return K_DEST;
    if (s == 500 && strstr(msg, "retention policy not found")) return K_DEST;
    if (s >= 500) return K_HOST;
    if (s > 400) return K_DROP;   /* 405, 413, ...: resending will not help */
    return K_HOST;                /* 1xx/3xx: not an InfluxDB answer */
}

static void chunk_done(void *ud, ts_http_result *r) {
    chunk *c = ud;
    ts_writer *w = c->w;
    if (!w) { chunk_free(c); return; }   /* orphaned: nobody counts it any more */
    inflight_unlink(w, c);
    dest *d = c->d;
    char msg[512];
    if (r->curl_code != 0) snprintf(msg, sizeof msg, "%s", r->errmsg);
    else server_message(&r->body, msg, sizeof msg);
    int kind = classify(r, msg);
    char host[256];
    safe_url(host, sizeof host, w->urls[c->url_idx < w->nurls ? c->url_idx : 0]);

    /* what went over the wire, answered or not */
    w->st.bytes_sent += r->bytes_out;
    ts_counter_add(w->c_bytes, (int64_t)r->bytes_out);
    if (kind == K_OK || kind == K_REJECT || kind == K_DROP) {
        if (c->url_idx < w->nurls && kind != K_DROP) w->cur = c->url_idx;  /* this host answers */
        if (c->is_retry) d->nretry--;
    }
    if (kind == K_OK) {
        w->st.requests_ok++;
        ts_counter_add(w->c_ok, 1);
        w->st.points_written += c->lines;
        d->written += c->lines;
        ts_counter_add(w->c_written, (int64_t)c->lines);
        ts_info("Sent %zu stats for %s", c->lines, d->d.db);
        /* the destination works again: its other failed chunks go now */
        for (chunk *x = w->retry_head; x; x = x->next)
            if (x->d == d && x->next_at > ts_mono_ms()) x->next_at = ts_mono_ms();
        recycle_body(w, c);
        pump(w);
        return;
    }

    w->st.requests_failed++;
    ts_counter_add(w->c_failed, 1);
    if (kind == K_REJECT) {
        size_t rej = ts_writer_rejected_count(msg, c->lines);
        w->st.points_rejected += rej;
        d->rejected += rej;
        d->written += c->lines - rej;
        ts_counter_add(w->c_rejected, (int64_t)rej);
        w->st.points_written += c->lines - rej;
        ts_counter_add(w->c_written, (int64_t)(c->lines - rej));
        ts_warn("writer: HTTP 400 from %s for %s/%s: %.300s (%zu of %zu points rejected, not retried)", host,
                d->d.db, rp_or_default(&d->d), msg, rej, c->lines);
        recycle_body(w, c);
        pump(w);
        return;
    }
    if (kind == K_DROP) {
        count_dropped(w, d, c->lines);
        ts_warn("writer: HTTP %ld from %s for %s/%s: %.300s (%zu points dropped, not retryable)", r->status,
                host, d->d.db, rp_or_default(&d->d), msg, c->lines);
        recycle_body(w, c);
        pump(w);
        return;
    }

    /* kept for retry */
    if (!c->is_retry) { c->is_retry = 1; d->nretry++; }
    int64_t now = ts_mono_ms();
    if (kind == K_HOST) {
        /* fail over: the next URL of the full list, every host stays in rotation */
        if (w->nurls > 0 && w->cur == c->url_idx) w->cur = (w->cur + 1) % w->nurls;
        if (++c->round_fails < w->nurls) {
            c->next_at = now;   /* another host has not been tried yet */
        } else {
            c->round_fails = 0;
            c->attempts++;
            c->next_at = now + backoff_ms(w, c->attempts);
        }
    } else {
        c->attempts++;
        c->next_at = now + backoff_ms(w, c->attempts);
    }
    if (r->curl_code != 0)
        ts_warn("writer: request to %s for %s/%s failed: %.300s (%zu points kept, retry in %lld ms)", host,
                d->d.db, rp_or_default(&d->d), msg, c->lines, (long long)(c->next_at - now));
    else
        ts_warn("writer: HTTP %ld from %s for %s/%s: %.300s (%zu points kept, retry in %lld ms)", r->status, host,
                d->d.db, rp_or_default(&d->d), msg, c->lines, (long long)(c->next_at - now));
    ts_buf_shrink(&c->body, c->body.len + 1);
    w->bytes_held += c->body.len;
    retry_insert(w, c);
    enforce_bound(w);
    pump(w);
}

static int has_work(const ts_writer *w) {
    if (w->ninflight > 0 || w->retry_head) return 1;
    for (dest *d = w->dests; d; d = d->next)
        if (d->head) return 1;
    return 0;
}

size_t ts_writer_drain(ts_writer *w, int64_t deadline) {
    w->draining = 1;
    w->drop_ret = 0;
    int64_t now = ts_mono_ms();
    for (chunk *c = w->retry_head; c; c = c->next) c->next_at = now;
    ts_writer_flush(w);
    while (has_work(w) && (now = ts_mono_ms()) < deadline) {
        int64_t left = deadline - now;
        ts_loop_run_once(w->loop, left < 50 ? (int)left : 50);
        w->flushing = 1;   /* anything submitted meanwhile goes too */
        pump(w);
    }
    /* Past the deadline: in-flight chunks are given up (their completion
     * will find them orphaned), then the queues are emptied. */
    while (w->inflight) {
        /* oldest first (the list is newest first), so a spool keeps order */
        chunk *c = w->inflight;
        while (c->next) c = c->next;
        inflight_unlink(w, c);
        if (c->is_retry) c->d->nretry--;
        if (!offer_evict(w, &c->d->d, c->body.data, c->body.len, c->lines)) {
            count_dropped(w, c->d, c->lines);
            ts_warn("writer: dropped %zu points for %s/%s (shutdown deadline, request still in flight)", c->lines,
                    c->d->d.db, rp_or_default(&c->d->d));
        }
        c->w = NULL;
    }
    while (w->retry_head) drop_retry(w, w->retry_head, "shutdown deadline");
    for (dest *d = w->dests; d; d = d->next)
        while (d->head) drop_batch(w, d, "shutdown deadline");
    w->flushing = 0;
    w->draining = 0;
    arm_timer(w);
    size_t n = (size_t)w->drop_ret;
    if (n) ts_warn("writer: shutdown: %zu points could not be written", n);
    return n;
}

void ts_writer_get_stats(const ts_writer *w, ts_writer_stats *s) {
    *s = w->st;
    uint64_t pts = 0;
    for (dest *d = w->dests; d; d = d->next) pts += d->pending_points;
    for (chunk *c = w->retry_head; c; c = c->next) pts += c->lines;
    for (chunk *c = w->inflight; c; c = c->next) pts += c->lines;
    s->points_pending = pts;
    s->bytes_pending = w->bytes_held;
}

int ts_writer_get_dest_stats(const ts_writer *w, ts_writer_dest_stats *out, int max) {
    int n = 0;
    for (dest *d = w->dests; d && n < max; d = d->next, n++) {
        ts_writer_dest_stats *o = &out[n];
        o->dest = d->d;
        o->written = d->written;
        o->rejected = d->rejected;
        o->dropped = d->dropped;
        o->pending = d->pending_points;
        for (chunk *c = w->retry_head; c; c = c->next) if (c->d == d) o->pending += c->lines;
        for (chunk *c = w->inflight; c; c = c->next) if (c->d == d) o->pending += c->lines;
    }
    return n;
}

void ts_writer_get_retry_state(const ts_writer *w, uint64_t *chunks, int64_t *next_in_ms) {
    uint64_t n = 0;
    int64_t next = 0, now = ts_mono_ms();
    for (chunk *c = w->retry_head; c; c = c->next) {
        n++;
        int64_t in = c->next_at > now ? c->next_at - now : 0;
        if (n == 1 || in < next) next = in;
    }
    *chunks = n;
    *next_in_ms = next;
}

void ts_writer_current_url_text(const ts_writer *w, char *out, size_t n) {
    if (w->nurls > 0) safe_url(out, n, w->urls[w->cur]);
    else if (n) out[0] = '\0';
}

int ts_writer_current_url(const ts_writer *w) { return w->nurls > 0 ? w->cur : -1; }

void ts_writer_free(ts_writer *w) {
    if (!w) return;
    if (w->timer_id) ts_loop_timer_cancel(w->loop, w->timer_id);
    ts_writer_stats s;
    ts_writer_get_stats(w, &s);
    if (s.points_pending) ts_warn("writer: freed with %llu points not written", (unsigned long long)s.points_pending);
    for (chunk *c = w->inflight; c; c = c->next) c->w = NULL;   /* freed by their completion */
    while (w->retry_head) {
        chunk *c = w->retry_head;
        retry_unlink(w, c);
        chunk_free(c);
    }
    while (w->dests) {
        dest *d = w->dests;
        w->dests = d->next;
        while (d->head) {
            ts_batch *b = d->head;
            d->head = b->next;
            ts_batch_free(b);
        }
        free(d->path);
        free(d);
    }
    while (w->spare_batches) {
        ts_batch *b = w->spare_batches;
        w->spare_batches = b->next;
        ts_batch_free(b);
    }
    for (int i = 0; i < w->nspare_bodies; i++) ts_buf_free(&w->spare_bodies[i]);
    for (int i = 0; i < w->nurls; i++) free(w->urls[i]);
    free(w->urls);
    free(w->user);
    free(w->password);
    free(w->ca_file);
    free(w);
}

int ts_influx_post(const ts_influx_conn *c, int *preferred, const char *path_query, const char *body, size_t len,
                   const char *ctype, size_t max_body, ts_http_result *out, char *err, size_t errlen) {
    if (errlen) err[0] = '\0';
    if (c->nurls <= 0) { snprintf(err, errlen, "no InfluxDB URLs configured"); return -1; }
    size_t used = 0;
    int start = preferred && *preferred >= 0 && *preferred < c->nurls ? *preferred : 0;
    for (int k = 0; k < c->nurls; k++) {
        int idx = (start + k) % c->nurls;
        char host[256];
        safe_url(host, sizeof host, c->urls[idx]);
        ts_buf url;
        ts_buf_init(&url);
        ts_buf_printf(&url, "%s%s", c->urls[idx], path_query);
        ts_http_req rq;
        influx_req(c, &rq, url.data, body, len, ctype);
        rq.max_body = max_body;
        ts_http_result r;
        ts_http_result_init(&r);
        int prc = ts_http_perform(&rq, &r);
        ts_buf_free(&url);
        /* a 5xx carrying InfluxDB's own JSON error (500 retention policy not
         * found) is an answer; other 5xx and transport errors mean "next URL" */
        if (prc == 0 && (r.status < 500 || (r.body.len && r.body.data[0] == '{'))) {
            if (preferred) *preferred = idx;
            ts_http_result_free(out);
            *out = r;
            return 0;
        }
        if (used < errlen) {
            int m = prc == 0 ? snprintf(err + used, errlen - used, "%s%s: HTTP %ld", used ? "; " : "", host, r.status)
                             : snprintf(err + used, errlen - used, "%s%s: %s", used ? "; " : "", host, r.errmsg);
            if (m > 0) used += (size_t)m;
        }
        ts_http_result_free(&r);
    }
    return -1;
}

int ts_writer_query(ts_writer *w, const char *db, const char *q, const char *epoch, ts_buf *out, char *err,
                    size_t errlen) {
    ts_buf body;
    ts_buf_init(&body);
    ts_buf_adds(&body, "q=");
    ts_http_urlencode(&body, q, strlen(q));
    if (db && *db) { ts_buf_adds(&body, "&db="); ts_http_urlencode(&body, db, strlen(db)); }
    if (epoch && *epoch) { ts_buf_adds(&body, "&epoch="); ts_http_urlencode(&body, epoch, strlen(epoch)); }
    ts_influx_conn c = writer_conn(w);
    ts_http_result r;
    ts_http_result_init(&r);
    /* InfluxDB 1.x takes reads and writes as POST /query */
    int rc = ts_influx_post(&c, &w->cur, "/query", body.data, body.len, "application/x-www-form-urlencoded",
                            (size_t)256 << 20, &r, err, errlen);
    ts_buf_free(&body);
    if (rc != 0) {
        ts_http_result_free(&r);
        return -1;
    }
    if (r.status != 200) {
        char msg[512], host[256];
        server_message(&r.body, msg, sizeof msg);
        safe_url(host, sizeof host, w->urls[w->cur]);
        snprintf(err, errlen, "%s: HTTP %ld: %.300s", host, r.status, msg);
        rc = -1;
    } else {
        ts_buf_add(out, r.body.data ? r.body.data : "", r.body.len);
    }
    ts_http_result_free(&r);
    return rc;
}

size_t ts_batch_encode(const ts_batch *b, ts_buf *out) {
    ts_batch copy = *b;
    size_t taken = 0, invalid = 0;
    return batch_take(&copy, out, (size_t)-1, &taken, &invalid);
}
