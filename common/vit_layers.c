/* vit_layers.c — see vit_layers.h. */
#include "vit_layers.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* ---- vectorisable exp and erf ------------------------------------------------------------------------ */

/* exp(x) by range reduction x = n ln2 + r, |r| <= ln2 / 2, and a degree-7 Taylor polynomial of exp(r)
 * (truncation error r^8 / 8! < 6e-9 relative). Branch-free so loops over it vectorise. Inputs are clamped
 * to [-87, 88]: exp(-87) ~ 1.6e-38 stands in for 0, which no softmax or sigmoid here can tell apart. */
static inline float exp_inline(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* Round x / ln2 to nearest with the 1.5 * 2^23 trick (no floorf: plain SSE2 has no vector rounding). */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f; /* ln2 split in a high part exact in float ... */
    r = r - n * 1.42860682030941723212e-6f; /* ... and the rest */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}

/* erf(x) by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), odd-extended. */
static inline float erf_inline(float x)
{
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * exp_inline(-ax * ax);
    return x < 0.0f ? -y : y;
}

float vit_expf(float x) { return exp_inline(x); }
float vit_erff(float x) { return erf_inline(x); }

/* Sum and max of n floats with 8 independent lanes, so the loops vectorise without reassociation flags; the
 * order of additions is fixed, so results are deterministic. */
static inline float sum_lanes(const float *x, int64_t n)
{
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += x[j + k];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++)
        s += x[j];
    return s;
}

/* sum over j of (x[j] - m)^2, and of a[j] * b[j], in the same lane order. */
static inline float sumsq_dev_lanes(const float *x, float m, int64_t n)
{
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (x[j + k] - m) * (x[j + k] - m);
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++)
        s += (x[j] - m) * (x[j] - m);
    return s;
}

static inline float dot_lanes(const float *a, const float *b, int64_t n)
{
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += a[j + k] * b[j + k];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++)
        s += a[j] * b[j];
    return s;
}

static inline float max_lanes(const float *x, int64_t n)
{
    float acc[8];
    for (int k = 0; k < 8; k++)
        acc[k] = x[0];
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] = x[j + k] > acc[k] ? x[j + k] : acc[k];
    float m = acc[0];
    for (int k = 1; k < 8; k++)
        m = acc[k] > m ? acc[k] : m;
    for (; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

/* ---- linear -------------------------------------------------------------------------------------------- */

/* Output channels per SGEMM of linear_forward: a multiple of the SGEMM kernels' register tiles (16 floats) that
 * divides vit_small's and vit_base's widths (384 ... 3072), so the wide layers (qkv, fc1) give a few items per
 * image even when the batch is smaller than the thread count. Each block repacks the sample's input rows, so
 * smaller blocks cost more: 192 measured a few percent slower than 384 at batch 32 (benchmarks/RESULTS.md). */
#define LINEAR_COL_BLOCK 384

void linear_forward(float *out, const float *inp, const float *w, const float *b, int64_t bsz, int64_t t,
                    int64_t in, int64_t out_ch)
{
    /* Batch invariance (vit.h). OpenBLAS's summation order for an output element depends on the shape of the
     * call and on where the element falls in it (edge kernels for the last rows and columns, the split
     * between its threads), so one (B*T)-row SGEMM would make a sample's rows depend on the batch size, on
     * the sample's position and on the thread count. Instead each (sample, block of LINEAR_COL_BLOCK output
     * channels) is one single-threaded SGEMM (called inside the parallel region) whose shape depends only on
     * (t, in, out_ch): an element is always computed by the same call at the same place in it. Items are
     * independent, so which thread runs one does not change its result, and a dynamic schedule balances
     * them. The cost is OpenBLAS repacking w once per sample instead of once per call: about 2% of the
     * forward throughput at batch 32 (benchmarks/RESULTS.md). */
    int64_t nblk = (out_ch + LINEAR_COL_BLOCK - 1) / LINEAR_COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < bsz * nblk; it++) {
        int64_t s = it / nblk, c0 = it % nblk * LINEAR_COL_BLOCK;
        int64_t cw = out_ch - c0 < LINEAR_COL_BLOCK ? out_ch - c0 : LINEAR_COL_BLOCK;
        float *o = out + s * t * out_ch + c0;
        if (b)
            for (int64_t i = 0; i < t; i++)
                memcpy(o + i * out_ch, b + c0, (size_t)cw * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)cw, (int)in, 1.0f, inp + s * t * in,
                    (int)in, w + c0 * in, (int)in, b ? 1.0f : 0.0f, o, (int)out_ch);
    }
}

/* db (C) += column sums of m (N, C); threads own disjoint column ranges, so no reduction order varies. */
static void colsum_add(float *db, const float *m, int64_t n, int64_t c)
{
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t c0 = c * id / nt, c1 = c * (id + 1) / nt;
        for (int64_t i = 0; i < n; i++) {
            const float *row = m + i * c;
            for (int64_t j = c0; j < c1; j++)
                db[j] += row[j];
        }
    }
}

void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                     int64_t n, int64_t in, int64_t out_ch)
{
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out_ch, 1.0f, dout,
                    (int)out_ch, w, (int)in, 1.0f, dinp, (int)in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out_ch, (int)in, (int)n, 1.0f, dout,
                    (int)out_ch, inp, (int)in, 1.0f, dw, (int)in);
    if (db)
        colsum_add(db, dout, n, out_ch);
}

/* ---- layernorm ------------------------------------------------------------------------------------------ */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                       int64_t n, int64_t c)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        float m = sum_lanes(x, c) / (float)c;
        float v = sumsq_dev_lanes(x, m, c);
        float rs = 1.0f / sqrtf(v / (float)c + VIT_LN_EPS);
        float *o = out + i * c;
        for (int64_t j = 0; j < c; j++)
            o[j] = (x[j] - m) * rs * w[j] + b[j];
        if (mean)
            mean[i] = m;
        if (rstd)
            rstd[i] = rs;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int64_t n, int64_t c)
{
    /* Input gradient row by row (independent rows). */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c, *dy = dout + i * c;
        float m = mean[i], rs = rstd[i];
        float sum_g = 0.0f, sum_gx = 0.0f;
        for (int64_t j = 0; j < c; j++) {
            float g = dy[j] * w[j];
            sum_g += g;
            sum_gx += g * (x[j] - m) * rs;
        }
        sum_g /= (float)c;
        sum_gx /= (float)c;
        float *dx = dinp + i * c;
        for (int64_t j = 0; j < c; j++) {
            float xh = (x[j] - m) * rs;
            dx[j] += (dy[j] * w[j] - sum_g - xh * sum_gx) * rs;
        }
    }
    /* Parameter gradients: threads own column ranges. */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t c0 = c * id / nt, c1 = c * (id + 1) / nt;
        for (int64_t i = 0; i < n; i++) {
            const float *x = inp + i * c, *dy = dout + i * c;
            float m = mean[i], rs = rstd[i];
            for (int64_t j = c0; j < c1; j++) {
                dw[j] += dy[j] * (x[j] - m) * rs;
                db[j] += dy[j];
            }
        }
    }
}

/* ---- activations ----------------------------------------------------------------------------------------- */

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

/* The exp/erf-heavy loops get an AVX2 clone chosen at load time (GCC function multiversioning): 8 lanes
 * instead of SSE2's 4. Results of the two clones may differ in the last bit; a given machine always runs
 * the same one, so runs stay deterministic. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SIMD_CLONES
#endif

SIMD_CLONES static void gelu_fwd_range(float *out, const float *inp, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erf_inline(x * INV_SQRT2));
    }
}

SIMD_CLONES static void gelu_bwd_range(float *dinp, const float *dout, const float *inp, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erf_inline(x * INV_SQRT2));
        float pdf = INV_SQRT_2PI * exp_inline(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

SIMD_CLONES static void swiglu_fwd_row(float *o, const float *x1, const float *x2, int64_t h)
{
    for (int64_t j = 0; j < h; j++) {
        float a = x1[j];
        o[j] = a / (1.0f + exp_inline(-a)) * x2[j];
    }
}

SIMD_CLONES static void swiglu_bwd_row(float *d1, float *d2, const float *dy, const float *x1, const float *x2,
                                       int64_t h)
{
    for (int64_t j = 0; j < h; j++) {
        float a = x1[j];
        float sig = 1.0f / (1.0f + exp_inline(-a));
        d2[j] += dy[j] * a * sig;
        d1[j] += dy[j] * x2[j] * sig * (1.0f + a * (1.0f - sig));
    }
}

void gelu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t i0 = n * id / nt, i1 = n * (id + 1) / nt;
        gelu_fwd_range(out + i0, inp + i0, i1 - i0);
    }
}

void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t i0 = n * id / nt, i1 = n * (id + 1) / nt;
        gelu_bwd_range(dinp + i0, dout + i0, inp + i0, i1 - i0);
    }
}

void swiglu_forward(float *out, const float *inp, int64_t n, int64_t h)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        swiglu_fwd_row(out + i * h, inp + i * 2 * h, inp + i * 2 * h + h, h);
}

void swiglu_backward(float *dinp, const float *dout, const float *inp, int64_t n, int64_t h)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        swiglu_bwd_row(dinp + i * 2 * h, dinp + i * 2 * h + h, dout + i * h, inp + i * 2 * h, inp + i * 2 * h + h, h);
}

/* ---- residual + layerscale + drop path ------------------------------------------------------------------- */

void residual_forward(float *out, const float *x, const float *y, const float *gamma, const float *scale,
                      int64_t b, int64_t rows_per_sample, int64_t c)
{
    int64_t rows = b * rows_per_sample;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        float s = scale ? scale[i / rows_per_sample] : 1.0f;
        const float *xr = x + i * c, *yr = y + i * c;
        float *o = out + i * c;
        if (gamma)
            for (int64_t j = 0; j < c; j++)
                o[j] = xr[j] + s * gamma[j] * yr[j];
        else
            for (int64_t j = 0; j < c; j++)
                o[j] = xr[j] + s * yr[j];
    }
}

void residual_backward(float *dx, float *dy, float *dgamma, const float *dout, const float *y, const float *gamma,
                       const float *scale, int64_t b, int64_t rows_per_sample, int64_t c)
{
    int64_t rows = b * rows_per_sample;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        float s = scale ? scale[i / rows_per_sample] : 1.0f;
        const float *g = dout + i * c;
        float *dxr = dx + i * c, *dyr = dy + i * c;
        for (int64_t j = 0; j < c; j++) {
            dxr[j] += g[j];
            dyr[j] += s * (gamma ? gamma[j] : 1.0f) * g[j];
        }
    }
    if (!dgamma)
        return;
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t c0 = c * id / nt, c1 = c * (id + 1) / nt;
        for (int64_t i = 0; i < rows; i++) {
            float s = scale ? scale[i / rows_per_sample] : 1.0f;
            if (s == 0.0f)
                continue;
            const float *g = dout + i * c, *yr = y + i * c;
            for (int64_t j = c0; j < c1; j++)
                dgamma[j] += s * g[j] * yr[j];
        }
    }
}

/* ---- attention ------------------------------------------------------------------------------------------- */

/* Row-wise softmax of s (T, T) in place. */
SIMD_CLONES static void softmax_rows(float *s, int64_t t)
{
    for (int64_t i = 0; i < t; i++) {
        float *row = s + i * t;
        float mx = max_lanes(row, t);
        for (int64_t j = 0; j < t; j++)
            row[j] = exp_inline(row[j] - mx);
        float inv = 1.0f / sum_lanes(row, t);
        for (int64_t j = 0; j < t; j++)
            row[j] *= inv;
    }
}

static void attention_probs(float *s, const float *q, const float *k, int64_t t, int64_t c, int64_t dh, float scale);

int attention_forward(float *out, float *att, const float *qkv, int64_t b, int64_t t, int64_t c, int64_t heads)
{
    int64_t dh = c / heads, pairs = b * heads;
    float scale = 1.0f / sqrtf((float)dh);
    int failed = 0;
    /* One (sample, head) per iteration; cblas calls inside the parallel region run single-threaded
     * (OpenBLAS's OpenMP build), so the threads split the pairs instead of each GEMM. */
#pragma omp parallel reduction(| : failed)
    {
        float *scratch = att ? NULL : malloc((size_t)(t * t) * sizeof(float));
        if (!att && !scratch)
            failed = 1;
        else {
#pragma omp for schedule(static)
            for (int64_t ph = 0; ph < pairs; ph++) {
                int64_t bi = ph / heads, h = ph % heads;
                const float *q = qkv + bi * t * 3 * c + h * dh;
                const float *k = q + c, *v = q + 2 * c;
                float *s = att ? att + ph * t * t : scratch;
                attention_probs(s, q, k, t, c, dh, scale);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t, (int)dh, (int)t, 1.0f, s, (int)t,
                            v, (int)(3 * c), 0.0f, out + bi * t * c + h * dh, (int)c);
            }
        }
        free(scratch);
    }
    return failed ? lvd_fail("attention: out of memory for a %lld x %lld scratch", (long long)t, (long long)t) : 0;
}

/* The probabilities of one (sample, head): P = softmax(scale q k^T), the same calls in the same order as
 * attention_forward, so that a recomputed P has the forward's bits. */
static void attention_probs(float *s, const float *q, const float *k, int64_t t, int64_t c, int64_t dh, float scale)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)t, (int)dh, scale, q, (int)(3 * c), k,
                (int)(3 * c), 0.0f, s, (int)t);
    softmax_rows(s, t);
}

int attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int64_t b, int64_t t,
                       int64_t c, int64_t heads)
{
    int64_t dh = c / heads, pairs = b * heads;
    float scale = 1.0f / sqrtf((float)dh);
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        /* dp: dP then dS; pp: the recomputed P when att is NULL. Both T x T, per thread. */
        float *dp = malloc((size_t)(t * t) * sizeof(float));
        float *pp = att ? NULL : malloc((size_t)(t * t) * sizeof(float));
        if (!dp || (!att && !pp))
            failed = 1;
        else {
#pragma omp for schedule(static)
            for (int64_t ph = 0; ph < pairs; ph++) {
                int64_t bi = ph / heads, h = ph % heads;
                int64_t off = bi * t * 3 * c + h * dh;
                const float *q = qkv + off, *k = q + c, *v = q + 2 * c;
                float *dq = dqkv + off, *dk = dq + c, *dv = dq + 2 * c;
                const float *p = att ? att + ph * t * t : pp;
                if (!att)
                    attention_probs(pp, q, k, t, c, dh, scale);
                const float *dO = dout + bi * t * c + h * dh;
                /* dP = dO V^T; dV += P^T dO */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)t, (int)dh, 1.0f, dO, (int)c, v,
                            (int)(3 * c), 0.0f, dp, (int)t);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)t, (int)dh, (int)t, 1.0f, p, (int)t, dO,
                            (int)c, 1.0f, dv, (int)(3 * c));
                /* dS = scale * P (dP - rowdot(dP, P)) */
                for (int64_t i = 0; i < t; i++) {
                    const float *pr = p + i * t;
                    float *dr = dp + i * t;
                    float dot = dot_lanes(pr, dr, t);
                    for (int64_t j = 0; j < t; j++)
                        dr[j] = scale * pr[j] * (dr[j] - dot);
                }
                /* dQ += dS K; dK += dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t, (int)dh, (int)t, 1.0f, dp, (int)t, k,
                            (int)(3 * c), 1.0f, dq, (int)(3 * c));
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)t, (int)dh, (int)t, 1.0f, dp, (int)t, q,
                            (int)(3 * c), 1.0f, dk, (int)(3 * c));
            }
        }
        free(dp);
        free(pp);
    }
    return failed ? lvd_fail("attention backward: out of memory for a %lld x %lld scratch", (long long)t,
                             (long long)t)
                  : 0;
}

/* ---- patch embedding ------------------------------------------------------------------------------------- */

/* cols (B*N, 3*p*p): row (b, gy, gx) holds the patch in (channel, ky, kx) order, matching w's layout. */
static void unfold(float *cols, const float *x, int64_t bsz, int64_t h, int64_t wd, int64_t p)
{
    int64_t gh = h / p, gw = wd / p, k = 3 * p * p;
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t bi = 0; bi < bsz; bi++)
        for (int64_t gy = 0; gy < gh; gy++)
            for (int64_t gx = 0; gx < gw; gx++) {
                float *row = cols + ((bi * gh + gy) * gw + gx) * k;
                for (int64_t ch = 0; ch < 3; ch++)
                    for (int64_t ky = 0; ky < p; ky++)
                        memcpy(row + (ch * p + ky) * p, x + ((bi * 3 + ch) * h + gy * p + ky) * wd + gx * p,
                               (size_t)p * sizeof(float));
            }
}

void patch_embed_forward(float *out, float *cols, const float *x, const float *w, const float *b, int64_t bsz,
                         int64_t h, int64_t wd, int64_t p, int64_t d)
{
    unfold(cols, x, bsz, h, wd, p);
    linear_forward(out, cols, w, b, bsz, (h / p) * (wd / p), 3 * p * p, d);
}

void patch_embed_backward(float *dx, float *dw, float *db, float *dcols, const float *dout, const float *cols,
                          const float *w, int64_t bsz, int64_t h, int64_t wd, int64_t p, int64_t d)
{
    int64_t gh = h / p, gw = wd / p, k = 3 * p * p, n = bsz * gh * gw;
    if (dx)
        memset(dcols, 0, (size_t)(n * k) * sizeof(float));
    linear_backward(dx ? dcols : NULL, dw, db, dout, cols, w, n, k, d);
    if (!dx)
        return;
    /* Fold: patches do not overlap (stride = kernel), so every pixel gets at most one contribution. */
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t bi = 0; bi < bsz; bi++)
        for (int64_t gy = 0; gy < gh; gy++)
            for (int64_t gx = 0; gx < gw; gx++) {
                const float *row = dcols + ((bi * gh + gy) * gw + gx) * k;
                for (int64_t ch = 0; ch < 3; ch++)
                    for (int64_t ky = 0; ky < p; ky++) {
                        float *dst = dx + ((bi * 3 + ch) * h + gy * p + ky) * wd + gx * p;
                        const float *src = row + (ch * p + ky) * p;
                        for (int64_t kx = 0; kx < p; kx++)
                            dst[kx] += src[kx];
                    }
            }
}
