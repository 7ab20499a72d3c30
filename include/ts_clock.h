/* Clocks (C core): wall clock in ms / ns since the epoch (time stamps of
 * points and logs), and a monotonic clock in ms (timers, deadlines). */
#ifndef TS_CLOCK_H
#define TS_CLOCK_H
#include <stdint.h>

int64_t ts_now_ms(void);
int64_t ts_now_ns(void);
int64_t ts_mono_ms(void);

#endif
