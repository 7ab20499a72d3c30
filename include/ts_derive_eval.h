/* Derived metrics, per-sample path (C core): the mapping cache binds each
 * stat name / entity once per plan to its slots / id; each sample of a poll
 * then costs an array index and a few additions, with no Lua call. */
#ifndef TS_DERIVE_EVAL_H
#define TS_DERIVE_EVAL_H
#include "ts_derive_state.h"

/* Mapping-cache hooks, once per stat name / entity per plan. meas is the
 * raw (unescaped) measurement, tags the stat's escaped tags. */
const ts_derive_slots *ts_derive_bind_stat(ts_derive_ep *e, const char *meas, size_t len, const ts_tagset *tags);
uint32_t ts_derive_bind_entity(ts_derive_ep *e, const char *name, size_t len);

/* A poll of the endpoint: begin (every fetch attempt; drops what an
 * unfinished attempt staged), a sample for each point whose stat has slots,
 * then finish (points emitted, rate state committed) or abort. `owner` tells
 * two endpoints of one name apart across a plan change: begin returns -1
 * while another owner's poll is open (that fetch then feeds nothing). */
int ts_derive_begin(ts_derive_ep *e, const void *owner);
void ts_derive_sample(ts_derive_ep *e, const ts_cpoint *p);
void ts_derive_abort(ts_derive_ep *e);

/* internal: a series' window mean joins its group's window (closing windows) */
void ts_dv_window_fold(ddefst *ds, dcell_win *c);

#endif
