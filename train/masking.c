/* masking.c — see masking.h. */
#include "masking.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Tries per block: MaskingGenerator._mask's `for _ in range(10)`. */
#define MASK_TRIES 10

/* ---------------------------------------------------------------------------------------------------- */
/* random numbers */

void mask_rng_seed(mask_rng *r, uint64_t seed) { r->state = seed; }

/* Next 64 random bits (splitmix64). */
static uint64_t rng_next(mask_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) on the 2^-53 grid, like Python's random.random(). */
static double rng_u01(mask_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

double mask_rng_uniform(mask_rng *r, double a, double b) { return a + (b - a) * rng_u01(r); }

int64_t mask_rng_randint(mask_rng *r, int64_t a, int64_t b)
{
    uint64_t span = (uint64_t)(b - a) + 1u; /* >= 1 since a <= b */
    /* rejection of the top partial range keeps every value equally likely */
    uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t x;
    do
        x = rng_next(r);
    while (x >= limit);
    return a + (int64_t)(x % span);
}

/* ---------------------------------------------------------------------------------------------------- */
/* one mask */

int mask_gen_init(mask_gen *g, int32_t height, int32_t width, int32_t min_num_patches, double max_num_patches,
                  double min_aspect, double max_aspect)
{
    if (height < 1 || width < 1 || (int64_t)height * width > INT32_MAX)
        return lvd_fail("mask grid %d x %d: sides must be >= 1", (int)height, (int)width);
    if (min_num_patches < 0 || !(max_num_patches >= 0))
        return lvd_fail("mask block area bounds %d, %g: must be >= 0", (int)min_num_patches, max_num_patches);
    if (!(min_aspect > 0))
        return lvd_fail("mask min_aspect %g: must be > 0", min_aspect);
    /* `max_aspect or 1 / min_aspect` */
    if (max_aspect <= 0)
        max_aspect = 1.0 / min_aspect;
    g->height = height;
    g->width = width;
    g->min_num_patches = min_num_patches;
    g->max_num_patches = max_num_patches;
    g->log_aspect_min = log(min_aspect);
    g->log_aspect_max = log(max_aspect);
    return 0;
}

int mask_gen_default(mask_gen *g, int32_t crop_size, int32_t patch_size)
{
    if (crop_size < 1 || patch_size < 1 || crop_size % patch_size != 0)
        return lvd_fail("mask grid: crop size %d is not a multiple of patch size %d", (int)crop_size,
                        (int)patch_size);
    int32_t side = crop_size / patch_size;
    /* train.py: max_num_patches = 0.5 * img_size // patch_size * img_size // patch_size, left to right in
     * floats: ((0.5 * img) // p * img) // p */
    double max_patches = floor(floor(0.5 * crop_size / patch_size) * crop_size / patch_size);
    return mask_gen_init(g, side, side, 4, max_patches, 0.3, 0.0);
}

int32_t mask_add_block(const mask_gen *g, mask_rng *r, uint8_t *mask, double max_mask_patches)
{
    int32_t delta = 0;
    for (int t = 0; t < MASK_TRIES; t++) {
        double target_area = mask_rng_uniform(r, (double)g->min_num_patches, max_mask_patches);
        double aspect = exp(mask_rng_uniform(r, g->log_aspect_min, g->log_aspect_max));
        /* Python's round() rounds halves to even, as rint does in the default rounding mode */
        int64_t h = (int64_t)rint(sqrt(target_area * aspect));
        int64_t w = (int64_t)rint(sqrt(target_area / aspect));
        if (w < g->width && h < g->height) {
            int64_t top = mask_rng_randint(r, 0, g->height - h);
            int64_t left = mask_rng_randint(r, 0, g->width - w);
            int64_t already = 0;
            for (int64_t i = top; i < top + h; i++)
                for (int64_t j = left; j < left + w; j++)
                    already += mask[i * g->width + j];
            int64_t fresh = h * w - already;
            /* the block must add something and at most what is left of the budget */
            if (fresh > 0 && (double)fresh <= max_mask_patches) {
                for (int64_t i = top; i < top + h; i++)
                    for (int64_t j = left; j < left + w; j++)
                        if (!mask[i * g->width + j]) {
                            mask[i * g->width + j] = 1;
                            delta++;
                        }
            }
            if (delta > 0)
                break;
        }
    }
    return delta;
}

int32_t mask_generate(const mask_gen *g, mask_rng *r, int32_t num_masking_patches, uint8_t *mask)
{
    memset(mask, 0, (size_t)g->height * (size_t)g->width);
    int32_t count = 0;
    while (count < num_masking_patches) {
        double budget = (double)(num_masking_patches - count);
        if (g->max_num_patches < budget)
            budget = g->max_num_patches;
        int32_t delta = mask_add_block(g, r, mask, budget);
        if (delta == 0)
            break; /* ten tries without progress: the official generator gives up too */
        count += delta;
    }
    return count;
}

/* ---------------------------------------------------------------------------------------------------- */
/* a batch */

int mask_batch_init(mask_batch *b, int32_t n_images, int32_t n_tokens)
{
    memset(b, 0, sizeof *b);
    if (n_images < 0 || n_tokens < 1)
        return lvd_fail("mask batch of %d images of %d patches: bad size", (int)n_images, (int)n_tokens);
    size_t cells = (size_t)n_images * (size_t)n_tokens;
    size_t nb = n_images > 0 ? (size_t)n_images : 1;
    size_t nc = cells > 0 ? cells : 1;
    b->masks = malloc(nc);
    b->targets = malloc(nb * sizeof *b->targets);
    b->counts = malloc(nb * sizeof *b->counts);
    b->indices = malloc(nc * sizeof *b->indices);
    b->weights = malloc(nc * sizeof *b->weights);
    if (!b->masks || !b->targets || !b->counts || !b->indices || !b->weights) {
        mask_batch_free(b);
        return lvd_fail("mask batch of %d images of %d patches: out of memory", (int)n_images, (int)n_tokens);
    }
    b->n_images = n_images;
    b->n_tokens = n_tokens;
    return 0;
}

void mask_batch_free(mask_batch *b)
{
    free(b->masks);
    free(b->targets);
    free(b->counts);
    free(b->indices);
    free(b->weights);
    memset(b, 0, sizeof *b);
}

/* torch.linspace(start, end, steps)[i] for float32 on the CPU: the step and both halves in float, the upper
 * half counted back from end so the last value is end exactly. */
static float linspace_f32(float start, float end, int64_t steps, int64_t i)
{
    if (steps == 1)
        return start;
    float step = (end - start) / (float)(steps - 1);
    if (i < steps / 2)
        return start + step * (float)i;
    return end - step * (float)(steps - i - 1);
}

int64_t mask_upperbound(int32_t n_images, int32_t n_tokens, double ratio_min, double ratio_max,
                        double mask_probability)
{
    int32_t n_masked_img = (int32_t)((double)n_images * mask_probability); /* int(B * p) truncates */
    int64_t steps = (int64_t)n_masked_img + 1, sum = 0;
    float f_min = (float)ratio_min, f_max = (float)ratio_max;
    for (int32_t i = 0; i < n_masked_img; i++)
        sum += (int64_t)((float)n_tokens * linspace_f32(f_min, f_max, steps, i + 1));
    return sum;
}

int mask_collate(const mask_gen *g, mask_rng *r, double ratio_min, double ratio_max, double mask_probability,
                 mask_batch *b)
{
    int32_t n_tok = g->height * g->width;
    if (b->n_tokens != n_tok)
        return lvd_fail("mask batch sized for %d patches, the grid has %d", (int)b->n_tokens, (int)n_tok);
    if (!(mask_probability >= 0 && mask_probability <= 1))
        return lvd_fail("mask probability %g: must be in [0, 1]", mask_probability);
    if (!(ratio_min >= 0 && ratio_max <= 1 && ratio_min <= ratio_max))
        return lvd_fail("mask ratios (%g, %g): need 0 <= min <= max <= 1", ratio_min, ratio_max);
    int32_t n_img = b->n_images;
    int32_t n_masked_img = (int32_t)((double)n_img * mask_probability); /* int(B * p) truncates */
    int64_t steps = (int64_t)n_masked_img + 1;
    float f_min = (float)ratio_min, f_max = (float)ratio_max;

    /* masks_list in the official order: the stratified masked images first, then the empty ones */
    b->upperbound = mask_upperbound(n_img, n_tok, ratio_min, ratio_max, mask_probability);
    for (int32_t i = 0; i < n_img; i++) {
        uint8_t *m = b->masks + (size_t)i * (size_t)n_tok;
        int32_t target = 0;
        if (i < n_masked_img) {
            float lo = linspace_f32(f_min, f_max, steps, i), hi = linspace_f32(f_min, f_max, steps, i + 1);
            /* random.uniform on 0-d float32 tensors, then N * it, in float32; int() truncates */
            float ratio = lo + (hi - lo) * (float)rng_u01(r);
            target = (int32_t)((float)n_tok * ratio); /* <= int(N * hi): within the upperbound */
        }
        b->targets[i] = target;
        b->counts[i] = mask_generate(g, r, target, m);
    }
    /* random.shuffle: Fisher-Yates from the end */
    uint8_t *tmp = NULL;
    if (n_img > 1 && !(tmp = malloc((size_t)n_tok)))
        return lvd_fail("mask shuffle: out of memory");
    for (int32_t i = n_img - 1; i > 0; i--) {
        int32_t j = (int32_t)mask_rng_randint(r, 0, i);
        if (j == i)
            continue;
        uint8_t *mi = b->masks + (size_t)i * (size_t)n_tok, *mj = b->masks + (size_t)j * (size_t)n_tok;
        memcpy(tmp, mi, (size_t)n_tok);
        memcpy(mi, mj, (size_t)n_tok);
        memcpy(mj, tmp, (size_t)n_tok);
        int32_t t = b->targets[i];
        b->targets[i] = b->targets[j];
        b->targets[j] = t;
        t = b->counts[i];
        b->counts[i] = b->counts[j];
        b->counts[j] = t;
    }
    free(tmp);

    /* mask_indices_list and masks_weight = 1 / max(count, 1) per masked patch, image-major */
    int64_t k = 0;
    for (int32_t i = 0; i < n_img; i++) {
        const uint8_t *m = b->masks + (size_t)i * (size_t)n_tok;
        float w = 1.0f / (float)(b->counts[i] > 0 ? b->counts[i] : 1);
        for (int32_t t = 0; t < n_tok; t++)
            if (m[t]) {
                b->indices[k] = (int64_t)i * n_tok + t;
                b->weights[k] = w;
                k++;
            }
    }
    b->n_masked = k;
    b->n_images_masked = n_masked_img;
    return 0;
}
