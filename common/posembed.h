/* posembed.h — resampling the positional-embedding grid exactly like PyTorch's
 * F.interpolate(mode="bicubic", align_corners=False) in DINOv2's two modes (see vit_pos_mode in vit.h):
 *   VIT_POS_OFFSET:  scale_factor = ((gh + 0.1) / M, (gw + 0.1) / M), antialias off (cubic a = -0.75,
 *                    source index = (dst + 0.5) * (1 / scale) - 0.5, neighbours clamped at the edges);
 *   VIT_POS_SIZE_AA: size = (gh, gw), antialias on (separable, a = -0.5, support widened when shrinking,
 *                    weights normalised per output sample).
 * Both are separable, so the resampling is dst = Wy * src * Wx^T per channel, and the backward pass is the
 * transpose. Grids are row-major (rows, cols, D) with D channels innermost, like pos_embed[1:].
 */
#ifndef LVD_POSEMBED_H
#define LVD_POSEMBED_H

#include <stdint.h>

#include "vit.h"

/* 1-D weights for n_in -> n_out samples: w is (n_out, n_in) row-major, caller-owned. Returns 0 or -1. */
int posembed_weights(int32_t n_in, int32_t n_out, vit_pos_mode mode, float *w);

/* src (M, M, D) -> dst (gh, gw, D). Returns 0 or -1 (allocation). */
int posembed_forward(const float *src, int32_t m, int32_t d, int32_t gh, int32_t gw, vit_pos_mode mode, float *dst);

/* Accumulates into dsrc (M, M, D) the gradient of the resampling given ddst (gh, gw, D). Returns 0 or -1. */
int posembed_backward(const float *ddst, int32_t m, int32_t d, int32_t gh, int32_t gw, vit_pos_mode mode,
                      float *dsrc);

#endif
