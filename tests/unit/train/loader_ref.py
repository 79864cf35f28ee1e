#!/usr/bin/python3
"""Fixture of test_loader: a small manifest per schemas/manifest-001.sql, written with Pillow and tarfile (no
lvd code): 23 JPEG/WebP pictures of assorted sizes and one sample whose bytes are not an image, weights 1 or 2,
in two tar shards.

    loader_ref.py make DIR      writes DIR/m.db and DIR/shards/, prints the 0-based index of the bad sample
    loader_ref.py bad DIR       the same layout with the bad sample alone (nothing can be read)
"""
import hashlib
import io
import os
import sqlite3
import sys
import tarfile

import numpy as np
from PIL import Image

ROOT = os.environ.get("LVD_SOURCE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def main():
    out = sys.argv[2]
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    rng = np.random.default_rng(5)
    items = []
    for i in range(23):
        w, h = int(rng.integers(40, 120)), int(rng.integers(30, 100))
        yy, xx = np.mgrid[0:h, 0:w]
        px = np.stack([(xx * 255 // w), (yy * 255 // h), np.full((h, w), (i * 37) % 256)], -1).astype(np.uint8)
        px = np.clip(px.astype(int) + rng.integers(-20, 20, px.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        fmt = "WEBP" if i % 5 == 0 else "JPEG"
        Image.fromarray(px).save(buf, format=fmt, quality=90)
        items.append((buf.getvalue(), fmt.lower(), w, h, 1 + i % 2))
    items.append((b"\xff\xd8\xff\xe0 this is not a picture" * 3, "jpeg", 50, 40, 1))
    if sys.argv[1] == "bad":
        items = [items[-1], (b"\x00 neither is this" * 4, "jpeg", 50, 40, 2)]
    rows = []
    for s in range(2):
        rel = "shards/img-%06d.tar" % s
        with tarfile.open(os.path.join(out, rel), "w", format=tarfile.USTAR_FORMAT) as tf:
            for data, fmt, w, h, wt in items[s::2]:
                key = hashlib.sha256(data).hexdigest()
                ti = tarfile.TarInfo(key + ".jpg")
                ti.size = len(data)
                rows.append((key, s + 1, tf.offset + 512, len(data), fmt, w, h, wt))
                tf.addfile(ti, io.BytesIO(data))
            end = tf.offset
        with open(os.path.join(out, rel), "rb") as f:
            sha = hashlib.sha256(f.read(end)).hexdigest()
        rows_sh = (s + 1, rel, end, sha)
        if s == 0:
            shards = [rows_sh]
        else:
            shards.append(rows_sh)
    rows.sort()
    con = sqlite3.connect(os.path.join(out, "m.db"))
    con.executescript(open(os.path.join(ROOT, "schemas", "manifest-001.sql")).read())
    con.executemany("INSERT INTO info VALUES (?, ?)", [("schema_version", "1"), ("name", "t"),
                                                     ("created_at", "2026-01-01T00:00:00Z")])
    con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?)", shards)
    con.executemany("INSERT INTO samples (id, key, image_sha256, data_sha256, shard_id, offset, length, format,"
                    " width, height, orig_width, orig_height, weight) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(i + 1, k, k, k, sh, off, ln, fmt, w, h, w, h, wt)
                     for i, (k, sh, off, ln, fmt, w, h, wt) in enumerate(rows)])
    con.commit()
    bad = hashlib.sha256(items[-1][0]).hexdigest()
    print([r[0] for r in rows].index(bad))


if __name__ == "__main__":
    main()
