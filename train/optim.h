/* optim.h — the student's optimizer as DINOv2 runs it: AdamW over parameter groups with per-parameter lr and
 * weight-decay multipliers, per-module gradient clipping, and the teacher's EMA update.
 *
 * Parameters are registered by module ("backbone", "dino_head", "ibot_head": the student's top-level
 * modules) and by their official name within that module ("blocks.3.attn.qkv.weight", "mlp.0.bias",
 * "last_layer.weight_g"). optim_param_rule turns a name into its multipliers exactly as
 * get_params_groups_with_decay (dinov2/utils/param_groups.py) does per submodule, so a module registered with
 * n_blocks = depth gets the ViT's layer-wise lr decay and a head (n_blocks = 0) gets lr multiplier 1.
 *
 * One iteration, as do_train (dinov2/train/train.py) orders it, given the schedules' lr, wd, last_layer_lr
 * and momentum (train/schedule.h):
 *   optim_clip_grads(o, 3.0)               each module's gradients scaled to total L2 norm <= 3
 *   optim_step(o, lr, wd, last_layer_lr)   apply_optim_scheduler, then torch.optim.AdamW.step()
 *   optim_update_teacher(o, momentum)      teacher = momentum * teacher + (1 - momentum) * student
 * Every registered tensor is stepped every iteration (the trainer's layout gives each parameter a gradient
 * buffer every iteration; torch would skip a parameter whose .grad is None). A frozen last layer has lr 0:
 * its moments still accumulate, as in torch.
 *
 * Arithmetic follows torch 1.13's AdamW (foreach) elementwise in float32 with the scalar coefficients in
 * double: p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
 * p += -(lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
#ifndef LVD_TRAIN_OPTIM_H
#define LVD_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "vit.h"

#define OPTIM_NAME_MAX 96 /* bytes of a module or parameter name, including the NUL */

/* What get_params_groups_with_decay gives one parameter. */
typedef struct optim_rule {
    int32_t layer_id;       /* 0 embeddings and tokens, i + 1 for blocks.i., n_blocks + 1 otherwise */
    double lr_multiplier;   /* layerwise_decay^(n_blocks + 1 - layer_id), times patch_embed_lr_mult for
                               "patch_embed" parameters */
    double wd_multiplier;   /* 0 for names ending ".bias" or containing "norm" or "gamma", else 1 */
    int32_t is_last_layer;  /* "last_layer" in the name: follows the last-layer lr schedule */
} optim_rule;

/* The rule for the parameter `name` of a module of n_blocks ViT blocks (0: not a ViT), as
 * get_vit_lr_decay_rate (force_is_backbone = n_blocks > 0, unchunked blocks) and get_params_groups_with_decay
 * compute it. -1 when a "blocks." name has no block number. */
int optim_param_rule(const char *name, int32_t n_blocks, double layerwise_decay, double patch_embed_lr_mult,
                     optim_rule *out);

/* Optimizer settings, with the DINOv2 config keys. */
typedef struct optim_config {
    double beta1, beta2;        /* optim.adamw_beta1 / adamw_beta2 (0.9, 0.999) */
    double eps;                 /* torch.optim.AdamW's default, 1e-8 */
    double layerwise_decay;     /* optim.layerwise_decay (0.9) */
    double patch_embed_lr_mult; /* optim.patch_embed_lr_mult (0.2) */
} optim_config;

void optim_config_defaults(optim_config *c);

/* One registered parameter tensor. */
typedef struct optim_tensor {
    char name[OPTIM_NAME_MAX]; /* within its module */
    int32_t module;            /* index of its module */
    float *param;              /* (count) the student's values, updated in place */
    float *grad;               /* (count) its gradient, scaled in place by clipping */
    float *teacher;            /* (count) the teacher's copy (EMA target), or NULL */
    float *m, *v;              /* (count) AdamW moments, in the optimizer's arena (after optim_finalize) */
    size_t count;              /* floats */
    optim_rule rule;
} optim_tensor;

typedef struct optim_module {
    char name[OPTIM_NAME_MAX];
    int32_t n_blocks;          /* ViT depth for a backbone, 0 for a head */
} optim_module;

typedef struct optim {
    optim_config cfg;
    optim_module *modules;
    int32_t n_modules;
    optim_tensor *tensors;     /* registration order */
    size_t n_tensors, cap_tensors;
    float *moment_mem;         /* one arena: every tensor's m, then every tensor's v (2 * n_floats) */
    size_t n_floats;           /* floats over all tensors */
    int64_t steps;             /* AdamW steps taken (torch's per-parameter `step`, the same for all) */
    int32_t finalized;
} optim;

/* An empty optimizer with settings c. 0 or -1. */
int optim_init(optim *o, const optim_config *c);
void optim_free(optim *o);

/* Adds a module (its parameters' clipping group) and gives its index in *index. Names are unique. */
int optim_add_module(optim *o, const char *name, int32_t n_blocks, int32_t *index);

/* Registers one tensor of module `module` (names unique within it). teacher may be NULL (no EMA copy). */
int optim_add_tensor(optim *o, int32_t module, const char *name, float *param, float *grad, float *teacher,
                     size_t count);

/* Adds module `name` with n_blocks = depth and registers every tensor of student by its state-dict name,
 * pointing into its parameter and gradient arenas (vit_alloc_grads first) and, when teacher is not NULL,
 * into the teacher's parameters (same configuration). The module's index goes to *index (may be NULL). */
int optim_add_vit(optim *o, const char *name, vit_model *student, vit_model *teacher, int32_t *index);

/* Allocates the moments (zero) once everything is registered; no registration afterwards. 0 or -1. */
int optim_finalize(optim *o);

/* The tensor `name` of module `module_name`, or NULL. */
const optim_tensor *optim_find(const optim *o, const char *module_name, const char *name);

/* clip_grad_norm_(max_norm) per module: with N the L2 norm of all the module's gradients, scales them by
 * max_norm / (N + 1e-6) when that is < 1. norms (n_modules entries, may be NULL) receives each N before
 * clipping. 0, or -1 for a non-finite norm (the gradients are then left unscaled). */
int optim_clip_grads(optim *o, double max_norm, double *norms);

/* apply_optim_scheduler(lr, wd, last_layer_lr) and one AdamW step: each tensor's lr is
 * (is_last_layer ? last_layer_lr : lr) * lr_multiplier and its weight decay wd * wd_multiplier. */
int optim_step(optim *o, double lr, double wd, double last_layer_lr);

/* update_teacher(momentum) over every tensor with a teacher copy. */
void optim_update_teacher(optim *o, double momentum);

#endif
