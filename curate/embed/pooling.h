/* pooling.h — the features lvd-embed keeps of one image, from the ViT's normed outputs (vit_out_cls,
 * vit_out_patch): `--pool cls` the CLS token, `mean` the mean of the patch tokens, `cls+mean` their
 * concatenation [cls, mean] (DINOv2's linear-evaluation features). The row is L2-normalised afterwards
 * (embed_l2_normalise). A function of the image's own outputs only, so a row does not depend on the batch.
 */
#ifndef LVD_EMBED_POOLING_H
#define LVD_EMBED_POOLING_H

#include <stdint.h>

typedef enum embed_pool_kind { EMBED_POOL_CLS = 0, EMBED_POOL_MEAN = 1, EMBED_POOL_CLS_MEAN = 2 } embed_pool_kind;

/* Floats per row of kind for a model of dimension dim: dim, or 2 * dim for cls+mean. */
int32_t embed_pool_dim(embed_pool_kind kind, int32_t dim);

/* row (embed_pool_dim floats) from one image's cls (D) and patch tokens (n_patch, D). The mean is summed in
 * double, token by token in order. */
void embed_pool(float *row, embed_pool_kind kind, const float *cls, const float *patch, int32_t n_patch,
                int32_t dim);

#endif
