#!/usr/bin/python3
"""Reference fixtures for train/head.c (tests/unit/train/test_head.c), computed with PyTorch alone (never with lvd
code).

  head_ref.py gen DIR

The head is the official DINOHead (facebookresearch/dinov2, dinov2/layers/dino_head.py) rewritten here with the
same parameter names and forward: _build_mlp (one nn.Linear when nlayers == 1, else Linear/GELU ... Linear in an
nn.Sequential), F.normalize(p=2, eps=1e-12), weight_norm(nn.Linear(bottleneck, K, bias=False)).

Per case, DIR/<case>/ holds
  meta.txt             "in_dim hidden bottleneck prototypes nlayers rows backward"
  <param>.npy          every parameter under its state-dict name (float32), e.g. mlp.0.weight.npy,
                       last_layer.weight_g.npy (K, 1), last_layer.weight_v.npy (K, bottleneck)
  x.npy (rows, in_dim), out.npy (rows, K)
  when backward: dout.npy (rows, K), dx.npy (rows, in_dim), grad.<param>.npy for every parameter;
                 loss = sum(out * dout)
Biases and weight_g are randomised (the official init has zero biases and g = 1, which would hide their
gradients). Outputs and gradients are computed in float64 from the float32 values and saved as float32.
DIR/cases.txt lists the case names, one a line.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import weight_norm

torch.set_num_threads(1)


def build_mlp(nlayers, in_dim, bottleneck_dim, hidden_dim):
    if nlayers == 1:
        return nn.Linear(in_dim, bottleneck_dim)
    layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
    for _ in range(nlayers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, bottleneck_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, nlayers=3, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        self.mlp = build_mlp(nlayers, in_dim, bottleneck_dim, hidden_dim)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-12)
        return self.last_layer(x)


def save(d, name, t):
    np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(t.detach().cpu().numpy(), dtype="<f4"))


def make_case(root, name, in_dim, hidden, bn, k, nlayers, rows, backward, seed):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    head = DINOHead(in_dim, k, nlayers=nlayers, hidden_dim=hidden, bottleneck_dim=bn)
    with torch.no_grad():
        for pname, p in head.named_parameters():
            if pname.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            if pname.endswith("weight_g"):
                p.copy_(1.0 + 0.5 * torch.rand_like(p))
    for pname, p in head.named_parameters():
        save(d, pname, p)
    x = torch.randn(rows, in_dim)
    save(d, "x", x)
    head = head.double()
    xd = x.double().requires_grad_(backward)
    out = head(xd)
    save(d, "out", out)
    if backward:
        dout = torch.randn(rows, k)
        save(d, "dout", dout)
        (out * dout.double()).sum().backward()
        save(d, "dx", xd.grad)
        for pname, p in head.named_parameters():
            save(d, "grad." + pname, p.grad)
    with open(os.path.join(d, "meta.txt"), "w") as f:
        f.write("%d %d %d %d %d %d %d\n" % (in_dim, hidden, bn, k, nlayers, rows, int(backward)))
    return name


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "gen":
        print(__doc__)
        sys.exit(2)
    root = sys.argv[2]
    os.makedirs(root, exist_ok=True)
    names = [
        make_case(root, "l3", 32, 64, 16, 128, 3, 12, True, 1),
        make_case(root, "l1", 32, 64, 16, 128, 1, 12, True, 2),
        make_case(root, "l2", 24, 40, 8, 96, 2, 7, True, 3),
        make_case(root, "l4_one_row", 16, 32, 8, 50, 4, 1, True, 4),
        # the recipe's head for ViT-S/14 (384 -> 2048 -> 2048 -> 256 -> 65536), forward only
        make_case(root, "real", 384, 2048, 256, 65536, 3, 2, False, 5),
    ]
    with open(os.path.join(root, "cases.txt"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()
