/* kmeans_ranks.h — the k-means of a curation stage over the processes of an MPI run (mpirun -np N lvd-balance
 * ..., srun --mpi=pmix lvd-retrieve ...): rank 0 runs the stage as one process would, and the other ranks serve
 * its k-means calls, so that the Lloyd iterations and the assignments, the part that scans the whole pool, run
 * on every rank's cores.
 *
 * A call on rank 0 (kmr_train, kmr_assign) broadcasts its parameters, sends each rank an equal contiguous part
 * of the rows (rank r: rows [n r / N, n (r + 1) / N); rank 0 keeps the first part in place), and then:
 *   kmr_train   every rank runs kmeans_train over the ranks (kmeans.h, "Processes": sums and counts
 *               all-reduced in float64), and rank 0 returns its centroids and stats;
 *   kmr_assign  the centroids are broadcast, every rank assigns its own rows (kmeans_assign) and rank 0
 *               gathers the labels (and scores).
 * The results are those of kmeans_train / kmeans_assign in one process on the same rows, up to the order of
 * the float64 sums (kmeans.h; the assignment is exactly the same). With d NULL or one rank, the calls are
 * kmeans_train and kmeans_assign themselves. Traffic per call: the rows once (n d float32 over the ranks), the
 * centroids, the labels, and kmeans_train's collectives.
 *
 * The serving ranks call kmr_serve, which returns when rank 0 calls kmr_stop (every rank 0 must, on success and
 * on failure, before dist_finalize; kmr_main does all of it for a stage's main). Such a stage is one run over
 * all ranks: it opens its stage as part 0/1 unless --part is given, since a launcher's rank variables would
 * otherwise make each rank a part (part.h: mpirun -np N lvd-crawl runs N parts). A failure on any rank (memory, a
 * non-finite value in its rows) fails the call on rank 0 with that rank's message; the serving ranks go on
 * serving. Errors follow err.h. */
#ifndef LVD_KMEANS_RANKS_H
#define LVD_KMEANS_RANKS_H

#include <stdint.h>

#include "dist.h"
#include "kmeans.h"

/* Rank 0: kmeans_train of x (n, dim) with o (o->comm must be NULL), over d's ranks. */
int kmr_train(lvd_dist *d, const float *x, int64_t n, int32_t dim, const kmeans_opts *o, float *centroids,
              kmeans_stats *st);

/* Rank 0: kmeans_assign of x (n, dim) to centroids (k, dim), over d's ranks. */
int kmr_assign(lvd_dist *d, const float *x, int64_t n, int32_t dim, const float *centroids, int32_t k,
               int spherical, int32_t threads, int32_t *labels, float *scores);

/* Ranks > 0: serves rank 0's calls until its kmr_stop. 0, or -1 when a collective failed (the run is over). */
int kmr_serve(lvd_dist *d);

/* Rank 0: releases the serving ranks (nothing with d NULL or one rank). */
int kmr_stop(lvd_dist *d);

/* A stage's main over the ranks of a run (or one process without a launcher): initialises them (dist.h), then
 * rank 0 runs stage(argc, argv, d), d NULL for one process, and releases the others, which serve meanwhile.
 * Returns the process's exit status: stage's on rank 0; 0, or `failed` after an error (logged), elsewhere. */
int kmr_main(int argc, char **argv, int (*stage)(int argc, char **argv, lvd_dist *d), int failed);

#endif
