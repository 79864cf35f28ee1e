/* step.h — one DINOv2 training iteration on the shared ViT core: the student and teacher networks, their heads,
 * the losses, the optimizer and the schedules, as dinov2/train/ssl_meta_arch.py (forward_backward) and
 * dinov2/train/train.py (do_train) run them on one process.
 *
 * One train_step, at iteration it = the optimizer's step count, with the schedules' values v = sched_recipe_at(it):
 *   teacher backbone on the 2B global crops (no masks, no drop path) -> CLS (2B, D), patch tokens (2B, N, D);
 *   teacher DINO head on [CLS ; the masked patch tokens] (a shared head) or the DINO head on CLS and the iBOT
 *     head on the masked tokens (ibot.separate_head);
 *   student backbone on the global crops with their iBOT masks (mask_token) and on the local crops, with the
 *     uniform drop path student.drop_path_rate;
 *   student head(s) on [local CLS ; global CLS ; masked patch tokens];
 *   ssl_loss_step (train/loss.h) at teacher temperature v.teacher_temp: the terms and d total / d logits;
 *   heads' and backbone's backward; optim_clip_grads per module (optim.clip_grad, 0: none); optim_step(v.lr,
 *   v.wd, v.last_layer_lr); optim_update_teacher(v.momentum).
 * The student modules are "backbone", "dino_head" and, with a separate iBOT head, "ibot_head", as in the code;
 * their parameters carry the official names (backbone.blocks.0.attn.qkv.weight, dino_head.mlp.0.weight, ...).
 *
 * Distillation (distillation.enabled, DINOv2 paper section 5): the targets come from a frozen teacher of its own
 * architecture (train_model_create_distill), loaded from another run and never updated; the EMA of the student
 * is kept as usual in `teacher` (the model written as the final checkpoint) but computes nothing. The student
 * sees no masks and no drop path. iBOT is then applied to every patch token of the two global crops, each
 * weighted 1 / N: with the masking removed there are no mask positions left to choose, and every token of
 * an unmasked crop carries a target of the frozen teacher, so the loss keeps iBOT's per-image mean over the
 * tokens it covers. (The loader's masks are ignored.) The cost is head rows for all 2B * N tokens, so the
 * logits take (n_local B + 2B + 2B N, K) floats instead of (... + mask_upperbound, K). DINO and KoLeo are
 * unchanged; the frozen teacher's iBOT targets come from its own iBOT head if it was trained with a separate
 * one, else from its DINO head, and its prototypes must equal the student's (the losses compare logits).
 *
 * Determinism: drop path draws come from (train.seed, it); everything else is a fixed-order computation, so a
 * step is a function of the state and the batch for a fixed thread count (what an exact resume needs).
 *
 * Departures from the official code: drop path is the per-sample DropPath at every rate (the code switches to
 * drop_add_residual_stochastic_depth, a batch subset, above 0.1: the same expectation, another draw).
 *
 * Memory: one arena for every step buffer, sized at creation for the batch geometry; the student's backbone
 * runs keep B * T * D-sized activations (vit.h), only the input of the first train.recompute_blocks blocks (all by
 * default: one more forward pass of the student), and the heads' logits take (rows, K) floats for rows =
 * n_local * B + 2B + the collate's upperbound of masked tokens (mask_upperbound).
 */
#ifndef LVD_TRAIN_STEP_H
#define LVD_TRAIN_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "dist.h"
#include "vit.h"
#include "train/head.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/recipe.h"
#include "train/schedule.h"

/* The ViT of a recipe: student.arch's preset with student.patch_size, num_register_tokens, ffn_layer,
 * layerscale (0: none), the interpolation settings (offset 0.1 without antialias, or antialias with offset 0)
 * and pos_grid = crops.global_crops_size / patch_size, as build_model makes it with img_size =
 * global_crops_size. -1 with the reason for what the core cannot build (no qkv/proj/ffn bias, ...). */
int train_vit_config(const recipe *r, vit_config *out);

/* What one step reports (metrics.jsonl's fields). */
typedef struct train_step_report {
    int64_t iteration;          /* the iteration this step ran (its schedule index) */
    sched_values sched;         /* lr, wd, momentum, teacher_temp, last_layer_lr of that iteration */
    ssl_loss_terms terms;       /* the loss_dict values and the total */
    double grad_norm[3];        /* per student module (backbone, dino_head, ibot_head), before clipping */
    int32_t n_modules;          /* 2 or 3 */
    int64_t n_masked;           /* masked patch tokens of the batch */
    char bad_term[128];         /* on a non-finite loss or gradient: its name ("dino_local_crops_loss",
                                 * "grad_norm backbone", ...), else "" */
} train_step_report;

/* A tensor's state-dict shape. */
typedef struct train_shape {
    int32_t ndim;
    int64_t shape[4];
} train_shape;

/* The collectives of a data-parallel step (train_reduce_of: common/dist.h's over MPI). ranks 1 with NULL
 * functions: one process. Every rank makes the same calls in the same order:
 *   f64     the losses' teacher statistics (ssl_loss.reduce), then the step's loss terms (summed: the report
 *           holds their mean over the ranks) and a non-finite flag, so that every rank stops at the same step;
 *   sum_f32 the gradients after the backward pass, each contiguous run of the optimizer's tensors replaced by
 *           its sum over the ranks times 1 / ranks. Each rank's gradient is of its own batch's mean loss, so
 *           this is the gradient of the mean over the global batch, as DDP's and FSDP's averaging gives. */
typedef struct train_reduce {
    int32_t ranks;
    int (*sum_f32)(float *buf, size_t n, float scale, void *ctx);
    ssl_reduce f64;
    void *ctx;                  /* sum_f32's */
} train_reduce;

/* The collectives of d's ranks (d NULL or of one rank: ranks 1, no functions). */
train_reduce train_reduce_of(lvd_dist *d);

typedef struct train_model {
    recipe rc;                  /* the finished recipe (recipe_finish) */
    train_reduce red;           /* one process unless train_model_set_reduce */
    int32_t ranks;              /* the replicas the global batch (the lr scaling) was built for */
    vit_config vc;
    vit_model *student, *teacher;
    dino_head s_dino, t_dino;   /* student (with gradients) and teacher DINO heads */
    dino_head s_ibot, t_ibot;   /* separate iBOT heads (separate_ibot only) */
    int separate_ibot, do_ibot;
    optim opt;                  /* modules backbone, dino_head (, ibot_head); teacher copies for the EMA */
    ssl_loss loss;              /* centers and the losses' buffers */
    sched_recipe sched;
    int32_t batch, n_local;     /* images per step, local crops per image */
    int32_t n_tokens;           /* N: patch tokens of a global crop */
    int64_t max_masked;         /* masked tokens per step at most (the collate's bound) */
    float drop_path;

    /* Distillation: the frozen teacher (targets) and its heads; the EMA above is then not run. */
    int distill;                /* distillation.enabled */
    vit_model *dt;              /* the frozen teacher backbone (its own configuration) */
    dino_head dt_dino, dt_ibot; /* its DINO head and, with dt_separate, its iBOT head (no gradients) */
    int dt_separate;            /* the frozen teacher's patch targets come from dt_ibot */
    uint8_t *all_masks;         /* (2B, N) ones: the distillation iBOT's token selection (every token) */

    /* Backbone runs: student on global and local crops, teacher on global crops (inference; the frozen teacher's
     * in distillation). */
    vit_run *s_run_g, *s_run_l, *t_run_g;
    float *shared;              /* the student runs' backward scratch and the teacher run's arena (one buffer) */
    size_t shared_bytes;
    dino_head_run s_hrun, t_hrun, s_irun, t_irun;
    void *arena;                /* the step buffers below */
    float *t_in, *t_out;        /* (2B + max_masked, D_t), (2B + max_masked, K): teacher head rows (the masked
                                 * tokens' logits become their iBOT targets in place) */
    float *t_iout;              /* (max_masked, K_ibot) separate teacher iBOT logits */
    float *s_in, *s_out, *s_dout, *s_din; /* (rows, D), (rows, K), (rows, K), (rows, D): student head rows; s_dout
                                 * is s_out (the losses replace the logits by their gradient) */
    float *s_iout, *s_idout;    /* (max_masked, K_ibot) separate student iBOT logits and their gradient (the same
                                 * buffer) */
    float *d_cls_g, *d_patch_g; /* (2B, D), (2B, N, D): d total / d the student's global outputs */
    int64_t *masked_idx;        /* (2B * N) */
    float *masked_w;            /* (2B * N) */
    train_shape *shapes;        /* (opt.n_tensors) */
} train_model;

/* Builds the student, teacher, heads, optimizer, losses and schedules of a finished recipe for `ranks`
 * processes (the global batch is batch_size_per_gpu * ranks), with zero parameters. 0 or -1 (also for a
 * recipe with distillation.enabled: that needs train_model_create_distill). */
int train_model_create(const recipe *r, int32_t ranks, train_model **out);

/* A model of a finished recipe with distillation.enabled, whose frozen teacher is built from the teacher run's
 * recipe tr (its student.* architecture, or tvc when not NULL, and its heads) with zero parameters
 * (train_load_distill_teacher fills them). vc as for train_model_create_vit (NULL: from r). -1 with the reason
 * when the teacher cannot give the student's targets: another patch size, DINO or iBOT prototypes different
 * from the student's. */
int train_model_create_distill(const recipe *r, const vit_config *vc, const recipe *tr, const vit_config *tvc,
                               int32_t ranks, train_model **out);

/* train_model_create with an explicit backbone configuration instead of student.arch's (tests, and
 * architectures without a preset); its patch must be student.patch_size's. */
int train_model_create_vit(const recipe *r, const vit_config *vc, int32_t ranks, train_model **out);
void train_model_free(train_model *m);

/* The official initialisation from seed: the student backbone (vit_init_random with layerscale as gamma),
 * the heads (dino_head_init_weights), and the teacher as an exact copy of the student. */
void train_model_init_weights(train_model *m, uint64_t seed);

/* Makes m one of r->ranks data-parallel replicas (r NULL: one process). The recipe's global batch must have
 * been built for them (train_model_create's ranks). 0 or -1. */
int train_model_set_reduce(train_model *m, const train_reduce *r);

/* A 64-bit hash (FNV-1a) of the student's and teacher's parameters, the AdamW moments and the centers: equal on
 * every rank of a healthy data-parallel run. */
uint64_t train_model_hash(const train_model *m);

/* Copies the student's parameters over the teacher's. */
void train_model_sync_teacher(train_model *m);

/* Iterations done: the optimizer's step count. */
int64_t train_model_iteration(const train_model *m);

/* One iteration on a batch: global (2B, 3, G, G) and local (n_local * B, 3, L, L) crops, crop-major, and the
 * global crops' masks (2B, N) 0/1. On success the student, teacher, moments and centers have advanced and rep
 * holds the step's values. A non-finite loss term or gradient norm stops before the optimizer (the parameters
 * and moments unchanged, the centers possibly not), returns -1 with rep->bad_term set. Other errors: -1. */
int train_step(train_model *m, const float *global, const float *local, const uint8_t *masks,
               train_step_report *rep);

/* The shape of the optimizer's tensor i (state-dict shape: (out, in) weights, (K, 1) weight_g, ...). */
const train_shape *train_model_shape(const train_model *m, size_t i);

#endif
