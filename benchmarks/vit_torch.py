#!/usr/bin/python3
"""The PyTorch side of benchmarks/vit.sh: the DINOv2 ViT as the official code defines it (the same module
definitions the parity tests use, tests/vit/vit_ref.py: explicit q @ k^T attention, as the official
MemEffAttention falls back to without xFormers), fp32, random weights, on random inputs.

  vit_torch.py --arch vit_small --img 224 --batch 32 --threads 2 [--train] [--iters 5] [--warmup 1]

Prints one JSON line like lvd-vit bench: images/s and GFLOP/s (the same FLOP count as lvd-vit: multiply-add = 2,
backward = 2 x forward)."""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "vit"))
import vit_ref  # noqa: E402

ARCHS = {  # name: dim, depth, heads, ffn
    "vit_small": (384, 12, 6, "mlp"), "vit_base": (768, 12, 12, "mlp"), "vit_large": (1024, 24, 16, "mlp"),
    "vit_giant2": (1536, 40, 24, "swiglu"), "vit_tiny": (192, 12, 3, "mlp"), "vit_pico": (64, 4, 4, "mlp"),
}


def flops(cfg, img):
    n = (img // cfg["patch"]) ** 2
    t, d, hd = 1 + cfg["n_reg"] + n, cfg["dim"], cfg["ffn_hidden"]
    f = 2.0 * n * 3 * cfg["patch"] ** 2 * d
    ffn = 6.0 * t * d * hd if cfg["ffn"] == "swiglu" else 4.0 * t * d * hd
    return f + cfg["depth"] * (2.0 * t * d * 3 * d + 4.0 * t * t * d + 2.0 * t * d * d + ffn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit_small")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--train", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dim, depth, heads, ffn = ARCHS[a.arch]
    cfg = {"patch": 14, "pos_grid": a.img // 14, "dim": dim, "depth": depth, "heads": heads, "ffn": ffn,
           "ffn_hidden": 4 * dim if ffn == "mlp" else vit_ref.swiglu_hidden(dim), "n_reg": 0,
           "pos_mode": "offset", "layerscale": 1}
    model = vit_ref.DinoVisionTransformer(cfg).float()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    x = torch.rand(a.batch, 3, a.img, a.img) * 4 - 2
    d_cls = torch.randn(a.batch, dim)
    total = cpu = 0.0
    for it in range(a.warmup + a.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        if a.train:
            model.zero_grad(set_to_none=False)
            out = model.forward_features(x)
            loss = (out["x_norm_clstoken"] * d_cls).sum() + out["x_norm_patchtokens"].sum()
            loss.backward()
        else:
            with torch.no_grad():
                model.forward_features(x)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if it >= a.warmup:
            total += dt
            cpu += dc
    imgs = a.batch * a.iters
    fl = flops(cfg, a.img) * (3.0 if a.train else 1.0) * imgs
    print(json.dumps({"impl": "pytorch " + torch.__version__, "arch": a.arch, "img": a.img, "batch": a.batch,
                      "threads": torch.get_num_threads(), "train": int(a.train), "iters": a.iters,
                      "seconds": round(total, 4), "images_per_s": round(imgs / total, 3),
                      "gflops": round(fl / total / 1e9, 3), "cpu_seconds": round(cpu, 4),
                      "images_per_cpu_s": round(imgs / cpu, 4)}))


if __name__ == "__main__":
    main()
