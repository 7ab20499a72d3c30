/* The spool's bytes on disk (C core): checksums, record headers, position
 * files. Stateless helpers under src/spool.c and src/spool_read.c; the format
 * itself is described in include/ts_spool.h. */
#include "ts_spool_fmt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
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

uint32_t ts_spool_crc(const void *p, size_t n) { return ts_spool_crc_more(0, p, n); }

/* ---- CRC32C ----
 * The SSE4.2 crc32 instruction has a latency of 3 cycles and a throughput of
 * one per cycle, so long inputs run three independent streams over adjacent
 * blocks and join them with a table that shifts a CRC over a block of zeros
 * (the method of Mark Adler's crc32c.c). */

#define POLY 0x82f63b78u   /* CRC32C, reflected */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t sw_table[8][256];
static uint32_t zeros_long[4][256], zeros_short[4][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw, rec_version_forced;

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

/* the operator that appends len zero bytes to a CRC */
static void zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    odd[0] = POLY;
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd);   /* 2 zero bits */
    gf2_square(odd, even);   /* 4 zero bits */
    /* each square doubles the zero bits: 8, 16, ... = len bytes */
    do {
        gf2_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        gf2_square(odd, even);
        len >>= 1;
    } while (len);
    for (int n = 0; n < 32; n++) even[n] = odd[n];
}

static void zeros_table(uint32_t z[4][256], size_t len) {
    uint32_t op[32];
    zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        z[0][n] = gf2_times(op, n);
        z[1][n] = gf2_times(op, n << 8);
        z[2][n] = gf2_times(op, n << 16);
        z[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t shift(uint32_t z[4][256], uint32_t c) {
    return z[0][c & 0xff] ^ z[1][(c >> 8) & 0xff] ^ z[2][(c >> 16) & 0xff] ^ z[3][c >> 24];
}

static void crc_setup(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        sw_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = sw_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = sw_table[0][c & 0xff] ^ (c >> 8);
            sw_table[k][n] = c;
        }
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
    if (crc_hw) {
        zeros_table(zeros_long, LONG_BLOCK);
        zeros_table(zeros_short, SHORT_BLOCK);
    }
#endif
}

static void crc_init(void) { pthread_once(&crc_once, crc_setup); }

uint32_t ts_spool_crc32c_sw(uint32_t c, const void *p, size_t n) {
    crc_init();
    const unsigned char *b = p;
    uint32_t v = ~c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= v;
        v = sw_table[7][w & 0xff] ^ sw_table[6][(w >> 8) & 0xff] ^ sw_table[5][(w >> 16) & 0xff] ^
            sw_table[4][(w >> 24) & 0xff] ^ sw_table[3][(w >> 32) & 0xff] ^ sw_table[2][(w >> 40) & 0xff] ^
            sw_table[1][(w >> 48) & 0xff] ^ sw_table[0][w >> 56];
        b += 8;
        n -= 8;
    }
    while (n--) v = sw_table[0][(v ^ *b++) & 0xff] ^ (v >> 8);
    return ~v;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t c, const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t c0 = ~c;
    while (n > 0 && ((uintptr_t)b & 7) != 0) {
        c0 = _mm_crc32_u8((uint32_t)c0, *b++);
        n--;
    }
    uint64_t w0, w1, w2;
    while (n >= 3 * LONG_BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = b + LONG_BLOCK;
        do {
            memcpy(&w0, b, 8);
            memcpy(&w1, b + LONG_BLOCK, 8);
            memcpy(&w2, b + 2 * LONG_BLOCK, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
            b += 8;
        } while (b < end);
        c0 = shift(zeros_long, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(zeros_long, (uint32_t)c0) ^ (uint32_t)c2;
        b += 2 * LONG_BLOCK;
        n -= 3 * LONG_BLOCK;
    }
    while (n >= 3 * SHORT_BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = b + SHORT_BLOCK;
        do {
            memcpy(&w0, b, 8);
            memcpy(&w1, b + SHORT_BLOCK, 8);
            memcpy(&w2, b + 2 * SHORT_BLOCK, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
            b += 8;
        } while (b < end);
        c0 = shift(zeros_short, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(zeros_short, (uint32_t)c0) ^ (uint32_t)c2;
        b += 2 * SHORT_BLOCK;
        n -= 3 * SHORT_BLOCK;
    }
    while (n >= 8) {
        memcpy(&w0, b, 8);
        c0 = _mm_crc32_u64(c0, w0);
        b += 8;
        n -= 8;
    }
    while (n--) c0 = _mm_crc32_u8((uint32_t)c0, *b++);
    return ~(uint32_t)c0;
}
#endif

uint32_t ts_spool_crc32c(uint32_t c, const void *p, size_t n) {
    crc_init();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (crc_hw) return crc32c_hw(c, p, n);
#endif
    return ts_spool_crc32c_sw(c, p, n);
}

int ts_spool_crc32c_hw(void) {
    crc_init();
    return crc_hw;
}

int ts_spool_rec_version(void) {
    if (rec_version_forced) return rec_version_forced;
    return ts_spool_crc32c_hw() ? 2 : 1;
}

void ts_spool_set_rec_version(int v) { rec_version_forced = v == 1 || v == 2 ? v : 0; }

uint32_t ts_spool_sum(int v, uint32_t c, const void *p, size_t n) {
    return v == 2 ? ts_spool_crc32c(c, p, n) : ts_spool_crc_more(c, p, n);
}

int ts_spool_hdr_ok(const unsigned char *h) {
    uint32_t m = ts_get32(h);
    int v = m == TS_SPOOL_REC_MAGIC ? 1 : m == TS_SPOOL_REC_MAGIC2 ? 2 : 0;
    return v && ts_spool_sum(v, 0, h, 8) == ts_get32(h + 8) ? v : 0;
}

void ts_spool_hdr_make(unsigned char *h, int v, uint32_t len, uint32_t pcrc) {
    ts_put32(h, v == 2 ? TS_SPOOL_REC_MAGIC2 : TS_SPOOL_REC_MAGIC);
    ts_put32(h + 4, len);
    ts_put32(h + 8, ts_spool_sum(v, 0, h, 8));
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
                       const char *tmp_suffix, int *errp) {
    ts_buf line, enc;
    ts_buf_init(&line);
    ts_buf_init(&enc);
    encode_name(name, &enc);
    ts_buf_printf(&line, "TSSPPOS1 %s %" PRIu64 " %" PRIu64, enc.data, seg, off);
    ts_buf_printf(&line, " %08" PRIx32 "\n", ts_spool_crc(line.data, line.len));
    char path[4600], tmp[4610];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(tmp, sizeof tmp, "%s%s", path, tmp_suffix);
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
