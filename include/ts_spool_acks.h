/* The spool's per-consumer lists of records in flight (C core): records
 * read (or claimed) and not yet acknowledged, in reading order, each with a
 * done flag, so acknowledgements may come in any order while the position
 * only moves over a done prefix. A ring that grows; no state beyond it. */
#ifndef TS_SPOOL_ACKS_H
#define TS_SPOOL_ACKS_H
#include <stddef.h>
#include "ts_spool_fmt.h"

typedef struct ts_spool_oref {
    ts_spool_pos pos, next;
    int done;
} ts_spool_oref;

typedef struct ts_spool_fifo {
    ts_spool_oref *v;
    size_t head, n, cap;
} ts_spool_fifo;

void ts_spool_fifo_push(ts_spool_fifo *f, ts_spool_pos pos, ts_spool_pos next, int done);
/* The oldest entry, NULL when empty; pop removes it. */
ts_spool_oref *ts_spool_fifo_first(ts_spool_fifo *f);
void ts_spool_fifo_pop(ts_spool_fifo *f);
/* Marks the entry that starts at pos done: 1 if there is one. */
int ts_spool_fifo_mark(ts_spool_fifo *f, ts_spool_pos pos);
/* Removes the done prefix: 1 with *upto = the last removed entry's next, else 0. */
int ts_spool_fifo_pop_done(ts_spool_fifo *f, ts_spool_pos *upto);
/* Removes every entry whose next is <= upto. */
void ts_spool_fifo_pop_upto(ts_spool_fifo *f, ts_spool_pos upto);
/* Bytes of the done entries at or after `from` (a record lies in one segment). */
uint64_t ts_spool_fifo_done_bytes(const ts_spool_fifo *f, ts_spool_pos from);
void ts_spool_fifo_clear(ts_spool_fifo *f);
void ts_spool_fifo_free(ts_spool_fifo *f);

#endif
