/* mono: the monotonic clock (CLOCK_MONOTONIC), for timeouts, deadlines and durations:
 * it never jumps with the wall clock. Header only; any room may include it. */
#ifndef ZW_MONO_H
#define ZW_MONO_H

#include <stdint.h>
#include <time.h>

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t mono_us(void) { return mono_ns() / 1000u; }

static inline int64_t mono_ms(void) { return (int64_t)(mono_ns() / 1000000u); }

/* A mono_ns() instant as an absolute time for pthread_cond_timedwait on a condition
 * variable whose clock is CLOCK_MONOTONIC (pthread_condattr_setclock). */
static inline struct timespec mono_timespec(uint64_t ns)
{
    return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000u),
                              .tv_nsec = (long)(ns % 1000000000u) };
}

#endif
