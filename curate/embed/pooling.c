/* pooling.c — see pooling.h. */
#include "pooling.h"

#include <string.h>

int32_t embed_pool_dim(embed_pool_kind kind, int32_t dim) { return kind == EMBED_POOL_CLS_MEAN ? 2 * dim : dim; }

void embed_pool(float *row, embed_pool_kind kind, const float *cls, const float *patch, int32_t n_patch,
                int32_t dim)
{
    if (kind != EMBED_POOL_MEAN)
        memcpy(row, cls, sizeof(float) * (size_t)dim);
    if (kind == EMBED_POOL_CLS)
        return;
    float *mean = row + (kind == EMBED_POOL_CLS_MEAN ? dim : 0);
    for (int32_t d = 0; d < dim; d++) {
        double acc = 0;
        for (int32_t t = 0; t < n_patch; t++)
            acc += patch[(size_t)t * (size_t)dim + (size_t)d];
        mean[d] = (float)(acc / n_patch);
    }
}
