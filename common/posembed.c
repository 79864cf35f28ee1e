/* posembed.c — see posembed.h.
 *
 * The 1-D weights follow PyTorch's CPU kernels for float32 tensors:
 *   upsample_bicubic2d (antialias off): scale = float(1 / scale_factor); for output i the source coordinate is
 *     scale * (i + 0.5) - 0.5, its floor (at most n_in - 1) is the base index, the fraction t (clamped to
 *     [0, 1]) gives the 4 cubic-convolution coefficients (A = -0.75) of base - 1 .. base + 2, and indices
 *     outside [0, n_in) are clamped to the edge (their weights add up there);
 *   _upsample_bicubic2d_aa (antialias on): scale = float(n_in) / n_out; support = 2 * max(scale, 1); the
 *     taps j in [trunc(center - support + 0.5), trunc(center + support + 0.5)) clipped to [0, n_in), with
 *     center = scale * (i + 0.5), weigh filter((j - center + 0.5) / max(scale, 1)), filter being Keys' cubic
 *     with a = -0.5; the weights of a row are divided by their sum.
 * Measured against torch 1.13 (one-hot inputs, every n_in, n_out in 1..39): each weight within 7.2e-7 of
 * F.interpolate's float32 result, whose own float rounding is up to 3.3e-6 from its float64 result.
 */
#include "posembed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static double cubic_conv1(double x, double a) /* |x| <= 1 */
{
    return ((a + 2) * x - (a + 3)) * x * x + 1;
}

static double cubic_conv2(double x, double a) /* 1 < |x| < 2 */
{
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
}

/* Keys' cubic with a = -0.5, evaluated in float like PyTorch's aa_filter for float tensors. */
static float aa_filter(float x)
{
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1.0f)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0f)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0f;
}

/* The coordinates and coefficients are computed in double from PyTorch's float scale: the float scale is
 * what shifts the sampling positions measurably; PyTorch's own float rounding beyond it is noise (< 1e-6). */
static void weights_offset(int32_t n_in, int32_t n_out, float *w)
{
    const double A = -0.75;
    /* DINOv2: scale_factor = (n_out + 0.1) / M in double; PyTorch keeps 1 / scale_factor as a float. */
    double scale_factor = ((double)n_out + 0.1) / (double)n_in;
    double scale = (double)(float)(1.0 / scale_factor);
    for (int32_t i = 0; i < n_out; i++) {
        double real = scale * ((double)i + 0.5) - 0.5;
        int64_t base = (int64_t)floor(real);
        if (base > n_in - 1)
            base = n_in - 1;
        double t = real - (double)base;
        t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
        double c[4] = {cubic_conv2(t + 1.0, A), cubic_conv1(t, A), cubic_conv1(1.0 - t, A),
                       cubic_conv2(2.0 - t, A)};
        /* taps base-1 .. base+2 clamped to the edges: neighbours that clamp to the same sample add up */
        int64_t idx[4];
        for (int32_t k = 0; k < 4; k++) {
            int64_t j = base - 1 + k;
            idx[k] = j < 0 ? 0 : (j > n_in - 1 ? n_in - 1 : j);
        }
        for (int32_t k = 0; k < 4; k++) {
            if (k > 0 && idx[k] == idx[k - 1])
                continue;
            double sum = c[k];
            for (int32_t l = k + 1; l < 4 && idx[l] == idx[k]; l++)
                sum += c[l];
            w[(size_t)i * (size_t)n_in + (size_t)idx[k]] = (float)sum;
        }
    }
}

/* Float arithmetic with PyTorch's float/double conversions: its aa weights are computed in the tensor's
 * scalar type, and reproducing that keeps the weights within ~1e-6 of F.interpolate's. */
static void weights_aa(int32_t n_in, int32_t n_out, float *w)
{
    float scale = (float)n_in / (float)n_out;
    float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
    float invscale = scale >= 1.0f ? (float)(1.0 / (double)scale) : 1.0f;
    for (int32_t i = 0; i < n_out; i++) {
        float *row = w + (size_t)i * (size_t)n_in;
        float center = (float)((double)scale * ((double)i + 0.5));
        int64_t xmin = (int64_t)((double)(center - support) + 0.5); /* truncation, as in PyTorch */
        if (xmin < 0)
            xmin = 0;
        int64_t xmax = (int64_t)((double)(center + support) + 0.5);
        if (xmax > n_in)
            xmax = n_in;
        float total = 0.0f;
        for (int64_t j = xmin; j < xmax; j++) {
            float v = aa_filter((float)(((double)((float)j - center) + 0.5) * (double)invscale));
            row[j] = v;
            total += v;
        }
        if (total != 0.0f)
            for (int64_t j = xmin; j < xmax; j++)
                row[j] /= total;
    }
}

static int check_mode(vit_pos_mode mode)
{
    if (mode != VIT_POS_OFFSET && mode != VIT_POS_SIZE_AA)
        return lvd_fail("posembed: unknown positional-embedding mode %d", (int)mode);
    return 0;
}

int posembed_weights(int32_t n_in, int32_t n_out, vit_pos_mode mode, float *w)
{
    if (n_in <= 0 || n_out <= 0)
        return lvd_fail("posembed: grid sizes must be positive (n_in %d, n_out %d)", (int)n_in, (int)n_out);
    if (check_mode(mode) != 0)
        return -1;
    if (!w)
        return lvd_fail("posembed: no weight buffer");
    memset(w, 0, (size_t)n_out * (size_t)n_in * sizeof *w);
    if (mode == VIT_POS_OFFSET)
        weights_offset(n_in, n_out, w);
    else
        weights_aa(n_in, n_out, w);
    return 0;
}

/* Wy (gh, M), Wx (gw, M) and a (max(gh, M) ... ) scratch of rows x M x D floats, in one allocation. */
typedef struct plan {
    float *mem;
    float *wy, *wx, *tmp;
} plan;

static int plan_make(int32_t m, int32_t d, int32_t gh, int32_t gw, vit_pos_mode mode, plan *p)
{
    memset(p, 0, sizeof *p);
    if (m <= 0 || d <= 0 || gh <= 0 || gw <= 0)
        return lvd_fail("posembed: sizes must be positive (M %d, D %d, grid %d x %d)", (int)m, (int)d, (int)gh,
                        (int)gw);
    if (check_mode(mode) != 0)
        return -1;
    size_t ny = (size_t)gh * (size_t)m, nx = (size_t)gw * (size_t)m, nt = (size_t)gh * (size_t)m * (size_t)d;
    p->mem = malloc((ny + nx + nt) * sizeof(float));
    if (!p->mem)
        return lvd_fail("posembed: out of memory for a %d x %d -> %d x %d grid of %d channels", (int)m, (int)m,
                        (int)gh, (int)gw, (int)d);
    p->wy = p->mem;
    p->wx = p->wy + ny;
    p->tmp = p->wx + nx;
    if (posembed_weights(m, gh, mode, p->wy) != 0 || posembed_weights(m, gw, mode, p->wx) != 0) {
        free(p->mem);
        p->mem = NULL;
        return -1;
    }
    return 0;
}

int posembed_forward(const float *src, int32_t m, int32_t d, int32_t gh, int32_t gw, vit_pos_mode mode, float *dst)
{
    plan p;
    if (plan_make(m, d, gh, gw, mode, &p) != 0)
        return -1;
    size_t D = (size_t)d, M = (size_t)m;
    /* tmp (gh, M, D) = Wy applied along the rows of src */
    memset(p.tmp, 0, (size_t)gh * M * D * sizeof(float));
    for (int32_t y = 0; y < gh; y++) {
        float *t = p.tmp + (size_t)y * M * D;
        for (size_t r = 0; r < M; r++) {
            float wgt = p.wy[(size_t)y * M + r];
            if (wgt == 0.0f)
                continue;
            const float *s = src + r * M * D;
            for (size_t k = 0; k < M * D; k++)
                t[k] += wgt * s[k];
        }
    }
    /* dst (gh, gw, D) = Wx applied along the columns of tmp */
    memset(dst, 0, (size_t)gh * (size_t)gw * D * sizeof(float));
    for (int32_t y = 0; y < gh; y++) {
        const float *t = p.tmp + (size_t)y * M * D;
        for (int32_t x = 0; x < gw; x++) {
            float *o = dst + ((size_t)y * (size_t)gw + (size_t)x) * D;
            for (size_t c = 0; c < M; c++) {
                float wgt = p.wx[(size_t)x * M + c];
                if (wgt == 0.0f)
                    continue;
                for (size_t k = 0; k < D; k++)
                    o[k] += wgt * t[c * D + k];
            }
        }
    }
    free(p.mem);
    return 0;
}

int posembed_backward(const float *ddst, int32_t m, int32_t d, int32_t gh, int32_t gw, vit_pos_mode mode,
                      float *dsrc)
{
    plan p;
    if (plan_make(m, d, gh, gw, mode, &p) != 0)
        return -1;
    size_t D = (size_t)d, M = (size_t)m;
    /* tmp (gh, M, D) = Wx^T applied along the columns of ddst */
    memset(p.tmp, 0, (size_t)gh * M * D * sizeof(float));
    for (int32_t y = 0; y < gh; y++) {
        float *t = p.tmp + (size_t)y * M * D;
        for (int32_t x = 0; x < gw; x++) {
            const float *g = ddst + ((size_t)y * (size_t)gw + (size_t)x) * D;
            for (size_t c = 0; c < M; c++) {
                float wgt = p.wx[(size_t)x * M + c];
                if (wgt == 0.0f)
                    continue;
                for (size_t k = 0; k < D; k++)
                    t[c * D + k] += wgt * g[k];
            }
        }
    }
    /* dsrc (M, M, D) += Wy^T applied along the rows of tmp */
    for (int32_t y = 0; y < gh; y++) {
        const float *t = p.tmp + (size_t)y * M * D;
        for (size_t r = 0; r < M; r++) {
            float wgt = p.wy[(size_t)y * M + r];
            if (wgt == 0.0f)
                continue;
            float *s = dsrc + r * M * D;
            for (size_t k = 0; k < M * D; k++)
                s[k] += wgt * t[k];
        }
    }
    free(p.mem);
    return 0;
}
