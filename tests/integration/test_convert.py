"""scripts/convert_checkpoint.py on small official-style DINOv2 state dicts built here with torch: a hub backbone,
a chunked training teacher checkpoint with heads, a full training checkpoint; the output is parsed here with
struct + json (independently of the converter) and compared name by name, shape by shape, value by value.
(tests/unit/common/test_vit_io.c loads converted files with the C loader.)"""
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import unittest

import lvdtest
import numpy as np
import torch

SCRIPTS = os.path.join(os.path.dirname(lvdtest.TESTS), "scripts")
CONVERTER = os.path.join(SCRIPTS, "convert_checkpoint.py")
sys.path.insert(0, SCRIPTS)
import convert_checkpoint  # noqa: E402


def read_safetensors(path):
    """{name: (dtype, shape, np array)}, metadata, name order; checks the layout rules on the way."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    assert (8 + n) % 8 == 0, "header not 8-byte aligned"
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    out, order, end = {}, [], 0
    for name, e in header.items():
        b, en = e["data_offsets"]
        assert b == end, "%s not contiguous" % name
        end = en
        assert e["dtype"] == "F32", e["dtype"]
        arr = np.frombuffer(data[b:en], dtype="<f4").reshape(e["shape"])
        out[name] = arr
        order.append(name)
    assert end == len(data), "trailing data"
    return out, meta, order


def backbone(dim, depth, patch=2, grid=3, hidden=None, swiglu=False, n_reg=0, seed=0):
    """An official-style backbone state dict (ordered like DinoVisionTransformer.state_dict())."""
    g = torch.Generator().manual_seed(seed)
    hidden = hidden or 4 * dim
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim)}
    if n_reg:
        sd["register_tokens"] = r(1, n_reg, dim)
    sd["mask_token"] = r(1, dim)
    sd["patch_embed.proj.weight"] = r(dim, 3, patch, patch)
    sd["patch_embed.proj.bias"] = r(dim)
    for i in range(depth):
        p = "blocks.%d." % i
        sd[p + "norm1.weight"], sd[p + "norm1.bias"] = r(dim), r(dim)
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * dim, dim), r(3 * dim)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(dim, dim), r(dim)
        sd[p + "ls1.gamma"] = r(dim)
        sd[p + "norm2.weight"], sd[p + "norm2.bias"] = r(dim), r(dim)
        if swiglu:
            sd[p + "mlp.w12.weight"], sd[p + "mlp.w12.bias"] = r(2 * hidden, dim), r(2 * hidden)
            sd[p + "mlp.w3.weight"], sd[p + "mlp.w3.bias"] = r(dim, hidden), r(dim)
        else:
            sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(hidden, dim), r(hidden)
            sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(dim, hidden), r(dim)
        sd[p + "ls2.gamma"] = r(dim)
    sd["norm.weight"], sd["norm.bias"] = r(dim), r(dim)
    return sd


def chunked(sd, depth, chunks):
    """The keys DINOv2 writes with block_chunks: blocks.{chunk}.{global index}.x (Identity padding has no keys)."""
    per = depth // chunks
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            rest = k.split(".", 2)[2]
            out["blocks.%d.%d.%s" % (i // per, i, rest)] = v
        else:
            out[k] = v
    return out


def convert(*args):
    """Runs the converter in this process (torch is imported once); returns (exit code, stdout, stderr)."""
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = convert_checkpoint.main([str(a) for a in args])
    return rc, so.getvalue(), se.getvalue()


class ConvertTest(lvdtest.WorkTestCase):
    def assert_same(self, got, order, sd):
        self.assertEqual(order, list(sd.keys()))
        for k, v in sd.items():
            self.assertEqual(tuple(got[k].shape), tuple(v.shape), k)
            want = v.to(torch.float32).numpy()
            self.assertTrue(np.array_equal(got[k].view(np.uint32), want.view(np.uint32)), k)

    def test_hub_backbone(self):
        sd = backbone(128, 2, n_reg=4)
        src, dst = os.path.join(self.tmp, "hub.pth"), os.path.join(self.tmp, "hub.safetensors")
        torch.save(sd, src)
        rc, out, err = convert(src, dst)
        self.assertEqual(rc, 0, err)
        self.assertIn("dim 128, depth 2, heads 2, pos_mode size_aa", out)
        got, meta, order = read_safetensors(dst)
        self.assert_same(got, order, sd)
        self.assertEqual(meta["heads"], "2")          # 128 / 64
        self.assertEqual(meta["pos_mode"], "size_aa")  # registers present
        self.assertEqual(meta["source"], "hub.pth")
        self.assertEqual([f for f in os.listdir(self.tmp) if ".tmp" in f], [])

    def test_teacher_checkpoint_chunked(self):
        depth = 6
        sd = backbone(64, depth, swiglu=True, hidden=24, seed=1)
        sd["blocks.4.attn.qkv.bias"] = sd["blocks.4.attn.qkv.bias"].to(torch.float16)  # a half tensor -> F32
        teacher = {"backbone." + k: v for k, v in chunked(sd, depth, 3).items()}
        self.assertIn("backbone.blocks.2.5.norm1.weight", teacher)  # global index inside chunk 2
        teacher["dino_head.mlp.0.weight"] = torch.ones(8, 64)
        teacher["dino_head.last_layer.weight_g"] = torch.ones(4, 1)
        teacher["ibot_head.mlp.0.bias"] = torch.ones(8)
        src = os.path.join(self.tmp, "teacher_checkpoint.pth")
        torch.save({"teacher": teacher}, src)

        dst = os.path.join(self.tmp, "t.safetensors")
        rc, out, err = convert(src, dst)
        self.assertEqual(rc, 0, err)
        got, meta, order = read_safetensors(dst)
        self.assert_same(got, order, sd)  # flattened, prefix removed, heads dropped
        self.assertEqual(meta["heads"], "1")
        self.assertEqual(meta["pos_mode"], "offset")  # no registers

        dst2 = os.path.join(self.tmp, "t2.safetensors")
        rc, out, err = convert(src, dst2, "--keep-heads", "--heads", 4, "--pos-mode", "size_aa")
        self.assertEqual(rc, 0, err)
        got, meta, order = read_safetensors(dst2)
        self.assertEqual(meta["heads"], "4")
        self.assertEqual(meta["pos_mode"], "size_aa")
        heads = [k for k in order if k.startswith(("dino_head.", "ibot_head."))]
        self.assertEqual(heads, ["dino_head.mlp.0.weight", "dino_head.last_layer.weight_g", "ibot_head.mlp.0.bias"])
        self.assertTrue(np.all(got["dino_head.mlp.0.weight"] == 1.0))
        self.assert_same(got, [k for k in order if k not in heads], sd)

    def test_full_training_checkpoint(self):
        sd_t, sd_s = backbone(64, 2, seed=2), backbone(64, 2, seed=3)
        model = {}
        for k, v in sd_s.items():
            model["student.backbone." + k] = v
        for k, v in sd_t.items():
            model["teacher.backbone." + k] = v
        model["teacher.dino_head.mlp.0.weight"] = torch.zeros(2, 64)
        src, dst = os.path.join(self.tmp, "model_0001.pth"), os.path.join(self.tmp, "m.safetensors")
        torch.save({"model": model, "iteration": 10}, src)
        rc, out, err = convert(src, dst)
        self.assertEqual(rc, 0, err)
        got, meta, order = read_safetensors(dst)
        self.assert_same(got, order, sd_t)

    def test_errors(self):
        cases = []
        p = os.path.join(self.tmp, "list.pth")
        torch.save([1, 2], p)
        cases.append((p, [], "not a state dict"))
        p = os.path.join(self.tmp, "nocls.pth")
        torch.save({"foo.weight": torch.zeros(2)}, p)
        cases.append((p, [], "no cls_token"))
        p = os.path.join(self.tmp, "d32.pth")
        torch.save(backbone(32, 1), p)
        cases.append((p, [], "pass --heads"))
        cases.append((p, ["--heads", "3"], "does not divide"))
        p = os.path.join(self.tmp, "stray.pth")
        sd = {"backbone." + k: v for k, v in backbone(64, 1).items()}
        sd["other.weight"] = torch.zeros(1)
        torch.save({"teacher": sd}, p)
        cases.append((p, [], "other.weight"))
        p = os.path.join(self.tmp, "dup.pth")
        sd = backbone(64, 2)
        sd["blocks.0.1.norm1.weight"] = sd["blocks.1.norm1.weight"]  # chunked and flat copies of one key
        torch.save(sd, p)
        cases.append((p, [], "appears twice"))
        p = os.path.join(self.tmp, "garbage.pth")
        with open(p, "wb") as f:
            f.write(b"not a pickle")
        cases.append((p, [], "cannot read"))
        for src, extra, words in cases:
            dst = src + ".safetensors"
            rc, out, err = convert(src, dst, *extra)
            self.assertEqual(rc, 1, src)
            self.assertIn(src, err)
            self.assertIn(words, err)
            self.assertFalse(os.path.exists(dst))

    def test_command_line(self):
        """The script as a program: exit status, message on stderr, output file."""
        src, dst = os.path.join(self.tmp, "hub.pth"), os.path.join(self.tmp, "hub.safetensors")
        torch.save(backbone(64, 1), src)
        p = subprocess.run([lvdtest.PYTHON, CONVERTER, src, dst], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("wrote " + dst, p.stdout)
        self.assertTrue(os.path.exists(dst))
        p = subprocess.run([lvdtest.PYTHON, CONVERTER, src + ".missing", dst + "2"], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot read", p.stderr)


if __name__ == "__main__":
    unittest.main()
