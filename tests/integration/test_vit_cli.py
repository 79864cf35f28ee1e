"""lvd-vit as a user drives it: init, info, forward (every output kind) and bench, and its errors. The model's
numbers themselves are checked against PyTorch in tests/unit/common/test_vit.c; here the checks are that the tool
wires them correctly: the output kinds agree with each other and with the architecture, batching does not
change results, and bad inputs are refused with a message naming the problem."""
import hashlib
import json
import os

import numpy as np

from lvdtest import WorkTestCase, run


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class VitCliTest(WorkTestCase):
    def setUp(self):
        super().setUp()
        self.model = os.path.join(self.tmp, "pico.safetensors")
        run("lvd-vit", "init", "--arch", "vit_pico_reg4", "--img", "56", "--seed", "3", "--ls-init", "0.5",
            "--out", self.model, "--quiet")

    def forward(self, x, kind, *extra):
        xin, out = os.path.join(self.tmp, "x.npy"), os.path.join(self.tmp, "y-%s.npy" % kind.replace(":", "_"))
        np.save(xin, x.astype(np.float32))
        run("lvd-vit", "forward", "--model", self.model, "--input", xin, "--output", out, "--output-kind", kind,
            "--threads", "2", *extra)
        return np.load(out)

    def test_init_is_deterministic_and_info_describes_it(self):
        again, other = os.path.join(self.tmp, "again.safetensors"), os.path.join(self.tmp, "other.safetensors")
        run("lvd-vit", "init", "--arch", "vit_pico_reg4", "--img", "56", "--seed", "3", "--ls-init", "0.5",
            "--out", again, "--quiet")
        run("lvd-vit", "init", "--arch", "vit_pico_reg4", "--img", "56", "--seed", "4", "--ls-init", "0.5",
            "--out", other, "--quiet")
        self.assertEqual(sha(again), sha(self.model))
        self.assertNotEqual(sha(other), sha(self.model))
        info = json.loads(run("lvd-vit", "info", "--model", self.model).stdout)
        self.assertEqual((info["patch"], info["pos_grid"], info["dim"], info["depth"], info["heads"]), (14, 4, 64, 4, 4))
        self.assertEqual((info["ffn"], info["n_reg"], info["pos_mode"], info["layerscale"]), ("mlp", 4, "size_aa", 1))
        # Parameter count from the architecture: tokens, patch embedding, 4 blocks, final norm.
        d, hd, blocks = 64, 256, 4
        block = 2 * d + 3 * d * d + 3 * d + d * d + d + d + 2 * d + hd * d + hd + d * hd + d + d
        expect = d + (1 + 16) * d + 4 * d + d + d * 3 * 14 * 14 + d + blocks * block + 2 * d
        self.assertEqual(info["params"], expect)

    def test_output_kinds_agree(self):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, 3, 42, 70))  # 3 x 5 patch grid: positional resampling from 4 x 4
        n, d, r = 15, 64, 4
        cls = self.forward(x, "cls")
        patch = self.forward(x, "patch")
        every = self.forward(x, "all")
        layers = self.forward(x, "layers:2")
        self.assertEqual(cls.shape, (3, d))
        self.assertEqual(patch.shape, (3, n, d))
        self.assertEqual(every.shape, (3, 1 + r + n, d))
        self.assertEqual(layers.shape, (2, 3, n, d))
        np.testing.assert_array_equal(every[:, 0], cls)
        np.testing.assert_array_equal(every[:, 1 + r:], patch)
        # The last block's output through the final norm is the final output.
        np.testing.assert_allclose(layers[1], patch, rtol=0, atol=1e-5)
        self.assertGreater(np.abs(layers[0] - layers[1]).max(), 1e-3)
        # Normed tokens: zero mean, unit variance before the affine part (weight 1, bias 0 at init).
        np.testing.assert_allclose(cls.mean(axis=1), 0, atol=1e-5)
        np.testing.assert_allclose(cls.std(axis=1), 1, atol=1e-3)
        # Images are independent: batch size 2 (a short last batch) gives the same rows as one pass, up to
        # float rounding (GEMMs of other shapes sum in another order).
        np.testing.assert_allclose(self.forward(x, "cls", "--batch", "2"), cls, rtol=0, atol=1e-5)
        np.testing.assert_allclose(self.forward(x[1:2], "cls"), cls[1:2], rtol=0, atol=1e-5)

    def test_bad_inputs_are_refused(self):
        def fails(x, *args):
            xin, out = os.path.join(self.tmp, "bad.npy"), os.path.join(self.tmp, "out.npy")
            np.save(xin, x)
            p = run("lvd-vit", "forward", "--model", self.model, "--input", xin, "--output", out, *args, check=False)
            self.assertNotEqual(p.returncode, 0, p.stderr)
            self.assertFalse(os.path.exists(out))
            return p.stderr
        self.assertIn("multiple of the patch size 14", fails(np.zeros((1, 3, 30, 28), np.float32)))
        self.assertIn("(B, 3, H, W)", fails(np.zeros((1, 4, 28, 28), np.float32)))
        self.assertIn("(B, 3, H, W)", fails(np.zeros((3, 28, 28), np.float32)))
        self.assertIn("4 blocks", fails(np.zeros((1, 3, 28, 28), np.float32), "--output-kind", "layers:5"))
        self.assertIn("--output-kind", fails(np.zeros((1, 3, 28, 28), np.float32), "--output-kind", "pooled"))
        missing = os.path.join(self.tmp, "missing.safetensors")
        p = run("lvd-vit", "info", "--model", missing, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(missing, p.stderr)
        p = run("lvd-vit", "frobnicate", check=False)
        self.assertEqual(p.returncode, 2)
        p = run("lvd-vit", "bench", "--arch", "vit_nonesuch", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown architecture", p.stderr)

    def test_bench_reports_rates(self):
        p = run("lvd-vit", "bench", "--arch", "vit_pico", "--img", "56", "--batch", "2", "--iters", "2", "--train",
                "--threads", "1")
        b = json.loads(p.stdout)
        self.assertEqual((b["arch"], b["img"], b["batch"], b["train"], b["threads"]), ("vit_pico", 56, 2, 1, 1))
        self.assertGreater(b["images_per_s"], 0)
        self.assertGreater(b["gflops"], 0)
        # images/s is 4 images over the timed seconds; both are printed rounded (3 and 6 decimals).
        self.assertLess(abs(b["images_per_s"] * b["seconds"] - 4), 0.01 + 1e-6 * b["images_per_s"] + 5e-4 * b["seconds"])
