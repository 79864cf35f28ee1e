/* vit_layers.h — the ViT's layers as forward/backward pairs over plain float buffers (llm.c's shape).
 *
 * Conventions: row-major; N is a number of rows (tokens), C/IN/OUT numbers of channels. Forward functions
 * overwrite their outputs. Backward functions ACCUMULATE (+=) into every gradient they write (inputs and
 * parameters), so residual branches and shared parameters just add up; callers zero gradients once.
 * Matrix products use cblas_sgemm; the elementwise loops are OpenMP-parallel with static schedules and fixed
 * per-thread partial sums, so results are deterministic for a fixed thread count. The forward functions are
 * also batch invariant (vit.h): a sample's or row's result does not depend on the other samples, on its
 * position or on the thread count.
 */
#ifndef LVD_VIT_LAYERS_H
#define LVD_VIT_LAYERS_H

#include <stdint.h>

#define VIT_LN_EPS 1e-6f

/* out (B, T, OUT) = inp (B, T, IN) @ w^T + b, w (OUT, IN), b (OUT) or NULL. One single-threaded SGEMM per
 * (sample, block of output channels), spread over the threads, so a sample's rows depend on its own rows only
 * (not on B, its position or the thread count). */
void linear_forward(float *out, const float *inp, const float *w, const float *b, int64_t bsz, int64_t t,
                    int64_t in, int64_t out_ch);
/* dinp (N, IN) += dout @ w (skipped when NULL); dw (OUT, IN) += dout^T @ inp; db (OUT) += column sums.
 * N = B * T rows in one SGEMM each: gradients sum over the batch anyway. */
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                     int64_t n, int64_t in, int64_t out_ch);

/* LayerNorm over the last dim C with eps VIT_LN_EPS: out = (x - mean) * rstd * w + b.
 * mean, rstd (N) are saved for backward (may be NULL at inference). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                       int64_t n, int64_t c);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int64_t n, int64_t c);

/* Exact GELU: x * 0.5 * (1 + erf(x / sqrt(2))), elementwise over n values. */
void gelu_forward(float *out, const float *inp, int64_t n);
void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);

/* SwiGLU gate: inp (N, 2H) holds x1 = inp[:, :H] and x2 = inp[:, H:]; out (N, H) = silu(x1) * x2. */
void swiglu_forward(float *out, const float *inp, int64_t n, int64_t h);
void swiglu_backward(float *dinp, const float *dout, const float *inp, int64_t n, int64_t h);

/* Residual with LayerScale and per-sample drop path, for B samples of rows_per_sample rows of C channels:
 * out = x + scale[b] * gamma * y (gamma (C) or NULL = 1; scale (B) or NULL = 1). out may alias x. */
void residual_forward(float *out, const float *x, const float *y, const float *gamma, const float *scale,
                      int64_t b, int64_t rows_per_sample, int64_t c);
/* dx += dout; dy += scale[b] * gamma * dout; dgamma (C) += sum over rows of scale[b] * dout * y. */
void residual_backward(float *dx, float *dy, float *dgamma, const float *dout, const float *y, const float *gamma,
                       const float *scale, int64_t b, int64_t rows_per_sample, int64_t c);

/* Multi-head self-attention core over fused qkv (B, T, 3C) (q, k, v blocks of C, head h at [h*dh, (h+1)*dh)):
 * out (B, T, C) = softmax(q k^T / sqrt(dh)) v per (sample, head). att: NULL at inference (a T x T scratch per
 * thread is used and dropped), or (B, heads, T, T) to keep the probabilities for backward. */
int attention_forward(float *out, float *att, const float *qkv, int64_t b, int64_t t, int64_t c, int64_t heads);
/* dqkv (B, T, 3C) += gradient, given the saved att (B, heads, T, T), or att NULL: the probabilities are then
 * recomputed per (sample, head) from qkv into a T x T scratch per thread, bit for bit those of the forward pass
 * (same calls in the same order), so training never holds a (B, heads, T, T) tensor. */
int attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int64_t b, int64_t t,
                       int64_t c, int64_t heads);

/* Patch embedding as linear_forward over unfolded patches (one sample per image): x (B, 3, H, W) -> out
 * (B, N, D), N = (H/p)(W/p) in row-major grid order; w (D, 3, p, p), b (D). cols is scratch of B*N*3*p*p
 * floats (kept for backward). */
void patch_embed_forward(float *out, float *cols, const float *x, const float *w, const float *b, int64_t bsz,
                         int64_t h, int64_t wd, int64_t p, int64_t d);
/* dw, db += parameter gradients; dx (B, 3, H, W) += input gradient unless NULL (dcols: scratch like cols). */
void patch_embed_backward(float *dx, float *dw, float *db, float *dcols, const float *dout, const float *cols,
                          const float *w, int64_t bsz, int64_t h, int64_t wd, int64_t p, int64_t d);

/* Vectorisable float approximations used by the layers (max relative error about 2e-7 over their range). */
float vit_expf(float x);
float vit_erff(float x);

#endif
