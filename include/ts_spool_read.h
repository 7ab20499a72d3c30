/* The spool's record reader (C core): reads one record of a segment file and
 * says what it found: a record, a corrupt one, a torn tail, garbage to skip
 * (resynchronising on the next valid header), or nothing yet. It counts and
 * logs nothing: src/spool.c does, per consumer. No state of its own. */
#ifndef TS_SPOOL_READ_H
#define TS_SPOOL_READ_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"
#include "ts_lp.h"

typedef enum {
    TS_SPOOL_RD_RECORD,    /* a whole, checked record */
    TS_SPOOL_RD_CORRUPT,   /* a damaged record or garbage, `why` says which; go on at `next` */
    TS_SPOOL_RD_TORN,      /* an incomplete record at the end of a closed segment */
    TS_SPOOL_RD_WAIT,      /* the open segment holds nothing more yet */
    TS_SPOOL_RD_ERROR      /* the file could not be read: `err` (errno), try again later */
} ts_spool_rd_kind;

typedef struct ts_spool_rd {
    /* in: the segment file */
    int fd;
    uint64_t size;         /* its committed size */
    int is_open;           /* still appended to (an incomplete end is not torn, just not there yet) */
    int trusted;           /* written by this process: payload checksum and line count not recomputed */
    ts_buf *scratch;       /* a compact record's bytes before they are encoded (NULL: a buffer of its own) */
    /* out */
    uint64_t next;         /* where the next record may start */
    uint64_t skipped;      /* bytes passed over as garbage */
    const char *why;       /* CORRUPT: the reason */
    int err;               /* ERROR: errno */
    char db[128], rp[128];
    ts_precision precision;
    uint32_t lines;
    int kind;              /* TS_SPOOL_KIND_*: the body in dst is line protocol either way */
    int64_t time_ms;
    size_t body_at, body_len;   /* RECORD: the body in dst (NUL after it); dst->len = body_at + body_len */
} ts_spool_rd;

/* The segment header of rd->fd is "TSSPSEG1" + id: RECORD (fine), TORN (too
 * short), CORRUPT or ERROR. */
ts_spool_rd_kind ts_spool_rd_segment(ts_spool_rd *rd, uint64_t id);
/* The record at byte `off` of the segment; its body is appended to dst (on
 * anything but RECORD dst->len is unchanged). */
ts_spool_rd_kind ts_spool_rd_next(ts_spool_rd *rd, uint64_t off, ts_buf *dst);

#endif
