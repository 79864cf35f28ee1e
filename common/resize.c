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

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RESIZE_X86 1
#endif

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

/* Weights of one axis: for output i, taps k[i*ksize .. +n[i]) apply to inputs lo[i] .. lo[i]+n[i]-1.
 * ksize is a multiple of 8 and the taps past n[i] are 0, so vector loops may run over whole groups of 2 or
 * 8 taps (reading inputs past the window, which then count 0 times). */
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
    uint32_t ksize = ((uint32_t)ks + 7u) & ~7u;
    uint64_t bytes = (uint64_t)out * (2 * sizeof(uint32_t) + (uint64_t)ksize * sizeof(int32_t));
    if (bytes > ((uint64_t)1 << 32))
        return lvd_fail("resize: %u -> %u weight table of %llu bytes is too large", (unsigned)in, (unsigned)out,
                        (unsigned long long)bytes);
    a->mem = calloc(1, (size_t)bytes);
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
        if (cnt > (uint32_t)ks)
            cnt = (uint32_t)ks;
        double sum = 0.0;
        if (f == RESIZE_FILTER_LANCZOS && cnt > 0) {
            /* Lanczos-3 at x_t = x_0 + t * d, d = 1 / fs: sin(pi x) and sin(pi x / 3) advance by rotation
             * (angle addition) instead of two sin() calls per tap, which dominated the pHash's weight
             * tables. After ~100 steps the absolute error is ~1e-14, far below the 2^-22 weight quantum. */
            double d = 1.0 / fs, xt = ((double)x0 - center + 0.5) / fs;
            double s1 = sin(M_PI * xt), c1 = cos(M_PI * xt), s3 = sin(M_PI * xt / 3.0), c3 = cos(M_PI * xt / 3.0);
            double sd1 = sin(M_PI * d), cd1 = cos(M_PI * d), sd3 = sin(M_PI * d / 3.0), cd3 = cos(M_PI * d / 3.0);
            for (uint32_t t = 0; t < cnt; t++) {
                double x = ((double)(x0 + t) - center + 0.5) / fs; /* the same x the direct formula uses */
                double v;
                if (fabs(x) < 0.01)
                    v = lanczos3(x); /* the ratio below would amplify the rotation's absolute error */
                else if (x >= -3.0 && x < 3.0)
                    v = s1 * s3 / (M_PI * M_PI * x * x / 3.0);
                else
                    v = 0.0;
                tmp[t] = v;
                sum += v;
                double ns1 = s1 * cd1 + c1 * sd1, ns3 = s3 * cd3 + c3 * sd3;
                c1 = c1 * cd1 - s1 * sd1;
                c3 = c3 * cd3 - s3 * sd3;
                s1 = ns1;
                s3 = ns3;
            }
        } else {
            for (uint32_t t = 0; t < cnt; t++) {
                tmp[t] = filter(((double)(x0 + t) - center + 0.5) / fs);
                sum += tmp[t];
            }
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

/* Bytes past a row's start that the vector horizontal loops may read: whole groups of `group` taps (the
 * padded taps weigh 0) plus the over-read of the last load (`extra` bytes). Rows whose reads stay inside
 * the source buffer take the vector path; the rest (normally only the last row) the scalar one. */
static size_t hread_extent(const struct axis *a, uint32_t dw, uint32_t nch, uint32_t group, uint32_t extra)
{
    size_t m = 0;
    for (uint32_t x = 0; x < dw; x++) {
        size_t e = ((size_t)a->lo[x] + ((a->n[x] + group - 1) / group) * group) * nch + extra;
        if (e > m)
            m = e;
    }
    return m;
}

/* One row of the horizontal pass, portable C. */
static void hrow_scalar(const uint8_t *s, uint32_t nch, uint8_t *d, uint32_t dw, const struct axis *a)
{
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

/* One row of the vertical pass, portable C: dst[i] = clip(sum_t src[lo+t][i] * k[t]). */
static void vrow_scalar(const uint8_t *src, size_t rowlen, size_t i0, uint8_t *d, const int32_t *k, uint32_t lo,
                        uint32_t n)
{
    for (size_t i = i0; i < rowlen; i++) {
        int32_t acc = 1 << (FIX_BITS - 1);
        const uint8_t *s = src + (size_t)lo * rowlen + i;
        for (uint32_t t = 0; t < n; t++)
            acc += s[(size_t)t * rowlen] * k[t];
        d[i] = clip_fix(acc);
    }
}

#ifdef RESIZE_X86
/* AVX2 versions. The arithmetic is the scalar one exactly (int32 products and sums, the same rounding
 * bias, shift and clamp), so the output is bit-identical; only the order of independent work changes.
 * Clamping: an arithmetic shift then the saturating packs (int32 -> int16 -> uint8) give clip_fix. */

/* RGB row: two taps per step. The 8 bytes at pixel t (RGB RGB + 2 spare) are broadcast to both 128-bit
 * lanes; a byte shuffle widens pixel t into lane 0 and pixel t+1 into lane 1 as R,G,B,0 int32s, which are
 * multiplied by (k[t] x4 | k[t+1] x4). Reads up to 5 bytes past the last tap pair (see hread_extent). */
__attribute__((target("avx2"))) static void hrow_rgb_avx2(const uint8_t *s, uint8_t *d, uint32_t dw,
                                                          const struct axis *a)
{
    const __m256i shuf = _mm256_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1, -1, -1, -1, -1, 3, -1, -1,
                                          -1, 4, -1, -1, -1, 5, -1, -1, -1, -1, -1, -1, -1);
    const __m128i bias = _mm_set1_epi32(1 << (FIX_BITS - 1));
    for (uint32_t x = 0; x < dw; x++) {
        const int32_t *k = a->k + (size_t)x * a->ksize;
        const uint8_t *s0 = s + (size_t)a->lo[x] * 3;
        __m256i acc = _mm256_setzero_si256();
        for (uint32_t t = 0; t < a->n[x]; t += 2) {
            int64_t raw;
            memcpy(&raw, s0 + (size_t)t * 3, 8);
            __m256i px = _mm256_shuffle_epi8(_mm256_set1_epi64x(raw), shuf);
            __m256i kk = _mm256_blend_epi32(_mm256_set1_epi32(k[t]), _mm256_set1_epi32(k[t + 1]), 0xF0);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, kk));
        }
        __m128i v = _mm_add_epi32(_mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1)), bias);
        v = _mm_srai_epi32(v, FIX_BITS);
        v = _mm_packus_epi16(_mm_packs_epi32(v, v), v);
        uint32_t rgb0 = (uint32_t)_mm_cvtsi128_si32(v);
        d[(size_t)x * 3] = (uint8_t)rgb0;
        d[(size_t)x * 3 + 1] = (uint8_t)(rgb0 >> 8);
        d[(size_t)x * 3 + 2] = (uint8_t)(rgb0 >> 16);
    }
}

/* One-channel row (the pHash's grey plane): 8 taps per step, horizontal sum at the end. Reads up to 7
 * samples past the window (see hread_extent). */
__attribute__((target("avx2"))) static void hrow_gray_avx2(const uint8_t *s, uint8_t *d, uint32_t dw,
                                                           const struct axis *a)
{
    for (uint32_t x = 0; x < dw; x++) {
        const int32_t *k = a->k + (size_t)x * a->ksize;
        const uint8_t *s0 = s + a->lo[x];
        __m256i acc = _mm256_setzero_si256();
        for (uint32_t t = 0; t < a->n[x]; t += 8) {
            __m256i px = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s0 + t)));
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, _mm256_loadu_si256((const __m256i *)(k + t))));
        }
        __m128i v = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
        d[x] = clip_fix(_mm_cvtsi128_si32(v) + (1 << (FIX_BITS - 1)));
    }
}

/* 32 samples of an output row per step, the taps' rows streamed through four 8-lane accumulators. Returns
 * how many leading samples it wrote (a multiple of 32); the caller finishes the row. */
__attribute__((target("avx2"))) static size_t vrow_avx2(const uint8_t *src, size_t rowlen, uint8_t *d,
                                                        const int32_t *k, uint32_t lo, uint32_t n)
{
    const __m256i bias = _mm256_set1_epi32(1 << (FIX_BITS - 1));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= rowlen; i += 32) {
        __m256i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
        const uint8_t *s = src + (size_t)lo * rowlen + i;
        for (uint32_t t = 0; t < n; t++, s += rowlen) {
            __m256i kt = _mm256_set1_epi32(k[t]);
            __m256i raw = _mm256_loadu_si256((const __m256i *)s);
            __m128i lo16 = _mm256_castsi256_si128(raw), hi16 = _mm256_extracti128_si256(raw, 1);
            a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(lo16), kt));
            a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo16, 8)), kt));
            a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(hi16), kt));
            a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi16, 8)), kt));
        }
        a0 = _mm256_srai_epi32(a0, FIX_BITS);
        a1 = _mm256_srai_epi32(a1, FIX_BITS);
        a2 = _mm256_srai_epi32(a2, FIX_BITS);
        a3 = _mm256_srai_epi32(a3, FIX_BITS);
        /* packs/packus interleave 128-bit lanes: groups of 4 come out as a0l a1l a2l a3l | a0h a1h a2h a3h */
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_permutevar8x32_epi32(b, order));
    }
    return i;
}

static int have_avx2(void)
{
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx2") ? 1 : 0; /* benign race: every thread computes the same */
    return cached;
}
#endif

/* src: rows x (sw*nch) -> dst: rows x (dw*nch) */
static void pass_horizontal(const uint8_t *src, uint32_t sw, uint32_t rows, uint32_t nch, uint8_t *dst,
                            uint32_t dw, const struct axis *a)
{
    size_t rowlen = (size_t)sw * nch, total = rowlen * rows;
    uint32_t y = 0;
#ifdef RESIZE_X86
    if ((nch == 3 || nch == 1) && have_avx2()) {
        size_t ext = nch == 3 ? hread_extent(a, dw, 3, 2, 2) : hread_extent(a, dw, 1, 8, 0);
        for (; y < rows && (size_t)y * rowlen + ext <= total; y++) {
            if (nch == 3)
                hrow_rgb_avx2(src + (size_t)y * rowlen, dst + (size_t)y * dw * 3, dw, a);
            else
                hrow_gray_avx2(src + (size_t)y * rowlen, dst + (size_t)y * dw, dw, a);
        }
    }
#endif
    for (; y < rows; y++)
        hrow_scalar(src + (size_t)y * rowlen, nch, dst + (size_t)y * dw * nch, dw, a);
}

/* src: sh x rowlen -> dst: dh x rowlen */
static int pass_vertical(const uint8_t *src, size_t rowlen, uint8_t *dst, uint32_t dh, const struct axis *a)
{
    for (uint32_t y = 0; y < dh; y++) {
        const int32_t *k = a->k + (size_t)y * a->ksize;
        uint8_t *d = dst + (size_t)y * rowlen;
        size_t i = 0;
#ifdef RESIZE_X86
        if (have_avx2())
            i = vrow_avx2(src, rowlen, d, k, a->lo[y], a->n[y]);
#endif
        vrow_scalar(src, rowlen, i, d, k, a->lo[y], a->n[y]);
    }
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
