/* kmeans.h — k-means of float32 vectors: training (Lloyd's iterations, spherical by default), assignment to the
 * nearest centroid, and the centroids as .npy files: lvd-retrieve (the "cluster" retrieval of DINOv2) and
 * lvd-balance (hierarchical k-means, next).
 *
 * Shapes: vectors and centroids are row-major float32, x (n, d) and centroids (k, d). Labels are int32 centroid
 * indices in [0, k). Spherical k-means (the default) assigns by inner product and keeps every centroid at unit
 * length: with L2-normalised inputs that is cosine similarity, as FAISS's Kmeans(spherical=True). Otherwise it
 * assigns by squared L2 distance and centroids are plain means.
 *
 * Scale. kmeans_train works on an in-memory sample: at most k * max_points_per_centroid rows of x, drawn
 * uniformly (FAISS's max_points_per_centroid, 256 by default), by index, without copying them. At a billion
 * vectors the caller gathers a sample of that size and trains on it. kmeans_assign takes any number of rows, so
 * the caller streams the whole set through it in batches (e.g. the memory-mapped .npy files of lvd-embed).
 * Distances are SGEMM tiles of KMEANS_TILE_ROWS rows x KMEANS_TILE_CENTROIDS centroids, one single-threaded
 * SGEMM per tile with the tiles spread over the threads: neither call ever holds an n x k matrix; each thread
 * holds one tile (about 1.5 MB at d 384) beyond the inputs and outputs.
 *
 * Assignment is exact to float64. The float32 SGEMM scores only shortlist, per row, the centroids within a
 * bound of the float32 rounding error of the best one (a few per row; every centroid when more than 32 tie);
 * the shortlist is then scored in float64 (products of floats are exact there). A row's label is thus its
 * float64 brute-force nearest centroid over the float32 inputs, ties to the lowest index, and its score is that
 * float64 similarity or squared distance rounded to float32.
 *
 * One training iteration (FAISS's Clustering): assign every training row to its nearest centroid; the
 * objective of the iteration is the mean similarity (spherical) or mean squared distance of that assignment;
 * each centroid becomes the mean of its rows, summed in float64, then normalised when spherical; then empty
 * clusters are repaired (KMEANS_EMPTY_REPAIR) or kept (KMEANS_EMPTY_KEEP). Unless fixed_iterations is set,
 * training stops early only when an iteration assigns every row as the one before it
 * did (and nothing was repaired in between): the centroids are then a fixed point, and further iterations
 * would change nothing.
 *
 * Empty clusters. Each cluster left without rows takes a row of the cluster that has the most rows (counting
 * rows it has already given away; ties to the lower index): the row its centroids serve worst, i.e. with the
 * lowest similarity (largest distance) to the donor's centroid and to the centroids already placed on its rows
 * in this repair (farthest-first, so several empty clusters filled from one donor spread over it), ties to the
 * earlier row. The row becomes the new centroid (normalised when spherical). FAISS instead copies the donor's
 * centroid with a small symmetric perturbation, which can leave the copy empty again; a centroid placed on a
 * training row keeps at least that row in the next assignment (it is the row's nearest centroid) unless the
 * row has a duplicate among the other centroids. With n >= k there is always a donor with two rows or more.
 * With fewer than k distinct training rows some clusters necessarily stay empty.
 *
 * Determinism. For the same input, options and CPU model, kmeans_train returns bit-identical centroids and
 * stats on every run and for every thread count, and kmeans_assign gives a row the same label and score bits
 * whatever the batch it comes in, its place in the batch and the thread count: assignment decides in float64
 * in a fixed order (above), each centroid's float64 sum runs over its rows in row order (a counting sort by
 * label, then one sum per centroid: no per-thread partial sums to merge), and every other sum has a fixed
 * order. This is stronger than determinism for a given thread count, and tests check both. Nor do the
 * results depend on OpenBLAS's kernels, hence on the CPU model: SGEMM only shortlists, and the shortlist always
 * holds the float64 winner. The exception is KMEANS_INIT_PLUSPLUS, whose distances come from SGEMV, so that
 * another CPU model may draw other initial rows. The seed fixes the sample and the initial centroids.
 *
 * Non-finite values. A NaN or infinity in x (the training sample, or the rows given to kmeans_assign), in the
 * given initial centroids or in the centroids given to kmeans_assign is an error naming the row and column;
 * nothing is assigned around it (FAISS also refuses such input).
 *
 * Processes (kmeans_opts.comm; common/dist.h gives one over MPI). kmeans_train can run over several processes
 * (ranks), each holding a part of the rows: rank r's x is rows [o_r, o_r + n_r) of the whole set X, the parts
 * in rank order (o_0 = 0, o_{r+1} = o_r + n_r; a part may be empty). Every rank calls kmeans_train with the
 * same options and receives the same centroids and stats, those of one process on X up to the order of the
 * float64 sums: the training sample is drawn over X (so it is the same rows), the initial centroids are the
 * same rows of X (their vectors sent by the rank holding them), each rank assigns its own rows, and per
 * iteration the ranks all-reduce in float64 the per-centroid sums and counts (k (d + 1) values), the objective
 * and whether any label changed. The empty-cluster repair picks the same row (each rank offers the worst row of
 * the donor it holds; the worst wins, ties to the earlier row of X) and greedy k-means++ the same candidates
 * (the running sum C over X is each rank's own running sum plus the totals of the ranks before it; each
 * candidate's potential is summed over the ranks). Only float64 rounding differs from one process: sums of the
 * same terms in another order, so a centroid's float32 bits may differ in the last place and a draw or a tie
 * within ~1e-15 relative may go the other way; the tests check identical labels on their data. KMEANS_INIT_
 * PLUSPLUS is refused over processes. Memory per rank: the one-process figure for its own rows, plus k (d + 1)
 * float64 for the sums and, with random init, 8 bytes per training row of X. Per iteration: 2 all-reduces and
 * 2 more per repaired cluster; greedy init: 4 per centre. A failure on one rank (a non-finite value in its
 * rows, memory) is agreed on at once, so every rank fails and none waits in a collective. kmeans_assign needs
 * nothing of this: each rank assigns its own rows, with the same labels one process gives them.
 *
 * Threads: opts.threads / the threads argument, 0 for OpenMP's default (omp_get_max_threads). OpenBLAS runs
 * single-threaded inside the module's parallel regions. Errors follow err.h: 0 / -1 with lvd_errmsg().
 */
#ifndef LVD_KMEANS_H
#define LVD_KMEANS_H

#include <stdint.h>

#define KMEANS_TILE_ROWS 256       /* rows per SGEMM tile (256 to 1024 measured alike on 2 cores) */
#define KMEANS_TILE_CENTROIDS 1024 /* centroids per SGEMM tile */

typedef enum kmeans_init {
    KMEANS_INIT_RANDOM = 0,   /* k distinct training rows drawn uniformly (FAISS) */
    KMEANS_INIT_PLUSPLUS = 1, /* k-means++ (Arthur & Vassilvitskii 2007; ssl-data-curation): each next centroid
                                 a training row drawn with probability proportional to its squared L2 distance
                                 to the nearest centroid so far. k sequential passes over the training rows,
                                 each bound by memory bandwidth (2 cores: 8.5 s for 100,000 x 384 rows and
                                 k 1,000, some 6 Lloyd iterations): fine up to a few thousand centroids */
    KMEANS_INIT_GIVEN = 2,    /* the centroids buffer holds the initial centroids, used as they are */
    KMEANS_INIT_GREEDY = 3,   /* greedy k-means++ (scikit-learn's, ssl-data-curation's): squared L2 only
                                 (spherical 0). Each next centre draws L = 2 + floor(ln k) candidate rows with
                                 probability proportional to their squared distance to the nearest centre so
                                 far and keeps the one that lowers the potential (the float64 sum of those
                                 distances) most. Draws exactly as below (KMEANS_GREEDY_DRAWS), so that an
                                 independent implementation reproduces the centres. Cost: k passes over the
                                 training rows, each one streaming product of the rows with the L candidates
                                 (bound by memory bandwidth: 2 cores, 200,000 x 384 rows, k 1,000: 24 s, SGEMM
                                 30 s), the float64 distance computed only for rows the float32 product cannot
                                 decide. LVD_KMEANS_DOTS=c|avx2|avx512 forces a path (default: the widest) */
} kmeans_init;

/* KMEANS_GREEDY_DRAWS — the greedy k-means++ draw, specified so that a test can replay it.
 *
 * Generator: splitmix64 with state s0 = seed * 0x2545f4914f6cdd1d + 2 * 0x9e3779b97f4a7c15 (mod 2^64); next():
 * s += 0x9e3779b97f4a7c15; z = s; z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9; z = (z ^ z >> 27) *
 * 0x94d049bb133111eb; return z ^ z >> 31. unit() = (next() >> 11) * 2^-53, in [0, 1).
 * Over the n training rows in order (all rows: use max_points_per_centroid 0 for a replayable run):
 *   first centre: row min(floor(unit() * n), n - 1);
 *   D[i] = float64 squared distance of row i to its nearest centre so far; C = running float64 sum of D in row
 *   order (C[i] = D[0] + ... + D[i]), pot = C[n - 1];
 *   each next centre: for j in 0..L-1, u_j = unit() * pot, candidate j = the first row i with C[i] > u_j (row
 *   n - 1 when none); candidate j's potential = sum over rows of min(D[i], |x_i - cand_j|^2) (float64); the
 *   centre is the candidate of smallest potential (ties: the lowest j), and D becomes that candidate's minimum.
 * When pot is 0 (fewer distinct rows than centres), no draw: the next centre is the first row, in row order,
 * that is not a centre yet.
 * Distances are exact float64 sums of float64 differences (4 interleaved lanes), so a float64 reimplementation
 * agrees to rounding, i.e. on every draw that does not fall within ~1e-15 relative of a boundary of C. (The
 * SGEMM pass only rules out rows whose distance is certainly above D[i]; every other distance is that float64
 * sum, so the result does not depend on OpenBLAS's kernels or the CPU.) */

/* The ranks of a kmeans_train over several processes ("Processes" above). */
typedef struct kmeans_comm {
    int32_t rank, ranks; /* this process's rank in [0, ranks) */
    /* buf (n float64) = the element-wise sum over the ranks, the same bits on every rank. 0, or -1 with the
     * message set (a failed collective is not recoverable: the caller stops). */
    int (*sum_f64)(double *buf, int64_t n, void *ctx);
    void *ctx;
} kmeans_comm;

/* What an iteration does with a cluster left without rows. */
typedef enum kmeans_empty {
    KMEANS_EMPTY_REPAIR = 0, /* (default) it takes the row its donor serves worst: "Empty clusters" above */
    KMEANS_EMPTY_KEEP = 1,   /* it keeps its previous centroid (ssl-data-curation's rule); it may stay empty */
} kmeans_empty;

typedef struct kmeans_opts {
    int32_t k;                       /* number of centroids (no default: set it) */
    int32_t iterations;              /* Lloyd iterations at most (default 20); 0 returns the initial centroids */
    uint64_t seed;                   /* draws of the training sample and the initial centroids (default 1234) */
    int spherical;                   /* 1 (default): inner product, unit centroids; 0: squared L2, means */
    kmeans_init init;                /* default KMEANS_INIT_RANDOM */
    int64_t max_points_per_centroid; /* train on at most k * this many rows of x, a uniform sample (default 256;
                                        0: all rows) */
    int32_t threads;                 /* 0: omp_get_max_threads() */
    int fixed_iterations;            /* 0 (default): stop at a fixed point; 1: run exactly `iterations` centroid
                                        updates (ssl-data-curation's n_iters), no early stop */
    kmeans_empty empty;              /* default KMEANS_EMPTY_REPAIR */
    const kmeans_comm *comm;         /* NULL (default): one process; else x is this rank's part of the rows */
} kmeans_opts;

typedef struct kmeans_stats {
    int32_t iterations; /* Lloyd iterations run: opts.iterations, or fewer when training reached a fixed point */
    int64_t n_train;    /* training rows used: min(n, k * max_points_per_centroid), or n (of all ranks) */
    int64_t repaired;   /* empty clusters repaired, summed over the iterations */
    double *objective;  /* in: NULL, or room for opts.iterations values set by the caller; out: entry t is the
                           mean similarity (spherical) or mean squared L2 distance of the training rows to the
                           centroids they were assigned in iteration t (entries past `iterations` untouched) */
    double init_s;      /* wall seconds of the initialisation (timing only: the one field that varies by run) */
    double iterations_s; /* wall seconds of the `iterations` Lloyd iterations, all together (timing only) */
} kmeans_stats;

/* Defaults above (k = 0: the caller sets it). */
void kmeans_opts_default(kmeans_opts *o);

/* Trains o->k centroids (k, d) on x (n, d). centroids receives them; with KMEANS_INIT_GIVEN it holds the
 * initial ones on entry. st may be NULL. Fails when n < k, k < 1, d < 1, an option is out of range or the
 * input has a non-finite value; centroids is then unspecified. Memory beyond x and centroids: one allocation
 * of about n_train x 28 bytes (32 with k-means++), plus one tile per thread. */
int kmeans_train(const float *x, int64_t n, int32_t d, const kmeans_opts *o, float *centroids, kmeans_stats *st);

/* For each row of x (n, d), its nearest centroid of centroids (k, d) into labels (n): by inner product when
 * spherical is 1, squared L2 distance when 0; ties to the lowest index. scores (n), unless NULL, receives the
 * similarity or squared distance to that centroid. n 0 is a no-op. threads 0: OpenMP's default. */
int kmeans_assign(const float *x, int64_t n, int32_t d, const float *centroids, int32_t k, int spherical,
                  int32_t threads, int32_t *labels, float *scores);

/* Writes centroids (k, d) as a (k, d) float32 .npy (atomically: npy.h). */
int kmeans_save(const char *path, const float *centroids, int32_t k, int32_t d);

/* Reads a 2-D .npy of centroids (float32 or float16) into *centroids (malloc'ed, (*k, *d) float32; the caller
 * frees it). d_expect 0 accepts any dimension; otherwise another dimension is an error naming the file. Fails
 * on a file that is not 2-D, is empty or holds a non-finite value. */
int kmeans_load(const char *path, int32_t d_expect, float **centroids, int32_t *k, int32_t *d);

#endif
