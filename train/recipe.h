/* recipe.h — lvd-train's configuration: the DINOv2 YAML keys and nesting (dinov2/configs/ssl_default_config.yaml).
 *
 * A configuration is built in three layers, each overriding the one before, as dinov2's setup does
 * (OmegaConf.merge(default, file, cli)):
 *   1. the defaults: ssl_default_config.yaml's values (recipe_defaults);
 *   2. a YAML file (recipe_load_file): the official ssl_default_config.yaml, vitl14.yaml, vitg14.yaml, ... read
 *      as they are, or a preset of schemas/train/; nested mappings give dotted keys ("optim.base_lr");
 *   3. "key=value" overrides from the command line (recipe_set), e.g. train.batch_size_per_gpu=16 or
 *      ibot.mask_ratio_min_max=[0.1,0.5]; the value is read as a YAML scalar or flow sequence.
 *
 * Every key of ssl_default_config.yaml is known. Keys that only mean something for the official GPU code
 * (the whole compute_precision tree: FSDP sharding and mixed precision; student.block_chunks: FSDP wrapping;
 * train.cache_dataset, train.dataset_path (lvd-train reads --manifest), train.output_dir (--out), MODEL.WEIGHTS)
 * are accepted and ignored, and recipe_ignored() lists them for one warning. An unknown key, a value of the
 * wrong type or out of range is an error naming the file, line and key. lvd adds a few keys of its own,
 * listed with the table in recipe.c (crops.paper_probabilities, train.threads, ...), and dinov3's distillation
 * section (enabled, full_cfg_path, checkpoint_path), which ssl_default_config.yaml of DINOv2 does not have.
 *
 * Derived values (recipe_finish): optim.lr = base_lr * sqrt(batch / 1024) (scaling_rule sqrt_wrt_1024), with
 * batch = train.batch_size_per_gpu * ranks, unless optim.lr was set to a non-zero value.
 */
#ifndef LVD_RECIPE_H
#define LVD_RECIPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum recipe_centering { RECIPE_CENTERING = 0, RECIPE_SINKHORN_KNOPP = 1 } recipe_centering;

#define RECIPE_STR 256

typedef struct recipe {
    struct {
        double loss_weight;
        int32_t head_n_prototypes, head_bottleneck_dim, head_nlayers, head_hidden_dim;
        double koleo_loss_weight;
    } dino;
    struct {
        double loss_weight, mask_sample_probability;
        double mask_ratio_min_max[2];
        int separate_head;
        int32_t head_n_prototypes, head_bottleneck_dim, head_nlayers, head_hidden_dim;
    } ibot;
    struct {
        int32_t batch_size_per_gpu;
        int32_t saveckp_freq;           /* epochs between checkpoints (dinov2's); lvd-train's --save-every wins */
        int64_t seed;
        int32_t num_workers;            /* loader threads */
        int32_t official_epoch_length;  /* OFFICIAL_EPOCH_LENGTH: iterations per epoch */
        recipe_centering centering;
        int32_t threads;                /* lvd: compute threads (0: all CPUs) */
        int32_t recompute_blocks;       /* lvd: the student's first n blocks (-1, the default: all; 0: none)
                                         * are computed again in the backward pass instead of keeping their
                                         * activations (vit.h, vit_run_opts.recompute) */
    } train;
    struct {
        char arch[RECIPE_STR];          /* vit_small, vit_base, vit_large, vit_giant2, vit_tiny, vit_pico */
        int32_t patch_size;
        double drop_path_rate, layerscale;
        int drop_path_uniform;
        char pretrained_weights[RECIPE_STR];
        char ffn_layer[RECIPE_STR];     /* mlp, swiglu, swiglufused (= swiglu) */
        int qkv_bias, proj_bias, ffn_bias;
        int32_t num_register_tokens;
        int interpolate_antialias;
        double interpolate_offset;
    } student;
    struct {
        double momentum_teacher, final_momentum_teacher, warmup_teacher_temp, teacher_temp;
        int32_t warmup_teacher_temp_epochs;
    } teacher;
    struct {
        int32_t epochs;
        double weight_decay, weight_decay_end, base_lr, lr;
        int32_t warmup_epochs;
        double min_lr, clip_grad;
        int32_t freeze_last_layer_epochs;
        char scaling_rule[RECIPE_STR];  /* sqrt_wrt_1024 */
        double patch_embed_lr_mult, layerwise_decay, adamw_beta1, adamw_beta2;
    } optim;
    struct {
        double global_crops_scale[2];
        int32_t local_crops_number;
        double local_crops_scale[2];
        int32_t global_crops_size, local_crops_size;
        int paper_probabilities;        /* lvd: the paper's blur/solarize probabilities instead of the code's */
    } crops;
    struct {
        int32_t eval_period_iterations;
    } evaluation;
    struct {                            /* dinov3's distillation: section (DINOv2 paper section 5) */
        int enabled;                    /* targets from a frozen teacher instead of the EMA (train/step.h) */
        char full_cfg_path[RECIPE_STR]; /* the teacher run's config.yaml ("": config.yaml beside the checkpoint) */
        char checkpoint_path[RECIPE_STR]; /* the teacher: an lvd training state (its teacher.* tensors, heads
                                         * included) */
    } distillation;

    /* Keys given that are accepted and ignored (for one warning), ", "-separated. */
    char ignored[1024];
} recipe;

/* The defaults (ssl_default_config.yaml). */
void recipe_defaults(recipe *r);

/* Applies a YAML file (a mapping, nested by section) on top of r. Errors name path:line and the key. */
int recipe_load_file(recipe *r, const char *path);

/* Applies one "key=value" (dotted key). Errors name the key. `where` names the source in messages
 * (e.g. "command line"). */
int recipe_set(recipe *r, const char *assignment, const char *where);

/* Checks the combination (heads, crops, ratios, architecture; distillation.enabled needs a checkpoint_path) and
 * fills optim.lr for `ranks` processes. */
int recipe_finish(recipe *r, int32_t ranks);

/* The whole configuration as YAML text in the official nesting (every known key, with its final value):
 * RUN/config.yaml, which recipe_load_file reads back to the same recipe. Returns bytes written (without the
 * NUL), or -1 if cap is too small. */
int recipe_dump(const recipe *r, char *buf, size_t cap);

/* The ignored keys given so far ("" if none). */
const char *recipe_ignored(const recipe *r);

#endif
