/* linear.h — linear evaluation on frozen features, after dinov2/eval/linear.py: linear classifiers
 * (nn.Linear(F, C)) trained on the features of a train split, one per learning rate of a grid and all in one
 * pass over the features (as linear.py trains its classifiers together), the best chosen on a held-out split.
 *
 * Training of the classifier of learning rate lr: W (C, F) and b (C) start at 0 (the problem is convex; linear.py
 * draws W from N(0, 0.01), which only adds noise to the start); `steps` full-batch steps of torch.optim.SGD with
 * momentum m, dampening 0 and weight decay wd on W and b (linear.py: momentum 0.9, weight_decay 0), i.e.
 *     g = grad + wd p;  buf = g at step 0, else m buf + g;  p -= lr_t buf,
 * with lr_t = lr (1 + cos(pi t / steps)) / 2 at step t = 0 .. steps - 1 (CosineAnnealingLR, eta_min 0) and grad
 * the gradient of the mean cross-entropy of softmax(x W^T + b) over the n training rows. Full batches, not
 * linear.py's mini-batches of 1024 with random crops: the features are frozen and computed once (no
 * augmentation), so the exact gradient is cheap and the result is deterministic and replayable.
 *
 * Arithmetic: the logits and the weight gradient are SGEMMs (float32); softmax, the loss and the bias gradient
 * are float64; parameters and momentum buffers are float32 as in PyTorch. A classifier whose loss or
 * parameters become non-finite, or whose last loss is above ln C (the loss of its zero start), is marked
 * diverged (its learning rate is too large) and set to 0.
 *
 * Shapes: x (n, F) row-major float32, labels int32 in [0, C). The classifiers of the grid are stacked: W
 * (n_lr * C, F), b (n_lr * C), classifier q in rows q * C .. q * C + C - 1. Errors follow err.h. */
#ifndef LVD_EVAL_LINEAR_H
#define LVD_EVAL_LINEAR_H

#include <stdint.h>

#define LINEAR_MAX_LRS 32

typedef struct linear_opts {
    double lr[LINEAR_MAX_LRS]; /* the grid */
    int32_t n_lr;
    int32_t steps;       /* full-batch steps (> 0) */
    double momentum;     /* 0.9 */
    double weight_decay; /* 0 */
    int32_t threads;     /* OpenBLAS threads; 0: all */
} linear_opts;

typedef struct linear_fit_stats {
    double loss[LINEAR_MAX_LRS]; /* mean training cross-entropy at the last step (before its update) */
    int diverged[LINEAR_MAX_LRS];
} linear_fit_stats;

/* Trains the grid of classifiers into W (n_lr * C, F) and b (n_lr * C) on x (n, F) with labels y (n). Fails on
 * n < 1, C < 2, bad options or out of memory. */
int linear_fit(const float *x, const int32_t *y, int64_t n, int32_t F, int32_t C, const linear_opts *o, float *W,
               float *b, linear_fit_stats *st);

/* Top-1 correct predictions of each of the nq stacked classifiers (W (nq * C, F), b) on x (n, F), labels y
 * (a label < 0 is never right): the argmax of the float32 logits, ties to the lowest class. correct (nq). */
int linear_correct(const float *x, const int32_t *y, int64_t n, int32_t F, int32_t C, int32_t nq, const float *W,
                   const float *b, int64_t *correct);

#endif
