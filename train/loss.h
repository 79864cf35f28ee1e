/* loss.h — DINOv2's self-supervised losses with their gradients: the DINO CLS-token loss, the iBOT masked-patch
 * loss, the KoLeo regulariser, the teacher's centering (softmax centering or Sinkhorn-Knopp), and their
 * combination exactly as dinov2/train/ssl_meta_arch.py's forward_backward weights and scales them.
 *
 * Semantics follow dinov2/loss/{dino_clstoken_loss,ibot_patch_loss,koleo_loss}.py on one process (world
 * size 1). Teacher quantities carry no gradient. Gradients are d loss / d student input, ACCUMULATED (+=)
 * into the caller's buffers, times a caller-given factor (the weight the term has in the total), so the
 * trainer can sum every term into one gradient buffer. Row-major float32 in; sums in double. Crop-major rows
 * throughout: row c * B + b is image b of crop c, as the official collate stacks them.
 */
#ifndef LVD_TRAIN_LOSS_H
#define LVD_TRAIN_LOSS_H

#include <stddef.h>
#include <stdint.h>

#define KOLEO_EPS 1e-8 /* F.normalize eps, PairwiseDistance eps (added to the difference) and the log's eps */

/* ---- data parallelism ---------------------------------------------------------------------------------- */

typedef enum ssl_reduce_op { SSL_REDUCE_SUM = 0, SSL_REDUCE_MAX = 1 } ssl_reduce_op;

/* An all-reduce over the processes of a data-parallel run (MPI_Allreduce in place): fn replaces buf (n doubles)
 * by the element-wise sum or max over every process's buf, and returns 0 or -1. Every process must make the
 * same calls in the same order. fn NULL (or the whole struct NULL): one process, buf unchanged. */
typedef struct ssl_reduce {
    int (*fn)(double *buf, int64_t n, ssl_reduce_op op, void *ctx);
    void *ctx;
} ssl_reduce;

/* ---- teacher targets (no gradient) ----------------------------------------------------------------------- */

/* probs (n, k) = softmax((t - center) / temp) per row; t (n, k), center (k). */
void dino_softmax_center_teacher(float *probs, const float *t, const float *center, float temp, int64_t n,
                                 int64_t k);

/* center (k) = momentum * center + (1 - momentum) * mean over the rows of t (n, k) of every process (the sums
 * and the row count are all-reduced, as update_center all-reduces its sum). DINOLoss.update_center +
 * apply_center_update (applied there lazily before the next centering, which gives the same state). For
 * iBOT's center pass the masked teacher tokens: its update is the mean over them. ws: k + 1 doubles. No rows
 * anywhere leaves the center (the code would average an empty set). Returns 0 or -1 (the reduction failed). */
int dino_center_update(float *center, const float *t, float momentum, int64_t n, int64_t k, double *ws,
                       const ssl_reduce *red);

/* Sinkhorn-Knopp with n_iter iterations (the code's 3) over t (n, k) (n samples, k prototypes):
 * Q = exp(t / temp), normalised to sum 1, then n_iter times rows-per-prototype to 1/k and columns-per-sample
 * to 1/B, finally times B, with B = n summed over the processes; q (n, k) gets Q transposed back (each row
 * sums to 1). The sums over samples are all-reduced as the code's. The exponent is shifted by the (all-reduced)
 * max(t) / temp, which the first normalisation cancels exactly, so large logits cannot overflow. ws: max(n, k)
 * doubles of scratch. q may alias t. For iBOT, n = the masked tokens (n_masked_patches). Returns 0 or -1. */
int dino_sinkhorn_knopp_teacher(float *q, const float *t, float temp, int64_t n, int64_t k, int32_t n_iter,
                                double *ws, const ssl_reduce *red);

/* ---- student-side cross-entropies ----------------------------------------------------------------------- */

/* DINOLoss.forward: the student s holds n_s crops and the teacher targets t n_t crops, each of b rows of k:
 *   L = - sum over student crops i, teacher crops j of mean over b of sum_k t_j[b] * log_softmax(s_i[b] / temp).
 * ds (n_s * b, k) += gscale * dL/ds unless NULL; ds == s computes in place: s's rows are replaced by
 * gscale * dL/ds. ws: n_s * b doubles. Returns L. */
double dino_loss_xent(float *ds, double gscale, const float *s, int64_t n_s, const float *t, int64_t n_t,
                      int64_t b, int64_t k, float temp, double *ws);

/* iBOTPatchLoss.forward_masked over m masked tokens: s (m, k) student logits, t (m, k) teacher targets,
 * w (m) masks_weight (1 / masked tokens of the token's image), n_images = masks.shape[0]:
 *   L = - sum over tokens of w * sum_k t * log_softmax(s / temp) / n_images.
 * ds (m, k) += gscale * dL/ds unless NULL (ds == s: in place, as dino_loss_xent). ws: m doubles. Returns L. */
double ibot_loss_forward_masked(float *ds, double gscale, const float *s, const float *t, const float *w,
                                int64_t m, int64_t n_images, int64_t k, float temp, double *ws);

/* The official collate's mask bookkeeping: masks (n_images, n_patches) 0/1 -> indices (m) of the masked tokens in
 * the flattened (n_images * n_patches) order and their weights (m) = 1 / max(1, masked tokens of the image).
 * indices and weights must hold n_images * n_patches entries. Returns m. */
int64_t ibot_mask_select(int64_t *indices, float *weights, const uint8_t *masks, int64_t n_images,
                         int64_t n_patches);

/* ---- KoLeo ---------------------------------------------------------------------------------------------- */

/* Scratch floats koleo_loss needs for n rows of d. */
size_t koleo_workspace_floats(int64_t n, int64_t d);

/* KoLeoLoss.forward on x (n, d), n >= 1: xn = x / max(||x||, 1e-8); each row's nearest neighbour I by the
 * largest inner product with the diagonal set to -1 (first index on ties); dist = ||xn - xn[I] + 1e-8||;
 * L = -mean log(dist + 1e-8). The gradient flows through both xn and xn[I] (the argmax is constant).
 * dx (n, d) += gscale * dL/dx unless NULL. ws: koleo_workspace_floats(n, d) floats. Returns L. */
double koleo_loss(float *dx, double gscale, const float *x, int64_t n, int64_t d, float *ws);

/* ---- the combination of ssl_meta_arch.forward_backward -------------------------------------------------- */

typedef enum ssl_centering {
    SSL_CENTERING_SOFTMAX = 0,  /* cfg.train.centering "centering": softmax centering, EMA centers */
    SSL_CENTERING_SINKHORN = 1, /* "sinkhorn_knopp": 3 iterations; centers untouched */
} ssl_centering;

typedef struct ssl_loss_config {
    int64_t batch;         /* B: images per crop (the global crops hold 2B rows, the local n_local * B) */
    int64_t n_local;       /* local crops per image (0: no local term) */
    int64_t dino_k;        /* DINO head prototypes */
    int64_t ibot_k;        /* iBOT head prototypes (dino_k when the head is shared) */
    int64_t cls_dim;       /* backbone width D of the CLS tokens KoLeo sees */
    int64_t max_masked;    /* capacity: masked tokens per step (the collate's upperbound) */
    float student_temp;    /* 0.1 */
    float center_momentum; /* 0.9 */
    float dino_weight;     /* dino.loss_weight 1.0; 0 turns the DINO terms and KoLeo off */
    float ibot_weight;     /* ibot.loss_weight 1.0; 0 turns iBOT off */
    float koleo_weight;    /* dino.koleo_loss_weight 0.1; 0 turns KoLeo off */
    ssl_centering centering;
    int patch_targets_in_place; /* the iBOT targets overwrite the teacher's patch logits (teacher_patch_rw) instead
                                 * of a (max_masked, ibot_k) buffer of their own: the trainer's memory saving */
} ssl_loss_config;

/* The recipe's values (dinov2-recipe.md §3) for the given sizes; centering softmax. */
void ssl_loss_config_default(ssl_loss_config *c, int64_t batch, int64_t n_local, int64_t dino_k, int64_t ibot_k,
                             int64_t cls_dim, int64_t max_masked);

typedef struct ssl_loss {
    ssl_loss_config cfg;
    float *dino_center;   /* (dino_k) DINOLoss.center, starts at 0 */
    float *ibot_center;   /* (ibot_k) iBOTPatchLoss.center, starts at 0 */
    float *dino_targets;  /* (2B, dino_k) the teacher targets of the last step, crop order */
    float *ibot_targets;  /* (max_masked, ibot_k) the masked tokens' teacher targets of the last step (NULL with
                           * patch_targets_in_place: they are then in the inputs' teacher_patch_rw) */
    float *center_prev;   /* (ibot_k) the iBOT center before this step's update (in-place targets) */
    float *koleo_ws;      /* koleo_workspace_floats(B, cls_dim) */
    double *ws;           /* max(n_local * B, 2B, max_masked, max(dino_k, ibot_k) + 1) doubles */
    void *arena;          /* the one allocation behind all of the above */
    ssl_reduce reduce;    /* all-reduce of the teacher statistics; zero (one process) after init */
} ssl_loss;

/* One step's inputs. Global-crop rows are crop-major in crop order (the swap that matches each student global
 * crop to the other teacher crop is done here). */
typedef struct ssl_loss_inputs {
    const float *student_global; /* (2B, dino_k) student DINO head logits of the global crops' CLS */
    const float *student_local;  /* (n_local * B, dino_k) of the local crops' CLS */
    const float *teacher_global; /* (2B, dino_k) teacher DINO head logits of the global crops' CLS */
    const float *student_cls;    /* (2B, cls_dim) student backbone x_norm_clstoken of the global crops */
    const float *student_patch;  /* (n_masked, ibot_k) student iBOT logits of the masked tokens */
    const float *teacher_patch;  /* (n_masked, ibot_k) teacher iBOT logits of the same tokens */
    const float *masks_weight;   /* (n_masked) ibot_mask_select's weights */
    int64_t n_masked;            /* 0 ... max_masked */
    float *teacher_patch_rw;     /* with cfg.patch_targets_in_place: the same logits, writable; they are replaced
                                  * by the targets (teacher_patch is then not read) */
} ssl_loss_inputs;

/* Gradient buffers, each += d total / d input; NULL skips one. A logits gradient may also be the logits
 * buffer itself (student_global == the inputs' student_global, and so on): its rows are then replaced by
 * the gradient, as dino_loss_xent in place, and the logits are consumed. */
typedef struct ssl_loss_grads {
    float *student_global; /* (2B, dino_k) */
    float *student_local;  /* (n_local * B, dino_k) */
    float *student_cls;    /* (2B, cls_dim): KoLeo's part only (add the head's d input to it) */
    float *student_patch;  /* (n_masked, ibot_k) */
} ssl_loss_grads;

/* The values of the code's loss_dict, and the total it backpropagates. */
typedef struct ssl_loss_terms {
    double dino_local_crops_loss;  /* DINOLoss(local, teacher) / (n_global_terms + n_local_terms) */
    double dino_global_crops_loss; /* DINOLoss(global, swapped teacher) * 2 / (the same) */
    double koleo_loss;             /* koleo_weight * (KoLeo(crop 0) + KoLeo(crop 1)) / 2, as displayed */
    double ibot_loss;              /* forward_masked * 2 * (1 / 2) / 2, as displayed */
    double total;                  /* dino_weight * (local + global) + koleo_weight * sum of both KoLeo
                                    * + ibot_weight * forward_masked: what forward_backward backpropagates */
} ssl_loss_terms;

int ssl_loss_init(ssl_loss *l, const ssl_loss_config *cfg);
void ssl_loss_free(ssl_loss *l);

/* One training step's losses: computes the teacher targets with teacher_temp (softmax centering with the
 * current centers, which are then updated with this batch's teacher logits, or Sinkhorn-Knopp), every term
 * and the gradients. n_global_crops is 2 as in the code; terms with weight 0 (or n_local 0, or n_masked 0)
 * are skipped and read 0. With l->reduce set, the centers' and Sinkhorn-Knopp's statistics are all-reduced
 * (the trainer all-reduces the gradients); the loss values stay this process's, as each GPU's are in the
 * code. Returns 0 or -1 (sizes outside the configuration, or a failed reduction). */
int ssl_loss_step(ssl_loss *l, const ssl_loss_inputs *in, float teacher_temp, ssl_loss_terms *out,
                  const ssl_loss_grads *g);

#endif
