/* resize.h — antialiased resampling, cropping, and img2dataset's resize-mode geometry.
 *
 * img_resize is separable convolution resampling like Pillow's Image.resize: a bicubic (a = -0.5) kernel
 * whose support is widened by the scale factor when shrinking, so downscaling averages every source pixel
 * (antialiasing); weights are normalised per output pixel; pixel centres at +0.5; edges clamp.
 */
#ifndef LVD_RESIZE_H
#define LVD_RESIZE_H

#include <stdint.h>

#include "image.h"

typedef enum resize_mode {
    RESIZE_NO = 0,             /* keep the decoded size */
    RESIZE_KEEP_RATIO,         /* shorter side = size, aspect kept */
    RESIZE_KEEP_RATIO_LARGEST, /* longer side = size, aspect kept */
    RESIZE_CENTER_CROP         /* shorter side = size, then the centred size x size square */
} resize_mode;

/* "no", "keep_ratio", "keep_ratio_largest", "center_crop". */
const char *resize_mode_name(resize_mode m);

typedef struct resize_plan {
    uint32_t rw, rh;         /* size after resampling */
    uint32_t cx, cy, cw, ch; /* crop window inside (rw, rh); the whole image when no crop */
} resize_plan;

/* Geometry for an image of w x h. The resampled side is rounded to nearest, at least 1.
 * only_if_bigger: never enlarge (img2dataset's resize_only_if_bigger); the crop still applies. */
resize_plan resize_compute(resize_mode m, uint32_t size, int only_if_bigger, uint32_t w, uint32_t h);

/* Kernels for resize_plane. */
typedef enum resize_filter {
    RESIZE_FILTER_BICUBIC = 0, /* a = -0.5, support 2: Pillow's BICUBIC; what img_resize uses */
    RESIZE_FILTER_LANCZOS      /* Lanczos-3: Pillow's LANCZOS (formerly ANTIALIAS); what phash uses */
} resize_filter;

/* The resampler behind img_resize for any channel count: src is sh rows of sw * nch interleaved bytes,
 * dst (caller-owned) receives dh rows of dw * nch bytes. Returns 0 or -1. */
int resize_plane(const uint8_t *src, uint32_t sw, uint32_t sh, uint32_t nch, uint8_t *dst, uint32_t dw,
                 uint32_t dh, resize_filter f);

/* Resamples src to dw x dh into dst (allocated here). Returns 0 or -1. */
int img_resize(const img_rgb *src, uint32_t dw, uint32_t dh, img_rgb *dst);

/* Copies the window (x, y, w, h), which must lie inside src, into dst (allocated here). */
int img_crop(const img_rgb *src, uint32_t x, uint32_t y, uint32_t w, uint32_t h, img_rgb *dst);

/* Applies a plan: resample then crop; dst allocated here. */
int img_apply_plan(const img_rgb *src, const resize_plan *p, img_rgb *dst);

#endif
