/* hkmeans.h — hierarchical k-means with resampling (Vo et al. 2024, ssl-data-curation), the tree of
 * lvd-balance.
 *
 * Levels. Level 1 clusters the n points x (n, d); level l > 1 clusters the k_{l-1} centroids of level l - 1,
 * unweighted. A level-l cluster's points are the union of its children's points, so a point's cluster at level
 * l is parent_l[its cluster at level l - 1].
 *
 * One k-means run on m items (the points, or the previous level's centroids): common/kmeans with greedy
 * k-means++ (KMEANS_INIT_GREEDY), exactly n_iters centroid updates, squared L2, float64 sums, an empty cluster
 * keeping its previous centroid, on all m items (no sample), k = min(k, m), then every item assigned to its
 * nearest final centroid (kmeans_assign: float64-exact, ties to the lowest index). Run r of a level has seed
 * hkm_run_seed(seed, level, r, split).
 *
 * A level (hkm_level_opts): run 0 on all items. Then, when sample_size > 1 (as the reference, which skips
 * resampling for sample_size 1), n_resampling_steps times: from each cluster of the current assignment take
 * min(sample_size, size) items — the closest to its centroid (strategy 'c': float64 squared distance, ties to
 * the lower item index) or a uniform choice (strategy 'r': brng.h, stream BRNG_RESAMPLE seeded with the step's
 * run seed, clusters in index order, members in ascending item order) — run k-means (run r = step) on their
 * union in ascending item order with k = min(k, union size), and reassign all items to its centroids. The
 * level's centroids are those of the last run. Then, when n_splits > 1, each cluster c (index order) with
 * s > 0 items is split by a k-means run (seed hkm_run_seed(seed, level, 0, 1 + c)) of min(n_splits, s)
 * centroids on its items (ascending item order); empty sub-clusters are dropped and the rest numbered in
 * (c, sub-cluster) order: they are the level's clusters.
 *
 * Scale: the tree holds (n_levels, n) labels and distances and each level's centroids; each run holds its
 * items in memory (the points are read from x, not copied, except a cluster's items for a split). Cluster
 * sizes are int64 point counts, which add across partitions of the points (the all-reduce of a later
 * partitioned run). Errors follow err.h. */
#ifndef LVD_BALANCE_HKMEANS_H
#define LVD_BALANCE_HKMEANS_H

#include <stdint.h>

#include "dist.h"

#define HKM_MAX_LEVELS 8

typedef struct hkm_level_opts {
    int32_t k;                  /* n_clusters of the level (>= 1) */
    int32_t n_splits;           /* 1: no split; > 1: sub-clusters per cluster */
    int32_t n_resampling_steps; /* >= 0 */
    int32_t sample_size;        /* items per cluster in a resampling step; resampling only when > 1 */
    char strategy;              /* 'c' closest or 'r' random */
} hkm_level_opts;

typedef struct hkm_opts {
    int32_t n_levels; /* 1..HKM_MAX_LEVELS */
    hkm_level_opts level[HKM_MAX_LEVELS];
    int32_t n_iters;  /* centroid updates per k-means run (reference: 50) */
    uint64_t seed;
    int32_t threads;  /* 0: OpenMP's default */
    lvd_dist *dist;   /* NULL: one process; else the k-means runs and assignments are spread over its ranks
                         (common/kmeans_ranks.h: called on rank 0), with the same results */
} hkm_opts;

typedef struct hkm_level {
    int32_t k;          /* clusters of the level (after splits); some may have no point */
    float *centroids;   /* (k, d) */
    int32_t *parent;    /* level >= 2: (k of level l - 1) the cluster of each child; level 1: NULL */
    int64_t *size;      /* (k) points of x in each cluster */
    double objective;   /* mean squared L2 distance of the level's items to their centroids */
    int32_t runs;       /* k-means runs made (1 + resampling steps + splits) */
    /* wall seconds, summed over the level's runs (timing only, not part of the tree): */
    double init_s;        /* greedy k-means++ */
    double lloyd_s;       /* Lloyd iterations, lloyd_iters of them */
    int64_t lloyd_iters;
    double first_iter_s;  /* seconds per Lloyd iteration of run 0, the run on all of the level's items */
    double assign_s;      /* the assignments of all items after each run (and of each split's items) */
} hkm_level;

typedef struct hkm_tree {
    int64_t n;
    int32_t d;
    int32_t n_levels;
    hkm_level level[HKM_MAX_LEVELS]; /* level[0] is level 1 */
    int32_t *label;                  /* (n_levels, n): label[l * n + i] = point i's cluster at level l + 1 */
    float *dist;                     /* (n_levels, n): squared L2 of point i to that cluster's centroid */
} hkm_tree;

/* The seed of run `run` (0 the first, 1.. the resampling steps) of level `level` (1-based), split 0 for a
 * level's runs and 1 + c for the split of cluster c: seed + level * 2^40 + run * 2^20 + split (mod 2^64). */
uint64_t hkm_run_seed(uint64_t seed, int32_t level, int32_t run, int64_t split);

/* Builds the tree of x (n, d) float32 into *t (zeroed first; free with hkm_free, also after a failure).
 * Fails on bad options (naming the level and option), n < 1, non-finite input or out of memory. */
int hkm_build(const float *x, int64_t n, int32_t d, const hkm_opts *o, hkm_tree *t);

void hkm_free(hkm_tree *t);

#endif
