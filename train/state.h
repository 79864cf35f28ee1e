/* state.h — lvd-train's files on disk: the training state for an exact resume, and the teacher checkpoint.
 *
 * The training state (RUN/training_state.safetensors) is one safetensors file, written atomically (a crash
 * leaves the previous state whole), holding for every optimizer tensor, by module and official name:
 *   student.<module>.<name>      the student's parameters (module: backbone, dino_head, ibot_head)
 *   teacher.<module>.<name>      the teacher's (EMA) copy
 *   adamw.exp_avg.<module>.<name>, adamw.exp_avg_sq.<module>.<name>   AdamW's moments
 *   dino_loss.center (1, K), ibot_patch_loss.center (1, K_ibot)       softmax centering's EMA centers
 * and as metadata: format "lvd-train-state", heads (the backbone's attention heads: no tensor shows them),
 * iteration (AdamW steps taken), the loader's epoch and position
 * where the next batch starts (with ranks > 1 also "ranks" and "rank_positions", "epoch:position" of every
 * rank, comma separated), the samples skipped so far (all ranks), and config_sha256, the hash of the recipe's dump
 * (RUN/config.yaml) so that a state is never resumed under another configuration. Every random draw of lvd-train
 * is a function of (train.seed, the iteration or the loader's stream position), so these are the whole state.
 *
 * The teacher checkpoint (RUN/teacher_checkpoint.safetensors) is the teacher backbone alone with the official
 * DinoVisionTransformer names (vit_save): lvd-embed, lvd-eval and the official PyTorch model
 * (load_state_dict(strict=True)) load it as it is.
 */
#ifndef LVD_TRAIN_STATE_H
#define LVD_TRAIN_STATE_H

#include <stdint.h>

#include "train/step.h"

#define TRAIN_STATE_MAX_RANKS 1024

typedef struct train_state_meta {
    int64_t iteration;        /* AdamW steps taken (filled from the model on save) */
    uint64_t epoch, position; /* the loader's stream position of the next batch (rank 0's) */
    uint32_t ranks;           /* the processes that wrote it (1, or the data-parallel ranks; 0 on save: 1) */
    uint64_t rank_epoch[TRAIN_STATE_MAX_RANKS], rank_position[TRAIN_STATE_MAX_RANKS]; /* every rank's stream
                              * position (ranks > 1: the ranks' parts of an epoch may differ by one entry, so
                              * that their positions drift apart after an epoch boundary) */
    uint64_t failed;          /* samples skipped because they failed to read or decode */
    char config_sha256[65];   /* hex SHA-256 of the recipe's dump */
} train_state_meta;

/* Writes m's whole state and meta (iteration taken from m) to path atomically. 0 or -1. */
int train_state_save(const train_model *m, const train_state_meta *meta, const char *path);

/* Reads the state at path into m (same recipe: every tensor must be there with its shape), sets the
 * optimizer's step count and fills meta. Errors name the file and the tensor. On error m may be partly
 * loaded: the caller discards it. 0 or -1. */
int train_state_load(train_model *m, const char *path, train_state_meta *meta);

/* The hex SHA-256 of a recipe's dump (recipe_dump), for train_state_meta.config_sha256. */
int train_recipe_hash(const recipe *r, char hex[65]);

/* Loads student weights from a safetensors file (student.pretrained_weights): tensors "<module>.<name>"
 * ("backbone.blocks.0.norm1.weight", "dino_head.mlp.0.weight": a training checkpoint's student) or bare
 * backbone names (an lvd-vit, lvd-train teacher or official backbone checkpoint). Every backbone tensor must be
 * there with its shape; a head is taken whole or not at all (it then keeps its initialisation). The teacher is
 * then set to a copy of the student, as at the start of a run. 0 or -1 naming the file and tensor. */
int train_load_weights(train_model *m, const char *path);

/* Writes the teacher backbone to path with the official names (vit_save, atomic). 0 or -1. */
int train_save_teacher(const train_model *m, const char *path);

/* Distillation's teacher run, from r's distillation section: checks that checkpoint_path exists, and reads the
 * teacher's recipe from full_cfg_path or, when that is "", from config.yaml in the checkpoint's folder (the
 * teacher run's RUN/config.yaml) over the defaults into *tr. -1 naming the missing file. */
int train_distill_recipe(const recipe *r, recipe *tr);

/* Loads the frozen teacher of a distillation model (train_model_create_distill) from path: an lvd training state,
 * whose "teacher.<module>.<name>" tensors (the teacher run's EMA teacher: backbone, dino_head, ibot_head) are
 * taken, or a file of "<module>.<name>" tensors. The backbone and the DINO head (and the iBOT head when the
 * teacher's recipe has a separate one) must all be there with the shapes of the teacher's configuration: -1
 * naming the file and tensor otherwise, with a hint when the file has no heads (a backbone checkpoint). */
int train_load_distill_teacher(train_model *m, const char *path);

/* Starts a new phase from another run's weights (lvd-train --init-from, the high-resolution phase): path is a
 * training state (its student.* and teacher.* tensors, heads included, and its centers) or a backbone checkpoint
 * (the student and the teacher both get it; heads, when "dino_head." / "ibot_head." tensors are there, too,
 * else they keep their initialisation). The architecture must be the model's (width, depth, heads, patch: -1
 * naming both otherwise); a pos_embed of another grid M0 x M0 is resampled to the model's M x M with the model's
 * interpolation (common/posembed.h: bicubic, by default scale_factor (M + 0.1) / M0 without antialias, as
 * DINOv2's interpolate_pos_encoding), its CLS row kept. Every other tensor must have the model's shape. The
 * AdamW moments stay zero and the iteration 0, so the schedules run over the new phase's own iterations. */
int train_init_from(train_model *m, const char *path);

#endif
