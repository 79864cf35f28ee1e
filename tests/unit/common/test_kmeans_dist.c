/* test_kmeans_dist.c — kmeans_train over processes (common/kmeans.h, "Processes") under a real mpirun with 2
 * ranks (common/dist.c's all-reduce): each rank trains on its part of a data set X, and each also trains one
 * process on the whole of X. The oracle is that one-process run (itself checked against NumPy and FAISS
 * semantics by test_kmeans and the integration tests): the ranks' centroids equal its to 1e-6 (only float64
 * sums of the same terms in another order differ), the assignment of X to them is identical row for row, the
 * iterations, repairs and training-row counts are equal and the objectives equal to 1e-9 relative; both ranks
 * hold the same centroid bits. Cases cover spherical random init, a sampled training set, greedy k-means++
 * (squared L2) with kept empty clusters and fixed iterations, the empty-cluster repair (centroids given far
 * from the data, so clusters start empty), uneven parts and an empty part. Then the errors: a non-finite value
 * in rank 1's rows fails both ranks (neither waits in a collective), too few rows over the ranks, and k-means++
 * refused. Last, kmeans_ranks.h's calls (rank 0 drives, rank 1 serves) against one process, and their errors.
 *
 * Run as `mpirun -np 2 test_kmeans_dist` (tests/meson.build); rank 0 prints TAP. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "err.h"
#include "kmeans.h"
#include "kmeans_ranks.h"

#define RANKS 2

static lvd_dist g_dist;
static int g_case = 0, g_failed = 0;

static void tap(int ok, const char *fmt, ...)
{
    if (g_dist.rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", ok ? "ok" : "not ok", ++g_case);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    g_failed += !ok;
}

static void diag(const char *fmt, ...)
{
    if (g_dist.rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* kmeans_comm's all-reduce over common/dist.c. */
static int sum_f64(double *buf, int64_t n, void *ctx)
{
    return dist_reduce_f64((lvd_dist *)ctx, buf, n, 0);
}

static uint64_t g_rng;

static double unit(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ z >> 27) * 0x94d049bb133111ebull;
    return (double)((z ^ z >> 31) >> 11) * 0x1.0p-53;
}

static double gauss(void)
{
    double u = unit(), v = unit();
    return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(6.283185307179586 * v);
}

/* X (n, d): blobs around `blobs` random centres (spread 1, noise sigma), unit rows when unit is 1. The same on
 * every rank (fixed seed). */
static float *make_data(int64_t n, int32_t d, int32_t blobs, double sigma, int unit_rows, uint64_t seed)
{
    g_rng = seed;
    float *ctr = malloc((size_t)blobs * d * sizeof *ctr), *x = malloc((size_t)n * d * sizeof *x);
    for (int64_t i = 0; i < (int64_t)blobs * d; i++)
        ctr[i] = (float)gauss();
    for (int64_t i = 0; i < n; i++) {
        int32_t b = (int32_t)(unit() * blobs);
        double s = 0;
        for (int32_t j = 0; j < d; j++) {
            x[i * d + j] = ctr[(size_t)b * d + j] + (float)(sigma * gauss());
            s += (double)x[i * d + j] * x[i * d + j];
        }
        if (unit_rows)
            for (int32_t j = 0; j < d; j++)
                x[i * d + j] = (float)(x[i * d + j] / sqrt(s));
    }
    free(ctr);
    return x;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

typedef struct tcase {
    const char *name;
    int64_t n, n0;   /* rows of X; rows of rank 0 (rank 1 has the rest) */
    int32_t d, k, blobs;
    int spherical, fixed, given_far; /* given_far: duplicated given centroids */
    kmeans_init init;
    kmeans_empty empty;
    int64_t mppc;
    int32_t iterations;
} tcase;

static void run_case(const tcase *c)
{
    const int32_t d = c->d, k = c->k;
    float *x = make_data(c->n, d, c->blobs, 0.25, c->spherical, 77 + (uint64_t)c->n);
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.iterations = c->iterations;
    o.spherical = c->spherical;
    o.init = c->init;
    o.empty = c->empty;
    o.fixed_iterations = c->fixed;
    o.max_points_per_centroid = c->mppc;
    o.threads = 1;
    o.seed = 4321;
    float *c1 = malloc((size_t)k * d * sizeof *c1), *cr = malloc((size_t)k * d * sizeof *cr);
    if (c->init == KMEANS_INIT_GIVEN) { /* rows of X, each twice: the second copy loses every tie, so is empty */
        for (int32_t i = 0; i < k; i++)
            memcpy(c1 + (size_t)i * d, x + (size_t)((i / 2) * 37) * d, (size_t)d * sizeof *c1);
        memcpy(cr, c1, (size_t)k * d * sizeof *cr);
    }
    double obj1[64], objr[64];
    kmeans_stats s1 = {.objective = obj1}, sr = {.objective = objr};
    int rc1 = kmeans_train(x, c->n, d, &o, c1, &s1);

    kmeans_comm cm = {g_dist.rank, g_dist.ranks, sum_f64, &g_dist};
    o.comm = &cm;
    int64_t lo = g_dist.rank == 0 ? 0 : c->n0, m = g_dist.rank == 0 ? c->n0 : c->n - c->n0;
    int rcr = kmeans_train(m > 0 ? x + lo * d : NULL, m, d, &o, cr, &sr);
    tap(rc1 == 0 && rcr == 0, "%s: one process and 2 ranks (%" PRId64 " + %" PRId64 " rows) train (%s)", c->name,
        c->n0, c->n - c->n0, rc1 || rcr ? lvd_errmsg() : "ok");
    if (rc1 != 0 || rcr != 0)
        goto out;

    double cerr = 0;
    for (int64_t i = 0; i < (int64_t)k * d; i++)
        cerr = fmax(cerr, fabs((double)c1[i] - cr[i]));
    int32_t *l1 = malloc((size_t)c->n * sizeof *l1), *lr = malloc((size_t)c->n * sizeof *lr);
    kmeans_assign(x, c->n, d, c1, k, c->spherical, 1, l1, NULL);
    kmeans_assign(x, c->n, d, cr, k, c->spherical, 1, lr, NULL);
    int64_t differ = 0;
    for (int64_t i = 0; i < c->n; i++)
        differ += l1[i] != lr[i];
    double oerr = 0;
    for (int32_t t = 0; t < s1.iterations && t < sr.iterations; t++)
        oerr = fmax(oerr, fabs(obj1[t] - objr[t]) / fmax(fabs(obj1[t]), 1e-30));
    diag("%s: iterations %d / %d, repaired %" PRId64 " / %" PRId64 ", n_train %" PRId64 " / %" PRId64
         ", max |dc| %.3g, objective rel %.3g, labels differing %" PRId64,
         c->name, s1.iterations, sr.iterations, s1.repaired, sr.repaired, s1.n_train, sr.n_train, cerr, oerr,
         differ);
    tap(cerr <= 1e-6 && differ == 0, "%s: centroids within 1e-6 of one process's (%.3g), the same label for every "
        "row of X", c->name, cerr);
    tap(s1.iterations == sr.iterations && s1.repaired == sr.repaired && s1.n_train == sr.n_train && oerr <= 1e-9,
        "%s: the same iterations, repairs and training rows, objectives to 1e-9", c->name);
    if (c->given_far)
        tap(s1.repaired > 0, "%s: clusters were repaired (%" PRId64 ")", c->name, s1.repaired);
    int same = dist_check(&g_dist, hash_bytes(cr, (size_t)k * d * sizeof *cr), "centroids") == 0;
    tap(same, "%s: both ranks hold the same centroid bits", c->name);
    free(l1);
    free(lr);
out:
    free(x);
    free(c1);
    free(cr);
}

/* A NaN in rank 1's part: both ranks fail (rank 0 is told another rank failed), at the same collective. */
static void run_errors(void)
{
    const int32_t d = 8, k = 6;
    const int64_t n = 400;
    float *x = make_data(n, d, 4, 0.2, 1, 9);
    x[(size_t)(300 * d + 3)] = NAN; /* row 300 of X: row 100 of rank 1's part */
    kmeans_comm cm = {g_dist.rank, g_dist.ranks, sum_f64, &g_dist};
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.threads = 1;
    o.comm = &cm;
    float c[6 * 8];
    int64_t lo = g_dist.rank == 0 ? 0 : 200;
    int rc = kmeans_train(x + lo * d, 200, d, &o, c, NULL);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", rc ? lvd_errmsg() : "");
    int64_t any_ok = 0;
    dist_max_i64(&g_dist, rc == 0, &any_ok);
    /* rank 1 names the row; rank 0 says another rank failed */
    uint64_t named = g_dist.rank == 1 ? strstr(msg, "row 100 of x (row 300 of the whole set, on rank 1)") != NULL
                                      : strstr(msg, "another rank") != NULL;
    uint64_t both[2];
    dist_allgather_u64(&g_dist, &named, 1, both);
    diag("rank %d: %s", g_dist.rank, msg);
    tap(rc != 0 && any_ok == 0 && both[0] && both[1],
        "a NaN in rank 1's rows fails both ranks; rank 1 names its row and the row of X, rank 0 another rank");

    x[(size_t)(300 * d + 3)] = 0.5f;
    o.k = 5;
    rc = kmeans_train(g_dist.rank == 0 ? x : NULL, g_dist.rank == 0 ? 3 : 0, d, &o, c, NULL);
    dist_max_i64(&g_dist, rc == 0, &any_ok);
    tap(rc != 0 && any_ok == 0 && strstr(lvd_errmsg(), "3 training rows over 2 ranks") != NULL,
        "3 rows over the ranks for 5 centroids fail on both ranks (%s)", lvd_errmsg());

    o.init = KMEANS_INIT_PLUSPLUS;
    rc = kmeans_train(x + lo * d, 200, d, &o, c, NULL);
    tap(rc != 0 && strstr(lvd_errmsg(), "k-means++") != NULL, "k-means++ over processes is refused (%s)",
        lvd_errmsg());
    free(x);
}

/* kmeans_ranks.h: rank 0 calls kmr_train and kmr_assign on the whole of X while rank 1 serves; the results equal
 * one process's (kmeans_train, kmeans_assign on rank 0); a NaN in the part sent to rank 1 fails the call on rank
 * 0 with rank 1's message, and rank 1 goes on serving the next call. 5 cases. */
static void run_ranks(void)
{
    const int32_t d = 16, k = 24;
    const int64_t n = 3001; /* odd: parts of 1500 and 1501 */
    float *x = make_data(n, d, 12, 0.25, 0, 5);
    if (g_dist.rank != 0) {
        int rc = kmr_serve(&g_dist);
        if (rc != 0)
            fprintf(stderr, "rank %d: kmr_serve: %s\n", g_dist.rank, lvd_errmsg());
        free(x);
        return;
    }
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.spherical = 0;
    o.init = KMEANS_INIT_GREEDY;
    o.iterations = 12;
    o.fixed_iterations = 1;
    o.empty = KMEANS_EMPTY_KEEP;
    o.max_points_per_centroid = 0;
    o.threads = 1;
    float *c1 = malloc((size_t)k * d * sizeof *c1), *cr = malloc((size_t)k * d * sizeof *cr);
    int32_t *l1 = malloc((size_t)n * sizeof *l1), *lr = malloc((size_t)n * sizeof *lr);
    float *s1 = malloc((size_t)n * sizeof *s1), *sr = malloc((size_t)n * sizeof *sr);
    kmeans_stats st1 = {0}, str = {0};
    int rc1 = kmeans_train(x, n, d, &o, c1, &st1);
    int rcr = kmr_train(&g_dist, x, n, d, &o, cr, &str);
    double cerr = 0;
    for (int64_t i = 0; rc1 == 0 && rcr == 0 && i < (int64_t)k * d; i++)
        cerr = fmax(cerr, fabs((double)c1[i] - cr[i]));
    tap(rc1 == 0 && rcr == 0 && cerr <= 1e-6 && st1.iterations == str.iterations && st1.n_train == str.n_train,
        "kmr_train (rank 0 drives, rank 1 serves): centroids within 1e-6 of one process's (%.3g) (%s)", cerr,
        rcr ? lvd_errmsg() : "ok");
    rc1 = kmeans_assign(x, n, d, c1, k, 0, 1, l1, s1);
    rcr = kmr_assign(&g_dist, x, n, d, c1, k, 0, 1, lr, sr);
    int same = rc1 == 0 && rcr == 0 && memcmp(l1, lr, (size_t)n * sizeof *l1) == 0 &&
               memcmp(s1, sr, (size_t)n * sizeof *s1) == 0;
    tap(same, "kmr_assign: the labels and score bits of one process for all %" PRId64 " rows", n);

    x[(size_t)2500 * d + 7] = NAN; /* row 2500 of X: row 1000 of rank 1's part */
    rcr = kmr_train(&g_dist, x, n, d, &o, cr, &str);
    tap(rcr != 0 && strstr(lvd_errmsg(), "rank 1: kmeans_train: row 1000 of x (row 2500 of the whole set") != NULL,
        "kmr_train with a NaN in rank 1's part fails on rank 0 with rank 1's message (%s)", lvd_errmsg());
    rcr = kmr_assign(&g_dist, x, n, d, c1, k, 0, 1, lr, NULL);
    tap(rcr != 0 && strstr(lvd_errmsg(), "rank 1: ") != NULL && strstr(lvd_errmsg(), "row 1000") != NULL,
        "kmr_assign with a NaN in rank 1's part fails on rank 0 with rank 1's message (%s)", lvd_errmsg());
    x[(size_t)2500 * d + 7] = 0.0f;
    rc1 = kmeans_assign(x, n, d, c1, k, 0, 1, l1, NULL);
    rcr = kmr_assign(&g_dist, x, n, d, c1, k, 0, 1, lr, NULL);
    tap(rc1 == 0 && rcr == 0 && memcmp(l1, lr, (size_t)n * sizeof *l1) == 0,
        "after those failures rank 1 still serves: the next call gives one process's labels");
    kmr_stop(&g_dist);
    free(c1);
    free(cr);
    free(l1);
    free(lr);
    free(s1);
    free(sr);
    free(x);
}

int main(int argc, char **argv)
{
    if (dist_init(&g_dist, &argc, &argv) != 0) {
        printf("1..1\nnot ok 1 - MPI: %s\n", lvd_errmsg());
        return 1;
    }
    if (g_dist.ranks != RANKS) {
        if (g_dist.rank == 0)
            printf("1..1\nnot ok 1 - run under mpirun -np %d (this is %d process%s)\n", RANKS, g_dist.ranks,
                   g_dist.ranks == 1 ? "" : "es");
        dist_finalize(&g_dist);
        return 1;
    }
    static const tcase cases[] = {
        {"spherical, random init, even parts", 3000, 1500, 16, 20, 12, 1, 0, 0, KMEANS_INIT_RANDOM,
         KMEANS_EMPTY_REPAIR, 0, 25},
        {"spherical, random init, sampled (mppc 40), uneven parts", 4000, 700, 16, 20, 12, 1, 0, 0,
         KMEANS_INIT_RANDOM, KMEANS_EMPTY_REPAIR, 40, 25},
        {"L2, greedy k-means++, empty kept, fixed iterations, rank 0 empty", 2500, 0, 12, 16, 10, 0, 1, 0,
         KMEANS_INIT_GREEDY, KMEANS_EMPTY_KEEP, 0, 8},
        {"L2, greedy k-means++, sampled (mppc 50), uneven parts", 3000, 2100, 12, 16, 10, 0, 0, 0,
         KMEANS_INIT_GREEDY, KMEANS_EMPTY_REPAIR, 50, 20},
        {"L2, given duplicated centroids, repair", 2000, 1100, 8, 12, 6, 0, 0, 1, KMEANS_INIT_GIVEN,
         KMEANS_EMPTY_REPAIR, 0, 20},
        {"spherical, given duplicated centroids, repair, rank 1 empty", 2000, 2000, 8, 12, 6, 1, 0, 1,
         KMEANS_INIT_GIVEN, KMEANS_EMPTY_REPAIR, 0, 20},
    };
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    int planned = 3 + 5;
    for (int i = 0; i < ncases; i++)
        planned += 4 + (cases[i].given_far != 0);
    if (g_dist.rank == 0)
        printf("1..%d\n", planned);
    for (int i = 0; i < ncases; i++)
        run_case(&cases[i]);
    run_errors();
    run_ranks();
    dist_finalize(&g_dist);
    return g_failed ? 1 : 0;
}
