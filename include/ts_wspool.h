/* The writer's spool side (C core): appending submitted batches to the
 * on-disk spool and reading them back through the target's consumer, within
 * replay_rate. Internal to the writer (see ts_wqueue.h). */
#ifndef TS_WSPOOL_H
#define TS_WSPOOL_H
#include "ts_wqueue.h"

/* The evict seam when the writer has a spool and no other seam: what memory
 * cannot keep goes to the spool (ud is the writer). Returns 1 if kept. */
int ts_wspool_evict(void *ud, const ts_dest *d, const char *body, size_t len, size_t lines);
/* A batch into the spool, in records of at most max_publish_size lines.
 * Returns 1 when all of it is there; otherwise what the spool refused is
 * left in b (lines already encoded come back as a text batch in *rest). */
int ts_wspool_batch(ts_writer *w, ts_batch *b, ts_batch **rest);
/* A record the spool just took at `at` (see ts_target_ops.live): kept in
 * memory as a live chunk (a reference to b's points from..to, encoded when
 * it is sent) and claimed in the consumer while the target is healthy and
 * the live chunks fit live_cap; 1 if kept. */
int ts_wspool_live(ts_writer *w, const ts_dest *d, ts_batch *b, size_t from, size_t to, size_t lines,
                   ts_spool_pos at, ts_spool_pos next);
/* The oldest live chunk, off its list; NULL when none or its destination
 * waits on retries. */
ts_wqueue_chunk *ts_wspool_live_next(ts_writer *w);
/* Live chunks never sent (a stop) are freed: they stay in the spool. */
void ts_wspool_live_release(ts_writer *w);
/* The spool's interval fsync and position saving within a second of an append. */
void ts_wspool_arm_sync(ts_writer *w);
/* The next record of the consumer as a chunk, within replay_rate; NULL when
 * there is none (or the rate says wait: a timer that pumps is armed). */
ts_wqueue_chunk *ts_wspool_next(ts_writer *w);
/* A chunk is answered for good: if it came from the spool, its record is
 * acknowledged (a record split after a 413 when its last piece is). */
void ts_wspool_done(ts_writer *w, ts_wqueue_chunk *c);

#endif
