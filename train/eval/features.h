/* features.h — the evaluation features of one catalog collection: every member with a working image, run
 * through a ViT with DINOv2's evaluation transform (Resize(resize, BICUBIC), CenterCrop(crop), ImageNet
 * normalisation: common/preprocess.h) and kept as its L2-normalised CLS token, as dinov2's eval/utils.py
 * ModelWithNormalize does for k-NN evaluation; or, for linear evaluation (n_blocks > 0), as dinov2's
 * eval/linear.py create_linear_input makes them: the CLS tokens of the last n_blocks blocks (oldest first),
 * each through the final LayerNorm (get_intermediate_layers(norm=True)), then with avgpool the mean of the
 * last block's normalised patch tokens, concatenated and not normalised: (n_blocks + avgpool) * D floats.
 *
 * Members are taken in key order, so the rows of a collection are the same on every run. A member whose
 * working image fails to load is counted (failed) and left out; a member without a label is kept (its
 * label is -1). Labels are the catalog's members.label text (lvd-import --label-from); eval_set_labels maps
 * them to class indices.
 */
#ifndef LVD_EVAL_FEATURES_H
#define LVD_EVAL_FEATURES_H

#include <stdint.h>

#include "catalog.h"
#include "vit.h"

typedef struct eval_set {
    int64_t n;         /* rows */
    int32_t dim;       /* floats per row: the model's D, or (n_blocks + avgpool) D */
    float *x;          /* (n, dim) L2-normalised CLS tokens, or the linear features */
    int64_t *image_id; /* (n) images.id of each row */
    char *keys;        /* n NUL-terminated member keys, one after another */
    char *labels;      /* n NUL-terminated labels ("" when the member has none), one after another */
    int64_t members;   /* members of the collection */
    int64_t undecoded; /* members without a working image (decode failed or not run) */
    int64_t failed;    /* members whose working image failed to load */
} eval_set;

typedef struct eval_feat_opts {
    uint32_t resize, crop; /* 256, 224 */
    int32_t batch;         /* images per forward pass */
    int loaders;           /* threads of the batch loader */
    int32_t n_blocks;      /* 0: the normalised CLS token (k-NN); > 0: linear features of that many blocks */
    int avgpool;           /* linear features: append the mean patch token */
} eval_feat_opts;

/* Features of collection `name` of the catalog c (opened read-only; work is its work directory) under
 * model m. *out must be zeroed; eval_set_free releases it on success and failure alike. A missing
 * collection is an error naming it. */
int eval_features(catalog *c, const char *work, const char *name, vit_model *m, const eval_feat_opts *o,
                  eval_set *out);

void eval_set_free(eval_set *s);

#endif
