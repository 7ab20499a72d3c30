/* Spool records of compact points (C core, no Lua): the body of a record of
 * kind 1 holds a poll's points in the batch's own shape (each stat's and
 * entity's names once, then runs of points), about a sixth of their line
 * protocol. Reading one back rebuilds the stat and entity maps over the
 * record's bytes and encodes with ts_lp_encode_compact, so the bytes sent are
 * those the spool-off writer sends. The layout is described in
 * include/ts_spool.h. */
#ifndef TS_SPOOL_REC_H
#define TS_SPOOL_REC_H
#include <stddef.h>
#include "ts_batch.h"
#include "ts_buf.h"
#include "ts_spool_fmt.h"

/* A record body of at most max_lines writable points of compact batch b,
 * from its cursor on, appended to out; the cursor moves past the points
 * taken. Returns the points in the record (its lines once encoded); *taken
 * gets the points consumed, *invalid those skipped as not writable (NaN/Inf,
 * as ts_batch_take counts them). */
size_t ts_spool_rec_compact(ts_buf *out, ts_batch *b, size_t max_lines, size_t *taken, size_t *invalid);

/* A kind 1 body read from disk (hostile: every count, index and length is
 * checked against the bytes) encoded as line protocol into out, series by
 * series: measurement by measurement, then entity by entity (by their tags'
 * text), each series' points in the record's order. The lines are the
 * record's, only reordered: influxd takes such a body for less CPU.
 * Returns the lines appended, or -1 with *why set (out is then left as it
 * was) when the body is malformed or does not hold exactly `lines` writable
 * points. */
long ts_spool_rec_decode(const unsigned char *p, size_t n, ts_precision prec, size_t lines, ts_buf *out,
                         const char **why);

/* The '\n'-terminated lines of a kind 0 body reordered in place, stably by
 * series key (the text before the first unescaped space: measurement and
 * tags), so each series' points stay together and in their order. The
 * bytes of each line are kept. */
void ts_spool_lp_by_series(char *body, size_t len);

#endif
