/* The spool's bytes on disk (C core): segment and record headers, their
 * little-endian fields and checksums, and consumer position files. No state:
 * src/spool.c (segments, appends, consumers) and src/spool_read.c (the
 * reader that trusts nothing) build on it. The format is described in
 * include/ts_spool.h. */
#ifndef TS_SPOOL_FMT_H
#define TS_SPOOL_FMT_H
#include <stddef.h>
#include <stdint.h>

#define TS_SPOOL_SEG_HDR 16u     /* "TSSPSEG1" + segment id */
#define TS_SPOOL_REC_HDR 16u     /* magic, payload length, crc of those 8 bytes, crc of the payload */
#define TS_SPOOL_PAY_HDR 16u     /* lines, precision, db len, rp len, kind, append time */
#define TS_SPOOL_REC_MAGIC 0x31525354u   /* "TSR1" little endian: zlib's crc32 */
#define TS_SPOOL_REC_MAGIC2 0x32525354u  /* "TSR2": CRC32C (Castagnoli) */
extern const char ts_spool_seg_magic[8];
/* A record payload's kind byte: line protocol, or compact points (ts_spool_rec.h). */
enum { TS_SPOOL_KIND_LP = 0, TS_SPOOL_KIND_COMPACT = 1 };

/* A place in the spool: segment id and byte offset of a record in it. */
typedef struct ts_spool_pos {
    uint64_t seg;
    uint64_t off;
} ts_spool_pos;
static inline int ts_spool_pos_cmp(ts_spool_pos a, ts_spool_pos b) {
    if (a.seg != b.seg) return a.seg < b.seg ? -1 : 1;
    if (a.off != b.off) return a.off < b.off ? -1 : 1;
    return 0;
}

/* the files must not depend on the host's byte order */
static inline void ts_put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void ts_put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t ts_get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t ts_get64(const unsigned char *p) {
    return (uint64_t)ts_get32(p) | (uint64_t)ts_get32(p + 4) << 32;
}

/* zlib's crc32 of n bytes (any size), and continuing one */
uint32_t ts_spool_crc(const void *p, size_t n);
uint32_t ts_spool_crc_more(uint32_t c, const void *p, size_t n);
/* CRC32C continuing c (0 to start): the SSE4.2 instruction when the CPU has
 * it (chosen at run time), else a table; and the table version alone. */
uint32_t ts_spool_crc32c(uint32_t c, const void *p, size_t n);
uint32_t ts_spool_crc32c_sw(uint32_t c, const void *p, size_t n);
int ts_spool_crc32c_hw(void);   /* 1 when the instruction is used */

/* Record format versions: 1 ("TSR1") checks with zlib's crc32, 2 ("TSR2")
 * with CRC32C, ~4x faster with the instruction. Both are read everywhere;
 * new records are version 2 where the CPU computes CRC32C, else 1 (a table
 * CRC32C would be slower than zlib). */
int ts_spool_rec_version(void);
void ts_spool_set_rec_version(int v);   /* tests: 1 or 2; 0 back to the choice above */
/* checksum of a record's header or payload in version v, continuing c */
uint32_t ts_spool_sum(int v, uint32_t c, const void *p, size_t n);

/* A record header whose magic and header checksum are right (its length
 * still has to fit what follows): its version, or 0. */
int ts_spool_hdr_ok(const unsigned char *h);
/* Fills a version v record header for a payload of `len` bytes with checksum `pcrc`. */
void ts_spool_hdr_make(unsigned char *h, int v, uint32_t len, uint32_t pcrc);

size_t ts_spool_count_lines(const char *p, size_t n);

/* Consumer position files: "TSSPPOS1 <encoded name> <seg> <off> <crc32>\n".
 * The file name of a consumer (malloc'd, "pos-" + name, long names cut with
 * a checksum); writing is file+tmp_suffix (ending ".tmp": a start removes
 * leftovers), fsync (when sync), rename: 0, or -1 with
 * *err = errno; reading: 0 with name and position, -1 if not a valid file. */
char *ts_spool_pos_file_name(const char *name);
int ts_spool_pos_write(const char *dir, const char *file, const char *name, uint64_t seg, uint64_t off, int sync,
                       const char *tmp_suffix, int *err);
int ts_spool_pos_read(const char *dir, const char *file, char *name, size_t nlen, uint64_t *seg, uint64_t *off);
/* fsync of a directory (after a rename or a new file) */
void ts_spool_fsync_dir(const char *dir);

#endif
