/* vit_io.h — ViT checkpoints as safetensors with the official DINOv2 key names.
 *
 * Loading infers the architecture from the tensors: depth from the block count, D from cls_token, patch
 * size from patch_embed.proj.weight, M from pos_embed, the FFN kind from the key names (mlp.fc1 = MLP,
 * mlp.w12 = SwiGLU) and its hidden size from their shapes, registers from register_tokens, layerscale from
 * ls1.gamma. Heads are not visible in the tensors: metadata "heads" if present, else D / 64 (every released
 * model). The positional resampling mode: metadata "pos_mode" ("offset" / "size_aa") if present, else
 * size_aa with registers and offset without. A "backbone." prefix on every key is accepted (training
 * checkpoints); "dino_head." and "ibot_head." tensors (a training checkpoint's projection heads) are ignored.
 * Missing, unexpected or mis-shaped tensors are errors naming each tensor.
 */
#ifndef LVD_VIT_IO_H
#define LVD_VIT_IO_H

#include "vit.h"

/* Inferred configuration of the checkpoint at path (no parameters loaded). */
int vit_io_config(const char *path, vit_config *out);

/* Loads path into a new model. overrides (may be NULL) is a set of "key=value" strings applied on top of
 * the checkpoint's metadata: heads=, pos_mode=offset|size_aa. */
int vit_load(const char *path, const char *const *overrides, size_t n_overrides, vit_model **out);

/* Writes the parameters (grads = 0) or the gradients (grads = 1) of m to path with the official names and
 * metadata {"format": "lvd-vit", "heads", "pos_mode"}. */
int vit_save(const vit_model *m, const char *path, int grads);

#endif
