#!/usr/bin/python3
"""A pixel-space embedding of a collection's decoded working images, for `lvd-embed --import`.

  pixel_embed.py WORK COLLECTION OUT.npy OUT_KEYS.txt [--side 16]

Each row is the working image as side x side grayscale (Pillow bilinear), averaged with its mirror image
(so a flipped copy embeds the same), mean-centred and L2-normalised; line i of OUT_KEYS.txt is the key of
row i. It finds exact and near copies (re-encoded, resized, flipped, slightly brightened) of the same picture
and nothing semantic: the demo uses it because no pretrained ViT weights are on the machine, and a randomly
initialised ViT's embeddings put every picture close to every other."""
import argparse
import io
import os
import sqlite3
import sys

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work")
    ap.add_argument("collection")
    ap.add_argument("out_npy")
    ap.add_argument("out_keys")
    ap.add_argument("--side", type=int, default=16)
    a = ap.parse_args()
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(a.work, "catalog.db"), uri=True)
    rows = con.execute(
        "SELECT m.key, s.path, d.offset, d.size FROM members m JOIN collections c ON c.id = m.collection_id"
        " JOIN decodes d ON d.image_id = m.image_id AND d.status = 'ok' JOIN shards s ON s.id = d.shard_id"
        " WHERE c.name = ? ORDER BY m.key", (a.collection,)).fetchall()
    if not rows:
        sys.exit("pixel_embed.py: collection %r has no decoded images in %s" % (a.collection, a.work))
    emb = np.zeros((len(rows), a.side * a.side), np.float32)
    for i, (key, path, off, size) in enumerate(rows):
        with open(os.path.join(a.work, path), "rb") as f:
            f.seek(off)
            img = Image.open(io.BytesIO(f.read(size))).convert("L")
        g = np.asarray(img.resize((a.side, a.side), Image.BILINEAR), np.float64)
        g = (g + g[:, ::-1]).ravel()
        g -= g.mean()
        n = np.linalg.norm(g)
        emb[i] = g / n if n > 0 else 0
        emb[i, 0] += 0 if n > 0 else 1  # a flat image: any unit vector, all flat images alike
    np.save(a.out_npy, emb)
    with open(a.out_keys, "w") as f:
        f.writelines(k + "\n" for k, _, _, _ in rows)
    print("pixel_embed.py: %d rows of %d floats -> %s" % (len(rows), emb.shape[1], a.out_npy))


if __name__ == "__main__":
    main()
