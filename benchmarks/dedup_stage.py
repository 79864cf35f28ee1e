#!/usr/bin/python3
"""Synthetic catalog for the lvd-dedup stage benchmark (driven by benchmarks/dedup_stage.sh), and the recall
of the edges the stage recorded.

  dedup_stage.py build --npy X.npy --n N --work W --model NAME [--file-rows 8192] [--seed 1]
      W/catalog.db must exist (the script creates it with lvd-import, so the schema is the real one, with its
      'pool' collection). Adds the rows lvd-dedup reads, all SYNTHETIC (no image is stored or decoded): one
      shard row; N images rows (distinct fake SHA-256, fake byte counts); their members of the pool
      collection (keys 0000000.jpg ...); decodes rows (status ok, random original width/height, which the
      pixels keep rule uses, and a random pHash); a models row (preprocess "imported", as lvd-embed --import
      records); and the embeddings rows pointing at float16 .npy files laid out as lvd-embed writes them,
      WORK/embeddings/NAME/pool/part-NNNNNN.npy with --file-rows rows each. Row i of X.npy is image id i + 1.
  dedup_stage.py recall --work W --model NAME --k K --threshold T [--sample 1000] [--dups X.npy.dups]
      Exact brute force (numpy, float32 products of the float16 rows lvd-dedup read) for evenly spaced
      sample images: the pairs (s, j) with j among s's exact k nearest neighbours and cosine > T are the
      edges an exact k-NN graph would hold for s; recall = how many of them lvd-dedup stored in dedup_edges
      (either end may have found the pair). Also counts the pairs above T beyond the k nearest (which no
      k-NN graph holds) and the distribution of exact neighbours above T. With --dups, also how many of the
      planted near-duplicate pairs are stored edges. Prints one JSON line.
"""
import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time

import numpy as np

NOW = "2026-01-01T00:00:00.000Z"


def build(a):
    x = np.load(a.npy, mmap_mode="r")
    if x.ndim != 2 or a.n > x.shape[0]:
        sys.exit(f"dedup_stage.py: {a.npy} has shape {x.shape}, need at least {a.n} rows")
    n, d = a.n, x.shape[1]
    db = sqlite3.connect(os.path.join(a.work, "catalog.db"), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    (pool,) = db.execute("SELECT id FROM collections WHERE role = 'pool' ORDER BY id LIMIT 1").fetchone()
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    # Embedding files first, as lvd-embed writes them: float16, C order, (rows, dim), format 1.0 header.
    rel_dir = f"embeddings/{a.model}/pool"
    os.makedirs(os.path.join(a.work, rel_dir), exist_ok=True)
    files = []
    for no, at in enumerate(range(0, n, a.file_rows)):
        rel = f"{rel_dir}/part-{no:06d}.npy"
        np.save(os.path.join(a.work, rel), np.asarray(x[at:at + a.file_rows], dtype=np.float16), allow_pickle=False)
        files.append(rel)
    t_files = time.time() - t0
    db.execute("BEGIN")
    cur = db.execute("INSERT INTO shards(path, kind, committed, members) VALUES ('shards/raw-000000.tar', 'raw', 0, 0)")
    shard = cur.lastrowid
    cur = db.execute("INSERT INTO models(name, sha256, preprocess, dim, created_at) VALUES (?, ?, 'imported', ?, ?)",
                     (a.model, hashlib.sha256(f"dedup_stage synthetic {n}x{d}".encode()).hexdigest(), d, NOW))
    model = cur.lastrowid
    nbytes = rng.integers(30_000, 100_000, n)
    w = rng.integers(256, 1601, n)
    h = rng.integers(256, 1201, n)
    ph = rng.integers(0, 2**63, n, dtype=np.int64)
    db.executemany("INSERT INTO images(id, sha256, bytes, format, shard_id, offset, created_at)"
                   " VALUES (?, ?, ?, 'jpeg', ?, ?, ?)",
                   ((i + 1, hashlib.sha256(b"dedup_stage image %d" % i).hexdigest(), int(nbytes[i]), shard, 512 * i, NOW)
                    for i in range(n)))
    db.executemany("INSERT INTO members(collection_id, key, image_id, source) VALUES (?, ?, ?, 'synthetic')",
                   ((pool, f"{i:07d}.jpg", i + 1) for i in range(n)))
    db.executemany("INSERT INTO decodes(image_id, fingerprint, status, format, width, height, out_width, out_height,"
                   " phash, created_at) VALUES (?, 'synthetic', 'ok', 'jpeg', ?, ?, 256, 256, ?, ?)",
                   ((i + 1, int(w[i]), int(h[i]), f"{int(ph[i]):016x}", NOW) for i in range(n)))
    db.executemany("INSERT INTO embeddings(model_id, image_id, file, row) VALUES (?, ?, ?, ?)",
                   ((model, i + 1, files[i // a.file_rows], i % a.file_rows) for i in range(n)))
    db.execute("COMMIT")
    db.close()
    print(json.dumps({"build": a.work, "n": n, "d": d, "files": len(files), "dtype": "float16",
                      "files_s": round(t_files, 1), "rows_s": round(time.time() - t0 - t_files, 1)}))


def recall(a):
    db = sqlite3.connect(f"file:{os.path.join(a.work, 'catalog.db')}?mode=ro", uri=True)
    (model,) = db.execute("SELECT id FROM models WHERE name = ?", (a.model,)).fetchone()
    rows = db.execute("SELECT image_id, file, row FROM embeddings WHERE model_id = ? ORDER BY image_id",
                      (model,)).fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    # Rows in image-id order, float16 -> float32 as lvd-dedup reads them.
    maps = {}
    for _, f, r in rows:
        if f not in maps:
            maps[f] = np.load(os.path.join(a.work, f), mmap_mode="r")
    x = np.concatenate([np.asarray(maps[f], dtype=np.float32) for f in dict.fromkeys(r[1] for r in rows)])
    n = x.shape[0]
    order = {f: i for i, f in enumerate(dict.fromkeys(r[1] for r in rows))}
    starts = np.cumsum([0] + [maps[f].shape[0] for f in order])
    pos = np.array([starts[order[f]] + r for _, f, r in rows], dtype=np.int64)
    x = x[pos]  # row i = image ids[i]
    m = min(a.sample, n)
    s = np.linspace(0, n - 1, m).astype(np.int64)
    q = x[s]
    kk = min(a.k + 1, n)
    best_s = np.full((m, 0), -np.inf, np.float32)
    best_i = np.zeros((m, 0), np.int64)
    above_all = np.zeros(m, np.int64)
    for at in range(0, n, 100_000):
        sims = q @ x[at:at + 100_000].T
        above_all += (sims > a.threshold).sum(1)
        cs = np.concatenate([best_s, sims], 1)
        ci = np.concatenate([best_i, np.broadcast_to(np.arange(at, at + sims.shape[1]), sims.shape)], 1)
        top = np.argpartition(-cs, min(kk, cs.shape[1] - 1) - 1, axis=1)[:, :kk] if cs.shape[1] > kk else \
            np.argsort(-cs, axis=1)
        best_s = np.take_along_axis(cs, top, 1)
        best_i = np.take_along_axis(ci, top, 1)
    o = np.argsort(-best_s, axis=1)
    best_s, best_i = np.take_along_axis(best_s, o, 1), np.take_along_axis(best_i, o, 1)
    above_all -= (np.einsum("ij,ij->i", q, q) > a.threshold)  # the row itself
    sample_ids = set(int(ids[i]) for i in s)
    stored = set()
    for ea, eb in db.execute("SELECT image_a, image_b FROM dedup_edges WHERE model_id = ? AND kind = 'knn'", (model,)):
        if ea in sample_ids or eb in sample_ids:
            stored.add((ea, eb))
    (n_edges,) = db.execute("SELECT count(*) FROM dedup_edges WHERE model_id = ?", (model,)).fetchone()
    want = found = 0
    per_row = []
    for r in range(m):
        me = int(ids[s[r]])
        c = 0
        for sim, j in zip(best_s[r], best_i[r]):
            if j == s[r] or not sim > a.threshold:
                continue
            if c == a.k:
                break
            c += 1
            o = int(ids[j])
            want += 1
            found += (min(me, o), max(me, o)) in stored
        per_row.append(c)
    per_row = np.array(per_row)
    planted = {}
    if a.dups:
        # Every planted near-duplicate pair (row, earlier row) of the rows in the pool: is it an edge?
        pr = np.fromfile(a.dups, dtype="<i8").reshape(-1, 2)
        pr = pr[(pr[:, 0] < n) & (pr[:, 1] < n)]
        edges = set(db.execute("SELECT image_a, image_b FROM dedup_edges WHERE model_id = ?", (model,)).fetchall())
        hit = sum((int(ids[min(u, v)]), int(ids[max(u, v)])) in edges for u, v in pr)
        planted = {"planted_pairs": int(len(pr)), "planted_pairs_linked": int(hit)}
    print(json.dumps({
        **planted, "sample": m, "k": a.k, "threshold": a.threshold, "edges_stored": n_edges,
        "exact_knn_edges_above_threshold": want, "found": found,
        "edge_recall": round(found / want, 4) if want else None,
        "exact_pairs_above_threshold_all": int(above_all.sum()),
        "rows_with_an_edge": round(float((per_row > 0).mean()), 4),
        "mean_exact_neighbours_above_threshold": round(float(per_row.mean()), 3),
        "rows_with_k_above_threshold": round(float((per_row >= a.k).mean()), 4)}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--npy", required=True)
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--work", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--file-rows", type=int, default=8192)
    b.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("recall")
    r.add_argument("--work", required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--k", type=int, required=True)
    r.add_argument("--threshold", type=float, required=True)
    r.add_argument("--sample", type=int, default=1000)
    r.add_argument("--dups", help="X.npy.dups of the vectors: int64 pairs (row, earlier row) of planted near-duplicates")
    a = p.parse_args()
    build(a) if a.cmd == "build" else recall(a)


if __name__ == "__main__":
    main()
