#!/usr/bin/python3
"""Reference data and results for tests/unit/common/test_kmeans.c, computed with numpy (never with lvd code).

  kmeans_ref.py gen DIR          writes the cases below into DIR
  kmeans_ref.py npy-check FILE K D RAW
                                 np.load(FILE) must be a (K, D) float32 C-order array equal bit for bit to the
                                 float32 values of RAW

Cases (all files little-endian raw arrays; shapes in DIR/shapes.txt as "NAME n d k"):

  assign_float: x (n, d) and c (k, d) unit-length float32 (ip) / unnormalised (l2); for each metric the
      float64 brute-force label (first index of the best), its score (similarity, or squared L2 distance) and
      the whole float64 score matrix (n, k), so that a near-tie can be told from an error.
  assign_ties: small integers (entries in -2..2): every product and distance is an integer that float32
      holds exactly in any summation order, so labels (exact ties to the lowest index) and scores must be
      exact. k > 1024 so that ties also fall across centroid blocks; duplicated centroids force ties.
  lloyd: one Lloyd iteration from given initial centroids (unit length for ip, scaled rows for l2): the
      float64 assignment, then float64 means (normalised for ip). Rows whose best and second-best centroids are within 1e-3 are dropped, so the
      float32 assignment cannot differ; every cluster is non-empty.
  planted: 10 tight, well-separated clusters on the unit sphere (cosine to the centre ~0.9995, between
      centres ~0 in 32 dimensions), rows shuffled; the planted label of each row.
"""
import sys

import numpy as np


def save(d, name, arr, dtype):
    np.ascontiguousarray(arr, dtype=dtype).tofile(f"{d}/{name}")


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def scores(x, c, metric):
    """float64 (n, k) scores to maximise: similarity for ip, minus squared distance for l2."""
    x = x.astype(np.float64)
    c = c.astype(np.float64)
    if metric == "ip":
        return x @ c.T
    return -((x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * x @ c.T)


def gen(d):
    rng = np.random.default_rng(20260411)
    shapes = []

    # assign_float
    n, dim, k = 3000, 48, 300
    x = rng.standard_normal((n, dim)).astype(np.float32)
    c = rng.standard_normal((k, dim)).astype(np.float32)
    for metric, xs, cs in (("ip", unit(x).astype(np.float32), unit(c).astype(np.float32)), ("l2", x, c)):
        s = scores(xs, cs, metric)
        lab = s.argmax(1)
        save(d, f"assign_float_{metric}_x.f32", xs, "<f4")
        save(d, f"assign_float_{metric}_c.f32", cs, "<f4")
        save(d, f"assign_float_{metric}_labels.i32", lab, "<i4")
        best = s[np.arange(n), lab]
        save(d, f"assign_float_{metric}_scores.f64", best if metric == "ip" else -best, "<f8")
        save(d, f"assign_float_{metric}_matrix.f64", s if metric == "ip" else -s, "<f8")
    shapes.append(("assign_float", n, dim, k))

    # assign_ties: exact integer arithmetic (int64), first index of the best
    n, dim, k = 2000, 16, 1500
    x = rng.integers(-2, 3, (n, dim))
    c = rng.integers(-2, 3, (k, dim))
    c[1100:1200] = c[0:100]   # duplicates in the other centroid block, after the originals
    c[50:60] = c[1300:1310]   # duplicates in the first block, before the originals
    x[:200] = c[rng.integers(0, k, 200)]  # rows equal to a centroid (a duplicated one when it falls in range)
    save(d, "assign_ties_x.f32", x, "<f4")
    save(d, "assign_ties_c.f32", c, "<f4")
    ip = x @ c.T
    l2 = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * ip
    for metric, s in (("ip", ip), ("l2", -l2)):
        lab = s.argmax(1)  # first occurrence: ties to the lowest index
        best = s[np.arange(n), lab]
        ties = (s == best[:, None]).sum(1)
        if (ties > 1).sum() < 100:
            sys.exit("assign_ties: too few exact ties for " + metric)
        save(d, f"assign_ties_{metric}_labels.i32", lab, "<i4")
        save(d, f"assign_ties_{metric}_scores.f64", best if metric == "ip" else -best, "<f8")
    shapes.append(("assign_ties", n, dim, k))

    # lloyd: one iteration from given centroids
    dim, k = 32, 12
    centres = unit(rng.standard_normal((k, dim)))
    x = unit(centres[rng.integers(0, k, 4000)] + 0.35 * rng.standard_normal((4000, dim))).astype(np.float32)
    init = unit(x[rng.choice(len(x), k, replace=False)] + 0.2 * rng.standard_normal((k, dim))).astype(np.float32)
    inits = {"ip": init, "l2": (init * rng.uniform(0.8, 1.2, (k, 1))).astype(np.float32)}  # l2: not unit length
    keep = np.ones(len(x), bool)
    for metric in ("ip", "l2"):
        s = np.sort(scores(x, inits[metric], metric), 1)
        keep &= (s[:, -1] - s[:, -2]) > 1e-3
    x = x[keep]
    n = len(x)
    save(d, "lloyd_x.f32", x, "<f4")
    for metric in ("ip", "l2"):
        save(d, f"lloyd_{metric}_init.f32", inits[metric], "<f4")
        lab = scores(x, inits[metric], metric).argmax(1)
        counts = np.bincount(lab, minlength=k)
        if counts.min() == 0:
            sys.exit("lloyd: an empty cluster in the reference")
        sums = np.zeros((k, dim))
        np.add.at(sums, lab, x.astype(np.float64))
        means = sums / counts[:, None]
        if metric == "ip":
            means = unit(means)
        save(d, f"lloyd_{metric}_expected.f64", means, "<f8")
        save(d, f"lloyd_{metric}_labels.i32", lab, "<i4")
    shapes.append(("lloyd", n, dim, k))

    # planted clusters
    dim, k, per = 32, 10, 300
    centres = unit(rng.standard_normal((k, dim)))
    lab = np.repeat(np.arange(k), per)
    x = unit(centres[lab] + np.sqrt(1e-3 / dim) * rng.standard_normal((k * per, dim)))
    perm = rng.permutation(k * per)
    save(d, "planted_x.f32", x[perm], "<f4")
    save(d, "planted_labels.i32", lab[perm], "<i4")
    shapes.append(("planted", k * per, dim, k))

    with open(f"{d}/shapes.txt", "w") as f:
        for s in shapes:
            f.write("%s %d %d %d\n" % s)


def npy_check(path, k, dim, raw):
    a = np.load(path)
    if a.dtype != np.dtype("<f4") or a.shape != (k, dim) or not a.flags.c_contiguous:
        sys.exit(f"{path}: dtype {a.dtype}, shape {a.shape}; expected float32 ({k}, {dim})")
    ref = np.fromfile(raw, dtype="<f4").reshape(k, dim)
    if not np.array_equal(a.view("<u4"), ref.view("<u4")):
        sys.exit(f"{path}: values differ from {raw}")
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "npy-check":
        npy_check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(__doc__)
