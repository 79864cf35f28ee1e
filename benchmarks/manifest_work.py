#!/usr/bin/python3
"""A work directory for benchmarks/manifest_stage.sh over gen_manifest.py's shards: the catalog rows that
`lvd-manifest build --from dedup` reads, all SYNTHETIC (no image is crawled, decoded or embedded), pointing at
the real working-image bytes in the tar shards, so that the build reads and hashes every sample as it would in a
real work directory.

    manifest_work.py --data DIR --work W

DIR holds gen_manifest.py's output (m.db, shards/img-NNNNNN.tar). W/catalog.db must exist (the script is run
after `lvd-import` of an empty folder, so the schema is the real one, with a 'pool' collection). W/shards/ gets
symlinks to DIR's shards. Rows: one img shard per tar (committed = the end of its last member), one image,
member, decode (status ok, the working image's offset and size) and dedup decision 'kept' per sample, a models
row and one dedup_runs row (with its runs row).
"""
import argparse
import os
import sqlite3
import sys

NOW = "2026-01-01T00:00:00.000Z"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    src = sqlite3.connect(f"file:{os.path.join(a.data, 'm.db')}?mode=ro", uri=True)
    shards = src.execute("SELECT id, path, bytes FROM shards ORDER BY id").fetchall()
    samples = src.execute("SELECT key, shard_id, offset, length, width, height FROM samples ORDER BY id").fetchall()
    os.makedirs(os.path.join(a.work, "shards"), exist_ok=True)
    db = sqlite3.connect(os.path.join(a.work, "catalog.db"), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    (pool,) = db.execute("SELECT id FROM collections WHERE role = 'pool' ORDER BY id LIMIT 1").fetchone()
    db.execute("BEGIN")
    sid = {}
    for i, rel, nbytes in shards:
        name = "img-%06d.tar" % (i - 1)
        link = os.path.join(a.work, "shards", name)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(a.data, rel)), link)
        cur = db.execute("INSERT INTO shards(path, kind, committed, members) VALUES (?, 'img', ?, 0)",
                         ("shards/" + name, nbytes))
        sid[i] = cur.lastrowid
    cur = db.execute("INSERT INTO runs(stage, params, fingerprint, started_at, finished_at, status)"
                     " VALUES ('dedup', '{}', 'synthetic', ?, ?, 'done')", (NOW, NOW))
    run = cur.lastrowid
    cur = db.execute("INSERT INTO models(name, sha256, preprocess, dim, created_at) VALUES ('bench', ?, 'imported',"
                     " 384, ?)", ("0" * 64, NOW))
    model = cur.lastrowid
    cur = db.execute("INSERT INTO dedup_runs(run_id, model_id, fingerprint, k, threshold, benchmark_threshold,"
                     " benchmark_rule, keep_rule, created_at) VALUES (?, ?, 'synthetic', 64, 0.9, 0.45, 'component',"
                     " 'pixels', ?)", (run, model, NOW))
    drun = cur.lastrowid
    for n, (key, shard, off, length, w, h) in enumerate(samples):
        iid = n + 1
        db.execute("INSERT INTO images(id, sha256, bytes, format, shard_id, offset, created_at)"
                   " VALUES (?, ?, ?, 'jpeg', ?, ?, ?)", (iid, key, length, sid[shard], off, NOW))
        db.execute("INSERT INTO members(collection_id, key, image_id, source) VALUES (?, ?, ?, 'synthetic')",
                   (pool, "%07d.jpg" % n, iid))
        db.execute("INSERT INTO decodes(image_id, fingerprint, status, format, width, height, out_width, out_height,"
                   " shard_id, offset, size, out_format, created_at) VALUES (?, 'synthetic', 'ok', 'jpeg', ?, ?, ?, ?,"
                   " ?, ?, ?, 'jpeg', ?)", (iid, w, h, w, h, sid[shard], off, length, NOW))
        db.execute("INSERT INTO dedup_decisions(model_id, image_id, decision, component, kept_image_id, kept_sim,"
                   " dedup_run_id) VALUES (?, ?, 'kept', ?, ?, 1.0, ?)", (model, iid, iid, iid, drun))
    db.execute("COMMIT")
    print("manifest_work: %d samples in %d shards, catalog %s" % (len(samples), len(shards), a.work))


if __name__ == "__main__":
    sys.exit(main())
