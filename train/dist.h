/* dist.h — lvd-train's processes: one, or many under an MPI launcher (mpirun, srun --mpi=pmix), data parallel as
 * dinov2 runs on torch.distributed.
 *
 * Each process (rank) holds the whole model and reads its own part of every epoch's order (train/loader.h). Per
 * step the ranks all-reduce: the teacher statistics of the losses (centers, Sinkhorn-Knopp; ssl_reduce), the
 * loss terms (their mean is what the metrics report, as dinov2's reduced loss_dict), and the gradients (summed,
 * then divided by the ranks: each rank's gradient is of the mean over its own batch, so the result is that of
 * the mean over the global batch). The ranks then clip, step and update the teacher alike and their parameters
 * stay equal; train_dist_check compares them. KoLeo is over each rank's own batch, as in the code.
 *
 * MPI is optional at build time (meson finds OpenMPI: LVD_HAVE_MPI). MPI is initialised only when an MPI
 * launcher started the process (its environment says so); a plain start is one process, with no MPI call. A
 * start by a launcher in a build without MPI fails with a clear error rather than running N unrelated copies.
 *
 * Every collective is made by every rank in the same order; a failure on one rank must therefore be agreed on
 * (train_dist_agree) before the ranks part ways. Errors follow err.h: 0 or -1. */
#ifndef LVD_TRAIN_DIST_H
#define LVD_TRAIN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "train/loss.h"

typedef struct train_dist {
    int32_t rank, ranks; /* 0, 1 for one process */
    int mpi;             /* MPI initialised (and to be finalised) by train_dist_init */
} train_dist;

#define DIST_BUCKET (1u << 22) /* floats per all-reduce call at most (16 MB) */

/* Detects the launcher and initialises MPI if one started the process. 0 or -1. */
int train_dist_init(train_dist *d, int *argc, char ***argv);

/* Finalises MPI if train_dist_init initialised it. */
void train_dist_finalize(train_dist *d);

/* Whether lvd was built with MPI. */
int train_dist_built_with_mpi(void);

/* buf (n floats) = the element-wise sum over the ranks, then times scale; at most DIST_BUCKET floats per MPI call. */
int train_dist_sum_f32(train_dist *d, float *buf, size_t n, float scale);

/* The ssl_reduce function: buf (n doubles) = the element-wise sum or max over the ranks. ctx: the train_dist. */
int train_dist_reduce_f64(double *buf, int64_t n, ssl_reduce_op op, void *ctx);

/* The ssl_reduce of d (fn NULL for one process). */
ssl_reduce train_dist_ssl_reduce(train_dist *d);

/* The largest of every rank's v (flags: whether any rank failed, asked to stop, ...). *out; 0 or -1. */
int train_dist_max_i64(train_dist *d, int64_t v, int64_t *out);

/* Gathers each rank's n 64-bit values into all (ranks * n) on every rank. */
int train_dist_allgather_u64(train_dist *d, const uint64_t *mine, size_t n, uint64_t *all);

/* Fails on every rank, naming `what`, if the ranks' 64-bit hashes h differ. */
int train_dist_check(train_dist *d, uint64_t h, const char *what);

#endif
