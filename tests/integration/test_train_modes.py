"""lvd-train's two modes that start from another run, on the Fashion-MNIST manifest of test_train and the CPU
preset schemas/train/fmnist-pico.yaml (batch 4, 2 local crops: a few seconds each):

- distillation (distillation.enabled): a vit_pico student from a frozen vit_tiny teacher trained here for two
  iterations. Oracles: the teacher's files are the same bytes before and after; every metrics line says
  "mode": "distillation" and has an iBOT term over every patch token of the global crops (no masking); the
  student's checkpoint is the EMA of the student (the state's teacher.* tensors), not the student itself;
- the high-resolution phase (--init-from): a 56-pixel run continued at 84 pixels. Oracles, independent of lvd:
  the new run's pos_embed at iteration 0 (--max-iter 0) is torch.nn.functional.interpolate (bicubic, antialias
  off, scale_factor (6 + 0.1) / 4, as DINOv2's interpolate_pos_encoding) of the old one, every other tensor is the
  old run's, the AdamW moments are zero; and the schedules of its metrics are DINOv2's CosineScheduler over the
  new phase's own optim.epochs x OFFICIAL_EPOCH_LENGTH iterations;
- the errors of both: each names what is wrong.
"""
import hashlib
import math
import os
import shutil
import tempfile
import unittest

import numpy as np

import lvdtest
from lvdtest import run
from test_train import PRESET, cosine_schedule, fixtures, fmnist_manifest, metrics, read_safetensors

SMALL = ["--threads", "1", "train.batch_size_per_gpu=4", "crops.local_crops_number=2"]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class TrainModesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lvd-it-")
        if not os.path.isdir(fixtures.DATA_DIR):
            return
        cls.db = fmnist_manifest(os.path.join(cls.tmp, "m"), 4)
        # A teacher of another size (vit_tiny: width 192, 12 blocks) and a 56-pixel vit_pico run, 2 iterations each.
        cls.teacher = os.path.join(cls.tmp, "teacher")
        cls.train(cls.teacher, "--max-iter", "2", "student.arch=vit_tiny")
        cls.old = os.path.join(cls.tmp, "old")
        cls.train(cls.old, "--max-iter", "2")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        if not os.path.isdir(fixtures.DATA_DIR):
            self.skipTest("dataset-fashion-mnist is not installed")

    @classmethod
    def train(cls, out, *args, check=True):
        return run("lvd-train", "--config", PRESET, "--manifest", cls.db, "--out", out, *SMALL, *args, check=check)

    def distill(self, out, *args, ckpt=None, check=True):
        ckpt = ckpt or os.path.join(self.teacher, "training_state.safetensors")
        return self.train(out, "distillation.enabled=true", "distillation.checkpoint_path=" + ckpt, *args,
                          check=check)

    def test_distillation(self):
        files = ("training_state.safetensors", "teacher_checkpoint.safetensors", "config.yaml")
        before = {f: sha(os.path.join(self.teacher, f)) for f in files}
        t_state, _ = read_safetensors(os.path.join(self.teacher, "training_state.safetensors"))
        out = os.path.join(self.tmp, "distilled")
        p = self.distill(out, "--max-iter", "3")
        self.assertIn("distillation: the frozen teacher (D 192, depth 12, 3 heads)", p.stderr)
        # The frozen teacher: its files are untouched, and it is not in the student's state.
        self.assertEqual({f: sha(os.path.join(self.teacher, f)) for f in files}, before)
        again, _ = read_safetensors(os.path.join(self.teacher, "training_state.safetensors"))
        for k in t_state:
            self.assertEqual(t_state[k].tobytes(), again[k].tobytes(), k)
        state, meta = read_safetensors(os.path.join(out, "training_state.safetensors"))
        self.assertEqual(meta["iteration"], "3")
        self.assertEqual(state["student.backbone.cls_token"].shape, (1, 1, 64))
        self.assertEqual(state["teacher.backbone.cls_token"].shape, (1, 1, 64))
        # The mode in every line; iBOT over all 2B x N = 2 x 4 x 16 patch tokens, a finite positive loss.
        lines = metrics(out)
        self.assertEqual([m["iteration"] for m in lines], [0, 1, 2])
        for m in lines:
            self.assertEqual(m["mode"], "distillation")
            self.assertEqual(m["n_masked"], 2 * 4 * 16)
            self.assertTrue(math.isfinite(m["ibot_loss"]) and m["ibot_loss"] > 0, m)
        self.assertEqual({m["mode"] for m in metrics(self.teacher)}, {"ssl"})
        # The final model is the EMA of the student: the checkpoint holds the state's teacher.*, which has moved
        # away from its start and lags the student.
        ckpt, _ = read_safetensors(os.path.join(out, "teacher_checkpoint.safetensors"))
        self.assertEqual(ckpt["pos_embed"].shape, (1, 17, 64))
        for k, v in ckpt.items():
            self.assertEqual(v.tobytes(), state["teacher.backbone." + k].tobytes(), k)
        w = "blocks.0.attn.qkv.weight"
        self.assertGreater(np.abs(state["student.backbone." + w] - state["teacher.backbone." + w]).max(), 0)
        # --resume reads the frozen teacher again and continues.
        self.distill(out, "--max-iter", "4", "--resume")
        self.assertEqual([m["iteration"] for m in metrics(out)], [0, 1, 2, 3])
        self.assertEqual({f: sha(os.path.join(self.teacher, f)) for f in files}, before)

    def test_high_res(self):
        import torch
        import torch.nn.functional as F
        old, _ = read_safetensors(os.path.join(self.old, "training_state.safetensors"))
        # Iteration 0 of the new phase at 84 pixels (a 6 x 6 grid from 4 x 4), no step taken.
        n0 = os.path.join(self.tmp, "hr0")
        p = self.train(n0, "--init-from", os.path.join(self.old, "training_state.safetensors"), "--max-iter", "0",
                       "crops.global_crops_size=84")
        self.assertIn("resampled from 4x4 to 6x6", p.stderr)
        new, meta = read_safetensors(os.path.join(n0, "training_state.safetensors"))
        self.assertEqual(meta["iteration"], "0")
        self.assertEqual(sorted(new), sorted(old))
        for who in ("student", "teacher"):
            src = torch.from_numpy(old[who + ".backbone.pos_embed"].astype(np.float64))
            grid = src[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
            want = F.interpolate(grid, scale_factor=((6 + 0.1) / 4, (6 + 0.1) / 4), mode="bicubic",
                                 antialias=False, align_corners=False)
            self.assertEqual(tuple(want.shape[-2:]), (6, 6))
            want = torch.cat((src[:, :1], want.permute(0, 2, 3, 1).reshape(1, 36, 64)), dim=1).numpy()
            got = new[who + ".backbone.pos_embed"]
            self.assertEqual(got.shape, (1, 37, 64))
            err = np.abs(got - want).max()
            print("# %s pos_embed: max |lvd - torch bicubic| = %.2e" % (who, err))
            self.assertLess(err, 1e-5)
            self.assertEqual(got[:, 0].tobytes(), old[who + ".backbone.pos_embed"][:, 0].tobytes())
        self.assertGreater(np.abs(old["student.backbone.pos_embed"] - old["teacher.backbone.pos_embed"]).max(), 0)
        for k, v in old.items():
            if k.startswith("adamw."):
                self.assertFalse(new[k].any(), k)  # a fresh optimizer
            elif not k.endswith(".pos_embed"):
                self.assertEqual(v.tobytes(), new[k].tobytes(), k)  # student, teacher, heads, centers
        ckpt, _ = read_safetensors(os.path.join(n0, "teacher_checkpoint.safetensors"))
        self.assertEqual(ckpt["pos_embed"].tobytes(), new["teacher.backbone.pos_embed"].tobytes())

        # A short phase: the schedules start again and run over its own 2 x 4 iterations.
        n1 = os.path.join(self.tmp, "hr1")
        self.train(n1, "--init-from", os.path.join(self.old, "training_state.safetensors"), "--max-iter", "5",
                   "crops.global_crops_size=84", "optim.epochs=2", "train.OFFICIAL_EPOCH_LENGTH=4",
                   "optim.warmup_epochs=1", "teacher.warmup_teacher_temp_epochs=1")
        lines = metrics(n1)
        self.assertEqual([m["iteration"] for m in lines], list(range(5)))
        lr = 0.004 * math.sqrt(4 / 1024)
        want = {"lr": cosine_schedule(lr, 1e-6, 8, warmup=4), "wd": cosine_schedule(0.04, 0.4, 8),
                "momentum": cosine_schedule(0.992, 1.0, 8),
                "teacher_temp": np.concatenate((np.linspace(0.04, 0.07, 4), np.full(4, 0.07)))}
        for k, arr in want.items():
            np.testing.assert_allclose([m[k] for m in lines], arr[:5], rtol=1e-7, atol=1e-12, err_msg=k)
        self.assertEqual({m["mode"] for m in lines}, {"ssl"})
        self.assertTrue(all(m["n_masked"] > 0 and math.isfinite(m["total_loss"]) for m in lines))
        # A checkpoint (the backbone alone) also starts a phase: the heads keep their initialisation.
        n2 = os.path.join(self.tmp, "hr2")
        p = self.train(n2, "--init-from", os.path.join(self.old, "teacher_checkpoint.safetensors"), "--max-iter", "0",
                       "crops.global_crops_size=84")
        self.assertIn("has no dino_head", p.stderr)
        st, _ = read_safetensors(os.path.join(n2, "training_state.safetensors"))
        self.assertEqual(st["student.backbone.pos_embed"].tobytes(), new["teacher.backbone.pos_embed"].tobytes())

    def test_errors(self):
        out = os.path.join(self.tmp, "bad")

        def fails(p, *needles):
            self.assertEqual(p.returncode, 1, p.stderr)
            for n in needles:
                self.assertIn(n, p.stderr)
            self.assertFalse(os.path.exists(os.path.join(out, "training_state.safetensors")))

        fails(self.distill(out, ckpt=os.path.join(self.tmp, "none", "training_state.safetensors"), check=False),
              "distillation.checkpoint_path", "none/training_state.safetensors", "No such file")
        fails(self.distill(out, ckpt=os.path.join(self.teacher, "teacher_checkpoint.safetensors"), check=False),
              "has no DINO head", "teacher_checkpoint.safetensors is the backbone alone")
        fails(self.distill(out, "dino.head_n_prototypes=128", "ibot.head_n_prototypes=128", check=False),
              "dino.head_n_prototypes 256 differs from the student's 128")
        lone = os.path.join(self.tmp, "lone")
        os.makedirs(lone, exist_ok=True)
        shutil.copy(os.path.join(self.teacher, "training_state.safetensors"), lone)
        fails(self.distill(out, ckpt=os.path.join(lone, "training_state.safetensors"), check=False),
              "the teacher's configuration", "lone/config.yaml", "distillation.full_cfg_path")
        self.distill(out, "--max-iter", "1", "distillation.full_cfg_path=" + os.path.join(self.teacher, "config.yaml"),
                     ckpt=os.path.join(lone, "training_state.safetensors"))
        self.assertEqual(metrics(out)[0]["mode"], "distillation")
        shutil.rmtree(out)
        p = self.train(out, "distillation.enabled=true", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("needs distillation.checkpoint_path", p.stderr)

        state = os.path.join(self.old, "training_state.safetensors")
        fails(self.train(out, "--init-from", state, "student.arch=vit_tiny", check=False),
              "a ViT of width 64, depth 4, 4 heads, patch 14", "width 192, depth 12, 3 heads", "keeps the architecture")
        fails(self.train(out, "--init-from", state, "student.patch_size=7", check=False), "patch 14", "patch 7")
        fails(self.train(out, "--init-from", os.path.join(self.tmp, "nope.safetensors"), check=False),
              "--init-from", "nope.safetensors")
        fails(self.train(out, "--init-from", state, "dino.head_n_prototypes=128", "ibot.head_n_prototypes=128",
                         check=False), "--init-from", "dino_head.last_layer.weight_g")


if __name__ == "__main__":
    unittest.main()
