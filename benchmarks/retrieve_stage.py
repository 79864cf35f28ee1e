#!/usr/bin/python3
"""Synthetic catalog for the lvd-retrieve stage benchmark (driven by benchmarks/retrieve_stage.sh), and the
baseline: FAISS's own k-means, assignment and IVF search called from Python on the same vectors.

  retrieve_stage.py build --npy X.npy --n N --seeds S --work W --model NAME [--noise 0.35] [--seed 1]
      The pool as dedup_stage.py builds it (N images of the 'pool' collection, row i of X.npy = image id
      i + 1, float16 embedding files), then a seed collection 'bench-seeds' (role seed) of S images whose
      embeddings are evenly spaced pool rows plus Gaussian noise (per component noise / sqrt(d), then
      L2-normalised: cosine ~0.94 to the pool row they come from), in their own float16 part files. All rows
      are SYNTHETIC (no image is stored or decoded); only lvd-retrieve is measured.
  retrieve_stage.py faiss --work W --model NAME --k K --clusters C --factory F --nprobe P [--niter 20]
                          [--seed 1234] [--train-per-centroid 256] [--knn-train 163840] [--threads T]
      Reads the pool and seed vectors back from the files the catalog points at (float16 -> float32, as
      lvd-retrieve reads them), then times, as lvd-retrieve does the same work:
        k-means  faiss.Kmeans(d, C, niter, spherical=True, seed) trained on the same evenly spaced sample of
                 C * train-per-centroid pool rows that lvd-retrieve trains on (max_points_per_centroid large
                 enough that FAISS uses all of it), random-row init;
        assign   km.index.search(pool + seeds, 1) (IndexFlatIP over the centroids);
        index    faiss.index_factory(d, F, inner product), trained on the evenly spaced sample of knn-train
                 pool rows lvd's knn_build uses, every pool row added;
        search   index.nprobe = P; index.search(seeds, K + 16): the candidates lvd-retrieve asks for.
      Then compares the results with lvd-retrieve's, read from the catalog: the sample row's neighbours
      (overlap of each seed's top K with FAISS's), and recall@K of both against exact brute force (NumPy) on
      200 evenly spaced seeds. Prints one JSON line.
"""
import argparse
import hashlib
import json
import os
import resource
import sqlite3
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dedup_stage  # noqa: E402

NOW = dedup_stage.NOW
SEEDS = "bench-seeds"


def build(a):
    dedup_stage.build(argparse.Namespace(npy=a.npy, n=a.n, work=a.work, model=a.model, file_rows=8192, seed=a.seed))
    x = np.load(a.npy, mmap_mode="r")
    d = x.shape[1]
    rng = np.random.default_rng(a.seed + 1)
    src = np.linspace(0, a.n - 1, a.seeds).astype(np.int64)
    v = np.asarray(x[src], dtype=np.float32) + rng.standard_normal((a.seeds, d), dtype=np.float32) * (a.noise / np.sqrt(d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    db = sqlite3.connect(os.path.join(a.work, "catalog.db"), isolation_level=None)
    db.execute("BEGIN")
    cur = db.execute("INSERT INTO collections(name, role, created_at) VALUES (?, 'seed', ?)", (SEEDS, NOW))
    coll = cur.lastrowid
    (model,) = db.execute("SELECT id FROM models WHERE name = ?", (a.model,)).fetchone()
    (shard,) = db.execute("SELECT id FROM shards ORDER BY id LIMIT 1").fetchone()
    rel_dir = f"embeddings/{a.model}/{SEEDS}"
    os.makedirs(os.path.join(a.work, rel_dir), exist_ok=True)
    rows = 8192
    files = []
    for no, at in enumerate(range(0, a.seeds, rows)):
        rel = f"{rel_dir}/part-{no:06d}.npy"
        np.save(os.path.join(a.work, rel), v[at:at + rows].astype(np.float16), allow_pickle=False)
        files.append(rel)
    base = a.n + 1  # seed image ids follow the pool's
    db.executemany("INSERT INTO images(id, sha256, bytes, format, shard_id, offset, created_at)"
                   " VALUES (?, ?, 1000, 'jpeg', ?, 0, ?)",
                   ((base + i, hashlib.sha256(b"retrieve_stage seed %d" % i).hexdigest(), shard, NOW)
                    for i in range(a.seeds)))
    db.executemany("INSERT INTO members(collection_id, key, image_id, label, source) VALUES (?, ?, ?, NULL, 'synthetic')",
                   ((coll, f"seed{i:06d}", base + i) for i in range(a.seeds)))
    db.executemany("INSERT INTO decodes(image_id, fingerprint, status, format, width, height, out_width, out_height,"
                   " created_at) VALUES (?, 'synthetic', 'ok', 'jpeg', 256, 256, 256, 256, ?)",
                   ((base + i, NOW) for i in range(a.seeds)))
    db.executemany("INSERT INTO embeddings(model_id, image_id, file, row) VALUES (?, ?, ?, ?)",
                   ((model, base + i, files[i // rows], i % rows) for i in range(a.seeds)))
    db.execute("COMMIT")
    print(json.dumps({"seeds": a.seeds, "seed_files": len(files), "noise": a.noise,
                      "mean_cos_to_source": round(float(np.einsum("ij,ij->i", v, np.asarray(x[src], np.float32)).mean()), 4)}))


def load_vectors(db, work, model, role):
    """Rows of the model's embeddings of the collections of `role`, in image-id order: (ids, float32 x)."""
    rows = db.execute("SELECT DISTINCT e.image_id, e.file, e.row FROM embeddings e JOIN members m ON m.image_id = e.image_id"
                      " JOIN collections c ON c.id = m.collection_id WHERE e.model_id = ? AND c.role = ?"
                      " ORDER BY e.image_id", (model, role)).fetchall()
    maps = {}
    for f in dict.fromkeys(r[1] for r in rows):
        maps[f] = np.load(os.path.join(work, f), mmap_mode="r")
    d = next(iter(maps.values())).shape[1]
    out = np.empty((len(rows), d), np.float32)
    for i, (_, f, r) in enumerate(rows):
        out[i] = maps[f][r]
    return np.array([r[0] for r in rows], np.int64), out


def clocks():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.monotonic(), r.ru_utime + r.ru_stime


def baseline(a):
    import faiss
    if a.threads > 0:
        faiss.omp_set_num_threads(a.threads)
    db = sqlite3.connect(f"file:{os.path.join(a.work, 'catalog.db')}?mode=ro", uri=True)
    (model,) = db.execute("SELECT id FROM models WHERE name = ?", (a.model,)).fetchone()
    t = time.monotonic()
    pid, px = load_vectors(db, a.work, model, "pool")
    sid, sx = load_vectors(db, a.work, model, "seed")
    load_s = time.monotonic() - t
    n, d = px.shape
    res = {"side": "faiss", "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "pool": n,
           "seeds": len(sid), "d": d, "load_s": round(load_s, 1)}

    # k-means on lvd-retrieve's sample: row floor(i * n / m), m = C * train-per-centroid.
    m = min(n, a.clusters * a.train_per_centroid)
    xs = np.ascontiguousarray(px[(np.arange(m, dtype=np.float64) * n / m).astype(np.int64)])
    w0, c0 = clocks()
    km = faiss.Kmeans(d, a.clusters, niter=a.niter, spherical=True, seed=a.seed, max_points_per_centroid=m)
    km.train(xs)
    w1, c1 = clocks()
    del xs
    both = np.concatenate([px, sx])
    _, lab = km.index.search(both, 1)
    w2, c2 = clocks()
    del both
    res.update({"kmeans_train_points": m, "kmeans_s": round(w1 - w0, 2), "kmeans_cpu_s": round(c1 - c0, 2),
                "assign_rows": n + len(sid), "assign_s": round(w2 - w1, 2), "assign_cpu_s": round(c2 - c1, 2),
                "kmeans_iterations": a.niter, "kmeans_objective": round(float(km.obj[-1]) / m, 5)})

    # The IVF index of the sample row, trained on knn_build's evenly spaced sample.
    mt = min(n, a.knn_train)
    w0, c0 = clocks()
    ix = faiss.index_factory(d, a.factory, faiss.METRIC_INNER_PRODUCT)
    ix.train(np.ascontiguousarray(px[(np.arange(mt, dtype=np.float64) * n / mt).astype(np.int64)]))
    ix.add(px)
    w1, c1 = clocks()
    if "IVF" in a.factory:
        faiss.extract_index_ivf(ix).nprobe = a.nprobe
    kq = a.k + 16
    D, I = ix.search(sx, kq)
    w2, c2 = clocks()
    res.update({"index_s": round(w1 - w0, 2), "index_cpu_s": round(c1 - c0, 2), "search_k": kq,
                "search_s": round(w2 - w1, 2), "search_cpu_s": round(c2 - c1, 2)})

    # Agreement with lvd-retrieve's stored neighbours, and recall of both against brute force.
    (row,) = db.execute("SELECT id FROM retrieve_rows WHERE model_id = ? AND method = 'sample'", (model,)).fetchone()
    lvd = {}
    for s, img in db.execute("SELECT seed_image_id, image_id FROM retrieve_hits WHERE row_id = ? AND rank < ?"
                             " ORDER BY seed_image_id, rank", (row, a.k)):
        lvd.setdefault(s, []).append(img)
    f_top = pid[I[:, :a.k]]
    # FAISS's top K after the exact re-ranking lvd applies (float32 here), for a like-for-like overlap.
    overlap = np.mean([len(set(lvd.get(int(s), [])) & set(f_top[i].tolist())) / a.k for i, s in enumerate(sid)])
    probe = np.linspace(0, len(sid) - 1, 200).astype(np.int64)
    exact = np.argsort(-(sx[probe] @ px.T), axis=1)[:, :a.k]
    rec_l = np.mean([len(set(lvd.get(int(sid[q]), [])) & set(pid[exact[i]].tolist())) / a.k for i, q in enumerate(probe)])
    rec_f = np.mean([len(set(f_top[q].tolist()) & set(pid[exact[i]].tolist())) / a.k for i, q in enumerate(probe)])
    res.update({"overlap_with_lvd": round(float(overlap), 4), "recall_lvd": round(float(rec_l), 4),
                "recall_faiss": round(float(rec_f), 4), "recall_probe_seeds": len(probe)})

    # The clusterings differ (other random initial rows), so only their balance is compared.
    sizes = np.bincount(lab[:n, 0], minlength=a.clusters)
    res.update({"faiss_cluster_size_max": int(sizes.max()), "faiss_empty_clusters": int((sizes == 0).sum())})
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--npy", required=True)
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--seeds", type=int, required=True)
    b.add_argument("--work", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--noise", type=float, default=0.35)
    b.add_argument("--seed", type=int, default=1)
    f = sub.add_parser("faiss")
    f.add_argument("--work", required=True)
    f.add_argument("--model", required=True)
    f.add_argument("--k", type=int, required=True)
    f.add_argument("--clusters", type=int, required=True)
    f.add_argument("--factory", required=True)
    f.add_argument("--nprobe", type=int, required=True)
    f.add_argument("--niter", type=int, default=20)
    f.add_argument("--seed", type=int, default=1234)
    f.add_argument("--train-per-centroid", type=int, default=256)
    f.add_argument("--knn-train", type=int, default=163840)
    f.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    build(a) if a.cmd == "build" else baseline(a)


if __name__ == "__main__":
    main()
