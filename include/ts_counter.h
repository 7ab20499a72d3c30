/* Counters (C core): named int64 slots that modules look up once at init and
 * bump on the hot path; `tstats` reports them and Lua reads them
 * (tstats.counters()). The pointer stays valid for the process lifetime. */
#ifndef TS_COUNTER_H
#define TS_COUNTER_H
#include <stdint.h>

typedef struct ts_counter { const char *name; int64_t value; } ts_counter;
ts_counter *ts_counter_get(const char *name);
static inline void ts_counter_add(ts_counter *c, int64_t n) { c->value += n; }
typedef void (*ts_counter_fn)(void *ud, const char *name, int64_t value);
void ts_counters_foreach(ts_counter_fn fn, void *ud);

#endif
