/* Derived metrics, end of a poll (C core): each touched group gives one
 * point, written as line protocol into text batches handed to the normal
 * writer path; and the text of a derived value. */
#ifndef TS_DERIVE_EMIT_H
#define TS_DERIVE_EMIT_H
#include "ts_batch.h"
#include "ts_derive_state.h"

typedef void (*ts_derive_emit_fn)(void *ud, ts_batch *b);   /* takes ownership */
/* Points emitted, rate state committed; returns the number of points. */
size_t ts_derive_finish(ts_derive_ep *e, ts_derive_emit_fn emit, void *ud);

/* Text of a derived value: reads back (strtod) as exactly v; short when a
 * 15-digit decimal does, else 17 digits. Fast for any value. */
size_t ts_derive_fmt_double(char out[40], double v);

#endif
