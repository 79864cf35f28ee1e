"""lvd-train end to end on a manifest of real pictures (Fashion-MNIST, Debian's dataset-fashion-mnist), with the
tiny CPU preset schemas/train/fmnist-pico.yaml.

The manifest is written here with sqlite3 and tarfile from schemas/manifest-001.sql (JPEG bytes made with Pillow,
plus two samples that do not decode), so these tests do not depend on the curation stages. Oracles, independent
of lvd-train:
- the schedules of every metrics line: DINOv2's CosineScheduler (numpy linspace warm-up, cosine) written here;
- the teacher checkpoint: loaded with strict key matching into the PyTorch DinoVisionTransformer of
  tests/vit/vit_ref.py (the official definitions), whose CLS output must equal `lvd-vit forward`'s;
- an exact resume: a run killed with SIGKILL and resumed ends with the same bytes of every tensor of its training
  state (student, teacher, AdamW moments, centers) and the same metrics as an uninterrupted run;
- learning: the KoLeo term and the total loss fall over a short run; lvd-eval knn runs on the checkpoint.
"""
import hashlib
import io
import json
import math
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import tarfile
import time

import numpy as np
from PIL import Image

import lvdtest
from lvdtest import WorkTestCase, exe, run

sys.path.insert(0, os.path.join(os.path.dirname(lvdtest.TESTS), "scripts"))
import fixtures  # noqa: E402

ROOT = os.path.dirname(lvdtest.TESTS)
PRESET = os.path.join(ROOT, "schemas", "train", "fmnist-pico.yaml")
SCHEMA = os.path.join(ROOT, "schemas", "manifest-001.sql")


def fmnist_manifest(folder, n_per_class, size=56, bad=0, split="train"):
    """folder/fm.db and folder/shards/img-000000.tar: n_per_class pictures of each class as size x size RGB JPEGs,
    plus `bad` samples whose bytes are not an image. Returns the manifest path."""
    x, y = fixtures.fashion(split)
    idx = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in range(10)])
    items = []
    for i in idx:
        buf = io.BytesIO()
        img = Image.fromarray(x[i], "L").convert("RGB").resize((size, size), Image.BICUBIC)
        img.save(buf, "JPEG", quality=95)
        items.append({"data": buf.getvalue(), "label": "c%d" % y[i], "w": size})
    for j in range(bad):
        items.append({"data": b"\xff\xd8\xff\xe0 truncated jpeg %d" % j, "label": None, "w": size})
    for s in items:
        s["key"] = hashlib.sha256(s["data"]).hexdigest()
    items.sort(key=lambda s: s["key"])
    os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
    rel = "shards/img-000000.tar"
    with tarfile.open(os.path.join(folder, rel), "w", format=tarfile.USTAR_FORMAT) as tf:
        for s in items:
            ti = tarfile.TarInfo(s["key"] + ".jpg")
            ti.size = len(s["data"])
            s["offset"] = tf.offset + 512
            tf.addfile(ti, io.BytesIO(s["data"]))
        end = tf.offset
    with open(os.path.join(folder, rel), "rb") as f:
        sha = hashlib.sha256(f.read(end)).hexdigest()
    db = os.path.join(folder, "fm.db")
    con = sqlite3.connect(db)
    with open(SCHEMA) as f:
        con.executescript(f.read())
    con.executemany("INSERT INTO info VALUES (?, ?)", [("schema_version", "1"), ("name", "fm"),
                                                     ("created_at", "2026-12-01T00:00:00Z")])
    con.execute("INSERT INTO shards VALUES (1, ?, ?, ?)", (rel, end, sha))
    for i, s in enumerate(items):
        con.execute("INSERT INTO samples (id, key, image_sha256, data_sha256, shard_id, offset, length, format,"
                    " width, height, orig_width, orig_height, url, caption, label, weight)"
                    " VALUES (?,?,?,?,1,?,?,'jpeg',?,?,28,28,NULL,NULL,?,1)",
                    (i + 1, s["key"], s["key"], hashlib.sha256(s["data"]).hexdigest(), s["offset"],
                     len(s["data"]), s["w"], s["w"], s["label"]))
    con.commit()
    con.close()
    return db


def read_safetensors(path):
    """{name: array}, metadata."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        assert e["dtype"] == "F32", e["dtype"]
        out[name] = np.frombuffer(data[b:en], dtype="<f4").reshape(e["shape"])
    return out, meta


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def cosine_schedule(base, final, total, warmup=0, start_warmup=0.0, freeze=0):
    """dinov2/utils/utils.py CosineScheduler as an array."""
    freeze_s = np.zeros(freeze)
    warm = np.linspace(start_warmup, base, warmup)
    iters = np.arange(total - warmup - freeze)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((freeze_s, warm, cos))


TERMS = ("dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss", "total_loss")


class TrainTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        if not os.path.isdir(fixtures.DATA_DIR):
            self.skipTest("dataset-fashion-mnist is not installed")
        self.db = fmnist_manifest(os.path.join(self.tmp, "m"), 20, bad=2)

    def train(self, out, *args, check=True):
        return run("lvd-train", "--config", PRESET, "--manifest", self.db, "--out", out, "--threads", "2",
                   *args, check=check)

    def test_short_run(self):
        out = os.path.join(self.tmp, "run")
        p = self.train(out, "--max-iter", "80", "--save-every", "40", "optim.epochs=4")
        lines = metrics(out)
        self.assertEqual([m["iteration"] for m in lines], list(range(80)))
        for m in lines:
            for k in TERMS + ("lr", "wd", "momentum", "teacher_temp", "last_layer_lr", "images_per_s"):
                self.assertTrue(math.isfinite(m[k]), (m["iteration"], k))
            self.assertEqual(sorted(m["grad_norm"]), ["backbone", "dino_head"])
            self.assertGreater(m["images_per_s"], 0)
            self.assertGreater(m["n_masked"], 0)
        # The schedules of the preset (batch 16, OFFICIAL_EPOCH_LENGTH 20, 4 epochs, 1 warm-up epoch, teacher
        # temperature warm-up 2 epochs, last layer frozen 1 epoch), from DINOv2's definitions.
        L, total = 20, 80
        lr = 0.004 * math.sqrt(16 / 1024)
        want = {
            "lr": cosine_schedule(lr, 1e-6, total, warmup=L),
            "wd": cosine_schedule(0.04, 0.4, total),
            "momentum": cosine_schedule(0.992, 1.0, total),
            "teacher_temp": np.concatenate((np.linspace(0.04, 0.07, 2 * L), np.full(total - 2 * L, 0.07))),
        }
        last = cosine_schedule(lr, 1e-6, total, warmup=L)
        last[:L] = 0
        want["last_layer_lr"] = last
        for k, arr in want.items():
            got = np.array([m[k] for m in lines])
            np.testing.assert_allclose(got, arr, rtol=1e-7, atol=1e-12, err_msg=k)
        # The two undecodable samples: counted and skipped with their keys named, never fatal.
        self.assertGreater(lines[-1]["failed"], 0)
        self.assertIn("does not decode", p.stderr)
        # Learning: KoLeo spreads the CLS tokens out, and the total falls after the warm-up's rise.
        first, end = lines[:10], lines[-10:]
        self.assertLess(np.mean([m["koleo_loss"] for m in end]), 0.5 * np.mean([m["koleo_loss"] for m in first]))
        peak = max(np.mean([m["total_loss"] for m in lines[i:i + 10]]) for i in range(0, 40, 10))
        self.assertLess(np.mean([m["total_loss"] for m in end]), peak)

        # The files of the run.
        for f in ("config.yaml", "training_state.safetensors", "teacher_checkpoint.safetensors"):
            self.assertTrue(os.path.isfile(os.path.join(out, f)), f)
        self.check_checkpoint(os.path.join(out, "teacher_checkpoint.safetensors"))
        self.check_knn(os.path.join(out, "teacher_checkpoint.safetensors"))

        # Rerunning a finished run does nothing; a fresh start over a state is refused.
        p = self.train(out, "--max-iter", "80", "--resume", "optim.epochs=4")
        self.assertIn("nothing to do", p.stderr)
        self.assertEqual(len(metrics(out)), 80)
        p = self.train(out, "--max-iter", "80", "optim.epochs=4", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("pass --resume", p.stderr)
        # --resume under another configuration is refused, naming the run's config.
        p = self.train(out, "--max-iter", "90", "--resume", "optim.epochs=5", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("another configuration", p.stderr)

    def check_checkpoint(self, ckpt):
        """Strict load into the PyTorch model and the same CLS as lvd-vit forward."""
        import torch
        sys.path.insert(0, os.path.join(lvdtest.TESTS, "vit"))
        import vit_ref
        tensors, meta = read_safetensors(ckpt)
        cfg = {"dim": 64, "depth": 4, "heads": 4, "patch": 14, "pos_grid": 4, "n_reg": 0, "pos_mode": "offset",
               "ffn": "mlp", "ffn_hidden": 256, "layerscale": True}
        model = vit_ref.DinoVisionTransformer(cfg).double()
        missing = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=True)
        self.assertEqual(list(missing.missing_keys) + list(missing.unexpected_keys), [])
        x = np.random.default_rng(0).standard_normal((3, 3, 56, 56)).astype(np.float32)
        xi, yo = os.path.join(self.tmp, "x.npy"), os.path.join(self.tmp, "y.npy")
        np.save(xi, x)
        run("lvd-vit", "forward", "--model", ckpt, "--input", xi, "--output", yo, "--output-kind", "cls", "--quiet")
        got = np.load(yo)
        with torch.no_grad():
            ref = model.forward_features(torch.from_numpy(x).double())["x_norm_clstoken"].numpy()
        self.assertLess(np.abs(got - ref).max() / np.abs(ref).max(), 1e-4)

    def check_knn(self, ckpt):
        x, y = fixtures.fashion("t10k")
        work = os.path.join(self.tmp, "work")
        for name, sl in (("fm-train", slice(0, 10)), ("fm-test", slice(10, 14))):
            d = os.path.join(self.tmp, name)
            for c in range(10):
                sub = os.path.join(d, "c%d" % c)
                os.makedirs(sub)
                for i in np.flatnonzero(y == c)[sl]:
                    Image.fromarray(x[i], "L").resize((84, 84), Image.BICUBIC).save(os.path.join(sub, "%05d.png" % i))
            run("lvd-import", "--work", work, "--collection", name, "--role", "benchmark", "--dir", d,
                "--label-from", "parent-dir", "--quiet")
        run("lvd-decode", "--work", work, "--size", "84", "--quiet")
        p = run("lvd-eval", "knn", "--model", ckpt, "--work", work, "--train", "fm-train", "--test", "fm-test",
                "--resize", "64", "--crop", "56", "--k", "10,20", "--json")
        r = json.loads(p.stdout)
        text = json.dumps(r)
        self.assertIn("top1", text)
        print("# lvd-eval knn on the 80-iteration checkpoint: %s" % text[:300])

    def test_resume_after_kill(self):
        """SIGKILL in the middle of a run, then --resume: the same state bytes and metrics as a run left alone."""
        a, b = os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")
        args = ["--max-iter", "30", "--save-every", "4", "--threads", "1", "train.num_workers=2"]
        self.train(a, *args)
        cmd = [exe("lvd-train"), "--config", PRESET, "--manifest", self.db, "--out", b, "--quiet"] + args
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        mpath = os.path.join(b, "metrics.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(mpath) and sum(1 for _ in open(mpath)) >= 10:
                break
            time.sleep(0.002)
        self.assertIsNone(proc.poll(), "the run ended before it could be killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = sum(1 for _ in open(mpath))
        self.assertLess(killed_at, 30)
        state_b, meta_b = read_safetensors(os.path.join(b, "training_state.safetensors"))
        self.assertLess(int(meta_b["iteration"]), 30)
        p = run("lvd-train", "--manifest", self.db, "--out", b, "--resume", "--quiet", *args)
        self.assertEqual(p.returncode, 0)
        sa, ma = read_safetensors(os.path.join(a, "training_state.safetensors"))
        sb, mb = read_safetensors(os.path.join(b, "training_state.safetensors"))
        self.assertEqual(sorted(sa), sorted(sb))
        self.assertTrue(any(k.startswith("adamw.exp_avg_sq.") for k in sa))
        for k in sa:
            self.assertEqual(sa[k].tobytes(), sb[k].tobytes(), k)
        for k in ("iteration", "epoch", "position", "failed"):
            self.assertEqual(ma[k], mb[k], k)
        la, lb = metrics(a), metrics(b)
        self.assertEqual([m["iteration"] for m in lb], list(range(30)))
        for x, y in zip(la, lb):
            for k in TERMS + ("lr", "teacher_temp", "n_masked", "failed"):
                self.assertEqual(x[k], y[k], (x["iteration"], k))
            self.assertEqual(x["grad_norm"], y["grad_norm"])
        ta, _ = read_safetensors(os.path.join(a, "teacher_checkpoint.safetensors"))
        tb, _ = read_safetensors(os.path.join(b, "teacher_checkpoint.safetensors"))
        for k in ta:
            self.assertEqual(ta[k].tobytes(), tb[k].tobytes(), k)

    def test_sigterm_saves(self):
        """SIGTERM (a scheduler's preemption) ends the run after the current iteration with its state saved."""
        out = os.path.join(self.tmp, "run")
        cmd = [exe("lvd-train"), "--config", PRESET, "--manifest", self.db, "--out", out, "--max-iter", "100000",
               "--save-every", "100000", "--threads", "1", "optim.epochs=5000"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        mpath = os.path.join(out, "metrics.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(mpath) and sum(1 for _ in open(mpath)) >= 5):
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("interrupted, state saved", err)
        n = len(metrics(out))
        _, meta = read_safetensors(os.path.join(out, "training_state.safetensors"))
        self.assertEqual(int(meta["iteration"]), n)
        self.assertTrue(os.path.isfile(os.path.join(out, "teacher_checkpoint.safetensors")))

    def test_errors(self):
        out = os.path.join(self.tmp, "run")
        # An unknown key on the command line, and in a file (named with its line).
        p = self.train(out, "dino.head_n_prototype=3", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("dino.head_n_prototype", p.stderr)
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("train:\n  batch_size_per_gpu: 4\n  bogus_key: 1\n")
        p = run("lvd-train", "--config", bad, "--manifest", self.db, "--out", out, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("bad.yaml:3", p.stderr)
        self.assertIn("bogus_key", p.stderr)
        # A manifest that does not open.
        p = run("lvd-train", "--config", PRESET, "--manifest", os.path.join(self.tmp, "none.db"), "--out", out,
                check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("none.db", p.stderr)
        # A loss that overflows: stopped at the step, naming the term; the saved state stays as it was.
        p = self.train(out, "--max-iter", "30", "--save-every", "1", "optim.base_lr=1e30", "optim.warmup_epochs=0",
                       "optim.clip_grad=0", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"stopped: \w+ is -?nan at iteration \d+")
        it = int(p.stderr.split(" at iteration ")[1].split(";")[0])
        _, meta = read_safetensors(os.path.join(out, "training_state.safetensors"))
        self.assertEqual(int(meta["iteration"]), it)
        self.assertIn("keeps the state of iteration %d" % it, p.stderr)
        self.assertEqual(len(metrics(out)), it)
