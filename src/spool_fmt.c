/* The spool's bytes on disk (C core): checksums, record headers, position
 * files. Stateless helpers under src/spool.c and src/spool_read.c; the format
 * itself is described in include/ts_spool.h. */
#include "ts_spool_fmt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ts_buf.h"

const char ts_spool_seg_magic[8] = {'T', 'S', 'S', 'P', 'S', 'E', 'G', '1'};

uint32_t ts_spool_crc_more(uint32_t c, const void *p, size_t n) {
    /* zlib's crc32 takes uInt lengths: feed big bodies in pieces */
    uLong v = c;
    const unsigned char *b = p;
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        v = crc32(v, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)v;
}

uint32_t ts_spool_crc(const void *p, size_t n) { return ts_spool_crc_more((uint32_t)crc32(0L, Z_NULL, 0), p, n); }

int ts_spool_hdr_ok(const unsigned char *h) {
    return ts_get32(h) == TS_SPOOL_REC_MAGIC && ts_spool_crc(h, 8) == ts_get32(h + 8);
}

void ts_spool_hdr_make(unsigned char *h, uint32_t len, uint32_t pcrc) {
    ts_put32(h, TS_SPOOL_REC_MAGIC);
    ts_put32(h + 4, len);
    ts_put32(h + 8, ts_spool_crc(h, 8));
    ts_put32(h + 12, pcrc);
}

size_t ts_spool_count_lines(const char *p, size_t n) {
    size_t k = 0;
    const char *e = p + n;
    while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

void ts_spool_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
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

char *ts_spool_pos_file_name(const char *name) {
    ts_buf b;
    ts_buf_init(&b);
    ts_buf_adds(&b, "pos-");
    encode_name(name, &b);
    if (b.len > 180) {
        char tail[16];
        snprintf(tail, sizeof tail, "~%08" PRIx32, ts_spool_crc(name, strlen(name)));
        b.len = 170;
        ts_buf_adds(&b, tail);
    }
    return b.data;   /* ownership to the caller */
}

int ts_spool_pos_write(const char *dir, const char *file, const char *name, uint64_t seg, uint64_t off, int sync,
                       int *errp) {
    ts_buf line, enc;
    ts_buf_init(&line);
    ts_buf_init(&enc);
    encode_name(name, &enc);
    ts_buf_printf(&line, "TSSPPOS1 %s %" PRIu64 " %" PRIu64, enc.data, seg, off);
    ts_buf_printf(&line, " %08" PRIx32 "\n", ts_spool_crc(line.data, line.len));
    char path[4600], tmp[4610];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = -1, err = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, line.data, line.len);
        if (w != (ssize_t)line.len) err = w < 0 ? errno : ENOSPC;
        else if (sync && fsync(fd) != 0) err = errno;
        if (close(fd) != 0 && !err) err = errno;
        if (!err && rename(tmp, path) != 0) err = errno;
        if (err) unlink(tmp);
        else {
            if (sync) ts_spool_fsync_dir(dir);
            rc = 0;
        }
    } else
        err = errno;
    ts_buf_free(&line);
    ts_buf_free(&enc);
    *errp = err;
    return rc;
}

int ts_spool_pos_read(const char *dir, const char *file, char *name, size_t nlen, uint64_t *segp, uint64_t *offp) {
    char path[4600];
    snprintf(path, sizeof path, "%s/%s", dir, file);
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
    if (errno || *end || end - (last + 1) != 8 || ts_spool_crc(line, (size_t)(last - line)) != (uint32_t)want)
        return -1;
    *last = '\0';
    char enc[900];
    uint64_t sg, off;
    char extra;
    if (sscanf(line, "TSSPPOS1 %899s %" SCNu64 " %" SCNu64 " %c", enc, &sg, &off, &extra) != 3) return -1;
    if (decode_name(enc, name, nlen) != 0) return -1;
    *segp = sg;
    *offp = off;
    return 0;
}
