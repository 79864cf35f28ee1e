/* dist.h — the processes of a run: one, or many under an MPI launcher (mpirun, srun --mpi=pmix), each with a
 * part of the work: lvd-train's data parallelism (as dinov2 runs on torch.distributed) and the k-means of the
 * curation stages that scan the whole pool (common/kmeans.h's kmeans_comm: lvd-retrieve, lvd-balance).
 *
 * lvd-train: each process (rank) holds the whole model and reads its own part of every epoch's order
 * (train/loader.h). Per step the ranks all-reduce the teacher statistics of the losses (centers, Sinkhorn-Knopp),
 * the loss terms (their mean is what the metrics report, as dinov2's reduced loss_dict), and the gradients
 * (summed, then divided by the ranks: each rank's gradient is of the mean over its own batch, so the result is
 * that of the mean over the global batch). The ranks then clip, step and update the teacher alike and their
 * parameters stay equal; dist_check compares them. KoLeo is over each rank's own batch, as in the code.
 *
 * MPI is optional at build time (meson finds OpenMPI: LVD_HAVE_MPI). MPI is initialised only when an MPI
 * launcher started the process (its environment says so); a plain start is one process, with no MPI call. A
 * start by a launcher in a build without MPI fails with a clear error rather than running N unrelated copies.
 *
 * Every collective is made by every rank in the same order; a failure on one rank must therefore be agreed on
 * (dist_max_i64 of a flag) before the ranks part ways. Every function is a no-op (or a copy) for one rank.
 * Errors follow err.h: 0 or -1. */
#ifndef LVD_DIST_H
#define LVD_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct lvd_dist {
    int32_t rank, ranks; /* 0, 1 for one process */
    int mpi;             /* MPI initialised (and to be finalised) by dist_init */
} lvd_dist;

#define DIST_BUCKET (1u << 22) /* floats per all-reduce call at most (16 MB) */

/* Detects the launcher and initialises MPI if one started the process. 0 or -1. */
int dist_init(lvd_dist *d, int *argc, char ***argv);

/* Finalises MPI if dist_init initialised it. */
void dist_finalize(lvd_dist *d);

/* Whether lvd was built with MPI. */
int dist_built_with_mpi(void);

/* buf (n floats) = the element-wise sum over the ranks, then times scale; at most DIST_BUCKET floats per MPI call. */
int dist_sum_f32(lvd_dist *d, float *buf, size_t n, float scale);

/* buf (n doubles) = the element-wise sum (max 0) or maximum (max 1) over the ranks; at most DIST_BUCKET values
 * per MPI call. A sum over ranks runs in rank order on every rank (MPI_Allreduce of OpenMPI: the same result
 * on every rank for a fixed number of ranks, not necessarily the left-to-right sum). */
int dist_reduce_f64(lvd_dist *d, double *buf, int64_t n, int max);

/* The largest of every rank's v (flags: whether any rank failed, asked to stop, ...). *out; 0 or -1. */
int dist_max_i64(lvd_dist *d, int64_t v, int64_t *out);

/* Gathers each rank's n 64-bit values into all (ranks * n) on every rank. */
int dist_allgather_u64(lvd_dist *d, const uint64_t *mine, size_t n, uint64_t *all);

/* buf (bytes) = root's buf on every rank. */
int dist_bcast(lvd_dist *d, void *buf, size_t bytes, int32_t root);

/* Rows of row_bytes bytes between rank 0 and the ranks: rank r's part is rows_of[r] rows (the same rows_of on
 * every rank), the parts in rank order. dist_scatter_rows sends rank 0's all (sum of rows_of rows; read on rank
 * 0 only) so that every rank's part lands in its mine (rows_of[rank] rows); dist_gather_rows is the reverse,
 * into rank 0's all. Rank 0's part is the first rows of all: with mine == all it stays there (no copy). At most
 * 2^31 - 1 rows in all, row_bytes < 2^31. */
int dist_scatter_rows(lvd_dist *d, const void *all, size_t row_bytes, const int64_t *rows_of, void *mine);
int dist_gather_rows(lvd_dist *d, const void *mine, size_t row_bytes, const int64_t *rows_of, void *all);

/* Fails on every rank, naming `what`, if the ranks' 64-bit hashes h differ. */
int dist_check(lvd_dist *d, uint64_t h, const char *what);

#endif
