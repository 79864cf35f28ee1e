/* sampler.h — balanced top-down sampling of a hierarchical k-means tree to target_size (ssl-data-curation's
 * hierarchical_sampling), the sample of lvd-balance.
 *
 * Water-filling. Given clusters with capacities cap_i = size_i * multiplier and a target T: when sum cap_i <= T
 * every cluster gets cap_i; otherwise x = the largest integer with sum min(x, cap_i) <= T (binary search), each
 * cluster gets min(x, cap_i), and the remainder r = T - sum min(x, cap_i) (< the number of clusters with
 * cap_i > x) goes as +1 to r of those clusters chosen uniformly (brng_choose over them in ascending index).
 *
 * Top-down: the top level's clusters share target_size by water-filling over their sizes; each cluster at level
 * l > 1 shares its quota among its children (level l - 1 clusters whose parent it is, ascending) by the same
 * rule over their sizes; a level-1 cluster of s points with quota q gives each point floor(q / s) copies
 * (multiplier copies when q = s * multiplier) and one more to q mod s of them: the closest to the centroid
 * (strategy 'c': the tree's float32 distance, ties to the lower point index) or a uniform choice ('r',
 * brng_choose over the points in ascending index). So each point has at most multiplier copies and the total
 * is min(target_size, n * multiplier).
 *
 * Random draws: one brng (stream BRNG_SAMPLER, the given seed), consumed depth first: the top level's
 * water-filling, then for each top cluster in index order its children's water-filling and, recursively, its
 * subtree in index order; a leaf's draws when it is reached. Errors follow err.h. */
#ifndef LVD_BALANCE_SAMPLER_H
#define LVD_BALANCE_SAMPLER_H

#include <stdint.h>

#include "hkmeans.h"

typedef struct bal_sample {
    int64_t n;
    int32_t n_levels;
    int32_t *copies;                 /* (n) copies of each point in the sample, 0..multiplier */
    int64_t *quota[HKM_MAX_LEVELS];  /* quota[l] (k of level l + 1): points allotted to each cluster */
    int64_t cap[HKM_MAX_LEVELS];     /* cap[l]: the largest water level x used among the level's splits (the
                                        top level's x for the last level; INT64_MAX when nothing was capped) */
    int64_t total;                   /* sum of copies */
} bal_sample;

/* The water level of caps (m) for target: the largest x in [0, max cap] with sum min(x, cap_i) <= target, or
 * the max cap when sum cap_i <= target. */
int64_t bal_water_level(const int64_t *cap, int64_t m, int64_t target);

/* Samples tree t to target (>= 0) with copies at most multiplier (>= 1); strategy 'c' or 'r'. *s is zeroed
 * first; free it with bal_sample_free (also after a failure). */
int bal_sample_run(const hkm_tree *t, int64_t target, int32_t multiplier, char strategy, uint64_t seed,
                   bal_sample *s);

void bal_sample_free(bal_sample *s);

#endif
