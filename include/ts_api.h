/* The `tstats` Lua API (C side): logging, counters, HTTP on the loop or
 * blocking, line-protocol encoding, InfluxDB and the writer queue. What a
 * call may reach comes from its context, set by the daemon or the CLI. */
#ifndef TS_API_H
#define TS_API_H
#include <lua.h>
#include "ts_http.h"
#include "ts_buf.h"
#include "ts_influx.h"
#include "ts_lp.h"
#include "ts_writer.h"

typedef struct ts_api_ctx {
    ts_loop *loop;           /* may be NULL (no async writer) */
    ts_writer *writer;       /* queue for tstats.influx.write; may be NULL */
    ts_influx *influx;       /* servers of tstats._influx_post (the writer's); may be NULL */
    int *async_wake;         /* set to 1 when a request of an async coroutine is over; may be NULL */
    /* Sees every batch tstats.influx.write queues, before the writer takes
     * it (the Kafka target when no spool feeds it); may be NULL. */
    void (*on_queue)(void *ud, const ts_batch *b);
    void *on_queue_ud;
    /* Where tstats.influx.write's batches go (the daemon's targets); NULL: the writer. */
    void (*submit)(void *ud, ts_batch *b);
    void *submit_ud;
} ts_api_ctx;

void ts_api_open(lua_State *L);            /* sets global `tstats` and package.loaded.tstats */
void ts_api_set_ctx(lua_State *L, ts_api_ctx *ctx);
ts_api_ctx *ts_api_get_ctx(lua_State *L);
/* Requests made by coroutine co run on ctx->loop and yield until done. */
void ts_api_mark_async(lua_State *L, lua_State *co);
/* Encodes the array of point tables ({measurement=, tags=, fields=, time=})
 * at idx into out, one '\n'-terminated line each; returns how many. Each
 * point that cannot be encoded is skipped with a message appended to the
 * array at errt. Runs in the caller's protected call. */
size_t ts_api_encode_points(lua_State *L, int idx, ts_precision prec, ts_buf *out, int errt);

#endif
