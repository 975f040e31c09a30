/* clock: the one monotonic clock the core measures timeouts and latencies with. */
#ifndef ZW_CLOCK_H
#define ZW_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on a monotonic clock (not wall time). */
static inline int64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
