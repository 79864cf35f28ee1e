"""lvd-eval knn end to end: labelled Fashion-MNIST collections imported with lvd-import --label-from, decoded
with lvd-decode, and a small deterministic random ViT (lvd-vit init).

Oracles, independent of lvd-eval:
- features: the working image read back through the catalog, preprocessed here with Pillow (torchvision's
  Resize(BICUBIC) + CenterCrop rounding + ImageNet normalisation), run through the model with `lvd-vit
  forward` (itself checked against PyTorch in tests/vit), L2-normalised with NumPy;
- the vote: DINOv2's KnnModule written here in PyTorch from dinov2/eval/knn.py (topk, softmax(sims / T) over
  max_k, one-hot weighted sums per k, torchmetrics-style top-1 / top-5), run on lvd-eval's own features.
"""
import io
import json
import os
import sqlite3

import numpy as np
from PIL import Image

import lvdtest
from lvdtest import eval_preprocess, WorkTestCase, db, run

import sys
sys.path.insert(0, os.path.join(os.path.dirname(lvdtest.TESTS), "scripts"))
import fixtures  # noqa: E402

RESIZE, CROP = 64, 56


def preprocess(img, resize=RESIZE, crop=CROP):
    return eval_preprocess(img, resize, crop)


def knn_reference(train, train_lab, test, test_lab, ks, T, nclass):
    """dinov2/eval/knn.py KnnModule + top-k accuracy, in PyTorch."""
    import torch
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    trl = torch.from_numpy(train_lab).long()
    maxk = min(max(ks), len(train))
    sims = te @ tr.T
    top_s, idx = sims.topk(maxk, largest=True, sorted=True)
    nl = trl[idx]
    w = torch.softmax(top_s / T, 1)
    onehot = torch.nn.functional.one_hot(nl, num_classes=nclass).float()
    out = {}
    for k in ks:
        p = (onehot[:, :min(k, maxk), :] * w.view(len(te), -1, 1)[:, :min(k, maxk), :]).sum(1)
        order = p.argsort(dim=1, descending=True, stable=True)  # ties: lower class first
        lab = torch.from_numpy(test_lab).long()
        top1 = (order[:, 0] == lab).sum().item()
        top5 = (order[:, :5] == lab.view(-1, 1)).any(1).sum().item()
        out[min(k, maxk)] = (top1, top5)
    return out


class EvalTest(WorkTestCase):
    N_TRAIN, N_TEST = 30, 8  # per class

    def setUp(self):
        super().setUp()
        if not os.path.isdir(fixtures.DATA_DIR):
            self.skipTest("dataset-fashion-mnist is not installed")
        xtr, ytr = fixtures.fashion("train")
        xte, yte = fixtures.fashion("t10k")
        self.sets = {}
        for name, arr, lab, n in (("fm-train", xtr, ytr, self.N_TRAIN), ("fm-test", xte, yte, self.N_TEST)):
            d = os.path.join(self.tmp, name)
            idx = np.concatenate([np.flatnonzero(lab == c)[:n] for c in range(10)])
            for i in idx:
                sub = os.path.join(d, "c%d" % lab[i])
                os.makedirs(sub, exist_ok=True)
                # 28 -> 84 pixels so that decode's minimum side (64) keeps them.
                Image.fromarray(arr[i], "L").resize((84, 84), Image.BICUBIC).save(os.path.join(sub, "%05d.png" % i))
            run("lvd-import", "--work", self.work, "--collection", name, "--role", "benchmark", "--dir", d,
                "--label-from", "parent-dir", "--quiet")
            self.sets[name] = len(idx)
        run("lvd-decode", "--work", self.work, "--size", "84", "--quiet")
        self.model = os.path.join(self.tmp, "pico.safetensors")
        run("lvd-vit", "init", "--arch", "vit_pico", "--seed", "3", "--out", self.model, "--img", str(CROP), "--quiet")

    def evaluate(self, *args, check=True):
        p = run("lvd-eval", "knn", "--model", self.model, "--work", self.work, "--train", "fm-train", "--test",
                "fm-test", "--resize", str(RESIZE), "--crop", str(CROP), "--json", "--quiet", *args, check=check)
        return p, (json.loads(p.stdout) if p.returncode == 0 else None)

    def saved(self, d, which):
        x = np.load(os.path.join(d, which + ".npy"))
        rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(d, which + ".tsv"))]
        return x, [r[0] for r in rows], [r[1] for r in rows], [int(r[2]) for r in rows]

    def test_features_and_vote_against_references(self):
        feat = os.path.join(self.tmp, "feat")
        _, out = self.evaluate("--save-features", feat, "--k", "1,5,10,20,200")
        tr, trk, trl, trid = self.saved(feat, "train")
        te, tek, tel, teid = self.saved(feat, "test")
        self.assertEqual(len(trk), self.sets["fm-train"])
        self.assertEqual(len(tek), self.sets["fm-test"])
        self.assertEqual(trk, sorted(trk))  # rows in key order
        # Features: Pillow preprocessing + lvd-vit forward + NumPy normalisation, on every image.
        with db(self.work) as con:
            def image(iid):
                path, off, size = con.execute("SELECT s.path, d.offset, d.size FROM decodes d JOIN shards s"
                                              " ON s.id = d.shard_id WHERE d.image_id = ?", (iid,)).fetchone()
                with open(os.path.join(self.work, path), "rb") as f:
                    f.seek(off)
                    return Image.open(io.BytesIO(f.read(size))).convert("RGB")
            x = np.stack([preprocess(image(i)) for i in trid + teid])
        xi, yo = os.path.join(self.tmp, "x.npy"), os.path.join(self.tmp, "y.npy")
        np.save(xi, x)
        run("lvd-vit", "forward", "--model", self.model, "--input", xi, "--output", yo, "--output-kind", "cls",
            "--quiet")
        cls = np.load(yo).astype(np.float64)
        ref = cls / np.linalg.norm(cls, axis=1, keepdims=True)
        got = np.concatenate([tr, te]).astype(np.float64)
        self.assertLess(np.abs(got - ref).max(), 1e-5)
        # Labels are the member labels (parent directory).
        self.assertEqual(trl, [k.split("/")[0] for k in trk])
        # The vote against the PyTorch KnnModule on the same features.
        classes = sorted(set(trl))
        lab_tr = np.array([classes.index(l) for l in trl])
        lab_te = np.array([classes.index(l) for l in tel])
        want = knn_reference(tr, lab_tr, te, lab_te, [1, 5, 10, 20, 200], 0.07, len(classes))
        self.assertEqual(out["classes"], 10)
        self.assertEqual(out["train"]["labelled"], self.sets["fm-train"])
        self.assertEqual(out["test"]["labelled"], self.sets["fm-test"])
        for r in out["results"]:
            self.assertIn(r["k"], want)
            self.assertEqual((r["top1_correct"], r["top5_correct"]), want[r["k"]], r)
        self.assertEqual([r["k"] for r in out["results"]], [1, 5, 10, 20, 200])
        # A random ViT's features still separate Fashion-MNIST classes better than chance (0.1).
        best = max(r["top1"] for r in out["results"])
        print(f"\n  k-NN top-1 with a random vit_pico on Fashion-MNIST ({self.sets['fm-train']} train images): "
              f"{best:.3f}", file=sys.stderr)
        self.assertGreater(best, 0.3)

    def test_temperature_and_clamped_k(self):
        _, a = self.evaluate("--k", "1000")
        self.assertEqual(a["results"][0]["k"], self.sets["fm-train"])  # clamped to the train images
        # T = 100: nearly uniform weights (a majority vote), against the reference at the same temperature.
        feat = os.path.join(self.tmp, "feat")
        _, b = self.evaluate("--k", "1,10,20", "--temperature", "100", "--save-features", feat)
        tr, _, trl, _ = self.saved(feat, "train")
        te, _, tel, _ = self.saved(feat, "test")
        classes = sorted(set(trl))
        want = knn_reference(tr, np.array([classes.index(l) for l in trl]), te,
                             np.array([classes.index(l) for l in tel]), [1, 10, 20], 100.0, len(classes))
        for r in b["results"]:
            self.assertEqual((r["top1_correct"], r["top5_correct"]), want[r["k"]], r)
        self.assertEqual(b["temperature"], 100)

    def test_errors(self):
        p, _ = self.evaluate("--k", "0", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--k", p.stderr)
        p = run("lvd-eval", "knn", "--model", self.model, "--work", self.work, "--train", "nope", "--test", "fm-test",
                check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no collection 'nope'", p.stderr)
        p = run("lvd-eval", "knn", "--model", os.path.join(self.tmp, "missing.safetensors"), "--work", self.work,
                "--train", "fm-train", "--test", "fm-test", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing.safetensors", p.stderr)
        p = run("lvd-eval", "knn", "--model", self.model, "--work", os.path.join(self.tmp, "nowork"), "--train",
                "fm-train", "--test", "fm-test", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no catalog", p.stderr)
        # An unlabelled train collection: a clear error naming it.
        d = os.path.join(self.tmp, "unlab")
        os.makedirs(d)
        Image.fromarray(np.full((84, 84), 128, np.uint8), "L").save(os.path.join(d, "a.png"))
        run("lvd-import", "--work", self.work, "--collection", "unlab", "--role", "benchmark", "--dir", d, "--quiet")
        run("lvd-decode", "--work", self.work, "--size", "84", "--quiet")
        p = run("lvd-eval", "knn", "--model", self.model, "--work", self.work, "--train", "unlab", "--test",
                "fm-test", "--resize", str(RESIZE), "--crop", str(CROP), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("'unlab': no labelled image", p.stderr)
        # A working image whose bytes were damaged: counted and left out, the rest evaluated.
        with db(self.work) as con:
            iid, path, off = con.execute(
                "SELECT d.image_id, s.path, d.offset FROM decodes d JOIN shards s ON s.id = d.shard_id"
                " JOIN members m ON m.image_id = d.image_id JOIN collections c ON c.id = m.collection_id"
                " WHERE c.name = 'fm-test' ORDER BY m.key LIMIT 1").fetchone()
        with open(os.path.join(self.work, path), "r+b") as f:
            f.seek(off)
            f.write(b"\0" * 16)
        p, out = self.evaluate()
        self.assertEqual(out["test"]["failed"], 1)
        self.assertEqual(out["test"]["labelled"], self.sets["fm-test"] - 1)
        self.assertIn("not evaluated", p.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
