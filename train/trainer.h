/* trainer.h — lvd-train's loop: a manifest's batches through train_step, with its files in RUN/.
 *
 * RUN/ holds
 *   config.yaml                     the whole recipe (recipe_dump), written at the start of a run
 *   metrics.jsonl                   one JSON object per iteration: iteration, epoch, mode ("ssl", or
 *                                   "distillation" with distillation.enabled), every loss term, lr, wd,
 *                                   last_layer_lr, momentum, teacher_temp, grad_norm per module, n_masked,
 *                                   images_per_s (global batch / the iteration's wall time), step_s, load_s, failed
 *   training_state.safetensors      the state for an exact resume (train/state.h), every save_every iterations
 *                                   and at the end
 *   teacher_checkpoint.safetensors  the teacher backbone, official names, written with the state (in a
 *                                   distillation the EMA of the student: the frozen teacher is not written)
 * Files are replaced atomically; after a crash (kill -9) --resume loads the state, drops the metrics lines of
 * iterations it does not cover, puts the loader where the state says and continues: the parameters then equal
 * an uninterrupted run's bit for bit at a fixed thread count.
 *
 * Data parallel (o->dist with ranks > 1, common/dist.h): rank r reads part r of each epoch's order, the global
 * batch is train.batch_size_per_gpu * ranks (the lr's scaling rule sees it), and only rank 0 writes RUN/'s
 * files; every rank reads the state on --resume, which must be of the same number of ranks. The ranks agree
 * every iteration on a read failure, a signal and the skipped-sample count, and at every save compare their
 * parameters' hashes, so that they stop together and never drift apart unnoticed.
 *
 * Two ways to start from another run:
 *   distillation (distillation.enabled, train/step.h): a frozen teacher of its own architecture, read from the
 *     teacher run's training state (distillation.checkpoint_path) and config.yaml (distillation.full_cfg_path,
 *     default the one beside the checkpoint), gives the targets; it is read again on --resume and never written;
 *   init_from (a new phase, e.g. at a higher crops.global_crops_size): a new RUN whose student, teacher, heads and
 *     centers come from another run's training state or checkpoint (train_init_from: positional embeddings
 *     resampled to the new grid), with fresh AdamW moments and iteration 0, so the recipe's schedules run over
 *     this phase's own optim.epochs x OFFICIAL_EPOCH_LENGTH iterations. On --resume of such a run the state wins.
 *
 * A run ends at max_iter (default optim.epochs * train.OFFICIAL_EPOCH_LENGTH), on SIGINT/SIGTERM (after the
 * current iteration, with the state saved), on a non-finite loss or gradient (stopped before the optimizer,
 * the state on disk left as the last save), or when no sample of an epoch can be read.
 */
#ifndef LVD_TRAIN_TRAINER_H
#define LVD_TRAIN_TRAINER_H

#include <stdint.h>

#include "dist.h"
#include "train/recipe.h"

typedef struct trainer_opts {
    const recipe *rc;          /* finished (recipe_finish) */
    const char *manifest;      /* --manifest path */
    const char *out;           /* RUN directory (made if missing) */
    int resume;                /* continue from RUN/training_state.safetensors if there is one */
    int64_t save_every;        /* iterations between saves (> 0) */
    int64_t max_iter;          /* stop when this many iterations are done (< 0: the recipe's total; 0: none, the
                                * initial state and checkpoint are written) */
    const char *init_from;     /* NULL, or a training state or checkpoint a new run starts from (train_init_from) */
    int32_t threads;           /* compute threads (<= 0: all CPUs) */
    lvd_dist *dist;          /* the processes (NULL: one); every rank calls trainer_run with the same options */
} trainer_opts;

/* What a run did, for the caller's report. */
typedef struct trainer_result {
    int64_t start_iter, end_iter; /* iterations done before and after this invocation */
    uint64_t failed;              /* samples skipped (whole run) */
    int interrupted;              /* stopped by a signal, state saved */
    double seconds;               /* wall time of the iterations */
} trainer_result;

/* Runs the training. 0 or -1 (the message names the file, iteration or term). */
int trainer_run(const trainer_opts *o, trainer_result *res);

#endif
