/* test_kmeans.c — common/kmeans against numpy and against geometry: assignment equals float64 brute force
 * (exact on integer data, where ties are exact and go to the lowest index), one Lloyd iteration equals float64
 * means, training recovers planted clusters, reruns are bit-identical (and so are other thread counts and
 * batchings), empty clusters are repaired, bad input fails with a message, centroids round-trip through .npy.
 * References come from tests/unit/kmeans_ref.py (numpy), run once as a subprocess. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "kmeans.h"
#include "npy.h"

static char scratch[64];
static char script[1024]; /* kmeans_ref.py */
static char gen_dir[128]; /* its reference files */

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

typedef struct shape {
    int64_t n;
    int32_t d, k;
} shape;

/* The (n, d, k) of a case from gen/shapes.txt. */
static shape case_shape(const char *name)
{
    char path[256], line[256], nm[64];
    snprintf(path, sizeof path, "%s/shapes.txt", gen_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    shape s = {0, 0, 0};
    long long n;
    int d, k;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %lld %d %d", nm, &n, &d, &k) == 4 && !strcmp(nm, name))
            s = (shape){n, d, k};
    fclose(f);
    if (s.n == 0)
        fail_msg("no case %s in %s", name, path);
    return s;
}

/* A reference file of gen/, which must hold exactly bytes bytes (malloc'ed). */
static void *ref(const char *name, size_t bytes)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", gen_dir, name);
    size_t len;
    uint8_t *b = scratch_slurp(path, &len);
    if (len != bytes)
        fail_msg("%s: %zu bytes, expected %zu", path, len, bytes);
    return b;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double rng_unit(void)
{
    return (double)(rng() >> 11) * 0x1.0p-53;
}

/* x (n, d) rows near one of g unit centres (sigma per coordinate), normalised; centre of row i into g_of. */
static float *mixture(int64_t n, int32_t d, int32_t g, double sigma, int32_t *g_of)
{
    float *c = malloc((size_t)g * d * sizeof *c), *x = malloc((size_t)n * d * sizeof *x);
    assert_true(c && x);
    for (int32_t i = 0; i < g * d; i++)
        c[i] = (float)(rng_unit() - 0.5);
    for (int64_t i = 0; i < n; i++) {
        int32_t gi = (int32_t)(rng() % (uint64_t)g);
        if (g_of)
            g_of[i] = gi;
        double s = 0;
        for (int32_t j = 0; j < d; j++) {
            x[i * d + j] = c[gi * d + j] + (float)(sigma * (rng_unit() - 0.5));
            s += (double)x[i * d + j] * x[i * d + j];
        }
        for (int32_t j = 0; j < d; j++)
            x[i * d + j] = (float)(x[i * d + j] / sqrt(s));
    }
    free(c);
    return x;
}

/* Expects fn's -1 with a message containing word. */
static void expect_fail(int rc, const char *word)
{
    assert_int_equal(rc, -1);
    if (!strstr(lvd_errmsg(), word))
        fail_msg("error lacks '%s': %s", word, lvd_errmsg());
}

/* ---------------------------------------------------------------------------------------------------- */
/* (a) assignment vs numpy */

/* Random float data: lvd decides in float64 (kmeans.h), so its label is numpy's float64 argmax unless the two
 * best centroids are within 1e-12 (then it must be one of them), and its score is numpy's rounded to float32. */
static void check_assign_float(const char *metric, int spherical)
{
    shape s = case_shape("assign_float");
    char nm[128];
    snprintf(nm, sizeof nm, "assign_float_%s_x.f32", metric);
    float *x = ref(nm, (size_t)s.n * s.d * 4);
    snprintf(nm, sizeof nm, "assign_float_%s_c.f32", metric);
    float *c = ref(nm, (size_t)s.k * s.d * 4);
    snprintf(nm, sizeof nm, "assign_float_%s_labels.i32", metric);
    int32_t *want = ref(nm, (size_t)s.n * 4);
    snprintf(nm, sizeof nm, "assign_float_%s_scores.f64", metric);
    double *wscore = ref(nm, (size_t)s.n * 8);
    snprintf(nm, sizeof nm, "assign_float_%s_matrix.f64", metric);
    double *mat = ref(nm, (size_t)s.n * s.k * 8);
    int32_t *lab = malloc((size_t)s.n * sizeof *lab);
    float *sc = malloc((size_t)s.n * sizeof *sc);
    assert_true(lab && sc);
    for (int32_t threads = 1; threads <= 2; threads++) {
        if (kmeans_assign(x, s.n, s.d, c, s.k, spherical, threads, lab, sc) != 0)
            fail_msg("kmeans_assign: %s", lvd_errmsg());
        for (int64_t i = 0; i < s.n; i++) {
            if (fabs(sc[i] - wscore[i]) > 1e-6 * (fabs(wscore[i]) + 1e-3))
                fail_msg("%s row %lld: score %.9g, numpy %.9g", metric, (long long)i, sc[i], wscore[i]);
            if (lab[i] != want[i]) {
                double mine = mat[i * s.k + lab[i]], best = mat[i * s.k + want[i]];
                if (fabs(mine - best) > 1e-12 * (fabs(best) + 1.0))
                    fail_msg("%s row %lld: centroid %d (%.17g), numpy %d (%.17g)", metric, (long long)i, lab[i],
                             mine, want[i], best);
            }
        }
    }
    free(x);
    free(c);
    free(want);
    free(wscore);
    free(mat);
    free(lab);
    free(sc);
}

static void test_assign_float_vs_numpy(void **state)
{
    (void)state;
    check_assign_float("ip", 1);
    check_assign_float("l2", 0);
}

/* Integer data: every value is exact in float32, so labels (ties to the lowest index) and scores must equal
 * numpy's exactly, across the two centroid blocks (k 1500 > KMEANS_TILE_CENTROIDS) and a short last tile. */
static void test_assign_exact_ties(void **state)
{
    (void)state;
    shape s = case_shape("assign_ties");
    assert_true(s.k > KMEANS_TILE_CENTROIDS && s.n % KMEANS_TILE_ROWS != 0);
    float *x = ref("assign_ties_x.f32", (size_t)s.n * s.d * 4);
    float *c = ref("assign_ties_c.f32", (size_t)s.k * s.d * 4);
    int32_t *lab = malloc((size_t)s.n * sizeof *lab);
    float *sc = malloc((size_t)s.n * sizeof *sc);
    assert_true(lab && sc);
    for (int spherical = 1; spherical >= 0; spherical--) {
        const char *metric = spherical ? "ip" : "l2";
        char nm[128];
        snprintf(nm, sizeof nm, "assign_ties_%s_labels.i32", metric);
        int32_t *want = ref(nm, (size_t)s.n * 4);
        snprintf(nm, sizeof nm, "assign_ties_%s_scores.f64", metric);
        double *wscore = ref(nm, (size_t)s.n * 8);
        for (int32_t threads = 1; threads <= 2; threads++) {
            if (kmeans_assign(x, s.n, s.d, c, s.k, spherical, threads, lab, sc) != 0)
                fail_msg("kmeans_assign: %s", lvd_errmsg());
            for (int64_t i = 0; i < s.n; i++)
                if (lab[i] != want[i] || (double)sc[i] != wscore[i])
                    fail_msg("%s row %lld: centroid %d score %g, numpy %d score %g", metric, (long long)i, lab[i],
                             sc[i], want[i], wscore[i]);
        }
        /* scores may be NULL */
        assert_int_equal(kmeans_assign(x, s.n, s.d, c, s.k, spherical, 0, lab, NULL), 0);
        assert_memory_equal(lab, want, (size_t)s.n * 4);
        free(want);
        free(wscore);
    }
    free(x);
    free(c);
    free(lab);
    free(sc);
}

/* A row's label and score bits do not depend on the batch it is assigned in, its place there or the threads. */
static void test_assign_batch_invariant(void **state)
{
    (void)state;
    shape s = case_shape("assign_float");
    float *x = ref("assign_float_ip_x.f32", (size_t)s.n * s.d * 4);
    float *c = ref("assign_float_ip_c.f32", (size_t)s.k * s.d * 4);
    int32_t *l1 = malloc((size_t)s.n * 4), *l2 = malloc((size_t)s.n * 4);
    float *s1 = malloc((size_t)s.n * 4), *s2 = malloc((size_t)s.n * 4);
    assert_true(l1 && l2 && s1 && s2);
    for (int spherical = 0; spherical <= 1; spherical++) {
        assert_int_equal(kmeans_assign(x, s.n, s.d, c, s.k, spherical, 2, l1, s1), 0);
        const int64_t batches[] = {1, 7, 255, 256, 257, 1000};
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            int64_t at = 0;
            for (int64_t len = batches[b]; at < s.n; at += len, len = len % 3 == 0 ? len + 1 : len) {
                int64_t m = s.n - at < len ? s.n - at : len;
                assert_int_equal(kmeans_assign(x + at * s.d, m, s.d, c, s.k, spherical, 1 + (int32_t)(b % 2),
                                               l2 + at, s2 + at),
                                 0);
            }
            assert_memory_equal(l1, l2, (size_t)s.n * 4);
            assert_memory_equal(s1, s2, (size_t)s.n * 4);
        }
    }
    free(x);
    free(c);
    free(l1);
    free(l2);
    free(s1);
    free(s2);
}

/* ---------------------------------------------------------------------------------------------------- */
/* (b) one Lloyd iteration vs numpy */

static void test_lloyd_iteration_vs_numpy(void **state)
{
    (void)state;
    shape s = case_shape("lloyd");
    float *x = ref("lloyd_x.f32", (size_t)s.n * s.d * 4);
    float *c = malloc((size_t)s.k * s.d * sizeof *c);
    assert_non_null(c);
    for (int spherical = 1; spherical >= 0; spherical--) {
        const char *metric = spherical ? "ip" : "l2";
        char nm[128];
        snprintf(nm, sizeof nm, "lloyd_%s_init.f32", metric);
        float *init = ref(nm, (size_t)s.k * s.d * 4);
        snprintf(nm, sizeof nm, "lloyd_%s_expected.f64", metric);
        double *want = ref(nm, (size_t)s.k * s.d * 8);
        for (int32_t threads = 1; threads <= 2; threads++) {
            memcpy(c, init, (size_t)s.k * s.d * sizeof *c);
            kmeans_opts o;
            kmeans_opts_default(&o);
            o.k = s.k;
            o.iterations = 1;
            o.max_points_per_centroid = 0; /* all rows */
            o.init = KMEANS_INIT_GIVEN;
            o.spherical = spherical;
            o.threads = threads;
            double obj[1] = {0};
            kmeans_stats st = {.objective = obj};
            if (kmeans_train(x, s.n, s.d, &o, c, &st) != 0)
                fail_msg("kmeans_train: %s", lvd_errmsg());
            assert_int_equal(st.iterations, 1);
            assert_int_equal(st.n_train, s.n);
            assert_int_equal(st.repaired, 0);
            double worst = 0;
            for (int64_t i = 0; i < (int64_t)s.k * s.d; i++)
                worst = fmax(worst, fabs(c[i] - want[i]));
            print_message("# lloyd %s, %d threads: max |lvd - numpy| = %.3g\n", metric, threads, worst);
            assert_true(worst < 1e-6);
        }
        free(init);
        free(want);
    }
    free(x);
    free(c);
}

/* ---------------------------------------------------------------------------------------------------- */
/* (c) planted clusters */

/* Every planted cluster's rows all go to one centroid, and no two clusters to the same one. */
static void check_recovers(const int32_t *lab, const int32_t *planted, int64_t n, int32_t k)
{
    int32_t *map = malloc((size_t)k * sizeof *map), *used = calloc((size_t)k, sizeof *used);
    assert_true(map && used);
    for (int32_t j = 0; j < k; j++)
        map[j] = -1;
    for (int64_t i = 0; i < n; i++) {
        if (map[planted[i]] < 0) {
            map[planted[i]] = lab[i];
            if (used[lab[i]]++)
                fail_msg("centroid %d holds two planted clusters", lab[i]);
        } else if (map[planted[i]] != lab[i]) {
            fail_msg("planted cluster %d split between centroids %d and %d", planted[i], map[planted[i]], lab[i]);
        }
    }
    free(map);
    free(used);
}

static void test_train_recovers_planted(void **state)
{
    (void)state;
    shape s = case_shape("planted");
    float *x = ref("planted_x.f32", (size_t)s.n * s.d * 4);
    int32_t *planted = ref("planted_labels.i32", (size_t)s.n * 4);
    float *c = malloc((size_t)s.k * s.d * sizeof *c);
    int32_t *lab = malloc((size_t)s.n * sizeof *lab);
    assert_true(c && lab);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        kmeans_opts o;
        kmeans_opts_default(&o);
        o.k = s.k;
        o.init = KMEANS_INIT_PLUSPLUS;
        o.seed = seed;
        double obj[20];
        kmeans_stats st = {.objective = obj};
        if (kmeans_train(x, s.n, s.d, &o, c, &st) != 0)
            fail_msg("kmeans_train: %s", lvd_errmsg());
        assert_true(st.iterations >= 1 && st.iterations <= 20);
        assert_int_equal(kmeans_assign(x, s.n, s.d, c, s.k, 1, 0, lab, NULL), 0);
        check_recovers(lab, planted, s.n, s.k);
        /* centroids are unit length; the objective never decreases (Lloyd's iterations on the sphere) */
        for (int32_t j = 0; j < s.k; j++) {
            double n2 = 0;
            for (int32_t t = 0; t < s.d; t++)
                n2 += (double)c[j * s.d + t] * c[j * s.d + t];
            assert_true(fabs(n2 - 1.0) < 1e-5);
        }
        for (int32_t t = 1; t < st.iterations; t++)
            assert_true(obj[t] >= obj[t - 1] - 1e-6);
        assert_true(obj[st.iterations - 1] > 0.999);
    }
    free(x);
    free(planted);
    free(c);
    free(lab);
}

/* k-means++ draws by squared distance: with 2000 rows at one place and 10 far away, its second centroid is
 * among the 10 for every seed, where a uniform draw almost never is. */
static void test_plusplus_spreads(void **state)
{
    (void)state;
    const int64_t n = 2010;
    const int32_t d = 8;
    float *x = calloc((size_t)n * d, sizeof *x), c[2 * 8];
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) {
        x[i * d + (i < 2000 ? 0 : 1)] = 1.0f;
        x[i * d + 2] = (float)(1e-3 * rng_unit()); /* distinct rows */
    }
    int random_far = 0;
    for (uint64_t seed = 1; seed <= 10; seed++) {
        for (int pp = 0; pp <= 1; pp++) {
            kmeans_opts o;
            kmeans_opts_default(&o);
            o.k = 2;
            o.iterations = 0;
            o.seed = seed;
            o.spherical = 0;
            o.init = pp ? KMEANS_INIT_PLUSPLUS : KMEANS_INIT_RANDOM;
            assert_int_equal(kmeans_train(x, n, d, &o, c, NULL), 0);
            int far = (c[1] > 0.5f) + (c[d + 1] > 0.5f);
            if (pp)
                assert_int_equal(far, 1);
            else
                random_far += far;
        }
    }
    assert_true(random_far <= 1);
    free(x);
}

/* ---------------------------------------------------------------------------------------------------- */
/* (d) determinism */

static void train_once(const float *x, int64_t n, int32_t d, const kmeans_opts *o, float *c, kmeans_stats *st)
{
    if (kmeans_train(x, n, d, o, c, st) != 0)
        fail_msg("kmeans_train: %s", lvd_errmsg());
}

static void test_deterministic(void **state)
{
    (void)state;
    const int64_t n = 20000;
    const int32_t d = 40, k = 50;
    float *x = mixture(n, d, 40, 0.4, NULL);
    float *c1 = malloc((size_t)k * d * 4), *c2 = malloc((size_t)k * d * 4);
    assert_true(c1 && c2);
    for (int init = KMEANS_INIT_RANDOM; init <= KMEANS_INIT_PLUSPLUS; init++) {
        for (int spherical = 0; spherical <= 1; spherical++) {
            kmeans_opts o;
            kmeans_opts_default(&o);
            o.k = k;
            o.init = (kmeans_init)init;
            o.spherical = spherical;
            o.max_points_per_centroid = 100; /* 5000 of the 20000 rows */
            o.threads = 2;
            double ob1[20], ob2[20];
            kmeans_stats s1 = {.objective = ob1}, s2 = {.objective = ob2};
            train_once(x, n, d, &o, c1, &s1);
            assert_int_equal(s1.n_train, 5000);
            /* same seed, same threads; then one thread: the same bits */
            for (int32_t threads = 2; threads >= 1; threads--) {
                o.threads = threads;
                train_once(x, n, d, &o, c2, &s2);
                assert_memory_equal(c1, c2, (size_t)k * d * 4);
                assert_int_equal(s1.iterations, s2.iterations);
                assert_int_equal(s1.repaired, s2.repaired);
                assert_memory_equal(ob1, ob2, (size_t)s1.iterations * sizeof(double));
            }
            /* another seed: another sample and init, so other centroids */
            o.seed = 99;
            train_once(x, n, d, &o, c2, &s2);
            assert_memory_not_equal(c1, c2, (size_t)k * d * 4);
            /* the initial centroids alone (0 iterations) differ between seeds too */
            o.iterations = 0;
            train_once(x, n, d, &o, c2, &s2);
            assert_int_equal(s2.iterations, 0);
            o.seed = 1234;
            train_once(x, n, d, &o, c1, &s2);
            assert_memory_not_equal(c1, c2, (size_t)k * d * 4);
        }
    }
    free(x);
    free(c1);
    free(c2);
}

/* ---------------------------------------------------------------------------------------------------- */
/* empty clusters */

/* All initial centroids on one row: the first assignment leaves k - 1 clusters empty, which the repair fills;
 * training then ends with every cluster non-empty, one per planted group. */
static void test_empty_clusters_repaired(void **state)
{
    (void)state;
    const int64_t n = 800;
    const int32_t d = 16, k = 8;
    int32_t *g = malloc((size_t)n * sizeof *g), *lab = malloc((size_t)n * sizeof *lab);
    float *x = mixture(n, d, k, 0.05, g), *c = malloc((size_t)k * d * sizeof *c);
    int64_t sizes[8];
    assert_true(g && lab && c);
    for (int spherical = 0; spherical <= 1; spherical++) {
        for (int32_t j = 0; j < k; j++)
            memcpy(c + j * d, x, (size_t)d * sizeof *c);
        kmeans_opts o;
        kmeans_opts_default(&o);
        o.k = k;
        o.init = KMEANS_INIT_GIVEN;
        o.spherical = spherical;
        kmeans_stats st = {0};
        train_once(x, n, d, &o, c, &st);
        assert_true(st.repaired >= k - 1);
        assert_int_equal(kmeans_assign(x, n, d, c, k, spherical, 0, lab, NULL), 0);
        memset(sizes, 0, sizeof sizes);
        for (int64_t i = 0; i < n; i++)
            sizes[lab[i]]++;
        for (int32_t j = 0; j < k; j++)
            assert_true(sizes[j] > 0);
        check_recovers(lab, g, n, k);
    }
    /* n == k distinct rows from one shared start: each cluster ends with exactly one row */
    for (int32_t j = 0; j < k; j++)
        memcpy(c + j * d, x, (size_t)d * sizeof *c);
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.init = KMEANS_INIT_GIVEN;
    kmeans_stats st = {0};
    train_once(x, k, d, &o, c, &st);
    assert_true(st.repaired >= k - 1);
    assert_int_equal(kmeans_assign(x, k, d, c, k, 1, 0, lab, NULL), 0);
    memset(sizes, 0, sizeof sizes);
    for (int32_t i = 0; i < k; i++)
        sizes[lab[i]]++;
    for (int32_t j = 0; j < k; j++)
        assert_int_equal(sizes[j], 1);
    free(g);
    free(lab);
    free(x);
    free(c);
}

/* ---------------------------------------------------------------------------------------------------- */
/* (e) errors */

static void test_errors(void **state)
{
    (void)state;
    const int64_t n = 100;
    const int32_t d = 4;
    float *x = mixture(n, d, 3, 0.1, NULL), c[8 * 4];
    int32_t lab[100];
    float sc[100];
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = 8;
    assert_int_equal(kmeans_train(x, n, d, &o, c, NULL), 0); /* valid centroids for the assignments below */
    expect_fail(kmeans_train(x, 7, d, &o, c, NULL), "n >= k");
    o.k = 0;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "k must be");
    o.k = -3;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "k must be");
    o.k = 8;
    expect_fail(kmeans_train(x, n, 0, &o, c, NULL), "d must be");
    expect_fail(kmeans_train(x, n, -1, &o, c, NULL), "d must be");
    o.iterations = -1;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "iterations");
    o.iterations = 20;
    o.init = (kmeans_init)7;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "init");
    o.init = KMEANS_INIT_RANDOM;
    expect_fail(kmeans_train(NULL, n, d, &o, c, NULL), "must be given");
    expect_fail(kmeans_train(x, n, d, NULL, c, NULL), "options");
    assert_int_equal(kmeans_train(x, n, d, &o, c, NULL), 0);

    /* NaN and infinity: training fails naming the row and column (all rows are in the sample here) */
    x[37 * d + 2] = NAN;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "row 37 of x");
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "column 2");
    /* assignment fails too, naming the row of the batch, and for any batch that holds it */
    expect_fail(kmeans_assign(x, n, d, c, 8, 1, 0, lab, sc), "row 37 ");
    expect_fail(kmeans_assign(x + 30 * d, 10, d, c, 8, 1, 0, lab, sc), "row 7 ");
    assert_int_equal(kmeans_assign(x, 37, d, c, 8, 1, 0, lab, sc), 0); /* the rows before it are fine */
    x[37 * d + 2] = 0.5f;
    x[99 * d] = -INFINITY;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "row 99 of x");
    x[99 * d] = 0.5f;
    /* non-finite given centroids, for training and assignment */
    assert_int_equal(kmeans_train(x, n, d, &o, c, NULL), 0);
    c[5 * d + 1] = NAN;
    expect_fail(kmeans_assign(x, n, d, c, 8, 1, 0, lab, sc), "centroid 5");
    o.init = KMEANS_INIT_GIVEN;
    expect_fail(kmeans_train(x, n, d, &o, c, NULL), "centroid 5");
    /* assignment arguments */
    expect_fail(kmeans_assign(x, n, 0, c, 8, 1, 0, lab, sc), "d >= 1");
    expect_fail(kmeans_assign(x, n, d, c, 0, 1, 0, lab, sc), "k >= 1");
    assert_int_equal(kmeans_assign(x, 0, d, c, 8, 1, 0, lab, sc), 0); /* nothing to do */
    free(x);
}

/* ---------------------------------------------------------------------------------------------------- */
/* files */

static void test_save_load(void **state)
{
    (void)state;
    const int32_t k = 37, d = 19;
    float c[37 * 19];
    for (int32_t i = 0; i < k * d; i++)
        c[i] = (float)(rng_unit() - 0.5);
    char path[256], raw[256], args[800];
    scratch_join(path, sizeof path, scratch, "centroids.npy");
    scratch_join(raw, sizeof raw, scratch, "centroids.raw");
    assert_int_equal(kmeans_save(path, c, k, d), 0);
    scratch_spit(raw, c, sizeof c);
    snprintf(args, sizeof args, "npy-check '%s' %d %d '%s'", path, k, d, raw);
    scratch_python(script, args, NULL, 0);

    float *back;
    int32_t k2, d2;
    assert_int_equal(kmeans_load(path, d, &back, &k2, &d2), 0);
    assert_int_equal(k2, k);
    assert_int_equal(d2, d);
    assert_memory_equal(back, c, sizeof c);
    free(back);
    assert_int_equal(kmeans_load(path, 0, &back, &k2, &d2), 0);
    free(back);

    expect_fail(kmeans_load(path, 20, &back, &k2, &d2), "expected 20");
    assert_null(back);
    char bad[256];
    scratch_join(bad, sizeof bad, scratch, "flat.npy");
    assert_int_equal(npy_write(bad, c, 1, (int64_t[]){k * d}, NPY_F32), 0);
    expect_fail(kmeans_load(bad, 0, &back, &k2, &d2), "2-D");
    c[3 * d + 4] = NAN;
    scratch_join(bad, sizeof bad, scratch, "nan.npy");
    assert_int_equal(npy_write(bad, c, 2, (int64_t[]){k, d}, NPY_F32), 0);
    expect_fail(kmeans_load(bad, 0, &back, &k2, &d2), "centroid 3");
    scratch_join(bad, sizeof bad, scratch, "missing.npy");
    expect_fail(kmeans_load(bad, 0, &back, &k2, &d2), "missing.npy");
    expect_fail(kmeans_save(path, c, 0, d), "k >= 1");
}

/* ---------------------------------------------------------------------------------------------------- */

/* The scratch directory, and gen/ in it filled by kmeans_ref.py gen. */
static int setup(void **state)
{
    return scratch_setup_fixtures(state, scratch, sizeof scratch, "kmeans", gen_dir, sizeof gen_dir, script,
                                  "gen");
}

int main(int argc, char **argv)
{
    snprintf(script, sizeof script, "%s/unit/kmeans_ref.py", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_assign_float_vs_numpy),
        cmocka_unit_test(test_assign_exact_ties),
        cmocka_unit_test(test_assign_batch_invariant),
        cmocka_unit_test(test_lloyd_iteration_vs_numpy),
        cmocka_unit_test(test_train_recovers_planted),
        cmocka_unit_test(test_plusplus_spreads),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_empty_clusters_repaired),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(t, setup, scratch_teardown);
}
