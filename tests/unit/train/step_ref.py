#!/usr/bin/python3
"""Reference fixtures for train/step.c: whole DINOv2 training steps (student and teacher ViT, DINO / iBOT heads,
the losses, backward, per-module gradient clipping, the schedules, AdamW with layer decay, the teacher EMA),
computed with PyTorch alone (never with lvd code).

  step_ref.py gen DIR      writes the cases below (DIR/cases.txt: one case name a line)
  step_ref.py check DIR    recomputes every case in float32 and asserts it agrees with the saved float64 results
                           (loss terms 1e-5 relative, step-0 gradients 1e-3, parameters after the steps 1e-4, the
                           last two as max|a - b| / max|b| per tensor); one line per case

One step is dinov2/train/train.py's loop body with dinov2/train/ssl_meta_arch.py's forward_backward on one process:
  lr, wd, momentum, teacher_temp, last_layer_lr = the five schedules of build_schedulers at the iteration;
  apply_optim_scheduler (lr x lr_multiplier, or last_layer_lr x lr_multiplier for "last_layer" parameters;
  weight_decay = wd x wd_multiplier); zero_grad;
  teacher backbone on the global crops (no masks); its CLS chunks cat'd in reverse (crop 2 rows first); the teacher
  dino_head on [CLS ; masked patch tokens] (shared head) or dino_head on the CLS and ibot_head on the masked patch
  tokens (separate); "centering": softmax_center_teacher with the current center (pending EMA update applied
  first, momentum center_momentum), then update_center, for both; "sinkhorn_knopp": sinkhorn_knopp_teacher
  (3 iterations, iBOT with n_samples = the number of masked patches) for both;
  student backbone on the global crops WITH the masks (mask_token replaces masked patch embeddings before the
  positional embedding) and on the local crops (no masks; pos_embed resampled to the local grid); the student
  dino_head on [local CLS ; global CLS ; masked patch tokens] (the last part through ibot_head when separate);
  dino_local_crops_loss = DINOLoss(local chunks, teacher) / (n_global_terms + n_local_terms),
  dino_global_crops_loss = DINOLoss([global], [teacher flattened]) x 2 / (n_global_terms + n_local_terms),
  with n_local_terms = max(2 n_local, 1), n_global_terms = 2; KoLeo on each global crop's chunk of the student
  backbone CLS tokens (x koleo_loss_weight, summed); iBOT forward_masked(masks_weight = 1 / masked count of the
  image) x 2 x 1/2; total = w_dino (local + global) + koleo + w_ibot ibot; backward;
  torch clip_grad_norm_(clip_grad) over each student module's parameters (backbone, dino_head, ibot_head);
  torch.optim.AdamW over the fused parameter groups of all student modules (get_params_groups_with_decay with
  layerwise_decay over the backbone's blocks and patch_embed_lr_mult; heads have no blocks: multiplier 1;
  wd_multiplier 0 for biases, norms and layerscale gammas; last_layer.weight_g is trained and decayed like
  any other weight); update_teacher: teacher = m teacher + (1 - m) student for every parameter of every module.
The teacher starts as an exact copy of the student (prepare_for_distributed_training). Drop path is 0.
Everything runs in float64 (positional-embedding resampling included) from float32 inputs; files are F32.

Notes. The lr schedule's warmup starts at 0, so iteration 0 changes no parameter (its lr is 0, weight decay
multiplies by 1 - 0 x wd, and the EMA of equal models is the identity), but AdamW still takes its step: the
moments take in the step-0 gradients and the step count reaches 1. The last layer gets lr 0 at iterations 0 and 1
(freeze_last_layer_epochs) and the same lr as the rest at iteration 2, with moments built up over all three
steps. The official padding of the masked-token buffers to `upperbound` rows with zeros only adds head rows that
are dropped, so it is not reproduced (and upperbound is not stored). The official MaskingGenerator can leave a
"masked" image empty when its target is under min_num_patches (4); here such a mask is drawn again.

The key third of every attn.qkv.bias (rows D .. 2D-1) has an analytically zero gradient (adding a vector b to
every key adds q.b to a whole row of logits, which the softmax ignores). Its computed gradient is rounding noise:
about 1e-17 in float64, far below AdamW's eps, so the float64 reference leaves those entries where they started
(biases have no weight decay), but 1e-9 .. 1e-7 in float32. Near or above eps, AdamW turns that noise into moves
of order lr. A float32 implementation cannot reproduce them, so `check` leaves that slice out of the
parameter comparison (step-0 gradients and norms still include it: there it is negligible). The C test has to
do the same, or give the slice an absolute bound of the order of steps x lr.

Distillation (case "distill", DINOv2 paper section 5 as train/step.h implements it): the targets come from a
frozen teacher of another size (its own ViT and heads, here with a separate iBOT head while the student shares
one), which no step changes; the student sees no masks (the steps' masks are ignored) and no drop path; iBOT is
forward_masked over every patch token of the global crops (masks all True, so masks_weight = 1 / N); the EMA
"teacher" is still updated from the student every step and is what final.safetensors' "teacher.*" holds. The
student's mask_token then gets no gradient (zero in the fixture).

DIR/<case>/ (cases "shared", "separate" and "distill"):
  config.json            {"vit": {patch, pos_grid, dim, depth, heads, ffn "mlp"|"swiglu", ffn_hidden, n_reg,
                         pos_mode "offset"|"size_aa", layerscale (nominal init value, 0 = no LayerScale)},
                         batch, n_local, global_size, local_size, n_patches (global), n_patches_local,
                         dino {k, bottleneck, hidden, nlayers, loss_weight, koleo_loss_weight},
                         ibot {separate, k, bottleneck, hidden, nlayers, loss_weight} (shared: the dino head's),
                         centering "centering"|"sinkhorn_knopp", student_temp, center_momentum,
                         sched {OFFICIAL_EPOCH_LENGTH, epochs, batch_size, base_lr, lr (= base_lr sqrt(batch /
                         1024)), min_lr, warmup_epochs, weight_decay, weight_decay_end, momentum_teacher,
                         final_momentum_teacher, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs,
                         freeze_last_layer_epochs}, optim {beta1, beta2, eps, layerwise_decay, patch_embed_lr_mult,
                         clip_grad}, steps}
  init.safetensors       the student (= the teacher) before step 0: "backbone.<official name>" (patch_embed.proj.
                         weight (D, 3, p, p), cls_token (1, 1, D), pos_embed (1, 1 + M*M, D), register_tokens
                         (1, R, D) when R > 0, mask_token (1, D), blocks.<i>.{norm1,norm2}.{weight,bias},
                         blocks.<i>.attn.qkv.{weight (3D, D), bias}, blocks.<i>.attn.proj.{weight,bias},
                         blocks.<i>.ls{1,2}.gamma (D) with LayerScale, blocks.<i>.mlp.fc{1,2}.{weight,bias} or
                         blocks.<i>.mlp.{w12 (2H, D), w3 (D, H)}.{weight,bias}, norm.{weight,bias}),
                         "dino_head.<name>" (mlp.<j>.{weight,bias} for the Linear layers j = 0, 2, 4 ... (GELU
                         between them; "mlp.{weight,bias}" when nlayers == 1), last_layer.weight_g (K, 1),
                         last_layer.weight_v (K, bottleneck)), "ibot_head.<name>" likewise when separate
  step<i>.safetensors    i = 0 .. steps-1: "global" (2B, 3, G, G) crop-major (rows 0..B-1 = global crop 1 of
                         each image, B..2B-1 = crop 2), "local" (n_local B, 3, L, L) crop-major, "masks" (2B, N)
                         0/1 (collate_data_and_cast: int(2B x 0.5) images masked, targets int(N uniform(r_i,
                         r_i+1)) over linspace(0.1, 0.5), MaskingGenerator blocks, shuffled; every masked image
                         has at least one masked patch, the others none)
  step<i>_sched.txt      one line "lr wd momentum teacher_temp last_layer_lr" (%.17g) of iteration i
  step<i>_terms.txt      lines "dino_local_crops_loss X", "dino_global_crops_loss X", "koleo_loss X" (the
                         official loss_dict's: weighted KoLeo sum / 2), "ibot_loss X" (loss_dict's: the iBOT
                         term / 2), "total X" (the backpropagated loss_accumulator), %.17g
  step0_grads.safetensors  every student parameter's gradient at step 0 before clipping, names as init
  step<i>_norms.txt      lines "backbone X", "dino_head X" (, "ibot_head X"): each module's total gradient L2 norm
                         before clipping (what clip_grad_norm_ returns), %.17g
  distill_teacher.safetensors  (distill only) the frozen teacher, named as a training state names its EMA
                         teacher: "teacher.backbone.<name>", "teacher.dino_head.<name>", "teacher.ibot_head.<name>";
                         config.json's "distill" holds its {vit, dino, ibot} like the student's
  final.safetensors      after the steps: "student.<name>", "teacher.<name>" for every name of init, and
                         "dino_center" (K), "ibot_center" (K_ibot): the softmax-centering centers with the
                         last step's pending update applied (i.e. after `steps` EMA updates; zeros for
                         sinkhorn_knopp)
"""
import json
import math
import os
import random
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "vit"))
import vit_ref  # noqa: E402
import loss_ref  # noqa: E402  (sets the default dtype to float64; run() sets it per run)
import optim_ref  # noqa: E402
import schedule_ref  # noqa: E402

torch.set_num_threads(1)

TOL_TERMS = 1e-5
TOL_GRADS = 1e-3
TOL_FINAL = 1e-4

TERMS = ("dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss", "total")


# ---- the model ----------------------------------------------------------------------------------------------

class ViT(vit_ref.DinoVisionTransformer):
    """vit_ref's DinoVisionTransformer with the positional-embedding resampling in the model's dtype (the official
    .float() is the identity for a float32 model; the float64 reference keeps float64 throughout)."""

    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        pos_embed = self.pos_embed
        dim = x.shape[-1]
        w0, h0 = w // self.patch_size, h // self.patch_size
        M = int(math.sqrt(N))
        assert N == M * M
        if self.interpolate_offset:
            kwargs = {"scale_factor": (float(w0 + self.interpolate_offset) / M,
                                       float(h0 + self.interpolate_offset) / M)}
        else:
            kwargs = {"size": (w0, h0)}
        pp = F.interpolate(pos_embed[:, 1:].reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic",
                           antialias=self.interpolate_antialias, **kwargs)
        assert (w0, h0) == pp.shape[-2:]
        pp = pp.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos_embed[:, :1], pp), dim=1)


def build_modules(cfg):
    v = cfg["vit"]
    mods = {"backbone": ViT(dict(v, layerscale=1 if v["layerscale"] else 0))}
    d = cfg["dino"]
    mods["dino_head"] = loss_ref.DINOHead(v["dim"], d["k"], d["nlayers"], d["hidden"], d["bottleneck"])
    if cfg["ibot"]["separate"]:
        i = cfg["ibot"]
        mods["ibot_head"] = loss_ref.DINOHead(v["dim"], i["k"], i["nlayers"], i["hidden"], i["bottleneck"])
    return nn.ModuleDict(mods)


def param_names(cfg):
    torch.set_default_dtype(torch.float64)
    m = build_modules(cfg)
    return [(k + "." + n, tuple(p.shape)) for k in m for n, p in m[k].named_parameters()]


# ---- files ------------------------------------------------------------------------------------------------

def read_safetensors(path):
    """name -> float32 ndarray (F32 only)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode())
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", (path, name)
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], dtype="<f4").reshape(meta["shape"]).copy()
    return out


def write_st(path, tensors):
    vit_ref.write_safetensors(path, [(n, np.asarray(v, dtype=np.float32)) for n, v in tensors], {"format": "pt"})


def write_lines(path, pairs):
    with open(path, "w") as f:
        for k, v in pairs:
            f.write("%s %.17g\n" % (k, v))


def read_lines(path):
    out = {}
    for line in open(path):
        f = line.split()
        if f:
            out[f[0]] = float(f[1])
    return out


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    s = np.abs(b).max() if b.size else 0.0
    return float(np.abs(a - b).max() / (s if s > 0 else 1.0)) if b.size else 0.0


# ---- cases ------------------------------------------------------------------------------------------------

def swiglu_hidden(dim):
    return (int(4 * dim * 2 / 3) + 7) // 8 * 8  # SwiGLUFFNFused's hidden size for mlp_ratio 4


def sched_cfg(batch):
    base_lr = 0.37
    return {"OFFICIAL_EPOCH_LENGTH": 2, "epochs": 3, "batch_size": batch, "base_lr": base_lr,
            "lr": base_lr * math.sqrt(batch / 1024.0), "min_lr": 1e-6, "warmup_epochs": 1,
            "weight_decay": 0.04, "weight_decay_end": 0.4, "momentum_teacher": 0.992,
            "final_momentum_teacher": 1.0, "warmup_teacher_temp": 0.04, "teacher_temp": 0.07,
            "warmup_teacher_temp_epochs": 1, "freeze_last_layer_epochs": 1}


def case_configs():
    B = 3
    shared = {
        "vit": {"patch": 4, "pos_grid": 4, "dim": 32, "depth": 2, "heads": 2, "ffn": "mlp", "ffn_hidden": 128,
                "n_reg": 0, "pos_mode": "offset", "layerscale": 0.1},
        "batch": B, "n_local": 2, "global_size": 16, "local_size": 8,
        "dino": {"k": 64, "bottleneck": 16, "hidden": 48, "nlayers": 3, "loss_weight": 1.0,
                 "koleo_loss_weight": 0.1},
        "ibot": {"separate": False, "k": 64, "bottleneck": 16, "hidden": 48, "nlayers": 3, "loss_weight": 1.0},
        "centering": "centering", "student_temp": 0.1, "center_momentum": 0.9, "sched": sched_cfg(B),
        "optim": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "layerwise_decay": 0.9, "patch_embed_lr_mult": 0.2,
                  "clip_grad": 0.05},
        "steps": 3,
    }
    separate = {
        "vit": {"patch": 4, "pos_grid": 4, "dim": 32, "depth": 3, "heads": 4, "ffn": "swiglu",
                "ffn_hidden": swiglu_hidden(32), "n_reg": 2, "pos_mode": "size_aa", "layerscale": 0},
        "batch": B, "n_local": 3, "global_size": 16, "local_size": 8,
        "dino": {"k": 48, "bottleneck": 16, "hidden": 48, "nlayers": 3, "loss_weight": 1.0,
                 "koleo_loss_weight": 0.1},
        "ibot": {"separate": True, "k": 40, "bottleneck": 12, "hidden": 40, "nlayers": 2, "loss_weight": 1.0},
        "centering": "sinkhorn_knopp", "student_temp": 0.1, "center_momentum": 0.9, "sched": sched_cfg(B),
        "optim": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "layerwise_decay": 0.9, "patch_embed_lr_mult": 0.2,
                  "clip_grad": 3.0},
        "steps": 3,
    }
    distill = json.loads(json.dumps(shared))
    distill["optim"]["clip_grad"] = 3.0
    distill["distill"] = {
        "vit": {"patch": 4, "pos_grid": 4, "dim": 48, "depth": 3, "heads": 3, "ffn": "mlp", "ffn_hidden": 192,
                "n_reg": 0, "pos_mode": "offset", "layerscale": 0.1},
        "dino": {"k": 64, "bottleneck": 12, "hidden": 40, "nlayers": 3},
        "ibot": {"separate": True, "k": 64, "bottleneck": 16, "hidden": 32, "nlayers": 2},
    }
    for c in (shared, separate, distill):
        p = c["vit"]["patch"]
        c["n_patches"] = (c["global_size"] // p) ** 2
        c["n_patches_local"] = (c["local_size"] // p) ** 2
    return {"shared": shared, "separate": separate, "distill": distill}


def init_param(name, shape, rng, cfg):
    """Random weights (far from the official init, sizeable against the learning rate, so that every parameter
    moves the losses and gets a gradient well above float32 noise)."""
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("backbone."):
        n = name[len("backbone."):]
        if n in ("cls_token", "pos_embed", "register_tokens", "mask_token"):
            return rng.normal(0.0, 0.5, shape)
        if leaf == "gamma":
            return cfg["vit"]["layerscale"] * rng.uniform(0.5, 1.5, shape)
        if ".norm" in n or n.startswith("norm."):
            return (1.0 + rng.normal(0.0, 0.1, shape)) if leaf == "weight" else rng.normal(0.0, 0.1, shape)
        if leaf == "bias":
            return rng.normal(0.0, 0.1, shape)
        if n == "patch_embed.proj.weight":
            return rng.normal(0.0, 0.15, shape)
        std = {"proj": 0.12, "qkv": 0.15, "fc1": 0.15, "w12": 0.15, "fc2": 0.08, "w3": 0.1}[n.split(".")[-2]]
        return rng.normal(0.0, std, shape)
    # heads
    if leaf == "weight_g":
        return rng.uniform(0.8, 1.2, shape)
    if leaf == "weight_v":
        return np.clip(rng.normal(0.0, 0.3, shape), -0.6, 0.6)
    if leaf == "bias":
        return rng.normal(0.0, 0.1, shape)
    return np.clip(rng.normal(0.0, 1.0, shape), -2, 2) * (1.2 / math.sqrt(shape[1]))  # trunc-normal style


class MaskingGenerator:
    """dinov2/data/masking.py's MaskingGenerator (min_num_patches 4, aspect 0.3 .. 1/0.3) on a given random.Random."""

    def __init__(self, side, max_num_patches, r):
        self.height = self.width = side
        self.min_num_patches = 4
        self.max_num_patches = max_num_patches
        self.log_aspect_ratio = (math.log(0.3), math.log(1 / 0.3))
        self.r = r

    def _mask(self, mask, max_mask_patches):
        delta = 0
        for _ in range(10):
            target_area = self.r.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(self.r.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = self.r.randint(0, self.height - h)
                left = self.r.randint(0, self.width - w)
                num_masked = mask[top:top + h, left:left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    def __call__(self, num_masking_patches=0):
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            delta = self._mask(mask, min(num_masking_patches - count, self.max_num_patches))
            if delta == 0:
                break
            count += delta
        return mask


def collate_masks(n_images, side, r):
    """collate_data_and_cast's masks (mask_ratio_tuple (0.1, 0.5), mask_probability 0.5); a masked image that the
    generator left empty (possible for targets below min_num_patches) is drawn again."""
    N = side * side
    gen = MaskingGenerator(side, 0.5 * N, r)
    n_masked = int(n_images * 0.5)
    probs = torch.linspace(0.1, 0.5, n_masked + 1, dtype=torch.float32)
    masks = []
    for i in range(n_images):
        if i < n_masked:
            while True:
                m = gen(int(N * r.uniform(float(probs[i]), float(probs[i + 1]))))
                if m.sum() > 0:
                    break
        else:
            m = gen(0)
        masks.append(m.reshape(-1))
    r.shuffle(masks)
    return np.stack(masks).astype(np.float32)


def make_inputs(cfg, seed):
    rng = np.random.default_rng(seed)
    init = {}
    for name, shape in param_names(cfg):
        init[name] = init_param(name, shape, rng, cfg).astype(np.float32)
    if "distill" in cfg:
        for name, shape in param_names(cfg["distill"]):
            init["teacher." + name] = init_param(name, shape, rng, cfg["distill"]).astype(np.float32)
    r = random.Random(seed)
    B, G, L, p = cfg["batch"], cfg["global_size"], cfg["local_size"], cfg["vit"]["patch"]
    steps = []
    for _ in range(cfg["steps"]):
        steps.append({
            "global": rng.normal(0.0, 1.0, (2 * B, 3, G, G)).astype(np.float32),
            "local": rng.normal(0.0, 1.0, (cfg["n_local"] * B, 3, L, L)).astype(np.float32),
            "masks": collate_masks(2 * B, G // p, r),
        })
    return init, steps


# ---- schedules (build_schedulers) -------------------------------------------------------------------------

def schedules(cfg):
    s = cfg["sched"]
    L = s["OFFICIAL_EPOCH_LENGTH"]
    lr = dict(base_value=s["lr"], final_value=s["min_lr"], total_iters=s["epochs"] * L,
              warmup_iters=s["warmup_epochs"] * L, start_warmup_value=0)
    lr_s = schedule_ref.Cosine(**lr)
    wd_s = schedule_ref.Cosine(s["weight_decay"], s["weight_decay_end"], s["epochs"] * L)
    mom_s = schedule_ref.Cosine(s["momentum_teacher"], s["final_momentum_teacher"], s["epochs"] * L)
    t_s = schedule_ref.Cosine(s["teacher_temp"], s["teacher_temp"], s["warmup_teacher_temp_epochs"] * L,
                              warmup_iters=s["warmup_teacher_temp_epochs"] * L,
                              start_warmup_value=s["warmup_teacher_temp"])
    last_s = schedule_ref.Cosine(**lr)
    last_s.table[:s["freeze_last_layer_epochs"] * L] = 0
    return [tuple(float(x.at(it)) for x in (lr_s, wd_s, mom_s, t_s, last_s)) for it in range(cfg["steps"])]


def param_groups(model, decay, patch_mult):
    """get_params_groups_with_decay + fuse_params_groups (+ foreach) for one student module, with optim_ref's rule
    (get_vit_lr_decay_rate's layer ids; n_blocks = len(model.blocks), 0 for a head)."""
    n_blocks = optim_ref.module_n_blocks(model)
    fused = {}
    for name, p in model.named_parameters():
        _, lr_mult, wd_mult, last = optim_ref.rule(name, n_blocks, decay, patch_mult)
        key = "lr_multiplier%s_wd_multiplier%s_is_last_layer%s_" % (lr_mult, wd_mult, last)
        g = fused.setdefault(key, {"params": [], "lr_multiplier": lr_mult, "wd_multiplier": wd_mult,
                                   "is_last_layer": last, "foreach": True})
        g["params"].append(p)
    return list(fused.values())


# ---- the steps --------------------------------------------------------------------------------------------

def run(cfg, init, steps, dtype):
    """The whole training run in `dtype`; returns a dict of numpy results."""
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)  # only the heads' constructors draw (then overwritten): fixed anyway
    student = build_modules(cfg).to(dtype)
    teacher = build_modules(cfg).to(dtype)
    with torch.no_grad():
        for k in student:
            for n, p in student[k].named_parameters():
                p.copy_(torch.from_numpy(init[k + "." + n]).to(dtype))
            teacher[k].load_state_dict(student[k].state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    teacher.eval()
    student.train()
    distill = "distill" in cfg
    target, t_separate = teacher, cfg["ibot"]["separate"]  # the network that gives the targets
    if distill:  # the frozen teacher: its own modules, never updated
        target = build_modules(cfg["distill"]).to(dtype)
        with torch.no_grad():
            for k in target:
                for n, p in target[k].named_parameters():
                    p.copy_(torch.from_numpy(init["teacher." + k + "." + n]).to(dtype))
                    p.requires_grad = False
        target.eval()
        t_separate = cfg["distill"]["ibot"]["separate"]

    separate = cfg["ibot"]["separate"]
    n_local, n_global = cfg["n_local"], 2
    K, K_ibot = cfg["dino"]["k"], cfg["ibot"]["k"]
    dino_loss = loss_ref.DINOLoss(K, cfg["student_temp"], cfg["center_momentum"])
    ibot_patch_loss = loss_ref.iBOTPatchLoss(K_ibot, cfg["student_temp"], cfg["center_momentum"])
    koleo = loss_ref.KoLeoLoss()
    w_dino, w_ibot = cfg["dino"]["loss_weight"], cfg["ibot"]["loss_weight"]
    w_koleo = cfg["dino"]["koleo_loss_weight"]
    o = cfg["optim"]

    groups = []
    for k in student:  # get_params_groups: get_maybe_fused_params_for_submodel per student module
        groups += param_groups(student[k], o["layerwise_decay"], o["patch_embed_lr_mult"])
    opt = torch.optim.AdamW(groups, betas=(o["beta1"], o["beta2"]), eps=o["eps"])

    res = {"terms": [], "norms": [], "sched": schedules(cfg)}
    for it, inp in enumerate(steps):
        lr, wd, mom, teacher_temp, last_lr = res["sched"][it]
        for g in opt.param_groups:  # apply_optim_scheduler
            g["weight_decay"] = wd * g["wd_multiplier"]
            g["lr"] = (last_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        opt.zero_grad(set_to_none=True)

        global_crops = torch.from_numpy(inp["global"]).to(dtype)
        local_crops = torch.from_numpy(inp["local"]).to(dtype)
        masks = torch.from_numpy(inp["masks"] > 0.5)
        if distill:  # no masking: iBOT on every patch token of the global crops
            masks = torch.ones_like(masks)
        mask_indices_list = masks.flatten().nonzero().flatten()
        n_masked_patches = mask_indices_list.shape[0]
        masks_weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks].to(dtype)
        n_local_terms = max(n_local * n_global, 1)
        n_global_terms = (n_global - 1) * n_global

        # get_teacher_output
        with torch.no_grad():
            tout = target["backbone"].forward_features(global_crops, None)
            tc = tout["x_norm_clstoken"].chunk(n_global)
            t_cls = torch.cat((tc[1], tc[0]))
            t_masked = tout["x_norm_patchtokens"].flatten(0, 1)[mask_indices_list]
            n_cls = t_cls.shape[0]
            if not t_separate:
                after = target["dino_head"](torch.cat((t_cls, t_masked)))
                t_cls_after, t_patch_after = after[:n_cls], after[n_cls:n_cls + n_masked_patches]
            else:
                t_cls_after = target["dino_head"](t_cls)
                t_patch_after = target["ibot_head"](t_masked)
            if cfg["centering"] == "centering":
                t_dino = dino_loss.softmax_center_teacher(t_cls_after, teacher_temp).view(n_global, -1, K)
                dino_loss.update_center(t_cls_after)
                m = t_patch_after.unsqueeze(0)
                t_ibot = ibot_patch_loss.softmax_center_teacher(m[:, :n_masked_patches], teacher_temp).squeeze(0)
                ibot_patch_loss.update_center(m[:n_masked_patches])
            else:
                t_dino = dino_loss.sinkhorn_knopp_teacher(t_cls_after, teacher_temp).view(n_global, -1, K)
                t_ibot = ibot_patch_loss.sinkhorn_knopp_teacher(t_patch_after, teacher_temp,
                                                                n_masked_patches_tensor=n_masked_patches)

        # the student
        sg = student["backbone"].forward_features(global_crops, None if distill else masks)
        sl = student["backbone"].forward_features(local_crops, None)
        g_cls, l_cls = sg["x_norm_clstoken"], sl["x_norm_clstoken"]
        s_masked = sg["x_norm_patchtokens"].flatten(0, 1)[mask_indices_list]
        inputs = [l_cls, g_cls] + ([] if separate else [s_masked])
        outs = student["dino_head"](torch.cat(inputs)).split([x.shape[0] for x in inputs])
        s_local, s_global = outs[0], outs[1]
        s_patch = student["ibot_head"](s_masked) if separate else outs[2]

        loss_accumulator = 0
        dino_local = dino_loss.forward(s_local.chunk(n_local), t_dino) / (n_global_terms + n_local_terms)
        loss_accumulator += w_dino * dino_local
        loss_scales = 2
        dino_global = (dino_loss.forward([s_global], [t_dino.flatten(0, 1)]) * loss_scales /
                       (n_global_terms + n_local_terms))
        loss_accumulator += w_dino * dino_global
        koleo_loss = w_koleo * sum(koleo(p) for p in g_cls.chunk(2))
        loss_accumulator += koleo_loss
        ibot_loss = ibot_patch_loss.forward_masked(s_patch, t_ibot, student_masks_flat=masks,
                                                   n_masked_patches=n_masked_patches,
                                                   masks_weight=masks_weight) * loss_scales * (1.0 / n_global)
        loss_accumulator += w_ibot * ibot_loss
        loss_accumulator.backward()
        for k in student:  # the distilled student's unused mask_token: optim.h steps every tensor, torch would skip
            for p in student[k].parameters():  # one without .grad, so it gets a zero gradient (decayed like C's)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        res["terms"].append([("dino_local_crops_loss", dino_local.item()),
                             ("dino_global_crops_loss", dino_global.item()),
                             ("koleo_loss", (koleo_loss / loss_scales).item()),
                             ("ibot_loss", (ibot_loss / 2).item()),
                             ("total", loss_accumulator.item())])
        if it == 0:
            res["grads0"] = {k + "." + n: p.grad.detach().numpy().copy()
                             for k in student for n, p in student[k].named_parameters()}
        res["norms"].append([(k, float(nn.utils.clip_grad_norm_(student[k].parameters(), o["clip_grad"])))
                             for k in student])
        opt.step()
        with torch.no_grad():  # update_teacher
            s_list = [p for k in student for p in student[k].parameters()]
            t_list = [p for k in student for p in teacher[k].parameters()]
            torch._foreach_mul_(t_list, mom)
            torch._foreach_add_(t_list, s_list, alpha=1 - mom)

    dino_loss.apply_center_update()
    ibot_patch_loss.apply_center_update()
    final = {}
    for k in student:
        for n, p in student[k].named_parameters():
            final["student." + k + "." + n] = p.detach().numpy().copy()
        for n, p in teacher[k].named_parameters():
            final["teacher." + k + "." + n] = p.detach().numpy().copy()
    final["dino_center"] = dino_loss.center.reshape(-1).numpy().copy()
    final["ibot_center"] = ibot_patch_loss.center.reshape(-1).numpy().copy()
    if distill:  # the frozen teacher must be where it started
        for k in target:
            for n, p in target[k].named_parameters():
                assert np.array_equal(p.detach().numpy(), init["teacher." + k + "." + n].astype(p.numpy().dtype))
    res["final"] = final
    torch.set_default_dtype(torch.float64)
    return res


# ---- commands ---------------------------------------------------------------------------------------------

def gen_case(root, name, cfg, seed):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    init, steps = make_inputs(cfg, seed)
    res = run(cfg, init, steps, torch.float64)

    # the fixture is only useful if it exercises everything
    for n, g in res["grads0"].items():
        if "distill" in cfg and n == "backbone.mask_token":
            assert np.abs(g).max() == 0.0, f"{name}: the mask token has a gradient without masking"
            continue
        assert np.abs(g).max() > 0.0, f"{name}: {n} has no gradient at step 0"
    clipped = [(i, k) for i, row in enumerate(res["norms"]) for k, v in row if v > cfg["optim"]["clip_grad"]]
    if name == "shared":
        assert clipped, f"{name}: clipping never active"
    assert res["sched"][0][4] == 0.0 and res["sched"][1][4] == 0.0 and res["sched"][2][4] > 0.0
    for st in steps:
        m = st["masks"]
        assert (m.sum(1) > 0).sum() == int(m.shape[0] * 0.5)

    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    names = [n for n, _ in param_names(cfg)]
    write_st(os.path.join(d, "init.safetensors"), [(n, init[n]) for n in names])
    if "distill" in cfg:
        write_st(os.path.join(d, "distill_teacher.safetensors"),
                 [("teacher." + n, init["teacher." + n]) for n, _ in param_names(cfg["distill"])])
    for i, st in enumerate(steps):
        write_st(os.path.join(d, "step%d.safetensors" % i), [(k, st[k]) for k in ("global", "local", "masks")])
        with open(os.path.join(d, "step%d_sched.txt" % i), "w") as f:
            f.write(" ".join("%.17g" % x for x in res["sched"][i]) + "\n")
        write_lines(os.path.join(d, "step%d_terms.txt" % i), res["terms"][i])
        write_lines(os.path.join(d, "step%d_norms.txt" % i), res["norms"][i])
    write_st(os.path.join(d, "step0_grads.safetensors"), [(n, res["grads0"][n]) for n in names])
    fin = res["final"]
    write_st(os.path.join(d, "final.safetensors"),
             [("student." + n, fin["student." + n]) for n in names] +
             [("teacher." + n, fin["teacher." + n]) for n in names] +
             [("dino_center", fin["dino_center"]), ("ibot_center", fin["ibot_center"])])
    norms = " ".join("%s=%s" % (k, "/".join("%.3g" % r[j][1] for r in res["norms"]))
                     for j, (k, _) in enumerate(res["norms"][0]))
    print(f"{name}: {len(names)} tensors, masked per step "
          f"{'/'.join(str(int(s['masks'].sum())) for s in steps)}, total "
          f"{'/'.join('%.4f' % t[-1][1] for t in res['terms'])}, grad norms {norms} (clip "
          f"{cfg['optim']['clip_grad']}), clipped {len(clipped)}")


def check_case(root, name):
    d = os.path.join(root, name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    init = read_safetensors(os.path.join(d, "init.safetensors"))
    if "distill" in cfg:
        init.update(read_safetensors(os.path.join(d, "distill_teacher.safetensors")))
    steps = [read_safetensors(os.path.join(d, "step%d.safetensors" % i)) for i in range(cfg["steps"])]
    res = run(cfg, init, steps, torch.float32)
    bad = []
    w_terms = w_grads = w_final = w_norms = 0.0
    for i in range(cfg["steps"]):
        want = read_lines(os.path.join(d, "step%d_terms.txt" % i))
        for k, v in res["terms"][i]:
            e = abs(v - want[k]) / max(abs(want[k]), 1e-30)
            w_terms = max(w_terms, e)
            if e > TOL_TERMS:
                bad.append(f"step {i} {k}: {v!r} vs {want[k]!r} ({e:.2e})")
        want = read_lines(os.path.join(d, "step%d_norms.txt" % i))
        for k, v in res["norms"][i]:
            w_norms = max(w_norms, abs(v - want[k]) / want[k])
        sched = [float(x) for x in open(os.path.join(d, "step%d_sched.txt" % i)).read().split()]
        assert sched == list(res["sched"][i]), (name, i, sched, res["sched"][i])
    g = read_safetensors(os.path.join(d, "step0_grads.safetensors"))
    for n, v in res["grads0"].items():
        e = rel_err(v, g[n])
        w_grads = max(w_grads, e)
        if e > TOL_GRADS:
            bad.append(f"step-0 gradient {n}: {e:.2e}")
    fin = read_safetensors(os.path.join(d, "final.safetensors"))
    assert set(fin) == set(res["final"]), name
    worst_name = ""
    key_bias = 0.0
    for n, v in res["final"].items():
        want = fin[n]
        if n.endswith(".attn.qkv.bias"):  # the key third is rounding noise through AdamW (see the docstring)
            D = want.shape[0] // 3
            key_bias = max(key_bias, float(np.abs(v[D:2 * D] - want[D:2 * D]).max()))
            v, want = np.concatenate((v[:D], v[2 * D:])), np.concatenate((want[:D], want[2 * D:]))
        e = rel_err(v, want)
        if e > w_final:
            w_final, worst_name = e, n
        if e > TOL_FINAL:
            bad.append(f"final {n}: {e:.2e}")
    print(f"{name}: float32 vs float64: terms {w_terms:.1e} (tol {TOL_TERMS:g}), step-0 grads {w_grads:.1e} "
          f"(tol {TOL_GRADS:g}), grad norms {w_norms:.1e}, final params {w_final:.1e} (tol {TOL_FINAL:g}, "
          f"worst {worst_name}; key biases, not compared: max abs {key_bias:.1e}) -> {'FAIL' if bad else 'ok'}")
    for b in bad:
        print("  " + b)
    return not bad


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("gen", "check"):
        print(__doc__)
        sys.exit(2)
    root = sys.argv[2]
    if sys.argv[1] == "gen":
        os.makedirs(root, exist_ok=True)
        cfgs = case_configs()
        for i, (name, cfg) in enumerate(cfgs.items()):
            gen_case(root, name, cfg, 1300 + i)
        with open(os.path.join(root, "cases.txt"), "w") as f:
            f.write("".join(n + "\n" for n in cfgs))
    else:
        names = [l.strip() for l in open(os.path.join(root, "cases.txt")) if l.strip()]
        ok = [check_case(root, n) for n in names]
        sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
