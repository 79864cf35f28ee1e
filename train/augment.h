/* augment.h — DINOv2's multi-crop augmentation (dinov2/data/augmentations.py, DataAugmentationDINO), in C,
 * for the trainer's loader threads.
 *
 * Per sample: 2 global crops and n local crops of one 8-bit RGB working image. Each crop is, in this order
 * (torchvision on a PIL image, which is what DINOv2 runs):
 *
 *   RandomResizedCrop(S, scale, ratio (3/4, 4/3), BICUBIC)  crop an integer box, then Pillow's antialiased
 *                                                           bicubic resize to S x S (common/resize.h)
 *   RandomHorizontalFlip(0.5)
 *   RandomApply([ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)  the four adjustments in a random order
 *   RandomGrayscale(0.2)
 *   GaussianBlur (kernel 9, sigma uniform in [0.1, 2.0]) with the crop kind's probability
 *   RandomSolarize(128) with the crop kind's probability   (global crop 2 only)
 *   ToTensor + Normalize(ImageNet mean, std)                float32 (3, S, S)
 *
 * Blur and solarize probabilities (aug_crop_probs). dinov2/data/transforms.py's GaussianBlur(p) wraps
 * torchvision's RandomApply with p = 1 - p ("keep_p"), but RandomApply's p is the probability of *applying*
 * the transform, so the released code blurs with 1 - p of what augmentations.py asks for:
 *
 *                  blur p: released code (default)   paper = augmentations.py as written   solarize p (both)
 *   global crop 1    0.0                               1.0                                   0
 *   global crop 2    0.9                               0.1                                   0.2
 *   local crops      0.5                               0.5                                   0
 *
 * (crops.paper_probabilities: true in the trainer's configuration sets paper_probabilities.)
 *
 * The released checkpoints were trained with the left column, so it is the default. Flip 0.5, jitter 0.8 and
 * grayscale 0.2 are the same for every crop and in both settings.
 *
 * Randomness. Drawing (aug_draw) is separate from applying (aug_apply_crop). Every random choice of crop k of
 * sample s in epoch e comes from a counter-based stream keyed by (seed, epoch, sample index, k) alone, so a
 * sample's crops do not depend on which thread draws them, in which order, or how many threads there are.
 * The distributions are torchvision's; the random numbers are not torch's (nothing here reproduces torch's
 * generator).
 *
 * Arithmetic. Each operation reproduces the integer / float arithmetic of the Pillow 9.4 / torchvision 0.14
 * code it stands for (see the single operations at the end), so the uint8 result is the same byte for byte
 * and the float tensor the same bits, except after GaussianBlur, which torchvision computes as a float32
 * 9 x 9 convolution in a summation order that is not reproduced: a value whose exact result lies within ~1e-5
 * of a rounding boundary may come out one level away (about 1 value in 10^5, tests/unit/train/test_augment.c).
 *
 * Threads: no function here starts threads or keeps state; a call uses only its arguments and the caller's
 * scratch, so loader threads can call everything concurrently. (resize_plane, used for the resize, allocates
 * its weight tables and intermediate row buffer itself.)
 */
#ifndef LVD_AUGMENT_H
#define LVD_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#define AUG_N_GLOBAL 2
#define AUG_MAX_LOCAL 32 /* local crops per sample at most (the recipe uses 8) */
#define AUG_MAX_CROPS (AUG_N_GLOBAL + AUG_MAX_LOCAL)
#define AUG_BLUR_KSIZE 9 /* GaussianBlur kernel side, pixels */

/* The recipe's knobs (dinov2 ssl_default_config.yaml, crops:). */
typedef struct aug_config {
    int32_t global_size;       /* output side of the global crops, pixels: 224 */
    double global_scale[2];    /* RandomResizedCrop area fraction range of the global crops: (0.32, 1.0) */
    int32_t local_size;        /* output side of the local crops, pixels: 96 */
    double local_scale[2];     /* ... of the local crops: (0.05, 0.32) */
    int32_t n_local;           /* local crops per sample, 0..AUG_MAX_LOCAL: 8 */
    double jitter[4];          /* ColorJitter brightness, contrast, saturation, hue: 0.4, 0.4, 0.2, 0.1 */
    int paper_probabilities;   /* 0: the released code's blur probabilities (default); 1: the paper's */
} aug_config;

/* Fills the recipe's defaults (values above). */
void aug_config_default(aug_config *c);

/* 0 if every field is usable (crop sizes 8..4096, 0 < scale[0] <= scale[1] <= 1, n_local in range, finite
 * jitter >= 0, hue <= 0.5), else -1 with a message naming the field. A jitter strength of 0 leaves that
 * adjustment out (torchvision's None). */
int aug_config_check(const aug_config *c);

/* Crop kinds: index 0 is global crop 1, index 1 global crop 2, 2.. local crops. */
typedef enum aug_kind { AUG_KIND_GLOBAL1 = 0, AUG_KIND_GLOBAL2, AUG_KIND_LOCAL } aug_kind;

/* Probabilities of the per-crop random choices. */
typedef struct aug_probs {
    double flip, jitter, gray, blur, solarize;
} aug_probs;

/* The probabilities crops of `kind` are drawn with under c (see the table at the top). */
aug_probs aug_crop_probs(const aug_config *c, aug_kind kind);

/* ColorJitter's adjustments, numbered as torchvision's fn_idx. */
typedef enum aug_color_op { AUG_BRIGHTNESS = 0, AUG_CONTRAST = 1, AUG_SATURATION = 2, AUG_HUE = 3 } aug_color_op;

/* Every random choice of one crop; applying it is deterministic. */
typedef struct aug_crop_params {
    int32_t size;                 /* output side S, pixels */
    int32_t top, left;            /* crop box origin in the source, pixels (torchvision's i, j) */
    int32_t height, width;        /* crop box size, pixels, >= 1, inside the source (torchvision's h, w) */
    uint8_t flip;                 /* 1: mirror left-right after the resize */
    uint8_t n_ops;                /* ColorJitter adjustments to apply, 0 when jitter was not drawn */
    uint8_t ops[4];               /* the first n_ops are aug_color_op values in application order */
    float brightness, contrast;   /* blend factors (float32, as Pillow's blend receives them) */
    float saturation, hue;        /* saturation blend factor; hue shift in turns, [-0.5, 0.5] */
    uint8_t gray;                 /* 1: grayscale (after jitter) */
    uint8_t blur;                 /* 1: Gaussian blur with sigma */
    float sigma;                  /* blur standard deviation, pixels (float32, as torchvision builds the kernel) */
    uint8_t solarize;             /* 1: invert values >= 128 */
} aug_crop_params;

/* All crops of one sample: crop[0], crop[1] global, crop[2 .. 2 + n_local) local. */
typedef struct aug_params {
    int32_t n_crops; /* 2 + n_local */
    aug_crop_params crop[AUG_MAX_CROPS];
} aug_params;

/* Draws all crops of sample `sample_index` in `epoch` for a src_w x src_h source. Deterministic in (c, seed,
 * epoch, sample_index, src_w, src_h). Returns 0 or -1 (invalid config or empty source). */
int aug_draw(const aug_config *c, uint64_t seed, uint64_t sample_index, uint64_t epoch, int32_t src_w,
             int32_t src_h, aug_params *out);

/* Scratch bytes aug_apply_crop needs for crop p of a src_w-wide source: the S x S x 3 working image plus the
 * crop box (ch * cw * 3, when it is narrower than the source). aug_apply_crop_u8 needs the crop box only. */
size_t aug_crop_scratch_bytes(const aug_crop_params *p, int32_t src_w);

/* Scratch bytes that suffice for any crop of any sample under c from a src_w x src_h source. */
size_t aug_scratch_bytes(const aug_config *c, int32_t src_w, int32_t src_h);

/* Applies crop p to rgb (w x h, interleaved RGB, rows packed) and writes the normalised float32 tensor to out,
 * (3, S, S) channel-major: out[c][y][x] = (v / 255 - mean[c]) / std[c]. scratch: NULL (allocated and freed
 * here) or at least aug_crop_scratch_bytes(p, w) bytes (-1 if smaller). Returns 0 or -1 (message set). */
int aug_apply_crop(const uint8_t *rgb, int32_t w, int32_t h, const aug_crop_params *p, float *out,
                   uint8_t *scratch, size_t scratch_cap);

/* The same chain up to, not including, ToTensor: the 8-bit crop into u8 (S x S x 3 interleaved), what the PIL
 * image holds at that point. tmp: 3 * S * S floats for the blur (NULL: allocated here when needed). scratch:
 * the crop box (NULL: allocated here when needed; -1 if smaller than the box). Returns 0 or -1. */
int aug_apply_crop_u8(const uint8_t *rgb, int32_t w, int32_t h, const aug_crop_params *p, uint8_t *u8,
                      float *tmp, uint8_t *scratch, size_t scratch_cap);

/* Draws and applies every crop of one sample: global (2, 3, G, G) and local (n_local, 3, L, L), float32,
 * normalised. params (optional, may be NULL) receives what was drawn. scratch as for aug_apply_crop, sized by
 * aug_scratch_bytes. Returns 0 or -1. */
int aug_sample(const aug_config *c, uint64_t seed, uint64_t sample_index, uint64_t epoch, const uint8_t *rgb,
               int32_t w, int32_t h, float *global, float *local, aug_params *params, uint8_t *scratch,
               size_t scratch_cap);

/* ---------------------------------------------------------------------------------------------------------
 * The single operations, in place on n interleaved RGB pixels (rgb: n * 3 bytes) unless stated. Each names the
 * torchvision / Pillow code it reproduces.
 */

/* F.resized_crop on a PIL image: crop (top, left, ch, cw) of src (sw x sh), then Image.resize((S, S),
 * BICUBIC) into dst (S * S * 3). box: ch * cw * 3 bytes when cw < sw, unused (may be NULL) otherwise.
 * Returns 0 or -1. */
int aug_resized_crop(const uint8_t *src, int32_t sw, int32_t sh, int32_t top, int32_t left, int32_t ch,
                     int32_t cw, int32_t size, uint8_t *dst, uint8_t *box);

/* F.hflip: mirrors each of the h rows of w pixels. */
void aug_flip(uint8_t *rgb, int32_t w, int32_t h);

/* ImageEnhance.Brightness(f): Image.blend(black, img, f), i.e. v' = trunc(clamp(float(v * f))). */
void aug_brightness(uint8_t *rgb, size_t n, float f);

/* ImageEnhance.Contrast(f): blend with a gray image of int(mean(L) + 0.5), L = Pillow's RGB -> L. */
void aug_contrast(uint8_t *rgb, size_t n, float f);

/* ImageEnhance.Color(f): blend with the pixel's own L (as RGB). */
void aug_saturation(uint8_t *rgb, size_t n, float f);

/* F.adjust_hue(hue): RGB -> Pillow's HSV, H += uint8(trunc(hue * 255)) modulo 256, HSV -> RGB. */
void aug_hue(uint8_t *rgb, size_t n, float hue);

/* F.rgb_to_grayscale(img, 3): each channel = Pillow's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16. */
void aug_grayscale(uint8_t *rgb, size_t n);

/* F.gaussian_blur(img, [9, 9], [sigma, sigma]) on a w x h image: float32 kernel exp(-x^2 / (2 sigma^2))
 * normalised, reflect padding (edge pixel not repeated), rounded half to even. Requires w, h >= 5 (the
 * reflection of 4 pixels). tmp: 3 * w * h floats. Returns 0 or -1. */
int aug_blur(uint8_t *rgb, int32_t w, int32_t h, float sigma, float *tmp);

/* ImageOps.solarize(img, 128): v >= 128 becomes 255 - v. */
void aug_solarize(uint8_t *rgb, size_t n);

/* ToTensor + Normalize(ImageNet): rgb (S x S x 3) into out (3, S, S), computed in float32 as torchvision
 * does ((v / 255) - mean) / std. */
void aug_to_tensor(const uint8_t *rgb, int32_t w, int32_t h, float *out);

#endif
