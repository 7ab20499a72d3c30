/* The spool's segment files (C core): the list of segments and the file
 * operations on them; the caller (src/spool.c) logs and counts failures.
 * The format is described in include/ts_spool.h. */
#include "ts_spool_seg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_spool_fmt.h"

void ts_spool_segs_init(ts_spool_segs *g, const char *dir, int sync_dir) {
    memset(g, 0, sizeof *g);
    g->dir = strdup(dir);
    if (!g->dir) abort();
    g->wfd = -1;
    g->next_id = 1;
    g->sync_dir = sync_dir;
}

void ts_spool_segs_free(ts_spool_segs *g) {
    if (g->wfd >= 0) close(g->wfd);
    free(g->v);
    free(g->dir);
    memset(g, 0, sizeof *g);
    g->wfd = -1;
}

int ts_spool_mkdir(const char *dir) {
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

void ts_spool_segs_path(const ts_spool_segs *g, uint64_t id, char *out, size_t n) {
    snprintf(out, n, "%s/%016" PRIx64 ".seg", g->dir, id);
}

static void push(ts_spool_segs *g, uint64_t id, uint64_t size) {
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 16;
        g->v = realloc(g->v, g->cap * sizeof *g->v);
        if (!g->v) abort();
    }
    g->v[g->n++] = (ts_spool_seg){id, size};
    g->total += size;
}

static int seg_cmp(const void *a, const void *b) {
    const ts_spool_seg *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int ts_spool_segs_scan(ts_spool_segs *g) {
    DIR *d = opendir(g->dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strlen(n) != 20 || strcmp(n + 16, ".seg") != 0 || strspn(n, "0123456789abcdef") != 16) continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", g->dir, n);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        push(g, strtoull(n, NULL, 16), (uint64_t)sb.st_size);
    }
    closedir(d);
    if (g->n > 1) qsort(g->v, g->n, sizeof *g->v, seg_cmp);
    for (size_t i = 0; i < g->n; i++)
        if (g->v[i].id >= g->next_id) g->next_id = g->v[i].id + 1;
    return 0;
}

ts_spool_seg *ts_spool_segs_find(ts_spool_segs *g, uint64_t id, size_t *idx) {
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g->v[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    if (idx) *idx = lo;
    return lo < g->n ? &g->v[lo] : NULL;
}

int ts_spool_segs_is_open(const ts_spool_segs *g, const ts_spool_seg *s) {
    return g->wfd >= 0 && g->n > 0 && s == &g->v[g->n - 1];
}

int ts_spool_segs_create(ts_spool_segs *g, const char **what) {
    if (ts_spool_mkdir(g->dir) != 0) {
        *what = "create the spool directory";
        return -1;
    }
    *what = "create a spool segment";
    char path[4200];
    uint64_t id = g->next_id;
    ts_spool_segs_path(g, id, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    for (int tries = 0; fd < 0 && errno == EEXIST && tries < 1000; tries++) {
        /* segments appeared that the start did not see (the dir was unavailable then) */
        id = ++g->next_id;
        ts_spool_segs_path(g, id, path, sizeof path);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    }
    if (fd < 0) return -1;
    unsigned char h[TS_SPOOL_SEG_HDR];
    memcpy(h, ts_spool_seg_magic, 8);
    ts_put64(h + 8, id);
    ssize_t w = write(fd, h, sizeof h);
    if (w != (ssize_t)sizeof h) {
        int e = w < 0 ? errno : ENOSPC;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    g->next_id = id + 1;
    g->wfd = fd;
    push(g, id, TS_SPOOL_SEG_HDR);
    if (g->sync_dir) ts_spool_fsync_dir(g->dir);
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

int ts_spool_segs_append(ts_spool_segs *g, struct iovec *iov, int n, uint64_t len) {
    ts_spool_seg *s = &g->v[g->n - 1];
    if (write_all(g->wfd, iov, n) != 0) {
        int e = errno;
        /* take the partial record back, or the segment would hold garbage
         * in its middle; if even that fails, abandon the segment (readers
         * stop at its committed size; a restart sees a torn tail there) */
        if (ftruncate(g->wfd, (off_t)s->size) != 0) {
            close(g->wfd);
            g->wfd = -1;
        }
        errno = e;
        return -1;
    }
    s->size += len;
    g->total += len;
    return 0;
}

int ts_spool_segs_remove(ts_spool_segs *g, size_t i) {
    char path[4200];
    ts_spool_segs_path(g, g->v[i].id, path, sizeof path);
    int rc = unlink(path) != 0 && errno != ENOENT ? -1 : 0;
    int e = errno;
    g->total -= g->v[i].size;
    memmove(&g->v[i], &g->v[i + 1], (g->n - i - 1) * sizeof *g->v);
    g->n--;
    errno = e;
    return rc;
}

uint64_t ts_spool_segs_count_lines(const ts_spool_segs *g, const ts_spool_seg *s, uint64_t from) {
    char path[4200];
    ts_spool_segs_path(g, s->id, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t lines = 0, off = TS_SPOOL_SEG_HDR;
    unsigned char h[TS_SPOOL_REC_HDR + 4];
    while (off + TS_SPOOL_REC_HDR + TS_SPOOL_PAY_HDR <= s->size) {
        if (pread(fd, h, sizeof h, (off_t)off) != (ssize_t)sizeof h) break;
        if (!ts_spool_hdr_ok(h)) break;
        uint64_t len = ts_get32(h + 4);
        if (off + TS_SPOOL_REC_HDR + len > s->size) break;
        if (off >= from) lines += ts_get32(h + TS_SPOOL_REC_HDR);
        off += TS_SPOOL_REC_HDR + len;
    }
    close(fd);
    return lines;
}

uint64_t ts_spool_segs_bytes_from(const ts_spool_segs *g, uint64_t seg, uint64_t off) {
    uint64_t b = 0;
    for (size_t i = 0; i < g->n; i++) {
        const ts_spool_seg *s = &g->v[i];
        if (s->id > seg) b += s->size - TS_SPOOL_SEG_HDR;
        else if (s->id == seg && s->size > off) b += s->size - (off < TS_SPOOL_SEG_HDR ? TS_SPOOL_SEG_HDR : off);
    }
    return b;
}

int64_t ts_spool_segs_time_at(ts_spool_segs *g, uint64_t seg, uint64_t off) {
    for (;;) {
        size_t idx;
        ts_spool_seg *s = ts_spool_segs_find(g, seg, &idx);
        if (!s) return 0;
        if (s->id != seg || off < TS_SPOOL_SEG_HDR) seg = s->id, off = TS_SPOOL_SEG_HDR;
        if (off + TS_SPOOL_REC_HDR + TS_SPOOL_PAY_HDR > s->size) {
            if (idx + 1 == g->n) return 0;
            seg = g->v[idx + 1].id;
            off = TS_SPOOL_SEG_HDR;
            continue;
        }
        char path[4200];
        ts_spool_segs_path(g, s->id, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 0;
        unsigned char h[TS_SPOOL_REC_HDR + TS_SPOOL_PAY_HDR];
        ssize_t n = pread(fd, h, sizeof h, (off_t)off);
        close(fd);
        if (n != (ssize_t)sizeof h || !ts_spool_hdr_ok(h)) return 0;
        return (int64_t)ts_get64(h + TS_SPOOL_REC_HDR + 8);
    }
}
