/* kmeans.c — k-means training and assignment: see kmeans.h.
 *
 * Layout of the code: random numbers; row scans and float64 scores; the tile kernel (SGEMM of one tile of rows
 * against a block of centroids, a shortlist per row, the float64 decision) and the assignment driver over
 * tiles; the training sample; initialisation (random rows, k-means++); the centroid update (counting sort of
 * the rows by label, one float64 sum per centroid over its rows in row order) and the empty-cluster repair;
 * the training loop; the same over several processes (kmeans.h, "Processes": the sample and the initial rows
 * drawn over the whole set, sums and counts all-reduced in float64); .npy files.
 */
#include "kmeans.h"

#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "err.h"
#include "npy.h"

#define KPP_CHUNK 4096 /* rows per k-means++ distance chunk (one SGEMV each; fixed, so sums have one order) */

/* ---------------------------------------------------------------------------------------------------- */
/* random numbers: splitmix64, one stream per purpose so the sample and the init do not share draws */

enum { STREAM_SAMPLE = 1, STREAM_INIT = 2 };

typedef struct rng {
    uint64_t s;
} rng;

/* A generator for (seed, stream): distinct streams of one seed give unrelated sequences. */
static rng rng_make(uint64_t seed, uint64_t stream)
{
    return (rng){seed * 0x2545f4914f6cdd1dull + stream * 0x9e3779b97f4a7c15ull};
}

/* Next 64 random bits (splitmix64). */
static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, m), m < 2^53. */
static int64_t rng_below(rng *r, int64_t m)
{
    int64_t v = (int64_t)(rng_unit(r) * (double)m);
    return v < m ? v : m - 1;
}

/* ---------------------------------------------------------------------------------------------------- */
/* small helpers */

/* The thread count of an option: itself when positive, else OpenMP's default. */
static int32_t resolve_threads(int32_t threads)
{
    return threads > 0 ? threads : omp_get_max_threads();
}

/* Inside a parallel region: a team of one thread is not an active region to OpenBLAS, which would then
 * start its own threads; lowering this task's thread count keeps its SGEMMs single-threaded as in a larger
 * team. The setting belongs to the region's implicit task and ends with it. */
static void blas_single_threaded(void)
{
    if (omp_get_num_threads() == 1)
        omp_set_num_threads(1);
}

/* Index of the first non-finite value of v (m floats), or -1. Bit test (exponent all ones), so it is exact
 * whatever the floating-point flags, and vectorises. */
static int64_t first_nonfinite(const float *v, int64_t m)
{
    const uint32_t *u = (const uint32_t *)(const void *)v;
    uint32_t bad = 0;
    for (int64_t i = 0; i < m; i++)
        bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    if (!bad)
        return -1;
    for (int64_t i = 0; i < m; i++)
        if ((u[i] & 0x7f800000u) == 0x7f800000u)
            return i;
    return -1;
}

/* The row scans of assign_tile run on SSE2 (every x86-64 CPU) when the compiler targets it, else as plain
 * loops: a maximum and a comparison do not depend on the order of operations, and the norm bound only sizes
 * the shortlist, never the float64 decision. */

/* Maximum of v (m >= 1 floats, none NaN). */
static float max_row(const float *v, int32_t m)
{
    int32_t j = 0;
    float b = v[0];
#if defined(__SSE2__)
    if (m >= 8) {
        __m128 a0 = _mm_loadu_ps(v), a1 = _mm_loadu_ps(v + 4);
        for (j = 8; j + 8 <= m; j += 8) {
            a0 = _mm_max_ps(a0, _mm_loadu_ps(v + j));
            a1 = _mm_max_ps(a1, _mm_loadu_ps(v + j + 4));
        }
        float t[4];
        _mm_storeu_ps(t, _mm_max_ps(a0, a1));
        b = t[0];
        for (int l = 1; l < 4; l++)
            b = t[l] > b ? t[l] : b;
    }
#endif
    for (; j < m; j++)
        b = v[j] > b ? v[j] : b;
    return b;
}

/* 1 when any of the 16 floats at v is >= thr. */
static int ge_any16(const float *v, float thr)
{
#if defined(__SSE2__)
    __m128 t = _mm_set1_ps(thr);
    __m128 a = _mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(v), t), _mm_cmpge_ps(_mm_loadu_ps(v + 4), t));
    __m128 b = _mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(v + 8), t), _mm_cmpge_ps(_mm_loadu_ps(v + 12), t));
    return _mm_movemask_ps(_mm_or_ps(a, b)) != 0;
#else
    int any = 0;
    for (int l = 0; l < 16; l++)
        any |= v[l] >= thr;
    return any;
#endif
}

/* An upper bound on the norm of v (d floats): the float32 sum of squares (relative error under d * 2^-24),
 * raised by 2^-8 relative, which covers that error up to d = 65,536. */
static double norm_bound(const float *v, int32_t d)
{
    int32_t j = 0;
    float s = 0;
#if defined(__SSE2__)
    __m128 a = _mm_setzero_ps();
    for (; j + 4 <= d; j += 4) {
        __m128 t = _mm_loadu_ps(v + j);
        a = _mm_add_ps(a, _mm_mul_ps(t, t));
    }
    float t[4];
    _mm_storeu_ps(t, a);
    s = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; j < d; j++)
        s += v[j] * v[j];
    return sqrt((double)s) * (1.0 + 0x1.0p-8);
}

/* Squared norm of v (d floats) in float64, in index order. */
static double norm2(const float *v, int32_t d)
{
    double s = 0;
    for (int32_t j = 0; j < d; j++)
        s += (double)v[j] * v[j];
    return s;
}

/* dst (d) = src scaled to unit length when spherical (a zero vector stays zero), else src. */
static void set_centroid(float *dst, const float *src, int32_t d, int spherical)
{
    double s = spherical ? norm2(src, d) : 0;
    double f = s > 0 ? 1.0 / sqrt(s) : 1.0;
    for (int32_t j = 0; j < d; j++)
        dst[j] = spherical ? (float)(src[j] * f) : src[j];
}

/* Bytes of an arena block, rounded up to 64 so every block starts on a cache line. */
static size_t blk(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

/* ---------------------------------------------------------------------------------------------------- */
/* assignment */

/* What the tile kernel reads. Row i is x[rows[i]] when rows is set (a training sample), else x[i]. */
typedef struct assign_src {
    const float *x;      /* (n_x, d) */
    const int64_t *rows; /* (n) row of x of each assigned row, or NULL */
    int64_t n;           /* rows to assign */
    int32_t d;
    const float *c;      /* (k, d) centroids */
    const float *chalf;  /* (k) |c|^2 / 2 for L2, NULL for inner product */
    float cmax;          /* largest centroid norm */
    int32_t k;
    int check;           /* 1: fail on a non-finite value in the rows */
} assign_src;

/* Candidates kept per row: centroids whose float32 score is within the error bound of the best. More (many
 * duplicated centroids) sends the row to the exhaustive float64 pass. */
#define CAND_MAX 32

/* Floats (4-byte words) of one thread's tile scratch: the gathered rows (KMEANS_TILE_ROWS, d), the scores
 * (KMEANS_TILE_ROWS, KMEANS_TILE_CENTROIDS), and per row CAND_MAX candidate indices and scores. */
static size_t tile_floats(int32_t d)
{
    return (size_t)KMEANS_TILE_ROWS * ((size_t)d + KMEANS_TILE_CENTROIDS + 2 * CAND_MAX);
}

/* Inner product of a and b (d floats) in float64, four lanes in a fixed order. Products of floats are exact
 * in float64, so this is the true value to within about d * 2^-53 of sum |a_j b_j|. */
static double dot_f64(const float *a, const float *b, int32_t d)
{
    double acc[4] = {0, 0, 0, 0};
    int32_t j = 0;
    for (; j + 4 <= d; j += 4)
        for (int l = 0; l < 4; l++)
            acc[l] += (double)a[j + l] * (double)b[j + l];
    double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (; j < d; j++)
        s += (double)a[j] * (double)b[j];
    return s;
}

/* Squared L2 distance of a and b (d floats) in float64, four lanes in a fixed order. */
static double dist2_f64(const float *a, const float *b, int32_t d)
{
    double acc[4] = {0, 0, 0, 0};
    int32_t j = 0;
    for (; j + 4 <= d; j += 4)
        for (int l = 0; l < 4; l++) {
            double t = (double)a[j + l] - (double)b[j + l];
            acc[l] += t * t;
        }
    double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s += t * t;
    }
    return s;
}

/* Float64 score of row x against centroid c: the similarity, or minus the squared distance (higher is
 * nearer in both cases). */
static double score_f64(const float *x, const float *c, int32_t d, int l2)
{
    return l2 ? -dist2_f64(x, c, d) : dot_f64(x, c, d);
}

/* Assigns rows [r0, r0 + m) of s (m <= KMEANS_TILE_ROWS) to their nearest centroids: labels and scores at
 * [r0, r0 + m). scratch: tile_floats(d).
 *
 * Two passes. SGEMM gives float32 scores per block of KMEANS_TILE_CENTROIDS centroids; every centroid within
 * `margin` of the row's best float32 score is a candidate, where margin is twice a bound on the float32 error
 * of two such scores (|fl(x.c) - x.c| <= (d + 2) u |x| |c|, u = 2^-24, for any summation order; for L2 also
 * the |c|^2 / 2 term). The nearest centroid in float64 (dot_f64 / dist2_f64) is therefore a candidate, and the
 * candidates decide in float64, ties to the lowest index. So the label and score are those of a float64 brute
 * force on the float32 inputs, and do not depend on how OpenBLAS blocked or ordered its sums: the same for a
 * row whatever its batch, its place in it and the thread count. Returns -1 when s->check finds a non-finite
 * value, with *bad_row the first such row; else 0. */
static int assign_tile(const assign_src *s, int64_t r0, int64_t m, float *scratch, int32_t *labels, float *scores,
                       int64_t *bad_row)
{
    const int32_t d = s->d;
    const int l2 = s->chalf != NULL;
    float *tile = scratch, *sim = tile + (size_t)KMEANS_TILE_ROWS * d;
    int32_t *cand = (int32_t *)(void *)(sim + (size_t)KMEANS_TILE_ROWS * KMEANS_TILE_CENTROIDS);
    float *csim = (float *)(void *)(cand + (size_t)KMEANS_TILE_ROWS * CAND_MAX);
    const float *xt;
    if (s->rows) {
        for (int64_t i = 0; i < m; i++)
            memcpy(tile + i * d, s->x + s->rows[r0 + i] * d, (size_t)d * sizeof(float));
        xt = tile;
    } else {
        xt = s->x + r0 * d;
    }
    if (s->check) {
        int64_t at = first_nonfinite(xt, m * d);
        if (at >= 0) {
            *bad_row = r0 + at / d;
            return -1;
        }
    }
    float best[KMEANS_TILE_ROWS], margin[KMEANS_TILE_ROWS];
    int32_t ncand[KMEANS_TILE_ROWS];
    const double u = 0x1.0p-24, cmax = s->cmax;
    for (int64_t i = 0; i < m; i++) {
        double xn = norm_bound(xt + i * d, d);
        margin[i] = (float)(4.0 * (d + 2) * u * (xn * cmax + (l2 ? cmax * cmax : 0.0)));
        best[i] = -INFINITY;
        ncand[i] = 0;
    }
    for (int32_t c0 = 0; c0 < s->k; c0 += KMEANS_TILE_CENTROIDS) {
        int32_t kc = s->k - c0 < KMEANS_TILE_CENTROIDS ? s->k - c0 : KMEANS_TILE_CENTROIDS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, kc, d, 1.0f, xt, d, s->c + (size_t)c0 * d, d,
                    0.0f, sim, kc);
        for (int64_t i = 0; i < m; i++) {
            float *row = sim + i * kc;
            if (l2) /* the nearest centroid maximises x.c - |c|^2 / 2 */
                for (int32_t j = 0; j < kc; j++)
                    row[j] -= s->chalf[c0 + j];
            float b = max_row(row, kc);
            if (!(b >= best[i] - margin[i]))
                continue; /* nothing in this block comes near the best so far (or b is NaN) */
            if (b > best[i])
                best[i] = b;
            float thr = best[i] - margin[i];
            int32_t *ci = cand + i * CAND_MAX;
            float *cs = csim + i * CAND_MAX;
            for (int32_t j0 = 0; j0 < kc && ncand[i] <= CAND_MAX; j0 += 16) {
                int32_t j1 = j0 + 16 < kc ? j0 + 16 : kc;
                if (j1 - j0 == 16 && !ge_any16(row + j0, thr))
                    continue;
                for (int32_t j = j0; j < j1; j++) {
                    if (!(row[j] >= thr))
                        continue;
                    if (ncand[i] == CAND_MAX) { /* drop candidates the best has left behind */
                        int32_t w = 0;
                        for (int32_t q = 0; q < CAND_MAX; q++)
                            if (cs[q] >= thr) {
                                ci[w] = ci[q];
                                cs[w++] = cs[q];
                            }
                        ncand[i] = w;
                    }
                    if (ncand[i] == CAND_MAX) {
                        ncand[i] = CAND_MAX + 1; /* overflow: exhaustive pass */
                        break;
                    }
                    ci[ncand[i]] = c0 + j;
                    cs[ncand[i]++] = row[j];
                }
            }
        }
    }
    for (int64_t i = 0; i < m; i++) {
        const float *xi = xt + i * d;
        float thr = best[i] - margin[i];
        int32_t a = -1;
        double bs = -INFINITY;
        if (ncand[i] > CAND_MAX) { /* every centroid, in float64 */
            for (int32_t j = 0; j < s->k; j++) {
                double v = score_f64(xi, s->c + (size_t)j * d, d, l2);
                if (a < 0 || v > bs) {
                    bs = v;
                    a = j;
                }
            }
        } else { /* candidates are in ascending index order */
            const int32_t *ci = cand + i * CAND_MAX;
            const float *cs = csim + i * CAND_MAX;
            for (int32_t q = 0; q < ncand[i]; q++) {
                if (!(cs[q] >= thr))
                    continue;
                double v = score_f64(xi, s->c + (size_t)ci[q] * d, d, l2);
                if (a < 0 || v > bs) {
                    bs = v;
                    a = ci[q];
                }
            }
        }
        if (a < 0) { /* no finite score at all (overflowing products): the first centroid */
            a = 0;
            bs = score_f64(xi, s->c, d, l2);
        }
        labels[r0 + i] = a;
        if (scores)
            scores[r0 + i] = (float)(l2 ? -bs : bs);
    }
    return 0;
}

/* Assigns all s->n rows, tiles spread over nt threads (any schedule gives the same result: tiles are
 * independent). scratch: nt * tile_floats(d). Returns 0, or -1 with *bad_row the first non-finite row. */
static int assign_all(const assign_src *s, int32_t nt, float *scratch, int32_t *labels, float *scores,
                      int64_t *bad_row)
{
    int64_t ntiles = (s->n + KMEANS_TILE_ROWS - 1) / KMEANS_TILE_ROWS;
    int64_t first_bad = INT64_MAX;
#pragma omp parallel num_threads(nt)
    {
        blas_single_threaded();
        float *mine = scratch + (size_t)omp_get_thread_num() * tile_floats(s->d);
#pragma omp for schedule(dynamic, 1) reduction(min : first_bad)
        for (int64_t t = 0; t < ntiles; t++) {
            int64_t r0 = t * KMEANS_TILE_ROWS, m = s->n - r0 < KMEANS_TILE_ROWS ? s->n - r0 : KMEANS_TILE_ROWS;
            int64_t bad = INT64_MAX;
            if (assign_tile(s, r0, m, mine, labels, scores, &bad) != 0 && bad < first_bad)
                first_bad = bad;
        }
    }
    if (first_bad != INT64_MAX) {
        *bad_row = first_bad;
        return -1;
    }
    return 0;
}

/* What assign_tile needs of the centroids c (k, d): chalf (k) = |c|^2 / 2 for L2 (chalf NULL: inner
 * product), and the largest centroid norm, which it returns. */
static float centroid_norms(float *chalf, const float *c, int32_t k, int32_t d)
{
    double mx = 0;
    for (int32_t i = 0; i < k; i++) {
        double n2 = norm2(c + (size_t)i * d, d);
        mx = n2 > mx ? n2 : mx;
        if (chalf)
            chalf[i] = (float)(0.5 * n2);
    }
    return (float)(sqrt(mx) * (1.0 + 0x1.0p-20)); /* rounded up */
}

/* Fails naming the first centroid of c (k, d) with a non-finite value; what names the caller. */
static int check_centroids(const char *what, const float *c, int32_t k, int32_t d)
{
    int64_t at = first_nonfinite(c, (int64_t)k * d);
    if (at >= 0)
        return lvd_fail("%s: centroid %" PRId64 " has a non-finite value (%g) in column %" PRId64, what, at / d,
                        (double)c[at], at % d);
    return 0;
}

int kmeans_assign(const float *x, int64_t n, int32_t d, const float *centroids, int32_t k, int spherical,
                  int32_t threads, int32_t *labels, float *scores)
{
    if (d < 1 || k < 1 || n < 0 || threads < 0)
        return lvd_fail("kmeans_assign: need d >= 1, k >= 1, n >= 0, threads >= 0 (got d %" PRId32 ", k %" PRId32
                        ", n %" PRId64 ", threads %" PRId32 ")",
                        d, k, n, threads);
    if (n == 0)
        return 0;
    if (!x || !centroids || !labels)
        return lvd_fail("kmeans_assign: x, centroids and labels must be given");
    if (check_centroids("kmeans_assign", centroids, k, d) != 0)
        return -1;
    int32_t nt = resolve_threads(threads);
    int64_t ntiles = (n + KMEANS_TILE_ROWS - 1) / KMEANS_TILE_ROWS;
    if (nt > ntiles)
        nt = (int32_t)ntiles;
    size_t sz_tiles = blk((size_t)nt * tile_floats(d) * sizeof(float)), sz_half = blk((size_t)k * sizeof(float));
    char *mem = malloc(sz_tiles + sz_half);
    if (!mem)
        return lvd_fail("kmeans_assign: out of memory for %" PRId32 " tiles of %zu floats", nt, tile_floats(d));
    float *chalf = spherical ? NULL : (float *)(mem + sz_tiles);
    float cmax = centroid_norms(chalf, centroids, k, d);
    assign_src s = {x, NULL, n, d, centroids, chalf, cmax, k, 1};
    int64_t bad = -1;
    int rc = assign_all(&s, nt, (float *)mem, labels, scores, &bad);
    if (rc != 0) {
        int64_t at = first_nonfinite(x + bad * d, d);
        lvd_fail("kmeans_assign: row %" PRId64 " has a non-finite value (%g) in column %" PRId64, bad,
                 (double)x[bad * d + at], at);
    }
    free(mem);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------- */
/* training */

/* Everything kmeans_train allocates, carved out of one block. */
typedef struct train_mem {
    int64_t *rows;   /* (n_train) rows of x in the sample, ascending; NULL when training on all of x */
    int32_t *labels; /* (n_train) this iteration's assignment */
    int32_t *prev;   /* (n_train) the previous iteration's */
    float *scores;   /* (n_train) similarity / squared distance to the assigned centroid; k-means++ distances */
    int64_t *order;  /* (n_train) training rows grouped by label, row order within a label; init scratch */
    int64_t *start;  /* (k + 1) where each label's rows begin in order */
    int64_t *count;  /* (k) rows per label, as the repair lowers them */
    float *chalf;    /* (k) |c|^2 / 2 (L2 only) */
    double *acc;     /* (threads, d) float64 sums of the centroid update */
    double *chunk;   /* (n_train / KPP_CHUNK + 1) k-means++ distance sums per chunk */
    float *xn2;      /* (n_train) squared row norms, k-means++ only */
    float *scratch;  /* (threads, tile_floats(d)) tiles */
} train_mem;

/* Row of x of training row i. */
static const float *train_row(const float *x, const int64_t *rows, int64_t i, int32_t d)
{
    return x + (rows ? rows[i] : i) * d;
}

/* Draws the training sample: m of the n rows of x, uniformly without replacement, into rows (m) in ascending
 * order (selection sampling, Knuth's Algorithm S: one pass, no n-sized buffer). */
static void draw_sample(int64_t *rows, int64_t m, int64_t n, uint64_t seed)
{
    rng r = rng_make(seed, STREAM_SAMPLE);
    int64_t got = 0;
    for (int64_t i = 0; i < n && got < m; i++)
        if (rng_unit(&r) * (double)(n - i) < (double)(m - got))
            rows[got++] = i;
}

/* The ranks of a training over several processes (kmeans.h, "Processes"), with this rank's place in the
 * training rows: the sample is ascending and the parts are in rank order, so each rank's training rows are a
 * contiguous range [t0, t0 + n_of[rank]) of the training indices of the whole set. One process: cm NULL,
 * ranks 1, t0 0. */
typedef struct part_info {
    const kmeans_comm *cm; /* NULL: one process */
    int32_t rank, ranks;
    int64_t t0;            /* training index of this rank's first training row */
    int64_t n_global;      /* training rows of all ranks */
    int64_t *n_of;         /* (ranks) training rows of each rank */
} part_info;

/* buf (n) = its sum over the ranks (nothing for one process). */
static int part_sum(const part_info *pi, double *buf, int64_t n)
{
    if (!pi->cm || n == 0)
        return 0;
    return pi->cm->sum_f64(buf, n, pi->cm->ctx) != 0 ? lvd_fail_ctx("kmeans_train: all-reduce over the ranks") : 0;
}

/* all (ranks * m) = every rank's mine (m values), in rank order. */
static int part_allgather(const part_info *pi, const double *mine, int32_t m, double *all)
{
    memset(all, 0, (size_t)pi->ranks * (size_t)m * sizeof *all);
    memcpy(all + (size_t)pi->rank * m, mine, (size_t)m * sizeof *all);
    return part_sum(pi, all, (int64_t)pi->ranks * m);
}

/* The verdict of the ranks on a step each may have failed (rc): 0 if none did, else -1 on every rank. */
static int part_agree(const part_info *pi, int rc)
{
    if (!pi->cm)
        return rc;
    double f = rc != 0 ? 1.0 : 0.0;
    if (part_sum(pi, &f, 1) != 0)
        return -1;
    if (f > 0 && rc == 0)
        return lvd_fail("kmeans_train: failed on another rank (its message is in that rank's log)");
    return f > 0 ? -1 : 0;
}

/* Whether training index g is this rank's, and its local index *li. */
static int part_mine(const part_info *pi, int64_t g, int64_t *li)
{
    *li = g - pi->t0;
    return g >= pi->t0 && g < pi->t0 + pi->n_of[pi->rank];
}

/* out (m, d) = the training rows of training indices g (m) of the whole set, from the ranks that hold them.
 * buf: m * d float64 scratch (unused for one process). */
static int part_rows(const part_info *pi, const float *x, const int64_t *rows, int32_t d, const int64_t *g,
                     int64_t m, double *buf, float *out)
{
    if (!pi->cm) {
        for (int64_t j = 0; j < m; j++)
            memcpy(out + j * d, train_row(x, rows, g[j], d), (size_t)d * sizeof *out);
        return 0;
    }
    memset(buf, 0, (size_t)m * d * sizeof *buf);
    for (int64_t j = 0; j < m; j++) {
        int64_t li;
        if (part_mine(pi, g[j], &li)) {
            const float *xi = train_row(x, rows, li, d);
            for (int32_t e = 0; e < d; e++)
                buf[j * d + e] = xi[e];
        }
    }
    if (part_sum(pi, buf, m * d) != 0)
        return -1;
    for (int64_t j = 0; j < m * d; j++)
        out[j] = (float)buf[j]; /* a float plus zeros: exact */
    return 0;
}

/* The sample of a training over ranks: Algorithm S over the n_all rows of the whole set, exactly as
 * draw_sample, keeping the draws that fall in [lo, lo + n) (as local rows, ascending) and counting the draws
 * before them (*t0). *got: the draws kept. */
static void draw_sample_part(int64_t *rows, int64_t m, int64_t n_all, uint64_t seed, int64_t lo, int64_t n,
                             int64_t *t0, int64_t *got)
{
    rng r = rng_make(seed, STREAM_SAMPLE);
    int64_t drawn = 0, kept = 0;
    *t0 = -1;
    for (int64_t i = 0; i < n_all && drawn < m; i++)
        if (rng_unit(&r) * (double)(n_all - i) < (double)(m - drawn)) {
            if (i >= lo && i < lo + n) {
                if (*t0 < 0)
                    *t0 = drawn;
                rows[kept++] = i - lo;
            }
            drawn++;
        }
    if (*t0 < 0) /* no row here: the place this rank's rows would start */
        *t0 = 0;
    *got = kept;
}

/* Random init over ranks: the same draws as init_random, over the whole set's n_global training rows (order: a
 * scratch of that many indices), the rows gathered from the ranks holding them. buf (k * d) float64, rowf
 * (k * d) floats. */
static int init_random_part(const part_info *pi, const float *x, const int64_t *rows, int32_t d, int32_t k,
                            int spherical, uint64_t seed, int64_t *order, double *buf, float *rowf, float *c)
{
    rng r = rng_make(seed, STREAM_INIT);
    const int64_t n = pi->n_global;
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    for (int32_t i = 0; i < k; i++) {
        int64_t j = i + rng_below(&r, n - i), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    if (part_rows(pi, x, rows, d, order, k, buf, rowf) != 0)
        return -1;
    for (int32_t i = 0; i < k; i++)
        set_centroid(c + (size_t)i * d, rowf + (size_t)i * d, d, spherical);
    return 0;
}

/* Random init (FAISS): k distinct training rows, uniformly (a partial Fisher-Yates shuffle of order, which
 * holds n_train entries), copied into c (k, d), normalised when spherical. */
static void init_random(const float *x, const int64_t *rows, int64_t nt_rows, int32_t d, int32_t k, int spherical,
                        uint64_t seed, int64_t *order, float *c)
{
    rng r = rng_make(seed, STREAM_INIT);
    for (int64_t i = 0; i < nt_rows; i++)
        order[i] = i;
    for (int32_t i = 0; i < k; i++) {
        int64_t j = i + rng_below(&r, nt_rows - i), t = order[i];
        order[i] = order[j];
        order[j] = t;
        set_centroid(c + (size_t)i * d, train_row(x, rows, order[i], d), d, spherical);
    }
}

/* k-means++ distances: dist (n) = min(dist, |x_i - c|^2) for the training rows against centroid c (d), or
 * = |x_i - c|^2 when first. Chunks of KPP_CHUNK rows, each one single-threaded SGEMV on its (gathered) rows,
 * so every distance has one summation order; chunk (nchunks) receives each chunk's float64 sum of dist, in
 * row order. scratch: per thread tile_floats(d) floats, of which KPP_CHUNK + KMEANS_TILE_ROWS * d are used. */
static void kpp_update(const float *x, const int64_t *rows, const float *xn2, int64_t n, int32_t d, const float *c,
                       int first, float *dist, double *chunk, int32_t nt, float *scratch)
{
    int64_t nchunks = (n + KPP_CHUNK - 1) / KPP_CHUNK;
    double cn = norm2(c, d);
#pragma omp parallel num_threads(nt)
    {
        blas_single_threaded();
        float *ip = scratch + (size_t)omp_get_thread_num() * tile_floats(d);
        float *g = ip + KPP_CHUNK; /* KMEANS_TILE_ROWS gathered rows */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < nchunks; t++) {
            int64_t r0 = t * KPP_CHUNK, m = n - r0 < KPP_CHUNK ? n - r0 : KPP_CHUNK;
            if (rows) {
                for (int64_t b = 0; b < m; b += KMEANS_TILE_ROWS) {
                    int64_t mb = m - b < KMEANS_TILE_ROWS ? m - b : KMEANS_TILE_ROWS;
                    for (int64_t i = 0; i < mb; i++)
                        memcpy(g + i * d, x + rows[r0 + b + i] * d, (size_t)d * sizeof(float));
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)mb, d, 1.0f, g, d, c, 1, 0.0f, ip + b, 1);
                }
            } else {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, d, 1.0f, x + r0 * d, d, c, 1, 0.0f, ip, 1);
            }
            double sum = 0;
            for (int64_t i = 0; i < m; i++) {
                double v = (double)xn2[r0 + i] + cn - 2.0 * ip[i];
                float f = v > 0 ? (float)v : 0.0f;
                float *o = dist + r0 + i;
                if (first || f < *o)
                    *o = f;
                sum += *o;
            }
            chunk[t] = sum;
        }
    }
}

/* k-means++ init into c (k, d): the first centroid a uniform training row, each next one a row drawn with
 * probability proportional to dist (its squared distance to the nearest centroid so far); rows already taken
 * have distance 0. When every distance is 0 (fewer distinct rows than k) the next centroid is a uniform row
 * not taken yet. Centroids are normalised when spherical; distances are to those normalised centroids. taken
 * (n) is scratch. */
static void init_plusplus(const float *x, const int64_t *rows, int64_t n, int32_t d, int32_t k, int spherical,
                          uint64_t seed, float *xn2, float *dist, double *chunk, int32_t *taken, int32_t nt,
                          float *scratch, float *c)
{
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++)
        xn2[i] = (float)norm2(train_row(x, rows, i, d), d);
    rng r = rng_make(seed, STREAM_INIT);
    int64_t nchunks = (n + KPP_CHUNK - 1) / KPP_CHUNK;
    memset(taken, 0, (size_t)n * sizeof *taken);
    int64_t pick = rng_below(&r, n);
    for (int32_t ci = 0; ci < k; ci++) {
        if (ci > 0) {
            double total = 0;
            for (int64_t t = 0; t < nchunks; t++)
                total += chunk[t];
            pick = -1;
            if (total > 0) {
                double u = rng_unit(&r) * total;
                int64_t t = 0;
                for (; t < nchunks - 1 && u >= chunk[t]; t++)
                    u -= chunk[t];
                int64_t r0 = t * KPP_CHUNK, r1 = r0 + KPP_CHUNK < n ? r0 + KPP_CHUNK : n;
                for (int64_t i = r0; i < r1; i++) {
                    if (dist[i] > 0)
                        pick = i; /* the last positive row, should rounding carry u past the end */
                    if (u < dist[i])
                        break;
                    u -= dist[i];
                }
                if (pick >= 0 && taken[pick])
                    pick = -1;
            }
            if (pick < 0) { /* no distance left: a uniform row not taken yet (there are n - ci >= 1) */
                int64_t skip = rng_below(&r, n - ci);
                for (pick = 0;; pick++)
                    if (!taken[pick] && skip-- == 0)
                        break;
            }
        }
        taken[pick] = 1;
        float *cc = c + (size_t)ci * d;
        set_centroid(cc, train_row(x, rows, pick, d), d, spherical);
        if (ci + 1 < k) {
            kpp_update(x, rows, xn2, n, d, cc, ci == 0, dist, chunk, nt, scratch);
            int64_t t = pick / KPP_CHUNK;
            chunk[t] -= dist[pick];
            dist[pick] = 0;
        }
    }
}

/* The greedy pass's products: ip (m, L) = x (m, d) . cm (L, d)^T in float32, L <= GREEDY_MAX_L. A streaming
 * kernel rather than SGEMM: with L about 8 the product is bound by reading x, and OpenBLAS's SGEMM packs x
 * (another copy of it through memory) before it multiplies. Each row is read once, against the L candidates
 * held in L1. Paths chosen at run time: AVX-512F, AVX2 + FMA, portable C. Any summation order keeps within the
 * error bound init_greedy allows for, so the paths may differ in the last bits but not in the result. */
#define GREEDY_MAX_L 64

static void dots_c(const float *x, int64_t m, int32_t d, const float *cm, int32_t L, float *ip)
{
    for (int64_t i = 0; i < m; i++)
        for (int32_t j = 0; j < L; j++) {
            const float *a = x + i * d, *c = cm + (size_t)j * d;
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int32_t e = 0;
            for (; e + 8 <= d; e += 8)
                for (int l = 0; l < 8; l++)
                    acc[l] += a[e + l] * c[e + l];
            float t = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; e < d; e++)
                t += a[e] * c[e];
            ip[i * L + j] = t;
        }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void dots_avx2(const float *x, int64_t m, int32_t d, const float *cm,
                                                          int32_t L, float *ip)
{
    const int32_t tail = d % 8;
    int32_t mk[8];
    for (int l = 0; l < 8; l++)
        mk[l] = l < tail ? -1 : 0;
    const __m256i mask = _mm256_loadu_si256((const __m256i *)(const void *)mk);
    for (int64_t i = 0; i < m; i++) {
        const float *a = x + i * d;
        for (int32_t j0 = 0; j0 < L; j0 += 4) {
            int32_t nj = L - j0 < 4 ? L - j0 : 4;
            const float *c0 = cm + (size_t)j0 * d, *c1 = nj > 1 ? c0 + d : c0, *c2 = nj > 2 ? c0 + 2 * d : c0,
                        *c3 = nj > 3 ? c0 + 3 * d : c0;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            int32_t e = 0;
            for (; e + 8 <= d; e += 8) {
                __m256 v = _mm256_loadu_ps(a + e);
                s0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c0 + e), s0);
                s1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c1 + e), s1);
                s2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c2 + e), s2);
                s3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c3 + e), s3);
            }
            if (tail) {
                __m256 v = _mm256_maskload_ps(a + e, mask);
                s0 = _mm256_fmadd_ps(v, _mm256_maskload_ps(c0 + e, mask), s0);
                s1 = _mm256_fmadd_ps(v, _mm256_maskload_ps(c1 + e, mask), s1);
                s2 = _mm256_fmadd_ps(v, _mm256_maskload_ps(c2 + e, mask), s2);
                s3 = _mm256_fmadd_ps(v, _mm256_maskload_ps(c3 + e, mask), s3);
            }
            __m256 s[4] = {s0, s1, s2, s3};
            for (int32_t q = 0; q < nj; q++) {
                __m128 h = _mm_add_ps(_mm256_castps256_ps128(s[q]), _mm256_extractf128_ps(s[q], 1));
                h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
                ip[i * L + j0 + q] = _mm_cvtss_f32(h);
            }
        }
    }
}

__attribute__((target("avx512f"))) static void dots_avx512(const float *x, int64_t m, int32_t d, const float *cm,
                                                           int32_t L, float *ip)
{
    const __mmask16 mask = (__mmask16)((1u << (d % 16)) - 1u);
    for (int64_t i = 0; i < m; i++) {
        const float *a = x + i * d;
        for (int32_t j0 = 0; j0 < L; j0 += 8) {
            int32_t nj = L - j0 < 8 ? L - j0 : 8;
            const float *c[8];
            for (int32_t q = 0; q < 8; q++)
                c[q] = cm + (size_t)(j0 + (q < nj ? q : 0)) * d;
            __m512 s[8];
            for (int q = 0; q < 8; q++)
                s[q] = _mm512_setzero_ps();
            int32_t e = 0;
            for (; e + 16 <= d; e += 16) {
                __m512 v = _mm512_loadu_ps(a + e);
                for (int q = 0; q < 8; q++)
                    s[q] = _mm512_fmadd_ps(v, _mm512_loadu_ps(c[q] + e), s[q]);
            }
            if (mask) {
                __m512 v = _mm512_maskz_loadu_ps(mask, a + e);
                for (int q = 0; q < 8; q++)
                    s[q] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(mask, c[q] + e), s[q]);
            }
            for (int32_t q = 0; q < nj; q++)
                ip[i * L + j0 + q] = _mm512_reduce_add_ps(s[q]);
        }
    }
}
#endif

typedef void (*dots_fn)(const float *, int64_t, int32_t, const float *, int32_t, float *);

/* The widest path this CPU runs; LVD_KMEANS_DOTS=c|avx2|avx512 narrows it (benchmarks, tests). */
static dots_fn dots_pick(void)
{
    const char *force = getenv("LVD_KMEANS_DOTS");
#if defined(__x86_64__)
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f"), has2 = __builtin_cpu_supports("avx2") &&
                                                         __builtin_cpu_supports("fma");
    if (force && !strcmp(force, "c"))
        return dots_c;
    if (force && !strcmp(force, "avx2") && has2)
        return dots_avx2;
    if (has512 && !(force && !strcmp(force, "avx2")))
        return dots_avx512;
    if (has2)
        return dots_avx2;
#else
    (void)force;
#endif
    return dots_c;
}

/* Rows per tile of the greedy k-means++ candidate pass (a divisor of KPP_CHUNK). */
#define GREEDY_TILE 512

/* Greedy k-means++ into c (k, d), squared L2, exactly as KMEANS_GREEDY_DRAWS in kmeans.h: L candidates per
 * centre, the one of lowest potential kept.
 *
 * Each step's candidate distances are one product per tile of GREEDY_TILE rows against the L candidates (the
 * (tile, d) x (d, L) product of dots_pick's kernel: one read of the rows per centre, bound by memory
 * bandwidth), and
 * |x - c|^2 = |x|^2 + |c|^2 - 2 x.c in float64 from the float32 product. That value is within
 * e = 2 (d + 2) 2^-24 |x| |c| (the product's error, any summation order) + 8 (d + 2) 2^-53 (|x|^2 + |c|^2)
 * (the float64 norms and the sum) of the true distance; a row whose value exceeds D by more than e keeps D
 * (min(D, exact) = D: nothing to compute), and every other row gets the exact float64 distance (dist2_f64,
 * as the scalar definition). So the result is that of the plain float64 definition, bit for bit, whatever
 * the kernel: only rows near a candidate (about L n ln k of the n k L in a run) are computed exactly.
 *
 * Potentials are per-chunk float64 sums (KPP_CHUNK rows, row order) added in chunk order, so the result does
 * not depend on the thread count. Memory: (L + 4) * n float64, n bytes, and per thread a tile of
 * GREEDY_TILE x (d + L) floats, allocated here. */
static int init_greedy(const float *x, const int64_t *rows, int64_t n, int32_t d, int32_t k, uint64_t seed,
                       int32_t nt, const part_info *pi, float *c)
{
    const int32_t L = 2 + (int32_t)floor(log((double)k)), R = pi->ranks;
    const int64_t n_all = pi->n_global, na = n > 0 ? n : 1; /* na: sizes of the buffers (a rank may hold none) */
    int64_t nchunks = (n + KPP_CHUNK - 1) / KPP_CHUNK;
    size_t tile = (size_t)GREEDY_TILE * ((size_t)d + (size_t)L); /* gathered rows (sampled runs), products */
    double *D = malloc((size_t)na * sizeof *D), *C = malloc((size_t)na * sizeof *C);
    double *xn2 = malloc((size_t)na * sizeof *xn2);
    double *cd = malloc((size_t)L * na * sizeof *cd), *part = malloc((size_t)L * (nchunks + 1) * sizeof *part);
    unsigned char *taken = calloc((size_t)na, 1);
    int64_t *cand = malloc((size_t)L * sizeof *cand), *gc = malloc((size_t)L * sizeof *gc);
    float *cm = malloc((size_t)L * d * sizeof *cm), *scr = malloc((size_t)nt * tile * sizeof *scr);
    /* over ranks: the exchanged candidate rows (L, d), each rank's totals or first free rows (R), potentials */
    double *xb = malloc(((size_t)L * d + 2 * (size_t)R + GREEDY_MAX_L) * sizeof *xb);
    double cn2[GREEDY_MAX_L];
    dots_fn dots = dots_pick();
    int rc = 0;
    if (L > GREEDY_MAX_L || !D || !C || !xn2 || !cd || !part || !taken || !cand || !gc || !cm || !scr || !xb)
        rc = lvd_fail("kmeans_train: out of memory for greedy k-means++ (%" PRId64 " rows, %" PRId32
                      " candidates)", n, L);
    if ((rc = part_agree(pi, rc)) != 0)
        goto done;
    double *tot = xb + (size_t)L * d, *pots = tot + R;
    rng r = rng_make(seed, STREAM_INIT);
    /* pick: the local index of the centre just chosen when this rank holds it, else -1; pv: its vector */
    int64_t gpick = (int64_t)(rng_unit(&r) * (double)n_all), pick;
    if (gpick > n_all - 1)
        gpick = n_all - 1;
    if (part_rows(pi, x, rows, d, &gpick, 1, xb, cm) != 0) {
        rc = -1;
        goto done;
    }
    pick = part_mine(pi, gpick, &pick) ? gpick - pi->t0 : -1;
    const float *pv = cm;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *xi = train_row(x, rows, i, d);
        D[i] = dist2_f64(xi, pv, d);
        xn2[i] = norm2(xi, d);
    }
    const double eu = 2.0 * (d + 2) * 0x1.0p-24 * (1.0 + 0x1.0p-10), ev = 8.0 * (d + 2) * 0x1.0p-53;
    for (int32_t ci = 0;; ci++) {
        if (pick >= 0)
            taken[pick] = 1;
        memcpy(c + (size_t)ci * d, pv, (size_t)d * sizeof(float));
        if (ci + 1 == k)
            break;
        /* C over the whole set: this rank's running sum from the total of the ranks before it */
        double acc = 0;
        for (int64_t i = 0; i < n; i++)
            C[i] = acc += D[i];
        double mine = n > 0 ? C[n - 1] : 0.0;
        if (part_allgather(pi, &mine, 1, tot) != 0) {
            rc = -1;
            goto done;
        }
        double pot = 0, base = 0;
        for (int32_t q = 0; q < R; q++) {
            if (q == pi->rank)
                base = pot;
            pot = R == 1 ? tot[0] : pot + tot[q];
        }
        if (!(pot > 0)) { /* every row sits on a centre: the first row not taken, no draw */
            int64_t f = 0;
            while (f < n && taken[f])
                f++;
            double first = f < n ? (double)(pi->t0 + f) : -1.0;
            if (part_allgather(pi, &first, 1, tot) != 0) {
                rc = -1;
                goto done;
            }
            gpick = -1;
            for (int32_t q = 0; q < R && gpick < 0; q++)
                gpick = tot[q] >= 0 ? (int64_t)tot[q] : -1;
            if (part_rows(pi, x, rows, d, &gpick, 1, xb, cm) != 0) {
                rc = -1;
                goto done;
            }
            pick = part_mine(pi, gpick, &pick) ? gpick - pi->t0 : -1;
            pv = cm;
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t i = 0; i < n; i++) {
                double v = dist2_f64(train_row(x, rows, i, d), pv, d);
                D[i] = v < D[i] ? v : D[i];
            }
            continue;
        }
        /* each draw's row: in the first rank whose running total passes u (the last rank with rows, at its
         * last row, when none does: the one-process rule "n - 1 when none") */
        for (int32_t j = 0; j < L; j++) {
            double u = rng_unit(&r) * pot, cum = 0;
            int32_t owner = -1, last = 0;
            for (int32_t q = 0; q < R; q++) {
                cum = R == 1 ? tot[0] : cum + tot[q];
                if (pi->n_of[q] > 0)
                    last = q;
                if (owner < 0 && pi->n_of[q] > 0 && cum > u)
                    owner = q;
            }
            if (owner < 0)
                owner = last;
            cand[j] = -1;
            if (owner == pi->rank) {
                int64_t lo = 0, hi = n - 1; /* first i with base + C[i] > u, n - 1 when none */
                while (lo < hi) {
                    int64_t mid = lo + (hi - lo) / 2;
                    if (base + C[mid] > u)
                        hi = mid;
                    else
                        lo = mid + 1;
                }
                cand[j] = lo;
            }
            gc[j] = cand[j] >= 0 ? pi->t0 + cand[j] : 0;
        }
        if (pi->cm) { /* every rank learns the candidates' training indices, then their rows */
            for (int32_t j = 0; j < L; j++)
                pots[j] = cand[j] >= 0 ? (double)gc[j] : 0.0;
            if (part_sum(pi, pots, L) != 0) {
                rc = -1;
                goto done;
            }
            for (int32_t j = 0; j < L; j++)
                gc[j] = (int64_t)pots[j];
        }
        if (part_rows(pi, x, rows, d, gc, L, xb, cm) != 0) {
            rc = -1;
            goto done;
        }
        for (int32_t j = 0; j < L; j++)
            cn2[j] = norm2(cm + (size_t)j * d, d);
        #pragma omp parallel num_threads(nt)
        {
            blas_single_threaded();
            float *g = scr + (size_t)omp_get_thread_num() * tile, *ip = g + (size_t)GREEDY_TILE * d;
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < nchunks; t++) {
                int64_t r0 = t * KPP_CHUNK, r1 = r0 + KPP_CHUNK < n ? r0 + KPP_CHUNK : n;
                double sum[GREEDY_MAX_L];
                for (int32_t j = 0; j < L; j++)
                    sum[j] = 0;
                for (int64_t b = r0; b < r1; b += GREEDY_TILE) {
                    int64_t m = r1 - b < GREEDY_TILE ? r1 - b : GREEDY_TILE;
                    const float *xt = x + b * d;
                    if (rows) {
                        for (int64_t i = 0; i < m; i++)
                            memcpy(g + i * d, x + rows[b + i] * d, (size_t)d * sizeof(float));
                        xt = g;
                    }
                    dots(xt, m, d, cm, L, ip);
                    for (int64_t i = 0; i < m; i++) {
                        int64_t row = b + i;
                        double Di = D[row], xx = xn2[row], xn = sqrt(xx);
                        for (int32_t j = 0; j < L; j++) {
                            double v = xx + cn2[j] - 2.0 * (double)ip[i * L + j];
                            double e = eu * xn * sqrt(cn2[j]) + ev * (xx + cn2[j]);
                            if (!(v - e > Di)) { /* near: the exact distance decides */
                                double w = dist2_f64(xt + i * d, cm + (size_t)j * d, d);
                                v = w < Di ? w : Di;
                            } else {
                                v = Di;
                            }
                            cd[(size_t)j * n + row] = v;
                            sum[j] += v;
                        }
                    }
                }
                for (int32_t j = 0; j < L; j++)
                    part[(size_t)j * nchunks + t] = sum[j];
            }
        }
        for (int32_t j = 0; j < L; j++) {
            double t = 0;
            for (int64_t q = 0; q < nchunks; q++)
                t += part[(size_t)j * nchunks + q];
            pots[j] = t;
        }
        if (part_sum(pi, pots, L) != 0) {
            rc = -1;
            goto done;
        }
        int32_t best = 0;
        double best_pot = INFINITY;
        for (int32_t j = 0; j < L; j++)
            if (pots[j] < best_pot) {
                best_pot = pots[j];
                best = j;
            }
        pick = cand[best];
        pv = cm + (size_t)best * d;
        memcpy(D, cd + (size_t)best * n, (size_t)n * sizeof *D);
    }
done:
    free(D);
    free(C);
    free(xn2);
    free(cd);
    free(part);
    free(taken);
    free(cand);
    free(gc);
    free(xb);
    free(cm);
    free(scr);
    return rc;
}

/* Sorts the training rows by label (counting sort, stable): count (k) rows per label, start (k + 1) where each
 * label begins in order (n_train). */
static void group_by_label(const int32_t *labels, int64_t n, int32_t k, int64_t *count, int64_t *start,
                           int64_t *order)
{
    memset(count, 0, (size_t)k * sizeof *count);
    for (int64_t i = 0; i < n; i++)
        count[labels[i]]++;
    start[0] = 0;
    for (int32_t c = 0; c < k; c++)
        start[c + 1] = start[c] + count[c];
    for (int32_t c = 0; c < k; c++)
        count[c] = start[c]; /* fill positions */
    for (int64_t i = 0; i < n; i++)
        order[count[labels[i]]++] = i;
    for (int32_t c = 0; c < k; c++)
        count[c] = start[c + 1] - start[c];
}

/* Centroid update: each non-empty cluster's centroid (of c (k, d)) becomes the float64 mean of its rows, summed
 * in row order, then normalised when spherical. Clusters in parallel; acc (nt, d) float64 scratch. */
static void update_centroids(const float *x, const int64_t *rows, int32_t d, int32_t k, int spherical,
                             const int64_t *order, const int64_t *start, double *acc, int32_t nt, float *c)
{
#pragma omp parallel num_threads(nt)
    {
        double *a = acc + (size_t)omp_get_thread_num() * d;
#pragma omp for schedule(dynamic, 16)
        for (int32_t ci = 0; ci < k; ci++) {
            int64_t b = start[ci], e = start[ci + 1];
            if (b == e)
                continue;
            memset(a, 0, (size_t)d * sizeof *a);
            for (int64_t p = b; p < e; p++) {
                const float *xi = train_row(x, rows, order[p], d);
                for (int32_t j = 0; j < d; j++)
                    a[j] += xi[j];
            }
            double inv = 1.0 / (double)(e - b), s = 0;
            for (int32_t j = 0; j < d; j++) {
                a[j] *= inv;
                s += a[j] * a[j];
            }
            double f = spherical && s > 0 ? 1.0 / sqrt(s) : 1.0;
            float *cc = c + (size_t)ci * d;
            for (int32_t j = 0; j < d; j++)
                cc[j] = (float)(a[j] * f);
        }
    }
}

/* Empty-cluster repair (kmeans.h): each empty cluster, in index order, takes the row that its largest
 * cluster's centroids serve worst, the donor counting one row less. scores (n_train) are this iteration's
 * (similarity, or squared distance); a row taken is marked NaN in them, and the donor's other rows are then
 * also scored against the new centroid, so that further empty clusters filled from the same donor take the row
 * farthest from all of its centroids so far (farthest-first) rather than crowd into one region. count (k) is
 * lowered for the donors. Returns the number of clusters repaired. */
static int64_t repair_empty(const float *x, const int64_t *rows, int32_t d, int32_t k, int spherical,
                            const int64_t *order, const int64_t *start, int64_t *count, float *scores, float *c)
{
    int64_t repaired = 0;
    for (int32_t ci = 0; ci < k; ci++) {
        if (count[ci] > 0)
            continue;
        int32_t donor = 0;
        for (int32_t j = 1; j < k; j++)
            if (count[j] > count[donor])
                donor = j;
        /* count[donor] >= 2 (n_train >= k and a cluster is empty), so it has a row not taken yet */
        int64_t pick = -1;
        float worst = 0;
        for (int64_t p = start[donor]; p < start[donor + 1]; p++) {
            int64_t i = order[p];
            if (isnan(scores[i]))
                continue; /* taken */
            float bad = spherical ? -scores[i] : scores[i];
            if (pick < 0 || bad > worst) {
                worst = bad;
                pick = i;
            }
        }
        scores[pick] = NAN;
        count[donor]--;
        count[ci] = 1;
        float *cc = c + (size_t)ci * d;
        set_centroid(cc, train_row(x, rows, pick, d), d, spherical);
        for (int64_t p = start[donor]; p < start[donor + 1]; p++) {
            int64_t i = order[p];
            if (isnan(scores[i]))
                continue;
            const float *xi = train_row(x, rows, i, d);
            float v = spherical ? (float)dot_f64(xi, cc, d) : (float)dist2_f64(xi, cc, d);
            if (spherical ? v > scores[i] : v < scores[i])
                scores[i] = v;
        }
        repaired++;
    }
    return repaired;
}

/* ---------------------------------------------------------------------------------------------------- */
/* training over ranks (kmeans.h, "Processes") */

/* The centroid update over ranks: sums (k, d + 1) float64 = each cluster's sum of this rank's rows (row
 * order) and its row count, all-reduced; then each cluster with rows anywhere gets the float64 mean, normalised
 * when spherical, with the operations of update_centroids. gcount (k) receives the global counts. */
static int update_centroids_part(const part_info *pi, const float *x, const int64_t *rows, int32_t d, int32_t k,
                                 int spherical, const int64_t *order, const int64_t *start, double *sums,
                                 int64_t *gcount, int32_t nt, float *c)
{
    const size_t w = (size_t)d + 1;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
    for (int32_t ci = 0; ci < k; ci++) {
        double *a = sums + (size_t)ci * w;
        memset(a, 0, w * sizeof *a);
        for (int64_t p = start[ci]; p < start[ci + 1]; p++) {
            const float *xi = train_row(x, rows, order[p], d);
            for (int32_t j = 0; j < d; j++)
                a[j] += xi[j];
        }
        a[d] = (double)(start[ci + 1] - start[ci]);
    }
    if (part_sum(pi, sums, (int64_t)k * (int64_t)w) != 0)
        return -1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int32_t ci = 0; ci < k; ci++) {
        double *a = sums + (size_t)ci * w;
        gcount[ci] = (int64_t)a[d];
        if (gcount[ci] == 0)
            continue; /* empty everywhere: repaired next, or kept (KMEANS_EMPTY_KEEP) */
        double inv = 1.0 / a[d], s = 0;
        for (int32_t j = 0; j < d; j++) {
            a[j] *= inv;
            s += a[j] * a[j];
        }
        double f = spherical && s > 0 ? 1.0 / sqrt(s) : 1.0;
        float *cc = c + (size_t)ci * d;
        for (int32_t j = 0; j < d; j++)
            cc[j] = (float)(a[j] * f);
    }
    return 0;
}

/* repair_empty over ranks: the donor is the cluster with the most rows over all ranks (gcount, lowered as it
 * gives rows away); each rank offers the worst row of the donor that it holds, the worst offer wins (ties to
 * the earlier training row of the whole set, as one process's row order), and its rank marks it taken. The
 * row is sent to every rank, and each scores its own donor rows against it. buf: 2 * ranks + d float64;
 * rowf: d floats. Returns the clusters repaired, or -1. */
static int64_t repair_empty_part(const part_info *pi, const float *x, const int64_t *rows, int32_t d, int32_t k,
                                 int spherical, const int64_t *order, const int64_t *start, int64_t *gcount,
                                 float *scores, double *buf, float *rowf, float *c)
{
    int64_t repaired = 0;
    double *offers = buf, *rowbuf = buf + 2 * (size_t)pi->ranks;
    for (int32_t ci = 0; ci < k; ci++) {
        if (gcount[ci] > 0)
            continue;
        int32_t donor = 0;
        for (int32_t j = 1; j < k; j++)
            if (gcount[j] > gcount[donor])
                donor = j;
        int64_t pick = -1;
        float worst = 0;
        for (int64_t p = start[donor]; p < start[donor + 1]; p++) {
            int64_t i = order[p];
            if (isnan(scores[i]))
                continue;
            float bad = spherical ? -scores[i] : scores[i];
            if (pick < 0 || bad > worst) {
                worst = bad;
                pick = i;
            }
        }
        double mine[2] = {pick >= 0 ? (double)worst : 0.0, pick >= 0 ? (double)(pi->t0 + pick) : -1.0};
        if (part_allgather(pi, mine, 2, offers) != 0)
            return -1;
        int64_t g = -1;
        double gw = 0;
        for (int32_t q = 0; q < pi->ranks; q++) {
            double bq = offers[2 * q], iq = offers[2 * q + 1];
            if (iq < 0)
                continue;
            if (g < 0 || bq > gw || (bq == gw && (int64_t)iq < g)) {
                gw = bq;
                g = (int64_t)iq;
            }
        }
        /* gcount[donor] >= 2 over the ranks (n_train >= k and a cluster is empty): some rank offered a row */
        int64_t li;
        if (part_mine(pi, g, &li))
            scores[li] = NAN;
        if (part_rows(pi, x, rows, d, &g, 1, rowbuf, rowf) != 0)
            return -1;
        gcount[donor]--;
        gcount[ci] = 1;
        float *cc = c + (size_t)ci * d;
        set_centroid(cc, rowf, d, spherical);
        for (int64_t p = start[donor]; p < start[donor + 1]; p++) {
            int64_t i = order[p];
            if (isnan(scores[i]))
                continue;
            const float *xi = train_row(x, rows, i, d);
            float v = spherical ? (float)dot_f64(xi, cc, d) : (float)dist2_f64(xi, cc, d);
            if (spherical ? v > scores[i] : v < scores[i])
                scores[i] = v;
        }
        repaired++;
    }
    return repaired;
}

/* kmeans_train over the ranks of o->comm; x (n, d) is this rank's part. Options are checked by the caller. */
static int train_parts(const float *x, int64_t n, int32_t d, const kmeans_opts *o, float *centroids,
                       kmeans_stats *st)
{
    const kmeans_comm *cm = o->comm;
    const int32_t k = o->k, R = cm->ranks;
    const int spherical = o->spherical != 0;
    const int32_t nt = resolve_threads(o->threads);
    part_info pi = {cm, cm->rank, R, 0, 0, NULL};
    /* per rank: the rows (R), then the training rows (R); the exchange scratch of the repair */
    double *ranks_buf = malloc((4 * (size_t)R + (size_t)d) * sizeof *ranks_buf);
    int64_t *n_of = malloc(2 * (size_t)R * sizeof *n_of);
    int rc = ranks_buf && n_of ? 0 : lvd_fail("kmeans_train: out of memory for %" PRId32 " ranks", R);
    char *mem = NULL;
    if ((rc = part_agree(&pi, rc)) != 0)
        goto out;
    double mine = (double)n;
    if (part_allgather(&pi, &mine, 1, ranks_buf) != 0) {
        rc = -1;
        goto out;
    }
    int64_t n_all = 0, lo = 0;
    for (int32_t q = 0; q < R; q++) {
        if (q == pi.rank)
            lo = n_all;
        n_all += (int64_t)ranks_buf[q];
    }
    if (n_all < k) {
        rc = lvd_fail("kmeans_train: %" PRId64 " training rows over %" PRId32 " ranks for %" PRId32
                      " centroids: k-means needs n >= k", n_all, R, k);
        goto out;
    }
    const int64_t mppc = o->max_points_per_centroid;
    const int64_t nt_all = mppc > 0 && mppc <= (n_all - 1) / k ? (int64_t)k * mppc : n_all;
    const int sampled = nt_all < n_all;
    const int rnd = o->init == KMEANS_INIT_RANDOM;
    int64_t nt_rows = n, cap = sampled ? (n < nt_all ? n : nt_all) : 0;
    const int64_t na = (n > 0 ? n : 1), nl = sampled ? (cap > 0 ? cap : 1) : na; /* buffer rows */

    /* one allocation: the rows of the sample (cap), labels, prev, scores, order (nl, or nt_all with random
     * init: its shuffle), start (k + 1), gcount (k), count (k), chalf (k), sums (k, d + 1), the random init's
     * exchange (k, d) float64 and rows (k, d), tiles */
    size_t sz[12] = {
        blk((size_t)cap * sizeof(int64_t)),
        blk((size_t)nl * sizeof(int32_t)),
        blk((size_t)nl * sizeof(int32_t)),
        blk((size_t)nl * sizeof(float)),
        blk((size_t)(rnd && nt_all > nl ? nt_all : nl) * sizeof(int64_t)),
        blk((size_t)(k + 1) * sizeof(int64_t)),
        blk((size_t)k * sizeof(int64_t)),
        blk((size_t)k * sizeof(int64_t)),
        blk((size_t)k * sizeof(float)),
        blk((size_t)k * ((size_t)d + 1) * sizeof(double)),
        blk((size_t)k * d * sizeof(float)),
        blk((size_t)nt * tile_floats(d) * sizeof(float)),
    };
    size_t total = 0;
    for (int i = 0; i < 12; i++)
        total += sz[i];
    mem = malloc(total);
    rc = mem ? 0
             : lvd_fail("kmeans_train: out of memory (%zu bytes for %" PRId64 " training rows, k %" PRId32 ")",
                        total, nl, k);
    if ((rc = part_agree(&pi, rc)) != 0)
        goto out;
    char *p = mem;
    int64_t *rows = sampled ? (int64_t *)p : NULL;
    p += sz[0];
    int32_t *labels = (int32_t *)p;
    p += sz[1];
    int32_t *prev = (int32_t *)p;
    p += sz[2];
    float *scores = (float *)p;
    p += sz[3];
    int64_t *order = (int64_t *)p;
    p += sz[4];
    int64_t *start = (int64_t *)p;
    p += sz[5];
    int64_t *gcount = (int64_t *)p;
    p += sz[6];
    int64_t *count = (int64_t *)p;
    p += sz[7];
    float *chalf = (float *)p;
    p += sz[8];
    double *sums = (double *)p; /* also the random init's exchange: k (d + 1) >= k d */
    p += sz[9];
    float *rowf = (float *)p;
    p += sz[10];
    float *scratch = (float *)p;

    int64_t t0 = lo;
    if (sampled)
        draw_sample_part(rows, nt_all, n_all, o->seed, lo, n, &t0, &nt_rows);
    double mine_t = (double)nt_rows;
    if (part_allgather(&pi, &mine_t, 1, ranks_buf + R) != 0) {
        rc = -1;
        goto out;
    }
    for (int32_t q = 0; q < R; q++)
        n_of[q] = (int64_t)ranks_buf[R + q];
    pi.t0 = sampled ? t0 : lo;
    pi.n_global = nt_all;
    pi.n_of = n_of;

    int64_t bad = INT64_MAX;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : bad)
    for (int64_t i = 0; i < nt_rows; i++)
        if (i < bad && first_nonfinite(train_row(x, rows, i, d), d) >= 0)
            bad = i;
    if (bad != INT64_MAX) {
        int64_t r = rows ? rows[bad] : bad;
        int64_t at = first_nonfinite(x + r * d, d);
        rc = lvd_fail("kmeans_train: row %" PRId64 " of x (row %" PRId64 " of the whole set, on rank %" PRId32
                      ") has a non-finite value (%g) in column %" PRId64,
                      r, lo + r, pi.rank, (double)x[r * d + at], at);
    }
    if ((rc = part_agree(&pi, rc)) != 0)
        goto out;

    double w0 = omp_get_wtime();
    if (rnd)
        rc = init_random_part(&pi, x, rows, d, k, spherical, o->seed, order, sums, rowf, centroids);
    else if (o->init == KMEANS_INIT_GREEDY)
        rc = init_greedy(x, rows, nt_rows, d, k, o->seed, nt, &pi, centroids);
    if (rc != 0)
        goto out;

    double w1 = omp_get_wtime();
    assign_src s = {x, rows, nt_rows, d, centroids, spherical ? NULL : chalf, 0, k, 0};
    int64_t repaired = 0, repaired_last = 0;
    int32_t it = 0;
    for (; it < o->iterations; it++) {
        s.cmax = centroid_norms(spherical ? NULL : chalf, centroids, k, d);
        int64_t unused;
        if (nt_rows > 0)
            assign_all(&s, nt, scratch, labels, scores, &unused);
        double red[2] = {0, 0}; /* the objective's sum, and whether a label changed */
        for (int64_t i = 0; i < nt_rows; i++)
            red[0] += scores[i];
        red[1] = it > 0 && memcmp(labels, prev, (size_t)nt_rows * sizeof *labels) != 0 ? 1.0 : 0.0;
        if (part_sum(&pi, red, 2) != 0) {
            rc = -1;
            goto out;
        }
        if (st && st->objective)
            st->objective[it] = red[0] / (double)nt_all;
        if (!o->fixed_iterations && it > 0 && repaired_last == 0 && red[1] == 0) {
            it++;
            break;
        }
        group_by_label(labels, nt_rows, k, count, start, order);
        if (update_centroids_part(&pi, x, rows, d, k, spherical, order, start, sums, gcount, nt, centroids) != 0) {
            rc = -1;
            goto out;
        }
        repaired_last = 0;
        if (o->empty == KMEANS_EMPTY_REPAIR &&
            (repaired_last = repair_empty_part(&pi, x, rows, d, k, spherical, order, start, gcount, scores,
                                               ranks_buf, rowf, centroids)) < 0) {
            rc = -1;
            goto out;
        }
        repaired += repaired_last;
        int32_t *t = prev;
        prev = labels;
        labels = t;
    }
    if (st) {
        st->init_s = w1 - w0;
        st->iterations_s = omp_get_wtime() - w1;
        st->iterations = it;
        st->n_train = nt_all;
        st->repaired = repaired;
    }
out:
    free(mem);
    free(ranks_buf);
    free(n_of);
    return rc;
}

void kmeans_opts_default(kmeans_opts *o)
{
    *o = (kmeans_opts){.k = 0,
                       .iterations = 20,
                       .seed = 1234,
                       .spherical = 1,
                       .init = KMEANS_INIT_RANDOM,
                       .max_points_per_centroid = 256,
                       .threads = 0,
                       .fixed_iterations = 0,
                       .empty = KMEANS_EMPTY_REPAIR,
                       .comm = NULL};
}

int kmeans_train(const float *x, int64_t n, int32_t d, const kmeans_opts *o, float *centroids, kmeans_stats *st)
{
    if (!o)
        return lvd_fail("kmeans_train: no options");
    const int32_t k = o->k;
    if (k < 1)
        return lvd_fail("kmeans_train: k must be at least 1 (got %" PRId32 ")", k);
    if (d < 1)
        return lvd_fail("kmeans_train: d must be at least 1 (got %" PRId32 ")", d);
    const kmeans_comm *cm = o->comm;
    if (cm && (cm->ranks < 1 || cm->rank < 0 || cm->rank >= cm->ranks || !cm->sum_f64))
        return lvd_fail("kmeans_train: rank %" PRId32 " of %" PRId32 " ranks, or no all-reduce", cm->rank, cm->ranks);
    if (cm && o->init == KMEANS_INIT_PLUSPLUS)
        return lvd_fail("kmeans_train: k-means++ (its SGEMV distances) does not run over processes: use greedy "
                        "k-means++ or random init");
    if (n < 0 || (!cm && n < k))
        return lvd_fail("kmeans_train: %" PRId64 " training rows for %" PRId32 " centroids: k-means needs n >= k",
                        n, k);
    if (o->iterations < 0 || o->max_points_per_centroid < 0 || o->threads < 0)
        return lvd_fail("kmeans_train: iterations, max_points_per_centroid and threads must be >= 0 (got %" PRId32
                        ", %" PRId64 ", %" PRId32 ")",
                        o->iterations, o->max_points_per_centroid, o->threads);
    if (o->init != KMEANS_INIT_RANDOM && o->init != KMEANS_INIT_PLUSPLUS && o->init != KMEANS_INIT_GIVEN &&
        o->init != KMEANS_INIT_GREEDY)
        return lvd_fail("kmeans_train: unknown init %d", (int)o->init);
    if (o->init == KMEANS_INIT_GREEDY && o->spherical)
        return lvd_fail("kmeans_train: greedy k-means++ is for squared L2 (spherical 0)");
    if (o->empty != KMEANS_EMPTY_REPAIR && o->empty != KMEANS_EMPTY_KEEP)
        return lvd_fail("kmeans_train: unknown empty-cluster rule %d", (int)o->empty);
    if ((!x && n > 0) || !centroids)
        return lvd_fail("kmeans_train: x and centroids must be given");
    if (o->init == KMEANS_INIT_GIVEN && check_centroids("kmeans_train: initial centroids", centroids, k, d) != 0)
        return -1;
    if (cm)
        return train_parts(x, n, d, o, centroids, st);
    const int spherical = o->spherical != 0;
    int64_t mppc = o->max_points_per_centroid;
    int64_t nt_rows = mppc > 0 && mppc <= (n - 1) / k ? (int64_t)k * mppc : n; /* k * mppc < n: sample */
    int sampled = nt_rows < n;
    int32_t nt = resolve_threads(o->threads);

    /* one allocation: see train_mem */
    int64_t nchunks = (nt_rows + KPP_CHUNK - 1) / KPP_CHUNK;
    int pp = o->init == KMEANS_INIT_PLUSPLUS;
    size_t sz[12] = {
        sampled ? blk((size_t)nt_rows * sizeof(int64_t)) : 0, blk((size_t)nt_rows * sizeof(int32_t)),
        blk((size_t)nt_rows * sizeof(int32_t)),               blk((size_t)nt_rows * sizeof(float)),
        blk((size_t)nt_rows * sizeof(int64_t)),               blk((size_t)(k + 1) * sizeof(int64_t)),
        blk((size_t)k * sizeof(int64_t)),                     blk((size_t)k * sizeof(float)),
        blk((size_t)nt * d * sizeof(double)),                 blk((size_t)(nchunks + 1) * sizeof(double)),
        blk((size_t)nt * tile_floats(d) * sizeof(float)), pp ? blk((size_t)nt_rows * sizeof(float)) : 0,
    };
    size_t total = 0;
    for (int i = 0; i < 12; i++)
        total += sz[i];
    char *mem = malloc(total);
    if (!mem)
        return lvd_fail("kmeans_train: out of memory (%zu bytes for %" PRId64 " training rows, k %" PRId32 ")",
                        total, nt_rows, k);
    char *p = mem;
    train_mem m;
    m.rows = sampled ? (int64_t *)p : NULL;
    p += sz[0];
    m.labels = (int32_t *)p;
    p += sz[1];
    m.prev = (int32_t *)p;
    p += sz[2];
    m.scores = (float *)p;
    p += sz[3];
    m.order = (int64_t *)p;
    p += sz[4];
    m.start = (int64_t *)p;
    p += sz[5];
    m.count = (int64_t *)p;
    p += sz[6];
    m.chalf = (float *)p;
    p += sz[7];
    m.acc = (double *)p;
    p += sz[8];
    m.chunk = (double *)p;
    p += sz[9];
    m.scratch = (float *)p;
    p += sz[10];
    m.xn2 = pp ? (float *)p : NULL;

    int rc = -1;
    if (sampled)
        draw_sample(m.rows, nt_rows, n, o->seed);

    /* non-finite training values, before the init reads them */
    int64_t bad = INT64_MAX;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : bad)
    for (int64_t i = 0; i < nt_rows; i++)
        if (i < bad && first_nonfinite(train_row(x, m.rows, i, d), d) >= 0)
            bad = i;
    if (bad != INT64_MAX) {
        int64_t r = m.rows ? m.rows[bad] : bad;
        int64_t at = first_nonfinite(x + r * d, d);
        lvd_fail("kmeans_train: row %" PRId64 " of x has a non-finite value (%g) in column %" PRId64, r,
                 (double)x[r * d + at], at);
        goto done;
    }

    double t0 = omp_get_wtime();
    if (o->init == KMEANS_INIT_RANDOM)
        init_random(x, m.rows, nt_rows, d, k, spherical, o->seed, m.order, centroids);
    else if (o->init == KMEANS_INIT_PLUSPLUS)
        init_plusplus(x, m.rows, nt_rows, d, k, spherical, o->seed, m.xn2, m.scores, m.chunk, m.labels, nt,
                      m.scratch, centroids);
    else if (o->init == KMEANS_INIT_GREEDY) {
        part_info one = {NULL, 0, 1, 0, nt_rows, &nt_rows}; /* one process */
        if (init_greedy(x, m.rows, nt_rows, d, k, o->seed, nt, &one, centroids) != 0)
            goto done;
    }

    double t1 = omp_get_wtime();
    assign_src s = {x, m.rows, nt_rows, d, centroids, spherical ? NULL : m.chalf, 0, k, 0};
    int64_t repaired = 0, repaired_last = 0;
    int32_t it = 0;
    for (; it < o->iterations; it++) {
        s.cmax = centroid_norms(spherical ? NULL : m.chalf, centroids, k, d);
        int64_t unused;
        assign_all(&s, nt, m.scratch, m.labels, m.scores, &unused);
        double obj = 0;
        for (int64_t i = 0; i < nt_rows; i++)
            obj += m.scores[i];
        if (st && st->objective)
            st->objective[it] = obj / (double)nt_rows;
        if (!o->fixed_iterations && it > 0 && repaired_last == 0 &&
            memcmp(m.labels, m.prev, (size_t)nt_rows * sizeof *m.labels) == 0) {
            it++; /* fixed point: the update would give the same centroids */
            break;
        }
        group_by_label(m.labels, nt_rows, k, m.count, m.start, m.order);
        update_centroids(x, m.rows, d, k, spherical, m.order, m.start, m.acc, nt, centroids);
        repaired_last = o->empty == KMEANS_EMPTY_KEEP ? 0 /* empty clusters kept their centroid */
                                                      : repair_empty(x, m.rows, d, k, spherical, m.order, m.start,
                                                                     m.count, m.scores, centroids);
        repaired += repaired_last;
        int32_t *t = m.prev;
        m.prev = m.labels;
        m.labels = t;
    }
    if (st) {
        st->init_s = t1 - t0;
        st->iterations_s = omp_get_wtime() - t1;
        st->iterations = it;
        st->n_train = nt_rows;
        st->repaired = repaired;
    }
    rc = 0;
done:
    free(mem);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------- */
/* files */

int kmeans_save(const char *path, const float *centroids, int32_t k, int32_t d)
{
    if (k < 1 || d < 1 || !centroids)
        return lvd_fail("kmeans_save %s: need k >= 1, d >= 1 and centroids (got k %" PRId32 ", d %" PRId32 ")",
                        path, k, d);
    int64_t shape[2] = {k, d};
    return npy_write(path, centroids, 2, shape, NPY_F32);
}

int kmeans_load(const char *path, int32_t d_expect, float **centroids, int32_t *k, int32_t *d)
{
    *centroids = NULL;
    *k = 0;
    *d = 0;
    npy_array a;
    if (npy_read(path, &a) != 0)
        return -1;
    if (a.ndim != 2 || a.shape[0] < 1 || a.shape[1] < 1 || a.shape[0] > INT32_MAX || a.shape[1] > INT32_MAX) {
        lvd_fail("%s: centroids must be a non-empty 2-D array (k, d), got %" PRId32 " dimensions", path, a.ndim);
        npy_free(&a);
        return -1;
    }
    if (d_expect > 0 && a.shape[1] != d_expect) {
        lvd_fail("%s: centroids of dimension %" PRId64 ", expected %" PRId32, path, a.shape[1], d_expect);
        npy_free(&a);
        return -1;
    }
    int64_t at = first_nonfinite(a.data, a.shape[0] * a.shape[1]);
    if (at >= 0) {
        lvd_fail("%s: centroid %" PRId64 " has a non-finite value in column %" PRId64, path, at / a.shape[1],
                 at % a.shape[1]);
        npy_free(&a);
        return -1;
    }
    *centroids = a.data;
    *k = (int32_t)a.shape[0];
    *d = (int32_t)a.shape[1];
    return 0;
}
