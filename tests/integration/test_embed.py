"""lvd-embed end to end on real pictures (Fashion-MNIST via scripts/fixtures.py), imported with lvd-import and
decoded with lvd-decode, with a small deterministic random ViT (lvd-vit init).

Expected vectors are computed independently of lvd-embed: the working image is read back through the
catalog, preprocessed here with Pillow (BICUBIC resize of the shorter side, torchvision's CenterCrop rounding)
and numpy (ImageNet normalisation), and run through the model with `lvd-vit forward`; pooling and
normalisation are done here with numpy.
"""
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
from PIL import Image

from lvdtest import eval_preprocess, WorkTestCase, db, exe, run, sha256_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fixtures  # noqa: E402

N_POOL = 36


def preprocess(img, resize=256, crop=224):
    return eval_preprocess(img, resize, crop)


def working_image(work, con, image_id):
    path, off, size = con.execute("SELECT s.path, d.offset, d.size FROM decodes d JOIN shards s ON s.id = d.shard_id"
                                  " WHERE d.image_id = ?", (image_id,)).fetchone()
    with open(os.path.join(work, path), "rb") as f:
        f.seek(off)
        return Image.open(io.BytesIO(f.read(size))).convert("RGB")


def decoded_ok(work):
    """{image_id: sha256} of every image with a working image."""
    with db(work) as con:
        return dict(con.execute("SELECT d.image_id, i.sha256 FROM decodes d JOIN images i ON i.id = d.image_id"
                                " WHERE d.status = 'ok'"))


def embeddings(work, name):
    """{image_id: vector (float32)} read through the catalog's (file, row), plus {image_id: (file, row)}."""
    with db(work) as con:
        rows = con.execute("SELECT e.image_id, e.file, e.row FROM embeddings e JOIN models m ON m.id = e.model_id"
                           " WHERE m.name = ?", (name,)).fetchall()
    files, vec, where = {}, {}, {}
    for iid, f, r in rows:
        if f not in files:
            files[f] = np.load(os.path.join(work, f))
        assert r < files[f].shape[0], (f, r, files[f].shape)
        vec[iid] = files[f][r].astype(np.float32)
        where[iid] = (f, r)
    return vec, where, files


def stored_bits(work, name):
    """{image_id: bytes of its stored row} (float16 or float32 as written), through the catalog's (file, row)."""
    _, where, files = embeddings(work, name)
    return {iid: files[f][r].tobytes() for iid, (f, r) in where.items()}


def dedup_outcome(work, name):
    """What lvd-dedup decided, without run ids: every image's (decision, component, kept image) and every
    component's (size, kept image)."""
    with db(work) as con:
        dec = sorted(con.execute("SELECT d.image_id, d.decision, d.component, d.kept_image_id FROM dedup_decisions d"
                                 " JOIN models m ON m.id = d.model_id WHERE m.name = ?", (name,)))
        comps = sorted(con.execute("SELECT c.component, c.size, c.kept_image_id FROM dedup_components c"
                                   " JOIN models m ON m.id = c.model_id WHERE m.name = ?", (name,)))
    return dec, comps


def model_forward(tmp, model, x, kind):
    """lvd-vit forward on x (B, 3, H, W): (B, D) for cls, (B, N, D) for patch."""
    xi, yo = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
    np.save(xi, np.ascontiguousarray(x, dtype=np.float32))
    run("lvd-vit", "forward", "--model", model, "--input", xi, "--output", yo, "--output-kind", kind, "--quiet")
    return np.load(yo).astype(np.float32)


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def reference(tmp, work, model, ids, pool="cls", resize=256, crop=224):
    """Independent expected embeddings {image_id: vector} for the given images."""
    ids = sorted(ids)
    with db(work) as con:
        x = np.stack([preprocess(working_image(work, con, i), resize, crop) for i in ids])
    cls = model_forward(tmp, model, x, "cls")
    if pool == "cls":
        feat = unit(cls)
    else:
        mean = model_forward(tmp, model, x, "patch").mean(axis=1)
        feat = unit(mean) if pool == "mean" else unit(np.concatenate([cls, mean], axis=1))
    return dict(zip(ids, feat))


def embed(work, model, *args, check=True):
    p = run("lvd-embed", "--work", work, "--model", model, "--json", "--threads", "2", *args, check=check)
    return p, (json.loads(p.stdout) if p.returncode == 0 else None)


class EmbedTest(WorkTestCase):
    @classmethod
    def setUpClass(cls):
        """One decoded work directory (pool + a benchmark sharing some images) and one model for every test;
        each test works on its own copy."""
        cls.base = tempfile.mkdtemp(prefix="lvd-it-embed-")
        files = os.path.join(cls.base, "files")
        cls.pool = fixtures.write_pool(files, N_POOL, seed=21, dup_exact=0, dup_near=3)
        bench = os.path.join(cls.base, "bench")
        os.makedirs(bench)
        # The benchmark shares four images with the pool and has two of its own.
        for p in cls.pool[:4]:
            shutil.copyfile(p["path"], os.path.join(bench, p["name"]))
        for k, idx in enumerate((7, 11)):
            fixtures.picture(idx, "t10k", (150 + 40 * k, 200)).save(os.path.join(bench, "own_%d.png" % k))
        cls.work0 = os.path.join(cls.base, "work")
        run("lvd-import", "--work", cls.work0, "--collection", "pool", "--role", "pool", "--dir", files, "--quiet")
        run("lvd-import", "--work", cls.work0, "--collection", "bench", "--role", "benchmark", "--dir", bench,
            "--quiet")
        run("lvd-decode", "--work", cls.work0, "--size", "320", "--quiet")
        cls.model = os.path.join(cls.base, "pico.safetensors")
        run("lvd-vit", "init", "--arch", "vit_pico", "--seed", "7", "--out", cls.model, "--quiet")
        cls.ids = decoded_ok(cls.work0)
        assert len(cls.ids) == N_POOL + 3 + 2, len(cls.ids)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    def setUp(self):
        super().setUp()
        shutil.copytree(self.work0, self.work)

    def assertVectors(self, got, want, tol):
        self.assertEqual(set(got), set(want))
        for i in want:
            err = float(np.abs(got[i] - want[i]).max())
            self.assertLessEqual(err, tol, "image %d: max |diff| %g" % (i, err))

    def assertUnitRows(self, vec, tol):
        norms = np.array([np.linalg.norm(v) for v in vec.values()])
        self.assertLess(float(np.abs(norms - 1).max()), tol, norms)

    def test_embeddings_equal_the_model_on_independently_preprocessed_images(self):
        p, s = embed(self.work, self.model, "--name", "pico", "--batch", "8")
        self.assertEqual(s["embedded"], len(self.ids))
        self.assertEqual(s["dim"], 64)
        vec, where, files = embeddings(self.work, "pico")
        # Every decoded image exactly once (images in both collections too), each row readable.
        self.assertEqual(set(vec), set(self.ids))
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM embeddings").fetchone()[0], len(self.ids))
            name, sha, prep, dim = con.execute("SELECT name, sha256, preprocess, dim FROM models").fetchone()
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(con.execute("PRAGMA foreign_key_check").fetchall(), [])
            shared = {r[0] for r in con.execute(
                "SELECT m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                " WHERE c.name = 'bench' AND m.image_id IN (SELECT image_id FROM members m2 JOIN collections c2"
                " ON c2.id = m2.collection_id WHERE c2.name = 'pool')")}
        self.assertEqual(len(shared), 4)
        self.assertEqual((name, sha, dim), ("pico", hashlib.sha256(open(self.model, "rb").read()).hexdigest(), 64))
        self.assertEqual(json.loads(prep), {"resize": 256, "crop": 224, "pool": "cls", "dtype": "float16"})
        # Layout: embeddings/<name>/<collection>/part-NNNNNN.npy, float16, (rows, 64).
        self.assertEqual(sorted(files), ["embeddings/pico/bench/part-000000.npy", "embeddings/pico/pool/part-000000.npy"])
        self.assertEqual(files["embeddings/pico/bench/part-000000.npy"].shape, (2, 64))
        for a in files.values():
            self.assertEqual(a.dtype, np.float16)
        # Shared images live with the first collection (pool).
        for i in shared:
            self.assertTrue(where[i][0].startswith("embeddings/pico/pool/"))
        self.assertUnitRows(vec, 1e-3)
        self.assertVectors(vec, reference(self.tmp, self.work, self.model, self.ids), 5e-4)
        # Distinct pictures give distinct embeddings (the check above would not notice a constant output).
        v = np.stack(list(vec.values()))
        self.assertLess(float((v @ v.T)[np.triu_indices(len(v), 1)].min()), 0.999)

    def test_float32_pools_and_geometry_options(self):
        embed(self.work, self.model, "--name", "cm", "--dtype", "float32", "--pool", "cls+mean",
              "--collection", "pool")
        vec, _, files = embeddings(self.work, "cm")
        for a in files.values():
            self.assertEqual((a.dtype, a.shape[1]), (np.float32, 128))
        self.assertUnitRows(vec, 1e-5)
        ref = reference(self.tmp, self.work, self.model, vec, pool="cls+mean")
        self.assertVectors(vec, ref, 1e-5)
        # --collection bench only: its six images, the four it shares with the pool included (new model name).
        embed(self.work, self.model, "--name", "mean", "--dtype", "float32", "--pool", "mean", "--resize", "160",
              "--crop", "140", "--collection", "bench")
        vec, _, _ = embeddings(self.work, "mean")
        self.assertEqual(len(vec), 6)
        self.assertVectors(vec, reference(self.tmp, self.work, self.model, vec, pool="mean", resize=160, crop=140), 1e-5)

    def test_usage_and_identity_errors(self):
        p, _ = embed(self.work, self.model, "--crop", "100", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--crop 100 is not a multiple of the model's patch size 14", p.stderr)
        p, _ = embed(self.work, self.model, "--crop", "280", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--crop must not exceed --resize", p.stderr)
        p = run("lvd-embed", "--work", self.work, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--model", p.stderr)
        p, _ = embed(self.work, self.model, "--pool", "max", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--pool", p.stderr)
        p, _ = embed(self.work, self.model, "--name", "../x", check=False)
        self.assertEqual(p.returncode, 2)
        p, _ = embed(self.work, self.model, "--collection", "nope", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope", p.stderr)
        p, _ = embed(self.work, os.path.join(self.tmp, "missing.safetensors"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing.safetensors", p.stderr)
        # The same name with other preprocessing or other weights is refused; --force moves the name.
        embed(self.work, self.model, "--name", "m", "--collection", "bench")
        p, _ = embed(self.work, self.model, "--name", "m", "--collection", "bench", "--resize", "240", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model name 'm' is recorded", p.stderr)
        self.assertIn("--force", p.stderr)
        other = os.path.join(self.tmp, "other.safetensors")
        run("lvd-vit", "init", "--arch", "vit_pico", "--seed", "8", "--out", other, "--quiet")
        p, _ = embed(self.work, other, "--name", "m", "--collection", "bench", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model name 'm' is recorded", p.stderr)
        p, s = embed(self.work, other, "--name", "m", "--collection", "bench", "--force")
        self.assertEqual(s["embedded"], 6)
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT sha256 FROM models WHERE name = 'm'").fetchone()[0],
                             hashlib.sha256(open(other, "rb").read()).hexdigest())
        vec, _, _ = embeddings(self.work, "m")
        self.assertVectors(vec, reference(self.tmp, self.work, other, vec), 5e-4)
        # --force with the same identity redoes the named collection only.
        p, s = embed(self.work, other, "--name", "m")
        self.assertEqual(s["embedded"], len(self.ids) - 6)
        _, before, _ = embeddings(self.work, "m")
        p, s = embed(self.work, other, "--name", "m", "--collection", "bench", "--force")
        self.assertEqual(s["embedded"], 6)
        vec, after, _ = embeddings(self.work, "m")
        self.assertEqual(set(vec), set(self.ids))
        self.assertEqual({i: w for i, w in after.items() if "/pool/" in w[0]},
                         {i: w for i, w in before.items() if "/pool/" in w[0]})

    def test_incremental_and_orphan_files(self):
        embed(self.work, self.model, "--name", "pico", "--collection", "pool")
        vec0, where0, _ = embeddings(self.work, "pico")
        p, s = embed(self.work, self.model, "--name", "pico", "--collection", "pool")
        self.assertEqual(s["embedded"], 0)
        self.assertIn("0 new", p.stderr)
        # An orphan at the next file number (a file written, then a crash before its rows were committed)
        # is replaced by the next run, not trusted.
        orphan = os.path.join(self.work, "embeddings/pico/pool/part-000001.npy")
        with open(orphan, "wb") as f:
            f.write(b"garbage from a crashed run")
        more = os.path.join(self.tmp, "more")
        added = fixtures.write_pool(more, 5, seed=99, dup_exact=0, dup_near=0, split="t10k")
        run("lvd-import", "--work", self.work, "--collection", "pool", "--role", "pool", "--dir", more, "--quiet")
        run("lvd-decode", "--work", self.work, "--size", "320", "--quiet")
        p, s = embed(self.work, self.model, "--name", "pico", "--collection", "pool")
        self.assertEqual(s["embedded"], 5)
        vec, where, files = embeddings(self.work, "pico")
        self.assertEqual(len(vec), len(vec0) + 5)
        for i in vec0:
            self.assertEqual(where[i], where0[i])
            self.assertTrue(np.array_equal(vec[i], vec0[i]))
        new = set(vec) - set(vec0)
        self.assertEqual({where[i][0] for i in new}, {"embeddings/pico/pool/part-000001.npy"})
        self.assertEqual(np.load(orphan).shape, (5, 64))
        self.assertVectors({i: vec[i] for i in new}, reference(self.tmp, self.work, self.model, new), 5e-4)

    def test_two_parts_and_merge_equal_one_run(self):
        one = os.path.join(self.tmp, "one")
        shutil.copytree(self.work, one)
        embed(one, self.model, "--name", "pico", "--dtype", "float32")
        embed(self.work, self.model, "--name", "pico", "--dtype", "float32", "--part", "0/2")
        embed(self.work, self.model, "--name", "pico", "--dtype", "float32", "--part", "1/2")
        with db(self.work) as con:
            self.assertEqual(con.execute("SELECT count(*) FROM embeddings").fetchone()[0], 0, "parts do not write catalog.db")
        p = run("lvd-embed", "--work", self.work, "--merge", "--json")
        self.assertEqual(json.loads(p.stdout)["merged_parts"], 2)
        a, wa, fa = embeddings(self.work, "pico")
        b, _, _ = embeddings(one, "pico")
        self.assertEqual(set(a), set(self.ids))
        # Bit for bit: the parts batch other images together than the single run (common/vit.h).
        bits_a, bits_b = stored_bits(self.work, "pico"), stored_bits(one, "pico")
        self.assertEqual(sorted(i for i in bits_a if bits_a[i] != bits_b[i]), [], "images whose rows differ")
        self.assertTrue(all(f.startswith("embeddings/pico/") and "/part-p" in f for f in fa))
        self.assertEqual({f.split("/part-")[1][:5] for f in fa}, {"p0of2", "p1of2"})
        with db(self.work) as con, db(one) as con1:
            q = "SELECT name, sha256, preprocess, dim FROM models"
            self.assertEqual(con.execute(q).fetchall(), con1.execute(q).fetchall())
            self.assertEqual(con.execute("PRAGMA foreign_key_check").fetchall(), [])
        p, s = embed(self.work, self.model, "--name", "pico", "--dtype", "float32")
        self.assertEqual(s["embedded"], 0)
        # A second partitioned round after new images never overwrites the merged files.
        more = os.path.join(self.tmp, "more")
        fixtures.write_pool(more, 6, seed=98, dup_exact=0, dup_near=0, split="t10k")
        run("lvd-import", "--work", self.work, "--collection", "pool", "--role", "pool", "--dir", more, "--quiet")
        run("lvd-decode", "--work", self.work, "--size", "320", "--quiet")
        for k in range(2):
            embed(self.work, self.model, "--name", "pico", "--dtype", "float32", "--part", "%d/2" % k)
        run("lvd-embed", "--work", self.work, "--merge")
        c, _, fc = embeddings(self.work, "pico")
        self.assertEqual(len(c), len(self.ids) + 6)
        self.assertVectors({i: c[i] for i in a}, a, 0)
        new_files = set(fc) - set(fa)
        self.assertTrue(new_files)
        self.assertTrue(all(f.endswith("-000001.npy") for f in new_files), new_files)

    def test_parts_and_batch_sizes_store_the_same_bits_and_dedup_decides_the_same(self):
        # An image's row does not depend on the images batched with it nor on the thread count (common/vit.h):
        # one run at the default batch (32 + 9 images) and two parts at other batch sizes and thread counts,
        # merged, store the same float16 bits for every image, so lvd-dedup decides the same on both.
        one = os.path.join(self.tmp, "one")
        shutil.copytree(self.work, one)
        embed(one, self.model, "--name", "pico")
        embed(self.work, self.model, "--name", "pico", "--part", "0/2", "--batch", "8", "--threads", "1")
        embed(self.work, self.model, "--name", "pico", "--part", "1/2", "--batch", "5", "--threads", "2")
        run("lvd-embed", "--work", self.work, "--merge")
        a, b = stored_bits(one, "pico"), stored_bits(self.work, "pico")
        self.assertEqual(set(a), set(self.ids))
        self.assertEqual(set(b), set(self.ids))
        self.assertEqual(sorted(i for i in a if a[i] != b[i]), [], "images whose rows differ")
        # Thresholds from the data (a random model's similarities are not DINOv2's): joining the closest 3% of
        # pool pairs, and removing pool images whose benchmark match is near 1 (the four images the pool shares
        # with the benchmark and their components), gives components, kept images and both kinds of removal.
        vec, _, _ = embeddings(one, "pico")
        with db(one) as con:
            pool = sorted({i for (i,) in con.execute("SELECT m.image_id FROM members m JOIN collections c"
                                                     " ON c.id = m.collection_id WHERE c.role = 'pool'")})
        P = np.stack([vec[i] for i in pool]).astype(np.float64)
        thr = float(np.quantile((P @ P.T)[np.triu_indices(len(pool), 1)], 0.97))
        args = ["--model", "pico", "--threshold", "%.6f" % thr, "--benchmark-threshold", "0.995", "--quiet"]
        run("lvd-dedup", "--work", one, *args)
        run("lvd-dedup", "--work", self.work, *args)
        dec, comps = dedup_outcome(one, "pico")
        self.assertEqual(len(dec), len(pool))
        self.assertEqual({d for _, d, _, _ in dec}, {"kept", "duplicate", "benchmark"})
        self.assertGreater(max(n for _, n, _ in comps), 2)
        dec2, comps2 = dedup_outcome(self.work, "pico")
        removed = [sorted(i for i, d, _, _ in x if d != "kept") for x in (dec, dec2)]
        self.assertEqual(removed[1], removed[0], "removed images")
        self.assertEqual(comps2, comps, "components: size and kept image")
        self.assertEqual(dec2, dec)

    def test_import_round_trip_and_errors(self):
        embed(self.work, self.model, "--name", "pico", "--collection", "pool")
        vec, _, _ = embeddings(self.work, "pico")
        with db(self.work) as con:
            keys = con.execute("SELECT m.key, m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                               " WHERE c.name = 'pool' ORDER BY m.key DESC").fetchall()
        rows = np.stack([vec[i] for _, i in keys]).astype(np.float32)
        e, k = os.path.join(self.tmp, "e.npy"), os.path.join(self.tmp, "k.txt")

        def write(arr, klist):
            np.save(e, arr)
            with open(k, "w") as f:
                f.write("".join(key + "\n" for key in klist))

        def imp(name, *extra, check=True):
            p = run("lvd-embed", "--work", self.work, "--collection", "pool", "--import", e, "--keys", k,
                    "--name", name, "--json", *extra, check=check)
            return p, (json.loads(p.stdout) if p.returncode == 0 else None)

        klist = [key for key, _ in keys]
        write(rows, klist)
        p, s = imp("copy")
        self.assertEqual(s["embedded"], len(vec))
        self.assertEqual(s["normalised"], 0)
        got, _, _ = embeddings(self.work, "copy")
        self.assertVectors(got, vec, 1e-3)
        with db(self.work) as con:
            sha, prep, dim = con.execute("SELECT sha256, preprocess, dim FROM models WHERE name = 'copy'").fetchone()
        self.assertEqual((sha, prep, dim), (hashlib.sha256(open(e, "rb").read()).hexdigest(), "imported", 64))
        p, s = imp("copy")
        self.assertEqual(s["embedded"], 0)
        self.assertIn("0 new", p.stderr)
        # Unknown keys: the first few are listed with their line numbers.
        bad = list(klist)
        bad[2], bad[5] = "no/such/key.jpg", "neither.png"
        write(rows, bad)
        p, _ = imp("bad", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("2 keys are not in collection 'pool'", p.stderr)
        self.assertIn("line 3 'no/such/key.jpg'", p.stderr)
        self.assertIn("line 6 'neither.png'", p.stderr)
        # Row count different from the key count.
        write(rows[:-1], klist)
        p, _ = imp("bad", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("has %d rows but" % (len(klist) - 1), p.stderr)
        self.assertIn("has %d keys" % len(klist), p.stderr)
        with db(self.work) as con:
            self.assertIsNone(con.execute("SELECT 1 FROM models WHERE name = 'bad'").fetchone())
        # Rows that are not unit length are normalised and counted.
        scaled = rows.copy()
        scaled[[0, 3, 4]] *= np.array([[3.0], [0.25], [-2.0]], dtype=np.float32)
        write(scaled.astype(np.float16), klist)
        p, s = imp("scaled", "--dtype", "float32")
        self.assertEqual(s["normalised"], 3)
        self.assertIn("3 of %d rows were not L2-normalised" % len(klist), p.stderr)
        got, _, files = embeddings(self.work, "scaled")
        self.assertUnitRows(got, 1e-5)
        want = dict(zip([i for _, i in keys], unit(scaled.astype(np.float16).astype(np.float32))))
        self.assertVectors(got, want, 1e-6)
        self.assertEqual({a.dtype for a in files.values()}, {np.dtype(np.float32)})
        # A key listed twice would give one member two rows: an error naming the key and both lines (the first
        # repeat of each key, a few keys at most), nothing written.
        n = len(klist)
        twice = klist[:3] + [klist[1]] + klist[3:] + [klist[0], klist[1]]
        write(np.concatenate([rows[:3], -rows[1:2], rows[3:], -rows[:2]]), twice)
        p, _ = imp("twice", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("2 keys are listed more than once", p.stderr)
        self.assertIn("'%s' on lines 2 and 4" % klist[1], p.stderr)
        self.assertIn("'%s' on lines 1 and %d" % (klist[0], n + 2), p.stderr)
        self.assertNotIn("'%s' on lines 4 and" % klist[1], p.stderr)
        with db(self.work) as con:
            self.assertIsNone(con.execute("SELECT 1 FROM models WHERE name = 'twice'").fetchone())
        self.assertFalse(os.path.exists(os.path.join(self.work, "embeddings", "twice")))
        # Two keys of one image (the same bytes under two names) are two members: the image keeps the row of
        # its first line, and the other is counted.
        same = os.path.join(self.tmp, "same")
        os.makedirs(same)
        with db(self.work) as con:
            path, off, size = con.execute("SELECT s.path, i.offset, i.bytes FROM images i JOIN shards s"
                                          " ON s.id = i.shard_id WHERE i.id = ?", (keys[0][1],)).fetchone()
        with open(os.path.join(self.work, path), "rb") as f:
            f.seek(off)
            data = f.read(size)
        for name in ("one.img", "two.img"):
            with open(os.path.join(same, name), "wb") as f:
                f.write(data)
        run("lvd-import", "--work", self.work, "--collection", "same", "--role", "seed", "--dir", same, "--quiet")
        np.save(e, np.stack([rows[0], -rows[0]]))
        with open(k, "w") as f:
            f.write("two.img\none.img\n")
        p = run("lvd-embed", "--work", self.work, "--collection", "same", "--import", e, "--keys", k,
                "--name", "same", "--json")
        s = json.loads(p.stdout)
        self.assertEqual((s["embedded"], s["duplicate_images"]), (1, 1))
        got, _, _ = embeddings(self.work, "same")
        self.assertVectors(got, {keys[0][1]: vec[keys[0][1]]}, 1e-3)
        # Usage: --import needs --keys and one --collection.
        p = run("lvd-embed", "--work", self.work, "--import", e, "--collection", "pool", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--keys", p.stderr)

    def test_collection_name_not_ascii_keeps_its_files(self):
        """A collection named 'café' (5 bytes, 4 characters): each run continues after the collection's last file,
        so rows written by earlier runs stay where the catalog says they are."""
        src = os.path.join(self.tmp, "cafe-files")
        fixtures.write_pool(src, 6, seed=61, dup_exact=0, dup_near=0, split="t10k")
        run("lvd-import", "--work", self.work, "--collection", "café", "--role", "benchmark", "--dir", src, "--quiet")
        run("lvd-decode", "--work", self.work, "--size", "320", "--quiet")
        with db(self.work) as con:
            keys = con.execute("SELECT m.key, m.image_id FROM members m JOIN collections c ON c.id = m.collection_id"
                               " WHERE c.name = ? ORDER BY m.key", ("café",)).fetchall()
        self.assertEqual(len({i for _, i in keys}), 6)
        rng = np.random.default_rng(11)
        truth = {i: unit(rng.standard_normal(16)).astype(np.float32) for _, i in keys}
        for n, part in enumerate((keys[:3], keys[3:])):
            e, k = os.path.join(self.tmp, "e%d.npy" % n), os.path.join(self.tmp, "k%d.txt" % n)
            np.save(e, np.stack([truth[i] for _, i in part]))
            with open(k, "w") as f:
                f.write("".join(key + "\n" for key, _ in part))
            p = run("lvd-embed", "--work", self.work, "--collection", "café", "--import", e, "--keys", k,
                    "--name", "ext", "--dtype", "float32", "--json")
            self.assertEqual(json.loads(p.stdout)["embedded"], 3)
        vec, where, files = embeddings(self.work, "ext")
        self.assertEqual(sorted(files), ["embeddings/ext/café/part-000000.npy", "embeddings/ext/café/part-000001.npy"])
        self.assertEqual({where[i][0] for _, i in keys[:3]}, {"embeddings/ext/café/part-000000.npy"})
        self.assertEqual({where[i][0] for _, i in keys[3:]}, {"embeddings/ext/café/part-000001.npy"})
        self.assertVectors(vec, truth, 1e-6)
        # A checkpoint run into the collection, then one more for a new member: a file each, none overwritten.
        embed(self.work, self.model, "--name", "pico", "--collection", "café", "--file-rows", "4")
        _, where0, _ = embeddings(self.work, "pico")
        more = os.path.join(self.tmp, "cafe-more")
        # (in a subfolder: its key must not be one of the first folder's file names)
        fixtures.write_pool(os.path.join(more, "new"), 1, seed=62, dup_exact=0, dup_near=0, split="t10k")
        run("lvd-import", "--work", self.work, "--collection", "café", "--role", "benchmark", "--dir", more,
            "--quiet")
        run("lvd-decode", "--work", self.work, "--size", "320", "--quiet")
        p, s = embed(self.work, self.model, "--name", "pico", "--collection", "café", "--file-rows", "4")
        self.assertEqual(s["embedded"], 1)
        vec, where, files = embeddings(self.work, "pico")
        self.assertEqual(sorted(files), ["embeddings/pico/café/part-%06d.npy" % n for n in range(3)])
        self.assertEqual({i: w for i, w in where.items() if i in where0}, where0)
        self.assertVectors(vec, reference(self.tmp, self.work, self.model, vec), 5e-4)

    def test_import_several_collections_under_one_name(self):
        """Pool, then benchmark, then new pool members imported under one name, as lvd-dedup needs them."""
        with db(self.work) as con:
            def keys_of(coll):
                return con.execute("SELECT m.key, m.image_id FROM members m JOIN collections c"
                                   " ON c.id = m.collection_id WHERE c.name = ? ORDER BY m.key", (coll,)).fetchall()
            pool_keys, bench_keys = keys_of("pool"), keys_of("bench")
        pool_ids = {i for _, i in pool_keys}
        shared = {i for _, i in bench_keys} & pool_ids
        self.assertEqual(len(shared), 4)
        rng = np.random.default_rng(3)
        D = 40
        truth = {i: unit(rng.standard_normal(D)) for i in self.ids}

        def write(tag, klist, vecs, dim=D):
            e, k = os.path.join(self.tmp, tag + ".npy"), os.path.join(self.tmp, tag + ".txt")
            np.save(e, np.stack([v[:dim] for v in vecs]).astype(np.float32))
            with open(k, "w") as f:
                f.write("".join(key + "\n" for key in klist))
            return e, k

        def imp(coll, e, k, name="ext", *extra, check=True):
            p = run("lvd-embed", "--work", self.work, "--collection", coll, "--import", e, "--keys", k,
                    "--name", name, "--json", *extra, check=check)
            return p, (json.loads(p.stdout) if p.returncode == 0 else None)

        def model_row(name="ext"):
            with db(self.work) as con:
                return con.execute("SELECT id, sha256, preprocess, dim FROM models WHERE name = ?", (name,)).fetchone()

        def last_params():
            with db(self.work) as con:
                return json.loads(con.execute("SELECT params FROM runs WHERE stage = 'embed' ORDER BY id DESC"
                                              " LIMIT 1").fetchone()[0])

        ep, kp = write("pool", [k for k, _ in pool_keys], [truth[i] for _, i in pool_keys])
        p, s = imp("pool", ep, kp)
        self.assertEqual((s["embedded"], s["already_present"]), (len(pool_ids), 0))
        mid, sha, prep, dim = model_row()
        self.assertEqual((sha, prep, dim), (sha256_file(ep), "imported", D))
        self.assertEqual(last_params()["import_sha256"], sha256_file(ep))
        # The benchmark under the same name: its four pool images already have rows and keep them (the file
        # gives them other vectors, which must not be taken); its two own images are added.
        bvec = [-truth[i] if i in shared else truth[i] for _, i in bench_keys]
        eb, kb = write("bench", [k for k, _ in bench_keys], bvec)
        p, s = imp("bench", eb, kb)
        self.assertEqual((s["embedded"], s["already_present"], s["files"]), (2, 4, 1))
        self.assertEqual(s["collections"], {"bench": 2})
        self.assertIn("4 images of 'ext' already present", p.stderr)
        self.assertEqual(model_row(), (mid, sha, "imported", D), "adding rows keeps the model's identity")
        self.assertEqual(s["sha256"], sha)
        self.assertEqual(last_params()["import_sha256"], sha256_file(eb))
        self.assertEqual(last_params()["collection"], "bench")
        vec, where, files = embeddings(self.work, "ext")
        self.assertEqual(set(vec), pool_ids | {i for _, i in bench_keys})
        self.assertVectors(vec, {i: truth[i] for i in vec}, 1e-3)
        self.assertEqual(sorted(files), ["embeddings/ext/bench/part-000000.npy", "embeddings/ext/pool/part-000000.npy"])
        self.assertEqual(files["embeddings/ext/bench/part-000000.npy"].shape, (2, D))
        for i in shared:
            self.assertTrue(where[i][0].startswith("embeddings/ext/pool/"))
        # lvd-dedup works on the one model's pool and benchmark rows.
        p = run("lvd-dedup", "--work", self.work, "--model", "ext", "--json")
        d = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(d["pool_images"], len(pool_ids))
        # The same file again: every image already present, nothing written.
        p, s = imp("pool", ep, kp)
        self.assertEqual((s["embedded"], s["already_present"], s["files"]), (0, len(pool_ids), 0))
        self.assertIn("0 new", p.stderr)
        # New members of an imported collection: a file with every pool key adds only the new images, in the
        # collection's next file; the identity stays, so lvd-dedup takes them as new work, without --force.
        more = os.path.join(self.tmp, "more")
        fixtures.write_pool(more, 5, seed=99, dup_exact=0, dup_near=0, split="t10k")
        run("lvd-import", "--work", self.work, "--collection", "pool", "--role", "pool", "--dir", more, "--quiet")
        run("lvd-decode", "--work", self.work, "--size", "320", "--quiet")
        with db(self.work) as con:
            pool_keys2 = keys_of("pool")
        new_ids = {i for _, i in pool_keys2} - pool_ids
        self.assertEqual(len(new_ids), 5)
        truth.update({i: unit(rng.standard_normal(D)) for i in new_ids})
        ep2, kp2 = write("pool2", [k for k, _ in pool_keys2], [truth[i] for _, i in pool_keys2])
        p, s = imp("pool", ep2, kp2)
        # (the new folder reuses some file names: those keys now name new images, so fewer old images remain)
        self.assertEqual((s["embedded"], s["already_present"]), (5, len({i for _, i in pool_keys2} & pool_ids)))
        self.assertEqual(model_row(), (mid, sha, "imported", D))
        vec, where, _ = embeddings(self.work, "ext")
        self.assertEqual({where[i][0] for i in new_ids}, {"embeddings/ext/pool/part-000001.npy"})
        self.assertVectors(vec, {i: truth[i] for i in vec}, 1e-3)
        p = run("lvd-dedup", "--work", self.work, "--model", "ext", "--json")
        self.assertEqual(json.loads(p.stdout.strip().splitlines()[-1])["new"], 5)
        # --force replaces the collection's rows: the shared images take the benchmark file's vectors now, and
        # the name gets a new identity (neither file's), so lvd-dedup no longer trusts its earlier decisions.
        p, s = imp("bench", eb, kb, "ext", "--force")
        self.assertEqual((s["embedded"], s["already_present"]), (6, 0))
        mid2, sha2, _, _ = model_row()
        self.assertEqual(mid2, mid)
        self.assertNotIn(sha2, (sha, sha256_file(eb), sha256_file(ep2)))
        vec, _, _ = embeddings(self.work, "ext")
        self.assertVectors({i: vec[i] for _, i in bench_keys}, dict((i, v) for (_, i), v in zip(bench_keys, bvec)),
                           1e-3)
        p = run("lvd-dedup", "--work", self.work, "--model", "ext", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--force", p.stderr)
        rows_before = len(vec)

        def unchanged():
            self.assertEqual(model_row()[1:], (sha2, "imported", D))
            self.assertEqual(len(embeddings(self.work, "ext")[0]), rows_before)

        # Another dimension into the imported name: refused, naming the dimensions and the file.
        e32, k32 = write("d32", [k for k, _ in bench_keys], bvec, dim=32)
        p, _ = imp("bench", e32, k32, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("'ext' holds imported embeddings of dimension %d but %s has 32 columns" % (D, e32), p.stderr)
        unchanged()
        # --model into the imported name: refused, the imported rows untouched.
        p, _ = embed(self.work, self.model, "--name", "ext", "--collection", "bench", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model name 'ext' holds imported embeddings", p.stderr)
        self.assertIn("--force", p.stderr)
        unchanged()
        # --import into a name embedded from a checkpoint: refused, its rows untouched.
        embed(self.work, self.model, "--name", "pico", "--collection", "bench")
        pico = model_row("pico")
        p, _ = imp("bench", eb, kb, "pico", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("model name 'pico' holds embeddings computed by lvd-embed --model", p.stderr)
        self.assertIn("--force", p.stderr)
        self.assertEqual(model_row("pico"), pico)
        self.assertEqual(len(embeddings(self.work, "pico")[0]), 6)
        # With --force the name moves to the imported rows.
        p, s = imp("bench", eb, kb, "pico", "--force")
        self.assertEqual(s["embedded"], 6)
        self.assertEqual(model_row("pico")[1:], (sha256_file(eb), "imported", D))

    def test_unreadable_working_image_is_reported_and_skipped(self):
        victim = sorted(self.ids)[3]
        with db(self.work) as con:
            path, off, size = con.execute("SELECT s.path, d.offset, d.size FROM decodes d JOIN shards s"
                                          " ON s.id = d.shard_id WHERE d.image_id = ?", (victim,)).fetchone()
        with open(os.path.join(self.work, path), "r+b") as f:
            f.seek(off)
            f.write(b"\0" * size)
        p, s = embed(self.work, self.model, "--name", "pico")
        self.assertEqual((s["embedded"], s["failed"]), (len(self.ids) - 1, 1))
        self.assertIn("image %d not embedded" % victim, p.stderr)
        vec, _, _ = embeddings(self.work, "pico")
        self.assertEqual(set(vec), set(self.ids) - {victim})
        p, s = embed(self.work, self.model, "--name", "pico")
        self.assertEqual((s["embedded"], s["failed"]), (0, 1), "a failed image is tried again, not recorded")

    def test_kill_and_resume(self):
        args = [exe("lvd-embed"), "--work", self.work, "--model", self.model, "--name", "pico", "--batch", "2",
                "--file-rows", "3", "--threads", "1", "--loaders", "1"]
        rng = random.Random(5)
        for _ in range(4):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.1, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        run("lvd-embed", *args[1:])
        vec, where, files = embeddings(self.work, "pico")
        self.assertEqual(set(vec), set(self.ids))
        self.assertEqual(len(set(where.values())), len(where), "no two images share a row")
        for f, a in files.items():
            rows = sorted(r for ff, r in where.values() if ff == f)
            self.assertEqual(rows, list(range(a.shape[0])), f)
        self.assertUnitRows(vec, 1e-3)
        self.assertVectors(vec, reference(self.tmp, self.work, self.model, self.ids), 5e-4)
        with db(self.work) as con:
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")


if __name__ == "__main__":
    unittest.main()
