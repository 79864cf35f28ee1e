/* augment_ops.c — the pixel operations of the multi-crop augmentation: ColorJitter's four adjustments,
 * grayscale, Gaussian blur, solarize (see augment.h).
 *
 * The float expressions below keep the operand types of the Pillow 9.4 C code they reproduce (Blend.c,
 * Convert.c): which subexpressions are float and which double decides the last bit, and so the truncated
 * byte. The project builds with -ffp-contract=off and without -ffast-math, so the compiler keeps them.
 */
#include <math.h>
#include <stdlib.h>

#include "augment.h"
#include "err.h"

/* Pillow's RGB -> L (Convert.c, L24): ITU-R 601-2 luma in 16-bit fixed point, rounded. */
static inline uint8_t luma(const uint8_t *p)
{
    return (uint8_t)(((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u + (uint32_t)p[2] * 7471u + 0x8000u) >> 16);
}

/* One byte of Image.blend(im1, im2, alpha) (ImagingBlend): in1 + alpha * (in2 - in1) in float, truncated.
 * Pillow has separate loops for alpha in [0, 1] (no clamp needed) and outside (clamped); both compute the same
 * float, and the clamp is a no-op inside [0, 1], so one clamped formula gives both. */
static inline uint8_t blend(int in1, int in2, float alpha)
{
    float t = (float)in1 + alpha * (float)(in2 - in1);
    if (t <= 0.0f)
        return 0;
    if (t >= 255.0f)
        return 255;
    return (uint8_t)t;
}

void aug_brightness(uint8_t *rgb, size_t n, float f)
{
    for (size_t i = 0; i < 3 * n; i++)
        rgb[i] = blend(0, rgb[i], f);
}

void aug_contrast(uint8_t *rgb, size_t n, float f)
{
    if (n == 0)
        return;
    /* ImageStat's mean of the L image: an exact integer sum over a double count (Python float division). */
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += luma(rgb + 3 * i);
    double mean = (double)sum / (double)n;
    int m = (int)(mean + 0.5); /* Python int(): truncation, mean >= 0 */
    for (size_t i = 0; i < 3 * n; i++)
        rgb[i] = blend(m, rgb[i], f);
}

void aug_saturation(uint8_t *rgb, size_t n, float f)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = rgb + 3 * i;
        int l = luma(p);
        p[0] = blend(l, p[0], f);
        p[1] = blend(l, p[1], f);
        p[2] = blend(l, p[2], f);
    }
}

static inline uint8_t clip8(int v)
{
    return v <= 0 ? 0 : v < 256 ? (uint8_t)v : 255;
}

/* Pillow's rgb2hsv_row (Convert.c, "following colorsys.py"): float ratios, double sums and fmod. */
static void rgb_to_hsv(const uint8_t *in, uint8_t *out)
{
    uint8_t r = in[0], g = in[1], b = in[2];
    uint8_t maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    uint8_t minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    uint8_t uh = 0, us = 0;
    if (minc != maxc) {
        float cr = (float)(maxc - minc);
        float s = cr / (float)maxc;
        float rc = ((float)(maxc - r)) / cr;
        float gc = ((float)(maxc - g)) / cr;
        float bc = ((float)(maxc - b)) / cr;
        float h;
        if (r == maxc)
            h = bc - gc;
        else if (g == maxc)
            h = 2.0 + rc - bc; /* double, stored to float */
        else
            h = 4.0 + gc - rc;
        /* Pillow: fmod(h / 6.0 + 1.0, 1.0). The argument lies in [5/6, 11/6], where fmod is x or x - 1,
         * both exact, so the subtraction gives the same bits without the libm call. */
        double hh = h / 6.0 + 1.0;
        h = hh >= 1.0 ? hh - 1.0 : hh;
        uh = clip8((int)(h * 255.0));
        us = clip8((int)(s * 255.0));
    }
    out[0] = uh;
    out[1] = us;
    out[2] = maxc;
}

/* Pillow's hsv2rgb: note fs * f is a float product, fs * (1.0 - f) a double one. */
static void hsv_to_rgb(const uint8_t *in, uint8_t *out)
{
    uint8_t h = in[0], s = in[1], v = in[2];
    if (s == 0) {
        out[0] = out[1] = out[2] = v;
        return;
    }
    int i = (int)floor((float)h * 6.0 / 255.0); /* 0..6 */
    float f = (float)h * 6.0 / 255.0 - (float)i;
    float fs = ((float)s) / 255.0;
    uint8_t up = clip8((int)round((float)v * (1.0 - fs)));
    uint8_t uq = clip8((int)round((float)v * (1.0 - fs * f)));
    uint8_t ut = clip8((int)round((float)v * (1.0 - fs * (1.0 - f))));
    switch (i % 6) {
    case 0: out[0] = v; out[1] = ut; out[2] = up; break;
    case 1: out[0] = uq; out[1] = v; out[2] = up; break;
    case 2: out[0] = up; out[1] = v; out[2] = ut; break;
    case 3: out[0] = up; out[1] = uq; out[2] = v; break;
    case 4: out[0] = ut; out[1] = up; out[2] = v; break;
    default: out[0] = v; out[1] = up; out[2] = uq; break;
    }
}

void aug_hue(uint8_t *rgb, size_t n, float hue)
{
    /* torchvision: np_h += np.uint8(hue_factor * 255): the double product truncated toward zero, then taken
     * modulo 256 (-25.5 -> -25 -> 231), added with uint8 wrap-around. */
    uint8_t shift = (uint8_t)((unsigned)(int)((double)hue * 255.0) & 255u);
    for (size_t i = 0; i < n; i++) {
        uint8_t hsv[3];
        rgb_to_hsv(rgb + 3 * i, hsv);
        hsv[0] = (uint8_t)(hsv[0] + shift);
        hsv_to_rgb(hsv, rgb + 3 * i);
    }
}

void aug_grayscale(uint8_t *rgb, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = rgb + 3 * i;
        p[0] = p[1] = p[2] = luma(p);
    }
}

void aug_solarize(uint8_t *rgb, size_t n)
{
    for (size_t i = 0; i < 3 * n; i++)
        if (rgb[i] >= 128)
            rgb[i] = (uint8_t)(255 - rgb[i]);
}

/* Reflect padding (torch "reflect"): -1 -> 1, n -> n - 2; requires |offset| < n. */
static inline int32_t reflect(int32_t i, int32_t n)
{
    if (i < 0)
        return -i;
    if (i >= n)
        return 2 * (n - 1) - i;
    return i;
}

int aug_blur(uint8_t *rgb, int32_t w, int32_t h, float sigma, float *tmp)
{
    const int r = AUG_BLUR_KSIZE / 2;
    if (w <= r || h <= r)
        return lvd_fail("augment: blur needs at least %dx%d pixels, got %dx%d", r + 1, r + 1, (int)w, (int)h);
    if (!(sigma > 0.0f))
        return lvd_fail("augment: blur sigma %g is not positive", (double)sigma);
    /* torchvision's _get_gaussian_kernel1d in float32: x = -4..4, exp(-0.5 * (x / sigma)^2) / sum. */
    float k[AUG_BLUR_KSIZE], ksum = 0.0f;
    for (int t = 0; t < AUG_BLUR_KSIZE; t++) {
        float x = (float)(t - r) / sigma;
        k[t] = expf(-0.5f * (x * x));
        ksum += k[t];
    }
    for (int t = 0; t < AUG_BLUR_KSIZE; t++)
        k[t] /= ksum;
    /* The 9 x 9 kernel is the outer product k k^T, so two 1-D passes (rows into tmp, then columns) give the
     * same sum; accumulating in double keeps the result within float rounding of the exact value, which is
     * as close as torch's own float32 convolution gets. */
    for (int32_t y = 0; y < h; y++) {
        const uint8_t *row = rgb + (size_t)y * w * 3;
        float *trow = tmp + (size_t)y * w * 3;
        for (int32_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double acc = 0.0;
                for (int t = 0; t < AUG_BLUR_KSIZE; t++)
                    acc += (double)k[t] * row[(size_t)reflect(x + t - r, w) * 3 + c];
                trow[(size_t)x * 3 + c] = (float)acc;
            }
    }
    for (int32_t y = 0; y < h; y++) {
        const float *src[AUG_BLUR_KSIZE];
        for (int t = 0; t < AUG_BLUR_KSIZE; t++)
            src[t] = tmp + (size_t)reflect(y + t - r, h) * w * 3;
        uint8_t *out = rgb + (size_t)y * w * 3;
        for (size_t i = 0; i < (size_t)w * 3; i++) {
            double acc = 0.0;
            for (int t = 0; t < AUG_BLUR_KSIZE; t++)
                acc += (double)k[t] * src[t][i];
            /* torch.round (half to even) then .to(uint8); a convex sum of bytes stays in [0, 255] up to
             * rounding, hence the clamp. */
            double v = nearbyint(acc);
            out[i] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : (uint8_t)v;
        }
    }
    return 0;
}
