/* kmeans_ranks.c — a stage's k-means over the ranks of an MPI run: see kmeans_ranks.h.
 *
 * The protocol, every step a collective of all ranks in this order:
 *   1. rank 0 broadcasts a header (hdr below: the command and the call's parameters); KMR_STOP ends kmr_serve;
 *   2. each rank allocates its part; the ranks agree on the allocation (a rank without memory fails the call);
 *   3. with given centroids (train) or always (assign), rank 0 broadcasts the centroids;
 *   4. rank 0 scatters the rows; each rank computes on its part (kmeans_train over the ranks, kmeans_assign);
 *   5. the ranks agree on the result: on a failure, rank 0 gathers every rank's message and reports the first
 *      that is a rank's own (not "failed on another rank"); otherwise assign gathers the labels (and scores).
 */
#include "kmeans_ranks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

enum { KMR_STOP = 0, KMR_TRAIN = 1, KMR_ASSIGN = 2 };

/* The header of a call: int64 fields. */
enum {
    H_CMD, H_N, H_DIM, H_K, H_ITER, H_SEED, H_SPHERICAL, H_INIT, H_MPPC, H_THREADS, H_FIXED, H_EMPTY, H_SCORES,
    H_LEN
};

#define KMR_MSG 1024 /* bytes of a rank's error message in the gather */

/* This rank's part of n rows over d's ranks (kmeans_ranks.h), and every rank's count in rows_of (ranks). */
static int64_t part_of(const lvd_dist *d, int64_t n, int64_t *rows_of)
{
    for (int32_t r = 0; r < d->ranks; r++)
        rows_of[r] = n * (r + 1) / d->ranks - n * r / d->ranks;
    return rows_of[d->rank];
}

/* The ranks' verdict on a step each may have failed (rc): 0, or -1 on every rank. */
static int agree(lvd_dist *d, int rc)
{
    int64_t any = 0;
    if (dist_max_i64(d, rc != 0, &any) != 0)
        return -1;
    return any ? -1 : 0;
}

/* After a call that failed on some rank (the ranks agreed: every rank calls this): rank 0's message becomes the
 * first rank's own message, "rank r: ..." (a rank's own: not the echo of another's failure). */
static int report(lvd_dist *d, int failed_here)
{
    char *all = d->rank == 0 ? calloc((size_t)d->ranks, KMR_MSG) : NULL, mine[KMR_MSG];
    snprintf(mine, sizeof mine, "%s", failed_here ? lvd_errmsg() : "");
    int64_t *rows_of = malloc((size_t)d->ranks * sizeof *rows_of);
    int ok = rows_of != NULL && (d->rank != 0 || all != NULL);
    if (agree(d, !ok) != 0) { /* nothing gathered: each rank keeps its message */
        free(all);
        free(rows_of);
        return -1;
    }
    for (int32_t r = 0; r < d->ranks; r++)
        rows_of[r] = 1;
    int rc = dist_gather_rows(d, mine, KMR_MSG, rows_of, all);
    if (rc == 0 && d->rank == 0) {
        int32_t pick = -1;
        for (int32_t r = 0; r < d->ranks && pick < 0; r++) {
            const char *m = all + (size_t)r * KMR_MSG;
            if (m[0] && !strstr(m, "on another rank"))
                pick = r;
        }
        if (pick > 0)
            lvd_fail("rank %" PRId32 ": %s", pick, all + (size_t)pick * KMR_MSG);
    }
    free(all);
    free(rows_of);
    return -1;
}

/* The header of a training call. */
static void train_header(int64_t *h, int64_t n, int32_t dim, const kmeans_opts *o)
{
    memset(h, 0, H_LEN * sizeof *h);
    h[H_CMD] = KMR_TRAIN;
    h[H_N] = n;
    h[H_DIM] = dim;
    h[H_K] = o->k;
    h[H_ITER] = o->iterations;
    h[H_SEED] = (int64_t)o->seed;
    h[H_SPHERICAL] = o->spherical;
    h[H_INIT] = o->init;
    h[H_MPPC] = o->max_points_per_centroid;
    h[H_THREADS] = o->threads;
    h[H_FIXED] = o->fixed_iterations;
    h[H_EMPTY] = o->empty;
}

static int kmeans_sum(double *buf, int64_t n, void *ctx)
{
    return dist_reduce_f64((lvd_dist *)ctx, buf, n, 0);
}

/* Steps 2-5 of a training call on any rank: x is rank 0's rows (NULL elsewhere); c (k, dim) the centroids
 * (on ranks > 0 a buffer of that size); st rank 0's stats. */
static int do_train(lvd_dist *d, const int64_t *h, const float *x, float *c, kmeans_stats *st)
{
    const int64_t n = h[H_N];
    const int32_t dim = (int32_t)h[H_DIM], k = (int32_t)h[H_K];
    int64_t *rows_of = malloc((size_t)d->ranks * sizeof *rows_of);
    int64_t m = rows_of ? part_of(d, n, rows_of) : 0;
    float *mine = d->rank == 0 ? (float *)x : malloc((size_t)(m > 0 ? m : 1) * dim * sizeof *mine);
    int rc = rows_of && mine && c ? 0 : lvd_fail("k-means over the ranks: out of memory for %" PRId64 " rows", m);
    if (agree(d, rc) != 0) {
        rc = report(d, rc != 0);
        goto out;
    }
    if ((h[H_INIT] == KMEANS_INIT_GIVEN && dist_bcast(d, c, (size_t)k * dim * sizeof *c, 0) != 0) ||
        dist_scatter_rows(d, x, (size_t)dim * sizeof *x, rows_of, mine) != 0) {
        rc = -1;
        goto out;
    }
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.iterations = (int32_t)h[H_ITER];
    o.seed = (uint64_t)h[H_SEED];
    o.spherical = (int)h[H_SPHERICAL];
    o.init = (kmeans_init)h[H_INIT];
    o.max_points_per_centroid = h[H_MPPC];
    o.threads = (int32_t)h[H_THREADS];
    o.fixed_iterations = (int)h[H_FIXED];
    o.empty = (kmeans_empty)h[H_EMPTY];
    kmeans_comm cm = {d->rank, d->ranks, kmeans_sum, d};
    o.comm = &cm;
    rc = kmeans_train(mine, m, dim, &o, c, d->rank == 0 ? st : NULL);
    /* kmeans_train agrees on its failures: every rank fails together */
    if (rc != 0)
        rc = report(d, 1);
out:
    if (d->rank != 0)
        free(mine);
    free(rows_of);
    return rc;
}

/* Steps 2-5 of an assignment call on any rank: x, labels and scores are rank 0's (NULL elsewhere). */
static int do_assign(lvd_dist *d, const int64_t *h, const float *x, float *c, int32_t *labels, float *scores)
{
    const int64_t n = h[H_N];
    const int32_t dim = (int32_t)h[H_DIM], k = (int32_t)h[H_K];
    const int want_scores = h[H_SCORES] != 0, root = d->rank == 0;
    int64_t *rows_of = malloc((size_t)d->ranks * sizeof *rows_of);
    int64_t m = rows_of ? part_of(d, n, rows_of) : 0, mb = m > 0 ? m : 1;
    float *mine = root ? (float *)x : malloc((size_t)mb * dim * sizeof *mine);
    int32_t *lab = root ? labels : malloc((size_t)mb * sizeof *lab);
    float *sc = root ? scores : want_scores ? malloc((size_t)mb * sizeof *sc) : NULL;
    float *cc = root ? c : malloc((size_t)k * dim * sizeof *cc);
    int rc = rows_of && mine && lab && cc && (sc || !want_scores)
                 ? 0
                 : lvd_fail("k-means assignment over the ranks: out of memory for %" PRId64 " rows", m);
    if (agree(d, rc) != 0) {
        rc = report(d, rc != 0);
        goto out;
    }
    if (dist_bcast(d, cc, (size_t)k * dim * sizeof *cc, 0) != 0 ||
        dist_scatter_rows(d, x, (size_t)dim * sizeof *x, rows_of, mine) != 0) {
        rc = -1;
        goto out;
    }
    rc = m > 0 ? kmeans_assign(mine, m, dim, cc, k, (int)h[H_SPHERICAL], (int32_t)h[H_THREADS], lab, sc) : 0;
    if (agree(d, rc) != 0) {
        rc = report(d, rc != 0);
        goto out;
    }
    if (dist_gather_rows(d, lab, sizeof *lab, rows_of, labels) != 0 ||
        (want_scores && dist_gather_rows(d, sc, sizeof *sc, rows_of, scores) != 0))
        rc = -1;
out:
    if (!root) {
        free(mine);
        free(lab);
        free(sc);
        free(cc);
    }
    free(rows_of);
    return rc;
}

int kmr_train(lvd_dist *d, const float *x, int64_t n, int32_t dim, const kmeans_opts *o, float *centroids,
              kmeans_stats *st)
{
    if (!d || d->ranks == 1 || !o)
        return kmeans_train(x, n, dim, o, centroids, st);
    if (o->comm)
        return lvd_fail("kmr_train: the options already name processes");
    /* what every rank would refuse alike, refused before the ranks are involved */
    if (o->k < 1 || n < o->k || dim < 1 || !x || !centroids)
        return kmeans_train(x, n, dim, o, centroids, st);
    int64_t h[H_LEN];
    train_header(h, n, dim, o);
    if (dist_bcast(d, h, sizeof h, 0) != 0)
        return -1;
    return do_train(d, h, x, centroids, st);
}

int kmr_assign(lvd_dist *d, const float *x, int64_t n, int32_t dim, const float *centroids, int32_t k,
               int spherical, int32_t threads, int32_t *labels, float *scores)
{
    if (!d || d->ranks == 1 || n == 0 || k < 1 || dim < 1 || !x || !centroids || !labels)
        return kmeans_assign(x, n, dim, centroids, k, spherical, threads, labels, scores);
    int64_t h[H_LEN] = {0};
    h[H_CMD] = KMR_ASSIGN;
    h[H_N] = n;
    h[H_DIM] = dim;
    h[H_K] = k;
    h[H_SPHERICAL] = spherical;
    h[H_THREADS] = threads;
    h[H_SCORES] = scores != NULL;
    if (dist_bcast(d, h, sizeof h, 0) != 0)
        return -1;
    return do_assign(d, h, x, (float *)centroids, labels, scores);
}

int kmr_serve(lvd_dist *d)
{
    if (!d || d->ranks == 1 || d->rank == 0)
        return lvd_fail("kmr_serve: for the ranks > 0 of a run over several processes");
    for (;;) {
        int64_t h[H_LEN];
        if (dist_bcast(d, h, sizeof h, 0) != 0)
            return -1;
        if (h[H_CMD] == KMR_STOP)
            return 0;
        if (h[H_CMD] == KMR_TRAIN) {
            float *c = malloc((size_t)h[H_K] * (size_t)h[H_DIM] * sizeof *c);
            (void)do_train(d, h, NULL, c, NULL); /* c NULL fails in its agreement, as any allocation */
            free(c);
        } else if (h[H_CMD] == KMR_ASSIGN) {
            (void)do_assign(d, h, NULL, NULL, NULL, NULL);
        } else {
            return lvd_fail("kmr_serve: unknown command %" PRId64 " from rank 0", h[H_CMD]);
        }
    }
}

int kmr_stop(lvd_dist *d)
{
    if (!d || d->ranks == 1 || d->rank != 0)
        return 0;
    int64_t h[H_LEN] = {0};
    h[H_CMD] = KMR_STOP;
    return dist_bcast(d, h, sizeof h, 0);
}

int kmr_main(int argc, char **argv, int (*stage)(int argc, char **argv, lvd_dist *d), int failed)
{
    static lvd_dist dist; /* for the whole process: the stage keeps pointers to it */
    if (dist_init(&dist, &argc, &argv) != 0) {
        log_error("%s", lvd_errmsg());
        return failed;
    }
    int rc;
    if (dist.rank > 0) {
        rc = kmr_serve(&dist) == 0 ? 0 : failed;
        if (rc != 0)
            log_error("rank %d: %s", (int)dist.rank, lvd_errmsg());
    } else {
        if (dist.ranks > 1)
            log_info("%d processes: rank 0 runs the stage, the k-means runs over all of them", (int)dist.ranks);
        rc = stage(argc, argv, dist.ranks > 1 ? &dist : NULL);
        if (kmr_stop(&dist) != 0) {
            log_error("%s", lvd_errmsg());
            rc = failed;
        }
    }
    dist_finalize(&dist);
    return rc;
}
