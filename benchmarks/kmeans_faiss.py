#!/usr/bin/python3
"""The baseline of benchmarks/kmeans.sh: FAISS's own k-means and assignment on the same vectors.

  kmeans_faiss.py --npy X.npy --k K [--niter 20] [--mppc 256] [--seed S] [--threads T]
                  [--out-centroids C.npy] [--out-labels L.i32]

faiss.Kmeans(d, K, niter, spherical=True, seed, max_points_per_centroid) trains on its own uniform sample of
K * mppc rows (FAISS's subsampling) with random-row init, then index.search(x, 1) (IndexFlatIP over the
centroids, BLAS blocks) assigns all rows. Prints one JSON line with the keys of `kmeans run`.
"""
import argparse
import json
import resource
import time

import faiss
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--npy", required=True)
p.add_argument("--k", type=int, required=True)
p.add_argument("--niter", type=int, default=20)
p.add_argument("--mppc", type=int, default=256)
p.add_argument("--seed", type=int, default=1234)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--out-centroids")
p.add_argument("--out-labels")
a = p.parse_args()
if a.threads > 0:
    faiss.omp_set_num_threads(a.threads)
x = np.load(a.npy)
assert x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous
n, d = x.shape


def clocks():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.monotonic(), r.ru_utime + r.ru_stime


w0, c0 = clocks()
km = faiss.Kmeans(d, a.k, niter=a.niter, spherical=True, seed=a.seed, max_points_per_centroid=a.mppc)
km.train(x)
w1, c1 = clocks()
D, I = km.index.search(x, 1)
w2, c2 = clocks()
labels = I[:, 0].astype(np.int32)
sizes = np.bincount(labels, minlength=a.k)
n_train = min(n, a.k * a.mppc) if a.mppc > 0 else n
obj = [float(v) / n_train for v in km.obj]  # FAISS's objective: the sum of similarities of the sample per iteration
if a.out_centroids:
    np.save(a.out_centroids, km.centroids.astype(np.float32))
if a.out_labels:
    labels.tofile(a.out_labels)
print(json.dumps({
    "side": "faiss", "faiss": faiss.__version__, "n": n, "d": d, "k": a.k, "threads": faiss.omp_get_max_threads(),
    "n_train": n_train, "iterations": a.niter,
    "train_s": round(w1 - w0, 3), "train_cpu_s": round(c1 - c0, 3),
    "assign_s": round(w2 - w1, 3), "assign_cpu_s": round(c2 - c1, 3),
    "mean_cos": round(float(D[:, 0].astype(np.float64).mean()), 6),
    "size_min": int(sizes.min()), "size_max": int(sizes.max()), "empty": int((sizes == 0).sum()),
    "objective": [round(v, 6) for v in obj]}))
