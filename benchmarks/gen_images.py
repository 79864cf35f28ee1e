#!/usr/bin/python3
"""Benchmark pictures: N distinct JPEGs of 30-100 KB in DIR, named img_NNNNNN.jpg.

Each file is Fashion-MNIST picture i (scripts/fixtures.py picture(), coloured by class) upscaled to a
random size between 512x384 and 800x600 (a third of them portrait), with per-file Gaussian noise so that
the files look like photographs to a JPEG codec and no two files share bytes (lvd addresses images by
content: repeated bytes would skip decode work). The noise level is adjusted until the file lands in
30-100 KB. Deterministic per index; files already present are kept, so a cache can grow from a --quick
run to a full one. Files are written under a temporary name and renamed, so an interrupted run leaves
no truncated file.

Usage: gen_images.py DIR N    (prints a one-line summary)
"""
import io
import multiprocessing
import os
import random
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import fixtures  # noqa: E402

MIN_BYTES = 30 * 1024
MAX_BYTES = 100 * 1024


def name(i):
    return "img_%06d.jpg" % i


def make(args):
    """Writes picture i into dir unless present; returns its size in bytes."""
    dir, i = args
    path = os.path.join(dir, name(i))
    if os.path.exists(path):
        return os.path.getsize(path)
    rng = random.Random(1000003 * i + 7)
    w, h = rng.randint(512, 800), rng.randint(384, 600)
    if rng.random() < 1 / 3:
        w, h = h, w
    n_train = len(fixtures.fashion("train")[1])
    base = np.asarray(fixtures.picture(i % n_train, size=(w, h)), dtype=np.int16)   # (H,W,3)
    noise = np.random.default_rng(i).normal(0.0, 1.0, base.shape).astype(np.float32)
    sigma = rng.uniform(4.5, 7.0)
    for _ in range(8):
        img = Image.fromarray(np.clip(base + noise * sigma + 0.5, 0, 255).astype(np.uint8), "RGB")
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        if len(data) < MIN_BYTES:
            sigma *= 1.3
        elif len(data) > MAX_BYTES:
            sigma *= 0.75
        else:
            break
    else:
        raise RuntimeError("%s: could not reach %d..%d bytes (last %d)" % (path, MIN_BYTES, MAX_BYTES, len(data)))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
    return len(data)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen_images.py DIR N")
    dir, n = sys.argv[1], int(sys.argv[2])
    os.makedirs(dir, exist_ok=True)
    fixtures.fashion("train")   # parse once before forking
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        sizes = pool.map(make, [(dir, i) for i in range(n)], chunksize=32)
    print("gen_images: %d files in %s, %.1f MB, %d..%d KB each" %
          (n, dir, sum(sizes) / 1e6, min(sizes) // 1024, max(sizes) // 1024))


if __name__ == "__main__":
    main()
