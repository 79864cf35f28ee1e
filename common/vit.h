/* vit.h — the DINOv2 Vision Transformer: configuration, parameters in one arena, forward and backward.
 *
 * One implementation serves lvd-embed, lvd-train and lvd-eval (DESIGN.md, "The ViT core"). It computes what
 * the official DINOv2 `DinoVisionTransformer` computes (../shared/docs/dinov2-recipe.md section 4):
 *   tokens = [cls + pos[0], registers, patches(x) + interp(pos[1:])]   (masked patches replaced by mask_token
 *            before the positional embedding is added; registers carry no positional embedding)
 *   per block: x += ls1 * attn(norm1(x)); x += ls2 * ffn(norm2(x))       (per-sample drop path in training)
 *   outputs: norm(x) split into CLS (B, D), registers (B, R, D), patch tokens (B, N, D).
 * Shapes: images are float32 (B, 3, H, W), already normalised, H and W multiples of the patch size;
 * N = (H / p) * (W / p) patch tokens; T = 1 + R + N tokens.
 *
 * Parameters, gradients and activations each live in one allocation with named views. Matrix products go
 * through OpenBLAS cblas_sgemm; the rest are OpenMP loops. Inference never holds a (B, heads, T, T) matrix:
 * attention is computed per (image, head) with a T x T scratch per thread. Training does not keep the attention
 * probabilities either: the backward pass recomputes them per (image, head) from the saved q, k (one more
 * SGEMM and softmax per head), so a step's memory grows with B * T * D, not with B * heads * T^2.
 *
 * Batch invariance: the forward pass computes each image's outputs (and every block's output) bit for bit the same
 * whatever the other images of the batch, the image's position in it, the batch size and the thread count, in
 * inference and train runs alike. lvd-embed relies on it: a part of a --part run, a smaller last batch or another
 * --batch gives the same rows as a single run. Every matrix product is one single-threaded SGEMM per (image, block
 * of output channels) or per (image, head), of a shape that depends only on the input size (linear_forward,
 * attention_forward); LayerNorm and softmax reduce within a row in a fixed order; an elementwise loop gives an
 * element the same bits in its vectorised body as in a scalar tail (no FMA contraction), wherever the threads'
 * ranges split the batch. It holds on one machine: OpenBLAS picks its SGEMM kernel and GCC its SIMD clone by CPU,
 * so another CPU model may differ in the last bits. The backward pass sums over the batch, so gradients are
 * deterministic for a given batch and thread count, not batch invariant.
 */
#ifndef LVD_VIT_H
#define LVD_VIT_H

#include <stddef.h>
#include <stdint.h>

typedef enum vit_ffn { VIT_FFN_MLP = 0, VIT_FFN_SWIGLU = 1 } vit_ffn;

/* How pos_embed's (M x M) grid is resampled to the (H/p x W/p) grid of an input (F.interpolate bicubic):
 * OFFSET: scale_factor ((h + 0.1) / M, (w + 0.1) / M), antialias off (the original DINOv2 models);
 * SIZE_AA: size (h, w), antialias on (the _reg4 models). No resampling when the grid equals M x M. */
typedef enum vit_pos_mode { VIT_POS_OFFSET = 0, VIT_POS_SIZE_AA = 1 } vit_pos_mode;

typedef struct vit_config {
    int32_t patch;        /* patch side p, pixels */
    int32_t pos_grid;     /* M: pos_embed is (1, 1 + M*M, D); 37 for released models (518 / 14) */
    int32_t dim;          /* D */
    int32_t depth;        /* blocks */
    int32_t heads;        /* D % heads == 0 */
    int32_t ffn_hidden;   /* MLP: fc1 is (hidden, D); SwiGLU: w12 is (2 * hidden, D), w3 is (D, hidden) */
    vit_ffn ffn;
    int32_t n_reg;        /* register tokens R (0 or 4 in released models) */
    vit_pos_mode pos_mode;
    int32_t layerscale;   /* 1 if blocks have ls1/ls2 gamma, 0 for plain residuals */
} vit_config;

/* Presets: vit_small, vit_base, vit_large, vit_giant2 (patch 14, M 37, MLP except giant2's SwiGLU), the CPU
 * presets vit_tiny (D 192, depth 12, heads 3) and vit_pico (D 64, depth 4, heads 4); a "_reg4" suffix adds
 * 4 registers and SIZE_AA. vit_large uses MLP here (the hub model); pass ffn explicitly for SwiGLU.
 * Returns 0 or -1 for an unknown name. */
int vit_preset(const char *name, vit_config *out);

/* SwiGLU hidden size of the official code for dimension D: ((int(4D * 2/3) + 7) / 8) * 8. */
int32_t vit_swiglu_hidden(int32_t dim);

/* Checks a configuration's consistency; 0 or -1 with the reason. */
int vit_config_check(const vit_config *c);

/* Views of one block's parameters (or gradients: same layout). Shapes as in the official state dict. */
typedef struct vit_block_params {
    float *norm1_w, *norm1_b; /* (D) */
    float *qkv_w, *qkv_b;     /* (3D, D), (3D): rows q then k then v, head h at rows [h*dh, (h+1)*dh) */
    float *proj_w, *proj_b;   /* (D, D), (D) */
    float *ls1;               /* (D) or NULL without layerscale */
    float *norm2_w, *norm2_b; /* (D) */
    float *fc1_w, *fc1_b;     /* MLP fc1: (Hd, D), (Hd); SwiGLU w12: (2 Hd, D), (2 Hd) */
    float *fc2_w, *fc2_b;     /* MLP fc2 / SwiGLU w3: (D, Hd), (D) */
    float *ls2;               /* (D) or NULL */
} vit_block_params;

typedef struct vit_params {
    float *cls_token;       /* (D) */
    float *pos_embed;       /* (1 + M*M, D) */
    float *mask_token;      /* (D) */
    float *reg_tokens;      /* (R, D) or NULL */
    float *patch_w;         /* (D, 3, p, p) */
    float *patch_b;         /* (D) */
    vit_block_params *blocks; /* depth entries */
    float *norm_w, *norm_b; /* (D) */
} vit_params;

/* One named tensor of the model, as the official state dict names it ("blocks.3.attn.qkv.weight"). */
#define VIT_NAME_MAX 64
typedef struct vit_tensor {
    char name[VIT_NAME_MAX];
    int32_t ndim;
    int64_t shape[4];
    size_t offset;          /* in floats, into the parameter (or gradient) arena */
    size_t count;           /* floats */
} vit_tensor;

typedef struct vit_model {
    vit_config cfg;
    size_t n_params;          /* floats in the arena */
    float *param_mem;         /* one arena of n_params floats */
    vit_params p;             /* views into param_mem */
    float *grad_mem;          /* NULL until vit_alloc_grads; same layout */
    vit_params g;
    vit_tensor *tensors;      /* n_tensors entries in state-dict order */
    size_t n_tensors;
    vit_block_params *block_views; /* storage behind p.blocks and g.blocks (2 * depth) */
} vit_model;

/* Allocates a model of configuration c with zeroed parameters. */
int vit_create(const vit_config *c, vit_model **out);
void vit_free(vit_model *m);

/* The named tensor, or NULL. */
const vit_tensor *vit_find_tensor(const vit_model *m, const char *name);

/* Deterministic random initialisation like the official init_weights: trunc_normal(std 0.02) for linear
 * weights and pos_embed, normal(std 1e-6) for cls/register tokens, zero biases and mask token, LayerNorm
 * (1, 0), LayerScale gamma = ls_init. Same seed, same weights on every machine. */
void vit_init_random(vit_model *m, uint64_t seed, float ls_init);

/* Allocates (zeroed) the gradient arena. */
int vit_alloc_grads(vit_model *m);
void vit_zero_grads(vit_model *m);

/* Sets the thread count of OpenBLAS and the OpenMP loops (<= 0: all cores). */
void vit_set_threads(int32_t n);

/* One forward (and backward) pass at a fixed input shape: activations in one arena. */
typedef struct vit_run vit_run;

typedef struct vit_run_opts {
    int32_t batch, height, width; /* input shape (B, 3, H, W) */
    int32_t train;                /* keep what backward needs */
    int32_t keep_layers;          /* keep the outputs of the last n blocks (get_intermediate_layers) */
    int32_t recompute;            /* train runs: the first `recompute` blocks (< 0 or >= depth: all) keep only
                                   * their input and are computed again in the backward pass (activation
                                   * checkpointing): about 1 D instead of 12 D floats per token for each, for one
                                   * more forward pass of those blocks; the same results bit for bit */
    float *scratch;               /* train runs: NULL, or a caller buffer of vit_run_sizes' scratch_floats for the
                                   * buffers only vit_backward uses, so that runs whose backward passes never
                                   * overlap (and inference runs placed there, see arena) can share it */
    float *arena;                 /* NULL, or a caller buffer of arena_floats for every other buffer of the run
                                   * (it must outlive the run; vit_run_free leaves it) */
} vit_run_opts;

/* The floats a run of o takes: arena_floats for its own buffers, scratch_floats for the backward pass's
 * scratch (0 for inference runs); the run allocates both together unless o->scratch / o->arena give them.
 * 0 or -1 (a bad shape). */
int vit_run_sizes(const vit_model *m, const vit_run_opts *o, size_t *arena_floats, size_t *scratch_floats);

int vit_run_create(const vit_model *m, const vit_run_opts *o, vit_run **out);
void vit_run_free(vit_run *r);

/* Bytes of the activation arena of r (for reports). */
size_t vit_run_bytes(const vit_run *r);

/* Forward pass. x: (B, 3, H, W). masks: NULL or (B, N) bytes, 1 = replace that patch by mask_token.
 * drop_path: per-sample stochastic depth rate (train runs only; 0 at inference), sampled from seed.
 * Each image's outputs depend only on that image (and its mask and drop-path draws): see batch invariance
 * above. */
int vit_forward(vit_model *m, vit_run *r, const float *x, const uint8_t *masks, float drop_path, uint64_t seed);

/* Outputs of the last forward, all after the final LayerNorm. */
const float *vit_out_cls(const vit_run *r);   /* (B, D) */
const float *vit_out_reg(const vit_run *r);   /* (B, R, D) or NULL when R = 0 */
const float *vit_out_patch(const vit_run *r); /* (B, N, D) */

/* get_intermediate_layers(n): for each of the last n blocks (oldest first), the block output's patch tokens
 * (B, N, D) and CLS token (B, D), passed through the final LayerNorm when norm != 0. patch and cls are
 * caller buffers of n*B*N*D and n*B*D floats (cls may be NULL). n <= keep_layers of the run. */
int vit_intermediate(const vit_model *m, const vit_run *r, int32_t n, int32_t norm, float *patch, float *cls);

/* Backward pass of the last forward of a train run: given dL/d of the outputs (any may be NULL = zero),
 * accumulates parameter gradients into m->grad_mem and writes dL/dx (B, 3, H, W) to dx unless NULL. */
int vit_backward(vit_model *m, vit_run *r, const float *d_cls, const float *d_reg, const float *d_patch,
                 float *dx);

/* Forward FLOPs of one image of H x W (multiply-add = 2), for GFLOP/s reports. */
double vit_flops(const vit_config *c, int32_t height, int32_t width);

#endif
