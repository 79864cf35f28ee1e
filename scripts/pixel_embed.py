#!/usr/bin/python3
"""A pixel-space copy descriptor of a collection's decoded working images, for `lvd-embed --import`.

  pixel_embed.py WORK COLLECTION OUT.npy OUT_KEYS.txt

Row i of OUT.npy is descriptor() of the working image of the key on line i of OUT_KEYS.txt: 180 float32,
L2-normalised, compared by cosine. It finds exact and near copies of the same picture (re-encoded, resized,
centre-cropped to 90%, mirrored, brightened) and nothing semantic: the demo and the dedup test use it because
no pretrained ViT weights are on the machine, and a randomly initialised ViT's embeddings put every picture
close to every other. No learned parameters: numpy and Pillow only.

The descriptor, and why each step:
  1. Grayscale: the copies change encoding and brightness, never the layout; colour adds nothing.
  2. ZOOMS centred views of the image, each RATIO times the previous one (1, 0.9, 0.81 ... 0.48 of the width
     and height), each resampled to SIDE x SIDE. A 90% centre crop, resampled to the working size, is the
     original's 0.9 view: its views are the original's views shifted by one level, 7 of the 8 are shared. Summed
     over the levels (step 4) the descriptor barely moves under such a zoom, which single-scale pixels do (a 10%
     zoom moves the outline of a picture by several pixels, more than two distinct Fashion-MNIST trousers
     differ).
  3. Per view, orientation histograms of the gradients (HOG): BINS unsigned orientations (linear between the
     two nearest bin centres), weighted by gradient magnitude, pooled into CELLS x CELLS cells with tent
     weights (each pixel shared by its nearest cells, so a shift of a fraction of a cell changes little).
     Gradients ignore the mean level, and the per-view L2 normalisation ignores contrast: a brightened copy
     keeps its histograms, saturation only flattens the nearly flat light background. Edge directions
     separate distinct pictures better than raw intensities, which are dominated by one blob on a background.
     A mirrored image has the mirrored cells and the mirrored orientations (theta -> pi - theta, bin b ->
     BINS-1-b): adding that mirror image of the histograms makes the view exactly flip-invariant.
  4. Sum of the unit-normalised views (each zoom level weighs the same), square root of every bin (Hellinger
     normalisation: the few strong outline bins no longer drown the weaker ones), L2 normalisation.
On the Fashion-MNIST fixtures copies then have cosine >= 0.994 with their originals (>= 0.996 but for some 90%
crops) and distinct pictures < 0.996 but for a few near-identical ones (trousers; pictures the dataset holds
twice): the demo and the dedup test use thresholds of 0.995-0.996. Other pictures need their own threshold."""
import argparse
import io
import os
import sqlite3
import sys

import numpy as np
from PIL import Image

SIDE, CELLS, BINS, ZOOMS, RATIO = 32, 3, 20, 8, 0.9
DIM = CELLS * CELLS * BINS


def _tent(n, cells):
    """(cells, n) weights: pixel centre j of n shared linearly between the two nearest of `cells` cell centres."""
    c = (np.arange(n) + 0.5) / n * cells - 0.5
    return np.maximum(0.0, 1.0 - np.abs(c[None, :] - np.arange(cells)[:, None]))


_POOL = _tent(SIDE, CELLS)


def _hog(a):
    """(CELLS, CELLS, BINS) magnitude-weighted unsigned gradient-orientation histograms of a (SIDE, SIDE)."""
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, 1:-1] = a[:, 2:] - a[:, :-2]
    gy[1:-1, :] = a[2:, :] - a[:-2, :]
    mag = np.hypot(gx, gy)
    t = np.mod(np.arctan2(gy, gx), np.pi) / np.pi * BINS - 0.5  # position between bin centres
    b0 = np.floor(t).astype(np.int64)
    f = t - b0
    o = np.zeros(a.shape + (BINS,))
    yy, xx = np.indices(a.shape)
    o[yy, xx, b0 % BINS] += mag * (1 - f)
    o[yy, xx, (b0 + 1) % BINS] += mag * f
    return np.einsum("ys,sxb,zx->yzb", _POOL, o, _POOL)


def descriptor(img):
    """DIM float64, unit L2 norm, of a PIL image (any mode). A flat image (no gradient) gets e_0: all flat
    images are alike."""
    img = img.convert("F")
    w, h = img.size
    acc = np.zeros((CELLS, CELLS, BINS))
    for j in range(ZOOMS):
        s = RATIO ** j
        box = ((w - w * s) / 2, (h - h * s) / 2, (w + w * s) / 2, (h + h * s) / 2)
        hg = _hog(np.asarray(img.resize((SIDE, SIDE), Image.BILINEAR, box=box), np.float64))
        hg = hg + hg[:, ::-1, ::-1]  # + the mirror image's histograms: flip-invariant
        n = np.linalg.norm(hg)
        if n > 0:
            acc += hg / n
    v = np.sqrt(acc.ravel())
    n = np.linalg.norm(v)
    if n == 0:
        v[0] = 1.0
        return v
    return v / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work")
    ap.add_argument("collection")
    ap.add_argument("out_npy")
    ap.add_argument("out_keys")
    a = ap.parse_args()
    catalog = os.path.join(a.work, "catalog.db")
    if not os.path.isfile(catalog):
        sys.exit("pixel_embed.py: %s: no catalog (not a work directory?)" % catalog)
    con = sqlite3.connect("file:%s?mode=ro" % catalog, uri=True)
    rows = con.execute(
        "SELECT m.key, s.path, d.offset, d.size FROM members m JOIN collections c ON c.id = m.collection_id"
        " JOIN decodes d ON d.image_id = m.image_id AND d.status = 'ok' JOIN shards s ON s.id = d.shard_id"
        " WHERE c.name = ? ORDER BY m.key", (a.collection,)).fetchall()
    if not rows:
        sys.exit("pixel_embed.py: collection %r has no decoded images in %s" % (a.collection, a.work))
    emb = np.zeros((len(rows), DIM), np.float32)
    for i, (key, path, off, size) in enumerate(rows):
        with open(os.path.join(a.work, path), "rb") as f:
            f.seek(off)
            emb[i] = descriptor(Image.open(io.BytesIO(f.read(size))))
    np.save(a.out_npy, emb)
    with open(a.out_keys, "w") as f:
        f.writelines(k + "\n" for k, _, _, _ in rows)
    print("pixel_embed.py: %d rows of %d floats -> %s" % (len(rows), emb.shape[1], a.out_npy))


if __name__ == "__main__":
    main()
