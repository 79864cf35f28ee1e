#!/usr/bin/python3
"""Writes a synthetic manifest for benchmarks/manifest_read.sh, without a work directory or `lvd-manifest
build`: N distinct small JPEGs (64x48, about 2 KB: a smooth random field plus a per-sample pixel pattern, so no
two share bytes) in webdataset tar shards of --per-shard samples, and OUT/m.db per schemas/manifest-001.sql
(ids in key order, shard paths relative to OUT, shard bytes = the end of the last member, weights 1).

    gen_manifest.py --out DIR [--n 100000] [--per-shard 10000] [--seed 0]
"""
import argparse
import hashlib
import io
import os
import sqlite3
import sys
import tarfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(os.path.dirname(HERE), "schemas", "manifest-001.sql")
W, H = 64, 48


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--per-shard", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(os.path.join(a.out, "shards"), exist_ok=True)
    # 64 smooth base images (8x6 noise upsampled); sample i is base i % 64 with its index written into the
    # first 24 pixels, so every sample's bytes differ.
    bases = [np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((W, H),
                                                                                               Image.BILINEAR))
             for _ in range(64)]
    images = []
    for i in range(a.n):
        px = bases[i % 64].copy()
        bits = np.array([(i >> b) & 1 for b in range(24)], dtype=np.uint8) * 255
        px[0, :24, :] = bits[:, None]
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        images.append((hashlib.sha256(data).hexdigest(), data))
    # Shards hold the samples in generation order (as decode writes them); ids follow key order.
    rows, shards = {}, []
    for s in range(0, a.n, a.per_shard):
        rel = "shards/img-%06d.tar" % (s // a.per_shard)
        path = os.path.join(a.out, rel)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, data in images[s:s + a.per_shard]:
                ti = tarfile.TarInfo(key + ".jpg")
                ti.size = len(data)
                rows[key] = (len(shards) + 1, tf.offset + 512, data)
                tf.addfile(ti, io.BytesIO(data))
            end = tf.offset
        with open(path, "rb") as f:
            shards.append((rel, end, hashlib.sha256(f.read(end)).hexdigest()))
    db = os.path.join(a.out, "m.db")
    if os.path.exists(db):
        os.unlink(db)
    con = sqlite3.connect(db)
    with open(SCHEMA) as f:
        con.executescript(f.read())
    con.executemany("INSERT INTO info VALUES (?, ?)", [("schema_version", "1"), ("name", "bench"),
                                                     ("created_at", "2026-01-01T00:00:00Z")])
    con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?)", [(k + 1,) + s for k, s in enumerate(shards)])
    con.executemany(
        "INSERT INTO samples (id, key, image_sha256, data_sha256, shard_id, offset, length, format, width, height,"
        " orig_width, orig_height) VALUES (?, ?, ?, ?, ?, ?, ?, 'jpeg', ?, ?, ?, ?)",
        ((i + 1, key, key, key, rows[key][0], rows[key][1], len(rows[key][2]), W, H, W, H)
         for i, key in enumerate(sorted(rows))))
    con.commit()
    con.close()
    total = sum(len(d) for _, d in images)
    print("gen_manifest: %d samples, %d shards, %.1f MB of JPEG in %s" % (a.n, len(shards), total / 1e6, a.out))


if __name__ == "__main__":
    sys.exit(main())
