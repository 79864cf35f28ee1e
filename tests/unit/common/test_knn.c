/* test_knn.c — k-NN search through FAISS (common/knn.c over common/faiss_c_impl.cpp).
 *
 * Exact search is checked against brute force computed here in double precision (ids map back to the
 * vectors, similarities match, ties may come in any order, k > n pads with -1); IVF on clustered data must find
 * >= 90% of the brute-force neighbours (measured here and by knn_recall, which must agree); a saved index
 * loads back and answers the same; bad input fails with a message naming what and where, including FAISS's
 * own message for a factory string it rejects. */
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
#include <unistd.h>

#include "err.h"
#include "knn.h"

static char scratch[64];

/* ---------------------------------------------------------------------------------------------------- */
/* data */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Standard normal (Box-Muller). */
static double gauss(void)
{
    double u = ((double)(rng() >> 11) + 0.5) * 0x1.0p-53, v = (double)(rng() >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void normalise(float *v, int32_t d)
{
    double s = 0;
    for (int32_t j = 0; j < d; j++)
        s += (double)v[j] * v[j];
    s = sqrt(s);
    for (int32_t j = 0; j < d; j++)
        v[j] = (float)(v[j] / s);
}

/* n random unit vectors. */
static float *random_unit(int64_t n, int32_t d)
{
    float *x = malloc((size_t)n * (size_t)d * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) {
        for (int32_t j = 0; j < d; j++)
            x[i * d + j] = (float)gauss();
        normalise(x + i * d, d);
    }
    return x;
}

/* n unit vectors around c random centres (noise sigma per coordinate). */
static float *clustered_unit(int64_t n, int32_t d, int32_t c, double sigma)
{
    float *ctr = random_unit(c, d);
    float *x = malloc((size_t)n * (size_t)d * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) {
        const float *m = ctr + (size_t)(rng() % (uint64_t)c) * (size_t)d;
        for (int32_t j = 0; j < d; j++)
            x[i * d + j] = (float)(m[j] + sigma * gauss());
        normalise(x + i * d, d);
    }
    free(ctr);
    return x;
}

static double dot(const float *a, const float *b, int32_t d)
{
    double s = 0;
    for (int32_t j = 0; j < d; j++)
        s += (double)a[j] * b[j];
    return s;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Brute force: the k largest similarities of q against x (descending) into top[0..k). */
static void brute_topk(const float *x, int64_t n, const float *q, int32_t d, int32_t k, double *top)
{
    double *s = malloc((size_t)n * sizeof *s);
    assert_non_null(s);
    for (int64_t i = 0; i < n; i++)
        s[i] = dot(q, x + i * d, d);
    qsort(s, (size_t)n, sizeof *s, cmp_desc);
    for (int32_t j = 0; j < k; j++)
        top[j] = s[j];
    free(s);
}

/* Brute-force recall of (ids of positions in x) for queries q: a result counts when its similarity reaches
 * the k-th exact one (so ties count whichever tied vector was returned). */
static double brute_recall(const float *x, int64_t n, const float *q, int64_t nq, int32_t d, int32_t k,
                           const int64_t *ids)
{
    double *top = malloc((size_t)k * sizeof *top);
    assert_non_null(top);
    int64_t hit = 0;
    for (int64_t i = 0; i < nq; i++) {
        brute_topk(x, n, q + i * d, d, k, top);
        for (int32_t j = 0; j < k; j++) {
            int64_t id = ids[i * k + j];
            if (id >= 0 && id < n && dot(q + i * d, x + id * d, d) >= top[k - 1] - 1e-6)
                hit++;
        }
    }
    free(top);
    return (double)hit / (double)(nq * k);
}

static knn_index *build(const float *x, int64_t n, int32_t d, const knn_opts *o, const int64_t *ids)
{
    knn_index *ix = NULL;
    assert_int_equal(knn_create(d, n, o, &ix), 0);
    if (knn_needs_training(ix))
        assert_int_equal(knn_train(ix, x, n), 0);
    int64_t *seq = NULL;
    if (!ids) {
        seq = malloc((size_t)n * sizeof *seq);
        assert_non_null(seq);
        for (int64_t i = 0; i < n; i++)
            seq[i] = i;
        ids = seq;
    }
    assert_int_equal(knn_add(ix, x, ids, n), 0);
    free(seq);
    assert_int_equal(knn_count(ix), n);
    return ix;
}

static void path_in(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", scratch, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* ---------------------------------------------------------------------------------------------------- */
/* tests */

/* Exact search equals brute force: similarities per rank, ids mapped back to the right vectors, every id
 * distinct and inside the brute-force top k (up to ties); batches smaller than the query count. */
static void test_exact_equals_brute_force(void **state)
{
    (void)state;
    const int32_t d = 48, k = 10;
    const int64_t n = 700, nq = 60;
    float *x = random_unit(n, d);
    /* Some queries are indexed vectors themselves (their own similarity is 1), some are duplicated rows. */
    float *q = random_unit(nq, d);
    for (int64_t i = 0; i < 10; i++)
        memcpy(q + i * d, x + (i * 37) * d, (size_t)d * sizeof *q);
    memcpy(x + 5 * d, x + 6 * d, (size_t)d * sizeof *x); /* rows 5 and 6 tie exactly */
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    assert_non_null(ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = 1000000 + 7 * i; /* the caller's ids, not positions */
    knn_opts o;
    knn_opts_default(&o);
    o.batch = 16; /* several add and search batches */
    knn_index *ix = build(x, n, d, &o, ids);
    assert_int_equal(knn_needs_training(ix), 0);
    assert_int_equal(knn_dim(ix), d);
    char desc[512];
    knn_describe(ix, desc, sizeof desc);
    assert_non_null(strstr(desc, "IndexFlatIP (exact)"));
    assert_non_null(strstr(desc, "700 vectors"));

    float *sims = malloc((size_t)(nq * k) * sizeof *sims);
    int64_t *res = malloc((size_t)(nq * k) * sizeof *res);
    double top[10];
    assert_int_equal(knn_search(ix, q, nq, k, sims, res), 0);
    for (int64_t i = 0; i < nq; i++) {
        brute_topk(x, n, q + i * d, d, k, top);
        for (int32_t j = 0; j < k; j++) {
            int64_t id = res[i * k + j];
            assert_true(id >= 1000000 && (id - 1000000) % 7 == 0);
            int64_t pos = (id - 1000000) / 7;
            assert_true(pos < n);
            double s = dot(q + i * d, x + pos * d, d);
            assert_true(fabs(s - sims[i * k + j]) < 1e-4);       /* the id carries its own similarity */
            assert_true(fabs(top[j] - sims[i * k + j]) < 1e-4);  /* rank j has the j-th best similarity */
            for (int32_t jj = 0; jj < j; jj++)
                assert_true(res[i * k + jj] != id);
        }
        if (i < 10) {
            assert_int_equal(res[i * k], 1000000 + 7 * (i * 37)); /* a query that is row i*37 finds it first */
            assert_true(fabsf(sims[i * k] - 1.0f) < 1e-5f);
        }
    }
    /* A query equal to tied rows 5 and 6 gets both in its first two places, in either order. */
    assert_int_equal(knn_search(ix, x + 5 * d, 1, k, sims, res), 0);
    int64_t a = res[0], b = res[1];
    assert_true((a == 1000035 && b == 1000042) || (a == 1000042 && b == 1000035));
    knn_free(ix);
    free(x);
    free(q);
    free(ids);
    free(sims);
    free(res);
}

/* k larger than the indexed set: all n come back, then -1 ids with -inf similarity. */
static void test_k_larger_than_n(void **state)
{
    (void)state;
    const int32_t d = 16, k = 8;
    const int64_t n = 5;
    float *x = random_unit(n, d);
    knn_index *ix = build(x, n, d, NULL, NULL);
    float sims[8];
    int64_t res[8];
    assert_int_equal(knn_search(ix, x + 2 * d, 1, k, sims, res), 0);
    int seen[5] = {0};
    for (int32_t j = 0; j < 5; j++) {
        assert_true(res[j] >= 0 && res[j] < n);
        seen[res[j]]++;
        if (j > 0)
            assert_true(sims[j] <= sims[j - 1]);
    }
    for (int32_t i = 0; i < 5; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(res[0], 2);
    for (int32_t j = 5; j < k; j++) {
        assert_int_equal(res[j], -1);
        assert_true(isinf(sims[j]) && sims[j] < 0);
    }
    knn_free(ix);
    free(x);
}

/* Beyond exact_max: an IVF index, named by knn_describe, with recall >= 0.9 on clustered data, as measured
 * here against brute force and by knn_recall (which must agree). */
static void test_ivf_recall(void **state)
{
    (void)state;
    const int32_t d = 32, k = 10;
    const int64_t n = 20000, nq = 200;
    float *x = clustered_unit(n, d, 50, 0.08);
    knn_opts o;
    knn_opts_default(&o);
    o.exact_max = 1000;
    knn_index *ix = NULL;
    assert_int_equal(knn_create(d, n, &o, &ix), 0);
    assert_int_equal(knn_needs_training(ix), 1);
    /* Not trained yet: adding or searching fails and says why. */
    int64_t id0 = 0;
    float s0[10];
    int64_t r0[10];
    assert_int_equal(knn_add(ix, x, &id0, 1), -1);
    assert_non_null(strstr(lvd_errmsg(), "not trained"));
    assert_int_equal(knn_search(ix, x, 1, k, s0, r0), -1);
    assert_non_null(strstr(lvd_errmsg(), "not trained"));
    knn_free(ix);

    ix = build(x, n, d, &o, NULL);
    char desc[512];
    knn_describe(ix, desc, sizeof desc);
    assert_non_null(strstr(desc, "IVF"));
    assert_non_null(strstr(desc, ",Flat nprobe "));
    assert_non_null(strstr(desc, "20000 vectors"));
    assert_null(strstr(desc, "exact"));

    /* Queries: indexed vectors (the k-NN graph case) and fresh ones from the same distribution. */
    float *q = malloc((size_t)(nq * d) * sizeof *q);
    assert_non_null(q);
    for (int64_t i = 0; i < nq / 2; i++)
        memcpy(q + i * d, x + (i * 97) * d, (size_t)d * sizeof *q);
    float *fresh = clustered_unit(nq / 2, d, 50, 0.08);
    memcpy(q + (nq / 2) * d, fresh, (size_t)(nq / 2 * d) * sizeof *q);
    free(fresh);
    float *sims = malloc((size_t)(nq * k) * sizeof *sims);
    int64_t *res = malloc((size_t)(nq * k) * sizeof *res);
    assert_int_equal(knn_search(ix, q, nq, k, sims, res), 0);
    double mine = brute_recall(x, n, q, nq, d, k, res);
    double rec = -1;
    assert_int_equal(knn_recall(ix, x, n, q, nq, k, &rec), 0);
    print_message("# IVF recall@%d: %.4f (brute force here), %.4f (knn_recall); %s\n", k, mine, rec, desc);
    assert_true(mine >= 0.9);
    assert_true(rec >= 0.9);
    assert_true(fabs(mine - rec) < 0.02);
    knn_describe(ix, desc, sizeof desc);
    assert_non_null(strstr(desc, "recall@10"));

    /* nprobe 1 of many lists finds fewer neighbours: the recall measure can fail. */
    knn_opts o1 = o;
    o1.nprobe = 1;
    knn_index *ix1 = build(x, n, d, &o1, NULL);
    double rec1 = -1;
    assert_int_equal(knn_recall(ix1, x, n, q, nq, k, &rec1), 0);
    assert_true(rec1 < rec);
    knn_free(ix1);

    knn_free(ix);
    free(x);
    free(q);
    free(sims);
    free(res);
}

/* Row i of (a, as) against row i of (b, bs), k per row: similarities agree per rank within tol, and an id of a
 * missing from b's row is tied (within tol) with b's k-th similarity; -1 padding agrees. Returns the number
 * of result ids that differ only by such ties. */
static int64_t same_results(const int64_t *a, const float *as, const int64_t *b, const float *bs, int64_t nq,
                            int32_t k, double tol)
{
    int64_t swapped = 0;
    for (int64_t i = 0; i < nq; i++)
        for (int32_t j = 0; j < k; j++) {
            size_t o = (size_t)(i * k + j);
            assert_true((a[o] < 0) == (b[o] < 0));
            if (a[o] < 0)
                continue;
            assert_true(fabs((double)as[o] - (double)bs[o]) <= tol);
            int found = 0;
            for (int32_t m = 0; m < k && !found; m++)
                found = b[i * k + m] == a[o];
            if (!found) {
                assert_true(fabs((double)as[o] - (double)bs[i * k + k - 1]) <= tol);
                swapped++;
            }
        }
    return swapped;
}

/* The list-major scan of IVF-Flat (knn.h) answers as FAISS's own IVF scan does: same neighbours and
 * similarities for a large batch (lists searched by BLAS, several sub-batches), for single queries, with the
 * caller's ids, and with -1 padding when the probed lists hold fewer than k vectors. */
static void test_list_major_equals_faiss_scan(void **state)
{
    (void)state;
    const int32_t d = 32, k = 12;
    const int64_t n = 20000;
    float *x = clustered_unit(n, d, 40, 0.1);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    assert_non_null(ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = 1000 + 7 * i;
    knn_opts o;
    knn_opts_default(&o);
    o.factory = "IVF64,Flat";
    o.nprobe = 4;
    o.batch = 3000;
    knn_opts of = o;
    of.faiss_scan = 1;
    knn_index *lm = build(x, n, d, &o, ids), *fs = build(x, n, d, &of, ids);
    float *s1 = malloc((size_t)(n * k) * sizeof *s1), *s2 = malloc((size_t)(n * k) * sizeof *s2);
    int64_t *r1 = malloc((size_t)(n * k) * sizeof *r1), *r2 = malloc((size_t)(n * k) * sizeof *r2);
    assert_non_null(s1);
    assert_non_null(s2);
    assert_non_null(r1);
    assert_non_null(r2);
    assert_int_equal(knn_search(lm, x, n, k, s1, r1), 0);
    assert_int_equal(knn_search(fs, x, n, k, s2, r2), 0);
    int64_t swapped = same_results(r1, s1, r2, s2, n, k, 1e-5);
    print_message("# list-major vs FAISS scan: %" PRId64 " queries x %" PRId32 ", %" PRId64 " results differ by ties\n",
                  n, k, swapped);
    assert_true(swapped < n * k / 1000);
    /* The ids are the caller's and name the right vectors; every query finds itself first. */
    for (int64_t i = 0; i < n; i++) {
        int64_t id = r1[i * k];
        assert_true(id >= 1000 && (id - 1000) % 7 == 0);
        assert_true(fabs(dot(x + i * d, x + ((id - 1000) / 7) * d, d) - (double)s1[i * k]) < 1e-5);
        assert_true(s1[i * k] > 0.9999f);
    }
    /* One query at a time (each list scanned for one query). */
    for (int64_t i = 0; i < 20; i++) {
        float s[12];
        int64_t r[12];
        assert_int_equal(knn_search(lm, x + (i * 911) * d, 1, k, s, r), 0);
        same_results(r, s, r2 + (i * 911) * k, s2 + (i * 911) * k, 1, k, 1e-5);
    }
    /* k beyond what one probed list holds: both pad with -1. */
    knn_opts o1 = o, of1 = of;
    o1.nprobe = of1.nprobe = 1;
    knn_index *lm1 = build(x, n, d, &o1, ids), *fs1 = build(x, n, d, &of1, ids);
    const int32_t kb = 2000;
    float *b1 = malloc((size_t)(50 * kb) * sizeof *b1), *b2 = malloc((size_t)(50 * kb) * sizeof *b2);
    int64_t *i1 = malloc((size_t)(50 * kb) * sizeof *i1), *i2 = malloc((size_t)(50 * kb) * sizeof *i2);
    assert_int_equal(knn_search(lm1, x, 50, kb, b1, i1), 0);
    assert_int_equal(knn_search(fs1, x, 50, kb, b2, i2), 0);
    same_results(i1, b1, i2, b2, 50, kb, 1e-5);
    int64_t pad = 0;
    for (int64_t i = 0; i < 50 * kb; i++)
        pad += i1[i] < 0 && isinf(b1[i]) && b1[i] < 0;
    assert_true(pad > 0);
    knn_free(lm1);
    knn_free(fs1);
    free(b1);
    free(b2);
    free(i1);
    free(i2);
    knn_free(lm);
    knn_free(fs);
    free(x);
    free(ids);
    free(s1);
    free(s2);
    free(r1);
    free(r2);
}

/* Save, load, same answers; IVF parameters come back from the file. */
static void test_save_load(void **state)
{
    (void)state;
    const int32_t d = 24, k = 7;
    const int64_t n = 4000, nq = 50;
    float *x = clustered_unit(n, d, 20, 0.1);
    knn_opts o;
    knn_opts_default(&o);
    o.factory = "IVF32,Flat";
    o.nprobe = 5;
    knn_index *ix = build(x, n, d, &o, NULL);
    knn_index *ex = build(x, n, d, NULL, NULL);
    float *s1 = malloc((size_t)(nq * k) * sizeof *s1), *s2 = malloc((size_t)(nq * k) * sizeof *s2);
    int64_t *r1 = malloc((size_t)(nq * k) * sizeof *r1), *r2 = malloc((size_t)(nq * k) * sizeof *r2);
    char path[128], desc[512];
    knn_index *back = NULL;
    knn_index *idx[2] = {ix, ex};
    for (int t = 0; t < 2; t++) {
        path_in(path, sizeof path, t == 0 ? "ivf.faiss" : "flat.faiss");
        assert_int_equal(knn_search(idx[t], x, nq, k, s1, r1), 0);
        assert_int_equal(knn_save(idx[t], path), 0);
        assert_int_equal(access(path, R_OK), 0);
        assert_int_equal(knn_load(path, d, &back), 0);
        assert_int_equal(knn_count(back), n);
        assert_int_equal(knn_dim(back), d);
        assert_int_equal(knn_needs_training(back), 0);
        assert_int_equal(knn_search(back, x, nq, k, s2, r2), 0);
        assert_memory_equal(r1, r2, (size_t)(nq * k) * sizeof *r1);
        assert_memory_equal(s1, s2, (size_t)(nq * k) * sizeof *s1);
        knn_describe(back, desc, sizeof desc);
        if (t == 0) {
            assert_non_null(strstr(desc, "IVF32"));
            assert_non_null(strstr(desc, "nprobe 5"));
        } else {
            assert_non_null(strstr(desc, "IndexFlatIP (exact)"));
        }
        /* The loaded index takes new vectors with new ids. */
        int64_t nid = 99999;
        assert_int_equal(knn_add(back, x + 3 * d, &nid, 1), 0);
        assert_int_equal(knn_search(back, x + 3 * d, 1, 2, s2, r2), 0);
        assert_true((r2[0] == 3 && r2[1] == nid) || (r2[0] == nid && r2[1] == 3));
        knn_free(back);
        back = NULL;
    }
    knn_free(ix);
    knn_free(ex);
    free(x);
    free(s1);
    free(s2);
    free(r1);
    free(r2);
}

/* Bad input: each failure says what and where. */
static void test_errors(void **state)
{
    (void)state;
    const int32_t d = 16;
    float *x = random_unit(100, d);
    knn_index *ix = NULL;
    char path[128];

    /* A factory string FAISS rejects: FAISS's own message, after ours naming the string. */
    knn_opts o;
    knn_opts_default(&o);
    o.factory = "IVF16,NoSuchCodec";
    assert_int_equal(knn_create(d, 100, &o, &ix), -1);
    assert_null(ix);
    const char *m = lvd_errmsg();
    print_message("# %s\n", m);
    assert_non_null(strstr(m, "\"IVF16,NoSuchCodec\""));
    assert_non_null(strstr(m, "could not parse"));

    /* Bad dimension, bad k. */
    assert_int_equal(knn_create(0, 100, NULL, &ix), -1);
    assert_non_null(strstr(lvd_errmsg(), "dimension 0"));
    ix = build(x, 100, d, NULL, NULL);
    float s[4];
    int64_t r[4];
    assert_int_equal(knn_search(ix, x, 1, 0, s, r), -1);
    assert_non_null(strstr(lvd_errmsg(), "k must be positive"));

    /* Loading: another dimension than expected, a missing file, a file that is not an index. */
    path_in(path, sizeof path, "d16.faiss");
    assert_int_equal(knn_save(ix, path), 0);
    knn_free(ix);
    ix = NULL;
    assert_int_equal(knn_load(path, 32, &ix), -1);
    assert_null(ix);
    m = lvd_errmsg();
    assert_non_null(strstr(m, path));
    assert_non_null(strstr(m, "dimension 16, expected 32"));
    assert_int_equal(knn_load(path, 0, &ix), 0); /* 0: any dimension */
    assert_int_equal(knn_dim(ix), 16);
    knn_free(ix);
    ix = NULL;

    path_in(path, sizeof path, "missing.faiss");
    assert_int_equal(knn_load(path, d, &ix), -1);
    assert_non_null(strstr(lvd_errmsg(), path));
    assert_non_null(strstr(lvd_errmsg(), "No such file"));

    path_in(path, sizeof path, "garbage.faiss");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("this is not a FAISS index, just some text of reasonable length\n", f);
    fclose(f);
    assert_int_equal(knn_load(path, d, &ix), -1);
    assert_null(ix);
    m = lvd_errmsg();
    print_message("# %s\n", m);
    assert_non_null(strstr(m, path));
    assert_non_null(strstr(m, "faiss: reading index"));

    /* Saving into a directory that does not exist. */
    ix = build(x, 100, d, NULL, NULL);
    path_in(path, sizeof path, "no/such/dir/x.faiss");
    assert_int_equal(knn_save(ix, path), -1);
    assert_non_null(strstr(lvd_errmsg(), path));
    knn_free(ix);

    /* A factory index that does not take ids says so when adding (FAISS's message). */
    o.factory = "HNSW8";
    assert_int_equal(knn_create(d, 100, &o, &ix), 0);
    int64_t id = 1;
    assert_int_equal(knn_add(ix, x, &id, 1), -1);
    m = lvd_errmsg();
    print_message("# %s\n", m);
    assert_non_null(strstr(m, "\"HNSW8\""));
    assert_non_null(strstr(m, "add_with_ids"));
    knn_free(ix);
    free(x);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(scratch, sizeof scratch, "knn");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_equals_brute_force),
        cmocka_unit_test(test_k_larger_than_n),
        cmocka_unit_test(test_ivf_recall),
        cmocka_unit_test(test_list_major_equals_faiss_scan),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
