/* schedule.h — DINOv2's per-iteration schedules: the CosineScheduler (dinov2/utils/utils.py) and the five
 * schedules build_schedulers (dinov2/train/train.py) makes of it for the recipe (dinov2-recipe.md section 3).
 *
 * A CosineScheduler of total_iters T, freeze_iters F and warmup_iters W is, at iteration it:
 *   it < F:            0
 *   F <= it < F + W:   numpy.linspace(start_warmup_value, base_value, W)[it - F]
 *   F + W <= it < T:   final + 0.5 * (base - final) * (1 + cos(pi * i / n)),  i = it - F - W, n = T - F - W
 *   it >= T:           final_value
 * Values are evaluated in double in numpy's order, so they agree with the official schedule arrays to
 * rounding. Nothing is tabulated: a value costs one cos().
 */
#ifndef LVD_TRAIN_SCHEDULE_H
#define LVD_TRAIN_SCHEDULE_H

#include <stdint.h>

typedef struct sched_cosine {
    double base_value;         /* value at the end of the warmup, where the cosine starts */
    double final_value;        /* value at total_iters and after */
    double start_warmup_value; /* value at the first warmup iteration */
    int64_t total_iters;       /* T = freeze + warmup + cosine iterations */
    int64_t warmup_iters;      /* W */
    int64_t freeze_iters;      /* F: iterations at 0 before the warmup */
    int64_t zero_iters;        /* iterations [0, zero_iters) of the table forced to 0 afterwards (the
                                  last-layer lr's `schedule[:freeze_last_layer_epochs * L] = 0`); never past T */
} sched_cosine;

/* CosineScheduler(base_value, final_value, total_iters, warmup_iters, start_warmup_value, freeze_iters).
 * zero_iters starts at 0. -1 (with the reason) unless 0 <= F + W <= T. */
int sched_cosine_init(sched_cosine *s, double base_value, double final_value, int64_t total_iters,
                      int64_t warmup_iters, double start_warmup_value, int64_t freeze_iters);

/* schedule[it] of the official scheduler for it >= 0 (final_value from total_iters on). */
double sched_cosine_at(const sched_cosine *s, int64_t it);

/* The recipe's schedule settings, with the DINOv2 config keys they come from. */
typedef struct sched_recipe_config {
    int64_t epoch_length;             /* train.OFFICIAL_EPOCH_LENGTH: iterations per "epoch" (1250) */
    int64_t epochs;                   /* optim.epochs (100) */
    int64_t batch_size;               /* global batch in images: train.batch_size_per_gpu x ranks */
    double base_lr;                   /* optim.base_lr, for a batch of 1024 (0.004) */
    double min_lr;                    /* optim.min_lr (1e-6) */
    int64_t warmup_epochs;            /* optim.warmup_epochs (10) */
    double weight_decay;              /* optim.weight_decay (0.04) */
    double weight_decay_end;          /* optim.weight_decay_end (0.4) */
    double momentum_teacher;          /* teacher.momentum_teacher (0.992) */
    double final_momentum_teacher;    /* teacher.final_momentum_teacher (1.0) */
    double warmup_teacher_temp;       /* teacher.warmup_teacher_temp (0.04) */
    double teacher_temp;              /* teacher.teacher_temp (0.07) */
    int64_t warmup_teacher_temp_epochs; /* teacher.warmup_teacher_temp_epochs (30) */
    int64_t freeze_last_layer_epochs; /* optim.freeze_last_layer_epochs (1) */
} sched_recipe_config;

/* ssl_default_config.yaml's values, batch_size 1024 (so lr = base_lr). */
void sched_recipe_defaults(sched_recipe_config *c);

typedef struct sched_recipe {
    double lr;              /* peak lr: base_lr * sqrt(batch_size / 1024) (the sqrt_wrt_1024 scaling rule) */
    sched_cosine lr_s;      /* 0 -> lr over the warmup, cosine to min_lr */
    sched_cosine wd_s;      /* cosine weight_decay -> weight_decay_end, no warmup */
    sched_cosine mom_s;     /* cosine momentum_teacher -> final_momentum_teacher */
    sched_cosine temp_s;    /* linear warmup_teacher_temp -> teacher_temp, then teacher_temp */
    sched_cosine last_s;    /* lr_s with the first freeze_last_layer_epochs epochs at 0 */
} sched_recipe;

/* One iteration's values (what apply_optim_scheduler and the losses read). */
typedef struct sched_values {
    double lr, wd, momentum, teacher_temp, last_layer_lr;
} sched_values;

/* build_schedulers(cfg). -1 (with the reason) on non-positive sizes or inconsistent epochs. */
int sched_recipe_init(sched_recipe *s, const sched_recipe_config *c);

/* The values at iteration it >= 0. */
void sched_recipe_at(const sched_recipe *s, int64_t it, sched_values *out);

#endif
