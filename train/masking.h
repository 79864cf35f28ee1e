/* masking.h — iBOT block-wise masks of the global crops' patch grid, as DINOv2 draws them.
 *
 * mask_generate is DINOv2's MaskingGenerator (dinov2/data/masking.py, after BEiT): blocks of area uniform in
 * [min_num_patches, max_mask_patches] and aspect ratio log-uniform in (min_aspect, max_aspect) are placed at
 * uniform positions, up to 10 tries per block, until the target count is reached or a block adds nothing.
 * mask_collate is the masking half of collate_data_and_cast (dinov2/data/collate.py): of the B images of a
 * batch (all global crops: crop-major, n_global_crops * images), the first int(B * mask_probability) get a
 * mask of int(N * uniform(r_i, r_(i+1))) patches with r = linspace(ratio_min, ratio_max, n_masked + 1)
 * (stratified ratios), the others none; then the masks are shuffled over the batch.
 *
 * Random numbers come from mask_rng (splitmix64), not Python's Mersenne Twister: a seed gives the same masks
 * on every machine, but not the masks the official code draws. Draws are taken in the official order
 * (area, aspect, top, left per try; the batch's counts interleaved with their masks; then the shuffle).
 */
#ifndef LVD_TRAIN_MASKING_H
#define LVD_TRAIN_MASKING_H

#include <stddef.h>
#include <stdint.h>

/* A random stream (splitmix64 state). */
typedef struct mask_rng {
    uint64_t state;
} mask_rng;

void mask_rng_seed(mask_rng *r, uint64_t seed);

/* Python's random.uniform(a, b) = a + (b - a) * U, U uniform in [0, 1) with 53 bits; a > b is allowed. */
double mask_rng_uniform(mask_rng *r, double a, double b);

/* Python's random.randint(a, b): uniform integer in [a, b], a <= b (unbiased). */
int64_t mask_rng_randint(mask_rng *r, int64_t a, int64_t b);

/* The generator's geometry (MaskingGenerator's constructor arguments). */
typedef struct mask_gen {
    int32_t height, width;    /* patch grid: rows, columns */
    int32_t min_num_patches;  /* lower bound of a block's target area, patches (4) */
    double max_num_patches;   /* upper bound of a block's area, patches (train.py passes 0.5 * N, a float) */
    double log_aspect_min;    /* log of the aspect ratio (rows / columns) range */
    double log_aspect_max;
} mask_gen;

/* Sets g; max_aspect <= 0 means 1 / min_aspect (the official default). 0, or -1 on a bad argument. */
int mask_gen_init(mask_gen *g, int32_t height, int32_t width, int32_t min_num_patches, double max_num_patches,
                  double min_aspect, double max_aspect);

/* The trainer's generator for a side x side grid (global crop size / patch size): min 4 patches per block,
 * aspect in (0.3, 1 / 0.3), max_num_patches = 0.5 * side * side evaluated as train.py writes it,
 * ((0.5 * crop) // patch * crop) // patch, which equals 0.5 * side^2 rounded down when crop = side * patch. */
int mask_gen_default(mask_gen *g, int32_t crop_size, int32_t patch_size);

/* One try loop of MaskingGenerator._mask: places at most one block in mask ((height, width) bytes, 0 or 1),
 * adding at most max_mask_patches new patches. Returns the patches added (0: all 10 tries failed). */
int32_t mask_add_block(const mask_gen *g, mask_rng *r, uint8_t *mask, double max_mask_patches);

/* MaskingGenerator(num_masking_patches): clears mask ((height, width) bytes) and masks about
 * num_masking_patches patches (never more). Returns the count masked. */
int32_t mask_generate(const mask_gen *g, mask_rng *r, int32_t num_masking_patches, uint8_t *mask);

/* The masks of one batch and what the iBOT loss reads of them. Buffers are sized at mask_batch_init. */
typedef struct mask_batch {
    int32_t n_images;     /* B: global-crop images of the batch */
    int32_t n_tokens;     /* N = height * width */
    uint8_t *masks;       /* (B, N) 0/1: collated_masks */
    int32_t *targets;     /* (B) the count each image's mask was asked for (0: unmasked), after the shuffle */
    int32_t *counts;      /* (B) patches masked in each image */
    int64_t *indices;     /* (n_masked) flat indices b * N + t of the masked patches, ascending: mask_indices_list */
    float *weights;       /* (n_masked) 1 / counts[b] of each masked patch's image: masks_weight */
    int64_t n_masked;     /* masked patches in the batch: n_masked_patches */
    int64_t upperbound;   /* sum over the masked images of int(N * r_(i+1)): the official "upperbound" */
    int32_t n_images_masked; /* int(B * mask_probability) */
} mask_batch;

/* Allocates the buffers for batches of n_images images of n_tokens patches. 0 or -1. */
int mask_batch_init(mask_batch *b, int32_t n_images, int32_t n_tokens);
void mask_batch_free(mask_batch *b);

/* The official "upperbound" of a batch: sum over the int(n_images * mask_probability) masked images of
 * int(n_tokens * r_(i+1)) (float32 as in the collate). Depends only on the configuration, and no batch masks
 * more patches: the trainer sizes its masked-token buffers with it. */
int64_t mask_upperbound(int32_t n_images, int32_t n_tokens, double ratio_min, double ratio_max,
                        double mask_probability);

/* Draws the masks of one batch into b (sized for g's grid and b->n_images images): ratio_min/max are
 * mask_ratio_min_max (0.1, 0.5), mask_probability is mask_sample_probability (0.5). The ratios r_i and the
 * products N * U are evaluated in float32 like the official torch tensors. 0, or -1 on a bad argument. */
int mask_collate(const mask_gen *g, mask_rng *r, double ratio_min, double ratio_max, double mask_probability,
                 mask_batch *b);

#endif
