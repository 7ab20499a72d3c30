/* Streaming decoder of Traffic Ops records (C side, on yajl): keeps the
 * listed top-level scalar fields of each record of {"response":[...]}, so a
 * servers list never becomes a whole Lua tree. */
#ifndef TS_RECORDS_H
#define TS_RECORDS_H
#include <lua.h>
#include <stddef.h>

typedef struct ts_records ts_records;
void ts_records_open(lua_State *L);   /* adds tstats.json.decode_records */
ts_records *ts_records_push_new(lua_State *L, int fields_idx); /* pushes its owning userdata */
int ts_records_feed(ts_records *c, const char *p, size_t n);    /* 0, or -1 once the JSON is invalid */
int ts_records_finish(ts_records *c);                          /* 0, or -1 (see ts_records_error) */
const char *ts_records_error(const ts_records *c);
void ts_records_push(lua_State *L, const ts_records *c);       /* the array of records */

#endif
