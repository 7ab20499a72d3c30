/* Durable on-disk spool (C core): an append-only log of encoded line-protocol
 * chunks, so that what a poll produced survives a crash, a kill -9 or an
 * outage of any length, with one read position per target.
 *
 * On disk (spool dir):
 *   <16 hex digits>.seg   segments of bounded size, named by a growing id;
 *                         only the newest one of this process is appended to
 *   pos-<name>            one consumer's position (written with fsync + rename)
 * A segment is a 16-byte header ("TSSPSEG1" + id, little endian) followed by
 * records. A record is a 16-byte header { magic "TSR1" or "TSR2", payload
 * length, checksum of those 8 bytes, checksum of the payload } and a payload
 * { lines u32, precision u8, db length u8, rp length u8, kind u8, append
 * time ms i64, db, rp, body }. Kind 0: the body is '\n'-terminated lines of
 * line protocol; a record whose body does not hold exactly `lines` lines is
 * corrupt. Kind 1 (compact points, src/spool_rec.c; varint = unsigned LEB128,
 * f64 = the IEEE bits little endian): varint nstats, nstats x { varint len +
 * escaped measurement, varint len + escaped field key, u8 flags (1 = integer
 * field), f64 scale, tags }, varint nents, nents x tags, varint nruns, nruns x
 * { varint entity (0 none, else index + 1), varint zigzag delta of the time ms
 * from the previous run's (0 before the first), varint npoints, npoints x
 * { varint stat index, f64 value (before scale) } }, where tags = varint n,
 * n x { varint len + raw key + NUL, varint len + escaped "key=value" }. It
 * holds exactly `lines` points, each writable; read back, it is encoded with
 * ts_lp_encode_compact into the line protocol the spool-off path writes, and
 * any index, count or length that does not fit makes it corrupt. Records
 * written before kind 1 existed are read as before.
 * The checksums are zlib's crc32 in "TSR1" records and CRC32C in "TSR2"
 * records (written where the CPU has the SSE4.2 instruction, ~3x cheaper
 * than zlib's crc32; both are always read). Reading trusts nothing: a bad payload checksum
 * skips that one record, a bad header resynchronises on the next valid
 * header, an incomplete record at the end of a segment (a torn tail after a
 * crash) is skipped; each is counted and logged, none is fatal, none is
 * ever returned as a record. Segments written by the running process are
 * read back without recomputing the payload checksum and line count (they
 * were made from memory moments ago); everything from before the start is
 * checked in full.
 *
 * Durability (spool.fsync): every append is written to the kernel before
 * ts_spool_append returns, so a crash or kill -9 of tstats loses nothing.
 * The disk syncs run on a helper thread (src/spool_sync.c), never on the
 * event loop; stats.records_synced says how many appends are on disk.
 * On power loss / a kernel crash:
 *   "always"    nothing that counts as accepted: an append is accepted once
 *               its fdatasync returned (records_synced passed it); one is
 *               asked for every append, merged while one runs
 *   "interval"  at most the appends of the last fsync_interval_ms (default 1 s)
 *               and of the fdatasync running then
 *   "never"     whatever the kernel had not written back (typically up to
 *               30 s: vm.dirty_expire_centisecs), and recent positions
 * Positions are persisted with fsync + rename at most every fsync_interval_ms
 * (and at ts_spool_sync / close), so after a crash a consumer resends at most
 * that much already-acknowledged data: delivery is at-least-once.
 *
 * Bounds: the segments never exceed max_bytes in total: when an append does
 * not fit, the oldest segments are removed first (their unread lines are
 * counted per consumer and logged). A disk that is full or a directory that
 * is unwritable makes appends fail (return -1) with one rate-limited error
 * line; the caller keeps the data in memory. After retry_ms the next append
 * tries again, and spooling resumes by itself when space returns.
 *
 * Consumers (the generic API a target uses; InfluxDB URLs and Kafka alike):
 *   c = ts_spool_consumer_open(s, "influx:http://a:8086", TS_SPOOL_START_OLDEST);
 *   ts_spool_consumers_done(s);            once every target of this run is open
 *   while (ts_spool_read(c, &r) == 1) send(r.body, r.len) ...;
 *   on success: ts_spool_ack(c, r.next)    everything before r.next is done
 *           or: ts_spool_ack_one(c, r.pos) this one record is done (any order)
 *   on failure: keep r yourself, or ts_spool_rewind(c) and read again later.
 * A consumer's read cursor runs ahead of its acknowledged position; only the
 * acknowledged position is persisted. A segment is removed once every
 * consumer's acknowledged position has passed it. The spool is single-
 * threaded (the event loop's thread), like the rest of the core. */
#ifndef TS_SPOOL_H
#define TS_SPOOL_H
#include <stddef.h>
#include <stdint.h>
#include "ts_buf.h"
#include "ts_lp.h"
#include "ts_spool_fmt.h"

typedef struct ts_spool ts_spool;
typedef struct ts_spool_consumer ts_spool_consumer;

typedef enum { TS_SPOOL_FSYNC_INTERVAL = 0, TS_SPOOL_FSYNC_ALWAYS, TS_SPOOL_FSYNC_NEVER } ts_spool_fsync;
int ts_spool_fsync_parse(const char *s, ts_spool_fsync *out);  /* 0 ok, -1 unknown */
const char *ts_spool_fsync_name(ts_spool_fsync f);

typedef struct ts_spool_opts {
    const char *dir;             /* created (mode 0700) if missing */
    uint64_t max_bytes;          /* all segments together; default 1 GiB */
    uint64_t segment_bytes;      /* a segment is closed past this; default 16 MiB, at most max_bytes / 4 */
    ts_spool_fsync fsync;
    int64_t fsync_interval_ms;   /* default 1000 */
    int64_t retry_ms;            /* after a failed write, appends are refused this long; default 1000 */
    int64_t log_interval_ms;     /* at most one error line per kind this often; default 60000 */
    void (*sync_hook)(void *);   /* tests: run by the sync thread before each disk sync (may block) */
    void *sync_hook_arg;
} ts_spool_opts;

/* Largest body one record may carry. */
#define TS_SPOOL_MAX_RECORD (256u << 20)
#define TS_SPOOL_MAX_NAME 200

/* ts_spool_pos (segment id, byte offset of a record) and ts_spool_pos_cmp
 * are in ts_spool_fmt.h. */

typedef struct ts_spool_rec {
    const char *db, *rp;         /* NUL-terminated; rp "" = the database's default */
    ts_precision precision;
    const char *body;            /* '\n'-terminated lines, NUL after len */
    size_t len, lines;
    int kind;                    /* as stored: TS_SPOOL_KIND_LP, or _COMPACT (body encoded from it) */
    int64_t time_ms;             /* when it was appended (wall clock) */
    ts_spool_pos pos;            /* where this record starts (ts_spool_ack_one) */
    ts_spool_pos next;           /* just after it (ts_spool_ack) */
} ts_spool_rec;  /* pointers stay valid until the consumer's next read, rewind or close */

/* Opens (or creates) the spool. Never fails for an unwritable or missing
 * directory (appends then fail and are retried, see above); NULL only when
 * opts are unusable (no dir, max_bytes below 64 KiB), with err filled. */
ts_spool *ts_spool_open(const ts_spool_opts *o, char *err, size_t errlen);
/* Syncs, persists every position, frees the spool and its consumers. */
void ts_spool_close(ts_spool *s);

/* Appends one chunk: body of `lines` '\n'-terminated lines for db/rp/prec.
 * Returns 0 once it is in the spool (durable as spool.fsync says), -1 when
 * it is not (disk full, unwritable dir, record too large, inside retry_ms of
 * a failure): the caller still owns the data. */
int ts_spool_append(ts_spool *s, const char *db, const char *rp, ts_precision prec, const char *body, size_t len,
                    size_t lines);
/* The same, with the place of the new record and just after it (for ts_spool_claim). */
int ts_spool_append_at(ts_spool *s, const char *db, const char *rp, ts_precision prec, const char *body, size_t len,
                       size_t lines, ts_spool_pos *at, ts_spool_pos *next);
/* The same for a body of `kind` (TS_SPOOL_KIND_COMPACT: ts_spool_rec_compact's
 * bytes holding `lines` points; read back as their line protocol). */
int ts_spool_append_kind(ts_spool *s, const char *db, const char *rp, ts_precision prec, int kind, const char *body,
                         size_t len, size_t lines, ts_spool_pos *at, ts_spool_pos *next);
/* Periodic work, from the loop at least every fsync_interval_ms: the interval
 * fsync and persisting the positions that moved. */
void ts_spool_tick(ts_spool *s);
/* fsync the open segment and persist every position now; 0 or -1. */
int ts_spool_sync(ts_spool *s);
/* 1 when the last write attempt succeeded (or none was made). */
int ts_spool_writable(const ts_spool *s);

typedef enum { TS_SPOOL_START_OLDEST, TS_SPOOL_START_END } ts_spool_start;
/* Opens the consumer `name` (at most TS_SPOOL_MAX_NAME bytes, any characters)
 * at its persisted position; a consumer seen for the first time starts at the
 * oldest record or at the end as `start` says, and its position is persisted
 * at once (so a crash before its first ack still replays for it). A position
 * file that is unreadable or corrupt is logged and counted, and the consumer
 * starts at the oldest record (at-least-once). Returns NULL if the name is
 * already open or invalid. */
ts_spool_consumer *ts_spool_consumer_open(ts_spool *s, const char *name, ts_spool_start start);
/* Every consumer of this run is open: position files of consumers that were
 * not opened are removed (logged), and segments may now be removed once the
 * open consumers have passed them. Until this is called, nothing is removed
 * except for max_bytes. */
void ts_spool_consumers_done(ts_spool *s);
/* Persists the position and closes the consumer (its file stays). */
void ts_spool_consumer_close(ts_spool_consumer *c);

/* Next record after the read cursor: 1 = *r filled, 0 = nothing more for now,
 * -1 = a read error (logged; try again later). Corrupt data is skipped inside. */
int ts_spool_read(ts_spool_consumer *c, ts_spool_rec *r);
/* The same, with the body appended to `out` (r->body points into it, valid
 * until out changes): what a target sends, without a copy. On 0 / -1 out is
 * left as it was. */
int ts_spool_read_into(ts_spool_consumer *c, ts_spool_rec *r, ts_buf *out);
/* Everything before `upto` is done (a record's `next`). */
void ts_spool_ack(ts_spool_consumer *c, ts_spool_pos upto);
/* The record that starts at `pos` (one this consumer read) is done; the
 * position advances over every done record in reading order. */
void ts_spool_ack_one(ts_spool_consumer *c, ts_spool_pos pos);
/* The record appended at `at` (ts_spool_append_at's at and next) is sent
 * by this consumer from memory: reads pass over it, ts_spool_ack_one(c, at) acknowledges it (in
 * any order), and the position moves over it once everything before it is
 * done. With nothing to replay before it, it counts as read at once; with a
 * backlog, the replay reads up to it and goes on after it. Claims are made
 * in append order; a record not claimed is read back from disk. */
void ts_spool_claim(ts_spool_consumer *c, ts_spool_pos at, ts_spool_pos next);
/* Read cursor back to the acknowledged position (records read and not
 * acknowledged are read again). */
void ts_spool_rewind(ts_spool_consumer *c);
ts_spool_pos ts_spool_acked(const ts_spool_consumer *c);
const char *ts_spool_consumer_name(const ts_spool_consumer *c);

typedef struct ts_spool_cstats {
    uint64_t backlog_bytes;      /* bytes of the records not acknowledged yet (those acknowledged
                                  * out of order, past an older one still pending, are not counted) */
    uint64_t replay_bytes;       /* segment bytes from the acknowledged position to the end: what a
                                  * restart would read again (the durable position) */
    uint64_t unread_bytes;       /* from the read cursor to the end */
    uint64_t lines_lost;         /* unread lines removed for max_bytes */
    uint64_t lines_read, records_read;
} ts_spool_cstats;
void ts_spool_consumer_stats(const ts_spool_consumer *c, ts_spool_cstats *st);
/* Age in ms (wall clock, now - its append time) of the oldest record this
 * consumer has not acknowledged, or -1 when it has acknowledged everything
 * (or that record cannot be read). One pread per change of the acknowledged
 * position; cheap enough for every metrics scrape. */
int64_t ts_spool_oldest_age_ms(ts_spool_consumer *c);

typedef struct ts_spool_stats {
    uint64_t bytes;              /* all segments on disk */
    uint64_t segments;
    uint64_t records_appended, lines_appended, bytes_appended;
    uint64_t append_failures;    /* appends refused (disk full, unwritable, too large) */
    uint64_t segments_dropped;   /* removed for max_bytes */
    uint64_t lines_dropped;      /* lines no consumer had acknowledged in those */
    uint64_t segments_removed;   /* removed because every consumer passed them */
    uint64_t corrupt_records;    /* bad payload checksum or inconsistent content */
    uint64_t torn_tails;         /* incomplete record at the end of a segment */
    uint64_t skipped_bytes;      /* garbage skipped while resynchronising */
    uint64_t bad_positions;      /* position files that could not be used */
    uint64_t fsyncs;
    uint64_t records_synced;     /* appends of this process known to be on disk (fdatasync returned) */
    int sync_busy;               /* the sync thread has work waiting or running */
} ts_spool_stats;
void ts_spool_get_stats(const ts_spool *s, ts_spool_stats *st);

#endif
