/* knn_vote.c — DINOv2's weighted k-NN vote (see knn_vote.h). */
#include "knn_vote.h"

#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define QUERY_BLOCK 128 /* test rows per similarity block: QUERY_BLOCK x ntrain floats (30 MB at 60,000) */

typedef struct cand {
    float sim;
    int32_t row;
} cand;

/* a ranks before b: higher similarity, then lower train row. */
static int better(const cand *a, const cand *b)
{
    return a->sim > b->sim || (a->sim == b->sim && a->row < b->row);
}

/* Min-heap on `better` (root = the worst kept candidate). */
static void sift_down(cand *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(&h[w], &h[l]))
            w = l;
        if (r < n && better(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int cand_order(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

/* The k best of sims[0..n) into top (sorted best first). */
static void top_k(const float *sims, int64_t n, int32_t k, cand *top)
{
    int32_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        cand c = {sims[j], (int32_t)j};
        if (m < k) {
            top[m++] = c;
            if (m == k)
                for (int32_t i = k / 2 - 1; i >= 0; i--)
                    sift_down(top, k, i);
        } else if (better(&c, &top[0])) {
            top[0] = c;
            sift_down(top, k, 0);
        }
    }
    qsort(top, (size_t)m, sizeof *top, cand_order);
}

/* The five classes of largest p (ties: lower class) into best[5] (-1 past nclass). */
static void best5(const double *p, int32_t nclass, int32_t *best)
{
    for (int i = 0; i < 5; i++)
        best[i] = -1;
    for (int32_t c = 0; c < nclass; c++) {
        int at = 5;
        while (at > 0 && (best[at - 1] < 0 || p[c] > p[best[at - 1]]))
            at--;
        if (at == 5)
            continue;
        memmove(best + at + 1, best + at, (size_t)(4 - at) * sizeof *best);
        best[at] = c;
    }
}

int knn_vote(const float *train, const int32_t *train_lab, int64_t ntrain, const float *test,
             const int32_t *test_lab, int64_t ntest, int32_t dim, int32_t nclass, const int32_t *ks, int nk,
             float temperature, int threads, knn_vote_result *res, int32_t *pred)
{
    if (ntrain < 1 || ntest < 0 || dim < 1 || nclass < 1)
        return lvd_fail("knn: %lld train rows, %lld test rows, dim %d, %d classes: nothing to classify",
                        (long long)ntrain, (long long)ntest, (int)dim, (int)nclass);
    if (ntrain > INT32_MAX)
        return lvd_fail("knn: %lld train rows, at most %d", (long long)ntrain, INT32_MAX);
    if (nk < 1 || nk > KNN_VOTE_MAX_KS)
        return lvd_fail("knn: %d values of k (1..%d)", nk, KNN_VOTE_MAX_KS);
    if (!(temperature > 0))
        return lvd_fail("knn: temperature must be positive");
    int32_t maxk = 0, kk[KNN_VOTE_MAX_KS];
    for (int i = 0; i < nk; i++) {
        if (ks[i] < 1)
            return lvd_fail("knn: k must be at least 1 (got %d)", (int)ks[i]);
        kk[i] = ks[i] < ntrain ? ks[i] : (int32_t)ntrain;
        if (kk[i] > maxk)
            maxk = kk[i];
        res[i].k = kk[i];
        res[i].top1 = res[i].top5 = 0;
    }
    for (int64_t j = 0; j < ntrain; j++)
        if (train_lab[j] < 0 || train_lab[j] >= nclass)
            return lvd_fail("knn: train row %lld has label %d, outside 0..%d", (long long)j, (int)train_lab[j],
                            (int)nclass - 1);
    float *sims = malloc((size_t)QUERY_BLOCK * (size_t)ntrain * sizeof *sims);
    if (!sims)
        return lvd_fail("knn: out of memory for a %d x %lld similarity block", QUERY_BLOCK, (long long)ntrain);
    int64_t top1[KNN_VOTE_MAX_KS] = {0}, top5[KNN_VOTE_MAX_KS] = {0};
    int fail = 0;
    for (int64_t at = 0; at < ntest && !fail; at += QUERY_BLOCK) {
        int64_t nb = ntest - at < QUERY_BLOCK ? ntest - at : QUERY_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)ntrain, dim, 1.0f,
                    test + (size_t)at * (size_t)dim, dim, train, dim, 0.0f, sims, (int)ntrain);
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
        {
            cand *top = malloc((size_t)maxk * sizeof *top);
            double *w = malloc((size_t)maxk * sizeof *w), *p = malloc((size_t)nclass * sizeof *p);
            if (!top || !w || !p) {
#pragma omp atomic write
                fail = 1;
            }
            int64_t my1[KNN_VOTE_MAX_KS] = {0}, my5[KNN_VOTE_MAX_KS] = {0};
#pragma omp for schedule(static)
            for (int64_t i = 0; i < nb; i++) {
                if (!top || !w || !p)
                    continue;
                top_k(sims + (size_t)i * (size_t)ntrain, ntrain, maxk, top);
                /* softmax(sim / T) over the max_k neighbours, in double, max subtracted. */
                double mx = top[0].sim / (double)temperature, z = 0;
                for (int32_t t = 0; t < maxk; t++)
                    z += (w[t] = exp(top[t].sim / (double)temperature - mx));
                for (int32_t t = 0; t < maxk; t++)
                    w[t] /= z;
                int32_t lab = test_lab[at + i];
                for (int q = 0; q < nk; q++) {
                    memset(p, 0, (size_t)nclass * sizeof *p);
                    for (int32_t t = 0; t < kk[q]; t++)
                        p[train_lab[top[t].row]] += w[t];
                    int32_t b[5];
                    best5(p, nclass, b);
                    if (pred)
                        memcpy(pred + ((size_t)q * (size_t)ntest + (size_t)(at + i)) * 5, b, sizeof b);
                    if (lab >= 0) {
                        my1[q] += b[0] == lab;
                        for (int r = 0; r < 5; r++)
                            if (b[r] == lab) {
                                my5[q]++;
                                break;
                            }
                    }
                }
            }
#pragma omp critical
            for (int q = 0; q < nk; q++) {
                top1[q] += my1[q];
                top5[q] += my5[q];
            }
            free(top);
            free(w);
            free(p);
        }
    }
    free(sims);
    if (fail)
        return lvd_fail("knn: out of memory for the per-thread vote buffers");
    for (int q = 0; q < nk; q++) {
        res[q].top1 = top1[q];
        res[q].top5 = top5[q];
    }
    return 0;
}
