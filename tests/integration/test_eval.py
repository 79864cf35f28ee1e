"""lvd-eval knn and lvd-eval linear end to end: labelled Fashion-MNIST collections imported with lvd-import
--label-from, decoded with lvd-decode, and a small deterministic random ViT (lvd-vit init).

Oracles, independent of lvd-eval:
- features: the working image read back through the catalog, preprocessed here with Pillow (torchvision's
  Resize(BICUBIC) + CenterCrop rounding + ImageNet normalisation), run through the model with `lvd-vit
  forward` (itself checked against PyTorch in tests/vit), L2-normalised with NumPy;
- the vote: DINOv2's KnnModule written here in PyTorch from dinov2/eval/knn.py (topk, softmax(sims / T) over
  max_k, one-hot weighted sums per k, torchmetrics-style top-1 / top-5), run on lvd-eval's own features.
- linear features: the PyTorch DinoVisionTransformer of tests/vit/vit_ref.py (the official definitions) loaded
  strictly from the checkpoint, get_intermediate_layers(norm=True) and dinov2's create_linear_input written here;
- the classifiers: torch.optim.SGD (momentum, dampening 0) with CosineAnnealingLR on the full-batch
  F.cross_entropy of lvd-eval's own features, in float64, and the accuracies of its weights by NumPy.
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
        x = self.preprocessed(trid + teid)
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

    def preprocessed(self, ids):
        """The working images of ids, read from their shards and through the Pillow preprocessing: (n, 3, H, W)."""
        out = []
        with db(self.work) as con:
            for iid in ids:
                path, off, size = con.execute("SELECT s.path, d.offset, d.size FROM decodes d JOIN shards s"
                                              " ON s.id = d.shard_id WHERE d.image_id = ?", (iid,)).fetchone()
                with open(os.path.join(self.work, path), "rb") as f:
                    f.seek(off)
                    out.append(preprocess(Image.open(io.BytesIO(f.read(size))).convert("RGB")))
        return np.stack(out)

    def linear(self, *args, check=True):
        p = run("lvd-eval", "linear", "--model", self.model, "--work", self.work, "--train", "fm-train", "--test",
                "fm-test", "--resize", str(RESIZE), "--crop", str(CROP), "--json", "--quiet", *args, check=check)
        return p, (json.loads(p.stdout) if p.returncode == 0 else None)

    def test_linear_against_references(self):
        import torch
        sys.path.insert(0, os.path.join(lvdtest.TESTS, "vit"))
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import vit_ref
        from test_train import read_safetensors
        feat = os.path.join(self.tmp, "feat")
        steps, lrs = 60, [0.01, 0.1, 1.0, 1e5]
        _, out = self.linear("--blocks", "2", "--avgpool", "--steps", str(steps), "--lr",
                             ",".join(str(v) for v in lrs), "--save-features", feat)
        tr, trk, trl, trid = self.saved(feat, "train")
        te, tek, tel, teid = self.saved(feat, "test")
        self.assertEqual(tr.shape, (self.sets["fm-train"], 3 * 64))
        # Features: Pillow preprocessing, the official model, create_linear_input(2 blocks, avgpool).
        tensors, _ = read_safetensors(self.model)
        cfg = {"dim": 64, "depth": 4, "heads": 4, "patch": 14, "pos_grid": 4, "n_reg": 0, "pos_mode": "offset",
               "ffn": "mlp", "ffn_hidden": 256, "layerscale": True}
        model = vit_ref.DinoVisionTransformer(cfg).double()
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=True)
        x = torch.from_numpy(self.preprocessed(trid + teid)).double()
        with torch.no_grad():
            layers = model.intermediate(model.forward_features(x, keep=2)["kept"])
            ref = torch.cat([c for _, c in layers] + [layers[-1][0].mean(dim=1)], dim=-1).numpy()
        got = np.concatenate([tr, te]).astype(np.float64)
        self.assertLess(np.abs(got - ref).max() / np.abs(ref).max(), 1e-4)
        # The held-out split: every 10th train image of each class, in key order.
        classes = sorted(set(trl))
        y = np.array([classes.index(l) for l in trl])
        yte = np.array([classes.index(l) for l in tel])
        rank = np.zeros(len(y), int)
        for c in range(len(classes)):
            rank[y == c] = np.arange(1, (y == c).sum() + 1)
        held = rank % 10 == 0
        self.assertEqual(out["val_rows"], int(held.sum()))
        self.assertEqual(out["fit_rows"], int((~held).sum()))
        W = np.load(os.path.join(feat, "linear_weight.npy"))
        b = np.load(os.path.join(feat, "linear_bias.npy"))
        self.assertEqual(W.shape, (len(lrs), len(classes), 3 * 64))
        xf = torch.from_numpy(tr[~held].astype(np.float64))
        yf = torch.from_numpy(y[~held])
        grid = out["grid"]
        self.assertEqual([g["lr"] for g in grid], lrs)
        for q, lr in enumerate(lrs):
            lin = torch.nn.Linear(xf.shape[1], len(classes)).double()
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
            opt = torch.optim.SGD(lin.parameters(), lr=lr, momentum=0.9, weight_decay=0)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0)
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(lin(xf), yf)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            rw, rb = lin.weight.detach().numpy(), lin.bias.detach().numpy()
            # Diverged: a last loss above ln C, the zero start's (lr 1 here, and 1e5); set to 0, left out.
            if loss.item() > np.log(len(classes)):
                self.assertTrue(grid[q]["diverged"], (lr, loss.item(), grid[q]))
                self.assertFalse(W[q].any() or b[q].any())
                continue
            self.assertFalse(grid[q]["diverged"], (lr, loss.item(), grid[q]))
            err = max(np.abs(W[q] - rw).max(), np.abs(b[q] - rb).max()) / max(np.abs(rw).max(), 1e-30)
            self.assertLess(err, 1e-3, (lr, err))
            self.assertAlmostEqual(grid[q]["train_loss"], loss.item(), delta=1e-4 * max(1.0, loss.item()))
            # Accuracies: NumPy argmax of lvd's own weights (float64 logits; ties are measure-zero here).
            for rows, lab, key in ((tr[held], y[held], "val_correct"), (te, yte, "test_correct")):
                pred = (rows.astype(np.float64) @ W[q].T.astype(np.float64) + b[q]).argmax(1)
                self.assertLessEqual(abs(int((pred == lab).sum()) - grid[q][key]), 1, (lr, key))
        self.assertEqual([g["diverged"] for g in grid], [False, False, True, True])
        # The choice: the most right on the held-out rows, the first such in the grid.
        val = [g["val_correct"] if not g["diverged"] else -1 for g in grid]
        best = int(np.argmax(val))
        self.assertEqual(out["best_lr"], lrs[best])
        self.assertEqual(out["top1_correct"], grid[best]["test_correct"])
        self.assertEqual(out["test"]["labelled"], self.sets["fm-test"])
        print(f"\n  linear top-1 with a random vit_pico on Fashion-MNIST: {out['top1']:.3f} (lr {out['best_lr']})",
              file=sys.stderr)
        self.assertGreater(out["top1"], 0.3)

    def test_linear_errors(self):
        p, _ = self.linear("--blocks", "9", check=False)  # vit_pico has 4 blocks
        self.assertEqual(p.returncode, 1)
        self.assertIn("4 blocks", p.stderr)
        p, _ = self.linear("--lr", "0.1,x", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--lr", p.stderr)
        p, _ = self.linear("--val-every", "1000", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nothing is held out", p.stderr)
        p, _ = self.linear("--lr", "1e5", "--steps", "5", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("diverged", p.stderr)

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
