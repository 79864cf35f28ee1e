#!/usr/bin/python3
"""Reference fixtures for train/loss.c (tests/unit/train/test_loss.c), computed with PyTorch alone (never with lvd
code).

  loss_ref.py gen DIR

The losses are the official ones (facebookresearch/dinov2, dinov2/loss/dino_clstoken_loss.py, ibot_patch_loss.py,
koleo_loss.py) rewritten here for one process (no torch.distributed), and the step is
dinov2/train/ssl_meta_arch.py's forward_backward from the backbone outputs on: the teacher CLS chunks cat'd in
reverse, the shared head run on [local CLS, global CLS, masked patch buffer] (or a separate iBOT head), softmax
centering with lazily applied EMA centers or Sinkhorn-Knopp, dino_local_crops_loss / dino_global_crops_loss with
n_local_crops_loss_terms and n_global_crops_loss_terms, KoLeo on each global crop's CLS chunk, iBOT
forward_masked * loss_scales * ibot_loss_scale, then loss_accumulator.backward(). The head is dino_head.py's
DINOHead. Everything runs in float64 from float32 inputs; files are float32 .npy.

DIR/units/: the single functions
  sc_t (8, 128), sc_center (128), sc_probs: softmax_center_teacher at temp 0.04; sc_center_new: the center after
  update_center(sc_t) and apply_center_update (momentum 0.9)
  sk_t (N, K), sk_q: sinkhorn_knopp_teacher (3 iterations) for sk1 (8, 128, temp 0.05) and sk2 (37, 50, temp 0.07)
  dx_s (3 * 4, 128), dx_t (2 * 4, 128): DINOLoss.forward(s.chunk(3), t.chunk(2)); dx_ds its gradient; values.txt
  ib_s, ib_t (10, 96), ib_w (10): forward_masked with masks_weight, student_masks_flat of 4 rows; ib_ds
  ko_x (6, 20), ko_dx: KoLeoLoss; ko_dup_x (5, 8) with two equal rows, ko_dup_dx
  mk_masks (4, 16) 0/1, mk_idx (as float), mk_w: the collate's mask_indices_list and masks_weight
  values.txt: "name value" lines (dx_loss, ib_loss, ko_loss, ko_dup_loss)
DIR/<case>/ for each step case (cases.txt: "name B n_local D n_patches dino_k ibot_k separate nlayers
ibot_nlayers hidden bottleneck centering teacher_temp upperbound"):
  student / teacher heads: s.<param>.npy, t.<param>.npy (and si./ti. for a separate iBOT head)
  g_cls (2B, D), l_cls (n_local B, D), g_patch (2B * n_patches, D): student backbone outputs
  t_cls (2B, D), t_patch (2B * n_patches, D): teacher backbone outputs; masks (2B, n_patches) 0/1
  dino_center0 (dino_k), ibot_center0 (ibot_k): the centers before the step; dino_center, ibot_center after
  terms.txt: dino_local_crops_loss dino_global_crops_loss koleo_loss ibot_loss total
  grad.g_cls, grad.l_cls, grad.g_patch, grad.s.<param> (and grad.si.<param>)
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import weight_norm

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)


# ---- the official definitions, one process ----------------------------------------------------------------

class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, nlayers=3, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
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


class DINOLoss:
    def __init__(self, out_dim, student_temp=0.1, center_momentum=0.9):
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center = torch.zeros(1, out_dim)
        self.updated = True

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_output, teacher_temp):
        self.apply_center_update()
        return F.softmax((teacher_output - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_output, teacher_temp, n_iterations=3, n_samples=None):
        Q = torch.exp(teacher_output / teacher_temp).t()
        B = Q.shape[1] if n_samples is None else n_samples
        K = Q.shape[0]
        Q /= torch.sum(Q)
        for _ in range(n_iterations):
            Q /= torch.sum(Q, dim=1, keepdim=True)
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()

    def forward(self, student_output_list, teacher_out_softmaxed_centered_list):
        total_loss = 0
        for s in student_output_list:
            lsm = F.log_softmax(s / self.student_temp, dim=-1)
            for t in teacher_out_softmaxed_centered_list:
                total_loss -= torch.sum(t * lsm, dim=-1).mean()
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        self.updated = False
        self.len_teacher_output = len(teacher_output)
        self.async_batch_center = torch.sum(teacher_output, dim=0, keepdim=True)

    @torch.no_grad()
    def apply_center_update(self):
        if self.updated is False:
            _t = self.async_batch_center / self.len_teacher_output
            self.center = self.center * self.center_momentum + _t * (1 - self.center_momentum)
            self.updated = True


class iBOTPatchLoss:
    def __init__(self, patch_out_dim, student_temp=0.1, center_momentum=0.9):
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center = torch.zeros(1, 1, patch_out_dim)
        self.updated = True

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_patch_tokens, teacher_temp):
        self.apply_center_update()
        return F.softmax((teacher_patch_tokens - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_output, teacher_temp, n_masked_patches_tensor, n_iterations=3):
        Q = torch.exp(teacher_output / teacher_temp).t()
        B = n_masked_patches_tensor  # dist.all_reduce(B) on one process: unchanged
        K = Q.shape[0]
        Q /= torch.sum(Q)
        for _ in range(n_iterations):
            Q /= torch.sum(Q, dim=1, keepdim=True)
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()

    def forward_masked(self, student_patch_tokens_masked, teacher_patch_tokens_masked, student_masks_flat,
                       n_masked_patches=None, masks_weight=None):
        t = teacher_patch_tokens_masked
        s = student_patch_tokens_masked
        loss = torch.sum(t * F.log_softmax(s / self.student_temp, dim=-1), dim=-1)
        if masks_weight is None:
            masks_weight = ((1 / student_masks_flat.sum(-1).clamp(min=1.0)).unsqueeze(-1)
                            .expand_as(student_masks_flat)[student_masks_flat])
        if n_masked_patches is not None:
            loss = loss[:n_masked_patches]
        loss = loss * masks_weight
        return -loss.sum() / student_masks_flat.shape[0]

    @torch.no_grad()
    def update_center(self, teacher_patch_tokens):
        self.updated = False
        self.len_teacher_patch_tokens = len(teacher_patch_tokens)
        self.async_batch_center = torch.sum(teacher_patch_tokens.mean(1), dim=0, keepdim=True)

    @torch.no_grad()
    def apply_center_update(self):
        if self.updated is False:
            _t = self.async_batch_center / self.len_teacher_patch_tokens
            self.center = self.center * self.center_momentum + _t * (1 - self.center_momentum)
            self.updated = True


class KoLeoLoss:
    def __init__(self):
        self.pdist = nn.PairwiseDistance(2, eps=1e-8)

    def pairwise_NNs_inner(self, x):
        dots = torch.mm(x, x.t())
        n = x.shape[0]
        dots.view(-1)[:: (n + 1)].fill_(-1)
        _, I = torch.max(dots, dim=1)  # noqa: E741
        return I

    def __call__(self, student_output, eps=1e-8):
        student_output = F.normalize(student_output, eps=eps, p=2, dim=-1)
        I = self.pairwise_NNs_inner(student_output)  # noqa: E741
        distances = self.pdist(student_output, student_output[I])
        return -torch.log(distances + eps).mean()


# ---- fixtures --------------------------------------------------------------------------------------------

def save(d, name, t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(t, dtype="<f4"))


def r32(*shape, scale=1.0):
    """Random values exactly representable in float32, as float64."""
    return (torch.randn(*shape) * scale).float().double()


def collate_masks(n_images, n_patches, gen):
    masks = torch.zeros(n_images, n_patches, dtype=torch.bool)
    for i in range(n_images // 2):  # half of the images masked, between 2 and half of the patches
        cnt = int(torch.randint(2, n_patches // 2 + 1, (1,), generator=gen))
        masks[i, torch.randperm(n_patches, generator=gen)[:cnt]] = True
    masks = masks[torch.randperm(n_images, generator=gen)]
    mask_indices_list = masks.flatten().nonzero().flatten()
    masks_weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    return masks, mask_indices_list, masks_weight


def gen_units(root):
    d = os.path.join(root, "units")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(11)
    vals = {}
    # softmax centering and the center update
    t, c = r32(8, 128), r32(128, scale=0.3)
    dl = DINOLoss(128)
    dl.center = c.view(1, 128).clone()
    probs = dl.softmax_center_teacher(t, 0.04)
    dl.update_center(t)
    dl.apply_center_update()
    save(d, "sc_t", t), save(d, "sc_center", c), save(d, "sc_probs", probs), save(d, "sc_center_new", dl.center[0])
    # Sinkhorn-Knopp
    for name, n, k, temp in (("sk1", 8, 128, 0.05), ("sk2", 37, 50, 0.07)):
        t = r32(n, k, scale=0.5)
        save(d, name + "_t", t), save(d, name + "_q", DINOLoss(k).sinkhorn_knopp_teacher(t, temp))
    # DINO cross-entropy over crop lists
    s = r32(12, 128).requires_grad_(True)
    tt = F.softmax(r32(8, 128) / 0.05, dim=-1)
    loss = DINOLoss(128).forward(s.chunk(3), tt.chunk(2))
    loss.backward()
    save(d, "dx_s", s), save(d, "dx_t", tt), save(d, "dx_ds", s.grad)
    vals["dx_loss"] = loss.item()
    # iBOT forward_masked
    s = r32(10, 96).requires_grad_(True)
    tt = F.softmax(r32(10, 96) / 0.05, dim=-1)
    masks = torch.zeros(4, 8, dtype=torch.bool)
    masks[0, :3] = True
    masks[2, 1:8] = True
    w = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    loss = iBOTPatchLoss(96).forward_masked(s, tt, masks, n_masked_patches=10, masks_weight=w)
    loss.backward()
    save(d, "ib_s", s), save(d, "ib_t", tt), save(d, "ib_w", w), save(d, "ib_ds", s.grad)
    vals["ib_loss"] = loss.item()
    # KoLeo, and with two equal rows (distance eps * sqrt(d), each other's neighbour)
    for name, x in (("ko", r32(6, 20)), ("ko_dup", r32(5, 8))):
        if name == "ko_dup":
            x[3] = x[1]
        x = x.clone().requires_grad_(True)
        loss = KoLeoLoss()(x)
        loss.backward()
        save(d, name + "_x", x), save(d, name + "_dx", x.grad)
        vals[name + "_loss"] = loss.item()
    # the collate's mask bookkeeping
    g = torch.Generator().manual_seed(3)
    masks, idx, w = collate_masks(4, 16, g)
    save(d, "mk_masks", masks.double()), save(d, "mk_idx", idx.double()), save(d, "mk_w", w)
    with open(os.path.join(d, "values.txt"), "w") as f:
        for k, v in vals.items():
            f.write("%s %.17g\n" % (k, v))


def randomise(head, scale_bias=0.1):
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.endswith(".bias"):
                p.copy_(r32(*p.shape, scale=scale_bias))
            elif name.endswith("weight_g"):
                p.copy_((1.0 + 0.5 * torch.rand(*p.shape)).float().double())
            else:
                p.copy_(p.float().double())


def gen_step(root, name, B, n_local, D, n_patches, dino_k, ibot_k, separate, nlayers, ibot_nlayers, hidden, bn,
             centering, teacher_temp, seed):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_global = 2
    student = {"dino_head": DINOHead(D, dino_k, nlayers, hidden, bn)}
    teacher = {"dino_head": DINOHead(D, dino_k, nlayers, hidden, bn)}
    if separate:
        student["ibot_head"] = DINOHead(D, ibot_k, ibot_nlayers, hidden, bn)
        teacher["ibot_head"] = DINOHead(D, ibot_k, ibot_nlayers, hidden, bn)
    for m in list(student.values()) + list(teacher.values()):
        randomise(m)
    for key, prefix in (("dino_head", "s."), ("ibot_head", "si.")):
        if key in student:
            for pname, p in student[key].named_parameters():
                save(d, prefix + pname, p)
            for pname, p in teacher[key].named_parameters():
                save(d, "t" + prefix[1:] + pname if prefix == "si." else "t." + pname, p)

    masks, mask_indices_list, masks_weight = collate_masks(n_global * B, n_patches, gen)
    n_masked_patches = mask_indices_list.shape[0]
    upperbound = n_masked_patches + 3
    g_cls = r32(n_global * B, D).requires_grad_(True)
    l_cls = r32(n_local * B, D).requires_grad_(True)
    g_patch = r32(n_global * B, n_patches, D).requires_grad_(True)
    t_cls = r32(n_global * B, D)
    t_patch = r32(n_global * B, n_patches, D)
    for nm, t in (("g_cls", g_cls), ("l_cls", l_cls), ("g_patch", g_patch.reshape(-1, D)), ("t_cls", t_cls),
                  ("t_patch", t_patch.reshape(-1, D)), ("masks", masks.double())):
        save(d, nm, t)

    dino_loss, ibot_patch_loss, koleo = DINOLoss(dino_k), iBOTPatchLoss(ibot_k), KoLeoLoss()
    dino_loss.center = r32(1, dino_k, scale=0.2)
    ibot_patch_loss.center = r32(1, 1, ibot_k, scale=0.2)
    save(d, "dino_center0", dino_loss.center[0]), save(d, "ibot_center0", ibot_patch_loss.center[0, 0])

    n_local_crops_loss_terms = max(n_local * n_global, 1)
    n_global_crops_loss_terms = (n_global - 1) * n_global
    ibot_loss_scale = 1.0 / n_global
    dino_loss_weight, ibot_loss_weight, koleo_loss_weight = 1.0, 1.0, 0.1

    # get_teacher_output
    with torch.no_grad():
        tc = t_cls.chunk(n_global)
        teacher_cls_tokens = torch.cat((tc[1], tc[0]))
        n_cls_tokens = teacher_cls_tokens.shape[0]
        if not separate:
            buf = t_patch.new_zeros(upperbound + n_cls_tokens, D)
            buf[:n_cls_tokens].copy_(teacher_cls_tokens)
            buf[n_cls_tokens:n_cls_tokens + n_masked_patches] = t_patch.flatten(0, 1)[mask_indices_list]
            after = teacher["dino_head"](buf)
            teacher_cls_after = after[:n_cls_tokens]
            masked_teacher_after = after[n_cls_tokens:n_cls_tokens + n_masked_patches]
        else:
            buf = t_patch.new_zeros(upperbound, D)
            buf[:n_masked_patches] = t_patch.flatten(0, 1)[mask_indices_list]
            teacher_cls_after = teacher["dino_head"](teacher_cls_tokens)
            masked_teacher_after = teacher["ibot_head"](buf)[:n_masked_patches]
        if centering == "centering":
            t_dino = dino_loss.softmax_center_teacher(teacher_cls_after, teacher_temp).view(
                n_global, -1, dino_k)
            dino_loss.update_center(teacher_cls_after)
            m = masked_teacher_after.unsqueeze(0)
            t_ibot = ibot_patch_loss.softmax_center_teacher(m[:, :n_masked_patches], teacher_temp).squeeze(0)
            ibot_patch_loss.update_center(m[:n_masked_patches])
        else:
            t_dino = dino_loss.sinkhorn_knopp_teacher(teacher_cls_after, teacher_temp).view(n_global, -1, dino_k)
            t_ibot = ibot_patch_loss.sinkhorn_knopp_teacher(masked_teacher_after, teacher_temp,
                                                            n_masked_patches_tensor=n_masked_patches)

    # the student
    pbuf = g_patch.new_zeros(upperbound, D)
    pbuf[:n_masked_patches] = torch.index_select(g_patch.flatten(0, 1), dim=0, index=mask_indices_list)
    inputs = [l_cls, g_cls] + ([] if separate else [pbuf])
    outs = student["dino_head"](torch.cat(inputs)).split([x.shape[0] for x in inputs])
    s_local, s_global = outs[0], outs[1]
    s_patch = student["ibot_head"](pbuf)[:n_masked_patches] if separate else outs[2][:n_masked_patches]

    loss_accumulator = 0
    dino_local_crops_loss = dino_loss.forward(s_local.chunk(n_local), t_dino) / (
        n_global_crops_loss_terms + n_local_crops_loss_terms)
    loss_accumulator += dino_loss_weight * dino_local_crops_loss
    loss_scales = 2
    dino_global_crops_loss = (dino_loss.forward([s_global], [t_dino.flatten(0, 1)]) * loss_scales /
                              (n_global_crops_loss_terms + n_local_crops_loss_terms))
    loss_accumulator += dino_loss_weight * dino_global_crops_loss
    koleo_loss = koleo_loss_weight * sum(koleo(p) for p in g_cls.chunk(2))
    loss_accumulator += koleo_loss
    ibot_loss = ibot_patch_loss.forward_masked(s_patch, t_ibot, student_masks_flat=masks,
                                               n_masked_patches=n_masked_patches,
                                               masks_weight=masks_weight) * loss_scales * ibot_loss_scale
    loss_accumulator += ibot_loss_weight * ibot_loss
    loss_accumulator.backward()
    dino_loss.apply_center_update()
    ibot_patch_loss.apply_center_update()

    with open(os.path.join(d, "terms.txt"), "w") as f:
        f.write("%.17g %.17g %.17g %.17g %.17g\n" % (dino_local_crops_loss.item(), dino_global_crops_loss.item(),
                                                    (koleo_loss / loss_scales).item(), (ibot_loss / 2).item(),
                                                    loss_accumulator.item()))
    save(d, "dino_center", dino_loss.center[0]), save(d, "ibot_center", ibot_patch_loss.center[0, 0])
    save(d, "grad.g_cls", g_cls.grad), save(d, "grad.l_cls", l_cls.grad)
    save(d, "grad.g_patch", g_patch.grad.reshape(-1, D))
    for key, prefix in (("dino_head", "s."), ("ibot_head", "si.")):
        if key in student:
            for pname, p in student[key].named_parameters():
                save(d, "grad." + prefix + pname, p.grad)
    return "%s %d %d %d %d %d %d %d %d %d %d %d %s %.9g %d" % (
        name, B, n_local, D, n_patches, dino_k, ibot_k, int(separate), nlayers, ibot_nlayers, hidden, bn,
        centering, teacher_temp, upperbound)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "gen":
        print(__doc__)
        sys.exit(2)
    root = sys.argv[2]
    os.makedirs(root, exist_ok=True)
    gen_units(root)
    lines = [
        gen_step(root, "shared_softmax", 4, 3, 32, 16, 128, 128, False, 3, 3, 64, 16, "centering", 0.04, 21),
        gen_step(root, "separate_sinkhorn", 4, 3, 32, 16, 128, 96, True, 3, 1, 64, 16, "sinkhorn_knopp", 0.07, 22),
        gen_step(root, "separate_softmax_l1", 3, 2, 24, 9, 64, 80, True, 1, 3, 48, 8, "centering", 0.05, 23),
    ]
    with open(os.path.join(root, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
