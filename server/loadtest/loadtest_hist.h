/* loadtest_hist: a fixed-size latency histogram in microseconds. Log-linear
 * buckets (exact below 128 us, then 64 per power of two: under 1.6 % error) so
 * memory stays bounded however long the run; min, max and mean are exact. */
#ifndef ZW_LOADTEST_HIST_H
#define ZW_LOADTEST_HIST_H

#include <stdint.h>

#define LT_HIST_MAX_EXP 40 /* values at or above 2^40 us (12 days) land in the top bucket */
#define LT_HIST_BUCKETS (128 + (LT_HIST_MAX_EXP - 7) * 64)

struct lt_hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t min_us, max_us;
    uint64_t bucket[LT_HIST_BUCKETS];
};

void lt_hist_reset(struct lt_hist *h);
void lt_hist_add(struct lt_hist *h, uint64_t us);
/* Value below which a fraction q (0..1) of the samples fall, in microseconds;
 * 0 when empty. */
uint64_t lt_hist_quantile(const struct lt_hist *h, double q);
/* Mean in microseconds; 0 when empty. */
double lt_hist_mean(const struct lt_hist *h);

#endif
