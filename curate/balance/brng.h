/* brng.h — the seeded generator of lvd-balance's random choices (resampling with strategy 'r', the
 * sampler's remainders), specified so that a test can replay it: the splitmix64 of common/kmeans.h
 * (KMEANS_GREEDY_DRAWS) with state s0 = seed * 0x2545f4914f6cdd1d + stream * 0x9e3779b97f4a7c15 (mod 2^64).
 * unit() = (next() >> 11) * 2^-53; below(m) = min(floor(unit() * m), m - 1).
 * Choosing t of the s entries of an array a (partial Fisher-Yates): for j in 0..t-1, swap a[j] with
 * a[j + below(s - j)]; the chosen are a[0..t-1]. */
#ifndef LVD_BALANCE_BRNG_H
#define LVD_BALANCE_BRNG_H

#include <stdint.h>

enum { BRNG_RESAMPLE = 3, BRNG_SAMPLER = 4 }; /* streams (1 and 2 are k-means's sample and init) */

typedef struct brng {
    uint64_t s;
} brng;

static inline brng brng_make(uint64_t seed, uint64_t stream)
{
    return (brng){seed * 0x2545f4914f6cdd1dull + stream * 0x9e3779b97f4a7c15ull};
}

static inline uint64_t brng_next(brng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double brng_unit(brng *r)
{
    return (double)(brng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, m), m >= 1. */
static inline int64_t brng_below(brng *r, int64_t m)
{
    int64_t v = (int64_t)(brng_unit(r) * (double)m);
    return v < m ? v : m - 1;
}

/* Moves a uniform choice of t of the s entries of a to a[0..t-1] (partial Fisher-Yates, as above). */
static inline void brng_choose(brng *r, int64_t *a, int64_t s, int64_t t)
{
    for (int64_t j = 0; j < t; j++) {
        int64_t q = j + brng_below(r, s - j), v = a[j];
        a[j] = a[q];
        a[q] = v;
    }
}

#endif
