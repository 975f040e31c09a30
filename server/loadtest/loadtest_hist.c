/* loadtest_hist: bucket arithmetic of the latency histogram (see the header). */
#include "loadtest_hist.h"

#include <string.h>

void lt_hist_reset(struct lt_hist *h) { memset(h, 0, sizeof *h); }

static unsigned bucket_of(uint64_t v)
{
    if (v < 128) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* 2^e <= v */
    if (e >= LT_HIST_MAX_EXP) return LT_HIST_BUCKETS - 1;
    unsigned shift = e - 6;
    return 128 + (e - 7) * 64 + (unsigned)((v >> shift) - 64);
}

/* Middle of a bucket's range, the value reported for samples in it. */
static uint64_t bucket_mid(unsigned b)
{
    if (b < 128) return b;
    unsigned e = (b - 128) / 64 + 7, shift = e - 6;
    uint64_t lo = (uint64_t)(64 + (b - 128) % 64) << shift;
    return lo + ((uint64_t)1 << shift) / 2;
}

void lt_hist_add(struct lt_hist *h, uint64_t us)
{
    if (h->count == 0 || us < h->min_us) h->min_us = us;
    if (us > h->max_us) h->max_us = us;
    h->count++;
    h->sum_us += us;
    h->bucket[bucket_of(us)]++;
}

uint64_t lt_hist_quantile(const struct lt_hist *h, double q)
{
    if (h->count == 0) return 0;
    /* Rank of the sample wanted, 1-based: the smallest value with at least q of
     * the samples at or below it. */
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (unsigned b = 0; b < LT_HIST_BUCKETS; b++) {
        seen += h->bucket[b];
        if (seen >= rank) {
            uint64_t v = bucket_mid(b);
            return v < h->min_us ? h->min_us : v > h->max_us ? h->max_us : v;
        }
    }
    return h->max_us;
}

double lt_hist_mean(const struct lt_hist *h)
{
    return h->count ? (double)h->sum_us / (double)h->count : 0;
}
