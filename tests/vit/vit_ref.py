#!/usr/bin/python3
"""Reference fixtures for the C ViT (common/vit.c) and the positional-embedding resampling (common/posembed.c),
computed with PyTorch alone (never with lvd code).

  vit_ref.py OUTDIR [--only NAME]     NAME: one of the ViT configurations below, or "posembed"

The model is the official DINOv2 DinoVisionTransformer (facebookresearch/dinov2, models/vision_transformer.py
and layers/), rewritten here with the same parameter names and the same forward semantics:
prepare_tokens_with_masks (mask_token substituted with torch.where before the positional embedding is added,
CLS + pos_embed, registers inserted after CLS after that), interpolate_pos_encoding (skipped only when
npatch == N and w == h; bicubic on a float32 copy of pos_embed; scale_factor ((w0 + 0.1) / M, (h0 + 0.1) / M)
with w0 the grid along dim 2, or size (w0, h0) with antialias), blocks with LayerNorm eps 1e-6, fused-qkv
attention, LayerScale, MLP (exact GELU) or SwiGLU, the final norm and get_intermediate_layers(norm=True,
return_class_token=True).

Per ViT configuration, OUTDIR/<name>/ holds
  config.json          patch, pos_grid, dim, depth, heads, ffn, ffn_hidden, n_reg, pos_mode, layerscale, batch,
                       height, width, keep_layers, has_mask
  model.safetensors    every parameter, F32, official state-dict names; metadata heads, pos_mode
  x.npy                (B, 3, H, W) input;  mask.npy (B, N) 0/1 when has_mask
  cls.npy (B, D), patch.npy (B, N, D), reg.npy (B, R, D) when R > 0: the final normed outputs
  layers.npy (n, B, N, D), layers_cls.npy (n, B, D): the last n = keep_layers block outputs through the final
                       norm (patch part and CLS), oldest first, from the same forward (with the masks)
  d_cls.npy, d_patch.npy, d_reg.npy (R > 0): upstream gradients; loss = sum(cls * d_cls) + sum(patch * d_patch)
                       + sum(reg * d_reg)
  dx.npy (B, 3, H, W), grads.safetensors (every parameter's gradient, official names, F32)
Outputs and gradients are computed in float64 (positional-embedding interpolation in float32, as the
official code does) and saved as float32; a float32 run must agree with them (checked here).

OUTDIR/posembed/: resampling cases <case>/{src,dst,ddst,dsrc}.npy, src (M, M, D), dst (gh, gw, D), from
F.interpolate on float32 exactly as interpolate_pos_encoding calls it, dsrc its autograd gradient for ddst
(the transpose of the forward instead where PyTorch's backward is not, see make_posembed);
cases.json lists them ({"cases": [{"name", "m", "gh", "gw", "mode", "dim"}]}) and cases.txt repeats the list
as lines "name m gh gw mode dim".
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

# ----------------------------------------------------------------------------------------------------------
# The model


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        x = self.proj(x)  # B D H/p W/p
        return x.flatten(2).transpose(1, 2)  # B N D


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["dim"]
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg["heads"])
        self.ls1 = LayerScale(d) if cfg["layerscale"] else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = (Mlp if cfg["ffn"] == "mlp" else SwiGLUFFN)(d, cfg["ffn_hidden"])
        self.ls2 = LayerScale(d) if cfg["layerscale"] else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, m, r = cfg["dim"], cfg["pos_grid"], cfg["n_reg"]
        self.patch_size = cfg["patch"]
        self.num_register_tokens = r
        self.interpolate_offset = 0.1 if cfg["pos_mode"] == "offset" else 0.0
        self.interpolate_antialias = cfg["pos_mode"] == "size_aa"
        self.patch_embed = PatchEmbed(cfg["patch"], d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + m * m, d))
        self.register_tokens = nn.Parameter(torch.zeros(1, r, d)) if r else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg["depth"])])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, d))

    def interpolate_pos_encoding(self, x, w, h):
        previous_dtype = x.dtype
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos_embed = pos_embed[:, 0]
        patch_pos_embed = pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_size
        h0 = h // self.patch_size
        M = int(math.sqrt(N))
        assert N == M * M
        kwargs = {}
        if self.interpolate_offset:
            sx = float(w0 + self.interpolate_offset) / M
            sy = float(h0 + self.interpolate_offset) / M
            kwargs["scale_factor"] = (sx, sy)
        else:
            kwargs["size"] = (w0, h0)
        patch_pos_embed = F.interpolate(
            patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
            mode="bicubic",
            antialias=self.interpolate_antialias,
            **kwargs,
        )
        assert (w0, h0) == patch_pos_embed.shape[-2:]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)

    def prepare_tokens_with_masks(self, x, masks=None):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        return x

    def forward_features(self, x, masks=None, keep=0):
        """The official forward_features outputs plus, for get_intermediate_layers, the raw outputs of the
        last `keep` blocks (official code: _get_intermediate_layers_not_chunked)."""
        x = self.prepare_tokens_with_masks(x, masks)
        kept = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i >= len(self.blocks) - keep:
                kept.append(x)
        x_norm = self.norm(x)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1:r + 1],
            "x_norm_patchtokens": x_norm[:, r + 1:],
            "kept": kept,
        }

    def intermediate(self, kept):
        """get_intermediate_layers(n, reshape=False, return_class_token=True, norm=True) on kept outputs."""
        outputs = [self.norm(out) for out in kept]
        class_tokens = [out[:, 0] for out in outputs]
        outputs = [out[:, 1 + self.num_register_tokens:] for out in outputs]
        return tuple(zip(outputs, class_tokens))


# ----------------------------------------------------------------------------------------------------------
# Files


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 ndarray). 8-byte LE header length, JSON header padded with spaces to a
    multiple of 8, then the raw little-endian bytes in order."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def save(path, arr):
    np.save(path, np.ascontiguousarray(np.asarray(arr, dtype=np.float32)))


def swiglu_hidden(dim):
    return (int(4 * dim * 2 / 3) + 7) // 8 * 8


# ----------------------------------------------------------------------------------------------------------
# ViT configurations


def vit_configs():
    base = {"patch": 4, "layerscale": 1, "batch": 2, "keep_layers": 1, "has_mask": 0, "n_reg": 0}
    cfgs = {
        # grid == M x M and a square image: no interpolation at all
        "mlp_plain": dict(base, pos_grid=4, dim=32, depth=2, heads=2, ffn="mlp", pos_mode="offset",
                          height=16, width=16),
        # registers, antialiased resize to a non-square grid (4 -> 5 rows up, 4 -> 3 columns down), masks
        "swiglu_reg_aa": dict(base, pos_grid=4, dim=48, depth=3, heads=3, ffn="swiglu", n_reg=4,
                              pos_mode="size_aa", height=20, width=12, batch=3, keep_layers=3, has_mask=1),
        # npatch == N (36) but w != h: the official code interpolates (6 -> 4 x 9); no layerscale
        "mlp_offset_nonsq": dict(base, pos_grid=6, dim=32, depth=2, heads=4, ffn="mlp", pos_mode="offset",
                                 height=16, width=36, batch=3, keep_layers=2, has_mask=1, layerscale=0),
        "swiglu_offset_down": dict(base, pos_grid=6, dim=40, depth=2, heads=2, ffn="swiglu",
                                   pos_mode="offset", height=16, width=16, keep_layers=2),  # 6 -> 4 x 4
        "mlp_reg_square_up": dict(base, pos_grid=3, dim=64, depth=2, heads=4, ffn="mlp", n_reg=4,
                                  pos_mode="size_aa", height=20, width=20),  # 3 -> 5 x 5
    }
    for c in cfgs.values():
        c["ffn_hidden"] = 4 * c["dim"] if c["ffn"] == "mlp" else swiglu_hidden(c["dim"])
    return cfgs


def random_param(name, shape, rng):
    """Random weights far from the official init, so that every part of the model moves the outputs."""
    leaf = name.rsplit(".", 1)[-1]
    if name in ("cls_token", "pos_embed", "register_tokens", "mask_token"):
        return rng.normal(0.0, 0.5, shape)
    if leaf == "gamma":
        return rng.uniform(0.3, 1.0, shape)
    if ".norm" in name or name.startswith("norm."):
        return (1.0 + rng.normal(0.0, 0.1, shape)) if leaf == "weight" else rng.normal(0.0, 0.1, shape)
    if leaf == "bias":
        return rng.normal(0.0, 0.02, shape)
    std = {"proj": 0.1, "qkv": 0.15, "fc1": 0.15, "w12": 0.15, "fc2": 0.08, "w3": 0.1}[name.split(".")[-2]]
    return rng.normal(0.0, std, shape)


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / (scale if scale > 0 else 1.0))


def run_model(model, x, masks, d_out, keep, grad):
    x = x.clone().requires_grad_(grad)
    out = model.forward_features(x, masks, keep)
    inter = model.intermediate(out["kept"])
    res = {
        "cls": out["x_norm_clstoken"],
        "patch": out["x_norm_patchtokens"],
        "reg": out["x_norm_regtokens"],
        "layers": torch.stack([p for p, _ in inter]),
        "layers_cls": torch.stack([c for _, c in inter]),
    }
    grads = None
    if grad:
        loss = sum((res[k] * d_out[k]).sum() for k in d_out)
        model.zero_grad()
        loss.backward()
        grads = {"x": x.grad.detach().numpy()}
        for n, p in model.named_parameters():
            grads[n] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().numpy()
    return {k: v.detach().numpy() for k, v in res.items()}, grads


def make_vit_case(outdir, name, cfg, seed):
    rng = np.random.default_rng(seed)
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    B, H, W, p, R = cfg["batch"], cfg["height"], cfg["width"], cfg["patch"], cfg["n_reg"]
    N = (H // p) * (W // p)

    model64 = DinoVisionTransformer(cfg).double()
    params = {}
    for n, t in model64.state_dict().items():
        params[n] = random_param(n, tuple(t.shape), rng).astype(np.float32)
    model64.load_state_dict({n: torch.from_numpy(v.astype(np.float64)) for n, v in params.items()})
    model32 = DinoVisionTransformer(cfg).float()
    model32.load_state_dict({n: torch.from_numpy(v) for n, v in params.items()})
    model64.eval()
    model32.eval()

    x = rng.normal(0.0, 1.0, (B, 3, H, W)).astype(np.float32)
    masks = None
    if cfg["has_mask"]:
        m = (rng.uniform(size=(B, N)) < 0.3).astype(np.float32)
        for b in range(B):
            if b % 3 == 1:
                m[b] = 0.0  # some images carry no mask at all
            elif m[b].sum() == 0:
                m[b, rng.integers(N)] = 1.0
        masks = m
    d_out = {"cls": rng.normal(0.0, 1.0, (B, cfg["dim"])), "patch": rng.normal(0.0, 1.0, (B, N, cfg["dim"]))}
    if R:
        d_out["reg"] = rng.normal(0.0, 1.0, (B, R, cfg["dim"]))
    d_out = {k: v.astype(np.float32) for k, v in d_out.items()}

    keep = cfg["keep_layers"]
    mask_t = torch.from_numpy(masks > 0.5) if masks is not None else None
    out64, g64 = run_model(model64, torch.from_numpy(x).double(), mask_t,
                           {k: torch.from_numpy(v).double() for k, v in d_out.items()}, keep, True)
    out32, g32 = run_model(model32, torch.from_numpy(x), mask_t,
                           {k: torch.from_numpy(v) for k, v in d_out.items()}, keep, True)

    # the reference guards itself: float32 and float64 runs of the same model agree
    worst_out = max(rel_err(out32[k], out64[k]) for k in out64 if out64[k].size)
    worst_grad = max(rel_err(g32[k], g64[k]) for k in g64 if np.abs(g64[k]).max() > 0)
    assert worst_out < 1e-5, f"{name}: float32 vs float64 outputs differ by {worst_out:.2e}"
    assert worst_grad < 1e-4, f"{name}: float32 vs float64 gradients differ by {worst_grad:.2e}"
    # every parameter gets a gradient (mask_token only when something is masked)
    for n, g in g64.items():
        if n == "mask_token" and masks is None:
            assert np.abs(g).max() == 0.0
        else:
            assert np.abs(g).max() > 0.0, f"{name}: parameter {n} has no gradient"

    cfg_out = dict(cfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg_out, f, indent=1, sort_keys=True)
    write_safetensors(os.path.join(d, "model.safetensors"), list(params.items()),
                      {"heads": str(cfg["heads"]), "pos_mode": cfg["pos_mode"]})
    save(os.path.join(d, "x.npy"), x)
    if masks is not None:
        save(os.path.join(d, "mask.npy"), masks)
    for k in ("cls", "patch", "layers", "layers_cls"):
        save(os.path.join(d, k + ".npy"), out64[k])
    if R:
        save(os.path.join(d, "reg.npy"), out64["reg"])
    for k, v in d_out.items():
        save(os.path.join(d, "d_" + k + ".npy"), v)
    save(os.path.join(d, "dx.npy"), g64["x"])
    write_safetensors(os.path.join(d, "grads.safetensors"), [(n, g64[n]) for n in params],
                      {"heads": str(cfg["heads"]), "pos_mode": cfg["pos_mode"]})
    gh, gw = H // p, W // p
    interp = "none" if (N == cfg["pos_grid"] ** 2 and H == W) else f"{cfg['pos_grid']}->{gh}x{gw}"
    print(f"{name}: B={B} {H}x{W} D={cfg['dim']} depth={cfg['depth']} {cfg['ffn']} R={R} {cfg['pos_mode']} "
          f"pos {interp} mask={cfg['has_mask']} ls={cfg['layerscale']} | f32 vs f64: outputs {worst_out:.1e}, "
          f"grads {worst_grad:.1e}")


# ----------------------------------------------------------------------------------------------------------
# Positional-embedding resampling cases


POSEMBED_CASES = [
    # name, M, gh, gw, mode, D
    ("up_offset", 4, 6, 6, "offset", 8),
    ("up_aa", 4, 6, 6, "size_aa", 8),
    ("down_offset", 8, 3, 5, "offset", 8),
    ("down_aa", 8, 3, 3, "size_aa", 8),
    ("equal_offset", 5, 5, 5, "offset", 8),
    ("equal_aa", 5, 5, 5, "size_aa", 8),
    ("nonsq_offset", 6, 4, 9, "offset", 8),
    ("nonsq_aa", 6, 4, 9, "size_aa", 8),
    ("mixed_aa", 7, 3, 10, "size_aa", 8),
    ("tiny_offset", 2, 1, 1, "offset", 4),
    ("tiny_aa", 2, 1, 1, "size_aa", 4),
    ("one_offset", 1, 3, 2, "offset", 4),
    ("one_aa", 1, 3, 2, "size_aa", 4),
    ("real_offset", 37, 16, 16, "offset", 24),
    ("real_aa", 37, 16, 16, "size_aa", 24),
    ("real_nonsq_offset", 37, 40, 23, "offset", 8),
    ("real_nonsq_aa", 37, 20, 12, "size_aa", 8),
    ("real_far_down_aa", 37, 5, 3, "size_aa", 8),
]


def resample(src, gh, gw, mode):
    """src (M, M, D) tensor -> (gh, gw, D), as interpolate_pos_encoding calls F.interpolate."""
    M, _, D = src.shape
    t = src.reshape(1, M, M, D).permute(0, 3, 1, 2)
    if mode == "offset":
        y = F.interpolate(t, mode="bicubic", antialias=False, scale_factor=((gh + 0.1) / M, (gw + 0.1) / M))
    else:
        y = F.interpolate(t, mode="bicubic", antialias=True, size=(gh, gw))
    assert tuple(y.shape[-2:]) == (gh, gw)
    return y.permute(0, 2, 3, 1)[0]


def make_posembed(outdir, seed):
    rng = np.random.default_rng(seed)
    base = os.path.join(outdir, "posembed")
    os.makedirs(base, exist_ok=True)
    listing = []
    worst = 0.0
    for name, M, gh, gw, mode, D in POSEMBED_CASES:
        d = os.path.join(base, name)
        os.makedirs(d, exist_ok=True)
        src = rng.normal(0.0, 1.0, (M, M, D)).astype(np.float32)
        ddst = rng.normal(0.0, 1.0, (gh, gw, D)).astype(np.float32)
        res = {}
        for dt in (torch.float32, torch.float64):
            s = torch.from_numpy(src).to(dt).requires_grad_(True)
            y = resample(s, gh, gw, mode)
            (y * torch.from_numpy(ddst).to(dt)).sum().backward()
            res[dt] = (y.detach().numpy(), s.grad.numpy())
        # float32 is what DINOv2 runs (pos_embed.float()); float64 guards it
        e = max(rel_err(res[torch.float32][0], res[torch.float64][0]),
                rel_err(res[torch.float32][1], res[torch.float64][1]))
        assert e < 1e-5, f"posembed {name}: float32 vs float64 differ by {e:.2e}"
        worst = max(worst, e)
        # The gradient is also computed as the transpose of the forward's own matrix (its columns are the
        # float32 forward of one-hot grids). PyTorch's upsample_bicubic2d backward copies the gradient through
        # when the input and output sizes are equal, although the forward resamples (scale M / (M + 0.1)):
        # that case (never reached by DINOv2, which skips the interpolation then) uses the transpose.
        onehot = torch.eye(M * M, dtype=torch.float32).reshape(M * M, M, M, 1)
        fm = torch.stack([resample(e1, gh, gw, mode)[..., 0] for e1 in onehot]).double()  # (M*M, gh, gw)
        dsrc_t = (fm.reshape(M * M, gh * gw) @ torch.from_numpy(ddst).double().reshape(gh * gw, D)).numpy()
        dsrc_t = dsrc_t.reshape(M, M, D)
        copy_quirk = mode == "offset" and gh == M and gw == M
        et = rel_err(res[torch.float32][1], dsrc_t)
        if copy_quirk:
            assert et > 1e-3, f"posembed {name}: PyTorch's equal-size backward no longer copies ({et:.2e})"
            dsrc = dsrc_t
        else:
            assert et < 1e-5, f"posembed {name}: autograd vs transposed forward differ by {et:.2e}"
            dsrc = res[torch.float32][1]
        save(os.path.join(d, "src.npy"), src)
        save(os.path.join(d, "dst.npy"), res[torch.float32][0])
        save(os.path.join(d, "ddst.npy"), ddst)
        save(os.path.join(d, "dsrc.npy"), dsrc)
        listing.append({"name": name, "m": M, "gh": gh, "gw": gw, "mode": mode, "dim": D})
    with open(os.path.join(base, "cases.json"), "w") as f:
        json.dump({"cases": listing}, f, indent=1)
    with open(os.path.join(base, "cases.txt"), "w") as f:
        for c in listing:
            f.write(f"{c['name']} {c['m']} {c['gh']} {c['gw']} {c['mode']} {c['dim']}\n")
    print(f"posembed: {len(listing)} cases | f32 vs f64: {worst:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--only", help="one configuration name, or 'posembed'")
    a = ap.parse_args()
    cfgs = vit_configs()
    names = list(cfgs) + ["posembed"]
    if a.only and a.only not in names:
        sys.exit(f"vit_ref.py: unknown configuration {a.only!r} (known: {', '.join(names)})")
    os.makedirs(a.outdir, exist_ok=True)
    for i, name in enumerate(names):
        if a.only and name != a.only:
            continue
        if name == "posembed":
            make_posembed(a.outdir, 1000)
        else:
            make_vit_case(a.outdir, name, cfgs[name], 100 + i)


if __name__ == "__main__":
    main()
