#!/usr/bin/python3
"""The PyTorch side of a short-run comparison for lvd-train: the same recipe, run with the official definitions
(tests/unit/train/step_ref.py's whole training step: DinoVisionTransformer, DINOHead, the DINO, iBOT and KoLeo
losses, per-module clipping, AdamW over DINOv2's parameter groups, the EMA teacher, build_schedulers) on
torchvision's DataAugmentationDINO crops of Fashion-MNIST pictures, from the same initial weights as an lvd-train
run. Its loss curve is what the fmnist-pico preset's curve in RUN/metrics.jsonl should look like.

  train_run_torch.py STATE [ITERS]

STATE: the training_state.safetensors of `lvd-train --config schemas/train/fmnist-pico.yaml --max-iter 1` (the
warm-up's lr is 0 at iteration 0, so the state after it holds the initial weights). ITERS: iterations (200), at
the preset's OFFICIAL_EPOCH_LENGTH of 20. Prints the loss terms every ITERS / 10 iterations. Random streams are
torch's and Python's, so the curve matches lvd-train's in shape, not in value.
"""
import json
import math
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for d in ("tests/unit/train", "tests/vit", "scripts"):
    sys.path.insert(0, os.path.join(ROOT, d))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

import fixtures  # noqa: E402
import step_ref  # noqa: E402

torch.set_num_threads(2)
def rd(p):
    b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); h.pop('__metadata__',None); d=b[8+n:]
    return {k:np.frombuffer(d[v['data_offsets'][0]:v['data_offsets'][1]],'<f4').reshape(v['shape']).copy() for k,v in h.items()}
st = rd(sys.argv[1])
init = {k[len('student.'):]: v for k, v in st.items() if k.startswith('student.')}
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 200
L = 20; epochs = iters // L
cfg = {"vit": {"patch": 14, "pos_grid": 4, "dim": 64, "depth": 4, "heads": 4, "ffn": "mlp", "ffn_hidden": 256,
               "n_reg": 0, "pos_mode": "offset", "layerscale": 1e-5},
       "batch": 16, "n_local": 4, "global_size": 56, "local_size": 28,
       "dino": {"k": 256, "bottleneck": 32, "hidden": 128, "nlayers": 3, "loss_weight": 1.0, "koleo_loss_weight": 0.1},
       "ibot": {"separate": False, "k": 256, "bottleneck": 32, "hidden": 128, "nlayers": 3, "loss_weight": 1.0},
       "centering": "centering", "student_temp": 0.1, "center_momentum": 0.9,
       "sched": {"OFFICIAL_EPOCH_LENGTH": L, "epochs": epochs, "batch_size": 16, "base_lr": 0.004,
                 "lr": 0.004 * math.sqrt(16 / 1024), "min_lr": 1e-6, "warmup_epochs": 1, "weight_decay": 0.04,
                 "weight_decay_end": 0.4, "momentum_teacher": 0.992, "final_momentum_teacher": 1.0,
                 "warmup_teacher_temp": 0.04, "teacher_temp": 0.07, "warmup_teacher_temp_epochs": 2,
                 "freeze_last_layer_epochs": 1},
       "optim": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "layerwise_decay": 0.9, "patch_embed_lr_mult": 0.2,
                 "clip_grad": 3.0}, "steps": iters}
x, y = fixtures.fashion('train')
idx = np.concatenate([np.flatnonzero(y == c)[:200] for c in range(10)])
imgs = [Image.fromarray(x[i], 'L').convert('RGB').resize((56, 56), Image.BICUBIC) for i in idx]
cj = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)
norm = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
flipjit = T.Compose([T.RandomHorizontalFlip(0.5), cj, T.RandomGrayscale(0.2)])
g1 = T.Compose([T.RandomResizedCrop(56, (0.32, 1.0), interpolation=T.InterpolationMode.BICUBIC), flipjit,
                T.GaussianBlur(9, (0.1, 2.0)), norm])
g2 = T.Compose([T.RandomResizedCrop(56, (0.32, 1.0), interpolation=T.InterpolationMode.BICUBIC), flipjit,
                T.RandomApply([T.GaussianBlur(9, (0.1, 2.0))], p=0.1), T.RandomSolarize(128, p=0.2), norm])
lo = T.Compose([T.RandomResizedCrop(28, (0.05, 0.32), interpolation=T.InterpolationMode.BICUBIC), flipjit,
                T.RandomApply([T.GaussianBlur(9, (0.1, 2.0))], p=0.5), norm])
r = random.Random(0); order = []
def batches():
    for it in range(iters):
        global order
        if len(order) < 16:
            order += random.Random(it).sample(range(len(imgs)), len(imgs))
        b, order = order[:16], order[16:]
        c1 = [g1(imgs[i]) for i in b]; c2 = [g2(imgs[i]) for i in b]
        ls = [[lo(imgs[i]) for i in b] for _ in range(4)]
        yield {"global": torch.stack(c1 + c2).numpy(), "local": torch.stack([t for l in ls for t in l]).numpy(),
               "masks": step_ref.collate_masks(32, 4, r)}
steps = list(batches())
res = step_ref.run(cfg, init, steps, torch.float32)
for i in range(0, iters, max(1, iters // 10)):
    t = dict(res["terms"][i]); print(i, " ".join("%s %.3f" % (k[:10], v) for k, v in t.items()))
