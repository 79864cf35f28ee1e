/* preprocess.h — the evaluation transform of DINOv2 (and of torchvision's ImageNet recipe), in C:
 *
 *   Resize(resize, BICUBIC) -> CenterCrop(crop) -> ToTensor() -> Normalize(IMAGENET mean, std)
 *
 * applied to an 8-bit RGB image the way torchvision applies it to a PIL image:
 *   - Resize(int): the shorter side becomes `resize`, the longer side int(resize * long / short)
 *     (truncated, as torchvision computes it); resampling is Pillow's antialiased BICUBIC (resize_plane);
 *   - CenterCrop: top = int(round((h - crop) / 2.0)), left likewise, with Python's round (half to even);
 *   - ToTensor: value / 255; Normalize: (x - mean[c]) / std[c].
 * Output: float32 (3, crop, crop), channel-major (CHW), the layout vit_forward takes.
 */
#ifndef LVD_PREPROCESS_H
#define LVD_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* ImageNet statistics (torchvision / DINOv2). */
extern const float PREPROCESS_MEAN[3]; /* 0.485, 0.456, 0.406 */
extern const float PREPROCESS_STD[3];  /* 0.229, 0.224, 0.225 */

typedef struct preprocess_geom {
    uint32_t rw, rh;     /* size after Resize */
    uint32_t left, top;  /* crop window origin inside (rw, rh) */
    uint32_t crop;       /* crop side */
} preprocess_geom;

/* Geometry for a w x h image. Requires crop <= resize (so the window always fits); -1 otherwise or for an
 * empty image. */
int preprocess_geometry(uint32_t w, uint32_t h, uint32_t resize, uint32_t crop, preprocess_geom *g);

/* Scratch bytes preprocess_image needs for an image of w x h (the resized 8-bit image). */
size_t preprocess_scratch_bytes(uint32_t w, uint32_t h, uint32_t resize, uint32_t crop);

/* Runs the transform on im into out (3 * crop * crop floats). scratch: NULL (allocated and freed here) or
 * at least preprocess_scratch_bytes() bytes. Returns 0 or -1 (message set). */
int preprocess_image(const img_rgb *im, uint32_t resize, uint32_t crop, float *out, uint8_t *scratch,
                     size_t scratch_cap);

#endif
