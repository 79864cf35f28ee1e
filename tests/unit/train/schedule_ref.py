#!/usr/bin/python3
"""NumPy reference for tests/unit/train/test_schedule.c: DINOv2's CosineScheduler (dinov2/utils/utils.py) and
build_schedulers (dinov2/train/train.py) written from their definitions, without torch and without lvd code.

  schedule_ref.py DIR   reads DIR/cases.txt, writes DIR/case<i>.f64 (float64 LE) for its i-th line:
    cosine BASE FINAL TOTAL WARMUP START FREEZE N     the scheduler's value at iterations 0 .. N-1
    recipe L EPOCHS BATCH BASE_LR MIN_LR WARMUP_EP WD WD_END MOM MOM_END T_WARM T T_EP FREEZE_EP N
                                                      5 rows (lr, wd, momentum, teacher temp, last-layer lr)
                                                      of N values each
Iterations at or past total_iters give final_value, as __getitem__ does.
"""
import math
import sys

import numpy as np


class Cosine:
    def __init__(self, base_value, final_value, total_iters, warmup_iters=0, start_warmup_value=0, freeze_iters=0):
        self.final_value = final_value
        self.total_iters = total_iters
        frozen = np.zeros((freeze_iters))
        warm = np.linspace(start_warmup_value, base_value, warmup_iters)
        steps = np.arange(total_iters - warmup_iters - freeze_iters)
        cos = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * steps / len(steps)))
        self.table = np.concatenate((frozen, warm, cos))
        assert len(self.table) == total_iters

    def at(self, it):
        return self.final_value if it >= self.total_iters else self.table[it]

    def values(self, n):
        return np.array([self.at(i) for i in range(n)], dtype=np.float64)


def recipe(f):
    L, epochs, batch = int(f[0]), int(f[1]), int(f[2])
    base_lr, min_lr, warm_ep = float(f[3]), float(f[4]), int(f[5])
    wd, wd_end, mom, mom_end = float(f[6]), float(f[7]), float(f[8]), float(f[9])
    t_warm, t, t_ep, freeze_ep, n = float(f[10]), float(f[11]), int(f[12]), int(f[13]), int(f[14])
    lr = base_lr * math.sqrt(batch / 1024.0)  # the sqrt_wrt_1024 scaling rule
    lr_args = dict(base_value=lr, final_value=min_lr, total_iters=epochs * L, warmup_iters=warm_ep * L,
                   start_warmup_value=0)
    lr_s = Cosine(**lr_args)
    wd_s = Cosine(wd, wd_end, epochs * L)
    mom_s = Cosine(mom, mom_end, epochs * L)
    temp_s = Cosine(t, t, t_ep * L, warmup_iters=t_ep * L, start_warmup_value=t_warm)
    last_s = Cosine(**lr_args)
    last_s.table[: freeze_ep * L] = 0
    return np.stack([s.values(n) for s in (lr_s, wd_s, mom_s, temp_s, last_s)])


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    d = sys.argv[1]
    for i, line in enumerate(l for l in open(d + "/cases.txt") if l.strip()):
        f = line.split()
        if f[0] == "cosine":
            base, final, total, warm, start, freeze, n = (float(f[1]), float(f[2]), int(f[3]), int(f[4]),
                                                          float(f[5]), int(f[6]), int(f[7]))
            out = Cosine(base, final, total, warm, start, freeze).values(n)
        elif f[0] == "recipe":
            out = recipe(f[1:])
        else:
            print("unknown case " + f[0])
            sys.exit(1)
        out.astype("<f8").tofile("%s/case%d.f64" % (d, i))


if __name__ == "__main__":
    main()
