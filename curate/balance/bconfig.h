/* bconfig.h — lvd-balance's configuration: the YAML keys of ssl-data-curation's configs
 * (configs/, e.g. 4levels_web_based_images.yaml), read as they are, plus lvd's own.
 *
 * Reference keys: n_levels; n_clusters, n_splits, n_resampling_steps, sample_size (lists of n_levels
 * integers; YAML's 100_000 digit groups accepted); n_iters; sampling_strategy (c|r, the resampling
 * selection; "closest" / "random" also read); dtype and high_precision (float32|float64: lvd reads float32 or
 * float16 embeddings and always sums in float64, so both are recorded, not applied); subset_indices_path
 * (null only: lvd chooses the pool with `from`); checkpoint_period (accepted: a run restarts from scratch).
 * GPU / Slurm keys (ngpus_per_node, nnodes, ncpus_per_gpu, slurm_partition, slurm_time, exp_dir...: see
 * bconfig.c) are accepted and listed in `ignored`, for one warning by the caller.
 * lvd's keys: target_size (>= 0; 0: the stage's --target must give it), multiplier (>= 1, default 1),
 * sampling (r|c, the leaf rule of the sampler, default r), from (dedup|retrieve, default dedup), seed
 * (default 1234), threads (default 0: OpenMP's).
 * Defaults of the reference's code: n_iters 50, n_splits 1, n_resampling_steps 0, sample_size 1,
 * sampling_strategy c. An unknown key, a wrong type, a list of the wrong length or a value out of range is an
 * error naming file:line and the key. */
#ifndef LVD_BALANCE_BCONFIG_H
#define LVD_BALANCE_BCONFIG_H

#include <stdint.h>

#include "hkmeans.h"

typedef struct bconfig {
    hkm_opts hk;            /* n_levels, per level k / n_splits / n_resampling_steps / sample_size / strategy,
                               n_iters, seed, threads */
    int64_t target_size;    /* 0: not given */
    int32_t multiplier;
    char sampling;          /* 'r' | 'c' */
    char from[16];          /* "dedup" | "retrieve" */
    char dtype[16];         /* as given (default float32) */
    char high_precision[16];/* as given (default float64) */
    char ignored[256];      /* the GPU / Slurm keys met, ", "-separated ("" when none) */
} bconfig;

/* Defaults, n_levels 0. */
void bconfig_default(bconfig *c);

/* Reads path into c (defaults first). 0 / -1 (err.h). */
int bconfig_load(const char *path, bconfig *c);

#endif
