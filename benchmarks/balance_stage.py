#!/usr/bin/python3
"""Synthetic catalog for the lvd-balance stage benchmark (driven by benchmarks/balance_stage.sh), and the
baseline: the same hierarchical k-means with FAISS's k-means called from Python on the same vectors.
  balance_stage.py gen --out X.npy --n N --d D [--concepts 20] [--skew 20] [--seed 1]
      N unit vectors of D dims (float32): `concepts` Gaussian concepts whose frequencies fall geometrically
      from the most to the least frequent by a factor `skew`, each with 10 sub-modes (sub-structure inside a
      concept). Writes X.npy and X.npy.labels (int32 concept of each row).
  balance_stage.py build --npy X.npy --n N --work W --model NAME
      dedup_stage.py's synthetic pool (N images, float16 embedding files), then a dedup decision 'kept' for
      every image, so that lvd-balance's default pool (--from dedup) is the whole pool. All rows are SYNTHETIC
      (no image is stored or decoded); only lvd-balance is measured.
  balance_stage.py faiss --work W --model NAME --levels K1,K2,.. --iters I --resampling R1,R2,..
                         --sample-size S1,S2,.. [--seed 1234] [--threads T]
      Reads the pool back from the files the catalog points at (float16 -> float32, as lvd-balance does) and
      runs the same hierarchy with faiss.Kmeans (squared L2, niter I, random init: FAISS has no k-means++), per
      level: a run on all items, then R times: the S items of each cluster closest to its centroid, a run on
      their union, every item reassigned (index.search). Level l > 1 clusters the centroids of level l - 1.
      Prints one JSON line with the time of each level and of one Lloyd iteration of level 1's first run.
  balance_stage.py entropy --work W --model NAME --labels X.npy.labels [--concepts 20]
      The concept entropy of lvd-balance's sample (copies counted) over ln(concepts), beside that of the pool.
"""
import argparse
import json
import os
import sqlite3
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dedup_stage  # noqa: E402


def gen(a):
    rng = np.random.default_rng(a.seed)
    f = a.skew ** (-np.arange(a.concepts) / (a.concepts - 1))
    f /= f.sum()
    lab = rng.choice(a.concepts, size=a.n, p=f).astype(np.int32)
    centre = rng.standard_normal((a.concepts, a.d)).astype(np.float32)
    sub = centre[:, None, :] + 0.6 * rng.standard_normal((a.concepts, 10, a.d)).astype(np.float32)
    x = np.empty((a.n, a.d), np.float32)
    for at in range(0, a.n, 100000):
        l = lab[at:at + 100000]
        s = rng.integers(0, 10, len(l))
        v = sub[l, s] + 0.5 * rng.standard_normal((len(l), a.d)).astype(np.float32)
        x[at:at + len(l)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    np.save(a.out, x)
    lab.tofile(a.out + ".labels")
    print(json.dumps({"gen": a.out, "n": a.n, "d": a.d, "concepts": a.concepts, "skew": a.skew,
                      "largest": int(np.bincount(lab).max()), "smallest": int(np.bincount(lab).min())}))


def build(a):
    dedup_stage.build(argparse.Namespace(npy=a.npy, n=a.n, work=a.work, model=a.model, file_rows=8192, seed=1))
    db = sqlite3.connect(os.path.join(a.work, "catalog.db"), isolation_level=None)
    (model,) = db.execute("SELECT id FROM models WHERE name = ?", (a.model,)).fetchone()
    db.execute("BEGIN")
    # dedup_run_id names no dedup_runs row (foreign keys are off in this connection): only the decisions,
    # which define lvd-balance's pool, are synthesised.
    db.executemany("INSERT INTO dedup_decisions(model_id, image_id, decision, component, kept_image_id, kept_sim,"
                   " dedup_run_id) VALUES (?, ?, 'kept', ?, ?, 1, 0)", ((model, i + 1, i, i + 1) for i in range(a.n)))
    db.execute("COMMIT")


def load_pool(work, model):
    db = sqlite3.connect(f"file:{os.path.join(work, 'catalog.db')}?mode=ro", uri=True)
    (mid,) = db.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()
    rows = db.execute("SELECT image_id, file, row FROM embeddings WHERE model_id = ? ORDER BY image_id", (mid,)).fetchall()
    maps = {f: np.load(os.path.join(work, f), mmap_mode="r") for f in dict.fromkeys(r[1] for r in rows)}
    x = np.concatenate([np.asarray(maps[f], dtype=np.float32) for f in maps])
    return np.array([r[0] for r in rows]), x, db


def faiss_tree(a):
    import faiss
    if a.threads > 0:
        faiss.omp_set_num_threads(a.threads)
    _, x, _ = load_pool(a.work, a.model)
    ks = [int(v) for v in a.levels.split(",")]
    rs = [int(v) for v in a.resampling.split(",")]
    ss = [int(v) for v in a.sample_size.split(",")]
    res = {"side": "faiss", "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "n": len(x),
           "d": x.shape[1], "levels": []}
    items, total = x, 0.0
    for l, k in enumerate(ks):
        t0 = time.monotonic()
        d = items.shape[1]

        def run(sub, seed):
            km = faiss.Kmeans(d, k, niter=a.iters, seed=seed, max_points_per_centroid=len(sub) + 1,
                              min_points_per_centroid=1)
            km.train(np.ascontiguousarray(sub))
            return km
        km = run(items, a.seed + l)
        t_first = time.monotonic() - t0
        dist, lab = km.index.search(items, 1)
        runs = 1
        for r in range(rs[l] if ss[l] > 1 else 0):
            lab = lab[:, 0]
            order = np.lexsort((dist[:, 0], lab))  # by cluster, then distance to its centroid
            start = np.searchsorted(lab[order], np.arange(k))
            end = np.searchsorted(lab[order], np.arange(k), side="right")
            pick = np.concatenate([order[s:min(e, s + ss[l])] for s, e in zip(start, end)])
            km = run(items[np.sort(pick)], a.seed + 1000 * (r + 1) + l)
            dist, lab = km.index.search(items, 1)
            runs += 1
        lt = time.monotonic() - t0
        total += lt
        res["levels"].append({"level": l + 1, "k": k, "items": len(items), "runs": runs, "s": round(lt, 2),
                              "first_run_s": round(t_first, 2), "objective": round(float(dist.mean()), 5)})
        items = km.centroids
    res["tree_s"] = round(total, 2)
    res["iteration_s"] = round(res["levels"][0]["first_run_s"] / a.iters, 4)
    print(json.dumps(res))


def entropy(a):
    lab = np.fromfile(a.labels, dtype=np.int32)
    db = sqlite3.connect(f"file:{os.path.join(a.work, 'catalog.db')}?mode=ro", uri=True)
    rows = db.execute("SELECT image_id, copies FROM balance_sample").fetchall()
    ids = np.array([r[0] for r in rows]) - 1  # image id i + 1 is row i (dedup_stage.build)
    w = np.array([r[1] for r in rows], dtype=np.float64)

    def h(p):
        p = p[p > 0] / p.sum()
        return float(-(p * np.log(p)).sum() / np.log(a.concepts))
    print(json.dumps({"sample_entropy": round(h(np.bincount(lab[ids], weights=w, minlength=a.concepts)), 4),
                      "pool_entropy": round(h(np.bincount(lab, minlength=a.concepts).astype(np.float64)), 4)}))


def main():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="cmd", required=True)
    g = sp.add_parser("gen")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--d", type=int, required=True)
    g.add_argument("--concepts", type=int, default=20)
    g.add_argument("--skew", type=float, default=20.0)
    g.add_argument("--seed", type=int, default=1)
    b = sp.add_parser("build")
    for k in ("--npy", "--work", "--model"):
        b.add_argument(k, required=True)
    b.add_argument("--n", type=int, required=True)
    f = sp.add_parser("faiss")
    for k in ("--work", "--model", "--levels", "--resampling", "--sample-size"):
        f.add_argument(k, required=True)
    f.add_argument("--iters", type=int, default=50)
    f.add_argument("--seed", type=int, default=1234)
    f.add_argument("--threads", type=int, default=0)
    e = sp.add_parser("entropy")
    for k in ("--work", "--model", "--labels"):
        e.add_argument(k, required=True)
    e.add_argument("--concepts", type=int, default=20)
    a = p.parse_args()
    {"gen": gen, "build": build, "faiss": faiss_tree, "entropy": entropy}[a.cmd](a)


if __name__ == "__main__":
    main()
