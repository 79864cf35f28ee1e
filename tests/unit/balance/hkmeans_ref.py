#!/usr/bin/python3
"""Reference results for tests/unit/balance/test_hkmeans.c, computed with numpy from the method's description
(issue 14, curate/balance/hkmeans.h, sampler.h, common/kmeans.h KMEANS_GREEDY_DRAWS), never with lvd code.

  hkmeans_ref.py gen DIR     writes the cases below into DIR (little-endian raw arrays)

Cases:
  greedy_*: greedy k-means++ (the specified splitmix64 draws) on x (n, d): the chosen rows (k) int32, then
      the centroids after T Lloyd updates (squared L2, float64 means, an empty cluster keeps its centroid) and
      the final float64 assignment.
  tree_<name>_*: hierarchical k-means with resampling / splits on x, per level the centroids, the points'
      labels and squared distances; then the balanced sample (copies per point) and per level quotas.
  quality_*: 20 planted concepts with frequencies skewed 20:1, sub-structure inside each; x and the concept of
      each point.
Case parameters are in CASES below; the C test holds the same table.
"""
import math
import sys

import numpy as np

M64 = (1 << 64) - 1


class SplitMix:
    def __init__(self, seed, stream):
        self.s = (seed * 0x2545F4914F6CDD1D + stream * 0x9E3779B97F4A7C15) & M64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def unit(self):
        return (self.next() >> 11) * 2.0**-53

    def below(self, m):
        return min(int(self.unit() * m), m - 1)

    def choose(self, a, t):
        """Partial Fisher-Yates: the first t entries of a (a list, modified) become the choice."""
        s = len(a)
        for j in range(t):
            q = j + self.below(s - j)
            a[j], a[q] = a[q], a[j]
        return a[:t]


def sqdist(x, c):
    """float64 (n,) squared distances of rows of x to the vector c."""
    diff = x.astype(np.float64) - c.astype(np.float64)
    return (diff * diff).sum(1)


def sqdist_all(x, c):
    x = x.astype(np.float64)
    c = c.astype(np.float64)
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(2)


def greedy_init(x, k, seed):
    n = len(x)
    r = SplitMix(seed, 2)
    L = 2 + int(math.floor(math.log(k)))
    pick = min(int(r.unit() * n), n - 1)
    chosen = [pick]
    D = sqdist(x, x[pick])
    for _ in range(1, k):
        C = np.cumsum(D)
        pot = C[-1]
        if not pot > 0:
            taken = set(chosen)
            pick = next(i for i in range(n) if i not in taken)
            D = np.minimum(D, sqdist(x, x[pick]))
            chosen.append(pick)
            continue
        cands = [min(int(np.searchsorted(C, r.unit() * pot, side="right")), n - 1) for _ in range(L)]
        mins = [np.minimum(D, sqdist(x, x[c])) for c in cands]
        pots = [m.sum() for m in mins]
        b = int(np.argmin(pots))
        chosen.append(cands[b])
        D = mins[b]
    return np.array(chosen)


def assign(x, c):
    d = sqdist_all(x, c)
    lab = d.argmin(1)
    return lab, d[np.arange(len(x)), lab]


def kmeans(x, k, iters, seed):
    """One run: k = min(k, n), greedy init, iters updates (empty keeps), then the final assignment."""
    k = min(k, len(x))
    c = x[greedy_init(x, k, seed)].astype(np.float32)
    for _ in range(iters):
        lab, _ = assign(x, c)
        for j in range(k):
            m = lab == j
            if m.any():
                c[j] = x[m].astype(np.float64).mean(0).astype(np.float32)
    return c


def run_seed(seed, level, run, split):
    return (seed + (level << 40) + (run << 20) + split) & M64


def cluster_level(items, lv, level, iters, seed):
    """lv: dict k, splits, steps, size, strategy. Returns centroids, labels of the items."""
    c = kmeans(items, lv["k"], iters, run_seed(seed, level, 0, 0))
    lab, _ = assign(items, c)
    if lv["size"] > 1:
        for step in range(1, lv["steps"] + 1):
            s = run_seed(seed, level, step, 0)
            r = SplitMix(s, 3)
            pick = []
            for ci in range(len(c)):
                mem = np.where(lab == ci)[0]
                t = min(len(mem), lv["size"])
                if lv["strategy"] == "r":
                    pick += r.choose(list(mem), t)
                else:
                    dd = sqdist(items[mem], c[ci])
                    pick += list(mem[np.lexsort((mem, dd))][:t])
            pick = np.sort(np.array(pick, dtype=np.int64))
            c = kmeans(items[pick], lv["k"], iters, s)
            lab, _ = assign(items, c)
    if lv["splits"] > 1:
        newc, newlab = [], np.zeros(len(items), dtype=np.int64)
        for ci in range(len(c)):
            mem = np.where(lab == ci)[0]
            if len(mem) == 0:
                continue
            sc = kmeans(items[mem], lv["splits"], iters, run_seed(seed, level, 0, 1 + ci))
            sl, _ = assign(items[mem], sc)
            ids = {}
            for j in range(len(sc)):
                if (sl == j).any():
                    ids[j] = len(newc)
                    newc.append(sc[j])
            newlab[mem] = [ids[j] for j in sl]
        c, lab = np.array(newc, dtype=np.float32), newlab
    return c, lab


def build(x, levels, iters, seed):
    """Returns per level (centroids, parent or None), labels (L, n), dist (L, n) float32."""
    out, labels, dists = [], [], []
    items = x
    for li, lv in enumerate(levels):
        c, lab = cluster_level(items, lv, li + 1, iters, seed)
        pl = lab if li == 0 else lab[labels[-1]]
        labels.append(pl)
        dists.append(((x.astype(np.float64) - c[pl].astype(np.float64)) ** 2).sum(1).astype(np.float32))
        out.append((c, None if li == 0 else lab))
        items = c
    return out, np.array(labels), np.array(dists)


def water(caps, target, r):
    caps = np.asarray(caps, dtype=np.int64)
    if caps.sum() <= target:
        return caps.copy()
    lo, hi = 0, int(caps.max())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if np.minimum(caps, mid).sum() <= target:
            lo = mid
        else:
            hi = mid
    q = np.minimum(caps, lo)
    rem = int(target - q.sum())
    if rem > 0:
        cand = list(np.where(caps > lo)[0])
        for i in r.choose(cand, rem):
            q[i] += 1
    return q


def sample(tree, labels, dists, target, mult, strategy, seed):
    L, n = labels.shape
    r = SplitMix(seed, 4)
    copies = np.zeros(n, dtype=np.int64)
    sizes = [np.bincount(labels[l], minlength=len(tree[l][0])) for l in range(L)]
    quotas = [np.zeros(len(tree[l][0]), dtype=np.int64) for l in range(L)]

    def descend(l, c, q):
        if l == 0:
            mem = np.where(labels[0] == c)[0]
            s = len(mem)
            if s == 0 or q == 0:
                return
            reps, rem = divmod(int(q), s)
            copies[mem] = reps
            if rem:
                if strategy == "r":
                    chosen = r.choose(list(mem), rem)
                else:
                    chosen = mem[np.lexsort((mem, dists[0][mem]))][:rem]
                copies[np.array(chosen)] += 1
            return
        ch = np.where(tree[l][1] == c)[0]
        qq = water(sizes[l - 1][ch] * mult, q, r)
        quotas[l - 1][ch] = qq
        for i, cc in enumerate(ch):
            descend(l - 1, cc, qq[i])

    quotas[L - 1][:] = water(sizes[L - 1] * mult, target, r)
    for c in range(len(tree[L - 1][0])):
        descend(L - 1, c, quotas[L - 1][c])
    return copies, quotas


# name: n, d, seed, n_iters, levels (k, splits, steps, sample_size, strategy), target, multiplier, sampling
CASES = {
    "c3": (1500, 8, 7, 10, [(40, 1, 3, 5, "c"), (8, 1, 2, 3, "c"), (3, 1, 1, 2, "c")], 700, 2, "c"),
    "r2": (1200, 6, 11, 8, [(30, 1, 2, 6, "r"), (5, 1, 3, 3, "r")], 900, 1, "r"),
    "split": (1000, 5, 3, 6, [(6, 4, 0, 1, "c"), (4, 1, 2, 2, "c")], 1500, 3, "c"),
}


# name: (n, d, k, seed, offset added to every coordinate); test_hkmeans.c repeats it
GREEDY_CASES = {"mid": (6000, 48, 150, 7, 0.0), "far": (2000, 24, 40, 11, 5000.0), "odd": (3000, 37, 60, 5, 0.0)}


def save(d, name, arr, dtype):
    np.ascontiguousarray(arr, dtype=dtype).tofile(f"{d}/{name}")


def blobs(rng, n, d, k):
    cen = rng.standard_normal((k, d)) * 3
    lab = rng.integers(0, k, n)
    return (cen[lab] + rng.standard_normal((n, d))).astype(np.float32)


def gen(d):
    rng = np.random.default_rng(20261203)
    # greedy k-means++ and Lloyd
    n, dim, k, T, seed = 600, 7, 13, 9, 42
    x = blobs(rng, n, dim, 10)
    save(d, "greedy_x.f32", x, "<f4")
    save(d, "greedy_init.i32", greedy_init(x, k, seed), "<i4")
    c = kmeans(x, k, T, seed)
    save(d, "greedy_c.f32", c, "<f4")
    save(d, "greedy_labels.i32", assign(x, c)[0], "<i4")
    # greedy k-means++ where the float32 product alone cannot decide: a larger case with exact duplicates, and
    # one far from the origin (|x|^2 ~ 6e8 against squared distances ~ 50: the float32 product's error is
    # larger than the distances, so every decision falls to the exact float64 distance). Own generator, so
    # that the cases below keep their data.
    g2 = np.random.default_rng(314159)
    for name, (n, dim, k, seed, offset) in GREEDY_CASES.items():
        x = blobs(g2, n, dim, 30)
        x[n - 60:] = x[:60]
        x = (x + np.float32(offset)).astype(np.float32)
        save(d, f"greedy_{name}_x.f32", x, "<f4")
        save(d, f"greedy_{name}_init.i32", greedy_init(x, k, seed), "<i4")
    # trees and samples
    for name, (n, dim, seed, iters, levels, target, mult, strat) in CASES.items():
        x = blobs(rng, n, dim, 25)
        lv = [dict(k=a, splits=b, steps=s, size=z, strategy=t) for a, b, s, z, t in levels]
        tree, labels, dists = build(x, lv, iters, seed)
        save(d, f"tree_{name}_x.f32", x, "<f4")
        for l, (c, parent) in enumerate(tree):
            save(d, f"tree_{name}_c{l}.f32", c, "<f4")
            with open(f"{d}/tree_{name}_k{l}.txt", "w") as f:
                f.write(f"{len(c)}\n")
        save(d, f"tree_{name}_labels.i32", labels, "<i4")
        save(d, f"tree_{name}_dist.f32", dists, "<f4")
        copies, quotas = sample(tree, labels, dists, target, mult, strat, seed)
        save(d, f"tree_{name}_copies.i32", copies, "<i4")
        for l, q in enumerate(quotas):
            save(d, f"tree_{name}_q{l}.i64", q, "<i8")
    # quality: 20 concepts, 20:1 skew, 6 sub-modes each
    nc, dim, per = 20, 32, 6
    freq = 20.0 ** (-np.arange(nc) / (nc - 1))
    counts = np.maximum(1, np.round(freq / freq.sum() * 30000)).astype(int)
    cen = rng.standard_normal((nc, dim))
    cen *= 8.0 / np.linalg.norm(cen, axis=1, keepdims=True)
    xs, ys = [], []
    for i in range(nc):
        sub = cen[i] + rng.standard_normal((per, dim)) * 0.6
        which = rng.integers(0, per, counts[i])
        xs.append(sub[which] + rng.standard_normal((counts[i], dim)) * 0.5)
        ys.append(np.full(counts[i], i))
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys)
    perm = rng.permutation(len(x))
    save(d, "quality_x.f32", x[perm], "<f4")
    save(d, "quality_y.i32", y[perm], "<i4")
    with open(f"{d}/quality_n.txt", "w") as f:
        f.write(f"{len(x)}\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    else:
        sys.exit(__doc__)
