/* kafka.* on SIGHUP (C core, daemon side): a changed configuration gets a
 * new producer, which takes the records read from then on, while the one
 * it replaces delivers what it holds and closes; a change that cannot apply
 * live is refused with one log line naming it, the running producer kept. */
#ifndef TS_KAFKA_RELOAD_H
#define TS_KAFKA_RELOAD_H
#include <lua.h>
#include <stdint.h>
#include "ts_http.h"
#include "ts_kafka.h"
#include "ts_kafka_feed.h"

/* Reads kafka.* again (the configuration just reloaded into L) and compares
 * it with the running one. Unchanged: returns k. Changed: builds a new
 * producer from it; if librdkafka or the checks refuse it, or the change
 * cannot apply live (kafka.enabled: Kafka's spool position is opened at
 * start only), logs why and returns k, which keeps running. Otherwise the
 * feed hands its next records to the new producer (its spool position is
 * the same: nothing read twice, nothing skipped), Lua's primitives are
 * bound to it, k retires (it delivers what it holds, then is freed from the
 * loop) and the new one is returned. */
ts_kafka *ts_kafka_reload(lua_State *L, ts_loop *loop, ts_kafka *k, ts_kafka_feed *feed);

/* Producers retired by a reload and not done yet (0 when none). */
int ts_kafka_reload_retiring(void);
/* Shutdown: gives the retiring producers until deadline (ts_mono_ms) to
 * deliver, then frees them (what they still hold stays in the spool).
 * Returns the points they did not deliver. Call before freeing the feed. */
size_t ts_kafka_reload_drain(int64_t deadline_mono_ms);

#endif
