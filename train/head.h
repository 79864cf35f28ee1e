/* head.h — the DINOv2 projection head (dinov2/layers/dino_head.py, DINOHead with use_bn off, mlp_bias on),
 * forward and backward over rows.
 *
 *   nlayers 1:  z = x @ W0^T + b0                                    (in_dim -> bottleneck)
 *   nlayers n:  h = GELU(x @ W0^T + b0), then n - 2 times h = GELU(h @ Wi^T + bi)   (-> hidden),
 *               z = h @ W(n-1)^T + b(n-1)                             (hidden -> bottleneck)
 *   y = z / max(||z||_2, 1e-12)                                       (F.normalize, float32 eps)
 *   logits = y @ W^T,  W[k] = g[k] * v[k] / ||v[k]||_2                (weight_norm over dim 0, no bias)
 *
 * GELU is the exact (erf) form. The weight norm has no eps, as torch's: a zero row of v gives NaN. g is a
 * parameter like any other (the official code fills it with 1 and leaves it trainable, and the optimiser
 * decays it); backward returns its gradient and the optimiser decides whether to apply it.
 *
 * Memory: the parameters (and, for a student, their gradients) are one arena each, carved into named tensors
 * in the official state-dict order. What a forward pass keeps for backward, and the scratch of backward,
 * lives in a dino_head_run made once for a maximum number of rows, so no call allocates. Conventions are
 * vit_layers.h's: row-major float32, backward ACCUMULATES (+=) into every gradient it writes.
 */
#ifndef LVD_TRAIN_HEAD_H
#define LVD_TRAIN_HEAD_H

#include <stddef.h>
#include <stdint.h>

#define DINO_HEAD_MAX_LAYERS 8       /* nlayers of the MLP, 1 ... this */
#define DINO_HEAD_NORM_EPS 1e-12f    /* F.normalize eps for float32 inputs */

/* Sizes. The recipe's: in_dim = backbone width, hidden 2048, bottleneck 256, prototypes 65536, nlayers 3. */
typedef struct dino_head_config {
    int64_t in_dim;     /* backbone width D */
    int64_t hidden;     /* MLP hidden width (unused when nlayers == 1) */
    int64_t bottleneck; /* width before the L2 normalisation */
    int64_t prototypes; /* K, output logits per row */
    int32_t nlayers;    /* Linear layers of the MLP, 1 ... DINO_HEAD_MAX_LAYERS */
} dino_head_config;

/* One named parameter tensor: an official state-dict name (without the "dino_head." / "ibot_head." prefix of
 * training checkpoints), its shape and where it sits in the arena. */
typedef struct dino_head_tensor {
    char name[32];    /* "mlp.0.weight", ..., "last_layer.weight_g", "last_layer.weight_v"; "mlp.weight" when
                       * nlayers == 1 (then mlp is one nn.Linear, not a Sequential) */
    int32_t ndim;     /* 1 or 2 */
    int64_t shape[2]; /* weights (out, in), biases (out), weight_g (K, 1), weight_v (K, bottleneck) */
    size_t offset;    /* floats from the start of the parameter (or gradient) arena */
    size_t count;     /* floats */
} dino_head_tensor;

typedef struct dino_head {
    dino_head_config cfg;
    size_t n_params;                   /* floats in params (and grads) */
    float *params;                     /* the arena, tensors in dino_head_tensor order */
    float *grads;                      /* same layout, or NULL (a teacher) */
    float *w[DINO_HEAD_MAX_LAYERS];    /* MLP weights (out_i, in_i), pointers into params */
    float *b[DINO_HEAD_MAX_LAYERS];    /* MLP biases (out_i) */
    float *weight_g;                   /* (K) last_layer.weight_g, state-dict shape (K, 1) */
    float *weight_v;                   /* (K, bottleneck) last_layer.weight_v */
    float *dw[DINO_HEAD_MAX_LAYERS];   /* gradients, the same shapes, into grads (NULL without grads) */
    float *db[DINO_HEAD_MAX_LAYERS];
    float *dweight_g;
    float *dweight_v;
} dino_head;

/* Checks a configuration (every size >= 1, nlayers in range, products fit in memory sizes). 0 or -1. */
int dino_head_config_check(const dino_head_config *cfg);

/* Number of parameter tensors: 2 * nlayers + 2. */
int dino_head_ntensors(const dino_head_config *cfg);
/* The i-th tensor (0 <= i < ntensors) in state-dict order. Returns 0 or -1 (bad i). */
int dino_head_tensor_at(const dino_head_config *cfg, int i, dino_head_tensor *t);

/* Allocates the parameter arena (zeroed) and, if with_grads, the gradient arena (zeroed). 0 or -1. */
int dino_head_init(dino_head *h, const dino_head_config *cfg, int with_grads);
void dino_head_free(dino_head *h);

/* The official initialisation, from a splitmix64 stream seeded with seed (one 64-bit draw per uniform, in
 * arena order): MLP weights trunc_normal_(std 0.02, a -2, b 2) by Box-Muller with rejection outside [a, b]
 * (bounds absolute as torch's, so at std 0.02 nothing is rejected in practice); MLP biases 0; weight_v keeps
 * nn.Linear's default kaiming_uniform_(a = sqrt 5) = U(-1/sqrt(bottleneck), 1/sqrt(bottleneck)) because
 * DINOHead applies _init_weights before it builds last_layer; weight_g 1. Not torch's bit stream. */
void dino_head_init_weights(dino_head *h, uint64_t seed);

/* Zeroes the gradient arena (no-op without one). */
void dino_head_zero_grad(dino_head *h);

/* Activations kept by a forward pass for backward, and backward's scratch, for up to max_rows rows. */
typedef struct dino_head_run {
    dino_head_config cfg;
    int64_t max_rows;
    int64_t n;                         /* rows of the last forward (0 before any) */
    int with_backward;                 /* whether the backward scratch exists */
    float *arena;
    float *pre[DINO_HEAD_MAX_LAYERS];  /* (max_rows, out_i) linear outputs; pre[nlayers-1] = z */
    float *act[DINO_HEAD_MAX_LAYERS];  /* (max_rows, hidden) GELU(pre[i]) for i < nlayers - 1 */
    float *y;                          /* (max_rows, bottleneck) normalised z */
    float *znorm;                      /* (max_rows) ||z|| */
    float *w_eff;                      /* (K, bottleneck) g v / ||v|| of the last forward */
    float *vnorm;                      /* (K) ||v|| of the last forward */
    float *dw_last;                    /* (K, bottleneck) backward scratch: d logits^T @ y */
    float *dbuf[2];                    /* (max_rows, max(hidden, bottleneck)) backward ping-pong scratch */
} dino_head_run;

/* Makes a run for cfg and up to max_rows rows; with_backward 0 (a teacher) leaves out backward's scratch
 * (about K * bottleneck + 2 * max_rows * hidden floats). 0 or -1. */
int dino_head_run_init(dino_head_run *r, const dino_head_config *cfg, int64_t max_rows, int with_backward);
void dino_head_run_free(dino_head_run *r);

/* out (n, K) = head(x (n, in_dim)), 1 <= n <= r->max_rows; r must have been made for h's configuration.
 * Keeps the activations in r for dino_head_backward. Returns 0 or -1 (size mismatch). */
int dino_head_forward(const dino_head *h, dino_head_run *r, float *out, const float *x, int64_t n);

/* Backward of the last dino_head_forward on r, with the same x (n, in_dim) and unchanged parameters:
 * h's gradients += d params; dx (n, in_dim) += d x unless dx is NULL. dout (n, K) is d loss / d logits.
 * Needs h->grads and r->with_backward. Returns 0 or -1. */
int dino_head_backward(dino_head *h, dino_head_run *r, float *dx, const float *dout, const float *x, int64_t n);

#endif
