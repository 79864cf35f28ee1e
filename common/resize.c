/* resize.c — separable antialiased resampling, cropping and img2dataset resize geometry (see resize.h).
 *
 * The resampler follows Pillow's ImagingResample so that outputs agree with Image.resize to within a level:
 * per output index i along an axis of in -> out samples, scale = in / out, the kernel is stretched by
 * fs = max(scale, 1), the window is [center - support, center + support) around center = (i + 0.5) * scale,
 * weights filter((j - center + 0.5) / fs) are normalised to sum 1 and stored as fixed point with 22
 * fractional bits; the horizontal pass runs first into an 8-bit intermediate, then the vertical pass.
 */
#include "resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define FIX_BITS 22 /* fractional bits of the fixed-point weights: 8-bit samples * 2^22 fit comfortably */

const char *resize_mode_name(resize_mode m)
{
    switch (m) {
    case RESIZE_NO: return "no";
    case RESIZE_KEEP_RATIO: return "keep_ratio";
    case RESIZE_KEEP_RATIO_LARGEST: return "keep_ratio_largest";
    case RESIZE_CENTER_CROP: return "center_crop";
    }
    return "unknown";
}

/* ---------------------------------------------------------------------------------------------------------
 * Geometry
 */

/* num / den rounded to nearest, ties to even (Python's round(), which img2dataset's resizers use),
 * at least 1, saturating at UINT32_MAX. */
static uint32_t div_round(uint64_t num, uint64_t den)
{
    uint64_t q = num / den, r = num % den;
    if (2 * r > den || (2 * r == den && (q & 1)))
        q++;
    if (q < 1)
        q = 1;
    return q > UINT32_MAX ? UINT32_MAX : (uint32_t)q;
}

/* Scales w x h so that the side picked by `by_short` (shorter, else longer) becomes size. */
static void scale_side(uint32_t w, uint32_t h, uint32_t size, int by_short, uint32_t *rw, uint32_t *rh)
{
    int w_is_ref = by_short ? (w <= h) : (w >= h);
    if (w_is_ref) {
        *rw = size;
        *rh = div_round((uint64_t)h * size, w);
    } else {
        *rh = size;
        *rw = div_round((uint64_t)w * size, h);
    }
}

resize_plan resize_compute(resize_mode m, uint32_t size, int only_if_bigger, uint32_t w, uint32_t h)
{
    resize_plan p = {w, h, 0, 0, w, h};
    if (m == RESIZE_NO || size == 0 || w == 0 || h == 0)
        return p;
    uint32_t shorter = w < h ? w : h, longer = w < h ? h : w;
    switch (m) {
    case RESIZE_KEEP_RATIO:
        if (!only_if_bigger || shorter > size)
            scale_side(w, h, size, 1, &p.rw, &p.rh);
        break;
    case RESIZE_KEEP_RATIO_LARGEST:
        if (!only_if_bigger || longer > size)
            scale_side(w, h, size, 0, &p.rw, &p.rh);
        break;
    case RESIZE_CENTER_CROP:
        if (!only_if_bigger || shorter > size)
            scale_side(w, h, size, 1, &p.rw, &p.rh);
        /* a picture left smaller than size (only_if_bigger) keeps its short side whole */
        p.cw = p.rw < size ? p.rw : size;
        p.ch = p.rh < size ? p.rh : size;
        p.cx = (p.rw - p.cw) / 2;
        p.cy = (p.rh - p.ch) / 2;
        return p;
    case RESIZE_NO:
        break;
    }
    p.cw = p.rw;
    p.ch = p.rh;
    return p;
}

/* ---------------------------------------------------------------------------------------------------------
 * Kernels and weight tables
 */

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0)
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= 3.14159265358979323846;
    return sin(x) / x;
}

static double lanczos3(double x)
{
    if (x >= -3.0 && x < 3.0)
        return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

/* Weights of one axis: for output i, taps k[i*ksize .. +n[i]) apply to inputs lo[i] .. lo[i]+n[i]-1. */
struct axis {
    uint32_t ksize;
    uint32_t *lo, *n; /* out entries each */
    int32_t *k;       /* out * ksize, fixed point with FIX_BITS fractional bits */
    void *mem;        /* the one allocation holding lo, n and k */
};

static int axis_build(struct axis *a, uint32_t in, uint32_t out, resize_filter f)
{
    double (*filter)(double) = f == RESIZE_FILTER_LANCZOS ? lanczos3 : bicubic;
    double support0 = f == RESIZE_FILTER_LANCZOS ? 3.0 : 2.0;
    double scale = (double)in / out;
    double fs = scale < 1.0 ? 1.0 : scale;
    double support = support0 * fs;
    double ks = ceil(support) * 2.0 + 1.0;
    if (ks > (double)UINT32_MAX / 2)
        return lvd_fail("resize: %u -> %u needs an impossible kernel", (unsigned)in, (unsigned)out);
    uint32_t ksize = (uint32_t)ks;
    uint64_t bytes = (uint64_t)out * (2 * sizeof(uint32_t) + (uint64_t)ksize * sizeof(int32_t));
    if (bytes > ((uint64_t)1 << 32))
        return lvd_fail("resize: %u -> %u weight table of %llu bytes is too large", (unsigned)in, (unsigned)out,
                        (unsigned long long)bytes);
    a->mem = malloc((size_t)bytes);
    double *tmp = malloc((size_t)ksize * sizeof(double));
    if (a->mem == NULL || tmp == NULL) {
        free(a->mem);
        free(tmp);
        a->mem = NULL;
        return lvd_fail("resize: out of memory for %u -> %u weights", (unsigned)in, (unsigned)out);
    }
    a->ksize = ksize;
    a->lo = a->mem;
    a->n = a->lo + out;
    a->k = (int32_t *)(a->n + out);
    for (uint32_t i = 0; i < out; i++) {
        double center = (i + 0.5) * scale;
        double lo = floor(center - support + 0.5), hi = floor(center + support + 0.5);
        if (lo < 0.0)
            lo = 0.0;
        if (hi > (double)in)
            hi = (double)in;
        uint32_t x0 = (uint32_t)lo, cnt = hi > lo ? (uint32_t)(hi - lo) : 0;
        if (cnt > ksize)
            cnt = ksize;
        double sum = 0.0;
        for (uint32_t t = 0; t < cnt; t++) {
            tmp[t] = filter(((double)(x0 + t) - center + 0.5) / fs);
            sum += tmp[t];
        }
        int32_t *k = a->k + (size_t)i * ksize;
        for (uint32_t t = 0; t < cnt; t++) {
            double wgt = sum != 0.0 ? tmp[t] / sum : tmp[t];
            k[t] = (int32_t)lround(wgt * (double)(1 << FIX_BITS)); /* half away from zero, as Pillow */
        }
        a->lo[i] = x0;
        a->n[i] = cnt;
    }
    free(tmp);
    return 0;
}

/* Accumulators are int32, as in Pillow: |sample| <= 255 and the sum of |weights| stays below ~1.3 for
 * both kernels, so 255 * 2^22 * 1.3 < 2^31. int32 lanes vectorise twice as wide as int64. */
static inline uint8_t clip_fix(int32_t acc)
{
    if (acc < 0)
        return 0;
    acc >>= FIX_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* src: rows x (sw*nch) -> dst: rows x (dw*nch) */
static void pass_horizontal(const uint8_t *src, uint32_t sw, uint32_t rows, uint32_t nch, uint8_t *dst,
                            uint32_t dw, const struct axis *a)
{
    for (uint32_t y = 0; y < rows; y++) {
        const uint8_t *s = src + (size_t)y * sw * nch;
        uint8_t *d = dst + (size_t)y * dw * nch;
        for (uint32_t x = 0; x < dw; x++) {
            const int32_t *k = a->k + (size_t)x * a->ksize;
            const uint8_t *s0 = s + (size_t)a->lo[x] * nch;
            if (nch == 3) {
                /* RGB, the hot case: one pass over the taps for all three channels. */
                int32_t r = 1 << (FIX_BITS - 1), g = r, b = r;
                for (uint32_t t = 0; t < a->n[x]; t++) {
                    const uint8_t *p = s0 + (size_t)t * 3;
                    r += p[0] * k[t];
                    g += p[1] * k[t];
                    b += p[2] * k[t];
                }
                d[(size_t)x * 3] = clip_fix(r);
                d[(size_t)x * 3 + 1] = clip_fix(g);
                d[(size_t)x * 3 + 2] = clip_fix(b);
                continue;
            }
            for (uint32_t c = 0; c < nch; c++) {
                int32_t acc = 1 << (FIX_BITS - 1);
                for (uint32_t t = 0; t < a->n[x]; t++)
                    acc += s0[(size_t)t * nch + c] * k[t];
                d[(size_t)x * nch + c] = clip_fix(acc);
            }
        }
    }
}

/* src: sh x rowlen -> dst: dh x rowlen, one accumulator per sample of the output row */
static int pass_vertical(const uint8_t *src, size_t rowlen, uint8_t *dst, uint32_t dh, const struct axis *a)
{
    int32_t *acc = malloc(rowlen * sizeof *acc);
    if (acc == NULL)
        return lvd_fail("resize: out of memory for a %zu-sample row", rowlen);
    for (uint32_t y = 0; y < dh; y++) {
        for (size_t i = 0; i < rowlen; i++)
            acc[i] = 1 << (FIX_BITS - 1);
        const int32_t *k = a->k + (size_t)y * a->ksize;
        for (uint32_t t = 0; t < a->n[y]; t++) {
            const uint8_t *s = src + (size_t)(a->lo[y] + t) * rowlen;
            int32_t kt = k[t];
            for (size_t i = 0; i < rowlen; i++)
                acc[i] += s[i] * kt;
        }
        uint8_t *d = dst + (size_t)y * rowlen;
        for (size_t i = 0; i < rowlen; i++)
            d[i] = clip_fix(acc[i]);
    }
    free(acc);
    return 0;
}

int resize_plane(const uint8_t *src, uint32_t sw, uint32_t sh, uint32_t nch, uint8_t *dst, uint32_t dw,
                 uint32_t dh, resize_filter f)
{
    if (src == NULL || dst == NULL || sw == 0 || sh == 0 || dw == 0 || dh == 0 || nch == 0 || nch > 4)
        return lvd_fail("resize: invalid arguments (%ux%u x%u -> %ux%u)", (unsigned)sw, (unsigned)sh,
                        (unsigned)nch, (unsigned)dw, (unsigned)dh);
    if ((uint64_t)dw * sh * nch > SIZE_MAX / 2 || (uint64_t)dw * dh * nch > SIZE_MAX / 2)
        return lvd_fail("resize: %ux%u is too large", (unsigned)dw, (unsigned)dh);
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * nch);
        return 0;
    }
    struct axis ax = {0}, ay = {0};
    uint8_t *mid = NULL;
    int rc = -1;
    const uint8_t *vsrc = src; /* input of the vertical pass: dw x sh */
    if (sw != dw) {
        if (axis_build(&ax, sw, dw, f) != 0)
            goto out;
        if (sh == dh) { /* horizontal only: straight into dst */
            pass_horizontal(src, sw, sh, nch, dst, dw, &ax);
            rc = 0;
            goto out;
        }
        mid = malloc((size_t)dw * sh * nch);
        if (mid == NULL) {
            lvd_fail("resize: out of memory for a %ux%u intermediate", (unsigned)dw, (unsigned)sh);
            goto out;
        }
        pass_horizontal(src, sw, sh, nch, mid, dw, &ax);
        vsrc = mid;
    }
    if (axis_build(&ay, sh, dh, f) != 0)
        goto out;
    rc = pass_vertical(vsrc, (size_t)dw * nch, dst, dh, &ay);
out:
    free(ax.mem);
    free(ay.mem);
    free(mid);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------
 * img_rgb helpers
 */

int img_resize(const img_rgb *src, uint32_t dw, uint32_t dh, img_rgb *dst)
{
    dst->w = dst->h = 0;
    dst->px = NULL;
    if (src == NULL || src->px == NULL || src->w == 0 || src->h == 0)
        return lvd_fail("resize: empty source image");
    if (dw == 0 || dh == 0)
        return lvd_fail("resize: empty target size %ux%u", (unsigned)dw, (unsigned)dh);
    if (img_alloc(dst, dw, dh) != 0)
        return -1;
    if (resize_plane(src->px, src->w, src->h, 3, dst->px, dw, dh, RESIZE_FILTER_BICUBIC) != 0) {
        img_free(dst);
        return -1;
    }
    return 0;
}

int img_crop(const img_rgb *src, uint32_t x, uint32_t y, uint32_t w, uint32_t h, img_rgb *dst)
{
    dst->w = dst->h = 0;
    dst->px = NULL;
    if (src == NULL || src->px == NULL)
        return lvd_fail("crop: empty source image");
    if (w == 0 || h == 0 || (uint64_t)x + w > src->w || (uint64_t)y + h > src->h)
        return lvd_fail("crop: window %ux%u at (%u,%u) is not inside %ux%u", (unsigned)w, (unsigned)h,
                        (unsigned)x, (unsigned)y, (unsigned)src->w, (unsigned)src->h);
    if (img_alloc(dst, w, h) != 0)
        return -1;
    for (uint32_t r = 0; r < h; r++)
        memcpy(dst->px + (size_t)r * w * 3, src->px + (((size_t)y + r) * src->w + x) * 3, (size_t)w * 3);
    return 0;
}

int img_apply_plan(const img_rgb *src, const resize_plan *p, img_rgb *dst)
{
    dst->w = dst->h = 0;
    dst->px = NULL;
    if (src == NULL || src->px == NULL || p == NULL)
        return lvd_fail("resize: nothing to apply");
    if (p->rw == src->w && p->rh == src->h)
        return img_crop(src, p->cx, p->cy, p->cw, p->ch, dst);
    img_rgb mid;
    if (img_resize(src, p->rw, p->rh, &mid) != 0)
        return -1;
    if (p->cx == 0 && p->cy == 0 && p->cw == p->rw && p->ch == p->rh) {
        *dst = mid;
        return 0;
    }
    int rc = img_crop(&mid, p->cx, p->cy, p->cw, p->ch, dst);
    img_free(&mid);
    return rc;
}
