#!/usr/bin/python3
"""Reference files and checks for tests/unit/common/test_npy.c, test_safetensors.c and test_vit_io.c, produced with
numpy and torch (never with lvd code).

  tensor_ref.py npy-gen DIR        .npy files written by numpy, each with NAME.raw = its values as float32 LE
  tensor_ref.py npy-check DIR      checks the files listed in DIR/written.txt (written by lvd) with np.load
  tensor_ref.py f16 IN OUT         float32 LE values of IN -> numpy float16 bits (u16 LE) into OUT
  tensor_ref.py f16to32 OUT        all 65536 float16 bit patterns -> numpy float32 values (LE) into OUT
  tensor_ref.py st-gen DIR         ref.safetensors with F32/F16/BF16/I64 tensors (halves by torch), plus
                                   NAME.raw = torch's float32 value of each float tensor
  tensor_ref.py st-check FILE DIR  parses FILE (written by lvd) independently; compares every tensor to DIR/NAME.raw
                                   and the metadata to DIR/meta.json
  tensor_ref.py fake-dinov2 DIR    small official-style DINOv2 state dicts: DIR/hub.pth (hub backbone, MLP, no
                                   registers) and DIR/teacher.pth (training checkpoint, chunked blocks, SwiGLU,
                                   registers, heads); DIR/hub.ref and DIR/teacher.ref list "name ndim dims..." and
                                   DIR/*.raw hold each backbone tensor's float32 values

written.txt lines: "FILE DTYPE D0 D1 ..." (DTYPE f4 or f2); FILE.raw beside it holds the float32 input values.
Any mismatch prints a message and exits 1.
"""
import json
import os
import struct
import sys

import numpy as np


def die(msg):
    print(msg)
    sys.exit(1)


def npy_gen(d):
    rng = np.random.default_rng(1234)

    def save(name, arr, version=None, raw=True):
        path = os.path.join(d, name + ".npy")
        if version is None:
            np.save(path, arr)
        else:
            with open(path, "wb") as f:
                np.lib.format.write_array(f, arr, version=version)
        if raw:
            np.ascontiguousarray(arr, dtype="<f4").tofile(os.path.join(d, name + ".raw"))

    save("f4_2d", (rng.standard_normal((3, 4)) * 100).astype("<f4"))
    halves = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, np.inf, -np.inf, 6e-8, -6e-8, 6.1e-5, 1e-6,
                       0.1, 0.2, 0.3, 1 / 3, 3.14159, 1000.5, -7.25, 2.0 ** -24, 2.0 ** -14, 2.0 ** -15, 12.0,
                       100.0, 0.5, -0.5, 42.0, 1e4, -1e4, 0.0625],
                      dtype=np.float32).astype("<f2").reshape(2, 3, 5)
    save("f2_3d", halves)
    save("scalar", np.array(2.75, dtype="<f4"))
    save("v1d", np.arange(7, dtype="<f4") * 0.5 - 1.0)
    save("empty", np.zeros((0, 5), dtype="<f4"))
    save("v2", rng.standard_normal((2, 2)).astype("<f4"), version=(2, 0))
    save("v3", rng.standard_normal((3,)).astype("<f2"), version=(3, 0))
    save("bad_fortran", np.asfortranarray(rng.standard_normal((3, 4)).astype("<f4")), raw=False)
    save("bad_be", rng.standard_normal((3,)).astype(">f4"), raw=False)
    save("bad_f8", rng.standard_normal((3,)).astype("<f8"), raw=False)
    save("bad_i4", np.arange(3, dtype="<i4"), raw=False)
    save("bad_struct", np.zeros(2, dtype=[("a", "<f4"), ("b", "<f4")]), raw=False)


def npy_check(d):
    with open(os.path.join(d, "written.txt")) as f:
        lines = [l.split() for l in f if l.strip()]
    for parts in lines:
        name, dt, shape = parts[0], parts[1], tuple(int(x) for x in parts[2:])
        path = os.path.join(d, name)
        with open(path, "rb") as f:
            head = f.read(10)
        if head[:6] != b"\x93NUMPY" or head[6:8] != b"\x01\x00":
            die("%s: not a version 1.0 .npy file" % name)
        hlen = struct.unpack("<H", head[8:10])[0]
        if (10 + hlen) % 64 != 0:
            die("%s: header not padded to 64 bytes (%d)" % (name, 10 + hlen))
        arr = np.load(path)
        want_dtype = np.dtype("<f4" if dt == "f4" else "<f2")
        if arr.dtype != want_dtype:
            die("%s: dtype %s, expected %s" % (name, arr.dtype, want_dtype))
        if arr.shape != shape:
            die("%s: shape %s, expected %s" % (name, arr.shape, shape))
        if not arr.flags.c_contiguous:
            die("%s: not C order" % name)
        src = np.fromfile(path + ".raw", dtype="<f4").reshape(shape)
        ref = src.astype(want_dtype)
        bits = {"f4": "<u4", "f2": "<u2"}[dt]
        a, b = arr.view(bits), ref.view(bits)
        nan_a, nan_b = np.isnan(arr), np.isnan(ref)
        if not np.array_equal(nan_a, nan_b):
            die("%s: NaN positions differ" % name)
        if not np.array_equal(a[~nan_a], b[~nan_b]):
            idx = np.argwhere((a != b) & ~nan_a)[0]
            die("%s: value at %s is %r (bits %x), numpy gives %r (bits %x)" %
                (name, tuple(idx), arr[tuple(idx)], a[tuple(idx)], ref[tuple(idx)], b[tuple(idx)]))
    print("OK %d" % len(lines))


def f16(src, dst):
    v = np.fromfile(src, dtype="<f4")
    with np.errstate(over="ignore", invalid="ignore"):
        v.astype("<f2").view("<u2").tofile(dst)


def f16to32(dst):
    np.arange(65536, dtype=np.uint32).astype("<u2").view("<f2").astype("<f4").tofile(dst)


def write_safetensors(path, tensors, meta=None):
    """tensors: list of (name, dtype string, shape, raw bytes). Plain writer, 8-byte aligned header."""
    header = {}
    if meta:
        header["__metadata__"] = meta
    off = 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors:
            f.write(t[3])


def st_gen(d):
    import torch
    vals = torch.tensor([0.0, -0.0, 1.0, -1.5, 3.14159265, 1e-3, 1e-5, 6e-8, 2.0 ** -24, 1e-40, 65504.0, 70000.0,
                         -1e20, 3e38, float("inf"), float("-inf"), 0.1, 0.2, 0.3, 1.0 / 3.0, 123456.789, -0.0078125,
                         2.0 ** -133, 5.877472e-39], dtype=torch.float32)
    f16 = vals.to(torch.float16)
    bf16 = vals.to(torch.bfloat16)
    f32 = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.37 - 3.0
    i64 = torch.arange(6, dtype=torch.int64)
    tensors = [
        ("a.f32", "F32", (2, 3, 4), f32.numpy().astype("<f4").tobytes()),
        ("b.f16", "F16", (4, 6), f16.view(torch.int16).numpy().astype("<i2").tobytes()),
        ("c.bf16", "BF16", (24,), bf16.view(torch.int16).numpy().astype("<i2").tobytes()),
        ("d.i64", "I64", (6,), i64.numpy().astype("<i8").tobytes()),
    ]
    write_safetensors(os.path.join(d, "ref.safetensors"), tensors, {"who": "torch", "n": "4"})
    f32.numpy().astype("<f4").tofile(os.path.join(d, "a.f32.raw"))
    f16.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(d, "b.f16.raw"))
    bf16.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(d, "c.bf16.raw"))


def st_check(path, d):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    if (8 + n) % 8 != 0:
        die("header end %d not 8-byte aligned" % (8 + n))
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    with open(os.path.join(d, "meta.json")) as f:
        want_meta = json.load(f)
    if header.pop("__metadata__", {}) != want_meta["meta"]:
        die("metadata differs")
    names = list(header.keys())
    if names != want_meta["order"]:
        die("tensor order %s, expected %s" % (names, want_meta["order"]))
    end = 0
    for name in names:
        e = header[name]
        b, en = e["data_offsets"]
        if e["dtype"] != "F32":
            die("%s: dtype %s" % (name, e["dtype"]))
        if b != end:
            die("%s: not contiguous (begins at %d, previous ended at %d)" % (name, b, end))
        end = en
        shape = tuple(e["shape"])
        if shape != tuple(want_meta["shapes"][name]):
            die("%s: shape %s" % (name, shape))
        arr = np.frombuffer(data[b:en], dtype="<f4").reshape(shape)
        ref = np.fromfile(os.path.join(d, name + ".raw"), dtype="<f4").reshape(shape)
        if arr.tobytes() != ref.tobytes():
            die("%s: values differ" % name)
    if end != len(data):
        die("data section has %d bytes, tensors cover %d" % (len(data), end))
    print("OK %d" % len(names))


def fake_dinov2(d):
    import torch
    g = torch.Generator().manual_seed(7)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    def backbone(dim, depth, patch, grid, hidden, swiglu, n_reg):
        sd = {"cls_token": rnd(1, 1, dim), "pos_embed": rnd(1, 1 + grid * grid, dim)}
        if n_reg:
            sd["register_tokens"] = rnd(1, n_reg, dim)
        sd["mask_token"] = rnd(1, dim)
        sd["patch_embed.proj.weight"] = rnd(dim, 3, patch, patch)
        sd["patch_embed.proj.bias"] = rnd(dim)
        blocks = []
        for i in range(depth):
            b = {}
            b["norm1.weight"], b["norm1.bias"] = rnd(dim), rnd(dim)
            b["attn.qkv.weight"], b["attn.qkv.bias"] = rnd(3 * dim, dim), rnd(3 * dim)
            b["attn.proj.weight"], b["attn.proj.bias"] = rnd(dim, dim), rnd(dim)
            b["ls1.gamma"] = rnd(dim)
            b["norm2.weight"], b["norm2.bias"] = rnd(dim), rnd(dim)
            if swiglu:
                b["mlp.w12.weight"], b["mlp.w12.bias"] = rnd(2 * hidden, dim), rnd(2 * hidden)
                b["mlp.w3.weight"], b["mlp.w3.bias"] = rnd(dim, hidden), rnd(dim)
            else:
                b["mlp.fc1.weight"], b["mlp.fc1.bias"] = rnd(hidden, dim), rnd(hidden)
                b["mlp.fc2.weight"], b["mlp.fc2.bias"] = rnd(dim, hidden), rnd(dim)
            b["ls2.gamma"] = rnd(dim)
            blocks.append(b)
        tail = {"norm.weight": rnd(dim), "norm.bias": rnd(dim)}
        return sd, blocks, tail

    def flat(sd, blocks, tail):
        out = dict(sd)
        for i, b in enumerate(blocks):
            for k, v in b.items():
                out["blocks.%d.%s" % (i, k)] = v
        out.update(tail)
        return out

    def dump(tag, named):
        with open(os.path.join(d, tag + ".ref"), "w") as f:
            for k, v in named.items():
                f.write("%s %d %s\n" % (k, v.dim(), " ".join(str(s) for s in v.shape)))
                v.numpy().astype("<f4").tofile(os.path.join(d, "%s.%s.raw" % (tag, k)))

    # hub backbone: MLP, no registers, D 64 (heads inferred as 1 unless given)
    sd, blocks, tail = backbone(64, 3, 4, 3, 96, False, 0)
    hub = flat(sd, blocks, tail)
    torch.save(hub, os.path.join(d, "hub.pth"))
    dump("hub", hub)

    # training checkpoint: chunked blocks (2 chunks of depth 4, Identity padding), SwiGLU, 4 registers
    depth, chunks = 4, 2
    sd, blocks, tail = backbone(32, depth, 2, 4, 40, True, 4)
    teacher = {}
    for k, v in sd.items():
        teacher["backbone." + k] = v
    per = depth // chunks
    for c in range(chunks):
        for i in range(c * per, (c + 1) * per):  # BlockChunk keeps global indices
            for k, v in blocks[i].items():
                teacher["backbone.blocks.%d.%d.%s" % (c, i, k)] = v
    for k, v in tail.items():
        teacher["backbone." + k] = v
    teacher["dino_head.mlp.0.weight"] = rnd(16, 32)
    teacher["dino_head.last_layer.weight_g"] = rnd(8, 1)
    teacher["ibot_head.mlp.0.weight"] = rnd(16, 32)
    torch.save({"teacher": teacher}, os.path.join(d, "teacher.pth"))
    dump("teacher", flat(sd, blocks, tail))


def main():
    cmd = sys.argv[1]
    if cmd == "npy-gen":
        npy_gen(sys.argv[2])
    elif cmd == "npy-check":
        npy_check(sys.argv[2])
    elif cmd == "f16":
        f16(sys.argv[2], sys.argv[3])
    elif cmd == "f16to32":
        f16to32(sys.argv[2])
    elif cmd == "st-gen":
        st_gen(sys.argv[2])
    elif cmd == "st-check":
        st_check(sys.argv[2], sys.argv[3])
    elif cmd == "fake-dinov2":
        fake_dinov2(sys.argv[2])
    else:
        die("unknown command " + cmd)


if __name__ == "__main__":
    main()
