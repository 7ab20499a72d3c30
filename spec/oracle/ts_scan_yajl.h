/* ts_scan_yajl: the scanner's oracle (C test side, yajl): the contract of
 * include/ts_scan.h implemented on yajl's SAX parser (spec/oracle/scan_yajl.c),
 * which the unit test, the differential fuzzer and the benchmark compare the
 * hand-written scanner against. Never linked into tstats. */
#ifndef TS_SCAN_YAJL_H
#define TS_SCAN_YAJL_H
#include "ts_scan.h"

ts_scan *ts_scan_yajl_new(ts_scan_kind kind, const ts_scan_sink *sink);
int ts_scan_yajl_feed(ts_scan *s, const char *buf, size_t len);
int ts_scan_yajl_finish(ts_scan *s);
const char *ts_scan_yajl_error(const ts_scan *s);
const ts_scan_stats *ts_scan_yajl_get_stats(const ts_scan *s);
void ts_scan_yajl_free(ts_scan *s);

#endif
