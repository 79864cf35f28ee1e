/* linear.c — the grid of linear classifiers: see linear.h. */
#include "linear.h"

#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static int all_finite(const float *v, int64_t m)
{
    for (int64_t i = 0; i < m; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* Z (n, Q * C) = x W^T + b. */
static void logits(const float *x, int64_t n, int32_t F, int32_t QC, const float *W, const float *b, float *Z)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, QC, F, 1.0f, x, F, W, F, 0.0f, Z, QC);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int32_t j = 0; j < QC; j++)
            Z[i * QC + j] += b[j];
}

int linear_fit(const float *x, const int32_t *y, int64_t n, int32_t F, int32_t C, const linear_opts *o, float *W,
               float *b, linear_fit_stats *st)
{
    if (n < 1 || F < 1 || C < 2)
        return lvd_fail("linear: need rows, features and at least 2 classes (got %" PRId64 " rows, %" PRId32
                        " features, %" PRId32 " classes)", n, F, C);
    if (o->n_lr < 1 || o->n_lr > LINEAR_MAX_LRS || o->steps < 1 || !(o->momentum >= 0 && o->momentum < 1) ||
        !(o->weight_decay >= 0))
        return lvd_fail("linear: bad options (%" PRId32 " learning rates, %" PRId32 " steps, momentum %g, weight "
                        "decay %g)", o->n_lr, o->steps, o->momentum, o->weight_decay);
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= C)
            return lvd_fail("linear: row %" PRId64 " has label %" PRId32 ", outside [0, %" PRId32 ")", i, y[i], C);
    const int32_t Q = o->n_lr, QC = Q * C;
    size_t nw = (size_t)QC * (size_t)F;
    float *Z = malloc((size_t)n * QC * sizeof *Z), *dW = malloc(nw * sizeof *dW);
    float *bufW = calloc(nw, sizeof *bufW), *bufb = calloc((size_t)QC, sizeof *bufb);
    double *rowloss = malloc((size_t)n * Q * sizeof *rowloss), *db = malloc((size_t)QC * sizeof *db);
    if (!Z || !dW || !bufW || !bufb || !rowloss || !db) {
        free(Z), free(dW), free(bufW), free(bufb), free(rowloss), free(db);
        return lvd_fail("linear: out of memory for %" PRId64 " rows x %" PRId32 " logits", n, QC);
    }
    if (o->threads > 0)
        openblas_set_num_threads(o->threads);
    memset(W, 0, nw * sizeof *W);
    memset(b, 0, (size_t)QC * sizeof *b);
    linear_fit_stats s;
    memset(&s, 0, sizeof s);
    const double inv_n = 1.0 / (double)n;
    for (int32_t t = 0; t < o->steps; t++) {
        logits(x, n, F, QC, W, b, Z);
        /* Z becomes the gradient of the mean cross-entropy with respect to the logits: (softmax - onehot) / n */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            for (int32_t q = 0; q < Q; q++) {
                float *z = Z + i * QC + (int64_t)q * C;
                double mx = z[0];
                for (int32_t c = 1; c < C; c++)
                    mx = z[c] > mx ? z[c] : mx;
                double se = 0;
                for (int32_t c = 0; c < C; c++)
                    se += exp((double)z[c] - mx);
                double lse = mx + log(se);
                rowloss[i * Q + q] = lse - (double)z[y[i]];
                for (int32_t c = 0; c < C; c++)
                    z[c] = (float)((exp((double)z[c] - lse) - (c == y[i] ? 1.0 : 0.0)) * inv_n);
            }
        for (int32_t q = 0; q < Q; q++) {
            double l = 0;
            for (int64_t i = 0; i < n; i++)
                l += rowloss[i * Q + q];
            s.loss[q] = l * inv_n;
            if (!isfinite(s.loss[q]))
                s.diverged[q] = 1;
        }
        for (int32_t j = 0; j < QC; j++)
            db[j] = 0;
        for (int64_t i = 0; i < n; i++) /* row order: one summation order */
            for (int32_t j = 0; j < QC; j++)
                db[j] += Z[i * QC + j];
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, QC, F, (int)n, 1.0f, Z, QC, x, F, 0.0f, dW, F);
        double lr_t = 0.5 * (1.0 + cos(M_PI * (double)t / (double)o->steps));
        for (int32_t q = 0; q < Q; q++) {
            float *w = W + (size_t)q * C * F, *bw = bufW + (size_t)q * C * F, *g = dW + (size_t)q * C * F;
            float *bb = b + (size_t)q * C, *bufq = bufb + (size_t)q * C;
            if (!s.diverged[q]) {
                const float lr = (float)(o->lr[q] * lr_t), m = (float)o->momentum, wd = (float)o->weight_decay;
                for (size_t e = 0; e < (size_t)C * F; e++) {
                    float gg = g[e] + wd * w[e];
                    bw[e] = t == 0 ? gg : m * bw[e] + gg;
                    w[e] -= lr * bw[e];
                }
                for (int32_t c = 0; c < C; c++) {
                    float gg = (float)db[(size_t)q * C + c] + wd * bb[c];
                    bufq[c] = t == 0 ? gg : m * bufq[c] + gg;
                    bb[c] -= lr * bufq[c];
                }
                if (!all_finite(w, (int64_t)C * F) || !all_finite(bb, C))
                    s.diverged[q] = 1;
            }
            if (s.diverged[q]) { /* 0 and left there: its logits stay 0 and its gradient finite */
                memset(w, 0, (size_t)C * F * sizeof *w);
                memset(bw, 0, (size_t)C * F * sizeof *bw);
                memset(bb, 0, (size_t)C * sizeof *bb);
                memset(bufq, 0, (size_t)C * sizeof *bufq);
            }
        }
    }
    /* A classifier whose last loss is above ln C, the loss of the zero classifier it started from, did not
     * learn: its learning rate is too large (cross-entropy's gradient is bounded, so a too large rate makes the
     * parameters oscillate with a growing amplitude long before they overflow). */
    for (int32_t q = 0; q < Q; q++)
        if (!s.diverged[q] && !(s.loss[q] <= log((double)C))) {
            s.diverged[q] = 1;
            memset(W + (size_t)q * C * F, 0, (size_t)C * F * sizeof *W);
            memset(b + (size_t)q * C, 0, (size_t)C * sizeof *b);
        }
    if (st)
        *st = s;
    free(Z), free(dW), free(bufW), free(bufb), free(rowloss), free(db);
    return 0;
}

int linear_correct(const float *x, const int32_t *y, int64_t n, int32_t F, int32_t C, int32_t nq, const float *W,
                   const float *b, int64_t *correct)
{
    const int32_t QC = nq * C;
    for (int32_t q = 0; q < nq; q++)
        correct[q] = 0;
    if (n == 0)
        return 0;
    float *Z = malloc((size_t)n * QC * sizeof *Z);
    if (!Z)
        return lvd_fail("linear: out of memory for %" PRId64 " rows x %" PRId32 " logits", n, QC);
    logits(x, n, F, QC, W, b, Z);
    for (int64_t i = 0; i < n; i++)
        for (int32_t q = 0; q < nq; q++) {
            const float *z = Z + i * QC + (int64_t)q * C;
            int32_t a = 0;
            for (int32_t c = 1; c < C; c++)
                if (z[c] > z[a])
                    a = c;
            correct[q] += y[i] >= 0 && a == y[i];
        }
    free(Z);
    return 0;
}
