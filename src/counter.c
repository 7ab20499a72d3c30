/* Counters (C core): named int64 slots that modules look up once at init and
 * bump on the hot path. Single-threaded by design (the event loop owns
 * everything), so they need no atomics. */
#include "ts_counter.h"

#include <stdlib.h>
#include <string.h>

/* Counters live in a small array of fixed slots: there are a few dozen names,
 * looked up once per module at init. */
#define MAX_COUNTERS 256
static ts_counter counters[MAX_COUNTERS];
static int ncounters;

ts_counter *ts_counter_get(const char *name) {
    for (int i = 0; i < ncounters; i++)
        if (strcmp(counters[i].name, name) == 0) return &counters[i];
    if (ncounters == MAX_COUNTERS) {
        static ts_counter overflow = {"counter_overflow", 0};
        return &overflow;
    }
    char *copy = strdup(name);
    if (!copy) abort();   /* the abort-on-OOM policy of ts_buf.h */
    counters[ncounters].name = copy;
    counters[ncounters].value = 0;
    return &counters[ncounters++];
}

void ts_counters_foreach(ts_counter_fn fn, void *ud) {
    for (int i = 0; i < ncounters; i++) fn(ud, counters[i].name, counters[i].value);
}
