/* test_hkmeans.c — lvd-balance's core: greedy k-means++ and the fixed-iteration, keep-empty k-means of
 * common/kmeans; hierarchical k-means with resampling and splits (curate/balance/hkmeans); the balanced sampler
 * (sampler); the configuration (bconfig) and the shipped presets (schemas/balance/).
 *
 * References come from tests/unit/balance/hkmeans_ref.py (numpy, written from the method's description), run
 * once as a subprocess; CASES below repeats its table. */
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

#include "balance/bconfig.h"
#include "balance/hkmeans.h"
#include "balance/sampler.h"
#include "err.h"
#include "kmeans.h"

static char scratch[64];
static char script[1024];  /* hkmeans_ref.py */
static char srcroot[900]; /* tests/ of the source tree */
static char gen_dir[128];

/* The reference file gen/name, of exactly bytes bytes (malloc'ed). */
static void *ref(const char *name, size_t bytes)
{
    char path[256];
    scratch_join(path, sizeof path, gen_dir, name);
    size_t len;
    uint8_t *b = scratch_slurp(path, &len);
    if (len != bytes)
        fail_msg("%s: %zu bytes, expected %zu", name, len, bytes);
    return b;
}

static int64_t ref_int(const char *name)
{
    char path[256];
    scratch_join(path, sizeof path, gen_dir, name);
    size_t len;
    uint8_t *b = scratch_slurp(path, &len);
    int64_t v = strtoll((const char *)b, NULL, 10);
    free(b);
    return v;
}

static void expect_fail(int rc, const char *word)
{
    assert_int_equal(rc, -1);
    if (!strstr(lvd_errmsg(), word))
        fail_msg("error lacks '%s': %s", word, lvd_errmsg());
}

static double max_abs_diff(const float *a, const float *b, size_t m)
{
    double mx = 0;
    for (size_t i = 0; i < m; i++) {
        double t = fabs((double)a[i] - (double)b[i]);
        mx = t > mx ? t : mx;
    }
    return mx;
}

static uint64_t lcg = 88172645463325252ull;
static double rnd(void)
{
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------------------------------------------- */
/* common/kmeans: the reference's variant */

static kmeans_opts greedy_opts(int32_t k, int32_t iters, uint64_t seed)
{
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.iterations = iters;
    o.seed = seed;
    o.spherical = 0;
    o.init = KMEANS_INIT_GREEDY;
    o.max_points_per_centroid = 0;
    o.fixed_iterations = 1;
    o.empty = KMEANS_EMPTY_KEEP;
    return o;
}

static void test_greedy_vs_numpy(void **state)
{
    (void)state;
    const int64_t n = 600;
    const int32_t d = 7, k = 13, T = 9;
    float *x = ref("greedy_x.f32", (size_t)n * d * 4);
    int32_t *init = ref("greedy_init.i32", (size_t)k * 4), *lab_ref = ref("greedy_labels.i32", (size_t)n * 4);
    float *c_ref = ref("greedy_c.f32", (size_t)k * d * 4);
    float c[13 * 7];
    kmeans_opts o = greedy_opts(k, 0, 42);
    assert_int_equal(kmeans_train(x, n, d, &o, c, NULL), 0);
    for (int32_t j = 0; j < k; j++) /* the drawn rows, bit for bit */
        assert_memory_equal(c + (size_t)j * d, x + (size_t)init[j] * d, (size_t)d * 4);
    kmeans_stats st = {0};
    o.iterations = T;
    assert_int_equal(kmeans_train(x, n, d, &o, c, &st), 0);
    assert_int_equal(st.iterations, T);
    double diff = max_abs_diff(c, c_ref, (size_t)k * d);
    int32_t lab[600];
    assert_int_equal(kmeans_assign(x, n, d, c, k, 0, 0, lab, NULL), 0);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++)
        differ += lab[i] != lab_ref[i];
    printf("# greedy k-means++ + %d Lloyd updates vs numpy: init rows equal, centroids max |diff| %.3g, "
           "%lld / %lld labels differ\n",
           T, diff, (long long)differ, (long long)n);
    assert_true(diff < 1e-5);
    assert_int_equal(differ, 0);
    free(x);
    free(init);
    free(lab_ref);
    free(c_ref);
}

/* Greedy k-means++ where the SGEMM pass must hand rows to the exact float64 distance: 6000 x 48 with 60
 * duplicated rows (k 150), and 2000 x 24 offset by 5000 in every coordinate (k 40), where the float32 product's
 * error exceeds the distances. The drawn rows equal numpy's float64 definition, every one. */
static void test_greedy_gemm_exact(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t n;
        int32_t d, k;
        uint64_t seed;
    } cases[] = {{"mid", 6000, 48, 150, 7}, {"far", 2000, 24, 40, 11}, {"odd", 3000, 37, 60, 5}}; /* GREEDY_CASES */
    /* Every product path this CPU runs (kmeans.c dots_pick; an unsupported one falls back to a wider or the
     * portable one): d 37 and 24 take the AVX2 and AVX-512 tails. */
    static const char *paths[] = {"c", "avx2", "avx512"};
    for (size_t q = 0; q < sizeof cases / sizeof cases[0]; q++) {
        char nx[64], ni[64];
        snprintf(nx, sizeof nx, "greedy_%s_x.f32", cases[q].name);
        snprintf(ni, sizeof ni, "greedy_%s_init.i32", cases[q].name);
        int64_t n = cases[q].n;
        int32_t d = cases[q].d, k = cases[q].k;
        float *x = ref(nx, (size_t)n * d * 4);
        int32_t *init = ref(ni, (size_t)k * 4);
        float *c = malloc((size_t)k * d * 4);
        kmeans_opts o = greedy_opts(k, 0, cases[q].seed);
        for (int32_t run = 0; run < 6; run++) {
            o.threads = 1 + run % 2;
            setenv("LVD_KMEANS_DOTS", paths[run / 2], 1);
            assert_int_equal(kmeans_train(x, n, d, &o, c, NULL), 0);
            int32_t differ = 0;
            for (int32_t j = 0; j < k; j++)
                differ += memcmp(c + (size_t)j * d, x + (size_t)init[j] * d, (size_t)d * 4) != 0;
            printf("# greedy k-means++ %s (%lld x %d, k %d, %d threads, %s path): %d of %d centres differ from "
                   "numpy's\n", cases[q].name, (long long)n, d, k, o.threads, paths[run / 2], differ, k);
            assert_int_equal(differ, 0);
        }
        unsetenv("LVD_KMEANS_DOTS");
        free(x);
        free(init);
        free(c);
    }
}

static void test_greedy_deterministic(void **state)
{
    (void)state;
    const int64_t n = 5000;
    const int32_t d = 16, k = 50;
    float *x = malloc((size_t)n * d * sizeof *x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)(rnd() - 0.5);
    float *a = malloc((size_t)k * d * 4), *b = malloc((size_t)k * d * 4);
    kmeans_opts o = greedy_opts(k, 5, 9);
    o.threads = 1;
    assert_int_equal(kmeans_train(x, n, d, &o, a, NULL), 0);
    o.threads = 2;
    assert_int_equal(kmeans_train(x, n, d, &o, b, NULL), 0);
    assert_memory_equal(a, b, (size_t)k * d * 4);
    o.seed = 10; /* another seed, other centres */
    assert_int_equal(kmeans_train(x, n, d, &o, b, NULL), 0);
    assert_memory_not_equal(a, b, (size_t)k * d * 4);
    free(x);
    free(a);
    free(b);
}

/* Duplicate rows: fewer distinct rows than centres, the potential reaches 0 and the init takes untaken rows. */
static void test_greedy_duplicates(void **state)
{
    (void)state;
    const int32_t d = 3;
    float x[8 * 3] = {0};
    for (int i = 4; i < 8; i++)
        x[i * d] = 1;
    float c[6 * 3];
    kmeans_opts o = greedy_opts(6, 0, 1);
    assert_int_equal(kmeans_train(x, 8, d, &o, c, NULL), 0);
    int zeros = 0, ones = 0;
    for (int j = 0; j < 6; j++)
        *(c[j * d] == 0 ? &zeros : &ones) += 1;
    assert_true(zeros >= 1 && ones >= 1);
    o.spherical = 1;
    expect_fail(kmeans_train(x, 8, d, &o, c, NULL), "squared L2");
}

/* KMEANS_EMPTY_KEEP leaves an empty cluster's centroid as it was; the default repair moves it. */
static void test_empty_keep_and_fixed(void **state)
{
    (void)state;
    const int64_t n = 400;
    const int32_t d = 4, k = 4;
    float *x = malloc((size_t)n * d * 4);
    for (int64_t i = 0; i < n; i++)
        for (int32_t j = 0; j < d; j++)
            x[i * d + j] = (float)(rnd() * 0.1 + (i % 3) * 10.0 * (j == 0));
    float init[4 * 4] = {0, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 1000, 1000, 1000, 1000};
    float c[16];
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.iterations = 7;
    o.spherical = 0;
    o.init = KMEANS_INIT_GIVEN;
    o.max_points_per_centroid = 0;
    o.empty = KMEANS_EMPTY_KEEP;
    o.fixed_iterations = 1;
    kmeans_stats st = {0};
    memcpy(c, init, sizeof c);
    assert_int_equal(kmeans_train(x, n, d, &o, c, &st), 0);
    assert_memory_equal(c + 12, init + 12, 16);
    assert_int_equal(st.repaired, 0);
    assert_int_equal(st.iterations, 7); /* converged after 2, but no early stop */
    o.fixed_iterations = 0;
    memcpy(c, init, sizeof c);
    assert_int_equal(kmeans_train(x, n, d, &o, c, &st), 0);
    assert_true(st.iterations < 7);
    o.empty = KMEANS_EMPTY_REPAIR;
    memcpy(c, init, sizeof c);
    assert_int_equal(kmeans_train(x, n, d, &o, c, &st), 0);
    assert_true(st.repaired >= 1);
    assert_true(c[12] < 100);
    free(x);
}

/* ---------------------------------------------------------------------------------------------------- */
/* hierarchical k-means and the sampler vs numpy */

typedef struct lcase {
    int32_t k, splits, steps, size;
    char strategy;
} lcase;

typedef struct tcase {
    const char *name;
    int64_t n;
    int32_t d;
    uint64_t seed;
    int32_t iters;
    int32_t n_levels;
    lcase lv[3];
    int64_t target;
    int32_t mult;
    char sampling;
} tcase;

static const tcase CASES[] = {
    {"c3", 1500, 8, 7, 10, 3, {{40, 1, 3, 5, 'c'}, {8, 1, 2, 3, 'c'}, {3, 1, 1, 2, 'c'}}, 700, 2, 'c'},
    {"r2", 1200, 6, 11, 8, 2, {{30, 1, 2, 6, 'r'}, {5, 1, 3, 3, 'r'}}, 900, 1, 'r'},
    {"split", 1000, 5, 3, 6, 2, {{6, 4, 0, 1, 'c'}, {4, 1, 2, 2, 'c'}}, 1500, 3, 'c'},
};

static hkm_opts case_opts(const tcase *tc)
{
    hkm_opts o = {.n_levels = tc->n_levels, .n_iters = tc->iters, .seed = tc->seed, .threads = 0};
    for (int32_t l = 0; l < tc->n_levels; l++)
        o.level[l] = (hkm_level_opts){tc->lv[l].k, tc->lv[l].splits, tc->lv[l].steps, tc->lv[l].size,
                                      tc->lv[l].strategy};
    return o;
}

static void test_tree_and_sample_vs_numpy(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const tcase *tc = &CASES[ci];
        char name[128];
        snprintf(name, sizeof name, "tree_%s_x.f32", tc->name);
        const int64_t n = tc->n;
        const int32_t d = tc->d, L = tc->n_levels;
        float *x = ref(name, (size_t)n * d * 4);
        hkm_opts o = case_opts(tc);
        hkm_tree t;
        assert_int_equal(hkm_build(x, n, d, &o, &t), 0);
        snprintf(name, sizeof name, "tree_%s_labels.i32", tc->name);
        int32_t *lab = ref(name, (size_t)L * n * 4);
        snprintf(name, sizeof name, "tree_%s_dist.f32", tc->name);
        float *dist = ref(name, (size_t)L * n * 4);
        for (int32_t l = 0; l < L; l++) {
            snprintf(name, sizeof name, "tree_%s_k%d.txt", tc->name, l);
            int64_t k = ref_int(name);
            assert_int_equal(t.level[l].k, k);
            snprintf(name, sizeof name, "tree_%s_c%d.f32", tc->name, l);
            float *c = ref(name, (size_t)k * d * 4);
            double cd = max_abs_diff(c, t.level[l].centroids, (size_t)k * d);
            double dd = max_abs_diff(dist + (size_t)l * n, t.dist + (size_t)l * n, (size_t)n);
            int64_t differ = 0;
            for (int64_t i = 0; i < n; i++)
                differ += lab[(size_t)l * n + i] != t.label[(size_t)l * n + i];
            printf("# %s level %d: k %lld, centroids max |diff| %.3g, distances max |diff| %.3g, %lld / %lld "
                   "labels differ\n",
                   tc->name, l + 1, (long long)k, cd, dd, (long long)differ, (long long)n);
            assert_true(cd < 1e-4);
            assert_true(dd < 1e-3);
            assert_int_equal(differ, 0);
            free(c);
        }
        bal_sample s;
        assert_int_equal(bal_sample_run(&t, tc->target, tc->mult, tc->sampling, tc->seed, &s), 0);
        snprintf(name, sizeof name, "tree_%s_copies.i32", tc->name);
        int32_t *copies = ref(name, (size_t)n * 4);
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++)
            differ += copies[i] != s.copies[i];
        int64_t qdiffer = 0;
        for (int32_t l = 0; l < L; l++) {
            snprintf(name, sizeof name, "tree_%s_q%d.i64", tc->name, l);
            int64_t *q = ref(name, (size_t)t.level[l].k * 8);
            for (int32_t c = 0; c < t.level[l].k; c++)
                qdiffer += q[c] != s.quota[l][c];
            free(q);
        }
        printf("# %s sample of %lld (x%d, '%c'): %lld copies and %lld quotas differ from numpy\n", tc->name,
               (long long)s.total, tc->mult, tc->sampling, (long long)differ, (long long)qdiffer);
        assert_int_equal(differ, 0);
        assert_int_equal(qdiffer, 0);
        bal_sample_free(&s);
        hkm_free(&t);
        free(x);
        free(lab);
        free(dist);
        free(copies);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* sampler invariants */

static void test_water_level(void **state)
{
    (void)state;
    int64_t cap[5] = {1, 10, 3, 7, 0};
    assert_int_equal(bal_water_level(cap, 5, 100), 10); /* everything fits */
    assert_int_equal(bal_water_level(cap, 5, 21), 10);
    assert_int_equal(bal_water_level(cap, 5, 20), 9);
    assert_int_equal(bal_water_level(cap, 5, 10), 3); /* 1 + 3 + 3 + 3 = 10 */
    assert_int_equal(bal_water_level(cap, 5, 9), 2);  /* 1 + 2 + 2 + 2 = 7 <= 9 < 10 */
    assert_int_equal(bal_water_level(cap, 5, 0), 0);
}

/* Every sibling group (the top level, the children of one cluster) is water-filled: each quota <= its
 * capacity, the group sums to its parent's quota (or min(target, total capacity)), and an unsaturated cluster
 * has at least every sibling's quota minus 1. Leaves spread their quota within 1 copy. */
static void check_invariants(const hkm_tree *t, const bal_sample *s, int64_t target, int32_t mult)
{
    const int32_t L = t->n_levels;
    int64_t want = target < t->n * mult ? target : t->n * mult;
    assert_int_equal(s->total, want);
    int64_t top = 0;
    for (int32_t c = 0; c < t->level[L - 1].k; c++)
        top += s->quota[L - 1][c];
    assert_int_equal(top, want);
    for (int32_t l = L - 1; l >= 0; l--) {
        int32_t k = t->level[l].k;
        for (int32_t c = 0; c < k; c++)
            assert_true(s->quota[l][c] <= t->level[l].size[c] * mult);
        /* groups: by parent (the top level is one group) */
        int32_t kp = l == L - 1 ? 1 : t->level[l + 1].k;
        for (int32_t p = 0; p < kp; p++) {
            int64_t sum = 0, mx = -1;
            for (int32_t c = 0; c < k; c++)
                if (l == L - 1 || t->level[l + 1].parent[c] == p) {
                    sum += s->quota[l][c];
                    mx = s->quota[l][c] > mx ? s->quota[l][c] : mx;
                }
            if (l < L - 1)
                assert_int_equal(sum, s->quota[l + 1][p]);
            for (int32_t c = 0; c < k; c++)
                if ((l == L - 1 || t->level[l + 1].parent[c] == p) &&
                    s->quota[l][c] < t->level[l].size[c] * mult && s->quota[l][c] + 1 < mx)
                    fail_msg("level %d cluster %d: quota %lld below its sibling's %lld - 1 while unsaturated", l + 1,
                             c, (long long)s->quota[l][c], (long long)mx);
        }
    }
    int32_t k1 = t->level[0].k;
    int64_t *sum = calloc((size_t)k1, 8);
    int32_t *lo = malloc((size_t)k1 * 4), *hi = malloc((size_t)k1 * 4);
    for (int32_t c = 0; c < k1; c++) {
        lo[c] = INT32_MAX;
        hi[c] = -1;
    }
    for (int64_t i = 0; i < t->n; i++) {
        int32_t c = t->label[i], v = s->copies[i];
        assert_true(v >= 0 && v <= mult);
        sum[c] += v;
        lo[c] = v < lo[c] ? v : lo[c];
        hi[c] = v > hi[c] ? v : hi[c];
    }
    for (int32_t c = 0; c < k1; c++) {
        assert_int_equal(sum[c], s->quota[0][c]);
        if (hi[c] >= 0)
            assert_true(hi[c] - lo[c] <= 1);
    }
    free(sum);
    free(lo);
    free(hi);
}

static void test_sampler_invariants(void **state)
{
    (void)state;
    const int64_t n = 3000;
    const int32_t d = 6;
    float *x = malloc((size_t)n * d * 4);
    for (int64_t i = 0; i < n; i++) { /* skewed blobs: blob b holds about 2^-b of the points */
        int b = 0;
        while (b < 7 && rnd() < 0.5)
            b++;
        for (int32_t j = 0; j < d; j++)
            x[i * d + j] = (float)(rnd() + 4.0 * b * (j == b % d) + (j == 0 ? b : 0));
    }
    hkm_opts o = {.n_levels = 3, .n_iters = 5, .seed = 5};
    o.level[0] = (hkm_level_opts){60, 1, 1, 10, 'c'};
    o.level[1] = (hkm_level_opts){12, 1, 2, 3, 'r'};
    o.level[2] = (hkm_level_opts){4, 1, 1, 2, 'c'};
    hkm_tree t;
    assert_int_equal(hkm_build(x, n, d, &o, &t), 0);
    const int64_t targets[] = {0, 1, 97, 1000, 2999, 3000, 4500, 100000};
    for (size_t ti = 0; ti < sizeof targets / sizeof *targets; ti++)
        for (int32_t mult = 1; mult <= 3; mult++)
            for (int sc = 0; sc < 2; sc++) {
                bal_sample s;
                assert_int_equal(bal_sample_run(&t, targets[ti], mult, sc ? 'c' : 'r', 77, &s), 0);
                check_invariants(&t, &s, targets[ti], mult);
                bal_sample_free(&s);
            }
    bal_sample s;
    expect_fail(bal_sample_run(&t, 10, 0, 'r', 1, &s), "multiplier");
    bal_sample_free(&s);
    expect_fail(bal_sample_run(&t, 10, 1, 'x', 1, &s), "sampling");
    bal_sample_free(&s);
    hkm_free(&t);
    o.level[1].strategy = 'z';
    expect_fail(hkm_build(x, n, d, &o, &t), "level 2");
    hkm_free(&t);
    free(x);
}

/* ---------------------------------------------------------------------------------------------------- */
/* quality: 20 planted concepts skewed 20:1 */

/* Entropy of the concepts of the sample (copies per point), over ln 20. */
static double entropy_ratio(const int32_t *y, const int32_t *copies, int64_t n)
{
    double cnt[20] = {0}, tot = 0, h = 0;
    for (int64_t i = 0; i < n; i++) {
        cnt[y[i]] += copies[i];
        tot += copies[i];
    }
    for (int c = 0; c < 20; c++)
        if (cnt[c] > 0)
            h -= cnt[c] / tot * log(cnt[c] / tot);
    return h / log(20.0);
}

static double run_quality(const float *x, const int32_t *y, int64_t n, const hkm_opts *o, int64_t target)
{
    hkm_tree t;
    assert_int_equal(hkm_build(x, n, 32, o, &t), 0);
    bal_sample s;
    assert_int_equal(bal_sample_run(&t, target, 1, 'r', 3, &s), 0);
    double e = entropy_ratio(y, s.copies, n);
    bal_sample_free(&s);
    hkm_free(&t);
    return e;
}

static void test_quality_planted(void **state)
{
    (void)state;
    const int64_t n = ref_int("quality_n.txt");
    float *x = ref("quality_x.f32", (size_t)n * 32 * 4);
    int32_t *y = ref("quality_y.i32", (size_t)n * 4);
    const int64_t target = 4000;
    int32_t *rc = calloc((size_t)n, 4);
    int64_t *idx = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    for (int64_t j = 0; j < target; j++) { /* a uniform random sample of the same size */
        int64_t q = j + (int64_t)(rnd() * (double)(n - j)), v = idx[j];
        idx[j] = idx[q];
        idx[q] = v;
        rc[idx[j]] = 1;
    }
    double pool_copies_all = 0;
    int32_t *ones = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        ones[i] = 1;
    pool_copies_all = entropy_ratio(y, ones, n);
    double e_random = entropy_ratio(y, rc, n);
    hkm_opts flat = {.n_levels = 1, .n_iters = 20, .seed = 1};
    flat.level[0] = (hkm_level_opts){300, 1, 0, 1, 'c'};
    double e_flat = run_quality(x, y, n, &flat, target);
    hkm_opts nores = {.n_levels = 3, .n_iters = 20, .seed = 1};
    nores.level[0] = (hkm_level_opts){300, 1, 0, 1, 'c'};
    nores.level[1] = (hkm_level_opts){60, 1, 0, 1, 'c'};
    nores.level[2] = (hkm_level_opts){20, 1, 0, 1, 'c'};
    double e_nores = run_quality(x, y, n, &nores, target);
    hkm_opts full = nores;
    full.level[0] = (hkm_level_opts){300, 1, 3, 30, 'c'};
    full.level[1] = (hkm_level_opts){60, 1, 10, 3, 'c'};
    full.level[2] = (hkm_level_opts){20, 1, 10, 2, 'c'};
    double e_full = run_quality(x, y, n, &full, target);
    printf("# quality, %lld points of 20 concepts skewed 20:1, sample %lld, concept entropy / ln 20: pool %.4f, "
           "random %.4f, one level (k 300) %.4f, 3 levels no resampling %.4f, 3 levels with resampling %.4f\n",
           (long long)n, (long long)target, pool_copies_all, e_random, e_flat, e_nores, e_full);
    assert_true(e_full >= 0.95);
    assert_true(e_full > e_random);
    free(x);
    free(y);
    free(rc);
    free(idx);
    free(ones);
}

/* ---------------------------------------------------------------------------------------------------- */
/* configuration */

static void write_cfg(const char *name, const char *text, char *path, size_t cap)
{
    scratch_join(path, cap, scratch, name);
    scratch_spit(path, text, strlen(text));
}

static void test_config(void **state)
{
    (void)state;
    char path[1200];
    bconfig c;
    snprintf(path, sizeof path, "%s/../schemas/balance/web-4levels.yaml", srcroot);
    assert_int_equal(bconfig_load(path, &c), 0);
    assert_int_equal(c.hk.n_levels, 4);
    assert_int_equal(c.hk.n_iters, 50);
    const int32_t k[4] = {100000, 500000, 50000, 10000}, sp[4] = {100, 1, 1, 1}, st[4] = {1, 10, 10, 10},
                  ss[4] = {1, 10, 5, 3};
    for (int l = 0; l < 4; l++) {
        assert_int_equal(c.hk.level[l].k, k[l]);
        assert_int_equal(c.hk.level[l].n_splits, sp[l]);
        assert_int_equal(c.hk.level[l].n_resampling_steps, st[l]);
        assert_int_equal(c.hk.level[l].sample_size, ss[l]);
        assert_int_equal(c.hk.level[l].strategy, 'c');
    }
    assert_string_equal(c.dtype, "float64");
    assert_string_equal(c.ignored, "checkpoint_period, ngpus_per_node, nnodes, ncpus_per_gpu, slurm_partition");
    snprintf(path, sizeof path, "%s/../schemas/balance/small-2core.yaml", srcroot);
    assert_int_equal(bconfig_load(path, &c), 0);
    assert_int_equal(c.hk.n_levels, 3);
    assert_int_equal(c.hk.level[2].k, 20);
    assert_int_equal(c.multiplier, 1);
    assert_int_equal(c.sampling, 'r');
    assert_string_equal(c.ignored, "");

    write_cfg("a.yaml", "n_levels: 2\nn_clusters: [10, 2]\nsampling_strategy: random\ntarget_size: 1_000\n", path,
              sizeof path);
    assert_int_equal(bconfig_load(path, &c), 0);
    assert_int_equal(c.hk.level[1].k, 2);
    assert_int_equal(c.hk.level[0].strategy, 'r');
    assert_int_equal(c.hk.level[0].n_splits, 1);
    assert_int_equal(c.target_size, 1000);
    write_cfg("b.yaml", "n_levels: 2\nn_clusters: [10, 2]\nn_clusterz: 3\n", path, sizeof path);
    expect_fail(bconfig_load(path, &c), "b.yaml:3: unknown key n_clusterz");
    write_cfg("c.yaml", "n_levels: 3\nn_clusters: [10, 2]\n", path, sizeof path);
    expect_fail(bconfig_load(path, &c), "c.yaml:2: n_clusters has 2 values");
    write_cfg("d.yaml", "n_levels: 1\nn_clusters: [10]\nmultiplier: 0\n", path, sizeof path);
    expect_fail(bconfig_load(path, &c), "d.yaml:3: multiplier");
    write_cfg("e.yaml", "n_levels: 1\nn_clusters: [10]\nsubset_indices_path: /x.npy\n", path, sizeof path);
    expect_fail(bconfig_load(path, &c), "e.yaml:3: subset_indices_path");
    write_cfg("f.yaml", "n_levels: 1\nn_clusters: [ten]\n", path, sizeof path);
    expect_fail(bconfig_load(path, &c), "f.yaml:2: n_clusters must be an integer");
    write_cfg("g.yaml", "n_levels: 1\n", path, sizeof path);
    expect_fail(bconfig_load(path, &c), "n_clusters is missing");
}

static int setup(void **state)
{
    return scratch_setup_fixtures(state, scratch, sizeof scratch, "hkmeans", gen_dir, sizeof gen_dir, script,
                                  "gen");
}

int main(int argc, char **argv)
{
    snprintf(srcroot, sizeof srcroot, "%s", argc > 1 ? argv[1] : "tests");
    snprintf(script, sizeof script, "%s/unit/balance/hkmeans_ref.py", srcroot);
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_greedy_vs_numpy),
        cmocka_unit_test(test_greedy_gemm_exact),
        cmocka_unit_test(test_greedy_deterministic),
        cmocka_unit_test(test_greedy_duplicates),
        cmocka_unit_test(test_empty_keep_and_fixed),
        cmocka_unit_test(test_tree_and_sample_vs_numpy),
        cmocka_unit_test(test_water_level),
        cmocka_unit_test(test_sampler_invariants),
        cmocka_unit_test(test_quality_planted),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(t, setup, scratch_teardown);
}
