/* preprocess.c — resize shorter side, center crop, normalise (see preprocess.h). */
#include "preprocess.h"

#include <stdlib.h>

#include "err.h"
#include "resize.h"

const float PREPROCESS_MEAN[3] = {0.485f, 0.456f, 0.406f};
const float PREPROCESS_STD[3] = {0.229f, 0.224f, 0.225f};

/* int(round(d / 2.0)) for d >= 0 with Python's round: halves go to the even neighbour. */
static uint32_t half_round_even(uint32_t d)
{
    uint32_t k = d / 2;
    if ((d & 1) && (k & 1))
        k++;
    return k;
}

int preprocess_geometry(uint32_t w, uint32_t h, uint32_t resize, uint32_t crop, preprocess_geom *g)
{
    if (w == 0 || h == 0 || resize == 0 || crop == 0)
        return lvd_fail("preprocess: empty image or size (%ux%u, resize %u, crop %u)", (unsigned)w, (unsigned)h,
                        (unsigned)resize, (unsigned)crop);
    if (crop > resize)
        return lvd_fail("preprocess: crop %u is larger than resize %u", (unsigned)crop, (unsigned)resize);
    /* torchvision: new_long = int(size * long / short), in floating point; the integer quotient is the same
     * value without rounding trouble. */
    if (w <= h) {
        g->rw = resize;
        g->rh = (uint32_t)(((uint64_t)resize * h) / w);
    } else {
        g->rh = resize;
        g->rw = (uint32_t)(((uint64_t)resize * w) / h);
    }
    g->crop = crop;
    g->left = half_round_even(g->rw - crop);
    g->top = half_round_even(g->rh - crop);
    return 0;
}

size_t preprocess_scratch_bytes(uint32_t w, uint32_t h, uint32_t resize, uint32_t crop)
{
    preprocess_geom g = {0};
    if (preprocess_geometry(w, h, resize, crop, &g) != 0)
        return 0;
    return (size_t)g.rw * g.rh * 3;
}

int preprocess_image(const img_rgb *im, uint32_t resize, uint32_t crop, float *out, uint8_t *scratch,
                     size_t scratch_cap)
{
    if (!im || !im->px)
        return lvd_fail("preprocess: no image");
    preprocess_geom g;
    if (preprocess_geometry(im->w, im->h, resize, crop, &g) != 0)
        return -1;
    size_t need = (size_t)g.rw * g.rh * 3;
    uint8_t *own = NULL;
    if (!scratch || scratch_cap < need) {
        if (!(own = malloc(need)))
            return lvd_fail("preprocess: out of memory for a %ux%u image", (unsigned)g.rw, (unsigned)g.rh);
        scratch = own;
    }
    if (resize_plane(im->px, im->w, im->h, 3, scratch, g.rw, g.rh, RESIZE_FILTER_BICUBIC) != 0) {
        free(own);
        return -1;
    }
    /* Per channel: (v / 255 - mean) / std = v * a + b, computed in float like torchvision's float32 ops
     * to within a rounding step. */
    size_t plane = (size_t)crop * crop;
    for (int c = 0; c < 3; c++) {
        const float mean = PREPROCESS_MEAN[c], std = PREPROCESS_STD[c];
        float *o = out + (size_t)c * plane;
        for (uint32_t y = 0; y < crop; y++) {
            const uint8_t *row = scratch + (((size_t)g.top + y) * g.rw + g.left) * 3 + c;
            for (uint32_t x = 0; x < crop; x++)
                o[(size_t)y * crop + x] = ((float)row[(size_t)x * 3] / 255.0f - mean) / std;
        }
    }
    free(own);
    return 0;
}
