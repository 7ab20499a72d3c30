/* The spool's segment files (C core): the ordered list of segments in the
 * spool dir with their committed sizes, the one open for appending, and the
 * file operations on them (scan, create, append a record whole, remove).
 * Consumers and the size bound are above it, in src/spool.c. */
#ifndef TS_SPOOL_SEG_H
#define TS_SPOOL_SEG_H
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct ts_spool_seg {
    uint64_t id;
    uint64_t size;        /* bytes of whole records (the open segment: what was committed) */
} ts_spool_seg;

typedef struct ts_spool_segs {
    char *dir;
    ts_spool_seg *v;      /* ascending ids */
    size_t n, cap;
    uint64_t total;       /* sum of v[].size */
    int wfd;              /* open (last) segment, -1 none */
    uint64_t next_id;
    int sync_dir;         /* fsync the directory after a new segment */
} ts_spool_segs;

void ts_spool_segs_init(ts_spool_segs *g, const char *dir, int sync_dir);
void ts_spool_segs_free(ts_spool_segs *g);   /* closes the open segment without a sync */
/* mkdir -p with mode 0700; 0 or -1 (errno) */
int ts_spool_mkdir(const char *dir);
/* Adds every "<16 hex>.seg" of the directory; 0 or -1 (errno). */
int ts_spool_segs_scan(ts_spool_segs *g);
/* The first segment with an id >= id (NULL: none), its index in *idx. */
ts_spool_seg *ts_spool_segs_find(ts_spool_segs *g, uint64_t id, size_t *idx);
int ts_spool_segs_is_open(const ts_spool_segs *g, const ts_spool_seg *s);
void ts_spool_segs_path(const ts_spool_segs *g, uint64_t id, char *out, size_t n);
/* A new open segment with its header: 0, or -1 with errno and *what saying
 * which step failed. */
int ts_spool_segs_create(ts_spool_segs *g, const char **what);
/* Appends `len` bytes (iov) to the open segment as one whole record: 0, or
 * -1 with errno, the partial write taken back (or, if even that fails, the
 * segment abandoned: wfd -1; readers stop at its committed size). */
int ts_spool_segs_append(ts_spool_segs *g, struct iovec *iov, int n, uint64_t len);
/* Removes segment i (its file and entry): 0, or -1 with errno when the file
 * could not be unlinked (the entry goes anyway). */
int ts_spool_segs_remove(ts_spool_segs *g, size_t i);
/* Lines of the whole records of s from offset `from` on, header checksums
 * only (stops at the first bad header). */
uint64_t ts_spool_segs_count_lines(const ts_spool_segs *g, const ts_spool_seg *s, uint64_t from);
/* Record bytes from (seg, off) to the end of the spool. */
uint64_t ts_spool_segs_bytes_from(const ts_spool_segs *g, uint64_t seg, uint64_t off);
/* Append time (wall clock ms) of the first whole record at or after (seg,
 * off), 0 when there is none or it cannot be read. */
int64_t ts_spool_segs_time_at(ts_spool_segs *g, uint64_t seg, uint64_t off);

#endif
