#!/usr/bin/python3
"""The PyTorch side of the training-step benchmark: one DINOv2 pretraining step as the official code runs it
(dinov2/train/ssl_meta_arch.py forward_backward, train.py's optimizer step), fp32 on the CPU, written here from
the official definitions with the ViT module definitions of the parity tests (tests/vit/vit_ref.py: explicit
q @ k^T attention, as the official MemEffAttention runs without xFormers).

  train_step_torch.py [--arch vit_small] [--batch 16] [--global-size 224] [--local-size 96] [--locals 8]
                      [--prototypes 65536] [--threads 2] [--iters 3] [--warmup 1]

One step: the teacher (no gradient) on the 2 global crops of every image -> DINO head on its CLS tokens and
the shared head on its masked patch tokens -> softmax centering (teacher temperature 0.07); the student on
the global crops with iBOT masks (half the images, ratios in (0.1, 0.5)) and on the local crops -> heads ->
DINO local and global terms, iBOT masked-patch term, KoLeo on each global crop's CLS; backward; gradient
clipping 3.0 per module (backbone, dino_head); AdamW; the EMA of the teacher (momentum 0.992). Heads: 3-layer
MLP 384 -> 2048 -> 2048 -> 256, L2 normalisation, weight-normalised last layer to --prototypes, shared by DINO
and iBOT (the default recipe). No drop path (vit_ref's blocks have none; the official code's sample-subset
drop path would make its step cheaper, so this is in the baseline's disfavour only for the memory figure).

Prints one JSON line: images/s (images of the batch, each with all its crops), CPU time per image, the
step's wall seconds, and peak RSS (ru_maxrss of this process, MB).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "vit"))
import vit_ref  # noqa: E402

ARCHS = {"vit_small": (384, 12, 6), "vit_base": (768, 12, 12), "vit_tiny": (192, 12, 3), "vit_pico": (64, 4, 4)}


class DINOHead(nn.Module):
    def __init__(self, d, k, hidden=2048, bottleneck=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, k, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)


def koleo(x):
    x = F.normalize(x, eps=1e-8, p=2, dim=-1)
    dots = x @ x.t()
    n = x.shape[0]
    dots.view(-1)[:: n + 1].fill_(-1)
    idx = dots.argmax(dim=1)
    dist = F.pairwise_distance(x, x[idx], p=2, eps=1e-8)
    return -torch.log(dist + 1e-8).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit_small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--locals", type=int, default=8)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dim, depth, heads = ARCHS[a.arch]
    cfg = {"patch": 14, "pos_grid": a.global_size // 14, "dim": dim, "depth": depth, "heads": heads, "ffn": "mlp",
           "ffn_hidden": 4 * dim, "n_reg": 0, "pos_mode": "offset", "layerscale": 1}
    student = nn.ModuleDict({"backbone": vit_ref.DinoVisionTransformer(cfg), "dino_head": DINOHead(dim, a.prototypes)})
    for n_, p in student.named_parameters():
        if p.requires_grad:
            nn.init.trunc_normal_(p, std=0.02)
    teacher = nn.ModuleDict({"backbone": vit_ref.DinoVisionTransformer(cfg), "dino_head": DINOHead(dim, a.prototypes)})
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04, betas=(0.9, 0.999))
    center = torch.zeros(1, a.prototypes)
    center_p = torch.zeros(1, a.prototypes)
    B, G, L = a.batch, a.global_size, a.local_size
    npatch = (G // 14) ** 2

    def step():
        g = torch.rand(2 * B, 3, G, G) * 4 - 2
        loc = torch.rand(a.locals * B, 3, L, L) * 4 - 2
        masks = torch.zeros(2 * B, npatch, dtype=torch.bool)
        nm = int(2 * B * 0.5)
        probs = torch.linspace(0.1, 0.5, nm + 1)
        for i in range(nm):
            r = float(probs[i] + (probs[i + 1] - probs[i]) * torch.rand(1))
            masks[i, torch.randperm(npatch)[: int(npatch * r)]] = True
        masks = masks[torch.randperm(2 * B)]
        mask_idx = masks.flatten().nonzero().flatten()
        weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        # teacher
        with torch.no_grad():
            tout = teacher["backbone"].forward_features(g)
            tcls = tout["x_norm_clstoken"]
            tpatch = tout["x_norm_patchtokens"].flatten(0, 1)[mask_idx]
            t_all = teacher["dino_head"](torch.cat([tcls, tpatch]))
            t_dino = F.softmax((t_all[: 2 * B] - center) / 0.07, dim=-1).chunk(2)
            t_ibot = F.softmax((t_all[2 * B:] - center_p) / 0.07, dim=-1)
            center.mul_(0.9).add_(t_all[: 2 * B].mean(0, keepdim=True), alpha=0.1)
            center_p.mul_(0.9).add_(t_all[2 * B:].mean(0, keepdim=True), alpha=0.1)
        # student
        sg = student["backbone"].forward_features(g, masks)
        sl = student["backbone"].forward_features(loc)
        scls_g, scls_l = sg["x_norm_clstoken"], sl["x_norm_clstoken"]
        spatch = sg["x_norm_patchtokens"].flatten(0, 1)[mask_idx]
        s_all = student["dino_head"](torch.cat([scls_g, scls_l, spatch]))
        s_g, s_l = s_all[: 2 * B].chunk(2), s_all[2 * B: 2 * B + a.locals * B].chunk(a.locals)
        s_p = s_all[2 * B + a.locals * B:]
        lsm = lambda x: F.log_softmax(x / 0.1, dim=-1)  # noqa: E731
        local = sum(-(t * lsm(s)).sum(-1).mean() for s in s_l for t in t_dino) / (2 * a.locals + 2)
        glob = sum(-(t_dino[1 - i] * lsm(s_g[i])).sum(-1).mean() for i in range(2)) * 2 / (2 * a.locals + 2)
        ibot = (-(t_ibot * lsm(s_p)).sum(-1) * weights).sum() / (2 * B)
        kl = 0.1 * sum(koleo(c) for c in scls_g.chunk(2))
        loss = local + glob + ibot + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for m in student.values():
            nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], 3.0)
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(0.992).add_(ps.detach(), alpha=0.008)
        return float(loss)

    wall = cpu = 0.0
    for it in range(a.warmup + a.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        if it >= a.warmup:
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": "pytorch", "torch": torch.__version__, "arch": a.arch, "batch": B, "global": G,
                      "local": L, "locals": a.locals, "prototypes": a.prototypes, "threads": a.threads,
                      "iters": a.iters, "step_s": round(wall / a.iters, 3), "images_per_s": round(B * a.iters / wall, 3),
                      "cpu_s_per_image": round(cpu / (B * a.iters), 3), "max_rss_mb": round(rss, 1),
                      "loss": round(loss, 4)}))


if __name__ == "__main__":
    main()
