/* The spool's disk syncs off the event loop (C core): one helper thread
 * runs fdatasync of segments, fsync of the directory and the periodic
 * position-file saves, in the order they were asked for, so an append or a
 * tick never waits on the disk. The loop reads what is done without a lock
 * on its side's hot path (one mutex hold per request). */
#ifndef TS_SPOOL_SYNC_H
#define TS_SPOOL_SYNC_H
#include <stdint.h>

typedef struct ts_spool_syncer ts_spool_syncer;

/* Test hook: called by the thread before each job (may block: a test holds
 * the "disk" until it says so). */
typedef void (*ts_spool_sync_hook)(void *arg);

ts_spool_syncer *ts_spool_syncer_new(const char *dir, ts_spool_sync_hook hook, void *hook_arg);
/* Finishes every job asked for, then stops the thread and frees. */
void ts_spool_syncer_free(ts_spool_syncer *y);

/* fdatasync of fd once the jobs before it are done; everything appended up
 * to sequence number `seq` is durable when it returns. The syncer uses its
 * own dup of fd; `close_fd` hands fd itself over instead (a sealed segment).
 * Consecutive requests for the same segment while one waits are merged. */
void ts_spool_sync_data(ts_spool_syncer *y, int fd, uint64_t seg, uint64_t seq, int close_fd);
/* fsync of the directory (a new segment's name). */
void ts_spool_sync_dir(ts_spool_syncer *y);
/* Saves a consumer's position file (written, fsynced, renamed, dir fsynced). */
void ts_spool_sync_pos(ts_spool_syncer *y, const char *file, const char *name, uint64_t seg, uint64_t off);

typedef struct ts_spool_sync_state {
    uint64_t durable_seq;   /* every append with a sequence number <= this is on disk */
    uint64_t fsyncs;        /* fdatasync calls made */
    uint64_t failures;      /* syncs or position saves that failed */
    int last_errno;         /* of the last failure */
    int busy;               /* jobs waiting or running */
} ts_spool_sync_state;
void ts_spool_sync_get(ts_spool_syncer *y, ts_spool_sync_state *st);
/* Waits until every job asked for so far is done. */
void ts_spool_sync_wait(ts_spool_syncer *y);

#endif
