#!/usr/bin/python3
"""Statistical reference for tests/unit/train/test_masking.c: a port of DINOv2's MaskingGenerator
(dinov2/data/masking.py) and of the masking half of collate_data_and_cast (dinov2/data/collate.py), written
from their definitions with Python's `random` and torch.linspace, compared with the masks lvd drew.

lvd's generator uses its own random stream, so the comparison is of distributions: every statistic's means
must agree within Z standard errors (both sides' samples are independent), variances within a ratio.

  masking_ref.py check DIR     reads DIR/cases.txt (written by the C test) and the .u8 / .i32 files it names;
                               exits 1 naming every statistic that disagrees
  masking_ref.py power         the same statistics between this port and a subtly wrong one (floor instead of
                               round for the block sides) must disagree: proves the check can fail

cases.txt lines:
  gen   H W MIN MAXP MINASPECT TARGET K FILE     K masks of mask_generate(TARGET), K*H*W bytes
  block H W MIN MAXP MINASPECT BUDGET K FILE     K single mask_add_block calls on an empty grid
  batch H W MIN MAXP MINASPECT B RMIN RMAX PROB K FILE   K batches: per batch B targets then B counts, int32 LE
"""
import math
import random
import sys

import numpy as np
import torch

Z = 5.0          # standard errors allowed between two independent means
VAR_RATIO = 1.25  # allowed ratio between two variances


class RefGenerator:
    """MaskingGenerator's semantics: block area uniform in [min, budget], log-uniform aspect, 10 tries."""

    def __init__(self, h, w, min_patches, max_patches, min_aspect, rounding=round):
        self.h, self.w = h, w
        self.min_patches = min_patches
        self.max_patches = max_patches
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.rounding = rounding

    def add_block(self, mask, budget):
        added = 0
        for _try in range(10):
            area = random.uniform(self.min_patches, budget)
            aspect = math.exp(random.uniform(*self.log_aspect))
            bh = int(self.rounding(math.sqrt(area * aspect)))
            bw = int(self.rounding(math.sqrt(area / aspect)))
            if bw < self.w and bh < self.h:
                top = random.randint(0, self.h - bh)
                left = random.randint(0, self.w - bw)
                window = mask[top:top + bh, left:left + bw]
                fresh = bh * bw - int(window.sum())
                if 0 < fresh <= budget:
                    added += int((~window).sum())
                    window[...] = True
                if added > 0:
                    break
        return added

    def generate(self, target):
        mask = np.zeros((self.h, self.w), dtype=bool)
        count = 0
        while count < target:
            added = self.add_block(mask, min(target - count, self.max_patches))
            if added == 0:
                break
            count += added
        return mask


def ref_batch(gen, n_images, rmin, rmax, prob):
    """collate_data_and_cast's masks: stratified targets for the first int(B * p) images, then a shuffle."""
    n_tok = gen.h * gen.w
    n_masked = int(n_images * prob)
    probs = torch.linspace(rmin, rmax, n_masked + 1)
    items = []
    for i in range(n_images):
        if i < n_masked:
            target = int(n_tok * random.uniform(probs[i], probs[i + 1]))
        else:
            target = 0
        items.append((target, int(gen.generate(target).sum())))
    random.shuffle(items)
    return items


# ---------------------------------------------------------------------------------------------------- stats

def components(mask):
    """4-connected components of a boolean grid."""
    seen = np.zeros_like(mask)
    h, w = mask.shape
    n = 0
    for i in range(h):
        for j in range(w):
            if mask[i, j] and not seen[i, j]:
                n += 1
                stack = [(i, j)]
                seen[i, j] = True
                while stack:
                    a, b = stack.pop()
                    for c, d in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                        if 0 <= c < h and 0 <= d < w and mask[c, d] and not seen[c, d]:
                            seen[c, d] = True
                            stack.append((c, d))
    return n


def mask_stats(masks):
    """name -> per-sample values (arrays of equal length) of a list of (H, W) masks."""
    out = {"count": [], "components": [], "rows": [], "cols": [], "row_centre": [], "col_centre": []}
    for m in masks:
        out["count"].append(m.sum())
        out["components"].append(components(m))
        rows = np.nonzero(m.any(axis=1))[0]
        cols = np.nonzero(m.any(axis=0))[0]
        out["rows"].append(rows[-1] - rows[0] + 1 if len(rows) else 0)
        out["cols"].append(cols[-1] - cols[0] + 1 if len(cols) else 0)
        ii, jj = np.nonzero(m)
        out["row_centre"].append(ii.mean() if len(ii) else -1.0)
        out["col_centre"].append(jj.mean() if len(jj) else -1.0)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def block_stats(masks):
    """Single blocks on an empty grid: each mask is one rectangle (or empty when every try failed)."""
    out = {"failed": [], "bh": [], "bw": [], "area": [], "top": [], "left": [], "small": []}
    for m in masks:
        rows = np.nonzero(m.any(axis=1))[0]
        cols = np.nonzero(m.any(axis=0))[0]
        if len(rows) == 0:
            out["failed"].append(1.0)
            continue
        out["failed"].append(0.0)
        bh, bw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        out["bh"].append(bh)
        out["bw"].append(bw)
        out["area"].append(m.sum())
        out["top"].append(rows[0])
        out["left"].append(cols[0])
        out["small"].append(1.0 if m.sum() < 4 else 0.0)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def batch_stats(items_per_batch):
    """Per batch: sorted targets (stratum k = k-th smallest nonzero target), masked count, and which slots
    are masked (the shuffle spreads them)."""
    out = {}
    for items in items_per_batch:
        targets = [t for t, _ in items]
        counts = [c for _, c in items]
        nz = sorted(t for t in targets if t > 0)
        for k, t in enumerate(nz):
            out.setdefault("stratum%d" % k, []).append(t)
        out.setdefault("total_count", []).append(sum(counts))
        out.setdefault("slot0_masked", []).append(1.0 if targets[0] > 0 else 0.0)
        out.setdefault("slot_last_masked", []).append(1.0 if targets[-1] > 0 else 0.0)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def compare(tag, a, b):
    """Messages for every statistic whose means or variances disagree between sample dicts a and b."""
    bad = []
    for k in sorted(a):
        x, y = a[k], b.get(k, np.zeros(0))
        if len(x) < 2 or len(y) < 2:
            if len(x) != len(y):
                bad.append("%s %s: %d vs %d samples" % (tag, k, len(x), len(y)))
            continue
        se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
        diff = abs(x.mean() - y.mean())
        if diff > Z * se + 1e-9:
            bad.append("%s %s: mean %.4f vs %.4f (%.1f standard errors)" % (tag, k, x.mean(), y.mean(),
                                                                              diff / max(se, 1e-300)))
        # a 0/1 statistic's variance follows from its mean (and is noisy when rare): means only
        binary = np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()
        vx, vy = x.var(ddof=1), y.var(ddof=1)
        if not binary and max(vx, vy) > 1e-9 and (min(vx, vy) == 0 or max(vx, vy) / min(vx, vy) > VAR_RATIO):
            bad.append("%s %s: variance %.4f vs %.4f" % (tag, k, vx, vy))
    return bad


# ---------------------------------------------------------------------------------------------------- modes

def check(d):
    random.seed(20240613)
    bad = []
    ncases = 0
    for line in open(d + "/cases.txt"):
        f = line.split()
        if not f:
            continue
        kind, h, w, mn = f[0], int(f[1]), int(f[2]), int(f[3])
        maxp, asp = float(f[4]), float(f[5])
        gen = RefGenerator(h, w, mn, maxp, asp)
        path = d + "/" + f[-1]
        if kind == "gen":
            target, k = int(f[6]), int(f[7])
            c = np.fromfile(path, dtype=np.uint8).reshape(k, h, w).astype(bool)
            p = [gen.generate(target) for _ in range(k)]
            tag = "gen %dx%d target %d" % (h, w, target)
            bad += compare(tag, mask_stats(list(c)), mask_stats(p))
        elif kind == "block":
            budget, k = float(f[6]), int(f[7])
            c = np.fromfile(path, dtype=np.uint8).reshape(k, h, w).astype(bool)
            p = []
            for _ in range(k):
                m = np.zeros((h, w), dtype=bool)
                gen.add_block(m, budget)
                p.append(m)
            tag = "block %dx%d budget %g" % (h, w, budget)
            bad += compare(tag, block_stats(list(c)), block_stats(p))
        elif kind == "batch":
            nimg, rmin, rmax, prob, k = int(f[6]), float(f[7]), float(f[8]), float(f[9]), int(f[10])
            raw = np.fromfile(path, dtype="<i4").reshape(k, 2, nimg)
            c = [list(zip(raw[i, 0].tolist(), raw[i, 1].tolist())) for i in range(k)]
            p = [ref_batch(gen, nimg, rmin, rmax, prob) for _ in range(k)]
            tag = "batch %dx%d B %d" % (h, w, nimg)
            bad += compare(tag, batch_stats(c), batch_stats(p))
        else:
            bad.append("unknown case kind " + kind)
        ncases += 1
    if ncases == 0:
        bad.append("no cases in cases.txt")
    for b in bad:
        print(b)
    return 1 if bad else 0


def power():
    """The statistics must tell the official generator from one that floors the block sides."""
    random.seed(7)
    k = 3000
    good = RefGenerator(16, 16, 4, 128.0, 0.3)
    wrong = RefGenerator(16, 16, 4, 128.0, 0.3, rounding=math.floor)
    bad = compare("power gen", mask_stats([good.generate(60) for _ in range(k)]),
                  mask_stats([wrong.generate(60) for _ in range(k)]))
    if not bad:
        print("power: a generator flooring the block sides passed the comparison")
        return 1
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "power":
        sys.exit(power())
    print(__doc__)
    sys.exit(2)


if __name__ == "__main__":
    main()
