/* libFuzzer driver for the spool reader (src/spool*.c, included here; C core
 * side, built by hand with clang, see README.md). Records on disk are input:
 * the fuzz input becomes segment files (and in one mode a consumer position
 * file) in a private directory, a consumer reads everything back, and every
 * record it returns must be well-formed and a byte range of the input. Input
 * byte 0 picks the mode: bit 0 "fix checksums" (the driver rewrites every
 * record header's crc32s so garbage payloads reach the payload checks, which
 * a fuzzer could never reach through a checksum), bits 1-2 the number of
 * segments (1-4) the rest is split into, bit 3 a position file from the
 * last 64 bytes, bit 4 the fixed checksums in format 2 (CRC32C) instead of 1. After the reads the spool must still append and read back.
 * Line-protocol records come back line by line from the input (sorted by
 * series key, so not one byte range).
 * Records of compact points (kind 1, src/spool_rec.c) are decoded into line
 * protocol by the reader: theirs must be whole lines too, though not bytes
 * of the input. */
#include "../../src/buf.c"
#include "../../src/log.c"
#include "../../src/counter.c"
#include "../../src/clock.c"
#include "../../src/lp.c"
#include "../../src/batch.c"
#include "../../src/spool_rec.c"
#include "../../src/spool_fmt.c"
#include "../../src/spool_seg.c"
#include "../../src/spool_read.c"
#include "../../src/spool_sync.c"
#include "../../src/spool_acks.c"
#include "../../src/spool.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[256];

/* every '\n'-terminated line of body (with its '\n') is a byte range of the input */
static int lines_from(const unsigned char *in, size_t n, const char *body, size_t len) {
    for (const char *p = body; p < body + len;) {
        const char *nl = memchr(p, '\n', (size_t)(body + len - p));
        if (!nl || !memmem(in, n, p, (size_t)(nl - p) + 1)) return 0;
        p = nl + 1;
    }
    return 1;
}

static void clear_dir(void) {
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    char path[600];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void write_file(const char *name, const uint8_t *p, size_t n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) abort();
    if (n && write(fd, p, n) != (ssize_t)n) abort();
    close(fd);
}

/* Rewrites the checksums of every header-shaped record in a segment image. */
static void fix_checksums(uint8_t *p, size_t n, int ver) {
    size_t off = SEG_HDR;
    while (off + REC_HDR <= n) {
        ts_put32(p + off, ver == 2 ? TS_SPOOL_REC_MAGIC2 : TS_SPOOL_REC_MAGIC);
        uint32_t len = ts_get32(p + off + 4);
        if (len > n - off - REC_HDR) {
            len = (uint32_t)(n - off - REC_HDR);
            ts_put32(p + off + 4, len);
        }
        ts_put32(p + off + 8, ts_spool_sum(ver, 0, p + off, 8));
        ts_put32(p + off + 12, ts_spool_sum(ver, 0, p + off + REC_HDR, len));
        off += REC_HDR + len;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(g_dir, sizeof g_dir, "/dev/shm/fuzz_spool.%d", (int)getpid());
    if (mkdir(g_dir, 0700) != 0 && errno != EEXIST) abort();
    ts_log_set_level(-1);   /* thousands of expected complaints per second */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > (1 << 20)) return 0;
    clear_dir();
    unsigned mode = data[0];
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    if ((mode & 8) && n >= 64) {
        write_file("pos-c", in + n - 64, 64);
        n -= 64;
    }
    unsigned nseg = 1 + ((mode >> 1) & 3);
    uint8_t *copy = malloc(n + 1);
    if (!copy) abort();
    memcpy(copy, in, n);
    size_t part = n / nseg;
    for (unsigned k = 0; k < nseg; k++) {
        size_t a = k * part, b = k + 1 == nseg ? n : a + part;
        uint8_t *p = copy + a;
        size_t len = b - a;
        if (mode & 1) {
            /* a valid segment header, so the records are what is fuzzed */
            if (len >= SEG_HDR) {
                memcpy(p, ts_spool_seg_magic, 8);
                ts_put64(p + 8, k + 1);
            }
            fix_checksums(p, len, mode & 16 ? 2 : 1);
        }
        char name[32];
        snprintf(name, sizeof name, "%016x.seg", k + 1);
        write_file(name, p, len);
    }

    ts_spool_opts o;
    memset(&o, 0, sizeof o);
    o.dir = g_dir;
    o.max_bytes = 64ull << 20;
    o.fsync = TS_SPOOL_FSYNC_NEVER;
    char err[128];
    ts_spool *s = ts_spool_open(&o, err, sizeof err);
    if (!s) abort();
    ts_spool_consumer *c = ts_spool_consumer_open(s, "c", TS_SPOOL_START_OLDEST);
    if (!c) abort();
    ts_spool_rec r;
    int rc;
    ts_spool_pos last = {0, 0};
    size_t total = 0, nrec = 0;
    while ((rc = ts_spool_read(c, &r)) == 1) {
        /* the contract: well-formed, whole lines, and really from the input */
        if (r.len == 0 || r.body[r.len - 1] != '\n' || r.body[r.len] != '\0') abort();
        if (ts_spool_count_lines(r.body, r.len) != r.lines || r.lines == 0) abort();
        size_t dbl = strlen(r.db), rpl = strlen(r.rp);
        if (dbl == 0 || dbl > 127 || rpl > 127 || r.precision > TS_PREC_H) abort();
        /* line protocol comes from the input line by line (a record's lines
         * are read back sorted by series key, each line's bytes as they are);
         * compact points are encoded from it (their bytes then come from the
         * encoder) */
        if (r.kind == TS_SPOOL_KIND_LP && !lines_from(copy, n, r.body, r.len)) abort();
        if (r.kind != TS_SPOOL_KIND_LP && r.kind != TS_SPOOL_KIND_COMPACT) abort();
        if (ts_spool_pos_cmp(r.pos, last) < 0 || ts_spool_pos_cmp(r.next, r.pos) <= 0) abort();
        last = r.next;
        if (r.kind == TS_SPOOL_KIND_LP) total += r.len;
        if (total > n || ++nrec > n) abort();
        ts_spool_ack(c, r.next);
    }
    if (rc != 0) abort();
    /* still usable: a new record goes to a new segment and comes back intact */
    static const char line[] = "m,t=a v=1 1\n";
    if (ts_spool_append(s, "db", "rp", TS_PREC_MS, line, sizeof line - 1, 1) != 0) abort();
    if (ts_spool_read(c, &r) != 1 || r.len != sizeof line - 1 || memcmp(r.body, line, r.len) != 0 ||
        strcmp(r.db, "db") != 0 || strcmp(r.rp, "rp") != 0)
        abort();
    ts_spool_close(s);
    free(copy);
    return 0;
}
