/* augment.c — DINOv2's multi-crop augmentation: configuration, parameter draws, the crop chain and the
 * per-sample helper (see augment.h); the pixel operations are in augment_ops.c. */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "resize.h"

/* ImageNet statistics, as torchvision's Normalize receives them (float32). */
static const float AUG_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float AUG_STD[3] = {0.229f, 0.224f, 0.225f};

#define AUG_MAX_SIDE 4096 /* largest crop output side accepted, pixels */

void aug_config_default(aug_config *c)
{
    memset(c, 0, sizeof *c);
    c->global_size = 224;
    c->global_scale[0] = 0.32;
    c->global_scale[1] = 1.0;
    c->local_size = 96;
    c->local_scale[0] = 0.05;
    c->local_scale[1] = 0.32;
    c->n_local = 8;
    c->jitter[0] = 0.4;
    c->jitter[1] = 0.4;
    c->jitter[2] = 0.2;
    c->jitter[3] = 0.1;
    c->paper_probabilities = 0;
}

static int check_scale(const double *s, const char *name)
{
    if (!(s[0] > 0.0 && s[0] <= s[1] && s[1] <= 1.0))
        return lvd_fail("augment: %s (%g, %g) is not a range inside (0, 1]", name, s[0], s[1]);
    return 0;
}

int aug_config_check(const aug_config *c)
{
    /* A crop side below the blur's reflection width (5) could not be blurred; 8 leaves room. */
    if (c->global_size < 8 || c->global_size > AUG_MAX_SIDE)
        return lvd_fail("augment: global crop size %d is outside 8..%d", (int)c->global_size, AUG_MAX_SIDE);
    if (c->local_size < 8 || c->local_size > AUG_MAX_SIDE)
        return lvd_fail("augment: local crop size %d is outside 8..%d", (int)c->local_size, AUG_MAX_SIDE);
    if (check_scale(c->global_scale, "global crop scale") != 0 || check_scale(c->local_scale, "local crop scale") != 0)
        return -1;
    if (c->n_local < 0 || c->n_local > AUG_MAX_LOCAL)
        return lvd_fail("augment: %d local crops is outside 0..%d", (int)c->n_local, AUG_MAX_LOCAL);
    static const char *names[4] = {"brightness", "contrast", "saturation", "hue"};
    for (int i = 0; i < 4; i++)
        if (!(c->jitter[i] >= 0.0) || !isfinite(c->jitter[i]))
            return lvd_fail("augment: color jitter %s %g is not a finite value >= 0", names[i], c->jitter[i]);
    if (c->jitter[3] > 0.5)
        return lvd_fail("augment: color jitter hue %g is above 0.5", c->jitter[3]);
    return 0;
}

aug_probs aug_crop_probs(const aug_config *c, aug_kind kind)
{
    aug_probs p = {0.5, 0.8, 0.2, 0.0, 0.0};
    int paper = c->paper_probabilities != 0;
    switch (kind) {
    case AUG_KIND_GLOBAL1:
        p.blur = paper ? 1.0 : 0.0; /* augmentations.py GaussianBlur(p=1.0); transforms.py applies 1 - p */
        break;
    case AUG_KIND_GLOBAL2:
        p.blur = paper ? 0.1 : 0.9; /* GaussianBlur(p=0.1) */
        p.solarize = 0.2;           /* RandomSolarize(threshold=128, p=0.2) */
        break;
    case AUG_KIND_LOCAL:
        p.blur = 0.5; /* GaussianBlur(p=0.5): 1 - 0.5 is 0.5 */
        break;
    }
    return p;
}

/* ---------------------------------------------------------------------------------------------------------
 * Counter-based random numbers: value n of the stream keyed k is mix64(k + n * golden), splitmix64's
 * output function, so any draw is a pure function of (seed, epoch, sample, crop, n).
 */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define GOLDEN 0x9E3779B97F4A7C15ull

typedef struct rng {
    uint64_t key, n;
} rng;

/* mix64 is a bijection, so two keys differing in any one field differ. */
static rng rng_for(uint64_t seed, uint64_t epoch, uint64_t sample, uint64_t crop)
{
    uint64_t k = mix64(seed + GOLDEN);
    k = mix64(k ^ (epoch + 2 * GOLDEN));
    k = mix64(k ^ (sample + 3 * GOLDEN));
    k = mix64(k ^ (crop + 4 * GOLDEN));
    return (rng){k, 0};
}

static inline uint64_t rng_u64(rng *r)
{
    r->n++;
    return mix64(r->key + r->n * GOLDEN);
}

/* Uniform in [0, 1), 53 bits. */
static inline double rng_unit(rng *r)
{
    return (double)(rng_u64(r) >> 11) * 0x1p-53;
}

static inline double rng_uniform(rng *r, double a, double b)
{
    return a + (b - a) * rng_unit(r);
}

/* Uniform integer in [0, n), n >= 1, unbiased (Lemire's multiply-and-reject). */
static uint32_t rng_below(rng *r, uint32_t n)
{
    uint64_t m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (low < t) {
            m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* Python's round() to an int: half to even (the default rounding mode of rint). */
static inline int64_t round_even(double x)
{
    return (int64_t)rint(x);
}

/* RandomResizedCrop.get_params with ratio (3/4, 4/3): up to 10 tries of a uniform area fraction and a
 * log-uniform aspect ratio, else the whole image clamped to the ratio range, centred. */
static void draw_box(rng *r, int32_t width, int32_t height, const double *scale, aug_crop_params *p)
{
    const double rmin = 3.0 / 4.0, rmax = 4.0 / 3.0;
    const double lmin = log(rmin), lmax = log(rmax);
    double area = (double)width * height;
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * rng_uniform(r, scale[0], scale[1]);
        double aspect = exp(rng_uniform(r, lmin, lmax));
        int64_t w = round_even(sqrt(target * aspect));
        int64_t h = round_even(sqrt(target / aspect));
        if (0 < w && w <= width && 0 < h && h <= height) {
            p->top = (int32_t)rng_below(r, (uint32_t)(height - h + 1));
            p->left = (int32_t)rng_below(r, (uint32_t)(width - w + 1));
            p->height = (int32_t)h;
            p->width = (int32_t)w;
            return;
        }
    }
    double in_ratio = (double)width / (double)height;
    int64_t w = width, h = height;
    if (in_ratio < rmin) {
        h = round_even((double)w / rmin);
    } else if (in_ratio > rmax) {
        w = round_even((double)h * rmax);
    }
    if (h > height) /* cannot happen for in_ratio < 3/4; kept so the box provably fits */
        h = height;
    if (w > width)
        w = width;
    p->height = (int32_t)h;
    p->width = (int32_t)w;
    p->top = (int32_t)((height - h) / 2);
    p->left = (int32_t)((width - w) / 2);
}

/* One crop, draws in torchvision's order: box, flip, jitter (apply, permutation, factors), grayscale, blur
 * (apply, sigma), solarize. */
static void draw_crop(rng *r, const aug_config *c, aug_kind kind, int32_t src_w, int32_t src_h,
                      aug_crop_params *p)
{
    memset(p, 0, sizeof *p);
    aug_probs pr = aug_crop_probs(c, kind);
    int global = kind != AUG_KIND_LOCAL;
    p->size = global ? c->global_size : c->local_size;
    draw_box(r, src_w, src_h, global ? c->global_scale : c->local_scale, p);
    p->flip = rng_unit(r) < pr.flip;
    p->brightness = p->contrast = p->saturation = 1.0f;
    p->hue = 0.0f;
    if (rng_unit(r) < pr.jitter) {
        /* torch.randperm(4), then the four factors; an adjustment of strength 0 is None in torchvision and
         * skipped, which matters for hue (its HSV round trip is not the identity). */
        uint8_t perm[4] = {0, 1, 2, 3};
        for (int i = 3; i > 0; i--) {
            uint32_t j = rng_below(r, (uint32_t)i + 1);
            uint8_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        double lo[4], hi[4];
        for (int i = 0; i < 3; i++) {
            lo[i] = c->jitter[i] < 1.0 ? 1.0 - c->jitter[i] : 0.0;
            hi[i] = 1.0 + c->jitter[i];
        }
        lo[3] = -c->jitter[3];
        hi[3] = c->jitter[3];
        float f[4];
        for (int i = 0; i < 4; i++)
            f[i] = (float)rng_uniform(r, lo[i], hi[i]); /* float32, as torch's uniform_ draws it */
        p->brightness = f[0];
        p->contrast = f[1];
        p->saturation = f[2];
        p->hue = f[3];
        for (int i = 0; i < 4; i++)
            if (c->jitter[perm[i]] > 0.0)
                p->ops[p->n_ops++] = perm[i];
    }
    p->gray = rng_unit(r) < pr.gray;
    if (rng_unit(r) < pr.blur) {
        p->blur = 1;
        p->sigma = (float)rng_uniform(r, 0.1, 2.0);
    }
    p->solarize = rng_unit(r) < pr.solarize;
}

int aug_draw(const aug_config *c, uint64_t seed, uint64_t sample_index, uint64_t epoch, int32_t src_w,
             int32_t src_h, aug_params *out)
{
    if (aug_config_check(c) != 0)
        return -1;
    if (src_w < 1 || src_h < 1)
        return lvd_fail("augment: empty source image (%dx%d)", (int)src_w, (int)src_h);
    memset(out, 0, sizeof *out); /* unused crops too: equal draws are equal bytes */
    out->n_crops = AUG_N_GLOBAL + c->n_local;
    for (int32_t k = 0; k < out->n_crops; k++) {
        rng r = rng_for(seed, epoch, sample_index, (uint64_t)k);
        aug_kind kind = k == 0 ? AUG_KIND_GLOBAL1 : k == 1 ? AUG_KIND_GLOBAL2 : AUG_KIND_LOCAL;
        draw_crop(&r, c, kind, src_w, src_h, &out->crop[k]);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Applying
 */

int aug_resized_crop(const uint8_t *src, int32_t sw, int32_t sh, int32_t top, int32_t left, int32_t ch,
                     int32_t cw, int32_t size, uint8_t *dst, uint8_t *box)
{
    if (!src || !dst || sw < 1 || sh < 1 || size < 1)
        return lvd_fail("augment: resized crop of an empty image or to an empty size");
    if (top < 0 || left < 0 || ch < 1 || cw < 1 || (int64_t)top + ch > sh || (int64_t)left + cw > sw)
        return lvd_fail("augment: crop box %dx%d at (%d, %d) is not inside %dx%d", (int)cw, (int)ch, (int)left,
                        (int)top, (int)sw, (int)sh);
    /* A full-width box is already a packed run of rows; a narrower one is copied out (PIL's crop). */
    const uint8_t *from = src + (size_t)top * sw * 3;
    if (cw < sw) {
        if (!box)
            return lvd_fail("augment: a %d-wide crop of a %d-wide image needs a box buffer", (int)cw, (int)sw);
        for (int32_t y = 0; y < ch; y++)
            memcpy(box + (size_t)y * cw * 3, src + (((size_t)top + y) * sw + left) * 3, (size_t)cw * 3);
        from = box;
    }
    return resize_plane(from, (uint32_t)cw, (uint32_t)ch, 3, dst, (uint32_t)size, (uint32_t)size,
                        RESIZE_FILTER_BICUBIC);
}

void aug_flip(uint8_t *rgb, int32_t w, int32_t h)
{
    if (w < 2)
        return;
    for (int32_t y = 0; y < h; y++) {
        uint8_t *a = rgb + (size_t)y * w * 3, *b = a + (size_t)(w - 1) * 3;
        for (; a < b; a += 3, b -= 3)
            for (int c = 0; c < 3; c++) {
                uint8_t t = a[c];
                a[c] = b[c];
                b[c] = t;
            }
    }
}

void aug_to_tensor(const uint8_t *rgb, int32_t w, int32_t h, float *out)
{
    size_t plane = (size_t)w * h;
    for (int c = 0; c < 3; c++) {
        const float mean = AUG_MEAN[c], std = AUG_STD[c];
        float *o = out + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++)
            o[i] = ((float)rgb[i * 3 + c] / 255.0f - mean) / std;
    }
}

static size_t box_bytes(const aug_crop_params *p, int32_t src_w)
{
    return p->width < src_w ? (size_t)p->width * p->height * 3 : 0;
}

size_t aug_crop_scratch_bytes(const aug_crop_params *p, int32_t src_w)
{
    return box_bytes(p, src_w) + (size_t)p->size * p->size * 3;
}

size_t aug_scratch_bytes(const aug_config *c, int32_t src_w, int32_t src_h)
{
    int32_t s = c->global_size > c->local_size ? c->global_size : c->local_size;
    size_t box = src_w > 0 && src_h > 0 ? (size_t)src_w * src_h * 3 : 0; /* a box never exceeds the source */
    return box + (size_t)s * s * 3;
}

int aug_apply_crop_u8(const uint8_t *rgb, int32_t w, int32_t h, const aug_crop_params *p, uint8_t *u8,
                      float *tmp, uint8_t *scratch, size_t scratch_cap)
{
    if (!rgb || !p || !u8)
        return lvd_fail("augment: no image, parameters or output");
    if (p->size < 1 || p->size > AUG_MAX_SIDE)
        return lvd_fail("augment: crop size %d is outside 1..%d", (int)p->size, AUG_MAX_SIDE);
    size_t need = box_bytes(p, w);
    uint8_t *own = NULL;
    if (need > 0 && !scratch) {
        if (!(own = malloc(need)))
            return lvd_fail("augment: out of memory for a %dx%d crop box", (int)p->width, (int)p->height);
        scratch = own;
    } else if (need > scratch_cap) {
        return lvd_fail("augment: scratch of %zu bytes is below the %zu the crop box needs", scratch_cap, need);
    }
    int rc = aug_resized_crop(rgb, w, h, p->top, p->left, p->height, p->width, p->size, u8, scratch);
    free(own);
    if (rc != 0)
        return -1;
    size_t n = (size_t)p->size * p->size;
    if (p->flip)
        aug_flip(u8, p->size, p->size);
    for (int i = 0; i < p->n_ops && i < 4; i++) {
        switch ((aug_color_op)p->ops[i]) {
        case AUG_BRIGHTNESS: aug_brightness(u8, n, p->brightness); break;
        case AUG_CONTRAST: aug_contrast(u8, n, p->contrast); break;
        case AUG_SATURATION: aug_saturation(u8, n, p->saturation); break;
        case AUG_HUE: aug_hue(u8, n, p->hue); break;
        default: return lvd_fail("augment: unknown color operation %d", (int)p->ops[i]);
        }
    }
    if (p->gray)
        aug_grayscale(u8, n);
    if (p->blur) {
        float *own_tmp = NULL;
        if (!tmp) {
            if (!(own_tmp = malloc(n * 3 * sizeof(float))))
                return lvd_fail("augment: out of memory for a %dx%d blur", (int)p->size, (int)p->size);
            tmp = own_tmp;
        }
        rc = aug_blur(u8, p->size, p->size, p->sigma, tmp);
        free(own_tmp);
        if (rc != 0)
            return -1;
    }
    if (p->solarize)
        aug_solarize(u8, n);
    return 0;
}

int aug_apply_crop(const uint8_t *rgb, int32_t w, int32_t h, const aug_crop_params *p, float *out,
                   uint8_t *scratch, size_t scratch_cap)
{
    if (!p || !out)
        return lvd_fail("augment: no parameters or output");
    if (p->size < 1 || p->size > AUG_MAX_SIDE)
        return lvd_fail("augment: crop size %d is outside 1..%d", (int)p->size, AUG_MAX_SIDE);
    size_t need = aug_crop_scratch_bytes(p, w);
    uint8_t *own = NULL;
    if (!scratch) {
        if (!(own = malloc(need)))
            return lvd_fail("augment: out of memory for %zu bytes of crop scratch", need);
        scratch = own;
        scratch_cap = need;
    } else if (scratch_cap < need) {
        return lvd_fail("augment: scratch of %zu bytes is below the %zu this crop needs", scratch_cap, need);
    }
    /* Layout: the S x S x 3 working image first, then the crop box; the output tensor (3 S^2 floats) doubles
     * as the blur's intermediate, since it is written only after the blur. */
    size_t work = (size_t)p->size * p->size * 3;
    int rc = aug_apply_crop_u8(rgb, w, h, p, scratch, out, scratch + work, scratch_cap - work);
    if (rc == 0)
        aug_to_tensor(scratch, p->size, p->size, out);
    free(own);
    return rc;
}

int aug_sample(const aug_config *c, uint64_t seed, uint64_t sample_index, uint64_t epoch, const uint8_t *rgb,
               int32_t w, int32_t h, float *global, float *local, aug_params *params, uint8_t *scratch,
               size_t scratch_cap)
{
    aug_params own_params, *ap = params ? params : &own_params;
    if (aug_draw(c, seed, sample_index, epoch, w, h, ap) != 0)
        return -1;
    if (!global || (c->n_local > 0 && !local))
        return lvd_fail("augment: no output buffer for the crops");
    uint8_t *own = NULL;
    if (!scratch) {
        scratch_cap = aug_scratch_bytes(c, w, h);
        if (!(own = malloc(scratch_cap)))
            return lvd_fail("augment: out of memory for %zu bytes of crop scratch", scratch_cap);
        scratch = own;
    }
    size_t gsz = (size_t)3 * c->global_size * c->global_size, lsz = (size_t)3 * c->local_size * c->local_size;
    int rc = 0;
    for (int32_t k = 0; k < ap->n_crops && rc == 0; k++) {
        float *out = k < AUG_N_GLOBAL ? global + (size_t)k * gsz : local + (size_t)(k - AUG_N_GLOBAL) * lsz;
        rc = aug_apply_crop(rgb, w, h, &ap->crop[k], out, scratch, scratch_cap);
    }
    free(own);
    if (rc != 0)
        return lvd_fail_ctx("augment: sample %llu", (unsigned long long)sample_index);
    return 0;
}
