#!/usr/bin/python3
"""PyTorch reference for tests/unit/train/test_optim.c: DINOv2's parameter groups (get_vit_lr_decay_rate,
get_params_groups_with_decay, fuse_params_groups of dinov2/utils/param_groups.py, written again here from
their definitions), torch.optim.AdamW with apply_optim_scheduler's per-group lr and weight decay,
torch.nn.utils.clip_grad_norm_ per student module, and update_teacher's foreach EMA. No lvd code.

  optim_ref.py rules IN OUT   IN lines "N_BLOCKS NAME"; OUT lines "LAYER_ID LR_MULT WD_MULT IS_LAST NAME"
                              (decay 0.9, patch_embed_lr_mult 0.2)
  optim_ref.py run DIR        DIR/model.txt lines "module NAME N_BLOCKS" and "tensor MODULE NAME COUNT";
                              DIR/steps.txt lines "LR WD LAST_LAYER_LR MOMENTUM CLIP"; float32 LE inputs
                              DIR/param.f32, DIR/teacher.f32 (all tensors concatenated in model.txt order) and
                              DIR/grad<k>.f32 per step k; writes DIR/ref_{param,teacher,m,v}.f32 after the steps
                              and DIR/ref_norms.txt (per step, each module's gradient norm before clipping)
"""
import sys

import numpy as np
import torch
import torch.nn as nn

DECAY = 0.9
PATCH_MULT = 0.2


def layer_id_and_rate(name, lr_decay_rate, num_layers, force_is_backbone, chunked_blocks=False):
    """get_vit_lr_decay_rate, returning the layer id it settles on as well as the rate."""
    layer_id = num_layers + 1
    if name.startswith("backbone") or force_is_backbone:
        dotted = (".pos_embed", ".patch_embed", ".mask_token", ".cls_token", ".register_tokens")
        bare = tuple(s[1:] for s in dotted)
        if any(s in name for s in dotted):
            layer_id = 0
        elif force_is_backbone and any(s in name for s in bare):
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name[name.find(".blocks."):].split(".")[2]) + 1
        elif chunked_blocks and "blocks." in name and "residual." not in name:
            layer_id = int(name[name.find("blocks."):].split(".")[2]) + 1
        elif "blocks." in name and "residual." not in name:
            layer_id = int(name[name.find("blocks."):].split(".")[1]) + 1
    return layer_id, lr_decay_rate ** (num_layers + 1 - layer_id)


def rule(name, n_blocks, decay=DECAY, patch_mult=PATCH_MULT):
    """(layer_id, lr_multiplier, wd_multiplier, is_last_layer) as get_params_groups_with_decay sets them."""
    layer_id, lr_mult = layer_id_and_rate(name, decay, n_blocks, n_blocks > 0)
    wd_mult = 0.0 if (name.endswith(".bias") or "norm" in name or "gamma" in name) else 1.0
    if "patch_embed" in name:
        lr_mult = lr_mult * patch_mult
    return layer_id, lr_mult, wd_mult, "last_layer" in name


def module_n_blocks(model):
    """The branch of get_params_groups_with_decay that counts the model's blocks."""
    if hasattr(model, "n_blocks"):
        return model.n_blocks
    if hasattr(model, "blocks"):
        return len(model.blocks)
    if hasattr(model, "backbone"):
        return len(model.backbone.blocks)
    return 0


def param_groups(model):
    """get_params_groups_with_decay + fuse_params_groups for one student module."""
    n_blocks = module_n_blocks(model)
    fused = {}
    for name, p in model.named_parameters():
        _, lr_mult, wd_mult, last = rule(name, n_blocks)
        key = "lr_multiplier%s_wd_multiplier%s_is_last_layer%s_" % (lr_mult, wd_mult, last)
        g = fused.setdefault(key, {"params": [], "lr_multiplier": lr_mult, "wd_multiplier": wd_mult,
                                   "is_last_layer": last, "foreach": True})
        g["params"].append(p)
    return list(fused.values())


def build_module(tensors, n_blocks, values):
    """An nn.Module whose named_parameters() are exactly the given dotted names (1-D tensors)."""
    root = nn.Module()
    if n_blocks > 0:
        root.n_blocks = n_blocks
        root.chunked_blocks = False
    params = []
    for name, count in tensors:
        parts = name.split(".")
        mod = root
        for part in parts[:-1]:
            if part not in mod._modules:
                mod.add_module(part, nn.Module())
            mod = mod._modules[part]
        p = nn.Parameter(torch.from_numpy(values[name].copy()))
        mod.register_parameter(parts[-1], p)
        params.append(p)
    return root, params


def cmd_rules(inp, out):
    with open(inp) as f, open(out, "w") as g:
        for line in f:
            if not line.strip():
                continue
            n_blocks, name = line.split()
            lid, lr, wd, last = rule(name, int(n_blocks))
            g.write("%d %.17g %.17g %d %s\n" % (lid, lr, wd, 1 if last else 0, name))


def cmd_run(d):
    modules = []  # [name, n_blocks, [(tensor, count)]]
    order = []    # (module index, tensor name, count) in file order
    for line in open(d + "/model.txt"):
        f = line.split()
        if not f:
            continue
        if f[0] == "module":
            modules.append([f[1], int(f[2]), []])
        else:
            mi = [m[0] for m in modules].index(f[1])
            modules[mi][2].append((f[2], int(f[3])))
            order.append((mi, f[2], int(f[3])))
    steps = [[float(x) for x in l.split()] for l in open(d + "/steps.txt") if l.strip()]

    def split(path):
        flat = np.fromfile(path, dtype="<f4")
        out, off = [{} for _ in modules], 0
        for mi, name, count in order:
            out[mi][name] = flat[off:off + count]
            off += count
        assert off == len(flat), path
        return out

    init, teach = split(d + "/param.f32"), split(d + "/teacher.f32")
    students, teachers = [], []
    for mi, (mname, n_blocks, tensors) in enumerate(modules):
        students.append(build_module(tensors, n_blocks, init[mi]))
        teachers.append(build_module(tensors, n_blocks, teach[mi]))
    groups = []
    for model, _ in students:
        groups += param_groups(model)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    by_name = [dict(model.named_parameters()) for model, _ in students]
    norms = []
    for k, (lr, wd, last_lr, mom, clip) in enumerate(steps):
        for g in opt.param_groups:  # apply_optim_scheduler
            g["weight_decay"] = wd * g["wd_multiplier"]
            g["lr"] = (last_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        opt.zero_grad(set_to_none=True)
        grads = split("%s/grad%d.f32" % (d, k))
        for mi in range(len(modules)):
            for name, p in by_name[mi].items():
                p.grad = torch.from_numpy(grads[mi][name].copy())
        row = []
        for model, _ in students:  # `for v in model.student.values(): v.clip_grad_norm_(clip)`
            row.append(float(nn.utils.clip_grad_norm_(model.parameters(), clip)))
        norms.append(row)
        opt.step()
        with torch.no_grad():  # update_teacher
            s_list = [p for _, ps in students for p in ps]
            t_list = [p for _, ps in teachers for p in ps]
            torch._foreach_mul_(t_list, mom)
            torch._foreach_add_(t_list, s_list, alpha=1 - mom)

    def dump(path, get):
        vals = []
        for mi, name, count in order:
            vals.append(get(mi, name).detach().numpy().astype("<f4").reshape(-1))
        np.concatenate(vals).tofile(path)

    t_by_name = [dict(model.named_parameters()) for model, _ in teachers]
    dump(d + "/ref_param.f32", lambda mi, n: by_name[mi][n])
    dump(d + "/ref_teacher.f32", lambda mi, n: t_by_name[mi][n])
    dump(d + "/ref_m.f32", lambda mi, n: opt.state[by_name[mi][n]]["exp_avg"])
    dump(d + "/ref_v.f32", lambda mi, n: opt.state[by_name[mi][n]]["exp_avg_sq"])
    with open(d + "/ref_norms.txt", "w") as f:
        for row in norms:
            f.write(" ".join("%.9g" % x for x in row) + "\n")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "rules":
        cmd_rules(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "run":
        cmd_run(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
